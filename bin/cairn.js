#!/usr/bin/env node
// libuv's thread pool carries every pread/pwrite/fsync of the data path; its default of 4 threads caps
// how many block requests are on the disk at once. It must be sized before the first file operation.
process.env.UV_THREADPOOL_SIZE ??= '16';
await import('../dist/src/cli/main.js');
