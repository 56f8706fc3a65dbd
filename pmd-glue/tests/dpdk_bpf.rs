//! DPDK's classic-BPF path (`rte_bpf_convert` -> `rte_bpf_load`, then DPDK's eBPF interpreter
//! and its JIT), as repaired by `pmd_glue::dpdk_bpf`, against the appliance's reference
//! interpreter, on real mbufs, over the same pcap-filter expressions and frames as
//! `cbpf_vs_libpcap.rs`; plus the corners each repair is for (huge load offsets, indices in X
//! while A holds something else, `jset` with small constants). One EAL per test binary.
//!
//! The one semantic difference left on these programs (see `pmd_glue::dpdk_bpf`) is a shift by
//! a register amount X >= 32: libpcap and the interpreter give 0, DPDK shifts by X & 31. Pairs
//! of program and frame that reach such a shift are found by running an instrumented copy of
//! the program (it returns a marker at that shift); they are left out of the comparison with
//! the interpreter and compared instead with a copy that masks the count the way DPDK does.
mod common;

use common::cbpf_corpus::{self as corpus, Compiled};
use pipelines::cbpf::insn::op::*;
use pipelines::cbpf::{Insn, Interpreter, Meta, Program};
use pmd_glue::dpdk_bpf::DpdkBpf;
use pmd_glue::{Eal, Mbuf, Mempool, SocketId};
use std::sync::OnceLock;

fn eal() -> &'static Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        let prefix = format!("pmdglue-bpf-{}", std::process::id());
        Eal::init(
            "pmd-glue-dpdk-bpf-test",
            &[
                "-l",
                "0",
                "--no-huge",
                "-m",
                "256",
                "--no-pci",
                "--no-shconf",
                "--file-prefix",
                &prefix,
                "--log-level=error",
            ],
        )
        .expect("EAL init")
    })
}

/// A pool whose buffers hold a 9014-byte jumbo frame in one segment.
fn pool(name: &str) -> Mempool {
    eal();
    Mempool::pktmbuf(name, 255, 0, 9216 + 128, SocketId::ANY).expect("mempool")
}

fn mbuf(pool: &Mempool, data: &[u8]) -> Mbuf {
    let mut m = pool.alloc().expect("an mbuf");
    assert!(m.fill(data), "{} bytes fit one mbuf", data.len());
    m
}

/// A cBPF instruction as (code, jt, jf, k).
type Raw = (u16, u8, u8, u32);

fn load(insns: &[Raw]) -> Program {
    Program::from_fields(insns).unwrap()
}

fn reference(prog: &Program, data: &[u8]) -> u64 {
    u64::from(Interpreter::new(prog).run(data, data.len() as u32, &Meta::default()))
}

// ---- Instrumented copies of a program around its shifts by X.

fn is_shift_x(i: &Insn) -> bool {
    i.code == ALU | LSH | X || i.code == ALU | RSH | X
}

/// `insns` with the instruction at `at` replaced by `block`; jumps to `at` land on the block's
/// first instruction, jumps past it are lengthened.
fn replace(insns: &[Insn], at: usize, block: &[Insn]) -> Vec<Insn> {
    let grow = block.len() - 1;
    let mut out: Vec<Insn> = insns[..at].to_vec();
    for (pc, i) in out.iter_mut().enumerate() {
        let retarget = |off: u32| -> u32 {
            let target = pc + 1 + off as usize;
            off + if target > at { grow as u32 } else { 0 }
        };
        if i.code == JMP | JA {
            i.k = retarget(i.k);
        } else if class(i.code) == JMP {
            i.jt = u8::try_from(retarget(u32::from(i.jt))).expect("jt fits");
            i.jf = u8::try_from(retarget(u32::from(i.jf))).expect("jf fits");
        }
    }
    out.extend_from_slice(block);
    out.extend_from_slice(&insns[at + 1..]);
    out
}

/// Two scratch slots the program does not use.
fn free_slots(insns: &[Insn]) -> (u32, u32) {
    let used = |s: u32| {
        insns
            .iter()
            .any(|i| [ST, STX, LD | MEM, LDX | MEM].contains(&i.code) && i.k == s)
    };
    let mut free = (0..16).rev().filter(|&s| !used(s));
    (
        free.next().expect("a free slot"),
        free.next().expect("two free slots"),
    )
}

const MARKER: u32 = 0xdead_beef;

/// Rewrites every shift by X with `block(shift, slot_a, slot_b)`.
fn around_shifts(prog: &Program, block: impl Fn(Insn, u32, u32) -> Vec<Insn>) -> Program {
    let mut insns = prog.insns().to_vec();
    let (a, b) = free_slots(&insns);
    let shifts: Vec<usize> = (0..insns.len())
        .filter(|&i| is_shift_x(&insns[i]))
        .collect();
    for &at in shifts.iter().rev() {
        insns = replace(&insns, at, &block(insns[at], a, b));
    }
    Program::load(insns).expect("instrumented program loads")
}

/// Returns [`MARKER`] where the program would shift by X >= 32.
fn marking_big_shifts(prog: &Program) -> Program {
    around_shifts(prog, |shift, a, _| {
        vec![
            Insn::new(ST, 0, 0, a),
            Insn::new(MISC | TXA, 0, 0, 0),
            Insn::new(JMP | JGE | K, 0, 1, 32),
            Insn::new(RET | K, 0, 0, MARKER),
            Insn::new(LD | MEM, 0, 0, a),
            shift,
        ]
    })
}

/// Shifts by X & 31, as DPDK does (X restored afterwards).
fn masking_shifts(prog: &Program) -> Program {
    around_shifts(prog, |shift, a, b| {
        vec![
            Insn::new(STX, 0, 0, b),
            Insn::new(ST, 0, 0, a),
            Insn::new(MISC | TXA, 0, 0, 0),
            Insn::new(ALU | AND | K, 0, 0, 31),
            Insn::new(MISC | TAX, 0, 0, 0),
            Insn::new(LD | MEM, 0, 0, a),
            shift,
            Insn::new(LDX | MEM, 0, 0, b),
        ]
    })
}

// ---- Tests.

#[test]
fn dpdk_interpreter_and_jit_match_the_interpreter_on_pcap_filter_expressions() {
    let pool = pool("bpf_corpus");
    let programs = corpus::compile_all();
    let frames = corpus::frames();
    struct Loaded<'a> {
        c: &'a Compiled,
        dpdk: DpdkBpf,
        interp: Interpreter,
        /// For programs with shifts by X: (marking, masking) interpreters.
        shifts: Option<(Interpreter, Interpreter)>,
    }
    let mut refused = Vec::new();
    let mut loaded = Vec::new();
    for c in &programs {
        match DpdkBpf::from_program(&c.prog) {
            Ok(dpdk) => loaded.push(Loaded {
                c,
                interp: Interpreter::new(&c.prog),
                shifts: c.prog.insns().iter().any(is_shift_x).then(|| {
                    (
                        Interpreter::new(&marking_big_shifts(&c.prog)),
                        Interpreter::new(&masking_shifts(&c.prog)),
                    )
                }),
                dpdk,
            }),
            Err(e) => refused.push(format!("{:?} (optimize {}): {e}", c.expr, c.optimize)),
        }
    }
    assert!(refused.is_empty(), "DPDK refused:\n{}", refused.join("\n"));
    let jit = cfg!(target_arch = "x86_64") || cfg!(target_arch = "aarch64");
    for l in &loaded {
        assert_eq!(l.dpdk.has_jit(), jit, "{:?}: JIT", l.c.expr);
    }

    let meta = Meta::default();
    let (mut compared, mut nonzero, mut big_shift_pairs) = (0usize, 0usize, 0usize);
    let mut mismatches = Vec::new();
    for f in &frames {
        let m = mbuf(&pool, &f.data);
        let len = f.data.len() as u32;
        for l in &loaded {
            let mut want = u64::from(l.interp.run(&f.data, len, &meta));
            let mut against = "interpreter";
            if let Some((marking, masking)) = &l.shifts {
                if marking.run(&f.data, len, &meta) == MARKER {
                    big_shift_pairs += 1;
                    want = u64::from(masking.run(&f.data, len, &meta));
                    against = "interpreter with shift counts masked to 5 bits";
                }
            }
            let interp = l.dpdk.run_interp(&m);
            let jitted = l.dpdk.run_jit(&m);
            compared += 1;
            nonzero += usize::from(want != 0);
            if (interp != want || jitted.is_some_and(|j| j != want)) && mismatches.len() < 20 {
                mismatches.push(format!(
                    "{:?} (optimize {}) over {} ({len} bytes): DPDK interpreter {interp:#x}, \
                     JIT {jitted:x?}, {against} {want:#x}\n{}",
                    l.c.expr,
                    l.c.optimize,
                    f.name,
                    corpus::listing(l.c.prog.insns())
                ));
            }
        }
    }
    eprintln!(
        "DPDK BPF vs interpreter: {} programs ({} expressions, optimiser on and off) x {} frames \
         = {compared} pairs, each run by DPDK's interpreter and {}; {nonzero} non-zero results; \
         {big_shift_pairs} pairs shift by X >= 32 and were compared with masked shifts instead",
        loaded.len(),
        corpus::EXPRESSIONS.len(),
        frames.len(),
        if jit { "its JIT" } else { "no JIT on this CPU" }
    );
    assert!(
        mismatches.is_empty(),
        "DPDK differs:\n{}",
        mismatches.join("\n")
    );
    assert!(
        big_shift_pairs > 0,
        "the corpus exercises shifts by X >= 32"
    );
}

/// `X = x` computed from the frame's first word (0x00010203), so that DPDK's verifier does not
/// know it (it refuses loads from constant indices it sees as negative).
fn set_x(x: u32) -> Vec<Raw> {
    vec![
        (LD | W | ABS, 0, 0, 0),
        (ALU | ADD | K, 0, 0, x.wrapping_sub(0x0001_0203)),
        (MISC | TAX, 0, 0, 0),
    ]
}

#[test]
fn loads_at_huge_offsets_miss_instead_of_reading_out_of_bounds() {
    let pool = pool("bpf_offsets");
    let frame: Vec<u8> = (0..60u8).collect();
    let m = mbuf(&pool, &frame);
    let with_x = |x: u32, load: Raw| {
        let mut p = set_x(x);
        p.push(load);
        p
    };
    let cases: &[(&str, Vec<Raw>)] = &[
        // X + k at 2^32 - 1, - 3, - 2: DPDK's offset is (uint32_t)(X + k) and
        // rte_pktmbuf_read's own bound, off + len, wraps too.
        (
            "ldb [x + 0], X = 2^32 - 1",
            with_x(u32::MAX, (LD | B | IND, 0, 0, 0)),
        ),
        (
            "ld [x + 1], X = 2^32 - 4",
            with_x(u32::MAX - 3, (LD | W | IND, 0, 0, 1)),
        ),
        (
            "ldh [x + 2^32 - 2], X = 0",
            with_x(0, (LD | H | IND, 0, 0, u32::MAX - 1)),
        ),
        // X + k past 2^32: wrapped, DPDK's interpreter would read byte 13.
        (
            "ldb [x + 14], X = 2^32 - 1",
            with_x(u32::MAX, (LD | B | IND, 0, 0, 14)),
        ),
        // The JIT sign-extends k >= 2^31: these would read before the buffer.
        ("ld [2^31]", vec![(LD | W | ABS, 0, 0, 1 << 31)]),
        ("ldb [0xffdfffff]", vec![(LD | B | ABS, 0, 0, 0xffdf_ffff)]),
        (
            "ldb [x + 2^32 - 16], X = 20",
            with_x(20, (LD | B | IND, 0, 0, u32::MAX - 15)),
        ),
        (
            "ldb [x + 2^31 - 1], X = 1",
            with_x(1, (LD | B | IND, 0, 0, (1 << 31) - 1)),
        ),
        (
            "ldb [x + 0], X = 2^31",
            with_x(1 << 31, (LD | B | IND, 0, 0, 0)),
        ),
        (
            "msh [2^31 + 5]",
            vec![(LDX | B | MSH, 0, 0, (1 << 31) + 5), (MISC | TXA, 0, 0, 0)],
        ),
    ];
    for (what, body) in cases {
        let mut insns = body.clone();
        insns.push((RET | K, 0, 0, 7));
        let prog = load(&insns);
        let dpdk = DpdkBpf::from_program(&prog).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(reference(&prog, &frame), 0, "{what}: interpreter");
        assert_eq!(dpdk.run_interp(&m), 0, "{what}: DPDK interpreter");
        assert_eq!(dpdk.run_jit(&m).unwrap_or(0), 0, "{what}: DPDK JIT");
    }
    // Indirect loads inside the frame still read, up to its last byte, whatever A holds.
    for (x, k, size, want) in [
        (50, 6, W, 0x38393a3bu64),
        (0, 59, B, 59),
        (58, 0, H, 0x3a3b),
        (40, 0, B, 40),
    ] {
        let mut insns = set_x(x);
        insns.extend([
            (LD | IMM, 0, 0, 1000),
            (LD | size | IND, 0, 0, k),
            (RET | A, 0, 0, 0),
        ]);
        let prog = load(&insns);
        let dpdk = DpdkBpf::from_program(&prog).unwrap();
        assert_eq!(reference(&prog, &frame), want, "[x + {k}], X = {x}");
        assert_eq!(
            dpdk.run_interp(&m),
            want,
            "[x + {k}], X = {x}: DPDK interpreter"
        );
        assert_eq!(
            dpdk.run_jit(&m).unwrap_or(want),
            want,
            "[x + {k}], X = {x}: DPDK JIT"
        );
    }
}

#[test]
fn jset_with_small_immediates_runs_in_the_jit() {
    let pool = pool("bpf_jset");
    for first in [0x00u8, 0x01, 0x80] {
        let mut frame = vec![0u8; 60];
        frame[0] = first;
        let m = mbuf(&pool, &frame);
        for k in [1, 0x7f, 0x80, 0x1fff] {
            let prog = load(&[
                (LD | B | ABS, 0, 0, 0),
                (JMP | JSET | K, 0, 1, k),
                (RET | K, 0, 0, 1),
                (RET | K, 0, 0, 2),
            ]);
            let dpdk = DpdkBpf::from_program(&prog).unwrap();
            let want = reference(&prog, &frame);
            assert_eq!(dpdk.run_interp(&m), want, "jset #{k:#x} on {first:#x}");
            assert_eq!(
                dpdk.run_jit(&m).unwrap_or(want),
                want,
                "jset #{k:#x} on {first:#x}"
            );
        }
    }
}

#[test]
fn shifts_by_x_of_32_or_more_use_the_count_mod_32() {
    let pool = pool("bpf_shifts");
    let m = mbuf(&pool, &[0u8; 60]);
    for (shift, x, dpdk_result) in [
        (LSH, 33, 14),
        (RSH, 33, 3),
        (LSH, 32, 7),
        (LSH, 31, 1 << 31),
        (RSH, 0x7fff_ffe2, 1),
    ] {
        let prog = load(&[
            (LD | IMM, 0, 0, 7),
            (LDX | IMM, 0, 0, x),
            (ALU | shift | X, 0, 0, 0),
            (RET | A, 0, 0, 0),
        ]);
        let dpdk = DpdkBpf::from_program(&prog).unwrap();
        let want_libpcap = if x < 32 { u64::from(7u32 << x) } else { 0 };
        assert_eq!(
            reference(&prog, &[0; 60]),
            want_libpcap,
            "shift {shift:#x} by {x}"
        );
        assert_eq!(dpdk.run_interp(&m), dpdk_result, "shift {shift:#x} by {x}");
        assert_eq!(
            dpdk.run_jit(&m).unwrap_or(dpdk_result),
            dpdk_result,
            "shift {shift:#x} by {x}"
        );
        let masked = masking_shifts(&prog);
        assert_eq!(
            reference(&masked, &[0; 60]),
            dpdk_result,
            "the masked copy models DPDK"
        );
    }
}

#[test]
fn burst_runs_like_single_runs() {
    let pool = pool("bpf_burst");
    let prog = corpus::compile_all()
        .into_iter()
        .find(|c| c.expr == "tcp or udp")
        .unwrap()
        .prog;
    let dpdk = DpdkBpf::from_program(&prog).unwrap();
    let frames = corpus::edge_frames();
    let mbufs: Vec<Mbuf> = frames
        .iter()
        .take(70)
        .map(|f| mbuf(&pool, &f.data))
        .collect();
    let mut out = vec![u64::MAX; 75];
    assert_eq!(dpdk.run_interp_burst(&mbufs, &mut out), 70);
    for (i, m) in mbufs.iter().enumerate() {
        assert_eq!(out[i], dpdk.run_interp(m), "{}", frames[i].name);
        assert_eq!(
            out[i],
            reference(&prog, &frames[i].data),
            "{}",
            frames[i].name
        );
    }
    assert_eq!(out[70..], [u64::MAX; 5], "nothing written past the mbufs");
    assert!(out.iter().any(|&r| r != 0) && out[..70].contains(&0));
}

#[test]
fn ancillary_loads_are_refused() {
    eal();
    let prog = load(&[(LD | B | ABS, 0, 0, 0xffff_f000 + 48), (RET | A, 0, 0, 0)]);
    let e = DpdkBpf::from_program(&prog).unwrap_err();
    assert_eq!(e.errno, 95, "{e}");
    assert!(e.op.contains("vlan_tag_present"), "{e}");
}
