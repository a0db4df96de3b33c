#!/usr/bin/env bash
# Boots the test guest by hand with one script: test/vm/run-guest.sh NAME [KEY=VALUE ...]
# runs test/vm/guest/NAME.sh with KEY=VALUE in its /cairn/env (the tests pass ports and export
# names that way); the serial console is this terminal (Ctrl-A X quits qemu). NAME "shell" gives
# an interactive busybox shell in the guest instead.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
name="${1:?usage: run-guest.sh NAME [KEY=VALUE ...]}"; shift
image="$(bash "$here/build-image.sh" | tail -1)"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
mkdir -p "$work/overlay/cairn"
cp "$here"/guest/*.sh "$work/overlay/cairn/"
for kv in "$@"; do printf "%s='%s'\n" "${kv%%=*}" "${kv#*=}"; done > "$work/overlay/cairn/env"
[ "$name" = shell ] && printf 'exec setsid cttyhack sh\n' > "$work/overlay/cairn/shell.sh"
cat "$image/base.cpio.gz" > "$work/initrd"
(cd "$work/overlay" && find . | cpio -o -H newc --quiet | gzip -1) >> "$work/initrd"
exec qemu-system-x86_64 -machine q35 -accel tcg -cpu max -smp 2 -m 1024 -nographic -no-reboot \
  -kernel "$image/vmlinuz" -initrd "$work/initrd" -append "console=ttyS0 panic=-1 loglevel=4 cairn_script=$name" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap
