//! Hitless reload: SIGHUP and POST /reload while generated traffic flows without pause
//! (net_pcap infinite_rx); valid configurations alternate with invalid ones; at the end every
//! received packet was sent or dropped with a counted reason, port by port, and the pools are
//! full. Rejected reloads answer the same errors as a start would and leave the running
//! generation in effect; SAs kept across a reload keep their sequence numbers; SAs are added,
//! rekeyed and removed live, their device sessions created before and freed after.
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
    // Four ports (two of them tunnels) with default rings need more than the tests' 8191 mbufs.
    let a = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            "metrics:\n  listen: null\n",
            "metrics:\n  listen: 127.0.0.1:0\n",
        )
        .replace("mbufs: 8191", "mbufs: 16383");
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
    let rekeyed = b.replacen(key, &key.replace("00", "ff"), 1);
    std::fs::write(&cfg, &rekeyed).unwrap();
    let (status, body) = http_post(&addr, "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("generation 5 in effect") && body.contains("SAs: 1 kept, 1 rekeyed (out)"),
        "{body}"
    );
    assert!(!body.contains("ff0102"), "no key in answers: {body}");
    // More new SAs than the device has sessions for (it holds 1024): refused once a session
    // cannot be created; the sessions created for the attempt are freed, nothing changes.
    let sessions_back_to_2 = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while sample(&metrics(&addr), "appliance_crypto_sessions") != 2.0 {
            assert!(Instant::now() < deadline, "{what}: sessions not freed");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    sessions_back_to_2("rekey");
    let many: String = (0..1100)
        .map(|i| {
            format!(
                "  - {{ name: extra{i}, spi: {}, direction: in, src: {REMOTE}, dst: {LOCAL}, mark: 7, algorithm: aes-gcm-128, key: \"{key}\" }}\n",
                0x3000 + i
            )
        })
        .collect();
    std::fs::write(&cfg, rekeyed.replace("sas:\n", &format!("sas:\n{many}"))).unwrap();
    let (status, body) = http_post(&addr, "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(": crypto (crypto_aesni_mb0): sas[")
            && body.contains("of the device's 1024 sessions in use); nothing changed"),
        "{body}"
    );
    assert!(!body.contains(key), "no key in answers: {body}");
    let m = metrics(&addr);
    assert_eq!(sample(&m, "appliance_config_generation"), 5.0);
    assert_eq!(sample(&m, "appliance_config_last_reload_successful"), 0.0);
    sessions_back_to_2("refused");
    let (_, p1) = out_sa(&addr);
    std::thread::sleep(Duration::from_millis(200));
    assert!(out_sa(&addr).1 > p1, "the running SA goes on");
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

/// 20 bytes of key material (an AES-128 key and a GCM salt) in hex: `b`, `b + 1`, ...
fn gcm_key(b: u8) -> String {
    (0..20u8)
        .map(|i| format!("{:02x}", b.wrapping_add(i)))
        .collect()
}

/// One ESP sequence number space seen on the wire.
#[derive(Debug, Default)]
struct SpiLog {
    frames: u64,
    first_seq: u32,
    last_seq: u32,
    /// Frames whose sequence number was not above the previous one of the SPI.
    not_increasing: u64,
    /// Position (among all frames) of the first and the last frame.
    first_at: u64,
    last_at: u64,
    /// Frames with other outer addresses or next-hop MAC than the SPI's tunnel.
    wrong_path: u64,
    /// The first and the last frames, for decryption by the reference.
    head: Vec<Vec<u8>>,
    tail: std::collections::VecDeque<Vec<u8>>,
}

/// What left the underlay, read from its capture as it was written.
#[derive(Debug, Default)]
struct Wire {
    frames: u64,
    not_esp: u64,
    spis: std::collections::BTreeMap<u32, SpiLog>,
}

const SAMPLE: usize = 64;

/// The path an SPI's frames must take: SPI, outer source and destination, next-hop MAC.
type EspPath = (u32, [u8; 4], [u8; 4], [u8; 6]);

/// Reads the pcap stream net_pcap writes into the FIFO `path` until the appliance closes it.
/// `paths`: SPI -> (outer source, outer destination, next-hop MAC) it must take.
fn read_wire(path: std::path::PathBuf, paths: Vec<EspPath>) -> Wire {
    let f = std::fs::File::open(&path).unwrap();
    let mut r =
        pcap_file::pcap::PcapReader::new(std::io::BufReader::with_capacity(1 << 20, f)).unwrap();
    let mut w = Wire::default();
    while let Some(Ok(p)) = r.next_packet() {
        let d = &p.data;
        let at = w.frames;
        w.frames += 1;
        if d.len() < 14 + 20 + 8 || d[12..14] != [8, 0] || d[14 + 9] != 50 {
            w.not_esp += 1;
            continue;
        }
        let ihl = usize::from(d[14] & 15) * 4;
        let esp = &d[14 + ihl..];
        let spi = u32::from_be_bytes([esp[0], esp[1], esp[2], esp[3]]);
        let seq = u32::from_be_bytes([esp[4], esp[5], esp[6], esp[7]]);
        let l = w.spis.entry(spi).or_default();
        let right = paths.iter().any(|(s, src, dst, mac)| {
            *s == spi && d[26..30] == src[..] && d[30..34] == dst[..] && d[0..6] == mac[..]
        });
        if !right {
            l.wrong_path += 1;
        }
        if l.frames == 0 {
            l.first_seq = seq;
            l.first_at = at;
        } else if seq <= l.last_seq {
            l.not_increasing += 1;
        }
        l.frames += 1;
        l.last_seq = seq;
        l.last_at = at;
        if l.head.len() < SAMPLE {
            l.head.push(d.to_vec());
        }
        if l.tail.len() == SAMPLE {
            l.tail.pop_front();
        }
        l.tail.push_back(d.to_vec());
    }
    w
}

/// Decrypts `frames` with the reference ESP implementation; all must verify.
fn reference_decrypts(t: &TestDir, tag: &str, frames: &[Vec<u8>], spi: &str, dst: &str, key: &str) {
    let (input, out, rep) = (
        t.p(&format!("sample-{tag}.pcap")),
        t.p(&format!("sample-{tag}-dec.pcap")),
        t.p(&format!("sample-{tag}.json")),
    );
    write_pcap(Path::new(&input), frames);
    let alg = ("aes-gcm-128", key, "");
    let mut a = vec!["decrypt", "--in", &input, "--out", &out, "--json", &rep];
    a.extend(crate::ipsec::sa_args(spi, LOCAL, dst, &alg, key, "", false));
    crate::ipsec::esp_ref(&a);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert_eq!(
        report["totals"]["ok"].as_u64(),
        Some(frames.len() as u64),
        "{tag}: {}",
        report["totals"]
    );
}

/// Packets, bytes and sequence number of each SA `/show/sas` lists, by name, with its SPI.
fn live_sas(addr: &str) -> std::collections::BTreeMap<String, (String, u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(&http_get(addr, "/show/sas")).unwrap();
    v["sas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                (
                    s["spi"].as_str().unwrap().to_owned(),
                    s["packets"].as_u64().unwrap(),
                    s["seq"].as_u64().unwrap(),
                ),
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

#[test]
fn sas_are_added_rekeyed_and_removed_live_under_continuous_traffic() {
    const REMOTE2: &str = "192.0.2.3";
    let t = TestDir::new("reload-live-sa");
    // lan: TCP goes into vti0, UDP (a filter's redirect) into vti1; both forever.
    t.gen(
        "inner.pcap",
        &[
            "--count=64",
            "--flows=16",
            "--ip=4",
            "--proto=udp,tcp",
            "--size=100,300",
            "--seed=96",
        ],
    );
    // wan: the peers' ESP for in0 (from vti0's remote) and in1 (from vti1's), interleaved,
    // forever (the inbound SAs have no anti-replay, so the repeats pass).
    t.gen(
        "peer.pcap",
        &[
            "--count=32",
            "--flows=8",
            "--ip=mix",
            "--size=64,500",
            "--seed=97",
        ],
    );
    let (k_out0, k_out1, k_out1b, k_in0, k_in1) = (
        gcm_key(0x00),
        gcm_key(0x20),
        gcm_key(0x40),
        gcm_key(0x60),
        gcm_key(0x80),
    );
    let alg = ("aes-gcm-128", "", "");
    for (spi, src, key, out) in [
        ("0x2000", REMOTE, &k_in0, "esp0.pcap"),
        ("0x2100", REMOTE2, &k_in1, "esp1.pcap"),
    ] {
        let (i, o) = (t.p("peer.pcap"), t.p(out));
        let mut a = vec!["encrypt", "--in", &i, "--out", &o];
        a.extend(crate::ipsec::sa_args(spi, src, LOCAL, &alg, key, "", false));
        crate::ipsec::esp_ref(&a);
    }
    let (e0, e1) = (
        read_pcap(&t.path("esp0.pcap")),
        read_pcap(&t.path("esp1.pcap")),
    );
    let esp_in: Vec<Vec<u8>> = e0
        .iter()
        .zip(&e1)
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    write_pcap(&t.path("esp-in.pcap"), &esp_in);
    let fifo = t.path("wan-out.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());

    let ports = format!(
        "  - name: lan
    device: net_pcap0
    args: \"rx_pcap={},infinite_rx=1,tx_pcap=/dev/null\"
    ingress:
      - {{ name: udp, bpf: {{ filter: udp }}, actions: [{{ redirect: vti1 }}] }}
  - {{ name: wan, device: net_pcap1, args: \"rx_pcap={},infinite_rx=1,tx_pcap={}\" }}
  - name: vti0
    tunnel: {{ local: {LOCAL}, remote: {REMOTE}, ikey: 7, okey: 9, underlay: wan, next_hop_mac: \"02:00:00:00:00:02\" }}
  - name: vti1
    tunnel: {{ local: {LOCAL}, remote: {REMOTE2}, ikey: 8, okey: 10, underlay: wan, next_hop_mac: \"02:00:00:00:00:03\" }}
",
        t.p("inner.pcap"),
        t.p("esp-in.pcap"),
        fifo.display(),
    );
    let out0 = format!("  - {{ name: out0, spi: 0x1000, direction: out, src: {LOCAL}, dst: {REMOTE}, mark: 9, algorithm: aes-gcm-128, key: \"{k_out0}\" }}\n");
    let out1 = format!("  - {{ name: out1, spi: 0x1100, direction: out, src: {LOCAL}, dst: {REMOTE2}, mark: 10, algorithm: aes-gcm-128, key: \"{k_out1}\" }}\n");
    let out1b = format!("  - {{ name: out1, spi: 0x1101, direction: out, src: {LOCAL}, dst: {REMOTE2}, mark: 10, algorithm: aes-gcm-128, key: \"{k_out1b}\" }}\n");
    let in0 = format!("  - {{ name: in0, spi: 0x2000, direction: in, src: {REMOTE}, dst: {LOCAL}, mark: 7, algorithm: aes-gcm-128, key: \"{k_in0}\", replay_window: 0 }}\n");
    let in1 = format!("  - {{ name: in1, spi: 0x2100, direction: in, src: {REMOTE2}, dst: {LOCAL}, mark: 8, algorithm: aes-gcm-128, key: \"{k_in1}\", replay_window: 0 }}\n");
    let rest = |sas: &[&str]| {
        format!(
            "crypto: {{ device: crypto_aesni_mb0 }}\nsas:\n{}forwarding:\n  - {{ from: lan, to: vti0 }}\n  - {{ from: vti0, to: lan }}\n  - {{ from: vti1, to: lan }}\n",
            sas.concat()
        )
    };
    let cfg = t.config_ports_yaml(&ports, &rest(&[&out0, &out1, &in0]));
    // Four ports (two of them tunnels) with default rings need more than the tests' 8191 mbufs.
    let a = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            "metrics:\n  listen: null\n",
            "metrics:\n  listen: 127.0.0.1:0\n",
        )
        .replace("mbufs: 8191", "mbufs: 16383");
    // The same file with other SAs.
    let sas_text = |sas: &[&str]| {
        let head = &a[..a.find("crypto:").unwrap()];
        format!("{head}{}metrics:\n  listen: 127.0.0.1:0\n", rest(sas))
    };
    let b = sas_text(&[&out0, &out1, &in0, &in1]); // + in1
    let c = sas_text(&[&out0, &out1b, &in0, &in1]); // out1 rekeyed
    let d = sas_text(&[&out0, &out1b, &in0]); // - in1
    assert_eq!(sas_text(&[&out0, &out1, &in0]), a);
    let bad_key = sas_text(&[&out0, &out1, &in0, &in1.replace(&k_in1, &k_in1[..30])]);
    let dup_spi = sas_text(&[
        &out0,
        &out1,
        &in0,
        &in1.replace("spi: 0x2100", "spi: 0x2000"),
    ]);
    let new_seq = c.replacen(
        "algorithm: aes-gcm-128,",
        "seq: 5, algorithm: aes-gcm-128,",
        1,
    );
    let new_crypto = c.replace("crypto_aesni_mb0", "crypto_openssl0");
    std::fs::write(&cfg, &a).unwrap();

    let reader = {
        let (fifo, mac) = (fifo.clone(), |x| [2, 0, 0, 0, 0, x]);
        let paths = vec![
            (0x1000, [192, 0, 2, 1], [192, 0, 2, 2], mac(2)),
            (0x1100, [192, 0, 2, 1], [192, 0, 2, 3], mac(3)),
            (0x1101, [192, 0, 2, 1], [192, 0, 2, 3], mac(3)),
        ];
        std::thread::spawn(move || read_wire(fifo, paths))
    };
    let mut child = t.spawn(&cfg, &["--duration=120"]);
    let addr = child.wait_for_metrics_addr();
    let post = |what: &str, want: u16| -> String {
        let (status, body) = http_post(&addr, "/reload");
        assert_eq!(status, want, "{what}: {body}");
        body
    };
    // Kept SAs go on: their numbers and counters only ever grow.
    let mut last = live_sas(&addr);
    let mut kept_grow = |addr: &str, step: &str| {
        std::thread::sleep(Duration::from_millis(300));
        let now = live_sas(addr);
        for name in ["out0", "in0"] {
            let (was, is) = (&last[name], &now[name]);
            assert!(
                is.1 > was.1 && is.2 >= was.2 && is.0 == was.0,
                "{step}: {name} {was:?} -> {is:?}"
            );
        }
        last = now.clone();
        now
    };
    kept_grow(&addr, "start");
    let check_config_error = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        check_config_error(&cfg)
    };

    // Invalid: a key of the wrong length; the answer is check-config's, without the key.
    let want = check_config_error(&bad_key);
    let body = post("bad key", 400);
    assert_eq!(body.trim_end(), want);
    assert!(
        body.contains("`sas[3].key`") && !body.contains(&k_in1[..30]),
        "{body}"
    );
    // Add in1.
    std::fs::write(&cfg, &b).unwrap();
    let body = post("add", 200);
    assert!(
        body.contains("generation 2 in effect") && body.contains("SAs: 3 kept, 1 added (in1)"),
        "{body}"
    );
    let now = kept_grow(&addr, "add");
    assert!(now["in1"].1 > 0, "in1 decrypts: {now:?}");
    let in1_packets = now["in1"].1;
    // Invalid: two inbound SAs on one SPI and destination.
    let want = check_config_error(&dup_spi);
    assert_eq!(post("duplicate SPI", 400).trim_end(), want);
    assert!(want.contains("two inbound SAs share SPI 0x2000"), "{want}");
    let now = kept_grow(&addr, "duplicate SPI");
    assert_eq!(sample(&metrics(&addr), "appliance_config_generation"), 2.0);
    assert_eq!(now.len(), 4);
    // Rekey out1: a new SPI and key under the same name.
    let out1_before = now["out1"].1;
    std::fs::write(&cfg, &c).unwrap();
    let body = post("rekey", 200);
    assert!(
        body.contains("generation 3 in effect") && body.contains("SAs: 3 kept, 1 rekeyed (out1)"),
        "{body}"
    );
    let now = kept_grow(&addr, "rekey");
    assert_eq!(now["out1"].0, "0x1101");
    assert!(
        now["out1"].1 > 0 && now["out1"].2 >= now["out1"].1,
        "{now:?}"
    );
    let m = http_get(&addr, "/metrics");
    assert!(
        m.contains("appliance_sa_info{sa=\"out1\",direction=\"out\",spi=\"0x1101\""),
        "{m}"
    );
    assert!(!m.contains("spi=\"0x1100\""));
    // Invalid: a kept SA's seq; another crypto device. The running generation stays.
    std::fs::write(&cfg, &new_seq).unwrap();
    let body = post("seq", 400);
    assert!(
        body.contains("config error: `sas[0].seq`: SA \"out0\" stays as it runs, with its sequence state (now ")
            && body.contains("`seq` applies only when an SA is created"),
        "{body}"
    );
    std::fs::write(&cfg, &new_crypto).unwrap();
    let body = post("crypto", 400);
    assert_eq!(
        body.trim_end(),
        format!(
            "{}: config error: `crypto`: the crypto device cannot change while the appliance runs: restart required",
            cfg.display()
        )
    );
    let now = kept_grow(&addr, "refused");
    assert_eq!(now["out1"].0, "0x1101");
    let generation = || sample(&metrics(&addr), "appliance_config_generation");
    assert_eq!(generation(), 3.0);
    // Remove in1, by SIGHUP: the peer's ESP for it is now dropped as esp_sa_removed.
    std::fs::write(&cfg, &d).unwrap();
    child.signal("HUP");
    wait_reloads(&addr, "ok", 3.0);
    let now = kept_grow(&addr, "remove");
    assert_eq!(generation(), 4.0);
    assert!(!now.contains_key("in1") && now.len() == 3, "{now:?}");
    let m = metrics(&addr);
    assert!(
        sample(
            &m,
            "appliance_port_drops_total{port=\"wan\",reason=\"esp_sa_removed\"}"
        ) > 0.0
    );
    assert!(!m.contains("sa=\"in1\""), "removed SA series are gone");
    // The device frees the sessions of the replaced and removed SAs once their operations are
    // back: one session per SA again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(&metrics(&addr), "appliance_crypto_sessions") != 3.0 {
        assert!(Instant::now() < deadline, "sessions never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // `appliance show sas` lists the SAs in effect.
    let o = appliance(&["show", "sas", "--admin", &addr]);
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success()
            && shown.contains("0x1101")
            && !shown.contains("in1")
            && !shown.contains("0x1100"),
        "{shown}"
    );
    for k in [&k_out0, &k_out1, &k_out1b, &k_in0, &k_in1] {
        assert!(
            !shown.contains(k.as_str()) && !m.contains(k.as_str()),
            "a key leaked"
        );
    }
    child.signal("INT");
    let r = child.finish();
    // Unblock the reader should the appliance never have opened the FIFO, then read the log.
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(0o4000) // O_NONBLOCK: fails at once when nobody reads
        .open(&fifo);
    let wire = reader.join().unwrap();
    // Exit 0, pools full. (Received = sent + dropped does not hold over all ports here: a
    // tunnel's packets are received (or sent) twice, on the underlay and on the tunnel; the
    // balance is checked port by port below.)
    r.assert_clean();
    for k in [&k_out0, &k_out1, &k_out1b, &k_in0, &k_in1] {
        assert!(!r.stderr.contains(k.as_str()) && !r.summary.to_string().contains(k.as_str()));
    }

    // On the wire: only the three outbound SPIs, each on its tunnel's path, each numbered
    // from 1 upward without a restart; 0x1100 until the rekey, 0x1101 after it.
    assert_eq!(wire.not_esp, 0, "{wire:?}");
    assert_eq!(
        wire.spis.keys().copied().collect::<Vec<_>>(),
        [0x1000, 0x1100, 0x1101]
    );
    for (spi, l) in &wire.spis {
        assert_eq!(
            (l.first_seq, l.not_increasing, l.wrong_path),
            (1, 0, 0),
            "{spi:#x}: {l:?}"
        );
    }
    let (s0, s1, s1b) = (
        &wire.spis[&0x1000],
        &wire.spis[&0x1100],
        &wire.spis[&0x1101],
    );
    assert!(s1.last_at < s1b.first_at, "0x1100 never after 0x1101");
    assert!(s0.first_at < s1b.first_at && s0.last_at > s1b.first_at);
    assert!(s1.frames >= out1_before, "{} {out1_before}", s1.frames);
    // The summary's SAs are those in effect at the end; their packets are the frames seen.
    let sa0 = r.sa("out0");
    assert_eq!(sa0["packets"].as_u64(), Some(s0.frames), "{}", r.summary);
    assert_eq!(r.sa("out1")["packets"].as_u64(), Some(s1b.frames));
    assert_eq!(r.sa("out1")["spi"].as_u64(), Some(0x1101));
    let seq0 = sa0["seq"].as_u64().unwrap();
    assert!(u64::from(s0.last_seq) <= seq0 && seq0 < u64::from(s0.last_seq) + 32);
    // The reference decrypts the first and last frames of each SPI with its own key.
    for (tag, frames, spi, dst, key) in [
        (
            "out0-last",
            s0.tail.iter().cloned().collect::<Vec<_>>(),
            "0x1000",
            REMOTE,
            &k_out0,
        ),
        ("out1-first", s1.head.clone(), "0x1100", REMOTE2, &k_out1),
        (
            "out1-last",
            s1.tail.iter().cloned().collect(),
            "0x1100",
            REMOTE2,
            &k_out1,
        ),
        ("out1b-first", s1b.head.clone(), "0x1101", REMOTE2, &k_out1b),
    ] {
        reference_decrypts(&t, tag, &frames, spi, dst, key);
    }

    // Port by port: lan's packets went into the tunnels or were dropped with a reason; what
    // the tunnels sent is what the wire carried; wan's packets were decrypted into the
    // tunnels (and out of lan) or dropped with a reason.
    let port = |n: &str| r.port(n).clone();
    let (lan, wan, v0, v1) = (port("lan"), port("wan"), port("vti0"), port("vti1"));
    let n = |p: &serde_json::Value, k: &str| p[k].as_u64().unwrap();
    let drops = |p: &serde_json::Value| drops_of(p).values().sum::<u64>();
    assert_eq!(
        n(&lan, "rx_packets"),
        n(&v0, "tx_packets") + n(&v1, "tx_packets") + drops(&lan) + drops(&v0) + drops(&v1),
        "{}",
        r.summary
    );
    assert_eq!(
        n(&wan, "tx_packets"),
        n(&v0, "tx_packets") + n(&v1, "tx_packets")
    );
    assert_eq!(n(&wan, "tx_packets"), wire.frames);
    assert_eq!(
        n(&wan, "rx_packets"),
        n(&v0, "rx_packets") + n(&v1, "rx_packets") + drops(&wan),
        "{}",
        r.summary
    );
    assert_eq!(
        n(&lan, "tx_packets"),
        n(&v0, "rx_packets") + n(&v1, "rx_packets")
    );
    let wan_drops = drops_of(&wan);
    assert!(
        wan_drops["esp_unknown_spi"] > 0 && wan_drops["esp_sa_removed"] > 0,
        "{wan_drops:?}"
    );
    assert!(n(&v1, "rx_packets") >= in1_packets);
    // in1 lived between the add and the remove: what it decrypted entered vti1.
    assert_eq!(r.sa("in0")["packets"].as_u64(), Some(n(&v0, "rx_packets")));
    for p in [&lan, &v0, &v1] {
        assert!(
            drops_of(p).keys().all(|k| k == "crypto_queue_full"),
            "{}",
            r.summary
        );
    }
    assert!(
        wan_drops.keys().all(
            |k| ["esp_unknown_spi", "esp_sa_removed", "crypto_queue_full"].contains(&k.as_str())
        ),
        "{wan_drops:?}"
    );
    // Both paths of the reload were logged.
    assert_eq!(
        r.stderr.matches("reload (POST /reload): ").count(),
        2,
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("reload (POST /reload) rejected").count(),
        4,
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("reload (SIGHUP): ") && r.stderr.contains("SAs: 3 kept, 1 removed (in1)"),
        "{}",
        r.stderr
    );
}
