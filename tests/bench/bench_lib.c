/* Benchmark: libfieldsync's public API beside the journal underneath it (the cost of the API),
 * and a check-in's latency while the library's sync thread drains a large backlog beside the same
 * latency when idle. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fieldsync/fieldsync.h"
#include "port/alloc.h"
#include "storage/journal.h"
#include "storage/lock.h"
#include "tests/sync/server_harness.h"

static int64_t now_ns(void)
{
    return fsa_port_posix()->mono_now(NULL).ns;
}

/* This process's CPU nanoseconds (user + system) so far. While api_cost runs, the process has one
 * thread (the server is another process), so a phase's CPU time is what its records cost here:
 * the API's own cost, which the wall clock hides behind the fsync of each record. */
static int64_t cpu_ns(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t p99(int64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_i64);
    size_t k = (n * 99 + 99) / 100; /* nearest rank */
    return v[k > 0 ? k - 1 : 0];
}

static void bench_line(const char *name, double value, const char *unit, double baseline,
                       const char *baseline_name, double ratio)
{
    printf("BENCH {\"name\":\"%s\",\"value\":%.1f,\"unit\":\"%s\",\"baseline\":%.1f,"
           "\"baseline_name\":\"%s\",\"ratio\":%.3f}\n",
           name, value, unit, baseline, baseline_name, ratio);
    fflush(stdout);
}

static fieldsync_t *open_api(const char *path, const char *secret, const char *url, bool init)
{
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = path;
    if (init) {
        cfg.flags = FIELDSYNC_OPEN_INIT;
        cfg.device_id = "dev000";
        cfg.server_url = url;
        cfg.secret_file = secret;
    }
    fieldsync_t *fs = NULL;
    if (fieldsync_open(&cfg, &fs) != FIELDSYNC_OK) {
        fprintf(stderr, "bench_lib: open %s: %s\n", path, fieldsync_errmsg(fs));
        (void)fieldsync_close(fs);
        exit(1);
    }
    return fs;
}

/* Rates of n creates through the API and through the journal, alternating rounds so that both
 * see the same disk. */
static void api_cost(const char *dir, const char *secret, const char *url, int n)
{
    char pa[512], pj[512];
    snprintf(pa, sizeof pa, "%s/api.db", dir);
    snprintf(pj, sizeof pj, "%s/journal.db", dir);
    fieldsync_t *fs = open_api(pa, secret, url, true);
    fsa_journal_t *j = NULL;
    fsa_journal_opts_t o = {.create = true};
    char err[320];
    fsa_lockmgr_t *lm = NULL;
    fsa_lockmgr_opts_t lo = {.label = "bench"};
    if (fsa_journal_open(fsa_port_posix(), pj, &o, &j, err, sizeof err) != FSA_OK ||
        fsa_lockmgr_open(fsa_port_posix(), pj, &lo, &lm, err, sizeof err) != FSA_OK) {
        fprintf(stderr, "bench_lib: %s\n", err);
        exit(1);
    }
    int64_t t_api = 0, t_j = 0, t_api_l = 0, t_j_l = 0;
    int64_t c_api = 0, c_j = 0, c_api_l = 0, c_j_l = 0; /* CPU time of the same phases */
    const int rounds = 4, per = n / rounds;
    /* Each round times the four phases; odd rounds run the journal's before the API's, so that
     * neither side always follows the other's writes (WAL growth, checkpoints). */
    for (int r = 0; r < rounds; r++) {
        for (int side = 0; side < 2; side++) {
            bool api = (side == 0) == (r % 2 == 0);
            int64_t t0 = now_ns(), c0 = cpu_ns();
            for (int i = 0; i < per; i++) {
                char id[32];
                snprintf(id, sizeof id, "J%d-%d", r, i);
                fsa_rec_t rec;
                if (api && fieldsync_job_create(fs, id, "{\"seqno\":1}", NULL) != FIELDSYNC_OK)
                    fprintf(stderr, "bench_lib: %s\n", fieldsync_errmsg(fs));
                if (!api && fsa_journal_create(j, FSA_TYPE_JOBNEED, id, "{\"seqno\":1}", NULL,
                                               &rec) != FSA_OK)
                    fprintf(stderr, "bench_lib: %s\n", rec.error);
            }
            *(api ? &t_api : &t_j) += now_ns() - t0;
            *(api ? &c_api : &c_j) += cpu_ns() - c0;
        }
        for (int side = 0; side < 2; side++) {
            bool api = (side == 0) == (r % 2 == 0);
            int64_t t0 = now_ns(), c0 = cpu_ns();
            for (int i = 0; i < per; i++) {
                char id[32];
                snprintf(id, sizeof id, "J%d-%d", r, i);
                if (api) {
                    /* A guarded verb: the named lock, the record under its token, the release. */
                    if (fieldsync_job_transition(fs, id, "INPROGRESS", NULL, NULL) != FIELDSYNC_OK)
                        fprintf(stderr, "bench_lib: %s\n", fieldsync_errmsg(fs));
                    continue;
                }
                char res[64];
                snprintf(res, sizeof res, "jobneed:%s", id);
                fsa_lock_t l;
                fsa_lock_init(&l);
                fsa_rec_t rec;
                if (fsa_lock_acquire(lm, FSA_LOCK_JOB_WORKFLOW_UPDATE, res, &l, err, sizeof err) !=
                    FSA_OK) {
                    fprintf(stderr, "bench_lib: %s\n", err);
                    continue;
                }
                fsa_fence_t fence = fsa_lock_fence(&l);
                if (fsa_journal_transition(j, FSA_TYPE_JOBNEED, id, "INPROGRESS", &fence, &rec) !=
                    FSA_OK)
                    fprintf(stderr, "bench_lib: %s\n", rec.error);
                if (fsa_lock_release(&l, err, sizeof err) != FSA_OK)
                    fprintf(stderr, "bench_lib: %s\n", err);
            }
            *(api ? &t_api_l : &t_j_l) += now_ns() - t0;
            *(api ? &c_api_l : &c_j_l) += cpu_ns() - c0;
        }
    }
    int total = per * rounds;
    double r_api = total / ((double)t_api / 1e9), r_j = total / ((double)t_j / 1e9);
    double r_api_l = total / ((double)t_api_l / 1e9), r_j_l = total / ((double)t_j_l / 1e9);
    printf("record (create, FULL): API %.0f/s, journal %.0f/s\n", r_api, r_j);
    printf("guarded record (lock + transition + release, FULL): API %.0f/s, journal %.0f/s\n",
           r_api_l, r_j_l);
    bench_line("lib.record_create", r_api, "ops/s", r_j, "journal.record_create", r_api / r_j);
    bench_line("lib.record_guarded", r_api_l, "ops/s", r_j_l, "journal.lock_record_release",
               r_api_l / r_j_l);
    /* The same phases in CPU time per record (us): the API's own cost, without the fsync waits
     * that make the wall clock of a loaded machine move by tens of percent between phases. */
    if (c_api > 0 && c_j > 0 && c_api_l > 0 && c_j_l > 0) {
        bench_line("lib.record_create_cpu", (double)c_api / total / 1e3, "cpu-us",
                   (double)c_j / total / 1e3, "journal.record_create_cpu",
                   (double)c_j / (double)c_api);
        bench_line("lib.record_guarded_cpu", (double)c_api_l / total / 1e3, "cpu-us",
                   (double)c_j_l / total / 1e3, "journal.lock_record_release_cpu",
                   (double)c_j_l / (double)c_api_l);
    }
    fsa_lockmgr_close(lm);
    fsa_journal_close(j);
    (void)fieldsync_close(fs);
}

/* Where the library's sync cycle was when a check-in started (its status events, heard on the
 * sync thread): pushing (the queue still has ops), pulling (the pull, then the compaction of the
 * done ops: the engine says nothing between them), or over. */
enum { PH_BEFORE, PH_PUSH, PH_PULL, PH_DONE, PH_COUNT };
static const char *const phase_names[PH_COUNT] = {"before", "push", "pull+compact", "done"};

typedef struct drain_watch {
    _Atomic int phase;
    _Atomic int64_t depth;              /* the last queue depth heard */
    _Atomic int64_t max_depth;          /* the largest */
    _Atomic int64_t phase_ns[PH_COUNT]; /* when each phase was first heard (now_ns) */
} drain_watch_t;

static void on_status(void *ctx, const fieldsync_sync_status_t *s)
{
    drain_watch_t *w = ctx;
    int ph = atomic_load(&w->phase);
    if (ph == PH_DONE)
        return;
    if (s->state == FIELDSYNC_STATE_SYNCING) {
        if (strncmp(s->reason, "pulling", 7) == 0)
            ph = PH_PULL;
        else if (ph == PH_BEFORE)
            ph = PH_PUSH;
    } else if (ph != PH_BEFORE) {
        ph = PH_DONE; /* the cycle that drained the backlog ended */
    }
    int64_t expected = 0;
    (void)atomic_compare_exchange_strong(&w->phase_ns[ph], &expected, now_ns());
    atomic_store(&w->phase, ph);
    if (s->queue_depth >= 0) {
        atomic_store(&w->depth, s->queue_depth);
        if (s->queue_depth > atomic_load(&w->max_depth))
            atomic_store(&w->max_depth, s->queue_depth);
    }
}

typedef struct sample {
    int64_t ns;    /* the check-in's latency */
    int64_t at_ns; /* its start, from the start of the sync thread */
    int64_t depth; /* the queue depth last heard when it started */
    int phase;     /* PH_* when it started */
    int64_t gap;   /* the pause after it */
} sample_t;

/*
 * The p99 of n latencies corrected for the samples the loop did not take (coordinated omission):
 * a check-in that waited L held the loop, and at one check-in every `interval` (its pause after
 * the last and the set's median latency) the ones that would have come meanwhile waited L -
 * interval, L - 2 interval, ... as HdrHistogram's recordValueWithExpectedInterval counts them. A
 * stall of a second is then many samples, as for the guards who press the button during it, not
 * one. gap[i]: the pause after sample i.
 */
static int64_t p99_corrected(const int64_t *lat, const int64_t *gap, size_t n)
{
    int64_t *sorted = fsa_calloc(n > 0 ? n : 1, sizeof *sorted);
    size_t cap = n * 2 + 16, m = 0;
    int64_t *v = fsa_calloc(cap, sizeof *v);
    if (sorted == NULL || v == NULL) {
        fprintf(stderr, "bench_lib: out of memory\n");
        exit(1);
    }
    memcpy(sorted, lat, n * sizeof *lat);
    qsort(sorted, n, sizeof *sorted, cmp_i64);
    int64_t median = n > 0 ? sorted[n / 2] : 0;
    for (size_t i = 0; i < n; i++) {
        int64_t interval = gap[i] + median;
        for (int64_t x = lat[i]; x == lat[i] || (interval > 0 && x >= interval); x -= interval) {
            if (m == cap) {
                int64_t *grown = fsa_realloc(v, cap * 2 * sizeof *v);
                if (grown == NULL) {
                    fprintf(stderr, "bench_lib: out of memory\n");
                    exit(1);
                }
                v = grown;
                cap *= 2;
            }
            v[m++] = x;
            if (interval <= 0)
                break;
        }
    }
    int64_t r = p99(v, m);
    fsa_free(v);
    fsa_free(sorted);
    return r;
}

static int cmp_sample_desc(const void *a, const void *b)
{
    int64_t x = ((const sample_t *)a)->ns, y = ((const sample_t *)b)->ns;
    return x > y ? -1 : x < y;
}

static fieldsync_status_t checkin(fieldsync_t *fs, const char *tag, int i, int64_t *ns)
{
    fieldsync_position_t pos = {52.52, 13.40, 8};
    char people[32];
    snprintf(people, sizeof people, "%s-%d", tag, i % 50);
    int64_t t0 = now_ns();
    fieldsync_status_t st =
        fieldsync_attendance(fs, true, people, "site-1", &pos, NULL, NULL, NULL);
    *ns = now_ns() - t0;
    if (st != FIELDSYNC_OK)
        fprintf(stderr, "bench_lib: check-in: %s\n", fieldsync_errmsg(fs));
    return st;
}

/*
 * The check-in's p99 while the library's sync thread drains a backlog, beside its p99 when idle,
 * on one handle. `samples` check-ins are taken idle (one every 2 ms), then about as many spread
 * over the whole cycle that drains the backlog (the push, the pull and the compaction after it):
 * the gap between two is the cycle's expected remaining time over the samples still to take,
 * estimated from the queue depth's fall so far. With 2,000 samples the p99 is the 20th worst of
 * each set, not the 3rd of 300; the worst samples are printed with the phase of the cycle they
 * started in.
 */
static void latency_under_drain(const char *dir, const char *secret, const char *url, int backlog,
                                int samples)
{
    char path[512];
    snprintf(path, sizeof path, "%s/drain.db", dir);
    fieldsync_t *fs = open_api(path, secret, url, true);
    (void)fieldsync_close(fs);
    /* The backlog, written fast (synchronous=NORMAL, groups of 16): what a day offline leaves. */
    fsa_journal_t *j = NULL;
    fsa_journal_opts_t o = {.sync_normal = true};
    char err[320];
    if (fsa_journal_open(fsa_port_posix(), path, &o, &j, err, sizeof err) != FSA_OK) {
        fprintf(stderr, "bench_lib: %s\n", err);
        exit(1);
    }
    for (int t = 0; t < 100; t++) {
        char id[16];
        snprintf(id, sizeof id, "T%03d", t);
        fsa_rec_t rec;
        if (fsa_journal_create(j, FSA_TYPE_TICKET, id, NULL, NULL, &rec) != FSA_OK)
            fprintf(stderr, "bench_lib: %s\n", rec.error);
    }
    for (int done = 100; done < backlog; done += FSA_JOURNAL_GROUP_MAX) {
        fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
        memset(ops, 0, sizeof ops);
        for (int k = 0; k < FSA_JOURNAL_GROUP_MAX; k++) {
            ops[k].kind = FSA_OP_INCREMENT;
            ops[k].type = FSA_TYPE_TICKET;
            ops[k].by = 1;
            snprintf(ops[k].id, sizeof ops[k].id, "T%03d", (done + k) % 100);
            snprintf(ops[k].field, sizeof ops[k].field, "level");
        }
        fsa_rec_t rec;
        if (fsa_journal_record_group(j, ops, FSA_JOURNAL_GROUP_MAX, NULL, &rec) != FSA_OK)
            fprintf(stderr, "bench_lib: %s\n", rec.error);
    }
    fsa_journal_close(j);

    int64_t *idle = fsa_calloc((size_t)samples, sizeof *idle);
    int64_t *idle_gap = fsa_calloc((size_t)samples, sizeof *idle_gap);
    /* Room for twice the samples: the estimate of the remaining time can be short. */
    size_t cap = (size_t)samples * 2;
    sample_t *busy = fsa_calloc(cap, sizeof *busy);
    int64_t *busy_ns = fsa_calloc(cap, sizeof *busy_ns),
            *busy_gap = fsa_calloc(cap, sizeof *busy_gap);
    drain_watch_t *w = fsa_calloc(1, sizeof *w);
    if (idle == NULL || idle_gap == NULL || busy == NULL || busy_ns == NULL || busy_gap == NULL ||
        w == NULL) {
        fprintf(stderr, "bench_lib: out of memory\n");
        exit(1);
    }
    fs = open_api(path, NULL, NULL, false);
    for (int i = 0; i < samples; i++) {
        (void)checkin(fs, "idle", i, &idle[i]);
        idle_gap[i] = 2 * 1000000;
        sleep_ms(2);
    }
    if (fieldsync_add_status_listener(fs, on_status, w, NULL) != FIELDSYNC_OK ||
        fieldsync_start(fs, 0) != FIELDSYNC_OK) {
        fprintf(stderr, "bench_lib: start: %s\n", fieldsync_errmsg(fs));
        exit(1);
    }
    int64_t t0 = now_ns();
    int64_t gap_ns = 2 * 1000000; /* until the queue has visibly moved */
    size_t nb = 0;
    while (nb < cap && atomic_load(&w->phase) != PH_DONE) {
        sample_t *sm = &busy[nb];
        sm->at_ns = now_ns() - t0;
        sm->phase = atomic_load(&w->phase);
        sm->depth = atomic_load(&w->depth);
        (void)checkin(fs, "busy", (int)nb, &sm->ns);
        busy_ns[nb] = sm->ns;
        nb++;
        /* Spread the rest over the time the cycle still needs, at the drain's rate so far (the
         * compaction and the pull after the push are not in the estimate: the last gap is kept
         * for them). */
        int64_t depth = atomic_load(&w->depth), max = atomic_load(&w->max_depth);
        int64_t el = now_ns() - t0;
        if (depth > 0 && max > depth && el > 500 * 1000000LL && nb < (size_t)samples) {
            double left_ns = (double)el * (double)depth / (double)(max - depth);
            gap_ns = (int64_t)(left_ns / (double)((size_t)samples - nb));
            if (gap_ns < 1000000)
                gap_ns = 1000000;
            if (gap_ns > 1000000000)
                gap_ns = 1000000000;
        }
        busy_gap[nb - 1] = sm->gap = gap_ns;
        struct timespec ts = {(time_t)(gap_ns / 1000000000), (long)(gap_ns % 1000000000)};
        while (nanosleep(&ts, &ts) != 0) {
        }
    }
    double drain_s = (double)(now_ns() - t0) / 1e9;
    bool drained_during = atomic_load(&w->max_depth) >= backlog / 2;
    (void)fieldsync_close(fs);

    int64_t ci = p99_corrected(idle, idle_gap, (size_t)samples);
    int64_t cb = nb > 0 ? p99_corrected(busy_ns, busy_gap, nb) : 0;
    int64_t pi = p99(idle, (size_t)samples), pb = nb > 0 ? p99(busy_ns, nb) : 0;
    int per_phase[PH_COUNT] = {0};
    for (size_t i = 0; i < nb; i++)
        per_phase[busy[i].phase]++;
    printf("check-in p99: %.2f ms idle (%d samples), %.2f ms while draining %d ops (%zu samples: "
           "%d before the first status, %d pushing, %d pulling or compacting; the cycle took "
           "%.1f s%s)\n",
           (double)pi / 1e6, samples, (double)pb / 1e6, backlog, nb, per_phase[PH_BEFORE],
           per_phase[PH_PUSH], per_phase[PH_PULL], drain_s,
           drained_during ? "" : "; the drain was not seen in progress");
    printf("  corrected for the check-ins a stall held back (see p99_corrected): %.2f ms idle, "
           "%.2f ms while draining\n",
           (double)ci / 1e6, (double)cb / 1e6);
    int64_t pull_ns = atomic_load(&w->phase_ns[PH_PULL]),
            done_ns = atomic_load(&w->phase_ns[PH_DONE]);
    if (pull_ns > 0 && done_ns > pull_ns)
        printf("  push %.1f s, pull and compaction %.2f s\n", (double)(pull_ns - t0) / 1e9,
               (double)(done_ns - pull_ns) / 1e9);
    /* The worst: where in the cycle they were (p99 is the (nb/100)th of them). */
    qsort(busy, nb, sizeof *busy, cmp_sample_desc);
    for (size_t i = 0; i < nb && i < 12; i++)
        printf("  worst %2zu: %8.2f ms at %6.2f s, %-12s depth %" PRId64 "\n", i + 1,
               (double)busy[i].ns / 1e6, (double)busy[i].at_ns / 1e9, phase_names[busy[i].phase],
               busy[i].depth);
    bench_line("lib.checkin_p99_draining", (double)pb / 1e3, "us", (double)pi / 1e3,
               "lib.checkin_p99_idle", pb > 0 ? (double)pi / (double)pb : 0);
    bench_line("lib.checkin_p99_draining_corrected", (double)cb / 1e3, "us", (double)ci / 1e3,
               "lib.checkin_p99_idle_corrected", cb > 0 ? (double)ci / (double)cb : 0);
    fsa_free(w);
    fsa_free(busy_gap);
    fsa_free(idle_gap);
    fsa_free(busy_ns);
    fsa_free(busy);
    fsa_free(idle);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 2000;
    int backlog = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 100000;
    int samples = argc > 3 ? (int)strtol(argv[3], NULL, 10) : 2000;
    if (n < 4 || backlog < 200 || samples < 100 || samples > 1000000) {
        fprintf(stderr, "usage: bench_lib [RECORDS (>= 4)] [BACKLOG (>= 200)] "
                        "[CHECK-INS (100..1000000)]\n");
        return 2;
    }
    th_server_t srv;
    memset(&srv, 0, sizeof srv);
    if (!th_dir_make(srv.dir) || !th_write_files(&srv, 1) || !th_server_start(&srv, NULL))
        return 1;
    char secret[512];
    snprintf(secret, sizeof secret, "%s/dev.secret", srv.dir);
    fsa_signer_key_t key;
    th_device_key(0, &key);
    FILE *fp = fopen(secret, "w");
    if (fp == NULL)
        return 1;
    for (int i = 0; i < 32; i++)
        fprintf(fp, "%02x", key.bytes[i]);
    if (fclose(fp) != 0 || chmod(secret, 0600) != 0)
        return 1;
    api_cost(srv.dir, secret, srv.url, n);
    latency_under_drain(srv.dir, secret, srv.url, backlog, samples);
    th_server_stop(&srv);
    th_dir_remove(srv.dir);
    return 0;
}
