//! Per-lcore counters: one writer (the lcore that owns them), any number of readers (the control
//! thread summing them at scrape time). Updates are a relaxed load and store of the writer's own
//! cache line: no read-modify-write instruction, no lock, no sharing between lcores.
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

    /// Only the owning [`StatsWriter`] calls this: plain load + store, no atomic RMW.
    #[inline]
    fn add(&self, n: u64) {
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
}

/// The write side of one lcore's counters. Not `Clone`: exactly one writer exists.
#[derive(Debug)]
pub struct StatsWriter {
    stats: Arc<LcoreStats>,
}

impl StatsWriter {
    /// Counters for `lcore` over `ports` ports; returns the writer and a reader handle.
    pub fn new(lcore: u32, ports: usize) -> (StatsWriter, Arc<LcoreStats>) {
        let stats = Arc::new(LcoreStats {
            lcore,
            polls: Counter::default(),
            busy_polls: Counter::default(),
            packets: Counter::default(),
            ports: (0..ports).map(|_| PortCounters::default()).collect(),
        });
        (
            StatsWriter {
                stats: stats.clone(),
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

    /// Records `n` packets dropped at `port` for `reason`.
    #[inline]
    pub fn drop(&mut self, port: PortIndex, reason: DropReason, n: u64) {
        if let Some(p) = self.stats.ports.get(usize::from(port.0)) {
            p.drops[reason.index()].add(n);
        }
    }
}

/// Totals over lcores for one port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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

impl PortTotals {
    /// All drops of the port, any reason.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().sum()
    }
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
        let (mut w1, r1) = StatsWriter::new(1, 2);
        let (mut w2, r2) = StatsWriter::new(2, 2);
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
    }
}
