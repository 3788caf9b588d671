/* Tests for sync/engine.c against a scripted server on loopback (an in-test libmicrohttpd server
 * that decodes each push with the real codec and answers as a test tells it): the batch-level
 * answers of PROTOCOL.md section 3 (413 split, 400 malformed quarantine, other 400s), answers
 * that break the protocol (wrong result count, wrong op id, not JSON, a pull cursor that does not
 * move), repeated clock_skew, pull paging with a cursor that needs encoding, cancel, and a SYNC
 * lock held by another cycle. The real server never sends most of these, so only a scripted one
 * can show that the engine keeps every op when the server misbehaves. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <zlib.h>

#include "port/alloc.h"
#include "port/limits.h"
#include "port/sim/sim.h"
#include "storage/lock.h"
#include "sync/codec.h"
#include "sync/engine.h"
#include "tests/sync/server_harness.h"
#include "tests/test_util.h"

#define BODY_MAX (2u * 1024 * 1024)
#define SEEN_MAX 64
#define TOO_LARGE_MAX 16

/* ---- the scripted server ---- */

typedef enum push_mode {
    PUSH_APPLY,       /* 200, every op applied (413 too_large above max_ops ops) */
    PUSH_ERROR,       /* err_http with {"error": {err_code, err_message}} */
    PUSH_SHORT,       /* 200 with one result fewer than the ops sent */
    PUSH_WRONG_ID,    /* 200 whose first result names another op */
    PUSH_NOT_JSON,    /* 200 with an HTML page */
    PUSH_CLOCK_SKEW,  /* 401 clock_skew with the server's time */
    PUSH_GROUP_MIXED, /* 200, the first op applied and every other one a conflict */
    PUSH_CONFLICT,    /* 200, push k up to n_conflict: every op a conflict with current
                       * conflict_version[k-1] / conflict_fields[k-1]; later pushes apply */
    PUSH_BIG_ERROR,   /* the first push: err_http with a 4 KiB page; later pushes apply */
} push_mode_t;

typedef enum pull_mode {
    PULL_EMPTY, /* no changes, more=false */
    PULL_STUCK, /* the same cursor with more=true, every time */
    PULL_NOT_JSON,
    PULL_PAGES,      /* page 1: the change below and a cursor needing %-encoding; page 2: the end */
    PULL_NO_CURSOR,  /* more=true with an empty cursor, every time */
    PULL_CYCLE,      /* more=true, the cursors going round: "a" after none or "b", "b" after "a" */
    PULL_ENDLESS,    /* more=true, a new cursor every time ("p1", "p2", ...) */
    PULL_OVER_LIMIT, /* one page of FSA_LIMIT_ENGINE_PULL_LIMIT + 1 tickets, pull_fields each */
} pull_mode_t;

#define ODD_CURSOR "p1 a/b+c=d&e%f"

/* Ticket fields as the server holds them: open, assigned to p7. */
#define T1_OPEN                                                                                    \
    "{\"status\": \"OPEN\", \"level\": 2, \"assignedto\": \"p7\", "                                \
    "\"ticketlog\": {\"ticket_history\": []}, \"priority\": \"LOW\"}"

typedef struct fake {
    struct MHD_Daemon *d;
    char url[64];
    pthread_mutex_t mu;
    /* the script, set before a sync */
    push_mode_t push;
    size_t max_ops; /* PUSH_APPLY: 413 above this many ops; 0: no limit */
    int err_http;
    const char *err_code;
    const char *err_message;
    int err_pushes;    /* PUSH_ERROR: only the first err_pushes pushes fail (0: all), later apply */
    int retry_after_s; /* PUSH_ERROR: sent as Retry-After when > 0 */
    int n_conflict;    /* PUSH_CONFLICT */
    int64_t conflict_version[4];
    const char *conflict_fields[4];
    void (*on_push)(void *arg, int push); /* called with each push's number (from 1), under mu */
    void *on_push_arg;
    pull_mode_t pull;
    const char *pull_fields; /* PULL_PAGES: ticket T1 at version 5 with these fields */
    /* what was seen */
    int pushes, pulls, too_large;
    size_t push_ops[SEEN_MAX];  /* ops in each push, in order */
    char applied[SEEN_MAX][40]; /* op ids answered "applied", in order */
    size_t n_applied;
    char since[4][64]; /* the decoded since= of each pull, "" when absent */
    int64_t version;
} fake_t;

typedef struct req {
    unsigned char *buf;
    size_t len, cap;
    bool overflow;
} req_t;

static int64_t now_ms(void)
{
    return fsa_port_posix()->wall_now(NULL).ms;
}

/* Answers code with body; with a Retry-After of retry_after_s when > 0. */
static enum MHD_Result reply_after(struct MHD_Connection *c, unsigned code, const char *body,
                                   size_t len, int retry_after_s)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (retry_after_s > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_after_s);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *body, size_t len)
{
    return reply_after(c, code, body, len, 0);
}

/* Answers with text made by the codec (freed here); 500 when the codec failed. */
static enum MHD_Result reply_codec(struct MHD_Connection *c, unsigned code, fsa_status_t st,
                                   char *text, size_t len)
{
    if (st != FSA_OK)
        return reply(c, 500, "{}", 2);
    enum MHD_Result ret = reply(c, code, text, len);
    fsa_codec_free(text);
    return ret;
}

static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned code, const char *ecode,
                                   const char *message)
{
    char *text = NULL;
    size_t len = 0;
    fsa_status_t st = fsa_codec_encode_error(ecode, message, now_ms(), &text, &len);
    return reply_codec(c, code, st, text, len);
}

/* The request body, inflated when it came gzip-compressed; NULL when it could not be read. */
static char *request_body(struct MHD_Connection *c, const req_t *rq, size_t *len)
{
    const char *enc = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Encoding");
    if (enc == NULL || strcmp(enc, "gzip") != 0) {
        char *copy = fsa_malloc(rq->len + 1);
        if (copy != NULL) {
            if (rq->len > 0)
                memcpy(copy, rq->buf, rq->len);
            copy[rq->len] = '\0';
            *len = rq->len;
        }
        return copy;
    }
    char *out = fsa_malloc(BODY_MAX + 1);
    if (out == NULL)
        return NULL;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    bool ok = false;
    if (inflateInit2(&zs, 15 + 16) == Z_OK) {
        zs.next_in = rq->buf;
        zs.avail_in = (uInt)rq->len;
        zs.next_out = (Bytef *)out;
        zs.avail_out = BODY_MAX;
        ok = inflate(&zs, Z_FINISH) == Z_STREAM_END;
        *len = zs.total_out;
        inflateEnd(&zs);
    }
    if (!ok) {
        fsa_free(out);
        return NULL;
    }
    out[*len] = '\0';
    return out;
}

static enum MHD_Result on_push(fake_t *f, struct MHD_Connection *c, const req_t *rq)
{
    size_t len = 0;
    char *body = rq->overflow ? NULL : request_body(c, rq, &len);
    fsa_codec_push_t push;
    fsa_model_err_t err;
    memset(&push, 0, sizeof push);
    fsa_status_t st = body != NULL ? fsa_codec_decode_push(body, len, &push, &err) : FSA_EPROTO;
    fsa_free(body);
    if (st != FSA_OK)
        return reply_error(c, 400, "malformed", "the scripted server could not read the push");

    pthread_mutex_lock(&f->mu);
    if (f->pushes < SEEN_MAX)
        f->push_ops[f->pushes] = push.count;
    f->pushes++;
    if (f->on_push != NULL)
        f->on_push(f->on_push_arg, f->pushes);
    enum MHD_Result ret;
    if (f->push == PUSH_ERROR && (f->err_pushes == 0 || f->pushes <= f->err_pushes)) {
        char *text = NULL;
        size_t tlen = 0;
        st = fsa_codec_encode_error(f->err_code, f->err_message, now_ms(), &text, &tlen);
        ret = st == FSA_OK ? reply_after(c, (unsigned)f->err_http, text, tlen, f->retry_after_s)
                           : reply(c, 500, "{}", 2);
        fsa_codec_free(text);
    } else if (f->push == PUSH_BIG_ERROR && f->pushes == 1) {
        static char page[4096];
        memset(page, 'x', sizeof page);
        ret = reply(c, (unsigned)f->err_http, page, sizeof page);
    } else if (f->push == PUSH_NOT_JSON) {
        ret = reply(c, 200, "<html>captive portal</html>", 27);
    } else if (f->push == PUSH_CLOCK_SKEW) {
        ret = reply_error(c, 401, "clock_skew", "X-Timestamp is too far from the server's time");
    } else if (f->push == PUSH_APPLY && f->max_ops > 0 && push.count > f->max_ops) {
        /* An engine that does not shrink its batches would loop forever: end it with an answer
         * that fails the cycle, so the test fails instead of hanging. */
        if (++f->too_large > TOO_LARGE_MAX)
            ret = reply_error(c, 400, "split_loop", "the batch keeps coming back too large");
        else
            ret = reply_error(c, 413, "too_large", "more ops than this server takes");
    } else {
        size_t n = push.count;
        if (f->push == PUSH_SHORT && n > 0)
            n--;
        fsa_codec_result_t *res = fsa_calloc(n + 1, sizeof *res);
        for (size_t i = 0; res != NULL && i < n; i++) {
            snprintf(res[i].op_id, sizeof res[i].op_id, "%s", push.ops[i].op.op_id);
            res[i].status = FSA_RESULT_APPLIED;
            res[i].version = ++f->version;
            if (f->push == PUSH_GROUP_MIXED && i > 0) {
                res[i].status = FSA_RESULT_CONFLICT;
                res[i].version = 0;
                res[i].has_current = true;
                res[i].current_version = 1;
                res[i].current_fields = "{}";
            }
            bool conflict = f->push == PUSH_CONFLICT && f->pushes <= f->n_conflict &&
                            f->pushes <= (int)(sizeof f->conflict_version / sizeof(int64_t));
            if (conflict) {
                res[i].status = FSA_RESULT_CONFLICT;
                res[i].version = 0;
                res[i].has_current = true;
                res[i].current_version = f->conflict_version[f->pushes - 1];
                res[i].current_fields = (char *)(uintptr_t)f->conflict_fields[f->pushes - 1];
            }
            if ((f->push == PUSH_APPLY || (f->push == PUSH_CONFLICT && !conflict)) &&
                f->n_applied < SEEN_MAX)
                snprintf(f->applied[f->n_applied++], sizeof f->applied[0], "%s",
                         push.ops[i].op.op_id);
        }
        if (res != NULL && f->push == PUSH_WRONG_ID && n > 0)
            snprintf(res[0].op_id, sizeof res[0].op_id, "00000000-0000-4000-8000-000000000000");
        char *text = NULL;
        size_t tlen = 0;
        st = res != NULL ? fsa_codec_encode_results(res, n, now_ms(), &text, &tlen) : FSA_ENOMEM;
        fsa_free(res);
        ret = reply_codec(c, 200, st, text, tlen);
    }
    pthread_mutex_unlock(&f->mu);
    fsa_codec_push_free(&push);
    return ret;
}

static enum MHD_Result on_pull(fake_t *f, struct MHD_Connection *c)
{
    const char *since = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since");
    pthread_mutex_lock(&f->mu);
    int page = f->pulls++;
    if (page < 4)
        snprintf(f->since[page], sizeof f->since[0], "%s", since != NULL ? since : "");
    fsa_codec_pull_t pull;
    memset(&pull, 0, sizeof pull);
    fsa_codec_change_t change;
    memset(&change, 0, sizeof change);
    pull.server_time_ms = now_ms();
    enum MHD_Result ret;
    if (f->pull == PULL_NOT_JSON) {
        ret = reply(c, 200, "not json", 8);
        goto out;
    }
    switch (f->pull) {
    case PULL_STUCK:
        snprintf(pull.cursor, sizeof pull.cursor, "stuck");
        pull.more = true;
        break;
    case PULL_NO_CURSOR: pull.more = true; break;
    case PULL_CYCLE:
        snprintf(pull.cursor, sizeof pull.cursor, "%s",
                 since != NULL && strcmp(since, "a") == 0 ? "b" : "a");
        pull.more = true;
        break;
    case PULL_ENDLESS:
        snprintf(pull.cursor, sizeof pull.cursor, "p%d", page + 1);
        pull.more = true;
        break;
    case PULL_PAGES:
        if (since == NULL) {
            change.type = FSA_TYPE_TICKET;
            snprintf(change.id, sizeof change.id, "T1");
            change.version = 5;
            change.mdtz_ms = now_ms();
            change.fields = (char *)(uintptr_t)f->pull_fields;
            pull.changes = &change;
            pull.count = 1;
            snprintf(pull.cursor, sizeof pull.cursor, "%s", ODD_CURSOR);
            pull.more = true;
        } else {
            snprintf(pull.cursor, sizeof pull.cursor, "end");
        }
        break;
    case PULL_OVER_LIMIT: {
        static fsa_codec_change_t many[FSA_LIMIT_ENGINE_PULL_LIMIT + 1];
        for (size_t i = 0; i < sizeof many / sizeof many[0]; i++) {
            many[i] = (fsa_codec_change_t){.type = FSA_TYPE_TICKET, .version = 1};
            snprintf(many[i].id, sizeof many[i].id, "T%zu", i);
            many[i].mdtz_ms = now_ms();
            many[i].fields = (char *)(uintptr_t)f->pull_fields;
        }
        pull.changes = many;
        pull.count = sizeof many / sizeof many[0];
        snprintf(pull.cursor, sizeof pull.cursor, "over");
        break;
    }
    default: snprintf(pull.cursor, sizeof pull.cursor, "c1"); break;
    }
    char *text = NULL;
    size_t len = 0;
    fsa_status_t st = fsa_codec_encode_pull(&pull, &text, &len);
    ret = reply_codec(c, 200, st, text, len);
out:
    pthread_mutex_unlock(&f->mu);
    return ret;
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && strcmp(s + n - m, tail) == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    fake_t *f = cls;
    req_t *rq = *con_cls;
    if (rq == NULL) {
        rq = fsa_calloc(1, sizeof *rq);
        if (rq == NULL)
            return MHD_NO;
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        size_t n = *upload_size;
        if (rq->len + n > BODY_MAX) {
            rq->overflow = true;
        } else {
            if (rq->len + n > rq->cap) {
                size_t cap = (rq->len + n) * 2;
                unsigned char *b = fsa_realloc(rq->buf, cap);
                if (b == NULL)
                    return MHD_NO;
                rq->buf = b;
                rq->cap = cap;
            }
            memcpy(rq->buf + rq->len, upload, n);
            rq->len += n;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "POST") == 0 && ends_with(url, "/ops"))
        return on_push(f, c, rq);
    if (strcmp(method, "GET") == 0 && ends_with(url, "/changes"))
        return on_pull(f, c);
    return reply_error(c, 404, "not_found", "no such route");
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    req_t *rq = *con_cls;
    if (rq != NULL) {
        fsa_free(rq->buf);
        fsa_free(rq);
    }
    *con_cls = NULL;
}

static bool fake_start(fake_t *f)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    pthread_mutex_init(&f->mu, NULL);
    f->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_request, f,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (f->d == NULL)
        return false;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(f->d, MHD_DAEMON_INFO_BIND_PORT);
    if (info == NULL || info->port == 0)
        return false;
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%u", (unsigned)info->port);
    return true;
}

/* ---- fixture ---- */

typedef struct fx {
    fake_t srv;
    char dir[256];
    char db[320];
    fsa_sim_t *sim;
    fsa_port_t *port;
    fsa_journal_t *j;
    fsa_engine_t *e;
    fsa_engine_state_t last_state;
    bool cancel_when_retrying; /* on_status cancels the engine as it starts a retry's wait */
    void (*tick)(void *arg);   /* the engine's transport tick (engine_with), when set */
    void *tick_arg;
    size_t max_response; /* the transport's limit on an answer (engine_with); 0: its default */
} fx_t;

static void on_status(void *arg, const fsa_engine_status_t *s)
{
    fx_t *f = arg;
    f->last_state = s->state;
    if (f->cancel_when_retrying && s->state == FSA_ENGINE_RETRYING)
        fsa_engine_cancel(f->e);
}

static int setup(void **state)
{
    fx_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL || !th_dir_make(f->dir) || !fake_start(&f->srv))
        return -1;
    if (fsa_sim_new(11, (fsa_wall_t){now_ms()}, "device", &f->sim) != FSA_OK)
        return -1;
    f->port = fsa_sim_port(f->sim);
    snprintf(f->db, sizeof f->db, "%s/device.db", f->dir);
    fsa_journal_opts_t o = {.create = true};
    char err[256];
    if (fsa_journal_open(f->port, f->db, &o, &f->j, err, sizeof err) != FSA_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    fsa_engine_free(f->e);
    fsa_journal_close(f->j);
    fsa_sim_free(f->sim);
    if (f->srv.d != NULL)
        MHD_stop_daemon(f->srv.d);
    pthread_mutex_destroy(&f->srv.mu);
    th_dir_remove(f->dir);
    fsa_free(f);
    return 0;
}

/* The engine for this fixture (f->e); 0 for either limit is the engine's default. */
static fsa_engine_t *engine_with(fx_t *f, size_t batch_max_bytes, size_t batch_max_ops)
{
    fsa_signer_key_t key;
    th_device_key(0, &key);
    fsa_engine_opts_t o = {.device_id = "dev000",
                           .key = &key,
                           .batch_max_bytes = batch_max_bytes,
                           .batch_max_ops = batch_max_ops,
                           .retry = fsa_retry_policy(FSA_RETRY_DEFAULT)};
    o.transport.base_url = f->srv.url;
    o.transport.connect_timeout_ms = 2000;
    o.transport.total_timeout_ms = 10000;
    o.transport.tick = f->tick;
    o.transport.tick_arg = f->tick_arg;
    o.transport.max_response_bytes = f->max_response;
    char err[256];
    assert_fsa_ok(fsa_engine_new(f->port, f->j, &o, &f->e, err, sizeof err));
    fsa_signer_key_wipe(&key);
    fsa_engine_on_status(f->e, on_status, f);
    return f->e;
}

static fsa_engine_t *engine(fx_t *f, size_t batch_max_bytes)
{
    return engine_with(f, batch_max_bytes, 0);
}

/* n new tickets T0..T(n-1); their op ids into op_ids (may be NULL). */
static void record_tickets(fx_t *f, int n, char op_ids[][40])
{
    for (int i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof id, "T%d", i);
        fsa_rec_t rec;
        assert_fsa_ok(
            fsa_journal_create(f->j, FSA_TYPE_TICKET, id, "{\"priority\": \"HIGH\"}", NULL, &rec));
        if (op_ids != NULL)
            snprintf(op_ids[i], 40, "%s", rec.op_id);
    }
}

static fsa_outbox_stats_t stats(fx_t *f)
{
    fsa_outbox_stats_t os;
    assert_fsa_ok(fsa_outbox_stats(f->j, &os));
    return os;
}

static fsa_sync_state_t sync_state(fx_t *f)
{
    fsa_sync_state_t s;
    assert_fsa_ok(fsa_journal_sync_state_get(f->j, &s));
    return s;
}

typedef struct seen_conflicts {
    int n;
    char code[4][32];
    char reason[4][256];
} seen_conflicts_t;

static bool seen_cb(void *arg, const fsa_conflict_t *c)
{
    seen_conflicts_t *s = arg;
    if (s->n < 4) {
        snprintf(s->code[s->n], sizeof s->code[0], "%s", c->code);
        snprintf(s->reason[s->n], sizeof s->reason[0], "%s", c->reason);
    }
    s->n++;
    return true;
}

static seen_conflicts_t open_conflicts(fx_t *f)
{
    seen_conflicts_t s;
    memset(&s, 0, sizeof s);
    assert_fsa_ok(fsa_conflicts_each(f->j, false, seen_cb, &s));
    return s;
}

/* A failed cycle keeps every op pending, stores a next attempt and reports why. */
static void assert_failed_keeping_ops(fx_t *f, fsa_status_t st, const fsa_sync_report_t *r,
                                      fsa_status_t want, int64_t pending, const char *why)
{
    if (st != want)
        fail_msg("sync returned %s, want %s (%s)", fsa_status_str(st), fsa_status_str(want),
                 r->error);
    if (strstr(r->error, why) == NULL)
        fail_msg("error \"%s\" does not say \"%s\"", r->error, why);
    fsa_outbox_stats_t os = stats(f);
    assert_int_equal(os.pending, pending);
    assert_int_equal(os.done, 0);
    assert_int_equal(os.rejected, 0);
    assert_int_equal(r->applied, 0);
    assert_true(sync_state(f).backoff.next_attempt_ms > 0);
}

/* A cycle that a cancel ended: st is FSA_ETIMEOUT saying "cancelled", pending ops stay, and the
 * persisted backoff is still `before` (a stop is not a failure: the next start syncs at once). */
static void assert_cancelled_keeping_ops(fx_t *f, fsa_status_t st, const fsa_sync_report_t *r,
                                         int64_t pending, fsa_backoff_state_t before)
{
    if (st != FSA_ETIMEOUT)
        fail_msg("sync returned %s, want %s (%s)", fsa_status_str(st), fsa_status_str(FSA_ETIMEOUT),
                 r->error);
    assert_string_equal(r->error, "cancelled");
    assert_int_equal(stats(f).pending, pending);
    fsa_backoff_state_t after = sync_state(f).backoff;
    assert_int_equal(after.next_attempt_ms, before.next_attempt_ms);
    assert_int_equal(after.failures, before.failures);
    assert_int_equal(f->last_state, FSA_ENGINE_IDLE);
}

/* ---- push: batch-level answers ---- */

/* A 413 splits the batch until the server takes it; every op is applied once, in seq order. */
static void test_fsa_engine_sync__413_splits_batch_until_taken(void **state)
{
    fx_t *f = *state;
    char ids[8][40];
    record_tickets(f, 8, ids);
    f->srv.push = PUSH_APPLY;
    f->srv.max_ops = 2;
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(engine(f, 0), &r));
    /* All 8 went first; each refusal at least halves the batch, so there are at most 3, and
     * after them every op is sent once. */
    assert_int_equal(f->srv.push_ops[0], 8);
    assert_true(f->srv.too_large >= 1 && f->srv.too_large <= 3);
    assert_true(f->srv.pushes <= f->srv.too_large + 8);
    assert_int_equal(r.applied, 8);
    assert_int_equal(r.pushed, 8);
    assert_int_equal(r.rejected, 0);
    assert_int_equal(stats(f).pending, 0);
    size_t answered = 0;
    for (int i = 0; i < f->srv.pushes && i < SEEN_MAX; i++)
        if (f->srv.push_ops[i] <= 2)
            answered += f->srv.push_ops[i];
    assert_int_equal(answered, 8);
    assert_int_equal(f->srv.n_applied, 8);
    for (int i = 0; i < 8; i++)
        assert_string_equal(f->srv.applied[i], ids[i]);
}

/* A single op the server always refuses as too large can never be sent: it is parked as rejected
 * (visible to a person), and the queue is not blocked behind it. */
static void test_fsa_engine_sync__413_single_op_is_parked(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 1, NULL);
    f->srv.push = PUSH_ERROR;
    f->srv.err_http = 413;
    f->srv.err_code = "too_large";
    f->srv.err_message = "op over the limit";
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(engine(f, 0), &r));
    assert_int_equal(f->srv.pushes, 1);
    assert_int_equal(r.rejected, 1);
    fsa_outbox_stats_t os = stats(f);
    assert_int_equal(os.pending, 0);
    assert_int_equal(os.rejected, 1);
    seen_conflicts_t s = open_conflicts(f);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.code[0], "too_large");
}

/* A 200 whose results are over this device's limit on an answer (in the field: a server outside
 * the protocol's limits; here a small limit and conflicts carrying 4 KiB each) splits the batch
 * as a 413 does, down to one op, which is parked saying that the answer was too large, not the
 * op: the server may have applied it. */
static void test_fsa_engine_sync__answer_over_the_device_limit_parks_saying_so(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 2, NULL);
    static char big[4096 + 32];
    snprintf(big, sizeof big, "{\"ticketlog\":{\"x\":\"%0*d\"}}", 4096, 0);
    f->srv.push = PUSH_CONFLICT;
    f->srv.n_conflict = 4;
    for (int i = 0; i < 4; i++) {
        f->srv.conflict_version[i] = 7;
        f->srv.conflict_fields[i] = big;
    }
    f->max_response = 2048;
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(engine(f, 0), &r));
    assert_int_equal(f->srv.pushes, 3); /* both; then each alone */
    assert_int_equal(r.rejected, 2);
    fsa_outbox_stats_t os = stats(f);
    assert_int_equal(os.pending, 0);
    assert_int_equal(os.rejected, 2);
    seen_conflicts_t s = open_conflicts(f);
    assert_int_equal(s.n, 2);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(s.code[i], "answer_too_large");
        if (strstr(s.reason[i], "may have applied") == NULL)
            fail_msg("the parked op's reason \"%s\" does not say what happened", s.reason[i]);
    }
}

/* An error answer over this device's limit (here a proxy's 502 page of 4 KiB against a limit of
 * 2 KiB) is the error its status says, retried on the policy: not a reason to split the batch, or
 * to park its ops as too large. */
static void test_fsa_engine_sync__error_page_over_the_limit_is_its_status(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 2, NULL);
    f->srv.push = PUSH_BIG_ERROR;
    f->srv.err_http = 502;
    f->max_response = 2048;
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(engine(f, 0), &r));
    assert_int_equal(f->srv.pushes, 2);
    assert_int_equal(r.retries, 1);
    assert_int_equal(r.applied, 2);
    assert_int_equal(r.rejected, 0);
    fsa_outbox_stats_t os = stats(f);
    assert_int_equal(os.pending, 0);
    assert_int_equal(os.rejected, 0);
}

/* A group (a checkpoint update: child and parent) is never split: refused as too large, it is
 * parked whole. */
static void test_fsa_engine_sync__413_group_is_parked_whole(void **state)
{
    fx_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "TOUR", NULL, NULL, &rec));
    assert_fsa_ok(
        fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "CP1", "{\"parent_id\": \"TOUR\"}", NULL, &rec));
    f->srv.push = PUSH_APPLY; /* the two creates go first */
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(engine(f, 0), &r));
    assert_int_equal(r.applied, 2);

    assert_fsa_ok(fsa_journal_checkpoint_update(f->j, "CP1", "{\"seqno\": 3}", NULL, &rec));
    assert_int_equal(stats(f).pending, 2);
    f->srv.max_ops = 1;
    int before = f->srv.pushes;
    assert_fsa_ok(fsa_engine_sync(f->e, &r));
    assert_int_equal(f->srv.pushes - before, 1); /* refused once, never sent in halves */
    assert_int_equal(r.applied, 0);
    assert_int_equal(r.rejected, 2);
    fsa_outbox_stats_t os = stats(f);
    assert_int_equal(os.pending, 0);
    assert_int_equal(os.rejected, 2);
}

/* 400 malformed: resending as is cannot help; the batch is quarantined with the server's reason. */
static void test_fsa_engine_sync__400_malformed_quarantines_batch(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 3, NULL);
    f->srv.push = PUSH_ERROR;
    f->srv.err_http = 400;
    f->srv.err_code = "malformed";
    f->srv.err_message = "ops[1] is not an object";
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(engine(f, 0), &r));
    assert_int_equal(f->srv.pushes, 1);
    assert_int_equal(r.rejected, 3);
    fsa_outbox_stats_t os = stats(f);
    assert_int_equal(os.pending, 0);
    assert_int_equal(os.rejected, 3);
    seen_conflicts_t s = open_conflicts(f);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.code[0], "malformed");
    assert_non_null(strstr(s.reason[0], "ops[1] is not an object"));
}

/* Any other 400 fails the cycle and keeps the ops: they may be fine for a fixed server. */
static void test_fsa_engine_sync__400_other_keeps_ops(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 2, NULL);
    f->srv.push = PUSH_ERROR;
    f->srv.err_http = 400;
    f->srv.err_code = "bad_request";
    f->srv.err_message = "something else";
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    assert_failed_keeping_ops(f, st, &r, FSA_EREJECTED, 2, "bad_request");
    assert_int_equal(f->srv.pushes, 1); /* not retried within the cycle */
    assert_int_equal(f->last_state, FSA_ENGINE_OFFLINE);
}

/* Whether s holds a control byte (below 0x20, or 0x7f). */
static bool has_control(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* The engine's log lines, kept by fsa_sim_set_log. */
typedef struct logs {
    int lines, with_control;
} logs_t;

static void count_log(void *arg, fsa_log_level_t level, const char *msg)
{
    (void)level;
    logs_t *l = arg;
    l->lines++;
    if (has_control(msg)) {
        l->with_control++;
        printf("log line with a control byte: %s\n", msg);
    }
}

/* A server's error message reaches the report and the log as one terminal-safe line: its
 * decoded "\n", "\r", ESC and DEL are '?', so it can neither forge a log line nor drive a
 * terminal. */
static void test_fsa_engine_sync__server_message_has_no_control_bytes(void **state)
{
    fx_t *f = *state;
    logs_t logs = {0, 0};
    fsa_sim_set_log(f->sim, count_log, &logs);
    record_tickets(f, 1, NULL);
    f->srv.push = PUSH_ERROR;
    f->srv.err_http = 400;
    f->srv.err_code = "bad_request";
    f->srv.err_message = "no\nfieldsync: error: forged line\r\x1b[2J\x7f";
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    fsa_sim_set_log(f->sim, NULL, NULL);
    printf("report: %s\n", r.error);
    assert_failed_keeping_ops(f, st, &r, FSA_EREJECTED, 1, "bad_request");
    assert_false(has_control(r.error));
    assert_non_null(strstr(r.error, "no?fieldsync: error: forged line??[2J?"));
    assert_true(logs.lines > 0);
    assert_int_equal(logs.with_control, 0);
}

/* A cancel (the daemon's SIGTERM, the library's stop) that comes while the engine waits to retry a
 * 503 ends the cycle there: no request after it. (The engine tried once more when the cancel came
 * after the wait had begun.) */
static void test_fsa_engine_sync__cancelled_while_waiting_sends_nothing_more(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 1, NULL);
    f->srv.push = PUSH_ERROR;
    f->srv.err_http = 503;
    f->srv.err_code = "overloaded";
    f->srv.err_message = "try later";
    f->cancel_when_retrying = true;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    assert_cancelled_keeping_ops(f, st, &r, 1, (fsa_backoff_state_t){0});
    assert_int_equal(f->srv.pushes, 1);
}

/* A listener that takes connections (the kernel completes them) and never answers. */
typedef struct silent {
    int fd;
    fsa_engine_t *e;
} silent_t;

/* Cancels s->e once a connection is waiting on the listener: the request is on the wire. */
static void *cancel_once_connected(void *arg)
{
    silent_t *s = arg;
    struct pollfd p = {.fd = s->fd, .events = POLLIN};
    if (poll(&p, 1, 30000) == 1)
        fsa_engine_cancel(s->e);
    return NULL;
}

static double real_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A cancel (the library's stop or close, the daemon's SIGTERM) ends a request that is on the wire,
 * here to a server that never answers, instead of waiting out the request's 60 s: the cycle ends
 * as cancelled within about a second and the op stays to be sent. (The engine waited for the
 * answer or the timeout.) */
static void test_fsa_engine_sync__cancel_ends_a_request_never_answered(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 1, NULL);
    char url[64];
    silent_t s = {.fd = th_loopback_listen(url, sizeof url)};
    assert_true(s.fd >= 0);
    fsa_signer_key_t key;
    th_device_key(0, &key);
    fsa_engine_opts_t o = {.device_id = "dev000", .key = &key}; /* the request's 60 s timeout */
    o.transport.base_url = url;
    char err[256];
    assert_fsa_ok(fsa_engine_new(f->port, f->j, &o, &f->e, err, sizeof err));
    fsa_signer_key_wipe(&key);
    s.e = f->e;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_once_connected, &s), 0);
    double t0 = real_now_s();
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(f->e, &r);
    double took = real_now_s() - t0;
    assert_int_equal(pthread_join(t, NULL), 0);
    if (took > 20)
        fail_msg("the cancelled cycle took %.1f s: it waited for the request's timeout", took);
    assert_cancelled_keeping_ops(f, st, &r, 1, (fsa_backoff_state_t){0});
    close(s.fd);
}

/* ---- push: answers that break the protocol ---- */

static void test_fsa_engine_sync__results_short_keeps_ops(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 2, NULL);
    f->srv.push = PUSH_SHORT;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    assert_failed_keeping_ops(f, st, &r, FSA_EPROTO, 2, "1 results for 2 ops");
}

static void test_fsa_engine_sync__results_wrong_op_keeps_ops(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 2, NULL);
    f->srv.push = PUSH_WRONG_ID;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    assert_failed_keeping_ops(f, st, &r, FSA_EPROTO, 2, "00000000-0000-4000-8000-000000000000");
}

/* A group applies all or nothing (PROTOCOL.md section 2). An answer that applies part of one
 * cannot be undone: its applied op is done, the other is parked, rejected "group_split" (not
 * resolved: a rebase would send it alone), and the queue goes on. Refused, the answer kept the
 * group in the outbox, which the server answers the same way every time: every later op waited
 * behind it for good. */
static void test_fsa_engine_sync__results_splitting_a_group_park_the_rest(void **state)
{
    fx_t *f = *state;
    fsa_op_t g[2];
    memset(g, 0, sizeof g);
    for (int i = 0; i < 2; i++) {
        g[i].kind = FSA_OP_CREATE;
        g[i].type = FSA_TYPE_TICKET;
        snprintf(g[i].id, sizeof g[i].id, "G%d", i);
        g[i].json = "{\"priority\": \"HIGH\"}";
    }
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_record_group(f->j, g, 2, NULL, &rec));
    f->srv.push = PUSH_GROUP_MIXED;
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(engine(f, 0), &r));
    assert_int_equal(r.applied, 1);
    assert_int_equal(r.rejected, 1);
    assert_int_equal(r.conflict, 0);
    fsa_outbox_stats_t os = stats(f);
    assert_int_equal(os.pending, 0);
    assert_int_equal(os.rejected, 1);
    seen_conflicts_t s = open_conflicts(f);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.code[0], "group_split");
    /* The queue is not held: the next op goes at the next cycle. */
    record_tickets(f, 1, NULL);
    f->srv.push = PUSH_APPLY;
    assert_fsa_ok(fsa_engine_sync(f->e, &r));
    assert_int_equal(r.applied, 1);
    assert_int_equal(stats(f).pending, 0);
}

static void test_fsa_engine_sync__results_not_json_keeps_ops(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 1, NULL);
    f->srv.push = PUSH_NOT_JSON;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    assert_failed_keeping_ops(f, st, &r, FSA_EPROTO, 1, "malformed results");
}

/* The next cycle, once the backoff a failure set has run out (the sim's clock), against a server
 * that applies everything: all n ops (ids, in record order) applied once, in that order. */
static void next_cycle_applies_in_order(fx_t *f, char ids[][40], int n)
{
    int64_t wait_ms = sync_state(f).backoff.next_attempt_ms - f->port->wall_now(f->port->ctx).ms;
    fsa_sim_advance(f->sim, (wait_ms + 1) * FSA_NS_PER_MS);
    f->srv.push = PUSH_APPLY;
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(f->e, &r));
    assert_int_equal(r.applied, n);
    assert_int_equal(stats(f).pending, 0);
    assert_int_equal(f->srv.n_applied, n);
    for (int i = 0; i < n; i++)
        assert_string_equal(f->srv.applied[i], ids[i]);
}

/* The next batch goes as soon as an answer is known to be the server's (it names the batch's last
 * op), before its results are decoded: the server does not wait for the decode. A 200 that names
 * none of the batch's ops (here an HTML page: a captive portal, a proxy's page) may not come from
 * the server, which may then not have the batch at all: the next batch waits for the decode, else
 * it could reach the server before the ops it follows (a transition before its create). Every op
 * stays pending, and the next cycle sends them all again in order. */
static void test_fsa_engine_sync__results_not_json_holds_next_batch(void **state)
{
    fx_t *f = *state;
    char ids[20][40];
    record_tickets(f, 20, ids);
    f->srv.push = PUSH_NOT_JSON;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine_with(f, 0, FSA_JOURNAL_GROUP_MAX), &r);
    assert_failed_keeping_ops(f, st, &r, FSA_EPROTO, 20, "malformed results");
    assert_int_equal(f->srv.pushes, 1); /* the second batch was held back */
    assert_int_equal(f->srv.push_ops[0], FSA_JOURNAL_GROUP_MAX);
    assert_int_equal(stats(f).inflight, FSA_JOURNAL_GROUP_MAX);

    next_cycle_applies_in_order(f, ids, 20);
}

/* The server's answer (it names the batch's last op) whose results are unreadable (the first names
 * another op): the next batch went before the decode; its answer is awaited and dropped, its ops
 * show as sent, and every op stays to be sent again, in order, next cycle; the third batch never
 * goes. */
static void test_fsa_engine_sync__results_unreadable_with_next_batch_sent_keeps_ops(void **state)
{
    fx_t *f = *state;
    enum { N = 2 * FSA_JOURNAL_GROUP_MAX + 8 };
    char ids[N][40];
    record_tickets(f, N, ids);
    f->srv.push = PUSH_WRONG_ID;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine_with(f, 0, FSA_JOURNAL_GROUP_MAX), &r);
    assert_failed_keeping_ops(f, st, &r, FSA_EPROTO, N, "00000000-0000-4000-8000-000000000000");
    assert_int_equal(f->srv.pushes, 2); /* the second batch was on its way: not a third */
    assert_int_equal(f->srv.push_ops[0], FSA_JOURNAL_GROUP_MAX);
    assert_int_equal(f->srv.push_ops[1], FSA_JOURNAL_GROUP_MAX);
    assert_int_equal(stats(f).inflight, 2 * FSA_JOURNAL_GROUP_MAX); /* both batches went */

    next_cycle_applies_in_order(f, ids, N);
}

/* clock_skew is corrected and retried at once, but a server that keeps saying it after the
 * correction is refusing this device: the cycle stops (a person must look). */
static void test_fsa_engine_sync__clock_skew_forever_stops(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 1, NULL);
    f->srv.push = PUSH_CLOCK_SKEW;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    assert_failed_keeping_ops(f, st, &r, FSA_EAUTH, 1, "clock_skew");
    assert_true(f->srv.pushes > 1 && f->srv.pushes <= 4); /* retried, but boundedly */
    assert_int_equal(f->last_state, FSA_ENGINE_STOPPED);
    assert_int_equal(r.last_http_status, 401);
}

/* ---- pull ---- */

/* A cursor with characters outside the unreserved set reaches the server intact, the change of
 * page 1 is folded, and the final cursor is stored. */
static void test_fsa_engine_sync__pull_pages_with_odd_cursor(void **state)
{
    fx_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    f->srv.pull_fields = T1_OPEN;
    f->srv.pull = PULL_PAGES;
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(engine(f, 0), &r));
    assert_int_equal(r.applied, 1);
    assert_int_equal(r.pulled, 1);
    assert_int_equal(f->srv.pulls, 2);
    assert_string_equal(f->srv.since[0], "");
    assert_string_equal(f->srv.since[1], ODD_CURSOR);
    char *cursor = NULL;
    assert_fsa_ok(fsa_journal_cursor_get(f->j, &cursor));
    assert_non_null(cursor);
    assert_string_equal(cursor, "end");
    fsa_model_free(cursor);
    char *fields = NULL;
    int64_t base = 0, pending = 0;
    assert_fsa_ok(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T1", &fields, &base, &pending));
    assert_int_equal(base, 5);
    assert_int_equal(pending, 0);
    assert_non_null(strstr(fields, "\"p7\""));
    fsa_model_free(fields);
}

/*
 * A set's conflict is judged on the newest server state the device knows. Two sets on T1 go one
 * after the other (the second waits for the first's answer): the first, of priority, conflicts with
 * version 6, where another device changed only assignedto; the second conflicts with version 7,
 * where a third device changed the priority. Judged on version 6, the first set was rebased onto
 * version 7 (the base by then), which the server takes: the third device's priority overwritten,
 * unseen. Judged on version 7, the server wins for both, and nothing is sent again.
 */
static void test_fsa_engine_sync__conflict_judged_on_the_newest_state(void **state)
{
    fx_t *f = *state;
    f->srv.pull_fields = T1_OPEN;
    f->srv.pull = PULL_PAGES;
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(engine(f, 0), &r));
    assert_int_equal(r.pulled, 1);
    fsa_rec_t r1, r2;
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"priority\":\"HIGH\"}", NULL, &r1));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"assignedto\":\"p9\"}", NULL, &r2));
    f->srv.push = PUSH_CONFLICT;
    f->srv.n_conflict = 2;
    f->srv.conflict_version[0] = 6;
    f->srv.conflict_fields[0] = "{\"status\": \"OPEN\", \"level\": 2, \"assignedto\": \"p8\", "
                                "\"ticketlog\": {\"ticket_history\": []}, \"priority\": \"LOW\"}";
    f->srv.conflict_version[1] = 7;
    f->srv.conflict_fields[1] =
        "{\"status\": \"OPEN\", \"level\": 2, \"assignedto\": \"p8\", "
        "\"ticketlog\": {\"ticket_history\": []}, \"priority\": \"URGENT\"}";
    assert_fsa_ok(fsa_engine_sync(f->e, &r));
    assert_int_equal(f->srv.push_ops[0], 1); /* one set a push: the second waited */
    assert_int_equal(f->srv.push_ops[1], 1);
    assert_int_equal(r.conflict, 2);
    assert_int_equal(r.rebased, 0);
    assert_int_equal(r.server_wins, 2);
    assert_int_equal(f->srv.pushes, 2); /* nothing sent again */
    assert_int_equal(f->srv.n_applied, 0);
    char *fields = NULL;
    int64_t base = 0, pending = 0;
    assert_fsa_ok(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T1", &fields, &base, &pending));
    assert_int_equal(base, 7);
    assert_int_equal(pending, 0);
    assert_non_null(strstr(fields, "\"URGENT\""));
    assert_non_null(strstr(fields, "\"p8\""));
    fsa_model_free(fields);
}

/*
 * Only a set is judged on a newer state: the other verdicts say what the server's state was when
 * it refused the op. A transition to OPEN conflicts at version 6, where another device had opened
 * T1 already: it converged then. The set after it conflicts at version 7, where a third device
 * resolved T1. Judged on version 7, the transition would be parked for a person (RESOLVED is
 * neither its target nor final), over something the server had done.
 */
static void test_fsa_engine_sync__transition_judged_on_its_own_answer(void **state)
{
    fx_t *f = *state;
    f->srv.pull_fields = "{\"status\": \"NEW\", \"level\": 2, \"assignedto\": \"p7\", "
                         "\"ticketlog\": {\"ticket_history\": []}, \"priority\": \"LOW\"}";
    f->srv.pull = PULL_PAGES;
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(engine(f, 0), &r));
    fsa_rec_t r1, r2;
    assert_fsa_ok(fsa_journal_transition(f->j, FSA_TYPE_TICKET, "T1", "OPEN", NULL, &r1));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"assignedto\":\"p9\"}", NULL, &r2));
    f->srv.push = PUSH_CONFLICT;
    f->srv.n_conflict = 2;
    f->srv.conflict_version[0] = 6;
    f->srv.conflict_fields[0] = T1_OPEN;
    f->srv.conflict_version[1] = 7;
    f->srv.conflict_fields[1] = "{\"status\": \"RESOLVED\", \"level\": 2, \"assignedto\": "
                                "\"p8\", \"ticketlog\": {\"ticket_history\": []}, "
                                "\"priority\": \"LOW\"}";
    assert_fsa_ok(fsa_engine_sync(f->e, &r));
    assert_int_equal(f->srv.push_ops[0], 1);
    assert_int_equal(f->srv.push_ops[1], 1);
    assert_int_equal(r.conflict, 2);
    assert_int_equal(r.converged, 1);   /* the transition, on version 6 */
    assert_int_equal(r.server_wins, 1); /* the set, on version 7: assignedto changed there */
    assert_int_equal(r.parked, 0);
    assert_int_equal(r.rebased, 0);
}

/* A change the decoder lets through (its answer's depth bound has room for the envelope) but the
 * journal refuses (fields 34 deep, past the entity's 32): the cycle fails naming it, and the
 * cursor stays before it. It failed as "invalid argument". */
static void test_fsa_engine_sync__pulled_change_the_journal_refuses_is_named(void **state)
{
    fx_t *f = *state;
    static char deep[256];
    size_t n = (size_t)snprintf(deep, sizeof deep, "{\"status\":\"OPEN\",\"ticketlog\":");
    for (int i = 0; i < 33; i++)
        deep[n++] = '[';
    for (int i = 0; i < 33; i++)
        deep[n++] = ']';
    snprintf(deep + n, sizeof deep - n, "}");
    f->srv.pull_fields = deep;
    f->srv.pull = PULL_PAGES;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    assert_int_equal(st, FSA_EPROTO);
    assert_non_null(strstr(r.error, "ticket T1 at version 5"));
    assert_int_equal(r.pulled, 0);
    char *cursor = NULL;
    assert_fsa_ok(fsa_journal_cursor_get(f->j, &cursor));
    assert_null(cursor);
    assert_true(sync_state(f).backoff.next_attempt_ms > 0);
}

/* A server that says "more" without moving the cursor would make the device pull forever. */
static void test_fsa_engine_sync__pull_cursor_stuck_fails(void **state)
{
    fx_t *f = *state;
    f->srv.pull = PULL_STUCK;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    assert_int_equal(st, FSA_EPROTO);
    assert_non_null(strstr(r.error, "did not move"));
    assert_int_equal(f->srv.pulls, 2);
    assert_true(sync_state(f).backoff.next_attempt_ms > 0);
}

/* more=true with no cursor: asked again from the same place, the same page would come back. */
static void test_fsa_engine_sync__pull_more_without_cursor_fails(void **state)
{
    fx_t *f = *state;
    f->srv.pull = PULL_NO_CURSOR;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    assert_int_equal(st, FSA_EPROTO);
    assert_non_null(strstr(r.error, "gives no cursor"));
    assert_int_equal(f->srv.pulls, 1);
    assert_true(sync_state(f).backoff.next_attempt_ms > 0);
}

/* A page of more changes than the limit asked for (PROTOCOL.md section 4) is refused whole: the
 * limit is the device's bound on one page. Before, all of it was folded. */
static void test_fsa_engine_sync__pull_over_the_limit_fails(void **state)
{
    fx_t *f = *state;
    f->srv.pull_fields = T1_OPEN;
    f->srv.pull = PULL_OVER_LIMIT;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    assert_int_equal(st, FSA_EPROTO);
    char want[96];
    snprintf(want, sizeof want, "holds %d changes, over the %d asked for",
             FSA_LIMIT_ENGINE_PULL_LIMIT + 1, FSA_LIMIT_ENGINE_PULL_LIMIT);
    if (strstr(r.error, want) == NULL)
        fail_msg("error: %s", r.error);
    assert_int_equal(r.pulled, 0);
    char *cursor = NULL;
    assert_fsa_ok(fsa_journal_cursor_get(f->j, &cursor));
    assert_null(cursor);
}

/* Cursors that go round (a, b, a, b, ...) never end: found after 4 pages, not 100,000. */
static void test_fsa_engine_sync__pull_cursor_loop_fails(void **state)
{
    fx_t *f = *state;
    f->srv.pull = PULL_CYCLE;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    assert_int_equal(st, FSA_EPROTO);
    assert_non_null(strstr(r.error, "came back to an earlier one"));
    assert_int_equal(f->srv.pulls, 4);
    assert_string_equal(f->srv.since[3], "a");
    assert_true(sync_state(f).backoff.next_attempt_ms > 0);
}

/* A server whose `more` never ends, with a new cursor every time: the pull stops at its bound and
 * fails; it was reported as synced. */
static void test_fsa_engine_sync__pull_without_end_fails(void **state)
{
    fx_t *f = *state;
    f->srv.pull = PULL_ENDLESS;
    fsa__engine_pull_pages_max(40);
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    fsa__engine_pull_pages_max(0);
    assert_int_equal(st, FSA_EPROTO);
    assert_non_null(strstr(r.error, "did not end"));
    assert_int_equal(f->srv.pulls, 40);
    assert_true(sync_state(f).backoff.next_attempt_ms > 0);
    assert_int_equal(sync_state(f).last_sync_ms, 0); /* not a complete sync */
}

static void test_fsa_engine_sync__pull_not_json_fails(void **state)
{
    fx_t *f = *state;
    f->srv.pull = PULL_NOT_JSON;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    assert_int_equal(st, FSA_EPROTO);
    assert_non_null(strstr(r.error, "malformed pull"));
    char *cursor = NULL;
    assert_fsa_ok(fsa_journal_cursor_get(f->j, &cursor));
    assert_null(cursor); /* nothing learned from it */
}

/* ---- the cycle ---- */

/* A cancelled engine sends nothing and keeps everything, the backoff of earlier failures too:
 * a stop neither adds a failure nor clears them. (The engine counted a cancel as a failure.) */
static void test_fsa_engine_sync__cancelled_sends_nothing(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 2, NULL);
    const fsa_backoff_state_t before = {
        .next_attempt_ms = f->port->wall_now(f->port->ctx).ms - 1000, .failures = 3};
    assert_fsa_ok(fsa_journal_backoff_set(f->j, &before));
    fsa_engine_cancel(engine(f, 0));
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(f->e, &r);
    assert_cancelled_keeping_ops(f, st, &r, 2, before);
    assert_int_equal(f->srv.pushes, 0);
    assert_int_equal(f->srv.pulls, 0);
}

/* One cycle per journal: while another holds the SYNC lock, a sync is busy, sends nothing and
 * does not count as a failure (no backoff). */
static void test_fsa_engine_sync__sync_lock_held_is_busy(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 1, NULL);
    fsa_lockmgr_t *lm = NULL;
    fsa_lockmgr_opts_t lo = {.label = "other-cycle"};
    char err[256];
    assert_fsa_ok(fsa_lockmgr_open(f->port, f->db, &lo, &lm, err, sizeof err));
    fsa_lock_t lock;
    fsa_lock_init(&lock);
    assert_fsa_ok(fsa_lock_acquire(lm, FSA_LOCK_SYNC, "device", &lock, err, sizeof err));
    fsa_sync_report_t r;
    assert_int_equal(fsa_engine_sync(engine(f, 0), &r), FSA_EBUSY);
    assert_int_equal(f->srv.pushes, 0);
    assert_int_equal(stats(f).pending, 1);
    assert_int_equal(sync_state(f).backoff.next_attempt_ms, 0);
    assert_fsa_ok(fsa_lock_release(&lock, err, sizeof err));
    fsa_lockmgr_close(lm);
    /* and once it is free, the same engine syncs */
    assert_fsa_ok(fsa_engine_sync(f->e, &r));
    assert_int_equal(r.applied, 1);
}

/* Another process's try at the SYNC lock from within a push (the fake's on_push) at push number
 * `at`. With advance_s > 0 it runs on a clock of its own, advance_s ahead of the engine's: the
 * engine's process was stopped that long (its clock does not move, so it cannot renew its lease
 * meanwhile, as a stopped process cannot). */
typedef struct takeover {
    fx_t *f;
    int at;
    int64_t advance_s;
    fsa_sim_t *ahead; /* the other process's clock (advance_s > 0) */
    fsa_lockmgr_t *lm;
    fsa_lock_t lock;
    fsa_status_t st; /* of the acquisition; FSA_EINVAL until tried */
} takeover_t;

static void take_over(void *arg, int push)
{
    takeover_t *t = arg;
    if (push != t->at)
        return;
    fsa_port_t *port = t->f->port;
    if (t->advance_s > 0) {
        t->st = fsa_sim_new(12, port->wall_now(port->ctx), "other", &t->ahead);
        if (t->st != FSA_OK)
            return;
        fsa_port_t *other = fsa_sim_port(t->ahead);
        fsa_sim_advance(t->ahead, port->mono_now(port->ctx).ns - other->mono_now(other->ctx).ns +
                                      t->advance_s * FSA_NS_PER_S);
        port = other;
    }
    fsa_lockmgr_opts_t lo = {.label = "other-cycle"};
    char err[256];
    t->st = fsa_lockmgr_open(port, t->f->db, &lo, &t->lm, err, sizeof err);
    if (t->st == FSA_OK)
        t->st = fsa_lock_acquire(t->lm, FSA_LOCK_SYNC, "device", &t->lock, err, sizeof err);
}

static void takeover_end(takeover_t *t)
{
    char err[256];
    if (fsa_lock_held(&t->lock))
        assert_fsa_ok(fsa_lock_release(&t->lock, err, sizeof err));
    fsa_lockmgr_close(t->lm);
    fsa_sim_free(t->ahead);
}

/* A cycle stopped past its SYNC lease (a frozen process) and taken over meanwhile writes nothing
 * more: the server's answer to its push is not applied (the other cycle owns the ops now), and
 * it ends busy. Once the other is done, a sync applies them. */
static void test_fsa_engine_sync__taken_over_cycle_writes_nothing(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 2, NULL);
    takeover_t t = {.f = f, .at = 1, .advance_s = 121, .st = FSA_EINVAL};
    fsa_lock_init(&t.lock);
    f->srv.on_push = take_over;
    f->srv.on_push_arg = &t;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(engine(f, 0), &r);
    assert_fsa_ok(t.st); /* the lease had run out: taken over */
    assert_int_equal(st, FSA_EBUSY);
    assert_non_null(strstr(r.error, "lost the SYNC lock"));
    assert_int_equal(f->srv.pushes, 1);
    assert_int_equal(stats(f).pending, 2); /* the answer was not applied */
    takeover_end(&t);
    f->srv.on_push = NULL;
    assert_fsa_ok(fsa_engine_sync(f->e, &r));
    assert_int_equal(r.applied, 2);
    assert_int_equal(stats(f).pending, 0);
}

/* A Retry-After longer than the policy ever waits (200 s; DEFAULT's longest delay is 5 s) ends the
 * cycle at once: the SYNC lock is free meanwhile (the cycle used to sit on it, its lease kept, for
 * the whole wait), the wait is the persisted next attempt, so a stop or a restart keeps it, and
 * the sync after it applies what was pushed. */
static void test_fsa_engine_sync__a_long_retry_after_is_persisted_not_waited(void **state)
{
    fx_t *f = *state;
    record_tickets(f, 2, NULL);
    f->srv.push = PUSH_ERROR;
    f->srv.err_http = 503;
    f->srv.err_code = "unavailable";
    f->srv.err_message = "try later";
    f->srv.err_pushes = 1;
    f->srv.retry_after_s = 200;
    int64_t t0 = f->port->wall_now(f->port->ctx).ms;
    fsa_sync_report_t r;
    assert_int_equal(fsa_engine_sync(engine(f, 0), &r), FSA_ENET);
    assert_int_equal(f->srv.pushes, 1);
    assert_int_equal(r.retries, 0);
    assert_true(f->port->wall_now(f->port->ctx).ms - t0 < 5000);
    assert_true(sync_state(f).backoff.next_attempt_ms >= t0 + 200 * 1000);
    takeover_t t = {.f = f, .at = 0, .st = FSA_EINVAL}; /* another process takes the lock */
    fsa_lock_init(&t.lock);
    take_over(&t, 0);
    assert_fsa_ok(t.st);
    takeover_end(&t);
    assert_int_equal(fsa_engine_sync(f->e, &r), FSA_EBUSY); /* not before the server's time */
    assert_int_equal(f->srv.pushes, 1);
    fsa_sim_advance(f->sim, 201 * FSA_NS_PER_S);
    assert_fsa_ok(fsa_engine_sync(f->e, &r));
    assert_int_equal(r.applied, 2);
    assert_int_equal(f->srv.pushes, 2);
    assert_int_equal(stats(f).pending, 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_fsa_engine_sync__413_splits_batch_until_taken),
        T(test_fsa_engine_sync__413_single_op_is_parked),
        T(test_fsa_engine_sync__413_group_is_parked_whole),
        T(test_fsa_engine_sync__answer_over_the_device_limit_parks_saying_so),
        T(test_fsa_engine_sync__error_page_over_the_limit_is_its_status),
        T(test_fsa_engine_sync__400_malformed_quarantines_batch),
        T(test_fsa_engine_sync__400_other_keeps_ops),
        T(test_fsa_engine_sync__server_message_has_no_control_bytes),
        T(test_fsa_engine_sync__cancelled_while_waiting_sends_nothing_more),
        T(test_fsa_engine_sync__cancel_ends_a_request_never_answered),
        T(test_fsa_engine_sync__results_short_keeps_ops),
        T(test_fsa_engine_sync__results_wrong_op_keeps_ops),
        T(test_fsa_engine_sync__results_splitting_a_group_park_the_rest),
        T(test_fsa_engine_sync__results_not_json_keeps_ops),
        T(test_fsa_engine_sync__results_not_json_holds_next_batch),
        T(test_fsa_engine_sync__results_unreadable_with_next_batch_sent_keeps_ops),
        T(test_fsa_engine_sync__clock_skew_forever_stops),
        T(test_fsa_engine_sync__pull_pages_with_odd_cursor),
        T(test_fsa_engine_sync__conflict_judged_on_the_newest_state),
        T(test_fsa_engine_sync__transition_judged_on_its_own_answer),
        T(test_fsa_engine_sync__pull_cursor_stuck_fails),
        T(test_fsa_engine_sync__pulled_change_the_journal_refuses_is_named),
        T(test_fsa_engine_sync__pull_more_without_cursor_fails),
        T(test_fsa_engine_sync__pull_over_the_limit_fails),
        T(test_fsa_engine_sync__pull_cursor_loop_fails),
        T(test_fsa_engine_sync__pull_without_end_fails),
        T(test_fsa_engine_sync__pull_not_json_fails),
        T(test_fsa_engine_sync__cancelled_sends_nothing),
        T(test_fsa_engine_sync__sync_lock_held_is_busy),
        T(test_fsa_engine_sync__taken_over_cycle_writes_nothing),
        T(test_fsa_engine_sync__a_long_retry_after_is_persisted_not_waited),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
