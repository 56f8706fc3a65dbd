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
use crate::packet::Packet;
use crate::stats::StatsWriter;
use crate::wire::{self, Parsed};
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

    /// A hash seed the control thread re-randomises periodically (cls_flow's perturbation);
    /// `None` for classifiers without one.
    fn perturbation(&self) -> Option<Perturbation> {
        None
    }
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

/// What to do with a packet a filter matched. Actions of a filter run in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop classifying; the packet takes the port's forwarding entry (tc "ok").
    Pass,
    /// Drop the packet (counted as `action_drop`).
    Drop,
    /// Send the packet out of `port` (tc mirred egress redirect).
    Redirect(PortIndex),
    /// Set the packet's mark (for later filters and stages) and go on with the next action.
    SetMark(u32),
    /// Set the packet's class id (for later filters and stages) and go on with the next action.
    SetClassid(u32),
    /// Stop running this filter's actions and try the next filter (tc "unspec"/"continue").
    Continue,
}

/// A classifier with its actions, as configured on a port hook.
#[derive(Debug)]
pub struct Filter {
    /// Name used in errors, metrics and logs.
    pub name: String,
    /// Decides whether the filter matches.
    pub classifier: Box<dyn Classifier>,
    /// Run in order on a match.
    pub actions: Vec<Action>,
    /// Where a [`DirectVerdict::Redirect`] sends the packet.
    pub redirect: Option<PortIndex>,
    /// Index of the filter's counters: assigned by [`Generation::assign_filter_ids`] (ingress
    /// filters then egress filters, port by port); builders leave it 0.
    pub id: u32,
}

impl Filter {
    /// A filter with no direct-action redirect port and id 0.
    pub fn new(
        name: impl Into<String>,
        classifier: Box<dyn Classifier>,
        actions: Vec<Action>,
    ) -> Filter {
        Filter {
            name: name.into(),
            classifier,
            actions,
            redirect: None,
            id: 0,
        }
    }
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
}

/// Checks one frame at `level`: `Ok` to forward it, or the reason to drop it.
#[inline(always)]
pub fn validate<P: Packet>(pkt: &P, level: Validation) -> Result<(), DropReason> {
    match level {
        Validation::L2 => wire::check_framing(pkt.data()),
        Validation::Full => {
            wire::parse(pkt.data(), pkt.frame_len(), pkt.ipv4_checksum_verified()).map(|_| ())
        }
    }
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
}

/// One immutable version of the whole pipeline configuration.
#[derive(Debug, Default)]
pub struct Generation {
    /// Every port, indexed by [`PortIndex`].
    pub ports: Vec<PortPipeline>,
}

/// Where the pipeline puts packets it decided to send. The worker implements it with per-port
/// transmit buffers; tests implement it with vectors.
pub trait Sink<P> {
    /// Queue `pkt` for transmission on `port` (a valid index of the generation); count what
    /// is sent or dropped in `stats`.
    fn send(&mut self, port: PortIndex, pkt: P, stats: &mut StatsWriter);
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

enum ChainResult {
    /// No filter decided: use the forwarding entry.
    Fallthrough,
    Send(PortIndex),
    Drop(DropReason),
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
            if let Forward::To(p) = port.forward {
                check(p, &format!("port {:?} forwarding entry", port.name))?;
            }
            for f in port.ingress.iter().chain(&port.egress) {
                if let Some(p) = f.redirect {
                    check(
                        p,
                        &format!("port {:?} filter {:?} redirect port", port.name, f.name),
                    )?;
                }
                for a in &f.actions {
                    if let Action::Redirect(p) = a {
                        check(
                            *p,
                            &format!("port {:?} filter {:?} redirect", port.name, f.name),
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Numbers every filter (ingress then egress, port by port) for its counters; returns the
    /// number of filters. [`GenerationCell`] calls it on every generation it accepts.
    pub fn assign_filter_ids(&mut self) -> usize {
        let mut n = 0u32;
        for p in &mut self.ports {
            for f in p.ingress.iter_mut().chain(p.egress.iter_mut()) {
                f.id = n;
                n += 1;
            }
        }
        n as usize
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

    /// Runs `filters` on `view`; the first decisive action wins (tc semantics: a filter that
    /// does not match, or whose actions say "continue", hands the packet to the next filter).
    #[inline]
    fn run_chain(
        filters: &[Filter],
        view: &mut PacketView<'_>,
        stats: &mut StatsWriter,
    ) -> ChainResult {
        for f in filters {
            match f.classifier.classify(view) {
                Verdict::NoMatch => continue,
                Verdict::Direct(v, classid) => {
                    stats.filter_hit(f.id, view.frame_len);
                    view.classid = classid;
                    return match v {
                        DirectVerdict::Ok => ChainResult::Fallthrough,
                        DirectVerdict::Shot => ChainResult::Drop(DropReason::ActionDrop),
                        DirectVerdict::Stolen | DirectVerdict::Trap => {
                            ChainResult::Drop(DropReason::Stolen)
                        }
                        DirectVerdict::Redirect => match f.redirect {
                            Some(p) => ChainResult::Send(p),
                            None => ChainResult::Drop(DropReason::RedirectNoTarget),
                        },
                    };
                }
                Verdict::Match(classid) => {
                    stats.filter_hit(f.id, view.frame_len);
                    view.classid = classid;
                    if f.actions.is_empty() {
                        // A match without actions classifies and stops (tc: TC_ACT_OK).
                        return ChainResult::Fallthrough;
                    }
                    for a in &f.actions {
                        match *a {
                            Action::Pass => return ChainResult::Fallthrough,
                            Action::Drop => return ChainResult::Drop(DropReason::ActionDrop),
                            Action::Redirect(p) => return ChainResult::Send(p),
                            Action::SetMark(m) => view.mark = m,
                            Action::SetClassid(c) => view.classid = c,
                            Action::Continue => break,
                        }
                    }
                }
            }
        }
        ChainResult::Fallthrough
    }

    /// Where a burst from `ingress` goes when its fate depends only on each frame passing the
    /// port's validation: the port has no ingress filters and forwards to a port without egress
    /// filters. Workers then validate frame by frame and transmit the burst as a whole.
    #[inline]
    pub fn burst_target(&self, ingress: PortIndex) -> Option<BurstTarget> {
        let p = self.ports.get(usize::from(ingress.0))?;
        match p.forward {
            Forward::To(out) if p.ingress.is_empty() => self
                .ports
                .get(usize::from(out.0))
                .filter(|o| o.egress.is_empty())
                .map(|_| BurstTarget {
                    out,
                    validation: p.validation,
                }),
            _ => None,
        }
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
                Self::forward_validated(pkt, ingress, t, stats, sink);
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
            Some(t) => Self::forward_validated(pkt, ingress, t, stats, sink),
            None => self.process_validated(pkt, ingress, stats, sink),
        }
    }

    /// The burst-target path for one packet: a frame that passes validation goes to the
    /// target, anything else is a counted drop.
    #[inline(always)]
    fn forward_validated<P: Packet, S: Sink<P>>(
        pkt: P,
        ingress: PortIndex,
        t: BurstTarget,
        stats: &mut StatsWriter,
        sink: &mut S,
    ) {
        match validate(&pkt, t.validation) {
            Ok(()) => sink.send(t.out, pkt, stats),
            Err(reason) => stats.drop(ingress, reason, 1),
        }
    }

    /// The full path: parse and validate every header, run the chains.
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
        };
        let mut out = match Self::run_chain(&in_port.ingress, &mut view, stats) {
            ChainResult::Send(p) => p,
            ChainResult::Drop(reason) => {
                stats.drop(ingress, reason, 1);
                return;
            }
            ChainResult::Fallthrough => match in_port.forward {
                Forward::To(p) => p,
                Forward::Drop => {
                    stats.drop(ingress, DropReason::ActionDrop, 1);
                    return;
                }
                Forward::None => {
                    stats.drop(ingress, DropReason::NoRoute, 1);
                    return;
                }
            },
        };
        // Egress hooks; a redirect there moves the packet to another port's egress, at most
        // REDIRECT_NEST_LIMIT times.
        let mut nest = 0u8;
        loop {
            let Some(out_port) = self.ports.get(usize::from(out.0)) else {
                stats.drop(ingress, DropReason::NoRoute, 1);
                return;
            };
            if out_port.egress.is_empty() {
                break;
            }
            view.dev = out;
            match Self::run_chain(&out_port.egress, &mut view, stats) {
                ChainResult::Fallthrough => break,
                ChainResult::Drop(reason) => {
                    stats.drop(out, reason, 1);
                    return;
                }
                ChainResult::Send(p) if p == out => break,
                ChainResult::Send(p) => {
                    nest += 1;
                    if nest > REDIRECT_NEST_LIMIT {
                        stats.drop(out, DropReason::RedirectLoop, 1);
                        return;
                    }
                    out = p;
                }
            }
        }
        sink.send(out, pkt, stats);
    }
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
        gen.validate()?;
        self.current.store(Arc::new(gen));
        Ok(self.epoch.fetch_add(1, Ordering::AcqRel) + 1)
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

    /// Collects what the pipeline sends.
    #[derive(Default)]
    struct VecSink(Vec<(PortIndex, VecPacket)>);

    impl Sink<VecPacket> for VecSink {
        fn send(&mut self, port: PortIndex, pkt: VecPacket, stats: &mut StatsWriter) {
            stats.tx(port, 1, u64::from(pkt.frame_len()));
            self.0.push((port, pkt));
        }
    }

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
        let (mut w, r) = StatsWriter::new(1, gen.ports.len(), gen.filter_count());
        let mut sink = VecSink::default();
        gen.process(pkt, PortIndex(ingress), &mut w, &mut sink);
        (sink.0, port_totals(&[r], gen.ports.len()))
    }

    #[test]
    fn forwarding_table_redirects_drops_and_reports_no_route() {
        let mut p = ports(3);
        p[0].forward = Forward::To(PortIndex(1));
        p[1].forward = Forward::Drop;
        let gen = Generation { ports: p };
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
        let gen = Generation { ports: p };
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
            filter(MarkIs(9), vec![Action::Redirect(PortIndex(2))]),
            filter(EtherTypeIs(0x0806, 0), vec![Action::Redirect(PortIndex(3))]),
        ];
        let gen = Generation { ports: p };
        gen.validate().unwrap();
        let (out, t) = run(&gen, arp(), 0);
        assert_eq!(
            out.iter().map(|o| o.0).collect::<Vec<_>>(),
            vec![PortIndex(2)]
        );
        assert_eq!(t[0].drops_total(), 0);
    }

    #[test]
    fn l2_validation_forwards_without_reading_network_headers_unless_classifiers_need_them() {
        let mut bad_ip = arp().bytes;
        bad_ip[12..14].copy_from_slice(&0x0800u16.to_be_bytes()); // claims IPv4, holds ARP bytes
        let mut p = ports(2);
        p[0].forward = Forward::To(PortIndex(1));
        p[0].validation = Validation::L2;
        let gen = Generation { ports: p };
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
        let gen = Generation { ports: p };
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
            filter(EtherTypeIs(0x0806, 0), vec![Action::Redirect(PortIndex(1))]),
        ];
        let gen = Generation { ports: p };
        let (out, _) = run(&gen, arp(), 0);
        assert_eq!(out[0].0, PortIndex(2));
    }

    #[test]
    fn egress_hooks_can_drop_or_redirect_and_loops_stop_at_the_nest_limit() {
        let mut p = ports(3);
        p[0].forward = Forward::To(PortIndex(1));
        p[1].egress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![Action::Redirect(PortIndex(2))],
        )];
        let gen = Generation { ports: p };
        let (out, _) = run(&gen, arp(), 0);
        assert_eq!(out[0].0, PortIndex(2));

        let mut p = ports(3);
        p[0].forward = Forward::To(PortIndex(1));
        p[1].egress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![Action::Redirect(PortIndex(2))],
        )];
        p[2].egress = vec![filter(
            EtherTypeIs(0x0806, 0),
            vec![Action::Redirect(PortIndex(1))],
        )];
        let gen = Generation { ports: p };
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
        let gen = Generation { ports: p };
        let (out, t) = run(&gen, arp(), 0);
        assert!(out.is_empty());
        assert_eq!(t[1].drops[DropReason::ActionDrop.index()], 1);
    }

    #[test]
    fn validation_rejects_references_to_missing_ports() {
        let mut p = ports(2);
        p[0].forward = Forward::To(PortIndex(2));
        let e = Generation { ports: p }.validate().unwrap_err();
        assert!(e.0.contains("p0") && e.0.contains("port index 2"), "{e}");

        let mut p = ports(2);
        p[1].ingress = vec![filter(
            EtherTypeIs(0, 0),
            vec![Action::Redirect(PortIndex(5))],
        )];
        let e = GenerationCell::new(Generation { ports: p }).unwrap_err();
        assert!(e.0.contains("redirect"), "{e}");
    }

    #[test]
    fn workers_pick_up_a_published_generation_at_the_next_read() {
        let mut p = ports(2);
        p[0].forward = Forward::To(PortIndex(1));
        let cell = GenerationCell::new(Generation { ports: p }).unwrap();
        let mut reader = cell.reader();
        assert_eq!(reader.current().ports[0].forward, Forward::To(PortIndex(1)));
        let mut p = ports(2);
        p[0].forward = Forward::Drop;
        assert_eq!(cell.publish(Generation { ports: p }).unwrap(), 2);
        assert_eq!(reader.current().ports[0].forward, Forward::Drop);
        // An invalid generation is refused and the running one stays.
        let mut p = ports(1);
        p[0].forward = Forward::To(PortIndex(3));
        assert!(cell.publish(Generation { ports: p }).is_err());
        assert_eq!(cell.epoch(), 2);
        assert_eq!(reader.current().ports.len(), 2);
    }
}
