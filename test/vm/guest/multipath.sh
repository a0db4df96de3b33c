# The kernel's native NVMe multipath over ANA across a failover (test/vm-multipath.test.ts): the guest
# connects to both nodes of a two-node cluster that hold a 2-replica volume; the kernel makes one head
# disk of the two paths, Optimized through the primary's node and Inaccessible through the other; the
# host kills the primary (SIGKILL) and the kernel moves the queued I/O to the other path once its ANA
# state turns Optimized (the survivor's ANA change notice), with no step by the guest.
# /cairn/env: PORT1, PORT2 (the nodes' NVMe/TCP ports), SUBNQN, HOSTNQN, HOSTID, VOL_BYTES.
mkdir -p /etc/nvme
echo "$HOSTNQN" > /etc/nvme/hostnqn
echo "$HOSTID" > /etc/nvme/hostid

# path_disks DEV: the per-path disks of the head disk nvmeXnY (nvmeXcZnY, one per controller).
path_disks() { h="${1#/dev/}"; ls -d /sys/block/"${h%n*}"c*n"${h##*n}"; }
# paths DEV: "ANA-STATE/CONTROLLER-STATE" of each path of the head disk, sorted, on one line.
paths() {
  for p in $(path_disks "$1"); do echo "$(cat "$p/ana_state")/$(cat "$p/device/state")"; done | sort | tr '\n' ' '
}
# paths_become DEV PATTERN: the paths line matches the shell PATTERN within 60 s.
paths_become() {
  tries=0
  while [ $tries -lt 120 ]; do
    # shellcheck disable=SC2254
    case "$(paths "$1")" in $2) return 0 ;; esac
    tries=$((tries + 1)); sleep 0.5
  done
  echo "paths: $(paths "$1")"; return 1
}

check mp-native-multipath test "$(cat /sys/module/nvme_core/parameters/multipath)" = Y || return 1
check mp-connect-1 nvme connect -t tcp -a 10.0.2.2 -s "$PORT1" -n "$SUBNQN" || return 1
check mp-connect-2 nvme connect -t tcp -a 10.0.2.2 -s "$PORT2" -n "$SUBNQN" || return 1
dev="$(ns_by_size "$VOL_BYTES")"
# One head disk for the two controllers: the same NSID and NGUID through both nodes.
check mp-one-head sh -c "test -b '$dev' && test \$(ls /sys/block | grep -c '^nvme[0-9]*n[0-9]*$') = 1" || return 1
check mp-two-paths test "$(path_disks "$dev" | wc -l)" = 2 || return 1
check mp-ana-before paths_become "$dev" "inaccessible/live optimized/live "
fill 141 1048576 /tmp/p1
check mp-write-before put /tmp/p1 "$dev" 0 65536
check mp-flush-before nvme flush "$dev"
check mp-host-killed test "$(ask kill)" = ok
fill 142 1048576 /tmp/p2
# Written through the same head disk: queued while no path is usable, sent once the survivor's is Optimized.
check mp-write-after put /tmp/p2 "$dev" 1048576 65536
check mp-flush-after nvme flush "$dev"
check mp-ana-after paths_become "$dev" "*optimized/live*"
check mp-read-before sh -c "dd if='$dev' of=/tmp/back bs=65536 count=16 iflag=direct status=none && cmp /tmp/p1 /tmp/back"
