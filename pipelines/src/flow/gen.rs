//! Deterministic frames for tests, comparisons and benchmarks of the flow classifier: every path
//! of the dissector (VLAN and QinQ tags, PPPoE, IPv4 with options and fragments, IPv6, GRE with
//! each flag and with Ethernet inside, IPv4/IPv6 in IPv4, ports of each protocol, SPIs, non-IP
//! EtherTypes), often nested, sometimes truncated. The same seed gives the same frame.
use crate::cbpf::gen::Rng;
use crate::wire::ipv4_header_checksum;

/// A frame: Ethernet II, then IPv4 carrying `proto` with the 4 bytes `ports` at the start of
/// its payload (source and destination port), then 16 bytes of zeros. Checksum and lengths are
/// valid.
pub fn ipv4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = eth_header(0x0800);
    let ip = f.len();
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    l4_ports(&mut f, proto, sport, dport);
    let mut fix = Fixups::default();
    fix.v4.push(ip);
    fix.apply(&mut f);
    f
}

/// A frame: Ethernet II, then IPv6 with next header `proto`, ports as [`ipv4_frame`].
pub fn ipv6_frame(src: [u8; 16], dst: [u8; 16], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = eth_header(0x86dd);
    let ip = f.len();
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, proto, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    l4_ports(&mut f, proto, sport, dport);
    let mut fix = Fixups::default();
    fix.v6.push(ip);
    fix.apply(&mut f);
    f
}

fn eth_header(ethertype: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn l4_ports(f: &mut Vec<u8>, proto: u8, sport: u16, dport: u16) {
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        // Sequence and acknowledgement numbers, data offset 5 (20 bytes) and ACK, window...
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        // UDP length and checksum (0: none).
        f.extend_from_slice(&[0, 24, 0, 0]);
    }
    f.extend(std::iter::repeat_n(0u8, 16));
}

/// Offsets of IP headers whose length fields (and IPv4 checksum) are filled in at the end.
#[derive(Default)]
struct Fixups {
    v4: Vec<usize>,
    v6: Vec<usize>,
}

impl Fixups {
    fn apply(&self, f: &mut [u8]) {
        let len = f.len();
        for &at in &self.v4 {
            let total = u16::try_from(len - at).unwrap_or(u16::MAX);
            f[at + 2..at + 4].copy_from_slice(&total.to_be_bytes());
            f[at + 10..at + 12].copy_from_slice(&[0, 0]);
            let hlen = usize::from(f[at] & 0x0f) * 4;
            if hlen >= 20 && at + hlen <= len {
                let c = ipv4_header_checksum(&f[at..at + hlen]);
                f[at + 10..at + 12].copy_from_slice(&c.to_be_bytes());
            }
        }
        for &at in &self.v6 {
            let payload = u16::try_from(len.saturating_sub(at + 40)).unwrap_or(u16::MAX);
            f[at + 4..at + 6].copy_from_slice(&payload.to_be_bytes());
        }
    }
}

/// The network protocol a layer announces.
#[derive(Clone, Copy)]
enum Net {
    V4,
    V6,
    Arp,
    Other(u16),
}

impl Net {
    fn ethertype(self) -> u16 {
        match self {
            Net::V4 => 0x0800,
            Net::V6 => 0x86dd,
            Net::Arp => 0x0806,
            Net::Other(t) => t,
        }
    }
}

fn bytes(r: &mut Rng, f: &mut Vec<u8>, n: usize) {
    f.extend((0..n).map(|_| r.next_u64() as u8));
}

fn pick_net(r: &mut Rng) -> Net {
    match r.below(20) {
        0..=10 => Net::V4,
        11..=16 => Net::V6,
        17 => Net::Arp,
        18 => Net::Other(r.pick(&[0x88cc, 0x8847, 0x0842, 0x9000, 0x8864, 0x0000])),
        _ => Net::Other(r.next_u32() as u16),
    }
}

/// An IPv4 address: random, sometimes 0.0.0.0 (the keys' fallback), sometimes from a few.
fn v4_addr(r: &mut Rng) -> [u8; 4] {
    match r.below(16) {
        0 => [0; 4],
        1..=4 => r.pick(&[[10, 0, 0, 1], [10, 0, 0, 2], [192, 168, 1, 1]]),
        _ => r.next_u32().to_be_bytes(),
    }
}

fn v6_addr(r: &mut Rng) -> [u8; 16] {
    let mut a = [0u8; 16];
    match r.below(16) {
        0 => {}
        // Folds to zero (the XOR of four equal words): the key falls back.
        1 => {
            let w = r.next_u32().to_be_bytes();
            for c in a.chunks_exact_mut(4) {
                c.copy_from_slice(&w);
            }
        }
        2..=4 => a = r.pick(&[[0xfd; 16], [0xfe; 16]]),
        _ => {
            for b in a.iter_mut() {
                *b = r.next_u64() as u8;
            }
        }
    }
    a
}

/// Transport payload after an IP header announcing `proto`; tunnels recurse while `depth < 2`.
fn transport(r: &mut Rng, f: &mut Vec<u8>, fix: &mut Fixups, proto: u8, depth: u32) {
    let ports = |r: &mut Rng| -> [u8; 4] {
        match r.below(10) {
            0 => [0; 4],
            1 => [0, 0, 0, 80],
            2 => [0, 80, 0, 80],
            _ => r.next_u32().to_be_bytes(),
        }
    };
    match proto {
        6 => {
            f.extend_from_slice(&ports(r));
            bytes(r, f, 8);
            f.extend_from_slice(&[0x50, 0x10]);
            bytes(r, f, 6);
        }
        17 | 136 => {
            f.extend_from_slice(&ports(r));
            bytes(r, f, 4);
        }
        33 | 132 | 50 => {
            f.extend_from_slice(&ports(r));
            bytes(r, f, 8);
        }
        51 => {
            f.extend_from_slice(&[r.pick(&[6, 17, 50]), 4, 0, 0]);
            f.extend_from_slice(&ports(r));
            bytes(r, f, 16);
        }
        47 if depth < 2 => gre(r, f, fix, depth),
        4 if depth < 2 => ipv4(r, f, fix, depth + 1),
        41 if depth < 2 => ipv6(r, f, fix, depth + 1),
        _ => {
            let n = r.range(0, 24) as usize;
            bytes(r, f, n);
        }
    }
}

fn pick_proto(r: &mut Rng, depth: u32) -> u8 {
    let tunnels = depth < 2 && r.chance(1, 4);
    if tunnels {
        r.pick(&[47, 47, 4, 41])
    } else {
        r.pick(&[
            6, 6, 6, 17, 17, 17, 1, 58, 33, 50, 51, 132, 136, 0, 44, 43, 89, 255,
        ])
    }
}

fn ipv4(r: &mut Rng, f: &mut Vec<u8>, fix: &mut Fixups, depth: u32) {
    let at = f.len();
    let ihl = match r.below(24) {
        0 => r.range(0, 4) as u8,
        1..=3 => r.range(6, 15) as u8,
        _ => 5,
    };
    let version = if r.chance(1, 32) { 6 } else { 4 };
    let frag: u16 = match r.below(16) {
        0 => 0x2000,                             // MF, first fragment
        1 => r.range(1, 0x1fff) as u16,          // later fragment
        2 => 0x2000 | r.range(1, 0x1fff) as u16, // middle fragment
        3..=8 => 0x4000,                         // DF
        9 => 0x8000,                             // reserved bit only
        _ => 0,
    };
    let proto = pick_proto(r, depth);
    f.extend_from_slice(&[version << 4 | ihl, 0, 0, 0]);
    bytes(r, f, 2);
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0]);
    let src = v4_addr(r);
    let dst = if r.chance(1, 16) { src } else { v4_addr(r) };
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    if ihl > 5 {
        bytes(r, f, usize::from(ihl - 5) * 4);
    }
    fix.v4.push(at);
    transport(r, f, fix, proto, depth);
}

fn ipv6(r: &mut Rng, f: &mut Vec<u8>, fix: &mut Fixups, depth: u32) {
    let at = f.len();
    let proto = pick_proto(r, depth);
    f.push(0x60 | r.below(16) as u8);
    bytes(r, f, 3);
    f.extend_from_slice(&[0, 0, proto, 64]);
    f.extend_from_slice(&v6_addr(r));
    f.extend_from_slice(&v6_addr(r));
    fix.v6.push(at);
    transport(r, f, fix, proto, depth);
}

fn gre(r: &mut Rng, f: &mut Vec<u8>, fix: &mut Fixups, depth: u32) {
    let mut flags = 0u16;
    for bit in [0x8000, 0x2000, 0x1000] {
        if r.chance(1, 2) {
            flags |= bit;
        }
    }
    match r.below(10) {
        0 => flags |= 0x4000,               // routing: not looked into
        1 => flags |= r.range(1, 7) as u16, // version 1..=7: not looked into
        2 => flags |= 0x0800,               // strict source route bit: ignored
        _ => {}
    }
    let inner = match r.below(10) {
        0..=3 => Some(Net::V4),
        4..=5 => Some(Net::V6),
        6..=7 => None, // transparent Ethernet bridging
        8 => Some(Net::Arp),
        _ => Some(Net::Other(0x880b)),
    };
    let ptype = inner.map_or(0x6558, Net::ethertype);
    f.extend_from_slice(&flags.to_be_bytes());
    f.extend_from_slice(&ptype.to_be_bytes());
    let optional = [0x8000u16, 0x2000, 0x1000]
        .iter()
        .filter(|&&b| flags & b != 0)
        .count();
    bytes(r, f, 4 * optional);
    match inner {
        Some(net) => network(r, f, fix, net, depth + 1),
        None => {
            bytes(r, f, 12);
            let mut net = pick_net(r);
            if r.chance(1, 4) {
                f.extend_from_slice(&[0x81, 0x00]);
                bytes(r, f, 2);
            }
            if matches!(net, Net::Other(0x8864)) {
                net = Net::V4;
            }
            f.extend_from_slice(&net.ethertype().to_be_bytes());
            network(r, f, fix, net, depth + 1);
        }
    }
}

fn network(r: &mut Rng, f: &mut Vec<u8>, fix: &mut Fixups, net: Net, depth: u32) {
    match net {
        Net::V4 => ipv4(r, f, fix, depth),
        Net::V6 => ipv6(r, f, fix, depth),
        Net::Arp => {
            f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            bytes(r, f, 20);
        }
        Net::Other(_) => {
            let n = r.range(0, 40) as usize;
            bytes(r, f, n);
        }
    }
}

/// A random frame exercising the flow dissector: see the [module documentation](self). About
/// one frame in eight is cut short at a random length.
pub fn random_flow_frame(seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed ^ 0xf10e_0000_0000_0042);
    let mut f = Vec::with_capacity(256);
    let mut fix = Fixups::default();
    // Destination and source MAC.
    bytes(&mut r, &mut f, 12);
    let tci = |r: &mut Rng, f: &mut Vec<u8>| bytes(r, f, 2);
    match r.below(20) {
        0..=10 => {}
        11..=14 => {
            f.extend_from_slice(&[0x81, 0x00]);
            tci(&mut r, &mut f);
        }
        15..=16 => {
            f.extend_from_slice(&[0x88, 0xa8]);
            tci(&mut r, &mut f);
            f.extend_from_slice(&[0x81, 0x00]);
            tci(&mut r, &mut f);
        }
        17 => {
            for _ in 0..r.range(2, 4) {
                f.extend_from_slice(&r.pick(&[[0x81, 0x00], [0x88, 0xa8]]));
                tci(&mut r, &mut f);
            }
        }
        _ => {
            // PPPoE session: version/type, code, session id, length, then the PPP protocol.
            f.extend_from_slice(&[0x88, 0x64, 0x11, 0x00]);
            bytes(&mut r, &mut f, 4);
            let (ppp, net) = match r.below(8) {
                0..=3 => (0x0021, Net::V4),
                4..=5 => (0x0057, Net::V6),
                6 => (0xc021, Net::Other(0)),
                _ => (0x0800, Net::V4), // an EtherType is not a PPP protocol: dissection stops
            };
            f.extend_from_slice(&u16::to_be_bytes(ppp));
            network(&mut r, &mut f, &mut fix, net, 0);
            finish(&mut r, &mut f, &fix);
            return f;
        }
    }
    let net = pick_net(&mut r);
    f.extend_from_slice(&net.ethertype().to_be_bytes());
    network(&mut r, &mut f, &mut fix, net, 0);
    finish(&mut r, &mut f, &fix);
    f
}

/// Payload, length fields, padding to the Ethernet minimum, and the occasional truncation.
fn finish(r: &mut Rng, f: &mut Vec<u8>, fix: &Fixups) {
    let n = r.range(0, 32) as usize;
    bytes(r, f, n);
    fix.apply(f);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    if r.chance(1, 8) {
        let keep = r.below(f.len() as u64) as usize;
        f.truncate(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_deterministic_and_varied() {
        assert_eq!(random_flow_frame(7), random_flow_frame(7));
        let lens: std::collections::BTreeSet<usize> =
            (0..200).map(|s| random_flow_frame(s).len()).collect();
        assert!(lens.len() > 50, "{lens:?}");
    }

    #[test]
    fn simple_frames_parse() {
        let f = ipv4_frame([10, 0, 0, 1], [10, 0, 0, 2], 17, 1, 2);
        let p = crate::wire::parse(&f, f.len() as u32, false).unwrap();
        assert_eq!((p.src_port, p.dst_port, p.l4_proto), (1, 2, 17));
        let f = ipv6_frame([1; 16], [2; 16], 6, 3, 4);
        let p = crate::wire::parse(&f, f.len() as u32, false).unwrap();
        assert_eq!((p.src_port, p.dst_port, p.l4_proto), (3, 4, 6));
    }
}
