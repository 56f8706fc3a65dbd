#!/usr/bin/env bash
# deploy/setup-host.sh against a fake sysfs: the dry run prints every step and changes nothing;
# the real run writes exactly those sysfs attributes; a second run finds everything in place;
# bad arguments exit 2 naming the argument.
set -euo pipefail
script=$(cd "$(dirname "$0")/.." && pwd)/deploy/setup-host.sh
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
S=$t/sys
fail() { echo "setup_host_test: FAILED: $*" >&2; exit 1; }
expect() { grep -qF -- "$1" "$t/out" || { cat "$t/out" >&2; fail "missing: $1"; }; }

mkdir -p "$S/kernel/mm/hugepages/hugepages-2048kB" "$S/kernel/mm/hugepages/hugepages-1048576kB" \
  "$S/devices/system/node/node0/hugepages/hugepages-1048576kB" "$S/kernel/iommu_groups/17" \
  "$S/bus/pci/drivers/ixgbe" "$S/bus/pci/drivers/mlx5_core" "$S/bus/pci/drivers/vfio-pci" \
  "$S/bus/pci/devices/0000:3b:00.0" "$S/bus/pci/devices/0000:5e:00.0"
echo 0 > "$S/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
echo 0 > "$S/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"
echo 0 > "$S/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages"
: > "$S/bus/pci/drivers/ixgbe/unbind"; : > "$S/bus/pci/drivers_probe"
echo 0x8086 > "$S/bus/pci/devices/0000:3b:00.0/vendor"
: > "$S/bus/pci/devices/0000:3b:00.0/driver_override"
ln -s ../../drivers/ixgbe "$S/bus/pci/devices/0000:3b:00.0/driver"
ln -s ../../../../kernel/iommu_groups/17 "$S/bus/pci/devices/0000:3b:00.0/iommu_group"
echo 0x15b3 > "$S/bus/pci/devices/0000:5e:00.0/vendor"
ln -s ../../drivers/mlx5_core "$S/bus/pci/devices/0000:5e:00.0/driver"
: > "$t/mounts"
cat > "$t/appliance.yaml" <<'YAML'
ports:
  - { name: wan, device: 0000:3b:00.0 }
  - name: lan
    device: "0000:5e:00.0"
  - { name: tap, device: net_pcap0 }
YAML
export APPLIANCE_SYSFS=$S APPLIANCE_MOUNTS=$t/mounts
snapshot() { (cd "$S" && find . -type f -exec md5sum {} + | sort; find . -type l -printf '%p -> %l\n' | sort); }

echo "== dry run"
before=$(snapshot)
bash "$script" --dry-run --hugepages 1G:4 --node 0 --user appliance --bind-from-config "$t/appliance.yaml" > "$t/out"
expect "would write: echo 4 > $S/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages"
expect "would run: mkdir -p /dev/hugepages"
expect "would run: mount -t hugetlbfs -o pagesize=1G nodev /dev/hugepages"
expect "would run: chown appliance /dev/hugepages"
expect "0000:3b:00.0: vendor 0x8086, ixgbe -> vfio-pci"
expect "would write: echo 0000:3b:00.0 > $S/bus/pci/devices/0000:3b:00.0/driver/unbind"
expect "would write: echo vfio-pci > $S/bus/pci/devices/0000:3b:00.0/driver_override"
expect "would write: echo 0000:3b:00.0 > $S/bus/pci/drivers_probe"
expect "would run: chown appliance /dev/vfio/17"
expect "0000:5e:00.0: Mellanox/NVIDIA (vendor 0x15b3) on mlx5_core: not rebound"
expect "dry run: nothing was changed"
grep -q "net_pcap0" "$t/out" && fail "a vdev was taken for a PCI address"
[ "$(snapshot)" = "$before" ] || fail "the dry run changed the tree"
[ "$(grep -c '^would ' "$t/out")" = 8 ] || { cat "$t/out"; fail "8 steps expected"; }

echo "== real run on the fake tree"
echo "nodev /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0" > "$t/mounts"
bash "$script" --hugepages 2M:512 --bind 0000:3b:00.0 > "$t/out"
[ "$(cat "$S/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")" = 512 ] || fail "nr_hugepages"
[ "$(cat "$S/bus/pci/drivers/ixgbe/unbind")" = 0000:3b:00.0 ] || fail "unbind"
[ "$(cat "$S/bus/pci/devices/0000:3b:00.0/driver_override")" = vfio-pci ] || fail "driver_override"
[ "$(cat "$S/bus/pci/drivers_probe")" = 0000:3b:00.0 ] || fail "drivers_probe"
expect "hugetlbfs: /dev/hugepages already mounted"

echo "== second run: everything in place"
rm "$S/bus/pci/devices/0000:3b:00.0/driver"
ln -s ../../drivers/vfio-pci "$S/bus/pci/devices/0000:3b:00.0/driver"
before=$(snapshot)
bash "$script" --hugepages 2M:256 --bind 0000:3b:00.0 > "$t/out"
expect "hugepages: 512 x 2M already reserved (want 256)"
expect "0000:3b:00.0: already bound to vfio-pci"
[ "$(snapshot)" = "$before" ] || fail "an idempotent run changed the tree"

echo "== bad arguments"
for args in "--hugepages 3M:1|--hugepages 3M:1: SIZE:COUNT" "--bind 0000:99:00.0|--bind 0000:99:00.0: no such PCI device" \
  "--bind eth0|--bind eth0: a PCI address" "--frobnicate|unknown argument --frobnicate" \
  "--hugepages 1G:2 --node 3|node3/hugepages/hugepages-1048576kB does not exist"; do
  a=${args%%|*}; msg=${args#*|}
  set +e; bash "$script" --dry-run $a > "$t/out" 2>&1; rc=$?; set -e
  [ "$rc" = 2 ] || { cat "$t/out"; fail "$a: exit $rc, want 2"; }
  expect "$msg"
done
echo "setup_host_test: OK"
