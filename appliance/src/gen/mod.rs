//! Frame generator core of `appliance gen`, in the spirit of testpmd's `txonly`/`flowgen` modes:
//! builds deterministic Ethernet frames for a set of flows and writes them to pcap files. The DPDK
//! transmit path calls [`FrameGenerator::next_frame`] to fill mbufs; [`write_pcap`] writes the same
//! frames to a file.
//!
//! # Determinism
//! Everything random derives from `--seed` through [`rand_pcg::Pcg64`], consumed only through raw
//! `next_u64` draws (never `rand`'s distributions, whose algorithms may change between releases).
//! The same options therefore give byte-identical frames and pcap files on every machine.
//!
//! # Flows
//! Flow `i` (0-based) has a fixed 5-tuple:
//! - IP version from `--ip` (`mix`: even flows IPv4, odd flows IPv6);
//! - protocol cycling through `--proto`: flow `i` uses entry `i % n` (with `--ip mix`, entry
//!   `(i / 2) % n`, so each protocol appears with both IP versions);
//! - source address = source base + `i`; destination address = destination base + a PRNG-chosen
//!   host number in `0..256` (the same for the flow's IPv4 and IPv6 addresses);
//! - source port drawn from `1024..=65535`, destination port drawn from a small fixed set
//!   ([`DST_PORTS`]); ICMP flows have no ports (reported as 0).
//!
//! The flow table is drawn from the PRNG in flow order with a fixed number of draws per flow, so
//! the first flows of `--flows 32` equal those of `--flows 16`. Packets go round-robin over the
//! flows: the packet with sequence number `k` belongs to flow `k % flows`.
//!
//! # Frame layout
//! Ethernet II, an 802.1Q tag when `--vlan` is given (PCP 0, DEI 0), then
//! - IPv4: 20-byte header, no options, DF set, TTL 64, identification = low 16 bits of `k`; or
//! - IPv6: 40-byte header, no extension headers, traffic class and flow label 0, hop limit 64;
//! - UDP; TCP (20 bytes, flags PSH|ACK, sequence number = low 32 bits of `k`, acknowledgment
//!   number 1, window 65535); or an ICMP / ICMPv6 echo request (identifier = low 16 bits of the
//!   flow index, sequence number = low 16 bits of `k`);
//! - payload: the packet sequence number `k` as a 64-bit big-endian integer when the payload has
//!   at least 8 bytes, then `0xa5` bytes up to the frame size. `k` counts every frame the
//!   generator made, from 0, malformed ones included, so tests can match frames across the
//!   appliance.
//!
//! All length fields are consistent and all checksums (IPv4 header, TCP, UDP, ICMP, ICMPv6) are
//! correct: headers are built with [`etherparse::PacketBuilder`]. Frames are stored without FCS.
//!
//! # Malformed frames
//! With `--malformed-permille P`, each packet is replaced, with probability `P/1000` (a separate
//! PRNG stream), by a malformed frame; the kinds cycle through [`MalformedKind::ALL`] in order.
//! See [`MalformedKind`] for how each is made.

mod checksum;
mod frames;
mod pcap;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand_pcg::Pcg64;

/// Largest frame size accepted by `--size`, in bytes (no FCS).
pub const MAX_FRAME_SIZE: u16 = 9000;
/// Smallest frame size accepted by `--size`, in bytes: the headers of an untagged IPv4/UDP (or
/// IPv4/ICMP) frame, the smallest frame the generator builds.
pub const MIN_FRAME_SIZE: u16 = 42;
/// Largest accepted `--flows`.
pub const MAX_FLOWS: u32 = 1 << 20;
/// The simple IMIX pattern of `--size imix`: 7 x 64, 4 x 570 and 1 x 1518 bytes, in a fixed order
/// cycled per packet, so any 12 consecutive packets hold exactly that mix.
pub const IMIX_PATTERN: [u16; 12] = [64, 570, 64, 64, 570, 64, 1518, 64, 570, 64, 64, 570];
/// Destination ports a TCP/UDP flow draws its destination port from.
pub const DST_PORTS: [u16; 8] = [5001, 5201, 8001, 9001, 12345, 20000, 30000, 40000];
/// Timestamp of the first frame of a pcap written by [`write_pcap`]: 2026-01-01T00:00:00Z, in
/// seconds since the Unix epoch.
pub const PCAP_EPOCH_SECS: u64 = 1_767_225_600;

/// Which IP versions the flows use (`--ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
pub enum IpChoice {
    /// Every flow is IPv4.
    #[value(name = "4")]
    #[serde(rename = "4")]
    V4,
    /// Every flow is IPv6.
    #[value(name = "6")]
    #[serde(rename = "6")]
    V6,
    /// Flows alternate: even flows IPv4, odd flows IPv6.
    #[serde(rename = "mix")]
    Mix,
}

/// A transport protocol a flow can use (`--proto`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum L4Choice {
    /// TCP segments (PSH|ACK).
    Tcp,
    /// UDP datagrams.
    Udp,
    /// ICMP echo requests (ICMPv6 echo requests on IPv6 flows).
    Icmp,
}

impl L4Choice {
    /// Lower-case name, as accepted by `--proto`.
    pub const fn name(self) -> &'static str {
        match self {
            L4Choice::Tcp => "tcp",
            L4Choice::Udp => "udp",
            L4Choice::Icmp => "icmp",
        }
    }
}

impl fmt::Display for L4Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Frame sizes (`--size`), in bytes as stored in the pcap/mbuf (no FCS).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SizeChoice {
    /// Every frame has this size.
    Fixed(u16),
    /// The simple IMIX of [`IMIX_PATTERN`].
    Imix,
    /// These sizes, cycled per packet (packet `k` uses entry `k % len`).
    List(Vec<u16>),
}

impl SizeChoice {
    /// The per-packet size cycle: packet `k` gets entry `k % len`.
    pub fn pattern(&self) -> Vec<u16> {
        match self {
            SizeChoice::Fixed(n) => vec![*n],
            SizeChoice::Imix => IMIX_PATTERN.to_vec(),
            SizeChoice::List(sizes) => sizes.clone(),
        }
    }
}

/// Checks one frame size; the error text does not name the option (callers add `--size`).
fn check_frame_size(n: u32) -> Result<u16, String> {
    if n < u32::from(MIN_FRAME_SIZE) {
        Err(format!(
            "{n} is smaller than the {MIN_FRAME_SIZE}-byte headers of an IPv4/UDP frame"
        ))
    } else if n > u32::from(MAX_FRAME_SIZE) {
        Err(format!(
            "{n} is larger than the {MAX_FRAME_SIZE}-byte maximum frame size"
        ))
    } else {
        // In range, so it fits.
        Ok(n as u16)
    }
}

impl FromStr for SizeChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("imix") {
            return Ok(SizeChoice::Imix);
        }
        let parse_one = |part: &str| -> Result<u16, String> {
            let part = part.trim();
            let n: u32 = part.parse().map_err(|_| {
                format!(
                    "'{part}' is not a frame size: expected a number of bytes, \"imix\" or a comma \
                     list of sizes"
                )
            })?;
            check_frame_size(n)
        };
        if s.contains(',') {
            Ok(SizeChoice::List(
                s.split(',').map(parse_one).collect::<Result<_, _>>()?,
            ))
        } else {
            Ok(SizeChoice::Fixed(parse_one(s)?))
        }
    }
}

impl fmt::Display for SizeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeChoice::Fixed(n) => write!(f, "{n}"),
            SizeChoice::Imix => f.write_str("imix"),
            SizeChoice::List(sizes) => {
                for (i, n) in sizes.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{n}")?;
                }
                Ok(())
            }
        }
    }
}

/// An Ethernet MAC address, written as six hex bytes separated by `:` or `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("'{s}' is not a MAC address (expected six hex bytes like 02:00:00:00:00:01)")
        };
        let mut out = [0u8; 6];
        let mut parts = s.trim().split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.is_empty() || part.len() > 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// CLI options of the frame generator (flattened into `appliance gen` with `#[command(flatten)]`).
/// [`Default`] gives the same values as the CLI defaults.
#[derive(clap::Args, Debug, Clone, PartialEq)]
// Keeps this doc comment from becoming the about text of the command it is flattened into.
#[command(about = None, long_about = None)]
pub struct GenOptions {
    /// Number of distinct flows (1..=1048576); packet k belongs to flow k % flows
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub flows: u32,
    /// IP versions: "4", "6" or "mix" (even flows IPv4, odd flows IPv6)
    #[arg(long, default_value = "mix")]
    pub ip: IpChoice,
    /// L4 protocols, a comma list of tcp,udp,icmp; flows cycle through them (ICMP: echo requests)
    #[arg(long, value_delimiter = ',', default_value = "udp,tcp,icmp")]
    pub proto: Vec<L4Choice>,
    /// Frame size in bytes as stored in the pcap/mbuf (no FCS): a number N (42..=9000), "imix"
    /// (64:7, 570:4, 1518:1 in a fixed 12-packet cycle) or a comma list cycled per packet. A flow
    /// whose headers are longer than the size (e.g. IPv6+TCP+VLAN = 78 bytes) sends
    /// header-only frames of its header size instead. Each frame's L4 payload starts with the
    /// 64-bit big-endian packet sequence number when it has room for it (8 bytes)
    #[arg(long, default_value = "64")]
    pub size: SizeChoice,
    /// 802.1Q VLAN id (0..=4095) to tag every frame with; absent = untagged
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=4095))]
    pub vlan: Option<u16>,
    /// PRNG seed: the same seed and options give byte-identical frames on every machine
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Frames per thousand replaced by malformed frames (0..=1000); the malformed kinds cycle in
    /// a fixed order
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub malformed_permille: u16,
    /// Source MAC address of every frame
    #[arg(long, default_value = "02:00:00:00:00:01")]
    pub src_mac: MacAddr,
    /// Destination MAC address of every frame
    #[arg(long, default_value = "02:00:00:00:00:02")]
    pub dst_mac: MacAddr,
    /// Base IPv4 source address: flow i sends from this address + i
    #[arg(long, default_value = "10.0.0.0")]
    pub src_ipv4: Ipv4Addr,
    /// Base IPv4 destination address: flows send to this address + a seed-chosen 0..=255
    #[arg(long, default_value = "10.1.0.0")]
    pub dst_ipv4: Ipv4Addr,
    /// Base IPv6 source address: flow i sends from this address + i
    #[arg(long, default_value = "fd00::")]
    pub src_ipv6: Ipv6Addr,
    /// Base IPv6 destination address: flows send to this address + a seed-chosen 0..=255
    #[arg(long, default_value = "fd01::")]
    pub dst_ipv6: Ipv6Addr,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            flows: 16,
            ip: IpChoice::Mix,
            proto: vec![L4Choice::Udp, L4Choice::Tcp, L4Choice::Icmp],
            size: SizeChoice::Fixed(64),
            vlan: None,
            seed: 1,
            malformed_permille: 0,
            src_mac: MacAddr([0x02, 0, 0, 0, 0, 0x01]),
            dst_mac: MacAddr([0x02, 0, 0, 0, 0, 0x02]),
            src_ipv4: Ipv4Addr::new(10, 0, 0, 0),
            dst_ipv4: Ipv4Addr::new(10, 1, 0, 0),
            src_ipv6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0),
            dst_ipv6: Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 0),
        }
    }
}

/// Why the generator could not start or write its output.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// An option value is out of range; the message starts with the option's name.
    #[error("{option}: {message}")]
    InvalidOption {
        /// The option, as spelled on the command line (e.g. `--size`).
        option: &'static str,
        /// What is wrong with its value.
        message: String,
    },
    /// Creating or writing the output file failed.
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The pcap writer refused a record (e.g. a timestamp past 2106 at a very low rate).
    #[error("writing pcap {}: {source}", path.display())]
    Pcap {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: pcap_file::PcapError,
    },
}

impl GenError {
    fn option(option: &'static str, message: impl Into<String>) -> Self {
        GenError::InvalidOption {
            option,
            message: message.into(),
        }
    }
}

/// What [`FrameGenerator::next_frame`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A well-formed frame of flow `flow`.
    Valid {
        /// The flow index (`0..flows`).
        flow: u32,
    },
    /// A deliberately malformed frame.
    Malformed(MalformedKind),
}

/// A deliberate defect. Each malformed frame starts as a valid frame of the packet's flow (with
/// the IP version and protocol the defect needs substituted, the flow's addresses and ports
/// kept), damaged so that exactly the named defect is present and no check earlier in the parse
/// order (Ethernet, VLAN, IPv4 version, IHL, header present, total length, header checksum; IPv6
/// version, payload length; then L4) rejects it first. Checksums covering a modified field are
/// recomputed unless the checksum is the defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MalformedKind {
    /// 10-byte frame: the destination MAC and 4 bytes of the source MAC.
    Runt,
    /// 16-byte frame: MACs, EtherType 0x8100 and the 2-byte TCI, cut before the inner EtherType
    /// (always tagged, with the `--vlan` id or 1).
    TruncatedVlanTag,
    /// Ethernet (and tag) plus the first 10 bytes of an IPv4 header (version 4, IHL 5).
    Ipv4Truncated,
    /// IPv4 version field 6 (header checksum recomputed).
    Ipv4BadVersion,
    /// IPv4 IHL 4, i.e. below 5 words (header checksum recomputed over the 20 bytes).
    Ipv4BadHeaderLength,
    /// IPv4 total length 8 bytes more than the frame carries (header checksum recomputed).
    Ipv4TotalLengthTooLong,
    /// IPv4 header checksum wrong (XOR 0x5a5a); everything else correct.
    Ipv4BadChecksum,
    /// Ethernet (and tag) plus the first 20 bytes of an IPv6 header.
    Ipv6Truncated,
    /// IPv6 payload length 8 bytes more than the frame carries.
    Ipv6PayloadLengthTooLong,
    /// UDP length 8 bytes more than the IP payload; IP lengths and checksum correct, UDP checksum
    /// computed over the bytes present with the stated UDP length in the pseudo-header.
    UdpLengthTooLong,
    /// TCP data offset 4 (below 5 words); IP lengths and checksum and the TCP checksum correct.
    TcpBadDataOffset,
    /// IP protocol TCP with only the first 8 bytes of the TCP header (ports and sequence number);
    /// IP lengths consistent (the frame ends with the IP packet) and checksum correct.
    L4Truncated,
}

impl MalformedKind {
    /// Every kind, in the order malformed frames cycle through.
    pub const ALL: &'static [MalformedKind] = &[
        MalformedKind::Runt,
        MalformedKind::TruncatedVlanTag,
        MalformedKind::Ipv4Truncated,
        MalformedKind::Ipv4BadVersion,
        MalformedKind::Ipv4BadHeaderLength,
        MalformedKind::Ipv4TotalLengthTooLong,
        MalformedKind::Ipv4BadChecksum,
        MalformedKind::Ipv6Truncated,
        MalformedKind::Ipv6PayloadLengthTooLong,
        MalformedKind::UdpLengthTooLong,
        MalformedKind::TcpBadDataOffset,
        MalformedKind::L4Truncated,
    ];

    /// The drop reason the appliance's parser must count for this frame.
    pub const fn expected_drop(self) -> pipelines::DropReason {
        use pipelines::DropReason as D;
        match self {
            MalformedKind::Runt | MalformedKind::TruncatedVlanTag => D::Runt,
            MalformedKind::Ipv4Truncated => D::Ipv4Truncated,
            MalformedKind::Ipv4BadVersion => D::Ipv4BadVersion,
            MalformedKind::Ipv4BadHeaderLength => D::Ipv4BadHeaderLength,
            MalformedKind::Ipv4TotalLengthTooLong => D::Ipv4BadTotalLength,
            MalformedKind::Ipv4BadChecksum => D::Ipv4BadChecksum,
            MalformedKind::Ipv6Truncated => D::Ipv6Truncated,
            MalformedKind::Ipv6PayloadLengthTooLong => D::Ipv6BadPayloadLength,
            MalformedKind::UdpLengthTooLong => D::UdpBadLength,
            MalformedKind::TcpBadDataOffset => D::TcpBadDataOffset,
            MalformedKind::L4Truncated => D::L4Truncated,
        }
    }

    /// Stable snake_case name, used as the key of [`GenReport::malformed`].
    pub const fn label(self) -> &'static str {
        match self {
            MalformedKind::Runt => "runt",
            MalformedKind::TruncatedVlanTag => "truncated_vlan_tag",
            MalformedKind::Ipv4Truncated => "ipv4_truncated",
            MalformedKind::Ipv4BadVersion => "ipv4_bad_version",
            MalformedKind::Ipv4BadHeaderLength => "ipv4_bad_header_length",
            MalformedKind::Ipv4TotalLengthTooLong => "ipv4_total_length_too_long",
            MalformedKind::Ipv4BadChecksum => "ipv4_bad_checksum",
            MalformedKind::Ipv6Truncated => "ipv6_truncated",
            MalformedKind::Ipv6PayloadLengthTooLong => "ipv6_payload_length_too_long",
            MalformedKind::UdpLengthTooLong => "udp_length_too_long",
            MalformedKind::TcpBadDataOffset => "tcp_bad_data_offset",
            MalformedKind::L4Truncated => "l4_truncated",
        }
    }
}

impl fmt::Display for MalformedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A flow's 5-tuple.
#[allow(
    dead_code,
    reason = "built only by `FrameGenerator::flow`, for reports and tests"
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct FlowInfo {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport protocol (ICMP means ICMPv6 for an IPv6 flow).
    pub proto: L4Choice,
    /// TCP/UDP source port; 0 for ICMP (whose echo identifier is the flow index).
    pub src_port: u16,
    /// TCP/UDP destination port; 0 for ICMP.
    pub dst_port: u16,
}

impl fmt::Display for FlowInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::net::SocketAddr;
        match self.proto {
            L4Choice::Icmp => write!(f, "icmp {} -> {}", self.src, self.dst),
            proto => write!(
                f,
                "{proto} {} -> {}",
                SocketAddr::new(self.src, self.src_port),
                SocketAddr::new(self.dst, self.dst_port)
            ),
        }
    }
}

/// Builds the frames: a flow table fixed at construction, then one frame per
/// [`next_frame`](FrameGenerator::next_frame) call.
#[derive(Debug, Clone)]
pub struct FrameGenerator {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlan: Option<etherparse::VlanId>,
    flows: Vec<frames::Flow>,
    /// Per-packet size cycle.
    sizes: Vec<u16>,
    malformed_permille: u16,
    /// Decides which packets are malformed; separate from the flow-table stream.
    malformed_rng: Pcg64,
    /// How many malformed frames were made: indexes [`MalformedKind::ALL`].
    malformed_made: u64,
    /// Sequence number of the next frame.
    seq: u64,
    /// Reused payload buffer.
    payload: Vec<u8>,
}

impl FrameGenerator {
    /// Validates `opts` and draws the flow table. Errors name the offending option.
    pub fn new(opts: &GenOptions) -> Result<Self, GenError> {
        frames::new_generator(opts)
    }

    /// Writes the next frame into `buf` (cleared first; its capacity is reused, so once it has
    /// held the largest frame no allocation happens per frame) and says what it is.
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> FrameKind {
        self.next_frame_impl(buf)
    }

    /// The 5-tuple of flow `i`.
    ///
    /// # Panics
    /// If `i` is not below the number of flows.
    #[allow(
        dead_code,
        reason = "for reports and tests; the binary need not call it"
    )]
    pub fn flow(&self, i: u32) -> FlowInfo {
        self.flows[i as usize].info()
    }

    /// Number of flows.
    pub fn flow_count(&self) -> u32 {
        // At most MAX_FLOWS entries.
        self.flows.len() as u32
    }
}

/// Counts of what a generator produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GenReport {
    /// Frames written.
    pub frames: u64,
    /// Bytes written (sum of frame lengths, no FCS).
    pub bytes: u64,
    /// Well-formed frames.
    pub valid: u64,
    /// Malformed frames per [`MalformedKind::label`] (only kinds that occurred).
    pub malformed: BTreeMap<&'static str, u64>,
    /// Well-formed frames per flow, indexed by flow.
    pub per_flow: Vec<u64>,
}

impl GenReport {
    /// An empty report for `flows` flows.
    pub fn new(flows: u32) -> Self {
        Self {
            per_flow: vec![0; flows as usize],
            ..Self::default()
        }
    }

    /// Counts one frame of `len` bytes.
    pub fn record(&mut self, kind: FrameKind, len: usize) {
        self.frames += 1;
        self.bytes += len as u64;
        match kind {
            FrameKind::Valid { flow } => {
                self.valid += 1;
                let i = flow as usize;
                if i >= self.per_flow.len() {
                    self.per_flow.resize(i + 1, 0);
                }
                self.per_flow[i] += 1;
            }
            FrameKind::Malformed(kind) => *self.malformed.entry(kind.label()).or_default() += 1,
        }
    }
}

/// Writes `count` frames of a generator built from `opts` to a pcap file at `path` (classic pcap,
/// little-endian, Ethernet link type, microsecond timestamps, snap length 65535). Timestamps
/// start at [`PCAP_EPOCH_SECS`] (2026-01-01T00:00:00Z); frame `k` is stamped
/// `floor(k * 1e6 / rate_pps)` microseconds later when `rate_pps` is given, else `k`
/// microseconds later. The file's bytes depend only on the arguments.
pub fn write_pcap(
    opts: &GenOptions,
    count: u64,
    rate_pps: Option<f64>,
    path: &Path,
) -> Result<GenReport, GenError> {
    pcap::write_pcap(opts, count, rate_pps, path)
}
