//! The classic-BPF stage end to end: programs from all three sources (pcap-filter text, tc
//! bytecode, a `tcpdump -ddd` file), classid and direct-action modes, ingress and egress hooks.
//! What each output capture must hold is computed with libpcap's own filter engine
//! (`bpf_filter`) on the input bytes, not with the appliance's engines.
use crate::util::*;
use pmd_glue::pcap;

/// libpcap's verdict for a pcap-filter expression on one frame.
fn libpcap(expr: &str) -> impl Fn(&[u8]) -> bool {
    let prog = pcap::compile(expr, 262_144, true).expect("libpcap compiles the expression");
    move |f: &[u8]| pcap::filter(&prog, f, f.len() as u32) != 0
}

/// A direct-action program: VLAN-tagged frames get verdict 7 (redirect), others -1 (unspec).
const DA_VLAN_REDIRECT: &str = "# ldh [12]; jeq #0x8100; ret #7; ret #-1\n4\n40 0 0 12\n21 0 1 33024\n6 0 0 7\n6 0 0 4294967295\n";
/// tc bytecode of "ip proto 1" (hand-assembled: ldh [12]; jeq #0x800; ldb [23]; jeq #1).
const ICMP4_BYTECODE: &str = "6,40 0 0 12,21 0 3 2048,48 0 0 23,21 0 1 1,6 0 0 65535,6 0 0 0";

#[test]
fn bpf_filters_pass_drop_and_redirect_exactly_as_libpcap_decides() {
    bpf_case(true);
}

/// The same filters when their port forwards to a port without egress filters: the hook, one
/// fused chain, is asked about each received burst at once, and only the frames a filter
/// decides on walk it (`FilteredTarget::whole_frames`).
#[test]
fn a_hook_of_one_chain_answers_for_whole_bursts_exactly_as_libpcap_decides() {
    bpf_case(false);
}

/// Port `a`'s ingress filters, forwarding to `b`; with `egress`, `b` has an egress filter too.
fn bpf_case(egress: bool) {
    let t = TestDir::new(if egress { "cbpf" } else { "cbpf-burst" });
    let plain = t.gen(
        "plain.pcap",
        &["--count=1500", "--flows=48", "--size=imix", "--seed=31"],
    );
    let tagged = t.gen(
        "tagged.pcap",
        &[
            "--count=500",
            "--flows=12",
            "--size=64,300",
            "--vlan=7",
            "--seed=32",
        ],
    );
    // Interleave the two so every filter sees a mix.
    let mut input = Vec::new();
    let (mut p, mut q) = (plain.frames.iter(), tagged.frames.iter());
    loop {
        let a: Vec<_> = p.by_ref().take(3).cloned().collect();
        let b = q.next().cloned();
        if a.is_empty() && b.is_none() {
            break;
        }
        input.extend(a);
        input.extend(b);
    }
    write_pcap(&t.path("in.pcap"), &input);
    write_pcap(&t.path("empty.pcap"), &[]);
    std::fs::write(t.path("vlan-da.ddd"), DA_VLAN_REDIRECT).unwrap();
    let port = |name: &str, n: usize, input: &str, hooks: &str| {
        format!(
            "  - name: {name}\n    device: net_pcap{n}\n    rx_desc: 512\n    tx_desc: 512\n    args: rx_pcap={},tx_pcap={}\n{hooks}",
            t.p(input),
            t.p(&format!("out-{name}.pcap"))
        )
    };
    let ports = [
        port(
            "a",
            0,
            "in.pcap",
            &format!(
                "    ingress:\n      - {{ name: count-tcp, priority: 40, bpf: {{ filter: \"tcp\" }} }}\n      - {{ name: udp6, priority: 10, bpf: {{ filter: \"ip6 and udp\" }}, actions: [{{ redirect: c }}] }}\n      - {{ name: icmp4, priority: 20, bpf: {{ bytecode: \"{ICMP4_BYTECODE}\" }}, actions: [drop] }}\n      - {{ name: vlan, priority: 30, bpf: {{ ddd_file: vlan-da.ddd, direct_action: true, redirect: d }} }}\n"
            ),
        ),
        port(
            "b",
            1,
            "empty.pcap",
            if egress {
                "    egress:\n      - { name: small, bpf: { filter: \"less 100\" }, actions: [{ set_mark: 1 }, { redirect: c }] }\n"
            } else {
                ""
            },
        ),
        port("c", 2, "empty.pcap", ""),
        port("d", 3, "empty.pcap", ""),
    ]
    .concat();
    let cfg = t.config_ports_yaml(&ports, "forwarding:\n  - { from: a, to: b }\n");
    let r = t.run(&cfg, &["--exit-when-idle-ms=700"]);
    r.assert_clean();
    r.assert_conservation();

    // The expected fate of every frame, decided by libpcap.
    let (udp6, icmp4, tcp, small) = (
        libpcap("ip6 and udp"),
        libpcap("ip proto 1"),
        libpcap("tcp"),
        libpcap("less 100"),
    );
    let (mut want_b, mut want_c, mut want_d) = (vec![], vec![], vec![]);
    let mut hits = [0u64; 5]; // udp6, icmp4, vlan, count-tcp, small
    for f in &input {
        if udp6(f) {
            hits[0] += 1;
            want_c.push(f.clone());
        } else if icmp4(f) {
            hits[1] += 1;
        } else if f[12..14] == [0x81, 0x00] {
            hits[2] += 1;
            want_d.push(f.clone());
        } else {
            hits[3] += u64::from(tcp(f));
            if egress && small(f) {
                hits[4] += 1;
                want_c.push(f.clone());
            } else {
                want_b.push(f.clone());
            }
        }
    }
    assert!(
        hits.iter()
            .take(if egress { 5 } else { 4 })
            .all(|&h| h > 20),
        "every filter has work to do: {hits:?}"
    );
    assert_frames_eq(
        &read_pcap(&t.path("out-b.pcap")),
        &want_b,
        "b: passed, not small",
    );
    assert_frames_eq(
        &read_pcap(&t.path("out-c.pcap")),
        &want_c,
        "c: udp6 + small",
    );
    assert_frames_eq(
        &read_pcap(&t.path("out-d.pcap")),
        &want_d,
        "d: vlan (direct action)",
    );
    assert_eq!(
        drops_of(r.port("a")),
        [("action_drop".to_owned(), hits[1])].into_iter().collect(),
        "only the icmp4 filter drops"
    );
    let filters = r.summary["filters"].as_array().expect("filters in summary");
    let matched = |name: &str| {
        let f = filters
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("filter {name} in summary"));
        assert_eq!(f["kind"], "bpf");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                f["engine"], "rbpf-jit",
                "engine auto picks the JIT for {name}"
            );
        }
        f["matched_packets"].as_u64().unwrap()
    };
    assert_eq!(
        [
            matched("udp6"),
            matched("icmp4"),
            matched("vlan"),
            matched("count-tcp"),
            if egress { matched("small") } else { 0 }
        ],
        hits
    );
    // Run order is by priority, not file order.
    let order: Vec<&str> = filters
        .iter()
        .filter(|f| f["port"] == "a")
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["udp6", "icmp4", "vlan", "count-tcp"]);
}
