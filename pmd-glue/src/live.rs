//! Counts live handles so that `Eal::cleanup` can refuse while anything could still touch DPDK.
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE_HANDLES: AtomicUsize = AtomicUsize::new(0);
static LEAKED_POOLS: AtomicUsize = AtomicUsize::new(0);

/// Held by every handle type; counted while alive. Created and dropped on the control path only.
#[derive(Debug)]
pub(crate) struct Live(());

impl Live {
    pub(crate) fn new() -> Self {
        LIVE_HANDLES.fetch_add(1, Ordering::AcqRel);
        Live(())
    }
}

impl Clone for Live {
    fn clone(&self) -> Self {
        Live::new()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE_HANDLES.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) fn live_handles() -> usize {
    LIVE_HANDLES.load(Ordering::Acquire)
}

pub(crate) fn note_leaked_pool() {
    LEAKED_POOLS.fetch_add(1, Ordering::AcqRel);
}

pub(crate) fn leaked_pools() -> usize {
    LEAKED_POOLS.load(Ordering::Acquire)
}
