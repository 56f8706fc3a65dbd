//! ESP framing against independent ciphers (RustCrypto's AES-GCM, AES-CBC and HMAC-SHA-256 in
//! place of the crypto device), ICMP and ARP built here checked by etherparse, and the SA and
//! tunnel state. Interoperability with another ESP implementation (scapy) is an end-to-end test.
use super::esp::{self, DfPolicy, EncapParams, EspJob};
use super::*;
use crate::packet::{Packet, VecPacket};
use crate::wire;
use crate::DropReason;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::KeyInit;
use hmac::Mac;
use proptest::prelude::*;

fn keys(alg: Algorithm) -> SaKeys {
    SaKeys {
        cipher: (0..alg.key_len() as u8)
            .map(|i| i.wrapping_mul(7) ^ 0x5a)
            .collect(),
        salt: if alg.is_aead() {
            [0xca, 0xfe, 0xba, 0xbe]
        } else {
            [0; 4]
        },
        auth: (0..alg.auth_key_len() as u8).map(|i| i ^ 0x33).collect(),
    }
}

/// The crypto device's work, done by RustCrypto. `Err` = ICV mismatch.
fn device(d: &mut [u8], job: &EspJob, alg: Algorithm, k: &SaKeys, encrypt: bool) -> Result<(), ()> {
    let (co, cl, dig) = (
        job.cipher_offset as usize,
        job.cipher_len as usize,
        job.digest_offset as usize,
    );
    if alg.is_aead() {
        let nonce = aes_gcm::Nonce::from_slice(&job.iv[..12]);
        let aad = &job.aad[..usize::from(job.aad_len)];
        macro_rules! gcm {
            ($c:ty) => {{
                let c = <$c>::new_from_slice(&k.cipher).unwrap();
                if encrypt {
                    let tag = c
                        .encrypt_in_place_detached(nonce, aad, &mut d[co..co + cl])
                        .unwrap();
                    d[dig..dig + 16].copy_from_slice(&tag);
                    Ok(())
                } else {
                    let tag = aes_gcm::Tag::clone_from_slice(&d[dig..dig + 16]);
                    c.decrypt_in_place_detached(nonce, aad, &mut d[co..co + cl], &tag)
                        .map_err(|_| ())
                }
            }};
        }
        return match alg {
            Algorithm::AesGcm128 => gcm!(aes_gcm::Aes128Gcm),
            _ => gcm!(aes_gcm::Aes256Gcm),
        };
    }
    use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
    let (ao, al) = (job.auth_offset as usize, job.auth_len as usize);
    let mac = |d: &[u8]| {
        let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&k.auth).unwrap();
        m.update(&d[ao..ao + al]);
        m.finalize().into_bytes()
    };
    macro_rules! cbc {
        ($a:ty) => {{
            if encrypt {
                cbc::Encryptor::<$a>::new_from_slices(&k.cipher, &job.iv)
                    .unwrap()
                    .encrypt_padded_mut::<NoPadding>(&mut d[co..co + cl], cl)
                    .unwrap();
                let t = mac(d);
                d[dig..dig + 16].copy_from_slice(&t[..16]);
                Ok(())
            } else {
                if mac(d)[..16] != d[dig..dig + 16] {
                    return Err(());
                }
                cbc::Decryptor::<$a>::new_from_slices(&k.cipher, &job.iv)
                    .unwrap()
                    .decrypt_padded_mut::<NoPadding>(&mut d[co..co + cl])
                    .unwrap();
                Ok(())
            }
        }};
    }
    match alg {
        Algorithm::AesCbc128HmacSha256 => cbc!(aes::Aes128),
        _ => cbc!(aes::Aes256),
    }
}

const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn params(alg: Algorithm, seq: u64, esn: bool) -> EncapParams {
    EncapParams {
        alg,
        spi: 0x1000,
        seq,
        esn,
        salt: keys(alg).salt,
        cbc_iv: [0x11; 16],
        src: [192, 0, 2, 1],
        dst: [192, 0, 2, 2],
        df: DfPolicy::Inherit,
        ttl: 64,
        ip_id: 7,
        src_mac: SRC_MAC,
        dst_mac: DST_MAC,
    }
}

/// An Ethernet frame (optionally VLAN-tagged) with an IPv4/UDP or IPv6/UDP packet of `payload`
/// bytes, and Ethernet padding to 60 bytes.
fn frame(v6: bool, payload: usize, vlan: bool, tos: u8) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([9; 6], [8; 6]);
    let data: Vec<u8> = (0..payload).map(|i| i as u8).collect();
    let mut out = Vec::new();
    match (v6, vlan) {
        (false, false) => {
            let mut ip = etherparse::Ipv4Header::new(
                0,
                64,
                etherparse::IpNumber::UDP,
                [10, 0, 0, 1],
                [10, 0, 0, 2],
            )
            .unwrap();
            ip.dont_fragment = true;
            ip.dscp = etherparse::IpDscp::try_new(tos >> 2).unwrap();
            ip.ecn = etherparse::IpEcn::try_new(tos & 3).unwrap();
            b.ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
                .udp(1, 2)
                .write(&mut out, &data)
                .unwrap();
        }
        (false, true) => b
            .single_vlan(100.try_into().unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut out, &data)
            .unwrap(),
        (true, _) => {
            let mut ip = etherparse::Ipv6Header {
                traffic_class: tos,
                flow_label: 0x12345.try_into().unwrap(),
                hop_limit: 64,
                source: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                destination: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                ..Default::default()
            };
            ip.next_header = etherparse::IpNumber::UDP;
            b.ip(etherparse::IpHeaders::Ipv6(ip, Default::default()))
                .udp(1, 2)
                .write(&mut out, &data)
                .unwrap();
        }
    }
    if out.len() < 60 {
        out.resize(60, 0);
    }
    out
}

fn parse(p: &VecPacket) -> wire::Parsed {
    wire::parse(p.data(), p.frame_len(), false).unwrap()
}

/// encap -> cipher -> decap, returning the ESP frame and the decapsulated frame.
fn round_trip(
    alg: Algorithm,
    esn: bool,
    seq: u64,
    input: &[u8],
) -> (Vec<u8>, Result<VecPacket, DropReason>) {
    let k = keys(alg);
    let mut p = VecPacket::new(input.to_vec());
    let parsed = parse(&p);
    let job = esp::encap(&mut p, &parsed, &params(alg, seq, esn)).unwrap();
    device(&mut p.bytes, &job, alg, &k, true).unwrap();
    esp::encap_complete(&mut p, alg, esn).unwrap();
    let wire_bytes = p.bytes.clone();
    // Receive it.
    let parsed = parse(&p);
    let h = esp::esp_header(p.data(), &parsed).unwrap();
    assert_eq!((h.spi, h.seq_lo), (0x1000, seq as u32));
    let job = esp::decap_prepare(&mut p, &h, alg, esn, k.salt, seq).unwrap();
    if device(&mut p.bytes, &job, alg, &k, false).is_err() {
        return (wire_bytes, Err(DropReason::EspBadIcv));
    }
    // What the worker finds again from the plaintext's offset and the frame's length.
    let again = esp::decap_job_at(p.bytes.len(), job.cipher_offset as usize, alg, esn).unwrap();
    assert_eq!(
        (again.cipher_offset, again.cipher_len),
        (job.cipher_offset, job.cipher_len)
    );
    let r = esp::decap_finish(&mut p, &job, h.tos, [1; 6], [3; 6]).map(|_| p);
    (wire_bytes, r)
}

#[test]
fn every_algorithm_round_trips_inner_packets_of_every_length() {
    for alg in Algorithm::ALL {
        for esn in [false, true] {
            for (v6, vlan) in [(false, false), (false, true), (true, false)] {
                for payload in (0..70).chain([200, 1000, 1400]) {
                    let seq = if esn { (5u64 << 32) | 77 } else { 77 };
                    let input = frame(v6, payload, vlan, 0);
                    let (esp_frame, out) = round_trip(alg, esn, seq, &input);
                    let ctx = format!("{alg} esn={esn} v6={v6} vlan={vlan} payload={payload}");
                    // The wire: Ethernet to the next hop, outer IPv4 with a valid checksum,
                    // protocol ESP, total length = frame - 14, block-aligned ciphertext.
                    let outer = etherparse::SlicedPacket::from_ethernet(&esp_frame).unwrap();
                    let Some(etherparse::NetSlice::Ipv4(ip)) = outer.net else {
                        panic!("{ctx}")
                    };
                    let ih = ip.header();
                    assert_eq!(ih.protocol(), etherparse::IpNumber(50), "{ctx}");
                    assert_eq!(usize::from(ih.total_len()), esp_frame.len() - 14, "{ctx}");
                    assert_eq!(
                        ih.to_header().calc_header_checksum(),
                        ih.header_checksum(),
                        "{ctx}"
                    );
                    assert_eq!(&esp_frame[0..12], &[DST_MAC, SRC_MAC].concat()[..], "{ctx}");
                    let p0 = VecPacket::new(input.clone());
                    let pi = parse(&p0);
                    let inner_len = usize::from(pi.ip_len);
                    assert_eq!(
                        esp_frame.len() - 14,
                        esp::outer_len(alg, inner_len),
                        "{ctx}"
                    );
                    // Inner packet back, byte for byte, behind the synthetic Ethernet header.
                    let out = out.unwrap();
                    let l3 = usize::from(pi.l3_offset);
                    assert_eq!(&out.bytes[14..], &input[l3..l3 + inner_len], "{ctx}");
                    assert_eq!(&out.bytes[..12], &[[1; 6], [3; 6]].concat()[..], "{ctx}");
                    let et = if v6 { 0x86ddu16 } else { 0x0800 };
                    assert_eq!(out.bytes[12..14], et.to_be_bytes(), "{ctx}");
                }
            }
        }
    }
}

#[test]
fn padding_is_monotonic_and_iv_is_the_sequence_for_gcm() {
    let alg = Algorithm::AesGcm128;
    let input = frame(false, 3, false, 0);
    let mut p = VecPacket::new(input);
    let parsed = parse(&p);
    let job = esp::encap(&mut p, &parsed, &params(alg, 0x0102_0304_0506_0708, false)).unwrap();
    let d = &p.bytes;
    // Plaintext trailer before encryption: 31-byte inner -> 2 pad bytes (31 + 2 + 1 = 34? no:
    // (31 + 2) aligned to 4 = 36, so 3 pad bytes 1, 2, 3).
    let end = (job.cipher_offset + job.cipher_len) as usize;
    assert_eq!(job.cipher_len % 4, 0);
    let pad = usize::from(d[end - 2]);
    assert_eq!(&d[end - 2 - pad..end - 2], &[1, 2, 3][..pad]);
    assert_eq!(d[end - 1], 4);
    assert_eq!(&d[42..50], &0x0102_0304_0506_0708u64.to_be_bytes());
    assert_eq!(
        &job.iv[..12],
        &[0xca, 0xfe, 0xba, 0xbe, 1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(&job.aad[..8], &[0, 0, 0x10, 0, 5, 6, 7, 8]);
}

#[test]
fn wrong_key_bad_padding_and_dummy_packets_are_refused() {
    for alg in Algorithm::ALL {
        let k = keys(alg);
        // Corrupt a ciphertext byte: the ICV fails.
        let mut p = VecPacket::new(frame(false, 40, false, 0));
        let parsed = parse(&p);
        let job = esp::encap(&mut p, &parsed, &params(alg, 9, false)).unwrap();
        device(&mut p.bytes, &job, alg, &k, true).unwrap();
        p.bytes[job.cipher_offset as usize + 3] ^= 1;
        let parsed = parse(&p);
        let h = esp::esp_header(p.data(), &parsed).unwrap();
        let job = esp::decap_prepare(&mut p, &h, alg, false, k.salt, 9).unwrap();
        assert!(device(&mut p.bytes, &job, alg, &k, false).is_err(), "{alg}");
        // Wrong padding byte / dummy next header (authenticated, so only checked after).
        for (what, expect) in [
            ("pad", DropReason::EspBadPadding),
            ("nh", DropReason::EspDummy),
            ("padlen", DropReason::EspBadPadding),
        ] {
            let mut p = VecPacket::new(frame(false, 41, false, 0));
            let parsed = parse(&p);
            let job = esp::encap(&mut p, &parsed, &params(alg, 9, false)).unwrap();
            let end = (job.cipher_offset + job.cipher_len) as usize;
            match what {
                "pad" => p.bytes[end - 3] ^= 0x40,
                "nh" => p.bytes[end - 1] = 59,
                _ => p.bytes[end - 2] = 250,
            }
            device(&mut p.bytes, &job, alg, &k, true).unwrap();
            let parsed = parse(&p);
            let h = esp::esp_header(p.data(), &parsed).unwrap();
            let job = esp::decap_prepare(&mut p, &h, alg, false, k.salt, 9).unwrap();
            device(&mut p.bytes, &job, alg, &k, false).unwrap();
            assert_eq!(
                esp::decap_finish(&mut p, &job, h.tos, [0; 6], [0; 6]).map(|_| ()),
                Err(expect),
                "{alg} {what}"
            );
        }
    }
}

#[test]
fn esn_high_half_is_authenticated_not_sent() {
    for alg in Algorithm::ALL {
        let input = frame(false, 100, false, 0);
        let (with_hi, out) = round_trip(alg, true, (9u64 << 32) | 5, &input);
        out.unwrap();
        let (without, _) = round_trip(alg, false, 5, &input);
        // Same length on the wire; different ICV (the high half is authenticated).
        assert_eq!(with_hi.len(), without.len(), "{alg}");
        assert_ne!(
            with_hi[with_hi.len() - 16..],
            without[without.len() - 16..],
            "{alg}"
        );
        // A receiver that infers the wrong high half fails the ICV.
        let k = keys(alg);
        let mut p = VecPacket::new(with_hi);
        let parsed = parse(&p);
        let h = esp::esp_header(p.data(), &parsed).unwrap();
        let job = esp::decap_prepare(&mut p, &h, alg, true, k.salt, (8u64 << 32) | 5).unwrap();
        assert!(device(&mut p.bytes, &job, alg, &k, false).is_err(), "{alg}");
    }
}

#[test]
fn ecn_follows_rfc_6040() {
    // Encapsulation copies DSCP and ECN (normal mode), CE included.
    for tos in [0u8, 1, 2, 3, 0xb8 | 3] {
        let mut p = VecPacket::new(frame(false, 20, false, tos));
        let parsed = parse(&p);
        esp::encap(&mut p, &parsed, &params(Algorithm::AesGcm128, 1, false)).unwrap();
        assert_eq!(p.bytes[15], tos);
    }
    // Decapsulation: RFC 6040 Figure 4 (rows: inner, columns: outer Not-ECT, ECT0, ECT1, CE).
    let table: [[Option<u8>; 4]; 4] = [
        [Some(0), Some(0), Some(0), None],
        [Some(1), Some(1), Some(1), Some(3)],
        [Some(2), Some(2), Some(1), Some(3)],
        [Some(3), Some(3), Some(3), Some(3)],
    ];
    let cp = [0u8, 2, 1, 3];
    for (i, row) in [0u8, 1, 2, 3].iter().zip(table) {
        for (o, want) in cp.iter().zip(row) {
            assert_eq!(
                ecn_decapsulate(0xb8 | i, 0x40 | o),
                want.map(|w| 0xb8 | w),
                "inner {i} outer {o}"
            );
        }
    }
}

#[test]
fn decap_applies_outer_ce_and_keeps_the_inner_checksum_valid() {
    for alg in [Algorithm::AesGcm128, Algorithm::AesCbc128HmacSha256] {
        for v6 in [false, true] {
            let k = keys(alg);
            let mut p = VecPacket::new(frame(v6, 30, false, 0x02));
            let parsed = parse(&p);
            let job = esp::encap(&mut p, &parsed, &params(alg, 3, false)).unwrap();
            device(&mut p.bytes, &job, alg, &k, true).unwrap();
            // A router on the path marks CE on the outer header.
            p.bytes[15] |= 3;
            let csum = wire::ipv4_header_checksum(&{
                let mut h = p.bytes[14..34].to_vec();
                h[10] = 0;
                h[11] = 0;
                h
            });
            p.bytes[24..26].copy_from_slice(&csum.to_be_bytes());
            let parsed = parse(&p);
            let h = esp::esp_header(p.data(), &parsed).unwrap();
            let job = esp::decap_prepare(&mut p, &h, alg, false, k.salt, 3).unwrap();
            device(&mut p.bytes, &job, alg, &k, false).unwrap();
            esp::decap_finish(&mut p, &job, h.tos, [0; 6], [0; 6]).unwrap();
            let inner = parse(&p); // full validation, including the IPv4 checksum
            let ecn = if v6 {
                (p.bytes[15] >> 4) & 3
            } else {
                p.bytes[15] & 3
            };
            assert_eq!(ecn, 3, "v6={v6}");
            assert_eq!(inner.l4_proto, 17);
        }
    }
}

#[test]
fn mtu_arithmetic_is_exact() {
    for alg in Algorithm::ALL {
        for path in 100..9100u32 {
            let m = esp::inner_mtu(alg, path) as usize;
            assert!(esp::outer_len(alg, m) <= path as usize, "{alg} {path}");
            assert!(esp::outer_len(alg, m + 1) > path as usize, "{alg} {path}");
        }
    }
    // 1500-byte underlay: GCM (52 bytes of headers, IV and ICV, 4-byte alignment) carries
    // 1446; CBC + HMAC (60 bytes, 16-byte blocks) 1438.
    assert_eq!(esp::inner_mtu(Algorithm::AesGcm128, 1500), 1446);
    assert_eq!(esp::inner_mtu(Algorithm::AesCbc128HmacSha256, 1500), 1438);
}

fn sa(dir: SaDirection, spi: u32, mark: u32, src: [u8; 4], dst: [u8; 4]) -> Sa {
    Sa::new(
        SaConfig {
            name: format!("{spi:#x}"),
            spi,
            direction: dir,
            src,
            dst,
            mark,
            algorithm: Algorithm::AesGcm128,
            keys: keys(Algorithm::AesGcm128),
            replay_window: 64,
            esn: false,
            lifetime: Lifetime::default(),
        },
        2,
    )
    .unwrap()
}

#[test]
fn replay_window_zero_disables_anti_replay_only_without_esn() {
    let mut cfg = sa(SaDirection::In, 0x300, 0, B, A).cfg.clone();
    cfg.replay_window = 0;
    let s = Sa::new(cfg.clone(), 1).unwrap();
    assert!(s.replay().is_none());
    // Restoring a sequence state of an SA without a window changes nothing.
    s.restore_seq(5);
    assert_eq!(s.seq_reserved(), 0);
    cfg.esn = true;
    assert!(Sa::new(cfg.clone(), 1).is_none());
    cfg.replay_window = 32;
    cfg.esn = false;
    assert!(Sa::new(cfg, 1).is_none());
}

const A: [u8; 4] = [192, 0, 2, 1];
const B: [u8; 4] = [192, 0, 2, 2];

fn tunnel(port: u16, okey: u32, ikey: u32) -> Tunnel {
    Tunnel::new(
        "vti".into(),
        PortIndex(port),
        PortIndex(0),
        A,
        B,
        (ikey, okey),
        (1480, 1500),
        B,
        None,
    )
}

#[test]
fn tables_pick_sas_like_vti_state_check() {
    let sas = vec![
        sa(SaDirection::Out, 1, 7, B, A), // wrong endpoints for tunnel 0
        sa(SaDirection::Out, 2, 7, A, B),
        sa(SaDirection::In, 3, 5, B, A),
        sa(SaDirection::In, 3, 5, B, [192, 0, 2, 9]),
    ];
    let ip = Ipsec::new(sas, vec![tunnel(2, 7, 5), tunnel(3, 8, 6)], 4).unwrap();
    assert_eq!(ip.tunnels[0].out_sa, Some(1));
    assert_eq!(ip.tunnels[1].out_sa, None);
    assert_eq!(ip.inbound_sa(3, A), Some(2));
    assert_eq!(ip.inbound_sa(3, [192, 0, 2, 9]), Some(3));
    assert_eq!(ip.inbound_sa(4, A), None);
    assert_eq!(ip.tunnel_for_inbound(2, B, A), Some(0));
    assert_eq!(ip.tunnel_for_inbound(2, A, B), None);
    assert_eq!(ip.tunnel_of_port(PortIndex(3)), Some(1));
    assert_eq!(ip.tunnel_of_port(PortIndex(1)), None);
    assert!(ip.is_local(PortIndex(0), A) && !ip.is_local(PortIndex(1), A));
    let dup = Ipsec::new(
        vec![
            sa(SaDirection::In, 3, 5, B, A),
            sa(SaDirection::In, 3, 6, B, A),
        ],
        vec![],
        1,
    );
    assert!(dup.unwrap_err().0.contains("share SPI 0x3"));
}

#[test]
fn sequence_numbers_never_cycle_and_honour_the_packet_lifetime() {
    let s = sa(SaDirection::Out, 1, 0, A, B);
    let mut b = SeqBlock::default();
    let got: Vec<u64> = (0..100).map(|_| s.next_seq(&mut b).unwrap()).collect();
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
    // Two workers get disjoint numbers.
    let mut b2 = SeqBlock::default();
    let x = s.next_seq(&mut b2).unwrap();
    assert!(x > 100 && !got.contains(&x));
    // Restored near the end of the 32-bit space (the last number sent was 2^32 - 4): the last
    // number is 2^32 - 1, then exhaustion.
    s.restore_seq(u64::from(u32::MAX) - 3);
    let mut b3 = SeqBlock::default();
    let tail: Vec<_> = (0..5).map(|_| s.next_seq(&mut b3)).collect();
    assert_eq!(
        tail[..3],
        [Ok(0xffff_fffd), Ok(0xffff_fffe), Ok(0xffff_ffff)]
    );
    assert_eq!(
        tail[3..],
        [Err(SeqError::Exhausted), Err(SeqError::Exhausted)]
    );
    assert!(s.exhausted());
    // ESN goes past 2^32.
    let mut cfg = sa(SaDirection::Out, 1, 0, A, B).cfg.clone();
    cfg.esn = true;
    let e = Sa::new(cfg.clone(), 1).unwrap();
    e.restore_seq(u64::from(u32::MAX) - 1);
    let mut b4 = SeqBlock::default();
    assert_eq!(e.next_seq(&mut b4), Ok(0xffff_ffff));
    assert_eq!(e.next_seq(&mut b4), Ok(0x1_0000_0000));
    // A packet lifetime of 40: exactly 40 packets.
    cfg.lifetime.packets = Some(40);
    let l = Sa::new(cfg, 1).unwrap();
    let mut b5 = SeqBlock::default();
    let ok = (0..100).filter(|_| l.next_seq(&mut b5).is_ok()).count();
    assert_eq!(ok, 40);
    assert!(l.expired());
}

#[test]
fn pmtu_is_learnt_lowered_only_and_expires() {
    let t = tunnel(1, 0, 0);
    assert_eq!(t.path_mtu(0), 1500);
    assert!(t.learn_pmtu(1400, 1000));
    assert!(!t.learn_pmtu(1450, 1000));
    assert!(t.learn_pmtu(100, 2000));
    assert_eq!(t.path_mtu(2000), MIN_PMTU);
    assert_eq!(t.path_mtu(2000 + PMTU_EXPIRY_MS), 1500);
    assert_eq!(t.effective_mtu(Algorithm::AesGcm128, 2000), 498);
    assert_eq!(
        t.effective_mtu(Algorithm::AesGcm128, 2000 + PMTU_EXPIRY_MS),
        1446
    );
    t.set_next_hop_mac([1, 2, 3, 4, 5, 6]);
    assert_eq!(t.next_hop_mac(), Some([1, 2, 3, 4, 5, 6]));
}

#[test]
fn a_kept_sa_carries_its_state_and_a_changed_one_starts_afresh() {
    let s = sa(SaDirection::Out, 1, 9, A, B);
    // Worker 0 takes 1..=3 (its block runs to 32), worker 1 the next block.
    assert_eq!(
        (0..3)
            .map(|_| s.next_seq_on(0).unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(s.next_seq_on(1), Ok(33));
    s.counters(0).unwrap().packets.add(3);
    s.counters(1).unwrap().packets.add(1);
    assert!(s.counters(2).is_none());
    // Another mark and lifetime: the same SA (state, counters, the workers' blocks).
    let mut cfg = s.cfg.clone();
    cfg.mark = 10;
    cfg.lifetime.packets = Some(1000);
    let k = Sa::keeping(cfg.clone(), &s).unwrap();
    assert!(k.shares_state_with(&s) && k.cfg.mark == 10);
    assert_eq!(k.next_seq_on(0), Ok(4));
    assert_eq!(k.next_seq_on(1), Ok(34));
    assert_eq!(k.total(|c| c.packets.get()), 4);
    assert_eq!(k.seq_reserved(), 64);
    // Each identity field makes another SA.
    let changes: [fn(&mut SaConfig); 9] = [
        |c| c.name.push('x'),
        |c| c.spi += 1,
        |c| c.direction = SaDirection::In,
        |c| c.src = [10, 0, 0, 1],
        |c| c.dst = [10, 0, 0, 2],
        |c| c.algorithm = Algorithm::AesGcm256,
        |c| c.keys.cipher[0] ^= 1,
        |c| c.esn = true,
        |c| c.replay_window = 128,
    ];
    for (i, change) in changes.iter().enumerate() {
        let mut c = cfg.clone();
        change(&mut c);
        assert!(!c.same_sa(&s.cfg), "change {i}");
        assert!(Sa::keeping(c, &s).is_none(), "change {i}");
    }
    // Expiry is part of the state; a changed soft limit is armed again once in effect.
    let mut soft = cfg.clone();
    soft.lifetime.soft_packets = Some(10);
    let k2 = Sa::keeping(soft.clone(), &k).unwrap();
    assert!(k2.mark_soft_expired());
    k2.expire();
    let k3 = Sa::keeping(soft.clone(), &k2).unwrap();
    assert!(!k3.rearm_soft_lifetime(&k2));
    assert!(k3.soft_expired() && k3.expired());
    soft.lifetime.soft_packets = Some(20);
    let k4 = Sa::keeping(soft, &k3).unwrap();
    assert!(
        k4.soft_expired(),
        "keeping changes nothing of the running SA"
    );
    assert!(k4.rearm_soft_lifetime(&k3));
    assert!(!k4.soft_expired() && k4.expired() && s.expired());
    assert!(!k4.rearm_soft_lifetime(&sa(SaDirection::Out, 1, 9, A, B)));
}

#[test]
fn a_kept_inbound_sa_keeps_its_replay_window() {
    let s = sa(SaDirection::In, 0x300, 7, B, A);
    let w = s.replay().unwrap();
    w.update(&w.lock(), 100).unwrap();
    let k = Sa::keeping(s.cfg.clone(), &s).unwrap();
    assert_eq!(k.replay().unwrap().top(), 100);
    assert_eq!(
        k.replay().unwrap().check(100),
        Err(replay::ReplayError::Replayed)
    );
    let fresh = sa(SaDirection::In, 0x300, 7, B, A);
    assert!(!fresh.shares_state_with(&s));
    assert_eq!(fresh.replay().unwrap().check(100), Ok(100));
}

#[test]
fn tunnels_keep_what_they_learnt_while_their_path_stays() {
    let t = tunnel(1, 0, 0);
    t.set_next_hop_mac([2, 0, 0, 0, 0, 9]);
    assert!(t.learn_pmtu(1400, 1000));
    // Other keys and MTU: the same path.
    let mut n = tunnel(1, 5, 6);
    n.mtu = 1400;
    assert!(!n.same_config(&t));
    assert!(n.keep_learnt(&t) && n.shares_learnt_with(&t));
    assert_eq!(n.next_hop_mac(), Some([2, 0, 0, 0, 0, 9]));
    assert_eq!(n.path_mtu(1000), 1400);
    // Another next hop: learnt afresh.
    let mut m = tunnel(1, 0, 0);
    m.next_hop = [192, 0, 2, 254];
    assert!(!m.keep_learnt(&t) && m.next_hop_mac().is_none());
    assert!(tunnel(1, 0, 0).same_config(&t));
}

#[test]
fn tables_remember_removed_inbound_sas_and_carry_a_backend() {
    let mut ip = Ipsec::new(vec![sa(SaDirection::In, 3, 5, B, A)], vec![], 1).unwrap();
    ip.set_removed_inbound(vec![(9, A), (4, A), (9, A)]);
    assert_eq!(ip.removed_inbound(), [(4, A), (9, A)]);
    assert!(ip.was_removed(9, A) && !ip.was_removed(9, B) && !ip.was_removed(3, A));
    assert!(ip.backend::<Vec<u8>>().is_none());
    assert!(ip.attach_backend(Arc::new(vec![1u8, 2])));
    assert!(!ip.attach_backend(Arc::new(vec![3u8])));
    assert_eq!(*ip.backend::<Vec<u8>>().unwrap(), [1, 2]);
    assert!(ip.backend::<String>().is_none());
}

#[test]
fn icmp_errors_are_well_formed() {
    // IPv4 DF packet of 1400 bytes -> frag needed with MTU 1300, 576 bytes at most.
    let mut p = VecPacket::new(frame(false, 1372, true, 0));
    let parsed = parse(&p);
    let orig = p.bytes.clone();
    icmp::frag_needed(&mut p, &parsed, 1300, [192, 0, 2, 1]).unwrap();
    let s = etherparse::SlicedPacket::from_ethernet(&p.bytes).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
        panic!()
    };
    assert_eq!(ip.header().destination(), [10, 0, 0, 1]);
    assert_eq!(
        ip.header().to_header().calc_header_checksum(),
        ip.header().header_checksum()
    );
    assert_eq!(usize::from(ip.header().total_len()), 576);
    let Some(etherparse::TransportSlice::Icmpv4(ic)) = &s.transport else {
        panic!()
    };
    assert_eq!(
        ic.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1300 }
        )
    );
    assert_eq!(
        ic.header().icmp_type.calc_checksum(ic.payload()),
        ic.checksum()
    );
    assert_eq!(&p.bytes[0..6], &orig[6..12]);
    assert_eq!(&p.bytes[12..18], &orig[12..18], "VLAN tag kept");
    assert_eq!(&p.bytes[18 + 28..18 + 28 + 100], &orig[18..118], "quote");
    // IPv6 -> packet too big, never below 1280, checksum over the pseudo-header.
    let mut p = VecPacket::new(frame(true, 1400, false, 0));
    let parsed = parse(&p);
    icmp::packet_too_big(
        &mut p,
        &parsed,
        1000,
        [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    )
    .unwrap();
    assert_eq!(p.bytes.len(), 14 + 1280);
    let s = etherparse::SlicedPacket::from_ethernet(&p.bytes).unwrap();
    let Some(etherparse::NetSlice::Ipv6(ip)) = &s.net else {
        panic!()
    };
    let Some(etherparse::TransportSlice::Icmpv6(ic)) = &s.transport else {
        panic!()
    };
    assert_eq!(
        ic.icmp_type(),
        etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 }
    );
    let want = ic
        .icmp_type()
        .calc_checksum(
            ip.header().source(),
            ip.header().destination(),
            ic.payload(),
        )
        .unwrap();
    assert_eq!(want, ic.checksum());
    // No error about an ICMP error.
    let mut p = VecPacket::new(p.bytes.clone());
    let parsed = parse(&p);
    assert!(icmp::packet_too_big(&mut p, &parsed, 1280, [1; 16]).is_err());
}

#[test]
fn icmp_about_our_esp_is_read() {
    // An ESP packet we sent, quoted in a frag-needed from a router.
    let mut p = VecPacket::new(frame(false, 1000, false, 0));
    let parsed = parse(&p);
    esp::encap(&mut p, &parsed, &params(Algorithm::AesGcm128, 1, false)).unwrap();
    let mut icmp_frame = frame(false, 0, false, 0);
    let router = [198, 51, 100, 1];
    let mut router_pkt = VecPacket::new(p.bytes.clone());
    let rp = parse(&router_pkt);
    icmp::frag_needed(&mut router_pkt, &rp, 1200, router).unwrap();
    icmp_frame.clear();
    icmp_frame.extend_from_slice(&router_pkt.bytes);
    let p2 = VecPacket::new(icmp_frame);
    let parsed = parse(&p2);
    let e = icmp::esp_frag_needed(p2.data(), &parsed).unwrap();
    assert_eq!(
        e,
        icmp::EspError {
            src: A,
            dst: B,
            spi: 0x1000,
            mtu: 1200
        }
    );
}

#[test]
fn arp_requests_for_a_local_address_are_answered() {
    let req = arp::request([7; 6], [192, 0, 2, 2], A);
    let mut p = VecPacket::new(req.to_vec());
    let parsed = parse(&p);
    let a = arp::read(p.data(), &parsed).unwrap();
    assert_eq!((a.op, a.sha, a.spa, a.tpa), (1, [7; 6], [192, 0, 2, 2], A));
    assert!(arp::reply_in_place(&mut p, &parsed, &a, [1; 6]));
    let r = arp::read(p.data(), &parsed).unwrap();
    assert_eq!((r.op, r.sha, r.spa, r.tpa), (2, [1; 6], A, [192, 0, 2, 2]));
    assert_eq!(&p.bytes[0..12], &[[7; 6], [1; 6]].concat()[..]);
    assert_eq!(&p.bytes[14 + 18..14 + 24], &[7; 6]);
}

proptest! {
    #[test]
    fn arbitrary_esp_frames_never_panic(body in prop::collection::vec(any::<u8>(), 0..300), alg in 0usize..4, esn: bool, seq: u64) {
        let alg = Algorithm::ALL[alg];
        let mut f = frame(false, 0, false, 0);
        f.truncate(34);
        f[23] = 50;
        f.extend_from_slice(&body);
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[24] = 0;
        f[25] = 0;
        let c = wire::ipv4_header_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let mut p = VecPacket::new(f);
        if let Ok(parsed) = wire::parse(p.data(), p.frame_len(), false) {
            if let Ok(h) = esp::esp_header(p.data(), &parsed) {
                if let Ok(job) = esp::decap_prepare(&mut p, &h, alg, esn, [0; 4], seq) {
                    // Whatever the "plaintext" is, finishing never panics.
                    let _ = esp::decap_finish(&mut p, &job, h.tos, [0; 6], [0; 6]);
                }
            }
        }
    }
}
