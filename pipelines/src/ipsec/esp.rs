//! ESP in tunnel mode over IPv4 (RFC 4303): the byte work around the cipher. [`encap`] turns an
//! Ethernet frame carrying an inner IPv4/IPv6 packet into Ethernet + outer IPv4 + ESP header +
//! IV + inner packet + padding + trailer + room for the ICV, and says where the crypto device
//! must encrypt and authenticate ([`EspJob`]); [`decap_prepare`] checks a received ESP frame and
//! says what the device must verify and decrypt; [`decap_finish`] checks the decrypted trailer
//! and leaves the inner packet behind a synthetic Ethernet header.
//!
//! The cipher itself runs elsewhere (a DPDK crypto device); nothing here sees a key.
use super::{ecn_decapsulate, Algorithm, ICV_LEN};
use crate::packet::Packet;
use crate::wire::{ethertype, ipv4_header_checksum, ipv4_header_checksum20, Parsed, L3};
use crate::DropReason;

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// Outer IPv4 header length (no options).
pub const OUTER_IP_LEN: usize = 20;
/// ESP header: SPI and sequence number (RFC 4303 §2).
pub const ESP_HDR_LEN: usize = 8;
/// IP protocol number of ESP.
pub const IPPROTO_ESP: u8 = 50;
/// ESP next-header values of the inner packet (IP-in-IP).
const NH_IPV4: u8 = 4;
const NH_IPV6: u8 = 41;
/// "No next header": a dummy packet (RFC 4303 §2.6), discarded.
const NH_NONE: u8 = 59;

/// What the crypto device must do to one packet. Offsets are from the start of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EspJob {
    /// First byte to encrypt / decrypt.
    pub cipher_offset: u32,
    /// Bytes to encrypt / decrypt.
    pub cipher_len: u32,
    /// First byte covered by the ICV (chained algorithms; AEAD ones authenticate the AAD).
    pub auth_offset: u32,
    /// Bytes covered by the ICV (chained algorithms).
    pub auth_len: u32,
    /// Where the ICV is written (outbound) or read (inbound).
    pub digest_offset: u32,
    /// The device's IV: salt || 8-byte IV for GCM (RFC 4106 §4), the 16-byte IV for CBC.
    pub iv: [u8; 16],
    /// Additional authenticated data for AEAD: SPI || sequence number (|| high half first with
    /// ESN, RFC 4106 §5).
    pub aad: [u8; 16],
    /// Bytes of `aad` used (8, or 12 with ESN).
    pub aad_len: u8,
}

/// How the outer header's DF bit is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DfPolicy {
    /// Copied from an inner IPv4 packet; set for inner IPv6 (which is never fragmented on path).
    #[default]
    Inherit,
    /// Always set.
    Set,
    /// Never set.
    Clear,
}

/// Everything [`encap`] needs besides the packet.
#[derive(Debug, Clone, Copy)]
pub struct EncapParams {
    /// The SA's algorithm.
    pub alg: Algorithm,
    /// SPI.
    pub spi: u32,
    /// This packet's sequence number (full 64 bits; the low half goes on the wire).
    pub seq: u64,
    /// Extended sequence numbers.
    pub esn: bool,
    /// GCM salt (RFC 4106 §4); unused for CBC.
    pub salt: [u8; 4],
    /// The explicit IV for CBC (unpredictable, RFC 3602 §3); for GCM the sequence number is
    /// used (unique per key, RFC 4106 §3.1).
    pub cbc_iv: [u8; 16],
    /// Outer source and destination (the tunnel's endpoints).
    pub src: [u8; 4],
    /// See `src`.
    pub dst: [u8; 4],
    /// Outer DF.
    pub df: DfPolicy,
    /// Outer TTL.
    pub ttl: u8,
    /// Outer IPv4 identification.
    pub ip_id: u16,
    /// Outer Ethernet source (the underlay port's MAC) and destination (the next hop's).
    pub src_mac: [u8; 6],
    /// See `src_mac`.
    pub dst_mac: [u8; 6],
}

/// Length of the outer packet (IPv4 header to ICV) that carries an inner packet of `inner_len`.
pub fn outer_len(alg: Algorithm, inner_len: usize) -> usize {
    let block = alg.block();
    let payload = (inner_len + 2).div_ceil(block) * block;
    OUTER_IP_LEN + ESP_HDR_LEN + alg.iv_len() + payload + ICV_LEN
}

/// The largest inner packet whose ESP packet fits `path_mtu` (the underlay's IP MTU).
pub fn inner_mtu(alg: Algorithm, path_mtu: u32) -> u32 {
    let block = alg.block() as u32;
    let fixed = (OUTER_IP_LEN + ESP_HDR_LEN + alg.iv_len() + ICV_LEN) as u32;
    let room = path_mtu.saturating_sub(fixed) / block * block;
    room.saturating_sub(2)
}

/// Extra tail bytes an outbound packet of `alg` needs while the device works: the high half of
/// an extended sequence number sits after the ciphertext for chained algorithms, which
/// authenticate it but do not send it (RFC 4303 §2.2.1); [`encap_complete`] removes it.
fn esn_tail(alg: Algorithm, esn: bool) -> usize {
    if esn && !alg.is_aead() {
        4
    } else {
        0
    }
}

/// Turns the frame in `pkt` (parsed as `parsed`, an inner IPv4 or IPv6 packet after an Ethernet
/// header and any VLAN tags) into an ESP tunnel-mode frame, all but the cipher. Bytes past the
/// inner packet (Ethernet padding) are removed. `Err` leaves the packet in an unspecified state
/// (the caller drops it).
#[inline(always)]
pub fn encap<P: Packet>(
    pkt: &mut P,
    parsed: &Parsed,
    p: &EncapParams,
) -> Result<EspJob, DropReason> {
    let (next_header, inner_tos, inner_df) = match parsed.l3 {
        L3::Ipv4 => {
            let d = pkt.data();
            let l3 = usize::from(parsed.l3_offset);
            let tos = *d.get(l3 + 1).ok_or(DropReason::Ipv4Truncated)?;
            let df = d.get(l3 + 6).is_some_and(|b| b & 0x40 != 0);
            (NH_IPV4, tos, df)
        }
        L3::Ipv6 => {
            let d = pkt.data();
            let l3 = usize::from(parsed.l3_offset);
            let (a, b) = (
                *d.get(l3).ok_or(DropReason::Ipv6Truncated)?,
                *d.get(l3 + 1).ok_or(DropReason::Ipv6Truncated)?,
            );
            (NH_IPV6, (a << 4) | (b >> 4), true)
        }
        L3::Other => return Err(DropReason::TunnelNotIp),
    };
    let l3 = usize::from(parsed.l3_offset);
    let inner_len = usize::from(parsed.ip_len);
    let frame_len = pkt.frame_len() as usize;
    if frame_len < l3 + inner_len || pkt.data().len() != frame_len {
        // Multi-segment frames are not encapsulated (the device works on one segment).
        return Err(DropReason::TunnelNoRoom);
    }
    let alg = p.alg;
    let block = alg.block();
    let pad_len = (block - (inner_len + 2) % block) % block;
    let iv_len = alg.iv_len();
    let head = ETH_LEN + OUTER_IP_LEN + ESP_HDR_LEN + iv_len;
    let esn_extra = esn_tail(alg, p.esn);
    let tail = pad_len + 2 + esn_extra + ICV_LEN;
    // Drop the Ethernet padding and make room at both ends, in one step.
    let excess = frame_len - l3 - inner_len;
    let front = head as isize - l3 as isize;
    let back = tail as isize - excess as isize;
    let d = pkt.reframe(front, back).ok_or(DropReason::TunnelNoRoom)?;
    let total = head + inner_len + tail;
    if d.len() != total {
        return Err(DropReason::TunnelNoRoom);
    }
    // Ethernet.
    d[0..6].copy_from_slice(&p.dst_mac);
    d[6..12].copy_from_slice(&p.src_mac);
    d[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
    // Outer IPv4 (RFC 791). TOS: DSCP copied, ECN copied (RFC 6040 §4.1, normal mode).
    let ip_total = (total - ETH_LEN - esn_extra) as u16;
    let df = match p.df {
        DfPolicy::Inherit => inner_df,
        DfPolicy::Set => true,
        DfPolicy::Clear => false,
    };
    let ip = &mut d[ETH_LEN..ETH_LEN + OUTER_IP_LEN];
    ip[0] = 0x45;
    ip[1] = inner_tos;
    ip[2..4].copy_from_slice(&ip_total.to_be_bytes());
    ip[4..6].copy_from_slice(&p.ip_id.to_be_bytes());
    ip[6..8].copy_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
    ip[8] = p.ttl;
    ip[9] = IPPROTO_ESP;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&p.src);
    ip[16..20].copy_from_slice(&p.dst);
    let csum = match <&[u8; OUTER_IP_LEN]>::try_from(&*ip) {
        Ok(h) => ipv4_header_checksum20(h),
        Err(_) => ipv4_header_checksum(ip),
    };
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    // ESP header (RFC 4303 §2.1, §2.2): SPI, low half of the sequence number.
    let esp = ETH_LEN + OUTER_IP_LEN;
    let seq_lo = p.seq as u32;
    let seq_hi = (p.seq >> 32) as u32;
    d[esp..esp + 4].copy_from_slice(&p.spi.to_be_bytes());
    d[esp + 4..esp + 8].copy_from_slice(&seq_lo.to_be_bytes());
    // IV.
    let ivo = esp + ESP_HDR_LEN;
    let mut job = EspJob::default();
    if alg.is_aead() {
        let iv8 = p.seq.to_be_bytes();
        d[ivo..ivo + 8].copy_from_slice(&iv8);
        job.iv[..4].copy_from_slice(&p.salt);
        job.iv[4..12].copy_from_slice(&iv8);
    } else {
        d[ivo..ivo + 16].copy_from_slice(&p.cbc_iv);
        job.iv = p.cbc_iv;
    }
    // Trailer: padding 1, 2, 3, ... (RFC 4303 §2.4), pad length, next header.
    let payload = head;
    let trailer = payload + inner_len;
    for (i, b) in d[trailer..trailer + pad_len].iter_mut().enumerate() {
        *b = (i + 1) as u8;
    }
    d[trailer + pad_len] = pad_len as u8;
    d[trailer + pad_len + 1] = next_header;
    let cipher_end = trailer + pad_len + 2;
    job.cipher_offset = payload as u32;
    job.cipher_len = (cipher_end - payload) as u32;
    if alg.is_aead() {
        job.aad[..4].copy_from_slice(&p.spi.to_be_bytes());
        if p.esn {
            job.aad[4..8].copy_from_slice(&seq_hi.to_be_bytes());
            job.aad[8..12].copy_from_slice(&seq_lo.to_be_bytes());
            job.aad_len = 12;
        } else {
            job.aad[4..8].copy_from_slice(&seq_lo.to_be_bytes());
            job.aad_len = 8;
        }
        job.digest_offset = cipher_end as u32;
    } else {
        if esn_extra > 0 {
            d[cipher_end..cipher_end + 4].copy_from_slice(&seq_hi.to_be_bytes());
        }
        job.auth_offset = esp as u32;
        job.auth_len = (cipher_end + esn_extra - esp) as u32;
        job.digest_offset = (cipher_end + esn_extra) as u32;
    }
    Ok(job)
}

/// After the device encrypted an [`encap`]ed packet: removes the authenticated-only high half
/// of an extended sequence number from between the ciphertext and the ICV (chained algorithms
/// with ESN; nothing to do otherwise).
pub fn encap_complete<P: Packet>(pkt: &mut P, alg: Algorithm, esn: bool) -> Result<(), DropReason> {
    if esn_tail(alg, esn) == 0 {
        return Ok(());
    }
    let d = pkt.data_mut().ok_or(DropReason::TunnelNoRoom)?;
    let n = d.len();
    if n < ICV_LEN + 4 {
        return Err(DropReason::TunnelNoRoom);
    }
    d.copy_within(n - ICV_LEN..n, n - ICV_LEN - 4);
    if pkt.trim(4) {
        Ok(())
    } else {
        Err(DropReason::TunnelNoRoom)
    }
}

/// The outer headers of a received ESP frame, as [`esp_header`] found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspHeader {
    /// Offset of the outer IPv4 header.
    pub l3_offset: usize,
    /// Offset of the ESP header.
    pub esp_offset: usize,
    /// Outer source and destination.
    pub src: [u8; 4],
    /// See `src`.
    pub dst: [u8; 4],
    /// SPI.
    pub spi: u32,
    /// Low half of the sequence number.
    pub seq_lo: u32,
    /// Outer TOS (DSCP and ECN).
    pub tos: u8,
    /// Offset one past the outer IP packet (Ethernet padding follows).
    pub ip_end: usize,
}

/// Reads the ESP header of a validated IPv4 frame whose protocol is ESP. `Err(EspMalformed)`
/// when the ESP header is cut off.
pub fn esp_header(data: &[u8], parsed: &Parsed) -> Result<EspHeader, DropReason> {
    let l3 = usize::from(parsed.l3_offset);
    let esp = usize::from(parsed.l4_offset);
    let ip_end = l3 + usize::from(parsed.ip_len);
    if parsed.l3 != L3::Ipv4 || parsed.l4_proto != IPPROTO_ESP || parsed.fragment {
        // Fragments of ESP packets would need reassembly first: not supported, counted.
        return Err(DropReason::EspMalformed);
    }
    let ip = data.get(l3..l3 + 20).ok_or(DropReason::EspMalformed)?;
    let h = data
        .get(esp..esp + ESP_HDR_LEN)
        .filter(|_| esp + ESP_HDR_LEN <= ip_end)
        .ok_or(DropReason::EspMalformed)?;
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Ok(EspHeader {
        l3_offset: l3,
        esp_offset: esp,
        src: [ip[12], ip[13], ip[14], ip[15]],
        dst: [ip[16], ip[17], ip[18], ip[19]],
        spi: be32(&h[0..4]),
        seq_lo: be32(&h[4..8]),
        tos: ip[1],
        ip_end,
    })
}

/// Prepares a received ESP frame (headers `h`, full sequence number `seq` from the replay
/// window) for the device: trims Ethernet padding, checks the lengths, and for chained
/// algorithms with ESN inserts the sequence number's high half before the ICV.
pub fn decap_prepare<P: Packet>(
    pkt: &mut P,
    h: &EspHeader,
    alg: Algorithm,
    esn: bool,
    salt: [u8; 4],
    seq: u64,
) -> Result<EspJob, DropReason> {
    let frame_len = pkt.frame_len() as usize;
    if pkt.data().len() != frame_len || frame_len < h.ip_end {
        return Err(DropReason::EspMalformed);
    }
    if frame_len > h.ip_end && !pkt.trim(frame_len - h.ip_end) {
        return Err(DropReason::EspMalformed);
    }
    let iv_len = alg.iv_len();
    let payload = h.esp_offset + ESP_HDR_LEN + iv_len;
    let end = h.ip_end;
    // Ciphertext: at least the 2 trailer bytes, a whole number of blocks (RFC 4303 §2.4).
    let Some(cipher_len) = end.checked_sub(payload + ICV_LEN) else {
        return Err(DropReason::EspMalformed);
    };
    if cipher_len < 2 || cipher_len % alg.block() != 0 {
        return Err(DropReason::EspMalformed);
    }
    let seq_hi = (seq >> 32) as u32;
    let mut job = EspJob {
        cipher_offset: payload as u32,
        cipher_len: cipher_len as u32,
        ..EspJob::default()
    };
    let d = pkt.data();
    let iv = d
        .get(payload - iv_len..payload)
        .ok_or(DropReason::EspMalformed)?;
    if alg.is_aead() {
        job.iv[..4].copy_from_slice(&salt);
        job.iv[4..12].copy_from_slice(iv);
        job.aad[..4].copy_from_slice(&h.spi.to_be_bytes());
        if esn {
            job.aad[4..8].copy_from_slice(&seq_hi.to_be_bytes());
            job.aad[8..12].copy_from_slice(&h.seq_lo.to_be_bytes());
            job.aad_len = 12;
        } else {
            job.aad[4..8].copy_from_slice(&h.seq_lo.to_be_bytes());
            job.aad_len = 8;
        }
        job.digest_offset = (payload + cipher_len) as u32;
        return Ok(job);
    }
    job.iv.copy_from_slice(iv);
    job.auth_offset = h.esp_offset as u32;
    let cipher_end = payload + cipher_len;
    if esn {
        // ... ciphertext | seq_hi | ICV: move the ICV up by 4 and put seq_hi where it was.
        if !pkt.append(4) {
            return Err(DropReason::EspMalformed);
        }
        let d = pkt.data_mut().ok_or(DropReason::EspMalformed)?;
        d.copy_within(cipher_end..cipher_end + ICV_LEN, cipher_end + 4);
        d[cipher_end..cipher_end + 4].copy_from_slice(&seq_hi.to_be_bytes());
        job.auth_len = (cipher_end + 4 - h.esp_offset) as u32;
        job.digest_offset = (cipher_end + 4) as u32;
    } else {
        job.auth_len = (cipher_end - h.esp_offset) as u32;
        job.digest_offset = cipher_end as u32;
    }
    Ok(job)
}

/// The inner packet [`decap_finish`] left: its network layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// After the device verified and decrypted `job` (from [`decap_prepare`]): checks the padding
/// and the next header (RFC 4303 §2.4-2.6), applies the outer ECN to the inner header (RFC 6040
/// §4.2), removes every outer byte and any TFC padding (§2.7) and puts a synthetic Ethernet
/// header (`dst_mac`, `src_mac`, the inner EtherType) in front of the inner packet.
pub fn decap_finish<P: Packet>(
    pkt: &mut P,
    job: &EspJob,
    outer_tos: u8,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
) -> Result<Inner, DropReason> {
    let start = job.cipher_offset as usize;
    let end = start + job.cipher_len as usize;
    let d = pkt.data_mut().ok_or(DropReason::EspMalformed)?;
    if end > d.len() || end < start + 2 {
        return Err(DropReason::EspMalformed);
    }
    let pad_len = usize::from(d[end - 2]);
    let next_header = d[end - 1];
    let Some(inner_max) = (end - start).checked_sub(2 + pad_len) else {
        return Err(DropReason::EspBadPadding);
    };
    let pad = &d[end - 2 - pad_len..end - 2];
    if pad.iter().enumerate().any(|(i, &b)| b != (i + 1) as u8) {
        return Err(DropReason::EspBadPadding);
    }
    let inner = &mut d[start..start + inner_max];
    let (kind, et, ip_len) = match next_header {
        NH_IPV4 => {
            if inner.len() < 20 || inner[0] >> 4 != 4 {
                return Err(DropReason::EspPolicyMismatch);
            }
            let len = usize::from(u16::from_be_bytes([inner[2], inner[3]]));
            (Inner::Ipv4, ethertype::IPV4, len)
        }
        NH_IPV6 => {
            if inner.len() < 40 || inner[0] >> 4 != 6 {
                return Err(DropReason::EspPolicyMismatch);
            }
            let len = 40 + usize::from(u16::from_be_bytes([inner[4], inner[5]]));
            (Inner::Ipv6, ethertype::IPV6, len)
        }
        NH_NONE => return Err(DropReason::EspDummy),
        _ => return Err(DropReason::EspPolicyMismatch),
    };
    if ip_len > inner.len() || (kind == Inner::Ipv4 && ip_len < 20) {
        return Err(DropReason::EspMalformed);
    }
    // RFC 6040 §4.2 decapsulation.
    match kind {
        Inner::Ipv4 => {
            let Some(tos) = ecn_decapsulate(inner[1], outer_tos) else {
                return Err(DropReason::EcnDrop);
            };
            if tos != inner[1] {
                // RFC 1624 incremental checksum update for the changed TOS byte.
                let old = u16::from_be_bytes([inner[0], inner[1]]);
                let new = u16::from_be_bytes([inner[0], tos]);
                let c = u16::from_be_bytes([inner[10], inner[11]]);
                let mut sum = u32::from(!c) + u32::from(!old) + u32::from(new);
                sum = (sum & 0xffff) + (sum >> 16);
                sum = (sum & 0xffff) + (sum >> 16);
                inner[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
                inner[1] = tos;
            }
        }
        Inner::Ipv6 => {
            let tc = (inner[0] << 4) | (inner[1] >> 4);
            let Some(tc2) = ecn_decapsulate(tc, outer_tos) else {
                return Err(DropReason::EcnDrop);
            };
            inner[1] = (inner[1] & 0x0f) | ((tc2 & 0x0f) << 4);
        }
    }
    let tail = pkt.frame_len() as usize - (start + ip_len);
    if start < ETH_LEN {
        return Err(DropReason::EspMalformed);
    }
    // Keep a new Ethernet header and the inner packet: drop the rest at both ends in one step.
    let front = ETH_LEN as isize - start as isize;
    let d = pkt
        .reframe(front, -(tail as isize))
        .ok_or(DropReason::EspMalformed)?;
    d[0..6].copy_from_slice(&dst_mac);
    d[6..12].copy_from_slice(&src_mac);
    d[12..14].copy_from_slice(&et.to_be_bytes());
    Ok(kind)
}

/// The job [`decap_prepare`] built for a frame of `frame_len` bytes whose plaintext starts at
/// `cipher_offset` (the worker carries that offset with the operation, not the job): where the
/// plaintext ends is found again from the frame's length, so nothing else travels with it.
#[inline]
pub fn decap_job_at(
    frame_len: usize,
    cipher_offset: usize,
    alg: Algorithm,
    esn: bool,
) -> Result<EspJob, DropReason> {
    let end = frame_len
        .checked_sub(ICV_LEN + esn_tail(alg, esn))
        .filter(|&e| e >= cipher_offset + 2)
        .ok_or(DropReason::EspMalformed)?;
    Ok(EspJob {
        cipher_offset: cipher_offset as u32,
        cipher_len: (end - cipher_offset) as u32,
        ..EspJob::default()
    })
}
