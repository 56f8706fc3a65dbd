//! ns/packet of the IPv6 flow-label stage (`pipelines::flowlabel`): a label hit and a new flow,
//! with 1 thousand and 1 million live flows, plus the whole per-packet step (flow key from the
//! parsed frame, table, header write). Flows are visited in a shuffled order so that the
//! 1-million table is read the way random traffic reads it (cache misses included).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pipelines::flowlabel::{
    read_label, write_label, FlowKey, FlowLabelConfig, FlowLabelTable, LabelOutcome,
};
use pipelines::wire;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn key(i: u32) -> FlowKey {
    let mut src = [0u8; 16];
    src[0] = 0xfd;
    src[12..].copy_from_slice(&i.to_be_bytes());
    FlowKey::new(src, [0xfe; 16], 17, (i % 50_000) as u16 + 1024, 443)
}

/// A permutation of 0..n (xorshift-driven Fisher-Yates; deterministic).
fn shuffled(n: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// A table of `live` flows with linger 6 s, filled at time 1e9 ms.
fn filled(live: u32) -> FlowLabelTable {
    let cfg = FlowLabelConfig {
        capacity: live as usize + live as usize / 8 + 1024,
        ..FlowLabelConfig::default()
    };
    let t = FlowLabelTable::with_seeds(&cfg, [11, 22, 33]).unwrap();
    for i in 0..live {
        t.label(&key(i), 1_000_000_000, 0);
    }
    t
}

const NOW: u64 = 1_000_000_000;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("flowlabel");
    g.throughput(Throughput::Elements(1));
    for live in [1_000u32, 1_000_000] {
        let t = filled(live);
        let order = shuffled(live);
        let keys: Vec<FlowKey> = order.iter().map(|&i| key(i)).collect();
        eprintln!(
            "flowlabel: {live} live flows: {} slots, {} MiB, {} bytes per live flow, {} labels in use",
            t.slots(),
            t.memory_bytes() >> 20,
            t.memory_bytes() / live as usize,
            t.labels_in_use()
        );

        g.bench_function(BenchmarkId::new("hit", live), |b| {
            let mut i = 0usize;
            b.iter(|| {
                let k = &keys[i];
                i = if i + 1 == keys.len() { 0 } else { i + 1 };
                black_box(t.label(black_box(k), NOW, 0))
            })
        });

        // New flows: each timed batch inserts fresh flows (time NOW - linger - 1, so the
        // collector can reclaim exactly them afterwards, outside the timed region) and the
        // table goes back to `live` flows between batches.
        let mut next = live;
        let mut outcomes = [0u64; 4];
        g.bench_function(BenchmarkId::new("new", live), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    // Never more new flows than the table's free capacity.
                    let n = left.min(u64::from(live / 2).clamp(500, 20_000));
                    let start = Instant::now();
                    for _ in 0..n {
                        let (l, how, _) = t.label(&key(next), NOW - 7_000, 0);
                        black_box(l);
                        outcomes[how as usize] += 1;
                        next = next.wrapping_add(1).max(live);
                    }
                    total += start.elapsed();
                    left -= n;
                    // Reclaim the new flows, and release their quarantined labels.
                    t.gc(NOW);
                    t.gc(NOW);
                }
                total
            })
        });
        eprintln!(
            "flowlabel: new flows at {live} live: {} unique labels, {} table full, {} labels exhausted",
            outcomes[LabelOutcome::New as usize],
            outcomes[LabelOutcome::FallbackTableFull as usize],
            outcomes[LabelOutcome::FallbackLabelsExhausted as usize]
        );

        // The whole step on a hit: key from the parsed frame, table, header write.
        let mut frame = vec![0u8; 14 + 40 + 8 + 18];
        frame[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        frame[14] = 0x60;
        frame[18..20].copy_from_slice(&26u16.to_be_bytes());
        frame[20] = 17;
        frame[21] = 64;
        frame[22] = 0xfd;
        frame[38..54].copy_from_slice(&[0xfe; 16]);
        frame[56..58].copy_from_slice(&443u16.to_be_bytes());
        frame[58..60].copy_from_slice(&26u16.to_be_bytes());
        let frames: Vec<Vec<u8>> = order
            .iter()
            .take(4096)
            .map(|&i| {
                let mut f = frame.clone();
                f[34..38].copy_from_slice(&i.to_be_bytes());
                f[54..56].copy_from_slice(&((i % 50_000) as u16 + 1024).to_be_bytes());
                f
            })
            .collect();
        let parsed: Vec<wire::Parsed> = frames
            .iter()
            .map(|f| wire::parse(f, f.len() as u32, false).unwrap())
            .collect();
        assert_eq!(
            FlowKey::of(&frames[0], &parsed[0]),
            Some(key(order[0])),
            "the bench frames are the table's flows"
        );
        let mut frames = frames;
        g.bench_function(BenchmarkId::new("packet-hit", live), |b| {
            let mut i = 0usize;
            b.iter(|| {
                let (f, p) = (&mut frames[i], &parsed[i]);
                i = (i + 1) % parsed.len();
                let k = FlowKey::of(f, p).unwrap();
                let (l, _, _) = t.label(&k, NOW, 0);
                if read_label(&f[14..]) != Some(l) {
                    write_label(&mut f[14..], l);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
