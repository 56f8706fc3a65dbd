//! `GET /show/{ports,lcores,filters,actions,tunnels,sas}` on the admin (metrics) address: the
//! running appliance's state as JSON, read by the control thread from the same per-lcore
//! counters and device readers as `/metrics` (nothing on the data path). `appliance show` and
//! `appliance stats` are the clients.
//!
//! SAs are described by name, SPI, endpoints, algorithm and counters: never their keys. The
//! JSON is built field by field from the SA's configuration; nothing serialises an `SaConfig`.
use crate::metrics::Telemetry;
use pipelines::stats::{action_totals, filter_totals, port_totals};
use pipelines::DropReason;
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// What `GET /show/<what>` serves, or `None` for an unknown `what`.
pub fn show(t: &Telemetry, what: &str) -> Option<Value> {
    Some(match what {
        "ports" => ports(t),
        "lcores" => lcores(t),
        "filters" => filters(t),
        "actions" => actions(t),
        "tunnels" => tunnels(t),
        "sas" => sas(t),
        _ => return None,
    })
}

/// The names `/show/` accepts (flowlabels is served by the flow-label table's own handler).
pub const SHOWABLE: &[&str] = &[
    "ports",
    "lcores",
    "filters",
    "actions",
    "tunnels",
    "sas",
    "flowlabels",
];

fn ports(t: &Telemetry) -> Value {
    let totals = port_totals(&t.lcores, t.port_names.len());
    let ipsec = crate::reload::counted(&t.counted).ipsec;
    let tunnel_underlay = |i: usize| -> Option<usize> {
        let ip = ipsec.as_ref()?;
        ip.tunnels
            .iter()
            .find(|tn| usize::from(tn.port.0) == i)
            .map(|tn| usize::from(tn.underlay.0))
    };
    let rows: Vec<Value> = t
        .port_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let tot = &totals[i];
            let drops: serde_json::Map<String, Value> = DropReason::ALL
                .iter()
                .filter(|r| tot.drops[r.index()] > 0)
                .map(|r| (r.label().to_owned(), json!(tot.drops[r.index()])))
                .collect();
            // A tunnel's link is its underlay's.
            let link_from = tunnel_underlay(i).unwrap_or(i);
            let link = t
                .readers
                .get(link_from)
                .and_then(|r| r.as_ref())
                .and_then(|r| r.link().ok());
            let dev = t
                .readers
                .get(i)
                .and_then(|r| r.as_ref())
                .and_then(|r| r.stats().ok())
                .map(|s| {
                    json!({
                        "rx_packets": s.ipackets, "tx_packets": s.opackets,
                        "rx_bytes": s.ibytes, "tx_bytes": s.obytes,
                        "rx_missed": s.imissed, "rx_errors": s.ierrors,
                        "tx_errors": s.oerrors, "rx_nombuf": s.rx_nombuf,
                    })
                });
            json!({
                "name": name,
                "device": t.devices.get(i).cloned().unwrap_or_default(),
                "kind": if tunnel_underlay(i).is_some() { "tunnel" } else { "device" },
                "admin_up": t.admin_up.get(i).copied().unwrap_or(true),
                "link_up": link.map(|(up, _)| up),
                "link_speed_mbps": link.map(|(_, s)| s),
                "rx_packets": tot.rx_packets,
                "rx_bytes": tot.rx_bytes,
                "tx_packets": tot.tx_packets,
                "tx_bytes": tot.tx_bytes,
                "drops": drops,
                "dev": dev,
            })
        })
        .collect();
    json!({ "uptime_s": t.started.elapsed().as_secs_f64(), "ports": rows })
}

fn lcores(t: &Telemetry) -> Value {
    let rows: Vec<Value> = t
        .lcores
        .iter()
        .map(|l| {
            json!({
                "lcore": l.lcore,
                "polls": l.polls.get(),
                "busy_polls": l.busy_polls.get(),
                "packets": l.packets.get(),
                "mirror_copies": l.mirror_copies.get(),
            })
        })
        .collect();
    json!({ "uptime_s": t.started.elapsed().as_secs_f64(), "lcores": rows })
}

fn filters(t: &Telemetry) -> Value {
    let counted = crate::reload::counted(&t.counted);
    let ft = filter_totals(&t.lcores, counted.filter_slots);
    let rows: Vec<Value> = counted
        .filters
        .iter()
        .map(|f| (f, ft.get(f.slot).copied().unwrap_or_default()))
        .map(|(f, tot)| {
            json!({
                "port": f.port, "hook": f.hook, "name": f.name, "kind": f.kind,
                "engine": f.engine, "insns": f.insns,
                "matched_packets": tot.packets, "matched_bytes": tot.bytes,
                "last_use_ms": tot.last_use_ms,
            })
        })
        .collect();
    json!({ "filters": rows })
}

fn actions(t: &Telemetry) -> Value {
    let counted = crate::reload::counted(&t.counted);
    let at = action_totals(&t.lcores, counted.action_slots);
    let rows: Vec<Value> = counted
        .actions
        .iter()
        .map(|a| (a, at.get(a.slot).copied().unwrap_or_default()))
        .map(|(a, tot)| {
            json!({
                "port": a.port, "hook": a.hook, "filter": a.filter, "class": a.class,
                "index": a.index, "kind": a.kind, "detail": a.detail,
                "packets": tot.packets, "bytes": tot.bytes,
                "overlimits": tot.overlimits, "drops": tot.drops,
                "last_use_ms": tot.last_use_ms,
            })
        })
        .collect();
    json!({ "actions": rows })
}

fn tunnels(t: &Telemetry) -> Value {
    let Some(ip) = &crate::reload::counted(&t.counted).ipsec else {
        return json!({ "tunnels": [] });
    };
    let now = crate::run::unix_ms();
    let name = |p: pipelines::pipeline::PortIndex| t.port_names.get(usize::from(p.0)).cloned();
    let rows: Vec<Value> = ip
        .tunnels
        .iter()
        .map(|tn| {
            let mac = tn.next_hop_mac().map(|m| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            });
            json!({
                "name": tn.name,
                "underlay": name(tn.underlay),
                "local": Ipv4Addr::from(tn.local).to_string(),
                "remote": Ipv4Addr::from(tn.remote).to_string(),
                "ikey": tn.ikey,
                "okey": tn.okey,
                "mtu": tn.mtu,
                "underlay_mtu": tn.underlay_mtu,
                "path_mtu": tn.path_mtu(now),
                "next_hop": Ipv4Addr::from(tn.next_hop).to_string(),
                "next_hop_mac": mac,
                "static_next_hop": tn.static_next_hop,
                "out_sa": tn.out_sa.and_then(|i| ip.sas.get(usize::from(i))).map(|s| s.cfg.name.clone()),
            })
        })
        .collect();
    let c = crate::summary::TunnelSummary::of(&t.lcores);
    json!({ "tunnels": rows, "counters": c })
}

fn sas(t: &Telemetry) -> Value {
    let Some(ip) = &crate::reload::counted(&t.counted).ipsec else {
        return json!({ "sas": [] });
    };
    let sums = crate::tunnels::sa_summaries(ip);
    let rows: Vec<Value> = ip
        .sas
        .iter()
        .zip(&sums)
        .map(|(sa, s)| {
            let c = &sa.cfg;
            // Field by field: the configuration also holds the keys, which never leave.
            json!({
                "name": s.name,
                "spi": format!("{:#x}", s.spi),
                "direction": s.direction,
                "src": Ipv4Addr::from(c.src).to_string(),
                "dst": Ipv4Addr::from(c.dst).to_string(),
                "mark": c.mark,
                "algorithm": s.algorithm,
                "esn": c.esn,
                "replay_window": c.replay_window,
                "lifetime": {
                    "packets": c.lifetime.packets, "bytes": c.lifetime.bytes,
                    "soft_packets": c.lifetime.soft_packets, "soft_bytes": c.lifetime.soft_bytes,
                },
                "packets": s.packets,
                "bytes": s.bytes,
                "replay_drops": s.replay,
                "too_old_drops": s.too_old,
                "bad_icv_drops": s.bad_icv,
                "errors": s.errors,
                "seq": s.seq,
                "soft_expired": s.soft_expired,
                "expired": sa.expired() || sa.exhausted(),
            })
        })
        .collect();
    json!({ "sas": rows })
}
