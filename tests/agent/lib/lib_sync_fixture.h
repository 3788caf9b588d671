/* fieldsync tests: a device journal set up through libfieldsync against the real server, and an
 * event recorder, shared by the sync thread's tests (test_lib_sync, _events, _procs). */
#ifndef FSA_TESTS_AGENT_LIB_SYNC_FIXTURE_H
#define FSA_TESTS_AGENT_LIB_SYNC_FIXTURE_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fieldsync/fieldsync.h"
#include "port/alloc.h"
#include "tests/sync/server_client.h"
#include "tests/sync/server_harness.h"
#include "tests/test_util.h"

typedef struct lfx {
    th_server_t srv;
    bool started;
    char secret[400], db[400];
} lfx_t;

static inline int64_t lfx_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* FSA_TEST_SCALE (a factor such as 0.25 under qemu) applied to n, at least 1. */
static inline int lfx_scaled(int n)
{
    const char *s = getenv("FSA_TEST_SCALE");
    if (s == NULL || s[0] == '\0')
        return n;
    char *end;
    double f = strtod(s, &end);
    if (*end != '\0' || !(f > 0.0))
        fail_msg("FSA_TEST_SCALE=%s is not a positive factor", s);
    int r = (int)((double)n * f);
    return r < 1 ? 1 : r;
}

/* Writes device idx's secret (64 hex chars, mode 0600) to path. */
static inline bool lfx_write_secret(const char *path, int idx)
{
    fsa_signer_key_t key;
    th_device_key(idx, &key);
    char hex[66];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key.bytes[i]);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return false;
    bool ok = write(fd, hex, 64) == 64;
    return close(fd) == 0 && ok;
}

/* A temp dir with the server's files (2 devices) and device 0's secret; the server started with
 * extra (NULL-terminated, may be NULL) unless no_server; the journal initialised through the
 * library for device 0. */
static inline bool lfx_setup(lfx_t *f, const char *const *extra, bool no_server)
{
    memset(f, 0, sizeof *f);
    if (!th_dir_make(f->srv.dir) || !th_write_files(&f->srv, 2))
        return false;
    snprintf(f->secret, sizeof f->secret, "%s/dev.secret", f->srv.dir);
    snprintf(f->db, sizeof f->db, "%s/dev.db", f->srv.dir);
    if (!lfx_write_secret(f->secret, 0))
        return false;
    if (!no_server) {
        if (!th_server_start(&f->srv, extra))
            return false;
        f->started = true;
    }
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.flags = FIELDSYNC_OPEN_INIT;
    cfg.journal_path = f->db;
    cfg.device_id = "dev000";
    cfg.server_url = f->started ? f->srv.url : "http://127.0.0.1:9";
    cfg.secret_file = f->secret;
    fieldsync_t *fs = NULL;
    fieldsync_status_t st = fieldsync_open(&cfg, &fs);
    if (st != FIELDSYNC_OK)
        fprintf(stderr, "init: %s\n", fieldsync_errmsg(fs));
    return fieldsync_close(fs) == FIELDSYNC_OK && st == FIELDSYNC_OK;
}

static inline void lfx_teardown(lfx_t *f)
{
    if (f->started)
        th_server_stop(&f->srv);
    th_dir_remove(f->srv.dir);
}

/* Opens the initialised journal with flags (FIELDSYNC_EVENTS_BUFFERED) and a sync interval. */
static inline fieldsync_t *lfx_open(const lfx_t *f, uint32_t flags, int64_t interval_ms)
{
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.flags = flags;
    cfg.journal_path = f->db;
    cfg.sync_interval_ms = interval_ms;
    fieldsync_t *fs = NULL;
    fieldsync_status_t st = fieldsync_open(&cfg, &fs);
    if (st != FIELDSYNC_OK)
        fail_msg("open %s: %s", f->db, fieldsync_errmsg(fs));
    return fs;
}

/* ---- an event recorder ---- */

typedef struct lrec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int status_events, change_events, conflict_events;
    fieldsync_sync_status_t last; /* the newest status heard */
    bool stopped;                 /* STOPPED heard (the test clears it before a start) */
    int after_stopped;            /* events heard while stopped was set */
    int syncing_seen;             /* status events with state SYNCING */
    int attention_seen;
    int tls_failures;        /* status events whose last error is FIELDSYNC_ETLS */
    int synced_seen;         /* status events saying a cycle went well */
    int synced_changes;      /* SYNCED changes heard */
    int synced_at_first_end; /* ... when the first cycle's "synced" status came */
    int64_t last_seq;        /* of the newest change */
    int out_of_order;        /* changes whose seq was not above the one before */
    int recorded, pulled;
    char (*recorded_ids)[40]; /* op ids of RECORDED changes, in the order heard */
    int recorded_cap;
    pthread_t threads[4]; /* distinct threads that ran a listener */
    int nthreads;
    fieldsync_t *fs;                         /* for listeners that call back into the handle */
    bool try_dispatch;                       /* call fieldsync_dispatch from a status listener */
    fieldsync_status_t dispatch_in_listener; /* what it said */
    bool stop_in_listener;                   /* call fieldsync_stop from the first status */
    const char *stop_at_reason; /* ... or from the first SYNCING status whose reason has it */
    bool stop_at_attention;     /* ... or from the first ATTENTION status */
    fieldsync_status_t stop_result;
    int stop_calls;
} lrec_t;

static inline void lrec_init(lrec_t *r, fieldsync_t *fs, int recorded_cap)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->fs = fs;
    r->dispatch_in_listener = (fieldsync_status_t)-1;
    r->stop_result = (fieldsync_status_t)-1;
    if (recorded_cap > 0) {
        r->recorded_ids = fsa_calloc((size_t)recorded_cap, sizeof *r->recorded_ids);
        r->recorded_cap = recorded_cap;
    }
}

static inline void lrec_clear(lrec_t *r)
{
    fsa_free(r->recorded_ids);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
}

/* Called with mu held by every listener. */
static inline void lrec_common(lrec_t *r)
{
    if (r->stopped)
        r->after_stopped++;
    pthread_t self = pthread_self();
    for (int i = 0; i < r->nthreads; i++)
        if (pthread_equal(r->threads[i], self))
            return;
    if (r->nthreads < 4)
        r->threads[r->nthreads] = self;
    r->nthreads++;
}

static inline void lrec_on_status(void *ctx, const fieldsync_sync_status_t *s)
{
    lrec_t *r = ctx;
    bool stop = false;
    pthread_mutex_lock(&r->mu);
    lrec_common(r);
    r->status_events++;
    r->last = *s;
    if (s->state == FIELDSYNC_STATE_SYNCING)
        r->syncing_seen++;
    if (s->state == FIELDSYNC_STATE_ATTENTION)
        r->attention_seen++;
    if (s->last_error == FIELDSYNC_ETLS)
        r->tls_failures++;
    if (s->state == FIELDSYNC_STATE_IDLE && strcmp(s->reason, "synced") == 0 &&
        r->synced_seen++ == 0)
        r->synced_at_first_end = r->synced_changes;
    if (s->state == FIELDSYNC_STATE_STOPPED)
        r->stopped = true;
    else if (r->stop_calls == 0 &&
             (r->stop_in_listener ||
              (r->stop_at_attention && s->state == FIELDSYNC_STATE_ATTENTION) ||
              (r->stop_at_reason != NULL && s->state == FIELDSYNC_STATE_SYNCING &&
               strstr(s->reason, r->stop_at_reason) != NULL)))
        stop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (stop) {
        fieldsync_status_t st = fieldsync_stop(r->fs);
        pthread_mutex_lock(&r->mu);
        r->stop_result = st;
        r->stop_calls++;
        pthread_mutex_unlock(&r->mu);
    }
    if (r->try_dispatch && r->dispatch_in_listener == (fieldsync_status_t)-1) {
        size_t n = 0;
        fieldsync_status_t st = fieldsync_dispatch(r->fs, &n);
        pthread_mutex_lock(&r->mu);
        r->dispatch_in_listener = st;
        pthread_mutex_unlock(&r->mu);
    }
}

static inline void lrec_on_change(void *ctx, const fieldsync_change_t *c)
{
    lrec_t *r = ctx;
    pthread_mutex_lock(&r->mu);
    lrec_common(r);
    r->change_events++;
    if (c->seq <= r->last_seq)
        r->out_of_order++;
    r->last_seq = c->seq;
    if (c->reason == FIELDSYNC_CHANGE_RECORDED) {
        if (r->recorded < r->recorded_cap)
            snprintf(r->recorded_ids[r->recorded], 40, "%s", c->op_id);
        r->recorded++;
    }
    if (c->reason == FIELDSYNC_CHANGE_PULLED)
        r->pulled++;
    if (c->reason == FIELDSYNC_CHANGE_SYNCED)
        r->synced_changes++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static inline void lrec_on_conflict(void *ctx, const fieldsync_conflict_event_t *c)
{
    lrec_t *r = ctx;
    (void)c;
    pthread_mutex_lock(&r->mu);
    lrec_common(r);
    r->conflict_events++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Adds the recorder's three listeners to fs. */
static inline void lrec_listen(lrec_t *r, fieldsync_t *fs)
{
    assert_int_equal(fieldsync_add_status_listener(fs, lrec_on_status, r, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_add_change_listener(fs, lrec_on_change, r, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_add_conflict_listener(fs, lrec_on_conflict, r, NULL), FIELDSYNC_OK);
}

/* Waits (bounded by ms) on the recorder's signal until pred(r) holds; true when it did. */
static inline bool lrec_wait(lrec_t *r, bool (*pred)(lrec_t *), int ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->mu);
    bool ok = pred(r);
    while (!ok) {
        int rc = pthread_cond_timedwait(&r->cv, &r->mu, &dl);
        ok = pred(r);
        if (rc == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static inline bool lrec_is_stopped(lrec_t *r)
{
    return r->stopped;
}

static inline bool lrec_has_synced(lrec_t *r)
{
    return r->synced_seen > 0;
}

static inline bool lrec_tls_failed(lrec_t *r)
{
    return r->tls_failures > 0;
}

static inline bool lrec_is_syncing(lrec_t *r)
{
    return r->syncing_seen > 0;
}

#endif
