#!/usr/bin/env bash
# Build DPDK's ipsec-secgw example (the system DPDK 22.11's sources, Debian package dpdk-doc)
# with perf/ipsec/secgw-vdev.patch, so that it starts on virtual devices (net_pcap, net_null).
#
# Usage: perf/ipsec/build-secgw.sh [BUILD_DIR]     (default: target/ipsec-secgw, from the repo root)
# Prints the path of the binary (BUILD_DIR/bin/ipsec-secgw) on stdout; build logs go to stderr.
#
# Idempotent: a stamp holds the SHA-256 of the example's sources, the shared headers
# (examples/common), the patch, this script and `pkg-config --modversion libdpdk`; when it
# matches and the binary is there, nothing is rebuilt. It builds with the example's own
# Makefile (pkg-config libdpdk, shared libraries, -O3): one compiler run, ~10 s.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${1:-$ROOT/target/ipsec-secgw}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
EXAMPLES=${DPDK_EXAMPLES:-/usr/share/dpdk/examples}
SRC="$EXAMPLES/ipsec-secgw"
PATCH="$HERE/secgw-vdev.patch"

if { [ ! -d "$SRC" ] || [ ! -d "$EXAMPLES/common" ]; } && [ -z "${DPDK_EXAMPLES:-}" ] &&
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "build-secgw: installing dpdk-doc (the example sources)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q dpdk-doc >&2
fi
if [ ! -d "$SRC" ] || [ ! -d "$EXAMPLES/common" ]; then
  echo "build-secgw: $SRC not found (Debian: apt-get install dpdk-doc)" >&2
  exit 1
fi
pkg-config --exists libdpdk || { echo "build-secgw: pkg-config libdpdk not found (apt-get install libdpdk-dev)" >&2; exit 1; }
for t in make cc patch sha256sum; do
  command -v "$t" >/dev/null || { echo "build-secgw: $t not found" >&2; exit 1; }
done

stamp=$( {
  (cd "$EXAMPLES" && find ipsec-secgw common -type f -print0 | sort -z | xargs -0 sha256sum)
  sha256sum <"$PATCH"
  sha256sum <"$HERE/build-secgw.sh"
  pkg-config --modversion libdpdk
} | sha256sum | cut -d' ' -f1)

BIN="$OUT/bin/ipsec-secgw"
if [ -x "$BIN" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "build-secgw: up to date ($BIN)" >&2
  echo "$BIN"
  exit 0
fi

rm -rf "$OUT/src" "$OUT/bin" "$OUT/stamp"
mkdir -p "$OUT/src" "$OUT/bin"
cp -r "$SRC" "$EXAMPLES/common" "$OUT/src/"
chmod -R u+w "$OUT/src"
patch -p1 -d "$OUT/src" --no-backup-if-mismatch <"$PATCH" >&2
make -C "$OUT/src/ipsec-secgw" shared >&2
cp "$OUT/src/ipsec-secgw/build/ipsec-secgw-shared" "$BIN"
echo "$stamp" >"$OUT/stamp"
echo "build-secgw: built $BIN (DPDK $(pkg-config --modversion libdpdk), patched with $(basename "$PATCH"))" >&2
echo "$BIN"
