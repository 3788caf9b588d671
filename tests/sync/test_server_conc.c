/* fieldsync tests: PROTOCOL.md section 6 conformance under concurrency: many devices (threads)
 * pushing at once to the real fieldsync-server; with FSA_TEST_PROCS=N to N server processes on one
 * database (each device at process device % N), and FSA_TEST_DB=postgresql on PostgreSQL
 * (tests/sync/CMakeLists.txt registers the variants). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "port/alloc.h"
#include "sync/transport.h"
#include "tests/sync/pg_harness.h"
#include "tests/sync/server_client.h"
#include "tests/test_util.h"

/* Devices (threads) of the increment, append and merge tests; -DNDEV=300 tries more. */
#ifndef NDEV
#define NDEV 100
#endif
#define OPBUF 2048
/* Server processes sharing the database: FSA_TEST_PROCS (1..PROCS_MAX, default 1). */
#define PROCS_MAX 4
static th_server_t g_procs[PROCS_MAX];
static int g_nproc = 1;
/* The first process: seeds and reads go there. */
#define g_srv (g_procs[0])

/* The URL of the process that serves device (or pull page) i. */
static const char *url_of(int i)
{
    return g_procs[i % g_nproc].url;
}

static int setup(void **state)
{
    (void)state;
    const char *procs = getenv("FSA_TEST_PROCS");
    g_nproc = procs != NULL ? (int)strtol(procs, NULL, 10) : 1;
    if (g_nproc < 1 || g_nproc > PROCS_MAX)
        return -1;
    memset(g_procs, 0, sizeof g_procs);
    if (!th_dir_make(g_srv.dir) || !th_write_files(&g_srv, NDEV) ||
        !th_backend_db(g_srv.db, sizeof g_srv.db))
        return -1;
    for (int i = 1; i < g_nproc; i++)
        g_procs[i] = g_srv;
    for (int i = 0; i < g_nproc; i++) {
        if (!th_server_start(&g_procs[i], NULL))
            return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int rc = 0;
    for (int i = g_nproc - 1; i >= 0; i--)
        rc |= th_server_stop(&g_procs[i]);
    th_dir_remove(g_srv.dir);
    return rc == 0 ? 0 : -1;
}

typedef struct worker {
    int device;
    int pushes;         /* how many pushes of one op each */
    char ops[4][OPBUF]; /* the op of each push */
    pthread_barrier_t *start;
    long http[4];
    fsa_codec_result_t *res[4]; /* the results of each push */
    size_t nres[4];
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    CURL *h = curl_easy_init();
    pthread_barrier_wait(w->start);
    for (int i = 0; i < w->pushes; i++) {
        w->http[i] = tc_push(h, url_of(w->device), w->device, w->ops[i], &w->res[i], &w->nres[i]);
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* Runs n workers at once (released together by a barrier); counts results by status. */
static void run_workers(worker_t *w, int n, int counts[FSA__RESULT_COUNT], bool keep)
{
    pthread_t *t = fsa_calloc((size_t)n, sizeof *t);
    assert_non_null(t);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        w[i].start = &start;
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    fsa_free(t);
    memset(counts, 0, sizeof(int) * FSA__RESULT_COUNT);
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < w[i].pushes; k++) {
            if (w[i].http[k] != 200)
                fail_msg("device %d push %d answered %ld", w[i].device, k, w[i].http[k]);
            for (size_t r = 0; r < w[i].nres[k]; r++)
                counts[w[i].res[k][r].status]++;
            if (!keep) {
                fsa_codec_results_free(w[i].res[k], w[i].nres[k]);
                w[i].res[k] = NULL;
            }
        }
    }
}

static void test_server_conc__100_increments_of_one_level(void **state)
{
    (void)state;
    assert_int_equal(tc_seed(NULL, g_srv.url, "ticket", "T-inc", "{}"), 201);
    worker_t *w = fsa_calloc(NDEV, sizeof *w);
    assert_non_null(w);
    for (int i = 0; i < NDEV; i++) {
        w[i].device = i;
        w[i].pushes = 1;
        tc_op(w[i].ops[0], OPBUF, NULL, "increment", "ticket", "T-inc",
              ",\"field\":\"level\",\"by\":1");
    }
    int counts[FSA__RESULT_COUNT];
    run_workers(w, NDEV, counts, false);
    assert_int_equal(counts[FSA_RESULT_APPLIED], NDEV);
    char v[64], want[64];
    tc_field(NULL, g_srv.url, "ticket", "T-inc", "level", v, sizeof v);
    snprintf(want, sizeof want, "%d", NDEV);
    assert_string_equal(v, want);
    char *f = NULL;
    assert_int_equal(tc_get(NULL, g_srv.url, "ticket", "T-inc", &f), 1 + NDEV);
    fsa_free(f);
    fsa_free(w);
}

static void test_server_conc__200_appends_to_one_history(void **state)
{
    (void)state;
    assert_int_equal(tc_seed(NULL, g_srv.url, "ticket", "T-app", "{}"), 201);
    worker_t *w = fsa_calloc(NDEV, sizeof *w);
    assert_non_null(w);
    for (int i = 0; i < NDEV; i++) {
        w[i].device = i;
        w[i].pushes = 2;
        for (int k = 0; k < 2; k++) {
            char extra[128];
            snprintf(extra, sizeof extra,
                     ",\"field\":\"ticketlog\",\"key\":\"ticket_history\",\"item\":\"d%d-%d\"", i,
                     k);
            tc_op(w[i].ops[k], OPBUF, NULL, "append", "ticket", "T-app", extra);
        }
    }
    int counts[FSA__RESULT_COUNT];
    run_workers(w, NDEV, counts, false);
    assert_int_equal(counts[FSA_RESULT_APPLIED], 2 * NDEV);
    char *log = fsa_malloc(65536);
    assert_non_null(log);
    tc_field(NULL, g_srv.url, "ticket", "T-app", "ticketlog", log, 65536);
    for (int i = 0; i < NDEV; i++) {
        for (int k = 0; k < 2; k++) {
            char item[32];
            snprintf(item, sizeof item, "\"d%d-%d\"", i, k);
            if (strstr(log, item) == NULL)
                fail_msg("append %s is missing", item);
        }
    }
    fsa_free(log);
    fsa_free(w);
}

static void test_server_conc__100_merges_of_distinct_keys(void **state)
{
    (void)state;
    assert_int_equal(tc_seed(NULL, g_srv.url, "jobneed", "J-merge", "{}"), 201);
    worker_t *w = fsa_calloc(NDEV, sizeof *w);
    assert_non_null(w);
    for (int i = 0; i < NDEV; i++) {
        w[i].device = i;
        w[i].pushes = 1;
        char extra[128];
        snprintf(extra, sizeof extra, ",\"field\":\"other_info\",\"patch\":{\"k%d\":%d}", i, i);
        tc_op(w[i].ops[0], OPBUF, NULL, "merge", "jobneed", "J-merge", extra);
    }
    int counts[FSA__RESULT_COUNT];
    run_workers(w, NDEV, counts, false);
    assert_int_equal(counts[FSA_RESULT_APPLIED], NDEV);
    char *info = fsa_malloc(65536);
    assert_non_null(info);
    tc_field(NULL, g_srv.url, "jobneed", "J-merge", "other_info", info, 65536);
    for (int i = 0; i < NDEV; i++) {
        char kv[32];
        snprintf(kv, sizeof kv, "\"k%d\":%d", i, i);
        if (strstr(info, kv) == NULL)
            fail_msg("merge %s is missing", kv);
    }
    fsa_free(info);
    fsa_free(w);
}

static void test_server_conc__50_devices_race_one_transition(void **state)
{
    (void)state;
    assert_int_equal(tc_seed(NULL, g_srv.url, "jobneed", "J-race", "{}"), 201);
    enum { RACERS = 50 };
    worker_t *w = fsa_calloc(RACERS, sizeof *w);
    assert_non_null(w);
    for (int i = 0; i < RACERS; i++) {
        w[i].device = i;
        w[i].pushes = 1;
        tc_op(w[i].ops[0], OPBUF, NULL, "transition", "jobneed", "J-race",
              ",\"field\":\"jobstatus\",\"from\":\"ASSIGNED\",\"to\":\"INPROGRESS\"");
    }
    int counts[FSA__RESULT_COUNT];
    run_workers(w, RACERS, counts, false);
    assert_int_equal(counts[FSA_RESULT_APPLIED], 1);
    assert_int_equal(counts[FSA_RESULT_CONFLICT], RACERS - 1);
    char *f = NULL;
    assert_int_equal(tc_get(NULL, g_srv.url, "jobneed", "J-race", &f), 2);
    fsa_free(f);
    fsa_free(w);
}

static void test_server_conc__racing_stale_sets_and_groups(void **state)
{
    (void)state;
    /* Every device sets seqno based on version 1 inside a group with a merge: exactly one group
     * applies, every other group applies nothing (no merge key of a losing device survives). */
    assert_int_equal(tc_seed(NULL, g_srv.url, "jobneed", "J-grp", "{}"), 201);
    assert_int_equal(tc_seed(NULL, g_srv.url, "jobneed", "J-grp-cp", "{}"), 201);
    enum { RACERS = 40 };
    worker_t *w = fsa_calloc(RACERS, sizeof *w);
    assert_non_null(w);
    for (int i = 0; i < RACERS; i++) {
        w[i].device = i;
        w[i].pushes = 1;
        char a[OPBUF / 2 - 8], b[OPBUF / 2 - 8], extra[160];
        snprintf(extra, sizeof extra,
                 ",\"group\":\"g%d\",\"field\":\"other_info\",\"patch\":{\"by%d\":true}", i, i);
        tc_op(a, sizeof a, NULL, "merge", "jobneed", "J-grp-cp", extra);
        snprintf(extra, sizeof extra,
                 ",\"group\":\"g%d\",\"base_version\":1,\"fields\":{\"seqno\":%d}", i, i + 1);
        tc_op(b, sizeof b, NULL, "set", "jobneed", "J-grp", extra);
        snprintf(w[i].ops[0], OPBUF, "%s,%s", a, b);
    }
    int counts[FSA__RESULT_COUNT];
    run_workers(w, RACERS, counts, true);
    assert_int_equal(counts[FSA_RESULT_APPLIED], 2);
    assert_int_equal(counts[FSA_RESULT_CONFLICT], 2 * (RACERS - 1));
    for (int i = 0; i < RACERS; i++) {
        /* Both ops of a group report the same outcome. */
        assert_int_equal(w[i].nres[0], 2);
        assert_int_equal(w[i].res[0][0].status, w[i].res[0][1].status);
        fsa_codec_results_free(w[i].res[0], w[i].nres[0]);
    }
    char *info = fsa_malloc(65536);
    assert_non_null(info);
    tc_field(NULL, g_srv.url, "jobneed", "J-grp-cp", "other_info", info, 65536);
    char seq[32];
    tc_field(NULL, g_srv.url, "jobneed", "J-grp", "seqno", seq, sizeof seq);
    int winner = (int)strtol(seq, NULL, 10) - 1;
    assert_true(winner >= 0 && winner < RACERS);
    for (int i = 0; i < RACERS; i++) {
        char key[32];
        snprintf(key, sizeof key, "\"by%d\"", i);
        if ((strstr(info, key) != NULL) != (i == winner))
            fail_msg("device %d: merge present=%d, winner %d: %s", i, strstr(info, key) != NULL,
                     winner, info);
    }
    char *f = NULL;
    assert_int_equal(tc_get(NULL, g_srv.url, "jobneed", "J-grp", &f), 2);
    fsa_free(f);
    assert_int_equal(tc_get(NULL, g_srv.url, "jobneed", "J-grp-cp", &f), 2);
    fsa_free(f);
    fsa_free(info);
    fsa_free(w);
}

typedef struct puller {
    atomic_int *writers_done;
    int64_t seen_version[20]; /* the highest version pulled of each ticket T-pull-<i> */
    int pages;
    bool ok;
} puller_t;

/* Pulls with its cursor while writers run, then once more after they finished, until more is
 * false; records the highest version seen of each ticket. Each page goes to the next process: the
 * cursor of one process is carried to another under concurrent commits. */
static void *puller_main(void *arg)
{
    puller_t *p = arg;
    CURL *h = curl_easy_init();
    char cursor[FSA_CODEC_CURSOR_BYTES] = "";
    p->ok = true;
    for (int guard = 0; guard < 100000; guard++) {
        bool finished = atomic_load(p->writers_done) != 0;
        bool more = true;
        while (more) {
            char path[160 + FSA_CODEC_CURSOR_BYTES];
            snprintf(path, sizeof path, "/v1/devices/dev099/changes?limit=7%s%s",
                     cursor[0] ? "&since=" : "", cursor);
            th_resp_t r;
            fsa_codec_pull_t pl;
            if (!th_request(h, url_of(p->pages), "GET", path, 99, NULL, 0, NULL, &r) ||
                r.status != 200 || fsa_codec_decode_pull(r.body, r.len, &pl) != FSA_OK) {
                th_resp_free(&r);
                p->ok = false;
                curl_easy_cleanup(h);
                return NULL;
            }
            th_resp_free(&r);
            for (size_t i = 0; i < pl.count; i++) {
                int k = -1;
                if (sscanf(pl.changes[i].id, "T-pull-%d", &k) == 1 && k >= 0 && k < 20 &&
                    pl.changes[i].version > p->seen_version[k])
                    p->seen_version[k] = pl.changes[i].version;
            }
            snprintf(cursor, sizeof cursor, "%s", pl.cursor);
            more = pl.more;
            fsa_codec_pull_free(&pl);
            p->pages++;
        }
        if (finished)
            break;
    }
    curl_easy_cleanup(h);
    return NULL;
}

static void test_server_conc__pull_cursor_misses_nothing_under_writes(void **state)
{
    (void)state;
    enum { TICKETS = 20, WRITERS = 40 };
    for (int i = 0; i < TICKETS; i++) {
        char id[32];
        snprintf(id, sizeof id, "T-pull-%d", i);
        assert_int_equal(tc_seed(NULL, g_srv.url, "ticket", id, "{}"), 201);
    }
    worker_t *w = fsa_calloc(WRITERS, sizeof *w);
    assert_non_null(w);
    for (int i = 0; i < WRITERS; i++) {
        w[i].device = i;
        w[i].pushes = 4;
        for (int k = 0; k < 4; k++) {
            char id[32];
            snprintf(id, sizeof id, "T-pull-%d", (i + k) % TICKETS);
            tc_op(w[i].ops[k], OPBUF, NULL, "increment", "ticket", id,
                  ",\"field\":\"level\",\"by\":1");
        }
    }
    atomic_int done = 0;
    puller_t p = {&done, {0}, 0, false};
    pthread_t pt;
    assert_int_equal(pthread_create(&pt, NULL, puller_main, &p), 0);
    int counts[FSA__RESULT_COUNT];
    run_workers(w, WRITERS, counts, false);
    atomic_store(&done, 1);
    pthread_join(pt, NULL);
    assert_true(p.ok);
    assert_int_equal(counts[FSA_RESULT_APPLIED], WRITERS * 4);
    /* Every ticket got WRITERS * 4 / TICKETS increments: the puller ends at each final version. */
    for (int i = 0; i < TICKETS; i++) {
        char id[32], *f = NULL;
        snprintf(id, sizeof id, "T-pull-%d", i);
        int64_t v = tc_get(NULL, g_srv.url, "ticket", id, &f);
        fsa_free(f);
        assert_int_equal(v, 1 + WRITERS * 4 / TICKETS);
        assert_int_equal(p.seen_version[i], v);
    }
    fsa_free(w);
}

int main(void)
{
    if (fsa_transport_global_init() != FSA_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_conc__100_increments_of_one_level),
        cmocka_unit_test(test_server_conc__200_appends_to_one_history),
        cmocka_unit_test(test_server_conc__100_merges_of_distinct_keys),
        cmocka_unit_test(test_server_conc__50_devices_race_one_transition),
        cmocka_unit_test(test_server_conc__racing_stale_sets_and_groups),
        cmocka_unit_test(test_server_conc__pull_cursor_misses_nothing_under_writes),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
