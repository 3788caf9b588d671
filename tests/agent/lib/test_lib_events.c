/* Tests for agent/lib/events.c, libfieldsync's listeners: buffered delivery on the app's thread
 * (the fd readable exactly while events wait, dispatch from a listener refused, an overflow told,
 * never silent), removing listeners from inside and from elsewhere, conflict events. */
#define _XOPEN_SOURCE 700
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "agent/lib/internal.h" /* the queue bound's test hook */
#include "sync/transport.h"
#include "tests/agent/lib/lib_sync_fixture.h"

static int setup(void **state)
{
    lfx_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL || !lfx_setup(f, NULL, false))
        return -1;
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

/* True when fd is readable now (poll with timeout 0). */
static bool readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

static bool readable_within(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN) != 0;
}

/* Dispatches whatever waits, checking the fd's promise: readable means something is delivered. */
static size_t dispatch_checked(fieldsync_t *fs, int fd)
{
    bool was = readable(fd);
    size_t n = 0;
    assert_int_equal(fieldsync_dispatch(fs, &n), FIELDSYNC_OK);
    if (was && n == 0)
        fail_msg("the event fd was readable, yet nothing waited");
    return n;
}

static void test_dispatch__listeners_run_on_the_app_thread(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, FIELDSYNC_EVENTS_BUFFERED, 0);
    int fd = -1;
    assert_int_equal(fieldsync_event_fd(fs, &fd), FIELDSYNC_OK);
    assert_true(fd >= 0);
    assert_false(readable(fd));
    lrec_t r;
    lrec_init(&r, fs, 16);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "B%d", i);
        assert_int_equal(fieldsync_ticket_create(fs, id, NULL, NULL), FIELDSYNC_OK);
    }
    /* The app's loop: poll the fd, dispatch; until the three records were heard and synced. */
    int64_t end = lfx_now_ms() + 30000;
    for (;;) {
        pthread_mutex_lock(&r.mu);
        bool done = r.recorded >= 3 && r.synced_seen > 0 && r.last.queue_depth == 0;
        pthread_mutex_unlock(&r.mu);
        if (done)
            break;
        if (lfx_now_ms() > end)
            fail_msg("the records were not heard and synced within 30 s");
        if (readable_within(fd, 1000))
            (void)dispatch_checked(fs, fd);
    }
    assert_int_equal(fieldsync_stop(fs), FIELDSYNC_OK);
    end = lfx_now_ms() + 30000;
    while (!r.stopped) {
        if (lfx_now_ms() > end)
            fail_msg("no STOPPED within 30 s");
        if (readable_within(fd, 1000))
            (void)dispatch_checked(fs, fd);
    }
    /* STOPPED was the last event: nothing waits, the fd says so. */
    assert_false(readable(fd));
    size_t n = 99;
    assert_int_equal(fieldsync_dispatch(fs, &n), FIELDSYNC_OK);
    assert_int_equal(n, 0);
    /* No listener ran on the sync thread: only this one ran them. */
    assert_int_equal(r.nthreads, 1);
    assert_true(pthread_equal(r.threads[0], pthread_self()));
    assert_int_equal(r.after_stopped, 0);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

static void test_event_fd__readable_exactly_while_events_wait(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, FIELDSYNC_EVENTS_BUFFERED, 0);
    int fd = -1;
    assert_int_equal(fieldsync_event_fd(fs, &fd), FIELDSYNC_OK);
    lrec_t r;
    lrec_init(&r, fs, 16);
    lrec_listen(&r, fs);
    assert_false(readable(fd));
    assert_int_equal(fieldsync_ticket_create(fs, "E1", NULL, NULL), FIELDSYNC_OK);
    /* One cycle on this thread queues its events (the record, the sync, the status). */
    assert_int_equal(fieldsync_sync_once(fs, false, NULL), FIELDSYNC_OK);
    assert_true(readable(fd));
    assert_true(readable(fd)); /* polling does not consume anything */
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.change_events + r.status_events, 0); /* nothing ran yet */
    pthread_mutex_unlock(&r.mu);
    size_t n = 0;
    assert_int_equal(fieldsync_dispatch(fs, &n), FIELDSYNC_OK);
    assert_true(n >= 2);
    assert_false(readable(fd));
    assert_int_equal(fieldsync_dispatch(fs, &n), FIELDSYNC_OK);
    assert_int_equal(n, 0);
    assert_int_equal(r.recorded, 1);
    assert_true(r.status_events >= 1);
    assert_int_equal(r.nthreads, 1);
    /* Again: a second record, a second cycle. */
    assert_int_equal(fieldsync_ticket_create(fs, "E2", NULL, NULL), FIELDSYNC_OK);
    assert_false(readable(fd));
    assert_int_equal(fieldsync_sync_once(fs, false, NULL), FIELDSYNC_OK);
    assert_true(readable(fd));
    assert_true(dispatch_checked(fs, fd) >= 2);
    assert_false(readable(fd));
    assert_int_equal(r.recorded, 2);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

static void test_dispatch__from_a_listener_is_busy(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, FIELDSYNC_EVENTS_BUFFERED, 0);
    lrec_t r;
    lrec_init(&r, fs, 0);
    r.try_dispatch = true;
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_ticket_create(fs, "D1", NULL, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_sync_once(fs, false, NULL), FIELDSYNC_OK);
    size_t n = 0;
    assert_int_equal(fieldsync_dispatch(fs, &n), FIELDSYNC_OK);
    assert_true(n > 0);
    assert_int_equal(r.dispatch_in_listener, FIELDSYNC_EBUSY);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
}

/* A listener of one handle may not run a cycle, a dispatch or a close of another: two threads doing
 * so from each other's listeners would each wait for the other's delivery (or sync thread), for
 * good. The other handle is on a journal of its own (device 1), whose SYNC lock nobody holds. */
typedef struct cross {
    fieldsync_t *other;
    int calls;
    fieldsync_status_t once, dispatch, close;
    bool once_said_listener;
} cross_t;

static void cross_listener(void *ctx, const fieldsync_sync_status_t *s)
{
    (void)s;
    cross_t *c = ctx;
    if (c->calls++ > 0)
        return;
    c->once = fieldsync_sync_once(c->other, false, NULL);
    c->once_said_listener = strstr(fieldsync_errmsg(c->other), "from a listener") != NULL;
    size_t n = 0;
    c->dispatch = fieldsync_dispatch(c->other, &n);
    c->close = fieldsync_close(c->other);
}

static void test_sync_once__from_another_handles_listener_is_busy(void **state)
{
    lfx_t *f = *state;
    char db1[440], secret1[440];
    snprintf(db1, sizeof db1, "%s/dev1.db", f->srv.dir);
    snprintf(secret1, sizeof secret1, "%s/dev1.secret", f->srv.dir);
    assert_true(lfx_write_secret(secret1, 1));
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.flags = FIELDSYNC_OPEN_INIT | FIELDSYNC_EVENTS_BUFFERED;
    cfg.journal_path = db1;
    cfg.device_id = "dev001";
    cfg.server_url = f->srv.url;
    cfg.secret_file = secret1;
    fieldsync_t *b = NULL;
    if (fieldsync_open(&cfg, &b) != FIELDSYNC_OK)
        fail_msg("open %s: %s", db1, fieldsync_errmsg(b));
    fieldsync_t *a = lfx_open(f, 0, 0);
    cross_t c = {b, 0, FIELDSYNC_OK, FIELDSYNC_OK, FIELDSYNC_OK, false};
    assert_int_equal(fieldsync_add_status_listener(a, cross_listener, &c, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_ticket_create(a, "X1", NULL, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_sync_once(a, false, NULL), FIELDSYNC_OK);
    assert_true(c.calls > 0);
    assert_int_equal(c.once, FIELDSYNC_EBUSY);
    assert_true(c.once_said_listener);
    assert_int_equal(c.dispatch, FIELDSYNC_EBUSY);
    assert_int_equal(c.close, FIELDSYNC_EBUSY);
    /* outside a listener, each works (b was not closed) */
    assert_int_equal(fieldsync_ticket_create(b, "Y1", NULL, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_sync_once(b, false, NULL), FIELDSYNC_OK);
    size_t n = 0;
    assert_int_equal(fieldsync_dispatch(b, &n), FIELDSYNC_OK);
    assert_int_equal(fieldsync_close(b), FIELDSYNC_OK);
    assert_int_equal(fieldsync_close(a), FIELDSYNC_OK);
}

typedef struct drops {
    int dropped_status; /* status events that said events were dropped */
    int events;
    bool stopped;
    int after_stopped;
} drops_t;

static void drops_status(void *ctx, const fieldsync_sync_status_t *s)
{
    drops_t *d = ctx;
    if (d->stopped)
        d->after_stopped++;
    d->events++;
    if (strstr(s->reason, "events dropped") != NULL)
        d->dropped_status++;
    if (s->state == FIELDSYNC_STATE_STOPPED)
        d->stopped = true;
}

static void drops_change(void *ctx, const fieldsync_change_t *c)
{
    drops_t *d = ctx;
    (void)c;
    if (d->stopped)
        d->after_stopped++;
    d->events++;
}

/* A queue past its bound drops events, and says so; STOPPED is never dropped. */
static void test_dispatch__overflow_is_told(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, FIELDSYNC_EVENTS_BUFFERED, 0);
    fsl__events_set_queue_max(fs, 3);
    drops_t d = {0};
    assert_int_equal(fieldsync_add_status_listener(fs, drops_status, &d, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_add_change_listener(fs, drops_change, &d, NULL), FIELDSYNC_OK);
    for (int i = 0; i < 8; i++) {
        char id[16];
        snprintf(id, sizeof id, "O%d", i);
        assert_int_equal(fieldsync_ticket_create(fs, id, NULL, NULL), FIELDSYNC_OK);
    }
    assert_int_equal(fieldsync_sync_once(fs, false, NULL), FIELDSYNC_OK);
    int fd = -1;
    assert_int_equal(fieldsync_event_fd(fs, &fd), FIELDSYNC_OK);
    size_t n = 0;
    assert_int_equal(fieldsync_dispatch(fs, &n), FIELDSYNC_OK);
    assert_int_equal(n, 4); /* three events and the one that tells of the rest */
    assert_int_equal(d.dropped_status, 1);
    assert_false(readable(fd));
    /* Full again, then a start and a stop: STOPPED still arrives, and last. */
    for (int i = 0; i < 8; i++) {
        char id[16];
        snprintf(id, sizeof id, "P%d", i);
        assert_int_equal(fieldsync_ticket_create(fs, id, NULL, NULL), FIELDSYNC_OK);
    }
    assert_int_equal(fieldsync_sync_once(fs, false, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_start(fs, FIELDSYNC_START_LISTEN_ONLY), FIELDSYNC_OK);
    assert_int_equal(fieldsync_stop(fs), FIELDSYNC_OK);
    int64_t end = lfx_now_ms() + 20000;
    while (!d.stopped && lfx_now_ms() < end)
        if (readable_within(fd, 1000))
            assert_int_equal(fieldsync_dispatch(fs, NULL), FIELDSYNC_OK);
    assert_true(d.stopped);
    assert_int_equal(d.after_stopped, 0);
    assert_true(d.dropped_status >= 2);
    assert_false(readable(fd));
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

static void test_event_fd__not_buffered(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, 0, 0);
    int fd = 7;
    assert_int_equal(fieldsync_event_fd(fs, &fd), FIELDSYNC_EINVAL);
    assert_int_equal(fd, -1);
    size_t n = 7;
    assert_int_equal(fieldsync_dispatch(fs, &n), FIELDSYNC_EINVAL);
    assert_int_equal(n, 0);
    assert_int_equal(fieldsync_event_fd(NULL, &fd), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_dispatch(NULL, &n), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_event_fd(fs, NULL), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_add_status_listener(fs, NULL, NULL, NULL), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_add_change_listener(NULL, lrec_on_change, NULL, NULL),
                     FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_remove_listener(fs, NULL), FIELDSYNC_ENOTFOUND);
    assert_string_equal(fieldsync_state_str(FIELDSYNC_STATE_ATTENTION), "attention");
    assert_string_equal(fieldsync_state_str((fieldsync_state_t)99), "unknown");
    assert_string_equal(fieldsync_change_reason_str(FIELDSYNC_CHANGE_SERVER_WON), "server-won");
    assert_string_equal(fieldsync_change_reason_str(FIELDSYNC_CHANGE_GONE), "gone");
    assert_string_equal(fieldsync_change_reason_str((fieldsync_change_reason_t)-1), "unknown");
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

/* ---- removing listeners ---- */

typedef struct rm {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fieldsync_t *fs;
    fieldsync_listener_t *self_token, *blocker_token;
    int self_calls, blocker_calls, blocker_after_remove;
    bool blocker_in, release, removed;
    bool calling, returned; /* the remover is about to call remove; its call returned */
    char stat_path[64];     /* the remover thread's /proc/PID/task/TID/stat */
    fieldsync_status_t self_remove;
} rm_t;

static void rm_self(void *ctx, const fieldsync_sync_status_t *s)
{
    rm_t *m = ctx;
    (void)s;
    m->self_calls++;
    m->self_remove = fieldsync_remove_listener(m->fs, m->self_token); /* returns at once */
}

static void rm_blocker(void *ctx, const fieldsync_change_t *c)
{
    rm_t *m = ctx;
    (void)c;
    pthread_mutex_lock(&m->mu);
    m->blocker_calls++;
    if (m->removed)
        m->blocker_after_remove++;
    m->blocker_in = true;
    pthread_cond_broadcast(&m->cv);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    while (!m->release && pthread_cond_timedwait(&m->cv, &m->mu, &dl) == 0) {
    }
    m->blocker_in = false;
    pthread_mutex_unlock(&m->mu);
}

static void *remover(void *p)
{
    rm_t *m = p;
    char self[48];
    ssize_t n = readlink("/proc/thread-self", self, sizeof self - 1); /* "PID/task/TID" */
    pthread_mutex_lock(&m->mu);
    if (n > 0) {
        self[n] = '\0';
        snprintf(m->stat_path, sizeof m->stat_path, "/proc/%s/stat", self);
    }
    m->calling = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    fieldsync_status_t st = fieldsync_remove_listener(m->fs, m->blocker_token);
    pthread_mutex_lock(&m->mu);
    m->returned = true;
    /* When remove returns, the listener is not running. */
    if (st == FIELDSYNC_OK && !m->blocker_in)
        m->removed = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* The state letter of the remover thread (/proc/.../stat, after "(comm) "), '?' if unread. */
static char thread_state(const rm_t *m)
{
    char buf[256] = "";
    FILE *fp = fopen(m->stat_path, "r");
    if (fp == NULL)
        return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = '\0';
    (void)fclose(fp);
    const char *paren = strrchr(buf, ')');
    if (paren == NULL || paren[1] != ' ')
        return '?';
    return paren[2];
}

/* Polls (up to ms) until the remover's call returned or its thread sleeps. */
static bool thread_sleeps_or(rm_t *m, int ms)
{
    int64_t end = lfx_now_ms() + ms;
    while (lfx_now_ms() < end) {
        pthread_mutex_lock(&m->mu);
        bool returned = m->returned;
        pthread_mutex_unlock(&m->mu);
        if (returned || thread_state(m) == 'S')
            return true;
        struct timespec ts = {0, 1000000L}; /* a poll of the condition, not a wait for it */
        nanosleep(&ts, NULL);
    }
    return false;
}

static void test_remove_listener__inside_and_elsewhere(void **state)
{
    lfx_t *f = *state;
    fieldsync_t *fs = lfx_open(f, 0, 0);
    rm_t m;
    memset(&m, 0, sizeof m);
    pthread_mutex_init(&m.mu, NULL);
    pthread_cond_init(&m.cv, NULL);
    m.fs = fs;
    m.self_remove = (fieldsync_status_t)-1;
    assert_int_equal(fieldsync_add_status_listener(fs, rm_self, &m, &m.self_token), FIELDSYNC_OK);
    assert_int_equal(fieldsync_add_change_listener(fs, rm_blocker, &m, &m.blocker_token),
                     FIELDSYNC_OK);
    lrec_t r;
    lrec_init(&r, fs, 0);
    lrec_listen(&r, fs);
    assert_int_equal(fieldsync_ticket_create(fs, "L1", NULL, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_start(fs, 0), FIELDSYNC_OK);
    /* The blocker runs on the sync thread (the change of L1) and waits for our word. */
    pthread_mutex_lock(&m.mu);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    while (!m.blocker_in && pthread_cond_timedwait(&m.cv, &m.mu, &dl) == 0) {
    }
    assert_true(m.blocker_in);
    pthread_mutex_unlock(&m.mu);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, remover, &m), 0);
    /* The remover waits while the blocker runs: wait until its thread sleeps (the kernel says
     * 'S') after it set out to call remove, or its call returned. Nothing else puts it to sleep
     * (the blocker waits on m.cv without the library's locks; this thread holds none). */
    pthread_mutex_lock(&m.mu);
    while (!m.calling && pthread_cond_timedwait(&m.cv, &m.mu, &dl) == 0) {
    }
    assert_true(m.calling);
    assert_true(m.stat_path[0] != '\0');
    pthread_mutex_unlock(&m.mu);
    assert_true(thread_sleeps_or(&m, 20000));
    pthread_mutex_lock(&m.mu);
    assert_false(m.returned); /* remove waits for the listener to return */
    assert_false(m.removed);
    // cppcheck-suppress unreadVariable ; read by the blocked listener on the sync thread
    m.release = true;
    pthread_cond_broadcast(&m.cv);
    pthread_mutex_unlock(&m.mu);
    pthread_join(t, NULL);
    assert_true(m.removed);
    /* More changes: the removed listeners are not called again. */
    assert_int_equal(fieldsync_ticket_create(fs, "L2", NULL, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_sync_now(fs), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_has_synced, 20000));
    assert_int_equal(fieldsync_stop(fs), FIELDSYNC_OK);
    assert_true(lrec_wait(&r, lrec_is_stopped, 20000));
    assert_int_equal(m.self_calls, 1);
    assert_int_equal(m.self_remove, FIELDSYNC_OK);
    assert_int_equal(m.blocker_after_remove, 0);
    assert_int_equal(fieldsync_remove_listener(fs, m.blocker_token), FIELDSYNC_ENOTFOUND);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    lrec_clear(&r);
    pthread_cond_destroy(&m.cv);
    pthread_mutex_destroy(&m.mu);
}

/* ---- conflicts ---- */

typedef struct cf {
    char op_id[40], outcome[16], decision[16], id[16];
    int n, parked_changes, held_changes, server_won_changes;
} cf_t;

static void cf_conflict(void *ctx, const fieldsync_conflict_event_t *c)
{
    cf_t *x = ctx;
    x->n++;
    snprintf(x->op_id, sizeof x->op_id, "%s", c->op_id);
    snprintf(x->outcome, sizeof x->outcome, "%s", c->outcome);
    snprintf(x->decision, sizeof x->decision, "%s", c->decision);
    snprintf(x->id, sizeof x->id, "%s", c->id);
}

static void cf_change(void *ctx, const fieldsync_change_t *c)
{
    cf_t *x = ctx;
    if (c->reason == FIELDSYNC_CHANGE_PARKED)
        x->parked_changes++;
    if (c->reason == FIELDSYNC_CHANGE_HELD)
        x->held_changes++;
    if (c->reason == FIELDSYNC_CHANGE_SERVER_WON)
        x->server_won_changes++;
}

/* A handle on the fixture's journal with the resolver policy (NULL: the default) and x's
 * listeners. */
static fieldsync_t *cf_open(lfx_t *f, const char *policy, cf_t *x)
{
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = f->db;
    cfg.resolver_policy = policy;
    fieldsync_t *fs = NULL;
    assert_int_equal(fieldsync_open(&cfg, &fs), FIELDSYNC_OK);
    memset(x, 0, sizeof *x);
    assert_int_equal(fieldsync_add_conflict_listener(fs, cf_conflict, x, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_add_change_listener(fs, cf_change, x, NULL), FIELDSYNC_OK);
    return fs;
}

/* Another device (1) pushes an op of kind on ticket id (rest: the op's members after its id),
 * which the server applies. */
static void cf_other_device(lfx_t *f, const char *kind, const char *id, const char *rest)
{
    char op[512];
    tc_op(op, sizeof op, NULL, kind, "ticket", id, rest);
    fsa_codec_result_t *res = NULL;
    size_t n = 0;
    assert_int_equal(tc_push(NULL, f->srv.url, 1, op, &res, &n), 200);
    assert_int_equal(n, 1);
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    fsa_codec_results_free(res, n);
}

/* Ticket id created here and synced; another device then sets its priority on the server, and
 * ours, recorded into *rec on the old version, conflicts at the next sync. */
static fieldsync_t *cf_priority_conflict(lfx_t *f, const char *policy, const char *id, cf_t *x,
                                         fieldsync_rec_t *rec)
{
    fieldsync_t *fs = cf_open(f, policy, x);
    assert_int_equal(fieldsync_ticket_create(fs, id, NULL, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_sync_once(fs, false, NULL), FIELDSYNC_OK);
    cf_other_device(f, "set", id, ",\"base_version\":1,\"fields\":{\"priority\":\"HIGH\"}");
    char set[160];
    snprintf(set, sizeof set,
             "{\"kind\":\"set\",\"type\":\"ticket\",\"id\":\"%s\","
             "\"fields\":{\"priority\":\"LOW\"}}",
             id);
    assert_int_equal(fieldsync_record(fs, set, NULL, rec), FIELDSYNC_OK);
    return fs;
}

static void test_conflict_listener__hears_a_parked_op(void **state)
{
    cf_t x;
    fieldsync_rec_t rec;
    /* Every conflict on a ticket waits for a person. */
    fieldsync_t *fs = cf_priority_conflict(*state, "ticket=park", "K1", &x, &rec);
    assert_int_equal(fieldsync_sync_once(fs, false, NULL), FIELDSYNC_OK);
    assert_int_equal(x.n, 1);
    assert_int_equal(x.parked_changes, 1);
    assert_int_equal(x.held_changes, 1);
    assert_string_equal(x.op_id, rec.op_id);
    assert_string_equal(x.outcome, "conflict");
    assert_string_equal(x.decision, "park");
    assert_string_equal(x.id, "K1");
    /* The op waits for a person; once one settles it, it says so (it said CONFLICT for good). */
    fieldsync_op_state_t os = FIELDSYNC_OP_PENDING;
    assert_int_equal(fieldsync_op_state(fs, rec.op_id, &os), FIELDSYNC_OK);
    assert_int_equal(os, FIELDSYNC_OP_CONFLICT);
    assert_int_equal(fieldsync_conflict_resolve(fs, rec.op_id, false, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_op_state(fs, rec.op_id, &os), FIELDSYNC_OK);
    assert_int_equal(os, FIELDSYNC_OP_RESOLVED);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

/* A conflict the resolver settles at once (the server is already where the op was going) leaves
 * the op RESOLVED, not CONFLICT ("waits for a person"). */
static void test_op_state__a_conflict_the_resolver_settled_is_resolved(void **state)
{
    lfx_t *f = *state;
    cf_t x;
    fieldsync_t *fs = cf_open(f, NULL, &x);
    assert_int_equal(fieldsync_ticket_create(fs, "K2", NULL, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_sync_once(fs, false, NULL), FIELDSYNC_OK);
    /* Another device resolves the ticket first; ours, from NEW, conflicts and converges. */
    cf_other_device(f, "transition", "K2",
                    ",\"field\":\"status\",\"from\":\"NEW\",\"to\":\"RESOLVED\"");
    fieldsync_rec_t rec;
    assert_int_equal(fieldsync_ticket_transition(fs, "K2", "RESOLVED", NULL, &rec), FIELDSYNC_OK);
    fieldsync_report_t r;
    assert_int_equal(fieldsync_sync_once(fs, false, &r), FIELDSYNC_OK);
    assert_int_equal(r.conflict, 1);
    assert_int_equal(r.converged, 1);
    fieldsync_op_state_t os = FIELDSYNC_OP_PENDING;
    assert_int_equal(fieldsync_op_state(fs, rec.op_id, &os), FIELDSYNC_OK);
    assert_int_equal(os, FIELDSYNC_OP_RESOLVED);
    /* Nothing waits for a person: no conflict event (there was one, its decision ""), and no
     * PARKED change ("an op waits for a person"); the answer itself was HELD. */
    assert_int_equal(x.n, 0);
    assert_int_equal(x.parked_changes, 0);
    assert_int_equal(x.held_changes, 1);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

/* A conflict the resolver decides "server wins" is told to conflict listeners with that
 * decision, once: before, its event came from the answer's change, with the decision "" or
 * "server-wins" by timing. */
static void test_conflict_listener__hears_a_server_wins(void **state)
{
    cf_t x;
    fieldsync_rec_t rec;
    fieldsync_t *fs = cf_priority_conflict(*state, "ticket=server-wins", "K3", &x, &rec);
    fieldsync_report_t r;
    assert_int_equal(fieldsync_sync_once(fs, false, &r), FIELDSYNC_OK);
    assert_int_equal(r.server_wins, 1);
    assert_int_equal(x.n, 1);
    assert_string_equal(x.op_id, rec.op_id);
    assert_string_equal(x.decision, "server-wins");
    assert_int_equal(x.held_changes, 1);
    assert_int_equal(x.server_won_changes, 1);
    assert_int_equal(x.parked_changes, 0);
    assert_string_equal(fieldsync_change_reason_str(FIELDSYNC_CHANGE_HELD), "held");
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

int main(void)
{
    if (fsa_transport_global_init() != FSA_OK)
        return 1;
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_dispatch__listeners_run_on_the_app_thread),
        T(test_event_fd__readable_exactly_while_events_wait),
        T(test_dispatch__from_a_listener_is_busy),
        T(test_sync_once__from_another_handles_listener_is_busy),
        T(test_dispatch__overflow_is_told),
        T(test_event_fd__not_buffered),
        T(test_remove_listener__inside_and_elsewhere),
        T(test_conflict_listener__hears_a_parked_op),
        T(test_op_state__a_conflict_the_resolver_settled_is_resolved),
        T(test_conflict_listener__hears_a_server_wins),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
