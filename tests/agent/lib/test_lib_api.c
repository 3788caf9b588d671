/* fieldsync tests: every public function of libfieldsync given bad arguments (a NULL handle, a
 * NULL out-parameter, a handle whose open failed, a struct of the wrong size): a status and a
 * message, never a crash, and out-parameters cleared. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "tests/agent/lib/lib_fixture.h"

/* Asserts that a call returned want. */
#define assert_st(want, expr)                                                                      \
    do {                                                                                           \
        fieldsync_status_t st_ = (expr);                                                           \
        if (st_ != (want))                                                                         \
            fail_msg("%s returned %d (%s), not %d", #expr, (int)st_, fieldsync_status_str(st_),    \
                     (int)(want));                                                                 \
    } while (0)

static void on_status(void *ctx, const fieldsync_sync_status_t *s)
{
    (void)ctx;
    (void)s;
}

static void on_change(void *ctx, const fieldsync_change_t *c)
{
    (void)ctx;
    (void)c;
}

static void on_conflict(void *ctx, const fieldsync_conflict_event_t *c)
{
    (void)ctx;
    (void)c;
}

/* A handle whose open of f->dir/name failed (no such journal, no init); its message names the
 * file as shown. */
static fieldsync_t *failed_open(const cfx_t *f, const char *name, const char *shown)
{
    char path[450];
    snprintf(path, sizeof path, "%s/%s", f->dir, name);
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = path;
    fieldsync_t *fs = NULL;
    assert_st(FIELDSYNC_ENOTFOUND, fieldsync_open(&cfg, &fs));
    assert_non_null(fs);
    assert_non_null(strstr(fieldsync_errmsg(fs), shown));
    return fs;
}

/* Every byte of a size-versioned struct of n bytes after its size member is zero. */
static void assert_zero_after_size(const void *out, size_t n)
{
    const unsigned char *b = out;
    for (size_t i = sizeof(uint32_t); i < n; i++)
        if (b[i] != 0)
            fail_msg("byte %zu of %zu is 0x%02x, not zero", i, n, b[i]);
}

/* Every function that takes a handle, on fs, must answer want. */
static void every_call(fieldsync_t *fs, fieldsync_status_t want)
{
    fieldsync_rec_t rec;
    memset(&rec, 0x55, sizeof rec);
    fieldsync_position_t pos = {.lat = 1, .lon = 2, .accuracy_m = 3};
    char *json = (char *)"x";
    fieldsync_lock_t *lock = (fieldsync_lock_t *)1;
    size_t n = 7;
    assert_st(want, fieldsync_lock_acquire(fs, "TICKET_ESCALATION", "ticket:T1", 0, &lock));
    assert_null(lock);
    assert_st(want, fieldsync_lock_stats(fs, &json));
    assert_null(json);
    assert_st(want, fieldsync_attendance(fs, true, "p", "s", &pos, NULL, NULL, &rec));
    assert_int_equal(rec.seq, 0);
    assert_int_equal(rec.op_id[0], 0);
    assert_st(want, fieldsync_job_create(fs, "J1", NULL, &rec));
    assert_st(want, fieldsync_job_set(fs, "J1", "{}", NULL, &rec));
    assert_st(want, fieldsync_job_merge(fs, "J1", "{}", NULL, &rec));
    assert_st(want, fieldsync_job_transition(fs, "J1", "INPROGRESS", NULL, &rec));
    assert_st(want, fieldsync_checkpoint_update(fs, "J1", "{}", NULL, &rec));
    assert_st(want, fieldsync_tour_update(fs, "J1", "{}", NULL, &n, &rec));
    assert_int_equal(n, 0);
    assert_st(want, fieldsync_ticket_create(fs, "T1", NULL, &rec));
    assert_st(want, fieldsync_ticket_transition(fs, "T1", "OPEN", NULL, &rec));
    assert_st(want, fieldsync_ticket_escalate(fs, "T1", NULL, NULL, NULL, &rec));
    assert_st(want, fieldsync_ticket_log(fs, "T1", "{}", NULL, &rec));
    assert_st(want, fieldsync_record(fs, "{}", NULL, &rec));
    json = (char *)"x";
    assert_st(want, fieldsync_get(fs, "ticket", "T1", &json));
    assert_null(json);
    fieldsync_query_t q = FIELDSYNC_QUERY_INIT;
    q.type = "ticket";
    json = (char *)"x";
    assert_st(want, fieldsync_list(fs, &q, &json));
    assert_null(json);
    fieldsync_sync_status_t s;
    memset(&s, 0x55, sizeof s); /* a failed call zeroes every member after the size */
    s.size = sizeof s;
    assert_st(want, fieldsync_status(fs, &s));
    assert_zero_after_size(&s, sizeof s);
    fieldsync_op_state_t os;
    assert_st(want, fieldsync_op_state(fs, "00000000-0000-4000-8000-000000000000", &os));
    json = (char *)"x";
    assert_st(want, fieldsync_info(fs, &json));
    assert_null(json);
    json = (char *)"x";
    assert_st(want, fieldsync_conflicts(fs, true, &json));
    assert_null(json);
    assert_st(want,
              fieldsync_conflict_resolve(fs, "00000000-0000-4000-8000-000000000000", true, &rec));
    assert_st(want, fieldsync_start(fs, 0));
    assert_st(want, fieldsync_sync_now(fs));
    assert_st(want, fieldsync_stop(fs));
    assert_st(want, fieldsync_reload(fs));
    fieldsync_report_t r;
    assert_st(want, fieldsync_sync_once(fs, false, &r));
    fieldsync_stats_t st;
    memset(&st, 0x55, sizeof st);
    st.size = sizeof st;
    assert_st(want, fieldsync_stats(fs, &st));
    assert_zero_after_size(&st, sizeof st);
    fieldsync_listener_t *tok = NULL;
    assert_st(want, fieldsync_add_status_listener(fs, on_status, NULL, &tok));
    assert_st(want, fieldsync_add_change_listener(fs, on_change, NULL, &tok));
    assert_st(want, fieldsync_add_conflict_listener(fs, on_conflict, NULL, &tok));
    assert_null(tok);
    assert_st(want, fieldsync_remove_listener(fs, (fieldsync_listener_t *)1));
    int fd = 5;
    assert_st(want, fieldsync_event_fd(fs, &fd));
    assert_int_equal(fd, -1);
    size_t delivered = 9;
    assert_st(want, fieldsync_dispatch(fs, &delivered));
    assert_int_equal(delivered, 0);
}

static void test_every_function__null_handle(void **state)
{
    (void)state;
    every_call(NULL, FIELDSYNC_EINVAL);
    assert_st(FIELDSYNC_OK, fieldsync_close(NULL));
    assert_non_null(fieldsync_errmsg(NULL));
    fieldsync_free(NULL);
}

static void test_every_function__failed_handle(void **state)
{
    cfx_t *f = *state;
    fieldsync_t *fs = failed_open(f, "missing.db", "missing.db");
    every_call(fs, FIELDSYNC_ECLOSED);
    /* its message says why, and that it is a failed handle */
    assert_non_null(strstr(fieldsync_errmsg(fs), "failed to open"));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));
}

static void test_every_function__null_arguments(void **state)
{
    cfx_t *f = *state;
    fieldsync_t *fs = f->fs;
    fieldsync_rec_t rec;
    assert_st(FIELDSYNC_EINVAL, fieldsync_lock_acquire(fs, NULL, "x", 0, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_lock_acquire(fs, "TICKET_ESCALATION", "x", 0, NULL));
    fieldsync_lock_t *lock = NULL;
    assert_st(FIELDSYNC_EINVAL, fieldsync_lock_acquire(fs, "TICKET_ESCALATION", NULL, 0, &lock));
    assert_st(FIELDSYNC_EINVAL, fieldsync_lock_token(NULL, NULL));
    int64_t token = 5;
    assert_st(FIELDSYNC_EINVAL, fieldsync_lock_token(NULL, &token));
    assert_int_equal(token, 0);
    assert_st(FIELDSYNC_EINVAL, fieldsync_lock_stats(fs, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_attendance(fs, true, NULL, "s", NULL, NULL, NULL, &rec));
    assert_non_null(strstr(fieldsync_errmsg(fs), "people_id"));
    assert_st(FIELDSYNC_EINVAL, fieldsync_job_create(fs, NULL, NULL, &rec));
    assert_non_null(strstr(fieldsync_errmsg(fs), "id"));
    assert_st(FIELDSYNC_EINVAL, fieldsync_job_set(fs, "J1", NULL, NULL, &rec));
    assert_non_null(strstr(fieldsync_errmsg(fs), "fields_json"));
    assert_st(FIELDSYNC_EINVAL, fieldsync_job_merge(fs, "J1", NULL, NULL, &rec));
    assert_st(FIELDSYNC_EINVAL, fieldsync_job_transition(fs, "J1", NULL, NULL, &rec));
    assert_st(FIELDSYNC_EINVAL, fieldsync_checkpoint_update(fs, NULL, "{}", NULL, &rec));
    assert_st(FIELDSYNC_EINVAL, fieldsync_checkpoint_update(fs, "C1", NULL, NULL, &rec));
    assert_st(FIELDSYNC_EINVAL, fieldsync_tour_update(fs, NULL, "{}", NULL, NULL, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_tour_update(fs, "T", NULL, NULL, NULL, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_ticket_create(fs, NULL, NULL, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_ticket_transition(fs, "T1", NULL, NULL, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_ticket_escalate(fs, NULL, NULL, NULL, NULL, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_ticket_log(fs, "T1", NULL, NULL, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_record(fs, NULL, NULL, NULL));
    /* a pointer that is not a lock of this library is refused, not used */
    fieldsync_lock_t *bogus = (fieldsync_lock_t *)fsa_calloc(1, 512);
    assert_non_null(bogus);
    assert_st(FIELDSYNC_EINVAL, fieldsync_ticket_log(fs, "T1", "{}", bogus, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_record(fs, "{}", bogus, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_lock_release(bogus));
    int64_t t = 1;
    assert_st(FIELDSYNC_EINVAL, fieldsync_lock_token(bogus, &t));
    fsa_free(bogus);
    char *json = NULL;
    assert_st(FIELDSYNC_EINVAL, fieldsync_get(fs, NULL, "T1", &json));
    assert_st(FIELDSYNC_EINVAL, fieldsync_get(fs, "ticket", NULL, &json));
    assert_st(FIELDSYNC_EINVAL, fieldsync_get(fs, "widget", "T1", &json));
    assert_non_null(strstr(fieldsync_errmsg(fs), "widget"));
    assert_st(FIELDSYNC_EINVAL, fieldsync_get(fs, "ticket", "T1", NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_list(fs, NULL, &json));
    fieldsync_query_t q = FIELDSYNC_QUERY_INIT;
    assert_st(FIELDSYNC_EINVAL, fieldsync_list(fs, &q, &json)); /* no type */
    q.type = "ticket";
    assert_st(FIELDSYNC_EINVAL, fieldsync_list(fs, &q, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_status(fs, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_op_state(fs, NULL, NULL));
    fieldsync_op_state_t os;
    assert_st(FIELDSYNC_EINVAL, fieldsync_op_state(fs, NULL, &os));
    assert_st(FIELDSYNC_EINVAL, fieldsync_conflicts(fs, false, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_conflict_resolve(fs, NULL, false, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_stats(fs, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_info(fs, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_set_log_level(NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_set_log_level("loud"));
    assert_non_null(strstr(fieldsync_errmsg(NULL), "loud"));
    assert_st(FIELDSYNC_OK, fieldsync_set_log_level("warn"));
    assert_st(FIELDSYNC_EINVAL, fieldsync_add_status_listener(fs, NULL, NULL, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_add_change_listener(fs, NULL, NULL, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_add_conflict_listener(fs, NULL, NULL, NULL));
    assert_st(FIELDSYNC_ENOTFOUND, fieldsync_remove_listener(fs, NULL));
    int fd = 3;
    assert_st(FIELDSYNC_EINVAL, fieldsync_event_fd(fs, &fd)); /* not buffered */
    assert_st(FIELDSYNC_EINVAL, fieldsync_event_fd(fs, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_dispatch(fs, NULL)); /* not buffered */
    assert_st(FIELDSYNC_EBUSY, fieldsync_sync_now(fs));        /* not started */
    assert_st(FIELDSYNC_OK, fieldsync_stop(fs));               /* not started: fine */
    assert_st(FIELDSYNC_EINVAL, fieldsync_start(fs, 0x80));    /* unknown flag */
    /* the handle still works */
    assert_fs_ok(fs, fieldsync_ticket_create(fs, "T1", NULL, NULL));
}

static void test_structs__wrong_sizes(void **state)
{
    cfx_t *f = *state;
    fieldsync_t *fs = f->fs;
    fieldsync_sync_status_t s;
    memset(&s, 0, sizeof s);
    assert_st(FIELDSYNC_EINVAL, fieldsync_status(fs, &s)); /* size 0 */
    s.size = 2;
    assert_st(FIELDSYNC_EINVAL, fieldsync_status(fs, &s));
    /* too small for the state: refused, and zeroed within the size the caller gave, not past it */
    memset(&s, 0x55, sizeof s);
    s.size = (uint32_t)offsetof(fieldsync_sync_status_t, state) + 2;
    assert_st(FIELDSYNC_EINVAL, fieldsync_status(fs, &s));
    assert_zero_after_size(&s, s.size);
    assert_int_equal(((unsigned char *)&s)[s.size], 0x55);
    /* a newer caller's larger struct: the tail it has and we do not is zeroed */
    struct {
        fieldsync_sync_status_t s;
        char tail[32];
    } big;
    memset(&big, 0x77, sizeof big);
    big.s.size = sizeof big;
    assert_fs_ok(fs, fieldsync_status(fs, &big.s));
    assert_int_equal(big.s.size, sizeof big);
    assert_int_equal(big.tail[0], 0);
    assert_int_equal(big.tail[31], 0);
    /* an older caller's smaller one: only its part is written */
    memset(&big, 0x77, sizeof big);
    big.s.size = (uint32_t)offsetof(fieldsync_sync_status_t, queue_depth);
    assert_fs_ok(fs, fieldsync_status(fs, &big.s));
    assert_int_equal(((unsigned char *)&big.s.queue_depth)[0], 0x77);

    fieldsync_query_t q = FIELDSYNC_QUERY_INIT;
    q.type = "ticket";
    char *json = NULL;
    q.size = 0;
    assert_st(FIELDSYNC_EINVAL, fieldsync_list(fs, &q, &json));
    q.size = 3;
    assert_st(FIELDSYNC_EINVAL, fieldsync_list(fs, &q, &json));
    assert_non_null(strstr(fieldsync_errmsg(fs), "size"));
    q.size = (uint32_t)(offsetof(fieldsync_query_t, type) + sizeof q.type); /* older: type only */
    assert_fs_ok(fs, fieldsync_list(fs, &q, &json));
    fieldsync_free(json);
    struct {
        fieldsync_query_t q;
        uint64_t more;
    } bq;
    memset(&bq, 0, sizeof bq);
    bq.q.size = sizeof bq;
    bq.q.type = "ticket";
    assert_fs_ok(fs, fieldsync_list(fs, &bq.q, &json));
    fieldsync_free(json);
    bq.more = 1;
    assert_st(FIELDSYNC_EUNSUPPORTED, fieldsync_list(fs, &bq.q, &json));
    assert_null(json);

    fieldsync_stats_t st;
    memset(&st, 0, sizeof st);
    assert_st(FIELDSYNC_EINVAL, fieldsync_stats(fs, &st));
    /* the statistics alike: a newer caller's tail is zeroed, an older one's is not written */
    struct {
        fieldsync_stats_t s;
        char tail[32];
    } bs;
    memset(&bs, 0xa5, sizeof bs);
    bs.s.size = sizeof bs;
    assert_fs_ok(fs, fieldsync_stats(fs, &bs.s));
    assert_int_equal(bs.s.size, sizeof bs);
    for (size_t i = 0; i < sizeof bs.tail; i++)
        assert_int_equal(bs.tail[i], 0);
    memset(&bs, 0xa5, sizeof bs);
    bs.s.size = (uint32_t)sizeof(uint32_t);
    assert_fs_ok(fs, fieldsync_stats(fs, &bs.s));
    assert_int_equal(((unsigned char *)&bs.s)[sizeof(uint32_t)], 0xa5);
}

static void test_open__bad_configs(void **state)
{
    cfx_t *f = *state;
    fieldsync_t *fs = (fieldsync_t *)1;
    assert_st(FIELDSYNC_EINVAL, fieldsync_open(NULL, NULL));
    assert_non_null(strstr(fieldsync_errmsg(NULL), "out"));
    assert_st(FIELDSYNC_EINVAL, fieldsync_open(NULL, &fs));
    assert_non_null(fs); /* a failed handle, to read the reason from */
    assert_non_null(strstr(fieldsync_errmsg(fs), "cfg"));
    assert_st(FIELDSYNC_ECLOSED, fieldsync_ticket_create(fs, "T", NULL, NULL));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));

    fieldsync_config_t cfg = cfx_config(f, 0);
    cfg.size = 0;
    assert_st(FIELDSYNC_EINVAL, fieldsync_open(&cfg, &fs));
    assert_non_null(strstr(fieldsync_errmsg(fs), "size"));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));
    cfg.size = 13;
    assert_st(FIELDSYNC_EINVAL, fieldsync_open(&cfg, &fs));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));
    /* an older caller: only the members up to device_id; the rest are defaults */
    cfg.size = (uint32_t)(offsetof(fieldsync_config_t, device_id) + sizeof cfg.device_id);
    assert_fs_ok(fs, fieldsync_open(&cfg, &fs));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));
    /* a newer caller: its unknown members zero is fine, set is not */
    struct {
        fieldsync_config_t c;
        uint64_t newer[2];
    } big;
    memset(&big, 0, sizeof big);
    big.c = cfx_config(f, 0);
    big.c.size = sizeof big;
    assert_fs_ok(fs, fieldsync_open(&big.c, &fs));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));
    big.newer[1] = 42;
    assert_st(FIELDSYNC_EUNSUPPORTED, fieldsync_open(&big.c, &fs));
    assert_non_null(strstr(fieldsync_errmsg(fs), "knows only"));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));
    /* unknown flags, durability, negative figures, missing path, missing init members */
    cfg = cfx_config(f, 0x100);
    assert_st(FIELDSYNC_EUNSUPPORTED, fieldsync_open(&cfg, &fs));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));
    cfg = cfx_config(f, 0);
    cfg.durability = (fieldsync_durability_t)7;
    assert_st(FIELDSYNC_EINVAL, fieldsync_open(&cfg, &fs));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));
    cfg = cfx_config(f, 0);
    cfg.budget_bytes = -1;
    assert_st(FIELDSYNC_EINVAL, fieldsync_open(&cfg, &fs));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));
    cfg = cfx_config(f, 0);
    cfg.journal_path = NULL;
    assert_st(FIELDSYNC_EINVAL, fieldsync_open(&cfg, &fs));
    assert_non_null(strstr(fieldsync_errmsg(fs), "journal_path"));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));
    cfg = cfx_config(f, FIELDSYNC_OPEN_INIT);
    cfg.secret_file = NULL;
    assert_st(FIELDSYNC_EINVAL, fieldsync_open(&cfg, &fs));
    assert_non_null(strstr(fieldsync_errmsg(fs), "secret_file"));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));
    cfg = cfx_config(f, FIELDSYNC_OPEN_INIT);
    cfg.device_id = "bad id!";
    assert_st(FIELDSYNC_EINVAL, fieldsync_open(&cfg, &fs));
    assert_non_null(strstr(fieldsync_errmsg(fs), "device id"));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));
    cfg = cfx_config(f, FIELDSYNC_OPEN_INIT);
    cfg.ca_file = "/nonexistent/ca.pem";
    assert_st(FIELDSYNC_ENOTFOUND, fieldsync_open(&cfg, &fs));
    assert_non_null(strstr(fieldsync_errmsg(fs), "CA file"));
    assert_st(FIELDSYNC_OK, fieldsync_close(fs));
    /* A CA file or client certificate that holds no certificate fails at init, not at the first
     * sync, and leaves no journal (the secret file stands in for any text file). */
    char journal[sizeof f->dir + 32];
    snprintf(journal, sizeof journal, "%s/new.db", f->dir);
    const char *what[] = {"CA file", "client certificate"};
    for (int i = 0; i < 2; i++) {
        cfg = cfx_config(f, FIELDSYNC_OPEN_INIT);
        cfg.journal_path = journal;
        if (i == 0) {
            cfg.ca_file = f->secret;
        } else {
            cfg.client_cert = f->secret;
            cfg.client_key = f->secret;
        }
        assert_st(FIELDSYNC_EINVAL, fieldsync_open(&cfg, &fs));
        const char *msg = fieldsync_errmsg(fs);
        if (strstr(msg, what[i]) == NULL || strstr(msg, "holds no PEM certificate") == NULL ||
            strchr(msg, '\n') != NULL)
            fail_msg("%s that is not one: \"%s\"", what[i], msg);
        assert_st(FIELDSYNC_OK, fieldsync_close(fs));
        assert_int_equal(access(journal, F_OK), -1);
    }
}

typedef struct thread_arg {
    fieldsync_t *fs;
    char seen_before[64], seen_after[512];
} thread_arg_t;

/* Another thread: sees none of the main thread's message, fails its own call, reads its own. */
static void *other_thread(void *p)
{
    thread_arg_t *a = p;
    snprintf(a->seen_before, sizeof a->seen_before, "%s", fieldsync_errmsg(a->fs));
    if (fieldsync_get(a->fs, "ticket", "FROM_THREAD", &(char *){NULL}) == FIELDSYNC_ENOTFOUND)
        snprintf(a->seen_after, sizeof a->seen_after, "%s", fieldsync_errmsg(a->fs));
    return NULL;
}

static void test_errmsg__per_handle_and_per_thread(void **state)
{
    cfx_t *f = *state;
    fieldsync_config_t cfg = cfx_config(f, 0);
    fieldsync_t *other = NULL;
    assert_fs_ok(other, fieldsync_open(&cfg, &other));
    assert_st(FIELDSYNC_ENOTFOUND, fieldsync_job_set(f->fs, "NOPE", "{}", NULL, NULL));
    assert_st(FIELDSYNC_EINVAL, fieldsync_job_create(other, "bad id", NULL, NULL));
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "NOPE"));
    assert_non_null(strstr(fieldsync_errmsg(other), "bad id"));
    assert_fs_ok(other, fieldsync_close(other));
    thread_arg_t a = {.fs = f->fs};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_thread, &a), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_string_equal(a.seen_before, "");
    assert_non_null(strstr(a.seen_after, "FROM_THREAD"));
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "NOPE")); /* this thread's, unchanged */
    /* names: never NULL, also for unknown values */
    assert_string_equal(fieldsync_status_str(FIELDSYNC_ECLOSED), "handle is closed");
    assert_string_equal(fieldsync_status_str((fieldsync_status_t)999), "unknown status");
    assert_non_null(fieldsync_state_str((fieldsync_state_t)99));
    assert_non_null(fieldsync_change_reason_str((fieldsync_change_reason_t)99));
    char v[16];
    snprintf(v, sizeof v, "%d.%d.%d", FIELDSYNC_VERSION_MAJOR, FIELDSYNC_VERSION_MINOR,
             FIELDSYNC_VERSION_PATCH);
    assert_string_equal(fieldsync_version(), v);
}

/* A message is one line: a newline in what it quotes (here a path) is shown as '?'. */
static void test_errmsg__one_line(void **state)
{
    fieldsync_t *fs = failed_open(*state, "two\nlines.db", "two?lines.db");
    assert_null(strchr(fieldsync_errmsg(fs), '\n'));
    assert_fs_ok(fs, fieldsync_close(fs));
}

/* The person a ticket is escalated to is a person's id: "" (which unassigned the ticket), a
 * control character or more than 128 bytes is FIELDSYNC_EINVAL, and nothing is recorded. */
static void test_escalate__person_must_be_an_id(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_ticket_create(f->fs, "T1", "{\"assignedto\":\"bob\"}", NULL));
    char long_to[130];
    memset(long_to, 'p', 129);
    long_to[129] = '\0';
    const char *bad[] = {"", "bob\nx", "\033[2J", long_to};
    fieldsync_rec_t rec;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_st(FIELDSYNC_EINVAL,
                  fieldsync_ticket_escalate(f->fs, "T1", bad[i], NULL, NULL, &rec));
        assert_non_null(strstr(fieldsync_errmsg(f->fs), "person to escalate to"));
    }
    char *json = NULL;
    assert_fs_ok(f->fs, fieldsync_get(f->fs, "ticket", "T1", &json));
    if (strstr(json, "\"assignedto\":\"bob\"") == NULL || strstr(json, "\"level\":0") == NULL)
        fail_msg("a refused escalation changed the ticket: %s", json);
    fieldsync_free(json);
    long_to[128] = '\0'; /* 128 bytes: an id */
    assert_fs_ok(f->fs, fieldsync_ticket_escalate(f->fs, "T1", long_to, NULL, NULL, &rec));
}

/* A note or a site over the journal's bound for a string (64 KiB) is refused at once, naming it,
 * and always as EINVAL: before, it was copied into a buffer six times its size first, and past
 * ~11 MB the same mistake came back as ETOOLARGE. So is an empty note. */
static void test_strings__over_the_bound_refused_first(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_ticket_create(f->fs, "T1", NULL, NULL));
    const size_t sizes[] = {64 * 1024 + 1, 20u * 1024 * 1024};
    fieldsync_rec_t rec;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        char *big = fsa_malloc(sizes[i] + 1);
        assert_non_null(big);
        memset(big, 'n', sizes[i]);
        big[sizes[i]] = '\0';
        assert_st(FIELDSYNC_EINVAL, fieldsync_ticket_escalate(f->fs, "T1", NULL, big, NULL, &rec));
        assert_non_null(strstr(fieldsync_errmsg(f->fs), "the note is over 65536 bytes"));
        assert_st(FIELDSYNC_EINVAL,
                  fieldsync_attendance(f->fs, true, "p1", big, NULL, NULL, NULL, &rec));
        assert_non_null(strstr(fieldsync_errmsg(f->fs), "the site_id is over 65536 bytes"));
        fsa_free(big);
    }
    /* An empty note is no note: refused (it was recorded as a history entry saying ""). */
    assert_st(FIELDSYNC_EINVAL, fieldsync_ticket_escalate(f->fs, "T1", NULL, "", NULL, &rec));
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "the note is empty"));
    char *json = NULL;
    assert_fs_ok(f->fs, fieldsync_get(f->fs, "ticket", "T1", &json));
    if (strstr(json, "\"level\":0") == NULL)
        fail_msg("a refused escalation changed the ticket: %s", json);
    fieldsync_free(json);
}

/* Every allocation of a call failed in turn: a status (never a crash, never a leak under ASan),
 * and a call that succeeds did its work. */
static void test_calls__each_allocation_failing(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_ticket_create(f->fs, "T1", NULL, NULL));
    fieldsync_config_t cfg = cfx_config(f, 0);
    int oks = 0;
    for (unsigned long n = 1; n < 2000; n++) {
        fsa_alloc_fail_nth(n);
        fieldsync_t *fs = NULL;
        fieldsync_status_t st = fieldsync_open(&cfg, &fs);
        bool fired = fsa_alloc_fault_fired();
        fsa_alloc_fail_nth(0);
        assert_true(st == FIELDSYNC_OK || fieldsync_errmsg(fs) != NULL);
        assert_st(FIELDSYNC_OK, fieldsync_close(fs));
        if (!fired)
            break;
    }
    for (unsigned long n = 1; n < 2000; n++) {
        fsa_alloc_fail_nth(n);
        fieldsync_status_t st =
            fieldsync_ticket_escalate(f->fs, "T1", "p\"7", "note \\ x", NULL, NULL);
        bool fired = fsa_alloc_fault_fired();
        fsa_alloc_fail_nth(0);
        if (st == FIELDSYNC_OK)
            oks++;
        else if (fieldsync_errmsg(f->fs)[0] == '\0')
            fail_msg("escalate failed with %s and no message", fieldsync_status_str(st));
        if (!fired)
            break;
    }
    /* the reads and the generic builder: a status each, never a crash */
    for (unsigned long n = 1; n < 2000; n++) {
        char *json = NULL;
        fieldsync_query_t q = FIELDSYNC_QUERY_INIT;
        q.type = "ticket";
        fsa_alloc_fail_nth(n);
        fieldsync_status_t sts[4];
        sts[0] = fieldsync_get(f->fs, "ticket", "T1", &json);
        fieldsync_free(json);
        json = NULL;
        sts[1] = fieldsync_list(f->fs, &q, &json);
        fieldsync_free(json);
        json = NULL;
        sts[2] = fieldsync_record(f->fs,
                                  "[{\"kind\":\"increment\",\"type\":\"ticket\",\"id\":\"T1\","
                                  "\"field\":\"level\",\"by\":0}]",
                                  NULL, NULL);
        sts[3] = fieldsync_lock_stats(f->fs, &json);
        (void)sts;
        fieldsync_free(json);
        bool fired = fsa_alloc_fault_fired();
        fsa_alloc_fail_nth(0);
        if (!fired)
            break;
    }
    /* every escalation that said OK is there, and no other */
    char want[32];
    snprintf(want, sizeof want, "\"level\":%d", oks);
    assert_true(cfx_has(f->fs, "ticket", "T1", want));
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, cfx_setup, cfx_teardown)
    const struct CMUnitTest tests[] = {
        T(test_every_function__null_handle),
        T(test_every_function__failed_handle),
        T(test_every_function__null_arguments),
        T(test_structs__wrong_sizes),
        T(test_open__bad_configs),
        T(test_errmsg__per_handle_and_per_thread),
        T(test_errmsg__one_line),
        T(test_calls__each_allocation_failing),
        T(test_escalate__person_must_be_an_id),
        T(test_strings__over_the_bound_refused_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
