//! Owning packet buffers and stack-held bursts.
use crate::mempool::Mempool;
use crate::sys;
use std::fmt;
use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};

/// Packets per rx/tx burst (DPDK's customary 32).
pub const BURST_SIZE: usize = 32;

/// One packet (an mbuf chain), owned: dropping it returns every segment to its pool.
///
/// A mirror copy is made with [`Mbuf::clone_indirect`], which DPDK implements by reference
/// counting; while bytes are shared, [`Mbuf::data_mut`] returns `None` so neither copy can
/// see the other's modifications.
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an Mbuf is the unique owner of its mbuf; moving it to another thread moves that
// ownership. DPDK's refcount and pool operations are thread-safe.
unsafe impl Send for Mbuf {}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf")
            .field("pkt_len", &self.pkt_len())
            .field("data_len", &self.data_len())
            .field("nb_segs", &self.nb_segs())
            .field("port", &self.port())
            .finish()
    }
}

impl Mbuf {
    /// Wraps a raw mbuf.
    ///
    /// # Safety
    /// `p` must be a valid mbuf that the caller owns (one reference), not owned by anything else.
    #[inline]
    pub(crate) unsafe fn from_raw(p: NonNull<sys::rte_mbuf>) -> Self {
        Mbuf(p)
    }

    /// Gives up ownership without freeing (the caller, e.g. a tx burst, takes it over).
    #[inline]
    pub(crate) fn into_raw(self) -> *mut sys::rte_mbuf {
        ManuallyDrop::new(self).0.as_ptr()
    }

    /// The raw mbuf, for DPDK calls that only read it while `self` is borrowed.
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mbuf {
        self.0.as_ptr()
    }

    #[inline]
    fn raw(&self) -> &sys::rte_mbuf {
        // SAFETY: we own a valid mbuf for the lifetime of `self`.
        unsafe { self.0.as_ref() }
    }

    /// Bytes of the first segment, from the current data offset.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the segment's buffer, which we
        // own (shared read-only with clones at most) for the lifetime of `self`.
        unsafe {
            std::slice::from_raw_parts(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// Writable bytes of the first segment, or `None` when the bytes are shared with a clone (or
    /// this is an indirect clone itself).
    #[inline]
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        if !self.is_exclusive() {
            return None;
        }
        let m = self.raw();
        let (addr, off, len) = (m.buf_addr, m.data_off, m.data_len);
        // SAFETY: as in `data`, and nobody else references these bytes (direct, refcnt 1), and
        // `&mut self` makes this the only live borrow.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                addr.cast::<u8>().add(usize::from(off)),
                usize::from(len),
            )
        })
    }

    /// True when this mbuf is direct and its buffer is referenced only by it.
    #[inline]
    pub fn is_exclusive(&self) -> bool {
        let m = self.0.as_ptr();
        // SAFETY: valid mbuf. RTE_MBUF_DIRECT: neither indirect nor external. The reference
        // count is read as rte_mbuf_refcnt_read does (a relaxed atomic load); u16 and AtomicU16
        // have the same layout and the field is 2-byte aligned.
        unsafe {
            (*m).ol_flags & (sys::RTE_MBUF_F_INDIRECT | sys::RTE_MBUF_F_EXTERNAL) == 0
                && (*ptr::addr_of!((*m).refcnt).cast::<AtomicU16>()).load(Ordering::Relaxed) == 1
        }
    }

    /// Total packet length over all segments.
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
    }

    /// Length of the first segment.
    #[inline]
    pub fn data_len(&self) -> u16 {
        self.raw().data_len
    }

    /// Number of segments.
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        self.raw().nb_segs
    }

    /// The input port id DPDK recorded.
    #[inline]
    pub fn port(&self) -> u16 {
        self.raw().port
    }

    /// Offload flags (`RTE_MBUF_F_*`).
    #[inline]
    pub fn ol_flags(&self) -> u64 {
        self.raw().ol_flags
    }

    /// The NIC's RSS hash, when present.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        let m = self.raw();
        if m.ol_flags & u64::from(sys::RTE_MBUF_F_RX_RSS_HASH) != 0 {
            // SAFETY: the RSS flag says the `hash.rss` member of the union is the valid one.
            Some(unsafe { m.__bindgen_anon_2.hash.rss })
        } else {
            None
        }
    }

    /// True when the NIC verified the IPv4 header checksum as good.
    #[inline]
    pub fn ipv4_checksum_good(&self) -> bool {
        self.raw().ol_flags & u64::from(sys::RTE_MBUF_F_RX_IP_CKSUM_MASK)
            == u64::from(sys::RTE_MBUF_F_RX_IP_CKSUM_GOOD)
    }

    /// Bytes free before the data (for prepending headers).
    #[inline]
    pub fn headroom(&self) -> u16 {
        self.raw().data_off
    }

    /// Bytes free after the data in the last segment.
    #[inline]
    pub fn tailroom(&self) -> u16 {
        let m = self.raw();
        if m.nb_segs != 1 {
            // SAFETY: valid mbuf; reads header fields along its chain.
            return unsafe { sys::shim_rte_pktmbuf_tailroom(self.0.as_ptr()) };
        }
        m.buf_len
            .saturating_sub(m.data_off)
            .saturating_sub(m.data_len)
    }

    /// Prepends `len` bytes to the first segment and returns them, or `None` without headroom
    /// or when the buffer is shared.
    #[inline]
    pub fn prepend(&mut self, len: u16) -> Option<&mut [u8]> {
        if !self.is_exclusive() {
            return None;
        }
        let m = self.0.as_ptr();
        // SAFETY: valid exclusive mbuf (`&mut self`); as rte_pktmbuf_prepend: with `len` bytes
        // of headroom, the data offset moves back by `len` and both lengths grow by `len`; the
        // new bytes lie inside the buffer, owned by this mbuf alone.
        unsafe {
            if len > (*m).data_off {
                return None;
            }
            (*m).data_off -= len;
            (*m).data_len += len;
            (*m).pkt_len += u32::from(len);
            Some(std::slice::from_raw_parts_mut(
                (*m).buf_addr.cast::<u8>().add(usize::from((*m).data_off)),
                usize::from(len),
            ))
        }
    }

    /// Appends `len` bytes to the last segment and returns them, or `None` without tailroom or
    /// when the buffer is shared.
    #[inline]
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        if !self.is_exclusive() {
            return None;
        }
        if self.raw().nb_segs != 1 {
            // SAFETY: valid exclusive mbuf; DPDK checks the tailroom and returns NULL if short.
            let p = unsafe { sys::shim_rte_pktmbuf_append(self.0.as_ptr(), len) };
            // SAFETY: on success `p` points to `len` writable bytes at the end of the data.
            return (!p.is_null()).then(|| unsafe {
                std::slice::from_raw_parts_mut(p.cast::<u8>(), usize::from(len))
            });
        }
        if len > self.tailroom() {
            return None;
        }
        let m = self.0.as_ptr();
        // SAFETY: valid exclusive single-segment mbuf with `len` bytes of tailroom (checked):
        // as rte_pktmbuf_append, the new bytes follow the data inside the buffer.
        unsafe {
            let at = usize::from((*m).data_off) + usize::from((*m).data_len);
            (*m).data_len += len;
            (*m).pkt_len += u32::from(len);
            Some(std::slice::from_raw_parts_mut(
                (*m).buf_addr.cast::<u8>().add(at),
                usize::from(len),
            ))
        }
    }

    /// Removes `len` bytes from the start of the packet; false if the first segment is shorter.
    #[inline]
    pub fn adj(&mut self, len: u16) -> bool {
        let m = self.0.as_ptr();
        // SAFETY: valid mbuf owned by `&mut self`; as rte_pktmbuf_adj: only the first segment's
        // offset and the lengths change (no packet byte is written, so shared buffers are fine).
        unsafe {
            if len > (*m).data_len {
                return false;
            }
            (*m).data_off += len;
            (*m).data_len -= len;
            (*m).pkt_len -= u32::from(len);
        }
        true
    }

    /// Removes `len` bytes from the end of the packet; false if the last segment is shorter.
    #[inline]
    pub fn trim(&mut self, len: u16) -> bool {
        let m = self.0.as_ptr();
        // SAFETY: valid mbuf owned by `&mut self`. One segment: as rte_pktmbuf_trim, the lengths
        // shrink; chains go through DPDK, which finds the last segment.
        unsafe {
            if (*m).nb_segs != 1 {
                return sys::shim_rte_pktmbuf_trim(m, len) == 0;
            }
            if len > (*m).data_len {
                return false;
            }
            (*m).data_len -= len;
            (*m).pkt_len -= u32::from(len);
        }
        true
    }

    /// Appends the segments of `tail` to this packet (`rte_pktmbuf_chain`), making one
    /// multi-segment packet; hands `tail` back when the chain would have too many segments.
    pub fn chain(&mut self, tail: Mbuf) -> Result<(), Mbuf> {
        // SAFETY: both mbufs are valid and owned by us; on success the head's chain owns the
        // tail's segments (freed with the head), so the tail handle is given up.
        if unsafe { sys::shim_rte_pktmbuf_chain(self.0.as_ptr(), tail.as_ptr()) } == 0 {
            let _owned_by_head = tail.into_raw();
            Ok(())
        } else {
            Err(tail)
        }
    }

    /// Writes `bytes` into an empty single-segment mbuf (a fresh one from
    /// [`Mempool::alloc`]); false if the mbuf is not empty or the bytes do not fit.
    pub fn fill(&mut self, bytes: &[u8]) -> bool {
        let Ok(len) = u16::try_from(bytes.len()) else {
            return false;
        };
        if self.nb_segs() != 1 || self.data_len() != 0 {
            return false;
        }
        match self.append(len) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// A zero-copy copy: an indirect mbuf chain from `pool` that references this packet's
    /// buffers (DPDK reference counting). `None` when `pool` is exhausted.
    pub fn clone_indirect(&self, pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: valid mbuf and pool; DPDK increments the refcounts of the direct buffers.
        let c = unsafe { sys::shim_rte_pktmbuf_clone(self.0.as_ptr(), pool.as_ptr()) };
        // SAFETY: a non-null clone is a new mbuf owned by us.
        NonNull::new(c).map(|p| unsafe { Mbuf::from_raw(p) })
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; after this it is never touched again.
        unsafe { sys::shim_rte_pktmbuf_free(self.0.as_ptr()) }
    }
}

impl pipelines::Packet for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }
    #[inline]
    fn data_mut(&mut self) -> Option<&mut [u8]> {
        Mbuf::data_mut(self)
    }
    #[inline]
    fn frame_len(&self) -> u32 {
        self.pkt_len()
    }
    #[inline]
    fn rss_hash(&self) -> Option<u32> {
        Mbuf::rss_hash(self)
    }
    #[inline]
    fn ipv4_checksum_verified(&self) -> bool {
        self.ipv4_checksum_good()
    }
    #[inline]
    fn prepend(&mut self, len: usize) -> bool {
        u16::try_from(len).is_ok_and(|l| Mbuf::prepend(self, l).is_some())
    }
    #[inline]
    fn append(&mut self, len: usize) -> bool {
        u16::try_from(len).is_ok_and(|l| self.nb_segs() == 1 && Mbuf::append(self, l).is_some())
    }
    #[inline]
    fn adj(&mut self, len: usize) -> bool {
        u16::try_from(len).is_ok_and(|l| Mbuf::adj(self, l))
    }
    #[inline]
    fn trim(&mut self, len: usize) -> bool {
        u16::try_from(len).is_ok_and(|l| Mbuf::trim(self, l))
    }

    #[inline]
    fn reframe(&mut self, front: isize, back: isize) -> Option<&mut [u8]> {
        if !self.is_exclusive() {
            return None;
        }
        let m = self.0.as_ptr();
        // SAFETY: valid mbuf owned by `&mut self`, direct and not shared (checked), one segment
        // (checked below): the new data range [data_off - front, data_off + data_len + back)
        // is checked to lie inside the buffer before the offset and lengths are written, as
        // rte_pktmbuf_prepend/adj/append/trim would do one at a time.
        unsafe {
            if (*m).nb_segs != 1 {
                return None;
            }
            let start = isize::try_from((*m).data_off).ok()?.checked_sub(front)?;
            let new_len = isize::try_from((*m).data_len)
                .ok()?
                .checked_add(front)?
                .checked_add(back)?;
            if start < 0 || new_len < 0 || start + new_len > isize::try_from((*m).buf_len).ok()? {
                return None;
            }
            let (start, new_len) = (u16::try_from(start).ok()?, u16::try_from(new_len).ok()?);
            (*m).data_off = start;
            (*m).data_len = new_len;
            (*m).pkt_len = u32::from(new_len);
            Some(std::slice::from_raw_parts_mut(
                (*m).buf_addr.cast::<u8>().add(usize::from(start)),
                usize::from(new_len),
            ))
        }
    }
}

/// Up to [`BURST_SIZE`] received packets, held on the stack. Packets are taken out one by one
/// with [`Burst::pop_front`] (or iteration); whatever is left is freed on drop.
pub struct Burst {
    ptrs: [*mut sys::rte_mbuf; BURST_SIZE],
    head: usize,
    len: usize,
}

impl fmt::Debug for Burst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Burst")
            .field("remaining", &self.remaining())
            .finish()
    }
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    /// An empty burst.
    #[inline]
    pub fn new() -> Self {
        Burst {
            ptrs: [ptr::null_mut(); BURST_SIZE],
            head: 0,
            len: 0,
        }
    }

    /// Packets not yet taken.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.len - self.head
    }

    /// True when no packet is left.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head == self.len
    }

    /// Frees what is left and resets, returning room for a full burst.
    #[inline]
    pub(crate) fn reset_for_fill(&mut self) -> (*mut *mut sys::rte_mbuf, u16) {
        self.free_remaining();
        self.head = 0;
        self.len = 0;
        (self.ptrs.as_mut_ptr(), BURST_SIZE as u16)
    }

    /// Records that the first `n` slots were filled by DPDK.
    #[inline]
    pub(crate) fn set_filled(&mut self, n: usize) {
        debug_assert!(n <= BURST_SIZE);
        self.head = 0;
        self.len = n.min(BURST_SIZE);
    }

    /// The packets not yet taken, in order, to read.
    #[inline]
    pub fn as_slice(&self) -> &[Mbuf] {
        let (start, end) = (self.head.min(BURST_SIZE), self.len.min(BURST_SIZE));
        let ptrs = &self.ptrs[start..end.max(start)];
        // SAFETY: `Mbuf` is `#[repr(transparent)]` over `NonNull<rte_mbuf>`, which has the
        // layout of `*mut rte_mbuf`; slots head..len hold the non-null mbufs rx_burst filled
        // (or `retain`/`retain_owned` kept), which the burst owns. The shared borrow of `self`
        // keeps them in the burst, and `&Mbuf` never drops (frees) one.
        unsafe { std::slice::from_raw_parts(ptrs.as_ptr().cast::<Mbuf>(), ptrs.len()) }
    }

    /// Takes the next packet.
    #[inline]
    pub fn pop_front(&mut self) -> Option<Mbuf> {
        if self.head >= self.len {
            return None;
        }
        // SAFETY: head < len <= BURST_SIZE (set_filled clamps len), so the slot is in bounds.
        let p = unsafe { *self.ptrs.get_unchecked(self.head) };
        self.head += 1;
        // SAFETY: slots head..len hold mbufs DPDK handed to us; each is taken out exactly once
        // (head advances past it) and p is non-null as rx_burst only fills valid pointers.
        Some(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) })
    }

    /// Keeps, in order, the packets for which `keep` returns true and frees the others (which
    /// `keep` is expected to have counted). `keep` may write the packet (a flow label). For
    /// burst-level paths that never take packets out.
    #[inline]
    pub fn retain(&mut self, mut keep: impl FnMut(&mut Mbuf) -> bool) {
        let mut w = self.head;
        for r in self.head..self.len.min(BURST_SIZE) {
            let p = self.ptrs[r];
            // SAFETY: slot r (head <= r < len) holds an mbuf we own; the view is never dropped,
            // so ownership stays with the burst.
            let mut view = ManuallyDrop::new(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) });
            if keep(&mut view) {
                self.ptrs[w] = p;
                w += 1;
            } else {
                // SAFETY: we own `p` and remove it from the burst right here.
                unsafe { sys::shim_rte_pktmbuf_free(p) };
            }
        }
        self.len = w;
    }

    /// Hands each packet to `f`, in order, and keeps (in order) those it gives back; the others
    /// are `f`'s (sent elsewhere, or dropped and counted). For burst-level paths where a few
    /// packets leave the burst.
    #[inline]
    pub fn retain_owned(&mut self, mut f: impl FnMut(Mbuf) -> Option<Mbuf>) {
        let (start, end) = (self.head, self.len.min(BURST_SIZE));
        // Should `f` unwind, the packets not yet visited leak instead of being freed twice (the
        // one `f` holds is dropped by the unwinding); those kept so far stay in the burst.
        self.len = start;
        for r in start..end {
            let p = self.ptrs[r];
            // SAFETY: slot r (head <= r < the old len) holds an mbuf we own, non-null as rx_burst
            // only fills valid pointers; it leaves the burst here (len no longer covers it
            // unless it comes back below), so it is owned exactly once.
            let m = unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) };
            if let Some(m) = f(m) {
                // w = self.len <= r: the write never overtakes an unvisited slot.
                self.ptrs[self.len] = m.into_raw();
                self.len += 1;
            }
        }
    }

    /// Hands the remaining packets to `send`, which returns how many it took over; frees the
    /// rest. Returns (sent packets, sent bytes, dropped packets).
    #[inline]
    pub(crate) fn drain_with(
        &mut self,
        send: impl FnOnce(*mut *mut sys::rte_mbuf, u16) -> u16,
    ) -> (u32, u64, u32) {
        let n = self.remaining();
        if n == 0 {
            return (0, 0, 0);
        }
        let base = self.ptrs[self.head..self.len].as_mut_ptr();
        let sent = usize::from(send(base, n as u16)).min(n);
        // The first `sent` slots were handed over: nothing is read from them. Slots
        // head+sent..len are still ours.
        let unsent_bytes: u64 = self.ptrs[self.head + sent..self.len]
            .iter()
            // SAFETY: these slots hold valid mbufs we still own; only pkt_len is read.
            .map(|&p| u64::from(unsafe { (*p).pkt_len }))
            .sum();
        self.head += sent; // free_remaining below frees the unsent ones
        self.free_remaining();
        (sent as u32, unsent_bytes, (n - sent) as u32)
    }

    fn free_remaining(&mut self) {
        if self.head < self.len {
            let n = (self.len - self.head) as u32;
            // SAFETY: slots head..len hold mbufs we own and have not handed out.
            unsafe { sys::shim_rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr().add(self.head), n) };
            self.head = self.len;
        }
    }
}

impl Iterator for Burst {
    type Item = Mbuf;
    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        self.pop_front()
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.free_remaining();
    }
}

/// Packets waiting for one transmit queue, held on the stack; flushed with
/// [`crate::TxQueue::flush`]. Whatever the queue does not accept is freed and reported.
pub struct TxBuffer {
    ptrs: [*mut sys::rte_mbuf; BURST_SIZE],
    len: usize,
    /// Sum of `pkt_len` over the buffered packets.
    bytes: u64,
}

impl fmt::Debug for TxBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxBuffer").field("len", &self.len).finish()
    }
}

impl Default for TxBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl TxBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        TxBuffer {
            ptrs: [ptr::null_mut(); BURST_SIZE],
            len: 0,
            bytes: 0,
        }
    }

    /// Packets buffered.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is buffered.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the buffer holds a full burst and must be flushed before the next push.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == BURST_SIZE
    }

    /// Buffers `m`. If the buffer is already full the packet is handed back.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len >= BURST_SIZE {
            return Err(m);
        }
        self.bytes += u64::from(m.pkt_len());
        self.ptrs[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Hands the buffered pointers to `send`, which returns how many it took over; frees the
    /// rest. Returns (sent packets, sent bytes, dropped packets).
    #[inline]
    pub(crate) fn drain_with(
        &mut self,
        send: impl FnOnce(*mut *mut sys::rte_mbuf, u16) -> u16,
    ) -> (u32, u64, u32) {
        if self.len == 0 {
            return (0, 0, 0);
        }
        let n = self.len;
        let sent = usize::from(send(self.ptrs.as_mut_ptr(), n as u16)).min(n);
        let mut bytes = self.bytes;
        if sent < n {
            bytes -= self.unsent_bytes(sent, n);
            // SAFETY: slots sent..n are mbufs the queue did not take; we still own them.
            unsafe {
                sys::shim_rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr().add(sent), (n - sent) as u32)
            };
        }
        self.len = 0;
        self.bytes = 0;
        (sent as u32, bytes, (n - sent) as u32)
    }
}

impl TxBuffer {
    /// Bytes of the packets in slots `from..to`, which this buffer still owns.
    fn unsent_bytes(&self, from: usize, to: usize) -> u64 {
        self.ptrs[from..to]
            .iter()
            // SAFETY: these slots hold valid mbufs the queue did not take; we only read pkt_len.
            .map(|&p| u64::from(unsafe { (*p).pkt_len }))
            .sum()
    }

    /// Hands the buffered pointers to `send` and keeps what it did not take, in order, for the
    /// next attempt. Returns (sent packets, sent bytes).
    #[inline]
    pub(crate) fn send_keep_rest(
        &mut self,
        send: impl FnOnce(*mut *mut sys::rte_mbuf, u16) -> u16,
    ) -> (u32, u64) {
        if self.len == 0 {
            return (0, 0);
        }
        let n = self.len;
        let sent = usize::from(send(self.ptrs.as_mut_ptr(), n as u16)).min(n);
        let kept = self.unsent_bytes(sent, n);
        let bytes = self.bytes - kept;
        self.ptrs.copy_within(sent..n, 0);
        self.len = n - sent;
        self.bytes = kept;
        (sent as u32, bytes)
    }
}

impl Drop for TxBuffer {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: slots 0..len hold mbufs we own.
            unsafe { sys::shim_rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr(), self.len as u32) };
        }
    }
}
