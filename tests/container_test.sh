#!/usr/bin/env bash
# The container image really works: builds it (deploy/container/build.sh), loads the OCI archive
# into podman (not buildah's local copy), and runs the appliance inside it the way the DaemonSet
# does (read-only root filesystem, all capabilities dropped but the DaemonSet's four, no new
# privileges), with no network:
#   - `appliance --version` is this checkout's;
#   - no setuid/setgid file in the image;
#   - the ConfigMap's entrypoint.sh renders the ConfigMap's appliance.yaml with the image's
#     /bin/sh, sed and awk, and `appliance check-config` accepts the result;
#   - two net_pcap vdevs: captures made by `appliance gen` (mounted read-only) forwarded to
#     captures in a mounted directory; exit 0, every frame out, every mbuf back in its pool.
# Called by tests/deploy_checks.sh; runs on its own too (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
[ "$(id -u)" -eq 0 ] || { echo "container_test: run as root (rootful podman, buildah)" >&2; exit 1; }
for p in podman tcpdump; do
  command -v "$p" >/dev/null || { echo "container_test: $p missing (bash deploy/install-deps.sh)" >&2; exit 1; }
done

archive=target/container/appliance.oci.tar
tag=localhost/appliance:container-test
bash deploy/container/build.sh --out "$archive" --tag "$tag"
built=$SECONDS
podman rmi -f "$tag" >/dev/null 2>&1 || true
podman load --quiet -i "$archive" >/dev/null
podman image exists "$tag" || { echo "container_test: $archive did not load as $tag" >&2; exit 1; }

t=$(mktemp -d)
trap 'rm -rf "$t"; podman rmi -f "$tag" >/dev/null 2>&1 || true' EXIT

# Rootful podman inside some CI containers (nested in Docker) cannot raise rlimits to podman's
# defaults (setrlimit RLIMIT_NOFILE/NPROC: EPERM), and crun refuses a cgroup v1 + v2 hybrid host
# (runc accepts it): use the least of these the machine needs, and say which.
compat=()
probe() { podman run --rm --network none "${compat[@]}" "$tag" appliance --version 2>"$t/probe.err"; }
if ! version=$(probe); then
  compat=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
  if ! version=$(probe); then
    compat+=(--runtime runc)
    version=$(probe) || { cat "$t/probe.err" >&2; echo "container_test: podman run FAILED" >&2; exit 1; }
  fi
fi
echo "container_test: podman run flags this machine needs: ${compat[*]:-none}"
want=$(target/release/appliance --version)
[ "$version" = "$want" ] || { echo "container_test: image says '$version', checkout '$want'" >&2; exit 1; }
echo "appliance --version in the image: $version"

# As the DaemonSet runs it (securityContext of deploy/k8s/daemonset.yaml).
run=(podman run --rm --network none "${compat[@]}" --read-only --security-opt no-new-privileges
     --cap-drop all --cap-add IPC_LOCK --cap-add NET_ADMIN --cap-add NET_RAW --cap-add SYS_NICE)

suid=$(podman run --rm --network none "${compat[@]}" "$tag" find / -xdev -type f -perm /6000)  # all of root's rights: every directory
[ -z "$suid" ] || { echo "container_test: setuid/setgid files in the image: $suid" >&2; exit 1; }
echo "no setuid/setgid files: OK"

# The ConfigMap's files, as the kubelet mounts them at /etc/appliance.
mkdir -p "$t/etc"
for f in entrypoint.sh appliance.yaml; do
  awk -v key="  $f: |" '$0 == key { on = 1; next } on && /^  [^ ]/ { on = 0 } on { sub(/^    /, ""); print }' \
    deploy/k8s/configmap.yaml > "$t/etc/$f"
  [ -s "$t/etc/$f" ] || { echo "container_test: no $f in deploy/k8s/configmap.yaml" >&2; exit 1; }
done
# shellcheck disable=SC2016  # expanded by the container's shell
rendered=$("${run[@]}" -v "$t/etc:/etc/appliance:ro" \
  -e PCIDEVICE_INTEL_COM_SRIOV_DPDK_WAN=0000:3b:02.0,0000:3b:02.1 \
  -e PCIDEVICE_INTEL_COM_SRIOV_DPDK_LAN=0000:3b:0a.0 -e RENDER_ONLY=1 \
  "$tag" sh -c 'out=$(sh /etc/appliance/entrypoint.sh) && appliance check-config "$out" >&2 && cat "$out"')
if ! grep -q 'device: "0000:3b:02.0"' <<<"$rendered" || ! grep -q 'device: "0000:3b:0a.0"' <<<"$rendered" ||
   grep -qE "@(PCI_WAN|PCI_LAN|LCORES)@" <<<"$rendered"; then
  echo "container_test: entrypoint rendered: $rendered" >&2; exit 1
fi
echo "ConfigMap entrypoint.sh + check-config in the image: OK"

# Forwarding on net_pcap vdevs, no hugepages, no PCI, no shared runtime config.
mkdir -p "$t/in" "$t/out" "$t/cfg"
"${run[@]}" -v "$t/in:/in" "$tag" sh -c '
  appliance gen --pcap /in/west.pcap --count 3000 --flows 32 --size imix --seed 1 >/dev/null &&
  appliance gen --pcap /in/east.pcap --count 2000 --flows 32 --size 64 --ip 6 --seed 2 >/dev/null'
cat > "$t/cfg/appliance.yaml" <<EOF
eal:
  lcores: "0-1"
  no_huge: true
  memory_mb: 512
  no_pci: true
  file_prefix: ctest-$$-$RANDOM
  log_level: warning
  extra_args: ["--no-shconf"]
mempool: { mbufs: 8191, cache: 256 }
ports:
  - { name: west, device: net_pcap0, args: "rx_pcap=/in/west.pcap,tx_pcap=/out/west.pcap" }
  - { name: east, device: net_pcap1, args: "rx_pcap=/in/east.pcap,tx_pcap=/out/east.pcap" }
forwarding:
  - { from: west, to: east }
  - { from: east, to: west }
metrics: { listen: "127.0.0.1:9091" }
run: { exit_when_idle_ms: 500 }
EOF
rc=0
"${run[@]}" -v "$t/in:/in:ro" -v "$t/out:/out" -v "$t/cfg:/etc/appliance:ro" \
  "$tag" appliance run --config /etc/appliance/appliance.yaml > "$t/summary" 2>&1 || rc=$?
cat "$t/summary"
[ "$rc" -eq 0 ] || { echo "container_test: appliance run in the image exited $rc" >&2; exit 1; }
frames() { tcpdump -r "$1" 2>/dev/null | wc -l; }
e=$(frames "$t/out/east.pcap"); w=$(frames "$t/out/west.pcap")
if [ "$e" -ne 3000 ] || [ "$w" -ne 2000 ]; then
  echo "container_test: out east $e frames (want 3000), west $w (want 2000)" >&2; exit 1
fi
pools=$(grep -c '^mempool ' "$t/summary" || true)
full=$(grep -c '^mempool .*(all mbufs returned)' "$t/summary" || true)
if [ "$pools" -lt 1 ] || [ "$pools" -ne "$full" ]; then
  echo "container_test: $full of $pools pools full at exit" >&2; exit 1
fi
echo "net_pcap forwarding in the image: 3000 + 2000 frames out, $full/$pools pools full: OK"
echo "container_test: OK (image build $((built - start)) s, total $((SECONDS - start)) s)"
