//! The appliance's YAML configuration: schema, parsing with precise errors, and the semantic
//! checks that must pass before anything (DPDK included) starts.
//!
//! Every error names the key path (`ports[1].rx_queues`) and what is allowed. Unknown keys are
//! errors.
use crate::filters::FilterConfig;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

/// A configuration error: where, and what is wrong or allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, e.g. `ports[0].rx_queues` (empty for whole-document errors).
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// DPDK environment.
    #[serde(default)]
    pub eal: EalConfig,
    /// Packet buffer pool.
    #[serde(default)]
    pub mempool: MempoolConfig,
    /// Ethernet ports (at least one).
    pub ports: Vec<PortConfig>,
    /// The forwarding table: where packets received on a port go.
    #[serde(default)]
    pub forwarding: Vec<ForwardEntry>,
    /// Port groups that mirror and redirect actions can target as a whole (tc's shared blocks).
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// Worker lcore behaviour.
    #[serde(default)]
    pub workers: WorkersConfig,
    /// Prometheus metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// When to stop on its own (for captures and tests); by default it runs until signalled.
    #[serde(default)]
    pub run: RunConfig,
    /// The IPv6 flow-label table used by ports with `flowlabel: fill` or `override`.
    #[serde(default)]
    pub flowlabels: FlowLabelsConfig,
    /// The crypto device of the tunnel stage (used when tunnels or SAs are configured).
    #[serde(default)]
    pub crypto: crate::tunnels::CryptoConfig,
    /// IPsec security associations (see `ports[].tunnel`).
    #[serde(default)]
    pub sas: Vec<crate::tunnels::SaYaml>,
    /// A YAML file mapping SA names to `{key, auth_key}`, so keys can live apart from the
    /// configuration (relative to the configuration's directory).
    #[serde(default)]
    pub sa_keys_file: Option<String>,
    /// Directory of the configuration file: relative paths in it (`ddd_file`) start here.
    #[serde(skip)]
    pub base_dir: std::path::PathBuf,
}

/// DPDK EAL settings. The appliance builds the EAL arguments from these.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EalConfig {
    /// Lcores as EAL's `-l` takes them: a list of ids and ranges, e.g. "0-3" or "0,2,4"; or as
    /// `--lcores` takes lcore@cpu pairs, e.g. "0@0,1@1,2@1". The first is the main lcore
    /// (control plane); every other one runs a worker.
    pub lcores: String,
    /// Memory to reserve in MiB (`-m`); required with `no_huge`.
    pub memory_mb: Option<u32>,
    /// Run without hugepages (`--no-huge`): for virtual devices and tests, not for speed.
    pub no_huge: bool,
    /// Do not scan the PCI bus (`--no-pci`): for virtual devices only.
    pub no_pci: bool,
    /// Prefix of EAL's runtime files (`--file-prefix`); default `appliance-<pid>`, so several
    /// instances never collide.
    pub file_prefix: Option<String>,
    /// EAL log level (`--log-level`): emergency, alert, critical, error, warning, notice,
    /// info or debug.
    pub log_level: String,
    /// Extra directories or files of PMD drivers to load (`-d`), beyond the system's driver
    /// directory that EAL loads by itself.
    pub driver_paths: Vec<String>,
    /// Crypto (or other) virtual devices to create (`--vdev`), e.g. "crypto_aesni_mb0".
    pub vdevs: Vec<String>,
    /// Further EAL arguments, passed as they are, after the generated ones.
    pub extra_args: Vec<String>,
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig {
            lcores: "0-1".into(),
            memory_mb: None,
            no_huge: false,
            no_pci: false,
            file_prefix: None,
            log_level: "notice".into(),
            driver_paths: Vec::new(),
            vdevs: Vec::new(),
            extra_args: Vec::new(),
        }
    }
}

/// The packet buffer pool (one, shared by every port).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolConfig {
    /// Number of mbufs (best as 2^n - 1).
    pub mbufs: u32,
    /// Per-lcore cache size (at most 512 and at most mbufs / 1.5).
    pub cache: u32,
    /// Bytes per buffer including the 128-byte headroom; 2176 fits a 1518-byte frame plus
    /// headroom.
    pub data_room: u16,
    /// Buffers for mirror copies: indirect mbufs without a data room, which share the original's
    /// bytes (a copy costs one of these, never a byte copy).
    pub clones: u32,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            mbufs: 16383,
            cache: 256,
            data_room: 2176,
            clones: 8191,
        }
    }
}

/// One Ethernet port.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Name used everywhere else in the configuration, in metrics and in logs.
    pub name: String,
    /// The DPDK device: a PCI address ("0000:3b:00.0") or a virtual device name ("net_pcap0",
    /// "net_null0", "net_ring0", "net_tap0", "net_af_packet0"). Absent for a tunnel.
    #[serde(default)]
    pub device: String,
    /// Makes the port a VTI (route-based IPsec tunnel) instead of an Ethernet device.
    #[serde(default)]
    pub tunnel: Option<crate::tunnels::TunnelConfig>,
    /// Device arguments, e.g. "rx_pcap=in.pcap,tx_pcap=out.pcap" for net_pcap.
    #[serde(default)]
    pub args: Option<String>,
    /// Receive queues, spread over workers; RSS distributes flows when more than one.
    #[serde(default = "one")]
    pub rx_queues: u16,
    /// Receive descriptors per queue.
    #[serde(default = "default_desc")]
    pub rx_desc: u16,
    /// Transmit descriptors per queue.
    #[serde(default = "default_desc")]
    pub tx_desc: u16,
    /// Receive every frame regardless of its destination MAC.
    #[serde(default = "yes")]
    pub promiscuous: bool,
    /// MTU to set; the device default when absent.
    #[serde(default)]
    pub mtu: Option<u16>,
    /// What is checked on received frames: `full` (Ethernet, IP and transport headers; the
    /// default) or `l2` (Ethernet framing only, for pure port-to-port forwarding; classifiers
    /// still see validated headers).
    #[serde(default)]
    pub validate: ValidateLevel,
    /// `up` (the default) or `down` (configured, not started).
    #[serde(default)]
    pub state: PortState,
    /// Filters run on received packets, by priority (see [`FilterConfig`]).
    #[serde(default)]
    pub ingress: Vec<FilterConfig>,
    /// Filters run on packets about to be sent.
    #[serde(default)]
    pub egress: Vec<FilterConfig>,
    /// IPv6 flow labels on packets this port sends: `off` (the default), `fill` (label packets
    /// whose label is zero) or `override` (label every IPv6 packet).
    #[serde(default)]
    pub flowlabel: FlowLabelModeConfig,
}

/// The `ports[].flowlabel` setting.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FlowLabelModeConfig {
    /// Untouched.
    #[default]
    Off,
    /// Zero labels get the flow's label.
    Fill,
    /// Every label becomes the flow's label.
    Override,
}

impl FlowLabelModeConfig {
    /// The pipeline's mode.
    pub fn mode(self) -> pipelines::flowlabel::LabelMode {
        use pipelines::flowlabel::LabelMode;
        match self {
            FlowLabelModeConfig::Off => LabelMode::Off,
            FlowLabelModeConfig::Fill => LabelMode::Fill,
            FlowLabelModeConfig::Override => LabelMode::Override,
        }
    }
}

/// The `flowlabels` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlowLabelsConfig {
    /// Live flows the table holds (default 4096, the kernel's limit; up to 16777216). Flows
    /// beyond it get a stateless label.
    pub capacity: usize,
    /// Seconds a flow's label lingers after its last packet (6..=max_linger_s).
    pub linger_s: f64,
    /// Longest linger allowed (default 150, the kernel's FL_MAX_LINGER).
    pub max_linger_s: f64,
    /// Garbage-collection period in milliseconds (10..=60000).
    pub gc_interval_ms: u64,
    /// Labels kept out of the dynamic pool for `flowlabel` actions.
    pub reserved: Vec<ReservedLabelConfig>,
}

impl Default for FlowLabelsConfig {
    fn default() -> Self {
        FlowLabelsConfig {
            capacity: pipelines::flowlabel::DEFAULT_CAPACITY,
            linger_s: 6.0,
            max_linger_s: 150.0,
            gc_interval_ms: 1000,
            reserved: Vec::new(),
        }
    }
}

/// One reserved label.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReservedLabelConfig {
    /// The label, 0x1..=0xfffff.
    pub label: u32,
    /// `exclusive` (the default: one filter or class pins it) or `shared`.
    #[serde(default)]
    pub share: ShareConfig,
}

/// `flowlabels.reserved[].share`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ShareConfig {
    /// One user.
    #[default]
    Exclusive,
    /// Any number of users.
    Shared,
}

/// The `ports[].validate` setting.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ValidateLevel {
    /// Validate every header the parser knows.
    #[default]
    Full,
    /// Ethernet framing only.
    L2,
}

fn one() -> u16 {
    1
}
fn default_desc() -> u16 {
    1024
}
fn yes() -> bool {
    true
}

/// A named group of ports.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Name that actions use (`mirred: { group: NAME }`).
    pub name: String,
    /// Member port names, in the order copies are sent.
    pub ports: Vec<String>,
}

/// The `ports[].state` setting.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    /// Started: polled, transmitting.
    #[default]
    Up,
    /// Configured but not started (administratively down): nothing is received from it;
    /// mirrors to it count overlimits, redirects to it drop.
    Down,
}

/// One forwarding-table entry: packets received on `from` go out of `to`, or are dropped.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardEntry {
    /// Receiving port name.
    pub from: String,
    /// Sending port name (exclusive with `action: drop`).
    #[serde(default)]
    pub to: Option<String>,
    /// `forward` (the default when `to` is given) or `drop`.
    #[serde(default)]
    pub action: Option<ForwardAction>,
}

/// The action of a forwarding entry.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ForwardAction {
    /// Send out of `to`.
    Forward,
    /// Drop, counted as `action_drop`.
    Drop,
}

/// Worker lcore behaviour.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// Longest time a partial transmit burst waits before it is sent, in microseconds
    /// (1..=100000).
    pub tx_drain_us: u32,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig { tx_drain_us: 100 }
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP server serving `/metrics`; loopback by default. `null` disables it.
    pub listen: Option<String>,
    /// Whether `POST /reload` on that address re-reads the configuration (SIGHUP always does);
    /// `false` answers 403.
    pub reload: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Some("127.0.0.1:9091".into()),
            reload: true,
        }
    }
}

/// Self-termination conditions.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Stop once no packet has been received for this many milliseconds (after the first
    /// packet, or after start when none ever arrives). For finite inputs such as pcap files.
    pub exit_when_idle_ms: Option<u64>,
    /// Stop after this many seconds.
    pub duration_s: Option<f64>,
    /// Look at the configuration file every this many seconds and reload when its content
    /// changed (as SIGHUP would), e.g. a Kubernetes ConfigMap updated in place. Absent: no
    /// watch.
    pub watch_config_s: Option<f64>,
}

/// Allowed periods of `run.watch_config_s`, in seconds.
pub const WATCH_CONFIG_S: std::ops::RangeInclusive<f64> = 0.1..=3600.0;

/// True for `DDDD:BB:DD.F` or `BB:DD.F` PCI addresses.
pub fn is_pci_address(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = s.split(':').collect();
    let (bus, devfn) = match parts.as_slice() {
        [d, b, df] if hex(d, 4) => (*b, *df),
        [b, df] => (*b, *df),
        _ => return false,
    };
    match devfn.split_once('.') {
        Some((dev, f)) => {
            hex(bus, 2) && hex(dev, 2) && f.len() == 1 && matches!(f.as_bytes()[0], b'0'..=b'7')
        }
        None => false,
    }
}

const LOG_LEVELS: &[&str] = &[
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "info",
    "debug",
];
/// Virtual-device drivers whose ports this appliance is tested with.
const KNOWN_VDEV_DRIVERS: &[&str] = &[
    "net_pcap",
    "net_null",
    "net_ring",
    "net_tap",
    "net_af_packet",
    "net_memif",
    "net_vhost",
    "net_virtio_user",
];

/// Parses an EAL lcore list into ascending, distinct lcore ids: `-l` syntax ("0-3", "0,2,4",
/// "1,3-5"), or `--lcores` syntax mapping lcores to CPUs ("0@0,1@1,2@1": lcores 1 and 2 both
/// run on CPU 1).
pub fn parse_lcores(s: &str) -> Result<Vec<u32>, String> {
    let mut out = BTreeSet::new();
    if s.trim().is_empty() {
        return Err("empty; give lcore ids and ranges such as \"0-1\" or \"0,2,4\", or lcore@cpu pairs such as \"0@0,1@1,2@1\"".into());
    }
    for part in s.split(',') {
        let part = match part.trim().split_once('@') {
            Some((lcore, cpu)) => {
                cpu.trim().parse::<u32>().map_err(|_| {
                    format!("{part:?}: the CPU after '@' must be a single CPU number")
                })?;
                lcore.trim()
            }
            None => part.trim(),
        };
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| n < 128)
                .ok_or_else(|| format!("{t:?} is not an lcore id (0..=127)"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("range {part:?} runs backwards"));
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(num(part)?);
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_text(path, &read(path)?)
}

/// The bytes of the configuration file at `path`.
pub fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        ConfigError::at(
            "",
            format!("cannot read config file {}: {e}", path.display()),
        )
    })
}

/// Parses and validates `bytes` read from `path` (relative paths in it start at its
/// directory).
pub fn load_text(path: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ConfigError::at(
            "",
            format!("config file {} is not UTF-8: {e}", path.display()),
        )
    })?;
    let mut cfg = parse_unvalidated(text)?;
    cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    cfg.validate()?;
    Ok(cfg)
}

/// Parses and validates configuration text (relative paths start at the working directory).
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let cfg = parse_unvalidated(text)?;
    cfg.validate()?;
    Ok(cfg)
}

fn parse_unvalidated(text: &str) -> Result<Config, ConfigError> {
    serde_saphyr::from_str(text).map_err(|direct| describe_parse_error(text, &direct.to_string()))
}

/// Builds the error for a document that did not deserialize: the key path (found by a second
/// pass through serde_path_to_error) plus the parser's line and column.
fn describe_parse_error(text: &str, direct: &str) -> ConfigError {
    // First line of the parser's message, e.g. "error: line 3 column 16: invalid u16".
    let first = direct
        .lines()
        .next()
        .unwrap_or(direct)
        .trim_start_matches("error: ")
        .to_owned();
    let value: serde_json::Value = match serde_saphyr::from_str(text) {
        Ok(v) => v,
        Err(_) => return ConfigError::at("", format!("YAML syntax: {first}")),
    };
    match serde_path_to_error::deserialize::<_, Config>(&value) {
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let location = first.split(": ").next().unwrap_or("");
            ConfigError::at(path, format!("{} ({location})", e.inner()))
        }
        Ok(_) => ConfigError::at("", first),
    }
}

/// Checks that `name` is letters, digits, '-' and '_' only, not empty, and not yet in `seen`
/// (names of `what`s); `at` is its key path.
fn unique_name<'a>(
    seen: &mut BTreeSet<&'a str>,
    name: &'a str,
    what: &str,
    at: &str,
) -> Result<(), ConfigError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ConfigError::at(
            at,
            format!("{name:?}: letters, digits, '-' and '_' only, not empty"),
        ));
    }
    if !seen.insert(name) {
        return Err(ConfigError::at(
            at,
            format!("{name:?} is already the name of another {what}"),
        ));
    }
    Ok(())
}

impl Config {
    /// Semantic checks beyond types: references, ranges, sizes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = &self.eal;
        let lcores = parse_lcores(&e.lcores).map_err(|m| ConfigError::at("eal.lcores", m))?;
        if lcores.len() < 2 {
            return Err(ConfigError::at(
                "eal.lcores",
                format!("{:?} names {} lcore; at least 2 are needed (the first for control, the rest for workers)", e.lcores, lcores.len()),
            ));
        }
        if e.no_huge && e.memory_mb.is_none() {
            return Err(ConfigError::at(
                "eal.memory_mb",
                "required with no_huge: true (e.g. 1024)",
            ));
        }
        if let Some(m) = e.memory_mb {
            if !(64..=1 << 20).contains(&m) {
                return Err(ConfigError::at(
                    "eal.memory_mb",
                    format!("{m}: allowed 64..=1048576 MiB"),
                ));
            }
        }
        if !LOG_LEVELS.contains(&e.log_level.as_str()) {
            return Err(ConfigError::at(
                "eal.log_level",
                format!("{:?}: allowed {}", e.log_level, LOG_LEVELS.join(", ")),
            ));
        }
        if let Some(p) = &e.file_prefix {
            if p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError::at(
                    "eal.file_prefix",
                    format!("{p:?}: letters, digits, '-' and '_' only"),
                ));
            }
        }
        for (i, a) in e
            .extra_args
            .iter()
            .chain(&e.vdevs)
            .chain(&e.driver_paths)
            .enumerate()
        {
            if a.contains('\0') {
                return Err(ConfigError::at(
                    format!("eal (argument {i})"),
                    "contains a NUL byte",
                ));
            }
        }

        let m = &self.mempool;
        if !(1023..=(1 << 26)).contains(&m.mbufs) {
            return Err(ConfigError::at(
                "mempool.mbufs",
                format!("{}: allowed 1023..=67108864", m.mbufs),
            ));
        }
        if m.cache > 512 || u64::from(m.cache) * 3 > u64::from(m.mbufs) * 2 {
            return Err(ConfigError::at(
                "mempool.cache",
                format!("{}: allowed 0..=512 and at most mbufs / 1.5", m.cache),
            ));
        }
        if !(256 + 128..=u16::MAX).contains(&m.data_room) {
            return Err(ConfigError::at(
                "mempool.data_room",
                format!(
                    "{}: allowed 384..=65535 (128 bytes are headroom)",
                    m.data_room
                ),
            ));
        }

        if !(1023..=(1 << 26)).contains(&m.clones) {
            return Err(ConfigError::at(
                "mempool.clones",
                format!("{}: allowed 1023..=67108864", m.clones),
            ));
        }

        if self.ports.is_empty() {
            return Err(ConfigError::at("ports", "at least one port is required"));
        }
        let mut names = BTreeSet::new();
        let mut devices = BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let at = |k: &str| format!("ports[{i}].{k}");
            unique_name(&mut names, &p.name, "port", &at("name"))?;
            if p.tunnel.is_some() {
                if !p.device.is_empty() || p.args.is_some() {
                    return Err(ConfigError::at(
                        at("device"),
                        "a tunnel port has no device or args (it is virtual: its packets leave by tunnel.underlay)",
                    ));
                }
                continue;
            }
            if p.device.is_empty() {
                return Err(ConfigError::at(
                    at("device"),
                    "required (a PCI address or a virtual device name), or give the port a `tunnel`",
                ));
            }
            if !devices.insert(p.device.as_str()) {
                return Err(ConfigError::at(
                    at("device"),
                    format!("{:?} is already used by another port", p.device),
                ));
            }
            if !is_pci_address(&p.device) {
                let ok = KNOWN_VDEV_DRIVERS.iter().any(|d| {
                    p.device.strip_prefix(d).is_some_and(|rest| {
                        !rest.is_empty()
                            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    })
                });
                if !ok {
                    return Err(ConfigError::at(
                        at("device"),
                        format!(
                            "{:?}: a PCI address (0000:3b:00.0) or a virtual device named <driver><id> with driver one of {}",
                            p.device,
                            KNOWN_VDEV_DRIVERS.join(", ")
                        ),
                    ));
                }
            }
            if let Some(a) = &p.args {
                if a.contains('\0') || a.contains(' ') {
                    return Err(ConfigError::at(
                        at("args"),
                        "must not contain spaces or NUL bytes (key=value pairs joined by ',')",
                    ));
                }
            }
            if !(1..=128).contains(&p.rx_queues) {
                return Err(ConfigError::at(
                    at("rx_queues"),
                    format!("{}: allowed 1..=128", p.rx_queues),
                ));
            }
            for (k, v) in [("rx_desc", p.rx_desc), ("tx_desc", p.tx_desc)] {
                if !(32..=16384).contains(&v) {
                    return Err(ConfigError::at(at(k), format!("{v}: allowed 32..=16384")));
                }
            }
            if let Some(mtu) = p.mtu {
                if !(68..=9600).contains(&mtu) {
                    return Err(ConfigError::at(
                        at("mtu"),
                        format!("{mtu}: allowed 68..=9600"),
                    ));
                }
            }
        }

        let mut group_names = BTreeSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            let at = |k: &str| format!("groups[{i}].{k}");
            unique_name(&mut group_names, &g.name, "group", &at("name"))?;
            if g.ports.is_empty() {
                return Err(ConfigError::at(
                    at("ports"),
                    "at least one member port is required",
                ));
            }
            let mut members = BTreeSet::new();
            for (j, m) in g.ports.iter().enumerate() {
                if !names.contains(m.as_str()) {
                    return Err(ConfigError::at(
                        format!("groups[{i}].ports[{j}]"),
                        format!(
                            "unknown port {m:?}; ports are: {}",
                            self.ports
                                .iter()
                                .map(|p| p.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                if !members.insert(m.as_str()) {
                    return Err(ConfigError::at(
                        format!("groups[{i}].ports[{j}]"),
                        format!("{m:?} is listed twice"),
                    ));
                }
            }
        }

        let mut seen_from = BTreeSet::new();
        for (i, f) in self.forwarding.iter().enumerate() {
            let at = |k: &str| format!("forwarding[{i}].{k}");
            let known = |n: &str| names.contains(n);
            let list = || {
                self.ports
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if !known(&f.from) {
                return Err(ConfigError::at(
                    at("from"),
                    format!("unknown port {:?}; ports are: {}", f.from, list()),
                ));
            }
            if !seen_from.insert(f.from.as_str()) {
                return Err(ConfigError::at(
                    at("from"),
                    format!("port {:?} already has a forwarding entry", f.from),
                ));
            }
            match (f.action.unwrap_or(ForwardAction::Forward), &f.to) {
                (ForwardAction::Forward, Some(to)) if !known(to) => {
                    return Err(ConfigError::at(
                        at("to"),
                        format!("unknown port {to:?}; ports are: {}", list()),
                    ));
                }
                (ForwardAction::Forward, Some(_)) => {}
                (ForwardAction::Forward, None) => {
                    return Err(ConfigError::at(at("to"), "required unless `action: drop`"));
                }
                (ForwardAction::Drop, Some(_)) => {
                    return Err(ConfigError::at(at("to"), "not allowed with `action: drop`"));
                }
                (ForwardAction::Drop, None) => {}
            }
        }

        if !(1..=100_000).contains(&self.workers.tx_drain_us) {
            return Err(ConfigError::at(
                "workers.tx_drain_us",
                format!("{}: allowed 1..=100000", self.workers.tx_drain_us),
            ));
        }
        if let Some(l) = &self.metrics.listen {
            l.parse::<SocketAddr>()
                .map_err(|_| ConfigError::at("metrics.listen", format!("{l:?}: an address:port such as 127.0.0.1:9091 or [::1]:9091, or null to disable")))?;
        }
        if let Some(d) = self.run.duration_s {
            if !(d.is_finite() && d > 0.0) {
                return Err(ConfigError::at(
                    "run.duration_s",
                    format!("{d}: a positive number of seconds"),
                ));
            }
        }
        if let Some(s) = self.run.watch_config_s {
            if !(s.is_finite() && WATCH_CONFIG_S.contains(&s)) {
                return Err(ConfigError::at(
                    "run.watch_config_s",
                    format!(
                        "{s}: seconds between looks at the configuration file, {}..={}, or \
                         absent to not watch it",
                        WATCH_CONFIG_S.start(),
                        WATCH_CONFIG_S.end()
                    ),
                ));
            }
        }
        if self.run.exit_when_idle_ms == Some(0) {
            return Err(ConfigError::at(
                "run.exit_when_idle_ms",
                "0: a positive number of milliseconds, or absent",
            ));
        }

        // Enough mbufs for every descriptor ring, every lcore cache and the bursts in flight,
        // or the appliance would start and then starve.
        let workers = (lcores.len() - 1) as u64;
        let rings: u64 = self
            .ports
            .iter()
            .map(|p| u64::from(p.rx_queues) * u64::from(p.rx_desc) + workers * u64::from(p.tx_desc))
            .sum();
        let need =
            rings + (workers + 1) * (u64::from(m.cache) + 32 * (self.ports.len() as u64 + 1));
        if u64::from(m.mbufs) < need {
            return Err(ConfigError::at(
                "mempool.mbufs",
                format!(
                    "{} is too few: the port rings, lcore caches and bursts need at least {need}",
                    m.mbufs
                ),
            ));
        }
        // Filters last: loading programs (and compiling pcap-filter text) needs everything
        // above to hold.
        crate::filters::load(self, &self.base_dir)?;
        self.flowlabel_table_config()?;
        let c = &self.crypto;
        if !(64..=65536).contains(&c.descriptors) || !c.descriptors.is_power_of_two() {
            return Err(ConfigError::at(
                "crypto.descriptors",
                format!("{}: a power of two in 64..=65536", c.descriptors),
            ));
        }
        if !(64..=1 << 20).contains(&c.ops) {
            return Err(ConfigError::at(
                "crypto.ops",
                format!("{}: allowed 64..=1048576", c.ops),
            ));
        }
        // Tunnels and SAs: every check (keys included) before anything starts.
        crate::tunnels::build_ipsec(self)?;
        Ok(())
    }

    /// True when some port labels IPv6 flows (the table exists only then).
    pub fn labels_flows(&self) -> bool {
        self.ports
            .iter()
            .any(|p| p.flowlabel != FlowLabelModeConfig::Off)
    }

    /// The flow-label table's parameters (`None` when no port labels), checked: ranges,
    /// reservations, and every `flowlabel` action against them.
    pub fn flowlabel_table_config(
        &self,
    ) -> Result<Option<pipelines::flowlabel::FlowLabelConfig>, ConfigError> {
        use pipelines::flowlabel::{FlowLabelConfig, Reservation, Share};
        let f = &self.flowlabels;
        let pins = crate::filters::pinned_labels(self);
        if !self.labels_flows() {
            if let Some((at, _)) = pins.first() {
                return Err(ConfigError::at(
                    at.clone(),
                    "no port labels IPv6 flows: set `flowlabel: fill` or `override` on a port",
                ));
            }
            return Ok(None);
        }
        if !(10..=60_000).contains(&f.gc_interval_ms) {
            return Err(ConfigError::at(
                "flowlabels.gc_interval_ms",
                format!("{}: allowed 10..=60000", f.gc_interval_ms),
            ));
        }
        for (k, v) in [("linger_s", f.linger_s), ("max_linger_s", f.max_linger_s)] {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                return Err(ConfigError::at(
                    format!("flowlabels.{k}"),
                    format!("{v}: a number of seconds in (0, 86400]"),
                ));
            }
        }
        for (at, l) in &pins {
            if !f.reserved.iter().any(|r| r.label == *l) {
                return Err(ConfigError::at(
                    at.clone(),
                    format!(
                        "{l:#07x} is not reserved: list it under `flowlabels.reserved` so that no \
                         flow is ever given it"
                    ),
                ));
            }
        }
        let reservations = f
            .reserved
            .iter()
            .enumerate()
            .map(|(i, r)| {
                // The first reservation of a label counts every action pinning it.
                let first = f.reserved.iter().position(|o| o.label == r.label) == Some(i);
                let users = if first {
                    pins.iter().filter(|(_, l)| *l == r.label).count() as u32
                } else {
                    0
                };
                Reservation {
                    label: r.label,
                    share: match r.share {
                        ShareConfig::Exclusive => Share::Exclusive,
                        ShareConfig::Shared => Share::Shared,
                    },
                    users,
                }
            })
            .collect();
        let c = FlowLabelConfig {
            capacity: f.capacity,
            linger_ms: (f.linger_s * 1000.0).round() as u64,
            max_linger_ms: (f.max_linger_s * 1000.0).round() as u64,
            reservations,
        };
        c.validate().map_err(|e| ConfigError::at("", e.0))?;
        Ok(Some(c))
    }

    /// Worker lcore ids (every configured lcore but the first).
    pub fn worker_lcores(&self) -> Vec<u32> {
        parse_lcores(&self.eal.lcores)
            .map(|l| l[1..].to_vec())
            .unwrap_or_default()
    }

    /// Index of the port named `name`.
    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }

    /// Index of the port group called `name`.
    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.name == name)
    }

    /// The EAL arguments this configuration stands for (without `argv[0]`).
    pub fn eal_args(&self) -> Vec<String> {
        let e = &self.eal;
        let flag = if e.lcores.contains('@') {
            "--lcores"
        } else {
            "-l"
        };
        let mut a = vec![flag.to_owned(), e.lcores.clone()];
        if let Some(m) = e.memory_mb {
            a.extend(["-m".to_owned(), m.to_string()]);
        }
        if e.no_huge {
            a.push("--no-huge".into());
        }
        if e.no_pci {
            a.push("--no-pci".into());
        }
        // No shared runtime config: this process is always a primary with its own files.
        a.push("--no-shconf".into());
        a.push("--file-prefix".into());
        a.push(
            e.file_prefix
                .clone()
                .unwrap_or_else(|| format!("appliance-{}", std::process::id())),
        );
        a.push(format!("--log-level={}", e.log_level));
        for d in &e.driver_paths {
            a.extend(["-d".to_owned(), d.clone()]);
        }
        for p in self.ports.iter().filter(|p| p.tunnel.is_none()) {
            let dev = match &p.args {
                Some(args) if !args.is_empty() => format!("{},{}", p.device, args),
                _ => p.device.clone(),
            };
            if is_pci_address(&p.device) {
                a.extend(["-a".to_owned(), dev]);
            } else {
                a.extend(["--vdev".to_owned(), dev]);
            }
        }
        for v in &e.vdevs {
            a.extend(["--vdev".to_owned(), v.clone()]);
        }
        // The tunnels' crypto device, when it is a virtual one not listed already.
        let c = &self.crypto;
        if self.has_ipsec()
            && ["crypto_aesni_mb", "crypto_openssl", "crypto_null"]
                .iter()
                .any(|d| c.device.starts_with(d))
            && !e
                .vdevs
                .iter()
                .any(|v| v.split(',').next() == Some(c.device.as_str()))
        {
            let dev = match &c.args {
                Some(args) if !args.is_empty() => format!("{},{}", c.device, args),
                _ => c.device.clone(),
            };
            a.extend(["--vdev".to_owned(), dev]);
        }
        a.extend(e.extra_args.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str =
        "eal: { no_huge: true, memory_mb: 256 }\nports:\n  - { name: a, device: net_null0 }\n";

    #[test]
    fn lcore_lists_in_both_eal_syntaxes() {
        assert_eq!(parse_lcores("0-3"), Ok(vec![0, 1, 2, 3]));
        assert_eq!(parse_lcores("4,0,2-3,2"), Ok(vec![0, 2, 3, 4]));
        assert_eq!(parse_lcores("0@0,1@1,2@1"), Ok(vec![0, 1, 2]));
        assert!(parse_lcores("3-1").unwrap_err().contains("backwards"));
        assert!(parse_lcores("x").is_err());
        assert!(parse_lcores("200").is_err());
        assert!(parse_lcores("1@(0-1)").is_err());
        assert!(parse_lcores("").is_err());
    }

    #[test]
    fn eal_arguments_follow_the_configuration() {
        let mut c = parse(MIN).unwrap();
        c.eal.file_prefix = Some("t1".into());
        c.ports[0].args = Some("size=64".into());
        let a = c.eal_args();
        let joined = a.join(" ");
        assert!(
            joined.starts_with("-l 0-1 -m 256 --no-huge --no-shconf --file-prefix t1"),
            "{joined}"
        );
        assert!(joined.contains("--vdev net_null0,size=64"), "{joined}");
        c.eal.lcores = "0@0,1@1,2@1".into();
        assert_eq!(
            c.eal_args()[..2],
            ["--lcores".to_owned(), "0@0,1@1,2@1".to_owned()]
        );
        assert_eq!(c.worker_lcores(), vec![1, 2]);
        c.ports[0].device = "3b:00.0".into();
        assert!(c.eal_args().join(" ").contains("-a 3b:00.0,size=64"));
    }

    #[test]
    fn pci_addresses() {
        for ok in ["0000:3b:00.0", "3b:00.1", "ffff:ff:1f.7"] {
            assert!(is_pci_address(ok), "{ok}");
        }
        for bad in [
            "net_pcap0",
            "3b:00",
            "3b:00.8",
            "000:3b:00.0",
            "eth0",
            "3b:0g.0",
        ] {
            assert!(!is_pci_address(bad), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_key_and_what_is_allowed() {
        let err = |y: &str| parse(y).unwrap_err().to_string();
        assert!(err(&format!("{MIN}bogus: 1\n")).contains("unknown field `bogus`"));
        let e = err("eal: { no_huge: true }\nports:\n  - { name: a, device: net_null0 }\n");
        assert!(e.starts_with("`eal.memory_mb`"), "{e}");
        let e = err(&MIN.replace("net_null0 }", "net_null0, rx_queues: 0 }"));
        assert!(
            e.starts_with("`ports[0].rx_queues`") && e.contains("1..=128"),
            "{e}"
        );
        let e = err(&format!("{MIN}forwarding:\n  - {{ from: a }}\n"));
        assert!(
            e.starts_with("`forwarding[0].to`") && e.contains("action: drop"),
            "{e}"
        );
        let e = err(&format!(
            "{MIN}forwarding:\n  - {{ from: a, to: a }}\n  - {{ from: a, action: drop }}\n"
        ));
        assert!(
            e.starts_with("`forwarding[1].from`") && e.contains("already"),
            "{e}"
        );
        let e = err(&MIN.replace("net_null0 }", "net_null0, validate: deep }"));
        assert!(
            e.starts_with("`ports[0].validate`") && e.contains("full") && e.contains("l2"),
            "{e}"
        );
        let e = err(&MIN.replace("eal: {", "eal: { lcores: \"0\","));
        assert!(
            e.starts_with("`eal.lcores`") && e.contains("at least 2"),
            "{e}"
        );
        let e = err(&format!("{MIN}workers: {{ tx_drain_us: 0 }}\n"));
        assert!(e.starts_with("`workers.tx_drain_us`"), "{e}");
        let e = err(&format!("{MIN}run: {{ duration_s: -1 }}\n"));
        assert!(e.starts_with("`run.duration_s`"), "{e}");
        let e = err("ports: 5\n");
        assert!(e.starts_with("`ports`"), "{e}");
    }

    #[test]
    fn the_demo_configuration_is_valid() {
        let c = parse(include_str!("../../deploy/examples/demo.yaml")).unwrap();
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.worker_lcores(), vec![1]);
    }

    #[test]
    fn the_admin_address_is_loopback_unless_configured_otherwise() {
        let c = parse(MIN).unwrap();
        let a: SocketAddr = c.metrics.listen.as_deref().unwrap().parse().unwrap();
        assert!(a.ip().is_loopback(), "default {a}");
        let demo = parse(include_str!("../../deploy/examples/demo.yaml")).unwrap();
        let a: SocketAddr = demo.metrics.listen.as_deref().unwrap().parse().unwrap();
        assert!(a.ip().is_loopback(), "demo {a}");
        // Anything else is written out in the file (or given with --metrics-listen).
        let c = parse(&format!("{MIN}metrics: {{ listen: \"0.0.0.0:9091\" }}\n")).unwrap();
        assert_eq!(c.metrics.listen.as_deref(), Some("0.0.0.0:9091"));
        let c = parse(&format!("{MIN}metrics: {{ listen: null }}\n")).unwrap();
        assert_eq!(c.metrics.listen, None);
        let e = parse(&format!("{MIN}metrics: {{ listen: \"all\" }}\n")).unwrap_err();
        assert!(e.to_string().contains("metrics.listen"), "{e}");
    }
}
