/* Benchmark: libfieldsync's public API beside the journal underneath it (the cost of the API),
 * and a check-in's latency while the library's sync thread drains a large backlog beside the same
 * latency when idle. */
#include <inttypes.h>
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

/* Check-in latencies: `count` check-ins, one every gap_ms, into lat[]. */
static void checkins(fieldsync_t *fs, int count, int gap_ms, int64_t *lat, const char *tag)
{
    fieldsync_position_t pos = {52.52, 13.40, 8};
    for (int i = 0; i < count; i++) {
        char people[32];
        snprintf(people, sizeof people, "%s-%d", tag, i % 50);
        int64_t t0 = now_ns();
        if (fieldsync_attendance(fs, true, people, "site-1", &pos, NULL, NULL, NULL) !=
            FIELDSYNC_OK)
            fprintf(stderr, "bench_lib: check-in: %s\n", fieldsync_errmsg(fs));
        lat[i] = now_ns() - t0;
        sleep_ms(gap_ms);
    }
}

/* The largest queue depth the status events showed (they run on the sync thread). */
static void on_status(void *ctx, const fieldsync_sync_status_t *s)
{
    int64_t *max = ctx;
    if (s->queue_depth > __atomic_load_n(max, __ATOMIC_RELAXED))
        __atomic_store_n(max, s->queue_depth, __ATOMIC_RELAXED);
}

static void latency_under_drain(const char *dir, const char *secret, const char *url, int backlog)
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

    enum { N = 300 };
    int64_t idle[N], busy[N];
    fs = open_api(path, NULL, NULL, false);
    checkins(fs, N, 2, idle, "idle");
    int64_t depth = 0;
    if (fieldsync_add_status_listener(fs, on_status, &depth, NULL) != FIELDSYNC_OK ||
        fieldsync_start(fs, 0) != FIELDSYNC_OK) {
        fprintf(stderr, "bench_lib: start: %s\n", fieldsync_errmsg(fs));
        exit(1);
    }
    int64_t t0 = now_ns();
    checkins(fs, N, 2, busy, "busy");
    /* The check-ins above ran while the drain was under way; wait for it to end. */
    fieldsync_sync_status_t s = {.size = sizeof s};
    for (;;) {
        if (fieldsync_status(fs, &s) != FIELDSYNC_OK || s.queue_depth == 0)
            break;
        sleep_ms(100);
    }
    double drain_s = (double)(now_ns() - t0) / 1e9;
    /* The check-ins ran during the drain when it still had most of the backlog to go. */
    bool drained_during = __atomic_load_n(&depth, __ATOMIC_RELAXED) >= backlog / 2;
    (void)fieldsync_close(fs);
    int64_t pi = p99(idle, N), pb = p99(busy, N);
    printf("check-in p99: %.2f ms idle, %.2f ms while draining %d ops (drain took %.1f s%s)\n",
           (double)pi / 1e6, (double)pb / 1e6, backlog, drain_s,
           drained_during ? "" : "; the drain was not seen in progress");
    bench_line("lib.checkin_p99_draining", (double)pb / 1e3, "us", (double)pi / 1e3,
               "lib.checkin_p99_idle", (double)pi / (double)pb);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 2000;
    int backlog = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 100000;
    if (n < 4 || backlog < 200) {
        fprintf(stderr, "usage: bench_lib [RECORDS (>= 4)] [BACKLOG (>= 200)]\n");
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
    latency_under_drain(srv.dir, secret, srv.url, backlog);
    th_server_stop(&srv);
    th_dir_remove(srv.dir);
    return 0;
}
