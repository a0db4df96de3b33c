#!/usr/bin/env node
// libuv's thread pool carries every pread/pwrite/fsync of the data path; its default of 4 threads caps
// how many block requests are on the disk at once. It must be sized before the first file operation,
// which is why this entry is CommonJS (bin/package.json): an ES module entry is itself read through
// the thread pool, so the pool already had its 4 threads when the module's first line ran.
process.env.UV_THREADPOOL_SIZE ??= '16';
import('../dist/src/cli/main.js').catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
