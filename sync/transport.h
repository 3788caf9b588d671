/* fieldsync: the HTTP(S) transport to the server (libcurl; the only module that includes curl). */
#ifndef FSA_SYNC_TRANSPORT_H
#define FSA_SYNC_TRANSPORT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port/port.h"
#include "port/status.h"

/*
 * One transport talks to one server over one reused connection (keep-alive). It is not thread
 * safe: one per thread (the sync engine has one). Bodies above a size threshold are sent gzip
 * compressed; the signature (PROTOCOL.md section 5) covers the bytes exactly as sent, so the
 * transport compresses first and then asks the caller's sign callback for the auth headers.
 *
 * The compression level follows which side is the slower, the transport's caller or the link and
 * the server. A body is compressed at zlib's level 6 until the first answer; after each 2xx answer
 * to a compressed body, the next is compressed at level 1 (a quarter to half the CPU, ~12% more
 * bytes) when that answer was complete before fsa_transport_end was called for it (the caller's
 * own work held things up, as in a drain on a fast link), and at level 6 when fsa_transport_end
 * waited for it longer than level 6 would cost over level 1 for that body (the CPU fits in the
 * wait, and the bytes it saves shorten the time on a slow link); a wait in between leaves the
 * level. A transport failure, an error answer and a GET leave it as it was. The figures are in
 * docs/performance.md (session 10).
 *
 * Security defaults: TLS peer and host verification always on (there is no option to turn them
 * off); optional pinned public keys; plain http:// refused unless the host is loopback
 * (127.0.0.0/8, ::1, localhost) and no proxy is set, or allow_insecure_http is set (through a
 * proxy the signed requests would leave the device in clear).
 */

typedef struct fsa_transport fsa_transport_t;

typedef struct fsa_transport_opts {
    const char *base_url;       /* "https://host[:port][/prefix]"; required; copied */
    const char *ca_file;        /* PEM bundle to trust instead of the system's; NULL: system */
    const char *pins;           /* "sha256//<base64>[;sha256//<base64>...]": the server's public
                                   key must match one; NULL: no pinning */
    const char *client_cert;    /* PEM client certificate for mutual TLS; NULL: none */
    const char *client_key;     /* its PEM key (required with client_cert). The three files
                                   are read once, by fsa_transport_new (the key as a secret:
                                   fsa_file_read's private checks), never by libcurl */
    const char *proxy;          /* "http://proxy:3128" etc.; NULL: no proxy (the environment's
                                   proxy variables are ignored: configuration is explicit); no
                                   user:password@ (proxy authentication is not supported) */
    bool allow_insecure_http;   /* permit http:// to a non-loopback host or through a proxy */
    int64_t connect_timeout_ms; /* 0: 10 s */
    int64_t total_timeout_ms;   /* one whole request; 0: 60 s */
    size_t gzip_min_bytes;      /* compress request bodies at least this large (at the level
                                   chosen above); 0: 1024; SIZE_MAX: never */
    size_t max_response_bytes;  /* a larger (inflated) answer fails with FSA_ETOOLARGE;
                                   0: 8 MiB */
    const atomic_int *cancel;   /* once it reads non-zero, a request on the wire ends within
                                   about a second, unanswered (FSA_ENET); NULL: never. Not
                                   copied: it must outlive the transport */
    void (*tick)(void *arg);    /* called with tick_arg on the waiting thread every half second
                                   while it waits for an answer (the library's listeners hear of
                                   changes meanwhile; the engine's retry waits call it too);
                                   NULL: never. It must not use this transport */
    void *tick_arg;
} fsa_transport_opts_t;

/* The authentication headers of PROTOCOL.md section 5, filled by the sign callback. */
typedef struct fsa_auth_headers {
    char device_id[129];
    char timestamp[24];
    char nonce[33];
    char signature[65];
} fsa_auth_headers_t;

/*
 * Computes the auth headers for a request whose body is exactly wire_body (after compression).
 * path_and_query is what follows the host in the URL, e.g. "/v1/devices/dev001/ops". Returns
 * FSA_OK or an error that aborts the request (returned by fsa_transport_request).
 */
typedef fsa_status_t (*fsa_transport_sign_fn)(void *arg, const char *method,
                                              const char *path_and_query, const void *wire_body,
                                              size_t wire_len, fsa_auth_headers_t *out);

/* An answer. body is malloc'ed, NUL terminated, inflated if the server compressed it; free with
 * fsa_http_response_clear(). */
typedef struct fsa_http_response {
    int status; /* HTTP status; 0 when no answer arrived */
    char *body;
    size_t body_len;
    int64_t retry_after_ms; /* from Retry-After (seconds or HTTP date); -1 when absent */
    size_t wire_bytes_sent; /* request bytes on the wire (headers + body, as sent) */
    size_t wire_bytes_received;
    bool reused_connection; /* the request went over an already open connection */
    char error[256];        /* on a transport failure: one line naming it */
} fsa_http_response_t;

void fsa_http_response_clear(fsa_http_response_t *r);

/*
 * Initialises libcurl for the process, once, with the project's allocator (port/alloc.h); later
 * calls return the first one's result. fsa_transport_new() calls it; a program that also uses
 * libcurl directly calls it before its own first libcurl call. FSA_OK or FSA_ENOMEM.
 */
fsa_status_t fsa_transport_global_init(void) FSA_MUST_CHECK;

/*
 * Creates a transport. port is the device's clock (wall_now measures a Retry-After date when the
 * answer has no Date header: a simulated device waits on its virtual clock); it must outlive the
 * transport. On FSA_OK *out is set; otherwise *out is NULL and err holds one line.
 * Returns FSA_OK; FSA_EINVAL (no port, missing or malformed base_url, a scheme other than
 * http/https, plain http to a non-loopback host or through a proxy without allow_insecure_http,
 * client_cert without client_key, a malformed pin list, a malformed proxy or one with
 * credentials, a CA file or client certificate without a PEM certificate); FSA_ENOMEM; a TLS
 * file's read status (FSA_ENOTFOUND, FSA_EPERM for a key others may read, FSA_EIO for a key
 * that is a symlink, ...), err starting "CA file: ", "client certificate: " or "client key: ".
 */
fsa_status_t fsa_transport_new(const fsa_port_t *port, const fsa_transport_opts_t *opts,
                               fsa_transport_t **out, char *err, size_t errlen) FSA_MUST_CHECK;

/* Frees the transport and closes its connection. NULL is accepted. */
void fsa_transport_free(fsa_transport_t *t);

/*
 * Sends one request: method "GET" or "POST", path_and_query appended to the base URL, body (len
 * bytes; NULL/0 for none) sent as application/json, gzip-compressed when len >= gzip_min_bytes (at
 * the level chosen above), signed by sign(sign_arg, ...) when sign is not NULL. Asks for gzip
 * answers.
 * resp is filled in every case (cleared first).
 * Returns FSA_OK when an HTTP answer arrived, whatever its status; FSA_ENET (cannot resolve,
 * connect refused, reset, DNS); FSA_ETIMEOUT (connect or total timeout); FSA_ETLS (certificate
 * not trusted, host mismatch, pin mismatch, handshake failure); FSA_ETOOLARGE (the answer is over
 * max_response_bytes); FSA_EINVAL; FSA_ENOMEM; or the sign callback's error.
 */
fsa_status_t fsa_transport_request(fsa_transport_t *t, const char *method,
                                   const char *path_and_query, const void *body, size_t len,
                                   fsa_transport_sign_fn sign, void *sign_arg,
                                   fsa_http_response_t *resp) FSA_MUST_CHECK;

/*
 * The same request in two halves, so that the caller can work while the server does:
 * fsa_transport_begin builds, compresses, signs and starts sending it, and returns at once with
 * FSA_OK (the request is in flight) or with an error as fsa_transport_request would (nothing is in
 * flight; resp says why). body must stay valid until fsa_transport_end, which waits for the
 * answer and returns what fsa_transport_request returns (FSA_EINVAL when nothing is in flight).
 * One request in flight per transport; fsa_transport_free abandons one.
 */
fsa_status_t fsa_transport_begin(fsa_transport_t *t, const char *method, const char *path_and_query,
                                 const void *body, size_t len, fsa_transport_sign_fn sign,
                                 void *sign_arg, fsa_http_response_t *resp) FSA_MUST_CHECK;
fsa_status_t fsa_transport_end(fsa_transport_t *t, fsa_http_response_t *resp) FSA_MUST_CHECK;
/*
 * Compresses body (len bytes) now, as fsa_transport_begin would, for the next request's body, so
 * that the work is done while another request is on the wire (the engine's next batch while the
 * server works on one). The next fsa_transport_begin or fsa_transport_request takes it when its
 * body is this same one (the same pointer and length) with the same bytes (the member's CRC-32 and
 * size are checked against them: ~12 us per 40 KB on x86-64), and drops it otherwise, compressing
 * its body itself: a body changed or rebuilt at the same address meanwhile costs the work again,
 * never the wrong bytes on the wire. A body below the gzip threshold is left as it is. Returns
 * FSA_OK, FSA_EINVAL (t or body NULL), or how the compression failed (then nothing is kept, and
 * the request compresses its body itself).
 */
fsa_status_t fsa_transport_compress_ahead(fsa_transport_t *t, const void *body,
                                          size_t len) FSA_MUST_CHECK;
/* For tests: whether the last request's body was the one compressed ahead (false for NULL). */
bool fsa_transport_last_compressed_ahead(const fsa_transport_t *t);
/* Moves the request in flight on without waiting; *done is set when its answer is complete (or it
 * failed: fsa_transport_end tells which). FSA_EINVAL when nothing is in flight. */
fsa_status_t fsa_transport_poll(fsa_transport_t *t, bool *done) FSA_MUST_CHECK;

/* True when host (a URL's host part, brackets allowed for IPv6) is loopback: 127.0.0.0/8, ::1,
 * "localhost". Pure; exposed for tests. */
bool fsa_transport_host_is_loopback(const char *host);

/* For tests and diagnostics: the zlib level (1 or 6) the body of the last request that went out
 * was compressed at; 0 when it was sent as it was (a GET, a small body), before any request, and
 * for a NULL t. */
int fsa_transport_last_gzip_level(const fsa_transport_t *t);

/* For tests and diagnostics: the level the next compressed body will go at (1 or 6; 0 for a
 * NULL t), and how long (ns, on the port's monotonic clock) fsa_transport_end waited for the
 * last answer (0: it was there already; and for a NULL t). */
int fsa_transport_next_gzip_level(const fsa_transport_t *t);
int64_t fsa_transport_last_wait_ns(const fsa_transport_t *t);

#endif
