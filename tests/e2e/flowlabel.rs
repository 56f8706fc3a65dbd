//! IPv6 flow labels end to end (RFC 6437 properties checked on the output captures, with the
//! flows identified by etherparse, not by the appliance's code), the live table on the admin
//! address, `appliance flowlabels`, and the flow-label metrics.
use crate::util::*;
use std::collections::{BTreeMap, HashMap, HashSet};

/// An IPv6 flow: source, destination, upper-layer protocol, ports (0 without ports).
type Flow = (Vec<u8>, Vec<u8>, u8, u16, u16);

/// The flow and label of an IPv6 frame; `None` for others.
fn flow_of(frame: &[u8]) -> Option<(Flow, u32)> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        return None;
    };
    let h = ip.header();
    let (sp, dp) = match &p.transport {
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        _ => (0, 0),
    };
    let proto = ip.payload().ip_number.0;
    Some((
        (h.source().to_vec(), h.destination().to_vec(), proto, sp, dp),
        h.flow_label().value(),
    ))
}

/// The IPv6 header offset of a frame (after any VLAN tags).
fn ipv6_offset(frame: &[u8]) -> usize {
    let mut off = 12;
    while frame[off..off + 2] == [0x81, 0x00] || frame[off..off + 2] == [0x88, 0xa8] {
        off += 4;
    }
    off + 2
}

fn set_label(frame: &mut [u8], label: u32) {
    let o = ipv6_offset(frame);
    let w = u32::from_be_bytes(frame[o..o + 4].try_into().unwrap()) & !0xfffff | label;
    frame[o..o + 4].copy_from_slice(&w.to_be_bytes());
}

/// Chi-square over the 20 label bits of `labels` (20 degrees of freedom).
fn bit_chi_square(labels: &[u32]) -> f64 {
    let n = labels.len() as f64;
    (0..20)
        .map(|b| {
            let ones = labels.iter().filter(|l| (*l >> b) & 1 == 1).count() as f64;
            (ones - n / 2.0).powi(2) / (n / 2.0) * 2.0
        })
        .sum()
}

#[test]
fn labelled_ports_give_every_flow_one_unique_label_and_leave_the_rest_byte_exact() {
    let t = TestDir::new("flowlabel");
    let v6 = t.gen(
        "v6.pcap",
        &[
            "--count=4000",
            "--flows=400",
            "--ip=6",
            "--proto=udp,tcp,icmp",
            "--size=64,300",
            "--seed=91",
        ],
    );
    let tagged = t.gen(
        "tagged.pcap",
        &[
            "--count=600",
            "--flows=60",
            "--ip=mix",
            "--vlan=42",
            "--seed=92",
            "--src-ipv6=fd42::",
        ],
    );
    // Mixed input: IPv6 flows, VLAN-tagged IPv4 and IPv6, and a few IPv6 flows that arrive
    // with a label already set (flows 0..10 of the first capture, every packet).
    let mut input: Vec<Vec<u8>> = Vec::new();
    let mut preset: HashMap<usize, u32> = HashMap::new();
    for (i, f) in v6.frames.iter().enumerate() {
        let mut f = f.clone();
        if i % 400 < 10 {
            let l = 0xa0000 + (i % 400) as u32;
            set_label(&mut f, l);
            preset.insert(input.len(), l);
        }
        input.push(f);
        if let Some(g) = tagged.frames.get(i / 6).filter(|_| i % 6 == 5) {
            input.push(g.clone());
        }
    }
    write_pcap(&t.path("in.pcap"), &input);
    write_pcap(&t.path("empty.pcap"), &[]);
    let port = |name: &str, n: usize, rx: &str, extra: &str| {
        format!(
            "  - name: {name}\n    device: net_pcap{n}\n    rx_desc: 512\n    tx_desc: 512\n    args: rx_pcap={},tx_pcap={}\n{extra}",
            t.p(rx),
            t.p(&format!("out-{name}.pcap"))
        )
    };
    let ports = [
        port("a", 0, "in.pcap", ""),
        port("fill", 1, "empty.pcap", "    flowlabel: fill\n"),
        port("c", 2, "in.pcap", ""),
        port("over", 3, "empty.pcap", "    flowlabel: override\n"),
        port("e", 4, "in.pcap", ""),
        port("plain", 5, "empty.pcap", ""),
    ]
    .concat();
    let cfg = t.config_ports_yaml(
        &ports,
        "forwarding:\n  - { from: a, to: fill }\n  - { from: c, to: over }\n  - { from: e, to: plain }\nflowlabels:\n  capacity: 100000\n  linger_s: 30\n",
    );
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    r.assert_conservation();

    // The unlabelled port: byte for byte.
    assert_frames_eq(&read_pcap(&t.path("out-plain.pcap")), &input, "plain port");

    let mut labels_by_mode = BTreeMap::new();
    for (port, fill) in [("fill", true), ("over", false)] {
        let out = read_pcap(&t.path(&format!("out-{port}.pcap")));
        assert_eq!(out.len(), input.len(), "{port}: every frame forwarded");
        let mut label_of_flow: HashMap<_, u32> = HashMap::new();
        let mut flow_of_label: HashMap<u32, _> = HashMap::new();
        for (i, (got, sent)) in out.iter().zip(&input).enumerate() {
            let Some((flow, label)) = flow_of(got) else {
                assert_eq!(got, sent, "{port} frame {i}: non-IPv6 frames untouched");
                continue;
            };
            // Only the label bits may differ.
            let mut expect = sent.clone();
            set_label(&mut expect, label);
            assert_eq!(
                got, &expect,
                "{port} frame {i}: only the flow label changes"
            );
            if fill {
                if let Some(&l) = preset.get(&i) {
                    assert_eq!(
                        label, l,
                        "fill keeps an incoming non-zero label (frame {i})"
                    );
                    continue;
                }
            }
            assert_ne!(label, 0, "{port} frame {i}: non-zero");
            match label_of_flow.insert(flow.clone(), label) {
                Some(prev) => assert_eq!(prev, label, "{port} frame {i}: one label per flow"),
                None => {
                    if let Some(other) = flow_of_label.insert(label, flow.clone()) {
                        panic!("{port}: label {label:#x} given to {other:?} and {flow:?}");
                    }
                }
            }
        }
        // 400 + 30 IPv6 flows (tagged capture: odd flows of 60); with fill, 10 kept theirs.
        let want = if fill { 420 } else { 430 };
        assert_eq!(label_of_flow.len(), want, "{port}: flows labelled");
        let labels: Vec<u32> = label_of_flow.values().copied().collect();
        let chi = bit_chi_square(&labels);
        assert!(
            chi < 45.31,
            "{port}: label bits uniform, chi2 {chi} (p=0.001 at 45.31)"
        );
        labels_by_mode.insert(port, label_of_flow);
    }
    // Both ports share one table: a flow has the same label out of both.
    let (f, o) = (&labels_by_mode["fill"], &labels_by_mode["over"]);
    for (flow, l) in f {
        assert_eq!(
            o.get(flow),
            Some(l),
            "one appliance-wide label for {flow:?}"
        );
    }
    let s = &r.summary["flowlabels"];
    let v6_frames = input.iter().filter(|f| flow_of(f).is_some()).count() as u64;
    assert_eq!(s["kept"], preset.len() as u64);
    assert_eq!(s["labelled"], 2 * v6_frames - preset.len() as u64);
    assert_eq!(s["allocations"], 430);
    assert_eq!(s["hits"], 2 * v6_frames - preset.len() as u64 - 430);
    assert_eq!(s["fallback_table_full"], 0);
    assert_eq!(s["live"], 430);
    tcpdump_reads(&t.path("out-over.pcap"), input.len());
}

#[test]
fn a_full_table_falls_back_to_stable_stateless_labels_and_pinned_labels_win() {
    let t = TestDir::new("flowlabel-full");
    let v6 = t.gen(
        "v6.pcap",
        &[
            "--count=3000",
            "--flows=300",
            "--ip=6",
            "--proto=udp",
            "--seed=93",
        ],
    );
    write_pcap(&t.path("empty.pcap"), &[]);
    // Capacity 8 (two buckets of 7 after rounding): most flows get stateless labels. UDP to
    // port 5001 is pinned to a reserved label by a cBPF filter.
    let ports = format!(
        "  - name: a\n    device: net_pcap0\n    args: rx_pcap={},tx_pcap={}\n    ingress:\n      - {{ name: dns, bpf: {{ filter: \"ip6 and udp dst port 5001\" }}, actions: [{{ flowlabel: 0x5353 }}] }}\n  - name: b\n    device: net_pcap1\n    args: rx_pcap={},tx_pcap={}\n    flowlabel: override\n",
        t.p("v6.pcap"),
        t.p("out-a.pcap"),
        t.p("empty.pcap"),
        t.p("out-b.pcap")
    );
    let cfg = t.config_ports_yaml(
        &ports,
        "forwarding:\n  - { from: a, to: b }\nflowlabels:\n  capacity: 8\n  reserved: [{ label: 0x5353 }]\n",
    );
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    r.assert_conservation();
    let out = read_pcap(&t.path("out-b.pcap"));
    assert_eq!(out.len(), v6.frames.len());
    let mut label_of_flow: HashMap<_, u32> = HashMap::new();
    let mut pinned = 0u64;
    for (i, f) in out.iter().enumerate() {
        let (flow, label) = flow_of(f).unwrap();
        assert_ne!(label, 0);
        if flow.2 == 17 && flow.4 == 5001 {
            assert_eq!(label, 0x5353, "frame {i}: pinned");
            pinned += 1;
            continue;
        }
        assert_ne!(
            label, 0x5353,
            "frame {i}: a reserved label is never a flow's"
        );
        let prev = label_of_flow.insert(flow, label);
        assert!(prev.is_none_or(|p| p == label), "frame {i}: stable label");
    }
    assert!(pinned > 0, "some flows go to port 5001");
    let s = &r.summary["flowlabels"];
    assert_eq!(s["pinned"], pinned);
    assert_eq!(s["live"], s["allocations"]);
    assert!(s["live"].as_u64().unwrap() <= 14);
    let fallbacks = s["fallback_table_full"].as_u64().unwrap();
    let flows = label_of_flow.len() as u64;
    assert_eq!(
        fallbacks,
        (v6.frames.len() as u64 - pinned) / flows * (flows - s["live"].as_u64().unwrap()),
        "every packet of a flow without an entry is a counted fallback"
    );
    let distinct: HashSet<u32> = label_of_flow.values().copied().collect();
    assert!(
        distinct.len() as u64 > flows * 9 / 10,
        "stateless labels still spread"
    );
}

#[test]
fn the_live_table_is_listed_on_the_admin_address_and_in_metrics() {
    let t = TestDir::new("flowlabel-live");
    t.gen(
        "in.pcap",
        &["--count=200", "--flows=50", "--ip=6", "--seed=94"],
    );
    let cfg = t.config_replay_to_null("in.pcap", Some("127.0.0.1:0"));
    let y = std::fs::read_to_string(&cfg).unwrap();
    let y = y.replace(
        "device: net_null0\n",
        "device: net_null0\n    flowlabel: fill\n",
    ) + "flowlabels:\n  linger_s: 20\n  reserved: [{ label: 0x77, share: shared }]\n";
    std::fs::write(&cfg, y).unwrap();
    let mut child = t.spawn(&cfg, &["--duration=5"]);
    let addr = child.wait_for_metrics_addr();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let text = http_get(&addr, "/flowlabels");
    let json = http_get(&addr, "/flowlabels?format=json&limit=10");
    let cli = appliance(&["flowlabels", "--admin", &addr, "--limit", "5"]);
    let bad = appliance(&["flowlabels", "--admin", &addr, "--limit", "1"]);
    let body = http_get(&addr, "/metrics");
    let r = child.finish();
    r.assert_clean();

    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("Label S"), "{text}");
    assert!(lines[1].starts_with("00077 shared"), "{text}");
    // 50 flows, half IPv6 with --ip=6? all IPv6: 50 dynamic rows plus the reservation.
    assert_eq!(lines.len(), 1 + 1 + 50, "{text}");
    assert!(
        lines[2..]
            .iter()
            .all(|l| l.contains(" dynamic ") && l.contains("fd01::")),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["live"], 50);
    assert_eq!(v["entries"].as_array().unwrap().len(), 1 + 10);
    let e = &v["entries"][1];
    assert_eq!(e["share"], "dynamic");
    assert_eq!(e["linger_ms"], 20_000);
    assert!(e["expires_ms"].as_u64().unwrap() <= 20_000);
    assert!(e["flow"]["src"].as_str().unwrap().starts_with("fd00::"));
    let out = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(out.lines().count(), 1 + 1 + 5, "{out}");
    assert!(bad.status.success());

    let value = |series: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("series {series} missing from:\n{body}"))
    };
    assert_eq!(value("appliance_flowlabel_table_capacity"), 4096.0);
    assert_eq!(value("appliance_flowlabel_labels_in_use"), 50.0);
    assert_eq!(value("appliance_flowlabel_allocations_total"), 50.0);
    assert!(value("appliance_flowlabel_hits_total") > 1000.0);
    assert!(value("appliance_flowlabel_gc_runs_total") >= 1.0);
    assert_eq!(value("appliance_flowlabel_table_live"), 50.0);
    assert_eq!(
        value("appliance_flowlabel_fallbacks_total{reason=\"table_full\"}"),
        0.0
    );
    promtool_check_metrics(&body);
}

#[test]
fn bad_flow_label_configs_name_the_field() {
    let t = TestDir::new("flowlabel-bad");
    write_pcap(&t.path("empty.pcap"), &[]);
    let cases = [
        ("    flowlabel: sometimes\n", "", "ports[0].flowlabel", "fill"),
        (
            "    flowlabel: fill\n",
            "flowlabels: { linger_s: 2 }\n",
            "flowlabels.linger_s",
            "6..=150",
        ),
        (
            "    flowlabel: fill\n",
            "flowlabels: { capacity: 0 }\n",
            "flowlabels.capacity",
            "outside",
        ),
        (
            "    flowlabel: fill\n    ingress:\n      - { name: f, bpf: { filter: ip6 }, actions: [{ flowlabel: 0x99 }] }\n",
            "",
            "ports[0].ingress[0].actions[0].flowlabel",
            "not reserved",
        ),
        (
            "    ingress:\n      - { name: f, bpf: { filter: ip6 }, actions: [{ flowlabel: 0x99 }] }\n",
            "flowlabels: { reserved: [{ label: 0x99 }] }\n",
            "ports[0].ingress[0].actions[0].flowlabel",
            "no port labels",
        ),
        (
            "    flowlabel: fill\n    ingress:\n      - { name: f, bpf: { filter: ip6 }, actions: [{ flowlabel: 0x99 }] }\n      - { name: g, bpf: { filter: ip }, actions: [{ flowlabel: 0x99 }] }\n",
            "flowlabels: { reserved: [{ label: 0x99, share: exclusive }] }\n",
            "flowlabels.reserved[0]",
            "exclusive",
        ),
        (
            "    flowlabel: fill\n",
            "flowlabels: { reserved: [{ label: 0x100000 }] }\n",
            "flowlabels.reserved[0].label",
            "0xfffff",
        ),
    ];
    for (port_extra, rest, key, text) in cases {
        let ports = format!(
            "  - name: a\n    device: net_pcap0\n    args: rx_pcap={},tx_pcap={}\n{port_extra}",
            t.p("empty.pcap"),
            t.p("out.pcap")
        );
        let cfg = t.config_ports_yaml(&ports, rest);
        let (code, err) = t.run_expect_failure(&cfg);
        assert_eq!(code, Some(2), "{key}: {err}");
        assert!(
            err.contains(key) && err.contains(text) && !err.contains("EAL:"),
            "{key} / {text}: {err}"
        );
    }
}
