/* Benchmark: draining a large backlog to the loopback fieldsync-server with the real engine,
 * beside a bare libcurl keep-alive POST loop pushing the same kind of batches to the same server.
 * Prints ops/s, bytes on the wire per op, and the agent's peak RSS. */
#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "port/alloc.h"
#include "sync/codec.h"
#include "sync/engine.h"
#include "sync/transport.h"
#include "tests/bench/proc_cpu.h"
#include "tests/sync/server_client.h"
#include "tests/sync/server_harness.h"

#define BATCH 500

static double now_s(void)
{
    return (double)fsa_port_posix()->mono_now(NULL).ns / 1e9;
}

/* An increment op on the ticket "B", as the engine would send it. */
static void make_op(fsa_op_t *op, int64_t seq)
{
    memset(op, 0, sizeof *op);
    if (fsa_uuid4(fsa_port_posix(), op->op_id) != FSA_OK)
        exit(1);
    op->seq = seq;
    op->at_ms = fsa_port_posix()->wall_now(NULL).ms;
    op->kind = FSA_OP_INCREMENT;
    op->type = FSA_TYPE_TICKET;
    snprintf(op->id, sizeof op->id, "B");
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

/* The baseline: pre-encoded 500-op push bodies, signed, POSTed over one keep-alive connection. */
static double bare_post_loop(const char *url, int nops, double *bytes_per_op)
{
    int batches = nops / BATCH;
    char **bodies = fsa_calloc((size_t)batches, sizeof *bodies);
    size_t *lens = fsa_calloc((size_t)batches, sizeof *lens);
    fsa_op_t *ops = fsa_calloc(BATCH, sizeof *ops);
    for (int b = 0; b < batches; b++) {
        for (int i = 0; i < BATCH; i++)
            make_op(&ops[i], (int64_t)b * BATCH + i + 1);
        char batch_id[FSA_UUID_STR_LEN];
        if (fsa_uuid4(fsa_port_posix(), batch_id) != FSA_OK ||
            fsa_codec_encode_push(batch_id, ops, BATCH, &bodies[b], &lens[b]) != FSA_OK)
            exit(1);
    }
    fsa_free(ops);
    fsa_signer_key_t key;
    th_device_key(1, &key);
    CURL *c = curl_easy_init();
    char full[256];
    snprintf(full, sizeof full, "%s/v1/devices/dev001/ops", url);
    curl_easy_setopt(c, CURLOPT_URL, full);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    double bytes = 0;
    double t0 = now_s();
    for (int b = 0; b < batches; b++) {
        char ts[24], nonce[FSA_SIGNER_NONCE_BYTES], sig[FSA_SIGNER_HEX_BYTES];
        snprintf(ts, sizeof ts, "%" PRId64, fsa_port_posix()->wall_now(NULL).ms);
        if (fsa_signer_nonce(fsa_port_posix(), nonce) != FSA_OK ||
            fsa_signer_sign(&key, "POST", "/v1/devices/dev001/ops", ts, nonce, bodies[b], lens[b],
                            sig) != FSA_OK)
            exit(1);
        char h[4][128];
        snprintf(h[0], sizeof h[0], "X-Device-Id: dev001");
        snprintf(h[1], sizeof h[1], "X-Timestamp: %s", ts);
        snprintf(h[2], sizeof h[2], "X-Nonce: %s", nonce);
        snprintf(h[3], sizeof h[3], "X-Signature: %s", sig);
        struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
        for (int i = 0; i < 4; i++)
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
        curl_off_t down = 0;
        long hdr = 0, req = 0;
        curl_easy_getinfo(c, CURLINFO_SIZE_DOWNLOAD_T, &down);
        curl_easy_getinfo(c, CURLINFO_HEADER_SIZE, &hdr);
        curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &req);
        bytes += (double)lens[b] + (double)down + (double)hdr + (double)req;
        curl_slist_free_all(hl);
    }
    double dt = now_s() - t0;
    curl_easy_cleanup(c);
    for (int b = 0; b < batches; b++)
        fsa_codec_free(bodies[b]);
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
    if (!th_dir_make(s.dir) || !th_write_files(&s, 2) || !th_server_start(&s, NULL)) {
        fprintf(stderr, "cannot start the server\n");
        return 1;
    }
    /* The tickets both sides increment: A for the agent, B for the bare loop. */
    if (tc_seed(NULL, s.url, "ticket", "A", "{}") != 201 ||
        tc_seed(NULL, s.url, "ticket", "B", "{}") != 201) {
        fprintf(stderr, "cannot seed the tickets\n");
        return 1;
    }
    char journal[400];
    snprintf(journal, sizeof journal, "%s/agent.db", s.dir);
    printf("recording a backlog of %d ops...\n", nops);
    fflush(stdout);
    record_backlog(journal, nops);

    double bare_bpo = 0;
    double cpu0 = bench_proc_cpu_s((int)s.pid);
    double bare = bare_post_loop(s.url, nops, &bare_bpo);
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
    th_server_stop(&s);
    th_dir_remove(s.dir);
    if (got != (ssize_t)sizeof res || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "the drain failed (status %d)\n", status);
        return 1;
    }
    double rss_mb = (double)ru.ru_maxrss / 1024.0;
    printf("drained %d ops: %.0f ops/s (bare libcurl keep-alive POST loop: %.0f ops/s, ratio "
           "%.2f); %.0f bytes/op on the wire (bare: %.0f); agent peak RSS %.1f MB (goal <= 16)\n",
           nops, res[0], bare, res[0] / bare, res[1], bare_bpo, rss_mb);
    double agent_cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    /* Where the time per op goes: the server's CPU (in the bare loop and in the drain) and the
     * agent's; on 2 idle cores the drain can go no faster than the larger of the two. */
    if (cpu0 >= 0 && cpu2 >= cpu1 && cpu1 >= cpu0)
        printf("CPU per op: server %.1f us in the bare loop, %.1f us in the drain; agent %.1f us "
               "(wall per op: bare %.1f us, drain %.1f us)\n",
               (cpu1 - cpu0) * 1e6 / nops, (cpu2 - cpu1) * 1e6 / nops, agent_cpu * 1e6 / nops,
               1e6 / bare, 1e6 / res[0]);
    printf("BENCH {\"name\":\"sync.drain\",\"value\":%.0f,\"unit\":\"ops/s\",\"baseline\":%.0f,"
           "\"baseline_name\":\"curl.keepalive_post_batch500\",\"ratio\":%.2f}\n",
           res[0], bare, res[0] / bare);
    printf("BENCH {\"name\":\"sync.wire_bytes_per_op\",\"value\":%.0f,\"unit\":\"bytes\","
           "\"baseline\":%.0f,\"baseline_name\":\"curl.keepalive_post_batch500\",\"ratio\":%.2f}\n",
           res[1], bare_bpo, bare_bpo / res[1]);
    printf("BENCH {\"name\":\"sync.agent_peak_rss\",\"value\":%.1f,\"unit\":\"MB\"}\n", rss_mb);
    curl_global_cleanup();
    return 0;
}
