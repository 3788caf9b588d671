/* Benchmark: draining a large backlog to the loopback fieldsync-server with the real engine,
 * beside bare libcurl keep-alive POST loops pushing the same kind of batches to the same server:
 * one sends what the engine sends (gzip'd bodies, gzip'd answers asked for), the other plain
 * JSON both ways. The gzip'd loop runs twice, once before the drain and once after, and the
 * drain is compared with both together: a machine whose load changes during the run, or a
 * server whose tables grow with every loop, moves both sides alike. Prints ops/s, bytes on the
 * wire per op, and the agent's peak RSS. */
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
    if (fsa_uuid7(fsa_port_posix(), op->op_id) != FSA_OK)
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

/* Records the backlog (synchronous=NORMAL: the recording is not what is measured). */
static void record_backlog(const char *path, int nops)
{
    fsa_journal_t *j;
    fsa_journal_opts_t o = {.create = true, .sync_normal = true};
    char err[256];
    if (fsa_journal_open(fsa_port_posix(), path, &o, &j, err, sizeof err) != FSA_OK) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    if (fsa_journal_fold(j, FSA_TYPE_TICKET, "A", 1,
                         "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                         "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}") !=
        FSA_OK)
        exit(1);
    for (int i = 0; i < nops; i++) {
        fsa_rec_t rec;
        if (fsa_journal_increment(j, FSA_TYPE_TICKET, "A", "level", 1, NULL, &rec) != FSA_OK) {
            fprintf(stderr, "record: %s\n", rec.error);
            exit(1);
        }
    }
    fsa_journal_close(j);
}

/* The drain, in a child so that its peak RSS is the agent's alone. Writes ops/s and bytes/op
 * to the pipe. */
static void drain_child(const char *path, const char *url, int fd)
{
    fsa_journal_t *j;
    fsa_journal_opts_t o = {0};
    if (fsa_journal_open(fsa_port_posix(), path, &o, &j, NULL, 0) != FSA_OK)
        _exit(2);
    fsa_signer_key_t key;
    th_device_key(0, &key);
    fsa_engine_opts_t eo = {
        .device_id = "dev000", .key = &key, .batch_max_ops = BATCH, .batch_max_bytes = 1000 * 1000};
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

int main(int argc, char **argv)
{
    int nops = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 100000;
    if (nops < BATCH)
        nops = BATCH;
    nops -= nops % BATCH;
    if (fsa_transport_global_init() != FSA_OK)
        return 1;
    th_server_t s;
    memset(&s, 0, sizeof s);
    if (!th_dir_make(s.dir) || !th_write_files(&s, 4) || !th_server_start(&s, NULL)) {
        fprintf(stderr, "cannot start the server\n");
        return 1;
    }
    /* The tickets each side increments: A for the agent (dev000), B for the bare loop that sends
     * what the engine sends (dev001), C for the plain one (dev002), D for the same gzip'd loop
     * again after the drain (dev003). */
    if (tc_seed(NULL, s.url, "ticket", "A", "{}") != 201 ||
        tc_seed(NULL, s.url, "ticket", "B", "{}") != 201 ||
        tc_seed(NULL, s.url, "ticket", "C", "{}") != 201 ||
        tc_seed(NULL, s.url, "ticket", "D", "{}") != 201) {
        fprintf(stderr, "cannot seed the tickets\n");
        return 1;
    }
    char journal[400];
    snprintf(journal, sizeof journal, "%s/agent.db", s.dir);
    printf("recording a backlog of %d ops...\n", nops);
    fflush(stdout);
    record_backlog(journal, nops);

    double plain_bpo = 0, bare_bpo = 0, after_bpo = 0;
    const loop_dev_t plain_dev = {2, "C", false}, gzip_dev = {1, "B", true},
                     after_dev = {3, "D", true};
    double cpu_p = bench_proc_cpu_s((int)s.pid);
    double plain = bare_post_loop(s.url, nops, &plain_dev, &plain_bpo);
    double cpu0 = bench_proc_cpu_s((int)s.pid);
    double before = bare_post_loop(s.url, nops, &gzip_dev, &bare_bpo);
    double cpu1 = bench_proc_cpu_s((int)s.pid);

    int p[2];
    if (pipe(p) != 0)
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        drain_child(journal, s.url, p[1]);
    }
    close(p[1]);
    double res[2] = {0, 0};
    ssize_t got = read(p[0], res, sizeof res);
    int status = 0;
    struct rusage ru;
    /* The drain child is the only child reaped so far (the server is stopped after this), so
     * the children's peak RSS is the agent's. */
    double cpu2 = bench_proc_cpu_s((int)s.pid);
    waitpid(pid, &status, 0);
    getrusage(RUSAGE_CHILDREN, &ru);
    double after = 0;
    if (got == (ssize_t)sizeof res && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        after = bare_post_loop(s.url, nops, &after_dev, &after_bpo);
    /* The baseline: both gzip'd loops as one, their mean time per op. */
    double bare = after > 0 ? 2.0 / (1.0 / before + 1.0 / after) : 0;
    th_server_stop(&s);
    th_dir_remove(s.dir);
    if (got != (ssize_t)sizeof res || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "the drain failed (status %d)\n", status);
        return 1;
    }
    double rss_mb = (double)ru.ru_maxrss / 1024.0;
    printf("drained %d ops: %.0f ops/s (bare libcurl keep-alive POST loop sending the same gzip'd "
           "requests: %.0f ops/s, %.0f before the drain and %.0f after, ratio %.2f; plain JSON "
           "both ways: %.0f ops/s, ratio %.2f); %.0f bytes/op on the wire (bare: %.0f, plain: "
           "%.0f); agent peak RSS %.1f MB (goal <= 16)\n",
           nops, res[0], bare, before, after, res[0] / bare, plain, res[0] / plain, res[1],
           bare_bpo, plain_bpo, rss_mb);
    double agent_cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    /* Where the time per op goes: the server's CPU (in the bare loop and in the drain) and the
     * agent's; on 2 idle cores the drain can go no faster than the larger of the two. */
    if (cpu_p >= 0 && cpu2 >= cpu1 && cpu1 >= cpu0 && cpu0 >= cpu_p)
        printf("CPU per op: server %.1f us in the bare gzip'd loop (%.1f us plain), %.1f us in the "
               "drain; agent %.1f us (wall per op: bare %.1f us, plain %.1f us, drain %.1f us)\n",
               (cpu1 - cpu0) * 1e6 / nops, (cpu0 - cpu_p) * 1e6 / nops, (cpu2 - cpu1) * 1e6 / nops,
               agent_cpu * 1e6 / nops, 1e6 / bare, 1e6 / plain, 1e6 / res[0]);
    printf("BENCH {\"name\":\"sync.drain\",\"value\":%.0f,\"unit\":\"ops/s\",\"baseline\":%.0f,"
           "\"baseline_name\":\"curl.keepalive_post_batch500_gzip\",\"ratio\":%.2f}\n",
           res[0], bare, res[0] / bare);
    printf("BENCH {\"name\":\"sync.drain\",\"value\":%.0f,\"unit\":\"ops/s\",\"baseline\":%.0f,"
           "\"baseline_name\":\"curl.keepalive_post_batch500_plain\",\"ratio\":%.2f}\n",
           res[0], plain, res[0] / plain);
    printf("BENCH {\"name\":\"sync.wire_bytes_per_op\",\"value\":%.0f,\"unit\":\"bytes\","
           "\"baseline\":%.0f,\"baseline_name\":\"curl.keepalive_post_batch500_plain\","
           "\"ratio\":%.2f}\n",
           res[1], plain_bpo, plain_bpo / res[1]);
    printf("BENCH {\"name\":\"sync.agent_peak_rss\",\"value\":%.1f,\"unit\":\"MB\"}\n", rss_mb);
    curl_global_cleanup();
    return 0;
}
