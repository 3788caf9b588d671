/* fieldsync-server: the server's entity store on SQLite (entities, op log, change sequence). */

/*
 * A deliberate exception to STYLE.md ("only storage/ includes sqlite3.h"): fieldsync-server is a
 * separate program with its own database, which shares nothing with a device's journal but the
 * entity model (storage/model.h). Its store lives here, next to the server, and nothing outside
 * sync/server/ includes it.
 */
#include "sync/server/store.h"
#include "port/alloc.h"
#include "storage/libs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#define STORE_APP_ID 0x46534153 /* "FSAS": a fieldsync-server database */
#define STORE_SCHEMA 2
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

enum { W_SEL_ENTITY, W_INS_ENTITY, W_UPD_ENTITY, W_SEL_OP, W_INS_OP, W__COUNT };

static const char *const write_sql[W__COUNT] = {
    [W_SEL_ENTITY] = "SELECT version, fields FROM entities WHERE type=?1 AND id=?2",
    [W_INS_ENTITY] = "INSERT INTO entities(type, id, version, mdtz, fields, chg, owner)"
                     " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [W_UPD_ENTITY] = "UPDATE entities SET version=?3, mdtz=?4, fields=?5, chg=?6"
                     " WHERE type=?1 AND id=?2",
    [W_SEL_OP] = "SELECT status, version, code, message, type, id FROM ops WHERE op_id=?1",
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

#define W_SWEEP_OPS_SQL                                                                            \
    "DELETE FROM ops WHERE op_id IN"                                                               \
    " (SELECT op_id FROM ops WHERE received < ?1 ORDER BY received LIMIT ?2)"

enum { R_PULL, R_GET, R__COUNT };

static const char *const read_sql[R__COUNT] = {
    [R_PULL] = "SELECT type, id, version, mdtz, fields, chg FROM entities"
               " WHERE chg > ?1 AND (type <> 'attendance' OR owner IS NULL OR owner = ?2)"
               " ORDER BY chg LIMIT ?3",
    [R_GET] = "SELECT version, mdtz, fields FROM entities WHERE type=?1 AND id=?2",
};

typedef struct reader {
    sqlite3 *db;
    sqlite3_stmt *st[R__COUNT];
    bool busy;
} reader_t;

struct fsa_store {
    const fsa_port_t *port;
    sqlite3 *wdb;
    sqlite3_stmt *w[W__COUNT];
    /* The nonce connection commits with synchronous=NORMAL: a nonce must be visible to every
     * process at once (WAL gives that at commit), but need not cost an fsync per request; a power
     * loss can forget the nonces of the last moments, never an op. It shares the writer's turn. */
    sqlite3 *ndb;
    sqlite3_stmt *n[N__COUNT];
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
};

static fsa_status_t map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW: return FSA_OK;
    case SQLITE_NOMEM: return FSA_ENOMEM;
    case SQLITE_FULL: return FSA_EFULL;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return FSA_EBUSY;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return FSA_ECORRUPT;
    default: return FSA_EIO;
    }
}

static fsa_status_t db_fail(sqlite3 *db, int rc, const char *what, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", what, db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    return map_rc(rc);
}

static fsa_status_t exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return db_fail(db, rc, sql, err, errlen);
    return FSA_OK;
}

static int64_t query_int(sqlite3 *db, const char *sql, int64_t dflt)
{
    sqlite3_stmt *s = NULL;
    int64_t v = dflt;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW &&
        sqlite3_column_type(s, 0) != SQLITE_NULL)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
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

static void close_conn(sqlite3 *db, sqlite3_stmt **st, int n)
{
    for (int i = 0; i < n; i++) {
        sqlite3_finalize(st[i]);
        st[i] = NULL;
    }
    sqlite3_close(db);
}

void fsa_store_close(fsa_store_t *store)
{
    if (store == NULL)
        return;
    for (unsigned i = 0; i < store->nreaders; i++)
        close_conn(store->readers[i].db, store->readers[i].st, R__COUNT);
    /* The writer closes last: when the last connection closes, SQLite checkpoints the WAL into
     * the database and removes it, which is the clean shutdown. */
    close_conn(store->ndb, store->n, N__COUNT);
    close_conn(store->wdb, store->w, W__COUNT);
    if (store->port != NULL) {
        store->port->mutex_free(store->port->ctx, store->wlock);
        store->port->cond_free(store->port->ctx, store->wcond);
        store->port->mutex_free(store->port->ctx, store->rlock);
        store->port->cond_free(store->port->ctx, store->rcond);
    }
    fsa_free(store);
}

fsa_status_t fsa_store_open(const fsa_port_t *port, const char *path, unsigned readers,
                            fsa_store_t **out, char *err, size_t errlen)
{
    char dummy[8];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (out != NULL)
        *out = NULL;
    if (port == NULL || path == NULL || out == NULL || readers == 0 ||
        readers > STORE_READERS_MAX) {
        snprintf(err, errlen, "invalid arguments");
        return FSA_EINVAL;
    }
    /* Create the file ourselves so that it (and the -wal/-shm files SQLite derives from it) is
     * private to this user from the start. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return FSA_EIO;
    }
    close(fd);

    fsa_store_t *s = fsa_calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return FSA_ENOMEM;
    }
    s->port = port;
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
        st = open_conn(path, &s->ndb, err, errlen);
    if (st == FSA_OK)
        st = exec_sql(s->ndb, "PRAGMA synchronous=NORMAL", err, errlen);
    if (st == FSA_OK)
        st = prepare_all(s->ndb, nonce_sql, s->n, N__COUNT, err, errlen);
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
            fsa_store_close(s);
        }
        return st;
    }
    *out = s;
    return FSA_OK;
}

/* ---- helpers on statements ---- */

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v == NULL)
        sqlite3_bind_null(s, i);
    else
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

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

static void column_copy(sqlite3_stmt *s, int i, char *dst, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    snprintf(dst, cap, "%s", t != NULL ? (const char *)t : "");
}

/* ---- apply ---- */

/* The entity as the write transaction sees it: *fields NULL when it does not exist. */
static fsa_status_t load_entity(fsa_store_t *s, const char *type, const char *id, int64_t *version,
                                char **fields)
{
    sqlite3_stmt *q = s->w[W_SEL_ENTITY];
    *version = 0;
    *fields = NULL;
    bind_text(q, 1, type);
    bind_text(q, 2, id);
    int rc = sqlite3_step(q);
    fsa_status_t st = FSA_OK;
    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int64(q, 0);
        *fields = column_dup(q, 1);
        if (*fields == NULL)
            st = FSA_ENOMEM;
    } else if (rc != SQLITE_DONE) {
        st = map_rc(rc);
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return st;
}

typedef struct logged {
    bool found;
    fsa_result_status_t status;
    int64_t version;
    char code[FSA_CODEC_CODE_BYTES];
    char message[FSA_CODEC_MESSAGE_BYTES];
    char type[16];
    char id[FSA_ID_BYTES];
} logged_t;

static fsa_status_t find_op(fsa_store_t *s, const char *op_id, logged_t *out)
{
    sqlite3_stmt *q = s->w[W_SEL_OP];
    memset(out, 0, sizeof *out);
    bind_text(q, 1, op_id);
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

static fsa_status_t log_op(fsa_store_t *s, const char *device, const fsa_op_t *op,
                           const fsa_codec_result_t *r, int64_t now_ms)
{
    sqlite3_stmt *q = s->w[W_INS_OP];
    bind_text(q, 1, op->op_id);
    bind_text(q, 2, device);
    sqlite3_bind_int64(q, 3, op->seq);
    bind_text(q, 4, (unsigned)op->type < FSA__TYPE_COUNT ? fsa_type_name(op->type) : "?");
    bind_text(q, 5, op->id);
    sqlite3_bind_int(q, 6, (int)r->status);
    sqlite3_bind_int64(q, 7, r->version);
    bind_text(q, 8, r->code);
    bind_text(q, 9, r->message);
    sqlite3_bind_int64(q, 10, now_ms);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return rc == SQLITE_DONE ? FSA_OK : map_rc(rc);
}

static fsa_status_t write_entity(fsa_store_t *s, const fsa_op_t *op, bool exists, int64_t version,
                                 const char *fields, int64_t now_ms, const char *owner)
{
    sqlite3_stmt *q = s->w[exists ? W_UPD_ENTITY : W_INS_ENTITY];
    bind_text(q, 1, fsa_type_name(op->type));
    bind_text(q, 2, op->id);
    sqlite3_bind_int64(q, 3, version);
    sqlite3_bind_int64(q, 4, now_ms);
    bind_text(q, 5, fields);
    sqlite3_bind_int64(q, 6, s->last_chg + 1);
    if (!exists)
        bind_text(q, 7, owner);
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

/* Sets r->current from the entity as the transaction sees it now (nothing when it is absent). */
static fsa_status_t attach_current(fsa_store_t *s, const char *type, const char *id,
                                   fsa_codec_result_t *r)
{
    int64_t version = 0;
    char *fields = NULL;
    fsa_status_t st = load_entity(s, type, id, &version, &fields);
    if (st != FSA_OK || fields == NULL)
        return st;
    fsa_free(r->current_fields);
    r->current_fields = fields;
    r->current_version = version;
    r->has_current = true;
    return FSA_OK;
}

static void set_result_err(fsa_codec_result_t *r, const char *code, const char *message)
{
    snprintf(r->code, sizeof r->code, "%s", code);
    snprintf(r->message, sizeof r->message, "%s", message);
}

/* Fills r as a duplicate of the logged outcome. */
static fsa_status_t duplicate_result(fsa_store_t *s, const logged_t *lg, fsa_codec_result_t *r)
{
    r->status = FSA_RESULT_DUPLICATE;
    r->original = lg->status;
    r->version = lg->status == FSA_RESULT_APPLIED ? lg->version : 0;
    if (lg->code[0] != '\0')
        set_result_err(r, lg->code, lg->message);
    if (lg->status == FSA_RESULT_CONFLICT)
        return attach_current(s, lg->type, lg->id, r);
    return FSA_OK;
}

/*
 * Tries one (non-duplicate) op inside the transaction. On FSA_OK r holds its outcome (applied,
 * conflict or rejected) and, if applied, the entity is written. Other statuses are database or
 * memory failures that abort the batch.
 */
static fsa_status_t try_op(fsa_store_t *s, const char *device, bool by_server,
                           const fsa_codec_op_t *cop, int64_t now_ms, fsa_codec_result_t *r)
{
    const fsa_op_t *op = &cop->op;
    if (cop->reject.code[0] != '\0') {
        r->status = FSA_RESULT_REJECTED;
        set_result_err(r, cop->reject.code, cop->reject.message);
        return FSA_OK;
    }
    const char *type = fsa_type_name(op->type);
    int64_t version = 0;
    char *fields = NULL;
    char *next = NULL;
    fsa_model_err_t merr;
    memset(&merr, 0, sizeof merr);
    fsa_status_t st = load_entity(s, type, op->id, &version, &fields);
    if (st != FSA_OK)
        return st;
    fsa_status_t ast =
        fsa_model_apply(op, fields, version, by_server ? FSA_APPLY_BY_SERVER : 0u, &next, &merr);
    switch (ast) {
    case FSA_OK: {
        int64_t nv = fields != NULL ? version + 1 : 1;
        st = write_entity(s, op, fields != NULL, nv, next, now_ms, by_server ? NULL : device);
        if (st == FSA_OK) {
            r->status = FSA_RESULT_APPLIED;
            r->version = nv;
        }
        break;
    }
    case FSA_ECONFLICT:
        r->status = FSA_RESULT_CONFLICT;
        set_result_err(r, "conflict",
                       merr.message[0] != '\0' ? merr.message : "the op's precondition failed");
        if (fields != NULL) {
            r->has_current = true;
            r->current_version = version;
            r->current_fields = fields;
            fields = NULL;
        }
        break;
    case FSA_ENOMEM: st = FSA_ENOMEM; break;
    default:
        /* FSA_ENOTFOUND, FSA_EINVAL, FSA_ETRANSITION: the model named the rejection. */
        r->status = FSA_RESULT_REJECTED;
        set_result_err(r, merr.code[0] != '\0' ? merr.code : "invalid_value",
                       merr.message[0] != '\0' ? merr.message : fsa_status_str(ast));
        break;
    }
    fsa_model_free(next);
    fsa_free(fields); /* ours (column_dup), not the model's */
    return st;
}

static fsa_status_t apply_single(fsa_store_t *s, const char *device, bool by_server,
                                 const fsa_codec_op_t *cop, int64_t now_ms, fsa_codec_result_t *r)
{
    logged_t lg;
    fsa_status_t st = find_op(s, cop->op.op_id, &lg);
    if (st != FSA_OK)
        return st;
    if (lg.found)
        return duplicate_result(s, &lg, r);
    st = try_op(s, device, by_server, cop, now_ms, r);
    if (st == FSA_OK)
        st = log_op(s, device, &cop->op, r, now_ms);
    return st;
}

/*
 * Applies the group of ops[first] (every later op with the same group) all-or-nothing, marking
 * them done. Each op is logged as it is tried, inside the savepoint; when one is not applied the
 * savepoint is rolled back (entities and those log rows) and every op of the group that was not
 * a duplicate from before this batch is logged again with the group's outcome.
 */
static fsa_status_t apply_group(fsa_store_t *s, const char *device, bool by_server,
                                const fsa_codec_op_t *ops, size_t n, size_t first, int64_t now_ms,
                                fsa_codec_result_t *results, bool *done)
{
    const char *group = ops[first].op.group;
    fsa_status_t st = exec_sql(s->wdb, "SAVEPOINT grp", NULL, 0);
    if (st != FSA_OK)
        return st;
    int64_t chg_before = s->last_chg;
    size_t failed = n; /* index of the op that was not applied, n when none */
    for (size_t i = first; i < n && st == FSA_OK; i++) {
        if (done[i] || strcmp(ops[i].op.group, group) != 0)
            continue;
        done[i] = true;
        if (failed < n)
            continue; /* the group failed: later ops only get the group's outcome */
        logged_t lg;
        st = find_op(s, ops[i].op.op_id, &lg);
        if (st != FSA_OK)
            break;
        if (lg.found) {
            st = duplicate_result(s, &lg, &results[i]);
            continue;
        }
        st = try_op(s, device, by_server, &ops[i], now_ms, &results[i]);
        if (st == FSA_OK)
            st = log_op(s, device, &ops[i].op, &results[i], now_ms);
        if (st == FSA_OK && results[i].status != FSA_RESULT_APPLIED)
            failed = i;
    }
    if (st != FSA_OK || failed == n) {
        if (st == FSA_OK)
            st = exec_sql(s->wdb, "RELEASE grp", NULL, 0);
        return st; /* on failure the caller rolls the whole batch back */
    }

    st = exec_sql(s->wdb, "ROLLBACK TO grp", NULL, 0);
    if (st != FSA_OK)
        return st;
    s->last_chg = chg_before;
    fsa_result_status_t status = results[failed].status;
    char code[FSA_CODEC_CODE_BYTES];
    char msg[FSA_CODEC_MESSAGE_BYTES];
    snprintf(code, sizeof code, "%s", results[failed].code);
    snprintf(msg, sizeof msg, "group %.48s not applied: op %.36s: %.120s", group,
             ops[failed].op.op_id, results[failed].message);
    /* A duplicate of an op logged before this group keeps its answer; a duplicate of an op of
     * this very group (an op_id repeated in the batch) was rolled back with it and takes the
     * group's outcome. Decided for all before anything is logged again. */
    bool *retake = fsa_calloc(n - first, sizeof *retake);
    if (retake == NULL)
        return FSA_ENOMEM;
    for (size_t i = first; i < n && st == FSA_OK; i++) {
        if (strcmp(ops[i].op.group, group) != 0)
            continue;
        retake[i - first] = true;
        if (results[i].status == FSA_RESULT_DUPLICATE) {
            logged_t lg;
            st = find_op(s, ops[i].op.op_id, &lg);
            retake[i - first] = !lg.found;
        }
    }
    for (size_t i = first; i < n && st == FSA_OK; i++) {
        fsa_codec_result_t *r = &results[i];
        if (!retake[i - first])
            continue;
        fsa_codec_result_clear(r);
        snprintf(r->op_id, sizeof r->op_id, "%s", ops[i].op.op_id);
        r->status = status;
        set_result_err(r, code, msg);
        if (status == FSA_RESULT_CONFLICT && ops[i].reject.code[0] == '\0')
            st = attach_current(s, fsa_type_name(ops[i].op.type), ops[i].op.id, r);
        if (st == FSA_OK)
            st = log_op(s, device, &ops[i].op, r, now_ms); /* a repeated op_id: ignored */
    }
    fsa_free(retake);
    if (st == FSA_OK)
        st = exec_sql(s->wdb, "RELEASE grp", NULL, 0);
    return st;
}

static void writer_take(fsa_store_t *s)
{
    const fsa_port_t *port = s->port;
    port->mutex_lock(port->ctx, s->wlock);
    uint64_t mine = s->wnext++;
    while (s->wserving != mine)
        (void)port->cond_wait(port->ctx, s->wcond, s->wlock, fsa_mono_forever());
    port->mutex_unlock(port->ctx, s->wlock);
}

static void writer_give(fsa_store_t *s)
{
    const fsa_port_t *port = s->port;
    port->mutex_lock(port->ctx, s->wlock);
    s->wserving++;
    port->cond_broadcast(port->ctx, s->wcond);
    port->mutex_unlock(port->ctx, s->wlock);
}

fsa_status_t fsa_store_apply(fsa_store_t *store, const char *device, bool by_server,
                             const fsa_codec_op_t *ops, size_t n, int64_t now_ms,
                             fsa_codec_result_t *results, char *err, size_t errlen)
{
    char dummy[8];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (store == NULL || device == NULL || (n > 0 && (ops == NULL || results == NULL))) {
        snprintf(err, errlen, "invalid arguments");
        return FSA_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        memset(&results[i], 0, sizeof results[i]);
        snprintf(results[i].op_id, sizeof results[i].op_id, "%s", ops[i].op.op_id);
    }
    bool *done = fsa_calloc(n > 0 ? n : 1, sizeof *done);
    if (done == NULL) {
        snprintf(err, errlen, "out of memory");
        return FSA_ENOMEM;
    }
    writer_take(store);
    fsa_status_t st = exec_sql(store->wdb, "BEGIN IMMEDIATE", err, errlen);
    bool in_tx = st == FSA_OK;
    /* Read inside the write transaction: another server process on this database may have
     * committed changes since this one last wrote. */
    if (in_tx)
        store->last_chg = query_int(store->wdb, "SELECT max(chg) FROM entities", 0);
    for (size_t i = 0; i < n && st == FSA_OK; i++) {
        if (done[i])
            continue;
        if (ops[i].op.group[0] == '\0') {
            done[i] = true;
            st = apply_single(store, device, by_server, &ops[i], now_ms, &results[i]);
        } else {
            st = apply_group(store, device, by_server, ops, n, i, now_ms, results, done);
        }
    }
    if (st == FSA_OK) {
        int rc = sqlite3_exec(store->wdb, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            st = db_fail(store->wdb, rc, "commit failed", err, errlen);
        else
            in_tx = false;
    } else if (err[0] == '\0') {
        snprintf(err, errlen, "applying the batch failed: %s (%s)", fsa_status_str(st),
                 sqlite3_errmsg(store->wdb));
    }
    if (in_tx)
        (void)sqlite3_exec(store->wdb, "ROLLBACK", NULL, NULL, NULL);
    writer_give(store);
    fsa_free(done);
    if (st != FSA_OK) {
        for (size_t i = 0; i < n; i++)
            fsa_codec_result_clear(&results[i]);
    }
    return st;
}

/* ---- replay state and retention ---- */

fsa_status_t fsa_store_nonce(fsa_store_t *store, const char *device, const char *nonce,
                             int64_t expires_ms, int64_t now_ms, bool *replay)
{
    if (replay != NULL)
        *replay = false;
    if (store == NULL || device == NULL || nonce == NULL || replay == NULL)
        return FSA_EINVAL;
    writer_take(store);
    fsa_status_t st = exec_sql(store->ndb, "BEGIN IMMEDIATE", NULL, 0);
    bool in_tx = st == FSA_OK;
    if (st == FSA_OK) {
        sqlite3_stmt *q = store->n[N_UPSERT];
        bind_text(q, 1, device);
        bind_text(q, 2, nonce);
        sqlite3_bind_int64(q, 3, expires_ms);
        sqlite3_bind_int64(q, 4, now_ms);
        int rc = sqlite3_step(q);
        sqlite3_reset(q);
        sqlite3_clear_bindings(q);
        st = rc == SQLITE_DONE ? FSA_OK : map_rc(rc);
        if (st == FSA_OK)
            *replay = sqlite3_changes(store->ndb) == 0;
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
        int rc = sqlite3_exec(store->ndb, "COMMIT", NULL, NULL, NULL);
        st = map_rc(rc);
        in_tx = rc != SQLITE_OK;
    }
    if (in_tx)
        (void)sqlite3_exec(store->ndb, "ROLLBACK", NULL, NULL, NULL);
    writer_give(store);
    if (st != FSA_OK)
        *replay = false;
    return st;
}

fsa_status_t fsa_store_sweep_ops(fsa_store_t *store, int64_t before_ms, unsigned max_rows,
                                 int64_t *deleted)
{
    if (deleted != NULL)
        *deleted = 0;
    if (store == NULL || deleted == NULL || max_rows == 0)
        return FSA_EINVAL;
    writer_take(store);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(store->wdb, W_SWEEP_OPS_SQL, -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, before_ms);
        sqlite3_bind_int64(q, 2, max_rows);
        /* One statement is its own transaction: short, so pushes wait for it at most a moment. */
        rc = sqlite3_step(q);
        if (rc == SQLITE_DONE)
            *deleted = sqlite3_changes(store->wdb);
    }
    sqlite3_finalize(q);
    writer_give(store);
    return rc == SQLITE_DONE ? FSA_OK : map_rc(rc);
}

/* ---- reads ---- */

static reader_t *reader_take(fsa_store_t *s)
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

static void reader_give(fsa_store_t *s, reader_t *r)
{
    const fsa_port_t *port = s->port;
    port->mutex_lock(port->ctx, s->rlock);
    r->busy = false;
    port->cond_signal(port->ctx, s->rcond);
    port->mutex_unlock(port->ctx, s->rlock);
}

fsa_status_t fsa_store_pull(fsa_store_t *store, const char *device, int64_t since, unsigned limit,
                            fsa_codec_pull_t *out, int64_t *next_cursor)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (next_cursor != NULL)
        *next_cursor = since;
    if (store == NULL || device == NULL || out == NULL || next_cursor == NULL || since < 0 ||
        limit == 0 || limit > FSA_STORE_PULL_MAX)
        return FSA_EINVAL;
    out->changes = fsa_calloc(limit, sizeof *out->changes);
    if (out->changes == NULL)
        return FSA_ENOMEM;
    reader_t *rd = reader_take(store);
    sqlite3_stmt *q = rd->st[R_PULL];
    sqlite3_bind_int64(q, 1, since);
    bind_text(q, 2, device);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)limit + 1); /* one more tells whether there is more */
    fsa_status_t st = FSA_OK;
    int64_t last = since;
    int rc;
    size_t bytes = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        /* A page ends at `limit` changes or at FSA_STORE_PAGE_BYTES of JSON, whichever comes
         * first, but always holds at least one change so that a device makes progress. */
        size_t cost = (size_t)sqlite3_column_bytes(q, 4) + FSA_STORE_CHANGE_OVERHEAD;
        if (out->count == limit || (out->count > 0 && bytes + cost > FSA_STORE_PAGE_BYTES)) {
            out->more = true;
            break;
        }
        bytes += cost;
        fsa_codec_change_t *c = &out->changes[out->count];
        const char *type = (const char *)sqlite3_column_text(q, 0);
        if (type == NULL || fsa_type_parse(type, &c->type) != FSA_OK) {
            st = FSA_ECORRUPT;
            break;
        }
        column_copy(q, 1, c->id, sizeof c->id);
        c->version = sqlite3_column_int64(q, 2);
        c->mdtz_ms = sqlite3_column_int64(q, 3);
        c->fields = column_dup(q, 4);
        if (c->fields == NULL) {
            st = FSA_ENOMEM;
            break;
        }
        last = sqlite3_column_int64(q, 5);
        out->count++;
    }
    if (st == FSA_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        st = map_rc(rc);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    reader_give(store, rd);
    if (st != FSA_OK) {
        fsa_codec_pull_free(out);
        return st;
    }
    *next_cursor = last;
    return FSA_OK;
}

fsa_status_t fsa_store_get(fsa_store_t *store, fsa_type_t type, const char *id,
                           fsa_codec_change_t *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (store == NULL || id == NULL || out == NULL || (unsigned)type >= FSA__TYPE_COUNT ||
        strlen(id) >= sizeof out->id)
        return FSA_EINVAL;
    reader_t *rd = reader_take(store);
    sqlite3_stmt *q = rd->st[R_GET];
    bind_text(q, 1, fsa_type_name(type));
    bind_text(q, 2, id);
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

fsa_status_t fsa_store_counts(fsa_store_t *store, int64_t *entities, int64_t *ops,
                              int64_t *last_change)
{
    *entities = *ops = *last_change = 0;
    if (store == NULL)
        return FSA_EINVAL;
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
