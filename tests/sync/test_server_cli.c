/* fieldsync tests: fieldsync-server as a program: command-line errors, secret file permissions,
 * restarts (idempotency is durable), shutdown with a request in flight, faults, HTTPS. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "port/alloc.h"
#include "sync/transport.h"
#include "tests/sync/server_client.h"
#include "tests/test_util.h"

#define OPBUF 1024

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* A fresh dir with the files of a 4-device server. */
static void fresh(th_server_t *s)
{
    assert_true(th_server_prepare(s, 4));
}

/* The server's exit rc and stderr err: a non-zero exit and one clear line naming needle. */
static void expect_one_line(int rc, const char *err, const char *needle)
{
    if (rc <= 0 || strstr(err, needle) == NULL)
        fail_msg("exit %d, stderr '%s', wanted a non-zero exit and '%s'", rc, err, needle);
    const char *nl = strchr(err, '\n');
    assert_non_null(nl);
    assert_string_equal(nl + 1, "");
}

static void expect_cli_error(const char *const *args, const char *needle)
{
    char err[2048];
    expect_one_line(th_run_cli(args, err, sizeof err), err, needle);
}

/* The same for "--listen 127.0.0.1:0 --db DB --devices-file DEVICES" and extra (may be NULL). */
static void expect_refused(const char *db, const char *devices, const char *const *extra,
                           const char *needle)
{
    char err[2048];
    expect_one_line(th_run_cli_on(db, devices, extra, err, sizeof err), err, needle);
}

static void test_server_cli__bad_flags_and_files(void **state)
{
    (void)state;
    th_server_t s;
    fresh(&s);
    const char *a1[] = {"--bogus", "x", NULL};
    expect_cli_error(a1, "unknown option");
    const char *a2[] = {"--listen", "127.0.0.1:0", "--devices-file", s.devices, NULL};
    expect_cli_error(a2, "--db");
    const char *a3[] = {"--listen", "nocolon", "--db", s.db, "--devices-file", s.devices, NULL};
    expect_cli_error(a3, "--listen");
    const char *a4[] = {"--fault-5xx", "2", NULL};
    expect_refused(s.db, s.devices, a4, "rate");
    const char *a5[] = {"--listen", "127.0.0.1:0", "--db", s.db, "--devices-file", NULL};
    expect_cli_error(a5, "needs a value");

    char path[400];
    snprintf(path, sizeof path, "%s/missing.json", s.dir);
    expect_refused(s.db, path, NULL, "cannot read the devices file");
    snprintf(path, sizeof path, "%s/bad.json", s.dir);
    write_file(path, "{\"devices\": [{\"id\": \"x\"}]}", 0600);
    expect_refused(s.db, path, NULL, "malformed");
    write_file(path, "{\"devices\": [", 0600);
    expect_refused(s.db, path, NULL, "malformed");
    /* Secrets readable by others are refused. */
    assert_int_equal(chmod(s.devices, 0644), 0);
    expect_refused(s.db, s.devices, NULL, "chmod 600");
    assert_int_equal(chmod(s.devices, 0600), 0);
    assert_int_equal(chmod(s.token, 0640), 0);
    const char *a9[] = {"--admin-token-file", s.token, NULL};
    expect_refused(s.db, s.devices, a9, "admin token");
    assert_int_equal(chmod(s.token, 0600), 0);
    const char *a10[] = {"--tls-cert", s.devices, NULL};
    expect_refused(s.db, s.devices, a10, "--tls-key");
    /* The admin listener's options: only with the admin API, a sane address and deadline. */
    const char *a10b[] = {"--admin-listen", "127.0.0.1:0", NULL};
    expect_refused(s.db, s.devices, a10b, "--admin-listen goes with --admin-token-file");
    const char *a10c[] = {"--admin-token-file", s.token, "--admin-allow-remote", NULL};
    expect_refused(s.db, s.devices, a10c, "--admin-allow-remote goes with --admin-listen");
    const char *a10d[] = {"--header-timeout", "0", NULL};
    expect_refused(s.db, s.devices, a10d, "--header-timeout");
    const char *a10e[] = {"--admin-token-file", s.token, "--admin-listen", "unix:", NULL};
    expect_refused(s.db, s.devices, a10e, "--admin-listen");
    /* Numbers are plain decimals: spaces, signs and hex are refused, not read as a port or days;
     * a retention under a millisecond is refused, not made 1 ms (every outcome swept at once). */
    const char *a10f[] = {"--listen",       "127.0.0.1:+80", "--db", s.db,
                          "--devices-file", s.devices,       NULL};
    expect_cli_error(a10f, "--listen");
    const char *a10g[] = {"--listen",       "127.0.0.1: 0", "--db", s.db,
                          "--devices-file", s.devices,      NULL};
    expect_cli_error(a10g, "--listen");
    const char *a10h[] = {"--op-retention-days", "0x10", NULL};
    expect_refused(s.db, s.devices, a10h, "--op-retention-days");
    const char *a10i[] = {"--op-retention-days", "1e-12", NULL};
    expect_refused(s.db, s.devices, a10i, "under a millisecond");
    /* A PostgreSQL database that cannot be reached: one line, and never the URI's password (a
     * build without libpq says so instead). Port 1 on loopback has no server. */
    static const char pg[] = "postgresql://u:hunter2@127.0.0.1:1/x";
    expect_refused(pg, s.devices, NULL, "database (PostgreSQL URI)");
    char err[4096];
    assert_int_not_equal(th_run_cli_on(pg, s.devices, NULL, err, sizeof err), 0);
    assert_null(strstr(err, "hunter2"));
    /* Nor a malformed one's, which libpq quotes in its message. */
    static const char *const bad[] = {"postgresql://u:hunter2@[::1/x",
                                      "postgresql://u:hun%zzter2@127.0.0.1:1/x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_not_equal(th_run_cli_on(bad[i], s.devices, NULL, err, sizeof err), 0);
        if (strstr(err, "hunter2") != NULL || strstr(err, "hun%zzter2") != NULL)
            fail_msg("the password is printed: %s", err);
    }

    const char *help[] = {"--help", NULL};
    assert_int_equal(th_run_cli(help, err, sizeof err), 0);
    th_dir_remove(s.dir);
}

/* Configuration files that are there and private but still unusable: each a one-line error. */
static void test_server_cli__unusable_config_files(void **state)
{
    (void)state;
    th_server_t s;
    fresh(&s);
    expect_refused(s.db, s.dir, NULL, "is not a regular file");
    write_file(s.token, "short-token\n", 0600);
    const char *a2[] = {"--admin-token-file", s.token, NULL};
    expect_refused(s.db, s.devices, a2, "weak");
    char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    write_file(s.token, big, 0600);
    expect_refused(s.db, s.devices, a2, "too large");
    th_dir_remove(s.dir);
}

static void test_server_cli__busy_port(void **state)
{
    (void)state;
    th_server_t s;
    fresh(&s);
    assert_true(th_server_start(&s, NULL));
    const char *colon = strrchr(s.url, ':');
    assert_non_null(colon);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%s", colon + 1);
    char db2[400];
    snprintf(db2, sizeof db2, "%s/other.db", s.dir);
    const char *args[] = {"--listen", listen, "--db", db2, "--devices-file", s.devices, NULL};
    expect_cli_error(args, "in use");
    assert_int_equal(th_server_stop(&s), 0);
    th_dir_remove(s.dir);
}

static const char *batch_body(char *buf, size_t cap)
{
    static const char *const ids[] = {"11111111-1111-4111-8111-111111111111",
                                      "22222222-2222-4222-8222-222222222222",
                                      "33333333-3333-4333-8333-333333333333"};
    char a[OPBUF], b[OPBUF], c[OPBUF];
    snprintf(
        buf, cap, "{\"batch_id\":\"batch-r\",\"ops\":[%s,%s,%s]}",
        tc_op(a, sizeof a, ids[0], "create", "ticket", "T-r", ",\"fields\":{}"),
        tc_op(b, sizeof b, ids[1], "increment", "ticket", "T-r", ",\"field\":\"level\",\"by\":2"),
        tc_op(c, sizeof c, ids[2], "append", "ticket", "T-r",
              ",\"field\":\"ticketlog\",\"key\":\"ticket_history\",\"item\":\"x\""));
    return buf;
}

/* Pushes body as device 0 and returns the HTTP status; results into *res. */
static long push_body(const char *url, const char *body, fsa_codec_result_t **res, size_t *n)
{
    th_resp_t r;
    *res = NULL;
    *n = 0;
    th_request(NULL, url, "POST", "/v1/devices/dev000/ops", 0, body, strlen(body), NULL, &r);
    if (r.status == 200)
        assert_fsa_ok(fsa_codec_decode_results(r.body, r.len, res, n, NULL));
    long st = r.status;
    th_resp_free(&r);
    return st;
}

static void test_server_restart__duplicates_survive(void **state)
{
    (void)state;
    th_server_t s;
    fresh(&s);
    char body[4 * OPBUF];
    batch_body(body, sizeof body);
    assert_true(th_server_start(&s, NULL));
    fsa_codec_result_t *res;
    size_t n;
    assert_int_equal(push_body(s.url, body, &res, &n), 200);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(res[i].status, FSA_RESULT_APPLIED);
    fsa_codec_results_free(res, n);
    assert_int_equal(th_server_stop(&s), 0);
    /* A clean close checkpoints the WAL into the database and removes it. */
    char wal[400];
    snprintf(wal, sizeof wal, "%s-wal", s.db);
    assert_int_equal(access(wal, F_OK), -1);

    assert_true(th_server_start(&s, NULL));
    assert_int_equal(push_body(s.url, body, &res, &n), 200);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(res[i].status, FSA_RESULT_DUPLICATE);
        assert_int_equal(res[i].original, FSA_RESULT_APPLIED);
        assert_int_equal(res[i].version, (int64_t)i + 1);
    }
    fsa_codec_results_free(res, n);
    char *f = NULL;
    assert_int_equal(tc_get(NULL, s.url, "ticket", "T-r", &f), 3);
    assert_non_null(strstr(f, "\"level\":2"));
    fsa_free(f);
    assert_int_equal(th_server_stop(&s), 0);
    th_dir_remove(s.dir);
}

static void test_server_fault__drop_after_commit_then_resend(void **state)
{
    (void)state;
    th_server_t s;
    fresh(&s);
    char body[4 * OPBUF];
    batch_body(body, sizeof body);
    const char *drop[] = {"--fault-drop", "1.0", NULL};
    assert_true(th_server_start(&s, drop));
    th_resp_t r;
    assert_false(
        th_request(NULL, s.url, "POST", "/v1/devices/dev000/ops", 0, body, strlen(body), NULL, &r));
    assert_int_equal(r.status, 0); /* no answer at all */
    th_resp_free(&r);
    /* ... but it was committed: the resend (through the same dropping server, then a clean one)
     * finds every op a duplicate and the state is as after one application. */
    char *f = NULL;
    assert_int_equal(tc_get(NULL, s.url, "ticket", "T-r", &f), 3);
    fsa_free(f);
    assert_int_equal(th_server_stop(&s), 0);
    assert_true(th_server_start(&s, NULL));
    fsa_codec_result_t *res;
    size_t n;
    assert_int_equal(push_body(s.url, body, &res, &n), 200);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(res[i].status, FSA_RESULT_DUPLICATE);
    fsa_codec_results_free(res, n);
    assert_int_equal(tc_get(NULL, s.url, "ticket", "T-r", &f), 3);
    assert_non_null(strstr(f, "\"level\":2"));
    assert_non_null(strstr(f, "[\"x\"]"));
    fsa_free(f);
    assert_int_equal(th_server_stop(&s), 0);
    th_dir_remove(s.dir);
}

static void test_server_fault__429_5xx_reset_latency(void **state)
{
    (void)state;
    th_server_t s;
    fresh(&s);
    char body[4 * OPBUF];
    batch_body(body, sizeof body);
    th_resp_t r;

    const char *f429[] = {"--fault-429", "1", "--fault-retry-after", "7", NULL};
    assert_true(th_server_start(&s, f429));
    assert_true(
        th_request(NULL, s.url, "POST", "/v1/devices/dev000/ops", 0, body, strlen(body), NULL, &r));
    assert_int_equal(r.status, 429);
    assert_string_equal(r.retry_after, "7");
    th_resp_free(&r);
    char *f = NULL;
    assert_int_equal(tc_get(NULL, s.url, "ticket", "T-r", &f), 0); /* admin is not faulted */
    assert_int_equal(th_server_stop(&s), 0);

    const char *f5xx[] = {"--fault-5xx", "1", NULL};
    assert_true(th_server_start(&s, f5xx));
    assert_true(th_request(NULL, s.url, "GET", "/v1/devices/dev000/changes", 0, NULL, 0, NULL, &r));
    assert_int_equal(r.status, 500);
    th_resp_free(&r);
    assert_int_equal(th_server_stop(&s), 0);

    const char *freset[] = {"--fault-reset", "1", NULL};
    assert_true(th_server_start(&s, freset));
    assert_false(
        th_request(NULL, s.url, "POST", "/v1/devices/dev000/ops", 0, body, strlen(body), NULL, &r));
    th_resp_free(&r);
    assert_int_equal(tc_get(NULL, s.url, "ticket", "T-r", &f), 0);
    assert_int_equal(th_server_stop(&s), 0);

    /* Half the requests fail with a fixed seed: the same seed gives the same faults. */
    const char *fhalf[] = {"--fault-5xx", "0.5", "--fault-seed", "42", NULL};
    char pattern[2][17];
    for (int run = 0; run < 2; run++) {
        assert_true(th_server_start(&s, fhalf));
        for (int i = 0; i < 16; i++) {
            assert_true(
                th_request(NULL, s.url, "GET", "/v1/devices/dev000/changes", 0, NULL, 0, NULL, &r));
            pattern[run][i] = r.status == 200 ? '.' : 'x';
            th_resp_free(&r);
        }
        pattern[run][16] = '\0';
        assert_int_equal(th_server_stop(&s), 0);
    }
    assert_string_equal(pattern[0], pattern[1]);
    assert_non_null(strchr(pattern[0], 'x'));
    assert_non_null(strchr(pattern[0], '.'));

    const char *flat[] = {"--fault-latency-ms", "150", NULL};
    assert_true(th_server_start(&s, flat));
    fsa_mono_t t0 = fsa_port_posix()->mono_now(NULL);
    assert_true(th_request(NULL, s.url, "GET", "/v1/devices/dev000/changes", 0, NULL, 0, NULL, &r));
    assert_int_equal(r.status, 200);
    assert_true(test_real_elapsed_ns(t0) >= 150 * FSA_NS_PER_MS);
    th_resp_free(&r);
    assert_int_equal(th_server_stop(&s), 0);
    th_dir_remove(s.dir);
}

typedef struct inflight {
    const char *url;
    const char *body;
    long status;
} inflight_t;

static void *inflight_push(void *arg)
{
    inflight_t *a = arg;
    th_resp_t r;
    th_request(NULL, a->url, "POST", "/v1/devices/dev001/ops", 1, a->body, strlen(a->body), NULL,
               &r);
    a->status = r.status;
    th_resp_free(&r);
    return NULL;
}

/* Reads requests.total - requests.admin from the statistics. */
static long long device_requests(const char *url)
{
    th_req_opts_t o = {.bearer = TH_ADMIN_TOKEN};
    th_resp_t r;
    long long total = -1, admin = -1;
    if (th_request(NULL, url, "GET", "/admin/v1/stats", 0, NULL, 0, &o, &r) && r.body != NULL) {
        const char *t = strstr(r.body, "\"total\":");
        const char *a = strstr(r.body, "\"admin\":");
        if (t != NULL && a != NULL) {
            total = strtoll(t + 8, NULL, 10);
            admin = strtoll(a + 8, NULL, 10);
        }
    }
    th_resp_free(&r);
    return total - admin;
}

static void test_server_sigterm__finishes_request_in_flight(void **state)
{
    (void)state;
    th_server_t s;
    fresh(&s);
    const char *slow[] = {"--fault-latency-ms", "400", NULL};
    assert_true(th_server_start(&s, slow));
    char op[OPBUF], body[OPBUF + 64];
    tc_op(op, sizeof op, NULL, "create", "jobneed", "J-term", ",\"fields\":{}");
    snprintf(body, sizeof body, "{\"batch_id\":\"t\",\"ops\":[%s]}", op);
    inflight_t a = {s.url, body, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, inflight_push, &a), 0);
    /* Wait (bounded, by asking the server, not by sleeping) until the push has arrived. */
    int polls = 0;
    while (device_requests(s.url) < 1 && polls < 5000)
        polls++;
    assert_true(polls < 5000);
    assert_int_equal(th_server_stop(&s), 0);
    pthread_join(t, NULL);
    assert_int_equal(a.status, 200);
    /* And it was committed. */
    assert_true(th_server_start(&s, NULL));
    char *f = NULL;
    assert_int_equal(tc_get(NULL, s.url, "jobneed", "J-term", &f), 1);
    fsa_free(f);
    assert_int_equal(th_server_stop(&s), 0);
    th_dir_remove(s.dir);
}

/* The server has nothing to reload: SIGHUP ends it (its default action, as before the port took
 * its signals), SIGINT stops it cleanly like SIGTERM. */
static void test_server_signals__sighup_ends_sigint_stops(void **state)
{
    (void)state;
    th_server_t s;
    fresh(&s);
    assert_true(th_server_start(&s, NULL));
    assert_int_equal(th_server_signal(&s, SIGHUP), 128 + SIGHUP);
    assert_true(th_server_start(&s, NULL));
    assert_int_equal(tc_seed(NULL, s.url, "ticket", "T-int", "{}"), 201);
    assert_int_equal(th_server_signal(&s, SIGINT), 0);
    th_dir_remove(s.dir);
}

static void test_server_tls__https(void **state)
{
    (void)state;
    th_server_t s;
    fresh(&s);
    char cert[400], key[400], cmd[1200];
    snprintf(cert, sizeof cert, "%s/cert.pem", s.dir);
    snprintf(key, sizeof key, "%s/key.pem", s.dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' -days 1 "
             "-subj /CN=localhost >/dev/null 2>&1",
             key, cert);
    /* The openssl tool makes the test certificate; toolchain/install-deps.sh installs it, and
     * without it this test fails rather than skip (as test_transport's TLS tests do). */
    if (system(cmd) != 0) {
        th_dir_remove(s.dir);
        fail_msg("cannot make a test certificate with the openssl tool (toolchain/install-deps.sh "
                 "installs it)");
    }
    assert_int_equal(chmod(key, 0644), 0);
    const char *tls[] = {"--tls-cert", cert, "--tls-key", key, NULL};
    expect_refused(s.db, s.devices, tls, "TLS key");
    assert_int_equal(chmod(key, 0600), 0);
    assert_true(th_server_start(&s, tls));
    assert_int_equal(strncmp(s.url, "https://127.0.0.1:", 18), 0);
    th_resp_t r;
    assert_true(
        th_request(NULL, s.url, "GET", "/v1/devices/dev002/changes?limit=5", 2, NULL, 0, NULL, &r));
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_int_equal(th_server_stop(&s), 0);
    th_dir_remove(s.dir);
}

enum { CRASH_MAX_OPS = 2000, CRASH_KILL_AFTER = 60 };

typedef struct crasher {
    const char *url;
    char op_ids[CRASH_MAX_OPS][37];
    int attempted; /* ops sent (answered or not) */
    int acked;     /* ops answered "applied" */
    pthread_mutex_t lock;
    pthread_cond_t cond;
} crasher_t;

/* Pushes one increment per request until the server stops answering. */
static void *crasher_main(void *arg)
{
    crasher_t *c = arg;
    CURL *h = curl_easy_init();
    for (int i = 0; i < CRASH_MAX_OPS; i++) {
        char op[OPBUF];
        tc_op_id(c->op_ids[i]);
        tc_op(op, sizeof op, c->op_ids[i], "increment", "ticket", "T-crash",
              ",\"field\":\"level\",\"by\":1");
        pthread_mutex_lock(&c->lock);
        c->attempted = i + 1;
        pthread_mutex_unlock(&c->lock);
        fsa_codec_result_t *res = NULL;
        size_t n = 0;
        long st = tc_push(h, c->url, 1, op, &res, &n);
        bool applied = st == 200 && n == 1 && res[0].status == FSA_RESULT_APPLIED;
        fsa_codec_results_free(res, n);
        if (st != 200)
            break;
        pthread_mutex_lock(&c->lock);
        if (applied)
            c->acked++;
        pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->lock);
    }
    pthread_mutex_lock(&c->lock);
    c->acked = -c->acked - 1; /* marks the end for a waiter that is still waiting */
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    curl_easy_cleanup(h);
    return NULL;
}

static void test_server_crash__acknowledged_ops_survive_kill9(void **state)
{
    (void)state;
    th_server_t s;
    fresh(&s);
    assert_true(th_server_start(&s, NULL));
    assert_int_equal(tc_seed(NULL, s.url, "ticket", "T-crash", "{}"), 201);
    crasher_t *c = fsa_calloc(1, sizeof *c);
    assert_non_null(c);
    c->url = s.url;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, crasher_main, c), 0);
    pthread_mutex_lock(&c->lock);
    while (c->acked >= 0 && c->acked < CRASH_KILL_AFTER)
        pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
    /* Crash the server while the device keeps pushing. */
    assert_int_equal(th_server_kill(&s), 128 + 9);
    pthread_join(t, NULL);
    int acked = c->acked < 0 ? -c->acked - 1 : c->acked;
    int attempted = c->attempted;
    assert_true(acked >= CRASH_KILL_AFTER);

    assert_true(th_server_start(&s, NULL));
    char *f = NULL;
    int64_t version = tc_get(NULL, s.url, "ticket", "T-crash", &f);
    char lvl[32];
    tc_field(NULL, s.url, "ticket", "T-crash", "level", lvl, sizeof lvl);
    fsa_free(f);
    int level = (int)strtol(lvl, NULL, 10);
    /* Every acknowledged op survived; none is applied twice; the version counts them exactly. */
    assert_true(level >= acked);
    assert_true(level <= attempted);
    assert_int_equal(version, 1 + level);
    /* The device resends everything it is not sure of: the result is exactly once. */
    for (int i = 0; i < attempted; i++) {
        char op[OPBUF];
        tc_op(op, sizeof op, c->op_ids[i], "increment", "ticket", "T-crash",
              ",\"field\":\"level\",\"by\":1");
        fsa_codec_result_t *res = NULL;
        size_t n = 0;
        assert_int_equal(tc_push(NULL, s.url, 1, op, &res, &n), 200);
        assert_int_equal(n, 1);
        assert_true(res[0].status == FSA_RESULT_DUPLICATE || res[0].status == FSA_RESULT_APPLIED);
        if (i < acked)
            assert_int_equal(res[0].status, FSA_RESULT_DUPLICATE);
        fsa_codec_results_free(res, n);
    }
    tc_field(NULL, s.url, "ticket", "T-crash", "level", lvl, sizeof lvl);
    assert_int_equal(strtol(lvl, NULL, 10), attempted);
    assert_int_equal(th_server_stop(&s), 0);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    fsa_free(c);
    th_dir_remove(s.dir);
}

int main(void)
{
    if (fsa_transport_global_init() != FSA_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_cli__bad_flags_and_files),
        cmocka_unit_test(test_server_cli__unusable_config_files),
        cmocka_unit_test(test_server_cli__busy_port),
        cmocka_unit_test(test_server_restart__duplicates_survive),
        cmocka_unit_test(test_server_fault__drop_after_commit_then_resend),
        cmocka_unit_test(test_server_fault__429_5xx_reset_latency),
        cmocka_unit_test(test_server_sigterm__finishes_request_in_flight),
        cmocka_unit_test(test_server_tls__https),
        cmocka_unit_test(test_server_crash__acknowledged_ops_survive_kill9),
        cmocka_unit_test(test_server_signals__sighup_ends_sigint_stops),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
