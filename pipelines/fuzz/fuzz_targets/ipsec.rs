//! Fuzzes the tunnel stage's readers of untrusted bytes: the ESP header, the preparation of an
//! inbound packet for the crypto device, the device's output coming back (the plaintext is as
//! arbitrary as these bytes: a peer with the key can send anything), decapsulation, ICMP errors
//! about our own ESP (vti4_err), ARP and the ARP reply built in place. None may panic, and what
//! they accept must stay inside the packet.
//!
//! Input layout: byte 0 picks the algorithm (bits 0-1), ESN (bit 2) and the NIC-verified
//! checksum flag (bit 3); byte 1 is the high half of the sequence number; the rest is the frame.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run ipsec`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipelines::ipsec::esp::{self, Inner};
use pipelines::ipsec::{arp, icmp, Algorithm};
use pipelines::packet::{Packet, VecPacket};
use pipelines::wire::{self, ethertype};

fuzz_target!(|input: &[u8]| {
    let Some((&[ctl, hi], frame)) = input.split_first_chunk::<2>() else {
        return;
    };
    let alg = Algorithm::ALL[usize::from(ctl & 3)];
    let esn = ctl & 4 != 0;
    let Ok(len) = u32::try_from(frame.len()) else {
        return;
    };
    let Ok(parsed) = wire::parse(frame, len, ctl & 8 != 0) else {
        return;
    };
    if let Some(e) = icmp::esp_frag_needed(frame, &parsed) {
        assert!(e.mtu <= 0xffff, "{e:?}");
    }
    if let Some(a) = arp::read(frame, &parsed) {
        let mut p = VecPacket::new(frame);
        if arp::reply_in_place(&mut p, &parsed, &a, [2, 0, 0, 0, 0, 1]) {
            assert_eq!(p.data().len(), frame.len());
        }
    }
    let Ok(h) = esp::esp_header(frame, &parsed) else {
        return;
    };
    assert!(h.esp_offset + 8 <= h.ip_end && h.ip_end <= frame.len(), "{h:?}");
    let mut p = VecPacket::new(frame);
    let seq = (u64::from(hi) << 32) | u64::from(h.seq_lo);
    let Ok(job) = esp::decap_prepare(&mut p, &h, alg, esn, [1, 2, 3, 4], seq) else {
        return;
    };
    let n = p.data().len() as u64;
    let end = |off: u32, len: u32| u64::from(off) + u64::from(len);
    assert!(end(job.cipher_offset, job.cipher_len) <= n, "{job:?}");
    assert!(end(job.digest_offset, 16) <= n, "{job:?}");
    assert!(end(job.auth_offset, job.auth_len) <= n, "{job:?}");
    // Where the plaintext ends, found again from its start and the frame's length when the
    // device hands the packet back.
    let again = esp::decap_job_at(p.data().len(), job.cipher_offset as usize, alg, esn)
        .expect("a prepared packet's job");
    let tos = h.tos;
    assert_eq!(
        (again.cipher_offset, again.cipher_len),
        (job.cipher_offset, job.cipher_len)
    );
    let Ok(kind) = esp::decap_finish(&mut p, &again, tos, [2; 6], [4; 6]) else {
        return;
    };
    let d = p.data();
    assert!(d.len() >= 14 + 20, "{kind:?}");
    assert_eq!(&d[0..12], &[2, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4]);
    let et = u16::from_be_bytes([d[12], d[13]]);
    match kind {
        Inner::Ipv4 => assert_eq!((et, d[14] >> 4), (ethertype::IPV4, 4)),
        Inner::Ipv6 => assert_eq!((et, d[14] >> 4), (ethertype::IPV6, 6)),
    }
});
