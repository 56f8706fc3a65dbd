#!/usr/bin/env bash
# README command 1: install what is missing, build, and run the appliance on its embedded default
# (two net_pcap virtual ports fed by generated traffic; no NIC, no hugepages needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p appliance
exec target/release/appliance run "$@"
