#!/usr/bin/python3
# The client workload of test/cluster-netns.test.ts, a real NBD client (libnbd): writes numbered,
# checksummed 4 KiB blocks with a flush every K writes, reports each acknowledged write and each
# acknowledged flush as JSON lines on stdout, and on any error or timeout reconnects (to the next
# node: NBD forwarding reaches the primary) and goes on. Mode "read" reads blocks back and reports
# the version each holds. Every request has a deadline (libnbd's aio calls + poll): a paused or
# partitioned node must not hang the client forever.
#
# Block layout (little-endian): magic "CAIRNNS1" (8) | volume tag u32 | block u32 | version u64 |
# crc32 u32 of the whole block with this field zeroed | pad u32 | pattern (4064 bytes from the version).
import json
import random
import select
import struct
import sys
import time
import zlib

import nbd

BLOCK_BYTES = 4096
HEADER = struct.Struct('<8sIIQII')
MAGIC = b'CAIRNNS1'
CRC_OFFSET = 24


def emit(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


def block_bytes(tag, block, version):
    rnd = random.Random(version * 1_000_003 + block)
    body = bytearray(HEADER.pack(MAGIC, tag, block, version, 0, 0) + rnd.randbytes(BLOCK_BYTES - HEADER.size))
    struct.pack_into('<I', body, CRC_OFFSET, zlib.crc32(body))
    return bytes(body)


def decode(buf, tag, block):
    """The version a block holds: 0 for never written (zeros), or None when damaged or foreign."""
    if buf == bytes(BLOCK_BYTES):
        return 0
    magic, got_tag, got_block, version, crc, _ = HEADER.unpack_from(buf)
    body = bytearray(buf)
    struct.pack_into('<I', body, CRC_OFFSET, 0)
    if magic != MAGIC or got_tag != tag or got_block != block or zlib.crc32(body) != crc:
        return None
    return version


class Deadline(Exception):
    pass


class Client:
    """One NBD connection at a time; every call has a deadline; any failure drops the connection."""

    def __init__(self, uris, timeout_s):
        self.uris = uris
        self.timeout_s = timeout_s
        self.index = 0
        self.h = None

    def _wait(self, done):
        end = time.monotonic() + self.timeout_s
        while not done():
            left = end - time.monotonic()
            if left <= 0:
                raise Deadline('request deadline passed')
            if self.h.aio_is_dead() or self.h.aio_is_closed():
                raise nbd.Error('connection dead', 0)
            self.h.poll(int(min(left, 0.5) * 1000))

    def connect(self):
        uri = self.uris[self.index % len(self.uris)]
        self.index += 1
        h = nbd.NBD()
        self.h = h
        h.aio_connect_uri(uri)
        self._wait(lambda: h.aio_is_ready())
        return uri

    def drop(self):
        # Dropping the handle closes its socket; a clean shutdown could block on a dead peer.
        self.h = None

    def pwrite(self, buf, offset):
        cookie = self.h.aio_pwrite(buf, offset)
        self._wait(lambda: self.h.aio_command_completed(cookie))

    def flush(self):
        cookie = self.h.aio_flush()
        self._wait(lambda: self.h.aio_command_completed(cookie))

    def pread(self, length, offset):
        buf = nbd.Buffer(length)
        cookie = self.h.aio_pread(buf, offset)
        self._wait(lambda: self.h.aio_command_completed(cookie))
        return buf.to_bytearray()


def stop_requested():
    ready, _, _ = select.select([sys.stdin], [], [], 0)
    return bool(ready)


def with_reconnect(client, what, fn, give_up_at):
    """Runs fn on a connection; on failure reconnects (next node) until it succeeds or give_up_at."""
    while True:
        try:
            if client.h is None:
                uri = client.connect()
                emit({'connected': uri})
            return fn()
        except (nbd.Error, Deadline, OSError) as e:
            emit({'err': str(e), 'op': what})
            client.drop()
            if time.monotonic() > give_up_at:
                raise
            time.sleep(0.2)


def run_writes(cfg):
    rnd = random.Random(cfg['seed'])
    client = Client(cfg['uris'], cfg['timeoutS'])
    tag, blocks, flush_every = cfg['tag'], cfg['blocks'], cfg['flushEvery']
    version = 0
    since_flush = 0
    stopping = False
    while True:
        if not stopping and (stop_requested() or version >= cfg['writesMax']):
            stopping = True
        if stopping:
            # The last flush must succeed: it makes every write acknowledged so far flushed.
            with_reconnect(client, 'flush', client.flush, time.monotonic() + cfg['giveUpS'])
            emit({'f': version})
            emit({'done': version})
            return
        version += 1
        block = rnd.randrange(blocks)
        buf = block_bytes(tag, block, version)
        try:
            if client.h is None:
                emit({'connected': client.connect()})
            client.pwrite(buf, block * BLOCK_BYTES)
            emit({'w': block, 'v': version})
            since_flush += 1
            if since_flush >= flush_every:
                client.flush()
                since_flush = 0
                emit({'f': version})
        except (nbd.Error, Deadline, OSError) as e:
            # The write's outcome is unknown (it may be on the volume or not): reported as attempted.
            emit({'x': block, 'v': version, 'err': str(e)})
            client.drop()
            since_flush = 0
            time.sleep(0.2)


def run_reads(cfg):
    client = Client(cfg['uris'], cfg['timeoutS'])
    give_up_at = time.monotonic() + cfg['giveUpS']
    versions = []
    for block in range(cfg['blocks']):
        buf = with_reconnect(client, 'read', lambda: client.pread(BLOCK_BYTES, block * BLOCK_BYTES), give_up_at)
        versions.append(decode(bytes(buf), cfg['tag'], block))
    emit({'versions': versions})


def main():
    cfg = json.loads(sys.argv[1])
    if cfg['mode'] == 'write':
        run_writes(cfg)
    else:
        run_reads(cfg)


if __name__ == '__main__':
    main()
