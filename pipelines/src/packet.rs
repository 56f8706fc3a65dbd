//! The view of a packet the pipeline needs. `pmd-glue` implements it for DPDK mbufs; tests and
//! benchmarks implement it for plain byte buffers ([`VecPacket`]).

/// A packet owned by the pipeline while it decides what to do with it. Dropping the value releases
/// the packet (for an mbuf: back to its pool).
pub trait Packet {
    /// The bytes of the first segment, starting at the Ethernet header. Headers the pipeline parses
    /// always sit in the first segment (the mbuf data room is far larger than any header stack).
    fn data(&self) -> &[u8];
    /// Writable first segment, or `None` when the bytes are shared with another packet (a mirror
    /// clone) and must not be written in place.
    fn data_mut(&mut self) -> Option<&mut [u8]>;
    /// Total length of the frame over all segments (`pkt_len`); at least `data().len()`.
    fn frame_len(&self) -> u32;
    /// The NIC's RSS hash, when the NIC computed one.
    fn rss_hash(&self) -> Option<u32>;
    /// True when the NIC already verified the IPv4 header checksum as good.
    fn ipv4_checksum_verified(&self) -> bool;

    /// Grows the packet by `len` bytes in front (headroom) and returns false, changing
    /// nothing, when there is no room or the bytes are shared. Tunnels use these four.
    fn prepend(&mut self, len: usize) -> bool {
        let _ = len;
        false
    }
    /// Grows the packet by `len` bytes at its end (tailroom of a single-segment packet).
    fn append(&mut self, len: usize) -> bool {
        let _ = len;
        false
    }
    /// Removes `len` bytes from the front.
    fn adj(&mut self, len: usize) -> bool {
        let _ = len;
        false
    }
    /// Removes `len` bytes from the end.
    fn trim(&mut self, len: usize) -> bool {
        let _ = len;
        false
    }

    /// Moves both ends of a single-segment packet at once, the start by `front` bytes (positive:
    /// grows into the headroom; negative: removes bytes) and the end by `back` bytes (positive:
    /// grows into the tailroom; negative: removes bytes), and returns the writable bytes.
    /// `None` when there is no room, the packet has more than one segment, or its bytes are
    /// shared; the packet is then left in an unspecified length (callers drop it).
    fn reframe(&mut self, front: isize, back: isize) -> Option<&mut [u8]> {
        if self.data().len() != self.frame_len() as usize {
            return None;
        }
        let ok = match back {
            b if b < 0 => self.trim(b.unsigned_abs()),
            b => self.append(b.unsigned_abs()),
        } && match front {
            f if f < 0 => self.adj(f.unsigned_abs()),
            f => self.prepend(f.unsigned_abs()),
        };
        if ok {
            self.data_mut()
        } else {
            None
        }
    }
}

/// A packet held in an ordinary heap buffer: for tests, fuzzing and benchmarks without DPDK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecPacket {
    /// The frame, from its Ethernet header.
    pub bytes: Vec<u8>,
    /// The RSS hash to report, if any.
    pub rss: Option<u32>,
}

impl VecPacket {
    /// A packet holding `bytes` with no RSS hash.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            bytes: bytes.into(),
            rss: None,
        }
    }
}

impl Packet for VecPacket {
    fn data(&self) -> &[u8] {
        &self.bytes
    }
    fn data_mut(&mut self) -> Option<&mut [u8]> {
        Some(&mut self.bytes)
    }
    fn frame_len(&self) -> u32 {
        u32::try_from(self.bytes.len()).unwrap_or(u32::MAX)
    }
    fn rss_hash(&self) -> Option<u32> {
        self.rss
    }
    fn ipv4_checksum_verified(&self) -> bool {
        false
    }
    fn prepend(&mut self, len: usize) -> bool {
        self.bytes.splice(0..0, std::iter::repeat_n(0u8, len));
        true
    }
    fn append(&mut self, len: usize) -> bool {
        self.bytes.resize(self.bytes.len() + len, 0);
        true
    }
    fn adj(&mut self, len: usize) -> bool {
        if len > self.bytes.len() {
            return false;
        }
        self.bytes.drain(..len);
        true
    }
    fn trim(&mut self, len: usize) -> bool {
        if len > self.bytes.len() {
            return false;
        }
        self.bytes.truncate(self.bytes.len() - len);
        true
    }
}
