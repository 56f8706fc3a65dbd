//! Configuration of the tunnel stage: `ports[].tunnel` (a VTI is a port without a device),
//! `sas`, `crypto`, and the build of [`pipelines::ipsec::Ipsec`] from them. Keys are parsed
//! here, checked against their algorithm, and never printed ([`Secret`]).
use crate::config::{Config, ConfigError};
use pipelines::ipsec::esp::DfPolicy;
use pipelines::ipsec::{
    replay, Algorithm, Ipsec, Lifetime, Sa, SaConfig, SaDirection, SaKeys, Tunnel,
};
use pipelines::pipeline::PortIndex;
use serde::Deserialize;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A string that is never printed: key material.
#[derive(Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An integer written as a number or as a string (`0x1000`, `4096`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A YAML number.
    Int(u64),
    /// A string in decimal or `0x` hex.
    Str(String),
}

impl IntOrString {
    /// The value as written, for error messages.
    fn shown(&self) -> String {
        match self {
            IntOrString::Int(v) => v.to_string(),
            IntOrString::Str(v) => format!("{v:?}"),
        }
    }

    fn value(&self) -> Option<u64> {
        match self {
            IntOrString::Int(v) => Some(*v),
            IntOrString::Str(s) => {
                let s = s.trim();
                match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                    Some(h) => u64::from_str_radix(h, 16).ok(),
                    None => s.parse().ok(),
                }
            }
        }
    }
}

/// `ports[].tunnel`: the port is a VTI (Linux `ip link add NAME type vti local L remote R ikey
/// I okey O`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// Local endpoint (outer source); answered by ARP on the underlay port.
    pub local: Ipv4Addr,
    /// Remote endpoint (outer destination).
    pub remote: Ipv4Addr,
    /// Inbound key: inbound SAs delivering here carry it as their mark.
    #[serde(default)]
    pub ikey: u32,
    /// Outbound key: the mark of the outbound SA that encrypts for this tunnel.
    #[serde(default)]
    pub okey: u32,
    /// The Ethernet port ESP leaves by and arrives on.
    pub underlay: String,
    /// Largest inner packet (Linux's vti default 1480); the path MTU minus ESP's overhead
    /// lowers it further.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// The underlay's IP MTU toward the remote (default 1500, or the underlay port's `mtu`).
    #[serde(default)]
    pub underlay_mtu: Option<u32>,
    /// Next hop toward the remote (default: the remote, on-link).
    #[serde(default)]
    pub next_hop: Option<Ipv4Addr>,
    /// The next hop's MAC, if static (otherwise resolved by ARP).
    #[serde(default)]
    pub next_hop_mac: Option<String>,
    /// Outer DF bit: `inherit` (the default: from inner IPv4, set for IPv6), `set` or `clear`.
    #[serde(default)]
    pub df: DfConfig,
    /// Outer TTL.
    #[serde(default = "default_ttl")]
    pub ttl: u8,
    /// Source address of ICMPv6 packet-too-big errors (default: the link-local address derived
    /// from the underlay MAC).
    #[serde(default)]
    pub icmp_source6: Option<Ipv6Addr>,
    /// Ethernet destination and source put on decapsulated packets (default: the underlay
    /// port's MAC for both).
    #[serde(default)]
    pub decap_dst_mac: Option<String>,
    /// See `decap_dst_mac`.
    #[serde(default)]
    pub decap_src_mac: Option<String>,
}

fn default_mtu() -> u32 {
    1480
}
fn default_ttl() -> u8 {
    64
}

/// The outer DF policy.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DfConfig {
    /// From the inner packet.
    #[default]
    Inherit,
    /// Always.
    Set,
    /// Never.
    Clear,
}

/// `crypto`: the DPDK crypto device the tunnels use.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CryptoConfig {
    /// A device name: a virtual device to create (`crypto_aesni_mb0`, `crypto_openssl0`) or
    /// any device DPDK probed (QAT, mlx5 crypto) by name.
    pub device: String,
    /// Virtual device arguments.
    pub args: Option<String>,
    /// Descriptors per queue pair (one queue pair per worker).
    pub descriptors: u32,
    /// Crypto operations per worker: bounds the packets in flight in the device.
    pub ops: u32,
}

impl Default for CryptoConfig {
    fn default() -> Self {
        CryptoConfig {
            device: "crypto_aesni_mb0".into(),
            args: None,
            descriptors: 2048,
            ops: 8191,
        }
    }
}

/// `sas[]`: one security association (Linux `ip xfrm state add ... mode tunnel`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SaYaml {
    /// Name (default: the SPI in hex).
    #[serde(default)]
    pub name: Option<String>,
    /// SPI: 256..=2^32-1 (1..255 are reserved, RFC 4303 §2.1).
    pub spi: IntOrString,
    /// `in` or `out`.
    pub direction: SaDirectionConfig,
    /// Only `tunnel` (VTIs carry tunnel-mode SAs).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Outer source.
    pub src: Ipv4Addr,
    /// Outer destination.
    pub dst: Ipv4Addr,
    /// Mark (a tunnel's okey for outbound, its ikey for inbound).
    #[serde(default)]
    pub mark: u32,
    /// One of aes-gcm-128, aes-gcm-256, aes-cbc-128-hmac-sha256, aes-cbc-256-hmac-sha256.
    pub algorithm: String,
    /// Hex key (GCM: key then 4-byte salt). May instead come from `sa_keys_file`.
    #[serde(default)]
    pub key: Option<Secret>,
    /// Hex HMAC key (CBC algorithms: 32 bytes).
    #[serde(default)]
    pub auth_key: Option<Secret>,
    /// Anti-replay window in packets, 64..=4096 (inbound); 0 disables anti-replay (not with
    /// ESN, whose high half the window infers).
    #[serde(default = "default_window")]
    pub replay_window: u32,
    /// Extended (64-bit) sequence numbers.
    #[serde(default)]
    pub esn: bool,
    /// Hard lifetime.
    #[serde(default)]
    pub lifetime: LifetimeConfig,
    /// Sequence state to start from, for an SA moved from another gateway or a restarted
    /// process (Linux `replay-oseq` / `replay-seq`): outbound, the last number sent; inbound,
    /// the highest number received. Default 0 (a new SA). At most 2^32-1 without ESN.
    #[serde(default)]
    pub seq: Option<IntOrString>,
}

fn default_mode() -> String {
    "tunnel".into()
}
fn default_window() -> u32 {
    64
}

/// `in` / `out`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SaDirectionConfig {
    /// Inbound.
    In,
    /// Outbound.
    Out,
}

/// `sas[].lifetime`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct LifetimeConfig {
    /// Hard packet limit.
    #[serde(default)]
    pub packets: Option<u64>,
    /// Hard byte limit (inner bytes).
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Soft packet limit: logged and exported once reached (time to replace the SA); at most
    /// the hard limit.
    #[serde(default)]
    pub soft_packets: Option<u64>,
    /// Soft byte limit.
    #[serde(default)]
    pub soft_bytes: Option<u64>,
}

/// An entry of `sa_keys_file`: keys by SA name.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct KeyFileEntry {
    key: Secret,
    #[serde(default)]
    auth_key: Option<Secret>,
}

/// A MAC address `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

fn hex_key(s: &Secret) -> Option<Vec<u8>> {
    let h = s.0.trim();
    let h = h
        .strip_prefix("0x")
        .or_else(|| h.strip_prefix("0X"))
        .unwrap_or(h);
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Config {
    /// Whether any tunnel or SA is configured (the crypto device is then opened).
    pub fn has_ipsec(&self) -> bool {
        !self.sas.is_empty() || self.ports.iter().any(|p| p.tunnel.is_some())
    }
}

/// The name an SA goes by: `name`, else its SPI in hex (`None` for an SPI that is no number).
fn sa_name(s: &SaYaml) -> Option<String> {
    s.name
        .clone()
        .or_else(|| s.spi.value().map(|spi| format!("{spi:#x}")))
}

/// What a reload does to the SAs and tunnels, by name (never keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaPlan {
    /// SAs kept exactly as they run.
    pub kept: Vec<String>,
    /// SAs kept with their live state, with another mark or lifetime.
    pub updated: Vec<String>,
    /// SAs with a new name.
    pub added: Vec<String>,
    /// SAs whose name stays but not the SA (SPI, keys, algorithm, endpoints, direction, ESN or
    /// replay window): a new SA, starting afresh, replaces the running one.
    pub rekeyed: Vec<String>,
    /// Running SAs the configuration no longer has.
    pub removed: Vec<String>,
    /// Tunnels configured otherwise than they run.
    pub tunnels_changed: Vec<String>,
    /// Inbound (SPI, destination) pairs of running SAs that are gone (removed or rekeyed) and
    /// that no new inbound SA takes.
    pub gone_inbound: Vec<(u32, [u8; 4])>,
}

impl SaPlan {
    /// Whether the SAs and tunnels stay exactly as they run (the running table can stay).
    pub fn unchanged(&self) -> bool {
        self.updated.is_empty()
            && self.added.is_empty()
            && self.rekeyed.is_empty()
            && self.removed.is_empty()
            && self.tunnels_changed.is_empty()
    }

    /// "SAs: 2 kept, 1 added (b), 1 rekeyed (c), ..." for the reload's answer and log.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} kept", self.kept.len())];
        for (what, names) in [
            ("updated", &self.updated),
            ("added", &self.added),
            ("rekeyed", &self.rekeyed),
            ("removed", &self.removed),
        ] {
            if !names.is_empty() {
                parts.push(format!("{} {what} ({})", names.len(), names.join(", ")));
            }
        }
        let mut d = format!("SAs: {}", parts.join(", "));
        if !self.tunnels_changed.is_empty() {
            d.push_str(&format!(
                "; tunnels changed: {}",
                self.tunnels_changed.join(", ")
            ));
        }
        d
    }
}

/// Builds the tunnel stage's tables, with every check; `None` without tunnels and SAs.
pub fn build_ipsec(cfg: &Config) -> Result<Option<Ipsec>, ConfigError> {
    build_ipsec_reusing(cfg, None).map(|(ip, _)| ip)
}

/// [`build_ipsec`] for a reload of `running` (its configuration and table): an SA that stays
/// the same SA ([`SaConfig::same_sa`]: name, SPI, direction, endpoints, algorithm, keys, ESN,
/// replay window) carries on with the running SA's live state (sequence numbers, replay
/// window, counters, lifetime flags), whatever its mark and lifetimes become; any other SA
/// starts afresh. A tunnel whose path stays (underlay, endpoints, next hop) keeps what it
/// learnt. Returns the table (`Some`, possibly empty, whenever `running` has one) and what
/// changes. A kept SA's `seq` cannot change: it applies only when an SA is created.
pub fn build_ipsec_reusing(
    cfg: &Config,
    running: Option<(&Config, &Ipsec)>,
) -> Result<(Option<Ipsec>, SaPlan), ConfigError> {
    let mut plan = SaPlan::default();
    if !cfg.has_ipsec() && running.is_none() {
        return Ok((None, plan));
    }
    let lanes = cfg.worker_lcores().len().max(1);
    let file_keys: std::collections::BTreeMap<String, KeyFileEntry> = match &cfg.sa_keys_file {
        None => Default::default(),
        Some(f) => {
            let path = cfg.base_dir.join(f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::at("sa_keys_file", format!("{}: {e}", path.display())))?;
            serde_saphyr::from_str(&text).map_err(|_| {
                // The parser's message could quote a key: say where, not what.
                ConfigError::at(
                    "sa_keys_file",
                    format!(
                        "{}: not a map of SA name -> {{key, auth_key}} (contents not shown: they are keys)",
                        path.display()
                    ),
                )
            })?
        }
    };
    let mut sas = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in cfg.sas.iter().enumerate() {
        let at = |k: &str| format!("sas[{i}].{k}");
        let spi = s
            .spi
            .value()
            .filter(|v| (256..=u64::from(u32::MAX)).contains(v))
            .ok_or_else(|| {
                ConfigError::at(
                    at("spi"),
                    format!(
                        "{}: allowed 256..=4294967295 (0x100..=0xffffffff; 1..255 are reserved, RFC 4303 2.1)",
                        s.spi.shown()
                    ),
                )
            })? as u32;
        let name = s.name.clone().unwrap_or_else(|| format!("{spi:#x}"));
        if name.is_empty() || !names.insert(name.clone()) {
            return Err(ConfigError::at(
                at("name"),
                format!("{name:?}: empty or already the name of another SA"),
            ));
        }
        if s.mode != "tunnel" {
            return Err(ConfigError::at(
                at("mode"),
                format!("{:?}: only tunnel (a VTI carries tunnel-mode SAs)", s.mode),
            ));
        }
        let alg = Algorithm::parse(&s.algorithm).ok_or_else(|| {
            ConfigError::at(
                at("algorithm"),
                format!(
                    "{:?}: allowed {}",
                    s.algorithm,
                    Algorithm::ALL.map(|a| a.name()).join(", ")
                ),
            )
        })?;
        let from_file = file_keys.get(&name);
        let key = s
            .key
            .as_ref()
            .or(from_file.map(|k| &k.key))
            .ok_or_else(|| {
                ConfigError::at(
                    at("key"),
                    format!("missing (here or under {name:?} in sa_keys_file)"),
                )
            })?;
        let key = hex_key(key)
            .filter(|k| k.len() == alg.key_material_len())
            .ok_or_else(|| {
                ConfigError::at(
                    at("key"),
                    format!(
                        "must be {} hex bytes for {alg}{} (value not shown)",
                        alg.key_material_len(),
                        if alg.is_aead() {
                            " (AES key then 4-byte salt, RFC 4106)"
                        } else {
                            ""
                        }
                    ),
                )
            })?;
        let auth = match (
            alg.is_aead(),
            s.auth_key
                .as_ref()
                .or(from_file.and_then(|k| k.auth_key.as_ref())),
        ) {
            (true, None) => Vec::new(),
            (true, Some(_)) => {
                return Err(ConfigError::at(
                    at("auth_key"),
                    format!("not used by {alg} (AEAD)"),
                ))
            }
            (false, None) => {
                return Err(ConfigError::at(
                    at("auth_key"),
                    format!("required for {alg}: 32 hex bytes (HMAC-SHA-256, RFC 4868)"),
                ))
            }
            (false, Some(k)) => hex_key(k)
                .filter(|k| k.len() == alg.auth_key_len())
                .ok_or_else(|| {
                    ConfigError::at(
                        at("auth_key"),
                        format!("must be {} hex bytes (value not shown)", alg.auth_key_len()),
                    )
                })?,
        };
        let (cipher, salt) = if alg.is_aead() {
            let (k, s) = key.split_at(alg.key_len());
            (k.to_vec(), [s[0], s[1], s[2], s[3]])
        } else {
            (key, [0; 4])
        };
        if !(replay::MIN_WINDOW..=replay::MAX_WINDOW).contains(&s.replay_window)
            && (s.replay_window != 0 || s.esn)
        {
            return Err(ConfigError::at(
                at("replay_window"),
                format!(
                    "{}: allowed 64..=4096, or 0 (no anti-replay) without esn",
                    s.replay_window
                ),
            ));
        }
        let l = &s.lifetime;
        if [l.packets, l.bytes, l.soft_packets, l.soft_bytes].contains(&Some(0)) {
            return Err(ConfigError::at(at("lifetime"), "limits must be at least 1"));
        }
        for (soft, hard, key) in [
            (l.soft_packets, l.packets, "soft_packets"),
            (l.soft_bytes, l.bytes, "soft_bytes"),
        ] {
            if let (Some(sv), Some(hv)) = (soft, hard) {
                if sv > hv {
                    return Err(ConfigError::at(
                        at(&format!("lifetime.{key}")),
                        format!("{sv}: must not exceed the hard limit {hv}"),
                    ));
                }
            }
        }
        let sa_cfg = SaConfig {
            name: name.clone(),
            spi,
            direction: match s.direction {
                SaDirectionConfig::In => SaDirection::In,
                SaDirectionConfig::Out => SaDirection::Out,
            },
            src: s.src.octets(),
            dst: s.dst.octets(),
            mark: s.mark,
            algorithm: alg,
            keys: SaKeys { cipher, salt, auth },
            replay_window: s.replay_window,
            esn: s.esn,
            lifetime: Lifetime {
                packets: s.lifetime.packets,
                bytes: s.lifetime.bytes,
                soft_packets: s.lifetime.soft_packets,
                soft_bytes: s.lifetime.soft_bytes,
            },
        };
        let seq = match &s.seq {
            None => None,
            Some(v) => {
                let max = if s.esn {
                    u64::MAX >> 1
                } else {
                    u64::from(u32::MAX)
                };
                Some(v.value().filter(|&q| q <= max).ok_or_else(|| {
                    ConfigError::at(
                        at("seq"),
                        format!(
                            "{}: allowed 0..={max} ({})",
                            v.shown(),
                            if s.esn {
                                "ESN"
                            } else {
                                "32-bit numbers without esn: true"
                            }
                        ),
                    )
                })?)
            }
        };
        let same_name = running.and_then(|(rc, ip)| {
            let old = ip.sas.iter().find(|o| o.cfg.name == name)?;
            let yaml = rc.sas.iter().find(|y| sa_name(y).as_ref() == Some(&name));
            Some((old, yaml))
        });
        let kept = same_name
            .and_then(|(old, yaml)| Sa::keeping(sa_cfg.clone(), old).map(|k| (k, old, yaml)));
        let sa = match kept {
            Some((k, old, yaml)) => {
                let was = yaml.and_then(|y| y.seq.as_ref().map(|v| v.value()));
                if was != seq.map(Some) {
                    let now = match old.replay() {
                        Some(w) => w.top(),
                        None => old.seq_reserved(),
                    };
                    return Err(ConfigError::at(
                        at("seq"),
                        format!(
                            "SA {name:?} stays as it runs, with its sequence state (now {now});                              `seq` applies only when an SA is created: leave it as it was, or                              give the SA another SPI to start a new one"
                        ),
                    ));
                }
                if k.cfg == old.cfg {
                    plan.kept.push(name);
                } else {
                    plan.updated.push(name);
                }
                k
            }
            None => {
                if same_name.is_some() {
                    plan.rekeyed.push(name);
                } else if running.is_some() {
                    plan.added.push(name);
                }
                let sa = Sa::new(sa_cfg, lanes)
                    .ok_or_else(|| ConfigError::at(at("replay_window"), "invalid"))?;
                if let Some(q) = seq {
                    sa.restore_seq(q);
                }
                sa
            }
        };
        sas.push(sa);
    }
    if let Some((_, ip)) = running {
        for old in &ip.sas {
            let name = &old.cfg.name;
            if !sas.iter().any(|n| n.cfg.name == *name) {
                plan.removed.push(name.clone());
            }
            let continued = sas.iter().any(|n| n.shares_state_with(old));
            let taken = sas.iter().any(|n| {
                n.cfg.direction == SaDirection::In
                    && (n.cfg.spi, n.cfg.dst) == (old.cfg.spi, old.cfg.dst)
            });
            if old.cfg.direction == SaDirection::In && !continued && !taken {
                plan.gone_inbound.push((old.cfg.spi, old.cfg.dst));
            }
        }
    }
    let mut tunnels = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let Some(t) = &p.tunnel else { continue };
        let at = |k: &str| format!("ports[{i}].tunnel.{k}");
        let underlay = cfg
            .port_index(&t.underlay)
            .filter(|&u| cfg.ports[u].tunnel.is_none())
            .ok_or_else(|| {
                ConfigError::at(
                    at("underlay"),
                    format!(
                        "{:?} is not an Ethernet port of this configuration",
                        t.underlay
                    ),
                )
            })?;
        if !(68..=9000).contains(&t.mtu) {
            return Err(ConfigError::at(
                at("mtu"),
                format!("{}: allowed 68..=9000", t.mtu),
            ));
        }
        let underlay_mtu = t
            .underlay_mtu
            .or(cfg.ports[underlay].mtu.map(u32::from))
            .unwrap_or(1500);
        if !(576..=9600).contains(&underlay_mtu) {
            return Err(ConfigError::at(
                at("underlay_mtu"),
                format!("{underlay_mtu}: allowed 576..=9600"),
            ));
        }
        let mac = |k: &str, v: &Option<String>| -> Result<Option<[u8; 6]>, ConfigError> {
            v.as_deref()
                .map(|s| {
                    parse_mac(s).ok_or_else(|| {
                        ConfigError::at(
                            at(k),
                            format!("{s:?}: a MAC address like 02:00:00:00:00:01"),
                        )
                    })
                })
                .transpose()
        };
        let static_mac = mac("next_hop_mac", &t.next_hop_mac)?;
        let dmac = mac("decap_dst_mac", &t.decap_dst_mac)?;
        let smac = mac("decap_src_mac", &t.decap_src_mac)?;
        if t.ttl == 0 {
            return Err(ConfigError::at(at("ttl"), "0: allowed 1..=255"));
        }
        for (k, a) in [("local", t.local), ("remote", t.remote)] {
            if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
                return Err(ConfigError::at(at(k), format!("{a}: a unicast address")));
            }
        }
        let mut tun = Tunnel::new(
            p.name.clone(),
            PortIndex(i as u16),
            PortIndex(underlay as u16),
            t.local.octets(),
            t.remote.octets(),
            (t.ikey, t.okey),
            (t.mtu, underlay_mtu),
            t.next_hop.unwrap_or(t.remote).octets(),
            static_mac,
        );
        tun.df = match t.df {
            DfConfig::Inherit => DfPolicy::Inherit,
            DfConfig::Set => DfPolicy::Set,
            DfConfig::Clear => DfPolicy::Clear,
        };
        tun.ttl = t.ttl;
        tun.icmp_src6 = t.icmp_source6.map(|a| a.octets()).unwrap_or([0; 16]);
        tun.decap_macs = match (dmac, smac) {
            (None, None) => None,
            (d, s) => Some((d.unwrap_or([0; 6]), s.unwrap_or([0; 6]))),
        };
        if let Some(old) = running.and_then(|(_, ip)| ip.tunnels.iter().find(|o| o.name == p.name))
        {
            tun.keep_learnt(old);
            if !tun.same_config(old) {
                plan.tunnels_changed.push(p.name.clone());
            }
        }
        tunnels.push(tun);
    }
    let ip = Ipsec::new(sas, tunnels, cfg.ports.len()).map_err(|e| ConfigError::at("sas", e.0))?;
    Ok((Some(ip), plan))
}

/// Once `next` (a reload's table) is in effect: SAs kept from `previous` with other soft limits
/// report their new soft limit once it is reached.
pub fn rearm_soft_lifetimes(previous: &Ipsec, next: &Ipsec) {
    for sa in &next.sas {
        if let Some(old) = previous.sas.iter().find(|o| o.shares_state_with(sa)) {
            sa.rearm_soft_lifetime(old);
        }
    }
}

/// Per-SA totals over the workers' lanes, for the summary and metrics.
pub fn sa_summaries(ip: &Ipsec) -> Vec<crate::summary::SaSummary> {
    ip.sas
        .iter()
        .map(|sa| {
            let sum = |f: fn(&pipelines::stats::SaCounters) -> u64| sa.total(f);
            crate::summary::SaSummary {
                name: sa.cfg.name.clone(),
                spi: sa.cfg.spi,
                direction: match sa.cfg.direction {
                    SaDirection::In => "in",
                    SaDirection::Out => "out",
                },
                algorithm: sa.cfg.algorithm.name(),
                packets: sum(|c| c.packets.get()),
                bytes: sum(|c| c.bytes.get()),
                replay: sum(|c| c.replay.get()),
                too_old: sum(|c| c.too_old.get()),
                bad_icv: sum(|c| c.bad_icv.get()),
                errors: sum(|c| c.errors.get()),
                seq: match sa.replay() {
                    Some(w) => w.top(),
                    None => sa.seq_reserved(),
                },
                expired: sa.expired(),
                soft_expired: sa.soft_expired(),
            }
        })
        .collect()
}

/// Hard lifetimes the workers cannot see alone: bytes (both directions) and inbound packets.
/// The control thread sums the workers' per-SA counters every tick (10 ms) and retires an SA
/// that reached a limit; workers then drop its packets as `sa_expired`. What the workers
/// processed since the last tick may pass the limit (outbound packet limits are exact: the
/// workers enforce them while reserving sequence numbers; the check here also catches a limit
/// a reload lowered below what the workers have reserved already). Soft limits (packets and
/// bytes, both directions) are only reported, once. Returns a message per SA that reached a
/// limit now.
pub fn enforce_lifetimes(ip: &Ipsec) -> Vec<String> {
    let mut retired = Vec::new();
    for sa in &ip.sas {
        let l = sa.cfg.lifetime;
        let packets = l.packets;
        let soft_pending =
            (l.soft_packets.is_some() || l.soft_bytes.is_some()) && !sa.soft_expired();
        if sa.expired() || (l.bytes.is_none() && packets.is_none() && !soft_pending) {
            continue;
        }
        let (n, b) = (sa.total(|c| c.packets.get()), sa.total(|c| c.bytes.get()));
        if soft_pending {
            let why = if l.soft_bytes.is_some_and(|s| b >= s) {
                Some("bytes")
            } else if l.soft_packets.is_some_and(|s| n >= s) {
                Some("packets")
            } else {
                None
            };
            if let Some(why) = why.filter(|_| sa.mark_soft_expired()) {
                retired.push(format!(
                    "SA {} (spi {:#x}) reached its soft lifetime ({why}): replace it before the hard limit",
                    sa.cfg.name, sa.cfg.spi
                ));
            }
        }
        let why = if l.bytes.is_some_and(|lim| b >= lim) {
            "bytes"
        } else if packets.is_some_and(|lim| n >= lim) {
            "packets"
        } else {
            continue;
        };
        sa.expire();
        retired.push(format!(
            "SA {} (spi {:#x}) reached its hard lifetime ({why}); its packets are now dropped as sa_expired",
            sa.cfg.name, sa.cfg.spi
        ));
    }
    retired
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: [&str; 4] = [
        "000102030405060708090a0b0c0d0e0f10111213",
        "101112131415161718191a1b1c1d1e1f20212223",
        "202122232425262728292a2b2c2d2e2f30313233",
        "303132333435363738393a3b3c3d3e3f40414243",
    ];

    fn text() -> String {
        format!(
            "eal: {{ lcores: \"0-2\", no_huge: true, memory_mb: 256, no_pci: true }}
ports:
  - {{ name: lan, device: net_ring0 }}
  - {{ name: wan, device: net_ring1 }}
  - name: vti0
    tunnel: {{ local: 192.0.2.1, remote: 192.0.2.2, ikey: 7, okey: 9, underlay: wan }}
  - name: vti1
    tunnel: {{ local: 192.0.2.1, remote: 192.0.2.3, ikey: 8, okey: 10, underlay: wan, next_hop_mac: \"02:00:00:00:00:03\" }}
sas:
  - {{ name: out0, spi: 0x1000, direction: out, src: 192.0.2.1, dst: 192.0.2.2, mark: 9, algorithm: aes-gcm-128, key: \"{}\" }}
  - {{ name: out1, spi: 0x1100, direction: out, src: 192.0.2.1, dst: 192.0.2.3, mark: 10, algorithm: aes-gcm-128, key: \"{}\" }}
  - {{ name: in0, spi: 0x2000, direction: in, src: 192.0.2.2, dst: 192.0.2.1, mark: 7, algorithm: aes-gcm-128, key: \"{}\" }}
  - {{ name: in1, spi: 0x2100, direction: in, src: 192.0.2.3, dst: 192.0.2.1, mark: 8, algorithm: aes-gcm-128, key: \"{}\", seq: 10 }}
forwarding:
  - {{ from: lan, to: vti0 }}
",
            K[0], K[1], K[2], K[3]
        )
    }

    fn cfg(text: &str) -> Config {
        crate::config::parse(text).unwrap()
    }

    /// The running table of `text()` with some state: out0 sent 5 packets on worker 1.
    fn running() -> (Config, Ipsec) {
        let c = cfg(&text());
        let ip = build_ipsec(&c).unwrap().unwrap();
        for _ in 0..5 {
            ip.sas[0].next_seq_on(1).unwrap();
        }
        ip.sas[0].counters(1).unwrap().packets.add(5);
        (c, ip)
    }

    fn reload(new: &str) -> (Ipsec, Ipsec, SaPlan) {
        let (rc, old) = running();
        let (ip, plan) = build_ipsec_reusing(&cfg(new), Some((&rc, &old))).unwrap();
        (old, ip.unwrap(), plan)
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn sa<'a>(ip: &'a Ipsec, name: &str) -> &'a Sa {
        ip.sas.iter().find(|s| s.cfg.name == name).unwrap()
    }

    #[test]
    fn the_same_configuration_keeps_every_sa_and_tunnel() {
        let (old, new, plan) = reload(&text());
        assert!(plan.unchanged(), "{plan:?}");
        assert_eq!(plan.kept, names(&["out0", "out1", "in0", "in1"]));
        for (a, b) in old.sas.iter().zip(&new.sas) {
            assert!(a.shares_state_with(b), "{}", a.cfg.name);
        }
        for (a, b) in old.tunnels.iter().zip(&new.tunnels) {
            assert!(a.shares_learnt_with(b) && a.same_config(b), "{}", a.name);
        }
        // Sequence numbers, lanes and counters carry on; one lane per worker.
        let out0 = sa(&new, "out0");
        assert_eq!(out0.next_seq_on(1), Ok(6));
        assert_eq!(out0.total(|c| c.packets.get()), 5);
        assert!(out0.counters(1).is_some() && out0.counters(2).is_none());
        assert_eq!(plan.describe(), "SAs: 4 kept");
    }

    #[test]
    fn sas_are_added_rekeyed_removed_and_updated_by_identity() {
        let t = text();
        // in1 goes, out1 gets a new SPI, in2 comes, out0 gets a lifetime, in0 a new key.
        let new = t
            .replace(
                &format!("  - {{ name: in1, spi: 0x2100, direction: in, src: 192.0.2.3, dst: 192.0.2.1, mark: 8, algorithm: aes-gcm-128, key: \"{}\", seq: 10 }}\n", K[3]),
                &format!("  - {{ name: in2, spi: 0x2200, direction: in, src: 192.0.2.3, dst: 192.0.2.1, mark: 8, algorithm: aes-gcm-128, key: \"{}\" }}\n", K[3]),
            )
            .replace("spi: 0x1100", "spi: 0x1101")
            .replace("mark: 9, algorithm: aes-gcm-128", "mark: 9, lifetime: { packets: 1000 }, algorithm: aes-gcm-128")
            .replacen(K[2], K[3], 1);
        let (old, ip, plan) = reload(&new);
        assert_eq!(plan.kept, Vec::<String>::new());
        assert_eq!(plan.updated, names(&["out0"]));
        assert_eq!(plan.rekeyed, names(&["out1", "in0"]));
        assert_eq!(plan.added, names(&["in2"]));
        assert_eq!(plan.removed, names(&["in1"]));
        // in0 is another SA on the same SPI: its pair is taken; in1's is gone.
        assert_eq!(plan.gone_inbound, [(0x2100, [192, 0, 2, 1])]);
        assert!(!plan.unchanged());
        assert_eq!(
            plan.describe(),
            "SAs: 0 kept, 1 updated (out0), 1 added (in2), 2 rekeyed (out1, in0), 1 removed (in1)"
        );
        assert!(sa(&ip, "out0").shares_state_with(sa(&old, "out0")));
        assert_eq!(sa(&ip, "out0").cfg.lifetime.packets, Some(1000));
        assert_eq!(sa(&ip, "out0").next_seq_on(1), Ok(6));
        for n in ["out1", "in0"] {
            assert!(!sa(&ip, n).shares_state_with(sa(&old, n)), "{n}");
        }
        assert_eq!(sa(&ip, "out1").next_seq_on(0), Ok(1));
        // The tunnel now encrypts with the new out1.
        assert_eq!(
            ip.tunnels[1].out_sa.map(|i| ip.sas[usize::from(i)].cfg.spi),
            Some(0x1101)
        );
        assert_eq!(ip.inbound_sa(0x2100, [192, 0, 2, 1]), None);
        assert!(ip.inbound_sa(0x2200, [192, 0, 2, 1]).is_some());
    }

    #[test]
    fn renaming_an_sa_makes_another_sa() {
        let new = text().replace("name: in0,", "name: in0b,");
        let (old, ip, plan) = reload(&new);
        assert_eq!(plan.added, names(&["in0b"]));
        assert_eq!(plan.removed, names(&["in0"]));
        // The new SA takes the SPI: its packets are not those of a removed SA.
        assert!(plan.gone_inbound.is_empty());
        assert!(!sa(&ip, "in0b").shares_state_with(sa(&old, "in0")));
    }

    #[test]
    fn a_new_key_in_the_keys_file_is_a_new_sa() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.yaml");
        let with_file =
            text().replacen(&format!(", key: \"{}\"", K[0]), "", 1) + "sa_keys_file: keys.yaml\n";
        let at = dir.path().join("appliance.yaml");
        std::fs::write(&at, &with_file).unwrap();
        std::fs::write(&keys, format!("out0: {{ key: \"{}\" }}\n", K[0])).unwrap();
        let rc = crate::config::load(&at).unwrap();
        let old = build_ipsec(&rc).unwrap().unwrap();
        let (_, plan) = build_ipsec_reusing(&rc, Some((&rc, &old))).unwrap();
        assert!(plan.unchanged());
        std::fs::write(&keys, format!("out0: {{ key: \"{}\" }}\n", K[1])).unwrap();
        let nc = crate::config::load(&at).unwrap();
        let (ip, plan) = build_ipsec_reusing(&nc, Some((&rc, &old))).unwrap();
        assert_eq!(plan.rekeyed, names(&["out0"]));
        assert!(!ip.unwrap().sas[0].shares_state_with(&old.sas[0]));
        assert!(!format!("{plan:?}").contains(K[1]));
    }

    #[test]
    fn a_kept_sa_refuses_another_seq() {
        let (rc, old) = running();
        for new in [
            text().replace(", seq: 10 }", ", seq: 11 }"),
            text().replace(", seq: 10 }", " }"),
            text().replace("mark: 9, algorithm", "mark: 9, seq: 3, algorithm"),
        ] {
            let e = build_ipsec_reusing(&cfg(&new), Some((&rc, &old)))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("`sas[") && e.contains("].seq`: SA "), "{e}");
            assert!(
                e.contains("`seq` applies only when an SA is created"),
                "{e}"
            );
        }
        // The same number written otherwise is the same seq.
        let same = text().replace(", seq: 10 }", ", seq: \"0xa\" }");
        let (_, plan) = build_ipsec_reusing(&cfg(&same), Some((&rc, &old))).unwrap();
        assert!(plan.unchanged() && plan.kept.len() == 4, "{plan:?}");
        // With another SPI the SA is new: its seq applies.
        let new = text()
            .replace("spi: 0x2100", "spi: 0x2101")
            .replace(", seq: 10 }", ", seq: 77 }");
        let (ip, _) = build_ipsec_reusing(&cfg(&new), Some((&rc, &old))).unwrap();
        assert_eq!(sa(&ip.unwrap(), "in1").replay().unwrap().top(), 77);
    }

    #[test]
    fn tunnels_keep_what_they_learnt_while_their_path_stays() {
        let (rc, old) = running();
        old.tunnels[0].set_next_hop_mac([2, 0, 0, 0, 0, 2]);
        let new = text()
            .replace(
                "ikey: 7, okey: 9, underlay: wan }",
                "ikey: 7, okey: 9, underlay: wan, mtu: 1400 }",
            )
            .replace(
                "next_hop_mac: \"02:00:00:00:00:03\"",
                "next_hop_mac: \"02:00:00:00:00:04\"",
            );
        let (ip, plan) = build_ipsec_reusing(&cfg(&new), Some((&rc, &old))).unwrap();
        let ip = ip.unwrap();
        assert_eq!(plan.tunnels_changed, names(&["vti0", "vti1"]));
        assert!(!plan.unchanged());
        assert!(ip.tunnels[0].shares_learnt_with(&old.tunnels[0]));
        assert_eq!(ip.tunnels[0].next_hop_mac(), Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(ip.tunnels[0].mtu, 1400);
        // Another static next hop MAC: learnt afresh (it is the new one).
        assert!(!ip.tunnels[1].shares_learnt_with(&old.tunnels[1]));
        assert_eq!(ip.tunnels[1].next_hop_mac(), Some([2, 0, 0, 0, 0, 4]));
        assert!(plan.describe().ends_with("; tunnels changed: vti0, vti1"));
    }

    #[test]
    fn removing_every_sa_leaves_an_empty_table() {
        let (rc, old) = running();
        let start = text();
        let no_sas = &start[..start.find("sas:\n").unwrap()];
        let new = format!("{no_sas}forwarding:\n  - {{ from: lan, to: vti0 }}\n");
        let (ip, plan) = build_ipsec_reusing(&cfg(&new), Some((&rc, &old))).unwrap();
        let ip = ip.unwrap();
        assert!(ip.sas.is_empty() && ip.tunnels.len() == 2);
        assert_eq!(plan.removed, names(&["out0", "out1", "in0", "in1"]));
        assert_eq!(plan.gone_inbound.len(), 2);
    }
}
