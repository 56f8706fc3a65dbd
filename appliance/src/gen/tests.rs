use std::collections::BTreeMap;
use std::net::IpAddr;

use clap::Parser;
use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};

use super::*;

/// Wraps the options the way `appliance gen` does, to test the CLI surface.
#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    gen: GenOptions,
}

fn parse(args: &[&str]) -> Result<GenOptions, String> {
    Cli::try_parse_from(std::iter::once("gen").chain(args.iter().copied()))
        .map(|c| c.gen)
        .map_err(|e| e.to_string())
}

fn frames(opts: &GenOptions, n: usize) -> Vec<(FrameKind, Vec<u8>)> {
    let mut g = FrameGenerator::new(opts).unwrap();
    let mut buf = Vec::new();
    (0..n)
        .map(|_| {
            let kind = g.next_frame(&mut buf);
            (kind, buf.clone())
        })
        .collect()
}

/// Independent Internet checksum verification: the one's-complement sum of everything covered,
/// checksum field included, must be 0xffff.
fn sums_to_ffff(parts: &[&[u8]]) -> bool {
    let mut sum: u32 = 0;
    for part in parts {
        let mut i = 0;
        while i < part.len() {
            let hi = u32::from(part[i]) << 8;
            let lo = part.get(i + 1).copied().map_or(0, u32::from);
            sum += hi | lo;
            sum = (sum & 0xffff) + (sum >> 16);
            i += 2;
        }
    }
    sum == 0xffff
}

/// The pseudo-header of a TCP/UDP/ICMPv6 checksum as bytes.
fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    p
}

fn l3_offset(opts: &GenOptions) -> usize {
    if opts.vlan.is_some() {
        18
    } else {
        14
    }
}

fn headers(opts: &GenOptions, flow: &FlowInfo) -> usize {
    let ip = if flow.src.is_ipv4() { 20 } else { 40 };
    let l4 = match flow.proto {
        L4Choice::Tcp => 20,
        L4Choice::Udp | L4Choice::Icmp => 8,
    };
    l3_offset(opts) + ip + l4
}

/// Checks one well-formed frame completely; `size` is the size slot the packet got.
fn check_valid(
    opts: &GenOptions,
    g: &FrameGenerator,
    seq: u64,
    flow: u32,
    frame: &[u8],
    size: usize,
) {
    let ctx = format!("frame {seq} (flow {flow})");
    let info = g.flow(flow);
    assert_eq!(
        flow as u64,
        seq % u64::from(opts.flows),
        "{ctx}: round robin"
    );
    assert_eq!(frame.len(), size.max(headers(opts, &info)), "{ctx}: length");
    assert_eq!(&frame[0..6], &opts.dst_mac.0, "{ctx}");
    assert_eq!(&frame[6..12], &opts.src_mac.0, "{ctx}");

    let p = SlicedPacket::from_ethernet(frame).unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
    let vlans: Vec<u16> = p.vlan_ids().iter().map(|v| v.value()).collect();
    assert_eq!(
        vlans,
        opts.vlan.into_iter().collect::<Vec<_>>(),
        "{ctx}: vlan"
    );
    let l3 = l3_offset(opts);

    let (src, dst): (Vec<u8>, Vec<u8>) = match p.net.as_ref().expect("ip") {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            assert!(info.src.is_ipv4(), "{ctx}");
            assert_eq!(h.ihl(), 5);
            assert_eq!(
                usize::from(h.total_len()),
                frame.len() - l3,
                "{ctx}: total length"
            );
            assert_eq!(h.ttl(), 64);
            assert!(h.dont_fragment());
            assert_eq!(
                h.header_checksum(),
                h.to_header().calc_header_checksum(),
                "{ctx}"
            );
            assert!(
                sums_to_ffff(&[&frame[l3..l3 + 20]]),
                "{ctx}: IPv4 header checksum"
            );
            assert_eq!(IpAddr::from(h.source()), info.src);
            assert_eq!(IpAddr::from(h.destination()), info.dst);
            (h.source().to_vec(), h.destination().to_vec())
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            assert!(info.src.is_ipv6(), "{ctx}");
            assert_eq!(
                usize::from(h.payload_length()),
                frame.len() - l3 - 40,
                "{ctx}"
            );
            assert_eq!(h.hop_limit(), 64);
            assert_eq!(IpAddr::from(h.source()), info.src);
            assert_eq!(IpAddr::from(h.destination()), info.dst);
            (h.source().to_vec(), h.destination().to_vec())
        }
        NetSlice::Arp(_) => panic!("{ctx}: arp"),
    };
    let ip_hdr = if info.src.is_ipv4() { 20 } else { 40 };
    let l4 = l3 + ip_hdr;
    let segment = &frame[l4..];
    let seg_len = segment.len() as u32;

    let payload = match p.transport.as_ref().expect("transport") {
        TransportSlice::Udp(u) => {
            assert_eq!(info.proto, L4Choice::Udp, "{ctx}");
            assert_eq!(u.length() as usize, segment.len(), "{ctx}: UDP length");
            assert_eq!(
                (u.source_port(), u.destination_port()),
                (info.src_port, info.dst_port)
            );
            let want = match p.net.as_ref().unwrap() {
                NetSlice::Ipv4(ip) => u
                    .to_header()
                    .calc_checksum_ipv4(&ip.header().to_header(), u.payload()),
                NetSlice::Ipv6(ip) => u
                    .to_header()
                    .calc_checksum_ipv6(&ip.header().to_header(), u.payload()),
                NetSlice::Arp(_) => unreachable!(),
            };
            assert_eq!(u.checksum(), want.unwrap(), "{ctx}: UDP checksum");
            assert_ne!(u.checksum(), 0, "{ctx}: UDP checksum present");
            assert!(
                sums_to_ffff(&[&pseudo(&src, &dst, 17, seg_len), segment]),
                "{ctx}"
            );
            u.payload()
        }
        TransportSlice::Tcp(t) => {
            assert_eq!(info.proto, L4Choice::Tcp, "{ctx}");
            assert_eq!(t.data_offset(), 5);
            assert!(t.psh() && t.ack() && !t.syn() && !t.fin() && !t.rst());
            assert_eq!(t.sequence_number(), seq as u32);
            assert_eq!(
                (t.source_port(), t.destination_port()),
                (info.src_port, info.dst_port)
            );
            let want = match p.net.as_ref().unwrap() {
                NetSlice::Ipv4(ip) => t
                    .to_header()
                    .calc_checksum_ipv4(&ip.header().to_header(), t.payload()),
                NetSlice::Ipv6(ip) => t
                    .to_header()
                    .calc_checksum_ipv6(&ip.header().to_header(), t.payload()),
                NetSlice::Arp(_) => unreachable!(),
            };
            assert_eq!(t.checksum(), want.unwrap(), "{ctx}: TCP checksum");
            assert!(
                sums_to_ffff(&[&pseudo(&src, &dst, 6, seg_len), segment]),
                "{ctx}"
            );
            t.payload()
        }
        TransportSlice::Icmpv4(i) => {
            assert_eq!(info.proto, L4Choice::Icmp, "{ctx}");
            match i.header().icmp_type {
                Icmpv4Type::EchoRequest(e) => {
                    assert_eq!((e.id, e.seq), (flow as u16, seq as u16), "{ctx}")
                }
                other => panic!("{ctx}: {other:?}"),
            }
            assert_eq!(
                i.checksum(),
                i.header().icmp_type.calc_checksum(i.payload()),
                "{ctx}"
            );
            assert!(sums_to_ffff(&[segment]), "{ctx}: ICMP checksum");
            i.payload()
        }
        TransportSlice::Icmpv6(i) => {
            assert_eq!(info.proto, L4Choice::Icmp, "{ctx}");
            match i.header().icmp_type {
                Icmpv6Type::EchoRequest(e) => {
                    assert_eq!((e.id, e.seq), (flow as u16, seq as u16), "{ctx}")
                }
                other => panic!("{ctx}: {other:?}"),
            }
            let s: [u8; 16] = src.clone().try_into().unwrap();
            let d: [u8; 16] = dst.clone().try_into().unwrap();
            let want = i
                .header()
                .icmp_type
                .calc_checksum(s, d, i.payload())
                .unwrap();
            assert_eq!(i.checksum(), want, "{ctx}: ICMPv6 checksum");
            assert!(
                sums_to_ffff(&[&pseudo(&src, &dst, 58, seg_len), segment]),
                "{ctx}"
            );
            i.payload()
        }
        TransportSlice::Igmp(_) => panic!("{ctx}: igmp"),
    };
    if payload.len() >= 8 {
        assert_eq!(payload[..8], seq.to_be_bytes(), "{ctx}: sequence number");
        assert!(payload[8..].iter().all(|&b| b == 0xa5), "{ctx}: fill");
    } else {
        assert!(payload.iter().all(|&b| b == 0xa5), "{ctx}: fill");
    }
}

/// Generates `n` frames and checks every valid one; returns them.
fn generate_and_check(opts: &GenOptions, n: usize) -> Vec<(FrameKind, Vec<u8>)> {
    let g = FrameGenerator::new(opts).unwrap();
    let sizes = opts.size.pattern();
    let out = frames(opts, n);
    for (k, (kind, frame)) in out.iter().enumerate() {
        if let FrameKind::Valid { flow } = *kind {
            check_valid(
                opts,
                &g,
                k as u64,
                flow,
                frame,
                usize::from(sizes[k % sizes.len()]),
            );
        }
    }
    out
}

#[test]
fn cli_defaults_equal_default_impl() {
    assert_eq!(parse(&[]).unwrap(), GenOptions::default());
    let o = parse(&[
        "--flows",
        "3",
        "--ip",
        "6",
        "--proto",
        "tcp,icmp",
        "--size",
        "imix",
        "--vlan",
        "7",
        "--seed",
        "9",
        "--malformed-permille",
        "5",
        "--src-mac",
        "aa-bb-cc-dd-ee-ff",
        "--dst-ipv6",
        "2001:db8::",
    ])
    .unwrap();
    assert_eq!(o.flows, 3);
    assert_eq!(o.ip, IpChoice::V6);
    assert_eq!(o.proto, vec![L4Choice::Tcp, L4Choice::Icmp]);
    assert_eq!(o.size, SizeChoice::Imix);
    assert_eq!(o.vlan, Some(7));
    assert_eq!(o.seed, 9);
    assert_eq!(o.malformed_permille, 5);
    assert_eq!(o.src_mac, MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]));
    assert_eq!(o.dst_ipv6.to_string(), "2001:db8::");
    assert_eq!(
        parse(&["--size", "64,128, 256"]).unwrap().size,
        SizeChoice::List(vec![64, 128, 256])
    );
    assert_eq!(SizeChoice::List(vec![64, 128]).to_string(), "64,128");
    assert_eq!(MacAddr([2, 0, 0, 0, 0, 1]).to_string(), "02:00:00:00:00:01");
}

#[test]
fn same_seed_gives_identical_bytes() {
    let opts = GenOptions {
        size: SizeChoice::Imix,
        malformed_permille: 100,
        ..Default::default()
    };
    assert_eq!(frames(&opts, 500), frames(&opts, 500));
}

#[test]
fn different_seed_gives_different_flows() {
    let a = FrameGenerator::new(&GenOptions::default()).unwrap();
    let b = FrameGenerator::new(&GenOptions {
        seed: 2,
        ..Default::default()
    })
    .unwrap();
    let fa: Vec<FlowInfo> = (0..16).map(|i| a.flow(i)).collect();
    let fb: Vec<FlowInfo> = (0..16).map(|i| b.flow(i)).collect();
    assert_ne!(fa, fb);
    // The TCP/UDP flows' ports differ in most flows, not just one.
    let differing = fa.iter().zip(&fb).filter(|(x, y)| x != y).count();
    assert!(differing >= 8, "only {differing} flows differ");
    assert_ne!(
        frames(&GenOptions::default(), 16),
        frames(
            &GenOptions {
                seed: 2,
                ..Default::default()
            },
            16
        )
    );
}

#[test]
fn flow_table_follows_the_options() {
    let g = FrameGenerator::new(&GenOptions {
        flows: 12,
        ..Default::default()
    })
    .unwrap();
    for i in 0..12 {
        let f = g.flow(i);
        // mix: even v4, odd v6; protocols cycle per pair of flows.
        assert_eq!(f.src.is_ipv4(), i % 2 == 0, "flow {i}");
        let want = [L4Choice::Udp, L4Choice::Tcp, L4Choice::Icmp][(i as usize / 2) % 3];
        assert_eq!(f.proto, want, "flow {i}");
        match f.src {
            IpAddr::V4(a) => assert_eq!(
                u32::from(a),
                u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) + i
            ),
            IpAddr::V6(a) => assert_eq!(u128::from(a), (0xfd00u128 << 112) + u128::from(i)),
        }
        match f.proto {
            L4Choice::Icmp => assert_eq!((f.src_port, f.dst_port), (0, 0)),
            _ => {
                assert!(f.src_port >= 1024);
                assert!(DST_PORTS.contains(&f.dst_port));
            }
        }
    }
    // The flow table is prefix-stable: more flows do not change the first ones.
    let more = FrameGenerator::new(&GenOptions {
        flows: 40,
        ..Default::default()
    })
    .unwrap();
    for i in 0..12 {
        assert_eq!(g.flow(i), more.flow(i));
    }
    let v4 = FrameGenerator::new(&GenOptions {
        ip: IpChoice::V4,
        proto: vec![L4Choice::Tcp],
        ..Default::default()
    })
    .unwrap();
    assert!((0..16).all(|i| v4.flow(i).src.is_ipv4() && v4.flow(i).proto == L4Choice::Tcp));
    let v6 = FrameGenerator::new(&GenOptions {
        ip: IpChoice::V6,
        ..Default::default()
    })
    .unwrap();
    assert!((0..16).all(|i| v6.flow(i).src.is_ipv6()));
}

/// Pins the exact output for seed 1: the cross-machine determinism contract. A change to the
/// flow derivation, the PRNG or the frame layout fails here.
#[test]
fn output_is_pinned_for_seed_1() {
    let opts = GenOptions {
        size: SizeChoice::Imix,
        malformed_permille: 100,
        vlan: Some(3),
        ..Default::default()
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a
    for (_, f) in frames(&opts, 200) {
        for b in f.iter().chain(&(f.len() as u32).to_be_bytes()) {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    let g = FrameGenerator::new(&opts).unwrap();
    let f0 = g.flow(0);
    let f1 = g.flow(1);
    let got = format!("{f0} | {f1} | {hash:016x}");
    assert_eq!(
        got,
        "udp 10.0.0.0:55205 -> 10.1.0.29:5001 | udp [fd00::1]:64440 -> [fd01::79]:40000 | 8d783600520e5e17", "pinned output changed");
}

#[test]
fn valid_frames_parse_with_consistent_lengths_and_checksums() {
    for ip in [IpChoice::Mix, IpChoice::V4, IpChoice::V6] {
        for vlan in [None, Some(0), Some(4095), Some(100)] {
            for size in [
                SizeChoice::Fixed(64),
                SizeChoice::Fixed(42),
                SizeChoice::Imix,
                SizeChoice::List(vec![45, 49, 60, 66, 67, 1500, 9000]),
            ] {
                let opts = GenOptions {
                    flows: 6,
                    ip,
                    vlan,
                    size,
                    seed: 7,
                    ..Default::default()
                };
                generate_and_check(&opts, 84);
            }
        }
    }
    // Non-default addresses and MACs are used.
    let opts = GenOptions {
        src_mac: "00:11:22:33:44:55".parse().unwrap(),
        dst_mac: "66:77:88:99:aa:bb".parse().unwrap(),
        src_ipv4: "192.168.1.250".parse().unwrap(),
        dst_ipv4: "172.16.0.0".parse().unwrap(),
        src_ipv6: "2001:db8::ffff".parse().unwrap(),
        dst_ipv6: "2001:db8:1::".parse().unwrap(),
        flows: 30,
        ..Default::default()
    };
    generate_and_check(&opts, 60);
}

#[test]
fn fixed_sizes_are_exact_and_small_sizes_are_raised_to_the_headers() {
    for n in [42u16, 60, 64, 128, 1514, 1518, 9000] {
        let opts = GenOptions {
            ip: IpChoice::V4,
            proto: vec![L4Choice::Udp],
            size: SizeChoice::Fixed(n),
            ..Default::default()
        };
        assert!(
            frames(&opts, 20)
                .iter()
                .all(|(_, f)| f.len() == usize::from(n)),
            "size {n}"
        );
    }
    // 64 is below IPv6+TCP+VLAN (78): those frames are header-only at 78 bytes.
    let opts = GenOptions {
        ip: IpChoice::V6,
        proto: vec![L4Choice::Tcp],
        vlan: Some(5),
        ..Default::default()
    };
    let out = generate_and_check(&opts, 10);
    assert!(out.iter().all(|(_, f)| f.len() == 78));
    // Mixed flows: IPv4/UDP at 64, IPv6/TCP raised to 74.
    let opts = GenOptions {
        flows: 2,
        proto: vec![L4Choice::Udp, L4Choice::Tcp],
        ..Default::default()
    };
    let g = FrameGenerator::new(&opts).unwrap();
    assert_eq!(g.flow(0).proto, L4Choice::Udp);
    let lens: Vec<usize> = generate_and_check(&GenOptions { flows: 4, ..opts }, 8)
        .iter()
        .map(|(_, f)| f.len())
        .collect();
    assert_eq!(lens, [64, 64, 64, 74, 64, 64, 64, 74]);
}

#[test]
fn imix_is_exactly_7_4_1_over_any_12k_frames() {
    let opts = GenOptions {
        ip: IpChoice::V4,
        size: SizeChoice::Imix,
        ..Default::default()
    };
    let all = frames(&opts, 12_000 + 11);
    for start in [0, 1, 5, 11] {
        let mut count = BTreeMap::new();
        for (_, f) in &all[start..start + 12_000] {
            *count.entry(f.len()).or_insert(0u32) += 1;
        }
        assert_eq!(
            count,
            BTreeMap::from([(64, 7000), (570, 4000), (1518, 1000)]),
            "start {start}"
        );
    }
    // Every window of 12 consecutive frames holds the exact mix.
    for w in all.windows(12).take(24) {
        let n64 = w.iter().filter(|(_, f)| f.len() == 64).count();
        let n570 = w.iter().filter(|(_, f)| f.len() == 570).count();
        assert_eq!((n64, n570), (7, 4));
    }
}

#[test]
fn size_lists_cycle_per_packet() {
    let opts = GenOptions {
        ip: IpChoice::V4,
        size: "100,64,1000".parse().unwrap(),
        ..Default::default()
    };
    let lens: Vec<usize> = frames(&opts, 7).iter().map(|(_, f)| f.len()).collect();
    assert_eq!(lens, [100, 64, 1000, 100, 64, 1000, 100]);
}

#[test]
fn vlan_tag_carries_the_id() {
    for id in [0u16, 1, 100, 4095] {
        let opts = GenOptions {
            vlan: Some(id),
            ..Default::default()
        };
        for (_, f) in frames(&opts, 16) {
            assert_eq!(f[12..14], [0x81, 0x00]);
            assert_eq!(
                u16::from_be_bytes([f[14], f[15]]),
                id,
                "TCI = PCP 0, DEI 0, id"
            );
            assert!(f[16..18] == [0x08, 0x00] || f[16..18] == [0x86, 0xdd]);
        }
    }
    for (_, f) in frames(&GenOptions::default(), 16) {
        assert!(
            f[12..14] == [0x08, 0x00] || f[12..14] == [0x86, 0xdd],
            "untagged"
        );
    }
}

#[test]
fn round_robin_gives_exact_per_flow_counts() {
    let dir = tempfile::tempdir().unwrap();
    let opts = GenOptions {
        flows: 7,
        ..Default::default()
    };
    let r = write_pcap(&opts, 7 * 50 + 3, None, &dir.path().join("rr.pcap")).unwrap();
    let mut want = vec![50u64; 7];
    want[..3].iter_mut().for_each(|c| *c += 1);
    assert_eq!(r.per_flow, want);
    assert_eq!((r.frames, r.valid), (353, 353));
    assert!(r.malformed.is_empty());
    assert_eq!(
        r.bytes,
        frames(&opts, 353)
            .iter()
            .map(|(_, f)| f.len() as u64)
            .sum::<u64>()
    );
    let kinds: Vec<FrameKind> = frames(&opts, 15).into_iter().map(|(k, _)| k).collect();
    let want: Vec<FrameKind> = (0..15).map(|k| FrameKind::Valid { flow: k % 7 }).collect();
    assert_eq!(kinds, want);
}

#[test]
fn expected_drops_and_labels() {
    use pipelines::DropReason as D;
    let drops: Vec<D> = MalformedKind::ALL
        .iter()
        .map(|k| k.expected_drop())
        .collect();
    assert_eq!(
        drops,
        [
            D::Runt,
            D::Runt,
            D::Ipv4Truncated,
            D::Ipv4BadVersion,
            D::Ipv4BadHeaderLength,
            D::Ipv4BadTotalLength,
            D::Ipv4BadChecksum,
            D::Ipv6Truncated,
            D::Ipv6BadPayloadLength,
            D::UdpBadLength,
            D::TcpBadDataOffset,
            D::L4Truncated,
        ]
    );
    let labels: std::collections::HashSet<_> =
        MalformedKind::ALL.iter().map(|k| k.label()).collect();
    assert_eq!(labels.len(), MalformedKind::ALL.len());
}

fn be16(f: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([f[at], f[at + 1]]))
}

/// Checks that `f` has exactly the defect `kind` names and is otherwise well-formed up to it.
fn check_defect(opts: &GenOptions, kind: MalformedKind, f: &[u8]) {
    use MalformedKind as M;
    let ctx = format!("{kind:?}");
    let l3 = l3_offset(opts);
    assert_eq!(&f[0..6], &opts.dst_mac.0, "{ctx}");
    if kind == M::Runt {
        assert_eq!(f.len(), 10, "{ctx}");
        assert_eq!(&f[6..10], &opts.src_mac.0[..4]);
        return;
    }
    assert_eq!(&f[6..12], &opts.src_mac.0, "{ctx}");
    if kind == M::TruncatedVlanTag {
        assert_eq!(f.len(), 16, "{ctx}");
        assert_eq!(f[12..14], [0x81, 0x00]);
        assert_eq!(be16(f, 14), usize::from(opts.vlan.unwrap_or(1)));
        return;
    }
    if let Some(id) = opts.vlan {
        assert_eq!(f[12..14], [0x81, 0x00], "{ctx}");
        assert_eq!(be16(f, 14), usize::from(id), "{ctx}");
    }
    let ethertype = be16(f, l3 - 2);
    let ip = &f[l3..];
    let v4 = ethertype == 0x0800;
    if v4 {
        match kind {
            M::Ipv4Truncated => {
                assert_eq!(ip.len(), 10, "{ctx}");
                assert_eq!(ip[0], 0x45, "{ctx}: version and IHL pass");
                return;
            }
            M::Ipv4BadVersion => assert_eq!(ip[0], 0x65, "{ctx}"),
            M::Ipv4BadHeaderLength => assert_eq!(ip[0], 0x44, "{ctx}"),
            _ => assert_eq!(ip[0], 0x45, "{ctx}"),
        }
        let total = be16(ip, 2);
        if kind == M::Ipv4TotalLengthTooLong {
            assert_eq!(total, ip.len() + 8, "{ctx}");
        } else {
            assert_eq!(total, ip.len(), "{ctx}: total length");
        }
        let csum_ok = sums_to_ffff(&[&ip[..20]]);
        assert_eq!(
            csum_ok,
            kind != M::Ipv4BadChecksum,
            "{ctx}: IPv4 header checksum"
        );
        if matches!(
            kind,
            M::Ipv4BadVersion | M::Ipv4BadHeaderLength | M::Ipv4TotalLengthTooLong
        ) {
            // The IP defect is the only one: the rest is an intact frame.
            return;
        }
    } else {
        assert_eq!(ethertype, 0x86dd, "{ctx}");
        assert_eq!(ip[0] >> 4, 6, "{ctx}: version");
        if kind == M::Ipv6Truncated {
            assert_eq!(ip.len(), 20, "{ctx}");
            return;
        }
        let payload_len = be16(ip, 4);
        if kind == M::Ipv6PayloadLengthTooLong {
            assert_eq!(payload_len, ip.len() - 40 + 8, "{ctx}");
            return;
        }
        assert_eq!(payload_len, ip.len() - 40, "{ctx}: payload length");
    }
    assert!(
        !matches!(
            kind,
            M::Ipv4Truncated
                | M::Ipv4BadVersion
                | M::Ipv4BadHeaderLength
                | M::Ipv4TotalLengthTooLong
                | M::Ipv6Truncated
                | M::Ipv6PayloadLengthTooLong
        ),
        "{ctx}: IP kind with the wrong IP version"
    );
    let (hdr, proto, src, dst) = if v4 {
        (20, ip[9], &ip[12..16], &ip[16..20])
    } else {
        (40, ip[6], &ip[8..24], &ip[24..40])
    };
    let seg = &ip[hdr..];
    let seg_len = seg.len() as u32;
    match kind {
        M::Ipv4BadChecksum => {
            // All but the IPv4 checksum is right: etherparse parses it (it does not check the IP
            // checksum) and the L4 checksum verifies.
            let p = SlicedPacket::from_ethernet(f).unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
            assert!(p.transport.is_some());
            let proto = ip[9];
            let covered = if proto == 1 {
                Vec::new()
            } else {
                pseudo(src, dst, proto, seg_len)
            };
            assert!(sums_to_ffff(&[&covered, seg]), "{ctx}: L4 checksum");
        }
        M::UdpLengthTooLong => {
            assert_eq!(proto, 17, "{ctx}");
            let stated = be16(seg, 4);
            assert_eq!(stated, seg.len() + 8, "{ctx}");
            assert!(
                SlicedPacket::from_ethernet(f).is_err(),
                "{ctx}: etherparse rejects it"
            );
            assert!(
                sums_to_ffff(&[&pseudo(src, dst, 17, stated as u32), seg]),
                "{ctx}: UDP checksum"
            );
        }
        M::TcpBadDataOffset => {
            assert_eq!(proto, 6, "{ctx}");
            assert!(seg.len() >= 20, "{ctx}: the full TCP header is present");
            assert_eq!(seg[12] >> 4, 4, "{ctx}");
            assert!(
                SlicedPacket::from_ethernet(f).is_err(),
                "{ctx}: etherparse rejects it"
            );
            assert!(
                sums_to_ffff(&[&pseudo(src, dst, 6, seg_len), seg]),
                "{ctx}: TCP checksum"
            );
        }
        M::L4Truncated => {
            assert_eq!(proto, 6, "{ctx}");
            assert_eq!(seg.len(), 8, "{ctx}");
            assert!(
                SlicedPacket::from_ethernet(f).is_err(),
                "{ctx}: etherparse rejects it"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn malformed_kinds_cycle_in_order_and_have_exactly_their_defect() {
    for (ip, vlan, size) in [
        (IpChoice::Mix, None, SizeChoice::Fixed(64)),
        (IpChoice::V4, Some(42), SizeChoice::Imix),
        (IpChoice::V6, None, SizeChoice::Fixed(42)),
        (IpChoice::Mix, Some(4095), SizeChoice::List(vec![42, 1500])),
    ] {
        let opts = GenOptions {
            ip,
            vlan,
            size,
            malformed_permille: 1000,
            flows: 5,
            ..Default::default()
        };
        let out = frames(&opts, MalformedKind::ALL.len() * 5);
        for (k, (kind, f)) in out.iter().enumerate() {
            let want = MalformedKind::ALL[k % MalformedKind::ALL.len()];
            assert_eq!(*kind, FrameKind::Malformed(want), "frame {k}");
            check_defect(&opts, want, f);
        }
    }
}

#[test]
fn malformed_frames_replace_about_the_asked_share() {
    let opts = GenOptions {
        malformed_permille: 100,
        ..Default::default()
    };
    let g = FrameGenerator::new(&opts).unwrap();
    let out = frames(&opts, 20_000);
    let mut seen = Vec::new();
    for (k, (kind, f)) in out.iter().enumerate() {
        match *kind {
            FrameKind::Malformed(m) => {
                check_defect(&opts, m, f);
                seen.push(m);
            }
            FrameKind::Valid { flow } => check_valid(&opts, &g, k as u64, flow, f, 64),
        }
    }
    assert!(
        (1800..=2200).contains(&seen.len()),
        "{} malformed",
        seen.len()
    );
    for (i, m) in seen.iter().enumerate() {
        assert_eq!(*m, MalformedKind::ALL[i % MalformedKind::ALL.len()]);
    }
    assert!(frames(&GenOptions::default(), 2000)
        .iter()
        .all(|(k, _)| matches!(k, FrameKind::Valid { .. })));
}

#[test]
fn buffer_is_reused_once_warm() {
    let opts = GenOptions {
        size: SizeChoice::Imix,
        malformed_permille: 300,
        ..Default::default()
    };
    let mut g = FrameGenerator::new(&opts).unwrap();
    let mut buf = Vec::with_capacity(1518);
    let ptr = buf.as_ptr();
    for _ in 0..1000 {
        g.next_frame(&mut buf);
        assert!(
            buf.capacity() == 1518 && buf.as_ptr() == ptr,
            "buffer reallocated"
        );
    }
}

fn read_pcap(
    path: &std::path::Path,
) -> (
    pcap_file::pcap::PcapHeader,
    Vec<(std::time::Duration, u32, Vec<u8>)>,
) {
    let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let header = r.header();
    let mut packets = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        packets.push((p.timestamp, p.orig_len, p.data.into_owned()));
    }
    (header, packets)
}

#[test]
fn write_pcap_reads_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let opts = GenOptions {
        size: SizeChoice::Imix,
        malformed_permille: 50,
        vlan: Some(10),
        ..Default::default()
    };
    let path = dir.path().join("a.pcap");
    let report = write_pcap(&opts, 1000, Some(3000.0), &path).unwrap();
    let (header, packets) = read_pcap(&path);
    assert_eq!(header.datalink, pcap_file::DataLink::ETHERNET);
    assert_eq!(header.ts_resolution, pcap_file::TsResolution::MicroSecond);
    assert_eq!(header.endianness, pcap_file::Endianness::Little);
    let want = frames(&opts, 1000);
    assert_eq!(packets.len(), 1000);
    let mut malformed = BTreeMap::new();
    for (k, ((ts, orig_len, data), (kind, frame))) in packets.iter().zip(&want).enumerate() {
        assert_eq!(data, frame, "frame {k}");
        assert_eq!(*orig_len as usize, frame.len());
        let micros = (k as u64 * 1_000_000) / 3000;
        assert_eq!(
            *ts,
            std::time::Duration::from_secs(PCAP_EPOCH_SECS)
                + std::time::Duration::from_micros(micros)
        );
        if let FrameKind::Malformed(m) = kind {
            *malformed.entry(m.label()).or_insert(0u64) += 1;
        }
    }
    assert_eq!(report.malformed, malformed);
    assert_eq!(report.frames, 1000);
    assert_eq!(report.valid + malformed.values().sum::<u64>(), 1000);
    assert_eq!(report.per_flow.iter().sum::<u64>(), report.valid);

    // Deterministic bytes, and 1 µs steps without a rate.
    let again = dir.path().join("b.pcap");
    write_pcap(&opts, 1000, Some(3000.0), &again).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&again).unwrap()
    );
    write_pcap(&opts, 5, None, &again).unwrap();
    let (_, packets) = read_pcap(&again);
    let ts: Vec<u128> = packets
        .iter()
        .map(|p| p.0.as_micros() - u128::from(PCAP_EPOCH_SECS) * 1_000_000)
        .collect();
    assert_eq!(ts, [0, 1, 2, 3, 4]);
    // Zero frames: a valid empty capture.
    write_pcap(&opts, 0, None, &again).unwrap();
    assert!(read_pcap(&again).1.is_empty());
}

#[test]
fn tcpdump_reads_the_pcap() {
    let tcpdump = std::path::Path::new("/usr/bin/tcpdump");
    if !tcpdump.exists() {
        println!("note: /usr/bin/tcpdump is not installed; skipping the tcpdump check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pcap");
    let opts = GenOptions {
        size: SizeChoice::Imix,
        malformed_permille: 200,
        vlan: Some(9),
        ..Default::default()
    };
    write_pcap(&opts, 300, Some(1e6), &path).unwrap();
    let out = std::process::Command::new(tcpdump)
        .arg("-r")
        .arg(&path)
        .arg("-nn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tcpdump failed: {stderr}");
    assert!(stderr.contains("EN10MB"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 300, "{stdout}");
}

#[test]
fn option_errors_name_the_option() {
    let err = |o: GenOptions| FrameGenerator::new(&o).unwrap_err().to_string();
    assert_eq!(
        err(GenOptions {
            size: SizeChoice::Fixed(20),
            ..Default::default()
        }),
        "--size: 20 is smaller than the 42-byte headers of an IPv4/UDP frame"
    );
    assert!(err(GenOptions {
        size: SizeChoice::Fixed(9001),
        ..Default::default()
    })
    .starts_with("--size: 9001 is larger"));
    assert!(err(GenOptions {
        size: SizeChoice::List(vec![64, 41]),
        ..Default::default()
    })
    .starts_with("--size: 41"));
    assert!(err(GenOptions {
        size: SizeChoice::List(vec![]),
        ..Default::default()
    })
    .starts_with("--size:"));
    assert!(err(GenOptions {
        flows: 0,
        ..Default::default()
    })
    .starts_with("--flows:"));
    assert!(err(GenOptions {
        flows: MAX_FLOWS + 1,
        ..Default::default()
    })
    .starts_with("--flows:"));
    assert!(err(GenOptions {
        proto: vec![],
        ..Default::default()
    })
    .starts_with("--proto:"));
    assert!(err(GenOptions {
        vlan: Some(4096),
        ..Default::default()
    })
    .starts_with("--vlan:"));
    assert!(err(GenOptions {
        malformed_permille: 1001,
        ..Default::default()
    })
    .starts_with("--malformed-permille:"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.pcap");
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = write_pcap(&GenOptions::default(), 1, Some(rate), &p)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--rate-pps:"), "{e}");
    }
    let e = write_pcap(&GenOptions::default(), 10, Some(1e-9), &p)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--rate-pps:"), "{e}");
    let e = write_pcap(
        &GenOptions::default(),
        1,
        None,
        &dir.path().join("no/such/dir.pcap"),
    )
    .unwrap_err();
    assert!(
        matches!(e, GenError::Io { .. }) && e.to_string().contains("no/such/dir.pcap"),
        "{e}"
    );

    // The same checks on the command line, where clap names the option.
    for (args, option) in [
        (&["--size", "20"][..], "--size"),
        (&["--size", "64,abc"], "--size"),
        (&["--size", "100000"], "--size"),
        (&["--size", ""], "--size"),
        (&["--flows", "0"], "--flows"),
        (&["--ip", "5"], "--ip"),
        (&["--proto", "tcp,sctp"], "--proto"),
        (&["--vlan", "4096"], "--vlan"),
        (&["--malformed-permille", "1001"], "--malformed-permille"),
        (&["--src-mac", "02:00:00:00:00"], "--src-mac"),
        (&["--dst-mac", "02:00:00:00:00:01:02"], "--dst-mac"),
        (&["--src-ipv4", "10.0.0"], "--src-ipv4"),
    ] {
        let e = parse(args).unwrap_err();
        assert!(e.contains(option), "{args:?}: {e}");
    }
    assert!(parse(&["--size", "20"])
        .unwrap_err()
        .contains("smaller than the 42-byte headers"));
}
