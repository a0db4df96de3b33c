#!/usr/bin/env bash
# Compiles native/ (one small N-API addon, see native/README.md) into dist/native/cairn-native.node.
# Optional: without a C compiler or Node's headers the engine falls back to the crc32c library and the
# kernel's own write-back timing, so a failure here warns and does not stop the build.
set -uo pipefail
cd "$(dirname "$0")/.."
out=dist/native
mkdir -p "$out"
include="$(dirname "$(dirname "$(command -v node)")")/include/node"
[ -f "$include/node_api.h" ] || include="$(npm config get nodedir 2>/dev/null)/include/node"
cc="${CC:-cc}"
if [ ! -f "$include/node_api.h" ] || ! command -v "$cc" >/dev/null; then
  echo "build-native: no C compiler or Node headers (node_api.h); block checksums use the crc32c library" >&2
  exit 0
fi
rm -f "$out/block-checksums.node" # the addon's name before it held more than checksums
if ! "$cc" -O2 -Wall -shared -fPIC -I"$include" -o "$out/cairn-native.node.tmp" native/*.c; then
  echo "build-native: compile failed; block checksums use the crc32c library" >&2
  rm -f "$out/cairn-native.node.tmp"
  exit 0
fi
mv "$out/cairn-native.node.tmp" "$out/cairn-native.node"
