//! Packet-buffer pools (`rte_pktmbuf_pool_create`).
use crate::error::DpdkError;
use crate::lcore::SocketId;
use crate::live::{self, Live};
use crate::mbuf::Mbuf;
use crate::sys;
use std::ffi::CString;
use std::ptr::NonNull;

/// A pool of packet buffers. Cloning gives another handle to the same pool. The pool is freed
/// when the last handle drops, if every mbuf is back; otherwise it is deliberately leaked (and
/// `Eal::cleanup` refuses), since an mbuf still out would point into it.
#[derive(Debug, Clone)]
pub struct Mempool {
    inner: std::sync::Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    ptr: NonNull<sys::rte_mempool>,
    name: String,
    _live: Live,
}

// SAFETY: DPDK mempools with the default ring_mp_mc ops are safe for concurrent get/put from
// any thread; the handle only carries the pool pointer.
unsafe impl Send for PoolInner {}
// SAFETY: see Send; every operation used through `&PoolInner` is thread-safe in DPDK.
unsafe impl Sync for PoolInner {}

impl Mempool {
    /// Creates a packet-mbuf pool of `n` buffers with a per-lcore cache of `cache` buffers and
    /// `data_room` bytes per buffer (headroom included), on `socket`.
    pub fn pktmbuf(
        name: &str,
        n: u32,
        cache: u32,
        data_room: u16,
        socket: SocketId,
    ) -> Result<Mempool, DpdkError> {
        let cname =
            CString::new(name).map_err(|_| DpdkError::new(format!("mempool name {name:?}"), 22))?;
        // SAFETY: cname is a valid C string; the other arguments are plain values DPDK checks.
        let p = unsafe {
            sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket.0)
        };
        let ptr = NonNull::new(p).ok_or_else(|| {
            DpdkError::from_rte_errno(format!("rte_pktmbuf_pool_create({name}, n={n})"))
        })?;
        Ok(Mempool {
            inner: std::sync::Arc::new(PoolInner {
                ptr,
                name: name.to_owned(),
                _live: Live::new(),
            }),
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Total number of buffers.
    pub fn size(&self) -> u32 {
        // SAFETY: the pool pointer is valid while the handle lives; `size` is immutable.
        unsafe { self.inner.ptr.as_ref().size }
    }

    /// Buffers currently free (in the pool and in every lcore cache).
    pub fn available(&self) -> u32 {
        // SAFETY: valid pool pointer; the count is read racily by design (a snapshot).
        unsafe { sys::rte_mempool_avail_count(self.inner.ptr.as_ptr()) }
    }

    /// Buffers currently out of the pool (in packets, NIC rings, or leaked).
    pub fn in_use(&self) -> u32 {
        // SAFETY: as for `available`.
        unsafe { sys::rte_mempool_in_use_count(self.inner.ptr.as_ptr()) }
    }

    /// True when every buffer is back.
    pub fn is_full(&self) -> bool {
        self.in_use() == 0
    }

    /// Takes one buffer (empty packet, headroom reset), or `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: valid pool pointer; a non-null result is a fresh mbuf we now own.
        let m = unsafe { sys::shim_rte_pktmbuf_alloc(self.inner.ptr.as_ptr()) };
        // SAFETY: `m` is a freshly allocated mbuf with refcnt 1, owned by nobody else.
        NonNull::new(m).map(|p| unsafe { Mbuf::from_raw(p) })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.inner.ptr.as_ptr()
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // SAFETY: valid pool pointer.
        let in_use = unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) };
        if in_use == 0 {
            // SAFETY: no handle and no mbuf refers to the pool any more.
            unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) };
        } else {
            live::note_leaked_pool();
        }
    }
}
