//! Helpers for the end-to-end tests: temp directories, running the binary, reading captures.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_appliance");

/// Runs the appliance with `args` to completion.
pub fn appliance(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run appliance")
}

/// A scratch directory for one test; the DPDK file prefix is derived from its name.
pub struct TestDir {
    pub dir: tempfile::TempDir,
    pub name: String,
}

/// A capture made by `appliance gen` plus what each frame is.
pub struct Generated {
    pub frames: Vec<Vec<u8>>,
    /// Per frame: None when valid, else the drop reason label the appliance must count.
    pub kinds: Vec<Option<String>>,
}

impl Generated {
    pub fn valid_frames(&self) -> Vec<Vec<u8>> {
        self.frames
            .iter()
            .zip(&self.kinds)
            .filter(|(_, k)| k.is_none())
            .map(|(f, _)| f.clone())
            .collect()
    }
    pub fn malformed(&self) -> usize {
        self.kinds.iter().filter(|k| k.is_some()).count()
    }
    pub fn expected_drops(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for k in self.kinds.iter().flatten() {
            *m.entry(k.clone()).or_insert(0) += 1;
        }
        m
    }
}

impl TestDir {
    pub fn new(name: &str) -> Self {
        TestDir {
            dir: tempfile::tempdir().expect("tempdir"),
            name: name.to_owned(),
        }
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    pub fn p(&self, f: &str) -> String {
        self.path(f).display().to_string()
    }

    /// Runs `appliance gen --pcap <file> --kinds-out <file>.kinds <args>` and reads both back.
    pub fn gen(&self, file: &str, args: &[&str]) -> Generated {
        let pcap = self.path(file);
        let kinds = self.path(&format!("{file}.kinds"));
        let mut a = vec![
            "gen",
            "--pcap",
            pcap.to_str().unwrap(),
            "--kinds-out",
            kinds.to_str().unwrap(),
        ];
        a.extend_from_slice(args);
        let o = appliance(&a);
        assert!(
            o.status.success(),
            "gen failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let frames = read_pcap(&pcap);
        let kinds: Vec<Option<String>> = std::fs::read_to_string(&kinds)
            .unwrap()
            .lines()
            .map(|l| {
                let parts: Vec<&str> = l.split_whitespace().collect();
                match parts.as_slice() {
                    ["valid"] => None,
                    ["malformed", _kind, reason] => Some((*reason).to_owned()),
                    other => panic!("bad kinds line {other:?}"),
                }
            })
            .collect();
        assert_eq!(frames.len(), kinds.len());
        Generated { frames, kinds }
    }

    fn prefix(&self) -> String {
        format!("e2e-{}-{}", self.name, std::process::id())
    }

    /// Writes a configuration with the given ports (name, device, args) and forwarding YAML.
    pub fn config(
        &self,
        ports: &[(&str, &str, &str)],
        forwarding: &str,
        metrics: Option<&str>,
    ) -> PathBuf {
        self.config_full(ports, forwarding, metrics, "")
    }

    pub fn config_with_eal(
        &self,
        ports: &[(&str, &str, &str)],
        forwarding: &str,
        eal_extra: &str,
    ) -> PathBuf {
        self.config_full(ports, forwarding, None, eal_extra)
    }

    /// Port `in` replays `pcap` forever (net_pcap infinite_rx) and forwards to port `out`
    /// (net_null).
    pub fn config_replay_to_null(&self, pcap: &str, metrics: Option<&str>) -> PathBuf {
        let args = format!("rx_pcap={},infinite_rx=1", self.p(pcap));
        self.config(
            &[("in", "net_pcap0", &args), ("out", "net_null0", "")],
            "forwarding:\n  - { from: in, to: out }\n",
            metrics,
        )
    }

    /// Port `a` reads `input` and forwards to port `b` (whose own input is empty); outputs go
    /// to `out-a.pcap` and `out-b.pcap`.
    pub fn config_a_to_b(&self, input: &str) -> PathBuf {
        write_pcap(&self.path("empty.pcap"), &[]);
        let a = format!("rx_pcap={},tx_pcap={}", self.p(input), self.p("out-a.pcap"));
        let b = format!(
            "rx_pcap={},tx_pcap={}",
            self.p("empty.pcap"),
            self.p("out-b.pcap")
        );
        self.config(
            &[("a", "net_pcap0", &a), ("b", "net_pcap1", &b)],
            "forwarding:\n  - { from: a, to: b }\n",
            None,
        )
    }

    /// A configuration with an explicit `eal.lcores` (e.g. EAL `--lcores` syntax).
    pub fn config_full_lcores(
        &self,
        lcores: &str,
        ports: &[(&str, &str, &str)],
        forwarding: &str,
    ) -> PathBuf {
        let path = self.config_full(ports, forwarding, None, "");
        let y = std::fs::read_to_string(&path)
            .unwrap()
            .replace("lcores: \"0-1\"", &format!("lcores: \"{lcores}\""));
        std::fs::write(&path, y).unwrap();
        path
    }

    /// A configuration whose `ports:` section is `ports_yaml` verbatim (for filters), followed
    /// by `rest` (forwarding etc.); metrics off.
    pub fn config_ports_yaml(&self, ports_yaml: &str, rest: &str) -> PathBuf {
        let y = format!(
            "eal:\n  lcores: \"0-1\"\n  no_huge: true\n  memory_mb: 256\n  no_pci: true\n  file_prefix: {}\n  log_level: error\nmempool:\n  mbufs: 8191\n  cache: 128\nports:\n{ports_yaml}{rest}metrics:\n  listen: null\n",
            self.prefix()
        );
        let path = self.path("appliance.yaml");
        std::fs::write(&path, y).unwrap();
        path
    }

    fn config_full(
        &self,
        ports: &[(&str, &str, &str)],
        forwarding: &str,
        metrics: Option<&str>,
        eal_extra: &str,
    ) -> PathBuf {
        let mut y = format!(
            "eal:\n  lcores: \"0-1\"\n  no_huge: true\n  memory_mb: 256\n  no_pci: true\n  file_prefix: {}\n  log_level: error\n{eal_extra}mempool:\n  mbufs: 8191\n  cache: 128\nports:\n",
            self.prefix()
        );
        for (name, dev, args) in ports {
            y.push_str(&format!(
                "  - name: {name}\n    device: {dev}\n    rx_desc: 512\n    tx_desc: 512\n"
            ));
            if !args.is_empty() {
                y.push_str(&format!("    args: {args}\n"));
            }
        }
        y.push_str(forwarding);
        match metrics {
            Some(m) => y.push_str(&format!("metrics:\n  listen: \"{m}\"\n")),
            None => y.push_str("metrics:\n  listen: null\n"),
        }
        let path = self.path("appliance.yaml");
        std::fs::write(&path, y).unwrap();
        path
    }

    /// Runs to completion (with a generous timeout) and parses the JSON summary.
    pub fn run(&self, cfg: &Path, extra: &[&str]) -> RunResult {
        self.spawn(cfg, extra).finish()
    }

    pub fn spawn(&self, cfg: &Path, extra: &[&str]) -> Running {
        let summary = self.path("summary.json");
        let _ = std::fs::remove_file(&summary);
        let mut cmd = Command::new(BIN);
        cmd.args([
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--summary-json",
            summary.to_str().unwrap(),
        ])
        .args(extra);
        Running::start(cmd, summary)
    }

    /// Runs expecting failure: (exit code, stderr).
    pub fn run_expect_failure(&self, cfg: &Path) -> (Option<i32>, String) {
        let o = appliance(&[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--exit-when-idle-ms=300",
        ]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

/// A running appliance.
pub struct Running {
    child: Child,
    summary: PathBuf,
    started: Instant,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn start(mut cmd: Command, summary: PathBuf) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn appliance");
        let mut err = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        });
        Running {
            child,
            summary,
            started: Instant::now(),
            stderr: Some(reader),
        }
    }

    /// Waits until the appliance listens on its metrics socket (found through /proc, since the
    /// port was chosen by the kernel) and returns ADDR:PORT.
    pub fn wait_for_metrics_addr(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid = self.child.id();
        while Instant::now() < deadline {
            if let Some(addr) = listening_addr_of(pid) {
                return addr;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("appliance never opened its metrics socket");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    pub fn finish(mut self) -> RunResult {
        let deadline = self.started + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("appliance did not stop within 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let summary = std::fs::read_to_string(&self.summary)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(serde_json::Value::Null);
        RunResult {
            code: status.code(),
            stdout,
            stderr,
            summary,
        }
    }
}

/// A test that panics while the appliance runs does not leave it polling a core.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Finds a TCP socket in LISTEN state owned by `pid` (the metrics endpoint) via /proc.
pub fn listening_addr_of(pid: u32) -> Option<String> {
    let mut inodes = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if let Ok(t) = std::fs::read_link(e.path()) {
            let t = t.display().to_string();
            if let Some(i) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                inodes.push(i.to_owned());
            }
        }
    }
    let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    for line in tcp.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
            let (ip, port) = f[1].split_once(':')?;
            let ip = u32::from_str_radix(ip, 16).ok()?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = std::net::Ipv4Addr::from(ip.swap_bytes());
            return Some(format!("{ip}:{port}"));
        }
    }
    None
}

/// The outcome of a run.
pub struct RunResult {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub summary: serde_json::Value,
}

impl RunResult {
    /// The summary's entry of the SA named `name` (panics when there is none).
    pub fn sa(&self, name: &str) -> &serde_json::Value {
        self.summary["sas"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .unwrap_or_else(|| panic!("no SA {name:?} in the summary"))
    }

    /// Exit 0, a summary, no worker panic, every mbuf back in its pool.
    pub fn assert_clean(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.summary.is_object(),
            "no JSON summary; stderr:\n{}",
            self.stderr
        );
        assert_eq!(
            self.summary["leaked_mbufs"], 0,
            "mbufs leaked: {}",
            self.summary
        );
        for p in self.summary["mempools"].as_array().unwrap() {
            assert_eq!(p["in_use"], 0, "pool not full again: {p}");
            assert_eq!(p["available"], p["size"], "pool not full again: {p}");
        }
        assert!(self.summary["worker_panics"].as_array().unwrap().is_empty());
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
    }

    pub fn port(&self, name: &str) -> &serde_json::Value {
        self.summary["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("port {name}"))
    }

    /// Every packet received, and every mirror copy made, was sent or dropped with a counted
    /// reason (sent packets are counted on the egress port, drops on the port that dropped).
    pub fn assert_conservation(&self) {
        let ports = self.summary["ports"].as_array().unwrap();
        let rx: u64 = ports
            .iter()
            .map(|p| p["rx_packets"].as_u64().unwrap())
            .sum();
        let tx: u64 = ports
            .iter()
            .map(|p| p["tx_packets"].as_u64().unwrap())
            .sum();
        let drops: u64 = ports
            .iter()
            .map(|p| drops_of(p).values().sum::<u64>())
            .sum();
        let copies = self.summary["mirror_copies"].as_u64().unwrap();
        assert_eq!(
            rx + copies,
            tx + drops,
            "received {rx} + copies {copies} = sent {tx} + dropped {drops}: {}",
            self.summary
        );
        let dev_in: u64 = ports
            .iter()
            .map(|p| p["dev_ipackets"].as_u64().unwrap())
            .sum();
        assert_eq!(dev_in, rx, "device rx counters agree with the workers'");
    }
}

pub fn drops_of(p: &serde_json::Value) -> BTreeMap<String, u64> {
    p["drops"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts two frame lists are equal, reporting the first difference compactly.
pub fn assert_frames_eq(got: &[Vec<u8>], want: &[Vec<u8>], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            let at = g
                .iter()
                .zip(w.iter())
                .position(|(a, b)| a != b)
                .unwrap_or(g.len().min(w.len()));
            panic!(
                "{what}: frame {i} differs (lengths {} vs {}, first differing byte {at})",
                g.len(),
                w.len()
            );
        }
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: frame counts differ (got {}, want {})",
        got.len(),
        want.len()
    );
}

/// Frames of a pcap file (microsecond or nanosecond format).
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = pcap_file::pcap::PcapReader::new(f).expect("pcap header");
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.expect("pcap record");
        assert_eq!(p.orig_len as usize, p.data.len(), "no truncated captures");
        out.push(p.data.into_owned());
    }
    out
}

/// Writes frames to a pcap file.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = pcap_file::pcap::PcapWriter::new(f).unwrap();
    for (i, fr) in frames.iter().enumerate() {
        let pkt =
            pcap_file::pcap::PcapPacket::new(Duration::from_micros(i as u64), fr.len() as u32, fr);
        w.write_packet(&pkt).unwrap();
    }
}

/// Deterministic junk: random lengths 1..=160, random bytes, with a share of frames that look
/// like IPv4/IPv6 so the deeper parsers see garbage too.
pub fn garbage_frames(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut s = seed;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..n)
        .map(|_| {
            let len = 1 + (next() % 160) as usize;
            let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 14 {
                match next() % 3 {
                    0 => f[12..14].copy_from_slice(&[0x08, 0x00]),
                    1 => f[12..14].copy_from_slice(&[0x86, 0xdd]),
                    _ => {}
                }
                if len > 14 && f[12] == 0x08 {
                    f[14] = 0x45;
                } else if len > 14 && f[12] == 0x86 {
                    f[14] = 0x60 | (f[14] & 0x0f);
                }
            }
            f
        })
        .collect()
}

/// `tcpdump -r` reads the capture and sees `expect` packets.
pub fn tcpdump_reads(path: &Path, expect: usize) {
    let o = Command::new("tcpdump")
        .args(["-nn", "-r", path.to_str().unwrap()])
        .output()
        .expect("tcpdump is installed (deploy/install-deps.sh)");
    assert!(
        o.status.success(),
        "tcpdump: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), expect);
}

/// HTTP/1.0 GET on loopback; returns the body.
pub fn http_get(addr: &str, path: &str) -> String {
    http_get_accept(addr, path, "*/*")
}

/// HTTP/1.0 GET with an Accept header; returns the body.
pub fn http_get_accept(addr: &str, path: &str, accept: &str) -> String {
    let (status, body) = http_request(addr, "GET", path, &format!("Accept: {accept}\r\n"), 10)
        .expect("connect metrics");
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// HTTP/1.0 POST with an empty body on loopback; returns (status, body).
pub fn http_post(addr: &str, path: &str) -> (u16, String) {
    http_request(addr, "POST", path, "Content-Length: 0\r\n", 70).expect("connect admin")
}

/// One HTTP/1.0 request (`headers`: extra header lines, each ending in CRLF) with a read
/// timeout in seconds: (status, body), status 0 when the answer has no status line; `None`
/// when nothing accepts the connection.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    timeout_s: u64,
) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(timeout_s)))
        .unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Some((status, body.to_owned()))
}

/// The value of the first sample of `series` (name and labels exactly as exposed) in a
/// Prometheus text exposition.
pub fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .filter(|v| v.starts_with(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("series {series} missing from:\n{body}"))
}

/// `promtool check metrics` accepts the exposition.
pub fn promtool_check_metrics(body: &str) {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (deploy/install-deps.sh)");
    c.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs the embedded demo (fixed paths under /tmp/appliance-demo; metrics off to avoid a fixed
/// port clash with other tests).
pub fn run_demo() -> RunResult {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "run",
        "--metrics-listen",
        "none",
        "--summary-json",
        summary.to_str().unwrap(),
    ]);
    Running::start(cmd, summary).finish()
}
/// With `KEEP=1` in the environment, each test's directory (configs, captures, summaries) is
/// copied to `/tmp/keep-NAME` before it is removed, for looking into a failure.
impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP").is_some() {
            let to = format!("/tmp/keep-{}", self.name);
            let _ = std::fs::remove_dir_all(&to);
            let _ = Command::new("cp")
                .arg("-r")
                .arg(self.dir.path())
                .arg(&to)
                .status();
        }
    }
}
