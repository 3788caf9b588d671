/* fieldsync-server: the server's entity store (SQLite or PostgreSQL): apply ops, pull changes. */
#ifndef FSA_SYNC_SERVER_STORE_H
#define FSA_SYNC_SERVER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port/port.h"
#include "storage/model.h"
#include "sync/codec.h"

/*
 * One database holds the entities, the op log (op_id -> outcome, for idempotency across
 * restarts, kept for the retention period), the change sequence that pull cursors count in, and
 * the nonces of the replay window. Several server processes may share one database: every
 * decision is taken inside a write transaction of that database, and nothing is cached between
 * transactions.
 *
 * Concurrency: every batch is one transaction in which every entity read is locked (SQLite: one
 * write connection per process, taken in arrival order, inside BEGIN IMMEDIATE; PostgreSQL: a pool
 * of connections, SELECT ... FOR UPDATE on each entity), so every precondition is checked under
 * the lock; a transaction the database gives up (deadlock, serialization failure) is retried a
 * bounded number of times. All functions are safe to call from any number of threads.
 */

typedef struct fsa_store fsa_store_t;

/*
 * A device's scope (PROTOCOL.md section 4, rules in docs/server.md): the sites and people whose
 * entities it sees. The lists are the caller's; fsa_store_scope_prepare() adds their JSON form for
 * the backends' queries (freed by fsa_store_scope_release). A NULL scope: everything.
 */
typedef struct fsa_store_scope {
    const char (*sites)[FSA_ID_BYTES];
    size_t nsites;
    const char (*people)[FSA_ID_BYTES];
    size_t npeople;
    char *sites_json;  /* set by fsa_store_scope_prepare */
    char *people_json; /* set by fsa_store_scope_prepare */
} fsa_store_scope_t;

/* FSA_OK, FSA_EINVAL, FSA_ENOMEM. */
fsa_status_t fsa_store_scope_prepare(fsa_store_scope_t *scope) FSA_MUST_CHECK;
void fsa_store_scope_release(fsa_store_scope_t *scope);

/*
 * Opens the store at `location`: a SQLite file path (created, mode 0600, when missing; WAL,
 * synchronous=FULL, busy timeout FSA_LIMIT_BUSY_TIMEOUT_MS) or a PostgreSQL URI
 * ("postgresql://..." or "postgres://...", when the server is built with libpq). The schema is
 * created or migrated (versioned) by the store. conns (1..FSA_STORE_CONNS_MAX): SQLite's read
 * connections, PostgreSQL's connection pool.
 * On FSA_OK *out is the store (close with fsa_store_close); otherwise *out is NULL and err
 * (errlen bytes) names the problem (never a password). Returns FSA_OK, FSA_EINVAL, FSA_EIO,
 * FSA_ESCHEMA (a database of another program or a newer schema), FSA_EUNSUPPORTED (a PostgreSQL
 * URI to a server built without libpq), FSA_ENOMEM.
 */
#define FSA_STORE_CONNS_MAX 64
fsa_status_t fsa_store_open(const fsa_port_t *port, const char *location, unsigned conns,
                            fsa_store_t **out, char *err, size_t errlen) FSA_MUST_CHECK;

/* "sqlite" or "postgresql". */
const char *fsa_store_backend(const fsa_store_t *store);

/* Closes every connection (after the callers are done with it). NULL is accepted. */
void fsa_store_close(fsa_store_t *store);

/*
 * Applies a decoded push in one transaction: ops in array order, a group (same non-empty group
 * string) all-or-nothing at the position of its first op, each op_id at most once forever.
 *   device:    the signer; recorded with each op and as the owner of the attendance it creates.
 *   by_server: admin ops (FSA_APPLY_BY_SERVER: server-only transitions allowed; no owner).
 *   results:   n entries the function fills (caller clears them with fsa_codec_result_clear).
 * A group where one op is not applied: nothing of it is applied, and every op of the group that
 * is not a duplicate reports the failing op's status: "conflict" (each with its own entity's
 * current state, when the entity exists) or "rejected" with the failing op's code; the error
 * message names the failing op.
 * Returns FSA_OK (results filled); FSA_ETOOLARGE when the conflicts' current entities would pass
 * 7.5 MiB in all (FSA_LIMIT_RESPONSE_BYTES, what an agent reads of an answer, less room for the
 * rest; a server answers 413: fewer ops at a time);
 * FSA_EIO, FSA_EBUSY, FSA_EFULL, FSA_ENOMEM when the database failed. On failure nothing was
 * committed, results are cleared and err names the problem.
 */
fsa_status_t fsa_store_apply(fsa_store_t *store, const char *device, bool by_server,
                             const fsa_codec_op_t *ops, size_t n, int64_t now_ms,
                             fsa_codec_result_t *results, char *err, size_t errlen) FSA_MUST_CHECK;

/*
 * fsa_store_apply for a device with a scope (NULL: none): an op on an existing entity outside it
 * is rejected "forbidden" (a create of a new entity is not: the device then owns it).
 */
fsa_status_t fsa_store_apply_scoped(fsa_store_t *store, const char *device, bool by_server,
                                    const fsa_store_scope_t *scope, const fsa_codec_op_t *ops,
                                    size_t n, int64_t now_ms, fsa_codec_result_t *results,
                                    char *err, size_t errlen) FSA_MUST_CHECK;

/*
 * The changes after cursor `since` (0: from the beginning) that `device` may see, oldest first,
 * at most `limit` (1..FSA_STORE_PULL_MAX) and at most FSA_STORE_PAGE_BYTES of JSON (at least one
 * change, whatever its size). Sets out->changes/count/more and *next_cursor (the
 * cursor to send next; `since` when nothing is returned). out->cursor and server_time are left to
 * the caller. Visibility: jobneeds and tickets are visible to every device; an attendance only to
 * the device that created it (an attendance the server created through the admin API, to all).
 * Returns FSA_OK, FSA_EINVAL, FSA_EIO, FSA_ENOMEM; on failure out is empty.
 */
#define FSA_STORE_PULL_MAX 1000
/* A page's JSON budget (PROTOCOL.md section 4: 4 MiB) and what one change costs besides its
 * fields (type, id, version, mdtz, keys and punctuation; an upper bound). */
#define FSA_STORE_PAGE_BYTES (4 * 1024 * 1024)
#define FSA_STORE_CHANGE_OVERHEAD 256
fsa_status_t fsa_store_pull(fsa_store_t *store, const char *device, int64_t since, unsigned limit,
                            fsa_codec_pull_t *out, int64_t *next_cursor) FSA_MUST_CHECK;

/*
 * fsa_store_pull for a device with a scope (prepared; NULL: none): only what the scope holds, and
 * an entity the device was sent that has left the scope since, once, as a change with gone set
 * (its version, no fields). The store remembers what it sent to each scoped device (a pull of a
 * scoped device writes), so a page asked for again is answered the same: a gone is sent again, in
 * the place of the change number it was first sent at, until `since` reaches that number, even
 * after later changes of the entity outside the scope. Two pulls of one device at once (a retry of
 * one still running) leave what the newer read found, never the older read's gone over it. The
 * cost of a scoped pull grows with what the scope holds, not with the whole store (indexed).
 */
fsa_status_t fsa_store_pull_scoped(fsa_store_t *store, const char *device,
                                   const fsa_store_scope_t *scope, int64_t since, unsigned limit,
                                   fsa_codec_pull_t *out, int64_t *next_cursor) FSA_MUST_CHECK;

/* Reads one entity into *out (fields malloc'ed; clear with fsa_codec_change_clear). Returns
 * FSA_OK, FSA_ENOTFOUND, FSA_EINVAL, FSA_EIO, FSA_ENOMEM; *out is empty on failure. */
fsa_status_t fsa_store_get(fsa_store_t *store, fsa_type_t type, const char *id,
                           fsa_codec_change_t *out) FSA_MUST_CHECK;

/*
 * The replay check of PROTOCOL.md section 5, shared by every server process on the database:
 * records (device, nonce) until expires_ms and sets *replay when the pair is recorded already and
 * has not expired at now_ms. Also removes a few expired nonces (incremental cleanup).
 * nonce: the X-Nonce in one canonical spelling (the caller lowercases it).
 * Returns FSA_OK; FSA_EINVAL; FSA_EBUSY, FSA_EIO, FSA_EFULL, FSA_ENOMEM (then *replay is false and
 * the caller must refuse the request: an unrecorded nonce could be replayed).
 */
fsa_status_t fsa_store_nonce(fsa_store_t *store, const char *device, const char *nonce,
                             int64_t expires_ms, int64_t now_ms, bool *replay) FSA_MUST_CHECK;

/*
 * Only looks: sets *seen when (device, nonce) is recorded and has not expired at now_ms, writing
 * nothing. The server asks it on a request's headers, before reading its body, to refuse a replay
 * at once; the nonce is recorded (fsa_store_nonce) only once the signature verifies. Returns
 * FSA_OK; FSA_EINVAL; FSA_EBUSY, FSA_EIO, FSA_ENOMEM (then *seen is false: the full check after
 * the body still runs).
 */
fsa_status_t fsa_store_nonce_seen(fsa_store_t *store, const char *device, const char *nonce,
                                  int64_t now_ms, bool *seen) FSA_MUST_CHECK;

/*
 * Retention: removes at most max_rows op outcomes received before before_ms, in one short
 * transaction, and sets *deleted to their number. Called repeatedly in the background; pushes
 * interleave with it. Returns FSA_OK, FSA_EINVAL, FSA_EBUSY, FSA_EIO, FSA_ENOMEM.
 */
fsa_status_t fsa_store_sweep_ops(fsa_store_t *store, int64_t before_ms, unsigned max_rows,
                                 int64_t *deleted) FSA_MUST_CHECK;

/* Counts of stored rows, for the admin statistics. FSA_OK or FSA_EIO (then all 0). */
fsa_status_t fsa_store_counts(fsa_store_t *store, int64_t *entities, int64_t *ops,
                              int64_t *last_change) FSA_MUST_CHECK;

#endif
