/* fieldsync-server: the store's SQLite backend (entities, op log, change sequence, nonces). */

/*
 * A deliberate exception to STYLE.md ("only storage/ includes sqlite3.h"): fieldsync-server is a
 * separate program with its own database, which shares nothing with a device's journal but the
 * entity model (storage/model.h). Its store lives here, next to the server, and nothing outside
 * sync/server/ includes it.
 */
#include "port/alloc.h"
#include "port/buf.h"
#include "port/files.h"
#include "port/limits.h"
#include "storage/db.h"
#include "storage/libs.h"
#include "sync/server/store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#define STORE_APP_ID 0x46534153 /* "FSAS": a fieldsync-server database */
#define STORE_SCHEMA 5
#define STORE_READERS_MAX 64

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS entities("
    " type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, mdtz INTEGER NOT NULL,"
    " fields TEXT NOT NULL, chg INTEGER NOT NULL, owner TEXT,"
    " PRIMARY KEY(type, id)) WITHOUT ROWID;"
    "CREATE UNIQUE INDEX IF NOT EXISTS entities_chg ON entities(chg);"
    "CREATE TABLE IF NOT EXISTS ops("
    " op_id TEXT PRIMARY KEY, device TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,"
    " id TEXT NOT NULL, status INTEGER NOT NULL, version INTEGER NOT NULL, code TEXT NOT NULL,"
    " message TEXT NOT NULL, received INTEGER NOT NULL) WITHOUT ROWID;";

/* Schema 2: the replay state lives in the database, so that every server process on one database
 * sees every nonce (PROTOCOL.md section 5), and op outcomes are swept by age. Idempotent, so a new
 * database runs it after schema 1 and an old one runs it once to migrate. */
static const char schema_v2_sql[] =
    "CREATE TABLE IF NOT EXISTS nonces("
    " device TEXT NOT NULL, nonce TEXT NOT NULL, expires INTEGER NOT NULL,"
    " PRIMARY KEY(device, nonce)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS nonces_expires ON nonces(expires);"
    "CREATE INDEX IF NOT EXISTS ops_received ON ops(received);";

/* Schema 3: scopes (PROTOCOL.md section 4). Each entity carries the keys that place it in a
 * scope (attendance site, jobneed/ticket person, jobneed parent), indexed with the change number
 * so a scoped pull reads what its scope holds; `delivered` remembers what each scoped device was
 * sent, so an entity that leaves its scope is sent once as gone. */
static const char schema_v3_sql[] =
    "ALTER TABLE entities ADD COLUMN site TEXT;"
    "ALTER TABLE entities ADD COLUMN person TEXT;"
    "ALTER TABLE entities ADD COLUMN parent TEXT;"
    "UPDATE entities SET"
    " site = CASE WHEN type = 'attendance' THEN json_extract(fields, '$.site_id') END,"
    " person = CASE type WHEN 'jobneed' THEN json_extract(fields, '$.people_id')"
    "  WHEN 'ticket' THEN json_extract(fields, '$.assignedto') END,"
    " parent = CASE WHEN type = 'jobneed' THEN json_extract(fields, '$.parent_id') END;"
    "CREATE INDEX IF NOT EXISTS entities_site ON entities(site, chg);"
    "CREATE INDEX IF NOT EXISTS entities_person ON entities(person, chg);"
    "CREATE INDEX IF NOT EXISTS entities_parent ON entities(parent, chg);"
    "CREATE INDEX IF NOT EXISTS entities_owner ON entities(owner, chg);"
    "CREATE TABLE IF NOT EXISTS delivered("
    " device TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, gone_chg INTEGER,"
    " PRIMARY KEY(device, type, id)) WITHOUT ROWID;";

/* Schema 4: the scope indexes hold only the entities that have the key (a ticket has no site
 * and no parent, a jobneed the server created no owner): every index of an entity holds its change
 * number, so each write of it rewrites each of its entries, and an entry for a NULL key is never
 * read (the scoped pull asks for key = or IN, which implies IS NOT NULL). */
static const char schema_v4_sql[] =
    "DROP INDEX IF EXISTS entities_site;"
    "DROP INDEX IF EXISTS entities_person;"
    "DROP INDEX IF EXISTS entities_parent;"
    "DROP INDEX IF EXISTS entities_owner;"
    "CREATE INDEX entities_site ON entities(site, chg) WHERE site IS NOT NULL;"
    "CREATE INDEX entities_person ON entities(person, chg) WHERE person IS NOT NULL;"
    "CREATE INDEX entities_parent ON entities(parent, chg) WHERE parent IS NOT NULL;"
    "CREATE INDEX entities_owner ON entities(owner, chg) WHERE owner IS NOT NULL;";

/* Schema 5: the retention sweep finds old op outcomes through one row per committed batch (its
 * received time and its op ids, each followed by a NUL) rather than an index entry per op: the
 * ops_received index cost every logged op a b-tree insert, 3.7 k instructions, 9% of a 500-op
 * batch's work. The rows an older database holds get a row each. */
static const char schema_v5_sql[] =
    "CREATE TABLE IF NOT EXISTS op_batches(received INTEGER NOT NULL, op_ids BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS op_batches_received ON op_batches(received);"
    "INSERT INTO op_batches(received, op_ids) SELECT received, CAST(op_id AS BLOB) FROM ops;"
    "DROP INDEX IF EXISTS ops_received;";

enum {
    W_SEL_ENTITY,
    W_INS_ENTITY,
    W_UPD_ENTITY,
    W_SEL_OP,
    W_INS_OP,
    W_CHILDREN,
    W_TOUCH,
    W_DELIVERED,
    W_INS_BATCH,
    W__COUNT
};

static const char *const write_sql[W__COUNT] = {
    [W_SEL_ENTITY] = "SELECT version, fields, owner, site, person, parent FROM entities"
                     " WHERE type=?1 AND id=?2",
    [W_INS_ENTITY] = "INSERT INTO entities(type, id, version, mdtz, fields, chg, owner, site,"
                     " person, parent) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [W_UPD_ENTITY] = "UPDATE entities SET version=?3, mdtz=?4, fields=?5, chg=?6, site=?8,"
                     " person=?9, parent=?10 WHERE type=?1 AND id=?2",
    [W_CHILDREN] = "SELECT id FROM entities WHERE parent=?1 AND type='jobneed'",
    [W_TOUCH] = "UPDATE entities SET chg=?2 WHERE type='jobneed' AND id=?1",
    /* gone_chg NULL: sent with its fields; else: sent as gone at that change number. A gone is
     * recorded only while the entity is still at that number: another pull of the device that
     * read after a later change (one that may have brought it back into the scope) may have
     * written in the gap between this pull's read and its write, and a device that took that
     * pull's answer holds the entity. Left unrecorded, the gone is sent again at most; recorded,
     * a later leave of the scope would never be sent. A gone sent again (at its first number,
     * the entity changed since) finds its row as it is. A row always exists for a gone (a gone is
     * read from it), so the insert itself never records one. */
    [W_DELIVERED] = "INSERT INTO delivered(device, type, id, gone_chg) VALUES(?1, ?2, ?3, ?4)"
                    " ON CONFLICT(device, type, id) DO UPDATE SET gone_chg=excluded.gone_chg"
                    " WHERE excluded.gone_chg IS NULL OR excluded.gone_chg ="
                    " (SELECT chg FROM entities e WHERE e.type=excluded.type AND e.id=excluded.id)",
    [W_SEL_OP] = "SELECT status, version, code, message, type, id FROM ops WHERE op_id=?1",
    [W_INS_BATCH] = "INSERT INTO op_batches(received, op_ids) VALUES(?1, ?2)",
    [W_INS_OP] =
        "INSERT OR IGNORE INTO ops(op_id, device, seq, type, id, status, version, code, message,"
        " received) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
};

enum { N_UPSERT, N_SWEEP, N__COUNT };

/* A nonce is fresh when it is new, or when its row has expired (then it is renewed): changes() is
 * 1 exactly then. Every check also removes a few expired rows, so the table holds about the
 * nonces of one skew window and no sweep ever has to stop the world. */
static const char *const nonce_sql[N__COUNT] = {
    [N_UPSERT] = "INSERT INTO nonces(device, nonce, expires) VALUES(?1, ?2, ?3)"
                 " ON CONFLICT(device, nonce) DO UPDATE SET expires=excluded.expires"
                 " WHERE nonces.expires < ?4",
    [N_SWEEP] = "DELETE FROM nonces WHERE (device, nonce) IN"
                " (SELECT device, nonce FROM nonces WHERE expires < ?1 ORDER BY expires LIMIT 32)",
};

/* The retention sweep (sq_sweep_ops): the oldest batch received before ?1, its op ids' rows
 * removed one by one (a row only when it is that old too: an op id a later batch logged again is
 * that batch's), the batch's row removed or left with the op ids not reached. */
enum { S_OLDEST, S_DEL_OP, S_DEL_BATCH, S_KEEP_REST, S__COUNT };
static const char *const sweep_sql[S__COUNT] = {
    [S_OLDEST] = ("SELECT rowid, op_ids FROM op_batches WHERE received < ?1"
                  " ORDER BY received, rowid LIMIT 1"),
    [S_DEL_OP] = "DELETE FROM ops WHERE op_id = ?1 AND received < ?2",
    [S_DEL_BATCH] = "DELETE FROM op_batches WHERE rowid = ?1",
    [S_KEEP_REST] = "UPDATE op_batches SET op_ids = ?2 WHERE rowid = ?1",
};

enum { R_PULL, R_GET, R_SCOPED, R_NONCE, R__COUNT };

static const char *const read_sql[R__COUNT] = {
    [R_PULL] = "SELECT type, id, version, mdtz, fields, chg, 1 FROM entities"
               " WHERE chg > ?1 AND (type <> 'attendance' OR owner IS NULL OR owner = ?2)"
               " ORDER BY chg LIMIT ?3",
    /* A scoped pull: the candidates of each rule, each from its index, and what the device was
     * sent before (to tell it what left); the last column says whether the entity is in the
     * scope now (else it is gone). ?1 since, ?2 device, ?3 limit, ?4 sites, ?5 people (JSON).
     * A gone already sent (gone_chg) is sent again while the cursor is below the number it was
     * sent at, whatever changed since outside the scope: only a cursor at or past that number
     * shows that the device has it (the answer that carried it may have been lost). It keeps
     * that number as its place in the order (column 5, which the cursor comes from), so a page
     * asked for again cannot end past it without carrying it, as it could if the gone stood at
     * the entity's later number. */
    [R_SCOPED] =
        "WITH s(v) AS (SELECT value FROM json_each(?4)), p(v) AS (SELECT value FROM json_each(?5)),"
        " cand(type, id, vis, gone_chg) AS ("
        "  SELECT type, id, 1, NULL FROM entities WHERE site IN (SELECT v FROM s) AND chg > ?1"
        "   AND type = 'attendance'"
        "  UNION ALL SELECT type, id, 1, NULL FROM entities WHERE person IN (SELECT v FROM p)"
        "   AND chg > ?1 AND type <> 'attendance'"
        "  UNION ALL SELECT c.type, c.id, 1, NULL FROM entities par JOIN entities c"
        "   ON c.parent = par.id AND c.type = 'jobneed'"
        "   WHERE par.person IN (SELECT v FROM p) AND par.type = 'jobneed' AND c.chg > ?1"
        "  UNION ALL SELECT type, id, 1, NULL FROM entities WHERE owner = ?2 AND chg > ?1"
        "  UNION ALL SELECT e.type, e.id, 0, d.gone_chg FROM delivered d JOIN entities e"
        "   ON e.type = d.type AND e.id = d.id WHERE d.device = ?2 AND e.chg > ?1"
        "   AND (d.gone_chg IS NULL OR d.gone_chg > ?1)),"
        " best(type, id, vis, gone_chg) AS"
        "  (SELECT type, id, max(vis), max(gone_chg) FROM cand GROUP BY type, id)"
        " SELECT e.type, e.id, e.version, e.mdtz, e.fields,"
        "  CASE b.vis WHEN 1 THEN e.chg ELSE coalesce(b.gone_chg, e.chg) END AS pos, b.vis"
        " FROM best b JOIN entities e ON e.type = b.type AND e.id = b.id ORDER BY pos LIMIT ?3",
    [R_GET] = "SELECT version, mdtz, fields FROM entities WHERE type=?1 AND id=?2",
    [R_NONCE] = "SELECT 1 FROM nonces WHERE device=?1 AND nonce=?2 AND expires >= ?3",
};

typedef struct reader {
    sqlite3 *db;
    sqlite3_stmt *st[R__COUNT];
    bool busy;
} reader_t;

/*
 * The op log of a batch is inserted LOG_ROWS rows per statement rather than one: each statement
 * has its own cost (about 3.5 k instructions of 14 k per row inserted alone: the statement's
 * start and end, its cursors, ten binds). The rows wait here and go before anything reads the op
 * log (a claim or a find: one whose op id waits is flushed first, so a repeated op id in a batch
 * is found as before), before a group's savepoint is begun, released or rolled back to (a rolled
 * back group's rows go with it), and before the commit; an aborted transaction forgets them.
 */
#define LOG_ROWS 100
#define LOG_COLS 10

typedef struct logrow {
    uint64_t key; /* the op id's first 8 bytes: a quick inequality test */
    char op_id[FSA_OP_ID_BYTES];
    char device[FSA_ID_BYTES];
    int64_t seq;
    const char *type; /* a static name */
    char id[FSA_ID_BYTES];
    int status;
    int64_t version;
    char code[FSA_CODEC_CODE_BYTES];
    char message[FSA_CODEC_MESSAGE_BYTES];
    int64_t received;
} logrow_t;

/*
 * The op ids a transaction with lazy claims has claimed or logged (store_internal.h): a claim of
 * any other op id answers "not logged" without reading the log, since under the write lock only
 * this transaction writes it. Kept as 64-bit hashes of the op ids, open addressing: a hash that
 * two op ids share only sends the second to the log's read. Past half full every claim reads.
 */
#define SEEN_SLOTS 2048 /* four per op of the largest batch (FSA_LIMIT_BATCH_OPS) */

typedef struct seen {
    uint64_t h[SEEN_SLOTS];        /* 0: empty */
    uint16_t used[SEEN_SLOTS / 2]; /* the slots taken, to empty them again */
    size_t n;
} seen_t;

typedef struct sq_store {
    fsa_store_t head; /* ops and port */
    const fsa_port_t *port;
    fsa__store_tx_t tx;    /* the one write transaction (the writer's turn holds it) */
    int64_t chg_savepoint; /* last_chg when the group's savepoint began */
    sqlite3 *wdb;
    sqlite3_stmt *w[W__COUNT];
    /* The nonces are written by the writer's connection too, each check its own transaction
     * committed with synchronous=NORMAL: a nonce must be visible to every process at once (WAL
     * gives that at commit), but need not cost an fsync per request; a power loss can forget the
     * nonces of the last moments, never an op. They had a connection of their own, but SQLite
     * drops a connection's whole page cache when another one has committed to the database since
     * its last transaction: every push's nonce made the writer read every page of the batch
     * again (about 190 preads of a 500-op batch). */
    sqlite3_stmt *n[N__COUNT];
    sqlite3_stmt *log_many;  /* W_INS_OP for LOG_ROWS rows at once (log_flush) */
    logrow_t logs[LOG_ROWS]; /* outcomes logged, not yet inserted */
    size_t nlogs;
    seen_t seen;            /* the transaction's claimed and logged op ids (lazy claims) */
    fsa_buf_t batch_ids;    /* the op ids the transaction logged, each with its NUL (op_batches) */
    int64_t batch_received; /* their received time */
    bool sync_normal; /* wdb is at synchronous=NORMAL (a nonce check); FULL again before a write */
    /* The writer is taken in arrival order (a ticket lock): a plain mutex lets the thread that
     * just committed take it again at once, which starves the others and stretches tail
     * latency when many devices push at the same time. */
    fsa_mutex_t *wlock;
    fsa_cond_t *wcond;
    uint64_t wnext;    /* the next ticket to hand out; under wlock */
    uint64_t wserving; /* the ticket that may write now; under wlock */
    int64_t last_chg;  /* the highest change number, read when a write transaction begins */

    reader_t readers[STORE_READERS_MAX];
    unsigned nreaders;
    fsa_mutex_t *rlock;
    fsa_cond_t *rcond;
} sq_store_t;

static const fsa__store_ops_t sq_ops;

/* The backend's store of a transaction (its head is the first member). */
static sq_store_t *SQ(fsa__store_tx_t *tx)
{
    return (sq_store_t *)(void *)tx->store;
}

/* SQLite's result codes as statuses: the journal's mapping (storage/db.h), so both stores say the
 * same (a constraint is FSA_EEXISTS there and here). */
static fsa_status_t map_rc(int rc)
{
    return fsa__db_status(rc);
}

static fsa_status_t db_fail(sqlite3 *db, int rc, const char *what, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", what, db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    return map_rc(rc);
}

/* The journal's fsa__db_exec, with the statement named in the message. */
static fsa_status_t exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char why[256];
    fsa_status_t st = fsa__db_exec(db, sql, why, sizeof why);
    if (st != FSA_OK && err != NULL && errlen > 0)
        snprintf(err, errlen, "%.120s: %s", sql, why);
    return st;
}

/* The first column of sql's first row in *out; dflt when it gave no row or NULL. An error
 * (out of memory, I/O) is the status, *out left at dflt. */
static fsa_status_t query_int_checked(sqlite3 *db, const char *sql, int64_t dflt, int64_t *out)
{
    sqlite3_stmt *s = NULL;
    *out = dflt;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            if (sqlite3_column_type(s, 0) != SQLITE_NULL)
                *out = sqlite3_column_int64(s, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(s);
    return fsa__db_status(rc);
}

/* For what only reports or checks: an error reads as dflt (which the caller then refuses), as
 * query_int_checked leaves it. */
static int64_t query_int(sqlite3 *db, const char *sql, int64_t dflt)
{
    int64_t v = dflt;
    (void)query_int_checked(db, sql, dflt, &v);
    return v;
}

/* Opens one connection with the server's pragmas. */
static fsa_status_t open_conn(const char *path, sqlite3 **out, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    *out = NULL;
    fsa_libs_use_allocator();
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        fsa_status_t st = db_fail(db, rc, "cannot open the database", err, errlen);
        sqlite3_close(db);
        return st;
    }
    /* SQLite falls back to reading a file it may not write: say so, not the first write's error. */
    if (sqlite3_db_readonly(db, "main") == 1) {
        snprintf(err, errlen, "cannot open %s: it is read-only to this user", path);
        sqlite3_close(db);
        return FSA_EIO;
    }
    sqlite3_busy_timeout(db, FSA_LIMIT_BUSY_TIMEOUT_MS);
    fsa_status_t st =
        exec_sql(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", err, errlen);
    if (st != FSA_OK) {
        sqlite3_close(db);
        return st;
    }
    *out = db;
    return FSA_OK;
}

/*
 * Creates the schema on a new database, migrates an older one, and refuses a database that is not
 * ours or is newer. All of it inside one write transaction, so that several server processes
 * starting at once on one database create or migrate it exactly once.
 */
static fsa_status_t init_schema(sqlite3 *db, char *err, size_t errlen)
{
    fsa_status_t st = exec_sql(db, "BEGIN IMMEDIATE", err, errlen);
    if (st != FSA_OK)
        return st;
    int64_t app = query_int(db, "PRAGMA application_id", -1);
    int64_t ver = query_int(db, "PRAGMA user_version", -1);
    int64_t tables = query_int(db, "SELECT count(*) FROM sqlite_master", -1);
    if (app < 0 || ver < 0 || tables < 0) {
        st = db_fail(db, SQLITE_NOTADB, "cannot read the database", err, errlen);
    } else if (app == 0 && tables == 0) {
        char sql[sizeof schema_sql + 128];
        snprintf(sql, sizeof sql, "%sPRAGMA application_id=%d;", schema_sql, STORE_APP_ID);
        st = exec_sql(db, sql, err, errlen);
        ver = 1;
    } else if (app != STORE_APP_ID) {
        snprintf(err, errlen, "the database is not a fieldsync-server database");
        st = FSA_ESCHEMA;
    } else if (ver < 1 || ver > STORE_SCHEMA) {
        snprintf(err, errlen, "the database has schema version %lld; this server knows 1..%d",
                 (long long)ver, STORE_SCHEMA);
        st = FSA_ESCHEMA;
    }
    if (st == FSA_OK && ver < 2)
        st = exec_sql(db, schema_v2_sql, err, errlen);
    if (st == FSA_OK && ver < 3)
        st = exec_sql(db, schema_v3_sql, err, errlen);
    if (st == FSA_OK && ver < 4)
        st = exec_sql(db, schema_v4_sql, err, errlen);
    if (st == FSA_OK && ver < 5)
        st = exec_sql(db, schema_v5_sql, err, errlen);
    if (st == FSA_OK && ver < STORE_SCHEMA) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version=%d", STORE_SCHEMA);
        st = exec_sql(db, sql, err, errlen);
    }
    if (st == FSA_OK)
        st = exec_sql(db, "COMMIT", err, errlen);
    if (st != FSA_OK)
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

static fsa_status_t prepare_all(sqlite3 *db, const char *const *sql, sqlite3_stmt **st, int n,
                                char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        int rc = sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st[i], NULL);
        if (rc != SQLITE_OK)
            return db_fail(db, rc, "cannot prepare a statement", err, errlen);
    }
    return FSA_OK;
}

/* W_INS_OP's statement with LOG_ROWS rows of values. */
static fsa_status_t prepare_log_many(sq_store_t *s, char *err, size_t errlen)
{
    static const char head[] = "INSERT OR IGNORE INTO ops(op_id, device, seq, type, id, status,"
                               " version, code, message, received) VALUES";
    char sql[sizeof head + LOG_ROWS * (LOG_COLS * 2 + 3)];
    size_t n = sizeof head - 1;
    memcpy(sql, head, n);
    for (int r = 0; r < LOG_ROWS; r++) {
        sql[n++] = r > 0 ? ',' : ' ';
        sql[n++] = '(';
        for (int c = 0; c < LOG_COLS; c++) {
            sql[n++] = '?';
            if (c + 1 < LOG_COLS)
                sql[n++] = ',';
        }
        sql[n++] = ')';
    }
    sql[n] = '\0';
    const char *one[] = {sql};
    return prepare_all(s->wdb, one, &s->log_many, 1, err, errlen);
}

static void close_conn(sqlite3 *db, sqlite3_stmt **st, int n)
{
    for (int i = 0; i < n; i++) {
        sqlite3_finalize(st[i]);
        st[i] = NULL;
    }
    sqlite3_close(db);
}

static void sq_close(fsa_store_t *head)
{
    sq_store_t *store = (sq_store_t *)(void *)head;
    if (store == NULL)
        return;
    for (unsigned i = 0; i < store->nreaders; i++)
        close_conn(store->readers[i].db, store->readers[i].st, R__COUNT);
    /* The writer closes last: when the last connection closes, SQLite checkpoints the WAL into
     * the database and removes it, which is the clean shutdown. */
    close_conn(NULL, store->n, N__COUNT);
    close_conn(NULL, &store->log_many, 1);
    close_conn(store->wdb, store->w, W__COUNT);
    fsa_free(store->batch_ids.p);
    if (store->port != NULL) {
        store->port->mutex_free(store->port->ctx, store->wlock);
        store->port->cond_free(store->port->ctx, store->wcond);
        store->port->mutex_free(store->port->ctx, store->rlock);
        store->port->cond_free(store->port->ctx, store->rcond);
    }
    fsa_free(store);
}

fsa_status_t fsa__store_sqlite_open(const fsa_port_t *port, const char *path, unsigned readers,
                                    fsa_store_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (readers > STORE_READERS_MAX) {
        snprintf(err, errlen, "invalid arguments");
        return FSA_EINVAL;
    }
    /* Create the file ourselves so that it (and the -wal/-shm files SQLite derives from it) is
     * private to this user from the start. */
    char ferr[FSA_LIMIT_PATH_BYTES + 64];
    if (fsa_file_create_private(path, ferr, sizeof ferr) != FSA_OK) {
        snprintf(err, errlen, "cannot open %s", ferr);
        return FSA_EIO;
    }

    sq_store_t *s = fsa_calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return FSA_ENOMEM;
    }
    s->port = port;
    s->head.ops = &sq_ops;
    s->head.port = port;
    fsa_status_t st = port->mutex_new(port->ctx, &s->wlock);
    if (st == FSA_OK)
        st = port->cond_new(port->ctx, &s->wcond);
    if (st == FSA_OK)
        st = port->mutex_new(port->ctx, &s->rlock);
    if (st == FSA_OK)
        st = port->cond_new(port->ctx, &s->rcond);
    if (st != FSA_OK) {
        snprintf(err, errlen, "cannot create a mutex");
        goto out;
    }
    st = open_conn(path, &s->wdb, err, errlen);
    /* The writer touches the op log at random (op ids are UUIDs): a larger page cache saves it
     * from re-reading pages between batches. */
    if (st == FSA_OK)
        st = exec_sql(s->wdb, "PRAGMA cache_size=-32768", err, errlen);
    if (st == FSA_OK)
        st = init_schema(s->wdb, err, errlen);
    if (st == FSA_OK)
        st = prepare_all(s->wdb, write_sql, s->w, W__COUNT, err, errlen);
    if (st == FSA_OK)
        st = prepare_all(s->wdb, nonce_sql, s->n, N__COUNT, err, errlen);
    if (st == FSA_OK)
        st = prepare_log_many(s, err, errlen);
    if (st != FSA_OK)
        goto out;
    for (unsigned i = 0; i < readers; i++) {
        st = open_conn(path, &s->readers[i].db, err, errlen);
        s->nreaders = i + 1;
        if (st == FSA_OK)
            st = prepare_all(s->readers[i].db, read_sql, s->readers[i].st, R__COUNT, err, errlen);
        if (st != FSA_OK)
            goto out;
    }
out:
    if (st != FSA_OK) {
        if (s->wdb == NULL && s->nreaders == 0) {
            s->port->mutex_free(s->port->ctx, s->wlock);
            s->port->cond_free(s->port->ctx, s->wcond);
            s->port->mutex_free(s->port->ctx, s->rlock);
            s->port->cond_free(s->port->ctx, s->rcond);
            fsa_free(s);
        } else {
            sq_close(&s->head);
        }
        return st;
    }
    *out = &s->head;
    return FSA_OK;
}

/* ---- helpers on statements ---- */

static char *column_dup(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    int n = sqlite3_column_bytes(s, i);
    if (t == NULL)
        return NULL;
    char *p = fsa_malloc((size_t)n + 1);
    if (p != NULL) {
        memcpy(p, t, (size_t)n);
        p[n] = '\0';
    }
    return p;
}

/* Column i as text into dst[cap], cut to fit (as snprintf would, without its cost: this runs for
 * every entity the apply loads). */
static void column_copy(sqlite3_stmt *s, int i, char *dst, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    size_t n = t != NULL ? (size_t)sqlite3_column_bytes(s, i) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n > 0)
        memcpy(dst, t, n);
    dst[n] = '\0';
}

/* ---- apply ---- */

/* The entity as the write transaction sees it: *fields NULL when it does not exist. */
static fsa_status_t sq_load_entity(fsa__store_tx_t *tx, const char *type, const char *id,
                                   int64_t *version, char **fields, char *owner,
                                   fsa_model_keys_t *keys)
{
    sqlite3_stmt *q = SQ(tx)->w[W_SEL_ENTITY];
    *version = 0;
    *fields = NULL;
    if (owner != NULL)
        owner[0] = '\0';
    if (keys != NULL)
        memset(keys, 0, sizeof *keys);
    fsa__db_bind_text(q, 1, type);
    fsa__db_bind_text(q, 2, id);
    int rc = sqlite3_step(q);
    fsa_status_t st = FSA_OK;
    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int64(q, 0);
        *fields = column_dup(q, 1);
        if (*fields == NULL)
            st = FSA_ENOMEM;
        if (owner != NULL)
            column_copy(q, 2, owner, FSA_ID_BYTES);
        if (keys != NULL) {
            column_copy(q, 3, keys->site, sizeof keys->site);
            column_copy(q, 4, keys->person, sizeof keys->person);
            column_copy(q, 5, keys->parent, sizeof keys->parent);
        }
    } else if (rc != SQLITE_DONE) {
        st = map_rc(rc);
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return st;
}

static uint64_t log_key(const char *op_id)
{
    uint64_t k = 0;
    for (unsigned i = 0; i < 8 && op_id[i] != '\0'; i++)
        k |= (uint64_t)(unsigned char)op_id[i] << (8 * i);
    return k;
}

/* Binds row r's ten values from parameter base + 1 on. */
static void log_bind(sqlite3_stmt *q, int base, const logrow_t *r)
{
    fsa__db_bind_text(q, base + 1, r->op_id);
    fsa__db_bind_text(q, base + 2, r->device);
    sqlite3_bind_int64(q, base + 3, r->seq);
    fsa__db_bind_text(q, base + 4, r->type);
    fsa__db_bind_text(q, base + 5, r->id);
    sqlite3_bind_int(q, base + 6, r->status);
    sqlite3_bind_int64(q, base + 7, r->version);
    fsa__db_bind_text(q, base + 8, r->code);
    fsa__db_bind_text(q, base + 9, r->message);
    sqlite3_bind_int64(q, base + 10, r->received);
}

/* A statement of the op log's insert that ran: FSA_ECONFLICT when it inserted fewer than rows
 * in a transaction with lazy claims (a row's op id was logged already: an op claimed without
 * reading the log was a duplicate); else FSA_OK, as INSERT OR IGNORE is meant to. */
static fsa_status_t log_inserted(sq_store_t *s, int rows)
{
    return s->tx.lazy_claims && sqlite3_changes(s->wdb) != rows ? FSA_ECONFLICT : FSA_OK;
}

/* Inserts the rows that wait: LOG_ROWS at once, fewer one by one. */
static fsa_status_t log_flush(sq_store_t *s)
{
    fsa_status_t st = FSA_OK;
    size_t n = s->nlogs;
    s->nlogs = 0;
    if (n == LOG_ROWS) {
        sqlite3_stmt *q = s->log_many;
        for (size_t i = 0; i < n; i++)
            log_bind(q, (int)i * LOG_COLS, &s->logs[i]);
        int rc = sqlite3_step(q);
        /* Its 1,000 bindings are not cleared (they cost as much again): every use binds each
         * one anew, and they point into s->logs, which lives as long as the statement. */
        sqlite3_reset(q);
        return rc == SQLITE_DONE ? log_inserted(s, LOG_ROWS) : map_rc(rc);
    }
    sqlite3_stmt *q = s->w[W_INS_OP];
    for (size_t i = 0; i < n && st == FSA_OK; i++) {
        log_bind(q, 0, &s->logs[i]);
        int rc = sqlite3_step(q);
        sqlite3_reset(q); /* bindings kept, as above */
        st = rc == SQLITE_DONE ? log_inserted(s, 1) : map_rc(rc);
    }
    return st;
}

/* A hash of an op id (FNV-1a over 8 bytes at a time, then mixed), never 0 (the empty slot). */
static uint64_t seen_hash(const char *op_id)
{
    size_t n = strlen(op_id);
    uint64_t h = 14695981039346656037u ^ n;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w = 0;
        memcpy(&w, op_id + i, n - i < 8 ? n - i : 8);
        h = (h ^ w) * 1099511628211u;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9u;
    h ^= h >> 32;
    return h != 0 ? h : 1;
}

static void seen_clear(seen_t *t)
{
    for (size_t i = 0; i < t->n; i++)
        t->h[t->used[i]] = 0;
    t->n = 0;
}

/* Notes op_id as claimed or logged in this transaction: true when it was not noted before (nor
 * any op id of the same hash), and the table has room; false sends a claim to the log. */
static bool seen_add(seen_t *t, const char *op_id)
{
    if (t->n >= SEEN_SLOTS / 2)
        return false;
    uint64_t h = seen_hash(op_id);
    for (size_t i = (size_t)h & (SEEN_SLOTS - 1);; i = (i + 1) & (SEEN_SLOTS - 1)) {
        if (t->h[i] == h)
            return false;
        if (t->h[i] == 0) {
            t->h[i] = h;
            t->used[t->n++] = (uint16_t)i;
            return true;
        }
    }
}

static fsa_status_t sq_find_op(fsa__store_tx_t *tx, const char *op_id, fsa__store_logged_t *out)
{
    sq_store_t *s = SQ(tx);
    sqlite3_stmt *q = s->w[W_SEL_OP];
    memset(out, 0, sizeof *out);
    uint64_t key = log_key(op_id);
    for (size_t i = 0; i < s->nlogs; i++) {
        if (s->logs[i].key == key && strcmp(s->logs[i].op_id, op_id) == 0) {
            fsa_status_t st = log_flush(s);
            if (st != FSA_OK)
                return st;
            break;
        }
    }
    fsa__db_bind_text(q, 1, op_id);
    int rc = sqlite3_step(q);
    fsa_status_t st = FSA_OK;
    if (rc == SQLITE_ROW) {
        out->found = true;
        int v = sqlite3_column_int(q, 0);
        out->status =
            (v >= 0 && v < FSA__RESULT_COUNT) ? (fsa_result_status_t)v : FSA_RESULT_REJECTED;
        out->version = sqlite3_column_int64(q, 1);
        column_copy(q, 2, out->code, sizeof out->code);
        column_copy(q, 3, out->message, sizeof out->message);
        column_copy(q, 4, out->type, sizeof out->type);
        column_copy(q, 5, out->id, sizeof out->id);
    } else if (rc != SQLITE_DONE) {
        st = map_rc(rc);
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return st;
}

/* Under the database's write lock nothing else can log an op meanwhile: claiming is looking,
 * and with lazy claims an op id new to this transaction is not looked for (the insert checks). */
static fsa_status_t sq_claim_op(fsa__store_tx_t *tx, const char *device, const fsa_op_t *op,
                                int64_t now_ms, fsa__store_logged_t *out)
{
    (void)device;
    (void)now_ms;
    if (tx->lazy_claims && seen_add(&SQ(tx)->seen, op->op_id)) {
        memset(out, 0, sizeof *out);
        return FSA_OK;
    }
    return sq_find_op(tx, op->op_id, out);
}

/* Copies src (NUL-terminated) into dst[cap]; false when it does not fit. */
static bool copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

static fsa_status_t sq_log_op(fsa__store_tx_t *tx, const char *device, const fsa_op_t *op,
                              const fsa_codec_result_t *r, int64_t now_ms)
{
    sq_store_t *s = SQ(tx);
    if (tx->lazy_claims)
        (void)seen_add(&s->seen, op->op_id); /* a later claim of it reads the log */
    logrow_t *row = &s->logs[s->nlogs];
    row->key = log_key(op->op_id);
    row->seq = op->seq;
    row->type = (unsigned)op->type < FSA__TYPE_COUNT ? fsa_type_name(op->type) : "?";
    row->status = (int)r->status;
    row->version = r->version;
    row->received = now_ms;
    if (!copy_str(row->op_id, sizeof row->op_id, op->op_id) ||
        !copy_str(row->device, sizeof row->device, device) ||
        !copy_str(row->id, sizeof row->id, op->id) ||
        !copy_str(row->code, sizeof row->code, r->code) ||
        !copy_str(row->message, sizeof row->message, r->message))
        return FSA_EINVAL; /* never: each is the size of what it comes from */
    /* Its op id with its NUL, for the batch's row of op_batches (written at the commit). */
    fsa_status_t st = fsa_buf_append(&s->batch_ids, row->op_id, strlen(row->op_id) + 1, 16384,
                                     (size_t)64 * 1024 * 1024);
    if (st != FSA_OK)
        return st == FSA_ENOMEM ? st : FSA_EIO;
    s->batch_received = now_ms;
    s->nlogs++;
    return s->nlogs == LOG_ROWS ? log_flush(s) : FSA_OK;
}

static void bind_key(sqlite3_stmt *q, int i, const char *v)
{
    fsa__db_bind_text(q, i, v[0] != '\0' ? v : NULL);
}

static fsa_status_t sq_write_entity(fsa__store_tx_t *tx, const char *type, const char *id,
                                    bool exists, int64_t version, const char *fields,
                                    int64_t now_ms, const char *owner, const fsa_model_keys_t *keys)
{
    sq_store_t *s = SQ(tx);
    sqlite3_stmt *q = s->w[exists ? W_UPD_ENTITY : W_INS_ENTITY];
    fsa__db_bind_text(q, 1, type);
    fsa__db_bind_text(q, 2, id);
    sqlite3_bind_int64(q, 3, version);
    sqlite3_bind_int64(q, 4, now_ms);
    fsa__db_bind_text(q, 5, fields);
    sqlite3_bind_int64(q, 6, s->last_chg + 1);
    if (!exists)
        fsa__db_bind_text(q, 7, owner);
    bind_key(q, 8, keys->site);
    bind_key(q, 9, keys->person);
    bind_key(q, 10, keys->parent);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    if (rc != SQLITE_DONE)
        return map_rc(rc);
    /* last_chg is advanced inside the transaction; a rolled back group restores it, and every
     * batch reads it anew. */
    s->last_chg++;
    return FSA_OK;
}

static fsa_status_t sq_touch_children(fsa__store_tx_t *tx, const char *parent_id)
{
    sq_store_t *s = SQ(tx);
    sqlite3_stmt *q = s->w[W_CHILDREN];
    fsa__db_bind_text(q, 1, parent_id);
    /* Collected first: the children's updates must not run under the open SELECT. */
    char(*ids)[FSA_ID_BYTES] = NULL;
    size_t n = 0, cap = 0;
    fsa_status_t st = FSA_OK;
    int rc = SQLITE_DONE;
    while (st == FSA_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (n == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            char(*nb)[FSA_ID_BYTES] = fsa_realloc(ids, ncap * sizeof *ids);
            if (nb == NULL) {
                st = FSA_ENOMEM;
                break;
            }
            ids = nb;
            cap = ncap;
        }
        column_copy(q, 0, ids[n++], FSA_ID_BYTES);
    }
    if (st == FSA_OK && rc != SQLITE_DONE)
        st = map_rc(rc);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    sqlite3_stmt *u = s->w[W_TOUCH];
    for (size_t i = 0; i < n && st == FSA_OK; i++) {
        fsa__db_bind_text(u, 1, ids[i]);
        sqlite3_bind_int64(u, 2, s->last_chg + 1);
        rc = sqlite3_step(u);
        sqlite3_reset(u);
        sqlite3_clear_bindings(u);
        if (rc == SQLITE_DONE)
            s->last_chg++;
        else
            st = map_rc(rc);
    }
    fsa_free(ids);
    return st;
}

static void writer_take(sq_store_t *s)
{
    const fsa_port_t *port = s->port;
    port->mutex_lock(port->ctx, s->wlock);
    uint64_t mine = s->wnext++;
    while (s->wserving != mine)
        (void)port->cond_wait(port->ctx, s->wcond, s->wlock, fsa_mono_forever());
    port->mutex_unlock(port->ctx, s->wlock);
}

static void writer_give(sq_store_t *s)
{
    const fsa_port_t *port = s->port;
    port->mutex_lock(port->ctx, s->wlock);
    s->wserving++;
    port->cond_broadcast(port->ctx, s->wcond);
    port->mutex_unlock(port->ctx, s->wlock);
}

/* ---- transactions ---- */

/*
 * The writer's connection back at synchronous=FULL after a nonce check, before anything else
 * writes with it (under the writer's turn). PRAGMA synchronous acts when it is prepared, so it is
 * run whole each time; if it fails, sync_normal stays set and the write is refused, never done
 * without its fsync.
 */
static fsa_status_t sync_full(sq_store_t *s, char *err, size_t errlen)
{
    if (!s->sync_normal)
        return FSA_OK;
    fsa_status_t st = exec_sql(s->wdb, "PRAGMA synchronous=FULL", err, errlen);
    if (st == FSA_OK)
        s->sync_normal = false;
    return st;
}

static fsa_status_t sq_begin(fsa_store_t *store, fsa__store_tx_t **tx, char *err, size_t errlen)
{
    sq_store_t *s = (sq_store_t *)(void *)store;
    *tx = NULL;
    writer_take(s);
    fsa_status_t st = sync_full(s, err, errlen);
    if (st == FSA_OK)
        st = exec_sql(s->wdb, "BEGIN IMMEDIATE", err, errlen);
    if (st != FSA_OK) {
        writer_give(s);
        return st;
    }
    /* Read inside the write transaction: another server process on this database may have
     * committed changes since this one last wrote. Checked: numbering from 0 after a failed read
     * would put the batch's changes under every device's cursor, never pulled. */
    st = query_int_checked(s->wdb, "SELECT max(chg) FROM entities", 0, &s->last_chg);
    if (st != FSA_OK) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "cannot read the last change number: %s", fsa_status_str(st));
        (void)exec_sql(s->wdb, "ROLLBACK", NULL, 0);
        writer_give(s);
        return st;
    }
    s->tx.store = store;
    s->tx.lazy_claims = false; /* store.c's to set */
    s->batch_ids.len = 0;
    seen_clear(&s->seen);
    *tx = &s->tx;
    return FSA_OK;
}

/* The batch's row of op_batches: its op ids for the retention sweep (none: no row). */
static fsa_status_t log_batch(sq_store_t *s)
{
    size_t n = s->batch_ids.len;
    s->batch_ids.len = 0;
    if (n == 0)
        return FSA_OK;
    sqlite3_stmt *q = s->w[W_INS_BATCH];
    sqlite3_bind_int64(q, 1, s->batch_received);
    (void)sqlite3_bind_blob(q, 2, s->batch_ids.p, (int)n, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return rc == SQLITE_DONE ? FSA_OK : map_rc(rc);
}

static fsa_status_t sq_commit(fsa__store_tx_t *tx, char *err, size_t errlen)
{
    sq_store_t *s = SQ(tx);
    fsa_status_t st = log_flush(s);
    if (st == FSA_OK)
        st = log_batch(s);
    if (st != FSA_OK) {
        snprintf(err, errlen, "logging the batch's outcomes failed: %s", fsa_status_str(st));
        (void)sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
        s->tx.lazy_claims = false;
        writer_give(s);
        return st;
    }
    int rc = sqlite3_exec(s->wdb, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        st = db_fail(s->wdb, rc, "commit failed", err, errlen);
        (void)sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
    }
    s->tx.lazy_claims = false;
    writer_give(s);
    return st;
}

static void sq_abort(fsa__store_tx_t *tx)
{
    sq_store_t *s = SQ(tx);
    s->nlogs = 0;
    s->batch_ids.len = 0;
    s->tx.lazy_claims = false;
    (void)sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
    writer_give(s);
}

static fsa_status_t sq_savepoint(fsa__store_tx_t *tx, fsa__store_savepoint_t what)
{
    sq_store_t *s = SQ(tx);
    fsa_status_t lst = log_flush(s);
    if (lst != FSA_OK)
        return lst;
    if (what == FSA__SP_BEGIN) {
        s->chg_savepoint = s->last_chg;
        return exec_sql(s->wdb, "SAVEPOINT grp", NULL, 0);
    }
    if (what == FSA__SP_RELEASE)
        return exec_sql(s->wdb, "RELEASE grp", NULL, 0);
    s->last_chg = s->chg_savepoint;
    fsa_status_t st = exec_sql(s->wdb, "ROLLBACK TO grp", NULL, 0);
    /* ROLLBACK TO keeps the savepoint open; the group goes on inside it and releases it. */
    return st;
}

/* ---- replay state and retention ---- */

static fsa_status_t sq_nonce(fsa_store_t *head, const char *device, const char *nonce,
                             int64_t expires_ms, int64_t now_ms, bool *replay)
{
    sq_store_t *store = (sq_store_t *)(void *)head;
    writer_take(store);
    store->sync_normal = true; /* set first: a half-done switch is undone before any write */
    fsa_status_t st = exec_sql(store->wdb, "PRAGMA synchronous=NORMAL", NULL, 0);
    if (st == FSA_OK)
        st = exec_sql(store->wdb, "BEGIN IMMEDIATE", NULL, 0);
    bool in_tx = st == FSA_OK;
    if (st == FSA_OK) {
        sqlite3_stmt *q = store->n[N_UPSERT];
        fsa__db_bind_text(q, 1, device);
        fsa__db_bind_text(q, 2, nonce);
        sqlite3_bind_int64(q, 3, expires_ms);
        sqlite3_bind_int64(q, 4, now_ms);
        int rc = sqlite3_step(q);
        sqlite3_reset(q);
        sqlite3_clear_bindings(q);
        st = rc == SQLITE_DONE ? FSA_OK : map_rc(rc);
        if (st == FSA_OK)
            *replay = sqlite3_changes(store->wdb) == 0;
    }
    if (st == FSA_OK) {
        sqlite3_stmt *q = store->n[N_SWEEP];
        sqlite3_bind_int64(q, 1, now_ms);
        int rc = sqlite3_step(q);
        sqlite3_reset(q);
        sqlite3_clear_bindings(q);
        st = rc == SQLITE_DONE ? FSA_OK : map_rc(rc);
    }
    if (st == FSA_OK) {
        int rc = sqlite3_exec(store->wdb, "COMMIT", NULL, NULL, NULL);
        st = map_rc(rc);
        in_tx = rc != SQLITE_OK;
    }
    if (in_tx)
        (void)sqlite3_exec(store->wdb, "ROLLBACK", NULL, NULL, NULL);
    /* Back to FULL now when it can be (a failure here is retried by the next write). */
    (void)sync_full(store, NULL, 0);
    writer_give(store);
    return st;
}

int fsa__store_sqlite_sync_level(fsa_store_t *head)
{
    sq_store_t *store = (sq_store_t *)(void *)head;
    if (store == NULL || head->ops != &sq_ops)
        return -1;
    writer_take(store);
    int64_t v = query_int(store->wdb, "PRAGMA synchronous", -1);
    writer_give(store);
    return (int)v;
}

/* One step of a statement of the sweep's (reset after; its bindings are the caller's). */
static int sweep_step(sqlite3_stmt *q)
{
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW)
        sqlite3_reset(q);
    return rc;
}

/*
 * Removes up to max_rows op outcomes received before before_ms, the oldest batches first: each
 * batch's op ids (op_batches) are taken in the order it logged them, and what a step does not
 * reach stays in the batch's row for the next. One transaction, short, so pushes wait for it at
 * most a moment.
 */
static fsa_status_t sweep_batches(sq_store_t *store, sqlite3_stmt *const *q, int64_t before_ms,
                                  unsigned max_rows, int64_t *deleted)
{
    int64_t n = 0;
    int rc = SQLITE_OK;
    while (n < (int64_t)max_rows) {
        sqlite3_bind_int64(q[S_OLDEST], 1, before_ms);
        rc = sweep_step(q[S_OLDEST]);
        if (rc != SQLITE_ROW)
            break; /* SQLITE_DONE: nothing that old is left */
        int64_t batch = sqlite3_column_int64(q[S_OLDEST], 0);
        const char *ids = sqlite3_column_blob(q[S_OLDEST], 1);
        size_t len = (size_t)sqlite3_column_bytes(q[S_OLDEST], 1);
        char *copy = fsa_malloc(len + 1); /* the row's bytes are SQLite's until the reset */
        if (copy == NULL) {
            sqlite3_reset(q[S_OLDEST]);
            return FSA_ENOMEM;
        }
        if (len > 0)
            memcpy(copy, ids, len);
        copy[len] = '\0';
        sqlite3_reset(q[S_OLDEST]);
        size_t at = 0;
        rc = SQLITE_DONE;
        while (at < len && n < (int64_t)max_rows && rc == SQLITE_DONE) {
            /* The op ids end with a NUL each (a migrated row's one op id may have none). */
            const char *end = memchr(copy + at, '\0', len - at);
            size_t idlen = end != NULL ? (size_t)(end - (copy + at)) : len - at;
            if (idlen > 0) {
                sqlite3_bind_text(q[S_DEL_OP], 1, copy + at, (int)idlen, SQLITE_STATIC);
                sqlite3_bind_int64(q[S_DEL_OP], 2, before_ms);
                rc = sweep_step(q[S_DEL_OP]);
                if (rc == SQLITE_DONE)
                    n += sqlite3_changes(store->wdb);
            }
            at += idlen + 1;
        }
        if (rc == SQLITE_DONE) {
            sqlite3_stmt *u = at >= len ? q[S_DEL_BATCH] : q[S_KEEP_REST];
            sqlite3_bind_int64(u, 1, batch);
            if (at < len)
                sqlite3_bind_blob(u, 2, copy + at, (int)(len - at), SQLITE_STATIC);
            rc = sweep_step(u);
        }
        fsa_free(copy);
        if (rc != SQLITE_DONE)
            break;
    }
    *deleted = n;
    return rc == SQLITE_DONE || rc == SQLITE_OK ? FSA_OK : map_rc(rc);
}

static fsa_status_t sq_sweep_ops(fsa_store_t *head, int64_t before_ms, unsigned max_rows,
                                 int64_t *deleted)
{
    sq_store_t *store = (sq_store_t *)(void *)head;
    sqlite3_stmt *q[S__COUNT] = {NULL};
    writer_take(store);
    fsa_status_t st = sync_full(store, NULL, 0);
    for (int i = 0; i < S__COUNT && st == FSA_OK; i++) {
        int rc = sqlite3_prepare_v2(store->wdb, sweep_sql[i], -1, &q[i], NULL);
        st = rc == SQLITE_OK ? FSA_OK : map_rc(rc);
    }
    if (st == FSA_OK)
        st = exec_sql(store->wdb, "BEGIN IMMEDIATE", NULL, 0);
    if (st == FSA_OK) {
        st = sweep_batches(store, q, before_ms, max_rows, deleted);
        if (st == FSA_OK)
            st = exec_sql(store->wdb, "COMMIT", NULL, 0);
        if (st != FSA_OK) {
            (void)sqlite3_exec(store->wdb, "ROLLBACK", NULL, NULL, NULL);
            *deleted = 0;
        }
    }
    for (int i = 0; i < S__COUNT; i++)
        sqlite3_finalize(q[i]);
    writer_give(store);
    return st;
}

/* ---- reads ---- */

static reader_t *reader_take(sq_store_t *s)
{
    const fsa_port_t *port = s->port;
    port->mutex_lock(port->ctx, s->rlock);
    for (;;) {
        for (unsigned i = 0; i < s->nreaders; i++) {
            if (!s->readers[i].busy) {
                s->readers[i].busy = true;
                port->mutex_unlock(port->ctx, s->rlock);
                return &s->readers[i];
            }
        }
        (void)port->cond_wait(port->ctx, s->rcond, s->rlock, fsa_mono_forever());
    }
}

static void reader_give(sq_store_t *s, reader_t *r)
{
    const fsa_port_t *port = s->port;
    port->mutex_lock(port->ctx, s->rlock);
    r->busy = false;
    port->cond_signal(port->ctx, s->rcond);
    port->mutex_unlock(port->ctx, s->rlock);
}

/* Records what a scoped device was sent on this page (store.h: a page asked for again is
 * answered the same). */
static fsa_status_t mark_delivered(sq_store_t *s, const char *device, const fsa_codec_pull_t *out,
                                   const int64_t *chgs)
{
    writer_take(s);
    fsa_status_t st = sync_full(s, NULL, 0);
    if (st == FSA_OK)
        st = exec_sql(s->wdb, "BEGIN IMMEDIATE", NULL, 0);
    bool in_tx = st == FSA_OK;
    sqlite3_stmt *q = s->w[W_DELIVERED];
    for (size_t i = 0; i < out->count && st == FSA_OK; i++) {
        const fsa_codec_change_t *c = &out->changes[i];
        fsa__db_bind_text(q, 1, device);
        fsa__db_bind_text(q, 2, fsa_type_name(c->type));
        fsa__db_bind_text(q, 3, c->id);
        if (c->gone)
            sqlite3_bind_int64(q, 4, chgs[i]);
        else
            sqlite3_bind_null(q, 4);
        int rc = sqlite3_step(q);
        sqlite3_reset(q);
        sqlite3_clear_bindings(q);
        st = rc == SQLITE_DONE ? FSA_OK : map_rc(rc);
    }
    if (st == FSA_OK) {
        int rc = sqlite3_exec(s->wdb, "COMMIT", NULL, NULL, NULL);
        st = map_rc(rc);
        in_tx = rc != SQLITE_OK;
    }
    if (in_tx)
        (void)sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
    writer_give(s);
    return st;
}

static fsa_status_t sq_pull(fsa_store_t *head, const char *device, const fsa_store_scope_t *scope,
                            int64_t since, unsigned limit, fsa_codec_pull_t *out,
                            int64_t *next_cursor)
{
    sq_store_t *store = (sq_store_t *)(void *)head;
    out->changes = fsa_calloc(limit, sizeof *out->changes);
    int64_t *chgs = scope != NULL ? fsa_calloc(limit, sizeof *chgs) : NULL;
    if (out->changes == NULL || (scope != NULL && chgs == NULL)) {
        fsa_free(chgs);
        fsa_codec_pull_free(out);
        return FSA_ENOMEM;
    }
    reader_t *rd = reader_take(store);
    sqlite3_stmt *q = rd->st[scope != NULL ? R_SCOPED : R_PULL];
    sqlite3_bind_int64(q, 1, since);
    fsa__db_bind_text(q, 2, device);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)limit + 1); /* one more tells whether there is more */
    if (scope != NULL) {
        fsa__db_bind_text(q, 4, scope->sites_json);
        fsa__db_bind_text(q, 5, scope->people_json);
    }

    fsa_status_t st = FSA_OK;
    int64_t last = since;
    int rc;
    size_t bytes = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (out->count == limit ||
            !fsa__store_page_fits(&bytes, out->count, (size_t)sqlite3_column_bytes(q, 4))) {
            out->more = true;
            break;
        }
        fsa_codec_change_t *c = &out->changes[out->count];
        const char *type = (const char *)sqlite3_column_text(q, 0);
        if (type == NULL || fsa_type_parse(type, &c->type) != FSA_OK) {
            st = FSA_ECORRUPT;
            break;
        }
        column_copy(q, 1, c->id, sizeof c->id);
        c->version = sqlite3_column_int64(q, 2);
        c->mdtz_ms = sqlite3_column_int64(q, 3);
        c->gone = sqlite3_column_int(q, 6) == 0;
        if (!c->gone) {
            c->fields = column_dup(q, 4);
            if (c->fields == NULL) {
                st = FSA_ENOMEM;
                break;
            }
        }
        last = sqlite3_column_int64(q, 5);
        if (chgs != NULL)
            chgs[out->count] = last;
        out->count++;
    }
    if (st == FSA_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        st = map_rc(rc);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    reader_give(store, rd);
    if (st == FSA_OK && scope != NULL && out->count > 0) {
        fsa__store_pull_gap();
        st = mark_delivered(store, device, out, chgs);
    }
    fsa_free(chgs);
    if (st != FSA_OK) {
        fsa_codec_pull_free(out);
        return st;
    }
    *next_cursor = last;
    return FSA_OK;
}

static fsa_status_t sq_get(fsa_store_t *head, fsa_type_t type, const char *id,
                           fsa_codec_change_t *out)
{
    sq_store_t *store = (sq_store_t *)(void *)head;
    reader_t *rd = reader_take(store);
    sqlite3_stmt *q = rd->st[R_GET];
    fsa__db_bind_text(q, 1, fsa_type_name(type));
    fsa__db_bind_text(q, 2, id);
    int rc = sqlite3_step(q);
    fsa_status_t st = FSA_OK;
    if (rc == SQLITE_ROW) {
        out->type = type;
        snprintf(out->id, sizeof out->id, "%s", id);
        out->version = sqlite3_column_int64(q, 0);
        out->mdtz_ms = sqlite3_column_int64(q, 1);
        out->fields = column_dup(q, 2);
        if (out->fields == NULL)
            st = FSA_ENOMEM;
    } else {
        st = rc == SQLITE_DONE ? FSA_ENOTFOUND : map_rc(rc);
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    reader_give(store, rd);
    if (st != FSA_OK)
        fsa_codec_change_clear(out);
    return st;
}

static fsa_status_t sq_nonce_seen(fsa_store_t *head, const char *device, const char *nonce,
                                  int64_t now_ms, bool *seen)
{
    sq_store_t *store = (sq_store_t *)(void *)head;
    reader_t *rd = reader_take(store);
    sqlite3_stmt *q = rd->st[R_NONCE];
    fsa__db_bind_text(q, 1, device);
    fsa__db_bind_text(q, 2, nonce);
    sqlite3_bind_int64(q, 3, now_ms);
    int rc = sqlite3_step(q);
    fsa_status_t st = rc == SQLITE_ROW || rc == SQLITE_DONE ? FSA_OK : map_rc(rc);
    *seen = rc == SQLITE_ROW;
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    reader_give(store, rd);
    return st;
}

static fsa_status_t sq_counts(fsa_store_t *head, int64_t *entities, int64_t *ops,
                              int64_t *last_change)
{
    sq_store_t *store = (sq_store_t *)(void *)head;
    reader_t *rd = reader_take(store);
    int64_t e = query_int(rd->db, "SELECT count(*) FROM entities", -1);
    int64_t o = query_int(rd->db, "SELECT count(*) FROM ops", -1);
    int64_t c = query_int(rd->db, "SELECT max(chg) FROM entities", 0);
    reader_give(store, rd);
    if (e < 0 || o < 0)
        return FSA_EIO;
    *entities = e;
    *ops = o;
    *last_change = c;
    return FSA_OK;
}

static const fsa__store_ops_t sq_ops = {
    .version = FSA__STORE_OPS_VERSION,
    .name = "sqlite",
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .abort = sq_abort,
    .savepoint = sq_savepoint,
    .load_entity = sq_load_entity,
    .write_entity = sq_write_entity,
    .touch_children = sq_touch_children,
    .find_op = sq_find_op,
    .claim_op = sq_claim_op,
    .log_op = sq_log_op,
    .lazy_claims = true,
    .pull = sq_pull,
    .get = sq_get,
    .counts = sq_counts,
    .nonce = sq_nonce,
    .nonce_seen = sq_nonce_seen,
    .sweep_ops = sq_sweep_ops,
};
