/* fieldsync tests: runs the real fieldsync-server binary and talks signed HTTP to it (libcurl). */
#ifndef FSA_TESTS_SYNC_SERVER_HARNESS_H
#define FSA_TESTS_SYNC_SERVER_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sync/signer.h"

/*
 * Shared by the integration tests and the server benchmark. Every server runs in its own temp dir
 * (mkdtemp) holding its database, devices file (devices "dev000".."devNNN", each with a secret
 * derived from its number: th_device_key), admin token file and stderr log; th_dir_remove() cleans
 * it up. The binary is FSA_SERVER_BIN, run through FSA_TEST_EMULATOR (words joined by "|", may
 * be empty) when cross-compiled, or through $FSA_TEST_SERVER_WRAP (the same form, e.g.
 * "valgrind|--tool=callgrind|--callgrind-out-file=/tmp/cg.out", to profile it) in a host build.
 *
 * The server's admin API has a listener of its own (--admin-listen, 127.0.0.1:0 by default):
 * th_server_start reads its address into s->admin_url, and th_request sends a request with a
 * bearer token (opts->bearer) to the admin listener of the server whose device URL it is given
 * (opts->as_is: to that URL itself, e.g. to show that the device listener refuses /admin/).
 */

#define TH_ADMIN_TOKEN "th-admin-7f3a9c21e8b4d6f0a5c3e1b9d7f2a4c6"
#define TH_MAX_ARGS 24

typedef struct th_server {
    pid_t pid;
    int out_fd; /* the read end of the server's stdout, open while it runs */
    char dir[256];
    char url[128];
    char admin_url[360]; /* "http://127.0.0.1:PORT", or "unix:PATH" (--admin-listen unix:...) */
    char db[320];
    char devices[320];
    char token[320];
    char errlog[320];
} th_server_t;

/* Makes a fresh temp dir into dir (size 256). False on failure. */
bool th_dir_make(char *dir);

/* A TCP socket listening on 127.0.0.1 at a port of the system's choice (backlog 4), its URL
 * "http://127.0.0.1:PORT" in url: for a test's own raw server. -1 on failure. */
int th_loopback_listen(char *url, size_t cap);
/* Removes the dir and every file in it (not recursive beyond one level). */
void th_dir_remove(const char *dir);

/* Writes the devices file (ndevices devices, mode 0600) and admin token file into s->dir (which
 * must exist) and fills the paths in s. */
bool th_write_files(th_server_t *s, int ndevices);
/* The same, with scopes[i] (JSON text of a scope object, or NULL: none) for device i; scopes may
 * be NULL (no device has one). */
bool th_write_files_scoped(th_server_t *s, int ndevices, const char *const *scopes);

/* The id and key of device i. */
void th_device_id(int i, char out[16]);
void th_device_key(int i, fsa_signer_key_t *key);

/* s zeroed, then a fresh temp dir in s->dir with the files of an ndevices-device server
 * (th_write_files). False on failure. */
bool th_server_prepare(th_server_t *s, int ndevices);

/* A process's memory figure in kB from /proc/PID/status ("VmRSS", "VmHWM": the peak); -1 when
 * it cannot be read. */
long th_proc_kb(pid_t pid, const char *field);

/* Under AddressSanitizer, servers started from now on keep 16 MiB of freed blocks in quarantine
 * instead of 256 MiB (ASAN_OPTIONS), so that their resident memory shows what they hold, for
 * tests that measure it; nothing in other builds. True in an AddressSanitizer build. */
bool th_server_small_quarantine(void);

/* Starts the server with the files of s and extra arguments (NULL-terminated, may be NULL),
 * waits (bounded, 20 s) for its "listening on" line and fills s->url. False on failure (the
 * server's stderr is printed). */
bool th_server_start(th_server_t *s, const char *const *extra);

/* Sends SIGTERM and waits (bounded, 20 s) for the exit. Returns the exit status (0..255), 128+sig
 * when killed by a signal, -1 when it did not exit (it is then killed). */
int th_server_stop(th_server_t *s);

/* Kills the server with SIGKILL (a crash) and reaps it. Returns 128 + SIGKILL, or -1. */
int th_server_kill(th_server_t *s);

/* Sends sig, waits for the server to end and reaps it: its exit status, or 128 + the signal that
 * ended it. */
int th_server_signal(th_server_t *s, int sig);

/* Runs the server binary with args (NULL-terminated) expecting it to exit on its own within 10 s;
 * returns its exit status (-1 on timeout) and its stderr (cut to errcap). */
int th_run_cli(const char *const *args, char *err, size_t errcap);

/* th_run_cli with "--listen 127.0.0.1:0 --db DB --devices-file DEVICES" before extra
 * (NULL-terminated, may be NULL): the common start of a server that must refuse to start. */
int th_run_cli_on(const char *db, const char *devices, const char *const *extra, char *err,
                  size_t errcap);

typedef struct th_resp {
    long status;   /* HTTP status, 0 when no answer */
    int curl_code; /* CURLE_OK or the transport error */
    char *body;    /* malloc'ed, NUL-terminated; free with th_resp_free */
    size_t len;
    size_t cap; /* bytes allocated at body (it grows by doubling) */
    char retry_after[32];
    bool gzipped; /* the answer came with Content-Encoding: gzip (curl inflated it) */
} th_resp_t;

void th_resp_free(th_resp_t *r);

/* Per-request knobs for th_request (all optional). */
typedef struct th_req_opts {
    bool gzip;      /* send the body gzip-compressed (signature over the compressed bytes) */
    bool skip_auth; /* no X-* headers at all */
    bool corrupt_signature;    /* flip one hex digit of the signature */
    int64_t ts_offset_ms;      /* added to X-Timestamp */
    const char *nonce;         /* use this nonce instead of a fresh one */
    const char *header_device; /* X-Device-Id different from the signer's id */
    const char *bearer;        /* admin requests: Authorization: Bearer <bearer>, no device auth */
    const char *content_encoding; /* send this Content-Encoding as is (the body is not touched) */
    bool accept_gzip;             /* Accept-Encoding: gzip (curl inflates the answer) */
    const char *source;           /* connect from this local address (e.g. "127.0.0.5") */
    bool as_is; /* a bearer request goes to url itself, not to its server's admin listener */
} th_req_opts_t;

/* The admin URL of the running server (started by th_server_start) whose device URL is url, or
 * NULL. */
const char *th_admin_url_of(const char *url);

/*
 * One request to s->url + path_and_query, signed as device `device` (ignored with opts->bearer or
 * skip_auth). With opts->bearer the request goes to th_admin_url_of(url) when there is one (unless
 * opts->as_is); a url "unix:PATH" is reached over that unix socket. body may be NULL. handle: a
 * CURL * to reuse (NULL: a fresh one). Returns true when an HTTP answer arrived (r->status set);
 * transport errors leave r->curl_code set and false.
 */
bool th_request(void *handle, const char *url, const char *method, const char *path_and_query,
                int device, const void *body, size_t len, const th_req_opts_t *opts, th_resp_t *r);

/* gzip-compresses in into a malloc'ed buffer. */
bool th_gzip(const void *in, size_t len, unsigned char **out, size_t *out_len);

/* Stores value under key in the device journal at db_path, through SQLite as another program could
 * (a newer agent's init, say), beside the journal's users. */
bool th_journal_state_set(const char *db_path, const char *key, const char *value);

#endif
