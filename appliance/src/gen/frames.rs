//! Flow table and frame building for [`FrameGenerator`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{IpHeaders, IpNumber, Ipv4Header, Ipv6Header, PacketBuilder, PacketBuilderStep};
use rand::{RngCore, SeedableRng};
use rand_pcg::Pcg64;

use super::checksum;
use super::{
    check_frame_size, FlowInfo, FrameGenerator, FrameKind, GenError, GenOptions, IpChoice,
    L4Choice, MalformedKind, DST_PORTS, MAX_FLOWS,
};

const ETH_LEN: usize = 14;
const VLAN_LEN: usize = 4;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const TCP_LEN: usize = 20;
const ICMP_LEN: usize = 8;
/// Bytes of TCP header an [`MalformedKind::L4Truncated`] frame keeps.
const TRUNCATED_L4_LEN: usize = 8;
const SEQ_LEN: usize = 8;
const PAYLOAD_FILL: u8 = 0xa5;
const TTL: u8 = 64;
/// Mixed into the seed for the malformed-decision stream, so it differs from the flow stream.
const MALFORMED_STREAM: u64 = 0x6d61_6c66_6f72_6d65;

/// IP version of a flow or frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IpVer {
    V4,
    V6,
}

/// One flow: both address families are kept so a malformed frame that needs the other IP
/// version still uses the flow's addresses.
#[derive(Debug, Clone, Copy)]
pub(super) struct Flow {
    index: u32,
    ip: IpVer,
    proto: L4Choice,
    src4: [u8; 4],
    dst4: [u8; 4],
    src6: [u8; 16],
    dst6: [u8; 16],
    src_port: u16,
    dst_port: u16,
}

impl Flow {
    #[allow(dead_code, reason = "used by `FrameGenerator::flow` only")]
    pub(super) fn info(&self) -> FlowInfo {
        let (src, dst) = match self.ip {
            IpVer::V4 => (
                IpAddr::V4(Ipv4Addr::from(self.src4)),
                IpAddr::V4(Ipv4Addr::from(self.dst4)),
            ),
            IpVer::V6 => (
                IpAddr::V6(Ipv6Addr::from(self.src6)),
                IpAddr::V6(Ipv6Addr::from(self.dst6)),
            ),
        };
        let (src_port, dst_port) = match self.proto {
            L4Choice::Icmp => (0, 0),
            L4Choice::Tcp | L4Choice::Udp => (self.src_port, self.dst_port),
        };
        FlowInfo {
            src,
            dst,
            proto: self.proto,
            src_port,
            dst_port,
        }
    }
}

/// A uniform-enough draw in `0..n` from one raw 64-bit output (Lemire's multiply-shift without
/// rejection): portable and independent of `rand`'s distribution algorithms.
fn below(rng: &mut Pcg64, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

fn header_len(vlan: bool, ip: IpVer, l4: L4Choice) -> usize {
    let l2 = ETH_LEN + if vlan { VLAN_LEN } else { 0 };
    let l3 = match ip {
        IpVer::V4 => IPV4_LEN,
        IpVer::V6 => IPV6_LEN,
    };
    let l4 = match l4 {
        L4Choice::Tcp => TCP_LEN,
        L4Choice::Udp => UDP_LEN,
        L4Choice::Icmp => ICMP_LEN,
    };
    l2 + l3 + l4
}

fn ip_len(ip: IpVer) -> usize {
    match ip {
        IpVer::V4 => IPV4_LEN,
        IpVer::V6 => IPV6_LEN,
    }
}

fn put_u16(buf: &mut [u8], at: usize, v: usize) {
    // Frame lengths are at most 9000 + 8, far below u16::MAX.
    buf[at..at + 2].copy_from_slice(&(v as u16).to_be_bytes());
}

/// Panics on a build error: with frames of at most 9000 bytes and no extension headers, none of
/// etherparse's length limits can be reached, so an error here is a bug.
fn built<E: std::fmt::Debug>(r: Result<(), E>) {
    if let Err(e) = r {
        panic!("building a frame failed: {e:?}");
    }
}

pub(super) fn new_generator(opts: &GenOptions) -> Result<FrameGenerator, GenError> {
    if opts.flows == 0 || opts.flows > MAX_FLOWS {
        return Err(GenError::option(
            "--flows",
            format!("{} is not in 1..={MAX_FLOWS}", opts.flows),
        ));
    }
    if opts.proto.is_empty() {
        return Err(GenError::option(
            "--proto",
            "at least one of tcp, udp, icmp is needed",
        ));
    }
    let vlan = match opts.vlan {
        None => None,
        Some(id) => Some(etherparse::VlanId::try_new(id).map_err(|_| {
            GenError::option("--vlan", format!("{id} is not a VLAN id (0..=4095)"))
        })?),
    };
    if opts.malformed_permille > 1000 {
        return Err(GenError::option(
            "--malformed-permille",
            format!("{} is not in 0..=1000", opts.malformed_permille),
        ));
    }
    let sizes = opts.size.pattern();
    if sizes.is_empty() {
        return Err(GenError::option("--size", "the list of sizes is empty"));
    }
    for &n in &sizes {
        check_frame_size(u32::from(n)).map_err(|m| GenError::option("--size", m))?;
    }

    let mut rng = Pcg64::seed_from_u64(opts.seed);
    let src4 = u32::from(opts.src_ipv4);
    let dst4 = u32::from(opts.dst_ipv4);
    let src6 = u128::from(opts.src_ipv6);
    let dst6 = u128::from(opts.dst_ipv6);
    let flows = (0..opts.flows)
        .map(|i| {
            // Fixed number of draws per flow, in this order: the flow table is a prefix-stable
            // function of the seed.
            let src_port = 1024 + below(&mut rng, 65536 - 1024) as u16;
            let dst_port = DST_PORTS[below(&mut rng, DST_PORTS.len() as u64) as usize];
            let host = below(&mut rng, 256);
            let (ip, proto_slot) = match opts.ip {
                IpChoice::V4 => (IpVer::V4, i),
                IpChoice::V6 => (IpVer::V6, i),
                IpChoice::Mix if i % 2 == 0 => (IpVer::V4, i / 2),
                IpChoice::Mix => (IpVer::V6, i / 2),
            };
            Flow {
                index: i,
                ip,
                proto: opts.proto[proto_slot as usize % opts.proto.len()],
                src4: src4.wrapping_add(i).to_be_bytes(),
                // `host` < 256.
                dst4: dst4.wrapping_add(host as u32).to_be_bytes(),
                src6: src6.wrapping_add(u128::from(i)).to_be_bytes(),
                dst6: dst6.wrapping_add(u128::from(host)).to_be_bytes(),
                src_port,
                dst_port,
            }
        })
        .collect();

    Ok(FrameGenerator {
        src_mac: opts.src_mac.0,
        dst_mac: opts.dst_mac.0,
        vlan,
        flows,
        sizes,
        malformed_permille: opts.malformed_permille,
        malformed_rng: Pcg64::seed_from_u64(opts.seed ^ MALFORMED_STREAM),
        malformed_made: 0,
        seq: 0,
        payload: Vec::new(),
    })
}

impl FrameGenerator {
    pub(super) fn next_frame_impl(&mut self, buf: &mut Vec<u8>) -> FrameKind {
        let seq = self.seq;
        self.seq += 1;
        let flow = self.flows[(seq % self.flows.len() as u64) as usize];
        let size = usize::from(self.sizes[(seq % self.sizes.len() as u64) as usize]);
        let malformed = self.malformed_permille > 0
            && below(&mut self.malformed_rng, 1000) < u64::from(self.malformed_permille);
        if malformed {
            let all = MalformedKind::ALL;
            let kind = all[(self.malformed_made % all.len() as u64) as usize];
            self.malformed_made += 1;
            self.write_malformed(buf, kind, &flow, seq, size);
            FrameKind::Malformed(kind)
        } else {
            self.write_frame(buf, &flow, flow.ip, flow.proto, seq, size);
            FrameKind::Valid { flow: flow.index }
        }
    }

    fn l3_offset(&self) -> usize {
        ETH_LEN + if self.vlan.is_some() { VLAN_LEN } else { 0 }
    }

    /// Fills the payload buffer: the sequence number when there is room, then the fill byte.
    fn fill_payload(&mut self, seq: u64, len: usize) {
        self.payload.clear();
        if len >= SEQ_LEN {
            self.payload.extend_from_slice(&seq.to_be_bytes());
        }
        self.payload.resize(len, PAYLOAD_FILL);
    }

    /// The Ethernet, optional VLAN and IP headers of a frame of `flow` using IP version `ip`.
    fn ip_step(&self, flow: &Flow, ip: IpVer, seq: u64) -> PacketBuilderStep<IpHeaders> {
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        // Lengths, protocol and checksum are filled in by the builder.
        let header = match ip {
            IpVer::V4 => IpHeaders::Ipv4(
                Ipv4Header {
                    source: flow.src4,
                    destination: flow.dst4,
                    time_to_live: TTL,
                    identification: seq as u16,
                    dont_fragment: true,
                    ..Default::default()
                },
                Default::default(),
            ),
            IpVer::V6 => IpHeaders::Ipv6(
                Ipv6Header {
                    hop_limit: TTL,
                    source: flow.src6,
                    destination: flow.dst6,
                    ..Default::default()
                },
                Default::default(),
            ),
        };
        match self.vlan {
            Some(id) => eth.single_vlan(id).ip(header),
            None => eth.ip(header),
        }
    }

    /// Writes a well-formed frame of `flow` with the given IP version and protocol, `size` bytes
    /// long or the header length if that is larger.
    fn write_frame(
        &mut self,
        buf: &mut Vec<u8>,
        flow: &Flow,
        ip: IpVer,
        proto: L4Choice,
        seq: u64,
        size: usize,
    ) {
        let headers = header_len(self.vlan.is_some(), ip, proto);
        self.fill_payload(seq, size.max(headers) - headers);
        let step = self.ip_step(flow, ip, seq);
        let payload = &self.payload;
        buf.clear();
        match (proto, ip) {
            (L4Choice::Udp, _) => built(
                step.udp(flow.src_port, flow.dst_port)
                    .write_to_vec(buf, payload),
            ),
            (L4Choice::Tcp, _) => built(
                step.tcp(flow.src_port, flow.dst_port, seq as u32, u16::MAX)
                    .psh()
                    .ack(1)
                    .write_to_vec(buf, payload),
            ),
            (L4Choice::Icmp, IpVer::V4) => built(
                step.icmpv4_echo_request(flow.index as u16, seq as u16)
                    .write_to_vec(buf, payload),
            ),
            (L4Choice::Icmp, IpVer::V6) => built(
                step.icmpv6_echo_request(flow.index as u16, seq as u16)
                    .write_to_vec(buf, payload),
            ),
        }
        debug_assert_eq!(buf.len(), size.max(headers));
    }

    fn write_malformed(
        &mut self,
        buf: &mut Vec<u8>,
        kind: MalformedKind,
        flow: &Flow,
        seq: u64,
        size: usize,
    ) {
        use MalformedKind as M;
        let l3 = self.l3_offset();
        match kind {
            M::Runt => {
                self.write_frame(buf, flow, flow.ip, flow.proto, seq, size);
                buf.truncate(10);
            }
            M::TruncatedVlanTag => {
                let tci = self.vlan.map_or(1, u16::from);
                buf.clear();
                buf.extend_from_slice(&self.dst_mac);
                buf.extend_from_slice(&self.src_mac);
                buf.extend_from_slice(&0x8100u16.to_be_bytes());
                buf.extend_from_slice(&tci.to_be_bytes());
            }
            M::Ipv4Truncated => {
                self.write_frame(buf, flow, IpVer::V4, flow.proto, seq, size);
                buf.truncate(l3 + 10);
            }
            M::Ipv4BadVersion | M::Ipv4BadHeaderLength | M::Ipv4TotalLengthTooLong => {
                self.write_frame(buf, flow, IpVer::V4, flow.proto, seq, size);
                match kind {
                    M::Ipv4BadVersion => buf[l3] = 0x65,
                    M::Ipv4BadHeaderLength => buf[l3] = 0x44,
                    _ => {
                        let carried = buf.len() - l3;
                        put_u16(buf, l3 + 2, carried + 8);
                    }
                }
                checksum::fix_ipv4_header(&mut buf[l3..l3 + IPV4_LEN]);
            }
            M::Ipv4BadChecksum => {
                self.write_frame(buf, flow, IpVer::V4, flow.proto, seq, size);
                buf[l3 + 10] ^= 0x5a;
                buf[l3 + 11] ^= 0x5a;
            }
            M::Ipv6Truncated => {
                self.write_frame(buf, flow, IpVer::V6, flow.proto, seq, size);
                buf.truncate(l3 + 20);
            }
            M::Ipv6PayloadLengthTooLong => {
                self.write_frame(buf, flow, IpVer::V6, flow.proto, seq, size);
                let carried = buf.len() - l3 - IPV6_LEN;
                put_u16(buf, l3 + 4, carried + 8);
            }
            M::UdpLengthTooLong => {
                self.write_frame(buf, flow, flow.ip, L4Choice::Udp, seq, size);
                let l4 = l3 + ip_len(flow.ip);
                let stated = buf.len() - l4 + 8;
                put_u16(buf, l4 + 4, stated);
                checksum::fix_l4(buf, l3, l4, IpNumber::UDP.0, stated as u32, 6);
            }
            M::TcpBadDataOffset => {
                self.write_frame(buf, flow, flow.ip, L4Choice::Tcp, seq, size);
                let l4 = l3 + ip_len(flow.ip);
                buf[l4 + 12] = 0x40 | (buf[l4 + 12] & 0x0f);
                let seg_len = (buf.len() - l4) as u32;
                checksum::fix_l4(buf, l3, l4, IpNumber::TCP.0, seg_len, 16);
            }
            M::L4Truncated => {
                // The first 8 bytes of the TCP header the flow would send.
                let mut l4 = [0u8; TRUNCATED_L4_LEN];
                l4[0..2].copy_from_slice(&flow.src_port.to_be_bytes());
                l4[2..4].copy_from_slice(&flow.dst_port.to_be_bytes());
                l4[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
                buf.clear();
                built(
                    self.ip_step(flow, flow.ip, seq)
                        .write_to_vec(buf, IpNumber::TCP, &l4),
                );
            }
        }
    }
}
