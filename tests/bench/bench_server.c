/* fieldsync bench: fieldsync-server apply throughput and push latency, with a same-run baseline. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <sqlite3.h>

#include "port/alloc.h"
#include "port/port.h"
#include "sync/codec.h"
#include "sync/transport.h"
#include "tests/bench/proc_cpu.h"
#include "tests/sync/pg_harness.h"
#include "tests/sync/server_client.h"

/*
 * 1. Apply throughput: BATCHES pushes of 500 mixed ops each (create, increment, append, set on new
 *    tickets; merge on seeded jobneeds), one device, through HTTP, signed, every op applied. The
 *    baseline (base_batch) records the same ops with bare SQLite batched inserts, its batches
 *    interleaved with the server's (bench_apply).
 * 2. The decode of those bodies alone, against the cJSON tree decoder (bench_decode).
 * 3. Push latency: 100 devices (threads) each push ROUNDS 100-op batches at once; p50 and p99.
 */

#define BATCHES 20
#define BATCH_OPS 500
#define LAT_DEVICES 100
#define LAT_ROUNDS 5
#define LAT_OPS 100
#define OPBUF 512

static double now_s(void)
{
    return (double)fsa_port_posix()->mono_now(NULL).ns / 1e9;
}

/* Appends to a growing body buffer (bounded by cap; the bench sizes it generously). */
static void add(char *body, size_t cap, size_t *n, const char *s)
{
    size_t l = strlen(s);
    if (*n + l + 1 < cap) {
        memcpy(body + *n, s, l + 1);
        *n += l;
    }
}

static char *mixed_batch(int b, size_t *len)
{
    size_t cap = (size_t)BATCH_OPS * OPBUF + 256, n = 0;
    char *body = fsa_malloc(cap);
    if (body == NULL)
        return NULL;
    char op[OPBUF], id[32], extra[200];
    snprintf(body, cap, "{\"batch_id\":\"bench-%d\",\"ops\":[", b);
    n = strlen(body);
    const int per = BATCH_OPS / 5;
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < per; i++) {
            snprintf(id, sizeof id, "BT-%d-%d", b, i);
            switch (k) {
            case 0:
                tc_op(op, sizeof op, NULL, "create", "ticket", id,
                      ",\"fields\":{\"assignedto\":\"p1\"}");
                break;
            case 1:
                tc_op(op, sizeof op, NULL, "increment", "ticket", id,
                      ",\"field\":\"level\",\"by\":2");
                break;
            case 2:
                tc_op(op, sizeof op, NULL, "append", "ticket", id,
                      ",\"field\":\"ticketlog\",\"key\":\"ticket_history\","
                      "\"item\":{\"by\":\"p1\",\"note\":\"seen\"},\"max_len\":50");
                break;
            case 3:
                tc_op(op, sizeof op, NULL, "set", "ticket", id,
                      ",\"base_version\":3,\"fields\":{\"priority\":\"HIGH\"}");
                break;
            default:
                snprintf(id, sizeof id, "BJ-%d", i);
                snprintf(extra, sizeof extra, ",\"field\":\"other_info\",\"patch\":{\"b%d\":%d}", b,
                         i);
                tc_op(op, sizeof op, NULL, "merge", "jobneed", id, extra);
                break;
            }
            if (k > 0 || i > 0)
                add(body, cap, &n, ",");
            add(body, cap, &n, op);
        }
    }
    add(body, cap, &n, "]}");
    *len = n;
    return body;
}

static double apply_cpu_s = -1; /* the server's CPU time in the apply phase */

/*
 * The baseline: what any server has to do at the least to record a batch durably, bare. Each op
 * becomes one row keyed by its op_id (a fresh UUID, as on the wire) holding the op's JSON, 500 rows
 * per transaction, same directory, same pragmas as the server (WAL, synchronous=FULL).
 */
typedef struct base_db {
    sqlite3 *db;
    sqlite3_stmt *ins;
} base_db_t;

static bool base_open(const char *dir, base_db_t *bd)
{
    char path[400];
    snprintf(path, sizeof path, "%s/baseline.db", dir);
    memset(bd, 0, sizeof *bd);
    if (sqlite3_open(path, &bd->db) != SQLITE_OK ||
        sqlite3_exec(bd->db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     "CREATE TABLE t(op_id TEXT PRIMARY KEY, op TEXT NOT NULL) WITHOUT ROWID;",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(bd->db, "INSERT INTO t VALUES(?1, ?2)", -1, &bd->ins, NULL) !=
            SQLITE_OK) {
        sqlite3_close(bd->db);
        return false;
    }
    return true;
}

static void base_close(base_db_t *bd)
{
    sqlite3_finalize(bd->ins);
    sqlite3_close(bd->db);
}

/* One batch of the baseline: its seconds, or -1 when a statement failed. */
static double base_batch(base_db_t *bd, const char *body, size_t len)
{
    double t0 = now_s();
    bool ok = sqlite3_exec(bd->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    /* The ops of the batch body, one row each (split at the op objects' starts). */
    const char *p = strstr(body, "{\"op_id\":\"");
    while (ok && p != NULL && p < body + len) {
        const char *next = strstr(p + 1, "{\"op_id\":\"");
        size_t oplen = next != NULL ? (size_t)(next - p - 1) : strlen(p) - 2;
        sqlite3_bind_text(bd->ins, 1, p + 11, 36, SQLITE_STATIC);
        sqlite3_bind_text(bd->ins, 2, p, (int)oplen, SQLITE_STATIC);
        ok = sqlite3_step(bd->ins) == SQLITE_DONE;
        sqlite3_reset(bd->ins);
        p = next;
    }
    ok = sqlite3_exec(bd->db, ok ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK && ok;
    return ok ? now_s() - t0 : -1;
}

/* One batch pushed to the server: its seconds (a failed push counts in *failures). */
static double server_batch(th_server_t *s, CURL *h, int b, const char *body, size_t len,
                           int *failures)
{
    double t0 = now_s();
    th_resp_t r;
    th_request(h, s->url, "POST", "/v1/devices/dev000/ops", 0, body, len, NULL, &r);
    double dt = now_s() - t0;
    if (r.status != 200 || strstr(r.body, "\"conflict\"") != NULL ||
        strstr(r.body, "\"rejected\"") != NULL) {
        (*failures)++;
        if (*failures < 3)
            fprintf(stderr, "batch %d: %ld %.300s\n", b, r.status, r.body ? r.body : "");
    }
    th_resp_free(&r);
    return dt;
}

/*
 * The apply and its baseline, interleaved batch by batch (the baseline's batch b, then the
 * server's, then the server's b+1 before the baseline's b+1, ...), so that both see the same
 * minutes of a machine whose load moves from one second to the next; each side's rate is its
 * ops over the sum of its batches' times. Returns the server's ops/s, *base the baseline's.
 */
static double bench_apply(th_server_t *s, char *const *bodies, const size_t *lens, double *base,
                          int *failures)
{
    *base = 0;
    for (int i = 0; i < BATCH_OPS / 5; i++) {
        char id[32];
        snprintf(id, sizeof id, "BJ-%d", i);
        if (tc_seed(NULL, s->url, "jobneed", id, "{}") != 201)
            (*failures)++;
    }
    base_db_t bd;
    if (!base_open(s->dir, &bd)) {
        (*failures)++;
        return 0;
    }
    CURL *h = curl_easy_init();
    double cpu = 0, t_server = 0, t_base = 0;
    for (int b = 0; b < BATCHES; b++) {
        double tb = -1;
        if (b % 2 == 0)
            tb = base_batch(&bd, bodies[b], lens[b]);
        double cpu0 = bench_proc_cpu_s((int)s->pid);
        double ts = server_batch(s, h, b, bodies[b], lens[b], failures);
        t_server += ts;
        double cpu1 = bench_proc_cpu_s((int)s->pid);
        cpu = cpu >= 0 && cpu0 >= 0 && cpu1 >= cpu0 ? cpu + (cpu1 - cpu0) : -1;
        if (b % 2 != 0)
            tb = base_batch(&bd, bodies[b], lens[b]);
        if (tb < 0)
            (*failures)++;
        t_base += tb;
    }
    apply_cpu_s = cpu;
    curl_easy_cleanup(h);
    base_close(&bd);
    *base = t_base > 0 ? (double)(BATCHES * BATCH_OPS) / t_base : 0;
    return (double)(BATCHES * BATCH_OPS) / t_server;
}

/* A second, harsher baseline: short rows with sequential keys, the cheapest insert SQLite has. */
static double bench_sqlite_seq(const char *dir)
{
    char path[400];
    snprintf(path, sizeof path, "%s/baseline_seq.db", dir);
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        return 0;
    sqlite3_exec(db,
                 "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                 "CREATE TABLE t(id TEXT PRIMARY KEY, fields TEXT) WITHOUT ROWID;",
                 NULL, NULL, NULL);
    sqlite3_stmt *ins = NULL;
    sqlite3_prepare_v2(db, "INSERT INTO t VALUES(?1, ?2)", -1, &ins, NULL);
    const char *fields = "{\"status\":\"NEW\",\"level\":2,\"assignedto\":\"p1\"}";
    double t0 = now_s();
    for (int b = 0; b < BATCHES; b++) {
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        for (int i = 0; i < BATCH_OPS; i++) {
            char id[32];
            snprintf(id, sizeof id, "R-%04d-%04d", b, i);
            sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(ins, 2, fields, -1, SQLITE_STATIC);
            sqlite3_step(ins);
            sqlite3_reset(ins);
        }
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    double dt = now_s() - t0;
    sqlite3_finalize(ins);
    sqlite3_close(db);
    return (double)(BATCHES * BATCH_OPS) / dt;
}

/*
 * The server's decode of the push bodies alone, in this process: fsa_codec_decode_push against
 * the cJSON tree decoder it replaced (fsa__codec_decode_push_tree), the two alternating over the
 * same 20 bodies, DECODE_ROUNDS times; each side's fastest round counts (the least disturbed by
 * the machine's load). Returns ops/s of the new decoder, *tree_rate the tree decoder's; 0 when a
 * body does not decode.
 */
#define DECODE_ROUNDS 15
static double time_decode(bool tree, char *const *bodies, const size_t *lens)
{
    double t0 = now_s();
    for (int b = 0; b < BATCHES; b++) {
        fsa_codec_push_t p;
        fsa_model_err_t err;
        fsa_status_t st = tree ? fsa__codec_decode_push_tree(bodies[b], lens[b], &p, &err)
                               : fsa_codec_decode_push(bodies[b], lens[b], &p, &err);
        if (st != FSA_OK || p.count != BATCH_OPS) {
            fsa_codec_push_free(&p);
            return -1;
        }
        fsa_codec_push_free(&p);
    }
    return now_s() - t0;
}

static double bench_decode(char *const *bodies, const size_t *lens, double *tree_rate)
{
    double best = 0, best_tree = 0;
    for (int r = 0; r < DECODE_ROUNDS; r++) {
        double t = time_decode(false, bodies, lens), tt = time_decode(true, bodies, lens);
        if (t < 0 || tt < 0)
            return *tree_rate = 0;
        best = r == 0 || t < best ? t : best;
        best_tree = r == 0 || tt < best_tree ? tt : best_tree;
    }
    *tree_rate = best_tree > 0 ? (double)(BATCHES * BATCH_OPS) / best_tree : 0;
    return best > 0 ? (double)(BATCHES * BATCH_OPS) / best : 0;
}

typedef struct lat_worker {
    th_server_t *s;
    int device;
    pthread_barrier_t *start;
    double ms[LAT_ROUNDS];
    int failures;
} lat_worker_t;

static void *lat_main(void *arg)
{
    lat_worker_t *w = arg;
    CURL *h = curl_easy_init();
    char dev[16], tid[32], path[64];
    th_device_id(w->device, dev);
    snprintf(tid, sizeof tid, "LT-%d", w->device);
    snprintf(path, sizeof path, "/v1/devices/%s/ops", dev);
    size_t cap = (size_t)LAT_OPS * OPBUF + 128;
    char *body = fsa_malloc(cap);
    pthread_barrier_wait(w->start);
    for (int r = 0; r < LAT_ROUNDS && body != NULL; r++) {
        size_t n =
            (size_t)snprintf(body, cap, "{\"batch_id\":\"lat-%d-%d\",\"ops\":[", w->device, r);
        char op[OPBUF];
        for (int i = 0; i < LAT_OPS; i++) {
            if (i % 2 == 0)
                tc_op(op, sizeof op, NULL, "increment", "ticket", tid,
                      ",\"field\":\"level\",\"by\":1");
            else
                tc_op(op, sizeof op, NULL, "append", "ticket", tid,
                      ",\"field\":\"ticketlog\",\"key\":\"ticket_history\",\"item\":1,\"max_len\":"
                      "20");
            if (i > 0)
                add(body, cap, &n, ",");
            add(body, cap, &n, op);
        }
        add(body, cap, &n, "]}");
        double t0 = now_s();
        th_resp_t resp;
        th_request(h, w->s->url, "POST", path, w->device, body, n, NULL, &resp);
        w->ms[r] = (now_s() - t0) * 1000.0;
        if (resp.status != 200)
            w->failures++;
        th_resp_free(&resp);
    }
    fsa_free(body);
    curl_easy_cleanup(h);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void bench_latency(th_server_t *s, double *p50, double *p99, int *failures)
{
    for (int d = 0; d < LAT_DEVICES; d++) {
        char tid[32];
        snprintf(tid, sizeof tid, "LT-%d", d);
        if (tc_seed(NULL, s->url, "ticket", tid, "{}") != 201)
            (*failures)++;
    }
    lat_worker_t *w = fsa_calloc(LAT_DEVICES, sizeof *w);
    pthread_t t[LAT_DEVICES];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, LAT_DEVICES);
    for (int d = 0; d < LAT_DEVICES; d++) {
        w[d] = (lat_worker_t){s, d, &start, {0}, 0};
        pthread_create(&t[d], NULL, lat_main, &w[d]);
    }
    double all[LAT_DEVICES * LAT_ROUNDS];
    for (int d = 0; d < LAT_DEVICES; d++) {
        pthread_join(t[d], NULL);
        memcpy(&all[d * LAT_ROUNDS], w[d].ms, sizeof w[d].ms);
        *failures += w[d].failures;
    }
    pthread_barrier_destroy(&start);
    fsa_free(w);
    size_t n = LAT_DEVICES * LAT_ROUNDS;
    qsort(all, n, sizeof all[0], cmp_double);
    *p50 = all[n / 2];
    *p99 = all[(n * 99) / 100];
}

int main(void)
{
    if (fsa_transport_global_init() != FSA_OK)
        return 1;
    th_server_t s;
    memset(&s, 0, sizeof s);
    /* FSA_TEST_DB=postgresql: the server on a private PostgreSQL cluster (the baseline stays
     * SQLite's: read the ops/s and the CPU per op, not the ratio). */
    if (!th_dir_make(s.dir) || !th_write_files(&s, LAT_DEVICES) ||
        !th_backend_db(s.db, sizeof s.db) || !th_server_start(&s, NULL)) {
        fprintf(stderr, "bench_server: cannot start fieldsync-server\n");
        return 1;
    }
    int failures = 0;
    char *bodies[BATCHES];
    size_t lens[BATCHES];
    for (int b = 0; b < BATCHES; b++) {
        bodies[b] = mixed_batch(b, &lens[b]);
        if (bodies[b] == NULL)
            return 1;
    }
    double base_seq = bench_sqlite_seq(s.dir);
    double base = 0, rate = bench_apply(&s, bodies, lens, &base, &failures);
    double tree_rate = 0, decode_rate = bench_decode(bodies, lens, &tree_rate);
    if (decode_rate <= 0)
        failures++;
    for (int b = 0; b < BATCHES; b++)
        fsa_free(bodies[b]);
    double p50 = 0, p99 = 0;
    /* FSA_BENCH_APPLY_ONLY=1: only the apply phase (to profile the server on it alone). */
    const char *only = getenv("FSA_BENCH_APPLY_ONLY");
    if (only == NULL || strcmp(only, "1") != 0)
        bench_latency(&s, &p50, &p99, &failures);
    int rc = th_server_stop(&s);
    th_dir_remove(s.dir);
    curl_global_cleanup();

    printf("apply: %.0f ops/s through HTTP (500-op mixed batches), bare SQLite inserts of the same "
           "ops %.0f rows/s\n",
           rate, base);
    if (apply_cpu_s >= 0)
        printf("server CPU in the apply phase: %.1f us per op (%.0f%% of its wall time)\n",
               apply_cpu_s * 1e6 / (BATCHES * BATCH_OPS),
               rate > 0 ? 100.0 * apply_cpu_s / ((double)(BATCHES * BATCH_OPS) / rate) : 0.0);
    printf("decode of the push bodies: %.0f ops/s, the cJSON tree decoder %.0f ops/s\n",
           decode_rate, tree_rate);
    printf("push of %d ops, %d devices at once: p50 %.1f ms, p99 %.1f ms\n", LAT_OPS, LAT_DEVICES,
           p50, p99);
    printf("BENCH {\"name\":\"server.apply_batch500\",\"value\":%.0f,\"unit\":\"ops/s\","
           "\"baseline\":%.0f,\"baseline_name\":\"sqlite.insert_ops_batch500\",\"ratio\":%.2f}\n",
           rate, base, base > 0 ? rate / base : 0.0);
    printf("BENCH {\"name\":\"server.apply_batch500_vs_seq\",\"value\":%.0f,\"unit\":\"ops/s\","
           "\"baseline\":%.0f,\"baseline_name\":\"sqlite.insert_seq_batch500\",\"ratio\":%.2f}\n",
           rate, base_seq, base_seq > 0 ? rate / base_seq : 0.0);
    if (apply_cpu_s >= 0)
        printf("BENCH "
               "{\"name\":\"server.apply_batch500_cpu_per_op\",\"value\":%.1f,\"unit\":\"us\"}\n",
               apply_cpu_s * 1e6 / (BATCHES * BATCH_OPS));
    printf("BENCH {\"name\":\"codec.decode_push_batch500\",\"value\":%.0f,\"unit\":\"ops/s\","
           "\"baseline\":%.0f,\"baseline_name\":\"codec.decode_push_tree_batch500\","
           "\"ratio\":%.2f}\n",
           decode_rate, tree_rate, tree_rate > 0 ? decode_rate / tree_rate : 0.0);
    printf("BENCH {\"name\":\"server.push100_p50_100dev\",\"value\":%.2f,\"unit\":\"ms\"}\n", p50);
    printf("BENCH {\"name\":\"server.push100_p99_100dev\",\"value\":%.2f,\"unit\":\"ms\"}\n", p99);
    if (failures > 0 || rc != 0) {
        fprintf(stderr, "bench_server: %d failed requests, server exit %d\n", failures, rc);
        return 1;
    }
    return 0;
}
