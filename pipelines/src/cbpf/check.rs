//! The loader: accepts exactly the classic-BPF programs Linux's checker (`bpf_check_classic` and
//! `check_load_and_stores`) accepts, minus the ancillary loads the appliance does not offer. A
//! [`Program`] can only be built here, so every engine may rely on its invariants: jumps land
//! inside the program and only forward, it ends in a return, scratch slots are in range and
//! written before they are read on every path, no constant division by zero or oversized shift.
use super::insn::{op, Ancillary, Insn, MAX_INSNS, MEMWORDS, SKF_AD_OFF, SKF_LL_OFF};
use std::fmt;

/// Why a program was rejected: the instruction (if one is to blame) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// Index of the offending instruction.
    pub insn: Option<usize>,
    /// The rule, in words.
    pub rule: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.insn {
            Some(i) => write!(f, "instruction {i}: {}", self.rule),
            None => f.write_str(&self.rule),
        }
    }
}

impl std::error::Error for LoadError {}

/// A classic-BPF program that passed the loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
    ancillary: u32,
}

impl Program {
    /// Validates `insns` as Linux does; see the module documentation.
    pub fn load(insns: Vec<Insn>) -> Result<Program, LoadError> {
        let ancillary = check(&insns)?;
        Ok(Program { insns, ancillary })
    }

    /// Validates a program written as `(code, jt, jf, k)` tuples, the `struct sock_filter`
    /// field order (as in C initialisers and `tcpdump -dd`).
    pub fn from_fields(insns: &[(u16, u8, u8, u32)]) -> Result<Program, LoadError> {
        Program::load(
            insns
                .iter()
                .map(|&(code, jt, jf, k)| Insn::new(code, jt, jf, k))
                .collect(),
        )
    }

    /// The instructions.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Always false: a loaded program has at least one instruction.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Whether the program reads the ancillary value `a`.
    pub fn uses(&self, a: Ancillary) -> bool {
        self.ancillary & (1 << (a as u32)) != 0
    }

    /// Whether the program reads any packet metadata through ancillary loads (other than
    /// `alu_xor_x`, which is arithmetic).
    pub fn uses_metadata(&self) -> bool {
        self.ancillary & !(1 << (Ancillary::AluXorX as u32)) != 0
    }
}

fn err(insn: usize, rule: impl Into<String>) -> LoadError {
    LoadError {
        insn: Some(insn),
        rule: rule.into(),
    }
}

/// The opcodes the kernel's `chk_code_allowed` table admits.
pub fn code_allowed(code: u16) -> bool {
    use op::*;
    const ALU_OPS: [u16; 10] = [ADD, SUB, MUL, DIV, MOD, AND, OR, XOR, LSH, RSH];
    const JMP_OPS: [u16; 4] = [JEQ, JGT, JGE, JSET];
    match class(code) {
        ALU => {
            code == ALU | NEG
                || ALU_OPS
                    .iter()
                    .any(|&o| code == ALU | o | K || code == ALU | o | X)
        }
        LD => [
            LD | W | ABS,
            LD | H | ABS,
            LD | B | ABS,
            LD | W | IND,
            LD | H | IND,
            LD | B | IND,
            LD | W | LEN,
            LD | MEM,
            LD | IMM,
        ]
        .contains(&code),
        LDX => [LDX | W | LEN, LDX | B | MSH, LDX | IMM, LDX | MEM].contains(&code),
        ST => code == ST,
        STX => code == STX,
        MISC => code == MISC | TAX || code == MISC | TXA,
        RET => code == RET | K || code == RET | A,
        JMP => {
            code == JMP | JA
                || JMP_OPS
                    .iter()
                    .any(|&o| code == JMP | o | K || code == JMP | o | X)
        }
        _ => false,
    }
}

fn is_cond_jump(code: u16) -> bool {
    op::class(code) == op::JMP && code != op::JMP | op::JA
}

/// Runs every check; returns the mask of ancillary loads used.
fn check(insns: &[Insn]) -> Result<u32, LoadError> {
    use op::*;
    let n = insns.len();
    if n == 0 || n > MAX_INSNS {
        return Err(LoadError {
            insn: None,
            rule: format!("a program has 1 to {MAX_INSNS} instructions, this one has {n}"),
        });
    }
    let mut ancillary = 0u32;
    for (pc, i) in insns.iter().enumerate() {
        if !code_allowed(i.code) {
            return Err(err(pc, format!("unknown opcode {:#06x}", i.code)));
        }
        match i.code {
            c if c == ALU | DIV | K && i.k == 0 => {
                return Err(err(pc, "division by the constant 0"))
            }
            c if c == ALU | MOD | K && i.k == 0 => return Err(err(pc, "modulo by the constant 0")),
            c if (c == ALU | LSH | K || c == ALU | RSH | K) && i.k >= 32 => {
                return Err(err(
                    pc,
                    format!("shift by the constant {}: at most 31 allowed", i.k),
                ))
            }
            c if (c == LD | MEM || c == LDX | MEM || c == ST || c == STX) && i.k >= MEMWORDS => {
                return Err(err(
                    pc,
                    format!(
                        "scratch memory slot {} out of range (0..={})",
                        i.k,
                        MEMWORDS - 1
                    ),
                ))
            }
            // The target pc + 1 + k must be an instruction of the program.
            c if c == JMP | JA && u64::from(i.k) >= (n - pc - 1) as u64 => {
                return Err(err(pc, format!("jump by {} leaves the program", i.k)));
            }
            c if is_cond_jump(c) => {
                let worst = usize::from(i.jt.max(i.jf));
                if pc + worst + 1 >= n {
                    return Err(err(
                        pc,
                        format!(
                            "conditional jump (jt {}, jf {}) leaves the program",
                            i.jt, i.jf
                        ),
                    ));
                }
            }
            c if (c == LD | W | ABS || c == LD | H | ABS || c == LD | B | ABS)
                && i.k >= SKF_LL_OFF =>
            {
                if i.k < SKF_AD_OFF {
                    return Err(err(
                        pc,
                        format!(
                            "load at negative offset {} (SKF_LL_OFF/SKF_NET_OFF-relative loads are not supported)",
                            i.k as i32
                        ),
                    ));
                }
                let off = i.k - SKF_AD_OFF;
                match Ancillary::from_offset(off) {
                    Some(a) => ancillary |= 1 << (a as u32),
                    None => {
                        let supported: Vec<&str> =
                            Ancillary::ALL.iter().map(|a| a.name()).collect();
                        let what = match Ancillary::unsupported_name(off) {
                            Some(name) => format!("ancillary load {name:?} is not supported"),
                            None => format!("unknown ancillary load SKF_AD_OFF+{off}"),
                        };
                        return Err(err(
                            pc,
                            format!("{what} (supported: {})", supported.join(", ")),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    let last = insns[n - 1].code;
    if last != RET | K && last != RET | A {
        return Err(err(n - 1, "the program does not end with a return"));
    }
    check_load_and_stores(insns)?;
    Ok(ancillary)
}

/// Every scratch-memory read must be preceded, on every path reaching it, by a write to the
/// same slot. Flow is forward only, so one pass propagating "slots surely written" suffices;
/// like the kernel, the state after a return flows into the next instruction.
fn check_load_and_stores(insns: &[Insn]) -> Result<(), LoadError> {
    use op::*;
    let n = insns.len();
    let mut masks = vec![u16::MAX; n];
    let mut valid: u16 = 0;
    for (pc, i) in insns.iter().enumerate() {
        valid &= masks[pc];
        let slot = 1u16 << (i.k & 0xf);
        match i.code {
            c if c == ST || c == STX => valid |= slot,
            c if (c == LD | MEM || c == LDX | MEM) && valid & slot == 0 => {
                return Err(err(
                    pc,
                    format!(
                        "reads scratch memory slot {} that some path reaches unwritten",
                        i.k
                    ),
                ));
            }
            c if c == JMP | JA => {
                masks[pc + 1 + i.k as usize] &= valid;
                valid = u16::MAX;
            }
            c if is_cond_jump(c) => {
                masks[pc + 1 + usize::from(i.jt)] &= valid;
                masks[pc + 1 + usize::from(i.jf)] &= valid;
                valid = u16::MAX;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbpf::insn::op::*;

    fn ld(insns: &[(u16, u8, u8, u32)]) -> Result<Program, LoadError> {
        Program::from_fields(insns)
    }

    fn rejects(insns: &[(u16, u8, u8, u32)], at: Option<usize>, words: &str) {
        let e = ld(insns).expect_err("must be rejected");
        assert_eq!(e.insn, at, "{e}");
        assert!(e.rule.contains(words), "{e:?} lacks {words:?}");
    }

    const RET0: (u16, u8, u8, u32) = (RET | K, 0, 0, 0);

    #[test]
    fn length_bounds() {
        rejects(&[], None, "1 to 4096");
        let mut p = vec![(LD | IMM, 0, 0, 1); MAX_INSNS - 1];
        p.push(RET0);
        assert!(ld(&p).is_ok(), "4096 instructions are allowed");
        p.insert(0, (LD | IMM, 0, 0, 1));
        rejects(&p, None, "has 4097");
    }

    #[test]
    fn opcodes() {
        rejects(&[(0x08, 0, 0, 0), RET0], Some(0), "unknown opcode 0x0008");
        rejects(&[(RET | X, 0, 0, 0)], Some(0), "unknown opcode");
        rejects(&[(ALU | NEG | X, 0, 0, 0), RET0], Some(0), "unknown opcode");
        rejects(&[(JMP | 0x50, 0, 0, 0), RET0], Some(0), "unknown opcode");
        assert!(ld(&[
            (ALU | NEG, 0, 0, 0),
            (MISC | TAX, 0, 0, 0),
            (RET | A, 0, 0, 0)
        ])
        .is_ok());
        assert!(ld(&[(LDX | B | MSH, 0, 0, 14), (LDX | W | LEN, 0, 0, 0), RET0]).is_ok());
    }

    #[test]
    fn ends_in_return() {
        rejects(
            &[(LD | IMM, 0, 0, 0)],
            Some(0),
            "does not end with a return",
        );
        assert!(ld(&[(RET | A, 0, 0, 0)]).is_ok());
    }

    #[test]
    fn constant_division_and_shift() {
        rejects(
            &[(ALU | DIV | K, 0, 0, 0), RET0],
            Some(0),
            "division by the constant 0",
        );
        rejects(
            &[(ALU | MOD | K, 0, 0, 0), RET0],
            Some(0),
            "modulo by the constant 0",
        );
        assert!(ld(&[(ALU | DIV | K, 0, 0, 1), (ALU | MOD | K, 0, 0, 1), RET0]).is_ok());
        assert!(
            ld(&[(ALU | DIV | X, 0, 0, 0), RET0]).is_ok(),
            "X may be 0 at run time"
        );
        rejects(
            &[(ALU | LSH | K, 0, 0, 32), RET0],
            Some(0),
            "shift by the constant 32",
        );
        rejects(&[(ALU | RSH | K, 0, 0, 99), RET0], Some(0), "at most 31");
        assert!(ld(&[(ALU | LSH | K, 0, 0, 31), (ALU | RSH | K, 0, 0, 31), RET0]).is_ok());
    }

    #[test]
    fn jumps_stay_inside_and_forward() {
        // JA: target = pc + 1 + k must be < n.
        assert!(ld(&[(JMP | JA, 0, 0, 1), RET0, RET0]).is_ok());
        rejects(
            &[(JMP | JA, 0, 0, 2), RET0, RET0],
            Some(0),
            "leaves the program",
        );
        rejects(
            &[(JMP | JA, 0, 0, u32::MAX), RET0],
            Some(0),
            "leaves the program",
        );
        assert!(ld(&[(JMP | JEQ | K, 1, 0, 0), RET0, RET0]).is_ok());
        rejects(&[(JMP | JEQ | K, 2, 0, 0), RET0, RET0], Some(0), "jt 2");
        rejects(&[(JMP | JGT | X, 0, 2, 0), RET0, RET0], Some(0), "leaves");
        // The last instruction cannot be a jump: it must return.
        rejects(&[RET0, (JMP | JA, 0, 0, 0)], Some(1), "leaves the program");
    }

    #[test]
    fn scratch_memory() {
        rejects(&[(ST, 0, 0, 16), RET0], Some(0), "slot 16 out of range");
        rejects(&[(LDX | MEM, 0, 0, 16), RET0], Some(0), "out of range");
        assert!(ld(&[(ST, 0, 0, 15), (LD | MEM, 0, 0, 15), RET0]).is_ok());
        rejects(
            &[(LD | MEM, 0, 0, 3), RET0],
            Some(0),
            "slot 3 that some path",
        );
        // Written on only one of two paths.
        rejects(
            &[
                (JMP | JEQ | K, 0, 1, 0),
                (ST, 0, 0, 2),
                (LD | MEM, 0, 0, 2),
                RET0,
            ],
            Some(2),
            "slot 2",
        );
        // Written on both paths.
        assert!(ld(&[
            (JMP | JEQ | K, 0, 2, 0),
            (STX, 0, 0, 2),
            (JMP | JA, 0, 0, 1),
            (ST, 0, 0, 2),
            (LDX | MEM, 0, 0, 2),
            RET0,
        ])
        .is_ok());
        // The kernel lets the state before a return flow into the next instruction.
        assert!(ld(&[(ST, 0, 0, 1), RET0, (LD | MEM, 0, 0, 1), RET0]).is_ok());
    }

    #[test]
    fn ancillary_loads() {
        let p = ld(&[(LD | H | ABS, 0, 0, SKF_AD_OFF), RET0]).unwrap();
        assert!(p.uses(Ancillary::Protocol) && p.uses_metadata());
        let p = ld(&[(LD | B | ABS, 0, 0, SKF_AD_OFF + 40), RET0]).unwrap();
        assert!(p.uses(Ancillary::AluXorX) && !p.uses_metadata());
        rejects(
            &[(LD | W | ABS, 0, 0, SKF_AD_OFF + 56), RET0],
            Some(0),
            "\"random\" is not supported",
        );
        rejects(
            &[(LD | W | ABS, 0, 0, SKF_AD_OFF + 64), RET0],
            Some(0),
            "unknown ancillary",
        );
        rejects(
            &[(LD | W | ABS, 0, 0, SKF_LL_OFF), RET0],
            Some(0),
            "negative offset",
        );
        // The last plain offset below SKF_LL_OFF is a packet load (that will miss).
        assert!(ld(&[(LD | W | ABS, 0, 0, SKF_LL_OFF - 1), RET0]).is_ok());
        // Indirect loads never read metadata.
        assert!(!ld(&[(LD | W | IND, 0, 0, SKF_AD_OFF), RET0])
            .unwrap()
            .uses_metadata());
    }
}
