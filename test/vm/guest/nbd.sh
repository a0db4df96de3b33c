# Kernel NBD client against the host's `cairn serve` (test/vm-nbd.test.ts). /cairn/env: NBD_PORT,
# RAW (patterns, discards; the host checks them afterwards), FS (filesystems).
check nbd-connect /usr/bin/nbd-client 10.0.2.2 "$NBD_PORT" /dev/nbd0 -N "$RAW" -b 4096 || return 1
check nbd-size sh -c "[ \$(blockdev --getsize64 /dev/nbd0) = $RAW_BYTES ]"
# One byte value per request size (octal 101.. for fill), each at its own MiB: the host reads them back with qemu-io.
i=0
for bs in 4096 8192 65536 131072 524288 1048576; do
  i=$((i + 1))
  fill "$((100 + i))" 1048576 /tmp/p
  check "nbd-pattern-$bs" put /tmp/p /dev/nbd0 $((i * 1048576)) "$bs"
done
head -c 4194304 /dev/urandom > /tmp/r
check nbd-random-4m put /tmp/r /dev/nbd0 16777216 1048576
echo "CAIRN-VALUE random-4m $(sha256sum < /tmp/r | cut -d' ' -f1)"
check nbd-flush blockdev --flushbufs /dev/nbd0
# Discard and zero-out whole MiBs written above (2 and 3); the host expects zeros there.
check nbd-blkdiscard blkdiscard -o 2097152 -l 1048576 /dev/nbd0 && check nbd-blkdiscard-reads-zero zeroed /dev/nbd0 2097152 1048576
check nbd-blkdiscard-z blkdiscard -z -o 3145728 -l 1048576 /dev/nbd0 && check nbd-blkdiscard-z-reads-zero zeroed /dev/nbd0 3145728 1048576
check nbd-disconnect /usr/bin/nbd-client -d /dev/nbd0

check nbd-connect-fs /usr/bin/nbd-client 10.0.2.2 "$NBD_PORT" /dev/nbd1 -N "$FS" -b 4096 || return 1
fs_cycle nbd-ext4 /dev/nbd1 ext4
fs_cycle nbd-xfs /dev/nbd1 xfs
check nbd-disconnect-fs /usr/bin/nbd-client -d /dev/nbd1

# The CSI plugin's kernel-NBD attach path (test/vm/csi-guest.ts), run from the host's root shared
# read-only over 9p (node, this tree's dist/ and the host's tools), chrooted as in the plugin's image.
if [ -n "${CSI_API:-}" ]; then
  check csi-9p-mount host_root || return 1
  CSI_API="$CSI_API" CSI_NBD="$CSI_NBD" CSI_TOKEN="$CSI_TOKEN" TMPDIR=/run/tmp chroot /host /usr/bin/node "$REPO/dist/test/vm/csi-guest.js" || failed=$((failed + 1))
  host_root_off
fi
return $failed
