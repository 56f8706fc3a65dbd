//! Finds the system DPDK through pkg-config (`libdpdk`, 22.11.x), generates bindings with bindgen
//! and compiles the shim for DPDK's static-inline functions with DPDK's own cflags.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const DPDK_MIN: &str = "22.11";
const DPDK_MAX_EXCLUSIVE: &str = "22.12";

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    // Link flags: every library libdpdk.pc names, nothing hand-listed.
    let lib = pkg_config::Config::new()
        .range_version(DPDK_MIN..DPDK_MAX_EXCLUSIVE)
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!(
                "DPDK {DPDK_MIN}.x not found through pkg-config ({e}).\n\
                 On Debian 12: apt-get install dpdk-dev libdpdk-dev pkg-config"
            )
        });

    // Compile flags: the full `--cflags` (it carries `-include rte_config.h` and the -march
    // baseline DPDK was built for, which pkg_config::Library does not expose).
    let out = Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("run pkg-config --cflags libdpdk");
    assert!(out.status.success(), "pkg-config --cflags libdpdk failed");
    let cflags: Vec<String> = String::from_utf8(out.stdout)
        .expect("pkg-config output is UTF-8")
        .split_whitespace()
        .map(str::to_owned)
        .collect();

    let mut cc = cc::Build::new();
    cc.file("shim.c").include(".").opt_level(3).warnings(true);
    for f in &cflags {
        cc.flag(f);
    }
    cc.compile("pmd_glue_shim");

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(cflags.iter().filter(|f| !f.starts_with("-march")))
        .clang_arg("-I.")
        // rte_bpf_convert (classic BPF -> eBPF) is still experimental in 22.11; without this its
        // declaration carries a deprecation attribute.
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .allowlist_function("rte_.*|shim_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*|shim_.*")
        // eBPF opcodes and registers (DPDK's bpf_def.h), for rewriting converted programs.
        .allowlist_var("EBPF_.*|BPF_(LD|LDX|ST|STX|ALU|JMP|RET|W|H|B|IMM|ABS|IND|MEM|K|X|ADD|SUB|MUL|DIV|OR|AND|LSH|RSH|NEG|MOD|XOR|JA|JEQ|JGT|JGE|JSET)")
        // DPDK packs some structs that contain aligned members; Rust cannot express that,
        // so they stay opaque (we never touch their fields).
        .opaque_type("rte_arp_hdr|rte_l2tpv2_combined_msg_hdr|rte_gtp_psc_generic_hdr")
        .derive_default(true)
        .derive_debug(false)
        .layout_tests(true)
        .generate_comments(false)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen over the DPDK headers");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out_dir.join("bindings.rs"))
        .expect("write bindings.rs");

    // Tell dependents (through DEP_DPDK_*) which DPDK they were built against.
    println!("cargo:version={}", lib.version);
}
