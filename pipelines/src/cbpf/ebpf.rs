//! Translation of loaded classic-BPF programs to eBPF for [rbpf], in the spirit of the kernel's
//! `bpf_convert_filter`, with one difference that matters: the generated code checks its own
//! packet bounds and converts byte order itself. It never uses eBPF `LD_ABS`/`LD_IND` (rbpf's
//! JIT does not bounds-check them, and they load in host byte order).
//!
//! # Execution model
//!
//! The program runs in rbpf's `EbpfVmMbuff`: the metadata buffer (`mbuff`, pointed to by `r1` at
//! entry) is a [`JitCtx`] describing the frame, and the memory area (`mem`) is the frame itself
//! (the interpreter needs it there to allow the loads; the JIT does not use it).
//!
//! Register use (all values the cBPF machine sees are 32-bit and kept zero-extended in their
//! 64-bit registers; every write to `A` or `X` is a 32-bit ALU operation, `mov32`, a zero-extending
//! load or `be16`/`be32`):
//!
//! | eBPF | x86-64 (rbpf JIT) | role |
//! |---|---|---|
//! | `r0` | `rax` | `A`, and the return value |
//! | `r1` | `rdi` | pointer to the [`JitCtx`] |
//! | `r2` | `rsi` | pointer to the frame (`JitCtx::data`), loaded at entry if needed |
//! | `r3` | `rdx` | bytes of the frame in `data` (`JitCtx::buflen`), loaded at entry if needed |
//! | `r4`, `r5` | `r9`, `r8` | scratch for address and bounds computations |
//! | `r6` | `rbx` | `X` |
//! | `r10` | `rbp` | frame pointer: scratch memory `M[0..16]` at `r10 - 64 .. r10` |
//!
//! Invariant the JIT relies on: rbpf's x86 JIT compiles `mov32 dst, src` as a 64-bit move, so a
//! register copy only stays a 32-bit value because every source already is one. (A chain's
//! result tag, `r0 |= member << 32`, is followed by `exit`.) `A` and `X` start at 0 only where
//! the program may read them before writing them; no other path looks at their entry value.
//!
//! # Chains
//!
//! [`translate_chain`] translates the programs of consecutive filters on a hook into one
//! program: the members' bodies one after the other, each `ret` either ending the chain with
//! `(member << 32) | result` (a result that decides in the member's [`Mode`]) or going on at the
//! next member. `JitCtx::start` picks the member to start at (a dispatch of forward jumps), so
//! that the pipeline can resume after a filter whose actions continue. One rbpf call, one
//! context and one prologue serve the whole hook. [`translate_chain_fast`] is the same chain
//! for frames of at least [`FAST_CHAIN_LEN`] bytes: one check of `buflen` at entry replaces
//! the checks of the absolute loads within that length (Ethernet, IP and port fields), and a
//! shorter frame gets [`CHAIN_SHORT`], for the checked chain to run.
//!
//! # Semantics (as [`Interpreter`](super::Interpreter))
//!
//! - Every packet load computes its end offset in 64 bits (no wrap), compares it with
//!   `buflen` and on failure jumps to a shared `return 0` block; then it loads through
//!   `data + offset` and converts with `be16`/`be32`. (In a fast chain, absolute loads that
//!   end within the length checked at entry rely on that check.)
//! - `div`/`mod` by `X == 0` returns 0; a shift by `X >= 32` gives `A = 0`.
//! - Conditional jumps use the `JMP32` class: the 32-bit compare of `A` with `k` is exact for
//!   every `k`, where a 64-bit compare with an immediate would sign-extend `k > i32::MAX` in the
//!   JIT (and zero-extend it in rbpf's interpreter).
//! - Ancillary loads read [`Meta`] fields from the context; `hatype` is the constant 1.
//!
//! The translation's length is bounded by [`MAX_EBPF_INSNS`]: eBPF jump offsets are `i16`, and
//! rbpf's interpreter computes jump targets in `i16`. A program that does not fit gets a
//! [`TranslateError`]; the caller then keeps the interpreter.
use super::check::Program;
use super::insn::{op, Ancillary, Insn, SKF_AD_OFF};
use super::interp::{Meta, HATYPE_ETHER};
use super::{tc_act, Engine, Mode};
use rbpf::ebpf as e;
use std::fmt;
use std::mem::{offset_of, size_of};

/// The context the translated program receives as rbpf's `mbuff`. `#[repr(C)]` with explicit
/// padding, so every byte is initialized and the layout is the documented one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct JitCtx {
    /// Address of the first byte of the frame.
    data: u64,
    /// Number of bytes readable at `data`.
    buflen: u64,
    /// Length of the frame on the wire (`ld #len`).
    wirelen: u32,
    /// For a chain ([`translate_chain`]): the member to start at. 0 for single programs (which
    /// do not read it).
    start: u32,
    /// Metadata for ancillary loads (zero unless the program uses metadata).
    meta: Meta,
}

/// Offset of [`JitCtx`]'s frame address (`u64`).
pub const CTX_DATA: i16 = 0;
/// Offset of [`JitCtx`]'s readable length (`u64`).
pub const CTX_BUFLEN: i16 = 8;
/// Offset of [`JitCtx`]'s wire length (`u32`).
pub const CTX_WIRELEN: i16 = 16;
/// Offset of [`JitCtx`]'s chain start member (`u32`).
pub const CTX_START: i16 = 20;
/// Offset of [`JitCtx`]'s [`Meta`] (eight `u32` fields in declaration order).
pub const CTX_META: i16 = 24;

const _: () = {
    assert!(offset_of!(JitCtx, data) == CTX_DATA as usize);
    assert!(offset_of!(JitCtx, buflen) == CTX_BUFLEN as usize);
    assert!(offset_of!(JitCtx, wirelen) == CTX_WIRELEN as usize);
    assert!(offset_of!(JitCtx, start) == CTX_START as usize);
    assert!(offset_of!(JitCtx, meta) == CTX_META as usize);
    assert!(size_of::<Meta>() == 32);
    assert!(size_of::<JitCtx>() == JitCtx::SIZE);
};

impl JitCtx {
    /// Size in bytes.
    pub const SIZE: usize = 56;

    /// The context for `data` (metadata zero; see [`JitCtx::set_meta`]). `buflen` is
    /// `data.len()`, so the generated bounds checks describe exactly this slice.
    #[inline]
    pub fn new(data: &[u8], wirelen: u32) -> JitCtx {
        JitCtx {
            data: data.as_ptr() as u64,
            buflen: data.len() as u64,
            wirelen,
            start: 0,
            meta: Meta::ZERO,
        }
    }

    /// Sets the chain member to start at (see [`translate_chain`]).
    #[inline]
    pub fn set_start(&mut self, start: u32) {
        self.start = start;
    }

    /// Sets the metadata ancillary loads read.
    #[inline]
    pub fn set_meta(&mut self, meta: &Meta) {
        self.meta = *meta;
    }

    /// The context as bytes (native byte order), for rbpf's interpreter.
    pub fn to_bytes(&self) -> [u8; JitCtx::SIZE] {
        let mut b = [0u8; JitCtx::SIZE];
        let mut put = |at: i16, v: &[u8]| {
            let at = at as usize;
            b[at..at + v.len()].copy_from_slice(v);
        };
        put(CTX_DATA, &self.data.to_ne_bytes());
        put(CTX_BUFLEN, &self.buflen.to_ne_bytes());
        put(CTX_WIRELEN, &self.wirelen.to_ne_bytes());
        put(CTX_START, &self.start.to_ne_bytes());
        let m = &self.meta;
        let fields = [
            m.protocol,
            m.pkttype,
            m.ifindex,
            m.mark,
            m.rxhash,
            m.vlan_tag,
            m.vlan_tag_present,
            m.vlan_tpid,
        ];
        for (i, f) in fields.iter().enumerate() {
            put(CTX_META + 4 * i as i16, &f.to_ne_bytes());
        }
        b
    }
}

/// Frames a burst chain ([`translate_chain_burst`]) runs over in one call.
pub const BURST_MAX: usize = 32;

/// One frame of a [`BurstCtx`]: its [`JitCtx`], padded to 64 bytes.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct BurstSlot {
    ctx: JitCtx,
    _pad: u64,
}

/// The context a burst chain ([`translate_chain_burst`]) receives as rbpf's `mbuff`: the
/// number of frames (at offset 0) and, from offset [`BURST_SLOTS`], one 64-byte slot per frame
/// whose first [`JitCtx::SIZE`] bytes are that frame's [`JitCtx`]. `#[repr(C)]` with explicit
/// padding: every byte is initialized. The frames are borrowed for `'a`, so they outlive every
/// run over the context.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct BurstCtx<'a> {
    n: u64,
    _pad: [u64; 7],
    slots: [BurstSlot; BURST_MAX],
    frames: std::marker::PhantomData<&'a [u8]>,
}

/// Offset of [`BurstCtx`]'s first slot.
pub const BURST_SLOTS: i32 = 64;
/// Size of a [`BurstCtx`] slot.
pub const BURST_SLOT: i32 = 64;

impl BurstSlot {
    /// A fresh slot's frame: as [`JitCtx::new`] (with `meta` when the chain reads metadata),
    /// without writing what a fresh context holds already (start and metadata 0; a slot is
    /// only ever set once).
    #[inline(always)]
    fn set(&mut self, data: &[u8], wirelen: u32, meta: Option<&Meta>) {
        self.ctx.data = data.as_ptr() as u64;
        self.ctx.buflen = data.len() as u64;
        self.ctx.wirelen = wirelen;
        if let Some(m) = meta {
            self.ctx.set_meta(m);
        }
    }
}

const _: () = {
    assert!(size_of::<BurstSlot>() == BURST_SLOT as usize);
    assert!(offset_of!(BurstCtx<'static>, n) == 0);
    assert!(offset_of!(BurstCtx<'static>, slots) == BURST_SLOTS as usize);
    assert!(size_of::<BurstCtx<'static>>() == BurstCtx::SIZE);
};

impl Default for BurstCtx<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> BurstCtx<'a> {
    /// Size in bytes: the header and [`BURST_MAX`] slots.
    pub const SIZE: usize = BURST_SLOTS as usize + BURST_MAX * BURST_SLOT as usize;

    /// An empty context (every byte zero).
    #[inline]
    pub fn new() -> BurstCtx<'a> {
        let empty = BurstSlot {
            ctx: JitCtx::new(&[], 0),
            _pad: 0,
        };
        BurstCtx {
            n: 0,
            _pad: [0; 7],
            slots: [empty; BURST_MAX],
            frames: std::marker::PhantomData,
        }
    }

    /// Number of frames.
    #[inline]
    pub fn len(&self) -> usize {
        self.n as usize
    }

    /// Whether there is no frame.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Appends a frame (as [`JitCtx::new`], with `meta` when the chain reads metadata);
    /// `false` when the context already holds [`BURST_MAX`] frames.
    #[inline]
    pub fn push(&mut self, data: &'a [u8], wirelen: u32, meta: Option<&Meta>) -> bool {
        let Some(slot) = self.slots.get_mut(self.n as usize) else {
            return false;
        };
        slot.set(data, wirelen, meta);
        self.n += 1;
        true
    }

    /// Fills an empty context with `frames` (each as [`BurstCtx::push`]: its bytes, wire
    /// length and metadata when the chain reads it), taking at most [`BURST_MAX`] of them.
    #[inline(always)]
    pub fn fill(&mut self, frames: impl Iterator<Item = (&'a [u8], u32, Option<Meta>)>) {
        debug_assert_eq!(self.n, 0, "fill of a context that holds frames");
        let mut n = 0u64;
        for (slot, (data, wirelen, meta)) in self.slots.iter_mut().zip(frames) {
            slot.set(data, wirelen, meta.as_ref());
            n += 1;
        }
        self.n = n;
    }

    /// The context as bytes (native byte order), for rbpf's interpreter.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; BurstCtx::SIZE];
        b[..8].copy_from_slice(&self.n.to_ne_bytes());
        for (i, s) in self.slots.iter().enumerate() {
            let at = BURST_SLOTS as usize + i * BURST_SLOT as usize;
            b[at..at + JitCtx::SIZE].copy_from_slice(&s.ctx.to_bytes());
        }
        b
    }

    /// The address range of frame `i`'s bytes (for rbpf's interpreter's allowed memory).
    pub fn frame_range(&self, i: usize) -> Option<std::ops::Range<u64>> {
        let c = &self.slots.get(i)?.ctx;
        Some(c.data..c.data + c.buflen)
    }
}

/// Offset inside [`Meta`] of the field ancillary load `a` reads (`None`: not a field).
fn meta_offset(a: Ancillary) -> Option<i16> {
    let off = match a {
        Ancillary::Protocol => offset_of!(Meta, protocol),
        Ancillary::PktType => offset_of!(Meta, pkttype),
        Ancillary::IfIndex => offset_of!(Meta, ifindex),
        Ancillary::Mark => offset_of!(Meta, mark),
        Ancillary::RxHash => offset_of!(Meta, rxhash),
        Ancillary::VlanTag => offset_of!(Meta, vlan_tag),
        Ancillary::VlanTagPresent => offset_of!(Meta, vlan_tag_present),
        Ancillary::VlanTpid => offset_of!(Meta, vlan_tpid),
        Ancillary::HaType | Ancillary::AluXorX => return None,
    };
    Some(off as i16)
}

/// Longest translation (eBPF instruction slots, `lddw` counting two): every jump offset then
/// fits eBPF's `i16`, and rbpf's interpreter (which adds offsets in `i16`) stays correct.
pub const MAX_EBPF_INSNS: usize = i16::MAX as usize;

/// Why a program was not translated. The caller keeps the interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranslateError {
    /// The translation needs more eBPF instructions than [`MAX_EBPF_INSNS`].
    TooLong {
        /// eBPF instructions the translation needs.
        insns: usize,
    },
    /// rbpf's verifier rejected the translation (a translator bug).
    Rejected(String),
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranslateError::TooLong { insns } => write!(
                f,
                "the eBPF translation needs {insns} instructions, at most {MAX_EBPF_INSNS} fit eBPF's 16-bit jump offsets"
            ),
            TranslateError::Rejected(e) => write!(f, "rbpf rejected the translation: {e}"),
        }
    }
}

impl std::error::Error for TranslateError {}

/// A translated program: eBPF bytecode only [`translate`] can produce (the fields are private
/// and there is no other constructor), so code that runs it without checks (the JIT in
/// `pmd-glue`) can rely on it containing nothing but the translator's bounds-checked code.
#[derive(Clone, PartialEq, Eq)]
pub struct Translated {
    code: Box<[u8]>,
    ancillary: u32,
    uses_metadata: bool,
    /// Members of a chain ([`translate_chain`]); 0 for a single program.
    chain: u32,
    /// A burst chain ([`translate_chain_burst`]): its context is a [`BurstCtx`].
    burst: bool,
}

impl Translated {
    /// The eBPF bytecode (8 bytes per instruction slot).
    pub fn code(&self) -> &[u8] {
        &self.code
    }

    /// Number of eBPF instruction slots.
    pub fn len(&self) -> usize {
        self.code.len() / e::INSN_SIZE
    }

    /// Always false: a translation ends with at least one `exit`.
    pub fn is_empty(&self) -> bool {
        self.code.is_empty()
    }

    /// Whether the program reads [`Meta`] (so the context needs it filled in).
    pub fn uses_metadata(&self) -> bool {
        self.uses_metadata
    }

    /// Whether the program uses ancillary load `a`.
    pub fn uses(&self, a: Ancillary) -> bool {
        self.ancillary & (1 << (a as u32)) != 0
    }

    /// For a chain ([`translate_chain`]): its number of members; `None` for a single program.
    pub fn chain_len(&self) -> Option<usize> {
        (self.chain != 0).then_some(self.chain as usize)
    }

    /// Whether this is a burst chain ([`translate_chain_burst`]), whose context is a
    /// [`BurstCtx`] rather than a [`JitCtx`].
    pub fn is_burst(&self) -> bool {
        self.burst
    }

    /// Takes the bytecode out.
    pub fn into_code(self) -> Box<[u8]> {
        self.code
    }
}

impl fmt::Debug for Translated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Translated")
            .field("insns", &self.len())
            .field("uses_metadata", &self.uses_metadata)
            .field("chain", &self.chain)
            .field("burst", &self.burst)
            .finish()
    }
}

// Registers.
const RA: u8 = 0;
const RCTX: u8 = 1;
const RDATA: u8 = 2;
const RLEN: u8 = 3;
const RT: u8 = 4;
const RX: u8 = 6;
const RFP: u8 = 10;

/// A jump target: an index into [`Emitter::labels`], bound to an instruction later.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Label(usize);

struct Emitter {
    out: Vec<e::Insn>,
    /// Where each label is bound (an index into `out`).
    labels: Vec<Option<usize>>,
    /// (index of the jump in `out`, target).
    fixups: Vec<(usize, Label)>,
    /// Where a load past the end of the frame (or a division by `X == 0`) of the program being
    /// emitted goes: "the program returns 0".
    zero: Label,
    /// Absolute loads ending at or below this offset need no check of their own: the code
    /// checked `buflen` against it once at entry (a fast chain; 0 otherwise).
    checked_end: u64,
    /// In a burst chain: where a frame's verdict goes instead of `exit`.
    burst: Option<BurstExits>,
    /// `RETH` holds `ldh [12]` (the EtherType), loaded once after the entry check of a fast or
    /// burst chain whose members load it more than once.
    ethertype: bool,
}

/// The two ends of one frame's run in a burst chain ([`translate_chain_burst`]), both bound
/// before the members (the only backward jumps a translation has).
#[derive(Clone, Copy)]
struct BurstExits {
    /// Some member decided (or the frame is too short for the fast body): mark the frame.
    decided: Label,
    /// No member decided: on to the next frame.
    undecided: Label,
}

fn ins(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> e::Insn {
    e::Insn {
        opc,
        dst,
        src,
        off,
        imm,
    }
}

impl Emitter {
    fn new(capacity: usize) -> Emitter {
        Emitter {
            out: Vec::with_capacity(capacity),
            labels: vec![None],
            fixups: Vec::new(),
            zero: Label(0),
            checked_end: 0,
            burst: None,
            ethertype: false,
        }
    }

    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `l` to the next instruction emitted.
    fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.out.len());
    }

    /// Whether some jump goes to `l`.
    fn used(&self, l: Label) -> bool {
        self.fixups.iter().any(|&(_, t)| t == l)
    }

    fn put(&mut self, opc: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.out.push(ins(opc, dst, src, off, imm));
    }

    fn jump(&mut self, opc: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.fixups.push((self.out.len(), to));
        self.put(opc, dst, src, 0, imm);
    }

    /// Resolves the jumps into offsets: all forward, except those to a burst chain's
    /// [`BurstExits`] (bound before every jump to them).
    fn finish(mut self) -> Result<Vec<e::Insn>, TranslateError> {
        let len = self.out.len();
        if len > MAX_EBPF_INSNS {
            return Err(TranslateError::TooLong { insns: len });
        }
        let back = |l: Label| {
            self.burst
                .is_some_and(|b| l == b.decided || l == b.undecided)
        };
        let ok = |at: usize, to: Label| {
            self.labels[to.0].filter(|&t| t > at || (back(to) && t + 1 < at))
        };
        // The label each unconditional jump goes to, by its index.
        let mut ja = vec![None; len];
        for &(at, to) in &self.fixups {
            if self.out[at].opc == e::JA {
                ja[at] = Some(to);
            }
        }
        for &(at, to) in &self.fixups {
            let mut target = ok(at, to)
                .ok_or_else(|| TranslateError::Rejected(format!("jump at {at}: bad target")))?;
            // Jump threading: a jump to an unconditional jump goes straight to where that one
            // goes (members' `ret #0` to the next member, which is often the next slot), as
            // long as the jump stays allowed. Bounded: every step moves forward, or lands on a
            // burst exit, whose own jumps go forward.
            for _ in 0..8 {
                match ja[target].and_then(|next| ok(at, next)) {
                    Some(t) if t != target => target = t,
                    _ => break,
                }
            }
            // Inside a program of at most MAX_EBPF_INSNS (< i16::MAX) slots: always fits.
            self.out[at].off = i16::try_from(target as isize - (at as isize + 1))
                .map_err(|_| TranslateError::TooLong { insns: len })?;
        }
        Ok(self.out)
    }

    /// `dst = v` for any 64-bit constant (`mov32` zero-extends; `lddw` above `u32::MAX`).
    fn const64(&mut self, dst: u8, v: u64) {
        match u32::try_from(v) {
            Ok(v) => self.put(e::MOV32_IMM, dst, 0, 0, v as i32),
            Err(_) => {
                self.put(e::LD_DW_IMM, dst, 0, 0, v as u32 as i32);
                self.put(0, 0, 0, 0, (v >> 32) as u32 as i32);
            }
        }
    }

    /// Jumps to [`Emitter::zero`] unless `end <= buflen` (a constant end offset).
    fn check_end(&mut self, end: u64) {
        if end <= self.checked_end {
            // Dominated by the entry check `checked_end <= buflen`.
        } else if end <= i32::MAX as u64 {
            // A non-negative immediate reads the same in rbpf's interpreter (zero-extended)
            // and JIT (sign-extended).
            self.jump(e::JLT_IMM, RLEN, 0, end as i32, self.zero);
        } else {
            self.const64(RT, end);
            self.jump(e::JGT_REG, RT, RLEN, 0, self.zero);
        }
    }

    /// `dst = frame[k .. k + n]` (big-endian) or `return 0`.
    fn load_abs(&mut self, dst: u8, k: u32, n: u8) {
        self.load_abs_wire(dst, k, n);
        self.swap(dst, n);
    }

    /// [`Emitter::load_abs`] without the byte swap: `dst` holds the bytes in wire order.
    fn load_abs_wire(&mut self, dst: u8, k: u32, n: u8) {
        self.check_end(u64::from(k) + u64::from(n));
        let ldx = ldx_op(n);
        match i16::try_from(k) {
            Ok(off) => self.put(ldx, dst, RDATA, off, 0),
            Err(_) => {
                self.put(e::MOV32_IMM, RT, 0, 0, k as i32);
                self.put(e::ADD64_REG, RT, RDATA, 0, 0);
                self.put(ldx, dst, RT, 0, 0);
            }
        }
    }

    /// `A = frame[X + k .. X + k + n]` (big-endian; the sum does not wrap) or `return 0`.
    fn load_ind(&mut self, k: u32, n: u8) {
        // RT = X + k + n, at most 2^33 + 2: no overflow in 64 bits.
        self.const64(RT, u64::from(k) + u64::from(n));
        self.put(e::ADD64_REG, RT, RX, 0, 0);
        self.jump(e::JGT_REG, RT, RLEN, 0, self.zero);
        self.put(e::ADD64_REG, RT, RDATA, 0, 0);
        self.put(ldx_op(n), RA, RT, -i16::from(n), 0);
        self.swap(RA, n);
    }

    fn swap(&mut self, dst: u8, n: u8) {
        match n {
            4 => self.put(e::BE, dst, 0, 0, 32),
            2 => self.put(e::BE, dst, 0, 0, 16),
            _ => {}
        }
    }
}

fn ldx_op(n: u8) -> u8 {
    match n {
        4 => e::LD_W_REG,
        2 => e::LD_H_REG,
        _ => e::LD_B_REG,
    }
}

fn size_of_load(code: u16) -> u8 {
    match code & 0x18 {
        op::H => 2,
        op::B => 1,
        _ => 4,
    }
}

/// Stack offset of scratch slot `s` (0..16) relative to `r10`.
fn slot(s: u32) -> i16 {
    (s as i16 & 15) * 4 - 64
}

/// eBPF ALU32 opcode (K or X form) of a cBPF ALU operation.
fn alu32(code: u16, reg: bool) -> u8 {
    let (k, x) = match code & 0xf0 {
        op::ADD => (e::ADD32_IMM, e::ADD32_REG),
        op::SUB => (e::SUB32_IMM, e::SUB32_REG),
        op::MUL => (e::MUL32_IMM, e::MUL32_REG),
        op::DIV => (e::DIV32_IMM, e::DIV32_REG),
        op::MOD => (e::MOD32_IMM, e::MOD32_REG),
        op::AND => (e::AND32_IMM, e::AND32_REG),
        op::OR => (e::OR32_IMM, e::OR32_REG),
        op::XOR => (e::XOR32_IMM, e::XOR32_REG),
        op::LSH => (e::LSH32_IMM, e::LSH32_REG),
        _ => (e::RSH32_IMM, e::RSH32_REG),
    };
    if reg {
        x
    } else {
        k
    }
}

/// eBPF JMP32 opcodes of a cBPF condition: (jump if true, jump if false when one exists), in
/// the K or X form.
fn jmp32(code: u16, reg: bool) -> (u8, Option<u8>) {
    let (t, f) = match code & 0xf0 {
        op::JEQ => (e::JEQ_IMM32, Some(e::JNE_IMM32)),
        op::JGT => (e::JGT_IMM32, Some(e::JLE_IMM32)),
        op::JGE => (e::JGE_IMM32, Some(e::JLT_IMM32)),
        _ => (e::JSET_IMM32, None),
    };
    // The X form of each eBPF jump is its K form | BPF_X.
    let x = if reg { e::BPF_X } else { 0 };
    (t | x, f.map(|f| f | x))
}

/// What a `ret` of the program being emitted does.
#[derive(Clone, Copy)]
enum Ret {
    /// Exit with the result (a single program).
    Exit,
    /// A chain member: exit with `(index << 32) | result` when the result decides in `mode`
    /// ([`Mode::decides`]), else go on at `next` (the next member's entry).
    Member { index: u32, mode: Mode, next: Label },
}

/// Whether `prog` reads frame bytes (and so needs `data`/`buflen` in registers).
fn reads_packet(prog: &Program) -> bool {
    use op::*;
    let is_ancillary = |i: &Insn| class(i.code) == LD && i.code & 0xe0 == ABS && i.k >= SKF_AD_OFF;
    prog.insns().iter().any(|i| {
        (class(i.code) == LD && matches!(i.code & 0xe0, ABS | IND) && !is_ancillary(i))
            || i.code == LDX | B | MSH
    })
}

/// Which of `A` and `X` some path of `prog` reads before writing: only those need cBPF's
/// initial 0 at the program's start (the others may hold anything there, as nothing reads it).
/// A forward pass suffices: every jump goes forward.
fn reads_before_write(prog: &Program) -> (bool, bool) {
    use op::*;
    let insns = prog.insns();
    // Registers written on every path into each instruction.
    let mut written = vec![RA_BIT | RX_BIT; insns.len() + 1];
    written[0] = 0;
    let mut early = 0u8;
    for (pc, i) in insns.iter().enumerate() {
        let (reads, writes) = register_use(i);
        early |= reads & !written[pc];
        let out = written[pc] | writes;
        let mut flow = |to: usize| {
            if let Some(w) = written.get_mut(to) {
                *w &= out;
            }
        };
        match class(i.code) {
            RET => {}
            JMP if i.code == JMP | JA => flow((pc + 1).saturating_add(i.k as usize)),
            JMP => {
                flow(pc + 1 + usize::from(i.jt));
                flow(pc + 1 + usize::from(i.jf));
            }
            _ => flow(pc + 1),
        }
    }
    (early & RA_BIT != 0, early & RX_BIT != 0)
}

const RA_BIT: u8 = 1;
const RX_BIT: u8 = 2;

/// Which of `A` (`RA_BIT`) and `X` (`RX_BIT`) instruction `i` reads, and which it writes.
fn register_use(i: &Insn) -> (u8, u8) {
    use op::*;
    let x_src = i.code & X_SRC != 0;
    match class(i.code) {
        LD => match i.code & 0xe0 {
            ABS if i.k >= SKF_AD_OFF => match Ancillary::from_offset(i.k - SKF_AD_OFF) {
                Some(Ancillary::AluXorX) => (RA_BIT | RX_BIT, RA_BIT),
                _ => (0, RA_BIT),
            },
            IND => (RX_BIT, RA_BIT),
            _ => (0, RA_BIT),
        },
        LDX => (0, RX_BIT),
        ST => (RA_BIT, 0),
        STX => (RX_BIT, 0),
        ALU if x_src && i.code != ALU | NEG => (RA_BIT | RX_BIT, RA_BIT),
        ALU => (RA_BIT, RA_BIT),
        JMP if i.code == JMP | JA => (0, 0),
        JMP if x_src => (RA_BIT | RX_BIT, 0),
        JMP => (RA_BIT, 0),
        RET if i.code & 0x18 == op::A => (RA_BIT, 0),
        RET => (0, 0),
        _ if i.code == MISC | TAX => (RA_BIT, RX_BIT),
        _ => (RX_BIT, RA_BIT),
    }
}

/// The instructions control goes to after `i` at `pc` (none after a `ret`).
fn successors(pc: usize, i: &Insn) -> [Option<usize>; 2] {
    use op::*;
    match class(i.code) {
        RET => [None, None],
        JMP if i.code == JMP | JA => [Some((pc + 1).saturating_add(i.k as usize)), None],
        JMP => [
            Some(pc + 1 + usize::from(i.jt)),
            Some(pc + 1 + usize::from(i.jf)),
        ],
        _ => [Some(pc + 1), None],
    }
}

/// For each instruction of `prog`: whether it is a 16- or 32-bit absolute load whose value
/// only the next instruction reads, an equality or bit test against a constant that nothing
/// else jumps to. Such a load may leave its bytes in wire order and the test compare them with
/// the constant's bytes swapped ([`wire_order_imm`]): a byte swap is a permutation of bits, so
/// equality and common set bits are the same either way.
fn wire_order_loads(prog: &Program, live: &[bool]) -> Vec<bool> {
    use op::*;
    let insns = prog.insns();
    let mut preds = vec![0u32; insns.len() + 1];
    for (pc, i) in insns.iter().enumerate() {
        let [a, b] = successors(pc, i);
        for s in [a, b.filter(|&b| Some(b) != a)].into_iter().flatten() {
            if let Some(n) = preds.get_mut(s) {
                *n += 1;
            }
        }
    }
    let mut wire = vec![false; insns.len()];
    for (pc, pair) in insns.windows(2).enumerate() {
        let [ld, jmp] = pair else { continue };
        let load = class(ld.code) == LD
            && ld.code & 0xe0 == ABS
            && matches!(ld.code & 0x18, H | W)
            && ld.k < SKF_AD_OFF;
        let test = class(jmp.code) == JMP
            && jmp.code & X_SRC == 0
            && matches!(jmp.code & 0xf0, JEQ | JSET);
        let dead_after = successors(pc + 1, jmp)
            .into_iter()
            .flatten()
            .all(|s| live.get(s) != Some(&true));
        wire[pc] = load && test && preds[pc + 1] == 1 && dead_after;
    }
    wire
}

/// The constant a [`wire_order_loads`] test compares an `n`-byte load in wire order with: `k`
/// with its `n` bytes swapped. A `k` with bits above the load's width keeps them (an equality
/// that can never hold stays so; a bit test ignores them, as the loaded value has none).
fn wire_order_imm(code: u16, k: u32, n: u8) -> u32 {
    match (n, code & 0xf0) {
        (2, op::JSET) => u32::from((k as u16).swap_bytes()),
        (2, _) if k > 0xffff => k,
        (2, _) => u32::from((k as u16).swap_bytes()),
        _ => k.swap_bytes(),
    }
}

/// Whether `i` is `ldh [12]` (the EtherType).
fn is_ethertype_load(i: &Insn) -> bool {
    i.code == op::LD | op::H | op::ABS && i.k == ETHERTYPE_OFF
}

/// For a chain holding the EtherType in `RETH` ([`Emitter::ethertype`]): whether `A` equals the
/// EtherType on every path into each instruction of `prog` (a forward pass: every jump goes
/// forward). Where it does, `A` lives in `RETH` and `RA` is written only where needed.
fn ethertype_in_a(prog: &Program) -> Vec<bool> {
    let insns = prog.insns();
    let mut alias = vec![true; insns.len() + 1];
    alias[0] = false;
    for (pc, i) in insns.iter().enumerate() {
        let out = is_ethertype_load(i) || (alias[pc] && register_use(i).1 & RA_BIT == 0);
        for s in successors(pc, i).into_iter().flatten() {
            if let Some(a) = alias.get_mut(s) {
                *a &= out;
            }
        }
    }
    alias
}

/// Whether `A` is live on entry to each instruction of `prog`: some path from there reads it
/// before writing it (a backward pass: every jump goes forward).
fn a_live(prog: &Program) -> Vec<bool> {
    let insns = prog.insns();
    let mut live = vec![false; insns.len() + 1];
    for (pc, i) in insns.iter().enumerate().rev() {
        let (reads, writes) = register_use(i);
        let out = successors(pc, i)
            .into_iter()
            .flatten()
            .any(|s| live.get(s) == Some(&true));
        live[pc] = reads & RA_BIT != 0 || (out && writes & RA_BIT == 0);
    }
    live
}

/// cBPF's initial `A = X = 0`, for the registers `prog` may read before writing.
fn reset_registers(em: &mut Emitter, prog: &Program) {
    let (a, x) = reads_before_write(prog);
    if a {
        em.put(e::MOV32_IMM, RA, 0, 0, 0);
    }
    if x {
        em.put(e::MOV32_IMM, RX, 0, 0, 0);
    }
}

/// `r0 |= index << 32`: the member tag of a chain's result (nothing for member 0).
fn tag(em: &mut Emitter, index: u32) {
    if index != 0 {
        em.const64(RT, u64::from(index) << 32);
        em.put(e::OR64_REG, RA, RT, 0, 0);
    }
}

/// The return of the constant `k` as `ret` says.
fn ret_const(em: &mut Emitter, ret: Ret, k: u32) {
    match ret {
        Ret::Exit => em.put(e::MOV32_IMM, RA, 0, 0, k as i32),
        Ret::Member { index, mode, next } => {
            if !mode.decides(k) {
                em.jump(e::JA, 0, 0, 0, next);
                return;
            }
            if let Some(b) = em.burst {
                em.jump(e::JA, 0, 0, 0, b.decided);
                return;
            }
            em.const64(RA, u64::from(index) << 32 | u64::from(k));
        }
    }
    em.put(e::EXIT, 0, 0, 0, 0);
}

/// The return of `A` as `ret` says.
fn ret_a(em: &mut Emitter, ret: Ret) {
    if let Ret::Member { index, mode, next } = ret {
        match mode {
            Mode::Classid { .. } => em.jump(e::JEQ_IMM32, RA, 0, 0, next),
            Mode::DirectAction { .. } => {
                let decide = em.label();
                for v in DECIDING_VERDICTS {
                    em.jump(e::JEQ_IMM32, RA, 0, v, decide);
                }
                em.jump(e::JA, 0, 0, 0, next);
                em.bind(decide);
            }
        }
        if let Some(b) = em.burst {
            em.jump(e::JA, 0, 0, 0, b.decided);
            return;
        }
        tag(em, index);
    }
    em.put(e::EXIT, 0, 0, 0, 0);
}

/// The direct-action results that decide (`cls_bpf_exec_opcode`'s set).
const DECIDING_VERDICTS: [i32; 5] = [
    tc_act::OK,
    tc_act::SHOT,
    tc_act::STOLEN,
    tc_act::REDIRECT,
    tc_act::TRAP,
];

/// Emits the body of `prog` (without the prologue); its returns do what `ret` says, and its
/// "return 0" block (when some load or division needs it) follows the body.
fn emit_program(em: &mut Emitter, prog: &Program, ret: Ret) {
    use op::*;
    let insns = prog.insns();
    let starts: Vec<Label> = (0..insns.len()).map(|_| em.label()).collect();
    // In classid mode 0 does not decide: a chain member's "return 0" is the next member.
    let (zero, own_zero) = match ret {
        Ret::Member {
            mode: Mode::Classid { .. },
            next,
            ..
        } => (next, false),
        _ => (em.label(), true),
    };
    em.zero = zero;
    let alias = if em.ethertype {
        ethertype_in_a(prog)
    } else {
        vec![false; insns.len() + 1]
    };
    let live = a_live(prog);
    let wire = wire_order_loads(prog, &live);
    for (pc, i) in insns.iter().enumerate() {
        em.bind(starts[pc]);
        let k = i.k;
        let next = |off: u32| starts[pc + 1 + off as usize];
        // Where `A` is the EtherType (in `RETH`), `RA` is written only before an instruction
        // that reads `A` other than by comparing it, or that leads where `A` is not known to
        // be the EtherType; comparisons read `RETH`.
        let eth_load = em.ethertype && is_ethertype_load(i);
        // A load left in wire order, and the test that reads it.
        let wire_load = wire[pc] && !eth_load;
        let wire_test = pc
            .checked_sub(1)
            .filter(|&p| wire[p] && !(em.ethertype && is_ethertype_load(&insns[p])))
            .map(|p| size_of_load(insns[p].code));
        let (reads, writes) = register_use(i);
        let a_out = eth_load || (alias[pc] && writes & RA_BIT == 0);
        let leaves = a_out
            && successors(pc, i)
                .into_iter()
                .flatten()
                .any(|s| !alias.get(s).copied().unwrap_or(false) && live.get(s) == Some(&true));
        let compares = class(i.code) == JMP && i.code != JMP | JA;
        if eth_load {
            if leaves {
                em.put(e::MOV32_REG, RA, RETH, 0, 0);
            }
            continue;
        }
        if alias[pc] && ((reads & RA_BIT != 0 && !compares) || leaves) {
            em.put(e::MOV32_REG, RA, RETH, 0, 0);
        }
        let ra = if alias[pc] { RETH } else { RA };
        match class(i.code) {
            LD => match i.code & 0xe0 {
                ABS if k >= SKF_AD_OFF => match Ancillary::from_offset(k - SKF_AD_OFF) {
                    Some(Ancillary::AluXorX) => em.put(e::XOR32_REG, RA, RX, 0, 0),
                    Some(Ancillary::HaType) => em.put(e::MOV32_IMM, RA, 0, 0, HATYPE_ETHER as i32),
                    Some(a) => {
                        let off = meta_offset(a).unwrap_or(0);
                        em.put(e::LD_W_REG, RA, RCTX, CTX_META + off, 0);
                    }
                    // The loader rejects every other ancillary offset.
                    None => em.jump(e::JA, 0, 0, 0, em.zero),
                },
                ABS if wire_load => em.load_abs_wire(RA, k, size_of_load(i.code)),
                ABS => em.load_abs(RA, k, size_of_load(i.code)),
                IND => em.load_ind(k, size_of_load(i.code)),
                LEN => em.put(e::LD_W_REG, RA, RCTX, CTX_WIRELEN, 0),
                MEM => em.put(e::LD_W_REG, RA, RFP, slot(k), 0),
                _ => em.put(e::MOV32_IMM, RA, 0, 0, k as i32),
            },
            LDX => match i.code & 0xe0 {
                LEN => em.put(e::LD_W_REG, RX, RCTX, CTX_WIRELEN, 0),
                MEM => em.put(e::LD_W_REG, RX, RFP, slot(k), 0),
                MSH => {
                    // X = (frame[k] & 0xf) << 2
                    em.load_abs(RX, k, 1);
                    em.put(e::AND32_IMM, RX, 0, 0, 0xf);
                    em.put(e::LSH32_IMM, RX, 0, 0, 2);
                }
                _ => em.put(e::MOV32_IMM, RX, 0, 0, k as i32),
            },
            ST => em.put(e::ST_W_REG, RFP, RA, slot(k), 0),
            STX => em.put(e::ST_W_REG, RFP, RX, slot(k), 0),
            ALU if i.code == ALU | NEG => em.put(e::NEG32, RA, 0, 0, 0),
            ALU if i.code & X_SRC != 0 => {
                let opc = alu32(i.code, true);
                match i.code & 0xf0 {
                    DIV | MOD => {
                        em.jump(e::JEQ_IMM, RX, 0, 0, em.zero);
                        em.put(opc, RA, RX, 0, 0);
                    }
                    LSH | RSH => {
                        // X >= 32 gives 0: clear A; the shift (x86 masks the count) then keeps 0.
                        em.put(e::JLT_IMM, RX, 0, 1, 32);
                        em.put(e::MOV32_IMM, RA, 0, 0, 0);
                        em.put(opc, RA, RX, 0, 0);
                    }
                    _ => em.put(opc, RA, RX, 0, 0),
                }
            }
            ALU => em.put(alu32(i.code, false), RA, 0, 0, k as i32),
            JMP if i.code == JMP | JA => {
                if k != 0 {
                    em.jump(e::JA, 0, 0, 0, next(k));
                }
            }
            JMP => {
                let reg = i.code & X_SRC != 0;
                let k = wire_test.map_or(k, |n| wire_order_imm(i.code, k, n));
                let (src, imm) = if reg { (RX, 0) } else { (0, k as i32) };
                let (jt, jf) = (u32::from(i.jt), u32::from(i.jf));
                let (on_true, on_false) = jmp32(i.code, reg);
                if jt == jf {
                    if jt != 0 {
                        em.jump(e::JA, 0, 0, 0, next(jt));
                    }
                } else if jf == 0 {
                    em.jump(on_true, ra, src, imm, next(jt));
                } else if let (0, Some(on_false)) = (jt, on_false) {
                    em.jump(on_false, ra, src, imm, next(jf));
                } else {
                    em.jump(on_true, ra, src, imm, next(jt));
                    em.jump(e::JA, 0, 0, 0, next(jf));
                }
            }
            RET if i.code & 0x18 == op::A => ret_a(em, ret),
            RET => ret_const(em, ret, k),
            _ if i.code == MISC | TAX => em.put(e::MOV32_REG, RX, RA, 0, 0),
            _ => em.put(e::MOV32_REG, RA, RX, 0, 0),
        }
    }
    if own_zero && em.used(zero) {
        em.bind(zero);
        ret_const(em, ret, 0);
    }
}

/// Bit set of the ancillary loads `prog` uses.
fn ancillary_set(prog: &Program) -> u32 {
    Ancillary::ALL
        .iter()
        .filter(|&&a| prog.uses(a))
        .fold(0, |m, &a| m | 1 << (a as u32))
}

/// Resolves `em`'s jumps, checks the bytecode with rbpf's own load-time checks (known opcodes,
/// registers, jumps inside the program) and wraps it.
fn seal(
    em: Emitter,
    ancillary: u32,
    uses_metadata: bool,
    chain: u32,
) -> Result<Translated, TranslateError> {
    let burst = em.burst.is_some();
    let out = em.finish()?;
    let code: Box<[u8]> = out.iter().flat_map(|i| i.to_array()).collect();
    rbpf::EbpfVmMbuff::new(Some(&code)).map_err(|e| TranslateError::Rejected(e.to_string()))?;
    Ok(Translated {
        code,
        ancillary,
        uses_metadata,
        chain,
        burst,
    })
}

/// Translates a loaded program; see the module documentation.
pub fn translate(prog: &Program) -> Result<Translated, TranslateError> {
    let mut em = Emitter::new(prog.len() * 3 + 8);
    // Prologue: A = X = 0 where read (cBPF's initial state; the JIT leaves registers undefined).
    reset_registers(&mut em, prog);
    if reads_packet(prog) {
        em.put(e::LD_DW_REG, RDATA, RCTX, CTX_DATA, 0);
        em.put(e::LD_DW_REG, RLEN, RCTX, CTX_BUFLEN, 0);
    }
    emit_program(&mut em, prog, Ret::Exit);
    seal(em, ancillary_set(prog), prog.uses_metadata(), 0)
}

/// Translates the programs of consecutive filters on a hook into one eBPF program (a
/// *chain*), so that a packet pays one call, one context and one prologue for all of them.
///
/// The chain runs the members in order, starting at member `start` of the context
/// ([`JitCtx::set_start`]; after an earlier member's actions said "continue"). A member whose
/// result does not decide in its [`Mode`] ([`Mode::decides`]: 0 in classid mode, an unspec or
/// unknown verdict in direct action) hands the packet to the next member, which starts with
/// `A` and `X` at 0 as a separate program does (where it reads them before writing them). The result is `(member << 32) | result` for the
/// first member that decided, or `members.len() << 32` when none did (see [`chain_result`]).
/// Scratch memory is not reset between members: the loader guarantees that no program reads
/// a slot it has not written.
///
/// A chain needs at least one member and at most [`u32::MAX`]; the same length limit as for
/// single programs applies to the whole chain.
pub fn translate_chain(members: &[(&Program, Mode)]) -> Result<Translated, TranslateError> {
    chain(members, 0, false)
}

/// Frames at least this long take a fast chain ([`translate_chain_fast`]): the minimum
/// Ethernet frame without its FCS (IEEE 802.3 `ETH_ZLEN`), so only runts and truncated
/// frames miss it.
pub const FAST_CHAIN_LEN: u32 = 60;

/// What a fast chain ([`translate_chain_fast`]) returns for a frame shorter than its entry
/// check: run the checked chain instead. No chain result has all bits set.
pub const CHAIN_SHORT: u64 = u64::MAX;

/// The chain of [`translate_chain`] specialised for frames of at least `L` bytes, where `L`
/// (at most [`FAST_CHAIN_LEN`]) is the largest end of an absolute load of any member within
/// the first [`FAST_CHAIN_LEN`] bytes: it checks `L <= buflen` once at entry and returns
/// [`CHAIN_SHORT`] when that fails, so that the absolute loads ending within `L` bytes (the
/// Ethernet, IP and port fields typical filters test) need no check each. Every other load
/// keeps its own check. Same results as the checked chain for every frame it does not return
/// [`CHAIN_SHORT`] for. `None` when no load would lose its check.
pub fn translate_chain_fast(
    members: &[(&Program, Mode)],
) -> Result<Option<Translated>, TranslateError> {
    match fast_checked_end(members) {
        Some(end) => chain(members, end, false).map(Some),
        None => Ok(None),
    }
}

/// The entry check of a fast chain of `members` ([`translate_chain_fast`]); `None` when no
/// load would lose its check.
fn fast_checked_end(members: &[(&Program, Mode)]) -> Option<u64> {
    use op::*;
    members
        .iter()
        .flat_map(|(p, _)| p.insns())
        .filter_map(|i| match (class(i.code), i.code & 0xe0) {
            (LD, ABS) if i.k < SKF_AD_OFF => Some(u64::from(i.k) + u64::from(size_of_load(i.code))),
            _ if i.code == LDX | B | MSH => Some(u64::from(i.k) + 1),
            _ => None,
        })
        .filter(|&end| end <= u64::from(FAST_CHAIN_LEN))
        .max()
}

/// The chain of [`translate_chain`] run over up to [`BURST_MAX`] frames in one call: its
/// context is a [`BurstCtx`], and it returns a bit mask with bit `i` set when frame `i` needs
/// [`translate_chain`]'s answer: some member decides on it, or it is shorter than the
/// fast chain's entry check ([`translate_chain_fast`], whose single check the burst chain
/// shares). A clear bit means exactly that no member decides. Every frame starts at member 0.
///
/// The body is the fast chain's, inside a loop over the slots: one call, one prologue and one
/// context serve a whole burst.
pub fn translate_chain_burst(members: &[(&Program, Mode)]) -> Result<Translated, TranslateError> {
    chain(members, fast_checked_end(members).unwrap_or(0), true)
}

/// [`translate_chain`], with absolute loads ending within `checked_end` bytes checked once at
/// entry (0: none); for `burst`, [`translate_chain_burst`].
fn chain(
    members: &[(&Program, Mode)],
    checked_end: u64,
    burst: bool,
) -> Result<Translated, TranslateError> {
    let n = u32::try_from(members.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| TranslateError::Rejected(format!("a chain of {} members", members.len())))?;
    let total: usize = members.iter().map(|(p, _)| p.len()).sum();
    let mut em = Emitter::new(total * 3 + 8 * members.len() + 24);
    let done = em.label();
    if burst {
        burst_loop(&mut em, done);
    }
    let short = em.label();
    if members.iter().any(|(p, _)| reads_packet(p)) {
        em.put(e::LD_DW_REG, RDATA, RCTX, CTX_DATA, 0);
        em.put(e::LD_DW_REG, RLEN, RCTX, CTX_BUFLEN, 0);
        if checked_end > 0 {
            // `checked_end` is at most FAST_CHAIN_LEN: a non-negative immediate.
            em.jump(e::JLT_IMM, RLEN, 0, checked_end as i32, short);
            em.checked_end = checked_end;
        }
        // Most pcap filters start with `ldh [12]`: past the entry check, load it once.
        let ethertype_loads = members
            .iter()
            .flat_map(|(p, _)| p.insns())
            .filter(|i| is_ethertype_load(i))
            .count();
        if checked_end >= u64::from(ETHERTYPE_OFF) + 2 && ethertype_loads > 1 {
            em.load_abs(RETH, ETHERTYPE_OFF, 2);
            em.ethertype = true;
        }
    }
    let entries: Vec<Label> = (0..=n).map(|_| em.label()).collect();
    if !burst {
        // Dispatch on the start member: forward jumps only, one compare when it is 0.
        em.put(e::LD_W_REG, RT, RCTX, CTX_START, 0);
        for (i, &entry) in entries.iter().enumerate().take(n as usize) {
            em.jump(e::JEQ_IMM, RT, 0, i as i32, entry);
        }
        em.jump(e::JA, 0, 0, 0, entries[n as usize]);
    }
    for (i, &(prog, mode)) in members.iter().enumerate() {
        em.bind(entries[i]);
        reset_registers(&mut em, prog);
        let ret = Ret::Member {
            index: i as u32,
            mode,
            next: entries[i + 1],
        };
        emit_program(&mut em, prog, ret);
    }
    // No member decided.
    em.bind(entries[n as usize]);
    match em.burst {
        Some(b) => em.jump(e::JA, 0, 0, 0, b.undecided),
        None => {
            em.const64(RA, u64::from(n) << 32);
            em.put(e::EXIT, 0, 0, 0, 0);
        }
    }
    if em.used(short) {
        em.bind(short);
        match em.burst {
            Some(b) => em.jump(e::JA, 0, 0, 0, b.decided),
            None => {
                em.const64(RA, CHAIN_SHORT);
                em.put(e::EXIT, 0, 0, 0, 0);
            }
        }
    }
    if burst {
        em.bind(done);
        em.put(e::MOV64_REG, RA, RMASK, 0, 0);
        em.put(e::EXIT, 0, 0, 0, 0);
    }
    let ancillary = members.iter().fold(0, |m, (p, _)| m | ancillary_set(p));
    let uses_metadata = members.iter().any(|(p, _)| p.uses_metadata());
    seal(em, ancillary, uses_metadata, n)
}

// A burst chain's loop registers (no member uses them). `RBASE` is free after the loop head.
const RBASE: u8 = 5;
/// A fast chain's copy of the EtherType (see [`Emitter::ethertype`]).
const RETH: u8 = 5;
/// Offset of the EtherType (`ldh [12]`).
const ETHERTYPE_OFF: u32 = 12;
const REND: u8 = 7;
const RBIT: u8 = 8;
const RMASK: u8 = 9;

/// A burst chain's loop head: `RBASE` = the [`BurstCtx`], `REND` = the end of its last used
/// slot (the count clamped to [`BURST_MAX`]), `RMASK` = 0; then per frame `RCTX` = its slot
/// and `RBIT` = its bit, and `done` after the last. Binds `em`'s [`BurstExits`]: a decided
/// frame sets its bit in `RMASK`; both go on with the next frame.
fn burst_loop(em: &mut Emitter, done: Label) {
    em.put(e::MOV64_REG, RBASE, RCTX, 0, 0);
    em.put(e::LD_DW_REG, REND, RBASE, 0, 0);
    em.put(e::JLE_IMM, REND, 0, 1, BURST_MAX as i32);
    em.put(e::MOV32_IMM, REND, 0, 0, BURST_MAX as i32);
    em.put(e::LSH64_IMM, REND, 0, 0, BURST_SLOT.trailing_zeros() as i32);
    em.put(e::ADD64_REG, REND, RBASE, 0, 0);
    em.put(e::ADD64_IMM, REND, 0, 0, BURST_SLOTS);
    // The first slot is RBASE + BURST_SLOTS: start one slot before it.
    em.put(e::MOV64_REG, RCTX, RBASE, 0, 0);
    em.put(e::ADD64_IMM, RCTX, 0, 0, BURST_SLOTS - BURST_SLOT);
    em.put(e::MOV32_IMM, RBIT, 0, 0, 1);
    em.put(e::MOV32_IMM, RMASK, 0, 0, 0);
    let first = em.label();
    em.jump(e::JA, 0, 0, 0, first);
    let exits = BurstExits {
        decided: em.label(),
        undecided: em.label(),
    };
    em.bind(exits.decided);
    em.put(e::OR64_REG, RMASK, RBIT, 0, 0);
    em.bind(exits.undecided);
    em.put(e::LSH64_IMM, RBIT, 0, 0, 1);
    em.bind(first);
    em.put(e::ADD64_IMM, RCTX, 0, 0, BURST_SLOT);
    em.jump(e::JGE_REG, RCTX, REND, 0, done);
    em.burst = Some(exits);
}

/// Splits a chain's result ([`translate_chain`]) into the deciding member and its result, or
/// `None` when no member from the start on decided.
#[inline]
pub fn chain_result(r: u64, members: usize) -> Option<(usize, u32)> {
    let at = (r >> 32) as usize;
    (at < members).then_some((at, r as u32))
}

/// `BPF_X`: the source-is-X bit of ALU and jump opcodes.
const X_SRC: u16 = op::X;

/// A safe engine over rbpf's interpreter, which checks every memory access of the translated
/// code against the context, the frame and its stack. For verification (tests, fuzzing), not
/// for the data path: rbpf's VM borrows its bytecode, so each run builds a fresh VM over the
/// owned translation, which re-runs rbpf's load-time verifier (O(program length)) and allocates
/// (its 512-byte stack and the VM's tables), on top of interpreting with a bounds check per
/// memory access. Expect microseconds per run rather than nanoseconds.
#[derive(Debug, Clone)]
pub struct RbpfInterpreter {
    prog: Translated,
}

impl RbpfInterpreter {
    /// Translates `prog`.
    pub fn new(prog: &Program) -> Result<RbpfInterpreter, TranslateError> {
        Ok(RbpfInterpreter {
            prog: translate(prog)?,
        })
    }

    /// Translates a chain of programs ([`translate_chain`]).
    pub fn chain(members: &[(&Program, Mode)]) -> Result<RbpfInterpreter, TranslateError> {
        Ok(RbpfInterpreter {
            prog: translate_chain(members)?,
        })
    }

    /// Translates the fast variant of a chain ([`translate_chain_fast`]); `None` when it has
    /// none.
    pub fn chain_fast(
        members: &[(&Program, Mode)],
    ) -> Result<Option<RbpfInterpreter>, TranslateError> {
        Ok(translate_chain_fast(members)?.map(|prog| RbpfInterpreter { prog }))
    }

    /// Translates the burst variant of a chain ([`translate_chain_burst`]).
    pub fn chain_burst(members: &[(&Program, Mode)]) -> Result<RbpfInterpreter, TranslateError> {
        Ok(RbpfInterpreter {
            prog: translate_chain_burst(members)?,
        })
    }

    /// Runs a burst chain over `ctx`; returns its mask. An `Err` is an access rbpf refused, a
    /// mask naming a frame past the context's, or a translation that is not a burst chain.
    ///
    /// rbpf's interpreter checks the context, the stack and the frames; for the frames (memory
    /// it is told about by address range) it checks only that each access starts inside one,
    /// where the single-frame runs ([`RbpfInterpreter::try_run_from`]) check whole accesses
    /// against the frame. The burst body is the fast chain's code, which those check.
    pub fn try_run_burst(&self, ctx: &BurstCtx<'_>) -> Result<u64, String> {
        if !self.prog.is_burst() {
            return Err("not a burst chain".into());
        }
        let mbuff = ctx.to_bytes();
        let mut vm = rbpf::EbpfVmMbuff::new(Some(self.prog.code())).map_err(|e| e.to_string())?;
        for r in (0..ctx.len()).filter_map(|i| ctx.frame_range(i)) {
            if !r.is_empty() {
                vm.register_allowed_memory(r);
            }
        }
        let r = vm.execute_program(&[], &mbuff).map_err(|e| e.to_string())?;
        if ctx.len() < 64 && r >> ctx.len() != 0 {
            return Err(format!("mask {r:#x} for {} frames", ctx.len()));
        }
        Ok(r)
    }

    /// The translation this engine runs.
    pub fn translated(&self) -> &Translated {
        &self.prog
    }

    /// Runs the program; an `Err` is an access rbpf refused or a result wider than 32 bits,
    /// that is a translator bug. Tests and fuzzing use this to fail on it.
    pub fn try_run(&self, data: &[u8], wirelen: u32, meta: &Meta) -> Result<u32, String> {
        let r = self.try_run_from(data, wirelen, meta, 0)?;
        u32::try_from(r).map_err(|_| format!("result {r:#x} is not a 32-bit value"))
    }

    /// Runs a chain from member `start` (for a single program `start` is not read); returns
    /// the raw 64-bit result. An `Err` is an access rbpf refused (a translator bug), or, for a
    /// chain, a result naming no member in range or a result whose low half does not decide
    /// in any mode.
    pub fn try_run_from(
        &self,
        data: &[u8],
        wirelen: u32,
        meta: &Meta,
        start: u32,
    ) -> Result<u64, String> {
        let mut ctx = JitCtx::new(data, wirelen);
        ctx.set_start(start);
        if self.prog.uses_metadata() {
            ctx.set_meta(meta);
        }
        let mbuff = ctx.to_bytes();
        let vm = rbpf::EbpfVmMbuff::new(Some(self.prog.code())).map_err(|e| e.to_string())?;
        let r = vm
            .execute_program(data, &mbuff)
            .map_err(|e| e.to_string())?;
        if let Some(n) = self.prog.chain_len() {
            let at = r >> 32;
            if r == CHAIN_SHORT {
                return Ok(r);
            }
            if at > n as u64 || (at == n as u64 && r as u32 != 0) {
                return Err(format!("chain result {r:#x} of {n} members"));
            }
            if at < u64::from(start).min(n as u64) {
                return Err(format!("chain result {r:#x} before the start {start}"));
            }
        }
        Ok(r)
    }
}

impl Engine for RbpfInterpreter {
    fn name(&self) -> &'static str {
        "rbpf-interpreter"
    }

    fn run(&self, data: &[u8], wirelen: u32, meta: &Meta) -> u32 {
        match self.try_run(data, wirelen, meta) {
            Ok(r) => r,
            Err(e) => {
                debug_assert!(false, "translator bug: {e}");
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbpf::insn::op::*;
    use crate::cbpf::insn::SKF_LL_OFF;
    use crate::cbpf::Interpreter;

    /// Chains whose members keep the EtherType in a register (`RETH`) instead of `A` where they
    /// can: every way `A` is read after `ldh [12]` (compare, compare with X, arithmetic, `ret a`,
    /// store, `tax`), paths that join with and without the EtherType in `A`, and `A` read after
    /// such a join give, in fast and burst chains, exactly the reference interpreter's answers.
    #[test]
    fn the_ethertype_register_stands_for_a_exactly() {
        use crate::cbpf::gen::chain_reference;
        const ETH: u32 = 12;
        let progs: Vec<Program> = vec![
            // Compare, then `ret a` (A must be materialised).
            prog(&[
                (LD | H | ABS, 0, 0, ETH),
                (JMP | JEQ | K, 0, 1, 0x86dd),
                (RET | A, 0, 0, 0),
                (RET | K, 0, 0, 0),
            ]),
            // Arithmetic on A after compares.
            prog(&[
                (LD | H | ABS, 0, 0, ETH),
                (JMP | JGT | K, 0, 2, 0x700),
                (ALU | AND | K, 0, 0, 0x0f00),
                (RET | A, 0, 0, 0),
                (RET | K, 0, 0, 0),
            ]),
            // Join: one path reloads A, the other keeps the EtherType; A read after the join.
            prog(&[
                (LD | H | ABS, 0, 0, ETH),
                (JMP | JEQ | K, 0, 1, 0x0800),
                (LD | B | ABS, 0, 0, 23),
                (JMP | JGE | K, 0, 1, 17),
                (RET | A, 0, 0, 0),
                (RET | K, 0, 0, 0),
            ]),
            // Store and `tax`, compare with X.
            prog(&[
                (LD | H | ABS, 0, 0, ETH),
                (ST, 0, 0, 3),
                (MISC | TAX, 0, 0, 0),
                (LD | B | ABS, 0, 0, 14),
                (LD | MEM, 0, 0, 3),
                (JMP | JEQ | X, 0, 1, 0),
                (RET | A, 0, 0, 0),
                (RET | K, 0, 0, 0),
            ]),
            // Two loads of the EtherType, a compare with X in between.
            prog(&[
                (LDX | IMM, 0, 0, 0x86dd),
                (LD | H | ABS, 0, 0, ETH),
                (JMP | JEQ | X, 2, 0, 0),
                (LD | H | ABS, 0, 0, ETH),
                (JMP | JSET | K, 0, 1, 0x0800),
                (RET | A, 0, 0, 0),
                (RET | K, 0, 0, 0),
            ]),
        ];
        let ethertypes = [0x0800u16, 0x86dd, 0x0806, 0x8100, 0x0900, 0xffff];
        for mode in [
            Mode::Classid { classid: 5 },
            Mode::DirectAction { classid: 0 },
        ] {
            for skip in 0..progs.len() {
                // Every member but one, so that each leads a chain once.
                let members: Vec<(&Program, Mode)> = progs
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| k != skip)
                    .map(|(_, p)| (p, mode))
                    .collect();
                let interps: Vec<Interpreter> =
                    members.iter().map(|(p, _)| Interpreter::new(p)).collect();
                let irefs: Vec<(&Interpreter, Mode)> = interps.iter().map(|i| (i, mode)).collect();
                let fast = RbpfInterpreter::chain_fast(&members)
                    .unwrap()
                    .expect("a fast chain");
                let burst = RbpfInterpreter::chain_burst(&members).unwrap();
                let frames: Vec<Vec<u8>> = ethertypes
                    .iter()
                    .flat_map(|&et| {
                        [6u8, 17, 250].map(|proto| {
                            let mut f = vec![0u8; 64];
                            f[12..14].copy_from_slice(&et.to_be_bytes());
                            f[14] = 0x45;
                            f[23] = proto;
                            f
                        })
                    })
                    .collect();
                let mut ctx = BurstCtx::new();
                for f in &frames {
                    ctx.push(f, 64, None);
                    let want = chain_reference(&irefs, f, 64, &Meta::ZERO, 0);
                    let r = fast.try_run_from(f, 64, &Meta::ZERO, 0).unwrap();
                    assert_eq!(
                        chain_result(r, members.len()),
                        want,
                        "skip {skip}, {f:02x?}"
                    );
                }
                let mask = burst.try_run_burst(&ctx).unwrap();
                for (i, f) in frames.iter().enumerate() {
                    let want = chain_reference(&irefs, f, 64, &Meta::ZERO, 0).is_some();
                    assert_eq!(mask >> i & 1 != 0, want, "burst, skip {skip}, frame {i}");
                }
            }
        }
    }

    fn prog(insns: &[(u16, u8, u8, u32)]) -> Program {
        Program::from_fields(insns).unwrap()
    }

    /// Runs on both engines, asserts they agree and that rbpf saw no bad access.
    fn both_meta(insns: &[(u16, u8, u8, u32)], data: &[u8], wirelen: u32, meta: &Meta) -> u32 {
        let p = prog(insns);
        let want = Interpreter::new(&p).run(data, wirelen, meta);
        let got = RbpfInterpreter::new(&p)
            .unwrap()
            .try_run(data, wirelen, meta)
            .unwrap_or_else(|e| panic!("{insns:?} on {data:?}: {e}"));
        assert_eq!(got, want, "{insns:?} on {data:?}");
        got
    }

    fn both(insns: &[(u16, u8, u8, u32)], data: &[u8]) -> u32 {
        both_meta(insns, data, data.len() as u32, &Meta::default())
    }

    const RETA: (u16, u8, u8, u32) = (RET | A, 0, 0, 0);

    fn frame(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
            .collect()
    }

    #[test]
    fn ctx_bytes_match_the_layout() {
        let d = [1u8, 2, 3];
        let mut c = JitCtx::new(&d, 77);
        let m = Meta {
            protocol: 1,
            pkttype: 2,
            ifindex: 3,
            mark: 4,
            rxhash: 5,
            vlan_tag: 6,
            vlan_tag_present: 7,
            vlan_tpid: 8,
        };
        c.set_meta(&m);
        let b = c.to_bytes();
        assert_eq!(
            u64::from_ne_bytes(b[0..8].try_into().unwrap()),
            d.as_ptr() as u64
        );
        assert_eq!(u64::from_ne_bytes(b[8..16].try_into().unwrap()), 3);
        assert_eq!(u32::from_ne_bytes(b[16..20].try_into().unwrap()), 77);
        for i in 0..8 {
            let at = 24 + 4 * i;
            assert_eq!(
                u32::from_ne_bytes(b[at..at + 4].try_into().unwrap()),
                i as u32 + 1
            );
        }
    }

    #[test]
    fn absolute_loads_at_the_end_of_the_frame() {
        for len in [0usize, 1, 2, 3, 4, 5, 14, 60, 64] {
            let f = frame(len);
            for size in [W, H, B] {
                for k in len.saturating_sub(5)..len + 2 {
                    let r = both(&[(LD | size | ABS, 0, 0, k as u32), RETA], &f);
                    let n = [4, 2, 1][(size >> 3) as usize];
                    if k + n <= len {
                        let mut v = 0u32;
                        for b in &f[k..k + n] {
                            v = v << 8 | u32::from(*b);
                        }
                        assert_eq!(r, v, "big-endian load of {n} at {k} of {len}");
                    } else {
                        assert_eq!(r, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn loads_at_large_offsets() {
        let f = frame(40_000);
        for k in [
            32_766,
            32_767,
            32_768,
            39_996,
            39_997,
            40_000,
            i32::MAX as u32 - 4,
            i32::MAX as u32,
            0x8000_0000,
            SKF_LL_OFF - 4,
            SKF_LL_OFF - 1,
        ] {
            for size in [W, H, B] {
                both(&[(LD | size | ABS, 0, 0, k), (RET | K, 0, 0, 1)], &f);
                both(&[(LDX | B | MSH, 0, 0, k), (MISC | TXA, 0, 0, 0), RETA], &f);
            }
        }
        both(&[(LDX | B | MSH, 0, 0, u32::MAX), (RET | K, 0, 0, 1)], &f);
    }

    #[test]
    fn indirect_loads() {
        let f = frame(64);
        for x in [
            0u32,
            1,
            3,
            59,
            60,
            61,
            62,
            63,
            64,
            32_767,
            0x7fff_ffff,
            0x8000_0000,
            u32::MAX,
        ] {
            for k in [0u32, 1, 2, 4, 60, 0x7fff_ffff, 0xffff_fffc, u32::MAX] {
                for size in [W, H, B] {
                    both(
                        &[(LDX | IMM, 0, 0, x), (LD | size | IND, 0, 0, k), RETA],
                        &f,
                    );
                }
            }
        }
        // MSH then IND: the classic TCP port load.
        let mut ip = frame(64);
        ip[14] = 0x45;
        let r = both(
            &[(LDX | B | MSH, 0, 0, 14), (LD | H | IND, 0, 0, 16), RETA],
            &ip,
        );
        assert_eq!(r, u32::from(u16::from_be_bytes([ip[36], ip[37]])));
        assert_eq!(both(&[(LD | B | IND, 0, 0, 0), RETA], &[]), 0);
    }

    #[test]
    fn len_imm_scratch_and_transfers() {
        let f = frame(10);
        assert_eq!(
            both_meta(&[(LD | W | LEN, 0, 0, 0), RETA], &f, 1514, &Meta::default()),
            1514
        );
        assert_eq!(
            both_meta(
                &[(LDX | W | LEN, 0, 0, 0), (MISC | TXA, 0, 0, 0), RETA],
                &f,
                99,
                &Meta::default()
            ),
            99
        );
        let p = [
            (LD | IMM, 0, 0, 0xdead_beef),
            (ST, 0, 0, 0),
            (LDX | IMM, 0, 0, 0x8000_0001),
            (STX, 0, 0, 15),
            (LD | MEM, 0, 0, 15),
            (LDX | MEM, 0, 0, 0),
            (ALU | SUB | X, 0, 0, 0),
            (MISC | TAX, 0, 0, 0),
            (MISC | TXA, 0, 0, 0),
            RETA,
        ];
        assert_eq!(both(&p, &f), 0x8000_0001u32.wrapping_sub(0xdead_beef));
        assert_eq!(both(&[(RET | K, 0, 0, u32::MAX)], &f), u32::MAX);
        assert_eq!(both(&[RETA], &f), 0);
    }

    #[test]
    fn alu_with_constants_and_x() {
        let ops = [ADD, SUB, MUL, DIV, MOD, AND, OR, XOR, LSH, RSH];
        let vals = [
            0u32,
            1,
            2,
            3,
            31,
            32,
            33,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_fffe,
            u32::MAX,
        ];
        for o in ops {
            for a in vals {
                for v in vals {
                    let const_ok = match o {
                        DIV | MOD => v != 0,
                        LSH | RSH => v < 32,
                        _ => true,
                    };
                    if const_ok {
                        both(&[(LD | IMM, 0, 0, a), (ALU | o | K, 0, 0, v), RETA], &[]);
                    }
                    both(
                        &[
                            (LD | IMM, 0, 0, a),
                            (LDX | IMM, 0, 0, v),
                            (ALU | o | X, 0, 0, 0),
                            RETA,
                        ],
                        &[],
                    );
                }
            }
        }
        for a in vals {
            assert_eq!(
                both(&[(LD | IMM, 0, 0, a), (ALU | NEG, 0, 0, 0), RETA], &[]),
                a.wrapping_neg()
            );
        }
    }

    #[test]
    fn division_by_x_zero_returns_zero() {
        for o in [DIV, MOD] {
            let p = [
                (LD | IMM, 0, 0, 7),
                (ALU | o | X, 0, 0, 0),
                (RET | K, 0, 0, 9),
            ];
            assert_eq!(both(&p, &[]), 0, "X starts at 0");
            let p = [
                (LD | IMM, 0, 0, 7),
                (LDX | IMM, 0, 0, 2),
                (ALU | o | X, 0, 0, 0),
                (RET | K, 0, 0, 9),
            ];
            assert_eq!(both(&p, &[]), 9);
        }
    }

    #[test]
    fn shifts_by_x_of_31_32_33() {
        for o in [LSH, RSH] {
            for (x, want_zero) in [
                (31u32, false),
                (32, true),
                (33, true),
                (64, true),
                (u32::MAX, true),
            ] {
                let p = [
                    (LD | IMM, 0, 0, 0x8000_0001),
                    (LDX | IMM, 0, 0, x),
                    (ALU | o | X, 0, 0, 0),
                    RETA,
                ];
                let r = both(&p, &[]);
                assert_eq!(r == 0, want_zero, "shift {o:#x} by {x}: {r:#x}");
            }
        }
    }

    #[test]
    fn compares_with_constants_above_i32_max() {
        for cond in [JEQ, JGT, JGE, JSET] {
            for a in [0u32, 1, 0x7fff_ffff, 0x8000_0000, 0x8000_0001, u32::MAX] {
                for k in [0u32, 1, 0x7fff_ffff, 0x8000_0000, 0x8000_0001, u32::MAX] {
                    for (jt, jf) in [(0u8, 1u8), (1, 0), (1, 2), (2, 1), (0, 0), (2, 2)] {
                        let p = [
                            (LD | IMM, 0, 0, a),
                            (LDX | IMM, 0, 0, k),
                            (JMP | cond | K, jt, jf, k),
                            (RET | K, 0, 0, 10),
                            (RET | K, 0, 0, 11),
                            (RET | K, 0, 0, 12),
                        ];
                        both(&p, &[]);
                        let mut px = p;
                        px[2].0 = JMP | cond | X_SRC;
                        both(&px, &[]);
                    }
                }
            }
        }
        let p = [(JMP | JA, 0, 0, 1), (RET | K, 0, 0, 1), (RET | K, 0, 0, 2)];
        assert_eq!(both(&p, &[]), 2);
    }

    /// Loads left in wire order ([`wire_order_loads`]): a 16- or 32-bit load tested for
    /// equality or common bits against every kind of constant (swapped, wider than the load,
    /// high bit set), with the value dead after the test or read again (at a target, by `ret
    /// a`, or where another jump joins): every case agrees with the reference interpreter, and
    /// the first shape really is translated without a swap.
    #[test]
    fn wire_order_tests_agree_with_the_reference() {
        let mut d = frame(40);
        d[6..10].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
        let values = [
            0u32,
            0x1234,
            0x3412,
            0x0034,
            0x3400,
            // Single bits set in one byte order of the loaded value only.
            0x0004,
            0x0200,
            0x0400_0000,
            0x0000_0100,
            0x1_1234,
            0x1234_5678,
            0x7856_3412,
            0x8000_1234,
            0xffff,
            u32::MAX,
        ];
        let mut wire_forms = 0;
        for size in [H, W] {
            for cond in [JEQ, JSET] {
                for k in values {
                    for (jt, jf) in [(0u8, 1u8), (1, 0), (1, 2), (2, 0), (0, 0)] {
                        let dead = [
                            (LD | size | ABS, 0, 0, 6),
                            (JMP | cond | K, jt, jf, k),
                            (RET | K, 0, 0, 10),
                            (RET | K, 0, 0, 11),
                            (RET | K, 0, 0, 12),
                        ];
                        both(&dead, &d);
                        let p = prog(&dead);
                        let live = a_live(&p);
                        if jt != jf && wire_order_loads(&p, &live)[0] {
                            wire_forms += 1;
                            let t = translate(&p).unwrap();
                            assert!(
                                !t.code().chunks(8).any(|c| c[0] == e::BE),
                                "{dead:?} still swaps"
                            );
                        }
                        // The value read again after the test: at one target, or at both.
                        let mut live_after = dead;
                        live_after[3] = RETA;
                        both(&live_after, &d);
                        let mut both_read = live_after;
                        both_read[2] = RETA;
                        both_read[4] = RETA;
                        both(&both_read, &d);
                        // Another path joins at the test with a different A (the length,
                        // when it is above `over`).
                        for over in [10, 1000] {
                            let joined = [
                                (LD | W | LEN, 0, 0, 0),
                                (JMP | JGT | K, 1, 0, over),
                                (LD | size | ABS, 0, 0, 6),
                                (JMP | cond | K, jt, jf, k),
                                (RET | K, 0, 0, 10),
                                (RET | K, 0, 0, 11),
                                (RET | K, 0, 0, 12),
                            ];
                            both(&joined, &d);
                            let p = prog(&joined);
                            assert!(!wire_order_loads(&p, &a_live(&p))[2]);
                        }
                        // Cut frames: the load's bounds check still returns 0.
                        both(&dead, &d[..7]);
                    }
                }
            }
        }
        assert!(wire_forms >= 60, "{wire_forms} wire-order translations");
    }

    #[test]
    fn every_metadata_field() {
        let m = Meta {
            protocol: 0x8100,
            pkttype: 3,
            ifindex: 4,
            mark: 0xffff_ffff,
            rxhash: 0x8765_4321,
            vlan_tag: 0x2064,
            vlan_tag_present: 1,
            vlan_tpid: 0x88a8,
        };
        for a in Ancillary::ALL {
            for size in [W, H, B] {
                let p = [
                    (LDX | IMM, 0, 0, 0x5a5a_5a5a),
                    (LD | size | ABS, 0, 0, SKF_AD_OFF + a.offset()),
                    RETA,
                ];
                let r = both_meta(&p, &[], 0, &m);
                let want = match a {
                    Ancillary::AluXorX => 0x5a5a_5a5a,
                    _ => m.get(a),
                };
                assert_eq!(r, want, "{}", a.name());
                let t = translate(&prog(&p)).unwrap();
                assert!(t.uses(a));
                assert_eq!(t.uses_metadata(), a != Ancillary::AluXorX);
            }
        }
        assert_eq!(Meta::default().get(Ancillary::HaType), 1);
    }

    #[test]
    fn longest_programs_translate_or_fail_cleanly() {
        // 4096 plain instructions fit easily.
        let mut p = vec![(LD | IMM, 0, 0, 1); 4095];
        p.push(RETA);
        assert!(translate(&prog(&p)).is_ok());
        // The worst expansion (MSH at u32::MAX: lddw + 6) just fits 32767 slots, as neither A
        // nor X needs resetting: 2 + 4095 * 8 + 2 + 2 = 32766 slots.
        let mut p = vec![(LDX | B | MSH, 0, 0, u32::MAX); 4095];
        p.push((RET | K, 0, 0, 1));
        assert_eq!(translate(&prog(&p)).unwrap().len(), 32766);
        // A chain of two of them does not fit.
        let p = prog(&p);
        let m = Mode::Classid { classid: 0 };
        assert!(matches!(
            translate_chain(&[(&p, m), (&p, m)]),
            Err(TranslateError::TooLong { insns }) if insns > MAX_EBPF_INSNS
        ));
        // Indirect loads (6 slots each) still fit, including the longest jump.
        for k in [0, 1] {
            let mut p = vec![(JMP | JEQ | K, 1, 0, k), (JMP | JA, 0, 0, 4092)];
            p.extend(vec![(LD | W | IND, 0, 0, 1); 4092]);
            p.push((RET | K, 0, 0, 1));
            p.push(RETA);
            let t = translate(&prog(&p)).unwrap();
            assert!(t.len() > 6 * 4092);
            let f = frame(100);
            assert_eq!(both(&p, &f), 1);
            assert_eq!(both(&p, &f[..4]), k);
        }
    }

    /// Chains of random members (every opcode, ancillary loads, both modes, results that mostly
    /// do not decide) give, from every start, the first member that decides by the reference
    /// interpreter, and rbpf's checking interpreter sees no bad access in the chain.
    #[test]
    fn chains_agree_with_their_members_from_every_start() {
        use crate::cbpf::gen::{
            chain_reference, random_chain_member, random_frame, random_meta, GenOptions,
        };
        let mut decided = [0usize; 2];
        let (mut short, mut fast_runs) = (0, 0);
        for seed in 0..400u64 {
            let n = 1 + (seed as usize % 6);
            let members: Vec<(Program, Mode)> = (0..n as u64)
                .map(|k| {
                    let (insns, mode) = random_chain_member(
                        seed * 8 + k,
                        1 + ((seed + k) as usize * 11) % 40,
                        GenOptions::default(),
                    );
                    (Program::load(insns).unwrap(), mode)
                })
                .collect();
            let refs: Vec<(&Program, Mode)> = members.iter().map(|(p, m)| (p, *m)).collect();
            let interps: Vec<Interpreter> =
                members.iter().map(|(p, _)| Interpreter::new(p)).collect();
            let irefs: Vec<(&Interpreter, Mode)> = interps
                .iter()
                .zip(&members)
                .map(|(i, (_, m))| (i, *m))
                .collect();
            let chain = RbpfInterpreter::chain(&refs).unwrap();
            assert_eq!(chain.translated().chain_len(), Some(n));
            let fast = RbpfInterpreter::chain_fast(&refs).unwrap();
            for fseed in 0..6u64 {
                let f = random_frame(seed * 64 + fseed);
                let meta = random_meta(seed + fseed);
                let wirelen = f.len() as u32 + (fseed as u32 % 3);
                for start in 0..=n + 1 {
                    let want = chain_reference(&irefs, &f, wirelen, &meta, start);
                    let got = chain
                        .try_run_from(&f, wirelen, &meta, start as u32)
                        .unwrap_or_else(|e| panic!("seed {seed} start {start}: {e}"));
                    assert_eq!(
                        chain_result(got, n),
                        want,
                        "seed {seed} frame {fseed} start {start}"
                    );
                    decided[usize::from(want.is_some())] += 1;
                    let Some(fast) = &fast else { continue };
                    let got = fast
                        .try_run_from(&f, wirelen, &meta, start as u32)
                        .unwrap_or_else(|e| panic!("fast, seed {seed} start {start}: {e}"));
                    if got == CHAIN_SHORT {
                        assert!(f.len() < FAST_CHAIN_LEN as usize);
                        short += 1;
                    } else {
                        assert_eq!(
                            chain_result(got, n),
                            want,
                            "fast, seed {seed} start {start}"
                        );
                        fast_runs += 1;
                    }
                }
            }
        }
        // Both outcomes are common: the chains run past members and also decide.
        assert!(
            decided[0] * 5 > decided[1] && decided[1] * 5 > decided[0],
            "{decided:?}"
        );
        // Fast chains ran, and refused short frames.
        assert!(
            fast_runs > 1000 && short > 100,
            "{fast_runs} fast runs, {short} short"
        );
    }

    #[test]
    fn chain_results_name_the_deciding_member() {
        let p = |k: u32| Program::from_fields(&[(RET | K, 0, 0, k)]).unwrap();
        let (zero, one, unspec, shot) = (p(0), p(1), p(u32::MAX), p(2));
        let cid = Mode::Classid { classid: 5 };
        let da = Mode::DirectAction { classid: 5 };
        let chain = |m: &[(&Program, Mode)]| RbpfInterpreter::chain(m).unwrap();
        let c = chain(&[(&zero, cid), (&unspec, da), (&shot, da), (&one, cid)]);
        let run = |c: &RbpfInterpreter, start| c.try_run_from(&[], 0, &Meta::ZERO, start).unwrap();
        assert_eq!(run(&c, 0), 2 << 32 | 2);
        assert_eq!(run(&c, 3), 3 << 32 | 1);
        assert_eq!(run(&c, 4), 4 << 32);
        assert_eq!(run(&c, 99), 4 << 32);
        assert_eq!(chain_result(run(&c, 0), 4), Some((2, 2)));
        assert_eq!(chain_result(4 << 32, 4), None);
        // Classid mode: -1 decides; direct action: 0 (ok) decides.
        let c = chain(&[(&zero, cid), (&unspec, cid)]);
        assert_eq!(run(&c, 0), 1 << 32 | u64::from(u32::MAX));
        let c = chain(&[(&zero, da)]);
        assert_eq!(run(&c, 0), 0);
        assert!(RbpfInterpreter::chain(&[]).is_err());
    }

    #[test]
    fn registers_read_before_written_are_found_on_every_path() {
        let f = |insns: &[(u16, u8, u8, u32)]| reads_before_write(&prog(insns));
        assert_eq!(f(&[(LD | H | ABS, 0, 0, 12), RETA]), (false, false));
        assert_eq!(f(&[RETA]), (true, false));
        assert_eq!(f(&[(RET | K, 0, 0, 1)]), (false, false));
        assert_eq!(f(&[(MISC | TXA, 0, 0, 0), RETA]), (false, true));
        assert_eq!(
            f(&[(LDX | B | MSH, 0, 0, 14), (LD | H | IND, 0, 0, 2), RETA]),
            (false, false)
        );
        assert_eq!(f(&[(LD | H | IND, 0, 0, 2), RETA]), (false, true));
        // A written on one branch only.
        assert_eq!(
            f(&[(JMP | JA, 0, 0, 1), (LD | IMM, 0, 0, 1), RETA]),
            (true, false)
        );
        assert_eq!(
            f(&[
                (LD | H | ABS, 0, 0, 12),
                (JMP | JEQ | K, 0, 1, 5),
                (LDX | IMM, 0, 0, 1),
                (ALU | ADD | X, 0, 0, 0),
                RETA
            ]),
            (false, true)
        );
        assert_eq!(
            f(&[(ST, 0, 0, 0), (LD | MEM, 0, 0, 0), RETA]),
            (true, false)
        );
    }
}
