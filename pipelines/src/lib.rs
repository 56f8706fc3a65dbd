//! Packet logic of the appliance, with no DPDK dependency: wire parsing, the pipeline (chains of
//! classifiers choosing actions), drop reasons and per-lcore counters. Everything here runs over
//! byte slices through the small [`Packet`] trait, so unit tests, fuzzing and micro-benchmarks run
//! anywhere; `pmd-glue` adapts a DPDK mbuf to [`Packet`].
#![forbid(unsafe_code)]

pub mod cbpf;
pub mod drop_reason;
pub mod flow;
pub mod flowlabel;
pub mod ipsec;
pub mod jhash;
pub mod packet;
pub mod pipeline;
pub mod stats;
pub mod wire;

pub use drop_reason::DropReason;
pub use packet::Packet;
