//! `appliance run`: bring up EAL, the pool and the ports from the configuration, launch one
//! worker per worker lcore, run until told to stop, then shut down in order (stop polling,
//! flush, stop and close ports, check every mbuf is back) and report.
use crate::config::{Config, ConfigError, ForwardAction, PortState, ValidateLevel};
use crate::metrics::{MetricsServer, Telemetry};
use crate::summary::{
    ActionSummary, FilterSummary, LcoreSummary, PoolSummary, PortSummary, Summary,
};
use crate::worker::{Links, Worker};
use pipelines::flowlabel::{FlowLabelTable, Reservation, ReservationDiff};
use pipelines::pipeline::{
    Action, Forward, Generation, GenerationCell, MirredDirection, MirredTarget, PortGroup,
    PortIndex, PortPipeline, Validation,
};
use pipelines::stats::{port_totals, LcoreStats, StatsWriter};
use pmd_glue::lcore::{self, LcoreId};
use pmd_glue::{Eal, Mempool, Port, PortConfig as DevPortConfig, SocketId};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit codes of `appliance run`.
pub mod exit {
    /// Clean run.
    pub const OK: i32 = 0;
    /// Bad configuration (nothing was started).
    pub const CONFIG: i32 = 2;
    /// DPDK (EAL, port or pool) could not be brought up; everything started was torn down.
    pub const STARTUP: i32 = 3;
    /// The run ended but mbufs were not all returned to their pools.
    pub const LEAK: i32 = 4;
    /// A worker panicked (caught); the appliance shut down in order.
    pub const WORKER_PANIC: i32 = 70;
}

/// Failure before the workers ran.
#[derive(Debug)]
pub struct StartupError {
    /// Exit code to use.
    pub code: i32,
    /// What went wrong.
    pub message: String,
}

fn startup(message: impl Into<String>) -> StartupError {
    StartupError {
        code: exit::STARTUP,
        message: message.into(),
    }
}

/// Milliseconds since the Unix epoch: the clock the workers' `last use` times follow.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sets the stop flag when dropped: on a normal return and while unwinding from a panic, so one
/// failing worker stops the others.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Builds the pipeline generation (ports and forwarding table) from the configuration.
pub fn build_generation(cfg: &Config) -> Result<Generation, ConfigError> {
    build_generation_with(cfg, None)
}

/// The stateful parts a reloaded generation shares with the running one.
#[derive(Clone)]
struct Kept {
    flowlabels: Option<Arc<FlowLabelTable>>,
    ipsec: Option<Arc<pipelines::ipsec::Ipsec>>,
}

/// [`build_generation`], taking the flow-label table and the SA table from `kept` (a reload,
/// which checked the table's configuration and built the SA table) instead of building fresh
/// ones. A kept flow-label table is in every generation once it exists, whether or not a port
/// labels.
fn build_generation_with(cfg: &Config, kept: Option<&Kept>) -> Result<Generation, ConfigError> {
    let filters = crate::filters::load(cfg, &cfg.base_dir)?;
    let mut ports: Vec<PortPipeline> = cfg
        .ports
        .iter()
        .map(|p| PortPipeline {
            name: p.name.clone(),
            validation: match p.validate {
                ValidateLevel::Full => Validation::Full,
                ValidateLevel::L2 => Validation::L2,
            },
            flowlabel: p.flowlabel.mode(),
            ..Default::default()
        })
        .collect();
    for f in &cfg.forwarding {
        let (Some(from), action) = (
            cfg.port_index(&f.from),
            f.action.unwrap_or(ForwardAction::Forward),
        ) else {
            continue;
        };
        ports[from].forward = match (action, f.to.as_deref().and_then(|t| cfg.port_index(t))) {
            (ForwardAction::Drop, _) => Forward::Drop,
            (ForwardAction::Forward, Some(to)) => Forward::To(PortIndex(to as u16)),
            (ForwardAction::Forward, None) => Forward::None,
        };
    }
    for (port, (ingress, egress)) in ports.iter_mut().zip(&filters.ports) {
        port.ingress = crate::filters::build_hook(ingress, cfg);
        port.egress = crate::filters::build_hook(egress, cfg);
    }
    let groups = cfg
        .groups
        .iter()
        .map(|g| PortGroup {
            name: g.name.clone(),
            members: g
                .ports
                .iter()
                .filter_map(|m| cfg.port_index(m))
                .map(|i| PortIndex(i as u16))
                .collect(),
        })
        .collect();
    let table_config = cfg.flowlabel_table_config()?;
    let (flowlabels, ipsec) = match kept {
        Some(k) => (k.flowlabels.clone(), k.ipsec.clone()),
        None => (
            match table_config {
                Some(c) => Some(Arc::new(
                    FlowLabelTable::new(&c).map_err(|e| ConfigError::at("flowlabels", e.0))?,
                )),
                None => None,
            },
            crate::tunnels::build_ipsec(cfg)?.map(Arc::new),
        ),
    };
    if let Some(ip) = &ipsec {
        for t in &ip.tunnels {
            ports[usize::from(t.underlay.0)].local = true;
        }
        for (i, t) in ip.tunnels.iter().enumerate() {
            ports[usize::from(t.port.0)].tunnel = Some(i as u16);
        }
    }
    Ok(Generation {
        ports,
        groups,
        flowlabels,
        ipsec,
    })
}

/// Ports that packets can be sent to under `gen` (they need transmit queues): forwarding
/// entries, direct-action redirect ports and the targets of every mirred action.
fn tx_targets(gen: &Generation) -> Vec<bool> {
    let mut t = vec![false; gen.ports.len()];
    // Tunnels send ESP, ARP and ICMP out of their underlay (and ICMP back where a packet came
    // from: any port with a receive queue may need one, so underlay setups transmit everywhere).
    if let Some(ip) = &gen.ipsec {
        if !ip.tunnels.is_empty() {
            t.iter_mut().for_each(|x| *x = true);
        }
    }
    let mut mark = |i: PortIndex| {
        if let Some(x) = t.get_mut(usize::from(i.0)) {
            *x = true;
        }
    };
    for p in &gen.ports {
        if let Forward::To(i) = p.forward {
            mark(i);
        }
        for f in p.ingress.iter().chain(&p.egress) {
            if let Some(i) = f.redirect {
                mark(i);
            }
            for (_, actions, _) in f.action_lists() {
                for a in actions {
                    let Action::Mirred(m) = a else { continue };
                    if m.direction != MirredDirection::Egress {
                        continue; // ingress targets send through their own forwarding entries
                    }
                    match m.target {
                        MirredTarget::Port(i) => mark(i),
                        MirredTarget::Group(g) => {
                            for &i in gen
                                .groups
                                .get(usize::from(g))
                                .map_or(&[][..], |g| &g.members)
                            {
                                mark(i);
                            }
                        }
                    }
                }
            }
        }
    }
    t
}

/// Inbound (SPI, destination) pairs of removed SAs remembered, to tell their packets apart
/// from unknown SPIs (`esp_sa_removed`): the most recent ones.
const REMOVED_INBOUND_KEPT: usize = 1024;

/// What the control loop needs to reload: the running configuration, what was set up at start
/// and the cell the workers read.
struct Reloader {
    source: crate::reload::Source,
    running: Config,
    kept: Kept,
    /// The flow-label table for `/metrics`, the collector and the summary (set once a table
    /// exists).
    flowlabels: crate::reload::SharedFlowLabels,
    /// The flow-label reservations of the running generation.
    reserved: Vec<Reservation>,
    /// Some reservation may be held that the running generation no longer has: released once
    /// no worker runs an older generation.
    release_pending: bool,
    /// The collector's period (the last labelling configuration's).
    gc_every: Duration,
    /// [`crate::reload::content_hash`] of the configuration file as last read (start, each
    /// reload), which the watch compares with the file's content now.
    seen: Option<u64>,
    /// The last error of the watch reading the file (logged once).
    watch_error: Option<String>,
    /// Ports that have transmit queues (set up at start).
    has_tx: Vec<bool>,
    /// Port MACs (read from the devices at start).
    macs: Vec<[u8; 6]>,
    slots: crate::reload::CounterSlots,
    counted: crate::reload::SharedCounted,
    cell: Arc<GenerationCell>,
    stats: Arc<crate::reload::ReloadStats>,
    /// The crypto device (when tunnels or SAs were configured at start): sessions for the SAs
    /// reloads add.
    crypto: Option<pmd_glue::cryptodev::CryptoDev>,
    /// Replaced generations some worker may still hold: freed here, on the control thread,
    /// once every worker moved on (never on a worker lcore).
    retired: Vec<Arc<Generation>>,
    /// Replaced SA tables, which workers keep while operations enqueued with them are in
    /// flight: freed here once nobody else holds them.
    retired_tables: Vec<Arc<pipelines::ipsec::Ipsec>>,
    /// Sessions of SAs that reloads removed: freed here once no table and no queue (of a
    /// worker with operations in flight on them) holds them.
    retired_sessions: Vec<pmd_glue::cryptodev::Session>,
    /// Removed inbound SAs, oldest first.
    removed_inbound: Vec<(u32, [u8; 4])>,
}

impl Reloader {
    /// Re-reads the configuration and publishes it as the next generation, or says why not
    /// (the running generation stays). On success returns the new generation's perturber.
    fn reload(&mut self) -> Result<(String, pipelines::flow::Perturber), String> {
        let bytes = self.source.read()?;
        self.seen = Some(crate::reload::content_hash(&bytes));
        let cfg = self.source.parse(&bytes)?;
        let file = self.source.describe();
        let err = |e: ConfigError| format!("{file}: config error: {e}");
        crate::reload::check_restart_only(&self.running, &cfg).map_err(err)?;
        let table = self.kept.flowlabels.clone();
        crate::reload::check_flowlabel_capacity(table.as_ref().map(|t| t.capacity()), &cfg)
            .map_err(err)?;
        let table_config = cfg.flowlabel_table_config().map_err(err)?;
        let reserved = table_config
            .as_ref()
            .map_or_else(Vec::new, |c| c.reservations.clone());
        // The first configuration that labels flows gets a table (with its reservations).
        let new_table = match (&table, &table_config) {
            (None, Some(c)) => Some(Arc::new(
                FlowLabelTable::new(c).map_err(|e| err(ConfigError::at("flowlabels", e.0)))?,
            )),
            _ => None,
        };
        let (ipsec, plan, removed_inbound) = self.sa_table(&cfg, &file)?;
        let kept = Kept {
            flowlabels: table.clone().or_else(|| new_table.clone()),
            ipsec: ipsec.clone(),
        };
        let mut gen = build_generation_with(&cfg, Some(&kept)).map_err(err)?;
        for (p, mac) in gen.ports.iter_mut().zip(&self.macs) {
            p.mac = *mac;
        }
        for (i, (want, has)) in tx_targets(&gen).iter().zip(&self.has_tx).enumerate() {
            if *want && !*has {
                return Err(err(ConfigError::at(
                    format!("ports[{i}]"),
                    format!(
                        "port {:?} is now sent to (forwarding, redirect or mirror), but nothing \
                         was at start, so it has no transmit queues: restart required",
                        cfg.ports[i].name
                    ),
                )));
            }
        }
        let mut slots = self.slots.clone();
        let counted = slots.number(&mut gen).map_err(|m| format!("{file}: {m}"))?;
        let perturber = pipelines::flow::Perturber::of_generation(&gen, Instant::now());
        let (filters, actions) = (counted.filters.len(), counted.actions.len());
        // Last, as nothing after it fails but the publication: the running table claims the
        // labels the new generation pins before any worker runs it.
        if let Some(t) = &table {
            t.reserve(&reserved, unix_ms())
                .map_err(|e| err(crate::reload::reserve_error(&cfg, &e)))?;
        }
        let (epoch, old) = match self.cell.publish_numbered(gen) {
            Ok(p) => p,
            Err(e) => {
                if let Some(t) = &table {
                    // The running reservations are held: this cannot fail. Labels claimed for
                    // the refused generation are released with the next release.
                    let _ = t.reserve(&self.reserved, unix_ms());
                    self.release_pending = true;
                }
                return Err(format!("{file}: pipeline: {e}"));
            }
        };
        self.retired.push(old);
        self.retire_sa_table(&ipsec);
        self.removed_inbound = removed_inbound;
        self.kept = kept;
        self.slots = slots;
        match self.counted.write() {
            Ok(mut c) => *c = counted,
            Err(p) => *p.into_inner() = counted,
        }
        let mut notes = Vec::new();
        let diff = ReservationDiff::between(&self.reserved, &reserved);
        if !diff.is_empty() {
            notes.push(format!("flow-label reservations: {diff}"));
        }
        if let (Some(t), Some(c)) = (&self.kept.flowlabels, &table_config) {
            if t.linger_ms() != c.linger_ms {
                notes.push(format!(
                    "flow-label linger {} s -> {} s",
                    t.linger_ms() as f64 / 1000.0,
                    c.linger_ms as f64 / 1000.0
                ));
                t.set_linger_ms(c.linger_ms);
            }
            self.gc_every = Duration::from_millis(cfg.flowlabels.gc_interval_ms);
        }
        if let Some(t) = new_table {
            notes.push(format!("flow-label table created ({} flows)", t.capacity()));
            let _ = self.flowlabels.set(t.clone());
            self.kept.flowlabels = Some(t);
        }
        self.release_pending |= self.kept.flowlabels.is_some();
        self.reserved = reserved;
        self.running = cfg;
        if self.kept.ipsec.is_some() {
            notes.push(plan.describe());
        }
        let notes: String = notes.iter().map(|n| format!("; {n}")).collect();
        Ok((
            format!(
                "{file}: generation {epoch} in effect ({filters} filters, {actions} \
                 actions{notes})"
            ),
            perturber,
        ))
    }

    /// The SA table of the reloaded configuration `cfg`: the running one when the SAs and
    /// tunnels stay as they run; else a new table in which SAs that stay the same SA keep
    /// their live state and session, with a new device session for every other SA, created
    /// here before anything is published. Also returns what changes and the removed inbound
    /// SAs to remember (oldest first). On any error nothing changes (sessions created for it
    /// are freed here, unused).
    #[allow(clippy::type_complexity)]
    fn sa_table(
        &self,
        cfg: &Config,
        file: &str,
    ) -> Result<
        (
            Option<Arc<pipelines::ipsec::Ipsec>>,
            crate::tunnels::SaPlan,
            Vec<(u32, [u8; 4])>,
        ),
        String,
    > {
        let err = |e: ConfigError| format!("{file}: config error: {e}");
        let running = self.kept.ipsec.as_ref();
        let (built, plan) =
            crate::tunnels::build_ipsec_reusing(cfg, running.map(|ip| (&self.running, &**ip)))
                .map_err(err)?;
        let (Some(running), Some(mut ip)) = (running, built) else {
            // No table at start, and none now (check_restart_only refuses one appearing).
            return Ok((None, plan, Vec::new()));
        };
        if plan.unchanged() {
            return Ok((Some(running.clone()), plan, self.removed_inbound.clone()));
        }
        let Some(dev) = &self.crypto else {
            return Err(format!(
                "{file}: no crypto device is open: restart required"
            ));
        };
        let running_sessions = running
            .backend::<crate::tunnel_stage::SaSessions>()
            .unwrap_or_default();
        let mut sessions = Vec::with_capacity(ip.sas.len());
        for (i, sa) in ip.sas.iter().enumerate() {
            let same = running
                .sas
                .iter()
                .position(|o| o.shares_state_with(sa))
                .and_then(|j| running_sessions.0.get(j));
            sessions.push(match same {
                Some(s) => s.clone(),
                None => sa_session(dev, i, sa).map_err(|m| {
                    format!(
                        "{file}: crypto ({}): {m}; nothing changed",
                        self.running.crypto.device
                    )
                })?,
            });
        }
        let mut removed = self.removed_inbound.clone();
        removed.retain(|r| !plan.gone_inbound.contains(r));
        removed.extend(&plan.gone_inbound);
        let excess = removed.len().saturating_sub(REMOVED_INBOUND_KEPT);
        removed.drain(..excess);
        ip.set_removed_inbound(removed.clone());
        let ip = Arc::new(ip);
        ip.attach_backend(Arc::new(crate::tunnel_stage::SaSessions(sessions)));
        Ok((Some(ip), plan, removed))
    }

    /// After `next` was published: arms changed soft lifetimes again, and keeps the replaced SA
    /// table and the sessions only it had until nobody else holds them.
    fn retire_sa_table(&mut self, next: &Option<Arc<pipelines::ipsec::Ipsec>>) {
        let (Some(old), Some(next)) = (&self.kept.ipsec, next) else {
            return;
        };
        if Arc::ptr_eq(old, next) {
            return;
        }
        crate::tunnels::rearm_soft_lifetimes(old, next);
        let keep = next
            .backend::<crate::tunnel_stage::SaSessions>()
            .unwrap_or_default();
        if let Some(s) = old.backend::<crate::tunnel_stage::SaSessions>() {
            for sess in &s.0 {
                if !keep.0.iter().any(|k| k.same_session(sess)) {
                    self.retired_sessions.push(sess.clone());
                }
            }
        }
        self.retired_tables.push(old.clone());
    }

    /// Runs one reload and records and logs its outcome (`how`: what asked for it).
    fn reload_logged(
        &mut self,
        how: &str,
        perturber: &mut pipelines::flow::Perturber,
    ) -> crate::reload::ReloadReply {
        let r = self.reload().map(|(m, p)| {
            *perturber = p;
            m
        });
        crate::reload::finish(&self.stats, how, &r, self.cell.epoch());
        r
    }

    /// Frees the replaced generations, SA tables and sessions no worker holds any more (in
    /// that order: a table's last holder may be its generation, a session's its table); once
    /// no replaced generation is left, releases the flow labels no longer reserved (no worker
    /// can pin them now).
    fn free_retired(&mut self) {
        self.retired.retain(|g| Arc::strong_count(g) > 1);
        self.retired_tables.retain(|t| Arc::strong_count(t) > 1);
        self.retired_sessions.retain(|s| s.handles() > 1);
        if !self.retired.is_empty() || !self.release_pending {
            return;
        }
        self.release_pending = false;
        let Some(t) = &self.kept.flowlabels else {
            return;
        };
        let released = t.release_reservations(&self.reserved, unix_ms());
        if !released.is_empty() {
            let list: Vec<String> = released.iter().map(|l| format!("{l:#07x}")).collect();
            eprintln!(
                "appliance: flow labels {} are no longer reserved: they linger {} s, then wait \
                 one collection, before a flow may get them",
                list.join(", "),
                t.linger_ms() as f64 / 1000.0
            );
        }
    }

    /// The watch's period (`run.watch_config_s` of the running configuration), when there is
    /// a file to watch.
    fn watch_every(&self) -> Option<Duration> {
        self.source.path.as_ref()?;
        self.running.run.watch_config_s.map(Duration::from_secs_f64)
    }

    /// True when the configuration file's content differs from what the last reload (or the
    /// start) read. A file that cannot be read now (being replaced) counts as unchanged; the
    /// error is logged once.
    fn file_changed(&mut self) -> bool {
        match self.source.read() {
            Ok(bytes) => {
                self.watch_error = None;
                self.seen != Some(crate::reload::content_hash(&bytes))
            }
            Err(e) => {
                if self.watch_error.as_ref() != Some(&e) {
                    eprintln!("appliance: watching the configuration file: {e}");
                    self.watch_error = Some(e);
                }
                false
            }
        }
    }

    /// The running SA table.
    fn ipsec(&self) -> Option<&Arc<pipelines::ipsec::Ipsec>> {
        self.kept.ipsec.as_ref()
    }
}

/// Runs the appliance; returns the summary and the exit code. `source` is where reloads
/// (SIGHUP, `POST /reload`) re-read the configuration.
pub fn run(cfg: &Config, source: crate::reload::Source) -> Result<(Summary, i32), StartupError> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while shutting down exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| startup(format!("cannot install signal handler: {e}")))?;
    }
    // SIGHUP: reload (the control loop looks at the flag every 10 ms).
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| startup(format!("cannot install signal handler: {e}")))?;
    // Bind the metrics socket before DPDK starts, so a taken port fails with nothing started.
    let listener = match &cfg.metrics.listen {
        Some(l) => {
            let addr: SocketAddr = l.parse().map_err(|_| StartupError {
                code: exit::CONFIG,
                message: format!("`metrics.listen`: {l:?} is not address:port"),
            })?;
            Some(crate::metrics::bind(addr).map_err(|m| StartupError {
                code: exit::CONFIG,
                message: m,
            })?)
        }
        None => None,
    };

    let eal = Eal::init("appliance", &cfg.eal_args()).map_err(|e| {
        startup(format!(
            "{e}\n  EAL arguments: {}",
            cfg.eal_args().join(" ")
        ))
    })?;
    // From here on, errors return through `bring_up`'s caller, which tears down what exists.
    let result = bring_up_and_run(cfg, &stop, &hup, source, listener, started);
    let cleanup = eal.cleanup();
    let (summary, code) = result?;
    if let Err(e) = cleanup {
        eprintln!("appliance: {e}");
        let code = if code == exit::OK { exit::LEAK } else { code };
        return Ok((summary, code));
    }
    Ok((summary, code))
}

fn bring_up_and_run(
    cfg: &Config,
    stop: &Arc<AtomicBool>,
    hup: &AtomicBool,
    source: crate::reload::Source,
    listener: Option<tiny_http::Server>,
    started: Instant,
) -> Result<(Summary, i32), StartupError> {
    let want: Vec<u32> = cfg.worker_lcores();
    let workers: Vec<LcoreId> = lcore::worker_lcores();
    if workers.iter().map(|l| l.0).collect::<Vec<_>>() != want {
        return Err(startup(format!(
            "EAL enabled worker lcores {workers:?}, configuration asked for {want:?} (eal.lcores)"
        )));
    }
    let socket = lcore::socket_of(lcore::main_lcore());
    let pool = Mempool::pktmbuf(
        "mbuf_pool",
        cfg.mempool.mbufs,
        cfg.mempool.cache,
        cfg.mempool.data_room,
        socket,
    )
    .or_else(|_| {
        Mempool::pktmbuf(
            "mbuf_pool",
            cfg.mempool.mbufs,
            cfg.mempool.cache,
            cfg.mempool.data_room,
            SocketId::ANY,
        )
    })
    .map_err(|e| {
        startup(format!(
            "mempool ({} mbufs of {} bytes): {e}",
            cfg.mempool.mbufs, cfg.mempool.data_room
        ))
    })?;

    // Mirror copies: indirect mbufs with no data room of their own.
    let clone_pool = Mempool::pktmbuf(
        "clone_pool",
        cfg.mempool.clones,
        cfg.mempool.cache.min(cfg.mempool.clones * 2 / 3),
        0,
        socket,
    )
    .or_else(|_| {
        Mempool::pktmbuf(
            "clone_pool",
            cfg.mempool.clones,
            cfg.mempool.cache.min(cfg.mempool.clones * 2 / 3),
            0,
            SocketId::ANY,
        )
    })
    .map_err(|e| startup(format!("clone pool ({} mbufs): {e}", cfg.mempool.clones)))?;

    let mut gen = build_generation(cfg).map_err(|e| startup(format!("config: {e}")))?;
    let targets = tx_targets(&gen);
    let nworkers = workers.len();

    // Ports: configure and start; any failure drops (stops and closes) the ones already up.
    let mut ports: Vec<Port> = Vec::with_capacity(cfg.ports.len());
    let mut rx_assign: Vec<Vec<(PortIndex, pmd_glue::RxQueue)>> =
        (0..nworkers).map(|_| Vec::new()).collect();
    let mut tx_assign: Vec<Vec<Option<pmd_glue::TxQueue>>> = (0..nworkers)
        .map(|_| (0..cfg.ports.len()).map(|_| None).collect())
        .collect();
    let mut rr = 0usize;
    let mut dev_index: Vec<Option<usize>> = vec![None; cfg.ports.len()];
    for (i, pc) in cfg.ports.iter().enumerate() {
        if pc.tunnel.is_some() {
            continue; // virtual: no device
        }
        dev_index[i] = Some(ports.len());
        let at = |m: String| startup(format!("ports[{i}] ({}): {m}", pc.name));
        let mut port = Port::by_name(&dpdk_device_name(&pc.device)).map_err(|e| {
            at(format!(
                "device {:?} not found: {e}. Is its driver loaded? (see README: virtual devices)",
                pc.device
            ))
        })?;
        gen.ports[i].mac = port.info().map_err(|e| at(e.to_string()))?.mac;
        let tx_queues = if targets[i] { nworkers as u16 } else { 0 };
        let conf = DevPortConfig {
            rx_queues: pc.rx_queues,
            tx_queues,
            rx_desc: pc.rx_desc,
            tx_desc: pc.tx_desc,
            promiscuous: pc.promiscuous,
            mtu: pc.mtu,
        };
        port.configure(&conf, &pool)
            .map_err(|e| at(e.to_string()))?;
        if pc.state == PortState::Down {
            // Administratively down: configured, never started, never polled or sent to.
            ports.push(port);
            continue;
        }
        port.start().map_err(|e| at(e.to_string()))?;
        let (rxq, txq) = port.take_queues().map_err(|e| at(e.to_string()))?;
        for q in rxq {
            rx_assign[rr % nworkers].push((PortIndex(i as u16), q));
            rr += 1;
        }
        for (w, q) in txq.into_iter().enumerate() {
            tx_assign[w][i] = Some(q);
        }
        ports.push(port);
    }

    // The tunnels' crypto device: one queue pair per worker, one session per SA.
    let mut crypto_queues: Vec<Option<crate::tunnel_stage::TunnelStage>> =
        (0..nworkers).map(|_| None).collect();
    let mut crypto_dev = None;
    if let Some(ip) = gen.ipsec.clone() {
        let (dev, stages) = open_crypto(cfg, &ip, &gen, nworkers, &pool, socket)?;
        crypto_dev = Some(dev);
        crypto_queues = stages.into_iter().map(Some).collect();
    }
    let links = Arc::new(Links::new(cfg.ports.len()));
    let mut slots = crate::reload::CounterSlots::for_start(&gen);
    let counted = slots
        .number(&mut gen)
        .map_err(|m| startup(format!("pipeline: {m}")))?;
    let (filter_slots, action_slots) = (counted.filter_slots, counted.action_slots);
    let counted = Arc::new(std::sync::RwLock::new(counted));
    let reload_stats = Arc::new(crate::reload::ReloadStats::new());
    let macs: Vec<[u8; 6]> = gen.ports.iter().map(|p| p.mac).collect();
    // Flow classifiers with `perturb`: the control loop re-seeds them.
    let mut perturber = pipelines::flow::Perturber::of_generation(&gen, Instant::now());
    let flowlabels: crate::reload::SharedFlowLabels = Arc::default();
    if let Some(t) = &gen.flowlabels {
        let _ = flowlabels.set(t.clone());
    }
    let reserved = gen
        .flowlabels
        .as_ref()
        .map_or_else(Vec::new, |t| t.reservations());
    let ipsec_state = gen.ipsec.clone();
    let seen = source.loaded_hash;
    let cell = GenerationCell::new(gen).map_err(|e| startup(format!("pipeline: {e}")))?;
    let crypto_sessions = Arc::new(std::sync::atomic::AtomicU64::new(
        crypto_dev
            .as_ref()
            .map_or(0, |d| u64::from(d.sessions_in_use())),
    ));
    let mut reloader = Reloader {
        source,
        running: cfg.clone(),
        kept: Kept {
            flowlabels: flowlabels.get().cloned(),
            ipsec: ipsec_state,
        },
        flowlabels: flowlabels.clone(),
        reserved,
        release_pending: false,
        gc_every: Duration::from_millis(cfg.flowlabels.gc_interval_ms),
        seen,
        watch_error: None,
        has_tx: targets.clone(),
        macs,
        slots,
        counted: counted.clone(),
        cell: cell.clone(),
        stats: reload_stats.clone(),
        crypto: crypto_dev,
        retired: Vec::new(),
        retired_tables: Vec::new(),
        retired_sessions: Vec::new(),
        removed_inbound: Vec::new(),
    };
    let mut lcore_stats: Vec<Arc<LcoreStats>> = Vec::new();
    let mut jobs = Vec::new();
    let drain_ticks = pmd_glue::tsc_hz().max(1) * u64::from(cfg.workers.tx_drain_us) / 1_000_000;
    for (((lc, rx), tx), tunnel) in workers
        .iter()
        .zip(rx_assign)
        .zip(tx_assign)
        .zip(crypto_queues)
    {
        let (writer, reader) = StatsWriter::new(lc.0, cfg.ports.len(), filter_slots, action_slots);
        lcore_stats.push(reader);
        jobs.push((
            *lc,
            Worker {
                rx,
                tx,
                generation: cell.reader(),
                stats: writer,
                stop: stop.clone(),
                drain_ticks: drain_ticks.max(1),
                clone_pool: clone_pool.clone(),
                links: links.clone(),
                tunnel,
            },
        ));
    }

    let readers = dev_index
        .iter()
        .map(|d| d.map(|d| ports[d].stats_reader()).transpose())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| startup(e.to_string()))?;
    // Link states for mirred: administratively down ports stay down; the others follow their
    // link, refreshed by the control loop. A tunnel is up when its underlay (in the running
    // configuration: reloads may move a tunnel) is.
    let refresh_links = |links: &Links, cfg: &Config| {
        for (i, pc) in cfg.ports.iter().enumerate() {
            let u = pc
                .tunnel
                .as_ref()
                .and_then(|t| cfg.port_index(&t.underlay))
                .unwrap_or(i);
            let up = pc.state == PortState::Up
                && cfg.ports[u].state == PortState::Up
                && readers
                    .get(u)
                    .and_then(|r| r.as_ref())
                    .is_some_and(|r| r.link().is_ok_and(|(up, _)| up));
            links.set(i, up);
        }
    };
    refresh_links(&links, cfg);
    let (reload_tx, reload_rx) = std::sync::mpsc::channel();
    let metrics: Option<MetricsServer> = listener.map(|l| {
        crate::metrics::serve(
            l,
            Telemetry {
                port_names: cfg.ports.iter().map(|p| p.name.clone()).collect(),
                admin_up: cfg.ports.iter().map(|p| p.state == PortState::Up).collect(),
                devices: cfg.ports.iter().map(|p| p.device.clone()).collect(),
                readers: readers.clone(),
                lcores: lcore_stats.clone(),
                counted: counted.clone(),
                reloads: reload_stats.clone(),
                pools: vec![pool.clone(), clone_pool.clone()],
                started,
                flowlabels: flowlabels.clone(),
                crypto_sessions: reloader.crypto.is_some().then(|| crypto_sessions.clone()),
            },
            cfg.metrics.reload.then(|| reload_tx.clone()),
        )
    });
    drop(reload_tx);
    if let Some(m) = &metrics {
        eprintln!("appliance: metrics at http://{}/metrics", m.addr);
    }

    let mut launched = Vec::new();
    let mut launch_error = None;
    for (lc, w) in jobs {
        let stop_guard = stop.clone();
        match lcore::launch(lc, move || {
            let _guard = StopOnDrop(stop_guard);
            w.run()
        }) {
            Ok(l) => launched.push(l),
            Err(e) => {
                launch_error = Some(e);
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
    }
    eprintln!(
        "appliance: {} worker lcore(s) {:?} forwarding on {} port(s); Ctrl-C to stop",
        launched.len(),
        launched.iter().map(|l| l.lcore().0).collect::<Vec<_>>(),
        ports.len()
    );

    // Control loop: stop on signal, duration, idleness or a worker's exit.
    let deadline = cfg
        .run
        .duration_s
        .map(|s| started + Duration::from_secs_f64(s));
    let idle = cfg.run.exit_when_idle_ms.map(Duration::from_millis);
    let mut last_rx = 0u64;
    let mut last_change = Instant::now();
    let mut last_links = Instant::now();
    let mut last_gc = Instant::now();
    let mut next_watch = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
        let now = Instant::now();
        if now - last_links >= Duration::from_millis(100) {
            refresh_links(&links, &reloader.running);
            last_links = now;
        }
        if hup.swap(false, Ordering::Relaxed) {
            let _ = reloader.reload_logged("SIGHUP", &mut perturber);
        }
        while let Ok(req) = reload_rx.try_recv() {
            let r = reloader.reload_logged("POST /reload", &mut perturber);
            let _ = req.0.send(r);
        }
        // `run.watch_config_s`: a changed file reloads as SIGHUP does.
        if let Some(every) = reloader.watch_every() {
            if now >= next_watch {
                next_watch = now + every;
                if reloader.file_changed() {
                    let _ = reloader.reload_logged("configuration file changed", &mut perturber);
                }
            }
        }
        reloader.free_retired();
        if let Some(d) = &reloader.crypto {
            crypto_sessions.store(u64::from(d.sessions_in_use()), Ordering::Relaxed);
        }
        perturber.tick(now, &mut pipelines::flow::random_u32);
        if let Some(t) = flowlabels.get() {
            if now - last_gc >= reloader.gc_every {
                t.gc(unix_ms());
                last_gc = now;
            }
        }
        if let Some(ip) = reloader.ipsec() {
            for msg in crate::tunnels::enforce_lifetimes(ip) {
                eprintln!("appliance: {msg}");
            }
        }
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if let Some(idle) = idle {
            let rx: u64 = lcore_stats.iter().map(|l| l.packets.get()).sum();
            if rx != last_rx {
                last_rx = rx;
                last_change = now;
            } else if now - last_change >= idle {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);

    // Shutdown, in order.
    let mut panics = Vec::new();
    for l in launched {
        if let Err(p) = l.wait() {
            eprintln!("appliance: {p}");
            panics.push(p.to_string());
        }
    }
    let dev_stats: Vec<_> = readers
        .iter()
        .map(|r| r.as_ref().and_then(|r| r.stats().ok()).unwrap_or_default())
        .collect();
    if let Some(m) = metrics {
        m.stop();
    }
    drop(readers);
    // The device closes once its last session goes too (the running generation's, when the
    // cell drops on return).
    drop(reloader.crypto.take());
    let mut port_errors = Vec::new();
    for p in ports {
        if let Err(e) = p.close() {
            port_errors.push(e.to_string());
        }
    }
    let totals = port_totals(&lcore_stats, cfg.ports.len());
    let counted = crate::reload::counted(&counted);
    let filter_totals = pipelines::stats::filter_totals(&lcore_stats, counted.filter_slots);
    let action_totals = pipelines::stats::action_totals(&lcore_stats, counted.action_slots);
    let pools: Vec<PoolSummary> = [&pool, &clone_pool]
        .iter()
        .map(|p| PoolSummary {
            name: p.name().to_owned(),
            size: p.size(),
            available: p.available(),
            in_use: p.in_use(),
        })
        .collect();
    let leaked: u64 = pools.iter().map(|p| u64::from(p.in_use)).sum();
    drop(pool);
    drop(clone_pool);
    let summary = Summary {
        duration_s: started.elapsed().as_secs_f64(),
        ports: cfg
            .ports
            .iter()
            .zip(&totals)
            .zip(&dev_stats)
            .map(|((pc, t), d)| PortSummary::new(pc, t, d))
            .collect(),
        lcores: lcore_stats
            .iter()
            .map(|l| LcoreSummary {
                lcore: l.lcore,
                polls: l.polls.get(),
                busy_polls: l.busy_polls.get(),
                packets: l.packets.get(),
            })
            .collect(),
        filters: counted
            .filters
            .iter()
            .map(|info| {
                (
                    info,
                    filter_totals.get(info.slot).copied().unwrap_or_default(),
                )
            })
            .map(|(info, t)| FilterSummary {
                info: info.clone(),
                matched_packets: t.packets,
                matched_bytes: t.bytes,
            })
            .collect(),
        actions: counted
            .actions
            .iter()
            .map(|info| {
                (
                    info,
                    action_totals.get(info.slot).copied().unwrap_or_default(),
                )
            })
            .map(|(info, t)| ActionSummary {
                info: info.clone(),
                packets: t.packets,
                bytes: t.bytes,
                overlimits: t.overlimits,
                drops: t.drops,
            })
            .collect(),
        mirror_copies: lcore_stats.iter().map(|l| l.mirror_copies.get()).sum(),
        flowlabels: flowlabels.get().map(|t| {
            crate::summary::FlowLabelSummary::new(
                t,
                &pipelines::stats::flowlabel_totals(&lcore_stats),
            )
        }),
        tunnels: reloader
            .ipsec()
            .map(|_| crate::summary::TunnelSummary::of(&lcore_stats)),
        sas: reloader
            .ipsec()
            .map(|ip| crate::tunnels::sa_summaries(ip))
            .unwrap_or_default(),
        mempools: pools,
        leaked_mbufs: leaked,
        worker_panics: panics.clone(),
        errors: port_errors
            .iter()
            .cloned()
            .chain(launch_error.iter().map(|e| e.to_string()))
            .collect(),
    };
    let code = if !panics.is_empty() {
        exit::WORKER_PANIC
    } else if leaked > 0 {
        exit::LEAK
    } else if !summary.errors.is_empty() {
        exit::STARTUP
    } else {
        exit::OK
    };
    Ok((summary, code))
}

/// The name DPDK gives a device: vdev names as written, PCI addresses with their domain.
fn dpdk_device_name(device: &str) -> String {
    if crate::config::is_pci_address(device) && device.matches(':').count() == 1 {
        format!("0000:{device}")
    } else {
        device.to_owned()
    }
}

/// A device session for `sa` (`sas[i]`).
fn sa_session(
    dev: &pmd_glue::cryptodev::CryptoDev,
    i: usize,
    sa: &pipelines::ipsec::Sa,
) -> Result<pmd_glue::cryptodev::Session, String> {
    use pipelines::ipsec::SaDirection;
    use pmd_glue::cryptodev::{CipherDir, SessionSpec};
    let dir = match sa.cfg.direction {
        SaDirection::Out => CipherDir::Encrypt,
        SaDirection::In => CipherDir::Decrypt,
    };
    let k = &sa.cfg.keys;
    let spec = if sa.cfg.algorithm.is_aead() {
        SessionSpec::AesGcm {
            key: &k.cipher,
            dir,
            aad_len: if sa.cfg.esn { 12 } else { 8 },
            digest_len: pipelines::ipsec::ICV_LEN as u16,
        }
    } else {
        SessionSpec::AesCbcHmacSha256 {
            cipher_key: &k.cipher,
            auth_key: &k.auth,
            dir,
            digest_len: pipelines::ipsec::ICV_LEN as u16,
        }
    };
    dev.session(&spec).map_err(|e| {
        format!(
            "sas[{i}] ({}, {}): {e} ({} of the device's {} sessions in use)",
            sa.cfg.name,
            sa.cfg.algorithm,
            dev.sessions_in_use(),
            dev.sessions_capacity()
        )
    })
}

/// Sessions the crypto device can hold: room for reloads to add and replace SAs while the SAs
/// they replace finish their operations in flight.
fn session_capacity(sas: usize) -> u32 {
    (sas.saturating_mul(4).saturating_add(64)).clamp(1024, 1 << 20) as u32
}

/// Opens the crypto device (`crypto`), creates one session per SA (attached to the SA table)
/// and one tunnel stage per worker (each with its own queue pair).
fn open_crypto(
    cfg: &Config,
    ip: &Arc<pipelines::ipsec::Ipsec>,
    gen: &Generation,
    nworkers: usize,
    pool: &Mempool,
    socket: SocketId,
) -> Result<
    (
        pmd_glue::cryptodev::CryptoDev,
        Vec<crate::tunnel_stage::TunnelStage>,
    ),
    StartupError,
> {
    use pmd_glue::cryptodev::{CryptoDev, CryptoDevConfig};
    let c = &cfg.crypto;
    let at = |m: String| startup(format!("crypto ({}): {m}", c.device));
    let mut dev = CryptoDev::open(
        &c.device,
        c.args.as_deref().unwrap_or(""),
        &CryptoDevConfig {
            queue_pairs: nworkers as u16,
            descriptors: c.descriptors,
            ops_per_queue: c.ops,
            sessions: session_capacity(ip.sas.len()),
            socket,
        },
    )
    .map_err(|e| at(e.to_string()))?;
    let sessions = ip
        .sas
        .iter()
        .enumerate()
        .map(|(i, sa)| sa_session(&dev, i, sa))
        .collect::<Result<Vec<_>, _>>()
        .map_err(at)?;
    ip.attach_backend(Arc::new(crate::tunnel_stage::SaSessions(sessions)));
    let macs: Vec<[u8; 6]> = gen.ports.iter().map(|p| p.mac).collect();
    let queues = dev.take_queues().map_err(|e| at(e.to_string()))?;
    let stages = queues
        .into_iter()
        .enumerate()
        .map(|(lane, q)| {
            crate::tunnel_stage::TunnelStage::new(ip, lane, q, pool.clone(), macs.clone())
        })
        .collect();
    Ok((dev, stages))
}
