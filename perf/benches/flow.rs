//! ns/packet of the flow classifier (`pipelines::flow`, Linux cls_flow): the 5-tuple hash with a
//! divisor on IPv4/UDP and IPv6/TCP, the same over 64 different flows per iteration (so that
//! branch predictors do not learn one frame), map mode on a key from the dissector and on a
//! metadata key, and the software rxhash alone.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pipelines::flow::gen::{ipv4_frame, ipv6_frame, random_flow_frame};
use pipelines::flow::{software_rxhash, FlowClassifier, FlowSpec};
use pipelines::pipeline::{Classifier, PacketView, PortIndex};
use pipelines::wire::{self, Parsed};
use std::hint::black_box;

fn view<'a>(f: &'a [u8], parsed: &'a Parsed) -> PacketView<'a> {
    PacketView {
        data: f,
        frame_len: f.len() as u32,
        parsed,
        dev: PortIndex(0),
        iif: PortIndex(0),
        ingress_mac: [2, 0, 0, 0, 0, 1],
        rss_hash: None,
        mark: 7,
        priority: 0,
        classid: 0,
        flowlabel: 0,
    }
}

fn spec(keys: &[&str], mode: Option<&str>) -> FlowSpec {
    FlowSpec {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        mode: mode.map(str::to_string),
        divisor: Some(1024),
        seed: mode.map(|_| 0x5eed),
        ..FlowSpec::default()
    }
}

const FIVE_TUPLE: [&str; 5] = ["src", "dst", "proto", "proto-src", "proto-dst"];

fn frame(kind: &str, i: u32) -> Vec<u8> {
    match kind {
        "ipv4-udp" => ipv4_frame(
            [10, 0, (i >> 8) as u8, i as u8],
            [10, 1, 0, 1],
            17,
            1024 + i as u16,
            53,
        ),
        "ipv6-tcp" => {
            let mut s = [0xfd; 16];
            s[12..].copy_from_slice(&i.to_be_bytes());
            ipv6_frame(s, [0xfe; 16], 6, 40000 + i as u16, 443)
        }
        _ => unreachable!("unknown frame kind"),
    }
}

fn bench_flow(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow::classify");
    g.throughput(Throughput::Elements(1));
    let hash = FlowClassifier::new(&spec(&FIVE_TUPLE, Some("hash"))).expect("spec");
    for kind in ["ipv4-udp", "ipv6-tcp"] {
        let f = frame(kind, 1);
        let parsed = wire::parse(&f, f.len() as u32, false).expect("valid frame");
        g.bench_with_input(BenchmarkId::new("hash-5tuple", kind), &f, |b, f| {
            let v = view(f, &parsed);
            b.iter(|| hash.classify(black_box(&v)))
        });
    }
    for (name, key) in [("map-dst", "dst"), ("map-mark", "mark")] {
        let m = FlowClassifier::new(&spec(&[key], None)).expect("spec");
        let f = frame("ipv4-udp", 1);
        let parsed = wire::parse(&f, f.len() as u32, false).expect("valid frame");
        g.bench_with_input(BenchmarkId::new(name, "ipv4-udp"), &f, |b, f| {
            let v = view(f, &parsed);
            b.iter(|| m.classify(black_box(&v)))
        });
    }
    let f = frame("ipv4-udp", 1);
    g.bench_with_input(
        BenchmarkId::new("software-rxhash", "ipv4-udp"),
        &f,
        |b, f| b.iter(|| software_rxhash(black_box(f), 0x1234)),
    );
    g.finish();

    // 64 flows per iteration: IPv4/UDP and IPv6/TCP alternating, then the dissector's zoo.
    let mut g = c.benchmark_group("flow::classify (64 frames)");
    g.throughput(Throughput::Elements(64));
    let mixed: Vec<Vec<u8>> = (0..64)
        .map(|i| frame(if i % 2 == 0 { "ipv4-udp" } else { "ipv6-tcp" }, i))
        .collect();
    let zoo: Vec<Vec<u8>> = (0..64).map(random_flow_frame).collect();
    let parsed = Parsed::default();
    for (name, frames) in [
        ("hash-5tuple/v4-v6-flows", &mixed),
        ("hash-5tuple/random-encapsulations", &zoo),
    ] {
        let views: Vec<PacketView<'_>> = frames.iter().map(|f| view(f, &parsed)).collect();
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for v in &views {
                    if let pipelines::pipeline::Verdict::Match(c) = hash.classify(black_box(v)) {
                        acc ^= c;
                    }
                }
                acc
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_flow);
criterion_main!(benches);
