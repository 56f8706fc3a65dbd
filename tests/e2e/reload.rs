//! Hitless reload: SIGHUP and POST /reload while generated traffic flows without pause
//! (net_pcap infinite_rx); valid configurations alternate with invalid ones; at the end every
//! received packet was sent or dropped with a counted reason, port by port, and the pools are
//! full. Rejected reloads answer the same errors as a start would and leave the running
//! generation in effect; SAs kept across a reload keep their sequence numbers.
use crate::util::*;
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
fn sas_kept_across_reloads_keep_their_sequence_numbers_and_a_new_key_starts_a_new_sa() {
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
    std::thread::sleep(Duration::from_millis(300));
    let (seq2, packets2) = out_sa(&addr);
    // A fresh SA would have started again at 1: its numbers would trail the packets it
    // carried over the whole run.
    assert!(
        packets2 > packets1 && seq2 > seq1 && seq2 >= packets2,
        "{seq2} {packets2}"
    );
    // Another key for the outbound SA: another SA under the same name and SPI, starting
    // afresh (the running one goes); the answer names it, never the key.
    let (_, before) = out_sa(&addr);
    std::fs::write(&cfg, b.replacen(key, &key.replace("00", "ff"), 1)).unwrap();
    let (status, body) = http_post(&addr, "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("generation 5 in effect") && body.contains("SAs: 1 kept, 1 rekeyed (out)"),
        "{body}"
    );
    assert!(!body.contains("ff0102"), "no key in answers: {body}");
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
    // The vti's packets went out under the first SA (at least `before` of them), then the
    // second.
    assert!(
        packets + before <= vti["tx_packets"].as_u64().unwrap(),
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
    // The table's parameters are set at start.
    std::fs::write(&cfg, a.replace("linger_s: 20", "linger_s: 30")).unwrap();
    let (status, body) = http_post(&addr, "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("`flowlabels`: the flow-label table") && body.contains("restart required"),
        "{body}"
    );
    child.signal("INT");
    let r = child.finish();
    r.assert_clean();
    r.assert_conservation();
}
