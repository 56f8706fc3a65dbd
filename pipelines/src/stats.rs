//! Per-lcore counters: one writer (the lcore that owns them), any number of readers (the control
//! thread summing them at scrape time). Updates are a relaxed load and store of the writer's own
//! cache line: no read-modify-write instruction, no lock, no sharing between lcores.
use crate::flowlabel::LabelOutcome;
use crate::pipeline::PortIndex;
use crate::DropReason;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// A monotonically increasing counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Current value (a snapshot; may lag the writer by a few updates).
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Only the owning lcore calls this (through its [`StatsWriter`]): plain load + store, no
    /// atomic read-modify-write.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

/// Counters of one port as seen by one lcore. Cache-line aligned so lcores never share a line.
#[derive(Debug)]
#[repr(align(64))]
pub struct PortCounters {
    /// Packets received from the port by this lcore.
    pub rx_packets: Counter,
    /// Bytes received (frame lengths without FCS).
    pub rx_bytes: Counter,
    /// Packets the transmit queue accepted.
    pub tx_packets: Counter,
    /// Bytes the transmit queue accepted.
    pub tx_bytes: Counter,
    /// Drops attributed to this port (ingress drops to the receiving port, transmit drops to
    /// the sending port), by reason.
    pub drops: [Counter; DropReason::COUNT],
}

impl Default for PortCounters {
    fn default() -> Self {
        PortCounters {
            rx_packets: Counter::default(),
            rx_bytes: Counter::default(),
            tx_packets: Counter::default(),
            tx_bytes: Counter::default(),
            drops: std::array::from_fn(|_| Counter::default()),
        }
    }
}

/// Counters of one filter as seen by one lcore.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct FilterCounters {
    /// Packets the filter matched (classid mode: a non-zero result; direct action: any verdict
    /// other than "unspec").
    pub packets: Counter,
    /// Bytes of those packets.
    pub bytes: Counter,
    /// When the filter last matched on this lcore: the writer's clock (milliseconds since the
    /// Unix epoch, as the worker sets it once per poll round), 0 if never.
    pub last_use_ms: Counter,
}

/// Counters of one action as seen by one lcore (tc's per-action statistics).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct ActionCounters {
    /// Times the action ran.
    pub packets: Counter,
    /// Bytes of those packets.
    pub bytes: Counter,
    /// Mirror/redirect targets that could not take a copy: target down, group without other
    /// members, no clone buffer (tc's `overlimits`).
    pub overlimits: Counter,
    /// Packets the action dropped (redirect to a down target, nest limit).
    pub drops: Counter,
    /// When the action last ran on this lcore (milliseconds since the Unix epoch), 0 if never.
    pub last_use_ms: Counter,
}

/// What the IPv6 flow-label stage did on one lcore.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct FlowLabelCounters {
    /// Packets whose label was written (dynamic or pinned).
    pub labelled: Counter,
    /// Packets whose flow had a live entry.
    pub hits: Counter,
    /// New entries (flows) with a unique label.
    pub allocations: Counter,
    /// Candidate labels found taken before a free one (the kernel's `fl_intern` retries).
    pub collisions: Counter,
    /// Flows given a stateless label because their buckets were full.
    pub fallback_table_full: Counter,
    /// Flows given a stateless label because no free label was found.
    pub fallback_labels_exhausted: Counter,
    /// Packets given a reserved label by a `flowlabel` action.
    pub pinned: Counter,
    /// Packets with a non-zero label kept by a `fill` port.
    pub kept: Counter,
    /// Packets left unlabelled because their bytes are shared with a mirror copy.
    pub shared_unlabelled: Counter,
}

/// One SA's counters on one lcore (held by the SA itself, one [`crate::ipsec::SaLane`] per
/// worker, so that they follow the SA across reloads and go with it).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct SaCounters {
    /// Packets protected (outbound) or accepted (inbound).
    pub packets: Counter,
    /// Inner bytes of those packets.
    pub bytes: Counter,
    /// Inbound packets refused as replays.
    pub replay: Counter,
    /// Inbound packets older than the window.
    pub too_old: Counter,
    /// Inbound packets whose ICV did not verify.
    pub bad_icv: Counter,
    /// Other failures (crypto device errors, bad padding, policy, sequence exhaustion, expiry).
    pub errors: Counter,
}

/// What the tunnel stage did besides moving packets, on one lcore.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct TunnelCounters {
    /// ICMP errors (fragmentation needed / packet too big) sent toward senders.
    pub icmp_sent: Counter,
    /// ICMP errors not sent: over the worker's rate limit.
    pub icmp_rate_limited: Counter,
    /// ICMP echo replies sent for local endpoint addresses.
    pub echo_replies: Counter,
    /// ARP replies sent for local endpoint addresses.
    pub arp_replies: Counter,
    /// ARP requests sent for unresolved next hops.
    pub arp_requests: Counter,
    /// Next-hop MACs learnt from ARP.
    pub arp_learnt: Counter,
    /// Path MTUs lowered by ICMP errors about our ESP packets.
    pub pmtu_updates: Counter,
    /// Operations handed to the crypto device.
    pub crypto_enqueued: Counter,
    /// Operations the crypto device returned.
    pub crypto_dequeued: Counter,
}

impl Counter {
    /// Overwrites the value (single writer only).
    #[inline]
    fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
}

/// Counters of one worker lcore.
#[derive(Debug)]
#[repr(align(64))]
pub struct LcoreStats {
    /// The EAL lcore id.
    pub lcore: u32,
    /// Poll rounds over all of the lcore's receive queues.
    pub polls: Counter,
    /// Poll rounds that received at least one packet.
    pub busy_polls: Counter,
    /// Packets this lcore received and processed.
    pub packets: Counter,
    /// Per-port counters, indexed by [`PortIndex`].
    pub ports: Box<[PortCounters]>,
    /// Per-filter counters, indexed by filter id.
    pub filters: Box<[FilterCounters]>,
    /// Per-action counters, indexed by action id.
    pub actions: Box<[ActionCounters]>,
    /// Copies made by mirror actions (zero-copy clones): with them, received + copies =
    /// transmitted + dropped.
    pub mirror_copies: Counter,
    /// The flow-label stage.
    pub flowlabel: FlowLabelCounters,
    /// The tunnel stage.
    pub tunnel: TunnelCounters,
}

/// The write side of one lcore's counters. Not `Clone`: exactly one writer exists.
#[derive(Debug)]
pub struct StatsWriter {
    stats: Arc<LcoreStats>,
    now_ms: u64,
}

impl StatsWriter {
    /// Counters for `lcore` over `ports` ports, `filters` filters and `actions` actions; returns
    /// the writer and a reader handle.
    pub fn new(
        lcore: u32,
        ports: usize,
        filters: usize,
        actions: usize,
    ) -> (StatsWriter, Arc<LcoreStats>) {
        let stats = Arc::new(LcoreStats {
            lcore,
            polls: Counter::default(),
            busy_polls: Counter::default(),
            packets: Counter::default(),
            ports: (0..ports).map(|_| PortCounters::default()).collect(),
            filters: (0..filters).map(|_| FilterCounters::default()).collect(),
            actions: (0..actions).map(|_| ActionCounters::default()).collect(),
            mirror_copies: Counter::default(),
            flowlabel: FlowLabelCounters::default(),
            tunnel: TunnelCounters::default(),
        });
        (
            StatsWriter {
                stats: stats.clone(),
                now_ms: 0,
            },
            stats,
        )
    }

    /// A read-only view of the counters.
    pub fn stats(&self) -> &LcoreStats {
        &self.stats
    }

    /// Records one poll round that received `packets` packets.
    #[inline]
    pub fn poll(&mut self, packets: u64) {
        self.stats.polls.add(1);
        if packets > 0 {
            self.stats.busy_polls.add(1);
            self.stats.packets.add(packets);
        }
    }

    /// Records packets received on `port`.
    #[inline]
    pub fn rx(&mut self, port: PortIndex, packets: u64, bytes: u64) {
        if let Some(p) = self.stats.ports.get(usize::from(port.0)) {
            p.rx_packets.add(packets);
            p.rx_bytes.add(bytes);
        }
    }

    /// Records packets transmitted on `port`.
    #[inline]
    pub fn tx(&mut self, port: PortIndex, packets: u64, bytes: u64) {
        if let Some(p) = self.stats.ports.get(usize::from(port.0)) {
            p.tx_packets.add(packets);
            p.tx_bytes.add(bytes);
        }
    }

    /// Sets the clock used for "last use" times (milliseconds since the Unix epoch). The worker
    /// calls it once per poll round.
    #[inline]
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Records one packet of `bytes` bytes matched by filter `id`.
    #[inline]
    pub fn filter_hit(&mut self, id: u32, bytes: u32) {
        if let Some(f) = self.stats.filters.get(id as usize) {
            f.packets.add(1);
            f.bytes.add(u64::from(bytes));
            if f.last_use_ms.get() != self.now_ms {
                f.last_use_ms.set(self.now_ms);
            }
        }
    }

    /// Records one run of action `id` on a packet of `bytes` bytes.
    #[inline]
    pub fn action_hit(&mut self, id: u32, bytes: u32) {
        if let Some(a) = self.stats.actions.get(id as usize) {
            a.packets.add(1);
            a.bytes.add(u64::from(bytes));
            if a.last_use_ms.get() != self.now_ms {
                a.last_use_ms.set(self.now_ms);
            }
        }
    }

    /// Records a target of action `id` that could not take the packet.
    #[inline]
    pub fn action_overlimit(&mut self, id: u32) {
        if let Some(a) = self.stats.actions.get(id as usize) {
            a.overlimits.add(1);
        }
    }

    /// Records a packet dropped by action `id` (the port's drop reason is counted separately).
    #[inline]
    pub fn action_drop(&mut self, id: u32) {
        if let Some(a) = self.stats.actions.get(id as usize) {
            a.drops.add(1);
        }
    }

    /// The clock set by [`StatsWriter::set_now_ms`].
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Records how one packet's flow got its label.
    #[inline]
    pub fn flowlabel_outcome(&mut self, how: LabelOutcome, collisions: u32) {
        let f = &self.stats.flowlabel;
        match how {
            LabelOutcome::Hit => f.hits.add(1),
            LabelOutcome::New => f.allocations.add(1),
            LabelOutcome::FallbackTableFull => f.fallback_table_full.add(1),
            LabelOutcome::FallbackLabelsExhausted => f.fallback_labels_exhausted.add(1),
        }
        if collisions != 0 {
            f.collisions.add(u64::from(collisions));
        }
    }

    /// Records one packet labelled (`true`) or left alone because its bytes are shared.
    #[inline]
    pub fn flowlabel_written(&mut self, written: bool) {
        if written {
            self.stats.flowlabel.labelled.add(1);
        } else {
            self.stats.flowlabel.shared_unlabelled.add(1);
        }
    }

    /// Records one packet given a pinned (reserved) label.
    #[inline]
    pub fn flowlabel_pinned(&mut self) {
        self.stats.flowlabel.pinned.add(1);
    }

    /// Records one packet whose non-zero label a `fill` port kept.
    #[inline]
    pub fn flowlabel_kept(&mut self) {
        self.stats.flowlabel.kept.add(1);
    }

    /// The tunnel stage's counters (writer side).
    #[inline]
    pub fn tunnel(&mut self) -> &TunnelCounters {
        &self.stats.tunnel
    }

    /// Records one mirror copy.
    #[inline]
    pub fn mirror_copy(&mut self) {
        self.stats.mirror_copies.add(1);
    }

    /// Records `n` packets dropped at `port` for `reason`.
    #[inline]
    pub fn drop(&mut self, port: PortIndex, reason: DropReason, n: u64) {
        if let Some(p) = self.stats.ports.get(usize::from(port.0)) {
            p.drops[reason.index()].add(n);
        }
    }
}

/// Totals over lcores for one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTotals {
    /// Sum of `rx_packets`.
    pub rx_packets: u64,
    /// Sum of `rx_bytes`.
    pub rx_bytes: u64,
    /// Sum of `tx_packets`.
    pub tx_packets: u64,
    /// Sum of `tx_bytes`.
    pub tx_bytes: u64,
    /// Sum of drops, by [`DropReason::index`].
    pub drops: [u64; DropReason::COUNT],
}

impl Default for PortTotals {
    fn default() -> Self {
        PortTotals {
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl PortTotals {
    /// All drops of the port, any reason.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Totals over lcores for one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FilterTotals {
    /// Sum of `packets`.
    pub packets: u64,
    /// Sum of `bytes`.
    pub bytes: u64,
    /// Latest `last_use_ms` of any lcore (0 if never).
    pub last_use_ms: u64,
}

/// Sums every lcore's counters per filter.
pub fn filter_totals(lcores: &[Arc<LcoreStats>], filters: usize) -> Vec<FilterTotals> {
    let mut out = vec![FilterTotals::default(); filters];
    for l in lcores {
        for (t, f) in out.iter_mut().zip(l.filters.iter()) {
            t.packets += f.packets.get();
            t.bytes += f.bytes.get();
            t.last_use_ms = t.last_use_ms.max(f.last_use_ms.get());
        }
    }
    out
}

/// Totals over lcores for one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActionTotals {
    /// Sum of `packets`.
    pub packets: u64,
    /// Sum of `bytes`.
    pub bytes: u64,
    /// Sum of `overlimits`.
    pub overlimits: u64,
    /// Sum of `drops`.
    pub drops: u64,
    /// Latest `last_use_ms` of any lcore (0 if never).
    pub last_use_ms: u64,
}

/// Sums every lcore's counters per action.
pub fn action_totals(lcores: &[Arc<LcoreStats>], actions: usize) -> Vec<ActionTotals> {
    let mut out = vec![ActionTotals::default(); actions];
    for l in lcores {
        for (t, a) in out.iter_mut().zip(l.actions.iter()) {
            t.packets += a.packets.get();
            t.bytes += a.bytes.get();
            t.overlimits += a.overlimits.get();
            t.drops += a.drops.get();
            t.last_use_ms = t.last_use_ms.max(a.last_use_ms.get());
        }
    }
    out
}

/// Flow-label counters summed over lcores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowLabelTotals {
    /// See [`FlowLabelCounters::labelled`].
    pub labelled: u64,
    /// See [`FlowLabelCounters::hits`].
    pub hits: u64,
    /// See [`FlowLabelCounters::allocations`].
    pub allocations: u64,
    /// See [`FlowLabelCounters::collisions`].
    pub collisions: u64,
    /// See [`FlowLabelCounters::fallback_table_full`].
    pub fallback_table_full: u64,
    /// See [`FlowLabelCounters::fallback_labels_exhausted`].
    pub fallback_labels_exhausted: u64,
    /// See [`FlowLabelCounters::pinned`].
    pub pinned: u64,
    /// See [`FlowLabelCounters::kept`].
    pub kept: u64,
    /// See [`FlowLabelCounters::shared_unlabelled`].
    pub shared_unlabelled: u64,
}

/// Sums every lcore's flow-label counters.
pub fn flowlabel_totals(lcores: &[Arc<LcoreStats>]) -> FlowLabelTotals {
    let mut t = FlowLabelTotals::default();
    for l in lcores {
        let f = &l.flowlabel;
        t.labelled += f.labelled.get();
        t.hits += f.hits.get();
        t.allocations += f.allocations.get();
        t.collisions += f.collisions.get();
        t.fallback_table_full += f.fallback_table_full.get();
        t.fallback_labels_exhausted += f.fallback_labels_exhausted.get();
        t.pinned += f.pinned.get();
        t.kept += f.kept.get();
        t.shared_unlabelled += f.shared_unlabelled.get();
    }
    t
}

/// Sums every lcore's counters per port (the control thread's view).
pub fn port_totals(lcores: &[Arc<LcoreStats>], ports: usize) -> Vec<PortTotals> {
    let mut out = vec![PortTotals::default(); ports];
    for l in lcores {
        for (t, p) in out.iter_mut().zip(l.ports.iter()) {
            t.rx_packets += p.rx_packets.get();
            t.rx_bytes += p.rx_bytes.get();
            t.tx_packets += p.tx_packets.get();
            t.tx_bytes += p.tx_bytes.get();
            for (d, c) in t.drops.iter_mut().zip(p.drops.iter()) {
                *d += c.get();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_updates_are_visible_to_readers_and_sum_per_port() {
        let (mut w1, r1) = StatsWriter::new(1, 2, 2, 1);
        let (mut w2, r2) = StatsWriter::new(2, 2, 2, 1);
        w1.set_now_ms(1000);
        w2.set_now_ms(2000);
        w1.filter_hit(1, 60);
        w2.filter_hit(1, 1500);
        w2.filter_hit(7, 1); // out of range: ignored
        let f = filter_totals(&[r1.clone(), r2.clone()], 2);
        assert_eq!(f[0], FilterTotals::default());
        assert_eq!(
            f[1],
            FilterTotals {
                packets: 2,
                bytes: 1560,
                last_use_ms: 2000
            }
        );
        w1.rx(PortIndex(0), 3, 300);
        w2.rx(PortIndex(0), 2, 128);
        w1.tx(PortIndex(1), 5, 428);
        w2.drop(PortIndex(1), DropReason::TxQueueFull, 4);
        w1.poll(0);
        w1.poll(3);
        w1.rx(PortIndex(9), 1, 1); // out of range: ignored, no panic
        let t = port_totals(&[r1.clone(), r2], 2);
        assert_eq!(t[0].rx_packets, 5);
        assert_eq!(t[0].rx_bytes, 428);
        assert_eq!(t[1].tx_packets, 5);
        assert_eq!(t[1].drops[DropReason::TxQueueFull.index()], 4);
        assert_eq!(t[1].drops_total(), 4);
        assert_eq!(
            (r1.polls.get(), r1.busy_polls.get(), r1.packets.get()),
            (2, 1, 3)
        );
    }

    #[test]
    fn per_lcore_blocks_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<PortCounters>(), 64);
        assert_eq!(std::mem::size_of::<PortCounters>() % 64, 0);
        assert_eq!(std::mem::align_of::<LcoreStats>(), 64);
        assert_eq!(std::mem::size_of::<FilterCounters>(), 64);
        assert_eq!(std::mem::size_of::<ActionCounters>(), 64);
    }
}
