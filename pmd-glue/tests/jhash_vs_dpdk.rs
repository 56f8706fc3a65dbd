//! Cross-check of `pipelines::jhash` (written from Linux `include/linux/jhash.h`) against DPDK's
//! independent `rte_jhash.h`, called through the C shim. No EAL is needed: these are pure
//! functions.
//!
//! Why the two must agree everywhere tested here (read from `/usr/include/dpdk/rte_jhash.h`,
//! DPDK 22.11, against the kernel definitions):
//! - `rte_jhash(key, len, iv)` seeds `a = b = c = 0xdeadbeef + len + iv` (its second seed `*pb`
//!   is 0, so `c += *pb` is a no-op), mixes 12-byte blocks while `len > 12`, adds the 1..=12
//!   byte tail through masked little-endian word loads (the same values as the kernel's
//!   byte-wise fall-through switch on a little-endian CPU) and then runs the final avalanche;
//!   for `len == 0` it returns `c` without final mixing, exactly like the kernel's `case 0`.
//! - `rte_jhash_32b(k, n, iv)` hashes the words as `n << 2` bytes, so its seed uses the BYTE
//!   count, like the kernel's `jhash2` (`JHASH_INITVAL + (length << 2) + initval`).
//! - `rte_jhash_3words(a, b, c, iv)` is `__rte_jhash_3words(a + 12, b + 12, c + 12, iv)`, which
//!   adds `0xdeadbeef + iv` to each word: the same sums as the kernel's `__jhash_nwords(a, b, c,
//!   iv + JHASH_INITVAL + (3 << 2))`, by commutativity of wrapping addition.
//!
//! No divergence was found, so the cross-check is unrestricted within these ranges. The only
//! byte-order caveat: the kernel's and DPDK's `jhash` load words in CPU byte order while
//! `pipelines::jhash::jhash` fixes little-endian, so the byte-key comparison is only meaningful
//! on little-endian targets (x86_64, arm64 LE); the whole file is compiled only there.
#![cfg(target_endian = "little")]

use pipelines::jhash::{jhash, jhash2, jhash_3words, JHASH_INITVAL};
use pmd_glue::hash::{rte_jhash, rte_jhash_32b, rte_jhash_3words};

/// splitmix64: deterministic pseudo-random inputs, the same on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

/// Seeds: the corner values plus a few pseudo-random ones.
fn initvals(rng: &mut SplitMix) -> Vec<u32> {
    let mut v = vec![0, 1, JHASH_INITVAL, u32::MAX, 0x8000_0000];
    v.extend((0..3).map(|_| rng.next_u32()));
    v
}

const SAMPLES_PER_SHAPE: usize = 16;

/// DPDK itself reproduces lookup3.c's `driver5` answers (`hashlittle`), which the unit tests of
/// `pipelines::jhash` also check: both sides are anchored to the published vectors.
#[test]
fn rte_jhash_reproduces_lookup3_vectors() {
    let four_score = b"Four score and seven years ago";
    assert_eq!(rte_jhash(b"", 0), 0xdeadbeef);
    assert_eq!(rte_jhash(b"", 0xdeadbeef), 0xbd5b7dde);
    assert_eq!(rte_jhash(four_score, 0), 0x17770551);
    assert_eq!(rte_jhash(four_score, 1), 0xcd628161);
}

#[test]
fn jhash_matches_rte_jhash_for_lengths_0_to_64() {
    let mut rng = SplitMix(0x6a68_6173_6821);
    let ivs = initvals(&mut rng);
    let mut checked = 0;
    for len in 0..=64usize {
        for _ in 0..SAMPLES_PER_SHAPE {
            // Hash from a random offset of a larger buffer too, so the Rust side sees unaligned
            // keys (the DPDK wrapper copies into an aligned buffer, see pmd_glue::hash).
            let buf: Vec<u8> = (0..len + 3).map(|_| rng.next_u32() as u8).collect();
            let off = (rng.next_u32() % 4) as usize;
            let key = &buf[off..off + len];
            for &iv in &ivs {
                assert_eq!(
                    jhash(key, iv),
                    rte_jhash(key, iv),
                    "len={len} iv={iv:#x} key={key:02x?}"
                );
                checked += 1;
            }
        }
    }
    // Special contents: all zeros and all 0xff (carries through every lane).
    for len in 0..=64usize {
        for fill in [0x00u8, 0xff] {
            let key = vec![fill; len];
            for &iv in &ivs {
                assert_eq!(
                    jhash(&key, iv),
                    rte_jhash(&key, iv),
                    "len={len} fill={fill:#x}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 65 * SAMPLES_PER_SHAPE * 8 + 65 * 2 * 8);
}

#[test]
fn jhash2_matches_rte_jhash_32b_for_0_to_16_words() {
    let mut rng = SplitMix(0x6a68_6173_6832);
    let ivs = initvals(&mut rng);
    let mut checked = 0;
    for n in 0..=16usize {
        for _ in 0..SAMPLES_PER_SHAPE {
            let k: Vec<u32> = (0..n).map(|_| rng.next_u32()).collect();
            for &iv in &ivs {
                let ours = jhash2(&k, iv);
                assert_eq!(ours, rte_jhash_32b(&k, iv), "n={n} iv={iv:#x} k={k:08x?}");
                // And DPDK's byte hash over the same words' little-endian bytes.
                let bytes: Vec<u8> = k.iter().flat_map(|w| w.to_le_bytes()).collect();
                assert_eq!(ours, rte_jhash(&bytes, iv), "n={n} iv={iv:#x} (as bytes)");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 17 * SAMPLES_PER_SHAPE * 8);
}

#[test]
fn jhash_3words_matches_rte_jhash_3words() {
    let mut rng = SplitMix(0x6a68_6173_6833);
    let ivs = initvals(&mut rng);
    let corners = [0u32, 1, 12, JHASH_INITVAL, u32::MAX, 0x8000_0000];
    let mut checked = 0;
    for &iv in &ivs {
        for _ in 0..1000 {
            let (a, b, c) = (rng.next_u32(), rng.next_u32(), rng.next_u32());
            assert_eq!(
                jhash_3words(a, b, c, iv),
                rte_jhash_3words(a, b, c, iv),
                "a={a:#x} b={b:#x} c={c:#x} iv={iv:#x}"
            );
            checked += 1;
        }
        for &a in &corners {
            for &b in &corners {
                for &c in &corners {
                    assert_eq!(jhash_3words(a, b, c, iv), rte_jhash_3words(a, b, c, iv));
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 8 * (1000 + 6 * 6 * 6));
}
