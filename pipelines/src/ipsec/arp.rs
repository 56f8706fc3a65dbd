//! ARP (RFC 826) for tunnel endpoints: answering requests for a local endpoint address, learning
//! next hops' MACs from what they send, and building requests for a next hop not yet known.
use crate::packet::Packet;
use crate::wire::{ethertype, Parsed};

/// An ARP packet for IPv4 over Ethernet, as read from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 = request, 2 = reply.
    pub op: u16,
    /// Sender hardware and protocol addresses.
    pub sha: [u8; 6],
    /// See `sha`.
    pub spa: [u8; 4],
    /// Target protocol address.
    pub tpa: [u8; 4],
}

/// The ARP packet in a frame whose EtherType is ARP, if it is Ethernet/IPv4 ARP.
pub fn read(d: &[u8], parsed: &Parsed) -> Option<Arp> {
    if parsed.ethertype != ethertype::ARP {
        return None;
    }
    let a = d.get(usize::from(parsed.l3_offset)..)?.get(..28)?;
    if a[0..2] != [0, 1] || a[2..4] != [8, 0] || a[4] != 6 || a[5] != 4 {
        return None;
    }
    let op = u16::from_be_bytes([a[6], a[7]]);
    if op != 1 && op != 2 {
        return None;
    }
    Some(Arp {
        op,
        sha: a[8..14].try_into().ok()?,
        spa: a[14..18].try_into().ok()?,
        tpa: a[24..28].try_into().ok()?,
    })
}

/// Rewrites a request (`req`, read from `pkt`) into the reply from `mac` for its target
/// address, in place (RFC 826: swap, fill in our hardware address, opcode 2).
pub fn reply_in_place<P: Packet>(pkt: &mut P, parsed: &Parsed, req: &Arp, mac: [u8; 6]) -> bool {
    let l3 = usize::from(parsed.l3_offset);
    let Some(d) = pkt.data_mut() else {
        return false;
    };
    let Some(a) = d.get_mut(l3..l3 + 28) else {
        return false;
    };
    a[6..8].copy_from_slice(&2u16.to_be_bytes());
    a[8..14].copy_from_slice(&mac);
    a[14..18].copy_from_slice(&req.tpa);
    a[18..24].copy_from_slice(&req.sha);
    a[24..28].copy_from_slice(&req.spa);
    d[0..6].copy_from_slice(&req.sha);
    d[6..12].copy_from_slice(&mac);
    true
}

/// A broadcast ARP request from (`mac`, `ip`) for `target`, padded to the 60-byte Ethernet
/// minimum.
pub fn request(mac: [u8; 6], ip: [u8; 4], target: [u8; 4]) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].fill(0xff);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ethertype::ARP.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip);
    f[38..42].copy_from_slice(&target);
    f
}
