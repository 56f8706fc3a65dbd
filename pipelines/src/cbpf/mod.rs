//! The classic-BPF classifier stage (Linux `cls_bpf`): program sources, the loader, the engines
//! that run loaded programs, and the [`Classifier`] that plugs
//! them into a port hook.
//!
//! - [`insn`]: instructions, tc bytecode and `tcpdump -ddd` parsing.
//! - [`check`]: the loader; [`Program`] values are always valid.
//! - [`interp`]: the reference interpreter (libpcap semantics).
//! - [`ebpf`]: translation to eBPF with inline bounds checks, for rbpf, of one program or of a
//!   chain of the programs of consecutive filters, and [`RbpfInterpreter`], the safe engine over
//!   rbpf's interpreter (the JIT is in `pmd-glue`).
//! - [`BpfChain`]: a chain as the pipeline's [`ChainClassifier`]: one call classifies for
//!   every filter of the chain.
//! - [`gen`]: deterministic random valid programs and frames for tests, fuzzing, benchmarks.
use crate::pipeline::{
    BurstForm, ChainClassifier, Classifier, DirectVerdict, IngressFrame, PacketView, PortIndex,
    Verdict,
};
use std::fmt;

pub mod check;
pub mod ebpf;
pub mod gen;
pub mod insn;
pub mod interp;

pub use check::{LoadError, Program};
pub use ebpf::{
    translate, translate_chain, translate_chain_burst, translate_chain_fast, BurstCtx,
    RbpfInterpreter, TranslateError, Translated, BURST_MAX,
};
pub use insn::{parse_ddd, parse_tc_bytecode, Ancillary, Insn};
pub use interp::{Interpreter, Meta};

/// Something that runs one loaded program over a frame. Implementations are immutable, shared
/// by every lcore, and must not allocate, lock or panic per packet.
pub trait Engine: Send + Sync + fmt::Debug {
    /// Short name for logs and metrics ("interpreter", "rbpf-jit", ...).
    fn name(&self) -> &'static str;

    /// Runs the program over `data` (the frame from its Ethernet header, as far as it is
    /// contiguous) of wire length `wirelen`; returns the program's result.
    fn run(&self, data: &[u8], wirelen: u32, meta: &Meta) -> u32;
}

impl Engine for Interpreter {
    fn name(&self) -> &'static str {
        "interpreter"
    }

    #[inline]
    fn run(&self, data: &[u8], wirelen: u32, meta: &Meta) -> u32 {
        Interpreter::run(self, data, wirelen, meta)
    }
}

/// How a program's result is read (`cls_bpf`'s two modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 0 = no match, -1 (0xffffffff) = match with the filter's configured class id, anything
    /// else = match with that class id. Matches run the filter's actions.
    Classid {
        /// The configured class id.
        classid: u32,
    },
    /// The result is a tc verdict (`da` / direct action): ok, shot, stolen, trap or redirect
    /// decide; unspec (-1) and every other value move on to the next filter.
    DirectAction {
        /// The class id a decided packet carries.
        classid: u32,
    },
}

impl Mode {
    /// Whether a program result decides in this mode (and so runs the filter's actions or
    /// verdict) rather than handing the packet to the next filter.
    #[inline]
    pub fn decides(self, result: u32) -> bool {
        match self {
            Mode::Classid { .. } => result != 0,
            Mode::DirectAction { .. } => direct_verdict(result).is_some(),
        }
    }

    /// The verdict of a program result in this mode.
    #[inline]
    pub fn verdict(self, result: u32) -> Verdict {
        match self {
            Mode::Classid { classid } => match result {
                0 => Verdict::NoMatch,
                u32::MAX => Verdict::Match(classid),
                c => Verdict::Match(c),
            },
            Mode::DirectAction { classid } => match direct_verdict(result) {
                Some(v) => Verdict::Direct(v, classid),
                None => Verdict::NoMatch,
            },
        }
    }
}

/// tc verdict values (`linux/pkt_cls.h`).
pub mod tc_act {
    #![allow(missing_docs)]
    pub const UNSPEC: i32 = -1;
    pub const OK: i32 = 0;
    pub const RECLASSIFY: i32 = 1;
    pub const SHOT: i32 = 2;
    pub const PIPE: i32 = 3;
    pub const STOLEN: i32 = 4;
    pub const QUEUED: i32 = 5;
    pub const REPEAT: i32 = 6;
    pub const REDIRECT: i32 = 7;
    pub const TRAP: i32 = 8;
}

/// Maps a direct-action result as `cls_bpf_exec_opcode` does.
pub fn direct_verdict(result: u32) -> Option<DirectVerdict> {
    match result as i32 {
        tc_act::OK => Some(DirectVerdict::Ok),
        tc_act::SHOT => Some(DirectVerdict::Shot),
        tc_act::STOLEN => Some(DirectVerdict::Stolen),
        tc_act::TRAP => Some(DirectVerdict::Trap),
        tc_act::REDIRECT => Some(DirectVerdict::Redirect),
        _ => None,
    }
}

/// A loaded program on a port hook: runs its engine and reads the result per [`Mode`].
#[derive(Debug)]
pub struct BpfClassifier {
    engine: Box<dyn Engine>,
    mode: Mode,
    needs_meta: bool,
    /// The program reads `rxhash`: frames without a NIC hash get the software flow hash.
    needs_rxhash: bool,
    insns: usize,
}

impl BpfClassifier {
    /// A classifier running `engine` (built from `prog`) in `mode`.
    pub fn new(prog: &Program, engine: Box<dyn Engine>, mode: Mode) -> BpfClassifier {
        BpfClassifier {
            engine,
            mode,
            needs_meta: prog.uses_metadata(),
            needs_rxhash: prog.uses(Ancillary::RxHash),
            insns: prog.len(),
        }
    }

    /// The engine's name.
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }
}

impl Classifier for BpfClassifier {
    fn kind(&self) -> &'static str {
        "bpf"
    }

    fn describe(&self) -> (&'static str, usize) {
        (self.engine.name(), self.insns)
    }

    #[inline]
    fn classify(&self, pkt: &PacketView<'_>) -> Verdict {
        // Metadata is computed only for programs that read it; the others get a shared zero
        // block instead of a fresh one per packet.
        let r = if self.needs_meta {
            let meta = meta_of(pkt, self.needs_rxhash);
            self.engine.run(pkt.data, pkt.frame_len, &meta)
        } else {
            self.engine.run(pkt.data, pkt.frame_len, &Meta::ZERO)
        };
        self.mode.verdict(r)
    }
}

/// The metadata ancillary loads read for `pkt`. `rxhash` is the NIC's hash, else (when
/// `needs_rxhash`) the kernel's software flow hash, as `skb_get_hash` does.
#[inline]
fn meta_of(pkt: &PacketView<'_>, needs_rxhash: bool) -> Meta {
    meta_for(
        pkt.data,
        pkt.dev,
        pkt.ingress_mac,
        pkt.mark,
        pkt.rss_hash,
        needs_rxhash,
    )
}

/// The metadata ancillary loads read for a frame received on `dev` (whose MAC address is
/// `ingress_mac`) before any filter ran (mark 0): what a [`BurstCtx`] slot of a chain whose
/// [`BurstForm::meta`] is `Some(needs_rxhash)` holds.
#[inline]
pub fn ingress_meta(
    data: &[u8],
    dev: PortIndex,
    ingress_mac: [u8; 6],
    rss_hash: Option<u32>,
    needs_rxhash: bool,
) -> Meta {
    meta_for(data, dev, ingress_mac, 0, rss_hash, needs_rxhash)
}

/// [`meta_of`] from the parts of a view it reads.
#[inline]
fn meta_for(
    data: &[u8],
    dev: PortIndex,
    ingress_mac: [u8; 6],
    mark: u32,
    rss_hash: Option<u32>,
    needs_rxhash: bool,
) -> Meta {
    let rxhash = match rss_hash {
        None if needs_rxhash => Some(crate::flow::software_rxhash(
            data,
            crate::flow::rxhash_secret(),
        )),
        h => h,
    };
    Meta::of_frame(data, dev.0, ingress_mac, mark, rxhash)
}

/// Something that runs a chain of programs ([`ebpf::translate_chain`]) over a frame.
/// Implementations are immutable, shared by every lcore, and must not allocate, lock or panic
/// per packet.
pub trait ChainEngine: Send + Sync + fmt::Debug {
    /// Short name for logs ("rbpf-jit", ...).
    fn name(&self) -> &'static str;

    /// Runs the chain from member `start` on over `data` (as [`Engine::run`]); returns the
    /// chain's result: `(member << 32) | result` of the first member that decided, or
    /// `members << 32` (see [`ebpf::chain_result`]).
    fn run_from(&self, data: &[u8], wirelen: u32, meta: &Meta, start: u32) -> u64;

    /// Runs a burst chain ([`ebpf::translate_chain_burst`]) over `ctx`; returns its mask
    /// (bit `i` set: frame `i` needs the chain's answer from [`ChainEngine::run_from`]).
    /// `None` when this engine was not built from a burst chain.
    fn run_burst(&self, ctx: &mut ebpf::BurstCtx<'_>) -> Option<u64> {
        let _ = ctx;
        None
    }
}

impl ChainEngine for RbpfInterpreter {
    fn name(&self) -> &'static str {
        "rbpf-interpreter"
    }

    fn run_from(&self, data: &[u8], wirelen: u32, meta: &Meta, start: u32) -> u64 {
        match self.try_run_from(data, wirelen, meta, start) {
            Ok(r) => r,
            Err(e) => {
                debug_assert!(false, "translator bug: {e}");
                0
            }
        }
    }

    fn run_burst(&self, ctx: &mut ebpf::BurstCtx<'_>) -> Option<u64> {
        if !self.translated().is_burst() {
            return None;
        }
        match self.try_run_burst(ctx) {
            Ok(r) => Some(r),
            Err(e) => {
                debug_assert!(false, "translator bug: {e}");
                // Every frame takes the checked chain.
                Some(u64::MAX)
            }
        }
    }
}

/// The programs of consecutive filters on a hook, run as one chain ([`ebpf::translate_chain`]):
/// the [`ChainClassifier`] that the pipeline calls once for all of them instead of once per
/// filter. Each member gives exactly the verdict its own [`BpfClassifier`] would.
///
/// With a fast variant ([`ebpf::translate_chain_fast`]) frames run that one first, and only the
/// frames it refuses as short run the checked chain.
#[derive(Debug)]
pub struct BpfChain<E> {
    checked: E,
    fast: Option<E>,
    /// The burst variant ([`ebpf::translate_chain_burst`]), for
    /// [`ChainClassifier::decides_at_ingress_ctx`].
    burst: Option<E>,
    modes: Box<[Mode]>,
    needs_meta: bool,
    needs_rxhash: bool,
}

impl<E: ChainEngine> BpfChain<E> {
    /// A chain of `members` (program and mode, in filter order) run by `checked`, built from
    /// [`ebpf::translate_chain`] of exactly these members, and `fast`, built from
    /// [`ebpf::translate_chain_fast`] of them.
    pub fn new(members: &[(&Program, Mode)], checked: E, fast: Option<E>) -> BpfChain<E> {
        BpfChain {
            checked,
            fast,
            burst: None,
            modes: members.iter().map(|&(_, m)| m).collect(),
            needs_meta: members.iter().any(|(p, _)| p.uses_metadata()),
            needs_rxhash: members.iter().any(|(p, _)| p.uses(Ancillary::RxHash)),
        }
    }

    /// Adds the burst variant, built from [`ebpf::translate_chain_burst`] of the same members.
    pub fn with_burst(mut self, burst: Option<E>) -> BpfChain<E> {
        self.burst = burst;
        self
    }

    /// The engine's name.
    pub fn engine_name(&self) -> &'static str {
        self.checked.name()
    }

    #[inline]
    fn run_from(&self, data: &[u8], wirelen: u32, meta: &Meta, start: u32) -> u64 {
        if let Some(fast) = &self.fast {
            let r = fast.run_from(data, wirelen, meta, start);
            if r != ebpf::CHAIN_SHORT {
                return r;
            }
        }
        self.checked.run_from(data, wirelen, meta, start)
    }
}

impl<E: ChainEngine> ChainClassifier for BpfChain<E> {
    fn len(&self) -> usize {
        self.modes.len()
    }

    #[inline]
    fn classify_from(&self, pkt: &PacketView<'_>, first: usize) -> Option<(usize, Verdict)> {
        let start = u32::try_from(first).unwrap_or(u32::MAX);
        let r = if self.needs_meta {
            let meta = meta_of(pkt, self.needs_rxhash);
            self.run_from(pkt.data, pkt.frame_len, &meta, start)
        } else {
            self.run_from(pkt.data, pkt.frame_len, &Meta::ZERO, start)
        };
        let (at, r) = ebpf::chain_result(r, self.modes.len())?;
        Some((at, self.modes.get(at)?.verdict(r)))
    }

    #[inline]
    fn decides_at_ingress(&self, f: &IngressFrame<'_>) -> bool {
        // A view's mark is 0 before any filter ran; the programs read nothing else of it.
        let r = if self.needs_meta {
            let meta = meta_for(
                f.data,
                f.dev,
                f.ingress_mac,
                0,
                f.rss_hash,
                self.needs_rxhash,
            );
            self.run_from(f.data, f.frame_len, &meta, 0)
        } else {
            self.run_from(f.data, f.frame_len, &Meta::ZERO, 0)
        };
        ebpf::chain_result(r, self.modes.len()).is_some()
    }

    fn burst_form(&self) -> Option<BurstForm> {
        self.burst.as_ref()?;
        Some(BurstForm {
            meta: self.needs_meta.then_some(self.needs_rxhash),
            short: ebpf::FAST_CHAIN_LEN as usize,
        })
    }

    #[inline]
    fn decides_at_ingress_ctx(&self, ctx: &mut BurstCtx<'_>) -> u64 {
        // Without a burst engine (or should it refuse the context) every frame walks.
        self.burst
            .as_ref()
            .and_then(|b| b.run_burst(ctx))
            .unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::insn::op::*;
    use super::*;
    use crate::packet::VecPacket;
    use crate::pipeline::{Action, Filter, Forward, Generation, PortIndex, PortPipeline, VecSink};
    use crate::stats::{filter_totals, port_totals, StatsWriter};
    use crate::DropReason;

    /// A program returning `k` for every packet.
    fn ret(k: u32, mode: Mode) -> Box<BpfClassifier> {
        let p = Program::load(vec![Insn::new(RET | K, 0, 0, k)]).unwrap();
        let e = Box::new(Interpreter::new(&p));
        Box::new(BpfClassifier::new(&p, e, mode))
    }

    fn udp_frame() -> VecPacket {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x06]); // ARP: no IP validation needed
        VecPacket::new(f)
    }

    /// Three ports forwarding to port 1, with `filters` on port 0's ingress (validated), and a
    /// stats writer for it at time 5 ms.
    fn hook_generation(
        filters: Vec<Filter>,
    ) -> (
        Generation,
        StatsWriter,
        std::sync::Arc<crate::stats::LcoreStats>,
    ) {
        let mut ports: Vec<PortPipeline> = (0..3)
            .map(|i| PortPipeline {
                name: format!("p{i}"),
                forward: Forward::To(PortIndex(1)),
                ..Default::default()
            })
            .collect();
        ports[0].ingress = filters;
        let mut gen = Generation {
            ports,
            ..Default::default()
        };
        let n = gen.assign_filter_ids();
        gen.validate().unwrap();
        let (mut w, r) = StatsWriter::new(0, 3, n, gen.action_count());
        w.set_now_ms(5);
        (gen, w, r)
    }

    /// Runs one packet received on port 0 through `filters`; returns where it went, the drop
    /// reason if dropped, and the filter counters.
    fn one(filters: Vec<Filter>) -> (Vec<PortIndex>, Option<DropReason>, Vec<u64>) {
        let (gen, mut w, r) = hook_generation(filters);
        let n = gen.filter_count();
        let mut sink = VecSink::default();
        gen.process(udp_frame(), PortIndex(0), &mut w, &mut sink);
        let t = port_totals(std::slice::from_ref(&r), 3);
        let reason = DropReason::ALL
            .iter()
            .copied()
            .find(|d| t[0].drops[d.index()] > 0);
        let hits = filter_totals(&[r], n).iter().map(|f| f.packets).collect();
        (sink.sent.iter().map(|s| s.0).collect(), reason, hits)
    }

    const CID: Mode = Mode::Classid { classid: 0x10010 };
    const DA: Mode = Mode::DirectAction { classid: 0 };

    #[test]
    fn classid_mode_zero_is_no_match_anything_else_runs_the_actions() {
        let f = |k| Filter::new("f", ret(k, CID), vec![Action::redirect(PortIndex(2))]);
        assert_eq!(one(vec![f(0)]), (vec![PortIndex(1)], None, vec![0]));
        assert_eq!(one(vec![f(1)]), (vec![PortIndex(2)], None, vec![1]));
        assert_eq!(one(vec![f(u32::MAX)]), (vec![PortIndex(2)], None, vec![1]));
        // Actions that say continue move on to the next program.
        let cont = Filter::new("c", ret(1, CID), vec![Action::SetMark(3), Action::Continue]);
        let drop = Filter::new("d", ret(65535, CID), vec![Action::Drop]);
        assert_eq!(
            one(vec![cont, drop]),
            (vec![], Some(DropReason::ActionDrop), vec![1, 1])
        );
        // A match without actions stops classification: the forwarding entry applies.
        let bare = Filter::new("b", ret(7, CID), vec![]);
        let drop = Filter::new("d", ret(1, CID), vec![Action::Drop]);
        assert_eq!(
            one(vec![bare, drop]),
            (vec![PortIndex(1)], None, vec![1, 0])
        );
    }

    #[test]
    fn direct_action_verdicts_map_as_cls_bpf_exec_opcode() {
        let da = |k: i32| Filter::new("f", ret(k as u32, DA), vec![]);
        let drop_next = || Filter::new("n", ret(1, CID), vec![Action::Drop]);
        assert_eq!(
            one(vec![da(0), drop_next()]),
            (vec![PortIndex(1)], None, vec![1, 0])
        );
        assert_eq!(
            one(vec![da(2)]),
            (vec![], Some(DropReason::ActionDrop), vec![1])
        );
        assert_eq!(
            one(vec![da(4)]),
            (vec![], Some(DropReason::Stolen), vec![1])
        );
        assert_eq!(
            one(vec![da(8)]),
            (vec![], Some(DropReason::Stolen), vec![1])
        );
        assert_eq!(
            one(vec![da(7)]),
            (vec![], Some(DropReason::RedirectNoTarget), vec![1])
        );
        let mut r = da(7);
        r.redirect = Some(PortIndex(2));
        assert_eq!(one(vec![r]), (vec![PortIndex(2)], None, vec![1]));
        // unspec and every unlisted value (pipe, reclassify, queued, repeat, 99) continue.
        for k in [-1, 1, 3, 5, 6, 99] {
            assert_eq!(
                one(vec![da(k), drop_next()]),
                (vec![], Some(DropReason::ActionDrop), vec![0, 1]),
                "verdict {k}"
            );
        }
    }

    #[test]
    fn rxhash_is_the_nic_hash_else_the_software_flow_hash() {
        let p = Program::load(vec![
            Insn::new(
                LD | W | ABS,
                0,
                0,
                insn::SKF_AD_OFF + Ancillary::RxHash.offset(),
            ),
            Insn::new(RET | A, 0, 0, 0),
        ])
        .unwrap();
        let c = BpfClassifier::new(
            &p,
            Box::new(Interpreter::new(&p)),
            Mode::Classid { classid: 0 },
        );
        let frame = crate::flow::gen::ipv4_frame([10, 0, 0, 1], [10, 0, 0, 2], 17, 1000, 53);
        let parsed = crate::wire::parse(&frame, frame.len() as u32, false).unwrap();
        let mut view = PacketView {
            data: &frame,
            frame_len: frame.len() as u32,
            parsed: &parsed,
            dev: PortIndex(0),
            iif: PortIndex(0),
            ingress_mac: [0; 6],
            rss_hash: Some(0x1234),
            mark: 0,
            priority: 0,
            classid: 0,
            flowlabel: 0,
        };
        assert_eq!(c.classify(&view), Verdict::Match(0x1234));
        view.rss_hash = None;
        let sw = crate::flow::software_rxhash(&frame, crate::flow::rxhash_secret());
        assert_ne!(sw, 0);
        assert_eq!(c.classify(&view), Verdict::Match(sw));
    }

    /// Runs `frames` received on port 0 through a generation whose port 0 ingress hook is
    /// `filters`; returns what was sent (port and bytes, in order), the port, filter and action
    /// totals.
    #[allow(clippy::type_complexity)]
    fn run_hook(
        filters: Vec<Filter>,
        frames: &[Vec<u8>],
    ) -> (
        Vec<(PortIndex, Vec<u8>)>,
        Vec<crate::stats::PortTotals>,
        Vec<crate::stats::FilterTotals>,
        Vec<crate::stats::ActionTotals>,
    ) {
        let (gen, mut w, r) = hook_generation(filters);
        let n = gen.filter_count();
        let mut sink = VecSink::default();
        for (k, f) in frames.iter().enumerate() {
            let mut p = VecPacket::new(f.clone());
            p.rss = (k % 3 == 0).then_some((k as u32).wrapping_mul(0x9e37_79b9));
            gen.process(p, PortIndex(0), &mut w, &mut sink);
        }
        let sent = sink.sent.into_iter().map(|(p, k)| (p, k.bytes)).collect();
        let lc = std::slice::from_ref(&r);
        (
            sent,
            port_totals(lc, 3),
            filter_totals(lc, n),
            crate::stats::action_totals(lc, gen.action_count()),
        )
    }

    /// A hook that is one chain of random programs (both modes, metadata loads, the software
    /// rxhash) takes the filtered burst path's shortcut (`decides_at_ingress`) for the frames
    /// no member decides on: every frame is forwarded, dropped and counted exactly as
    /// `Generation::process` does, and `decides_at_ingress` agrees with `classify_from`.
    #[test]
    fn a_hook_of_one_chain_treats_bursts_exactly_as_process_does() {
        use crate::cbpf::gen::{random_chain_member, GenOptions, Rng};
        use crate::pipeline::{ChainClassifier, Fused, IngressFrame, Sink};
        use std::sync::Arc;
        let (mut passed, mut decided, mut short_undecided) = (0, 0, 0);
        for seed in 0..120u64 {
            let mut r = Rng::new(seed);
            let n = 1 + (seed as usize % 8);
            let members: Vec<(Program, Mode)> = (0..n as u64)
                .map(|k| {
                    let (insns, mode) = random_chain_member(
                        seed * 16 + k,
                        1 + r.below(30) as usize,
                        GenOptions::default(),
                    );
                    (Program::load(insns).unwrap(), mode)
                })
                .collect();
            let m: Vec<(&Program, Mode)> = members.iter().map(|(p, m)| (p, *m)).collect();
            let fast = RbpfInterpreter::chain_fast(&m).unwrap();
            let burst = RbpfInterpreter::chain_burst(&m).unwrap();
            let chain = Arc::new(
                BpfChain::new(&m, RbpfInterpreter::chain(&m).unwrap(), fast)
                    .with_burst((seed % 4 != 0).then_some(burst)),
            );
            let shared: Arc<dyn ChainClassifier> = chain.clone();
            let filters: Vec<Filter> = members
                .iter()
                .enumerate()
                .map(|(index, (p, mode))| {
                    let c = BpfClassifier::new(p, Box::new(Interpreter::new(p)), *mode);
                    let actions = match mode {
                        Mode::Classid { .. } => vec![Action::Drop],
                        Mode::DirectAction { .. } => vec![],
                    };
                    let mut f = Filter::new(format!("f{index}"), Box::new(c), actions);
                    f.fused = Some(Fused {
                        chain: shared.clone(),
                        index,
                    });
                    f
                })
                .collect();
            let (gen, _, _) = hook_generation(filters);
            let t = gen.filtered_target(PortIndex(0)).unwrap();
            assert!(t.whole_frames());
            // The worker's whole-frame path: one question for the whole burst; a frame with
            // its bit clear is validated and leaves unchanged, the others walk.
            let frames: Vec<(Vec<u8>, Option<u32>)> = (0..40u64)
                .map(|k| {
                    let mut b = crate::flow::gen::random_flow_frame(seed * 64 + k);
                    if k % 11 == 5 {
                        b.truncate(k as usize % 50);
                    }
                    (
                        b,
                        (k % 3 == 0).then_some((k as u32).wrapping_mul(0x9e37_79b9)),
                    )
                })
                .collect();
            let packet = |(b, rss): &(Vec<u8>, Option<u32>)| {
                let mut p = VecPacket::new(b.clone());
                p.rss = *rss;
                p
            };
            let all: Vec<VecPacket> = frames.iter().map(packet).collect();
            let sorted = t.sort(&all);
            let mut bits = std::collections::HashMap::new();
            for (i, p) in all.iter().enumerate() {
                let frame = IngressFrame::of(p, PortIndex(0), [0; 6]);
                let (walk, invalid) = (sorted.walk >> i & 1 != 0, sorted.invalid >> i & 1 != 0);
                let valid = crate::pipeline::validate(p, crate::pipeline::Validation::Full);
                assert_eq!(
                    invalid,
                    valid.is_err(),
                    "seed {seed}, frame {i} of the burst"
                );
                // Bits past 40 frames are clear; a valid frame's walk bit is the chain's answer
                // (an invalid frame's means nothing: it is dropped first).
                if !invalid {
                    assert_eq!(
                        walk,
                        chain.decides_at_ingress(&frame),
                        "seed {seed}, frame {i} of the burst"
                    );
                    // Short for the burst body: the chain marks it, `sort` asks again.
                    if !walk && p.bytes.len() < ebpf::FAST_CHAIN_LEN as usize {
                        short_undecided += 1;
                    }
                }
                bits.insert(p.bytes.clone(), (walk, invalid));
            }
            assert_eq!(sorted.walk >> all.len(), 0);
            assert_eq!(sorted.invalid >> all.len(), 0);
            assert_eq!(
                sorted.bytes,
                all.iter()
                    .map(|p| u64::from(crate::Packet::frame_len(p)))
                    .sum::<u64>()
            );
            for (k, fr) in frames.iter().enumerate() {
                let bytes = fr.0.clone();
                let pkt = || packet(fr);
                let run = |how: u8| {
                    let (mut w, r) = StatsWriter::new(0, 3, gen.filter_count(), gen.action_count());
                    let mut sink = VecSink::default();
                    let kept = match (how, bits.get(&bytes)) {
                        (0, _) => {
                            gen.process(pkt(), PortIndex(0), &mut w, &mut sink);
                            None
                        }
                        (1, _) => gen.classify_in_burst(pkt(), PortIndex(0), &t, &mut w, &mut sink),
                        (_, Some((_, true))) => {
                            match crate::pipeline::validate(
                                &pkt(),
                                crate::pipeline::Validation::Full,
                            ) {
                                Ok(()) => panic!("an invalid bit on a valid frame"),
                                Err(reason) => {
                                    w.drop(PortIndex(0), reason, 1);
                                    None
                                }
                            }
                        }
                        (_, Some((false, false))) => Some(pkt()),
                        (_, _) => gen.walk_in_burst(pkt(), PortIndex(0), &t, &mut w, &mut sink),
                    };
                    if let Some(p) = kept {
                        sink.send(PortIndex(1), p, &mut w);
                    }
                    let lc = std::slice::from_ref(&r);
                    let sent: Vec<_> = sink.sent.into_iter().map(|(p, k)| (p, k.bytes)).collect();
                    let drops: Vec<_> = port_totals(lc, 3).into_iter().map(|t| t.drops).collect();
                    (sent, drops, filter_totals(lc, gen.filter_count()))
                };
                let want = run(0);
                assert_eq!(run(1), want, "seed {seed}, frame {k}");
                assert_eq!(run(2), want, "seed {seed}, frame {k}, whole burst");
                let p = pkt();
                let rss = p.rss;
                let frame = IngressFrame::of(&p, PortIndex(0), [0; 6]);
                let decides = chain.decides_at_ingress(&frame);
                if let Ok(parsed) = crate::wire::parse(&bytes, bytes.len() as u32, false) {
                    let view = PacketView {
                        data: &bytes,
                        frame_len: bytes.len() as u32,
                        parsed: &parsed,
                        dev: PortIndex(0),
                        iif: PortIndex(0),
                        ingress_mac: [0; 6],
                        rss_hash: rss,
                        mark: 0,
                        priority: 0,
                        classid: 0,
                        flowlabel: 0,
                    };
                    assert_eq!(
                        decides,
                        chain.classify_from(&view, 0).is_some(),
                        "seed {seed}, frame {k}"
                    );
                }
                if decides {
                    decided += 1;
                } else {
                    passed += 1;
                }
            }
        }
        assert!(
            passed > 200 && decided > 200 && short_undecided > 10,
            "{passed} passed, {decided} decided, {short_undecided} short valid frames undecided"
        );
    }

    /// Hooks of random programs (both modes, metadata loads, results that mostly do not
    /// decide) with actions that continue, set the mark later programs read, mirror, redirect,
    /// drop and pass: fused into chains (split at random points, some filters left alone) they
    /// forward, drop and count exactly as the same filters run one by one.
    #[test]
    fn fused_chains_decide_and_count_exactly_as_separate_filters() {
        use crate::cbpf::gen::{random_chain_member, GenOptions, Rng};
        use crate::pipeline::{ChainClassifier, Fused};
        use std::sync::Arc;
        let lists: [&[Action]; 8] = [
            &[],
            &[Action::Continue],
            &[Action::SetMark(0x10001), Action::Continue],
            &[Action::Drop],
            &[Action::Pass],
            &[Action::redirect(PortIndex(2))],
            &[Action::SetClassid(9), Action::SetMark(7), Action::Continue],
            &[Action::mirror(PortIndex(2)), Action::Continue],
        ];
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..150u64 {
            let mut r = Rng::new(seed);
            let n = 2 + (seed as usize % 7);
            let members: Vec<(Program, Mode, Vec<Action>, bool)> = (0..n as u64)
                .map(|k| {
                    let (insns, mode) = random_chain_member(
                        seed * 16 + k,
                        1 + r.below(30) as usize,
                        GenOptions::default(),
                    );
                    let actions = match mode {
                        Mode::Classid { .. } => r.pick(&lists).to_vec(),
                        Mode::DirectAction { .. } => Vec::new(),
                    };
                    (Program::load(insns).unwrap(), mode, actions, r.chance(1, 2))
                })
                .collect();
            let build = |fused: bool| {
                let mut filters: Vec<Filter> = members
                    .iter()
                    .enumerate()
                    .map(|(k, (p, mode, actions, redirect))| {
                        let c = BpfClassifier::new(p, Box::new(Interpreter::new(p)), *mode);
                        let mut f = Filter::new(format!("f{k}"), Box::new(c), actions.clone());
                        f.redirect = redirect.then_some(PortIndex(2));
                        f
                    })
                    .collect();
                if fused {
                    // Consecutive chains of random lengths; one in five filters stays alone.
                    let mut r = Rng::new(seed ^ 0xf05e);
                    let mut at = 0;
                    while at < n {
                        if r.chance(1, 5) {
                            at += 1;
                            continue;
                        }
                        let len = 1 + r.below((n - at) as u64) as usize;
                        let m: Vec<(&Program, Mode)> = members[at..at + len]
                            .iter()
                            .map(|(p, m, _, _)| (p, *m))
                            .collect();
                        let fast = RbpfInterpreter::chain_fast(&m).unwrap();
                        let chain: Arc<dyn ChainClassifier> =
                            Arc::new(BpfChain::new(&m, RbpfInterpreter::chain(&m).unwrap(), fast));
                        for (index, f) in filters[at..at + len].iter_mut().enumerate() {
                            f.fused = Some(Fused {
                                chain: chain.clone(),
                                index,
                            });
                        }
                        at += len;
                    }
                }
                filters
            };
            let frames: Vec<Vec<u8>> = (0..24)
                .map(|k| crate::flow::gen::random_flow_frame(seed * 32 + k))
                .collect();
            let want = run_hook(build(false), &frames);
            let got = run_hook(build(true), &frames);
            assert_eq!(got, want, "seed {seed}");
            outcomes.extend(
                want.1[0]
                    .drops
                    .iter()
                    .enumerate()
                    .filter(|(_, &d)| d > 0)
                    .map(|(i, _)| i),
            );
            outcomes.extend(want.0.iter().map(|(p, _)| 100 + usize::from(p.0)));
        }
        // Drops (action, stolen, redirect without target), forwarding and redirects all occur.
        for o in [
            DropReason::ActionDrop.index(),
            DropReason::Stolen.index(),
            DropReason::RedirectNoTarget.index(),
            101,
            102,
        ] {
            assert!(
                outcomes.contains(&o),
                "outcome {o} never seen: {outcomes:?}"
            );
        }
    }
}
