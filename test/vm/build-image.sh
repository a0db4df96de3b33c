#!/usr/bin/env bash
# Builds the guest for the real-kernel tests (test/vm/README.md): fetches Debian packages with
# `apt-get download` (never installs them), extracts them with dpkg-deb -x and packs a small
# initramfs (busybox, a kernel module closure, nvme-cli, nbd-client, filesystem tools and their
# libraries, test/vm/guest/init). Prints the image directory (vmlinuz, base.cpio.gz, kver) as its
# last line. The image is cached under a key made of the package versions and this script's inputs,
# so a second run is a lookup; CI starts empty and fetches once.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if [ -n "${CAIRN_VM_CACHE:-}" ]; then cache="$CAIRN_VM_CACHE"
elif [ "$(id -u)" -eq 0 ]; then cache=/var/cache/cairn-vm
else cache="${XDG_CACHE_HOME:-$HOME/.cache}/cairn-vm"; fi
mkdir -p "$cache/debs"

# The kernel: whatever linux-image-amd64 (the Debian metapackage) points at today.
kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
[ -n "$kpkg" ] || { echo "build-image: apt knows no linux-image-amd64 (run apt-get update)" >&2; exit 1; }

# Tools the guest scripts run, and the packages of the libraries they need beyond libc (ldd below
# fails the build when one is missing, naming it). coreutils for a dd with oflag=direct.
pkgs=("$kpkg" busybox-static nvme-cli libnvme1 libjson-c5 libdbus-1-3 nbd-client libnl-3-200 libnl-genl-3-200
  e2fsprogs libext2fs2 libcom-err2 libss2 xfsprogs libinih1 liburcu8 libedit2 util-linux coreutils)

# One apt-cache call for every version (each call reads the whole package cache: seconds apiece).
mapfile -t versions < <(apt-cache policy "${pkgs[@]}" | awk '/^[^ ]/ {p = $1; sub(/:$/, "", p)} /Candidate:/ {print p "=" $2}')
for p in "${pkgs[@]}"; do
  printf '%s\n' "${versions[@]}" | grep -q "^$p=[^(]" || { echo "build-image: no candidate version for $p (run apt-get update)" >&2; exit 1; }
done
key="$( { printf '%s\n' "${versions[@]}"; cat "$0" "$here/guest/init"; } | sha256sum | cut -c1-16)"
image="$cache/image-$key"
if [ -f "$image/base.cpio.gz" ]; then echo "$image"; exit 0; fi

# Download what the cache lacks (file names carry the version, an epoch's colon as %3a).
for pv in "${versions[@]}"; do
  p="${pv%%=*}"; v="${pv#*=}"
  ls "$cache/debs/${p}_${v//:/%3a}_"*.deb >/dev/null 2>&1 && continue
  (cd "$cache/debs" && apt-get download -q "$pv" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
  ls "$cache/debs/${p}_${v//:/%3a}_"*.deb >/dev/null 2>&1 || { echo "build-image: apt-get download $pv failed" >&2; exit 1; }
done

work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
x="$work/x"; r="$work/root"
mkdir -p "$x" "$r"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,etc,proc,sys,dev,tmp,mnt,run,cairn}
for pv in "${versions[@]}"; do
  p="${pv%%=*}"; v="${pv#*=}"
  dpkg-deb -x "$(ls "$cache/debs/${p}_${v//:/%3a}_"*.deb | head -1)" "$x"
done

# Kernel and module closure. The .deb ships no modules.dep (its postinst makes it): depmod first.
kver="$(ls "$x/lib/modules" | head -1)"
depmod -b "$x" "$kver"
cp "$x/boot/vmlinuz-$kver" "$work/vmlinuz"
# virtio_pci is not among virtio_net's dependencies; crc32c for ext4/xfs metadata and NVMe/TCP digests
# is requested by name through the crypto API, so no module depends on it either.
mods=(virtio_pci virtio_net nbd nvme_tcp ext4 xfs crc32c_generic 9p 9pnet_virtio)
# Linux's own NVMe/TCP target, loaded only by guest/nvmet-loop.sh (a by-hand reference for nvmf.sh).
extra=(nvmet_tcp)
stage() {  # stage LIST MODULE...: copies each module's closure and appends the new ones to LIST in load order
  list="$1"; shift
  for m in "$@"; do
    modprobe -d "$x" -S "$kver" --show-depends "$m" | while read -r kind path _; do
      [ "$kind" = insmod ] || continue  # "builtin NAME": nothing to load
      rel="${path#"$x"}"
      grep -qxF "$rel" "$r/etc/modules" "$r/etc/modules.nvmet" 2>/dev/null && continue
      mkdir -p "$r$(dirname "$rel")"
      cp "$path" "$r$rel"
      echo "$rel" >> "$list"
    done
  done
}
: > "$r/etc/modules"
stage "$r/etc/modules" "${mods[@]}"
: > "$r/etc/modules.nvmet"
stage "$r/etc/modules.nvmet" "${extra[@]}"

cp "$x/bin/busybox" "$r/bin/busybox"
# Tools, each with the libraries ldd resolves against the extracted tree first (libc from the host).
tools=(sbin/nbd-client usr/sbin/nvme sbin/mke2fs sbin/e2fsck sbin/mkfs.xfs sbin/xfs_repair sbin/blkdiscard bin/dd)
libpath="$x/lib/x86_64-linux-gnu:$x/usr/lib/x86_64-linux-gnu"
for t in "${tools[@]}"; do
  cp -L "$x/$t" "$r/usr/bin/$(basename "$t")"
  out="$(LD_LIBRARY_PATH="$libpath" ldd "$x/$t")"
  if grep -q 'not found' <<<"$out"; then echo "build-image: $t: $(grep 'not found' <<<"$out" | tr '\n' ' ')" >&2; exit 1; fi
  awk '/=> \// {print $3} /^\t\/lib64\// {print $1}' <<<"$out" | while read -r lib; do
    case "$lib" in /lib64/*) cp -L "$lib" "$r/lib64/";; *) cp -L "$lib" "$r/lib/x86_64-linux-gnu/";; esac
  done
done
for a in mkfs.ext4:mke2fs fsck.ext4:e2fsck; do ln -sf "${a#*:}" "$r/usr/bin/${a%%:*}"; done
cp "$x/etc/mke2fs.conf" "$r/etc/mke2fs.conf"
echo "$kver" > "$work/kver"
install -m 0755 "$here/guest/init" "$r/init"

(cd "$r" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/base.cpio.gz"
mkdir -p "$image.tmp"
mv "$work/vmlinuz" "$work/base.cpio.gz" "$work/kver" "$image.tmp/"
rm -rf "$image"; mv "$image.tmp" "$image"
# Older images (other package versions or inputs) are not used again.
find "$cache" -maxdepth 1 -name 'image-*' ! -name "image-$key" -exec rm -rf {} +
echo "$image"
