# Issue 21's benchmark (bench/nvmf-bench.ts): the same fio job through the kernel's NVMe/TCP initiator,
# then through its NBD client, while the host measures the daemon's CPU. /cairn/env: NVMF_PORT, SUBNQN,
# HOSTNQN, HOSTID, NSID (the NVMe/TCP volume's namespace), NBD_PORT, NBD_EXPORT (the other volume),
# QUEUES (NVMe/TCP I/O queues, NBD connections), JOBS, IODEPTH, RUNTIME_S, ROWS (fio --rw values),
# ORDER (the protocols' phases in turn, e.g. "nvmf nbd nbd nvmf": a drift over the run falls on both).
# Around each fio run the guest asks the host to open and close its measuring window (CAIRN-ASK
# window-start / window-stop PROTO RW PHASE) and prints fio's IOPS as CAIRN-VALUE PROTO-RW-iops-PHASE.
mkdir -p /etc/nvme
echo "$HOSTNQN" > /etc/nvme/hostnqn
echo "$HOSTID" > /etc/nvme/hostid

# ns_by_nsid NSID: the namespace block device with that NSID, waiting up to 30 s.
ns_by_nsid() {
  tries=0
  while [ $tries -lt 60 ]; do
    for b in /sys/block/nvme*n*; do
      case "${b##*/}" in *c*) continue ;; esac  # multipath's per-path disks
      [ -f "$b/nsid" ] && [ "$(cat "$b/nsid")" = "$1" ] && { echo "/dev/${b##*/}"; return 0; }
    done
    tries=$((tries + 1)); sleep 0.5
  done
  return 1
}

# measure PROTO DEV PHASE: each row of fio (the host's, over 9p) inside a window the host measures.
measure() {
  for rw in $ROWS; do
    ans="$(ask window-start "$1" "$rw" "$3")"
    out="$(chroot /host fio --name=bench --filename="$2" --direct=1 --ioengine=libaio --rw="$rw" --bs=4k \
      --numjobs="$JOBS" --iodepth="$IODEPTH" --time_based --runtime="$RUNTIME_S" --randrepeat=0 --norandommap \
      --group_reporting --output-format=terse 2>&1)"
    rc=$?
    ans2="$(ask window-stop "$1" "$rw" "$3")"
    if [ $rc -ne 0 ] || [ "$ans" != ok ] || [ "$ans2" != ok ]; then
      failed=$((failed + 1))
      echo "CAIRN-RESULT $1-$rw-$3 FAIL rc=$rc host=$ans/$ans2 $(echo "$out" | tail -n 3 | tr '\n' ' ')"
      continue
    fi
    # Terse v3: field 8 is the read IOPS, 49 the write IOPS (one line with --group_reporting).
    case "$rw" in *read*) f=8 ;; *) f=49 ;; esac
    echo "CAIRN-VALUE $1-$rw-iops-$3 $(echo "$out" | tail -n 1 | cut -d';' -f$f)"
    echo "CAIRN-RESULT $1-$rw-$3 PASS"
  done
}

nvmf_phase() {
  check "bench-nvmf-connect-$1" nvme connect -t tcp -a 10.0.2.2 -s "$NVMF_PORT" -n "$SUBNQN" --nr-io-queues="$QUEUES" || return 1
  ns="$(ns_by_nsid "$NSID")"
  check "bench-nvmf-namespace-$1" test -b "$ns" && measure nvmf "$ns" "$1"
  check "bench-nvmf-disconnect-$1" nvme disconnect -n "$SUBNQN"
}
nbd_phase() {
  check "bench-nbd-connect-$1" /usr/bin/nbd-client 10.0.2.2 "$NBD_PORT" /dev/nbd0 -N "$NBD_EXPORT" -b 4096 -C "$QUEUES" || return 1
  measure nbd /dev/nbd0 "$1"
  check "bench-nbd-disconnect-$1" /usr/bin/nbd-client -d /dev/nbd0
}

check bench-9p-mount host_root || return 1
phase=0
for p in $ORDER; do
  phase=$((phase + 1))
  "${p}_phase" "$phase"
done
host_root_off
