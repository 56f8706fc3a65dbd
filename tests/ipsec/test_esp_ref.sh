#!/usr/bin/env bash
# Self-test of the ESP reference tests/ipsec/esp_ref.py (scapy) :
#  - round trip: a capture of IPv4 and IPv6 frames (with an ARP frame that encrypt skips and a
#    frame with Ethernet trailer padding) through encrypt then decrypt, for every algorithm,
#    without ESN and with ESN across the 2^32 boundary: every inner packet back byte for byte,
#    consecutive sequence numbers, status ok;
#  - negative cases: wrong key, wrong SPI, a flipped ciphertext bit, ESN high bits expected but
#    not used, bad padding with a valid tag;
#  - known answers: one ESP frame per algorithm (with and without ESN, IPv4 and IPv6 inner)
#    computed independently with python3-cryptography (esp_check.py kat), compared byte for
#    byte with esp_ref's output, and decrypted by esp_ref.
# Needs Debian's python3-scapy and python3-cryptography (/usr/bin/python3).
# Usage: tests/ipsec/test_esp_ref.sh        (prints "N passed, N failed"; exit 1 on failure)
set -uo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-/usr/bin/python3}
REF="$PWD/esp_ref.py"
CHK="$PWD/esp_check.py"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1${2:+: $2}"; }

"$PY" "$CHK" gen-inner "$T/inner.pcap"

GCM128=2b7e151628aed2a6abf7158809cf4f3cdeadbeef
GCM256=603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4deadbeef
CBC128=2b7e151628aed2a6abf7158809cf4f3c
CBC256=603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4
AUTH=0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20
sa_args() { # $1 alg
  case "$1" in
    aes-gcm-128) echo "--alg aes-gcm-128 --key 0x$GCM128" ;;
    aes-gcm-256) echo "--alg aes-gcm-256 --key $GCM256" ;;
    aes-cbc-128-hmac-sha256) echo "--alg aes-cbc-128-hmac-sha256 --key $CBC128 --auth-key $AUTH" ;;
    aes-cbc-256-hmac-sha256) echo "--alg aes-cbc-256-hmac-sha256 --key $CBC256 --auth-key $AUTH" ;;
  esac
}
TUN="--spi 0x1000 --src 192.0.2.1 --dst 192.0.2.2"

for alg in aes-gcm-128 aes-gcm-256 aes-cbc-128-hmac-sha256 aes-cbc-256-hmac-sha256; do
  # shellcheck disable=SC2046
  for mode in plain esn; do
    if [ $mode = esn ]; then seq=0xfffffff0; extra="--esn --seq-start $seq"; else seq=1; extra=""; fi
    name="round trip $alg $mode"
    if "$PY" "$REF" encrypt --in "$T/inner.pcap" --out "$T/esp.pcap" $TUN $(sa_args $alg) $extra 2>"$T/err" &&
       "$PY" "$REF" decrypt --in "$T/esp.pcap" --out "$T/dec.pcap" $TUN $(sa_args $alg) $extra --json "$T/r.json" 2>>"$T/err"; then
      if msg=$("$PY" "$CHK" compare "$T/inner.pcap" "$T/dec.pcap" "$T/r.json" "$seq"); then ok "$name"; else bad "$name" "$msg"; fi
    else
      bad "$name" "$(tail -1 "$T/err")"
    fi
  done
done

# Negative cases on a GCM and a CBC capture.
neg() { # $1 name, $2 expected status, $3 encrypt args, $4 decrypt args
  if ! "$PY" "$REF" encrypt --in "$T/inner.pcap" --out "$T/n.pcap" $3 2>"$T/err"; then bad "$1" "encrypt failed"; return; fi
  [ -n "${CORRUPT:-}" ] && "$PY" - "$T/n.pcap" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
# flip one bit in the last byte before the ICV of every frame: walk the records
off = 24
while off + 16 <= len(b):
    n = int.from_bytes(b[off + 8:off + 12], "little")
    b[off + 16 + n - 17] ^= 0x01
    off += 16 + n
open(sys.argv[1], "wb").write(b)
PY
  "$PY" "$REF" decrypt --in "$T/n.pcap" --out "$T/nd.pcap" $4 --json "$T/nr.json" 2>"$T/err" || { bad "$1" "decrypt exit $?"; return; }
  if msg=$("$PY" "$CHK" statuses "$T/nr.json" "$2"); then ok "$1"; else bad "$1" "$msg"; fi
}
G="$TUN $(sa_args aes-gcm-128)"
C="$TUN $(sa_args aes-cbc-128-hmac-sha256)"
neg "gcm wrong key -> icv_failed" icv_failed "$G" "$TUN --alg aes-gcm-128 --key 00${GCM128:2}"
neg "gcm wrong salt -> icv_failed" icv_failed "$G" "$TUN --alg aes-gcm-128 --key ${GCM128:0:38}00"
neg "cbc wrong auth key -> icv_failed" icv_failed "$C" "$TUN --alg aes-cbc-128-hmac-sha256 --key $CBC128 --auth-key 0x${AUTH:4}00"
neg "wrong spi -> spi_mismatch" spi_mismatch "$G" "--spi 0x1001 --src 192.0.2.1 --dst 192.0.2.2 $(sa_args aes-gcm-128)"
neg "wrong tunnel address -> addr_mismatch" addr_mismatch "$G" "--spi 0x1000 --src 192.0.2.9 --dst 192.0.2.2 $(sa_args aes-gcm-128)"
neg "gcm esn high bits not used by receiver -> icv_failed" icv_failed "$G --esn --seq-start 0x500000001" "$G"
neg "cbc esn high bits not used by receiver -> icv_failed" icv_failed "$C --esn --seq-start 0x500000001" "$C"
neg "cbc receiver expects esn, sender used none -> icv_failed" icv_failed "$C --seq-start 0x10" "$C --esn --seq-start 0x300000000"
CORRUPT=1 neg "gcm flipped ciphertext bit -> icv_failed" icv_failed "$G" "$G"
CORRUPT=1 neg "cbc flipped ciphertext bit -> icv_failed" icv_failed "$C" "$C"
"$PY" "$CHK" gen-inner "$T/x.pcap" && "$PY" "$REF" decrypt --in "$T/x.pcap" --out "$T/xd.pcap" $G --json "$T/xr.json" 2>/dev/null
if msg=$("$PY" "$CHK" statuses "$T/xr.json" not_esp); then ok "cleartext frames -> not_esp"; else bad "cleartext frames -> not_esp" "$msg"; fi
"$PY" "$CHK" badpad "$T/bp.pcap"
"$PY" "$REF" decrypt --in "$T/bp.pcap" --out "$T/bpd.pcap" --spi 0x1000 --src 192.0.2.1 --dst 192.0.2.2 \
  --alg aes-gcm-128 --key 000102030405060708090a0b0c0d0e0fa0a1a2a3 --json "$T/bpr.json" 2>/dev/null
if msg=$("$PY" "$CHK" statuses "$T/bpr.json" pad_invalid); then ok "padding 0,0,0 with a valid tag -> pad_invalid"; else bad "bad padding" "$msg"; fi

# Known answers against python3-cryptography directly.
while read -r line; do
  case "$line" in
    kat*": encrypt ok, decrypt ok") ok "$line" ;;
    kat*) bad "$line" ;;
    *) echo "     $line" ;;
  esac
done < <("$PY" "$CHK" kat "$REF" 2>&1)

echo "esp_ref: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
