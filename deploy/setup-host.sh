#!/usr/bin/env bash
# Prepares a host for the appliance: reserves hugepages, mounts hugetlbfs, binds NICs to
# vfio-pci (Mellanox/NVIDIA mlx5 NICs are left on their kernel driver: their PMD is bifurcated),
# and hands the hugepage mount and VFIO group devices to the service user. Idempotent: what is
# already in place is left alone. Run by deploy/systemd/appliance.service before the appliance
# starts (ExecStartPre, as root), or by hand.
#
#   setup-host.sh [--dry-run] [--hugepages SIZE:COUNT] [--node N] [--mount DIR] [--user USER]
#                 [--bind PCI]... [--bind-from-config FILE] [--driver DRIVER]
#
#   --hugepages 1G:4       reserve 4 pages of 1 GiB (sizes: 2M, 1G); with --node N on that NUMA
#                          node only (the node of the NIC: /sys/bus/pci/devices/PCI/numa_node)
#   --mount DIR            hugetlbfs mount point (default /dev/hugepages), pagesize = SIZE
#   --user USER            owner of DIR and of the bound devices' /dev/vfio/GROUP
#   --bind 0000:3b:00.0    bind a NIC to DRIVER (default vfio-pci); repeatable
#   --bind-from-config F   bind every PCI address that F's ports[].device names
#   --dry-run              print what would be done, change nothing
#
# Exit status: 0 done (or would be done), 2 bad arguments or missing devices, 1 a step failed.
# APPLIANCE_SYSFS and APPLIANCE_MOUNTS (default /sys and /proc/mounts) point the script at
# another tree: the tests run it against a fake sysfs.
set -euo pipefail

SYS=${APPLIANCE_SYSFS:-/sys}
MOUNTS=${APPLIANCE_MOUNTS:-/proc/mounts}
DRY=0
HUGE=""
NODE=""
MOUNT=/dev/hugepages
USER_NAME=""
DRIVER=vfio-pci
BIND=()

die() { echo "setup-host: $*" >&2; exit 2; }
say() { echo "setup-host: $*"; }
# Runs a command, or prints it under --dry-run.
run() {
  if ((DRY)); then echo "would run: $*"; else "$@"; fi
}
# Writes VALUE to FILE (a sysfs attribute), or prints it under --dry-run.
put() {
  local value=$1 file=$2
  if ((DRY)); then echo "would write: echo $value > $file"; else echo "$value" > "$file"; fi
}

while (($#)); do
  case $1 in
    --dry-run) DRY=1 ;;
    --hugepages) HUGE=${2:?--hugepages needs SIZE:COUNT}; shift ;;
    --node) NODE=${2:?--node needs a NUMA node number}; shift ;;
    --mount) MOUNT=${2:?--mount needs a directory}; shift ;;
    --user) USER_NAME=${2:?--user needs a user name}; shift ;;
    --driver) DRIVER=${2:?--driver needs a driver name}; shift ;;
    --bind) BIND+=("${2:?--bind needs a PCI address}"); shift ;;
    --bind-from-config)
      f=${2:?--bind-from-config needs a file}; shift
      [ -r "$f" ] || die "--bind-from-config: cannot read $f"
      # ports[].device values that are PCI addresses (domain:bus:device.function).
      while read -r a; do BIND+=("$a"); done < <(
        grep -oE 'device:[[:space:]]*"?[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]' "$f" |
          grep -oE '[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$')
      ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (--help lists them)" ;;
  esac
  shift
done

# --- hugepages ------------------------------------------------------------------------------
if [ -n "$HUGE" ]; then
  [[ $HUGE =~ ^(2M|1G):([0-9]+)$ ]] || die "--hugepages $HUGE: SIZE:COUNT with SIZE 2M or 1G, e.g. 1G:4"
  size=${BASH_REMATCH[1]}; count=${BASH_REMATCH[2]}
  kb=$([ "$size" = 2M ] && echo 2048 || echo 1048576)
  if [ -n "$NODE" ]; then
    [[ $NODE =~ ^[0-9]+$ ]] || die "--node $NODE: a NUMA node number"
    dir=$SYS/devices/system/node/node$NODE/hugepages/hugepages-${kb}kB
  else
    dir=$SYS/kernel/mm/hugepages/hugepages-${kb}kB
  fi
  [ -d "$dir" ] || die "--hugepages $HUGE: $dir does not exist (1G pages need CPU support (pdpe1gb) and, on older kernels, hugepagesz=1G on the kernel command line)"
  have=$(cat "$dir/nr_hugepages")
  if [ "$have" -ge "$count" ]; then
    say "hugepages: $have x $size already reserved${NODE:+ on node $NODE} (want $count)"
  else
    say "hugepages: reserving $count x $size${NODE:+ on node $NODE} (now $have)"
    put "$count" "$dir/nr_hugepages"
    if ((!DRY)); then
      got=$(cat "$dir/nr_hugepages")
      [ "$got" -ge "$count" ] || { echo "setup-host: only $got of $count $size pages could be reserved (memory fragmented: reserve at boot with hugepages=$count hugepagesz=$size)" >&2; exit 1; }
    fi
  fi
  # hugetlbfs mount with that page size.
  if awk -v m="$MOUNT" '$2 == m && $3 == "hugetlbfs" { found = 1 } END { exit !found }' "$MOUNTS"; then
    say "hugetlbfs: $MOUNT already mounted"
  else
    run mkdir -p "$MOUNT"
    run mount -t hugetlbfs -o "pagesize=$size" nodev "$MOUNT"
  fi
  if [ -n "$USER_NAME" ]; then
    run chown "$USER_NAME" "$MOUNT"
  fi
fi

# --- NICs -----------------------------------------------------------------------------------
for pci in "${BIND[@]}"; do
  [[ $pci =~ ^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$ ]] || die "--bind $pci: a PCI address such as 0000:3b:00.0"
  dev=$SYS/bus/pci/devices/$pci
  [ -d "$dev" ] || die "--bind $pci: no such PCI device (lspci -D lists them)"
  vendor=$(cat "$dev/vendor")
  current=""
  [ -e "$dev/driver" ] && current=$(basename "$(readlink -f "$dev/driver")")
  if [ "$vendor" = 0x15b3 ]; then
    # mlx5 is bifurcated: the DPDK PMD works through the kernel driver (mlx5_core + ib_uverbs),
    # so the NIC must stay on it.
    say "$pci: Mellanox/NVIDIA (vendor 0x15b3) on ${current:-no driver}: not rebound (mlx5 PMD is bifurcated; needs mlx5_core and ib_uverbs loaded)"
    continue
  fi
  if [ "$current" = "$DRIVER" ]; then
    say "$pci: already bound to $DRIVER"
  else
    if [ "$DRIVER" = vfio-pci ]; then
      if [ -z "$(ls -A "$SYS/kernel/iommu_groups" 2>/dev/null)" ]; then
        echo "setup-host: warning: no IOMMU groups: enable the IOMMU (intel_iommu=on iommu=pt, or amd_iommu=on) or vfio-pci cannot bind $pci" >&2
      fi
      [ -d "$SYS/bus/pci/drivers/vfio-pci" ] || run modprobe vfio-pci
    fi
    say "$pci: vendor $vendor, ${current:-no driver} -> $DRIVER"
    [ -n "$current" ] && put "$pci" "$dev/driver/unbind"
    put "$DRIVER" "$dev/driver_override"
    put "$pci" "$SYS/bus/pci/drivers_probe"
  fi
  if [ -n "$USER_NAME" ] && [ "$DRIVER" = vfio-pci ] && [ -e "$dev/iommu_group" ]; then
    group=$(basename "$(readlink -f "$dev/iommu_group")")
    run chown "$USER_NAME" "/dev/vfio/$group"
  fi
done
((DRY)) && say "dry run: nothing was changed"
exit 0
