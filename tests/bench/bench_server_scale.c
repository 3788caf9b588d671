/* fieldsync bench: fieldsync-server at fleet scale: apply throughput on SQLite and PostgreSQL with
 * 1, 2 and 4 server processes on one database, and the time of a scoped pull as the store grows. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#ifdef FSA_TEST_HAVE_PG
#include <libpq-fe.h>
#endif

#include "port/alloc.h"
#include "port/port.h"
#include "sync/transport.h"
#include "tests/sync/pg_harness.h"
#include "tests/sync/server_client.h"

/*
 * 1. Apply: CLIENTS threads each push BATCHES batches of 500 ops (250 creates of new tickets, then
 *    an increment of each) to server process (thread % N), N = 1, 2, 4, all on one database;
 *    ops/s over the whole run. Baseline on PostgreSQL: bare libpq, the same number of rows keyed
 *    by op id, 500 per transaction, one connection, same cluster (fsync on).
 * 2. Scoped pull: a device whose scope holds 20 tickets pulls from the beginning, when the store
 *    holds 1,000 and then 100,000 entities; median of PULLS pulls. The figure is the time at
 *    100,000 against the baseline at 1,000 (ratio near 1: the cost follows the scope).
 */

#define CLIENTS 8
#define BATCHES 6
#define BATCH_OPS 500
#define PULLS 21
#define OPBUF 256

static double now_s(void)
{
    return (double)fsa_port_posix()->mono_now(NULL).ns / 1e9;
}

/* dev000..dev007 without scope; dev008 sees the tickets of person PX. */
static bool write_devices(const char *path)
{
    size_t cap = 16384, n = 0;
    char *text = fsa_malloc(cap);
    if (text == NULL)
        return false;
    n += (size_t)snprintf(text + n, cap - n, "{\"devices\":[");
    for (int i = 0; i <= CLIENTS; i++) {
        fsa_signer_key_t k;
        th_device_key(i, &k);
        n += (size_t)snprintf(text + n, cap - n, "%s{\"id\":\"dev%03d\",\"secret\":\"",
                              i ? "," : "", i);
        for (int j = 0; j < 32; j++)
            n += (size_t)snprintf(text + n, cap - n, "%02x", k.bytes[j]);
        n += (size_t)snprintf(text + n, cap - n, "\"%s}",
                              i == CLIENTS ? ",\"scope\":{\"people\":[\"PX\"]}" : "");
    }
    n += (size_t)snprintf(text + n, cap - n, "]}\n");
    FILE *f = fopen(path, "w");
    bool ok = f != NULL && fwrite(text, 1, n, f) == n;
    if (f != NULL)
        ok = fclose(f) == 0 && ok;
    fsa_free(text);
    return ok;
}

/* Batch b of client c: 250 creates, then an increment of each; tag makes ids unique per run. */
static char *apply_batch(const char *tag, int c, int b, size_t *len)
{
    size_t cap = (size_t)BATCH_OPS * OPBUF + 128, n = 0;
    char *body = fsa_malloc(cap);
    if (body == NULL)
        return NULL;
    n += (size_t)snprintf(body + n, cap - n, "{\"batch_id\":\"%s-%d-%d\",\"ops\":[", tag, c, b);
    for (int k = 0; k < BATCH_OPS; k++) {
        char id[48], op[OPBUF];
        snprintf(id, sizeof id, "%s-%d-%d-%d", tag, c, b, k % (BATCH_OPS / 2));
        if (k < BATCH_OPS / 2)
            tc_op(op, sizeof op, NULL, "create", "ticket", id,
                  ",\"fields\":{\"assignedto\":\"p\"}");
        else
            tc_op(op, sizeof op, NULL, "increment", "ticket", id, ",\"field\":\"level\",\"by\":1");
        n += (size_t)snprintf(body + n, cap - n, "%s%s", k ? "," : "", op);
    }
    n += (size_t)snprintf(body + n, cap - n, "]}");
    *len = n;
    return body;
}

typedef struct client {
    const char *url;
    int index;
    const char *tag;
    pthread_barrier_t *start;
    int failures;
} client_t;

static void *client_main(void *arg)
{
    client_t *c = arg;
    CURL *h = curl_easy_init();
    char path[64];
    snprintf(path, sizeof path, "/v1/devices/dev%03d/ops", c->index);
    char *bodies[BATCHES];
    size_t lens[BATCHES];
    for (int b = 0; b < BATCHES; b++)
        bodies[b] = apply_batch(c->tag, c->index, b, &lens[b]);
    pthread_barrier_wait(c->start);
    for (int b = 0; b < BATCHES; b++) {
        th_resp_t r;
        if (bodies[b] == NULL ||
            !th_request(h, c->url, "POST", path, c->index, bodies[b], lens[b], NULL, &r) ||
            r.status != 200 || strstr(r.body, "\"rejected\"") != NULL ||
            strstr(r.body, "\"conflict\"") != NULL)
            c->failures++;
        th_resp_free(&r);
        fsa_free(bodies[b]);
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* Starts nproc servers on db, runs the clients, stops the servers; ops/s (0 on failure). */
static double run_apply(const th_server_t *base, int nproc, const char *tag)
{
    th_server_t procs[4];
    for (int i = 0; i < nproc; i++) {
        procs[i] = *base;
        if (!th_server_start(&procs[i], NULL))
            return 0;
    }
    client_t c[CLIENTS];
    pthread_t t[CLIENTS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, CLIENTS + 1);
    for (int i = 0; i < CLIENTS; i++) {
        c[i] = (client_t){procs[i % nproc].url, i, tag, &start, 0};
        pthread_create(&t[i], NULL, client_main, &c[i]);
    }
    pthread_barrier_wait(&start);
    double t0 = now_s();
    int failures = 0;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(t[i], NULL);
        failures += c[i].failures;
    }
    double dt = now_s() - t0;
    pthread_barrier_destroy(&start);
    for (int i = nproc - 1; i >= 0; i--)
        th_server_stop(&procs[i]);
    if (failures > 0) {
        fprintf(stderr, "bench_server_scale: %d failed batches (%s)\n", failures, tag);
        return 0;
    }
    return (double)CLIENTS * BATCHES * BATCH_OPS / dt;
}

#ifdef FSA_TEST_HAVE_PG
/* The baseline: bare libpq, the same number of rows keyed by a UUID-like op id, 500 per
 * transaction, one connection. */
static double pg_baseline(const th_pg_t *pg)
{
    char uri[256];
    if (!th_pg_createdb(pg, "baseline", uri, sizeof uri))
        return 0;
    PGconn *c = PQconnectdb(uri);
    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return 0;
    }
    PQclear(PQexec(c, "CREATE TABLE t(op_id text PRIMARY KEY, op text NOT NULL)"));
    const int total = CLIENTS * BATCHES * BATCH_OPS;
    double t0 = now_s();
    for (int i = 0; i < total; i++) {
        if (i % BATCH_OPS == 0)
            PQclear(PQexec(c, "BEGIN"));
        char id[40], op[OPBUF];
        tc_op_id(id);
        tc_op(op, sizeof op, id, "increment", "ticket", "T", ",\"field\":\"level\",\"by\":1");
        const char *p[] = {id, op};
        PQclear(PQexecParams(c, "INSERT INTO t VALUES ($1, $2)", 2, NULL, p, NULL, NULL, 0));
        if (i % BATCH_OPS == BATCH_OPS - 1)
            PQclear(PQexec(c, "COMMIT"));
    }
    double dt = now_s() - t0;
    PQfinish(c);
    return total / dt;
}
#endif

/* Seeds `count` tickets (20 of them assigned to PX, spread out) through pushes of 500 creates. */
static bool seed(const char *url, int from, int count)
{
    CURL *h = curl_easy_init();
    size_t cap = (size_t)BATCH_OPS * OPBUF + 128;
    char *body = fsa_malloc(cap);
    bool ok = body != NULL;
    for (int start = from; ok && start < from + count; start += BATCH_OPS) {
        size_t n = (size_t)snprintf(body, cap, "{\"batch_id\":\"seed-%d\",\"ops\":[", start);
        for (int i = start; i < start + BATCH_OPS && i < from + count; i++) {
            char id[32], op[OPBUF], extra[64];
            snprintf(id, sizeof id, "E-%d", i);
            /* PX holds 20 tickets in all, the first 20 multiples of 50 (all in the first 1000);
             * the others go to 997 other people. */
            if (i % 50 == 0 && i < 1000)
                snprintf(extra, sizeof extra, ",\"fields\":{\"assignedto\":\"PX\"}");
            else
                snprintf(extra, sizeof extra, ",\"fields\":{\"assignedto\":\"P%d\"}", i % 997);
            tc_op(op, sizeof op, NULL, "create", "ticket", id, extra);
            n += (size_t)snprintf(body + n, cap - n, "%s%s", i > start ? "," : "", op);
        }
        n += (size_t)snprintf(body + n, cap - n, "]}");
        th_resp_t r;
        ok = th_request(h, url, "POST", "/v1/devices/dev000/ops", 0, body, n, NULL, &r) &&
             r.status == 200 && strstr(r.body, "\"rejected\"") == NULL;
        th_resp_free(&r);
    }
    fsa_free(body);
    curl_easy_cleanup(h);
    return ok;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median time (ms) of the scoped device's pull from the beginning; -1 on failure. */
static double scoped_pull_ms(const char *url)
{
    double ms[PULLS];
    CURL *h = curl_easy_init();
    const char *path = "/v1/devices/dev008/changes?limit=1000";
    for (int i = 0; i < PULLS; i++) {
        double t0 = now_s();
        th_resp_t r;
        bool ok = th_request(h, url, "GET", path, CLIENTS, NULL, 0, NULL, &r) && r.status == 200;
        ms[i] = (now_s() - t0) * 1000.0;
        fsa_codec_pull_t p;
        if (ok && fsa_codec_decode_pull(r.body, r.len, &p) == FSA_OK) {
            ok = p.count == 20;
            fsa_codec_pull_free(&p);
        } else {
            ok = false;
        }
        th_resp_free(&r);
        if (!ok) {
            curl_easy_cleanup(h);
            return -1;
        }
    }
    curl_easy_cleanup(h);
    qsort(ms, PULLS, sizeof ms[0], cmp_double);
    return ms[PULLS / 2];
}

/* Runs both figures on one backend (db: a SQLite path or a PostgreSQL URI maker). */
/* Refreshes the planner's statistics (what autovacuum does on its own a little later). */
static void analyze(const char *db)
{
#ifdef FSA_TEST_HAVE_PG
    if (strstr(db, "://") == NULL)
        return;
    PGconn *c = PQconnectdb(db);
    if (PQstatus(c) == CONNECTION_OK)
        PQclear(PQexec(c, "ANALYZE"));
    PQfinish(c);
#else
    (void)db;
#endif
}

static int run_backend(const char *name, th_server_t *base, bool (*fresh_db)(th_server_t *, int),
                       double bare, const char *bare_name)
{
    int rc = 0;
    double rate[3] = {0};
    const int procs[3] = {1, 2, 4};
    for (int i = 0; i < 3; i++) {
        char tag[16];
        snprintf(tag, sizeof tag, "a%d", procs[i]);
        if (!fresh_db(base, i))
            return 1;
        rate[i] = run_apply(base, procs[i], tag);
        printf("%s: apply with %d process%s: %.0f ops/s\n", name, procs[i],
               procs[i] > 1 ? "es" : "", rate[i]);
        /* Against the bare database where there is one (PostgreSQL: libpq), else against one
         * process (how it scales). */
        double b = bare > 0 ? bare : rate[0];
        printf("BENCH {\"name\":\"server.%s.apply_%dproc\",\"value\":%.0f,\"unit\":\"ops/s\","
               "\"baseline\":%.0f,\"baseline_name\":\"%s\",\"ratio\":%.2f}\n",
               name, procs[i], rate[i], b, bare > 0 ? bare_name : "server.sqlite.apply_1proc",
               b > 0 ? rate[i] / b : 0.0);
        rc |= rate[i] <= 0;
    }
    /* Scoped pulls: 1,000 entities, then 99,000 more. */
    if (!fresh_db(base, 3))
        return 1;
    th_server_t s = *base;
    if (!th_server_start(&s, NULL))
        return 1;
    double small = -1, large = -1;
    if (seed(s.url, 0, 1000))
        small = scoped_pull_ms(s.url);
    double t0 = now_s();
    if (small >= 0 && seed(s.url, 1000, 99000))
        large = scoped_pull_ms(s.url);
    double seed_s = now_s() - t0;
    if (large >= 0 && strstr(base->db, "://") != NULL) {
        analyze(base->db);
        double analyzed = scoped_pull_ms(s.url);
        printf("%s: scoped pull at 100,000 right after seeding: %.2f ms; after ANALYZE (what "
               "autovacuum does soon after): %.2f ms\n",
               name, large, analyzed);
        large = analyzed;
    }
    th_server_stop(&s);
    printf("%s: scoped pull (20 of the store's entities): %.2f ms at 1,000 entities, %.2f ms at "
           "100,000 (seeding 99,000 took %.1f s)\n",
           name, small, large, seed_s);
    printf("BENCH {\"name\":\"server.%s.scoped_pull_100k\",\"value\":%.2f,\"unit\":\"ms\","
           "\"baseline\":%.2f,\"baseline_name\":\"server.%s.scoped_pull_1k\",\"ratio\":%.2f}\n",
           name, large, small, name, large > 0 ? small / large : 0.0);
    return rc | (small < 0 || large < 0);
}

static bool fresh_sqlite(th_server_t *s, int i)
{
    snprintf(s->db, sizeof s->db, "%s/scale%d.db", s->dir, i);
    return true;
}

#ifdef FSA_TEST_HAVE_PG
static th_pg_t g_pg;

static bool fresh_pg(th_server_t *s, int i)
{
    char name[32];
    snprintf(name, sizeof name, "scale%d", i);
    return th_pg_createdb(&g_pg, name, s->db, sizeof s->db);
}
#endif

int main(void)
{
    if (fsa_transport_global_init() != FSA_OK)
        return 1;
    th_server_t base;
    memset(&base, 0, sizeof base);
    if (!th_dir_make(base.dir) || !th_write_files(&base, CLIENTS + 1) ||
        !write_devices(base.devices)) {
        fprintf(stderr, "bench_server_scale: cannot write the server's files\n");
        return 1;
    }
    int rc = run_backend("sqlite", &base, fresh_sqlite, 0, "");
#ifdef FSA_TEST_HAVE_PG
    if (!th_pg_start(&g_pg, true)) {
        fprintf(stderr, "bench_server_scale: no PostgreSQL cluster\n");
        rc = 1;
    } else {
        double bare = pg_baseline(&g_pg);
        printf("postgresql: bare libpq inserts, 500 per transaction: %.0f rows/s\n", bare);
        rc |= run_backend("postgresql", &base, fresh_pg, bare, "libpq.insert_batch500");
        th_pg_stop(&g_pg);
    }
#else
    printf("postgresql: not built (no libpq)\n");
#endif
    th_dir_remove(base.dir);
    curl_global_cleanup();
    return rc;
}
