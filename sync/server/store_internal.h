/* fieldsync-server: the store's backend interface (SQLite, PostgreSQL), behind store.h. */
#ifndef FSA_SYNC_SERVER_STORE_INTERNAL_H
#define FSA_SYNC_SERVER_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sync/server/store.h"

/*
 * store.c holds what the protocol decides (ops in order, groups all-or-nothing, each op_id once,
 * the outcome of every op, duplicates, retries of a transaction the database gave up); a backend
 * holds only how its database does each step, as a table of functions like the port layer's. So
 * both backends answer alike by construction, and the tests of one check the other's logic too.
 *
 * A write transaction (tx) is one connection inside BEGIN ... COMMIT. Within it the backend makes
 * every read of an entity a locked one (SQLite: the database write lock of BEGIN IMMEDIATE;
 * PostgreSQL: SELECT ... FOR UPDATE), so a precondition checked stays true until the commit.
 *
 * Every function returns FSA_OK or a database failure: FSA_EBUSY when the database gave up the
 * transaction and a retry of the whole of it may pass (lock timeout, serialization failure,
 * deadlock, a unique key taken by a concurrent transaction), FSA_EIO, FSA_EFULL, FSA_ENOMEM.
 */

/* The head of every backend's transaction (a backend's own tx struct begins with it). cache is
 * store.c's (its entities of this transaction, see store.c); backends leave it alone. */
typedef struct fsa__store_tx {
    fsa_store_t *store;
    struct fsa__store_cache *cache;
    /* Set by store.c after begin, only for a backend with lazy_claims (see there). */
    bool lazy_claims;
    /* store.c's: the bytes of the conflicts' current entities the batch's results hold. */
    size_t answer_bytes;
} fsa__store_tx_t;

/* An op outcome as the op log holds it. */
typedef struct fsa__store_logged {
    bool found;
    fsa_result_status_t status;
    int64_t version;
    char code[FSA_CODEC_CODE_BYTES];
    char message[FSA_CODEC_MESSAGE_BYTES];
    char type[16];
    char id[FSA_ID_BYTES];
} fsa__store_logged_t;

typedef enum fsa__store_savepoint {
    FSA__SP_BEGIN = 0,
    FSA__SP_RELEASE = 1,
    FSA__SP_ROLLBACK = 2 /* ROLLBACK TO, then RELEASE */
} fsa__store_savepoint_t;

typedef struct fsa__store_ops {
    int version; /* FSA__STORE_OPS_VERSION */
    const char *name;
    void (*close)(fsa_store_t *store);

    /* Write transactions. begin: on FSA_OK *tx is open (err names a failure). commit ends it
     * whatever it returns; abort rolls back and ends it. */
    fsa_status_t (*begin)(fsa_store_t *store, fsa__store_tx_t **tx, char *err, size_t errlen);
    fsa_status_t (*commit)(fsa__store_tx_t *tx, char *err, size_t errlen);
    void (*abort)(fsa__store_tx_t *tx);
    fsa_status_t (*savepoint)(fsa__store_tx_t *tx, fsa__store_savepoint_t what);

    /* The entity, locked until the end of the transaction: *fields NULL when it does not exist
     * (else malloc'ed, the caller frees it with fsa_free); owner (FSA_ID_BYTES, may be NULL): its
     * creating device, "" for the server's; keys (may be NULL): its scope keys as stored. */
    fsa_status_t (*load_entity)(fsa__store_tx_t *tx, const char *type, const char *id,
                                int64_t *version, char **fields, char *owner,
                                fsa_model_keys_t *keys);
    /* Writes the entity at version with fields and mdtz and its scope keys (model.h); exists:
     * as load_entity found it. A new entity records its owner (NULL: the server's). Gives it the
     * next change number (at once or at commit, the backend's choice, but in commit order either
     * way). */
    fsa_status_t (*write_entity)(fsa__store_tx_t *tx, const char *type, const char *id, bool exists,
                                 int64_t version, const char *fields, int64_t now_ms,
                                 const char *owner, const fsa_model_keys_t *keys);
    /* Gives every checkpoint of jobneed parent_id (jobneeds whose parent is it) a new change
     * number, their fields and versions unchanged. */
    fsa_status_t (*touch_children)(fsa__store_tx_t *tx, const char *parent_id);

    /* The op log. find: the logged outcome of op_id, out->found false when none. claim: the same,
     * but when op_id is not logged reserves it for this transaction, so that a concurrent one
     * with the same op_id waits and then sees it logged (or fails with FSA_EBUSY and retries).
     * log: records (or replaces, inside this transaction) the op's outcome. */
    fsa_status_t (*find_op)(fsa__store_tx_t *tx, const char *op_id, fsa__store_logged_t *out);
    fsa_status_t (*claim_op)(fsa__store_tx_t *tx, const char *device, const fsa_op_t *op,
                             int64_t now_ms, fsa__store_logged_t *out);
    fsa_status_t (*log_op)(fsa__store_tx_t *tx, const char *device, const fsa_op_t *op,
                           const fsa_codec_result_t *r, int64_t now_ms);
    /* Claims that need not look (true: the backend can; false or absent: every claim looks).
     * In a transaction whose tx->lazy_claims is set, a claim of an op id that this transaction
     * has neither claimed nor logged before may answer "not logged" without reading the log;
     * the log then checks at its insert: when it finds an op id logged already (the op was a
     * duplicate, and was applied as new) it fails with FSA_ECONFLICT, and store.c rolls the
     * batch back and applies it again with every claim looking. Only for a backend whose
     * transactions hold the op log to themselves (SQLite's write lock), so that what is not
     * logged at a claim is not logged by anyone else before the insert. */
    bool lazy_claims;

    /* The reads and the rest of store.h, with its contracts (arguments already checked). */
    fsa_status_t (*pull)(fsa_store_t *store, const char *device, const fsa_store_scope_t *scope,
                         int64_t since, unsigned limit, fsa_codec_pull_t *out,
                         int64_t *next_cursor);
    fsa_status_t (*get)(fsa_store_t *store, fsa_type_t type, const char *id,
                        fsa_codec_change_t *out);
    fsa_status_t (*counts)(fsa_store_t *store, int64_t *entities, int64_t *ops,
                           int64_t *last_change);
    fsa_status_t (*nonce)(fsa_store_t *store, const char *device, const char *nonce,
                          int64_t expires_ms, int64_t now_ms, bool *replay);
    fsa_status_t (*nonce_seen)(fsa_store_t *store, const char *device, const char *nonce,
                               int64_t now_ms, bool *seen);
    fsa_status_t (*sweep_ops)(fsa_store_t *store, int64_t before_ms, unsigned max_rows,
                              int64_t *deleted);
} fsa__store_ops_t;

#define FSA__STORE_OPS_VERSION 1

/* The head of every backend's store. warm and warm_lock are store.c's (fsa_store_open makes
 * them after the backend's opener; a backend leaves them zero). */
struct fsa_store {
    const fsa__store_ops_t *ops;
    const fsa_port_t *port;
    struct fsa__store_cache *warm; /* the last committed batch's entities (store.c); under lock */
    fsa_mutex_t *warm_lock;
};

/* The backends' openers (store.c picks one by the location's form). On failure *out is NULL and
 * err names the problem. */
fsa_status_t fsa__store_sqlite_open(const fsa_port_t *port, const char *path, unsigned readers,
                                    fsa_store_t **out, char *err, size_t errlen);
/* For tests: the writer connection's PRAGMA synchronous (2: FULL, 1: NORMAL) between
 * transactions, -1 when head is not SQLite's store. */
int fsa__store_sqlite_sync_level(fsa_store_t *head);
/* Defined when the server is built with libpq (FSA_HAVE_LIBPQ). */
fsa_status_t fsa__store_pg_open(const fsa_port_t *port, const char *uri, unsigned conns,
                                fsa_store_t **out, char *err, size_t errlen);

/* A page's cost accounting for pulls, shared by the backends: true when a change of fields_len
 * bytes still fits a page that holds count changes of `bytes` (and then adds it). */
bool fsa__store_page_fits(size_t *bytes, size_t count, size_t fields_len);

/* A hash of an entity's key (FNV-1a over type, a separator and id), for the open-addressing tables
 * of the store and the backends. */
uint32_t fsa__store_entity_hash(const char *type, const char *id);

/* Called by a backend's scoped pull between its read and its write of what it sent (`delivered`):
 * the gap in which another pull of the same device may run (a retry of a pull that timed out).
 * Only a test's hook runs there. */
#ifdef FSA_FAULT_HOOKS
void fsa__store_pull_gap(void);
/* For tests: fn(arg) runs once, in the next scoped pull's gap. */
void fsa__store_pull_gap_hook(void (*fn)(void *), void *arg);
#else
static inline void fsa__store_pull_gap(void)
{
}
#endif

#endif
