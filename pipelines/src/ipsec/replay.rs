//! The receiver's anti-replay window of an inbound SA (RFC 4303 §3.4.3, Appendix A).
//!
//! The window remembers which of the last `size` sequence numbers below (and including) the
//! highest authenticated one were received. A packet is checked before its ICV is verified
//! ([`ReplayWindow::check`], which also reconstructs the high 32 bits of an extended sequence
//! number, Appendix A2.2) and the window is updated only after the ICV verified
//! ([`ReplayWindow::update`], which checks again: another packet with the same number may have
//! been accepted in between).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Smallest window (RFC 4303 §3.4.3: "a minimum window size of 32 packets MUST be supported",
/// with 64 recommended; the appliance's minimum is 64).
pub const MIN_WINDOW: u32 = 64;
/// Largest window.
pub const MAX_WINDOW: u32 = 4096;

/// Why a sequence number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// The number was already received (a duplicate or a replay).
    Replayed,
    /// The number is older than the window: it can no longer be checked.
    TooOld,
}

/// One inbound SA's window: a bitmap of `size` bits ending at `top`, shared by the lcores.
///
/// Checks read it without a lock (atomics). The check before decryption is an early filter:
/// the authoritative check is repeated by [`ReplayWindow::update`] under the window's lock,
/// which a worker holds across a run of completions of the same SA, not per packet. An SA's
/// packets normally reach one lcore (RSS hashes ESP on the outer addresses only); were two
/// lcores to check the same SA while it moves by a whole window, the early check could
/// misjudge a number, which the locked update corrects for replays (and counts, never loses,
/// a fresh packet refused early).
#[derive(Debug)]
pub struct ReplayWindow {
    /// Highest authenticated sequence number (full 64 bits; 0 = nothing received yet).
    top: AtomicU64,
    /// Window size in packets (a multiple of 64, `MIN_WINDOW..=MAX_WINDOW`).
    size: u64,
    /// Extended sequence numbers (64-bit, of which the packet carries the low 32 bits).
    esn: bool,
    /// Ring of bits: bit `s % 64` of word `(s / 64) % words.len()` records number `s`. One word
    /// more than the window needs, so that the words of the window never wrap onto the word
    /// holding `top`.
    words: Box<[AtomicU64]>,
    /// Serialises updates.
    lock: Mutex<()>,
}

/// Proof that the caller holds a window's update lock (see [`ReplayWindow::lock`]).
#[derive(Debug)]
pub struct ReplayLock<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

impl ReplayWindow {
    /// A window of `size` packets, rounded up to a multiple of 64; `None` outside
    /// `MIN_WINDOW..=MAX_WINDOW`.
    pub fn new(size: u32, esn: bool) -> Option<ReplayWindow> {
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&size) {
            return None;
        }
        let size = u64::from(size).div_ceil(64) * 64;
        Some(ReplayWindow {
            top: AtomicU64::new(0),
            size,
            esn,
            words: (0..=size / 64).map(|_| AtomicU64::new(0)).collect(),
            lock: Mutex::new(()),
        })
    }

    /// Window size in packets.
    pub fn size(&self) -> u32 {
        self.size as u32
    }

    /// Highest sequence number authenticated so far (0 = none).
    pub fn top(&self) -> u64 {
        self.top.load(Ordering::Acquire)
    }

    /// Whether the SA uses extended (64-bit) sequence numbers.
    pub fn esn(&self) -> bool {
        self.esn
    }

    /// Takes the update lock (hold it across a run of packets of this SA, not per packet).
    pub fn lock(&self) -> ReplayLock<'_> {
        ReplayLock(self.lock.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The full sequence number of a packet carrying `seq_lo`, or why it must be dropped. For
    /// an SA without ESN the number is `seq_lo` itself; with ESN the high half is inferred from
    /// the window (RFC 4303 Appendix A2.2). Does not change the window.
    pub fn check(&self, seq_lo: u32) -> Result<u64, ReplayError> {
        let seq = if self.esn {
            self.infer_esn(seq_lo)?
        } else {
            u64::from(seq_lo)
        };
        if seq == 0 {
            // The first packet of an SA carries 1; 0 is never sent (§3.3.3) .
            return Err(ReplayError::TooOld);
        }
        self.check_full(seq).map(|()| seq)
    }

    fn check_full(&self, seq: u64) -> Result<(), ReplayError> {
        let top = self.top.load(Ordering::Acquire);
        if seq > top {
            return Ok(());
        }
        if top - seq >= self.size {
            return Err(ReplayError::TooOld);
        }
        let (w, b) = self.slot(seq);
        if self.words[w].load(Ordering::Relaxed) & (1u64 << b) != 0 {
            Err(ReplayError::Replayed)
        } else {
            Ok(())
        }
    }

    /// RFC 4303 Appendix A2.2: place `seq_lo` in the subspace the window covers.
    fn infer_esn(&self, seq_lo: u32) -> Result<u64, ReplayError> {
        let top = self.top.load(Ordering::Acquire);
        let tl = top as u32;
        let th = (top >> 32) as u32;
        let w = self.size as u32;
        let bottom = tl.wrapping_sub(w - 1);
        let sh = if tl >= w - 1 {
            // Case A: the window lies within one subspace.
            if seq_lo >= bottom {
                th
            } else {
                // Beyond the top of this subspace: the next one.
                th.checked_add(1).ok_or(ReplayError::TooOld)?
            }
        } else if seq_lo >= bottom {
            // Case B: the window spans two subspaces; this number is in the lower one. In the
            // first subspace there is no lower one: the number is in subspace 0 (a fresh SA
            // whose peer starts near 2^32, checked before the first packet's update lands).
            th.saturating_sub(1)
        } else {
            th
        };
        Ok((u64::from(sh) << 32) | u64::from(seq_lo))
    }

    /// Records `seq` (a full number returned by [`ReplayWindow::check`]) after its packet's ICV
    /// verified, under the window's lock. Checks again, since the window may have moved since
    /// the check. Only the lock holder writes, so plain stores suffice (no read-modify-write).
    pub fn update(&self, _lock: &ReplayLock<'_>, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::TooOld);
        }
        self.check_full(seq)?;
        let top = self.top.load(Ordering::Relaxed);
        if seq > top {
            // Clear the words between the old top's word and the new one.
            let old_word = top / 64;
            let new_word = seq / 64;
            let n = self.words.len() as u64;
            let clear = (new_word - old_word).min(n);
            for i in 1..=clear {
                let w = ((old_word + i) % n) as usize;
                self.words[w].store(0, Ordering::Relaxed);
            }
        }
        let (w, b) = self.slot(seq);
        let word = &self.words[w];
        word.store(
            word.load(Ordering::Relaxed) | (1u64 << b),
            Ordering::Relaxed,
        );
        if seq > top {
            // Published after the bits: a lock-free check that sees the new top also sees
            // the cleared words.
            self.top.store(seq, Ordering::Release);
        }
        Ok(())
    }

    /// Restores a window whose highest received number is `top` (an SA moved from another
    /// gateway or process, as `ip xfrm state ... replay-seq` does): `top` counts as seen, the
    /// numbers below it inside the window as not seen. Call before any packet uses the window.
    pub fn start_at(&self, top: u64) {
        let _l = self.lock();
        for w in self.words.iter() {
            w.store(0, Ordering::Relaxed);
        }
        if top > 0 {
            let (w, b) = self.slot(top);
            self.words[w].store(1u64 << b, Ordering::Relaxed);
        }
        self.top.store(top, Ordering::Release);
    }

    /// Sets the highest number seen (tests).
    #[cfg(test)]
    fn set_top(&self, top: u64) {
        self.top.store(top, Ordering::Release);
    }

    #[inline]
    fn slot(&self, seq: u64) -> (usize, u32) {
        (
            ((seq / 64) % self.words.len() as u64) as usize,
            (seq % 64) as u32,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The window as RFC 4303 describes it, kept as a plain set (the oracle).
    struct Oracle {
        seen: BTreeSet<u64>,
        top: u64,
        size: u64,
    }

    impl Oracle {
        fn accept(&mut self, seq: u64) -> Result<(), ReplayError> {
            if seq == 0 {
                return Err(ReplayError::TooOld);
            }
            if seq <= self.top {
                if self.top - seq >= self.size {
                    return Err(ReplayError::TooOld);
                }
                if self.seen.contains(&seq) {
                    return Err(ReplayError::Replayed);
                }
            }
            self.seen.insert(seq);
            self.top = self.top.max(seq);
            Ok(())
        }
    }

    #[test]
    fn sizes_are_bounded_and_rounded() {
        assert!(ReplayWindow::new(63, false).is_none());
        assert!(ReplayWindow::new(4097, false).is_none());
        assert_eq!(ReplayWindow::new(64, false).unwrap().size(), 64);
        assert_eq!(ReplayWindow::new(100, false).unwrap().size(), 128);
        assert_eq!(ReplayWindow::new(4096, true).unwrap().size(), 4096);
    }

    #[test]
    fn basic_window_edges() {
        let w = ReplayWindow::new(64, false).unwrap();
        assert_eq!(w.check(0), Err(ReplayError::TooOld));
        assert_eq!(w.check(1), Ok(1));
        w.update(&w.lock(), 1).unwrap();
        assert_eq!(w.check(1), Err(ReplayError::Replayed));
        w.update(&w.lock(), 100).unwrap();
        // 100 - 37 = 63 < 64: inside; 100 - 36 = 64: too old.
        assert_eq!(w.check(37), Ok(37));
        assert_eq!(w.check(36), Err(ReplayError::TooOld));
        assert_eq!(w.update(&w.lock(), 100), Err(ReplayError::Replayed));
        w.update(&w.lock(), 37).unwrap();
        assert_eq!(w.check(37), Err(ReplayError::Replayed));
        // A jump far ahead forgets everything before.
        w.update(&w.lock(), 1_000_000).unwrap();
        assert_eq!(w.check(999_999), Ok(999_999));
        assert_eq!(w.check(1_000_000 - 64), Err(ReplayError::TooOld));
    }

    #[test]
    fn esn_crosses_the_32_bit_boundary() {
        let w = ReplayWindow::new(64, true).unwrap();
        let near = (1u64 << 32) - 10;
        // Establish a top just below 2^32 (as if received in order).
        w.set_top(near - 1);
        assert_eq!(w.check(near as u32), Ok(near));
        w.update(&w.lock(), near).unwrap();
        // The low half wraps to 5: the high half becomes 1 (Case A, next subspace).
        assert_eq!(w.check(5), Ok((1u64 << 32) | 5));
        w.update(&w.lock(), (1u64 << 32) | 5).unwrap();
        // Now top's low half (5) is below the window (Case B): a late packet from just below
        // 2^32 belongs to the lower subspace.
        assert_eq!(w.check((near + 3) as u32), Ok(near + 3));
        assert_eq!(w.check(near as u32), Err(ReplayError::Replayed));
        // Number 0 of the new subspace is a valid ESN packet (full number 2^32).
        assert_eq!(w.check(0), Ok(1u64 << 32));
    }

    #[test]
    fn a_restored_window_places_numbers_across_2_32_while_updates_lag() {
        // A window restored at 2^32-81 (an SA moved here mid-life): numbers on both sides of
        // 2^32 are placed right even when none of the earlier packets' updates has landed yet
        // (many packets in the crypto device), which a fresh window cannot know.
        let w = ReplayWindow::new(64, true).unwrap();
        let start = (1u64 << 32) - 81;
        w.start_at(start);
        assert_eq!(w.top(), start);
        assert_eq!(w.check(start as u32), Err(ReplayError::Replayed));
        assert_eq!(w.check((start - 1) as u32), Ok(start - 1));
        for lo in [u32::MAX - 79, u32::MAX, 0, 15, 1000] {
            let want = if lo > 1 << 31 {
                u64::from(lo)
            } else {
                (1u64 << 32) | u64::from(lo)
            };
            assert_eq!(w.check(lo), Ok(want), "{lo}");
        }
        // Restoring again forgets the bits.
        w.start_at(10);
        assert_eq!(w.check(9), Ok(9));
        assert_eq!(w.check(10), Err(ReplayError::Replayed));
    }

    #[test]
    fn fresh_esn_window_accepts_numbers_near_the_top_of_subspace_zero() {
        let w = ReplayWindow::new(64, true).unwrap();
        for lo in [u32::MAX - 70, u32::MAX - 10, u32::MAX, 1, 5] {
            assert_eq!(w.check(lo), Ok(u64::from(lo)));
        }
    }

    #[test]
    fn non_esn_never_infers_a_high_half() {
        let w = ReplayWindow::new(64, false).unwrap();
        w.update(&w.lock(), u64::from(u32::MAX)).unwrap();
        assert_eq!(w.check(5), Err(ReplayError::TooOld));
    }

    proptest! {
        #[test]
        fn matches_the_rfc_set_model(size in prop::sample::select(vec![64u32, 128, 1024, 4096]),
                                     start in 0u64..10_000,
                                     steps in prop::collection::vec(-200i64..300, 1..400)) {
            let w = ReplayWindow::new(size, false).unwrap();
            let mut o = Oracle { seen: BTreeSet::new(), top: 0, size: u64::from(size) };
            let mut cur = start as i64;
            for d in steps {
                cur = (cur + d).max(0);
                let seq = cur as u64;
                let checked = w.check(seq as u32);
                let expect = o.accept(seq);
                match expect {
                    Ok(()) => {
                        prop_assert_eq!(checked, Ok(seq));
                        prop_assert_eq!(w.update(&w.lock(), seq), Ok(()));
                    }
                    Err(e) => prop_assert_eq!(checked, Err(e)),
                }
                prop_assert_eq!(w.top(), o.top);
            }
        }

        #[test]
        fn esn_reconstructs_the_full_number(size in prop::sample::select(vec![64u32, 256, 4096]),
                                            base in (1u64 << 32) - 5000..(1u64 << 32) + 5000,
                                            steps in prop::collection::vec(-60i64..200, 1..300)) {
            // Any number within the window below the top, or ahead of it by less than 2^31,
            // comes back with its true high half.
            let w = ReplayWindow::new(size, true).unwrap();
            w.set_top(base);
            let mut cur = base as i64;
            for d in steps {
                let seq = (cur + d).max(1) as u64;
                if seq + u64::from(w.size()) > w.top() {
                    if let Ok(full) = w.check(seq as u32) {
                        prop_assert_eq!(full, seq);
                        w.update(&w.lock(), seq).unwrap();
                    } else {
                        prop_assert!(seq <= w.top());
                    }
                }
                cur = w.top() as i64;
            }
        }
    }
}
