//! Deterministic random classic-BPF programs and frames for tests, fuzzing and benchmarks of
//! the engines (in this crate and others). The same seed gives the same output everywhere.
//!
//! Every program [`random_program`] returns passes [`Program::load`](super::Program::load): it
//! tracks, exactly as the loader does, which scratch slots are written on every path and only
//! reads those. Programs mix every opcode: loads of each size at offsets near typical frame ends,
//! far beyond them and at the edges of the eBPF translation's immediates; indirect loads after
//! `X` was set to small, huge or loaded values; `MSH`; scratch memory; `div`/`mod`/shifts by `X`
//! (including `X == 0` and `X >= 32`); `neg`; forward jumps short and long with constants above
//! `i32::MAX`; returns of `A` and `k` in the middle; ancillary loads unless excluded with
//! [`GenOptions::ancillary`] (libpcap's `bpf_filter` does not implement them).
use super::insn::{op, Ancillary, Insn, MAX_INSNS, MEMWORDS, SKF_AD_OFF, SKF_LL_OFF};
use super::interp::{Interpreter, Meta};
use super::Mode;

/// SplitMix64: a tiny, fast, seedable generator (not for cryptography).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n` (`n > 0`; the bias for huge `n` does not matter here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One element of `items` (not empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// What [`random_program_with`] may generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenOptions {
    /// Emit ancillary loads (`ld [SKF_AD_OFF + n]`, including `alu_xor_x`).
    pub ancillary: bool,
}

impl Default for GenOptions {
    fn default() -> GenOptions {
        GenOptions { ancillary: true }
    }
}

/// Constants that probe edges: 0, small counts, shift widths, sign bits, all ones.
const INTERESTING: [u32; 24] = [
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    14,
    31,
    32,
    33,
    63,
    64,
    255,
    256,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0x8000_0001,
    0xffff_fffe,
    u32::MAX,
    1514,
];

/// Frame lengths loads like to end near.
const FRAME_ENDS: [u32; 10] = [14, 18, 20, 34, 42, 54, 60, 64, 128, 1514];

fn constant(r: &mut Rng) -> u32 {
    match r.below(4) {
        0 | 1 => r.pick(&INTERESTING),
        2 => r.below(100) as u32,
        _ => r.next_u32(),
    }
}

/// A packet offset for absolute loads and `MSH`.
fn offset(r: &mut Rng) -> u32 {
    match r.below(16) {
        0..=6 => r.below(80) as u32,
        7..=10 => r.pick(&FRAME_ENDS).saturating_sub(r.below(6) as u32),
        11..=13 => r.below(2000) as u32,
        14 => r.pick(&[
            32_766,
            32_767,
            32_768,
            65_535,
            0x7fff_fffc,
            0x7fff_ffff,
            0x8000_0000,
        ]),
        _ => r.pick(&[SKF_LL_OFF - 4, SKF_LL_OFF - 1, SKF_LL_OFF - 0x1000]),
    }
}

/// The offset `k` of an indirect load.
fn ind_offset(r: &mut Rng) -> u32 {
    match r.below(8) {
        0..=4 => r.below(64) as u32,
        5 => r.pick(&FRAME_ENDS).saturating_sub(r.below(6) as u32),
        _ => constant(r),
    }
}

fn size(r: &mut Rng) -> u16 {
    r.pick(&[op::W, op::H, op::B])
}

/// A jump distance: `0..=max`, mostly short.
fn distance(r: &mut Rng, max: u32) -> u32 {
    if r.chance(3, 4) {
        r.below(u64::from(max.min(8)) + 1) as u32
    } else {
        r.below(u64::from(max) + 1) as u32
    }
}

/// A random program of `len` instructions (clamped to 1..=4096) that the loader accepts.
pub fn random_program(seed: u64, len: usize) -> Vec<Insn> {
    random_program_with(seed, len, GenOptions::default())
}

/// [`random_program`] with options.
pub fn random_program_with(seed: u64, len: usize, opts: GenOptions) -> Vec<Insn> {
    use op::*;
    let mut r = Rng::new(seed);
    let n = len.clamp(1, MAX_INSNS);
    let mut out = Vec::with_capacity(n);
    // Scratch slots written on every path into each instruction, as the loader computes it.
    let mut masks = vec![u16::MAX; n];
    let mut valid: u16 = 0;
    for pc in 0..n {
        valid &= masks[pc];
        // Largest forward distance whose target is still inside the program.
        let room = (n - pc).saturating_sub(2) as u32;
        let i = if pc == n - 1 {
            if r.chance(1, 2) {
                Insn::new(RET | A, 0, 0, 0)
            } else {
                Insn::new(RET | K, 0, 0, constant(&mut r))
            }
        } else {
            let written: Vec<u32> = (0..MEMWORDS).filter(|s| valid & (1 << s) != 0).collect();
            let alu_ops = [ADD, SUB, MUL, DIV, MOD, AND, OR, XOR, LSH, RSH];
            loop {
                let i = match r.below(30) {
                    0..=3 => Insn::new(LD | size(&mut r) | ABS, 0, 0, offset(&mut r)),
                    4 | 5 => Insn::new(LD | size(&mut r) | IND, 0, 0, ind_offset(&mut r)),
                    6 => Insn::new(LDX | B | MSH, 0, 0, offset(&mut r)),
                    7 => Insn::new(LD | IMM, 0, 0, constant(&mut r)),
                    8 | 9 => Insn::new(LDX | IMM, 0, 0, constant(&mut r)),
                    10 => Insn::new(r.pick(&[LD | W | LEN, LDX | W | LEN]), 0, 0, 0),
                    11 | 12 if !written.is_empty() => {
                        Insn::new(r.pick(&[LD | MEM, LDX | MEM]), 0, 0, r.pick(&written))
                    }
                    11..=13 => Insn::new(r.pick(&[ST, STX]), 0, 0, r.below(16) as u32),
                    14 | 15 => {
                        let o = r.pick(&alu_ops);
                        let k = match o {
                            DIV | MOD => constant(&mut r).max(1),
                            LSH | RSH => r.below(32) as u32,
                            _ => constant(&mut r),
                        };
                        Insn::new(ALU | o | K, 0, 0, k)
                    }
                    16..=18 => Insn::new(ALU | r.pick(&alu_ops) | X, 0, 0, 0),
                    19 => Insn::new(ALU | NEG, 0, 0, 0),
                    20 => Insn::new(MISC | r.pick(&[TAX, TXA]), 0, 0, 0),
                    21 => Insn::new(JMP | JA, 0, 0, distance(&mut r, room)),
                    22..=25 => {
                        let cond = r.pick(&[JEQ, JGT, JGE, JSET]);
                        let src = r.pick(&[K, K, X]);
                        let max = room.min(255);
                        let jt = distance(&mut r, max) as u8;
                        let jf = distance(&mut r, max) as u8;
                        Insn::new(JMP | cond | src, jt, jf, constant(&mut r))
                    }
                    26 => Insn::new(r.pick(&[RET | A, RET | K]), 0, 0, constant(&mut r)),
                    _ if opts.ancillary => {
                        let a = r.pick(&Ancillary::ALL);
                        Insn::new(LD | size(&mut r) | ABS, 0, 0, SKF_AD_OFF + a.offset())
                    }
                    _ => continue,
                };
                break i;
            }
        };
        match i.code {
            c if c == ST || c == STX => valid |= 1 << (i.k & 15),
            c if c == JMP | JA => {
                masks[pc + 1 + i.k as usize] &= valid;
                valid = u16::MAX;
            }
            c if op::class(c) == JMP => {
                masks[pc + 1 + usize::from(i.jt)] &= valid;
                masks[pc + 1 + usize::from(i.jf)] &= valid;
                valid = u16::MAX;
            }
            _ => {}
        }
        out.push(i);
    }
    out
}

/// Results a chain member's `ret k` returns in [`random_chain_member`]: many that do not decide
/// (0, unspec and unknown verdicts), every verdict, class ids.
const CHAIN_RESULTS: [u32; 12] = [0, 0, 0, 1, 2, 3, 4, 7, 8, u32::MAX, 0x10010, 65535];

/// A random member of a chain of filters (see [`ebpf::translate_chain`](super::ebpf::translate_chain)):
/// a [`random_program_with`] whose constant returns mostly do not decide, so that later
/// members run too, in classid mode or, one time in three, direct action.
pub fn random_chain_member(seed: u64, len: usize, opts: GenOptions) -> (Vec<Insn>, Mode) {
    let mut r = Rng::new(seed ^ 0xc4a1_0000_0000_0000);
    let mut insns = random_program_with(seed, len, opts);
    for i in &mut insns {
        if i.code == op::RET | op::K {
            i.k = r.pick(&CHAIN_RESULTS);
        }
    }
    let classid = r.pick(&[0, 0x10001, u32::MAX]);
    let mode = if r.chance(1, 3) {
        Mode::DirectAction { classid }
    } else {
        Mode::Classid { classid }
    };
    (insns, mode)
}

/// What a chain must return, by the reference interpreter: the first member from `start` on
/// whose result decides in its mode, with that result; `None` when none does.
pub fn chain_reference(
    members: &[(&Interpreter, Mode)],
    data: &[u8],
    wirelen: u32,
    meta: &Meta,
    start: usize,
) -> Option<(usize, u32)> {
    members
        .iter()
        .enumerate()
        .skip(start)
        .map(|(i, (p, m))| (i, p.run(data, wirelen, meta), *m))
        .find(|&(_, r, m)| m.decides(r))
        .map(|(i, r, _)| (i, r))
}

/// A random frame: a quarter truncated (0..=64 bytes), half of common sizes, a quarter large
/// (up to 1600). Most start with an Ethernet header carrying IPv4 (often with TCP or UDP), IPv6,
/// ARP or a VLAN tag, so that filters for real traffic take their matching paths too.
pub fn random_frame(seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed ^ 0x5eed_f4a3_e000_0000);
    let len = match r.below(4) {
        0 => r.range(0, 64),
        1 | 2 => r.range(54, 200),
        _ => r.range(200, 1600),
    } as usize;
    let mut f: Vec<u8> = (0..len).map(|_| r.next_u64() as u8).collect();
    let mut put = |at: usize, bytes: &[u8]| {
        for (i, b) in bytes.iter().enumerate() {
            if let Some(x) = f.get_mut(at + i) {
                *x = *b;
            }
        }
    };
    let mut l3 = 14;
    if r.chance(1, 8) {
        put(12, &[0x81, 0x00]);
        l3 = 18;
    }
    match r.below(8) {
        0..=4 => {
            put(l3 - 2, &[0x08, 0x00]);
            let ihl = if r.chance(7, 8) {
                5
            } else {
                r.range(5, 15) as u8
            };
            put(l3, &[0x40 | ihl]);
            put(l3 + 9, &[r.pick(&[6, 6, 17, 17, 1, 47])]);
            if r.chance(1, 2) {
                put(l3 + 6, &[0, 0]); // not a fragment
            }
            let l4 = l3 + 4 * usize::from(ihl);
            put(l4 + 2, &r.pick(&[[1u8, 187], [0, 80], [0, 53], [0, 22]]));
        }
        5 => {
            put(l3 - 2, &[0x86, 0xdd]);
            put(l3, &[0x60]);
            put(l3 + 6, &[r.pick(&[6, 17, 58, 0, 44])]);
        }
        6 => put(l3 - 2, &[0x08, 0x06]),
        _ => {}
    }
    f
}

/// Random packet metadata, edge values included.
pub fn random_meta(seed: u64) -> Meta {
    let mut r = Rng::new(seed ^ 0x3e7a_0000_0000_0001);
    Meta {
        protocol: r.pick(&[0x0800, 0x86dd, 0x8100, 0x0806, 0]),
        pkttype: r.below(4) as u32,
        ifindex: r.range(1, 8) as u32,
        mark: constant(&mut r),
        rxhash: constant(&mut r),
        vlan_tag: r.below(0x10000) as u32,
        vlan_tag_present: r.below(2) as u32,
        vlan_tpid: r.pick(&[0, 0x8100, 0x88a8]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbpf::{Interpreter, Program, RbpfInterpreter};
    use proptest::prelude::*;

    #[test]
    fn programs_load_and_are_deterministic() {
        let mut codes = std::collections::HashSet::new();
        for seed in 0..5000u64 {
            let len = 1 + (seed as usize * 7) % 200;
            let p = random_program(seed, len);
            assert_eq!(p.len(), len);
            assert_eq!(p, random_program(seed, len));
            codes.extend(p.iter().map(|i| i.code));
            if let Err(e) = Program::load(p.clone()) {
                panic!("seed {seed}: {e}\n{p:?}");
            }
            let q = random_program_with(seed, len, GenOptions { ancillary: false });
            let q = Program::load(q).unwrap();
            assert!(Ancillary::ALL.iter().all(|&a| !q.uses(a)));
        }
        // Every opcode the loader allows shows up.
        for c in 0..=u16::MAX {
            if crate::cbpf::check::code_allowed(c) {
                assert!(codes.contains(&c), "opcode {c:#06x} never generated");
            }
        }
        assert_eq!(random_program(1, 0).len(), 1);
        assert_eq!(random_program(1, 10_000).len(), 4096);
        assert!(Program::load(random_program(7, 4096)).is_ok());
        assert_eq!(random_frame(3), random_frame(3));
        assert_eq!(random_meta(3), random_meta(3));
        assert!((0..200).any(|s| random_frame(s).len() <= 64));
    }

    fn check_agree(seed: u64, len: usize, frames: u64) {
        let insns = random_program(seed, len);
        let p = Program::load(insns.clone()).unwrap();
        let reference = Interpreter::new(&p);
        let rbpf = RbpfInterpreter::new(&p).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        for fs in 0..frames {
            let f = random_frame(seed.wrapping_mul(31).wrapping_add(fs));
            let meta = random_meta(seed ^ fs);
            for (data, wirelen) in [
                (&f[..], f.len() as u32),
                (&f[..f.len() / 2], f.len() as u32),
            ] {
                let want = reference.run(data, wirelen, &meta);
                let got = rbpf
                    .try_run(data, wirelen, &meta)
                    .unwrap_or_else(|e| panic!("seed {seed} len {len}: rbpf refused: {e}"));
                assert_eq!(got, want, "seed {seed} len {len} frame {fs}: {insns:?}");
            }
        }
    }

    /// The reference interpreter and rbpf's interpreter over the translation agree on thousands
    /// of random programs and frames, and rbpf never sees an out-of-bounds access.
    #[test]
    fn rbpf_interpreter_agrees_with_the_reference() {
        for seed in 0..3000u64 {
            check_agree(seed, 1 + (seed as usize * 13) % 96, 6);
        }
        for seed in 0..20u64 {
            check_agree(1_000_000 + seed, 4096, 2);
        }
    }

    proptest! {
        #[test]
        fn rbpf_interpreter_agrees_on_any_seed(seed in any::<u64>(), len in 1usize..300) {
            check_agree(seed, len, 4);
        }
    }
}
