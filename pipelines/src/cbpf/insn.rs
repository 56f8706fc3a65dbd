//! Classic BPF instructions (`struct sock_filter` / `struct bpf_insn`) and the two textual forms
//! operators bring them in: tc/iproute2 bytecode strings and `tcpdump -ddd` output.
use std::fmt;

/// One classic BPF instruction, exactly as the kernel and libpcap lay it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Insn {
    /// Opcode: class | size | mode (loads) or class | op | source (ALU, jumps).
    pub code: u16,
    /// Jump offset when the condition holds (conditional jumps only).
    pub jt: u8,
    /// Jump offset when the condition does not hold.
    pub jf: u8,
    /// Generic operand: constant, offset or scratch slot.
    pub k: u32,
}

impl Insn {
    /// An instruction from its four fields.
    pub const fn new(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn { code, jt, jf, k }
    }
}

impl fmt::Display for Insn {
    /// The `tcpdump -ddd` form: `code jt jf k` in decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} {}", self.code, self.jt, self.jf, self.k)
    }
}

/// Opcode fields and whole opcodes (`linux/filter.h`, `pcap/bpf.h`).
pub mod op {
    #![allow(missing_docs)]
    // Classes.
    pub const LD: u16 = 0x00;
    pub const LDX: u16 = 0x01;
    pub const ST: u16 = 0x02;
    pub const STX: u16 = 0x03;
    pub const ALU: u16 = 0x04;
    pub const JMP: u16 = 0x05;
    pub const RET: u16 = 0x06;
    pub const MISC: u16 = 0x07;
    // Sizes.
    pub const W: u16 = 0x00;
    pub const H: u16 = 0x08;
    pub const B: u16 = 0x10;
    // Modes.
    pub const IMM: u16 = 0x00;
    pub const ABS: u16 = 0x20;
    pub const IND: u16 = 0x40;
    pub const MEM: u16 = 0x60;
    pub const LEN: u16 = 0x80;
    pub const MSH: u16 = 0xa0;
    // ALU / jump operations.
    pub const ADD: u16 = 0x00;
    pub const SUB: u16 = 0x10;
    pub const MUL: u16 = 0x20;
    pub const DIV: u16 = 0x30;
    pub const OR: u16 = 0x40;
    pub const AND: u16 = 0x50;
    pub const LSH: u16 = 0x60;
    pub const RSH: u16 = 0x70;
    pub const NEG: u16 = 0x80;
    pub const MOD: u16 = 0x90;
    pub const XOR: u16 = 0xa0;
    pub const JA: u16 = 0x00;
    pub const JEQ: u16 = 0x10;
    pub const JGT: u16 = 0x20;
    pub const JGE: u16 = 0x30;
    pub const JSET: u16 = 0x40;
    // Sources.
    pub const K: u16 = 0x00;
    pub const X: u16 = 0x08;
    pub const A: u16 = 0x10; // RET A

    // MISC.
    pub const TAX: u16 = 0x00;
    pub const TXA: u16 = 0x80;

    /// The instruction class of `code`.
    pub const fn class(code: u16) -> u16 {
        code & 0x07
    }
}

/// Maximum program length (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// Scratch memory words (`BPF_MEMWORDS`).
pub const MEMWORDS: u32 = 16;

/// Start of the ancillary-load offset range (`SKF_AD_OFF`, i.e. -0x1000 as u32).
pub const SKF_AD_OFF: u32 = 0xffff_f000;
/// Start of the network-header-relative offsets (`SKF_NET_OFF`, -0x100000).
pub const SKF_NET_OFF: u32 = 0xfff0_0000;
/// Start of the link-layer-relative offsets (`SKF_LL_OFF`, -0x200000).
pub const SKF_LL_OFF: u32 = 0xffe0_0000;

/// The ancillary ("extension") loads: `ld [SKF_AD_OFF + n]` reads packet metadata instead of
/// packet bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Ancillary {
    /// `SKF_AD_PROTOCOL`: the frame's EtherType (bytes 12..14, the outer tag's TPID when tagged,
    /// since the appliance does not strip VLAN tags).
    Protocol = 0,
    /// `SKF_AD_PKTTYPE`: 0 host, 1 broadcast, 2 multicast, 3 other host (by destination MAC
    /// against the receiving port's MAC).
    PktType = 1,
    /// `SKF_AD_IFINDEX`: the index in the configuration, plus 1, of the port whose hook runs.
    IfIndex = 2,
    /// `SKF_AD_MARK`: the packet mark set by earlier actions.
    Mark = 5,
    /// `SKF_AD_HATYPE`: the link type, always `ARPHRD_ETHER` (1).
    HaType = 7,
    /// `SKF_AD_RXHASH`: the NIC's RSS hash, else the kernel's software flow hash
    /// ([`crate::flow::software_rxhash`]).
    RxHash = 8,
    /// `SKF_AD_ALU_XOR_X`: not a load: `A ^= X`.
    AluXorX = 10,
    /// `SKF_AD_VLAN_TAG`: TCI of the outer VLAN tag (0 when untagged).
    VlanTag = 11,
    /// `SKF_AD_VLAN_TAG_PRESENT`: 1 when the frame carries a VLAN tag.
    VlanTagPresent = 12,
    /// `SKF_AD_VLAN_TPID`: TPID of the outer VLAN tag (0 when untagged).
    VlanTpid = 15,
}

impl Ancillary {
    /// Every supported ancillary load.
    pub const ALL: [Ancillary; 10] = [
        Ancillary::Protocol,
        Ancillary::PktType,
        Ancillary::IfIndex,
        Ancillary::Mark,
        Ancillary::HaType,
        Ancillary::RxHash,
        Ancillary::AluXorX,
        Ancillary::VlanTag,
        Ancillary::VlanTagPresent,
        Ancillary::VlanTpid,
    ];

    /// The kernel's offset of this load, relative to `SKF_AD_OFF`.
    pub const fn offset(self) -> u32 {
        (self as u32) * 4
    }

    /// The ancillary load at `SKF_AD_OFF + off`, if the appliance supports it.
    pub fn from_offset(off: u32) -> Option<Ancillary> {
        Ancillary::ALL.into_iter().find(|a| a.offset() == off)
    }

    /// The kernel's name (`SKF_AD_<name>`, lower case).
    pub const fn name(self) -> &'static str {
        match self {
            Ancillary::Protocol => "protocol",
            Ancillary::PktType => "pkttype",
            Ancillary::IfIndex => "ifindex",
            Ancillary::Mark => "mark",
            Ancillary::HaType => "hatype",
            Ancillary::RxHash => "rxhash",
            Ancillary::AluXorX => "alu_xor_x",
            Ancillary::VlanTag => "vlan_tag",
            Ancillary::VlanTagPresent => "vlan_tag_present",
            Ancillary::VlanTpid => "vlan_tpid",
        }
    }

    /// The kernel's name of an ancillary offset the appliance does not support.
    pub const fn unsupported_name(off: u32) -> Option<&'static str> {
        match off {
            12 => Some("nlattr"),
            16 => Some("nlattr_nest"),
            24 => Some("queue"),
            36 => Some("cpu"),
            52 => Some("pay_offset"),
            56 => Some("random"),
            _ => None,
        }
    }
}

/// Why a program text did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError(pub String);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

fn parse_num<T: TryFrom<u64>>(s: &str, what: &str, at: usize) -> Result<T, SourceError> {
    let s = s.trim();
    let v = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else {
        s.parse::<u64>()
    }
    .map_err(|_| SourceError(format!("instruction {at}: {what} {s:?} is not a number")))?;
    T::try_from(v).map_err(|_| {
        SourceError(format!(
            "instruction {at}: {what} {s} is out of range (max {})",
            match what {
                "code" => u64::from(u16::MAX),
                "jt" | "jf" => u64::from(u8::MAX),
                _ => u64::from(u32::MAX),
            }
        ))
    })
}

fn parse_fields(fields: &[&str], at: usize) -> Result<Insn, SourceError> {
    if fields.len() != 4 {
        return Err(SourceError(format!(
            "instruction {at}: expected 4 fields \"code jt jf k\", found {}",
            fields.len()
        )));
    }
    Ok(Insn {
        code: parse_num(fields[0], "code", at)?,
        jt: parse_num(fields[1], "jt", at)?,
        jf: parse_num(fields[2], "jf", at)?,
        k: parse_num(fields[3], "k", at)?,
    })
}

fn check_count(declared: usize, found: usize) -> Result<(), SourceError> {
    if declared != found {
        return Err(SourceError(format!(
            "the count says {declared} instructions but {found} follow"
        )));
    }
    Ok(())
}

/// Parses tc/iproute2 bytecode: `"N,code jt jf k,code jt jf k,..."` (the count first, then
/// one comma-separated instruction per entry, fields separated by spaces), as `tc filter add
/// ... bpf bytecode` and `nfbpf_compile` produce. Whitespace around entries is ignored.
pub fn parse_tc_bytecode(text: &str) -> Result<Vec<Insn>, SourceError> {
    let text = text.trim().trim_end_matches(',');
    let mut parts = text.split(',');
    let count = parts.next().unwrap_or("").trim();
    let declared: usize = count.parse().map_err(|_| {
        SourceError(format!(
            "bytecode must start with the instruction count, found {count:?}"
        ))
    })?;
    let mut out = Vec::new();
    for (i, entry) in parts.enumerate() {
        let fields: Vec<&str> = entry.split_whitespace().collect();
        out.push(parse_fields(&fields, i)?);
    }
    check_count(declared, out.len())?;
    Ok(out)
}

/// Parses `tcpdump -ddd` output: a line with the instruction count, then one `code jt jf k`
/// line per instruction (decimal). Blank lines and `#` comments are ignored.
pub fn parse_ddd(text: &str) -> Result<Vec<Insn>, SourceError> {
    let mut lines = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty());
    let first = lines
        .next()
        .ok_or_else(|| SourceError("empty program: expected the instruction count".into()))?;
    let declared: usize = first.parse().map_err(|_| {
        SourceError(format!(
            "the first line must be the instruction count, found {first:?}"
        ))
    })?;
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        out.push(parse_fields(&fields, i)?);
    }
    check_count(declared, out.len())?;
    Ok(out)
}

/// Formats a program as tc bytecode (the inverse of [`parse_tc_bytecode`]).
pub fn to_tc_bytecode(insns: &[Insn]) -> String {
    let mut s = insns.len().to_string();
    for i in insns {
        s.push(',');
        s.push_str(&i.to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_bytecode_round_trips() {
        let text = "4,40 0 0 12,21 0 1 2048,6 0 0 65535,6 0 0 0";
        let p = parse_tc_bytecode(text).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[1], Insn::new(0x15, 0, 1, 2048));
        assert_eq!(to_tc_bytecode(&p), text);
        assert_eq!(
            parse_tc_bytecode(" 4, 40 0 0 12 ,21 0 1 2048,6 0 0 65535,6 0 0 0,\n"),
            Ok(p)
        );
    }

    #[test]
    fn ddd_parses_tcpdump_output() {
        let text = "4\n40 0 0 12\n21 0 1 2048\n6 0 0 262144\n6 0 0 0\n";
        let p = parse_ddd(text).unwrap();
        assert_eq!(p[2], Insn::new(6, 0, 0, 262_144));
        assert_eq!(
            parse_ddd("# comment\n1\n6 0 0 0x10 # hex is fine\n").unwrap()[0].k,
            16
        );
    }

    #[test]
    fn malformed_sources_name_the_problem() {
        let e = parse_tc_bytecode("3,40 0 0 12,6 0 0 0").unwrap_err().0;
        assert!(e.contains("count says 3") && e.contains("2 follow"), "{e}");
        let e = parse_tc_bytecode("x,6 0 0 0").unwrap_err().0;
        assert!(e.contains("instruction count"), "{e}");
        let e = parse_ddd("1\n6 0 0").unwrap_err().0;
        assert!(e.contains("instruction 0") && e.contains("4 fields"), "{e}");
        let e = parse_ddd("1\n6 256 0 0").unwrap_err().0;
        assert!(e.contains("jt 256 is out of range"), "{e}");
        let e = parse_ddd("1\n65536 0 0 0").unwrap_err().0;
        assert!(e.contains("code 65536"), "{e}");
        let e = parse_ddd("1\n6 0 0 4294967296").unwrap_err().0;
        assert!(e.contains("k 4294967296"), "{e}");
        assert!(parse_ddd("").is_err());
    }

    #[test]
    fn ancillary_offsets_match_the_kernel() {
        assert_eq!(Ancillary::VlanTag.offset(), 44);
        assert_eq!(Ancillary::VlanTagPresent.offset(), 48);
        assert_eq!(Ancillary::VlanTpid.offset(), 60);
        assert_eq!(Ancillary::RxHash.offset(), 32);
        assert_eq!(Ancillary::from_offset(20), Some(Ancillary::Mark));
        assert_eq!(Ancillary::from_offset(12), None);
        assert_eq!(Ancillary::unsupported_name(56), Some("random"));
    }
}
