# The kernel's NVMe/TCP initiator against the host's `cairn serve --nvmf` (test/vm-nvmf.test.ts).
# /cairn/env: DISC_PORT, NVMF_PORT, SUBNQN (the default tenant), HOSTNQN, HOSTID; RAW (RAW_BYTES),
# FS (FS_BYTES): volumes of distinct sizes, found among the namespaces by size; GROW_BYTES: RAW's size
# after the host resizes it; LOCKED_NQN: a tenant whose allow-list holds ALLOWED_HOSTNQN only.
mkdir -p /etc/nvme
echo "$HOSTNQN" > /etc/nvme/hostnqn
echo "$HOSTID" > /etc/nvme/hostid
ADDR="${TARGET_ADDR:-10.0.2.2}"  # another target by hand (README)
T="-t tcp -a $ADDR -s $NVMF_PORT"

# size_becomes DEV BYTES: the kernel sees the new size within 30 s.
size_becomes() {
  tries=0
  while [ $tries -lt 60 ]; do
    [ "$(cat "/sys/block/${1#/dev/}/size")" = "$(($2 / 512))" ] && return 0
    tries=$((tries + 1)); sleep 0.5
  done
  echo "size still $(cat "/sys/block/${1#/dev/}/size") sectors"; return 1
}
refuses() { ! "$@"; }
# refuses_write DEV: a block device that fails a direct write.
refuses_write() { test -b "$1" && fill 177 4096 /tmp/p && ! dd if=/tmp/p of="$1" bs=4096 oflag=direct conv=notrunc status=none; }
same_range() {  # same_range DEV_A DEV_B LEN: the first LEN bytes are equal
  dd if="$1" of=/tmp/a bs=1048576 count=$(($3 / 1048576)) iflag=direct status=none &&
  dd if="$2" of=/tmp/b bs=1048576 count=$(($3 / 1048576)) iflag=direct status=none && cmp /tmp/a /tmp/b
}
disconnect_all() { nvme disconnect -n "$1" && ! ls /dev/nvme0n* 2>/dev/null | grep -q .; }

check nvmf-discover sh -c "nvme discover -t tcp -a $ADDR -s $DISC_PORT | tee /dev/stderr | grep -q '$SUBNQN'"
check nvmf-connect nvme connect $T -n "$SUBNQN" --nr-io-queues=2 || return 1
raw="$(ns_by_size "$RAW_BYTES")"; fs="$(ns_by_size "$FS_BYTES")"
check nvmf-namespaces test -b "$raw" -a -b "$fs" || return 1
check nvmf-list sh -c "nvme list | grep -q ${raw#/dev/}"
# Multipath's head disk has no mq/ folder: the controller's own line says how many queues it made.
check nvmf-io-queues sh -c "dmesg | grep -q ': creating 2 I/O queues'"
check nvmf-id-ctrl sh -c "nvme id-ctrl /dev/nvme0 | grep -q 'subnqn *: $SUBNQN'"
# id-ns: the namespace size in logical blocks times the block size is the volume's size.
nsze_bytes() { n=$(nvme id-ns "$1" -o json | grep '"nsze"' | tr -dc 0-9) && echo $((n * $(cat "/sys/block/${1#/dev/}/queue/logical_block_size"))); }
check nvmf-id-ns test "$(nsze_bytes "$raw")" = "$RAW_BYTES"

# Patterns across request sizes: small ones travel in-capsule, large ones by R2T/H2CData.
i=0
for bs in 4096 8192 65536 131072 524288 1048576; do
  i=$((i + 1))
  fill "$((100 + i))" 1048576 /tmp/p
  check "nvmf-pattern-$bs" put /tmp/p "$raw" $((i * 1048576)) "$bs"
done
head -c 4194304 /dev/urandom > /tmp/r
check nvmf-random-4m put /tmp/r "$raw" 16777216 1048576
echo "CAIRN-VALUE random-4m $(sha256sum < /tmp/r | cut -d' ' -f1)"
check nvmf-flush nvme flush "$raw"
# fio with verify (the host's fio, run from its root shared over 9p): mixed sizes, 16 requests in flight.
check nvmf-9p-mount host_root &&
check nvmf-fio-verify chroot /host fio --name=verify --filename="$raw" --direct=1 --ioengine=libaio --iodepth=16 \
  --rw=randwrite --bssplit=4k/50:64k/30:256k/20 --offset=44M --size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 \
  --output-format=terse
host_root_off
check nvmf-blkdiscard blkdiscard -o 2097152 -l 1048576 "$raw" && check nvmf-blkdiscard-reads-zero zeroed "$raw" 2097152 1048576
check nvmf-blkdiscard-z blkdiscard -z -o 3145728 -l 1048576 "$raw" && check nvmf-blkdiscard-z-reads-zero zeroed "$raw" 3145728 1048576
fs_cycle nvmf-ext4 "$fs" ext4
fs_cycle nvmf-xfs "$fs" xfs

# A snapshot taken while the guest writes (elsewhere on the volume) appears as a read-only namespace
# with the volume's contents.
head -c 4194304 /dev/urandom > /tmp/busy
( i=0; while [ $i -lt 10 ]; do dd if=/tmp/busy of="$raw" bs=1048576 seek=48 oflag=direct conv=notrunc status=none; i=$((i + 1)); done ) &
busy=$!
reply="$(ask snapshot "$RAW")"
check nvmf-ask-snapshot test "$reply" = ok
wait $busy; rc=$?  # wait is the shell's own: check runs its command in a subshell
check nvmf-writes-during-snapshot test "$rc" = 0
snap="$(ns_by_size "$RAW_BYTES" 1)"
check nvmf-snapshot-ns test -b "$snap"
check nvmf-snapshot-same same_range "$raw" "$snap" 24117248
check nvmf-snapshot-refuses-writes refuses_write "$snap"
# A resize reaches the host's kernel through an asynchronous event.
reply="$(ask resize "$RAW" "$GROW_BYTES")"
check nvmf-ask-resize test "$reply" = ok
check nvmf-resize-seen size_becomes "$raw" "$GROW_BYTES"
# A clone of the snapshot, beside its source on the same host (its own NGUID, or the kernel hides it).
reply="$(ask clone "$RAW@vm" "${RAW}clone")"
check nvmf-ask-clone test "$reply" = ok
clone="$(ns_by_size "$RAW_BYTES" 0)"
check nvmf-clone-ns test -b "$clone"
check nvmf-clone-same same_range "$snap" "$clone" 24117248
fill 175 1048576 /tmp/p
check nvmf-clone-writes put /tmp/p "$clone" 0 1048576
check nvmf-clone-leaves-snapshot sh -c "test -b \"$snap\" && ! dd if=$snap bs=1048576 count=1 iflag=direct status=none | cmp -s - /tmp/p"
check nvmf-disconnect disconnect_all "$SUBNQN"

# Header and data digests (CRC32C), two I/O queues: the random data reads back, a new write lands.
# A short reconnect delay: the daemon is killed and restarted below and the controller must come back.
check nvmf-connect-digests nvme connect $T -n "$SUBNQN" --nr-io-queues=2 --hdr-digest --data-digest --reconnect-delay=1 --ctrl-loss-tmo=120 || return 1
raw="$(ns_by_size "$GROW_BYTES" 0)"
check nvmf-digests-ns test -b "$raw" || return 1
check nvmf-digests-read sh -c "dd if=$raw bs=1048576 skip=16 count=4 iflag=direct status=none | sha256sum | grep -q $(sha256sum < /tmp/r | cut -d' ' -f1)"
fill 170 1048576 /tmp/p
check nvmf-digests-write put /tmp/p "$raw" 8388608 1048576
fill 171 65536 /tmp/p
check nvmf-digests-write-64k put /tmp/p "$raw" 9437184 4096

# The daemon killed with SIGKILL while the guest writes: what the guest flushed before is there after the
# controller reconnects to the restarted daemon, and new I/O works.
fill 176 1048576 /tmp/flushed
check nvmf-kill-flushed-write put /tmp/flushed "$raw" 10485760 1048576
check nvmf-kill-flush nvme flush "$raw"
head -c 8388608 /dev/urandom > /tmp/busy
( i=0; while [ $i -lt 20 ]; do dd if=/tmp/busy of="$raw" bs=1048576 seek=32 oflag=direct conv=notrunc status=none 2>/dev/null; i=$((i + 1)); done ) &
busy=$!
reply="$(ask kill)"
check nvmf-ask-kill test "$reply" = ok
wait $busy
check nvmf-kill-reconnected sh -c "dd if=$raw of=/tmp/back bs=1048576 skip=10 count=1 iflag=direct status=none && cmp /tmp/flushed /tmp/back"
check nvmf-kill-new-io put /tmp/busy "$raw" 33554432 1048576
check nvmf-disconnect-digests disconnect_all "$SUBNQN"

# A tenant with an allow-list: another host NQN is refused at Connect, the listed one gets in.
check nvmf-refused-host refuses nvme connect $T -n "$LOCKED_NQN" -q nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-00000000bad0
check nvmf-allowed-host nvme connect $T -n "$LOCKED_NQN" -q "$ALLOWED_HOSTNQN"
check nvmf-disconnect-allowed disconnect_all "$LOCKED_NQN"
return $failed
