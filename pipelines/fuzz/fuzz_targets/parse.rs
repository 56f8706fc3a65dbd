//! Fuzzes `pipelines::wire::parse`: it must never panic, and whatever it accepts must satisfy the
//! invariants later pipeline stages rely on. `wire::check` (the validation of frames that are
//! not parsed, with its own fast path) must give the same verdict.
//!
//! Input layout: byte 0 selects the checksum flag (bit 0) and how `frame_len` relates to the data
//! (bits 1-2); bytes 1-2 are a little-endian `u16` used for that; the rest is the first segment.
//!
//! Run: `cargo fuzz run parse` (on stable: `RUSTC_BOOTSTRAP=1 cargo fuzz run parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipelines::wire::{self, ethertype, parse, Parsed, L3};
use pipelines::DropReason;

fuzz_target!(|input: &[u8]| {
    let Some((&[ctl, n0, n1], data)) = input.split_first_chunk::<3>() else {
        return;
    };
    let verified = ctl & 1 != 0;
    let n = u32::from(u16::from_le_bytes([n0, n1]));
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let frame_len = match (ctl >> 1) & 3 {
        0 => len,                   // single segment
        1 => len.saturating_add(n), // more segments follow
        2 => len.saturating_sub(n), // inconsistent: frame shorter than its first segment
        _ => n,                     // anything
    };

    let result = parse(data, frame_len, verified);
    assert_eq!(wire::check(data, frame_len, verified), result.map(|_| ()));
    if let Ok(p) = &result {
        check(data, frame_len, p);
    }
    // The NIC-verified flag only ever skips the checksum check.
    if !verified {
        let with_nic = parse(data, frame_len, true);
        match result {
            Ok(p) => assert_eq!(with_nic, Ok(p)),
            Err(DropReason::Ipv4BadChecksum) => assert_ne!(with_nic, result),
            Err(_) => assert_eq!(with_nic, result),
        }
    }
});

/// Invariants of an accepted frame.
fn check(data: &[u8], frame_len: u32, p: &Parsed) {
    let frame_len = usize::try_from(frame_len).unwrap_or(usize::MAX);
    let visible = data.len().min(frame_len);
    let l3 = usize::from(p.l3_offset);
    let l4 = usize::from(p.l4_offset);
    let tags = usize::from(p.vlan_tci.is_some()) + usize::from(p.inner_vlan_tci.is_some());

    assert!(p.inner_vlan_tci.is_none() || p.vlan_tci.is_some(), "{p:?}");
    assert!(matches!(l3, 14 | 18 | 22), "{p:?}");
    assert_eq!(l3, 14 + 4 * tags, "{p:?}");
    assert!(l3 <= visible, "{p:?}");
    assert!(l4 >= l3, "{p:?}");
    assert!(l4 <= frame_len, "{p:?}");
    match p.l3 {
        L3::Other => {
            assert!(
                p.ethertype != ethertype::IPV4 && p.ethertype != ethertype::IPV6,
                "{p:?}"
            );
            assert_eq!((p.ip_len, p.l4_proto, l4), (0, 0, l3), "{p:?}");
            assert_eq!(
                (p.src_port, p.dst_port, p.later_fragment),
                (0, 0, false),
                "{p:?}"
            );
        }
        L3::Ipv4 | L3::Ipv6 => {
            let ip_end = l3 + usize::from(p.ip_len);
            assert!(ip_end <= frame_len, "{p:?}");
            assert!(l4 <= ip_end, "{p:?}");
            if p.l3 == L3::Ipv4 {
                assert_eq!(p.ethertype, ethertype::IPV4, "{p:?}");
                assert!(
                    (20..=60).contains(&(l4 - l3)) && (l4 - l3) % 4 == 0,
                    "{p:?}"
                );
                // The whole IPv4 header was in the first segment (and verified).
                assert!(l4 <= visible, "{p:?}");
                assert_eq!(data.get(l3).map(|b| b >> 4), Some(4), "{p:?}");
            } else {
                assert_eq!(p.ethertype, ethertype::IPV6, "{p:?}");
                assert!(l4 - l3 >= 40 && (l4 - l3) % 4 == 0, "{p:?}");
                assert_eq!(data.get(l3).map(|b| b >> 4), Some(6), "{p:?}");
            }
            if p.later_fragment {
                assert_eq!((p.src_port, p.dst_port), (0, 0), "{p:?}");
            }
        }
    }
}
