//! The appliance binary: `run`, `check-config`, `gen`, `flowlabels`, `stats`, `show`.
#![forbid(unsafe_code)]

mod config;
mod filters;
mod gen;
mod live;
mod metrics;
mod reload;
mod run;
mod show;
mod summary;
mod tunnel_stage;
mod tunnels;
mod txgen;
mod worker;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The embedded default configuration: the demo on virtual devices (also shipped as
/// deploy/examples/demo.yaml).
const DEMO_YAML: &str = include_str!("../../deploy/examples/demo.yaml");
/// Where the demo configuration reads and writes its captures.
const DEMO_DIR: &str = "/tmp/appliance-demo";

#[derive(Parser, Debug)]
#[command(
    name = "appliance",
    version,
    about = "DPDK packet appliance: poll-mode run-to-completion pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the appliance. Without --config: the demo on net_pcap virtual ports with generated
    /// traffic in /tmp/appliance-demo.
    Run(RunArgs),
    /// Validate a configuration file without starting DPDK.
    CheckConfig {
        /// The YAML configuration.
        file: PathBuf,
    },
    /// Generate traffic (testpmd txonly/flowgen style) into a pcap or onto a port.
    Gen(GenArgs),
    /// Print a running appliance's IPv6 flow-label table (like /proc/net/ip6_flowlabel), read
    /// from its admin address.
    Flowlabels(FlowlabelsArgs),
    /// A live view of a running appliance, like testpmd's port statistics: per-port packet and
    /// bit rates, drops by reason, per-lcore busy share, refreshed every interval.
    Stats(StatsArgs),
    /// Print a running appliance's ports, lcores, filters, actions, tunnels, SAs (never keys)
    /// or flow labels, read from its admin address.
    Show(ShowArgs),
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// The appliance's admin (metrics) address.
    #[arg(long, default_value = "127.0.0.1:9091")]
    admin: String,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Stop after this many refreshes (0: until interrupted).
    #[arg(long, default_value_t = 0)]
    count: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ShowWhat {
    Ports,
    Lcores,
    Filters,
    Actions,
    Tunnels,
    Sas,
    Flowlabels,
}

#[derive(Args, Debug)]
struct ShowArgs {
    /// What to show.
    #[arg(value_enum)]
    what: ShowWhat,
    /// The appliance's admin (metrics) address.
    #[arg(long, default_value = "127.0.0.1:9091")]
    admin: String,
    /// JSON (as GET /show/WHAT answers) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct FlowlabelsArgs {
    /// The appliance's admin (metrics) address.
    #[arg(long, default_value = "127.0.0.1:9091")]
    admin: String,
    /// At most this many flows.
    #[arg(long, default_value_t = metrics::FLOWLABELS_DEFAULT_LIMIT)]
    limit: usize,
    /// JSON instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The YAML configuration (default: the embedded demo).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Write the end-of-run summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Override run.exit_when_idle_ms.
    #[arg(long)]
    exit_when_idle_ms: Option<u64>,
    /// Override run.duration_s.
    #[arg(long)]
    duration: Option<f64>,
    /// Override metrics.listen ("none" disables the endpoint).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Override run.watch_config_s: look at the --config file every S seconds and reload when
    /// its content changed.
    #[arg(long, value_name = "S")]
    watch_config: Option<f64>,
}

#[derive(Args, Debug)]
struct GenArgs {
    #[command(flatten)]
    opts: gen::GenOptions,
    /// Frames to generate (transmit mode: 0 = until interrupted).
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Write the frames to this pcap file.
    #[arg(long, conflicts_with = "port", required_unless_present = "port")]
    pcap: Option<PathBuf>,
    /// Transmit on this port (a name from --config's ports) through DPDK.
    #[arg(long, requires = "config")]
    port: Option<String>,
    /// Configuration whose EAL and port settings the transmit mode uses.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Frames per second: transmit pacing, or pcap timestamp spacing. Default: as fast as
    /// possible (pcap: 1 µs apart).
    #[arg(long)]
    rate_pps: Option<f64>,
    /// With --pcap: also write one line per frame, `valid` or `malformed <kind> <drop reason>`,
    /// the ground truth tests compare the appliance's counters with.
    #[arg(long, requires = "pcap")]
    kinds_out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::CheckConfig { file } => match config::load(&file) {
            Ok(cfg) => {
                println!(
                    "{}: OK ({} ports, {} forwarding entries, worker lcores {:?})",
                    file.display(),
                    cfg.ports.len(),
                    cfg.forwarding.len(),
                    cfg.worker_lcores()
                );
                0
            }
            Err(e) => {
                eprintln!("{}: config error: {e}", file.display());
                run::exit::CONFIG
            }
        },
        Command::Run(a) => cmd_run(a),
        Command::Gen(a) => cmd_gen(a),
        Command::Flowlabels(a) => cmd_flowlabels(&a),
        Command::Stats(a) => live::stats(&a.admin, a.interval, a.count),
        Command::Show(a) => {
            let what = match a.what {
                ShowWhat::Ports => "ports",
                ShowWhat::Lcores => "lcores",
                ShowWhat::Filters => "filters",
                ShowWhat::Actions => "actions",
                ShowWhat::Tunnels => "tunnels",
                ShowWhat::Sas => "sas",
                ShowWhat::Flowlabels => "flowlabels",
            };
            live::show(&a.admin, what, a.json)
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn cmd_run(a: RunArgs) -> i32 {
    if a.config.is_none() && a.watch_config.is_some() {
        eprintln!(
            "appliance: --watch-config needs --config FILE: the embedded default has no file to watch"
        );
        return run::exit::CONFIG;
    }
    let mut loaded_hash = None;
    let (mut cfg, source) = match &a.config {
        Some(path) => match config::read(path).and_then(|b| {
            loaded_hash = Some(reload::content_hash(&b));
            config::load_text(path, &b)
        }) {
            Ok(c) => (c, path.display().to_string()),
            Err(e) => {
                eprintln!("{}: config error: {e}", path.display());
                return run::exit::CONFIG;
            }
        },
        None => match prepare_demo() {
            Ok(c) => (c, "embedded demo (deploy/examples/demo.yaml)".to_owned()),
            Err(e) => {
                eprintln!("appliance: demo: {e}");
                return run::exit::CONFIG;
            }
        },
    };
    let reload_source = reload::Source {
        path: a.config.clone(),
        overrides: reload::Overrides {
            metrics_listen: a.metrics_listen.map(|l| (l != "none").then_some(l)),
            exit_when_idle_ms: a.exit_when_idle_ms,
            duration_s: a.duration,
            watch_config_s: a.watch_config,
        },
        loaded_hash,
    };
    reload_source.overrides.apply(&mut cfg);
    if let Err(e) = cfg.validate() {
        eprintln!("appliance: config error (after command-line overrides): {e}");
        return run::exit::CONFIG;
    }

    eprintln!("appliance: configuration {source}");
    match run::run(&cfg, reload_source) {
        Ok((summary, code)) => {
            print!("{}", summary.render());
            if let Some(p) = a.summary_json {
                let json = serde_json::to_string_pretty(&summary).unwrap_or_default();
                if let Err(e) = std::fs::write(&p, json) {
                    eprintln!("appliance: cannot write {}: {e}", p.display());
                    return code.max(1);
                }
            }
            code
        }
        Err(e) => {
            eprintln!("appliance: {}", e.message);
            e.code
        }
    }
}

/// `appliance flowlabels`: GET /flowlabels from the admin address and print it.
fn cmd_flowlabels(a: &FlowlabelsArgs) -> i32 {
    let path = format!(
        "/flowlabels?limit={}{}",
        a.limit,
        if a.json { "&format=json" } else { "" }
    );
    match admin_get(&a.admin, &path) {
        Ok((200, body)) => {
            print!("{body}");
            if a.json {
                println!();
            }
            0
        }
        Ok((status, body)) => {
            eprintln!(
                "appliance: {} answered {status}: {}",
                a.admin,
                body.trim_end()
            );
            1
        }
        Err(e) => {
            eprintln!("appliance: cannot reach the admin address {}: {e}", a.admin);
            1
        }
    }
}

/// A plain HTTP/1.0 GET on the admin address: status and body.
pub(crate) fn admin_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    use std::net::ToSocketAddrs as _;
    let sa = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, std::time::Duration::from_secs(3))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// Generates the demo's input captures and returns the demo configuration.
fn prepare_demo() -> Result<config::Config, String> {
    std::fs::create_dir_all(DEMO_DIR).map_err(|e| format!("cannot create {DEMO_DIR}: {e}"))?;
    let cfg = config::parse(DEMO_YAML).map_err(|e| format!("embedded demo config: {e}"))?;
    for (file, seed, count, malformed) in [
        ("in-west.pcap", 1u64, 20_000u64, 5u16),
        ("in-east.pcap", 2, 10_000, 5),
    ] {
        let opts = demo_gen_options(seed, malformed)?;
        let path = PathBuf::from(DEMO_DIR).join(file);
        let report = gen::write_pcap(&opts, count, None, &path)
            .map_err(|e| format!("generating {}: {e}", path.display()))?;
        eprintln!(
            "appliance: demo input {}: {} frames ({} malformed on purpose), {} flows, IPv4+IPv6, TCP/UDP/ICMP, IMIX sizes",
            path.display(),
            report.frames,
            report.frames - report.valid,
            opts.flows
        );
    }
    Ok(cfg)
}

/// Replays the generator (deterministic) and writes each frame's kind.
fn write_kinds(
    opts: &gen::GenOptions,
    count: u64,
    path: &std::path::Path,
) -> Result<(), gen::GenError> {
    use std::io::Write as _;
    let mut g = gen::FrameGenerator::new(opts)?;
    let mut buf = Vec::new();
    let mut out = String::with_capacity(count as usize * 8);
    for _ in 0..count {
        match g.next_frame(&mut buf) {
            gen::FrameKind::Valid { .. } => out.push_str("valid\n"),
            gen::FrameKind::Malformed(k) => {
                out.push_str(&format!(
                    "malformed {} {}\n",
                    k.label(),
                    k.expected_drop().label()
                ));
            }
        }
    }
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(out.as_bytes()))
        .map_err(|source| gen::GenError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Parses generator options the way the command line would (so defaults stay in one place).
#[derive(Parser, Debug)]
struct GenOptionsOnly {
    #[command(flatten)]
    opts: gen::GenOptions,
}

fn demo_gen_options(seed: u64, malformed_permille: u16) -> Result<gen::GenOptions, String> {
    let args = [
        "gen".to_owned(),
        "--flows=64".into(),
        "--size=imix".into(),
        format!("--seed={seed}"),
        format!("--malformed-permille={malformed_permille}"),
    ];
    GenOptionsOnly::try_parse_from(args)
        .map(|g| g.opts)
        .map_err(|e| e.to_string())
}

fn cmd_gen(a: GenArgs) -> i32 {
    if let Some(path) = &a.pcap {
        let t = std::time::Instant::now();
        return match gen::write_pcap(&a.opts, a.count, a.rate_pps, path).and_then(|r| {
            if let Some(k) = &a.kinds_out {
                write_kinds(&a.opts, a.count, k)?;
            }
            Ok(r)
        }) {
            Ok(r) => {
                let secs = t.elapsed().as_secs_f64().max(1e-9);
                println!(
                    "wrote {}: {} frames ({} valid, {} malformed), {} bytes, {} flows; {:.2} Mframes/s",
                    path.display(),
                    r.frames,
                    r.valid,
                    r.frames - r.valid,
                    r.bytes,
                    a.opts.flows,
                    r.frames as f64 / secs / 1e6
                );
                0
            }
            Err(e) => {
                eprintln!("appliance gen: {e}");
                2
            }
        };
    }
    let (Some(cfg_path), Some(port)) = (&a.config, &a.port) else {
        eprintln!("appliance gen: give --pcap FILE, or --config FILE --port NAME");
        return 2;
    };
    let cfg = match config::load(cfg_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: config error: {e}", cfg_path.display());
            return run::exit::CONFIG;
        }
    };
    txgen::transmit(&cfg, port, &a.opts, a.count, a.rate_pps)
}
