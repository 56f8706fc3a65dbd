//! Crypto devices: enumeration ([`list`]) and a lookaside symmetric-crypto API for the IPsec/ESP
//! tunnel stage.
//!
//! Ownership model, as for ports:
//! - [`CryptoDev::open`] configures and starts a device; the device is stopped and closed (and a
//!   virtual device it created is removed) when the last handle is gone: the `CryptoDev`, every
//!   [`Session`] and every [`CryptoQueue`] hold it.
//! - A [`Session`] is one SA's keys and algorithms on one device, shared by the lcores that use
//!   it (cloning is cheap). It is freed with `rte_cryptodev_sym_session_free` when the last handle
//!   drops; a queue with operations in flight on it holds it until they complete.
//! - The queue pairs are handed out once ([`CryptoDev::take_queues`]) as unique [`CryptoQueue`]
//!   handles that move to the lcore that uses them. Each has its own `rte_crypto_op` pool; an
//!   operation carries one packet ([`Mbuf`]) to the device and back, and nothing is allocated on
//!   the heap per packet.
//!
//! Operations work in place on single-segment, exclusively owned mbufs; offsets in a
//! [`CryptoJob`] count from the start of the packet data.
use crate::error::{cstr_to_string, DpdkError};
use crate::lcore::SocketId;
use crate::live::{self, Live};
use crate::mbuf::{Mbuf, BURST_SIZE};
use crate::sys;
use crate::Result;
use std::ffi::{c_void, CString};
use std::fmt;
use std::mem::{offset_of, size_of};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

const EINVAL: i32 = 22;
const EBUSY: i32 = 16;
const ENODEV: i32 = 19;
const ENOTSUP: i32 = 95;

/// Per-operation data in the op's private area, right after the symmetric op (where DPDK's
/// `__rte_crypto_op_get_priv_data` puts it). Sessions point the device at `iv` (`IV_OFFSET`);
/// `aad` is referenced by address per operation.
#[repr(C)]
struct OpPriv {
    /// The cipher IV (AES-CBC: 16 bytes) or AEAD nonce (AES-GCM: the first 12 bytes).
    iv: [u8; 16],
    /// AES-GCM additional authenticated data; GCM needs room rounded up to 16 bytes.
    aad: [u8; 16],
    /// The caller's value, handed back with the completion (low word first; kept as two
    /// words so the area needs only 8-byte alignment).
    user: [u64; 2],
    /// The session the op uses (a reference the queue holds, see `pin`).
    sess: *const SessionInner,
    /// Index of the queue's session pin holding `sess`, or `PIN_OWNED` when the op owns one
    /// strong reference of its own (`Arc::into_raw`).
    pin: u32,
}

/// Offset of the op private area from the start of the `rte_crypto_op`.
const PRIV_OFFSET: usize = size_of::<sys::rte_crypto_op>() + size_of::<sys::rte_crypto_sym_op>();
/// Where the IV lives, as an offset from the op (what `xform.iv.offset` wants).
const IV_OFFSET: u16 = (PRIV_OFFSET + offset_of!(OpPriv, iv)) as u16;
/// Where the AAD lives, as an offset from the op.
const AAD_OFFSET: usize = PRIV_OFFSET + offset_of!(OpPriv, aad);
/// Private bytes per op.
const PRIV_SIZE: u16 = size_of::<OpPriv>() as u16;
const _: () = assert!(PRIV_OFFSET.is_multiple_of(std::mem::align_of::<OpPriv>()));
const _: () = assert!(PRIV_OFFSET + size_of::<OpPriv>() < u16::MAX as usize);

/// AES-GCM nonce length (RFC 4106: 4-byte salt || 8-byte IV).
const GCM_IV_LEN: u16 = 12;
/// AES-CBC IV length.
const CBC_IV_LEN: u16 = 16;
/// AES block size: AES-CBC lengths are multiples of it.
const CBC_BLOCK: u32 = 16;
/// The largest AAD the op private area holds.
const MAX_AAD_LEN: u16 = 16;

/// Session references a queue keeps for its in-flight operations (see [`CryptoQueue`]).
const SESSION_PINS: usize = 8;
/// `OpPriv::pin` of an op that owns its session reference.
const PIN_OWNED: u32 = u32::MAX;
/// Dequeue bursts per [`CryptoQueue::poll`].
const POLL_BURSTS: usize = 4;
/// How long dropping a queue waits for the device to return its operations.
const DROP_DRAIN: Duration = Duration::from_secs(2);

/// Device ids currently opened through [`CryptoDev::open`] (one owner per device).
static OPEN: Mutex<[u64; 4]> = Mutex::new([0; 4]);
/// Makes mempool names unique (a leaked pool keeps its name).
static POOL_SEQ: AtomicU32 = AtomicU32::new(0);

fn claim(id: u8) -> bool {
    let mut set = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    let (w, b) = (usize::from(id / 64), u64::from(id % 64));
    if set[w] & (1 << b) != 0 {
        return false;
    }
    set[w] |= 1 << b;
    true
}

fn release(id: u8) {
    let mut set = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    set[usize::from(id / 64)] &= !(1u64 << (id % 64));
}

fn pool_name(prefix: &str, dev: u8, qp: Option<u16>) -> String {
    let seq = POOL_SEQ.fetch_add(1, Ordering::Relaxed);
    match qp {
        Some(q) => format!("{prefix}{dev}_{q}_{seq}"),
        None => format!("{prefix}{dev}_{seq}"),
    }
}

/// How to set up a crypto device in [`CryptoDev::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoDevConfig {
    /// Queue pairs (one per lcore that submits operations).
    pub queue_pairs: u16,
    /// Descriptors per queue pair: operations the device holds at once (the software PMDs
    /// keep them in a ring of this size, so it must be a power of two and holds one less).
    pub descriptors: u32,
    /// Operations in each queue's `rte_crypto_op` pool: the most a queue can have in flight.
    pub ops_per_queue: u32,
    /// Sessions (SAs) the device can hold at once.
    pub sessions: u32,
    /// NUMA socket for the device's memory; [`SocketId::ANY`] takes the device's own.
    pub socket: SocketId,
}

impl Default for CryptoDevConfig {
    /// One queue pair of 2048 descriptors, 4096 operations per queue, 1024 sessions.
    fn default() -> Self {
        CryptoDevConfig {
            queue_pairs: 1,
            descriptors: 2048,
            ops_per_queue: 4096,
            sessions: 1024,
            socket: SocketId::ANY,
        }
    }
}

/// The device state shared by the [`CryptoDev`], its sessions and its queues. Dropping the last
/// reference stops and closes the device.
struct DevInner {
    id: u8,
    name: String,
    driver: String,
    /// Session pool (null until created).
    sess_pool: *mut sys::rte_mempool,
    /// Created here (`rte_vdev_init`): removed again on drop (`rte_vdev_uninit`).
    created: bool,
    configured: bool,
    started: bool,
    _live: Live,
}

// SAFETY: the fields are plain values and a mempool pointer; DPDK's mempool and control calls
// used through `&DevInner` (session create/free, capability look-ups) are thread-safe, and
// control-path mutation happens only while the value is uniquely owned (open, drop).
unsafe impl Send for DevInner {}
// SAFETY: see Send.
unsafe impl Sync for DevInner {}

impl fmt::Debug for DevInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoDevice")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("driver", &self.driver)
            .finish()
    }
}

impl Drop for DevInner {
    fn drop(&mut self) {
        // No session and no queue exists any more (each holds this value), so no operation is
        // in flight and no session is allocated.
        if self.started {
            // SAFETY: a started device we own; no queue handle is left to use it.
            unsafe { sys::rte_cryptodev_stop(self.id) };
        }
        if self.created {
            if let Ok(c) = CString::new(self.name.as_str()) {
                // SAFETY: removes the virtual device this process created in `open` (what
                // rte_vdev_uninit does, through the EAL's bus-generic call); its driver closes
                // the device (releasing the queue pairs) on the way.
                unsafe { sys::rte_eal_hotplug_remove(c"vdev".as_ptr(), c.as_ptr()) };
            }
        } else if self.configured {
            // SAFETY: stopped device, every session freed; releases the queue pairs.
            unsafe { sys::rte_cryptodev_close(self.id) };
        }
        if !self.sess_pool.is_null() {
            // SAFETY: valid pool pointer created in `open`.
            if unsafe { sys::rte_mempool_in_use_count(self.sess_pool) } == 0 {
                // SAFETY: no session is left in the pool and the device is closed.
                unsafe { sys::rte_mempool_free(self.sess_pool) };
            } else {
                live::note_leaked_pool();
            }
        }
        release(self.id);
    }
}

/// A per-queue pool of `rte_crypto_op`s; freed on drop if every op is back, else leaked (and
/// counted, so that `Eal::cleanup` refuses).
#[derive(Debug)]
struct OpPool {
    ptr: NonNull<sys::rte_mempool>,
    leak: bool,
}

// SAFETY: the handle only carries the pool pointer; DPDK mempool get/put and counts are
// thread-safe (ring_mp_mc), and the pool is freed once, by the owning handle's drop.
unsafe impl Send for OpPool {}
// SAFETY: see Send; `&OpPool` only reads counts.
unsafe impl Sync for OpPool {}

impl OpPool {
    fn create(name: &str, n: u32, socket: i32) -> Result<OpPool> {
        let c = CString::new(name).map_err(|_| DpdkError::new(format!("pool {name:?}"), EINVAL))?;
        // A per-lcore cache for the owning lcore (never more than 2/3 of the pool).
        let cache = if n >= 96 { 32 } else { 0 };
        // SAFETY: valid C string; DPDK checks the numbers.
        let p = unsafe {
            sys::rte_crypto_op_pool_create(
                c.as_ptr(),
                sys::RTE_CRYPTO_OP_TYPE_SYMMETRIC,
                n,
                cache,
                PRIV_SIZE,
                socket,
            )
        };
        let ptr = NonNull::new(p).ok_or_else(|| {
            DpdkError::from_rte_errno(format!("rte_crypto_op_pool_create({name}, n={n})"))
        })?;
        Ok(OpPool { ptr, leak: false })
    }

    fn available(&self) -> u32 {
        // SAFETY: valid pool pointer; a racy snapshot by design.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    fn size(&self) -> u32 {
        // SAFETY: valid pool pointer; `size` is immutable after creation.
        unsafe { self.ptr.as_ref().size }
    }
}

impl Drop for OpPool {
    fn drop(&mut self) {
        // SAFETY: valid pool pointer.
        if !self.leak && unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) } == 0 {
            // SAFETY: every op is back; nothing refers to the pool any more.
            unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) };
        } else {
            live::note_leaked_pool();
        }
    }
}

/// An open crypto device: configured, queue pairs set up, started. See the module docs for
/// ownership.
#[derive(Debug)]
pub struct CryptoDev {
    inner: Arc<DevInner>,
    /// One op pool per queue pair, until [`CryptoDev::take_queues`] hands them out.
    pools: Vec<OpPool>,
    queues_taken: bool,
}

fn check(op: impl FnOnce() -> String, rc: i32) -> Result<()> {
    if rc < 0 {
        Err(DpdkError::new(op(), rc))
    } else {
        Ok(())
    }
}

impl CryptoDev {
    /// Opens crypto device `name`: a probed device (e.g. "crypto_aesni_mb0" from `--vdev`) or, if
    /// none of that name exists and the name starts with `crypto_` (a virtual crypto driver's
    /// name plus an instance suffix), one created with `rte_vdev_init(name, args)`. `args` are
    /// only for creating: they must be empty for a device that already exists.
    ///
    /// Configures the device (`rte_cryptodev_configure`) with `cfg.queue_pairs` queue pairs of
    /// `cfg.descriptors` each and a session pool of `cfg.sessions`, creates one op pool per queue
    /// pair, and starts it. A device can be open once at a time. Errors name the device and the
    /// failing call.
    pub fn open(name: &str, args: &str, cfg: &CryptoDevConfig) -> Result<CryptoDev> {
        let cname = CString::new(name)
            .map_err(|_| DpdkError::new(format!("crypto device {name:?}"), EINVAL))?;
        let cargs = CString::new(args)
            .map_err(|_| DpdkError::new(format!("vdev args {args:?}"), EINVAL))?;
        // SAFETY: valid C string.
        let mut id = unsafe { sys::rte_cryptodev_get_dev_id(cname.as_ptr()) };
        let mut created = false;
        if id < 0 {
            if !name.starts_with("crypto_") {
                return Err(DpdkError::new(
                    format!("crypto device {name}: not probed (only crypto_* virtual devices can be created)"),
                    ENODEV,
                ));
            }
            // rte_vdev_init(name, args) through the EAL's bus-generic hotplug call: the vdev
            // bus library is not among the libraries libdpdk.pc links (only the static link
            // lists drivers and buses), and this is exactly what rte_vdev_init does.
            // SAFETY: valid C strings; the call fails cleanly when EAL is not initialised.
            let rc = unsafe {
                sys::rte_eal_hotplug_add(c"vdev".as_ptr(), cname.as_ptr(), cargs.as_ptr())
            };
            check(|| format!("rte_vdev_init({name}, {args:?})"), rc)?;
            created = true;
            // SAFETY: valid C string.
            id = unsafe { sys::rte_cryptodev_get_dev_id(cname.as_ptr()) };
            if id < 0 {
                // SAFETY: we created the vdev just above and nothing uses it.
                unsafe { sys::rte_eal_hotplug_remove(c"vdev".as_ptr(), cname.as_ptr()) };
                return Err(DpdkError::new(
                    format!("rte_vdev_init({name}) created no crypto device"),
                    ENODEV,
                ));
            }
        } else if !args.is_empty() {
            return Err(DpdkError::new(
                format!("crypto device {name} already exists: args {args:?} only apply when creating it"),
                EINVAL,
            ));
        }
        let id = id as u8;
        if !claim(id) {
            if created {
                // SAFETY: we created the vdev above; nobody has it open (it is not claimed).
                unsafe { sys::rte_eal_hotplug_remove(c"vdev".as_ptr(), cname.as_ptr()) };
            }
            return Err(DpdkError::new(
                format!("crypto device {name} (id {id}) is already open"),
                EBUSY,
            ));
        }
        let mut info = sys::rte_cryptodev_info::default();
        // SAFETY: `id` names a probed device; valid out pointer.
        unsafe { sys::rte_cryptodev_info_get(id, &mut info) };
        // From here on `inner` undoes whatever has been done when it drops (errors included).
        let mut inner = DevInner {
            id,
            name: name.to_owned(),
            // SAFETY: driver_name is a static string owned by the driver (or null).
            driver: unsafe { cstr_to_string(info.driver_name) },
            sess_pool: ptr::null_mut(),
            created,
            configured: false,
            started: false,
            _live: Live::new(),
        };
        let what = |call: &str| format!("{call}(crypto device {name})");
        if info.feature_flags & u64::from(sys::RTE_CRYPTODEV_FF_SYMMETRIC_CRYPTO) == 0 {
            return Err(DpdkError::new(
                format!("crypto device {name}: no symmetric crypto"),
                ENOTSUP,
            ));
        }
        if cfg.queue_pairs == 0 || u32::from(cfg.queue_pairs) > info.max_nb_queue_pairs {
            return Err(DpdkError::new(
                format!(
                    "crypto device {name}: {} queue pairs requested, device supports 1..={}",
                    cfg.queue_pairs, info.max_nb_queue_pairs
                ),
                EINVAL,
            ));
        }
        if cfg.descriptors == 0 || cfg.ops_per_queue == 0 || cfg.sessions == 0 {
            return Err(DpdkError::new(
                format!("crypto device {name}: descriptors, ops_per_queue and sessions must be non-zero"),
                EINVAL,
            ));
        }
        let socket = if cfg.socket == SocketId::ANY {
            // SAFETY: valid device id.
            unsafe { sys::rte_cryptodev_socket_id(id) }
        } else {
            cfg.socket.0
        };
        let mut conf = sys::rte_cryptodev_config {
            socket_id: socket,
            nb_queue_pairs: cfg.queue_pairs,
            ff_disable: u64::from(
                sys::RTE_CRYPTODEV_FF_ASYMMETRIC_CRYPTO | sys::RTE_CRYPTODEV_FF_SECURITY,
            ),
        };
        // SAFETY: a stopped device we own (claimed above); valid config.
        let rc = unsafe { sys::rte_cryptodev_configure(id, &mut conf) };
        check(|| what("rte_cryptodev_configure"), rc)?;
        inner.configured = true;

        // SAFETY: valid device id.
        let sess_size = unsafe { sys::rte_cryptodev_sym_get_private_session_size(id) };
        let pname = pool_name("cdsess", id, None);
        let cpname = CString::new(pname.as_str()).expect("pool names have no NUL");
        // SAFETY: valid C string; DPDK checks the numbers.
        inner.sess_pool = unsafe {
            sys::rte_cryptodev_sym_session_pool_create(
                cpname.as_ptr(),
                cfg.sessions,
                sess_size,
                0,
                0,
                socket,
            )
        };
        if inner.sess_pool.is_null() {
            return Err(DpdkError::from_rte_errno(format!(
                "rte_cryptodev_sym_session_pool_create({pname}, n={}, elt={sess_size}) for crypto device {name}",
                cfg.sessions
            )));
        }
        let qp_conf = sys::rte_cryptodev_qp_conf {
            nb_descriptors: cfg.descriptors,
            mp_session: inner.sess_pool,
        };
        for qp in 0..cfg.queue_pairs {
            // SAFETY: configured, stopped device; qp below the configured count; valid conf.
            let rc = unsafe { sys::rte_cryptodev_queue_pair_setup(id, qp, &qp_conf, socket) };
            check(
                || {
                    format!(
                        "rte_cryptodev_queue_pair_setup(crypto device {name}, qp {qp}, {} descriptors)",
                        cfg.descriptors
                    )
                },
                rc,
            )?;
        }
        let mut pools = Vec::with_capacity(usize::from(cfg.queue_pairs));
        for qp in 0..cfg.queue_pairs {
            let n = pool_name("cdop", id, Some(qp));
            pools.push(OpPool::create(&n, cfg.ops_per_queue, socket).map_err(|e| {
                DpdkError::new(format!("{} for crypto device {name}", e.op), e.errno)
            })?);
        }
        // SAFETY: configured device with every queue pair set up.
        let rc = unsafe { sys::rte_cryptodev_start(id) };
        check(|| what("rte_cryptodev_start"), rc)?;
        inner.started = true;
        Ok(CryptoDev {
            inner: Arc::new(inner),
            pools,
            queues_taken: false,
        })
    }

    /// The device id.
    pub fn id(&self) -> u8 {
        self.inner.id
    }

    /// The device name, e.g. "crypto_aesni_mb0".
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The driver name, e.g. "crypto_aesni_mb".
    pub fn driver(&self) -> &str {
        &self.inner.driver
    }

    /// Sessions currently allocated on the device (by live [`Session`]s).
    pub fn sessions_in_use(&self) -> u32 {
        // SAFETY: the session pool lives as long as `inner`; a racy snapshot by design.
        unsafe { sys::rte_mempool_in_use_count(self.inner.sess_pool) }
    }

    /// Sessions the device can hold at once (`CryptoDevConfig::sessions`).
    pub fn sessions_capacity(&self) -> u32 {
        // SAFETY: the session pool lives as long as `inner`; `size` is set at creation and
        // never changes.
        unsafe { (*self.inner.sess_pool).size }
    }

    /// Checks that the device supports `spec` (`rte_cryptodev_sym_capability_get` and
    /// `rte_cryptodev_sym_capability_check_aead` / `_cipher` / `_auth`) and creates a symmetric
    /// session for it (`rte_cryptodev_sym_session_create`). The keys are copied into the
    /// session. An unsupported spec is an error that names it.
    pub fn session(&self, spec: &SessionSpec<'_>) -> Result<Session> {
        let d = &*self.inner;
        // "<call>(crypto device <name> (<driver>), <spec>) failed: Operation not supported".
        let unsupported = |call: &str, what: String| {
            Err(DpdkError::new(
                format!("{call}(crypto device {} ({}), {what})", d.name, d.driver),
                ENOTSUP,
            ))
        };
        let key_len = |k: &[u8], what: &str| {
            u16::try_from(k.len()).map_err(|_| {
                DpdkError::new(
                    format!("crypto device {}: {what} of {} bytes", d.name, k.len()),
                    EINVAL,
                )
            })
        };
        let sess = match *spec {
            SessionSpec::AesGcm {
                key,
                dir,
                aad_len,
                digest_len,
            } => {
                let klen = key_len(key, "AES-GCM key")?;
                let desc = || {
                    format!(
                        "AES-GCM with a {klen}-byte key, {digest_len}-byte tag, {aad_len}-byte AAD and {GCM_IV_LEN}-byte IV"
                    )
                };
                if aad_len > MAX_AAD_LEN {
                    return Err(DpdkError::new(
                        format!(
                            "crypto device {}: {}: AAD longer than {MAX_AAD_LEN} bytes",
                            d.name,
                            desc()
                        ),
                        EINVAL,
                    ));
                }
                let Some(cap) = sym_capability(
                    d.id,
                    sys::RTE_CRYPTO_SYM_XFORM_AEAD,
                    sys::RTE_CRYPTO_AEAD_AES_GCM,
                ) else {
                    return unsupported("rte_cryptodev_sym_capability_get", "AES-GCM".into());
                };
                // SAFETY: `cap` points into the driver's static capability table.
                let rc = unsafe {
                    sys::rte_cryptodev_sym_capability_check_aead(
                        cap, klen, digest_len, aad_len, GCM_IV_LEN,
                    )
                };
                if rc != 0 || digest_len == 0 {
                    return unsupported("rte_cryptodev_sym_capability_check_aead", desc());
                }
                let mut x = sys::rte_crypto_sym_xform {
                    type_: sys::RTE_CRYPTO_SYM_XFORM_AEAD,
                    ..Default::default()
                };
                x.__bindgen_anon_1.aead = sys::rte_crypto_aead_xform {
                    op: match dir {
                        CipherDir::Encrypt => sys::RTE_CRYPTO_AEAD_OP_ENCRYPT,
                        CipherDir::Decrypt => sys::RTE_CRYPTO_AEAD_OP_DECRYPT,
                    },
                    algo: sys::RTE_CRYPTO_AEAD_AES_GCM,
                    key: sys::rte_crypto_aead_xform__bindgen_ty_1 {
                        data: key.as_ptr(),
                        length: klen,
                    },
                    iv: sys::rte_crypto_aead_xform__bindgen_ty_2 {
                        offset: IV_OFFSET,
                        length: GCM_IV_LEN,
                    },
                    digest_length: digest_len,
                    aad_length: aad_len,
                };
                self.create_session(&mut x, desc)?
            }
            SessionSpec::AesCbcHmacSha256 {
                cipher_key,
                auth_key,
                dir,
                digest_len,
            } => {
                let ck = key_len(cipher_key, "AES-CBC key")?;
                let ak = key_len(auth_key, "HMAC-SHA256 key")?;
                let desc = || {
                    format!(
                        "AES-CBC with a {ck}-byte key and {CBC_IV_LEN}-byte IV chained with HMAC-SHA256 with a {ak}-byte key and {digest_len}-byte digest"
                    )
                };
                let mut info = sys::rte_cryptodev_info::default();
                // SAFETY: valid device id and out pointer.
                unsafe { sys::rte_cryptodev_info_get(d.id, &mut info) };
                if info.feature_flags & u64::from(sys::RTE_CRYPTODEV_FF_SYM_OPERATION_CHAINING) == 0
                {
                    return unsupported("RTE_CRYPTODEV_FF_SYM_OPERATION_CHAINING", desc());
                }
                let Some(ccap) = sym_capability(
                    d.id,
                    sys::RTE_CRYPTO_SYM_XFORM_CIPHER,
                    sys::RTE_CRYPTO_CIPHER_AES_CBC,
                ) else {
                    return unsupported("rte_cryptodev_sym_capability_get", "AES-CBC".into());
                };
                // SAFETY: `ccap` points into the driver's static capability table.
                if unsafe { sys::rte_cryptodev_sym_capability_check_cipher(ccap, ck, CBC_IV_LEN) }
                    != 0
                {
                    return unsupported("rte_cryptodev_sym_capability_check_cipher", desc());
                }
                let Some(acap) = sym_capability(
                    d.id,
                    sys::RTE_CRYPTO_SYM_XFORM_AUTH,
                    sys::RTE_CRYPTO_AUTH_SHA256_HMAC,
                ) else {
                    return unsupported("rte_cryptodev_sym_capability_get", "HMAC-SHA256".into());
                };
                // SAFETY: `acap` points into the driver's static capability table.
                if unsafe { sys::rte_cryptodev_sym_capability_check_auth(acap, ak, digest_len, 0) }
                    != 0
                    || digest_len == 0
                {
                    return unsupported("rte_cryptodev_sym_capability_check_auth", desc());
                }
                let mut cipher = sys::rte_crypto_sym_xform {
                    type_: sys::RTE_CRYPTO_SYM_XFORM_CIPHER,
                    ..Default::default()
                };
                cipher.__bindgen_anon_1.cipher = sys::rte_crypto_cipher_xform {
                    op: match dir {
                        CipherDir::Encrypt => sys::RTE_CRYPTO_CIPHER_OP_ENCRYPT,
                        CipherDir::Decrypt => sys::RTE_CRYPTO_CIPHER_OP_DECRYPT,
                    },
                    algo: sys::RTE_CRYPTO_CIPHER_AES_CBC,
                    key: sys::rte_crypto_cipher_xform__bindgen_ty_1 {
                        data: cipher_key.as_ptr(),
                        length: ck,
                    },
                    iv: sys::rte_crypto_cipher_xform__bindgen_ty_2 {
                        offset: IV_OFFSET,
                        length: CBC_IV_LEN,
                    },
                    dataunit_len: 0,
                };
                let mut auth = sys::rte_crypto_sym_xform {
                    type_: sys::RTE_CRYPTO_SYM_XFORM_AUTH,
                    ..Default::default()
                };
                auth.__bindgen_anon_1.auth = sys::rte_crypto_auth_xform {
                    op: match dir {
                        CipherDir::Encrypt => sys::RTE_CRYPTO_AUTH_OP_GENERATE,
                        CipherDir::Decrypt => sys::RTE_CRYPTO_AUTH_OP_VERIFY,
                    },
                    algo: sys::RTE_CRYPTO_AUTH_SHA256_HMAC,
                    key: sys::rte_crypto_auth_xform__bindgen_ty_1 {
                        data: auth_key.as_ptr(),
                        length: ak,
                    },
                    iv: sys::rte_crypto_auth_xform__bindgen_ty_2 {
                        offset: 0,
                        length: 0,
                    },
                    digest_length: digest_len,
                };
                // RFC 4303 §3.4.3/§3.3.2: the sender encrypts, then computes the ICV over the
                // ciphertext; the receiver verifies the ICV first, then decrypts.
                match dir {
                    CipherDir::Encrypt => {
                        cipher.next = &mut auth;
                        self.create_session(&mut cipher, desc)?
                    }
                    CipherDir::Decrypt => {
                        auth.next = &mut cipher;
                        self.create_session(&mut auth, desc)?
                    }
                }
            }
        };
        let (aead, digest_len) = match *spec {
            SessionSpec::AesGcm { digest_len, .. } => (true, digest_len),
            SessionSpec::AesCbcHmacSha256 { digest_len, .. } => (false, digest_len),
        };
        Ok(Session {
            inner: Arc::new(SessionInner {
                dev: self.inner.clone(),
                sess,
                aead,
                digest_len: u32::from(digest_len),
                _live: Live::new(),
            }),
        })
    }

    fn create_session(
        &self,
        xform: &mut sys::rte_crypto_sym_xform,
        desc: impl FnOnce() -> String,
    ) -> Result<NonNull<c_void>> {
        let d = &*self.inner;
        // SAFETY: a started device we hold; `xform` is a valid chain whose key pointers live
        // for this call (the PMD copies or expands the keys into the session); valid pool.
        let s = unsafe { sys::rte_cryptodev_sym_session_create(d.id, xform, d.sess_pool) };
        NonNull::new(s).ok_or_else(|| {
            DpdkError::from_rte_errno(format!(
                "rte_cryptodev_sym_session_create(crypto device {}, {})",
                d.name,
                desc()
            ))
        })
    }

    /// Hands out every queue pair once, indexed by queue pair id, to move to the lcore that uses
    /// it.
    pub fn take_queues(&mut self) -> Result<Vec<CryptoQueue>> {
        if self.queues_taken {
            return Err(DpdkError::new(
                format!(
                    "take queues of crypto device {}: already taken",
                    self.name()
                ),
                EBUSY,
            ));
        }
        self.queues_taken = true;
        Ok(self
            .pools
            .drain(..)
            .enumerate()
            .map(|(qp, pool)| CryptoQueue::new(self.inner.clone(), qp as u16, pool))
            .collect())
    }
}

/// The device's capability entry for one algorithm, or `None`.
fn sym_capability(
    dev: u8,
    kind: sys::rte_crypto_sym_xform_type,
    algo: u32,
) -> Option<*const sys::rte_cryptodev_symmetric_capability> {
    let mut idx = sys::rte_cryptodev_sym_capability_idx {
        type_: kind,
        ..Default::default()
    };
    // All three members are 32-bit algorithm enums at the same offset.
    idx.algo.aead = algo;
    // SAFETY: valid device id and index; returns a pointer into the driver's static table or
    // NULL.
    let p = unsafe { sys::rte_cryptodev_sym_capability_get(dev, &idx) };
    (!p.is_null()).then_some(p)
}

/// Direction of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherDir {
    /// Encrypt and generate the ICV (outbound ESP).
    Encrypt,
    /// Verify the ICV and decrypt (inbound ESP).
    Decrypt,
}

/// What a [`Session`] does. Keys are borrowed for [`CryptoDev::session`] only (the device copies
/// them); `Debug` does not print them.
#[derive(Clone, Copy)]
pub enum SessionSpec<'a> {
    /// AES-GCM as ESP uses it (RFC 4106): a 16- or 32-byte key (the 4-byte salt is not part of
    /// it), a 12-byte nonce per packet (salt || 8-byte IV, built by the caller in
    /// [`CryptoJob::iv`]), `aad_len` 8 or 12 (SPI || sequence number, or with ESN) and a
    /// `digest_len` 16 tag.
    AesGcm {
        /// The AES key.
        key: &'a [u8],
        /// Encrypt (tag generated) or decrypt (tag verified).
        dir: CipherDir,
        /// AAD bytes per packet, at most 16.
        aad_len: u16,
        /// Tag (ICV) bytes.
        digest_len: u16,
    },
    /// AES-CBC (16- or 32-byte key, 16-byte IV per packet) chained with HMAC-SHA256 truncated to
    /// `digest_len` (16 in RFC 4868). Encrypt: cipher, then generate the HMAC over the
    /// ciphertext. Decrypt: verify the HMAC, then decrypt.
    AesCbcHmacSha256 {
        /// The AES key.
        cipher_key: &'a [u8],
        /// The HMAC key (32 bytes in RFC 4868).
        auth_key: &'a [u8],
        /// Encrypt or decrypt.
        dir: CipherDir,
        /// ICV bytes (the truncated HMAC).
        digest_len: u16,
    },
}

impl fmt::Debug for SessionSpec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionSpec::AesGcm {
                key,
                dir,
                aad_len,
                digest_len,
            } => f
                .debug_struct("AesGcm")
                .field("key_len", &key.len())
                .field("dir", dir)
                .field("aad_len", aad_len)
                .field("digest_len", digest_len)
                .finish(),
            SessionSpec::AesCbcHmacSha256 {
                cipher_key,
                auth_key,
                dir,
                digest_len,
            } => f
                .debug_struct("AesCbcHmacSha256")
                .field("cipher_key_len", &cipher_key.len())
                .field("auth_key_len", &auth_key.len())
                .field("dir", dir)
                .field("digest_len", digest_len)
                .finish(),
        }
    }
}

struct SessionInner {
    dev: Arc<DevInner>,
    sess: NonNull<c_void>,
    /// AEAD (GCM) rather than a cipher + auth chain.
    aead: bool,
    digest_len: u32,
    _live: Live,
}

// SAFETY: a DPDK symmetric session is immutable after creation and may be used by several queue
// pairs (lcores) at once; it is freed once, on the last drop.
unsafe impl Send for SessionInner {}
// SAFETY: see Send.
unsafe impl Sync for SessionInner {}

impl Drop for SessionInner {
    fn drop(&mut self) {
        // SAFETY: the session was created on this device, which is alive (we hold it); no
        // operation uses it any more (each in-flight op's queue holds a reference).
        unsafe { sys::rte_cryptodev_sym_session_free(self.dev.id, self.sess.as_ptr()) };
    }
}

/// A symmetric session (one SA direction) on one device. Cloning gives another handle to the
/// same session; it is freed with `rte_cryptodev_sym_session_free` when the last handle drops
/// (queues with operations in flight on it hold one).
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("dev", &self.inner.dev.name)
            .field("aead", &self.inner.aead)
            .field("digest_len", &self.inner.digest_len)
            .finish()
    }
}

impl Session {
    /// The id of the device the session belongs to.
    pub fn dev_id(&self) -> u8 {
        self.inner.dev.id
    }

    /// ICV (tag or truncated HMAC) bytes, written or verified at [`CryptoJob::digest_offset`].
    pub fn digest_len(&self) -> u32 {
        self.inner.digest_len
    }

    /// Handles to this session alive now: this one, its clones, and the references queues hold
    /// for operations in flight or kept idle (see [`CryptoQueue::release_idle_sessions`]). The
    /// session is freed when the last one goes, on the thread that drops it: a holder that
    /// waits until this is 1 before dropping its handle frees it itself.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Whether `other` is a handle to the same session.
    pub fn same_session(&self, other: &Session) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Where in a packet the device works, for one operation: ESP's own description of the work
/// ([`pipelines::ipsec::esp::EspJob`]). Offsets count from the start of the packet data (the
/// mbuf's data offset in its first and only segment); GCM uses the first 12 bytes of `iv` (salt
/// || IV) and the first 8 or 12 of `aad` (the session's AAD length), CBC all 16 of `iv`; the
/// auth range is for chained algorithms only (ESP: header, IV and ciphertext); an AES-CBC
/// length that is not a multiple of 16 is refused.
pub use pipelines::ipsec::esp::EspJob as CryptoJob;

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoStatus {
    /// Processed: the bytes were transformed and the ICV written or verified.
    Success,
    /// Decrypt: the ICV did not verify (the packet must be dropped).
    AuthFailed,
    /// The device reported another status (`rte_crypto_op_status`).
    Error(u8),
    /// The device did not accept the operation (its queue was full); the packet is untouched.
    QueueFull,
}

impl CryptoStatus {
    #[inline]
    fn from_op(status: u8) -> CryptoStatus {
        match u32::from(status) {
            sys::RTE_CRYPTO_OP_STATUS_SUCCESS => CryptoStatus::Success,
            sys::RTE_CRYPTO_OP_STATUS_AUTH_FAILED => CryptoStatus::AuthFailed,
            _ => CryptoStatus::Error(status),
        }
    }
}

/// A session reference held by a queue for its in-flight operations.
#[derive(Default)]
struct Pin {
    sess: Option<Arc<SessionInner>>,
    in_flight: u32,
}

/// Completed operations' packets on the stack, delivered one by one; whatever was not delivered
/// (the callback panicked) is freed on drop.
struct Completions {
    items: [(*mut sys::rte_mbuf, CryptoStatus, u128); BURST_SIZE],
    head: usize,
    len: usize,
}

impl Completions {
    #[inline]
    fn new() -> Self {
        Completions {
            items: [(ptr::null_mut(), CryptoStatus::QueueFull, 0); BURST_SIZE],
            head: 0,
            len: 0,
        }
    }

    #[inline]
    fn push(&mut self, m: *mut sys::rte_mbuf, st: CryptoStatus, user: u128) {
        if !m.is_null() && self.len < BURST_SIZE {
            self.items[self.len] = (m, st, user);
            self.len += 1;
        }
    }

    #[inline]
    fn deliver(mut self, done: &mut impl FnMut(Mbuf, CryptoStatus, u128)) {
        while self.head < self.len {
            let (m, st, user) = self.items[self.head];
            self.head += 1;
            // SAFETY: `m` is the non-null mbuf the queue handed to the device with the op; the
            // op is retired, so we own it again, and it is taken out of `items` exactly once.
            done(
                unsafe { Mbuf::from_raw(NonNull::new_unchecked(m)) },
                st,
                user,
            );
        }
    }
}

impl Drop for Completions {
    fn drop(&mut self) {
        for &(m, _, _) in &self.items[self.head..self.len] {
            // SAFETY: mbufs not delivered are still owned here.
            unsafe { sys::shim_rte_pktmbuf_free(m) };
        }
    }
}

/// One queue pair of a [`CryptoDev`], owned by the one lcore that uses it (`Send`, not `Sync`).
///
/// Packets go in with [`CryptoQueue::push`], are enqueued a burst at a time, and come back
/// through the `done` callback of [`CryptoQueue::poll`] (or of [`CryptoQueue::flush`], for
/// operations the device refused). Every pushed packet comes back exactly once; dropping the
/// queue waits (a bounded time) for the device and frees what returns.
///
/// A device may process an operation during `rte_cryptodev_enqueue_burst` and still refuse it:
/// crypto_openssl works synchronously and refuses the operation whose completion does not fit
/// its ring (or that failed), after writing the packet. Such an operation is never enqueued
/// again (that would transform the packet twice): it is kept aside and completed at the next
/// poll or flush with the status the device gave it. Only operations the device left untouched
/// are retried or come back as [`CryptoStatus::QueueFull`].
///
/// Sessions in flight are kept alive by a small table of references on the queue (no shared
/// reference count is touched per packet); a session whose last other handle was dropped is let
/// go at the next poll once no operation of this queue uses it.
pub struct CryptoQueue {
    dev: Arc<DevInner>,
    qp: u16,
    pool: OpPool,
    /// Prepared ops not yet accepted by the device (never touched by it).
    pending: [*mut sys::rte_crypto_op; BURST_SIZE],
    npending: usize,
    /// Ops the device processed but refused to take, waiting to be completed.
    stash: [*mut sys::rte_crypto_op; STASH],
    nstash: usize,
    /// Enqueued to the device and not yet dequeued.
    enqueued: u32,
    pins: [Pin; SESSION_PINS],
    last_pin: usize,
    /// Free ops kept by this queue (taken from and returned to its pool in bulk).
    free: [*mut sys::rte_crypto_op; FREE_OPS],
    nfree: usize,
    _live: Live,
}

/// Free ops a queue keeps for reuse.
const FREE_OPS: usize = 2 * BURST_SIZE;

/// Room for processed-but-refused ops: an enqueue attempt moves at most a burst there, and one
/// is only made while at most a burst is waiting.
const STASH: usize = 2 * BURST_SIZE;

// SAFETY: the queue is the unique user of its queue pair and op pool; moving it to another thread
// moves that ownership (the ops and mbufs it holds are owned, DPDK pools are thread-safe, and the
// session references are Arcs of Send + Sync values).
unsafe impl Send for CryptoQueue {}

impl fmt::Debug for CryptoQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoQueue")
            .field("dev", &self.dev.name)
            .field("qp", &self.qp)
            .field("pending", &self.npending)
            .field("refused_done", &self.nstash)
            .field("enqueued", &self.enqueued)
            .finish()
    }
}

impl CryptoQueue {
    fn new(dev: Arc<DevInner>, qp: u16, pool: OpPool) -> CryptoQueue {
        CryptoQueue {
            dev,
            qp,
            pool,
            pending: [ptr::null_mut(); BURST_SIZE],
            npending: 0,
            stash: [ptr::null_mut(); STASH],
            nstash: 0,
            enqueued: 0,
            pins: Default::default(),
            last_pin: 0,
            free: [ptr::null_mut(); FREE_OPS],
            nfree: 0,
            _live: Live::new(),
        }
    }

    /// The device id.
    pub fn dev_id(&self) -> u8 {
        self.dev.id
    }

    /// The queue pair id.
    pub fn qp(&self) -> u16 {
        self.qp
    }

    /// Operations pushed and not yet handed back (buffered, on the device, or processed and
    /// waiting to be completed).
    #[inline]
    pub fn in_flight(&self) -> u32 {
        (self.npending + self.nstash) as u32 + self.enqueued
    }

    /// Free operations: those in this queue's pool and those it keeps for reuse.
    pub fn ops_available(&self) -> u32 {
        self.pool.available() + self.nfree as u32
    }

    /// Operations in this queue's pool.
    pub fn ops_capacity(&self) -> u32 {
        self.pool.size()
    }

    /// Takes `m`, prepares an operation for `session` over `job` and buffers it; a full burst of
    /// [`BURST_SIZE`] is enqueued at once. The packet comes back through a later `poll`/`flush`
    /// with `user`.
    ///
    /// Hands `m` back (the caller counts the drop) when: the session belongs to another device,
    /// the mbuf has more than one segment or shares its buffer (the device writes in place), a
    /// range of `job` falls outside the data, an AES-CBC length is not a whole number of 16-byte
    /// blocks (ESP pads to the block size), no operation is free, or the buffer is still full
    /// because the device refuses more (poll, then push again).
    #[inline]
    pub fn push(
        &mut self,
        mut m: Mbuf,
        session: &Session,
        job: &CryptoJob,
        user: u128,
    ) -> Result<(), Mbuf> {
        let s = &*session.inner;
        if s.dev.id != self.dev.id || m.nb_segs() != 1 {
            return Err(m);
        }
        let len = u32::from(m.data_len());
        let within = |off: u32, n: u32| off.checked_add(n).is_some_and(|end| end <= len);
        // AES-CBC works on whole blocks: crypto_aesni_mb rounds a partial length up, writing
        // past the range (and past the data at its end) while reporting success.
        if !within(job.cipher_offset, job.cipher_len)
            || !within(job.digest_offset, s.digest_len)
            || (!s.aead
                && (!within(job.auth_offset, job.auth_len)
                    || !job.cipher_len.is_multiple_of(CBC_BLOCK)))
        {
            return Err(m);
        }
        // Only an exclusive, direct mbuf is writable (the device writes in place).
        let digest = match m.data_mut() {
            Some(d) => d[job.digest_offset as usize..].as_mut_ptr(),
            None => return Err(m),
        };
        if self.npending == BURST_SIZE {
            self.try_enqueue();
            if self.npending == BURST_SIZE {
                return Err(m);
            }
        }
        let Some(op) = self.take_op() else {
            return Err(m);
        };
        let pin = self.pin(&session.inner);
        let mp = m.as_ptr();
        // SAFETY: `op` is a symmetric op of our pool that nothing else references (fresh from the
        // pool or retired by `finish`), with PRIV_SIZE private bytes at PRIV_OFFSET, suitably
        // aligned (checked at compile time); it is reset here as rte_crypto_op_alloc and
        // rte_crypto_op_attach_sym_session would (type, status, session type, sym op zeroed, the
        // session set; the pool, IO address and private data offset recorded at pool creation
        // are kept). `mp` is a valid single-segment exclusive mbuf whose ownership moves into
        // the op below; every range was checked to lie inside its data, so the device only
        // touches bytes of this packet; the session belongs to this device and is kept alive by
        // `pin`.
        unsafe {
            let h = &mut (*op).__bindgen_anon_1.__bindgen_anon_1;
            h.type_ = sys::RTE_CRYPTO_OP_TYPE_SYMMETRIC as u8;
            h.status = sys::RTE_CRYPTO_OP_STATUS_NOT_PROCESSED as u8;
            h.sess_type = sys::RTE_CRYPTO_OP_WITH_SESSION as u8;
            h.aux_flags = 0;
            let sym = ptr::addr_of_mut!((*op).__bindgen_anon_2).cast::<sys::rte_crypto_sym_op>();
            ptr::write_bytes(sym, 0, 1);
            (*sym).__bindgen_anon_1.session = s.sess.as_ptr();
            (*sym).m_src = mp;
            // rte_pktmbuf_iova_offset: the buffer's IO address + data offset + offset.
            let digest_iova =
                (*mp).buf_iova + u64::from((*mp).data_off) + u64::from(job.digest_offset);
            if s.aead {
                let a = &mut (*sym).__bindgen_anon_2.aead;
                a.data.offset = job.cipher_offset;
                a.data.length = job.cipher_len;
                a.digest.data = digest;
                a.digest.phys_addr = digest_iova;
                // rte_crypto_op_ctod_offset / rte_crypto_op_ctophys_offset: the AAD lives in the
                // op, whose IO address DPDK recorded at pool creation.
                a.aad.data = op.cast::<u8>().add(AAD_OFFSET);
                a.aad.phys_addr = (*op).phys_addr + AAD_OFFSET as u64;
            } else {
                let c = &mut (*sym).__bindgen_anon_2.__bindgen_anon_1;
                c.cipher.data.offset = job.cipher_offset;
                c.cipher.data.length = job.cipher_len;
                c.auth.data.offset = job.auth_offset;
                c.auth.data.length = job.auth_len;
                c.auth.digest.data = digest;
                c.auth.digest.phys_addr = digest_iova;
            }
            let p = op.cast::<u8>().add(PRIV_OFFSET).cast::<OpPriv>();
            p.write(OpPriv {
                iv: job.iv,
                aad: job.aad,
                user: [user as u64, (user >> 64) as u64],
                sess: pin.1,
                pin: pin.0,
            });
        }
        let _owned_by_op = m.into_raw();
        self.pending[self.npending] = op;
        self.npending += 1;
        if self.npending == BURST_SIZE {
            self.try_enqueue();
        }
        Ok(())
    }

    /// Enqueues what is pending (`rte_cryptodev_enqueue_burst`). Operations the device refuses
    /// are not lost: those it left untouched come back through `done` with
    /// [`CryptoStatus::QueueFull`] (the packet unchanged) and those it processed anyway with
    /// their status; their operations are freed.
    #[inline]
    pub fn flush(&mut self, mut done: impl FnMut(Mbuf, CryptoStatus, u128)) {
        self.complete_stash(&mut done);
        self.try_enqueue();
        self.complete_stash(&mut done);
        let n = self.npending;
        if n == 0 {
            return;
        }
        self.npending = 0;
        let ops = self.pending;
        self.finish(&ops[..n], true, &mut done);
    }

    /// Completes what the device has finished: operations it processed but refused, then up to
    /// a few dequeued bursts. Frees the operations and hands each packet back with its status
    /// and `user` value. Returns how many came back.
    #[inline]
    pub fn poll(&mut self, mut done: impl FnMut(Mbuf, CryptoStatus, u128)) -> usize {
        let mut total = self.complete_stash(&mut done);
        for _ in 0..POLL_BURSTS {
            if self.enqueued == 0 {
                break;
            }
            let mut ops = [ptr::null_mut::<sys::rte_crypto_op>(); BURST_SIZE];
            // SAFETY: room for BURST_SIZE op pointers; this handle is the queue pair's unique
            // user and the device is started (it cannot stop while the handle lives).
            let n = unsafe {
                sys::shim_rte_cryptodev_dequeue_burst(
                    self.dev.id,
                    self.qp,
                    ops.as_mut_ptr(),
                    BURST_SIZE as u16,
                )
            };
            let n = usize::from(n).min(BURST_SIZE);
            if n == 0 {
                break;
            }
            self.enqueued = self.enqueued.saturating_sub(n as u32);
            self.finish(&ops[..n], false, &mut done);
            total += n;
            if n < BURST_SIZE {
                break;
            }
        }
        self.unpin_idle();
        total
    }

    /// Flushes and polls until nothing is in flight or `timeout` has passed, retrying operations
    /// the device refuses in the meantime (those still refused at the end come back with
    /// [`CryptoStatus::QueueFull`]). Returns what is still on the device.
    pub fn drain(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(Mbuf, CryptoStatus, u128),
    ) -> u32 {
        let start = Instant::now();
        loop {
            self.complete_stash(&mut done);
            self.try_enqueue();
            self.poll(&mut done);
            if self.in_flight() == 0 {
                return 0;
            }
            if start.elapsed() >= timeout {
                self.flush(&mut done);
                return self.enqueued;
            }
            crate::pause();
        }
    }

    /// Enqueues the pending ops. Those the device refused untouched stay pending, in order;
    /// those it processed anyway move to the stash. Skipped while the stash could not take a
    /// whole burst.
    #[inline]
    fn try_enqueue(&mut self) {
        let n = self.npending;
        if n == 0 || self.nstash + n > STASH {
            return;
        }
        // SAFETY: `pending[..n]` are prepared ops we own; the device takes ownership of the
        // first `sent`; this handle is the queue pair's unique user and the device is started.
        let sent = unsafe {
            sys::shim_rte_cryptodev_enqueue_burst(
                self.dev.id,
                self.qp,
                self.pending.as_mut_ptr(),
                n as u16,
            )
        };
        let sent = usize::from(sent).min(n);
        self.enqueued += sent as u32;
        let mut w = 0;
        for r in sent..n {
            let op = self.pending[r];
            // SAFETY: a refused op is ours again; only its status byte is read.
            let status = unsafe { (*op).__bindgen_anon_1.__bindgen_anon_1.status };
            if u32::from(status) == sys::RTE_CRYPTO_OP_STATUS_NOT_PROCESSED {
                self.pending[w] = op;
                w += 1;
            } else {
                // Processed during enqueue (crypto_openssl): complete it, never resubmit it.
                // Room is guaranteed by the check above.
                self.stash[self.nstash] = op;
                self.nstash += 1;
            }
        }
        self.npending = w;
    }

    /// Completes the stashed ops with their own status. Returns how many.
    #[inline]
    fn complete_stash(&mut self, done: &mut impl FnMut(Mbuf, CryptoStatus, u128)) -> usize {
        let total = self.nstash;
        while self.nstash > 0 {
            let k = self.nstash.min(BURST_SIZE);
            let mut ops = [ptr::null_mut::<sys::rte_crypto_op>(); BURST_SIZE];
            ops[..k].copy_from_slice(&self.stash[..k]);
            self.stash.copy_within(k..self.nstash, 0);
            self.nstash -= k;
            self.finish(&ops[..k], false, done);
        }
        total
    }

    /// Retires `ops` (at most a burst, all ours and no longer with the device), returns them to
    /// the pool and hands their packets to `done`, as [`CryptoStatus::QueueFull`] if `refused`.
    #[inline]
    fn finish(
        &mut self,
        ops: &[*mut sys::rte_crypto_op],
        refused: bool,
        done: &mut impl FnMut(Mbuf, CryptoStatus, u128),
    ) {
        debug_assert!(ops.len() <= BURST_SIZE);
        let mut c = Completions::new();
        for &op in ops {
            let (m, st, user) = self.retire(op);
            c.push(m, if refused { CryptoStatus::QueueFull } else { st }, user);
        }
        self.recycle(ops);
        c.deliver(done);
    }

    /// Takes back a finished (or refused) op's packet, status and user value and releases its
    /// session reference. The op itself is freed by the caller.
    #[inline]
    fn retire(&mut self, op: *mut sys::rte_crypto_op) -> (*mut sys::rte_mbuf, CryptoStatus, u128) {
        // SAFETY: `op` is one of our ops, prepared by `push` and returned by the device (or never
        // accepted), so the device no longer touches it; its private area holds an OpPriv.
        let (m, status, p) = unsafe {
            let sym = ptr::addr_of!((*op).__bindgen_anon_2).cast::<sys::rte_crypto_sym_op>();
            let p = op
                .cast::<u8>()
                .add(PRIV_OFFSET)
                .cast::<OpPriv>()
                .cast_const()
                .read();
            (
                (*sym).m_src,
                (*op).__bindgen_anon_1.__bindgen_anon_1.status,
                p,
            )
        };
        self.unpin(p.pin, p.sess);
        (
            m,
            CryptoStatus::from_op(status),
            u128::from(p.user[0]) | (u128::from(p.user[1]) << 64),
        )
    }

    /// A free op: from this queue's own list of retired ops, refilled a burst at a time from
    /// the pool (no pool call per packet). `None` when the pool is empty.
    #[inline]
    fn take_op(&mut self) -> Option<*mut sys::rte_crypto_op> {
        if self.nfree == 0 {
            for n in [BURST_SIZE, 1] {
                // SAFETY: room for `n` pointers; the pool holds symmetric ops; get_bulk takes all
                // `n` or none (returns 0 on success).
                let r = unsafe {
                    sys::shim_rte_mempool_get_bulk(
                        self.pool.ptr.as_ptr(),
                        self.free.as_mut_ptr().cast::<*mut c_void>(),
                        n as u32,
                    )
                };
                if r == 0 {
                    self.nfree = n;
                    break;
                }
            }
            if self.nfree == 0 {
                return None;
            }
        }
        self.nfree -= 1;
        Some(self.free[self.nfree])
    }

    /// Keeps retired ops for reuse; what does not fit goes back to the pool.
    #[inline]
    fn recycle(&mut self, ops: &[*mut sys::rte_crypto_op]) {
        let keep = ops.len().min(FREE_OPS - self.nfree);
        self.free[self.nfree..self.nfree + keep].copy_from_slice(&ops[..keep]);
        self.nfree += keep;
        let rest = &ops[keep..];
        if !rest.is_empty() {
            // SAFETY: `rest` are ops of our pool, retired and never touched again.
            unsafe {
                sys::shim_rte_mempool_put_bulk(
                    self.pool.ptr.as_ptr(),
                    rest.as_ptr().cast::<*mut c_void>(),
                    rest.len() as u32,
                )
            };
        }
    }

    /// Returns the ops kept for reuse to the pool.
    fn release_free_ops(&mut self) {
        let n = std::mem::take(&mut self.nfree);
        if n > 0 {
            // SAFETY: the first `n` entries are free ops of our pool that nothing references.
            unsafe {
                sys::shim_rte_mempool_put_bulk(
                    self.pool.ptr.as_ptr(),
                    self.free.as_ptr().cast::<*mut c_void>(),
                    n as u32,
                )
            };
        }
    }

    /// A session reference for one more op: a pin slot of this queue, or one owned by the op.
    #[inline(always)]
    fn pin(&mut self, s: &Arc<SessionInner>) -> (u32, *const SessionInner) {
        let raw = Arc::as_ptr(s);
        let matches = |p: &Pin| p.sess.as_ref().is_some_and(|h| Arc::as_ptr(h) == raw);
        let slot = if matches(&self.pins[self.last_pin]) {
            Some(self.last_pin)
        } else if let Some(i) = self.pins.iter().position(matches) {
            Some(i)
        } else if let Some(i) = self.pins.iter().position(|p| p.in_flight == 0) {
            // Replacing an idle pin may free its session (if nothing else holds it).
            self.pins[i].sess = Some(s.clone());
            Some(i)
        } else {
            None
        };
        match slot {
            Some(i) => {
                self.pins[i].in_flight += 1;
                self.last_pin = i;
                (i as u32, raw)
            }
            // Every pin is busy with other sessions: the op holds its own reference.
            None => (PIN_OWNED, Arc::into_raw(s.clone())),
        }
    }

    #[inline]
    fn unpin(&mut self, pin: u32, sess: *const SessionInner) {
        if pin == PIN_OWNED {
            // SAFETY: `sess` came from `Arc::into_raw` in `pin` for exactly this op, which is
            // retired once.
            drop(unsafe { Arc::from_raw(sess) });
        } else if let Some(p) = self.pins.get_mut(pin as usize) {
            p.in_flight = p.in_flight.saturating_sub(1);
        }
    }

    /// Lets go of the queue's references to sessions no operation in flight uses, whoever else
    /// holds them. For a caller that stopped using some sessions and wants whoever holds their
    /// last handle (not this queue) to free them; the queue takes a reference again at the next
    /// push that needs one.
    pub fn release_idle_sessions(&mut self) {
        for p in &mut self.pins {
            if p.in_flight == 0 {
                p.sess = None;
            }
        }
    }

    /// Lets go of idle pins whose session nobody else holds (so that it is freed).
    #[inline]
    fn unpin_idle(&mut self) {
        for p in &mut self.pins {
            if p.in_flight == 0 && p.sess.as_ref().is_some_and(|s| Arc::strong_count(s) == 1) {
                p.sess = None;
            }
        }
    }
}

impl Drop for CryptoQueue {
    fn drop(&mut self) {
        let left = self.drain(DROP_DRAIN, drop_completion);
        if left > 0 {
            // The device still holds operations that point at packets, ops of our pool and
            // sessions: keep all of them (and the device, never closed) alive for good rather
            // than free memory it may still write. Eal::cleanup then refuses.
            for p in &mut self.pins {
                std::mem::forget(p.sess.take());
            }
            self.pool.leak = true;
            std::mem::forget(self.dev.clone());
        }
        // Release the session references now (the pool and device fields drop after this).
        for p in &mut self.pins {
            p.sess = None;
        }
        self.release_free_ops();
    }
}

fn drop_completion(m: Mbuf, _: CryptoStatus, _: u128) {
    drop(m);
}
