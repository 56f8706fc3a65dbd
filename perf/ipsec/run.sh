#!/usr/bin/env bash
# Route-based IPsec (VTI) benchmark peers: DPDK's ipsec-secgw and the raw cryptodev ceiling
# (dpdk-test-crypto-perf), with a hook for the appliance. See perf/ipsec/README.md.
#
# Scenario: one worker lcore (lcore 1; lcore 0 is the main lcore), AES-GCM-128 ESP tunnel mode
# over IPv4, lookaside crypto on crypto_aesni_mb.
#   encrypt: lan = net_pcap, infinite_rx over inner Ethernet/IPv4/UDP frames (256 flows), every
#            frame into the tunnel (SA 0x1000, 192.0.2.1 -> 192.0.2.2), out of wan = net_null.
#   decrypt: wan = net_pcap, infinite_rx over ESP frames for SA 0x2000 (192.0.2.2 -> 192.0.2.1,
#            made by tests/ipsec/esp_ref.py), decrypted, out of lan = net_null.
# Frame sizes: 64 and 1400 bytes (the inner Ethernet frame, no FCS).
#
# Throughput: the median of per-second rates over --seconds after --warmup, read from the
# process's ethdev counters over the telemetry socket (perf/ipsec/ethdev_rate.py): packets the
# output port sent. Gbps = Mpps x inner frame bytes x 8 (the inner frame on the lan side, the
# same bytes in both directions). Ceiling: dpdk-test-crypto-perf throughput test, AES-GCM-128
# on crypto_aesni_mb, one lcore, buffers the size of the ESP plaintext (inner IP packet + ESP
# trailer: 52 bytes for 64-byte frames, 1388 bytes for 1400-byte frames), AAD 8, ICV 16.
#
# Before measuring, a correctness check in both directions (finite captures, tx_pcap):
# ipsec-secgw's ESP output decrypts under the scapy reference with the right inner packets,
# and the reference's ESP frames come out of ipsec-secgw as the original inner packets
# (ipsec-secgw forwards as a router: the inner TTL is one less).
#
# ipsec-secgw runs in both of its code paths (--modes): "legacy" (its own ESP code, the
# default of the example) and "lib" (-l: librte_ipsec, rte_ipsec_pkt_crypto_prepare/process).
#
# --callgrind: also instructions per packet of ipsec-secgw's worker: valgrind --tool=callgrind
# collecting inside ipsec_launch_one_lcore only (start-up and the main lcore not counted), over
# --seconds + 15 s (valgrind's start-up included), divided by the packets received, counted in
# the same profile as 32 x the calls of process_pkts (one per receive burst with packets;
# infinite_rx always fills the burst of 32). Counter reads over telemetry are no use here:
# under valgrind the threads are serialised and a read lands seconds late. Under valgrind,
# intel-ipsec-mb sees no AVX-512/VAES and runs its AVX2 code (submit_job_nocheck_avx2_t1), so
# the crypto share is that of the AVX2 path, not of the native AVX-512 one.
#
# Usage: perf/ipsec/run.sh [--seconds N] [--rounds R] [--warmup W] [--sizes "64 1400"]
#                          [--modes "legacy lib"] [--no-verify] [--no-crypto-perf] [--no-appliance]
#                          [--callgrind] [--wait-quiet S]
# --wait-quiet S: before each measurement wait up to S seconds for both CPUs to be at least
# 90% idle over a second (this VM is shared with builds). The others% column: CPU time that
# processes other than ipsec-secgw took during the measured seconds, in % of one CPU (the
# sampler itself is a few %); ipsec-secgw occupies both CPUs (its main lcore spins), so
# anything much above that is a disturbed measurement.
# Environment: APPLIANCE=path to the appliance binary (default target/release/appliance; this
# script never builds it), PYTHON (default /usr/bin/python3: Debian's scapy).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SECS=6
ROUNDS=3
WARMUP=2
SIZES="64 1400"
MODES="legacy lib"
VERIFY=1
CRYPTO_PERF=1
APPLIANCE_HOOK=1
CALLGRIND=0
WAIT_QUIET=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --no-verify) VERIFY=0; shift ;;
    --no-crypto-perf) CRYPTO_PERF=0; shift ;;
    --no-appliance) APPLIANCE_HOOK=0; shift ;;
    --callgrind) CALLGRIND=1; shift ;;
    --wait-quiet) WAIT_QUIET=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--rounds R] [--warmup W] [--sizes LIST] [--modes \"legacy lib\"] [--no-verify] [--no-crypto-perf] [--no-appliance] [--callgrind] [--wait-quiet S]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-/usr/bin/python3}
APP=${APPLIANCE:-$ROOT/target/release/appliance}
HERE=$ROOT/perf/ipsec
ESP_REF=$ROOT/tests/ipsec/esp_ref.py
ESP_CHECK=$ROOT/tests/ipsec/esp_check.py
CFG=$HERE/secgw.cfg
SECGW=$(bash "$HERE/build-secgw.sh")
WORK=$(mktemp -d)
cleanup() {
  rm -rf "$WORK"
  rm -rf /var/run/dpdk/ipsecperf-$$-*  # the EAL runtime dirs of this run's processes
}
trap cleanup EXIT
MBUFS=16383
EAL="--no-huge -m 1024 --no-pci --no-shconf --log-level=error -l 0-1"
SECGW_APP_ARGS=(-p 0x3 -u 0x2 -f "$CFG" --config "(0,0,1),(1,0,1)" -s "$MBUFS")
mode_args() { [ "$1" = lib ] && echo "-l" || true; }
mode_name() { [ "$1" = lib ] && echo "secgw-lib" || echo "secgw"; }

# The SAs (as in secgw.cfg): key || 4-byte salt.
SPI_OUT=0x1000
KEY_OUT=2b7e151628aed2a6abf7158809cf4f3c01020304
SPI_IN=0x2000
KEY_IN=603deb1015ca71be2b73aef0857d77810a0b0c0d
LOCAL=192.0.2.1
REMOTE=192.0.2.2
grep -q "aead_key 2b:7e:15:16:28:ae:d2:a6:ab:f7:15:88:09:cf:4f:3c:01:02:03:04" "$CFG" &&
  grep -q "aead_key 60:3d:eb:10:15:ca:71:be:2b:73:ae:f0:85:7d:77:81:0a:0b:0c:0d" "$CFG" ||
  { echo "run.sh: the keys in $CFG differ from KEY_OUT/KEY_IN" >&2; exit 1; }

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
gbps() { awk -v m="$1" -v s="$2" 'BEGIN { if (m ~ /^[0-9.]+$/) printf "%.3f", m * s * 8 / 1000; else print "-" }'; }
new_prefix() { echo "ipsecperf-$$-$RANDOM"; }

# --- inputs ----------------------------------------------------------------------------------
gen_inputs() { # $1 size, $2 count
  "$PY" "$HERE/gen_frames.py" --out "$WORK/inner-out-$1.pcap" --size "$1" --count "$2" --dir out
  "$PY" "$HERE/gen_frames.py" --out "$WORK/inner-in-$1.pcap" --size "$1" --count "$2" --dir in
  "$PY" "$ESP_REF" encrypt --in "$WORK/inner-in-$1.pcap" --out "$WORK/esp-in-$1.pcap" \
    --spi "$SPI_IN" --src "$REMOTE" --dst "$LOCAL" --alg aes-gcm-128 --key "$KEY_IN" \
    --src-mac 02:00:00:00:00:02 --dst-mac 02:00:00:00:00:01 2>/dev/null
}
"$PY" -c "import struct,sys; open(sys.argv[1],'wb').write(struct.pack('<IHHiIII',0xA1B2C3D4,2,4,0,0,65535,1))" "$WORK/empty.pcap"

# --- correctness check -----------------------------------------------------------------------
# The legacy path forwards the inner packet as a router (TTL one less); librte_ipsec does not.
verify() { # $1 size, $2 mode
  local d="$WORK/verify-$1-$2" p ttl_dec=1
  [ "$2" = lib ] && ttl_dec=0
  mkdir -p "$d"
  "$PY" "$HERE/gen_frames.py" --out "$d/inner-out.pcap" --size "$1" --count 256 --dir out
  "$PY" "$HERE/gen_frames.py" --out "$d/inner-in.pcap" --size "$1" --count 256 --dir in
  "$PY" "$ESP_REF" encrypt --in "$d/inner-in.pcap" --out "$d/esp-in.pcap" --spi "$SPI_IN" \
    --src "$REMOTE" --dst "$LOCAL" --alg aes-gcm-128 --key "$KEY_IN" \
    --src-mac 02:00:00:00:00:02 --dst-mac 02:00:00:00:00:01 2>/dev/null
  p=$(new_prefix)
  timeout -s INT 4 "$SECGW" $EAL --file-prefix "$p" --vdev "net_pcap0,rx_pcap=$d/inner-out.pcap" \
    --vdev "net_pcap1,rx_pcap=$WORK/empty.pcap,tx_pcap=$d/esp-out.pcap" --vdev crypto_aesni_mb0 -- \
    "${SECGW_APP_ARGS[@]}" $(mode_args "$2") >"$d/enc.log" 2>&1 || true
  "$PY" "$ESP_REF" decrypt --in "$d/esp-out.pcap" --out "$d/dec.pcap" --spi "$SPI_OUT" --src "$LOCAL" \
    --dst "$REMOTE" --alg aes-gcm-128 --key "$KEY_OUT" --json "$d/dec.json" 2>/dev/null
  if ! msg=$("$PY" "$ESP_CHECK" compare "$d/inner-out.pcap" "$d/dec.pcap" "$d/dec.json" 1 "$ttl_dec"); then
    echo "verify: $(mode_name "$2") encrypt, $1 B: $msg (log: $(tail -3 "$d/enc.log"))" >&2; return 1
  fi
  p=$(new_prefix)
  timeout -s INT 4 "$SECGW" $EAL --file-prefix "$p" --vdev "net_pcap0,rx_pcap=$WORK/empty.pcap,tx_pcap=$d/lan-out.pcap" \
    --vdev "net_pcap1,rx_pcap=$d/esp-in.pcap" --vdev crypto_aesni_mb0 -- \
    "${SECGW_APP_ARGS[@]}" $(mode_args "$2") >"$d/dec.log" 2>&1 || true
  if ! msg=$("$PY" "$ESP_CHECK" same-inner "$d/inner-in.pcap" "$d/lan-out.pcap" "$ttl_dec"); then
    echo "verify: $(mode_name "$2") decrypt, $1 B: $msg (log: $(tail -3 "$d/dec.log"))" >&2; return 1
  fi
  echo "# verify $(mode_name "$2") $1 B: its ESP (256 frames) decrypts under esp_ref (scapy) to the inner packets, esp_ref's ESP decrypts in it to the inner packets"
}

# Waits up to $WAIT_QUIET seconds for a second in which the CPUs are >= 90% idle.
wait_quiet() {
  [ "$WAIT_QUIET" -gt 0 ] || return 0
  "$PY" - "$WAIT_QUIET" <<'PY'
import sys, time
def idle():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v), v[3] + v[4]
end = time.time() + float(sys.argv[1])
while time.time() < end:
    a = idle(); time.sleep(1); b = idle()
    if (b[1] - a[1]) / max(1, b[0] - a[0]) >= 0.9:
        sys.exit(0)
print("run.sh: the machine did not get quiet; measuring anyway", file=sys.stderr)
PY
}

# --- ipsec-secgw -----------------------------------------------------------------------------
# Prints "<out Mpps> <in Mpps> <others %>": medians of per-second rates, other processes' CPU.
secgw_mpps() { # $1 encrypt|decrypt, $2 size, $3 mode
  local p log="$WORK/secgw.log" pid out_port in_port vdevs r
  wait_quiet
  p=$(new_prefix)
  if [ "$1" = encrypt ]; then
    vdevs=(--vdev "net_pcap0,rx_pcap=$WORK/inner-out-$2.pcap,infinite_rx=1" --vdev "net_null0,no-rx=1")
    in_port=0 out_port=1
  else
    vdevs=(--vdev "net_null0,no-rx=1" --vdev "net_pcap0,rx_pcap=$WORK/esp-in-$2.pcap,infinite_rx=1")
    in_port=1 out_port=0
  fi
  timeout -s INT "$((WARMUP + SECS + 30))" "$SECGW" $EAL --file-prefix "$p" "${vdevs[@]}" \
    --vdev crypto_aesni_mb0 -- "${SECGW_APP_ARGS[@]}" $(mode_args "$3") >"$log" 2>&1 &
  pid=$!
  sleep 0.2
  r=$("$PY" "$HERE/ethdev_rate.py" --prefix "$p" --out-port "$out_port" --in-port "$in_port" \
        --pid "$(ps -o pid= --ppid "$pid" | tr -d ' ')" \
        --warmup "$WARMUP" --seconds "$SECS" | tee "$WORK/secgw-samples.txt" | awk '/^median/ {print $3, $5, $7}') || true
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -z "$r" ]; then echo "ipsec-secgw failed:" >&2; tail -20 "$log" >&2; exit 1; fi
  echo "$r" | awk '{printf "%.3f %.3f %s", $1/1e6, $2/1e6, $3}'
}

# Instructions per packet of the worker lcore under callgrind (see the header).
secgw_ipp() { # $1 encrypt|decrypt, $2 size, $3 mode
  local p log="$WORK/cg.log" cg="$WORK/cg.out" vdevs pid sig
  p=$(new_prefix)
  if [ "$1" = encrypt ]; then
    vdevs=(--vdev "net_pcap0,rx_pcap=$WORK/inner-out-$2.pcap,infinite_rx=1" --vdev "net_null0,no-rx=1")
  else
    vdevs=(--vdev "net_null0,no-rx=1" --vdev "net_pcap0,rx_pcap=$WORK/esp-in-$2.pcap,infinite_rx=1")
  fi
  rm -f "$cg"
  valgrind --tool=callgrind --callgrind-out-file="$cg" \
    --toggle-collect=ipsec_launch_one_lcore "$SECGW" $EAL --file-prefix "$p" "${vdevs[@]}" \
    --vdev crypto_aesni_mb0 -- "${SECGW_APP_ARGS[@]}" $(mode_args "$3") >"$log" 2>&1 &
  pid=$!
  sleep "$((SECS + 15))"
  # Under valgrind a SIGINT is sometimes never acted on (the worker keeps the CPU); a SIGTERM
  # (the same handler) after it works. SIGKILL last: then there is no profile ("n/a").
  for sig in INT TERM TERM KILL; do
    kill -"$sig" "$pid" 2>/dev/null || break
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break 2; sleep 0.5; done
  done
  wait "$pid" 2>/dev/null || true
  "$PY" - "$cg" <<'PY'
import re, sys
names, calls, total = {}, {}, 0
cfn = None
try:
    lines = open(sys.argv[1])
except OSError:
    print("n/a"); sys.exit(0)
for line in lines:
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3).strip()
        cfn = m.group(2) if m.group(1) == "cfn" else None
    elif line.startswith("calls=") and cfn is not None:
        calls[cfn] = calls.get(cfn, 0) + int(line[6:].split()[0])
    elif line.startswith(("summary:", "totals:")) and not total:
        total = int(line.split()[1])
bursts = sum(n for i, n in calls.items() if names.get(i) == "process_pkts")
# net_pcap infinite_rx fills every burst: 32 packets per process_pkts call
print(f"{total / (32 * bursts):.0f}" if bursts and total else "n/a")
PY
}

# --- dpdk-test-crypto-perf -------------------------------------------------------------------
# Prints "<MOps at 52 B> <MOps at 1388 B>" for one AEAD direction.
crypto_perf() { # $1 encrypt|decrypt
  local p log="$WORK/cperf.log"
  wait_quiet
  p=$(new_prefix)
  timeout 120 dpdk-test-crypto-perf $EAL --file-prefix "$p" --vdev crypto_aesni_mb0 -- \
    --ptest throughput --devtype crypto_aesni_mb --optype aead --aead-algo aes-gcm \
    --aead-op "$1" --aead-key-sz 16 --aead-iv-sz 12 --aead-aad-sz 8 --digest-sz 16 \
    --buffer-sz 52,1388 --burst-sz 32 --total-ops 8000000 >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
  awk '$1 == 1 && $2 == 52 {a=$8} $1 == 1 && $2 == 1388 {b=$8} END {print a, b}' "$log"
}
# ESP plaintext bytes for an inner frame size: IP packet (frame - 14) + 2-byte trailer, padded
# to 4 (GCM).
esp_plain() { echo $(( ( ($1 - 14 + 2 + 3) / 4) * 4 )); }

# --- appliance (hook) ------------------------------------------------------------------------
# ========================= appliance_mpps(): THE APPLIANCE HOOK =========================
# Runs the appliance on the same scenario (one worker, the same SAs as secgw.cfg, a VTI port
# whose underlay is wan, forwarding lan <-> vti0) and prints its Mpps: the median of per-second
# tx rates of the output port, from /metrics. Or a message starting with "appliance:" when it
# cannot run (binary not built, config rejected).
appliance_config() { # $1 encrypt|decrypt, $2 size, $3 metrics port
  local lan wan
  if [ "$1" = encrypt ]; then
    lan="{ name: lan, device: net_pcap0, args: \"rx_pcap=$WORK/inner-out-$2.pcap,infinite_rx=1\", rx_desc: 1024, tx_desc: 1024 }"
    wan="{ name: wan, device: net_null0, args: \"no-rx=1\", rx_desc: 1024, tx_desc: 1024 }"
  else
    lan="{ name: lan, device: net_null0, args: \"no-rx=1\", rx_desc: 1024, tx_desc: 1024 }"
    wan="{ name: wan, device: net_pcap0, args: \"rx_pcap=$WORK/esp-in-$2.pcap,infinite_rx=1\", rx_desc: 1024, tx_desc: 1024 }"
  fi
  cat <<YAML
# perf/ipsec/run.sh: appliance VTI $1, $2-byte frames (the same SAs as perf/ipsec/secgw.cfg)
eal: { lcores: "0-1", no_huge: true, memory_mb: 1024, no_pci: true, file_prefix: ipsecperf-app-$$, log_level: error }
mempool: { mbufs: $MBUFS, cache: 256 }
crypto: { device: crypto_aesni_mb0 }
ports:
  - $lan
  - $wan
  - name: vti0
    tunnel: { local: $LOCAL, remote: $REMOTE, okey: 1, ikey: 1, underlay: wan, next_hop_mac: "02:00:00:00:00:02" }
sas:
  - { spi: $SPI_OUT, direction: out, src: $LOCAL, dst: $REMOTE, mark: 1, algorithm: aes-gcm-128, key: "$KEY_OUT" }
  # replay_window 0 (as ipsec-secgw without -w): infinite_rx replays the same sequence numbers
  - { spi: $SPI_IN, direction: in, src: $REMOTE, dst: $LOCAL, mark: 1, algorithm: aes-gcm-128, key: "$KEY_IN", replay_window: 0 }
forwarding:
  - { from: lan, to: vti0 }
  - { from: vti0, to: lan }
metrics: { listen: "127.0.0.1:$3" }
YAML
}

appliance_mpps() { # $1 encrypt|decrypt, $2 size
  local cfg="$WORK/app-$1-$2.yaml" port=19392 out pid prev="" samples=() now v
  [ -x "$APP" ] || { echo "appliance: not built ($APP; set APPLIANCE=...)"; return 0; }
  appliance_config "$1" "$2" "$port" >"$cfg"
  if ! "$APP" check-config "$cfg" >"$WORK/app-check.log" 2>&1; then
    echo "appliance: config rejected: $(tail -1 "$WORK/app-check.log")"
    return 0
  fi
  [ "$1" = encrypt ] && out=wan || out=lan
  "$APP" run --config "$cfg" --duration "$((WARMUP + SECS + 2))" >"$WORK/app.log" 2>&1 &
  pid=$!
  sleep "$WARMUP"
  for _ in $(seq 0 "$SECS"); do
    now=$(date +%s.%N)
    v=$(curl -s "http://127.0.0.1:$port/metrics" | awk -v p="$out" '$1 == "appliance_port_tx_packets_total{port=\"" p "\"}" {print $2}')
    if [ -n "$prev" ] && [ -n "$v" ]; then
      samples+=("$(awk -v a="$v" -v b="${prev#* }" -v t="$now" -v s="${prev% *}" 'BEGIN {print (a-b)/(t-s)}')")
    fi
    prev="$now $v"
    sleep 1
  done
  if ! wait "$pid"; then echo "appliance: run failed ($(tail -1 "$WORK/app.log"))"; return 0; fi
  printf '%s\n' "${samples[@]}" | median | awk '{printf "%.3f", $1/1e6}'
}
# ======================================================================================

# Instructions per packet of the appliance's worker lcore under callgrind: everything inside
# the worker thread (pmd_glue::lcore::trampoline inclusive; start-up and the control thread not
# counted), divided by the packets its input port received (from the run's summary JSON).
appliance_ipp() { # $1 encrypt|decrypt, $2 size
  local cfg="$WORK/app-cg-$1-$2.yaml" cg="$WORK/app-cg.out" json="$WORK/app-cg.json" in
  [ -x "$APP" ] || { echo "n/a"; return 0; }
  appliance_config "$1" "$2" 0 | sed 's/^metrics: .*/metrics: { listen: null }/' >"$cfg"
  [ "$1" = encrypt ] && in=lan || in=wan
  rm -f "$cg" "$json"
  valgrind --tool=callgrind --callgrind-out-file="$cg" "$APP" run --config "$cfg" \
    --duration "$((SECS + 4))" --summary-json "$json" >"$WORK/app-cg.log" 2>&1 || true
  "$PY" - "$cg" "$json" "$in" <<'PY'
import json, re, subprocess, sys
try:
    pkts = next(p["rx_packets"] for p in json.load(open(sys.argv[2]))["ports"] if p["name"] == sys.argv[3])
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", sys.argv[1]],
                         capture_output=True, text=True).stdout
    ir = next(int(l.split()[0].replace(",", "")) for l in out.splitlines()
              if re.search(r"lcore\.rs:pmd_glue::lcore::trampoline( \[|$)", l))
    print(round(ir / pkts) if pkts else "n/a")
except (OSError, StopIteration, ValueError, KeyError):
    print("n/a")
PY
}

# --- main ------------------------------------------------------------------------------------
echo "# perf/ipsec/run.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, DPDK $(pkg-config --modversion libdpdk), $SECS s x $ROUNDS rounds after $WARMUP s warm-up, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# ipsec-secgw: $SECGW (patched: perf/ipsec/secgw-vdev.patch), config perf/ipsec/secgw.cfg"
if [ "$VERIFY" = 1 ]; then
  for size in $SIZES; do for mode in $MODES; do verify "$size" "$mode"; done; done
fi
for size in $SIZES; do gen_inputs "$size" 4096; done

declare -A RES=()
printf '%-18s %5s %6s %8s %8s %9s %7s\n' scenario size round Mpps Gbps rx_Mpps others%
for r in $(seq 1 "$ROUNDS"); do
  for size in $SIZES; do
    for dir in encrypt decrypt; do
      for mode in $MODES; do
        m="" rx="" busy=""
        read -r m rx busy < <(secgw_mpps "$dir" "$size" "$mode") || true
        [ -n "$m" ] || exit 1
        RES["$(mode_name "$mode")-$dir $size"]+="$m "
        printf '%-18s %5s %6s %8s %8s %9s %7s\n' "$(mode_name "$mode")-$dir" "$size" "$r" "$m" "$(gbps "$m" "$size")" "$rx" "$busy"
      done
      if [ "$APPLIANCE_HOOK" = 1 ]; then
        m=$(appliance_mpps "$dir" "$size")
        if [[ "$m" =~ ^[0-9.]+$ ]]; then
          RES["appliance-$dir $size"]+="$m "
          printf '%-18s %5s %6s %8s %8s\n' "appliance-$dir" "$size" "$r" "$m" "$(gbps "$m" "$size")"
        else
          NOTE_APP=$m
        fi
      fi
    done
  done
  if [ "$CRYPTO_PERF" = 1 ]; then
    for op in encrypt decrypt; do
      a="" b=""
      read -r a b < <(crypto_perf "$op") || true
      [ -n "$b" ] || exit 1
      RES["cryptoperf-$op 64"]+="$a "
      RES["cryptoperf-$op 1400"]+="$b "
      printf '%-18s %5s %6s %8s %8s   (%s B buffers)\n' "cryptoperf-$op" 64 "$r" "$a" "$(gbps "$a" 64)" "$(esp_plain 64)"
      printf '%-18s %5s %6s %8s %8s   (%s B buffers)\n' "cryptoperf-$op" 1400 "$r" "$b" "$(gbps "$b" 1400)" "$(esp_plain 1400)"
    done
  fi
done

echo
echo "# medians over $ROUNDS rounds (Gbps = Mpps x inner frame bytes x 8)"
printf '%-18s %5s %8s %8s %s\n' scenario size Mpps Gbps "vs $(mode_name "${MODES%% *}")"
for size in $SIZES; do
  for dir in encrypt decrypt; do
    s=""
    for mode in $MODES; do
      m=$(printf '%s\n' ${RES["$(mode_name "$mode")-$dir $size"]} | median)
      [ -n "$s" ] || s=$m
      printf '%-18s %5s %8.3f %8s\n' "$(mode_name "$mode")-$dir" "$size" "$m" "$(gbps "$m" "$size")"
    done
    if [ -n "${RES["appliance-$dir $size"]:-}" ]; then
      a=$(printf '%s\n' ${RES["appliance-$dir $size"]} | median)
      printf '%-18s %5s %8.3f %8s %s\n' "appliance-$dir" "$size" "$a" "$(gbps "$a" "$size")" \
        "$(awk -v a="$a" -v s="$s" 'BEGIN { if (s > 0) printf "%.3f", a/s }')"
    fi
    if [ -n "${RES["cryptoperf-$dir $size"]:-}" ]; then
      c=$(printf '%s\n' ${RES["cryptoperf-$dir $size"]} | median)
      printf '%-18s %5s %8.3f %8s\n' "cryptoperf-$dir" "$size" "$c" "$(gbps "$c" "$size")"
    fi
  done
done
[ -n "${NOTE_APP:-}" ] && echo "$NOTE_APP"
if [ "$CALLGRIND" = 1 ]; then
  echo
  echo "# callgrind: instructions per received packet of the worker lcore (ipsec-secgw: ipsec_launch_one_lcore inclusive; appliance: its worker thread)"
  printf '%-18s %5s %10s\n' scenario size Ir/packet
  for size in $SIZES; do
    for dir in encrypt decrypt; do
      for mode in $MODES; do
        printf '%-18s %5s %10s\n' "$(mode_name "$mode")-$dir" "$size" "$(secgw_ipp "$dir" "$size" "$mode")"
      done
      if [ "$APPLIANCE_HOOK" = 1 ]; then
        printf '%-18s %5s %10s\n' "appliance-$dir" "$size" "$(appliance_ipp "$dir" "$size")"
      fi
    done
  done
fi
echo "# load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
exit 0
