/* Tests for agent/lib/worker.c, libfieldsync's sync thread, against the real fieldsync-server:
 * sixteen app threads recording while the thread drains with faults on, start/stop/close races,
 * stop from a listener, nothing after STOPPED, a refused device, sync_once and sync_now. */
#define _GNU_SOURCE /* SCHED_BATCH */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include "agent/lib/internal.h" /* the simulator's hook: a handle on a sim port */
#include "port/sim/sim.h"
#include "storage/journal.h"
#include "sync/codec.h"
#include "sync/transport.h"
#include "tests/agent/lib/lib_sync_fixture.h"

#define THREADS 16
#define TICKETS 4

static int setup_plain(void **state)
{
    lfx_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL || !lfx_setup(f, NULL, false))
        return -1;
    *state = f;
    return 0;
}

static int setup_faults(void **state)
{
    const char *faults[] = {"--fault-drop", "0.05",         "--fault-5xx", "0.05", "--fault-reset",
                            "0.05",         "--fault-seed", "7",           NULL};
    lfx_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL || !lfx_setup(f, faults, false))
        return -1;
    *state = f;
    return 0;
}

/* A slow server, so that a cycle is still on when close comes. */
static int setup_slow(void **state)
{
    const char *slow[] = {"--fault-latency-ms", "300", NULL};
    lfx_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL || !lfx_setup(f, slow, false))
        return -1;
    *state = f;
    return 0;
}

/* Runs cmd with the shell in dir; true when it succeeded. */
static bool sh_in(const char *dir, const char *cmd)
{
    char full[1024];
    snprintf(full, sizeof full, "cd '%s' && %s >/dev/null 2>&1", dir, cmd);
    return system(full) == 0;
}

/* The server over HTTPS: a test CA (ca.pem) and the server's certificate for 127.0.0.1 signed by
 * it, made by the openssl tool (toolchain/install-deps.sh installs it), and another CA
 * (other.pem) that signed nothing the server has. The journal is set up for plain http to a port
 * that nothing listens on: the tests give the server's URL and a CA file when they open. */
static int setup_tls(void **state)
{
    lfx_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL || !lfx_setup(f, NULL, true))
        return -1;
    const char *d = f->srv.dir;
    FILE *cnf = NULL;
    char path[512];
    snprintf(path, sizeof path, "%s/ca.cnf", d);
    cnf = fopen(path, "w");
    if (cnf == NULL)
        return -1;
    fputs("[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n"
          "[dn]\nCN = fieldsync test CA\n"
          "[v3_ca]\nbasicConstraints = critical, CA:TRUE\n"
          "keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n"
          "[srv]\nbasicConstraints = critical, CA:FALSE\n"
          "keyUsage = critical, digitalSignature, keyEncipherment\n"
          "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n",
          cnf);
    if (fclose(cnf) != 0)
        return -1;
#define EC "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    bool ok =
        sh_in(d, "openssl req -x509 -config ca.cnf " EC " -keyout ca.key -out ca.pem -days 2") &&
        sh_in(d,
              "openssl req -x509 -config ca.cnf " EC " -keyout other.key -out other.pem -days 2") &&
        sh_in(d, "openssl req -new " EC " -keyout srv.key -out srv.csr -subj /CN=127.0.0.1") &&
        sh_in(d, "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 2 "
                 "-days 2 -extfile ca.cnf -extensions srv -out srv.pem");
#undef EC
    char cert[512], key[512];
    snprintf(cert, sizeof cert, "%s/srv.pem", d);
    snprintf(key, sizeof key, "%s/srv.key", d);
    const char *tls[] = {"--tls-cert", cert, "--tls-key", key, NULL};
    if (!ok || chmod(key, 0600) != 0 || !th_server_start(&f->srv, tls)) {
        fprintf(stderr, "setup_tls: cannot make the certificates or start the server\n");
        return -1;
    }
    f->started = true;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    lfx_t *f = *state;
    lfx_teardown(f);
    fsa_free(f);
    return 0;
}

static bool on_server(lfx_t *f, const char *id)
{
    char *fields = NULL;
    bool there = tc_get(NULL, f->srv.url, "ticket", id, &fields) > 0;
    fsa_free(fields);
    return there;
}

/* Reads the journal's queue depth through the public API. */
static int64_t queue_depth(fieldsync_t *fs)
{
    fieldsync_sync_status_t s = {.size = sizeof s};
    assert_int_equal(fieldsync_status(fs, &s), FIELDSYNC_OK);
    return s.queue_depth;
}

/* Waits (bounded) until the journal's queue is empty: between looks, on the status listener's
 * signal (a status event follows every cycle). */
static bool drained(fieldsync_t *fs, lrec_t *r, int ms)
{
    int64_t end = lfx_now_ms() + ms;
    while (lfx_now_ms() < end) {
        if (queue_depth(fs) == 0)
            return true;
        pthread_mutex_lock(&r->mu);
        int seen = r->status_events;
        pthread_mutex_unlock(&r->mu);
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 1;
        pthread_mutex_lock(&r->mu);
        while (r->status_events == seen && pthread_cond_timedwait(&r->cv, &r->mu, &dl) == 0) {
        }
        pthread_mutex_unlock(&r->mu);
    }
    return queue_depth(fs) == 0;
}

/* Open file descriptors of this process. */
static int open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    assert_non_null(dir);
    int n = 0;
    while (readdir(dir) != NULL)
        n++;
    closedir(dir);
    return n;
}

/* The threads of this process, as the kernel counts them (/proc/self/status). */
static int threads_now(void)
{
    FILE *fp = fopen("/proc/self/status", "r");
    assert_non_null(fp);
    char line[256];
    int n = -1;
    while (n < 0 && fgets(line, sizeof line, fp) != NULL)
        if (strncmp(line, "Threads:", 8) == 0)
            n = (int)strtol(line + 8, NULL, 10);
    (void)fclose(fp);
    assert_true(n > 0);
    return n;
}

/* Waits (up to ms) until the process is back to n threads: the library's threads have ended,
 * not only been told to. The proof that nothing of a handle can run any more, instead of a
 * sleep that hopes a stray thread would have shown itself by then. */
static bool threads_back_to(int n, int ms)
{
    int64_t end = lfx_now_ms() + ms;
    while (threads_now() > n) {
        if (lfx_now_ms() > end)
            return false;
        struct timespec ts = {0, 1000000L}; /* a poll of the condition, not a wait for it */
        nanosleep(&ts, NULL);
    }
    return true;
}

static void stop_and_wait(fieldsync_t *fs, lrec_t *r)
{
    assert_int_equal(fieldsync_stop(fs), FIELDSYNC_OK);
    if (!lrec_wait(r, lrec_is_stopped, 30000))
        fail_msg("no STOPPED status within 30 s of fieldsync_stop");
}

/* ---- sixteen threads recording while the sync thread drains, faults on ---- */

typedef struct worker_arg {
    fieldsync_t *fs;
    int index, n;
    char (*op_ids)[40];
    int64_t by[TICKETS]; /* this thread's intents per ticket */
    int failures;
} worker_arg_t;

static void *recorder(void *p)
{
    worker_arg_t *a = p;
    for (int i = 0; i < a->n; i++) {
        int t = (a->index + i) % TICKETS;
        int by = 1 + (a->index + i) % 3;
        char op[160];
        snprintf(op, sizeof op,
                 "{\"kind\":\"increment\",\"type\":\"ticket\",\"id\":\"T%d\",\"field\":\"level\","
                 "\"by\":%d}",
                 t, by);
        fieldsync_rec_t rec;
        if (fieldsync_record(a->fs, op, NULL, &rec) != FIELDSYNC_OK) {
            a->failures++;
            continue;
        }
        snprintf(a->op_ids[i], 40, "%s", rec.op_id);
        a->by[t] += by;
    }
    return NULL;
}

static int cmp_id(const void *x, const void *y)
{
    return strcmp((const char *)x, (const char *)y);
}

static void test_start__sixteen_threads_drain_with_faults(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, 0, 500);

    int per = lfx_scaled(40);
    int total = THREADS * per + TICKETS;
    char(*ids)[40] = fsa_calloc((size_t)total, sizeof *ids);
    assert_non_null(ids);
    lrec_t r;
    lrec_init(&r, fs, total + 16);
    lrec_listen(&r, fs);
    int n = 0;
    for (int t = 0; t < TICKETS; t++) {
        char id[16];
        snprintf(id, sizeof id, "T%d", t);
        fieldsync_rec_t rec;
        assert_int_equal(fieldsync_ticket_create(fs, id, NULL, &rec), FIELDSYNC_OK);
        snprintf(ids[n++], 40, "%s", rec.op_id);
    }
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_EBUSY); /* already started */

    pthread_t th[THREADS];
    worker_arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (worker_arg_t){.fs = fs, .index = i, .n = per, .op_ids = ids + n + i * per};
        assert_int_equal(pthread_create(&th[i], NULL, recorder, &args[i]), 0);
    }
    int64_t want[TICKETS] = {0};
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
        for (int t = 0; t < TICKETS; t++)
            want[t] += args[i].by[t];
    }
    /* Faults may have put the thread into a backoff: ask for a cycle now, then wait. */
    assert_int_equal(fieldsync_sync_now(fs), FIELDSYNC_OK);
    if (!drained(fs, &r, 180000))
        fail_msg("the queue did not drain within 180 s (%" PRId64 " left)", queue_depth(fs));
    /* The server has exactly the sum of the intents. */
    for (int t = 0; t < TICKETS; t++) {
        char id[16], level[32];
        snprintf(id, sizeof id, "T%d", t);
        tc_field(NULL, f->srv.url, "ticket", id, "level", level, sizeof level);
        if (strtoll(level, NULL, 10) != want[t])
            fail_msg("ticket %s: the server has level %s, the intents sum to %" PRId64, id, level,
                     want[t]);
    }
    stop_and_wait(fs, &r);
    /* Every recorded op's RECORDED change was heard exactly once, changes in order. */
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.recorded, total);
    assert_int_equal(r.out_of_order, 0);
    qsort(ids, (size_t)total, sizeof *ids, cmp_id);
    qsort(r.recorded_ids, (size_t)total, sizeof *r.recorded_ids, cmp_id);
    for (int i = 0; i < total; i++)
        if (strcmp(ids[i], r.recorded_ids[i]) != 0)
            fail_msg("recorded op %s: its RECORDED change was not heard exactly once (found %s)",
                     ids[i], r.recorded_ids[i]);
    pthread_mutex_unlock(&r.mu);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    assert_int_equal(r.after_stopped, 0);
    lrec_clear(&r);
    fsa_free(ids);
}

/* ---- start, stop and close races ---- */

static void test_close__during_a_cycle(void **state)
{
    lfx_t *f = *state;
    int threads0 = threads_now(); /* the server is another process */
    fieldsync_t *fs = lfx_open(f, 0, 0);
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "C%d", i);
        assert_int_equal(fieldsync_ticket_create(fs, id, NULL, NULL), FIELDSYNC_OK);
    }
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_is_syncing, 20000));
    int64_t t0 = lfx_now_ms();
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    int64_t took = lfx_now_ms() - t0;
    /* The request in flight ends (300 ms of latency), the cycle sees the cancel. */
    if (took > 10000)
        fail_msg("close took %" PRId64 " ms", took);
    /* Close delivers nothing more: the cycle's end and STOPPED go unheard. */
    pthread_mutex_lock(&r.mu);
    assert_false(r.stopped);
    int events = r.status_events + r.change_events + r.conflict_events;
    pthread_mutex_unlock(&r.mu);
    /* The handle is gone: its threads have ended, so nothing of it can run any more. */
    assert_true(threads_back_to(threads0, 20000));
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.status_events + r.change_events + r.conflict_events, events);
    assert_int_equal(r.after_stopped, 0);
    pthread_mutex_unlock(&r.mu);
    lrec_clear(&r);
}

static void test_stop__inside_a_listener(void **state)
{
    lfx_t *f = *state;
    int threads0 = threads_now(); /* the server is another process */
    fieldsync_t *fs = lfx_open(f, 0, 0);
    assert_int_equal(fieldsync_ticket_create(fs, "S1", NULL, NULL), FIELDSYNC_OK);
    lrec_t r;
    lrec_init(&r, fs, 0);
    r.stop_in_listener = true;
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_is_stopped, 30000));
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.stop_calls, 1);
    assert_int_equal(r.stop_result, FIELDSYNC_OK);
    assert_int_equal(r.last.state, FIELDSYNC_STATE_STOPPED);
    pthread_mutex_unlock(&r.mu);
    /* STOPPED says the thread ended, not that something failed. */
    assert_int_equal(r.last.last_error, FIELDSYNC_OK);
    /* Records after the stop: no listener hears of them (the thread is gone). */
    /* The thread ends after STOPPED (a start or close joins it): once it and the watch's are
     * gone, a record has no thread to be heard on, and none is started for it. */
    assert_true(threads_back_to(threads0, 20000));
    assert_int_equal(fieldsync_ticket_create(fs, "S2", NULL, NULL), FIELDSYNC_OK);
    assert_int_equal(threads_now(), threads0);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    assert_int_equal(r.after_stopped, 0);
    lrec_clear(&r);
}

static void test_start__stop_rounds_nothing_after_stopped(void **state)
{
    lfx_t *f = *state;
    int threads0 = threads_now(); /* the server is another process */
    fieldsync_t *fs = lfx_open(f, 0, 0);
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    int rounds = lfx_scaled(100);
    /* The journal's reader connection (its files), opened by the first read of the queue's
     * figures, stays with the handle: opened before the count. */
    fieldsync_sync_status_t ss = {.size = sizeof ss};
    assert_int_equal(fieldsync_status(fs, &ss), FIELDSYNC_OK);
    int fds = open_fds();
    for (int i = 0; i < rounds; i++) {
        pthread_mutex_lock(&r.mu);
        assert_int_equal(r.after_stopped, 0);
        r.stopped = false;
        r.syncing_seen = 0;
        pthread_mutex_unlock(&r.mu);
        char id[16];
        snprintf(id, sizeof id, "R%d", i);
        assert_int_equal(fieldsync_ticket_create(fs, id, NULL, NULL), FIELDSYNC_OK);
        /* Right after the last STOPPED: a start must be taken (not EBUSY). */
        uint32_t flags = i % 3 == 2 ? FIELDSYNC_START_LISTEN_ONLY : 0;
        fieldsync_status_t st = fieldsync_start(fs, flags);
        if (st != FIELDSYNC_OK)
            fail_msg("round %d: start: %s", i, fieldsync_errmsg(fs));
        if (i % 2 == 0 && flags == 0)
            assert_true(lrec_wait(&r, lrec_is_syncing, 20000)); /* stop in a cycle */
        stop_and_wait(fs, &r);
    }
    /* Each start's watch, pipe and threads are gone with it. The last thread may still be on
     * its way out (after STOPPED): a start joins it. */
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.after_stopped, 0);
    r.stopped = false;
    pthread_mutex_unlock(&r.mu);
    assert_int_equal(fieldsync_start(fs, FIELDSYNC_START_LISTEN_ONLY), FIELDSYNC_OK);
    stop_and_wait(fs, &r);
    assert_true(open_fds() <= fds + 3); /* at most the last start's inotify fd and pipe */
    /* Its threads end on their own after STOPPED; until then one could still deliver. */
    assert_true(threads_back_to(threads0, 20000));
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    assert_int_equal(r.after_stopped, 0);
    lrec_clear(&r);
}

/* A listener that holds the first STOPPED's delivery until released. */
typedef struct held_stop {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopped;  /* STOPPED events heard */
    bool holding; /* the first is being held */
    bool release;
} held_stop_t;

static void hold_first_stopped(void *ctx, const fieldsync_sync_status_t *st)
{
    held_stop_t *h = ctx;
    if (st->state != FIELDSYNC_STATE_STOPPED)
        return;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&h->mu);
    if (++h->stopped == 1) {
        h->holding = true;
        pthread_cond_broadcast(&h->cv);
        while (!h->release && pthread_cond_timedwait(&h->cv, &h->mu, &until) == 0)
            ;
        h->holding = false;
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void *start_listen_only(void *arg)
{
    return (void *)(intptr_t)fieldsync_start(arg, FIELDSYNC_START_LISTEN_ONLY);
}

/*
 * A start after a stop joins the last thread, which may still be delivering its STOPPED. A stop
 * that comes meanwhile is the new start's: its thread ends, and says STOPPED. The start cleared
 * the stop after the join, so the new thread ran on, and no STOPPED came.
 */
static void test_stop__during_a_start_that_joins_the_last_thread(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, 0, 0);
    /* Static: a failed assertion may leave a thread that delivers to it. */
    static held_stop_t h = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    assert_int_equal(fieldsync_add_status_listener(fs, hold_first_stopped, &h, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_start(fs, FIELDSYNC_START_LISTEN_ONLY), FIELDSYNC_OK);
    assert_int_equal(fieldsync_stop(fs), FIELDSYNC_OK);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&h.mu);
    while (!h.holding && pthread_cond_timedwait(&h.cv, &h.mu, &until) == 0)
        ;
    assert_true(h.holding); /* the last thread is in its STOPPED */
    pthread_mutex_unlock(&h.mu);
    pthread_t starter;
    assert_int_equal(pthread_create(&starter, NULL, start_listen_only, fs), 0);
    /* The new start has taken the handle once fieldsync_sync_now finds it running (the old
     * thread, ended, does not count): it then waits for the old one. */
    int64_t end = lfx_now_ms() + 30000;
    while (fieldsync_sync_now(fs) != FIELDSYNC_OK && lfx_now_ms() < end)
        sched_yield();
    assert_int_equal(fieldsync_stop(fs), FIELDSYNC_OK);
    pthread_mutex_lock(&h.mu);
    h.release = true;
    pthread_cond_broadcast(&h.cv);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    while (h.stopped < 2 && pthread_cond_timedwait(&h.cv, &h.mu, &until) == 0)
        ;
    int stopped = h.stopped;
    pthread_mutex_unlock(&h.mu);
    void *started = NULL;
    assert_int_equal(pthread_join(starter, &started), 0);
    assert_int_equal((intptr_t)started, FIELDSYNC_OK);
    if (stopped < 2)
        fail_msg("the stop during the start was lost: no STOPPED within 10 s");
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

/* ---- the sync thread is background work ---- */

typedef struct sched_seen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int heard;              /* status events heard */
    int policy, nice;       /* of the thread that ran the first */
    fieldsync_state_t last; /* the newest state */
} sched_seen_t;

/* The nice value of the calling thread (Linux: PRIO_PROCESS with who 0 is this thread). */
static int thread_nice(void)
{
    errno = 0;
    int v = getpriority(PRIO_PROCESS, 0);
    return v == -1 && errno != 0 ? -100 : v;
}

static int thread_policy(void)
{
    int policy = -1;
    struct sched_param sp;
    return pthread_getschedparam(pthread_self(), &policy, &sp) == 0 ? policy : -1;
}

static void note_sched(void *ctx, const fieldsync_sync_status_t *st)
{
    sched_seen_t *n = ctx;
    int policy = thread_policy(), nice = thread_nice();
    pthread_mutex_lock(&n->mu);
    if (n->heard++ == 0) {
        n->policy = policy;
        n->nice = nice;
    }
    n->last = st->state;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

/* Waits (bounded) for a status event, or for STOPPED when stopped. */
static bool sched_wait(sched_seen_t *n, bool stopped)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&n->mu);
    int rc = 0;
    while (rc == 0 && (stopped ? n->last != FIELDSYNC_STATE_STOPPED : n->heard == 0))
        rc = pthread_cond_timedwait(&n->cv, &n->mu, &until);
    pthread_mutex_unlock(&n->mu);
    return rc == 0;
}

/* The sync thread is SCHED_BATCH (its wake-ups do not preempt the app's threads) at the app's
 * nice value (never starved below them while it holds the journal they wait for);
 * FIELDSYNC_START_FOREGROUND leaves it as the starter's thread is. */
static void test_start__sync_thread_is_background_work(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, 0, 0);
    /* Static: a failed assertion leaves the sync thread running with it. */
    static sched_seen_t n = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    assert_int_equal(fieldsync_add_status_listener(fs, note_sched, &n, NULL), FIELDSYNC_OK);
    int app = thread_nice();
    assert_true(app >= -20);
    assert_int_equal(thread_policy(), SCHED_OTHER);
    int want[2] = {SCHED_BATCH, SCHED_OTHER};
    uint32_t flags[2] = {0, FIELDSYNC_START_FOREGROUND};
    for (int i = 0; i < 2; i++) {
        pthread_mutex_lock(&n.mu);
        n.heard = 0;
        n.last = FIELDSYNC_STATE_IDLE;
        pthread_mutex_unlock(&n.mu);
        assert_int_equal(fieldsync_ticket_create(fs, i == 0 ? "N0" : "N1", NULL, NULL),
                         FIELDSYNC_OK);
        assert_int_equal(fieldsync_start(fs, flags[i]), FIELDSYNC_OK);
        assert_true(sched_wait(&n, false));
        /* The sync thread that runs the listener, not the app's thread, is background work. */
        assert_int_equal(n.policy, want[i]);
        assert_int_equal(n.nice, app);
        assert_int_equal(thread_policy(), SCHED_OTHER);
        assert_int_equal(thread_nice(), app);
        assert_int_equal(fieldsync_stop(fs), FIELDSYNC_OK);
        assert_true(sched_wait(&n, true));
    }
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

/* ---- the rest of the contract ---- */

static void test_sync_once__busy_while_started(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, 0, 0);
    assert_int_equal(fieldsync_sync_now(fs), FIELDSYNC_EBUSY); /* not started */
    assert_int_equal(fieldsync_ticket_create(fs, "O1", NULL, NULL), FIELDSYNC_OK);
    fieldsync_report_t rep;
    assert_int_equal(fieldsync_sync_once(fs, false, &rep), FIELDSYNC_OK);
    assert_int_equal(rep.applied, 1);
    assert_true(on_server(f, "O1"));
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    assert_int_equal(fieldsync_sync_once(fs, true, &rep), FIELDSYNC_EBUSY);
    assert_int_equal(fieldsync_sync_now(fs), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_has_synced, 20000));
    stop_and_wait(fs, &r);
    fieldsync_stats_t stats = {.size = sizeof stats};
    assert_int_equal(fieldsync_stats(fs, &stats), FIELDSYNC_OK);
    assert_true(stats.cycles_ok >= 2);
    assert_int_equal(stats.totals.applied, 1);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

/* Records n tickets, prefix0 .. prefix(n - 1). */
static void record_tickets(fieldsync_t *fs, const char *prefix, int n)
{
    for (int i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof id, "%s%d", prefix, i);
        assert_int_equal(fieldsync_ticket_create(fs, id, NULL, NULL), FIELDSYNC_OK);
    }
}

/* fieldsync_stop also cancels a fieldsync_sync_once running on the app's own thread (here from
 * its first "pushing" status, in a listener on that thread): the call ends at the cycle's next
 * step with FIELDSYNC_ETIMEOUT, having sent none of the backlog, and persists no backoff, so the
 * next call (which honours the backoff) syncs it all. Before, a stop reached only the sync
 * thread, and the call went on to the end. */
static void test_sync_once__cancelled_by_stop(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, 0, 0);
    enum { OPS = 300 }; /* three batches */
    record_tickets(fs, "Q", OPS);
    lrec_t r;
    lrec_init(&r, fs, 0);
    r.stop_at_reason = "pushing";
    lrec_listen(&r, fs);
    fieldsync_report_t rep;
    assert_int_equal(fieldsync_sync_once(fs, false, &rep), FIELDSYNC_ETIMEOUT);
    assert_string_equal(fieldsync_errmsg(fs), "cancelled by fieldsync_stop");
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.stop_calls, 1);
    assert_int_equal(r.stop_result, FIELDSYNC_OK);
    pthread_mutex_unlock(&r.mu);
    assert_true(rep.applied < OPS);
    assert_false(on_server(f, "Q299"));
    fieldsync_sync_status_t s = {.size = sizeof s};
    assert_int_equal(fieldsync_status(fs, &s), FIELDSYNC_OK);
    assert_int_equal(s.last_error, FIELDSYNC_OK); /* not a failure */
    assert_int_equal(fieldsync_sync_once(fs, false, &rep), FIELDSYNC_OK);
    assert_true(on_server(f, "Q299"));
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

typedef struct once_call {
    fieldsync_t *fs;
    fieldsync_status_t st;
    fieldsync_report_t rep;
} once_call_t;

static void *once_thread(void *arg)
{
    once_call_t *c = arg;
    c->st = fieldsync_sync_once(c->fs, false, &c->rep);
    return NULL;
}

/* The same from another thread: the app's loop runs fieldsync_sync_once on its own thread, and
 * its UI thread stops (300 ms of latency a request: the backlog takes seconds). */
static void test_sync_once__cancelled_by_stop_from_another_thread(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, 0, 0);
    enum { OPS = 300 };
    record_tickets(fs, "Q", OPS);
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    once_call_t c = {.fs = fs};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, once_thread, &c), 0);
    assert_true(lrec_wait(&r, lrec_is_syncing, 20000));
    assert_int_equal(fieldsync_stop(fs), FIELDSYNC_OK);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(c.st, FIELDSYNC_ETIMEOUT);
    assert_true(c.rep.applied < OPS);
    assert_false(on_server(f, "Q299"));
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

/* A stop that comes after a cycle ended otherwise does not make that cycle a cancel: here the
 * server refuses the device, and a listener stops the thread from the ATTENTION status that
 * ended the cycle, before the thread has taken the cycle's outcome. The refusal is counted as an
 * error (not as offline) and noted in the journal, where a new handle reads it. Before, the
 * thread took any stop it saw after the cycle for a cancel. */
static void test_start__failure_then_stop_is_not_a_cancel(void **state)
{
    lfx_t *f = *state;
    assert_true(lfx_write_secret(f->secret, 1)); /* device 1's secret for device 0: refused */
    fieldsync_t *fs = lfx_open(f, 0, 0);
    assert_int_equal(fieldsync_ticket_create(fs, "R1", NULL, NULL), FIELDSYNC_OK);
    lrec_t r;
    lrec_init(&r, fs, 0);
    r.stop_at_attention = true;
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_is_stopped, 30000));
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.stop_calls, 1);
    pthread_mutex_unlock(&r.mu);
    fieldsync_stats_t stats = {.size = sizeof stats};
    assert_int_equal(fieldsync_stats(fs, &stats), FIELDSYNC_OK);
    assert_int_equal(stats.cycles_error, 1);
    assert_int_equal(stats.cycles_offline, 0);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
    fs = lfx_open(f, 0, 0);
    fieldsync_sync_status_t s = {.size = sizeof s};
    assert_int_equal(fieldsync_status(fs, &s), FIELDSYNC_OK);
    assert_int_equal(s.last_error, FIELDSYNC_EAUTH);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

/* A CA file renewed on disk is taken up by the running sync thread, without a reload: an engine
 * keeps the TLS files it read, and after a cycle that TLS failed the next cycle makes a new one,
 * which reads them again (as after a refusal it reads the secret again). Here the CA file first
 * holds another CA, so every handshake fails, and then the server's. */
static void test_start__renewed_ca_file_taken_up_after_a_tls_failure(void **state)
{
    lfx_t *f = *state;
    char ca[512], cmd[2200];
    snprintf(ca, sizeof ca, "%s/trusted.pem", f->srv.dir);
    snprintf(cmd, sizeof cmd, "cp '%s/other.pem' '%s'", f->srv.dir, ca);
    assert_int_equal(system(cmd), 0);
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = f->db;
    cfg.server_url = f->srv.url; /* https://127.0.0.1:PORT, for this handle */
    cfg.ca_file = ca;
    cfg.sync_interval_ms = 200;
    fieldsync_t *fs = NULL;
    assert_int_equal(fieldsync_open(&cfg, &fs), FIELDSYNC_OK);
    assert_int_equal(fieldsync_ticket_create(fs, "R1", NULL, NULL), FIELDSYNC_OK);
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_tls_failed, 30000));
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.synced_seen, 0);
    pthread_mutex_unlock(&r.mu);
    /* The CA renewed as a package would: a new file moved in place. */
    snprintf(cmd, sizeof cmd, "cp '%s/ca.pem' '%s.new' && mv '%s.new' '%s'", f->srv.dir, ca, ca,
             ca);
    assert_int_equal(system(cmd), 0);
    assert_true(lrec_wait(&r, lrec_has_synced, 60000));
    stop_and_wait(fs, &r);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

/* A server (libmicrohttpd, in this process) that answers every request with a 400 whose message
 * quotes a RIGHT-TO-LEFT OVERRIDE (U+202E), as a broken or hostile server could. */
static enum MHD_Result refuse_all(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload;
    if (*con_cls == NULL) {
        *con_cls = c;
        return MHD_YES;
    }
    if (*upload_size != 0) {
        *upload_size = 0; /* the body is not read */
        return MHD_YES;
    }
    char *text = NULL;
    size_t len = 0;
    // NOLINTNEXTLINE(misc-misleading-bidirectional): the message is a bidi override, on purpose
    if (fsa_codec_encode_error("bad_request", "bad \xe2\x80\xaevalue", lfx_now_ms(), &text, &len) !=
        FSA_OK)
        return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_COPY);
    fsa_codec_free(text);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, 400, r);
    MHD_destroy_response(r);
    return ret;
}

/* The last error the thread or a sync_once notes in the journal is the message as the status
 * shows it: one line that reads as it is (a bidi character shown as '?'). Before, the raw message
 * was stored, and since the copy kept to tell "the same error again" was the shown one, the two
 * never matched: the error was written again at every failed cycle. */
static void test_sync_once__noted_error_is_the_shown_one(void **state)
{
    lfx_t *f = *state;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, refuse_all, NULL,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_END);
    assert_non_null(d);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)info->port);
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = f->db;
    cfg.server_url = url; /* for this handle only */
    fieldsync_t *fs = NULL;
    assert_int_equal(fieldsync_open(&cfg, &fs), FIELDSYNC_OK);
    assert_int_equal(fieldsync_ticket_create(fs, "B1", NULL, NULL), FIELDSYNC_OK);
    fieldsync_report_t rep;
    assert_int_not_equal(fieldsync_sync_once(fs, true, &rep), FIELDSYNC_OK);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    MHD_stop_daemon(d);
    fsa_journal_t *j = NULL;
    fsa_journal_opts_t o = {0};
    char err[256];
    assert_int_equal(fsa_journal_open(fsa_port_posix(), f->db, &o, &j, err, sizeof err), FSA_OK);
    int64_t last = 0;
    char *msg = NULL;
    assert_int_equal(fsa_journal_last_error_get(j, &last, &msg), FSA_OK);
    fsa_journal_close(j);
    assert_int_not_equal(last, FSA_OK);
    assert_non_null(msg);
    if (strstr(msg, "bad ???value") == NULL)
        fail_msg("the noted message is not the shown one: %s", msg);
    fsa_free(msg);
}

/* The last error as the journal keeps it (any process on the journal stores it, quoting the
 * server) comes back from fieldsync_status as one line that reads as it is: no newline, no escape
 * sequence, no RIGHT-TO-LEFT OVERRIDE (U+202E). */
static void test_status__stored_message_is_one_clean_line(void **state)
{
    lfx_t *f = *state;
    fsa_journal_t *j = NULL;
    fsa_journal_opts_t o = {0};
    char err[256];
    assert_int_equal(fsa_journal_open(fsa_port_posix(), f->db, &o, &j, err, sizeof err), FSA_OK);
    // NOLINTBEGIN(misc-misleading-bidirectional): the input is a bidi override, on purpose
    assert_int_equal(
        fsa_journal_last_error_set(j, FSA_ENET, "server said: a\nb\x1b[2J \xe2\x80\xaegpj.exe"),
        FSA_OK);
    // NOLINTEND(misc-misleading-bidirectional)
    fsa_journal_close(j);
    fieldsync_t *fs = lfx_open(f, 0, 0);
    fieldsync_sync_status_t s = {.size = sizeof s};
    assert_int_equal(fieldsync_status(fs, &s), FIELDSYNC_OK);
    assert_int_equal(s.last_error, FIELDSYNC_ENET);
    assert_string_equal(s.last_error_msg, "server said: a?b?[2J ???gpj.exe");
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

static bool lrec_has_attention(lrec_t *r)
{
    return r->attention_seen > 0;
}

/* A 401 does not stop the device for good (PROTOCOL.md 7.4): ATTENTION, retried later with the
 * secret file read again, so a fixed secret needs no restart or reload. */
static void test_start__refused_device_is_attention(void **state)
{
    lfx_t *f = *state;
    assert_true(lfx_write_secret(f->secret, 1)); /* device 1's secret for device 0: refused */
    fieldsync_t *fs = lfx_open(f, 0, 300);       /* while refused, a try every interval */
    assert_int_equal(fieldsync_ticket_create(fs, "A1", NULL, NULL), FIELDSYNC_OK);
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    pthread_mutex_lock(&r.mu);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 30;
    while (r.attention_seen == 0 && pthread_cond_timedwait(&r.cv, &r.mu, &dl) == 0) {
    }
    assert_true(r.attention_seen > 0);
    assert_int_equal(r.last.state, FIELDSYNC_STATE_ATTENTION);
    assert_int_equal(r.last.last_error, FIELDSYNC_EAUTH);
    assert_true(r.last.next_attempt_ms > 0); /* a later attempt is planned */
    assert_false(r.stopped);
    pthread_mutex_unlock(&r.mu);
    /* Another handle that only listens says ATTENTION too, as fieldsync_status does: before, it
     * said "listening", idle or offline, while the refusal lasted. */
    fieldsync_t *ears = lfx_open(f, 0, 300);
    lrec_t r2;
    lrec_init(&r2, ears, 0);
    lrec_listen(&r2, ears);
    assert_int_equal(fieldsync_start(ears, FIELDSYNC_START_LISTEN_ONLY), FIELDSYNC_OK);
    /* (the first handle tries again every 300 ms: during a try the journal holds no refusal) */
    if (!lrec_wait(&r2, lrec_has_attention, 20000))
        fail_msg("the listening handle never said ATTENTION; last: state %d (%s)",
                 (int)r2.last.state, r2.last.reason);
    stop_and_wait(ears, &r2);
    assert_int_equal(fieldsync_close(ears), FIELDSYNC_OK);
    lrec_clear(&r2);
    /* The thread still runs: the secret is fixed, and a later try reads it (no reload). */
    assert_true(lfx_write_secret(f->secret, 0));
    int64_t end = lfx_now_ms() + 30000;
    while (!on_server(f, "A1") && lfx_now_ms() < end) {
        pthread_mutex_lock(&r.mu);
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 1;
        (void)pthread_cond_timedwait(&r.cv, &r.mu, &dl);
        pthread_mutex_unlock(&r.mu);
    }
    assert_true(on_server(f, "A1"));
    stop_and_wait(fs, &r);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

static void test_start__bad_arguments(void **state)
{
    lfx_t *f = *state;
    assert_int_equal(fieldsync_start(NULL, 0), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_stop(NULL), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_sync_now(NULL), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_reload(NULL), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_sync_once(NULL, false, NULL), FIELDSYNC_EINVAL);
    fieldsync_t *fs = lfx_open(f, 0, 0);
    assert_int_equal(fieldsync_start(fs, 0x80), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_stop(fs), FIELDSYNC_OK); /* not started: fine */
    fieldsync_stats_t s = {0};
    assert_int_equal(fieldsync_stats(fs, NULL), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_stats(fs, &s), FIELDSYNC_EINVAL); /* size not set */
    /* An older caller's smaller struct: only its members are written. */
    struct {
        fieldsync_stats_t st;
        int64_t guard;
    } small;
    memset(&small, 0x5a, sizeof small);
    small.st.size = (uint32_t)offsetof(fieldsync_stats_t, batches);
    assert_int_equal(fieldsync_stats(fs, &small.st), FIELDSYNC_OK);
    assert_int_equal(small.st.cycles_ok, 0);
    assert_int_equal(small.st.batches, (int64_t)0x5a5a5a5a5a5a5a5a);
    assert_int_equal(small.guard, (int64_t)0x5a5a5a5a5a5a5a5a);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

/* A reload takes the configuration stored in the journal now (init run again meanwhile). */
static void test_reload__takes_the_stored_configuration(void **state)
{
    lfx_t *f = *state;
    assert_true(th_server_start(&f->srv, NULL));
    f->started = true;
    fieldsync_t *fs = lfx_open(f, 0, 0); /* stored: a server where nothing listens */
    assert_int_equal(fieldsync_ticket_create(fs, "H1", NULL, NULL), FIELDSYNC_OK);
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    pthread_mutex_lock(&r.mu);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 30;
    while (r.last.state != FIELDSYNC_STATE_OFFLINE &&
           pthread_cond_timedwait(&r.cv, &r.mu, &dl) == 0) {
    }
    assert_int_equal(r.last.state, FIELDSYNC_STATE_OFFLINE);
    pthread_mutex_unlock(&r.mu);
    /* init again, as a person would, with the right server; then reload */
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.flags = FIELDSYNC_OPEN_INIT;
    cfg.journal_path = f->db;
    cfg.device_id = "dev000";
    cfg.server_url = f->srv.url;
    cfg.secret_file = f->secret;
    fieldsync_t *init = NULL;
    assert_int_equal(fieldsync_open(&cfg, &init), FIELDSYNC_OK);
    assert_int_equal(fieldsync_close(init), FIELDSYNC_OK);
    assert_int_equal(fieldsync_reload(fs), FIELDSYNC_OK);
    int64_t end = lfx_now_ms() + 30000;
    while (!on_server(f, "H1") && lfx_now_ms() < end) {
        pthread_mutex_lock(&r.mu);
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 1;
        (void)pthread_cond_timedwait(&r.cv, &r.mu, &dl);
        pthread_mutex_unlock(&r.mu);
    }
    assert_true(on_server(f, "H1"));
    stop_and_wait(fs, &r);
    /* sync_once after the reload uses the stored configuration too */
    assert_int_equal(fieldsync_ticket_create(fs, "H2", NULL, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_sync_once(fs, true, NULL), FIELDSYNC_OK);
    assert_true(on_server(f, "H2"));
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

/* Runs init again on f's journal, as a person would: device 0, its secret, url, and the two
 * periods (0: the defaults). */
static void reinit(const lfx_t *f, const char *url, int64_t interval_ms, int64_t stall_ms)
{
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.flags = FIELDSYNC_OPEN_INIT;
    cfg.journal_path = f->db;
    cfg.device_id = "dev000";
    cfg.server_url = url;
    cfg.secret_file = f->secret;
    cfg.sync_interval_ms = interval_ms;
    cfg.stall_after_ms = stall_ms;
    fieldsync_t *init = NULL;
    fieldsync_status_t st = fieldsync_open(&cfg, &init);
    if (st != FIELDSYNC_OK)
        fail_msg("init again: %s", fieldsync_errmsg(init));
    assert_int_equal(fieldsync_close(init), FIELDSYNC_OK);
}

/* Waits (bounded) until the status listener has heard at least n cycles that went well. */
static bool synced_cycles(lrec_t *r, int n, int ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    pthread_mutex_lock(&r->mu);
    while (r->synced_seen < n && pthread_cond_timedwait(&r->cv, &r->mu, &dl) == 0) {
    }
    bool ok = r->synced_seen >= n;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

/* A reload that cannot use what is stored (a retry policy this build does not know, as a newer
 * agent's init could store) fails, says why, and leaves the configuration in use: sync_once and
 * the sync thread go on with it. Once the stored one is usable again, a reload takes it. */
static void test_reload__refused_keeps_the_configuration_in_use(void **state)
{
    lfx_t *f = *state;
    assert_true(th_server_start(&f->srv, NULL));
    f->started = true;
    reinit(f, f->srv.url, 0, 0);
    fieldsync_t *fs = lfx_open(f, 0, 0);
    assert_true(th_journal_state_set(f->db, "retry_policy", "TURBO"));
    assert_int_equal(fieldsync_reload(fs), FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(fs), "unknown retry policy 'TURBO'"));
    assert_non_null(strstr(fieldsync_errmsg(fs), "the configuration in use stays"));
    assert_int_equal(fieldsync_ticket_create(fs, "F1", NULL, NULL), FIELDSYNC_OK);
    fieldsync_status_t st = fieldsync_sync_once(fs, true, NULL);
    if (st != FIELDSYNC_OK)
        fail_msg("sync_once after a refused reload: %s: %s", fieldsync_status_str(st),
                 fieldsync_errmsg(fs));
    assert_true(on_server(f, "F1"));
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    assert_int_equal(fieldsync_reload(fs), FIELDSYNC_EINVAL); /* while the thread runs */
    assert_int_equal(fieldsync_ticket_create(fs, "F2", NULL, NULL), FIELDSYNC_OK);
    bool sent = drained(fs, &r, 30000);
    stop_and_wait(fs, &r); /* before any verdict: the thread uses r */
    assert_true(sent);
    assert_true(on_server(f, "F2"));
    assert_true(th_journal_state_set(f->db, "retry_policy", "CONSERVATIVE"));
    assert_int_equal(fieldsync_reload(fs), FIELDSYNC_OK);
    assert_string_equal(fieldsync_errmsg(fs), "");
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

/* A member given at open overrides the stored one also after a reload: the reload re-reads the
 * stored configuration and lays the open's members over it again, for sync_once and for the
 * sync thread alike. Stored: a port where nothing listens; given: the server. */
static void test_reload__keeps_the_open_overrides(void **state)
{
    lfx_t *f = *state;
    assert_true(th_server_start(&f->srv, NULL));
    f->started = true;
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = f->db;
    cfg.server_url = f->srv.url;
    fieldsync_t *fs = NULL;
    assert_int_equal(fieldsync_open(&cfg, &fs), FIELDSYNC_OK);
    assert_int_equal(fieldsync_ticket_create(fs, "O1", NULL, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_sync_once(fs, true, NULL), FIELDSYNC_OK);
    assert_true(on_server(f, "O1"));

    assert_int_equal(fieldsync_reload(fs), FIELDSYNC_OK);
    assert_int_equal(fieldsync_ticket_create(fs, "O2", NULL, NULL), FIELDSYNC_OK);
    fieldsync_status_t st = fieldsync_sync_once(fs, true, NULL);
    if (st != FIELDSYNC_OK)
        fail_msg("sync_once after the reload: %s: %s", fieldsync_status_str(st),
                 fieldsync_errmsg(fs));
    assert_true(on_server(f, "O2"));
    /* fieldsync_info shows the server in effect. */
    char *info = NULL, want[200];
    snprintf(want, sizeof want, "\"server\":\"%s\"", f->srv.url);
    assert_int_equal(fieldsync_info(fs, &info), FIELDSYNC_OK);
    assert_non_null(strstr(info, want));
    fieldsync_free(info);

    /* The sync thread, reloaded while it runs. */
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    if (!synced_cycles(&r, 1, 30000)) {
        stop_and_wait(fs, &r); /* before the verdict: the thread uses r */
        fail_msg("the sync thread did not sync within 30 s of its start");
    }
    assert_int_equal(fieldsync_reload(fs), FIELDSYNC_OK);
    assert_int_equal(fieldsync_ticket_create(fs, "O3", NULL, NULL), FIELDSYNC_OK);
    bool sent = drained(fs, &r, 30000);
    fieldsync_sync_status_t s = {.size = sizeof s};
    assert_int_equal(fieldsync_status(fs, &s), FIELDSYNC_OK);
    /* Stopped before any verdict: the thread uses r. */
    stop_and_wait(fs, &r);
    if (!sent)
        fail_msg("O3 not sent within 30 s of a reload: %s", s.last_error_msg);
    assert_true(on_server(f, "O3"));
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

/* A sync interval stored since the handle was opened (init run again) is the running thread's
 * after a reload: stored a minute at first, then 50 ms. */
static void test_reload__takes_a_stored_sync_interval(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, 0, 0);
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    if (!synced_cycles(&r, 1, 30000)) { /* the cycle at start; the next is a minute away */
        stop_and_wait(fs, &r);
        fail_msg("the sync thread did not sync within 30 s of its start");
    }
    reinit(f, f->srv.url, 50, 0);
    pthread_mutex_lock(&r.mu);
    int before = r.synced_seen;
    pthread_mutex_unlock(&r.mu);
    assert_int_equal(fieldsync_reload(fs), FIELDSYNC_OK);
    /* The cycle the reload asks for, then one every 50 ms: four well within the minute. */
    bool four = synced_cycles(&r, before + 4, 20000);
    stop_and_wait(fs, &r); /* before any verdict: the thread uses r */
    if (!four)
        fail_msg("fewer than 4 cycles in 20 s after a reload to a 50 ms interval");
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

/* A stall time stored since the handle was opened is the status's after a reload: an op pending
 * for a few milliseconds is not stalled under the default (600 s), and is under 1 ms. */
static void test_reload__takes_a_stored_stall_time(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, 0, 0);
    assert_int_equal(fieldsync_ticket_create(fs, "S1", NULL, NULL), FIELDSYNC_OK);
    fieldsync_sync_status_t s = {.size = sizeof s};
    assert_int_equal(fieldsync_status(fs, &s), FIELDSYNC_OK);
    assert_int_equal(s.queue_depth, 1);
    assert_false(s.stalled);
    reinit(f, "http://127.0.0.1:9", 0, 1);
    assert_int_equal(fieldsync_reload(fs), FIELDSYNC_OK);
    /* The op's age is counted in wall milliseconds: it passes 1 ms within a few looks. */
    int64_t end = lfx_now_ms() + 10000;
    do {
        assert_int_equal(fieldsync_status(fs, &s), FIELDSYNC_OK);
        if (s.stalled)
            break;
        struct timespec ts = {0, 1000000L}; /* a poll of the condition, not a wait for it */
        nanosleep(&ts, NULL);
    } while (lfx_now_ms() < end);
    if (!s.stalled)
        fail_msg("not stalled after a reload to a 1 ms stall time (oldest op %" PRId64 " ms)",
                 s.oldest_pending_age_ms);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

/* A loopback socket that takes connections (into its backlog) and never answers: a request to
 * it waits until its timeout. *url set; the socket's fd returned (-1 on failure). */
static int silent_server(char *url, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    snprintf(url, cap, "http://127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
    return fd;
}

static bool lrec_has_recorded(lrec_t *r)
{
    return r->recorded > 0;
}

/*
 * Change events come within a second (fieldsync.h), also while the sync thread waits for an
 * answer: a record made meanwhile is heard. They were pumped only between the cycle's steps, so
 * a request to a server that does not answer held them for its whole timeout (60 s a try).
 */
static void test_start__changes_heard_while_a_request_waits(void **state)
{
    lfx_t *f = *state;
    char url[64];
    int silent = silent_server(url, sizeof url);
    assert_true(silent >= 0);
    reinit(f, url, 0, 0);
    fieldsync_t *fs = lfx_open(f, 0, 0);
    lrec_t r;
    lrec_init(&r, fs, 4);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    /* The cycle's first request, read whole: the sync thread now waits for its answer. */
    struct pollfd pfd = {.fd = silent, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 20000), 1);
    int conn = accept(silent, NULL, NULL);
    assert_true(conn >= 0);
    char req[4096] = "";
    size_t got = 0;
    while (got < sizeof req - 1 && strstr(req, "\r\n\r\n") == NULL) {
        pfd = (struct pollfd){.fd = conn, .events = POLLIN};
        assert_int_equal(poll(&pfd, 1, 20000), 1);
        ssize_t n = read(conn, req + got, sizeof req - 1 - got);
        assert_true(n > 0);
        got += (size_t)n;
        req[got] = '\0';
    }
    int64_t t0 = lfx_now_ms();
    assert_int_equal(fieldsync_ticket_create(fs, "W1", NULL, NULL), FIELDSYNC_OK);
    bool heard = lrec_wait(&r, lrec_has_recorded, 10000);
    int64_t waited = lfx_now_ms() - t0;
    fieldsync_sync_status_t s = {.size = sizeof s};
    assert_int_equal(fieldsync_status(fs, &s), FIELDSYNC_OK);
    stop_and_wait(fs, &r);
    close(conn);
    close(silent);
    if (!heard)
        fail_msg("the record was not heard within 10 s while the request waited (state %d)",
                 (int)s.state);
    printf("heard after %" PRId64 " ms\n", waited);
    assert_int_equal(s.state, FIELDSYNC_STATE_SYNCING); /* still waiting for the answer */
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

static int setup_no_server(void **state)
{
    lfx_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL || !lfx_setup(f, NULL, true))
        return -1;
    *state = f;
    return 0;
}

/* The thread waits on the handle's port: on a sim port, the interval passes in virtual time. */
static void test_start__on_a_sim_port_waits_in_virtual_time(void **state)
{
    lfx_t *f = *state;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    fsa_sim_t *sim = NULL;
    fsa_wall_t start = {(int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000};
    assert_int_equal(fsa_sim_new(42, start, "sim-dev", &sim), FSA_OK);
    fsa_port_t *port = fsa_sim_port(sim);
    port->log_level = FSA_LOG_ERROR;
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = f->db;
    cfg.sync_interval_ms = 60000; /* a minute between pulls: virtual minutes */
    fieldsync_t *fs = NULL;
    assert_int_equal(fsl__open_with_port(&cfg, port, &fs), FIELDSYNC_OK);
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    int64_t t0 = lfx_now_ms();
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    pthread_mutex_lock(&r.mu);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 60;
    while (r.synced_seen < 3 && pthread_cond_timedwait(&r.cv, &r.mu, &dl) == 0) {
    }
    int synced = r.synced_seen;
    pthread_mutex_unlock(&r.mu);
    int64_t took = lfx_now_ms() - t0;
    assert_true(synced >= 3); /* three pulls: two virtual minutes */
    printf("3 pulls a virtual minute apart took %" PRId64 " ms of real time\n", took);
    assert_true(took < 60000);
    stop_and_wait(fs, &r);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
    fsa_sim_free(sim);
}

/* A backoff stored while the device's clock ran a year ahead: once the clock is set right, the
 * status no longer says "backing off" for a year (nor does the sync thread wait for it: it reads
 * the same figure), as the engine no longer refuses to sync. */
static void test_status__a_clock_set_back_ends_the_backoff(void **state)
{
    lfx_t *f = *state;
    const int64_t year = 365LL * 24 * 3600 * 1000;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    const int64_t wall = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    fsa_sim_t *sim = NULL;
    fsa_wall_t ahead = {wall + year};
    assert_int_equal(fsa_sim_new(43, ahead, "sim-dev", &sim), FSA_OK);
    fsa_port_t *port = fsa_sim_port(sim);
    port->log_level = FSA_LOG_ERROR;
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = f->db;
    cfg.server_url = "http://127.0.0.1:9"; /* nothing listens: the cycle fails */
    fieldsync_t *fs = NULL;
    assert_int_equal(fsl__open_with_port(&cfg, port, &fs), FIELDSYNC_OK);
    assert_int_equal(fieldsync_sync_once(fs, true, NULL), FIELDSYNC_ENET);
    fieldsync_sync_status_t s = {.size = sizeof s};
    assert_int_equal(fieldsync_status(fs, &s), FIELDSYNC_OK);
    assert_int_equal(s.state, FIELDSYNC_STATE_OFFLINE);
    assert_true(s.next_attempt_ms > wall + year - 60000);
    fsa_sim_shift_wall(sim, -year);
    assert_int_equal(fieldsync_status(fs, &s), FIELDSYNC_OK);
    if (s.state == FIELDSYNC_STATE_OFFLINE)
        fail_msg("still backing off: %s", s.reason);
    assert_true(s.next_attempt_ms <= port->wall_now(port->ctx).ms);
    /* fieldsync_info (`fieldsync status`, the daemon's metric) says the same. */
    char *info = NULL;
    assert_int_equal(fieldsync_info(fs, &info), FIELDSYNC_OK);
    const char *n = strstr(info, "\"next_attempt_ms\":");
    assert_non_null(n);
    long long next = strtoll(n + strlen("\"next_attempt_ms\":"), NULL, 10);
    fieldsync_free(info);
    if (next > port->wall_now(port->ctx).ms)
        fail_msg("fieldsync_info: next attempt %lld, a year on", next);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    fsa_sim_free(sim);
}

/* A long cycle (a backlog pushed batch by batch) tells its changes as it goes, not at its end. */
static void test_start__long_cycle_tells_changes_as_it_goes(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, 0, 0);
    int n = 350; /* four batches of at most 100 */
    for (int i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof id, "G%d", i);
        assert_int_equal(fieldsync_ticket_create(fs, id, NULL, NULL), FIELDSYNC_OK);
    }
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_has_synced, 60000));
    stop_and_wait(fs, &r);
    pthread_mutex_lock(&r.mu);
    /* Before the cycle's end: at least the first three batches' results. */
    if (r.synced_at_first_end < 300)
        fail_msg("only %d SYNCED changes were heard before the cycle ended", r.synced_at_first_end);
    assert_int_equal(r.synced_changes, n);
    pthread_mutex_unlock(&r.mu);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

static bool lrec_is_offline(lrec_t *r)
{
    return r->last.state == FIELDSYNC_STATE_OFFLINE && r->last.next_attempt_ms > 0;
}

/* Unreachable: the thread backs off, and tries again at the persisted next attempt by itself. */
static void test_start__offline_retries_at_the_next_attempt(void **state)
{
    lfx_t *f = *state; /* the journal names a server where nothing listens */
    fieldsync_t *fs = lfx_open(f, 0, 0);
    assert_int_equal(fieldsync_ticket_create(fs, "N1", NULL, NULL), FIELDSYNC_OK);
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_is_offline, 30000));
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.last.last_error, FIELDSYNC_ENET);
    pthread_mutex_unlock(&r.mu);
    /* No record, no sync_now, an interval of a minute: the backoff alone brings the retry. */
    fieldsync_stats_t a = {.size = sizeof a}, b = {.size = sizeof b};
    assert_int_equal(fieldsync_stats(fs, &a), FIELDSYNC_OK);
    int64_t end = lfx_now_ms() + 30000;
    do {
        pthread_mutex_lock(&r.mu);
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 1;
        (void)pthread_cond_timedwait(&r.cv, &r.mu, &dl);
        pthread_mutex_unlock(&r.mu);
        assert_int_equal(fieldsync_stats(fs, &b), FIELDSYNC_OK);
    } while (b.cycles_offline <= a.cycles_offline && lfx_now_ms() < end);
    if (b.cycles_offline <= a.cycles_offline)
        fail_msg("no new attempt within 30 s of the first failure (the backoff is seconds)");
    stop_and_wait(fs, &r);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

/* A stop in the middle of a failing cycle (here in its first retry's wait: nothing listens) is
 * not a failure: the journal's backoff stays as the earlier failures left it, neither longer nor
 * cleared, so the next start syncs at once. */
static void test_stop__in_a_failing_cycle_keeps_the_backoff(void **state)
{
    lfx_t *f = *state; /* the journal names a server where nothing listens */
    fsa_journal_t *j = NULL;
    fsa_journal_opts_t jo = {0};
    char err[256];
    assert_int_equal(fsa_journal_open(fsa_port_posix(), f->db, &jo, &j, err, sizeof err), FSA_OK);
    const fsa_backoff_state_t before = {
        .next_attempt_ms = fsa_port_posix()->wall_now(NULL).ms - 1000, .failures = 2};
    assert_int_equal(fsa_journal_backoff_set(j, &before), FSA_OK);
    fsa_journal_close(j);
    fieldsync_t *fs = lfx_open(f, 0, 0);
    assert_int_equal(fieldsync_ticket_create(fs, "K1", NULL, NULL), FIELDSYNC_OK);
    lrec_t r;
    lrec_init(&r, fs, 0);
    r.stop_at_reason = "network error"; /* the first retry: its wait is next */
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_is_stopped, 30000));
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.stop_calls, 1);
    assert_int_equal(r.last.last_error, FIELDSYNC_OK); /* STOPPED, not a failure */
    pthread_mutex_unlock(&r.mu);
    fieldsync_stats_t st = {.size = sizeof st};
    assert_int_equal(fieldsync_stats(fs, &st), FIELDSYNC_OK);
    assert_int_equal(st.cycles_ok, 0);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
    assert_int_equal(fsa_journal_open(fsa_port_posix(), f->db, &jo, &j, err, sizeof err), FSA_OK);
    fsa_sync_state_t s;
    assert_int_equal(fsa_journal_sync_state_get(j, &s), FSA_OK);
    fsa_journal_close(j);
    assert_int_equal(s.backoff.next_attempt_ms, before.next_attempt_ms);
    assert_int_equal(s.backoff.failures, before.failures);
}

/* A persisted backoff holds new records back; fieldsync_sync_now cuts it short. */
static void test_sync_now__cuts_a_backoff_short(void **state)
{
    lfx_t *f = *state;
    /* Another run backed off for an hour (as the engine persists it). */
    fsa_journal_t *j = NULL;
    fsa_journal_opts_t jo = {0};
    char err[256];
    assert_int_equal(fsa_journal_open(fsa_port_posix(), f->db, &jo, &j, err, sizeof err), FSA_OK);
    int64_t hour = fsa_port_posix()->wall_now(NULL).ms + 3600 * 1000;
    const fsa_backoff_state_t backoff = {.next_attempt_ms = hour, .failures = 0};
    assert_int_equal(fsa_journal_backoff_set(j, &backoff), FSA_OK);
    fsa_journal_close(j);
    fieldsync_t *fs = lfx_open(f, 0, 0);
    lrec_t r;
    lrec_init(&r, fs, 4);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_is_offline, 20000)); /* shown as backing off */
    assert_int_equal(fieldsync_ticket_create(fs, "W1", NULL, NULL), FIELDSYNC_OK);
    /* The record is heard (the thread woke) ... */
    pthread_mutex_lock(&r.mu);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    while (r.recorded == 0 && pthread_cond_timedwait(&r.cv, &r.mu, &dl) == 0) {
    }
    assert_int_equal(r.recorded, 1);
    pthread_mutex_unlock(&r.mu);
    /* ... and not sent: no cycle while backing off. The thread hears records one wake at a
     * time, and decides (and would run a cycle, with its SYNCING event) before it hears the
     * next: once a second record is heard, the first one's decision is behind it. */
    assert_int_equal(fieldsync_ticket_create(fs, "W2", NULL, NULL), FIELDSYNC_OK);
    pthread_mutex_lock(&r.mu);
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    while (r.recorded < 2 && pthread_cond_timedwait(&r.cv, &r.mu, &dl) == 0) {
    }
    assert_int_equal(r.recorded, 2);
    pthread_mutex_unlock(&r.mu);
    fieldsync_stats_t st = {.size = sizeof st};
    assert_int_equal(fieldsync_stats(fs, &st), FIELDSYNC_OK);
    assert_int_equal(st.cycles_ok + st.cycles_offline + st.cycles_error, 0);
    assert_int_equal(r.syncing_seen, 0);
    assert_false(on_server(f, "W1"));
    assert_int_equal(fieldsync_sync_now(fs), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_has_synced, 20000));
    assert_true(on_server(f, "W1"));
    assert_true(on_server(f, "W2"));
    stop_and_wait(fs, &r);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

int main(void)
{
    if (fsa_transport_global_init() != FSA_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start__sixteen_threads_drain_with_faults, setup_faults,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close__during_a_cycle, setup_slow, teardown),
        cmocka_unit_test_setup_teardown(test_stop__inside_a_listener, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_start__stop_rounds_nothing_after_stopped, setup_plain,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_start__sync_thread_is_background_work, setup_plain,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sync_once__busy_while_started, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_sync_once__cancelled_by_stop, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_sync_once__cancelled_by_stop_from_another_thread,
                                        setup_slow, teardown),
        cmocka_unit_test_setup_teardown(test_start__renewed_ca_file_taken_up_after_a_tls_failure,
                                        setup_tls, teardown),
        cmocka_unit_test_setup_teardown(test_sync_once__noted_error_is_the_shown_one, setup_plain,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_status__stored_message_is_one_clean_line, setup_plain,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_start__failure_then_stop_is_not_a_cancel, setup_plain,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_start__refused_device_is_attention, setup_plain,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload__takes_the_stored_configuration,
                                        setup_no_server, teardown),
        cmocka_unit_test_setup_teardown(test_reload__keeps_the_open_overrides, setup_no_server,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload__refused_keeps_the_configuration_in_use,
                                        setup_no_server, teardown),
        cmocka_unit_test_setup_teardown(test_reload__takes_a_stored_sync_interval, setup_plain,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload__takes_a_stored_stall_time, setup_no_server,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stop__during_a_start_that_joins_the_last_thread,
                                        setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_start__changes_heard_while_a_request_waits,
                                        setup_no_server, teardown),
        cmocka_unit_test_setup_teardown(test_start__on_a_sim_port_waits_in_virtual_time,
                                        setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_status__a_clock_set_back_ends_the_backoff, setup_plain,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_start__long_cycle_tells_changes_as_it_goes,
                                        setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_start__offline_retries_at_the_next_attempt,
                                        setup_no_server, teardown),
        cmocka_unit_test_setup_teardown(test_stop__in_a_failing_cycle_keeps_the_backoff,
                                        setup_no_server, teardown),
        cmocka_unit_test_setup_teardown(test_sync_now__cuts_a_backoff_short, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_start__bad_arguments, setup_plain, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
