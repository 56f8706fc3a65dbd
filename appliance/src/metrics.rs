//! `/metrics` in Prometheus/OpenMetrics text format, served by a control thread that never runs
//! on a worker lcore. Per-lcore counters are summed at scrape time (VPP-style), DPDK port
//! counters and xstats are read from the devices.
use pipelines::flowlabel::FlowLabelTable;
use pipelines::ipsec::Ipsec;
use pipelines::stats::{
    action_totals, filter_totals, port_totals, ActionTotals, FilterTotals, LcoreStats,
};
use pipelines::DropReason;
use pmd_glue::{Mempool, StatsReader};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt::Error as FmtError;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

/// What the collector reads at each scrape.
#[derive(Debug)]
pub struct Telemetry {
    /// Port names, indexed like the pipeline's ports.
    pub port_names: Vec<String>,
    /// Whether each port is administratively up (`ports[].state`), same order.
    pub admin_up: Vec<bool>,
    /// Each port's `device` (empty for tunnels), same order.
    pub devices: Vec<String>,
    /// DPDK counter readers, one per port (same order; `None` for tunnels, which have no
    /// device).
    pub readers: Vec<Option<StatsReader>>,
    /// Every worker's counters.
    pub lcores: Vec<Arc<LcoreStats>>,
    /// The running generation's filters and actions with their counter slots (swapped by
    /// reloads).
    pub counted: crate::reload::SharedCounted,
    /// Reload counters.
    pub reloads: Arc<crate::reload::ReloadStats>,
    /// Packet pools.
    pub pools: Vec<Mempool>,
    /// Start time, for the uptime gauge.
    pub started: Instant,
    /// The flow-label table, once some port labels (at start or after a reload).
    pub flowlabels: crate::reload::SharedFlowLabels,
    /// Sessions allocated on the crypto device (refreshed by the control loop), when one is
    /// open.
    pub crypto_sessions: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// What identifies a filter in metrics and the summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FilterInfo {
    /// Port name.
    pub port: String,
    /// "ingress" or "egress".
    pub hook: &'static str,
    /// Filter name.
    pub name: String,
    /// Classifier kind ("bpf", "flow").
    pub kind: &'static str,
    /// Engine running it ("rbpf-jit", "interpreter"; "flow-hash", "flow-map").
    pub engine: String,
    /// Program length in instructions (flow classifiers: number of keys).
    pub insns: usize,
    /// Index of its counters in the lcores' filter counters (see [`crate::reload`]).
    #[serde(skip)]
    pub slot: usize,
}

impl FilterInfo {
    /// The filters of `gen` in id order (the order [`Generation::assign_filter_ids`] numbers
    /// them).
    ///
    /// [`Generation::assign_filter_ids`]: pipelines::pipeline::Generation::assign_filter_ids
    pub fn of(gen: &pipelines::pipeline::Generation) -> Arc<Vec<FilterInfo>> {
        Arc::new(
            gen.filters()
                .map(|(p, hook, f)| {
                    let (engine, insns) = f.classifier.describe();
                    FilterInfo {
                        port: p.name.clone(),
                        hook: hook.label(),
                        name: f.name.clone(),
                        kind: f.classifier.kind(),
                        engine: engine.to_owned(),
                        insns,
                        slot: 0,
                    }
                })
                .collect(),
        )
    }
}

/// What metrics and summaries show about one action (in action id order).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionInfo {
    /// Port of the filter.
    pub port: String,
    /// "ingress" or "egress".
    pub hook: &'static str,
    /// Filter name.
    pub filter: String,
    /// The class id whose list holds the action ("maj:min"), empty for the default list.
    pub class: String,
    /// Position in its list (0-based).
    pub index: String,
    /// Action kind: pass, drop, continue, mirred, set_mark, set_classid, set_priority.
    pub kind: &'static str,
    /// For mirred: "egress mirror to PORT", "ingress redirect to group G", ...; else empty.
    pub detail: String,
    /// Index of its counters in the lcores' action counters (see [`crate::reload`]).
    #[serde(skip)]
    pub slot: usize,
}

/// A class id in tc's "major:minor" hex notation.
fn tc_handle(c: u32) -> String {
    format!("{:x}:{:x}", c >> 16, c & 0xffff)
}

impl ActionInfo {
    /// Every action of `gen` in id order.
    pub fn of(gen: &pipelines::pipeline::Generation) -> Arc<Vec<ActionInfo>> {
        use pipelines::pipeline::{Action, MirredDirection, MirredOp, MirredTarget};
        let mut out = Vec::new();
        for (p, hook, f) in gen.filters() {
            for (class, actions, _) in f.action_lists() {
                for (i, a) in actions.iter().enumerate() {
                    let (kind, detail) = match a {
                        Action::Pass => ("pass", String::new()),
                        Action::Drop => ("drop", String::new()),
                        Action::Continue => ("continue", String::new()),
                        Action::SetMark(m) => ("set_mark", format!("{m:#x}")),
                        Action::SetClassid(c) => ("set_classid", tc_handle(*c)),
                        Action::SetPriority(v) => ("set_priority", v.to_string()),
                        Action::SetFlowLabel(l) => ("flowlabel", format!("{l:#07x}")),
                        Action::Mirred(m) => {
                            let dir = match m.direction {
                                MirredDirection::Egress => "egress",
                                MirredDirection::Ingress => "ingress",
                            };
                            let op = match m.op {
                                MirredOp::Mirror => "mirror",
                                MirredOp::Redirect => "redirect",
                            };
                            let to = match m.target {
                                MirredTarget::Port(t) => gen
                                    .ports
                                    .get(usize::from(t.0))
                                    .map_or_else(|| t.to_string(), |p| p.name.clone()),
                                MirredTarget::Group(g) => format!(
                                    "group {}",
                                    gen.groups
                                        .get(usize::from(g))
                                        .map_or("?", |g| g.name.as_str())
                                ),
                            };
                            ("mirred", format!("{dir} {op} to {to}"))
                        }
                    };
                    out.push(ActionInfo {
                        port: p.name.clone(),
                        hook: hook.label(),
                        filter: f.name.clone(),
                        class: class.map_or_else(String::new, tc_handle),
                        index: i.to_string(),
                        kind,
                        detail,
                        slot: out.len(),
                    });
                }
            }
        }
        Arc::new(out)
    }
}

/// Label pairs of one series.
type Labels<'a> = Vec<(&'a str, &'a str)>;
/// The series of one metric family: labels and value.
type Series<'a, V> = Vec<(Labels<'a>, V)>;

/// Encodes one metric family: its descriptor, then one metric per series built by `metric`.
fn family<V: Copy, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: &[(Labels<'_>, V)],
    metric: impl Fn(V) -> M,
) -> Result<(), FmtError> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in series {
        metric(*v).encode(m.encode_family(&labels.as_slice())?)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels<'_>, u64)],
) -> Result<(), FmtError> {
    family(
        enc,
        name,
        help,
        MetricType::Counter,
        series,
        ConstCounter::new,
    )
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels<'_>, i64)],
) -> Result<(), FmtError> {
    family(enc, name, help, MetricType::Gauge, series, ConstGauge::new)
}

impl Telemetry {
    /// SAs (never their keys) and tunnels.
    fn encode_ipsec(&self, e: &mut DescriptorEncoder, ip: &Ipsec) -> Result<(), FmtError> {
        let sas = crate::tunnels::sa_summaries(ip);
        let spis: Vec<String> = sas.iter().map(|a| format!("{:#x}", a.spi)).collect();
        let esn: Vec<&str> = ip
            .sas
            .iter()
            .map(|s| if s.cfg.esn { "true" } else { "false" })
            .collect();
        let labels = |i: usize| -> Labels<'_> {
            vec![
                ("sa", sas[i].name.as_str()),
                ("direction", sas[i].direction),
            ]
        };
        gauge(
            e,
            "appliance_sa_info",
            "One series per SA; the value is always 1. Labels say its SPI, algorithm and ESN (keys are never exported).",
            &(0..sas.len())
                .map(|i| {
                    let mut l = labels(i);
                    l.extend([
                        ("spi", spis[i].as_str()),
                        ("algorithm", sas[i].algorithm),
                        ("esn", esn[i]),
                    ]);
                    (l, 1)
                })
                .collect::<Vec<_>>(),
        )?;
        let per_sa = |f: &dyn Fn(&crate::summary::SaSummary) -> u64| -> Series<'_, u64> {
            (0..sas.len()).map(|i| (labels(i), f(&sas[i]))).collect()
        };
        for (name, help, f) in [
            (
                "appliance_sa_packets",
                "Packets the SA protected (out) or accepted (in: authenticated, in the window, well formed).",
                (|a| a.packets) as fn(&crate::summary::SaSummary) -> u64,
            ),
            (
                "appliance_sa_bytes",
                "Inner IP bytes of those packets.",
                |a| a.bytes,
            ),
            (
                "appliance_sa_replay_drops",
                "Inbound packets dropped as replays (esp_replay).",
                |a| a.replay,
            ),
            (
                "appliance_sa_too_old_drops",
                "Inbound packets dropped as older than the anti-replay window (esp_too_old).",
                |a| a.too_old,
            ),
            (
                "appliance_sa_bad_icv_drops",
                "Inbound packets whose ICV did not verify (esp_bad_icv): wrong key, corruption or forgery.",
                |a| a.bad_icv,
            ),
            (
                "appliance_sa_errors",
                "Other failures on the SA: crypto device errors, bad padding, policy mismatches, sequence exhaustion, expiry.",
                |a| a.errors,
            ),
        ] {
            counter(e, name, help, &per_sa(&f))?;
        }
        gauge(
            e,
            "appliance_sa_sequence_number",
            "Outbound: the highest sequence number reserved by the workers; inbound: the highest authenticated (the anti-replay window's top).",
            &(0..sas.len())
                .map(|i| (labels(i), i64::try_from(sas[i].seq).unwrap_or(i64::MAX)))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            e,
            "appliance_sa_expired",
            "1 once the SA reached a hard lifetime or ran out of sequence numbers (its packets are dropped), else 0.",
            &(0..sas.len())
                .map(|i| {
                    let s = &ip.sas[i];
                    (labels(i), i64::from(s.expired() || s.exhausted()))
                })
                .collect::<Vec<_>>(),
        )?;
        gauge(
            e,
            "appliance_sa_soft_expired",
            "1 once the SA reached a soft lifetime (time to replace it; it keeps working until the hard limit), else 0.",
            &(0..sas.len())
                .map(|i| (labels(i), i64::from(sas[i].soft_expired)))
                .collect::<Vec<_>>(),
        )?;
        let now = crate::run::unix_ms();
        let tl = |i: usize| -> Labels<'_> { vec![("tunnel", ip.tunnels[i].name.as_str())] };
        gauge(
            e,
            "appliance_tunnel_path_mtu",
            "The tunnel's current path MTU toward its remote endpoint (lowered by ICMP, back after 10 minutes).",
            &(0..ip.tunnels.len())
                .map(|i| (tl(i), i64::from(ip.tunnels[i].path_mtu(now))))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            e,
            "appliance_tunnel_next_hop_resolved",
            "1 when the MAC of the tunnel's next hop is known (static or learnt by ARP), else 0: packets are dropped as neighbour_unresolved.",
            &(0..ip.tunnels.len())
                .map(|i| (tl(i), i64::from(ip.tunnels[i].next_hop_mac().is_some())))
                .collect::<Vec<_>>(),
        )?;
        let t = crate::summary::TunnelSummary::of(&self.lcores);
        for (name, help, v) in [
            ("appliance_tunnel_icmp_errors_sent", "ICMP fragmentation-needed / packet-too-big errors sent toward senders of packets too big for a tunnel.", t.icmp_sent),
            ("appliance_tunnel_icmp_errors_rate_limited", "ICMP errors not sent: over the worker's limit (1000 per second, bursts of 50, as Linux's icmp_msgs_per_sec / icmp_msgs_burst).", t.icmp_rate_limited),
            ("appliance_tunnel_echo_replies", "ICMP echo replies for local endpoint addresses.", t.echo_replies),
            ("appliance_tunnel_arp_replies", "ARP replies for local endpoint addresses.", t.arp_replies),
            ("appliance_tunnel_arp_requests", "ARP requests sent for unresolved next hops.", t.arp_requests),
            ("appliance_tunnel_next_hops_learnt", "Next-hop MACs learnt from ARP.", t.arp_learnt),
            ("appliance_tunnel_pmtu_updates", "Path MTUs lowered by ICMP errors about our own ESP packets.", t.pmtu_updates),
            ("appliance_crypto_enqueued_ops", "Operations handed to the crypto device.", t.crypto_enqueued),
            ("appliance_crypto_dequeued_ops", "Operations the crypto device handed back (enqueued - dequeued = in flight).", t.crypto_dequeued),
        ] {
            counter(e, name, help, &[(vec![], v)])?;
        }
        if let Some(n) = &self.crypto_sessions {
            gauge(
                e,
                "appliance_crypto_sessions",
                "Sessions allocated on the crypto device: one per SA, plus those of SAs a reload removed while operations enqueued with them are still in flight.",
                &[(vec![], i64::try_from(n.load(Ordering::Relaxed)).unwrap_or(i64::MAX))],
            )?;
        }
        Ok(())
    }

    fn encode_flowlabels(
        &self,
        e: &mut DescriptorEncoder,
        t: &FlowLabelTable,
    ) -> Result<(), FmtError> {
        let c = pipelines::stats::flowlabel_totals(&self.lcores);
        let gc = t.gc_stats();
        let one = |v: u64| vec![(vec![], v)];
        let gauges = [
            (
                "appliance_flowlabel_table_capacity",
                "Live flows the flow-label table is configured to hold.",
                t.capacity(),
            ),
            (
                "appliance_flowlabel_table_slots",
                "Slots of the flow-label table (capacity plus two-choice headroom).",
                t.slots(),
            ),
            (
                "appliance_flowlabel_table_live",
                "Live flow entries at the last garbage collection.",
                gc.live as usize,
            ),
            (
                "appliance_flowlabel_labels_in_use",
                "Dynamic labels claimed (live, lingering or quarantined) out of 1048575 minus reserved.",
                t.labels_in_use(),
            ),
            (
                "appliance_flowlabel_table_memory_bytes",
                "Memory of the flow-label table and its label bitmaps.",
                t.memory_bytes(),
            ),
        ];
        for (name, help, v) in gauges {
            gauge(e, name, help, &[(vec![], v as i64)])?;
        }
        let fallbacks = [
            (vec![("reason", "table_full")], c.fallback_table_full),
            (
                vec![("reason", "labels_exhausted")],
                c.fallback_labels_exhausted,
            ),
        ];
        let counters: [(&str, &str, Series<'_, u64>); 10] = [
            (
                "appliance_flowlabel_labelled_packets",
                "IPv6 packets whose flow label a port wrote.",
                one(c.labelled),
            ),
            (
                "appliance_flowlabel_hits",
                "Packets whose flow had a live label entry.",
                one(c.hits),
            ),
            (
                "appliance_flowlabel_allocations",
                "New flows given a unique label.",
                one(c.allocations),
            ),
            (
                "appliance_flowlabel_collisions",
                "Candidate labels found taken and retried before a free one.",
                one(c.collisions),
            ),
            (
                "appliance_flowlabel_fallbacks",
                "Flows given a stateless hash label, by reason.",
                fallbacks.to_vec(),
            ),
            (
                "appliance_flowlabel_pinned_packets",
                "Packets given a reserved label by a flowlabel action.",
                one(c.pinned),
            ),
            (
                "appliance_flowlabel_kept_packets",
                "Packets whose non-zero label a fill port kept.",
                one(c.kept),
            ),
            (
                "appliance_flowlabel_shared_unlabelled_packets",
                "IPv6 packets left unlabelled because their bytes are shared with a mirror copy.",
                one(c.shared_unlabelled),
            ),
            (
                "appliance_flowlabel_expirations",
                "Flow entries the garbage collector reclaimed after their linger.",
                one(gc.expired),
            ),
            (
                "appliance_flowlabel_gc_runs",
                "Garbage collections of the flow-label table.",
                one(gc.runs),
            ),
        ];
        for (name, help, series) in &counters {
            counter(e, name, help, series)?;
        }
        Ok(())
    }
}

/// The registry's handle on the telemetry the `/show/` handlers also read.
#[derive(Debug)]
struct Shared(Arc<Telemetry>);

impl prometheus_client::collector::Collector for Shared {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), FmtError> {
        prometheus_client::collector::Collector::encode(&*self.0, enc)
    }
}

impl prometheus_client::collector::Collector for Telemetry {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), FmtError> {
        let e = &mut enc;
        let version = env!("CARGO_PKG_VERSION");
        let dpdk = pmd_glue::dpdk_version();
        gauge(
            e,
            "appliance_build_info",
            "Build information; the value is always 1.",
            &[(vec![("version", version), ("dpdk", dpdk.as_str())], 1)],
        )?;
        gauge(
            e,
            "appliance_uptime_seconds",
            "Seconds since the appliance started.",
            &[(vec![], self.started.elapsed().as_secs() as i64)],
        )?;

        let r = &self.reloads;
        counter(
            e,
            "appliance_config_reloads",
            "Configuration reloads (SIGHUP, POST /reload) by result: ok (a new generation took effect) or rejected (the running one stayed).",
            &[
                (vec![("result", "ok")], r.ok.load(Ordering::Relaxed)),
                (vec![("result", "rejected")], r.rejected.load(Ordering::Relaxed)),
            ],
        )?;
        gauge(
            e,
            "appliance_config_generation",
            "The pipeline generation (epoch) in effect: 1 at start, one more per successful reload.",
            &[(vec![], r.generation.load(Ordering::Relaxed) as i64)],
        )?;
        family(
            e,
            "appliance_config_last_reload_timestamp_seconds",
            "When the configuration in effect was loaded (Unix time): start, then each successful reload.",
            MetricType::Gauge,
            &[(vec![], r.last_ok_ms.load(Ordering::Relaxed))],
            |ms| ConstGauge::new(ms as f64 / 1000.0),
        )?;
        gauge(
            e,
            "appliance_config_last_reload_successful",
            "1 when the last reload attempt took effect (or none was made), 0 when it was rejected.",
            &[(vec![], i64::from(r.last_ok.load(Ordering::Relaxed)))],
        )?;

        let totals = port_totals(&self.lcores, self.port_names.len());
        let per_port =
            |f: &dyn Fn(&pipelines::stats::PortTotals) -> u64| -> Vec<(Vec<(&str, &str)>, u64)> {
                self.port_names
                    .iter()
                    .zip(&totals)
                    .map(|(n, t)| (vec![("port", n.as_str())], f(t)))
                    .collect()
            };
        counter(
            e,
            "appliance_port_rx_packets",
            "Packets received from the port by worker lcores.",
            &per_port(&|t| t.rx_packets),
        )?;
        counter(
            e,
            "appliance_port_rx_bytes",
            "Bytes received from the port by worker lcores (frames without FCS).",
            &per_port(&|t| t.rx_bytes),
        )?;
        counter(
            e,
            "appliance_port_tx_packets",
            "Packets the port's transmit queues accepted.",
            &per_port(&|t| t.tx_packets),
        )?;
        counter(
            e,
            "appliance_port_tx_bytes",
            "Bytes the port's transmit queues accepted.",
            &per_port(&|t| t.tx_bytes),
        )?;
        let mut drops = Vec::new();
        for (n, t) in self.port_names.iter().zip(&totals) {
            for r in DropReason::ALL {
                drops.push((
                    vec![("port", n.as_str()), ("reason", r.label())],
                    t.drops[r.index()],
                ));
            }
        }
        counter(
            e,
            "appliance_port_drops",
            "Packets dropped, by port and reason (see the reason list in the README).",
            &drops,
        )?;

        // Device counters, read from DPDK now.
        let mut dev: [Series<'_, u64>; 8] = Default::default();
        let mut link_up = Vec::new();
        let mut link_speed = Vec::new();
        let mut xstats_owned = Vec::new();
        for (n, r) in self.port_names.iter().zip(&self.readers) {
            let Some(r) = r else { continue };
            if let Ok(s) = r.stats() {
                let vals = [
                    s.ipackets,
                    s.opackets,
                    s.ibytes,
                    s.obytes,
                    s.imissed,
                    s.ierrors,
                    s.oerrors,
                    s.rx_nombuf,
                ];
                for (d, v) in dev.iter_mut().zip(vals) {
                    d.push((vec![("port", n.as_str())], v));
                }
            }
            if let Ok((up, speed)) = r.link() {
                link_up.push((vec![("port", n.as_str())], i64::from(up)));
                link_speed.push((vec![("port", n.as_str())], i64::from(speed)));
            }
            if let Ok(x) = r.xstats() {
                xstats_owned.push((n.as_str(), x));
            }
        }
        let names = [
            (
                "appliance_port_dev_rx_packets",
                "Packets the device received (rte_eth_stats.ipackets).",
            ),
            (
                "appliance_port_dev_tx_packets",
                "Packets the device sent (rte_eth_stats.opackets).",
            ),
            (
                "appliance_port_dev_rx_bytes",
                "Bytes the device received (rte_eth_stats.ibytes).",
            ),
            (
                "appliance_port_dev_tx_bytes",
                "Bytes the device sent (rte_eth_stats.obytes).",
            ),
            (
                "appliance_port_dev_rx_missed",
                "Packets the device dropped because receive queues were full (imissed).",
            ),
            (
                "appliance_port_dev_rx_errors",
                "Erroneous packets the device received (ierrors).",
            ),
            (
                "appliance_port_dev_tx_errors",
                "Packets the device failed to send (oerrors).",
            ),
            (
                "appliance_port_dev_rx_nombuf",
                "Receive mbuf allocation failures (rx_nombuf).",
            ),
        ];
        for ((name, help), series) in names.iter().zip(&dev) {
            counter(e, name, help, series)?;
        }
        gauge(
            e,
            "appliance_port_link_up",
            "1 when the port's link is up.",
            &link_up,
        )?;
        gauge(
            e,
            "appliance_port_admin_up",
            "1 when the port is administratively up (ports[].state: up), 0 when configured down. Tunnels included.",
            &self
                .port_names
                .iter()
                .zip(&self.admin_up)
                .map(|(n, up)| (vec![("port", n.as_str())], i64::from(*up)))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            e,
            "appliance_port_link_speed_mbps",
            "Link speed in Mbit/s as the device reports it.",
            &link_speed,
        )?;
        let xs: Series<'_, u64> = xstats_owned
            .iter()
            .flat_map(|(port, list)| {
                list.iter()
                    .map(move |(name, v)| (vec![("port", *port), ("xstat", name.as_str())], *v))
            })
            .collect();
        counter(
            e,
            "appliance_port_xstats",
            "DPDK extended statistics of the port, by driver-defined name.",
            &xs,
        )?;

        let counted = crate::reload::counted(&self.counted);
        let (filters, actions) = (&*counted.filters, &*counted.actions);
        let ft = filter_totals(&self.lcores, counted.filter_slots);
        let ft = |f: &FilterInfo| ft.get(f.slot).copied().unwrap_or_default();
        let insns: Vec<String> = filters.iter().map(|f| f.insns.to_string()).collect();
        fn labels(f: &FilterInfo) -> Labels<'_> {
            vec![
                ("port", f.port.as_str()),
                ("hook", f.hook),
                ("filter", f.name.as_str()),
            ]
        }
        let per_filter = |v: &dyn Fn(&FilterTotals) -> u64| -> Series<'_, u64> {
            filters.iter().map(|f| (labels(f), v(&ft(f)))).collect()
        };
        gauge(
            e,
            "appliance_filter_info",
            "One series per filter; the value is always 1. Labels say its classifier kind, engine and program length.",
            &filters
                .iter()
                .zip(&insns)
                .map(|(f, n)| {
                    let mut l = labels(f);
                    l.extend([("kind", f.kind), ("engine", f.engine.as_str()), ("insns", n.as_str())]);
                    (l, 1)
                })
                .collect::<Vec<_>>(),
        )?;
        counter(
            e,
            "appliance_filter_matched_packets",
            "Packets the filter matched (classid mode: non-zero result; direct action: a verdict other than unspec).",
            &per_filter(&|t| t.packets),
        )?;
        counter(
            e,
            "appliance_filter_matched_bytes",
            "Bytes of the packets the filter matched.",
            &per_filter(&|t| t.bytes),
        )?;
        family(
            e,
            "appliance_filter_last_use_timestamp_seconds",
            "When the filter last matched (Unix time, millisecond resolution); 0 if never.",
            MetricType::Gauge,
            &per_filter(&|t| t.last_use_ms),
            |ms| ConstGauge::new(ms as f64 / 1000.0),
        )?;

        let at = action_totals(&self.lcores, counted.action_slots);
        let at = |a: &ActionInfo| at.get(a.slot).copied().unwrap_or_default();
        fn alabels(a: &ActionInfo) -> Labels<'_> {
            vec![
                ("port", a.port.as_str()),
                ("hook", a.hook),
                ("filter", a.filter.as_str()),
                ("class", a.class.as_str()),
                ("action", a.index.as_str()),
            ]
        }
        let per_action = |v: &dyn Fn(&ActionTotals) -> u64| -> Series<'_, u64> {
            actions.iter().map(|a| (alabels(a), v(&at(a)))).collect()
        };
        gauge(
            e,
            "appliance_action_info",
            "One series per action; the value is always 1. Labels say its kind and, for mirred, direction, operation and target.",
            &actions
                .iter()
                .map(|a| {
                    let mut l = alabels(a);
                    l.extend([("kind", a.kind), ("detail", a.detail.as_str())]);
                    (l, 1)
                })
                .collect::<Vec<_>>(),
        )?;
        counter(
            e,
            "appliance_action_packets",
            "Times the action ran (tc's per-action packets).",
            &per_action(&|t| t.packets),
        )?;
        counter(
            e,
            "appliance_action_bytes",
            "Bytes of the packets the action ran on.",
            &per_action(&|t| t.bytes),
        )?;
        counter(
            e,
            "appliance_action_overlimits",
            "Mirror/redirect targets that could not take the packet: target down, group without another member, no clone buffer.",
            &per_action(&|t| t.overlimits),
        )?;
        counter(
            e,
            "appliance_action_drops",
            "Packets the action dropped: redirect to a down target or a group without another member, nest limit.",
            &per_action(&|t| t.drops),
        )?;
        family(
            e,
            "appliance_action_last_use_timestamp_seconds",
            "When the action last ran (Unix time, millisecond resolution); 0 if never.",
            MetricType::Gauge,
            &per_action(&|t| t.last_use_ms),
            |ms| ConstGauge::new(ms as f64 / 1000.0),
        )?;

        let lcore_ids: Vec<String> = self.lcores.iter().map(|l| l.lcore.to_string()).collect();
        let per_lcore = |f: &dyn Fn(&LcoreStats) -> u64| -> Series<'_, u64> {
            self.lcores
                .iter()
                .zip(&lcore_ids)
                .map(|(l, id)| (vec![("lcore", id.as_str())], f(l)))
                .collect()
        };
        counter(
            e,
            "appliance_lcore_polls",
            "Poll rounds over the lcore's receive queues.",
            &per_lcore(&|l| l.polls.get()),
        )?;
        counter(
            e,
            "appliance_lcore_busy_polls",
            "Poll rounds that received at least one packet.",
            &per_lcore(&|l| l.busy_polls.get()),
        )?;
        counter(
            e,
            "appliance_lcore_packets",
            "Packets the lcore received and processed.",
            &per_lcore(&|l| l.packets.get()),
        )?;
        counter(
            e,
            "appliance_lcore_mirror_copies",
            "Zero-copy copies the lcore's mirror actions made (received + copies = transmitted + dropped).",
            &per_lcore(&|l| l.mirror_copies.get()),
        )?;
        if let Some(t) = self.flowlabels.get() {
            self.encode_flowlabels(e, t)?;
        }
        if let Some(ip) = &crate::reload::counted(&self.counted).ipsec {
            self.encode_ipsec(e, ip)?;
        }

        let pools: Vec<(String, u32, u32)> = self
            .pools
            .iter()
            .map(|p| (p.name().to_owned(), p.size(), p.available()))
            .collect();
        gauge(
            e,
            "appliance_mempool_size",
            "Mbufs in the pool.",
            &pools
                .iter()
                .map(|(n, s, _)| (vec![("pool", n.as_str())], i64::from(*s)))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            e,
            "appliance_mempool_available",
            "Mbufs free in the pool (including lcore caches).",
            &pools
                .iter()
                .map(|(n, _, a)| (vec![("pool", n.as_str())], i64::from(*a)))
                .collect::<Vec<_>>(),
        )?;
        Ok(())
    }
}

/// The running metrics server.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    /// The bound address (useful when the configured port was 0).
    pub addr: SocketAddr,
}

/// Renders the OpenMetrics exposition for `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// Converts the OpenMetrics text this module produces (counters and gauges only) into the
/// classic Prometheus text format 0.0.4: counter families are named with their `_total`
/// suffix in HELP/TYPE, empty label sets are dropped, and there is no `# EOF`. Served to
/// scrapers that do not ask for OpenMetrics (and what `promtool check metrics` lints).
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending_help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            pending_help = rest.split_once(' ').or(Some((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let full = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some((_, help)) = pending_help.take() {
                out.push_str(&format!("# HELP {full} {help}\n"));
            }
            out.push_str(&format!("# TYPE {full} {kind}\n"));
        } else if line.starts_with("# ") {
            // `# EOF` and `# UNIT` have no classic equivalent.
        } else if let Some((name, value)) = line.split_once("{} ") {
            out.push_str(&format!("{name} {value}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Rows `GET /flowlabels` lists unless `limit` says otherwise.
pub const FLOWLABELS_DEFAULT_LIMIT: usize = 1000;

/// `GET /flowlabels[?limit=N][&format=json]`: the live label table, as text like
/// `/proc/net/ip6_flowlabel` or as JSON.
fn flowlabels_response(
    table: Option<&FlowLabelTable>,
    url: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let Some(t) = table else {
        return tiny_http::Response::from_string(
            "no port labels IPv6 flows (ports[].flowlabel is off everywhere)\n",
        )
        .with_status_code(404);
    };
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let mut limit = FLOWLABELS_DEFAULT_LIMIT;
    let mut json = false;
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("limit", v)) => match v.parse() {
                Ok(n) => limit = n,
                Err(_) => {
                    return tiny_http::Response::from_string(format!(
                        "limit={v:?}: a number of rows\n"
                    ))
                    .with_status_code(400)
                }
            },
            Some(("format", "json")) => json = true,
            Some(("format", "text")) => json = false,
            _ => {
                return tiny_http::Response::from_string(format!(
                    "unknown parameter {kv:?}: limit=N, format=text|json\n"
                ))
                .with_status_code(400)
            }
        }
    }
    let now = crate::run::unix_ms();
    let entries = t.entries(now, limit);
    if json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let flow = e.flow.map(|f| {
                    serde_json::json!({
                        "src": f.src().to_string(),
                        "dst": f.dst().to_string(),
                        "proto": f.proto(),
                        "sport": f.ports().0,
                        "dport": f.ports().1,
                    })
                });
                serde_json::json!({
                    "label": e.label,
                    "share": e.share,
                    "owner_lcore": e.owner,
                    "users": e.users,
                    "linger_ms": e.linger_ms,
                    "expires_ms": e.expires_ms,
                    "flow": flow,
                })
            })
            .collect();
        let body = serde_json::json!({
            "capacity": t.capacity(),
            "slots": t.slots(),
            "live": t.live(),
            "limit": limit,
            "entries": rows,
        });
        tiny_http::Response::from_string(body.to_string()).with_header(
            tiny_http::Header::from_bytes("Content-Type", "application/json")
                .expect("static header"),
        )
    } else {
        tiny_http::Response::from_string(pipelines::flowlabel::render_table(&entries))
    }
}

/// Binds the metrics socket (done before DPDK starts, so a taken address fails early). An
/// address other than loopback is said in the log: it was asked for explicitly.
pub fn bind(listen: SocketAddr) -> Result<tiny_http::Server, String> {
    if let Some(note) = exposure_note(listen) {
        eprintln!("appliance: {note}");
    }
    tiny_http::Server::http(listen)
        .map_err(|e| format!("`metrics.listen`: cannot listen on {listen}: {e}"))
}

/// The log line for an admin address reachable from other hosts; `None` for loopback.
pub fn exposure_note(listen: SocketAddr) -> Option<String> {
    (!listen.ip().is_loopback()).then(|| {
        format!(
            "metrics.listen is {listen}, not loopback: /metrics, /show/* and /flowlabels (read-only, no keys) and POST /reload (unless metrics.reload: false) are reachable from the network; restrict it with a firewall or network policy"
        )
    })
}

/// How long `POST /reload` waits for the control loop's answer.
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves `/metrics` from `server` in a control thread (not an EAL lcore). `reload`: where
/// `POST /reload` hands requests to the control loop (`None`: `metrics.reload: false`, 403).
pub fn serve(
    server: tiny_http::Server,
    telemetry: Telemetry,
    reload: Option<mpsc::Sender<crate::reload::ReloadRequest>>,
) -> MetricsServer {
    let addr = server
        .server_addr()
        .to_ip()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let server = Arc::new(server);
    let flowlabels = telemetry.flowlabels.clone();
    let telemetry = Arc::new(telemetry);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Shared(telemetry.clone())));
    let s = server.clone();
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let header =
                |v: &str| tiny_http::Header::from_bytes("Content-Type", v).expect("static header");
            let openmetrics = header("application/openmetrics-text; version=1.0.0; charset=utf-8");
            let classic = header("text/plain; version=0.0.4; charset=utf-8");
            let json = header("application/json");
            let text = header("text/plain; charset=utf-8");
            for req in s.incoming_requests() {
                let wants_openmetrics = req.headers().iter().any(|h| {
                    h.field.equiv("Accept")
                        && h.value.as_str().contains("application/openmetrics-text")
                });
                let resp = match (req.method(), req.url()) {
                    (tiny_http::Method::Get, "/metrics") if wants_openmetrics => {
                        tiny_http::Response::from_string(render(&registry))
                            .with_header(openmetrics.clone())
                    }
                    (tiny_http::Method::Get, "/metrics") => {
                        tiny_http::Response::from_string(to_prometheus_text(&render(&registry)))
                            .with_header(classic.clone())
                    }
                    (tiny_http::Method::Get, "/") => tiny_http::Response::from_string(format!(
                        "appliance: GET /metrics, GET /flowlabels[?limit=N][&format=json], GET /show/{{{}}} (JSON){}\n",
                        crate::show::SHOWABLE.join(","),
                        if reload.is_some() { ", POST /reload" } else { "" }
                    )),
                    (tiny_http::Method::Post, "/reload") => {
                        let (status, body) = match &reload {
                            None => (
                                403,
                                "POST /reload is disabled (metrics.reload: false); send SIGHUP to the process instead".to_owned(),
                            ),
                            Some(tx) => {
                                let (reply_tx, reply_rx) = mpsc::channel();
                                match tx
                                    .send(crate::reload::ReloadRequest(reply_tx))
                                    .ok()
                                    .and_then(|()| reply_rx.recv_timeout(RELOAD_TIMEOUT).ok())
                                {
                                    Some(Ok(m)) => (200, m),
                                    Some(Err(m)) => (400, m),
                                    None => (503, "the control loop did not answer (shutting down?)".to_owned()),
                                }
                            }
                        };
                        tiny_http::Response::from_string(format!("{body}\n"))
                            .with_status_code(status)
                            .with_header(text.clone())
                    }
                    (tiny_http::Method::Get, url)
                        if url == "/flowlabels" || url.starts_with("/flowlabels?") =>
                    {
                        flowlabels_response(flowlabels.get().map(|t| &**t), url)
                    }
                    (tiny_http::Method::Get, url) if url.starts_with("/show/flowlabels") => {
                        // JSON unless the query says otherwise; limit as /flowlabels.
                        let q = url.split_once('?').map_or("", |(_, q)| q);
                        let sep = if q.is_empty() { "" } else { "&" };
                        flowlabels_response(
                            flowlabels.get().map(|t| &**t),
                            &format!("/flowlabels?format=json{sep}{q}"),
                        )
                    }
                    (tiny_http::Method::Get, url) if url.starts_with("/show/") => {
                        let what = url["/show/".len()..].split('?').next().unwrap_or("");
                        match crate::show::show(&telemetry, what) {
                            Some(v) => tiny_http::Response::from_string(v.to_string())
                                .with_header(json.clone()),
                            None => tiny_http::Response::from_string(format!(
                                "unknown /show/{what}: one of {}\n",
                                crate::show::SHOWABLE.join(", ")
                            ))
                            .with_status_code(404),
                        }
                    }
                    _ => tiny_http::Response::from_string("not found\n").with_status_code(404),
                };
                let _ = req.respond(resp);
            }
        })
        .ok();
    MetricsServer {
        server,
        thread,
        addr,
    }
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MetricsServer {
    /// Stops serving and joins the thread (dropping its DPDK stats readers).
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{exposure_note, to_prometheus_text};

    #[test]
    fn only_non_loopback_admin_addresses_are_noted() {
        for a in ["127.0.0.1:9091", "[::1]:9091", "127.0.0.2:1"] {
            assert_eq!(exposure_note(a.parse().unwrap()), None, "{a}");
        }
        for a in ["0.0.0.0:9091", "[::]:9091", "10.0.0.5:9091"] {
            let n = exposure_note(a.parse().unwrap()).unwrap();
            assert!(n.contains(a) && n.contains("not loopback"), "{n}");
        }
    }

    #[test]
    fn openmetrics_counters_become_classic_total_families() {
        let om = "# HELP a_packets Packets seen.\n# TYPE a_packets counter\na_packets_total{port=\"x\"} 5\n\
                  # HELP up Seconds up.\n# TYPE up gauge\nup{} 3\n# EOF\n";
        let classic = to_prometheus_text(om);
        assert_eq!(
            classic,
            "# HELP a_packets_total Packets seen.\n# TYPE a_packets_total counter\na_packets_total{port=\"x\"} 5\n\
             # HELP up Seconds up.\n# TYPE up gauge\nup 3\n"
        );
    }
}
