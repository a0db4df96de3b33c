# Cairn image: the daemon (`cairn serve`), the CLI and the CSI driver (dist/src/csi/main.js).
# Build: docker build -t cairn/cairn:0.1.0 .
FROM node:20-bookworm-slim AS build
# A C compiler for the native addon (native/: block checksums, early write-back); without it the engine
# uses the crc32c library and the kernel's write-back timing.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci
COPY src ./src
COPY bin ./bin
COPY native ./native
COPY scripts/build-native.sh ./scripts/build-native.sh
COPY ui ./ui
RUN npx tsc -p tsconfig.json && bash scripts/build-native.sh && npx vite build --config ui/vite.config.ts && npm prune --omit=dev

FROM node:20-bookworm-slim
# Node plugin tools: nbd-client (kernel NBD), nbdfuse + fuse3 + losetup (no nbd module),
# qemu-utils (qemu-nbd: NBD over TLS-PSK with a tenant's key), blkid/mount/mkfs/resize for ext4
# and xfs. libnbd-bin gives nbdinfo/nbdcopy for debugging.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      nbd-client nbdfuse fuse3 libnbd-bin qemu-utils util-linux mount e2fsprogs xfsprogs ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
# The CSI driver loads its protobuf at run time from <app>/src/csi/csi.proto.
COPY src/csi/csi.proto ./src/csi/csi.proto
# Transparent huge pages for malloc's heap, which holds the tree leaves' arrays: fewer TLB misses when
# a request edits a random leaf (engine 4 KiB random writes 5-7 % faster, ARCHITECTURE.md "Where the
# time goes", eighth session). glibc reads the variable only at process start.
ENV GLIBC_TUNABLES=glibc.malloc.hugetlb=1
ENTRYPOINT ["node", "/app/bin/cairn.js"]
