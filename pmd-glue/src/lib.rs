//! Safe wrappers over the system DPDK (22.11). This is the only crate of the workspace with
//! `unsafe` code; each block carries a `// SAFETY:` comment.
//!
//! Ownership model:
//! - [`Eal`] is the process-wide environment; [`Eal::cleanup`] refuses to run while any handle
//!   (port, queue, mempool, stats reader) is alive or any pool still has mbufs out.
//! - [`Mbuf`] owns one packet buffer and returns it to its pool when dropped. Bursts
//!   ([`Burst`], [`TxBuffer`]) hold raw pointers on the stack and free what they still hold on drop.
//! - A port's queues are handed out once ([`Port::take_queues`]) as unique handles that move to
//!   the lcore that polls them; the port cannot be stopped while a queue handle is alive.

pub mod bpf_jit;
pub mod cryptodev;
pub mod dpdk_bpf;
pub mod eal;
pub mod error;
pub mod hash;
pub mod lcore;
mod live;
pub mod mbuf;
pub mod mempool;
pub mod pcap;
pub mod port;

pub use eal::Eal;
pub use error::{DpdkError, Result};
pub use lcore::{LcoreId, SocketId};
pub use mbuf::{Burst, Mbuf, TxBuffer, BURST_SIZE};
pub use mempool::Mempool;
pub use port::{Port, PortConfig, PortId, PortInfo, PortStats, RxQueue, StatsReader, TxQueue};

use pmd_glue_sys as sys;

/// The CPU's time-stamp counter (`rte_rdtsc`): a cheap monotonic clock for drain timers.
#[inline]
pub fn tsc() -> u64 {
    // SAFETY: reads the TSC register; no memory is touched.
    unsafe { sys::shim_rte_rdtsc() }
}

/// TSC ticks per second as EAL measured it at init (0 before [`Eal::init`]).
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value EAL computed at init; safe to call at any time.
    unsafe { sys::rte_get_tsc_hz() }
}

/// A CPU relax hint for poll loops (`rte_pause`).
#[inline]
pub fn pause() {
    // SAFETY: executes the PAUSE instruction; no memory is touched.
    unsafe { sys::shim_rte_pause() }
}

/// The DPDK version string of the linked library, e.g. "DPDK 22.11.11".
pub fn dpdk_version() -> String {
    // SAFETY: rte_version returns a pointer to a static NUL-terminated string.
    unsafe { error::cstr_to_string(sys::rte_version()) }
}
