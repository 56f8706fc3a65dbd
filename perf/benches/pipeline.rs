//! ns/packet of the pipeline stages without DPDK: header parsing and whole-pipeline processing
//! at both validation levels, over frames built by etherparse.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pipelines::packet::VecPacket;
use pipelines::pipeline::{Forward, Generation, PortIndex, PortPipeline, Sink, Validation};
use pipelines::stats::StatsWriter;
use std::hint::black_box;

fn frame(kind: &str) -> Vec<u8> {
    let eth = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let payload = [0xa5u8; 22];
    let mut out = Vec::new();
    match kind {
        "ipv4-udp" => eth
            .ipv4([10, 0, 0, 1], [10, 1, 0, 1], 64)
            .udp(1234, 5678)
            .write(&mut out, &payload),
        "ipv6-tcp" => eth
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(1234, 443, 1, 65535)
            .write(&mut out, &payload),
        "vlan-ipv4-tcp" => eth
            .single_vlan(etherparse::VlanId::try_new(100).unwrap())
            .ipv4([10, 0, 0, 1], [10, 1, 0, 1], 64)
            .tcp(1234, 80, 1, 65535)
            .write(&mut out, &payload),
        _ => unreachable!("unknown frame kind"),
    }
    .expect("build frame");
    out
}

/// Counts what would be transmitted, then drops it.
struct CountingSink(u64);

impl Sink<VecPacket> for CountingSink {
    fn send(&mut self, _port: PortIndex, pkt: VecPacket, _stats: &mut StatsWriter) {
        self.0 += 1;
        black_box(pkt);
    }

    fn clone_packet(&mut self, pkt: &VecPacket) -> Option<VecPacket> {
        Some(pkt.clone())
    }

    fn link_up(&self, _port: PortIndex) -> bool {
        true
    }
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire::parse");
    g.throughput(Throughput::Elements(1));
    for kind in ["ipv4-udp", "ipv6-tcp", "vlan-ipv4-tcp"] {
        let f = frame(kind);
        g.bench_with_input(BenchmarkId::from_parameter(kind), &f, |b, f| {
            b.iter(|| pipelines::wire::parse(black_box(f), f.len() as u32, false))
        });
    }
    g.finish();
}

fn bench_process(c: &mut Criterion) {
    let mut g = c.benchmark_group("Generation::process_burst (32 x ipv4-udp)");
    g.throughput(Throughput::Elements(32));
    for (name, validation) in [("full", Validation::Full), ("l2", Validation::L2)] {
        let gen = Generation {
            ports: vec![
                PortPipeline {
                    name: "in".into(),
                    validation,
                    forward: Forward::To(PortIndex(1)),
                    ..Default::default()
                },
                PortPipeline {
                    name: "out".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let burst: Vec<VecPacket> = (0..32).map(|_| VecPacket::new(frame("ipv4-udp"))).collect();
        let (mut stats, _reader) = StatsWriter::new(1, 2, 0, 0);
        let mut sink = CountingSink(0);
        g.bench_function(name, |b| {
            b.iter_batched(
                || burst.clone(),
                |pkts| gen.process_burst(pkts.into_iter(), PortIndex(0), &mut stats, &mut sink),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench_parse, bench_process);
criterion_main!(benches);
