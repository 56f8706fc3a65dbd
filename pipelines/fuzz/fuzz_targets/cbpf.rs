//! Fuzzes the classic-BPF loader and the eBPF translation: any bytes must load or be refused
//! without panicking, and an accepted program must give the same result on the reference
//! interpreter and on rbpf's interpreter over its translation, which checks every memory
//! access (a refused access is a translator bug and fails here). The program also runs as both
//! members of a chain (classid mode, then direct action), checked and fast, from each start.
//!
//! Input layout: byte 0 is the number of instructions `n`; then `n` 8-byte `struct
//! sock_filter` records (`code` u16 LE, `jt`, `jf`, `k` u32 LE); the rest is the frame. Its
//! wire length is the frame length, and once more 4 bytes longer (a frame spanning segments).
//!
//! Run: `cargo fuzz run cbpf` (on stable: `RUSTC_BOOTSTRAP=1 cargo fuzz run cbpf`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipelines::cbpf::ebpf::{chain_result, CHAIN_SHORT};
use pipelines::cbpf::{Insn, Interpreter, Meta, Mode, Program, RbpfInterpreter};

fuzz_target!(|input: &[u8]| {
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let Some((code, frame)) = rest.split_at_checked(usize::from(n) * 8) else {
        return;
    };
    let insns: Vec<Insn> = code
        .chunks_exact(8)
        .map(|r| {
            Insn::new(
                u16::from_le_bytes([r[0], r[1]]),
                r[2],
                r[3],
                u32::from_le_bytes([r[4], r[5], r[6], r[7]]),
            )
        })
        .collect();
    let Ok(prog) = Program::load(insns) else {
        return;
    };
    let reference = Interpreter::new(&prog);
    // Programs of at most 255 instructions always fit the translation.
    let rbpf = RbpfInterpreter::new(&prog).expect("translation");
    let meta = Meta::of_frame(frame, 1, [2, 0, 0, 0, 0, 1], 0x8000_0001, Some(0xdead_beef));
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    let members = [
        (&prog, Mode::Classid { classid: 1 }),
        (&prog, Mode::DirectAction { classid: 1 }),
    ];
    let chain = RbpfInterpreter::chain(&members).expect("translation");
    let fast = RbpfInterpreter::chain_fast(&members).expect("translation");
    for wirelen in [len, len.saturating_add(4)] {
        let want = reference.run(frame, wirelen, &meta);
        match rbpf.try_run(frame, wirelen, &meta) {
            Ok(got) => assert_eq!(got, want, "{:?}", prog.insns()),
            Err(e) => panic!("translator bug: {e}: {:?}", prog.insns()),
        }
        for start in 0..3u32 {
            let expect = members
                .iter()
                .enumerate()
                .skip(start as usize)
                .find(|(_, (_, m))| m.decides(want))
                .map(|(i, _)| (i, want));
            for c in std::iter::once(&chain).chain(fast.as_ref()) {
                match c.try_run_from(frame, wirelen, &meta, start) {
                    Ok(CHAIN_SHORT) => assert!(frame.len() < 60),
                    Ok(r) => assert_eq!(chain_result(r, 2), expect, "{:?}", prog.insns()),
                    Err(e) => panic!("translator bug in a chain: {e}: {:?}", prog.insns()),
                }
            }
        }
    }
});
