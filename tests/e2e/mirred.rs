//! Mirror and redirect actions (tc act_mirred) end to end on net_pcap ports: the eight variants
//! (egress/ingress x mirror/redirect x port/group), groups never sending back to the port the
//! packet is on, the nest limit on a redirect loop, and targets that are down. Which frames must
//! appear in each output capture is decided with libpcap's filter engine on the input bytes; the
//! captures are compared frame by frame, and every run must end with all pools full again
//! (mirror copies included) and received + copies = sent + dropped.
use crate::util::*;
use pmd_glue::pcap;
use std::collections::BTreeMap;

/// The UDP frames of `input`, by libpcap's verdict.
fn udp_of(input: &[Vec<u8>]) -> Vec<bool> {
    let prog = pcap::compile("udp", 262_144, true).expect("libpcap compiles udp");
    input
        .iter()
        .map(|f| pcap::filter(&prog, f, f.len() as u32) != 0)
        .collect()
}

/// Traffic with UDP and non-UDP frames, IPv4 and IPv6, varied sizes.
fn traffic(t: &TestDir) -> Vec<Vec<u8>> {
    let g = t.gen(
        "in.pcap",
        &["--count=400", "--flows=24", "--size=imix", "--seed=41"],
    );
    g.frames
}

/// Ports a..e on net_pcap: `a` replays in.pcap, the others an empty capture; every port writes
/// out-NAME.pcap. `hooks[i]` is the YAML of port i's hooks (and state).
fn ports_yaml(t: &TestDir, hooks: [&str; 5]) -> String {
    write_pcap(&t.path("empty.pcap"), &[]);
    ["a", "b", "c", "d", "e"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let input = if i == 0 { "in.pcap" } else { "empty.pcap" };
            format!(
                "  - name: {name}\n    device: net_pcap{i}\n    rx_desc: 512\n    tx_desc: 512\n    args: rx_pcap={},tx_pcap={}\n{}",
                t.p(input),
                t.p(&format!("out-{name}.pcap")),
                hooks[i]
            )
        })
        .collect()
}

/// Reads out-NAME.pcap (empty when the port never opened it).
fn out(t: &TestDir, name: &str) -> Vec<Vec<u8>> {
    let p = t.path(&format!("out-{name}.pcap"));
    if p.exists() {
        read_pcap(&p)
    } else {
        Vec::new()
    }
}

/// The summary's actions, keyed "port/filter#index".
fn actions(r: &RunResult) -> BTreeMap<String, serde_json::Value> {
    r.summary["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                format!(
                    "{}/{}#{}",
                    a["port"].as_str().unwrap(),
                    a["filter"].as_str().unwrap(),
                    a["index"].as_str().unwrap()
                ),
                a.clone(),
            )
        })
        .collect()
}

const FORWARDING: &str =
    "forwarding:\n  - { from: a, to: b }\n  - { from: c, to: e }\n  - { from: d, to: e }\n";
const GROUP: &str = "groups:\n  - { name: g, ports: [a, c, d] }\n";

#[test]
fn the_eight_mirred_variants_deliver_exactly_what_tc_would() {
    #[derive(Debug, Clone, Copy)]
    enum Dir {
        Egress,
        Ingress,
    }
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Op {
        Mirror,
        Redirect,
    }
    for dir in [Dir::Egress, Dir::Ingress] {
        for op in [Op::Mirror, Op::Redirect] {
            for group in [false, true] {
                let what = format!("{dir:?} {op:?} to {}", if group { "group" } else { "port" });
                let t = TestDir::new(&format!(
                    "mirred-{}-{}-{}",
                    matches!(dir, Dir::Egress) as u8,
                    (op == Op::Mirror) as u8,
                    group as u8
                ));
                let input = traffic(&t);
                let udp = udp_of(&input);
                let target = if group { "group: g" } else { "port: c" };
                let a_hooks = format!(
                    "    ingress:\n      - {{ name: m, bpf: {{ filter: udp }}, actions: [{{ mirred: {{ direction: {}, action: {}, {target} }} }}] }}\n",
                    if matches!(dir, Dir::Egress) { "egress" } else { "ingress" },
                    if op == Op::Mirror { "mirror" } else { "redirect" },
                );
                let cfg = t.config_ports_yaml(
                    &ports_yaml(&t, [&a_hooks, "", "", "", ""]),
                    &format!("{FORWARDING}{GROUP}"),
                );
                let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
                r.assert_clean();
                r.assert_conservation();

                // What each output must hold, frame by frame, in order.
                let mut want: BTreeMap<&str, Vec<Vec<u8>>> = BTreeMap::new();
                for (f, &u) in input.iter().zip(&udp) {
                    let mut put = |p: &'static str| want.entry(p).or_default().push(f.clone());
                    if !u {
                        put("b");
                        continue;
                    }
                    // Copies (and a group redirect's earlier members) go first, on the spot.
                    let targets: &[&'static str] = if group { &["c", "d"] } else { &["c"] };
                    // A group redirect copies to every member but the last, which gets the
                    // packet itself: the outputs look the same as for a mirror, minus b.
                    for &tgt in targets {
                        match dir {
                            // Out of the target itself.
                            Dir::Egress => put(tgt),
                            // Into the target: its forwarding entry sends it to e.
                            Dir::Ingress => put("e"),
                        }
                    }
                    if op == Op::Mirror {
                        put("b");
                    }
                }
                for name in ["a", "b", "c", "d", "e"] {
                    assert_frames_eq(
                        &out(&t, name),
                        want.get(name).map_or(&[][..], |v| v.as_slice()),
                        &format!("{what}: output of {name}"),
                    );
                }
                let n_udp = udp.iter().filter(|&&u| u).count() as u64;
                assert!(n_udp > 50 && n_udp < input.len() as u64 - 50);
                let copies = match (op, group) {
                    (Op::Mirror, false) => n_udp,
                    (Op::Mirror, true) => 2 * n_udp,
                    (Op::Redirect, false) => 0,
                    (Op::Redirect, true) => n_udp,
                };
                assert_eq!(r.summary["mirror_copies"], copies, "{what}");
                let a = actions(&r);
                let m = &a["a/m#0"];
                assert_eq!(m["kind"], "mirred", "{what}");
                assert_eq!(m["packets"], n_udp, "{what}");
                assert_eq!(m["overlimits"], 0, "{what}");
                assert_eq!(m["drops"], 0, "{what}");
                assert!(drops_of(r.port("a")).is_empty(), "{what}");
            }
        }
    }
}

#[test]
fn a_redirect_loop_is_dropped_at_the_nest_limit_and_counted() {
    let t = TestDir::new("mirred-loop");
    let input = traffic(&t);
    let udp = udp_of(&input);
    let n_udp = udp.iter().filter(|&&u| u).count() as u64;
    // a sends UDP into c's ingress; c sends everything back into a's ingress: a loop.
    let a_hooks = "    ingress:\n      - { name: to-c, bpf: { filter: udp }, actions: [{ mirred: { direction: ingress, action: redirect, port: c } }] }\n";
    let c_hooks = "    ingress:\n      - { name: to-a, bpf: { filter: udp }, actions: [{ mirred: { direction: ingress, action: redirect, port: a } }] }\n";
    let cfg = t.config_ports_yaml(&ports_yaml(&t, [a_hooks, "", c_hooks, "", ""]), FORWARDING);
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    r.assert_conservation();
    let want_b: Vec<Vec<u8>> = input
        .iter()
        .zip(&udp)
        .filter(|(_, &u)| !u)
        .map(|(f, _)| f.clone())
        .collect();
    assert_frames_eq(&out(&t, "b"), &want_b, "non-UDP frames pass");
    assert!(out(&t, "e").is_empty());
    // Hops a->c, c->a, a->c, c->a run; the fifth redirect (a's, at depth 4) drops.
    assert_eq!(
        drops_of(r.port("a")),
        [("redirect_loop".to_owned(), n_udp)].into_iter().collect()
    );
    let a = actions(&r);
    assert_eq!(a["a/to-c#0"]["packets"], 3 * n_udp);
    assert_eq!(a["a/to-c#0"]["drops"], n_udp);
    assert_eq!(a["c/to-a#0"]["packets"], 2 * n_udp);
}

#[test]
fn a_down_target_costs_a_mirror_an_overlimit_and_a_redirect_its_packet() {
    for op in ["mirror", "redirect"] {
        let t = TestDir::new(&format!("mirred-down-{op}"));
        let input = traffic(&t);
        let udp = udp_of(&input);
        let n_udp = udp.iter().filter(|&&u| u).count() as u64;
        let a_hooks = format!(
            "    ingress:\n      - {{ name: m, bpf: {{ filter: udp }}, actions: [{{ mirred: {{ action: {op}, port: c }} }}] }}\n"
        );
        let cfg = t.config_ports_yaml(
            &ports_yaml(&t, [&a_hooks, "", "    state: down\n", "", ""]),
            FORWARDING,
        );
        let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
        r.assert_clean();
        r.assert_conservation();
        assert!(out(&t, "c").is_empty(), "{op}: nothing reaches a down port");
        let a = actions(&r);
        assert_eq!(a["a/m#0"]["packets"], n_udp, "{op}");
        assert_eq!(a["a/m#0"]["overlimits"], n_udp, "{op}");
        let want_b: Vec<Vec<u8>> = input
            .iter()
            .zip(&udp)
            .filter(|(_, &u)| op == "mirror" || !u)
            .map(|(f, _)| f.clone())
            .collect();
        assert_frames_eq(&out(&t, "b"), &want_b, &format!("{op}: output of b"));
        if op == "mirror" {
            assert!(drops_of(r.port("a")).is_empty());
            assert_eq!(a["a/m#0"]["drops"], 0);
        } else {
            assert_eq!(
                drops_of(r.port("a")),
                [("mirred_target_down".to_owned(), n_udp)]
                    .into_iter()
                    .collect()
            );
            assert_eq!(a["a/m#0"]["drops"], n_udp);
        }
    }
}
