/* fieldsync-server: HTTP (libmicrohttpd), authentication, routing, limits, admin API and faults. */
/*
 * The OS is the port's: clocks, randomness, threads, mutexes and the log (port.h), the secret
 * files (files.h), the listening sockets (daemon.h), which libmicrohttpd then serves.
 */
#include "sync/server/server.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <microhttpd.h>

#include "port/alloc.h"
#include "port/buf.h"
#include "port/daemon.h"
#include "port/files.h"
#include "port/limits.h"
#include "sync/codec.h"
#include "sync/devices.h"
#include "sync/gzip.h"
#include "sync/server/request.h"
#include "sync/server/store.h"
#include "sync/signer.h"

#define URI_MAX FSA__SERVER_URI_MAX
#define RAW_BODY_MAX FSA__SERVER_RAW_BODY_MAX /* request.h */
#define DISCARD_MAX FSA__SERVER_DISCARD_MAX   /* request.h */
/* A body without a Content-Length (chunked) has no announced end: past the body limit only this
 * much more is read and dropped before the 413, and the connection is closed after it. */
#define CHUNKED_DISCARD_MAX ((uint64_t)RAW_BODY_MAX + 64 * 1024)
#define TOKEN_MAX 4096
#define CERT_MAX (256 * 1024)
#define SHUTDOWN_WAIT_MS 10000

/* ---- statistics ---- */

typedef struct stats {
    atomic_llong requests, push, pull, admin, other;
    atomic_llong http2xx, http4xx, http5xx;
    atomic_llong ops[FSA__RESULT_COUNT];
    atomic_llong ops_expired; /* op outcomes removed by the retention sweeper */
    atomic_llong bad_signature, unknown_device, replay, clock_skew;
    atomic_llong malformed, too_large;
    atomic_llong quota_429, budget_503, share_503, admin_unauthorized, smuggling, too_slow;
    atomic_llong header_deadline; /* connections shut down: headers not complete in time */
    atomic_llong before_body;     /* /v1/ requests refused on their headers, body never kept */
    atomic_llong f_latency, f_5xx, f_429, f_drop, f_reset;
} stats_t;

static void bump(atomic_llong *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static long long get(atomic_llong *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* ---- devices ---- */

typedef fsa__server_device_t device_t;

typedef struct quota {
    double tokens;
    int64_t last_ms;
} quota_t;

/* A connection as the header deadline sees it (the socket context of libmicrohttpd), in the
 * server's list under conn_lock from its start to its close. */
typedef struct conn {
    struct conn *prev, *next;
    int fd;
    bool armed;          /* the deadline applies (no request's headers are complete) */
    bool shut;           /* shut down by the watch: waiting for libmicrohttpd to close it */
    fsa_mono_t deadline; /* when armed: its headers must be complete by then */
} conn_t;

struct fsa_server {
    fsa_port_t port; /* the posix port with the server's own log prefix */
    fsa_server_config_t cfg;
    struct MHD_Daemon *mhd;
    int listen_fd;
    char url[128];
    /* The admin API's own listener (admin_enabled): a daemon of its own on admin_fd. */
    struct MHD_Daemon *admin_mhd;
    int admin_fd;
    char admin_url[160];
    char *admin_unix; /* the socket file to remove at the end, or NULL */
    /* The header deadline: every open connection of both listeners (conn_t) and a watch thread
     * that shuts down those past it (conn_watch_main). */
    fsa_mutex_t *conn_lock;
    fsa_cond_t *conn_cond;
    conn_t *conns;
    bool conn_stop; /* under conn_lock */
    fsa_thread_t *conn_watch;
    int64_t header_ns;
    fsa_store_t *store;
    device_t *devices;
    size_t ndevices;
    bool admin_enabled;
    unsigned char admin_hash[32]; /* SHA-256 of the admin token; the token itself is not kept */
    char *tls_cert;
    char *tls_key;
    /* The op log's retention sweeper (a thread), stopped through sweep_stop under sweep_lock. */
    fsa_thread_t *sweeper;
    fsa_mutex_t *sweep_lock;
    fsa_cond_t *sweep_cond;
    atomic_bool sweep_stop;
    stats_t stats;
    atomic_llong in_flight;
    atomic_ullong fault_counter;
    int64_t started_ms;
    /* Body bytes buffered by all requests together, against FSA_LIMIT_SERVER_BODY_BUDGET, and
     * by each client address, against addr_share of it (holds, under hold_lock). */
    atomic_llong body_bytes;
    fsa_mutex_t *hold_lock;
    fsa__server_holds_t holds;
    long long addr_share;
    /* The per-device request quota (a token bucket per device, indexed like devices), under
     * quota_lock. Each server process keeps its own. */
    struct quota *quota;
    double quota_rate, quota_burst; /* a second, and the bucket's size */
    fsa_mutex_t *quota_lock;
    /* Admin token failures, a token bucket under admin_lock (admin_guess_ok). */
    fsa_mutex_t *admin_lock;
    quota_t admin_fails;
    /* Rate limit of warnings in the log (warn_allowed). */
    fsa_mutex_t *log_lock;
    int64_t log_window_ms;
    unsigned log_in_window;
    unsigned long long log_suppressed;
};

typedef struct request {
    fsa_server_t *srv;
    char uri[URI_MAX];
    bool uri_too_long;
    bool started;
    bool drop;      /* the fault "commit, then drop the response" */
    fsa_buf_t body; /* the request body as it comes, NUL terminated */
    bool body_too_large;
    bool chunked;  /* no Content-Length: the body's end is not announced */
    bool refused;  /* an answer was queued before the whole body came: drop the rest, then close */
    bool early;    /* early_fail holds the answer; the body is dropped as it comes */
    bool answered; /* complete and being handled: the deadline no longer applies */
    bool on_admin; /* came to the admin listener (else the device listener) */
    fsa__server_fail_t early_fail;
    uint64_t seen;                            /* body bytes received, kept or dropped */
    unsigned char addr[FSA__SERVER_ADDR_KEY]; /* the client's address key (on_headers) */
    size_t held; /* body bytes this request holds against the budgets (its buffer's capacity) */
    fsa_mono_t first_line; /* when the request line came (the request's deadline counts from it) */
} request_t;

static void budget_release(request_t *req, size_t n);

static int64_t now_ms(const fsa_server_t *srv)
{
    return srv->port.wall_now(srv->port.ctx).ms;
}

static void server_log(void *ctx, fsa_log_level_t level, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "fieldsync-server: %s: %s\n", fsa_log_level_str(level), msg);
}

/* ---- the log: rate-limited warnings, escaped strings ---- */

/*
 * True when one more warning may be logged now: at most FSA_LIMIT_SERVER_WARN_PER_S a second,
 * so that a client breaking connections on purpose cannot flood the log. The first warning after
 * a suppressed stretch says how many were dropped (*suppressed).
 */
static bool warn_allowed(fsa_server_t *srv, unsigned long long *suppressed)
{
    *suppressed = 0;
    if (srv->log_lock == NULL)
        return true;
    int64_t now = now_ms(srv);
    bool ok;
    srv->port.mutex_lock(srv->port.ctx, srv->log_lock);
    if (now - srv->log_window_ms >= 1000 || now < srv->log_window_ms) {
        srv->log_window_ms = now;
        srv->log_in_window = 0;
    }
    ok = srv->log_in_window < FSA_LIMIT_SERVER_WARN_PER_S;
    if (ok) {
        srv->log_in_window++;
        *suppressed = srv->log_suppressed;
        srv->log_suppressed = 0;
    } else {
        srv->log_suppressed++;
    }
    srv->port.mutex_unlock(srv->port.ctx, srv->log_lock);
    return ok;
}

/* Logs a warning line unless the rate limit holds it back. */
static void warn_limited(fsa_server_t *srv, const char *fmt, ...) FSA_PRINTF(2, 3);

static void warn_limited(fsa_server_t *srv, const char *fmt, ...)
{
    unsigned long long suppressed = 0;
    if (!warn_allowed(srv, &suppressed))
        return;
    char line[FSA_LIMIT_LOG_LINE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (suppressed > 0)
        fsa_log(&srv->port, FSA_LOG_WARN, "%s (%llu warnings suppressed before this one)", line,
                suppressed);
    else
        fsa_log(&srv->port, FSA_LOG_WARN, "%s", line);
}

/* Copies s (a string a client chose) into out for a log line: printable ASCII as is, everything
 * else (control bytes, quotes, backslashes, bytes over 0x7e) as \xHH, cut to fit. */
static const char *log_escape(const char *s, char *out, size_t cap)
{
    static const char hexd[] = "0123456789abcdef";
    size_t o = 0;
    for (; s != NULL && *s != '\0' && o + 5 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hexd[ch >> 4];
            out[o++] = hexd[ch & 15];
        }
    }
    out[o] = '\0';
    return out;
}

/* ---- the fault generator: splitmix64 over a shared counter, so draws are seeded and cheap ---- */

static double fault_draw(fsa_server_t *srv)
{
    uint64_t x = atomic_fetch_add_explicit(&srv->fault_counter, 1, memory_order_relaxed);
    uint64_t z = srv->cfg.faults.seed + (x + 1) * UINT64_C(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static bool fault_hit(fsa_server_t *srv, double rate)
{
    return rate > 0 && fault_draw(srv) < rate;
}

/* ---- responses ---- */

static void free_text(void *p)
{
    fsa_codec_free(p);
}

static void count_status(fsa_server_t *srv, unsigned http)
{
    if (http < 300)
        bump(&srv->stats.http2xx);
    else if (http < 500)
        bump(&srv->stats.http4xx);
    else
        bump(&srv->stats.http5xx);
}

/* A request header's value, NULL when absent. */
static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* Compresses text with gzip into a new buffer; false (nothing allocated) when that fails or does
 * not make it smaller. At zlib's default level: the server does not measure each device's link
 * as the agent's transport does, and the answers go to devices on any link, cellular included. */
static bool gzip_text(const char *text, size_t len, char **out, size_t *out_len)
{
    unsigned char *gz = NULL;
    size_t n = 0;
    if (fsa_gzip_compress(text, len, FSA_GZIP_LEVEL_DEFAULT, &gz, &n) != FSA_OK)
        return false;
    if (n >= len) {
        fsa_free(gz);
        return false;
    }
    *out = (char *)gz;
    *out_len = n;
    return true;
}

/* Answers of at least this size are gzip-compressed for a client that accepts it. */
#define GZIP_MIN_BYTES 1024

/* Queues text (malloc'ed, taken over) as a JSON answer, gzip-compressed when the client accepts it
 * and it is worth it. */
static enum MHD_Result respond(fsa_server_t *srv, struct MHD_Connection *c, unsigned http,
                               char *text, size_t len, const char *retry_after)
{
    struct MHD_Response *r;
    bool gzipped = false;
    char *gz = NULL;
    size_t gz_len = 0;
    if (text != NULL && len >= GZIP_MIN_BYTES &&
        fsa__server_accepts_gzip(header(c, "Accept-Encoding")) &&
        gzip_text(text, len, &gz, &gz_len)) {
        fsa_codec_free(text);
        text = gz;
        len = gz_len;
        gzipped = true;
    }
    static const char fallback[] =
        "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
    if (text == NULL) {
        http = MHD_HTTP_INTERNAL_SERVER_ERROR;
        r = MHD_create_response_from_buffer(sizeof fallback - 1, (void *)(uintptr_t)fallback,
                                            MHD_RESPMEM_PERSISTENT);
    } else {
        r = MHD_create_response_from_buffer_with_free_callback(len, text, free_text);
        if (r == NULL)
            fsa_codec_free(text);
    }
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (gzipped)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
    if (retry_after != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
    enum MHD_Result ret = MHD_queue_response(c, http, r);
    MHD_destroy_response(r);
    count_status(srv, http);
    return ret;
}

/* An error body (code, message) with its status, and Retry-After when retry_after is not NULL. */
static enum MHD_Result respond_error_after(fsa_server_t *srv, struct MHD_Connection *c,
                                           unsigned http, const char *code, const char *message,
                                           const char *retry_after)
{
    char *text = NULL;
    size_t len = 0;
    if (fsa_codec_encode_error(code, message, now_ms(srv), &text, &len) != FSA_OK)
        text = NULL;
    return respond(srv, c, http, text, len, retry_after);
}

static enum MHD_Result respond_error(fsa_server_t *srv, struct MHD_Connection *c, unsigned http,
                                     const char *code, const char *message)
{
    return respond_error_after(srv, c, http, code, message, NULL);
}

/* The answer to a store call that failed with st: the database gave up for now (FSA_EBUSY: too
 * many connections, a lock timeout, a deadlock that outlived its retries) is 503 overloaded with
 * Retry-After, which a device backs off on (PROTOCOL.md section 3); anything else 500. */
static enum MHD_Result respond_store_error(fsa_server_t *srv, struct MHD_Connection *c,
                                           fsa_status_t st, const char *message)
{
    return st == FSA_EBUSY ? respond_error_after(srv, c, 503, "overloaded", message, "1")
                           : respond_error(srv, c, 500, "internal", message);
}

/* ---- secret files ---- */

/*
 * Reads a whole file of at most max bytes into a malloc'ed, NUL-terminated buffer. When secret,
 * refuses a file that group or others may read or write.
 */
static fsa_status_t read_file(const char *what, const char *path, size_t max, bool secret,
                              char **out, size_t *out_len, char *err, size_t errlen)
{
    /* The port's reader: a regular file, and for a secret no symlink (O_NOFOLLOW), mode 0600 or
     * stricter and owned by this user, as the agent reads its own secret. */
    char why[400];
    fsa_status_t st = fsa_file_read(path, max, secret, out, out_len, why, sizeof why);
    if (st != FSA_OK)
        snprintf(err, errlen, "%s the %s: %s",
                 st == FSA_ENOTFOUND || st == FSA_EIO ? "cannot read" : "refusing", what, why);
    return st;
}

/* Moves a device's scope from the decoded file into the server's device (the lists stay in one
 * allocation each, now owned by the device). */
static fsa_status_t take_scope(device_t *dev, fsa_device_entry_t *from)
{
    fsa_store_scope_t *sc = fsa_calloc(1, sizeof *sc);
    if (sc == NULL)
        return FSA_ENOMEM;
    fsa_device_scope_t *cs = from->scope;
    sc->sites = (const char(*)[FSA_ID_BYTES])cs->sites;
    sc->nsites = cs->nsites;
    sc->people = (const char(*)[FSA_ID_BYTES])cs->people;
    sc->npeople = cs->npeople;
    cs->sites = NULL;
    cs->people = NULL;
    dev->scope = sc;
    return fsa_store_scope_prepare(sc);
}

static void scope_free(fsa_store_scope_t *sc)
{
    if (sc == NULL)
        return;
    fsa_store_scope_release(sc);
    fsa_free((void *)(uintptr_t)sc->sites);
    fsa_free((void *)(uintptr_t)sc->people);
    fsa_free(sc);
}

static fsa_status_t load_devices(fsa_server_t *srv, char *err, size_t errlen)
{
    fsa_device_entry_t *devs = NULL;
    size_t n = 0;
    fsa_status_t st = fsa_devices_load(srv->cfg.devices_file, &devs, &n, err, errlen);
    if (st != FSA_OK)
        return st;
    srv->devices = fsa_calloc(n, sizeof *srv->devices);
    if (srv->devices == NULL) {
        fsa_devices_free(devs, n);
        snprintf(err, errlen, "out of memory loading the devices");
        return FSA_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        /* Already sorted by id and checked by the codec. */
        memcpy(srv->devices[i].id, devs[i].id, sizeof devs[i].id);
        st = fsa_signer_key_parse(devs[i].secret_hex, strlen(devs[i].secret_hex),
                                  &srv->devices[i].key);
        if (st == FSA_OK && devs[i].scope != NULL)
            st = take_scope(&srv->devices[i], &devs[i]);
        if (st != FSA_OK)
            break;
    }
    srv->ndevices = n;
    fsa_devices_free(devs, n);
    if (st != FSA_OK)
        snprintf(err, errlen, "the devices file %s has a bad secret", srv->cfg.devices_file);
    return st;
}

/*
 * A token that could be 128 random bits: at least FSA_LIMIT_ADMIN_TOKEN_MIN_CHARS characters
 * (32 hex digits carry 128 bits), no whitespace inside, and not an obvious pattern: at least 8
 * distinct characters and no character making up more than a quarter of it. Randomness cannot be
 * proven from one sample; this refuses the guessable ones ("aaaa...", "test-test-test-...").
 */
static bool admin_token_strong(const char *t, size_t len)
{
    if (len < FSA_LIMIT_ADMIN_TOKEN_MIN_CHARS)
        return false;
    unsigned counts[256] = {0};
    unsigned distinct = 0, most = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)t[i];
        if (ch <= 0x20 || ch >= 0x7f)
            return false;
        if (counts[ch]++ == 0)
            distinct++;
        if (counts[ch] > most)
            most = counts[ch];
    }
    return distinct >= 8 && (size_t)most * 4 <= len;
}

static fsa_status_t load_admin_token(fsa_server_t *srv, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    fsa_status_t st = read_file("admin token file", srv->cfg.admin_token_file, TOKEN_MAX, true,
                                &text, &len, err, errlen);
    if (st != FSA_OK)
        return st;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ' ||
                       text[len - 1] == '\t'))
        len--;
    if (!admin_token_strong(text, len)) {
        snprintf(err, errlen,
                 "the admin token in %s is weak: use at least %d random characters, e.g. "
                 "'openssl rand -hex 16' (128 bits)",
                 srv->cfg.admin_token_file, FSA_LIMIT_ADMIN_TOKEN_MIN_CHARS);
        st = FSA_EINVAL;
    } else {
        char hex[FSA_SIGNER_HEX_BYTES];
        st = fsa_signer_sha256_hex(text, len, hex);
        for (size_t i = 0; st == FSA_OK && i < 32; i++) {
            unsigned v = 0;
            /* hex is our own SHA-256 output: two hex digits always convert. */
            sscanf(hex + 2 * i, "%2x", &v); // NOLINT(cert-err33-c,cert-err34-c)
            srv->admin_hash[i] = (unsigned char)v;
        }
        fsa_signer_wipe(hex, sizeof hex);
        srv->admin_enabled = st == FSA_OK;
        if (st != FSA_OK)
            snprintf(err, errlen, "cannot hash the admin token");
    }
    fsa_signer_wipe(text, len);
    fsa_free(text);
    return st;
}

/* ---- nonces ---- */

/* ---- authentication (PROTOCOL.md section 5) ---- */

typedef fsa__server_fail_t auth_fail_t;

/* ---- the per-device quota: a token bucket per device ---- */

/*
 * Takes one request from the device's bucket (take) or only looks whether one is there. The
 * bucket refills at FSA_LIMIT_DEVICE_REQ_PER_S up to FSA_LIMIT_DEVICE_REQ_BURST. Only an
 * authenticated request takes from it, so nobody else can spend a device's quota; a device over
 * it gets 429 and every other device is served as before.
 */
static bool quota_ok(fsa_server_t *srv, const device_t *d, bool take)
{
    if (srv->quota == NULL)
        return true;
    quota_t *q = &srv->quota[d - srv->devices];
    int64_t now = now_ms(srv);
    srv->port.mutex_lock(srv->port.ctx, srv->quota_lock);
    if (q->last_ms == 0 || now < q->last_ms) {
        q->tokens = srv->quota_burst;
    } else {
        q->tokens += (double)(now - q->last_ms) * srv->quota_rate / 1000.0;
        if (q->tokens > srv->quota_burst)
            q->tokens = srv->quota_burst;
    }
    q->last_ms = now;
    bool ok = q->tokens >= 1.0;
    if (ok && take)
        q->tokens -= 1.0;
    srv->port.mutex_unlock(srv->port.ctx, srv->quota_lock);
    return ok;
}

/* Gives back the request quota_ok took for a request that turned out not to be the device's own
 * (a replay): nobody else spends a device's quota. */
static void quota_refund(fsa_server_t *srv, const device_t *d)
{
    if (srv->quota == NULL)
        return;
    quota_t *q = &srv->quota[d - srv->devices];
    srv->port.mutex_lock(srv->port.ctx, srv->quota_lock);
    q->tokens = q->tokens + 1.0 > srv->quota_burst ? srv->quota_burst : q->tokens + 1.0;
    srv->port.mutex_unlock(srv->port.ctx, srv->quota_lock);
}

/* A verdict of request.c's (counted when it refuses), then the device's quota (take: spend one
 * request, else only look). False with *fail the answer when either refuses. */
static bool auth_passed(fsa_server_t *srv, const fsa__server_auth_t *a, bool take,
                        auth_fail_t *fail)
{
    if (a->verdict != FSA__AUTH_OK) {
        *fail = a->fail;
        bump(a->verdict == FSA__AUTH_BAD_SIGNATURE ? &srv->stats.bad_signature
             : a->verdict == FSA__AUTH_CLOCK_SKEW  ? &srv->stats.clock_skew
                                                   : &srv->stats.unknown_device);
        return false;
    }
    if (!quota_ok(srv, a->dev, take)) {
        bump(&srv->stats.quota_429);
        *fail = (auth_fail_t){429, "overloaded", "this device is over its request quota"};
        return false;
    }
    return true;
}

/*
 * The checks of a push or a pull (rt) that need no body, run before any of it is read: the pure
 * ones (fsa__server_precheck: a known device, the signature headers' shape, the clock window), then
 * the device's quota and, for a push, whether its nonce was seen. The same answers as after the
 * body (PROTOCOL.md section 5), so a client sees no difference but the cost.
 */
static bool precheck(fsa_server_t *srv, struct MHD_Connection *c, const fsa__server_route_t *rt,
                     auth_fail_t *fail)
{
    fsa__server_auth_in_t in = {
        .device_id = header(c, "X-Device-Id"),
        .timestamp = header(c, "X-Timestamp"),
        .nonce = header(c, "X-Nonce"),
        .signature = header(c, "X-Signature"),
        .now_ms = now_ms(srv),
    };
    fsa__server_auth_t a;
    fsa__server_precheck(srv->devices, srv->ndevices, &in, &a);
    if (!auth_passed(srv, &a, false, fail))
        return false;
    /* A nonce seen already for this device (a replay of a signed request) is refused before its
     * body is read. Only a look: the nonce is recorded after the signature verifies, so a client
     * without the secret cannot spend a device's nonces. When the look fails, the full check
     * after the body decides. A pull has no body: its nonce is checked once, after. */
    char canon[FSA_LIMIT_NONCE_HEX + 1];
    bool seen = false;
    if (rt->push) {
        snprintf(canon, sizeof canon, "%016" PRIx64 "%016" PRIx64, a.nonce_a, a.nonce_b);
        if (fsa_store_nonce_seen(srv->store, a.dev->id, canon, in.now_ms, &seen) == FSA_OK &&
            seen) {
            bump(&srv->stats.replay);
            *fail = (auth_fail_t){401, "replay", "this nonce was seen before"};
            return false;
        }
    }
    return true;
}

/* Counts the headers that frame a body (request smuggling check). */
typedef struct framing {
    unsigned content_length, transfer_encoding;
} framing_t;

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    (void)value;
    framing_t *f = cls;
    if (strcasecmp(key, "Content-Length") == 0)
        f->content_length++;
    else if (strcasecmp(key, "Transfer-Encoding") == 0)
        f->transfer_encoding++;
    return MHD_YES;
}

/* Authenticates a device request; on success *dev is the signer. */
static bool authenticate(fsa_server_t *srv, struct MHD_Connection *c, const request_t *req,
                         const char *method, const char *path_device, const device_t **dev,
                         auth_fail_t *fail)
{
    fsa__server_auth_in_t in = {
        .method = method,
        .uri = req->uri,
        .device_id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Device-Id"),
        .timestamp = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Timestamp"),
        .nonce = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Nonce"),
        .signature = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Signature"),
        .body = req->body.p,
        .len = req->body.len,
        .path_device = path_device,
        .now_ms = now_ms(srv),
    };
    fsa__server_auth_t a;
    fsa__server_auth_check(srv->devices, srv->ndevices, &in, &a);
    *dev = NULL;
    /* The quota before the nonce: a device's flood neither fills the replay table nor costs a
     * database write. */
    if (!auth_passed(srv, &a, true, fail))
        return false;
    const device_t *d = a.dev;
    /* The nonce in one spelling (its 16 bytes as lowercase hex), recorded in the database so that
     * every server process on it refuses a replay; kept until its timestamp leaves the window. */
    char nonce[FSA_LIMIT_NONCE_HEX + 1];
    snprintf(nonce, sizeof nonce, "%016" PRIx64 "%016" PRIx64, a.nonce_a, a.nonce_b);
    bool replay = false;
    fsa_status_t st = fsa_store_nonce(srv->store, d->id, nonce, a.ts + FSA_LIMIT_SKEW_MS + 1000,
                                      in.now_ms, &replay);
    if (st != FSA_OK) {
        *fail = (auth_fail_t){503, "overloaded", "the server could not record the nonce"};
        fsa_log(&srv->port, FSA_LOG_WARN, "cannot record a nonce: %s; answering 503",
                fsa_status_str(st));
        return false;
    }
    if (replay) {
        /* Whoever sent it (a captured request, or a client's resend on a dead connection), the
         * device did not: its quota is given back. */
        quota_refund(srv, d);
        *fail = (auth_fail_t){401, "replay", "this nonce was seen before"};
        bump(&srv->stats.replay);
        return false;
    }
    *dev = d;
    return true;
}

static enum MHD_Result respond_auth_fail(fsa_server_t *srv, struct MHD_Connection *c,
                                         const auth_fail_t *f)
{
    return respond_error_after(srv, c, f->http, f->code, f->message,
                               f->http == 503 || f->http == 429 ? "1" : NULL);
}

/* ---- bodies ---- */

/* Answers a refused body, counting it. */
static enum MHD_Result respond_body_fail(fsa_server_t *srv, struct MHD_Connection *c,
                                         const fsa__server_fail_t *f)
{
    if (f->http == 413)
        bump(&srv->stats.too_large);
    else if (f->http == 400)
        bump(&srv->stats.malformed);
    return respond_error(srv, c, f->http, f->code, f->message);
}

static enum MHD_Result respond_codec_error(fsa_server_t *srv, struct MHD_Connection *c,
                                           fsa_status_t st, const fsa_model_err_t *e)
{
    if (st == FSA_ETOOLARGE) {
        bump(&srv->stats.too_large);
        return respond_error(srv, c, 413, "too_large", e->message);
    }
    if (st == FSA_EINVAL) {
        bump(&srv->stats.malformed);
        return respond_error(srv, c, 400, "malformed", e->message);
    }
    return respond_error(srv, c, 500, "internal", "out of memory");
}

/* Applies a decoded batch (within the device's scope, NULL: none) and answers with its results. */
static enum MHD_Result apply_and_answer(fsa_server_t *srv, struct MHD_Connection *c,
                                        const char *device, bool by_server,
                                        const fsa_store_scope_t *scope,
                                        const fsa_codec_push_t *push)
{
    fsa_codec_result_t *results = fsa_calloc(push->count > 0 ? push->count : 1, sizeof *results);
    if (results == NULL)
        return respond_error(srv, c, 500, "internal", "out of memory");
    char err[256];
    fsa_status_t st = fsa_store_apply_scoped(srv->store, device, by_server, scope, push->ops,
                                             push->count, now_ms(srv), results, err, sizeof err);
    enum MHD_Result ret;
    if (st == FSA_ETOOLARGE) {
        /* PROTOCOL.md section 3: a 413 makes the agent send fewer ops at a time. */
        bump(&srv->stats.too_large);
        ret = respond_error(srv, c, 413, "too_large", err);
    } else if (st != FSA_OK) {
        char esc[4 * FSA_ID_BYTES + 8];
        fsa_log(&srv->port, FSA_LOG_ERROR, "batch \"%s\" of %s not applied: %s",
                log_escape(push->batch_id, esc, sizeof esc), device, err);
        ret = respond_store_error(srv, c, st, "the server could not store the batch");
    } else {
        for (size_t i = 0; i < push->count; i++)
            bump(&srv->stats.ops[results[i].status]);
        char *text = NULL;
        size_t len = 0;
        if (fsa_codec_encode_results(results, push->count, now_ms(srv), &text, &len) != FSA_OK)
            text = NULL;
        ret = respond(srv, c, 200, text, len, NULL);
    }
    fsa_codec_results_free(results, push->count);
    return ret;
}

/* ---- /v1/ ---- */

static enum MHD_Result handle_push(fsa_server_t *srv, struct MHD_Connection *c, request_t *req,
                                   const device_t *dev)
{
    const char *enc = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Encoding");
    fsa_codec_push_t push;
    fsa_model_err_t cerr;
    fsa__server_fail_t fail;
    if (fsa__server_push_body(enc, req->body.p, req->body.len, &push, &cerr, &fail) != FSA_OK)
        return respond_body_fail(srv, c, &fail);
    enum MHD_Result ret = apply_and_answer(srv, c, dev->id, false, dev->scope, &push);
    fsa_codec_push_free(&push);
    return ret;
}

static enum MHD_Result handle_pull(fsa_server_t *srv, struct MHD_Connection *c, const char *query,
                                   const device_t *dev)
{
    int64_t since = 0;
    int64_t limit = FSA__SERVER_PULL_DEFAULT_LIMIT;
    if (!fsa__server_pull_query(query, &since, &limit)) {
        bump(&srv->stats.malformed);
        return respond_error(srv, c, 400, "malformed",
                             "since must be a cursor from this server, limit 1..1000");
    }
    fsa_codec_pull_t pull;
    int64_t next = 0;
    fsa_status_t st = fsa_store_pull_scoped(srv->store, dev->id, dev->scope, since, (unsigned)limit,
                                            &pull, &next);
    if (st != FSA_OK) {
        fsa_log(&srv->port, FSA_LOG_ERROR, "pull for %s failed: %s", dev->id, fsa_status_str(st));
        return respond_store_error(srv, c, st, "the server could not read its store");
    }
    snprintf(pull.cursor, sizeof pull.cursor, FSA__SERVER_CURSOR_PREFIX "%" PRId64, next);
    pull.server_time_ms = now_ms(srv);
    char *text = NULL;
    size_t len = 0;
    if (fsa_codec_encode_pull(&pull, &text, &len) != FSA_OK)
        text = NULL;
    fsa_codec_pull_free(&pull);
    return respond(srv, c, 200, text, len, NULL);
}

/* ---- admin ---- */

static bool admin_authorized(fsa_server_t *srv, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    static const char bearer[] = "Bearer ";
    if (h == NULL || strncmp(h, bearer, sizeof bearer - 1) != 0)
        return false;
    const char *tok = h + sizeof bearer - 1;
    char hex[FSA_SIGNER_HEX_BYTES];
    unsigned char got[32];
    if (fsa_signer_sha256_hex(tok, strlen(tok), hex) != FSA_OK)
        return false;
    for (size_t i = 0; i < 32; i++) {
        unsigned v = 0;
        sscanf(hex + 2 * i, "%2x", &v); // NOLINT(cert-err33-c,cert-err34-c): see load_admin_token
        got[i] = (unsigned char)v;
    }
    return fsa_signer_equal(got, srv->admin_hash, sizeof got);
}

static enum MHD_Result respond_entity(fsa_server_t *srv, struct MHD_Connection *c, unsigned http,
                                      fsa_type_t type, const char *id)
{
    fsa_codec_change_t e;
    fsa_status_t st = fsa_store_get(srv->store, type, id, &e);
    if (st == FSA_ENOTFOUND)
        return respond_error(srv, c, 404, "not_found", "no such entity");
    if (st != FSA_OK)
        return respond_store_error(srv, c, st, "the server could not read its store");
    char *text = NULL;
    size_t len = 0;
    if (fsa_codec_encode_entity(&e, now_ms(srv), &text, &len) != FSA_OK)
        text = NULL;
    fsa_codec_change_clear(&e);
    return respond(srv, c, http, text, len, NULL);
}

/* Applies one server op (seed, autoclose) and answers with the entity or the op's error. */
static enum MHD_Result admin_one_op(fsa_server_t *srv, struct MHD_Connection *c, fsa_codec_op_t *op,
                                    unsigned ok_http)
{
    fsa_codec_result_t r;
    char err[256];
    if (fsa_uuid4(&srv->port, op->op.op_id) != FSA_OK)
        return respond_error(srv, c, 500, "internal", "no randomness for an op id");
    op->op.at_ms = now_ms(srv);
    fsa_status_t st =
        fsa_store_apply(srv->store, "admin", true, op, 1, now_ms(srv), &r, err, sizeof err);
    if (st != FSA_OK) {
        fsa_log(&srv->port, FSA_LOG_ERROR, "admin op not applied: %s", err);
        return respond_store_error(srv, c, st, "the server could not store the op");
    }
    bump(&srv->stats.ops[r.status]);
    enum MHD_Result ret;
    if (r.status == FSA_RESULT_APPLIED)
        ret = respond_entity(srv, c, ok_http, op->op.type, op->op.id);
    else if (r.status == FSA_RESULT_CONFLICT)
        ret = respond_error(srv, c, 409, "conflict", r.message);
    else
        ret = respond_error(srv, c, 422, r.code, r.message);
    fsa_codec_result_clear(&r);
    return ret;
}

static enum MHD_Result admin_seed(fsa_server_t *srv, struct MHD_Connection *c, request_t *req)
{
    fsa_codec_change_t e;
    fsa_model_err_t cerr;
    fsa_status_t st = fsa_codec_decode_entity(req->body.p, req->body.len, &e, &cerr);
    if (st != FSA_OK)
        return respond_codec_error(srv, c, st, &cerr);
    fsa_codec_op_t op;
    memset(&op, 0, sizeof op);
    op.op.kind = FSA_OP_CREATE;
    op.op.type = e.type;
    memcpy(op.op.id, e.id, sizeof e.id);
    op.op.json = e.fields; /* taken over */
    e.fields = NULL;
    enum MHD_Result ret = admin_one_op(srv, c, &op, 201);
    fsa_op_clear(&op.op);
    return ret;
}

static enum MHD_Result admin_autoclose(fsa_server_t *srv, struct MHD_Connection *c, const char *id)
{
    fsa_codec_change_t e;
    fsa_status_t st = fsa_store_get(srv->store, FSA_TYPE_JOBNEED, id, &e);
    if (st == FSA_ENOTFOUND)
        return respond_error(srv, c, 404, "not_found", "no such jobneed");
    if (st != FSA_OK)
        return respond_store_error(srv, c, st, "the server could not read its store");
    fsa_codec_op_t op;
    memset(&op, 0, sizeof op);
    st = fsa_model_get_status(e.fields, FSA_TYPE_JOBNEED, op.op.from);
    fsa_codec_change_clear(&e);
    if (st != FSA_OK)
        return respond_error(srv, c, 500, "internal", "the jobneed has no jobstatus");
    op.op.kind = FSA_OP_TRANSITION;
    op.op.type = FSA_TYPE_JOBNEED;
    size_t idlen = strlen(id);
    if (idlen >= sizeof op.op.id)
        return respond_error(srv, c, 404, "not_found", "no such jobneed");
    memcpy(op.op.id, id, idlen + 1);
    snprintf(op.op.field, sizeof op.op.field, "jobstatus");
    snprintf(op.op.to, sizeof op.op.to, "AUTOCLOSED");
    /* The transition names the status just read: if a device moved the job in between, it is a
     * conflict (409) and the caller may retry, never a blind overwrite. */
    return admin_one_op(srv, c, &op, 200);
}

static enum MHD_Result admin_ops(fsa_server_t *srv, struct MHD_Connection *c, request_t *req)
{
    fsa_codec_push_t push;
    fsa_model_err_t cerr;
    fsa_status_t st = fsa_codec_decode_push(req->body.p, req->body.len, &push, &cerr);
    if (st != FSA_OK)
        return respond_codec_error(srv, c, st, &cerr);
    enum MHD_Result ret = apply_and_answer(srv, c, "admin", true, NULL, &push);
    fsa_codec_push_free(&push);
    return ret;
}

static enum MHD_Result admin_stats(fsa_server_t *srv, struct MHD_Connection *c)
{
    int64_t ents = 0, ops = 0, last = 0;
    fsa_status_t st = fsa_store_counts(srv->store, &ents, &ops, &last);
    if (st != FSA_OK)
        return respond_store_error(srv, c, st, "the server could not read its store");
    stats_t *s = &srv->stats;
    size_t cap = 2048;
    char *text = fsa_malloc(cap);
    if (text == NULL)
        return respond(srv, c, 500, NULL, 0, NULL);
    int64_t now = now_ms(srv);
    int n = snprintf(
        text, cap,
        "{\"requests\":{\"total\":%lld,\"push\":%lld,\"pull\":%lld,\"admin\":%lld,\"other\":%lld},"
        "\"responses\":{\"2xx\":%lld,\"4xx\":%lld,\"5xx\":%lld},"
        "\"ops\":{\"applied\":%lld,\"duplicate\":%lld,\"conflict\":%lld,\"rejected\":%lld},"
        "\"auth_failures\":{\"bad_signature\":%lld,\"unknown_device\":%lld,\"replay\":%lld,"
        "\"clock_skew\":%lld},"
        "\"bad_requests\":{\"malformed\":%lld,\"too_large\":%lld,\"smuggling\":%lld},"
        "\"refused\":{\"device_quota\":%lld,\"body_budget\":%lld,\"addr_body_share\":%lld,"
        "\"admin_unauthorized\":%lld,\"too_slow\":%lld,\"header_deadline\":%lld,"
        "\"before_body\":%lld},"
        "\"faults\":{\"latency\":%lld,\"5xx\":%lld,\"429\":%lld,\"drop\":%lld,\"reset\":%lld},"
        "\"store\":{\"entities\":%" PRId64 ",\"ops\":%" PRId64 ",\"last_change\":%" PRId64
        ",\"ops_expired\":%lld},"
        "\"devices\":%zu,\"uptime_ms\":%" PRId64 ",\"server_time\":%" PRId64 "}",
        get(&s->requests), get(&s->push), get(&s->pull), get(&s->admin), get(&s->other),
        get(&s->http2xx), get(&s->http4xx), get(&s->http5xx), get(&s->ops[0]), get(&s->ops[1]),
        get(&s->ops[2]), get(&s->ops[3]), get(&s->bad_signature), get(&s->unknown_device),
        get(&s->replay), get(&s->clock_skew), get(&s->malformed), get(&s->too_large),
        get(&s->smuggling), get(&s->quota_429), get(&s->budget_503), get(&s->share_503),
        get(&s->admin_unauthorized), get(&s->too_slow), get(&s->header_deadline),
        get(&s->before_body), get(&s->f_latency), get(&s->f_5xx), get(&s->f_429), get(&s->f_drop),
        get(&s->f_reset), ents, ops, last, get(&s->ops_expired), srv->ndevices,
        now - srv->started_ms, now);
    if (n < 0 || (size_t)n >= cap) {
        fsa_free(text);
        return respond_error(srv, c, 500, "internal", "statistics did not fit");
    }
    return respond(srv, c, 200, text, (size_t)n, NULL);
}

/* The admin failures' bucket: refills at FSA_LIMIT_ADMIN_FAILS_PER_S up to
 * FSA_LIMIT_ADMIN_FAILS_BURST; take spends one (a failure), else it only looks. */
static bool admin_guess_ok(fsa_server_t *srv, bool take)
{
    quota_t *q = &srv->admin_fails;
    int64_t now = now_ms(srv);
    srv->port.mutex_lock(srv->port.ctx, srv->admin_lock);
    if (q->last_ms == 0 || now < q->last_ms) {
        q->tokens = FSA_LIMIT_ADMIN_FAILS_BURST;
    } else {
        q->tokens += (double)(now - q->last_ms) * FSA_LIMIT_ADMIN_FAILS_PER_S / 1000.0;
        if (q->tokens > FSA_LIMIT_ADMIN_FAILS_BURST)
            q->tokens = FSA_LIMIT_ADMIN_FAILS_BURST;
    }
    q->last_ms = now;
    bool ok = q->tokens >= 1.0;
    if (take && q->tokens >= 1.0)
        q->tokens -= 1.0;
    srv->port.mutex_unlock(srv->port.ctx, srv->admin_lock);
    return ok;
}

static enum MHD_Result handle_admin(fsa_server_t *srv, struct MHD_Connection *c, request_t *req,
                                    const char *method, const char *path)
{
    bump(&srv->stats.admin);
    if (!srv->admin_enabled)
        return respond_error(srv, c, 404, "not_found",
                             "the admin API is off (start with --admin-token-file)");
    /* Guessing is slowed without holding a worker: once the failures are over their rate,
     * every admin request is answered 429 without its token being compared, until the bucket
     * refills. A guesser gets FSA_LIMIT_ADMIN_FAILS_PER_S tries a second however many
     * connections it opens (the admin may meet a 429 during such an attack, devices never). */
    if (!admin_guess_ok(srv, false)) {
        bump(&srv->stats.admin_unauthorized);
        auth_fail_t f = {429, "overloaded", "too many wrong admin tokens; retry later"};
        return respond_auth_fail(srv, c, &f);
    }
    if (!admin_authorized(srv, c)) {
        /* Counted and logged (rate-limited, never the token). */
        (void)admin_guess_ok(srv, true);
        long long n = atomic_fetch_add(&srv->stats.admin_unauthorized, 1) + 1;
        warn_limited(srv, "admin API: wrong or missing bearer token (%lld refused so far)", n);
        return respond_error(srv, c, 401, "unauthorized", "missing or wrong admin bearer token");
    }
    fsa__server_admin_route_t rt;
    fsa__server_admin_route(path, &rt);
    if (rt.res != FSA__ADMIN_NONE && strcmp(method, rt.method) != 0)
        return respond_error(srv, c, 405, "method_not_allowed",
                             strcmp(rt.method, "GET") == 0 ? "use GET" : "use POST");
    switch (rt.res) {
    case FSA__ADMIN_STATS: return admin_stats(srv, c);
    case FSA__ADMIN_SEED: return admin_seed(srv, c, req);
    case FSA__ADMIN_OPS: return admin_ops(srv, c, req);
    case FSA__ADMIN_ENTITY: return respond_entity(srv, c, 200, rt.type, rt.id);
    case FSA__ADMIN_AUTOCLOSE: return admin_autoclose(srv, c, rt.id);
    case FSA__ADMIN_NONE: break; /* 404 */
    }
    return respond_error(srv, c, 404, "not_found", "no such admin resource");
}

/* ---- routing ---- */

static enum MHD_Result handle_request(fsa_server_t *srv, struct MHD_Connection *c, request_t *req,
                                      const char *method)
{
    fsa__server_route_t rt;
    fsa__server_route(req->uri, &rt);
    /* Each listener serves its own paths: /admin/v1/ only on the admin listener, the device
     * protocol only on the device listener; anything else is an unknown path to either. */
    if (rt.admin && req->on_admin)
        return handle_admin(srv, c, req, method, rt.path);
    if (rt.admin || req->on_admin) {
        bump(&srv->stats.other);
        return respond_error(srv, c, 404, "not_found", "no such resource");
    }
    const char *query = rt.query, *devid = rt.device;
    bool is_push = rt.push, is_pull = rt.pull;
    if (!is_push && !is_pull) {
        bump(&srv->stats.other);
        return respond_error(srv, c, 404, "not_found", "no such resource");
    }
    bump(is_push ? &srv->stats.push : &srv->stats.pull);
    if ((is_push && strcmp(method, "POST") != 0) || (is_pull && strcmp(method, "GET") != 0))
        return respond_error(srv, c, 405, "method_not_allowed",
                             is_push ? "push is POST" : "pull is GET");

    /* Injected overload answers come before any work, so nothing is applied. */
    if (fault_hit(srv, srv->cfg.faults.rate_429)) {
        bump(&srv->stats.f_429);
        char ra[16];
        snprintf(ra, sizeof ra, "%d", srv->cfg.faults.retry_after_s);
        return respond_error_after(srv, c, 429, "overloaded", "injected fault: 429", ra);
    }
    if (fault_hit(srv, srv->cfg.faults.rate_5xx)) {
        bump(&srv->stats.f_5xx);
        return respond_error(srv, c, 500, "internal", "injected fault: 500");
    }

    const device_t *dev = NULL;
    auth_fail_t fail;
    if (!authenticate(srv, c, req, method, devid, &dev, &fail))
        return respond_auth_fail(srv, c, &fail);
    return is_push ? handle_push(srv, c, req, dev) : handle_pull(srv, c, query, dev);
}

/* ---- libmicrohttpd callbacks ---- */

/* Called first for every request with the request target exactly as sent: the signature covers
 * it byte for byte, so it is kept before MHD decodes it. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)c;
    fsa_server_t *srv = cls;
    request_t *req = fsa_calloc(1, sizeof *req);
    if (req == NULL)
        return NULL;
    req->srv = srv;
    req->first_line = srv->port.mono_now(srv->port.ctx);
    size_t n = strlen(uri);
    if (n >= sizeof req->uri)
        req->uri_too_long = true;
    else
        memcpy(req->uri, uri, n + 1);
    atomic_fetch_add(&srv->in_flight, 1);
    bump(&srv->stats.requests);
    return req;
}

/* The same for the admin listener: its requests are marked as its own. */
static void *on_uri_admin(void *cls, const char *uri, struct MHD_Connection *c)
{
    request_t *req = on_uri(cls, uri, c);
    if (req != NULL)
        req->on_admin = true;
    return req;
}

static void conn_arm(fsa_server_t *srv, struct MHD_Connection *c, bool armed, int64_t in_ns);

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    fsa_server_t *srv = cls;
    request_t *req = *con_cls;
    if (req == NULL)
        return;
    /* The connection may carry a next request: its headers must come within the idle timeout
     * (libmicrohttpd's) plus the header deadline. */
    conn_arm(srv, c, true, srv->header_ns + FSA_LIMIT_SERVER_IDLE_S * INT64_C(1000000000));
    fsa_free(req->body.p);
    budget_release(req, req->held);
    fsa_free(req);
    *con_cls = NULL;
    atomic_fetch_sub(&srv->in_flight, 1);
}

typedef enum append { APPEND_OK, APPEND_NOMEM, APPEND_OVER_BUDGET, APPEND_OVER_SHARE } append_t;

/* Gives back n of the body bytes req holds against the server's budget and its address's. */
static void budget_release(request_t *req, size_t n)
{
    fsa_server_t *srv = req->srv;
    if (n == 0)
        return;
    atomic_fetch_sub_explicit(&srv->body_bytes, (long long)n, memory_order_relaxed);
    srv->port.mutex_lock(srv->port.ctx, srv->hold_lock);
    fsa__server_hold_give(&srv->holds, req->addr, (long long)n);
    srv->port.mutex_unlock(srv->port.ctx, srv->hold_lock);
    req->held -= n;
}

/* Reserves n more buffered body bytes for req against the server-wide budget and against its
 * address's share of it: one address (many connections with plausible headers) cannot hold what
 * every device's push needs. APPEND_OK, or which of the two is spent. */
static append_t budget_take(request_t *req, size_t n)
{
    fsa_server_t *srv = req->srv;
    long long before =
        atomic_fetch_add_explicit(&srv->body_bytes, (long long)n, memory_order_relaxed);
    append_t r = APPEND_OVER_BUDGET;
    if (before + (long long)n <= (long long)FSA_LIMIT_SERVER_BODY_BUDGET) {
        srv->port.mutex_lock(srv->port.ctx, srv->hold_lock);
        bool ok = fsa__server_hold_take(&srv->holds, req->addr, (long long)n, srv->addr_share);
        srv->port.mutex_unlock(srv->port.ctx, srv->hold_lock);
        r = ok ? APPEND_OK : APPEND_OVER_SHARE;
    }
    if (r != APPEND_OK) {
        atomic_fetch_sub_explicit(&srv->body_bytes, (long long)n, memory_order_relaxed);
        return r;
    }
    req->held += n;
    return APPEND_OK;
}

static append_t append_body(request_t *req, const char *data, size_t n)
{
    if (req->body_too_large) /* the rest is read and dropped; 413 at the end */
        return APPEND_OK;
    size_t ncap = fsa_buf_grown_cap(&req->body, n, 16384, RAW_BODY_MAX);
    if (ncap == 0) {
        req->body_too_large = true;
        return APPEND_OK;
    }
    size_t old_cap = req->body.cap;
    if (ncap > old_cap) {
        append_t taken = budget_take(req, ncap - old_cap);
        if (taken != APPEND_OK)
            return taken;
        if (fsa_buf_reserve(&req->body, ncap) != FSA_OK) {
            budget_release(req, ncap - old_cap);
            return APPEND_NOMEM;
        }
    }
    /* Fits now: the append cannot fail. */
    return fsa_buf_append(&req->body, data, n, 16384, RAW_BODY_MAX) == FSA_OK ? APPEND_OK
                                                                              : APPEND_NOMEM;
}

/* True (counted, logged) when the request is still incomplete past its deadline, counted from its
 * request line: it is closed without an answer (libmicrohttpd answers only complete requests). */
static bool too_slow(fsa_server_t *srv, const request_t *req)
{
    int64_t deadline_s =
        srv->cfg.request_deadline_s > 0 ? srv->cfg.request_deadline_s : FSA_LIMIT_SERVER_REQUEST_S;
    if (req->answered || fsa_mono_diff_ns(srv->port.mono_now(srv->port.ctx), req->first_line) <=
                             deadline_s * INT64_C(1000000000))
        return false;
    bump(&srv->stats.too_slow);
    warn_limited(srv, "closed a request still incomplete after %" PRId64 " s", deadline_s);
    return true;
}

/*
 * The first call for a request: its headers are complete. Refuses what can be refused on them
 * (a target too long, request smuggling, a body over the limit, and for /v1/ the checks of
 * precheck), each before any of the body is buffered, so that a client without a known device
 * or a well-formed signed request costs no memory.
 */
static enum MHD_Result on_headers(fsa_server_t *srv, struct MHD_Connection *c, request_t *req,
                                  bool is_v1)
{
    req->started = true;
    conn_arm(srv, c, false, 0); /* the headers are complete */
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    fsa_socket_client_key(ci != NULL ? ci->client_addr : NULL, req->addr);
    if (is_v1 && fault_hit(srv, srv->cfg.faults.rate_reset)) {
        bump(&srv->stats.f_reset);
        return MHD_NO; /* close before processing */
    }
    if (req->uri_too_long)
        return respond_error(srv, c, 414, "malformed", "the request target is too long");
    /* Request smuggling: two Content-Length headers, or one with Transfer-Encoding, are refused
     * and the connection closed, whatever the values. */
    framing_t fr = {0, 0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &fr);
    if (!fsa__server_framing_ok(fr.content_length, fr.transfer_encoding)) {
        bump(&srv->stats.smuggling);
        bump(&srv->stats.malformed);
        req->refused = true;
        return respond_error(srv, c, 400, "malformed",
                             "conflicting Content-Length and Transfer-Encoding headers");
    }
    const char *cl = header(c, "Content-Length");
    const char *expect = header(c, "Expect");
    req->chunked = cl == NULL;
    fsa__server_body_plan_t plan = fsa__server_body_plan(cl, expect);
    if (plan == FSA__BODY_REFUSE) {
        bump(&srv->stats.too_large);
        return respond_error(srv, c, 413, "too_large", "the body is over 1 MiB");
    }
    req->body_too_large = plan == FSA__BODY_DROP;
    /* On the device listener only a push or a pull is served: anything else is 404 whatever it
     * sends, so its body is dropped as it comes, never held against the budget that the devices'
     * pushes share (64 such uploads from one address held all of it, and every push got 503).
     * A push or a pull gets the checks that need no body (precheck). A refusal on the headers
     * comes at once to a client waiting for "100 Continue", else after its body was read and
     * dropped (PROTOCOL.md section 3: a refusal reaches a client still sending). */
    fsa__server_route_t rt;
    fsa__server_route(req->uri, &rt);
    bool refuse = false;
    if (!req->on_admin && !req->body_too_large && !rt.push && !rt.pull) {
        bump(&srv->stats.other);
        req->early_fail = (auth_fail_t){404, "not_found", "no such resource"};
        refuse = true;
    } else if (is_v1 && !req->body_too_large && !precheck(srv, c, &rt, &req->early_fail)) {
        bump(&srv->stats.before_body);
        refuse = true;
    }
    if (refuse) {
        if (fsa__server_expects_continue(expect)) {
            req->refused = true;
            return respond_auth_fail(srv, c, &req->early_fail);
        }
        req->early = true;
    }
    if (is_v1)
        req->drop = fault_hit(srv, srv->cfg.faults.rate_drop);
    return MHD_YES;
}

/* A piece of the body (n bytes): kept, or dropped when the answer is known already. */
static enum MHD_Result on_body(fsa_server_t *srv, request_t *req, const char *data, size_t n)
{
    req->seen += n;
    if (req->refused) {
        /* An answer is queued; a client still sending gets the connection closed once it has
         * sent CHUNKED_DISCARD_MAX more. */
        return req->seen > CHUNKED_DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (req->early) {
        /* Dropped: the answer is known. A body over the bound is cut (connection closed). */
        return req->seen > (req->chunked ? CHUNKED_DISCARD_MAX : DISCARD_MAX) ? MHD_NO : MHD_YES;
    }
    append_t ar = append_body(req, data, n);
    if (ar == APPEND_NOMEM)
        return MHD_NO;
    if (ar == APPEND_OVER_BUDGET || ar == APPEND_OVER_SHARE) {
        /* All requests together hold FSA_LIMIT_SERVER_BODY_BUDGET already, or this client's
         * address its share of it: this body is dropped as it comes (its buffer freed now) and
         * answered 503 with Retry-After at its end, so the client retries later instead of the
         * server holding it. libmicrohttpd answers only once the request is complete. */
        bool share = ar == APPEND_OVER_SHARE;
        bump(share ? &srv->stats.share_503 : &srv->stats.budget_503);
        fsa_free(req->body.p);
        budget_release(req, req->held);
        req->body.p = NULL;
        req->body.len = req->body.cap = 0;
        req->early = true;
        req->early_fail =
            (fsa__server_fail_t){503, "overloaded",
                                 share ? "this address is sending too many bodies at once; retry"
                                       : "the server is holding too many bodies; retry"};
        return MHD_YES;
    }
    if (req->chunked && req->seen > CHUNKED_DISCARD_MAX) {
        /* A chunked body that never ends: libmicrohttpd can answer only a complete request, so
         * past the body limit and a small discard bound the connection is closed (a chunked body
         * that ends before that bound gets its 413). */
        bump(&srv->stats.too_large);
        warn_limited(srv, "closed a connection sending a chunked body over %llu bytes",
                     (unsigned long long)CHUNKED_DISCARD_MAX);
        return MHD_NO;
    }
    return MHD_YES;
}

/* The last call for a request: the whole body came. */
static enum MHD_Result on_complete(fsa_server_t *srv, struct MHD_Connection *c, request_t *req,
                                   const char *method, bool is_v1)
{
    if (req->refused)
        return MHD_YES; /* answered already */
    if (req->early)
        return respond_auth_fail(srv, c, &req->early_fail);
    if (req->body_too_large) {
        bump(&srv->stats.too_large);
        return respond_error(srv, c, 413, "too_large", "the body is over 1 MiB");
    }
    if (is_v1 && srv->cfg.faults.latency_ms > 0) {
        bump(&srv->stats.f_latency);
        srv->port.sleep(srv->port.ctx, srv->cfg.faults.latency_ms * FSA_NS_PER_MS);
    }
    req->answered = true;
    enum MHD_Result ret = handle_request(srv, c, req, method);
    if (req->drop) {
        bump(&srv->stats.f_drop);
        return MHD_NO; /* processed and committed; the answer is lost */
    }
    return ret;
}

/* libmicrohttpd's request callback: first with the headers, then with each piece of the body,
 * last with none once the body is complete. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)url;
    (void)version;
    fsa_server_t *srv = cls;
    request_t *req = *con_cls;
    if (req == NULL)
        return MHD_NO; /* on_uri could not allocate: close the connection */
    bool is_v1 = !req->on_admin && strncmp(req->uri, "/v1/", 4) == 0;
    if (too_slow(srv, req))
        return MHD_NO;
    if (!req->started)
        return on_headers(srv, c, req, is_v1);
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return on_body(srv, req, upload_data, n);
    }
    return on_complete(srv, c, req, method, is_v1);
}

/* MHD's format, checked by the compiler as a printf format passed on. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) FSA_PRINTF(2, 0);

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    fsa_server_t *srv = cls;
    char line[FSA_LIMIT_LOG_LINE];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    /* MHD words its lines itself, but a client provokes them (a broken connection each): they
     * are rate-limited like every warning a client can cause. */
    warn_limited(srv, "libmicrohttpd: %s", line);
}

/* ---- retention of op outcomes ---- */

/* Rows removed per transaction: small enough that a push waits for one at most a moment. */
#define SWEEP_CHUNK 500u

static int64_t sweep_interval_ms(int64_t retention_ms)
{
    int64_t v = retention_ms / 4;
    return v < 50 ? 50 : v > 60000 ? 60000 : v;
}

/*
 * The op log's sweeper: every interval, removes the outcomes older than the retention period, in
 * chunks of SWEEP_CHUNK rows each in its own short transaction, so that pushes interleave with
 * it and a large backlog never blocks them. Every server process on a database sweeps; a row is
 * removed once whoever gets to it first.
 */
static void *sweeper_main(void *arg)
{
    fsa_server_t *srv = arg;
    const fsa_port_t *port = &srv->port;
    int64_t interval = sweep_interval_ms(srv->cfg.op_retention_ms);
    port->mutex_lock(port->ctx, srv->sweep_lock);
    while (!srv->sweep_stop) {
        port->mutex_unlock(port->ctx, srv->sweep_lock);
        int64_t before = now_ms(srv) - srv->cfg.op_retention_ms;
        int64_t deleted = 0, total = 0;
        fsa_status_t st;
        do {
            st = fsa_store_sweep_ops(srv->store, before, SWEEP_CHUNK, &deleted);
            total += deleted;
        } while (st == FSA_OK && deleted == (int64_t)SWEEP_CHUNK && !srv->sweep_stop);
        if (st != FSA_OK && st != FSA_EBUSY)
            fsa_log(&srv->port, FSA_LOG_WARN, "op log retention sweep failed: %s",
                    fsa_status_str(st));
        else if (total > 0)
            atomic_fetch_add_explicit(&srv->stats.ops_expired, total, memory_order_relaxed);
        port->mutex_lock(port->ctx, srv->sweep_lock);
        fsa_mono_t deadline = fsa_mono_add_ns(port->mono_now(port->ctx), interval * FSA_NS_PER_MS);
        while (!srv->sweep_stop &&
               port->cond_wait(port->ctx, srv->sweep_cond, srv->sweep_lock, deadline) == FSA_OK)
            ;
    }
    port->mutex_unlock(port->ctx, srv->sweep_lock);
    return NULL;
}

static void sweeper_stop(fsa_server_t *srv)
{
    if (srv->sweeper == NULL)
        return;
    srv->port.mutex_lock(srv->port.ctx, srv->sweep_lock);
    srv->sweep_stop = true;
    srv->port.cond_broadcast(srv->port.ctx, srv->sweep_cond);
    srv->port.mutex_unlock(srv->port.ctx, srv->sweep_lock);
    (void)srv->port.thread_join(srv->port.ctx, srv->sweeper, NULL);
    srv->sweeper = NULL;
}

/* ---- the header deadline: a watch over every open connection ---- */

static int64_t conn_tick_ns(const fsa_server_t *srv)
{
    /* A quarter of the deadline, at most a second: a connection is shut down at most a quarter
     * (or a second) after its deadline. */
    int64_t t = srv->header_ns / 4;
    return t > INT64_C(1000000000) ? INT64_C(1000000000) : t;
}

/* libmicrohttpd's notice of a connection's start and close (both listeners). A new connection's
 * headers (and TLS handshake) must be complete within the header deadline. The close comes before
 * libmicrohttpd closes the socket, and takes conn_lock: the watch never shuts down a descriptor
 * that was closed (and maybe reused) meanwhile. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    fsa_server_t *srv = cls;
    const fsa_port_t *port = &srv->port;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_t *k = ci != NULL ? fsa_calloc(1, sizeof *k) : NULL;
        if (k == NULL)
            return; /* not watched: the idle timeout still applies */
        k->fd = ci->connect_fd;
        k->armed = true;
        k->deadline = fsa_mono_add_ns(port->mono_now(port->ctx), srv->header_ns);
        port->mutex_lock(port->ctx, srv->conn_lock);
        k->next = srv->conns;
        if (srv->conns != NULL)
            srv->conns->prev = k;
        srv->conns = k;
        port->mutex_unlock(port->ctx, srv->conn_lock);
        *socket_context = k;
        return;
    }
    conn_t *k = *socket_context;
    if (k == NULL)
        return;
    port->mutex_lock(port->ctx, srv->conn_lock);
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        srv->conns = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
    port->mutex_unlock(port->ctx, srv->conn_lock);
    fsa_free(k);
    *socket_context = NULL;
}

/* Arms the connection's deadline in_ns from now (armed), or lifts it (its headers came). */
static void conn_arm(fsa_server_t *srv, struct MHD_Connection *c, bool armed, int64_t in_ns)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_t *k = ci != NULL ? ci->socket_context : NULL;
    if (k == NULL)
        return;
    const fsa_port_t *port = &srv->port;
    fsa_mono_t at = fsa_mono_add_ns(port->mono_now(port->ctx), in_ns);
    port->mutex_lock(port->ctx, srv->conn_lock);
    k->armed = armed;
    k->deadline = at;
    port->mutex_unlock(port->ctx, srv->conn_lock);
}

/*
 * The watch: every tick, shuts down (shutdown(2), both ways) each connection whose headers are
 * past their deadline; libmicrohttpd's worker then sees the end of the stream and closes it.
 * Nothing is answered (libmicrohttpd answers only complete requests).
 */
static void *conn_watch_main(void *arg)
{
    fsa_server_t *srv = arg;
    const fsa_port_t *port = &srv->port;
    int64_t tick = conn_tick_ns(srv);
    port->mutex_lock(port->ctx, srv->conn_lock);
    while (!srv->conn_stop) {
        fsa_mono_t now = port->mono_now(port->ctx);
        long long shut = 0;
        for (conn_t *k = srv->conns; k != NULL; k = k->next) {
            if (k->armed && !k->shut && fsa_mono_diff_ns(now, k->deadline) > 0) {
                fsa_socket_shutdown(k->fd);
                k->shut = true;
                shut++;
            }
        }
        if (shut > 0) {
            long long total =
                atomic_fetch_add_explicit(&srv->stats.header_deadline, shut, memory_order_relaxed) +
                shut;
            port->mutex_unlock(port->ctx, srv->conn_lock);
            warn_limited(srv,
                         "shut down %lld connection(s) whose headers were not complete within %lld "
                         "s (%lld so far)",
                         shut, (long long)(srv->header_ns / 1000000000), total);
            port->mutex_lock(port->ctx, srv->conn_lock);
        }
        fsa_mono_t deadline = fsa_mono_add_ns(port->mono_now(port->ctx), tick);
        while (!srv->conn_stop &&
               port->cond_wait(port->ctx, srv->conn_cond, srv->conn_lock, deadline) == FSA_OK)
            ;
    }
    port->mutex_unlock(port->ctx, srv->conn_lock);
    return NULL;
}

static void conn_watch_stop(fsa_server_t *srv)
{
    if (srv->conn_watch == NULL)
        return;
    srv->port.mutex_lock(srv->port.ctx, srv->conn_lock);
    srv->conn_stop = true;
    srv->port.cond_broadcast(srv->port.ctx, srv->conn_cond);
    srv->port.mutex_unlock(srv->port.ctx, srv->conn_lock);
    (void)srv->port.thread_join(srv->port.ctx, srv->conn_watch, NULL);
    srv->conn_watch = NULL;
}

/* ---- start and stop ---- */

/*
 * Binds and listens on host:port (TCP). *fd the socket, url "SCHEME://HOST:PORT" with the real
 * port. loopback_only: an address that is not loopback is refused (FSA_EPERM), what names the
 * listener in the messages.
 */
static fsa_status_t bind_tcp(const char *what, const char *host, const char *port, bool tls,
                             bool loopback_only, int *out_fd, char *url, size_t urlcap, char *err,
                             size_t errlen)
{
    char why[256];
    int fd = -1, bound = 0;
    bool v6 = false;
    fsa_status_t st =
        fsa_socket_listen_tcp(host, port, 1024, loopback_only, &fd, &bound, &v6, why, sizeof why);
    if (st == FSA_EINVAL)
        snprintf(err, errlen, "cannot resolve the %s address %s:%s: %s", what, host, port, why);
    else if (st == FSA_EPERM)
        snprintf(err, errlen,
                 "the %s address %s:%s is not a loopback address: the admin API can change "
                 "every entity, so it listens on loopback (or a unix socket) unless "
                 "--admin-allow-remote says otherwise",
                 what, host, port);
    else if (st != FSA_OK)
        snprintf(err, errlen, "cannot listen on %s:%s (%s): %s", host, port, what, why);
    if (st != FSA_OK)
        return st;
    bool brackets = v6 && strchr(host, ':') != NULL;
    snprintf(url, urlcap, "%s://%s%s%s:%d", tls ? "https" : "http", brackets ? "[" : "", host,
             brackets ? "]" : "", bound);
    *out_fd = fd;
    return FSA_OK;
}

/* Binds and listens on a unix socket at path, mode 0600 (only this user may connect). A socket
 * left by a previous run is replaced; any other file there is refused. */
static fsa_status_t bind_unix(const char *path, int *out_fd, char *err, size_t errlen)
{
    char why[256];
    fsa_status_t st = fsa_socket_listen_unix(path, 64, out_fd, why, sizeof why);
    if (st == FSA_EINVAL)
        snprintf(err, errlen, "the admin socket path is %s: '%s'", why, path);
    else if (st == FSA_EPERM)
        snprintf(err, errlen, "refusing the admin socket %s: %s", path, why);
    else if (st != FSA_OK)
        snprintf(err, errlen, "cannot listen on the admin socket %s: %s", path, why);
    return st;
}

/* The admin API's listener: cfg->admin_listen ("HOST:PORT", "unix:PATH"; NULL: 127.0.0.1:0). */
static fsa_status_t bind_admin(fsa_server_t *srv, char *err, size_t errlen)
{
    const char *v = srv->cfg.admin_listen != NULL ? srv->cfg.admin_listen : "127.0.0.1:0";
    if (strncmp(v, "unix:", 5) == 0) {
        fsa_status_t st = bind_unix(v + 5, &srv->admin_fd, err, errlen);
        if (st != FSA_OK)
            return st;
        size_t n = strlen(v + 5);
        srv->admin_unix = fsa_malloc(n + 1);
        if (srv->admin_unix == NULL) {
            snprintf(err, errlen, "out of memory");
            return FSA_ENOMEM;
        }
        memcpy(srv->admin_unix, v + 5, n + 1);
        snprintf(srv->admin_url, sizeof srv->admin_url, "%s", v);
        return FSA_OK;
    }
    char host[256], port[16];
    const char *colon = strrchr(v, ':');
    size_t hlen = colon != NULL ? (size_t)(colon - v) : 0;
    const char *h = v;
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (colon == NULL || hlen == 0 || hlen >= sizeof host || colon[1] == '\0' ||
        strlen(colon + 1) >= sizeof port) {
        snprintf(err, errlen, "the admin address needs HOST:PORT or unix:PATH: '%s'", v);
        return FSA_EINVAL;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, colon + 1, strlen(colon + 1) + 1);
    return bind_tcp("admin", host, port, srv->tls_cert != NULL, !srv->cfg.admin_remote,
                    &srv->admin_fd, srv->admin_url, sizeof srv->admin_url, err, errlen);
}

static unsigned worker_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    /* A worker serves its own connections one request at a time, and requests wait for the single
     * writer (and in injected latency): many more workers than cores keep one slow request from
     * holding up the connections that share its worker (8 per core measured best for the tail
     * latency of 100 devices pushing at once). */
    long t = n > 0 ? 8 * n : 8;
    if (t < 8)
        t = 8;
    if (t > 64)
        t = 64;
    return (unsigned)t;
}

static void server_free(fsa_server_t *srv)
{
    if (srv == NULL)
        return;
    sweeper_stop(srv);
    conn_watch_stop(srv);
    fsa_store_close(srv->store);
    fsa_socket_close(srv->listen_fd);
    fsa_socket_close(srv->admin_fd);
    if (srv->admin_unix != NULL) {
        fsa_socket_unlink(srv->admin_unix);
        fsa_free(srv->admin_unix);
    }
    for (size_t i = 0; i < srv->ndevices; i++) {
        fsa_signer_key_wipe(&srv->devices[i].key);
        scope_free(srv->devices[i].scope);
    }
    fsa_free(srv->devices);
    fsa_signer_wipe(srv->admin_hash, sizeof srv->admin_hash);
    if (srv->tls_key != NULL) {
        fsa_signer_wipe(srv->tls_key, strlen(srv->tls_key));
        fsa_free(srv->tls_key);
    }
    fsa_free(srv->tls_cert);
    srv->port.mutex_free(srv->port.ctx, srv->sweep_lock);
    srv->port.cond_free(srv->port.ctx, srv->sweep_cond);
    srv->port.mutex_free(srv->port.ctx, srv->quota_lock);
    srv->port.mutex_free(srv->port.ctx, srv->hold_lock);
    fsa_free(srv->holds.slot);
    srv->port.mutex_free(srv->port.ctx, srv->admin_lock);
    srv->port.mutex_free(srv->port.ctx, srv->log_lock);
    srv->port.mutex_free(srv->port.ctx, srv->conn_lock);
    srv->port.cond_free(srv->port.ctx, srv->conn_cond);
    fsa_free(srv->quota);
    fsa_free(srv);
}

/* The server's locks and conditions; FSA_ENOMEM when one cannot be made. */
static fsa_status_t server_locks_new(fsa_server_t *srv)
{
    const fsa_port_t *p = &srv->port;
    fsa_status_t st = p->mutex_new(p->ctx, &srv->sweep_lock);
    if (st == FSA_OK)
        st = p->cond_new(p->ctx, &srv->sweep_cond);
    if (st == FSA_OK)
        st = p->mutex_new(p->ctx, &srv->quota_lock);
    if (st == FSA_OK)
        st = p->mutex_new(p->ctx, &srv->hold_lock);
    if (st == FSA_OK)
        st = p->mutex_new(p->ctx, &srv->admin_lock);
    if (st == FSA_OK)
        st = p->mutex_new(p->ctx, &srv->log_lock);
    if (st == FSA_OK)
        st = p->mutex_new(p->ctx, &srv->conn_lock);
    if (st == FSA_OK)
        st = p->cond_new(p->ctx, &srv->conn_cond);
    return st == FSA_OK ? FSA_OK : FSA_ENOMEM;
}

/*
 * The body bytes one client address may hold: a quarter of the budget, or the address's share of
 * the connections (per_addr of FSA_LIMIT_SERVER_CONNECTIONS) of it when that is more. With the
 * defaults (64 connections an address) 16 MiB; behind a proxy, whose address every client has,
 * --per-addr-connections raised to 1000 gives it the whole budget.
 */
static long long addr_share(int per_addr)
{
    long long budget = FSA_LIMIT_SERVER_BODY_BUDGET;
    long long share = budget * per_addr / FSA_LIMIT_SERVER_CONNECTIONS;
    if (share < budget / 4)
        share = budget / 4;
    return share > budget ? budget : share;
}

/* The slots of the table of holds: a power of two, at least twice the connections of both
 * listeners. */
static size_t hold_slots(void)
{
    size_t n = 1;
    while (n < 2 * (size_t)(FSA_LIMIT_SERVER_CONNECTIONS + FSA_LIMIT_SERVER_CONNECTIONS_PER_ADDR))
        n *= 2;
    return n;
}

/* A server for cfg (checked), with its port, limits and locks, and nothing started: *out. */
static fsa_status_t server_new(const fsa_server_config_t *cfg, fsa_server_t **out, char *err,
                               size_t errlen)
{
    if (cfg == NULL || out == NULL || cfg->host == NULL || cfg->port == NULL ||
        cfg->db_path == NULL || cfg->devices_file == NULL ||
        (cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        snprintf(err, errlen, "invalid server configuration");
        return FSA_EINVAL;
    }
    fsa_server_t *srv = fsa_calloc(1, sizeof *srv);
    if (srv == NULL) {
        snprintf(err, errlen, "out of memory");
        return FSA_ENOMEM;
    }
    srv->port = *fsa_port_posix();
    srv->port.log = server_log;
    srv->cfg = *cfg;
    srv->listen_fd = -1;
    srv->admin_fd = -1;
    srv->header_ns =
        (cfg->header_timeout_s > 0 ? cfg->header_timeout_s : FSA_LIMIT_SERVER_HEADER_S) *
        INT64_C(1000000000);
    srv->started_ms = now_ms(srv);
    atomic_init(&srv->in_flight, 0);
    atomic_init(&srv->fault_counter, 0);
    srv->quota_rate = cfg->device_rate > 0 ? cfg->device_rate : FSA_LIMIT_DEVICE_REQ_PER_S;
    srv->quota_burst = cfg->device_rate > 0 ? 4.0 * cfg->device_rate : FSA_LIMIT_DEVICE_REQ_BURST;
    if (srv->cfg.op_retention_ms <= 0)
        srv->cfg.op_retention_ms = FSA_SERVER_OP_RETENTION_MS;
    srv->addr_share =
        addr_share(cfg->per_addr_connections > 0 ? cfg->per_addr_connections
                                                 : FSA_LIMIT_SERVER_CONNECTIONS_PER_ADDR);
    /* A slot for each address that can hold body bytes at once: one per connection of both
     * listeners, at most, and twice that so that probes stay short. */
    srv->holds.cap = hold_slots();
    srv->holds.slot = fsa_calloc(srv->holds.cap, sizeof *srv->holds.slot);
    *out = srv;
    if (srv->holds.slot == NULL || server_locks_new(srv) != FSA_OK) {
        snprintf(err, errlen, "out of memory");
        return FSA_ENOMEM;
    }
    return FSA_OK;
}

/* The files of the configuration: the devices (and their quotas), the admin token, the TLS
 * certificate and key. */
static fsa_status_t server_load_files(fsa_server_t *srv, char *err, size_t errlen)
{
    const fsa_server_config_t *cfg = &srv->cfg;
    fsa_status_t st = load_devices(srv, err, errlen);
    if (st == FSA_OK) {
        srv->quota = fsa_calloc(srv->ndevices > 0 ? srv->ndevices : 1, sizeof *srv->quota);
        if (srv->quota == NULL) {
            snprintf(err, errlen, "out of memory");
            st = FSA_ENOMEM;
        }
    }
    if (st == FSA_OK && cfg->admin_token_file != NULL)
        st = load_admin_token(srv, err, errlen);
    size_t len = 0;
    if (st == FSA_OK && cfg->tls_cert != NULL) {
        st = read_file("TLS certificate", cfg->tls_cert, CERT_MAX, false, &srv->tls_cert, &len, err,
                       errlen);
        if (st == FSA_OK)
            st = read_file("TLS key", cfg->tls_key, CERT_MAX, true, &srv->tls_key, &len, err,
                           errlen);
        if (st == FSA_OK && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            snprintf(err, errlen, "this libmicrohttpd was built without TLS");
            st = FSA_EUNSUPPORTED;
        }
    }
    return st;
}

/* The store, with a reader per worker thread; its error names the database but never a
 * PostgreSQL URI, which may hold a password. */
static fsa_status_t server_open_store(fsa_server_t *srv, unsigned threads, char *err, size_t errlen)
{
    const char *db = srv->cfg.db_path;
    fsa_status_t st = fsa_store_open(&srv->port, db, threads, &srv->store, err, errlen);
    if (st != FSA_OK) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", err);
        bool uri = strstr(db, "://") != NULL;
        snprintf(err, errlen, "database %s: %s", uri ? "(PostgreSQL URI)" : db, tmp);
    }
    return st;
}

/* The op log's sweeper and the connection watch. */
static fsa_status_t server_threads_start(fsa_server_t *srv, char *err, size_t errlen)
{
    fsa_status_t st = srv->port.thread_create(srv->port.ctx, &srv->sweeper, sweeper_main, srv);
    if (st != FSA_OK) {
        snprintf(err, errlen, "cannot start the op log sweeper");
        return st;
    }
    st = srv->port.thread_create(srv->port.ctx, &srv->conn_watch, conn_watch_main, srv);
    if (st != FSA_OK)
        snprintf(err, errlen, "cannot start the connection watch");
    return st;
}

/* TLS 1.2 or 1.3 only, forward-secret key exchange (ECDHE, DHE) and AEAD ciphers only: no static
 * RSA key exchange, no CBC, no SHA-1 MACs (GnuTLS priority string). */
static const char tls_priorities[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-RSA:-PSK:-CIPHER-ALL:+AES-256-GCM:"
    "+AES-128-GCM:+CHACHA20-POLY1305:-MAC-ALL:+AEAD";

/* libmicrohttpd's TLS options of the server (3 items and the end; the end alone without TLS). */
static void tls_options(const fsa_server_t *srv, struct MHD_OptionItem opts[4])
{
    bool tls = srv->tls_cert != NULL;
    opts[0] =
        (struct MHD_OptionItem){tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, srv->tls_cert};
    opts[1] =
        (struct MHD_OptionItem){tls ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, srv->tls_key};
    opts[2] = (struct MHD_OptionItem){tls ? MHD_OPTION_HTTPS_PRIORITIES : MHD_OPTION_END, 0,
                                      (void *)(uintptr_t)tls_priorities};
    opts[3] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
}

/* The device listener's daemon on srv->listen_fd, with `threads` workers. */
static fsa_status_t start_device_daemon(fsa_server_t *srv, unsigned flags, unsigned threads,
                                        struct MHD_OptionItem *tls_opts, char *err, size_t errlen)
{
    const fsa_server_config_t *cfg = &srv->cfg;
    srv->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,
        MHD_OPTION_LISTEN_SOCKET, srv->listen_fd, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, srv, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)FSA_LIMIT_SERVER_IDLE_S, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)FSA_LIMIT_SERVER_CONNECTIONS, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)(cfg->per_addr_connections > 0 ? cfg->per_addr_connections
                                                 : FSA_LIMIT_SERVER_CONNECTIONS_PER_ADDR),
        MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_END);
    if (srv->mhd == NULL) {
        snprintf(err, errlen, "cannot start the HTTP server on %s:%s%s", cfg->host, cfg->port,
                 srv->tls_cert != NULL ? " (check the TLS certificate and key)" : "");
        return FSA_EIO;
    }
    srv->listen_fd = -1; /* MHD's now */
    return FSA_OK;
}

/* The admin listener's daemon on srv->admin_fd: a few threads of its own (its callers are an
 * operator and scripts), the same limits and deadlines, TLS as the device listener has unless it
 * is a unix socket. */
static fsa_status_t start_admin_daemon(fsa_server_t *srv, unsigned flags,
                                       struct MHD_OptionItem *tls_opts, char *err, size_t errlen)
{
    bool admin_tls = srv->tls_cert != NULL && srv->admin_unix == NULL;
    unsigned aflags = flags & ~(unsigned)MHD_USE_TLS;
    if (admin_tls)
        aflags |= MHD_USE_TLS;
    srv->admin_mhd = MHD_start_daemon(
        aflags, 0, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,
        MHD_OPTION_LISTEN_SOCKET, srv->admin_fd, MHD_OPTION_THREAD_POOL_SIZE, 2u,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri_admin, srv, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)FSA_LIMIT_SERVER_IDLE_S, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)FSA_LIMIT_SERVER_CONNECTIONS_PER_ADDR, MHD_OPTION_ARRAY,
        admin_tls ? tls_opts : tls_opts + 3, MHD_OPTION_END);
    if (srv->admin_mhd == NULL) {
        snprintf(err, errlen, "cannot start the admin API's listener on %s", srv->admin_url);
        return FSA_EIO;
    }
    srv->admin_fd = -1; /* MHD's now */
    return FSA_OK;
}

/* libmicrohttpd on the bound listeners. */
static fsa_status_t server_daemons_start(fsa_server_t *srv, unsigned threads, char *err,
                                         size_t errlen)
{
    /* poll(), not epoll: with a thread pool and epoll, libmicrohttpd 0.9.75's
     * MHD_quiesce_daemon() races its own worker threads removing the listening socket from their
     * epoll sets, and now and then aborts the process at shutdown ("Failed to remove listen FD
     * from epoll set"). poll() has no such set; each worker polls only its own connections and
     * the listening socket, which stays cheap at hundreds of connections. */
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (srv->tls_cert != NULL)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem tls_opts[4];
    tls_options(srv, tls_opts);
    fsa_status_t st = start_device_daemon(srv, flags, threads, tls_opts, err, errlen);
    if (st == FSA_OK && srv->admin_fd >= 0)
        st = start_admin_daemon(srv, flags, tls_opts, err, errlen);
    return st;
}

fsa_status_t fsa_server_start(const fsa_server_config_t *cfg, fsa_server_t **out, char *err,
                              size_t errlen)
{
    char dummy[8];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (out == NULL) {
        snprintf(err, errlen, "invalid server configuration");
        return FSA_EINVAL;
    }
    *out = NULL;
    fsa_server_t *srv = NULL;
    fsa_status_t st = server_new(cfg, &srv, err, errlen);
    if (srv == NULL)
        return st;
    unsigned threads = worker_threads();
    if (st == FSA_OK)
        st = server_load_files(srv, err, errlen);
    if (st == FSA_OK)
        st = server_open_store(srv, threads, err, errlen);
    if (st == FSA_OK)
        st = server_threads_start(srv, err, errlen);
    if (st == FSA_OK)
        st = bind_tcp("listen", cfg->host, cfg->port, srv->tls_cert != NULL, false, &srv->listen_fd,
                      srv->url, sizeof srv->url, err, errlen);
    if (st == FSA_OK && srv->admin_enabled)
        st = bind_admin(srv, err, errlen);
    if (st == FSA_OK)
        st = server_daemons_start(srv, threads, err, errlen);
    if (st != FSA_OK) {
        if (srv->mhd != NULL)
            MHD_stop_daemon(srv->mhd); /* closes its listening socket */
        server_free(srv);
        return st;
    }
    *out = srv;
    return FSA_OK;
}

const char *fsa_server_url(const fsa_server_t *srv)
{
    return srv != NULL ? srv->url : "";
}

const char *fsa_server_admin_url(const fsa_server_t *srv)
{
    return srv != NULL ? srv->admin_url : "";
}

void fsa_server_stop(fsa_server_t *srv)
{
    if (srv == NULL)
        return;
    if (srv->mhd != NULL) {
        /* Once MHD runs it owns the listening socket: quiesce hands it back (we close it), or
         * MHD_stop_daemon closes it. */
        MHD_socket s = MHD_quiesce_daemon(srv->mhd);
        if (s != MHD_INVALID_SOCKET)
            fsa_socket_close(s);
        srv->listen_fd = -1;
        if (srv->admin_mhd != NULL) {
            s = MHD_quiesce_daemon(srv->admin_mhd);
            if (s != MHD_INVALID_SOCKET)
                fsa_socket_close(s);
        }
        /* Requests already received finish and get their answers; idle keep-alive connections
         * are closed by MHD_stop_daemon. */
        for (int waited = 0; atomic_load(&srv->in_flight) > 0 && waited < SHUTDOWN_WAIT_MS;
             waited += 10)
            srv->port.sleep(srv->port.ctx, 10 * FSA_NS_PER_MS);
        MHD_stop_daemon(srv->mhd);
        srv->mhd = NULL;
        if (srv->admin_mhd != NULL)
            MHD_stop_daemon(srv->admin_mhd);
        srv->admin_mhd = NULL;
    }
    server_free(srv);
}
