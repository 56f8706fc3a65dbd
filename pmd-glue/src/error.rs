//! DPDK errors as values: the failing call and its errno, rendered with `rte_strerror`.
use crate::sys;
use std::ffi::{c_char, CStr};
use std::fmt;

/// A failed DPDK call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkError {
    /// What was being done, e.g. "rte_eth_dev_configure(port 0)".
    pub op: String,
    /// The positive errno value DPDK reported.
    pub errno: i32,
}

/// Result of a DPDK call.
pub type Result<T, E = DpdkError> = std::result::Result<T, E>;

impl DpdkError {
    /// An error for `op` from a negative return code (`-errno`) or a positive errno.
    pub fn new(op: impl Into<String>, code: i32) -> Self {
        Self {
            op: op.into(),
            errno: code.abs(),
        }
    }

    /// An error for `op` from the thread's `rte_errno`.
    pub fn from_rte_errno(op: impl Into<String>) -> Self {
        // SAFETY: reads the per-thread rte_errno variable.
        let errno = unsafe { sys::shim_rte_errno() };
        Self::new(op, errno)
    }

    /// DPDK's text for the errno.
    pub fn message(&self) -> String {
        // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
        unsafe { cstr_to_string(sys::rte_strerror(self.errno)) }
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {} (errno {})",
            self.op,
            self.message(),
            self.errno
        )
    }
}

impl std::error::Error for DpdkError {}

/// Copies a C string into a `String` (lossy UTF-8); empty for a null pointer.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string valid for the duration of the call.
pub(crate) unsafe fn cstr_to_string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller guarantees `p` is a valid NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Turns a fixed-size C char array (NUL-terminated or full) into a `String`.
pub(crate) fn chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
