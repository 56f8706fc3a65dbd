//! End-to-end tests: the real `appliance` binary on DPDK net_pcap / net_null virtual devices
//! (`--no-huge`, no PCI, a unique file prefix per test), fed by captures `appliance gen` made.
//! Outputs are compared frame by frame with what the forwarding table requires; every test
//! asserts that all mbufs are back in their pool after shutdown and that every received packet
//! was either sent or dropped with a counted reason.

mod cbpf;
mod flow;
mod flowlabel;
mod ipsec;
mod mirred;
mod ops;
mod reload;
mod util;

use std::collections::BTreeMap;
use util::*;

#[test]
fn forwards_both_directions_exactly_and_drops_malformed_by_reason() {
    let t = TestDir::new("fwd");
    let west = t.gen(
        "in-west.pcap",
        &[
            "--count=3000",
            "--flows=32",
            "--size=imix",
            "--seed=11",
            "--malformed-permille=25",
        ],
    );
    let east = t.gen(
        "in-east.pcap",
        &[
            "--count=2000",
            "--flows=8",
            "--ip=6",
            "--vlan=100",
            "--size=64",
            "--seed=12",
            "--malformed-permille=25",
        ],
    );
    assert!(
        west.malformed() > 20 && east.malformed() > 20,
        "inputs carry malformed frames"
    );
    let cfg = t.config(
        &[
            (
                "west",
                "net_pcap0",
                &format!(
                    "rx_pcap={},tx_pcap={}",
                    t.p("in-west.pcap"),
                    t.p("out-west.pcap")
                ),
            ),
            (
                "east",
                "net_pcap1",
                &format!(
                    "rx_pcap={},tx_pcap={}",
                    t.p("in-east.pcap"),
                    t.p("out-east.pcap")
                ),
            ),
        ],
        "forwarding:\n  - { from: west, to: east }\n  - { from: east, to: west }\n",
        None,
    );
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    assert_frames_eq(
        &read_pcap(&t.path("out-east.pcap")),
        &west.valid_frames(),
        "east output = valid west input, in order, byte for byte",
    );
    assert_frames_eq(
        &read_pcap(&t.path("out-west.pcap")),
        &east.valid_frames(),
        "west output = valid east input",
    );
    for (port, input) in [("west", &west), ("east", &east)] {
        let p = r.port(port);
        assert_eq!(
            p["rx_packets"],
            input.frames.len() as u64,
            "{port} received everything"
        );
        assert_eq!(
            drops_of(p),
            input.expected_drops(),
            "{port}: drops by reason equal the malformed frames generated"
        );
    }
    r.assert_conservation();
    tcpdump_reads(&t.path("out-east.pcap"), west.valid_frames().len());
    tcpdump_reads(&t.path("out-west.pcap"), east.valid_frames().len());
}

#[test]
fn forwarding_entries_drop_and_missing_entries_count_no_route() {
    let t = TestDir::new("drop");
    let a = t.gen("a.pcap", &["--count=500", "--seed=21"]);
    let b = t.gen("b.pcap", &["--count=400", "--seed=22"]);
    let c = t.gen(
        "c.pcap",
        &["--count=300", "--seed=23", "--ip=4", "--proto=udp"],
    );
    let cfg = t.config(
        &[
            (
                "a",
                "net_pcap0",
                &format!("rx_pcap={},tx_pcap={}", t.p("a.pcap"), t.p("out-a.pcap")),
            ),
            (
                "b",
                "net_pcap1",
                &format!("rx_pcap={},tx_pcap={}", t.p("b.pcap"), t.p("out-b.pcap")),
            ),
            (
                "c",
                "net_pcap2",
                &format!("rx_pcap={},tx_pcap={}", t.p("c.pcap"), t.p("out-c.pcap")),
            ),
        ],
        "forwarding:\n  - { from: a, action: drop }\n  - { from: c, to: a }\n",
        None,
    );
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    assert_eq!(
        drops_of(r.port("a")),
        BTreeMap::from([("action_drop".to_owned(), a.frames.len() as u64)])
    );
    assert_eq!(
        drops_of(r.port("b")),
        BTreeMap::from([("no_route".to_owned(), b.frames.len() as u64)])
    );
    assert_frames_eq(
        &read_pcap(&t.path("out-a.pcap")),
        &c.valid_frames(),
        "a output = c input",
    );
    r.assert_conservation();
}

#[test]
fn garbage_frames_never_crash_and_are_all_accounted_for() {
    let t = TestDir::new("garbage");
    let frames = garbage_frames(4000, 0xdecaf);
    write_pcap(&t.path("garbage.pcap"), &frames);
    let cfg = t.config(
        &[
            (
                "in",
                "net_pcap0",
                &format!(
                    "rx_pcap={},tx_pcap={}",
                    t.p("garbage.pcap"),
                    t.p("out-in.pcap")
                ),
            ),
            (
                "out",
                "net_pcap1",
                &format!("rx_pcap={},tx_pcap={}", t.p("empty.pcap"), t.p("out.pcap")),
            ),
        ],
        "forwarding:\n  - { from: in, to: out }\n",
        None,
    );
    write_pcap(&t.path("empty.pcap"), &[]);
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    let p = r.port("in");
    assert_eq!(p["rx_packets"], frames.len() as u64);
    let forwarded = read_pcap(&t.path("out.pcap"));
    let dropped: u64 = drops_of(p).values().sum();
    assert_eq!(forwarded.len() as u64 + dropped, frames.len() as u64);
    assert!(
        dropped > 1000,
        "most random frames are malformed: {:?}",
        drops_of(p)
    );
    assert!(drops_of(p).contains_key("runt"));
    r.assert_conservation();
}

#[test]
fn metrics_endpoint_serves_valid_prometheus_exposition_during_a_run() {
    let t = TestDir::new("metrics");
    t.gen(
        "in.pcap",
        &["--count=200", "--seed=31", "--malformed-permille=50"],
    );
    let cfg = t.config_replay_to_null("in.pcap", Some("127.0.0.1:0"));
    // A counting filter (no actions) on the input port, for the filter series.
    let y = std::fs::read_to_string(&cfg).unwrap().replace(
        "infinite_rx=1\n",
        "infinite_rx=1\n    ingress:\n      - { name: udp, bpf: { filter: \"udp\" } }\n",
    );
    std::fs::write(&cfg, y).unwrap();
    let mut child = t.spawn(&cfg, &["--duration=4"]);
    let addr = child.wait_for_metrics_addr();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let body = http_get(&addr, "/metrics");
    let om = http_get_accept(
        &addr,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
    );
    let r = child.finish();
    assert!(
        om.ends_with("# EOF\n") && om.contains("# TYPE appliance_port_rx_packets counter"),
        "OpenMetrics on request"
    );
    r.assert_clean();

    let value = |series: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("series {series} missing from:\n{body}"))
    };
    assert!(value("appliance_port_rx_packets_total{port=\"in\"}") > 0.0);
    assert!(value("appliance_port_tx_packets_total{port=\"out\"}") > 0.0);
    assert!(value("appliance_port_dev_rx_packets_total{port=\"in\"}") > 0.0);
    assert!(
        value("appliance_port_drops_total{port=\"in\",reason=\"runt\"}") > 0.0,
        "malformed input shows up by reason"
    );
    assert_eq!(
        value("appliance_port_drops_total{port=\"in\",reason=\"no_route\"}"),
        0.0
    );
    assert!(value("appliance_lcore_polls_total{lcore=\"1\"}") > 0.0);
    assert!(value("appliance_lcore_busy_polls_total{lcore=\"1\"}") > 0.0);
    assert_eq!(value("appliance_mempool_size{pool=\"mbuf_pool\"}"), 8191.0);
    assert_eq!(value("appliance_port_link_up{port=\"out\"}"), 1.0);
    assert!(
        body.contains("appliance_port_xstats_total{port=\"in\",xstat=\"rx_good_packets\"}"),
        "DPDK xstats exported"
    );
    assert!(body.contains("appliance_build_info{version="));
    let f = "{port=\"in\",hook=\"ingress\",filter=\"udp\"}";
    assert!(value(&format!("appliance_filter_matched_packets_total{f}")) > 0.0);
    assert!(value(&format!("appliance_filter_matched_bytes_total{f}")) > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = value(&format!("appliance_filter_last_use_timestamp_seconds{f}"));
    assert!(
        (now - 30.0..=now + 1.0).contains(&last),
        "last use {last} is recent (now {now})"
    );
    assert!(
        body.contains("appliance_filter_info{port=\"in\",hook=\"ingress\",filter=\"udp\",kind=\"bpf\",engine=\""),
        "filter info"
    );
    promtool_check_metrics(&body);
    assert!(!body.contains("# EOF"), "classic text format by default");
}

#[test]
fn sigterm_stops_polling_flushes_and_exits_cleanly() {
    let t = TestDir::new("sigterm");
    t.gen("in.pcap", &["--count=100", "--seed=41"]);
    let cfg = t.config_replay_to_null("in.pcap", None);
    let child = t.spawn(&cfg, &[]);
    std::thread::sleep(std::time::Duration::from_millis(2000));
    child.signal("TERM");
    let r = child.finish();
    r.assert_clean();
    assert!(
        r.stdout.contains("appliance summary"),
        "summary printed:\n{}",
        r.stdout
    );
    assert!(r.port("in")["rx_packets"].as_u64().unwrap() > 1000);
    r.assert_conservation();
}

#[test]
fn demo_runs_with_no_arguments() {
    let r = run_demo();
    r.assert_clean();
    assert!(
        r.stdout
            .contains("output capture of port east: /tmp/appliance-demo/out-east.pcap"),
        "{}",
        r.stdout
    );
    let out = read_pcap(std::path::Path::new("/tmp/appliance-demo/out-east.pcap"));
    assert_eq!(
        out.len() as u64,
        r.port("east")["tx_packets"].as_u64().unwrap()
    );
    assert!(out.len() > 19_000);
    r.assert_conservation();
}

#[test]
fn bad_configs_are_rejected_naming_the_key_before_anything_starts() {
    let t = TestDir::new("badcfg");
    let base = "eal: { lcores: \"0-1\", no_huge: true, memory_mb: 256, no_pci: true }\n";
    let cases: &[(&str, &[&str])] = &[
        ("ports:\n  - { name: a, device: net_null0, bogus: 1 }\n", &["ports[0].bogus", "unknown field"]),
        ("ports:\n  - { name: a, device: net_null0, rx_queues: 70000 }\n", &["ports[0].rx_queues", "u16"]),
        ("ports:\n  - { name: a, device: net_null0 }\nforwarding:\n  - { from: a, to: nowhere }\n", &["forwarding[0].to", "ports are: a"]),
        ("ports:\n  - { name: a, device: eth0 }\n", &["ports[0].device", "PCI address"]),
        ("ports:\n  - { name: a, device: net_null0 }\n  - { name: a, device: net_null1 }\n", &["ports[1].name", "already"]),
        ("ports:\n  - { name: a, device: net_null0 }\nmempool: { mbufs: 1100 }\n", &["mempool.mbufs", "at least"]),
        ("ports:\n  - { name: a, device: net_null0 }\nmetrics: { listen: \"nope\" }\n", &["metrics.listen"]),
        ("ports: [\n", &["YAML syntax"]),
    ];
    for (i, (body, needles)) in cases.iter().enumerate() {
        let f = t.path(&format!("bad{i}.yaml"));
        let text = if body.starts_with("ports: [") {
            body.to_string()
        } else {
            format!("{base}{body}")
        };
        std::fs::write(&f, text).unwrap();
        for cmd in [
            &["check-config", f.to_str().unwrap()][..],
            &["run", "--config", f.to_str().unwrap()][..],
        ] {
            let o = appliance(cmd);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "case {i} {cmd:?}: {err}");
            for n in *needles {
                assert!(
                    err.contains(n),
                    "case {i} {cmd:?}: {n:?} missing from: {err}"
                );
            }
            assert!(
                !err.contains("EAL:"),
                "case {i}: DPDK must not start on a bad config: {err}"
            );
        }
    }
    let ok = t.config(&[("a", "net_null0", "")], "", None);
    let o = appliance(&["check-config", ok.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn bad_eal_arguments_and_missing_devices_fail_cleanly() {
    let t = TestDir::new("badeal");
    let cfg = t.config_with_eal(
        &[("a", "net_null0", "")],
        "",
        "  extra_args: [\"--definitely-not-an-eal-flag\"]\n",
    );
    let r = t.run_expect_failure(&cfg);
    assert_eq!(r.0, Some(3), "{}", r.1);
    assert!(
        r.1.contains("rte_eal_init") && r.1.contains("EAL arguments"),
        "{}",
        r.1
    );

    let cfg = t.config(
        &[(
            "a",
            "net_pcap0",
            "rx_pcap=/nonexistent/in.pcap,tx_pcap=/nonexistent/out.pcap",
        )],
        "",
        None,
    );
    let r = t.run_expect_failure(&cfg);
    assert_eq!(r.0, Some(3), "{}", r.1);
    assert!(!r.1.contains("panicked"), "{}", r.1);

    // The metrics address is bound before DPDK starts: a taken address fails with nothing started.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = t.config(
        &[("a", "net_null0", "")],
        "",
        Some(&l.local_addr().unwrap().to_string()),
    );
    let r = t.run_expect_failure(&cfg);
    assert_eq!(r.0, Some(2), "{}", r.1);
    assert!(
        r.1.contains("metrics.listen") && !r.1.contains("EAL:"),
        "{}",
        r.1
    );
}

#[test]
fn two_workers_each_poll_their_queues_and_send_on_their_own_tx_queues() {
    // Two worker lcores sharing CPU 1 (this machine has two cores): lcore 1 polls west, lcore 2
    // polls east; each worker has its own transmit queue (own tx_pcap file) on every port.
    let t = TestDir::new("workers");
    let west = t.gen(
        "in-west.pcap",
        &["--count=1500", "--seed=51", "--malformed-permille=20"],
    );
    let east = t.gen(
        "in-east.pcap",
        &["--count=1000", "--seed=52", "--size=imix"],
    );
    let cfg = t.config_full_lcores(
        "0@0,1@1,2@1",
        &[
            (
                "west",
                "net_pcap0",
                &format!(
                    "rx_pcap={},tx_pcap={},tx_pcap={}",
                    t.p("in-west.pcap"),
                    t.p("w-q0.pcap"),
                    t.p("w-q1.pcap")
                ),
            ),
            (
                "east",
                "net_pcap1",
                &format!(
                    "rx_pcap={},tx_pcap={},tx_pcap={}",
                    t.p("in-east.pcap"),
                    t.p("e-q0.pcap"),
                    t.p("e-q1.pcap")
                ),
            ),
        ],
        "forwarding:\n  - { from: west, to: east }\n  - { from: east, to: west }\n",
    );
    let r = t.run(&cfg, &["--exit-when-idle-ms=1000"]);
    r.assert_clean();
    let lcores: Vec<u64> = r.summary["lcores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lcore"].as_u64().unwrap())
        .collect();
    assert_eq!(lcores, vec![1, 2]);
    assert_frames_eq(
        &read_pcap(&t.path("e-q0.pcap")),
        &west.valid_frames(),
        "west traffic leaves east on worker 1's queue",
    );
    assert!(read_pcap(&t.path("e-q1.pcap")).is_empty());
    assert_frames_eq(
        &read_pcap(&t.path("w-q1.pcap")),
        &east.valid_frames(),
        "east traffic leaves west on worker 2's queue",
    );
    assert!(read_pcap(&t.path("w-q0.pcap")).is_empty());
    let per_lcore: Vec<u64> = r.summary["lcores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["packets"].as_u64().unwrap())
        .collect();
    assert_eq!(per_lcore, vec![1500, 1000]);
    r.assert_conservation();
}

#[test]
fn generator_transmits_on_a_dpdk_port_exactly_what_it_writes_to_a_pcap() {
    let t = TestDir::new("gentx");
    let reference = t.gen(
        "ref.pcap",
        &["--count=700", "--seed=61", "--size=imix", "--vlan=7"],
    );
    let cfg = t.config(
        &[(
            "tx",
            "net_pcap0",
            &format!("rx_pcap={},tx_pcap={}", t.p("empty.pcap"), t.p("sent.pcap")),
        )],
        "",
        None,
    );
    write_pcap(&t.path("empty.pcap"), &[]);
    let started = std::time::Instant::now();
    let o = appliance(&[
        "gen",
        "--config",
        cfg.to_str().unwrap(),
        "--port",
        "tx",
        "--count=700",
        "--seed=61",
        "--size=imix",
        "--vlan=7",
        "--rate-pps=2000",
    ]);
    let elapsed = started.elapsed();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("sent 700 frames"), "{out}");
    let pool_line = out
        .lines()
        .find(|l| l.contains("mempool gen_pool:"))
        .unwrap_or_else(|| panic!("no pool report: {out}"));
    let (free, size) = pool_line
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split_once('/'))
        .expect("free/size");
    assert_eq!(
        free, size,
        "every mbuf back in the generator's pool: {pool_line}"
    );
    assert_frames_eq(
        &read_pcap(&t.path("sent.pcap")),
        &reference.frames,
        "transmitted = generated",
    );
    // Paced at 2000 frames/s, 700 frames cannot take less than 0.35 s.
    assert!(
        elapsed >= std::time::Duration::from_millis(340),
        "{elapsed:?}"
    );
}

#[test]
fn jumbo_frames_spanning_several_mbufs_are_forwarded_byte_exact() {
    // 9000-byte frames do not fit a 2176-byte mbuf: net_pcap delivers them as segment chains.
    let t = TestDir::new("jumbo");
    let input = t.gen(
        "in.pcap",
        &[
            "--count=400",
            "--size=64,9000,1500,4000",
            "--seed=71",
            "--malformed-permille=30",
        ],
    );
    let cfg = t.config_a_to_b("in.pcap");
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    let out = read_pcap(&t.path("out-b.pcap"));
    assert!(
        out.iter().any(|f| f.len() == 9000),
        "jumbo frames made it through"
    );
    assert_frames_eq(&out, &input.valid_frames(), "b output = valid a input");
    assert_eq!(drops_of(r.port("a")), input.expected_drops());
    r.assert_conservation();
}

#[test]
fn l2_validation_forwards_bad_ip_headers_untouched_but_still_drops_runts() {
    let t = TestDir::new("l2");
    let input = t.gen(
        "in.pcap",
        &["--count=2000", "--seed=81", "--malformed-permille=60"],
    );
    let mut cfg_text = {
        let cfg = t.config_a_to_b("in.pcap");
        std::fs::read_to_string(cfg).unwrap()
    };
    cfg_text = cfg_text.replacen(
        "    rx_desc: 512\n",
        "    rx_desc: 512\n    validate: l2\n",
        1,
    );
    let cfg = t.path("l2.yaml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    // Framing-only: frames too short for Ethernet (or a cut VLAN tag) are dropped as runts,
    // everything else leaves unchanged, including the deliberately broken IP headers.
    let expect: Vec<Vec<u8>> = input
        .frames
        .iter()
        .zip(&input.kinds)
        .filter(|(f, k)| {
            !(k.as_deref() == Some("runt") && (f.len() < 14 || f[12..14] == [0x81, 0x00]))
        })
        .map(|(f, _)| f.clone())
        .collect();
    assert!(
        expect.len() > input.valid_frames().len(),
        "some malformed IP frames are forwarded"
    );
    assert_frames_eq(&read_pcap(&t.path("out-b.pcap")), &expect, "l2 output");
    let drops = drops_of(r.port("a"));
    assert_eq!(drops.keys().collect::<Vec<_>>(), vec!["runt"], "{drops:?}");
    r.assert_conservation();
}
