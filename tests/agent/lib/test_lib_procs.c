/* Tests for libfieldsync across processes on one journal: an app process with listeners
 * (started listen-only) while a daemon process (a forked child using the library's sync thread)
 * syncs the journal against the real fieldsync-server: the app hears every pulled change once,
 * within a second of the daemon, and only the daemon ever syncs. */
#define _XOPEN_SOURCE 700
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "sync/transport.h"
#include "tests/agent/lib/lib_sync_fixture.h"

#define MAX_PULLED 512

typedef struct pulled {
    int64_t seq;
    int64_t at_ms; /* CLOCK_MONOTONIC, the same clock in every process */
    char id[16];
    int64_t version;
} pulled_t;

typedef struct fx {
    lfx_t lfx;
    pid_t child;
    int cmd; /* the write end of the child's command pipe: closing it stops the child */
    char log[420];
} fx_t;

static int setup(void **state)
{
    fx_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL || !lfx_setup(&f->lfx, NULL, false))
        return -1;
    f->cmd = -1;
    snprintf(f->log, sizeof f->log, "%s/daemon-pulled.txt", f->lfx.srv.dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->cmd >= 0)
        close(f->cmd);
    if (f->child > 0) {
        kill(f->child, SIGKILL);
        waitpid(f->child, NULL, 0);
    }
    lfx_teardown(&f->lfx);
    fsa_free(f);
    return 0;
}

/* ---- the daemon process ---- */

typedef struct daemon_ctx {
    FILE *log;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopped;
} daemon_ctx_t;

static void daemon_change(void *ctx, const fieldsync_change_t *c)
{
    daemon_ctx_t *d = ctx;
    if (c->reason != FIELDSYNC_CHANGE_PULLED)
        return;
    fprintf(d->log, "%" PRId64 " %" PRId64 " %s %" PRId64 "\n", c->seq, lfx_now_ms(), c->id,
            c->version);
    fflush(d->log);
}

static void daemon_status(void *ctx, const fieldsync_sync_status_t *s)
{
    daemon_ctx_t *d = ctx;
    if (s->state != FIELDSYNC_STATE_STOPPED)
        return;
    pthread_mutex_lock(&d->mu);
    d->stopped = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

/* The child: syncs the journal with the library's thread until its command pipe closes. */
static int daemon_main(const char *db, const char *log, int cmd)
{
    daemon_ctx_t d = {0};
    d.log = fopen(log, "w");
    if (d.log == NULL)
        return 10;
    pthread_mutex_init(&d.mu, NULL);
    pthread_cond_init(&d.cv, NULL);
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = db;
    cfg.sync_interval_ms = 200; /* pull often: the other device's changes come in quickly */
    cfg.label = "test-daemon";
    fieldsync_t *fs = NULL;
    if (fieldsync_open(&cfg, &fs) != FIELDSYNC_OK)
        return 11;
    if (fieldsync_add_change_listener(fs, daemon_change, &d, NULL) != FIELDSYNC_OK ||
        fieldsync_add_status_listener(fs, daemon_status, &d, NULL) != FIELDSYNC_OK)
        return 12;
    if (fieldsync_start(fs, 0) != FIELDSYNC_OK)
        return 13;
    char b;
    while (read(cmd, &b, 1) > 0) {
    }
    if (fieldsync_stop(fs) != FIELDSYNC_OK)
        return 14;
    pthread_mutex_lock(&d.mu);
    while (!d.stopped)
        pthread_cond_wait(&d.cv, &d.mu);
    pthread_mutex_unlock(&d.mu);
    if (fieldsync_close(fs) != FIELDSYNC_OK)
        return 15;
    return fclose(d.log) == 0 ? 0 : 16;
}

static void start_daemon(fx_t *f)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[1]);
        _exit(daemon_main(f->lfx.db, f->log, p[0]));
    }
    close(p[0]);
    f->child = pid;
    f->cmd = p[1];
}

static int stop_daemon(fx_t *f)
{
    close(f->cmd);
    f->cmd = -1;
    int status = 0;
    assert_int_equal(waitpid(f->child, &status, 0), f->child);
    f->child = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static size_t read_daemon_log(const char *path, pulled_t *out, size_t max)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    size_t n = 0;
    char line[256];
    while (n < max && fgets(line, sizeof line, fp) != NULL) {
        pulled_t *p = &out[n];
        if (sscanf(line, "%" SCNd64 " %" SCNd64 " %15s %" SCNd64, &p->seq, &p->at_ms, p->id,
                   &p->version) == 4)
            n++;
    }
    (void)fclose(fp);
    return n;
}

/* ---- the app process ---- */

typedef struct app {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pulled_t pulled[MAX_PULLED];
    size_t n;
} app_t;

static void app_change(void *ctx, const fieldsync_change_t *c)
{
    app_t *a = ctx;
    if (c->reason != FIELDSYNC_CHANGE_PULLED)
        return;
    pthread_mutex_lock(&a->mu);
    if (a->n < MAX_PULLED) {
        pulled_t *p = &a->pulled[a->n++];
        p->seq = c->seq;
        p->at_ms = lfx_now_ms();
        snprintf(p->id, sizeof p->id, "%s", c->id);
        p->version = c->version;
    }
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* The SYNC lock's holders now, from the app's handle: every one must be the daemon. */
static void check_sync_holders(fieldsync_t *fs, pid_t daemon, int *seen)
{
    char *json = NULL;
    fieldsync_status_t st = fieldsync_lock_stats(fs, &json);
    if (st != FIELDSYNC_OK) /* seen once (EIO) in a coverage build: say what failed */
        print_error("fieldsync_lock_stats: %s: %s\n", fieldsync_status_str(st),
                    fieldsync_errmsg(fs));
    assert_int_equal(st, FIELDSYNC_OK);
    int holders = 0;
    for (const char *p = strstr(json, "\"key\":\"SYNC:device\""); p != NULL;
         p = strstr(p + 1, "\"key\":\"SYNC:device\"")) {
        holders++;
        const char *pid = strstr(p, "\"pid\":");
        assert_non_null(pid);
        long v = strtol(pid + 6, NULL, 10);
        if (v != (long)daemon)
            fail_msg("the SYNC lock is held by pid %ld, not the daemon (%ld): %s", v, (long)daemon,
                     json);
    }
    assert_true(holders <= 1);
    *seen += holders;
    fieldsync_free(json);
}

/* Waits (bounded) until the app heard a PULLED change of each of ids at version >= want,
 * sampling the SYNC lock's holders meanwhile. */
static bool app_heard(app_t *a, fieldsync_t *fs, pid_t daemon, const char *const *ids, size_t n,
                      int64_t want, int *holders_seen, int ms)
{
    int64_t end = lfx_now_ms() + ms;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        size_t got = 0;
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < a->n; k++)
                if (strcmp(a->pulled[k].id, ids[i]) == 0 && a->pulled[k].version >= want) {
                    got++;
                    break;
                }
        if (got == n) {
            pthread_mutex_unlock(&a->mu);
            return true;
        }
        if (lfx_now_ms() > end) {
            pthread_mutex_unlock(&a->mu);
            return false;
        }
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_nsec += 20 * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        (void)pthread_cond_timedwait(&a->cv, &a->mu, &dl);
        pthread_mutex_unlock(&a->mu);
        check_sync_holders(fs, daemon, holders_seen);
    }
}

/* Another device (dev001) pushes ops straight to the server. */
static void other_device_push(fx_t *f, const char *kind, const char *const *ids, size_t n,
                              const char *extra)
{
    char ops[8192] = "";
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        char op[512];
        tc_op(op, sizeof op, NULL, kind, "ticket", ids[i], extra);
        len += (size_t)snprintf(ops + len, sizeof ops - len, "%s%s", i ? "," : "", op);
        assert_true(len < sizeof ops);
    }
    fsa_codec_result_t *res = NULL;
    size_t count = 0;
    assert_int_equal(tc_push(NULL, f->lfx.srv.url, 1, ops, &res, &count), 200);
    assert_int_equal(count, n);
    for (size_t i = 0; i < count; i++)
        assert_int_equal(res[i].status, FSA_RESULT_APPLIED);
    fsa_codec_results_free(res, count);
}

static int cmp_seq(const void *x, const void *y)
{
    int64_t a = ((const pulled_t *)x)->seq, b = ((const pulled_t *)y)->seq;
    return (a > b) - (a < b);
}

static void test_procs__app_hears_the_daemons_pulls_once(void **state)
{
    fx_t *f = *state;
    start_daemon(f);
    app_t a;
    memset(&a, 0, sizeof a);
    pthread_mutex_init(&a.mu, NULL);
    pthread_cond_init(&a.cv, NULL);
    fieldsync_t *fs = lfx_open(&f->lfx, 0, 0);
    assert_int_equal(fieldsync_add_change_listener(fs, app_change, &a, NULL), FIELDSYNC_OK);
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, FIELDSYNC_START_LISTEN_ONLY), FIELDSYNC_OK);
    assert_int_equal(fieldsync_sync_once(fs, true, NULL), FIELDSYNC_EBUSY); /* started */

    int holders = 0;
    const char *ids[] = {"X0", "X1", "X2", "X3", "X4", "X5"};
    size_t nids = sizeof ids / sizeof ids[0];
    int rounds = lfx_scaled(4);
    other_device_push(f, "create", ids, nids, "");
    if (!app_heard(&a, fs, f->child, ids, nids, 1, &holders, 60000))
        fail_msg("the app did not hear the daemon's pulls of the new tickets within 60 s");
    for (int i = 0; i < rounds; i++) {
        other_device_push(f, "increment", ids, nids, ",\"field\":\"level\",\"by\":1");
        if (!app_heard(&a, fs, f->child, ids, nids, 2 + i, &holders, 60000))
            fail_msg("round %d: the app did not hear the pulls within 60 s", i);
    }
    assert_int_equal(fieldsync_stop(fs), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_is_stopped, 20000));
    assert_int_equal(stop_daemon(f), 0);

    /* The app never synced: the daemon alone did (its holders were the only ones seen). */
    fieldsync_stats_t st = {.size = sizeof st};
    assert_int_equal(fieldsync_stats(fs, &st), FIELDSYNC_OK);
    assert_int_equal(st.cycles_ok + st.cycles_offline + st.cycles_error + st.cycles_busy, 0);
    printf("SYNC lock holders sampled (all the daemon): %d\n", holders);

    /* Every pulled change the daemon folded, the app heard exactly once, within a second. */
    static pulled_t d[MAX_PULLED];
    size_t nd = read_daemon_log(f->log, d, MAX_PULLED);
    assert_true(nd >= nids * (size_t)(rounds + 1) / 2);
    pthread_mutex_lock(&a.mu);
    assert_int_equal(a.n, nd);
    qsort(a.pulled, a.n, sizeof a.pulled[0], cmp_seq);
    qsort(d, nd, sizeof d[0], cmp_seq);
    int64_t worst = 0;
    for (size_t i = 0; i < nd; i++) {
        if (a.pulled[i].seq != d[i].seq || strcmp(a.pulled[i].id, d[i].id) != 0 ||
            a.pulled[i].version != d[i].version)
            fail_msg("change %zu: the app heard seq %" PRId64 " (%s v%" PRId64
                     "), the daemon folded seq %" PRId64 " (%s v%" PRId64 ")",
                     i, a.pulled[i].seq, a.pulled[i].id, a.pulled[i].version, d[i].seq, d[i].id,
                     d[i].version);
        if (i > 0 && a.pulled[i].seq == a.pulled[i - 1].seq)
            fail_msg("change seq %" PRId64 " heard twice", a.pulled[i].seq);
        int64_t late = a.pulled[i].at_ms - d[i].at_ms;
        if (late > worst)
            worst = late;
    }
    pthread_mutex_unlock(&a.mu);
    printf("pulled changes: %zu; the app heard each at most %" PRId64 " ms after the daemon\n", nd,
           worst);
    if (worst >= 1000)
        fail_msg("the app heard a pulled change %" PRId64 " ms after the daemon", worst);
    assert_int_equal(r.after_stopped, 0);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
    pthread_cond_destroy(&a.cv);
    pthread_mutex_destroy(&a.mu);
}

/* The app's records reach the daemon, which syncs them; the app hears they were synced. */
static void test_procs__app_records_the_daemon_syncs(void **state)
{
    fx_t *f = *state;
    start_daemon(f);
    fieldsync_t *fs = lfx_open(&f->lfx, 0, 0);
    lrec_t r;
    lrec_init(&r, fs, 64);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, FIELDSYNC_START_LISTEN_ONLY), FIELDSYNC_OK);
    int n = lfx_scaled(20);
    for (int i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof id, "A%d", i);
        assert_int_equal(fieldsync_ticket_create(fs, id, NULL, NULL), FIELDSYNC_OK);
    }
    /* The status the app hears comes from the journal the daemon drains. */
    int64_t end = lfx_now_ms() + 60000;
    for (;;) {
        fieldsync_sync_status_t s = {.size = sizeof s};
        assert_int_equal(fieldsync_status(fs, &s), FIELDSYNC_OK);
        if (s.queue_depth == 0)
            break;
        if (lfx_now_ms() > end)
            fail_msg("the daemon did not drain the app's records within 60 s");
        pthread_mutex_lock(&r.mu);
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 1;
        (void)pthread_cond_timedwait(&r.cv, &r.mu, &dl);
        pthread_mutex_unlock(&r.mu);
    }
    for (int i = 0; i < n; i++) {
        char id[16], *fields = NULL;
        snprintf(id, sizeof id, "A%d", i);
        assert_true(tc_get(NULL, f->lfx.srv.url, "ticket", id, &fields) > 0);
        fsa_free(fields);
    }
    assert_int_equal(fieldsync_stop(fs), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_is_stopped, 20000));
    assert_int_equal(r.recorded, n);
    assert_int_equal(r.out_of_order, 0);
    assert_int_equal(stop_daemon(f), 0);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

int main(void)
{
    if (fsa_transport_global_init() != FSA_OK)
        return 1;
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_procs__app_hears_the_daemons_pulls_once),
        T(test_procs__app_records_the_daemon_syncs),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
