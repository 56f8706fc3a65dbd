//! The reference engine: a safe interpreter over pre-decoded instructions.
//!
//! Semantics are libpcap's `bpf_filter` (which Linux's classic BPF shares on every program the
//! two agree on):
//! - the program sees `data` (the frame from its Ethernet header); `wirelen` is the frame's
//!   length on the wire (`len`, `ld #len`), which is larger than `data` only when the frame did
//!   not fit one buffer segment;
//! - loads are big-endian; a load that does not fit inside `data` ends the program with 0;
//! - indirect loads add X and k without wrapping (an offset past 2^32 - 1 misses);
//! - division or modulo by X == 0 ends the program with 0;
//! - a shift by X >= 32 gives 0 (Linux masks X by 31 instead: the one place the two differ on a
//!   program both accept; the appliance follows libpcap so that pcap-filter programs, the common
//!   case, behave exactly as tcpdump shows).
use super::check::Program;
use super::insn::{op, Ancillary, SKF_AD_OFF};

/// Packet metadata for ancillary loads. Filled only for programs that use it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Meta {
    /// EtherType at bytes 12..14.
    pub protocol: u32,
    /// 0 host, 1 broadcast, 2 multicast, 3 other host.
    pub pkttype: u32,
    /// Receiving port index + 1.
    pub ifindex: u32,
    /// Packet mark.
    pub mark: u32,
    /// NIC RSS hash (0 when none).
    pub rxhash: u32,
    /// Outer VLAN TCI (0 when untagged).
    pub vlan_tag: u32,
    /// 1 when the frame is VLAN tagged.
    pub vlan_tag_present: u32,
    /// Outer VLAN TPID (0 when untagged).
    pub vlan_tpid: u32,
}

/// `ARPHRD_ETHER`: every appliance port is Ethernet.
pub const HATYPE_ETHER: u32 = 1;

impl Meta {
    /// All fields 0: what programs that read no metadata are given.
    pub const ZERO: Meta = Meta {
        protocol: 0,
        pkttype: 0,
        ifindex: 0,
        mark: 0,
        rxhash: 0,
        vlan_tag: 0,
        vlan_tag_present: 0,
        vlan_tpid: 0,
    };

    /// The value of ancillary load `a` (`AluXorX` is not a load and reads as 0).
    #[inline]
    pub fn get(&self, a: Ancillary) -> u32 {
        match a {
            Ancillary::Protocol => self.protocol,
            Ancillary::PktType => self.pkttype,
            Ancillary::IfIndex => self.ifindex,
            Ancillary::Mark => self.mark,
            Ancillary::HaType => HATYPE_ETHER,
            Ancillary::RxHash => self.rxhash,
            Ancillary::VlanTag => self.vlan_tag,
            Ancillary::VlanTagPresent => self.vlan_tag_present,
            Ancillary::VlanTpid => self.vlan_tpid,
            Ancillary::AluXorX => 0,
        }
    }

    /// Metadata of an Ethernet frame received on port index `port` whose MAC is `port_mac`.
    pub fn of_frame(
        data: &[u8],
        port: u16,
        port_mac: [u8; 6],
        mark: u32,
        rxhash: Option<u32>,
    ) -> Meta {
        let be16 = |at: usize| {
            data.get(at..at + 2)
                .map_or(0, |b| u32::from(u16::from_be_bytes([b[0], b[1]])))
        };
        let protocol = be16(12);
        let tagged = matches!(protocol, 0x8100 | 0x88a8 | 0x9100) && data.len() >= 18;
        let pkttype = match data.get(..6) {
            Some(d) if d == [0xff; 6] => 1,
            Some(d) if d[0] & 1 == 1 => 2,
            Some(d) if d == port_mac => 0,
            Some(_) => 3,
            None => 0,
        };
        Meta {
            protocol,
            pkttype,
            ifindex: u32::from(port) + 1,
            mark,
            rxhash: rxhash.unwrap_or(0),
            vlan_tag: if tagged { be16(14) } else { 0 },
            vlan_tag_present: u32::from(tagged),
            vlan_tpid: if tagged { protocol } else { 0 },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alu {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    And,
    Or,
    Xor,
    Lsh,
    Rsh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    Eq,
    Gt,
    Ge,
    Set,
}

/// A decoded instruction; jump targets are absolute instruction indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    LdAbs(u32, u8),
    LdInd(u32, u8),
    LdLen,
    LdxLen,
    LdImm(u32),
    LdxImm(u32),
    LdMem(u8),
    LdxMem(u8),
    LdxMsh(u32),
    Anc(Ancillary),
    XorX,
    St(u8),
    Stx(u8),
    AluK(Alu, u32),
    AluX(Alu),
    Neg,
    Ja(u32),
    JmpK(Cond, u32, u32, u32),
    JmpX(Cond, u32, u32),
    RetK(u32),
    RetA,
    Tax,
    Txa,
}

fn alu_of(code: u16) -> Alu {
    match code & 0xf0 {
        op::ADD => Alu::Add,
        op::SUB => Alu::Sub,
        op::MUL => Alu::Mul,
        op::DIV => Alu::Div,
        op::MOD => Alu::Mod,
        op::AND => Alu::And,
        op::OR => Alu::Or,
        op::XOR => Alu::Xor,
        op::LSH => Alu::Lsh,
        _ => Alu::Rsh,
    }
}

fn cond_of(code: u16) -> Cond {
    match code & 0xf0 {
        op::JEQ => Cond::Eq,
        op::JGT => Cond::Gt,
        op::JGE => Cond::Ge,
        _ => Cond::Set,
    }
}

fn size_of(code: u16) -> u8 {
    match code & 0x18 {
        op::H => 2,
        op::B => 1,
        _ => 4,
    }
}

/// The interpreter for one loaded program.
#[derive(Debug, Clone)]
pub struct Interpreter {
    ops: Box<[Op]>,
}

impl Interpreter {
    /// Decodes `prog` (already validated by the loader).
    pub fn new(prog: &Program) -> Interpreter {
        use op::*;
        let ops = prog
            .insns()
            .iter()
            .enumerate()
            .map(|(pc, i)| {
                let next = pc as u32 + 1;
                match op::class(i.code) {
                    LD => match i.code & 0xe0 {
                        ABS if i.k >= SKF_AD_OFF => {
                            match Ancillary::from_offset(i.k - SKF_AD_OFF) {
                                Some(Ancillary::AluXorX) => Op::XorX,
                                Some(a) => Op::Anc(a),
                                None => Op::RetK(0), // unreachable: the loader rejects these
                            }
                        }
                        ABS => Op::LdAbs(i.k, size_of(i.code)),
                        IND => Op::LdInd(i.k, size_of(i.code)),
                        LEN => Op::LdLen,
                        MEM => Op::LdMem(i.k as u8),
                        _ => Op::LdImm(i.k),
                    },
                    LDX => match i.code & 0xe0 {
                        LEN => Op::LdxLen,
                        MEM => Op::LdxMem(i.k as u8),
                        MSH => Op::LdxMsh(i.k),
                        _ => Op::LdxImm(i.k),
                    },
                    ST => Op::St(i.k as u8),
                    STX => Op::Stx(i.k as u8),
                    ALU if i.code == ALU | NEG => Op::Neg,
                    ALU if i.code & X != 0 => Op::AluX(alu_of(i.code)),
                    ALU => Op::AluK(alu_of(i.code), i.k),
                    JMP if i.code == JMP | JA => Op::Ja(next + i.k),
                    JMP => {
                        let (t, f) = (next + u32::from(i.jt), next + u32::from(i.jf));
                        if i.code & X != 0 {
                            Op::JmpX(cond_of(i.code), t, f)
                        } else {
                            Op::JmpK(cond_of(i.code), i.k, t, f)
                        }
                    }
                    RET if i.code & 0x18 == A => Op::RetA,
                    RET => Op::RetK(i.k),
                    _ if i.code == MISC | TAX => Op::Tax,
                    _ => Op::Txa,
                }
            })
            .collect();
        Interpreter { ops }
    }

    /// Runs the program over one frame; returns its result (0 = no match).
    #[inline]
    pub fn run(&self, data: &[u8], wirelen: u32, meta: &Meta) -> u32 {
        let mut a: u32 = 0;
        let mut x: u32 = 0;
        let mut mem = [0u32; 16];
        let mut pc = 0usize;
        loop {
            // The loader guarantees every target is inside the program and the last
            // instruction returns, so `get` never fails; a miss would end the program with 0.
            let Some(&o) = self.ops.get(pc) else {
                return 0;
            };
            pc += 1;
            match o {
                Op::LdAbs(k, n) => match load(data, u64::from(k), n) {
                    Some(v) => a = v,
                    None => return 0,
                },
                Op::LdInd(k, n) => match load(data, u64::from(x) + u64::from(k), n) {
                    Some(v) => a = v,
                    None => return 0,
                },
                Op::LdLen => a = wirelen,
                Op::LdxLen => x = wirelen,
                Op::LdImm(k) => a = k,
                Op::LdxImm(k) => x = k,
                Op::LdMem(s) => a = mem[usize::from(s & 15)],
                Op::LdxMem(s) => x = mem[usize::from(s & 15)],
                Op::LdxMsh(k) => match data.get(k as usize) {
                    Some(&b) => x = u32::from(b & 0xf) << 2,
                    None => return 0,
                },
                Op::Anc(an) => a = meta.get(an),
                Op::XorX => a ^= x,
                Op::St(s) => mem[usize::from(s & 15)] = a,
                Op::Stx(s) => mem[usize::from(s & 15)] = x,
                Op::AluK(f, k) => a = alu(f, a, k),
                Op::AluX(f) => {
                    if matches!(f, Alu::Div | Alu::Mod) && x == 0 {
                        return 0;
                    }
                    a = alu(f, a, x);
                }
                Op::Neg => a = a.wrapping_neg(),
                Op::Ja(t) => pc = t as usize,
                Op::JmpK(c, k, t, f) => pc = if cond(c, a, k) { t } else { f } as usize,
                Op::JmpX(c, t, f) => pc = if cond(c, a, x) { t } else { f } as usize,
                Op::RetK(k) => return k,
                Op::RetA => return a,
                Op::Tax => x = a,
                Op::Txa => a = x,
            }
        }
    }
}

#[inline(always)]
fn load(data: &[u8], off: u64, n: u8) -> Option<u32> {
    let off = usize::try_from(off).ok()?;
    match n {
        4 => data
            .get(off..off.checked_add(4)?)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        2 => data
            .get(off..off.checked_add(2)?)
            .map(|b| u32::from(u16::from_be_bytes([b[0], b[1]]))),
        _ => data.get(off).map(|&b| u32::from(b)),
    }
}

#[inline(always)]
fn alu(f: Alu, a: u32, v: u32) -> u32 {
    match f {
        Alu::Add => a.wrapping_add(v),
        Alu::Sub => a.wrapping_sub(v),
        Alu::Mul => a.wrapping_mul(v),
        Alu::Div => a.checked_div(v).unwrap_or(0),
        Alu::Mod => a.checked_rem(v).unwrap_or(0),
        Alu::And => a & v,
        Alu::Or => a | v,
        Alu::Xor => a ^ v,
        Alu::Lsh => a.checked_shl(v).unwrap_or(0),
        Alu::Rsh => a.checked_shr(v).unwrap_or(0),
    }
}

#[inline(always)]
fn cond(c: Cond, a: u32, v: u32) -> bool {
    match c {
        Cond::Eq => a == v,
        Cond::Gt => a > v,
        Cond::Ge => a >= v,
        Cond::Set => a & v != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbpf::insn::{parse_tc_bytecode, Insn};

    fn run(insns: &[(u16, u8, u8, u32)], data: &[u8]) -> u32 {
        let p = Program::from_fields(insns).unwrap();
        Interpreter::new(&p).run(data, data.len() as u32, &Meta::ZERO)
    }

    use crate::cbpf::insn::op::*;

    #[test]
    fn ipv4_filter_from_tc_bytecode() {
        let p = Program::load(
            parse_tc_bytecode("4,40 0 0 12,21 0 1 2048,6 0 0 65535,6 0 0 0").unwrap(),
        )
        .unwrap();
        let vm = Interpreter::new(&p);
        let mut f = [0u8; 60];
        f[12] = 0x08;
        assert_eq!(vm.run(&f, 60, &Meta::default()), 65535);
        f[13] = 0xdd;
        assert_eq!(vm.run(&f, 60, &Meta::default()), 0);
        // Truncated before the EtherType: the load misses, the result is 0.
        assert_eq!(vm.run(&f[..13], 13, &Meta::default()), 0);
    }

    #[test]
    fn loads_are_big_endian_and_bounded() {
        let d = [1u8, 2, 3, 4, 5];
        assert_eq!(
            run(&[(LD | W | ABS, 0, 0, 1), (RET | A, 0, 0, 0)], &d),
            0x0203_0405
        );
        assert_eq!(
            run(&[(LD | H | ABS, 0, 0, 3), (RET | A, 0, 0, 0)], &d),
            0x0405
        );
        assert_eq!(run(&[(LD | W | ABS, 0, 0, 2), (RET | K, 0, 0, 9)], &d), 0);
        assert_eq!(run(&[(LD | B | ABS, 0, 0, 5), (RET | K, 0, 0, 9)], &d), 0);
        // X + k past 2^32 does not wrap around to the start of the packet.
        let wrap = [
            (LDX | IMM, 0, 0, u32::MAX),
            (LD | B | IND, 0, 0, 1),
            (RET | K, 0, 0, 9),
        ];
        assert_eq!(run(&wrap, &d), 0);
        assert_eq!(
            run(
                &[
                    (LDX | B | MSH, 0, 0, 4),
                    (TXA_, 0, 0, 0),
                    (RET | A, 0, 0, 0)
                ],
                &d
            ),
            20
        );
        assert_eq!(run(&[(LD | W | LEN, 0, 0, 0), (RET | A, 0, 0, 0)], &d), 5);
    }

    const TXA_: u16 = MISC | TXA;

    #[test]
    fn runtime_division_by_zero_and_big_shifts() {
        let div = [
            (LD | IMM, 0, 0, 7),
            (ALU | DIV | X, 0, 0, 0),
            (RET | K, 0, 0, 9),
        ];
        assert_eq!(run(&div, &[]), 0);
        let m = [
            (LD | IMM, 0, 0, 7),
            (ALU | MOD | X, 0, 0, 0),
            (RET | K, 0, 0, 9),
        ];
        assert_eq!(run(&m, &[]), 0);
        let sh = [
            (LD | IMM, 0, 0, 7),
            (LDX | IMM, 0, 0, 32),
            (ALU | LSH | X, 0, 0, 0),
            (RET | A, 0, 0, 0),
        ];
        assert_eq!(run(&sh, &[]), 0);
        let ok = [
            (LD | IMM, 0, 0, 0x8000_0001),
            (ALU | NEG, 0, 0, 0),
            (ALU | MUL | K, 0, 0, 3),
            (RET | A, 0, 0, 0),
        ];
        assert_eq!(run(&ok, &[]), 0x8000_0001u32.wrapping_neg().wrapping_mul(3));
    }

    #[test]
    fn jumps_and_scratch() {
        let p = [
            (LD | IMM, 0, 0, 0x8000_0000),
            (ST, 0, 0, 3), // the return at 5 flows into 6: slot 3 must be written on that path too
            (JMP | JGT | K, 0, 2, 0x7fff_ffff), // unsigned compare
            (ST, 0, 0, 3),
            (JMP | JA, 0, 0, 1),
            (RET | K, 0, 0, 1),
            (LDX | MEM, 0, 0, 3),
            (JMP | JSET | X, 0, 1, 0),
            (RET | K, 0, 0, 2),
            (RET | K, 0, 0, 3),
        ];
        assert_eq!(run(&p, &[]), 2);
    }

    #[test]
    fn metadata() {
        let mut f = [0u8; 64];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        f[14..16].copy_from_slice(&[0x20, 0x64]);
        let m = Meta::of_frame(&f, 2, [2, 0, 0, 0, 0, 1], 7, Some(0xabc));
        assert_eq!(
            m,
            Meta {
                protocol: 0x8100,
                pkttype: 0,
                ifindex: 3,
                mark: 7,
                rxhash: 0xabc,
                vlan_tag: 0x2064,
                vlan_tag_present: 1,
                vlan_tpid: 0x8100,
            }
        );
        f[0] = 0x01;
        assert_eq!(Meta::of_frame(&f, 0, [0; 6], 0, None).pkttype, 2);
        f[..6].copy_from_slice(&[0xff; 6]);
        assert_eq!(Meta::of_frame(&f, 0, [0; 6], 0, None).pkttype, 1);
        f[..6].copy_from_slice(&[4; 6]);
        assert_eq!(Meta::of_frame(&f, 0, [0; 6], 0, None).pkttype, 3);
        let p = Program::load(vec![
            Insn::new(LD | H | ABS, 0, 0, SKF_AD_OFF + Ancillary::VlanTag.offset()),
            Insn::new(RET | A, 0, 0, 0),
        ])
        .unwrap();
        assert_eq!(Interpreter::new(&p).run(&f, 64, &m), 0x2064);
    }
}
