/* fieldsync tests: sync/transport over real HTTP and HTTPS on 127.0.0.1, against an in-test
 * libmicrohttpd server and a test CA made at run time with the openssl command line. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <zlib.h>
#ifdef FSA_TEST_HAVE_GNUTLS
#include <gnutls/gnutls.h>
#endif

#include "port/alloc.h"
#include "port/limits.h"
#include "port/sim/sim.h"
#include "sync/codec.h"
#include "sync/signer.h"
#include "sync/transport.h"
#include "tests/sync/server_client.h"
#include "tests/sync/server_harness.h"
#include "tests/test_util.h"

#define SERVER_BODY_MAX (4u * 1024 * 1024)
#define BIG_ANSWER_BYTES 65536
#define GZIP_ANSWER_BYTES (256 * 1024)
#define SMALL_MAX_RESPONSE 16384
#define DELAY_MS 2000
/* The "slow" routes answer after this long: a 310 KB body then goes at 0.52 MB/s at most, half the
 * rate that chooses gzip level 1 (FSA_LIMIT_GZIP_FAST_LINK_BYTES_PER_S). */
#define SLOW_MS 600
#define VALID_PIN_ZERO "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
/* A fixed Retry-After date and its time (1893456030 s: 2030-01-01 00:00:30 UTC, before 2038 so
 * that 32-bit time_t holds it). */
#define FIXED_RETRY_DATE "Tue, 01 Jan 2030 00:00:30 GMT"
#define FIXED_RETRY_MS INT64_C(1893456030000)
/* One after 2038 (2208988830 s: 2040-01-01 00:00:30 UTC), past 32-bit time_t, and its time. */
#define LATE_RETRY_DATE "Sun, 01 Jan 2040 00:00:30 GMT"
#define LATE_RETRY_MS INT64_C(2208988830000)

/* ---- the in-test server ---- */

typedef struct test_server {
    struct MHD_Daemon *d;
    unsigned short port;
    char url[64];
} test_server_t;

typedef struct fixture {
    char dir[64];
    bool tls_ready;
    char ca_file[128];
    char client_cert[128];
    char client_key[128];
    char *ca_pem;
    char *srv_key_pem;
    char *srv_cert_pem;
    char pin[64];    /* the server key's pin */
    char ca_pin[64]; /* a real pin, but of the CA's key */
    unsigned char *gzip_answer;
    size_t gzip_answer_len;
    test_server_t http;
    test_server_t https;
    test_server_t nodate; /* plain HTTP whose answers carry no Date header */
} fixture_t;

static fixture_t fx;
static atomic_bool g_stopping;
static atomic_int g_requests;
static atomic_bool g_drop_next; /* the next "drop" request is answered by closing the connection */

typedef struct conn_ctx {
    unsigned char *buf;
    size_t len;
    size_t cap;
    bool overflow;
} conn_ctx_t;

static char answer_pattern(size_t i)
{
    return (char)('a' + (i * 7 + i / 13) % 26);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const void *body, size_t len,
                             const char *hname, const char *hvalue)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    if (hname != NULL)
        MHD_add_response_header(r, hname, hvalue);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

/* Inflates a gzip body; returns its length or -1. The result is bounded by SERVER_BODY_MAX. */
static long long server_inflate(const unsigned char *in, size_t len, unsigned long *crc)
{
    unsigned char *out = fsa_malloc(SERVER_BODY_MAX);
    if (out == NULL)
        return -1;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    long long n = -1;
    if (inflateInit2(&zs, 15 + 16) == Z_OK) {
        zs.next_in = (Bytef *)(uintptr_t)in;
        zs.avail_in = (uInt)len;
        zs.next_out = out;
        zs.avail_out = SERVER_BODY_MAX;
        if (inflate(&zs, Z_FINISH) == Z_STREAM_END) {
            n = (long long)zs.total_out;
            *crc = crc32(crc32(0L, Z_NULL, 0), out, (uInt)n);
        }
        inflateEnd(&zs);
    }
    fsa_free(out);
    return n;
}

static const char *hdr(struct MHD_Connection *c, const char *name)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
    return v != NULL ? v : "-";
}

/* echo: everything the transport put on the wire, as "key=value" words. xfl is the gzip header's
 * XFL byte (RFC 1952: 4 when zlib compressed at level 1, 0 at level 6), -1 without gzip. */
static enum MHD_Result route_echo(struct MHD_Connection *c, const char *url, const char *method,
                                  const conn_ctx_t *cc)
{
    const char *enc = hdr(c, "Content-Encoding");
    unsigned long rawcrc = crc32(crc32(0L, Z_NULL, 0), cc->buf, (uInt)cc->len);
    unsigned long bodycrc = rawcrc;
    long long body = (long long)cc->len;
    int xfl = -1;
    if (strcmp(enc, "gzip") == 0) {
        body = server_inflate(cc->buf, cc->len, &bodycrc);
        xfl = cc->len > 8 ? cc->buf[8] : -1;
    }
    const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "q");
    char text[1024];
    int n = snprintf(text, sizeof text,
                     "method=%s path=%s q=%s enc=%s raw=%zu rawcrc=%08lx body=%lld bodycrc=%08lx "
                     "xfl=%d dev=%s ts=%s nonce=%s sig=%s ct=%s ae=%s expect=%s overflow=%d\n",
                     method, url, q != NULL ? q : "-", enc, cc->len, rawcrc, body, bodycrc, xfl,
                     hdr(c, "X-Device-Id"), hdr(c, "X-Timestamp"), hdr(c, "X-Nonce"),
                     hdr(c, "X-Signature"), hdr(c, "Content-Type"), hdr(c, "Accept-Encoding"),
                     hdr(c, "Expect"), cc->overflow);
    if (n < 0 || (size_t)n >= sizeof text)
        return reply(c, 500, "echo overflow", 13, NULL, NULL);
    return reply(c, 200, text, (size_t)n, NULL, NULL);
}

#ifdef FSA_TEST_HAVE_GNUTLS
/* whoami: whether the TLS client presented a certificate and whether it checks against the CA. */
static enum MHD_Result route_whoami(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (ci == NULL)
        return reply(c, 200, "peers=-1", 8, NULL, NULL);
    gnutls_session_t s = (gnutls_session_t)ci->tls_session;
    unsigned int npeers = 0;
    (void)gnutls_certificate_get_peers(s, &npeers);
    unsigned int status = 1;
    int vrc = npeers > 0 ? gnutls_certificate_verify_peers2(s, &status) : -1;
    char text[64];
    int n = snprintf(text, sizeof text, "peers=%u verified=%d", npeers, vrc == 0 && status == 0);
    return reply(c, 200, text, (size_t)n, NULL, NULL);
}
#endif

static void http_date(time_t when, char *out, size_t len)
{
    struct tm tm;
    assert_non_null(gmtime_r(&when, &tm));
    assert_true(strftime(out, len, "%a, %d %b %Y %H:%M:%S GMT", &tm) > 0);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)cls;
    (void)version;
    conn_ctx_t *cc = *con_cls;
    if (cc == NULL) {
        cc = fsa_calloc(1, sizeof *cc);
        if (cc == NULL)
            return MHD_NO;
        *con_cls = cc;
        atomic_fetch_add(&g_requests, 1);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        if (cc->len + n > SERVER_BODY_MAX) {
            cc->overflow = true;
        } else {
            if (cc->len + n > cc->cap) {
                size_t cap = cc->cap ? cc->cap : 4096;
                while (cap < cc->len + n)
                    cap *= 2;
                unsigned char *p = fsa_realloc(cc->buf, cap);
                if (p == NULL)
                    return MHD_NO;
                cc->buf = p;
                cc->cap = cap;
            }
            memcpy(cc->buf + cc->len, upload_data, n);
            cc->len += n;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }

    const char *slash = strrchr(url, '/');
    const char *route = slash != NULL ? slash + 1 : url;
    if (strcmp(route, "echo") == 0)
        return route_echo(c, url, method, cc);
    if (strcmp(route, "drop") == 0) {
        /* MHD_NO closes the connection without an answer, as a server does that timed out a
         * kept-alive connection just as the request arrived. */
        if (atomic_exchange(&g_drop_next, false))
            return MHD_NO;
        return route_echo(c, url, method, cc);
    }
    if (strcmp(route, "delay") == 0) {
        /* Sleeps past the client's timeout, but gives up at once when the server stops. */
        for (int i = 0; i < DELAY_MS / 20 && !atomic_load(&g_stopping); i++)
            fsa_port_posix()->sleep(NULL, 20 * FSA_NS_PER_MS);
        return reply(c, 200, "late", 4, NULL, NULL);
    }
    if (strcmp(route, "slow") == 0 || strcmp(route, "slow_503") == 0) {
        /* A slow link or a busy server, as the transport sees it: the answer comes SLOW_MS after
         * the whole body did. */
        fsa_port_posix()->sleep(NULL, SLOW_MS * FSA_NS_PER_MS);
        if (strcmp(route, "slow_503") == 0)
            return reply(c, 503, "{}", 2, NULL, NULL);
        return route_echo(c, url, method, cc);
    }
    if (strcmp(route, "big") == 0) {
        char *big = fsa_malloc(BIG_ANSWER_BYTES);
        if (big == NULL)
            return MHD_NO;
        memset(big, 'x', BIG_ANSWER_BYTES);
        enum MHD_Result ret = reply(c, 200, big, BIG_ANSWER_BYTES, NULL, NULL);
        fsa_free(big);
        return ret;
    }
    if (strcmp(route, "needs_query") == 0) {
        /* As the real server answers a request whose query is not the one signed. */
        const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "q");
        if (q == NULL || strcmp(q, "v1") != 0)
            return reply(c, 401, "{}", 2, NULL, NULL);
        return reply(c, 200, "{}", 2, NULL, NULL);
    }
    if (strcmp(route, "gzip") == 0)
        return reply(c, 200, fx.gzip_answer, fx.gzip_answer_len, "Content-Encoding", "gzip");
    if (strcmp(route, "empty") == 0)
        return reply(c, 204, "", 0, NULL, NULL);
    if (strcmp(route, "retry") == 0)
        return reply(c, 429, "{}", 2, "Retry-After", "7");
    if (strcmp(route, "retry_date") == 0) {
        char date[64];
        http_date(time(NULL) + 30, date, sizeof date);
        return reply(c, 503, "{}", 2, "Retry-After", date);
    }
    if (strcmp(route, "retry_fixed_date") == 0)
        return reply(c, 503, "{}", 2, "Retry-After", FIXED_RETRY_DATE);
    if (strcmp(route, "retry_late_date") == 0)
        return reply(c, 503, "{}", 2, "Retry-After", LATE_RETRY_DATE);
    if (strcmp(route, "retry_past") == 0)
        return reply(c, 503, "{}", 2, "Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT");
    if (strcmp(route, "retry_bad") == 0)
        return reply(c, 503, "{}", 2, "Retry-After", "soon");
    if (strcmp(route, "retry_negative") == 0)
        return reply(c, 503, "{}", 2, "Retry-After", "-5");
    if (strcmp(route, "retry_huge") == 0)
        return reply(c, 503, "{}", 2, "Retry-After", "99999999999999999999999");
#ifdef FSA_TEST_HAVE_GNUTLS
    if (strcmp(route, "whoami") == 0)
        return route_whoami(c);
#endif
    return reply(c, 404, "no such route", 13, NULL, NULL);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    conn_ctx_t *cc = *con_cls;
    if (cc != NULL) {
        fsa_free(cc->buf);
        fsa_free(cc);
        *con_cls = NULL;
    }
}

static bool server_start(test_server_t *s, bool tls, unsigned extra_flags)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | extra_flags;
    if (tls) {
        s->d = MHD_start_daemon(flags | MHD_USE_TLS, 0, NULL, NULL, on_request, NULL,
                                MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                MHD_OPTION_HTTPS_MEM_KEY, fx.srv_key_pem, MHD_OPTION_HTTPS_MEM_CERT,
                                fx.srv_cert_pem, MHD_OPTION_HTTPS_MEM_TRUST, fx.ca_pem,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    } else {
        s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR,
                                (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
                                NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    }
    if (s->d == NULL)
        return false;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    if (info == NULL || info->port == 0)
        return false;
    s->port = info->port;
    snprintf(s->url, sizeof s->url, "%s://127.0.0.1:%u", tls ? "https" : "http", s->port);
    return true;
}

static void server_stop(test_server_t *s)
{
    if (s->d != NULL)
        MHD_stop_daemon(s->d);
    s->d = NULL;
}

/* ---- the test CA ---- */

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = fsa_malloc(65536);
    size_t n = buf != NULL ? fread(buf, 1, 65535, f) : 0;
    (void)fclose(f);
    if (buf != NULL)
        buf[n] = '\0';
    return buf;
}

static bool run(const char *cmd)
{
    char full[2048];
    snprintf(full, sizeof full, "cd '%s' && %s >/dev/null 2>&1", fx.dir, cmd);
    return system(full) == 0;
}

static bool pin_of(const char *what, char *out, size_t len)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && %s 2>/dev/null | openssl pkey -pubin -outform der 2>/dev/null | "
             "openssl dgst -sha256 -binary | openssl base64",
             fx.dir, what);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return false;
    char line[128] = "";
    bool ok = fgets(line, sizeof line, p) != NULL;
    ok = pclose(p) == 0 && ok;
    line[strcspn(line, "\r\n")] = '\0';
    if (!ok || strlen(line) != 44)
        return false;
    return snprintf(out, len, "sha256//%s", line) < (int)len;
}

static const char ca_cnf[] = "[req]\n"
                             "distinguished_name = dn\n"
                             "prompt = no\n"
                             "x509_extensions = v3_ca\n"
                             "[dn]\n"
                             "CN = fieldsync test CA\n"
                             "[v3_ca]\n"
                             "basicConstraints = critical, CA:TRUE\n"
                             "keyUsage = critical, keyCertSign, cRLSign\n"
                             "subjectKeyIdentifier = hash\n"
                             "[srv]\n"
                             "basicConstraints = critical, CA:FALSE\n"
                             "keyUsage = critical, digitalSignature, keyEncipherment\n"
                             "extendedKeyUsage = serverAuth\n"
                             "subjectAltName = IP:127.0.0.1\n"
                             "[cli]\n"
                             "basicConstraints = critical, CA:FALSE\n"
                             "keyUsage = critical, digitalSignature\n"
                             "extendedKeyUsage = clientAuth\n";

#define EC_KEY "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"

static bool make_ca(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/ca.cnf", fx.dir);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return false;
    bool ok = fputs(ca_cnf, f) >= 0;
    ok = fclose(f) == 0 && ok;
    ok = ok && run("openssl req -x509 -config ca.cnf " EC_KEY " -keyout ca.key -out ca.pem "
                   "-days 2");
    ok = ok && run("openssl req -new " EC_KEY " -keyout srv.key -out srv.csr -subj /CN=127.0.0.1");
    ok = ok && run("openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 2 "
                   "-days 2 -extfile ca.cnf -extensions srv -out srv.pem");
    ok = ok && run("openssl req -new " EC_KEY " -keyout cli.key -out cli.csr -subj /CN=dev001");
    ok = ok && run("openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -set_serial 3 "
                   "-days 2 -extfile ca.cnf -extensions cli -out cli.pem");
    ok = ok && pin_of("openssl x509 -in srv.pem -pubkey -noout", fx.pin, sizeof fx.pin);
    ok = ok && pin_of("openssl x509 -in ca.pem -pubkey -noout", fx.ca_pin, sizeof fx.ca_pin);
    if (!ok)
        return false;
    snprintf(fx.ca_file, sizeof fx.ca_file, "%s/ca.pem", fx.dir);
    snprintf(fx.client_cert, sizeof fx.client_cert, "%s/cli.pem", fx.dir);
    snprintf(fx.client_key, sizeof fx.client_key, "%s/cli.key", fx.dir);
    snprintf(path, sizeof path, "%s/srv.key", fx.dir);
    fx.srv_key_pem = read_text(path);
    snprintf(path, sizeof path, "%s/srv.pem", fx.dir);
    fx.srv_cert_pem = read_text(path);
    fx.ca_pem = read_text(fx.ca_file);
    return fx.srv_key_pem != NULL && fx.srv_cert_pem != NULL && fx.ca_pem != NULL;
}

static bool make_gzip_answer(void)
{
    char *plain = fsa_malloc(GZIP_ANSWER_BYTES);
    unsigned char *gz = fsa_malloc(GZIP_ANSWER_BYTES);
    bool ok = false;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (plain == NULL || gz == NULL ||
        deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        goto out;
    for (size_t i = 0; i < GZIP_ANSWER_BYTES; i++)
        plain[i] = answer_pattern(i);
    zs.next_in = (Bytef *)plain;
    zs.avail_in = GZIP_ANSWER_BYTES;
    zs.next_out = gz;
    zs.avail_out = GZIP_ANSWER_BYTES;
    ok = deflate(&zs, Z_FINISH) == Z_STREAM_END;
    fx.gzip_answer_len = zs.total_out;
    deflateEnd(&zs);
out:
    fsa_free(plain);
    if (ok)
        fx.gzip_answer = gz;
    else
        fsa_free(gz);
    return ok;
}

static int group_setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof fx);
    snprintf(fx.dir, sizeof fx.dir, "/tmp/fsa-transport-XXXXXX");
    if (mkdtemp(fx.dir) == NULL || !make_gzip_answer())
        return -1;
    if (!server_start(&fx.http, false, 0) ||
        !server_start(&fx.nodate, false, MHD_USE_SUPPRESS_DATE_NO_CLOCK))
        return -1;
    /* The TLS tests need the openssl tool (toolchain/install-deps.sh installs it) and TLS in
     * libmicrohttpd: without them this program fails rather than skip checks. */
    fx.tls_ready = make_ca() && server_start(&fx.https, true, 0);
    if (!fx.tls_ready) {
        fprintf(stderr, "test_transport: cannot set up HTTPS (openssl tool, or TLS in "
                        "libmicrohttpd, missing)\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    atomic_store(&g_stopping, true);
    server_stop(&fx.http);
    server_stop(&fx.https);
    server_stop(&fx.nodate);
    fsa_free(fx.ca_pem);
    fsa_free(fx.srv_key_pem);
    fsa_free(fx.srv_cert_pem);
    fsa_free(fx.gzip_answer);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx.dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- helpers ---- */

static fsa_transport_opts_t http_opts(void)
{
    fsa_transport_opts_t o;
    memset(&o, 0, sizeof o);
    o.base_url = fx.http.url;
    o.connect_timeout_ms = 2000;
    o.total_timeout_ms = 5000;
    return o;
}

static fsa_transport_opts_t https_opts(void)
{
    fsa_transport_opts_t o = http_opts();
    o.base_url = fx.https.url;
    o.ca_file = fx.ca_file;
    return o;
}

static fsa_transport_t *make(const fsa_transport_opts_t *o)
{
    fsa_transport_t *t = NULL;
    char err[256];
    fsa_status_t st = fsa_transport_new(fsa_port_posix(), o, &t, err, sizeof err);
    if (st != FSA_OK)
        fail_msg("fsa_transport_new(%s): %s: %s", o->base_url, fsa_status_str(st), err);
    return t;
}

/* The value of "key=" in an echo answer, copied into out ("" when missing). */
static const char *field(const char *body, const char *key, char *out, size_t len)
{
    char pat[32];
    snprintf(pat, sizeof pat, "%s=", key);
    out[0] = '\0';
    for (const char *p = body; p != NULL && (p = strstr(p, pat)) != NULL; p++) {
        if (p != body && p[-1] != ' ')
            continue;
        p += strlen(pat);
        size_t n = strcspn(p, " \n");
        if (n >= len)
            n = len - 1;
        memcpy(out, p, n);
        out[n] = '\0';
        break;
    }
    return out;
}

static long field_long(const char *body, const char *key)
{
    char v[64];
    return strtol(field(body, key, v, sizeof v), NULL, 10);
}

static unsigned long field_hex(const char *body, const char *key)
{
    char v[64];
    return strtoul(field(body, key, v, sizeof v), NULL, 16);
}

static void assert_field(const char *body, const char *key, const char *want)
{
    char v[256];
    field(body, key, v, sizeof v);
    if (strcmp(v, want) != 0)
        fail_msg("%s=%s, want %s (answer: %s)", key, v, want, body);
}

static unsigned long crc_of(const void *p, size_t n)
{
    return crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

/* Requests and expects an HTTP answer. */
static void req_ok(fsa_transport_t *t, const char *method, const char *path, const void *body,
                   size_t len, fsa_http_response_t *r)
{
    fsa_status_t st = fsa_transport_request(t, method, path, body, len, NULL, NULL, r);
    if (st != FSA_OK)
        fail_msg("%s %s: %s: %s", method, path, fsa_status_str(st), r->error);
    assert_non_null(r->body);
    assert_string_equal(r->error, "");
}

static void expect_fail(fsa_transport_t *t, const char *path, fsa_status_t want,
                        const char *error_has)
{
    fsa_http_response_t r;
    fsa_status_t st = fsa_transport_request(t, "GET", path, NULL, 0, NULL, NULL, &r);
    if (st != want)
        fail_msg("GET %s: %s (%s), want %s", path, fsa_status_str(st), r.error,
                 fsa_status_str(want));
    assert_null(r.body);
    assert_false(r.reused_connection);
    if (strchr(r.error, '\n') != NULL || r.error[0] == '\0')
        fail_msg("error is not one line: \"%s\"", r.error);
    if (error_has != NULL && strstr(r.error, error_has) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", r.error, error_has);
    fsa_http_response_clear(&r);
}

static char *json_body(size_t n)
{
    char *b = fsa_malloc(n);
    assert_non_null(b);
    static const char unit[] = "{\"op\":\"merge\",\"field\":\"other_info\"},";
    for (size_t i = 0; i < n; i++)
        b[i] = unit[i % (sizeof unit - 1)];
    return b;
}

/* A sign callback that records what it was given and fills fixed headers. */
typedef struct sign_rec {
    int calls;
    fsa_status_t result;
    bool malformed;
    char method[8];
    char path[256];
    size_t wire_len;
    unsigned long wire_crc;
} sign_rec_t;

static fsa_status_t record_sign(void *arg, const char *method, const char *path_and_query,
                                const void *wire_body, size_t wire_len, fsa_auth_headers_t *out)
{
    sign_rec_t *rec = arg;
    rec->calls++;
    snprintf(rec->method, sizeof rec->method, "%s", method);
    snprintf(rec->path, sizeof rec->path, "%s", path_and_query);
    rec->wire_len = wire_len;
    rec->wire_crc = crc_of(wire_body, wire_len);
    if (rec->result != FSA_OK)
        return rec->result;
    snprintf(out->device_id, sizeof out->device_id, "%s",
             rec->malformed ? "dev001\r\nX-Evil: 1" : "dev001");
    snprintf(out->timestamp, sizeof out->timestamp, "1764090000000");
    snprintf(out->nonce, sizeof out->nonce, "0123456789abcdef0123456789abcdef");
    snprintf(out->signature, sizeof out->signature, "%064x", 0xabcdefu);
    return FSA_OK;
}

static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd); /* bound but never listening: a connect is refused */
    return ntohs(sa.sin_port);
}

/* ---- pure checks ---- */

static void test_fsa_transport_host_is_loopback__table(void **state)
{
    (void)state;
    static const struct {
        const char *host;
        bool loopback;
    } cases[] = {
        {"localhost", true},
        {"LocalHost", true},
        {"127.0.0.1", true},
        {"127.255.255.254", true},
        {"127.8.9.10", true},
        {"::1", true},
        {"[::1]", true},
        {"0:0:0:0:0:0:0:1", true},
        {"::ffff:127.0.0.1", true},
        {"[::ffff:127.0.0.2]", true},
        {"", false},
        {"128.0.0.1", false},
        {"10.0.0.1", false},
        {"0.0.0.0", false},
        {"::", false},
        {"::2", false},
        {"[::1", false},
        {"::1]", false},
        {"0177.0.0.1", false},
        {"127.1", false},
        {"127.0.0.1.", false},
        {"127.0.0.256", false},
        {" 127.0.0.1", false},
        {"localhost.example", false},
        {"server.invalid", false},
        {"[]", false},
        {"::ffff:10.0.0.1", false},
        {"127.0.0.1.nip.io", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (fsa_transport_host_is_loopback(cases[i].host) != cases[i].loopback)
            fail_msg("host \"%s\": want %s", cases[i].host, cases[i].loopback ? "true" : "false");
    assert_false(fsa_transport_host_is_loopback(NULL));
}

static void test_fsa_transport_new__invalid_args(void **state)
{
    (void)state;
    fsa_transport_t *t = (fsa_transport_t *)&fx; /* proves *out is reset */
    char err[256];
    fsa_transport_opts_t o = http_opts();
    assert_int_equal(fsa_transport_new(fsa_port_posix(), NULL, &t, err, sizeof err), FSA_EINVAL);
    assert_null(t);
    assert_true(err[0] != '\0');
    assert_int_equal(fsa_transport_new(fsa_port_posix(), &o, NULL, err, sizeof err), FSA_EINVAL);
    /* err may be absent. */
    assert_int_equal(fsa_transport_new(fsa_port_posix(), NULL, &t, NULL, 0), FSA_EINVAL);
    /* The port is the transport's clock: none is refused, naming it. */
    t = (fsa_transport_t *)&fx;
    assert_int_equal(fsa_transport_new(NULL, &o, &t, err, sizeof err), FSA_EINVAL);
    assert_null(t);
    assert_non_null(strstr(err, "port"));

    static const char *const bad_urls[] = {
        "",
        "127.0.0.1:8080",
        "ftp://127.0.0.1/",
        "file:///etc/passwd",
        "https://",
        "http://[::1",
        "https://user:pw@example.com/",
        "https://example.com/?a=b",
        "https://example.com/#frag",
        "https://exa mple.com/",
        "http://10.0.0.1/",
        "http://127.0.0.1.nip.io/",
        "not a url",
    };
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        o.base_url = bad_urls[i];
        t = (fsa_transport_t *)&fx;
        err[0] = '\0';
        fsa_status_t st = fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err);
        if (st != FSA_EINVAL || t != NULL || err[0] == '\0')
            fail_msg("base_url \"%s\": %s, err \"%s\"", bad_urls[i], fsa_status_str(st), err);
    }
    o.base_url = "ftp://127.0.0.1/";
    assert_int_equal(fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err), FSA_EINVAL);
    assert_non_null(strstr(err, "ftp"));
    /* A malformed URL that may hold a password is refused without echoing it. */
    static const char *const secret_urls[] = {"https://dev:SECRET@127.0.0.1:99999999/",
                                              "dev:SECRET@127.0.0.1"};
    for (size_t i = 0; i < sizeof secret_urls / sizeof secret_urls[0]; i++) {
        o.base_url = secret_urls[i];
        err[0] = '\0';
        assert_int_equal(fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err), FSA_EINVAL);
        if (err[0] == '\0' || strstr(err, "SECRET") != NULL)
            fail_msg("base_url \"%s\": err \"%s\"", secret_urls[i], err);
    }

    o = http_opts();
    o.base_url = NULL;
    assert_int_equal(fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err), FSA_EINVAL);
    o = http_opts();
    o.client_cert = "cert.pem";
    assert_int_equal(fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err), FSA_EINVAL);
    assert_non_null(strstr(err, "client_key"));
    o = http_opts();
    o.client_key = "key.pem";
    assert_int_equal(fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err), FSA_EINVAL);
    o = http_opts();
    o.connect_timeout_ms = -1;
    assert_int_equal(fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err), FSA_EINVAL);
    o = http_opts();
    o.total_timeout_ms = -5;
    assert_int_equal(fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err), FSA_EINVAL);
    assert_null(t);

    /* Well-formed ones: loopback http in each spelling, and https anywhere (no traffic yet). */
    static const char *const good_urls[] = {
        "http://127.0.0.1:1",
        "http://127.9.8.7:1/api/",
        "http://[::1]:1/",
        "http://localhost:1",
        "HTTP://LOCALHOST:1/x",
        "https://example.com",
        "https://example.com:8443/prefix/",
    };
    for (size_t i = 0; i < sizeof good_urls / sizeof good_urls[0]; i++) {
        o.base_url = good_urls[i];
        o.total_timeout_ms = 0;
        fsa_status_t st = fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err);
        if (st != FSA_OK)
            fail_msg("base_url \"%s\": %s: %s", good_urls[i], fsa_status_str(st), err);
        assert_string_equal(err, "");
        fsa_transport_free(t);
    }
    fsa_transport_free(NULL);
    fsa_http_response_clear(NULL);
}

static void test_fsa_transport_new__refuses_plain_http_to_remote(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    o.base_url = "http://server.invalid:8080";
    fsa_transport_t *t = NULL;
    char err[256];
    assert_int_equal(fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err), FSA_EINVAL);
    assert_null(t);
    assert_non_null(strstr(err, "refusing plain http:// to server.invalid"));
}

/* Loopback http:// is allowed only while its bytes stay on the device: a proxy would get the
 * signed requests in clear, and takes them only when insecure http is allowed explicitly. */
static void test_fsa_transport_new__refuses_plain_http_through_a_proxy(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    o.proxy = "http://proxy.invalid:3128";
    fsa_transport_t *t = NULL;
    char err[256];
    assert_int_equal(fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err), FSA_EINVAL);
    assert_null(t);
    assert_non_null(strstr(err, "refusing plain http:// to 127.0.0.1 through proxy "
                                "http://proxy.invalid:3128"));
    assert_null(strchr(err, '\n'));
    o.allow_insecure_http = true;
    t = make(&o);
    fsa_transport_free(t);
    /* https through a proxy is a tunnel the proxy cannot read. */
    o = https_opts();
    o.proxy = "http://proxy.invalid:3128";
    t = make(&o);
    fsa_transport_free(t);
}

/* The proxy goes into the journal with the rest of the configuration: user info in it is refused
 * (as in base_url) and not shown; a proxy without a scheme is http, as curl reads it. */
static void test_fsa_transport_new__proxy_credentials_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "http://user:s3cr3tpw@proxy.invalid:3128",
        "http://user@proxy.invalid:3128",
        "user:s3cr3tpw@proxy.invalid:3128",
        "socks5h://user:s3cr3tpw@proxy.invalid:1080",
    };
    fsa_transport_opts_t o = https_opts();
    fsa_transport_t *t = NULL;
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.proxy = bad[i];
        fsa_status_t st = fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err);
        if (st != FSA_EINVAL || t != NULL ||
            strstr(err, "proxy must not hold credentials") == NULL ||
            strstr(err, "s3cr3tpw") != NULL || strchr(err, '\n') != NULL)
            fail_msg("proxy \"%s\": %s, err \"%s\"", bad[i], fsa_status_str(st), err);
    }
    o.proxy = "http://proxy.invalid:99999999";
    assert_int_equal(fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err), FSA_EINVAL);
    assert_non_null(strstr(err, "malformed proxy"));
    static const char *const good[] = {"http://proxy.invalid:3128", "proxy.invalid:3128",
                                       "socks5h://proxy.invalid:1080", "http://[::1]:3128"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        o.proxy = good[i];
        t = make(&o);
        fsa_transport_free(t);
    }
}

static void test_fsa_transport_new__malformed_pins(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "sha256//",
        "sha256//short=",
        "SHA256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "sha1//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* no padding */
        "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", /* 31 bytes */
        "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=", /* not canonical */
        "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA*=",
        VALID_PIN_ZERO ";",
        ";" VALID_PIN_ZERO,
        VALID_PIN_ZERO " ",
        VALID_PIN_ZERO "; " VALID_PIN_ZERO,
        "/etc/ssl/server-pubkey.pem",
    };
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = NULL;
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.pins = bad[i];
        fsa_status_t st = fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err);
        if (st != FSA_EINVAL || t != NULL || strstr(err, "pin") == NULL)
            fail_msg("pins \"%s\": %s, err \"%s\"", bad[i], fsa_status_str(st), err);
    }
    static const char *const good[] = {
        VALID_PIN_ZERO,
        VALID_PIN_ZERO ";sha256//+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/8=",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        o.pins = good[i];
        assert_fsa_ok(fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err));
        fsa_transport_free(t);
    }
}

/* ---- plain HTTP on loopback ---- */

static void test_fsa_transport_request__invalid_args(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = make(&o);
    fsa_http_response_t r;
    memset(&r, 0x5a, sizeof r); /* garbage in: the transport must not free or trust it */
    assert_int_equal(fsa_transport_request(NULL, "GET", "/echo", NULL, 0, NULL, NULL, &r),
                     FSA_EINVAL);
    assert_null(r.body);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.retry_after_ms, -1);
    assert_true(r.error[0] != '\0');
    assert_int_equal(fsa_transport_request(t, "GET", "/echo", NULL, 0, NULL, NULL, NULL),
                     FSA_EINVAL);
    static const struct {
        const char *method;
        const char *path;
        const char *body;
        size_t len;
    } cases[] = {
        {NULL, "/echo", NULL, 0},   {"PUT", "/echo", NULL, 0},      {"get", "/echo", NULL, 0},
        {"GET", NULL, NULL, 0},     {"GET", "echo", NULL, 0},       {"GET", "", NULL, 0},
        {"GET", "/a b", NULL, 0},   {"GET", "/a\r\nX: y", NULL, 0}, {"GET", "/a#frag", NULL, 0},
        {"POST", "/echo", NULL, 5}, {"GET", "/echo", "{}", 2},
    };
    int before = atomic_load(&g_requests);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fsa_status_t st = fsa_transport_request(t, cases[i].method, cases[i].path, cases[i].body,
                                                cases[i].len, NULL, NULL, &r);
        if (st != FSA_EINVAL || r.error[0] == '\0' || r.body != NULL)
            fail_msg("case %zu: %s \"%s\"", i, fsa_status_str(st), r.error);
    }
    assert_int_equal(atomic_load(&g_requests), before);
    fsa_transport_free(t);
}

static void test_fsa_transport_request__http_loopback_echo(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = make(&o);
    fsa_http_response_t r;
    req_ok(t, "GET", "/echo", NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, strlen(r.body));
    assert_int_equal(r.retry_after_ms, -1);
    assert_field(r.body, "method", "GET");
    assert_field(r.body, "path", "/echo");
    assert_field(r.body, "raw", "0");
    assert_field(r.body, "ae", "gzip");
    assert_field(r.body, "dev", "-"); /* no sign callback, no auth headers */
    assert_true(r.wire_bytes_sent > 20 && r.wire_bytes_sent < 512);
    assert_true(r.wire_bytes_received > r.body_len);
    fsa_http_response_clear(&r);
    assert_null(r.body);
    assert_int_equal(r.retry_after_ms, -1);

    /* A POST with a small body: sent as is, JSON, no "Expect: 100-continue". */
    static const char small[] = "{\"batch_id\":\"b1\",\"ops\":[]}";
    req_ok(t, "POST", "/echo", small, sizeof small - 1, &r);
    assert_field(r.body, "method", "POST");
    assert_field(r.body, "enc", "-");
    assert_field(r.body, "ct", "application/json");
    assert_field(r.body, "expect", "-");
    assert_int_equal(field_long(r.body, "raw"), (long)(sizeof small - 1));
    assert_int_equal(field_hex(r.body, "bodycrc"), crc_of(small, sizeof small - 1));
    assert_true(r.wire_bytes_sent > sizeof small - 1 && r.wire_bytes_sent < 512 + sizeof small);
    fsa_http_response_clear(&r);

    /* An empty POST, and an answer without a body: body is "" rather than NULL. */
    req_ok(t, "POST", "/echo", NULL, 0, &r);
    assert_field(r.body, "raw", "0");
    fsa_http_response_clear(&r);
    req_ok(t, "GET", "/empty", NULL, 0, &r);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body_len, 0);
    assert_string_equal(r.body, "");
    fsa_http_response_clear(&r);

    /* Any status is an answer. */
    req_ok(t, "GET", "/nowhere", NULL, 0, &r);
    assert_int_equal(r.status, 404);
    fsa_http_response_clear(&r);
    fsa_transport_free(t);
}

static void test_fsa_transport_request__base_prefix_and_query_are_signed(void **state)
{
    (void)state;
    char base[96];
    snprintf(base, sizeof base, "%s/api/", fx.http.url);
    fsa_transport_opts_t o = http_opts();
    o.base_url = base;
    fsa_transport_t *t = make(&o);
    sign_rec_t rec = {0};
    fsa_http_response_t r;
    assert_fsa_ok(fsa_transport_request(t, "GET", "/echo?q=v1.0", NULL, 0, record_sign, &rec, &r));
    assert_int_equal(rec.calls, 1);
    assert_string_equal(rec.method, "GET");
    /* The signer sees the path as the server does, prefix and query included. */
    assert_string_equal(rec.path, "/api/echo?q=v1.0");
    assert_field(r.body, "path", "/api/echo");
    assert_field(r.body, "q", "v1.0");
    assert_field(r.body, "dev", "dev001");
    assert_field(r.body, "ts", "1764090000000");
    assert_field(r.body, "nonce", "0123456789abcdef0123456789abcdef");
    assert_field(r.body, "sig", "0000000000000000000000000000000000000000000000000000000000abcdef");
    fsa_http_response_clear(&r);
    /* Dot segments stay as signed rather than being squashed by curl. */
    assert_fsa_ok(fsa_transport_request(t, "GET", "/x/../echo", NULL, 0, record_sign, &rec, &r));
    assert_string_equal(rec.path, "/api/x/../echo");
    fsa_http_response_clear(&r);
    fsa_transport_free(t);
}

static void test_fsa_transport_request__insecure_http_unresolvable(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    o.base_url = "http://server.invalid:8080";
    o.allow_insecure_http = true;
    fsa_transport_t *t = make(&o);
    /* .invalid never resolves (RFC 6761), so this fails at name resolution. */
    expect_fail(t, "/echo", FSA_ENET, "server.invalid");
    fsa_transport_free(t);
}

static void test_fsa_transport_request__connection_refused(void **state)
{
    (void)state;
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", closed_port());
    fsa_transport_opts_t o = http_opts();
    o.base_url = base;
    fsa_transport_t *t = make(&o);
    expect_fail(t, "/echo", FSA_ENET, base);
    fsa_http_response_t r;
    assert_int_equal(fsa_transport_request(t, "POST", "/echo", "{}", 2, NULL, NULL, &r), FSA_ENET);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.wire_bytes_received, 0);
    assert_int_equal(r.retry_after_ms, -1);
    fsa_transport_free(t);
}

static void test_fsa_transport_request__proxy_explicit_not_environment(void **state)
{
    (void)state;
    char proxy[64];
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%d", closed_port());
    /* An environment proxy that would fail every request is ignored. */
    assert_int_equal(setenv("http_proxy", proxy, 1), 0);
    assert_int_equal(setenv("ALL_PROXY", proxy, 1), 0);
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = make(&o);
    fsa_http_response_t r;
    fsa_status_t st = fsa_transport_request(t, "GET", "/echo", NULL, 0, NULL, NULL, &r);
    /* Unset before asserting, so a failure here does not spill into the tests after it. */
    assert_int_equal(unsetenv("http_proxy"), 0);
    assert_int_equal(unsetenv("ALL_PROXY"), 0);
    if (st != FSA_OK)
        fail_msg("the environment's proxy was used: %s", r.error);
    fsa_http_response_clear(&r);
    fsa_transport_free(t);
    /* The configured one is used: it is down, so the request fails. (Plain http:// through a
     * proxy needs allow_insecure_http, even to loopback.) */
    o.proxy = proxy;
    o.allow_insecure_http = true;
    t = make(&o);
    expect_fail(t, "/echo", FSA_ENET, NULL);
    fsa_transport_free(t);
}

/* A request in two halves: begun, the caller works, ended; one in flight at a time; a transport
 * freed with one in flight abandons it. */
static void test_fsa_transport_begin_end__halves_of_a_request(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = make(&o);
    fsa_http_response_t r, r2;
    assert_int_equal(fsa_transport_end(t, &r), FSA_EINVAL); /* nothing in flight */
    char *big = json_body(5000);
    for (int i = 0; i < 3; i++) {
        assert_fsa_ok(fsa_transport_begin(t, "POST", "/echo", big, 5000, NULL, NULL, &r));
        /* A second one while the first is in flight is refused, and leaves the first alone. */
        assert_int_equal(fsa_transport_begin(t, "GET", "/echo", NULL, 0, NULL, NULL, &r2),
                         FSA_EINVAL);
        assert_non_null(strstr(r2.error, "in flight"));
        assert_fsa_ok(fsa_transport_end(t, &r));
        assert_int_equal(r.status, 200);
        assert_field(r.body, "method", "POST");
        assert_field(r.body, "enc", "gzip");
        assert_int_equal(field_long(r.body, "body"), 5000);
        assert_int_equal(field_hex(r.body, "bodycrc"), crc_of(big, 5000));
        assert_int_equal(r.reused_connection, i > 0);
        fsa_http_response_clear(&r);
        assert_int_equal(fsa_transport_end(t, &r), FSA_EINVAL); /* ended already */
    }
    /* Invalid arguments fail at begin, with nothing in flight. */
    assert_int_equal(fsa_transport_begin(t, "PUT", "/echo", NULL, 0, NULL, NULL, &r), FSA_EINVAL);
    assert_int_equal(fsa_transport_end(t, &r), FSA_EINVAL);
    assert_fsa_ok(fsa_transport_begin(t, "GET", "/echo", NULL, 0, NULL, NULL, &r));
    fsa_transport_free(t); /* abandons it (LeakSanitizer checks nothing is left) */
    fsa_free(big);
}

static void test_fsa_transport_request__reuses_connection(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = make(&o);
    fsa_http_response_t r;
    req_ok(t, "GET", "/echo", NULL, 0, &r);
    assert_false(r.reused_connection);
    fsa_http_response_clear(&r);
    char *big = json_body(5000);
    req_ok(t, "POST", "/echo", big, 5000, &r);
    assert_true(r.reused_connection);
    fsa_http_response_clear(&r);
    req_ok(t, "GET", "/echo", NULL, 0, &r);
    assert_true(r.reused_connection);
    fsa_http_response_clear(&r);
    fsa_free(big);
    fsa_transport_free(t);
    /* A new transport opens its own connection. */
    t = make(&o);
    req_ok(t, "GET", "/echo", NULL, 0, &r);
    assert_false(r.reused_connection);
    fsa_http_response_clear(&r);
    fsa_transport_free(t);
}

static void test_fsa_transport_request__resends_when_reused_connection_drops(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = make(&o);
    fsa_http_response_t r;
    req_ok(t, "GET", "/echo", NULL, 0, &r);
    fsa_http_response_clear(&r);
    /* The server drops the kept-alive connection without answering: curl sends the request
     * again on a new connection, which needs the body rewound (on_seek). */
    atomic_store(&g_drop_next, true);
    char *body = json_body(3000);
    sign_rec_t rec = {0};
    assert_fsa_ok(fsa_transport_request(t, "POST", "/drop", body, 3000, record_sign, &rec, &r));
    assert_false(atomic_load(&g_drop_next));
    assert_int_equal(r.status, 200);
    assert_false(r.reused_connection);
    assert_int_equal(field_long(r.body, "body"), 3000);
    assert_int_equal(field_hex(r.body, "bodycrc"), crc_of(body, 3000));
    assert_int_equal(rec.calls, 1); /* signed once, sent twice */
    /* Both sends were on the wire. */
    long raw = field_long(r.body, "raw");
    assert_true(r.wire_bytes_sent > 2 * (size_t)raw);
    fsa_http_response_clear(&r);
    fsa_free(body);
    fsa_transport_free(t);
}

/* POSTs n bytes and checks whether they went compressed and arrived intact. */
static void check_gzip(fsa_transport_t *t, size_t n, bool want_gzip)
{
    char *body = json_body(n);
    sign_rec_t rec = {0};
    fsa_http_response_t r;
    assert_fsa_ok(fsa_transport_request(t, "POST", "/echo", body, n, record_sign, &rec, &r));
    assert_int_equal(r.status, 200);
    assert_field(r.body, "enc", want_gzip ? "gzip" : "-");
    assert_int_equal(field_long(r.body, "body"), (long)n);
    assert_int_equal(field_hex(r.body, "bodycrc"), crc_of(body, n));
    long raw = field_long(r.body, "raw");
    if (want_gzip)
        assert_true(raw < (long)n);
    else
        assert_int_equal(raw, (long)n);
    /* The signer saw exactly the bytes that arrived. */
    assert_int_equal(rec.calls, 1);
    assert_int_equal(rec.wire_len, (size_t)raw);
    assert_int_equal(rec.wire_crc, field_hex(r.body, "rawcrc"));
    /* Headers plus the body as sent. */
    assert_true(r.wire_bytes_sent > (size_t)raw && r.wire_bytes_sent < (size_t)raw + 1024);
    fsa_http_response_clear(&r);
    fsa_free(body);
}

static void test_fsa_transport_request__gzip_threshold(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = make(&o);
    check_gzip(t, 1023, false); /* default threshold 1024 */
    check_gzip(t, 1024, true);
    check_gzip(t, 200000, true);
    fsa_transport_free(t);

    o.gzip_min_bytes = 100;
    t = make(&o);
    check_gzip(t, 99, false);
    check_gzip(t, 100, true);
    fsa_transport_free(t);

    o.gzip_min_bytes = SIZE_MAX;
    t = make(&o);
    check_gzip(t, 200000, false);
    fsa_transport_free(t);
}

/* n characters of the base64 alphabet from a seeded sequence: JSON string text (no escapes) that
 * gzip shrinks only to about 3/4 (6 bits a character), so a compressed body stays big enough to
 * measure the link. */
static void fill_text(char *out, size_t n, unsigned seed)
{
    static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        out[i] = digits[(x >> 16) & 63];
    }
}

static char *text_body(size_t n, unsigned seed)
{
    char *b = fsa_malloc(n);
    assert_non_null(b);
    fill_text(b, n, seed);
    return b;
}

static const char *level_xfl(int level)
{
    return level == 1 ? "4" : level == 6 ? "0" : "-1";
}

/* The request begun on t, ended once its answer is complete (fsa_transport_poll, bounded by 60 s):
 * the caller was the slower side. */
static fsa_status_t end_when_ready(fsa_transport_t *t, fsa_http_response_t *r)
{
    const int64_t until = fsa_port_posix()->mono_now(NULL).ns + 60 * FSA_NS_PER_S;
    bool done = false;
    while (!done && fsa_port_posix()->mono_now(NULL).ns < until)
        assert_fsa_ok(fsa_transport_poll(t, &done));
    assert_true(done);
    fsa_status_t st = fsa_transport_end(t, r);
    assert_int_equal(fsa_transport_last_wait_ns(t), 0);
    return st;
}

/* POSTs body to an echo route (ready: ended only once its answer is there, else at once, waiting
 * for it), expects 200 and the body intact, and checks that it went at want_level, as the
 * transport says and as the server saw (the gzip header's XFL byte). */
static void echo_at_level(fsa_transport_t *t, const char *path, const char *body, size_t n,
                          bool ready, int want_level)
{
    fsa_http_response_t r;
    fsa_status_t st;
    if (ready) {
        st = fsa_transport_begin(t, "POST", path, body, n, NULL, NULL, &r);
        if (st == FSA_OK)
            st = end_when_ready(t, &r);
    } else {
        st = fsa_transport_request(t, "POST", path, body, n, NULL, NULL, &r);
    }
    if (st != FSA_OK)
        fail_msg("POST %s: %s: %s", path, fsa_status_str(st), r.error);
    assert_int_equal(r.status, 200);
    assert_int_equal(field_long(r.body, "body"), (long)n);
    assert_int_equal(field_hex(r.body, "bodycrc"), crc_of(body, n));
    if (fsa_transport_last_gzip_level(t) != want_level)
        fail_msg("POST %s went at level %d, want %d (waited %lld ns)", path,
                 fsa_transport_last_gzip_level(t), want_level,
                 (long long)fsa_transport_last_wait_ns(t));
    assert_field(r.body, "xfl", level_xfl(want_level));
    fsa_http_response_clear(&r);
}

/*
 * The level follows the side that was slower: 6 before any answer; 1 after an answer that was
 * there before the caller asked for it; 6 after the caller waited for one (an answer SLOW_MS
 * late) longer than level 6 costs. An error answer, a failed request and a GET, slow as each is,
 * leave the level.
 */
static void test_fsa_transport_request__gzip_level_follows_the_slower_side(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    o.total_timeout_ms = 2 * SLOW_MS; /* /delay (DELAY_MS) fails, /slow (SLOW_MS) does not */
    fsa_transport_t *t = make(&o);
    assert_int_equal(fsa_transport_last_gzip_level(t), 0);
    assert_int_equal(fsa_transport_next_gzip_level(t), 6);
    const size_t n = 400 * 1000;
    char *big = text_body(n, 1);

    echo_at_level(t, "/echo", big, n, true, 6);
    assert_int_equal(fsa_transport_next_gzip_level(t), 1);
    echo_at_level(t, "/echo", big, n, true, 1);
    fsa_http_response_t r;
    assert_fsa_ok(fsa_transport_request(t, "POST", "/slow_503", big, n, NULL, NULL, &r));
    assert_int_equal(r.status, 503);
    assert_true(fsa_transport_last_wait_ns(t) > 0);
    fsa_http_response_clear(&r);
    assert_int_equal(fsa_transport_next_gzip_level(t), 1);
    assert_int_equal(fsa_transport_request(t, "POST", "/delay", big, n, NULL, NULL, &r),
                     FSA_ETIMEOUT);
    fsa_http_response_clear(&r);
    assert_int_equal(fsa_transport_next_gzip_level(t), 1);
    req_ok(t, "GET", "/slow", NULL, 0, &r);
    fsa_http_response_clear(&r);
    assert_int_equal(fsa_transport_last_gzip_level(t), 0); /* a GET has no body */
    assert_int_equal(fsa_transport_next_gzip_level(t), 1);

    /* A big body whose answer the caller waits SLOW_MS for: level 6 until one is ready again. */
    echo_at_level(t, "/slow", big, n, false, 1);
    if (fsa_transport_last_wait_ns(t) < SLOW_MS / 2 * FSA_NS_PER_MS)
        fail_msg("a %d ms answer was waited for %lld ns", SLOW_MS,
                 (long long)fsa_transport_last_wait_ns(t));
    assert_int_equal(fsa_transport_next_gzip_level(t), 6);
    echo_at_level(t, "/slow", big, n, false, 6);
    echo_at_level(t, "/echo", big, n, true, 6);
    echo_at_level(t, "/echo", big, n, true, 1);

    /* Bodies sent as they are (gzip off) teach nothing; NULL asks nothing. */
    fsa_transport_free(t);
    o.gzip_min_bytes = SIZE_MAX;
    t = make(&o);
    echo_at_level(t, "/echo", big, n, true, 0);
    assert_int_equal(fsa_transport_next_gzip_level(t), 6);
    assert_int_equal(fsa_transport_last_gzip_level(NULL), 0);
    assert_int_equal(fsa_transport_next_gzip_level(NULL), 0);
    assert_int_equal(fsa_transport_last_wait_ns(NULL), 0);
    bool done = true;
    assert_int_equal(fsa_transport_poll(t, &done), FSA_EINVAL); /* nothing in flight */
    assert_false(done);
    fsa_free(big);
    fsa_transport_free(t);
}

/* A body compressed ahead goes as compressed then, intact, when the next request sends that same
 * body; a request with another body drops it (and that body, then the first, go intact). */
static void test_fsa_transport_compress_ahead__taken_by_the_same_body_only(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = make(&o);
    const size_t n = 100 * 1000;
    char *a = text_body(n, 1), *b = text_body(n, 2);
    assert_fsa_ok(fsa_transport_compress_ahead(t, a, n));
    echo_at_level(t, "/echo", a, n, false, 6);
    assert_true(fsa_transport_last_compressed_ahead(t));
    assert_fsa_ok(fsa_transport_compress_ahead(t, a, n));
    echo_at_level(t, "/echo", b, n, false, fsa_transport_next_gzip_level(t));
    assert_false(fsa_transport_last_compressed_ahead(t));
    echo_at_level(t, "/echo", a, n, false, fsa_transport_next_gzip_level(t));
    assert_false(fsa_transport_last_compressed_ahead(t)); /* dropped by b's request */
    /* The same pointer and length with other bytes (a body changed in place, against the rule):
     * compressed anew, and the server gets the bytes as they are now (echo_at_level checks their
     * CRC), not those compressed ahead. */
    assert_fsa_ok(fsa_transport_compress_ahead(t, a, n));
    a[n / 2] = a[n / 2] == 'x' ? 'y' : 'x';
    echo_at_level(t, "/echo", a, n, false, fsa_transport_next_gzip_level(t));
    assert_false(fsa_transport_last_compressed_ahead(t));
    /* and unchanged again, it is taken */
    assert_fsa_ok(fsa_transport_compress_ahead(t, a, n));
    echo_at_level(t, "/echo", a, n, false, fsa_transport_next_gzip_level(t));
    assert_true(fsa_transport_last_compressed_ahead(t));
    /* a body under the gzip threshold is left to go as it is */
    char *small = json_body(500);
    assert_fsa_ok(fsa_transport_compress_ahead(t, small, 500));
    echo_at_level(t, "/echo", small, 500, false, 0);
    assert_false(fsa_transport_last_compressed_ahead(t));
    assert_int_equal(fsa_transport_compress_ahead(NULL, a, n), FSA_EINVAL);
    assert_int_equal(fsa_transport_compress_ahead(t, NULL, 0), FSA_EINVAL);
    assert_false(fsa_transport_last_compressed_ahead(NULL));
    /* one left behind is freed with the transport (ASan would tell) */
    assert_fsa_ok(fsa_transport_compress_ahead(t, b, n));
    fsa_transport_free(t);
    fsa_free(small);
    fsa_free(a);
    fsa_free(b);
}

/* ---- against the real fieldsync-server ---- */

/* Signs as device 0 of the harness's devices file. */
static fsa_status_t device0_sign(void *arg, const char *method, const char *path_and_query,
                                 const void *wire_body, size_t wire_len, fsa_auth_headers_t *out)
{
    (void)arg;
    const fsa_port_t *p = fsa_port_posix();
    char id[16];
    th_device_id(0, id);
    snprintf(out->device_id, sizeof out->device_id, "%s", id);
    snprintf(out->timestamp, sizeof out->timestamp, "%lld", (long long)p->wall_now(p->ctx).ms);
    fsa_signer_key_t key;
    th_device_key(0, &key);
    fsa_status_t st = fsa_signer_nonce(p, out->nonce);
    if (st == FSA_OK)
        st = fsa_signer_sign(&key, method, path_and_query, out->timestamp, out->nonce, wire_body,
                             wire_len, out->signature);
    fsa_signer_key_wipe(&key);
    return st;
}

/* Under the protocol's 64 KiB for a string: few ops, so that the server's work is mostly per byte
 * (its work per op would lower the rate loopback measures). */
#define NOTE_BYTES 60000

/* A push of nops creates of jobneeds "J-<tag>-<i>", each with a NOTE_BYTES note of fill_text in
 * other_info: a body of nops * ~60 KB that gzips to about 3/4 of that. */
static char *push_body(int nops, const char *tag, size_t *len)
{
    const size_t op_cap = NOTE_BYTES + 512;
    const size_t cap = (size_t)nops * op_cap + 128;
    char *body = fsa_malloc(cap);
    char *op = fsa_malloc(op_cap);
    char *extra = fsa_malloc(op_cap);
    assert_non_null(body);
    assert_non_null(op);
    assert_non_null(extra);
    char batch_id[37];
    tc_op_id(batch_id);
    size_t n = (size_t)snprintf(body, cap, "{\"batch_id\":\"%s\",\"ops\":[", batch_id);
    static const char head[] = ",\"fields\":{\"other_info\":{\"note\":\"";
    memcpy(extra, head, sizeof head - 1);
    for (int i = 0; i < nops; i++) {
        fill_text(extra + sizeof head - 1, NOTE_BYTES, (unsigned)i);
        snprintf(extra + sizeof head - 1 + NOTE_BYTES, 8, "\"}}");
        char id[64];
        snprintf(id, sizeof id, "J-%s-%d", tag, i);
        tc_op(op, op_cap, NULL, "create", "jobneed", id, extra);
        size_t k = strlen(op);
        assert_true(n + k + 3 < cap);
        if (i > 0)
            body[n++] = ',';
        memcpy(body + n, op, k + 1); /* the NUL too: the body is text at every step */
        n += k;
    }
    memcpy(body + n, "]}", 3);
    *len = n + 2;
    fsa_free(op);
    fsa_free(extra);
    return body;
}

/* Pushes body (nops creates), expects every op applied, and checks the level it went at. */
static void push_at_level(fsa_transport_t *t, const char *body, size_t len, int nops, bool ready,
                          int want_level)
{
    char id[16], path[64];
    th_device_id(0, id);
    snprintf(path, sizeof path, "/v1/devices/%s/ops", id);
    fsa_http_response_t r;
    fsa_status_t st;
    if (ready) {
        st = fsa_transport_begin(t, "POST", path, body, len, device0_sign, NULL, &r);
        if (st == FSA_OK)
            st = end_when_ready(t, &r);
    } else {
        st = fsa_transport_request(t, "POST", path, body, len, device0_sign, NULL, &r);
    }
    if (st != FSA_OK)
        fail_msg("push: %s: %s", fsa_status_str(st), r.error);
    if (r.status != 200)
        fail_msg("push: HTTP %d: %.300s", r.status, r.body);
    fsa_codec_result_t *res = NULL;
    size_t count = 0;
    int64_t server_time = 0;
    assert_fsa_ok(fsa_codec_decode_results(r.body, r.body_len, &res, &count, &server_time));
    assert_int_equal(count, (size_t)nops);
    for (size_t i = 0; i < count; i++)
        assert_int_equal(res[i].status, FSA_RESULT_APPLIED);
    fsa_codec_results_free(res, count);
    fsa_http_response_clear(&r);
    if (fsa_transport_last_gzip_level(t) != want_level)
        fail_msg("the push went at level %d, want %d (waited %lld ns)",
                 fsa_transport_last_gzip_level(t), want_level,
                 (long long)fsa_transport_last_wait_ns(t));
}

static fsa_transport_t *server_transport(const th_server_t *srv)
{
    fsa_transport_opts_t o = http_opts();
    o.base_url = srv->url;
    o.total_timeout_ms = 30000; /* the server's work under ASan or qemu */
    return make(&o);
}

/*
 * The real fieldsync-server, signed pushes it applies. Answers that are there before the caller
 * asks for them (a drain whose agent is the slower side): the first push goes at level 6, the
 * next at 1. Behind --fault-latency-ms 500 (a slow link), a push the caller waits for turns the
 * next to level 6, and it stays there while the caller waits.
 */
static void test_fsa_transport_request__gzip_level_against_the_real_server(void **state)
{
    (void)state;
    th_server_t srv;
    static const char *const slow[] = {"--fault-latency-ms", "500", NULL};
    for (int round = 0; round < 2; round++) {
        assert_true(th_server_prepare(&srv, 1));
        assert_true(th_server_start(&srv, round == 0 ? NULL : slow));
        fsa_transport_t *t = server_transport(&srv);
        const int levels[2][3] = {{6, 1, 1}, {6, 1, 6}};
        for (int i = 0; i < 3; i++) {
            char tag[32];
            snprintf(tag, sizeof tag, "P%d%d", round, i);
            size_t len = 0;
            char *body = push_body(11, tag, &len);
            /* on the slow server, the second push and the third are waited for */
            push_at_level(t, body, len, 11, !(round == 1 && i >= 1), levels[round][i]);
            fsa_free(body);
        }
        if (round == 1) {
            assert_true(fsa_transport_last_wait_ns(t) > 250 * FSA_NS_PER_MS);
            assert_int_equal(fsa_transport_next_gzip_level(t), 6);
        }
        fsa_transport_free(t);
        assert_int_equal(th_server_stop(&srv), 0);
        th_dir_remove(srv.dir);
    }
}

static void test_fsa_transport_request__sign_error_aborts(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = make(&o);
    sign_rec_t rec = {.result = FSA_EIO};
    fsa_http_response_t r;
    int before = atomic_load(&g_requests);
    char *body = json_body(3000);
    assert_int_equal(fsa_transport_request(t, "POST", "/echo", body, 3000, record_sign, &rec, &r),
                     FSA_EIO);
    assert_int_equal(rec.calls, 1);
    assert_null(r.body);
    assert_non_null(strstr(r.error, "sign"));
    /* A callback that fills in a header with a line break in it is refused too. */
    rec = (sign_rec_t){.malformed = true};
    assert_int_equal(fsa_transport_request(t, "POST", "/echo", body, 3000, record_sign, &rec, &r),
                     FSA_EINVAL);
    assert_null(r.body);
    assert_int_equal(atomic_load(&g_requests), before); /* nothing reached the server */
    /* The transport is still fine afterwards. */
    rec = (sign_rec_t){0};
    assert_fsa_ok(fsa_transport_request(t, "POST", "/echo", body, 3000, record_sign, &rec, &r));
    assert_field(r.body, "dev", "dev001");
    fsa_http_response_clear(&r);
    fsa_free(body);
    fsa_transport_free(t);
}

static void test_fsa_transport_request__total_timeout(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    o.total_timeout_ms = 300;
    fsa_transport_t *t = make(&o);
    fsa_mono_t t0 = fsa_port_posix()->mono_now(NULL);
    expect_fail(t, "/delay", FSA_ETIMEOUT, "timed out");
    int64_t ms = test_real_elapsed_ns(t0) / FSA_NS_PER_MS;
    if (ms < 250 || ms > 1500)
        fail_msg("the 300 ms timeout took %lld ms", (long long)ms);
    /* The next request works (on a fresh connection). */
    fsa_http_response_t r;
    req_ok(t, "GET", "/echo", NULL, 0, &r);
    fsa_http_response_clear(&r);
    fsa_transport_free(t);
}

static void test_fsa_transport_request__answer_too_large(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    o.max_response_bytes = SMALL_MAX_RESPONSE;
    fsa_transport_t *t = make(&o);
    expect_fail(t, "/big", FSA_ETOOLARGE, "16384");
    /* A gzip answer is measured inflated: ~1 KiB on the wire, 256 KiB once inflated. */
    expect_fail(t, "/gzip", FSA_ETOOLARGE, NULL);
    fsa_http_response_t r;
    req_ok(t, "GET", "/echo", NULL, 0, &r);
    fsa_http_response_clear(&r);
    fsa_transport_free(t);

    o.max_response_bytes = BIG_ANSWER_BYTES; /* exactly at the limit is fine */
    t = make(&o);
    req_ok(t, "GET", "/big", NULL, 0, &r);
    assert_int_equal(r.body_len, BIG_ANSWER_BYTES);
    fsa_http_response_clear(&r);
    fsa_transport_free(t);
}

/* A server that answers one request with a header line of HEADER_LINE_BYTES, over libcurl's own
 * bound on a header (100 KB), and closes. */
#define HEADER_LINE_BYTES (150 * 1024)

typedef struct raw_server {
    int fd;
    char url[64];
} raw_server_t;

static void *raw_serve_huge_header(void *arg)
{
    raw_server_t *s = arg;
    int c = accept(s->fd, NULL, NULL);
    if (c < 0)
        return NULL;
    char req[4096];
    size_t got = 0;
    while (got < sizeof req - 1) { /* the request's head, whatever it holds */
        ssize_t n = read(c, req + got, sizeof req - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") != NULL)
            break;
    }
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: ";
    static const char tail[] = "\r\nContent-Length: 2\r\n\r\n{}";
    char *pad = fsa_malloc(HEADER_LINE_BYTES);
    if (pad != NULL) {
        memset(pad, 'a', HEADER_LINE_BYTES);
        /* The client may give up part way: a failed write ends the answer, as it would. */
        if (write(c, head, sizeof head - 1) > 0 && write(c, pad, HEADER_LINE_BYTES) > 0)
            (void)!write(c, tail, sizeof tail - 1);
        fsa_free(pad);
    }
    close(c);
    return NULL;
}

/* libcurl reports an answer over its own bounds (a header line of 100 KB or more) as "out of
 * memory" (CURLE_OUT_OF_MEMORY in Debian 12's 7.88). That is the server's doing, not this
 * device's memory: a protocol error, which the engine backs off from, and not FSA_ENOMEM, which
 * it does not (a server that sends such headers would be asked again at the next cycle, with no
 * backoff). Told apart by the answer having begun (its status line read) and by the allocator:
 * no allocation failed on this thread meanwhile. */
static void test_fsa_transport_request__header_over_libcurls_bound_is_the_servers(void **state)
{
    (void)state;
    raw_server_t s;
    s.fd = th_loopback_listen(s.url, sizeof s.url);
    assert_true(s.fd >= 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, raw_serve_huge_header, &s), 0);
    fsa_transport_opts_t o = http_opts();
    o.base_url = s.url;
    fsa_transport_t *t = make(&o);
    unsigned long failures = fsa_alloc_failures();
    expect_fail(t, "/v1/ping", FSA_EPROTO, "over libcurl's limits");
    assert_int_equal(fsa_alloc_failures(), failures);
    fsa_transport_free(t);
    assert_int_equal(pthread_join(th, NULL), 0);
    close(s.fd);
}

/* libcurl 7.88 drops a URL's query when its copy cannot be allocated (its url.c ignores that
 * curl_url_get() failed) and sends the request without it; the real server then refuses the
 * signature, which covers the query, with a 401, which the engine takes for a refusal of this
 * device and backs off from for an hour. An error answer after an allocation failed on the way
 * is FSA_ENOMEM (the engine asks again at the next cycle). Each allocation of one request fails in
 * turn: none gives a success with the 401, and the request works again after each. */
static void test_fsa_transport_request__error_after_failed_alloc_is_enomem(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = make(&o);
    fsa_http_response_t r;
    unsigned long n = 1, enomem = 0;
    for (bool fired = true; fired; n++) {
        fsa_alloc_fail_nth(n);
        fsa_status_t st =
            fsa_transport_request(t, "GET", "/needs_query?q=v1", NULL, 0, NULL, NULL, &r);
        fired = fsa_alloc_fault_fired();
        fsa_alloc_fail_nth(0);
        if (st == FSA_OK && r.status != 200)
            fail_msg("N=%lu: HTTP %d taken as the answer after a failed allocation", n, r.status);
        fsa_http_response_clear(&r);
        enomem += st == FSA_ENOMEM;
        if (fired) {
            assert_fsa_ok(
                fsa_transport_request(t, "GET", "/needs_query?q=v1", NULL, 0, NULL, NULL, &r));
            assert_int_equal(r.status, 200);
            fsa_http_response_clear(&r);
        }
    }
    assert_true(n > 10);
    assert_true(enomem > 0);
    fsa_transport_free(t);
}

/* Only libcurl's work on the request counts: an allocation of the caller's that fails between
 * begin and end (the engine reads and compresses the next batch meanwhile) cannot change the
 * request, and the server's genuine refusal stays the answer. */
static void test_fsa_transport_begin_end__callers_failed_alloc_leaves_the_answer(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = make(&o);
    fsa_http_response_t r;
    assert_fsa_ok(fsa_transport_begin(t, "GET", "/needs_query?q=v2", NULL, 0, NULL, NULL, &r));
    fsa_alloc_fail_nth(1);
    void *p = fsa_malloc(64);
    assert_true(fsa_alloc_fault_fired());
    fsa_alloc_fail_nth(0);
    assert_null(p);
    assert_fsa_ok(fsa_transport_end(t, &r));
    assert_int_equal(r.status, 401);
    fsa_http_response_clear(&r);
    fsa_transport_free(t);
}

static void test_fsa_transport_request__gzip_answer_inflated(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = make(&o);
    fsa_http_response_t r;
    req_ok(t, "GET", "/gzip", NULL, 0, &r);
    assert_int_equal(r.body_len, GZIP_ANSWER_BYTES);
    for (size_t i = 0; i < GZIP_ANSWER_BYTES; i++)
        if (r.body[i] != answer_pattern(i))
            fail_msg("inflated answer differs at byte %zu", i);
    assert_int_equal(r.body[r.body_len], '\0');
    /* The wire carried the compressed form. */
    assert_true(r.wire_bytes_received < fx.gzip_answer_len + 1024);
    fsa_http_response_clear(&r);
    fsa_transport_free(t);
}

static void test_fsa_transport_request__retry_after(void **state)
{
    (void)state;
    fsa_transport_opts_t o = http_opts();
    fsa_transport_t *t = make(&o);
    fsa_http_response_t r;
    req_ok(t, "GET", "/retry", NULL, 0, &r);
    assert_int_equal(r.status, 429);
    assert_int_equal(r.retry_after_ms, 7000);
    fsa_http_response_clear(&r);
    req_ok(t, "GET", "/retry_date", NULL, 0, &r);
    assert_int_equal(r.status, 503);
    if (r.retry_after_ms < 28000 || r.retry_after_ms > 31000)
        fail_msg("an HTTP date 30 s ahead gave %lld ms", (long long)r.retry_after_ms);
    fsa_http_response_clear(&r);
    req_ok(t, "GET", "/retry_past", NULL, 0, &r);
    assert_int_equal(r.retry_after_ms, 0);
    fsa_http_response_clear(&r);
    req_ok(t, "GET", "/retry_negative", NULL, 0, &r);
    assert_int_equal(r.retry_after_ms, 0);
    fsa_http_response_clear(&r);
    req_ok(t, "GET", "/retry_bad", NULL, 0, &r);
    assert_int_equal(r.retry_after_ms, -1);
    fsa_http_response_clear(&r);
    req_ok(t, "GET", "/retry_huge", NULL, 0, &r);
    assert_int_equal(r.retry_after_ms, 3600 * 1000);
    fsa_http_response_clear(&r);
    req_ok(t, "GET", "/echo", NULL, 0, &r);
    assert_int_equal(r.retry_after_ms, -1);
    fsa_http_response_clear(&r);
    fsa_transport_free(t);
}

/* A transport to the server that sends no Date header, on a sim port whose wall clock starts at
 * wall_ms (*sim: free it after the transport). */
static fsa_transport_t *nodate_transport_at(int64_t wall_ms, fsa_sim_t **sim)
{
    assert_fsa_ok(fsa_sim_new(1, (fsa_wall_t){wall_ms}, "transport", sim));
    fsa_transport_opts_t o = http_opts();
    o.base_url = fx.nodate.url;
    fsa_transport_t *t = NULL;
    char err[256];
    if (fsa_transport_new(fsa_sim_port(*sim), &o, &t, err, sizeof err) != FSA_OK)
        fail_msg("transport: %s", err);
    return t;
}

/* A Retry-After date in an answer without a Date header is measured against the transport's
 * port, so a simulated device waits on its virtual wall clock, not the machine's (which would
 * see a date years ahead and cap the wait at an hour). */
static void test_fsa_transport_request__retry_after_date_on_the_ports_clock(void **state)
{
    (void)state;
    fsa_sim_t *sim = NULL;
    fsa_transport_t *t = nodate_transport_at(FIXED_RETRY_MS - 30000, &sim);
    fsa_http_response_t r;
    req_ok(t, "GET", "/retry_fixed_date", NULL, 0, &r);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.retry_after_ms, 30000);
    fsa_http_response_clear(&r);
    /* The virtual clock moves: the same date is nearer. */
    fsa_sim_advance(sim, 10 * FSA_NS_PER_S);
    req_ok(t, "GET", "/retry_fixed_date", NULL, 0, &r);
    assert_int_equal(r.retry_after_ms, 20000);
    fsa_http_response_clear(&r);
    /* A device clock set past the date: no wait. */
    fsa_sim_shift_wall(sim, 60000);
    req_ok(t, "GET", "/retry_fixed_date", NULL, 0, &r);
    assert_int_equal(r.retry_after_ms, 0);
    fsa_http_response_clear(&r);
    fsa_transport_free(t);
    fsa_sim_free(sim);
}

/* A Retry-After date after 2038 on a device clock after 2038: read on 64 bits, so armhf's
 * 32-bit time_t does not wrap it (curl_getdate's would). */
static void test_fsa_transport_request__retry_after_date_after_2038(void **state)
{
    (void)state;
    fsa_sim_t *sim = NULL;
    fsa_transport_t *t = nodate_transport_at(LATE_RETRY_MS - 25000, &sim);
    fsa_http_response_t r;
    req_ok(t, "GET", "/retry_late_date", NULL, 0, &r);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.retry_after_ms, 25000);
    fsa_http_response_clear(&r);
    fsa_transport_free(t);
    fsa_sim_free(sim);
}

/* ---- HTTPS ---- */

static void https_ok(const fsa_transport_opts_t *o)
{
    fsa_transport_t *t = make(o);
    fsa_http_response_t r;
    char *body = json_body(4000);
    req_ok(t, "POST", "/echo", body, 4000, &r);
    assert_int_equal(r.status, 200);
    assert_field(r.body, "enc", "gzip");
    assert_int_equal(field_hex(r.body, "bodycrc"), crc_of(body, 4000));
    assert_false(r.reused_connection);
    fsa_http_response_clear(&r);
    req_ok(t, "GET", "/echo", NULL, 0, &r);
    assert_true(r.reused_connection);
    fsa_http_response_clear(&r);
    fsa_free(body);
    fsa_transport_free(t);
}

static void https_fails(const fsa_transport_opts_t *o, fsa_status_t want, const char *error_has)
{
    fsa_transport_t *t = make(o);
    expect_fail(t, "/echo", want, error_has);
    fsa_transport_free(t);
}

/* A transport refused at creation with want, err holding has. */
static void new_fails(const fsa_transport_opts_t *o, fsa_status_t want, const char *has)
{
    char err[512] = "";
    fsa_transport_t *t = NULL;
    assert_int_equal(fsa_transport_new(fsa_port_posix(), o, &t, err, sizeof err), want);
    assert_null(t);
    if (strstr(err, has) == NULL)
        fail_msg("expected \"%s\" in: %s", has, err);
}

static void test_fsa_transport_request__https_with_ca_file(void **state)
{
    (void)state;
    fsa_transport_opts_t o = https_opts();
    https_ok(&o);
}

static void test_fsa_transport_request__https_untrusted(void **state)
{
    (void)state;
    /* The system store does not know the test CA. */
    fsa_transport_opts_t o = https_opts();
    o.ca_file = NULL;
    https_fails(&o, FSA_ETLS, "TLS");
    /* The CA is right but the name is not: the certificate is for 127.0.0.1 only. */
    char base[64];
    snprintf(base, sizeof base, "https://localhost:%u", fx.https.port);
    o = https_opts();
    o.base_url = base;
    https_fails(&o, FSA_ETLS, NULL);
    /* A CA file that does not exist, or holds no certificate: refused when the transport is
     * made (the TLS files are read then, tls_file), not at the first request. */
    o = https_opts();
    o.ca_file = "/nonexistent/ca.pem";
    new_fails(&o, FSA_ENOTFOUND, "CA file: ");
    o.ca_file = fx.client_key; /* a key, not a certificate */
    new_fails(&o, FSA_EINVAL, "holds no PEM certificate");
}

static void test_fsa_transport_request__https_pins(void **state)
{
    (void)state;
    fsa_transport_opts_t o = https_opts();
    o.pins = fx.pin;
    https_ok(&o);

    char several[256];
    snprintf(several, sizeof several, "%s;%s;%s", VALID_PIN_ZERO, fx.ca_pin, fx.pin);
    o.pins = several;
    https_ok(&o);

    o.pins = VALID_PIN_ZERO;
    https_fails(&o, FSA_ETLS, "TLS");
    snprintf(several, sizeof several, "%s;%s", VALID_PIN_ZERO, fx.ca_pin);
    o.pins = several;
    https_fails(&o, FSA_ETLS, NULL);
}

static void test_fsa_transport_request__https_client_cert(void **state)
{
    (void)state;
    fsa_transport_opts_t o = https_opts();
    o.client_cert = fx.client_cert;
    o.client_key = fx.client_key;
    fsa_transport_t *t = make(&o);
    fsa_http_response_t r;
#ifdef FSA_TEST_HAVE_GNUTLS
    req_ok(t, "GET", "/whoami", NULL, 0, &r);
    /* OpenSSL sends the chain it can build (certificate and CA), so count at least one. */
    if (strncmp(r.body, "peers=0", 7) == 0 || strstr(r.body, "verified=1") == NULL)
        fail_msg("the server saw no valid client certificate: %s", r.body);
#else
    req_ok(t, "GET", "/echo", NULL, 0, &r);
#endif
    fsa_http_response_clear(&r);
    fsa_transport_free(t);

#ifdef FSA_TEST_HAVE_GNUTLS
    o = https_opts();
    t = make(&o);
    req_ok(t, "GET", "/whoami", NULL, 0, &r);
    assert_string_equal(r.body, "peers=0 verified=0");
    fsa_http_response_clear(&r);
    fsa_transport_free(t);
#endif

    /* A client certificate that cannot be read is refused when the transport is made. */
    o = https_opts();
    o.client_cert = "/nonexistent/cli.pem";
    o.client_key = fx.client_key;
    new_fails(&o, FSA_ENOTFOUND, "client certificate: ");
}

/* Asks the test server who we are over t: it must have verified our client certificate, else
 * the test fails with why. */
static void whoami_verified(fsa_transport_t *t, const char *why)
{
    fsa_http_response_t r;
    req_ok(t, "GET", "/whoami", NULL, 0, &r);
    if (strstr(r.body, "verified=1") == NULL)
        fail_msg("%s: %s", why, r.body);
    fsa_http_response_clear(&r);
}

/* The CA file and the client certificate may be links (as in /etc/ssl/certs; an app's override
 * of a path init resolved is used as given): the handshake uses their targets. The key may not be
 * one, as the secret may not. */
static void test_fsa_transport_new__certificate_files_may_be_links(void **state)
{
    (void)state;
    char ca[600], cert[600], key[600];
    snprintf(ca, sizeof ca, "%s/ca-link.pem", fx.dir);
    snprintf(cert, sizeof cert, "%s/cli-link.pem", fx.dir);
    snprintf(key, sizeof key, "%s/cli-link.key", fx.dir);
    assert_int_equal(symlink(fx.ca_file, ca), 0);
    assert_int_equal(symlink(fx.client_cert, cert), 0);
    assert_int_equal(symlink(fx.client_key, key), 0);
    fsa_transport_opts_t o = https_opts();
    o.ca_file = ca;
    o.client_cert = cert;
    o.client_key = fx.client_key;
    fsa_transport_t *t = make(&o);
    whoami_verified(t, "the server saw no valid client certificate");
    fsa_transport_free(t);
    o.client_key = key;
    new_fails(&o, FSA_EIO, "client key: ");
    assert_int_equal(unlink(ca), 0);
    assert_int_equal(unlink(cert), 0);
    assert_int_equal(unlink(key), 0);
}

/* The TLS files are read once, by fsa_transport_new, the key with the secret's checks, and
 * libcurl gets their bytes: files changed afterwards are not what the handshakes use (given the
 * paths, libcurl opened the files again at each handshake, unchecked). A key others may read is
 * refused as the secret is. */
static void test_fsa_transport_new__tls_files_read_once_key_as_a_secret(void **state)
{
    (void)state;
    char *pem = read_text(fx.client_key);
    assert_non_null(pem);
    char *ca = read_text(fx.ca_file);
    assert_non_null(ca);
    fsa_transport_opts_t o = https_opts();
    o.client_cert = fx.client_cert;
    o.client_key = fx.client_key;
    fsa_transport_t *t = make(&o);
    /* Another key and a CA file without the server's CA under the same names: only a new
     * transport would read them. */
    assert_true(run("cp cli.pem ca.pem"));
    assert_int_equal(unlink(fx.client_key), 0);
    assert_true(run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
                    "-out cli.key"));
    assert_int_equal(chmod(fx.client_key, 0600), 0);
    whoami_verified(t, "the handshake did not use the key read at creation");
    fsa_transport_free(t);

    char err[256] = "";
    fsa_transport_t *u = NULL;
    assert_int_equal(chmod(fx.client_key, 0644), 0);
    assert_int_equal(fsa_transport_new(fsa_port_posix(), &o, &u, err, sizeof err), FSA_EPERM);
    assert_null(u);
    assert_non_null(strstr(err, "client key: "));
    assert_int_equal(unlink(fx.client_key), 0);
    assert_int_equal(fsa_transport_new(fsa_port_posix(), &o, &u, err, sizeof err), FSA_ENOTFOUND);
    assert_non_null(strstr(err, "client key: "));

    /* The fixture's CA file and key back, for the tests after this one. */
    FILE *f = fopen(fx.ca_file, "w");
    assert_non_null(f);
    assert_int_equal(fputs(ca, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    fsa_free(ca);
    f = fopen(fx.client_key, "w");
    assert_non_null(f);
    assert_int_equal(fputs(pem, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(fx.client_key, 0600), 0);
    fsa_free(pem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_transport_host_is_loopback__table),
        cmocka_unit_test(test_fsa_transport_new__invalid_args),
        cmocka_unit_test(test_fsa_transport_new__refuses_plain_http_to_remote),
        cmocka_unit_test(test_fsa_transport_new__refuses_plain_http_through_a_proxy),
        cmocka_unit_test(test_fsa_transport_new__proxy_credentials_refused),
        cmocka_unit_test(test_fsa_transport_new__malformed_pins),
        cmocka_unit_test(test_fsa_transport_request__invalid_args),
        cmocka_unit_test(test_fsa_transport_request__http_loopback_echo),
        cmocka_unit_test(test_fsa_transport_request__base_prefix_and_query_are_signed),
        cmocka_unit_test(test_fsa_transport_request__insecure_http_unresolvable),
        cmocka_unit_test(test_fsa_transport_request__connection_refused),
        cmocka_unit_test(test_fsa_transport_request__proxy_explicit_not_environment),
        cmocka_unit_test(test_fsa_transport_begin_end__halves_of_a_request),
        cmocka_unit_test(test_fsa_transport_request__reuses_connection),
        cmocka_unit_test(test_fsa_transport_request__resends_when_reused_connection_drops),
        cmocka_unit_test(test_fsa_transport_request__gzip_threshold),
        cmocka_unit_test(test_fsa_transport_request__gzip_level_follows_the_slower_side),
        cmocka_unit_test(test_fsa_transport_compress_ahead__taken_by_the_same_body_only),
        cmocka_unit_test(test_fsa_transport_request__gzip_level_against_the_real_server),
        cmocka_unit_test(test_fsa_transport_request__sign_error_aborts),
        cmocka_unit_test(test_fsa_transport_request__total_timeout),
        cmocka_unit_test(test_fsa_transport_request__answer_too_large),
        cmocka_unit_test(test_fsa_transport_request__header_over_libcurls_bound_is_the_servers),
        cmocka_unit_test(test_fsa_transport_request__error_after_failed_alloc_is_enomem),
        cmocka_unit_test(test_fsa_transport_begin_end__callers_failed_alloc_leaves_the_answer),
        cmocka_unit_test(test_fsa_transport_request__gzip_answer_inflated),
        cmocka_unit_test(test_fsa_transport_request__retry_after),
        cmocka_unit_test(test_fsa_transport_request__retry_after_date_on_the_ports_clock),
        cmocka_unit_test(test_fsa_transport_request__retry_after_date_after_2038),
        cmocka_unit_test(test_fsa_transport_request__https_with_ca_file),
        cmocka_unit_test(test_fsa_transport_request__https_untrusted),
        cmocka_unit_test(test_fsa_transport_request__https_pins),
        cmocka_unit_test(test_fsa_transport_request__https_client_cert),
        cmocka_unit_test(test_fsa_transport_new__tls_files_read_once_key_as_a_secret),
        cmocka_unit_test(test_fsa_transport_new__certificate_files_may_be_links),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
