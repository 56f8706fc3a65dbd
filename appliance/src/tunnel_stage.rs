//! The worker's tunnel stage: ESP encapsulation into VTIs and decapsulation out of them, with the
//! cipher on a DPDK crypto device (lookaside, asynchronous). Packets go to the device in bursts
//! and come back in the same run-to-completion loop; the lcore never waits for it.
//!
//! Per worker: one crypto queue pair, a CSPRNG for CBC IVs, ARP and ICMP rate limits. Shared
//! (through the generation): the SA table (SAs with their sequence numbers, replay windows and
//! per-worker lanes of counters and reserved numbers; tunnels; one device session per SA).
//!
//! A reload publishes a new SA table with the new generation. The worker adopts it at a burst
//! boundary; operations it enqueued with the previous table carry that table's id in their tag
//! and complete against it, so an SA index always means the SA it meant when the packet went
//! in. The previous table stays with the worker until the last of them is back (the control
//! thread, which keeps every replaced table, then frees it and the sessions only it used).
use crate::worker::TxPorts;
use pipelines::ipsec::esp::{self, EncapParams};
use pipelines::ipsec::replay::{ReplayError, ReplayLock, ReplayWindow};
use pipelines::ipsec::{arp, icmp, Ipsec, Sa, SeqError};
use pipelines::pipeline::PortIndex;
use pipelines::stats::StatsWriter;
use pipelines::wire::{ipproto, Parsed, L3};
use pipelines::DropReason;
use pmd_glue::cryptodev::{CryptoQueue, CryptoStatus, Session};
use pmd_glue::{Mbuf, Mempool};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use std::sync::Arc;

/// A completed crypto operation: the packet, its status and the stage's tag.
pub type Completion = (Mbuf, CryptoStatus, u128);

/// The device session of each SA of one table (indexed like [`Ipsec::sas`]), attached to the
/// table as its backend value.
#[derive(Debug, Default)]
pub struct SaSessions(pub Vec<Session>);

/// SA tables a worker can have operations in flight with at once (the tag's table id is 3
/// bits): the current one and up to seven it replaced.
const TABLES: usize = 8;

/// ARP requests for an unresolved next hop: at most one per tunnel per this many ms per lcore.
const ARP_INTERVAL_MS: u64 = 1000;

/// ICMP errors a worker sends per second, and in a burst: Linux's `icmp_msgs_per_sec` and
/// `icmp_msgs_burst` defaults (a token bucket, as `icmp_global_allow`).
const ICMP_PER_SEC: u64 = 1000;
const ICMP_BURST: u64 = 50;

/// A token bucket for ICMP errors (one worker's, so no shared state).
#[derive(Debug, Default)]
struct IcmpBucket {
    tokens: u64,
    stamp_ms: u64,
}

impl IcmpBucket {
    /// Whether one more error may be sent at `now_ms`; takes a token if so.
    fn allow(&mut self, now_ms: u64) -> bool {
        let refill = now_ms.saturating_sub(self.stamp_ms) * ICMP_PER_SEC / 1000;
        if refill > 0 {
            self.tokens = (self.tokens + refill).min(ICMP_BURST);
            self.stamp_ms = now_ms;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// What an operation carries through the device (its user value), so that the worker keeps
/// no per-packet state and re-derives nothing from the frame at completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Tag {
    /// The id of the worker's SA table the operation was enqueued with (3 bits).
    table: u8,
    inbound: bool,
    /// Tunnel index (15 bits).
    tunnel: u16,
    /// SA index.
    sa: u16,
    /// Outbound: the inner packet's length. Inbound: the high half of the sequence number.
    low: u32,
    /// Inbound: where the plaintext starts in the frame (the job's cipher offset).
    plain: u16,
    /// Inbound: the outer header's TOS (RFC 6040 decapsulation).
    tos: u8,
}

impl Tag {
    #[inline(always)]
    fn pack(self) -> u128 {
        (u128::from(self.table & 7) << 88)
            | (u128::from(self.tos) << 80)
            | (u128::from(self.plain) << 64)
            | (u128::from(self.inbound) << 63)
            | (u128::from(self.tunnel & 0x7fff) << 48)
            | (u128::from(self.sa) << 32)
            | u128::from(self.low)
    }

    #[inline]
    fn unpack(t: u128) -> Tag {
        Tag {
            table: ((t >> 88) & 7) as u8,
            inbound: (t >> 63) & 1 == 1,
            tunnel: ((t >> 48) & 0x7fff) as u16,
            sa: (t >> 32) as u16,
            low: t as u32,
            plain: (t >> 64) as u16,
            tos: (t >> 80) as u8,
        }
    }
}

/// The IPv6 link-local address of a MAC (modified EUI-64, RFC 4291 Appendix A).
pub fn link_local(mac: [u8; 6]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8] = mac[0] ^ 2;
    a[9] = mac[1];
    a[10] = mac[2];
    a[11] = 0xff;
    a[12] = 0xfe;
    a[13] = mac[3];
    a[14] = mac[4];
    a[15] = mac[5];
    a
}

/// An SA table as one worker uses it.
struct Table {
    ipsec: Arc<Ipsec>,
    sessions: Arc<SaSessions>,
    /// The id operations enqueued with this table carry.
    id: u8,
    /// Operations enqueued with this table and not back yet.
    in_flight: u32,
}

impl Table {
    fn new(ipsec: &Arc<Ipsec>, id: u8) -> Table {
        Table {
            ipsec: ipsec.clone(),
            // Every published table has its sessions; an empty list would only make its
            // packets drop as crypto errors.
            sessions: ipsec.backend::<SaSessions>().unwrap_or_default(),
            id,
            in_flight: 0,
        }
    }
}

/// One worker's tunnel stage.
pub struct TunnelStage {
    /// The SA table of the generation in effect.
    cur: Table,
    /// Tables the worker replaced while operations enqueued with them were in flight.
    old: [Option<Table>; TABLES - 1],
    /// This worker's lane in every SA (counters, reserved sequence numbers).
    lane: usize,
    /// This worker's queue pair.
    pub crypto: CryptoQueue,
    /// For ARP requests.
    pub pool: Mempool,
    /// MAC of every port (by pipeline index; zeros for tunnels).
    pub port_macs: Vec<[u8; 6]>,
    rng: rand_chacha::ChaCha12Rng,
    ip_id: u16,
    arp_sent_ms: Vec<u64>,
    icmp: IcmpBucket,
}

impl std::fmt::Debug for TunnelStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelStage")
            .field("tunnels", &self.cur.ipsec.tunnels.len())
            .field("sas", &self.cur.ipsec.sas.len())
            .field("lane", &self.lane)
            .field("old_tables", &self.old.iter().flatten().count())
            .field("in_flight", &self.crypto.in_flight())
            .finish()
    }
}

impl TunnelStage {
    /// The stage of worker `lane` (its index among the workers), starting with `ipsec`.
    pub fn new(
        ipsec: &Arc<Ipsec>,
        lane: usize,
        crypto: CryptoQueue,
        pool: Mempool,
        port_macs: Vec<[u8; 6]>,
    ) -> TunnelStage {
        TunnelStage {
            cur: Table::new(ipsec, 0),
            old: Default::default(),
            lane,
            crypto,
            pool,
            port_macs,
            rng: rand_chacha::ChaCha12Rng::from_os_rng(),
            ip_id: 0,
            arp_sent_ms: vec![0; ipsec.tunnels.len()],
            icmp: IcmpBucket {
                tokens: ICMP_BURST,
                stamp_ms: 0,
            },
        }
    }

    /// Uses `ipsec`, the SA table of the generation the worker is about to run, from now on
    /// (called at every burst boundary; a pointer comparison unless a reload published a new
    /// table).
    #[inline]
    pub fn adopt(&mut self, ipsec: &Arc<Ipsec>) {
        if !Arc::ptr_eq(&self.cur.ipsec, ipsec) {
            self.switch(ipsec);
        }
    }

    #[cold]
    #[inline(never)]
    fn switch(&mut self, ipsec: &Arc<Ipsec>) {
        // With a free slot for the current table, at most 7 of the 8 ids are in use.
        let slot = self.old.iter().position(Option::is_none);
        let in_use = |id: u8| self.cur.id == id || self.old.iter().flatten().any(|t| t.id == id);
        let (Some(slot), Some(id)) = (slot, (0..TABLES as u8).find(|&id| !in_use(id))) else {
            // Operations of seven replaced tables are still in flight (seven reloads within
            // one trip through the device): keep this table one more round.
            return;
        };
        let prev = std::mem::replace(&mut self.cur, Table::new(ipsec, id));
        if prev.in_flight > 0 {
            self.old[slot] = Some(prev);
        } else {
            self.release(prev);
        }
    }

    /// Lets go of a table no operation uses any more, and of the queue's idle references to
    /// sessions (the control thread frees those only this table had, once nobody holds them).
    fn release(&mut self, t: Table) {
        drop(t);
        self.crypto.release_idle_sessions();
    }

    fn mac(&self, p: PortIndex) -> [u8; 6] {
        self.port_macs
            .get(usize::from(p.0))
            .copied()
            .unwrap_or([0; 6])
    }

    /// A packet sent into tunnel port `port`: checks, ESP framing, then to the device.
    pub fn encap(
        &mut self,
        port: PortIndex,
        mut pkt: Mbuf,
        parsed: &Parsed,
        iif: PortIndex,
        tx: &mut TxPorts,
        stats: &mut StatsWriter,
    ) {
        let tab = &self.cur;
        let ipsec = &*tab.ipsec;
        let Some(ti) = ipsec.tunnel_of_port(port) else {
            stats.drop(port, DropReason::NoRoute, 1);
            return;
        };
        let t = &ipsec.tunnels[usize::from(ti)];
        let Some(si) = t.out_sa else {
            stats.drop(port, DropReason::TunnelNoSa, 1);
            return;
        };
        let sa = &ipsec.sas[usize::from(si)];
        let alg = sa.cfg.algorithm;
        if sa.expired() {
            // A byte lifetime the control thread enforced (packet lifetimes end in next_seq).
            stats.drop(port, DropReason::SaExpired, 1);
            return;
        }
        if parsed.l3 == L3::Other {
            stats.drop(port, DropReason::TunnelNotIp, 1);
            return;
        }
        let now = stats.now_ms();
        let mtu = t.effective_mtu(alg, now);
        if u32::from(parsed.ip_len) > mtu {
            // Linux vti_xmit: an ICMP error back to the sender, and the packet is dropped.
            stats.drop(port, DropReason::TunnelTooBig, 1);
            if !self.icmp.allow(now) {
                stats.tunnel().icmp_rate_limited.add(1);
                return;
            }
            let sent = match parsed.l3 {
                L3::Ipv4 => icmp::frag_needed(&mut pkt, parsed, mtu, t.local),
                _ => {
                    let src = if t.icmp_src6 == [0; 16] {
                        link_local(self.mac(t.underlay))
                    } else {
                        t.icmp_src6
                    };
                    icmp::packet_too_big(&mut pkt, parsed, mtu, src)
                }
            };
            if sent.is_ok() {
                stats.tunnel().icmp_sent.add(1);
                tx.send(iif, pkt, stats);
            }
            return;
        }
        let Some(dst_mac) = t.next_hop_mac() else {
            stats.drop(port, DropReason::NeighbourUnresolved, 1);
            self.request_next_hop(ti, now, tx, stats);
            return;
        };
        let seq = match sa.next_seq_on(self.lane) {
            Ok(s) => s,
            Err(e) => {
                if let Some(c) = sa.counters(self.lane) {
                    c.errors.add(1);
                }
                let r = match e {
                    SeqError::Exhausted => DropReason::EspSeqExhausted,
                    SeqError::Expired => DropReason::SaExpired,
                };
                stats.drop(port, r, 1);
                return;
            }
        };
        let mut cbc_iv = [0u8; 16];
        if !alg.is_aead() {
            self.rng.fill_bytes(&mut cbc_iv);
        }
        self.ip_id = self.ip_id.wrapping_add(1);
        let params = EncapParams {
            alg,
            spi: sa.cfg.spi,
            seq,
            esn: sa.cfg.esn,
            salt: sa.cfg.keys.salt,
            cbc_iv,
            src: t.local,
            dst: t.remote,
            df: t.df,
            ttl: t.ttl,
            ip_id: self.ip_id,
            src_mac: self.mac(t.underlay),
            dst_mac,
        };
        let inner_len = u32::from(parsed.ip_len);
        let j = match esp::encap(&mut pkt, parsed, &params) {
            Ok(j) => j,
            Err(r) => {
                stats.drop(port, r, 1);
                return;
            }
        };
        let Some(session) = tab.sessions.0.get(usize::from(si)) else {
            stats.drop(port, DropReason::CryptoError, 1);
            return;
        };
        let user = Tag {
            table: tab.id,
            tunnel: ti,
            sa: si,
            low: inner_len,
            ..Tag::default()
        }
        .pack();
        match self.crypto.push(pkt, session, &j, user) {
            Ok(()) => {
                self.cur.in_flight += 1;
                stats.tunnel().crypto_enqueued.add(1);
            }
            Err(_m) => stats.drop(port, DropReason::CryptoQueueFull, 1),
        }
    }

    fn request_next_hop(&mut self, ti: u16, now: u64, tx: &mut TxPorts, stats: &mut StatsWriter) {
        let Some(t) = self.cur.ipsec.tunnels.get(usize::from(ti)) else {
            return;
        };
        let Some(last) = self.arp_sent_ms.get_mut(usize::from(ti)) else {
            return;
        };
        if *last != 0 && now.saturating_sub(*last) < ARP_INTERVAL_MS {
            return;
        }
        *last = now.max(1);
        let frame = arp::request(self.mac(t.underlay), t.local, t.next_hop);
        if let Some(mut m) = self.pool.alloc() {
            if m.fill(&frame) {
                stats.tunnel().arp_requests.add(1);
                tx.send(t.underlay, m, stats);
            }
        }
    }

    /// A packet received on underlay `port` that its ingress hook passed: consumed (`None`)
    /// when it is for a local endpoint address, else handed back.
    pub fn local(
        &mut self,
        port: PortIndex,
        mut pkt: Mbuf,
        parsed: &Parsed,
        tx: &mut TxPorts,
        stats: &mut StatsWriter,
    ) -> Option<Mbuf> {
        // A borrow, not an Arc clone: no shared atomic per packet.
        let ipsec = &*self.cur.ipsec;
        if let Some(a) = arp::read(pkt.data(), parsed) {
            for t in ipsec.tunnels_via(port, a.spa) {
                if !t.static_next_hop && t.next_hop_mac() != Some(a.sha) {
                    t.set_next_hop_mac(a.sha);
                    stats.tunnel().arp_learnt.add(1);
                }
            }
            if !ipsec.is_local(port, a.tpa) {
                return Some(pkt);
            }
            if a.op == 1 && arp::reply_in_place(&mut pkt, parsed, &a, self.mac(port)) {
                stats.tunnel().arp_replies.add(1);
                tx.send(port, pkt, stats);
            } else {
                stats.drop(port, DropReason::LocalConsumed, 1);
            }
            return None;
        }
        if parsed.l3 != L3::Ipv4 {
            return Some(pkt);
        }
        let l3 = usize::from(parsed.l3_offset);
        let d = pkt.data();
        let dst: [u8; 4] = d.get(l3 + 16..l3 + 20)?.try_into().ok()?;
        if !ipsec.is_local(port, dst) {
            return Some(pkt);
        }
        match parsed.l4_proto {
            esp::IPPROTO_ESP => self.decap(port, pkt, parsed, stats),
            ipproto::ICMP => {
                if let Some(e) = icmp::esp_frag_needed(d, parsed) {
                    // vti4_err: the SA by SPI, its tunnel's path MTU.
                    let hit = ipsec.tunnels.iter().find(|t| {
                        t.underlay == port
                            && t.local == e.src
                            && t.remote == e.dst
                            && t.out_sa
                                .is_some_and(|s| ipsec.sas[usize::from(s)].cfg.spi == e.spi)
                    });
                    if let Some(t) = hit {
                        if t.learn_pmtu(e.mtu, stats.now_ms()) {
                            stats.tunnel().pmtu_updates.add(1);
                        }
                    }
                    stats.drop(port, DropReason::LocalConsumed, 1);
                } else if parsed.src_port == 8 && parsed.dst_port == 0 && !parsed.fragment {
                    if echo_reply(&mut pkt, parsed) {
                        stats.tunnel().echo_replies.add(1);
                        tx.send(port, pkt, stats);
                    } else {
                        stats.drop(port, DropReason::LocalUnsupported, 1);
                    }
                } else {
                    stats.drop(port, DropReason::LocalUnsupported, 1);
                }
            }
            _ => stats.drop(port, DropReason::LocalUnsupported, 1),
        }
        None
    }

    /// ESP to a local endpoint: SA, policy, early replay check, then to the device.
    fn decap(&mut self, port: PortIndex, mut pkt: Mbuf, parsed: &Parsed, stats: &mut StatsWriter) {
        let tab = &self.cur;
        let ipsec = &*tab.ipsec;
        let h = match esp::esp_header(pkt.data(), parsed) {
            Ok(h) => h,
            Err(r) => {
                stats.drop(port, r, 1);
                return;
            }
        };
        let Some(si) = ipsec.inbound_sa(h.spi, h.dst) else {
            let r = if ipsec.was_removed(h.spi, h.dst) {
                DropReason::EspSaRemoved
            } else {
                DropReason::EspUnknownSpi
            };
            stats.drop(port, r, 1);
            return;
        };
        let sa = &ipsec.sas[usize::from(si)];
        if sa.expired() {
            stats.drop(port, DropReason::SaExpired, 1);
            return;
        }
        let Some(ti) = ipsec.tunnel_for_inbound(si, h.src, h.dst) else {
            if let Some(c) = sa.counters(self.lane) {
                c.errors.add(1);
            }
            stats.drop(port, DropReason::EspPolicyMismatch, 1);
            return;
        };
        let seq = match sa.replay().map(|w| w.check(h.seq_lo)) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                replay_drop(stats, port, sa, self.lane, e);
                return;
            }
            // No anti-replay on this SA.
            None => u64::from(h.seq_lo),
        };
        let alg = sa.cfg.algorithm;
        let j = match esp::decap_prepare(&mut pkt, &h, alg, sa.cfg.esn, sa.cfg.keys.salt, seq) {
            Ok(j) => j,
            Err(r) => {
                stats.drop(port, r, 1);
                return;
            }
        };
        // Offsets within a frame fit 16 bits (an mbuf's data length is a u16).
        let Ok(plain) = u16::try_from(j.cipher_offset) else {
            stats.drop(port, DropReason::EspMalformed, 1);
            return;
        };
        let Some(session) = tab.sessions.0.get(usize::from(si)) else {
            stats.drop(port, DropReason::CryptoError, 1);
            return;
        };
        let user = Tag {
            table: tab.id,
            inbound: true,
            tunnel: ti,
            sa: si,
            low: (seq >> 32) as u32,
            plain,
            tos: h.tos,
        }
        .pack();
        match self.crypto.push(pkt, session, &j, user) {
            Ok(()) => {
                self.cur.in_flight += 1;
                stats.tunnel().crypto_enqueued.add(1);
            }
            Err(_m) => stats.drop(port, DropReason::CryptoQueueFull, 1),
        }
    }

    /// Hands pending operations to the device and collects finished ones into `done`.
    pub fn poll(&mut self, done: &mut Vec<Completion>) {
        self.crypto.flush(|m, s, u| done.push((m, s, u)));
        self.crypto.poll(|m, s, u| done.push((m, s, u)));
    }

    /// Operations in the device.
    pub fn in_flight(&self) -> u32 {
        self.crypto.in_flight()
    }
}

fn replay_drop(stats: &mut StatsWriter, port: PortIndex, sa: &Sa, lane: usize, e: ReplayError) {
    let r = match e {
        ReplayError::Replayed => {
            if let Some(c) = sa.counters(lane) {
                c.replay.add(1);
            }
            DropReason::EspReplay
        }
        ReplayError::TooOld => {
            if let Some(c) = sa.counters(lane) {
                c.too_old.add(1);
            }
            DropReason::EspTooOld
        }
    };
    stats.drop(port, r, 1);
}

/// Turns an ICMP echo request to us into its reply, in place (RFC 792): addresses and MACs
/// swapped, type 0, checksum updated (RFC 1624).
fn echo_reply(pkt: &mut Mbuf, parsed: &Parsed) -> bool {
    let l3 = usize::from(parsed.l3_offset);
    let l4 = usize::from(parsed.l4_offset);
    let Some(d) = pkt.data_mut() else {
        return false;
    };
    if d.len() < l4 + 4 {
        return false;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&d[0..6]);
    d.copy_within(6..12, 0);
    d[6..12].copy_from_slice(&mac);
    let mut ip = [0u8; 4];
    ip.copy_from_slice(&d[l3 + 12..l3 + 16]);
    d.copy_within(l3 + 16..l3 + 20, l3 + 12);
    d[l3 + 16..l3 + 20].copy_from_slice(&ip);
    d[l3 + 8] = 64;
    d[l3 + 10..l3 + 12].fill(0);
    let ihl = l4 - l3;
    let c = pipelines::wire::ipv4_header_checksum(&d[l3..l3 + ihl]);
    d[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    // Type 8 -> 0: the checksum rises by 0x0800 (ones' complement arithmetic).
    d[l4] = 0;
    let old = u16::from_be_bytes([d[l4 + 2], d[l4 + 3]]);
    let mut sum = u32::from(old) + 0x0800;
    sum = (sum & 0xffff) + (sum >> 16);
    d[l4 + 2..l4 + 4].copy_from_slice(&(sum as u16).to_be_bytes());
    true
}

impl TunnelStage {
    /// What the worker does with completed operations: outbound ones leave by their underlay,
    /// inbound ones are checked (replay window under its lock, padding, policy) and come back as
    /// `(tunnel port, inner packet)` in `delivered`, for the pipeline to run the tunnel's
    /// ingress. Each operation is resolved against the SA table it was enqueued with; replaced
    /// tables whose last operation came back are released.
    pub fn complete(
        &mut self,
        done: &mut Vec<Completion>,
        delivered: &mut Vec<(PortIndex, Mbuf)>,
        tx: &mut TxPorts,
        stats: &mut StatsWriter,
    ) {
        let mut back = [0u32; TABLES];
        let lane = self.lane;
        let (cur, old, port_macs) = (&self.cur, &self.old, &self.port_macs);
        let table = |id: u8| -> Option<&Table> {
            if cur.id == id {
                Some(cur)
            } else {
                old.iter().flatten().find(|t| t.id == id)
            }
        };
        // The replay lock of the window of the previous completion, kept across a run of them.
        let mut held: Option<(&ReplayWindow, ReplayLock<'_>)> = None;
        for (mut m, st, user) in done.drain(..) {
            stats.tunnel().crypto_dequeued.add(1);
            let Tag {
                table: id,
                inbound,
                tunnel: ti,
                sa: si,
                low,
                plain,
                tos,
            } = Tag::unpack(user);
            back[usize::from(id)] += 1;
            let Some(ipsec) = table(id).map(|t| &*t.ipsec) else {
                continue; // cannot happen: tags are ours; the mbuf is freed here
            };
            let (Some(t), Some(sa)) = (
                ipsec.tunnels.get(usize::from(ti)),
                ipsec.sas.get(usize::from(si)),
            ) else {
                continue; // cannot happen: tags are ours; the mbuf is freed here
            };
            let alg = sa.cfg.algorithm;
            let at = if inbound { t.underlay } else { t.port };
            match st {
                CryptoStatus::Success => {}
                CryptoStatus::AuthFailed if inbound => {
                    if let Some(c) = sa.counters(lane) {
                        c.bad_icv.add(1);
                    }
                    stats.drop(at, DropReason::EspBadIcv, 1);
                    continue;
                }
                CryptoStatus::QueueFull => {
                    stats.drop(at, DropReason::CryptoQueueFull, 1);
                    continue;
                }
                _ => {
                    if let Some(c) = sa.counters(lane) {
                        c.errors.add(1);
                    }
                    stats.drop(at, DropReason::CryptoError, 1);
                    continue;
                }
            }
            if !inbound {
                if let Err(r) = esp::encap_complete(&mut m, alg, sa.cfg.esn) {
                    stats.drop(at, r, 1);
                    continue;
                }
                if let Some(c) = sa.counters(lane) {
                    c.packets.add(1);
                    c.bytes.add(u64::from(low));
                }
                stats.tx(t.port, 1, u64::from(low));
                tx.send(t.underlay, m, stats);
                continue;
            }
            // Inbound: the full sequence number, then the window under its lock.
            let j = match esp::decap_job_at(m.data().len(), usize::from(plain), alg, sa.cfg.esn) {
                Ok(x) => x,
                Err(r) => {
                    stats.drop(at, r, 1);
                    continue;
                }
            };
            let so = j.cipher_offset as usize - alg.iv_len() - 4;
            let Some(seq_lo) = m
                .data()
                .get(so..so + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            else {
                stats.drop(at, DropReason::EspMalformed, 1);
                continue;
            };
            let seq = (u64::from(low) << 32) | u64::from(seq_lo);
            if let Some(w) = sa.replay() {
                // A kept SA's window is the same in every table: compare windows, not indices.
                if held.as_ref().is_none_or(|(h, _)| !std::ptr::eq(*h, w)) {
                    drop(held.take());
                    held = Some((w, w.lock()));
                }
                if let Some((_, lock)) = &held {
                    if let Err(e) = w.update(lock, seq) {
                        replay_drop(stats, at, sa, lane, e);
                        continue;
                    }
                }
            }
            let (dmac, smac) = t.decap_macs.unwrap_or_else(|| {
                let u = port_macs
                    .get(usize::from(t.underlay.0))
                    .copied()
                    .unwrap_or([0; 6]);
                (u, u)
            });
            match esp::decap_finish(&mut m, &j, tos, dmac, smac) {
                Ok(_) => {
                    let len = u64::from(m.pkt_len()).saturating_sub(14);
                    if let Some(c) = sa.counters(lane) {
                        c.packets.add(1);
                        c.bytes.add(len);
                    }
                    delivered.push((t.port, m));
                }
                Err(r) => {
                    if let Some(c) = sa.counters(lane) {
                        c.errors.add(1);
                    }
                    stats.drop(at, r, 1);
                }
            }
        }
        drop(held);
        self.returned(&back);
    }

    /// Accounts for operations back from the device, per table id; releases replaced tables
    /// with nothing left in flight.
    fn returned(&mut self, back: &[u32; TABLES]) {
        let n = |id: u8| back.get(usize::from(id)).copied().unwrap_or(0);
        self.cur.in_flight = self.cur.in_flight.saturating_sub(n(self.cur.id));
        for i in 0..self.old.len() {
            let drained = match &mut self.old[i] {
                Some(t) => {
                    t.in_flight = t.in_flight.saturating_sub(n(t.id));
                    t.in_flight == 0
                }
                None => false,
            };
            if let Some(t) = self.old[i].take_if(|_| drained) {
                self.release(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_errors_are_limited_to_a_burst_then_the_rate() {
        let mut b = IcmpBucket {
            tokens: ICMP_BURST,
            stamp_ms: 1_000,
        };
        let sent = (0..200).filter(|_| b.allow(1_000)).count() as u64;
        assert_eq!(sent, ICMP_BURST);
        // 10 ms later: 10 more (1000 per second).
        assert_eq!((0..200).filter(|_| b.allow(1_010)).count(), 10);
        // Idle for long: back to a full burst, not more.
        assert_eq!(
            (0..200).filter(|_| b.allow(60_000)).count() as u64,
            ICMP_BURST
        );
        // Within one millisecond nothing refills.
        assert!(!b.allow(60_000));
    }

    #[test]
    fn tags_round_trip() {
        for (table, inbound, tunnel, sa, low, plain, tos) in [
            (0, false, 0, 0, 0, 0, 0),
            (7, true, 0x7fff, 0xffff, u32::MAX, u16::MAX, u8::MAX),
            (3, true, 3, 9, 77, 54, 0xb8),
            (5, false, 0x7fff, 0, u32::MAX, 0, 0),
        ] {
            let t = Tag {
                table,
                inbound,
                tunnel,
                sa,
                low,
                plain,
                tos,
            };
            assert_eq!(Tag::unpack(t.pack()), t);
        }
    }
}
