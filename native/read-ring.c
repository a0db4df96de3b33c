// A request's cached reads in one system call: io_uring with RWF_NOWAIT reads, used by preadRunsNowait
// (nowait-read.c) when the kernel allows a ring.
//
// Why: on this VM a bare system call costs ~1.1 us (a preadv2 of a cached 4 KiB block ~2.3 us), and a
// 1 MiB read of a volume overwritten at random is 100-256 runs. Submitted together through a ring, a
// cached 4 KiB read costs ~1.1-1.2 us (measured in C, 256 per batch). The ring is per thread (only the
// event loop reads this way), made on first use, and never left with a read in flight: every call
// reaps all it submitted before it returns, since the reads land in the caller's buffer.
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include "native.h"

#if defined(__linux__) && __has_include(<linux/io_uring.h>) && defined(RWF_NOWAIT)
#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define RING_ENTRIES 256
#define RUN_BLOCK_BYTES 4096

typedef struct {
  int fd;            // -1: not made yet; -2: unavailable here (the caller falls back)
  unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
} ring_t;

static __thread ring_t ring = { .fd = -1 };

static int ring_setup(void) {
  // CAIRN_IO_URING=0: no ring (preadv2 run by run), for a kernel whose rings misbehave, and for tests.
  const char *env = getenv("CAIRN_IO_URING");
  if (env != NULL && strcmp(env, "0") == 0) return -1;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  int fd = (int)syscall(__NR_io_uring_setup, RING_ENTRIES, &p);
  if (fd < 0) return -1;
  size_t sq_bytes = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  size_t cq_bytes = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (!(p.features & IORING_FEAT_SINGLE_MMAP) || p.sq_entries < RING_ENTRIES || p.cq_entries < RING_ENTRIES) {
    close(fd);
    return -1;
  }
  size_t bytes = sq_bytes > cq_bytes ? sq_bytes : cq_bytes;
  char *rings = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  if (rings == MAP_FAILED) { close(fd); return -1; }
  void *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
  if (sqes == MAP_FAILED) { munmap(rings, bytes); close(fd); return -1; }
  ring.sq_tail = (unsigned *)(rings + p.sq_off.tail);
  ring.sq_mask = (unsigned *)(rings + p.sq_off.ring_mask);
  ring.sq_array = (unsigned *)(rings + p.sq_off.array);
  ring.cq_head = (unsigned *)(rings + p.cq_off.head);
  ring.cq_tail = (unsigned *)(rings + p.cq_off.tail);
  ring.cq_mask = (unsigned *)(rings + p.cq_off.ring_mask);
  ring.cqes = (struct io_uring_cqe *)(rings + p.cq_off.cqes);
  ring.sqes = sqes;
  ring.fd = fd;
  return 0;
}

static int ring_enter(unsigned submit, unsigned wait) {
  return (int)syscall(__NR_io_uring_enter, ring.fd, submit, wait, wait > 0 ? IORING_ENTER_GETEVENTS : 0, NULL, 0);
}

/**
 * Reads runs [first, first + n) of the plan, n <= RING_ENTRIES, into res[i] (bytes read or -errno).
 * Returns 0, or -1 when nothing was submitted (the ring is then unusable; nothing is in flight).
 */
static int ring_batch(int fd, uint8_t *base, const double *plan, uint32_t first, uint32_t n, int32_t *res) {
  unsigned tail = *ring.sq_tail;
  for (uint32_t i = 0; i < n; i++) {
    const double *run = plan + 3 * (size_t)(first + i);
    unsigned idx = tail & *ring.sq_mask;
    struct io_uring_sqe *sqe = &ring.sqes[idx];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = IORING_OP_READ;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)(base + (size_t)run[2] * RUN_BLOCK_BYTES);
    sqe->len = (uint32_t)((size_t)run[1] * RUN_BLOCK_BYTES);
    sqe->off = (uint64_t)run[0] * RUN_BLOCK_BYTES;
    sqe->rw_flags = RWF_NOWAIT;
    sqe->user_data = i;
    ring.sq_array[idx] = idx;
    tail++;
  }
  __atomic_store_n(ring.sq_tail, tail, __ATOMIC_RELEASE);
  for (uint32_t i = 0; i < n; i++) res[i] = -EAGAIN; // not submitted: read otherwise
  unsigned submitted = 0;
  while (submitted < n) {
    int r = ring_enter(n - submitted, 0);
    if (r > 0) submitted += (unsigned)r;
    else if (!(r < 0 && errno == EINTR)) break;
  }
  if (submitted < n) {
    // The kernel took only the first `submitted` entries: the others leave the ring unsubmitted.
    __atomic_store_n(ring.sq_tail, tail - (n - submitted), __ATOMIC_RELEASE);
    if (submitted == 0) return -1;
  }
  unsigned reaped = 0;
  while (reaped < submitted) {
    unsigned head = *ring.cq_head, ctail = __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE);
    for (; head != ctail; head++, reaped++) {
      const struct io_uring_cqe *cqe = &ring.cqes[head & *ring.cq_mask];
      if (cqe->user_data < n) res[cqe->user_data] = cqe->res;
    }
    __atomic_store_n(ring.cq_head, head, __ATOMIC_RELEASE);
    if (reaped >= submitted) break;
    // A read still in flight writes into the caller's buffer: there is no returning before it lands.
    if (ring_enter(0, 1) < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY) abort();
  }
  return 0;
}

int64_t cairn_ring_read_runs(int fd, uint8_t *base, const double *plan, uint32_t count) {
  if (ring.fd == -2) return -3;
  if (ring.fd == -1 && ring_setup() != 0) { ring.fd = -2; return -3; }
  int32_t res[RING_ENTRIES];
  for (uint32_t first = 0; first < count; first += RING_ENTRIES) {
    uint32_t n = count - first < RING_ENTRIES ? count - first : RING_ENTRIES;
    if (ring_batch(fd, base, plan, first, n, res) != 0) {
      if (first > 0) return first;
      ring.fd = -2;
      return -3;
    }
    for (uint32_t i = 0; i < n; i++) {
      int32_t want = (int32_t)((size_t)plan[3 * (size_t)(first + i) + 1] * RUN_BLOCK_BYTES);
      if (res[i] == want) continue;
      if (res[i] == -EAGAIN || (res[i] >= 0 && res[i] < want)) return first + i; // not all cached, or short: read otherwise
      if (res[i] == -EOPNOTSUPP) return first + i == 0 ? -2 : first + i; // the file refuses RWF_NOWAIT
      if (res[i] == -EINVAL && first + i == 0) { ring.fd = -2; return -3; } // a kernel without IORING_OP_READ: no ring
      errno = -res[i];
      return -1;
    }
  }
  return count;
}
#else
int64_t cairn_ring_read_runs(int fd, uint8_t *base, const double *plan, uint32_t count) {
  (void)fd, (void)base, (void)plan, (void)count;
  return -3;
}
#endif
