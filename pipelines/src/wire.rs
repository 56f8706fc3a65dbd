//! Parse-once view of a frame's headers: Ethernet, up to two VLAN tags, IPv4/IPv6 (with IPv6
//! extension headers) and the TCP/UDP/ICMP header. See [`parse`].
use crate::DropReason;

/// EtherType values the parser knows.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service VLAN tag (QinQ outer).
    pub const QINQ: u16 = 0x88a8;
}

/// IP protocol numbers the parser knows.
pub mod ipproto {
    /// IPv6 Hop-by-Hop Options extension header (RFC 8200 §4.3).
    pub const HOPOPT: u8 = 0;
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// DCCP (RFC 4340): ports like UDP's.
    pub const DCCP: u8 = 33;
    /// SCTP (RFC 9260): ports like UDP's.
    pub const SCTP: u8 = 132;
    /// UDP-Lite (RFC 3828): ports like UDP's.
    pub const UDPLITE: u8 = 136;
    /// IPv6 Routing extension header (RFC 8200 §4.4).
    pub const IPV6_ROUTE: u8 = 43;
    /// IPv6 Fragment extension header (RFC 8200 §4.5).
    pub const IPV6_FRAG: u8 = 44;
    /// IP Authentication Header (RFC 4302).
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 Destination Options extension header (RFC 8200 §4.6).
    pub const IPV6_OPTS: u8 = 60;
}

/// The network layer found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L3 {
    /// Not IP (ARP, LLDP, ...): forwarded as an opaque L2 frame.
    #[default]
    Other,
    /// IPv4; the header starts at `Parsed::l3_offset`.
    Ipv4,
    /// IPv6; the fixed header starts at `Parsed::l3_offset`.
    Ipv6,
}

/// What [`parse`] learnt about a frame: offsets into the frame and a few decoded fields, so later
/// stages never parse again. All offsets are from the start of the Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Parsed {
    /// EtherType after any VLAN tags.
    pub ethertype: u16,
    /// Outermost VLAN tag's TCI (priority, DEI, VLAN id), if tagged.
    pub vlan_tci: Option<u16>,
    /// Inner VLAN TCI for double-tagged (QinQ) frames.
    pub inner_vlan_tci: Option<u16>,
    /// Offset of the network header (14, 18 or 22).
    pub l3_offset: u16,
    /// The network layer kind.
    pub l3: L3,
    /// Transport protocol (IPv4 protocol or the IPv6 upper-layer next header); 0 for non-IP.
    pub l4_proto: u8,
    /// Offset of the transport header: the end of the IP header (IPv4 header with options, or the
    /// IPv6 header plus the extension headers followed). For non-IP it equals `l3_offset`; when an
    /// IPv6 extension header lies beyond the first segment it is that header's offset.
    pub l4_offset: u16,
    /// Length of the IP packet as its header states (IPv4 total length, IPv6 40 + payload length);
    /// 0 for non-IP. Bytes past `l3_offset + ip_len` are Ethernet padding.
    pub ip_len: u16,
    /// True for an IPv4 fragment other than the first, or an IPv6 packet with a fragment header
    /// whose offset is not zero: no transport header is present.
    pub later_fragment: bool,
    /// True for any fragment of a fragmented datagram: an IPv4 packet with MF set or a non-zero
    /// offset, an IPv6 packet with a fragment header whose offset is non-zero or whose M flag is
    /// set (an atomic fragment is not one).
    pub fragment: bool,
    /// Source and destination ports for TCP/UDP (0 otherwise); ICMP type and code for ICMP.
    pub src_port: u16,
    /// See `src_port`.
    pub dst_port: u16,
}

/// Length of an Ethernet II header (destination, source, EtherType).
const ETH_HLEN: usize = 14;
/// Length of an 802.1Q / 802.1ad tag (TCI and the next EtherType; the TPID is the previous
/// EtherType field).
const VLAN_HLEN: usize = 4;
/// Minimum IPv4 header length (IHL 5).
const IPV4_MIN_HLEN: usize = 20;
/// IPv6 fixed header length.
const IPV6_HLEN: usize = 40;
/// Most IPv6 extension headers [`parse`] follows before giving up on the chain.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;
/// TCP header without options (RFC 9293 §3.1).
const TCP_MIN_HLEN: usize = 20;
/// UDP header (RFC 768).
const UDP_HLEN: usize = 8;
/// Type, code and checksum of ICMP (RFC 792) / ICMPv6 (RFC 4443 §2.1).
const ICMP_MIN_HLEN: usize = 4;

/// The `N` bytes of `data` at `off`, or `None` when they are not all there.
#[inline(always)]
fn bytes_at<const N: usize>(data: &[u8], off: usize) -> Option<&[u8; N]> {
    data.get(off..)?.first_chunk::<N>()
}

/// The big-endian `u16` at `off`, or `None` when `data` is too short.
#[inline(always)]
fn be16_at(data: &[u8], off: usize) -> Option<u16> {
    bytes_at::<2>(data, off).map(|b| u16::from_be_bytes(*b))
}

/// `v` as `u16`, saturating. Offsets the parser produces are bounded well below `u16::MAX` (see
/// [`parse`]); this only keeps the conversion free of a panic path.
#[inline(always)]
fn sat_u16(v: usize) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// True for the EtherTypes that announce a VLAN tag (IEEE 802.1Q C-tag, 802.1ad S-tag).
#[inline(always)]
fn is_vlan_tpid(ethertype: u16) -> bool {
    ethertype == ethertype::VLAN || ethertype == ethertype::QINQ
}

/// The Internet checksum of `header` (RFC 1071): the ones' complement of the ones' complement
/// sum of its 16-bit big-endian words, an odd trailing byte padded with a zero byte.
///
/// Computing it over an IPv4 header whose checksum field is zero gives the value to store in that
/// field (RFC 791 §3.1); computing it over a header whose checksum field is already correct gives
/// 0, which is how [`parse`] verifies a received header.
#[inline]
pub fn ipv4_header_checksum(header: &[u8]) -> u16 {
    if let Ok(h) = <&[u8; IPV4_MIN_HLEN]>::try_from(header) {
        return !fold20(h);
    }
    // RFC 1071 §2: the sum may be accumulated in wider words and with deferred carries, then
    // folded back to 16 bits. Summing 32-bit words into a u64 cannot overflow for any slice that
    // fits in memory (2^32 words of at most 2^32 - 1 each).
    let mut sum: u64 = 0;
    let mut words = header.chunks_exact(4);
    for w in &mut words {
        if let &[a, b, c, d] = w {
            sum += u64::from(u32::from_be_bytes([a, b, c, d]));
        }
    }
    // 0..=3 trailing bytes, zero padded on the right (RFC 1071 §4.1 pads an odd byte the same way).
    let mut tail = [0u8; 4];
    for (dst, src) in tail.iter_mut().zip(words.remainder()) {
        *dst = *src;
    }
    sum += u64::from(u32::from_be_bytes(tail));
    // Fold the end-around carries: 64 -> 33 -> 32 bits, then 32 -> 17 -> 16 bits.
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// True when `header`'s checksum verifies; a fixed five-word sum for the common 20-byte header.
#[inline(always)]
fn ipv4_checksum_ok(header: &[u8]) -> bool {
    match <&[u8; IPV4_MIN_HLEN]>::try_from(header) {
        Ok(h) => sum20_verifies(h),
        Err(_) => ipv4_header_checksum(header) == 0,
    }
}

/// The checksum of a 20-byte IPv4 header (no options) whose checksum field is zero; the same
/// as [`ipv4_header_checksum`], inlined for the headers the appliance builds.
#[inline(always)]
pub fn ipv4_header_checksum20(header: &[u8; IPV4_MIN_HLEN]) -> u16 {
    !fold20(header)
}

/// The ones' complement sum of a 20-byte header (RFC 1071), folded to 16 bits: five 32-bit
/// words, deferred carries.
#[inline(always)]
fn fold20(h: &[u8; IPV4_MIN_HLEN]) -> u16 {
    // The sum is independent of byte order (RFC 1071 2(B)): sum in the host's order, without a
    // byte swap per word, and swap the folded result once.
    u16::from_be_bytes(fold20_ne(h).to_ne_bytes())
}

/// [`fold20`] in the host's byte order: the folded sum whose in-memory bytes are the big-endian
/// sum's. `0xffff` (a header that verifies) reads the same in both orders.
#[inline(always)]
fn fold20_ne(h: &[u8; IPV4_MIN_HLEN]) -> u16 {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let mut sum = w(0) + w(4) + w(8) + w(12) + w(16);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Whether a 20-byte header's ones' complement sum folds to `0xffff` (its checksum verifies),
/// without folding: three native-order words added with end-around carry give a 64-bit sum
/// `S` congruent, modulo `0xffff`, to the 16-bit words' sum in either byte order (`2^16` and
/// `2^64 - 1` are both `1` and `0` modulo `0xffff`), and the folded sum is `0xffff` exactly when
/// `S` is a non-zero multiple of `0xffff` (only an all-zero header sums to 0).
#[inline(always)]
fn sum20_verifies(h: &[u8; IPV4_MIN_HLEN]) -> bool {
    let (a, rest) = h.split_first_chunk::<8>().unwrap_or((&[0; 8], &[]));
    let (b, c) = rest.split_first_chunk::<8>().unwrap_or((&[0; 8], &[]));
    let c = c.first_chunk::<4>().copied().unwrap_or([0; 4]);
    // An addition that wraps leaves at most 2^64 - 2: adding its carry back cannot wrap.
    let add = |x: u64, y: u64| {
        let (s, o) = x.overflowing_add(y);
        s + u64::from(o)
    };
    let s = add(
        add(u64::from_ne_bytes(*a), u64::from_ne_bytes(*b)),
        u64::from(u32::from_ne_bytes(c)),
    );
    // `s % 0xffff == 0` as one multiplication: for odd `d`, `s` is a multiple of `d` exactly
    // when `s * d⁻¹ (mod 2^64)` is at most `(2^64 - 1) / d` (the multiples map onto 0..=that).
    const INV: u64 = 0xfffe_fffe_fffe_ffff;
    const _: () = assert!(INV.wrapping_mul(0xffff) == 1);
    s != 0 && s.wrapping_mul(INV) <= u64::MAX / 0xffff
}

/// Checks only Ethernet framing: an Ethernet header and complete VLAN tags (up to two). The
/// validation level of ports that forward without inspecting network headers.
#[inline(always)]
pub fn check_framing(data: &[u8]) -> Result<(), DropReason> {
    let Some(&[.., e0, e1]) = data.first_chunk::<ETH_HLEN>() else {
        return Err(DropReason::Runt);
    };
    let mut et = u16::from_be_bytes([e0, e1]);
    if !is_vlan_tpid(et) {
        return Ok(());
    }
    let mut need = ETH_HLEN;
    for _ in 0..2 {
        if !is_vlan_tpid(et) {
            break;
        }
        need += VLAN_HLEN;
        match bytes_at::<2>(data, need - 2) {
            Some(b) => et = u16::from_be_bytes(*b),
            None => return Err(DropReason::Runt),
        }
    }
    Ok(())
}

/// Parses the headers of one Ethernet frame: Ethernet II, up to two VLAN tags (802.1Q / 802.1ad),
/// IPv4 or IPv6 (following IPv6 extension headers), and the TCP, UDP, ICMP or ICMPv6 header.
///
/// * `data`: the first segment, starting at the Ethernet header. Headers are only read from here.
/// * `frame_len`: the frame's total length over all segments. Lengths in the headers are checked
///   against it; bytes of `data` past `frame_len` (which a well-formed packet never has) are
///   ignored, so every offset in the result is within `frame_len`.
/// * `ipv4_csum_verified`: the NIC already verified the IPv4 header checksum; skip doing so.
///
/// Returns the [`DropReason`] of the first check that fails. Frames that are well formed but carry
/// something the parser does not look into (non-IP EtherTypes, a third VLAN tag, unknown transport
/// protocols, non-first fragments, headers beyond the first segment) are not dropped: the result
/// just says less (ports 0, [`L3::Other`], ...).
///
/// Limits, by design:
/// * IPv6 jumbograms (RFC 2675, payload length 0 plus a Jumbo Payload option) are not supported:
///   a payload length of 0 is taken as-is (an empty payload). An IPv6 packet whose 40 + payload
///   length does not fit `Parsed::ip_len` (a `u16`) is dropped as
///   [`DropReason::Ipv6BadPayloadLength`]; no Ethernet MTU carries one.
/// * At most [`MAX_IPV6_EXT_HEADERS`] IPv6 extension headers are followed.
///
/// Never panics, never allocates.
#[inline]
pub fn parse(data: &[u8], frame_len: u32, ipv4_csum_verified: bool) -> Result<Parsed, DropReason> {
    parse_inlined(data, frame_len, ipv4_csum_verified)
}

/// Validates a frame exactly as [`parse`] does, keeping nothing: the check of ports that
/// forward without classifying. Inlined into its caller, where the unused result costs nothing.
#[inline(always)]
pub fn check(data: &[u8], frame_len: u32, ipv4_csum_verified: bool) -> Result<(), DropReason> {
    match check_ipv4_fast(data, frame_len, ipv4_csum_verified) {
        Some(r) => r,
        None => parse_inlined(data, frame_len, ipv4_csum_verified).map(|_| ()),
    }
}

/// [`check`] for the common frame, with its header bytes read at fixed offsets from one
/// bounds-checked prefix: untagged IPv4 without options, not a fragment, carrying UDP or TCP,
/// whose first segment holds the transport header. The same checks in the same order as
/// [`parse`], so the same verdict; `None` for every other frame (the general path decides).
#[inline(always)]
fn check_ipv4_fast(
    data: &[u8],
    frame_len: u32,
    csum_verified: bool,
) -> Option<Result<(), DropReason>> {
    const L3: usize = ETH_HLEN;
    const L4: usize = ETH_HLEN + IPV4_MIN_HLEN;
    let frame_len = usize::try_from(frame_len).ok()?;
    // The TCP prefix covers the UDP one; shorter first segments take the general path.
    let h = data.first_chunk::<{ L4 + TCP_MIN_HLEN }>()?;
    if frame_len < data.len()
        || h[12..14] != ethertype::IPV4.to_be_bytes()
        || h[L3] != 0x45
        || h[L3 + 6] & 0x3f != 0
        || h[L3 + 7] != 0
    {
        return None;
    }
    let proto = h[L3 + 9];
    if proto != ipproto::UDP && proto != ipproto::TCP {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([h[L3 + 2], h[L3 + 3]]));
    let ip_end = L3 + total_len;
    if total_len < IPV4_MIN_HLEN || ip_end > frame_len {
        return Some(Err(DropReason::Ipv4BadTotalLength));
    }
    if !csum_verified {
        let header = h[L3..L4].first_chunk::<IPV4_MIN_HLEN>()?;
        if !sum20_verifies(header) {
            return Some(Err(DropReason::Ipv4BadChecksum));
        }
    }
    // Bytes after the IPv4 header (total_len >= 20 here). A length that fits them passes; the
    // reason for one that does not is parse's: no room for the header at all comes first.
    let avail = total_len - IPV4_MIN_HLEN;
    Some(if proto == ipproto::UDP {
        let len = usize::from(u16::from_be_bytes([h[L4 + 4], h[L4 + 5]]));
        if (UDP_HLEN..=avail).contains(&len) {
            Ok(())
        } else if avail < UDP_HLEN {
            Err(DropReason::L4Truncated)
        } else {
            Err(DropReason::UdpBadLength)
        }
    } else {
        let hlen = usize::from(h[L4 + 12] >> 4) * 4;
        if (TCP_MIN_HLEN..=avail).contains(&hlen) {
            Ok(())
        } else if avail < TCP_MIN_HLEN {
            Err(DropReason::L4Truncated)
        } else {
            Err(DropReason::TcpBadDataOffset)
        }
    })
}

/// The body of [`parse`] and [`check`].
#[inline(always)]
fn parse_inlined(
    data: &[u8],
    frame_len: u32,
    ipv4_csum_verified: bool,
) -> Result<Parsed, DropReason> {
    let frame_len = usize::try_from(frame_len).unwrap_or(usize::MAX);
    // Only the bytes that belong to the frame; a no-op for any sane packet.
    let data = data.get(..frame_len).unwrap_or(data);

    // Ethernet II and up to two VLAN tags (IEEE 802.1Q / 802.1ad).
    let mut p = Parsed::default();
    let Some(mut et) = be16_at(data, ETH_HLEN - 2) else {
        return Err(DropReason::Runt);
    };
    let mut l3 = ETH_HLEN;
    if is_vlan_tpid(et) {
        let Some(&[t0, t1, e0, e1]) = bytes_at::<4>(data, l3) else {
            return Err(DropReason::Runt);
        };
        p.vlan_tci = Some(u16::from_be_bytes([t0, t1]));
        et = u16::from_be_bytes([e0, e1]);
        l3 += VLAN_HLEN;
        if is_vlan_tpid(et) {
            let Some(&[t0, t1, e0, e1]) = bytes_at::<4>(data, l3) else {
                return Err(DropReason::Runt);
            };
            p.inner_vlan_tci = Some(u16::from_be_bytes([t0, t1]));
            et = u16::from_be_bytes([e0, e1]);
            l3 += VLAN_HLEN;
            // A third tag is not followed: `et` is its TPID, which the match below sees as
            // a non-IP EtherType.
        }
    }
    p.ethertype = et;
    p.l3_offset = sat_u16(l3);
    p.l4_offset = p.l3_offset;

    match et {
        ethertype::IPV4 => {
            p.l3 = L3::Ipv4;
            parse_ipv4(data, frame_len, l3, ipv4_csum_verified, &mut p)?;
        }
        ethertype::IPV6 => {
            p.l3 = L3::Ipv6;
            parse_ipv6(data, frame_len, l3, &mut p)?;
        }
        _ => {}
    }
    Ok(p)
}

/// IPv4 header (RFC 791 §3.1) at `l3`, then the transport header.
#[inline(always)]
fn parse_ipv4(
    data: &[u8],
    frame_len: usize,
    l3: usize,
    csum_verified: bool,
    p: &mut Parsed,
) -> Result<(), DropReason> {
    let Some(fixed) = bytes_at::<IPV4_MIN_HLEN>(data, l3) else {
        return Err(DropReason::Ipv4Truncated);
    };
    let &[ver_ihl, _tos, tl0, tl1, _id0, _id1, fo0, fo1, _ttl, proto, ..] = fixed;
    if ver_ihl >> 4 != 4 {
        return Err(DropReason::Ipv4BadVersion);
    }
    // IHL counts 32-bit words (RFC 791 §3.1), at least 5.
    let hlen = usize::from(ver_ihl & 0x0f) * 4;
    if hlen < IPV4_MIN_HLEN {
        return Err(DropReason::Ipv4BadHeaderLength);
    }
    let Some(header) = data.get(l3..l3 + hlen) else {
        return Err(DropReason::Ipv4Truncated);
    };
    // Total length covers header and data; anything after it in the frame is Ethernet padding.
    let total_len = u16::from_be_bytes([tl0, tl1]);
    let ip_end = l3 + usize::from(total_len);
    if usize::from(total_len) < hlen || ip_end > frame_len {
        return Err(DropReason::Ipv4BadTotalLength);
    }
    if !csum_verified && !ipv4_checksum_ok(header) {
        return Err(DropReason::Ipv4BadChecksum);
    }
    let l4 = l3 + hlen;
    p.ip_len = total_len;
    p.l4_proto = proto;
    p.l4_offset = sat_u16(l4);
    // Flags (3 bits: reserved, DF, MF) and the 13-bit fragment offset in 8-byte units (RFC 791).
    let frag = u16::from_be_bytes([fo0, fo1]);
    p.fragment = frag & 0x3fff != 0;
    if frag & 0x1fff != 0 {
        p.later_fragment = true;
        return Ok(());
    }
    let first_fragment = frag & 0x2000 != 0;
    (p.src_port, p.dst_port) = parse_l4(data, l4, ip_end, proto, ipproto::ICMP, first_fragment)?;
    Ok(())
}

/// IPv6 header (RFC 8200 §3) at `l3`, its extension headers (RFC 8200 §4), then the transport
/// header.
#[inline(always)]
fn parse_ipv6(data: &[u8], frame_len: usize, l3: usize, p: &mut Parsed) -> Result<(), DropReason> {
    let Some(&[v, _, _, _, pl0, pl1, next, ..]) = bytes_at::<IPV6_HLEN>(data, l3) else {
        return Err(DropReason::Ipv6Truncated);
    };
    if v >> 4 != 6 {
        return Err(DropReason::Ipv6BadVersion);
    }
    let ip_len = IPV6_HLEN + usize::from(u16::from_be_bytes([pl0, pl1]));
    let ip_end = l3 + ip_len;
    if ip_end > frame_len {
        return Err(DropReason::Ipv6BadPayloadLength);
    }
    // 40 + payload length above 65535 cannot be reported in `ip_len` (no Ethernet MTU is this
    // large; jumbograms are not supported).
    let Ok(ip_len) = u16::try_from(ip_len) else {
        return Err(DropReason::Ipv6BadPayloadLength);
    };
    p.ip_len = ip_len;

    // Extension headers, RFC 8200 §4. Each is at least 8 bytes and starts with Next Header.
    let mut nh = next;
    let mut off = l3 + IPV6_HLEN;
    let mut first_fragment = false;
    let mut followed = 0;
    // Any other Next Header is the upper-layer header (including ESP 50 and No Next Header 59).
    while matches!(
        nh,
        ipproto::HOPOPT
            | ipproto::IPV6_ROUTE
            | ipproto::IPV6_OPTS
            | ipproto::IPV6_FRAG
            | ipproto::AH
    ) {
        if followed == MAX_IPV6_EXT_HEADERS || off + 8 > ip_end {
            return Err(DropReason::Ipv6BadExtensionHeader);
        }
        followed += 1;
        let Some(&[ext_next, ext_len]) = bytes_at::<2>(data, off) else {
            // Beyond the first segment: report the header we cannot look into.
            return ipv6_stop(p, nh, off);
        };
        let len = match nh {
            // Fragment (§4.5): fixed 8 bytes.
            ipproto::IPV6_FRAG => 8,
            // Authentication Header (RFC 4302 §2.2): Payload Len in 4-byte units, minus 2.
            ipproto::AH => (usize::from(ext_len) + 2) * 4,
            // Hop-by-Hop (§4.3), Routing (§4.4), Destination Options (§4.6): Hdr Ext Len in
            // 8-byte units, not counting the first 8 bytes.
            _ => (usize::from(ext_len) + 1) * 8,
        };
        if off + len > ip_end {
            return Err(DropReason::Ipv6BadExtensionHeader);
        }
        let Some(ext) = data.get(off..off + len) else {
            return ipv6_stop(p, nh, off);
        };
        if nh == ipproto::IPV6_FRAG {
            // Fragment Offset (13 bits, 8-byte units), 2 reserved bits, M flag.
            if let Some(&[_, _, f0, f1]) = ext.first_chunk::<4>() {
                let frag = u16::from_be_bytes([f0, f1]);
                p.fragment = frag & 0xfff9 != 0;
                if frag >> 3 != 0 {
                    p.later_fragment = true;
                    return ipv6_stop(p, ext_next, off + len);
                }
                first_fragment = frag & 1 != 0;
            }
        }
        nh = ext_next;
        off += len;
    }
    p.l4_proto = nh;
    p.l4_offset = sat_u16(off);
    (p.src_port, p.dst_port) = parse_l4(data, off, ip_end, nh, ipproto::ICMPV6, first_fragment)?;
    Ok(())
}

/// Ends IPv6 parsing without a transport header: `proto` at `off`, ports 0.
#[inline(always)]
fn ipv6_stop(p: &mut Parsed, proto: u8, off: usize) -> Result<(), DropReason> {
    p.l4_proto = proto;
    p.l4_offset = sat_u16(off);
    Ok(())
}

/// Checks the transport header at `l4` of an IP payload ending at `ip_end` (`l4 <= ip_end`) and
/// returns (source port, destination port), or (type, code) for ICMP. `icmp` is the ICMP protocol
/// number of the IP version at hand. In a first fragment (`first_fragment`) the UDP length covers
/// the whole datagram, so it is not compared with this fragment's payload.
#[inline(always)]
fn parse_l4(
    data: &[u8],
    l4: usize,
    ip_end: usize,
    proto: u8,
    icmp: u8,
    first_fragment: bool,
) -> Result<(u16, u16), DropReason> {
    let avail = ip_end.saturating_sub(l4);
    let min_len = match proto {
        ipproto::TCP => TCP_MIN_HLEN,
        ipproto::UDP => UDP_HLEN,
        _ if proto == icmp => ICMP_MIN_HLEN,
        _ => return Ok((0, 0)),
    };
    if avail < min_len {
        return Err(DropReason::L4Truncated);
    }
    match proto {
        ipproto::TCP => {
            // RFC 9293 §3.1: Data Offset (4 bits) counts 32-bit words, at least 5.
            let Some(&[s0, s1, d0, d1, .., doff, _, _, _, _, _, _, _]) =
                bytes_at::<TCP_MIN_HLEN>(data, l4)
            else {
                return Ok((0, 0)); // beyond the first segment
            };
            let hlen = usize::from(doff >> 4) * 4;
            if hlen < TCP_MIN_HLEN || hlen > avail {
                return Err(DropReason::TcpBadDataOffset);
            }
            Ok((u16::from_be_bytes([s0, s1]), u16::from_be_bytes([d0, d1])))
        }
        ipproto::UDP => {
            // RFC 768: Length covers header and data, so at least 8.
            let Some(&[s0, s1, d0, d1, l0, l1, _, _]) = bytes_at::<UDP_HLEN>(data, l4) else {
                return Ok((0, 0));
            };
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            if len < UDP_HLEN || (len > avail && !first_fragment) {
                return Err(DropReason::UdpBadLength);
            }
            Ok((u16::from_be_bytes([s0, s1]), u16::from_be_bytes([d0, d1])))
        }
        _ => {
            // ICMP (RFC 792) / ICMPv6 (RFC 4443 §2.1): type, code.
            let Some(&[ty, code, _, _]) = bytes_at::<ICMP_MIN_HLEN>(data, l4) else {
                return Ok((0, 0));
            };
            Ok((u16::from(ty), u16::from(code)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        ArpHardwareId, ArpOperation, ArpPacket, DoubleVlanHeader, EtherType, Ethernet2Header,
        IpAuthHeader, IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv4Options, Ipv6Extensions,
        Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions, LinkExtSlice,
        NetSlice, PacketBuilder, PacketBuilderStep, SingleVlanHeader, SlicedPacket, TransportSlice,
        VlanHeader, VlanId, VlanPcp,
    };
    use proptest::prelude::*;

    const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
    /// PCP 5, DEI set, VID 0x123: every TCI bit group is non-zero.
    const OUTER_TCI: u16 = (5 << 13) | (1 << 12) | 0x123;
    /// PCP 3, DEI clear, VID 0x0ab.
    const INNER_TCI: u16 = (3 << 13) | 0x0ab;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Tags {
        Untagged,
        Single,
        Double,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Net {
        V4,
        V6,
        /// IPv6 with an 8-byte Hop-by-Hop and a 16-byte Destination Options header.
        V6Ext,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Transport {
        /// TCP with 4 bytes of options (data offset 6).
        Tcp,
        Udp,
        /// ICMP for IPv4, ICMPv6 for IPv6.
        Icmp,
    }

    fn vlan_tag(tci: u16) -> SingleVlanHeader {
        SingleVlanHeader {
            pcp: VlanPcp::try_new((tci >> 13) as u8).unwrap(),
            drop_eligible_indicator: tci & 0x1000 != 0,
            vlan_id: VlanId::try_new(tci & 0x0fff).unwrap(),
            ether_type: EtherType(0), // set by the builder
        }
    }

    fn eth_step(tags: Tags, tcis: (u16, u16), ip: IpHeaders) -> PacketBuilderStep<IpHeaders> {
        let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
        match tags {
            Tags::Untagged => eth.ip(ip),
            Tags::Single => eth.vlan(VlanHeader::Single(vlan_tag(tcis.0))).ip(ip),
            Tags::Double => eth
                .vlan(VlanHeader::Double(DoubleVlanHeader {
                    outer: vlan_tag(tcis.0),
                    inner: vlan_tag(tcis.1),
                }))
                .ip(ip),
        }
    }

    fn v4_header(src: [u8; 4], dst: [u8; 4]) -> IpHeaders {
        // Payload length, protocol and checksum are filled in by the builder.
        IpHeaders::Ipv4(
            Ipv4Header::new(0, 64, IpNumber(0), src, dst).unwrap(),
            Default::default(),
        )
    }

    fn v6_header(src: [u8; 16], dst: [u8; 16], exts: Ipv6Extensions) -> IpHeaders {
        IpHeaders::Ipv6(
            Ipv6Header {
                hop_limit: 64,
                source: src,
                destination: dst,
                ..Default::default()
            },
            exts,
        )
    }

    fn hbh_dst_exts() -> Ipv6Extensions {
        Ipv6Extensions {
            // 2 + 6 = 8 bytes (Hdr Ext Len 0), 2 + 14 = 16 bytes (Hdr Ext Len 1); Pad1 options.
            hop_by_hop_options: Some(Ipv6RawExtHeader::new_raw(IpNumber(0), &[0; 6]).unwrap()),
            destination_options: Some(Ipv6RawExtHeader::new_raw(IpNumber(0), &[0; 14]).unwrap()),
            ..Default::default()
        }
    }

    /// Writes the transport layer and payload of `step`.
    fn finish(
        step: PacketBuilderStep<IpHeaders>,
        l4: Transport,
        v6: bool,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        match (l4, v6) {
            (Transport::Tcp, _) => step
                .tcp(1234, 80, 1, 1000)
                .options_raw(&[1, 1, 1, 1]) // four NOPs
                .unwrap()
                .write(&mut out, payload)
                .unwrap(),
            (Transport::Udp, _) => step.udp(5353, 53).write(&mut out, payload).unwrap(),
            (Transport::Icmp, false) => step
                .icmpv4_raw(3, 4, [0, 0, 0x05, 0xdc])
                .write(&mut out, payload)
                .unwrap(),
            (Transport::Icmp, true) => step
                .icmpv6_raw(1, 4, [0; 4])
                .write(&mut out, payload)
                .unwrap(),
        }
        out
    }

    fn build(tags: Tags, net: Net, l4: Transport, payload: &[u8]) -> Vec<u8> {
        let ip = match net {
            Net::V4 => v4_header([192, 0, 2, 1], [198, 51, 100, 7]),
            Net::V6 => v6_header([0x20; 16], [0x30; 16], Default::default()),
            Net::V6Ext => v6_header([0x20; 16], [0x30; 16], hbh_dst_exts()),
        };
        finish(
            eth_step(tags, (OUTER_TCI, INNER_TCI), ip),
            l4,
            net != Net::V4,
            payload,
        )
    }

    /// Recomputes the IPv4 header checksum of the header at `l3`.
    fn fix_v4_csum(frame: &mut [u8], l3: usize) {
        let hlen = usize::from(frame[l3] & 0x0f) * 4;
        frame[l3 + 10..l3 + 12].fill(0);
        let c = ipv4_header_checksum(&frame[l3..l3 + hlen]);
        frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }

    fn set_be16(frame: &mut [u8], off: usize, v: u16) {
        frame[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Invariants of any `Ok` result; `data`/`frame_len` as given to [`parse`].
    fn check_invariants(data: &[u8], frame_len: u32, p: &Parsed) {
        let frame_len = frame_len as usize;
        let visible = data.len().min(frame_len);
        let l3 = usize::from(p.l3_offset);
        let l4 = usize::from(p.l4_offset);
        let tags = usize::from(p.vlan_tci.is_some()) + usize::from(p.inner_vlan_tci.is_some());
        assert!(p.inner_vlan_tci.is_none() || p.vlan_tci.is_some(), "{p:?}");
        assert_eq!(l3, ETH_HLEN + VLAN_HLEN * tags, "{p:?}");
        assert!(l3 <= visible, "{p:?}");
        assert!(l3 <= l4, "{p:?}");
        match p.l3 {
            L3::Other => {
                assert_ne!(p.ethertype, ethertype::IPV4);
                assert_ne!(p.ethertype, ethertype::IPV6);
                assert_eq!((p.ip_len, p.l4_proto, l4), (0, 0, l3), "{p:?}");
                assert_eq!((p.src_port, p.dst_port, p.later_fragment), (0, 0, false));
            }
            L3::Ipv4 | L3::Ipv6 => {
                let ip_end = l3 + usize::from(p.ip_len);
                assert!(ip_end <= frame_len, "{p:?}");
                assert!(l4 <= ip_end, "{p:?}");
                if p.l3 == L3::Ipv4 {
                    assert_eq!(p.ethertype, ethertype::IPV4);
                    assert!(
                        (20..=60).contains(&(l4 - l3)) && (l4 - l3) % 4 == 0,
                        "{p:?}"
                    );
                    assert!(usize::from(p.ip_len) >= l4 - l3, "{p:?}");
                } else {
                    assert_eq!(p.ethertype, ethertype::IPV6);
                    assert!(l4 - l3 >= IPV6_HLEN && (l4 - l3) % 4 == 0, "{p:?}");
                }
                if p.later_fragment {
                    assert_eq!((p.src_port, p.dst_port), (0, 0), "{p:?}");
                }
            }
        }
    }

    fn parse_checked(data: &[u8], frame_len: u32, verified: bool) -> Result<Parsed, DropReason> {
        let r = parse(data, frame_len, verified);
        if let Ok(p) = &r {
            check_invariants(data, frame_len, p);
        }
        // A NIC-verified checksum can only turn a drop into a pass, never the reverse.
        if !verified {
            let v = parse(data, frame_len, true);
            match r {
                Ok(p) => assert_eq!(v, Ok(p)),
                Err(DropReason::Ipv4BadChecksum) => assert_ne!(v, r),
                Err(_) => assert_eq!(v, r),
            }
        }
        r
    }

    // ---- valid frames: every combination, every field ----

    /// RFC 1071 as written: 16-bit words, end-around carry after each addition.
    fn naive_checksum(h: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for c in h.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn checksum_matches_rfc_1071_on_random_and_extreme_headers() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut headers: Vec<Vec<u8>> = vec![vec![0xff; 20], vec![0; 20], vec![0xff; 60]];
        for i in 0..20_000 {
            let len = if i % 4 == 0 { 20 + 4 * (i % 11) } else { 20 };
            let h: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly 0xff bytes now and then, to provoke carries.
                    if x.is_multiple_of(5) {
                        0xff
                    } else {
                        x as u8
                    }
                })
                .collect();
            headers.push(h);
        }
        for h in &headers {
            assert_eq!(ipv4_header_checksum(h), naive_checksum(h), "{h:02x?}");
            assert_eq!(ipv4_checksum_ok(h), naive_checksum(h) == 0, "{h:02x?}");
            let mut fixed = h.clone();
            fixed[10..12].fill(0);
            let c = ipv4_header_checksum(&fixed);
            fixed[10..12].copy_from_slice(&c.to_be_bytes());
            assert!(ipv4_checksum_ok(&fixed));
        }
    }

    #[test]
    fn checksum_fast_path_agrees_with_the_general_sum() {
        let mut h = [
            0x45u8, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 192, 168, 1, 1, 10, 0, 0, 9,
        ];
        let c = ipv4_header_checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(ipv4_checksum_ok(&h));
        for i in 0..20 {
            let mut bad = h;
            bad[i] ^= 0x10;
            assert_eq!(
                ipv4_checksum_ok(&bad),
                ipv4_header_checksum(&bad) == 0,
                "byte {i}"
            );
            assert!(!ipv4_checksum_ok(&bad));
        }
    }

    #[test]
    fn framing_check_accepts_complete_tags_and_rejects_cut_ones() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        assert_eq!(check_framing(&f), Ok(()));
        assert_eq!(check_framing(&f[..13]), Err(DropReason::Runt));
        let mut v = vec![0u8; 12];
        v.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        assert_eq!(
            check_framing(&v),
            Err(DropReason::Runt),
            "tag without inner EtherType"
        );
        v.extend_from_slice(&[0x88, 0xa8]);
        assert_eq!(
            check_framing(&v),
            Err(DropReason::Runt),
            "second tag announced but missing"
        );
        v.extend_from_slice(&[0x00, 0x05, 0x08, 0x00]);
        assert_eq!(check_framing(&v), Ok(()));
    }

    #[test]
    fn matrix_of_valid_frames_parses_every_field() {
        let payload = [0xa5u8; 10];
        for tags in [Tags::Untagged, Tags::Single, Tags::Double] {
            for net in [Net::V4, Net::V6, Net::V6Ext] {
                for l4 in [Transport::Tcp, Transport::Udp, Transport::Icmp] {
                    let frame = build(tags, net, l4, &payload);
                    let ctx = format!("{tags:?} {net:?} {l4:?}");
                    let n_tags = match tags {
                        Tags::Untagged => 0,
                        Tags::Single => 1,
                        Tags::Double => 2,
                    };
                    let l3 = 14 + 4 * n_tags;
                    let ip_hdr = match net {
                        Net::V4 => 20,
                        Net::V6 => 40,
                        Net::V6Ext => 40 + 8 + 16,
                    };
                    let l4_hdr = match l4 {
                        Transport::Tcp => 24,
                        Transport::Udp | Transport::Icmp => 8,
                    };
                    let (l4_proto, ports) = match (l4, net) {
                        (Transport::Tcp, _) => (6, (1234, 80)),
                        (Transport::Udp, _) => (17, (5353, 53)),
                        (Transport::Icmp, Net::V4) => (1, (3, 4)),
                        (Transport::Icmp, _) => (58, (1, 4)),
                    };
                    let expected = Parsed {
                        ethertype: if net == Net::V4 { 0x0800 } else { 0x86dd },
                        vlan_tci: (n_tags >= 1).then_some(OUTER_TCI),
                        inner_vlan_tci: (n_tags == 2).then_some(INNER_TCI),
                        l3_offset: l3,
                        l3: if net == Net::V4 { L3::Ipv4 } else { L3::Ipv6 },
                        l4_proto,
                        l4_offset: l3 + ip_hdr,
                        ip_len: ip_hdr + l4_hdr + payload.len() as u16,
                        later_fragment: false,
                        fragment: false,
                        src_port: ports.0,
                        dst_port: ports.1,
                    };
                    assert_eq!(frame.len(), usize::from(l3 + expected.ip_len), "{ctx}");
                    assert_eq!(
                        parse_checked(&frame, frame.len() as u32, false),
                        Ok(expected),
                        "{ctx}"
                    );

                    // Multi-segment: only the network headers in the first segment. Not dropped,
                    // the transport header is just not visible.
                    let cut = &frame[..usize::from(expected.l4_offset)];
                    let partial = Parsed {
                        src_port: 0,
                        dst_port: 0,
                        ..expected
                    };
                    assert_eq!(
                        parse_checked(cut, frame.len() as u32, false),
                        Ok(partial),
                        "{ctx}"
                    );
                }
            }
        }
    }

    #[test]
    fn ethernet_padding_is_allowed() {
        // 14 + 20 + 8 + 4 = 46 bytes, padded to the 60-byte Ethernet minimum.
        let mut frame = build(Tags::Untagged, Net::V4, Transport::Udp, &[1, 2, 3, 4]);
        assert_eq!(frame.len(), 46);
        frame.resize(60, 0);
        let p = parse_checked(&frame, 60, false).unwrap();
        assert_eq!(
            (p.ip_len, p.l4_offset, p.src_port, p.dst_port),
            (32, 34, 5353, 53)
        );
        // Same with a VLAN tag and non-zero padding.
        let mut frame = build(Tags::Single, Net::V4, Transport::Tcp, &[]);
        frame.resize(64, 0xee);
        let p = parse_checked(&frame, 64, false).unwrap();
        assert_eq!((p.ip_len, p.l4_offset, p.src_port), (44, 38, 1234));
        // IPv6 with trailing bytes (e.g. an FCS left on the frame).
        let mut frame = build(Tags::Untagged, Net::V6, Transport::Udp, &[9; 3]);
        frame.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
        assert_eq!((p.ip_len, p.src_port), (51, 5353));
    }

    #[test]
    fn non_ip_ethertypes_are_other() {
        let arp = ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            ArpOperation::REQUEST,
            &SRC_MAC,
            &[192, 0, 2, 1],
            &[0; 6],
            &[192, 0, 2, 2],
        )
        .unwrap();
        let builder = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
            .vlan(VlanHeader::Single(vlan_tag(OUTER_TCI)))
            .arp(arp);
        let mut frame = Vec::new();
        builder.write(&mut frame).unwrap();
        let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
        assert_eq!(
            p,
            Parsed {
                ethertype: ethertype::ARP,
                vlan_tci: Some(OUTER_TCI),
                l3_offset: 18,
                l4_offset: 18,
                ..Default::default()
            }
        );
        // A bare 14-byte header with an unknown EtherType.
        let mut frame = [0u8; 14];
        set_be16(&mut frame, 12, 0x88cc); // LLDP
        let p = parse_checked(&frame, 14, false).unwrap();
        assert_eq!(
            (p.l3, p.ethertype, p.l3_offset, p.l4_offset),
            (L3::Other, 0x88cc, 14, 14)
        );
    }

    #[test]
    fn third_vlan_tag_is_not_followed() {
        let qinq = build(Tags::Double, Net::V4, Transport::Udp, &[0; 8]);
        // Insert a third tag (TPID 0x8100, TCI 0x0777) after the second.
        let mut frame = qinq[..20].to_vec();
        frame.extend_from_slice(&[0x81, 0x00, 0x07, 0x77]);
        frame.extend_from_slice(&qinq[20..]);
        let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
        assert_eq!(
            p,
            Parsed {
                ethertype: ethertype::VLAN,
                vlan_tci: Some(OUTER_TCI),
                inner_vlan_tci: Some(INNER_TCI),
                l3_offset: 22,
                l4_offset: 22,
                ..Default::default()
            }
        );
        // Either TPID works in either position.
        let mut frame = build(Tags::Double, Net::V4, Transport::Udp, &[0; 8]);
        set_be16(&mut frame, 12, ethertype::VLAN);
        set_be16(&mut frame, 16, ethertype::QINQ);
        let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
        assert_eq!(
            (p.l3, p.l3_offset, p.inner_vlan_tci),
            (L3::Ipv4, 22, Some(INNER_TCI))
        );
    }

    // ---- every drop reason parse returns ----

    #[test]
    fn runt() {
        let frame = build(Tags::Untagged, Net::V4, Transport::Udp, &[0; 18]);
        for n in 0..14 {
            assert_eq!(
                parse_checked(&frame[..n], n as u32, false),
                Err(DropReason::Runt),
                "{n}"
            );
            // Even when the frame is longer than its first segment.
            assert_eq!(
                parse_checked(&frame[..n], 60, false),
                Err(DropReason::Runt),
                "{n}"
            );
        }
        // frame_len below the data length: the bytes past frame_len are not part of the frame.
        assert_eq!(parse_checked(&frame, 13, false), Err(DropReason::Runt));
    }

    #[test]
    fn cut_vlan_tag_is_runt() {
        let single = build(Tags::Single, Net::V4, Transport::Udp, &[0; 18]);
        for n in 14..18 {
            assert_eq!(
                parse_checked(&single[..n], n as u32, false),
                Err(DropReason::Runt),
                "{n}"
            );
        }
        // The tag is complete, the IPv4 header is missing.
        assert_eq!(
            parse_checked(&single[..18], 18, false),
            Err(DropReason::Ipv4Truncated)
        );
        let double = build(Tags::Double, Net::V6, Transport::Udp, &[0; 18]);
        for n in 14..22 {
            assert_eq!(
                parse_checked(&double[..n], n as u32, false),
                Err(DropReason::Runt),
                "{n}"
            );
        }
        assert_eq!(
            parse_checked(&double[..22], 22, false),
            Err(DropReason::Ipv6Truncated)
        );
    }

    #[test]
    fn ipv4_truncated() {
        for tags in [Tags::Untagged, Tags::Double] {
            let frame = build(tags, Net::V4, Transport::Udp, &[0; 30]);
            let l3 = if tags == Tags::Untagged { 14 } else { 22 };
            for n in l3..l3 + 20 {
                let r = parse_checked(&frame[..n], n as u32, false);
                assert_eq!(r, Err(DropReason::Ipv4Truncated), "{n}");
                // First segment too short to hold the header, even if the frame is long enough.
                let r = parse_checked(&frame[..n], frame.len() as u32, false);
                assert_eq!(r, Err(DropReason::Ipv4Truncated), "{n}");
            }
        }
        // IHL 15 (60 bytes) but only 32 bytes of IP packet: the options are not there.
        let mut frame = build(Tags::Untagged, Net::V4, Transport::Udp, &[0; 4]);
        frame[14] = 0x4f;
        fix_v4_csum_lenient(&mut frame);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::Ipv4Truncated)
        );
    }

    /// Sets a checksum that verifies over the 20 bytes present, for headers whose IHL says more.
    fn fix_v4_csum_lenient(frame: &mut [u8]) {
        frame[24..26].fill(0);
        let c = ipv4_header_checksum(&frame[14..34]);
        frame[24..26].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn ipv4_bad_version() {
        for version in [0u8, 5, 6, 15] {
            let mut frame = build(Tags::Single, Net::V4, Transport::Tcp, &[0; 4]);
            frame[18] = (version << 4) | 5;
            fix_v4_csum(&mut frame, 18);
            let r = parse_checked(&frame, frame.len() as u32, false);
            assert_eq!(r, Err(DropReason::Ipv4BadVersion), "{version}");
        }
        // An IPv6 header behind EtherType IPv4.
        let v6 = build(Tags::Untagged, Net::V6, Transport::Udp, &[0; 4]);
        let mut frame = v6.clone();
        set_be16(&mut frame, 12, ethertype::IPV4);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::Ipv4BadVersion)
        );
    }

    #[test]
    fn ipv4_bad_header_length() {
        for ihl in 0u8..5 {
            let mut frame = build(Tags::Untagged, Net::V4, Transport::Udp, &[0; 4]);
            frame[14] = 0x40 | ihl;
            fix_v4_csum_lenient(&mut frame);
            let r = parse_checked(&frame, frame.len() as u32, false);
            assert_eq!(r, Err(DropReason::Ipv4BadHeaderLength), "{ihl}");
        }
    }

    #[test]
    fn ipv4_bad_total_length() {
        let base = build(Tags::Untagged, Net::V4, Transport::Udp, &[0; 10]);
        let ip_len = (base.len() - 14) as u16;
        for total_len in [0, 19, ip_len + 1, u16::MAX] {
            let mut frame = base.clone();
            set_be16(&mut frame, 16, total_len);
            fix_v4_csum(&mut frame, 14);
            let r = parse_checked(&frame, frame.len() as u32, false);
            assert_eq!(r, Err(DropReason::Ipv4BadTotalLength), "{total_len}");
        }
        // Exactly the frame: fine. Shorter than the frame: the rest is padding, so the IP packet
        // is fine (but its UDP length now exceeds the IP payload).
        let mut frame = base.clone();
        fix_v4_csum(&mut frame, 14);
        let r = parse_checked(&frame, frame.len() as u32, false);
        assert_eq!(r.map(|p| p.ip_len), Ok(ip_len));
        set_be16(&mut frame, 16, 28);
        fix_v4_csum(&mut frame, 14);
        let r = parse_checked(&frame, frame.len() as u32, false);
        assert_eq!(r, Err(DropReason::UdpBadLength));
        // Total length below IHL*4: IHL 6 (an options word), total length 23.
        let mut frame = base.clone();
        frame[14] = 0x46;
        set_be16(&mut frame, 16, 23);
        fix_v4_csum(&mut frame, 14);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::Ipv4BadTotalLength)
        );
        // The frame (all segments) is shorter than the total length.
        assert_eq!(
            parse_checked(&base, base.len() as u32 - 1, false),
            Err(DropReason::Ipv4BadTotalLength)
        );
        // Total length is checked before the checksum.
        let mut frame = base.clone();
        set_be16(&mut frame, 16, ip_len + 1);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::Ipv4BadTotalLength)
        );
    }

    #[test]
    fn ipv4_bad_checksum() {
        let base = build(Tags::Single, Net::V4, Transport::Udp, &[0; 10]);
        assert!(parse_checked(&base, base.len() as u32, false).is_ok());
        // Every header byte but version/IHL (18) and total length (20, 21), which have their own
        // reasons.
        for i in (19..38).filter(|&i| i != 20 && i != 21) {
            let mut frame = base.clone();
            frame[i] ^= 0x01;
            let r = parse_checked(&frame, frame.len() as u32, false);
            assert_eq!(r, Err(DropReason::Ipv4BadChecksum), "byte {i}");
            // Not checked when the NIC verified it.
            let r = parse_checked(&frame, frame.len() as u32, true);
            assert_eq!(r.map(|p| p.l3), Ok(L3::Ipv4));
        }
    }

    #[test]
    fn ipv4_with_options() {
        let mut header = Ipv4Header::new(0, 64, IpNumber(0), [10, 0, 0, 1], [10, 0, 0, 2]).unwrap();
        header.options = Ipv4Options::try_from(&[1u8, 1, 1, 0][..]).unwrap(); // NOP NOP NOP EOL
        let step = eth_step(
            Tags::Untagged,
            (0, 0),
            IpHeaders::Ipv4(header, Default::default()),
        );
        let frame = finish(step, Transport::Tcp, false, &[7; 5]);
        let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
        assert_eq!(
            (p.l4_offset, p.ip_len, p.src_port, p.dst_port),
            (38, 24 + 24 + 5, 1234, 80)
        );
    }

    #[test]
    fn ipv6_truncated() {
        let frame = build(Tags::Single, Net::V6, Transport::Udp, &[0; 30]);
        for n in 18..58 {
            assert_eq!(
                parse_checked(&frame[..n], n as u32, false),
                Err(DropReason::Ipv6Truncated),
                "{n}"
            );
            let r = parse_checked(&frame[..n], frame.len() as u32, false);
            assert_eq!(r, Err(DropReason::Ipv6Truncated), "{n}");
        }
    }

    #[test]
    fn ipv6_bad_version() {
        for version in [0u8, 4, 7, 15] {
            let mut frame = build(Tags::Untagged, Net::V6, Transport::Udp, &[0; 4]);
            frame[14] = (version << 4) | (frame[14] & 0x0f);
            let r = parse_checked(&frame, frame.len() as u32, false);
            assert_eq!(r, Err(DropReason::Ipv6BadVersion), "{version}");
        }
    }

    #[test]
    fn ipv6_bad_payload_length() {
        let base = build(Tags::Untagged, Net::V6Ext, Transport::Tcp, &[0; 10]);
        let payload_len = (base.len() - 54) as u16;
        let mut frame = base.clone();
        set_be16(&mut frame, 18, payload_len + 1);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::Ipv6BadPayloadLength)
        );
        set_be16(&mut frame, 18, u16::MAX);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::Ipv6BadPayloadLength)
        );
        assert_eq!(
            parse_checked(&base, base.len() as u32 - 1, false),
            Err(DropReason::Ipv6BadPayloadLength)
        );
        // 40 + payload length does not fit the u16 `ip_len`, even though the frame is that long.
        let mut frame = base.clone();
        set_be16(&mut frame, 18, u16::MAX);
        assert_eq!(
            parse_checked(&frame, 14 + 40 + 65535, false),
            Err(DropReason::Ipv6BadPayloadLength)
        );
        set_be16(&mut frame, 18, u16::MAX - 40);
        let p = parse_checked(&frame, 14 + 40 + 65535, false).unwrap();
        assert_eq!((p.ip_len, p.src_port), (u16::MAX, 1234));
    }

    #[test]
    fn ipv6_payload_length_zero_is_an_empty_payload() {
        let mut frame = Ethernet2Header {
            source: SRC_MAC,
            destination: DST_MAC,
            ether_type: EtherType::IPV6,
        }
        .to_bytes()
        .to_vec();
        let header = Ipv6Header {
            next_header: IpNumber(59),
            hop_limit: 1,
            ..Default::default()
        };
        frame.extend_from_slice(&header.to_bytes());
        frame.resize(60, 0); // padding
        let p = parse_checked(&frame, 60, false).unwrap();
        assert_eq!(
            (p.ip_len, p.l4_proto, p.l4_offset, p.src_port),
            (40, 59, 54, 0)
        );
        // With TCP as next header, the empty payload cannot hold a TCP header.
        frame[20] = ipproto::TCP;
        assert_eq!(
            parse_checked(&frame, 60, false),
            Err(DropReason::L4Truncated)
        );
    }

    /// Ethernet + IPv6 header with `next` and room for `body` after it (payload length set).
    fn v6_raw(next: u8, body: &[u8]) -> Vec<u8> {
        let mut frame = Ethernet2Header {
            source: SRC_MAC,
            destination: DST_MAC,
            ether_type: EtherType::IPV6,
        }
        .to_bytes()
        .to_vec();
        let header = Ipv6Header {
            next_header: IpNumber(next),
            payload_length: body.len() as u16,
            hop_limit: 1,
            ..Default::default()
        };
        frame.extend_from_slice(&header.to_bytes());
        frame.extend_from_slice(body);
        frame
    }

    /// `n` 8-byte Destination Options headers chained, then a UDP header.
    fn dst_opts_chain(n: usize) -> Vec<u8> {
        let mut body = Vec::new();
        for i in 0..n {
            let next = if i + 1 == n {
                ipproto::UDP
            } else {
                ipproto::IPV6_OPTS
            };
            body.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]); // PadN, 4 bytes
        }
        body.extend_from_slice(&[0x12, 0x34, 0x56, 0x78, 0, 8, 0, 0]);
        v6_raw(
            if n == 0 {
                ipproto::UDP
            } else {
                ipproto::IPV6_OPTS
            },
            &body,
        )
    }

    #[test]
    fn ipv6_extension_header_chain_limit() {
        for n in 0..=MAX_IPV6_EXT_HEADERS {
            let frame = dst_opts_chain(n);
            let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
            assert_eq!(
                (p.l4_proto, p.l4_offset, p.src_port, p.dst_port),
                (17, (54 + 8 * n) as u16, 0x1234, 0x5678)
            );
        }
        let frame = dst_opts_chain(MAX_IPV6_EXT_HEADERS + 1);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::Ipv6BadExtensionHeader)
        );
    }

    #[test]
    fn ipv6_extension_header_past_payload_end() {
        let base = build(Tags::Untagged, Net::V6Ext, Transport::Udp, &[0; 4]);
        // Hop-by-Hop at 54 (8 bytes), Destination Options at 62 (16 bytes), UDP at 78.
        assert_eq!(
            parse_checked(&base, base.len() as u32, false).map(|p| p.l4_offset),
            Ok(78)
        );
        // Destination options length 3 (32 bytes) runs past the 28 bytes left in the payload.
        let mut frame = base.clone();
        frame[63] = 3;
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::Ipv6BadExtensionHeader)
        );
        // Length 2 (24 bytes): ends 4 bytes before the payload end; UDP then does not fit.
        frame[63] = 2;
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::L4Truncated)
        );
        // Padding after the payload end does not count as payload.
        let mut frame = base.clone();
        frame[63] = 3;
        frame.resize(frame.len() + 32, 0);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::Ipv6BadExtensionHeader)
        );
        // An extension header announced with fewer than 8 bytes of payload left.
        let frame = v6_raw(ipproto::HOPOPT, &[ipproto::UDP, 0, 0, 0]);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::Ipv6BadExtensionHeader)
        );
        let frame = v6_raw(ipproto::IPV6_FRAG, &[]);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::Ipv6BadExtensionHeader)
        );
        // AH Payload Len 4 -> (4 + 2) * 4 = 24 bytes, but only 16 present.
        let frame = v6_raw(
            ipproto::AH,
            &[ipproto::TCP, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
        );
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::Ipv6BadExtensionHeader)
        );
    }

    #[test]
    fn ipv6_extension_header_beyond_first_segment() {
        let frame = build(Tags::Untagged, Net::V6Ext, Transport::Udp, &[0; 4]);
        let len = frame.len() as u32;
        // Cut inside the fixed header part of Hop-by-Hop (at 54), before/after its length byte,
        // and inside the Destination Options header (at 62).
        for (cut, proto, off) in [
            (54, 0, 54),
            (55, 0, 54),
            (58, 0, 54),
            (62, 60, 62),
            (70, 60, 62),
            (78, 17, 78),
        ] {
            let p = parse_checked(&frame[..cut], len, false).unwrap();
            assert_eq!(
                (p.l4_proto, p.l4_offset, p.src_port, p.ip_len),
                (proto, off, 0, 76),
                "{cut}"
            );
        }
        // ... but a header that runs past the payload end is still dropped.
        let mut bad = frame.clone();
        bad[63] = 3;
        assert_eq!(
            parse_checked(&bad[..70], len, false),
            Err(DropReason::Ipv6BadExtensionHeader)
        );
    }

    #[test]
    fn ipv6_routing_and_auth_headers() {
        let exts = Ipv6Extensions {
            routing: Some(Ipv6RoutingExtensions {
                routing: Ipv6RawExtHeader::new_raw(IpNumber(0), &[0; 22]).unwrap(), // 24 bytes
                final_destination_options: None,
            }),
            auth: Some(IpAuthHeader::new(IpNumber(0), 0x100, 1, &[0xaa; 12]).unwrap()), // 24 bytes
            ..Default::default()
        };
        let step = eth_step(
            Tags::Single,
            (OUTER_TCI, 0),
            v6_header([1; 16], [2; 16], exts),
        );
        let frame = finish(step, Transport::Udp, true, &[1, 2, 3]);
        let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
        assert_eq!(
            (p.l4_offset, p.l4_proto, p.src_port, p.dst_port),
            (18 + 40 + 48, 17, 5353, 53)
        );
    }

    #[test]
    fn esp_and_no_next_header_end_the_chain() {
        for proto in [50u8, 59] {
            let frame = v6_raw(
                ipproto::HOPOPT,
                &[proto, 0, 1, 4, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef],
            );
            let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
            assert_eq!(
                (p.l4_proto, p.l4_offset, p.src_port, p.dst_port),
                (proto, 62, 0, 0)
            );
        }
    }

    #[test]
    fn l4_truncated() {
        // IPv4: shrink the total length so the transport header does not fit.
        for (l4, min) in [
            (Transport::Tcp, 20u16),
            (Transport::Udp, 8),
            (Transport::Icmp, 4),
        ] {
            let base = build(Tags::Single, Net::V4, l4, &[0; 30]);
            for avail in 0..min {
                let mut frame = base.clone();
                set_be16(&mut frame, 18 + 2, 20 + avail);
                fix_v4_csum(&mut frame, 18);
                let r = parse_checked(&frame, frame.len() as u32, false);
                assert_eq!(r, Err(DropReason::L4Truncated), "{l4:?} {avail}");
            }
        }
        // IPv6: shrink the payload length (the extension headers still fit).
        for (l4, min) in [
            (Transport::Tcp, 20u16),
            (Transport::Udp, 8),
            (Transport::Icmp, 4),
        ] {
            let base = build(Tags::Untagged, Net::V6Ext, l4, &[0; 30]);
            for avail in 0..min {
                let mut frame = base.clone();
                set_be16(&mut frame, 18, 24 + avail);
                let r = parse_checked(&frame, frame.len() as u32, false);
                assert_eq!(r, Err(DropReason::L4Truncated), "{l4:?} {avail}");
            }
        }
        // Unknown protocols are not checked: 0 bytes of payload for protocol 132 (SCTP).
        let mut frame = build(Tags::Untagged, Net::V4, Transport::Udp, &[]);
        frame[23] = 132;
        set_be16(&mut frame, 16, 20);
        fix_v4_csum(&mut frame, 14);
        let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
        assert_eq!((p.l4_proto, p.l4_offset, p.src_port), (132, 34, 0));
        // ICMPv6 inside IPv4 is not ICMP: no check.
        frame[23] = ipproto::ICMPV6;
        fix_v4_csum(&mut frame, 14);
        assert!(parse_checked(&frame, frame.len() as u32, false).is_ok());
    }

    #[test]
    fn tcp_bad_data_offset() {
        // TCP with 4 option bytes and 2 payload bytes: 26 bytes of IP payload.
        for net in [Net::V4, Net::V6] {
            let base = build(Tags::Untagged, net, Transport::Tcp, &[0; 2]);
            let l4 = if net == Net::V4 { 34 } else { 54 };
            for (doff, expect) in [
                (0u8, Err(DropReason::TcpBadDataOffset)),
                (4, Err(DropReason::TcpBadDataOffset)),
                (5, Ok(())),
                (6, Ok(())),
                (7, Err(DropReason::TcpBadDataOffset)), // 28 > 26
                (15, Err(DropReason::TcpBadDataOffset)),
            ] {
                let mut frame = base.clone();
                frame[l4 + 12] = (doff << 4) | (frame[l4 + 12] & 0x0f);
                let r = parse_checked(&frame, frame.len() as u32, false);
                assert_eq!(r.map(|_| ()), expect, "{net:?} {doff}");
            }
        }
    }

    #[test]
    fn udp_bad_length() {
        for net in [Net::V4, Net::V6Ext] {
            let base = build(Tags::Double, net, Transport::Udp, &[0; 12]);
            let l4 = if net == Net::V4 { 42 } else { 22 + 64 };
            for (len, expect) in [
                (0u16, Err(DropReason::UdpBadLength)),
                (7, Err(DropReason::UdpBadLength)),
                (8, Ok(())), // shorter than the IP payload: allowed
                (20, Ok(())),
                (21, Err(DropReason::UdpBadLength)),
                (u16::MAX, Err(DropReason::UdpBadLength)),
            ] {
                let mut frame = base.clone();
                set_be16(&mut frame, l4 + 4, len);
                let r = parse_checked(&frame, frame.len() as u32, false);
                assert_eq!(r.map(|_| ()), expect, "{net:?} {len}");
            }
        }
    }

    #[test]
    fn transport_header_beyond_first_segment_is_not_dropped() {
        for l4 in [Transport::Tcp, Transport::Udp, Transport::Icmp] {
            let frame = build(Tags::Untagged, Net::V4, l4, &[0; 30]);
            for cut in 34..38 {
                let p = parse_checked(&frame[..cut], frame.len() as u32, false).unwrap();
                assert_eq!(
                    (p.src_port, p.dst_port, p.l4_offset),
                    (0, 0, 34),
                    "{l4:?} {cut}"
                );
            }
            // Lengths are still checked against the whole frame.
            let mut bad = frame.clone();
            set_be16(&mut bad, 16, 20 + 3);
            fix_v4_csum(&mut bad, 14);
            assert_eq!(
                parse_checked(&bad[..34], frame.len() as u32, false),
                Err(DropReason::L4Truncated)
            );
        }
    }

    // ---- fragments ----

    #[test]
    fn ipv4_later_fragment_skips_transport() {
        // Offset 185 * 8 bytes, MF set; 3 bytes of "TCP header" that would otherwise be truncated.
        let mut frame = build(Tags::Single, Net::V4, Transport::Tcp, &[]);
        set_be16(&mut frame, 18 + 2, 23);
        set_be16(&mut frame, 18 + 6, 0x2000 | 185);
        fix_v4_csum(&mut frame, 18);
        let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
        assert_eq!(
            p,
            Parsed {
                ethertype: ethertype::IPV4,
                vlan_tci: Some(OUTER_TCI),
                inner_vlan_tci: None,
                l3_offset: 18,
                l3: L3::Ipv4,
                l4_proto: ipproto::TCP,
                l4_offset: 38,
                ip_len: 23,
                later_fragment: true,
                fragment: true,
                src_port: 0,
                dst_port: 0,
            }
        );
        // The last fragment (MF clear) too, and every bit of the 13-bit offset counts.
        for frag in [1, 0x1000, 0x1fff, 0x4000 | 0x0800] {
            set_be16(&mut frame, 18 + 6, frag);
            fix_v4_csum(&mut frame, 18);
            let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
            assert!(p.later_fragment, "{frag:#x}");
        }
        // DF alone is no fragment.
        set_be16(&mut frame, 18 + 6, 0x4000);
        fix_v4_csum(&mut frame, 18);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::L4Truncated)
        );
    }

    #[test]
    fn ipv4_first_fragment_udp_length_covers_the_datagram() {
        // First fragment (MF, offset 0) of a datagram: the UDP length counts all fragments.
        let mut frame = build(Tags::Untagged, Net::V4, Transport::Udp, &[0; 16]);
        set_be16(&mut frame, 14 + 6, 0x2000);
        set_be16(&mut frame, 34 + 4, 1480);
        fix_v4_csum(&mut frame, 14);
        let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
        assert_eq!(
            (p.later_fragment, p.fragment, p.src_port, p.dst_port),
            (false, true, 5353, 53)
        );
        // Without MF the same length is bad.
        set_be16(&mut frame, 14 + 6, 0);
        fix_v4_csum(&mut frame, 14);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::UdpBadLength)
        );
    }

    #[test]
    fn ipv6_fragment_header() {
        let frag = |offset: u16, more: bool| Ipv6Extensions {
            fragment: Some(Ipv6FragmentHeader::new(
                IpNumber(0),
                IpFragOffset::try_new(offset).unwrap(),
                more,
                0xdead_beef,
            )),
            ..hbh_dst_exts()
        };
        // Later fragment: a "UDP header" of 3 bytes would be truncated, but is not looked at.
        let step = eth_step(
            Tags::Double,
            (OUTER_TCI, INNER_TCI),
            v6_header([3; 16], [4; 16], frag(77, true)),
        );
        let mut frame = Vec::new();
        step.write(&mut frame, IpNumber::UDP, &[1, 2, 3]).unwrap();
        let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
        assert_eq!(
            p,
            Parsed {
                ethertype: ethertype::IPV6,
                vlan_tci: Some(OUTER_TCI),
                inner_vlan_tci: Some(INNER_TCI),
                l3_offset: 22,
                l3: L3::Ipv6,
                l4_proto: ipproto::UDP,
                l4_offset: 22 + 40 + 8 + 16 + 8,
                ip_len: 40 + 32 + 3,
                later_fragment: true,
                fragment: true,
                src_port: 0,
                dst_port: 0,
            }
        );
        // Every offset bit counts: offset 1 (8 bytes) and the top bit.
        for offset in [1, 0x1000] {
            let ip = v6_header([3; 16], [4; 16], frag(offset, false));
            let step = eth_step(Tags::Untagged, (0, 0), ip);
            let mut frame = Vec::new();
            step.write(&mut frame, IpNumber::TCP, &[1, 2, 3]).unwrap();
            let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
            assert_eq!(
                (p.later_fragment, p.l4_proto, p.l4_offset),
                (true, 6, 14 + 72),
                "{offset}"
            );
        }
        // First fragment with a UDP length covering the whole datagram.
        let step = eth_step(
            Tags::Untagged,
            (0, 0),
            v6_header([3; 16], [4; 16], frag(0, true)),
        );
        let mut frame = finish(step, Transport::Udp, true, &[0; 16]);
        let l4 = 14 + 40 + 32;
        set_be16(&mut frame, l4 + 4, 1400);
        let p = parse_checked(&frame, frame.len() as u32, false).unwrap();
        assert_eq!(
            (p.later_fragment, p.fragment, p.l4_offset, p.src_port),
            (false, true, l4 as u16, 5353)
        );
        // Atomic fragment (offset 0, M clear): an ordinary packet.
        let step = eth_step(
            Tags::Untagged,
            (0, 0),
            v6_header([3; 16], [4; 16], frag(0, false)),
        );
        let mut frame = finish(step, Transport::Udp, true, &[0; 16]);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false).map(|p| (p.src_port, p.fragment)),
            Ok((5353, false))
        );
        set_be16(&mut frame, l4 + 4, 1400);
        assert_eq!(
            parse_checked(&frame, frame.len() as u32, false),
            Err(DropReason::UdpBadLength)
        );
    }

    // ---- checksum ----

    #[test]
    fn checksum_known_vectors() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its complement.
        assert_eq!(
            ipv4_header_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // An odd length is padded with a zero byte.
        assert_eq!(
            ipv4_header_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6]),
            !0xdcfb
        );
        assert_eq!(ipv4_header_checksum(&[]), 0xffff);
        // A well-known IPv4 header (checksum 0xb861).
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header_checksum(&header), 0);
        header[10..12].fill(0);
        assert_eq!(ipv4_header_checksum(&header), 0xb861);
        // The checksum etherparse computes for a header with options.
        let mut h =
            Ipv4Header::new(100, 3, IpNumber::TCP, [1, 2, 3, 4], [250, 251, 252, 253]).unwrap();
        h.options = Ipv4Options::try_from(&[0x94u8, 0x04, 0, 0][..]).unwrap(); // router alert
        let expected = h.calc_header_checksum();
        let bytes = h.to_bytes();
        let mut zeroed = bytes.to_vec();
        zeroed[10..12].fill(0);
        assert_eq!(ipv4_header_checksum(&zeroed), expected);
        h.header_checksum = expected;
        assert_eq!(ipv4_header_checksum(&h.to_bytes()), 0);
    }

    /// Straightforward RFC 1071 reference: 16-bit words with end-around carry after each add.
    fn reference_checksum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for chunk in bytes.chunks(2) {
            let word = u32::from(chunk[0]) << 8 | u32::from(*chunk.get(1).unwrap_or(&0));
            sum += word;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    // ---- property tests ----

    /// A valid frame from etherparse with random headers, and what it was built from.
    #[derive(Debug, Clone)]
    struct RandomFrame {
        frame: Vec<u8>,
        pad_to: usize,
    }

    fn random_exts() -> impl Strategy<Value = Ipv6Extensions> {
        (
            proptest::option::of(0usize..4),
            proptest::option::of(0usize..4),
            proptest::option::of(0usize..4),
            any::<bool>(),
            proptest::option::of(0usize..3),
        )
            .prop_map(|(hbh, dst, route, frag, auth)| {
                // Raw extension header payloads are 6 + 8k bytes; AH ICVs 4 + 8k for 8-byte alignment.
                let raw =
                    |k: usize| Ipv6RawExtHeader::new_raw(IpNumber(0), &vec![0; 6 + 8 * k]).unwrap();
                Ipv6Extensions {
                    hop_by_hop_options: hbh.map(raw),
                    destination_options: dst.map(raw),
                    routing: route.map(|k| Ipv6RoutingExtensions {
                        routing: raw(k),
                        final_destination_options: None,
                    }),
                    // An atomic fragment: offset 0, no more fragments.
                    fragment: frag.then(|| {
                        Ipv6FragmentHeader::new(IpNumber(0), IpFragOffset::ZERO, false, 7)
                    }),
                    auth: auth.map(|k| {
                        IpAuthHeader::new(IpNumber(0), 1, 2, &vec![0x5a; 4 + 8 * k]).unwrap()
                    }),
                }
            })
    }

    fn random_frame() -> impl Strategy<Value = RandomFrame> {
        (
            0u8..3,
            (any::<u16>(), any::<u16>()),
            prop_oneof![
                (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(s, d)| v4_header(s, d)),
                (any::<[u8; 16]>(), any::<[u8; 16]>(), random_exts())
                    .prop_map(|(s, d, e)| v6_header(s, d, e)),
            ],
            0u8..3,
            (any::<u16>(), any::<u16>()),
            proptest::collection::vec(any::<u8>(), 0..300),
            prop_oneof![Just(0usize), Just(60), Just(64), 0usize..400],
        )
            .prop_map(|(tags, tcis, ip, l4, (sport, dport), payload, pad_to)| {
                let tags = [Tags::Untagged, Tags::Single, Tags::Double][usize::from(tags)];
                let v6 = matches!(ip, IpHeaders::Ipv6(..));
                let step = eth_step(tags, tcis, ip);
                let mut frame = Vec::new();
                match l4 {
                    0 => step
                        .tcp(sport, dport, 1, 2)
                        .write(&mut frame, &payload)
                        .unwrap(),
                    1 => step.udp(sport, dport).write(&mut frame, &payload).unwrap(),
                    _ if v6 => step
                        .icmpv6_raw(sport as u8, dport as u8, [0; 4])
                        .write(&mut frame, &payload)
                        .unwrap(),
                    _ => step
                        .icmpv4_raw(sport as u8, dport as u8, [0; 4])
                        .write(&mut frame, &payload)
                        .unwrap(),
                }
                if frame.len() < pad_to {
                    frame.resize(pad_to, 0);
                }
                RandomFrame { frame, pad_to }
            })
    }

    fn tci_of(v: &etherparse::SingleVlanSlice<'_>) -> u16 {
        u16::from(v.priority_code_point().value()) << 13
            | u16::from(v.drop_eligible_indicator()) << 12
            | v.vlan_identifier().value()
    }

    /// The fast path of [`check`] gives exactly [`parse`]'s verdict: valid UDP and TCP frames
    /// with random bytes overwritten in their headers, random lengths claimed and random cuts.
    #[test]
    fn the_fast_check_agrees_with_parse() {
        let mut seen = std::collections::BTreeMap::new();
        for seed in 0..60_000u64 {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let payload = vec![0xa5u8; (next() % 80) as usize];
            let b =
                PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64);
            let mut f = Vec::new();
            if next() % 2 == 0 {
                b.udp(1000, 53).write(&mut f, &payload).unwrap();
            } else {
                b.tcp(1000, 443, 7, 1024).write(&mut f, &payload).unwrap();
            }
            for _ in 0..(next() % 3) {
                // A header byte (Ethernet type, IPv4, transport) gets a random value.
                let at = 12 + (next() % (f.len() as u64 - 12).min(42)) as usize;
                f[at] = next() as u8;
            }
            let frame_len = match next() % 4 {
                0 => f.len() as u32 + (next() % 9) as u32,
                1 => {
                    f.truncate((next() % 70) as usize);
                    f.len() as u32
                }
                _ => f.len() as u32,
            };
            for csum in [false, true] {
                let want = parse(&f, frame_len, csum).map(|_| ());
                assert_eq!(
                    check(&f, frame_len, csum),
                    want,
                    "{f:02x?} frame_len {frame_len}"
                );
                if check_ipv4_fast(&f, frame_len, csum).is_some() {
                    *seen.entry(format!("{want:?}")).or_insert(0u32) += 1;
                }
            }
        }
        // The fast path decided valid frames and each kind of drop it checks.
        for k in [
            "Ok(())",
            "Err(Ipv4BadTotalLength)",
            "Err(Ipv4BadChecksum)",
            "Err(L4Truncated)",
            "Err(UdpBadLength)",
            "Err(TcpBadDataOffset)",
        ] {
            assert!(seen.get(k).is_some_and(|&n| n > 10), "{k}: {seen:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..128),
            frame_len in prop_oneof![any::<u32>(), 0u32..200],
            verified in any::<bool>(),
        ) {
            let _ = parse_checked(&data, frame_len, verified);
            let _ = parse_checked(&data, data.len() as u32, verified);
        }

        /// Arbitrary bytes behind a valid-looking Ethernet/VLAN prefix, so the IP parsers are
        /// reached far more often than with plain random bytes.
        #[test]
        fn arbitrary_ip_headers_never_panic(
            tags in 0usize..4,
            et in prop_oneof![Just(ethertype::IPV4), Just(ethertype::IPV6)],
            first in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..200),
            extra in 0u32..100,
            verified in any::<bool>(),
        ) {
            let mut data = vec![0u8; 12];
            for _ in 0..tags {
                data.extend_from_slice(&[0x81, 0x00, 0x01, 0x02]);
            }
            data.extend_from_slice(&et.to_be_bytes());
            data.push(if et == ethertype::IPV4 { 0x40 | (first & 0x0f) } else { 0x60 | (first & 0x0f) });
            data.extend_from_slice(&body);
            let _ = parse_checked(&data, data.len() as u32, verified);
            let _ = parse_checked(&data, data.len() as u32 + extra, verified);
        }

        /// Valid frames with a few random byte changes, random cuts and random frame lengths.
        #[test]
        fn mutated_frames_never_panic(
            f in random_frame(),
            mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            frame_len_delta in -8i64..8,
        ) {
            let mut data = f.frame.clone();
            for (i, v) in mutations {
                let i = i.index(data.len());
                data[i] = v;
            }
            let full = data.len() as u32;
            let frame_len = (i64::from(full) + frame_len_delta).max(0) as u32;
            let _ = parse_checked(&data, frame_len, false);
            let _ = parse_checked(&data[..cut.index(data.len() + 1)], full, false);
        }

        #[test]
        fn checksum_matches_reference(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(ipv4_header_checksum(&bytes), reference_checksum(&bytes));
        }

        #[test]
        fn checksum_matches_etherparse(
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            ttl in any::<u8>(),
            proto in any::<u8>(),
            id in any::<u16>(),
            payload_len in 0u16..1480,
            options in proptest::collection::vec(any::<u8>(), 0..10),
        ) {
            let mut h = Ipv4Header::new(payload_len, ttl, IpNumber(proto), src, dst).unwrap();
            h.identification = id;
            let mut opts = options.clone();
            opts.resize(options.len().div_ceil(4) * 4, 0);
            h.options = Ipv4Options::try_from(&opts[..]).unwrap();
            let mut bytes = h.to_bytes().to_vec();
            bytes[10..12].fill(0);
            prop_assert_eq!(ipv4_header_checksum(&bytes), h.calc_header_checksum());
            h.header_checksum = h.calc_header_checksum();
            prop_assert_eq!(ipv4_header_checksum(&h.to_bytes()), 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Random valid frames built by etherparse parse Ok and agree with etherparse's own
        /// `SlicedPacket` view of them.
        #[test]
        fn valid_frames_agree_with_etherparse(f in random_frame()) {
            let data = &f.frame;
            let p = parse_checked(data, data.len() as u32, false);
            prop_assert!(p.is_ok(), "{:?} (pad_to {})", p, f.pad_to);
            let p = p.unwrap();
            let s = SlicedPacket::from_ethernet(data).unwrap();

            let tcis: Vec<u16> = s
                .link_exts
                .iter()
                .filter_map(|e| match e {
                    LinkExtSlice::Vlan(v) => Some(tci_of(v)),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(p.vlan_tci, tcis.first().copied());
            prop_assert_eq!(p.inner_vlan_tci, tcis.get(1).copied());
            prop_assert_eq!(usize::from(p.l3_offset), 14 + 4 * tcis.len());

            let (l3, ip_len, proto) = match s.net.as_ref().unwrap() {
                NetSlice::Ipv4(ip) => (L3::Ipv4, ip.header().total_len(), ip.payload().ip_number.0),
                NetSlice::Ipv6(ip) => (L3::Ipv6, 40 + ip.header().payload_length(), ip.payload().ip_number.0),
                NetSlice::Arp(_) => unreachable!(),
            };
            prop_assert_eq!((p.l3, p.ip_len, p.l4_proto), (l3, ip_len, proto));
            prop_assert!(!p.later_fragment);

            let base = data.as_ptr() as usize;
            let (ports, l4_off) = match s.transport.as_ref().unwrap() {
                TransportSlice::Tcp(t) => ((t.source_port(), t.destination_port()), t.slice().as_ptr() as usize - base),
                TransportSlice::Udp(u) => ((u.source_port(), u.destination_port()), u.slice().as_ptr() as usize - base),
                TransportSlice::Icmpv4(i) => ((u16::from(i.type_u8()), u16::from(i.code_u8())), i.slice().as_ptr() as usize - base),
                TransportSlice::Icmpv6(i) => ((u16::from(i.type_u8()), u16::from(i.code_u8())), i.slice().as_ptr() as usize - base),
                TransportSlice::Igmp(_) => unreachable!(),
            };
            prop_assert_eq!((p.src_port, p.dst_port), ports);
            prop_assert_eq!(usize::from(p.l4_offset), l4_off);
        }
    }
}
