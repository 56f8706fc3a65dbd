//! Why a packet was dropped. Every drop in the appliance carries exactly one of these, and each is
//! counted per port and exported as `appliance_port_drops_total{port,reason}`.

/// Defines [`DropReason`] together with its metric label and help text, so the three never drift.
macro_rules! drop_reasons {
    ($($variant:ident => $label:literal, $help:literal;)+) => {
        /// A counted reason for dropping a packet.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $(#[doc = $help] $variant,)+
        }

        impl DropReason {
            /// Every reason, in declaration order (the order of [`DropReason::index`]).
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)+];
            /// Number of reasons: the size of a per-reason counter array.
            pub const COUNT: usize = Self::ALL.len();

            /// The `reason` label value used in metrics and summaries (snake_case, stable).
            pub const fn label(self) -> &'static str {
                match self { $(DropReason::$variant => $label,)+ }
            }

            /// One sentence for operators: what happened to the packet.
            pub const fn help(self) -> &'static str {
                match self { $(DropReason::$variant => $help,)+ }
            }
        }
    };
}

drop_reasons! {
    Runt => "runt", "Frame shorter than an Ethernet header (14 bytes), or its 802.1Q/802.1ad tag is cut off.";
    Ipv4Truncated => "ipv4_truncated", "EtherType IPv4 but fewer than 20 bytes of IPv4 header, or fewer than the header length (IHL) says.";
    Ipv4BadVersion => "ipv4_bad_version", "EtherType IPv4 but the version field is not 4.";
    Ipv4BadHeaderLength => "ipv4_bad_header_length", "IPv4 header length (IHL) below 5 words.";
    Ipv4BadTotalLength => "ipv4_bad_total_length", "IPv4 total length smaller than the header or larger than the frame carries.";
    Ipv4BadChecksum => "ipv4_bad_checksum", "IPv4 header checksum does not verify (checked in software unless the NIC verified it).";
    Ipv6Truncated => "ipv6_truncated", "EtherType IPv6 but fewer than 40 bytes of IPv6 header.";
    Ipv6BadVersion => "ipv6_bad_version", "EtherType IPv6 but the version field is not 6.";
    Ipv6BadPayloadLength => "ipv6_bad_payload_length", "IPv6 payload length larger than the frame carries.";
    Ipv6BadExtensionHeader => "ipv6_bad_extension_header", "IPv6 extension header chain runs past the payload or is longer than the parser follows.";
    L4Truncated => "l4_truncated", "TCP, UDP or ICMP header cut off by the end of the IP payload.";
    TcpBadDataOffset => "tcp_bad_data_offset", "TCP data offset below 5 words or past the end of the IP payload.";
    UdpBadLength => "udp_bad_length", "UDP length field below 8 or larger than the IP payload.";
    NoRoute => "no_route", "No classifier or forwarding entry of the ingress port decided where the packet goes.";
    ActionDrop => "action_drop", "A configured action (forwarding entry or classifier action) dropped the packet.";
    Stolen => "stolen", "A direct-action classifier returned stolen or trap: the packet is consumed.";
    RedirectNoTarget => "redirect_no_target", "A direct-action classifier returned redirect but its filter names no redirect port.";
    RedirectLoop => "redirect_loop", "A mirror or redirect would nest deeper than the limit (4 hops, as Linux's MIRRED_NEST_LIMIT): the packet is dropped instead of looping.";
    MirredTargetDown => "mirred_target_down", "A redirect action's target port is down (link or administratively); the packet is dropped (a mirror to a down port counts an overlimit instead).";
    MirredNoTarget => "mirred_no_target", "A redirect to a port group found no member other than the port the packet is on.";
    TxQueueFull => "tx_queue_full", "The egress port's transmit queue did not accept the packet.";
    TunnelNotIp => "tunnel_not_ip", "A packet sent into a tunnel is neither IPv4 nor IPv6 (a VTI carries IP only).";
    TunnelNoSa => "tunnel_no_sa", "A tunnel has no usable outbound SA (none with its okey as mark and its endpoints in tunnel mode; Linux's tx_carrier_errors).";
    TunnelTooBig => "tunnel_too_big", "A packet is larger than the tunnel's MTU (path MTU minus ESP overhead); an ICMP fragmentation-needed / packet-too-big went back to its sender unless RFC 1122 forbids one.";
    TunnelNoRoom => "tunnel_no_room", "No headroom or tailroom for the ESP headers and trailer, or a multi-segment packet (the crypto device works on one segment).";
    NeighbourUnresolved => "neighbour_unresolved", "The tunnel's next hop MAC is not known yet (an ARP request was sent); the packet is dropped rather than queued.";
    SaExpired => "sa_expired", "The SA reached a hard lifetime limit (packets or bytes) and is no longer used.";
    EspSeqExhausted => "esp_seq_exhausted", "The outbound SA used up its sequence numbers (2^32 - 1 without ESN) and must not cycle (RFC 4303 3.3.3).";
    EspUnknownSpi => "esp_unknown_spi", "An ESP packet to a local endpoint carries an SPI no inbound SA has.";
    EspSaRemoved => "esp_sa_removed", "An ESP packet for an inbound SA that a configuration reload removed or replaced (rekeyed): the peer still sends with it.";
    EspMalformed => "esp_malformed", "An ESP packet is truncated, fragmented, or its ciphertext is not a whole number of blocks.";
    EspReplay => "esp_replay", "An ESP packet's sequence number was already received (anti-replay, RFC 4303 3.4.3).";
    EspTooOld => "esp_too_old", "An ESP packet's sequence number is older than the anti-replay window (or zero).";
    EspBadIcv => "esp_bad_icv", "An ESP packet's integrity check value did not verify (wrong key, corruption or forgery).";
    EspBadPadding => "esp_bad_padding", "A decrypted ESP trailer's padding is not 1, 2, 3, ... or its pad length exceeds the payload (RFC 4303 2.4).";
    EspPolicyMismatch => "esp_policy_mismatch", "A decrypted packet fails the inbound policy: not IPv4/IPv6 as its next header says, or no tunnel has the SA's endpoints and its mark as ikey.";
    EspDummy => "esp_dummy", "A decrypted ESP packet is a dummy (next header 59), discarded as RFC 4303 2.6 requires.";
    EcnDrop => "ecn_drop", "The outer header says congestion experienced but the inner packet is not ECN-capable: dropped as RFC 6040 4.2 requires.";
    CryptoQueueFull => "crypto_queue_full", "The crypto device's queue or operation pool was full: the packet could not be enqueued.";
    CryptoError => "crypto_error", "The crypto device failed the operation (other than an ICV mismatch).";
    LocalConsumed => "local_consumed", "A packet for a local endpoint consumed by the appliance itself: an ARP reply to it, or an ICMP error about its ESP that updated a path MTU.";
    LocalUnsupported => "local_unsupported", "A packet to a local tunnel endpoint address that the appliance does not answer (not ARP, ESP, ICMP echo or an ICMP error about our ESP).";
}

impl DropReason {
    /// Position of this reason in [`DropReason::ALL`]: an index for per-reason counter arrays.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_position_and_labels_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(seen.insert(r.label()), "duplicate label {}", r.label());
            assert!(r
                .label()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
            assert!(r.help().ends_with('.'));
        }
        assert_eq!(DropReason::COUNT, DropReason::ALL.len());
    }
}
