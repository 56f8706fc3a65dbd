//! The classic-BPF differential corpus: pcap-filter expressions (compiled by libpcap, with and
//! without its optimiser) and frames (the appliance's own generator plus hand-made edge cases),
//! shared by `cbpf_vs_libpcap.rs` (pipelines engines vs libpcap's `bpf_filter`) and
//! `dpdk_bpf.rs` (DPDK's converter, interpreter and JIT vs the same reference).
use pipelines::cbpf::{Insn, Program};
use pmd_glue::pcap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The snapshot length compiled into every program: what a matching frame returns
/// (tcpdump's default), so results are compared as values, not as booleans.
pub const SNAPLEN: u32 = 262_144;

/// pcap-filter expressions (`man 7 pcap-filter`). Addresses and ports are those of the frames
/// below: the generator's defaults (10.0.0.x -> 10.1.0.x, fd00::x -> fd01::x, destination ports
/// 5001, 5201, 8001, 9001, 12345, 20000, 30000, 40000) and the edge frames' 192.168.x, 2001:db8::
/// and well-known ports.
pub const EXPRESSIONS: &[&str] = &[
    // Hosts and networks, IPv4.
    "host 10.0.0.1",
    "src host 10.0.0.3",
    "dst host 192.168.1.2",
    "ip host 192.168.1.1 and ip host 192.168.1.2",
    "src host 192.168.1.1 or dst host 10.1.0.7",
    "net 10.0.0.0/24",
    "src net 10.0.0.0/28",
    "dst net 10.1.0.0 mask 255.255.255.0",
    "dst net 10.1.0.0 mask 255.255.255.128",
    "net 192.168.0.0/16",
    "net 10",
    "src net 10.1",
    "not net 10.0.0.0/8",
    "net 172.16.0.0/12 or net 192.168.2.0/24",
    "ip multicast",
    "dst host 255.255.255.255",
    // Hosts and networks, IPv6.
    "ip6 host fd00::1",
    "ip6 src net fd00::/120",
    "ip6 dst net fd01::/64",
    "host fd00::3 or host 10.0.0.3",
    "src net fd00::/16 and tcp",
    "dst host 2001:db8::2",
    "net 2001:db8::/32",
    "ip6 multicast",
    "dst net ff02::/16",
    // Ports and port ranges.
    "port 5001",
    "tcp port 5201",
    "udp port 8001",
    "src port 80",
    "dst port 443",
    "tcp dst port 9001 or udp dst port 12345",
    "portrange 5000-9000",
    "tcp portrange 20000-40000",
    "udp src portrange 1024-30000",
    "dst portrange 1-1023",
    "port 53",
    "not port 5001 and not port 5201",
    "ip and udp port 53",
    "ip6 and tcp dst port 30000",
    "ip6 and udp portrange 5000-10000",
    "port 20000 or port 30000 or port 40000",
    "tcp src port 1024 or tcp src portrange 40000-65535",
    // VLAN and QinQ.
    "vlan",
    "vlan 100",
    "vlan 1",
    "vlan 4095",
    "vlan and ip",
    "vlan 100 and tcp",
    "vlan and vlan",
    "vlan 100 and vlan 200",
    "vlan and ip6",
    "not vlan",
    "vlan and vlan and ip6 and tcp",
    "vlan and host 10.0.0.1",
    "vlan and udp port 53",
    "vlan and (tcp or icmp)",
    // IPv6 specifics.
    "ip6",
    "ip6 proto 17",
    "ip6 and tcp",
    "ip6 and icmp6",
    "icmp6",
    "icmp6[icmp6type] == icmp6-echo",
    "icmp6[icmp6type] == icmp6-neighborsolicit",
    "ip6[6] == 58",
    "ip6[40] == 128",
    "ip6 and ip6[7] < 64",
    "ip6 proto 0",
    "ip6 proto 44",
    "ip6[6] == 6 and ip6[53] & 2 != 0",
    "ip6[0:4] & 0x0ff00000 != 0",
    "ip6[0:4] & 0xfffff != 0",
    "ip6[4:2] > 1000",
    // TCP flags.
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "tcp[tcpflags] & tcp-syn != 0",
    "tcp[tcpflags] & (tcp-fin|tcp-rst) != 0",
    "tcp[13] == 0x18",
    "tcp[tcpflags] & tcp-push != 0 and tcp[tcpflags] & tcp-ack != 0",
    "tcp[tcpflags] == tcp-ack",
    "tcp[tcpflags] & tcp-urg != 0",
    "tcp[tcpflags] & (tcp-ece|tcp-cwr) != 0",
    "tcp[tcpflags] == 0",
    // ICMP.
    "icmp",
    "icmp[icmptype] == icmp-echo",
    "icmp[icmptype] != icmp-echo and icmp[icmptype] != icmp-echoreply",
    "icmp[0] == 3 and icmp[1] == 3",
    "icmp[icmpcode] != 0",
    "icmp and ip[8] == 64",
    // Fragments.
    "ip[6:2] & 0x1fff != 0",
    "ip[6:2] & 0x3fff != 0",
    "ip[6] & 0x20 != 0",
    "ip[6] & 0x40 != 0",
    "ip and ip[6:2] & 0x1fff = 0 and tcp",
    "udp and ip[6:2] & 0x1fff != 0",
    // Lengths.
    "len > 100",
    "len <= 64",
    "greater 1000",
    "less 60",
    "len == 1518",
    "len >= 9000",
    "len - 14 > ip[2:2]",
    "ip[2:2] > len - 14",
    // Arithmetic on packet fields.
    "ip[0] & 0xf > 5",
    "ip[0] & 0xf != 5",
    "ip[0] & 0xf0 == 0x40",
    "ip[2:2] - ((ip[0] & 0xf) << 2) > 100",
    "ip[2:2] * 2 > 1000",
    "ip[2:2] / 100 == 5",
    "ip[2:2] % 7 == 3",
    "ip[8] | ip[9] == 0x51",
    "ip[8] ^ ip[9] == 0x46",
    "ip[9] << 2 == 24",
    "ip[8] >> 4 == 4",
    "ip[12:4] & 0xffffff00 == 0x0a000000",
    "ip[16] + ip[17] + ip[18] == 11",
    "ip[2:2] - 100 > 1000",
    "ip[8] < 64",
    "ip[8] > 63",
    "(ip[6:2] & 0x1fff) * 8 > 1000",
    "ip[1] & 0xfc == 0xb8",
    "ip[9] * ip[8] == 384",
    "ip[9] / (ip[8] - 64) == 0",
    "ip[9] % (ip[8] & 3) == 0",
    "-ip[8] & 0xff == 0xc0",
    "1 << (ip[9] + 20) != 0",
    "0xffffffff >> (ip[9] + 20) != 0",
    "ip[ip[0] - 69] == 0x45",
    "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420",
    "tcp[(tcp[12] >> 4) * 4] == 0",
    "udp[8:4] == 0",
    "udp[4:2] > 100",
    "udp[4:2] > ip[2:2]",
    "tcp[0:2] > 1024 and tcp[2:2] < 1024",
    "tcp[4:4] & 0xff == 0x10",
    "tcp[14:2] == 65535",
    "tcp[12] & 0xf0 > 0x50",
    // Link layer.
    "ether host 02:00:00:00:00:01",
    "ether src 02:00:00:00:00:01",
    "ether dst 02:00:00:00:00:02",
    "ether broadcast",
    "ether multicast",
    "not ether multicast",
    "ether proto 0x0806",
    "ether[12:2] == 0x86dd",
    "ether[0] & 1 != 0",
    "ether[6:4] == 0x02000000",
    "ether[12:2] < 0x0600",
    "arp",
    "arp and arp[6:2] == 1",
    "rarp",
    // Protocols and boolean combinations.
    "udp",
    "tcp",
    "ip proto 17",
    "ip proto 47",
    "ip and not tcp and not udp",
    "tcp or udp",
    "(tcp or udp) and not (port 5001 or port 5201)",
    "ip and (ip[6:2] & 0x1fff = 0) and udp port 53",
    "not ip and not ip6",
    "ip6 and not (tcp or udp)",
    "not (ip or ip6 or arp or vlan)",
    "(host 10.0.0.1 or host 10.0.0.2) and (tcp or icmp) and not port 5201",
];

/// Expressions whose programs libpcap emits with a backward jump (`ip6 protochain` walks the
/// extension-header chain in a loop). Linux's classic checker, and so [`Program::load`], only
/// allows forward jumps: these are rejected, on purpose.
pub const BACKWARD_JUMP_EXPRESSIONS: &[&str] = &["ip6 protochain 6", "protochain 17"];

/// One compiled, loaded expression.
#[derive(Debug)]
pub struct Compiled {
    /// The pcap-filter expression.
    pub expr: &'static str,
    /// Whether libpcap's optimiser ran.
    pub optimize: bool,
    /// The loaded program.
    pub prog: Program,
}

/// Every expression of [`EXPRESSIONS`], compiled with and without the optimiser and loaded.
///
/// # Panics
/// Listing every expression that did not compile or that the loader rejected.
pub fn compile_all() -> Vec<Compiled> {
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for &expr in EXPRESSIONS {
        for optimize in [true, false] {
            match pcap::compile(expr, SNAPLEN, optimize) {
                Err(e) => failures.push(format!("{expr:?} (optimize {optimize}): {e}")),
                Ok(insns) => match Program::load(insns.clone()) {
                    Ok(prog) => out.push(Compiled {
                        expr,
                        optimize,
                        prog,
                    }),
                    Err(e) => failures.push(format!(
                        "{expr:?} (optimize {optimize}): loader: {e}\n{}",
                        listing(&insns)
                    )),
                },
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    out
}

/// `tcpdump -dd`-style listing of a program, for failure messages.
pub fn listing(insns: &[Insn]) -> String {
    insns
        .iter()
        .enumerate()
        .map(|(i, x)| {
            format!(
                "  ({i:03}) {{ 0x{:02x}, {}, {}, 0x{:08x} }}\n",
                x.code, x.jt, x.jf, x.k
            )
        })
        .collect()
}

/// One test frame: the bytes an engine sees and the frame's length on the wire (larger for
/// frames captured truncated).
#[derive(Debug, Clone)]
pub struct Frame {
    /// Where it comes from, for failure messages.
    pub name: String,
    /// The captured bytes.
    pub data: Vec<u8>,
    /// Length on the wire (`len`).
    pub wirelen: u32,
}

impl Frame {
    fn new(name: impl Into<String>, data: Vec<u8>) -> Frame {
        let wirelen = data.len() as u32;
        Frame {
            name: name.into(),
            data,
            wirelen,
        }
    }
}

/// The whole frame corpus: generated traffic followed by the edge frames.
pub fn frames() -> Vec<Frame> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut out = generated_frames(dir.path());
    out.extend(edge_frames());
    out
}

// ---------------------------------------------------------------------------------------------
// Frames from the appliance's generator.

/// The `appliance gen` runs, chosen for variety: IPv4/IPv6 mixes, TCP/UDP/ICMP, 802.1Q tags,
/// IMIX and jumbo sizes, header-only frames, every malformed kind, unicast/broadcast/multicast
/// MACs and addresses the expressions name.
pub const GENERATOR_RUNS: &[&[&str]] = &[
    &[
        "--flows",
        "48",
        "--ip",
        "mix",
        "--proto",
        "udp,tcp,icmp",
        "--size",
        "imix",
        "--seed",
        "11",
        "--malformed-permille",
        "150",
        "--count",
        "480",
    ],
    &[
        "--vlan",
        "100",
        "--flows",
        "24",
        "--ip",
        "mix",
        "--size",
        "64,130,570",
        "--seed",
        "12",
        "--malformed-permille",
        "250",
        "--count",
        "240",
    ],
    &[
        "--ip",
        "6",
        "--proto",
        "tcp,udp,icmp",
        "--flows",
        "12",
        "--size",
        "42,96,1400,9000",
        "--seed",
        "13",
        "--dst-mac",
        "33:33:00:00:00:01",
        "--malformed-permille",
        "100",
        "--count",
        "120",
    ],
    &[
        "--ip",
        "4",
        "--proto",
        "tcp,udp",
        "--flows",
        "16",
        "--size",
        "42,60,1514",
        "--seed",
        "14",
        "--src-mac",
        "02:00:00:00:00:03",
        "--dst-mac",
        "ff:ff:ff:ff:ff:ff",
        "--src-ipv4",
        "192.168.1.0",
        "--dst-ipv4",
        "192.168.2.0",
        "--count",
        "64",
    ],
    &[
        "--vlan",
        "1",
        "--ip",
        "4",
        "--proto",
        "icmp,udp",
        "--flows",
        "4",
        "--size",
        "100",
        "--seed",
        "15",
        "--dst-mac",
        "01:00:5e:00:00:01",
        "--dst-ipv4",
        "224.0.0.0",
        "--count",
        "16",
    ],
    &[
        "--vlan",
        "4095",
        "--ip",
        "6",
        "--proto",
        "udp,tcp",
        "--src-ipv6",
        "2001:db8::",
        "--dst-ipv6",
        "2001:db8:1::",
        "--flows",
        "8",
        "--size",
        "80,300",
        "--seed",
        "16",
        "--count",
        "16",
    ],
];

/// The `appliance` binary of this workspace, built if needed.
///
/// `APPLIANCE_BIN` names one explicitly. Otherwise the binary is the one next to this test
/// executable (`<target>/<profile>/deps/<test>` -> `<target>/<profile>/appliance`), and
/// `cargo build -p appliance` is run first with the same target directory and profile: a no-op
/// when it is fresh, and it keeps the frames those of the current generator rather than of
/// whatever binary an earlier build left. (A dev-dependency cannot provide a binary on stable
/// Cargo, and `appliance` depends on this crate, so Cargo cannot build it for these tests.)
/// Cargo does not hold its build lock while tests run, so the nested build does not block.
pub fn appliance_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("APPLIANCE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let bin = profile_dir.join("appliance");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "appliance", "--bin", "appliance"])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => {}
    }
    let status = cmd.status();
    match status {
        Ok(s) if s.success() => {}
        // A failed build (offline, say) still leaves a usable binary if one exists.
        other if bin.exists() => eprintln!("cargo build -p appliance: {other:?}; using {bin:?}"),
        other => panic!("cargo build -p appliance failed ({other:?}) and {bin:?} is missing"),
    }
    bin
}

/// Runs every [`GENERATOR_RUNS`] entry into `dir` and reads the frames back.
pub fn generated_frames(dir: &Path) -> Vec<Frame> {
    let bin = appliance_bin();
    let mut out = Vec::new();
    for (i, args) in GENERATOR_RUNS.iter().enumerate() {
        let pcap = dir.join(format!("gen{i}.pcap"));
        let result = Command::new(&bin)
            .arg("gen")
            .args(*args)
            .arg("--pcap")
            .arg(&pcap)
            .output()
            .unwrap_or_else(|e| panic!("running {bin:?}: {e}"));
        assert!(
            result.status.success(),
            "appliance gen {args:?}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        for (k, data) in read_pcap(&pcap).into_iter().enumerate() {
            out.push(Frame::new(format!("gen run {i} frame {k}"), data));
        }
    }
    out
}

/// Reads a classic pcap file (micro- or nanosecond, either byte order); returns the captured
/// bytes of each record.
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() >= 24, "{}: no pcap header", path.display());
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => panic!("{}: not a pcap file (magic {m:#x})", path.display()),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert_eq!(
        u32_at(20),
        1,
        "{}: link type is not Ethernet",
        path.display()
    );
    let mut out = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        assert!(
            at + 16 <= bytes.len(),
            "{}: cut record header",
            path.display()
        );
        let caplen = u32_at(at + 8) as usize;
        let start = at + 16;
        assert!(
            start + caplen <= bytes.len(),
            "{}: cut record",
            path.display()
        );
        out.push(bytes[start..start + caplen].to_vec());
        at = start + caplen;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Hand-made edge frames.

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const BROADCAST: [u8; 6] = [0xff; 6];
const MCAST4: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
const MCAST6: [u8; 6] = [0x33, 0x33, 0, 0, 0, 0x01];

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;
const ETH_RARP: u16 = 0x8035;
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;
const TPID_9100: u16 = 0x9100;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;

const HTTP_GET: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

fn v4(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>().expect("IPv4 literal").octets()
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().expect("IPv6 literal").octets()
}

fn be16(v: u16) -> [u8; 2] {
    v.to_be_bytes()
}

/// Ethernet II with optional tags (TPID, TCI), outermost first.
fn eth(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for &(tpid, tci) in tags {
        f.extend_from_slice(&be16(tpid));
        f.extend_from_slice(&be16(tci));
    }
    f.extend_from_slice(&be16(ethertype));
    f.extend_from_slice(payload);
    f
}

/// IPv4 header fields the edge frames vary.
#[derive(Clone)]
struct V4 {
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    ttl: u8,
    tos: u8,
    /// Flags (top 3 bits) and fragment offset (8-byte units).
    frag: u16,
    /// Options, a multiple of 4 bytes.
    options: Vec<u8>,
    /// Total length to write instead of the true one (a lying header).
    total_len: Option<u16>,
    /// IHL to write instead of the true one.
    ihl: Option<u8>,
}

impl V4 {
    fn new(src: &str, dst: &str, proto: u8) -> V4 {
        V4 {
            src: v4(src),
            dst: v4(dst),
            proto,
            ttl: 64,
            tos: 0,
            frag: 0x4000,
            options: Vec::new(),
            total_len: None,
            ihl: None,
        }
    }

    fn build(&self, payload: &[u8]) -> Vec<u8> {
        let hl = 20 + self.options.len();
        let ihl = self.ihl.unwrap_or((hl / 4) as u8);
        let total = self.total_len.unwrap_or((hl + payload.len()) as u16);
        let mut h = vec![0x40 | (ihl & 0xf), self.tos];
        h.extend_from_slice(&be16(total));
        h.extend_from_slice(&be16(0x1234));
        h.extend_from_slice(&be16(self.frag));
        h.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        h.extend_from_slice(&self.src);
        h.extend_from_slice(&self.dst);
        h.extend_from_slice(&self.options);
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&be16(sum));
        h.extend_from_slice(payload);
        h
    }
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// IPv6 header + payload; `plen` overrides the payload length, `tc_flow` is the traffic
/// class and flow label (low 28 bits of the first word).
fn ipv6(
    next: u8,
    src: &str,
    dst: &str,
    hop: u8,
    tc_flow: u32,
    plen: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    let mut h = (0x6000_0000u32 | (tc_flow & 0x0fff_ffff))
        .to_be_bytes()
        .to_vec();
    h.extend_from_slice(&be16(plen.unwrap_or(payload.len() as u16)));
    h.extend_from_slice(&[next, hop]);
    h.extend_from_slice(&v6(src));
    h.extend_from_slice(&v6(dst));
    h.extend_from_slice(payload);
    h
}

/// A TCP segment: options (a multiple of 4 bytes) and payload; checksums are irrelevant to BPF.
fn tcp(sport: u16, dport: u16, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&be16(sport));
    t.extend_from_slice(&be16(dport));
    t.extend_from_slice(&0x0102_0310u32.to_be_bytes());
    t.extend_from_slice(&1u32.to_be_bytes());
    t.push((((20 + options.len()) / 4) as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&be16(8192));
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(options);
    t.extend_from_slice(payload);
    t
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&be16(sport));
    u.extend_from_slice(&be16(dport));
    u.extend_from_slice(&be16(8 + payload.len() as u16));
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// ICMP or ICMPv6: type, code, checksum 0, then `rest`.
fn icmp(ty: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut i = vec![ty, code, 0, 0];
    i.extend_from_slice(rest);
    i
}

fn arp(op: u16, sha: [u8; 6], spa: &str, tha: [u8; 6], tpa: &str) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&be16(1));
    a.extend_from_slice(&be16(ETH_IPV4));
    a.extend_from_slice(&[6, 4]);
    a.extend_from_slice(&be16(op));
    a.extend_from_slice(&sha);
    a.extend_from_slice(&v4(spa));
    a.extend_from_slice(&tha);
    a.extend_from_slice(&v4(tpa));
    a
}

/// An 8-byte IPv6 extension header (hop-by-hop, routing, destination options) chaining to
/// `next`; the body is a PadN option (or a type-4 routing header with no segments left).
fn ext8(next: u8, routing: bool) -> Vec<u8> {
    if routing {
        vec![next, 0, 4, 0, 0, 0, 0, 0]
    } else {
        vec![next, 0, 1, 4, 0, 0, 0, 0]
    }
}

/// An IPv6 fragment header: offset in 8-byte units, more-fragments flag.
fn frag6(next: u8, offset: u16, more: bool) -> Vec<u8> {
    let mut f = vec![next, 0];
    f.extend_from_slice(&be16((offset << 3) | u16::from(more)));
    f.extend_from_slice(&0xabcd_0001u32.to_be_bytes());
    f
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Hand-made frames for the corners pcap-filter programs test: runts, every truncation of a
/// TCP frame, tags, extension headers, options, fragments, ARP, special MACs, jumbo frames and
/// lying length fields.
pub fn edge_frames() -> Vec<Frame> {
    let mut out = Vec::new();
    let mut add = |name: &str, data: Vec<u8>| out.push(Frame::new(name, data));

    // Runts: nothing, then every length up to a bare Ethernet header.
    let arp_req = eth(
        BROADCAST,
        MAC_A,
        &[],
        ETH_ARP,
        &arp(1, MAC_A, "192.168.1.1", [0; 6], "192.168.1.2"),
    );
    for n in 0..=14 {
        add(&format!("runt {n} bytes"), arp_req[..n].to_vec());
    }

    // IPv4 and IPv6 TCP frames carrying an HTTP GET, and every truncation of them (as a capture
    // with a short snapshot length: the wire length stays the full one).
    let get_opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]; // NOP NOP timestamps
    let get4 = eth(
        MAC_A,
        MAC_B,
        &[],
        ETH_IPV4,
        &V4::new("192.168.1.1", "192.168.1.2", TCP).build(&tcp(
            40000,
            80,
            PSH | ACK,
            &get_opts,
            HTTP_GET,
        )),
    );
    let get6 = eth(
        MAC_A,
        MAC_B,
        &[],
        ETH_IPV6,
        &ipv6(
            TCP,
            "2001:db8::1",
            "2001:db8::2",
            64,
            0,
            None,
            &tcp(40001, 80, PSH | ACK, &[], HTTP_GET),
        ),
    );
    let mut truncations = Vec::new();
    for full in [&get4, &get6] {
        for n in 0..full.len() {
            truncations.push(Frame {
                name: format!(
                    "{}-byte {} frame cut at {n}",
                    full.len(),
                    if full == &get4 {
                        "IPv4/TCP"
                    } else {
                        "IPv6/TCP"
                    }
                ),
                data: full[..n].to_vec(),
                wirelen: full.len() as u32,
            });
        }
    }
    add("IPv4/TCP HTTP GET with timestamps", get4.clone());
    add("IPv6/TCP HTTP GET", get6.clone());

    // TCP flag combinations over IPv4 and IPv6.
    for (i, flags) in [
        SYN,
        SYN | ACK,
        ACK,
        FIN | ACK,
        RST,
        URG | ACK | PSH,
        ECE | CWR | SYN,
        0,
        FIN | SYN | RST | PSH | ACK | URG,
    ]
    .into_iter()
    .enumerate()
    {
        let port = [22, 443, 80, 8080, 1024, 5001, 9001, 25, 1023][i];
        add(
            &format!("IPv4/TCP flags {flags:#04x}"),
            eth(
                MAC_A,
                MAC_B,
                &[],
                ETH_IPV4,
                &V4::new("10.0.0.1", "192.168.2.9", TCP).build(&tcp(port, 443, flags, &[], b"x")),
            ),
        );
        add(
            &format!("IPv6/TCP flags {flags:#04x}"),
            eth(
                MAC_B,
                MAC_A,
                &[],
                ETH_IPV6,
                &ipv6(
                    TCP,
                    "fd00::1",
                    "fd01::7",
                    64,
                    0,
                    None,
                    &tcp(443, port, flags, &[], b""),
                ),
            ),
        );
    }

    // ICMP and ICMPv6 types.
    for (ty, code) in [(8, 0), (0, 0), (3, 3), (3, 1), (11, 0), (5, 1)] {
        let mut v = V4::new("192.168.1.2", "10.0.0.2", ICMP);
        v.ttl = if ty == 11 { 1 } else { 255 };
        add(
            &format!("ICMP type {ty} code {code}"),
            eth(
                MAC_B,
                MAC_A,
                &[],
                ETH_IPV4,
                &v.build(&icmp(ty, code, &[0, 1, 0, 2, 0xde, 0xad])),
            ),
        );
    }
    add(
        "IPv4/UDP reply 10.1.0.7 -> 10.0.0.1",
        eth(
            MAC_B,
            MAC_A,
            &[],
            ETH_IPV4,
            &V4::new("10.1.0.7", "10.0.0.1", UDP).build(&udp(53, 5353, b"answer")),
        ),
    );
    for (ty, dst, mac) in [
        (128, "2001:db8::2", MAC_A),
        (129, "fd00::1", MAC_A),
        (135, "ff02::1:ff00:2", MCAST6),
        (134, "ff02::1", MCAST6),
    ] {
        add(
            &format!("ICMPv6 type {ty}"),
            eth(
                mac,
                MAC_B,
                &[],
                ETH_IPV6,
                &ipv6(ICMPV6, "fe80::1", dst, 255, 0, None, &icmp(ty, 0, &[0; 20])),
            ),
        );
    }

    // VLAN and QinQ, carrying IPv4 and IPv6.
    let udp4 = V4::new("10.0.0.1", "10.1.0.7", UDP).build(&udp(5353, 53, b"query"));
    let tcp4 = V4::new("10.0.0.2", "192.168.1.2", TCP).build(&tcp(1024, 80, SYN, &[], b""));
    let icmp4 = V4::new("10.0.0.1", "10.1.0.1", ICMP).build(&icmp(8, 0, &[0, 1, 0, 1]));
    let tcp6 = ipv6(
        TCP,
        "fd00::1",
        "fd01::2",
        64,
        0,
        None,
        &tcp(33000, 30000, SYN | ACK, &[], b"data"),
    );
    let udp6 = ipv6(
        UDP,
        "2001:db8::1",
        "2001:db8::2",
        64,
        0,
        None,
        &udp(5000, 8001, b"dns?"),
    );
    for (tags, what) in [
        (vec![(TPID_8021Q, 100)], "802.1Q 100"),
        (vec![(TPID_8021Q, 200)], "802.1Q 200"),
        (vec![(TPID_8021Q, 0x2001)], "802.1Q PCP 1 VID 1"),
        (vec![(TPID_8021Q, 4095)], "802.1Q 4095"),
        (
            vec![(TPID_8021AD, 100), (TPID_8021Q, 200)],
            "QinQ 88a8/100 8100/200",
        ),
        (
            vec![(TPID_8021Q, 100), (TPID_8021Q, 200)],
            "QinQ 8100/100 8100/200",
        ),
        (
            vec![(TPID_9100, 300), (TPID_8021Q, 100)],
            "QinQ 9100/300 8100/100",
        ),
    ] {
        add(
            &format!("{what} IPv4/UDP"),
            eth(MAC_A, MAC_B, &tags, ETH_IPV4, &udp4),
        );
        add(
            &format!("{what} IPv4/TCP"),
            eth(MAC_A, MAC_B, &tags, ETH_IPV4, &tcp4),
        );
        add(
            &format!("{what} IPv4/ICMP"),
            eth(MAC_A, MAC_B, &tags, ETH_IPV4, &icmp4),
        );
        add(
            &format!("{what} IPv6/TCP"),
            eth(MAC_A, MAC_B, &tags, ETH_IPV6, &tcp6),
        );
        add(
            &format!("{what} IPv6/UDP"),
            eth(MAC_A, MAC_B, &tags, ETH_IPV6, &udp6),
        );
        add(
            &format!("{what} ARP"),
            eth(
                BROADCAST,
                MAC_B,
                &tags,
                ETH_ARP,
                &arp(1, MAC_B, "10.0.0.9", [0; 6], "10.0.0.1"),
            ),
        );
    }
    add(
        "802.1Q tag cut after the TCI",
        eth(MAC_A, MAC_B, &[(TPID_8021Q, 100)], ETH_IPV4, &[])[..16].to_vec(),
    );

    // IPv6 extension headers before TCP/UDP/ICMPv6.
    let t = tcp(50000, 443, SYN, &[], b"");
    let u = udp(5353, 53, b"ext");
    add(
        "IPv6 hop-by-hop -> TCP",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV6,
            &ipv6(
                0,
                "fd00::2",
                "fd01::3",
                64,
                0,
                None,
                &cat(&[&ext8(TCP, false), &t]),
            ),
        ),
    );
    add(
        "IPv6 hop-by-hop -> routing -> fragment(first) -> dest-opts -> UDP",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV6,
            &ipv6(
                0,
                "2001:db8::1",
                "2001:db8::2",
                64,
                0,
                None,
                &cat(&[
                    &ext8(43, false),
                    &ext8(44, true),
                    &frag6(60, 0, true),
                    &ext8(UDP, false),
                    &u,
                ]),
            ),
        ),
    );
    add(
        "IPv6 dest-opts -> TCP",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV6,
            &ipv6(
                60,
                "fd00::3",
                "fd01::3",
                64,
                0,
                None,
                &cat(&[&ext8(TCP, false), &t]),
            ),
        ),
    );
    add(
        "IPv6 routing -> UDP",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV6,
            &ipv6(
                43,
                "fd00::4",
                "fd01::4",
                64,
                0,
                None,
                &cat(&[&ext8(UDP, true), &u]),
            ),
        ),
    );
    add(
        "IPv6 fragment(first) -> UDP",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV6,
            &ipv6(
                44,
                "2001:db8::1",
                "2001:db8::2",
                64,
                0,
                None,
                &cat(&[&frag6(UDP, 0, true), &u]),
            ),
        ),
    );
    add(
        "IPv6 fragment(later) of UDP",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV6,
            &ipv6(
                44,
                "2001:db8::1",
                "2001:db8::2",
                64,
                0,
                None,
                &cat(&[
                    &frag6(UDP, 185, false),
                    &[0x00, 0x35, 0x14, 0xe9, 1, 2, 3, 4],
                ]),
            ),
        ),
    );
    add(
        "IPv6 hop-by-hop -> ICMPv6 echo",
        eth(
            MCAST6,
            MAC_B,
            &[],
            ETH_IPV6,
            &ipv6(
                0,
                "fe80::1",
                "ff02::1",
                1,
                0,
                None,
                &cat(&[&ext8(ICMPV6, false), &icmp(128, 0, &[0; 8])]),
            ),
        ),
    );
    add(
        "IPv6 traffic class 0xb8, flow label 0x12345",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV6,
            &ipv6(UDP, "fd00::5", "fd01::5", 32, 0x0b81_2345, None, &u),
        ),
    );
    add(
        "IPv6 no next header",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV6,
            &ipv6(59, "fd00::6", "fd01::6", 64, 0, None, &[]),
        ),
    );

    // IPv4 options, TOS, TTL.
    let mut opt = V4::new("192.168.1.1", "10.0.0.1", TCP);
    opt.options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    add(
        "IPv4 IHL 6 (options) TCP",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &opt.build(&tcp(2000, 22, ACK, &[], b"ssh")),
        ),
    );
    let mut opt = V4::new("10.0.0.3", "10.1.0.3", UDP);
    opt.options = [&[0x94u8, 4, 0, 0][..], &[1; 36][..]].concat(); // router alert + NOPs
    add(
        "IPv4 IHL 15 (40 bytes of options) UDP",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &opt.build(&udp(1234, 53, b"q")),
        ),
    );
    let mut tos = V4::new("10.0.0.4", "10.1.0.4", UDP);
    tos.tos = 0xb8;
    tos.ttl = 1;
    add(
        "IPv4 TOS EF TTL 1 UDP",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &tos.build(&udp(5004, 5004, &[0x80; 40])),
        ),
    );

    // IPv4 fragments: first (MF, offset 0), middle and last (non-zero offsets).
    for (frag, what) in [(0x2000, "first"), (0x2000 | 100, "middle"), (185, "last")] {
        let mut v = V4::new("192.168.1.1", "192.168.1.2", UDP);
        v.frag = frag;
        let body = if frag & 0x1fff == 0 {
            udp(53, 53, &[7; 24])
        } else {
            vec![0x00, 0x35, 0x00, 0x35, 0, 8, 0, 0, 9, 9]
        };
        add(
            &format!("IPv4 {what} fragment"),
            eth(MAC_A, MAC_B, &[], ETH_IPV4, &v.build(&body)),
        );
    }

    // Other IP protocols, ARP and friends, special MACs.
    add(
        "IPv4 GRE",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &V4::new("172.16.0.1", "172.16.0.2", 47).build(&[0, 0, 0x08, 0x00]),
        ),
    );
    add(
        "IPv4 IGMP to 224.0.0.1",
        eth(
            MCAST4,
            MAC_B,
            &[],
            ETH_IPV4,
            &V4::new("192.168.1.7", "224.0.0.1", 2).build(&[0x11, 0x64, 0, 0, 0, 0, 0, 0]),
        ),
    );
    add(
        "IPv4 mDNS multicast",
        eth(
            MCAST4,
            MAC_A,
            &[],
            ETH_IPV4,
            &V4::new("192.168.1.1", "224.0.0.251", UDP).build(&udp(5353, 5353, b"mdns")),
        ),
    );
    add(
        "IPv4 limited broadcast DHCP",
        eth(
            BROADCAST,
            MAC_A,
            &[],
            ETH_IPV4,
            &V4::new("0.0.0.0", "255.255.255.255", UDP).build(&udp(68, 67, &[1; 32])),
        ),
    );
    add("ARP request", arp_req.clone());
    add(
        "ARP reply",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_ARP,
            &arp(2, MAC_B, "192.168.1.2", MAC_A, "192.168.1.1"),
        ),
    );
    add(
        "RARP request",
        eth(
            BROADCAST,
            MAC_A,
            &[],
            ETH_RARP,
            &arp(3, MAC_A, "0.0.0.0", MAC_A, "0.0.0.0"),
        ),
    );
    add(
        "LLDP",
        eth(
            [0x01, 0x80, 0xc2, 0, 0, 0x0e],
            MAC_A,
            &[],
            0x88cc,
            &[0x02, 0x07, 0x04, 2, 0, 0, 0, 0, 1, 0, 0],
        ),
    );
    add(
        "802.3 LLC (STP)",
        eth(
            [0x01, 0x80, 0xc2, 0, 0, 0],
            MAC_A,
            &[],
            0x0026,
            &[0x42, 0x42, 0x03, 0, 0, 0, 0, 0],
        ),
    );
    add(
        "unknown EtherType 0x88b5",
        eth(MAC_B, MAC_A, &[], 0x88b5, &[0xa5; 46]),
    );

    // Jumbo frames.
    add(
        "jumbo IPv4/UDP 9000 bytes",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &V4::new("10.0.0.1", "10.1.0.1", UDP).build(&udp(40000, 5001, &vec![0; 9000 - 42])),
        ),
    );
    add(
        "jumbo IPv6/TCP 9014 bytes",
        eth(
            MAC_B,
            MAC_A,
            &[],
            ETH_IPV6,
            &ipv6(
                TCP,
                "fd00::1",
                "fd01::1",
                64,
                0,
                None,
                &tcp(5201, 40000, ACK, &[], &vec![0x47; 9014 - 74]),
            ),
        ),
    );

    // Lying length fields.
    let mut lie = V4::new("10.0.0.1", "10.1.0.1", UDP);
    lie.total_len = Some(1500);
    add(
        "IPv4 total length 1500 in a 60-byte frame",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &lie.build(&udp(1111, 2222, &[0; 18])),
        ),
    );
    lie.total_len = Some(10);
    add(
        "IPv4 total length 10",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &lie.build(&udp(1111, 2222, &[0; 18])),
        ),
    );
    let mut lie = V4::new("10.0.0.2", "10.1.0.2", TCP);
    lie.ihl = Some(15);
    add(
        "IPv4 IHL 15 without options",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &lie.build(&tcp(80, 5201, ACK, &[], b"")),
        ),
    );
    lie.ihl = Some(4);
    add(
        "IPv4 IHL 4",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &lie.build(&tcp(80, 5201, ACK, &[], b"ab")),
        ),
    );
    let mut seg = tcp(8080, 5001, PSH | ACK, &[], b"GET ");
    seg[12] = 0xf0; // data offset 60 bytes, past the end
    add(
        "TCP data offset 15 past the frame",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &V4::new("10.0.0.3", "10.1.0.3", TCP).build(&seg),
        ),
    );
    seg[12] = 0x10; // data offset 4 bytes: inside the header
    add(
        "TCP data offset 1",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &V4::new("10.0.0.3", "10.1.0.3", TCP).build(&seg),
        ),
    );
    let mut dgram = udp(53, 33000, b"answer");
    dgram[4..6].copy_from_slice(&be16(0xffff));
    add(
        "UDP length 65535",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &V4::new("192.168.1.2", "192.168.1.1", UDP).build(&dgram),
        ),
    );
    add(
        "IPv6 payload length 65535",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV6,
            &ipv6(
                UDP,
                "fd00::7",
                "fd01::7",
                64,
                0,
                Some(0xffff),
                &udp(9, 9, b""),
            ),
        ),
    );
    add(
        "IPv6 payload length 0 with TCP",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV6,
            &ipv6(
                TCP,
                "fd00::8",
                "fd01::8",
                64,
                0,
                Some(0),
                &tcp(1, 2, SYN, &[], b""),
            ),
        ),
    );
    add(
        "EtherType IPv4 with version 6",
        eth(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &ipv6(
                TCP,
                "fd00::9",
                "fd01::9",
                64,
                0,
                None,
                &tcp(3, 4, SYN, &[], b""),
            ),
        ),
    );
    add(
        "EtherType IPv6 with an IPv4 header",
        eth(MAC_A, MAC_B, &[], ETH_IPV6, &udp4),
    );
    add(
        "IPv4 all ones",
        eth(MAC_A, MAC_B, &[], ETH_IPV4, &[0xff; 60]),
    );

    out.extend(truncations);
    out
}
