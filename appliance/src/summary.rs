//! The end-of-run report: printed for people, written as JSON for tests and tooling.
use crate::config::PortConfig;
use pipelines::stats::PortTotals;
use pipelines::DropReason;
use pmd_glue::PortStats;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The flow-label table and what the stage did.
#[derive(Debug, Clone, Serialize)]
pub struct FlowLabelSummary {
    /// Configured capacity.
    pub capacity: usize,
    /// Slots of the table.
    pub slots: usize,
    /// Live entries at the end.
    pub live: usize,
    /// Packets labelled.
    pub labelled: u64,
    /// Packets of flows with a live entry.
    pub hits: u64,
    /// New flows given a unique label.
    pub allocations: u64,
    /// Taken candidate labels passed over.
    pub collisions: u64,
    /// Stateless labels because the flow's buckets were full.
    pub fallback_table_full: u64,
    /// Stateless labels because no free label was found.
    pub fallback_labels_exhausted: u64,
    /// Packets given a pinned (reserved) label.
    pub pinned: u64,
    /// Non-zero labels kept by `fill` ports.
    pub kept: u64,
    /// Packets left unlabelled because their bytes are shared with a mirror copy.
    pub shared_unlabelled: u64,
    /// Entries reclaimed by the collector.
    pub expired: u64,
}

impl FlowLabelSummary {
    /// From the table and the lcores' totals.
    pub fn new(
        t: &pipelines::flowlabel::FlowLabelTable,
        c: &pipelines::stats::FlowLabelTotals,
    ) -> FlowLabelSummary {
        FlowLabelSummary {
            capacity: t.capacity(),
            slots: t.slots(),
            live: t.live(),
            labelled: c.labelled,
            hits: c.hits,
            allocations: c.allocations,
            collisions: c.collisions,
            fallback_table_full: c.fallback_table_full,
            fallback_labels_exhausted: c.fallback_labels_exhausted,
            pinned: c.pinned,
            kept: c.kept,
            shared_unlabelled: c.shared_unlabelled,
            expired: t.gc_stats().expired,
        }
    }
}

/// One port's totals.
#[derive(Debug, Clone, Serialize)]
pub struct PortSummary {
    /// Configured name.
    pub name: String,
    /// DPDK device.
    pub device: String,
    /// Packets received by workers.
    pub rx_packets: u64,
    /// Bytes received by workers.
    pub rx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Drops by reason label (non-zero only).
    pub drops: BTreeMap<&'static str, u64>,
    /// Device counters.
    pub dev_ipackets: u64,
    /// Device counters.
    pub dev_opackets: u64,
    /// Device counters.
    pub dev_imissed: u64,
    /// Device counters.
    pub dev_ierrors: u64,
    /// Device counters.
    pub dev_oerrors: u64,
    /// Device counters.
    pub dev_rx_nombuf: u64,
    /// Output capture written by a net_pcap port, if any.
    pub output_pcap: Option<String>,
}

impl PortSummary {
    /// Builds a port's summary.
    pub fn new(pc: &PortConfig, t: &PortTotals, d: &PortStats) -> Self {
        let drops = DropReason::ALL
            .iter()
            .filter(|r| t.drops[r.index()] > 0)
            .map(|r| (r.label(), t.drops[r.index()]))
            .collect();
        let output_pcap = pc
            .args
            .as_deref()
            .and_then(|a| a.split(',').find_map(|kv| kv.strip_prefix("tx_pcap=")))
            .filter(|_| pc.device.starts_with("net_pcap"))
            .map(str::to_owned);
        PortSummary {
            name: pc.name.clone(),
            device: pc.device.clone(),
            rx_packets: t.rx_packets,
            rx_bytes: t.rx_bytes,
            tx_packets: t.tx_packets,
            tx_bytes: t.tx_bytes,
            drops,
            dev_ipackets: d.ipackets,
            dev_opackets: d.opackets,
            dev_imissed: d.imissed,
            dev_ierrors: d.ierrors,
            dev_oerrors: d.oerrors,
            dev_rx_nombuf: d.rx_nombuf,
            output_pcap,
        }
    }
}

/// One worker's totals.
#[derive(Debug, Clone, Serialize)]
pub struct LcoreSummary {
    /// Lcore id.
    pub lcore: u32,
    /// Poll rounds.
    pub polls: u64,
    /// Poll rounds that received packets.
    pub busy_polls: u64,
    /// Packets processed.
    pub packets: u64,
}

/// One filter's totals.
#[derive(Debug, Clone, Serialize)]
pub struct FilterSummary {
    /// Port, hook, name, kind, engine, program size.
    #[serde(flatten)]
    pub info: crate::metrics::FilterInfo,
    /// Packets matched.
    pub matched_packets: u64,
    /// Bytes matched.
    pub matched_bytes: u64,
}

/// One action's totals.
#[derive(Debug, Clone, Serialize)]
pub struct ActionSummary {
    /// Where the action is and what it does.
    #[serde(flatten)]
    pub info: crate::metrics::ActionInfo,
    /// Times it ran.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
    /// Targets that could not take the packet.
    pub overlimits: u64,
    /// Packets it dropped.
    pub drops: u64,
}

/// A pool's state after shutdown.
#[derive(Debug, Clone, Serialize)]
pub struct PoolSummary {
    /// Pool name.
    pub name: String,
    /// Mbufs in the pool.
    pub size: u32,
    /// Mbufs free.
    pub available: u32,
    /// Mbufs not returned (leaked) — 0 after a correct shutdown.
    pub in_use: u32,
}

/// The tunnel stage's totals over lcores (the summary and /metrics).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TunnelSummary {
    /// ICMP errors sent toward senders of too-big packets.
    pub icmp_sent: u64,
    /// ICMP errors not sent: over the rate limit.
    pub icmp_rate_limited: u64,
    /// ICMP echo replies for local endpoint addresses.
    pub echo_replies: u64,
    /// ARP replies for local endpoint addresses.
    pub arp_replies: u64,
    /// ARP requests for next hops.
    pub arp_requests: u64,
    /// Next-hop MACs learnt.
    pub arp_learnt: u64,
    /// Path MTUs lowered by ICMP.
    pub pmtu_updates: u64,
    /// Crypto operations enqueued.
    pub crypto_enqueued: u64,
    /// Crypto operations dequeued.
    pub crypto_dequeued: u64,
}

impl TunnelSummary {
    /// Sums the workers' tunnel counters.
    pub fn of(lcores: &[std::sync::Arc<pipelines::stats::LcoreStats>]) -> TunnelSummary {
        let mut t = TunnelSummary::default();
        for l in lcores {
            let c = &l.tunnel;
            t.icmp_sent += c.icmp_sent.get();
            t.icmp_rate_limited += c.icmp_rate_limited.get();
            t.echo_replies += c.echo_replies.get();
            t.arp_replies += c.arp_replies.get();
            t.arp_requests += c.arp_requests.get();
            t.arp_learnt += c.arp_learnt.get();
            t.pmtu_updates += c.pmtu_updates.get();
            t.crypto_enqueued += c.crypto_enqueued.get();
            t.crypto_dequeued += c.crypto_dequeued.get();
        }
        t
    }
}

/// One SA after the run.
#[derive(Debug, Clone, Serialize)]
pub struct SaSummary {
    /// Name.
    pub name: String,
    /// SPI.
    pub spi: u32,
    /// "in" or "out".
    pub direction: &'static str,
    /// Algorithm name.
    pub algorithm: &'static str,
    /// Packets protected / accepted.
    pub packets: u64,
    /// Their inner bytes.
    pub bytes: u64,
    /// Replays refused.
    pub replay: u64,
    /// Too old for the window.
    pub too_old: u64,
    /// ICV failures.
    pub bad_icv: u64,
    /// Other errors.
    pub errors: u64,
    /// Outbound: highest sequence number reserved; inbound: highest authenticated.
    pub seq: u64,
    /// Whether a hard lifetime was reached.
    pub expired: bool,
    /// Whether a soft lifetime was reached.
    pub soft_expired: bool,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Wall time of the run.
    pub duration_s: f64,
    /// Per port.
    pub ports: Vec<PortSummary>,
    /// Per worker lcore.
    pub lcores: Vec<LcoreSummary>,
    /// Per filter, in run order per hook.
    pub filters: Vec<FilterSummary>,
    /// Per action, in id order.
    pub actions: Vec<ActionSummary>,
    /// Zero-copy copies made by mirror actions (received + copies = transmitted + dropped).
    pub mirror_copies: u64,
    /// The flow-label stage, when some port labels.
    pub flowlabels: Option<FlowLabelSummary>,
    /// The tunnel stage, when tunnels or SAs are configured.
    pub tunnels: Option<TunnelSummary>,
    /// Per security association, in configuration order (no keys).
    pub sas: Vec<SaSummary>,
    /// Pools after shutdown.
    pub mempools: Vec<PoolSummary>,
    /// Sum of `in_use` over pools.
    pub leaked_mbufs: u64,
    /// Caught worker panics.
    pub worker_panics: Vec<String>,
    /// Errors during shutdown.
    pub errors: Vec<String>,
}

impl Summary {
    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n==== appliance summary ({:.2} s) ====",
            self.duration_s
        );
        let _ = writeln!(
            s,
            "{:<12} {:>12} {:>14} {:>12} {:>14} {:>10}",
            "port", "rx-packets", "rx-bytes", "tx-packets", "tx-bytes", "drops"
        );
        for p in &self.ports {
            let drops: u64 = p.drops.values().sum();
            let _ = writeln!(
                s,
                "{:<12} {:>12} {:>14} {:>12} {:>14} {:>10}",
                p.name, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes, drops
            );
            for (r, n) in &p.drops {
                let _ = writeln!(s, "{:<12}   drop {r}: {n}", "");
            }
            if p.dev_imissed + p.dev_ierrors + p.dev_oerrors + p.dev_rx_nombuf > 0 {
                let _ = writeln!(
                    s,
                    "{:<12}   device: imissed {} ierrors {} oerrors {} rx_nombuf {}",
                    "", p.dev_imissed, p.dev_ierrors, p.dev_oerrors, p.dev_rx_nombuf
                );
            }
        }
        if !self.filters.is_empty() {
            let _ = writeln!(
                s,
                "{:<12} {:<8} {:<20} {:<12} {:>12} {:>14}",
                "filter-port", "hook", "filter", "engine", "matched", "matched-bytes"
            );
            for f in &self.filters {
                let _ = writeln!(
                    s,
                    "{:<12} {:<8} {:<20} {:<12} {:>12} {:>14}",
                    f.info.port,
                    f.info.hook,
                    f.info.name,
                    f.info.engine,
                    f.matched_packets,
                    f.matched_bytes
                );
            }
        }
        if !self.actions.is_empty() {
            let _ = writeln!(
                s,
                "{:<24} {:<8} {:<14} {:<32} {:>10} {:>10} {:>8}",
                "action (port/filter)", "class", "kind", "detail", "packets", "overlimits", "drops"
            );
            for a in &self.actions {
                let _ = writeln!(
                    s,
                    "{:<24} {:<8} {:<14} {:<32} {:>10} {:>10} {:>8}",
                    format!("{}/{}#{}", a.info.port, a.info.filter, a.info.index),
                    a.info.class,
                    a.info.kind,
                    a.info.detail,
                    a.packets,
                    a.overlimits,
                    a.drops
                );
            }
            if self.mirror_copies > 0 {
                let _ = writeln!(s, "mirror copies: {}", self.mirror_copies);
            }
        }
        for a in &self.sas {
            let _ = writeln!(
                s,
                "sa {} (spi {:#x}, {}, {}): {} packets, {} bytes, seq {}, replay {}, too old {}, bad icv {}, errors {}{}",
                a.name, a.spi, a.direction, a.algorithm, a.packets, a.bytes, a.seq, a.replay,
                a.too_old, a.bad_icv, a.errors,
                if a.expired { ", expired" } else if a.soft_expired { ", soft lifetime reached" } else { "" }
            );
        }
        if let Some(t) = &self.tunnels {
            let _ = writeln!(
                s,
                "tunnels: crypto {} enqueued / {} dequeued, icmp errors sent {} (rate-limited {}), arp replies {}, arp requests {}, next hops learnt {}, pmtu updates {}, echo replies {}",
                t.crypto_enqueued, t.crypto_dequeued, t.icmp_sent, t.icmp_rate_limited, t.arp_replies, t.arp_requests,
                t.arp_learnt, t.pmtu_updates, t.echo_replies
            );
        }
        if let Some(f) = &self.flowlabels {
            let _ = writeln!(
                s,
                "flow labels: {} packets labelled ({} hits, {} new flows, {} collisions \
                 retried, {} kept, {} pinned, {} unlabelled shared); fallbacks: {} table full, \
                 {} labels exhausted; table {}/{} live, {} expired",
                f.labelled,
                f.hits,
                f.allocations,
                f.collisions,
                f.kept,
                f.pinned,
                f.shared_unlabelled,
                f.fallback_table_full,
                f.fallback_labels_exhausted,
                f.live,
                f.capacity,
                f.expired
            );
        }
        let _ = writeln!(
            s,
            "{:<12} {:>12} {:>12} {:>8} {:>12}",
            "lcore", "polls", "busy-polls", "busy%", "packets"
        );
        for l in &self.lcores {
            let pct = if l.polls == 0 {
                0.0
            } else {
                100.0 * l.busy_polls as f64 / l.polls as f64
            };
            let _ = writeln!(
                s,
                "{:<12} {:>12} {:>12} {:>7.1}% {:>12}",
                l.lcore, l.polls, l.busy_polls, pct, l.packets
            );
        }
        for m in &self.mempools {
            let state = if m.in_use == 0 {
                "all mbufs returned".to_owned()
            } else {
                format!("LEAK: {} mbufs not returned", m.in_use)
            };
            let _ = writeln!(
                s,
                "mempool {}: {}/{} free ({state})",
                m.name, m.available, m.size
            );
        }
        for p in self
            .ports
            .iter()
            .filter_map(|p| p.output_pcap.as_ref().map(|o| (p, o)))
        {
            let _ = writeln!(
                s,
                "output capture of port {}: {} (tcpdump -nn -r {})",
                p.0.name, p.1, p.1
            );
        }
        for e in self.worker_panics.iter().chain(&self.errors) {
            let _ = writeln!(s, "error: {e}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use pipelines::DropReason;

    #[test]
    fn the_readme_documents_every_drop_reason() {
        let readme = include_str!("../../README.md");
        for r in DropReason::ALL {
            assert!(
                readme.contains(&format!("| `{}` |", r.label())),
                "README lacks drop reason {}",
                r.label()
            );
        }
    }
}
