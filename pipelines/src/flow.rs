//! The flow classifier (Linux `cls_flow`): builds a class id from a few per-packet values ("flow
//! keys": addresses, ports, the input port, the mark, ...), either by hashing them or by mapping
//! one of them arithmetically, and always matches with that class id.
//!
//! Behaviour follows `net/sched/cls_flow.c` of Linux 3.13/3.14 and the flow dissector it calls
//! (`skb_flow_dissect` of `net/core/flow_dissector.c`, 3.13), re-implemented here from their
//! described behaviour:
//!
//! * [`dissect`] walks the frame once: the EtherType at offset 12, 802.1Q/802.1ad tags, PPPoE
//!   sessions, IPv4 (fragments have protocol 0) or IPv6 (no extension-header walk; addresses are
//!   folded to 32 bits), into GRE (version 0 without routing, optionally carrying Ethernet) and
//!   IP-in-IP (protocol 4 or 41 after either IP version), and finally reads 4 bytes of ports (or
//!   an ESP/AH SPI). It reads the bytes itself rather than [`wire::Parsed`](crate::wire::Parsed),
//!   whose rules differ (IPv6 extension headers are followed there, tunnels are not).
//! * Every key has the value `cls_flow` gives a *forwarded* packet on a tc ingress hook (see
//!   [`FlowKey`]): there are no local sockets, no route cache entry and no conntrack, so the
//!   kernel's fallbacks for those are constants, reproduced here and documented per key.
//! * [`FlowClassifier`] takes the configured keys in the kernel's bit order, hashes them with
//!   `jhash2` (hash mode) or maps the single key (map mode), reduces modulo the divisor and adds
//!   the result to the base class.
//!
//! Per packet nothing allocates, locks, panics or performs a read-modify-write atomic; the frame
//! is read at most once, and only when a configured key needs the dissector. Bytes beyond the
//! packet's first segment are treated as absent (the kernel would read them from later
//! fragments of the buffer; the appliance's headers always sit in the first segment).
//!
//! Where the appliance's setting differs from a Linux host (deliberately):
//!
//! * Frames keep their VLAN tags in the data (the NIC does not strip them), so the dissector
//!   starts at the outer EtherType and `skb->protocol` is that outer EtherType (0x8100 for a
//!   tagged frame). Linux would usually have removed the tag before tc ingress.
//! * `rxhash` uses the NIC's RSS hash whenever there is one; Linux 3.13 recomputes the hash in
//!   software unless the driver marked its hash as covering the ports.
//! * `rt-classid`, `sk-uid` and `sk-gid` are refused rather than always 0; map-mode options in
//!   hash mode (and the hash options in map mode) are refused rather than ignored; `rshift`
//!   above 31 (undefined in C) is refused. Ematches, actions and policing are not part of the
//!   classifier: the [`Filter`](crate::pipeline::Filter) carries the actions.
use crate::jhash::{jhash2, jhash_3words_legacy};
use crate::pipeline::{Classifier, Generation, PacketView, Perturbation, Verdict};
use crate::wire::ethertype;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub mod gen;

/// Number of flow keys the kernel defines (`FLOW_KEY_MAX + 1`).
pub const FLOW_KEY_COUNT: usize = 18;

/// One flow key, numbered as the kernel numbers them (`enum flow_keys` of
/// `linux/pkt_cls.h`). The number is the key's bit in a key mask and its position in the
/// hashed key sequence: keys are always taken in this order, whatever order the configuration
/// lists them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowKey {
    /// `src`: the (innermost) source IPv4 address, or an IPv6 source address folded to 32 bits
    /// (XOR of its four words), in host order. When it is 0 (not IP, or truncated before the
    /// address), the kernel falls back to the packet's local socket pointer: 0 for a forwarded
    /// packet.
    Src = 0,
    /// `dst`: the destination address like `src`. When it is 0 the kernel falls back to the
    /// route cache entry pointer XOR the raw `skb->protocol`; on an ingress hook there is no
    /// route entry yet (and the appliance has no route cache at all), so the value is the frame's
    /// EtherType at offset 12 as a little-endian host reads the network-order field (0x0806
    /// gives 0x0608).
    Dst = 1,
    /// `proto`: the (innermost) IP protocol; 0 for IPv4 fragments, non-IP frames and frames
    /// the dissector gave up on.
    Proto = 2,
    /// `proto-src`: the first 16 bits of the transport header (source port; the high half of
    /// an ESP/AH SPI), host order; when all four port bytes are 0 it falls back as `src` does
    /// (to 0).
    ProtoSrc = 3,
    /// `proto-dst`: the second 16 bits (destination port; the low half of an SPI); when all
    /// four port bytes are 0 it falls back as `dst` does (to the raw EtherType).
    ProtoDst = 4,
    /// `iif`: the interface index the packet came from; the appliance numbers interfaces as
    /// port index + 1 (as its cBPF `ifindex` does).
    Iif = 5,
    /// `priority`: the packet priority set by earlier actions.
    Priority = 6,
    /// `mark`: the packet mark set by earlier actions.
    Mark = 7,
    /// `nfct`: the conntrack entry pointer; 0, the appliance has no connection tracking.
    Nfct = 8,
    /// `nfct-src`: the conntrack tuple's source; without conntrack the kernel falls back to
    /// `src`, and so does this key.
    NfctSrc = 9,
    /// `nfct-dst`: falls back to `dst` (no conntrack).
    NfctDst = 10,
    /// `nfct-proto-src`: falls back to `proto-src` (no conntrack).
    NfctProtoSrc = 11,
    /// `nfct-proto-dst`: falls back to `proto-dst` (no conntrack).
    NfctProtoDst = 12,
    /// `rt-classid`: the routing realm; refused, always 0 without routing classes.
    RtClassid = 13,
    /// `sk-uid`: the local socket owner's uid; refused, always 0 without local sockets.
    SkUid = 14,
    /// `sk-gid`: the local socket owner's gid; refused, always 0 without local sockets.
    SkGid = 15,
    /// `vlan-tag`: the VLAN id (TCI & 0x0fff) when the frame's EtherType at offset 12 is
    /// 802.1Q (0x8100; not 802.1ad, as the kernel's in-band tag lookup), else 0.
    VlanTag = 16,
    /// `rxhash`: the NIC's RSS hash when it gave one, else the software flow hash of Linux 3.13
    /// ([`software_rxhash`] with the appliance's secret).
    Rxhash = 17,
}

impl FlowKey {
    /// Every key, in bit order.
    pub const ALL: [FlowKey; FLOW_KEY_COUNT] = [
        FlowKey::Src,
        FlowKey::Dst,
        FlowKey::Proto,
        FlowKey::ProtoSrc,
        FlowKey::ProtoDst,
        FlowKey::Iif,
        FlowKey::Priority,
        FlowKey::Mark,
        FlowKey::Nfct,
        FlowKey::NfctSrc,
        FlowKey::NfctDst,
        FlowKey::NfctProtoSrc,
        FlowKey::NfctProtoDst,
        FlowKey::RtClassid,
        FlowKey::SkUid,
        FlowKey::SkGid,
        FlowKey::VlanTag,
        FlowKey::Rxhash,
    ];

    /// The key's name in tc's syntax (`tc filter ... flow hash keys src,dst`).
    pub const fn name(self) -> &'static str {
        match self {
            FlowKey::Src => "src",
            FlowKey::Dst => "dst",
            FlowKey::Proto => "proto",
            FlowKey::ProtoSrc => "proto-src",
            FlowKey::ProtoDst => "proto-dst",
            FlowKey::Iif => "iif",
            FlowKey::Priority => "priority",
            FlowKey::Mark => "mark",
            FlowKey::Nfct => "nfct",
            FlowKey::NfctSrc => "nfct-src",
            FlowKey::NfctDst => "nfct-dst",
            FlowKey::NfctProtoSrc => "nfct-proto-src",
            FlowKey::NfctProtoDst => "nfct-proto-dst",
            FlowKey::RtClassid => "rt-classid",
            FlowKey::SkUid => "sk-uid",
            FlowKey::SkGid => "sk-gid",
            FlowKey::VlanTag => "vlan-tag",
            FlowKey::Rxhash => "rxhash",
        }
    }

    /// The key named `name` (tc's spelling), if any.
    pub fn from_name(name: &str) -> Option<FlowKey> {
        FlowKey::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The key's bit in a key mask.
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// Why the appliance refuses the key, for the keys whose value would be a constant.
    const fn unsupported(self) -> Option<&'static str> {
        match self {
            FlowKey::RtClassid => {
                Some("the appliance has no routing realms, so it would always be 0")
            }
            FlowKey::SkUid | FlowKey::SkGid => {
                Some("forwarded packets have no local socket, so it would always be 0")
            }
            _ => None,
        }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The keys whose values come from the dissector (the kernel's `FLOW_KEYS_NEEDED`).
const DISSECTOR_KEYS: u32 = FlowKey::Src.bit()
    | FlowKey::Dst.bit()
    | FlowKey::Proto.bit()
    | FlowKey::ProtoSrc.bit()
    | FlowKey::ProtoDst.bit()
    | FlowKey::NfctSrc.bit()
    | FlowKey::NfctDst.bit()
    | FlowKey::NfctProtoSrc.bit()
    | FlowKey::NfctProtoDst.bit();

/// The names of the keys a configuration may use, for error messages.
fn allowed_key_names() -> String {
    FlowKey::ALL
        .iter()
        .filter(|k| k.unsupported().is_none())
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the flow dissector extracted from a frame (the kernel's `struct flow_keys` of 3.13).
/// Fields hold the bytes as they are in memory in the kernel (network order), so they do not
/// depend on the host's byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowKeys {
    /// Innermost IPv4 source address, or the IPv6 source folded to 4 bytes (XOR of its four
    /// 4-byte groups, the kernel's `ipv6_addr_hash`).
    pub src: [u8; 4],
    /// Destination address, like `src`.
    pub dst: [u8; 4],
    /// The 4 bytes at the transport header (+4 for AH): source and destination ports or an
    /// SPI; zero when the protocol has no ports or they are beyond the data.
    pub ports: [u8; 4],
    /// Innermost IP protocol; 0 for fragments and when dissection did not reach the end.
    pub ip_proto: u8,
}

impl FlowKeys {
    /// `src` in host order (the kernel's `ntohl(flow->src)`).
    pub fn src_host(&self) -> u32 {
        u32::from_be_bytes(self.src)
    }

    /// `dst` in host order.
    pub fn dst_host(&self) -> u32 {
        u32::from_be_bytes(self.dst)
    }

    /// The source port (first 16 bits of `ports`) in host order.
    pub fn port_src(&self) -> u16 {
        u16::from_be_bytes([self.ports[0], self.ports[1]])
    }

    /// The destination port (second 16 bits of `ports`) in host order.
    pub fn port_dst(&self) -> u16 {
        u16::from_be_bytes([self.ports[2], self.ports[3]])
    }
}

/// EtherType of a PPPoE session (RFC 2516 §4).
const ETH_P_PPP_SES: u16 = 0x8864;
/// EtherType of transparent Ethernet bridging inside GRE.
const ETH_P_TEB: u16 = 0x6558;
/// PPP protocol number of IPv4 (RFC 1332).
const PPP_IP: u16 = 0x0021;
/// PPP protocol number of IPv6 (RFC 5072).
const PPP_IPV6: u16 = 0x0057;
/// PPPoE session header (6 bytes, RFC 2516 §4) plus the 2-byte PPP protocol.
const PPPOE_SES_HLEN: usize = 8;
/// IPv4 flags and fragment offset: "more fragments" and the 13-bit offset (RFC 791 §3.1).
const IP_MF_OR_OFFSET: u16 = 0x3fff;
/// GRE flag bits (RFC 1701 §2.1; RFC 2784, RFC 2890).
const GRE_CSUM: u16 = 0x8000;
const GRE_ROUTING: u16 = 0x4000;
const GRE_KEY: u16 = 0x2000;
const GRE_SEQ: u16 = 0x1000;
const GRE_VERSION: u16 = 0x0007;

/// IP protocol numbers the dissector acts on.
mod proto {
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const DCCP: u8 = 33;
    pub const IPV6: u8 = 41;
    pub const GRE: u8 = 47;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const SCTP: u8 = 132;
    pub const UDPLITE: u8 = 136;
}

/// The `N` bytes at `off`, or `None` when they are not all in `data`.
#[inline(always)]
fn read<const N: usize>(data: &[u8], off: usize) -> Option<[u8; N]> {
    data.get(off..)?.first_chunk::<N>().copied()
}

/// Where the 4 port bytes are relative to the transport header (the kernel's
/// `proto_ports_offset`): 0 for protocols with 16-bit ports and for ESP (its SPI), 4 for AH
/// (its SPI follows next header, length and reserved bytes), `None` for everything else.
#[inline(always)]
const fn ports_offset(ip_proto: u8) -> Option<usize> {
    match ip_proto {
        proto::TCP | proto::UDP | proto::DCCP | proto::ESP | proto::SCTP | proto::UDPLITE => {
            Some(0)
        }
        proto::AH => Some(4),
        _ => None,
    }
}

/// The network header kinds the dissector reads.
#[derive(Clone, Copy)]
enum Net {
    V4,
    V6,
}

/// Dissects `data` (a frame from its Ethernet header) as Linux 3.13's `skb_flow_dissect` does
/// for a frame whose VLAN tags are still in the data: returns what was extracted and whether
/// dissection completed.
///
/// On failure (an unknown EtherType, a truncated header, an IPv4 IHL below 5, an unknown PPP
/// protocol) the keys filled so far are kept and `ip_proto` stays 0; `cls_flow` ignores the
/// failure and uses them, while the software rxhash of [`software_rxhash`] is then 0. Inner
/// headers of tunnels overwrite the outer addresses. Never panics, never allocates.
#[inline]
pub fn dissect(data: &[u8]) -> (FlowKeys, bool) {
    let mut keys = FlowKeys::default();
    let complete = dissect_into(data, &mut keys).is_some();
    (keys, complete)
}

/// The dissector proper; `None` is the kernel's `return false`.
#[inline(always)]
fn dissect_into(data: &[u8], keys: &mut FlowKeys) -> Option<()> {
    let [t0, t1] = read::<2>(data, 12)?;
    let mut ether = u16::from_be_bytes([t0, t1]);
    let mut nhoff = 14usize;
    let ip_proto = 'link: loop {
        // Link layer: VLAN tags and PPPoE until a network protocol is found.
        let mut net = match ether {
            ethertype::IPV4 => Net::V4,
            ethertype::IPV6 => Net::V6,
            ethertype::VLAN | ethertype::QINQ => {
                // Tag control information, then the encapsulated EtherType.
                let [_, _, e0, e1] = read::<4>(data, nhoff)?;
                ether = u16::from_be_bytes([e0, e1]);
                nhoff += 4;
                continue 'link;
            }
            ETH_P_PPP_SES => {
                let h = read::<PPPOE_SES_HLEN>(data, nhoff)?;
                nhoff += PPPOE_SES_HLEN;
                match u16::from_be_bytes([h[6], h[7]]) {
                    PPP_IP => Net::V4,
                    PPP_IPV6 => Net::V6,
                    _ => return None,
                }
            }
            _ => return None,
        };
        // Network layer; IPv4 and IPv6 carried in IPv4/IPv6 go round again.
        let ip_proto = loop {
            let next = match net {
                Net::V4 => {
                    let h = read::<20>(data, nhoff)?;
                    let ihl = h[0] & 0x0f;
                    if ihl < 5 {
                        return None;
                    }
                    nhoff += usize::from(ihl) * 4;
                    keys.src = [h[12], h[13], h[14], h[15]];
                    keys.dst = [h[16], h[17], h[18], h[19]];
                    if u16::from_be_bytes([h[6], h[7]]) & IP_MF_OR_OFFSET != 0 {
                        0
                    } else {
                        h[9]
                    }
                }
                Net::V6 => {
                    let h = read::<40>(data, nhoff)?;
                    nhoff += 40;
                    keys.src = fold_ipv6(&h, 8);
                    keys.dst = fold_ipv6(&h, 24);
                    h[6]
                }
            };
            match next {
                proto::IPIP => net = Net::V4,
                proto::IPV6 => net = Net::V6,
                p => break p,
            }
        };
        if ip_proto == proto::GRE {
            let [f0, f1, p0, p1] = read::<4>(data, nhoff)?;
            let flags = u16::from_be_bytes([f0, f1]);
            // Only version 0 without source routing is looked into.
            if flags & (GRE_VERSION | GRE_ROUTING) == 0 {
                ether = u16::from_be_bytes([p0, p1]);
                nhoff += 4;
                for bit in [GRE_CSUM, GRE_KEY, GRE_SEQ] {
                    if flags & bit != 0 {
                        nhoff += 4;
                    }
                }
                if ether == ETH_P_TEB {
                    let [.., e0, e1] = read::<14>(data, nhoff)?;
                    ether = u16::from_be_bytes([e0, e1]);
                    nhoff += 14;
                }
                continue 'link;
            }
        }
        break ip_proto;
    };
    keys.ip_proto = ip_proto;
    if let Some(poff) = ports_offset(ip_proto) {
        if let Some(p) = read::<4>(data, nhoff + poff) {
            keys.ports = p;
        }
    }
    Some(())
}

/// The IPv6 address at `h[at..at + 16]` folded to 4 bytes: the XOR of its four 4-byte groups.
/// (The kernel XORs the words as loaded in CPU order and stores the result back as a
/// network-order field; bytewise XOR gives the same bytes on any host.)
#[inline(always)]
fn fold_ipv6(h: &[u8; 40], at: usize) -> [u8; 4] {
    let mut out = [0u8; 4];
    for (i, o) in out.iter_mut().enumerate() {
        *o = h[at + i] ^ h[at + 4 + i] ^ h[at + 8 + i] ^ h[at + 12 + i];
    }
    out
}

/// The software flow hash of Linux 3.13 (`__skb_get_rxhash`) for a frame, with the
/// appliance-wide secret `hashrnd` (the kernel's boot-time random `hashrnd`).
///
/// Followed exactly: dissect as [`dissect`]; if dissection did not complete, the hash is 0
/// (the kernel leaves `skb->rxhash` at 0). Otherwise the addresses and the two 16-bit port
/// halves are taken as raw words, i.e. the values a little-endian kernel (x86_64) sees when it
/// casts the network-order fields to integers; if `dst < src`, or they are equal and the second
/// port half is below the first, both pairs are swapped so that both directions of a flow hash
/// alike; the hash is `jhash_3words(dst, src, ports, hashrnd)` with the `jhash_3words` of Linux
/// before 4.1 ([`jhash_3words_legacy`]: `a` and `b` seeded with the jhash constant, `c` with
/// `hashrnd`); a hash of 0 becomes 1, so 0 always means "no hash".
#[inline]
pub fn software_rxhash(data: &[u8], hashrnd: u32) -> u32 {
    let (keys, complete) = dissect(data);
    rxhash_of(&keys, complete, hashrnd)
}

/// [`software_rxhash`] from a dissection's result.
#[inline(always)]
fn rxhash_of(keys: &FlowKeys, complete: bool, hashrnd: u32) -> u32 {
    if !complete {
        return 0;
    }
    let mut dst = u32::from_le_bytes(keys.dst);
    let mut src = u32::from_le_bytes(keys.src);
    let mut p0 = u16::from_le_bytes([keys.ports[0], keys.ports[1]]);
    let mut p1 = u16::from_le_bytes([keys.ports[2], keys.ports[3]]);
    if dst < src || (dst == src && p1 < p0) {
        std::mem::swap(&mut dst, &mut src);
        std::mem::swap(&mut p0, &mut p1);
    }
    // The ports union read as one little-endian word: the first half is the low 16 bits.
    let ports = u32::from(p0) | (u32::from(p1) << 16);
    match jhash_3words_legacy(dst, src, ports, hashrnd) {
        0 => 1,
        h => h,
    }
}

/// The appliance-wide secret of the software rxhash (the kernel's `hashrnd`, drawn once at
/// boot): random, drawn once per process, the same for every classifier.
pub fn rxhash_secret() -> u32 {
    static SECRET: OnceLock<u32> = OnceLock::new();
    *SECRET.get_or_init(random_u32)
}

/// 32 bits from the standard library's per-process random hasher keys: not cryptographic, but
/// unpredictable from outside, which is all a hash seed needs. Never on the packet path (the
/// control thread re-seeds perturbed classifiers with it).
pub fn random_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    let h = RandomState::new().hash_one(Instant::now());
    (h ^ (h >> 32)) as u32
}

/// A flow classifier as configured: tc's `flow` filter options, with names as in its syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowSpec {
    /// Key names (tc's spelling, see [`FlowKey::name`]), in any order.
    pub keys: Vec<String>,
    /// `"map"` (the default, as in the kernel) or `"hash"`.
    pub mode: Option<String>,
    /// Map mode: AND mask applied to the key (default all ones).
    pub mask: Option<u32>,
    /// Map mode: XOR applied after the mask (default 0).
    pub xor: Option<u32>,
    /// Map mode: right shift applied after the XOR, 0..=31 (default 0).
    pub rshift: Option<u32>,
    /// Map mode: added after the shift, wrapping (default 0).
    pub addend: Option<u32>,
    /// The result is taken modulo this (0 or absent: no reduction).
    pub divisor: Option<u32>,
    /// Class id the result is added to; major 0 means the root qdisc's major (1), absent means
    /// 1:1. Its minor must not be 0.
    pub baseclass: Option<u32>,
    /// Hash mode: re-randomise the hash seed every this many seconds (at least 1).
    pub perturb_secs: Option<u32>,
    /// Hash mode: the initial hash seed (random when absent; fix it for reproducible classes).
    pub seed: Option<u32>,
}

/// Why a [`FlowSpec`] was refused: the offending field and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowError {
    /// The [`FlowSpec`] field at fault (`keys`, `mode`, `rshift`, ...).
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl FlowError {
    fn new(field: &'static str, message: impl Into<String>) -> FlowError {
        FlowError {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FlowError {}

/// How the key values become a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowMode {
    /// One key: `((key & mask) ^ xor) >> rshift`, plus `addend` (wrapping).
    Map {
        /// AND mask.
        mask: u32,
        /// XOR value.
        xor: u32,
        /// Right shift, 0..=31.
        rshift: u32,
        /// Added last, wrapping.
        addend: u32,
    },
    /// `jhash2` of the key values with the (possibly perturbed) seed.
    Hash,
}

/// The `cls_flow` classifier: see the [module documentation](self).
#[derive(Debug)]
pub struct FlowClassifier {
    /// Configured keys as bits of [`FlowKey::bit`].
    keymask: u32,
    /// Number of configured keys.
    nkeys: usize,
    mode: FlowMode,
    /// 0: no reduction.
    divisor: u32,
    /// Resolved base class (major never 0, minor never 0).
    baseclass: u32,
    /// Hash seed; stored only by the control thread.
    seed: Arc<AtomicU32>,
    /// Re-seed interval (hash mode only).
    perturb: Option<Duration>,
    /// Secret of the software rxhash.
    hashrnd: u32,
}

/// The root qdisc's major number: the appliance's class ids are `1:minor`.
const ROOT_MAJOR: u32 = 0x0001_0000;

impl FlowClassifier {
    /// A classifier for `spec`, using the process-wide [`rxhash_secret`] for the `rxhash` key.
    pub fn new(spec: &FlowSpec) -> Result<FlowClassifier, FlowError> {
        FlowClassifier::with_rxhash_secret(spec, rxhash_secret())
    }

    /// A classifier for `spec` whose software rxhash uses `hashrnd` (for tests and for an
    /// appliance that chooses its secret itself).
    pub fn with_rxhash_secret(spec: &FlowSpec, hashrnd: u32) -> Result<FlowClassifier, FlowError> {
        let mut keymask = 0u32;
        for name in &spec.keys {
            let Some(key) = FlowKey::from_name(name) else {
                return Err(FlowError::new(
                    "keys",
                    format!("unknown key {name:?}; allowed: {}", allowed_key_names()),
                ));
            };
            if let Some(why) = key.unsupported() {
                return Err(FlowError::new(
                    "keys",
                    format!(
                        "key {name:?} is not supported: {why}; allowed: {}",
                        allowed_key_names()
                    ),
                ));
            }
            if keymask & key.bit() != 0 {
                return Err(FlowError::new(
                    "keys",
                    format!("key {name:?} is listed more than once"),
                ));
            }
            keymask |= key.bit();
        }
        let nkeys = keymask.count_ones() as usize;
        if nkeys == 0 {
            return Err(FlowError::new(
                "keys",
                format!(
                    "at least one key is required; allowed: {}",
                    allowed_key_names()
                ),
            ));
        }

        let hash = match spec.mode.as_deref() {
            None | Some("map") => false,
            Some("hash") => true,
            Some(other) => {
                return Err(FlowError::new(
                    "mode",
                    format!("unknown mode {other:?}: expected \"map\" or \"hash\""),
                ))
            }
        };
        let mode = if hash {
            for (field, set) in [
                ("mask", spec.mask.is_some()),
                ("xor", spec.xor.is_some()),
                ("rshift", spec.rshift.is_some()),
                ("addend", spec.addend.is_some()),
            ] {
                if set {
                    return Err(FlowError::new(
                        field,
                        "applies only to map mode; hash mode hashes the keys as they are",
                    ));
                }
            }
            FlowMode::Hash
        } else {
            if nkeys != 1 {
                let default = if spec.mode.is_none() {
                    " (the default)"
                } else {
                    ""
                };
                return Err(FlowError::new(
                    "mode",
                    format!(
                        "map mode{default} takes exactly one key, {nkeys} are given; \
                         set mode to \"hash\" to hash several keys"
                    ),
                ));
            }
            if spec.perturb_secs.is_some() {
                return Err(FlowError::new(
                    "perturb_secs",
                    "applies only to hash mode (map mode has no hash seed)",
                ));
            }
            if spec.seed.is_some() {
                return Err(FlowError::new(
                    "seed",
                    "applies only to hash mode (map mode has no hash seed)",
                ));
            }
            let rshift = spec.rshift.unwrap_or(0);
            if rshift > 31 {
                return Err(FlowError::new(
                    "rshift",
                    format!("{rshift} is too large: a shift of a 32-bit key must be 0..=31"),
                ));
            }
            FlowMode::Map {
                mask: spec.mask.unwrap_or(u32::MAX),
                xor: spec.xor.unwrap_or(0),
                rshift,
                addend: spec.addend.unwrap_or(0),
            }
        };

        let perturb = match spec.perturb_secs {
            None => None,
            Some(0) => {
                return Err(FlowError::new(
                    "perturb_secs",
                    "must be at least 1 (seconds); leave it out to keep the seed fixed",
                ))
            }
            Some(s) => Some(Duration::from_secs(u64::from(s))),
        };

        let baseclass = match spec.baseclass {
            None => ROOT_MAJOR | 1,
            Some(b) if b & 0xffff == 0 => {
                return Err(FlowError::new(
                    "baseclass",
                    format!(
                        "{:x}:{:x} has minor 0; the minor must be 1..=ffff (minor 0 names a \
                         qdisc, not a class)",
                        b >> 16,
                        b & 0xffff
                    ),
                ))
            }
            // Major 0: the qdisc's own major, which is 1 for the appliance's root handle 1:.
            Some(b) if b >> 16 == 0 => ROOT_MAJOR | b,
            Some(b) => b,
        };

        Ok(FlowClassifier {
            keymask,
            nkeys,
            mode,
            divisor: spec.divisor.unwrap_or(0),
            baseclass,
            seed: Arc::new(AtomicU32::new(spec.seed.unwrap_or_else(random_u32))),
            perturb,
            hashrnd,
        })
    }

    /// The configured keys, in the order they are taken (bit order).
    pub fn keys(&self) -> impl Iterator<Item = FlowKey> + '_ {
        FlowKey::ALL
            .into_iter()
            .filter(|k| self.keymask & k.bit() != 0)
    }

    /// The mode and its parameters.
    pub fn mode(&self) -> FlowMode {
        self.mode
    }

    /// The resolved base class (`major:minor`, neither 0).
    pub fn baseclass(&self) -> u32 {
        self.baseclass
    }

    /// The current hash seed.
    pub fn seed(&self) -> u32 {
        self.seed.load(Ordering::Relaxed)
    }

    /// The values of the configured keys for `view`, in bit order: the first `n` entries of
    /// the array, `n` being the second member. Reads the frame at most once.
    #[inline]
    pub fn keys_of(&self, view: &PacketView<'_>) -> ([u32; FLOW_KEY_COUNT], usize) {
        let data = frame_bytes(view);
        let needs_rxhash = self.keymask & FlowKey::Rxhash.bit() != 0 && view.rss_hash.is_none();
        let (fk, complete) = if self.keymask & DISSECTOR_KEYS != 0 || needs_rxhash {
            dissect(data)
        } else {
            (FlowKeys::default(), false)
        };
        // The raw `skb->protocol` (network-order EtherType read as a little-endian u16), the
        // fallback of `dst` and `proto-dst`.
        let protocol = match read::<2>(data, 12) {
            Some(b) => u32::from(u16::from_le_bytes(b)),
            None => 0,
        };
        let mut out = [0u32; FLOW_KEY_COUNT];
        let mut n = 0;
        let mut mask = self.keymask;
        while mask != 0 {
            let bit = mask.trailing_zeros();
            mask &= mask - 1;
            let v = match bit {
                // src, nfct-src: the address, else the (absent) socket pointer.
                0 | 9 => u32::from_be_bytes(fk.src),
                // dst, nfct-dst: the address, else the (absent) route pointer ^ protocol.
                1 | 10 => match u32::from_be_bytes(fk.dst) {
                    0 => protocol,
                    d => d,
                },
                2 => u32::from(fk.ip_proto),
                3 | 11 => u32::from(fk.port_src()),
                4 | 12 => match fk.ports {
                    [0, 0, 0, 0] => protocol,
                    _ => u32::from(fk.port_dst()),
                },
                5 => u32::from(view.iif.0) + 1,
                6 => view.priority,
                7 => view.mark,
                16 => vlan_tag(data),
                17 => match view.rss_hash {
                    Some(h) => h,
                    None => rxhash_of(&fk, complete, self.hashrnd),
                },
                // nfct (no conntrack), and the keys refused at construction.
                _ => 0,
            };
            if let Some(slot) = out.get_mut(n) {
                *slot = v;
            }
            n += 1;
        }
        (out, n.min(FLOW_KEY_COUNT))
    }

    /// The class id for the key values `keys` (as [`FlowClassifier::keys_of`] gives them).
    #[inline]
    pub fn classid_of_keys(&self, keys: &[u32]) -> u32 {
        let r = match self.mode {
            FlowMode::Hash => jhash2(keys, self.seed.load(Ordering::Relaxed)),
            FlowMode::Map {
                mask,
                xor,
                rshift,
                addend,
            } => {
                let k = keys.first().copied().unwrap_or(0);
                (((k & mask) ^ xor) >> rshift).wrapping_add(addend)
            }
        };
        let r = r.checked_rem(self.divisor).unwrap_or(r);
        // TC_H_MAKE(baseclass, baseclass + r): the major of the base, the minor wrapping.
        (self.baseclass & 0xffff_0000) | (self.baseclass.wrapping_add(r) & 0xffff)
    }
}

/// The bytes of the frame in the view: the first segment, without anything past the frame's
/// length (never the case for a sane packet).
#[inline(always)]
fn frame_bytes<'a>(view: &PacketView<'a>) -> &'a [u8] {
    let len = usize::try_from(view.frame_len).unwrap_or(usize::MAX);
    view.data.get(..len).unwrap_or(view.data)
}

/// The `vlan-tag` key: the VLAN id of an in-band 802.1Q tag right after the MAC addresses.
#[inline(always)]
fn vlan_tag(data: &[u8]) -> u32 {
    match read::<4>(data, 12) {
        Some([0x81, 0x00, t0, t1]) => u32::from(u16::from_be_bytes([t0, t1]) & 0x0fff),
        _ => 0,
    }
}

impl Classifier for FlowClassifier {
    #[inline]
    fn classify(&self, pkt: &PacketView<'_>) -> Verdict {
        let (keys, n) = self.keys_of(pkt);
        let keys = keys.get(..n).unwrap_or(&keys);
        Verdict::Match(self.classid_of_keys(keys))
    }

    fn kind(&self) -> &'static str {
        "flow"
    }

    fn describe(&self) -> (&'static str, usize) {
        let engine = match self.mode {
            FlowMode::Hash => "flow-hash",
            FlowMode::Map { .. } => "flow-map",
        };
        (engine, self.nkeys)
    }

    fn perturbation(&self) -> Option<Perturbation> {
        self.perturb.map(|period| Perturbation {
            period,
            seed: Arc::clone(&self.seed),
        })
    }
}

/// Re-randomises the seeds of perturbed classifiers when their periods elapse (the kernel's
/// perturbation timers). Runs on the control thread; it only stores to the seeds, so workers
/// pick a new seed up at their next packet without any synchronisation.
#[derive(Debug, Default)]
pub struct Perturber {
    entries: Vec<PerturbEntry>,
}

#[derive(Debug)]
struct PerturbEntry {
    period: Duration,
    seed: Arc<AtomicU32>,
    /// `None` when one period from now is beyond what [`Instant`] represents: never due.
    due: Option<Instant>,
}

impl Perturber {
    /// A perturber with nothing to re-seed.
    pub fn new() -> Perturber {
        Perturber::default()
    }

    /// One for every classifier of `generation` that has a perturbation, first due one period
    /// after `now`.
    pub fn of_generation(generation: &Generation, now: Instant) -> Perturber {
        let mut p = Perturber::new();
        for (_, _, f) in generation.filters() {
            if let Some(pert) = f.classifier.perturbation() {
                p.add(pert, now);
            }
        }
        p
    }

    /// Adds a seed to re-randomise every `p.period`, first one period after `now`.
    pub fn add(&mut self, p: Perturbation, now: Instant) {
        self.entries.push(PerturbEntry {
            due: now.checked_add(p.period),
            period: p.period,
            seed: p.seed,
        });
    }

    /// Number of seeds looked after.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is nothing to re-seed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The earliest time a seed is due (for the caller's sleep), if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.iter().filter_map(|e| e.due).min()
    }

    /// Stores a fresh `random()` value into every seed whose period has elapsed at `now`, and
    /// schedules its next re-seed one period after `now` (as the kernel re-arms its timer from
    /// the time it fired). Returns how many seeds were changed.
    pub fn tick(&mut self, now: Instant, random: &mut impl FnMut() -> u32) -> usize {
        let mut n = 0;
        for e in &mut self.entries {
            if e.due.is_some_and(|due| now >= due) {
                e.seed.store(random(), Ordering::Relaxed);
                e.due = now.checked_add(e.period);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::gen::{ipv4_frame, ipv6_frame, random_flow_frame};
    use super::*;
    use crate::cbpf::gen::Rng;
    use crate::pipeline::PortIndex;
    use crate::wire::Parsed;
    use proptest::prelude::*;

    const PARSED: Parsed = Parsed {
        ethertype: 0,
        vlan_tci: None,
        inner_vlan_tci: None,
        l3_offset: 0,
        l3: crate::wire::L3::Other,
        l4_proto: 0,
        l4_offset: 0,
        ip_len: 0,
        later_fragment: false,
        fragment: false,
        src_port: 0,
        dst_port: 0,
    };

    /// A view of `data` received on port 2 (ifindex 3), priority 7, mark 0x55, no RSS hash.
    fn view(data: &[u8]) -> PacketView<'_> {
        PacketView {
            data,
            frame_len: data.len() as u32,
            parsed: &PARSED,
            dev: PortIndex(0),
            iif: PortIndex(2),
            ingress_mac: [0; 6],
            rss_hash: None,
            mark: 0x55,
            priority: 7,
            classid: 0,
            flowlabel: 0,
        }
    }

    fn spec(keys: &[&str]) -> FlowSpec {
        FlowSpec {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            ..FlowSpec::default()
        }
    }

    fn hash_spec(keys: &[&str], seed: u32) -> FlowSpec {
        FlowSpec {
            mode: Some("hash".into()),
            seed: Some(seed),
            ..spec(keys)
        }
    }

    const SECRET: u32 = 0x1234_5678;

    fn classifier(s: &FlowSpec) -> FlowClassifier {
        FlowClassifier::with_rxhash_secret(s, SECRET).unwrap()
    }

    /// Every supported key's value for `data` (unsupported ones as 0), by name.
    fn all_keys(data: &[u8]) -> std::collections::BTreeMap<&'static str, u32> {
        FlowKey::ALL
            .iter()
            .filter(|k| k.unsupported().is_none())
            .map(|k| {
                let c = classifier(&spec(&[k.name()]));
                let (v, n) = c.keys_of(&view(data));
                assert_eq!(n, 1);
                (k.name(), v[0])
            })
            .collect()
    }

    fn key(name: &str, data: &[u8]) -> u32 {
        all_keys(data)[name]
    }

    const MACS: [u8; 12] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn v4(proto: u8, src: [u8; 4], dst: [u8; 4], frag: u16) -> Vec<u8> {
        let f = frag.to_be_bytes();
        cat(&[
            &[0x45, 0, 0, 40, 0, 1, f[0], f[1], 64, proto, 0, 0],
            &src,
            &dst,
        ])
    }

    fn v6(nh: u8, src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
        cat(&[&[0x60, 0, 0, 0, 0, 8, nh, 64], &src, &dst])
    }

    const PORTS: [u8; 8] = [0x04, 0xd2, 0x16, 0x2e, 0, 8, 0, 0]; // 1234 -> 5678

    /// The keys of the 5-tuple and the fallbacks, for comparisons in one line:
    /// (src, dst, proto, proto-src, proto-dst).
    fn tuple(data: &[u8]) -> (u32, u32, u32, u32, u32) {
        let k = all_keys(data);
        (
            k["src"],
            k["dst"],
            k["proto"],
            k["proto-src"],
            k["proto-dst"],
        )
    }

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 1, 0, 2];
    const AH: u32 = 0x0a00_0001;
    const BH: u32 = 0x0a01_0002;
    /// Raw `skb->protocol` fallbacks on a little-endian host.
    const P_IP: u32 = 0x0008;
    const P_VLAN: u32 = 0x0081;

    #[test]
    fn key_names_round_trip_and_bits_follow_the_kernel_numbering() {
        for (i, k) in FlowKey::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
            assert_eq!(FlowKey::from_name(k.name()), Some(*k));
            assert_eq!(k.bit(), 1 << i);
        }
        assert_eq!(FlowKey::from_name("source"), None);
        assert_eq!(FlowKey::Rxhash as u32, 17);
        assert_eq!(FlowKey::VlanTag.to_string(), "vlan-tag");
    }

    #[test]
    fn ipv4_tcp_udp_and_icmp_keys() {
        let f = cat(&[&MACS, &[8, 0], &v4(6, A, B, 0x4000), &PORTS]);
        let k = all_keys(&f);
        assert_eq!(tuple(&f), (AH, BH, 6, 1234, 5678));
        assert_eq!(
            (
                k["nfct-src"],
                k["nfct-dst"],
                k["nfct-proto-src"],
                k["nfct-proto-dst"]
            ),
            (AH, BH, 1234, 5678)
        );
        assert_eq!((k["iif"], k["priority"], k["mark"]), (3, 7, 0x55));
        assert_eq!((k["nfct"], k["vlan-tag"]), (0, 0));
        assert_eq!(k["rxhash"], software_rxhash(&f, SECRET));
        assert_ne!(k["rxhash"], 0);

        let f = cat(&[&MACS, &[8, 0], &v4(17, A, B, 0), &PORTS]);
        assert_eq!(tuple(&f), (AH, BH, 17, 1234, 5678));
        // ICMP has no ports: proto-src falls back to 0, proto-dst to the raw EtherType.
        let f = cat(&[&MACS, &[8, 0], &v4(1, A, B, 0), &PORTS]);
        assert_eq!(tuple(&f), (AH, BH, 1, 0, P_IP));
        // Ports of zero fall back too, even for TCP.
        let f = cat(&[&MACS, &[8, 0], &v4(6, A, B, 0), &[0; 8]]);
        assert_eq!(tuple(&f), (AH, BH, 6, 0, P_IP));
        // Addresses of zero fall back: src to 0, dst to the protocol.
        let f = cat(&[&MACS, &[8, 0], &v4(17, [0; 4], [0; 4], 0), &PORTS]);
        assert_eq!(tuple(&f), (0, P_IP, 17, 1234, 5678));
        // Only the first half of the ports is zero: the key is still read.
        let f = cat(&[&MACS, &[8, 0], &v4(17, A, B, 0), &[0, 0, 0, 53]]);
        assert_eq!(tuple(&f), (AH, BH, 17, 0, 53));
    }

    #[test]
    fn ipv4_options_move_the_ports() {
        let mut h = v4(17, A, B, 0);
        h[0] = 0x47; // IHL 7: 8 bytes of options
        let f = cat(&[&MACS, &[8, 0], &h, &[1; 8], &PORTS]);
        assert_eq!(tuple(&f), (AH, BH, 17, 1234, 5678));
        // IHL below 5: dissection fails before the addresses are taken.
        for ihl in 0..5u8 {
            h[0] = 0x40 | ihl;
            let f = cat(&[&MACS, &[8, 0], &h, &PORTS]);
            assert_eq!(tuple(&f), (0, P_IP, 0, 0, P_IP), "ihl {ihl}");
            assert_eq!(software_rxhash(&f, SECRET), 0);
        }
        // The version nibble is not checked.
        h[0] = 0x65;
        let f = cat(&[&MACS, &[8, 0], &h, &PORTS]);
        assert_eq!(tuple(&f), (AH, BH, 17, 1234, 5678));
    }

    #[test]
    fn fragments_have_protocol_zero_and_no_ports() {
        for frag in [0x2000u16, 0x0001, 0x2001, 0x1fff, 0x3fff] {
            let f = cat(&[&MACS, &[8, 0], &v4(6, A, B, frag), &PORTS]);
            assert_eq!(tuple(&f), (AH, BH, 0, 0, P_IP), "frag {frag:#x}");
        }
        // DF and the reserved bit do not make a fragment.
        for frag in [0x4000u16, 0x8000, 0xc000] {
            let f = cat(&[&MACS, &[8, 0], &v4(6, A, B, frag), &PORTS]);
            assert_eq!(tuple(&f), (AH, BH, 6, 1234, 5678), "frag {frag:#x}");
        }
    }

    #[test]
    fn ipv6_addresses_are_folded_and_extension_headers_not_walked() {
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        s[15] = 1;
        let mut d = [0u8; 16];
        d[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        d[8..12].copy_from_slice(&[0xff, 0, 0, 0]);
        d[15] = 2;
        let f = cat(&[&MACS, &[0x86, 0xdd], &v6(6, s, d), &PORTS]);
        assert_eq!(
            tuple(&f),
            (0x2001_0db9, 0x2001_0db8 ^ 0xff00_0000 ^ 2, 6, 1234, 5678)
        );
        // A hop-by-hop header is the protocol: no ports.
        let f = cat(&[&MACS, &[0x86, 0xdd], &v6(0, s, d), &[6, 0, 0, 0], &PORTS]);
        let t = tuple(&f);
        assert_eq!((t.2, t.3, t.4), (0, 0, 0xdd86));
        // An address folding to zero falls back.
        let f = cat(&[&MACS, &[0x86, 0xdd], &v6(17, [7; 16], [0; 16]), &PORTS]);
        assert_eq!(tuple(&f), (0, 0xdd86, 17, 1234, 5678));
        assert_eq!(
            tuple(&ipv6_frame([0xfd; 16], [0xfe; 16], 6, 1, 443)),
            (0, 0xdd86, 6, 1, 443)
        );
    }

    #[test]
    fn vlan_and_qinq_tags_are_skipped_and_the_vlan_key_reads_only_8021q() {
        let inner = cat(&[&[8, 0], &v4(17, A, B, 0), &PORTS]);
        let f = cat(&[&MACS, &[0x81, 0x00, 0xe0, 0x64], &inner]);
        assert_eq!(tuple(&f), (AH, BH, 17, 1234, 5678));
        assert_eq!(key("vlan-tag", &f), 100);
        // 802.1ad outer, 802.1Q inner: dissected; the vlan key sees no 802.1Q tag at offset 12.
        let f = cat(&[
            &MACS,
            &[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x0f, 0xff],
            &inner,
        ]);
        assert_eq!(tuple(&f), (AH, BH, 17, 1234, 5678));
        assert_eq!(key("vlan-tag", &f), 0);
        // Two 802.1Q tags: the outer id; three tags are followed as well.
        let f = cat(&[
            &MACS,
            &[
                0x81, 0x00, 0x20, 0x07, 0x81, 0x00, 0x00, 0x09, 0x88, 0xa8, 0, 1,
            ],
            &inner,
        ]);
        assert_eq!(tuple(&f), (AH, BH, 17, 1234, 5678));
        assert_eq!(key("vlan-tag", &f), 7);
        // ARP inside a tag: dst falls back to the raw outer protocol, 0x8100.
        let f = cat(&[&MACS, &[0x81, 0x00, 0, 5, 8, 6], &[0; 28]]);
        assert_eq!(tuple(&f), (0, P_VLAN, 0, 0, P_VLAN));
        assert_eq!(key("vlan-tag", &f), 5);
        // A tag cut short.
        let f = cat(&[&MACS, &[0x81, 0x00, 0, 5, 8]]);
        assert_eq!(tuple(&f), (0, P_VLAN, 0, 0, P_VLAN));
        assert_eq!(key("vlan-tag", &f), 5);
        assert_eq!(key("vlan-tag", &f[..15]), 0);
    }

    #[test]
    fn pppoe_sessions_carry_ipv4_or_ipv6() {
        let ses = |ppp: [u8; 2]| cat(&[&MACS, &[0x88, 0x64, 0x11, 0, 0, 1, 0, 42], &ppp]);
        let f = cat(&[&ses([0, 0x21]), &v4(6, A, B, 0), &PORTS]);
        assert_eq!(tuple(&f), (AH, BH, 6, 1234, 5678));
        let f = cat(&[&ses([0, 0x57]), &v6(17, [0; 16], [1; 16]), &PORTS]);
        assert_eq!(tuple(&f), (0, 0x6488, 17, 1234, 5678));
        // LCP, or an EtherType where the PPP protocol belongs: not dissected.
        for ppp in [[0xc0, 0x21], [0x08, 0x00]] {
            let f = cat(&[&ses(ppp), &v4(6, A, B, 0), &PORTS]);
            assert_eq!(tuple(&f), (0, 0x6488, 0, 0, 0x6488));
        }
    }

    fn gre(flags: u16, proto: u16, optional: usize) -> Vec<u8> {
        cat(&[
            &flags.to_be_bytes(),
            &proto.to_be_bytes(),
            &vec![0xee; 4 * optional],
        ])
    }

    const C: [u8; 4] = [192, 168, 0, 1];
    const D: [u8; 4] = [192, 168, 0, 2];
    const CH: u32 = 0xc0a8_0001;
    const DH: u32 = 0xc0a8_0002;

    #[test]
    fn gre_is_looked_into_for_version_0_without_routing() {
        let outer = |g: &[u8]| cat(&[&MACS, &[8, 0], &v4(47, A, B, 0), g]);
        let inner = cat(&[&v4(17, C, D, 0), &PORTS]);
        for (flags, optional) in [
            (0u16, 0),
            (0x8000, 1),
            (0x2000, 1),
            (0x1000, 1),
            (0xb000, 3),
            (0xa000, 2),
            (0x0800, 0), // strict source route: ignored
            (0x00f8, 0), // recursion control and reserved flags: ignored
        ] {
            let f = cat(&[&outer(&gre(flags, 0x0800, optional)), &inner]);
            assert_eq!(tuple(&f), (CH, DH, 17, 1234, 5678), "flags {flags:#x}");
        }
        // Version != 0 or routing present: the outer packet is the flow; GRE has no ports.
        for flags in [0x0001u16, 0x0007, 0x4000, 0xc000] {
            let f = cat(&[&outer(&gre(flags, 0x0800, 0)), &inner]);
            assert_eq!(tuple(&f), (AH, BH, 47, 0, P_IP), "flags {flags:#x}");
        }
        // IPv6 inside.
        let f = cat(&[
            &outer(&gre(0x2000, 0x86dd, 1)),
            &v6(6, [0; 16], [0; 16]),
            &PORTS,
        ]);
        assert_eq!(tuple(&f), (0, P_IP, 6, 1234, 5678));
        // Transparent Ethernet bridging, with a VLAN tag inside.
        let f = cat(&[
            &outer(&gre(0x8000, 0x6558, 1)),
            &MACS,
            &[0x81, 0, 0, 9, 8, 0],
            &inner,
        ]);
        assert_eq!(tuple(&f), (CH, DH, 17, 1234, 5678));
        assert_eq!(key("vlan-tag", &f), 0);
        // An unknown inner protocol fails: the outer addresses stay, protocol 0.
        let f = cat(&[&outer(&gre(0, 0x880b, 0)), &inner]);
        assert_eq!(tuple(&f), (AH, BH, 0, 0, P_IP));
        assert_eq!(software_rxhash(&f, SECRET), 0);
        // Inner header cut short: the outer addresses stay.
        let f = cat(&[&outer(&gre(0, 0x0800, 0)), &inner[..19]]);
        assert_eq!(tuple(&f), (AH, BH, 0, 0, P_IP));
        // GRE header cut short.
        let f = cat(&[&outer(&gre(0, 0x0800, 0))[..37]]);
        assert_eq!(tuple(&f), (AH, BH, 0, 0, P_IP));
        // Inner Ethernet header cut short.
        let f = cat(&[&outer(&gre(0, 0x6558, 0)), &MACS, &[8]]);
        assert_eq!(tuple(&f), (AH, BH, 0, 0, P_IP));
        // GRE over IPv6, GRE in GRE.
        let f = cat(&[
            &MACS,
            &[0x86, 0xdd],
            &v6(47, [1; 16], [2; 16]),
            &gre(0, 0x0800, 0),
            &v4(47, A, B, 0),
            &gre(0x1000, 0x0800, 1),
            &inner,
        ]);
        assert_eq!(tuple(&f), (CH, DH, 17, 1234, 5678));
    }

    #[test]
    fn ip_in_ip_takes_the_inner_header() {
        let f = cat(&[&MACS, &[8, 0], &v4(4, A, B, 0), &v4(6, C, D, 0), &PORTS]);
        assert_eq!(tuple(&f), (CH, DH, 6, 1234, 5678));
        let mut s = [0u8; 16];
        s[3] = 9;
        let f = cat(&[
            &MACS,
            &[8, 0],
            &v4(41, A, B, 0),
            &v6(17, s, [0; 16]),
            &PORTS,
        ]);
        assert_eq!(tuple(&f), (9, P_IP, 17, 1234, 5678));
        // IPv4 in IPv6 (protocol 4 after the IPv6 header) too.
        let f = cat(&[&MACS, &[0x86, 0xdd], &v6(4, s, s), &v4(6, C, D, 0), &PORTS]);
        assert_eq!(tuple(&f), (CH, DH, 6, 1234, 5678));
        // Inner header truncated: the outer addresses stay, protocol 0.
        let f = cat(&[&MACS, &[8, 0], &v4(4, A, B, 0), &v4(6, C, D, 0)[..12]]);
        assert_eq!(tuple(&f), (AH, BH, 0, 0, P_IP));
        assert_eq!(software_rxhash(&f, SECRET), 0);
        // A fragment carrying IPIP is not looked into.
        let f = cat(&[
            &MACS,
            &[8, 0],
            &v4(4, A, B, 0x2000),
            &v4(6, C, D, 0),
            &PORTS,
        ]);
        assert_eq!(tuple(&f), (AH, BH, 0, 0, P_IP));
    }

    #[test]
    fn esp_and_ah_give_the_spi_and_other_protocols_their_ports() {
        let spi = [0xde, 0xad, 0xbe, 0xef];
        let f = cat(&[&MACS, &[8, 0], &v4(50, A, B, 0), &spi, &[0; 4]]);
        assert_eq!(tuple(&f), (AH, BH, 50, 0xdead, 0xbeef));
        let f = cat(&[&MACS, &[8, 0], &v4(51, A, B, 0), &[6, 4, 0, 0], &spi]);
        assert_eq!(tuple(&f), (AH, BH, 51, 0xdead, 0xbeef));
        // AH cut before the SPI: no ports, protocol still 51.
        let f = cat(&[&MACS, &[8, 0], &v4(51, A, B, 0), &[6, 4, 0, 0, 0xde]]);
        assert_eq!(tuple(&f), (AH, BH, 51, 0, P_IP));
        for p in [33u8, 132, 136] {
            let f = cat(&[&MACS, &[8, 0], &v4(p, A, B, 0), &PORTS]);
            assert_eq!(tuple(&f), (AH, BH, u32::from(p), 1234, 5678));
        }
        for p in [0u8, 2, 58, 89, 255] {
            let f = cat(&[&MACS, &[8, 0], &v4(p, A, B, 0), &PORTS]);
            assert_eq!(tuple(&f), (AH, BH, u32::from(p), 0, P_IP));
        }
    }

    #[test]
    fn non_ip_frames_use_the_fallbacks() {
        let f = cat(&[&MACS, &[8, 6], &[0, 1, 8, 0, 6, 4, 0, 1], &[0x11; 20]]);
        let k = all_keys(&f);
        assert_eq!(tuple(&f), (0, 0x0608, 0, 0, 0x0608));
        assert_eq!((k["nfct-dst"], k["nfct-proto-dst"]), (0x0608, 0x0608));
        assert_eq!(k["rxhash"], 0);
        assert_eq!((k["iif"], k["mark"], k["priority"]), (3, 0x55, 7));
        // Shorter than an Ethernet header: no protocol at all.
        assert_eq!(tuple(&MACS), (0, 0, 0, 0, 0));
        assert_eq!(tuple(&[]), (0, 0, 0, 0, 0));
    }

    #[test]
    fn bytes_past_the_frame_length_are_not_read() {
        let f = cat(&[&MACS, &[8, 0], &v4(17, A, B, 0), &PORTS]);
        let c = classifier(&spec(&["proto-src"]));
        let mut v = view(&f);
        v.frame_len = 35;
        assert_eq!(c.keys_of(&v).0[0], 0);
        v.frame_len = 38;
        assert_eq!(c.keys_of(&v).0[0], 1234);
    }

    #[test]
    fn metadata_keys_and_the_rss_hash() {
        let f = ipv4_frame(A, B, 17, 1, 2);
        let c = classifier(&hash_spec(&["rxhash", "mark", "iif", "priority"], 0));
        let mut v = view(&f);
        v.iif = PortIndex(0);
        v.mark = 0xffff_ffff;
        v.priority = 0x10001;
        let sw = software_rxhash(&f, SECRET);
        assert_eq!(c.keys_of(&v), {
            let mut a = [0u32; FLOW_KEY_COUNT];
            a[..4].copy_from_slice(&[1, 0x10001, 0xffff_ffff, sw]);
            (a, 4)
        });
        v.rss_hash = Some(0xabcd);
        assert_eq!(c.keys_of(&v).0[3], 0xabcd);
        // The secret is the appliance's: another one gives another software hash.
        let other = FlowClassifier::with_rxhash_secret(&spec(&["rxhash"]), SECRET ^ 1).unwrap();
        assert_ne!(other.keys_of(&view(&f)).0[0], sw);
        assert_eq!(rxhash_secret(), rxhash_secret());
    }

    #[test]
    fn software_rxhash_is_symmetric_and_never_zero_when_dissected() {
        let mut r = Rng::new(3);
        for _ in 0..2000 {
            let (a, b) = (r.next_u32().to_be_bytes(), r.next_u32().to_be_bytes());
            let (pa, pb) = (r.next_u32() as u16, r.next_u32() as u16);
            let (a, pb) = if r.chance(1, 8) { (b, pa) } else { (a, pb) };
            let there = ipv4_frame(a, b, 6, pa, pb);
            let back = ipv4_frame(b, a, 6, pb, pa);
            let h = software_rxhash(&there, SECRET);
            assert_eq!(h, software_rxhash(&back, SECRET));
            assert_ne!(h, 0);
        }
        // The exact formula: raw words as a little-endian host loads them, swapped so that
        // dst >= src, ports as one little-endian word.
        let f = ipv4_frame([10, 0, 0, 2], [10, 0, 0, 1], 17, 1000, 53);
        let (dst, src) = (
            u32::from_le_bytes([10, 0, 0, 2]),
            u32::from_le_bytes([10, 0, 0, 1]),
        );
        assert!(dst > src);
        let ports = u32::from_le_bytes([0, 53, 0x03, 0xe8]);
        assert_eq!(
            software_rxhash(&f, 99),
            jhash_3words_legacy(dst, src, ports, 99)
        );
    }

    #[test]
    fn keys_are_taken_in_bit_order_whatever_the_listing() {
        let f = ipv4_frame(A, B, 6, 1234, 80);
        let a = classifier(&hash_spec(&["mark", "proto-dst", "src", "iif"], 5));
        let b = classifier(&hash_spec(&["iif", "src", "mark", "proto-dst"], 5));
        let (ka, n) = a.keys_of(&view(&f));
        assert_eq!(&ka[..n], &[AH, 80, 3, 0x55]);
        assert_eq!(b.keys_of(&view(&f)), (ka, n));
        assert_eq!(
            a.classify(&view(&f)),
            Verdict::Match(a.classid_of_keys(&ka[..n]))
        );
        assert_eq!(
            a.classid_of_keys(&ka[..n]),
            0x0001_0000 | (1 + jhash2(&ka[..n], 5)) & 0xffff
        );
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            [FlowKey::Src, FlowKey::ProtoDst, FlowKey::Iif, FlowKey::Mark]
        );
        assert_eq!(a.describe(), ("flow-hash", 4));
    }

    #[test]
    fn map_mode_arithmetic() {
        let f = ipv4_frame(A, B, 6, 1234, 80);
        let mut v = view(&f);
        v.mark = 0x1234_5678;
        let map = |s: FlowSpec| classifier(&FlowSpec { ..s });
        let c = map(FlowSpec {
            mask: Some(0xff00_ff00),
            xor: Some(0x0f0f_0000),
            rshift: Some(8),
            addend: Some(0xffff_fff0),
            divisor: Some(1000),
            baseclass: Some(0x0002_fff0),
            ..spec(&["mark"])
        });
        // ((0x12345678 & 0xff00ff00) ^ 0x0f0f0000) >> 8 = 0x1d0f56; + 0xfffffff0 wraps to
        // 0x1d0f46 = 1904454; % 1000 = 454; 0xfff0 + 454 = 0x101b6, minor wraps to 0x01b6.
        assert_eq!(c.classify(&v), Verdict::Match(0x0002_01b6));
        assert_eq!(c.describe(), ("flow-map", 1));
        assert!(c.perturbation().is_none());
        // Defaults: mask all ones, no divisor, base class 1:1.
        let c = map(spec(&["mark"]));
        assert_eq!(c.baseclass(), 0x0001_0001);
        assert_eq!(c.classify(&v), Verdict::Match(0x0001_5679));
        // Major 0 means the root's major, 1.
        let c = map(FlowSpec {
            baseclass: Some(0x10),
            divisor: Some(16),
            ..spec(&["mark"])
        });
        assert_eq!(c.classify(&v), Verdict::Match(0x0001_0018));
        // rshift 31 and a divisor of 1.
        let c = map(FlowSpec {
            rshift: Some(31),
            ..spec(&["mark"])
        });
        v.mark = 0x8000_0000;
        assert_eq!(c.classify(&v), Verdict::Match(0x0001_0002));
        let c = map(FlowSpec {
            divisor: Some(1),
            ..spec(&["src"])
        });
        assert_eq!(c.classify(&v), Verdict::Match(0x0001_0001));
        // Port keys map directly: proto-dst & 0xff.
        let c = map(FlowSpec {
            mask: Some(0xff),
            baseclass: Some(0x0001_0100),
            ..spec(&["proto-dst"])
        });
        assert_eq!(c.classify(&v), Verdict::Match(0x0001_0150));
        assert_eq!(
            c.mode(),
            FlowMode::Map {
                mask: 0xff,
                xor: 0,
                rshift: 0,
                addend: 0
            }
        );
    }

    fn err(s: FlowSpec) -> FlowError {
        FlowClassifier::new(&s).unwrap_err()
    }

    #[test]
    fn invalid_specs_name_the_field_and_what_is_allowed() {
        let e = err(spec(&[]));
        assert_eq!(e.field, "keys");
        assert!(
            e.message.contains("at least one") && e.message.contains("proto-src"),
            "{e}"
        );
        let e = err(spec(&["src", "sport"]));
        assert_eq!(e.field, "keys");
        assert!(
            e.message.contains("\"sport\"") && e.message.contains("vlan-tag"),
            "{e}"
        );
        assert!(!e.message.contains("rt-classid"), "{e}");
        let e = err(hash_spec(&["src", "dst", "src"], 0));
        assert!(
            e.message.contains("\"src\" is listed more than once"),
            "{e}"
        );
        for k in ["rt-classid", "sk-uid", "sk-gid"] {
            let e = err(spec(&[k]));
            assert_eq!(e.field, "keys");
            assert!(e.message.contains("not supported") && e.message.contains("always be 0"));
        }
        let e = err(spec(&["src", "dst"]));
        assert_eq!(e.field, "mode");
        assert!(
            e.message.contains("(the default)")
                && e.message.contains("exactly one key, 2")
                && e.message.contains("\"hash\""),
            "{e}"
        );
        let e = err(FlowSpec {
            mode: Some("map".into()),
            ..spec(&["src", "dst"])
        });
        assert!(!e.message.contains("default"), "{e}");
        let e = err(FlowSpec {
            mode: Some("Hash".into()),
            ..spec(&["src"])
        });
        assert_eq!(
            e.to_string(),
            "mode: unknown mode \"Hash\": expected \"map\" or \"hash\""
        );
        let e = err(FlowSpec {
            perturb_secs: Some(10),
            ..spec(&["src"])
        });
        assert_eq!(e.field, "perturb_secs");
        assert!(e.message.contains("only to hash mode"));
        let e = err(FlowSpec {
            seed: Some(1),
            ..spec(&["src"])
        });
        assert_eq!(e.field, "seed");
        let e = err(FlowSpec {
            perturb_secs: Some(0),
            ..hash_spec(&["src"], 0)
        });
        assert_eq!(e.field, "perturb_secs");
        assert!(e.message.contains("at least 1"));
        for (field, s) in [
            (
                "mask",
                FlowSpec {
                    mask: Some(1),
                    ..hash_spec(&["src"], 0)
                },
            ),
            (
                "xor",
                FlowSpec {
                    xor: Some(1),
                    ..hash_spec(&["src"], 0)
                },
            ),
            (
                "rshift",
                FlowSpec {
                    rshift: Some(1),
                    ..hash_spec(&["src"], 0)
                },
            ),
            (
                "addend",
                FlowSpec {
                    addend: Some(1),
                    ..hash_spec(&["src"], 0)
                },
            ),
        ] {
            let e = err(s);
            assert_eq!(e.field, field);
            assert!(e.message.contains("only to map mode"), "{e}");
        }
        let e = err(FlowSpec {
            rshift: Some(32),
            ..spec(&["src"])
        });
        assert_eq!(e.field, "rshift");
        assert!(e.message.contains("0..=31"), "{e}");
        for b in [0u32, 0x0001_0000, 0xffff_0000] {
            let e = err(FlowSpec {
                baseclass: Some(b),
                ..spec(&["src"])
            });
            assert_eq!(e.field, "baseclass");
            assert!(e.message.contains("minor 0"), "{e}");
        }
        assert!(FlowClassifier::new(&FlowSpec {
            rshift: Some(31),
            baseclass: Some(0xffff_ffff),
            ..spec(&["src"])
        })
        .is_ok());
    }

    #[test]
    fn a_fixed_seed_is_deterministic_and_a_random_one_is_drawn() {
        let f = ipv4_frame(A, B, 17, 1, 2);
        let s = FlowSpec {
            divisor: Some(1 << 16),
            ..hash_spec(&["src", "dst", "proto", "proto-src", "proto-dst"], 77)
        };
        let (a, b) = (classifier(&s), classifier(&s));
        assert_eq!(a.seed(), 77);
        assert_eq!(a.classify(&view(&f)), b.classify(&view(&f)));
        // Without a seed, classifiers draw their own.
        let s = FlowSpec { seed: None, ..s };
        let seeds: std::collections::BTreeSet<u32> =
            (0..8).map(|_| classifier(&s).seed()).collect();
        assert!(seeds.len() > 1, "{seeds:?}");
    }

    /// Pearson's chi-square statistic of `counts` against a uniform distribution.
    fn chi_square(counts: &[u64]) -> f64 {
        let total: u64 = counts.iter().sum();
        let expect = total as f64 / counts.len() as f64;
        counts
            .iter()
            .map(|&c| (c as f64 - expect).powi(2) / expect)
            .sum()
    }

    #[test]
    fn hash_mode_spreads_flows_evenly_and_keeps_a_flow_in_one_class() {
        let c = classifier(&FlowSpec {
            divisor: Some(64),
            baseclass: Some(0x0001_0100),
            ..hash_spec(&["src", "dst", "proto", "proto-src", "proto-dst"], 0xfeed)
        });
        let mut r = Rng::new(11);
        let mut counts = [0u64; 64];
        for i in 0..100_000u32 {
            let f = if i % 4 == 0 {
                let mut s = [0u8; 16];
                let mut d = [0u8; 16];
                s[..8].copy_from_slice(&r.next_u64().to_be_bytes());
                d[8..].copy_from_slice(&r.next_u64().to_be_bytes());
                ipv6_frame(s, d, 6, r.next_u32() as u16, 443)
            } else {
                ipv4_frame(
                    r.next_u32().to_be_bytes(),
                    [10, 0, 0, 1],
                    r.pick(&[6, 17]),
                    r.next_u32() as u16,
                    r.pick(&[53, 80, 443]),
                )
            };
            let Verdict::Match(cid) = c.classify(&view(&f)) else {
                panic!("flow always matches");
            };
            assert_eq!(cid >> 16, 1);
            let minor = (cid & 0xffff) - 0x100;
            assert!(minor < 64, "{cid:#x}");
            counts[minor as usize] += 1;
            if i % 1000 == 0 {
                assert_eq!(c.classify(&view(&f)), Verdict::Match(cid));
            }
        }
        // 63 degrees of freedom: P(chi2 > 110) < 0.0002 and P(chi2 < 30) < 0.0001 for a
        // uniform hash; the inputs are fixed, so the test is deterministic.
        let x2 = chi_square(&counts);
        assert!(
            (30.0..110.0).contains(&x2),
            "chi-square {x2}, counts {counts:?}"
        );
    }

    #[test]
    fn perturbation_reseeds_through_the_perturber() {
        let s = FlowSpec {
            divisor: Some(1024),
            perturb_secs: Some(10),
            ..hash_spec(&["src", "dst", "proto", "proto-src", "proto-dst"], 1)
        };
        let c = classifier(&s);
        let p = c.perturbation().expect("hash mode with perturb");
        assert_eq!(p.period, Duration::from_secs(10));
        assert!(classifier(&hash_spec(&["src"], 1)).perturbation().is_none());

        let frames: Vec<Vec<u8>> = (0..64u16)
            .map(|i| ipv4_frame(A, B, 17, 1000 + i, 53))
            .collect();
        let classes = |c: &FlowClassifier| -> Vec<Verdict> {
            frames.iter().map(|f| c.classify(&view(f))).collect()
        };
        let before = classes(&c);

        let t0 = Instant::now();
        let mut perturber = Perturber::new();
        assert!(perturber.is_empty());
        perturber.add(p, t0);
        assert_eq!(perturber.len(), 1);
        assert_eq!(perturber.next_due(), Some(t0 + Duration::from_secs(10)));
        let mut draws = 0u32;
        let mut random = || {
            draws += 1;
            0xdead_0000 + draws
        };
        assert_eq!(perturber.tick(t0 + Duration::from_secs(9), &mut random), 0);
        assert_eq!(c.seed(), 1);
        assert_eq!(classes(&c), before);
        assert_eq!(perturber.tick(t0 + Duration::from_secs(11), &mut random), 1);
        assert_eq!(c.seed(), 0xdead_0001);
        assert_ne!(classes(&c), before);
        // Re-armed one period after the tick that fired.
        assert_eq!(perturber.next_due(), Some(t0 + Duration::from_secs(21)));
        assert_eq!(perturber.tick(t0 + Duration::from_secs(20), &mut random), 0);
        assert_eq!(perturber.tick(t0 + Duration::from_secs(21), &mut random), 1);
        assert_eq!(c.seed(), 0xdead_0002);
        // The longest period does not overflow the clock.
        let long = classifier(&FlowSpec {
            perturb_secs: Some(u32::MAX),
            ..hash_spec(&["src"], 1)
        });
        perturber.add(long.perturbation().unwrap(), t0);
        assert_eq!(perturber.tick(t0 + Duration::from_secs(31), &mut random), 1);
        assert_eq!(long.seed(), 1);
    }

    #[test]
    fn perturber_collects_the_perturbed_classifiers_of_a_generation() {
        use crate::pipeline::{Filter, PortPipeline};
        let perturbed = FlowSpec {
            perturb_secs: Some(5),
            ..hash_spec(&["src"], 1)
        };
        let mut ports: Vec<PortPipeline> = (0..2).map(|_| PortPipeline::default()).collect();
        ports[0].ingress = vec![
            Filter::new("a", Box::new(classifier(&perturbed)), vec![]),
            Filter::new("b", Box::new(classifier(&hash_spec(&["src"], 1))), vec![]),
        ];
        ports[1].egress = vec![Filter::new("c", Box::new(classifier(&perturbed)), vec![])];
        let gen = Generation {
            ports,
            ..Default::default()
        };
        let now = Instant::now();
        let mut p = Perturber::of_generation(&gen, now);
        assert_eq!(p.len(), 2);
        assert_eq!(p.tick(now + Duration::from_secs(5), &mut || 9), 2);
    }

    #[test]
    fn truncated_frames_at_every_length_never_panic() {
        let all: Vec<&str> = FlowKey::ALL
            .iter()
            .filter(|k| k.unsupported().is_none())
            .map(|k| k.name())
            .collect();
        let c = classifier(&FlowSpec {
            divisor: Some(7),
            ..hash_spec(&all, 3)
        });
        for seed in 0..300 {
            let f = random_flow_frame(seed);
            for len in 0..=f.len() {
                let mut v = view(&f[..len]);
                let _ = c.classify(&v);
                v.frame_len = f.len() as u32 + 100;
                let _ = c.classify(&v);
                let _ = software_rxhash(&f[..len], seed as u32);
            }
        }
    }

    #[test]
    fn dissection_of_a_prefix_never_completes_more_than_of_the_whole_frame() {
        // Reading more bytes can only let dissection go further: a prefix that dissects
        // completely gives the same keys as the whole frame unless the ports were cut.
        for seed in 0..500 {
            let f = random_flow_frame(seed);
            let (whole, ok) = dissect(&f);
            for len in 0..f.len() {
                let (k, ok_prefix) = dissect(&f[..len]);
                if ok_prefix {
                    assert!(ok, "seed {seed} len {len}");
                    assert_eq!(
                        (k.src, k.dst, k.ip_proto),
                        (whole.src, whole.dst, whole.ip_proto)
                    );
                    assert!(k.ports == whole.ports || k.ports == [0; 4]);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            et in prop::sample::select(vec![0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x8864, 0x0806]),
            frame_len in 0u32..400,
            rss in proptest::option::of(any::<u32>()),
            seed: u32,
        ) {
            let mut data = data;
            if data.len() >= 14 {
                data[12..14].copy_from_slice(&et.to_be_bytes());
            }
            let c = classifier(&hash_spec(
                &["src", "dst", "proto", "proto-src", "proto-dst", "iif", "priority", "mark",
                  "nfct", "nfct-src", "nfct-dst", "nfct-proto-src", "nfct-proto-dst",
                  "vlan-tag", "rxhash"],
                seed,
            ));
            let mut v = view(&data);
            v.frame_len = frame_len;
            v.rss_hash = rss;
            prop_assert!(matches!(c.classify(&v), Verdict::Match(_)));
            let m = classifier(&FlowSpec { rshift: Some(seed % 32), ..spec(&["dst"]) });
            prop_assert!(matches!(m.classify(&v), Verdict::Match(_)));
        }
    }
}
