//! IPv6 flow labels per flow (RFC 6437): the appliance's counterpart of Linux's
//! `ip6_flowlabel`, adapted to a box that labels the flows it forwards instead of the flows its
//! sockets send.
//!
//! # Behaviour
//! - A flow is the 5-tuple (addresses, upper-layer protocol, ports) of an IPv6 packet, or its
//!   3-tuple when the protocol has no ports or the packet is a fragment (so that every fragment
//!   of a datagram, and the datagrams around it, carry one label).
//! - Labels are 20 bits, never 0, drawn from secret random seeds and unique among the live
//!   labels of the whole appliance (the kernel's `fl_intern` retries on collision; so does
//!   [`FlowLabelTable::label`]). The labels of reservations (see [`Reservation`]) are never
//!   handed to a flow.
//! - Each entry has a last-use time and lingers `linger` after it (at least 6 s and at most the
//!   configured maximum, 150 s by default: the kernel's `FL_MIN_LINGER` / `FL_MAX_LINGER`). The
//!   control thread's garbage collector ([`FlowLabelTable::gc`]) reclaims expired entries; their
//!   labels return to the free pool one collection later, so a packet that read a label just
//!   before its entry died never shares it with a new flow.
//! - When a flow cannot get an entry (its two candidate buckets are full) or a unique label
//!   (the label space is nearly exhausted), it gets a stateless label from a keyed hash of the
//!   flow: still non-zero and the same for every packet of the flow, but not guaranteed unique.
//!   Both cases are counted.
//!
//! # Concurrency: one table for every lcore, no lock per packet
//! The table is a bucketised hash table shared by all worker lcores, so a flow's label is the
//! same on whichever lcore sees it and uniqueness is appliance-wide.
//! - A flow hashes to two buckets of [`SLOTS`] slots. A bucket's first cache line holds a writer
//!   lock word and the slots' metadata (state, 10-bit hash tag, label, version); each slot's key
//!   and times fill one more cache line. A hit reads two lines.
//! - Readers take no lock: each slot is a seqlock (the version in its metadata word); a reader
//!   that sees the version move treats it as a miss.
//! - A miss takes the writer locks of both buckets (in index order: no deadlock), looks again,
//!   and inserts. Two lcores meeting the same new flow at once serialise on those locks, so a
//!   flow never gets two entries. This is a lock per new flow, never per packet.
//! - Label uniqueness is a bitmap of 2^20 bits claimed with `fetch_or` (again per new flow).
//! - The only per-packet write to shared memory is the last-use time, stored (not
//!   read-modify-written) at most once per millisecond per flow.
//!
//! # Reservations change while the table runs
//! Every label has at most one owner at a time, recorded by its bit in the claimed-label
//! bitmap: a flow's entry, the collector (lingering or quarantined labels) or the reservations.
//! Only the control thread changes the reservations, in two steps around the publication of a
//! pipeline generation whose `flowlabel` actions pin them:
//! - [`FlowLabelTable::reserve`], before the new generation is published, claims each newly
//!   reserved label. A free label is claimed at once; a label that lingers or waits in
//!   quarantine is taken back from the collector; a label a live flow holds is refused (the
//!   reload fails naming the label and the flow), as Linux refuses to hand a label that another
//!   owner holds exclusively to a new owner. No flow can be given a label from the moment it is
//!   claimed.
//! - [`FlowLabelTable::release_reservations`], once no worker runs a generation that may still
//!   pin them, hands labels that are no longer reserved to the collector: they linger for the
//!   table's linger, as a flow's label does after its last packet, then wait one collection in
//!   quarantine before a new flow may get them.
//!
//! Workers never read the reservations except through the reserved-label bitmap (stateless
//! labels skip reserved labels), which only the control thread writes: a worker sees the
//! reservation set of its generation at its burst boundary, and no lock or shared
//! read-modify-write is added per packet.
use crate::jhash::{jhash_1word, jhash_2words};
use crate::wire::{ipproto, Parsed, L3};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Mutex;

/// The 20 label bits of an IPv6 header's first word.
pub const LABEL_MASK: u32 = 0x000f_ffff;
/// Shortest linger a configuration may ask for (the kernel's `FL_MIN_LINGER`, 6 s).
pub const MIN_LINGER_MS: u64 = 6_000;
/// Default longest linger (the kernel's `FL_MAX_LINGER`, 150 s).
pub const DEFAULT_MAX_LINGER_MS: u64 = 150_000;
/// Default table size (the kernel's `FL_MAX_SIZE`): a default, not a ceiling.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Largest table size a configuration may ask for (16 Mi flows; about 1.2 GiB).
pub const MAX_CAPACITY: usize = 1 << 24;
/// Slots per bucket: with the lock word they fill the bucket's first cache line.
pub const SLOTS: usize = 7;
/// Random candidates tried before scanning the bitmap for a free label.
const ALLOC_TRIES: u32 = 8;
/// Bitmap words (of 64 labels) scanned after the random candidates, from a random start: bounds
/// the cost of a new flow when the label space is nearly full.
const SCAN_WORDS: usize = 64;
/// Words of the label bitmap.
const LABEL_WORDS: usize = (LABEL_MASK as usize + 1) / 64;

/// What an egress port does to the flow label of IPv6 packets it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelMode {
    /// Leave every packet untouched.
    #[default]
    Off,
    /// Label packets whose flow label is zero; keep non-zero labels (RFC 6437 §2: a forwarding
    /// node may set the label of a packet that arrives with label zero, and delivers a
    /// non-zero label unchanged).
    Fill,
    /// Label every IPv6 packet, replacing whatever label it carried (for operators who must
    /// not trust the labels their sources set; RFC 6437 §6.1).
    Override,
}

impl LabelMode {
    /// The mode named `name` ("off", "fill", "override").
    pub fn from_name(name: &str) -> Option<LabelMode> {
        match name {
            "off" => Some(LabelMode::Off),
            "fill" => Some(LabelMode::Fill),
            "override" => Some(LabelMode::Override),
            _ => None,
        }
    }
}

/// How a reserved label may be shared (the `IPV6_FL_S_EXCL` / `IPV6_FL_S_ANY` idea).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Pinned by exactly one filter or class.
    Exclusive,
    /// May be pinned by several filters or classes.
    Shared,
}

impl Share {
    /// The name in configurations and listings.
    pub fn name(self) -> &'static str {
        match self {
            Share::Exclusive => "exclusive",
            Share::Shared => "shared",
        }
    }
}

/// A label kept out of the dynamic pool for filters that pin it (`flowlabel: L` actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The label, 1..=0xfffff.
    pub label: u32,
    /// Who may pin it.
    pub share: Share,
    /// How many actions pin it (for the listing).
    pub users: u32,
}

/// Table parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowLabelConfig {
    /// Live flows the table must hold (it is sized with headroom for the two-choice buckets).
    pub capacity: usize,
    /// Idle time after which a flow's label expires.
    pub linger_ms: u64,
    /// Largest linger allowed.
    pub max_linger_ms: u64,
    /// Reserved labels.
    pub reservations: Vec<Reservation>,
}

impl Default for FlowLabelConfig {
    fn default() -> Self {
        FlowLabelConfig {
            capacity: DEFAULT_CAPACITY,
            linger_ms: MIN_LINGER_MS,
            max_linger_ms: DEFAULT_MAX_LINGER_MS,
            reservations: Vec::new(),
        }
    }
}

/// A configuration the table refuses, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowLabelError(pub String);

impl std::fmt::Display for FlowLabelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FlowLabelError {}

impl FlowLabelConfig {
    /// Checks every field, naming the first that is wrong and what is allowed.
    pub fn validate(&self) -> Result<(), FlowLabelError> {
        let err = |m: String| Err(FlowLabelError(m));
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return err(format!(
                "`flowlabels.capacity`: {} is outside 1..={MAX_CAPACITY}",
                self.capacity
            ));
        }
        if self.max_linger_ms < MIN_LINGER_MS {
            return err(format!(
                "`flowlabels.max_linger_s`: {} s is below the minimum linger of {} s",
                self.max_linger_ms as f64 / 1000.0,
                MIN_LINGER_MS / 1000
            ));
        }
        if self.linger_ms < MIN_LINGER_MS || self.linger_ms > self.max_linger_ms {
            return err(format!(
                "`flowlabels.linger_s`: {} s is outside {}..={} s",
                self.linger_ms as f64 / 1000.0,
                MIN_LINGER_MS / 1000,
                self.max_linger_ms as f64 / 1000.0
            ));
        }
        let mut seen: std::collections::HashMap<u32, Share> = std::collections::HashMap::new();
        for (i, r) in self.reservations.iter().enumerate() {
            if r.label == 0 || r.label > LABEL_MASK {
                return err(format!(
                    "`flowlabels.reserved[{i}].label`: {:#x} is outside 0x1..=0xfffff",
                    r.label
                ));
            }
            if let Some(&s) = seen.get(&r.label) {
                if s == Share::Exclusive || r.share == Share::Exclusive {
                    return err(format!(
                        "`flowlabels.reserved[{i}].label`: {:#07x} is already reserved and one \
                         of the reservations is exclusive",
                        r.label
                    ));
                }
            }
            if r.share == Share::Exclusive && r.users > 1 {
                return err(format!(
                    "`flowlabels.reserved[{i}]`: exclusive label {:#07x} is pinned by {} \
                     actions; an exclusive label belongs to one filter or class (use `share: \
                     shared`)",
                    r.label, r.users
                ));
            }
            seen.insert(r.label, r.share);
        }
        Ok(())
    }
}

/// A flow as the label table keys it: packed addresses, protocol and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey([u64; 5]);

impl FlowKey {
    /// The flow of an IPv6 packet: addresses, upper-layer protocol, and ports for TCP, UDP,
    /// UDP-Lite, DCCP and SCTP when the packet is not a fragment. `None` for anything but IPv6.
    #[inline]
    pub fn of(data: &[u8], parsed: &Parsed) -> Option<FlowKey> {
        if parsed.l3 != L3::Ipv6 {
            return None;
        }
        let l3 = usize::from(parsed.l3_offset);
        let addrs: &[u8; 32] = data.get(l3 + 8..l3 + 40)?.try_into().ok()?;
        let word = |i: usize| {
            let (chunk, _) = addrs[i * 8..]
                .split_first_chunk::<8>()
                .unwrap_or((&[0; 8], &[]));
            u64::from_be_bytes(*chunk)
        };
        let proto = parsed.l4_proto;
        let ports = if parsed.fragment {
            0
        } else {
            match proto {
                ipproto::TCP | ipproto::UDP | ipproto::UDPLITE | ipproto::DCCP | ipproto::SCTP => {
                    let l4 = usize::from(parsed.l4_offset);
                    data.get(l4..l4 + 4)
                        .map_or(0, |p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
                }
                _ => 0,
            }
        };
        Some(FlowKey([
            word(0),
            word(1),
            word(2),
            word(3),
            u64::from(proto) << 32 | u64::from(ports),
        ]))
    }

    /// A key from its parts (tests, benchmarks, listings).
    pub fn new(src: [u8; 16], dst: [u8; 16], proto: u8, sport: u16, dport: u16) -> FlowKey {
        let w = |a: &[u8; 16], i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&a[i * 8..i * 8 + 8]);
            u64::from_be_bytes(b)
        };
        FlowKey([
            w(&src, 0),
            w(&src, 1),
            w(&dst, 0),
            w(&dst, 1),
            u64::from(proto) << 32 | u64::from(sport) << 16 | u64::from(dport),
        ])
    }

    /// Source address.
    pub fn src(&self) -> std::net::Ipv6Addr {
        std::net::Ipv6Addr::from(u128::from(self.0[0]) << 64 | u128::from(self.0[1]))
    }

    /// Destination address.
    pub fn dst(&self) -> std::net::Ipv6Addr {
        std::net::Ipv6Addr::from(u128::from(self.0[2]) << 64 | u128::from(self.0[3]))
    }

    /// Upper-layer protocol.
    pub fn proto(&self) -> u8 {
        (self.0[4] >> 32) as u8
    }

    /// Source and destination ports (0 for 3-tuple flows).
    pub fn ports(&self) -> (u16, u16) {
        ((self.0[4] >> 16) as u16, self.0[4] as u16)
    }

    /// A keyed hash of the flow: folded 64x64->128-bit multiplications of the key words
    /// xor-ed with secret words (the construction of wyhash/foldhash), about 20 instructions
    /// against jhash2's 100 for these 40 bytes. The secrets come from the table's random
    /// seeds, so outsiders cannot aim flows at one bucket.
    #[inline]
    fn hash(&self, k: &[u64; 6]) -> u32 {
        let w = &self.0;
        let a = fold_mul(w[0] ^ k[0], w[1] ^ k[1]);
        let b = fold_mul(w[2] ^ k[2], w[3] ^ k[3]);
        let h = fold_mul(a ^ b ^ w[4] ^ k[4], k[5]);
        (h ^ (h >> 32)) as u32
    }

    #[inline]
    fn eq(&self, words: &[u64; 5]) -> bool {
        let (a, b) = (&self.0, words);
        ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0
    }
}

/// The high and low halves of the 128-bit product, xor-ed.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Six secret 64-bit words from a 32-bit seed (splitmix64 steps).
fn secrets(seed: u32) -> [u64; 6] {
    let mut x = u64::from(seed) ^ 0x243f_6a88_85a3_08d3;
    std::array::from_fn(|i| {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        // The last word multiplies: keep it odd so it never zeroes the product.
        (z ^ (z >> 31)) | u64::from(i == 5)
    })
}

/// How a packet got its label, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOutcome {
    /// The flow had a live entry.
    Hit,
    /// A new entry with a unique label.
    New,
    /// No free slot in the flow's buckets: stateless label.
    FallbackTableFull,
    /// No free label found within the bounded search: stateless label.
    FallbackLabelsExhausted,
}

/// Slot states in the metadata word.
const EMPTY: u64 = 0;
const BUSY: u64 = 1;
const LIVE: u64 = 2;

#[inline]
fn meta(version: u32, tag: u32, state: u64, label: u32) -> u64 {
    u64::from(version) << 32 | u64::from(tag & 0x3ff) << 22 | state << 20 | u64::from(label)
}
#[inline]
fn meta_state(m: u64) -> u64 {
    (m >> 20) & 3
}
#[inline]
fn meta_tag(m: u64) -> u32 {
    ((m >> 22) & 0x3ff) as u32
}
#[inline]
fn meta_label(m: u64) -> u32 {
    (m as u32) & LABEL_MASK
}
#[inline]
fn meta_version(m: u64) -> u32 {
    (m >> 32) as u32
}

/// One slot's key and times: one cache line.
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Slot {
    key: [AtomicU64; 5],
    /// Last use, milliseconds (the workers' clock).
    last_use: AtomicU64,
    /// Creation time in milliseconds << 16 | creating lcore (low 16 bits).
    born: AtomicU64,
}

/// A bucket: lock word and slot metadata in the first cache line, then the slots.
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Bucket {
    lock: AtomicU64,
    meta: [AtomicU64; SLOTS],
    slots: [Slot; SLOTS],
}

impl Bucket {
    #[inline]
    fn lock(&self) {
        while self
            .lock
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        self.lock
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    #[inline]
    fn unlock(&self) {
        self.lock.store(0, Ordering::Release);
    }

    /// The slot holding `key`, and its label. Lock-free: a slot being rewritten reads as absent.
    #[inline]
    fn find(&self, key: &FlowKey, tag: u32) -> Option<(usize, u32)> {
        for (i, m) in self.meta.iter().enumerate() {
            let m1 = m.load(Ordering::Acquire);
            if meta_state(m1) != LIVE || meta_tag(m1) != tag {
                continue;
            }
            let s = &self.slots[i];
            let k = [
                s.key[0].load(Ordering::Relaxed),
                s.key[1].load(Ordering::Relaxed),
                s.key[2].load(Ordering::Relaxed),
                s.key[3].load(Ordering::Relaxed),
                s.key[4].load(Ordering::Relaxed),
            ];
            fence(Ordering::Acquire);
            if m.load(Ordering::Relaxed) == m1 && key.eq(&k) {
                return Some((i, meta_label(m1)));
            }
        }
        None
    }

    /// A consistent snapshot of slot `i` if it is live: (label, key, last use, born).
    fn read(&self, i: usize) -> Option<(u32, FlowKey, u64, u64)> {
        let m = &self.meta[i];
        loop {
            let m1 = m.load(Ordering::Acquire);
            if meta_state(m1) == EMPTY {
                return None;
            }
            if meta_state(m1) == BUSY {
                std::hint::spin_loop();
                continue;
            }
            let s = &self.slots[i];
            let k = std::array::from_fn(|j| s.key[j].load(Ordering::Relaxed));
            let last = s.last_use.load(Ordering::Relaxed);
            let born = s.born.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if m.load(Ordering::Relaxed) == m1 {
                return Some((meta_label(m1), FlowKey(k), last, born));
            }
        }
    }

    /// Free slots and the first of them (caller holds the lock).
    fn free(&self) -> (usize, usize) {
        let mut first = 0;
        let mut n = 0;
        for (i, m) in self.meta.iter().enumerate().rev() {
            if meta_state(m.load(Ordering::Relaxed)) == EMPTY {
                n += 1;
                first = i;
            }
        }
        (n, first)
    }

    /// Writes a new live entry into empty slot `i` (caller holds the lock).
    fn publish(&self, i: usize, key: &FlowKey, tag: u32, label: u32, now_ms: u64, lcore: u16) {
        let m = &self.meta[i];
        let v = meta_version(m.load(Ordering::Relaxed));
        m.store(meta(v.wrapping_add(1), 0, BUSY, 0), Ordering::Relaxed);
        fence(Ordering::Release);
        let s = &self.slots[i];
        for (dst, src) in s.key.iter().zip(key.0) {
            dst.store(src, Ordering::Relaxed);
        }
        s.last_use.store(now_ms, Ordering::Relaxed);
        s.born
            .store(now_ms << 16 | u64::from(lcore), Ordering::Relaxed);
        m.store(meta(v.wrapping_add(2), tag, LIVE, label), Ordering::Release);
    }

    /// Empties live slot `i` (caller holds the lock).
    fn clear(&self, i: usize) {
        let m = &self.meta[i];
        let v = meta_version(m.load(Ordering::Relaxed));
        m.store(meta(v.wrapping_add(1), 0, EMPTY, 0), Ordering::Release);
    }
}

/// Totals kept by the garbage collector (control thread).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Live entries after the last collection.
    pub live: u64,
    /// Entries reclaimed since start.
    pub expired: u64,
    /// Collections run.
    pub runs: u64,
    /// Labels waiting one collection before they return to the pool.
    pub quarantined: u64,
}

/// One reservation per label, in label order, with the users of every reservation of it.
fn merged(rs: &[Reservation]) -> Vec<Reservation> {
    let mut m: std::collections::BTreeMap<u32, Reservation> = std::collections::BTreeMap::new();
    for r in rs {
        m.entry(r.label)
            .and_modify(|e| e.users += r.users)
            .or_insert(*r);
    }
    m.into_values().collect()
}

/// The control thread's state (collector and reservations), behind one lock that workers
/// never take.
#[derive(Debug, Default)]
struct Control {
    /// Labels released by the previous collection: returned to the pool by the next one.
    quarantine: Vec<u32>,
    /// Labels of removed reservations, with the time (ms) their linger ends.
    lingering: Vec<(u32, u64)>,
    stats: GcStats,
    /// Labels claimed for reservations (their bits are set in `used` and `reserved`): those
    /// of the running generation and of any generation some worker may still run.
    held: std::collections::BTreeSet<u32>,
    /// The reservations as configured now, one per label (for the listing).
    listed: Vec<Reservation>,
}

/// How the reservations of two configurations differ (labels in order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReservationDiff {
    /// Labels reserved by the new configuration only.
    pub added: Vec<u32>,
    /// Labels reserved by the old configuration only.
    pub removed: Vec<u32>,
    /// Labels reserved by both whose share or number of pinning actions changed.
    pub changed: Vec<u32>,
}

impl ReservationDiff {
    /// The difference from `old` to `new` (several reservations of one label count as one,
    /// as the table merges them).
    pub fn between(old: &[Reservation], new: &[Reservation]) -> ReservationDiff {
        let (old, new) = (merged(old), merged(new));
        let find = |rs: &[Reservation], l: u32| rs.iter().find(|r| r.label == l).copied();
        let mut d = ReservationDiff::default();
        for r in &new {
            match find(&old, r.label) {
                None => d.added.push(r.label),
                Some(o) if o != *r => d.changed.push(r.label),
                Some(_) => {}
            }
        }
        d.removed = old
            .iter()
            .filter(|r| find(&new, r.label).is_none())
            .map(|r| r.label)
            .collect();
        d
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl std::fmt::Display for ReservationDiff {
    /// `added 0x05353; removed 0x00077, 0x00078; changed 0x00088` (empty when nothing changed).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sep = "";
        for (what, labels) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed", &self.changed),
        ] {
            if labels.is_empty() {
                continue;
            }
            let list: Vec<String> = labels.iter().map(|l| format!("{l:#07x}")).collect();
            write!(f, "{sep}{what} {}", list.join(", "))?;
            sep = "; ";
        }
        Ok(())
    }
}

/// A reservation the table cannot grant now: a live flow holds its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveError {
    /// The label.
    pub label: u32,
    /// The flow holding it, how long it has been idle and its linger (milliseconds); `None`
    /// when an lcore is giving the label to a new flow (or moving its entry) at this moment.
    pub holder: Option<(FlowKey, u64, u64)>,
}

impl std::fmt::Display for ReserveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = self.label;
        match &self.holder {
            Some((flow, idle_ms, linger_ms)) => {
                let (sp, dp) = flow.ports();
                write!(
                    f,
                    "{l:#07x} is in use by a live flow ({} -> {}, protocol {}, ports {sp} -> \
                     {dp}; idle for {:.1} s, it expires once idle for {:.1} s)",
                    flow.src(),
                    flow.dst(),
                    flow.proto(),
                    *idle_ms as f64 / 1000.0,
                    *linger_ms as f64 / 1000.0
                )?;
            }
            None => write!(f, "{l:#07x} is being given to a new flow")?,
        }
        f.write_str(
            ": a label becomes reserved only while no flow holds it; reload again once the \
             flow has expired, or reserve another label",
        )
    }
}

impl std::error::Error for ReserveError {}

/// Where a label claimed by [`FlowLabelTable::reserve`] came from (to undo a refused call).
enum Claimed {
    Free(u32),
    Quarantine(u32),
    Lingering(u32, u64),
}

/// One row of the operator listing (`/proc/net/ip6_flowlabel`'s columns, plus the flow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelEntry {
    /// The label.
    pub label: u32,
    /// "dynamic" for a flow's label, the reservation's share for a reserved label, "released"
    /// for the label of a removed reservation while it lingers.
    pub share: &'static str,
    /// The lcore that created the entry (`None` for reservations).
    pub owner: Option<u16>,
    /// Reservations: the actions pinning the label; flows: 1.
    pub users: u32,
    /// Linger in milliseconds (0 for reservations: they never expire).
    pub linger_ms: u64,
    /// Milliseconds until the entry expires unless used again (`None` for reservations); for
    /// a released reservation, until its linger ends.
    pub expires_ms: Option<u64>,
    /// The flow (`None` for reservations).
    pub flow: Option<FlowKey>,
}

/// The appliance-wide flow-label table. Shared by every worker lcore (`Arc`) and by the control
/// thread (collector, listings, reservations); survives configuration reloads.
#[derive(Debug)]
pub struct FlowLabelTable {
    buckets: Box<[Bucket]>,
    /// Claimed labels: dynamic ones (live, lingering, quarantined), reserved ones and 0.
    used: Box<[AtomicU64]>,
    /// Reserved labels and 0: written by the control thread only, read by workers for
    /// stateless labels.
    reserved: Box<[AtomicU64]>,
    capacity: usize,
    /// Written by the control thread only (a reload may change it); read by the collector and
    /// listings, never by workers.
    linger_ms: AtomicU64,
    seeds: [u32; 3],
    /// Secret words of the flow hash, from `seeds[0]`.
    keys: [u64; 6],
    control: Mutex<Control>,
}

impl FlowLabelTable {
    /// A table for `cfg` (validated) with random seeds.
    pub fn new(cfg: &FlowLabelConfig) -> Result<FlowLabelTable, FlowLabelError> {
        let r = crate::flow::random_u32;
        Self::with_seeds(cfg, [r(), r(), r()])
    }

    /// A table with fixed seeds (tests and benchmarks).
    pub fn with_seeds(
        cfg: &FlowLabelConfig,
        seeds: [u32; 3],
    ) -> Result<FlowLabelTable, FlowLabelError> {
        cfg.validate()?;
        // Two-choice buckets of 7 fill to about 95% before a flow finds both full: 25% headroom.
        let n = (cfg.capacity + cfg.capacity / 4).div_ceil(SLOTS).max(2);
        let buckets: Box<[Bucket]> = (0..n).map(|_| Bucket::default()).collect();
        let used: Box<[AtomicU64]> = (0..LABEL_WORDS).map(|_| AtomicU64::new(0)).collect();
        let reserved: Box<[AtomicU64]> = (0..LABEL_WORDS).map(|_| AtomicU64::new(0)).collect();
        // Label 0 means "no label": never a flow's.
        used[0].store(1, Ordering::Relaxed);
        reserved[0].store(1, Ordering::Relaxed);
        let t = FlowLabelTable {
            buckets,
            used,
            reserved,
            capacity: cfg.capacity,
            linger_ms: AtomicU64::new(cfg.linger_ms),
            seeds,
            keys: secrets(seeds[0]),
            control: Mutex::new(Control::default()),
        };
        // Nothing holds a label yet: every reservation is granted.
        t.reserve(&cfg.reservations, 0)
            .map_err(|e| FlowLabelError(format!("`flowlabels.reserved`: {e}")))?;
        Ok(t)
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `next` the reservations (control thread, before publishing a generation whose
    /// actions pin them; `now_ms` on the workers' clock). Each label it reserves that the
    /// reservations do not hold yet is claimed: a free one at once, a lingering or quarantined
    /// one back from the collector. A label a live flow holds is refused with that flow, and
    /// the call then changes nothing. Labels `next` no longer reserves stay reserved until
    /// [`FlowLabelTable::release_reservations`]: generations that pin them may still run.
    pub fn reserve(&self, next: &[Reservation], now_ms: u64) -> Result<(), ReserveError> {
        let mut c = self.control();
        let mut claimed: Vec<Claimed> = Vec::new();
        let wanted = merged(next);
        for r in &wanted {
            let l = r.label & LABEL_MASK;
            if c.held.contains(&l) {
                continue;
            }
            if self.try_claim(l) {
                claimed.push(Claimed::Free(l));
            } else if let Some(i) = c.quarantine.iter().position(|&q| q == l) {
                c.quarantine.swap_remove(i);
                claimed.push(Claimed::Quarantine(l));
            } else if let Some(i) = c.lingering.iter().position(|&(q, _)| q == l) {
                let (_, until) = c.lingering.swap_remove(i);
                claimed.push(Claimed::Lingering(l, until));
            } else {
                // A flow holds it: undo this call's claims, name the flow.
                for k in claimed {
                    match k {
                        Claimed::Free(l) => self.release_label(l),
                        Claimed::Quarantine(l) => c.quarantine.push(l),
                        Claimed::Lingering(l, until) => c.lingering.push((l, until)),
                    }
                }
                return Err(ReserveError {
                    label: l,
                    holder: self.holder(l, now_ms),
                });
            }
        }
        for k in claimed {
            let (Claimed::Free(l) | Claimed::Quarantine(l) | Claimed::Lingering(l, _)) = k;
            c.held.insert(l);
            self.set_reserved(l, true);
        }
        c.listed = wanted;
        Ok(())
    }

    /// Hands the labels held for reservations that `keep` does not list to the collector
    /// (control thread, once no worker runs a generation that may pin them; `now_ms` on the
    /// workers' clock): each lingers for the table's linger, then waits one collection in
    /// quarantine, before a new flow may get it. Returns those labels.
    pub fn release_reservations(&self, keep: &[Reservation], now_ms: u64) -> Vec<u32> {
        let mut c = self.control();
        let released: Vec<u32> = c
            .held
            .iter()
            .copied()
            .filter(|l| !keep.iter().any(|r| r.label & LABEL_MASK == *l))
            .collect();
        let until = now_ms.saturating_add(self.linger_ms());
        for &l in &released {
            c.held.remove(&l);
            self.set_reserved(l, false);
            c.lingering.push((l, until));
        }
        released
    }

    /// The reservations as last set (merged: one per label, in label order).
    pub fn reservations(&self) -> Vec<Reservation> {
        self.control().listed.clone()
    }

    /// Labels held for reservations now: those of the running reservations and of removed ones
    /// not released yet.
    pub fn reserved_labels(&self) -> Vec<u32> {
        self.control().held.iter().copied().collect()
    }

    /// The live flow holding `label`, its idle time and the linger (a scan; control thread).
    fn holder(&self, label: u32, now_ms: u64) -> Option<(FlowKey, u64, u64)> {
        self.buckets.iter().find_map(|b| {
            (0..SLOTS).find_map(|i| {
                let (l, key, last, _) = b.read(i)?;
                (l == label).then(|| (key, now_ms.saturating_sub(last), self.linger_ms()))
            })
        })
    }

    /// Sets or clears `label` in the reserved bitmap (control thread only: a plain store).
    fn set_reserved(&self, label: u32, on: bool) {
        let (w, bit) = (label as usize / 64, 1u64 << (label % 64));
        let v = self.reserved[w].load(Ordering::Relaxed);
        let v = if on { v | bit } else { v & !bit };
        self.reserved[w].store(v, Ordering::Release);
    }

    /// Slots in the table (at least the configured capacity).
    pub fn slots(&self) -> usize {
        self.buckets.len() * SLOTS
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of table memory per slot (bucket size / slots per bucket).
    pub fn bytes_per_slot() -> usize {
        std::mem::size_of::<Bucket>() / SLOTS
    }

    /// Total bytes of the table, label bitmaps included.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
            + std::mem::size_of_val(&*self.used)
            + std::mem::size_of_val(&*self.reserved)
    }

    /// Dynamic labels claimed now (live entries, lingering and quarantined labels).
    pub fn labels_in_use(&self) -> usize {
        self.used
            .iter()
            .zip(self.reserved.iter())
            .map(|(u, r)| {
                (u.load(Ordering::Relaxed) & !r.load(Ordering::Relaxed)).count_ones() as usize
            })
            .sum()
    }

    /// The linger.
    pub fn linger_ms(&self) -> u64 {
        self.linger_ms.load(Ordering::Relaxed)
    }

    /// Sets the linger (control thread; validated by the caller): entries expire once idle for
    /// longer than it from the next collection on, measured from each flow's last packet.
    pub fn set_linger_ms(&self, linger_ms: u64) {
        self.linger_ms.store(linger_ms, Ordering::Relaxed);
    }

    /// True when `label` is reserved.
    #[inline]
    pub fn is_reserved(&self, label: u32) -> bool {
        let l = (label & LABEL_MASK) as usize;
        self.reserved[l / 64].load(Ordering::Acquire) & (1 << (l % 64)) != 0
    }

    /// The flow's first bucket: `h` mapped onto the bucket count by multiply-shift (no
    /// power-of-two rounding of the table).
    #[inline]
    fn bucket1(&self, h: u32) -> usize {
        ((u64::from(h) * self.buckets.len() as u64) >> 32) as usize
    }

    /// The flow's second bucket: a second hash of `h`, never the first bucket.
    #[inline]
    fn bucket2(&self, h: u32, b1: usize) -> usize {
        let n = self.buckets.len() as u64;
        let b2 = ((u64::from(jhash_1word(h, self.seeds[1])) * n) >> 32) as usize;
        if b2 == b1 {
            (b1 + 1) % self.buckets.len()
        } else {
            b2
        }
    }

    /// The flow's two buckets.
    #[inline]
    fn buckets_of(&self, h: u32) -> (usize, usize) {
        let b1 = self.bucket1(h);
        (b1, self.bucket2(h, b1))
    }

    /// The label of `key`'s flow at `now_ms`, creating its entry (lcore `lcore`) if needed.
    /// Returns the label (never 0, never a reserved label), how it was obtained, and how many
    /// candidate labels were already taken.
    #[inline]
    pub fn label(&self, key: &FlowKey, now_ms: u64, lcore: u16) -> (u32, LabelOutcome, u32) {
        let h = key.hash(&self.keys);
        // The low bits: the bucket index comes from the high ones.
        let tag = h & 0x3ff;
        let b1 = self.bucket1(h);
        if let Some(label) = self.hit(b1, key, tag, now_ms) {
            return (label, LabelOutcome::Hit, 0);
        }
        // The second bucket's hash only when the first misses.
        let b2 = self.bucket2(h, b1);
        if let Some(label) = self.hit(b2, key, tag, now_ms) {
            return (label, LabelOutcome::Hit, 0);
        }
        self.insert(key, h, tag, (b1, b2), now_ms, lcore)
    }

    /// `key`'s label if bucket `b` holds it, refreshing its last use.
    #[inline(always)]
    fn hit(&self, b: usize, key: &FlowKey, tag: u32, now_ms: u64) -> Option<u32> {
        let bucket = &self.buckets[b];
        let (i, label) = bucket.find(key, tag)?;
        let s = &bucket.slots[i].last_use;
        if s.load(Ordering::Relaxed) != now_ms {
            s.store(now_ms, Ordering::Relaxed);
        }
        Some(label)
    }

    #[cold]
    #[inline(never)]
    fn insert(
        &self,
        key: &FlowKey,
        h: u32,
        tag: u32,
        (b1, b2): (usize, usize),
        now_ms: u64,
        lcore: u16,
    ) -> (u32, LabelOutcome, u32) {
        let (lo, hi) = (b1.min(b2), b1.max(b2));
        self.buckets[lo].lock();
        self.buckets[hi].lock();
        let result = 'locked: {
            // Another lcore may have inserted the flow since the lock-free look.
            for b in [b1, b2] {
                if let Some((_, label)) = self.buckets[b].find(key, tag) {
                    break 'locked (label, LabelOutcome::Hit, 0);
                }
            }
            // The less loaded of the two buckets (two-choice placement keeps the fullest
            // bucket near the mean long after first-fit would overflow).
            let (f1, f2) = (self.buckets[b1].free(), self.buckets[b2].free());
            let free = if f2.0 > f1.0 { (b2, f2) } else { (b1, f1) };
            let (b, (n, i)) = free;
            let (b, i) = if n > 0 {
                (b, i)
            } else if let Some(place) = self.displace(b1, b2) {
                place
            } else {
                break 'locked (self.fallback(h), LabelOutcome::FallbackTableFull, 0);
            };
            let (label, retries) = self.claim_label(h);
            let Some(label) = label else {
                break 'locked (
                    self.fallback(h),
                    LabelOutcome::FallbackLabelsExhausted,
                    retries,
                );
            };
            self.buckets[b].publish(i, key, tag, label, now_ms, lcore);
            (label, LabelOutcome::New, retries)
        };
        self.buckets[hi].unlock();
        self.buckets[lo].unlock();
        result
    }

    /// Both of a new flow's buckets are full (their locks are held): moves one of their
    /// entries to that entry's other bucket when it has room (one cuckoo step), and returns the
    /// freed slot. The moved entry is published in its new slot before the old one is cleared,
    /// so a lock-free reader sees it at least once, or misses and looks again under the same two
    /// bucket locks the move holds.
    #[cold]
    fn displace(&self, b1: usize, b2: usize) -> Option<(usize, usize)> {
        for b in [b1, b2] {
            let bucket = &self.buckets[b];
            for i in 0..SLOTS {
                let m = bucket.meta[i].load(Ordering::Relaxed);
                if meta_state(m) != LIVE {
                    continue;
                }
                let s = &bucket.slots[i];
                let key = FlowKey(std::array::from_fn(|j| s.key[j].load(Ordering::Relaxed)));
                let (v1, v2) = self.buckets_of(key.hash(&self.keys));
                let alt = if v1 == b { v2 } else { v1 };
                if alt == b1 || alt == b2 {
                    continue;
                }
                let target = &self.buckets[alt];
                // Another inserter may hold `alt` and wait for one of ours: never wait here.
                if !target.try_lock() {
                    continue;
                }
                let (free, j) = target.free();
                if free > 0 {
                    let last = s.last_use.load(Ordering::Relaxed);
                    let born = s.born.load(Ordering::Relaxed);
                    target.publish(j, &key, meta_tag(m), meta_label(m), last, 0);
                    target.slots[j].born.store(born, Ordering::Relaxed);
                    bucket.clear(i);
                    target.unlock();
                    return Some((b, i));
                }
                target.unlock();
            }
        }
        None
    }

    /// Claims a free label: random candidates first (as `fl_intern` retries), then a bounded
    /// scan of the bitmap. Returns the label, if any, and the number of taken candidates.
    fn claim_label(&self, h: u32) -> (Option<u32>, u32) {
        let mut taken = 0;
        for attempt in 0..ALLOC_TRIES {
            let l = jhash_2words(h, attempt, self.seeds[2]) & LABEL_MASK;
            if self.try_claim(l) {
                return (Some(l), taken);
            }
            taken += 1;
        }
        let start = jhash_2words(h, ALLOC_TRIES, self.seeds[2]) as usize % LABEL_WORDS;
        for i in 0..SCAN_WORDS {
            let w = (start + i) % LABEL_WORDS;
            loop {
                let v = self.used[w].load(Ordering::Relaxed);
                if v == u64::MAX {
                    break;
                }
                let l = (w * 64) as u32 + (!v).trailing_zeros();
                if self.try_claim(l) {
                    return (Some(l), taken);
                }
                taken += 1;
            }
        }
        (None, taken)
    }

    #[inline]
    fn try_claim(&self, label: u32) -> bool {
        let (w, bit) = (label as usize / 64, 1u64 << (label % 64));
        self.used[w].fetch_or(bit, Ordering::AcqRel) & bit == 0
    }

    fn release_label(&self, label: u32) {
        let (w, bit) = (label as usize / 64, 1u64 << (label % 64));
        if self.reserved[w].load(Ordering::Relaxed) & bit == 0 {
            self.used[w].fetch_and(!bit, Ordering::AcqRel);
        }
    }

    /// The stateless label of a flow that has no entry: a keyed hash, never 0, never reserved.
    #[inline]
    fn fallback(&self, h: u32) -> u32 {
        let mut l = jhash_1word(h, !self.seeds[2]) & LABEL_MASK;
        while self.is_reserved(l) {
            l = (l + 1) & LABEL_MASK;
        }
        l
    }

    /// One collection at `now_ms` (control thread): returns the labels quarantined by the
    /// previous collection to the pool, quarantines the labels of removed reservations whose
    /// linger ended, then removes every entry idle for longer than the linger and quarantines
    /// its label. Never blocks a worker for more than one bucket's removal.
    pub fn gc(&self, now_ms: u64) -> GcStats {
        let mut st = self.control();
        for l in std::mem::take(&mut st.quarantine) {
            self.release_label(l);
        }
        let st = &mut *st;
        st.lingering.retain(|&(l, until)| {
            let done = until <= now_ms;
            if done {
                st.quarantine.push(l);
            }
            !done
        });
        let mut live = 0u64;
        for bucket in self.buckets.iter() {
            for i in 0..SLOTS {
                let m = bucket.meta[i].load(Ordering::Acquire);
                if meta_state(m) != LIVE {
                    continue;
                }
                if !self.expired(bucket.slots[i].last_use.load(Ordering::Relaxed), now_ms) {
                    live += 1;
                    continue;
                }
                bucket.lock();
                let m = bucket.meta[i].load(Ordering::Relaxed);
                let last = bucket.slots[i].last_use.load(Ordering::Relaxed);
                if meta_state(m) == LIVE && self.expired(last, now_ms) {
                    bucket.clear(i);
                    st.quarantine.push(meta_label(m));
                    st.stats.expired += 1;
                } else if meta_state(m) == LIVE {
                    live += 1;
                }
                bucket.unlock();
            }
        }
        st.stats.live = live;
        st.stats.runs += 1;
        st.stats.quarantined = st.quarantine.len() as u64;
        st.stats
    }

    #[inline]
    fn expired(&self, last_use: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(last_use) > self.linger_ms()
    }

    /// The collector's totals as of its last run.
    pub fn gc_stats(&self) -> GcStats {
        self.control().stats
    }

    /// Live entries now (a scan; for listings and tests).
    pub fn live(&self) -> usize {
        self.buckets
            .iter()
            .flat_map(|b| b.meta.iter())
            .filter(|m| meta_state(m.load(Ordering::Relaxed)) == LIVE)
            .count()
    }

    /// The live table at `now_ms`: reservations first, then the labels of removed
    /// reservations that still linger, then up to `limit` flows in table order. Lock-free for
    /// the flows: a flow that moves between its two buckets during the scan may be listed
    /// twice (with its one label).
    pub fn entries(&self, now_ms: u64, limit: usize) -> Vec<LabelEntry> {
        let mut out: Vec<LabelEntry> = Vec::new();
        let linger_ms = self.linger_ms();
        {
            let c = self.control();
            out.extend(c.listed.iter().map(|r| LabelEntry {
                label: r.label,
                share: r.share.name(),
                owner: None,
                users: r.users,
                linger_ms: 0,
                expires_ms: None,
                flow: None,
            }));
            let mut lingering = c.lingering.clone();
            lingering.sort_unstable();
            out.extend(lingering.iter().map(|&(label, until)| LabelEntry {
                label,
                share: "released",
                owner: None,
                users: 0,
                linger_ms,
                expires_ms: Some(until.saturating_sub(now_ms)),
                flow: None,
            }));
        }
        let mut flows = 0;
        'all: for b in self.buckets.iter() {
            for i in 0..SLOTS {
                if flows >= limit {
                    break 'all;
                }
                if let Some((label, key, last, born)) = b.read(i) {
                    flows += 1;
                    out.push(LabelEntry {
                        label,
                        share: "dynamic",
                        owner: Some(born as u16),
                        users: 1,
                        linger_ms,
                        expires_ms: Some((last + linger_ms).saturating_sub(now_ms)),
                        flow: Some(key),
                    });
                }
            }
        }
        out
    }
}

/// The flow label of an IPv6 header starting at `ip`.
#[inline]
pub fn read_label(ip: &[u8]) -> Option<u32> {
    ip.first_chunk::<4>()
        .map(|w| u32::from_be_bytes(*w) & LABEL_MASK)
}

/// Writes `label` into the IPv6 header starting at `ip` (version and traffic class kept). The
/// label is not covered by any checksum.
#[inline]
pub fn write_label(ip: &mut [u8], label: u32) {
    if let Some(w) = ip.first_chunk_mut::<4>() {
        let v = u32::from_be_bytes(*w) & !LABEL_MASK | (label & LABEL_MASK);
        *w = v.to_be_bytes();
    }
}

/// Renders `entries` like `/proc/net/ip6_flowlabel`, with the flow appended.
pub fn render_table(entries: &[LabelEntry]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from(
        "Label S         Owner Users Linger Expires  Dst                                     \
         Src                                     Proto Sport Dport\n",
    );
    for e in entries {
        let owner = e.owner.map_or("-".to_string(), |o| o.to_string());
        let expires = e
            .expires_ms
            .map_or("-".to_string(), |ms| format!("{}", ms.div_ceil(1000)));
        let (dst, src, proto, sp, dp) = match &e.flow {
            Some(f) => (
                f.dst().to_string(),
                f.src().to_string(),
                f.proto().to_string(),
                f.ports().0.to_string(),
                f.ports().1.to_string(),
            ),
            None => ("::".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            s,
            "{:05X} {:<9} {:>5} {:>5} {:>6} {:>7}  {:<39} {:<39} {:>5} {:>5} {:>5}",
            e.label,
            e.share,
            owner,
            e.users,
            e.linger_ms / 1000,
            expires,
            dst,
            src,
            proto,
            sp,
            dp
        );
    }
    s
}

#[cfg(test)]
mod tests;
