//! Clients of a running appliance's admin address: `appliance stats` (a live view like
//! testpmd's port statistics) and `appliance show ...` (tables or JSON of `GET /show/...`).
use serde_json::Value;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// GETs `path` and parses the JSON body; errors say what failed.
fn get_json(admin: &str, path: &str) -> Result<Value, String> {
    match crate::admin_get(admin, path) {
        Ok((200, body)) => {
            serde_json::from_str(&body).map_err(|e| format!("{admin}{path}: not JSON: {e}"))
        }
        Ok((status, body)) => Err(format!("{admin} answered {status}: {}", body.trim_end())),
        Err(e) => Err(format!("cannot reach the admin address {admin}: {e}")),
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// 1234567 -> "1.23M" (SI, for rates).
pub fn si(v: f64) -> String {
    let (d, unit) = if v >= 1e9 {
        (1e9, "G")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    if unit.is_empty() {
        format!("{v:.0}")
    } else {
        format!("{:.2}{unit}", v / d)
    }
}

/// One sample of the counters `stats` shows.
struct Sample {
    at: Instant,
    ports: Value,
    lcores: Value,
}

fn sample(admin: &str) -> Result<Sample, String> {
    let ports = get_json(admin, "/show/ports")?;
    let lcores = get_json(admin, "/show/lcores")?;
    Ok(Sample {
        at: Instant::now(),
        ports,
        lcores,
    })
}

/// Renders the view of the rates between two samples.
fn render_stats(admin: &str, a: &Sample, b: &Sample) -> String {
    let dt = (b.at - a.at).as_secs_f64().max(1e-6);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "appliance stats  {admin}  uptime {:.0} s  interval {dt:.2} s",
        b.ports["uptime_s"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(
        o,
        "{:<12} {:<5} {:>10} {:>10} {:>10} {:>10} {:>14} {:>14} {:>10} {:>10}",
        "port",
        "link",
        "rx-pps",
        "rx-bps",
        "tx-pps",
        "tx-bps",
        "rx-packets",
        "tx-packets",
        "drops",
        "drops/s"
    );
    let empty = Vec::new();
    let old = a.ports["ports"].as_array().unwrap_or(&empty);
    for p in b.ports["ports"].as_array().unwrap_or(&empty) {
        let name = s(&p["name"]);
        let prev = old.iter().find(|q| q["name"] == p["name"]);
        let rate = |k: &str| {
            let before = prev.map_or(0, |q| u(&q[k]));
            u(&p[k]).saturating_sub(before) as f64 / dt
        };
        let drops_of = |v: Option<&Value>| -> Vec<(String, u64)> {
            v.and_then(|v| v["drops"].as_object())
                .map(|m| m.iter().map(|(k, v)| (k.clone(), u(v))).collect())
                .unwrap_or_default()
        };
        let now_drops = drops_of(Some(p));
        let before_drops = drops_of(prev);
        let total: u64 = now_drops.iter().map(|(_, v)| v).sum();
        let per_reason: Vec<(String, f64)> = now_drops
            .iter()
            .map(|(r, v)| {
                let b = before_drops
                    .iter()
                    .find(|(q, _)| q == r)
                    .map_or(0, |(_, v)| *v);
                (r.clone(), v.saturating_sub(b) as f64 / dt)
            })
            .filter(|(_, r)| *r > 0.0)
            .collect();
        let link = match (p["admin_up"].as_bool(), p["link_up"].as_bool()) {
            (Some(false), _) => "admin",
            (_, Some(true)) => "up",
            (_, Some(false)) => "down",
            _ => "-",
        };
        let _ = writeln!(
            o,
            "{:<12} {:<5} {:>10} {:>10} {:>10} {:>10} {:>14} {:>14} {:>10} {:>10}",
            name,
            link,
            si(rate("rx_packets")),
            si(8.0 * rate("rx_bytes")),
            si(rate("tx_packets")),
            si(8.0 * rate("tx_bytes")),
            u(&p["rx_packets"]),
            u(&p["tx_packets"]),
            total,
            si(per_reason.iter().map(|(_, r)| r).sum()),
        );
        if !per_reason.is_empty() {
            let list: Vec<String> = per_reason
                .iter()
                .map(|(r, v)| format!("{r} {}", si(*v)))
                .collect();
            let _ = writeln!(o, "{:<12}   drops/s by reason: {}", "", list.join(", "));
        }
    }
    let _ = writeln!(
        o,
        "{:<6} {:>7} {:>10} {:>14}",
        "lcore", "busy%", "pps", "packets"
    );
    let old = a.lcores["lcores"].as_array().unwrap_or(&empty);
    for l in b.lcores["lcores"].as_array().unwrap_or(&empty) {
        let prev = old.iter().find(|q| q["lcore"] == l["lcore"]);
        let d = |k: &str| u(&l[k]).saturating_sub(prev.map_or(0, |q| u(&q[k])));
        let polls = d("polls");
        let busy = if polls == 0 {
            0.0
        } else {
            100.0 * d("busy_polls") as f64 / polls as f64
        };
        let _ = writeln!(
            o,
            "{:<6} {:>6.1}% {:>10} {:>14}",
            s(&l["lcore"]),
            busy,
            si(d("packets") as f64 / dt),
            u(&l["packets"])
        );
    }
    o
}

/// `appliance stats`: refreshes every `interval` seconds, `count` times (0: until interrupted).
pub fn stats(admin: &str, interval: f64, count: u64) -> i32 {
    use std::io::{IsTerminal as _, Write as _};
    if !(interval.is_finite() && (0.05..=3600.0).contains(&interval)) {
        eprintln!("appliance stats: --interval {interval}: allowed 0.05..=3600 seconds");
        return 2;
    }
    let tty = std::io::stdout().is_terminal();
    let mut prev = match sample(admin) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("appliance stats: {e}");
            return 1;
        }
    };
    let mut shown = 0u64;
    while count == 0 || shown < count {
        std::thread::sleep(Duration::from_secs_f64(interval));
        let next = match sample(admin) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("appliance stats: {e}");
                return 1;
            }
        };
        let view = render_stats(admin, &prev, &next);
        let mut out = std::io::stdout().lock();
        // A terminal gets a refreshed screen; a pipe gets one block per interval.
        let _ = if tty {
            write!(out, "\x1b[H\x1b[2J{view}")
        } else {
            writeln!(out, "{view}")
        };
        let _ = out.flush();
        prev = next;
        shown += 1;
    }
    0
}

/// Left-aligned columns wide enough for every cell.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let mut o = String::new();
    let line = |cells: Vec<&str>, o: &mut String| {
        let l: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        let _ = writeln!(o, "{}", l.join("  ").trim_end());
    };
    line(head.to_vec(), &mut o);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut o);
    }
    o
}

/// A table of the JSON objects `rows`, one column per (header, key).
fn keyed_table(rows: &[Value], cols: &[(&str, &str)]) -> String {
    let head: Vec<&str> = cols.iter().map(|c| c.0).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|(_, k)| s(&r[*k])).collect())
        .collect();
    table(&head, &body)
}

/// Renders one `/show/<what>` answer as a table.
pub fn render_show(what: &str, v: &Value) -> String {
    let empty = Vec::new();
    let rows_of = |k: &str| v[k].as_array().unwrap_or(&empty).clone();
    let cells = |r: &Value, keys: &[&str]| keys.iter().map(|k| s(&r[*k])).collect::<Vec<_>>();
    match what {
        "ports" => {
            let rows: Vec<Vec<String>> = rows_of("ports")
                .iter()
                .map(|p| {
                    let drops: u64 = p["drops"]
                        .as_object()
                        .map_or(0, |m| m.values().map(u).sum());
                    let mut c = cells(
                        p,
                        &[
                            "name",
                            "kind",
                            "device",
                            "admin_up",
                            "link_up",
                            "link_speed_mbps",
                            "rx_packets",
                            "rx_bytes",
                            "tx_packets",
                            "tx_bytes",
                        ],
                    );
                    c.push(drops.to_string());
                    c
                })
                .collect();
            table(
                &[
                    "port",
                    "kind",
                    "device",
                    "admin-up",
                    "link-up",
                    "speed",
                    "rx-packets",
                    "rx-bytes",
                    "tx-packets",
                    "tx-bytes",
                    "drops",
                ],
                &rows,
            )
        }
        "lcores" => keyed_table(
            &rows_of("lcores"),
            &[
                ("lcore", "lcore"),
                ("polls", "polls"),
                ("busy-polls", "busy_polls"),
                ("packets", "packets"),
                ("mirror-copies", "mirror_copies"),
            ],
        ),
        "filters" => keyed_table(
            &rows_of("filters"),
            &[
                ("port", "port"),
                ("hook", "hook"),
                ("filter", "name"),
                ("kind", "kind"),
                ("engine", "engine"),
                ("insns", "insns"),
                ("matched", "matched_packets"),
                ("bytes", "matched_bytes"),
            ],
        ),
        "actions" => keyed_table(
            &rows_of("actions"),
            &[
                ("port", "port"),
                ("hook", "hook"),
                ("filter", "filter"),
                ("class", "class"),
                ("#", "index"),
                ("kind", "kind"),
                ("detail", "detail"),
                ("packets", "packets"),
                ("bytes", "bytes"),
                ("overlimits", "overlimits"),
                ("drops", "drops"),
            ],
        ),
        "tunnels" => keyed_table(
            &rows_of("tunnels"),
            &[
                ("tunnel", "name"),
                ("underlay", "underlay"),
                ("local", "local"),
                ("remote", "remote"),
                ("ikey", "ikey"),
                ("okey", "okey"),
                ("mtu", "mtu"),
                ("path-mtu", "path_mtu"),
                ("next-hop", "next_hop"),
                ("mac", "next_hop_mac"),
                ("out-sa", "out_sa"),
            ],
        ),
        "sas" => keyed_table(
            &rows_of("sas"),
            &[
                ("sa", "name"),
                ("dir", "direction"),
                ("spi", "spi"),
                ("src", "src"),
                ("dst", "dst"),
                ("mark", "mark"),
                ("algorithm", "algorithm"),
                ("esn", "esn"),
                ("window", "replay_window"),
                ("packets", "packets"),
                ("bytes", "bytes"),
                ("replay", "replay_drops"),
                ("too-old", "too_old_drops"),
                ("bad-icv", "bad_icv_drops"),
                ("errors", "errors"),
                ("seq", "seq"),
                ("soft", "soft_expired"),
                ("expired", "expired"),
            ],
        ),
        _ => format!("{v}\n"),
    }
}

/// `appliance show WHAT [--json]`.
pub fn show(admin: &str, what: &str, json: bool) -> i32 {
    if what == "flowlabels" && !json {
        // The table /flowlabels already renders (like /proc/net/ip6_flowlabel).
        return match crate::admin_get(admin, "/flowlabels") {
            Ok((200, body)) => {
                print!("{body}");
                0
            }
            Ok((status, body)) => {
                eprintln!("appliance: {admin} answered {status}: {}", body.trim_end());
                1
            }
            Err(e) => {
                eprintln!("appliance: cannot reach the admin address {admin}: {e}");
                1
            }
        };
    }
    match get_json(admin, &format!("/show/{what}")) {
        Ok(v) if json => {
            println!("{v}");
            0
        }
        Ok(v) => {
            print!("{}", render_show(what, &v));
            0
        }
        Err(e) => {
            eprintln!("appliance: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn si_prefixes() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1500.0), "1.50k");
        assert_eq!(si(14_880_952.0), "14.88M");
        assert_eq!(si(10e9), "10.00G");
    }

    #[test]
    fn stats_rates_are_deltas_over_the_interval() {
        let t0 = Instant::now();
        let a = Sample {
            at: t0,
            ports: json!({"uptime_s": 1.0, "ports": [{"name": "west", "admin_up": true, "link_up": true,
                "rx_packets": 1000, "rx_bytes": 64000, "tx_packets": 0, "tx_bytes": 0, "drops": {"runt": 5}}]}),
            lcores: json!({"lcores": [{"lcore": 1, "polls": 100, "busy_polls": 10, "packets": 1000}]}),
        };
        let b = Sample {
            at: t0 + Duration::from_secs(2),
            ports: json!({"uptime_s": 3.0, "ports": [{"name": "west", "admin_up": true, "link_up": true,
                "rx_packets": 3000, "rx_bytes": 192000, "tx_packets": 1000, "tx_bytes": 64000,
                "drops": {"runt": 25, "udp_bad_length": 2}}]}),
            lcores: json!({"lcores": [{"lcore": 1, "polls": 300, "busy_polls": 110, "packets": 3000}]}),
        };
        let v = render_stats("x", &a, &b);
        let west: Vec<&str> = v
            .lines()
            .find(|l| l.starts_with("west"))
            .unwrap()
            .split_whitespace()
            .collect();
        // rx 2000 packets / 2 s, 128000 bytes * 8 / 2 s; tx 500 pps, 256 kbit/s; 27 drops,
        // 11 per second.
        assert_eq!(
            west,
            ["west", "up", "1.00k", "512.00k", "500", "256.00k", "3000", "1000", "27", "11"]
        );
        assert!(
            v.contains("drops/s by reason: runt 10, udp_bad_length 1"),
            "{v}"
        );
        let lcore: Vec<&str> = v
            .lines()
            .find(|l| l.starts_with("1 "))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(lcore, ["1", "50.0%", "1.00k", "3000"]);
    }
}
