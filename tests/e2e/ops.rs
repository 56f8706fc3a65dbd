//! Operations: the shipped Prometheus rules and Grafana dashboard against a real scrape, a real
//! Prometheus server scraping a running appliance, and the admin API's live views
//! (`appliance stats`, `appliance show`).
use crate::util::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// Keys of the test SAs: no scrape or admin answer may contain them.
const OUT_KEY: &str = "c0ffee00112233445566778899aabbccddeeff01";
const IN_KEY: &str = "0badf00d112233445566778899aabbccddeeff02";
/// Frames in the input capture of `west`.
const FRAMES: u64 = 3000;

/// A configuration that gives every metric family of the appliance at least one series: cBPF
/// filters with mirror and redirect actions, a labelling port (flow-label table), a VTI with an
/// outbound and an inbound SA (the outbound one reaches its soft lifetime), malformed frames
/// (drops by reason). `west` reads a finite capture of [`FRAMES`] frames.
fn full_config(t: &TestDir, metrics: &str) -> PathBuf {
    t.gen(
        "in.pcap",
        &[
            &format!("--count={FRAMES}"),
            "--flows=32",
            "--ip=mix",
            "--proto=udp,tcp,icmp",
            "--size=64,300,1000",
            "--seed=91",
            "--malformed-permille=20",
        ],
    );
    write_pcap(&t.path("empty.pcap"), &[]);
    let dev = |n: &str, i: u32, rx: &str| {
        format!(
            "  - name: {n}\n    device: net_pcap{i}\n    args: rx_pcap={},tx_pcap={}\n",
            t.p(rx),
            t.p(&format!("out-{n}.pcap"))
        )
    };
    let ports = format!(
        "{}    ingress:\n      - {{ name: tcp, bpf: {{ filter: \"tcp\" }}, actions: [{{ mirror: tap }}] }}\n      - {{ name: icmp4, bpf: {{ filter: \"icmp\" }}, actions: [{{ redirect: vti0 }}] }}\n{}    flowlabel: fill\n{}{}  - name: vti0\n    tunnel: {{ local: 192.0.2.1, remote: 192.0.2.2, ikey: 7, okey: 9, underlay: wan, next_hop_mac: \"02:00:00:00:00:02\" }}\n",
        dev("west", 0, "in.pcap"),
        dev("east", 1, "empty.pcap"),
        dev("tap", 2, "empty.pcap"),
        dev("wan", 3, "empty.pcap"),
    ) + &dev("spare", 4, "empty.pcap")
        + "    state: down\n";
    let rest = format!(
        "flowlabels: {{ capacity: 1000, linger_s: 60 }}\ncrypto: {{ device: crypto_aesni_mb0 }}\nsas:\n  - {{ name: out, spi: 0x1000, direction: out, src: 192.0.2.1, dst: 192.0.2.2, mark: 9, algorithm: aes-gcm-128, key: \"{OUT_KEY}\", lifetime: {{ packets: 1000000, soft_packets: 5 }} }}\n  - {{ name: in, spi: 0x2000, direction: in, src: 192.0.2.2, dst: 192.0.2.1, mark: 7, algorithm: aes-gcm-128, key: \"{IN_KEY}\" }}\nforwarding:\n  - {{ from: west, to: east }}\n  - {{ from: east, to: west }}\n  - {{ from: vti0, to: east }}\n"
    );
    let cfg = t.config_ports_yaml(&ports, &rest);
    let y = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            "metrics:\n  listen: null\n",
            &format!("metrics:\n  listen: \"{metrics}\"\n"),
        )
        .replace("mbufs: 8191", "mbufs: 16383");
    std::fs::write(&cfg, y).unwrap();
    cfg
}

/// Starts the full configuration with metrics on an ephemeral loopback port; returns the
/// running appliance and its admin address once every input frame has been received.
fn start_full(t: &TestDir) -> (Running, String) {
    let cfg = full_config(t, "127.0.0.1:0");
    let mut child = t.spawn(&cfg, &["--duration=45"]);
    let addr = child.wait_for_metrics_addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = http_get(&addr, "/metrics");
        if series_value(&body, "appliance_port_rx_packets_total{port=\"west\"}")
            == Some(FRAMES as f64)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "input never fully received:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let transmit buffers drain (100 µs) and one flow-label collection (1 s) run.
    std::thread::sleep(Duration::from_millis(1200));
    (child, addr)
}

/// The value of one series (exact name and labels) in a classic-format exposition.
fn series_value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Metric families of an exposition, with the label names each one's series carry.
fn families(body: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in body.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap();
            out.entry(name.to_owned()).or_default();
        } else if !l.starts_with('#') && !l.is_empty() {
            let (name, labels) = match l.split_once('{') {
                Some((n, rest)) => (n, rest.rsplit_once('}').unwrap().0),
                None => (l.split_whitespace().next().unwrap(), ""),
            };
            let set = out.entry(name.to_owned()).or_default();
            // Label values may hold commas; names are what precedes `="`.
            for part in labels.split("\",") {
                if let Some((k, _)) = part.split_once("=\"") {
                    set.insert(k.trim_start_matches(',').to_owned());
                }
            }
        }
    }
    out
}

/// The `expr` of every rule in deploy/prometheus/rules.yml, with the names of recording rules.
fn rule_exprs() -> (Vec<String>, BTreeSet<String>) {
    let y = std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/rules.yml")).unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&y).expect("rules.yml is YAML");
    let mut exprs = Vec::new();
    let mut recorded = BTreeSet::new();
    for g in v["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            exprs.push(r["expr"].as_str().expect("expr").trim().to_owned());
            if let Some(n) = r["record"].as_str() {
                recorded.insert(n.to_owned());
            }
        }
    }
    (exprs, recorded)
}

/// Grafana's variables in an expression, replaced by what they stand for in a query: intervals
/// by a duration, selections by "any value".
fn substitute_grafana_vars(e: &str) -> String {
    let mut out = String::new();
    let mut rest = e;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(b) = after.strip_prefix('{') {
            let end = b.find('}').expect("closing brace");
            (&b[..end], &b[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push_str(if name.starts_with("__") { "1m" } else { ".+" });
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Every PromQL expression of the dashboard (panel targets and annotations), and the metrics
/// its template variables read (`label_values(METRIC..., label)`).
fn dashboard_exprs() -> (Vec<String>, Vec<String>) {
    let d: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/deploy/grafana/appliance.json")).unwrap(),
    )
    .expect("dashboard is JSON");
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(e) = m.get("expr").and_then(|e| e.as_str()) {
                    out.push(e.to_owned());
                }
                m.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&d["panels"], &mut exprs);
    walk(&d["annotations"], &mut exprs);
    let mut var_metrics = Vec::new();
    for var in d["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let q = var["query"]["query"].as_str().expect("variable query");
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.rsplit_once(','))
                .map(|(m, _)| m)
                .unwrap_or_else(|| panic!("variable query {q} is not label_values(...)"));
            var_metrics.push(substitute_grafana_vars(inner));
        }
    }
    let ds = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    (
        exprs.iter().map(|e| substitute_grafana_vars(e)).collect(),
        var_metrics,
    )
}

/// Parses `expr` (PromQL) and checks every selector names an exported metric (or a recording
/// rule, or Prometheus's own `up`) and matches only labels that metric has.
fn check_names(
    expr: &str,
    exported: &BTreeMap<String, BTreeSet<String>>,
    recorded: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    use promql_parser::parser::{Expr, VectorSelector};
    use promql_parser::util::{walk_expr, ExprVisitor};
    struct Names(Vec<VectorSelector>);
    impl ExprVisitor for Names {
        type Error = ();
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, ()> {
            match e {
                Expr::VectorSelector(v) => self.0.push(v.clone()),
                Expr::MatrixSelector(m) => self.0.push(m.vs.clone()),
                _ => {}
            }
            Ok(true)
        }
    }
    let ast = match promql_parser::parser::parse(expr) {
        Ok(a) => a,
        Err(e) => {
            problems.push(format!("{expr}: does not parse: {e}"));
            return;
        }
    };
    let mut names = Names(Vec::new());
    let _ = walk_expr(&mut names, &ast);
    if names.0.is_empty() {
        problems.push(format!("{expr}: selects no metric"));
    }
    // Labels Prometheus adds to every scraped series (target labels of prometheus.yml).
    let target_labels = ["instance", "job", "site", "__name__"];
    for vs in names.0 {
        let Some(name) = vs.name.clone() else {
            problems.push(format!("{expr}: a selector without a metric name"));
            continue;
        };
        let labels = if let Some(l) = exported.get(&name) {
            l
        } else if recorded.contains(&name) || name == "up" {
            continue;
        } else {
            problems.push(format!("{expr}: {name} is not exported by the appliance"));
            continue;
        };
        for m in &vs.matchers.matchers {
            if !labels.contains(&m.name) && !target_labels.contains(&m.name.as_str()) {
                problems.push(format!("{expr}: {name} has no label {:?}", m.name));
            }
        }
    }
}

#[test]
fn rules_and_dashboard_name_only_metrics_a_real_scrape_has() {
    let t = TestDir::new("ops-names");
    let (child, addr) = start_full(&t);
    let body = http_get(&addr, "/metrics");
    child.signal("TERM");
    let r = child.finish();
    r.assert_clean();
    promtool_check_metrics(&body);
    for k in [OUT_KEY, IN_KEY] {
        assert!(!body.contains(k), "a key leaked into /metrics");
    }
    // appliance_port_admin_up follows ports[].state (tunnels included).
    for (port, up) in [("west", 1.0), ("vti0", 1.0), ("spare", 0.0)] {
        let s = format!("appliance_port_admin_up{{port=\"{port}\"}}");
        assert_eq!(series_value(&body, &s), Some(up), "{s}");
    }
    // A port never started has no link: the port-down alert must rely on admin_up to stay
    // silent about it (checked through Prometheus's alerts in the next test).
    assert_eq!(
        series_value(&body, "appliance_port_link_up{port=\"spare\"}"),
        Some(0.0)
    );
    let exported = families(&body);
    // The full configuration gives every family the appliance has a series, so a missing
    // series below means a name or label the appliance does not export.
    for f in exported.keys() {
        assert!(
            body.lines()
                .any(|l| l.starts_with(&format!("{f}{{")) || l.starts_with(&format!("{f} "))),
            "family {f} has no series in the full configuration"
        );
    }
    let (rexprs, recorded) = rule_exprs();
    let (dexprs, var_metrics) = dashboard_exprs();
    assert!(
        rexprs.len() >= 15 && dexprs.len() >= 40,
        "{} rules, {} panels' exprs",
        rexprs.len(),
        dexprs.len()
    );
    let mut problems = Vec::new();
    for e in rexprs.iter().chain(&dexprs).chain(&var_metrics) {
        check_names(e, &exported, &recorded, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The checker itself catches what it should (so it cannot pass vacuously).
    let mut caught = Vec::new();
    for bad in [
        "rate(appliance_port_rx_packet_total[1m])",
        "appliance_port_link_up{prot=\"west\"}",
        "sum(rate(appliance_sa_packets_total{sa=\"out\"}[5m])) +",
        "{__name__=~\"appliance_.*\"}",
    ] {
        check_names(bad, &exported, &recorded, &mut caught);
    }
    assert_eq!(caught.len(), 4, "{caught:?}");
}

/// A Prometheus server of the Debian package, on a free loopback port, with its own storage;
/// killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with the shipped deploy/prometheus/prometheus.yml and rules.yml, the
    /// target replaced by `target` and the intervals shortened to 1 s.
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let shipped =
            std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/prometheus.yml")).unwrap();
        let rules = std::fs::canonicalize(format!("{ROOT}/deploy/prometheus/rules.yml")).unwrap();
        let cfg = shipped
            .replace("127.0.0.1:9091", target)
            .replace("- rules.yml", &format!("- {}", rules.display()))
            .replace("scrape_interval: 5s", "scrape_interval: 1s")
            .replace("scrape_timeout: 4s", "scrape_timeout: 1s")
            .replace("evaluation_interval: 5s", "evaluation_interval: 1s");
        assert!(cfg.contains(target) && cfg.contains("scrape_interval: 1s"));
        let cfg_path = dir.path().join("prometheus.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed (deploy/install-deps.sh)");
        let mut p = Prometheus {
            child,
            addr: String::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.addr.is_empty() {
            assert!(
                Instant::now() < deadline,
                "prometheus never listened: {}",
                p.log()
            );
            assert!(
                p.child.try_wait().unwrap().is_none(),
                "prometheus exited: {}",
                p.log()
            );
            if let Some(a) = listening_addr_of(p.child.id()) {
                p.addr = a;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        while p.get("/-/ready").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "prometheus never ready: {}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET on the HTTP API: (status, body).
    fn get(&self, path: &str) -> (u16, String) {
        http_request(&self.addr, "GET", path, "", 10).unwrap_or((0, String::new()))
    }

    /// An instant query: the result vector (panics on a query error, naming the query).
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let (status, body) = self.get(&format!("/api/v1/query?query={}", urlencode(q)));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert!(
            status == 200 && v["status"] == "success",
            "query {q}: HTTP {status}: {body}"
        );
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query expected to return exactly one series.
    fn scalar(&self, q: &str) -> f64 {
        let r = self.query(q);
        assert_eq!(r.len(), 1, "query {q}: {r:?}");
        r[0]["value"][1].as_str().unwrap().parse().unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_real_prometheus_scrapes_the_appliance_and_its_rules_evaluate() {
    let started = Instant::now();
    let t = TestDir::new("ops-prometheus");
    let (child, addr) = start_full(&t);
    let prom = Prometheus::start(&addr);

    // Wait until Prometheus has scraped the finished input (the appliance is idle by now, so
    // every later scrape sees the same counters) and its rules have run on it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let west_rx = "appliance_port_rx_packets_total{job=\"appliance\",port=\"west\"}";
    loop {
        let r = prom.query(west_rx);
        let v: Option<f64> = r
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok());
        let firing =
            prom.query("ALERTS{alertname=\"ApplianceSaSoftExpired\",alertstate=\"firing\"}");
        let recorded = prom.query("appliance:lcore_busy:ratio_rate1m");
        if v == Some(FRAMES as f64) && !firing.is_empty() && !recorded.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never saw the run: {r:?}\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(prom.scalar("up{job=\"appliance\"}"), 1.0);

    // Every rule evaluated without error on the real series (a bad vector match or a
    // many-to-many join only fails at evaluation).
    let (_, rules) = prom.get("/api/v1/rules");
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let mut n = 0;
    for g in rules["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            n += 1;
            assert_eq!(r["health"], "ok", "rule {}: {}", r["name"], r["lastError"]);
        }
    }
    assert_eq!(n, rule_exprs().0.len(), "every rule of rules.yml loaded");
    // The alert fired is the outbound SA's soft lifetime; nothing else fires on this run.
    let (_, alerts) = prom.get("/api/v1/alerts");
    let alerts: serde_json::Value = serde_json::from_str(&alerts).unwrap();
    let firing: Vec<String> = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{}/{}/{}",
                a["labels"]["alertname"].as_str().unwrap(),
                a["labels"]["sa"].as_str().unwrap_or("-"),
                a["state"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(firing, ["ApplianceSaSoftExpired/out/firing"], "{alerts}");
    // The recording rule of lcore busy share exists and is a share.
    let busy = prom.scalar("appliance:lcore_busy:ratio_rate1m{lcore=\"1\"}");
    assert!((0.0..=1.0).contains(&busy), "busy {busy}");

    // Every dashboard expression runs on Prometheus and shows data for this configuration
    // (those that keep only non-zero rates excepted: the input was over before the first
    // scrape, so rates are 0 here).
    for e in dashboard_exprs().0 {
        let r = prom.query(&e);
        assert!(
            !r.is_empty() || e.ends_with("> 0"),
            "dashboard query returns nothing: {e}"
        );
    }

    // Values through Prometheus, then the appliance's own summary after it stops.
    let q = |m: &str, port: &str| prom.scalar(&format!("{m}{{job=\"appliance\",port=\"{port}\"}}"));
    let mut seen = BTreeMap::new();
    for port in ["west", "east", "tap", "wan", "vti0"] {
        for m in [
            "appliance_port_rx_packets_total",
            "appliance_port_rx_bytes_total",
            "appliance_port_tx_packets_total",
            "appliance_port_tx_bytes_total",
        ] {
            seen.insert((port, m), q(m, port));
        }
    }
    let drops: BTreeMap<String, f64> = prom
        .query("appliance_port_drops_total{port=\"west\"} > 0")
        .iter()
        .map(|s| {
            (
                s["metric"]["reason"].as_str().unwrap().to_owned(),
                s["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let tcp = prom.scalar("appliance_filter_matched_packets_total{filter=\"tcp\"}");
    let sa_out = prom.scalar("appliance_sa_packets_total{sa=\"out\"}");
    let live = prom.scalar("appliance_flowlabel_table_live");
    drop(prom);

    child.signal("TERM");
    let r = child.finish();
    r.assert_clean();
    // Physical ports (the VTI's packets are counted again on its underlay): received + mirror
    // copies = sent + dropped.
    let (mut rx, mut tx, mut dropped) = (0, 0, 0);
    for p in ["west", "east", "tap", "wan", "vti0"] {
        if p != "vti0" {
            rx += r.port(p)["rx_packets"].as_u64().unwrap();
            tx += r.port(p)["tx_packets"].as_u64().unwrap();
        }
        dropped += drops_of(r.port(p)).values().sum::<u64>();
    }
    assert_eq!(
        rx + r.summary["mirror_copies"].as_u64().unwrap(),
        tx + dropped
    );
    for ((port, m), v) in &seen {
        let key = m
            .trim_start_matches("appliance_port_")
            .trim_end_matches("_total");
        assert_eq!(*v, r.port(port)[key].as_f64().unwrap(), "{m} of {port}");
    }
    assert_eq!(
        seen[&("west", "appliance_port_rx_packets_total")],
        FRAMES as f64
    );
    let want: BTreeMap<String, f64> = drops_of(r.port("west"))
        .into_iter()
        .map(|(k, v)| (k, v as f64))
        .collect();
    assert!(!want.is_empty(), "malformed frames were dropped");
    assert_eq!(drops, want, "drops by reason");
    let f = r.summary["filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "tcp")
        .unwrap();
    assert_eq!(tcp, f["matched_packets"].as_f64().unwrap());
    let s = r.sa("out");
    assert_eq!(sa_out, s["packets"].as_f64().unwrap());
    assert!(sa_out > 5.0 && s["soft_expired"] == true);
    assert!(live > 0.0, "labelled flows are live");
    assert_eq!(live, r.summary["flowlabels"]["live"].as_f64().unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// Runs `appliance ARGS` against `admin`: (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let o = appliance(args);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn show_lists_ports_filters_actions_tunnels_sas_and_flowlabels_without_keys() {
    let t = TestDir::new("ops-show");
    let (child, addr) = start_full(&t);
    let mut shown = BTreeMap::new();
    let mut everything = String::new();
    for what in [
        "ports",
        "lcores",
        "filters",
        "actions",
        "tunnels",
        "sas",
        "flowlabels",
    ] {
        let (code, out, err) = cli(&["show", what, "--admin", &addr, "--json"]);
        assert_eq!(code, Some(0), "show {what} --json: {err}");
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("show {what}: {e}: {out}"));
        let (code, table, err) = cli(&["show", what, "--admin", &addr]);
        assert_eq!(code, Some(0), "show {what}: {err}");
        assert!(table.lines().count() >= 2, "show {what}:\n{table}");
        everything.push_str(&out);
        everything.push_str(&table);
        shown.insert(what, (v, table));
    }
    let (status_404, _) = {
        let (code, _, err) = cli(&["show", "sas", "--admin", "127.0.0.1:1"]);
        assert_eq!(code, Some(1));
        assert!(
            err.contains("cannot reach the admin address 127.0.0.1:1"),
            "{err}"
        );
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET /show/keys HTTP/1.0\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        (r.contains(" 404 "), r)
    };
    assert!(status_404, "unknown /show/ is 404");
    child.signal("TERM");
    let r = child.finish();
    r.assert_clean();

    // No key material, in any form, in anything the admin API said, nor in the log and the
    // summary.
    everything.push_str(&r.stderr);
    everything.push_str(&r.stdout);
    everything.push_str(&r.summary.to_string());
    for k in [OUT_KEY, IN_KEY] {
        for piece in [k, &k[..16], &k.to_uppercase()[..16]] {
            assert!(!everything.contains(piece), "key material leaked: {piece}");
        }
    }
    for field in ["\"key\"", "\"auth_key\"", "\"keys\"", "\"salt\""] {
        assert!(!everything.contains(field), "a {field} field");
    }

    let find = |what: &str, list: &str, field: &str, name: &str| -> serde_json::Value {
        shown[what].0[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x[field] == name)
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .clone()
    };
    // Ports equal the summary (the input was over before the first request).
    for p in ["west", "east", "tap", "wan", "vti0", "spare"] {
        let got = find("ports", "ports", "name", p);
        for k in ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"] {
            assert_eq!(got[k], r.port(p)[k], "{p} {k}");
        }
        let want: serde_json::Map<String, serde_json::Value> = drops_of(r.port(p))
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        assert_eq!(got["drops"], serde_json::Value::Object(want), "{p} drops");
    }
    let spare = find("ports", "ports", "name", "spare");
    assert_eq!(
        (spare["admin_up"].clone(), spare["link_up"].clone()),
        (false.into(), false.into())
    );
    let west = find("ports", "ports", "name", "west");
    assert_eq!(west["device"], "net_pcap0");
    assert_eq!(west["link_up"], true);
    assert_eq!(find("ports", "ports", "name", "vti0")["kind"], "tunnel");
    assert_eq!(west["dev"]["rx_packets"], FRAMES);
    // Filters and actions.
    let tcp = find("filters", "filters", "name", "tcp");
    let want = r.summary["filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "tcp")
        .unwrap();
    assert_eq!(tcp["matched_packets"], want["matched_packets"]);
    assert!(tcp["matched_packets"].as_u64().unwrap() > 0);
    let mirror = find("actions", "actions", "filter", "tcp");
    assert_eq!(mirror["detail"], "egress mirror to tap");
    assert_eq!(mirror["packets"], r.summary["mirror_copies"]);
    // Tunnels and SAs.
    let vti = find("tunnels", "tunnels", "name", "vti0");
    assert_eq!(vti["local"], "192.0.2.1");
    assert_eq!(vti["underlay"], "wan");
    assert_eq!(vti["out_sa"], "out");
    assert_eq!(vti["next_hop_mac"], "02:00:00:00:00:02");
    let out = find("sas", "sas", "name", "out");
    let want = r.sa("out");
    assert_eq!(out["spi"], "0x1000");
    assert_eq!(out["packets"], want["packets"]);
    assert_eq!(out["soft_expired"], true);
    assert_eq!(out["lifetime"]["soft_packets"], 5);
    assert_eq!(shown["sas"].0["sas"].as_array().unwrap().len(), 2);
    let sa_table = &shown["sas"].1;
    assert!(
        sa_table.starts_with("sa ") && sa_table.contains("0x2000"),
        "{sa_table}"
    );
    // Flow labels: the live flows of the labelling port.
    let fl = &shown["flowlabels"].0;
    assert_eq!(fl["capacity"], 1000);
    assert!(fl["live"].as_u64().unwrap() > 0, "{fl}");
}

#[test]
fn stats_shows_live_rates_drops_by_reason_and_busy_lcores() {
    let t = TestDir::new("ops-stats");
    t.gen(
        "in.pcap",
        &["--count=200", "--seed=93", "--malformed-permille=50"],
    );
    let cfg = t.config_replay_to_null("in.pcap", Some("127.0.0.1:0"));
    let mut child = t.spawn(&cfg, &["--duration=20"]);
    let addr = child.wait_for_metrics_addr();
    let started = Instant::now();
    let (code, out, err) = cli(&[
        "stats",
        "--admin",
        &addr,
        "--interval",
        "0.5",
        "--count",
        "3",
    ]);
    let took = started.elapsed();
    child.signal("TERM");
    let r = child.finish();
    r.assert_clean();
    assert_eq!(code, Some(0), "{err}");
    // Not a terminal: one block per refresh, no escape sequences.
    assert_eq!(out.matches("appliance stats  ").count(), 3, "{out}");
    assert!(!out.contains('\x1b'));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let num = |s: &str| -> f64 {
        let (n, m) = match s.chars().last().unwrap() {
            'k' => (&s[..s.len() - 1], 1e3),
            'M' => (&s[..s.len() - 1], 1e6),
            'G' => (&s[..s.len() - 1], 1e9),
            _ => (s, 1.0),
        };
        n.parse::<f64>().unwrap() * m
    };
    let last = out.rsplit("appliance stats  ").next().unwrap();
    let row = |name: &str| -> Vec<String> {
        last.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} row:\n{last}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // port link rx-pps rx-bps tx-pps tx-bps rx-packets tx-packets drops drops/s
    let inp = row("in");
    assert_eq!(inp[1], "up");
    let rx_pps = num(&inp[2]);
    assert!(rx_pps > 1000.0, "{last}");
    // Bits per second over packets per second: the capture's mean frame size in bits, within
    // the rounding of the display.
    let bits_per_frame = num(&inp[3]) / rx_pps;
    assert!(
        (8.0 * 60.0..8.0 * 1600.0).contains(&bits_per_frame),
        "{last}"
    );
    assert!(num(&inp[9]) > 0.0, "drops/s: {last}");
    assert!(last.contains("drops/s by reason: "), "{last}");
    let outp = row("out");
    assert!(num(&outp[4]) > 1000.0, "{last}");
    // One worker lcore, receiving on every poll round it can.
    let lcore = row("1");
    let busy: f64 = lcore[1].trim_end_matches('%').parse().unwrap();
    assert!(busy > 0.0 && busy <= 100.0, "{last}");
    // Rates agree with the run: at most what the appliance received over the whole run.
    let total_rx = r.port("in")["rx_packets"].as_f64().unwrap();
    assert!(
        rx_pps * 0.5 <= total_rx,
        "{rx_pps} pps vs {total_rx} received"
    );
    let (code, _, err) = cli(&["stats", "--admin", &addr, "--interval", "0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--interval"), "{err}");
}

#[test]
fn the_kubernetes_entrypoint_renders_a_config_the_appliance_accepts() {
    let t = TestDir::new("ops-k8s");
    let cm: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{ROOT}/deploy/k8s/configmap.yaml")).unwrap(),
    )
    .expect("configmap.yaml is YAML");
    std::fs::write(
        t.path("appliance.yaml"),
        cm["data"]["appliance.yaml"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        t.path("entrypoint.sh"),
        cm["data"]["entrypoint.sh"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        t.path("status"),
        "Name:\tsh\nCpus_allowed:\tf0\nCpus_allowed_list:\t4-6,12\n",
    )
    .unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new("/bin/sh");
        c.arg(t.path("entrypoint.sh"))
            .env("RENDER_ONLY", "1")
            .env("CONFIG", t.path("appliance.yaml"))
            .env("PROC_STATUS", t.path("status"))
            .env("RUN_DIR", t.path("run"))
            .env_remove("PCIDEVICE_INTEL_COM_SRIOV_DPDK_WAN")
            .env_remove("PCIDEVICE_INTEL_COM_SRIOV_DPDK_LAN");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // What the SR-IOV device plugin sets (a list when a pod gets several VFs of a pool).
    let o = run(&[
        (
            "PCIDEVICE_INTEL_COM_SRIOV_DPDK_WAN",
            "0000:3b:02.0,0000:3b:02.1",
        ),
        ("PCIDEVICE_INTEL_COM_SRIOV_DPDK_LAN", "0000:5e:0a.3"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rendered = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let y = std::fs::read_to_string(&rendered).unwrap();
    assert!(y.contains("lcores: \"0@4,1@5,2@6,3@12\""), "{y}");
    assert!(
        y.contains("device: \"0000:3b:02.0\"") && y.contains("device: \"0000:5e:0a.3\""),
        "{y}"
    );
    assert!(!y.contains("@PCI_") && !y.contains("@LCORES@"), "{y}");
    let (code, out, err) = cli(&["check-config", &rendered]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("2 ports") && out.contains("worker lcores [1, 2, 3]"),
        "{out}"
    );
    // Without the device plugin's variable: exit 2, naming it.
    let o = run(&[("PCIDEVICE_INTEL_COM_SRIOV_DPDK_LAN", "0000:5e:0a.3")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("PCIDEVICE_INTEL_COM_SRIOV_DPDK_WAN is not set"));
    let cfg: serde_json::Value = serde_saphyr::from_str(&y).unwrap();
    assert!(
        cfg["run"]["watch_config_s"].as_f64().is_some(),
        "the appliance watches the rendered file: {y}"
    );
}

/// The entrypoint renders the mounted configuration again while the appliance runs (a
/// ConfigMap edit reaches the file the appliance watches), replacing it by rename; the loop
/// ends with the appliance. A stand-in for the appliance records its arguments and runs until
/// told to stop.
#[test]
fn the_kubernetes_entrypoint_renders_configmap_changes_while_the_appliance_runs() {
    let t = TestDir::new("ops-k8s-watch");
    let cm: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{ROOT}/deploy/k8s/configmap.yaml")).unwrap(),
    )
    .unwrap();
    let template = cm["data"]["appliance.yaml"].as_str().unwrap().to_owned();
    std::fs::write(t.path("appliance.yaml"), &template).unwrap();
    let entrypoint = t.path("entrypoint.sh");
    std::fs::write(&entrypoint, cm["data"]["entrypoint.sh"].as_str().unwrap()).unwrap();
    std::fs::write(t.path("status"), "Cpus_allowed_list:\t2-3\n").unwrap();
    let stub = t.path("appliance-stub.sh");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\necho \"$@\" > {args}\nwhile [ ! -e {stop} ]; do sleep 0.05; done\n",
            args = t.p("args"),
            stop = t.p("stop")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut child = Command::new("/bin/sh")
        .arg(&entrypoint)
        .env("CONFIG", t.path("appliance.yaml"))
        .env("PROC_STATUS", t.path("status"))
        .env("RUN_DIR", t.path("run"))
        .env("PCIDEVICE_INTEL_COM_SRIOV_DPDK_WAN", "0000:3b:02.0")
        .env("PCIDEVICE_INTEL_COM_SRIOV_DPDK_LAN", "0000:5e:0a.3")
        .env("APPLIANCE", &stub)
        .env("RENDER_EVERY_S", "0.2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rendered = t.path("run").join("appliance.yaml");
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("the appliance started", &|| t.path("args").exists());
    assert_eq!(
        std::fs::read_to_string(t.path("args")).unwrap().trim(),
        format!("run --config {}", rendered.display())
    );
    let read = || std::fs::read_to_string(&rendered).unwrap_or_default();
    assert!(read().contains("device: \"0000:3b:02.0\""));
    // The ConfigMap changes (the kubelet swaps the file by rename): rendered again, with this
    // node's values.
    let edited = template.replace("{ from: lan, to: wan }", "{ from: lan, action: drop }");
    assert_ne!(edited, template);
    std::fs::write(t.path("appliance.yaml.new"), &edited).unwrap();
    std::fs::rename(t.path("appliance.yaml.new"), t.path("appliance.yaml")).unwrap();
    wait_for("the change rendered", &|| {
        read().contains("{ from: lan, action: drop }")
    });
    let y = read();
    assert!(
        y.contains("device: \"0000:5e:0a.3\"") && y.contains("lcores: \"0@2,1@3\""),
        "{y}"
    );
    let (code, _, err) = cli(&["check-config", rendered.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let shells = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c).contains(entrypoint.to_str().unwrap())
                })
            })
            .count()
    };
    // (A child forked for sed, mv or sleep shows the same command line until it execs.)
    assert!(shells() >= 1, "the render loop runs beside the appliance");
    // The appliance exits: so does the render loop (the entrypoint's shells are gone).
    std::fs::write(t.path("stop"), "").unwrap();
    assert!(child.wait().unwrap().success());
    wait_for("the render loop ended", &|| shells() == 0);
}
