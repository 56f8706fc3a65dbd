#!/usr/bin/env bash
# README command 2: install what is missing, then every check CI runs: formatting, lints (warnings
# are errors), unit tests, real-DPDK tests and end-to-end tests on net_pcap virtual devices.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --document-private-items
echo "== the ESP reference the tunnel tests trust (scapy): round trips and known answers"
bash tests/ipsec/test_esp_ref.sh
echo "== deployment files (Prometheus, systemd, setup-host dry run, Kubernetes)"
bash tests/deploy_checks.sh
echo "== cargo test (unit, real DPDK, end-to-end)"
# End-to-end tests each start a DPDK process polling a core; two at a time fit two cores.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --workspace -- --test-threads=2 2>&1 | tee "$log"
# One closing line with the totals over every test binary (the last runner cargo prints is a
# doc-test run that may have no test of its own).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
