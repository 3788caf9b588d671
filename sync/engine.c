/* fieldsync: the sync engine: push, results, conflicts, pull, retries and the persisted backoff. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port/alloc.h"
#include "port/limits.h"
#include "storage/lock.h"
#include "sync/codec.h"
#include "sync/engine.h"

/* Rounds of push + resolve in one cycle: a rebased op is pushed again at once, but a server that
 * keeps conflicting cannot keep the cycle going forever. */
#define PUSH_ROUNDS_MAX 4
/* Pull pages in one cycle, against a server whose `more` never ends. */
#define PULL_PAGES_MAX 100000
#ifdef FSA_FAULT_HOOKS
static _Atomic int pull_pages_max = PULL_PAGES_MAX;

void fsa__engine_pull_pages_max(int n)
{
    atomic_store(&pull_pages_max, n > 0 ? n : PULL_PAGES_MAX);
}
#define PULL_PAGES() atomic_load(&pull_pages_max)
#else
#define PULL_PAGES() PULL_PAGES_MAX
#endif
/* Conflicts examined per resolve pass. */
#define RESOLVE_BATCH 256
/* A group cut by the bound is left whole to the next pass (resolve_all): each pass must still
 * keep something to decide, or the conflicts after a cut group would never be. */
_Static_assert(RESOLVE_BATCH > FSA_JOURNAL_GROUP_MAX, "a resolve pass must hold a whole group");
/* Clock-skew corrections for one request, and fresh signatures sent at once after a replay
 * answer (more go through the retry policy). */
#define SKEW_RETRIES_MAX 2
#define RESIGN_AT_ONCE_MAX 1

struct fsa_engine {
    fsa_port_t *port;
    fsa_journal_t *j;
    fsa_transport_t *t;
    fsa_signer_key_t key;
    char device_id[FSA_ID_BYTES];
    fsa_engine_opts_t opts; /* pointers inside are not kept past new(), except policies */
    const fsa_retry_policy_t *retry;
    fsa_engine_status_fn status_fn;
    void *status_arg;
    atomic_int cancelled;
    int64_t retry_after_ms;      /* the last Retry-After of a failed cycle, for its backoff */
    fsa_lock_t *lock;            /* the SYNC lock held during a cycle (NULL with no_lock) */
    bool lock_lost;              /* taken over during this cycle (keep_lock said so once) */
    void (*app_tick)(void *arg); /* the transport's tick given to new(), run by engine_tick */
    void *app_tick_arg;
    fsa_sync_report_t *rep;
    fsa_sync_report_t scratch;
    int64_t depth; /* the queue depth for status events (notify) */
};

const char *fsa_engine_state_name(fsa_engine_state_t s)
{
    static const char names[][9] = {"idle", "pushing", "pulling", "retrying", "offline", "stopped"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "?";
}

static void report_error(fsa_engine_t *e, const char *fmt, ...) FSA_PRINTF(2, 3);
static void report_error(fsa_engine_t *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->rep->error, sizeof e->rep->error, fmt, ap);
    va_end(ap);
    fsa_log(e->port, FSA_LOG_WARN, "sync: %s", e->rep->error);
}

static void depth_refresh(fsa_engine_t *e);
static fsa_status_t keep_lock(fsa_engine_t *e);
static void engine_tick(void *arg);

static void notify(fsa_engine_t *e, fsa_engine_state_t state, const char *reason, fsa_status_t last)
{
    if (e->status_fn == NULL)
        return;
    /* While pushing, the depth counted down per batch (push_all); otherwise read now. */
    if (state != FSA_ENGINE_PUSHING)
        depth_refresh(e);
    fsa_engine_status_t s = {
        .state = state,
        .reason = reason,
        .queue_depth = e->depth,
        .pushed = e->rep->pushed,
        .last_error = last,
        .last_error_msg = e->rep->error,
    };
    /* The listener's own writes (a record, say) are not the cycle's: not under its fence. */
    const fsa_fence_t *fence = fsa_journal_fence_thread(NULL);
    e->status_fn(e->status_arg, &s);
    (void)fsa_journal_fence_thread(fence);
}

/* ---- signing and the clock offset ---- */

static fsa_status_t sign_cb(void *arg, const char *method, const char *path_and_query,
                            const void *wire_body, size_t wire_len, fsa_auth_headers_t *out)
{
    fsa_engine_t *e = arg;
    memset(out, 0, sizeof *out);
    snprintf(out->device_id, sizeof out->device_id, "%s", e->device_id);
    /* An uncorrected time (the offset unreadable: out of memory, an I/O error) would be refused
     * by the server as a clock skew, or worse teach the engine a wrong offset: the request fails
     * instead, with the reason. */
    fsa_wall_t now;
    fsa_status_t st = fsa_journal_now_checked(e->j, &now);
    if (st != FSA_OK)
        return st;
    snprintf(out->timestamp, sizeof out->timestamp, "%" PRId64, now.ms);
    st = fsa_signer_nonce(e->port, out->nonce);
    if (st == FSA_OK)
        st = fsa_signer_sign(&e->key, method, path_and_query, out->timestamp, out->nonce, wire_body,
                             wire_len, out->signature);
    return st;
}

/* offset = server_time - local_now, from every answer that carries server_time. */
static void learn_offset(fsa_engine_t *e, int64_t server_time_ms)
{
    if (server_time_ms <= 0)
        return;
    int64_t offset = server_time_ms - e->port->wall_now(e->port->ctx).ms;
    int64_t old = 0;
    if (fsa_journal_clock_offset_get(e->j, &old) != FSA_OK)
        return;
    /* Small jitter (network delay) is not worth a write per request. */
    if (offset - old > 1000 || old - offset > 1000) {
        if (fsa_journal_clock_offset_set(e->j, offset) == FSA_OK)
            fsa_log(e->port, FSA_LOG_INFO, "sync: clock offset to the server is now %" PRId64 " ms",
                    offset);
    }
}

/* ---- one request with the retry policy ---- */

typedef struct answer {
    fsa_http_response_t resp;
    fsa_errclass_t cls;
    fsa_model_err_t err; /* decoded error body, when any */
    fsa_status_t begun;  /* exchange_begin: how starting the first attempt went */
    bool in_flight;      /* exchange_begin started it; exchange_end not called yet */
} answer_t;

static uint64_t random64(fsa_engine_t *e)
{
    uint64_t r = 0;
    (void)e->port->random(e->port->ctx, &r, sizeof r);
    return r;
}

/* One attempt of a request: the one exchange_begin started, or a new one. Classifies the answer
 * in a->cls and learns the clock offset from an error body (its server time in *server_time, -1
 * when none). Returns the transport's status, except FSA_OK for an error answer over the device's
 * limit (its status classifies it, as for any error body not ours); FSA_ENOMEM and FSA_ETOOLARGE
 * end the exchange. */
static fsa_status_t attempt(fsa_engine_t *e, const char *method, const char *path, const char *body,
                            size_t len, answer_t *a, int64_t *server_time)
{
    fsa_status_t st;
    *server_time = -1;
    memset(&a->err, 0, sizeof a->err);
    if (a->in_flight) { /* the first attempt, started by exchange_begin */
        a->in_flight = false;
        st = a->begun == FSA_OK ? fsa_transport_end(e->t, &a->resp) : a->begun;
    } else {
        fsa_http_response_clear(&a->resp);
        st = fsa_transport_request(e->t, method, path, body, len, sign_cb, e, &a->resp);
    }
    if (st == FSA_OK)
        e->rep->last_http_status = a->resp.status;
    e->rep->bytes_sent += (int64_t)a->resp.wire_bytes_sent;
    e->rep->bytes_received += (int64_t)a->resp.wire_bytes_received;
    if (st == FSA_ENOMEM) {
        /* Our memory, not the network: no retry on the network's policy, and no backoff
         * persisted as if the server were away. The ops stay in flight, resent next cycle. */
        report_error(e, "out of memory during the %s %s request", method, path);
        return st;
    }
    if (st == FSA_ETOOLARGE && a->resp.status >= 300 && a->resp.status != 413) {
        /* An error answer over this device's limit (a proxy's page, a 5xx with a long body):
         * its status says what it is, as for any error answer whose body is not ours. Asking for
         * less is no cure for a server that is down. */
        memset(&a->err, 0, sizeof a->err);
        a->cls = fsa_errclass(FSA_OK, a->resp.status, "");
        return FSA_OK;
    }
    if (st == FSA_ETOOLARGE) {
        /* The answer is over this device's own limit (the transport stopped reading it):
         * asking again the same way would get the same answer, so no retry here; the caller
         * asks for less (PROTOCOL.md section 7, amendment 6). */
        a->cls = FSA_ERRCLASS_TOO_LARGE;
        return st;
    }
    if (st == FSA_OK && (a->resp.status < 200 || a->resp.status >= 300) && a->resp.body != NULL)
        if (fsa_codec_decode_error(a->resp.body, a->resp.body_len, &a->err, server_time) != FSA_OK)
            memset(&a->err, 0, sizeof a->err); /* not our error shape: the status decides */
    learn_offset(e, *server_time);
    a->cls = fsa_errclass(st, a->resp.status, a->err.code);
    return st;
}

/* Whether the cycle was cancelled (fsa_engine_cancel); the report then says so. A stop is asked
 * for, not a problem: logged as information. */
static bool cancelled(fsa_engine_t *e)
{
    if (!atomic_load(&e->cancelled))
        return false;
    snprintf(e->rep->error, sizeof e->rep->error, "cancelled");
    fsa_log(e->port, FSA_LOG_INFO, "sync: cancelled");
    return true;
}

/* After a transient failure or a 429/503 (st, a): waits as the retry policy b says, in slices so
 * that a cancel (SIGTERM in the daemon) is seen within 100 ms. Returns FSA_OK to try again, or
 * how the exchange ends: FSA_ETIMEOUT when cancelled, before the wait or during it (no request
 * after a cancel); st (FSA_ENET for an HTTP answer) when the retries ran out, or at once when the
 * server's Retry-After is longer than the policy's longest delay, the Retry-After kept for the
 * cycle's backoff. */
static fsa_status_t retry_wait(fsa_engine_t *e, fsa_backoff_t *b, const answer_t *a,
                               fsa_status_t st)
{
    if (cancelled(e))
        return FSA_ETIMEOUT;
    int64_t ra = a->resp.retry_after_ms > 0 ? a->resp.retry_after_ms * FSA_NS_PER_MS : 0;
    int64_t delay = 0;
    char what[160];
    if (st != FSA_OK)
        snprintf(what, sizeof what, "%.150s",
                 a->resp.error[0] ? a->resp.error : fsa_status_str(st));
    else
        snprintf(what, sizeof what, "server answered HTTP %d%s%s", a->resp.status,
                 a->err.code[0] ? " " : "", a->err.code);
    /* A wait longer than the policy ever waits is not waited out here: the cycle ends, and its
     * saved next attempt keeps the server's wish across a stop or a reboot (and frees the SYNC
     * lock and `status` meanwhile). */
    if (ra > b->policy->max_ns) {
        report_error(e, "%s (the server asks to wait %" PRId64 " s: the next attempt then)", what,
                     a->resp.retry_after_ms / 1000);
        e->retry_after_ms =
            a->resp.retry_after_ms > e->retry_after_ms ? a->resp.retry_after_ms : e->retry_after_ms;
        return st != FSA_OK ? st : FSA_ENET;
    }
    if (fsa_backoff_next(b, random64(e), ra, &delay) != FSA_OK) {
        report_error(e, "%s (gave up after %u retries, policy %s)", what, b->retries,
                     e->retry->name);
        /* The server's wish outlives this request: the cycle's backoff honours it. */
        if (a->resp.retry_after_ms > e->retry_after_ms)
            e->retry_after_ms = a->resp.retry_after_ms;
        return st != FSA_OK ? st : FSA_ENET;
    }
    e->rep->retries++;
    fsa_log(e->port, FSA_LOG_INFO, "sync: %s; retrying in %" PRId64 " ms", what,
            delay / FSA_NS_PER_MS);
    notify(e, FSA_ENGINE_RETRYING, what, st != FSA_OK ? st : FSA_ENET);
    /* The engine's tick runs here too, every half second, as while a request waits: a pause
     * may outlast the SYNC lease (a Retry-After of up to an hour), which the tick keeps. */
    for (int64_t since_tick = 0; delay > 0 && !atomic_load(&e->cancelled);) {
        int64_t slice = delay < 100 * FSA_NS_PER_MS ? delay : 100 * FSA_NS_PER_MS;
        e->port->sleep(e->port->ctx, slice);
        delay -= slice;
        since_tick += slice;
        if (since_tick >= FSA_NS_PER_S / 2) {
            since_tick = 0;
            engine_tick(e);
        }
    }
    if (cancelled(e))
        return FSA_ETIMEOUT;
    return keep_lock(e); /* no request sent under a lock taken over meanwhile */
}

/*
 * Sends one request, retrying transient failures and 429/503 with the engine's policy and
 * correcting the clock on clock_skew. Returns FSA_OK with a 2xx answer in *a; FSA_ETOOLARGE (413);
 * FSA_EAUTH (other 401); FSA_EREJECTED (400: a->err says why); FSA_ENET / FSA_ETIMEOUT /
 * FSA_ETLS when the retries ran out (a->resp.retry_after_ms kept for the cycle's backoff);
 * FSA_ETIMEOUT when cancelled.
 */
static fsa_status_t exchange_run(fsa_engine_t *e, const char *method, const char *path,
                                 const char *body, size_t len, answer_t *a)
{
    fsa_backoff_t b;
    fsa_backoff_init(&b, e->retry);
    int skews = 0, resigns = 0;
    for (;;) {
        int64_t server_time = -1;
        fsa_status_t st = attempt(e, method, path, body, len, a, &server_time);
        if (st == FSA_ENOMEM || st == FSA_ETOOLARGE)
            return st;
        switch (a->cls) {
        case FSA_ERRCLASS_NONE: return FSA_OK;
        case FSA_ERRCLASS_TOO_LARGE: return FSA_ETOOLARGE;
        case FSA_ERRCLASS_SKEW:
            if (++skews > SKEW_RETRIES_MAX || server_time <= 0) {
                report_error(e, "server keeps saying clock_skew: %s", a->err.message);
                return FSA_EAUTH;
            }
            continue; /* the offset is corrected: sign again at once */
        case FSA_ERRCLASS_RESIGN:
            /* libcurl resends a request by itself when a reused connection turns out dead; if
             * the server had read it, the copy carries a nonce it has seen. The server checks
             * the nonce before doing anything, and ops are idempotent: sign again and resend at
             * once; when that keeps happening (a network that keeps dropping answers), it is a
             * transient failure like any other and the retry policy paces it. */
            if (++resigns <= RESIGN_AT_ONCE_MAX)
                continue;
            break;
        case FSA_ERRCLASS_AUTH:
            report_error(e, "server refused this device (%s): %s", a->err.code, a->err.message);
            return FSA_EAUTH;
        case FSA_ERRCLASS_REJECTED:
            report_error(e, "server answered HTTP %d %s: %s", a->resp.status, a->err.code,
                         a->err.message);
            return FSA_EREJECTED;
        case FSA_ERRCLASS_TRANSIENT:
        case FSA_ERRCLASS_WAIT: break;
        }
        fsa_status_t end = retry_wait(e, &b, a, st);
        if (end != FSA_OK)
            return end;
    }
}

static fsa_status_t exchange(fsa_engine_t *e, const char *method, const char *path,
                             const char *body, size_t len, answer_t *a)
{
    a->in_flight = false;
    return exchange_run(e, method, path, body, len, a);
}

/* Starts the first attempt of exchange() and returns at once: the server works on it while the
 * engine does something else. body must stay valid until exchange_end, which must follow. */
static void exchange_begin(fsa_engine_t *e, const char *method, const char *path, const char *body,
                           size_t len, answer_t *a)
{
    memset(a, 0, sizeof *a);
    a->begun = fsa_transport_begin(e->t, method, path, body, len, sign_cb, e, &a->resp);
    a->in_flight = true;
}

/* Waits for the attempt exchange_begin started, then goes on as exchange() (retries etc.). */
static fsa_status_t exchange_end(fsa_engine_t *e, const char *method, const char *path,
                                 const char *body, size_t len, answer_t *a)
{
    return exchange_run(e, method, path, body, len, a);
}

/* Extends the SYNC lease before each request of a long cycle, and every half second while one
 * waits (engine_tick); a cycle whose lease was taken over stops (another cycle runs), and its
 * journal writes are refused anyway (the cycle's fence: fsa_engine_sync). */
static fsa_status_t keep_lock(fsa_engine_t *e)
{
    if (e->lock == NULL)
        return FSA_OK;
    if (e->lock_lost)
        return FSA_EBUSY;
    /* A renewal is a write on the journal: once a quarter of the lease has gone by is enough
     * (nobody can take a lease over before it runs out), not once per request. */
    int64_t now = e->port->mono_now(e->port->ctx).ns;
    if (now < e->lock->expires.ns - e->lock->lease_ns + e->lock->lease_ns / 4)
        return FSA_OK;
    char err[256];
    fsa_status_t st = fsa_lock_renew(e->lock, 0, err, sizeof err);
    if (st != FSA_OK) {
        report_error(e, "lost the SYNC lock: %s", err);
        if (st == FSA_ELOST)
            e->lock_lost = true;
        return st == FSA_ELOST ? FSA_EBUSY : st;
    }
    return FSA_OK;
}

/* The transport's tick, every half second on the thread that waits for an answer, and
 * retry_wait's: keeps the SYNC lease, then runs the app's tick, whose writes are its own (not
 * under the cycle's fence). */
static void engine_tick(void *arg)
{
    fsa_engine_t *e = arg;
    (void)keep_lock(e); /* a loss is seen again before the next request, and fences the writes */
    if (e->app_tick != NULL) {
        const fsa_fence_t *fence = fsa_journal_fence_thread(NULL);
        e->app_tick(e->app_tick_arg);
        (void)fsa_journal_fence_thread(fence);
    }
}

/* ---- push ---- */

static void count_outcome(fsa_engine_t *e, fsa_result_status_t s)
{
    switch (s) {
    case FSA_RESULT_APPLIED: e->rep->applied++; break;
    case FSA_RESULT_DUPLICATE: e->rep->duplicate++; break;
    case FSA_RESULT_CONFLICT: e->rep->conflict++; break;
    default: e->rep->rejected++; break;
    }
}

/* Parks the ops of a batch the server can never take, with a local reason. */
static fsa_status_t park_batch(fsa_engine_t *e, const fsa_op_t *ops, size_t n, const char *code,
                               const char *message)
{
    fsa_op_result_t *r = fsa_calloc(n, sizeof *r);
    if (r == NULL)
        return FSA_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        memcpy(r[i].op_id, ops[i].op_id, sizeof r[i].op_id);
        r[i].status = FSA_RESULT_REJECTED;
        snprintf(r[i].code, sizeof r[i].code, "%s", code);
        snprintf(r[i].message, sizeof r[i].message, "%s", message);
        e->rep->rejected++;
    }
    fsa_status_t st = fsa_outbox_apply_results(e->j, r, n);
    fsa_free(r);
    return st;
}

/* Reads a 200 answer's results, which must answer the batch's ops in order: *res (count n) for
 * fsa_outbox_apply_batch, freed with fsa_codec_results_free. */
static fsa_status_t read_answer(fsa_engine_t *e, const fsa_op_t *ops, size_t n, const answer_t *a,
                                fsa_op_result_t **res)
{
    size_t count = 0;
    int64_t server_time = 0;
    *res = NULL;
    fsa_status_t st =
        fsa_codec_decode_results(a->resp.body, a->resp.body_len, res, &count, &server_time);
    if (st == FSA_ENOMEM) { /* not the server's fault: the ops stay in flight, resent later */
        report_error(e, "out of memory reading the results answer");
        return st;
    }
    if (st == FSA_ETOOLARGE) {
        /* Over this device's bounds on an answer (its JSON values): the batch is split, as for
         * a 413, so that the answers shrink (one op's answer always fits). */
        fsa_log(e->port, FSA_LOG_INFO,
                "sync: a results answer is over this device's limits: "
                "the batch is split");
        return st;
    }
    if (st != FSA_OK) {
        report_error(e, "server sent a malformed results answer (%s)", fsa_status_str(st));
        return FSA_EPROTO;
    }
    learn_offset(e, server_time);
    if (count != n) {
        report_error(e, "server answered %zu results for %zu ops", count, n);
        st = FSA_EPROTO;
    }
    for (size_t i = 0; st == FSA_OK && i < n; i++) {
        if (strcmp((*res)[i].op_id, ops[i].op_id) != 0) {
            report_error(e, "server answered op %s where %s was sent", (*res)[i].op_id,
                         ops[i].op_id);
            st = FSA_EPROTO;
        }
    }
    /* PROTOCOL.md section 2: a group applies all or nothing. An answer that applies part of one
     * cannot be undone here: the applied ops are the server's now. Its other ops are parked,
     * rejected with the reason, not resolved: a rebase would send them alone, splitting the
     * group further. Refusing the answer instead kept the whole group in the outbox, and a
     * server answers it again with the same outcomes (its op log), so every later op waited for
     * good. A batch holds a group whole, its ops one after another. */
    for (size_t i = 0, k; st == FSA_OK && i < n; i = k) {
        size_t applied = fsa_op_result_applied(&(*res)[i]);
        for (k = i + 1; ops[i].group[0] != '\0' && k < n && strcmp(ops[k].group, ops[i].group) == 0;
             k++)
            applied += fsa_op_result_applied(&(*res)[k]);
        if (applied == 0 || applied == k - i)
            continue;
        fsa_log(e->port, FSA_LOG_WARN,
                "sync: the server applied %zu of the %zu ops of group %s, which is all or "
                "nothing: the others are parked",
                applied, k - i, ops[i].group);
        for (size_t m = i; m < k; m++) {
            fsa_op_result_t *r = &(*res)[m];
            if (fsa_op_result_applied(r))
                continue;
            char op_id[FSA_OP_ID_BYTES];
            memcpy(op_id, r->op_id, sizeof op_id);
            fsa_codec_result_clear(r);
            memcpy(r->op_id, op_id, sizeof op_id);
            r->status = FSA_RESULT_REJECTED;
            snprintf(r->code, sizeof r->code, "group_split");
            snprintf(r->message, sizeof r->message,
                     "the server applied %zu of the %zu ops of this op's group, which is all or "
                     "nothing; this one was not applied",
                     applied, k - i);
        }
    }
    if (st != FSA_OK) {
        fsa_codec_results_free(*res, count);
        *res = NULL;
        return st;
    }
    for (size_t i = 0; i < n; i++)
        count_outcome(e, (*res)[i].status); /* the server's answer: a duplicate counts as one */
    return FSA_OK;
}

static void path_for(fsa_engine_t *e, char *buf, size_t cap, const char *tail)
{
    snprintf(buf, cap, "/v1/devices/%s/%s", e->device_id, tail);
}

/* One batch: its ops (max_ops room) and its encoded body. */
typedef struct batch {
    fsa_op_t *ops;
    size_t n;
    char *body;
    size_t len;
    bool single; /* one op or one group: cannot be split */
    answer_t a;
} batch_t;

static void batch_clear(batch_t *b)
{
    fsa_codec_free(b->body);
    b->body = NULL;
    b->len = 0;
    for (size_t i = 0; i < b->n; i++)
        fsa_op_clear(&b->ops[i]);
    b->n = 0;
    fsa_http_response_clear(&b->a.resp);
}

/* Reads the batch after seq after_seq and encodes it; FSA_OK with b->n 0 when nothing is left;
 * FSA_ETOOLARGE when it cannot be encoded within the protocol's limits (b->ops kept). */
static fsa_status_t batch_read(fsa_engine_t *e, int64_t after_seq, size_t max_bytes, batch_t *b)
{
    fsa_status_t st = fsa_outbox_next_batch_after(e->j, after_seq, b->ops, e->opts.batch_max_ops,
                                                  max_bytes, &b->n);
    if (st != FSA_OK || b->n == 0)
        return st;
    b->single = b->n == 1 || (b->ops[0].group[0] != '\0' &&
                              strcmp(b->ops[0].group, b->ops[b->n - 1].group) == 0);
    char batch_id[FSA_UUID_STR_LEN];
    st = fsa_uuid4(e->port, batch_id);
    if (st == FSA_OK)
        st = fsa_codec_encode_push(batch_id, b->ops, b->n, &b->body, &b->len);
    return st;
}

/* The queue depth the status events show: read once per push, then counted down as batches are
 * answered, instead of counting the outbox after every batch. */
static void depth_refresh(fsa_engine_t *e)
{
    fsa_outbox_stats_t os = {0};
    e->depth = fsa_outbox_stats(e->j, &os) == FSA_OK ? os.pending : -1;
}

/* Waits for a request in flight whose answer nobody will read (the cycle is ending). */
static void batch_abandon(fsa_engine_t *e, batch_t *b)
{
    if (b->a.in_flight) {
        b->a.in_flight = false;
        /* Its ops stay in flight in the journal and are resent next cycle (idempotent). */
        fsa_status_t ignored = b->a.begun == FSA_OK ? fsa_transport_end(e->t, &b->a.resp) : FSA_OK;
        (void)ignored;
    }
    batch_clear(b);
}

/* Sends a batch read and marked in flight; its answer is read by exchange_end. */
static void batch_send(fsa_engine_t *e, const char *path, batch_t *b)
{
    char reason[64];
    snprintf(reason, sizeof reason, "pushing %zu ops", b->n);
    notify(e, FSA_ENGINE_PUSHING, reason, FSA_OK);
    exchange_begin(e, "POST", path, b->body, b->len, &b->a);
    if (b->a.begun == FSA_OK && fsa_transport_last_compressed_ahead(e->t))
        e->rep->compressed_ahead++;
}

/* What push_head did with the head of the queue. */
typedef enum head { HEAD_SENT, HEAD_EMPTY, HEAD_AGAIN } head_t;

/* Nothing is on the wire: reads the batch at the head of the queue into cur and sends it.
 * *out: HEAD_SENT; HEAD_EMPTY when nothing is left; HEAD_AGAIN when the batch was too large to
 * encode and *max_bytes was halved, or it was parked (cur cleared: read the head again). */
static fsa_status_t push_head(fsa_engine_t *e, const char *path, size_t *max_bytes, batch_t *cur,
                              head_t *out)
{
    *out = HEAD_AGAIN;
    fsa_status_t st = batch_read(e, 0, *max_bytes, cur);
    if (st == FSA_OK && cur->n == 0) {
        *out = HEAD_EMPTY;
        return FSA_OK;
    }
    if (st == FSA_ETOOLARGE && !cur->single) {
        *max_bytes = *max_bytes / 2 > FSA_LIMIT_ENGINE_BATCH_BYTES_MIN
                         ? *max_bytes / 2
                         : FSA_LIMIT_ENGINE_BATCH_BYTES_MIN;
        batch_clear(cur);
        return FSA_OK;
    }
    if (st == FSA_ETOOLARGE)
        st = park_batch(e, cur->ops, cur->n, "too_large", "op is larger than a request may be");
    if (st == FSA_OK && cur->body == NULL) { /* parked */
        batch_clear(cur);
        return FSA_OK;
    }
    if (st == FSA_OK)
        st = keep_lock(e);
    if (st == FSA_OK)
        st = fsa_outbox_mark_inflight(e->j, cur->ops, cur->n);
    if (st != FSA_OK)
        return st;
    batch_send(e, path, cur);
    *out = HEAD_SENT;
    return FSA_OK;
}

/* The server refused batch b with st: a 413 splits it (*max_bytes), or parks it when it cannot
 * be split; a 400 malformed parks it. Returns st for anything else, FSA_OK when handled. */
static fsa_status_t push_refused(fsa_engine_t *e, const batch_t *b, fsa_status_t st,
                                 size_t *max_bytes)
{
    if (st == FSA_ETOOLARGE) {
        /* 413, or a 2xx answer over this device's limits: split; a batch that cannot be split
         * any more can never be sent. No floor on the halving: a server whose limit holds fewer
         * ops than a floor's worth would be sent the same batch forever. The outbox always
         * returns the first op (or group) whole, so the batches shrink to one op or group,
         * which is then parked, saying which side refused: an answer this device could not
         * read may have applied the op (the server answers it the same way every time). */
        if (b->single && b->a.resp.status == 413)
            return park_batch(e, b->ops, b->n, "too_large", "the server says the op is too large");
        if (b->single)
            return park_batch(e, b->ops, b->n, "answer_too_large",
                              "the server's answer to this op is over this device's limits: "
                              "the server may have applied it (a pull shows its state)");
        *max_bytes = b->len / 2 > 0 ? b->len / 2 : 1;
        return FSA_OK;
    }
    if (st == FSA_EREJECTED && strcmp(b->a.err.code, "malformed") == 0) {
        /* 400 malformed: the server cannot read this batch; resending it as is cannot
         * help (PROTOCOL.md section 3): quarantine it, visibly. Any other 400 fails the
         * cycle and keeps the ops. */
        char msg[FSA_CODEC_MESSAGE_BYTES + 48];
        snprintf(msg, sizeof msg, "batch refused by the server: %s", b->a.err.message);
        return park_batch(e, b->ops, b->n, "malformed", msg);
    }
    return st;
}

/* Whether a's body names op (the batch's last) by its quoted id. The server's answer to a batch
 * names every op of it; a 200 from something else on the path (a captive portal, a proxy's or a
 * firewall's page) names none. Searched from the end, where the last op's result is. */
static bool answer_names(const answer_t *a, const fsa_op_t *op)
{
    size_t n = strlen(op->op_id);
    const char *b = a->resp.body;
    if (b == NULL || n == 0 || a->resp.body_len < n + 2)
        return false;
    for (const char *p = b + a->resp.body_len - (n + 2);; p--) {
        if (p[0] == '"' && p[n + 1] == '"' && memcmp(p + 1, op->op_id, n) == 0)
            return true;
        if (p == b)
            return false;
    }
}

/* cur is on the wire: waits for its answer and applies it. nxt (read meanwhile; n 0 when there
 * was none to read) is sent as soon as the answer is known to be the server's, before its results
 * are read. */
static fsa_status_t push_answer(fsa_engine_t *e, const char *path, batch_t *cur, batch_t *nxt,
                                size_t *max_bytes)
{
    fsa_status_t st = exchange_end(e, "POST", path, cur->body, cur->len, &cur->a);
    e->rep->batches++;
    /* A 2xx answer that names cur's last op says the server is done with cur: nxt goes before
     * cur's results are decoded, so that the server is not idle while they are. Should they turn
     * out unreadable, nxt's answer is awaited and dropped (push_all), and its ops are sent again:
     * the server answers a known op id with its first result. A 2xx that does not name it may
     * not come from the server at all: nxt would then reach the server before cur's ops, which
     * the ops after them may need (a transition after its create). It waits for the decode. */
    if (st == FSA_OK && nxt->n > 0 && answer_names(&cur->a, &cur->ops[cur->n - 1])) {
        st = keep_lock(e);
        if (st == FSA_OK)
            batch_send(e, path, nxt);
    }
    fsa_op_result_t *res = NULL;
    if (st == FSA_OK)
        st = read_answer(e, cur->ops, cur->n, &cur->a, &res);
    if (st == FSA_OK) {
        /* Applies cur's answer and marks nxt, already on its way, in flight. */
        st = fsa_outbox_apply_batch(e->j, cur->ops, res, cur->n, nxt->ops,
                                    nxt->a.in_flight ? nxt->n : 0);
        if (st == FSA_OK) {
            e->rep->pushed += (int64_t)cur->n;
            if (e->depth >= (int64_t)cur->n)
                e->depth -= (int64_t)cur->n;
        }
    } else {
        /* nxt on its way all the same: its ops show as sent, as cur's do (best effort: they
         * are sent again either way). */
        if (nxt->a.in_flight) {
            fsa_status_t ignored = fsa_outbox_mark_inflight(e->j, nxt->ops, nxt->n);
            (void)ignored;
        }
        st = push_refused(e, cur, st, max_bytes);
    }
    fsa_codec_results_free(res, res != NULL ? cur->n : 0);
    return st;
}

/*
 * Pushes everything pending. While the server works on one batch, the next is read and encoded,
 * and once an answer is in that names the batch's last op, the next is sent before its results
 * are read and applied: the journal's work and the server's overlap. Batches still go one at a
 * time, in seq order: the next is sent only after the server's answer to the one before it.
 */
static fsa_status_t push_all(fsa_engine_t *e)
{
    size_t max_bytes = e->opts.batch_max_bytes;
    batch_t cur = {0}, nxt = {0};
    cur.ops = fsa_calloc(e->opts.batch_max_ops, sizeof *cur.ops);
    nxt.ops = fsa_calloc(e->opts.batch_max_ops, sizeof *nxt.ops);
    if (cur.ops == NULL || nxt.ops == NULL) {
        fsa_free(cur.ops);
        fsa_free(nxt.ops);
        return FSA_ENOMEM;
    }
    char path[FSA_ID_BYTES + 32];
    path_for(e, path, sizeof path, "ops");
    depth_refresh(e);
    fsa_status_t st = FSA_OK;
    while (st == FSA_OK) {
        if (cancelled(e)) {
            st = FSA_ETIMEOUT;
            break;
        }
        if (!cur.a.in_flight) {
            head_t head;
            st = push_head(e, path, &max_bytes, &cur, &head);
            if (st != FSA_OK || head == HEAD_EMPTY)
                break;
            if (head == HEAD_AGAIN)
                continue;
        }
        /* cur is on the wire: read the next batch meanwhile. Anything but a plain batch is left
         * to push_head, once nothing is in flight. */
        fsa_status_t ahead = batch_read(e, cur.ops[cur.n - 1].seq, max_bytes, &nxt);
        if (ahead != FSA_OK || nxt.body == NULL)
            batch_clear(&nxt);
        /* ... and compress it: once cur's answer is in, the server waits for nxt until it is
         * sent (fsa_transport_compress_ahead; when it fails otherwise, the send compresses it
         * itself). */
        if (nxt.body != NULL &&
            fsa_transport_compress_ahead(e->t, nxt.body, nxt.len) == FSA_ENOMEM) {
            ahead = FSA_ENOMEM;
            batch_clear(&nxt);
        }
        st = push_answer(e, path, &cur, &nxt, &max_bytes);
        batch_clear(&cur);
        if (st == FSA_OK && ahead == FSA_ENOMEM) {
            /* Out of memory reading ahead: cur's answer is in, and the cycle ends there, as on
             * any allocation that fails (the next batch is read again next cycle), rather than
             * read it again now as if nothing had happened. */
            report_error(e, "out of memory reading the next batch");
            st = FSA_ENOMEM;
        }
        if (st != FSA_OK || !nxt.a.in_flight) {
            batch_abandon(e, &nxt);
            continue;
        }
        /* nxt becomes cur, still in flight. */
        batch_t t = cur;
        cur = nxt;
        nxt = t;
        memset(&nxt.a, 0, sizeof nxt.a);
    }
    if (cur.a.in_flight)
        batch_abandon(e, &cur);
    batch_clear(&cur);
    batch_clear(&nxt);
    fsa_free(cur.ops);
    fsa_free(nxt.ops);
    return st;
}

/* ---- conflicts ---- */

typedef struct pending_conflict {
    fsa_op_t op;
    fsa_result_status_t outcome;
    char *prior;
    int64_t server_version;
    char *server_fields;
    fsa_conflict_decision_t decided; /* its group's, taken before: see collect_t */
} pending_conflict_t;

/*
 * The undecided conflicts of a resolve pass. A group is decided as a whole in one transaction
 * (fsa_conflict_set_decision); a build before that decided member by member, and a crash between
 * two left a group half decided. Its undecided members, judged alone, could rebase (a merge
 * does), and a rebase records the whole group again: the member decided "server wins" too, over
 * someone else's change. So an undecided member takes its group's decision when one of its
 * members has one: a group's members are listed one after another (recorded in one transaction,
 * listed by seq), and the last decided member seen is kept here.
 */
typedef struct collect {
    pending_conflict_t *items;
    size_t n, cap;
    bool oom;
    bool cut; /* the last item's group goes on past cap */
    char decided_group[FSA_GROUP_BYTES];
    fsa_conflict_decision_t decided;
} collect_t;

static bool collect_cb(void *arg, const fsa_conflict_t *c)
{
    collect_t *col = arg;
    if (c->decision != FSA_DECISION_NONE) { /* decided before: waits for a person */
        if (c->op.group[0] != '\0') {
            memcpy(col->decided_group, c->op.group, sizeof col->decided_group);
            col->decided = c->decision;
            for (size_t k = col->n; k > 0 && strcmp(col->items[k - 1].op.group, c->op.group) == 0;
                 k--)
                col->items[k - 1].decided = c->decision;
        }
        return true;
    }
    if (col->n == col->cap) {
        /* A group's ops are recorded in one transaction, so their seqs follow one another: only
         * the last item's group can go on past the bound, and only into this first conflict. */
        col->cut =
            c->op.group[0] != '\0' && strcmp(c->op.group, col->items[col->n - 1].op.group) == 0;
        return false;
    }
    pending_conflict_t *p = &col->items[col->n];
    memset(p, 0, sizeof *p);
    if (fsa_op_copy(&p->op, &c->op) != FSA_OK) {
        col->oom = true;
        return false;
    }
    p->outcome = c->outcome;
    p->server_version = c->server_version;
    p->decided = c->op.group[0] != '\0' && strcmp(c->op.group, col->decided_group) == 0
                     ? col->decided
                     : FSA_DECISION_NONE;
    p->prior = c->prior_fields != NULL ? fsa_strdup(c->prior_fields) : NULL;
    p->server_fields = c->server_fields != NULL ? fsa_strdup(c->server_fields) : NULL;
    col->n++; /* collect_free() releases what it holds, also when a copy failed */
    /* A missing copy would read as "the server's state is unknown" and park the op for good. */
    if ((c->prior_fields != NULL && p->prior == NULL) ||
        (c->server_fields != NULL && p->server_fields == NULL)) {
        col->oom = true;
        return false;
    }
    return true;
}

static void collect_free(collect_t *col)
{
    for (size_t i = 0; i < col->n; i++) {
        fsa_op_clear(&col->items[i].op);
        fsa_free(col->items[i].prior);
        fsa_free(col->items[i].server_fields);
    }
    fsa_free(col->items);
}

/*
 * Judges a set on the newest server state this device knows: the entity's base, when it is newer
 * than the state its conflict was answered with. A later answer (another op's conflict on the
 * entity, an applied op) or a pull may have moved it on since. Judged on the older state, a set
 * whose fields the server had not changed then is rebased onto the newer base, whose version the
 * server takes, over a change made to those very fields in between that nobody saw. The cycle holds
 * the SYNC lock: no other writer moves a base between this read and the rebase.
 * Only a set: the other verdicts say what the server's state was when it refused the op (a
 * transition whose target it had reached converged then, whatever came after), and a merge, an
 * increment or an append is sent again whatever the state.
 */
static fsa_status_t judge_on_newest(fsa_engine_t *e, pending_conflict_t *p)
{
    /* A rejection is parked whatever the state; a conflict answered without the state (the
     * server did not show it) stays unknown. */
    if (p->op.kind != FSA_OP_SET || p->outcome != FSA_RESULT_CONFLICT || p->server_fields == NULL)
        return FSA_OK;
    char *fields = NULL;
    int64_t version = 0;
    fsa_status_t st = fsa_journal_get_base(e->j, p->op.type, p->op.id, &fields, &version);
    if (st == FSA_ENOTFOUND)
        return FSA_OK; /* never on the server: the answer's state is all there is */
    if (st != FSA_OK)
        return st;
    if (version > p->server_version && fields != NULL) {
        fsa_free(p->server_fields);
        p->server_fields = fields;
        p->server_version = version;
        return FSA_OK;
    }
    fsa_model_free(fields);
    return FSA_OK;
}

/* Applies DESIGN.md's table to every undecided conflict. *rebased counts ops sent again. */
static fsa_status_t resolve_all(fsa_engine_t *e, int64_t *rebased)
{
    *rebased = 0;
    collect_t col = {.cap = RESOLVE_BATCH};
    col.items = fsa_calloc(col.cap, sizeof *col.items);
    if (col.items == NULL)
        return FSA_ENOMEM;
    fsa_status_t st = fsa_conflicts_each(e->j, false, collect_cb, &col);
    if (st == FSA_OK && col.oom)
        st = FSA_ENOMEM;
    /* A group is judged from all its members and the verdict taken for all of them
     * (fsa_conflict_resolve): one cut by the bound is left to the next pass, which finds it first
     * and whole. What stays is not empty (RESOLVE_BATCH > FSA_JOURNAL_GROUP_MAX). */
    if (st == FSA_OK && col.cut) {
        char group[FSA_GROUP_BYTES];
        memcpy(group, col.items[col.n - 1].op.group, sizeof group);
        while (col.n > 0 && strcmp(col.items[col.n - 1].op.group, group) == 0) {
            pending_conflict_t *p = &col.items[--col.n];
            fsa_op_clear(&p->op);
            fsa_free(p->prior);
            fsa_free(p->server_fields);
        }
    }
    for (size_t i = 0; st == FSA_OK && i < col.n; i++)
        st = judge_on_newest(e, &col.items[i]);
    bool *done = fsa_calloc(col.n + 1, sizeof *done);
    if (done == NULL)
        st = FSA_ENOMEM;
    for (size_t i = 0; st == FSA_OK && i < col.n; i++) {
        if (done[i])
            continue;
        /* A group is decided as a whole, from all its members collected here. */
        fsa_resolver_input_t in[FSA_JOURNAL_GROUP_MAX];
        size_t m = 0;
        for (size_t k = i; k < col.n && m < FSA_JOURNAL_GROUP_MAX; k++) {
            bool member = k == i || (col.items[i].op.group[0] != '\0' &&
                                     strcmp(col.items[k].op.group, col.items[i].op.group) == 0);
            if (!member || done[k])
                continue;
            done[k] = true;
            pending_conflict_t *p = &col.items[k];
            in[m++] = (fsa_resolver_input_t){&p->op, p->outcome, p->prior, p->server_version,
                                             p->server_fields};
        }
        char why[256];
        fsa_resolution_t r;
        if (col.items[i].decided != FSA_DECISION_NONE) {
            r = col.items[i].decided == FSA_DECISION_SERVER_WINS ? FSA_RESOLVE_SERVER_WINS
                                                                 : FSA_RESOLVE_PARK;
            snprintf(why, sizeof why, "its group was decided so before");
        } else {
            r = m == 1 ? fsa_resolve(e->opts.resolver, &in[0], why, sizeof why)
                       : fsa_resolve_group(e->opts.resolver, in, m, why, sizeof why);
        }
        const char *op_id = col.items[i].op.op_id;
        fsa_rec_t rec;
        fsa_log(e->port, FSA_LOG_INFO, "sync: %s %s %s: %s (%s)",
                fsa_op_kind_name(col.items[i].op.kind), fsa_type_name(col.items[i].op.type),
                col.items[i].op.id, fsa_resolution_name(r), why);
        switch (r) {
        case FSA_RESOLVE_REBASE:
            st = fsa_conflict_resolve(e->j, op_id, true, FSA_RESOLVED_REBASED, &rec);
            if (st == FSA_OK) {
                e->rep->rebased += (int64_t)m;
                *rebased += (int64_t)m;
            } else if (st != FSA_ENOMEM && st != FSA_EIO && st != FSA_EBUSY && st != FSA_EFULL) {
                /* The op no longer makes sense on the server's state: leave it to a person. */
                fsa_log(e->port, FSA_LOG_WARN, "sync: cannot rebase %s: %s", op_id, rec.error);
                st = fsa_conflict_set_decision(e->j, op_id, FSA_DECISION_PARK); /* the group's */
                e->rep->parked += (int64_t)m;
            }
            break;
        case FSA_RESOLVE_CONVERGED:
            st = fsa_conflict_resolve(e->j, op_id, false, FSA_RESOLVED_CONVERGED, NULL);
            e->rep->converged += (int64_t)m;
            break;
        case FSA_RESOLVE_SERVER_WINS: /* the group's, in one transaction */
            st = fsa_conflict_set_decision(e->j, op_id, FSA_DECISION_SERVER_WINS);
            e->rep->server_wins += (int64_t)m;
            break;
        case FSA_RESOLVE_PARK:
            st = fsa_conflict_set_decision(e->j, op_id, FSA_DECISION_PARK);
            e->rep->parked += (int64_t)m;
            break;
        case FSA_RESOLVE_RETRY: /* undecided, left open: decided again at the next sync */
            st = FSA_ENOMEM;
            break;
        }
        /* A person (fieldsync conflicts resolve) may have closed it meanwhile: nothing to do. */
        if (st == FSA_ENOTFOUND)
            st = FSA_OK;
    }
    fsa_free(done);
    collect_free(&col);
    return st;
}

/* ---- pull ---- */

/* Percent-encodes an opaque cursor for a query string. */
static bool url_encode(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        bool plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                     (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~';
        if (o + (plain ? 1 : 3) >= cap)
            return false;
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return true;
}

/* Room for the path of a pull request: the encoded cursor, the query and the device's prefix. */
#define PULL_PATH_BYTES (3 * FSA_CODEC_CURSOR_BYTES + 1 + 64 + FSA_ID_BYTES + 32)

/* The path that asks for the changes after cursor (NULL: from the start), at most limit. */
static fsa_status_t pull_path(fsa_engine_t *e, const char *cursor, size_t limit, char *path,
                              size_t cap)
{
    char enc[3 * FSA_CODEC_CURSOR_BYTES + 1] = "";
    if (cursor != NULL && !url_encode(cursor, enc, sizeof enc)) {
        report_error(e, "stored pull cursor is too long");
        return FSA_EPROTO;
    }
    char tail[sizeof enc + 64];
    if (cursor != NULL)
        snprintf(tail, sizeof tail, "changes?since=%s&limit=%zu", enc, limit);
    else
        snprintf(tail, sizeof tail, "changes?limit=%zu", limit);
    path_for(e, path, cap, tail);
    return FSA_OK;
}

/* Reads a pull answer into *pull (freed with fsa_codec_pull_free, also on failure). */
static fsa_status_t pull_decode(fsa_engine_t *e, const answer_t *a, fsa_codec_pull_t *pull)
{
    fsa_status_t st = fsa_codec_decode_pull(a->resp.body, a->resp.body_len, pull);
    if (st == FSA_ENOMEM) {
        report_error(e, "out of memory reading the pull answer");
    } else if (st == FSA_ETOOLARGE) {
        /* Over this device's bounds on an answer (its JSON values): asked for again smaller. */
        fsa_log(e->port, FSA_LOG_INFO, "sync: a pull answer is over this device's limits");
    } else if (st != FSA_OK) {
        report_error(e, "server sent a malformed pull answer");
        st = FSA_EPROTO;
    }
    return st;
}

/* Folds a page's changes into the journal and stores the cursor after them (cursor: the one the
 * page was asked for with). */
static fsa_status_t pull_fold(fsa_engine_t *e, const char *cursor, const fsa_codec_pull_t *pull)
{
    fsa_status_t st = FSA_OK;
    for (size_t i = 0; st == FSA_OK && i < pull->count; i++) {
        const fsa_codec_change_t *c = &pull->changes[i];
        /* An entity that left this device's scope is dropped, unless ops of ours are still
         * on it (the journal keeps it then: nothing recorded is lost). */
        if (c->gone)
            st = fsa_journal_gone(e->j, c->type, c->id, c->version, NULL);
        else
            st = fsa_journal_fold(e->j, c->type, c->id, c->version, c->fields);
        if (st == FSA_OK) {
            e->rep->pulled++;
        } else if (st == FSA_EINVAL) {
            /* What the decoder let through but the journal refuses (fields past the entity's
             * limits, a version out of range): the server's doing. Named, so that a person can
             * find it; the cursor stays before it, so nothing after it is skipped. */
            report_error(e, "server sent %s %s at version %" PRId64 " that this journal refuses",
                         fsa_type_name(c->type), c->id, c->version);
            st = FSA_EPROTO;
        }
    }
    if (st != FSA_OK)
        return st;
    learn_offset(e, pull->server_time_ms);
    /* A page that says more follow names where they start (PROTOCOL.md section 4: the cursor only
     * moves forward): asked again from the same place, the same page would come back for good. */
    if (pull->more && pull->cursor[0] == '\0') {
        report_error(e, "server's pull answer says more changes follow but gives no cursor");
        return FSA_EPROTO;
    }
    if (pull->more && cursor != NULL && strcmp(cursor, pull->cursor) == 0) {
        report_error(e, "server's pull cursor did not move");
        return FSA_EPROTO;
    }
    if (pull->cursor[0] != '\0')
        return fsa_journal_cursor_set(e->j, pull->cursor);
    return FSA_OK;
}

static fsa_status_t pull_all(fsa_engine_t *e)
{
    fsa_status_t st = FSA_OK;
    /* Amendment 6: an answer over this device's limit is asked for again with half the limit,
     * down to 1 change; the smaller limit stays for the rest of this pull. */
    size_t limit = e->opts.pull_limit;
    /* A cursor that comes back (A, B, A, ...) is a loop: the cursor only moves forward. Found in
     * constant memory (Brent's way): the cursor of pages 1, 2, 4, 8, ... is kept, and every later
     * one compared with it; a loop is found within about twice its length and what led to it. */
    char kept[FSA_CODEC_CURSOR_BYTES] = "";
    int keep_at = 1;
    const int pages = PULL_PAGES();
    for (int page = 0; page < pages && st == FSA_OK; page++) {
        if (cancelled(e))
            return FSA_ETIMEOUT;
        st = keep_lock(e);
        if (st != FSA_OK)
            return st;
        char *cursor = NULL;
        st = fsa_journal_cursor_get(e->j, &cursor);
        if (st != FSA_OK)
            return st;
        char path[PULL_PATH_BYTES];
        st = pull_path(e, cursor, limit, path, sizeof path);
        if (st != FSA_OK) {
            fsa_model_free(cursor);
            return st;
        }
        notify(e, FSA_ENGINE_PULLING, "pulling changes", FSA_OK);
        answer_t a;
        memset(&a, 0, sizeof a);
        st = exchange(e, "GET", path, NULL, 0, &a);
        fsa_codec_pull_t pull;
        memset(&pull, 0, sizeof pull);
        if (st == FSA_OK)
            st = pull_decode(e, &a, &pull); /* FSA_ETOOLARGE too: over this device's bounds */
        if (st == FSA_ETOOLARGE)
            fsa_codec_pull_free(&pull);
        if (st == FSA_ETOOLARGE && limit > 1) {
            fsa_http_response_clear(&a.resp);
            fsa_model_free(cursor);
            limit /= 2;
            st = FSA_OK;
            page--; /* the same page again, smaller: at most log2(pull_limit) times */
            continue;
        }
        if (st == FSA_ETOOLARGE) {
            /* Even one change is over this device's limit: the cursor cannot move. Reported
             * (status, last error, the watchdog) instead of retried silently forever. */
            report_error(e,
                         "pull cannot progress: one change is over this device's answer limit "
                         "(%s)",
                         a.resp.error[0] != '\0' ? a.resp.error : "its JSON values");
            fsa_http_response_clear(&a.resp);
            fsa_model_free(cursor);
            return FSA_ETOOLARGE;
        }
        fsa_http_response_clear(&a.resp);
        if (st == FSA_OK && pull.count > limit) {
            /* PROTOCOL.md section 4: a page holds at most the limit asked for, the bound of what
             * this device takes in at once. Nothing of it is folded; the cursor stays. */
            report_error(e, "server's pull answer holds %zu changes, over the %zu asked for",
                         pull.count, limit);
            st = FSA_EPROTO;
        }
        if (st == FSA_OK)
            st = pull_fold(e, cursor, &pull);
        bool more = pull.more;
        if (st == FSA_OK && more && kept[0] != '\0' && strcmp(kept, pull.cursor) == 0) {
            report_error(e, "server's pull cursor came back to an earlier one");
            st = FSA_EPROTO;
        } else if (st == FSA_OK && more && page + 1 == keep_at) {
            memcpy(kept, pull.cursor, sizeof kept);
            keep_at = keep_at > pages / 2 ? pages : 2 * keep_at;
        }
        fsa_codec_pull_free(&pull);
        fsa_model_free(cursor);
        if (st != FSA_OK || !more)
            return st;
    }
    /* Still more after this many pages: the pull is not done, and never reported as synced. */
    if (st == FSA_OK) {
        report_error(e, "pull did not end: the server still had more after %d pages", pages);
        st = FSA_EPROTO;
    }
    return st;
}

/* ---- the cycle ---- */

static fsa_status_t persist_failure(fsa_engine_t *e, int64_t retry_after_ms)
{
    fsa_backoff_state_t b;
    if (fsa_journal_backoff_get(e->j, &b) != FSA_OK)
        b.failures = 0;
    int64_t failures = b.failures + 1;
    int64_t delay = fsa_backoff_cycle_delay((uint32_t)(failures > 1000 ? 1000 : failures),
                                            random64(e), retry_after_ms * FSA_NS_PER_MS);
    int64_t next = e->port->wall_now(e->port->ctx).ms + delay / FSA_NS_PER_MS;
    e->rep->next_attempt_ms = next;
    b = (fsa_backoff_state_t){.next_attempt_ms = next, .failures = failures};
    return fsa_journal_backoff_set(e->j, &b);
}

static fsa_status_t persist_success(fsa_engine_t *e)
{
    return fsa_journal_sync_done(e->j, e->port->wall_now(e->port->ctx).ms);
}

static fsa_status_t cycle(fsa_engine_t *e)
{
    fsa_status_t st = FSA_OK;
    for (int round = 0; round < PUSH_ROUNDS_MAX && st == FSA_OK; round++) {
        st = push_all(e);
        int64_t rebased = 0;
        if (st == FSA_OK)
            st = resolve_all(e, &rebased);
        if (st != FSA_OK || rebased == 0)
            break;
    }
    if (st == FSA_OK)
        st = pull_all(e);
    if (st == FSA_OK) {
        /* Conflicts found by the pull's newer states are resolved, not left for next time. */
        int64_t rebased = 0;
        st = resolve_all(e, &rebased);
        if (st == FSA_OK && rebased > 0)
            st = push_all(e);
    }
    /* What left this device's scope while ops of ours were on it goes once they are answered
     * and their conflicts closed (a pull says `gone` only once). */
    size_t gone = 0;
    if (st == FSA_OK)
        st = fsa_journal_gone_sweep(e->j, &gone);
    if (st == FSA_OK && gone > 0)
        fsa_log(e->port, FSA_LOG_INFO, "sync: %zu entities that left this device's scope dropped",
                gone);
    if (st == FSA_OK)
        st = fsa_outbox_compact(e->j, FSA_LIMIT_AUDIT_MS, NULL);
    return st;
}

/* Persists how cycle status st ended (the next attempt, the last sync) and tells the app.
 * Returns the storage status of the persisting. */
static fsa_status_t end_cycle(fsa_engine_t *e, fsa_status_t st)
{
    /* A cancel ends the cycle as FSA_ETIMEOUT ("cancelled"). A stop is not a failure: the backoff
     * stays as it was, and the next start syncs at once. */
    if (st == FSA_ETIMEOUT && atomic_load(&e->cancelled)) {
        e->rep->cancelled = true;
        notify(e, FSA_ENGINE_IDLE, "cancelled", st);
        return FSA_OK;
    }
    fsa_status_t ps;
    switch (st) {
    case FSA_OK:
        ps = persist_success(e);
        notify(e, FSA_ENGINE_IDLE, "synced", FSA_OK);
        break;
    case FSA_ENET:
    case FSA_ETIMEOUT:
    case FSA_ETLS:
    case FSA_EPROTO:
    case FSA_EREJECTED:
    case FSA_ETOOLARGE: /* a pull that cannot progress: not again at once, and again, ... */
        ps = persist_failure(e, e->retry_after_ms);
        notify(e, FSA_ENGINE_OFFLINE, e->rep->error, st);
        break;
    case FSA_EAUTH:
        ps = persist_failure(e, 0);
        notify(e, FSA_ENGINE_STOPPED, e->rep->error, st);
        break;
    default:
        ps = FSA_OK;
        if (e->rep->error[0] == '\0')
            report_error(e, "sync failed: %s", fsa_status_str(st));
        notify(e, FSA_ENGINE_OFFLINE, e->rep->error, st);
        break;
    }
    return ps;
}

fsa_status_t fsa_engine_sync(fsa_engine_t *e, fsa_sync_report_t *report)
{
    if (e == NULL)
        return FSA_EINVAL;
    e->rep = report != NULL ? report : &e->scratch;
    memset(e->rep, 0, sizeof *e->rep);
    e->retry_after_ms = 0;

    fsa_backoff_state_t backoff;
    fsa_status_t st = fsa_journal_backoff_get(e->j, &backoff);
    if (st != FSA_OK)
        return st;
    int64_t now = e->port->wall_now(e->port->ctx).ms;
    int64_t next = fsa_backoff_cycle_due(backoff.next_attempt_ms, now);
    if (!e->opts.ignore_backoff && next > now) {
        e->rep->next_attempt_ms = next;
        /* Not a new problem: the failure that set this was logged when it happened. */
        snprintf(e->rep->error, sizeof e->rep->error, "backing off: next attempt in %" PRId64 " s",
                 (next - now + 999) / 1000);
        return FSA_EBUSY;
    }

    fsa_lockmgr_t *lm = NULL;
    fsa_lock_t lock;
    fsa_lock_init(&lock);
    char err[256] = "";
    if (!e->opts.no_lock) {
        fsa_lockmgr_opts_t lo = {.label = "fieldsync-sync"};
        st = fsa_lockmgr_open(e->port, fsa_journal_path(e->j), &lo, &lm, err, sizeof err);
        if (st == FSA_OK)
            st = fsa_lock_acquire(lm, FSA_LOCK_SYNC, "device", &lock, err, sizeof err);
        if (st != FSA_OK) {
            report_error(e, "%s", err[0] ? err : fsa_status_str(st));
            fsa_lockmgr_close(lm);
            return st == FSA_ELOCKTIMEOUT ? FSA_EBUSY : st;
        }
    }

    e->lock = lm != NULL ? &lock : NULL;
    e->lock_lost = false;
    /* Every journal write of the cycle, whichever call makes it, carries the SYNC lock's fence: a
     * cycle that lost its lease (a process stopped past it) and was taken over writes nothing
     * more. Another cycle has the ops; the server answers it "duplicate" for those this one sent.
     */
    fsa_fence_t fence = fsa_lock_fence(&lock);
    const fsa_fence_t *was = fsa_journal_fence_thread(lm != NULL ? &fence : NULL);
    st = cycle(e);
    if (st == FSA_EFENCED) {
        report_error(e, "lost the SYNC lock: another sync took it over; this one wrote nothing "
                        "more");
        st = FSA_EBUSY;
    }
    e->lock = NULL;
    fsa_status_t ps = end_cycle(e, st);
    (void)fsa_journal_fence_thread(was);
    if (st == FSA_OK && ps != FSA_OK)
        st = ps == FSA_EFENCED ? FSA_EBUSY : ps;
    if (lm != NULL) {
        if (fsa_lock_held(&lock))
            if (fsa_lock_release(&lock, err, sizeof err) != FSA_OK)
                fsa_log(e->port, FSA_LOG_WARN, "sync: releasing the SYNC lock: %s", err);
        fsa_lockmgr_close(lm);
    }
    return st;
}

/* ---- life cycle ---- */

fsa_status_t fsa_engine_new(fsa_port_t *port, fsa_journal_t *j, const fsa_engine_opts_t *opts,
                            fsa_engine_t **out, char *err, size_t errlen)
{
    char scratch[8];
    if (err == NULL || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    if (out == NULL)
        return FSA_EINVAL;
    *out = NULL;
    if (port == NULL || j == NULL || opts == NULL || opts->key == NULL || opts->device_id == NULL ||
        !fsa_model_id_valid(opts->device_id)) {
        snprintf(err, errlen,
                 "sync engine: a device id (1-128 of A-Z a-z 0-9 . _ : -) and a "
                 "secret are required");
        return FSA_EINVAL;
    }
    /* Out of range is a mistake to report, not to clamp silently (0 takes the default). */
    if (opts->batch_max_ops != 0 && (opts->batch_max_ops < FSA_JOURNAL_GROUP_MAX ||
                                     opts->batch_max_ops > FSA_LIMIT_BATCH_OPS)) {
        snprintf(err, errlen, "sync engine: batch_max_ops %zu is not between %d and %d",
                 opts->batch_max_ops, FSA_JOURNAL_GROUP_MAX, FSA_LIMIT_BATCH_OPS);
        return FSA_EINVAL;
    }
    if (opts->batch_max_bytes != 0 && (opts->batch_max_bytes < FSA_LIMIT_ENGINE_BATCH_BYTES_MIN ||
                                       opts->batch_max_bytes > FSA_LIMIT_BODY_BYTES)) {
        snprintf(err, errlen, "sync engine: batch_max_bytes %zu is not between %d and %d",
                 opts->batch_max_bytes, FSA_LIMIT_ENGINE_BATCH_BYTES_MIN, FSA_LIMIT_BODY_BYTES);
        return FSA_EINVAL;
    }
    if (opts->pull_limit > FSA_LIMIT_BATCH_OPS_MAX) {
        snprintf(err, errlen, "sync engine: pull_limit %zu is over %d", opts->pull_limit,
                 FSA_LIMIT_BATCH_OPS_MAX);
        return FSA_EINVAL;
    }
    fsa_engine_t *e = fsa_calloc(1, sizeof *e);
    if (e == NULL)
        return FSA_ENOMEM;
    e->port = port;
    e->j = j;
    e->opts = *opts;
    e->key = *opts->key;
    e->opts.key = NULL;
    snprintf(e->device_id, sizeof e->device_id, "%s", opts->device_id);
    if (e->opts.batch_max_ops == 0)
        e->opts.batch_max_ops = FSA_LIMIT_ENGINE_BATCH_OPS;
    if (e->opts.batch_max_bytes == 0)
        e->opts.batch_max_bytes = FSA_LIMIT_ENGINE_BATCH_BYTES;
    if (e->opts.pull_limit == 0)
        e->opts.pull_limit = FSA_LIMIT_ENGINE_PULL_LIMIT;
    e->retry = opts->retry != NULL ? opts->retry : fsa_retry_policy(FSA_RETRY_DEFAULT);
    e->rep = &e->scratch;
    /* A cancel also ends a request on the wire: a stop does not wait for a silent server. */
    e->opts.transport.cancel = &e->cancelled;
    e->app_tick = opts->transport.tick;
    e->app_tick_arg = opts->transport.tick_arg;
    e->opts.transport.tick = engine_tick;
    e->opts.transport.tick_arg = e;
    fsa_status_t st = fsa_transport_new(port, &e->opts.transport, &e->t, err, errlen);
    if (st != FSA_OK) {
        fsa_engine_free(e);
        return st;
    }
    *out = e;
    return FSA_OK;
}

void fsa_engine_free(fsa_engine_t *e)
{
    if (e == NULL)
        return;
    fsa_transport_free(e->t);
    fsa_signer_key_wipe(&e->key);
    fsa_free(e);
}

void fsa_engine_on_status(fsa_engine_t *e, fsa_engine_status_fn fn, void *arg)
{
    if (e == NULL)
        return;
    e->status_fn = fn;
    e->status_arg = arg;
}

void fsa_engine_cancel(fsa_engine_t *e)
{
    if (e != NULL)
        atomic_store(&e->cancelled, 1);
}
