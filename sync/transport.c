/* fieldsync: the HTTP(S) transport to the server over libcurl, the only file that includes it. */
#include "sync/transport.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "port/alloc.h"
#include "port/buf.h"
#include "port/files.h"
#include "port/limits.h"
#include "port/once.h"
#include "port/port.h"
#include "port/timefmt.h"
#include "sync/gzip.h"

/* "sha256//" and the base64 of 32 bytes: 43 characters and one '=' of padding. */
#define PIN_PREFIX "sha256//"
#define PIN_B64_LEN 44

/* Room for a Retry-After or Date value: an HTTP date is 24 to 34 characters (IMF-fixdate 29);
 * longer is malformed. */
#define RETRY_AFTER_MAX 64

/* A request header line we build: the longest is X-Device-Id with a 128-byte id. */
#define HEADER_LINE_MAX 192

struct fsa_transport_req;
static struct fsa_transport_req *req_new(void);

enum { TLS_CA, TLS_CERT, TLS_KEY }; /* fsa_transport_t's tls[], tls_file() */

struct fsa_transport {
    const fsa_port_t *port; /* the device's clock (a Retry-After date without a Date header) */
    CURL *curl;
    CURLM *multi; /* runs curl's handle, so that a request can be on the wire while we work */
    struct fsa_transport_req *req;
    char *base_url;  /* scheme://host[:port][/prefix], without a trailing '/' */
    char *base_path; /* the prefix alone: "" or "/prefix" */
    struct {
        char *pem; /* a TLS file's bytes (tls_file), lent to libcurl; wiped when freed */
        size_t len;
    } tls[3];
    size_t gzip_min_bytes;
    size_t max_response_bytes;
    int last_gzip_level; /* the zlib level of the last request's body; 0: sent as it was */
    int next_gzip_level; /* the level of the next body (learn_gzip_level) */
    int64_t gzip_ns;     /* how long the last request's body took to compress */
    int64_t waited_ns;   /* how long fsa_transport_end waited for the last answer */
    struct {             /* a body compressed ahead (fsa_transport_compress_ahead) */
        unsigned char *gz;
        size_t gz_len;
        const void *src; /* the body it was made of, and its length */
        size_t src_len;
        int level;
        int64_t ns;
    } ahead;
    bool used_ahead;                /* the last request's body was the one compressed ahead */
    char curl_err[CURL_ERROR_SIZE]; /* CURLOPT_ERRORBUFFER: curl's detail of the last failure */
    void (*tick)(void *arg);        /* opts' */
    void *tick_arg;
};

/*
 * libcurl must be initialised once per process before any other call, and curl_global_init is
 * not guaranteed thread safe on every build: fsa_once (port/once.h) runs it once per process.
 * curl_global_cleanup is never called: other
 * code in the process may still use libcurl at exit, and the OS reclaims everything anyway.
 * libcurl allocates with the project's allocator (port/alloc.h) from then on.
 */
static fsa_once_t global_once = FSA_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void)
{
    global_rc = curl_global_init_mem(CURL_GLOBAL_DEFAULT, fsa_malloc, fsa_free, fsa_realloc,
                                     fsa_strdup, fsa_calloc);
}

fsa_status_t fsa_transport_global_init(void)
{
    fsa_once(&global_once, global_init);
    return global_rc == CURLE_OK ? FSA_OK : FSA_ENOMEM;
}

static void say(char *buf, size_t len, const char *fmt, ...) FSA_PRINTF(3, 4);

static void say(char *buf, size_t len, const char *fmt, ...)
{
    if (buf == NULL || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    /* A message is one line: curl's detail text can end in a newline, and a URL from the caller
     * must not be able to forge a second log line. */
    for (char *p = buf; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == ' ')
        buf[--n] = '\0';
}

/* ---- URL and option checks (pure) ---- */

bool fsa_transport_host_is_loopback(const char *host)
{
    if (host == NULL)
        return false;
    if (strcasecmp(host, "localhost") == 0)
        return true;

    char buf[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(host);
    if (n >= sizeof buf)
        return false;
    memcpy(buf, host, n + 1);
    if (n >= 2 && buf[0] == '[' && buf[n - 1] == ']') {
        memmove(buf, buf + 1, n - 2);
        buf[n - 2] = '\0';
    }

    /* inet_pton takes only the strict dotted-decimal form: no octal or hex parts, no short
     * forms, so "0177.0.0.1" cannot pass for something it is not. */
    struct in_addr a4;
    if (inet_pton(AF_INET, buf, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, buf, &a6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&a6))
            return true;
        /* ::ffff:127.x.y.z reaches the IPv4 loopback through a dual-stack socket. */
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    }
    return false;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

static bool pin_is_valid(const char *p, size_t n)
{
    size_t plen = sizeof PIN_PREFIX - 1;
    if (n != plen + PIN_B64_LEN || strncmp(p, PIN_PREFIX, plen) != 0)
        return false;
    p += plen;
    for (size_t i = 0; i < PIN_B64_LEN - 1; i++)
        if (b64_value(p[i]) < 0)
            return false;
    if (p[PIN_B64_LEN - 1] != '=')
        return false;
    /* 43 characters carry 258 bits for 256: in the canonical encoding the last character's two
     * low bits are zero. curl compares pins as strings against the canonical encoding, so any
     * other spelling of the same bytes would never match and is a configuration error. */
    return (b64_value(p[PIN_B64_LEN - 2]) & 3) == 0;
}

static bool pin_list_is_valid(const char *pins)
{
    const char *p = pins;
    for (;;) {
        const char *semi = strchr(p, ';');
        size_t n = semi != NULL ? (size_t)(semi - p) : strlen(p);
        if (!pin_is_valid(p, n))
            return false;
        if (semi == NULL)
            return true;
        p = semi + 1;
    }
}

/* What follows the host in a request line: '/' then visible ASCII only, so nothing the caller
 * passes can split the request line or add a header. */
static bool path_is_valid(const char *path)
{
    if (path[0] != '/')
        return false;
    for (const char *p = path; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '#')
            return false;
    return true;
}

static char *dup_trimmed(const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        n--;
    char *r = fsa_malloc(n + 1);
    if (r != NULL) {
        memcpy(r, s, n);
        r[n] = '\0';
    }
    return r;
}

/* A malformed base_url as its error shows it: not at all when it may hold a password
 * (user:password@host). */
static const char *url_shown(const char *url)
{
    return strchr(url, '@') != NULL ? "(not shown: it holds '@', maybe a password)" : url;
}

/* Whether URL u has any of the parts (a user, a password, a query...): *found. FSA_OK, or
 * FSA_ENOMEM when the check could not be made (not "absent"). */
static fsa_status_t url_has_any(CURLU *u, const CURLUPart *parts, size_t n, bool *found)
{
    *found = false;
    for (size_t i = 0; i < n && !*found; i++) {
        char *part = NULL;
        CURLUcode uc = curl_url_get(u, parts[i], &part, 0);
        curl_free(part);
        if (uc == CURLUE_OUT_OF_MEMORY)
            return FSA_ENOMEM;
        *found = uc == CURLUE_OK;
    }
    return FSA_OK;
}
/*
 * Parses and checks base_url with curl's own URL parser, so the transport and libcurl agree on
 * what the host is. On FSA_OK sets t->base_url and t->base_path.
 */
static fsa_status_t parse_base_url(fsa_transport_t *t, const char *url, const char *proxy,
                                   bool allow_insecure, char *err, size_t errlen)
{
    fsa_status_t st = FSA_EINVAL;
    char *scheme = NULL, *host = NULL, *path = NULL, *full = NULL;
    CURLU *u = curl_url();
    if (u == NULL)
        goto nomem;
    /* NON_SUPPORT_SCHEME lets any scheme through the parser so the check below can name it. */
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (uc != CURLUE_OK) {
        st = uc == CURLUE_OUT_OF_MEMORY ? FSA_ENOMEM : FSA_EINVAL;
        say(err, errlen, "malformed server URL \"%.120s\": %s", url_shown(url),
            curl_url_strerror(uc));
        goto out;
    }
    uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    if (uc == CURLUE_OUT_OF_MEMORY)
        goto nomem;
    if (uc != CURLUE_OK || host[0] == '\0') {
        say(err, errlen, "malformed server URL \"%.120s\": no scheme or host", url_shown(url));
        goto out;
    }
    bool https = strcasecmp(scheme, "https") == 0;
    if (!https && strcasecmp(scheme, "http") != 0) {
        say(err, errlen, "server URL scheme \"%.20s\" is not supported: use https", scheme);
        goto out;
    }
    /* Credentials in a URL end up in logs; a query or fragment cannot take a path after it. */
    static const CURLUPart forbidden[] = {CURLUPART_USER, CURLUPART_PASSWORD, CURLUPART_QUERY,
                                          CURLUPART_FRAGMENT};
    bool found = false;
    if (url_has_any(u, forbidden, sizeof forbidden / sizeof forbidden[0], &found) != FSA_OK)
        goto nomem;
    if (found) {
        /* Not echoed: the URL may hold a password. */
        say(err, errlen, "server URL must not hold credentials, a query or a fragment");
        goto out;
    }
    if (!https && !allow_insecure && !fsa_transport_host_is_loopback(host)) {
        say(err, errlen,
            "refusing plain http:// to %.100s: use https (or allow insecure http explicitly)",
            host);
        goto out;
    }
    /* Loopback http:// is allowed because its bytes never leave the device; through a proxy they
     * do, signed headers and body in clear, and "127.0.0.1" then names the proxy's own host. */
    if (!https && !allow_insecure && proxy != NULL && proxy[0] != '\0') {
        say(err, errlen,
            "refusing plain http:// to %.100s through proxy %.120s: use https (or allow insecure "
            "http explicitly)",
            host, url_shown(proxy));
        goto out;
    }
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_URL, &full, 0) != CURLUE_OK)
        goto nomem;
    t->base_url = dup_trimmed(full);
    t->base_path = dup_trimmed(path);
    if (t->base_url == NULL || t->base_path == NULL) {
        st = FSA_ENOMEM;
        say(err, errlen, "out of memory copying the server URL");
        goto out;
    }
    st = FSA_OK;
    goto out;
nomem: /* curl_url_cleanup and curl_free take NULL */
    st = FSA_ENOMEM;
    say(err, errlen, "out of memory parsing the server URL");
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(path);
    curl_free(full);
    curl_url_cleanup(u);
    return st;
}

/*
 * Checks the proxy URL with curl's parser, as curl itself reads it (a missing scheme is http).
 * User info is refused: the configuration, proxy included, is stored in the journal, where no
 * secret may go, and a proxy password would also be shown wherever the URL is.
 */
static fsa_status_t check_proxy(const char *proxy, char *err, size_t errlen)
{
    if (proxy == NULL || proxy[0] == '\0')
        return FSA_OK;
    fsa_status_t st = FSA_EINVAL;
    CURLU *u = curl_url();
    if (u == NULL) {
        say(err, errlen, "out of memory parsing the proxy");
        return FSA_ENOMEM;
    }
    CURLUcode uc =
        curl_url_set(u, CURLUPART_URL, proxy, CURLU_NON_SUPPORT_SCHEME | CURLU_GUESS_SCHEME);
    if (uc != CURLUE_OK) {
        st = uc == CURLUE_OUT_OF_MEMORY ? FSA_ENOMEM : FSA_EINVAL;
        say(err, errlen, "malformed proxy \"%.120s\": %s", url_shown(proxy), curl_url_strerror(uc));
        goto out;
    }
    static const CURLUPart forbidden[] = {CURLUPART_USER, CURLUPART_PASSWORD};
    bool found = false;
    if (url_has_any(u, forbidden, sizeof forbidden / sizeof forbidden[0], &found) != FSA_OK) {
        st = FSA_ENOMEM;
        say(err, errlen, "out of memory parsing the proxy");
        goto out;
    }
    if (found) {
        /* Not echoed: the URL holds a password. */
        say(err, errlen,
            "proxy must not hold credentials (user:password@): proxy authentication is not "
            "supported");
        goto out;
    }
    st = FSA_OK;
out:
    curl_url_cleanup(u);
    return st;
}

/* ---- creation ---- */

static long clamp_ms(int64_t ms, int64_t dflt)
{
    if (ms == 0)
        ms = dflt;
    return ms > LONG_MAX ? LONG_MAX : (long)ms;
}

/* Sets one option; on failure records which one and leaves through `refused`, the one error path
 * that set_curl_opts's options share (one copy of the message's code, not one per option). The
 * message gives the option's number in curl.h: their names cost the binary 400 bytes of text for
 * a failure that only a libcurl built without some feature, or out of memory, would show. */
#define SETOPT(opt, val)                                                                           \
    do {                                                                                           \
        what = opt;                                                                                \
        rc = curl_easy_setopt(t->curl, opt, val);                                                  \
        if (rc != CURLE_OK)                                                                        \
            goto refused;                                                                          \
    } while (0)

/* The options that need no libcurl: FSA_OK, or FSA_EINVAL with err naming the problem. */
static fsa_status_t check_opts(const fsa_port_t *port, const fsa_transport_opts_t *opts, char *err,
                               size_t errlen)
{
    if (port == NULL) {
        say(err, errlen, "port is required (the device's clock)");
        return FSA_EINVAL;
    }
    if (opts == NULL || opts->base_url == NULL) {
        say(err, errlen, "server URL (base_url) is required");
        return FSA_EINVAL;
    }
    if ((opts->client_cert == NULL) != (opts->client_key == NULL)) {
        say(err, errlen, "client_cert and client_key go together: give both or neither");
        return FSA_EINVAL;
    }
    if (opts->connect_timeout_ms < 0 || opts->total_timeout_ms < 0) {
        say(err, errlen, "timeouts must not be negative");
        return FSA_EINVAL;
    }
    if (opts->pins != NULL && !pin_list_is_valid(opts->pins)) {
        say(err, errlen, "malformed pin list: expected sha256//<base64 of 32 bytes>[;sha256//...]");
        return FSA_EINVAL;
    }
    return FSA_OK;
}

/* A PEM private key, RSA 8192 included, is a few KiB: more is not a key. A system's whole CA
 * bundle is ~200 KB. */
#define CLIENT_KEY_MAX_BYTES (64 * 1024)
#define CERT_FILE_MAX_BYTES (4 * 1024 * 1024)

/*
 * The TLS files (the CA bundle, the client certificate, its key: TLS_CA, TLS_CERT, TLS_KEY) are
 * read here, once, and handed to libcurl as bytes that the transport keeps (t->tls) until it is
 * freed. Given their paths, libcurl opened the files again at every TLS handshake, after the
 * checks and without them: a file swapped meanwhile (a symlink, a key others may read, another
 * CA) went unnoticed. The key is as secret as the device secret: the same private reader
 * (O_NOFOLLOW, the owner's, no one else's mode bits). A certificate file must hold a PEM
 * certificate, the only form libcurl's TLS reads from these, so that a wrong file fails at init
 * rather than at the first sync. FSA_OK, or the reader's status (FSA_EINVAL: no certificate)
 * with err naming the file.
 */
static fsa_status_t tls_file(fsa_transport_t *t, int which, const char *path, CURLoption opt,
                             char *err, size_t errlen)
{
    static const char what[][sizeof "client certificate"] = {"CA file", "client certificate",
                                                             "client key"};
    char why[400] = "";
    char **pem = &t->tls[which].pem;
    /* A certificate file may be a link (as in /etc/ssl/certs, or an app's override that init
     * did not resolve): the reader follows a public file's. Not the key's. */
    fsa_status_t st =
        fsa_file_read(path, which == TLS_KEY ? CLIENT_KEY_MAX_BYTES : CERT_FILE_MAX_BYTES,
                      which == TLS_KEY, pem, &t->tls[which].len, why, sizeof why);
    if (st != FSA_OK) {
        say(err, errlen, "%s: %s", what[which], why);
        return st;
    }
    if (which != TLS_KEY && strstr(*pem, "-----BEGIN CERTIFICATE-----") == NULL &&
        strstr(*pem, "-----BEGIN TRUSTED CERTIFICATE-----") == NULL) {
        say(err, errlen, "%s %.200s holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            what[which], path);
        return FSA_EINVAL;
    }
    struct curl_blob blob = {*pem, t->tls[which].len, CURL_BLOB_NOCOPY};
    CURLcode rc = curl_easy_setopt(t->curl, opt, &blob);
    if (rc != CURLE_OK) {
        say(err, errlen, "libcurl refused option %d (curl.h): %s", (int)opt,
            curl_easy_strerror(rc));
        return rc == CURLE_OUT_OF_MEMORY ? FSA_ENOMEM : FSA_EINVAL;
    }
    return FSA_OK;
}

/* libcurl's progress callback: non-zero ends the transfer (CURLE_ABORTED_BY_CALLBACK). libcurl
 * calls it often while bytes move and about once a second while none do. */
static int on_progress(void *cancel, curl_off_t dl_total, curl_off_t dl_now, curl_off_t ul_total,
                       curl_off_t ul_now)
{
    (void)dl_total;
    (void)dl_now;
    (void)ul_total;
    (void)ul_now;
    return atomic_load((const atomic_int *)cancel) != 0;
}

/* The easy handle's options, set once: timeouts, protocols, TLS, the client certificate, the
 * proxy, the cancel flag. FSA_OK, or the option libcurl refused in err. */
static fsa_status_t set_curl_opts(fsa_transport_t *t, const fsa_transport_opts_t *opts, char *err,
                                  size_t errlen)
{
    CURLoption what;
    CURLcode rc;
    SETOPT(CURLOPT_ERRORBUFFER, t->curl_err);
    /* Signals would interrupt the host program; timeouts work without them (threaded resolver). */
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS,
           clamp_ms(opts->connect_timeout_ms, FSA_LIMIT_CONNECT_TIMEOUT_MS));
    SETOPT(CURLOPT_TIMEOUT_MS, clamp_ms(opts->total_timeout_ms, FSA_LIMIT_REQUEST_TIMEOUT_MS));
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    /* A redirect would change the path the signature covers: the server never sends one. */
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    /* The server verifies the signature over the path exactly as the signer saw it, so curl must
     * not squash "/./" or "/../" on the way out. */
    SETOPT(CURLOPT_PATH_AS_IS, 1L);
    SETOPT(CURLOPT_USERAGENT, "fieldsync-agent");
    SETOPT(CURLOPT_ACCEPT_ENCODING, "gzip");
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
    SETOPT(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    fsa_status_t st = FSA_OK;
    if (opts->ca_file != NULL) {
        /* "Instead of the system's": the bytes replace libcurl's compiled-in CA bundle, and its
         * compiled-in CA directory, which Debian's libcurl also trusts, is switched off. */
        SETOPT(CURLOPT_CAPATH, (char *)NULL);
        st = tls_file(t, TLS_CA, opts->ca_file, CURLOPT_CAINFO_BLOB, err, errlen);
    }
    if (opts->pins != NULL)
        SETOPT(CURLOPT_PINNEDPUBLICKEY, opts->pins);
    if (st == FSA_OK && opts->client_cert != NULL) {
        SETOPT(CURLOPT_SSLCERTTYPE, "PEM");
        SETOPT(CURLOPT_SSLKEYTYPE, "PEM");
        st = tls_file(t, TLS_CERT, opts->client_cert, CURLOPT_SSLCERT_BLOB, err, errlen);
        if (st == FSA_OK)
            st = tls_file(t, TLS_KEY, opts->client_key, CURLOPT_SSLKEY_BLOB, err, errlen);
    }
    if (st != FSA_OK)
        return st;
    /* An empty proxy string makes curl ignore http_proxy and friends: the configuration says
     * where traffic goes, not whatever environment the agent was started in. */
    SETOPT(CURLOPT_PROXY, opts->proxy != NULL ? opts->proxy : "");
    if (opts->cancel != NULL) { /* options libcurl cannot refuse */
        (void)curl_easy_setopt(t->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
        (void)curl_easy_setopt(t->curl, CURLOPT_XFERINFODATA, (void *)(uintptr_t)opts->cancel);
        (void)curl_easy_setopt(t->curl, CURLOPT_NOPROGRESS, 0L);
    }
    return FSA_OK;
refused:
    say(err, errlen, "libcurl refused option %d (curl.h): %s", (int)what, curl_easy_strerror(rc));
    return rc == CURLE_OUT_OF_MEMORY ? FSA_ENOMEM : FSA_EINVAL;
}

fsa_status_t fsa_transport_new(const fsa_port_t *port, const fsa_transport_opts_t *opts,
                               fsa_transport_t **out, char *err, size_t errlen)
{
    fsa_status_t st = FSA_EINVAL;
    fsa_transport_t *t = NULL;
    say(err, errlen, "%s", "");
    if (out == NULL) {
        say(err, errlen, "no place for the transport (out is NULL)");
        return FSA_EINVAL;
    }
    *out = NULL;
    st = check_opts(port, opts, err, errlen);
    if (st != FSA_OK)
        return st;
    if (fsa_transport_global_init() != FSA_OK) {
        say(err, errlen, "libcurl failed to initialise: %s", curl_easy_strerror(global_rc));
        return FSA_ENOMEM;
    }

    t = fsa_calloc(1, sizeof *t);
    if (t == NULL) {
        say(err, errlen, "out of memory");
        return FSA_ENOMEM;
    }
    t->port = port;
    t->next_gzip_level = FSA_GZIP_LEVEL_DEFAULT;
    t->tick = opts->tick;
    t->tick_arg = opts->tick_arg;
    st = check_proxy(opts->proxy, err, errlen);
    if (st == FSA_OK)
        st = parse_base_url(t, opts->base_url, opts->proxy, opts->allow_insecure_http, err, errlen);
    if (st != FSA_OK)
        goto out;
    t->gzip_min_bytes = opts->gzip_min_bytes != 0 ? opts->gzip_min_bytes : FSA_LIMIT_GZIP_MIN_BYTES;
    t->max_response_bytes =
        opts->max_response_bytes != 0 ? opts->max_response_bytes : FSA_LIMIT_RESPONSE_BYTES;
    /* The body buffer holds max + 1 bytes for the terminating NUL. */
    if (t->max_response_bytes == SIZE_MAX)
        t->max_response_bytes = SIZE_MAX - 1;

    t->curl = curl_easy_init();
    t->multi = curl_multi_init();
    t->req = req_new();
    if (t->curl == NULL || t->multi == NULL || t->req == NULL) {
        st = FSA_ENOMEM;
        say(err, errlen, "libcurl could not make a handle");
        goto out;
    }
    st = set_curl_opts(t, opts, err, errlen);
out:
    if (st != FSA_OK) {
        fsa_transport_free(t);
        return st;
    }
    *out = t;
    return FSA_OK;
}

#undef SETOPT

static void end_request(fsa_transport_t *t);

static void ahead_drop(fsa_transport_t *t)
{
    fsa_free(t->ahead.gz);
    memset(&t->ahead, 0, sizeof t->ahead);
}

void fsa_transport_free(fsa_transport_t *t)
{
    if (t == NULL)
        return;
    ahead_drop(t);
    if (t->req != NULL && t->curl != NULL)
        end_request(t);
    fsa_free(t->req);
    if (t->curl != NULL)
        curl_easy_cleanup(t->curl);
    if (t->multi != NULL)
        curl_multi_cleanup(t->multi);
    fsa_free(t->base_url);
    fsa_free(t->base_path);
    for (int i = TLS_CA; i <= TLS_KEY; i++)
        fsa_file_wipe_free(t->tls[i].pem, t->tls[i].len);
    fsa_free(t);
}

void fsa_http_response_clear(fsa_http_response_t *r)
{
    if (r == NULL)
        return;
    fsa_free(r->body);
    memset(r, 0, sizeof *r);
    r->retry_after_ms = -1;
}

/* ---- one request ---- */

/* The request body as curl reads it; counts what was handed to the wire. */
typedef struct upload {
    const unsigned char *data;
    size_t len;
    size_t pos;
    size_t sent; /* bytes given to curl, including any resend after a rewind */
} upload_t;

static size_t on_read(char *dst, size_t size, size_t nitems, void *arg)
{
    upload_t *up = arg;
    size_t room = size * nitems; /* curl guarantees this product fits */
    size_t n = up->len - up->pos;
    if (n > room)
        n = room;
    if (n == 0)
        return 0; /* the end of the body (data may be NULL for an empty one) */
    memcpy(dst, up->data + up->pos, n);
    up->pos += n;
    up->sent += n;
    return n;
}

/* curl rewinds the body when it resends a request, e.g. after a kept-alive connection turned out
 * to be closed by the server: without this it would fail instead of retrying. */
static int on_seek(void *arg, curl_off_t offset, int origin)
{
    upload_t *up = arg;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > up->len)
        return CURL_SEEKFUNC_FAIL;
    up->pos = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

/* The answer body, bounded by max_response_bytes after curl has inflated it. */
typedef struct sink {
    fsa_buf_t body;
    size_t max;
    bool too_large;
    bool no_memory;
    unsigned long alloc_failures; /* allocations that failed inside libcurl's work on it */
} sink_t;

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
    sink_t *s = arg;
    size_t n = size * nmemb; /* curl passes size 1 */
    if (n == 0)
        return 0;
    fsa_status_t st = fsa_buf_append(&s->body, data, n, FSA_LIMIT_RESPONSE_INITIAL_BYTES, s->max);
    if (st == FSA_OK)
        return n;
    /* Any count other than n makes curl abort with CURLE_WRITE_ERROR. */
    if (st == FSA_ETOOLARGE)
        s->too_large = true;
    else
        s->no_memory = true;
    return 0;
}

/* One auth header value from the sign callback: NUL terminated inside its array, non-empty, and
 * visible ASCII only, so a buggy callback cannot inject a header. */
static bool header_value_is_valid(const char *v, size_t cap)
{
    const char *end = memchr(v, '\0', cap);
    if (end == NULL || end == v)
        return false;
    for (const char *p = v; p < end; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return false;
    return true;
}

static fsa_status_t add_header(struct curl_slist **list, const char *name, const char *value)
{
    char line[HEADER_LINE_MAX];
    int n = snprintf(line, sizeof line, "%s: %s", name, value);
    if (n < 0 || (size_t)n >= sizeof line)
        return FSA_EINVAL;
    struct curl_slist *l = curl_slist_append(*list, line);
    if (l == NULL)
        return FSA_ENOMEM;
    *list = l;
    return FSA_OK;
}

/*
 * Retry-After (RFC 9110 section 10.2.3): delay-seconds or an HTTP date. A date is measured
 * against the server's own Date header when there is one, so a device clock that is off does not
 * stretch or shrink the wait; otherwise against the port's wall clock (a simulated device's is
 * virtual). Past dates give 0, a value that is neither form gives -1 (absent), and every wait is
 * capped at FSA_LIMIT_RETRY_AFTER_MAX_MS.
 */
static int64_t parse_retry_after(const fsa_port_t *port, const char *v, const char *server_date)
{
    const int64_t cap_s = FSA_LIMIT_RETRY_AFTER_MAX_MS / 1000;
    const char *p = v;
    bool negative = false;
    if (*p == '-') {
        negative = true;
        p++;
    }
    if (*p >= '0' && *p <= '9') {
        int64_t secs = 0;
        for (; *p >= '0' && *p <= '9'; p++)
            if (secs <= cap_s)
                secs = secs * 10 + (*p - '0');
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '\0')
            return -1;
        if (negative)
            return 0;
        return (secs > cap_s ? cap_s : secs) * 1000;
    }
    if (negative)
        return -1;
    /* Through the port's 64-bit parser: curl_getdate's time_t wraps in 2038 on armhf. */
    const int64_t local_ms = port->wall_now(port->ctx).ms;
    int64_t now_ms = local_ms, when_ms = 0;
    if (server_date != NULL && fsa_time_parse_http(server_date, local_ms, &now_ms) != FSA_OK)
        now_ms = local_ms;
    if (fsa_time_parse_http(v, now_ms, &when_ms) != FSA_OK)
        return -1;
    int64_t delta = when_ms - now_ms;
    if (delta < 0)
        return 0;
    return delta > FSA_LIMIT_RETRY_AFTER_MAX_MS ? FSA_LIMIT_RETRY_AFTER_MAX_MS : delta;
}

/* Copies the answer's header `name` into buf. False when it is absent or longer than buf (no
 * value this module reads is anywhere near that long). The copy matters: curl's header struct is
 * only valid until the next curl_easy_header call. */
static bool header_copy(CURL *curl, const char *name, char *buf, size_t len)
{
    struct curl_header *h = NULL;
    if (curl_easy_header(curl, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || h == NULL)
        return false;
    size_t n = strlen(h->value);
    if (n >= len)
        return false;
    memcpy(buf, h->value, n + 1);
    return true;
}

/* Fills the answer's numbers from curl; called after every perform, failed or not, since a
 * failed request can still have put bytes on the wire. */
static void collect_info(fsa_transport_t *t, const upload_t *up, fsa_http_response_t *resp)
{
    long code = 0, req_size = 0, hdr_size = 0, connects = 1;
    curl_off_t down = 0;
    if (curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK)
        resp->status = (int)code;
    /* The body goes through on_read, never in curl's request buffer, so REQUEST_SIZE is the
     * header part alone and the body is what on_read handed out. */
    if (curl_easy_getinfo(t->curl, CURLINFO_REQUEST_SIZE, &req_size) == CURLE_OK && req_size > 0)
        resp->wire_bytes_sent = (size_t)req_size;
    resp->wire_bytes_sent += up->sent;
    if (curl_easy_getinfo(t->curl, CURLINFO_HEADER_SIZE, &hdr_size) == CURLE_OK && hdr_size > 0)
        resp->wire_bytes_received = (size_t)hdr_size;
    if (curl_easy_getinfo(t->curl, CURLINFO_SIZE_DOWNLOAD_T, &down) == CURLE_OK && down > 0)
        resp->wire_bytes_received += (size_t)down;
    if (curl_easy_getinfo(t->curl, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK)
        resp->reused_connection = resp->status != 0 && connects == 0;
}

typedef struct curl_failure {
    fsa_status_t st;
    const char *what;
} curl_failure_t;

static curl_failure_t map_curl_error(CURLcode rc, const sink_t *sink, int status)
{
    curl_failure_t f = {FSA_ENET, "network error"};
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        f.st = FSA_ETIMEOUT;
        f.what = "timed out";
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
        f.st = FSA_ETLS;
        f.what = "TLS failed";
        break;
    case CURLE_WRITE_ERROR:
        if (sink->too_large) {
            f.st = FSA_ETOOLARGE;
            f.what = "answer too large";
        } else if (sink->no_memory) {
            f.st = FSA_ENOMEM;
            f.what = "out of memory for the answer";
        }
        break;
    case CURLE_OUT_OF_MEMORY:
        /* libcurl also says this of an answer over its own bounds (a header line of 100 KB or
         * more, Debian 12's 7.88): the server's doing when the answer had begun (its status
         * line read) and no allocation failed in libcurl's work on the request (it allocates
         * through port/alloc: perform() counts; TLS's allocations do not come here, but they are
         * made before an answer starts). FSA_ENOMEM would have the engine ask again at the next
         * cycle without a backoff. */
        if (status > 0 && sink->alloc_failures == 0) {
            f.st = FSA_EPROTO;
            f.what = "answer over libcurl's limits";
        } else {
            f.st = FSA_ENOMEM;
            f.what = "out of memory";
        }
        break;
    case CURLE_URL_MALFORMAT:
        f.st = FSA_EINVAL;
        f.what = "malformed URL";
        break;
    default:
        /* Resolve, connect, send and receive failures, resets, and anything else about the
         * exchange itself (a garbled answer, a broken gzip stream) are all "the network failed":
         * the engine backs off and tries again, which is the only useful reaction. */
        break;
    }
    return f;
}

/* The request between fsa_transport_begin and fsa_transport_end: everything curl's handle points
 * at while it runs. */
struct fsa_transport_req {
    bool active;
    const char *method;
    char *url;
    char *full_path;
    unsigned char *gz;
    struct curl_slist *headers;
    sink_t sink;
    upload_t up;
};

static struct fsa_transport_req *req_new(void)
{
    return fsa_calloc(1, sizeof(struct fsa_transport_req));
}

/* Step 1: the arguments. */
static fsa_status_t check_request(const fsa_transport_t *t, const char *method,
                                  const char *path_and_query, const void *body, size_t len,
                                  fsa_http_response_t *resp)
{
    if (t == NULL || method == NULL || path_and_query == NULL) {
        say(resp->error, sizeof resp->error, "transport, method and path are required");
        return FSA_EINVAL;
    }
    bool post = strcmp(method, "POST") == 0;
    if (!post && strcmp(method, "GET") != 0) {
        say(resp->error, sizeof resp->error, "method \"%.16s\" is not GET or POST", method);
        return FSA_EINVAL;
    }
    if (!path_is_valid(path_and_query)) {
        say(resp->error, sizeof resp->error,
            "path \"%.100s\" must start with '/' and hold visible ASCII only", path_and_query);
        return FSA_EINVAL;
    }
    if (body == NULL && len > 0) {
        say(resp->error, sizeof resp->error, "body is NULL but len is %zu", len);
        return FSA_EINVAL;
    }
    if (!post && len > 0) {
        say(resp->error, sizeof resp->error, "a GET carries no body");
        return FSA_EINVAL;
    }
    if (t->req->active) {
        say(resp->error, sizeof resp->error, "a request is already in flight on this transport");
        return FSA_EINVAL;
    }
    return FSA_OK;
}

/* Step 2: the URL and the path the signature covers. */
static fsa_status_t build_url(const fsa_transport_t *t, struct fsa_transport_req *q,
                              const char *path_and_query, fsa_http_response_t *resp)
{
    size_t plen = strlen(path_and_query);
    size_t blen = strlen(t->base_url);
    size_t bplen = strlen(t->base_path);
    q->url = fsa_malloc(blen + plen + 1);
    q->full_path = fsa_malloc(bplen + plen + 1);
    if (q->url == NULL || q->full_path == NULL) {
        say(resp->error, sizeof resp->error, "out of memory building the URL");
        return FSA_ENOMEM;
    }
    memcpy(q->url, t->base_url, blen);
    memcpy(q->url + blen, path_and_query, plen + 1);
    memcpy(q->full_path, t->base_path, bplen);
    memcpy(q->full_path + bplen, path_and_query, plen + 1);
    return FSA_OK;
}

/* Step 3: the headers, the auth headers signed over the body exactly as it goes out. */
static fsa_status_t build_headers(struct fsa_transport_req *q, bool post, bool compressed,
                                  fsa_transport_sign_fn sign, void *sign_arg,
                                  fsa_http_response_t *resp)
{
    fsa_status_t st = FSA_OK;
    if (post) {
        st = add_header(&q->headers, "Content-Type", "application/json");
        if (st == FSA_OK && compressed)
            st = add_header(&q->headers, "Content-Encoding", "gzip");
        /* Without this curl sends "Expect: 100-continue" for larger bodies and holds them back
         * until the server answers "100 Continue" or a second passes: a round trip lost for no
         * gain, since our bodies are small and the server reads them all anyway. */
        if (st == FSA_OK) {
            /* A header with nothing after the colon tells curl to leave that header out. */
            struct curl_slist *l = curl_slist_append(q->headers, "Expect:");
            if (l != NULL)
                q->headers = l;
            else
                st = FSA_ENOMEM;
        }
    }
    if (st == FSA_OK)
        st = add_header(&q->headers, "Accept", "application/json");
    if (st != FSA_OK || sign == NULL)
        goto out;
    fsa_auth_headers_t auth;
    memset(&auth, 0, sizeof auth);
    /* The path the server sees, prefix included: that is what it verifies. */
    st = sign(sign_arg, q->method, q->full_path, q->up.data, q->up.len, &auth);
    if (st != FSA_OK) {
        say(resp->error, sizeof resp->error, "signing %s %.100s failed: %s", q->method,
            q->full_path, fsa_status_str(st));
        return st;
    }
    if (!header_value_is_valid(auth.device_id, sizeof auth.device_id) ||
        !header_value_is_valid(auth.timestamp, sizeof auth.timestamp) ||
        !header_value_is_valid(auth.nonce, sizeof auth.nonce) ||
        !header_value_is_valid(auth.signature, sizeof auth.signature)) {
        say(resp->error, sizeof resp->error,
            "the sign callback returned an empty or malformed auth header");
        return FSA_EINVAL;
    }
    st = add_header(&q->headers, "X-Device-Id", auth.device_id);
    if (st == FSA_OK)
        st = add_header(&q->headers, "X-Timestamp", auth.timestamp);
    if (st == FSA_OK)
        st = add_header(&q->headers, "X-Nonce", auth.nonce);
    if (st == FSA_OK)
        st = add_header(&q->headers, "X-Signature", auth.signature);
out:
    if (st != FSA_OK)
        say(resp->error, sizeof resp->error, "building the request headers failed: %s",
            fsa_status_str(st));
    return st;
}

/* Step 4: curl's handle pointed at this request. */
static fsa_status_t set_request(fsa_transport_t *t, struct fsa_transport_req *q, bool post,
                                fsa_http_response_t *resp)
{
    CURLcode rc = curl_easy_setopt(t->curl, CURLOPT_URL, q->url);
    if (rc == CURLE_OK && post) {
        rc = curl_easy_setopt(t->curl, CURLOPT_POST, 1L);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(t->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->up.len);
    } else if (rc == CURLE_OK) {
        rc = curl_easy_setopt(t->curl, CURLOPT_HTTPGET, 1L);
    }
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(t->curl, CURLOPT_READFUNCTION, on_read);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(t->curl, CURLOPT_READDATA, &q->up);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(t->curl, CURLOPT_SEEKFUNCTION, on_seek);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(t->curl, CURLOPT_SEEKDATA, &q->up);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(t->curl, CURLOPT_WRITEFUNCTION, on_write);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(t->curl, CURLOPT_WRITEDATA, &q->sink);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(t->curl, CURLOPT_HTTPHEADER, q->headers);
    if (rc != CURLE_OK) {
        say(resp->error, sizeof resp->error, "libcurl refused the request for %.120s: %s", q->url,
            curl_easy_strerror(rc));
        return rc == CURLE_OUT_OF_MEMORY ? FSA_ENOMEM : FSA_EINVAL;
    }
    return FSA_OK;
}

/*
 * Learns the next body's level from a request that ended with a 2xx answer to a compressed body,
 * by which side was the slower: this transport's caller, or the link and the server.
 * - The answer was complete before the caller came for it (fsa_transport_end found it there):
 *   the caller's own work is what holds things up, and level 6's extra CPU would hold them up
 *   more. Level 1. (A drain on a fast link: the engine applies one batch's results while the
 *   next is on the wire.)
 * - The caller waited for the answer longer than level 6 costs over level 1 for this body: that
 *   CPU fits in the wait, and its fewer bytes (~12%) shorten the time on the link. Level 6. (A
 *   slow link, or a busy server, where the bytes cost nothing more but save the link's time.)
 * - A wait in between: the level stays (so that the choice does not flip on noise).
 * Level 6 takes 2.1-3.7 times level 1's CPU on push bodies (zlib alone, docs/performance.md,
 * session 10): its extra is taken as 1.5 times the body's time at level 1, or 0.6 times its time
 * at level 6. An error answer (413, 429, 401, 5xx) may come before the server has read the body;
 * it, a failed request and a GET leave the level as it was.
 */
static void learn_gzip_level(fsa_transport_t *t, const struct fsa_transport_req *q, int status)
{
    if (q->gz == NULL || status < 200 || status > 299)
        return;
    const int64_t extra =
        t->last_gzip_level == FSA_GZIP_LEVEL_FAST ? t->gzip_ns / 2 * 3 : t->gzip_ns / 5 * 3;
    if (t->waited_ns <= 0)
        t->next_gzip_level = FSA_GZIP_LEVEL_FAST;
    else if (t->waited_ns > extra)
        t->next_gzip_level = FSA_GZIP_LEVEL_DEFAULT;
}

int fsa_transport_last_gzip_level(const fsa_transport_t *t)
{
    return t != NULL ? t->last_gzip_level : 0;
}

int fsa_transport_next_gzip_level(const fsa_transport_t *t)
{
    return t != NULL ? t->next_gzip_level : 0;
}

int64_t fsa_transport_last_wait_ns(const fsa_transport_t *t)
{
    return t != NULL ? t->waited_ns : 0;
}

/* The last step, in every case: nothing on the handle may point at the request once it ends. */
static void end_request(fsa_transport_t *t)
{
    struct fsa_transport_req *q = t->req;
    if (q->active)
        (void)curl_multi_remove_handle(t->multi, t->curl);
    (void)curl_easy_setopt(t->curl, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    (void)curl_easy_setopt(t->curl, CURLOPT_READDATA, (void *)NULL);
    (void)curl_easy_setopt(t->curl, CURLOPT_SEEKDATA, (void *)NULL);
    (void)curl_easy_setopt(t->curl, CURLOPT_WRITEDATA, (void *)NULL);
    curl_slist_free_all(q->headers);
    fsa_free(q->sink.body.p);
    fsa_free(q->gz);
    fsa_free(q->url);
    fsa_free(q->full_path);
    memset(q, 0, sizeof *q);
}

/* curl_multi_perform, counting the allocations that failed in it for the request in flight: those
 * are libcurl's work on the request (and the answer's, ours, into the sink), not what the caller
 * does between fsa_transport_begin and fsa_transport_end (the engine reads and compresses the
 * next batch meanwhile), which cannot change a request already handed over. */
static CURLMcode perform(fsa_transport_t *t, int *running)
{
    unsigned long before = fsa_alloc_failures();
    CURLMcode mc = curl_multi_perform(t->multi, running);
    t->req->sink.alloc_failures += fsa_alloc_failures() - before;
    return mc;
}

fsa_status_t fsa_transport_begin(fsa_transport_t *t, const char *method, const char *path_and_query,
                                 const void *body, size_t len, fsa_transport_sign_fn sign,
                                 void *sign_arg, fsa_http_response_t *resp)
{
    if (resp == NULL)
        return FSA_EINVAL;
    memset(resp, 0, sizeof *resp);
    resp->retry_after_ms = -1;
    fsa_status_t st = check_request(t, method, path_and_query, body, len, resp);
    if (st != FSA_OK)
        return st;
    struct fsa_transport_req *q = t->req;
    bool post = strcmp(method, "POST") == 0;
    bool compressed = post && t->gzip_min_bytes != SIZE_MAX && len >= t->gzip_min_bytes;
    int level = compressed ? t->next_gzip_level : 0;
    q->method = post ? "POST" : "GET";
    q->sink.max = t->max_response_bytes;
    q->up.data = body;
    q->up.len = len;
    st = build_url(t, q, path_and_query, resp);
    /* The same body, and still the same bytes: a caller that broke the rule (changed the body in
     * place, or freed it and built another at the same address) gets its body compressed anew,
     * never the member of other bytes. */
    t->used_ahead = st == FSA_OK && compressed && t->ahead.gz != NULL && t->ahead.src == body &&
                    t->ahead.src_len == len &&
                    fsa_gzip_member_of(t->ahead.gz, t->ahead.gz_len, body, len);
    if (t->used_ahead) {
        q->gz = t->ahead.gz;
        q->up.data = q->gz;
        q->up.len = t->ahead.gz_len;
        level = t->ahead.level;
        t->gzip_ns = t->ahead.ns;
        t->ahead.gz = NULL;
    } else if (st == FSA_OK && compressed) {
        size_t gz_len = 0;
        const int64_t t0 = t->port->mono_now(t->port->ctx).ns;
        st = fsa_gzip_compress(body, len, level, &q->gz, &gz_len);
        t->gzip_ns = t->port->mono_now(t->port->ctx).ns - t0;
        if (st != FSA_OK)
            say(resp->error, sizeof resp->error, "compressing the %zu-byte body failed: %s", len,
                fsa_status_str(st));
        q->up.data = q->gz;
        q->up.len = gz_len;
    }
    ahead_drop(t); /* used, or made for another body */
    if (st == FSA_OK)
        st = build_headers(q, post, compressed, sign, sign_arg, resp);
    if (st == FSA_OK)
        st = set_request(t, q, post, resp);
    if (st == FSA_OK) {
        t->curl_err[0] = '\0';
        CURLMcode mc = curl_multi_add_handle(t->multi, t->curl);
        if (mc != CURLM_OK) {
            st = mc == CURLM_OUT_OF_MEMORY ? FSA_ENOMEM : FSA_EINVAL;
            say(resp->error, sizeof resp->error, "libcurl refused the request: %s",
                curl_multi_strerror(mc));
        }
    }
    if (st != FSA_OK) {
        end_request(t);
        return st;
    }
    q->active = true;
    t->last_gzip_level = level;
    /* Sends what can be sent now (on a kept-alive connection, usually the whole request): the
     * server works on it while the caller does something else until fsa_transport_end. */
    int running = 0;
    (void)perform(t, &running);
    return FSA_OK;
}

/* How often the tick runs while a request waits: twice a second, so that what it delivers comes
 * within the second fieldsync.h promises for changes. */
#define TICK_MS 500

/* Runs the request in flight to its end; CURLE_OK or how it failed. */
static CURLcode run_to_end(fsa_transport_t *t)
{
    int running = 1;
    CURLMcode mc = CURLM_OK;
    t->waited_ns = 0;
    /* The tick's deadline, on the monotonic clock: its period holds whatever curl's wake-ups. */
    int64_t next_tick = t->port->mono_now(t->port->ctx).ns + TICK_MS * FSA_NS_PER_MS;
    while (mc == CURLM_OK) {
        mc = perform(t, &running);
        if (mc != CURLM_OK || running == 0)
            break;
        /* Wakes at activity on the socket or when curl's next timeout is due. The time in here
         * is the caller's wait for the link and the server (learn_gzip_level). */
        const int64_t t0 = t->port->mono_now(t->port->ctx).ns;
        int timeout_ms = 1000;
        if (t->tick != NULL)
            timeout_ms = t0 >= next_tick ? 0 : (int)((next_tick - t0) / FSA_NS_PER_MS) + 1;
        mc = curl_multi_poll(t->multi, NULL, 0, timeout_ms, NULL);
        const int64_t t1 = t->port->mono_now(t->port->ctx).ns;
        t->waited_ns += t1 - t0;
        if (t->tick != NULL && t1 >= next_tick) {
            t->tick(t->tick_arg);
            next_tick = t->port->mono_now(t->port->ctx).ns + TICK_MS * FSA_NS_PER_MS;
        }
    }
    if (mc != CURLM_OK)
        return mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_SEND_ERROR;
    CURLcode rc = CURLE_SEND_ERROR;
    int left = 0;
    CURLMsg *m;
    while ((m = curl_multi_info_read(t->multi, &left)) != NULL)
        if (m->msg == CURLMSG_DONE && m->easy_handle == t->curl)
            rc = m->data.result;
    return rc;
}

fsa_status_t fsa_transport_compress_ahead(fsa_transport_t *t, const void *body, size_t len)
{
    if (t == NULL || body == NULL)
        return FSA_EINVAL;
    ahead_drop(t);
    if (t->gzip_min_bytes == SIZE_MAX || len < t->gzip_min_bytes)
        return FSA_OK; /* it will go as it is */
    const int64_t t0 = t->port->mono_now(t->port->ctx).ns;
    fsa_status_t st =
        fsa_gzip_compress(body, len, t->next_gzip_level, &t->ahead.gz, &t->ahead.gz_len);
    if (st != FSA_OK)
        return st;
    t->ahead.ns = t->port->mono_now(t->port->ctx).ns - t0;
    t->ahead.src = body;
    t->ahead.src_len = len;
    t->ahead.level = t->next_gzip_level;
    return FSA_OK;
}

bool fsa_transport_last_compressed_ahead(const fsa_transport_t *t)
{
    return t != NULL && t->used_ahead;
}

fsa_status_t fsa_transport_poll(fsa_transport_t *t, bool *done)
{
    if (done != NULL)
        *done = false;
    if (t == NULL || done == NULL || !t->req->active)
        return FSA_EINVAL;
    int running = 1;
    /* A failure here is fsa_transport_end's to tell: the request is over either way. */
    *done = perform(t, &running) != CURLM_OK || running == 0;
    return FSA_OK;
}

fsa_status_t fsa_transport_end(fsa_transport_t *t, fsa_http_response_t *resp)
{
    if (t == NULL || resp == NULL || !t->req->active) {
        if (resp != NULL)
            say(resp->error, sizeof resp->error, "no request in flight");
        return FSA_EINVAL;
    }
    struct fsa_transport_req *q = t->req;
    CURLcode rc = run_to_end(t);
    collect_info(t, &q->up, resp);
    if (rc == CURLE_OK)
        learn_gzip_level(t, q, resp->status);
    if (rc != CURLE_OK) {
        curl_failure_t f = map_curl_error(rc, &q->sink, resp->status);
        fsa_status_t st = f.st;
        if (st == FSA_ETOOLARGE)
            say(resp->error, sizeof resp->error, "%s: %s %.120s: over %zu bytes", f.what, q->method,
                q->url, t->max_response_bytes);
        else
            say(resp->error, sizeof resp->error, "%s: %s %.120s: %s", f.what, q->method, q->url,
                t->curl_err[0] != '\0' ? t->curl_err : curl_easy_strerror(rc));
        resp->reused_connection = false;
        end_request(t);
        return st;
    }
    /* An error answer after an allocation failed in libcurl's work on the request may answer a
     * request that went out other than asked: libcurl 7.88 (Debian 12) drops a URL's query when its
     * copy cannot be allocated (its url.c ignores that curl_url_get() failed) and sends the rest,
     * and the server refuses the signature, which covers the query, with a 401. Taken at its word,
     * that was "the server refused this device" and an hour's backoff for a moment without memory.
     */
    if (resp->status >= 400 && q->sink.alloc_failures != 0) {
        say(resp->error, sizeof resp->error,
            "out of memory during the request (HTTP %d ignored): %s %.120s", resp->status,
            q->method, q->url);
        end_request(t);
        return FSA_ENOMEM;
    }
    char retry_after[RETRY_AFTER_MAX], date[RETRY_AFTER_MAX];
    if (header_copy(t->curl, "Retry-After", retry_after, sizeof retry_after))
        resp->retry_after_ms = parse_retry_after(
            t->port, retry_after, header_copy(t->curl, "Date", date, sizeof date) ? date : NULL);
    if (q->sink.body.p == NULL) {
        q->sink.body.p = fsa_malloc(1);
        if (q->sink.body.p == NULL) {
            say(resp->error, sizeof resp->error, "out of memory for an empty answer");
            end_request(t);
            return FSA_ENOMEM;
        }
        q->sink.body.p[0] = '\0';
    }
    resp->body = q->sink.body.p;
    resp->body_len = q->sink.body.len;
    q->sink.body.p = NULL;
    end_request(t);
    return FSA_OK;
}

fsa_status_t fsa_transport_request(fsa_transport_t *t, const char *method,
                                   const char *path_and_query, const void *body, size_t len,
                                   fsa_transport_sign_fn sign, void *sign_arg,
                                   fsa_http_response_t *resp)
{
    fsa_status_t st =
        fsa_transport_begin(t, method, path_and_query, body, len, sign, sign_arg, resp);
    return st == FSA_OK ? fsa_transport_end(t, resp) : st;
}
