//! Route-based IPsec (Linux `ip_vti` + xfrm, ESP tunnel mode over IPv4): tunnels are virtual
//! ports of the pipeline; what is sent to one leaves encrypted out of its underlay port, and ESP
//! for it arrives decrypted on its ingress hook.
//!
//! This module is the packet logic and the shared state: security associations (sequence
//! numbers, replay windows, lifetimes), tunnels (endpoints, keys, MTU, next hop), ESP framing
//! ([`esp`]), ICMP errors for path MTU ([`icmp`]) and ARP ([`arp`]). The ciphers run on a DPDK
//! crypto device driven by the worker; nothing here sees a key except [`SaKeys`], which is
//! handed to the device once per SA and never printed.
pub mod arp;
pub mod esp;
pub mod icmp;
pub mod replay;

use crate::pipeline::PortIndex;
use crate::stats::SaCounters;
use replay::ReplayWindow;
use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

/// ICV length of every supported algorithm (GCM's 16-byte tag, RFC 4106; HMAC-SHA-256
/// truncated to 128 bits, RFC 4868).
pub const ICV_LEN: usize = 16;

/// Sequence numbers a worker reserves from an outbound SA at a time: one shared atomic add per
/// this many packets, never per packet.
pub const SEQ_BLOCK: u64 = 32;

/// An ESP transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// AES-GCM with a 128-bit key and 16-byte ICV (RFC 4106).
    AesGcm128,
    /// AES-GCM with a 256-bit key and 16-byte ICV (RFC 4106).
    AesGcm256,
    /// AES-CBC-128 (RFC 3602) with HMAC-SHA-256-128 (RFC 4868).
    AesCbc128HmacSha256,
    /// AES-CBC-256 (RFC 3602) with HMAC-SHA-256-128 (RFC 4868).
    AesCbc256HmacSha256,
}

impl Algorithm {
    /// Every algorithm, for errors and help.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::AesGcm128,
        Algorithm::AesGcm256,
        Algorithm::AesCbc128HmacSha256,
        Algorithm::AesCbc256HmacSha256,
    ];

    /// Configuration name.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::AesGcm128 => "aes-gcm-128",
            Algorithm::AesGcm256 => "aes-gcm-256",
            Algorithm::AesCbc128HmacSha256 => "aes-cbc-128-hmac-sha256",
            Algorithm::AesCbc256HmacSha256 => "aes-cbc-256-hmac-sha256",
        }
    }

    /// The algorithm named `s`.
    pub fn parse(s: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    /// AEAD (GCM) rather than cipher + HMAC.
    pub const fn is_aead(self) -> bool {
        matches!(self, Algorithm::AesGcm128 | Algorithm::AesGcm256)
    }

    /// AES key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Algorithm::AesGcm128 | Algorithm::AesCbc128HmacSha256 => 16,
            Algorithm::AesGcm256 | Algorithm::AesCbc256HmacSha256 => 32,
        }
    }

    /// Length of the `key` the configuration gives: GCM's key with its 4-byte salt appended
    /// (RFC 4106 §8.1, as Linux's rfc4106 keys), or the AES key.
    pub const fn key_material_len(self) -> usize {
        if self.is_aead() {
            self.key_len() + 4
        } else {
            self.key_len()
        }
    }

    /// Length of the HMAC key (chained algorithms; 0 for AEAD). RFC 4868 §2.1.1: the key
    /// length equals the hash output, 32 bytes.
    pub const fn auth_key_len(self) -> usize {
        if self.is_aead() {
            0
        } else {
            32
        }
    }

    /// Explicit IV carried in each packet.
    pub const fn iv_len(self) -> usize {
        if self.is_aead() {
            8
        } else {
            16
        }
    }

    /// Alignment of the padded payload: 4 (GCM is a stream mode; RFC 4303 §2.4 aligns the ICV
    /// to 4 bytes) or the AES block.
    pub const fn block(self) -> usize {
        if self.is_aead() {
            4
        } else {
            16
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Key material of an SA. Never printed (Debug shows lengths only) and wiped on drop.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SaKeys {
    /// AES key.
    pub cipher: Vec<u8>,
    /// GCM salt (RFC 4106 §4); zeros for CBC.
    pub salt: [u8; 4],
    /// HMAC key (chained algorithms).
    pub auth: Vec<u8>,
}

impl fmt::Debug for SaKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SaKeys {{ cipher: <{} bytes>, auth: <{} bytes> }}",
            self.cipher.len(),
            self.auth.len()
        )
    }
}

impl Drop for SaKeys {
    fn drop(&mut self) {
        for b in self.cipher.iter_mut().chain(self.auth.iter_mut()) {
            // A volatile-free wipe is still a best effort; the allocations are freed next.
            *b = 0;
        }
        self.salt = [0; 4];
        std::hint::black_box(&self.cipher);
        std::hint::black_box(&self.auth);
    }
}

/// Which way an SA protects traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaDirection {
    /// Decrypts what arrives.
    In,
    /// Encrypts what leaves.
    Out,
}

/// Hard lifetime limits of an SA (RFC 4301 §4.4.2.1); `None` = unlimited. When one is reached
/// the SA stops being used and its packets are dropped as `sa_expired` (no IKE here to rekey).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    /// Packets.
    pub packets: Option<u64>,
    /// Bytes (of inner packets).
    pub bytes: Option<u64>,
    /// Soft packet limit: time to rekey (reported, the SA keeps working).
    pub soft_packets: Option<u64>,
    /// Soft byte limit.
    pub soft_bytes: Option<u64>,
}

/// A security association as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct SaConfig {
    /// Name for operators (metrics, listings); defaults to the SPI in hex.
    pub name: String,
    /// Security parameter index.
    pub spi: u32,
    /// Direction.
    pub direction: SaDirection,
    /// Outer source (tunnel mode).
    pub src: [u8; 4],
    /// Outer destination.
    pub dst: [u8; 4],
    /// xfrm mark: a tunnel's okey selects its outbound SA, its ikey must equal an inbound
    /// SA's mark for the policy check.
    pub mark: u32,
    /// Transform.
    pub algorithm: Algorithm,
    /// Keys.
    pub keys: SaKeys,
    /// Anti-replay window (inbound), packets.
    pub replay_window: u32,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Hard limits.
    pub lifetime: Lifetime,
}

impl SaConfig {
    /// Whether `other` is the same SA: same name, SPI, direction, endpoints, algorithm, keys,
    /// ESN and replay window. A reload keeps the running SA's state (sequence numbers, replay
    /// window, counters, lifetime clocks) for such an SA; only its mark and lifetimes may
    /// differ (as `ip xfrm state update` changes them on a live state).
    pub fn same_sa(&self, other: &SaConfig) -> bool {
        self.name == other.name
            && self.spi == other.spi
            && self.direction == other.direction
            && self.src == other.src
            && self.dst == other.dst
            && self.algorithm == other.algorithm
            && self.keys == other.keys
            && self.esn == other.esn
            && self.replay_window == other.replay_window
    }
}

/// One worker's part of an SA: its counters and the run of sequence numbers it reserved.
/// Written by that worker only (plain loads and stores on its own cache lines, no read-modify-
/// write), read by the control thread.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct SaLane {
    /// The worker's counters of this SA.
    pub counters: SaCounters,
    /// Outbound: the next number of the worker's reserved block ...
    seq_next: AtomicU64,
    /// ... and the end of the block (exclusive).
    seq_end: AtomicU64,
}

/// The live state of an SA. It lives as long as the SA keeps its identity
/// ([`SaConfig::same_sa`]): configuration reloads hand it from generation to generation.
#[derive(Debug)]
struct SaState {
    /// Outbound: the next sequence number not yet reserved by a worker (starts at 1).
    next_seq: AtomicU64,
    /// Inbound: the replay window (`None`: anti-replay disabled).
    replay: Option<ReplayWindow>,
    /// 0 while usable; [`DEAD_EXPIRED`] once a hard lifetime is reached (by the control
    /// thread for bytes and inbound packets, by the worker that reserves past the packet limit
    /// for outbound); [`DEAD_EXHAUSTED`] once the sequence numbers ran out.
    dead: AtomicU8,
    /// Set once a soft lifetime is reached (by the control thread).
    soft: AtomicBool,
    /// One lane per worker.
    lanes: Box<[SaLane]>,
}

/// An SA of one generation: its configuration and its live state (shared by the workers, and
/// by the next generation when a reload keeps the SA).
#[derive(Debug)]
pub struct Sa {
    /// Configuration.
    pub cfg: SaConfig,
    state: Arc<SaState>,
}

const DEAD_EXPIRED: u8 = 1;
const DEAD_EXHAUSTED: u8 = 2;

/// A worker's reserved run of sequence numbers of one outbound SA: `next..end`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqBlock {
    next: u64,
    end: u64,
}

/// Why an outbound SA gave no sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqError {
    /// The 32-bit space (or 64-bit with ESN) is used up: the SA must not be used again (RFC
    /// 4303 §3.3.3: never cycle).
    Exhausted,
    /// The SA's hard lifetime is reached.
    Expired,
}

impl Sa {
    /// An SA in its initial state, with counters and sequence-number blocks for `lanes`
    /// workers (at least one). `None` when an inbound SA's replay window size is invalid (0,
    /// no anti-replay, is valid without ESN).
    pub fn new(cfg: SaConfig, lanes: usize) -> Option<Sa> {
        let replay = match cfg.direction {
            // Window 0: no anti-replay (RFC 4303 §3.4.3 lets a receiver disable it); ESN needs
            // a window to infer the high half.
            SaDirection::In if cfg.replay_window == 0 && !cfg.esn => None,
            SaDirection::In => Some(ReplayWindow::new(cfg.replay_window, cfg.esn)?),
            SaDirection::Out => None,
        };
        Some(Sa {
            cfg,
            state: Arc::new(SaState {
                next_seq: AtomicU64::new(1),
                replay,
                dead: AtomicU8::new(0),
                soft: AtomicBool::new(false),
                lanes: (0..lanes.max(1)).map(|_| SaLane::default()).collect(),
            }),
        })
    }

    /// The SA `cfg` carrying on with `running`'s live state (sequence numbers, replay window,
    /// counters, lifetime flags): a reload that keeps the SA, perhaps with another mark or
    /// lifetime. `None` when `cfg` is not the same SA ([`SaConfig::same_sa`]). Changes nothing
    /// of the running SA (see [`Sa::rearm_soft_lifetime`]).
    pub fn keeping(cfg: SaConfig, running: &Sa) -> Option<Sa> {
        if !cfg.same_sa(&running.cfg) {
            return None;
        }
        Some(Sa {
            cfg,
            state: running.state.clone(),
        })
    }

    /// Once `self` (a kept SA) is in effect: when its soft limits differ from `previous`'s,
    /// forgets that a soft limit was reached, so that the new one is reported once it is.
    /// Returns whether it did.
    pub fn rearm_soft_lifetime(&self, previous: &Sa) -> bool {
        let (a, b) = (self.cfg.lifetime, previous.cfg.lifetime);
        let changed = (a.soft_packets, a.soft_bytes) != (b.soft_packets, b.soft_bytes);
        if changed && self.shares_state_with(previous) {
            self.state.soft.store(false, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Whether `self` and `other` are the same live SA (one kept across a reload).
    pub fn shares_state_with(&self, other: &Sa) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    /// The replay window (inbound SAs with anti-replay).
    #[inline]
    pub fn replay(&self) -> Option<&ReplayWindow> {
        self.state.replay.as_ref()
    }

    /// Worker `lane`'s counters of this SA (`None` for a lane the SA was not built with).
    #[inline]
    pub fn counters(&self, lane: usize) -> Option<&SaCounters> {
        self.state.lanes.get(lane).map(|l| &l.counters)
    }

    /// A counter summed over the workers.
    pub fn total(&self, f: impl Fn(&SaCounters) -> u64) -> u64 {
        self.state.lanes.iter().map(|l| f(&l.counters)).sum()
    }

    /// The next sequence number for a packet, from the worker's block (refilled with one
    /// atomic add per [`SEQ_BLOCK`] packets).
    #[inline]
    pub fn next_seq(&self, block: &mut SeqBlock) -> Result<u64, SeqError> {
        if block.next < block.end {
            let s = block.next;
            block.next += 1;
            return Ok(s);
        }
        let st = &*self.state;
        match st.dead.load(Ordering::Relaxed) {
            DEAD_EXPIRED => return Err(SeqError::Expired),
            DEAD_EXHAUSTED => return Err(SeqError::Exhausted),
            _ => {}
        }
        let start = st.next_seq.fetch_add(SEQ_BLOCK, Ordering::Relaxed);
        let space = if self.cfg.esn {
            u64::MAX - SEQ_BLOCK
        } else {
            u64::from(u32::MAX)
        };
        let limit = self.cfg.lifetime.packets.filter(|&p| p < space);
        let max = limit.unwrap_or(space);
        if start > max {
            // Never cycle (RFC 4303 §3.3.3): the SA is done; later packets stop here.
            let (state, err) = if limit.is_some() {
                (DEAD_EXPIRED, SeqError::Expired)
            } else {
                (DEAD_EXHAUSTED, SeqError::Exhausted)
            };
            st.dead.store(state, Ordering::Relaxed);
            return Err(err);
        }
        *block = SeqBlock {
            next: start + 1,
            end: (start + SEQ_BLOCK).min(max + 1),
        };
        Ok(start)
    }

    /// [`Sa::next_seq`] from worker `lane`'s block, kept in the SA's state: the block survives
    /// a reload that keeps the SA, so its numbers continue without a gap.
    #[inline]
    pub fn next_seq_on(&self, lane: usize) -> Result<u64, SeqError> {
        let Some(l) = self.state.lanes.get(lane) else {
            // Not a lane of this SA: a block of one number (correct, if wasteful).
            return self.next_seq(&mut SeqBlock::default());
        };
        let end = l.seq_end.load(Ordering::Relaxed);
        let mut b = SeqBlock {
            next: l.seq_next.load(Ordering::Relaxed),
            end,
        };
        let r = self.next_seq(&mut b);
        l.seq_next.store(b.next, Ordering::Relaxed);
        if b.end != end {
            l.seq_end.store(b.end, Ordering::Relaxed);
        }
        r
    }

    /// Sequence numbers handed out so far (outbound), i.e. the highest reserved.
    pub fn seq_reserved(&self) -> u64 {
        self.state
            .next_seq
            .load(Ordering::Relaxed)
            .saturating_sub(1)
    }

    /// Whether a hard lifetime was reached.
    #[inline]
    pub fn expired(&self) -> bool {
        self.state.dead.load(Ordering::Relaxed) == DEAD_EXPIRED
    }

    /// Whether the sequence number space is used up.
    pub fn exhausted(&self) -> bool {
        self.state.dead.load(Ordering::Relaxed) == DEAD_EXHAUSTED
    }

    /// Whether a soft lifetime was reached (the SA should be replaced).
    pub fn soft_expired(&self) -> bool {
        self.state.soft.load(Ordering::Relaxed)
    }

    /// Records that a soft lifetime was reached; true the first time.
    pub fn mark_soft_expired(&self) -> bool {
        !self.state.soft.swap(true, Ordering::Relaxed)
    }

    /// Marks the SA expired (control thread: byte or inbound packet limits).
    pub fn expire(&self) {
        self.state.dead.store(DEAD_EXPIRED, Ordering::Relaxed);
    }

    /// Restores the sequence state of an SA moved from elsewhere (Linux `ip xfrm state ...
    /// replay-oseq` / `replay-seq`): outbound, `seq` is the last number sent and the next packet
    /// carries `seq + 1`; inbound, `seq` is the highest number received (the window's top).
    /// Call before the SA carries packets.
    pub fn restore_seq(&self, seq: u64) {
        match (self.cfg.direction, &self.state.replay) {
            (SaDirection::In, Some(w)) => w.start_at(seq),
            (SaDirection::In, None) => {}
            (SaDirection::Out, _) => self
                .state
                .next_seq
                .store(seq.saturating_add(1), Ordering::Relaxed),
        }
    }
}

/// A VTI: a virtual port whose traffic is carried by ESP between two IPv4 endpoints.
#[derive(Debug)]
pub struct Tunnel {
    /// Name (also the port's name).
    pub name: String,
    /// The tunnel's own pipeline port.
    pub port: PortIndex,
    /// The port its ESP packets leave by and arrive on.
    pub underlay: PortIndex,
    /// Local endpoint (outer source).
    pub local: [u8; 4],
    /// Remote endpoint (outer destination).
    pub remote: [u8; 4],
    /// Inbound key: the mark an inbound SA must carry to deliver here.
    pub ikey: u32,
    /// Outbound key: the mark of the SA that encrypts for this tunnel.
    pub okey: u32,
    /// The tunnel's MTU (largest inner packet), as configured.
    pub mtu: u32,
    /// The underlay's IP MTU toward the remote endpoint, as configured.
    pub underlay_mtu: u32,
    /// Next hop toward the remote endpoint (the remote itself when on-link).
    pub next_hop: [u8; 4],
    /// What the tunnel learnt (path MTU, next-hop MAC): kept by a reload that leaves the
    /// tunnel's path as it is.
    learnt: Arc<TunnelLearnt>,
    /// The next hop's MAC is configured (ARP does not change it).
    pub static_next_hop: bool,
    /// The outbound SA (an index into [`Ipsec::sas`]) that passed the state check.
    pub out_sa: Option<u16>,
    /// Outer DF policy.
    pub df: esp::DfPolicy,
    /// Outer TTL.
    pub ttl: u8,
    /// Source of ICMPv6 packet-too-big errors the tunnel sends (all zeros: the link-local
    /// address derived from the underlay port's MAC).
    pub icmp_src6: [u8; 16],
    /// Ethernet addresses put on decapsulated packets (destination, source); `None`: the
    /// underlay port's MAC for both.
    pub decap_macs: Option<([u8; 6], [u8; 6])>,
}

/// What a tunnel learns from the network, shared by the workers (plain relaxed stores by
/// whichever lcore hears it).
#[derive(Debug, Default)]
struct TunnelLearnt {
    /// Path MTU learnt from ICMP "fragmentation needed" about our ESP packets (0: none).
    pmtu: AtomicU32,
    /// When `pmtu` was learnt (Unix ms); it expires after [`PMTU_EXPIRY_MS`].
    pmtu_at_ms: AtomicU64,
    /// The next hop's MAC: bit 48 set when known (static or learnt from ARP), else 0.
    next_hop_mac: AtomicU64,
}

/// How long a learnt path MTU holds (Linux's `mtu_expires`, 10 minutes).
pub const PMTU_EXPIRY_MS: u64 = 600_000;

/// A minimum path MTU honoured from ICMP (RFC 1191 §3's 68 is too low to carry ESP; Linux's
/// `min_pmtu` is 552).
pub const MIN_PMTU: u32 = 552;

impl Tunnel {
    /// Everything but the learnt state, which starts empty.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        port: PortIndex,
        underlay: PortIndex,
        local: [u8; 4],
        remote: [u8; 4],
        keys: (u32, u32),
        mtus: (u32, u32),
        next_hop: [u8; 4],
        static_mac: Option<[u8; 6]>,
    ) -> Tunnel {
        let t = Tunnel {
            name,
            port,
            underlay,
            local,
            remote,
            ikey: keys.0,
            okey: keys.1,
            mtu: mtus.0,
            underlay_mtu: mtus.1,
            next_hop,
            learnt: Arc::default(),
            static_next_hop: static_mac.is_some(),
            out_sa: None,
            df: esp::DfPolicy::Inherit,
            ttl: 64,
            icmp_src6: [0; 16],
            decap_macs: None,
        };
        if let Some(m) = static_mac {
            t.set_next_hop_mac(m);
        }
        t
    }

    /// Takes over what `running` learnt (next-hop MAC, path MTU) when both lead the same way:
    /// same underlay, endpoints and next hop (and the same static MAC, if any). A reload calls
    /// it for the tunnel of the same name, so that traffic goes on without a new ARP exchange.
    /// Returns whether it did.
    pub fn keep_learnt(&mut self, running: &Tunnel) -> bool {
        let same = self.underlay == running.underlay
            && self.local == running.local
            && self.remote == running.remote
            && self.next_hop == running.next_hop
            && self.static_next_hop == running.static_next_hop
            && (!self.static_next_hop || self.next_hop_mac() == running.next_hop_mac());
        if same {
            self.learnt = running.learnt.clone();
        }
        same
    }

    /// Whether `self` and `other` share what they learnt (one kept across a reload).
    pub fn shares_learnt_with(&self, other: &Tunnel) -> bool {
        Arc::ptr_eq(&self.learnt, &other.learnt)
    }

    /// Whether `other` is configured exactly as `self` (what it learnt aside).
    pub fn same_config(&self, other: &Tunnel) -> bool {
        self.name == other.name
            && self.port == other.port
            && self.underlay == other.underlay
            && self.local == other.local
            && self.remote == other.remote
            && self.ikey == other.ikey
            && self.okey == other.okey
            && self.mtu == other.mtu
            && self.underlay_mtu == other.underlay_mtu
            && self.next_hop == other.next_hop
            && self.static_next_hop == other.static_next_hop
            && (!self.static_next_hop || self.next_hop_mac() == other.next_hop_mac())
            && self.df == other.df
            && self.ttl == other.ttl
            && self.icmp_src6 == other.icmp_src6
            && self.decap_macs == other.decap_macs
    }

    /// The next hop's MAC, if known.
    #[inline]
    pub fn next_hop_mac(&self) -> Option<[u8; 6]> {
        let v = self.learnt.next_hop_mac.load(Ordering::Relaxed);
        (v >> 48 == 1).then(|| {
            let b = v.to_be_bytes();
            [b[2], b[3], b[4], b[5], b[6], b[7]]
        })
    }

    /// Records the next hop's MAC (a plain store; any lcore that hears the next hop's ARP).
    pub fn set_next_hop_mac(&self, mac: [u8; 6]) {
        let mut b = [0u8; 8];
        b[1] = 1;
        b[2..].copy_from_slice(&mac);
        self.learnt
            .next_hop_mac
            .store(u64::from_be_bytes(b), Ordering::Relaxed);
    }

    /// Records a path MTU from an ICMP error (ignored below [`MIN_PMTU`] or when not lower
    /// than what is known).
    pub fn learn_pmtu(&self, mtu: u32, now_ms: u64) -> bool {
        let mtu = mtu.max(MIN_PMTU);
        if mtu >= self.path_mtu(now_ms) {
            return false;
        }
        self.learnt.pmtu.store(mtu, Ordering::Relaxed);
        self.learnt.pmtu_at_ms.store(now_ms, Ordering::Relaxed);
        true
    }

    /// The underlay path MTU now: a learnt one while it holds, else the configured one.
    #[inline]
    pub fn path_mtu(&self, now_ms: u64) -> u32 {
        let p = self.learnt.pmtu.load(Ordering::Relaxed);
        if p != 0
            && now_ms.saturating_sub(self.learnt.pmtu_at_ms.load(Ordering::Relaxed))
                < PMTU_EXPIRY_MS
        {
            p.min(self.underlay_mtu)
        } else {
            self.underlay_mtu
        }
    }

    /// Largest inner packet now: the tunnel MTU, or less if the path with ESP's overhead for
    /// `alg` carries less.
    #[inline]
    pub fn effective_mtu(&self, alg: Algorithm, now_ms: u64) -> u32 {
        self.mtu.min(esp::inner_mtu(alg, self.path_mtu(now_ms)))
    }
}

/// RFC 6040 §4.2: the inner header's ECN field after decapsulation with `outer` (TOS/traffic
/// class bytes; only their two ECN bits matter), or `None` when the packet must be dropped
/// (outer CE on a Not-ECT inner packet). Returns `inner` with its ECN bits replaced.
pub fn ecn_decapsulate(inner: u8, outer: u8) -> Option<u8> {
    const NOT_ECT: u8 = 0;
    const ECT1: u8 = 1;
    const ECT0: u8 = 2;
    const CE: u8 = 3;
    let (i, o) = (inner & 3, outer & 3);
    let out = match (i, o) {
        (NOT_ECT, CE) => return None,
        (NOT_ECT, _) => NOT_ECT,
        (_, CE) => CE,
        (ECT0, ECT1) => ECT1,
        _ => i,
    };
    Some((inner & !3) | out)
}

/// Every SA and tunnel of a configuration, with the lookups the data path needs. One value per
/// generation, never changed once published; SAs and tunnels a reload keeps share their live
/// state with the previous generation's.
#[derive(Debug, Default)]
pub struct Ipsec {
    /// SAs, indexed by the `u16` the other tables use.
    pub sas: Vec<Sa>,
    /// Tunnels.
    pub tunnels: Vec<Tunnel>,
    /// Inbound SAs by (SPI, destination), sorted.
    inbound: Vec<(u32, [u8; 4], u16)>,
    /// Local IPv4 addresses by underlay port (sorted): the tunnels' local endpoints.
    locals: Vec<(PortIndex, [u8; 4])>,
    /// The tunnel of each pipeline port, if it is one.
    tunnel_of_port: Vec<Option<u16>>,
    /// Inbound (SPI, destination) pairs of SAs that reloads removed or replaced (sorted): their
    /// packets are told apart from unknown SPIs.
    removed_inbound: Vec<(u32, [u8; 4])>,
    /// What the crypto backend keeps for this table (the appliance: one device session per
    /// SA, indexed like `sas`), attached once before the table is published.
    backend: Backend,
}

/// An opaque value a crypto backend attaches to an [`Ipsec`] table (set once).
#[derive(Default)]
pub struct Backend(OnceLock<Arc<dyn Any + Send + Sync>>);

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Backend(attached)"
        } else {
            "Backend(none)"
        })
    }
}

/// Why an [`Ipsec`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsecError(pub String);

impl fmt::Display for IpsecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IpsecError {}

impl Ipsec {
    /// Indexes `sas` and `tunnels` (`ports`: the number of pipeline ports) and picks each
    /// tunnel's outbound SA: the outbound SA whose mark is the tunnel's okey and whose
    /// endpoints are the tunnel's (Linux's `vti_state_check`). A tunnel without one is kept
    /// (its packets are dropped as `tunnel_no_sa`, Linux's tx_carrier_errors).
    pub fn new(sas: Vec<Sa>, mut tunnels: Vec<Tunnel>, ports: usize) -> Result<Ipsec, IpsecError> {
        let mut inbound = Vec::new();
        for (i, sa) in sas.iter().enumerate() {
            let i = u16::try_from(i).map_err(|_| IpsecError("too many SAs (max 65535)".into()))?;
            if sa.cfg.direction == SaDirection::In {
                inbound.push((sa.cfg.spi, sa.cfg.dst, i));
            }
        }
        inbound.sort_unstable();
        if let Some(w) = inbound
            .windows(2)
            .find(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1)
        {
            return Err(IpsecError(format!(
                "sas: two inbound SAs share SPI {:#x} and destination {}",
                w[0].0,
                fmt_ip4(w[0].1)
            )));
        }
        let mut tunnel_of_port = vec![None; ports];
        let mut locals = Vec::new();
        for (ti, t) in tunnels.iter_mut().enumerate() {
            t.out_sa = sas
                .iter()
                .position(|s| {
                    s.cfg.direction == SaDirection::Out
                        && s.cfg.mark == t.okey
                        && s.cfg.src == t.local
                        && s.cfg.dst == t.remote
                })
                .map(|i| i as u16);
            match tunnel_of_port.get_mut(usize::from(t.port.0)) {
                Some(slot) => *slot = Some(ti as u16),
                None => {
                    return Err(IpsecError(format!(
                        "tunnel {}: port index out of range",
                        t.name
                    )))
                }
            }
            locals.push((t.underlay, t.local));
        }
        locals.sort_unstable();
        locals.dedup();
        Ok(Ipsec {
            sas,
            tunnels,
            inbound,
            locals,
            tunnel_of_port,
            removed_inbound: Vec::new(),
            backend: Backend::default(),
        })
    }

    /// Records the inbound (SPI, destination) pairs of SAs that reloads removed (call before
    /// publishing the table).
    pub fn set_removed_inbound(&mut self, mut removed: Vec<(u32, [u8; 4])>) {
        removed.sort_unstable();
        removed.dedup();
        self.removed_inbound = removed;
    }

    /// The pairs given to [`Ipsec::set_removed_inbound`], sorted.
    pub fn removed_inbound(&self) -> &[(u32, [u8; 4])] {
        &self.removed_inbound
    }

    /// Whether an inbound SA with `spi` and destination `dst` was removed by a reload (for
    /// packets [`Ipsec::inbound_sa`] finds no SA for).
    pub fn was_removed(&self, spi: u32, dst: [u8; 4]) -> bool {
        self.removed_inbound.binary_search(&(spi, dst)).is_ok()
    }

    /// Attaches the crypto backend's value; `false` (and nothing changes) when one is attached
    /// already.
    pub fn attach_backend(&self, value: Arc<dyn Any + Send + Sync>) -> bool {
        self.backend.0.set(value).is_ok()
    }

    /// The attached backend value, if it is a `T`.
    pub fn backend<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.backend.0.get()?.clone().downcast::<T>().ok()
    }

    /// The inbound SA for `spi` and outer destination `dst`.
    #[inline]
    pub fn inbound_sa(&self, spi: u32, dst: [u8; 4]) -> Option<u16> {
        self.inbound
            .binary_search_by(|e| (e.0, e.1).cmp(&(spi, dst)))
            .ok()
            .map(|i| self.inbound[i].2)
    }

    /// The tunnel an inbound SA's packets are delivered to: endpoints reversed and the
    /// tunnel's ikey equal to the SA's mark (`vti_rcv` and the inbound policy check).
    pub fn tunnel_for_inbound(&self, sa: u16, src: [u8; 4], dst: [u8; 4]) -> Option<u16> {
        let s = self.sas.get(usize::from(sa))?;
        self.tunnels
            .iter()
            .position(|t| t.remote == src && t.local == dst && t.ikey == s.cfg.mark)
            .map(|i| i as u16)
    }

    /// Whether `ip` is a local address on `port`.
    #[inline]
    pub fn is_local(&self, port: PortIndex, ip: [u8; 4]) -> bool {
        self.locals.binary_search(&(port, ip)).is_ok()
    }

    /// The tunnel behind pipeline port `port`, if it is one.
    #[inline]
    pub fn tunnel_of_port(&self, port: PortIndex) -> Option<u16> {
        self.tunnel_of_port
            .get(usize::from(port.0))
            .copied()
            .flatten()
    }

    /// Tunnels whose next hop is `ip` on underlay `port` (ARP learning).
    pub fn tunnels_via(&self, port: PortIndex, ip: [u8; 4]) -> impl Iterator<Item = &Tunnel> {
        self.tunnels
            .iter()
            .filter(move |t| t.underlay == port && t.next_hop == ip)
    }
}

/// `a.b.c.d`.
pub fn fmt_ip4(ip: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

#[cfg(test)]
mod tests;
