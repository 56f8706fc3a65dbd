//! The per-packet pipeline: parse once, run the ingress port's classifier chain, fall back to the
//! port's forwarding entry, run the egress port's chain, hand the packet to a [`Sink`].
//!
//! Configuration is one immutable [`Generation`]; workers read it through a
//! [`GenerationReader`], which costs one relaxed-ordering atomic load per burst and no lock. A new
//! generation is published by the control thread with [`GenerationCell::publish`] and picked up
//! by every worker at its next burst boundary.
//!
//! Stages plug in as [`Classifier`]s (they choose; they do not move packets) whose [`Filter`]
//! carries the [`Action`]s to run on a match, as Linux tc filters carry actions.
use crate::cbpf::{self, BurstCtx, BURST_MAX};
use crate::flowlabel::{self, FlowKey, FlowLabelTable, LabelMode};
use crate::ipsec::Ipsec;
use crate::packet::Packet;
use crate::stats::StatsWriter;
use crate::wire::{self, Parsed, L3};
use crate::DropReason;
use arc_swap::ArcSwap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A port as the pipeline names it: an index into [`Generation::ports`]. Physical (DPDK) ports
/// and, later, virtual ports (tunnels) share this space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PortIndex(pub u16);

impl fmt::Display for PortIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Maximum number of times a packet may be redirected from one port's egress hook to
/// another's before it is dropped (Linux act_mirred's nest limit).
pub const REDIRECT_NEST_LIMIT: u8 = 4;

/// What a classifier sees of a packet.
#[derive(Debug, Clone, Copy)]
pub struct PacketView<'a> {
    /// First segment from the Ethernet header.
    pub data: &'a [u8],
    /// Total frame length.
    pub frame_len: u32,
    /// The parse result (headers already validated).
    pub parsed: &'a Parsed,
    /// The port whose hook is running (Linux `skb->dev`): the receiving port on its ingress hook,
    /// the sending port on its egress hook, the target after a mirred hop.
    pub dev: PortIndex,
    /// The port the packet last came from (Linux `skb->skb_iif`): the receiving port, or the port
    /// whose hook ran the last mirror/redirect that moved the packet.
    pub iif: PortIndex,
    /// The receiving port's MAC address (for the packet type: host, broadcast, ...).
    pub ingress_mac: [u8; 6],
    /// NIC RSS hash, if any.
    pub rss_hash: Option<u32>,
    /// Packet mark set by earlier actions (0 = none).
    pub mark: u32,
    /// Packet priority set by earlier actions (Linux `skb->priority`; 0 = none).
    pub priority: u32,
    /// Class id chosen by the last matching classifier or set by an action (0 = none; tc's
    /// `res->classid`).
    pub classid: u32,
    /// IPv6 flow label pinned by a `flowlabel` action (a reservation), 0 = none: labelling
    /// egress ports write it instead of the flow's dynamic label.
    pub flowlabel: u32,
}

/// A tc verdict returned by a direct-action classifier (`cls_bpf_exec_opcode`'s set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectVerdict {
    /// `TC_ACT_OK`: stop classifying; the packet takes the port's forwarding entry.
    Ok,
    /// `TC_ACT_SHOT`: drop (counted as `action_drop`).
    Shot,
    /// `TC_ACT_STOLEN`: the packet is consumed (counted as `stolen`).
    Stolen,
    /// `TC_ACT_TRAP`: handed to the slow path; the appliance has none, so consumed like stolen.
    Trap,
    /// `TC_ACT_REDIRECT`: send out of the filter's redirect port.
    Redirect,
}

/// What a classifier decided about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The filter does not apply: try the next one (for direct action: `TC_ACT_UNSPEC` and
    /// every unknown value).
    NoMatch,
    /// The filter matches with this class id: run its actions.
    Match(u32),
    /// A direct-action classifier decided on its own, and set this class id.
    Direct(DirectVerdict, u32),
}

/// Chooses whether a filter matches a packet. Implementations are immutable (shared by every
/// lcore through the generation) and must not allocate, lock or panic per packet.
pub trait Classifier: Send + Sync + fmt::Debug {
    /// The decision for `pkt`.
    fn classify(&self, pkt: &PacketView<'_>) -> Verdict;

    /// For operators: the engine running the classifier and its program size (0 when the
    /// notion does not apply).
    fn describe(&self) -> (&'static str, usize) {
        ("native", 0)
    }

    /// For operators: the classifier kind ("bpf", "flow", ...).
    fn kind(&self) -> &'static str {
        "native"
    }

    /// A hash seed the control thread re-randomises periodically (cls_flow's perturbation);
    /// `None` for classifiers without one.
    fn perturbation(&self) -> Option<Perturbation> {
        None
    }
}

/// The classifiers of several consecutive filters on a hook, run as one (for example the
/// classic-BPF programs of a hook fused into one translated program): one call decides for
/// all of them. Implementations are immutable and must not allocate, lock or panic per packet.
pub trait ChainClassifier: Send + Sync + fmt::Debug {
    /// Number of member filters.
    fn len(&self) -> usize;

    /// Never true: a chain has at least one member.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs the members from `first` on, in order, as each member's own
    /// [`Classifier::classify`] would: returns the first member whose verdict is not
    /// [`Verdict::NoMatch`], with that verdict, or `None` when every one from `first` on said
    /// `NoMatch`.
    fn classify_from(&self, pkt: &PacketView<'_>, first: usize) -> Option<(usize, Verdict)>;

    /// Whether some member, run from the first on `frame` as a port's ingress hook sees it
    /// before any filter ran, would say something other than [`Verdict::NoMatch`]: exactly
    /// `classify_from(view, 0).is_some()` for the view of that frame. Chains that read only
    /// the frame (not the parse) answer without one, which lets a hook that is a single chain
    /// pass the frames no member decides on without building a view; the default (`true`)
    /// sends every frame the full way.
    fn decides_at_ingress(&self, frame: &IngressFrame<'_>) -> bool {
        let _ = frame;
        true
    }

    /// How the chain answers whole bursts ([`ChainClassifier::decides_at_ingress_ctx`]), or
    /// `None` (the default) when it answers frame by frame only.
    fn burst_form(&self) -> Option<BurstForm> {
        None
    }

    /// [`ChainClassifier::decides_at_ingress`] for the frames of `ctx` at once, which the
    /// caller filled as [`ChainClassifier::burst_form`] says: bit `i` of the result is set when
    /// frame `i` needs the walk through the hook. A set bit may also mean "ask frame by frame"
    /// for a frame shorter than [`BurstForm::short`]; any set bit is safe, as walking a frame
    /// no member decides on forwards it unchanged. The default sets every bit.
    fn decides_at_ingress_ctx(&self, ctx: &mut BurstCtx<'_>) -> u64 {
        let _ = ctx;
        u64::MAX
    }
}

/// What a chain's whole-burst form ([`ChainClassifier::decides_at_ingress_ctx`]) needs of
/// each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstForm {
    /// `Some` when the members read metadata (ancillary loads): each frame is pushed with
    /// [`cbpf::ingress_meta`], whose argument is this flag (the members read the rx hash).
    pub meta: Option<bool>,
    /// A frame whose first segment is shorter than this may come back marked only because it
    /// is too short for the burst body: [`ChainClassifier::decides_at_ingress`] answers for it.
    pub short: usize,
}

impl<'a> IngressFrame<'a> {
    /// `pkt` as received on `dev`, whose MAC address is `ingress_mac`.
    #[inline]
    pub fn of<P: Packet>(pkt: &'a P, dev: PortIndex, ingress_mac: [u8; 6]) -> IngressFrame<'a> {
        IngressFrame {
            data: pkt.data(),
            frame_len: pkt.frame_len(),
            dev,
            ingress_mac,
            rss_hash: pkt.rss_hash(),
        }
    }
}

/// A received frame before its port's ingress hook ran (no mark, priority, class id or label
/// set yet): what [`ChainClassifier::decides_at_ingress`] sees.
#[derive(Debug, Clone, Copy)]
pub struct IngressFrame<'a> {
    /// First segment from the Ethernet header.
    pub data: &'a [u8],
    /// Total frame length.
    pub frame_len: u32,
    /// The receiving port.
    pub dev: PortIndex,
    /// The receiving port's MAC address.
    pub ingress_mac: [u8; 6],
    /// NIC RSS hash, if any.
    pub rss_hash: Option<u32>,
}

/// A filter's place in a [`ChainClassifier`]: the chain decides for the filters
/// `index` places before this one up to `len()` filters in all, which must be consecutive on
/// the hook and carry the same chain with indices 0, 1, ... ([`Generation::validate`] checks).
#[derive(Debug, Clone)]
pub struct Fused {
    /// The chain.
    pub chain: Arc<dyn ChainClassifier>,
    /// This filter's member index in it.
    pub index: usize,
}

/// A classifier's hash seed and how often to re-randomise it. Workers read the seed with one
/// relaxed load per packet; only the control thread stores to it (never a read-modify-write).
#[derive(Debug, Clone)]
pub struct Perturbation {
    /// Re-seed interval.
    pub period: std::time::Duration,
    /// The seed the classifier hashes with.
    pub seed: Arc<std::sync::atomic::AtomicU32>,
}

/// Which way a mirred action sends the packet (Linux act_mirred's egress/ingress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirredDirection {
    /// Out of the target port: its egress filters run, then it is transmitted.
    Egress,
    /// Into the target port, as if received there: its ingress filters and forwarding entry run.
    Ingress,
}

/// Whether a mirred action copies the packet or moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirredOp {
    /// A zero-copy clone goes to the target; the original goes on with the next action.
    Mirror,
    /// The packet itself goes to the target; the filter's remaining actions do not run.
    Redirect,
}

/// Where a mirred action sends the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirredTarget {
    /// One port.
    Port(PortIndex),
    /// Every member of a port group (an index into [`Generation::groups`]) except the port whose
    /// hook runs the action (tc's block cast: never back where the packet is).
    Group(u16),
}

/// A mirror or redirect action (Linux act_mirred).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mirred {
    /// Egress or ingress of the target.
    pub direction: MirredDirection,
    /// Mirror (copy) or redirect (move).
    pub op: MirredOp,
    /// Port or port group.
    pub target: MirredTarget,
}

/// What to do with a packet a filter matched. Actions of a filter run in order; when the last
/// one has run without deciding, the packet goes on as if passed (tc's "pipe" at the end of
/// an action list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop classifying; the packet takes the port's forwarding entry (tc "ok").
    Pass,
    /// Drop the packet (counted as `action_drop`).
    Drop,
    /// Mirror or redirect to a port or port group.
    Mirred(Mirred),
    /// Set the packet's mark (for later filters and stages) and go on with the next action.
    SetMark(u32),
    /// Set the packet's class id (for later filters and stages) and go on with the next action.
    SetClassid(u32),
    /// Set the packet's priority (tc skbedit's priority) and go on with the next action.
    SetPriority(u32),
    /// Pin the packet's IPv6 flow label to this reserved label (written by labelling egress
    /// ports) and go on with the next action.
    SetFlowLabel(u32),
    /// Stop running this filter's actions and try the next filter (tc "unspec"/"continue").
    Continue,
}

impl Action {
    /// Egress redirect to `port` (tc `mirred egress redirect dev PORT`).
    pub const fn redirect(port: PortIndex) -> Action {
        Action::Mirred(Mirred {
            direction: MirredDirection::Egress,
            op: MirredOp::Redirect,
            target: MirredTarget::Port(port),
        })
    }

    /// Egress mirror to `port` (tc `mirred egress mirror dev PORT`).
    pub const fn mirror(port: PortIndex) -> Action {
        Action::Mirred(Mirred {
            direction: MirredDirection::Egress,
            op: MirredOp::Mirror,
            target: MirredTarget::Port(port),
        })
    }
}

/// The actions a filter runs for one class id (a class table entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassActions {
    /// The class id the classifier returned.
    pub classid: u32,
    /// Run in order for that class.
    pub actions: Vec<Action>,
    /// Id of the first action's counters (assigned with the filter ids).
    pub base: u32,
}

/// A classifier with its actions, as configured on a port hook.
#[derive(Debug)]
pub struct Filter {
    /// Name used in errors, metrics and logs.
    pub name: String,
    /// Decides whether the filter matches.
    pub classifier: Box<dyn Classifier>,
    /// Run in order on a match whose class id has no entry in `classes`.
    pub actions: Vec<Action>,
    /// Per-class actions, sorted by class id (for classifiers that spread packets over classes,
    /// such as the flow classifier).
    pub classes: Vec<ClassActions>,
    /// Where a [`DirectVerdict::Redirect`] sends the packet.
    pub redirect: Option<PortIndex>,
    /// Index of the filter's counters: assigned by [`Generation::assign_filter_ids`] (ingress
    /// filters then egress filters, port by port); builders leave it 0.
    pub id: u32,
    /// Id of the counters of `actions[0]` (then consecutive), assigned with `id`.
    pub action_base: u32,
    /// When set, the chain classifies for this filter (and its neighbours in the chain) in one
    /// call; `classifier` must decide the same and stays for describing the filter.
    pub fused: Option<Fused>,
}

impl Filter {
    /// A filter with no class table, no direct-action redirect port and id 0.
    pub fn new(
        name: impl Into<String>,
        classifier: Box<dyn Classifier>,
        actions: Vec<Action>,
    ) -> Filter {
        Filter {
            name: name.into(),
            classifier,
            actions,
            classes: Vec::new(),
            redirect: None,
            id: 0,
            action_base: 0,
            fused: None,
        }
    }

    /// The actions for `classid` and the id of the first one's counters.
    #[inline]
    fn actions_for(&self, classid: u32) -> (&[Action], u32) {
        if !self.classes.is_empty() {
            if let Ok(i) = self.classes.binary_search_by_key(&classid, |c| c.classid) {
                let c = &self.classes[i];
                return (&c.actions, c.base);
            }
        }
        (&self.actions, self.action_base)
    }

    /// Every action list of the filter: (class id or `None` for the default list, actions,
    /// first counter id).
    pub fn action_lists(&self) -> impl Iterator<Item = (Option<u32>, &[Action], u32)> {
        std::iter::once((None, self.actions.as_slice(), self.action_base)).chain(
            self.classes
                .iter()
                .map(|c| (Some(c.classid), c.actions.as_slice(), c.base)),
        )
    }
}

/// A named set of ports that mirred actions can target as a whole (tc's shared block).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortGroup {
    /// Name in configuration and metrics.
    pub name: String,
    /// Member ports, in the order copies are sent.
    pub members: Vec<PortIndex>,
}

/// The hook a filter is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Packets received on the port.
    Ingress,
    /// Packets about to be sent on the port.
    Egress,
}

impl Hook {
    /// `"ingress"` or `"egress"`.
    pub const fn label(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }
}

/// The port's forwarding entry: where packets go that no filter decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Forward {
    /// No entry: dropped as `no_route`.
    #[default]
    None,
    /// Send out of this port.
    To(PortIndex),
    /// Drop (counted as `action_drop`).
    Drop,
}

/// How much of a received frame is checked before it is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validation {
    /// Ethernet, VLAN, IPv4/IPv6 (with extension headers) and TCP/UDP/ICMP headers are validated;
    /// malformed frames are dropped with their reason.
    #[default]
    Full,
    /// Only Ethernet framing (header and VLAN tags complete) is checked when the port has no
    /// classifiers and its destination has no egress filters: a bump-in-the-wire forwarder that
    /// never reads network headers. Classifiers always see fully validated headers.
    L2,
}

/// A whole burst's destination: see [`Generation::burst_target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstTarget {
    /// The port every valid frame of the burst goes to.
    pub out: PortIndex,
    /// What each frame must pass first.
    pub validation: Validation,
    /// The target port's flow labelling (only with full validation, which parses the headers).
    pub flowlabel: LabelMode,
}

/// A burst's destination when its port has ingress filters or forwards to a tunnel: see
/// [`Generation::filtered_target`].
#[derive(Debug, Clone, Copy)]
pub struct FilteredTarget<'a> {
    /// The port the frames the filters pass go to.
    pub out: PortIndex,
    /// The port's ingress hook when it is one fused chain that can answer
    /// [`ChainClassifier::decides_at_ingress`].
    sole_chain: Option<&'a dyn ChainClassifier>,
    /// Whether frames that pass need their parse after the hook (the destination labels
    /// flows or is a tunnel); otherwise validating them suffices.
    needs_parse: bool,
    /// The receiving port and its MAC address.
    ingress: PortIndex,
    ingress_mac: [u8; 6],
}

impl FilteredTarget<'_> {
    /// Whether a frame of this burst that passes validation and that no member of the hook's
    /// single chain decides on leaves unchanged for [`FilteredTarget::out`]: then the caller
    /// may [`FilteredTarget::sort`] the whole burst, drop the invalid frames, send on those
    /// that no member decides on, and hand the others to [`Generation::walk_in_burst`].
    #[inline]
    pub fn whole_frames(&self) -> bool {
        self.sole_chain.is_some() && !self.needs_parse
    }

    /// Sorts frames `pkts` of this burst in one pass over them: which fail validation
    /// ([`validate`] at [`Validation::Full`] gives the reason), which must walk the hook (some
    /// member of the hook's chain decides on them, or there is no single chain), and the bytes
    /// of all of them. Frames past the 64th have no bit: callers send them through the walk.
    #[inline]
    pub fn sort<P: Packet>(&self, pkts: &[P]) -> SortedBurst {
        let mut s = SortedBurst {
            walk: 0,
            invalid: 0,
            bytes: 0,
        };
        let Some(chain) = self.sole_chain else {
            s.walk = u64::MAX;
            s.bytes = pkts.iter().map(|p| u64::from(p.frame_len())).sum();
            return s;
        };
        let Some(form) = chain.burst_form() else {
            for (i, p) in pkts.iter().enumerate() {
                s.bytes += u64::from(p.frame_len());
                if i < 64 {
                    // An invalid frame is dropped before any member is asked.
                    if validate(p, Validation::Full).is_err() {
                        s.invalid |= 1 << i;
                    } else {
                        let f = IngressFrame::of(p, self.ingress, self.ingress_mac);
                        s.walk |= u64::from(chain.decides_at_ingress(&f)) << i;
                    }
                }
            }
            return s;
        };
        for (c, chunk) in pkts.chunks(BURST_MAX).enumerate() {
            if c >= 64 / BURST_MAX {
                s.bytes += chunk.iter().map(|p| u64::from(p.frame_len())).sum::<u64>();
                continue;
            }
            let mut ctx = BurstCtx::new();
            // One pass: each frame goes into the context and is validated; a loop of its own
            // for chains that read metadata, so that the question is asked once per burst.
            let (invalid, bytes) = match form.meta {
                None => fill_checked(&mut ctx, chunk, |_, _| None),
                Some(rxhash) => fill_checked(&mut ctx, chunk, |data, p| {
                    let (dev, mac) = (self.ingress, self.ingress_mac);
                    Some(cbpf::ingress_meta(data, dev, mac, p.rss_hash(), rxhash))
                }),
            };
            s.bytes += bytes;
            let mut walk = chain.decides_at_ingress_ctx(&mut ctx);
            // Bits past the chunk mean nothing; bits of short frames may only mean "ask".
            walk &= u64::MAX >> (64 - chunk.len());
            let mut ask = walk & !invalid;
            while ask != 0 {
                let i = ask.trailing_zeros() as usize;
                ask &= ask - 1;
                if let Some(p) = chunk.get(i) {
                    if p.data().len() < form.short
                        && !chain.decides_at_ingress(&IngressFrame::of(
                            p,
                            self.ingress,
                            self.ingress_mac,
                        ))
                    {
                        walk &= !(1 << i);
                    }
                }
            }
            s.walk |= walk << (c * BURST_MAX);
            s.invalid |= invalid << (c * BURST_MAX);
        }
        s
    }
}

/// Fills `ctx` with frames `pkts` (at most [`BURST_MAX`] are taken) and the metadata `meta`
/// gives for each, validating each ([`Validation::Full`]) in the same pass: returns the mask
/// of those that fail and the bytes of all.
#[inline(always)]
fn fill_checked<'a, P: Packet>(
    ctx: &mut BurstCtx<'a>,
    pkts: &'a [P],
    meta: impl Fn(&'a [u8], &P) -> Option<cbpf::Meta>,
) -> (u64, u64) {
    let (mut invalid, mut bytes) = (0u64, 0u64);
    ctx.fill(pkts.iter().enumerate().map(|(i, p)| {
        let (data, len) = (p.data(), p.frame_len());
        bytes += u64::from(len);
        let bad = wire::check(data, len, p.ipv4_checksum_verified()).is_err();
        invalid |= u64::from(bad) << i;
        (data, len, meta(data, p))
    }));
    (invalid, bytes)
}

/// A burst as [`FilteredTarget::sort`] found it: bit `i` of a mask is frame `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortedBurst {
    /// Frames that must walk the hook ([`Generation::walk_in_burst`]).
    pub walk: u64,
    /// Frames that fail validation: dropped under the reason [`validate`] gives, whether or
    /// not their walk bit is set (the walk's parse would drop them for the same reason).
    pub invalid: u64,
    /// Bytes of all the frames.
    pub bytes: u64,
}

/// Checks one frame at `level`: `Ok` to forward it, or the reason to drop it.
#[inline(always)]
pub fn validate<P: Packet>(pkt: &P, level: Validation) -> Result<(), DropReason> {
    match level {
        Validation::L2 => wire::check_framing(pkt.data()),
        Validation::Full => wire::check(pkt.data(), pkt.frame_len(), pkt.ipv4_checksum_verified()),
    }
}

/// Validates frames `pkts` at `level` without changing them: bit `i` of the first result is set
/// when frame `i` fails ([`validate`] gives the reason); the second is the bytes of all frames.
/// With more than 64 frames every bit is set (callers then check frame by frame).
#[inline(always)]
pub fn scan_valid<P: Packet>(pkts: &[P], level: Validation) -> (u64, u64) {
    let (mut invalid, mut bytes) = (0u64, 0u64);
    for (i, p) in pkts.iter().enumerate().take(64) {
        bytes += u64::from(p.frame_len());
        invalid |= u64::from(validate(p, level).is_err()) << i;
    }
    if pkts.len() > 64 {
        return (u64::MAX, 0);
    }
    (invalid, bytes)
}

/// One port's pipeline configuration.
#[derive(Debug, Default)]
pub struct PortPipeline {
    /// Port name (from the configuration).
    pub name: String,
    /// The port's MAC address (packet type of received frames).
    pub mac: [u8; 6],
    /// What is checked on frames received on this port.
    pub validation: Validation,
    /// Filters run on packets received on this port, in order.
    pub ingress: Vec<Filter>,
    /// Filters run on packets about to be sent on this port, in order.
    pub egress: Vec<Filter>,
    /// The forwarding entry.
    pub forward: Forward,
    /// What the port does to the flow label of IPv6 packets it sends.
    pub flowlabel: LabelMode,
    /// The port carries tunnel endpoint addresses (an underlay): packets to them (ARP, ESP,
    /// ICMP) are handed to [`Sink::local`] instead of the forwarding entry.
    pub local: bool,
    /// The port is a tunnel (an index into the generation's [`Ipsec::tunnels`]): what is
    /// sent to it goes to [`Sink::send_tunnel`].
    pub tunnel: Option<u16>,
}

/// One immutable version of the whole pipeline configuration.
#[derive(Debug, Default)]
pub struct Generation {
    /// Every port, indexed by [`PortIndex`].
    pub ports: Vec<PortPipeline>,
    /// Port groups, indexed by [`MirredTarget::Group`].
    pub groups: Vec<PortGroup>,
    /// The appliance's flow-label table, once any port labels (shared by every generation:
    /// live flows keep their labels across reloads). A `flowlabel` action's label must be
    /// reserved in it when the generation is published.
    pub flowlabels: Option<Arc<FlowLabelTable>>,
    /// Tunnels and security associations, when any are configured: the SA table the workers'
    /// tunnel stages adopt with the generation. SAs a reload keeps share their live state
    /// (sequence numbers, replay windows, counters) with the previous generation's table.
    pub ipsec: Option<Arc<Ipsec>>,
}

/// Where the pipeline puts packets it decided to send. The worker implements it with per-port
/// transmit buffers; tests implement it with vectors.
pub trait Sink<P> {
    /// Queue `pkt` for transmission on `port` (a valid index of the generation); count what
    /// is sent or dropped in `stats`.
    fn send(&mut self, port: PortIndex, pkt: P, stats: &mut StatsWriter);

    /// A copy of `pkt` for a mirror action that shares the bytes (reference counted, never
    /// copied); `None` when no clone buffer is available.
    fn clone_packet(&mut self, pkt: &P) -> Option<P>;

    /// Whether `port` can take packets now (link up and port started). Mirrors to a port that
    /// cannot count an overlimit; redirects to it drop the packet.
    fn link_up(&self, port: PortIndex) -> bool;

    /// Queue `pkt` (parsed as `parsed`, come from `iif`) into tunnel port `port`: the worker's
    /// tunnel stage encrypts it. Sinks without one drop it as `no_route`.
    fn send_tunnel(
        &mut self,
        port: PortIndex,
        pkt: P,
        parsed: &Parsed,
        iif: PortIndex,
        stats: &mut StatsWriter,
    ) {
        let _ = (pkt, parsed, iif);
        stats.drop(port, DropReason::NoRoute, 1);
    }

    /// A packet received on `port`, an underlay with local endpoint addresses, that its
    /// ingress hook passed: the sink consumes it when it is for a local address (ARP, ESP, ICMP)
    /// and returns `None`, or hands it back to be forwarded. Sinks without a tunnel stage hand
    /// everything back.
    fn local(
        &mut self,
        port: PortIndex,
        pkt: P,
        parsed: &Parsed,
        stats: &mut StatsWriter,
    ) -> Option<P> {
        let _ = (port, parsed, stats);
        Some(pkt)
    }
}

/// A [`Sink`] that keeps what it is sent in a vector: for tests and benchmarks without DPDK.
/// Copies are plain clones; ports in `down` report their link down.
#[derive(Debug)]
pub struct VecSink<P> {
    /// Every packet sent, with its port, in order.
    pub sent: Vec<(PortIndex, P)>,
    /// Ports whose link is down.
    pub down: Vec<PortIndex>,
    /// How many more copies may be made (`None`: unlimited), to test clone exhaustion.
    pub clone_budget: Option<usize>,
}

impl<P> Default for VecSink<P> {
    fn default() -> Self {
        VecSink {
            sent: Vec::new(),
            down: Vec::new(),
            clone_budget: None,
        }
    }
}

impl<P: Packet + Clone> Sink<P> for VecSink<P> {
    fn send(&mut self, port: PortIndex, pkt: P, stats: &mut StatsWriter) {
        stats.tx(port, 1, u64::from(pkt.frame_len()));
        self.sent.push((port, pkt));
    }

    fn clone_packet(&mut self, pkt: &P) -> Option<P> {
        match &mut self.clone_budget {
            Some(0) => None,
            Some(n) => {
                *n -= 1;
                Some(pkt.clone())
            }
            None => Some(pkt.clone()),
        }
    }

    fn link_up(&self, port: PortIndex) -> bool {
        !self.down.contains(&port)
    }
}

/// Why a generation is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationError(pub String);

impl fmt::Display for GenerationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GenerationError {}

/// How a hook's filter chain left a packet.
enum ChainResult {
    /// No filter decided, or the deciding filter passed it: the packet goes on its way.
    Pass,
    /// A direct-action redirect to this port (out of its egress).
    Send(PortIndex),
    /// Drop, for this reason.
    Drop(DropReason),
    /// A redirect action (counter `id`) takes the packet.
    Redirect(Mirred, u32),
}

/// A packet's state between hooks: what classifiers see besides the bytes, carried from hook to
/// hook and copied into mirror copies (as an skb clone keeps mark, priority and class).
#[derive(Debug, Clone, Copy)]
struct Walk {
    parsed: Parsed,
    dev: PortIndex,
    iif: PortIndex,
    ingress_mac: [u8; 6],
    mark: u32,
    priority: u32,
    classid: u32,
    flowlabel: u32,
    /// Mirror/redirect hops taken so far.
    depth: u8,
}

impl Walk {
    /// The state of a frame just received on `port` (MAC `mac`), parsed as `parsed`.
    #[inline(always)]
    fn received(parsed: Parsed, port: PortIndex, mac: [u8; 6]) -> Walk {
        Walk {
            parsed,
            dev: port,
            iif: port,
            ingress_mac: mac,
            mark: 0,
            priority: 0,
            classid: 0,
            flowlabel: 0,
            depth: 0,
        }
    }

    /// The state the hook that `view` describes has brought the packet to, at `depth` hops.
    #[inline]
    fn from_view(view: &PacketView<'_>, depth: u8) -> Walk {
        Walk {
            parsed: *view.parsed,
            dev: view.dev,
            iif: view.iif,
            ingress_mac: view.ingress_mac,
            mark: view.mark,
            priority: view.priority,
            classid: view.classid,
            flowlabel: view.flowlabel,
            depth,
        }
    }

    /// The state of a copy or a redirected packet leaving the hook on `dev`: one more hop, and
    /// `dev` becomes the port it came from (the kernel sets `skb_iif` to `skb->dev`).
    #[inline]
    fn hop(self) -> Walk {
        Walk {
            iif: self.dev,
            depth: self.depth + 1,
            ..self
        }
    }
}

impl Generation {
    /// Checks that every port reference points at a port of this generation.
    pub fn validate(&self) -> Result<(), GenerationError> {
        if self.ports.len() > usize::from(u16::MAX) {
            return Err(GenerationError(format!(
                "{} ports: at most {} allowed",
                self.ports.len(),
                u16::MAX
            )));
        }
        let n = self.ports.len();
        let check = |p: PortIndex, what: &str| {
            if usize::from(p.0) < n {
                Ok(())
            } else {
                Err(GenerationError(format!(
                    "{what} refers to port index {p}, but only {n} ports exist"
                )))
            }
        };
        for port in &self.ports {
            if port.flowlabel != LabelMode::Off && self.flowlabels.is_none() {
                return Err(GenerationError(format!(
                    "port {:?} labels IPv6 flows but the generation has no flow-label table",
                    port.name
                )));
            }
            if let Forward::To(p) = port.forward {
                check(p, &format!("port {:?} forwarding entry", port.name))?;
            }
            for (hook, filters) in [("ingress", &port.ingress), ("egress", &port.egress)] {
                check_fused(filters).map_err(|at| {
                    GenerationError(format!(
                        "port {:?} {hook} filter {:?}: its chain classifier does not cover consecutive filters in order",
                        port.name, filters[at].name
                    ))
                })?;
            }
            for f in port.ingress.iter().chain(&port.egress) {
                if let Some(p) = f.redirect {
                    check(
                        p,
                        &format!("port {:?} filter {:?} redirect port", port.name, f.name),
                    )?;
                }
                for (class, actions, _) in f.action_lists() {
                    for a in actions {
                        if let Action::SetFlowLabel(l) = *a {
                            let reserved = self
                                .flowlabels
                                .as_ref()
                                .is_some_and(|t| l != 0 && t.is_reserved(l) && l <= 0xfffff);
                            if !reserved {
                                return Err(GenerationError(format!(
                                    "port {:?} filter {:?}: flow label {l:#07x} is not a reserved \
                                     label",
                                    port.name, f.name
                                )));
                            }
                        }
                        let Action::Mirred(m) = a else { continue };
                        let what = match class {
                            None => format!("port {:?} filter {:?} mirred", port.name, f.name),
                            Some(c) => format!(
                                "port {:?} filter {:?} class {c:#x} mirred",
                                port.name, f.name
                            ),
                        };
                        match m.target {
                            MirredTarget::Port(p) => check(p, &what)?,
                            MirredTarget::Group(g) if usize::from(g) >= self.groups.len() => {
                                return Err(GenerationError(format!(
                                    "{what} refers to port group {g}, but only {} groups exist",
                                    self.groups.len()
                                )))
                            }
                            MirredTarget::Group(_) => {}
                        }
                    }
                }
                if f.classes.windows(2).any(|w| w[0].classid >= w[1].classid) {
                    return Err(GenerationError(format!(
                        "port {:?} filter {:?}: class table not sorted by class id or has duplicates",
                        port.name, f.name
                    )));
                }
            }
        }
        for g in &self.groups {
            for &m in &g.members {
                check(m, &format!("port group {:?} member", g.name))?;
            }
        }
        Ok(())
    }

    /// Numbers every filter (ingress then egress, port by port) for its counters; returns the
    /// number of filters. [`GenerationCell`] calls it on every generation it accepts.
    pub fn assign_filter_ids(&mut self) -> usize {
        let mut n = 0u32;
        let mut a = 0u32;
        for p in &mut self.ports {
            for f in p.ingress.iter_mut().chain(p.egress.iter_mut()) {
                f.id = n;
                n += 1;
                f.action_base = a;
                a += f.actions.len() as u32;
                for c in &mut f.classes {
                    c.base = a;
                    a += c.actions.len() as u32;
                }
            }
        }
        n as usize
    }

    /// Number of actions over all filters and class tables (the size of the action counters).
    pub fn action_count(&self) -> usize {
        self.filters()
            .map(|(_, _, f)| f.action_lists().map(|(_, a, _)| a.len()).sum::<usize>())
            .sum()
    }

    /// Number of filters over all ports and hooks.
    pub fn filter_count(&self) -> usize {
        self.ports
            .iter()
            .map(|p| p.ingress.len() + p.egress.len())
            .sum()
    }

    /// Every filter with its port and hook, in id order.
    pub fn filters(&self) -> impl Iterator<Item = (&PortPipeline, Hook, &Filter)> {
        self.ports.iter().flat_map(|p| {
            p.ingress
                .iter()
                .map(move |f| (p, Hook::Ingress, f))
                .chain(p.egress.iter().map(move |f| (p, Hook::Egress, f)))
        })
    }

    /// Runs `filters` on `pkt` in the state `w` (updated with what actions set); the first
    /// decisive action wins. tc semantics: a filter that does not match, or whose actions say
    /// "continue", hands the packet to the next filter; a filter whose actions all ran without
    /// deciding passes it. Mirror actions send their copies on the spot.
    #[inline]
    fn run_chain<P: Packet, S: Sink<P>>(
        &self,
        filters: &[Filter],
        pkt: &P,
        w: &mut Walk,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) -> ChainResult {
        if filters.is_empty() {
            // A hook without filters: nothing to build a view for.
            return ChainResult::Pass;
        }
        let mut view = PacketView {
            data: pkt.data(),
            frame_len: pkt.frame_len(),
            parsed: &w.parsed,
            dev: w.dev,
            iif: w.iif,
            ingress_mac: w.ingress_mac,
            rss_hash: pkt.rss_hash(),
            mark: w.mark,
            priority: w.priority,
            classid: w.classid,
            flowlabel: w.flowlabel,
        };
        let r = self.chain_loop(filters, pkt, &mut view, w.depth, stats, sink);
        let (mark, priority, classid, flowlabel) =
            (view.mark, view.priority, view.classid, view.flowlabel);
        w.mark = mark;
        w.priority = priority;
        w.classid = classid;
        w.flowlabel = flowlabel;
        r
    }

    #[inline]
    fn chain_loop<P: Packet, S: Sink<P>>(
        &self,
        filters: &[Filter],
        pkt: &P,
        view: &mut PacketView<'_>,
        depth: u8,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) -> ChainResult {
        // `i`: the next filter to run. A fused chain answers for a run of filters at once.
        let mut i = 0;
        while let Some(f) = filters.get(i) {
            let (at, verdict) = match &f.fused {
                None => (i, f.classifier.classify(view)),
                Some(fu) => {
                    let base = i.saturating_sub(fu.index);
                    match fu.chain.classify_from(view, fu.index) {
                        None => {
                            // Past the chain (and always forward).
                            i = (base + fu.chain.len()).max(i + 1);
                            continue;
                        }
                        // Never before the member asked for: the loop always moves on.
                        Some((j, v)) => (base + j.max(fu.index), v),
                    }
                }
            };
            i = at + 1;
            if verdict == Verdict::NoMatch {
                continue;
            }
            let Some(f) = filters.get(at) else { break };
            if let Some(r) = self.decide(f, verdict, pkt, view, depth, stats, sink) {
                return r;
            }
        }
        ChainResult::Pass
    }

    /// What filter `f`, which did not say [`Verdict::NoMatch`], does with the packet: its
    /// direct-action verdict, or its actions; `None` when they say continue (the next filter
    /// runs.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn decide<P: Packet, S: Sink<P>>(
        &self,
        f: &Filter,
        verdict: Verdict,
        pkt: &P,
        view: &mut PacketView<'_>,
        depth: u8,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) -> Option<ChainResult> {
        match verdict {
            Verdict::NoMatch => None,
            Verdict::Direct(v, classid) => {
                stats.filter_hit(f.id, view.frame_len);
                view.classid = classid;
                Some(match v {
                    DirectVerdict::Ok => ChainResult::Pass,
                    DirectVerdict::Shot => ChainResult::Drop(DropReason::ActionDrop),
                    DirectVerdict::Stolen | DirectVerdict::Trap => {
                        ChainResult::Drop(DropReason::Stolen)
                    }
                    DirectVerdict::Redirect => match f.redirect {
                        Some(p) => ChainResult::Send(p),
                        None => ChainResult::Drop(DropReason::RedirectNoTarget),
                    },
                })
            }
            Verdict::Match(classid) => {
                stats.filter_hit(f.id, view.frame_len);
                view.classid = classid;
                let (actions, base) = f.actions_for(classid);
                for (k, a) in actions.iter().enumerate() {
                    let id = base + k as u32;
                    stats.action_hit(id, view.frame_len);
                    match *a {
                        Action::Pass => return Some(ChainResult::Pass),
                        Action::Drop => return Some(ChainResult::Drop(DropReason::ActionDrop)),
                        Action::SetMark(m) => view.mark = m,
                        Action::SetClassid(c) => view.classid = c,
                        Action::SetPriority(p) => view.priority = p,
                        Action::SetFlowLabel(l) => view.flowlabel = l,
                        Action::Continue => return None,
                        Action::Mirred(m) => {
                            if let Some(r) =
                                self.mirred_action(m, id, pkt, view, depth, stats, sink)
                            {
                                return Some(r);
                            }
                        }
                    }
                }
                // Matched, and the actions (if any) ran to the end: classified, go on.
                Some(ChainResult::Pass)
            }
        }
    }

    /// A mirred action (counter `id`) of a matching filter: `None` when the packet goes on with
    /// the next action (a mirror sent its copies). Out of line: it is rare, and its calls would
    /// weigh on every filter decision.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn mirred_action<P: Packet, S: Sink<P>>(
        &self,
        m: Mirred,
        id: u32,
        pkt: &P,
        view: &PacketView<'_>,
        depth: u8,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) -> Option<ChainResult> {
        if depth >= REDIRECT_NEST_LIMIT {
            // Linux drops the packet whose mirred action would nest past the limit, mirror or
            // redirect alike.
            stats.action_drop(id);
            return Some(ChainResult::Drop(DropReason::RedirectLoop));
        }
        match m.op {
            MirredOp::Redirect => Some(ChainResult::Redirect(m, id)),
            MirredOp::Mirror => {
                let w = Walk::from_view(view, depth).hop();
                self.mirror(m, id, pkt, w, stats, sink);
                None
            }
        }
    }

    /// The ports a mirred target stands for, seen from a hook on `dev`: a group minus `dev`.
    #[inline]
    fn mirred_ports(&self, target: MirredTarget, dev: PortIndex) -> (&[PortIndex], PortIndex) {
        match target {
            MirredTarget::Port(p) => (&[], p),
            MirredTarget::Group(g) => (
                self.groups
                    .get(usize::from(g))
                    .map_or(&[][..], |g| g.members.as_slice()),
                dev,
            ),
        }
    }

    /// Sends zero-copy clones of `pkt` to the mirror's target(s); `w` is the state leaving the
    /// hook. Targets that are down, or a missing clone buffer, count overlimits.
    fn mirror<P: Packet, S: Sink<P>>(
        &self,
        m: Mirred,
        id: u32,
        pkt: &P,
        w: Walk,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) {
        let (members, single) = self.mirred_ports(m.target, w.dev);
        if members.is_empty() {
            match m.target {
                MirredTarget::Port(_) => {
                    self.mirror_to(m.direction, single, id, pkt, w, stats, sink)
                }
                MirredTarget::Group(_) => stats.action_overlimit(id),
            }
            return;
        }
        for &t in members {
            if t != w.dev {
                self.mirror_to(m.direction, t, id, pkt, w, stats, sink);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn mirror_to<P: Packet, S: Sink<P>>(
        &self,
        direction: MirredDirection,
        to: PortIndex,
        id: u32,
        pkt: &P,
        w: Walk,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) {
        if !sink.link_up(to) {
            stats.action_overlimit(id);
            return;
        }
        let Some(copy) = sink.clone_packet(pkt) else {
            stats.action_overlimit(id);
            return;
        };
        stats.mirror_copy();
        self.deliver(copy, direction, to, w, stats, sink);
    }

    /// Moves `pkt` to the redirect's target; with a group, every member but the last gets a
    /// copy and the last the packet (tc block cast). `w` is the state leaving the hook.
    fn redirect<P: Packet, S: Sink<P>>(
        &self,
        m: Mirred,
        id: u32,
        pkt: P,
        w: Walk,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) {
        let (members, single) = self.mirred_ports(m.target, w.dev);
        let last = match m.target {
            MirredTarget::Port(_) => Some(single),
            MirredTarget::Group(_) => members.iter().rev().copied().find(|&t| t != w.dev),
        };
        let Some(last) = last else {
            stats.action_overlimit(id);
            stats.action_drop(id);
            stats.drop(w.dev, DropReason::MirredNoTarget, 1);
            return;
        };
        if let MirredTarget::Group(_) = m.target {
            let n = members.iter().rposition(|&t| t == last).unwrap_or(0);
            for &t in &members[..n] {
                if t != w.dev {
                    self.mirror_to(m.direction, t, id, &pkt, w, stats, sink);
                }
            }
        }
        if !sink.link_up(last) {
            stats.action_overlimit(id);
            stats.action_drop(id);
            stats.drop(w.dev, DropReason::MirredTargetDown, 1);
            return;
        }
        self.deliver(pkt, m.direction, last, w, stats, sink);
    }

    /// Hands a mirrored or redirected packet to `to`'s ingress or egress.
    #[inline]
    fn deliver<P: Packet, S: Sink<P>>(
        &self,
        pkt: P,
        direction: MirredDirection,
        to: PortIndex,
        mut w: Walk,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) {
        match direction {
            MirredDirection::Ingress => {
                w.dev = to;
                self.run_ingress(pkt, w, stats, sink);
            }
            MirredDirection::Egress => self.run_egress(pkt, to, w, stats, sink),
        }
    }

    /// The ingress hook of `w.dev` and then the packet's way out: the chain's decision or the
    /// port's forwarding entry.
    fn run_ingress<P: Packet, S: Sink<P>>(
        &self,
        mut pkt: P,
        mut w: Walk,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) {
        let port = w.dev;
        let Some(in_port) = self.ports.get(usize::from(port.0)) else {
            stats.drop(port, DropReason::NoRoute, 1);
            return;
        };
        let out = match self.run_chain(&in_port.ingress, &pkt, &mut w, stats, sink) {
            ChainResult::Send(p) => p,
            ChainResult::Drop(reason) => {
                stats.drop(port, reason, 1);
                return;
            }
            ChainResult::Redirect(m, id) => {
                self.redirect(m, id, pkt, w.hop(), stats, sink);
                return;
            }
            ChainResult::Pass => {
                if in_port.local {
                    // An underlay: packets for a local endpoint stop here.
                    match sink.local(port, pkt, &w.parsed, stats) {
                        Some(p) => pkt = p,
                        None => return,
                    }
                }
                match in_port.forward {
                    Forward::To(p) => p,
                    Forward::Drop => {
                        stats.drop(port, DropReason::ActionDrop, 1);
                        return;
                    }
                    Forward::None => {
                        stats.drop(port, DropReason::NoRoute, 1);
                        return;
                    }
                }
            }
        };
        self.run_egress(pkt, out, w, stats, sink);
    }

    /// The egress hook of `out`, then transmission there (or where the hook sends it).
    fn run_egress<P: Packet, S: Sink<P>>(
        &self,
        mut pkt: P,
        mut out: PortIndex,
        mut w: Walk,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) {
        let out_port = loop {
            let Some(out_port) = self.ports.get(usize::from(out.0)) else {
                stats.drop(w.dev, DropReason::NoRoute, 1);
                return;
            };
            if out_port.egress.is_empty() {
                break out_port;
            }
            w.dev = out;
            match self.run_chain(&out_port.egress, &pkt, &mut w, stats, sink) {
                ChainResult::Pass => break out_port,
                ChainResult::Drop(reason) => {
                    stats.drop(out, reason, 1);
                    return;
                }
                ChainResult::Send(p) if p == out => break out_port,
                ChainResult::Send(p) => {
                    // A direct-action redirect from an egress hook: a hop like any redirect.
                    if w.depth >= REDIRECT_NEST_LIMIT {
                        stats.drop(out, DropReason::RedirectLoop, 1);
                        return;
                    }
                    w = w.hop();
                    out = p;
                }
                ChainResult::Redirect(m, id) => {
                    self.redirect(m, id, pkt, w.hop(), stats, sink);
                    return;
                }
            }
        };
        if out_port.flowlabel != LabelMode::Off && w.parsed.l3 == L3::Ipv6 {
            self.set_flow_label(&mut pkt, out_port.flowlabel, &w.parsed, w.flowlabel, stats);
        }
        if out_port.tunnel.is_some() {
            sink.send_tunnel(out, pkt, &w.parsed, w.iif, stats);
        } else {
            sink.send(out, pkt, stats);
        }
    }

    /// Writes the flow label of an IPv6 packet leaving a labelling port: `pinned` (a label an
    /// action pinned; 0 = none), else its flow's label from the table. A `fill` port keeps
    /// non-zero labels.
    #[inline]
    fn set_flow_label<P: Packet>(
        &self,
        pkt: &mut P,
        mode: LabelMode,
        parsed: &Parsed,
        pinned: u32,
        stats: &mut StatsWriter,
    ) {
        let Some(table) = &self.flowlabels else {
            return;
        };
        let l3 = usize::from(parsed.l3_offset);
        let data = pkt.data();
        let Some(current) = data.get(l3..).and_then(flowlabel::read_label) else {
            return;
        };
        if mode == LabelMode::Fill && current != 0 {
            stats.flowlabel_kept();
            return;
        }
        let label = if pinned != 0 {
            stats.flowlabel_pinned();
            pinned
        } else {
            let Some(key) = FlowKey::of(data, parsed) else {
                return;
            };
            let lcore = stats.stats().lcore as u16;
            let (label, how, collisions) = table.label(&key, stats.now_ms(), lcore);
            stats.flowlabel_outcome(how, collisions);
            label
        };
        if label == current {
            stats.flowlabel_written(true);
            return;
        }
        match pkt.data_mut().and_then(|d| d.get_mut(l3..)) {
            Some(ip) => {
                flowlabel::write_label(ip, label);
                stats.flowlabel_written(true);
            }
            None => stats.flowlabel_written(false),
        }
    }

    /// Where a burst from `ingress` goes when its fate depends only on each frame passing the
    /// port's validation: the port has no ingress filters and forwards to a port without egress
    /// filters. Workers then validate frame by frame and transmit the burst as a whole.
    #[inline]
    pub fn burst_target(&self, ingress: PortIndex) -> Option<BurstTarget> {
        let p = self.ports.get(usize::from(ingress.0))?;
        match p.forward {
            Forward::To(out) if p.ingress.is_empty() && !p.local => self
                .ports
                .get(usize::from(out.0))
                .filter(|o| {
                    o.egress.is_empty()
                        && o.tunnel.is_none()
                        && (o.flowlabel == LabelMode::Off || p.validation == Validation::Full)
                })
                .map(|o| BurstTarget {
                    out,
                    validation: p.validation,
                    flowlabel: o.flowlabel,
                }),
            _ => None,
        }
    }

    /// Where a burst from `ingress` goes when [`Generation::burst_target`] has none but the
    /// port forwards to a port without egress filters: each frame is validated and classified
    /// by the port's ingress filters (if any), and those they let go on their way (see
    /// [`Generation::classify_in_burst`]) leave with the burst itself, as `burst_target`'s do,
    /// or into the tunnel when the destination is one.
    #[inline]
    pub fn filtered_target(&self, ingress: PortIndex) -> Option<FilteredTarget<'_>> {
        let p = self.ports.get(usize::from(ingress.0))?;
        let out = match p.forward {
            Forward::To(out) if !p.local => out,
            _ => return None,
        };
        let o = self
            .ports
            .get(usize::from(out.0))
            .filter(|o| o.egress.is_empty())?;
        // `validate` guarantees a fused chain covers consecutive filters with indices 0, 1, ...:
        // a chain as long as the hook that starts at its first filter is the whole hook.
        let sole_chain = p
            .ingress
            .first()
            .and_then(|f| f.fused.as_ref())
            .filter(|fu| fu.index == 0 && fu.chain.len() == p.ingress.len())
            .map(|fu| &*fu.chain);
        Some(FilteredTarget {
            out,
            sole_chain,
            needs_parse: o.flowlabel != LabelMode::Off || o.tunnel.is_some(),
            ingress,
            ingress_mac: p.mac,
        })
    }

    /// One frame of a burst from `ingress` to its [`Generation::filtered_target`] `t`, exactly
    /// as [`Generation::process`] would treat it, except that a frame the ingress filters pass
    /// (and the forwarding entry sends to `t.out`) comes back as `Some`, labelled if `t.out`
    /// labels flows: the caller sends it to `t.out` with the rest of the burst. Everything
    /// else (drops, redirects, direct-action sends, and frames for a tunnel, which go to
    /// [`Sink::send_tunnel`]) happens here. Does not count the frame as received.
    ///
    /// When the hook is a single chain, a frame no member decides on is only validated and
    /// run through the chain once ([`ChainClassifier::decides_at_ingress`]); the others, and
    /// every frame of other hooks, take the walk through the hook with the parse.
    #[inline]
    pub fn classify_in_burst<P: Packet, S: Sink<P>>(
        &self,
        pkt: P,
        ingress: PortIndex,
        t: &FilteredTarget<'_>,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) -> Option<P> {
        if let (Some(chain), false) = (t.sole_chain, t.needs_parse) {
            // The frame leaves as it came unless a member decides: validation is all it needs.
            if let Err(reason) =
                wire::check(pkt.data(), pkt.frame_len(), pkt.ipv4_checksum_verified())
            {
                stats.drop(ingress, reason, 1);
                return None;
            }
            if !chain.decides_at_ingress(&IngressFrame::of(&pkt, ingress, t.ingress_mac)) {
                return Some(pkt);
            }
        }
        self.walk_in_burst(pkt, ingress, t, stats, sink)
    }

    /// [`Generation::classify_in_burst`] for a frame that takes the walk through the hook: one
    /// that [`FilteredTarget::sort`] marked, or any frame when the burst is not
    /// [`FilteredTarget::whole_frames`]. Not validated yet.
    #[inline(always)]
    pub fn walk_in_burst<P: Packet, S: Sink<P>>(
        &self,
        mut pkt: P,
        ingress: PortIndex,
        t: &FilteredTarget<'_>,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) -> Option<P> {
        let out = t.out;
        let (Some(in_port), Some(out_port)) = (
            self.ports.get(usize::from(ingress.0)),
            self.ports.get(usize::from(out.0)),
        ) else {
            stats.drop(ingress, DropReason::NoRoute, 1);
            return None;
        };
        let mac = in_port.mac;
        let parsed = match wire::parse(pkt.data(), pkt.frame_len(), pkt.ipv4_checksum_verified()) {
            Ok(p) => p,
            Err(reason) => {
                stats.drop(ingress, reason, 1);
                return None;
            }
        };
        // The hook's view straight from the parse (what `run_chain` builds from a `Walk`); a
        // `Walk` is made only for the packets that leave the fast path.
        let mut pinned = 0;
        let walk = match t.sole_chain {
            // Without a parse needed the caller asked already: this frame decides.
            Some(chain) if t.needs_parse => {
                chain.decides_at_ingress(&IngressFrame::of(&pkt, ingress, mac))
            }
            _ => !in_port.ingress.is_empty(),
        };
        if walk {
            let mut view = PacketView {
                data: pkt.data(),
                frame_len: pkt.frame_len(),
                parsed: &parsed,
                dev: ingress,
                iif: ingress,
                ingress_mac: in_port.mac,
                rss_hash: pkt.rss_hash(),
                mark: 0,
                priority: 0,
                classid: 0,
                flowlabel: 0,
            };
            match self.chain_loop(&in_port.ingress, &pkt, &mut view, 0, stats, sink) {
                ChainResult::Pass => pinned = view.flowlabel,
                ChainResult::Drop(reason) => {
                    stats.drop(ingress, reason, 1);
                    return None;
                }
                ChainResult::Redirect(m, id) => {
                    let w = Walk::from_view(&view, 0);
                    self.redirect(m, id, pkt, w.hop(), stats, sink);
                    return None;
                }
                ChainResult::Send(p) => {
                    let w = Walk::from_view(&view, 0);
                    self.run_egress(pkt, p, w, stats, sink);
                    return None;
                }
            }
        }
        if out_port.flowlabel != LabelMode::Off && parsed.l3 == L3::Ipv6 {
            self.set_flow_label(&mut pkt, out_port.flowlabel, &parsed, pinned, stats);
        }
        if out_port.tunnel.is_some() {
            sink.send_tunnel(out, pkt, &parsed, ingress, stats);
            return None;
        }
        Some(pkt)
    }

    /// Processes a burst of packets received on `ingress` (see [`Generation::process`]),
    /// counting them as received. The path decision that does not depend on packet contents is
    /// made once per burst.
    #[inline]
    pub fn process_burst<P: Packet, S: Sink<P>>(
        &self,
        pkts: impl Iterator<Item = P>,
        ingress: PortIndex,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) {
        let (mut n, mut bytes) = (0u64, 0u64);
        if let Some(t) = self.burst_target(ingress) {
            for pkt in pkts {
                n += 1;
                bytes += u64::from(pkt.frame_len());
                self.forward_validated(pkt, ingress, t, stats, sink);
            }
        } else {
            for pkt in pkts {
                n += 1;
                bytes += u64::from(pkt.frame_len());
                self.process_validated(pkt, ingress, stats, sink);
            }
        }
        stats.rx(ingress, n, bytes);
    }

    /// Processes one packet received on `ingress`: validates its headers (as the port's
    /// validation level says), classifies it, and either hands it to `sink` or drops it with a
    /// counted reason. Never panics, never allocates. Does not count the packet as received
    /// (the burst does).
    #[inline]
    pub fn process<P: Packet, S: Sink<P>>(
        &self,
        pkt: P,
        ingress: PortIndex,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) {
        match self.burst_target(ingress) {
            Some(t) => self.forward_validated(pkt, ingress, t, stats, sink),
            None => self.process_validated(pkt, ingress, stats, sink),
        }
    }

    /// The burst-target path for one packet: a frame that passes validation goes to the
    /// target, anything else is a counted drop.
    #[inline(always)]
    fn forward_validated<P: Packet, S: Sink<P>>(
        &self,
        mut pkt: P,
        ingress: PortIndex,
        t: BurstTarget,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) {
        match self.check_burst_frame(&mut pkt, t, stats) {
            Ok(()) => sink.send(t.out, pkt, stats),
            Err(reason) => stats.drop(ingress, reason, 1),
        }
    }

    /// One frame of a burst with a [`BurstTarget`]: validates it and, when the target labels
    /// IPv6 flows, labels it. `Err` is the reason to drop it.
    #[inline(always)]
    pub fn check_burst_frame<P: Packet>(
        &self,
        pkt: &mut P,
        t: BurstTarget,
        stats: &mut StatsWriter,
    ) -> Result<(), DropReason> {
        if t.flowlabel == LabelMode::Off {
            return validate(pkt, t.validation);
        }
        // burst_target admits labelling targets only with full validation.
        let parsed = wire::parse(pkt.data(), pkt.frame_len(), pkt.ipv4_checksum_verified())?;
        if parsed.l3 == L3::Ipv6 {
            self.set_flow_label(pkt, t.flowlabel, &parsed, 0, stats);
        }
        Ok(())
    }

    /// A packet that a tunnel decapsulated, entering the tunnel's port `ingress` (its synthetic
    /// Ethernet header in front): exactly as a packet received there ([`Generation::process`]:
    /// the port's validation level, its filters, the burst-target shortcut when it has none).
    /// Does not count it as received.
    #[inline]
    pub fn process_tunnel_rx<P: Packet, S: Sink<P>>(
        &self,
        pkt: P,
        ingress: PortIndex,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) {
        self.process(pkt, ingress, stats, sink);
    }

    /// The full path: parse and validate every header, run the hooks.
    #[inline]
    fn process_validated<P: Packet, S: Sink<P>>(
        &self,
        pkt: P,
        ingress: PortIndex,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) {
        let Some(in_port) = self.ports.get(usize::from(ingress.0)) else {
            stats.drop(ingress, DropReason::NoRoute, 1);
            return;
        };
        let parsed = match wire::parse(pkt.data(), pkt.frame_len(), pkt.ipv4_checksum_verified()) {
            Ok(p) => p,
            Err(reason) => {
                stats.drop(ingress, reason, 1);
                return;
            }
        };
        self.run_ingress(
            pkt,
            Walk::received(parsed, ingress, in_port.mac),
            stats,
            sink,
        );
    }
}

/// Checks that every fused chain on a hook covers consecutive filters in member order
/// (see [`Fused`]); `Err` holds the position of the first filter that breaks it.
fn check_fused(filters: &[Filter]) -> Result<(), usize> {
    for (i, f) in filters.iter().enumerate() {
        let Some(fu) = &f.fused else { continue };
        let len = fu.chain.len();
        let ok = fu.index < len
            && i >= fu.index
            && filters.len() >= i - fu.index + len
            && filters[i - fu.index..i - fu.index + len]
                .iter()
                .enumerate()
                .all(|(j, g)| {
                    g.fused
                        .as_ref()
                        .is_some_and(|g| g.index == j && Arc::ptr_eq(&g.chain, &fu.chain))
                });
        if !ok {
            return Err(i);
        }
    }
    Ok(())
}

/// Holds the current generation for every worker.
#[derive(Debug)]
pub struct GenerationCell {
    epoch: AtomicU64,
    current: ArcSwap<Generation>,
}

impl GenerationCell {
    /// A cell holding `gen` (validated).
    pub fn new(mut gen: Generation) -> Result<Arc<Self>, GenerationError> {
        gen.assign_filter_ids();
        gen.validate()?;
        Ok(Arc::new(GenerationCell {
            epoch: AtomicU64::new(1),
            current: ArcSwap::from_pointee(gen),
        }))
    }

    /// Replaces the generation (control thread only). Workers switch at their next burst.
    /// Returns the new epoch.
    pub fn publish(&self, mut gen: Generation) -> Result<u64, GenerationError> {
        gen.assign_filter_ids();
        self.publish_numbered(gen).map(|(epoch, _)| epoch)
    }

    /// As [`GenerationCell::publish`], but keeps the counter ids the caller gave the filters
    /// and actions (a reload keeps a filter's counters when the filter keeps its identity).
    /// Ids beyond the workers' counter arrays are not counted (never out of bounds). Also
    /// returns the generation it replaced: whoever holds it last frees it, so a caller that
    /// keeps it until its strong count is 1 (every reader moved on) frees it off the workers.
    pub fn publish_numbered(
        &self,
        gen: Generation,
    ) -> Result<(u64, Arc<Generation>), GenerationError> {
        gen.validate()?;
        let old = self.current.swap(Arc::new(gen));
        Ok((self.epoch.fetch_add(1, Ordering::AcqRel) + 1, old))
    }

    /// The current epoch (incremented by every publish).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A reader for one worker.
    pub fn reader(self: &Arc<Self>) -> GenerationReader {
        let epoch = self.epoch();
        GenerationReader {
            cell: self.clone(),
            epoch,
            gen: self.current.load_full(),
        }
    }
}

/// One worker's view of the current generation.
#[derive(Debug)]
pub struct GenerationReader {
    cell: Arc<GenerationCell>,
    epoch: u64,
    gen: Arc<Generation>,
}

impl GenerationReader {
    /// The generation to use for the next burst: re-reads the cell only when its epoch moved.
    #[inline]
    pub fn current(&mut self) -> &Generation {
        let e = self.cell.epoch.load(Ordering::Acquire);
        if e != self.epoch {
            self.gen = self.cell.current.load_full();
            self.epoch = e;
        }
        &self.gen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::VecPacket;
    use crate::stats::{port_totals, StatsWriter};

    /// Matches frames whose EtherType is the given one (a stand-in stage for chain tests).
    #[derive(Debug)]
    struct EtherTypeIs(u16, u32);

    impl Classifier for EtherTypeIs {
        fn classify(&self, pkt: &PacketView<'_>) -> Verdict {
            if pkt.parsed.ethertype == self.0 {
                Verdict::Match(self.1)
            } else {
                Verdict::NoMatch
            }
        }
    }

    /// Matches packets carrying the given mark.
    #[derive(Debug)]
    struct MarkIs(u32);

    impl Classifier for MarkIs {
        fn classify(&self, pkt: &PacketView<'_>) -> Verdict {
            if pkt.mark == self.0 {
                Verdict::Match(0)
            } else {
                Verdict::NoMatch
            }
        }
    }

    /// A chain of classifiers that answers [`ChainClassifier::decides_at_ingress`] from the
    /// frame (by parsing it, as a chain reading only the frame needs not).
    #[derive(Debug)]
    struct TestChain(Vec<Box<dyn Classifier>>);

    impl ChainClassifier for TestChain {
        fn len(&self) -> usize {
            self.0.len()
        }

        fn classify_from(&self, pkt: &PacketView<'_>, first: usize) -> Option<(usize, Verdict)> {
            (first..self.0.len())
                .map(|i| (i, self.0[i].classify(pkt)))
                .find(|(_, v)| *v != Verdict::NoMatch)
        }

        fn decides_at_ingress(&self, f: &IngressFrame<'_>) -> bool {
            let Ok(parsed) = wire::parse(f.data, f.frame_len, false) else {
                return true;
            };
            let view = PacketView {
                data: f.data,
                frame_len: f.frame_len,
                parsed: &parsed,
                dev: f.dev,
                iif: f.dev,
                ingress_mac: f.ingress_mac,
                rss_hash: f.rss_hash,
                mark: 0,
                priority: 0,
                classid: 0,
                flowlabel: 0,
            };
            self.classify_from(&view, 0).is_some()
        }
    }

    fn arp() -> VecPacket {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&0x0806u16.to_be_bytes());
        f.extend_from_slice(&[0u8; 28]);
        VecPacket::new(f)
    }

    fn ports(n: usize) -> Vec<PortPipeline> {
        (0..n)
            .map(|i| PortPipeline {
                name: format!("p{i}"),
                ..Default::default()
            })
            .collect()
    }

    fn filter(c: impl Classifier + 'static, actions: Vec<Action>) -> Filter {
        Filter::new("f", Box::new(c), actions)
    }

    fn run(
        gen: &Generation,
        pkt: VecPacket,
        ingress: u16,
    ) -> (Vec<(PortIndex, VecPacket)>, Vec<crate::stats::PortTotals>) {
        let (mut w, r) =
            StatsWriter::new(1, gen.ports.len(), gen.filter_count(), gen.action_count());
        let mut sink = VecSink::default();
        gen.process(pkt, PortIndex(ingress), &mut w, &mut sink);
        (sink.sent, port_totals(&[r], gen.ports.len()))
    }

    #[test]
    fn forwarding_table_redirects_drops_and_reports_no_route() {
        let mut p = ports(3);
        p[0].forward = Forward::To(PortIndex(1));
        p[1].forward = Forward::Drop;
        let gen = Generation {
            ports: p,
            ..Default::default()
        };
        gen.validate().unwrap();

        let (out, _) = run(&gen, arp(), 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, PortIndex(1));
        assert_eq!(out[0].1, arp(), "forwarding does not touch the bytes");

        let (out, t) = run(&gen, arp(), 1);
        assert!(out.is_empty());
        assert_eq!(t[1].drops[DropReason::ActionDrop.index()], 1);

        let (out, t) = run(&gen, arp(), 2);
        assert!(out.is_empty());
        assert_eq!(t[2].drops[DropReason::NoRoute.index()], 1);

        // An ingress index outside the generation is a counted drop, not a panic.
        let (out, _) = run(&gen, arp(), 7);
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_frames_are_dropped_with_the_parser_reason_on_the_ingress_port() {
        let mut p = ports(2);
        p[0].forward = Forward::To(PortIndex(1));
        let gen = Generation {
            ports: p,
            ..Default::default()
        };
        let (out, t) = run(&gen, VecPacket::new(vec![0u8; 9]), 0);
        assert!(out.is_empty());
        assert_eq!(t[0].drops[DropReason::Runt.index()], 1);
        assert_eq!(t[0].drops_total(), 1);
    }

    #[test]
    fn chain_first_decisive_filter_wins_and_continue_moves_on() {
        let mut p = ports(4);
        p[0].forward = Forward::To(PortIndex(1));
        p[0].ingress = vec![
            filter(EtherTypeIs(0x0800, 0), vec![Action::Drop]), // no match for ARP
            filter(
                EtherTypeIs(0x0806, 5),
                vec![Action::SetMark(9), Action::Continue, Action::Drop],
            ),
            filter(MarkIs(9), vec![Action::redirect(PortIndex(2))]),
            filter(EtherTypeIs(0x0806, 0), vec![Action::redirect(PortIndex(3))]),
        ];
        let gen = Generation {
            ports: p,
            ..Default::default()
        };
        gen.validate().unwrap();
        let (out, t) = run(&gen, arp(), 0);
        assert_eq!(
            out.iter().map(|o| o.0).collect::<Vec<_>>(),
            vec![PortIndex(2)]
        );
        assert_eq!(t[0].drops_total(), 0);
    }

    #[test]
    fn the_filtered_burst_path_treats_every_frame_as_process_does() {
        use etherparse::PacketBuilder;
        let filters = || {
            vec![
                filter(
                    EtherTypeIs(0x0806, 0),
                    vec![Action::SetMark(7), Action::Continue],
                ),
                filter(MarkIs(7), vec![Action::mirror(PortIndex(3)), Action::Pass]),
                filter(EtherTypeIs(0x0800, 0), vec![Action::Drop]),
                filter(
                    EtherTypeIs(0x86dd, 0),
                    vec![Action::SetClassid(5), Action::Continue],
                ),
                filter(EtherTypeIs(0x88b5, 0), vec![Action::redirect(PortIndex(2))]),
            ]
        };
        // Filters (one by one, or fused into one chain that answers `decides_at_ingress`),
        // then a plain destination or a tunnel; a tunnel without filters.
        let mut gens = Vec::new();
        for (with_filters, fused, tunnel) in [
            (true, false, false),
            (true, false, true),
            (true, true, false),
            (true, true, true),
            (false, false, true),
        ] {
            let mut p = ports(4);
            p[0].forward = Forward::To(PortIndex(1));
            if with_filters {
                p[0].ingress = filters();
            }
            if fused {
                let chain: Arc<dyn ChainClassifier> = Arc::new(TestChain(
                    filters().into_iter().map(|f| f.classifier).collect(),
                ));
                for (index, f) in p[0].ingress.iter_mut().enumerate() {
                    f.fused = Some(Fused {
                        chain: chain.clone(),
                        index,
                    });
                }
            }
            if tunnel {
                p[1].tunnel = Some(0);
            }
            let gen = Generation {
                ports: p,
                ..Default::default()
            };
            gen.validate().unwrap();
            let t = gen.filtered_target(PortIndex(0)).unwrap();
            assert_eq!(t.out, PortIndex(1));
            assert_eq!(t.sole_chain.is_some(), fused);
            assert_eq!(t.needs_parse, tunnel);
            assert_eq!(gen.burst_target(PortIndex(0)), None);
            assert!(
                gen.filtered_target(PortIndex(1)).is_none(),
                "no forwarding entry"
            );
            gens.push(gen);
        }

        let mut v4 = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2000)
            .write(&mut v4, &[1, 2, 3, 4])
            .unwrap();
        let mut v6 = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6([1; 16], [2; 16], 64)
            .udp(1000, 2000)
            .write(&mut v6, &[1, 2, 3, 4])
            .unwrap();
        let mut other = arp().bytes;
        other[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        let mut unknown = other.clone();
        unknown[13] = 0xb6;
        let mut bad_v4 = v4.clone();
        bad_v4[14 + 10] ^= 0xff; // header checksum
                                 // With filters: mirrored and passed, dropped, classified and passed, redirected, passed
                                 // unmatched; malformed (two reasons).
        let frames = [arp().bytes, v4, v6, other, unknown, bad_v4, vec![0u8; 9]];
        for (g, gen) in gens.iter().enumerate() {
            for f in &frames {
                let (want, want_totals) = run(gen, VecPacket::new(f.clone()), 0);
                let (mut w, r) =
                    StatsWriter::new(1, gen.ports.len(), gen.filter_count(), gen.action_count());
                let mut sink = VecSink::default();
                let t = gen.filtered_target(PortIndex(0)).unwrap();
                if let Some(pkt) = gen.classify_in_burst(
                    VecPacket::new(f.clone()),
                    PortIndex(0),
                    &t,
                    &mut w,
                    &mut sink,
                ) {
                    sink.send(PortIndex(1), pkt, &mut w);
                }
                let got_totals = port_totals(&[r], gen.ports.len());
                assert_eq!(sink.sent, want, "generation {g}, frame {f:02x?}");
                for (a, e) in got_totals.iter().zip(&want_totals) {
                    assert_eq!(
                        (a.tx_packets, &a.drops),
                        (e.tx_packets, &e.drops),
                        "generation {g}, frame {f:02x?}"
                    );
                }
            }
        }
    }

    #[test]
    fn l2_validation_forwards_without_reading_network_headers_unless_classifiers_need_them() {
        let mut bad_ip = arp().bytes;
        bad_ip[12..14].copy_from_slice(&0x0800u16.to_be_bytes()); // claims IPv4, holds ARP bytes
        let mut p = ports(2);
        p[0].forward = Forward::To(PortIndex(1));
        p[0].validation = Validation::L2;
        let gen = Generation {
            ports: p,
            ..Default::default()
        };
        let (out, _) = run(&gen, VecPacket::new(bad_ip.clone()), 0);
        assert_eq!(
            out.len(),
            1,
            "L2 validation forwards a frame with a bad IP header"
        );
        let (out, t) = run(&gen, VecPacket::new(vec![0u8; 13]), 0);
        assert!(out.is_empty());
        assert_eq!(
            t[0].drops[DropReason::Runt.index()],
            1,
            "runts are still dropped"
        );

        // With a classifier on the port, headers are validated after all.
        let mut p = ports(2);
        p[0].forward = Forward::To(PortIndex(1));
        p[0].validation = Validation::L2;
        p[0].ingress = vec![filter(EtherTypeIs(0x86dd, 0), vec![Action::Drop])];
        let gen = Generation {
            ports: p,
            ..Default::default()
        };
        let (out, t) = run(&gen, VecPacket::new(bad_ip), 0);
        assert!(out.is_empty());
        assert_eq!(t[0].drops_total(), 1);
    }

    #[test]
    fn pass_falls_back_to_the_forwarding_entry() {
        let mut p = ports(3);
        p[0].forward = Forward::To(PortIndex(2));
        p[0].ingress = vec![
            filter(EtherTypeIs(0x0806, 0), vec![Action::Pass]),
            filter(EtherTypeIs(0x0806, 0), vec![Action::redirect(PortIndex(1))]),
        ];
        let gen = Generation {
            ports: p,
            ..Default::default()
        };
        let (out, _) = run(&gen, arp(), 0);
        assert_eq!(out[0].0, PortIndex(2));
    }

    #[test]
    fn egress_hooks_can_drop_or_redirect_and_loops_stop_at_the_nest_limit() {
        let mut p = ports(3);
        p[0].forward = Forward::To(PortIndex(1));
        p[1].egress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![Action::redirect(PortIndex(2))],
        )];
        let gen = Generation {
            ports: p,
            ..Default::default()
        };
        let (out, _) = run(&gen, arp(), 0);
        assert_eq!(out[0].0, PortIndex(2));

        let mut p = ports(3);
        p[0].forward = Forward::To(PortIndex(1));
        p[1].egress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![Action::redirect(PortIndex(2))],
        )];
        p[2].egress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![Action::redirect(PortIndex(1))],
        )];
        let gen = Generation {
            ports: p,
            ..Default::default()
        };
        let (out, t) = run(&gen, arp(), 0);
        assert!(out.is_empty());
        assert_eq!(
            t.iter()
                .map(|x| x.drops[DropReason::RedirectLoop.index()])
                .sum::<u64>(),
            1
        );

        let mut p = ports(2);
        p[0].forward = Forward::To(PortIndex(1));
        p[1].egress = vec![filter(EtherTypeIs(0x0806, 0), vec![Action::Drop])];
        let gen = Generation {
            ports: p,
            ..Default::default()
        };
        let (out, t) = run(&gen, arp(), 0);
        assert!(out.is_empty());
        assert_eq!(t[1].drops[DropReason::ActionDrop.index()], 1);
    }

    #[test]
    fn validation_rejects_references_to_missing_ports() {
        let mut p = ports(2);
        p[0].forward = Forward::To(PortIndex(2));
        let e = Generation {
            ports: p,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.0.contains("p0") && e.0.contains("port index 2"), "{e}");

        let mut p = ports(2);
        p[1].ingress = vec![filter(
            EtherTypeIs(0, 0),
            vec![Action::redirect(PortIndex(5))],
        )];
        let e = GenerationCell::new(Generation {
            ports: p,
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.0.contains("mirred") && e.0.contains("port index 5"),
            "{e}"
        );

        let mut p = ports(2);
        p[1].ingress = vec![filter(
            EtherTypeIs(0, 0),
            vec![mirred(Egress, Mirror, Group(1))],
        )];
        let e = Generation {
            ports: p,
            groups: vec![PortGroup::default()],
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.0.contains("port group 1"), "{e}");

        let e = Generation {
            ports: ports(2),
            groups: vec![PortGroup {
                name: "g".into(),
                members: vec![PortIndex(2)],
            }],
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.0.contains("\"g\" member"), "{e}");
    }

    #[test]
    fn workers_pick_up_a_published_generation_at_the_next_read() {
        let mut p = ports(2);
        p[0].forward = Forward::To(PortIndex(1));
        let cell = GenerationCell::new(Generation {
            ports: p,
            ..Default::default()
        })
        .unwrap();
        let mut reader = cell.reader();
        assert_eq!(reader.current().ports[0].forward, Forward::To(PortIndex(1)));
        let mut p = ports(2);
        p[0].forward = Forward::Drop;
        assert_eq!(
            cell.publish(Generation {
                ports: p,
                ..Default::default()
            })
            .unwrap(),
            2
        );
        assert_eq!(reader.current().ports[0].forward, Forward::Drop);
        // An invalid generation is refused and the running one stays.
        let mut p = ports(1);
        p[0].forward = Forward::To(PortIndex(3));
        assert!(cell
            .publish(Generation {
                ports: p,
                ..Default::default()
            })
            .is_err());
        assert_eq!(cell.epoch(), 2);
        assert_eq!(reader.current().ports.len(), 2);
    }

    #[test]
    fn publish_numbered_keeps_the_callers_counter_ids() {
        let cell = GenerationCell::new(gen_of(ports(2))).unwrap();
        let mut reader = cell.reader();
        let mut p = ports(2);
        let mut f = filter(MarkIs(0), vec![Action::Pass]);
        (f.id, f.action_base) = (7, 40);
        p[0].ingress.push(f);
        let (epoch, old) = cell.publish_numbered(gen_of(p)).unwrap();
        assert_eq!(epoch, 2);
        assert!(old.ports[0].ingress.is_empty());
        assert_eq!(Arc::strong_count(&old), 2, "the reader still holds it");
        let f = &reader.current().ports[0].ingress[0];
        assert_eq!((f.id, f.action_base), (7, 40));
        assert_eq!(Arc::strong_count(&old), 1, "the reader moved on");
    }
    use MirredDirection::{Egress, Ingress};
    use MirredOp::{Mirror, Redirect};
    use MirredTarget::{Group, Port};

    fn mirred(direction: MirredDirection, op: MirredOp, target: MirredTarget) -> Action {
        Action::Mirred(Mirred {
            direction,
            op,
            target,
        })
    }

    /// Matches everything with the class id in byte `at` of the frame.
    #[derive(Debug)]
    struct ClassFromByte(usize);

    impl Classifier for ClassFromByte {
        fn classify(&self, pkt: &PacketView<'_>) -> Verdict {
            Verdict::Match(u32::from(pkt.data[self.0]))
        }
    }

    /// Matches packets that arrived through `iif` on hook port `dev`.
    #[derive(Debug)]
    struct Came {
        dev: u16,
        iif: u16,
    }

    impl Classifier for Came {
        fn classify(&self, pkt: &PacketView<'_>) -> Verdict {
            if pkt.dev == PortIndex(self.dev) && pkt.iif == PortIndex(self.iif) {
                Verdict::Match(0)
            } else {
                Verdict::NoMatch
            }
        }
    }

    /// Runs one ARP frame received on `ingress` through `gen` with `sink`; returns the ports it
    /// was sent to (in order), port totals, action totals and mirror copies.
    fn run_with(
        mut gen: Generation,
        ingress: u16,
        sink: &mut VecSink<VecPacket>,
    ) -> (
        Vec<u16>,
        Vec<crate::stats::PortTotals>,
        Vec<crate::stats::ActionTotals>,
        u64,
    ) {
        gen.assign_filter_ids();
        gen.validate().unwrap();
        let (mut w, r) =
            StatsWriter::new(1, gen.ports.len(), gen.filter_count(), gen.action_count());
        gen.process(arp(), PortIndex(ingress), &mut w, sink);
        let t = port_totals(std::slice::from_ref(&r), gen.ports.len());
        let a = crate::stats::action_totals(std::slice::from_ref(&r), gen.action_count());
        // Conservation: one received + copies = sent + dropped.
        let drops: u64 = t.iter().map(|x| x.drops_total()).sum();
        assert_eq!(
            1 + r.mirror_copies.get(),
            sink.sent.len() as u64 + drops,
            "{t:?}"
        );
        (
            sink.sent.iter().map(|s| s.0 .0).collect(),
            t,
            a,
            r.mirror_copies.get(),
        )
    }

    fn gen_of(p: Vec<PortPipeline>) -> Generation {
        Generation {
            ports: p,
            ..Default::default()
        }
    }

    fn drops(t: &[crate::stats::PortTotals], reason: DropReason) -> u64 {
        t.iter().map(|x| x.drops[reason.index()]).sum()
    }

    #[test]
    fn egress_mirror_copies_and_the_original_goes_on() {
        let mut p = ports(3);
        p[0].forward = Forward::To(PortIndex(1));
        p[0].ingress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![Action::SetMark(7), Action::mirror(PortIndex(2))],
        )];
        // The copy runs port 2's egress hook and keeps the mark set before the mirror.
        p[2].egress = vec![filter(MarkIs(7), vec![Action::SetClassid(1)])];
        let mut sink = VecSink::default();
        let (out, _, a, copies) = run_with(gen_of(p), 0, &mut sink);
        assert_eq!(
            out,
            vec![2, 1],
            "copy first (sent on the spot), then the original"
        );
        assert_eq!(copies, 1);
        assert_eq!(sink.sent[0].1, sink.sent[1].1);
        assert_eq!((a[1].packets, a[1].bytes, a[1].overlimits), (1, 42, 0));
        assert_eq!(a[2].packets, 1, "the copy's egress filter ran");
    }

    #[test]
    fn ingress_redirect_reenters_the_target_ingress_and_its_forwarding_entry() {
        let mut p = ports(4);
        p[0].forward = Forward::To(PortIndex(1));
        p[0].ingress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![mirred(Ingress, Redirect, Port(PortIndex(2))), Action::Drop],
        )];
        p[2].forward = Forward::To(PortIndex(3));
        let mut sink = VecSink::default();
        let (out, t, a, _) = run_with(gen_of(p), 0, &mut sink);
        assert_eq!(out, vec![3]);
        assert_eq!(t[0].drops_total(), 0, "actions after a redirect do not run");
        assert_eq!(a[1].packets, 0);

        // The target's classifiers see dev = target, iif = the port that redirected.
        let mut p = ports(4);
        p[0].ingress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![mirred(Ingress, Redirect, Port(PortIndex(2)))],
        )];
        p[2].ingress = vec![filter(
            Came { dev: 2, iif: 0 },
            vec![Action::redirect(PortIndex(1))],
        )];
        let (out, _, _, _) = run_with(gen_of(p), 0, &mut VecSink::default());
        assert_eq!(out, vec![1]);
    }

    #[test]
    fn ingress_mirror_runs_the_target_ingress_on_the_copy_only() {
        let mut p = ports(4);
        p[0].forward = Forward::To(PortIndex(1));
        p[0].ingress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![mirred(Ingress, Mirror, Port(PortIndex(2))), Action::Pass],
        )];
        p[2].ingress = vec![filter(
            Came { dev: 2, iif: 0 },
            vec![Action::redirect(PortIndex(3))],
        )];
        let (out, _, _, copies) = run_with(gen_of(p), 0, &mut VecSink::default());
        assert_eq!(out, vec![3, 1]);
        assert_eq!(copies, 1);
    }

    #[test]
    fn groups_skip_the_hook_port_and_redirect_moves_the_original_to_the_last_member() {
        let group = PortGroup {
            name: "g".into(),
            members: vec![PortIndex(0), PortIndex(1), PortIndex(2), PortIndex(3)],
        };
        for (op, want, want_copies) in [(Mirror, vec![0, 2, 3, 4], 3), (Redirect, vec![0, 2, 3], 2)]
        {
            let mut p = ports(5);
            p[0].forward = Forward::To(PortIndex(4));
            p[1].ingress = vec![filter(
                EtherTypeIs(0x0806, 0),
                vec![mirred(Egress, op, Group(0))],
            )];
            p[1].forward = Forward::To(PortIndex(4));
            let gen = Generation {
                ports: p,
                groups: vec![group.clone()],
                ..Default::default()
            };
            let (out, _, a, copies) = run_with(gen, 1, &mut VecSink::default());
            assert_eq!(
                out, want,
                "{op:?}: members in order, never the receiving port 1"
            );
            assert_eq!(copies, want_copies, "{op:?}");
            assert_eq!(a[0].packets, 1);
        }
    }

    #[test]
    fn group_redirect_excludes_the_receiving_port_and_an_empty_group_is_counted() {
        let mut p = ports(3);
        p[0].ingress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![mirred(Egress, Redirect, Group(0))],
        )];
        let gen = Generation {
            ports: p,
            groups: vec![PortGroup {
                name: "g".into(),
                members: vec![PortIndex(0), PortIndex(2)],
            }],
            ..Default::default()
        };
        let (out, _, _, copies) = run_with(gen, 0, &mut VecSink::default());
        assert_eq!((out, copies), (vec![2], 0));

        let mut p = ports(3);
        p[0].ingress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![mirred(Egress, Redirect, Group(0))],
        )];
        let gen = Generation {
            ports: p,
            groups: vec![PortGroup {
                name: "g".into(),
                members: vec![PortIndex(0)],
            }],
            ..Default::default()
        };
        let (out, t, a, _) = run_with(gen, 0, &mut VecSink::default());
        assert!(out.is_empty());
        assert_eq!(t[0].drops[DropReason::MirredNoTarget.index()], 1);
        assert_eq!((a[0].overlimits, a[0].drops), (1, 1));
    }

    #[test]
    fn a_redirect_loop_stops_at_the_nest_limit() {
        for dir in [Egress, Ingress] {
            let mut p = ports(2);
            let hook = |f| match dir {
                Egress => (vec![], vec![f]),
                Ingress => (vec![f], vec![]),
            };
            for (i, other) in [(0usize, 1u16), (1, 0)] {
                let (ing, eg) = hook(filter(
                    EtherTypeIs(0x0806, 0),
                    vec![mirred(dir, Redirect, Port(PortIndex(other)))],
                ));
                p[i].ingress = ing;
                p[i].egress = eg;
                p[i].forward = Forward::To(PortIndex(other));
            }
            let (out, t, a, _) = run_with(gen_of(p), 0, &mut VecSink::default());
            assert!(out.is_empty(), "{dir:?}");
            assert_eq!(drops(&t, DropReason::RedirectLoop), 1, "{dir:?}");
            // Hops 1..=4 ran; the fifth mirred action dropped the packet.
            assert_eq!(a[0].packets + a[1].packets, 5, "{dir:?}");
            assert_eq!(a[0].drops + a[1].drops, 1, "{dir:?}");
        }
    }

    #[test]
    fn mirror_loops_are_bounded_too() {
        // Each port mirrors to the other and forwards to a sink port: copies stop at depth 4.
        let mut p = ports(3);
        for (i, other) in [(0usize, 1u16), (1, 0)] {
            p[i].ingress = vec![filter(
                EtherTypeIs(0x0806, 0),
                vec![mirred(Ingress, Mirror, Port(PortIndex(other)))],
            )];
            p[i].forward = Forward::To(PortIndex(2));
        }
        let (out, t, _, copies) = run_with(gen_of(p), 0, &mut VecSink::default());
        assert_eq!(copies, 4);
        assert_eq!(
            out.len(),
            4,
            "the original and the copies at depth 1..=3 go out"
        );
        assert_eq!(
            drops(&t, DropReason::RedirectLoop),
            1,
            "the copy at depth 4 is dropped"
        );
    }

    #[test]
    fn down_targets_count_overlimits_for_mirrors_and_drop_redirects() {
        let mut p = ports(3);
        p[0].forward = Forward::To(PortIndex(1));
        p[0].ingress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![Action::mirror(PortIndex(2))],
        )];
        let mut sink = VecSink {
            down: vec![PortIndex(2)],
            ..Default::default()
        };
        let (out, _, a, copies) = run_with(gen_of(p), 0, &mut sink);
        assert_eq!((out, copies), (vec![1], 0));
        assert_eq!((a[0].packets, a[0].overlimits, a[0].drops), (1, 1, 0));

        let mut p = ports(3);
        p[0].forward = Forward::To(PortIndex(1));
        p[0].ingress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![Action::redirect(PortIndex(2))],
        )];
        let mut sink = VecSink {
            down: vec![PortIndex(2)],
            ..Default::default()
        };
        let (out, t, a, _) = run_with(gen_of(p), 0, &mut sink);
        assert!(out.is_empty());
        assert_eq!(t[0].drops[DropReason::MirredTargetDown.index()], 1);
        assert_eq!((a[0].overlimits, a[0].drops), (1, 1));

        // No clone buffer left: an overlimit, the original still goes.
        let mut p = ports(3);
        p[0].forward = Forward::To(PortIndex(1));
        p[0].ingress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![Action::mirror(PortIndex(2))],
        )];
        let mut sink = VecSink {
            clone_budget: Some(0),
            ..Default::default()
        };
        let (out, _, a, _) = run_with(gen_of(p), 0, &mut sink);
        assert_eq!((out, a[0].overlimits), (vec![1], 1));
    }

    #[test]
    fn class_tables_pick_the_actions_of_the_returned_class() {
        let table = |byte: u8| {
            let mut p = ports(4);
            p[0].forward = Forward::To(PortIndex(3));
            let mut f = filter(ClassFromByte(20), vec![Action::Drop]);
            f.classes = vec![
                ClassActions {
                    classid: 1,
                    actions: vec![Action::redirect(PortIndex(1))],
                    base: 0,
                },
                ClassActions {
                    classid: 2,
                    actions: vec![Action::redirect(PortIndex(2))],
                    base: 0,
                },
            ];
            p[0].ingress = vec![f];
            let mut frame = arp();
            frame.bytes[20] = byte;
            let mut gen = gen_of(p);
            gen.assign_filter_ids();
            let (mut w, r) = StatsWriter::new(1, 4, 1, gen.action_count());
            let mut sink = VecSink::default();
            gen.process(frame, PortIndex(0), &mut w, &mut sink);
            let a = crate::stats::action_totals(&[r], gen.action_count());
            (sink.sent.iter().map(|s| s.0 .0).collect::<Vec<_>>(), a)
        };
        let (out, a) = table(1);
        assert_eq!(out, vec![1]);
        assert_eq!(
            a.iter().map(|x| x.packets).collect::<Vec<_>>(),
            vec![0, 1, 0]
        );
        assert_eq!(table(2).0, vec![2]);
        let (out, a) = table(9);
        assert!(
            out.is_empty(),
            "classes without an entry take the default actions"
        );
        assert_eq!(a[0].packets, 1);
    }

    #[test]
    fn actions_that_run_to_the_end_pass_the_packet() {
        let mut p = ports(3);
        p[0].forward = Forward::To(PortIndex(1));
        p[0].ingress = vec![
            filter(EtherTypeIs(0x0806, 0), vec![Action::SetMark(1)]),
            filter(EtherTypeIs(0x0806, 0), vec![Action::redirect(PortIndex(2))]),
        ];
        let (out, _, _, _) = run_with(gen_of(p), 0, &mut VecSink::default());
        assert_eq!(
            out,
            vec![1],
            "tc: the first filter's actions end in pipe, the packet goes on"
        );
    }

    // ---- IPv6 flow labels on egress ----

    fn v6_udp(sport: u16, label: u32) -> VecPacket {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0xfd; 16],
                64,
            )
            .udp(sport, 53)
            .write(&mut f, &[7; 12])
            .unwrap();
        flowlabel::write_label(&mut f[14..], label);
        VecPacket::new(f)
    }

    fn v4_udp() -> VecPacket {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut f, &[7; 12])
            .unwrap();
        VecPacket::new(f)
    }

    fn label_of(p: &VecPacket) -> u32 {
        flowlabel::read_label(&p.bytes[14..]).unwrap()
    }

    fn labelling_gen(mode: LabelMode, reserved: &[u32]) -> Generation {
        let mut p = ports(3);
        p[0].forward = Forward::To(PortIndex(1));
        p[1].flowlabel = mode;
        p[2].forward = Forward::To(PortIndex(0));
        let cfg = flowlabel::FlowLabelConfig {
            reservations: reserved
                .iter()
                .map(|&label| flowlabel::Reservation {
                    label,
                    share: flowlabel::Share::Exclusive,
                    users: 1,
                })
                .collect(),
            ..Default::default()
        };
        Generation {
            ports: p,
            flowlabels: Some(Arc::new(
                FlowLabelTable::with_seeds(&cfg, [5, 6, 7]).unwrap(),
            )),
            ..Default::default()
        }
    }

    fn run_many(
        gen: &Generation,
        pkts: Vec<(VecPacket, u16)>,
    ) -> (Vec<VecPacket>, Arc<crate::stats::LcoreStats>) {
        let (mut w, r) =
            StatsWriter::new(3, gen.ports.len(), gen.filter_count(), gen.action_count());
        w.set_now_ms(1_000);
        let mut sink = VecSink::default();
        for (p, i) in pkts {
            gen.process(p, PortIndex(i), &mut w, &mut sink);
        }
        (sink.sent.into_iter().map(|(_, p)| p).collect(), r)
    }

    #[test]
    fn fill_port_labels_zero_labels_and_keeps_others() {
        let mut gen = labelling_gen(LabelMode::Fill, &[]);
        gen.assign_filter_ids();
        let t = gen
            .burst_target(PortIndex(0))
            .expect("a plain forward to a labelling port");
        assert_eq!(t.flowlabel, LabelMode::Fill);
        // With framing-only validation the headers are not parsed: the full path labels.
        gen.ports[0].validation = Validation::L2;
        assert_eq!(gen.burst_target(PortIndex(0)), None);
        gen.ports[0].validation = Validation::Full;
        let input = vec![
            (v6_udp(1000, 0), 0),
            (v6_udp(1000, 0), 0),
            (v6_udp(1001, 0), 0),
            (v6_udp(1002, 0x12345), 0),
            (v4_udp(), 0),
            (v6_udp(1000, 0), 2), // port 0 does not label
        ];
        let (out, st) = run_many(&gen, input.clone());
        assert_eq!(out.len(), 6);
        let (a, b, c) = (label_of(&out[0]), label_of(&out[1]), label_of(&out[2]));
        assert!(a != 0 && c != 0 && a != c);
        assert_eq!(a, b, "same flow, same label");
        assert_eq!(label_of(&out[3]), 0x12345, "fill keeps a non-zero label");
        // Only the label bits changed.
        let mut expect = input[0].0.bytes.clone();
        flowlabel::write_label(&mut expect[14..], a);
        assert_eq!(out[0].bytes, expect);
        assert_eq!(out[4], input[4].0, "IPv4 untouched byte for byte");
        assert_eq!(out[5], input[5].0, "unlabelled port untouched");
        let f = &st.flowlabel;
        assert_eq!(
            (
                f.labelled.get(),
                f.hits.get(),
                f.allocations.get(),
                f.kept.get()
            ),
            (3, 1, 2, 1)
        );
        // The table lists both flows.
        let t = gen.flowlabels.as_ref().unwrap();
        assert_eq!(t.live(), 2);
    }

    #[test]
    fn override_port_replaces_labels_with_the_flows_label() {
        let gen = labelling_gen(LabelMode::Override, &[]);
        let (out, st) = run_many(&gen, vec![(v6_udp(9, 0xabcde), 0), (v6_udp(9, 0), 0)]);
        assert_ne!(label_of(&out[0]), 0xabcde);
        assert_eq!(label_of(&out[0]), label_of(&out[1]));
        assert_eq!(st.flowlabel.labelled.get(), 2);
    }

    #[test]
    fn a_flowlabel_action_pins_a_reserved_label() {
        let mut gen = labelling_gen(LabelMode::Override, &[0x77777]);
        gen.ports[0].ingress.push(filter(
            EtherTypeIs(0x86dd, 1),
            vec![Action::SetFlowLabel(0x77777)],
        ));
        gen.assign_filter_ids();
        gen.validate().unwrap();
        let (out, st) = run_many(&gen, vec![(v6_udp(9, 0), 0), (v6_udp(10, 5), 0)]);
        assert_eq!(label_of(&out[0]), 0x77777);
        assert_eq!(label_of(&out[1]), 0x77777);
        assert_eq!(
            (st.flowlabel.pinned.get(), st.flowlabel.allocations.get()),
            (2, 0)
        );
        // An unreserved label is refused.
        gen.ports[0].ingress[0] = filter(EtherTypeIs(0x86dd, 1), vec![Action::SetFlowLabel(0x12)]);
        let e = gen.validate().unwrap_err().0;
        assert!(e.contains("0x00012 is not a reserved label"), "{e}");
    }

    #[test]
    fn labelling_port_without_table_is_refused() {
        let mut gen = labelling_gen(LabelMode::Fill, &[]);
        gen.flowlabels = None;
        let e = gen.validate().unwrap_err().0;
        assert!(e.contains("port \"p1\" labels IPv6 flows"), "{e}");
    }
}
