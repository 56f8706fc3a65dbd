//! DPDK's Jenkins hash (`rte_jhash.h`), exposed for cross-checking `pipelines::jhash` against an
//! independent implementation. These are pure functions: they need no EAL initialisation.
//!
//! DPDK's `rte_jhash` family is bit-compatible with Linux `include/linux/jhash.h` on
//! little-endian hosts (same seeding, mixing, tail handling and empty-key behaviour).

use crate::sys;

/// DPDK's `rte_jhash(key, key.len(), initval)`: Jenkins hash of a byte string.
///
/// The key is copied into a zero-padded, 4-byte-aligned buffer first, because DPDK reads the
/// key's tail as whole 32-bit words (masking off the extra bytes), which may read up to 3 bytes
/// past the end of `key`. Keys longer than `u32::MAX` bytes are hashed with their length
/// truncated to `u32`, as the C parameter would be.
pub fn rte_jhash(key: &[u8], initval: u32) -> u32 {
    let mut padded = vec![0u32; key.len().div_ceil(4)];
    for (word, chunk) in padded.iter_mut().zip(key.chunks(4)) {
        let mut b = [0u8; 4];
        b[..chunk.len()].copy_from_slice(chunk);
        *word = u32::from_ne_bytes(b);
    }
    // Truncation (as C's conversion to `uint32_t` would do) only ever shortens the length.
    let len = key.len() as u32;
    // SAFETY: `padded` holds the key's bytes at its start (native byte order keeps them in
    // memory order) in ceil(len / 4) aligned words, so every 32-bit word DPDK loads while hashing
    // `len` bytes lies inside `padded`. DPDK only reads through the pointer and keeps no
    // reference after returning; for len == 0 it reads nothing (the dangling-but-aligned pointer
    // of an empty Vec is never dereferenced).
    unsafe { sys::shim_rte_jhash(padded.as_ptr().cast(), len, initval) }
}

/// DPDK's `rte_jhash_32b(k, k.len(), initval)`: Jenkins hash of a sequence of 32-bit words.
///
/// Slices longer than `u32::MAX` words are hashed with their length truncated to `u32`, as the C
/// parameter would be.
pub fn rte_jhash_32b(k: &[u32], initval: u32) -> u32 {
    let len = k.len() as u32;
    // SAFETY: DPDK reads exactly `len` <= k.len() aligned u32s from `k.as_ptr()`, all inside the
    // slice, and keeps no reference after returning; for len == 0 nothing is read.
    unsafe { sys::shim_rte_jhash_32b(k.as_ptr(), len, initval) }
}

/// DPDK's `rte_jhash_3words(a, b, c, initval)`: Jenkins hash of exactly three words.
pub fn rte_jhash_3words(a: u32, b: u32, c: u32, initval: u32) -> u32 {
    // SAFETY: pure arithmetic on its by-value arguments; no memory is accessed.
    unsafe { sys::shim_rte_jhash_3words(a, b, c, initval) }
}
