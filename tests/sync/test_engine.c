/* Tests for sync/engine.c on the sim clock against the real fieldsync-server: clock skew, backoff
 * per policy, Retry-After, the persisted next attempt, and the status callback. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "port/alloc.h"
#include "port/sim/sim.h"
#include "sync/engine.h"
#include "tests/sync/server_client.h"
#include "tests/sync/server_harness.h"
#include "tests/test_util.h"

typedef struct fx {
    th_server_t srv;
    bool started;
    fsa_sim_t *sim;
    fsa_port_t *port;
    fsa_journal_t *j;
    char db[400];
} fx_t;

static int64_t real_wall_ms(void)
{
    return fsa_port_posix()->wall_now(NULL).ms;
}

/* A device whose clock is off by skew_ms. */
static void make_device(fx_t *f, int64_t skew_ms)
{
    fsa_wall_t skewed = {real_wall_ms() + skew_ms};
    assert_fsa_ok(fsa_sim_new(5, skewed, "device", &f->sim));
    f->port = fsa_sim_port(f->sim);
    snprintf(f->db, sizeof f->db, "%s/device.db", f->srv.dir);
    fsa_journal_opts_t o = {.create = true};
    char err[256];
    assert_fsa_ok(fsa_journal_open(f->port, f->db, &o, &f->j, err, sizeof err));
}

static fsa_engine_t *engine(fx_t *f, const char *url, const fsa_retry_policy_t *retry)
{
    fsa_signer_key_t key;
    th_device_key(0, &key);
    fsa_engine_opts_t o = {.device_id = "dev000", .key = &key, .retry = retry};
    o.transport.base_url = url;
    o.transport.connect_timeout_ms = 2000;
    o.transport.total_timeout_ms = 10000;
    fsa_engine_t *e = NULL;
    char err[256];
    assert_fsa_ok(fsa_engine_new(f->port, f->j, &o, &e, err, sizeof err));
    fsa_signer_key_wipe(&key);
    return e;
}

static int setup(void **state)
{
    fx_t *f = fsa_calloc(1, sizeof *f);
    if (!th_dir_make(f->srv.dir) || !th_write_files(&f->srv, 2))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    fsa_journal_close(f->j);
    fsa_sim_free(f->sim);
    if (f->started)
        th_server_stop(&f->srv);
    th_dir_remove(f->srv.dir);
    fsa_free(f);
    return 0;
}

static void start(fx_t *f, const char *const *extra)
{
    assert_true(th_server_start(&f->srv, extra));
    f->started = true;
}

static fsa_sync_state_t sync_state(fx_t *f)
{
    fsa_sync_state_t s;
    assert_fsa_ok(fsa_journal_sync_state_get(f->j, &s));
    return s;
}

static void skewed_clock_is_corrected(void **state, int64_t skew_ms)
{
    fx_t *f = *state;
    start(f, NULL);
    make_device(f, skew_ms);
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    fsa_engine_t *e = engine(f, f->srv.url, NULL);
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(e, &r));
    assert_int_equal(r.applied, 1);
    /* offset = server_time - local_now: about minus the skew */
    int64_t offset = sync_state(f).clock_offset_ms;
    assert_true(offset > -skew_ms - 5000 && offset < -skew_ms + 5000);
    /* records made now carry the corrected time */
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", 1, NULL, &rec));
    fsa_op_t op;
    assert_fsa_ok(fsa_outbox_find(f->j, rec.op_id, &op, NULL));
    int64_t err_ms = op.at_ms - real_wall_ms();
    fsa_op_clear(&op);
    assert_true(err_ms > -5000 && err_ms < 5000);
    assert_fsa_ok(fsa_engine_sync(e, &r));
    assert_int_equal(r.applied, 1);
    fsa_engine_free(e);
}

static void test_fsa_engine_sync__clock_one_hour_ahead(void **state)
{
    skewed_clock_is_corrected(state, 3600 * 1000);
}

static void test_fsa_engine_sync__clock_one_hour_behind(void **state)
{
    skewed_clock_is_corrected(state, -3600 * 1000);
}

typedef struct seen {
    int retrying, offline;
} seen_t;

static void on_status(void *arg, const fsa_engine_status_t *s)
{
    seen_t *seen = arg;
    if (s->state == FSA_ENGINE_RETRYING)
        seen->retrying++;
    if (s->state == FSA_ENGINE_OFFLINE)
        seen->offline++;
}

static void test_fsa_engine_sync__unreachable_backs_off_per_policy(void **state)
{
    fx_t *f = *state;
    make_device(f, 0);
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    /* port 9 on loopback: nothing listens, connect is refused at once */
    fsa_engine_t *e = engine(f, "http://127.0.0.1:9", fsa_retry_policy(FSA_RETRY_DEFAULT));
    seen_t seen = {0};
    fsa_engine_on_status(e, on_status, &seen);
    fsa_mono_t real0 = fsa_port_posix()->mono_now(NULL);
    fsa_mono_t v0 = f->port->mono_now(f->port->ctx);
    fsa_sync_report_t r;
    assert_int_equal(fsa_engine_sync(e, &r), FSA_ENET);
    int64_t slept = fsa_mono_diff_ns(f->port->mono_now(f->port->ctx), v0);
    /* DEFAULT: 3 retries with full jitter under caps of 0.1, 0.2 and 0.4 s */
    assert_int_equal(r.retries, 3);
    assert_int_equal(seen.retrying, 3);
    assert_int_equal(seen.offline, 1);
    assert_true(slept <= 700 * FSA_NS_PER_MS);
    assert_true(test_real_elapsed_ns(real0) < 5 * FSA_NS_PER_S);
    assert_non_null(strstr(r.error, "gave up after 3 retries"));
    /* the cycle's next attempt is persisted: 0.5..1 s after the first failure */
    int64_t next = sync_state(f).backoff.next_attempt_ms;
    int64_t now = f->port->wall_now(f->port->ctx).ms;
    assert_true(next >= now + 500 && next <= now + 1000);
    assert_int_equal(sync_state(f).backoff.failures, 1);
    fsa_engine_free(e);

    /* a restart does not reset it, and neither does a new record */
    fsa_journal_close(f->j);
    fsa_journal_opts_t o = {0};
    assert_fsa_ok(fsa_journal_open(f->port, f->db, &o, &f->j, NULL, 0));
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", 1, NULL, &rec));
    e = engine(f, "http://127.0.0.1:9", fsa_retry_policy(FSA_RETRY_DEFAULT));
    assert_int_equal(fsa_engine_sync(e, &r), FSA_EBUSY);
    assert_non_null(strstr(r.error, "backing off"));
    assert_int_equal(r.retries, 0);
    /* once the time has come it tries again, and the cycle's delay grows */
    fsa_sim_advance(f->sim, 2 * FSA_NS_PER_S);
    assert_int_equal(fsa_engine_sync(e, &r), FSA_ENET);
    assert_int_equal(sync_state(f).backoff.failures, 2);
    next = sync_state(f).backoff.next_attempt_ms;
    now = f->port->wall_now(f->port->ctx).ms;
    assert_true(next >= now + 1000 && next <= now + 2000);
    fsa_engine_free(e);
    fsa_outbox_stats_t os;
    assert_fsa_ok(fsa_outbox_stats(f->j, &os));
    assert_int_equal(os.pending, 2); /* the outbox is never dropped */
}

/* A device whose clock ran a year ahead failed a cycle (its backoff deadline stored on that
 * clock), then had its clock set right: it syncs at once, not in a year. Before, every cycle
 * said "backing off: next attempt in 31536001 s". */
static void test_fsa_engine_sync__a_clock_set_back_does_not_keep_the_backoff(void **state)
{
    fx_t *f = *state;
    const int64_t year = 365LL * 24 * 3600 * 1000;
    make_device(f, year);
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    fsa_engine_t *e = engine(f, "http://127.0.0.1:9", fsa_retry_policy(FSA_RETRY_DEFAULT));
    fsa_sync_report_t r;
    assert_int_equal(fsa_engine_sync(e, &r), FSA_ENET);
    fsa_engine_free(e);
    assert_true(sync_state(f).backoff.next_attempt_ms > real_wall_ms() + year - 60000);
    fsa_sim_shift_wall(f->sim, -year);
    fsa_sim_advance(f->sim, 10 * 60 * FSA_NS_PER_S);
    start(f, NULL);
    e = engine(f, f->srv.url, fsa_retry_policy(FSA_RETRY_DEFAULT));
    fsa_status_t st = fsa_engine_sync(e, &r);
    if (st != FSA_OK)
        fail_msg("%s: %s", fsa_status_str(st), r.error);
    assert_int_equal(r.applied, 1);
    fsa_engine_free(e);
}

/* A server that answers every push 429 with Retry-After retry_after (seconds, as text), a ticket
 * recorded, and an engine on it with the CONSERVATIVE policy (2 retries, at most 10 s apart). */
static fsa_engine_t *busy_server_engine(fx_t *f, const char *retry_after)
{
    const char *busy[] = {"--fault-429", "1", "--fault-retry-after", retry_after, NULL};
    start(f, busy);
    make_device(f, 0);
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    return engine(f, f->srv.url, fsa_retry_policy(FSA_RETRY_CONSERVATIVE));
}

static void test_fsa_engine_sync__retry_after_is_honoured(void **state)
{
    fx_t *f = *state;
    fsa_engine_t *e = busy_server_engine(f, "7");
    fsa_mono_t v0 = f->port->mono_now(f->port->ctx);
    fsa_sync_report_t r;
    assert_int_not_equal(fsa_engine_sync(e, &r), FSA_OK);
    assert_int_equal(r.retries, 2); /* CONSERVATIVE: 2 retries */
    /* each wait was at least the 7 s the server asked for, more than the policy's caps */
    assert_true(fsa_mono_diff_ns(f->port->mono_now(f->port->ctx), v0) >= 14 * FSA_NS_PER_S);
    assert_true(sync_state(f).backoff.next_attempt_ms >= f->port->wall_now(f->port->ctx).ms + 7000);
    fsa_engine_free(e);
}

/* A Retry-After longer than the policy ever waits (CONSERVATIVE: 10 s) is not waited out inside
 * the cycle: the cycle ends at the first answer and its saved next attempt carries the wait, so a
 * stop or a reboot keeps it. Waited out inside, the cycle held the SYNC lock for up to an hour a
 * retry, `status` said "no backoff", and a stop in the middle forgot the server's wish. */
static void test_fsa_engine_sync__a_long_retry_after_ends_the_cycle(void **state)
{
    fx_t *f = *state;
    fsa_engine_t *e = busy_server_engine(f, "600");
    fsa_mono_t v0 = f->port->mono_now(f->port->ctx);
    fsa_sync_report_t r;
    assert_int_equal(fsa_engine_sync(e, &r), FSA_ENET);
    assert_int_equal(r.retries, 0);
    if (strstr(r.error, "the server asks to wait 600 s") == NULL)
        fail_msg("%s", r.error);
    assert_true(fsa_mono_diff_ns(f->port->mono_now(f->port->ctx), v0) < 10 * FSA_NS_PER_S);
    assert_true(sync_state(f).backoff.next_attempt_ms >=
                f->port->wall_now(f->port->ctx).ms + 600 * 1000);
    fsa_engine_free(e);
}

static void test_fsa_engine_sync__status_and_nothing_pending(void **state)
{
    fx_t *f = *state;
    start(f, NULL);
    make_device(f, 0);
    fsa_engine_t *e = engine(f, f->srv.url, NULL);
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(e, &r));
    assert_int_equal(r.pushed, 0);
    assert_true(sync_state(f).last_sync_ms > 0);
    fsa_engine_cancel(e);
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    assert_int_equal(fsa_engine_sync(e, &r), FSA_ETIMEOUT); /* cancelled: sends nothing */
    assert_string_equal(r.error, "cancelled");
    fsa_engine_free(e);
    assert_string_equal(fsa_engine_state_name(FSA_ENGINE_RETRYING), "retrying");
    fsa_engine_t *bad = NULL;
    fsa_engine_opts_t o = {.device_id = "bad id"};
    assert_int_equal(fsa_engine_new(f->port, f->j, &o, &bad, NULL, 0), FSA_EINVAL);
    assert_null(bad);
}

/* Ops are counted on their status events, to see each batch's in-flight marks. */
typedef struct drain_seen {
    fx_t *f;
    char first_op[FSA_OP_ID_BYTES]; /* an op of the first batch */
    int pushing;
    int first_sent; /* events at which the first batch's op read as sent */
} drain_seen_t;

static void on_drain_status(void *arg, const fsa_engine_status_t *s)
{
    drain_seen_t *d = arg;
    if (s->state != FSA_ENGINE_PUSHING)
        return;
    d->pushing++;
    fsa_op_state_t st = FSA_OPSTATE_PENDING;
    assert_fsa_ok(fsa_outbox_op_state(d->f->j, d->first_op, &st));
    if (st == FSA_OPSTATE_INFLIGHT)
        d->first_sent++;
}

/* A drain of many batches, each read, compressed and sent while the one before is applied, with a
 * conflict in the middle: every op lands once, in order, the conflict is parked where it was, and
 * the journal ends where the server is. */
static void test_fsa_engine_sync__pipelined_batches_land_once_in_order(void **state)
{
    fx_t *f = *state;
    start(f, NULL);
    make_device(f, 0);
    assert_int_equal(tc_seed(NULL, f->srv.url, "ticket", "T3", "{\"status\":\"OPEN\"}"), 201);
    fsa_rec_t rec;
    drain_seen_t d = {.f = f};
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    memcpy(d.first_op, rec.op_id, sizeof d.first_op);
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T2", NULL, NULL, &rec));
    for (int i = 0; i < 200; i++) {
        if (i == 100) /* T3 exists on the server: this create conflicts */
            assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T3", NULL, NULL, &rec));
        assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, i % 2 ? "T2" : "T1", "level", 1,
                                            NULL, &rec));
    }
    fsa_signer_key_t key;
    th_device_key(0, &key);
    fsa_engine_opts_t o = {.device_id = "dev000", .key = &key, .batch_max_ops = 16};
    o.transport.base_url = f->srv.url;
    fsa_engine_t *e = NULL;
    assert_fsa_ok(fsa_engine_new(f->port, f->j, &o, &e, NULL, 0));
    fsa_signer_key_wipe(&key);
    fsa_engine_on_status(e, on_drain_status, &d);
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(e, &r));
    assert_int_equal(r.pushed, 203);
    assert_int_equal(r.applied, 202);
    assert_int_equal(r.conflict, 1);
    assert_int_equal(r.batches, (203 + 15) / 16);
    assert_int_equal(d.pushing, (203 + 15) / 16); /* one event per batch sent */
    /* Every batch but the first was read and compressed while the one before was on the wire,
     * and went as compressed then (the transport checks the bytes are still the body's). */
    assert_int_equal(r.compressed_ahead, r.batches - 1);
    assert_true(d.first_sent >= 1); /* the first batch read as sent while it was on the wire */
    char level[32];
    tc_field(NULL, f->srv.url, "ticket", "T1", "level", level, sizeof level);
    assert_string_equal(level, "100");
    tc_field(NULL, f->srv.url, "ticket", "T2", "level", level, sizeof level);
    assert_string_equal(level, "100");
    /* The journal: every op answered, the bases at the server's versions, views equal to them. */
    fsa_outbox_stats_t os;
    assert_fsa_ok(fsa_outbox_stats(f->j, &os));
    assert_int_equal(os.pending, 0);
    assert_int_equal(os.inflight, 0);
    assert_fsa_ok(fsa_outbox_op_state(f->j, d.first_op, &(fsa_op_state_t){0}));
    for (int t = 1; t <= 2; t++) {
        char id[16], *view = NULL, *base = NULL;
        int64_t v = 0, bv = 0, pending = -1;
        snprintf(id, sizeof id, "T%d", t);
        assert_fsa_ok(fsa_journal_get(f->j, FSA_TYPE_TICKET, id, &view, &v, &pending));
        assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_TICKET, id, &base, &bv));
        assert_int_equal(pending, 0);
        assert_int_equal(bv, 101);
        assert_string_equal(view, base);
        assert_non_null(strstr(base, "\"level\":100"));
        fsa_model_free(view);
        fsa_model_free(base);
    }
    fsa_engine_free(e);
}

/* Options out of range are refused with a message naming them, not clamped (issue 15). */
static void test_fsa_engine_new__options_out_of_range_refused(void **state)
{
    fx_t *f = *state;
    start(f, NULL);
    make_device(f, 0);
    fsa_signer_key_t key;
    th_device_key(0, &key);
    const struct {
        size_t ops, bytes, pull;
        const char *names;
    } bad[] = {
        {FSA_JOURNAL_GROUP_MAX - 1, 0, 0, "batch_max_ops"},
        {FSA_LIMIT_BATCH_OPS + 1, 0, 0, "batch_max_ops"},
        {0, FSA_LIMIT_ENGINE_BATCH_BYTES_MIN - 1, 0, "batch_max_bytes"},
        {0, FSA_LIMIT_BODY_BYTES + 1, 0, "batch_max_bytes"},
        {0, 0, FSA_LIMIT_BATCH_OPS_MAX + 1, "pull_limit"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fsa_engine_opts_t o = {.device_id = "dev000",
                               .key = &key,
                               .batch_max_ops = bad[i].ops,
                               .batch_max_bytes = bad[i].bytes,
                               .pull_limit = bad[i].pull};
        o.transport.base_url = f->srv.url;
        fsa_engine_t *e = (fsa_engine_t *)&o; /* must be reset to NULL */
        char err[256] = "";
        assert_int_equal(fsa_engine_new(f->port, f->j, &o, &e, err, sizeof err), FSA_EINVAL);
        assert_null(e);
        assert_non_null(strstr(err, bad[i].names));
    }
    /* The limits themselves are fine. */
    fsa_engine_opts_t o = {.device_id = "dev000",
                           .key = &key,
                           .batch_max_ops = FSA_LIMIT_BATCH_OPS,
                           .batch_max_bytes = FSA_LIMIT_BODY_BYTES,
                           .pull_limit = FSA_LIMIT_BATCH_OPS_MAX};
    o.transport.base_url = f->srv.url;
    fsa_engine_t *e = NULL;
    assert_fsa_ok(fsa_engine_new(f->port, f->j, &o, &e, NULL, 0));
    fsa_engine_free(e);
    fsa_signer_key_wipe(&key);
}

/* An answer that is not the protocol's (a proxy's 404, a captive portal's redirect) keeps the ops
 * pending: only a 400 malformed quarantines a batch. */
static void test_fsa_engine_sync__foreign_answer_keeps_ops(void **state)
{
    fx_t *f = *state;
    start(f, NULL);
    make_device(f, 0);
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    char url[256];
    snprintf(url, sizeof url, "%s/not-the-api", f->srv.url); /* the server answers 404 */
    fsa_engine_t *e = engine(f, url, fsa_retry_policy(FSA_RETRY_CONSERVATIVE));
    fsa_sync_report_t r;
    assert_int_not_equal(fsa_engine_sync(e, &r), FSA_OK);
    assert_non_null(strstr(r.error, "404"));
    fsa_outbox_stats_t os;
    assert_fsa_ok(fsa_outbox_stats(f->j, &os));
    assert_int_equal(os.pending, 1);
    assert_int_equal(os.rejected, 0);
    assert_true(sync_state(f).backoff.next_attempt_ms > 0); /* and the cycle backs off */
    fsa_engine_free(e);
}

/* Applies ops through the server's admin API (the platform reassigning work); expects them all
 * applied. ops_csv: op objects, comma-separated. */
static void admin_ops(fx_t *f, const char *ops_csv)
{
    char body[4096];
    snprintf(body, sizeof body, "{\"batch_id\":\"admin\",\"ops\":[%s]}", ops_csv);
    th_req_opts_t o = {.bearer = TH_ADMIN_TOKEN};
    th_resp_t r;
    assert_true(
        th_request(NULL, f->srv.url, "POST", "/admin/v1/ops", 0, body, strlen(body), &o, &r));
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "\"conflict\""));
    assert_null(strstr(r.body, "\"rejected\""));
    th_resp_free(&r);
}

/* PROTOCOL.md section 4: an entity that leaves the device's scope comes as `gone`; the device
 * drops it, unless something of its own is still on it (here a rejected op waiting for a person,
 * which must stay visible): then once nothing is. */
static void test_fsa_engine_sync__gone_dropped_unless_ours_is_on_it(void **state)
{
    fx_t *f = *state;
    const char *const scopes[] = {"{\"people\":[\"P1\"]}", NULL};
    assert_true(th_write_files_scoped(&f->srv, 2, scopes));
    start(f, NULL);
    make_device(f, 0);
    char ops[1024], op2[512];
    tc_op(ops, sizeof ops, NULL, "create", "ticket", "T1", ",\"fields\":{\"assignedto\":\"P1\"}");
    tc_op(op2, sizeof op2, NULL, "create", "ticket", "T2", ",\"fields\":{\"assignedto\":\"P1\"}");
    snprintf(ops + strlen(ops), sizeof ops - strlen(ops), ",%s", op2);
    admin_ops(f, ops);
    fsa_engine_t *e = engine(f, f->srv.url, NULL);
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(e, &r));
    assert_int_equal(r.pulled, 2);
    int64_t after = 0;
    assert_fsa_ok(fsa_journal_changes_last(f->j, &after));
    /* The device escalates T2 while both tickets are given to someone else on the server. */
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T2", "level", 1, NULL, &rec));
    tc_op(ops, sizeof ops, NULL, "set", "ticket", "T1",
          ",\"base_version\":1,\"fields\":{\"assignedto\":\"P9\"}");
    tc_op(op2, sizeof op2, NULL, "set", "ticket", "T2",
          ",\"base_version\":1,\"fields\":{\"assignedto\":\"P9\"}");
    snprintf(ops + strlen(ops), sizeof ops - strlen(ops), ",%s", op2);
    admin_ops(f, ops);
    assert_fsa_ok(fsa_engine_sync(e, &r));
    assert_int_equal(r.rejected, 1); /* T2 is outside the scope now: forbidden */
    /* T1 is gone from the journal, with a change that says so; T2 stays with the rejection. */
    assert_int_equal(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, NULL), FSA_ENOTFOUND);
    assert_fsa_ok(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T2", NULL, NULL, NULL));
    fsa_conflict_t c;
    assert_fsa_ok(fsa_conflict_get(f->j, rec.op_id, &c));
    assert_string_equal(c.code, "forbidden");
    fsa_conflict_clear(&c);
    fsa_change_t ch[16];
    size_t n = 0;
    assert_fsa_ok(fsa_journal_changes_read(f->j, after, ch, 16, &n));
    bool t1_gone = false;
    for (size_t i = 0; i < n; i++) {
        if (ch[i].reason == FSA_CHANGE_GONE) {
            assert_string_equal(ch[i].id, "T1");
            t1_gone = true;
        }
    }
    assert_true(t1_gone);
    /* Once the person lets the server's state stand, nothing of ours is on T2. The server said
     * `gone` once, and will not again: the next cycle drops it all the same. */
    assert_fsa_ok(fsa_conflict_resolve(f->j, rec.op_id, false, FSA_RESOLVED_SERVER, NULL));
    assert_fsa_ok(fsa_journal_changes_last(f->j, &after));
    assert_fsa_ok(fsa_engine_sync(e, &r));
    assert_int_equal(r.pulled, 0);
    assert_int_equal(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T2", NULL, NULL, NULL), FSA_ENOTFOUND);
    assert_fsa_ok(fsa_journal_changes_read(f->j, after, ch, 16, &n));
    assert_int_equal(n, 1);
    assert_int_equal(ch[0].reason, FSA_CHANGE_GONE);
    assert_string_equal(ch[0].id, "T2");
    fsa_engine_free(e);
}

/* Creates ticket id on the server through the admin API with nstr strings of len bytes each in
 * its ticketlog (about nstr * len bytes of fields). */
/* The admin API's create of a ticket whose history the caller writes after *n bytes of body
 * (room bytes at most), then admin_create_end: the body, as from the platform. */
static char *admin_create_begin(const char *id, size_t room, size_t *n)
{
    char *body = fsa_malloc(room + 1024);
    assert_non_null(body);
    char opid[37];
    tc_op_id(opid);
    *n = (size_t)snprintf(body, room + 1024,
                          "{\"batch_id\":\"admin\",\"ops\":[{\"op_id\":\"%s\",\"kind\":"
                          "\"create\",\"type\":\"ticket\",\"id\":\"%s\",\"seq\":1,"
                          "\"at\":1,\"fields\":{\"ticketlog\":{\"ticket_history\":[",
                          opid, id);
    return body;
}

static void admin_create_end(fx_t *f, char *body, size_t n)
{
    static const char tail[] = "]}}}]}";
    memcpy(body + n, tail, sizeof tail); /* its NUL too (the body is sent by length) */
    n += sizeof tail - 1;
    th_req_opts_t o = {.bearer = TH_ADMIN_TOKEN};
    th_resp_t r;
    assert_true(th_request(NULL, f->srv.url, "POST", "/admin/v1/ops", 0, body, n, &o, &r));
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"applied\""));
    th_resp_free(&r);
    fsa_free(body);
}

static void admin_big_ticket(fx_t *f, const char *id, int nstr, size_t len)
{
    size_t n = 0;
    char *body = admin_create_begin(id, (size_t)nstr * (len + 4), &n);
    for (int i = 0; i < nstr; i++) {
        body[n++] = i > 0 ? ',' : ' ';
        body[n++] = '"';
        memset(body + n, 'a' + i % 26, len);
        n += len;
        body[n++] = '"';
    }
    admin_create_end(f, body, n);
}

/* PROTOCOL.md section 7, amendment 6: a pull answer over the device's own limit is asked for
 * again with a smaller limit (halving down to 1), and a pull that cannot progress even with 1 is
 * reported, not retried silently forever. */
static void test_fsa_engine_sync__pull_over_own_limit_asks_for_less(void **state)
{
    fx_t *f = *state;
    start(f, NULL);
    make_device(f, 0);
    char id[16];
    for (int i = 0; i < 8; i++) {
        snprintf(id, sizeof id, "BIG%d", i);
        admin_big_ticket(f, id, 2, 50000); /* ~100 KB each, 800 KB in all */
    }
    fsa_signer_key_t key;
    th_device_key(0, &key);
    fsa_engine_opts_t o = {.device_id = "dev000", .key = &key};
    o.transport.base_url = f->srv.url;
    o.transport.connect_timeout_ms = 2000;
    o.transport.total_timeout_ms = 10000;
    o.transport.max_response_bytes = 300 * 1000; /* 2 tickets fit, 3 do not */
    fsa_engine_t *e = NULL;
    char err[256];
    assert_fsa_ok(fsa_engine_new(f->port, f->j, &o, &e, err, sizeof err));
    fsa_signer_key_wipe(&key);
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(e, &r));
    assert_int_equal(r.pulled, 8);
    assert_fsa_ok(fsa_journal_get(f->j, FSA_TYPE_TICKET, "BIG7", NULL, NULL, NULL));
    /* One ticket over the limit on its own: the pull cannot progress, and says so. */
    admin_big_ticket(f, "HUGE", 6, 60000);
    fsa_status_t st = fsa_engine_sync(e, &r);
    assert_int_equal(st, FSA_ETOOLARGE);
    assert_non_null(strstr(r.error, "pull cannot progress"));
    /* and it backs off, as any failed cycle: with no backoff saved, a daemon downloaded the pages
     * again every second */
    assert_true(sync_state(f).backoff.next_attempt_ms > f->port->wall_now(f->port->ctx).ms);
    assert_int_equal(fsa_engine_sync(e, &r), FSA_EBUSY);
    fsa_engine_free(e);
}

/* Creates ticket id on the server (admin API) whose history holds nvalues zeros: many JSON values
 * in few bytes ("0,"). */
static void admin_dense_ticket(fx_t *f, const char *id, size_t nvalues)
{
    size_t n = 0;
    char *body = admin_create_begin(id, 2 * nvalues, &n);
    for (size_t i = 0; i < nvalues; i++) {
        body[n++] = i > 0 ? ',' : ' ';
        body[n++] = '0';
    }
    admin_create_end(f, body, n);
}

/*
 * The agent bounds the JSON values of an answer it parses (FSA_LIMIT_ANSWER_VALUES), not only
 * its bytes. An answer over that bound is asked for smaller, as one over the byte limit: a pull
 * page of 8 tickets of 90,000 values each (720,000) is asked for again with half the changes, and
 * a batch of 6 stale sets whose conflicts carry those tickets (540,000 values) is split. Nothing
 * stalls. (Refused as malformed, the same page or batch came back every cycle.)
 */
static void test_fsa_engine_sync__answers_over_the_value_bound_asked_for_smaller(void **state)
{
    fx_t *f = *state;
    start(f, NULL);
    make_device(f, 0);
    char id[16], op[256];
    for (int i = 0; i < 8; i++) {
        snprintf(id, sizeof id, "D%d", i);
        admin_dense_ticket(f, id, 90000);
    }
    fsa_engine_t *e = engine(f, f->srv.url, NULL);
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(e, &r));
    assert_int_equal(r.pulled, 8);
    /* The platform bumps six of them (version 2); this device, not knowing, sets each. */
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof id, "D%d", i);
        tc_op(op, sizeof op, NULL, "set", "ticket", id,
              ",\"base_version\":1,\"fields\":{\"priority\":\"HIGH\"}");
        admin_ops(f, op);
        fsa_rec_t rec;
        assert_fsa_ok(
            fsa_journal_set(f->j, FSA_TYPE_TICKET, id, "{\"assignedto\":\"p1\"}", NULL, &rec));
    }
    assert_fsa_ok(fsa_engine_sync(e, &r));
    fsa_engine_free(e);
    assert_string_equal(r.error, "");
    /* The server had answered all six (conflicts) when the answer was refused: the halves get
     * those first answers again (duplicates of conflicts), and the sets are rebased (assignedto:
     * nobody else changed it) and applied. */
    assert_int_equal(r.duplicate, 6);
    assert_int_equal(r.rebased, 6);
    assert_int_equal(r.applied, 6);
    for (int i = 0; i < 6; i++) {
        char v[64];
        snprintf(id, sizeof id, "D%d", i);
        tc_field(NULL, f->srv.url, "ticket", id, "assignedto", v, sizeof v);
        assert_string_equal(v, "\"p1\"");
        tc_field(NULL, f->srv.url, "ticket", id, "priority", v, sizeof v);
        assert_string_equal(v, "\"HIGH\"");
    }
}

/* Copies the file at from to to (the test's own files). */
static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    FILE *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    assert_int_equal(fclose(in), 0);
    assert_int_equal(fclose(out), 0);
}

/*
 * The results' commits do not wait for the disk (storage/journal.c, fsa_outbox_apply_batch): a
 * power cut may lose results the server sent. Here all of them are lost: a copy of the journal
 * taken before the sync, as it would come back if none of its result commits had reached the disk,
 * is synced again. Its ops go again, the server answers each with its first result without
 * applying it again (PROTOCOL.md section 3: idempotent by op id), and the copy ends where the
 * original did.
 */
static void test_fsa_engine_sync__lost_results_resent_not_applied_twice(void **state)
{
    fx_t *f = *state;
    start(f, NULL);
    make_device(f, 0);
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    for (int i = 0; i < 40; i++)
        assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", 1, NULL, &rec));
    fsa_journal_close(f->j); /* the last user: the WAL is checkpointed into the file */
    f->j = NULL;
    char lost[sizeof f->db + 8];
    snprintf(lost, sizeof lost, "%s.lost", f->db);
    copy_file(f->db, lost);
    fsa_journal_opts_t o = {0};
    char err[256];
    assert_fsa_ok(fsa_journal_open(f->port, f->db, &o, &f->j, err, sizeof err));
    fsa_engine_t *e = engine(f, f->srv.url, NULL);
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(e, &r));
    fsa_engine_free(e);
    assert_int_equal(r.applied, 41);
    char level[32];
    tc_field(NULL, f->srv.url, "ticket", "T1", "level", level, sizeof level);
    assert_string_equal(level, "40");
    fsa_journal_close(f->j);
    f->j = NULL;

    /* The journal as if every result commit had been lost. */
    assert_fsa_ok(fsa_journal_open(f->port, lost, &o, &f->j, err, sizeof err));
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.pending, 41);
    e = engine(f, f->srv.url, NULL);
    assert_fsa_ok(fsa_engine_sync(e, &r));
    fsa_engine_free(e);
    assert_int_equal(r.pushed, 41);
    assert_int_equal(r.duplicate, 41); /* answered with the first results */
    assert_int_equal(r.applied, 0);
    tc_field(NULL, f->srv.url, "ticket", "T1", "level", level, sizeof level);
    assert_string_equal(level, "40"); /* not applied twice */
    assert_int_equal(tc_get(NULL, f->srv.url, "ticket", "T1", NULL), 41);
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.conflicts + st.rejected, 0);
    char *view = NULL, *base = NULL;
    int64_t bv = 0;
    assert_fsa_ok(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T1", &view, NULL, NULL));
    assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_TICKET, "T1", &base, &bv));
    assert_int_equal(bv, 41);
    assert_string_equal(view, base);
    assert_non_null(strstr(base, "\"level\":40"));
    fsa_model_free(view);
    fsa_model_free(base);
}

/*
 * A set counts the ops before it on its entity as applied (its base_version). Here the first of two
 * sets conflicts, because another device changed the ticket (version 2): the second set must not
 * then match version 2 by that coincidence and overwrite the other device's priority, which this
 * device never saw. It waits for the first one's answer, expects one version less once it is
 * parked, conflicts, and the server wins (recorded); the first set, on a field nobody else changed,
 * is rebased and lands. (The second set was applied over HIGH, and no conflict was recorded.)
 */
static void
test_fsa_engine_sync__set_after_own_conflict_never_overwrites_unseen_change(void **state)
{
    fx_t *f = *state;
    start(f, NULL);
    make_device(f, 0);
    fsa_rec_t rec, r1, r2;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    fsa_engine_t *e = engine(f, f->srv.url, NULL);
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(e, &r));
    /* Device 1 raises the priority: version 2. Device 0 does not pull it. */
    char op[512];
    tc_op(op, sizeof op, NULL, "set", "ticket", "T1",
          ",\"base_version\":1,\"fields\":{\"priority\":\"HIGH\"}");
    fsa_codec_result_t *res = NULL;
    size_t nres = 0;
    assert_int_equal(tc_push(NULL, f->srv.url, 1, op, &res, &nres), 200);
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    fsa_codec_results_free(res, nres);
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"assignedto\":\"alice\"}", NULL, &r1));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"priority\":\"LOW\"}", NULL, &r2));
    assert_fsa_ok(fsa_engine_sync(e, &r));
    fsa_engine_free(e);
    char v[64];
    tc_field(NULL, f->srv.url, "ticket", "T1", "priority", v, sizeof v);
    assert_string_equal(v, "\"HIGH\""); /* the other device's change stands */
    tc_field(NULL, f->srv.url, "ticket", "T1", "assignedto", v, sizeof v);
    assert_string_equal(v, "\"alice\""); /* ours, on a field nobody else changed, landed */
    assert_int_equal(tc_get(NULL, f->srv.url, "ticket", "T1", NULL), 3);
    fsa_op_state_t os = FSA_OPSTATE_PENDING;
    assert_fsa_ok(fsa_outbox_op_state(f->j, r2.op_id, &os));
    assert_int_equal(os, FSA_OPSTATE_CONFLICT); /* recorded, for the user to see and override */
    assert_int_equal(r.conflict, 2);
    assert_int_equal(r.rebased, 1);
    assert_int_equal(r.server_wins, 1);
}

/*
 * A resolve pass takes at most RESOLVE_BATCH (256) undecided conflicts, and a group is judged from
 * all its members and the verdict taken for all of them. Here the bound falls inside a group
 * [merge on J1, J1 to COMPLETED] that conflicts because another device moved J1 on to
 * PARTIALLYCOMPLETED: judged from its merge alone it would be rebased, and the transition with it,
 * completing the job on the server. Decided whole, it is parked (DESIGN.md: the server is neither
 * at `to` nor terminal).
 */
static void test_fsa_engine_sync__group_cut_by_resolve_batch_decided_whole(void **state)
{
    fx_t *f = *state;
    start(f, NULL);
    make_device(f, 0);
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "J1", NULL, NULL, &rec));
    assert_fsa_ok(fsa_journal_transition(f->j, FSA_TYPE_JOBNEED, "J1", "INPROGRESS", NULL, &rec));
    fsa_engine_t *e = engine(f, f->srv.url, NULL);
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(e, &r));
    /* another device moves J1 on; this one does not pull it before pushing */
    char op[512];
    tc_op(op, sizeof op, NULL, "transition", "jobneed", "J1",
          ",\"field\":\"jobstatus\",\"from\":\"INPROGRESS\",\"to\":\"PARTIALLYCOMPLETED\"");
    fsa_codec_result_t *res = NULL;
    size_t nres = 0;
    assert_int_equal(tc_push(NULL, f->srv.url, 1, op, &res, &nres), 200);
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    fsa_codec_results_free(res, nres);
    /* 255 ops the server rejects (X is not on the server), so the bound falls after the merge */
    assert_fsa_ok(
        fsa_journal_fold(f->j, FSA_TYPE_TICKET, "X", 1,
                         "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                         "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}"));
    for (int i = 0; i < 255; i++)
        assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "X", "level", 1, NULL, &rec));
    fsa_op_t g[2];
    memset(g, 0, sizeof g);
    g[0].kind = FSA_OP_MERGE;
    g[0].type = FSA_TYPE_JOBNEED;
    snprintf(g[0].id, sizeof g[0].id, "J1");
    snprintf(g[0].field, sizeof g[0].field, "other_info");
    g[0].json = "{\"note\":\"x\"}";
    g[1].kind = FSA_OP_TRANSITION;
    g[1].type = FSA_TYPE_JOBNEED;
    snprintf(g[1].id, sizeof g[1].id, "J1");
    snprintf(g[1].to, sizeof g[1].to, "COMPLETED");
    assert_fsa_ok(fsa_journal_record_group(f->j, g, 2, NULL, &rec));
    assert_fsa_ok(fsa_engine_sync(e, &r));
    fsa_engine_free(e);
    char status[64];
    tc_field(NULL, f->srv.url, "jobneed", "J1", "jobstatus", status, sizeof status);
    assert_string_equal(status, "\"PARTIALLYCOMPLETED\"");
    assert_int_equal(r.conflict, 2);
    assert_int_equal(r.rejected, 255);
    assert_int_equal(r.rebased, 0);
    assert_int_equal(r.parked, 257);
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.conflicts, 2);
}

/* The first open conflict that is a kind op: *op_id set; false when there is none. */
typedef struct find_kind {
    fsa_op_kind_t kind;
    char op_id[FSA_UUID_STR_LEN];
    fsa_conflict_decision_t decision;
} find_kind_t;

static bool find_kind_cb(void *arg, const fsa_conflict_t *c)
{
    find_kind_t *k = arg;
    if (c->op.kind != k->kind)
        return true;
    snprintf(k->op_id, sizeof k->op_id, "%s", c->op.op_id);
    k->decision = c->decision;
    return false;
}

/* The SERVER_WON changes of op_id in the journal's change log. */
static int server_won_changes(fx_t *f, const char *op_id)
{
    fsa_change_t rows[64];
    size_t n = 0;
    int count = 0;
    for (int64_t after = 0;; after = rows[n - 1].seq) {
        assert_fsa_ok(fsa_journal_changes_read(f->j, after, rows, 64, &n));
        for (size_t i = 0; i < n; i++)
            count += rows[i].reason == FSA_CHANGE_SERVER_WON && strcmp(rows[i].op_id, op_id) == 0;
        if (n < 64)
            return count;
    }
}

/*
 * A group [set T1, merge into J1] conflicts because another device changed T1's priority: the
 * group's verdict is "server wins" (a merge alone would be rebased). A build before decisions were
 * taken for a whole group at once stored them member by member, and a crash between the two left
 * the set decided and the merge not. Judged alone next time, the merge rebased, and the rebase
 * recorded the whole group again: the set too, which then overwrote the other device's priority.
 * The undecided member now takes its group's decision, whether the decided one is listed before
 * it or after it, and the member decided before is not told again.
 */
static void half_decided_group_keeps_its_decision(void **state, bool merge_first)
{
    fx_t *f = *state;
    start(f, NULL);
    make_device(f, 0);
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "J1", NULL, NULL, &rec));
    fsa_engine_t *e = engine(f, f->srv.url, NULL);
    fsa_sync_report_t r;
    assert_fsa_ok(fsa_engine_sync(e, &r));
    fsa_engine_free(e);
    char op[512];
    tc_op(op, sizeof op, NULL, "set", "ticket", "T1",
          ",\"base_version\":1,\"fields\":{\"priority\":\"HIGH\"}");
    fsa_codec_result_t *res = NULL;
    size_t nres = 0;
    assert_int_equal(tc_push(NULL, f->srv.url, 1, op, &res, &nres), 200);
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    fsa_codec_results_free(res, nres);
    fsa_op_t g[2];
    memset(g, 0, sizeof g);
    fsa_op_t *set_op = &g[merge_first ? 1 : 0], *merge_op = &g[merge_first ? 0 : 1];
    set_op->kind = FSA_OP_SET;
    set_op->type = FSA_TYPE_TICKET;
    snprintf(set_op->id, sizeof set_op->id, "T1");
    set_op->json = "{\"priority\":\"LOW\"}";
    merge_op->kind = FSA_OP_MERGE;
    merge_op->type = FSA_TYPE_JOBNEED;
    snprintf(merge_op->id, sizeof merge_op->id, "J1");
    snprintf(merge_op->field, sizeof merge_op->field, "other_info");
    merge_op->json = "{\"note\":\"x\"}";
    assert_fsa_ok(fsa_journal_record_group(f->j, g, 2, NULL, &rec));
    e = engine(f, f->srv.url, NULL);
    assert_fsa_ok(fsa_engine_sync(e, &r));
    fsa_engine_free(e);
    assert_int_equal(r.server_wins, 2);
    find_kind_t set = {.kind = FSA_OP_SET}, merge = {.kind = FSA_OP_MERGE};
    assert_fsa_ok(fsa_conflicts_each(f->j, false, find_kind_cb, &set));
    assert_fsa_ok(fsa_conflicts_each(f->j, false, find_kind_cb, &merge));
    assert_int_equal(set.decision, FSA_DECISION_SERVER_WINS);
    assert_int_equal(merge.decision, FSA_DECISION_SERVER_WINS);
    /* The merge is the one left undecided: alone, it would rebase. */
    const find_kind_t *blank = &merge, *kept = &set;
    /* The journal as a crash between the two decisions of an older build left it. */
    fsa_journal_close(f->j);
    f->j = NULL;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE conflicts SET decision='' WHERE op_id='%s'", blank->op_id);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_changes(db), 1);
    sqlite3_close(db);
    fsa_journal_opts_t o = {0};
    char err[256];
    assert_fsa_ok(fsa_journal_open(f->port, f->db, &o, &f->j, err, sizeof err));
    e = engine(f, f->srv.url, NULL);
    assert_fsa_ok(fsa_engine_sync(e, &r));
    fsa_engine_free(e);
    char v[64];
    tc_field(NULL, f->srv.url, "ticket", "T1", "priority", v, sizeof v);
    assert_string_equal(v, "\"HIGH\""); /* the other device's change stands */
    assert_int_equal(r.pushed, 0);
    assert_int_equal(r.rebased, 0);
    for (int k = 0; k < 2; k++) {
        find_kind_t now = {.kind = k == 0 ? FSA_OP_SET : FSA_OP_MERGE};
        assert_fsa_ok(fsa_conflicts_each(f->j, false, find_kind_cb, &now));
        assert_int_equal(now.decision, FSA_DECISION_SERVER_WINS);
    }
    /* Once each: the member decided before is not told again. */
    assert_int_equal(server_won_changes(f, kept->op_id), 1);
    assert_int_equal(server_won_changes(f, blank->op_id), 2);
}

/* The undecided member comes after the decided one (by seq). */
static void test_fsa_engine_sync__half_decided_group_keeps_its_decision(void **state)
{
    half_decided_group_keeps_its_decision(state, false);
}

/* ... and before it (the decision is seen after the member was collected). */
static void test_fsa_engine_sync__half_decided_group_decided_after_its_member(void **state)
{
    half_decided_group_keeps_its_decision(state, true);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_fsa_engine_sync__clock_one_hour_ahead),
        T(test_fsa_engine_sync__clock_one_hour_behind),
        T(test_fsa_engine_sync__unreachable_backs_off_per_policy),
        T(test_fsa_engine_sync__a_clock_set_back_does_not_keep_the_backoff),
        T(test_fsa_engine_sync__retry_after_is_honoured),
        T(test_fsa_engine_sync__a_long_retry_after_ends_the_cycle),
        T(test_fsa_engine_sync__status_and_nothing_pending),
        T(test_fsa_engine_sync__foreign_answer_keeps_ops),
        T(test_fsa_engine_sync__gone_dropped_unless_ours_is_on_it),
        T(test_fsa_engine_sync__pull_over_own_limit_asks_for_less),
        T(test_fsa_engine_sync__answers_over_the_value_bound_asked_for_smaller),
        T(test_fsa_engine_sync__pipelined_batches_land_once_in_order),
        T(test_fsa_engine_new__options_out_of_range_refused),
        T(test_fsa_engine_sync__lost_results_resent_not_applied_twice),
        T(test_fsa_engine_sync__set_after_own_conflict_never_overwrites_unseen_change),
        T(test_fsa_engine_sync__group_cut_by_resolve_batch_decided_whole),
        T(test_fsa_engine_sync__half_decided_group_keeps_its_decision),
        T(test_fsa_engine_sync__half_decided_group_decided_after_its_member),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
