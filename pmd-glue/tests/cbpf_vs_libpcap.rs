//! Differential test of the appliance's classic-BPF engines against libpcap's own `bpf_filter`:
//! every pcap-filter expression of the corpus, compiled by libpcap with and without its
//! optimiser and loaded by the appliance's loader (Linux's rules), must give the same `u32`
//! result as `bpf_filter` on every frame of the corpus (the appliance generator's traffic plus
//! hand-made edge frames).
mod common;

use common::cbpf_corpus::{self as corpus, Compiled, Frame};
use pipelines::cbpf::{Engine, Interpreter, Meta, Program};
use pmd_glue::pcap;
use std::collections::BTreeMap;

/// Every engine under test for one program.
fn engines(prog: &Program) -> Vec<Box<dyn Engine>> {
    let mut engines: Vec<Box<dyn Engine>> = vec![
        Box::new(Interpreter::new(prog)),
        Box::new(pipelines::cbpf::RbpfInterpreter::new(prog).expect("translation")),
    ];
    // Every program of the corpus fits rbpf's JIT page; one that did not would fall back to
    // the interpreter in the appliance, and is a test failure here so the corpus keeps
    // covering the JIT.
    engines.push(Box::new(
        pmd_glue::bpf_jit::RbpfJit::new(prog).expect("rbpf JIT takes the program"),
    ));
    engines
}

#[derive(Default)]
struct Coverage {
    matched: usize,
    missed: usize,
}

#[test]
fn engines_match_libpcap_on_pcap_filter_expressions() {
    let programs = corpus::compile_all();
    let frames = corpus::frames();
    let meta = Meta::default();
    let mut mismatches = Vec::new();
    let mut coverage: BTreeMap<&str, Coverage> = BTreeMap::new();
    let mut comparisons = 0usize;
    let mut nonzero = 0usize;
    let mut engine_names = Vec::new();
    for Compiled {
        expr,
        optimize,
        prog,
    } in &programs
    {
        let engines = engines(prog);
        if engine_names.is_empty() {
            engine_names = engines.iter().map(|e| e.name()).collect();
        }
        let cov = coverage.entry(expr).or_default();
        for Frame {
            name,
            data,
            wirelen,
        } in &frames
        {
            let want = pcap::filter_loaded(prog, data, *wirelen);
            if want != 0 {
                nonzero += 1;
                cov.matched += 1;
            } else {
                cov.missed += 1;
            }
            for e in &engines {
                comparisons += 1;
                let got = e.run(data, *wirelen, &meta);
                if got != want && mismatches.len() < 20 {
                    mismatches.push(format!(
                        "{} on {expr:?} (optimize {optimize}) over {name} ({} of {wirelen} bytes): \
                         {got:#x}, libpcap {want:#x}\n{}",
                        e.name(),
                        data.len(),
                        corpus::listing(prog.insns())
                    ));
                }
            }
        }
    }
    let pairs = programs.len() * frames.len();
    eprintln!(
        "cbpf vs libpcap: {} expressions x 2 optimiser settings = {} programs, {} frames: \
         {pairs} program x frame pairs, {comparisons} engine results compared ({}); \
         libpcap matched {nonzero} pairs ({:.1}%)",
        corpus::EXPRESSIONS.len(),
        programs.len(),
        frames.len(),
        engine_names.join(", "),
        100.0 * nonzero as f64 / pairs as f64
    );
    for (e, c) in &coverage {
        eprintln!("  {:>6} matched {:>6} missed  {e}", c.matched, c.missed);
    }
    assert!(
        mismatches.is_empty(),
        "engines differ from libpcap:\n{}",
        mismatches.join("\n")
    );
    // No expression may be trivially constant over the corpus.
    let constant: Vec<String> = coverage
        .iter()
        .filter(|(_, c)| c.matched == 0 || c.missed == 0)
        .map(|(e, c)| format!("{e:?}: {} matches, {} misses", c.matched, c.missed))
        .collect();
    assert!(
        constant.is_empty(),
        "expressions constant over the corpus (add frames):\n{}",
        constant.join("\n")
    );
}

#[test]
fn corpus_is_varied() {
    assert!(
        corpus::EXPRESSIONS.len() >= 110,
        "{}",
        corpus::EXPRESSIONS.len()
    );
    let mut seen = std::collections::HashSet::new();
    for e in corpus::EXPRESSIONS {
        assert!(seen.insert(e), "{e:?} is listed twice");
    }
}

/// libpcap implements `protochain` with a backward jump (a loop over the IPv6
/// extension-header chain). Linux's classic checker allows forward jumps only, so the loader
/// rejects these programs, naming the jump; libpcap itself runs them.
#[test]
fn protochain_programs_are_rejected_for_their_backward_jump() {
    for &expr in corpus::BACKWARD_JUMP_EXPRESSIONS {
        for optimize in [true, false] {
            let insns = pcap::compile(expr, corpus::SNAPLEN, optimize).unwrap();
            let backward = insns
                .iter()
                .position(|i| i.code == 0x05 && (i.k as i32) < 0)
                .unwrap_or_else(|| {
                    panic!("{expr:?}: no backward jump\n{}", corpus::listing(&insns))
                });
            let e = Program::load(insns).expect_err(expr);
            assert_eq!(e.insn, Some(backward), "{expr:?}: {e}");
            assert!(e.rule.contains("leaves the program"), "{expr:?}: {e}");
        }
    }
}

/// The corpus programs as hooks of eight consecutive filters in classid mode, fused into one
/// chain (the appliance's default for JIT filters): from every start, the JIT-compiled chain
/// and rbpf's checking interpreter over it name the first member whose libpcap result is not 0,
/// with that result.
#[test]
fn fused_chains_of_corpus_programs_match_libpcap() {
    use pipelines::cbpf::ebpf::{chain_result, CHAIN_SHORT};
    use pipelines::cbpf::{ChainEngine, Mode, RbpfInterpreter};
    use pmd_glue::bpf_jit::RbpfChainJit;
    let programs = corpus::compile_all();
    let frames = corpus::frames();
    let meta = Meta::default();
    let mode = Mode::Classid { classid: 0x10001 };
    let (mut chains, mut runs, mut decided, mut fast_runs) = (0usize, 0usize, 0usize, 0usize);
    // Up to eight consecutive programs per chain, as many as fit the JIT's page (as the
    // appliance splits hooks).
    let mut groups: Vec<&[corpus::Compiled]> = Vec::new();
    let mut rest = programs.as_slice();
    while !rest.is_empty() {
        let fits = |n: usize| {
            let m: Vec<(&Program, Mode)> = rest[..n].iter().map(|c| (&c.prog, mode)).collect();
            RbpfChainJit::fits(&m).is_ok()
        };
        let mut n = 1;
        while n < rest.len().min(8) && fits(n + 1) {
            n += 1;
        }
        groups.push(&rest[..n]);
        rest = &rest[n..];
    }
    let longest = groups.iter().map(|g| g.len()).max().unwrap_or(0);
    assert_eq!(longest, 8, "some chains have eight members");
    for group in groups {
        let members: Vec<(&Program, Mode)> = group.iter().map(|c| (&c.prog, mode)).collect();
        let jit = RbpfChainJit::new(&members).expect("the chain fits");
        let checked = RbpfInterpreter::chain(&members).expect("translation");
        let fast = RbpfChainJit::new_fast(&members).expect("the fast chain fits");
        let fast_checked = RbpfInterpreter::chain_fast(&members).expect("translation");
        chains += 1;
        for Frame {
            name,
            data,
            wirelen,
        } in &frames
        {
            let results: Vec<u32> = group
                .iter()
                .map(|c| pcap::filter_loaded(&c.prog, data, *wirelen))
                .collect();
            for start in 0..=members.len() {
                let want = results
                    .iter()
                    .enumerate()
                    .skip(start)
                    .find(|(_, &r)| r != 0)
                    .map(|(i, &r)| (i, r));
                let r = checked
                    .try_run_from(data, *wirelen, &meta, start as u32)
                    .unwrap_or_else(|e| panic!("translator bug on {name}: {e}"));
                assert_eq!(
                    chain_result(r, members.len()),
                    want,
                    "rbpf interpreter on {name}, start {start}, chain of {:?}",
                    group.iter().map(|c| c.expr).collect::<Vec<_>>()
                );
                if let (Some(fast), Some(fc)) = (&fast, &fast_checked) {
                    let r = fc
                        .try_run_from(data, *wirelen, &meta, start as u32)
                        .unwrap_or_else(|e| panic!("translator bug, fast, on {name}: {e}"));
                    assert_eq!(
                        fast.run_from(data, *wirelen, &meta, start as u32),
                        r,
                        "fast JIT on {name}"
                    );
                    if r != CHAIN_SHORT {
                        assert_eq!(
                            chain_result(r, members.len()),
                            want,
                            "fast chain on {name}, start {start}"
                        );
                        fast_runs += 1;
                    }
                }
                let r = jit.run_from(data, *wirelen, &meta, start as u32);
                assert_eq!(
                    chain_result(r, members.len()),
                    want,
                    "JIT on {name}, start {start}, chain of {:?}",
                    group.iter().map(|c| c.expr).collect::<Vec<_>>()
                );
                runs += 1;
                decided += usize::from(want.is_some());
            }
        }
    }
    eprintln!(
        "{chains} chains x {} frames x every start: {runs} chain results, {decided} decided",
        frames.len()
    );
    assert!(decided * 10 > runs && decided < runs);
    assert!(
        fast_runs * 2 > runs,
        "{fast_runs} of {runs} ran the fast chains"
    );
}
