#!/usr/bin/env bash
# Installs what building, running and testing the appliance needs on Debian 12, and only what is
# missing. Safe to run repeatedly. Used by deploy/demo.sh, tests/run.sh and .ci/run.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config clang libclang-dev   # the -sys crate: C shim (cc) and bindgen
  dpdk dpdk-dev libdpdk-dev                       # DPDK 22.11: libraries, PMDs, dpdk-testpmd
  libpcap-dev tcpdump                             # net_pcap captures; tcpdump reads our outputs in tests
  prometheus                                      # promtool (exposition checks) and a real Prometheus
  valgrind curl                                   # perf/: callgrind instructions per packet; metrics scrapes
  python3-scapy                                   # pipelines/tests/flow_oracle.py: independent flow-key oracle; tests/ipsec/esp_ref.py: independent ESP
  python3-cryptography                            # scapy's IPsec ciphers (tests/ipsec/esp_ref.py)
  systemd                                         # systemd-analyze verify of deploy/systemd/appliance.service
  python3-venv                                    # tests/deploy_checks.sh: a venv for kubernetes-validate (PyPI)
  mmdebstrap buildah                              # deploy/container/build.sh: the image, from deb.debian.org, no base image
  podman runc                                     # tests/container_test.sh: runs the image (runc: hosts with hybrid cgroups)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust: Debian 12's rustc is too old for the dependencies; rustup's stable is expected.
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  # Debian 12's cargo (1.63) is too old; install the stable toolchain with rustup.
  echo "install-deps: cargo not found; installing Rust stable with rustup" >&2
  if curl -sSf --proto '=https' --tlsv1.2 https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt >&2; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "install-deps: could not install Rust. Install Rust >= 1.89 with rustup (https://rustup.rs), then re-run." >&2
    exit 1
  fi
fi
ver=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n1.89.0\n' "$ver" | sort -V | head -1)" != "1.89.0" ]; then
  echo "install-deps: rustc $ver is too old; Rust >= 1.89 is required (rustup update stable)." >&2
  exit 1
fi
pkg-config --exists 'libdpdk >= 22.11' || { echo "install-deps: libdpdk 22.11 not visible to pkg-config" >&2; exit 1; }
