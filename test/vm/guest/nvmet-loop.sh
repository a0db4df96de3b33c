# By hand only (README): nvmf.sh against Linux's own NVMe/TCP target (nvmet) inside the guest, on
# 127.0.0.1:4420, with the same subsystems and sizes the Cairn test uses. It shows what nvmf.sh sees
# from a reference target. The resize the script asks for is done here; a snapshot, a clone and a
# daemon kill have no nvmet counterpart, so those checks fail.
#   test/vm/run-guest.sh nvmet-loop
while read -r m; do insmod "$m"; done < /etc/modules.nvmet
mount -t configfs none /sys/kernel/config 2>/dev/null
TARGET_ADDR=127.0.0.1 DISC_PORT=4420 NVMF_PORT=4420 SUBNQN=nqn.2026-12.io.cairn:default LOCKED_NQN=nqn.2026-12.io.cairn:locked
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:6a0c7e1e-2f7d-4c39-9a7b-1c2a6f0e9d01 HOSTID=6a0c7e1e-2f7d-4c39-9a7b-1c2a6f0e9d01
ALLOWED_HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:6a0c7e1e-2f7d-4c39-9a7b-1c2a6f0e9d02
RAW=raw RAW_BYTES=67108864 FS=fs FS_BYTES=335544320 GROW_BYTES=83886080
truncate -s "$RAW_BYTES" /tmp/raw.img; truncate -s "$FS_BYTES" /tmp/fs.img; truncate -s 50331648 /tmp/only.img
c=/sys/kernel/config/nvmet
ns() {  # ns NQN NSID FILE; the initramfs has no O_DIRECT, so buffered I/O
  d="$c/subsystems/$1/namespaces/$2"
  mkdir -p "$d" && echo -n "$3" > "$d/device_path" && echo 1 > "$d/buffered_io" && echo 1 > "$d/enable"
}
ns "$SUBNQN" 1 /tmp/raw.img; ns "$SUBNQN" 2 /tmp/fs.img; ns "$LOCKED_NQN" 1 /tmp/only.img
echo 1 > "$c/subsystems/$SUBNQN/attr_allow_any_host"
mkdir "$c/hosts/$ALLOWED_HOSTNQN" && ln -s "$c/hosts/$ALLOWED_HOSTNQN" "$c/subsystems/$LOCKED_NQN/allowed_hosts/"
p="$c/ports/1"
mkdir "$p" && echo tcp > "$p/addr_trtype" && echo ipv4 > "$p/addr_adrfam" && echo 127.0.0.1 > "$p/addr_traddr" && echo 4420 > "$p/addr_trsvcid"
ln -s "$c/subsystems/$SUBNQN" "$p/subsystems/" && ln -s "$c/subsystems/$LOCKED_NQN" "$p/subsystems/"
ask() {
  case "$1" in
    resize) truncate -s "$3" /tmp/raw.img && echo 1 > "$c/subsystems/$SUBNQN/namespaces/1/revalidate_size" && echo ok ;;
    *) echo "nvmet-loop cannot $1" ;;
  esac
}
. ./nvmf.sh
