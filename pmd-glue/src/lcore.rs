//! Logical cores: enumerate the workers EAL was given and run one closure on each, with panics
//! caught before they reach DPDK's C frames.
use crate::error::DpdkError;
use crate::sys;
use std::any::Any;
use std::ffi::{c_int, c_uint, c_void};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

/// An EAL logical core id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LcoreId(pub u32);

/// A NUMA socket id (`SOCKET_ID_ANY` is `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId(pub i32);

impl SocketId {
    /// No preference.
    pub const ANY: SocketId = SocketId(-1);
}

impl fmt::Display for LcoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

const MAX_LCORE: u32 = sys::RTE_MAX_LCORE;

/// The main lcore (the thread that called `Eal::init`). Valid after init.
pub fn main_lcore() -> LcoreId {
    // SAFETY: reads EAL's configuration; valid after init (returns 0 before).
    LcoreId(unsafe { sys::rte_get_main_lcore() })
}

/// Every enabled lcore except the main one, in ascending order.
pub fn worker_lcores() -> Vec<LcoreId> {
    let mut out = Vec::new();
    let mut i: c_uint = u32::MAX; // -1: start from the beginning
    loop {
        // SAFETY: iterates EAL's lcore table; skip_main = 1, wrap = 0.
        i = unsafe { sys::rte_get_next_lcore(i, 1, 0) };
        if i >= MAX_LCORE {
            return out;
        }
        out.push(LcoreId(i));
    }
}

/// The lcore id of the calling thread, or `None` on a non-EAL thread.
pub fn current() -> Option<LcoreId> {
    // SAFETY: reads a thread-local set by EAL.
    let id = unsafe { sys::shim_rte_lcore_id() };
    (id < MAX_LCORE).then_some(LcoreId(id))
}

/// The NUMA socket of `lcore`.
pub fn socket_of(lcore: LcoreId) -> SocketId {
    // SAFETY: reads EAL's lcore table; out-of-range ids return 0 per DPDK.
    let s = unsafe { sys::rte_lcore_to_socket_id(lcore.0) };
    SocketId(s as i32)
}

/// Waits until every worker lcore is idle again (`rte_eal_mp_wait_lcore`).
pub fn wait_all() {
    // SAFETY: blocks until launched workers return; no preconditions besides EAL init, which
    // every caller (Eal::cleanup, Launched::wait) implies.
    unsafe { sys::rte_eal_mp_wait_lcore() }
}

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

struct Launch {
    job: Option<Job>,
    panic: Arc<Mutex<Option<String>>>,
}

/// A closure running on a worker lcore.
#[derive(Debug)]
pub struct Launched {
    lcore: LcoreId,
    panic: Arc<Mutex<Option<String>>>,
    waited: bool,
}

/// A worker that panicked: the panic was caught at the FFI boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPanic {
    /// The lcore the worker ran on.
    pub lcore: LcoreId,
    /// The panic message.
    pub message: String,
}

impl fmt::Display for WorkerPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker on lcore {} panicked: {}",
            self.lcore, self.message
        )
    }
}

impl std::error::Error for WorkerPanic {}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Launch> leaked by `launch` for exactly this call; EAL passes it
    // back once.
    let mut launch = unsafe { Box::from_raw(arg.cast::<Launch>()) };
    let Some(job) = launch.job.take() else {
        return -1;
    };
    match catch_unwind(AssertUnwindSafe(job)) {
        Ok(rc) => rc,
        Err(p) => {
            let msg = panic_message(p.as_ref());
            if let Ok(mut slot) = launch.panic.lock() {
                *slot = Some(msg);
            }
            -1
        }
    }
}

/// Runs `f` on worker `lcore`. Fails if the lcore is not a worker or is busy.
pub fn launch<F>(lcore: LcoreId, f: F) -> Result<Launched, DpdkError>
where
    F: FnOnce() -> i32 + Send + 'static,
{
    let panic = Arc::new(Mutex::new(None));
    let arg = Box::into_raw(Box::new(Launch {
        job: Some(Box::new(f)),
        panic: panic.clone(),
    }));
    // SAFETY: `trampoline` has the lcore_function_t signature and takes ownership of `arg`
    // when the launch succeeds.
    let rc = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg.cast(), lcore.0) };
    if rc < 0 {
        // SAFETY: the launch failed, so EAL never saw `arg`: reclaim it.
        drop(unsafe { Box::from_raw(arg) });
        return Err(DpdkError::new(
            format!("rte_eal_remote_launch(lcore {})", lcore.0),
            rc,
        ));
    }
    Ok(Launched {
        lcore,
        panic,
        waited: false,
    })
}

impl Launched {
    /// The lcore this closure runs on.
    pub fn lcore(&self) -> LcoreId {
        self.lcore
    }

    /// Blocks until the closure returns; its return value, or the caught panic.
    pub fn wait(mut self) -> Result<i32, WorkerPanic> {
        self.waited = true;
        // SAFETY: waits for the lcore we launched on; EAL is initialised (launch succeeded).
        let rc = unsafe { sys::rte_eal_wait_lcore(self.lcore.0) };
        let panic = self.panic.lock().ok().and_then(|mut s| s.take());
        match panic {
            Some(message) => Err(WorkerPanic {
                lcore: self.lcore,
                message,
            }),
            None => Ok(rc),
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if !self.waited {
            // SAFETY: as in `wait`: joining a launched lcore; never leave one running unowned.
            unsafe { sys::rte_eal_wait_lcore(self.lcore.0) };
        }
    }
}
