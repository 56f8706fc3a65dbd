//! The DPDK Environment Abstraction Layer: init once per process from configured arguments,
//! cleanup only when nothing can touch DPDK any more.
use crate::error::DpdkError;
use crate::{live, sys};
use std::ffi::{c_char, c_int, CString};
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

const UNINIT: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);

/// Why [`Eal::init`] or [`Eal::cleanup`] failed.
#[derive(Debug)]
pub enum EalError {
    /// EAL was already initialised (or already tried) in this process: DPDK allows one init.
    AlreadyInitialized,
    /// An argument contained a NUL byte.
    BadArgument(String),
    /// `rte_eal_init` rejected the arguments or could not set up the environment.
    Init(DpdkError),
    /// Handles (ports, queues, pools, stats readers) are still alive.
    HandlesAlive(usize),
    /// Mempools were dropped while mbufs were still out (leaked on purpose to stay memory safe).
    LeakedPools(usize),
    /// `rte_eal_cleanup` failed.
    Cleanup(DpdkError),
}

impl fmt::Display for EalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EalError::AlreadyInitialized => {
                write!(f, "DPDK EAL can be initialised once per process")
            }
            EalError::BadArgument(a) => write!(f, "EAL argument {a:?} contains a NUL byte"),
            EalError::Init(e) => write!(f, "DPDK EAL initialisation: {e}"),
            EalError::HandlesAlive(n) => {
                write!(f, "EAL cleanup refused: {n} DPDK handles still alive")
            }
            EalError::LeakedPools(n) => {
                write!(
                    f,
                    "EAL cleanup refused: {n} mempools were dropped with mbufs still in use"
                )
            }
            EalError::Cleanup(e) => write!(f, "DPDK EAL cleanup: {e}"),
        }
    }
}

impl std::error::Error for EalError {}

/// Proof that the EAL is initialised in this process. Not `Clone`: one owner decides when to
/// clean up.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

/// How DPDK addresses memory for devices (`rte_eal_iova_mode`): "PA" (physical addresses), "VA"
/// (virtual addresses through an IOMMU, or for software devices) or "DC" (don't care, before
/// init).
pub fn iova_mode() -> &'static str {
    // SAFETY: reads EAL's configuration; valid at any time.
    match unsafe { sys::rte_eal_iova_mode() } {
        sys::RTE_IOVA_PA => "PA",
        sys::RTE_IOVA_VA => "VA",
        _ => "DC",
    }
}

/// True between a successful [`Eal::init`] and [`Eal::cleanup`]: DPDK's allocator and
/// libraries may be used.
pub(crate) fn is_running() -> bool {
    STATE.load(Ordering::Acquire) == RUNNING
}

impl Eal {
    /// Initialises the EAL with `args` (without the program name; `program` is used as `argv[0]`).
    /// Fails cleanly on bad arguments; may be attempted once per process.
    pub fn init<S: AsRef<str>>(program: &str, args: &[S]) -> Result<Eal, EalError> {
        let mut owned = Vec::with_capacity(args.len() + 1);
        for a in std::iter::once(program).chain(args.iter().map(AsRef::as_ref)) {
            owned.push(CString::new(a).map_err(|_| EalError::BadArgument(a.to_owned()))?);
        }
        if STATE
            .compare_exchange(UNINIT, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(EalError::AlreadyInitialized);
        }
        // EAL may keep pointers into argv (and permutes the array), so both live for the
        // process: one allocation at start-up.
        let strings: &'static mut [CString] = Vec::leak(owned);
        let argv: &'static mut [*mut c_char] =
            Vec::leak(strings.iter_mut().map(|s| s.as_ptr().cast_mut()).collect());
        let argc = c_int::try_from(argv.len()).expect("argument count fits in c_int");
        // SAFETY: argv points to `argc` valid NUL-terminated strings that live for the rest of
        // the process; STATE guarantees this is the only call in the process.
        let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            STATE.store(DONE, Ordering::Release);
            return Err(EalError::Init(DpdkError::from_rte_errno("rte_eal_init")));
        }
        Ok(Eal { _private: () })
    }

    /// Releases the EAL's resources. Refuses (returning the `Eal` back inside the error's
    /// context) while any handle is alive or a pool was leaked, because DPDK memory would be
    /// freed under it. Worker lcores must have finished (see [`crate::lcore::wait_all`]).
    pub fn cleanup(self) -> Result<(), EalError> {
        let live = live::live_handles();
        if live != 0 {
            return Err(EalError::HandlesAlive(live));
        }
        let leaked = live::leaked_pools();
        if leaked != 0 {
            return Err(EalError::LeakedPools(leaked));
        }
        crate::lcore::wait_all();
        // SAFETY: no handle to DPDK objects exists any more (counted above), workers have
        // returned, and STATE prevents a second init.
        let rc = unsafe { sys::rte_eal_cleanup() };
        STATE.store(DONE, Ordering::Release);
        if rc < 0 {
            return Err(EalError::Cleanup(DpdkError::new("rte_eal_cleanup", rc)));
        }
        Ok(())
    }
}
