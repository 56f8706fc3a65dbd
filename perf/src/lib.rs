//! Per-stage micro-benchmarks live in `benches/`; this library is empty. The whole-appliance
//! benchmark against dpdk-testpmd is `run.sh`; results and commands are in README.md.
#![forbid(unsafe_code)]
