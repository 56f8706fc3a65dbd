//! DPDK's own classic-BPF path: a loaded [`Program`] goes through `rte_bpf_convert` (DPDK's
//! cBPF -> eBPF converter, written for libpcap output), `rte_bpf_load` (DPDK's verifier, which
//! also JIT-compiles on x86-64) and then runs on an mbuf either in DPDK's eBPF interpreter
//! (`rte_bpf_exec`) or as the JIT-compiled function (`rte_bpf_get_jit`). The program's context
//! is the mbuf itself (`RTE_BPF_ARG_PTR_MBUF`): packet loads go through `rte_pktmbuf_read`,
//! `len` reads `pkt_len`.
//!
//! # Repairs of the converted program
//!
//! DPDK 22.11 (the packaged 22.11.11) gets valid cBPF programs wrong, and some of them read
//! memory outside the mbuf. Each item below was observed on this machine (the tests in
//! `tests/dpdk_bpf.rs` cover the repaired behaviour). Between conversion and loading the eBPF
//! program is checked (only instructions the converter emits, stores only to the stack: the
//! program can only read the mbuf; registers r2 and r9 unused) and rewritten:
//!
//! - **Indirect loads index by A, not X, for bytes and words.** The converter copies the
//!   source register of `ld [x + k]` from `BPF_SRC(code)`, which is `BPF_X` only for
//!   half-word loads (`BPF_H` and `BPF_X` are both 0x08); `ldb [x + k]` and `ld [x + k]` become
//!   eBPF loads at `r0 + k`, A's register. Linux's converter always uses X. Every indirect load
//!   is rewritten to index by X.
//! - **Offsets near 2^32 read outside the buffer.** The interpreter computes an indirect
//!   load's offset as `(uint32_t)(src + k)`, wrapping where libpcap misses (`ldh [x + 14]` with
//!   X = 2^32 - 14 reads bytes 0-1), and when the offset is within `size` bytes of 2^32 the
//!   `off + len <= data_len` test of `rte_pktmbuf_read` wraps too: a byte load at offset
//!   2^32 - 1 crashed both the interpreter and the JIT. The JIT sign-extends k, so `ldh [x +
//!   2^31]` with X = 0 read 2 GiB before the buffer (crash). The rewrite computes X + k + size
//!   in 64 bits, ends the program with 0 when that passes 2^32 - 1 (no mbuf is that long, and
//!   libpcap misses too), and otherwise loads from a register holding X + k with a zero
//!   immediate, an offset both engines then handle exactly. Absolute loads at k >= 2^31, which
//!   DPDK's verifier refuses ("invalid imm field"), become such indexed loads as well.
//! - **`jset` with a small constant crashes the JIT.** For `jset #k` with 0 <= k <= 127 the
//!   x86 JIT emits `test $k, %reg` (opcode F7 /0, which always takes a 4-byte immediate) with a
//!   1-byte immediate, so the CPU swallows the next three bytes of code: `not ether multicast`
//!   crashed. The rewrite moves k to a register first (`test %reg, %reg` is encoded
//!   correctly).
//! - **Shifts by X.** The converter maps `lsh x` / `rsh x` to a 32-bit eBPF shift, which the
//!   interpreter evaluates as C `uint32_t << X` (undefined for X >= 32; x86 masks the count)
//!   and the JIT as `shl/shr %cl` (count masked to 5 bits). The rewrite masks X explicitly
//!   (`X & 31`), so both engines keep the result they give in practice, now defined.
//!
//! A guard adds eight instructions per indirect load; a miss jumps to one `r0 = 0; exit` at the
//! end of the program.
//!
//! # Where DPDK's semantics still differ from libpcap's
//!
//! (libpcap's `bpf_filter` is what [`pipelines::cbpf::Interpreter`] implements.)
//!
//! - **Shift by X >= 32**: libpcap gives 0; DPDK gives `A << (X & 31)` / `A >> (X & 31)`, like
//!   Linux. Only shifts by a *register* amount are affected (pcap-filter arithmetic such as
//!   `1 << (ip[9] + 20)`), and only on frames that reach them with X >= 32.
//! - **Frames in several segments**: DPDK's loads read across the whole mbuf chain (and `len`
//!   is `pkt_len`); the appliance's engines read the first segment only (with `pkt_len` as the
//!   wire length), so a load past the first segment misses there and hits here. Identical on
//!   single-segment mbufs (the only ones tested).
//! - **Ancillary loads** (`SKF_AD_*`: protocol, VLAN tag, ...): DPDK's converter supports none;
//!   [`DpdkBpf::from_program`] refuses such programs (`ENOTSUP`).
//! - **Refusals**: DPDK's verifier tracks 32-bit values as signed and refuses an indirect load
//!   whose index it knows to be at least 2^31 (`ldx #0xffffffff; ldb [x + 0]`: "mbuf boundary
//!   violation"); libpcap runs such programs (the load misses). Indices computed from packet
//!   bytes, as in every pcap-filter program, are unknown to it and accepted.
//!
//! Everything else (loads that miss, division or modulo by X == 0, unsigned jumps with
//! `k >= 2^31`, `len`, scratch memory) gives libpcap's result; the result is the cBPF `u32`
//! zero-extended to `u64`.
use crate::error::DpdkError;
use crate::live::Live;
use crate::mbuf::{Mbuf, BURST_SIZE};
use crate::{eal, sys};
use pipelines::cbpf::{Ancillary, Program};
use std::ffi::c_void;
use std::fmt;
use std::ptr::NonNull;

const EINVAL: i32 = 22;
const E2BIG: i32 = 7;
const ENOTSUP: i32 = 95;

// eBPF opcode fields (DPDK's bpf_def.h), as the instruction's u8.
const LD: u8 = sys::BPF_LD as u8;
const LDX: u8 = sys::BPF_LDX as u8;
const STX: u8 = sys::BPF_STX as u8;
const ALU: u8 = sys::BPF_ALU as u8;
const JMP: u8 = sys::BPF_JMP as u8;
const ALU64: u8 = sys::EBPF_ALU64 as u8;
const W: u8 = sys::BPF_W as u8;
const H: u8 = sys::BPF_H as u8;
const B: u8 = sys::BPF_B as u8;
const ABS: u8 = sys::BPF_ABS as u8;
const IND: u8 = sys::BPF_IND as u8;
const MEM: u8 = sys::BPF_MEM as u8;
const IMM: u8 = sys::BPF_IMM as u8;
const DW: u8 = sys::EBPF_DW as u8;
const K: u8 = sys::BPF_K as u8;
const X: u8 = sys::BPF_X as u8;
const ADD: u8 = sys::BPF_ADD as u8;
const AND: u8 = sys::BPF_AND as u8;
const LSH: u8 = sys::BPF_LSH as u8;
const RSH: u8 = sys::BPF_RSH as u8;
const NEG: u8 = sys::BPF_NEG as u8;
const XOR: u8 = sys::BPF_XOR as u8;
const MOV: u8 = sys::EBPF_MOV as u8;
const JA: u8 = sys::BPF_JA as u8;
const JEQ: u8 = sys::BPF_JEQ as u8;
const JGT: u8 = sys::BPF_JGT as u8;
const JGE: u8 = sys::BPF_JGE as u8;
const JSET: u8 = sys::BPF_JSET as u8;
const JNE: u8 = sys::EBPF_JNE as u8;
const EXIT: u8 = sys::EBPF_EXIT as u8;

const R0: u8 = sys::EBPF_REG_0 as u8;
const R6: u8 = sys::EBPF_REG_6 as u8;
/// cBPF's X in converted programs.
const RX: u8 = sys::EBPF_REG_7 as u8;
/// The registers the guards use; the converter never does (checked).
const RTMP: u8 = sys::EBPF_REG_9 as u8;
const RTMP2: u8 = sys::EBPF_REG_2 as u8;
const R10: u8 = sys::EBPF_REG_10 as u8;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> sys::ebpf_insn {
    let mut i = sys::ebpf_insn {
        code,
        off,
        imm,
        ..Default::default()
    };
    i.set_dst_reg(dst);
    i.set_src_reg(src);
    i
}

/// `dst = v` (zero-extended), as the two-slot 64-bit immediate load.
fn lddw(dst: u8, v: u32) -> [sys::ebpf_insn; 2] {
    [
        insn(LD | IMM | DW, dst, 0, 0, v as i32),
        insn(0, 0, 0, 0, 0),
    ]
}

/// Whether `i` is something `rte_bpf_convert` emits (and so what the guards were written
/// for): 32-bit ALU, 64-bit moves and the prologue's xor, packet loads, stack and context
/// loads, stack stores, jumps and exit; never the guards' registers.
fn converter_emits(i: &sys::ebpf_insn) -> bool {
    // r0 (A), r1 (the context, read once), r6 (the context), r7 (X), r8 (a temporary within
    // one cBPF instruction's expansion), r10 (the stack); r2-r5 and r9 stay free.
    let used = |r: u8| [0, 1, 6, 7, 8, 10].contains(&r);
    if !used(i.dst_reg()) || !used(i.src_reg()) || i.dst_reg() == 1 {
        return false;
    }
    let code = i.code;
    let (class, op, src) = (code & 0x07, code & 0xf0, code & 0x08);
    match class {
        ALU => (op <= XOR && op != NEG) || code == ALU | NEG || op == MOV,
        ALU64 => code == ALU64 | MOV | X || code == ALU64 | XOR | X,
        LD => [W, H, B]
            .iter()
            .any(|&sz| code == LD | ABS | sz || code == LD | IND | sz),
        LDX => code == LDX | MEM | W && (i.src_reg() == R10 || i.src_reg() == R6),
        STX => code == STX | MEM | W && i.dst_reg() == R10,
        // Conditional jumps compare in 64 bits; the converter moves a constant k >= 2^31 to
        // a register first, so an immediate is never negative (never sign-extended).
        JMP => {
            code == JMP | EXIT
                || code == JMP | JA
                || [JEQ, JGT, JGE, JSET, JNE].contains(&op) && (src == X || i.imm >= 0)
        }
        _ => false,
    }
}

/// Checks a converted program and makes the repairs described in the module documentation,
/// retargeting every jump. Guarded loads that miss jump to one `r0 = 0; exit` appended at the
/// end. (With that pair inline after each guard, the JIT crashed on `port 5001` by jumping
/// into the middle of an instruction. The cause was not isolated; the JIT's passes stop when
/// the total code size repeats, which does not prove every jump offset final.)
fn harden(ins: &[sys::ebpf_insn]) -> Result<Vec<sys::ebpf_insn>, String> {
    let n = ins.len();
    let mut out = Vec::with_capacity(n + n / 4 + 8);
    // start[pc]: where instruction pc (with its guard) begins in `out`; start[n]: the miss
    // block.
    let mut start = Vec::with_capacity(n + 1);
    let mut jumps = Vec::new();
    let mut misses = false;
    for (pc, i) in ins.iter().enumerate() {
        start.push(out.len());
        if !converter_emits(i) {
            return Err(format!(
                "eBPF instruction {pc} (code {:#04x}, dst r{}, src r{}) is not one rte_bpf_convert emits",
                i.code,
                i.dst_reg(),
                i.src_reg()
            ));
        }
        let code = i.code;
        let k = i.imm as u32;
        match code & 0x07 {
            LD if code & 0xe0 == ABS && k >= 1 << 31 => {
                // DPDK's verifier refuses an immediate offset >= 2^31 (and the JIT would
                // sign-extend it): load from a register holding k instead. `lddw` rather than
                // `mov32`, so that the verifier, which tracks 32-bit values as signed, does
                // not see a negative offset. (The loader keeps k below 0xffe00000, so
                // k + size cannot wrap.)
                out.extend(lddw(RTMP, k));
                out.push(insn(LD | IND | (code & 0x18), R0, RTMP, 0, 0));
            }
            LD if code & 0xe0 == IND => {
                // r9 = X + k and r2 = r9 + size in 64 bits (k and X zero-extended): a load
                // whose end passes 2^32 - 1 misses (no mbuf is that long); every other one
                // reads at r9 + 0, an offset that is exact for both engines. The converter
                // names A (r0) as the index register of byte and word loads (BPF_SRC of their
                // opcode is 0): cBPF indexes by X.
                let size = match code & 0x18 {
                    B => 1,
                    H => 2,
                    _ => 4,
                };
                out.extend(lddw(RTMP, k));
                out.extend([
                    insn(ALU | MOV | X, RX, RX, 0, 0),
                    insn(ALU64 | ADD | X, RTMP, RX, 0, 0),
                    insn(ALU64 | MOV | X, RTMP2, RTMP, 0, 0),
                    insn(ALU64 | ADD | K, RTMP2, 0, 0, size),
                    insn(ALU64 | RSH | K, RTMP2, 0, 0, 32),
                ]);
                misses = true;
                jumps.push((out.len(), n));
                out.push(insn(JMP | JNE | K, RTMP2, 0, 0, 0));
                out.push(insn(LD | IND | (code & 0x18), R0, RTMP, 0, 0));
            }
            ALU if code == ALU | LSH | X || code == ALU | RSH | X => {
                out.extend([
                    insn(ALU | MOV | X, RTMP, i.src_reg(), 0, 0),
                    insn(ALU | AND | K, RTMP, 0, 0, 31),
                ]);
                let mut shift = *i;
                shift.set_src_reg(RTMP);
                out.push(shift);
            }
            JMP if code != JMP | EXIT => {
                let mut jump = *i;
                if code == JMP | JSET | K && (0..=127).contains(&i.imm) {
                    // DPDK 22.11's x86 JIT encodes `test $imm, %reg` with a one-byte
                    // immediate when imm fits in 8 bits, but that opcode (F7 /0) always takes
                    // four: the next instructions are decoded as the rest of the immediate.
                    // The register form is encoded correctly.
                    out.push(insn(ALU | MOV | K, RTMP, 0, 0, i.imm));
                    jump.code = JMP | JSET | X;
                    jump.set_src_reg(RTMP);
                    jump.imm = 0;
                }
                let target = pc as i64 + 1 + i64::from(i.off);
                if !(0..n as i64).contains(&target) {
                    return Err(format!("eBPF jump at {pc} leaves the program"));
                }
                jumps.push((out.len(), target as usize));
                out.push(jump);
            }
            _ => out.push(*i),
        }
    }
    start.push(out.len());
    if misses {
        out.extend([
            insn(ALU | MOV | K, R0, 0, 0, 0),
            insn(JMP | EXIT, 0, 0, 0, 0),
        ]);
    }
    for (at, target) in jumps {
        let off = start[target] as i64 - (at as i64 + 1);
        out[at].off = i16::try_from(off)
            .map_err(|_| format!("a jump of {off} instructions does not fit eBPF's 16 bits"))?;
    }
    Ok(out)
}

/// Frees `rte_bpf_convert`'s result however `from_program` leaves.
struct ConvertedPrm(NonNull<sys::rte_bpf_prm>);

impl Drop for ConvertedPrm {
    fn drop(&mut self) {
        // SAFETY: rte_bpf_convert allocated the block (header and instructions) with
        // rte_zmalloc; it is freed exactly once, after its last use.
        unsafe { sys::rte_free(self.0.as_ptr().cast()) }
    }
}

/// A classic-BPF program converted, verified and (where DPDK can) JIT-compiled by DPDK's BPF
/// library. Immutable once built; runs from any thread.
pub struct DpdkBpf {
    bpf: NonNull<sys::rte_bpf>,
    jit: Option<unsafe extern "C" fn(*mut c_void) -> u64>,
    ebpf_len: usize,
    _live: Live,
}

// SAFETY: after rte_bpf_load the rte_bpf (instructions, JIT code) is read-only memory
// (DPDK mprotects it); executing it from several threads at once is what DPDK does for
// rx/tx callbacks. The handle owns it exclusively until Drop.
unsafe impl Send for DpdkBpf {}
// SAFETY: see Send; every method through `&self` only reads the loaded program.
unsafe impl Sync for DpdkBpf {}

impl fmt::Debug for DpdkBpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpdkBpf")
            .field("ebpf_len", &self.ebpf_len)
            .field("jit", &self.jit.is_some())
            .finish()
    }
}

impl DpdkBpf {
    /// Converts `prog` with `rte_bpf_convert`, hardens the result (module documentation) and
    /// loads it with `rte_bpf_load`. Needs a running EAL (the converter allocates with
    /// `rte_malloc`). Programs with ancillary loads are refused (`ENOTSUP`): DPDK's converter
    /// supports none.
    pub fn from_program(prog: &Program) -> Result<DpdkBpf, DpdkError> {
        if !eal::is_running() {
            return Err(DpdkError::new(
                "rte_bpf_convert: DPDK's EAL is not running",
                EINVAL,
            ));
        }
        if let Some(a) = Ancillary::ALL.into_iter().find(|&a| prog.uses(a)) {
            return Err(DpdkError::new(
                format!("rte_bpf_convert: ancillary load {:?}", a.name()),
                ENOTSUP,
            ));
        }
        let mut cbpf: Vec<sys::bpf_insn> = prog
            .insns()
            .iter()
            .map(|i| sys::bpf_insn {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let fprog = sys::bpf_program {
            // A loaded program has at most 4096 instructions.
            bf_len: cbpf.len() as u32,
            bf_insns: cbpf.as_mut_ptr(),
        };
        // SAFETY: `fprog` points to `bf_len` valid instructions that outlive the call; the
        // converter only reads them. It returns a new allocation or null (rte_errno set).
        let prm = unsafe { sys::rte_bpf_convert(&fprog) };
        let prm = ConvertedPrm(
            NonNull::new(prm).ok_or_else(|| DpdkError::from_rte_errno("rte_bpf_convert"))?,
        );
        // SAFETY: a non-null result is an initialised rte_bpf_prm whose `ins` points to
        // `nb_ins` instructions in the same allocation, alive until `prm` drops.
        let (converted, prog_arg) = unsafe {
            let p = prm.0.as_ref();
            (
                std::slice::from_raw_parts(p.ins, p.nb_ins as usize).to_vec(),
                p.prog_arg,
            )
        };
        drop(prm);
        let hardened = harden(&converted).map_err(|e| {
            DpdkError::new(format!("hardening rte_bpf_convert's output: {e}"), E2BIG)
        })?;
        let load = sys::rte_bpf_prm {
            ins: hardened.as_ptr(),
            nb_ins: hardened.len() as u32,
            xsym: std::ptr::null(),
            nb_xsym: 0,
            prog_arg,
        };
        // SAFETY: `load` describes `nb_ins` valid instructions and no external symbols;
        // rte_bpf_load copies what it keeps. It returns a new handle or null (rte_errno set).
        let bpf = unsafe { sys::rte_bpf_load(&load) };
        let bpf = NonNull::new(bpf).ok_or_else(|| DpdkError::from_rte_errno("rte_bpf_load"))?;
        let mut jit = sys::rte_bpf_jit::default();
        // SAFETY: `bpf` is a loaded program; `jit` is a writable rte_bpf_jit.
        let rc = unsafe { sys::rte_bpf_get_jit(bpf.as_ptr(), &mut jit) };
        Ok(DpdkBpf {
            bpf,
            jit: if rc == 0 { jit.func } else { None },
            ebpf_len: hardened.len(),
            _live: Live::new(),
        })
    }

    /// Number of eBPF instructions loaded (converted and hardened).
    pub fn ebpf_len(&self) -> usize {
        self.ebpf_len
    }

    /// Whether DPDK JIT-compiled the program (x86-64 and arm64 builds do).
    pub fn has_jit(&self) -> bool {
        self.jit.is_some()
    }

    /// Runs the program over `m` in DPDK's eBPF interpreter; returns its result.
    pub fn run_interp(&self, m: &Mbuf) -> u64 {
        // SAFETY: `bpf` is a verified program whose only memory accesses are its stack, reads
        // of the mbuf's header fields and bounded reads of its data (rte_pktmbuf_read, with
        // offsets below 2^31 after hardening); `m` is a valid mbuf borrowed for the call, so
        // nothing frees or writes it meanwhile.
        unsafe { sys::rte_bpf_exec(self.bpf.as_ptr(), m.as_ptr().cast()) }
    }

    /// Runs the program over `m` as DPDK's JIT-compiled code; `None` without a JIT.
    pub fn run_jit(&self, m: &Mbuf) -> Option<u64> {
        let f = self.jit?;
        // SAFETY: `f` is the native code DPDK generated for this verified, hardened program
        // (same accesses as in `run_interp`); it lives as long as `bpf`, i.e. `self`. It takes
        // the mbuf pointer as its context, valid for the call.
        Some(unsafe { f(m.as_ptr().cast()) })
    }

    /// Runs the program in DPDK's interpreter over each of `mbufs` (`rte_bpf_exec_burst`),
    /// writing the results to `out`; returns how many ran (the shorter of the two lengths).
    pub fn run_interp_burst(&self, mbufs: &[Mbuf], out: &mut [u64]) -> usize {
        let n = mbufs.len().min(out.len());
        for (ms, rs) in mbufs[..n]
            .chunks(BURST_SIZE)
            .zip(out[..n].chunks_mut(BURST_SIZE))
        {
            let mut ctx = [std::ptr::null_mut::<c_void>(); BURST_SIZE];
            for (c, m) in ctx.iter_mut().zip(ms) {
                *c = m.as_ptr().cast();
            }
            // SAFETY: as in `run_interp`, for each of the `ms.len()` mbufs in `ctx`; `rs` has
            // room for as many results.
            unsafe {
                sys::rte_bpf_exec_burst(
                    self.bpf.as_ptr(),
                    ctx.as_mut_ptr(),
                    rs.as_mut_ptr(),
                    ms.len() as u32,
                )
            };
        }
        n
    }
}

impl Drop for DpdkBpf {
    fn drop(&mut self) {
        // SAFETY: `bpf` came from rte_bpf_load and is destroyed exactly once; no borrow of
        // `self` (and so no run) outlives this.
        unsafe { sys::rte_bpf_destroy(self.bpf.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(prog: &[sys::ebpf_insn]) -> String {
        harden(prog).err().expect("must be refused")
    }

    fn regs(i: &sys::ebpf_insn) -> (u8, u8, u8, i16, i32) {
        (i.code, i.dst_reg(), i.src_reg(), i.off, i.imm)
    }

    #[test]
    fn repairs_are_inserted_and_jumps_retargeted() {
        let r7 = sys::EBPF_REG_7 as u8;
        let prog = [
            insn(JMP | JEQ | K, R0, 0, 2, 5),      // 0 -> 3 (the indirect load)
            insn(LD | ABS | H, 0, 0, 0, 12),       // 1
            insn(JMP | JA, 0, 0, 2, 0),            // 2 -> 5 (the shift)
            insn(LD | IND | B, 0, R0, 0, 14),      // 3: as converted, indexed by A
            insn(LD | ABS | W, 0, 0, 0, i32::MIN), // 4: k = 2^31
            insn(ALU | LSH | X, R0, r7, 0, 0),     // 5
            insn(JMP | JSET | K, R0, 0, 0, 0x10),  // 6 -> 7
            insn(JMP | EXIT, 0, 0, 0, 0),          // 7
        ];
        let h = harden(&prog).unwrap();
        let got: Vec<_> = h.iter().map(regs).collect();
        let r9 = RTMP;
        let r2 = RTMP2;
        assert_eq!(
            got,
            [
                (JMP | JEQ | K, R0, 0, 2, 5),
                (LD | ABS | H, 0, 0, 0, 12),
                (JMP | JA, 0, 0, 12, 0),
                // X + k + 1 checked in 64 bits, then a load at r9 + 0
                (LD | IMM | DW, r9, 0, 0, 14),
                (0, 0, 0, 0, 0),
                (ALU | MOV | X, r7, r7, 0, 0),
                (ALU64 | ADD | X, r9, r7, 0, 0),
                (ALU64 | MOV | X, r2, r9, 0, 0),
                (ALU64 | ADD | K, r2, 0, 0, 1),
                (ALU64 | RSH | K, r2, 0, 0, 32),
                (JMP | JNE | K, r2, 0, 10, 0),
                (LD | IND | B, R0, r9, 0, 0),
                // the absolute load at 2^31, from a register
                (LD | IMM | DW, r9, 0, 0, i32::MIN),
                (0, 0, 0, 0, 0),
                (LD | IND | W, R0, r9, 0, 0),
                // the shift by X & 31
                (ALU | MOV | X, r9, r7, 0, 0),
                (ALU | AND | K, r9, 0, 0, 31),
                (ALU | LSH | X, R0, r9, 0, 0),
                // jset with its small constant in a register
                (ALU | MOV | K, r9, 0, 0, 0x10),
                (JMP | JSET | X, R0, r9, 0, 0),
                (JMP | EXIT, 0, 0, 0, 0),
                // the miss
                (ALU | MOV | K, R0, 0, 0, 0),
                (JMP | EXIT, 0, 0, 0, 0),
            ]
        );
    }

    #[test]
    fn unexpected_instructions_are_refused() {
        let exit = insn(JMP | EXIT, 0, 0, 0, 0);
        let store_to_ctx = insn(STX | MEM | W, R6, R0, 0, 0);
        assert!(err(&[store_to_ctx, exit]).contains("not one"));
        for r in [RTMP, RTMP2] {
            let uses = insn(ALU | MOV | K, r, 0, 0, 1);
            assert!(err(&[uses, exit]).contains("not one"));
        }
        let call = insn(JMP | 0x80, 0, 0, 0, 0);
        assert!(err(&[call, exit]).contains("not one"));
        let negative = insn(JMP | JSET | K, R0, 0, 0, -1);
        assert!(err(&[negative, exit]).contains("not one"));
        let out_of_range = insn(JMP | JA, 0, 0, 5, 0);
        assert!(err(&[out_of_range, exit]).contains("leaves"));
    }
}
