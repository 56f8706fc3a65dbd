//! Filters on port hooks (`ports[].ingress` / `ports[].egress`): their configuration, the
//! loading of classic-BPF programs from the three sources operators bring (pcap-filter text,
//! tc bytecode, `tcpdump -ddd` output), engine selection, and building the pipeline's
//! [`Filter`]s. Every program is loaded (and rejected with the filter's key path, the
//! instruction index and the rule) before anything starts.
use crate::config::{Config, ConfigError};
use pipelines::cbpf::{self, BpfChain, BpfClassifier, Engine, Interpreter, Mode, Program};
use pipelines::flow::{FlowClassifier, FlowSpec};
use pipelines::pipeline::{
    Action, ChainClassifier, ClassActions, Filter, Fused, Mirred, MirredDirection, MirredOp,
    MirredTarget, PortIndex,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One filter on a port hook.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Name in metrics, logs and errors; unique on its hook.
    pub name: String,
    /// Order on the hook: lower runs first (tc's `pref`); equal priorities keep file order.
    #[serde(default)]
    pub priority: u32,
    /// A classic-BPF classifier (`cls_bpf`).
    pub bpf: Option<BpfConfig>,
    /// A flow classifier (`cls_flow`): flow keys mapped or hashed to a class id.
    pub flow: Option<FlowConfig>,
    /// Actions run in order when the filter matches (not in direct-action mode), for class ids
    /// without an entry in `classes`.
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
    /// Per-class actions: the classifier's class id picks the list (for example, one port per
    /// flow class). Not with direct action.
    #[serde(default)]
    pub classes: Vec<ClassConfig>,
}

/// A flow classifier: tc's `flow` filter options.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// Keys, in tc's spelling: src, dst, proto, proto-src, proto-dst, iif, priority, mark, nfct,
    /// nfct-src, nfct-dst, nfct-proto-src, nfct-proto-dst, vlan-tag, rxhash.
    pub keys: Vec<String>,
    /// `map` (one key; the default, as in the kernel) or `hash` (jhash2 over all keys).
    pub mode: Option<String>,
    /// Map mode: AND mask (default all ones).
    pub mask: Option<u32>,
    /// Map mode: XOR after the mask.
    pub xor: Option<u32>,
    /// Map mode: right shift after the XOR (0..=31).
    pub rshift: Option<u32>,
    /// Map mode: added last.
    pub addend: Option<u32>,
    /// Result modulo this (0 or absent: none).
    pub divisor: Option<u32>,
    /// Class id the result is added to (minor part, 16-bit wrap); default 1:1, minor 0 refused.
    pub baseclass: Option<Classid>,
    /// Hash mode: re-randomise the seed every this many seconds.
    pub perturb: Option<u32>,
    /// Hash mode: the hash seed (random when absent; set it for classes that are the same on
    /// every run).
    pub seed: Option<u32>,
}

/// The actions of one class id.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// The class id: a number or tc's "major:minor" (hex).
    pub classid: Classid,
    /// Run in order for packets of this class.
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
}

/// A classic-BPF program and how its result is read. Exactly one source key.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct BpfConfig {
    /// A pcap-filter expression (`"tcp dst port 443 and ip[8] < 64"`), compiled by libpcap for
    /// Ethernet. A matching packet returns -1: the filter's `classid`.
    pub filter: Option<String>,
    /// tc/iproute2 bytecode: "4,40 0 0 12,21 0 1 2048,6 0 0 65535,6 0 0 0".
    pub bytecode: Option<String>,
    /// `tcpdump -ddd` output, inline.
    pub ddd: Option<String>,
    /// `tcpdump -ddd` output in a file (relative paths are relative to the config file).
    pub ddd_file: Option<PathBuf>,
    /// Class id for results of -1 (classid mode) and for decided packets (direct action):
    /// a number or tc's "major:minor" in hex ("1:10" = 0x10010).
    pub classid: Option<Classid>,
    /// Direct-action mode: the program's result is the verdict (0 ok, 2 shot, 4 stolen,
    /// 7 redirect, 8 trap; anything else moves on to the next filter).
    #[serde(default)]
    pub direct_action: bool,
    /// Port that a direct-action redirect verdict sends packets to.
    pub redirect: Option<String>,
    /// Engine: `auto` (the fastest available: the rbpf JIT where it applies, else the
    /// interpreter), `jit` (fail if the JIT cannot take the program) or `interpreter`.
    #[serde(default)]
    pub engine: EngineChoice,
    /// Let libpcap optimise `filter` expressions (as tcpdump does; default true).
    #[serde(default = "yes")]
    pub optimize: bool,
}

fn yes() -> bool {
    true
}

/// The `bpf.engine` setting.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// The fastest engine that takes the program.
    #[default]
    Auto,
    /// rbpf's x86-64 JIT over the bounds-checked translation; an error if unavailable.
    Jit,
    /// The reference interpreter.
    Interpreter,
}

/// A class id: a number, or tc's "major:minor" (hex) form.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Classid {
    /// A plain 32-bit value.
    Number(u32),
    /// "major:minor", both hex, 16 bits each.
    Text(String),
}

impl Classid {
    /// The 32-bit value.
    pub fn value(&self) -> Result<u32, String> {
        match self {
            Classid::Number(n) => Ok(*n),
            Classid::Text(t) => {
                let bad = || format!("{t:?}: a number or \"major:minor\" in hex (e.g. \"1:10\")");
                let (maj, min) = t.split_once(':').ok_or_else(bad)?;
                let h = |s: &str| {
                    if s.is_empty() {
                        Ok(0)
                    } else {
                        u16::from_str_radix(s, 16).map_err(|_| bad())
                    }
                };
                Ok(u32::from(h(maj)?) << 16 | u32::from(h(min)?))
            }
        }
    }
}

/// One action of a filter.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionConfig {
    /// Stop classifying; the forwarding entry applies.
    Pass,
    /// Drop (counted as `action_drop`).
    Drop,
    /// Try the next filter.
    Continue,
    /// Egress redirect: send out of this port (its egress filters run).
    Redirect(String),
    /// Egress mirror: a zero-copy copy goes out of this port; the packet goes on.
    Mirror(String),
    /// Any mirror or redirect, egress or ingress, to a port or a port group (tc mirred).
    Mirred(MirredConfig),
    /// Set the packet mark and go on with the next action.
    SetMark(u32),
    /// Set the class id and go on with the next action.
    SetClassid(Classid),
    /// Set the packet priority (for the flow classifier's `priority` key) and go on.
    SetPriority(u32),
    /// Pin the packet's IPv6 flow label to this reserved label (`flowlabels.reserved`); ports
    /// that label write it instead of the flow's label.
    Flowlabel(u32),
}

/// Every `flowlabel` action of the configuration: its key path and label.
pub fn pinned_labels(cfg: &Config) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for (pi, p) in cfg.ports.iter().enumerate() {
        for (hook, list) in [("ingress", &p.ingress), ("egress", &p.egress)] {
            for (fi, f) in list.iter().enumerate() {
                let at = format!("ports[{pi}].{hook}[{fi}]");
                let lists = std::iter::once((format!("{at}.actions"), &f.actions)).chain(
                    f.classes
                        .iter()
                        .enumerate()
                        .map(|(ci, c)| (format!("{at}.classes[{ci}].actions"), &c.actions)),
                );
                for (lat, list) in lists {
                    for (ai, a) in list.iter().enumerate() {
                        if let ActionConfig::Flowlabel(l) = a {
                            out.push((format!("{lat}[{ai}].flowlabel"), *l));
                        }
                    }
                }
            }
        }
    }
    out
}

/// A mirred action in full.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MirredConfig {
    /// `egress` (out of the target; the default) or `ingress` (into the target, whose ingress
    /// filters and forwarding entry then run).
    #[serde(default)]
    pub direction: MirredDirectionConfig,
    /// `mirror` (a copy goes; the packet continues) or `redirect` (the packet goes).
    pub action: MirredOpConfig,
    /// Target port (exactly one of `port` and `group`).
    pub port: Option<String>,
    /// Target port group: every member except the port the packet is on.
    pub group: Option<String>,
}

/// `mirred.direction`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum MirredDirectionConfig {
    /// Out of the target.
    #[default]
    Egress,
    /// Into the target.
    Ingress,
}

/// `mirred.action`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MirredOpConfig {
    /// Copy.
    Mirror,
    /// Move.
    Redirect,
}

/// Checks one action list; `at` is its key path.
fn check_actions(list: &[ActionConfig], at: &str, cfg: &Config) -> Result<(), ConfigError> {
    for (ai, a) in list.iter().enumerate() {
        let aat = format!("{at}[{ai}]");
        match a {
            ActionConfig::Redirect(to) => check_port(cfg, to, format!("{aat}.redirect"))?,
            ActionConfig::Mirror(to) => check_port(cfg, to, format!("{aat}.mirror"))?,
            ActionConfig::Mirred(m) => match (&m.port, &m.group) {
                (Some(p), None) => check_port(cfg, p, format!("{aat}.mirred.port"))?,
                (None, Some(g)) => {
                    if cfg.group_index(g).is_none() {
                        let known: Vec<&str> = cfg.groups.iter().map(|g| g.name.as_str()).collect();
                        return Err(ConfigError::at(
                            format!("{aat}.mirred.group"),
                            format!(
                                "unknown port group {g:?}; groups are: {}",
                                if known.is_empty() {
                                    "(none: define them under `groups`)".to_owned()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        ));
                    }
                }
                _ => {
                    return Err(ConfigError::at(
                        format!("{aat}.mirred"),
                        "exactly one target is required: port or group",
                    ))
                }
            },
            ActionConfig::SetClassid(c) => {
                c.value()
                    .map_err(|m| ConfigError::at(format!("{aat}.set_classid"), m))?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_port(cfg: &Config, name: &str, at: String) -> Result<(), ConfigError> {
    if cfg.port_index(name).is_some() {
        return Ok(());
    }
    let list: Vec<&str> = cfg.ports.iter().map(|p| p.name.as_str()).collect();
    Err(ConfigError::at(
        at,
        format!("unknown port {name:?}; ports are: {}", list.join(", ")),
    ))
}

/// The pipeline action for `a` (already checked by [`check_actions`]).
fn action_of(a: &ActionConfig, cfg: &Config) -> Action {
    let port = |n: &str| PortIndex(cfg.port_index(n).unwrap_or(0) as u16);
    match a {
        ActionConfig::Pass => Action::Pass,
        ActionConfig::Drop => Action::Drop,
        ActionConfig::Continue => Action::Continue,
        ActionConfig::Redirect(to) => Action::redirect(port(to)),
        ActionConfig::Mirror(to) => Action::mirror(port(to)),
        ActionConfig::Mirred(m) => Action::Mirred(Mirred {
            direction: match m.direction {
                MirredDirectionConfig::Egress => MirredDirection::Egress,
                MirredDirectionConfig::Ingress => MirredDirection::Ingress,
            },
            op: match m.action {
                MirredOpConfig::Mirror => MirredOp::Mirror,
                MirredOpConfig::Redirect => MirredOp::Redirect,
            },
            target: match (&m.port, &m.group) {
                (Some(p), _) => MirredTarget::Port(port(p)),
                (None, g) => MirredTarget::Group(
                    g.as_deref().and_then(|g| cfg.group_index(g)).unwrap_or(0) as u16,
                ),
            },
        }),
        ActionConfig::SetMark(m) => Action::SetMark(*m),
        ActionConfig::SetClassid(c) => Action::SetClassid(c.value().unwrap_or(0)),
        ActionConfig::SetPriority(p) => Action::SetPriority(*p),
        ActionConfig::Flowlabel(l) => Action::SetFlowLabel(*l),
    }
}

/// A filter whose classifier is checked, ready to build.
#[derive(Debug, Clone)]
pub struct LoadedFilter {
    /// The filter's configuration.
    pub config: FilterConfig,
    /// The checked classifier.
    pub classifier: LoadedClassifier,
}

/// A checked classifier.
#[derive(Debug, Clone)]
pub enum LoadedClassifier {
    /// A loaded classic-BPF program.
    Bpf(Program),
    /// A flow classifier's options (accepted by [`FlowClassifier::new`]).
    Flow(FlowSpec),
}

impl FlowConfig {
    /// The pipeline's form; `baseclass` must already be valid.
    fn spec(&self) -> FlowSpec {
        FlowSpec {
            keys: self.keys.clone(),
            mode: self.mode.clone(),
            mask: self.mask,
            xor: self.xor,
            rshift: self.rshift,
            addend: self.addend,
            divisor: self.divisor,
            baseclass: self.baseclass.as_ref().and_then(|c| c.value().ok()),
            perturb_secs: self.perturb,
            seed: self.seed,
        }
    }
}

/// All filters of a configuration, loaded: `[port][hook]`, in run order.
#[derive(Debug, Clone, Default)]
pub struct LoadedFilters {
    /// Per port: (ingress, egress).
    pub ports: Vec<(Vec<LoadedFilter>, Vec<LoadedFilter>)>,
}

fn name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Reads a program's instructions from its source.
fn program_insns(b: &BpfConfig, base: &Path, at: &str) -> Result<Vec<cbpf::Insn>, ConfigError> {
    let sources = [
        b.filter.is_some(),
        b.bytecode.is_some(),
        b.ddd.is_some(),
        b.ddd_file.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(ConfigError::at(
            at,
            "exactly one program source is required: filter (pcap-filter text), bytecode (tc), ddd or ddd_file (tcpdump -ddd output)",
        ));
    }
    if let Some(expr) = &b.filter {
        // snaplen u32::MAX makes libpcap's "accept" return -1, which cls_bpf reads as "match,
        // with the filter's classid".
        return pmd_glue::pcap::compile(expr, u32::MAX, b.optimize)
            .map_err(|e| ConfigError::at(format!("{at}.filter"), format!("{expr:?}: {e}")));
    }
    if let Some(t) = &b.bytecode {
        return cbpf::parse_tc_bytecode(t)
            .map_err(|e| ConfigError::at(format!("{at}.bytecode"), e.0));
    }
    if let Some(t) = &b.ddd {
        return cbpf::parse_ddd(t).map_err(|e| ConfigError::at(format!("{at}.ddd"), e.0));
    }
    let file = b.ddd_file.as_deref().unwrap_or(Path::new(""));
    let path = if file.is_absolute() {
        file.to_path_buf()
    } else {
        base.join(file)
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ConfigError::at(
            format!("{at}.ddd_file"),
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    cbpf::parse_ddd(&text).map_err(|e| {
        ConfigError::at(
            format!("{at}.ddd_file"),
            format!("{}: {}", path.display(), e.0),
        )
    })
}

/// Checks every filter of `cfg` and loads its program; `base` resolves relative `ddd_file`s.
pub fn load(cfg: &Config, base: &Path) -> Result<LoadedFilters, ConfigError> {
    let mut out = LoadedFilters::default();
    for (pi, p) in cfg.ports.iter().enumerate() {
        let mut hooks = (Vec::new(), Vec::new());
        for (hook, list) in [("ingress", &p.ingress), ("egress", &p.egress)] {
            let mut names = std::collections::BTreeSet::new();
            let mut loaded = Vec::new();
            for (fi, f) in list.iter().enumerate() {
                let at = format!("ports[{pi}].{hook}[{fi}]");
                if !name_ok(&f.name) {
                    return Err(ConfigError::at(
                        format!("{at}.name"),
                        format!(
                            "{:?}: letters, digits, '-', '_' and '.' only, not empty",
                            f.name
                        ),
                    ));
                }
                if !names.insert(f.name.as_str()) {
                    return Err(ConfigError::at(
                        format!("{at}.name"),
                        format!("{:?} is already a filter on {} {hook}", f.name, p.name),
                    ));
                }
                let direct = f.bpf.as_ref().is_some_and(|b| b.direct_action);
                if direct && !f.actions.is_empty() {
                    return Err(ConfigError::at(
                        format!("{at}.actions"),
                        "not allowed with bpf.direct_action: true (the program's verdict decides; use bpf.redirect for its redirect verdict)",
                    ));
                }
                if direct && !f.classes.is_empty() {
                    return Err(ConfigError::at(
                        format!("{at}.classes"),
                        "not allowed with bpf.direct_action: true (the program's verdict decides)",
                    ));
                }
                check_actions(&f.actions, &format!("{at}.actions"), cfg)?;
                let mut classids = std::collections::BTreeSet::new();
                for (ci, c) in f.classes.iter().enumerate() {
                    let cat = format!("{at}.classes[{ci}]");
                    let id = c
                        .classid
                        .value()
                        .map_err(|m| ConfigError::at(format!("{cat}.classid"), m))?;
                    if !classids.insert(id) {
                        return Err(ConfigError::at(
                            format!("{cat}.classid"),
                            format!("class {id:#x} already has an entry"),
                        ));
                    }
                    check_actions(&c.actions, &format!("{cat}.actions"), cfg)?;
                }
                let b = match (&f.bpf, &f.flow) {
                    (Some(b), None) => b,
                    (None, Some(fl)) => {
                        if let Some(c) = &fl.baseclass {
                            c.value().map_err(|m| {
                                ConfigError::at(format!("{at}.flow.baseclass"), m)
                            })?;
                        }
                        let spec = fl.spec();
                        FlowClassifier::new(&spec).map_err(|e| {
                            ConfigError::at(format!("{at}.flow.{}", e.field), e.message)
                        })?;
                        loaded.push(LoadedFilter {
                            config: f.clone(),
                            classifier: LoadedClassifier::Flow(spec),
                        });
                        continue;
                    }
                    _ => {
                        return Err(ConfigError::at(
                            &at,
                            "exactly one classifier is required: bpf (classic BPF) or flow (flow classifier)",
                        ))
                    }
                };
                let bat = format!("{at}.bpf");
                if let Some(c) = &b.classid {
                    c.value()
                        .map_err(|m| ConfigError::at(format!("{bat}.classid"), m))?;
                }
                if let Some(r) = &b.redirect {
                    if !b.direct_action {
                        return Err(ConfigError::at(
                            format!("{bat}.redirect"),
                            "only with direct_action: true (otherwise use a redirect action)",
                        ));
                    }
                    check_port(cfg, r, format!("{bat}.redirect"))?;
                }
                let insns = program_insns(b, base, &bat)?;
                let program = Program::load(insns).map_err(|e| {
                    ConfigError::at(
                        &bat,
                        format!("program of filter {:?} rejected: {e}", f.name),
                    )
                })?;
                if b.engine == EngineChoice::Jit {
                    pmd_glue::bpf_jit::RbpfJit::new(&program).map_err(|e| {
                        ConfigError::at(
                            format!("{bat}.engine"),
                            format!("jit: {e} (use engine: auto to fall back to the interpreter)"),
                        )
                    })?;
                }
                loaded.push(LoadedFilter {
                    config: f.clone(),
                    classifier: LoadedClassifier::Bpf(program),
                });
            }
            // Stable: equal priorities keep file order.
            loaded.sort_by_key(|l| l.config.priority);
            if hook == "ingress" {
                hooks.0 = loaded;
            } else {
                hooks.1 = loaded;
            }
        }
        out.ports.push(hooks);
    }
    Ok(out)
}

/// The engine for a loaded program, as `choice` asks.
pub fn engine(program: &Program, choice: EngineChoice) -> Box<dyn Engine> {
    if choice != EngineChoice::Interpreter {
        if let Ok(j) = pmd_glue::bpf_jit::RbpfJit::new(program) {
            return Box::new(j);
        }
    }
    Box::new(Interpreter::new(program))
}

/// Builds a hook's filters (validated and in order, as [`load`] leaves them) and fuses every
/// run of two or more consecutive classic-BPF filters that the JIT runs into chains
/// ([`pipelines::cbpf::translate_chain`]): one call per chain and packet instead of one per
/// filter. A chain ends where a filter is not such a filter or where the next program would
/// overflow the JIT's code page.
pub fn build_hook(list: &[LoadedFilter], cfg: &Config) -> Vec<Filter> {
    let mut filters: Vec<Filter> = list.iter().map(|l| build(l, cfg)).collect();
    let mut run: Vec<(usize, &Program, Mode)> = Vec::new();
    for (i, l) in list.iter().enumerate() {
        match (&l.classifier, &l.config.bpf) {
            (LoadedClassifier::Bpf(p), Some(b))
                if b.engine != EngineChoice::Interpreter
                    && filters[i].classifier.describe().0 == "rbpf-jit" =>
            {
                run.push((i, p, mode_of(b)));
            }
            _ => fuse(&mut filters, std::mem::take(&mut run)),
        }
    }
    fuse(&mut filters, run);
    filters
}

/// Splits `run` (consecutive JIT filters: position, program, mode) into chains that fit the
/// JIT's page, greedily, and attaches them to `filters`.
fn fuse(filters: &mut [Filter], run: Vec<(usize, &Program, Mode)>) {
    let mut rest = run.as_slice();
    while !rest.is_empty() {
        let members = |n: usize| -> Vec<(&Program, Mode)> {
            rest[..n].iter().map(|&(_, p, m)| (p, m)).collect()
        };
        let mut n = 0;
        while n < rest.len() && pmd_glue::bpf_jit::RbpfChainJit::fits(&members(n + 1)).is_ok() {
            n += 1;
        }
        if n < 2 {
            // Alone, a filter's own engine is as fast as a chain. As a chain of one, a hook's
            // only filter would take the whole-burst path, and one that decides on most frames
            // would pay the burst question on top of the walk (+18% instructions per packet in
            // perf/run.sh's pass1): a lone filter keeps its engine.
            rest = &rest[1..];
            continue;
        }
        let m = members(n);
        if let Ok(jit) = pmd_glue::bpf_jit::RbpfChainJit::new(&m) {
            // A fast variant that does not fit the page is left out.
            let fast = pmd_glue::bpf_jit::RbpfChainJit::new_fast(&m).ok().flatten();
            let burst = pmd_glue::bpf_jit::RbpfChainJit::new_burst(&m).ok();
            let chain: Arc<dyn ChainClassifier> =
                Arc::new(BpfChain::new(&m, jit, fast).with_burst(burst));
            for (index, &(at, _, _)) in rest[..n].iter().enumerate() {
                filters[at].fused = Some(Fused {
                    chain: chain.clone(),
                    index,
                });
            }
        }
        rest = &rest[n..];
    }
}

/// How a filter reads its program's result.
fn mode_of(b: &BpfConfig) -> Mode {
    let classid = b.classid.as_ref().and_then(|c| c.value().ok()).unwrap_or(0);
    if b.direct_action {
        Mode::DirectAction { classid }
    } else {
        Mode::Classid { classid }
    }
}

/// Builds the pipeline filter for `l` (already validated by [`load`]).
pub fn build(l: &LoadedFilter, cfg: &Config) -> Filter {
    let program = match &l.classifier {
        LoadedClassifier::Bpf(p) => p,
        LoadedClassifier::Flow(spec) => {
            let c = FlowClassifier::new(spec).expect("checked by load");
            return filter_with_actions(&l.config, Box::new(c), cfg);
        }
    };
    let b = l.config.bpf.clone().unwrap_or_default();
    let classifier = BpfClassifier::new(program, engine(program, b.engine), mode_of(&b));
    filter_with_actions(&l.config, Box::new(classifier), cfg)
}

/// The filter named and acted as `fc` says around `classifier`.
fn filter_with_actions(
    fc: &FilterConfig,
    classifier: Box<dyn pipelines::pipeline::Classifier>,
    cfg: &Config,
) -> Filter {
    let list = |l: &[ActionConfig]| l.iter().map(|a| action_of(a, cfg)).collect::<Vec<_>>();
    let mut f = Filter::new(fc.name.clone(), classifier, list(&fc.actions));
    let mut classes: Vec<ClassActions> = fc
        .classes
        .iter()
        .map(|c| ClassActions {
            classid: c.classid.value().unwrap_or(0),
            actions: list(&c.actions),
            base: 0,
        })
        .collect();
    classes.sort_by_key(|c| c.classid);
    f.classes = classes;
    f.redirect = fc
        .bpf
        .as_ref()
        .and_then(|b| b.redirect.as_deref())
        .map(|n| PortIndex(cfg.port_index(n).unwrap_or(0) as u16));
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    /// Two ports; `hooks` is YAML for port a's filter hooks (indented for a port entry).
    fn cfg(hooks: &str) -> String {
        format!(
            "eal: {{ no_huge: true, memory_mb: 256 }}\nports:\n  - name: a\n    device: net_null0\n{hooks}  - {{ name: b, device: net_null1 }}\n"
        )
    }

    fn err(hooks: &str) -> String {
        parse(&cfg(hooks)).unwrap_err().to_string()
    }

    const IPV4: &str = "4,40 0 0 12,21 0 1 2048,6 0 0 65535,6 0 0 0";

    #[test]
    fn programs_from_every_source_load_and_sort_by_priority() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.ddd"), "2\n6 0 0 0\n6 0 0 0\n").unwrap();
        let y = cfg(&format!(
            "    ingress:\n      - {{ name: t, priority: 5, bpf: {{ bytecode: \"{IPV4}\" }}, actions: [drop] }}\n      - {{ name: d, bpf: {{ ddd: \"1\\n6 0 0 7\" , direct_action: true, redirect: b }} }}\n      - {{ name: f, priority: 5, bpf: {{ ddd_file: p.ddd, classid: \"1:10\" }}, actions: [{{ set_mark: 3 }}, continue] }}\n    egress:\n      - {{ name: e, bpf: {{ bytecode: \"1,6 0 0 0\", engine: interpreter }}, actions: [{{ redirect: b }}] }}\n"
        ));
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, y).unwrap();
        let c = crate::config::load(&path).unwrap();
        let l = load(&c, &c.base_dir).unwrap();
        let names: Vec<&str> = l.ports[0]
            .0
            .iter()
            .map(|f| f.config.name.as_str())
            .collect();
        assert_eq!(names, ["d", "t", "f"], "priority order, ties in file order");
        assert!(matches!(&l.ports[0].0[2].classifier, LoadedClassifier::Bpf(p) if p.len() == 2));
        assert_eq!(l.ports[0].1.len(), 1);
        assert!(l.ports[1].0.is_empty());
    }

    #[test]
    fn bad_filters_name_the_key_the_instruction_and_the_rule() {
        let e = err("    ingress:\n      - { name: x, bpf: { bytecode: \"1,6 0 0 0\", ddd: \"1\\n6 0 0 0\" } }\n");
        assert!(
            e.starts_with("`ports[0].ingress[0].bpf`") && e.contains("exactly one"),
            "{e}"
        );
        let e =
            err("    ingress:\n      - { name: x, bpf: { bytecode: \"2,21 5 0 0,6 0 0 0\" } }\n");
        assert!(
            e.starts_with("`ports[0].ingress[0].bpf`")
                && e.contains("filter \"x\"")
                && e.contains("instruction 0")
                && e.contains("leaves the program"),
            "{e}"
        );
        let e = err("    egress:\n      - { name: x, bpf: { bytecode: \"2,7 0 0 0,6 0 0 0\" }, actions: [{ redirect: nowhere }] }\n");
        assert!(
            e.starts_with("`ports[0].egress[0].actions[0].redirect`") && e.contains("unknown port"),
            "{e}"
        );
        let e = err("    ingress:\n      - { name: x, bpf: { bytecode: \"1,6 0 0 0\", direct_action: true }, actions: [drop] }\n");
        assert!(e.starts_with("`ports[0].ingress[0].actions`"), "{e}");
        let e = err(
            "    ingress:\n      - { name: x, bpf: { bytecode: \"1,6 0 0 0\", redirect: b } }\n",
        );
        assert!(e.contains("only with direct_action"), "{e}");
        let e = err("    ingress:\n      - { name: x, bpf: { bytecode: \"1,6 0 0 0\", classid: \"zz\" } }\n");
        assert!(e.starts_with("`ports[0].ingress[0].bpf.classid`"), "{e}");
        let e = err("    ingress:\n      - { name: x, bpf: { bytecode: \"1,6 0 0 0\" } }\n      - { name: x, bpf: { bytecode: \"1,6 0 0 0\" } }\n");
        assert!(
            e.starts_with("`ports[0].ingress[1].name`") && e.contains("already"),
            "{e}"
        );
        let e = err("    ingress:\n      - { name: x }\n");
        assert!(e.contains("exactly one classifier is required"), "{e}");
        let e = err("    ingress:\n      - { name: x, bpf: { bytecode: \"2,6 0 0 0\" } }\n");
        assert!(
            e.starts_with("`ports[0].ingress[0].bpf.bytecode`") && e.contains("count says 2"),
            "{e}"
        );
        let e = err("    ingress:\n      - { name: x, bpf: { ddd_file: /nonexistent.ddd } }\n");
        assert!(
            e.starts_with("`ports[0].ingress[0].bpf.ddd_file`") && e.contains("cannot read"),
            "{e}"
        );
        let e = err("    ingress:\n      - { name: x, bpf: { bytecode: \"1,6 0 0 0\" }, actions: [explode] }\n");
        assert!(e.contains("ports[0].ingress[0].actions[0]"), "{e}");
        let e = err(
            "    ingress:\n      - { name: x, bpf: { bytecode: \"1,6 0 0 0\", engine: warp } }\n",
        );
        assert!(e.contains("interpreter"), "{e}");
    }

    #[test]
    fn mirred_actions_class_tables_and_groups_are_checked_with_their_key_paths() {
        let with_groups = |hooks: &str, groups: &str| {
            parse(&format!("{}{groups}", cfg(hooks)))
                .unwrap_err()
                .to_string()
        };
        let e = err("    ingress:\n      - { name: x, bpf: { filter: udp }, actions: [{ mirred: { action: mirror, port: b, group: g } }] }\n");
        assert!(
            e.starts_with("`ports[0].ingress[0].actions[0].mirred`")
                && e.contains("exactly one target"),
            "{e}"
        );
        let e = err("    ingress:\n      - { name: x, bpf: { filter: udp }, actions: [{ mirred: { action: redirect, group: g } }] }\n");
        assert!(
            e.starts_with("`ports[0].ingress[0].actions[0].mirred.group`")
                && e.contains("unknown port group"),
            "{e}"
        );
        let e = err("    ingress:\n      - { name: x, bpf: { filter: udp }, actions: [{ mirred: { action: copy, port: b } }] }\n");
        assert!(e.contains("mirror") && e.contains("redirect"), "{e}");
        let e = err("    ingress:\n      - { name: x, bpf: { filter: udp }, actions: [{ mirror: nowhere }] }\n");
        assert!(
            e.starts_with("`ports[0].ingress[0].actions[0].mirror`"),
            "{e}"
        );
        let e = err("    ingress:\n      - { name: x, bpf: { filter: udp }, classes: [{ classid: \"1:1\", actions: [drop] }, { classid: 65537, actions: [pass] }] }\n");
        assert!(
            e.starts_with("`ports[0].ingress[0].classes[1].classid`") && e.contains("already"),
            "{e}"
        );
        let e = err("    ingress:\n      - { name: x, bpf: { filter: udp }, classes: [{ classid: \"1:1\", actions: [{ redirect: zz }] }] }\n");
        assert!(
            e.starts_with("`ports[0].ingress[0].classes[0].actions[0].redirect`"),
            "{e}"
        );
        let e = with_groups("", "groups:\n  - { name: g, ports: [a, zz] }\n");
        assert!(
            e.starts_with("`groups[0].ports[1]`") && e.contains("unknown port"),
            "{e}"
        );
        let e = with_groups("", "groups:\n  - { name: g, ports: [a, a] }\n");
        assert!(
            e.starts_with("`groups[0].ports[1]`") && e.contains("twice"),
            "{e}"
        );
        let e = with_groups("", "groups:\n  - { name: g, ports: [] }\n");
        assert!(e.starts_with("`groups[0].ports`"), "{e}");
        let e = with_groups(
            "",
            "groups:\n  - { name: g, ports: [a] }\n  - { name: g, ports: [b] }\n",
        );
        assert!(e.starts_with("`groups[1].name`"), "{e}");
        // A valid one parses, and the group resolves.
        let c = parse(&format!(
            "{}groups:\n  - {{ name: g, ports: [a, b] }}\n",
            cfg("    ingress:\n      - { name: x, bpf: { filter: udp }, actions: [{ mirred: { direction: ingress, action: mirror, group: g } }, { mirror: b }, { set_priority: 3 }] }\n")
        ))
        .unwrap();
        assert_eq!(c.group_index("g"), Some(0));
    }

    #[test]
    fn classids_in_both_forms() {
        assert_eq!(Classid::Number(7).value(), Ok(7));
        assert_eq!(Classid::Text("1:10".into()).value(), Ok(0x10010));
        assert_eq!(Classid::Text("ffff:".into()).value(), Ok(0xffff_0000));
        assert_eq!(Classid::Text(":a".into()).value(), Ok(0xa));
        assert!(Classid::Text("1".into()).value().is_err());
        assert!(Classid::Text("10000:0".into()).value().is_err());
        assert!(Classid::Text("x:1".into()).value().is_err());
    }

    /// The chain member index and chain length of each filter of port a's ingress hook.
    fn chains(hooks: &str) -> Vec<Option<(usize, usize)>> {
        let c = parse(&cfg(hooks)).unwrap();
        let l = load(&c, &c.base_dir).unwrap();
        let gen = pipelines::pipeline::Generation {
            ports: vec![pipelines::pipeline::PortPipeline {
                ingress: build_hook(&l.ports[0].0, &c),
                ..Default::default()
            }],
            ..Default::default()
        };
        gen.validate().unwrap();
        gen.ports[0]
            .ingress
            .iter()
            .map(|f| f.fused.as_ref().map(|u| (u.index, u.chain.len())))
            .collect()
    }

    #[test]
    fn consecutive_jit_filters_are_fused_into_chains_that_fit_the_jit_page() {
        let bpf = |n: &str, extra: &str, actions: &str| {
            format!("      - {{ name: {n}, bpf: {{ filter: \"tcp dst port 443\"{extra} }}{actions} }}\n")
        };
        let drop = ", actions: [drop]";
        let mut hooks = String::from("    ingress:\n");
        for n in ["a", "b", "c"] {
            hooks += &bpf(n, "", drop);
        }
        hooks += &bpf("i", ", engine: interpreter", drop);
        hooks += &bpf("d", ", direct_action: true", "");
        hooks += &bpf("e", ", engine: jit", drop);
        hooks += "      - { name: fl, flow: { keys: [src] }, actions: [pass] }\n";
        hooks += &bpf("f", "", drop);
        assert_eq!(
            chains(&hooks),
            [
                Some((0, 3)),
                Some((1, 3)),
                Some((2, 3)),
                None,
                Some((0, 2)),
                Some((1, 2)),
                None,
                None,
            ]
        );
        // A long hook is split where the next program would overflow the JIT page; every filter
        // is in some chain.
        let mut hooks = String::from("    ingress:\n");
        for k in 0..60 {
            hooks += &bpf(&format!("p{k}"), "", drop);
        }
        let got = chains(&hooks);
        assert!(got.iter().all(|c| c.is_some()), "{got:?}");
        let starts = got.iter().filter(|c| matches!(c, Some((0, _)))).count();
        assert!(starts >= 2, "{got:?}");
    }
}
