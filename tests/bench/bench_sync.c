/* Benchmark: draining a large backlog to the loopback fieldsync-server with the real engine,
 * beside bare libcurl keep-alive POST loops pushing the same kind of batches to the same server:
 * one sends what the engine sends (gzip'd bodies, gzip'd answers asked for), the other plain
 * JSON both ways. The drain runs in rounds (3 by default), each between two runs of the gzip'd
 * loop and compared with both together: a machine whose load changes during the run, or a
 * server whose tables grow with every loop, moves both sides alike. The figure is the median
 * round; every round is printed. Prints ops/s, bytes on the wire per op, the CPU per op of
 * each side, and the agent's peak RSS. */
#include <curl/curl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "port/alloc.h"
#include "sync/codec.h"
#include "sync/engine.h"
#include "sync/gzip.h"
#include "sync/transport.h"
#include "tests/bench/proc_cpu.h"
#include "tests/sync/server_client.h"
#include "tests/sync/server_harness.h"

#define BATCH 500

static double now_s(void)
{
    return (double)fsa_port_posix()->mono_now(NULL).ns / 1e9;
}

/* An increment op on the ticket tid, as the engine would send it: its op id time-ordered, as the
 * journal makes them (storage/journal_record.c), which the server's op-id index feels. */
static void make_op(fsa_op_t *op, int64_t seq, const char *tid)
{
    memset(op, 0, sizeof *op);
    if (fsa_uuid8(fsa_port_posix(), (uint64_t)seq, op->op_id) != FSA_OK)
        exit(1);
    op->seq = seq;
    op->at_ms = fsa_port_posix()->wall_now(NULL).ms;
    op->kind = FSA_OP_INCREMENT;
    op->type = FSA_TYPE_TICKET;
    snprintf(op->id, sizeof op->id, "%s", tid);
    snprintf(op->field, sizeof op->field, "level");
    op->by = 1;
}

/* The type of curl's write callback, char * included. */
// NOLINTNEXTLINE(readability-non-const-parameter)
static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* A bare loop's device: its number in the server's devices file, its ticket, and whether it sends
 * what the engine sends (gzip'd bodies over FSA_LIMIT_GZIP_MIN_BYTES, gzip'd answers asked for)
 * or plain JSON both ways. */
typedef struct loop_dev {
    int n;
    const char *ticket;
    bool gzip;
} loop_dev_t;

/* A baseline: pre-encoded 500-op push bodies (compressed beforehand when d->gzip: the engine's
 * compression is the agent's work, not the wire's), signed, POSTed over one keep-alive
 * connection. */
static double bare_post_loop(const char *url, int nops, const loop_dev_t *d, double *bytes_per_op)
{
    int batches = nops / BATCH;
    char **bodies = fsa_calloc((size_t)batches, sizeof *bodies);
    size_t *lens = fsa_calloc((size_t)batches, sizeof *lens);
    fsa_op_t *ops = fsa_calloc(BATCH, sizeof *ops);
    if (bodies == NULL || lens == NULL || ops == NULL)
        exit(1);
    for (int b = 0; b < batches; b++) {
        for (int i = 0; i < BATCH; i++)
            make_op(&ops[i], (int64_t)b * BATCH + i + 1, d->ticket);
        char batch_id[FSA_UUID_STR_LEN];
        if (fsa_uuid4(fsa_port_posix(), batch_id) != FSA_OK ||
            fsa_codec_encode_push(batch_id, ops, BATCH, &bodies[b], &lens[b]) != FSA_OK)
            exit(1);
        if (d->gzip) {
            /* At the default level, while the engine's transport goes to level 1 whenever its
             * own work is the slower side (some 12% more bytes: docs/performance.md, session 10):
             * the loop's time leaves compression out, and loopback hardly feels the bytes. */
            unsigned char *gz = NULL;
            size_t gz_len = 0;
            if (fsa_gzip_compress(bodies[b], lens[b], FSA_GZIP_LEVEL_DEFAULT, &gz, &gz_len) !=
                FSA_OK)
                exit(1);
            fsa_codec_free(bodies[b]);
            bodies[b] = (char *)gz;
            lens[b] = gz_len;
        }
    }
    fsa_free(ops);
    fsa_signer_key_t key;
    th_device_key(d->n, &key);
    CURL *c = curl_easy_init();
    char path[64], full[256];
    snprintf(path, sizeof path, "/v1/devices/dev%03d/ops", d->n);
    snprintf(full, sizeof full, "%s%s", url, path);
    curl_easy_setopt(c, CURLOPT_URL, full);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    if (d->gzip) /* curl inflates the answers, as the engine's transport does */
        curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "gzip");
    double bytes = 0;
    double t0 = now_s();
    for (int b = 0; b < batches; b++) {
        char ts[24], nonce[FSA_SIGNER_NONCE_BYTES], sig[FSA_SIGNER_HEX_BYTES];
        snprintf(ts, sizeof ts, "%" PRId64, fsa_port_posix()->wall_now(NULL).ms);
        if (fsa_signer_nonce(fsa_port_posix(), nonce) != FSA_OK ||
            fsa_signer_sign(&key, "POST", path, ts, nonce, bodies[b], lens[b], sig) != FSA_OK)
            exit(1);
        char h[5][128];
        snprintf(h[0], sizeof h[0], "X-Device-Id: dev%03d", d->n);
        snprintf(h[1], sizeof h[1], "X-Timestamp: %s", ts);
        snprintf(h[2], sizeof h[2], "X-Nonce: %s", nonce);
        snprintf(h[3], sizeof h[3], "X-Signature: %s", sig);
        snprintf(h[4], sizeof h[4], "Content-Encoding: gzip");
        struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
        for (int i = 0; i < (d->gzip ? 5 : 4); i++)
            hl = curl_slist_append(hl, h[i]);
        hl = curl_slist_append(hl, "Expect:");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, bodies[b]);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)lens[b]);
        long code = 0;
        if (curl_easy_perform(c) != CURLE_OK ||
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK || code != 200) {
            fprintf(stderr, "bare POST failed (HTTP %ld)\n", code);
            exit(1);
        }
        curl_off_t down = 0, up = 0;
        long hdr = 0, req = 0;
        curl_easy_getinfo(c, CURLINFO_SIZE_DOWNLOAD_T, &down);
        curl_easy_getinfo(c, CURLINFO_HEADER_SIZE, &hdr);
        curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &req);
        curl_easy_getinfo(c, CURLINFO_SIZE_UPLOAD_T, &up);
        /* REQUEST_SIZE counts the body too when curl sends it in one buffer with the headers
         * (a CURLOPT_POSTFIELDS body under 64 KiB: the gzip'd ones here), and only the headers
         * otherwise (the plain bodies here, ~100 KB; the engine's transport, whose body goes
         * through a read callback). Headers are a few hundred bytes, a body thousands: a count
         * at least the body's holds it. Until session 11 the gzip'd loop counted its bodies
         * twice: 55 bytes per op instead of 37. */
        double req_headers = (curl_off_t)req >= up ? (double)((curl_off_t)req - up) : (double)req;
        bytes += req_headers + (double)up + (double)down + (double)hdr;
        curl_slist_free_all(hl);
    }
    double dt = now_s() - t0;
    curl_easy_cleanup(c);
    for (int b = 0; b < batches; b++) {
        if (d->gzip)
            fsa_free(bodies[b]);
        else
            fsa_codec_free(bodies[b]);
    }
    fsa_free(bodies);
    fsa_free(lens);
    fsa_signer_key_wipe(&key);
    *bytes_per_op = bytes / (batches * BATCH);
    return batches * BATCH / dt;
}

/* Records the backlog on ticket tid (synchronous=NORMAL: the recording is not what is
 * measured). */
static void record_backlog(const char *path, int nops, const char *tid)
{
    fsa_journal_t *j;
    fsa_journal_opts_t o = {.create = true, .sync_normal = true};
    char err[256];
    if (fsa_journal_open(fsa_port_posix(), path, &o, &j, err, sizeof err) != FSA_OK) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    if (fsa_journal_fold(j, FSA_TYPE_TICKET, tid, 1,
                         "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                         "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}") !=
        FSA_OK)
        exit(1);
    for (int i = 0; i < nops; i++) {
        fsa_rec_t rec;
        if (fsa_journal_increment(j, FSA_TYPE_TICKET, tid, "level", 1, NULL, &rec) != FSA_OK) {
            fprintf(stderr, "record: %s\n", rec.error);
            exit(1);
        }
    }
    fsa_journal_close(j);
}

/* The drain of the journal at path as device dev, in a child so that its peak RSS is the
 * agent's alone. Writes ops/s and bytes/op to the pipe. */
static void drain_child(const char *path, const char *url, int dev, int fd)
{
    fsa_journal_t *j;
    fsa_journal_opts_t o = {0};
    if (fsa_journal_open(fsa_port_posix(), path, &o, &j, NULL, 0) != FSA_OK)
        _exit(2);
    fsa_signer_key_t key;
    th_device_key(dev, &key);
    char id[16];
    th_device_id(dev, id);
    fsa_engine_opts_t eo = {
        .device_id = id, .key = &key, .batch_max_ops = BATCH, .batch_max_bytes = 1000 * 1000};
    eo.transport.base_url = url;
    fsa_engine_t *e;
    char err[256];
    if (fsa_engine_new(fsa_port_posix(), j, &eo, &e, err, sizeof err) != FSA_OK)
        _exit(3);
    fsa_sync_report_t r;
    double t0 = now_s();
    fsa_status_t st = fsa_engine_sync(e, &r);
    double dt = now_s() - t0;
    if (st != FSA_OK || r.applied != r.pushed) {
        fprintf(stderr, "drain: %s (%" PRId64 " of %" PRId64 " applied)\n", r.error, r.applied,
                r.pushed);
        _exit(4);
    }
    double res[2] = {(double)r.applied / dt,
                     (double)(r.bytes_sent + r.bytes_received) / (double)r.applied};
    if (write(fd, res, sizeof res) != (ssize_t)sizeof res)
        _exit(5);
    fsa_engine_free(e);
    fsa_journal_close(j);
    _exit(0);
}

#define MAX_ROUNDS 9

/* One round: the gzip'd bare loop, the drain of the round's backlog, the gzip'd bare loop again.
 * The baseline of the round is both loops as one (their mean time per op): a machine whose load
 * changes during the round, or a server whose tables grow with every loop, moves both sides
 * alike. */
typedef struct round {
    double drain, bytes_per_op, before, after, bare, ratio;
    double server_bare_cpu, server_drain_cpu, agent_cpu; /* seconds; < 0: not read */
} round_t;

static double cpu_of(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6 +
           (double)ru->ru_stime.tv_sec + (double)ru->ru_stime.tv_usec / 1e6;
}

/* Round r (devices 3r, 3r+1, 3r+2; tickets A<r>, B<r>, D<r>). false when the drain failed. */
static bool run_round(th_server_t *s, int r, int nops, round_t *out, double *bare_bpo)
{
    char journal[400], tb[8], td[8];
    snprintf(journal, sizeof journal, "%s/agent%d.db", s->dir, r);
    snprintf(tb, sizeof tb, "B%d", r);
    snprintf(td, sizeof td, "D%d", r);
    const loop_dev_t before_dev = {3 * r + 1, tb, true}, after_dev = {3 * r + 2, td, true};
    struct rusage ru0, ru1;
    getrusage(RUSAGE_CHILDREN, &ru0);
    double cpu0 = bench_proc_cpu_s((int)s->pid);
    out->before = bare_post_loop(s->url, nops, &before_dev, bare_bpo);
    double cpu1 = bench_proc_cpu_s((int)s->pid);
    int p[2];
    if (pipe(p) != 0)
        return false;
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        close(p[0]);
        drain_child(journal, s->url, 3 * r, p[1]);
    }
    close(p[1]);
    double res[2] = {0, 0};
    ssize_t got = read(p[0], res, sizeof res);
    close(p[0]);
    double cpu2 = bench_proc_cpu_s((int)s->pid);
    int status = 0;
    waitpid(pid, &status, 0);
    /* The drain children are the only children reaped (the server is stopped after the last
     * round), so the children's figures are the agents'. */
    getrusage(RUSAGE_CHILDREN, &ru1);
    if (got != (ssize_t)sizeof res || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "round %d: the drain failed (status %d)\n", r + 1, status);
        return false;
    }
    double after_bpo = 0;
    out->after = bare_post_loop(s->url, nops, &after_dev, &after_bpo);
    out->drain = res[0];
    out->bytes_per_op = res[1];
    out->bare = 2.0 / (1.0 / out->before + 1.0 / out->after);
    out->ratio = res[0] / out->bare;
    bool cpu_ok = cpu0 >= 0 && cpu1 >= cpu0 && cpu2 >= cpu1;
    out->server_bare_cpu = cpu_ok ? cpu1 - cpu0 : -1;
    out->server_drain_cpu = cpu_ok ? cpu2 - cpu1 : -1;
    out->agent_cpu = cpu_of(&ru1) - cpu_of(&ru0);
    return true;
}

static int by_ratio(const void *a, const void *b)
{
    double x = ((const round_t *)a)->ratio, y = ((const round_t *)b)->ratio;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc > 3 || (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))) {
        fprintf(argc > 3 ? stderr : stdout,
                "usage: bench_sync [OPS] [ROUNDS]\n"
                "  drains a backlog of OPS ops (default 100000) to the loopback server, ROUNDS\n"
                "  times (default 3, at most %d), each between two bare libcurl loops sending\n"
                "  the same kind of batches; prints every round and the median round\n",
                MAX_ROUNDS);
        return argc > 3 ? 2 : 0;
    }
    int nops = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 100000;
    if (nops < BATCH)
        nops = BATCH;
    nops -= nops % BATCH;
    int rounds = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 3;
    if (rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "bench_sync: ROUNDS must be 1 to %d\n", MAX_ROUNDS);
        return 2;
    }
    if (fsa_transport_global_init() != FSA_OK)
        return 1;
    th_server_t s;
    memset(&s, 0, sizeof s);
    /* Devices 3r, 3r+1, 3r+2: round r's agent and its two gzip'd bare loops; 3 * rounds: the
     * plain loop. Each increments a ticket of its own. */
    int plain_n = 3 * rounds;
    if (!th_dir_make(s.dir) || !th_write_files(&s, plain_n + 1) || !th_server_start(&s, NULL)) {
        fprintf(stderr, "cannot start the server\n");
        return 1;
    }
    bool seeded = tc_seed(NULL, s.url, "ticket", "C", "{}") == 201;
    for (int r = 0; seeded && r < rounds; r++) {
        char t[3][8];
        snprintf(t[0], sizeof t[0], "A%d", r);
        snprintf(t[1], sizeof t[1], "B%d", r);
        snprintf(t[2], sizeof t[2], "D%d", r);
        for (int k = 0; seeded && k < 3; k++)
            seeded = tc_seed(NULL, s.url, "ticket", t[k], "{}") == 201;
    }
    if (!seeded) {
        fprintf(stderr, "cannot seed the tickets\n");
        return 1;
    }
    printf("recording %d backlog%s of %d ops...\n", rounds, rounds > 1 ? "s" : "", nops);
    fflush(stdout);
    for (int r = 0; r < rounds; r++) {
        char journal[400], ta[8];
        snprintf(journal, sizeof journal, "%s/agent%d.db", s.dir, r);
        snprintf(ta, sizeof ta, "A%d", r);
        record_backlog(journal, nops, ta);
    }

    double plain_bpo = 0, bare_bpo = 0;
    const loop_dev_t plain_dev = {plain_n, "C", false};
    double cpu_p = bench_proc_cpu_s((int)s.pid);
    double plain = bare_post_loop(s.url, nops, &plain_dev, &plain_bpo);
    double cpu_plain = bench_proc_cpu_s((int)s.pid);
    double server_plain_cpu = cpu_p >= 0 && cpu_plain >= cpu_p ? cpu_plain - cpu_p : -1;

    round_t rd[MAX_ROUNDS];
    memset(rd, 0, sizeof rd);
    round_t order[MAX_ROUNDS]; /* the rounds by ratio, once all ran */
    bool ok = true;
    for (int r = 0; ok && r < rounds; r++) {
        ok = run_round(&s, r, nops, &rd[r], &bare_bpo);
        if (!ok)
            break;
        printf("round %d: drained %d ops: %.0f ops/s (bare gzip'd loop: %.0f ops/s, %.0f before "
               "the drain and %.0f after), ratio %.2f",
               r + 1, nops, rd[r].drain, rd[r].bare, rd[r].before, rd[r].after, rd[r].ratio);
        /* Where the time per op goes: on 2 idle cores the drain can go no faster than the
         * larger of the server's CPU and the agent's. */
        if (rd[r].server_bare_cpu >= 0)
            printf("; CPU per op: server %.1f us in the bare loop, %.1f us in the drain; agent "
                   "%.1f us (wall per op: bare %.1f us, drain %.1f us)",
                   rd[r].server_bare_cpu * 1e6 / nops, rd[r].server_drain_cpu * 1e6 / nops,
                   rd[r].agent_cpu * 1e6 / nops, 1e6 / rd[r].bare, 1e6 / rd[r].drain);
        printf("\n");
        fflush(stdout);
    }
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru); /* the drain children's, before the server is reaped */
    th_server_stop(&s);
    th_dir_remove(s.dir);
    if (!ok)
        return 1;
    /* The round whose ratio is the median (the lower middle one of an even count) is the
     * figure: its drain, its baseline, its ratio. */
    memcpy(order, rd, (size_t)rounds * sizeof rd[0]);
    qsort(order, (size_t)rounds, sizeof order[0], by_ratio);
    const round_t *m = &order[(rounds - 1) / 2];
    double rss_mb = (double)ru.ru_maxrss / 1024.0;
    printf("median of %d round%s: %.0f ops/s against the bare gzip'd loop's %.0f, ratio %.2f "
           "(rounds %.2f to %.2f); plain JSON both ways: %.0f ops/s, ratio %.2f; %.0f bytes/op on "
           "the wire (bare: %.0f, plain: %.0f); agent peak RSS %.1f MB (goal <= 16)\n",
           rounds, rounds > 1 ? "s" : "", m->drain, m->bare, m->ratio, order[0].ratio,
           order[rounds - 1].ratio, plain, m->drain / plain, m->bytes_per_op, bare_bpo, plain_bpo,
           rss_mb);
    if (server_plain_cpu >= 0)
        printf("server CPU per op in the plain loop: %.1f us (wall per op %.1f us)\n",
               server_plain_cpu * 1e6 / nops, 1e6 / plain);
    printf("BENCH {\"name\":\"sync.drain\",\"value\":%.0f,\"unit\":\"ops/s\",\"baseline\":%.0f,"
           "\"baseline_name\":\"curl.keepalive_post_batch500_gzip\",\"ratio\":%.2f}\n",
           m->drain, m->bare, m->ratio);
    printf("BENCH {\"name\":\"sync.drain\",\"value\":%.0f,\"unit\":\"ops/s\",\"baseline\":%.0f,"
           "\"baseline_name\":\"curl.keepalive_post_batch500_plain\",\"ratio\":%.2f}\n",
           m->drain, plain, m->drain / plain);
    printf("BENCH {\"name\":\"sync.wire_bytes_per_op\",\"value\":%.0f,\"unit\":\"bytes\","
           "\"baseline\":%.0f,\"baseline_name\":\"curl.keepalive_post_batch500_plain\","
           "\"ratio\":%.2f}\n",
           m->bytes_per_op, plain_bpo, plain_bpo / m->bytes_per_op);
    printf("BENCH {\"name\":\"sync.agent_peak_rss\",\"value\":%.1f,\"unit\":\"MB\"}\n", rss_mb);
    curl_global_cleanup();
    return 0;
}
