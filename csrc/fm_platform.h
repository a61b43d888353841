/* fm_platform.h -- what differs between operating systems in csrc/, in one place (the
 * compilers' differences are fm_compiler.h's, the atomics fm_atomic.h's). Each concern has a
 * POSIX path and a Windows path, and nothing else in csrc/ needs one:
 *
 *   threads     fm_thread_start (detached), fm_mutex_*, fm_cond_*, fm_yield, fm_now_ns
 *               (monotonic), FM_ATFORK (pthread_atfork; nothing on Windows, which has no fork)
 *   once, TLS   fm_call_once; fm_tls_key: a thread's own pointer, whose destructor runs when
 *               the thread ends (pthread keys; fiber-local storage on Windows, whose callbacks
 *               run at thread exit too). A destructor is declared
 *               `static void FM_TLS_CALLBACK name(void *)`.
 *   memory      fm_aligned_alloc / fm_aligned_free (posix_memalign / _aligned_malloc: memory
 *               from one must be freed with the other)
 *
 * POSIX needs _POSIX_C_SOURCE >= 200809L (or the compiler's default GNU dialect) for
 * clock_gettime and posix_memalign; Windows needs Vista or later (condition variables, FLS,
 * InitOnce). tools/portability_check.sh compiles every path: mingw-w64 for Windows, clang and
 * gcc with -pedantic for POSIX, and a preprocessor pass as MSVC for GNU-only leftovers.
 */
#ifndef FM_PLATFORM_H
#define FM_PLATFORM_H

#include <stdlib.h>
#include <time.h>

#include "fm_compiler.h"

/* ---- threads, once, thread-local pointers, aligned memory ---- */
#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN           /* the kernel32 API only: threads, sync, memory */
#endif
#include <windows.h>
#include <malloc.h>
typedef HANDLE fm_thread;
typedef CRITICAL_SECTION fm_mutex;
typedef CONDITION_VARIABLE fm_cond;
static inline void fm_mutex_init(fm_mutex *m) { InitializeCriticalSection(m); }
static inline void fm_mutex_lock(fm_mutex *m) { EnterCriticalSection(m); }
static inline void fm_mutex_unlock(fm_mutex *m) { LeaveCriticalSection(m); }
static inline void fm_cond_init(fm_cond *c) { InitializeConditionVariable(c); }
static inline void fm_cond_wait(fm_cond *c, fm_mutex *m) { SleepConditionVariableCS(c, m, INFINITE); }
static inline void fm_cond_signal(fm_cond *c) { WakeConditionVariable(c); }
static inline void fm_yield(void) { SwitchToThread(); }
static inline long long fm_now_ns(void)
{
    LARGE_INTEGER f, t;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&t);
    return (long long)((double)t.QuadPart * 1e9 / (double)f.QuadPart);
}
typedef DWORD fm_thread_ret;
#define FM_THREAD_CALL WINAPI
static inline int fm_thread_start(fm_thread *t, fm_thread_ret (FM_THREAD_CALL *fn)(void *), void *arg)
{
    *t = CreateThread(NULL, 0, fn, arg, 0, NULL);
    if (*t == NULL) return -1;
    CloseHandle(*t);                  /* detached: the thread runs on without its handle */
    return 0;
}
#define FM_ATFORK(prepare, parent, child) ((void)0)

typedef INIT_ONCE fm_once;
#define FM_ONCE_INIT INIT_ONCE_STATIC_INIT
/* The function travels to the callback inside a struct: ISO C has no conversion between a
 * function pointer and InitOnceExecuteOnce's void * parameter. */
typedef struct { void (*fn)(void); } fm_once_call;
static inline BOOL CALLBACK fm_once_run(PINIT_ONCE once, PVOID call, PVOID *context)
{
    (void)once; (void)context;
    ((fm_once_call *)call)->fn();
    return TRUE;
}
static inline void fm_call_once(fm_once *once, void (*fn)(void))
{
    fm_once_call call;
    call.fn = fn;
    InitOnceExecuteOnce(once, fm_once_run, &call, NULL);
}

typedef DWORD fm_tls_key;
#define FM_TLS_CALLBACK NTAPI
static inline int fm_tls_create(fm_tls_key *key, void (FM_TLS_CALLBACK *destroy)(void *))
{
    *key = FlsAlloc(destroy);
    return *key == FLS_OUT_OF_INDEXES ? -1 : 0;
}
static inline void *fm_tls_get(fm_tls_key key) { return FlsGetValue(key); }
static inline int fm_tls_set(fm_tls_key key, void *value) { return FlsSetValue(key, value) ? 0 : -1; }

static inline void *fm_aligned_alloc(size_t alignment, size_t size) { return _aligned_malloc(size, alignment); }
static inline void fm_aligned_free(void *p) { _aligned_free(p); }

#else /* POSIX */
#include <pthread.h>
#include <sched.h>
typedef pthread_t fm_thread;
typedef pthread_mutex_t fm_mutex;
typedef pthread_cond_t fm_cond;
static inline void fm_mutex_init(fm_mutex *m) { pthread_mutex_init(m, NULL); }
static inline void fm_mutex_lock(fm_mutex *m) { pthread_mutex_lock(m); }
static inline void fm_mutex_unlock(fm_mutex *m) { pthread_mutex_unlock(m); }
static inline void fm_cond_init(fm_cond *c) { pthread_cond_init(c, NULL); }
static inline void fm_cond_wait(fm_cond *c, fm_mutex *m) { pthread_cond_wait(c, m); }
static inline void fm_cond_signal(fm_cond *c) { pthread_cond_signal(c); }
static inline void fm_yield(void) { sched_yield(); }
static inline long long fm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
typedef void *fm_thread_ret;
#define FM_THREAD_CALL
static inline int fm_thread_start(fm_thread *t, fm_thread_ret (*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    int err;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    err = pthread_create(t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return err;
}
#define FM_ATFORK(prepare, parent, child) ((void)pthread_atfork(prepare, parent, child))

typedef pthread_once_t fm_once;
#define FM_ONCE_INIT PTHREAD_ONCE_INIT
static inline void fm_call_once(fm_once *once, void (*fn)(void)) { pthread_once(once, fn); }

typedef pthread_key_t fm_tls_key;
#define FM_TLS_CALLBACK
static inline int fm_tls_create(fm_tls_key *key, void (*destroy)(void *))
{
    return pthread_key_create(key, destroy);
}
static inline void *fm_tls_get(fm_tls_key key) { return pthread_getspecific(key); }
static inline int fm_tls_set(fm_tls_key key, void *value) { return pthread_setspecific(key, value); }

static inline void *fm_aligned_alloc(size_t alignment, size_t size)
{
    void *p;
    return posix_memalign(&p, alignment, size) == 0 ? p : NULL;
}
static inline void fm_aligned_free(void *p) { free(p); }
#endif

#endif /* FM_PLATFORM_H */
