//! The Internet checksum (RFC 1071), for re-fixing checksums after a malformed frame's header
//! was changed. Well-formed frames get their checksums from etherparse.

/// Adds `data` as big-endian 16-bit words (a trailing odd byte padded with zero) to `acc`.
pub(super) fn add_bytes(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds the carries of `acc` and returns its one's complement: the checksum field value.
pub(super) fn finish(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // Folded to 16 bits above.
    !(acc as u16)
}

/// Recomputes the IPv4 header checksum of the 20-byte header `hdr` in place.
pub(super) fn fix_ipv4_header(hdr: &mut [u8]) {
    hdr[10..12].fill(0);
    let sum = finish(add_bytes(0, &hdr[..20]));
    hdr[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// Recomputes a TCP/UDP checksum in place. `frame[l3..]` holds the IP header (20-byte IPv4 or
/// 40-byte IPv6), `frame[l4..]` the transport segment (to the frame's end), `csum_at` the
/// checksum field's offset within the segment, and `pseudo_len` the length put in the
/// pseudo-header. A computed 0 is sent as 0xffff (required for UDP, equivalent for TCP).
pub(super) fn fix_l4(
    frame: &mut [u8],
    l3: usize,
    l4: usize,
    proto: u8,
    pseudo_len: u32,
    csum_at: usize,
) {
    let addrs = if frame[l3] >> 4 == 4 {
        &frame[l3 + 12..l3 + 20]
    } else {
        &frame[l3 + 8..l3 + 40]
    };
    let mut acc = add_bytes(0, addrs);
    acc += u64::from(proto) + u64::from(pseudo_len >> 16) + u64::from(pseudo_len & 0xffff);
    frame[l4 + csum_at..l4 + csum_at + 2].fill(0);
    let mut sum = finish(add_bytes(acc, &frame[l4..]));
    if sum == 0 {
        sum = 0xffff;
    }
    frame[l4 + csum_at..l4 + csum_at + 2].copy_from_slice(&sum.to_be_bytes());
}
