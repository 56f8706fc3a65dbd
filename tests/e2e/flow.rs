//! The flow classifier (cls_flow) end to end: a 5-tuple hash with a divisor spreads flows over
//! ports through a class table. Which class every frame must get is computed by the independent
//! scapy oracle (pipelines/tests/flow_oracle.py: scapy's dissectors and its own lookup3), not by
//! the appliance's code; the output captures are compared frame by frame.
use crate::util::*;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

/// A Python that can import scapy: `$FLOW_ORACLE_PYTHON`, else python3 or /usr/bin/python3.
fn python() -> String {
    let candidates: Vec<String> = match std::env::var("FLOW_ORACLE_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["python3".into(), "/usr/bin/python3".into()],
    };
    candidates
        .iter()
        .find(|p| {
            Command::new(p.as_str())
                .args(["-c", "import scapy.layers.inet"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .cloned()
        .expect("a Python with scapy (Debian: python3-scapy) for the flow oracle")
}

/// The oracle's class id for every frame under one hash configuration.
fn oracle_classids(t: &TestDir, frames: &[Vec<u8>], cfg_line: &str) -> Vec<u32> {
    let mut input = format!("hashrnd 0\n{cfg_line}\n");
    for f in frames {
        let hex: String = f.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(input, "frame 0 0 0 - {hex}").unwrap();
    }
    let path = t.path("oracle.txt");
    std::fs::write(&path, input).unwrap();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pipelines/tests/flow_oracle.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&path)
        .output()
        .expect("run flow_oracle.py");
    assert!(
        out.status.success(),
        "flow_oracle.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let ids: Vec<u32> = stdout
        .lines()
        .map(|l| {
            let class = l.rsplit('|').next().unwrap().trim();
            class
                .parse()
                .unwrap_or_else(|_| panic!("oracle line {l:?}"))
        })
        .collect();
    assert_eq!(ids.len(), frames.len());
    ids
}

#[test]
fn flow_classes_spread_flows_over_ports_exactly_as_the_oracle_hashes_them() {
    let t = TestDir::new("flow");
    let g4 = t.gen(
        "in4.pcap",
        &[
            "--count=600",
            "--flows=60",
            "--size=64,512",
            "--seed=51",
            "--ip=4",
        ],
    );
    let g6 = t.gen(
        "in6.pcap",
        &[
            "--count=400",
            "--flows=40",
            "--size=80,700",
            "--seed=52",
            "--ip=6",
        ],
    );
    let input: Vec<Vec<u8>> = g4.frames.iter().chain(&g6.frames).cloned().collect();
    write_pcap(&t.path("in.pcap"), &input);
    write_pcap(&t.path("empty.pcap"), &[]);
    let port = |name: &str, n: usize, rx: &str, hooks: &str| {
        format!(
            "  - name: {name}\n    device: net_pcap{n}\n    rx_desc: 512\n    tx_desc: 512\n    args: rx_pcap={},tx_pcap={}\n{hooks}",
            t.p(rx),
            t.p(&format!("out-{name}.pcap"))
        )
    };
    let hooks = "    ingress:\n      - name: spread\n        flow: { keys: [proto-dst, src, dst, proto, proto-src], mode: hash, divisor: 3, baseclass: \"1:1\", seed: 7 }\n        classes:\n          - { classid: \"1:1\", actions: [{ redirect: b }] }\n          - { classid: \"1:2\", actions: [{ redirect: c }] }\n          - { classid: \"1:3\", actions: [drop] }\n";
    let ports = [
        port("a", 0, "in.pcap", hooks),
        port("b", 1, "empty.pcap", ""),
        port("c", 2, "empty.pcap", ""),
    ]
    .concat();
    let cfg = t.config_ports_yaml(&ports, "");
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    r.assert_conservation();

    let ids = oracle_classids(
        &t,
        &input,
        "config hash src,dst,proto,proto-src,proto-dst - - - - 3 65537 7",
    );
    let (mut want_b, mut want_c, mut dropped) = (vec![], vec![], 0u64);
    for (f, id) in input.iter().zip(&ids) {
        match id {
            0x10001 => want_b.push(f.clone()),
            0x10002 => want_c.push(f.clone()),
            0x10003 => dropped += 1,
            other => panic!("class {other:#x} outside 1:1..1:3"),
        }
    }
    assert!(
        want_b.len() > 100 && want_c.len() > 100 && dropped > 100,
        "all three classes used: {} {} {dropped}",
        want_b.len(),
        want_c.len()
    );
    assert_frames_eq(&read_pcap(&t.path("out-b.pcap")), &want_b, "class 1:1 -> b");
    assert_frames_eq(&read_pcap(&t.path("out-c.pcap")), &want_c, "class 1:2 -> c");
    assert_eq!(
        drops_of(r.port("a")),
        [("action_drop".to_owned(), dropped)].into_iter().collect()
    );
    let f = &r.summary["filters"][0];
    assert_eq!(
        (f["kind"].as_str(), f["engine"].as_str()),
        (Some("flow"), Some("flow-hash"))
    );
    assert_eq!(f["matched_packets"], input.len() as u64);
}

#[test]
fn bad_flow_filters_are_config_errors_naming_the_field() {
    let t = TestDir::new("flow-bad");
    write_pcap(&t.path("empty.pcap"), &[]);
    for (flow, key, text) in [
        ("{ keys: [src, dst] }", "flow.mode", "map"),
        ("{ keys: [src, bogus], mode: hash }", "flow.keys", "bogus"),
        (
            "{ keys: [src], baseclass: \"1:0\" }",
            "flow.baseclass",
            "minor",
        ),
        ("{ keys: [src], perturb: 5 }", "flow.", "hash"),
        ("{ keys: [sk-uid] }", "flow.keys", "sk-uid"),
    ] {
        let ports = format!(
            "  - name: a\n    device: net_pcap0\n    args: rx_pcap={},tx_pcap={}\n    ingress:\n      - {{ name: f, flow: {flow} }}\n",
            t.p("empty.pcap"),
            t.p("out.pcap")
        );
        let cfg = t.config_ports_yaml(&ports, "");
        let (code, err) = t.run_expect_failure(&cfg);
        assert_eq!(code, Some(2), "{flow}: {err}");
        assert!(
            err.contains(&format!("`ports[0].ingress[0].{key}"))
                && err.to_lowercase().contains(text),
            "{flow}: {err}"
        );
    }
}
