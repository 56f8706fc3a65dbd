//! A minimal FFI to the system libpcap (1.10): compile pcap-filter expressions to classic BPF
//! for Ethernet, and run libpcap's own `bpf_filter` interpreter over a byte slice. The
//! compiler is how operators write filters; the interpreter is the reference the appliance's
//! engines are tested against.
//!
//! Why not the `pcap` crate: it runs filters only inside a capture handle, never on an
//! arbitrary program and buffer, which differential tests need. The handful of functions used
//! here are declared below with `#[repr(C)]` mirrors of `pcap/bpf.h`'s structures.
//!
//! Thread safety: libpcap documents `pcap_compile` as usable from several threads since
//! 1.8.0. Compiling is a control-path operation, so a process-wide mutex serialises it anyway:
//! that keeps the wrapper correct even against an older or differently built libpcap and
//! costs nothing that matters. `bpf_filter` is a pure function of its arguments and runs
//! without the lock.
use pipelines::cbpf::{Insn, Program};
use std::ffi::{c_char, c_int, c_uint, c_ushort, CString};
use std::fmt;
use std::sync::Mutex;

/// `DLT_EN10MB`: Ethernet link type.
const DLT_EN10MB: c_int = 1;
/// `PCAP_NETMASK_UNKNOWN`: no netmask; only `ip broadcast` needs one.
const PCAP_NETMASK_UNKNOWN: u32 = 0xffff_ffff;

/// `struct bpf_insn` from `pcap/bpf.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct BpfInsn {
    code: c_ushort,
    jt: u8,
    jf: u8,
    k: u32,
}

/// `struct bpf_program` from `pcap/bpf.h`.
#[repr(C)]
#[derive(Debug)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut BpfInsn,
}

/// `pcap_t`, only ever handled by pointer.
#[repr(C)]
struct PcapT {
    _opaque: [u8; 0],
}

#[link(name = "pcap")]
extern "C" {
    fn pcap_open_dead(linktype: c_int, snaplen: c_int) -> *mut PcapT;
    fn pcap_compile(
        p: *mut PcapT,
        fp: *mut BpfProgram,
        expr: *const c_char,
        optimize: c_int,
        netmask: u32,
    ) -> c_int;
    fn pcap_geterr(p: *mut PcapT) -> *mut c_char;
    fn pcap_freecode(fp: *mut BpfProgram);
    fn pcap_close(p: *mut PcapT);
    fn bpf_filter(pc: *const BpfInsn, pkt: *const u8, wirelen: c_uint, buflen: c_uint) -> c_uint;
}

// Layout checks against pcap/bpf.h (the C compiler's sizes on every platform DPDK supports).
const _: () = assert!(std::mem::size_of::<BpfInsn>() == 8);
const _: () = assert!(std::mem::size_of::<BpfProgram>() == 2 * std::mem::size_of::<usize>());

static COMPILE_LOCK: Mutex<()> = Mutex::new(());

/// Why an expression did not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapError {
    /// libpcap's message (`pcap_geterr`), e.g. "syntax error".
    pub message: String,
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pcap filter: {}", self.message)
    }
}

impl std::error::Error for PcapError {}

/// A dead capture handle (`pcap_open_dead`), closed on drop.
struct DeadHandle(*mut PcapT);

impl Drop for DeadHandle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from pcap_open_dead, is non-null and closed exactly once.
        unsafe { pcap_close(self.0) }
    }
}

/// Compiles a pcap-filter expression (`man 7 pcap-filter`) for Ethernet (`DLT_EN10MB`), as
/// `tcpdump -dd` would with the given snapshot length (the value a matching packet returns)
/// and optimiser setting. No netmask is known, so `ip broadcast` is an error.
pub fn compile(expr: &str, snaplen: u32, optimize: bool) -> Result<Vec<Insn>, PcapError> {
    let cexpr = CString::new(expr).map_err(|_| PcapError {
        message: "the expression contains a NUL byte".into(),
    })?;
    // u32::MAX passes as -1: libpcap then returns 0xffffffff for an accepted packet, which
    // cls_bpf reads as "match with the filter's class id". Other values beyond c_int are errors.
    let snaplen = if snaplen == u32::MAX {
        -1
    } else {
        c_int::try_from(snaplen).map_err(|_| PcapError {
            message: format!("snapshot length {snaplen} is too large"),
        })?
    };
    // The lock only serialises; a poisoned lock (a panic elsewhere) leaves nothing to repair.
    let _guard = COMPILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: plain values; returns a new handle or null.
    let p = unsafe { pcap_open_dead(DLT_EN10MB, snaplen) };
    if p.is_null() {
        return Err(PcapError {
            message: "pcap_open_dead failed".into(),
        });
    }
    let handle = DeadHandle(p);
    let mut prog = BpfProgram {
        bf_len: 0,
        bf_insns: std::ptr::null_mut(),
    };
    // SAFETY: `handle.0` is a live pcap handle, `prog` a writable bpf_program, `cexpr` a
    // NUL-terminated string that outlives the call.
    let rc = unsafe {
        pcap_compile(
            handle.0,
            &mut prog,
            cexpr.as_ptr(),
            c_int::from(optimize),
            PCAP_NETMASK_UNKNOWN,
        )
    };
    if rc != 0 {
        // SAFETY: pcap_geterr returns the handle's NUL-terminated error buffer, valid until the
        // handle is used again or closed; it is copied right here.
        let message = unsafe { crate::error::cstr_to_string(pcap_geterr(handle.0)) };
        return Err(PcapError { message });
    }
    let insns = if prog.bf_insns.is_null() || prog.bf_len == 0 {
        Vec::new()
    } else {
        // SAFETY: on success libpcap filled `prog` with `bf_len` instructions it allocated;
        // they stay valid until pcap_freecode below.
        unsafe { std::slice::from_raw_parts(prog.bf_insns, prog.bf_len as usize) }
            .iter()
            .map(|i| Insn::new(i.code, i.jt, i.jf, i.k))
            .collect()
    };
    // SAFETY: `prog` was filled by a successful pcap_compile and is freed exactly once.
    unsafe { pcap_freecode(&mut prog) };
    Ok(insns)
}

/// Runs libpcap's own interpreter (`bpf_filter`) over `data` (the captured bytes; `buflen` is
/// `data.len()`) with wire length `wirelen`, and returns the program's result.
///
/// `bpf_filter` trusts its program (libpcap 1.10 jumps without bounds checks, reads scratch
/// memory uninitialised and aborts on unknown opcodes), so `insns` is first checked with the
/// appliance's loader ([`Program::load`], Linux's rules), which is stricter than anything
/// `bpf_filter` needs. Use [`filter_loaded`] to skip the copy and the check.
///
/// # Panics
/// If `insns` is not a program [`Program::load`] accepts, or `data` is 4 GiB or longer.
pub fn filter(insns: &[Insn], data: &[u8], wirelen: u32) -> u32 {
    let prog = Program::load(insns.to_vec())
        .unwrap_or_else(|e| panic!("pcap::filter needs a valid program: {e}"));
    filter_loaded(&prog, data, wirelen)
}

/// [`filter`] on an already loaded program.
///
/// # Panics
/// If `data` is 4 GiB or longer.
pub fn filter_loaded(prog: &Program, data: &[u8], wirelen: u32) -> u32 {
    let buflen = c_uint::try_from(data.len()).expect("a frame shorter than 4 GiB");
    let insns: Vec<BpfInsn> = prog
        .insns()
        .iter()
        .map(|i| BpfInsn {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    // SAFETY: `insns` is a program the loader accepted: known opcodes only, every jump forward
    // and inside the program, the last instruction a return, scratch slots in range and
    // written before being read, no constant division by zero or shift by 32 or more. So
    // bpf_filter reads only `insns` and, bounded by `buflen`, `data`, which both outlive the
    // call. An empty `data` is a dangling but non-null pointer that is never dereferenced.
    unsafe { bpf_filter(insns.as_ptr(), data.as_ptr(), wirelen, buflen) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_ip_like_tcpdump() {
        // tcpdump -dd ip (unoptimised and optimised are the same here)
        let want = vec![
            Insn::new(0x28, 0, 0, 12),
            Insn::new(0x15, 0, 1, 0x0800),
            Insn::new(0x06, 0, 0, 262_144),
            Insn::new(0x06, 0, 0, 0),
        ];
        assert_eq!(compile("ip", 262_144, true).unwrap(), want);
        assert_eq!(compile("ip", 262_144, false).unwrap(), want);
        assert_eq!(compile("ip", 96, true).unwrap()[2].k, 96);
    }

    #[test]
    fn snaplen_u32_max_makes_accept_return_minus_one() {
        let p = compile("ip", u32::MAX, true).unwrap();
        assert_eq!(p[2], Insn::new(0x06, 0, 0, u32::MAX), "{p:?}");
        assert!(compile("ip", 1 << 31, true).is_err());
    }

    #[test]
    fn errors_carry_libpcap_text() {
        let e = compile("tcp port", 65535, true).unwrap_err();
        assert!(e.message.contains("syntax error"), "{e}");
        let e = compile("ip broadcast", 65535, true).unwrap_err();
        assert!(e.message.contains("netmask"), "{e}");
        let e = compile("ip host 300.1.1.1", 65535, true).unwrap_err();
        assert!(!e.message.is_empty(), "{e}");
        assert!(compile("ip\0", 65535, true).is_err());
    }

    #[test]
    fn filter_runs_bpf_filter() {
        let prog = compile("udp dst port 53", 65535, true).unwrap();
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 17;
        f[36..38].copy_from_slice(&53u16.to_be_bytes());
        assert_eq!(filter(&prog, &f, 42), 65535);
        f[37] = 54;
        assert_eq!(filter(&prog, &f, 42), 0);
        // Cut before the port: the load misses and the program returns 0.
        f[37] = 53;
        assert_eq!(filter(&prog, &f[..37], 42), 0);
        assert_eq!(filter(&prog, &[], 0), 0);
        // `len` reads the wire length, not the buffer length.
        let len = compile("len >= 100", 7, false).unwrap();
        assert_eq!(filter(&len, &f, 100), 7);
        assert_eq!(filter(&len, &f, 99), 0);
    }

    #[test]
    #[should_panic(expected = "needs a valid program")]
    fn filter_refuses_unchecked_programs() {
        filter(
            &[Insn::new(0x05, 0, 0, 7), Insn::new(0x06, 0, 0, 0)],
            &[],
            0,
        );
    }

    #[test]
    fn compiles_from_many_threads() {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    for port in 0..50u32 {
                        let expr = format!("tcp port {}", i * 1000 + port);
                        assert!(compile(&expr, 65535, port % 2 == 0).unwrap().len() > 4);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
