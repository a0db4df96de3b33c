# Helpers for the guest scripts (sourced by /init with /cairn/env, which the host writes per boot).
. /cairn/env
failed=0
dmesg_seen=0

# busybox's shell runs its own applets before anything on PATH: the real tools by their paths.
dd() { /usr/bin/dd "$@"; }
blkdiscard() { /usr/bin/blkdiscard "$@"; }

# check NAME CMD...: runs CMD and prints CAIRN-RESULT NAME PASS, or FAIL with the output's tail and dmesg's.
check() {
  name="$1"; shift
  if out="$("$@" 2>&1)"; then
    echo "CAIRN-RESULT $name PASS"
  else
    rc=$?
    failed=$((failed + 1))
    echo "CAIRN-RESULT $name FAIL rc=$rc $(echo "$out" | tail -n 4 | tr '\n' ' ')"
    # The kernel's lines since the last failure's (a later failure would repeat them).
    dmesg | tail -n +$((dmesg_seen + 1)) | tail -n 8 | sed 's/^/CAIRN-DMESG /'
    dmesg_seen=$(dmesg | wc -l)
    return $rc
  fi
}

# ask WHAT...: asks the host to act (snapshot, resize, …) and waits for its one-line answer on the console.
# The marker goes to the console itself: callers capture the answer with $(ask ...).
ask() {
  echo "CAIRN-ASK $*" > /dev/console
  read -r reply < /dev/console
  echo "$reply"
}

# fill BYTE SIZE FILE: SIZE bytes of the octal BYTE value.
fill() { head -c "$2" /dev/zero | tr '\0' "\\$1" > "$3"; }

# put FILE DEV OFFSET BS: writes FILE at OFFSET with direct I/O in BS requests, then reads it back.
put() {
  n=$(wc -c < "$1")
  dd if="$1" of="$2" bs="$4" oflag=direct,seek_bytes seek="$3" conv=notrunc status=none &&
  dd if="$2" of=/tmp/back bs="$4" iflag=direct,skip_bytes,count_bytes skip="$3" count="$n" status=none &&
  cmp "$1" /tmp/back
}

# zeroed DEV OFFSET LEN: the range reads back as zeros.
zeroed() {
  head -c "$3" /dev/zero > /tmp/zero
  dd if="$1" of=/tmp/back bs=65536 iflag=direct,skip_bytes,count_bytes skip="$2" count="$3" status=none &&
  cmp /tmp/zero /tmp/back
}

# fs_cycle NAME DEV TYPE: mkfs, mount, files, umount, fsck clean, mount again and find the files.
fs_cycle() {
  n="$1"; dev="$2"; type="$3"
  case "$type" in
    ext4) check "$n-mkfs" mkfs.ext4 -q -F "$dev" || return 1 ;;
    xfs) check "$n-mkfs" mkfs.xfs -q -f "$dev" || return 1 ;;
  esac
  check "$n-mount" mount -t "$type" "$dev" /mnt/a || return 1
  head -c 3145728 /dev/urandom > /tmp/file
  want="$(sha256sum < /tmp/file)"
  mkdir -p /mnt/a/sub && cp /tmp/file /mnt/a/sub/data && echo "cairn keeps this" > /mnt/a/sub/note
  check "$n-umount" umount /mnt/a
  case "$type" in
    ext4) check "$n-fsck" e2fsck -f -n "$dev" ;;
    xfs) check "$n-fsck" xfs_repair -n "$dev" ;;
  esac
  check "$n-remount" mount -t "$type" "$dev" /mnt/a &&
  check "$n-files" sh -c "[ \"\$(sha256sum < /mnt/a/sub/data)\" = '$want' ] && grep -q 'cairn keeps this' /mnt/a/sub/note" &&
  umount /mnt/a
}

# host_root: mounts the host's / (shared read-only over 9p, tag "host") at /host with the guest's
# proc, sys, dev and a writable tmpfs /run inside, ready for `chroot /host CMD` (the host's node, fio,
# tools). The host's /tmp stays visible: the tree under test may live there (CI clones into /tmp);
# what the guest writes goes under /run (TMPDIR=/run/tmp). host_root_off undoes it.
host_root() {
  mkdir -p /host
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose host /host &&
  mount -t devtmpfs dev /host/dev && mount -t proc proc /host/proc && mount -t sysfs sys /host/sys &&
  mount -t tmpfs tmpfs /host/run && mkdir -p /host/run/tmp
}
host_root_off() { for m in run sys proc dev ''; do umount -l "/host/$m"; done; }

# ns_by_size BYTES [RO]: the namespace block device of that size (and read-only flag), waiting up to 30 s (multipath's per-path disks skipped).
ns_by_size() {
  tries=0
  while [ $tries -lt 60 ]; do
    for b in /sys/block/nvme*n*; do
      n="${b##*/}"
      case "$n" in *c*) continue ;; esac  # multipath's per-path disks
      [ -f "$b/size" ] || continue
      [ "$(cat "$b/size")" = "$(($1 / 512))" ] || continue
      [ -z "${2:-}" ] || [ "$(cat "$b/ro")" = "$2" ] || continue
      echo "/dev/$n"; return 0
    done
    tries=$((tries + 1)); sleep 0.5
  done
  return 1
}
