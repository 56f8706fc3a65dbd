//! The classic-BPF classifier stage (Linux `cls_bpf`): program sources, the loader, the engines
//! that run loaded programs, and the [`Classifier`](crate::pipeline::Classifier) that plugs
//! them into a port hook.
//!
//! - [`insn`]: instructions, tc bytecode and `tcpdump -ddd` parsing.
//! - [`check`]: the loader; [`Program`] values are always valid.
//! - [`interp`]: the reference interpreter (libpcap semantics).
//! - [`ebpf`]: translation to eBPF with inline bounds checks, for rbpf, and
//!   [`RbpfInterpreter`], the safe engine over rbpf's interpreter (the JIT is in `pmd-glue`).
//! - [`gen`]: deterministic random valid programs and frames for tests, fuzzing, benchmarks.
use std::fmt;

pub mod check;
pub mod ebpf;
pub mod gen;
pub mod insn;
pub mod interp;

pub use check::{LoadError, Program};
pub use ebpf::{translate, RbpfInterpreter, TranslateError, Translated};
pub use insn::{parse_ddd, parse_tc_bytecode, Ancillary, Insn};
pub use interp::{Interpreter, Meta};

/// Something that runs one loaded program over a frame. Implementations are immutable, shared
/// by every lcore, and must not allocate, lock or panic per packet.
pub trait Engine: Send + Sync + fmt::Debug {
    /// Short name for logs and metrics ("interpreter", "rbpf-jit", ...).
    fn name(&self) -> &'static str;

    /// Runs the program over `data` (the frame from its Ethernet header, as far as it is
    /// contiguous) of wire length `wirelen`; returns the program's result.
    fn run(&self, data: &[u8], wirelen: u32, meta: &Meta) -> u32;
}

impl Engine for Interpreter {
    fn name(&self) -> &'static str {
        "interpreter"
    }

    #[inline]
    fn run(&self, data: &[u8], wirelen: u32, meta: &Meta) -> u32 {
        Interpreter::run(self, data, wirelen, meta)
    }
}
