/* fieldsync-server: the pure steps of a device request (routing, authentication, body, query). */
#ifndef FSA_SYNC_SERVER_REQUEST_H
#define FSA_SYNC_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port/daemon.h"
#include "port/limits.h"
#include "storage/model.h"
#include "sync/codec.h"
#include "sync/signer.h"

/*
 * Internal to the server (request.c defines them); declared here so that the fuzz targets in
 * tests/fuzz/ drive the same code the server runs on (method, target, headers, body), without
 * libmicrohttpd, sockets or the store. No I/O, no clock (now is passed in), no global state: the
 * nonce cache, the statistics and the fault generator stay in server.c, around these steps.
 */

#define FSA__SERVER_URI_MAX 2048 /* a request target this long or longer is refused (414) */
#define FSA__SERVER_PULL_DEFAULT_LIMIT 100 /* a pull without limit= */
#define FSA__SERVER_CURSOR_PREFIX "v1."    /* a cursor is this and a change number */

struct fsa_store_scope;

/* One device of the devices file, its secret parsed, and its scope (NULL: none). */
typedef struct fsa__server_device {
    char id[FSA_ID_BYTES];
    fsa_signer_key_t key;
    struct fsa_store_scope *scope;
} fsa__server_device_t;

/* How a request is refused: the HTTP status, the protocol's error code and one line (static, or
 * pointing into the fsa_model_err_t given to the step that failed). */
typedef struct fsa__server_fail {
    unsigned http;
    const char *code;
    const char *message;
} fsa__server_fail_t;

/* Where a request target leads. */
typedef struct fsa__server_route {
    char path[FSA__SERVER_URI_MAX]; /* the target without its query */
    const char *query;              /* points into the target after '?', or "" */
    bool admin;                     /* under /admin/v1/ */
    bool push;                      /* /v1/devices/<device>/ops */
    bool pull;                      /* /v1/devices/<device>/changes */
    char device[FSA_ID_BYTES + 1];  /* the path's device (push and pull only) */
} fsa__server_route_t;

/* A compressed body can be a little larger than its inflated form (incompressible data). */
#define FSA__SERVER_RAW_BODY_MAX (FSA_LIMIT_BODY_BYTES + 64 * 1024)
/* A refused body is still read (and dropped) up to this size so that the 413 reaches a client
 * that sends without waiting for "100 Continue" (PROTOCOL.md section 3); past it the server
 * answers at once and closes, which may reset the connection. 16 MiB is the ceiling of the body
 * limit (port/limits.h) and bounds the work a refused client costs. */
#define FSA__SERVER_DISCARD_MAX ((uint64_t)FSA_LIMIT_BODY_BYTES_MAX)

/* The device id among devices[0..n) (sorted by id), or NULL. */
const fsa__server_device_t *fsa__server_device_find(const fsa__server_device_t *devices, size_t n,
                                                    const char *id);

/* A decimal integer of at most 18 digits, optionally negative (so it can neither overflow nor, as
 * a timestamp, make the skew arithmetic overflow); false when s is NULL or anything else. */
bool fsa__server_parse_i64(const char *s, int64_t *out);

/* X-Nonce: exactly FSA_LIMIT_NONCE_HEX hex digits, as two 64-bit halves; false otherwise. */
bool fsa__server_nonce_parse(const char *hex, uint64_t *a, uint64_t *b);

/* Routes uri (a NUL-terminated target shorter than FSA__SERVER_URI_MAX) into *out. */
void fsa__server_route(const char *uri, fsa__server_route_t *out);

/* Why authentication failed, so the server counts it; FSA__AUTH_OK when it did not. */
typedef enum fsa__server_auth_verdict {
    FSA__AUTH_OK = 0,
    FSA__AUTH_UNKNOWN_DEVICE, /* no or unknown X-Device-Id (401 unknown_device) */
    FSA__AUTH_BAD_SIGNATURE,  /* a header missing or malformed, or the signature (401) */
    FSA__AUTH_NOT_SIGNER,     /* the path names another device than the signer (401) */
    FSA__AUTH_CLOCK_SKEW      /* X-Timestamp more than FSA_LIMIT_SKEW_MS from now (401) */
} fsa__server_auth_verdict_t;

/* A device request as received: every string NUL terminated, headers NULL when absent. */
typedef struct fsa__server_auth_in {
    const char *method;
    const char *uri; /* the request target exactly as sent (it is signed byte for byte) */
    const char *device_id, *timestamp, *nonce, *signature; /* X-Device-Id ... X-Signature */
    const char *body;                                      /* raw body as sent; NULL: empty */
    size_t len;
    const char *path_device; /* the device the path names; NULL: none */
    int64_t now_ms;          /* the server's wall clock */
} fsa__server_auth_in_t;

typedef struct fsa__server_auth {
    fsa__server_auth_verdict_t verdict;
    fsa__server_fail_t fail;         /* when verdict is not FSA__AUTH_OK */
    const fsa__server_device_t *dev; /* the signer on FSA__AUTH_OK, else NULL */
    int64_t ts;                      /* X-Timestamp, parsed */
    uint64_t nonce_a, nonce_b;       /* X-Nonce's 16 bytes, parsed */
} fsa__server_auth_t;

/*
 * PROTOCOL.md section 5 without the replay check: the device among devices[0..n) (sorted by id),
 * the headers' shapes, the signature, that the path names the signer, the clock skew. On
 * FSA__AUTH_OK the caller still checks the nonce (ts and nonce_a/b) against its cache.
 */
void fsa__server_auth_check(const fsa__server_device_t *devices, size_t n,
                            const fsa__server_auth_in_t *in, fsa__server_auth_t *out);

/*
 * The checks of a /v1/ request that need no body, run on its headers before any of it is read:
 * a known device (in->device_id), the shapes of X-Timestamp, X-Nonce and X-Signature, the clock
 * window. The same verdicts and answers as fsa__server_auth_check gives after the body (the
 * signature itself is not checked: it covers the body), so a client sees no difference but the
 * cost. On FSA__AUTH_OK out->dev, out->ts and out->nonce_a/b are set; in->method, uri, body and
 * path_device are not read.
 */
void fsa__server_precheck(const fsa__server_device_t *devices, size_t n,
                          const fsa__server_auth_in_t *in, fsa__server_auth_t *out);

/* Request smuggling (a proxy and this server reading different bodies): true when the counts of
 * Content-Length and Transfer-Encoding headers frame a body one way only (at most one of either,
 * never both). */
bool fsa__server_framing_ok(unsigned content_length, unsigned transfer_encoding);

/* True when the Expect header (NULL: absent) asks for "100-continue" (the client waits before
 * sending its body). */
bool fsa__server_expects_continue(const char *expect);

/* What to do with a body by its headers. */
typedef enum fsa__server_body_plan {
    FSA__BODY_READ,  /* read it (a body without Content-Length is bounded while it comes) */
    FSA__BODY_DROP,  /* over FSA__SERVER_RAW_BODY_MAX: read and drop it, 413 after it */
    FSA__BODY_REFUSE /* over FSA__SERVER_DISCARD_MAX, or the client waits: 413 at once */
} fsa__server_body_plan_t;

/* PROTOCOL.md section 3: a refusal must reach a client that is still sending. A client waiting
 * for "100 Continue" has sent nothing yet and gets the 413 at once; a client that sends its body
 * without waiting has its body read and dropped (up to FSA__SERVER_DISCARD_MAX) and the 413 after
 * it, because closing a socket with unread data resets the connection, and a reset can destroy
 * the answer before the client reads it. content_length and expect: the headers, NULL when
 * absent (a Content-Length that does not parse is left to libmicrohttpd). */
fsa__server_body_plan_t fsa__server_body_plan(const char *content_length, const char *expect);

/* True when an Accept-Encoding header (NULL: absent) names gzip and does not refuse it with q=0
 * (q=0.5 accepts; q=0, q=0.0 refuse). */
bool fsa__server_accepts_gzip(const char *accept_encoding);

/* The admin API's resources, by path (under /admin/v1/). */
typedef enum fsa__server_admin_res {
    FSA__ADMIN_NONE = 0, /* no such resource (404) */
    FSA__ADMIN_STATS,    /* GET stats */
    FSA__ADMIN_SEED,     /* POST entities */
    FSA__ADMIN_OPS,      /* POST ops */
    FSA__ADMIN_ENTITY,   /* GET entities/<type>/<id> */
    FSA__ADMIN_AUTOCLOSE /* POST jobneeds/<id>/autoclose */
} fsa__server_admin_res_t;

typedef struct fsa__server_admin_route {
    fsa__server_admin_res_t res;
    const char *method;    /* the method the resource takes ("GET" or "POST"); NULL: none */
    fsa_type_t type;       /* FSA__ADMIN_ENTITY */
    char id[FSA_ID_BYTES]; /* FSA__ADMIN_ENTITY and FSA__ADMIN_AUTOCLOSE: a valid id */
} fsa__server_admin_route_t;

/* Routes an admin path (the target without its query, starting "/admin/v1/") into *out. */
void fsa__server_admin_route(const char *path, fsa__server_admin_route_t *out);

/*
 * A push body as the server reads it: content_encoding NULL or "identity" (as is) or "gzip"
 * (inflated within FSA_LIMIT_BODY_BYTES; a gzip bomb costs at most one limit's worth of work),
 * then fsa_codec_decode_push(). body may be NULL when len is 0.
 * On FSA_OK *push holds the batch (fsa_codec_push_free). Otherwise *push is empty and *fail the
 * answer: 400 malformed (FSA_EINVAL), 413 too_large (FSA_ETOOLARGE), 500 internal (FSA_ENOMEM);
 * its message may point into *cerr.
 */
fsa_status_t fsa__server_push_body(const char *content_encoding, const char *body, size_t len,
                                   fsa_codec_push_t *push, fsa_model_err_t *cerr,
                                   fsa__server_fail_t *fail) FSA_MUST_CHECK;

/* A pull's query string ("since=v1.N&limit=M", both optional, no percent-decoding): true with
 * *since (0 when absent or empty) and *limit (100 when absent, else 1..FSA_STORE_PULL_MAX), false
 * when malformed (400). */
bool fsa__server_pull_query(const char *query, int64_t *since, int64_t *limit);

/*
 * Body bytes held per client address, so that one address cannot hold the whole body budget
 * that every device's push shares (server.c keeps one table, under a lock of its own). A key is
 * the address's fsa_socket_client_key (port/daemon.h). The table is open addressing with linear
 * probing over cap slots (a power of two), fixed in size: a slot is taken by a key while it holds
 * bytes and freed when they are given back, so it needs a slot for each address holding bytes at
 * once, at most one per open connection.
 */
#define FSA__SERVER_ADDR_KEY FSA_SOCKET_CLIENT_KEY

typedef struct fsa__server_hold {
    unsigned char key[FSA__SERVER_ADDR_KEY]; /* key[0] == 0: a free slot */
    long long bytes;
} fsa__server_hold_t;

typedef struct fsa__server_holds {
    fsa__server_hold_t *slot; /* cap slots, zeroed by the caller */
    size_t cap;               /* a power of two */
} fsa__server_holds_t;

/* Adds n bytes to key's holding when it stays within share, and true; false when it would go
 * past share or no slot is left (nothing added). */
bool fsa__server_hold_take(fsa__server_holds_t *h, const unsigned char *key, long long n,
                           long long share);

/* Gives back n bytes of key's holding (taken before); its slot is freed at zero. */
void fsa__server_hold_give(fsa__server_holds_t *h, const unsigned char *key, long long n);

/* What key holds now (0: nothing). */
long long fsa__server_hold_of(const fsa__server_holds_t *h, const unsigned char *key);

#endif
