#!/usr/bin/env bash
# Whole-appliance forwarding benchmark against dpdk-testpmd, side by side in one run.
#
# Scenario (issue 2): one worker lcore forwarding port 0 -> port 1, where port 0 is net_pcap with
# infinite_rx=1 over a generated capture and port 1 is net_null (no-rx=1, so neither app spends
# time on packets the null device would invent). dpdk-testpmd in io forwarding mode runs on the
# same vdevs with the same lcores, burst size and mbuf count. Frame sizes: 64 and 1500 bytes.
#
# Throughput: the median of per-second receive rates over a window after warm-up (testpmd: its
# own "Rx-pps" stats lines; appliance: /metrics scraped every second). Mpps on a shared VM drifts
# between runs, so the ratio of the two in the same run is the number that counts.
# Instructions per packet: valgrind --tool=callgrind restricted to each app's forwarding loop.
#
# Scenario (issue 3): the same, with 8 typical classic-BPF programs (pcap-filter expressions of
# 10-25 instructions) on the input port's ingress hook, none of which matches the traffic, so
# every packet runs all 8 before it is forwarded: once with the default engine (rbpf JIT) and once
# with the interpreter.
#
# Scenario (issue 4): one filter that matches every packet on the input port's ingress hook,
# either passing it (pass1: the classifier path without mirroring) or mirroring every packet to a
# second net_null port before passing it (mirror1: a zero-copy clone per packet, two transmits);
# and the flow classifier hashing the 5-tuple into 4 classes, each class forwarding (flow5).
#
# Scenario (issue 6): IPv6/UDP traffic (256 flows) forwarded without labels (full6), and with the
# output port overriding every packet's flow label from the flow-label table (label6).
#
# Usage: perf/run.sh [--seconds N] [--rounds R] [--no-callgrind] [--scenarios "l2 full ..."]
#   scenarios: l2 full bpf8_jit bpf8_int pass1 mirror1 flow5 full6 label6 (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=8
ROUNDS=3
CALLGRIND=1
SCENARIOS="l2 full bpf8_jit bpf8_int pass1 mirror1 flow5 full6 label6"
while [ $# -gt 0 ]; do
  case "$1" in
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --no-callgrind) CALLGRIND=0; shift ;;
    *) echo "usage: $0 [--seconds N] [--rounds R] [--no-callgrind] [--scenarios LIST]" >&2; exit 2 ;;
  esac
done
bash deploy/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p appliance >&2
APP=target/release/appliance
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
MBUFS=16383
EAL_COMMON="--no-huge -m 1024 --no-pci --no-shconf --log-level=error -l 0-1"

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

testpmd_mpps() { # $1 pcap
  local log="$WORK/testpmd.log"
  timeout -s INT "$((SECONDS_PER_RUN + 3))" dpdk-testpmd $EAL_COMMON --file-prefix "perf-tp-$$" \
    --vdev "net_pcap0,rx_pcap=$1,infinite_rx=1" --vdev "net_null0,no-rx=1" -- \
    --forward-mode=io --nb-cores=1 --auto-start --stats-period 1 --total-num-mbufs=$MBUFS \
    --rxd=1024 --txd=1024 --burst=32 >"$log" 2>&1 || true
  # Port 0 statistics blocks print "Rx-pps:" first; skip the first two samples (warm-up).
  awk '/NIC statistics for port 0/ {p=1} p && /Rx-pps:/ {print $2; p=0}' "$log" | tail -n +3 | median | awk '{printf "%.3f", $1/1e6}'
}

# 8 typical programs that never match the UDP/IPv4 benchmark traffic; $1 = engine.
bpf8() {
  local e=$1
  cat <<YAML
    ingress:
      - { name: https, bpf: { filter: "tcp dst port 443", engine: $e }, actions: [drop] }
      - { name: dns6, bpf: { filter: "ip6 and udp port 53", engine: $e }, actions: [drop] }
      - { name: syn, bpf: { filter: "tcp[tcpflags] & tcp-syn != 0 and not src net 10.0.0.0/8", engine: $e }, actions: [drop] }
      - { name: vlan, bpf: { filter: "vlan 100 and ip", engine: $e }, actions: [drop] }
      - { name: ttl, bpf: { filter: "ip and ip[8] < 2", engine: $e }, actions: [drop] }
      - { name: frag, bpf: { filter: "ip[6:2] & 0x1fff != 0", engine: $e }, actions: [drop] }
      - { name: icmp, bpf: { filter: "icmp[icmptype] == icmp-echo or icmp6", engine: $e }, actions: [drop] }
      - { name: ports, bpf: { filter: "udp dst portrange 6000-6100 or tcp src port 22", engine: $e }, actions: [drop] }
YAML
}

# Ingress hooks of the input port for a scenario (empty for l2/full).
hooks() {
  case "$1" in
    bpf8_jit) bpf8 jit ;;
    bpf8_int) bpf8 interpreter ;;
    pass1) cat <<YAML
    ingress:
      - { name: all, bpf: { bytecode: "1,6 0 0 4294967295" }, actions: [pass] }
YAML
    ;;
    mirror1) cat <<YAML
    ingress:
      - { name: all, bpf: { bytecode: "1,6 0 0 4294967295" }, actions: [{ mirror: copy }, pass] }
YAML
    ;;
    flow5) cat <<YAML
    ingress:
      - name: flows
        flow: { keys: [src, dst, proto, proto-src, proto-dst], mode: hash, divisor: 4, baseclass: "1:1", seed: 7 }
        classes:
          - { classid: "1:1", actions: [pass] }
          - { classid: "1:2", actions: [pass] }
          - { classid: "1:3", actions: [pass] }
          - { classid: "1:4", actions: [pass] }
YAML
    ;;
  esac
}
level() { [ "$1" = l2 ] && echo l2 || echo full; }
# Options of the output port for a scenario.
outopts() { [ "$1" = label6 ] && echo ", flowlabel: override" || true; }
# The capture a scenario reads: IPv6 for the *6 scenarios. $1 scenario, $2 frame size.
input() { case "$1" in *6) echo "$WORK/in6-$2.pcap" ;; *) echo "$WORK/in-$2.pcap" ;; esac; }

appliance_mpps() { # $1 pcap, $2 scenario
  local cfg="$WORK/app.yaml" port=19391
  cat >"$cfg" <<YAML
eal: { lcores: "0-1", no_huge: true, memory_mb: 1024, no_pci: true, file_prefix: perf-app-$$, log_level: error }
mempool: { mbufs: $MBUFS, cache: 256 }
ports:
  - name: in
    device: net_pcap0
    args: "rx_pcap=$1,infinite_rx=1"
    rx_desc: 1024
    tx_desc: 1024
    validate: $(level "$2")
$(hooks "$2")
  - { name: out, device: net_null0, args: "no-rx=1", rx_desc: 1024, tx_desc: 1024$(outopts "$2") }
  - { name: copy, device: net_null1, args: "no-rx=1", rx_desc: 1024, tx_desc: 1024 }
forwarding:
  - { from: in, to: out }
metrics: { listen: "127.0.0.1:$port" }
YAML
  "$APP" run --config "$cfg" --duration "$((SECONDS_PER_RUN + 1))" >"$WORK/app.log" 2>&1 &
  local pid=$! prev="" samples=()
  sleep 2
  for _ in $(seq 1 "$SECONDS_PER_RUN"); do
    local now v
    now=$(date +%s.%N)
    v=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^appliance_port_rx_packets_total\{port="in"\}/ {print $2}')
    if [ -n "$prev" ] && [ -n "$v" ]; then
      samples+=("$(awk -v a="$v" -v b="${prev#* }" -v t="$now" -v s="${prev% *}" 'BEGIN {print (a-b)/(t-s)}')")
    fi
    prev="$now $v"
    sleep 1
  done
  wait "$pid" || { echo "appliance run failed:" >&2; cat "$WORK/app.log" >&2; exit 1; }
  printf '%s\n' "${samples[@]:1}" | median | awk '{printf "%.3f", $1/1e6}'
}

# One callgrind run: prints "<instructions> <packets forwarded>".
callgrind_run() { # $1 app|testpmd, $2 pcap, $3 seconds
  local cg="$WORK/cg.out" pkts ir
  rm -f "$cg" "$WORK/cg.json"
  if [ "$1" = testpmd ]; then
    timeout -s INT "$3" valgrind --tool=callgrind --callgrind-out-file="$cg" dpdk-testpmd $EAL_COMMON \
      --file-prefix "perf-cg-$$" --vdev "net_pcap0,rx_pcap=$2,infinite_rx=1" --vdev "net_null0,no-rx=1" -- \
      --forward-mode=io --nb-cores=1 --auto-start --total-num-mbufs=$MBUFS >"$WORK/cg.log" 2>&1 || true
    pkts=$(awk '/Accumulated forward statistics for all ports/ {p=1} p && /RX-packets:/ {print $2; exit}' "$WORK/cg.log")
  else
    cat >"$WORK/cg.yaml" <<YAML
eal: { lcores: "0-1", no_huge: true, memory_mb: 1024, no_pci: true, file_prefix: perf-cga-$$, log_level: error }
mempool: { mbufs: $MBUFS, cache: 256 }
ports:
  - name: in
    device: net_pcap0
    args: "rx_pcap=$2,infinite_rx=1"
    validate: $(level "$4")
$(hooks "$4")
  - { name: out, device: net_null0, args: "no-rx=1"$(outopts "$4") }
  - { name: copy, device: net_null1, args: "no-rx=1" }
forwarding:
  - { from: in, to: out }
metrics: { listen: null }
YAML
    valgrind --tool=callgrind --callgrind-out-file="$cg" "$APP" run --config "$WORK/cg.yaml" --duration "$3" \
      --summary-json "$WORK/cg.json" >"$WORK/cg.log" 2>&1 || true
    pkts=$(python3 -c "import json;print(json.load(open('$WORK/cg.json'))['ports'][0]['rx_packets'])" 2>/dev/null)
  fi
  ir=$(grep -E '^(summary|totals):' "$cg" 2>/dev/null | head -1 | awk '{print $2}')
  echo "${ir:-0} ${pkts:-0}"
}

# Instructions per forwarded packet: the difference of a long and a short run, so that start-up
# and shutdown cancel out (and no symbol names are needed in the stripped testpmd binary).
callgrind_ipp() { # $1 app|testpmd, $2 pcap, $3 scenario (app only)
  local a b fit second
  a=$(callgrind_run "$1" "$2" 5 "${3:-full}")
  # Ir = start-up + k * packets: k from two points, whichever run forwarded more. valgrind
  # serialises threads, so packets per second under it vary; if the two runs forwarded too
  # similar counts for a fit, try a longer second run.
  for second in 15 30; do
    b=$(callgrind_run "$1" "$2" "$second" "${3:-full}")
    fit=$(echo "$a $b" | awk '{ d = $4 - $2; if (d < 0) d = -d; if (d > 0.1 * ($2 > $4 ? $2 : $4)) printf "%.1f", ($3-$1)/($4-$2); else print "n/a" }')
    [ "$fit" != "n/a" ] && break
  done
  echo "$fit"
}

echo "# perf/run.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, $(dpdk-testpmd --version 2>/dev/null | head -1 || true)"
ratio() { awk -v a="$1" -v t="$2" 'BEGIN { if (t > 0) printf "%.3f", a/t; else print "n/a" }'; }
read -r -a SCEN <<<"$SCENARIOS"
# One row per round: testpmd Mpps, then Mpps and ratio to testpmd per scenario.
header="size  round  testpmd"
for s in "${SCEN[@]}"; do header+=$(printf ' %9s %7s' "$s" ratio); done
echo "$header"
for size in 64 1500; do
  pcap="$WORK/in-$size.pcap"
  "$APP" gen --pcap "$pcap" --count 4096 --flows 256 --ip 4 --proto udp --size "$size" --seed 7 >/dev/null
  "$APP" gen --pcap "$WORK/in6-$size.pcap" --count 4096 --flows 256 --ip 6 --proto udp --size "$size" --seed 7 >/dev/null
  declare -A ratios=()
  for r in $(seq 1 "$ROUNDS"); do
    t=$(testpmd_mpps "$pcap")
    line=$(printf '%-5s %-6s %7s' "$size" "$r" "$t")
    for s in "${SCEN[@]}"; do
      m=$(appliance_mpps "$(input "$s" "$size")" "$s")
      q=$(ratio "$m" "$t")
      ratios[$s]+="$q "
      line+=$(printf ' %9s %7s' "$m" "$q")
    done
    echo "$line"
  done
  line=$(printf '%-5s %-6s %7s' "$size" median "")
  for s in "${SCEN[@]}"; do
    line+=$(printf ' %9s %7s' "" "$(printf '%s\n' ${ratios[$s]} | median)")
  done
  echo "$line"
  unset ratios
done
if [ "$CALLGRIND" = 1 ]; then
  pcap="$WORK/in-64.pcap"
  echo "# callgrind: instructions per forwarded packet, whole process, fit of a 5 s and a 15 s run (start-up cancels), 64-byte frames"
  echo "testpmd_io      $(callgrind_ipp testpmd "$pcap")"
  for s in "${SCEN[@]}"; do
    printf 'appliance_%-10s %s\n' "$s" "$(callgrind_ipp app "$(input "$s" 64)" "$s")"
  done
fi
