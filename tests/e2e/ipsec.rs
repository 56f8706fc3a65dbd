//! VTI tunnels end to end, against an independent ESP implementation (scapy's, through
//! tests/ipsec/esp_ref.py): what the appliance encrypts decrypts in scapy and what scapy
//! encrypts decrypts in the appliance, for every algorithm with and without ESN; inbound
//! robustness (replays, old numbers, bad ICVs, truncation, unknown SPIs) with exact counters;
//! two appliances back to back; ICMP too-big; ARP; lifetimes; configuration errors.
use crate::util::*;
use std::path::Path;
use std::process::Command;

const LOCAL: &str = "192.0.2.1";
const REMOTE: &str = "192.0.2.2";
const PEER_MAC: &str = "02:00:00:00:00:02";
/// With ESN, the first sequence number in both directions: 80 packets below 2^32.
const ESN_START: &str = "4294967216";

/// (name, key, auth key): keys for each algorithm (GCM keys end with the 4-byte salt).
const ALGS: [(&str, &str, &str); 4] = [
    (
        "aes-gcm-128",
        "000102030405060708090a0b0c0d0e0f10111213",
        "",
    ),
    (
        "aes-gcm-256",
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40414243",
        "",
    ),
    (
        "aes-cbc-128-hmac-sha256",
        "505152535455565758595a5b5c5d5e5f",
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f",
    ),
    (
        "aes-cbc-256-hmac-sha256",
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
    ),
];

/// The outbound SA uses the same algorithm with other keys (bytes reversed).
fn out_key(k: &str) -> String {
    let mut b: Vec<String> = (0..k.len())
        .step_by(2)
        .map(|i| k[i..i + 2].to_owned())
        .collect();
    b.reverse();
    b.concat()
}

pub(crate) fn esp_ref(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/ipsec/esp_ref.py");
    let o = Command::new("/usr/bin/python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run esp_ref.py (python3-scapy)");
    assert!(
        o.status.success(),
        "esp_ref.py {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// SA arguments of esp_ref.py.
pub(crate) fn sa_args<'a>(
    spi: &'a str,
    src: &'a str,
    dst: &'a str,
    alg: &'a (&str, &str, &str),
    key: &'a str,
    auth: &'a str,
    esn: bool,
) -> Vec<&'a str> {
    let mut a = vec![
        "--spi", spi, "--src", src, "--dst", dst, "--alg", alg.0, "--key", key,
    ];
    if !auth.is_empty() {
        a.extend(["--auth-key", auth]);
    }
    if esn {
        a.push("--esn");
    }
    a
}

/// Frames of a capture, whatever its timestamps say (scapy keeps the nanosecond timestamps of
/// DPDK's net_pcap captures in a microsecond file, which strict readers refuse).
fn read_frames(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap();
    let le = match &b[0..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        m => panic!("not a pcap: {m:?}"),
    };
    let u32_at = |o: usize| {
        let w = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let mut out = Vec::new();
    let mut o = 24;
    while o + 16 <= b.len() {
        let n = u32_at(o + 8) as usize;
        out.push(b[o + 16..o + 16 + n].to_vec());
        o += 16 + n;
    }
    out
}

/// The IP packet of an Ethernet frame (after VLAN tags, without Ethernet padding).
fn ip_of(frame: &[u8]) -> &[u8] {
    let mut off = 12;
    while frame[off..off + 2] == [0x81, 0x00] || frame[off..off + 2] == [0x88, 0xa8] {
        off += 4;
    }
    let ip = &frame[off + 2..];
    let len = match ip[0] >> 4 {
        4 => usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        _ => 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])),
    };
    &ip[..len]
}

/// A lan/wan/vti0 configuration; `sa_extra` is added to both SAs' flow mappings.
#[allow(clippy::too_many_arguments)]
fn tunnel_config(
    t: &TestDir,
    tag: &str,
    lan_in: &str,
    wan_in: &str,
    alg: &(&str, &str, &str),
    esn: bool,
    tunnel_extra: &str,
    sa_extra: &str,
) -> std::path::PathBuf {
    let ports = format!(
        "  - {{ name: lan, device: net_pcap0, args: \"rx_pcap={},tx_pcap={}\" }}\n  - {{ name: wan, device: net_pcap1, args: \"rx_pcap={},tx_pcap={}\" }}\n  - name: vti0\n    tunnel: {{ local: {LOCAL}, remote: {REMOTE}, ikey: 7, okey: 9, underlay: wan{tunnel_extra} }}\n",
        t.p(lan_in),
        t.p(&format!("out-lan-{tag}.pcap")),
        t.p(wan_in),
        t.p(&format!("out-wan-{tag}.pcap")),
    );
    let auth = |k: &str| {
        if k.is_empty() {
            String::new()
        } else {
            format!(", auth_key: \"{k}\"")
        }
    };
    let rest = format!(
        "crypto: {{ device: crypto_aesni_mb0 }}\nsas:\n  - {{ name: out, spi: 0x1000, direction: out, src: {LOCAL}, dst: {REMOTE}, mark: 9, algorithm: {}, key: \"{}\"{}, esn: {esn}{sa_extra} }}\n  - {{ name: in, spi: 0x2000, direction: in, src: {REMOTE}, dst: {LOCAL}, mark: 7, algorithm: {}, key: \"{}\"{}, esn: {esn}{sa_extra} }}\nforwarding:\n  - {{ from: lan, to: vti0 }}\n  - {{ from: vti0, to: lan }}\n",
        alg.0,
        out_key(alg.1),
        auth(&out_key(alg.2)),
        alg.0,
        alg.1,
        auth(alg.2),
    );
    t.config_ports_yaml(&ports, &rest)
}

/// Physical ports only: what came in left or was dropped with a reason.
fn assert_physical_conservation(r: &RunResult, generated: u64) {
    let (mut rx, mut tx, mut drops) = (0, 0, 0);
    for name in ["lan", "wan"] {
        let p = r.port(name);
        rx += p["rx_packets"].as_u64().unwrap();
        tx += p["tx_packets"].as_u64().unwrap();
        drops += drops_of(p).values().sum::<u64>();
    }
    let vti_drops: u64 = drops_of(r.port("vti0")).values().sum();
    assert_eq!(rx + generated, tx + drops + vti_drops, "{}", r.summary);
}

#[test]
fn every_algorithm_interoperates_with_scapy_in_both_directions() {
    let t = TestDir::new("ipsec-interop");
    let inner = t.gen(
        "inner.pcap",
        &[
            "--count=240",
            "--flows=24",
            "--ip=mix",
            "--proto=udp,tcp,icmp",
            "--size=64,300,1400",
            "--seed=71",
        ],
    );
    let inner2 = t.gen(
        "inner2.pcap",
        &[
            "--count=160",
            "--flows=16",
            "--ip=mix",
            "--size=64,700",
            "--seed=72",
        ],
    );
    for alg in &ALGS {
        for esn in [false, true] {
            let tag = format!("{}-{esn}", alg.0);
            // Inbound: scapy encrypts; with ESN the numbers cross 2^32.
            let esp_in = format!("esp-in-{tag}.pcap");
            let mut a = vec!["encrypt", "--in", &t.p("inner2.pcap").leak()[..], "--out"];
            let esp_in_p = t.p(&esp_in);
            a.push(&esp_in_p);
            a.extend(sa_args("0x2000", REMOTE, LOCAL, alg, alg.1, alg.2, esn));
            if esn {
                a.extend(["--seq-start", ESN_START]);
            }
            esp_ref(&a);
            // With ESN both SAs start as if moved here mid-life: the last number sent, and the
            // highest received, is 2^32-81, so both directions cross 2^32. (A fresh window
            // cannot place numbers near 2^32 while the first packets are still in the device.)
            let cfg = tunnel_config(
                &t,
                &tag,
                "inner.pcap",
                &esp_in,
                alg,
                esn,
                &format!(", next_hop_mac: \"{PEER_MAC}\""),
                if esn { ", seq: 4294967215" } else { "" },
            );
            let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
            r.assert_clean();
            assert_physical_conservation(&r, 0);
            assert!(
                drops_of(r.port("wan")).is_empty() && drops_of(r.port("lan")).is_empty(),
                "{tag}: {}",
                r.summary
            );

            // Outbound: scapy decrypts and verifies every frame.
            let (ok, auth_out) = (out_key(alg.1), out_key(alg.2));
            let dec = t.p(&format!("dec-{tag}.pcap"));
            let rep = t.p(&format!("rep-{tag}.json"));
            let out_wan = t.p(&format!("out-wan-{tag}.pcap"));
            let mut a = vec!["decrypt", "--in", &out_wan, "--out", &dec, "--json", &rep];
            a.extend(sa_args("0x1000", LOCAL, REMOTE, alg, &ok, &auth_out, esn));
            if esn {
                a.extend(["--seq-start", ESN_START]);
            }
            esp_ref(&a);
            let report: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
            assert_eq!(report["totals"]["ok"], 240, "{tag}: {}", report["totals"]);
            let got = read_frames(Path::new(&dec));
            assert_eq!(got.len(), inner.frames.len());
            for (i, (g, w)) in got.iter().zip(&inner.frames).enumerate() {
                assert_eq!(ip_of(g), ip_of(w), "{tag}: outbound frame {i}");
            }
            // On the wire: Ethernet to the next hop, outer IPv4 to the remote, ESP.
            let wire = read_pcap(Path::new(&out_wan));
            for f in &wire {
                assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 2]);
                let ip = ip_of(f);
                assert_eq!(
                    (ip[9], &ip[12..16], &ip[16..20]),
                    (50, &[192, 0, 2, 1][..], &[192, 0, 2, 2][..])
                );
            }
            // Inbound: the appliance's decryption of scapy's ESP, in order.
            let lan = read_pcap(&t.path(&format!("out-lan-{tag}.pcap")));
            assert_eq!(lan.len(), inner2.frames.len(), "{tag}");
            for (i, (g, w)) in lan.iter().zip(&inner2.frames).enumerate() {
                assert_eq!(ip_of(g), ip_of(w), "{tag}: inbound frame {i}");
            }
            tcpdump_reads(Path::new(&out_wan), 240);
        }
    }
}

#[test]
fn two_appliances_back_to_back_round_trip() {
    let t = TestDir::new("ipsec-b2b");
    let inner = t.gen(
        "inner.pcap",
        &[
            "--count=300",
            "--flows=30",
            "--ip=mix",
            "--size=64,1000",
            "--seed=73",
        ],
    );
    write_pcap(&t.path("empty.pcap"), &[]);
    let alg = &ALGS[3];
    // A encrypts (its outbound SA uses the reversed keys) ...
    let a = tunnel_config(
        &t,
        "a",
        "inner.pcap",
        "empty.pcap",
        alg,
        true,
        &format!(", next_hop_mac: \"{PEER_MAC}\""),
        "",
    );
    t.run(&a, &["--exit-when-idle-ms=700"]).assert_clean();
    // ... B, the mirror image, decrypts: its inbound SA is A's outbound one.
    let ports = format!(
        "  - {{ name: lan, device: net_pcap0, args: \"rx_pcap={},tx_pcap={}\" }}\n  - {{ name: wan, device: net_pcap1, args: \"rx_pcap={},tx_pcap={}\" }}\n  - name: vti0\n    tunnel: {{ local: {REMOTE}, remote: {LOCAL}, ikey: 9, okey: 7, underlay: wan, next_hop_mac: \"02:00:00:00:00:01\" }}\n",
        t.p("empty.pcap"), t.p("out-lan-b.pcap"), t.p("out-wan-a.pcap"), t.p("out-wan-b.pcap"),
    );
    let rest = format!(
        "sas:\n  - {{ spi: 0x1000, direction: in, src: {LOCAL}, dst: {REMOTE}, mark: 9, algorithm: {}, key: \"{}\", auth_key: \"{}\", esn: true, replay_window: 1024 }}\nforwarding:\n  - {{ from: vti0, to: lan }}\n",
        alg.0, out_key(alg.1), out_key(alg.2)
    );
    let b = t.config_ports_yaml(&ports, &rest);
    let r = t.run(&b, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    let back = read_pcap(&t.path("out-lan-b.pcap"));
    assert_eq!(back.len(), inner.frames.len());
    for (g, w) in back.iter().zip(&inner.frames) {
        assert_eq!(ip_of(g), ip_of(w));
    }
}

/// `f` cut to `len` bytes with its IPv4 total length and checksum fixed (so only ESP is short),
/// padded to the Ethernet minimum.
fn truncated(f: &[u8], len: usize) -> Vec<u8> {
    let mut g = f[..len].to_vec();
    let total = (len - 14) as u16;
    g[16..18].copy_from_slice(&total.to_be_bytes());
    g[24] = 0;
    g[25] = 0;
    let mut sum = 0u32;
    for w in g[14..34].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    g[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    g.resize(60, 0);
    g
}

/// Bytes of `f` with bit `bit` of byte `at` (from the end when negative) flipped.
fn flip(f: &[u8], at: isize) -> Vec<u8> {
    let mut g = f.to_vec();
    let i = if at < 0 {
        (g.len() as isize + at) as usize
    } else {
        at as usize
    };
    g[i] ^= 0x01;
    g
}

#[test]
fn inbound_attacks_are_dropped_with_exact_counters_and_good_packets_still_delivered() {
    let t = TestDir::new("ipsec-robust");
    let inner = t.gen(
        "inner.pcap",
        &[
            "--count=100",
            "--flows=10",
            "--ip=4",
            "--size=64,200",
            "--seed=74",
        ],
    );
    write_pcap(&t.path("empty.pcap"), &[]);
    let alg = &ALGS[0];
    let mut a = vec!["encrypt", "--in"];
    let (i, o) = (t.p("inner.pcap"), t.p("esp.pcap"));
    a.extend([i.as_str(), "--out", o.as_str()]);
    a.extend(sa_args("0x2000", REMOTE, LOCAL, alg, alg.1, alg.2, false));
    esp_ref(&a);
    let esp = read_pcap(&t.path("esp.pcap"));
    let mut input = Vec::new();
    let mut wrong_spi = esp[5].clone();
    let ihl_end = 14 + 20;
    wrong_spi[ihl_end + 3] ^= 0x55;
    for (k, f) in esp.iter().enumerate() {
        input.push(f.clone());
        match k {
            10 | 20 => input.push(f.clone()),             // replays
            30 => input.push(flip(&esp[99], -1)),         // a forged ICV (not yet seen number)
            40 => input.push(truncated(f, ihl_end + 12)), // truncated ESP (valid IPv4)
            50 => input.push(wrong_spi.clone()),          // unknown SPI
            _ => {}
        }
    }
    input.push(esp[0].clone()); // 99 numbers later: older than the 64-packet window
    write_pcap(&t.path("attack.pcap"), &input);
    let cfg = tunnel_config(
        &t,
        "x",
        "empty.pcap",
        "attack.pcap",
        alg,
        false,
        &format!(", next_hop_mac: \"{PEER_MAC}\""),
        "",
    );
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    let d = drops_of(r.port("wan"));
    let want: std::collections::BTreeMap<String, u64> = [
        ("esp_replay", 2),
        ("esp_bad_icv", 1),
        ("esp_malformed", 1),
        ("esp_unknown_spi", 1),
        ("esp_too_old", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(d, want, "{}", r.summary);
    let lan = read_pcap(&t.path("out-lan-x.pcap"));
    assert_eq!(lan.len(), 100);
    for (g, w) in lan.iter().zip(&inner.frames) {
        assert_eq!(ip_of(g), ip_of(w));
    }
    assert_physical_conservation(&r, 0);

    // Without anti-replay (replay_window: 0) the replays and the old number are delivered;
    // the forgery, the truncation and the unknown SPI are still dropped.
    let cfg = tunnel_config(
        &t,
        "y",
        "empty.pcap",
        "attack.pcap",
        alg,
        false,
        &format!(", next_hop_mac: \"{PEER_MAC}\""),
        ", replay_window: 0",
    );
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    let want: std::collections::BTreeMap<String, u64> = [
        ("esp_bad_icv", 1),
        ("esp_malformed", 1),
        ("esp_unknown_spi", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(drops_of(r.port("wan")), want, "{}", r.summary);
    assert_eq!(read_pcap(&t.path("out-lan-y.pcap")).len(), 103);
    assert_physical_conservation(&r, 0);
}

#[test]
fn too_big_packets_get_icmp_back_and_the_packet_lifetime_holds() {
    let t = TestDir::new("ipsec-pmtu");
    let big4 = t.gen(
        "big4.pcap",
        &[
            "--count=20",
            "--flows=4",
            "--ip=4",
            "--proto=udp",
            "--size=1200",
            "--seed=75",
        ],
    );
    let big6 = t.gen(
        "big6.pcap",
        &[
            "--count=20",
            "--flows=4",
            "--ip=6",
            "--proto=udp",
            "--size=1200",
            "--seed=76",
        ],
    );
    let small = t.gen(
        "small.pcap",
        &[
            "--count=60",
            "--flows=4",
            "--ip=4",
            "--size=100",
            "--seed=77",
        ],
    );
    let mut input = big4.frames.clone();
    input.extend(big6.frames.iter().cloned());
    input.extend(small.frames.iter().cloned());
    write_pcap(&t.path("in.pcap"), &input);
    write_pcap(&t.path("empty.pcap"), &[]);
    let cfg = tunnel_config(
        &t,
        "p",
        "in.pcap",
        "empty.pcap",
        &ALGS[0],
        false,
        &format!(", next_hop_mac: \"{PEER_MAC}\", mtu: 1000"),
        ", lifetime: { packets: 50 }",
    );
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    let d = drops_of(r.port("vti0"));
    assert_eq!(d.get("tunnel_too_big"), Some(&40), "{}", r.summary);
    assert_eq!(d.get("sa_expired"), Some(&10), "{}", r.summary);
    assert_eq!(read_pcap(&t.path("out-wan-p.pcap")).len(), 50);
    // The ICMP errors went back out of lan, to each sender.
    let back = read_pcap(&t.path("out-lan-p.pcap"));
    assert_eq!(back.len(), 40);
    for (g, sent) in back.iter().zip(&input) {
        let p = etherparse::SlicedPacket::from_ethernet(g).unwrap();
        let s = etherparse::SlicedPacket::from_ethernet(sent).unwrap();
        match (&p.net, &s.net, &p.transport) {
            (
                Some(etherparse::NetSlice::Ipv4(ip)),
                Some(etherparse::NetSlice::Ipv4(orig)),
                Some(etherparse::TransportSlice::Icmpv4(ic)),
            ) => {
                assert_eq!(ip.header().destination(), orig.header().source());
                assert_eq!(ip.header().source(), [192, 0, 2, 1]);
                assert_eq!(
                    ic.icmp_type(),
                    etherparse::Icmpv4Type::DestinationUnreachable(
                        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                            next_hop_mtu: 1000
                        }
                    )
                );
                assert_eq!(
                    ic.header().icmp_type.calc_checksum(ic.payload()),
                    ic.checksum()
                );
            }
            (
                Some(etherparse::NetSlice::Ipv6(ip)),
                Some(etherparse::NetSlice::Ipv6(orig)),
                Some(etherparse::TransportSlice::Icmpv6(ic)),
            ) => {
                assert_eq!(ip.header().destination(), orig.header().source());
                assert_eq!(
                    ic.icmp_type(),
                    etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 }
                );
                let c = ic
                    .icmp_type()
                    .calc_checksum(
                        ip.header().source(),
                        ip.header().destination(),
                        ic.payload(),
                    )
                    .unwrap();
                assert_eq!(c, ic.checksum());
            }
            other => panic!("not an ICMP error: {other:?}"),
        }
    }
    assert_eq!(r.summary["tunnels"]["icmp_sent"], 40, "{}", r.summary);
}

#[test]
fn arp_answers_for_the_local_endpoint_and_resolves_the_next_hop() {
    let t = TestDir::new("ipsec-arp");
    // The peer asks for our endpoint: the request teaches us its MAC too.
    let mut req = vec![0xffu8; 6];
    req.extend_from_slice(&[2, 0, 0, 0, 0, 0x22]);
    req.extend_from_slice(&[
        0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 0x22, 192, 0, 2, 2, 0, 0, 0, 0, 0, 0,
        192, 0, 2, 1,
    ]);
    req.resize(60, 0);
    write_pcap(&t.path("wan-in.pcap"), &[req]);
    write_pcap(&t.path("empty.pcap"), &[]);
    let cfg = tunnel_config(
        &t,
        "r",
        "empty.pcap",
        "wan-in.pcap",
        &ALGS[0],
        false,
        "",
        "",
    );
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    let out = read_pcap(&t.path("out-wan-r.pcap"));
    assert_eq!(out.len(), 1);
    let a = &out[0];
    assert_eq!(&a[0..6], &[2, 0, 0, 0, 0, 0x22]);
    assert_eq!(&a[12..14], &[8, 6]);
    assert_eq!(&a[20..22], &[0, 2], "an ARP reply");
    assert_eq!(&a[28..32], &[192, 0, 2, 1]);
    assert_eq!(&a[22..28], &a[6..12], "from our MAC");
    assert_eq!(&a[32..38], &[2, 0, 0, 0, 0, 0x22]);
    assert_eq!(r.summary["tunnels"]["arp_replies"], 1);
    assert_eq!(r.summary["tunnels"]["arp_learnt"], 1);
}

#[test]
fn unresolved_next_hop_sends_arp_requests_and_counts_drops() {
    let t = TestDir::new("ipsec-noarp");
    t.gen(
        "in.pcap",
        &[
            "--count=30",
            "--flows=3",
            "--ip=4",
            "--size=100",
            "--seed=78",
        ],
    );
    write_pcap(&t.path("empty.pcap"), &[]);
    let cfg = tunnel_config(
        &t,
        "n",
        "in.pcap",
        "empty.pcap",
        &ALGS[0],
        false,
        ", next_hop: 192.0.2.254",
        "",
    );
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    assert_eq!(
        drops_of(r.port("vti0")).get("neighbour_unresolved"),
        Some(&30)
    );
    let out = read_pcap(&t.path("out-wan-n.pcap"));
    assert!(
        !out.is_empty() && out.len() <= 2,
        "rate-limited ARP requests: {}",
        out.len()
    );
    assert_eq!(&out[0][0..6], &[0xff; 6]);
    assert_eq!(&out[0][38..42], &[192, 0, 2, 254]);
}

#[test]
fn bad_tunnel_configs_exit_2_naming_the_field_without_keys() {
    let t = TestDir::new("ipsec-badcfg");
    write_pcap(&t.path("empty.pcap"), &[]);
    let base = tunnel_config(&t, "b", "empty.pcap", "empty.pcap", &ALGS[2], false, "", "");
    let good = std::fs::read_to_string(&base).unwrap();
    let cases = [
        ("spi: 0x1000", "spi: 5", "sas[0].spi"),
        (
            "algorithm: aes-cbc-128-hmac-sha256, key: \"",
            "algorithm: aes-cbc-128-hmac-sha256, key: \"ab",
            "sas[0].key",
        ),
        ("direction: in, src", "direction: sideways, src", "sas[1]"),
        (
            "algorithm: aes-cbc-128-hmac-sha256",
            "algorithm: des",
            "sas[0].algorithm",
        ),
        (
            "underlay: wan",
            "underlay: nowhere",
            "ports[2].tunnel.underlay",
        ),
        (
            "esn: false }",
            "esn: false, seq: 4294967296 }",
            "sas[0].seq",
        ),
        (
            "esn: false }",
            "esn: false, replay_window: 32 }",
            "sas[0].replay_window",
        ),
        (
            "esn: false }",
            "esn: false, lifetime: { packets: 10, soft_packets: 11 } }",
            "sas[0].lifetime.soft_packets",
        ),
    ];
    for (from, to, field) in cases {
        let y = good.replacen(from, to, 1);
        assert_ne!(y, good, "{from}");
        std::fs::write(&base, &y).unwrap();
        let (code, err) = t.run_expect_failure(&base);
        assert_eq!(code, Some(2), "{field}: {err}");
        assert!(err.contains(field), "{field}: {err}");
        for (_, k, a) in ALGS {
            assert!(
                !err.contains(k) && (a.is_empty() || !err.contains(a)),
                "a key leaked: {err}"
            );
        }
    }
}

#[test]
fn sa_metrics_are_exported_and_inbound_lifetimes_retire_the_sa() {
    let t = TestDir::new("ipsec-lifetime");
    t.gen(
        "inner.pcap",
        &[
            "--count=64",
            "--flows=8",
            "--ip=4",
            "--size=100",
            "--seed=75",
        ],
    );
    write_pcap(&t.path("empty.pcap"), &[]);
    let alg = &ALGS[0];
    let (i, o) = (t.p("inner.pcap"), t.p("esp.pcap"));
    let mut a = vec!["encrypt", "--in", i.as_str(), "--out", o.as_str()];
    a.extend(sa_args("0x2000", REMOTE, LOCAL, alg, alg.1, alg.2, false));
    esp_ref(&a);
    // The capture replays forever (no anti-replay, so the repeated numbers pass); the inbound SA
    // may accept 500 packets.
    let cfg = tunnel_config(
        &t,
        "l",
        "empty.pcap",
        "esp.pcap\",infinite_rx=1,x=\"",
        alg,
        false,
        &format!(", next_hop_mac: \"{PEER_MAC}\""),
        ", replay_window: 0, lifetime: { packets: 500, soft_packets: 100 }",
    );
    // tunnel_config quotes the capture path: splice infinite_rx into the device arguments.
    let y = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("esp.pcap\",infinite_rx=1,x=\"", "esp.pcap,infinite_rx=1")
        .replace(
            "metrics:\n  listen: null\n",
            "metrics:\n  listen: 127.0.0.1:0\n",
        );
    std::fs::write(&cfg, y).unwrap();
    let mut child = t.spawn(&cfg, &["--duration=3"]);
    let addr = child.wait_for_metrics_addr();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let body = http_get(&addr, "/metrics");
    let r = child.finish();
    r.assert_clean();
    let sa_in = r.sa("in").clone();
    assert_eq!(sa_in["expired"], true, "{}", r.summary);
    assert_eq!(sa_in["soft_expired"], true, "{}", r.summary);
    assert!(
        r.stderr
            .contains("SA in (spi 0x2000) reached its soft lifetime (packets)")
            && r.stderr
                .contains("SA in (spi 0x2000) reached its hard lifetime (packets)"),
        "{}",
        r.stderr
    );
    let accepted = sa_in["packets"].as_u64().unwrap();
    let expired = drops_of(r.port("wan"))
        .get("sa_expired")
        .copied()
        .unwrap_or(0);
    // Retired by the control thread within a tick of reaching 500; everything after is dropped.
    assert!(accepted >= 500, "{}", r.summary);
    assert!(expired > 0, "{}", r.summary);
    assert_eq!(r.port("lan")["tx_packets"].as_u64().unwrap(), accepted);
    assert_physical_conservation(&r, 0);

    let value = |series: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("series {series} missing from:\n{body}"))
    };
    assert_eq!(
        value("appliance_sa_expired{sa=\"in\",direction=\"in\"}"),
        1.0
    );
    assert_eq!(
        value("appliance_sa_soft_expired{sa=\"in\",direction=\"in\"}"),
        1.0
    );
    assert_eq!(
        value("appliance_sa_soft_expired{sa=\"out\",direction=\"out\"}"),
        0.0
    );
    assert!(value("appliance_sa_packets_total{sa=\"in\",direction=\"in\"}") >= 500.0);
    assert_eq!(
        value("appliance_sa_info{sa=\"out\",direction=\"out\",spi=\"0x1000\",algorithm=\"aes-gcm-128\",esn=\"false\"}"),
        1.0
    );
    assert_eq!(
        value("appliance_tunnel_next_hop_resolved{tunnel=\"vti0\"}"),
        1.0
    );
    assert_eq!(value("appliance_tunnel_path_mtu{tunnel=\"vti0\"}"), 1500.0);
    assert!(value("appliance_crypto_enqueued_ops_total") >= 500.0);
    for (_, k, a) in ALGS {
        assert!(
            !body.contains(k) && (a.is_empty() || !body.contains(a)),
            "a key leaked"
        );
    }
    promtool_check_metrics(&body);
}
