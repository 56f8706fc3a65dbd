//! Crypto devices: enumeration, so that configuration can name a device and tests can check the
//! crypto PMDs load. Sessions and operation bursts come with the tunnel stage.
use crate::error::cstr_to_string;
use crate::sys;

/// A crypto device DPDK probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoDevInfo {
    /// Device id.
    pub id: u8,
    /// Device name, e.g. "crypto_aesni_mb0".
    pub name: String,
    /// Driver name, e.g. "crypto_aesni_mb".
    pub driver: String,
    /// Maximum queue pairs.
    pub max_queue_pairs: u32,
}

/// Every crypto device DPDK probed.
pub fn list() -> Vec<CryptoDevInfo> {
    // SAFETY: reads the cryptodev table.
    let n = unsafe { sys::rte_cryptodev_count() };
    let mut out = Vec::new();
    for id in 0..u8::MAX {
        if out.len() >= usize::from(n) {
            break;
        }
        // SAFETY: returns NULL for an unused id, else a static name.
        let name = unsafe { sys::rte_cryptodev_name_get(id) };
        if name.is_null() {
            continue;
        }
        let mut info = sys::rte_cryptodev_info::default();
        // SAFETY: `id` names a probed device; valid out pointer.
        unsafe { sys::rte_cryptodev_info_get(id, &mut info) };
        out.push(CryptoDevInfo {
            id,
            // SAFETY: non-null NUL-terminated name owned by the device.
            name: unsafe { cstr_to_string(name) },
            // SAFETY: driver_name is a static string owned by the driver (or null).
            driver: unsafe { cstr_to_string(info.driver_name) },
            max_queue_pairs: info.max_nb_queue_pairs,
        });
    }
    out
}
