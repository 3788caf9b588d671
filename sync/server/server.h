/* fieldsync-server: the HTTP server of PROTOCOL.md (push, pull, auth, limits, admin, faults). */
#ifndef FSA_SYNC_SERVER_SERVER_H
#define FSA_SYNC_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port/port.h"

/* Fault injection (all off by default). Rates are probabilities 0..1 per /v1/ request. */
typedef struct fsa_server_faults {
    int64_t latency_ms; /* added before a request is processed */
    double rate_5xx;    /* answer 500 internal (injected), nothing applied */
    double rate_429;    /* answer 429 with Retry-After, nothing applied */
    int retry_after_s;  /* the Retry-After of injected 429s (default 1) */
    double rate_drop;   /* process and commit, then close the connection without an answer */
    double rate_reset;  /* close the connection before reading the request's body */
    uint64_t seed;      /* the fault generator's seed */
} fsa_server_faults_t;

typedef struct fsa_server_config {
    const char *host;             /* listen address: a numeric IPv4/IPv6 address or a host name */
    const char *port;             /* decimal port; "0" picks a free one */
    const char *db_path;          /* the store (created when missing) */
    const char *devices_file;     /* {"devices": [{"id", "secret"}]}, mode 0600 or stricter */
    const char *admin_token_file; /* NULL: no admin API (its paths answer 404) */
    /* Where the admin API listens (with admin_token_file): "HOST:PORT" (port 0: a free one) or
     * "unix:PATH" (a socket file of mode 0600). NULL: "127.0.0.1:0". Never the device listener,
     * which answers /admin/ paths as unknown. A HOST that is not loopback is refused unless
     * admin_remote is set. */
    const char *admin_listen;
    bool admin_remote;
    const char *tls_cert;    /* PEM certificate chain; NULL for plain HTTP */
    const char *tls_key;     /* PEM private key, mode 0600 or stricter */
    int64_t op_retention_ms; /* op outcomes older than this are removed; <= 0: default */
    /* Requests a second one device may make (burst: 4 times as many); 0: the default,
     * FSA_LIMIT_DEVICE_REQ_PER_S (port/limits.h), at most FSA_LIMIT_DEVICE_REQ_PER_S_MAX. */
    int device_rate;
    /* Seconds a request's headers and body may take; 0: FSA_LIMIT_SERVER_REQUEST_S. */
    int request_deadline_s;
    /* Connections from one address at once; 0: FSA_LIMIT_SERVER_CONNECTIONS_PER_ADDR. */
    int per_addr_connections;
    /* Seconds a request's headers may take (from the connection's start, or from the previous
     * answer plus the idle timeout); 0: FSA_LIMIT_SERVER_HEADER_S. */
    int header_timeout_s;
    fsa_server_faults_t faults;
} fsa_server_config_t;

/* How long op outcomes are kept by default: at least as long as a device may stay offline and
 * still resend an op it recorded (a resend after that would apply again). 180 days. */
#define FSA_SERVER_OP_RETENTION_MS (180LL * 24 * 3600 * 1000)

typedef struct fsa_server fsa_server_t;

/*
 * Loads the secret files (refusing files readable or writable by group or others), opens the
 * store, binds the listening socket and starts serving on MHD's thread pool.
 * On FSA_OK *out is the running server. Otherwise *out is NULL and err (errlen bytes) holds one
 * line naming the problem (never a secret). Returns FSA_OK; FSA_EINVAL (a malformed file or
 * setting); FSA_EPERM (a secret file with loose permissions); FSA_ENOTFOUND (a missing file);
 * FSA_EBUSY (the address is in use); FSA_EIO; FSA_ESCHEMA; FSA_EUNSUPPORTED (TLS asked but
 * libmicrohttpd lacks it); FSA_ENOMEM.
 */
fsa_status_t fsa_server_start(const fsa_server_config_t *cfg, fsa_server_t **out, char *err,
                              size_t errlen) FSA_MUST_CHECK;

/* "http://HOST:PORT" (or https) with the real port. Owned by the server. */
const char *fsa_server_url(const fsa_server_t *srv);

/* The admin API's address: "http://HOST:PORT" (or https) with the real port, or "unix:PATH";
 * "" without the admin API. Owned by the server. */
const char *fsa_server_admin_url(const fsa_server_t *srv);

/* Stops accepting connections, lets requests in flight finish (at most 10 s), stops the threads,
 * closes the store cleanly and frees the server. NULL is accepted. */
void fsa_server_stop(fsa_server_t *srv);

#endif
