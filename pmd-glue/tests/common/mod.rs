//! Test support shared by several test binaries (each includes it with `mod common;` and uses
//! what it needs, so unused items are expected).
#![allow(dead_code)]

pub mod cbpf_corpus;
