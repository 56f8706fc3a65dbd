//! Hitless reload: SIGHUP and POST /reload while generated traffic flows without pause
//! (net_pcap infinite_rx); valid configurations alternate with invalid ones; at the end every
//! received packet was sent or dropped with a counted reason, port by port, and the pools are
//! full. Rejected reloads answer the same errors as a start would and leave the running
//! generation in effect; SAs kept across a reload keep their sequence numbers.
use crate::util::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Ingress filters of port `in` in the first configuration: `udp` only counts.
const FILTERS_A: &str = "    ingress:\n      - { name: udp, bpf: { filter: \"udp\" } }\n";
/// The second configuration also drops TCP (a filter only it has).
const FILTERS_B: &str = "    ingress:\n      - { name: udp, bpf: { filter: \"udp\" } }\n      - { name: tcp_drop, bpf: { filter: \"tcp\" }, actions: [drop] }\n";

/// `in` replays a capture forever to `out` (a net_pcap port that receives nothing and writes
/// to /dev/null), admin on an ephemeral loopback port, with `filters` on `in`. Returns the
/// configuration text.
fn replay_config(t: &TestDir, filters: &str) -> String {
    write_pcap(&t.path("empty.pcap"), &[]);
    let cfg = t.config(
        &[
            (
                "in",
                "net_pcap0",
                &format!("rx_pcap={},infinite_rx=1", t.p("in.pcap")),
            ),
            (
                "out",
                "net_pcap1",
                &format!("rx_pcap={},tx_pcap=/dev/null", t.p("empty.pcap")),
            ),
        ],
        "forwarding:\n  - { from: in, to: out }\n",
        Some("127.0.0.1:0"),
    );
    std::fs::read_to_string(cfg)
        .unwrap()
        .replace("infinite_rx=1\n", &format!("infinite_rx=1\n{filters}"))
}

fn metrics(addr: &str) -> String {
    http_get(addr, "/metrics")
}

/// Waits until the reload counter of `result` reaches `n` (a SIGHUP is handled by the control
/// loop asynchronously).
fn wait_reloads(addr: &str, result: &str, n: f64) {
    let series = format!("appliance_config_reloads_total{{result=\"{result}\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while sample(&metrics(addr), &series) < n {
        assert!(
            Instant::now() < deadline,
            "reload {result} #{n} never counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Drops by the `tcp_drop` filter so far.
fn action_drops(addr: &str) -> f64 {
    let m = metrics(addr);
    let series = "appliance_port_drops_total{port=\"in\",reason=\"action_drop\"}";
    if m.lines().any(|l| l.starts_with(series)) {
        sample(&m, series)
    } else {
        0.0
    }
}

/// Which generation is in effect, told by the traffic itself: TCP drops grow under the second
/// configuration only.
fn assert_tcp_dropped(addr: &str, dropped: bool, step: usize) {
    std::thread::sleep(Duration::from_millis(100)); // past the workers' next burst
    let before = action_drops(addr);
    std::thread::sleep(Duration::from_millis(150));
    let after = action_drops(addr);
    assert_eq!(
        after > before,
        dropped,
        "step {step}: TCP drops went {before} -> {after}"
    );
}

fn check_config_error(path: &Path) -> String {
    let o = appliance(&["check-config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    String::from_utf8_lossy(&o.stderr).trim_end().to_owned()
}

#[test]
fn reloads_under_continuous_traffic_lose_and_duplicate_nothing() {
    let t = TestDir::new("reload");
    t.gen(
        "in.pcap",
        &[
            "--count=2000",
            "--flows=16",
            "--proto=udp,tcp,icmp",
            "--size=imix",
            "--seed=91",
            "--malformed-permille=20",
        ],
    );
    let a = replay_config(&t, FILTERS_A);
    let b = replay_config(&t, FILTERS_B);
    let cfg = t.path("appliance.yaml");
    std::fs::write(&cfg, &a).unwrap();
    // Invalid in three ways: a type error, a reference error, a restart-only change.
    let bad_type = a.replacen("rx_desc: 512", "rx_desc: 70000", 1);
    let bad_ref = a.replace("{ from: in, to: out }", "{ from: in, to: nowhere }");
    let restart_only = a.replace("device: net_pcap1", "device: net_pcap2");
    let mut child = t.spawn(&cfg, &["--duration=120"]);
    let addr = child.wait_for_metrics_addr();
    assert_eq!(sample(&metrics(&addr), "appliance_config_generation"), 1.0);
    assert_tcp_dropped(&addr, false, 0);

    // Cycles of six: A by POST, B by SIGHUP, an invalid one by POST (B keeps running), A by
    // SIGHUP, B by POST, an invalid one by SIGHUP (B keeps running).
    let (mut ok, mut rejected) = (0.0, 0.0);
    let mut udp_matched = 0.0;
    let mut logged_errors = Vec::new();
    for step in 0..24 {
        let sighup = step % 2 == 1;
        let (text, valid, has_b) = match step % 6 {
            0 | 3 => (&a, true, false),
            1 | 4 => (&b, true, true),
            2 => (&bad_type, false, true),
            _ if step % 12 == 5 => (&bad_ref, false, true),
            _ => (&restart_only, false, true),
        };
        std::fs::write(&cfg, text).unwrap();
        if sighup {
            child.signal("HUP");
        } else {
            let (status, body) = http_post(&addr, "/reload");
            assert_eq!(status, if valid { 200 } else { 400 }, "step {step}: {body}");
            if valid {
                assert!(body.contains("in effect"), "{body}");
            } else {
                // Exactly what a start with this file says.
                assert_eq!(body.trim_end(), check_config_error(&cfg), "step {step}");
                assert!(
                    body.contains("`ports[0].rx_desc`") && body.contains("u16"),
                    "{body}"
                );
            }
        }
        if sighup && !valid {
            logged_errors.push(if text == &restart_only {
                format!(
                    "{}: config error: `ports[1].device`: port \"out\"'s device cannot change while the appliance runs: restart required",
                    cfg.display()
                )
            } else {
                check_config_error(&cfg)
            });
        }
        let m = if valid {
            ok += 1.0;
            wait_reloads(&addr, "ok", ok);
            metrics(&addr)
        } else {
            rejected += 1.0;
            wait_reloads(&addr, "rejected", rejected);
            metrics(&addr)
        };
        assert_eq!(sample(&m, "appliance_config_generation"), ok + 1.0);
        assert_eq!(
            sample(&m, "appliance_config_last_reload_successful"),
            if valid { 1.0 } else { 0.0 }
        );
        // `udp` keeps its identity in both configurations: its counters carry over.
        let u = sample(
            &m,
            "appliance_filter_matched_packets_total{port=\"in\",hook=\"ingress\",filter=\"udp\"}",
        );
        assert!(
            u >= udp_matched,
            "step {step}: udp matches went back {udp_matched} -> {u}"
        );
        udp_matched = u;
        // The series of a removed filter disappear.
        assert_eq!(m.contains("filter=\"tcp_drop\""), has_b, "step {step}");
        // The generation in effect is the last valid one.
        assert_tcp_dropped(&addr, has_b, step);
    }
    // End on the second configuration, so its filter is in the summary.
    std::fs::write(&cfg, &b).unwrap();
    assert_eq!(http_post(&addr, "/reload").0, 200);
    assert_tcp_dropped(&addr, true, 24);
    child.signal("INT");
    let r = child.finish();
    r.assert_clean();
    r.assert_conservation();
    // Port by port: what `in` received left on `out` or was dropped with a reason.
    let (i, o) = (r.port("in"), r.port("out"));
    let rx = i["rx_packets"].as_u64().unwrap();
    let sent = o["tx_packets"].as_u64().unwrap();
    let drops_in: u64 = drops_of(i).values().sum();
    let drops_out: u64 = drops_of(o).values().sum();
    assert_eq!(rx, sent + drops_in + drops_out, "{}", r.summary);
    assert_eq!(o["rx_packets"], 0);
    assert_eq!(i["tx_packets"], 0);
    assert!(rx > 10_000, "traffic flowed throughout: {rx}");
    assert!(drops_of(i)["action_drop"] > 0);
    let filters: Vec<_> = r.summary["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["matched_packets"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(filters.len(), 2, "{filters:?}");
    assert!(filters.iter().all(|(_, n)| *n > 0), "{filters:?}");
    assert!(filters[0].1 as f64 >= udp_matched);
    // 17 reloads took effect (16 in the loop and the last), 8 were rejected; each is logged,
    // SIGHUP's errors as a start would print them.
    assert_eq!(
        r.stderr.matches("reload (SIGHUP): ").count(),
        8,
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("reload (SIGHUP) rejected").count(),
        4,
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("reload (POST /reload): ").count(),
        9,
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("reload (POST /reload) rejected").count(),
        4,
        "{}",
        r.stderr
    );
    for e in &logged_errors {
        assert!(r.stderr.contains(e.as_str()), "{e}\nnot in\n{}", r.stderr);
    }
}

#[test]
fn post_reload_can_be_disabled_and_sighup_still_reloads() {
    let t = TestDir::new("reload-off");
    t.gen("in.pcap", &["--count=200", "--seed=92"]);
    let a = replay_config(&t, FILTERS_A).replace(
        "  listen: \"127.0.0.1:0\"\n",
        "  listen: \"127.0.0.1:0\"\n  reload: false\n",
    );
    let cfg = t.path("appliance.yaml");
    std::fs::write(&cfg, &a).unwrap();
    let mut child = t.spawn(&cfg, &["--duration=60"]);
    let addr = child.wait_for_metrics_addr();
    std::fs::write(&cfg, a.replace(FILTERS_A, FILTERS_B)).unwrap();
    let (status, body) = http_post(&addr, "/reload");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("metrics.reload: false"), "{body}");
    assert_eq!(sample(&metrics(&addr), "appliance_config_generation"), 1.0);
    child.signal("HUP");
    wait_reloads(&addr, "ok", 1.0);
    assert_eq!(sample(&metrics(&addr), "appliance_config_generation"), 2.0);
    assert_tcp_dropped(&addr, true, 1);
    child.signal("INT");
    let r = child.finish();
    r.assert_clean();
    r.assert_conservation();
}

const LOCAL: &str = "192.0.2.1";
const REMOTE: &str = "192.0.2.2";

#[test]
fn sas_kept_across_reloads_keep_their_sequence_numbers_and_changed_sas_are_refused() {
    let t = TestDir::new("reload-sa");
    t.gen(
        "inner.pcap",
        &[
            "--count=64",
            "--flows=8",
            "--ip=4",
            "--size=100",
            "--seed=93",
        ],
    );
    write_pcap(&t.path("empty.pcap"), &[]);
    let ports = format!(
        "  - {{ name: lan, device: net_pcap0, args: \"rx_pcap={},infinite_rx=1,tx_pcap=/dev/null\" }}\n  - {{ name: wan, device: net_pcap1, args: \"rx_pcap={},tx_pcap=/dev/null\" }}\n  - name: vti0\n    tunnel: {{ local: {LOCAL}, remote: {REMOTE}, ikey: 7, okey: 9, underlay: wan, next_hop_mac: \"02:00:00:00:00:02\" }}\n",
        t.p("inner.pcap"),
        t.p("empty.pcap"),
    );
    let key = "000102030405060708090a0b0c0d0e0f10111213";
    let rest = format!(
        "crypto: {{ device: crypto_aesni_mb0 }}\nsas:\n  - {{ name: out, spi: 0x1000, direction: out, src: {LOCAL}, dst: {REMOTE}, mark: 9, algorithm: aes-gcm-128, key: \"{key}\" }}\n  - {{ name: in, spi: 0x2000, direction: in, src: {REMOTE}, dst: {LOCAL}, mark: 7, algorithm: aes-gcm-128, key: \"{key}\" }}\nforwarding:\n  - {{ from: lan, to: vti0 }}\n  - {{ from: vti0, to: lan }}\n"
    );
    let cfg = t.config_ports_yaml(&ports, &rest);
    let a = std::fs::read_to_string(&cfg).unwrap().replace(
        "metrics:\n  listen: null\n",
        "metrics:\n  listen: 127.0.0.1:0\n",
    );
    std::fs::write(&cfg, &a).unwrap();
    let out_sa = |addr: &str| -> (u64, u64) {
        let v: serde_json::Value = serde_json::from_str(&http_get(addr, "/show/sas")).unwrap();
        let sa = v["sas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "out")
            .unwrap()
            .clone();
        (sa["seq"].as_u64().unwrap(), sa["packets"].as_u64().unwrap())
    };
    let mut child = t.spawn(&cfg, &["--duration=60"]);
    let addr = child.wait_for_metrics_addr();
    std::thread::sleep(Duration::from_millis(500));
    let (seq1, packets1) = out_sa(&addr);
    assert!(packets1 > 1000 && seq1 >= packets1, "{seq1} {packets1}");

    // A filter on lan changes; the SAs stay as they are: they carry over.
    let b = a.replace(
        "tx_pcap=/dev/null\" }\n  - { name: wan",
        "tx_pcap=/dev/null\", ingress: [ { name: udp, bpf: { filter: udp } } ] }\n  - { name: wan",
    );
    assert_ne!(a, b);
    for (i, text) in [&b, &a, &b].into_iter().enumerate() {
        std::fs::write(&cfg, text).unwrap();
        let (status, body) = http_post(&addr, "/reload");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("generation {}", i + 2)), "{body}");
    }
    // Another key for the outbound SA: refused.
    std::fs::write(&cfg, b.replacen(key, &key.replace("00", "ff"), 1)).unwrap();
    let (status, body) = http_post(&addr, "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("`sas`: tunnels/sas changed: restart required"),
        "{body}"
    );
    assert!(!body.contains("ff0102"), "no key in answers: {body}");
    std::thread::sleep(Duration::from_millis(300));
    let (seq2, packets2) = out_sa(&addr);
    // A fresh SA would have started again at 1: its numbers would trail the packets it
    // carried over the whole run.
    assert!(
        packets2 > packets1 && seq2 > seq1 && seq2 >= packets2,
        "{seq2} {packets2}"
    );
    child.signal("INT");
    let r = child.finish();
    r.assert_clean();
    let sa = r.sa("out").clone();
    let (seq, packets) = (sa["seq"].as_u64().unwrap(), sa["packets"].as_u64().unwrap());
    assert!(seq >= packets && seq - packets < 4096, "{}", r.summary);
    // lan's packets went into the tunnel or were dropped with a reason.
    let lan = r.port("lan");
    let vti = r.port("vti0");
    assert_eq!(
        lan["rx_packets"].as_u64().unwrap(),
        vti["tx_packets"].as_u64().unwrap()
            + drops_of(lan).values().sum::<u64>()
            + drops_of(vti).values().sum::<u64>(),
        "{}",
        r.summary
    );
    assert_eq!(
        packets,
        vti["tx_packets"].as_u64().unwrap(),
        "{}",
        r.summary
    );
}

/// Flow -> label of the live table's dynamic entries.
fn live_labels(addr: &str) -> std::collections::BTreeMap<String, u64> {
    let v: serde_json::Value =
        serde_json::from_str(&http_get(addr, "/flowlabels?format=json&limit=1000")).unwrap();
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["share"] == "dynamic")
        .map(|e| (e["flow"].to_string(), e["label"].as_u64().unwrap()))
        .collect()
}

#[test]
fn flow_labels_of_live_flows_survive_reloads() {
    let t = TestDir::new("reload-fl");
    t.gen(
        "in.pcap",
        &["--count=200", "--flows=50", "--ip=6", "--seed=95"],
    );
    let with_labels = |filters: &str| {
        replay_config(&t, filters).replace(
            "    device: net_pcap1\n",
            "    device: net_pcap1\n    flowlabel: fill\n",
        ) + "flowlabels:\n  linger_s: 20\n"
    };
    let (a, b) = (with_labels(FILTERS_A), with_labels(FILTERS_B));
    let cfg = t.path("appliance.yaml");
    std::fs::write(&cfg, &a).unwrap();
    let mut child = t.spawn(&cfg, &["--duration=60"]);
    let addr = child.wait_for_metrics_addr();
    std::thread::sleep(Duration::from_millis(500));
    let before = live_labels(&addr);
    assert_eq!(before.len(), 50);
    for (i, text) in [&b, &a].into_iter().enumerate() {
        std::fs::write(&cfg, text).unwrap();
        let (status, body) = http_post(&addr, "/reload");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("generation {}", i + 2)), "{body}");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(live_labels(&addr), before, "after reload {}", i + 1);
    }
    // Lingers change live (the listing shows the new one); the capacity needs a restart.
    std::fs::write(&cfg, a.replace("linger_s: 20", "linger_s: 30")).unwrap();
    let (status, body) = http_post(&addr, "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("flow-label linger 20 s -> 30 s"), "{body}");
    let v: serde_json::Value =
        serde_json::from_str(&http_get(&addr, "/flowlabels?format=json&limit=1")).unwrap();
    assert_eq!(v["entries"][0]["linger_ms"], 30_000);
    assert_eq!(live_labels(&addr), before);
    std::fs::write(
        &cfg,
        a.replace("linger_s: 20", "linger_s: 30\n  capacity: 8192"),
    )
    .unwrap();
    let (status, body) = http_post(&addr, "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("`flowlabels.capacity`: the flow-label table's capacity (4096 -> 8192)")
            && body.contains("restart required"),
        "{body}"
    );
    child.signal("INT");
    let r = child.finish();
    r.assert_clean();
    r.assert_conservation();
}

/// Source address -> label of the live table's dynamic entries (the generated flows differ in
/// their source).
fn live_labels_by_src(addr: &str) -> BTreeMap<String, u32> {
    let v: serde_json::Value =
        serde_json::from_str(&http_get(addr, "/flowlabels?format=json&limit=1000")).unwrap();
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["share"] == "dynamic")
        .map(|e| {
            (
                e["flow"]["src"].as_str().unwrap().to_owned(),
                e["label"].as_u64().unwrap() as u32,
            )
        })
        .collect()
}

/// The reservations and released labels `/flowlabels` lists: label -> share.
fn listed_reservations(addr: &str) -> BTreeMap<u32, String> {
    let v: serde_json::Value =
        serde_json::from_str(&http_get(addr, "/flowlabels?format=json&limit=0")).unwrap();
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["label"].as_u64().unwrap() as u32,
                e["share"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Source address and label of an IPv6 frame.
fn src_and_label(frame: &[u8]) -> (String, u32) {
    let ip = &frame[14..];
    assert_eq!(ip[0] >> 4, 6, "IPv6 only");
    let src: [u8; 16] = ip[8..24].try_into().unwrap();
    let label = u32::from_be_bytes(ip[..4].try_into().unwrap()) & 0xfffff;
    (std::net::Ipv6Addr::from(src).to_string(), label)
}

#[test]
fn flow_label_reservations_change_live_under_traffic() {
    let t = TestDir::new("reload-resv");
    t.gen(
        "in.pcap",
        &[
            "--count=500",
            "--flows=50",
            "--ip=6",
            "--proto=udp,tcp",
            "--seed=96",
        ],
    );
    write_pcap(&t.path("empty.pcap"), &[]);
    // `in` replays without pause to `out` (fill); flows 0 (fd00::) and 1 (fd00::1) are
    // redirected to `cap` (override), which writes what it sends. `pin0`'s actions pin flow
    // 0's label to a reservation in some configurations.
    let base = std::fs::read_to_string(t.config(
        &[
            (
                "in",
                "net_pcap0",
                &format!("rx_pcap={},infinite_rx=1", t.p("in.pcap")),
            ),
            (
                "out",
                "net_pcap1",
                &format!("rx_pcap={},tx_pcap=/dev/null", t.p("empty.pcap")),
            ),
            (
                "cap",
                "net_pcap2",
                &format!("rx_pcap={},tx_pcap={}", t.p("empty.pcap"), t.p("cap.pcap")),
            ),
        ],
        "forwarding:\n  - { from: in, to: out }\n",
        Some("127.0.0.1:0"),
    ))
    .unwrap()
    .replace(
        "infinite_rx=1\n",
        "infinite_rx=1\n    ingress:\n      - { name: pin0, bpf: { filter: \"ip6 src fd00::\" }, actions: [PIN{ redirect: cap }] }\n      - { name: watch1, bpf: { filter: \"ip6 src fd00::1\" }, actions: [{ redirect: cap }] }\n",
    )
    .replace(
        "tx_pcap=/dev/null\n",
        "tx_pcap=/dev/null\n    flowlabel: fill\n",
    )
    .replace("cap.pcap\n", "cap.pcap\n    flowlabel: override\n");
    // Configuration text: flow 0 pinned to `pin` (reserved as `reserved`, YAML entries), with
    // `flowlabels` settings `extra`.
    let config = |pin: Option<u32>, reserved: &str, extra: &str| {
        base.replace(
            "PIN",
            &pin.map_or_else(String::new, |l| format!("{{ flowlabel: {l:#x} }}, ")),
        ) + &format!("flowlabels:\n  linger_s: 60\n  reserved: [{reserved}]\n{extra}")
    };
    let cfg = t.path("appliance.yaml");
    std::fs::write(&cfg, config(None, "", "")).unwrap();
    let mut child = t.spawn(&cfg, &["--duration=90"]);
    let addr = child.wait_for_metrics_addr();
    std::thread::sleep(Duration::from_millis(500));
    let before = live_labels_by_src(&addr);
    assert_eq!(before.len(), 50, "{before:?}");
    let (d0, d1) = (before["fd00::"], before["fd00::1"]);
    // Two labels no live flow holds, and one that flow 2 holds.
    let free = |from: u32| (from..).find(|l| !before.values().any(|v| v == l)).unwrap();
    let (l1, l2) = (free(0x5353), free(0x7777));
    let held = before["fd00::2"];
    let reload = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        http_post(&addr, "/reload")
    };
    let generation = || sample(&metrics(&addr), "appliance_config_generation");

    // Reserve l1 and pin flow 0 to it.
    let (status, body) = reload(&config(Some(l1), &format!("{{ label: {l1:#x} }}"), ""));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("flow-label reservations: added {l1:#07x}")),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(live_labels_by_src(&addr), before, "after adding {l1:#x}");
    assert_eq!(
        listed_reservations(&addr),
        BTreeMap::from([(l1, "exclusive".into())])
    );

    // Unpin and remove it: it lingers (listed as released) before any flow may get it.
    let (status, body) = reload(&config(None, "", ""));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("removed {l1:#07x}")), "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while listed_reservations(&addr) != BTreeMap::from([(l1, "released".into())]) {
        assert!(Instant::now() < deadline, "{l1:#x} never released");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(live_labels_by_src(&addr), before, "after removing {l1:#x}");

    // Reserve l2 (shared), pin flow 0 to it, shorten the linger.
    let with_l2 = config(
        Some(l2),
        &format!("{{ label: {l2:#x}, share: shared }}"),
        "",
    )
    .replace("linger_s: 60", "linger_s: 30");
    let (status, body) = reload(&with_l2);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("flow-label reservations: added {l2:#07x}"))
            && body.contains("flow-label linger 60 s -> 30 s"),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(live_labels_by_src(&addr), before, "after adding {l2:#x}");
    let g = generation();
    assert_eq!(g, 4.0);

    // A label a live flow holds cannot be reserved: refused, naming it and its flow.
    let (status, body) = reload(&with_l2.replace(
        "share: shared }",
        &format!("share: shared }}, {{ label: {held:#x} }}"),
    ));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(&format!(
            "`flowlabels.reserved[1].label`: {held:#07x} is in use by a live flow (fd00::2 -> "
        )) && body.contains("reload again once the flow has expired, or reserve another label"),
        "{body}"
    );
    // The capacity needs a restart, and says so.
    let (status, body) = reload(&with_l2.replace("linger_s: 30", "linger_s: 30\n  capacity: 8192"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("`flowlabels.capacity`"), "{body}");
    assert_eq!(generation(), g, "refused reloads change nothing");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(live_labels_by_src(&addr), before);
    assert_eq!(
        listed_reservations(&addr),
        BTreeMap::from([(l1, "released".into()), (l2, "shared".into())])
    );
    child.signal("INT");
    let r = child.finish();
    r.assert_clean();
    r.assert_conservation();
    let (i, o, c) = (r.port("in"), r.port("out"), r.port("cap"));
    let tx = |p: &serde_json::Value| p["tx_packets"].as_u64().unwrap();
    let drops: u64 = [i, o, c]
        .iter()
        .map(|p| drops_of(p).values().sum::<u64>())
        .sum();
    assert_eq!(
        i["rx_packets"].as_u64().unwrap(),
        tx(o) + tx(c) + drops,
        "{}",
        r.summary
    );
    assert_eq!(drops, 0, "{}", r.summary);

    // On the wire: flow 0 carried its dynamic label, then l1 from the reload that pinned it,
    // its dynamic label again from the one that unpinned it, then l2 - each change once, at
    // a burst boundary; flow 1 kept its label throughout.
    let frames = read_pcap(&t.path("cap.pcap"));
    assert_eq!(frames.len() as u64, tx(c));
    let mut runs: Vec<(u32, u64)> = Vec::new();
    let mut pinned = 0;
    for f in &frames {
        let (src, label) = src_and_label(f);
        match src.as_str() {
            "fd00::" => {
                pinned += u64::from(label == l1 || label == l2);
                match runs.last_mut() {
                    Some((l, n)) if *l == label => *n += 1,
                    _ => runs.push((label, 1)),
                }
            }
            "fd00::1" => assert_eq!(label, d1, "flow 1 keeps its label"),
            other => panic!("flow {other} redirected"),
        }
    }
    let labels: Vec<u32> = runs.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        labels,
        [d0, l1, d0, l2],
        "flow 0's labels in order: {runs:x?}"
    );
    assert!(runs.iter().all(|(_, n)| *n > 10), "{runs:?}");
    assert_eq!(r.summary["flowlabels"]["pinned"], pinned);
}

#[test]
fn labelling_turns_on_and_off_live_and_the_table_stays() {
    let t = TestDir::new("reload-fl-on");
    t.gen(
        "in.pcap",
        &["--count=200", "--flows=20", "--ip=6", "--seed=97"],
    );
    let off = replay_config(&t, FILTERS_A);
    let on = off.replace(
        "    device: net_pcap1\n",
        "    device: net_pcap1\n    flowlabel: fill\n",
    ) + "flowlabels:\n  capacity: 1000\n  linger_s: 30\n";
    let cfg = t.path("appliance.yaml");
    std::fs::write(&cfg, &off).unwrap();
    let mut child = t.spawn(&cfg, &["--duration=60"]);
    let addr = child.wait_for_metrics_addr();
    let labelled = || {
        let m = metrics(&addr);
        m.contains("appliance_flowlabel_labelled_packets_total")
            .then(|| sample(&m, "appliance_flowlabel_labelled_packets_total"))
    };
    let get = |path: &str| http_request(&addr, "GET", path, "", 10).unwrap();
    assert_eq!(get("/flowlabels").0, 404);
    assert_eq!(labelled(), None, "no table, no flow-label series");

    // On: the table is made with the reloaded configuration.
    std::fs::write(&cfg, &on).unwrap();
    let (status, body) = http_post(&addr, "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("flow-label table created (1000 flows)"),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let labels = live_labels(&addr);
    assert_eq!(labels.len(), 20);
    assert!(labelled().unwrap() > 0.0);

    // Off: nothing is labelled any more; the table stays, its flows linger.
    std::fs::write(&cfg, &off).unwrap();
    assert_eq!(http_post(&addr, "/reload").0, 200);
    std::thread::sleep(Duration::from_millis(100));
    let n = labelled().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(labelled(), Some(n), "nothing labelled while off");
    assert_eq!(live_labels(&addr), labels);

    // On again: the same table, the same labels; another capacity is refused.
    std::fs::write(&cfg, on.replace("capacity: 1000", "capacity: 2000")).unwrap();
    let (status, body) = http_post(&addr, "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("`flowlabels.capacity`"), "{body}");
    std::fs::write(&cfg, &on).unwrap();
    let (status, body) = http_post(&addr, "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("created"), "{body}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(labelled().unwrap() > n);
    assert_eq!(live_labels(&addr), labels);
    child.signal("INT");
    let r = child.finish();
    r.assert_clean();
    r.assert_conservation();
    assert_eq!(r.summary["flowlabels"]["live"], 20);
}

/// Replaces `dir/appliance.yaml` as the kubelet updates a ConfigMap volume: the content goes
/// into a new timestamped directory, `..data` is switched to it by renaming a new symlink over
/// it (atomic), and the old directory goes; `appliance.yaml` is a symlink to
/// `..data/appliance.yaml` that never changes.
fn kubelet_update(dir: &Path, n: u32, text: &str) {
    let ts = format!("..2025_01_01_00_00_{n:02}.000000001");
    std::fs::create_dir(dir.join(&ts)).unwrap();
    std::fs::write(dir.join(&ts).join("appliance.yaml"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&ts, &tmp).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    match old {
        Some(old) => std::fs::remove_dir_all(dir.join(old)).unwrap(),
        None => {
            std::os::unix::fs::symlink("..data/appliance.yaml", dir.join("appliance.yaml")).unwrap()
        }
    }
}

#[test]
fn a_watched_configuration_file_reloads_when_its_content_changes() {
    let t = TestDir::new("reload-watch");
    t.gen(
        "in.pcap",
        &["--count=500", "--flows=16", "--proto=udp,tcp", "--seed=98"],
    );
    let watch = "run:\n  watch_config_s: 0.2\n";
    let a = replay_config(&t, FILTERS_A) + watch;
    let b = replay_config(&t, FILTERS_B) + watch;
    // A bad period is a configuration error, at start as at check-config.
    let bad_period = t.path("bad-period.yaml");
    std::fs::write(&bad_period, a.replace("0.2", "0")).unwrap();
    let e = check_config_error(&bad_period);
    assert!(
        e.contains("`run.watch_config_s`: 0: seconds between looks"),
        "{e}"
    );
    let o = appliance(&["run", "--watch-config", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--watch-config needs --config FILE"));

    let dir = t.path("configmap");
    std::fs::create_dir(&dir).unwrap();
    kubelet_update(&dir, 1, &a);
    let cfg = dir.join("appliance.yaml");
    let mut child = t.spawn(&cfg, &["--duration=60"]);
    let addr = child.wait_for_metrics_addr();
    let count = |result: &str| {
        sample(
            &metrics(&addr),
            &format!("appliance_config_reloads_total{{result=\"{result}\"}}"),
        )
    };
    assert_eq!(sample(&metrics(&addr), "appliance_config_generation"), 1.0);
    assert_tcp_dropped(&addr, false, 0);

    // The ConfigMap changes: reloaded by the watch, as SIGHUP would.
    kubelet_update(&dir, 2, &b);
    wait_reloads(&addr, "ok", 1.0);
    assert_eq!(sample(&metrics(&addr), "appliance_config_generation"), 2.0);
    assert_tcp_dropped(&addr, true, 1);
    // Same content under a new directory: nothing to do.
    kubelet_update(&dir, 3, &b);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!((count("ok"), count("rejected")), (1.0, 0.0));
    // A bad file is refused once (not at every look), the running generation stays.
    kubelet_update(
        &dir,
        4,
        &b.replace("{ from: in, to: out }", "{ from: in, to: nowhere }"),
    );
    wait_reloads(&addr, "rejected", 1.0);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!((count("ok"), count("rejected")), (1.0, 1.0));
    let m = metrics(&addr);
    assert_eq!(sample(&m, "appliance_config_generation"), 2.0);
    assert_eq!(sample(&m, "appliance_config_last_reload_successful"), 0.0);
    assert_tcp_dropped(&addr, true, 2);
    // Fixed: reloaded; a SIGHUP of the same content reloads once more, and the watch does not
    // reload it again.
    kubelet_update(&dir, 5, &a);
    wait_reloads(&addr, "ok", 2.0);
    assert_tcp_dropped(&addr, false, 3);
    child.signal("HUP");
    wait_reloads(&addr, "ok", 3.0);
    // The file replaced by rename (as `mv` or an editor saves), with another period.
    let tmp = dir.join("new.yaml");
    std::fs::write(
        &tmp,
        b.replace("watch_config_s: 0.2", "watch_config_s: 0.3"),
    )
    .unwrap();
    std::fs::rename(&tmp, &cfg).unwrap();
    wait_reloads(&addr, "ok", 4.0);
    assert_tcp_dropped(&addr, true, 4);
    std::thread::sleep(Duration::from_millis(800));
    let m = metrics(&addr);
    assert_eq!(sample(&m, "appliance_config_generation"), 5.0);
    assert_eq!(
        sample(&m, "appliance_config_reloads_total{result=\"ok\"}"),
        4.0
    );
    assert_eq!(sample(&m, "appliance_config_last_reload_successful"), 1.0);
    child.signal("INT");
    let r = child.finish();
    r.assert_clean();
    r.assert_conservation();
    assert_eq!(
        r.stderr
            .matches("reload (configuration file changed): ")
            .count(),
        3,
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr
            .matches("reload (configuration file changed) rejected")
            .count(),
        1,
        "{}",
        r.stderr
    );
}
