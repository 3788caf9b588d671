/* fieldsync tests: the real fieldsync-server under hostile clients (issue 17's probes). */
/*
 * Each probe of the security review runs against one live server with its default limits, from
 * its own loopback source address (127.0.0.2 and up), while a legitimate device signs pulls from
 * 127.0.0.1 in a thread of its own: every one of them must be answered 200 within a second
 * (scaled by FSA_TEST_SCALE, e.g. under qemu), and the server's resident memory must grow by at
 * most g_rss_budget_kb over the whole run. After the probes the server must still serve, count
 * what it refused, and stop cleanly. Every loop is bounded in count, every socket in time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "port/alloc.h"
#include "port/limits.h"
#include "tests/sync/pg_harness.h"
#include "tests/sync/server_client.h"
#include "tests/sync/server_harness.h"
#include "tests/test_util.h"

/* The server's RSS may grow by this much over all probes: the body budget (64 MiB) is the
 * largest thing it may hold, plus libmicrohttpd's connection buffers and the allocator's arenas
 * of 16 worker threads (measured peak about +80 MiB, +93 MiB on a loaded machine). Before the
 * limits 300 uploads took 390 MB. Under AddressSanitizer the server's RSS also counts shadow
 * memory (1/8 of what it touches) and the quarantine of freed blocks (256 MiB by default): the
 * server gets a small quarantine (setup) and the budget half as much again. */
static long g_rss_budget_kb = 128L * 1024;

static th_server_t g_srv;
static int g_port;
static long g_rss0_kb;
static int g_scale = 1; /* time bounds are multiplied by it (1 / FSA_TEST_SCALE) */

static long rss_kb(pid_t pid)
{
    return th_proc_kb(pid, "VmRSS");
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A TCP connection to the server from the loopback address src, with send and receive time-outs
 * so that no probe can hang; -1 when the connect itself failed. */
static int connect_from(const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    inet_pton(AF_INET, src, &a.sin_addr);
    struct timeval tv = {5 * g_scale, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in d = a;
    d.sin_port = htons((uint16_t)g_port);
    inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        connect(fd, (struct sockaddr *)&d, sizeof d) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k <= 0)
            return false;
        c += k;
        n -= (size_t)k;
    }
    return true;
}

/* Sends n bytes of chunk's spaces (65536 of them) to fd, a piece at a time: a body held short of
 * its end. False when the server closed mid-way. */
static bool send_spaces(int fd, const char *chunk, size_t n)
{
    for (size_t sent = 0; sent < n;) {
        size_t k = n - sent < 65536 ? n - sent : 65536;
        if (!send_all(fd, chunk, k))
            return false;
        sent += k;
    }
    return true;
}

/* Reads what the server answers until it closes or cap-1 bytes (bounded by the socket's
 * receive time-out). */
static size_t read_answer(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t k = recv(fd, buf + n, cap - 1 - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
        if (strstr(buf, "\r\n\r\n") != NULL && memchr(buf, '}', n) != NULL)
            break;
    }
    buf[n] = '\0';
    return n;
}

/* Headers of a push from a known device that look signed (the signature fails only once the
 * body is read): the most a client without the secret can make the server do. */
static int signed_looking_head(char *buf, size_t cap, const char *framing)
{
    return snprintf(buf, cap,
                    "POST /v1/devices/dev001/ops HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "X-Device-Id: dev001\r\nX-Timestamp: %lld\r\n"
                    "X-Nonce: 0123456789abcdef0123456789abcdef\r\n"
                    "X-Signature: %064d\r\nContent-Type: application/json\r\n%s\r\n",
                    (long long)time(NULL) * 1000, 0, framing);
}

/* ---- the legitimate device, pulling from 127.0.0.1 all along ---- */

typedef struct legit {
    atomic_int stop;
    int requests, failures;
    int64_t worst_ms;
    long first_failure;
} legit_t;

static legit_t g_legit;
static pthread_t g_legit_thread;

static void *legit_main(void *arg)
{
    legit_t *l = arg;
    /* At most 5 requests a second: device 0's own quota (50 a second) is never the reason it
     * fails. The pause paces the load; nothing waits on it. */
    for (int i = 0; i < 2000 && !atomic_load(&l->stop); i++) {
        th_resp_t r;
        int64_t t0 = now_ms();
        bool ok = th_request(NULL, g_srv.url, "GET", "/v1/devices/dev000/changes?limit=5", 0, NULL,
                             0, NULL, &r);
        int64_t dt = now_ms() - t0;
        l->requests++;
        if (!ok || r.status != 200) {
            if (l->failures++ == 0)
                l->first_failure = ok ? r.status : -r.curl_code;
        }
        if (dt > l->worst_ms)
            l->worst_ms = dt;
        th_resp_free(&r);
        struct timespec pace = {0, 200 * 1000 * 1000};
        nanosleep(&pace, NULL);
    }
    return NULL;
}

static int setup(void **state)
{
    (void)state;
    /* FSA_TEST_SCALE: the suite's factor (0.25 under qemu): counts that need no minimum are
     * scaled by it, time bounds by its inverse. */
    const char *sc = getenv("FSA_TEST_SCALE");
    double f = sc != NULL ? strtod(sc, NULL) : 1.0;
    if (!(f > 0.0 && f <= 1.0))
        f = 1.0;
    g_scale = (int)(1.0 / f + 0.999);
    if (g_scale < 1)
        g_scale = 1;
    if (th_server_small_quarantine())
        g_rss_budget_kb = g_rss_budget_kb * 3 / 2;
    char rate[16], conns[16];
    snprintf(rate, sizeof rate, "%d", FSA_LIMIT_DEVICE_REQ_PER_S);
    snprintf(conns, sizeof conns, "%d", FSA_LIMIT_SERVER_CONNECTIONS_PER_ADDR);
    /* The defaults, named: the harness would raise them for the functional suites. */
    const char *extra[] = {"--device-rate", rate, "--per-addr-connections", conns, NULL};
    if (!th_server_prepare(&g_srv, 4) || !th_backend_db(g_srv.db, sizeof g_srv.db) ||
        !th_server_start(&g_srv, extra))
        return -1;
    const char *colon = strrchr(g_srv.url, ':');
    g_port = colon != NULL ? (int)strtol(colon + 1, NULL, 10) : 0;
    g_rss0_kb = rss_kb(g_srv.pid);
    memset(&g_legit, 0, sizeof g_legit);
    return pthread_create(&g_legit_thread, NULL, legit_main, &g_legit) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int rc = th_server_stop(&g_srv);
    th_dir_remove(g_srv.dir);
    return rc == 0 ? 0 : -1;
}

static void assert_rss_within_budget(const char *after)
{
    long kb = rss_kb(g_srv.pid);
    assert_true(kb > 0);
    if (kb - g_rss0_kb > g_rss_budget_kb)
        fail_msg("after %s the server's RSS grew %ld kB (budget %ld kB)", after, kb - g_rss0_kb,
                 g_rss_budget_kb);
    printf("  after %s: RSS %ld kB (+%ld kB)\n", after, kb, kb - g_rss0_kb);
}

/* 1,010 half-sent requests from one client took every worker; now one address holds at most
 * FSA_LIMIT_SERVER_CONNECTIONS_PER_ADDR connections and the rest are closed at once. */
static void test_hostile__half_sent_requests_from_one_address(void **state)
{
    (void)state;
    enum { N = 200 };
    int fds[N];
    int open_ = 0;
    for (int i = 0; i < N; i++) {
        fds[i] = connect_from("127.0.0.2");
        if (fds[i] >= 0) {
            static const char half[] = "POST /v1/devices/dev000/ops HTTP/1.1\r\nHost: x\r\n";
            (void)send(fds[i], half, sizeof half - 1, MSG_NOSIGNAL);
            open_++;
        }
    }
    assert_true(open_ > FSA_LIMIT_SERVER_CONNECTIONS_PER_ADDR);
    /* The server closes what is over the limit: wait (bounded) until it has. */
    int closed = 0;
    int64_t deadline = now_ms() + 5000L * g_scale;
    while (now_ms() < deadline) {
        closed = 0;
        for (int i = 0; i < N; i++) {
            if (fds[i] < 0) {
                closed++;
                continue;
            }
            struct pollfd p = {fds[i], POLLIN, 0};
            char b;
            if (poll(&p, 1, 0) == 1 && recv(fds[i], &b, 1, MSG_DONTWAIT) <= 0) {
                close(fds[i]);
                fds[i] = -1;
                closed++;
            }
        }
        if (N - closed <= FSA_LIMIT_SERVER_CONNECTIONS_PER_ADDR)
            break;
        struct pollfd none;
        (void)poll(&none, 0, 20);
    }
    printf("  200 half-sent requests from 127.0.0.2: %d left open\n", N - closed);
    assert_true(N - closed <= FSA_LIMIT_SERVER_CONNECTIONS_PER_ADDR);
    /* Another address still gets in and is served. */
    th_resp_t r;
    th_req_opts_t o = {.source = "127.0.0.3"};
    assert_true(
        th_request(NULL, g_srv.url, "GET", "/v1/devices/dev002/changes", 2, NULL, 0, &o, &r));
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    assert_rss_within_budget("half-sent requests");
}

/* 300 unauthenticated 1.1 MB uploads took 390 MB. Now an unknown device is refused on its
 * headers (nothing buffered), and signed-looking uploads share one body budget (503 past it). */
static void test_hostile__uploads_without_credentials(void **state)
{
    (void)state;
    const size_t body = 1000 * 1000;
    char *chunk = fsa_malloc(65536);
    assert_non_null(chunk);
    memset(chunk, ' ', 65536);
    /* From 5 addresses, 20 each: an address's share (a quarter of the budget) holds 16 of them,
     * and four addresses' shares fill the budget, so the fifth's are refused over the budget
     * (the wait below is for that refusal, "body_budget", not the share's). */
    static const char *const srcs[] = {"127.0.0.4", "127.0.0.5", "127.0.0.11", "127.0.0.12",
                                       "127.0.0.13"};
    enum { ADDRS = sizeof srcs / sizeof srcs[0], PER = 20 };
    int fds[ADDRS * PER];
    for (int i = 0; i < ADDRS * PER; i++) {
        fds[i] = connect_from(srcs[i / PER]);
        assert_true(fds[i] >= 0);
        char head[512];
        char framing[64];
        snprintf(framing, sizeof framing, "Content-Length: %zu\r\n", body);
        int hn = signed_looking_head(head, sizeof head, framing);
        assert_true(send_all(fds[i], head, (size_t)hn));
    }
    /* Every body but its last byte, so that none is complete and all are held at once (~1 MiB
     * buffer each: 100 MiB asked for); then, once the server says (its statistics) that it
     * refused one over the budget, the last bytes. */
    for (int i = 0; i < ADDRS * PER; i++)
        (void)send_spaces(fds[i], chunk, body - 1); /* refused mid-way and closed: allowed */
    bool refused = false;
    for (int i = 0; i < 200 * g_scale && !refused; i++) {
        th_req_opts_t ao = {.bearer = TH_ADMIN_TOKEN};
        th_resp_t r;
        assert_true(th_request(NULL, g_srv.url, "GET", "/admin/v1/stats", 0, NULL, 0, &ao, &r));
        refused = r.body != NULL && strstr(r.body, "\"body_budget\":0,") == NULL;
        th_resp_free(&r);
        if (!refused) {
            struct pollfd none;
            (void)poll(&none, 0, 50); /* paces the bounded polling of the statistics */
        }
    }
    assert_true(refused);
    for (int i = 0; i < ADDRS * PER; i++)
        (void)send(fds[i], " ", 1, MSG_NOSIGNAL);
    long peak = rss_kb(g_srv.pid);
    int n401 = 0, n503 = 0, other = 0;
    for (int i = 0; i < ADDRS * PER; i++) {
        char ans[2048];
        size_t n = read_answer(fds[i], ans, sizeof ans);
        close(fds[i]);
        if (n >= 12 && strncmp(ans + 9, "401", 3) == 0)
            n401++;
        else if (n >= 12 && strncmp(ans + 9, "503", 3) == 0)
            n503++;
        else if (other++ == 0)
            printf("  first other answer (%zu bytes): '%.60s'\n", n, ans);
    }
    fsa_free(chunk);
    printf("  100 signed-looking 1 MB uploads: %d x 401, %d x 503, %d other; peak RSS +%ld kB\n",
           n401, n503, other, peak - g_rss0_kb);
    assert_true(n503 > 0); /* 100 MB asked for, 64 MiB budget */
    assert_true(n401 > 0); /* the ones within the budget were read and refused */
    assert_true(peak - g_rss0_kb <= g_rss_budget_kb);

    /* An unknown device is refused on its headers: its body is never buffered. */
    for (int i = 0; i < 20; i++) {
        int fd = connect_from("127.0.0.6");
        assert_true(fd >= 0);
        char head[256];
        int hn = snprintf(head, sizeof head,
                          "POST /v1/devices/nobody/ops HTTP/1.1\r\nHost: x\r\n"
                          "X-Device-Id: nobody\r\nExpect: 100-continue\r\n"
                          "Content-Length: %zu\r\n\r\n",
                          body);
        assert_true(send_all(fd, head, (size_t)hn));
        char ans[2048];
        assert_true(read_answer(fd, ans, sizeof ans) > 12);
        assert_memory_equal(ans + 9, "401", 3);
        assert_non_null(strstr(ans, "unknown_device"));
        close(fd);
    }
    assert_rss_within_budget("uploads");
}

/* Uploads to a path the device listener does not serve, from one address, as many as it may
 * open: each is answered 404 and its body never held. Before, each held its buffer against the
 * body budget that pushes share, and one address held all of it: every device's push got 503. */
static void test_hostile__uploads_to_no_path_hold_no_budget(void **state)
{
    (void)state;
    const size_t body = 1000 * 1000;
    char *chunk = fsa_malloc(65536);
    assert_non_null(chunk);
    memset(chunk, ' ', 65536);
    enum { N = FSA_LIMIT_SERVER_CONNECTIONS_PER_ADDR };
    int fds[N];
    static const char *const paths[] = {"/nothing", "/admin/v1/stats", "/v1/devices/dev001/opsX"};
    /* Decided on the headers: a client waiting for "100 Continue" gets the 404 at once. */
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        int fd = connect_from("127.0.0.9");
        assert_true(fd >= 0);
        char head[256];
        int hn = snprintf(head, sizeof head,
                          "POST %s HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                          "Content-Length: %zu\r\n\r\n",
                          paths[i], body);
        assert_true(send_all(fd, head, (size_t)hn));
        char ans[2048];
        size_t got = read_answer(fd, ans, sizeof ans);
        close(fd);
        if (got < 12 || strncmp(ans + 9, "404", 3) != 0)
            fail_msg("%s: '%.40s', not a 404 before the body", paths[i], ans);
    }
    for (int i = 0; i < N; i++) {
        fds[i] = connect_from("127.0.0.9");
        assert_true(fds[i] >= 0);
        char head[256];
        int hn = snprintf(head, sizeof head,
                          "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
                          paths[i % 3], body);
        assert_true(send_all(fds[i], head, (size_t)hn));
        assert_true(send_spaces(fds[i], chunk, body - 1));
    }
    /* All of them held open, short of their last byte: a device's push is served. */
    char op[512];
    tc_op(op, sizeof op, NULL, "create", "ticket", "T-nopath", ",\"fields\":{}");
    fsa_codec_result_t *res = NULL;
    size_t n = 0;
    long st = tc_push(NULL, g_srv.url, 1, op, &res, &n);
    fsa_codec_results_free(res, n);
    for (int i = 0; i < N; i++)
        (void)send(fds[i], " ", 1, MSG_NOSIGNAL);
    int n404 = 0;
    for (int i = 0; i < N; i++) {
        char ans[2048];
        size_t got = read_answer(fds[i], ans, sizeof ans);
        close(fds[i]);
        n404 += got >= 12 && strncmp(ans + 9, "404", 3) == 0;
    }
    fsa_free(chunk);
    assert_int_equal(st, 200);
    assert_int_equal(n, 1);
    assert_int_equal(n404, N);
    assert_rss_within_budget("uploads to no path");
}

/* A replayed request spends none of the device's quota: 8 replays of one signed pull (a burst
 * is 4 at --device-rate 1) are each answered 401 replay, and the device's own next pull is
 * served. Before, the replays took its tokens: 429, and the device's pull got 429 too. */
static void test_hostile__replays_spend_no_quota(void **state)
{
    (void)state;
    th_server_t s;
    const char *extra[] = {"--device-rate", "1", NULL};
    assert_true(th_server_prepare(&s, 2) && th_backend_db(s.db, sizeof s.db) &&
                th_server_start(&s, extra));
    static const char path[] = "/v1/devices/dev001/changes?limit=1";
    th_req_opts_t o = {.nonce = "0123456789abcdef0123456789abcdef"};
    th_resp_t r;
    assert_true(th_request(NULL, s.url, "GET", path, 1, NULL, 0, &o, &r));
    long first = r.status;
    th_resp_free(&r);
    int replays = 0;
    for (int i = 0; i < 8; i++) {
        assert_true(th_request(NULL, s.url, "GET", path, 1, NULL, 0, &o, &r));
        replays += r.status == 401 && r.body != NULL && strstr(r.body, "replay") != NULL;
        th_resp_free(&r);
    }
    assert_true(th_request(NULL, s.url, "GET", path, 1, NULL, 0, NULL, &r));
    long own = r.status;
    th_resp_free(&r);
    assert_int_equal(th_server_stop(&s), 0);
    th_dir_remove(s.dir);
    assert_int_equal(first, 200);
    assert_int_equal(replays, 8);
    assert_int_equal(own, 200);
}

/* A 1 KB gzip body inflating to ~900 KB of [0,0,...] cost 40 MB a request: now too_large. */
static void test_hostile__json_value_bomb(void **state)
{
    (void)state;
    const size_t n = 900 * 1000;
    char *json = fsa_malloc(n + 64);
    assert_non_null(json);
    size_t k = (size_t)snprintf(json, 64, "{\"batch_id\":\"b1\",\"ops\":[");
    while (k + 4 < n) {
        json[k++] = '0';
        json[k++] = ',';
    }
    json[k++] = '0';
    json[k++] = ']';
    json[k++] = '}';
    th_req_opts_t o = {.gzip = true, .source = "127.0.0.7"};
    for (int i = 0; i < 20 / g_scale; i++) {
        th_resp_t r;
        assert_true(
            th_request(NULL, g_srv.url, "POST", "/v1/devices/dev003/ops", 3, json, k, &o, &r));
        assert_int_equal(r.status, 413);
        assert_non_null(strstr(r.body, "too_large"));
        th_resp_free(&r);
    }
    fsa_free(json);
    assert_rss_within_budget("value bombs");
}

/* A chunked body that never ends was read forever: now 413 and a close after little more than
 * the body limit. */
static void test_hostile__chunked_body_that_never_ends(void **state)
{
    (void)state;
    int fd = connect_from("127.0.0.8");
    assert_true(fd >= 0);
    char head[512];
    int hn = signed_looking_head(head, sizeof head, "Transfer-Encoding: chunked\r\n");
    assert_true(send_all(fd, head, (size_t)hn));
    char *chunk = fsa_malloc(65536 + 16);
    assert_non_null(chunk);
    int cl = snprintf(chunk, 16, "10000\r\n");
    memset(chunk + cl, ' ', 65536);
    chunk[cl + 65536] = '\r';
    chunk[cl + 65536 + 1] = '\n';
    size_t sent = 0;
    const size_t cap = 64u * 1024 * 1024; /* the probe's own bound */
    while (sent < cap) {
        if (!send_all(fd, chunk, (size_t)cl + 65536 + 2))
            break;
        sent += 65536;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 0) == 1)
            break; /* an answer came */
    }
    char ans[2048];
    size_t n = read_answer(fd, ans, sizeof ans);
    close(fd);
    fsa_free(chunk);
    printf("  chunked body: the server stopped it after %zu KiB sent\n", sent / 1024);
    /* Socket buffers on both sides hold a few MiB more than the server read. */
    assert_true(sent < 16u * 1024 * 1024);
    if (n > 0) {
        assert_memory_equal(ans + 9, "413", 3);
    }
    assert_rss_within_budget("chunked body");
}

/* Two Content-Length headers, or one with chunked, were read as the first said: now 400. */
static void test_hostile__request_smuggling(void **state)
{
    (void)state;
    static const char *const framings[] = {
        "Content-Length: 2\r\nContent-Length: 40\r\n",
        "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
    };
    for (size_t i = 0; i < 2; i++) {
        int fd = connect_from("127.0.0.9");
        assert_true(fd >= 0);
        char head[512];
        int hn = signed_looking_head(head, sizeof head, framings[i]);
        assert_true(send_all(fd, head, (size_t)hn));
        assert_true(send_all(fd, "{}", 2));
        char ans[2048];
        size_t n = read_answer(fd, ans, sizeof ans);
        close(fd);
        if (n < 12 || strncmp(ans + 9, "400", 3) != 0)
            fail_msg("framing %zu answered '%.40s'", i, ans);
    }
}

/* One device's flood made every other device get 503: now it gets 429, alone. */
static void test_hostile__one_device_floods(void **state)
{
    (void)state;
    CURL *h = curl_easy_init();
    assert_non_null(h);
    th_req_opts_t o = {.source = "127.0.0.10"};
    int ok = 0, n429 = 0, other = 0;
    for (int i = 0; i < 600; i++) {
        th_resp_t r;
        assert_true(th_request(h, g_srv.url, "GET", "/v1/devices/dev001/changes?limit=1", 1, NULL,
                               0, &o, &r));
        if (r.status == 200)
            ok++;
        else if (r.status == 429 && r.retry_after[0] != '\0')
            n429++;
        else
            other++;
        th_resp_free(&r);
    }
    curl_easy_cleanup(h);
    printf("  one device, 600 signed pulls: %d x 200, %d x 429, %d other\n", ok, n429, other);
    assert_int_equal(other, 0);
    assert_true(n429 > 0);
    assert_true(ok >= FSA_LIMIT_DEVICE_REQ_BURST);
    /* Another device, right after, from the same address: served. */
    th_resp_t r;
    th_req_opts_t o2 = {.source = "127.0.0.10"};
    assert_true(
        th_request(NULL, g_srv.url, "GET", "/v1/devices/dev002/changes", 2, NULL, 0, &o2, &r));
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
}

/* 10,000 wrong admin tokens went by in 1.4 s, uncounted: now the failures are counted, and
 * past a few a second every admin request gets 429 without its token being compared. */
static void test_hostile__admin_guessing(void **state)
{
    (void)state;
    th_req_opts_t o = {.bearer = "wrong-token-0123456789abcdefghijk", .source = "127.0.0.11"};
    int n401 = 0, n429 = 0;
    int64_t t0 = now_ms();
    for (int i = 0; i < 200; i++) {
        th_resp_t r;
        assert_true(th_request(NULL, g_srv.url, "GET", "/admin/v1/stats", 0, NULL, 0, &o, &r));
        if (r.status == 401)
            n401++;
        else if (r.status == 429)
            n429++;
        else
            fail_msg("a wrong admin token answered %ld", r.status);
        th_resp_free(&r);
    }
    int64_t dt = now_ms() - t0;
    printf("  200 wrong admin tokens in %lld ms: %d compared (401), %d refused unchecked (429)\n",
           (long long)dt, n401, n429);
    /* The burst, plus what refilled while they ran. */
    assert_true(n401 <= FSA_LIMIT_ADMIN_FAILS_BURST + 1 + dt * FSA_LIMIT_ADMIN_FAILS_PER_S / 1000);
    assert_true(n429 > 0);
    /* The admin with the right token gets in once the bucket refills (bounded retries). */
    th_req_opts_t ok = {.bearer = TH_ADMIN_TOKEN};
    long status = 0;
    char *body = NULL;
    for (int i = 0; i < 100 && status != 200; i++) {
        th_resp_t r;
        assert_true(th_request(NULL, g_srv.url, "GET", "/admin/v1/stats", 0, NULL, 0, &ok, &r));
        status = r.status;
        if (status == 200) {
            body = r.body;
            r.body = NULL;
        } else {
            struct pollfd none;
            (void)poll(&none, 0, 50); /* paces the bounded retries; nothing waits on it */
        }
        th_resp_free(&r);
    }
    assert_int_equal(status, 200);
    assert_non_null(body);
    /* Every refusal counted: the 200 guesses, and the admin's own 429s while it waited. */
    const char *cnt = strstr(body, "\"admin_unauthorized\":");
    assert_non_null(cnt);
    assert_true(strtol(cnt + strlen("\"admin_unauthorized\":"), NULL, 10) >= 200);
    fsa_free(body);
}

/* After the probes: the legitimate device was served within a second every time, the server
 * still serves, its memory is within budget, and the log was not flooded. */
static void test_hostile__after_it_all(void **state)
{
    (void)state;
    atomic_store(&g_legit.stop, 1);
    pthread_join(g_legit_thread, NULL);
    printf("  legitimate device: %d pulls, %d failed, worst %lld ms\n", g_legit.requests,
           g_legit.failures, (long long)g_legit.worst_ms);
    if (g_legit.failures > 0)
        fail_msg("the legitimate device failed %d times (first: %ld)", g_legit.failures,
                 g_legit.first_failure);
    assert_true(g_legit.requests > 0);
    assert_true(g_legit.worst_ms < 1000L * g_scale);
    th_resp_t r;
    assert_true(
        th_request(NULL, g_srv.url, "GET", "/v1/devices/dev000/changes", 0, NULL, 0, NULL, &r));
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_rss_within_budget("all probes");
    /* Client-provoked warnings are rate-limited: count the log's lines. */
    FILE *f = fopen(g_srv.errlog, "r");
    int lines = 0;
    char line[1200];
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        lines++;
    if (f != NULL)
        (void)fclose(f);
    printf("  server log: %d lines\n", lines);
    assert_true(lines < 400);
}

/* 1,000 connections trickling a byte every 25 s stayed open past 78 s: now a request must be
 * complete within its deadline (here 1 s, default 120 s) or its connection is closed. */
static void test_hostile__trickled_body_meets_its_deadline(void **state)
{
    (void)state;
    th_server_t s;
    const char *extra[] = {"--request-deadline-s", "1", NULL};
    assert_true(th_server_prepare(&s, 2));
    assert_true(th_backend_db(s.db, sizeof s.db));
    assert_true(th_server_start(&s, extra));
    const char *colon = strrchr(s.url, ':');
    int saved = g_port;
    g_port = (int)strtol(colon + 1, NULL, 10);
    int fd = connect_from("127.0.0.12");
    g_port = saved;
    assert_true(fd >= 0);
    char head[512];
    int hn = signed_looking_head(head, sizeof head, "Content-Length: 100\r\n");
    assert_true(send_all(fd, head, (size_t)hn));
    int64_t t0 = now_ms();
    int sent = 0;
    bool closed = false;
    /* One byte, then wait up to 300 ms for the server to close: at most 40 bytes (12 s). */
    while (sent < 40 && !closed) {
        if (send(fd, "x", 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
        sent++;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 300) == 1) {
            char b[256];
            closed = recv(fd, b, sizeof b, 0) <= 0;
        }
    }
    int64_t dt = now_ms() - t0;
    close(fd);
    printf("  a body trickled a byte per 300 ms: closed after %d bytes, %lld ms\n", sent,
           (long long)dt);
    assert_true(closed);
    assert_true(dt < 3000L * g_scale);
    assert_int_equal(th_server_stop(&s), 0);
    th_dir_remove(s.dir);
}

/* A number in the server's statistics (through its admin listener): "key": N. */
static long long stat_of(const th_server_t *s, const char *key)
{
    th_req_opts_t o = {.bearer = TH_ADMIN_TOKEN};
    th_resp_t r;
    long long v = -1;
    /* The admin failures' bucket may still be empty after the guessing probe: bounded retries. */
    for (int i = 0; i < 100 && v < 0; i++) {
        assert_true(th_request(NULL, s->url, "GET", "/admin/v1/stats", 0, NULL, 0, &o, &r));
        char pat[64];
        snprintf(pat, sizeof pat, "\"%s\":", key);
        const char *p = r.status == 200 && r.body != NULL ? strstr(r.body, pat) : NULL;
        if (p != NULL)
            v = strtoll(p + strlen(pat), NULL, 10);
        bool busy = r.status == 429;
        th_resp_free(&r);
        if (!busy)
            break;
        struct pollfd none;
        (void)poll(&none, 0, 50); /* paces the bounded retries; nothing waits on it */
    }
    if (v < 0)
        fail_msg("no '%s' in the server's statistics", key);
    return v;
}

/* One address, as many uploads with plausible headers as it may open (a known device id and a
 * signature of the right shape: it fails only once the body is read), all held short of their
 * last byte: before, 64 of them held the whole 64 MiB body budget and every device's push got
 * 503. Now the address holds at most its share (a quarter, 16 MiB): the rest of its uploads are
 * answered 503, and another device's push is served. */
static void test_hostile__one_address_holds_its_share(void **state)
{
    (void)state;
    const size_t body = 1000 * 1000;
    char *chunk = fsa_malloc(65536);
    assert_non_null(chunk);
    memset(chunk, ' ', 65536);
    enum { N = FSA_LIMIT_SERVER_CONNECTIONS_PER_ADDR };
    int fds[N];
    long long refused0 = stat_of(&g_srv, "addr_body_share");
    for (int i = 0; i < N; i++) {
        fds[i] = connect_from("127.0.0.10");
        assert_true(fds[i] >= 0);
        char head[512], framing[64];
        snprintf(framing, sizeof framing, "Content-Length: %zu\r\n", body);
        int hn = signed_looking_head(head, sizeof head, framing);
        assert_true(send_all(fds[i], head, (size_t)hn));
        assert_true(send_spaces(fds[i], chunk, body - 1));
    }
    /* The server says (its statistics) that it refused the address past its share. */
    long long refused = refused0;
    for (int i = 0; i < 200 * g_scale && refused == refused0; i++) {
        refused = stat_of(&g_srv, "addr_body_share");
        if (refused == refused0) {
            struct pollfd none;
            (void)poll(&none, 0, 50); /* paces the bounded polling of the statistics */
        }
    }
    char op[512];
    tc_op(op, sizeof op, NULL, "create", "ticket", "T-share", ",\"fields\":{}");
    fsa_codec_result_t *res = NULL;
    size_t n = 0;
    long st = tc_push(NULL, g_srv.url, 2, op, &res, &n);
    fsa_codec_results_free(res, n);
    for (int i = 0; i < N; i++)
        (void)send(fds[i], " ", 1, MSG_NOSIGNAL);
    int n401 = 0, n503 = 0;
    for (int i = 0; i < N; i++) {
        char ans[2048];
        size_t got = read_answer(fds[i], ans, sizeof ans);
        close(fds[i]);
        n401 += got >= 12 && strncmp(ans + 9, "401", 3) == 0;
        n503 += got >= 12 && strncmp(ans + 9, "503", 3) == 0;
    }
    fsa_free(chunk);
    printf("  %d signed-looking 1 MB uploads from one address: %d x 401, %d x 503\n", N, n401,
           n503);
    assert_int_equal(st, 200);
    assert_true(refused > refused0);
    /* Within the share: read, then refused (more than 16 in all: each answer gives its share
     * back to the uploads the server had not read yet). */
    assert_true(n401 >= 1);
    assert_true(n503 >= 1);
    assert_int_equal(n401 + n503, N);
    assert_rss_within_budget("uploads from one address");
}

/* The admin API was served on the device listener: now it has a listener of its own (loopback
 * by default), and the device listener answers /admin/ as an unknown path, whatever the token. */
static void test_hostile__admin_on_its_own_listener(void **state)
{
    (void)state;
    assert_true(g_srv.admin_url[0] != '\0');
    assert_string_not_equal(g_srv.admin_url, g_srv.url);
    assert_int_equal(strncmp(g_srv.admin_url, "http://127.0.0.1:", 17), 0);
    th_resp_t r;
    /* The right token on the device listener: 404, as for any unknown path. */
    th_req_opts_t on_dev = {.bearer = TH_ADMIN_TOKEN, .as_is = true, .source = "127.0.0.14"};
    static const char *const paths[] = {"/admin/v1/stats", "/admin/v1/entities/jobneed/J1",
                                        "/admin/v1/nothing"};
    for (size_t i = 0; i < 3; i++) {
        assert_true(th_request(NULL, g_srv.url, "GET", paths[i], 0, NULL, 0, &on_dev, &r));
        if (r.status != 404 || r.body == NULL || strstr(r.body, "no such resource") == NULL)
            fail_msg("%s on the device listener answered %ld '%.80s'", paths[i], r.status,
                     r.body != NULL ? r.body : "");
        th_resp_free(&r);
    }
    assert_true(th_request(NULL, g_srv.url, "POST", "/admin/v1/ops", 0, "{}", 2, &on_dev, &r));
    assert_int_equal(r.status, 404);
    th_resp_free(&r);
    /* The admin listener serves it, and does not serve the device protocol. */
    th_req_opts_t adm = {.bearer = TH_ADMIN_TOKEN};
    assert_true(th_request(NULL, g_srv.url, "GET", "/admin/v1/stats", 0, NULL, 0, &adm, &r));
    if (r.status != 200) /* the guessing probe may have emptied the failures' bucket */
        assert_int_equal(r.status, 429);
    th_resp_free(&r);
    assert_true(th_request(NULL, g_srv.admin_url, "GET", "/v1/devices/dev000/changes", 0, NULL, 0,
                           NULL, &r));
    assert_int_equal(r.status, 404);
    th_resp_free(&r);
}

/* The admin listener's address: a non-loopback one is refused (nothing is bound), so is a
 * malformed one; a unix socket works. (Apart from the probes above: it starts servers.) */
static void test_hostile__admin_listener_addresses(void **state)
{
    (void)state;
    th_resp_t r;
    th_req_opts_t adm = {.bearer = TH_ADMIN_TOKEN};
    th_server_t s;
    assert_true(th_server_prepare(&s, 1));
    char err[1024];
    const char *a1[] = {"--admin-token-file", s.token, "--admin-listen", "0.0.0.0:0", NULL};
    assert_int_not_equal(th_run_cli_on(s.db, s.devices, a1, err, sizeof err), 0);
    if (strstr(err, "not a loopback address") == NULL || strchr(err, '\n') != strrchr(err, '\n'))
        fail_msg("a non-loopback admin address: '%s'", err);
    const char *a2[] = {"--admin-listen", "nowhere", NULL};
    assert_int_equal(th_run_cli_on(s.db, s.devices, a2, err, sizeof err), 2);
    assert_non_null(strstr(err, "--admin-listen"));

    /* unix:PATH: a socket file of mode 0600, removed at the end; the admin API answers there. */
    char sock[400], listen[420];
    snprintf(sock, sizeof sock, "%s/admin.sock", s.dir);
    snprintf(listen, sizeof listen, "unix:%s", sock);
    assert_true(th_backend_db(s.db, sizeof s.db));
    const char *extra[] = {"--admin-listen", listen, NULL};
    assert_true(th_server_start(&s, extra));
    assert_string_equal(s.admin_url, listen);
    struct stat sb;
    assert_int_equal(lstat(sock, &sb), 0);
    assert_true(S_ISSOCK(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_true(th_request(NULL, s.url, "GET", "/admin/v1/stats", 0, NULL, 0, &adm, &r));
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"devices\":1"));
    th_resp_free(&r);
    assert_int_equal(th_server_stop(&s), 0);
    assert_int_not_equal(lstat(sock, &sb), 0);
    th_dir_remove(s.dir);
}

/* A replayed request (a nonce already seen for its device) was read in full before the replay
 * check: now it is refused on its headers. With "Expect: 100-continue" the 401 comes before the
 * client sends one byte of its body; without, the body is dropped as it comes, never kept. */
static void test_hostile__replay_refused_before_its_body(void **state)
{
    (void)state;
    char nonce[FSA_SIGNER_NONCE_BYTES];
    assert_int_equal(fsa_signer_nonce(fsa_port_posix(), nonce), FSA_OK);
    th_req_opts_t o = {.nonce = nonce, .source = "127.0.0.13"};
    th_resp_t r;
    assert_true(
        th_request(NULL, g_srv.url, "GET", "/v1/devices/dev002/changes", 2, NULL, 0, &o, &r));
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    long long before = stat_of(&g_srv, "before_body");
    long long replays = stat_of(&g_srv, "replay");
    const size_t body = 1000 * 1000;
    for (int expect = 1; expect >= 0; expect--) {
        int fd = connect_from("127.0.0.13");
        assert_true(fd >= 0);
        char head[768];
        int hn = snprintf(head, sizeof head,
                          "POST /v1/devices/dev002/ops HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "X-Device-Id: dev002\r\nX-Timestamp: %lld\r\nX-Nonce: %s\r\n"
                          "X-Signature: %064d\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n%s\r\n",
                          (long long)time(NULL) * 1000, nonce, 0, body,
                          expect ? "Expect: 100-continue\r\n" : "");
        assert_true(send_all(fd, head, (size_t)hn));
        if (!expect) {
            char *zeros = fsa_calloc(1, body);
            assert_non_null(zeros);
            (void)send_all(fd, zeros, body); /* the server may answer and close first */
            fsa_free(zeros);
        }
        /* With Expect, not one body byte was sent: the answer is the server's own. */
        char ans[2048];
        size_t n = read_answer(fd, ans, sizeof ans);
        close(fd);
        if (n < 12 || strncmp(ans + 9, "401", 3) != 0 || strstr(ans, "\"replay\"") == NULL)
            fail_msg("a replayed nonce (expect %d) answered '%.80s'", expect, ans);
    }
    long long after = stat_of(&g_srv, "before_body");
    printf("  replayed nonce, 1 MB body: refused on its headers twice (before_body %lld -> "
           "%lld)\n",
           before, after);
    assert_true(after - before >= 2);
    assert_true(stat_of(&g_srv, "replay") - replays >= 2);
    /* The nonce is recorded only after a signature verifies: a fresh nonce in a request whose
     * signature fails is not spent, the device can still use it. */
    char fresh[FSA_SIGNER_NONCE_BYTES];
    assert_int_equal(fsa_signer_nonce(fsa_port_posix(), fresh), FSA_OK);
    th_req_opts_t bad = {.nonce = fresh, .corrupt_signature = true, .source = "127.0.0.13"};
    assert_true(
        th_request(NULL, g_srv.url, "GET", "/v1/devices/dev002/changes", 2, NULL, 0, &bad, &r));
    assert_int_equal(r.status, 401);
    th_resp_free(&r);
    th_req_opts_t good = {.nonce = fresh, .source = "127.0.0.13"};
    assert_true(
        th_request(NULL, g_srv.url, "GET", "/v1/devices/dev002/changes", 2, NULL, 0, &good, &r));
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
}

/* 1,000 connections trickling header bytes stayed open past 78 s (libmicrohttpd has only an idle
 * timeout): now a connection whose headers are not complete within the header deadline (here
 * 1 s, default 10 s) is shut down, while signed requests from 127.0.0.1 go on being served. */
static void test_hostile__trickled_headers_meet_their_deadline(void **state)
{
    (void)state;
    th_server_t s;
    const char *extra[] = {"--header-timeout", "1", "--per-addr-connections", "64", NULL};
    assert_true(th_server_prepare(&s, 2));
    assert_true(th_backend_db(s.db, sizeof s.db));
    assert_true(th_server_start(&s, extra));
    int saved = g_port;
    g_port = (int)strtol(strrchr(s.url, ':') + 1, NULL, 10);
    enum { N = 120 };
    int fds[N];
    int64_t closed_at[N];
    int64_t t0 = now_ms();
    for (int i = 0; i < N; i++) {
        char src[32];
        snprintf(src, sizeof src, "127.0.0.%d", 20 + i / 40); /* 40 from each of 3 addresses */
        fds[i] = connect_from(src);
        assert_true(fds[i] >= 0);
        static const char start[] = "GET /v1/devices/dev000/changes HTTP/1.1\r\nX-Slow: ";
        assert_true(send_all(fds[i], start, sizeof start - 1));
        closed_at[i] = -1;
    }
    g_port = saved;
    int open_ = N, served = 0, bytes = 0;
    int64_t worst = 0;
    /* Each round: one more header byte on every open connection (the attacker's pace, 200 ms),
     * a signed pull from 127.0.0.1, and the closes the server signals (poll wakes on them). */
    while (open_ > 0 && now_ms() - t0 < 10000L * g_scale) {
        struct pollfd p[N];
        for (int i = 0; i < N; i++)
            p[i] = (struct pollfd){closed_at[i] < 0 ? fds[i] : -1, POLLIN, 0};
        (void)poll(p, N, 200);
        for (int i = 0; i < N; i++) {
            if (closed_at[i] >= 0)
                continue;
            char b[64];
            bool gone = (p[i].revents != 0 && recv(fds[i], b, sizeof b, MSG_DONTWAIT) <= 0) ||
                        send(fds[i], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1;
            if (gone) {
                closed_at[i] = now_ms() - t0;
                open_--;
            }
        }
        bytes++;
        th_resp_t r;
        int64_t q0 = now_ms();
        assert_true(th_request(NULL, s.url, "GET", "/v1/devices/dev001/changes?limit=1", 1, NULL, 0,
                               NULL, &r));
        assert_int_equal(r.status, 200);
        th_resp_free(&r);
        served++;
        if (now_ms() - q0 > worst)
            worst = now_ms() - q0;
    }
    int64_t first = -1, last = -1;
    for (int i = 0; i < N; i++) {
        if (closed_at[i] >= 0 && (first < 0 || closed_at[i] < first))
            first = closed_at[i];
        if (closed_at[i] > last)
            last = closed_at[i];
        close(fds[i]);
    }
    printf("  %d connections trickling header bytes (1 s deadline): %d left open, closed between "
           "%lld and %lld ms, after ~%d bytes; %d signed pulls meanwhile, worst %lld ms\n",
           N, open_, (long long)first, (long long)last, bytes, served, (long long)worst);
    assert_int_equal(open_, 0);
    assert_true(first >= 900);           /* the deadline, not something sooner */
    assert_true(last < 3000L * g_scale); /* the deadline and a watch tick, with slack */
    assert_true(worst < 1000L * g_scale);
    assert_true(stat_of(&s, "header_deadline") >= N);
    /* A keep-alive connection that completed its request is not cut by the deadline. */
    CURL *h = curl_easy_init();
    assert_non_null(h);
    for (int i = 0; i < 3; i++) {
        th_resp_t r;
        assert_true(
            th_request(h, s.url, "GET", "/v1/devices/dev001/changes", 1, NULL, 0, NULL, &r));
        assert_int_equal(r.status, 200);
        th_resp_free(&r);
    }
    curl_easy_cleanup(h);
    assert_int_equal(th_server_stop(&s), 0);
    th_dir_remove(s.dir);
}

/* Runs an openssl s_client handshake against port with args; true when it completed. The output
 * (one line of it is enough) goes to out. */
static bool tls_handshake(int port, const char *args, char *out, size_t cap)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "openssl s_client -connect 127.0.0.1:%d -servername localhost %s </dev/null 2>&1",
             port, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    return rc == 0 && strstr(out, "Cipher is (NONE)") == NULL && strstr(out, "New, (NONE)") == NULL;
}

/* TLS 1.0 and 1.1 and static-RSA AES128-SHA were accepted: now TLS 1.2 (forward-secret AEAD
 * suites) and 1.3 only. The client is told to offer the old versions (security level 0), so that
 * each refusal is the server's. */
static void test_hostile__tls_versions_and_suites(void **state)
{
    (void)state;
    th_server_t s;
    assert_true(th_server_prepare(&s, 1));
    assert_true(th_backend_db(s.db, sizeof s.db));
    char cert[400], key[400], cmd[1200];
    snprintf(cert, sizeof cert, "%s/cert.pem", s.dir);
    snprintf(key, sizeof key, "%s/key.pem", s.dir);
    /* An RSA certificate: with it a static-RSA suite is possible at all, so its refusal is the
     * server's choice. openssl is installed by toolchain/install-deps.sh; without it, fail. */
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' -days 1 "
             "-subj /CN=localhost >/dev/null 2>&1",
             key, cert);
    if (system(cmd) != 0)
        fail_msg("cannot make a test certificate with the openssl tool (toolchain/install-deps.sh "
                 "installs it)");
    const char *tls[] = {"--tls-cert", cert, "--tls-key", key, NULL};
    assert_true(th_server_start(&s, tls));
    int port = (int)strtol(strrchr(s.url, ':') + 1, NULL, 10);
    char out[16384];
    static const struct {
        const char *args;
        bool ok;
        const char *shows;
    } probes[] = {
        {"-tls1 -cipher DEFAULT:@SECLEVEL=0", false, NULL},
        {"-tls1_1 -cipher DEFAULT:@SECLEVEL=0", false, NULL},
        {"-tls1_2 -cipher AES128-SHA:@SECLEVEL=0", false, NULL},
        {"-tls1_2 -cipher AES256-GCM-SHA384:@SECLEVEL=0", false, NULL},    /* static RSA, AEAD */
        {"-tls1_2 -cipher ECDHE-RSA-AES128-SHA:@SECLEVEL=0", false, NULL}, /* ECDHE, CBC */
        {"-tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256", true, "ECDHE-RSA-AES128-GCM-SHA256"},
        {"-tls1_2 -cipher ECDHE-RSA-CHACHA20-POLY1305", true, "ECDHE-RSA-CHACHA20-POLY1305"},
        {"-tls1_3", true, "TLSv1.3"},
    };
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        bool ok = tls_handshake(port, probes[i].args, out, sizeof out);
        if (ok != probes[i].ok || (ok && strstr(out, probes[i].shows) == NULL))
            fail_msg("openssl s_client %s: %s, expected %s\n%.2000s", probes[i].args,
                     ok ? "accepted" : "refused", probes[i].ok ? "accepted" : "refused", out);
        printf("  TLS %-48s %s\n", probes[i].args, ok ? "accepted" : "refused");
    }
    /* The admin listener has the same TLS. */
    assert_int_equal(strncmp(s.admin_url, "https://127.0.0.1:", 18), 0);
    port = (int)strtol(strrchr(s.admin_url, ':') + 1, NULL, 10);
    assert_false(tls_handshake(port, "-tls1_1 -cipher DEFAULT:@SECLEVEL=0", out, sizeof out));
    assert_true(tls_handshake(port, "-tls1_3", out, sizeof out));
    assert_int_equal(th_server_stop(&s), 0);
    th_dir_remove(s.dir);
}

/* Secret files: a symlink, and a file owned by someone else, are refused. */
static void test_hostile__secret_files(void **state)
{
    (void)state;
    th_server_t s;
    assert_true(th_server_prepare(&s, 1));
    char link[400];
    snprintf(link, sizeof link, "%s/link.json", s.dir);
    assert_int_equal(symlink(s.devices, link), 0);
    char db[400];
    snprintf(db, sizeof db, "%s/x.db", s.dir);
    char err[1024];
    assert_int_not_equal(th_run_cli_on(db, link, NULL, err, sizeof err), 0);
    assert_non_null(strstr(err, "devices file"));
    unlink(link);
    if (geteuid() == 0) {
        assert_int_equal(chown(s.devices, 65534, 65534), 0);
        assert_int_not_equal(th_run_cli_on(db, s.devices, NULL, err, sizeof err), 0);
        assert_non_null(strstr(err, "owned by"));
    }
    /* A weak admin token ("aaaa...") is refused. */
    assert_int_equal(chown(s.devices, geteuid(), getegid()), 0);
    FILE *f = fopen(s.token, "w");
    assert_non_null(f);
    fputs("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", f);
    assert_int_equal(fclose(f), 0);
    const char *a3[] = {"--admin-token-file", s.token, NULL};
    assert_int_not_equal(th_run_cli_on(db, s.devices, a3, err, sizeof err), 0);
    assert_non_null(strstr(err, "weak"));
    th_dir_remove(s.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile__half_sent_requests_from_one_address),
        cmocka_unit_test(test_hostile__uploads_without_credentials),
        cmocka_unit_test(test_hostile__uploads_to_no_path_hold_no_budget),
        cmocka_unit_test(test_hostile__one_address_holds_its_share),
        cmocka_unit_test(test_hostile__replays_spend_no_quota),
        cmocka_unit_test(test_hostile__json_value_bomb),
        cmocka_unit_test(test_hostile__chunked_body_that_never_ends),
        cmocka_unit_test(test_hostile__request_smuggling),
        cmocka_unit_test(test_hostile__one_device_floods),
        cmocka_unit_test(test_hostile__admin_guessing),
        cmocka_unit_test(test_hostile__admin_on_its_own_listener),
        cmocka_unit_test(test_hostile__replay_refused_before_its_body),
        cmocka_unit_test(test_hostile__after_it_all),
        cmocka_unit_test(test_hostile__trickled_body_meets_its_deadline),
        cmocka_unit_test(test_hostile__admin_listener_addresses),
        cmocka_unit_test(test_hostile__trickled_headers_meet_their_deadline),
        cmocka_unit_test(test_hostile__tls_versions_and_suites),
        cmocka_unit_test(test_hostile__secret_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
