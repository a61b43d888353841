/* The cores n_threads="auto" may use: the process's CPU affinity, as the OS says now.
 *
 * fusedmlp.threads gives the count at import (fm_set_cores, from os.sched_getaffinity or
 * os.cpu_count). On Linux the affinity can change later (os.sched_setaffinity, taskset -p, a
 * cgroup's cpuset), so fm_cores() re-reads it with sched_getaffinity(2) when the last read is
 * at least FM_CORES_REFRESH_NS old on the coarse monotonic clock (a vDSO read of a few ns):
 * a change is seen by every "auto" call that starts 10 ms after it, and a stream of calls
 * pays one system call per 10 ms, not one per call. Elsewhere (no affinity API that Python
 * reads either) the count stays what it was at import.
 *
 * Any thread may call both functions at once: the count and the time of the last read are
 * relaxed atomics (a racing reader sees the old count or the new one, both valid).
 */
#ifndef FM_CORES_H
#define FM_CORES_H

#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1               /* sched_getaffinity, CPU_COUNT, CLOCK_MONOTONIC_COARSE */
#endif
#include "fm_atomic.h"
#if defined(__linux__)
#include <sched.h>
#include <time.h>
#endif

#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE) && defined(CPU_COUNT)
#define FM_CORES_REREAD 1
#define FM_CORES_REFRESH_NS 10000000ull
static fm_u64 fm_cores_read_at = 0;  /* coarse monotonic ns of the last read (0: never) */
#endif

static int fm_core_count = 1;

static inline void fm_set_cores(int n)
{
    fm_store_int(&fm_core_count, n < 1 ? 1 : n, FM_RELAXED);
}

static inline int fm_cores(void)
{
#if defined(FM_CORES_REREAD)
    struct timespec now;
    fm_u64 ns, last;
    cpu_set_t set;
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &now) == 0) {
        ns = (fm_u64)now.tv_sec * 1000000000ull + (fm_u64)now.tv_nsec + 1;
        last = fm_load_u64(&fm_cores_read_at, FM_RELAXED);
        if (last == 0 || ns - last >= FM_CORES_REFRESH_NS) {
            fm_store_u64(&fm_cores_read_at, ns, FM_RELAXED);
            /* a mask wider than cpu_set_t (over 1024 CPUs) fails with EINVAL: keep the count */
            if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
                fm_set_cores(CPU_COUNT(&set));
        }
    }
#endif
    return fm_load_int(&fm_core_count, FM_RELAXED);
}

#endif
