//! Bob Jenkins' hash (lookup3) exactly as the Linux kernel computes it.
//!
//! Sources: Bob Jenkins, lookup3.c (public domain), and Linux `include/linux/jhash.h`, which
//! packages lookup3 as `jhash`, `jhash2`, `jhash_3words`, `jhash_2words` and `jhash_1word`.
//! Every function here returns the same 32-bit value as its kernel namesake, so flow hashes
//! computed here (for example by a future `cls_flow`-style classifier, which hashes its flow
//! keys with `jhash2`) match what Linux would compute for the same key and seed.
//!
//! Endianness: the kernel's [`jhash`] loads 4-byte groups with `__get_unaligned_cpu32`, i.e. in
//! the CPU's byte order, so its result for a byte key depends on the host. This module fixes
//! little-endian loads, which is the kernel's result on x86_64 and little-endian arm64 (and equals
//! lookup3's `hashlittle`). [`jhash2`] and the `jhash_Nwords` functions work on `u32` values and
//! do not depend on byte order at all.
//!
//! All arithmetic wraps modulo 2^32, as C's unsigned arithmetic does. Nothing here allocates or
//! panics, whatever the input.

/// The arbitrary starting value of the internal state (lookup3's and the kernel's
/// `JHASH_INITVAL`).
pub const JHASH_INITVAL: u32 = 0xdeadbeef;

/// Rotate left by `shift` bits (the kernel's `rol32`).
#[inline(always)]
fn rol32(word: u32, shift: u32) -> u32 {
    word.rotate_left(shift)
}

/// Reversibly mix three words of state; applied after each full 12-byte (3-word) block that is
/// not the last one (lookup3's `mix`, the kernel's `__jhash_mix`).
#[inline(always)]
fn __jhash_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= rol32(*c, 4);
    *c = c.wrapping_add(*b);

    *b = b.wrapping_sub(*a);
    *b ^= rol32(*a, 6);
    *a = a.wrapping_add(*c);

    *c = c.wrapping_sub(*b);
    *c ^= rol32(*b, 8);
    *b = b.wrapping_add(*a);

    *a = a.wrapping_sub(*c);
    *a ^= rol32(*c, 16);
    *c = c.wrapping_add(*b);

    *b = b.wrapping_sub(*a);
    *b ^= rol32(*a, 19);
    *a = a.wrapping_add(*c);

    *c = c.wrapping_sub(*b);
    *c ^= rol32(*b, 4);
    *b = b.wrapping_add(*a);
}

/// Final avalanche of the three state words into `c` (lookup3's `final`, the kernel's
/// `__jhash_final`).
#[inline(always)]
fn __jhash_final(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(rol32(*b, 14));

    *a ^= *c;
    *a = a.wrapping_sub(rol32(*c, 11));

    *b ^= *a;
    *b = b.wrapping_sub(rol32(*a, 25));

    *c ^= *b;
    *c = c.wrapping_sub(rol32(*b, 16));

    *a ^= *c;
    *a = a.wrapping_sub(rol32(*c, 4));

    *b ^= *a;
    *b = b.wrapping_sub(rol32(*a, 14));

    *c ^= *b;
    *c = c.wrapping_sub(rol32(*b, 24));
}

/// Little-endian load of 4 bytes; `chunk` is always exactly 4 bytes long at the call sites.
#[inline(always)]
fn load_le32(chunk: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(chunk);
    u32::from_le_bytes(w)
}

/// Hash an arbitrary byte string: the kernel's `jhash(key, length, initval)`.
///
/// The state is seeded with `JHASH_INITVAL + length + initval` (length in bytes); 12-byte blocks
/// are mixed in while more than 12 bytes remain; the last 1..=12 bytes are added byte by byte into
/// the little-endian positions of `a`, `b`, `c` and followed by the final avalanche. An empty key
/// returns the seed unchanged (no final mixing), as the kernel and lookup3 do.
///
/// Words are loaded little-endian: this is the kernel's result on little-endian hosts (x86_64,
/// arm64 LE) and lookup3's `hashlittle(key, length, initval)`. Source: Bob Jenkins, lookup3.c
/// (public domain); Linux `include/linux/jhash.h`.
///
/// The kernel's `length` is a `u32`; for keys longer than `u32::MAX` bytes the seed uses the
/// length modulo 2^32, as truncating to the kernel's parameter would.
#[inline]
pub fn jhash(key: &[u8], initval: u32) -> u32 {
    let seed = JHASH_INITVAL
        .wrapping_add(key.len() as u32)
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (seed, seed, seed);

    let mut k = key;
    while k.len() > 12 {
        let (block, rest) = k.split_at(12);
        a = a.wrapping_add(load_le32(&block[0..4]));
        b = b.wrapping_add(load_le32(&block[4..8]));
        c = c.wrapping_add(load_le32(&block[8..12]));
        __jhash_mix(&mut a, &mut b, &mut c);
        k = rest;
    }

    // The last 0..=12 bytes. The kernel's fall-through switch adds byte i into state word i / 4
    // at bit position 8 * (i % 4); iterating over the tail does the same.
    if k.is_empty() {
        return c;
    }
    for (i, &byte) in k.iter().enumerate() {
        let v = u32::from(byte) << (8 * (i % 4));
        match i / 4 {
            0 => a = a.wrapping_add(v),
            1 => b = b.wrapping_add(v),
            _ => c = c.wrapping_add(v),
        }
    }
    __jhash_final(&mut a, &mut b, &mut c);
    c
}

/// Hash a sequence of 32-bit words: the kernel's `jhash2(k, length, initval)`.
///
/// The state is seeded with `JHASH_INITVAL + (length << 2) + initval`, i.e. with the key's length
/// in BYTES (word count times 4), exactly as the kernel and lookup3's `hashword` do. (The
/// crates.io `jhash` crate seeds with the word count instead and so does not match the kernel.)
/// For any words, `jhash2(k, iv)` equals [`jhash`] over the words' little-endian bytes.
///
/// The kernel's `length` is a `u32` word count; for slices longer than that the seed uses the
/// byte count modulo 2^32, as the kernel's `length << 2` wraps. Source: Bob Jenkins, lookup3.c
/// (public domain); Linux `include/linux/jhash.h`.
#[inline]
pub fn jhash2(k: &[u32], initval: u32) -> u32 {
    let seed = JHASH_INITVAL
        .wrapping_add((k.len() as u32).wrapping_shl(2))
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (seed, seed, seed);

    let mut k = k;
    while k.len() > 3 {
        let (block, rest) = k.split_at(3);
        a = a.wrapping_add(block[0]);
        b = b.wrapping_add(block[1]);
        c = c.wrapping_add(block[2]);
        __jhash_mix(&mut a, &mut b, &mut c);
        k = rest;
    }

    match *k {
        [] => return c,
        [x] => a = a.wrapping_add(x),
        [x, y] => {
            a = a.wrapping_add(x);
            b = b.wrapping_add(y);
        }
        [x, y, z, ..] => {
            a = a.wrapping_add(x);
            b = b.wrapping_add(y);
            c = c.wrapping_add(z);
        }
    }
    __jhash_final(&mut a, &mut b, &mut c);
    c
}

/// The kernel's `__jhash_nwords`: add `initval` to each of the three words and avalanche.
#[inline(always)]
fn jhash_nwords(mut a: u32, mut b: u32, mut c: u32, initval: u32) -> u32 {
    a = a.wrapping_add(initval);
    b = b.wrapping_add(initval);
    c = c.wrapping_add(initval);
    __jhash_final(&mut a, &mut b, &mut c);
    c
}

/// Hash exactly three words: the kernel's `jhash_3words(a, b, c, initval)`.
///
/// Equal to `jhash2(&[a, b, c], initval)` (seed `JHASH_INITVAL + 12 + initval`, then the final
/// avalanche). Source: Bob Jenkins, lookup3.c (public domain); Linux `include/linux/jhash.h`.
#[inline]
pub fn jhash_3words(a: u32, b: u32, c: u32, initval: u32) -> u32 {
    jhash_nwords(
        a,
        b,
        c,
        initval.wrapping_add(JHASH_INITVAL).wrapping_add(3 << 2),
    )
}

/// Hash exactly three words as Linux kernels before 4.1 did: `jhash_3words(a, b, c, initval)` of
/// Linux 2.6.37 to 4.0 (so of the 3.13 flow dissector's `__skb_get_rxhash`).
///
/// Those kernels seeded the three state words differently from lookup3 and from
/// [`jhash_3words`]: `a` and `b` get [`JHASH_INITVAL`] added, `c` gets `initval` added (no length
/// term), and the final avalanche follows. Linux 4.1 changed `jhash_3words` to the lookup3 seeding
/// that [`jhash_3words`] follows, so the two give different values for the same input; use this
/// one only to reproduce hashes of those older kernels.
#[inline]
pub fn jhash_3words_legacy(a: u32, b: u32, c: u32, initval: u32) -> u32 {
    let mut a = a.wrapping_add(JHASH_INITVAL);
    let mut b = b.wrapping_add(JHASH_INITVAL);
    let mut c = c.wrapping_add(initval);
    __jhash_final(&mut a, &mut b, &mut c);
    c
}

/// Hash exactly two words: the kernel's `jhash_2words(a, b, initval)`.
///
/// Equal to `jhash2(&[a, b], initval)`. Source: Bob Jenkins, lookup3.c (public domain); Linux
/// `include/linux/jhash.h`.
#[inline]
pub fn jhash_2words(a: u32, b: u32, initval: u32) -> u32 {
    jhash_nwords(
        a,
        b,
        0,
        initval.wrapping_add(JHASH_INITVAL).wrapping_add(2 << 2),
    )
}

/// Hash exactly one word: the kernel's `jhash_1word(a, initval)`.
///
/// Equal to `jhash2(&[a], initval)`. Source: Bob Jenkins, lookup3.c (public domain); Linux
/// `include/linux/jhash.h`.
#[inline]
pub fn jhash_1word(a: u32, initval: u32) -> u32 {
    jhash_nwords(
        a,
        0,
        0,
        initval.wrapping_add(JHASH_INITVAL).wrapping_add(1 << 2),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FOUR_SCORE: &[u8] = b"Four score and seven years ago";

    fn le_bytes(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Known answers printed by `driver5` of lookup3.c (comments next to each `printf` there);
    /// `hashlittle(key, len, iv)` is our `jhash(key, iv)` on little-endian.
    #[test]
    fn lookup3_driver5_vectors() {
        assert_eq!(FOUR_SCORE.len(), 30);
        assert_eq!(jhash(b"", 0), 0xdeadbeef);
        // driver5 prints bd5b7dde for hashlittle2("", 0, c=0, b=0xdeadbeef); with the key empty
        // that is 0xdeadbeef + 0 + 0xdeadbeef, the same seed hashlittle("", 0, 0xdeadbeef) returns.
        assert_eq!(jhash(b"", 0xdeadbeef), 0xbd5b7dde);
        assert_eq!(jhash(FOUR_SCORE, 0), 0x17770551);
        assert_eq!(jhash(FOUR_SCORE, 1), 0xcd628161);
    }

    #[test]
    fn empty_inputs_return_the_seed_unmixed() {
        for iv in [0, 1, 0xdeadbeef, u32::MAX] {
            assert_eq!(jhash(&[], iv), JHASH_INITVAL.wrapping_add(iv));
            assert_eq!(jhash2(&[], iv), JHASH_INITVAL.wrapping_add(iv));
        }
    }

    #[test]
    fn jhash2_seeds_with_the_byte_count() {
        // One word: seed = INITVAL + 4 + iv, then a += k[0] and the final avalanche.
        let (k0, iv) = (0x0102_0304, 7);
        let seed = JHASH_INITVAL.wrapping_add(4).wrapping_add(iv);
        let (mut a, mut b, mut c) = (seed.wrapping_add(k0), seed, seed);
        __jhash_final(&mut a, &mut b, &mut c);
        assert_eq!(jhash2(&[k0], iv), c);
    }

    #[test]
    fn jhash2_matches_jhash_over_le_bytes_for_all_small_lengths() {
        let words: Vec<u32> = (0..40u32)
            .map(|i| i.wrapping_mul(0x9e37_79b9) ^ 0x5bd1_e995)
            .collect();
        for n in 0..=words.len() {
            for iv in [0, 1, 0xdeadbeef, u32::MAX] {
                let k = &words[..n];
                assert_eq!(jhash2(k, iv), jhash(&le_bytes(k), iv), "n={n} iv={iv:#x}");
            }
        }
    }

    #[test]
    fn nwords_match_jhash2() {
        let samples = [0u32, 1, 0xdeadbeef, u32::MAX, 0x8000_0000, 0x1234_5678];
        for &a in &samples {
            for &b in &samples {
                for &iv in &samples {
                    assert_eq!(jhash_3words(a, b, iv ^ 3, iv), jhash2(&[a, b, iv ^ 3], iv));
                    assert_eq!(jhash_2words(a, b, iv), jhash2(&[a, b], iv));
                    assert_eq!(jhash_1word(a, iv), jhash2(&[a], iv));
                }
            }
        }
    }

    #[test]
    fn legacy_3words_seeds_a_and_b_with_initval_and_c_with_the_seed() {
        for (x, y, z, iv) in [
            (0u32, 0u32, 0u32, 0u32),
            (1, 2, 3, 4),
            (u32::MAX, 0x8000_0000, 7, 0xdeadbeef),
        ] {
            let (mut a, mut b, mut c) = (
                x.wrapping_add(JHASH_INITVAL),
                y.wrapping_add(JHASH_INITVAL),
                z.wrapping_add(iv),
            );
            __jhash_final(&mut a, &mut b, &mut c);
            assert_eq!(jhash_3words_legacy(x, y, z, iv), c);
        }
        // Not the lookup3 seeding of today's kernels.
        assert_ne!(jhash_3words_legacy(1, 2, 3, 4), jhash_3words(1, 2, 3, 4));
    }

    #[test]
    fn tail_bytes_all_matter() {
        // Flipping any byte of any key of length 1..=40 changes the hash: catches a tail byte
        // added to the wrong lane or skipped (checked for these fixed inputs).
        let base: Vec<u8> = (0..40u8).collect();
        for n in 1..=base.len() {
            let h = jhash(&base[..n], 0);
            for i in 0..n {
                let mut k = base[..n].to_vec();
                k[i] ^= 0x80;
                assert_ne!(jhash(&k, 0), h, "n={n} i={i}");
            }
        }
    }

    proptest! {
        #[test]
        fn no_panic_on_any_bytes(key in proptest::collection::vec(any::<u8>(), 0..256), iv: u32) {
            let _ = jhash(&key, iv);
        }

        #[test]
        fn no_panic_on_any_words(k in proptest::collection::vec(any::<u32>(), 0..64), iv: u32) {
            let _ = jhash2(&k, iv);
        }

        #[test]
        fn jhash2_is_jhash_over_le_bytes(
            k in proptest::collection::vec(any::<u32>(), 0..64),
            iv: u32,
        ) {
            prop_assert_eq!(jhash2(&k, iv), jhash(&le_bytes(&k), iv));
        }

        #[test]
        fn nwords_are_jhash2(a: u32, b: u32, c: u32, iv: u32) {
            prop_assert_eq!(jhash_3words(a, b, c, iv), jhash2(&[a, b, c], iv));
            prop_assert_eq!(jhash_2words(a, b, iv), jhash2(&[a, b], iv));
            prop_assert_eq!(jhash_1word(a, iv), jhash2(&[a], iv));
        }
    }
}
