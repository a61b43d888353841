/* pool.h -- fusedmlp's own worker pool: persistent threads that run the parts of a compiled call.
 *
 *     fm_team team;
 *     fm_team_begin(&team, n_parts);        // claim up to n_parts - 1 idle workers (maybe none)
 *     fm_team_run(&team, task, ctx, n_parts);  // task(ctx, p, n_parts) for every p < n_parts,
 *     ...                                   //   by the caller and its team; returns when all ran
 *     fm_team_end(&team);                   // the workers go back to the pool
 *
 * The parts of a run are fixed by n_parts alone; which thread runs which part is decided at run
 * time (each participant takes the next part index) and never affects a result, because the
 * parts write disjoint outputs and contain no cross-part reduction. A caller that finds no idle
 * worker (another Python thread is using them) runs every part itself: two models trained from
 * two threads share the pool instead of oversubscribing the machine. The busy threads are the
 * callers plus at most (pool size) workers; the pool grows to the largest n_parts - 1 asked for.
 *
 * Workers start lazily (the first team that wants one), spin for about FM_SPIN_NS after their
 * last part before sleeping on a condition variable, and run every part with the floating-point
 * environment of fpenv.h set and restored. After fork() the child gets a fresh, empty pool
 * (pthread_atfork): the parent's threads do not exist there.
 *
 * POSIX threads, or Win32 threads, critical sections and condition variables on Windows: the
 * shim is fm_platform.h's; the atomics are fm_atomic.h's.
 */
#ifndef FUSEDMLP_POOL_H
#define FUSEDMLP_POOL_H

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "fpenv.h"
#include "fm_atomic.h"
#include "fm_platform.h"   /* threads, mutexes, condition variables (and FM_PAUSE) */

/* Set *flag to 1 from any part (parts report what they found, e.g. a NaN, this way). */
static void fm_flag(int *flag) { fm_store_int(flag, 1, FM_RELAXED); }

#define FM_MAX_WORKERS 256
#define FM_SPIN_NS 100000LL       /* a worker spins this long after its last part, then sleeps */

typedef void (*fm_task)(void *ctx, int part, int n_parts);

/* A job lives in the first team member's slot (worker slots are never freed), so a worker
 * that wakes up late -- after its team finished the job, or even ended -- touches only valid
 * memory. It takes a part by setting that part's bit in `word` (job id << 32 | parts taken)
 * with a CAS that fails once the id is not its job's: late or stale workers take nothing, and
 * nobody waits for them. Each participant first tries its own part (the caller part 0, the
 * team's i-th worker part i + 1), then any part left: so in the usual case the same thread
 * runs the same part of every call, and the blocks of weights, gradients and optimiser state
 * a part owns (_parallel.pxi) stay in that core's cache instead of moving between cores.
 * Jobs of more than 32 parts take them in order with a counter instead. */
typedef struct {
    fm_task task;
    void *ctx;
    int n_parts;
    unsigned long long word;
    int done;                     /* parts finished */
} fm_job;

typedef struct {
    fm_mutex lock;
    fm_cond wake;
    fm_job *job;                  /* the job to join, its id and this worker's own part, */
    unsigned long long job_id;    /* set before seq changes */
    int own_part;
    fm_u64 seq;                   /* bumped for every job sent to this worker */
    int sleeping;
    int claimed;                  /* 1 while a team owns this worker */
    fm_job own_job;               /* the job of the team this worker leads */
} fm_worker;

typedef struct {
    int n_members;
    fm_worker *members[FM_MAX_WORKERS];
} fm_team;

static fm_worker *fm_workers;     /* FM_MAX_WORKERS slots, allocated on first use */
static int fm_n_workers = 0;      /* threads started so far */
static fm_mutex fm_pool_lock;     /* guards starting workers */
static int fm_pool_ready = 0;
static unsigned long long fm_job_ids = 0;

/* Take and run parts of job `id` until none is left, `own` first. */
static void fm_run_parts(fm_job *job, unsigned long long id, int own)
{
    for (;;) {
        unsigned long long word = fm_load_u64(&job->word, FM_ACQUIRE), taken;
        /* a worker late from the previous job may read this while its caller writes the next
         * job's: atomic (and then the CAS below fails), as every field read before the CAS */
        int part, n = fm_load_int(&job->n_parts, FM_RELAXED);
        if ((word >> 32) != (id & 0xffffffffULL)) return;
        taken = word & 0xffffffffULL;
        if (n <= 32) {
            if (taken == (n == 32 ? 0xffffffffULL : (1ULL << n) - 1)) return;
            part = (own < n && !(taken & (1ULL << own))) ? own : fm_ctz64(~taken);
            if (!fm_cas_u64(&job->word, &word, word | (1ULL << part), FM_ACQ_REL))
                continue;
        } else {
            if ((long long)taken >= (long long)n) return;
            part = (int)taken;
            if (!fm_cas_u64(&job->word, &word, word + 1, FM_ACQ_REL))
                continue;
        }
        own = n;                  /* from now on, any part */
        /* the part is ours: the job cannot finish (nor change) before we report it done */
        job->task(job->ctx, part, n);
        fm_add_int(&job->done, 1, FM_ACQ_REL);
    }
}

static fm_thread_ret FM_THREAD_CALL fm_worker_main(void *arg)
{
    fm_worker *self = (fm_worker *)arg;
    fm_u64 seen = 0;                /* seq starts at 0: a job sent before we started is seen */
    for (;;) {
        long long spin_until = fm_now_ns() + FM_SPIN_NS;
        int polls = 0;
        while (fm_load_u64(&self->seq, FM_SEQ_CST) == seen) {
            FM_PAUSE();
            if (++polls % 64 == 0 && fm_now_ns() > spin_until) {
                fm_mutex_lock(&self->lock);
                fm_store_int(&self->sleeping, 1, FM_SEQ_CST);
                while (fm_load_u64(&self->seq, FM_SEQ_CST) == seen)
                    fm_cond_wait(&self->wake, &self->lock);
                fm_store_int(&self->sleeping, 0, FM_SEQ_CST);
                fm_mutex_unlock(&self->lock);
            }
        }
        seen = fm_load_u64(&self->seq, FM_SEQ_CST);
        {
            fm_job *job = (fm_job *)fm_load_ptr((void **)&self->job, FM_ACQUIRE);
            unsigned long long id = fm_load_u64(&self->job_id, FM_ACQUIRE);
            int own = fm_load_int(&self->own_part, FM_ACQUIRE);
            fm_fpenv saved = fm_fpenv_enter();
            fm_run_parts(job, id, own);
            fm_fpenv_leave(saved);
        }
    }
    return 0;
}

static void fm_send(fm_worker *w, fm_job *job, unsigned long long id, int own_part)
{
    fm_store_ptr((void **)&w->job, job, FM_RELEASE);
    fm_store_u64(&w->job_id, id, FM_RELEASE);
    fm_store_int(&w->own_part, own_part, FM_RELEASE);
    fm_add_u64(&w->seq, 1, FM_SEQ_CST);
    if (fm_load_int(&w->sleeping, FM_SEQ_CST)) {
        fm_mutex_lock(&w->lock);
        fm_cond_signal(&w->wake);
        fm_mutex_unlock(&w->lock);
    }
}

static void fm_pool_forget(void)
{   /* in a forked child: the workers' threads are gone; start over with an empty pool */
    fm_workers = NULL;
    fm_n_workers = 0;
    fm_mutex_init(&fm_pool_lock);
}

static void fm_pool_prepare(void) { if (fm_pool_ready) fm_mutex_lock(&fm_pool_lock); }
static void fm_pool_parent(void) { if (fm_pool_ready) fm_mutex_unlock(&fm_pool_lock); }

/* Call once, at module import (with the GIL, before any team). */
static void fm_pool_init(void)
{
    if (fm_pool_ready) return;
    fm_mutex_init(&fm_pool_lock);
    FM_ATFORK(fm_pool_prepare, fm_pool_parent, fm_pool_forget);
    fm_pool_ready = 1;
}

/* Start workers until there are `wanted` (capped); returns how many exist. */
static int fm_pool_grow(int wanted)
{
    if (wanted > FM_MAX_WORKERS) wanted = FM_MAX_WORKERS;
    if (fm_load_int(&fm_n_workers, FM_ACQUIRE) >= wanted) return fm_load_int(&fm_n_workers, FM_ACQUIRE);
    fm_mutex_lock(&fm_pool_lock);
    if (fm_workers == NULL)
        fm_workers = (fm_worker *)calloc(FM_MAX_WORKERS, sizeof(fm_worker));
    while (fm_workers != NULL && fm_n_workers < wanted) {
        fm_worker *w = &fm_workers[fm_n_workers];
        fm_thread thread;
        memset(w, 0, sizeof *w);
        fm_mutex_init(&w->lock);
        fm_cond_init(&w->wake);
        w->job = &w->own_job;     /* a spurious first wake-up finds a finished job */
        if (fm_thread_start(&thread, fm_worker_main, w) != 0) break;
        fm_store_int(&fm_n_workers, fm_n_workers + 1, FM_RELEASE);
    }
    fm_mutex_unlock(&fm_pool_lock);
    return fm_load_int(&fm_n_workers, FM_ACQUIRE);
}

/* Diagnostics (the threads benchmark): with fm_trace set, teams get no workers, the caller
 * runs every part itself and logs how long each took (fm_trace_log: part count, then that
 * many nanosecond times, per run; up to FM_TRACE_SIZE entries). Summing over the runs of a
 * call, the longest part less all the parts, added to the call's time, is its critical path
 * on n_parts idle cores less the hand-offs: a measure of the partition itself that a loaded
 * machine does not blur (take the fastest of many calls for every part). */
#define FM_TRACE_SIZE 65536
static int fm_trace = 0;
static long long fm_trace_log[FM_TRACE_SIZE];
static int fm_trace_used = 0;

static void fm_team_begin(fm_team *team, int n_parts)
{
    int i, n, want = n_parts - 1;
    team->n_members = 0;
    if (want <= 0 || fm_trace) return;
    n = fm_pool_grow(want);
    for (i = 0; i < n && team->n_members < want; i++) {
        int idle = 0;
        if (fm_cas_int(&fm_workers[i].claimed, &idle, 1, FM_ACQ_REL))
            team->members[team->n_members++] = &fm_workers[i];
    }
}

static void fm_team_end(fm_team *team)
{
    int i;
    for (i = 0; i < team->n_members; i++)
        fm_store_int(&team->members[i]->claimed, 0, FM_RELEASE);
    team->n_members = 0;
}

/* Run task(ctx, p, n_parts) for p = 0 .. n_parts - 1 on the caller and its team; returns
 * when every part has run. Team members that are not running (descheduled, asleep) when the
 * caller has taken the last part are not waited for. */
static void fm_team_run(fm_team *team, fm_task task, void *ctx, int n_parts)
{
    fm_job *job;
    unsigned long long id;
    int i, helpers = team->n_members < n_parts - 1 ? team->n_members : n_parts - 1, polls = 0;
    if (helpers <= 0 && fm_trace && n_parts > 1 && fm_trace_used + n_parts < FM_TRACE_SIZE) {
        fm_trace_log[fm_trace_used++] = n_parts;
        for (i = 0; i < n_parts; i++) {
            long long t0 = fm_now_ns();
            task(ctx, i, n_parts);
            fm_trace_log[fm_trace_used++] = fm_now_ns() - t0;
        }
        return;
    }
    if (helpers <= 0) {
        for (i = 0; i < n_parts; i++) task(ctx, i, n_parts);
        return;
    }
    job = &team->members[0]->own_job;
    id = fm_add_u64(&fm_job_ids, 1, FM_RELAXED) & 0xffffffffULL;
    job->task = task;
    job->ctx = ctx;
    fm_store_int(&job->n_parts, n_parts, FM_RELAXED);
    job->done = 0;
    fm_store_u64(&job->word, id << 32, FM_RELEASE);
    for (i = 0; i < helpers; i++) fm_send(team->members[i], job, id, i + 1);
    fm_run_parts(job, id, 0);
    while (fm_load_int(&job->done, FM_ACQUIRE) < n_parts) {
        FM_PAUSE();
        if (++polls > 2000) fm_yield();     /* a helper was descheduled mid-part */
    }
}

#endif
