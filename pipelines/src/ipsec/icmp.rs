//! ICMP errors a tunnel sends back toward a sender whose packet is too big for it (Linux
//! `vti_xmit`: ICMP "fragmentation needed" for IPv4, ICMPv6 "packet too big" for IPv6), built in
//! place from the offending packet, and the reading of ICMP errors about our own ESP packets
//! (`vti4_err`), which lower a tunnel's path MTU.
use crate::packet::Packet;
use crate::wire::{ipproto, ipv4_header_checksum, Parsed, L3};
use crate::DropReason;

/// RFC 1812 §4.3.2.3: an ICMP error holds as much of the original as fits in 576 bytes.
const ICMP4_MAX: usize = 576;
/// RFC 4443 §2.4(c): as much as fits in the IPv6 minimum MTU.
const ICMP6_MAX: usize = 1280;
/// IPv6's minimum link MTU (RFC 8200 §5): packet-too-big never announces less.
pub const IPV6_MIN_MTU: u32 = 1280;

/// One's complement sum of big-endian 16-bit words (RFC 1071), not yet folded or inverted.
fn sum16(mut acc: u64, bytes: &[u8]) -> u64 {
    let mut it = bytes.chunks_exact(2);
    for w in &mut it {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = it.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// RFC 1122 §3.2.2 / RFC 1812 §4.3.2.7: no ICMP error about an ICMP error, a later fragment,
/// or a packet from or to a broadcast, multicast, unspecified or loopback address.
fn may_answer_v4(d: &[u8], parsed: &Parsed) -> bool {
    let l3 = usize::from(parsed.l3_offset);
    let Some(ip) = d.get(l3..l3 + 20) else {
        return false;
    };
    let (src, dst) = (&ip[12..16], &ip[16..20]);
    let bad = |a: &[u8]| a[0] == 0 || a[0] == 127 || a[0] >= 224;
    if bad(src) || dst[0] >= 224 || parsed.later_fragment {
        return false;
    }
    // ICMP errors: destination unreachable, source quench, redirect, time exceeded,
    // parameter problem (`src_port` holds the ICMP type).
    !(parsed.l4_proto == ipproto::ICMP && matches!(parsed.src_port, 3 | 4 | 5 | 11 | 12))
}

/// RFC 4443 §2.4(e): no error about an ICMPv6 error, or to an unspecified or multicast
/// source. (A packet-too-big may answer a multicast destination, §2.4(e.2).)
fn may_answer_v6(d: &[u8], parsed: &Parsed) -> bool {
    let l3 = usize::from(parsed.l3_offset);
    let Some(ip) = d.get(l3..l3 + 40) else {
        return false;
    };
    let src = &ip[8..24];
    if src[0] == 0xff || src.iter().all(|&b| b == 0) {
        return false;
    }
    !(parsed.l4_proto == ipproto::ICMPV6 && parsed.src_port < 128)
}

/// Shapes `pkt` into [L2 header (MACs swapped) | `hdr` bytes of new headers | first `quote`
/// bytes of the original IP packet]; returns the offset of the new IP header.
fn reshape<P: Packet>(pkt: &mut P, l3: usize, hdr: usize, quote: usize) -> Result<(), DropReason> {
    let len = pkt.frame_len() as usize;
    if pkt.data().len() != len || len < l3 + quote {
        return Err(DropReason::TunnelTooBig);
    }
    if !pkt.trim(len - l3 - quote) || !pkt.prepend(hdr) {
        return Err(DropReason::TunnelTooBig);
    }
    let d = pkt.data_mut().ok_or(DropReason::TunnelTooBig)?;
    d.copy_within(hdr..hdr + l3, 0);
    let mut dst = [0u8; 6];
    dst.copy_from_slice(&d[6..12]);
    d.copy_within(0..6, 6);
    d[0..6].copy_from_slice(&dst);
    Ok(())
}

/// Turns `pkt`, an IPv4 packet too big for a tunnel of `mtu`, into an ICMP destination
/// unreachable / fragmentation needed (RFC 1191 §4) from `src` to its sender, to go back out of
/// the port it came from. `Err` when no error may be sent about it (the caller drops it).
pub fn frag_needed<P: Packet>(
    pkt: &mut P,
    parsed: &Parsed,
    mtu: u32,
    src: [u8; 4],
) -> Result<(), DropReason> {
    if parsed.l3 != L3::Ipv4 || !may_answer_v4(pkt.data(), parsed) {
        return Err(DropReason::TunnelTooBig);
    }
    let l3 = usize::from(parsed.l3_offset);
    let quote = usize::from(parsed.ip_len).min(ICMP4_MAX - 28);
    let mut orig_src = [0u8; 4];
    orig_src.copy_from_slice(&pkt.data()[l3 + 12..l3 + 16]);
    reshape(pkt, l3, 28, quote)?;
    let d = pkt.data_mut().ok_or(DropReason::TunnelTooBig)?;
    let total = 28 + quote;
    let ip = &mut d[l3..l3 + 20];
    ip[..12].copy_from_slice(&[0x45, 0xc0, 0, 0, 0, 0, 0, 0, 64, ipproto::ICMP, 0, 0]);
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&orig_src);
    let c = ipv4_header_checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut d[l3 + 20..l3 + total];
    icmp[..8].copy_from_slice(&[3, 4, 0, 0, 0, 0, 0, 0]);
    icmp[6..8].copy_from_slice(&(mtu.min(0xffff) as u16).to_be_bytes());
    let c = fold(sum16(0, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Turns `pkt`, an IPv6 packet too big for a tunnel of `mtu`, into an ICMPv6 packet too big
/// (RFC 4443 §3.2; never below 1280) from `src` to its sender.
pub fn packet_too_big<P: Packet>(
    pkt: &mut P,
    parsed: &Parsed,
    mtu: u32,
    src: [u8; 16],
) -> Result<(), DropReason> {
    if parsed.l3 != L3::Ipv6 || !may_answer_v6(pkt.data(), parsed) {
        return Err(DropReason::TunnelTooBig);
    }
    let l3 = usize::from(parsed.l3_offset);
    let quote = usize::from(parsed.ip_len).min(ICMP6_MAX - 48);
    let mut orig_src = [0u8; 16];
    orig_src.copy_from_slice(&pkt.data()[l3 + 8..l3 + 24]);
    reshape(pkt, l3, 48, quote)?;
    let d = pkt.data_mut().ok_or(DropReason::TunnelTooBig)?;
    let plen = 8 + quote;
    let ip = &mut d[l3..l3 + 40];
    ip[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, ipproto::ICMPV6, 64]);
    ip[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
    ip[8..24].copy_from_slice(&src);
    ip[24..40].copy_from_slice(&orig_src);
    let mut pseudo = sum16(0, &d[l3 + 8..l3 + 40]);
    pseudo += plen as u64 + u64::from(ipproto::ICMPV6);
    let icmp = &mut d[l3 + 40..l3 + 40 + plen];
    icmp[..8].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
    icmp[4..8].copy_from_slice(&mtu.max(IPV6_MIN_MTU).to_be_bytes());
    let c = fold(sum16(pseudo, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// What an ICMP error received on an underlay port says about one of our ESP packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspError {
    /// The quoted ESP packet's source (our endpoint) and destination (the remote).
    pub src: [u8; 4],
    /// See `src`.
    pub dst: [u8; 4],
    /// The quoted SPI.
    pub spi: u32,
    /// The next-hop MTU the error announces.
    pub mtu: u32,
}

/// Reads an ICMP "fragmentation needed" (type 3 code 4) whose quote is an ESP packet (Linux
/// `vti4_err`); `None` for anything else.
pub fn esp_frag_needed(d: &[u8], parsed: &Parsed) -> Option<EspError> {
    if parsed.l3 != L3::Ipv4
        || parsed.l4_proto != ipproto::ICMP
        || parsed.src_port != 3
        || parsed.dst_port != 4
    {
        return None;
    }
    let icmp = usize::from(parsed.l4_offset);
    let h = d.get(icmp..icmp + 8)?;
    let mtu = u32::from(u16::from_be_bytes([h[6], h[7]]));
    let q = d.get(icmp + 8..)?;
    let ihl = usize::from(q.first()? & 0x0f) * 4;
    if q.first()? >> 4 != 4 || ihl < 20 || *q.get(9)? != super::esp::IPPROTO_ESP {
        return None;
    }
    let spi = q.get(ihl..ihl + 4)?;
    Some(EspError {
        src: q.get(12..16)?.try_into().ok()?,
        dst: q.get(16..20)?.try_into().ok()?,
        spi: u32::from_be_bytes(spi.try_into().ok()?),
        mtu,
    })
}
