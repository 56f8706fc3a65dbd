//! Hitless configuration reload (`SIGHUP`, `POST /reload`, or a change of the file's content
//! when `run.watch_config_s` is set): the control thread re-reads the configuration file,
//! checks it exactly as at start, refuses changes to what was set up at start (EAL, ports and
//! devices, queues, pools, the crypto device, which ports are tunnels, workers, the flow-label
//! table's capacity), builds a new pipeline generation that shares the running generation's
//! stateful parts (the flow-label table; the SAs that stay the same SA, with their sequence
//! numbers, replay windows and counters; what tunnels learnt) and publishes it: each worker
//! switches at its next burst boundary. SAs and tunnels change live: new SAs get their device
//! sessions before the generation is published (see `crate::tunnels::SaPlan`). Flow-label
//! reservations are claimed in the table before the generation that pins them is published,
//! and released once no worker runs a generation that may pin them (see
//! `pipelines::flowlabel`).
//!
//! Filter and action counters live in fixed per-lcore arrays sized at start; [`CounterSlots`]
//! gives every filter identity (port, hook, name) and every action list (filter, class, kinds and
//! targets of its actions) a slot that stays its own for the life of the process, so counters of
//! what a reload keeps carry over and a removed filter's series disappear.
use crate::config::{Config, ConfigError, PortConfig};
use crate::metrics::{ActionInfo, FilterInfo};
use pipelines::pipeline::Generation;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, RwLock};

/// Command-line settings that override the file, applied again to every reloaded file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--metrics-listen` (`Some(None)`: none).
    pub metrics_listen: Option<Option<String>>,
    /// `--exit-when-idle-ms`.
    pub exit_when_idle_ms: Option<u64>,
    /// `--duration`.
    pub duration_s: Option<f64>,
    /// `--watch-config`.
    pub watch_config_s: Option<f64>,
}

impl Overrides {
    /// Applies the overrides to `cfg`.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(l) = &self.metrics_listen {
            cfg.metrics.listen = l.clone();
        }
        if self.exit_when_idle_ms.is_some() {
            cfg.run.exit_when_idle_ms = self.exit_when_idle_ms;
        }
        if self.duration_s.is_some() {
            cfg.run.duration_s = self.duration_s;
        }
        if self.watch_config_s.is_some() {
            cfg.run.watch_config_s = self.watch_config_s;
        }
    }
}

/// The hash of a configuration file's content the watch compares (SipHash with fixed keys:
/// the same bytes give the same hash for the life of the process).
pub fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Where a reload reads the configuration from.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// `--config FILE`; `None`: the embedded default (which has no file to re-read).
    pub path: Option<PathBuf>,
    /// Command-line overrides.
    pub overrides: Overrides,
    /// [`content_hash`] of the content the running configuration was read from at start.
    pub loaded_hash: Option<u64>,
}

impl Source {
    /// The file's bytes, as a reload reads them (and the watch hashes them).
    pub fn read(&self) -> Result<Vec<u8>, String> {
        let Some(path) = &self.path else {
            return Err(
                "no configuration file to re-read: the appliance runs its embedded default \
                 configuration; start it with `appliance run --config FILE` to reload"
                    .to_owned(),
            );
        };
        crate::config::read(path).map_err(|e| format!("{}: config error: {e}", path.display()))
    }

    /// Parses `bytes` (read from the file), applies the overrides and validates, with the
    /// errors `appliance run` prints at start.
    pub fn parse(&self, bytes: &[u8]) -> Result<Config, String> {
        let Some(path) = &self.path else {
            return Err("no configuration file".to_owned());
        };
        let mut cfg = crate::config::load_text(path, bytes)
            .map_err(|e| format!("{}: config error: {e}", path.display()))?;
        self.overrides.apply(&mut cfg);
        cfg.validate().map_err(|e| {
            format!(
                "{}: config error (after command-line overrides): {e}",
                path.display()
            )
        })?;
        Ok(cfg)
    }

    /// The file name for messages.
    pub fn describe(&self) -> String {
        self.path.as_ref().map_or_else(
            || "embedded default".to_owned(),
            |p| p.display().to_string(),
        )
    }
}

/// What a reload answered: the new epoch, or why the running generation stays.
pub type ReloadReply = Result<String, String>;

/// A `POST /reload` handed from the admin thread to the control loop, with where to answer.
#[derive(Debug)]
pub struct ReloadRequest(pub mpsc::Sender<ReloadReply>);

/// Reload counters for `/metrics`: written by the control thread only, read at scrape time.
#[derive(Debug)]
pub struct ReloadStats {
    /// Reloads that took effect.
    pub ok: AtomicU64,
    /// Reloads refused (the running generation stayed).
    pub rejected: AtomicU64,
    /// The generation (epoch) in effect: 1 at start, +1 per successful reload.
    pub generation: AtomicU64,
    /// When the running configuration was loaded (Unix ms): start, then each successful reload.
    pub last_ok_ms: AtomicU64,
    /// Whether the last reload attempt succeeded (true until one fails).
    pub last_ok: AtomicBool,
}

impl ReloadStats {
    /// Counters at start: generation 1, loaded now.
    pub fn new() -> ReloadStats {
        ReloadStats {
            ok: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            generation: AtomicU64::new(1),
            last_ok_ms: AtomicU64::new(crate::run::unix_ms()),
            last_ok: AtomicBool::new(true),
        }
    }

    fn record(&self, result: &ReloadReply, epoch: u64) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.generation.store(epoch, Ordering::Relaxed);
                self.last_ok_ms
                    .store(crate::run::unix_ms(), Ordering::Relaxed);
                self.last_ok.store(true, Ordering::Relaxed);
            }
            Err(_) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                self.last_ok.store(false, Ordering::Relaxed);
            }
        }
    }
}

impl Default for ReloadStats {
    fn default() -> Self {
        ReloadStats::new()
    }
}

/// The filters and actions of the running generation with their counter slots, as `/metrics`,
/// `/show` and the summary list them.
#[derive(Debug, Clone)]
pub struct Counted {
    /// Every filter of the running generation (in pipeline order), with its slot.
    pub filters: Arc<Vec<FilterInfo>>,
    /// Every action of the running generation (in pipeline order), with its slot.
    pub actions: Arc<Vec<ActionInfo>>,
    /// Size of the per-lcore filter counter arrays.
    pub filter_slots: usize,
    /// Size of the per-lcore action counter arrays.
    pub action_slots: usize,
    /// The running generation's SAs and tunnels (with their live state and counters).
    pub ipsec: Option<Arc<pipelines::ipsec::Ipsec>>,
}

/// The running [`Counted`], swapped by the control thread at each reload.
pub type SharedCounted = Arc<RwLock<Counted>>;

/// Reads the running [`Counted`] (a poisoned lock still holds a consistent value: it is only
/// ever replaced whole).
pub fn counted(c: &SharedCounted) -> Counted {
    match c.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Key of one action list: port, hook, filter, class, and each action's kind and detail.
type ListKey = (
    String,
    &'static str,
    String,
    String,
    Vec<(&'static str, String)>,
);

/// Counter slots by identity, for the life of the process.
#[derive(Debug, Clone)]
pub struct CounterSlots {
    filters: HashMap<(String, &'static str, String), u32>,
    lists: HashMap<ListKey, u32>,
    next_filter: u32,
    next_action: u32,
    filter_cap: u32,
    action_cap: u32,
}

impl CounterSlots {
    /// Slots for the first generation: room for four times its filters and actions (at least
    /// 256 filters and 1024 actions) over the reloads to come.
    pub fn for_start(gen: &Generation) -> CounterSlots {
        let cap = |n: usize, min: usize| (n.saturating_mul(4)).max(min).min(1 << 20) as u32;
        CounterSlots {
            filters: HashMap::new(),
            lists: HashMap::new(),
            next_filter: 0,
            next_action: 0,
            filter_cap: cap(gen.filter_count(), 256),
            action_cap: cap(gen.action_count(), 1024),
        }
    }

    /// Gives every filter and action of `gen` its slot (a new identity takes the next free one)
    /// and describes them. At start this numbers as [`Generation::assign_filter_ids`] does.
    /// Fails, leaving `self` as it was, when the slots sized at start run out.
    pub fn number(&mut self, gen: &mut Generation) -> Result<Counted, String> {
        let mut next = self.clone();
        let filters = FilterInfo::of(gen);
        let actions = ActionInfo::of(gen);
        let mut filter_out = Vec::with_capacity(filters.len());
        let mut action_out = Vec::with_capacity(actions.len());
        let (mut fi, mut ai) = (0usize, 0usize);
        for p in &mut gen.ports {
            let port = p.name.clone();
            for (hook, list) in [("ingress", &mut p.ingress), ("egress", &mut p.egress)] {
                for f in list.iter_mut() {
                    let key = (port.clone(), hook, f.name.clone());
                    let id = match next.filters.get(&key) {
                        Some(&id) => id,
                        None => {
                            if next.next_filter >= next.filter_cap {
                                return Err(format!(
                                    "filter counters: all {} slots sized at start are taken by \
                                     the filters this process has run; restart required",
                                    next.filter_cap
                                ));
                            }
                            next.next_filter += 1;
                            next.filters.insert(key, next.next_filter - 1);
                            next.next_filter - 1
                        }
                    };
                    f.id = id;
                    let mut info = filters[fi].clone();
                    fi += 1;
                    info.slot = id as usize;
                    filter_out.push(info);
                    let mut bases = Vec::new();
                    for (class, acts, _) in f.action_lists() {
                        let infos = &actions[ai..ai + acts.len()];
                        ai += acts.len();
                        let key: ListKey = (
                            port.clone(),
                            hook,
                            f.name.clone(),
                            class.map_or_else(String::new, |c| c.to_string()),
                            infos.iter().map(|a| (a.kind, a.detail.clone())).collect(),
                        );
                        let base = match next.lists.get(&key) {
                            Some(&b) => b,
                            None => {
                                let n = acts.len() as u32;
                                if next.action_cap - next.next_action < n {
                                    return Err(format!(
                                        "action counters: all {} slots sized at start are taken \
                                         by the actions this process has run; restart required",
                                        next.action_cap
                                    ));
                                }
                                next.next_action += n;
                                next.lists.insert(key, next.next_action - n);
                                next.next_action - n
                            }
                        };
                        for (i, a) in infos.iter().enumerate() {
                            let mut a = a.clone();
                            a.slot = base as usize + i;
                            action_out.push(a);
                        }
                        bases.push(base);
                    }
                    f.action_base = bases[0];
                    for (c, b) in f.classes.iter_mut().zip(&bases[1..]) {
                        c.base = *b;
                    }
                }
            }
        }
        *self = next;
        Ok(Counted {
            filters: Arc::new(filter_out),
            actions: Arc::new(action_out),
            filter_slots: self.filter_cap as usize,
            action_slots: self.action_cap as usize,
            ipsec: gen.ipsec.clone(),
        })
    }
}

/// Refuses `new` when it changes what was set up at start; `Ok` when only live parts differ
/// (ports' `validate` and `flowlabel` modes, `ingress`/`egress` filters, `forwarding`,
/// `groups`, `flowlabels` but its capacity (see [`check_flowlabel_capacity`]),
/// `run.watch_config_s`, `sas`, `sa_keys_file`, and every field of a tunnel port's `tunnel`).
pub fn check_restart_only(old: &Config, new: &Config) -> Result<(), ConfigError> {
    let restart = |path: &str, what: &str| {
        ConfigError::at(
            path,
            format!("{what} cannot change while the appliance runs: restart required"),
        )
    };
    if old.eal != new.eal {
        return Err(restart(
            "eal",
            "the EAL (lcores, hence the number of workers, memory, devices, arguments)",
        ));
    }
    if old.mempool != new.mempool {
        return Err(restart("mempool", "the packet pool"));
    }
    if old.ports.len() != new.ports.len()
        || old
            .ports
            .iter()
            .zip(&new.ports)
            .any(|(a, b)| a.name != b.name)
    {
        return Err(restart(
            "ports",
            &format!(
                "the set of ports and their order ({} -> {})",
                names(&old.ports),
                names(&new.ports)
            ),
        ));
    }
    for (i, (a, b)) in old.ports.iter().zip(&new.ports).enumerate() {
        let fields: [(&str, bool); 9] = [
            ("device", a.device == b.device),
            // A tunnel's own fields change live; whether the port is a tunnel does not.
            ("tunnel", a.tunnel.is_some() == b.tunnel.is_some()),
            ("args", a.args == b.args),
            ("rx_queues", a.rx_queues == b.rx_queues),
            ("rx_desc", a.rx_desc == b.rx_desc),
            ("tx_desc", a.tx_desc == b.tx_desc),
            ("promiscuous", a.promiscuous == b.promiscuous),
            ("mtu", a.mtu == b.mtu),
            ("state", a.state == b.state),
        ];
        if let Some((f, _)) = fields.iter().find(|(_, same)| !same) {
            let what = if *f == "tunnel" {
                format!("whether port {:?} is a tunnel", a.name)
            } else {
                format!("port {:?}'s {f}", a.name)
            };
            return Err(restart(&format!("ports[{i}].{f}"), &what));
        }
    }
    // Field by field (the patterns name every field: a new one must be sorted into live or
    // restart-only here).
    let crate::config::WorkersConfig { tx_drain_us } = &new.workers;
    if old.workers.tx_drain_us != *tx_drain_us {
        return Err(restart(
            "workers.tx_drain_us",
            "the workers' transmit drain period",
        ));
    }
    let crate::config::MetricsConfig { listen, reload } = &new.metrics;
    if old.metrics.listen != *listen {
        return Err(restart("metrics.listen", "the admin address"));
    }
    if old.metrics.reload != *reload {
        return Err(restart("metrics.reload", "whether POST /reload is served"));
    }
    let crate::config::RunConfig {
        exit_when_idle_ms,
        duration_s,
        watch_config_s: _, // live: the control loop reads the running configuration's
    } = &new.run;
    if old.run.duration_s != *duration_s {
        return Err(restart("run.duration_s", "the run's duration"));
    }
    if old.run.exit_when_idle_ms != *exit_when_idle_ms {
        return Err(restart("run.exit_when_idle_ms", "the idle exit"));
    }
    // Live (see `check_flowlabel_capacity` for `capacity`): reservations are swapped with the
    // generation, lingers and the collector period apply from the next collection.
    let crate::config::FlowLabelsConfig {
        capacity: _,
        linger_s: _,
        max_linger_s: _,
        gc_interval_ms: _,
        reserved: _,
    } = &new.flowlabels;
    if old.crypto != new.crypto {
        return Err(restart("crypto", "the crypto device"));
    }
    if !old.has_ipsec() && new.has_ipsec() {
        return Err(ConfigError::at(
            "sas",
            "no crypto device was opened at start (the configuration had no tunnel and no SA): \
             restart required",
        ));
    }
    Ok(())
}

/// Refuses a capacity other than the running flow-label table's (`table_capacity`: `None`
/// while no table exists) when `new` labels flows: the table's buckets are allocated once, and
/// live flows cannot move to a table of another size keeping their labels and hits lock-free.
/// Every other `flowlabels` field, and whether ports label, changes live.
pub fn check_flowlabel_capacity(
    table_capacity: Option<usize>,
    new: &Config,
) -> Result<(), ConfigError> {
    match table_capacity {
        Some(c) if new.labels_flows() && new.flowlabels.capacity != c => Err(ConfigError::at(
            "flowlabels.capacity",
            format!(
                "the flow-label table's capacity ({c} -> {}) cannot change while the appliance \
                 runs: restart required (the table is allocated at start; its live flows and \
                 their labels cannot move to a table of another size)",
                new.flowlabels.capacity
            ),
        )),
        _ => Ok(()),
    }
}

/// The configuration error for a reservation the flow-label table refused, at the first
/// `flowlabels.reserved[i].label` that reserves the label.
pub fn reserve_error(new: &Config, e: &pipelines::flowlabel::ReserveError) -> ConfigError {
    let at = new
        .flowlabels
        .reserved
        .iter()
        .position(|r| r.label == e.label)
        .map_or_else(
            || "flowlabels.reserved".to_owned(),
            |i| format!("flowlabels.reserved[{i}].label"),
        );
    ConfigError::at(at, e.to_string())
}

/// The running flow-label table, once one exists (at start when a port labels, else at the
/// first reload that makes one label): read by `/metrics`, `/flowlabels`, the collector and
/// the summary.
pub type SharedFlowLabels = Arc<std::sync::OnceLock<Arc<pipelines::flowlabel::FlowLabelTable>>>;

fn names(ports: &[PortConfig]) -> String {
    ports
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Records `result` in `stats` (epoch: the generation now in effect) and logs it.
pub fn finish(stats: &ReloadStats, how: &str, result: &ReloadReply, epoch: u64) {
    stats.record(result, epoch);
    match result {
        Ok(m) => eprintln!("appliance: reload ({how}): {m}"),
        Err(m) => {
            eprintln!("appliance: reload ({how}) rejected, generation {epoch} keeps running: {m}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "eal: { lcores: \"0-1\", no_huge: true, memory_mb: 256, no_pci: true }
ports:
  - name: a
    device: net_ring0
    ingress:
      - { name: tcp, bpf: { filter: tcp }, actions: [pass] }
      - { name: udp, bpf: { filter: udp } }
  - name: b
    device: net_ring1
forwarding:
  - { from: a, to: b }
";

    fn cfg(text: &str) -> Config {
        crate::config::parse(text).unwrap()
    }

    fn restart_error(new: &str) -> String {
        check_restart_only(&cfg(BASE), &cfg(new))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_embedded_default_has_no_file_to_reload() {
        let e = Source::default().read().unwrap_err();
        assert!(
            e.contains("embedded default") && e.contains("--config FILE"),
            "{e}"
        );
    }

    #[test]
    fn filters_forwarding_and_validation_change_live() {
        let new = BASE
            .replace("bpf: { filter: udp }", "bpf: { filter: icmp }")
            .replace("{ from: a, to: b }", "{ from: a, action: drop }")
            .replace(
                "    device: net_ring1\n",
                "    device: net_ring1\n    validate: l2\n",
            );
        assert_ne!(cfg(BASE), cfg(&new));
        check_restart_only(&cfg(BASE), &cfg(&new)).unwrap();
    }

    #[test]
    fn what_was_set_up_at_start_needs_a_restart() {
        for (new, path, what) in [
            (BASE.replace("0-1", "0-2"), "`eal`", "the EAL"),
            (
                BASE.replace("device: net_ring1", "device: net_ring2"),
                "`ports[1].device`",
                "port \"b\"'s device",
            ),
            (
                BASE.replace(
                    "    device: net_ring1\n",
                    "    device: net_ring1\n    rx_queues: 2\n",
                ),
                "`ports[1].rx_queues`",
                "rx_queues",
            ),
            (
                BASE.replace("  - name: b\n    device: net_ring1\n", "")
                    .replace("forwarding:\n  - { from: a, to: b }\n", ""),
                "`ports`",
                "the set of ports and their order (a, b -> a)",
            ),
            (
                format!("{BASE}mempool: {{ mbufs: 32767 }}\n"),
                "`mempool`",
                "pool",
            ),
            (
                format!("{BASE}workers: {{ tx_drain_us: 50 }}\n"),
                "`workers.tx_drain_us`",
                "drain",
            ),
            (
                format!("{BASE}metrics: {{ reload: false }}\n"),
                "`metrics.reload`",
                "POST /reload",
            ),
            (
                format!("{BASE}metrics: {{ listen: \"127.0.0.1:9\" }}\n"),
                "`metrics.listen`",
                "admin address",
            ),
            (
                format!("{BASE}run: {{ duration_s: 5 }}\n"),
                "`run.duration_s`",
                "duration",
            ),
            (
                format!("{BASE}run: {{ exit_when_idle_ms: 5 }}\n"),
                "`run.exit_when_idle_ms`",
                "idle",
            ),
        ] {
            let e = restart_error(&new);
            assert!(e.starts_with(path), "{e}");
            assert!(e.contains(what), "{e}");
            assert!(
                e.ends_with("cannot change while the appliance runs: restart required"),
                "{e}"
            );
        }
    }

    /// BASE with port b labelling flows and `flowlabels` as given.
    fn labelling(flowlabels: &str) -> String {
        BASE.replace(
            "    device: net_ring1\n",
            "    device: net_ring1\n    flowlabel: fill\n",
        ) + flowlabels
    }

    #[test]
    fn flow_label_settings_change_live_but_the_capacity() {
        let old = cfg(&labelling("flowlabels: { capacity: 1000 }\n"));
        // Reservations (with the actions that pin them), lingers, the collector period, the
        // ports' modes, and whether any port labels: live.
        for new in [
            labelling(
                "flowlabels: { capacity: 1000, linger_s: 30, max_linger_s: 60, gc_interval_ms: 200, reserved: [{ label: 0x5353, share: shared }] }\n",
            )
            .replace("actions: [pass]", "actions: [{ flowlabel: 0x5353 }, pass]"),
            labelling("flowlabels: { capacity: 1000 }\n")
                .replace("flowlabel: fill", "flowlabel: override"),
            BASE.to_owned(),
        ] {
            let new = cfg(&new);
            check_restart_only(&old, &new).unwrap();
            check_flowlabel_capacity(Some(1000), &new).unwrap();
        }
        // Another capacity while a table runs and the new configuration labels: refused,
        // naming the field.
        let e = check_flowlabel_capacity(
            Some(1000),
            &cfg(&labelling("flowlabels: { capacity: 2000 }\n")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("`flowlabels.capacity`: the flow-label table's capacity (1000 -> 2000) cannot change while the appliance runs: restart required"),
            "{e}"
        );
        // Not when nothing labels (the capacity is unused), nor before a table exists.
        check_flowlabel_capacity(
            Some(1000),
            &cfg(&format!("{BASE}flowlabels: {{ capacity: 2000 }}\n")),
        )
        .unwrap();
        check_flowlabel_capacity(None, &cfg(&labelling("flowlabels: { capacity: 2000 }\n")))
            .unwrap();
    }

    #[test]
    fn a_refused_reservation_names_its_entry() {
        let new = cfg(&labelling(
            "flowlabels: { reserved: [{ label: 0x10 }, { label: 0x5353 }] }\n",
        ));
        let e = pipelines::flowlabel::ReserveError {
            label: 0x5353,
            holder: None,
        };
        let msg = reserve_error(&new, &e).to_string();
        assert!(
            msg.starts_with("`flowlabels.reserved[1].label`: 0x05353 is being given to a new flow"),
            "{msg}"
        );
    }

    #[test]
    fn the_watch_period_changes_live_and_is_checked() {
        let old = cfg(BASE);
        check_restart_only(
            &old,
            &cfg(&format!("{BASE}run: {{ watch_config_s: 2.5 }}\n")),
        )
        .unwrap();
        for bad in ["0", "0.05", "3601", ".nan", "-1"] {
            let e = crate::config::parse(&format!("{BASE}run: {{ watch_config_s: {bad} }}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("`run.watch_config_s`:") && e.contains("0.1..=3600"),
                "{bad}: {e}"
            );
        }
        let mut c = cfg(BASE);
        Overrides {
            watch_config_s: Some(7.0),
            ..Default::default()
        }
        .apply(&mut c);
        assert_eq!(c.run.watch_config_s, Some(7.0));
    }

    #[test]
    fn content_hashes_tell_changed_bytes() {
        assert_eq!(content_hash(BASE.as_bytes()), content_hash(BASE.as_bytes()));
        assert_ne!(
            content_hash(BASE.as_bytes()),
            content_hash(BASE.replace("0-1", "0-2").as_bytes())
        );
    }

    const TUNNEL: &str = "eal: { lcores: \"0-1\", no_huge: true, memory_mb: 256, no_pci: true }
ports:
  - { name: wan, device: net_ring0 }
  - name: vti0
    tunnel: { local: 192.0.2.1, remote: 192.0.2.2, ikey: 7, okey: 9, underlay: wan }
sas:
  - { name: out, spi: 0x1000, direction: out, src: 192.0.2.1, dst: 192.0.2.2, mark: 9, algorithm: aes-gcm-128, key: \"000102030405060708090a0b0c0d0e0f10111213\" }
";

    #[test]
    fn sas_keys_and_tunnel_fields_change_live() {
        let base = cfg(TUNNEL);
        for new in [
            TUNNEL.replace("spi: 0x1000", "spi: 0x1001"),
            TUNNEL.replace("0001020304", "ff01020304"),
            TUNNEL
                .replace(
                    "remote: 192.0.2.2, ikey: 7, okey: 9",
                    "remote: 192.0.2.3, ikey: 1, okey: 2",
                )
                .replace("dst: 192.0.2.2, mark: 9", "dst: 192.0.2.3, mark: 2"),
            TUNNEL.replace(
                "underlay: wan }",
                "underlay: wan, mtu: 1400, ttl: 9, df: set }",
            ),
            TUNNEL[..TUNNEL.find("sas:").unwrap()].to_owned(),
        ] {
            check_restart_only(&base, &cfg(&new)).unwrap();
        }
    }

    #[test]
    fn the_crypto_device_and_the_tunnel_ports_need_a_restart() {
        let base = cfg(TUNNEL);
        let e = check_restart_only(
            &base,
            &cfg(&TUNNEL.replace("sas:", "crypto: { device: crypto_openssl0 }\nsas:")),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "`crypto`: the crypto device cannot change while the appliance runs: restart required"
        );
        // A port that becomes a tunnel (or stops being one) changes its device first.
        let mut device = base.clone();
        device.ports[1].tunnel = None;
        device.ports[1].device = "net_ring1".into();
        let e = check_restart_only(&base, &device).unwrap_err().to_string();
        assert!(e.starts_with("`ports[1].device`"), "{e}");
        let mut tunnelless = base.clone();
        tunnelless.ports[1].tunnel = None;
        let e = check_restart_only(&base, &tunnelless)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "`ports[1].tunnel`: whether port \"vti0\" is a tunnel cannot change while the appliance runs: restart required"
        );
        // Without any tunnel or SA at start there is no crypto device for new SAs.
        let plain = cfg(BASE);
        let with_sa = format!(
            "{BASE}sas:\n  - {{ name: out, spi: 0x1000, direction: out, src: 192.0.2.1, dst: 192.0.2.2, algorithm: aes-gcm-128, key: \"000102030405060708090a0b0c0d0e0f10111213\" }}\n"
        );
        let e = check_restart_only(&plain, &cfg(&with_sa))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "`sas`: no crypto device was opened at start (the configuration had no tunnel and no SA): restart required"
        );
    }

    fn numbered(slots: &mut CounterSlots, text: &str) -> (Generation, Counted) {
        let mut gen = crate::run::build_generation(&cfg(text)).unwrap();
        let c = slots.number(&mut gen).unwrap();
        (gen, c)
    }

    #[test]
    fn counter_slots_follow_filter_identity_across_reloads() {
        let start = crate::run::build_generation(&cfg(BASE)).unwrap();
        let mut slots = CounterSlots::for_start(&start);
        let (gen, c) = numbered(&mut slots, BASE);
        // At start: numbered as assign_filter_ids does.
        let mut positional = crate::run::build_generation(&cfg(BASE)).unwrap();
        positional.assign_filter_ids();
        let ids = |g: &Generation| {
            g.filters()
                .map(|(_, _, f)| (f.id, f.action_base))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&gen), ids(&positional));
        assert_eq!(c.filters.iter().map(|f| f.slot).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(c.actions.iter().map(|a| a.slot).collect::<Vec<_>>(), [0]);
        assert_eq!((c.filter_slots, c.action_slots), (256, 1024));

        // `udp` goes, `icmp` comes (before `tcp`), `tcp`'s actions change.
        let next = BASE
            .replace("      - { name: udp, bpf: { filter: udp } }\n", "")
            .replace(
                "      - { name: tcp,",
                "      - { name: icmp, bpf: { filter: icmp } }\n      - { name: tcp,",
            )
            .replace("actions: [pass]", "actions: [drop]");
        let (_, c) = numbered(&mut slots, &next);
        let f: Vec<_> = c
            .filters
            .iter()
            .map(|f| (f.name.as_str(), f.slot))
            .collect();
        assert_eq!(f, [("icmp", 2), ("tcp", 0)]);
        assert_eq!(c.actions.iter().map(|a| a.slot).collect::<Vec<_>>(), [1]);

        // Back to the first configuration: every identity has its old slots again.
        let (gen2, c) = numbered(&mut slots, BASE);
        assert_eq!(ids(&gen2), ids(&positional));
        assert_eq!(c.filters.iter().map(|f| f.slot).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn running_out_of_counter_slots_is_refused_and_changes_nothing() {
        let start = crate::run::build_generation(&cfg(BASE)).unwrap();
        let mut slots = CounterSlots::for_start(&start);
        slots.filter_cap = 2;
        numbered(&mut slots, BASE);
        let before = slots.next_filter;
        let mut gen =
            crate::run::build_generation(&cfg(&BASE.replace("name: udp", "name: udp2"))).unwrap();
        let e = slots.number(&mut gen).unwrap_err();
        assert!(e.contains("restart required"), "{e}");
        assert_eq!(slots.next_filter, before);
    }
}
