#!/usr/bin/env bash
# Builds the appliance's container image (OCI) without any registry base image:
#
#   1. a minimal Debian 12 (bookworm) root filesystem made by mmdebstrap --variant=minbase from
#      deb.debian.org (bookworm, bookworm-updates, bookworm-security), with only the runtime
#      packages the appliance needs: the Debian packages of the libraries the binary links
#      (found with ldd and dpkg -S on this host) and the DPDK drivers (PMDs) it loads at run time
#      (RUNTIME_PACKAGES below). No documentation, no man pages, no setuid/setgid bits.
#      Cached as target/container/rootfs-<hash>.tar: a second build only repeats steps 2-3.
#   2. the release binary (cargo build --release --locked -p appliance) at /usr/local/bin/appliance;
#   3. assembled with buildah from scratch (labels org.opencontainers.image.*; the default command
#      is the ConfigMap's entrypoint, as in deploy/k8s/daemonset.yaml) and written as an OCI
#      archive, which skopeo or podman push to a registry:
#
#   bash deploy/container/build.sh --out appliance.oci.tar
#   skopeo copy oci-archive:appliance.oci.tar docker://registry.example.com/appliance:0.1.0
#
# Options: --out FILE (default target/container/appliance.oci.tar), --tag TAG (the image name in
# the archive and in local storage; default localhost/appliance:<version>).
# Environment: APPLIANCE_BIN (use this binary instead of building), DEBIAN_MIRROR,
# DEBIAN_SECURITY_MIRROR, SOURCE_DATE_EPOCH (default: the last commit's time; file times in the
# root filesystem and the image's creation time), STORAGE_DRIVER (buildah's, e.g. vfs).
# Runs as root (mmdebstrap's root mode, buildah's storage); installs mmdebstrap and buildah if
# they are missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

# DPDK drivers loaded by the EAL from /usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0 (every .so there
# is loaded at start, so the image holds only these): virtual devices used in tests and labs,
# the Intel NICs and VFs and mlx5 of docs/operations.md, the crypto devices of the IPsec path.
RUNTIME_PACKAGES=(
  librte-bus-pci23 librte-bus-vdev23 librte-bus-auxiliary23 librte-mempool-ring23
  librte-net-pcap23 librte-net-null23 librte-net-ring23 librte-net-tap23 librte-net-af-packet23
  librte-net-iavf23 librte-net-i40e23 librte-net-ice23 librte-net-ixgbe23 librte-net-igc23
  librte-net-mlx5-23
  librte-crypto-ipsec-mb23 librte-crypto-openssl23 librte-common-qat23
  libpcap0.8
)

out=target/container/appliance.oci.tar
version=$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)
tag=localhost/appliance:$version
while (($#)); do
  case $1 in
    --out|--tag)
      if [ $# -lt 2 ] || [ -z "$2" ]; then
        echo "build.sh: $1 needs a value (--out FILE, --tag TAG)" >&2; exit 2
      fi
      if [ "$1" = --out ]; then out=$2; else tag=$2; fi
      shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (--out FILE, --tag TAG)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "build.sh: run as root (mmdebstrap root mode, buildah storage)" >&2; exit 1; }

missing=()
for p in mmdebstrap buildah; do command -v "$p" >/dev/null || missing+=("$p"); done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 1. The binary and the packages of the libraries it links.
bin=${APPLIANCE_BIN:-}
if [ -z "$bin" ]; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  nice cargo build --release --locked -p appliance
  bin=target/release/appliance
fi
libpkgs=()
while read -r lib; do
  # usrmerge: dpkg knows a library under /lib or /usr/lib, whichever its package ships.
  pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "/usr${lib#/usr}" 2>/dev/null || dpkg -S "${lib#/usr}" 2>/dev/null) ||
    { echo "build.sh: no Debian package ships $lib (linked by $bin)" >&2; exit 1; }
  libpkgs+=("${pkg%%:*}")
done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }')
mapfile -t packages < <(printf '%s\n' "${libpkgs[@]}" "${RUNTIME_PACKAGES[@]}" | sort -u)

# 2. The root filesystem, cached by what determines it.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
secmirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
mkdir -p target/container
key=$(printf '%s\n' "$mirror" "$secmirror" "${packages[@]}" | cat - "$0" | sha256sum | cut -c1-16)
rootfs=target/container/rootfs-$key.tar
if [ ! -s "$rootfs" ]; then
  echo "build.sh: mmdebstrap bookworm minbase + ${#packages[@]} packages -> $rootfs" >&2
  rm -f target/container/rootfs-*.tar
  # The hooks run in mmdebstrap's shell, where $1 is the root filesystem being made.
  # shellcheck disable=SC2016
  mmdebstrap --mode=root --format=tar --variant=minbase --quiet \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='find "$1" -xdev -type f -perm /6000 -exec chmod ug-s {} +' \
    --customize-hook='mkdir -p "$1/etc/appliance" "$1/run/appliance" "$1/var/run/dpdk"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log "$1"/etc/machine-id "$1"/var/cache/ldconfig/aux-cache' \
    bookworm "$rootfs.tmp" \
    "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $secmirror bookworm-security main"
  mv "$rootfs.tmp" "$rootfs"
fi

# 3. The image.
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah add --quiet "$ctr" "$rootfs" /
buildah copy --quiet --chmod 0755 "$ctr" "$bin" /usr/local/bin/appliance
buildah config \
  --cmd '["/bin/sh", "/etc/appliance/entrypoint.sh"]' --entrypoint '[]' \
  --workingdir / --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --label org.opencontainers.image.title=appliance \
  --label org.opencontainers.image.description="DPDK 22.11 packet appliance on Debian 12 (bookworm) minbase" \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.revision="$revision" \
  --label org.opencontainers.image.created="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)" \
  --label org.opencontainers.image.base.name=debian:bookworm-minbase-mmdebstrap \
  "$ctr"
buildah rmi "$tag" >/dev/null 2>&1 || true   # the previous build's image, not left dangling
buildah commit --quiet --format oci --timestamp "$SOURCE_DATE_EPOCH" --rm "$ctr" "$tag" >/dev/null
trap - EXIT
mkdir -p "$(dirname "$out")"
rm -f "$out"
buildah push --quiet "$tag" "oci-archive:$out:$tag"
echo "build.sh: $tag -> $out ($(du -h "$out" | cut -f1); packages: ${packages[*]})" >&2
