#!/usr/bin/env bash
# Installs the system packages the test suite and benchmarks drive as real clients and peers
# (Debian): qemu-img/qemu-io/qemu-nbd, nbdinfo/nbdcopy/nbdsh, nbdfuse, nbdkit, fio, the libnbd
# Python binding, filesystems and FUSE; a C compiler for the block-checksum kernel that
# `npm run build` compiles (native/); a C++ compiler and make for the PKCS#11 binding (pkcs11js) that
# `npm ci` builds with node-gyp; SoftHSM2, the software token the PKCS#11 KEK tests use; and qemu-system-x86
# with kmod (depmod, modprobe --show-depends) and cpio, which boot the real-kernel tests' guest
# (test/vm/: its kernel and tools are fetched by `apt-get download`, never installed), and nbd-client,
# which the CSI plugin runs in that guest from the host's root shared over 9p; etcd-server (the cluster's
# control plane in the cluster tests), iproute2 and iptables (network namespaces, tc netem and partitions);
# chromium, the browser the dashboard tests (test/ui-*.test.ts) drive through playwright-core.
# Idempotent; needs root (or sudo).
set -euo pipefail
pkgs=(qemu-utils libnbd-bin nbdfuse nbdkit fio python3-libnbd e2fsprogs xfsprogs fuse3 util-linux openssl procps gcc libc6-dev g++ make softhsm2 qemu-system-x86 kmod cpio nbd-client etcd-server iproute2 iptables chromium)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
