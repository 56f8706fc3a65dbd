//! The flow classifier against an independent oracle: `flow_oracle.py` decodes the same frames
//! with scapy, applies the 3.13 dissector's and cls_flow's rules itself and hashes with its own
//! lookup3. Every key value, the software rxhash and the class ids of several configurations
//! must be identical for a few thousand varied frames.
//!
//! scapy is required (Debian: `python3-scapy`); the interpreter is `$FLOW_ORACLE_PYTHON`, else
//! the first of `python3`, `/usr/bin/python3` that can import scapy. Without one the test fails.
use pipelines::cbpf::gen::{random_frame, Rng};
use pipelines::flow::gen::{ipv4_frame, ipv6_frame, random_flow_frame};
use pipelines::flow::{software_rxhash, FlowClassifier, FlowKey, FlowSpec, FLOW_KEY_COUNT};
use pipelines::pipeline::{Classifier, PacketView, PortIndex, Verdict};
use pipelines::wire::Parsed;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

const HASHRND: u32 = 0x9e37_79b9;
const FRAMES: u64 = 3000;

struct Meta {
    iif: u16,
    priority: u32,
    mark: u32,
    rss: Option<u32>,
}

fn frames() -> Vec<(Vec<u8>, Meta)> {
    let mut r = Rng::new(0x0f10_c0de);
    (0..FRAMES)
        .map(|i| {
            let f = match i % 10 {
                0 => random_frame(i),
                1 => ipv4_frame(
                    r.next_u32().to_be_bytes(),
                    r.next_u32().to_be_bytes(),
                    r.pick(&[6, 17, 1, 50, 51, 132]),
                    r.next_u32() as u16,
                    r.next_u32() as u16,
                ),
                2 => {
                    let mut a = [0u8; 16];
                    a[..8].copy_from_slice(&r.next_u64().to_be_bytes());
                    let mut b = [0u8; 16];
                    b[8..].copy_from_slice(&r.next_u64().to_be_bytes());
                    ipv6_frame(a, b, r.pick(&[6, 17, 58]), r.next_u32() as u16, 443)
                }
                _ => random_flow_frame(i),
            };
            let any = r.next_u32();
            let meta = Meta {
                iif: r.below(8) as u16,
                priority: r.pick(&[0, 7, 0x10001, u32::MAX]),
                mark: r.pick(&[0, 1, 0x55, 0xdead_beef, u32::MAX, any]),
                rss: r.chance(1, 4).then(|| r.next_u32()),
            };
            (f, meta)
        })
        .collect()
}

/// Supported keys, in bit order.
fn supported() -> Vec<&'static str> {
    FlowKey::ALL
        .iter()
        .map(|k| k.name())
        .filter(|n| !matches!(*n, "rt-classid" | "sk-uid" | "sk-gid"))
        .collect()
}

fn configs() -> Vec<FlowSpec> {
    let spec = |keys: &[&str]| FlowSpec {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        ..FlowSpec::default()
    };
    let mut out = Vec::new();
    // Each key in map mode, with varied arithmetic.
    for (i, k) in supported().into_iter().enumerate() {
        let i = i as u32;
        out.push(FlowSpec {
            mask: (!i.is_multiple_of(3)).then_some(0x00ff_ff0fu32.rotate_left(i * 5)),
            xor: i
                .is_multiple_of(2)
                .then_some(0x1234_5678u32.wrapping_mul(i + 1)),
            rshift: Some(i % 32),
            addend: (i % 4 == 1).then_some(0xffff_fff0),
            divisor: [None, Some(0), Some(1), Some(7), Some(1000), Some(0x1_0000)]
                .get(i as usize % 6)
                .copied()
                .flatten(),
            baseclass: [None, Some(0x10), Some(0x0002_0001), Some(0xffff_ffff)]
                .get(i as usize % 4)
                .copied()
                .flatten(),
            ..spec(&[k])
        });
    }
    // The 5-tuple hash with a divisor, in a scrambled listing order.
    out.push(FlowSpec {
        mode: Some("hash".into()),
        divisor: Some(1024),
        baseclass: Some(0x0001_0100),
        seed: Some(0x5eed),
        ..spec(&["proto-dst", "dst", "proto", "src", "proto-src"])
    });
    // Every supported key hashed, no divisor.
    out.push(FlowSpec {
        mode: Some("hash".into()),
        seed: Some(0xffff_ffff),
        ..spec(&supported())
    });
    // rxhash (NIC hash or the software fallback) mapped and hashed.
    out.push(FlowSpec {
        divisor: Some(16),
        ..spec(&["rxhash"])
    });
    out.push(FlowSpec {
        mode: Some("hash".into()),
        seed: Some(0),
        divisor: Some(256),
        ..spec(&["rxhash", "iif"])
    });
    out
}

fn opt(v: Option<u32>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// An interpreter that can import scapy: the comparison is not optional.
fn python() -> String {
    let candidates: Vec<String> = match std::env::var("FLOW_ORACLE_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["python3".into(), "/usr/bin/python3".into()],
    };
    for p in &candidates {
        let ok = Command::new(p)
            .args(["-c", "import scapy.layers.inet"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return p.clone();
        }
    }
    panic!(
        "no Python with scapy among {candidates:?}: install python3-scapy (Debian) or point \
         FLOW_ORACLE_PYTHON at an interpreter that has it"
    );
}

#[test]
fn keys_rxhash_and_classids_match_the_scapy_oracle() {
    let frames = frames();
    let configs = configs();
    let classifiers: Vec<FlowClassifier> = configs
        .iter()
        .map(|c| FlowClassifier::with_rxhash_secret(c, HASHRND).unwrap())
        .collect();
    // One map classifier per key gives each key's value.
    let names = supported();
    let per_key: Vec<FlowClassifier> = names
        .iter()
        .map(|k| {
            let s = FlowSpec {
                keys: vec![k.to_string()],
                ..FlowSpec::default()
            };
            FlowClassifier::with_rxhash_secret(&s, HASHRND).unwrap()
        })
        .collect();

    let mut input = format!("hashrnd {HASHRND}\n");
    for c in &configs {
        writeln!(
            input,
            "config {} {} {} {} {} {} {} {} {}",
            c.mode.as_deref().unwrap_or("-"),
            c.keys.join(","),
            opt(c.mask),
            opt(c.xor),
            opt(c.rshift),
            opt(c.addend),
            opt(c.divisor),
            opt(c.baseclass),
            opt(c.seed)
        )
        .unwrap();
    }
    for (f, m) in &frames {
        let hex: String = f.iter().map(|b| format!("{b:02x}")).collect();
        let hex = if hex.is_empty() { "-".into() } else { hex };
        writeln!(
            input,
            "frame {} {} {} {} {hex}",
            m.iif,
            m.priority,
            m.mark,
            opt(m.rss)
        )
        .unwrap();
    }
    let path: PathBuf = std::env::temp_dir().join(format!(
        "flow_oracle_{}_{}.txt",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::write(&path, &input).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/flow_oracle.py");
    let out = Command::new(python()).arg(&script).arg(&path).output();
    let _ = std::fs::remove_file(&path);
    let out = out.expect("run flow_oracle.py");
    assert!(
        out.status.success(),
        "flow_oracle.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), frames.len());

    let parsed = Parsed::default();
    let mut mismatches = Vec::new();
    let (mut complete_count, mut rss_fallbacks) = (0, 0);
    for ((f, m), line) in frames.iter().zip(&lines) {
        let parts: Vec<Vec<u32>> = line
            .split('|')
            .map(|p| p.split_whitespace().map(|n| n.parse().unwrap()).collect())
            .collect();
        let (want_keys, want_hash, want_cids) = (&parts[0], &parts[1], &parts[2]);
        assert_eq!(want_keys.len(), FLOW_KEY_COUNT);
        let view = PacketView {
            data: f,
            frame_len: f.len() as u32,
            parsed: &parsed,
            dev: PortIndex(0),
            iif: PortIndex(m.iif),
            ingress_mac: [0; 6],
            rss_hash: m.rss,
            mark: m.mark,
            priority: m.priority,
            classid: 0,
            flowlabel: 0,
        };
        let mut problems = Vec::new();
        for (name, c) in names.iter().zip(&per_key) {
            let want = want_keys[FlowKey::from_name(name).unwrap() as usize];
            let (got, n) = c.keys_of(&view);
            if n != 1 || got[0] != want {
                problems.push(format!("{name}: ours {:#x}, oracle {want:#x}", got[0]));
            }
        }
        let sw = software_rxhash(f, HASHRND);
        if sw != want_hash[0] {
            problems.push(format!(
                "software rxhash: ours {sw:#x}, oracle {:#x}",
                want_hash[0]
            ));
        }
        complete_count += want_hash[1];
        rss_fallbacks += u32::from(m.rss.is_none() && want_hash[1] == 1);
        for (i, (c, want)) in classifiers.iter().zip(want_cids).enumerate() {
            let Verdict::Match(got) = c.classify(&view) else {
                panic!("flow classifiers always match");
            };
            if got != *want {
                problems.push(format!("config {i}: ours {got:#x}, oracle {want:#x}"));
            }
        }
        if !problems.is_empty() {
            let hex: String = f.iter().map(|b| format!("{b:02x}")).collect();
            mismatches.push(format!("frame {hex}:\n  {}", problems.join("\n  ")));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} frames differ; first ones:\n{}",
        mismatches.len(),
        frames.len(),
        mismatches[..mismatches.len().min(5)].join("\n")
    );
    // The comparison covered both outcomes of the dissector and the software fallback.
    assert!(
        complete_count > 1000 && complete_count < 2900,
        "{complete_count}"
    );
    assert!(rss_fallbacks > 500, "{rss_fallbacks}");
}
