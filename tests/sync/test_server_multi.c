/* fieldsync tests: several fieldsync-server processes on one database behave as one server: a
 * nonce seen by one is a replay at the other, the same op sent to both at once applies once, a
 * push cut by a SIGKILL goes through the other exactly once; and op outcomes expire. On SQLite,
 * and on PostgreSQL with FSA_TEST_DB=postgresql (tests/sync/CMakeLists.txt). */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "port/alloc.h"
#include "sync/transport.h"
#include "tests/sync/pg_harness.h"
#include "tests/sync/server_client.h"
#include "tests/test_util.h"

#define OPBUF 2048

static th_server_t g_a, g_b;

static int setup(void **state)
{
    (void)state;
    memset(&g_a, 0, sizeof g_a);
    if (!th_dir_make(g_a.dir) || !th_write_files(&g_a, 8) || !th_backend_db(g_a.db, sizeof g_a.db))
        return -1;
    g_b = g_a;
    return th_server_start(&g_a, NULL) && th_server_start(&g_b, NULL) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int rc = th_server_stop(&g_b);
    rc |= th_server_stop(&g_a);
    th_dir_remove(g_a.dir);
    return rc == 0 ? 0 : -1;
}

/* The error code of an answer body ("" when none). */
static void answer_code(const th_resp_t *r, char *code, size_t cap)
{
    code[0] = '\0';
    const char *p = r->body != NULL ? strstr(r->body, "\"code\":\"") : NULL;
    if (p != NULL)
        snprintf(code, cap, "%.*s", (int)strcspn(p + 8, "\""), p + 8);
}

static void test_server_multi__nonce_replayed_at_the_other_process(void **state)
{
    (void)state;
    const char *nonces[] = {"5a5a5a5a5a5a5a5a0123456789abcdef", "0f0f0f0f0f0f0f0f0123456789abcdef"};
    for (int i = 0; i < 2; i++) {
        const th_server_t *first = i == 0 ? &g_a : &g_b, *second = i == 0 ? &g_b : &g_a;
        th_req_opts_t o = {.nonce = nonces[i]};
        th_resp_t r;
        char code[32];
        assert_true(
            th_request(NULL, first->url, "GET", "/v1/devices/dev001/changes", 1, NULL, 0, &o, &r));
        assert_int_equal(r.status, 200);
        th_resp_free(&r);
        assert_true(
            th_request(NULL, second->url, "GET", "/v1/devices/dev001/changes", 1, NULL, 0, &o, &r));
        assert_int_equal(r.status, 401);
        answer_code(&r, code, sizeof code);
        assert_string_equal(code, "replay");
        th_resp_free(&r);
        /* And at the first process too, a push with the same nonce. */
        assert_true(th_request(NULL, first->url, "POST", "/v1/devices/dev001/ops", 1,
                               "{\"batch_id\":\"b\",\"ops\":[]}", 25, &o, &r));
        assert_int_equal(r.status, 401);
        th_resp_free(&r);
    }
}

typedef struct sender {
    const char *url;
    const char *ops;
    pthread_barrier_t *start;
    long http;
    fsa_codec_result_t *res;
    size_t n;
} sender_t;

static void *sender_main(void *arg)
{
    sender_t *s = arg;
    CURL *h = curl_easy_init();
    pthread_barrier_wait(s->start);
    s->http = tc_push(h, s->url, 2, s->ops, &s->res, &s->n);
    curl_easy_cleanup(h);
    return NULL;
}

/* The same batch sent to both processes at the same moment, 30 times: each op applies once, and
 * both answers name the same version (one applied, the other a duplicate of it). */
static void test_server_multi__same_op_at_both_processes_at_once(void **state)
{
    (void)state;
    assert_int_equal(tc_seed(NULL, g_a.url, "ticket", "T-twice", "{}"), 201);
    enum { ROUNDS = 30 };
    for (int round = 0; round < ROUNDS; round++) {
        char ops[2 * OPBUF];
        char a[OPBUF], b[OPBUF];
        snprintf(ops, sizeof ops, "%s,%s",
                 tc_op(a, sizeof a, NULL, "increment", "ticket", "T-twice",
                       ",\"field\":\"level\",\"by\":1"),
                 tc_op(b, sizeof b, NULL, "append", "ticket", "T-twice",
                       ",\"field\":\"ticketlog\",\"key\":\"ticket_history\",\"item\":1"));
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        sender_t s[2] = {{g_a.url, ops, &start, 0, NULL, 0}, {g_b.url, ops, &start, 0, NULL, 0}};
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&t[i], NULL, sender_main, &s[i]), 0);
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&start);
        for (int k = 0; k < 2; k++) {
            assert_int_equal(s[0].http, 200);
            assert_int_equal(s[1].http, 200);
            const fsa_codec_result_t *x = &s[0].res[k], *y = &s[1].res[k];
            int applied = (x->status == FSA_RESULT_APPLIED) + (y->status == FSA_RESULT_APPLIED);
            int dup = (x->status == FSA_RESULT_DUPLICATE && x->original == FSA_RESULT_APPLIED) +
                      (y->status == FSA_RESULT_DUPLICATE && y->original == FSA_RESULT_APPLIED);
            if (applied != 1 || dup != 1 || x->version != y->version)
                fail_msg("round %d op %d: %s v%lld and %s v%lld", round, k,
                         fsa_result_status_name(x->status), (long long)x->version,
                         fsa_result_status_name(y->status), (long long)y->version);
        }
        for (int i = 0; i < 2; i++)
            fsa_codec_results_free(s[i].res, s[i].n);
    }
    char level[32];
    tc_field(NULL, g_b.url, "ticket", "T-twice", "level", level, sizeof level);
    assert_int_equal(strtol(level, NULL, 10), ROUNDS);
    assert_int_equal(tc_get(NULL, g_b.url, "ticket", "T-twice", NULL), 1 + 2 * ROUNDS);
}

typedef struct killer_push {
    const char *url;
    char (*batches)[12 * OPBUF];
    int count;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int sent; /* batches answered 200; under lock */
} killer_push_t;

static void *killed_pusher_main(void *arg)
{
    killer_push_t *k = arg;
    CURL *h = curl_easy_init();
    for (int i = 0; i < k->count; i++) {
        fsa_codec_result_t *res = NULL;
        size_t n = 0;
        long st = tc_push(h, k->url, 3, k->batches[i], &res, &n);
        fsa_codec_results_free(res, n);
        if (st != 200)
            break; /* the process is gone */
        pthread_mutex_lock(&k->lock);
        k->sent++;
        pthread_cond_signal(&k->cond);
        pthread_mutex_unlock(&k->lock);
    }
    pthread_mutex_lock(&k->lock);
    k->count = -1; /* done: wakes the waiter even if fewer batches went through */
    pthread_cond_signal(&k->cond);
    pthread_mutex_unlock(&k->lock);
    curl_easy_cleanup(h);
    return NULL;
}

/* A third process takes pushes and is SIGKILLed in the middle of them; then every batch is sent
 * again through another process, as an agent retries: every op is on the server exactly once. */
static void test_server_multi__killed_mid_push_retry_elsewhere_exactly_once(void **state)
{
    (void)state;
    assert_int_equal(tc_seed(NULL, g_a.url, "ticket", "T-kill", "{}"), 201);
    enum { BATCHES = 60, OPS = 10 };
    char(*batches)[12 * OPBUF] = fsa_calloc(BATCHES, sizeof *batches);
    assert_non_null(batches);
    for (int i = 0; i < BATCHES; i++) {
        size_t n = 0;
        for (int j = 0; j < OPS; j++) {
            char op[OPBUF];
            tc_op(op, sizeof op, NULL, "increment", "ticket", "T-kill",
                  ",\"field\":\"level\",\"by\":1");
            n += (size_t)snprintf(batches[i] + n, sizeof batches[i] - n, "%s%s", j ? "," : "", op);
        }
    }
    th_server_t c = g_a;
    assert_true(th_server_start(&c, NULL));
    killer_push_t k = {c.url, batches, BATCHES, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                       0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, killed_pusher_main, &k), 0);
    /* Kill once some batches were answered (the pusher's own progress is the signal), while it
     * keeps sending back to back. */
    pthread_mutex_lock(&k.lock);
    while (k.sent < 5 && k.count > 0)
        pthread_cond_wait(&k.cond, &k.lock);
    pthread_mutex_unlock(&k.lock);
    assert_int_equal(th_server_kill(&c), 128 + SIGKILL);
    pthread_join(t, NULL);
    int sent = k.sent;
    assert_true(sent < BATCHES); /* the kill cut the pushes short */
    assert_true(sent >= 5);
    /* The retry: every batch, through process B. */
    CURL *h = curl_easy_init();
    int applied = 0, dups = 0;
    for (int i = 0; i < BATCHES; i++) {
        fsa_codec_result_t *res = NULL;
        size_t n = 0;
        assert_int_equal(tc_push(h, g_b.url, 3, batches[i], &res, &n), 200);
        for (size_t j = 0; j < n; j++) {
            applied += res[j].status == FSA_RESULT_APPLIED;
            dups += res[j].status == FSA_RESULT_DUPLICATE;
        }
        fsa_codec_results_free(res, n);
    }
    curl_easy_cleanup(h);
    fsa_free(batches);
    assert_int_equal(applied + dups, BATCHES * OPS);
    assert_true(dups >= sent * OPS); /* what the killed process answered was committed */
    char level[32];
    tc_field(NULL, g_a.url, "ticket", "T-kill", "level", level, sizeof level);
    assert_int_equal(strtol(level, NULL, 10), BATCHES * OPS);
    assert_int_equal(tc_get(NULL, g_a.url, "ticket", "T-kill", NULL), 1 + BATCHES * OPS);
}

enum { FEED_WRITERS = 8, FEED_EACH = 40, FEED_PULLERS = 3 };

typedef struct feed_writer {
    int index;
    pthread_barrier_t *start;
    int applied;
} feed_writer_t;

/* Creates FEED_EACH jobneeds, one push each, alternating the processes. */
static void *feed_writer_main(void *arg)
{
    feed_writer_t *w = arg;
    CURL *h = curl_easy_init();
    pthread_barrier_wait(w->start);
    for (int i = 0; i < FEED_EACH; i++) {
        char id[32], op[OPBUF];
        snprintf(id, sizeof id, "J-feed-%d", w->index * FEED_EACH + i);
        tc_op(op, sizeof op, NULL, "create", "jobneed", id, "");
        fsa_codec_result_t *res = NULL;
        size_t n = 0;
        if (tc_push(h, (i + w->index) % 2 ? g_b.url : g_a.url, 4, op, &res, &n) == 200 && n == 1 &&
            res[0].status == FSA_RESULT_APPLIED)
            w->applied++;
        fsa_codec_results_free(res, n);
    }
    curl_easy_cleanup(h);
    return NULL;
}

typedef struct feed_puller {
    int index;
    atomic_int *writers_done;
    pthread_barrier_t *start;
    bool seen[FEED_WRITERS * FEED_EACH];
    bool ok;
} feed_puller_t;

/* Pulls with its own cursor, page by page, each page at the next process, while the writers run
 * and once more after they stopped. Every entity is created once and never changed again: a
 * change the cursor passed over would be missing for good. */
static void *feed_puller_main(void *arg)
{
    feed_puller_t *p = arg;
    CURL *h = curl_easy_init();
    char cursor[FSA_CODEC_CURSOR_BYTES] = "";
    int page = p->index;
    p->ok = true;
    pthread_barrier_wait(p->start);
    for (bool last = false; !last;) {
        last = atomic_load(p->writers_done) != 0;
        for (bool more = true; more && p->ok; page++) {
            char path[160 + FSA_CODEC_CURSOR_BYTES];
            snprintf(path, sizeof path, "/v1/devices/dev005/changes?limit=5%s%s",
                     cursor[0] ? "&since=" : "", cursor);
            th_resp_t r;
            fsa_codec_pull_t pl;
            if (!th_request(h, page % 2 ? g_b.url : g_a.url, "GET", path, 5, NULL, 0, NULL, &r) ||
                r.status != 200 || fsa_codec_decode_pull(r.body, r.len, &pl) != FSA_OK) {
                th_resp_free(&r);
                p->ok = false;
                break;
            }
            th_resp_free(&r);
            for (size_t i = 0; i < pl.count; i++) {
                int k = -1;
                if (sscanf(pl.changes[i].id, "J-feed-%d", &k) == 1 && k >= 0 &&
                    k < FEED_WRITERS * FEED_EACH)
                    p->seen[k] = true;
            }
            snprintf(cursor, sizeof cursor, "%s", pl.cursor);
            more = pl.more;
            fsa_codec_pull_free(&pl);
        }
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* The change feed never skips: writers commit at both processes while pullers follow their
 * cursors across both processes; every puller ends up with every entity. */
static void test_server_multi__feed_never_skips_under_concurrent_commits(void **state)
{
    (void)state;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, FEED_WRITERS + FEED_PULLERS);
    atomic_int done = 0;
    feed_writer_t w[FEED_WRITERS];
    feed_puller_t *p = fsa_calloc(FEED_PULLERS, sizeof *p);
    assert_non_null(p);
    pthread_t tw[FEED_WRITERS], tp[FEED_PULLERS];
    for (int i = 0; i < FEED_PULLERS; i++) {
        p[i].index = i;
        p[i].writers_done = &done;
        p[i].start = &start;
        assert_int_equal(pthread_create(&tp[i], NULL, feed_puller_main, &p[i]), 0);
    }
    for (int i = 0; i < FEED_WRITERS; i++) {
        w[i] = (feed_writer_t){i, &start, 0};
        assert_int_equal(pthread_create(&tw[i], NULL, feed_writer_main, &w[i]), 0);
    }
    for (int i = 0; i < FEED_WRITERS; i++) {
        pthread_join(tw[i], NULL);
        assert_int_equal(w[i].applied, FEED_EACH);
    }
    atomic_store(&done, 1);
    for (int i = 0; i < FEED_PULLERS; i++)
        pthread_join(tp[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < FEED_PULLERS; i++) {
        assert_true(p[i].ok);
        for (int k = 0; k < FEED_WRITERS * FEED_EACH; k++) {
            if (!p[i].seen[k])
                fail_msg("puller %d never saw J-feed-%d", i, k);
        }
    }
    fsa_free(p);
}

/* The number after "key": in the admin statistics of a server. */
static int64_t stat_of(const char *url, const char *key)
{
    th_req_opts_t o = {.bearer = TH_ADMIN_TOKEN};
    th_resp_t r;
    if (!th_request(NULL, url, "GET", "/admin/v1/stats", 0, NULL, 0, &o, &r) || r.status != 200)
        fail_msg("stats answered %ld", r.status);
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(r.body, pat);
    assert_non_null(p);
    int64_t v = strtoll(p + strlen(pat), NULL, 10);
    th_resp_free(&r);
    return v;
}

/* Every line the two processes logged is one of the server's own ("fieldsync-server: ..."): on
 * PostgreSQL the second process's start printed libpq's raw "NOTICE:  relation ... already exists,
 * skipping", which a log monitor keyed on the prefix could not place. (On SQLite there is no such
 * notice: the check is the PostgreSQL run's, test_sync_server_multi_pg.) */
static void test_server_multi__every_log_line_is_the_server_s(void **state)
{
    (void)state;
    FILE *fp = fopen(g_b.errlog, "r");
    assert_non_null(fp);
    char line[4096];
    while (fgets(line, sizeof line, fp) != NULL) {
        if (strncmp(line, "fieldsync-server: ", 18) != 0)
            fail_msg("a line not of the server's own: %s", line);
    }
    (void)fclose(fp);
}

/* Retention: with --op-retention-days set to about 0.9 s, the sweeper removes op outcomes in the
 * background; an op resent after that applies again (hence the default of 180 days). */
static void test_server_multi__op_outcomes_expire(void **state)
{
    (void)state;
    th_server_t s;
    memset(&s, 0, sizeof s);
    assert_true(th_dir_make(s.dir));
    assert_true(th_write_files(&s, 2));
    assert_true(th_backend_db(s.db, sizeof s.db));
    const char *extra[] = {"--op-retention-days", "0.00001", NULL};
    assert_true(th_server_start(&s, extra));
    assert_int_equal(tc_seed(NULL, s.url, "ticket", "T-ret", "{}"), 201);
    char op[OPBUF];
    tc_op(op, sizeof op, NULL, "increment", "ticket", "T-ret", ",\"field\":\"level\",\"by\":1");
    fsa_codec_result_t *res = NULL;
    size_t n = 0;
    assert_int_equal(tc_push(NULL, s.url, 1, op, &res, &n), 200);
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    fsa_codec_results_free(res, n);
    /* Waits on the server's own statistics (the sweeper counts what it removed), at most 60 s. */
    int64_t expired = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        expired = stat_of(s.url, "ops_expired");
        clock_gettime(CLOCK_MONOTONIC, &t1);
    } while (expired < 2 && t1.tv_sec - t0.tv_sec < 60);
    assert_true(expired >= 2); /* the seed's create and the increment */
    assert_int_equal(stat_of(s.url, "ops"), 0);
    assert_int_equal(tc_push(NULL, s.url, 1, op, &res, &n), 200);
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    assert_int_equal(res[0].version, 3);
    fsa_codec_results_free(res, n);
    assert_int_equal(th_server_stop(&s), 0);
    /* A retention that short is said at the start (it breaks idempotency for late resends). */
    char log[4096] = "";
    FILE *fp = fopen(s.errlog, "r");
    assert_non_null(fp);
    size_t got = fread(log, 1, sizeof log - 1, fp);
    (void)fclose(fp);
    log[got] = '\0';
    assert_non_null(strstr(log, "warning: op outcomes are kept only 0.864 s"));
    th_dir_remove(s.dir);
}

int main(void)
{
    if (fsa_transport_global_init() != FSA_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_multi__every_log_line_is_the_server_s),
        cmocka_unit_test(test_server_multi__nonce_replayed_at_the_other_process),
        cmocka_unit_test(test_server_multi__same_op_at_both_processes_at_once),
        cmocka_unit_test(test_server_multi__killed_mid_push_retry_elsewhere_exactly_once),
        cmocka_unit_test(test_server_multi__feed_never_skips_under_concurrent_commits),
        cmocka_unit_test(test_server_multi__op_outcomes_expire),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
