use super::*;
use crate::wire;
use std::collections::{HashMap, HashSet};

fn cfg(capacity: usize) -> FlowLabelConfig {
    FlowLabelConfig {
        capacity,
        ..FlowLabelConfig::default()
    }
}

fn table(capacity: usize) -> FlowLabelTable {
    FlowLabelTable::with_seeds(&cfg(capacity), [1, 2, 3]).unwrap()
}

fn flow(i: u32) -> FlowKey {
    let mut src = [0u8; 16];
    src[..2].copy_from_slice(&[0x20, 0x01]);
    src[12..].copy_from_slice(&i.to_be_bytes());
    let dst = [0xfd; 16];
    FlowKey::new(src, dst, 6, (i % 60000) as u16, 443)
}

#[test]
fn same_flow_same_label_distinct_flows_distinct_labels() {
    let t = table(20_000);
    let mut labels = HashMap::new();
    for i in 0..20_000 {
        let (l, how, _) = t.label(&flow(i), 1000, 0);
        assert_eq!(how, LabelOutcome::New, "flow {i}");
        assert!(l != 0 && l <= LABEL_MASK);
        labels.insert(i, l);
    }
    let distinct: HashSet<u32> = labels.values().copied().collect();
    assert_eq!(distinct.len(), labels.len(), "labels are unique");
    for i in 0..20_000 {
        assert_eq!(
            t.label(&flow(i), 2000, 1),
            (labels[&i], LabelOutcome::Hit, 0)
        );
    }
    assert_eq!(t.live(), 20_000);
}

#[test]
fn labels_spread_uniformly_over_their_bits() {
    // Chi-square on the 20 bits and on the low 8 bits as a byte, over 50k flows.
    let t = table(60_000);
    let n = 50_000;
    let mut ones = [0u32; 20];
    let mut bytes = [0u32; 256];
    for i in 0..n {
        let (l, _, _) = t.label(&flow(i), 0, 0);
        for (b, c) in ones.iter_mut().enumerate() {
            *c += (l >> b) & 1;
        }
        bytes[(l & 0xff) as usize] += 1;
    }
    // The 20 bits together: chi-square with 20 degrees of freedom; 45.31 is p = 0.001.
    let e = f64::from(n) / 2.0;
    let chi: f64 = ones
        .iter()
        .map(|&c| (f64::from(c) - e).powi(2) / e * 2.0)
        .sum();
    assert!(chi < 45.31, "bits: {ones:?}, chi2 {chi}");
    let e = f64::from(n) / 256.0;
    let chi: f64 = bytes.iter().map(|&c| (f64::from(c) - e).powi(2) / e).sum();
    // 255 degrees of freedom: p = 0.001 at 330.5.
    assert!(chi < 330.5, "low byte chi2 {chi}");
}

#[test]
fn linger_expiry_and_gc_with_a_controlled_clock() {
    let t = table(64);
    let linger = t.linger_ms();
    assert_eq!(linger, MIN_LINGER_MS);
    let (a, _, _) = t.label(&flow(1), 10_000, 0);
    let (b, _, _) = t.label(&flow(2), 10_000, 0);
    // Flow 1 keeps being used; flow 2 goes idle.
    for now in (10_000..=10_000 + linger).step_by(500) {
        assert_eq!(t.label(&flow(1), now, 0).0, a);
        let st = t.gc(now);
        assert_eq!(st.live, 2, "nothing expires within the linger (now {now})");
    }
    let now = 10_000 + linger + 1;
    let st = t.gc(now);
    assert_eq!((st.live, st.expired, st.quarantined), (1, 1, 1));
    // The entries listed: flow 1 only, expiring a linger after its last use.
    let e = t.entries(now, 100);
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].label, e[0].flow, e[0].share),
        (a, Some(flow(1)), "dynamic")
    );
    assert_eq!(e[0].expires_ms, Some(linger - 1));
    // b is quarantined for one collection: still claimed.
    let (w, bit) = (b as usize / 64, 1u64 << (b % 64));
    assert_ne!(t.used[w].load(Ordering::Relaxed) & bit, 0);
    t.gc(now + 1);
    assert_eq!(
        t.used[w].load(Ordering::Relaxed) & bit,
        0,
        "released one pass later"
    );
    // Flow 2 comes back: a new entry.
    assert_eq!(t.label(&flow(2), now + 2, 0).1, LabelOutcome::New);
    assert_eq!(t.gc_stats().expired, 1);
}

#[test]
fn table_full_falls_back_to_a_stable_stateless_label() {
    let t = table(1); // two buckets of seven slots
    assert_eq!(t.slots(), 2 * SLOTS);
    let mut fallback = 0;
    let mut seen = HashMap::new();
    for i in 0..200 {
        let (l, how, _) = t.label(&flow(i), 0, 0);
        assert!(l != 0);
        if how == LabelOutcome::FallbackTableFull {
            fallback += 1;
        }
        seen.insert(i, l);
    }
    assert_eq!(t.live(), 2 * SLOTS);
    assert_eq!(fallback, 200 - 2 * SLOTS);
    for i in 0..200 {
        assert_eq!(
            t.label(&flow(i), 1, 0).0,
            seen[&i],
            "flow {i} keeps its label"
        );
    }
}

#[test]
fn exhausted_label_space_falls_back() {
    let t = table(64);
    for w in t.used.iter() {
        w.store(u64::MAX, Ordering::Relaxed);
    }
    let (l, how, retries) = t.label(&flow(7), 0, 0);
    assert_eq!(how, LabelOutcome::FallbackLabelsExhausted);
    assert_eq!(retries, ALLOC_TRIES);
    assert!(l != 0);
    assert_eq!(t.live(), 0);
    // One free label somewhere the bounded scan does not reach is not found; one where the
    // random candidates land is.
    let h = flow(7).hash(&t.keys);
    let cand = jhash_2words(h, 3, 3) & LABEL_MASK;
    t.used[cand as usize / 64].fetch_and(!(1 << (cand % 64)), Ordering::Relaxed);
    assert_eq!(t.label(&flow(7), 0, 0), (cand, LabelOutcome::New, 3));
}

#[test]
fn reserved_labels_are_never_handed_to_flows() {
    // Reserve a dense block of 50k labels and the whole low range the fallback could hit.
    let reservations: Vec<Reservation> = (1..50_001)
        .map(|l| Reservation {
            label: l,
            share: if l % 2 == 0 {
                Share::Exclusive
            } else {
                Share::Shared
            },
            users: 1,
        })
        .collect();
    let c = FlowLabelConfig {
        capacity: 2000,
        reservations,
        ..FlowLabelConfig::default()
    };
    let t = FlowLabelTable::with_seeds(&c, [9, 8, 7]).unwrap();
    for i in 0..5000 {
        let (l, _, _) = t.label(&flow(i), 0, 0);
        assert!(l > 50_000, "flow {i} got reserved label {l}");
        assert!(!t.is_reserved(l));
    }
    // Stateless labels skip reserved ones too.
    for h in 0..100_000u32 {
        assert!(!t.is_reserved(t.fallback(h)));
        assert_ne!(t.fallback(h), 0);
    }
    // GC never returns a reserved label to the pool.
    t.release_label(2);
    assert_ne!(t.used[0].load(Ordering::Relaxed) & 4, 0);
    let e = t.entries(0, 0);
    assert_eq!(e.len(), 50_000);
    assert_eq!((e[1].label, e[1].share, e[1].owner), (2, "exclusive", None));
}

fn res(label: u32, share: Share, users: u32) -> Reservation {
    Reservation {
        label,
        share,
        users,
    }
}

fn claimed(t: &FlowLabelTable, label: u32) -> bool {
    t.used[label as usize / 64].load(Ordering::Relaxed) & (1 << (label % 64)) != 0
}

#[test]
fn reservation_diff_names_added_removed_and_changed_labels() {
    let old = [
        res(0x10, Share::Exclusive, 1),
        res(0x20, Share::Shared, 1),
        res(0x20, Share::Shared, 2),
        res(0x30, Share::Shared, 0),
    ];
    let new = [
        res(0x30, Share::Exclusive, 0),
        res(0x20, Share::Shared, 3),
        res(0x40, Share::Shared, 1),
    ];
    let d = ReservationDiff::between(&old, &new);
    // 0x20: two shared reservations with 3 users in all, as before; 0x30: its share changed.
    assert_eq!(
        d,
        ReservationDiff {
            added: vec![0x40],
            removed: vec![0x10],
            changed: vec![0x30],
        }
    );
    assert_eq!(
        d.to_string(),
        "added 0x00040; removed 0x00010; changed 0x00030"
    );
    let same = ReservationDiff::between(&old, &old);
    assert!(same.is_empty());
    assert_eq!(same.to_string(), "");
    assert_eq!(
        ReservationDiff::between(&[], &old).to_string(),
        "added 0x00010, 0x00020, 0x00030"
    );
}

#[test]
fn reservations_added_while_running_are_claimed_and_never_given_to_flows() {
    let t = table(4096);
    assert!(t.reservations().is_empty());
    let labels: Vec<u32> = (0x100..0x140).collect();
    let rs: Vec<Reservation> = labels
        .iter()
        .map(|&l| res(l, Share::Exclusive, 1))
        .collect();
    t.reserve(&rs, 0).unwrap();
    for &l in &labels {
        assert!(t.is_reserved(l) && claimed(&t, l));
    }
    assert_eq!(t.reservations(), rs);
    assert_eq!(t.reserved_labels(), labels);
    // Flows never get them, nor stateless labels.
    for i in 0..3000 {
        let (l, _, _) = t.label(&flow(i), 0, 0);
        assert!(!labels.contains(&l), "flow {i} got reserved label {l:#x}");
    }
    for h in 0..50_000 {
        assert!(!labels.contains(&t.fallback(h)));
    }
    assert_eq!(t.labels_in_use(), 3000);
}

#[test]
fn a_label_a_live_flow_holds_is_refused_naming_the_flow_and_nothing_changes() {
    let t = table(64);
    let (held, _, _) = t.label(&flow(7), 10_000, 0);
    let free = (1..LABEL_MASK).find(|&l| !claimed(&t, l)).unwrap();
    let free2 = (free + 1..LABEL_MASK).find(|&l| !claimed(&t, l)).unwrap();
    t.reserve(&[res(free, Share::Shared, 1)], 10_000).unwrap();
    // The new set adds a free label and the flow's: refused as a whole.
    let e = t
        .reserve(
            &[
                res(free, Share::Shared, 1),
                res(free2, Share::Exclusive, 1),
                res(held, Share::Exclusive, 1),
            ],
            12_500,
        )
        .unwrap_err();
    assert_eq!(e.label, held);
    let (key, idle, linger) = e.holder.unwrap();
    assert_eq!((key, idle, linger), (flow(7), 2_500, MIN_LINGER_MS));
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "{held:#07x} is in use by a live flow (2001::7 -> fdfd:"
        )) && msg.contains("protocol 6, ports 7 -> 443; idle for 2.5 s")
            && msg.contains("reload again once the flow has expired, or reserve another label"),
        "{msg}"
    );
    // Nothing changed: the free label is free again, the set is the previous one, the flow
    // keeps its label.
    assert!(!claimed(&t, free2) && !t.is_reserved(free2));
    assert!(!t.is_reserved(held));
    assert_eq!(t.reservations(), [res(free, Share::Shared, 1)]);
    assert_eq!(t.reserved_labels(), [free]);
    assert_eq!(t.label(&flow(7), 12_600, 0), (held, LabelOutcome::Hit, 0));
    // Once the flow expired and was collected, the label is quarantined: a reservation takes
    // it from the collector, and it is never released to the pool by the collector.
    t.gc(12_600 + MIN_LINGER_MS + 1);
    assert_eq!(t.live(), 0);
    t.reserve(&[res(held, Share::Exclusive, 1)], 20_000)
        .unwrap();
    assert!(t.is_reserved(held));
    t.gc(20_001);
    t.gc(20_002);
    assert!(
        claimed(&t, held),
        "the collector gave a reserved label back"
    );
    assert_eq!(t.label(&flow(7), 20_003, 0).1, LabelOutcome::New);
    assert_ne!(t.label(&flow(7), 20_003, 0).0, held);
}

#[test]
fn removed_reservations_linger_then_wait_in_quarantine_before_a_flow_may_get_them() {
    let t = table(64);
    t.reserve(
        &[
            res(0x5353, Share::Exclusive, 1),
            res(0x77, Share::Shared, 2),
        ],
        0,
    )
    .unwrap();
    // The new configuration drops 0x5353: still reserved until the old generation is gone.
    t.reserve(&[res(0x77, Share::Shared, 2)], 1_000).unwrap();
    assert!(t.is_reserved(0x5353));
    assert_eq!(t.reservations(), [res(0x77, Share::Shared, 2)]);
    assert_eq!(t.reserved_labels(), [0x77, 0x5353]);
    let released = t.release_reservations(&[res(0x77, Share::Shared, 2)], 2_000);
    assert_eq!(released, [0x5353]);
    assert!(!t.is_reserved(0x5353) && claimed(&t, 0x5353));
    assert_eq!(t.reserved_labels(), [0x77]);
    // Listed as released while it lingers.
    let e = t.entries(3_000, 0);
    assert_eq!(e.len(), 2);
    assert_eq!(
        (e[1].label, e[1].share, e[1].users, e[1].expires_ms),
        (0x5353, "released", 0, Some(MIN_LINGER_MS - 1_000))
    );
    // Lingers for the linger, then one collection in quarantine.
    t.gc(2_000 + MIN_LINGER_MS - 1);
    assert!(claimed(&t, 0x5353));
    let st = t.gc(2_000 + MIN_LINGER_MS);
    assert_eq!(st.quarantined, 1);
    assert!(claimed(&t, 0x5353), "quarantined for one collection");
    assert_eq!(t.entries(2_000 + MIN_LINGER_MS, 0).len(), 1);
    t.gc(2_000 + MIN_LINGER_MS + 1);
    assert!(!claimed(&t, 0x5353), "back in the pool");

    // Released again and reserved again while it lingers: taken back from the collector.
    t.reserve(&[res(0x5353, Share::Exclusive, 1)], 20_000)
        .unwrap();
    t.release_reservations(&[], 20_000);
    assert!(!t.is_reserved(0x77) && !t.is_reserved(0x5353));
    t.reserve(&[res(0x5353, Share::Shared, 1)], 21_000).unwrap();
    assert!(t.is_reserved(0x5353));
    t.gc(40_000);
    assert!(claimed(&t, 0x77), "0x77 is quarantined by this collection");
    t.gc(40_001);
    assert!(!claimed(&t, 0x77));
    assert!(
        claimed(&t, 0x5353),
        "re-reserved: the collector no longer owns it"
    );
    assert_eq!(t.entries(40_001, 0).len(), 1);
}

#[test]
fn reserving_while_lcores_create_flows_never_shares_a_label_with_a_live_flow() {
    // Two lcores keep creating flows (up to 100,000: a tenth of the labels) while the
    // control thread reserves sets of labels and releases them. A granted reservation's
    // labels are never a live flow's; a refused one names a label some flow held.
    let t = FlowLabelTable::with_seeds(&cfg(60_000), [3, 1, 4]).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut granted, mut refused) = (0, 0);
    std::thread::scope(|s| {
        for lcore in 0..2u16 {
            let (t, stop) = (&t, &stop);
            s.spawn(move || {
                let mut i = u32::from(lcore) * 1_000_000;
                while !stop.load(Ordering::Relaxed) && i % 1_000_000 < 50_000 {
                    t.label(&flow(i), 0, lcore);
                    i += 1;
                }
            });
        }
        for round in 0..200u32 {
            // Labels of live flows are dense in no range: pick spread candidates.
            let set: Vec<Reservation> = (0..16)
                .map(|k| {
                    res(
                        1 + (round * 7919 + k * 65_521) % LABEL_MASK,
                        Share::Shared,
                        1,
                    )
                })
                .collect();
            match t.reserve(&set, 0) {
                Ok(()) => {
                    granted += 1;
                    for e in t.entries(0, usize::MAX) {
                        if e.share == "dynamic" {
                            assert!(
                                !set.iter().any(|r| r.label == e.label),
                                "reserved {:#x} is live flow {:?}'s",
                                e.label,
                                e.flow
                            );
                        }
                    }
                }
                Err(e) => {
                    refused += 1;
                    assert!(set.iter().any(|r| r.label == e.label));
                    assert!(!t.is_reserved(e.label));
                }
            }
            t.release_reservations(&[], 0);
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(granted > 0, "{granted} granted, {refused} refused");
}

#[test]
fn a_shorter_linger_applies_from_the_next_collection() {
    let t = table(64);
    t.set_linger_ms(30_000);
    t.label(&flow(1), 0, 0);
    t.label(&flow(2), 0, 0);
    t.label(&flow(2), 20_000, 0);
    assert_eq!(t.gc(25_000).live, 2);
    t.set_linger_ms(MIN_LINGER_MS);
    // Flow 1 has been idle for 25 s, flow 2 for 5 s.
    let st = t.gc(25_000);
    assert_eq!((st.live, st.expired), (1, 1));
    assert_eq!(t.entries(25_000, 10)[0].linger_ms, MIN_LINGER_MS);
}

#[test]
fn config_errors_name_the_field() {
    let bad = |c: FlowLabelConfig, field: &str| {
        let e = c.validate().unwrap_err().0;
        assert!(e.contains(field), "{e}");
    };
    bad(cfg(0), "`flowlabels.capacity`");
    bad(cfg(MAX_CAPACITY + 1), "`flowlabels.capacity`");
    bad(
        FlowLabelConfig {
            linger_ms: 5_999,
            ..cfg(1)
        },
        "`flowlabels.linger_s`",
    );
    bad(
        FlowLabelConfig {
            linger_ms: 150_001,
            ..cfg(1)
        },
        "`flowlabels.linger_s`",
    );
    bad(
        FlowLabelConfig {
            max_linger_ms: 1000,
            ..cfg(1)
        },
        "`flowlabels.max_linger_s`",
    );
    let r = |label, share, users| Reservation {
        label,
        share,
        users,
    };
    bad(
        FlowLabelConfig {
            reservations: vec![r(0, Share::Shared, 1)],
            ..cfg(1)
        },
        "`flowlabels.reserved[0].label`",
    );
    bad(
        FlowLabelConfig {
            reservations: vec![r(0x100000, Share::Shared, 1)],
            ..cfg(1)
        },
        "`flowlabels.reserved[0].label`",
    );
    bad(
        FlowLabelConfig {
            reservations: vec![r(5, Share::Shared, 1), r(5, Share::Exclusive, 1)],
            ..cfg(1)
        },
        "`flowlabels.reserved[1].label`",
    );
    bad(
        FlowLabelConfig {
            reservations: vec![r(5, Share::Exclusive, 2)],
            ..cfg(1)
        },
        "`flowlabels.reserved[0]`",
    );
    // Boundaries are accepted.
    FlowLabelConfig {
        linger_ms: MIN_LINGER_MS,
        max_linger_ms: MIN_LINGER_MS,
        capacity: MAX_CAPACITY,
        reservations: vec![
            r(1, Share::Shared, 3),
            r(1, Share::Shared, 1),
            r(0xfffff, Share::Exclusive, 1),
        ],
    }
    .validate()
    .unwrap();
}

#[test]
fn lcores_racing_on_the_same_new_flows_agree_and_labels_stay_unique() {
    let t = table(40_000);
    let n = 30_000u32;
    let results: Vec<Vec<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u16)
            .map(|lcore| {
                let t = &t;
                s.spawn(move || {
                    // Each thread walks the flows in a different order.
                    (0..n)
                        .map(|i| {
                            let f = if lcore % 2 == 0 { i } else { n - 1 - i };
                            (f, t.label(&flow(f), 5, lcore).0)
                        })
                        .fold(vec![0; n as usize], |mut v, (f, l)| {
                            v[f as usize] = l;
                            v
                        })
                })
            })
            .collect();
        // The collector runs concurrently (nothing is expired at its clock).
        for _ in 0..20 {
            t.gc(5);
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results[1..] {
        assert_eq!(r, &results[0], "every lcore sees the same label per flow");
    }
    let distinct: HashSet<u32> = results[0].iter().copied().collect();
    assert_eq!(distinct.len(), n as usize);
    assert_eq!(t.live(), n as usize);
}

#[test]
fn churn_with_concurrent_gc_keeps_live_labels_unique() {
    // Workers create and refresh flows while the collector expires idle ones: at every
    // listing, live labels are distinct.
    let t = FlowLabelTable::with_seeds(&cfg(4096), [4, 5, 6]).unwrap();
    let clock = AtomicU64::new(0);
    std::thread::scope(|s| {
        for lcore in 0..2u16 {
            let (t, clock) = (&t, &clock);
            s.spawn(move || {
                for round in 0..40u32 {
                    let now = clock.load(Ordering::Relaxed);
                    for i in 0..2000 {
                        t.label(&flow(round * 1000 + i), now, lcore);
                    }
                }
            });
        }
        for step in 0..40 {
            clock.store(step * 2000, Ordering::Relaxed);
            t.gc(step * 2000);
            // A listing taken while an entry moves between its buckets may show it twice;
            // one label for two different flows would be a real duplicate.
            let e = t.entries(step * 2000, usize::MAX);
            let mut owner: HashMap<u32, FlowKey> = HashMap::new();
            for e in &e {
                let f = e.flow.unwrap();
                let prev = *owner.entry(e.label).or_insert(f);
                assert_eq!(
                    prev, f,
                    "label {:#x} live for two flows at step {step}",
                    e.label
                );
            }
        }
    });
}

#[test]
fn flow_key_of_real_frames() {
    use etherparse::PacketBuilder;
    let src = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let dst = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let parse = |f: &[u8]| wire::parse(f, f.len() as u32, false).unwrap();
    let mut f = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv6(src, dst, 64)
        .udp(5353, 53)
        .write(&mut f, &[0; 8])
        .unwrap();
    let p = parse(&f);
    assert_eq!(
        FlowKey::of(&f, &p),
        Some(FlowKey::new(src, dst, 17, 5353, 53))
    );
    let k = FlowKey::of(&f, &p).unwrap();
    assert_eq!(k.src().to_string(), "2001:db8::1");
    assert_eq!(k.dst().to_string(), "2001:db8::2");
    assert_eq!((k.proto(), k.ports()), (17, (5353, 53)));
    // ICMPv6: the 3-tuple.
    let mut f = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv6(src, dst, 64)
        .icmpv6_echo_request(7, 9)
        .write(&mut f, &[0; 8])
        .unwrap();
    let p = parse(&f);
    assert_eq!(FlowKey::of(&f, &p), Some(FlowKey::new(src, dst, 58, 0, 0)));
    // IPv4: none.
    let mut f = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([1, 2, 3, 4], [5, 6, 7, 8], 64)
        .udp(1, 2)
        .write(&mut f, &[0; 8])
        .unwrap();
    assert_eq!(FlowKey::of(&f, &parse(&f)), None);
}

#[test]
fn fragments_share_their_flows_three_tuple() {
    // A first fragment (ports present) and a later fragment of the same datagram: one key.
    let ipv6_frag = |offset: u16, more: bool| {
        let mut f = vec![0u8; 14 + 40 + 8 + 8];
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        f[14] = 0x60;
        f[18..20].copy_from_slice(&16u16.to_be_bytes());
        f[20] = 44; // fragment header
        f[21] = 64;
        f[22..38].copy_from_slice(&[0xaa; 16]);
        f[38..54].copy_from_slice(&[0xbb; 16]);
        f[54] = 17; // UDP inside
        let fo = offset << 3 | u16::from(more);
        f[56..58].copy_from_slice(&fo.to_be_bytes());
        f[62..64].copy_from_slice(&1000u16.to_be_bytes());
        f[64..66].copy_from_slice(&2000u16.to_be_bytes());
        f[66..68].copy_from_slice(&200u16.to_be_bytes()); // UDP length covering the datagram
        f
    };
    let key = |f: &[u8]| {
        let p = wire::parse(f, f.len() as u32, false).unwrap();
        FlowKey::of(f, &p).unwrap()
    };
    let first = key(&ipv6_frag(0, true));
    let later = key(&ipv6_frag(100, false));
    assert_eq!(first, later);
    assert_eq!((first.proto(), first.ports()), (17, (0, 0)));
}

#[test]
fn label_bits_are_written_without_touching_version_and_class() {
    let mut ip = [0x6a, 0xbc, 0xde, 0xf0, 0x12];
    assert_eq!(read_label(&ip), Some(0xcdef0));
    write_label(&mut ip, 0x12345);
    assert_eq!(ip, [0x6a, 0xb1, 0x23, 0x45, 0x12]);
    assert_eq!(read_label(&ip), Some(0x12345));
    write_label(&mut ip, 0xfff_ffff);
    assert_eq!(ip[..4], [0x6a, 0xbf, 0xff, 0xff]);
    assert_eq!(read_label(&ip[..3]), None);
    write_label(&mut ip[..3], 1); // too short: untouched, no panic
}

#[test]
fn listing_renders_like_proc_net_ip6_flowlabel() {
    let c = FlowLabelConfig {
        reservations: vec![Reservation {
            label: 0xabcde,
            share: Share::Exclusive,
            users: 1,
        }],
        ..cfg(16)
    };
    let t = FlowLabelTable::with_seeds(&c, [1, 2, 3]).unwrap();
    let (l, _, _) = t.label(&flow(3), 1_000, 2);
    let text = render_table(&t.entries(3_000, 10));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("Label S"), "{text}");
    assert!(
        lines[1].starts_with("ABCDE exclusive     -     1      0       -"),
        "{text}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{l:05X} dynamic       2     1      6       4  fdfd:"
        )),
        "{text}"
    );
    assert!(lines[2].contains("2001::3"), "{text}");
    assert!(lines[2].ends_with("    6     3   443"), "{text}");
}

#[test]
fn memory_per_flow_is_one_cache_line_and_a_seventh() {
    assert_eq!(std::mem::size_of::<Bucket>(), 64 * (SLOTS + 1));
    assert_eq!(FlowLabelTable::bytes_per_slot(), 73);
    let t = table(1_000_000);
    assert!(t.slots() >= 1_000_000);
}

#[test]
fn the_configured_capacity_holds_that_many_flows() {
    for capacity in [7, 100, 4096, 200_000] {
        let t = FlowLabelTable::with_seeds(&cfg(capacity), [capacity as u32, 1, 2]).unwrap();
        for i in 0..capacity as u32 {
            let (_, how, _) = t.label(&flow(i), 0, 0);
            assert_eq!(how, LabelOutcome::New, "capacity {capacity}: flow {i}");
        }
        assert_eq!(t.live(), capacity);
        // Every flow still finds its entry after the moves.
        for i in 0..capacity as u32 {
            assert_eq!(t.label(&flow(i), 1, 0).1, LabelOutcome::Hit, "flow {i}");
        }
    }
}

proptest::proptest! {
    /// Arbitrary bytes (mostly garbage, some shaped like IPv6 frames) never panic the key
    /// extraction or the table, and a labelled IPv6 frame gets a non-zero label.
    #[test]
    fn arbitrary_frames_never_panic(
        mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160),
        v6 in proptest::prelude::any::<bool>(),
    ) {
        if v6 && bytes.len() >= 15 {
            bytes[12] = 0x86;
            bytes[13] = 0xdd;
            bytes[14] = 0x60 | (bytes[14] & 0x0f);
        }
        let t = table(64);
        if let Ok(p) = wire::parse(&bytes, bytes.len() as u32, false) {
            if let Some(k) = FlowKey::of(&bytes, &p) {
                let (l, _, _) = t.label(&k, 0, 0);
                proptest::prop_assert!(l != 0 && l <= LABEL_MASK);
            }
        }
        let mut b = bytes.clone();
        write_label(&mut b, 0x12345);
        let _ = read_label(&b);
    }
}
