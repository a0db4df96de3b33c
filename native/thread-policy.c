// batchOtherThreads(): puts every thread of the process except the calling one (the event loop) in
// the SCHED_BATCH policy and returns how many it changed.
//
// Why: the event loop is the bottleneck of the data path, and every thread it wakes (a libuv
// thread-pool thread given a device write, a V8 helper given GC work) used to preempt it on wake-up:
// a woken SCHED_OTHER thread that has slept a while outranks the busy loop. On 2 cores the loop then
// sat runnable but descheduled inside the call that woke the thread (the V8 profile put 18 % of its
// busy time in the fs write submission). SCHED_BATCH threads run with the same share of CPU but do
// not preempt on wake-up: they take a free core, or the loop's core at its next tick or wait.
#define _GNU_SOURCE
#include <node_api.h>
#include "native.h"

#if defined(__linux__)
#include <dirent.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static napi_value batch_other_threads(napi_env env, napi_callback_info info) {
  (void)info;
  pid_t self = (pid_t)syscall(SYS_gettid);
  DIR *dir = opendir("/proc/self/task");
  if (!dir) {
    napi_throw_error(env, NULL, "batchOtherThreads: cannot list /proc/self/task");
    return NULL;
  }
  int changed = 0;
  struct sched_param param = { .sched_priority = 0 };
  struct dirent *entry;
  while ((entry = readdir(dir)) != NULL) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    pid_t tid = (pid_t)atoi(entry->d_name);
    // A thread already in a real-time or idle policy was put there on purpose: left alone.
    if (tid == self || sched_getscheduler(tid) != SCHED_OTHER) continue;
    if (sched_setscheduler(tid, SCHED_BATCH, &param) == 0) changed++;
  }
  closedir(dir);
  napi_value result;
  napi_create_int32(env, changed, &result);
  return result;
}

void register_thread_policy(napi_env env, napi_value exports) {
  export_function(env, exports, "batchOtherThreads", batch_other_threads);
}
#else
void register_thread_policy(napi_env env, napi_value exports) { (void)env; (void)exports; }
#endif
