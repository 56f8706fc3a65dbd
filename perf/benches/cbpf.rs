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

/// (label, expression): short, two typical ones, and a long list of 32 hosts
/// (100+ instructions even after libpcap's optimiser).
fn programs() -> Vec<(&'static str, String)> {
    let long = (1..=32)
        .map(|h| format!("host 10.0.{h}.{}", 3 * h))
        .collect::<Vec<_>>()
        .join(" or ");
    vec![
        ("short", "ip".to_owned()),
        ("typical", "tcp dst port 443".to_owned()),
        (
            "typical2",
            "udp dst portrange 6000-6100 or tcp src port 22".to_owned(),
        ),
        ("long", long),
    ]
}

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
    for (label, expr) in programs() {
        let insns = pmd_glue::pcap::compile(&expr, 262_144, true).unwrap();
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
    if let Err(e) = eal.cleanup() {
        eprintln!("EAL cleanup: {e}");
    }
}

criterion_group!(benches, bench_engines);
criterion_main!(benches);
/// DPDK's classic-BPF path on real mbufs: its eBPF interpreter, and its JIT when it has one.
fn dpdk_engines(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    prog: &Program,
    mbufs: &[pmd_glue::Mbuf],
) {
    let d = match pmd_glue::dpdk_bpf::DpdkBpf::from_program(prog) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("DPDK rte_bpf unavailable: {e}");
            return;
        }
    };
    g.bench_function(BenchmarkId::from_parameter("dpdk-interpreter"), |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for m in mbufs {
                acc = acc.wrapping_add(d.run_interp(black_box(m)));
            }
            acc
        })
    });
    if d.has_jit() {
        g.bench_function(BenchmarkId::from_parameter("dpdk-jit"), |b| {
            b.iter(|| {
                let mut acc = 0u64;
                for m in mbufs {
                    acc = acc.wrapping_add(d.run_jit(black_box(m)).unwrap_or(0));
                }
                acc
            })
        });
    }
}
