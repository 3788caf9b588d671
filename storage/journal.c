/* fieldsync: the journal: recording, the local view, the outbox, conflicts and sync state. */
#include <assert.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port/alloc.h"
#include "port/limits.h"
#include "port/pulse.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/lock_internal.h"
#include "storage/state_keys.h"

/* Prepared statements, kept for the life of the handle: preparing costs more CPU than the rest of
 * a record. Keyed by the address of the SQL text, which is always a string literal. */
#define STMT_CACHE_MAX 48

struct fsa_journal {
    fsa_port_t *port;
    sqlite3 *db;
    fsa_flock_t *users; /* membership of the journal's users (db.c) */
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } stmts[STMT_CACHE_MAX];
    int nstmts;
    fsa_mutex_t *mu; /* serializes the handle's transactions across threads */
    /* Yielding to waiting threads (fsa_outbox_apply_batch): the threads waiting for mu, and, under
     * mu, whether the sync thread waits in turn for them (on `turn`, signalled by the first of
     * them to get mu). */
    _Atomic int waiting;
    bool yielding;
    fsa_cond_t *turn;
    bool sync_full;        /* opened synchronous=FULL */
    bool relaxed;          /* under mu: left at synchronous=NORMAL by a restore that failed */
    sqlite3 *_Atomic ckpt; /* the drain's checkpoints' connection (fsa__db_checkpoint); NULL */
    int64_t budget_bytes;
    char *path;
};

/* ---- small SQLite helpers ---- */

/* A cached statement for sql (a string literal), ready to bind. Hand it back with release(). */
static fsa_status_t prep(fsa_journal_t *j, const char *sql, sqlite3_stmt **st)
{
    for (int i = 0; i < j->nstmts; i++) {
        if (j->stmts[i].sql == sql) {
            *st = j->stmts[i].st;
            return FSA_OK;
        }
    }
    unsigned flags = j->nstmts < STMT_CACHE_MAX ? SQLITE_PREPARE_PERSISTENT : 0;
    int rc = sqlite3_prepare_v3(j->db, sql, -1, flags, st, NULL);
    if (rc != SQLITE_OK) {
        fsa_log(j->port, FSA_LOG_ERROR, "journal: cannot prepare statement: %s",
                sqlite3_errmsg(j->db));
        *st = NULL;
        return fsa__db_status(rc);
    }
    if (j->nstmts < STMT_CACHE_MAX) {
        j->stmts[j->nstmts].sql = sql;
        j->stmts[j->nstmts].st = *st;
        j->nstmts++;
    }
    return FSA_OK;
}

/* Resets a statement from prep() for its next use (or finalizes it if the cache was full). */
static void release(fsa_journal_t *j, sqlite3_stmt *st)
{
    if (st == NULL)
        return;
    for (int i = 0; i < j->nstmts; i++) {
        if (j->stmts[i].st == st) {
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return;
        }
    }
    sqlite3_finalize(st); /* prepared when the cache was full: not kept */
}

/* SQLITE_STATIC: SQLite keeps the pointer instead of a copy, so binding allocates nothing and
 * cannot fail for want of memory (a failed copy would leave the parameter NULL and the statement
 * would run on with it: a lookup finds nothing, an insert stores NULL). Every string bound here
 * outlives the statement's use, which ends at release(). */
static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s != NULL ? s : "", -1, SQLITE_STATIC);
}

static char *dup_col(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    if (s == NULL)
        return NULL;
    return fsa_strdup((const char *)s);
}

static void copy_col(char *dst, size_t cap, sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    snprintf(dst, cap, "%s", s != NULL ? (const char *)s : "");
}

/* Steps a statement that returns no rows, then finalizes it. */
static fsa_status_t step_done(fsa_journal_t *j, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    release(j, st);
    return rc == SQLITE_DONE ? FSA_OK : fsa__db_status(rc == SQLITE_ROW ? SQLITE_MISUSE : rc);
}

static void rec_error(fsa_rec_t *rec, const char *fmt, ...) FSA_PRINTF(2, 3);
static void rec_error(fsa_rec_t *rec, const char *fmt, ...)
{
    if (rec == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rec->error, sizeof rec->error, fmt, ap);
    va_end(ap);
}

/* Under the mutex no transaction is open, unless a COMMIT or ROLLBACK that had no memory to run
 * left one: ending it first keeps one failed allocation from failing every later call. */
static void end_leftover(fsa_journal_t *j)
{
    if (!sqlite3_get_autocommit(j->db))
        (void)sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
}

static fsa_status_t sync_full_again(fsa_journal_t *j);

/* Takes the journal's mutex; every call that touches the database starts here, so that a write
 * in autocommit mode never lands in a transaction left open, and a read never sees one. A thread
 * waits counted in j->waiting, and the sync thread applying results gives way to such threads
 * (fsa_outbox_apply_batch): when it waits for them, the first to get the mutex tells it. */
static void lock_j(fsa_journal_t *j)
{
    atomic_fetch_add(&j->waiting, 1);
    j->port->mutex_lock(j->port->ctx, j->mu);
    atomic_fetch_sub(&j->waiting, 1);
    if (j->yielding)
        j->port->cond_broadcast(j->port->ctx, j->turn);
    end_leftover(j);
    if (j->relaxed)
        (void)sync_full_again(j);
}

/* Runs one of the transaction statements (a string literal) from the statement cache: parsing
 * "BEGIN IMMEDIATE" and "COMMIT" anew for every write cost more than a tenth of a record. *xrc
 * (may be NULL) receives the extended result code of a failure. */
static fsa_status_t run_cached(fsa_journal_t *j, const char *sql, int *xrc)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, sql, &st);
    if (s != FSA_OK)
        return s;
    int rc = sqlite3_step(st);
    if (xrc != NULL)
        *xrc = rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
    release(j, st);
    return rc == SQLITE_DONE ? FSA_OK : fsa__db_status(rc);
}

static fsa_status_t begin(fsa_journal_t *j)
{
    lock_j(j);
    /* Never a write at synchronous=NORMAL that should have been FULL. */
    fsa_status_t st = j->relaxed ? FSA_ENOMEM : run_cached(j, "BEGIN IMMEDIATE", NULL);
    if (st != FSA_OK)
        j->port->mutex_unlock(j->port->ctx, j->mu);
    return st;
}

/* How a write ended: committed; the COMMIT failed (at its fsync or otherwise); or a statement
 * found no room before the COMMIT, with the journal below its budget (so the device is full). */
typedef enum commit_fail {
    COMMIT_DONE,
    COMMIT_FAILED,
    COMMIT_FSYNC_FAILED,      /* and the op may come back after a power loss (fsync_message) */
    COMMIT_FSYNC_OVERWRITTEN, /* failed at its fsync, but cannot come back: nothing recorded */
    COMMIT_DEVICE_FULL
} commit_fail_t;

/*
 * After a COMMIT whose fsync failed, the op's WAL frames are in the file: SQLite rolled the
 * transaction back in memory, but a power loss before the next commit would let its recovery find
 * them and bring the op back, although the caller was told it failed. The next commit writes at
 * the same place in the WAL, and once it is on the disk the old frames no longer chain, so the
 * journal makes that next commit at once: a small write of its own, a count of failed fsyncs
 * (a count, so that the row always changes: SQLite writes nothing for an update to the same
 * value, and such a commit would not sync). True when that commit, fsync included, succeeded:
 * the op can then no longer come back.
 */
static bool overwrite_failed_commit(fsa_journal_t *j)
{
    /* In a transaction left open by a failed ROLLBACK, the write would not commit at all. */
    return sqlite3_get_autocommit(j->db) &&
           sqlite3_exec(j->db,
                        "INSERT INTO sync_state(k, v) VALUES('" FSA_STATE_FSYNC_FAILURES "', 1) "
                        "ON CONFLICT(k) DO UPDATE SET v = v + 1",
                        NULL, NULL, NULL) == SQLITE_OK;
}

/* True when the open transaction has grown to the journal's budget (max_page_count). */
static bool at_budget(fsa_journal_t *j)
{
    int64_t pages = 0, max = 0;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(j->db, "SELECT * FROM pragma_page_count, pragma_max_page_count", -1, &q,
                           NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
        pages = sqlite3_column_int64(q, 0);
        max = sqlite3_column_int64(q, 1);
    }
    sqlite3_finalize(q);
    /* When it cannot tell (no memory for the query), the budget: the message of old. */
    return max == 0 || pages + 1 >= max;
}

/* Commits when st is FSA_OK, else rolls back; returns the final status. Releases the mutex.
 * *how (may be NULL) tells how it ended (see commit_fail_t). */
static fsa_status_t finish_commit(fsa_journal_t *j, fsa_status_t st, commit_fail_t *how)
{
    if (how != NULL)
        *how = COMMIT_DONE;
    if (st == FSA_EFULL && how != NULL && !at_budget(j))
        *how = COMMIT_DEVICE_FULL;
    if (st == FSA_OK) {
        int xrc = SQLITE_OK;
        st = run_cached(j, "COMMIT", &xrc);
        if (st != FSA_OK) {
            (void)sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
            commit_fail_t h = COMMIT_FAILED;
            if (xrc == SQLITE_IOERR_FSYNC)
                h = overwrite_failed_commit(j) ? COMMIT_FSYNC_OVERWRITTEN : COMMIT_FSYNC_FAILED;
            if (how != NULL)
                *how = h;
        }
    } else {
        (void)sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
    }
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return st;
}

static fsa_status_t finish(fsa_journal_t *j, fsa_status_t st)
{
    return finish_commit(j, st, NULL);
}

/*
 * SQLITE_FULL has two causes. The budget (max_page_count) is enforced when a statement allocates a
 * page; a device out of space (ENOSPC) shows, in WAL mode, mostly when the COMMIT writes the log,
 * or when a statement spills a large transaction's pages early. Telling them apart matters to the
 * person reading it: syncing makes room in the budget, and does nothing for a full device.
 */
static void full_message(fsa_journal_t *j, fsa_rec_t *rec, bool device_full)
{
    if (device_full)
        rec_error(rec,
                  "disk full: no space left on the device holding journal %s; nothing was "
                  "recorded; free space on the device",
                  j->path);
    else
        rec_error(rec, "journal full: %s reached its budget of %" PRId64 " MiB; sync to make room",
                  j->path, j->budget_bytes / (1024 * 1024));
}

/*
 * A failed fsync at COMMIT: when the journal's follow-up commit (overwrite_failed_commit)
 * succeeded, nothing was recorded, plainly. When it failed too (a device that keeps failing), the
 * outcome is open: the op is not in the journal now, but a power loss before the next commit may
 * bring it back. Recording it again at once is safe; after a power loss, the person should look
 * first. The message says so.
 */
static void fsync_message(fsa_journal_t *j, fsa_rec_t *rec, bool overwritten)
{
    if (overwritten) {
        rec_error(rec,
                  "journal %s: the device failed to store the op (fsync failed); nothing was "
                  "recorded",
                  j->path);
        return;
    }
    rec_error(rec,
              "journal %s: the device failed to store the op (fsync failed); it is not recorded, "
              "but if the device loses power before the next write it may come back: after a "
              "restart, check with 'fieldsync show' before recording it again",
              j->path);
}

/* ---- open / close ---- */

fsa_status_t fsa_journal_open(fsa_port_t *port, const char *path, const fsa_journal_opts_t *opts,
                              fsa_journal_t **out, char *err, size_t errlen)
{
    char scratch[8];
    if (err == NULL || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    if (out == NULL)
        return FSA_EINVAL;
    *out = NULL;
    if (port == NULL || path == NULL) {
        snprintf(err, errlen, "journal: no port or path given");
        return FSA_EINVAL;
    }
    fsa_journal_opts_t o = {0};
    if (opts != NULL)
        o = *opts;
    if (o.budget_bytes < 0 || o.budget_bytes > FSA_LIMIT_JOURNAL_BUDGET_BYTES_MAX) {
        snprintf(err, errlen, "journal budget %" PRId64 " bytes is out of range (max %lld)",
                 o.budget_bytes, (long long)FSA_LIMIT_JOURNAL_BUDGET_BYTES_MAX);
        return FSA_EINVAL;
    }
    fsa_journal_t *j = fsa_calloc(1, sizeof *j);
    if (j == NULL)
        return FSA_ENOMEM;
    j->port = port;
    j->budget_bytes = o.budget_bytes > 0 ? o.budget_bytes : FSA_LIMIT_JOURNAL_BUDGET_BYTES;
    j->path = fsa_strdup(path);
    j->sync_full = !o.sync_normal;
    fsa_status_t st = j->path != NULL ? port->mutex_new(port->ctx, &j->mu) : FSA_ENOMEM;
    if (st == FSA_OK)
        st = port->cond_new(port->ctx, &j->turn);
    if (st != FSA_OK)
        goto fail;
    fsa_db_opts_t dbo = {
        .sync_normal = o.sync_normal, .busy_timeout_ms = o.busy_timeout_ms, .create = o.create};
    st = fsa__db_open(port, path, &dbo, &j->db, &j->users, err, errlen);
    if (st != FSA_OK)
        goto fail;
    /* The disk budget is SQLite's page limit: a write that would grow the file past it fails
     * with SQLITE_FULL, which the recording calls report as "journal full". Pages freed by
     * compaction are reused, so a full journal still applies results and compacts. */
    char sql[96];
    int64_t pages = j->budget_bytes / FSA_LIMIT_PAGE_BYTES;
    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %" PRId64,
             pages > FSA_LIMIT_JOURNAL_MIN_PAGES ? pages : FSA_LIMIT_JOURNAL_MIN_PAGES);
    st = fsa__db_exec(j->db, sql, err, errlen);
    if (st != FSA_OK)
        goto fail;
    *out = j;
    return FSA_OK;
fail:
    fsa_journal_close(j);
    return st;
}

void fsa_journal_close(fsa_journal_t *j)
{
    if (j == NULL)
        return;
    for (int i = 0; i < j->nstmts; i++)
        sqlite3_finalize(j->stmts[i].st);
    sqlite3_close(atomic_load(&j->ckpt)); /* before the journal's: the last to close checkpoints */
    fsa__db_close(j->port, j->db, j->users);
    if (j->mu != NULL)
        j->port->mutex_free(j->port->ctx, j->mu);
    if (j->turn != NULL)
        j->port->cond_free(j->port->ctx, j->turn);
    fsa_free(j->path);
    fsa_free(j);
}

const char *fsa_journal_path(const fsa_journal_t *j)
{
    return j != NULL ? j->path : "";
}

/* ---- sync state ---- */

static fsa_status_t state_get_int_locked(fsa_journal_t *j, const char *key, int64_t dflt,
                                         int64_t *out)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, "SELECT v FROM sync_state WHERE k = ?1", &st);
    if (s != FSA_OK)
        return s;
    bind_text(st, 1, key);
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : dflt;
    release(j, st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? FSA_OK : fsa__db_status(rc);
}

fsa_status_t fsa_journal_state_get_int(fsa_journal_t *j, const char *key, int64_t dflt,
                                       int64_t *out)
{
    if (j == NULL || key == NULL || out == NULL)
        return FSA_EINVAL;
    lock_j(j);
    fsa_status_t s = state_get_int_locked(j, key, dflt, out);
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}

static fsa_status_t state_set(fsa_journal_t *j, const char *key, const char *sv, int64_t iv)
{
    if (j == NULL || key == NULL)
        return FSA_EINVAL;
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "INSERT INTO sync_state(k, v) VALUES(?1, ?2) "
                          "ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                          &st);
    if (s == FSA_OK) {
        bind_text(st, 1, key);
        if (sv != NULL)
            bind_text(st, 2, sv);
        else
            sqlite3_bind_int64(st, 2, iv);
        s = step_done(j, st);
    }
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}

fsa_status_t fsa_journal_state_set_int(fsa_journal_t *j, const char *key, int64_t v)
{
    return state_set(j, key, NULL, v);
}

fsa_status_t fsa_journal_state_set_str(fsa_journal_t *j, const char *key, const char *v)
{
    if (v == NULL)
        return FSA_EINVAL;
    return state_set(j, key, v, 0);
}

fsa_status_t fsa_journal_state_get_str(fsa_journal_t *j, const char *key, char **out)
{
    if (j == NULL || key == NULL || out == NULL)
        return FSA_EINVAL;
    *out = NULL;
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, "SELECT v FROM sync_state WHERE k = ?1", &st);
    if (s == FSA_OK) {
        bind_text(st, 1, key);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = dup_col(st, 0);
            if (*out == NULL && sqlite3_column_type(st, 0) != SQLITE_NULL)
                s = FSA_ENOMEM;
        } else if (rc != SQLITE_DONE) {
            s = fsa__db_status(rc);
        }
        release(j, st);
    }
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}

/* The corrected clock in *out; without the offset (and an error) when it cannot be read, so that
 * an op is never stamped with an uncorrected time. */
static fsa_status_t now_locked(fsa_journal_t *j, fsa_wall_t *out)
{
    int64_t offset = 0;
    fsa_status_t s = state_get_int_locked(j, FSA_STATE_CLOCK_OFFSET_MS, 0, &offset);
    *out = j->port->wall_now(j->port->ctx);
    out->ms += offset;
    return s;
}

static fsa_status_t now_checked(fsa_journal_t *j, fsa_wall_t *out)
{
    lock_j(j);
    fsa_status_t s = now_locked(j, out);
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}

fsa_wall_t fsa_journal_now(fsa_journal_t *j)
{
    fsa_wall_t w;
    (void)now_checked(j, &w); /* the header's contract: uncorrected when the offset is unreadable */
    return w;
}

/* ---- entities and the local view ---- */

typedef struct entity {
    bool exists;
    char *base_fields; /* NULL: not on the server */
    int64_t base_version;
    char *local_fields; /* NULL: no local view */
} entity_t;

static void entity_clear(entity_t *e)
{
    fsa_free(e->base_fields);
    fsa_free(e->local_fields);
    memset(e, 0, sizeof *e);
}

static fsa_status_t entity_load(fsa_journal_t *j, fsa_type_t type, const char *id, entity_t *e)
{
    memset(e, 0, sizeof *e);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "SELECT base_fields, base_version, local_fields FROM entities "
                          "WHERE type = ?1 AND id = ?2",
                          &st);
    if (s != FSA_OK)
        return s;
    bind_text(st, 1, fsa_type_name(type));
    bind_text(st, 2, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        e->base_fields = dup_col(st, 0);
        e->base_version = sqlite3_column_int64(st, 1);
        e->local_fields = dup_col(st, 2);
        e->exists = e->local_fields != NULL;
        if ((sqlite3_column_type(st, 0) != SQLITE_NULL && e->base_fields == NULL) ||
            (sqlite3_column_type(st, 2) != SQLITE_NULL && e->local_fields == NULL))
            s = FSA_ENOMEM;
    } else if (rc != SQLITE_DONE) {
        s = fsa__db_status(rc);
    }
    release(j, st);
    if (s != FSA_OK)
        entity_clear(e);
    return s;
}

static fsa_status_t entity_store(fsa_journal_t *j, fsa_type_t type, const char *id,
                                 const entity_t *e)
{
    sqlite3_stmt *st;
    fsa_status_t s;
    if (e->base_fields == NULL && e->local_fields == NULL) {
        s = prep(j, "DELETE FROM entities WHERE type = ?1 AND id = ?2", &st);
        if (s != FSA_OK)
            return s;
        bind_text(st, 1, fsa_type_name(type));
        bind_text(st, 2, id);
        return step_done(j, st);
    }
    s = prep(j,
             "INSERT INTO entities(type, id, base_fields, base_version, local_fields, updated_ms) "
             "VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(type, id) DO UPDATE SET "
             "base_fields = excluded.base_fields, base_version = excluded.base_version, "
             "local_fields = excluded.local_fields, updated_ms = excluded.updated_ms",
             &st);
    if (s != FSA_OK)
        return s;
    bind_text(st, 1, fsa_type_name(type));
    bind_text(st, 2, id);
    if (e->base_fields != NULL)
        bind_text(st, 3, e->base_fields);
    sqlite3_bind_int64(st, 4, e->base_version);
    if (e->local_fields != NULL)
        bind_text(st, 5, e->local_fields);
    sqlite3_bind_int64(st, 6, j->port->wall_now(j->port->ctx).ms);
    return step_done(j, st);
}

/* Appends a row to the change log inside the open transaction (see fsa_change_reason_t). */
static fsa_status_t log_change(fsa_journal_t *j, fsa_type_t type, const char *id, int64_t version,
                               fsa_change_reason_t why, const char *op_id)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "INSERT INTO changes(type, id, version, reason, op_id, at_ms) "
                          "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                          &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int(st, 1, (int)type);
    bind_text(st, 2, id);
    sqlite3_bind_int64(st, 3, version);
    sqlite3_bind_int(st, 4, (int)why);
    bind_text(st, 5, op_id);
    sqlite3_bind_int64(st, 6, j->port->wall_now(j->port->ctx).ms);
    return step_done(j, st);
}

/* Column order of OP_COLUMNS, read by op_from_row(). */
#define OP_COLUMNS                                                                                 \
    "seq, op_id, at_ms, kind, type, id, grp, field, base_version, by_n, from_s, to_s, akey, "      \
    "max_len, payload, state"

static fsa_status_t op_from_row(sqlite3_stmt *st, fsa_op_t *op, fsa_op_state_t *state)
{
    memset(op, 0, sizeof *op);
    op->seq = sqlite3_column_int64(st, 0);
    copy_col(op->op_id, sizeof op->op_id, st, 1);
    op->at_ms = sqlite3_column_int64(st, 2);
    op->kind = (fsa_op_kind_t)sqlite3_column_int(st, 3);
    op->type = (fsa_type_t)sqlite3_column_int(st, 4);
    copy_col(op->id, sizeof op->id, st, 5);
    copy_col(op->group, sizeof op->group, st, 6);
    copy_col(op->field, sizeof op->field, st, 7);
    op->base_version = sqlite3_column_int64(st, 8);
    op->by = sqlite3_column_int64(st, 9);
    copy_col(op->from, sizeof op->from, st, 10);
    copy_col(op->to, sizeof op->to, st, 11);
    copy_col(op->key, sizeof op->key, st, 12);
    op->max_len = sqlite3_column_int64(st, 13);
    if (sqlite3_column_type(st, 14) != SQLITE_NULL) {
        op->json = dup_col(st, 14);
        if (op->json == NULL)
            return FSA_ENOMEM;
    }
    if (state != NULL)
        *state = (fsa_op_state_t)sqlite3_column_int(st, 15);
    return FSA_OK;
}

/*
 * Rebuilds an entity's local view: its base with every pending op replayed in seq order. An op
 * that no longer applies on the new base (a transition whose from is gone, a create of what the
 * server has) is skipped here; the server will answer it and the resolver will decide.
 */
static fsa_status_t rebuild_local(fsa_journal_t *j, fsa_type_t type, const char *id)
{
    entity_t e;
    fsa_status_t s = entity_load(j, type, id, &e);
    if (s != FSA_OK)
        return s;
    char *cur = e.base_fields != NULL ? fsa_strdup(e.base_fields) : NULL;
    if (e.base_fields != NULL && cur == NULL) {
        entity_clear(&e);
        return FSA_ENOMEM;
    }
    sqlite3_stmt *st;
    s = prep(j,
             "SELECT " OP_COLUMNS " FROM outbox WHERE type = ?1 AND id = ?2 AND state IN (0, 1) "
             "ORDER BY seq",
             &st);
    if (s != FSA_OK)
        goto out;
    sqlite3_bind_int(st, 1, (int)type);
    bind_text(st, 2, id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        fsa_op_t op;
        s = op_from_row(st, &op, NULL);
        if (s != FSA_OK) {
            fsa_op_clear(&op);
            break;
        }
        char *next = NULL;
        fsa_status_t as = fsa_model_apply(&op, cur, e.base_version, FSA_APPLY_REPLAY, &next, NULL);
        fsa_op_clear(&op);
        if (as == FSA_ENOMEM) {
            s = as;
            break;
        }
        if (as == FSA_OK) {
            fsa_free(cur);
            cur = next;
        }
    }
    if (s == FSA_OK && rc != SQLITE_DONE)
        s = fsa__db_status(rc);
    release(j, st);
    if (s == FSA_OK) {
        fsa_free(e.local_fields);
        e.local_fields = cur;
        cur = NULL;
        s = entity_store(j, type, id, &e);
    }
out:
    fsa_free(cur);
    entity_clear(&e);
    return s;
}

static fsa_status_t count_open_conflicts(fsa_journal_t *j, fsa_type_t type, const char *id,
                                         int64_t *n);

static fsa_status_t count_pending(fsa_journal_t *j, fsa_type_t type, const char *id, int64_t *n)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "SELECT count(*) FROM outbox WHERE type = ?1 AND id = ?2 AND "
                          "state IN (0, 1)",
                          &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int(st, 1, (int)type);
    bind_text(st, 2, id);
    int rc = sqlite3_step(st);
    *n = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    release(j, st);
    return rc == SQLITE_ROW ? FSA_OK : fsa__db_status(rc);
}

static fsa_status_t outbox_insert(fsa_journal_t *j, const fsa_op_t *op, const char *prior,
                                  int64_t *seq)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "INSERT INTO outbox(op_id, at_ms, kind, type, id, grp, field, "
                          "base_version, by_n, from_s, to_s, akey, max_len, payload, prior) "
                          "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
                          "?15)",
                          &st);
    if (s != FSA_OK)
        return s;
    bind_text(st, 1, op->op_id);
    sqlite3_bind_int64(st, 2, op->at_ms);
    sqlite3_bind_int(st, 3, (int)op->kind);
    sqlite3_bind_int(st, 4, (int)op->type);
    bind_text(st, 5, op->id);
    bind_text(st, 6, op->group);
    bind_text(st, 7, op->field);
    sqlite3_bind_int64(st, 8, op->base_version);
    sqlite3_bind_int64(st, 9, op->by);
    bind_text(st, 10, op->from);
    bind_text(st, 11, op->to);
    bind_text(st, 12, op->key);
    sqlite3_bind_int64(st, 13, op->max_len);
    if (op->json != NULL)
        bind_text(st, 14, op->json);
    if (prior != NULL)
        bind_text(st, 15, prior);
    s = step_done(j, st);
    if (s == FSA_OK)
        *seq = sqlite3_last_insert_rowid(j->db);
    return s;
}

/*
 * Records one op inside an open transaction: fills its identity and preconditions from the local
 * view, validates and applies it there, appends it to the outbox. op is the caller's scratch copy
 * (its json is borrowed and not freed here).
 */
static fsa_status_t record_one_locked(fsa_journal_t *j, fsa_op_t *op, fsa_wall_t at,
                                      const char *group, fsa_change_reason_t why, fsa_rec_t *rec)
{
    const char *tname = fsa_type_name(op->type);
    if ((unsigned)op->type >= FSA__TYPE_COUNT) {
        rec_error(rec, "unknown entity type %d", (int)op->type);
        return FSA_EINVAL;
    }
    if (!fsa_model_id_valid(op->id)) {
        rec_error(rec, "invalid %s id '%.40s': ids are 1-128 characters of A-Z a-z 0-9 . _ : -",
                  tname, op->id);
        return FSA_EINVAL;
    }
    fsa_status_t s = fsa_uuid4(j->port, op->op_id);
    if (s != FSA_OK)
        return s;
    op->at_ms = at.ms;
    snprintf(op->group, sizeof op->group, "%s", group);

    entity_t e;
    s = entity_load(j, op->type, op->id, &e);
    if (s != FSA_OK)
        return s;
    if (op->kind == FSA_OP_CREATE && e.exists) {
        rec_error(rec, "%s %s already exists", tname, op->id);
        s = FSA_EEXISTS;
        goto out;
    }
    if (op->kind != FSA_OP_CREATE && !e.exists) {
        rec_error(rec, "%s %s does not exist in this journal (create it, or sync to fetch it)",
                  tname, op->id);
        s = FSA_ENOTFOUND;
        goto out;
    }
    if (op->kind == FSA_OP_SET) {
        /* The version the server will have when this op arrives, if every op recorded before
         * it on this entity applies: each applied op bumps the version by one. */
        int64_t pending = 0;
        s = count_pending(j, op->type, op->id, &pending);
        if (s != FSA_OK)
            goto out;
        op->base_version = e.base_version + pending;
    }
    if (op->kind == FSA_OP_TRANSITION) {
        const char *sf = fsa_model_status_field(op->type);
        if (sf == NULL) {
            rec_error(rec, "%s has no status to transition", tname);
            s = FSA_EINVAL;
            goto out;
        }
        snprintf(op->field, sizeof op->field, "%s", sf);
        s = fsa_model_get_status(e.local_fields, op->type, op->from);
        if (s == FSA_ENOMEM)
            goto out;
        if (s != FSA_OK) {
            rec_error(rec, "%s %s has no %s", tname, op->id, sf);
            s = FSA_EINVAL;
            goto out;
        }
    }
    char *next = NULL, *prior = NULL;
    fsa_model_err_t merr = {{0}, {0}};
    s = fsa_model_apply(op, e.local_fields, e.base_version, FSA_APPLY_REPLAY, &next, &merr);
    /* A set keeps the values it replaces: on a conflict the resolver compares them with the
     * server's to tell whether the server changed the same fields (a three-way merge). */
    if (s == FSA_OK && op->kind == FSA_OP_SET) {
        s = fsa_model_project(e.local_fields, op->json, &prior);
        if (s != FSA_OK) {
            fsa_model_free(next);
            rec_error(rec, "cannot record %s %s: %s", tname, op->id, fsa_status_str(s));
            goto out;
        }
    }
    if (s != FSA_OK) {
        if (s == FSA_ECONFLICT) /* the local view moved: same meaning as a failed precondition */
            s = FSA_EINVAL;
        rec_error(rec, "%s", merr.message[0] != '\0' ? merr.message : fsa_status_str(s));
        goto out;
    }
    fsa_free(e.local_fields);
    e.local_fields = next;
    s = entity_store(j, op->type, op->id, &e);
    if (s == FSA_OK)
        s = outbox_insert(j, op, prior, &op->seq);
    if (s == FSA_OK)
        s = log_change(j, op->type, op->id, e.base_version, why, op->op_id);
    fsa_model_free(prior);
out:
    entity_clear(&e);
    return s;
}

static fsa_status_t fence_check(fsa_journal_t *j, const fsa_fence_t *fence, fsa_rec_t *rec)
{
    if (fence == NULL)
        return FSA_OK;
    fsa_status_t s = fsa__lock_fence_check(j->db, fence);
    if (s == FSA_EFENCED)
        rec_error(rec,
                  "write refused: lock %s was taken over (token %" PRId64
                  " is stale); redo the work under a fresh lock",
                  fence->key != NULL ? fence->key : "?", fence->token);
    return s;
}

/* Records n ops in one transaction; as a group (one fresh group id) when grouped. */
static fsa_status_t record_ops(fsa_journal_t *j, const fsa_op_t *ops, size_t n, bool grouped,
                               const fsa_fence_t *fence, fsa_rec_t *rec)
{
    if (rec != NULL)
        memset(rec, 0, sizeof *rec);
    if (j == NULL || ops == NULL || n == 0 || n > FSA_JOURNAL_GROUP_MAX) {
        rec_error(rec, "invalid arguments to a journal write");
        return FSA_EINVAL;
    }
    fsa_status_t s = begin(j);
    if (s != FSA_OK) {
        rec_error(rec, "journal %s is busy or unwritable (%s)", j->path, fsa_status_str(s));
        return s;
    }
    s = fence_check(j, fence, rec);
    char group[FSA_GROUP_BYTES] = "";
    if (s == FSA_OK && grouped)
        s = fsa_uuid4(j->port, group);
    fsa_wall_t at = {0};
    if (s == FSA_OK)
        s = now_locked(j, &at);
    for (size_t i = 0; s == FSA_OK && i < n; i++) {
        fsa_op_t op = ops[i]; /* shallow: json stays the caller's */
        s = record_one_locked(j, &op, at, group, FSA_CHANGE_RECORDED, rec);
        if (s == FSA_OK && i == 0 && rec != NULL) {
            memcpy(rec->op_id, op.op_id, sizeof rec->op_id);
            rec->seq = op.seq;
        }
    }
    commit_fail_t how = COMMIT_DONE;
    s = finish_commit(j, s, &how);
    if (s == FSA_EFULL)
        full_message(j, rec, how != COMMIT_DONE);
    else if (how == COMMIT_FSYNC_FAILED || how == COMMIT_FSYNC_OVERWRITTEN)
        fsync_message(j, rec, how == COMMIT_FSYNC_OVERWRITTEN);
    else if (s != FSA_OK && rec != NULL && rec->error[0] == '\0')
        rec_error(rec, "journal %s: write failed (%s)", j->path, fsa_status_str(s));
    if (s != FSA_OK && rec != NULL) {
        rec->op_id[0] = '\0';
        rec->seq = 0;
    }
    return s;
}

static fsa_status_t record_single(fsa_journal_t *j, fsa_op_t *op, const char *id,
                                  const fsa_fence_t *fence, fsa_rec_t *rec)
{
    if (id == NULL || strlen(id) >= sizeof op->id) {
        if (rec != NULL) {
            memset(rec, 0, sizeof *rec);
            rec_error(rec, "missing or overlong entity id");
        }
        return FSA_EINVAL;
    }
    memcpy(op->id, id, strlen(id) + 1);
    return record_ops(j, op, 1, false, fence, rec);
}

static bool copy_name(char *dst, size_t cap, const char *src)
{
    if (src == NULL || strlen(src) >= cap)
        return false;
    memcpy(dst, src, strlen(src) + 1);
    return true;
}

fsa_status_t fsa_journal_create(fsa_journal_t *j, fsa_type_t type, const char *id,
                                const char *fields_json, const fsa_fence_t *fence, fsa_rec_t *rec)
{
    fsa_op_t op = {.kind = FSA_OP_CREATE, .type = type, .json = (char *)(uintptr_t)fields_json};
    if (fields_json == NULL)
        op.json = (char *)(uintptr_t) "{}";
    return record_single(j, &op, id, fence, rec);
}

fsa_status_t fsa_journal_set(fsa_journal_t *j, fsa_type_t type, const char *id,
                             const char *fields_json, const fsa_fence_t *fence, fsa_rec_t *rec)
{
    fsa_op_t op = {.kind = FSA_OP_SET, .type = type, .json = (char *)(uintptr_t)fields_json};
    if (fields_json == NULL) {
        if (rec != NULL)
            rec_error(rec, "set needs fields");
        return FSA_EINVAL;
    }
    return record_single(j, &op, id, fence, rec);
}

fsa_status_t fsa_journal_merge(fsa_journal_t *j, fsa_type_t type, const char *id, const char *field,
                               const char *patch_json, const fsa_fence_t *fence, fsa_rec_t *rec)
{
    fsa_op_t op = {.kind = FSA_OP_MERGE, .type = type, .json = (char *)(uintptr_t)patch_json};
    if (patch_json == NULL || !copy_name(op.field, sizeof op.field, field)) {
        if (rec != NULL)
            rec_error(rec, "merge needs a field name and a patch");
        return FSA_EINVAL;
    }
    return record_single(j, &op, id, fence, rec);
}

fsa_status_t fsa_journal_increment(fsa_journal_t *j, fsa_type_t type, const char *id,
                                   const char *field, int64_t by, const fsa_fence_t *fence,
                                   fsa_rec_t *rec)
{
    fsa_op_t op = {.kind = FSA_OP_INCREMENT, .type = type, .by = by};
    if (!copy_name(op.field, sizeof op.field, field)) {
        if (rec != NULL)
            rec_error(rec, "increment needs a field name");
        return FSA_EINVAL;
    }
    return record_single(j, &op, id, fence, rec);
}

fsa_status_t fsa_journal_transition(fsa_journal_t *j, fsa_type_t type, const char *id,
                                    const char *to, const fsa_fence_t *fence, fsa_rec_t *rec)
{
    fsa_op_t op = {.kind = FSA_OP_TRANSITION, .type = type};
    if (!copy_name(op.to, sizeof op.to, to)) {
        if (rec != NULL)
            rec_error(rec, "transition needs a target status (at most %d characters)",
                      FSA_STATUS_BYTES - 1);
        return FSA_EINVAL;
    }
    return record_single(j, &op, id, fence, rec);
}

fsa_status_t fsa_journal_append(fsa_journal_t *j, fsa_type_t type, const char *id,
                                const char *field, const char *key, const char *item_json,
                                int64_t max_len, const fsa_fence_t *fence, fsa_rec_t *rec)
{
    fsa_op_t op = {.kind = FSA_OP_APPEND,
                   .type = type,
                   .max_len = max_len,
                   .json = (char *)(uintptr_t)item_json};
    if (item_json == NULL || !copy_name(op.field, sizeof op.field, field) ||
        !copy_name(op.key, sizeof op.key, key)) {
        if (rec != NULL)
            rec_error(rec, "append needs a field, a key and an item");
        return FSA_EINVAL;
    }
    return record_single(j, &op, id, fence, rec);
}

fsa_status_t fsa_journal_record_group(fsa_journal_t *j, const fsa_op_t *ops, size_t n,
                                      const fsa_fence_t *fence, fsa_rec_t *rec)
{
    return record_ops(j, ops, n, true, fence, rec);
}

fsa_status_t fsa_journal_checkpoint_update(fsa_journal_t *j, const char *child_id,
                                           const char *fields_json, const fsa_fence_t *fence,
                                           fsa_rec_t *rec)
{
    if (rec != NULL)
        memset(rec, 0, sizeof *rec);
    if (j == NULL || child_id == NULL || fields_json == NULL || strlen(child_id) >= FSA_ID_BYTES) {
        rec_error(rec, "checkpoint update needs a checkpoint id and fields");
        return FSA_EINVAL;
    }
    /* Reading the parent outside the write transaction is safe: parent_id is set at creation
     * and changed only by a set on the child, which this group's own set would conflict with. */
    char *fields = NULL;
    fsa_status_t s = fsa_journal_get(j, FSA_TYPE_JOBNEED, child_id, &fields, NULL, NULL);
    if (s == FSA_ENOTFOUND)
        rec_error(rec, "checkpoint %s does not exist in this journal", child_id);
    if (s != FSA_OK)
        return s;
    char *parent = NULL;
    s = fsa_model_get_field(fields, "parent_id", &parent);
    fsa_model_free(fields);
    if (s == FSA_ENOMEM)
        return s; /* not "no parent": nothing is known of the parent */
    /* parent is JSON text: a quoted id, or null. */
    char parent_id[FSA_ID_BYTES] = "";
    size_t plen = parent != NULL ? strlen(parent) : 0;
    if (s == FSA_OK && plen >= 3 && parent[0] == '"' && plen - 2 < sizeof parent_id) {
        memcpy(parent_id, parent + 1, plen - 2);
        parent_id[plen - 2] = '\0';
    }
    fsa_model_free(parent);
    if (parent_id[0] == '\0' || !fsa_model_id_valid(parent_id)) {
        rec_error(rec, "jobneed %s is not a checkpoint: it has no parent tour", child_id);
        return FSA_EINVAL;
    }
    char touch[FSA_ID_BYTES + 96];
    fsa_wall_t at;
    s = now_checked(j, &at);
    if (s != FSA_OK)
        return s;
    snprintf(touch, sizeof touch, "{\"last_checkpoint\":\"%s\",\"last_checkpoint_at\":%" PRId64 "}",
             child_id, at.ms);
    fsa_op_t ops[2] = {
        {.kind = FSA_OP_SET, .type = FSA_TYPE_JOBNEED, .json = (char *)(uintptr_t)fields_json},
        {.kind = FSA_OP_MERGE, .type = FSA_TYPE_JOBNEED, .json = touch},
    };
    memcpy(ops[0].id, child_id, strlen(child_id) + 1);
    memcpy(ops[1].id, parent_id, strlen(parent_id) + 1);
    memcpy(ops[1].field, "other_info", sizeof "other_info");
    return record_ops(j, ops, 2, true, fence, rec);
}

/* Reads an entity's local view (base false) or its base (base true). */
static fsa_status_t read_entity(fsa_journal_t *j, fsa_type_t type, const char *id, bool base,
                                char **fields_json, int64_t *base_version, int64_t *pending)
{
    if (fields_json != NULL)
        *fields_json = NULL;
    if (j == NULL || id == NULL || (unsigned)type >= FSA__TYPE_COUNT)
        return FSA_EINVAL;
    lock_j(j);
    entity_t e;
    fsa_status_t s = entity_load(j, type, id, &e);
    char **which = base ? &e.base_fields : &e.local_fields;
    if (s == FSA_OK && *which == NULL)
        s = FSA_ENOTFOUND;
    if (s == FSA_OK && pending != NULL)
        s = count_pending(j, type, id, pending);
    if (s == FSA_OK) {
        if (base_version != NULL)
            *base_version = e.base_version;
        if (fields_json != NULL) {
            *fields_json = *which;
            *which = NULL;
        }
    }
    entity_clear(&e);
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}

fsa_status_t fsa_journal_get(fsa_journal_t *j, fsa_type_t type, const char *id, char **fields_json,
                             int64_t *base_version, int64_t *pending)
{
    return read_entity(j, type, id, false, fields_json, base_version, pending);
}

fsa_status_t fsa_journal_get_base(fsa_journal_t *j, fsa_type_t type, const char *id,
                                  char **fields_json, int64_t *base_version)
{
    return read_entity(j, type, id, true, fields_json, base_version, NULL);
}

/* ---- the outbox ---- */

static fsa_status_t group_size(fsa_journal_t *j, const char *group, size_t *n)
{
    sqlite3_stmt *st;
    /* grp != '': what lets SQLite use the partial index outbox_by_group for a bound ?1. */
    fsa_status_t s = prep(
        j, "SELECT count(*) FROM outbox WHERE grp = ?1 AND grp != '' AND state IN (0, 1)", &st);
    if (s != FSA_OK)
        return s;
    bind_text(st, 1, group);
    int rc = sqlite3_step(st);
    *n = rc == SQLITE_ROW ? (size_t)sqlite3_column_int64(st, 0) : 0;
    release(j, st);
    return rc == SQLITE_ROW ? FSA_OK : fsa__db_status(rc);
}

/* Rough wire size of an op: its payload plus the fixed members. */
static size_t op_wire_bytes(const fsa_op_t *op)
{
    return 256 + strlen(op->id) + strlen(op->group) + (op->json != NULL ? strlen(op->json) : 0);
}

fsa_status_t fsa_outbox_next_batch(fsa_journal_t *j, fsa_op_t *ops, size_t max_ops,
                                   size_t max_bytes, size_t *n)
{
    return fsa_outbox_next_batch_after(j, 0, ops, max_ops, max_bytes, n);
}

fsa_status_t fsa_outbox_next_batch_after(fsa_journal_t *j, int64_t after_seq, fsa_op_t *ops,
                                         size_t max_ops, size_t max_bytes, size_t *n)
{
    if (n != NULL)
        *n = 0;
    if (j == NULL || ops == NULL || n == NULL || max_ops < FSA_JOURNAL_GROUP_MAX)
        return FSA_EINVAL;
    lock_j(j);
    /* A read transaction, so the rows and the group sizes come from one snapshot. */
    fsa_status_t s = fsa__db_exec(j->db, "BEGIN", NULL, 0);
    if (s != FSA_OK) {
        j->port->mutex_unlock(j->port->ctx, j->mu);
        return s;
    }
    sqlite3_stmt *st;
    s = prep(j,
             "SELECT " OP_COLUMNS " FROM outbox WHERE state IN (0, 1) AND seq > ?2 "
             "ORDER BY seq LIMIT ?1",
             &st);
    size_t count = 0, bytes = 0;
    char current_group[FSA_GROUP_BYTES] = "";
    if (s == FSA_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)max_ops);
        sqlite3_bind_int64(st, 2, after_seq);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            fsa_op_t op;
            s = op_from_row(st, &op, NULL);
            if (s != FSA_OK) {
                fsa_op_clear(&op);
                break;
            }
            size_t sz = op_wire_bytes(&op);
            bool continues_group = op.group[0] != '\0' && strcmp(op.group, current_group) == 0;
            if (!continues_group) {
                /* A group is taken whole or not at all: size it before its first op. */
                size_t need = 1;
                if (op.group[0] != '\0')
                    s = group_size(j, op.group, &need);
                if (s != FSA_OK ||
                    (count > 0 && (count + need > max_ops || bytes + sz * need > max_bytes))) {
                    fsa_op_clear(&op);
                    break;
                }
                memcpy(current_group, op.group, sizeof current_group);
            }
            if (count >= max_ops) { /* only a group bigger than max_ops could get here */
                fsa_op_clear(&op);
                break;
            }
            ops[count++] = op;
            bytes += sz;
        }
        if (s == FSA_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
            s = fsa__db_status(rc);
        release(j, st);
    }
    /* The read transaction must end even when COMMIT cannot run (no memory to prepare it): it
     * wrote nothing, so a rollback ends it as well. */
    int end = sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL);
    if (end != SQLITE_OK)
        end = sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
    if (s == FSA_OK && end != SQLITE_OK)
        s = fsa__db_status(end);
    j->port->mutex_unlock(j->port->ctx, j->mu);
    if (s != FSA_OK) {
        for (size_t i = 0; i < count; i++)
            fsa_op_clear(&ops[i]);
        return s;
    }
    *n = count;
    return FSA_OK;
}

static fsa_status_t mark_inflight_locked(fsa_journal_t *j, const fsa_op_t *ops, size_t n);

fsa_status_t fsa_outbox_mark_inflight(fsa_journal_t *j, const fsa_op_t *ops, size_t n)
{
    if (j == NULL || (ops == NULL && n > 0))
        return FSA_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (ops[i].seq <= 0)
            return FSA_EINVAL;
    fsa_status_t s = begin(j);
    if (s != FSA_OK)
        return s;
    return finish(j, mark_inflight_locked(j, ops, n));
}

static fsa_status_t find_locked(fsa_journal_t *j, const char *op_id, fsa_op_t *op,
                                fsa_op_state_t *state)
{
    memset(op, 0, sizeof *op);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, "SELECT " OP_COLUMNS " FROM outbox WHERE op_id = ?1", &st);
    if (s != FSA_OK)
        return s;
    bind_text(st, 1, op_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        s = op_from_row(st, op, state);
    else
        s = rc == SQLITE_DONE ? FSA_ENOTFOUND : fsa__db_status(rc);
    assert(rc == SQLITE_ROW || s != FSA_OK); /* *state is set whenever FSA_OK is returned */
    release(j, st);
    if (s != FSA_OK)
        fsa_op_clear(op);
    return s;
}

static fsa_status_t park(fsa_journal_t *j, const fsa_op_t *op, const char *outcome,
                         const char *code, const char *reason, int64_t server_version,
                         const char *server_fields, int64_t now_ms)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "INSERT INTO conflicts(seq, op_id, outcome, code, reason, "
                          "server_version, server_fields, created_ms) "
                          "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(seq) DO UPDATE SET "
                          "outcome = excluded.outcome, code = excluded.code, "
                          "reason = excluded.reason, server_version = excluded.server_version, "
                          "server_fields = excluded.server_fields, resolution = NULL, "
                          "resolved_ms = NULL",
                          &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, op->seq);
    bind_text(st, 2, op->op_id);
    bind_text(st, 3, outcome);
    bind_text(st, 4, code);
    bind_text(st, 5, reason);
    if (server_version > 0)
        sqlite3_bind_int64(st, 6, server_version);
    if (server_fields != NULL)
        bind_text(st, 7, server_fields);
    sqlite3_bind_int64(st, 8, now_ms);
    return step_done(j, st);
}

/*
 * The entities a call applying results touches, each loaded once and stored once per call
 * (ent_flush), however many results land on it: a drain of a long backlog on one entity would
 * otherwise read and write that row once per op. A small fixed set: when it is full it is
 * flushed and filled again, which is only slower.
 */
#define ENT_CACHE_MAX 8

typedef struct ent_slot {
    fsa_type_t type;
    char id[FSA_ID_BYTES];
    entity_t e;
} ent_slot_t;

typedef struct ent_cache {
    ent_slot_t slot[ENT_CACHE_MAX];
    size_t n;
} ent_cache_t;

/* Stores every cached entity (a view made from the base where it had none) when s is FSA_OK,
 * and empties the cache; after a failure nothing more is written: SQLite may have rolled the
 * transaction back already (out of memory in a statement), and a write now would commit on its
 * own. Returns the final status. */
static fsa_status_t ent_flush(fsa_journal_t *j, ent_cache_t *c, fsa_status_t s)
{
    for (size_t i = 0; i < c->n; i++) {
        entity_t *e = &c->slot[i].e;
        if (s == FSA_OK && e->local_fields == NULL && e->base_fields != NULL) {
            e->local_fields = fsa_strdup(e->base_fields);
            if (e->local_fields == NULL)
                s = FSA_ENOMEM;
        }
        if (s == FSA_OK && (e->local_fields != NULL || e->base_fields != NULL))
            s = entity_store(j, c->slot[i].type, c->slot[i].id, e);
        entity_clear(e);
    }
    c->n = 0;
    return s;
}

/* The cached entity (type, id), loaded on first use. */
static fsa_status_t ent_get(fsa_journal_t *j, ent_cache_t *c, fsa_type_t type, const char *id,
                            entity_t **out)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->slot[i].type == type && strcmp(c->slot[i].id, id) == 0) {
            *out = &c->slot[i].e;
            return FSA_OK;
        }
    }
    if (c->n == ENT_CACHE_MAX) {
        fsa_status_t s = ent_flush(j, c, FSA_OK);
        if (s != FSA_OK)
            return s;
    }
    ent_slot_t *sl = &c->slot[c->n];
    fsa_status_t s = entity_load(j, type, id, &sl->e);
    if (s != FSA_OK)
        return s;
    sl->type = type;
    snprintf(sl->id, sizeof sl->id, "%s", id);
    c->n++;
    *out = &sl->e;
    return FSA_OK;
}

/* Ends an open op's life in the outbox: FSA_OK with *was_open false when it was not open any
 * more (answered already: nothing to do). Done ops stay in the outbox until fsa_outbox_compact
 * moves them to done_ops in bulk: their op_id index and done_ops are keyed by random UUIDs, and
 * touching them per batch would dirty (and write to the WAL) a page per op once the outbox is
 * large; the seq-ordered indexes this touches stay on a few pages. */
static fsa_status_t close_op(fsa_journal_t *j, const fsa_op_t *op, fsa_op_state_t to,
                             int64_t version, int64_t now_ms, bool *was_open)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "UPDATE outbox SET state = ?2, result_version = ?3, done_ms = ?4 "
                          "WHERE seq = ?1 AND state IN (0, 1)",
                          &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, op->seq);
    sqlite3_bind_int(st, 2, (int)to);
    sqlite3_bind_int64(st, 3, version);
    sqlite3_bind_int64(st, 4, now_ms);
    s = step_done(j, st);
    *was_open = s == FSA_OK && sqlite3_changes(j->db) == 1;
    return s;
}

/* Applies one result for op (the outbox row as read) inside the open transaction, onto its
 * entity in cache c. *parked is set when the op was parked: its entity's local view must then be
 * rebuilt. */
static fsa_status_t apply_result_locked(fsa_journal_t *j, ent_cache_t *c, const fsa_op_t *op,
                                        const fsa_op_result_t *r, int64_t now_ms, bool closed,
                                        bool *parked)
{
    *parked = false;
    fsa_result_status_t outcome = r->status == FSA_RESULT_DUPLICATE ? r->original : r->status;
    bool applied = outcome == FSA_RESULT_APPLIED || outcome == FSA_RESULT_DUPLICATE;
    fsa_op_state_t to = applied                          ? FSA_OPSTATE_DONE
                        : outcome == FSA_RESULT_CONFLICT ? FSA_OPSTATE_CONFLICT
                                                         : FSA_OPSTATE_REJECTED;
    bool was_open = closed;
    fsa_status_t s = FSA_OK;
    if (!closed) /* else the caller closed it, with others (close_run) */
        s = close_op(j, op, to, applied ? r->version : 0, now_ms, &was_open);
    if (s != FSA_OK || !was_open)
        return s; /* answered already: left alone */
    entity_t *e = NULL;
    s = ent_get(j, c, op->type, op->id, &e);
    if (s != FSA_OK)
        return s;
    if (applied) {
        /* The base follows the server only when this op is the very next change after it:
         * if the version jumped, others changed the entity in between, and labelling our base
         * with that version would hide their changes (and let a stale set through). The pull
         * that follows every push folds the server's state then. */
        if (r->version == e->base_version + 1) {
            char *next = NULL;
            fsa_status_t as =
                fsa_model_apply(op, e->base_fields, e->base_version, FSA_APPLY_REPLAY, &next, NULL);
            if (as == FSA_OK) {
                fsa_free(e->base_fields);
                e->base_fields = next;
                e->base_version = r->version;
            } else if (as == FSA_ENOMEM) {
                s = as;
            }
        }
    } else if (outcome == FSA_RESULT_CONFLICT) {
        char reason[FSA_ID_BYTES + 128];
        snprintf(reason, sizeof reason,
                 "%s %s on the server is at version %" PRId64 "; this %s expected otherwise",
                 fsa_type_name(op->type), op->id, r->current_version, fsa_op_kind_name(op->kind));
        s = park(j, op, "conflict", "conflict", reason, r->current_version, r->current_fields,
                 now_ms);
        /* The server's current state is the best base there is. */
        if (s == FSA_OK && r->current_fields != NULL && r->current_version >= e->base_version) {
            char *copy = fsa_strdup(r->current_fields);
            if (copy == NULL) {
                s = FSA_ENOMEM;
            } else {
                fsa_free(e->base_fields);
                e->base_fields = copy;
                e->base_version = r->current_version;
            }
        }
    } else {
        s = park(j, op, "rejected", r->code, r->message, 0, NULL, now_ms);
    }
    /* An applied op moved from the pending ops into the base, so base + pending, the local view,
     * is what it was: only a parked op changes it. Skipping the rebuild keeps draining a long
     * backlog on one entity linear instead of quadratic. */
    if (s == FSA_OK && !applied)
        *parked = true;
    if (s == FSA_OK)
        s = log_change(j, op->type, op->id,
                       *parked ? e->base_version : (r->version > 0 ? r->version : e->base_version),
                       *parked ? FSA_CHANGE_PARKED : FSA_CHANGE_SYNCED, op->op_id);
    return s;
}

static bool result_applied(const fsa_op_result_t *r)
{
    fsa_result_status_t outcome = r->status == FSA_RESULT_DUPLICATE ? r->original : r->status;
    return outcome == FSA_RESULT_APPLIED || outcome == FSA_RESULT_DUPLICATE;
}

/*
 * Closes the run of applied ops that starts at ops[i] with two statements instead of one per op
 * (their result_version is not kept then: nothing reads it). *closed_to is set past the run, or
 * left at i when the run is shorter than 2 or not all of it is open any more (then each op is
 * closed on its own, which tells which). A batch holds the open ops of a seq range, and an open op
 * never gets a seq below one recorded before it, so when the open ops in the run's seq range are
 * as many as the run, they are the run.
 */
static fsa_status_t close_run(fsa_journal_t *j, const fsa_op_t *ops, const fsa_op_result_t *res,
                              size_t n, size_t i, int64_t now_ms, size_t *closed_to)
{
    size_t k = i;
    while (k < n && result_applied(&res[k]) && (k == i || ops[k].seq > ops[k - 1].seq))
        k++;
    if (k - i < 2)
        return FSA_OK;
    sqlite3_stmt *st;
    fsa_status_t s =
        prep(j, "SELECT count(*) FROM outbox WHERE seq BETWEEN ?1 AND ?2 AND state IN (0, 1)", &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, ops[i].seq);
    sqlite3_bind_int64(st, 2, ops[k - 1].seq);
    int rc = sqlite3_step(st);
    int64_t open = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    release(j, st);
    if (rc != SQLITE_ROW)
        return fsa__db_status(rc);
    if (open != (int64_t)(k - i))
        return FSA_OK;
    s = prep(j,
             "UPDATE outbox SET state = 2, done_ms = ?3 "
             "WHERE seq BETWEEN ?1 AND ?2 AND state IN (0, 1)",
             &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, ops[i].seq);
    sqlite3_bind_int64(st, 2, ops[k - 1].seq);
    sqlite3_bind_int64(st, 3, now_ms);
    s = step_done(j, st);
    if (s == FSA_OK)
        *closed_to = k;
    return s;
}

/* Entities whose local view must be rebuilt (a parked op left it), each once per call. */
typedef struct touched {
    fsa_type_t type;
    char id[FSA_ID_BYTES];
} touched_t;

static void touch_entity(touched_t *t, size_t *nt, const fsa_op_t *op)
{
    size_t k = 0;
    while (k < *nt && !(t[k].type == op->type && strcmp(t[k].id, op->id) == 0))
        k++;
    if (k == *nt) {
        t[k].type = op->type;
        memcpy(t[k].id, op->id, sizeof t[k].id);
        (*nt)++;
    }
}

/*
 * "In flight" is not written op by op: the outbox's state column is in three of its indexes, and
 * rewriting it for every op sent cost as much as applying the op's result. Batches are read from
 * the head of the queue in seq order and a recorded op always gets a higher seq than any op
 * committed before it, so the ops sent at least once are exactly the open ones at or below the
 * highest seq sent, which is what this key keeps (state 1 stays meaningful in journals that
 * stored it). The attempts column is no longer counted.
 */
#define SENT_UPTO_SQL                                                                              \
    "(SELECT coalesce(max(v), 0) FROM sync_state WHERE k = '" FSA_STATE_OUTBOX_SENT_UPTO "')"

/* Marks ops in flight inside the open transaction. */
static fsa_status_t mark_inflight_locked(fsa_journal_t *j, const fsa_op_t *ops, size_t n)
{
    int64_t upto = 0;
    for (size_t i = 0; i < n; i++)
        if (ops[i].seq > upto)
            upto = ops[i].seq;
    if (upto == 0)
        return FSA_OK;
    sqlite3_stmt *st;
    fsa_status_t s =
        prep(j,
             "INSERT INTO sync_state(k, v) VALUES('" FSA_STATE_OUTBOX_SENT_UPTO "', ?1) "
             "ON CONFLICT(k) DO UPDATE SET v = max(v, excluded.v)",
             &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, upto);
    return step_done(j, st);
}

/* The body of both ways to apply results. ops NULL: each op is read by its result's op_id (an
 * unknown one is ignored). */
static fsa_status_t apply_results(fsa_journal_t *j, const fsa_op_t *ops,
                                  const fsa_op_result_t *results, size_t n, const fsa_op_t *mark,
                                  size_t nmark)
{
    fsa_status_t s = begin(j);
    if (s != FSA_OK)
        return s;
    int64_t now_ms = j->port->wall_now(j->port->ctx).ms;
    touched_t *t = n > 0 ? fsa_calloc(n, sizeof *t) : NULL;
    size_t nt = 0;
    ent_cache_t *c = fsa_calloc(1, sizeof *c);
    if ((n > 0 && t == NULL) || c == NULL)
        s = FSA_ENOMEM;
    size_t closed_to = 0; /* ops[..closed_to) were closed by close_run */
    for (size_t i = 0; s == FSA_OK && i < n; i++) {
        bool parked = false;
        if (ops != NULL) {
            if (i >= closed_to) {
                closed_to = i;
                s = close_run(j, ops, results, n, i, now_ms, &closed_to);
            }
            if (s == FSA_OK)
                s = apply_result_locked(j, c, &ops[i], &results[i], now_ms, i < closed_to, &parked);
        } else {
            fsa_op_t op;
            fsa_op_state_t state;
            s = find_locked(j, results[i].op_id, &op, &state);
            if (s == FSA_ENOTFOUND) {
                s = FSA_OK; /* not ours, or compacted long ago: nothing to do */
                continue;
            }
            if (s == FSA_OK && (state == FSA_OPSTATE_PENDING || state == FSA_OPSTATE_INFLIGHT))
                s = apply_result_locked(j, c, &op, &results[i], now_ms, false, &parked);
            if (s == FSA_OK && parked)
                touch_entity(t, &nt, &op);
            fsa_op_clear(&op);
            continue;
        }
        if (s == FSA_OK && parked)
            touch_entity(t, &nt, &ops[i]);
    }
    if (c != NULL)
        s = ent_flush(j, c, s);
    for (size_t k = 0; s == FSA_OK && k < nt; k++)
        s = rebuild_local(j, t[k].type, t[k].id);
    if (s == FSA_OK && nmark > 0)
        s = mark_inflight_locked(j, mark, nmark);
    fsa_free(c);
    fsa_free(t);
    return finish(j, s);
}

fsa_status_t fsa_outbox_apply_results(fsa_journal_t *j, const fsa_op_result_t *results, size_t n)
{
    if (j == NULL || (results == NULL && n > 0))
        return FSA_EINVAL;
    return apply_results(j, NULL, results, n, NULL, 0);
}

/*
 * Applying a batch's results while the app records (fsa_outbox_apply_batch). The sync thread and
 * the app's threads share the journal's connection, and the lock manager's connection and other
 * processes share its write lock, so a check-in recorded during a drain waits for whatever write
 * transaction of the drain is open. So that it waits little:
 *   - The results go in several transactions: one ends after any run of APPLY_RUN_MAX results once
 *     a thread of this process waits (for the mutex: j->waiting; for the write lock:
 *     fsa__db_busy_waits), and after APPLY_CHUNK_MAX results in any case (a waiter in another
 *     process is not seen, and waits at most that long).
 *   - Between two transactions the sync thread gives way: to the threads waiting for the mutex
 *     (it waits on j->turn until the first of them has it, up to APPLY_YIELD_TURNS times), and to
 *     a writer of another connection of this process that waited for the write lock (until the
 *     next commit in the process, at most APPLY_YIELD_BUSY_NS): otherwise it would take them again
 *     before the waiter, woken, could.
 *   - Their commits do not wait for the disk (synchronous=NORMAL for these transactions only; the
 *     journal's records stay FULL). A result is the server's answer to an op the server has; a
 *     result lost in a power cut leaves the op open, it is sent again, and the server answers a
 *     known op id with its first result without applying it again (PROTOCOL.md section 3, by op
 *     id); what the result changed here (the base, the change log, the op's state) is made again
 *     then. The WAL is one log: a FULL commit after them syncs them too, and a power cut loses a
 *     suffix of it, never a record committed before. The mark of the next batch in flight is in
 *     the first transaction: lost, the ops are only sent again, which they may be anyway.
 *   - The WAL's checkpoints are left to the drain, which runs them after a batch outside the
 *     mutex, on a connection of its own (storage/db.c says why).
 */
#define APPLY_RUN_MAX 16
#define APPLY_CHUNK_MAX 128
#define APPLY_YIELD_TURNS 8
#define APPLY_YIELD_BUSY_NS (2 * FSA_NS_PER_MS)
#define APPLY_CHECKPOINT_CLAIM_NS (5 * FSA_NS_PER_S)

/* synchronous=NORMAL for a transaction of results (under the mutex, outside a transaction). Set
 * before trying, so that FULL is always put back (a failure here leaves FULL: slower, not wrong).
 */
static void sync_relax(fsa_journal_t *j)
{
    if (!j->sync_full)
        return;
    j->relaxed = true;
    (void)sqlite3_exec(j->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
}

/* synchronous=FULL again. When it fails (no memory to run it), j->relaxed stays: lock_j tries
 * again, and begin() refuses every write until it succeeds. */
static fsa_status_t sync_full_again(fsa_journal_t *j)
{
    if (!j->relaxed)
        return FSA_OK;
    int rc = sqlite3_exec(j->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        j->relaxed = false;
    return fsa__db_status(rc);
}

/* True when a thread of this process waits for the journal's mutex or for a write lock. */
static bool someone_waits(const fsa_journal_t *j, uint64_t busy0)
{
    return atomic_load(&j->waiting) > 0 || fsa__db_busy_waits() != busy0;
}

/* Applies results [i, *end) in one transaction: up to APPLY_CHUNK_MAX, fewer when someone waits
 * (only between runs: the ops one range UPDATE closed are applied in its transaction), at least
 * one. mark (nmark ops) is marked in flight in it when not NULL. */
static fsa_status_t apply_chunk(fsa_journal_t *j, const fsa_op_t *ops, const fsa_op_result_t *res,
                                size_t n, size_t i, size_t *end, const fsa_op_t *mark, size_t nmark,
                                uint64_t busy0)
{
    *end = i;
    fsa_status_t s = run_cached(j, "BEGIN IMMEDIATE", NULL);
    if (s != FSA_OK)
        return s;
    int64_t now_ms = j->port->wall_now(j->port->ctx).ms;
    size_t limit = n - i > APPLY_CHUNK_MAX ? i + APPLY_CHUNK_MAX : n;
    touched_t *t = fsa_calloc(limit > i ? limit - i : 1, sizeof *t);
    ent_cache_t *c = fsa_calloc(1, sizeof *c);
    size_t nt = 0, k = i, closed_to = i; /* ops[..closed_to) were closed by close_run */
    if (t == NULL || c == NULL)
        s = FSA_ENOMEM;
    while (s == FSA_OK && k < limit) {
        if (k >= closed_to) {
            if (k > i && someone_waits(j, busy0))
                break;
            size_t run_end = limit - k > APPLY_RUN_MAX ? k + APPLY_RUN_MAX : limit;
            closed_to = k;
            s = close_run(j, ops, res, run_end, k, now_ms, &closed_to);
            if (s != FSA_OK)
                break;
        }
        bool parked = false;
        s = apply_result_locked(j, c, &ops[k], &res[k], now_ms, k < closed_to, &parked);
        if (s == FSA_OK && parked)
            touch_entity(t, &nt, &ops[k]);
        k++;
    }
    if (c != NULL)
        s = ent_flush(j, c, s);
    for (size_t e = 0; s == FSA_OK && e < nt; e++)
        s = rebuild_local(j, t[e].type, t[e].id);
    if (s == FSA_OK && mark != NULL && nmark > 0)
        s = mark_inflight_locked(j, mark, nmark);
    fsa_free(c);
    fsa_free(t);
    if (s == FSA_OK)
        s = run_cached(j, "COMMIT", NULL);
    /* A failed COMMIT's frames coming back after a power loss would only apply these results:
     * nothing to overwrite here (see overwrite_failed_commit). */
    if (s != FSA_OK)
        (void)sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
    else
        *end = k;
    return s;
}

/* Between two transactions of results (the mutex held): turns for the threads that wait for it,
 * then a moment for a writer of another connection that waited for the write lock. */
static void give_way(fsa_journal_t *j, uint64_t *busy0)
{
    for (int turn = 0; turn < APPLY_YIELD_TURNS && atomic_load(&j->waiting) > 0; turn++) {
        /* The first waiter to get the mutex signals turn (lock_j); a spurious or sim-port wake-up
         * only ends a turn early. */
        j->yielding = true;
        (void)j->port->cond_wait(j->port->ctx, j->turn, j->mu, fsa_mono_forever());
        j->yielding = false;
        end_leftover(j);
    }
    if (fsa__db_busy_waits() == *busy0)
        return;
    /* Our commit woke it (the pulse); its commit wakes us, or the bound. Real time: the writer
     * is a real thread. */
    fsa_port_t *real = fsa_port_posix();
    uint64_t seen = fsa_pulse_count();
    j->port->mutex_unlock(j->port->ctx, j->mu);
    (void)fsa_pulse_wait(seen, fsa_mono_add_ns(real->mono_now(real->ctx), APPLY_YIELD_BUSY_NS));
    lock_j(j);
    *busy0 = fsa__db_busy_waits();
}

fsa_status_t fsa_outbox_apply_batch(fsa_journal_t *j, const fsa_op_t *ops,
                                    const fsa_op_result_t *results, size_t n, const fsa_op_t *mark,
                                    size_t nmark)
{
    if (j == NULL || ((ops == NULL || results == NULL) && n > 0) || (mark == NULL && nmark > 0))
        return FSA_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(ops[i].op_id, results[i].op_id) != 0 || ops[i].seq <= 0)
            return FSA_EINVAL;
    /* The checkpoints are the drain's while it runs, between batches (db.c). */
    fsa__db_checkpoint_claim(APPLY_CHECKPOINT_CLAIM_NS);
    lock_j(j);
    uint64_t busy0 = fsa__db_busy_waits();
    fsa_status_t s = j->relaxed ? FSA_ENOMEM : FSA_OK; /* FULL could not be put back */
    size_t i = 0;
    for (bool first = true; s == FSA_OK && (first || i < n); first = false) {
        sync_relax(j);
        size_t end = i;
        s = apply_chunk(j, ops, results, n, i, &end, first ? mark : NULL, first ? nmark : 0, busy0);
        (void)sync_full_again(j); /* on failure j->relaxed stays: see sync_full_again() */
        i = end;
        if (s == FSA_OK && i < n)
            give_way(j, &busy0);
    }
    j->port->mutex_unlock(j->port->ctx, j->mu);
    /* Outside the mutex, on a connection of its own (taken out of j while in use, should another
     * thread apply results at the same time). */
    sqlite3 *own = atomic_exchange(&j->ckpt, NULL);
    fsa__db_flush(j->path, &own);
    sqlite3_close(atomic_exchange(&j->ckpt, own));
    return s;
}

fsa_status_t fsa_journal_fold(fsa_journal_t *j, fsa_type_t type, const char *id, int64_t version,
                              const char *fields_json)
{
    if (j == NULL || id == NULL || fields_json == NULL || (unsigned)type >= FSA__TYPE_COUNT ||
        !fsa_model_id_valid(id) || version < 1)
        return FSA_EINVAL;
    fsa_status_t s = fsa_model_json_check(fields_json, FSA_LIMIT_FIELDS_BYTES);
    if (s != FSA_OK)
        return s;
    s = begin(j);
    if (s != FSA_OK)
        return s;
    entity_t e;
    s = entity_load(j, type, id, &e);
    if (s == FSA_OK && version > e.base_version) {
        char *copy = fsa_strdup(fields_json);
        if (copy == NULL) {
            s = FSA_ENOMEM;
        } else {
            fsa_free(e.base_fields);
            e.base_fields = copy;
            e.base_version = version;
            s = entity_store(j, type, id, &e);
            if (s == FSA_OK)
                s = rebuild_local(j, type, id);
            if (s == FSA_OK)
                s = log_change(j, type, id, version, FSA_CHANGE_PULLED, "");
        }
    }
    entity_clear(&e);
    return finish(j, s);
}

fsa_status_t fsa_journal_gone(fsa_journal_t *j, fsa_type_t type, const char *id, int64_t version,
                              bool *dropped)
{
    if (dropped != NULL)
        *dropped = false;
    if (j == NULL || id == NULL || (unsigned)type >= FSA__TYPE_COUNT || !fsa_model_id_valid(id))
        return FSA_EINVAL;
    fsa_status_t s = begin(j);
    if (s != FSA_OK)
        return s;
    int64_t pending = 0, open = 0;
    s = count_pending(j, type, id, &pending);
    if (s == FSA_OK)
        s = count_open_conflicts(j, type, id, &open);
    entity_t e = {0};
    if (s == FSA_OK)
        s = entity_load(j, type, id, &e);
    bool known = e.base_fields != NULL || e.local_fields != NULL;
    entity_clear(&e);
    bool drop = s == FSA_OK && known && pending == 0 && open == 0;
    if (drop) {
        entity_t none = {0};
        s = entity_store(j, type, id, &none); /* no base, no view: the row goes */
        if (s == FSA_OK)
            s = log_change(j, type, id, version, FSA_CHANGE_GONE, "");
    }
    s = finish(j, s);
    if (s == FSA_OK && dropped != NULL)
        *dropped = drop;
    return s;
}

fsa_status_t fsa_outbox_compact(fsa_journal_t *j, int64_t audit_ms, size_t *removed)
{
    if (removed != NULL)
        *removed = 0;
    if (j == NULL || audit_ms < 0)
        return FSA_EINVAL;
    fsa_status_t s = begin(j);
    if (s != FSA_OK)
        return s;
    int64_t now_ms = j->port->wall_now(j->port->ctx).ms;
    s = fsa__db_exec(j->db,
                     "INSERT OR IGNORE INTO done_ops(op_id, seq, done_ms) "
                     "SELECT op_id, seq, coalesce(done_ms, 0) FROM outbox WHERE state = 2",
                     NULL, 0);
    if (s == FSA_OK) {
        s = fsa__db_exec(j->db, "DELETE FROM outbox WHERE state = 2", NULL, 0);
        if (s == FSA_OK && removed != NULL)
            *removed = (size_t)sqlite3_changes(j->db);
    }
    if (s == FSA_OK) {
        sqlite3_stmt *st;
        s = prep(j, "DELETE FROM done_ops WHERE done_ms < ?1", &st);
        if (s == FSA_OK) {
            sqlite3_bind_int64(st, 1, now_ms - audit_ms);
            s = step_done(j, st);
        }
    }
    /* The change log keeps an hour and at least the newest rows: a listener that is behind by
     * less than that misses nothing. */
    if (s == FSA_OK) {
        sqlite3_stmt *st;
        s = prep(j,
                 "DELETE FROM changes WHERE at_ms < ?1 AND "
                 "seq <= (SELECT coalesce(max(seq), 0) FROM changes) - ?2",
                 &st);
        if (s == FSA_OK) {
            sqlite3_bind_int64(st, 1, now_ms - FSA_CHANGES_KEEP_MS);
            sqlite3_bind_int64(st, 2, FSA_CHANGES_KEEP_ROWS);
            s = step_done(j, st);
        }
    }
    return finish(j, s);
}

fsa_status_t fsa_outbox_stats(fsa_journal_t *j, fsa_outbox_stats_t *out)
{
    if (j == NULL || out == NULL)
        return FSA_EINVAL;
    memset(out, 0, sizeof *out);
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "SELECT "
                          " (SELECT count(*) FROM outbox WHERE state IN (0, 1)),"
                          /* Each count reads a partial index, never the table: they run
                           * after every batch of a drain (status events). */
                          " (SELECT count(*) FROM outbox WHERE state IN (0, 1) AND "
                          "  (state = 1 OR seq <= " SENT_UPTO_SQL ")),"
                          " (SELECT count(*) FROM outbox WHERE state = 2),"
                          " (SELECT count(*) FROM conflicts WHERE resolution IS NULL AND "
                          "  outcome = 'conflict'),"
                          " (SELECT count(*) FROM conflicts WHERE resolution IS NULL AND "
                          "  outcome = 'rejected'),"
                          " (SELECT coalesce(min(at_ms), 0) FROM outbox WHERE seq = "
                          "  (SELECT min(seq) FROM outbox WHERE state IN (0, 1))),"
                          " (SELECT coalesce(max(seq), 0) FROM sqlite_sequence "
                          "  WHERE name = 'outbox')",
                          &st);
    if (s == FSA_OK) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            out->pending = sqlite3_column_int64(st, 0);
            out->inflight = sqlite3_column_int64(st, 1);
            out->done = sqlite3_column_int64(st, 2);
            out->conflicts = sqlite3_column_int64(st, 3);
            out->rejected = sqlite3_column_int64(st, 4);
            out->oldest_pending_at_ms = sqlite3_column_int64(st, 5);
            out->last_seq = sqlite3_column_int64(st, 6);
        } else {
            s = fsa__db_status(rc);
        }
        release(j, st);
    }
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}

fsa_status_t fsa_outbox_find(fsa_journal_t *j, const char *op_id, fsa_op_t *op,
                             fsa_op_state_t *state)
{
    if (j == NULL || op_id == NULL || op == NULL)
        return FSA_EINVAL;
    lock_j(j);
    fsa_op_state_t scratch;
    if (state == NULL)
        state = &scratch;
    fsa_status_t s = find_locked(j, op_id, op, state);
    int64_t upto = 0;
    if (s == FSA_OK && *state == FSA_OPSTATE_PENDING) {
        s = state_get_int_locked(j, FSA_STATE_OUTBOX_SENT_UPTO, 0, &upto);
        if (s == FSA_OK && op->seq <= upto)
            *state = FSA_OPSTATE_INFLIGHT;
        if (s != FSA_OK)
            fsa_op_clear(op);
    }
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}

/* ---- conflicts ---- */

void fsa_conflict_clear(fsa_conflict_t *c)
{
    if (c == NULL)
        return;
    fsa_op_clear(&c->op);
    fsa_free(c->server_fields);
    fsa_free(c->prior_fields);
    memset(c, 0, sizeof *c);
}

/* The columns conflict_from_row() reads, then the statement's own FROM and WHERE. */
#define CONFLICT_SELECT                                                                            \
    "SELECT o.seq, o.op_id, o.at_ms, o.kind, o.type, o.id, o.grp, o.field, "                       \
    "o.base_version, o.by_n, o.from_s, o.to_s, o.akey, o.max_len, "                                \
    "o.payload, o.state, c.outcome, c.code, c.reason, c.server_version, "                          \
    "c.server_fields, c.created_ms, coalesce(c.resolution, ''), o.prior, "                         \
    "c.decision "                                                                                  \
    "FROM conflicts c JOIN outbox o ON o.seq = c.seq "

/* Fills *c from a CONFLICT_SELECT row; on failure c is cleared. */
static fsa_status_t conflict_from_row(sqlite3_stmt *st, fsa_conflict_t *c)
{
    memset(c, 0, sizeof *c);
    fsa_status_t s = op_from_row(st, &c->op, NULL);
    copy_col(c->outcome, sizeof c->outcome, st, 16);
    copy_col(c->code, sizeof c->code, st, 17);
    copy_col(c->reason, sizeof c->reason, st, 18);
    c->server_version = sqlite3_column_int64(st, 19);
    c->server_fields = dup_col(st, 20);
    c->created_ms = sqlite3_column_int64(st, 21);
    copy_col(c->resolution, sizeof c->resolution, st, 22);
    c->prior_fields = dup_col(st, 23);
    copy_col(c->decision, sizeof c->decision, st, 24);
    if (s == FSA_OK && ((c->server_fields == NULL && sqlite3_column_type(st, 20) != SQLITE_NULL) ||
                        (c->prior_fields == NULL && sqlite3_column_type(st, 23) != SQLITE_NULL)))
        s = FSA_ENOMEM; /* not a conflict without the server's state */
    if (s != FSA_OK)
        fsa_conflict_clear(c);
    return s;
}

fsa_status_t fsa_conflicts_each(fsa_journal_t *j, bool all, fsa_conflict_fn fn, void *arg)
{
    if (j == NULL || fn == NULL)
        return FSA_EINVAL;
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s =
        prep(j, CONFLICT_SELECT "WHERE ?1 OR c.resolution IS NULL ORDER BY c.seq", &st);
    if (s == FSA_OK) {
        sqlite3_bind_int(st, 1, all ? 1 : 0);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            fsa_conflict_t c;
            s = conflict_from_row(st, &c);
            bool go_on = s == FSA_OK ? fn(arg, &c) : false;
            fsa_conflict_clear(&c);
            if (!go_on)
                break;
        }
        if (s == FSA_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
            s = fsa__db_status(rc);
        release(j, st);
    }
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}

/* The open conflicts that resolve together with op: op alone, or every open conflict of its group
 * (a group is resolved as a whole). Takes ownership of op. */
static fsa_status_t conflict_members(fsa_journal_t *j, fsa_op_t *op,
                                     fsa_op_t members[FSA_JOURNAL_GROUP_MAX], size_t *n)
{
    *n = 0;
    if (op->group[0] == '\0') {
        members[(*n)++] = *op;
        memset(op, 0, sizeof *op);
        return FSA_OK;
    }
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "SELECT " OP_COLUMNS " FROM outbox WHERE grp = ?1 AND seq IN "
                          "(SELECT seq FROM conflicts WHERE resolution IS NULL) ORDER BY seq",
                          &st);
    if (s != FSA_OK)
        return s;
    bind_text(st, 1, op->group);
    int rc = SQLITE_DONE;
    while (s == FSA_OK && *n < FSA_JOURNAL_GROUP_MAX && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        s = op_from_row(st, &members[*n], NULL);
        if (s != FSA_OK)
            fsa_op_clear(&members[*n]);
        else
            (*n)++;
    }
    /* A step that failed ends the list early: resolving part of a group would break it. */
    if (s == FSA_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        s = fsa__db_status(rc);
    release(j, st);
    fsa_op_clear(op);
    return s;
}

/* True in *yes when the state now known already has what op meant: a transition whose target
 * is the status now, a create of an entity that exists. Recording such an op again could only
 * fail (or, for a group, fail the whole group), so taking it "local" leaves it out. */
static fsa_status_t already_satisfied(fsa_journal_t *j, const fsa_op_t *op, bool *yes)
{
    *yes = false;
    if (op->kind != FSA_OP_TRANSITION && op->kind != FSA_OP_CREATE)
        return FSA_OK;
    entity_t e;
    fsa_status_t s = entity_load(j, op->type, op->id, &e);
    if (s != FSA_OK)
        return s;
    if (op->kind == FSA_OP_CREATE) {
        *yes = e.exists;
    } else if (e.exists) {
        char now[FSA_STATUS_BYTES];
        s = fsa_model_get_status(e.local_fields, op->type, now);
        *yes = s == FSA_OK && strcmp(now, op->to) == 0;
        if (s != FSA_ENOMEM)
            s = FSA_OK; /* no status: not satisfied, and the record says why */
    }
    entity_clear(&e);
    return s;
}

fsa_status_t fsa_conflict_resolve(fsa_journal_t *j, const char *op_id, bool take_local,
                                  const char *resolution, fsa_rec_t *rec)
{
    if (rec != NULL)
        memset(rec, 0, sizeof *rec);
    if (j == NULL || op_id == NULL || resolution == NULL || resolution[0] == '\0') {
        rec_error(rec, "resolve needs an op id and a resolution");
        return FSA_EINVAL;
    }
    fsa_status_t s = begin(j);
    if (s != FSA_OK)
        return s;
    fsa_op_t op, members[FSA_JOURNAL_GROUP_MAX];
    fsa_op_state_t state;
    size_t n = 0;
    s = find_locked(j, op_id, &op, &state);
    if (s == FSA_OK && state != FSA_OPSTATE_CONFLICT && state != FSA_OPSTATE_REJECTED)
        s = FSA_ENOTFOUND;
    if (s == FSA_OK)
        s = conflict_members(j, &op, members, &n);
    fsa_op_clear(&op);
    int64_t now_ms = j->port->wall_now(j->port->ctx).ms;
    for (size_t i = 0; s == FSA_OK && i < n; i++) {
        sqlite3_stmt *st;
        s = prep(j,
                 "UPDATE conflicts SET resolution = ?2, resolved_ms = ?3 "
                 "WHERE seq = ?1 AND resolution IS NULL",
                 &st);
        if (s != FSA_OK)
            break;
        sqlite3_bind_int64(st, 1, members[i].seq);
        bind_text(st, 2, resolution);
        sqlite3_bind_int64(st, 3, now_ms);
        s = step_done(j, st);
        if (s == FSA_OK && sqlite3_changes(j->db) == 0)
            s = FSA_ENOTFOUND;
        /* Taking the server's state changes the local view now (the op is gone from it); taking
         * ours is told by the op recorded again, below. */
        if (s == FSA_OK && !take_local)
            s = log_change(j, members[i].type, members[i].id, 0,
                           strcmp(resolution, "converged") == 0 ? FSA_CHANGE_SYNCED
                                                                : FSA_CHANGE_RESOLVED,
                           members[i].op_id);
    }
    if (s == FSA_OK && n == 0)
        s = FSA_ENOTFOUND;
    if (s == FSA_ENOTFOUND)
        rec_error(rec, "no open conflict for op %s", op_id);
    if (s == FSA_OK && take_local) {
        /* Recorded again as new ops: new op_ids (the old ones have their answers on the
         * server), the next seqs, preconditions from the state now known, and a new group id
         * for a group, which is resent whole. */
        char group[FSA_GROUP_BYTES] = "";
        if (members[0].group[0] != '\0')
            s = fsa_uuid4(j->port, group);
        fsa_wall_t at = {0};
        if (s == FSA_OK)
            s = now_locked(j, &at);
        bool first = true;
        for (size_t i = 0; s == FSA_OK && i < n; i++) {
            bool satisfied = false;
            s = already_satisfied(j, &members[i], &satisfied);
            if (s != FSA_OK || satisfied)
                continue;
            fsa_op_t again = members[i]; /* shallow: json stays owned by members[i] */
            s = record_one_locked(
                j, &again, at, group,
                strcmp(resolution, "rebased") == 0 ? FSA_CHANGE_REBASED : FSA_CHANGE_RESOLVED, rec);
            if (s == FSA_OK && first && rec != NULL) {
                memcpy(rec->op_id, again.op_id, sizeof rec->op_id);
                rec->seq = again.seq;
            }
            first = false;
        }
    }
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&members[i]);
    commit_fail_t how = COMMIT_DONE;
    s = finish_commit(j, s, &how);
    if (s == FSA_EFULL)
        full_message(j, rec, how != COMMIT_DONE);
    else if (how == COMMIT_FSYNC_FAILED || how == COMMIT_FSYNC_OVERWRITTEN)
        fsync_message(j, rec, how == COMMIT_FSYNC_OVERWRITTEN);
    if (s != FSA_OK && rec != NULL) {
        rec->op_id[0] = '\0';
        rec->seq = 0;
    }
    return s;
}

fsa_status_t fsa_conflict_set_decision(fsa_journal_t *j, const char *op_id, const char *decision)
{
    if (j == NULL || op_id == NULL || decision == NULL)
        return FSA_EINVAL;
    fsa_status_t s = begin(j);
    if (s != FSA_OK)
        return s;
    sqlite3_stmt *st;
    s = prep(j, "UPDATE conflicts SET decision = ?2 WHERE op_id = ?1 AND resolution IS NULL", &st);
    if (s == FSA_OK) {
        bind_text(st, 1, op_id);
        bind_text(st, 2, decision);
        s = step_done(j, st);
        if (s == FSA_OK && sqlite3_changes(j->db) == 0)
            s = FSA_ENOTFOUND;
    }
    if (s == FSA_OK && strcmp(decision, "server-wins") == 0) {
        fsa_op_t op;
        fsa_op_state_t state;
        s = find_locked(j, op_id, &op, &state);
        if (s == FSA_OK) {
            entity_t e;
            s = entity_load(j, op.type, op.id, &e);
            if (s == FSA_OK)
                s = log_change(j, op.type, op.id, e.base_version, FSA_CHANGE_SERVER_WON, op_id);
            entity_clear(&e);
            fsa_op_clear(&op);
        }
    }
    return finish(j, s);
}

fsa_status_t fsa_journal_integrity(fsa_journal_t *j, char *err, size_t errlen)
{
    if (j == NULL)
        return FSA_EINVAL;
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, "PRAGMA integrity_check", &st);
    if (s == FSA_OK) {
        int rc = sqlite3_step(st);
        const char *r = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        if (r == NULL || strcmp(r, "ok") != 0) {
            s = FSA_ECORRUPT;
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "%s", r != NULL ? r : sqlite3_errstr(rc));
        }
        release(j, st);
    }
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}

fsa_status_t fsa_conflict_get(fsa_journal_t *j, const char *op_id, fsa_conflict_t *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (j == NULL || op_id == NULL || out == NULL)
        return FSA_EINVAL;
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, CONFLICT_SELECT "WHERE o.op_id = ?1", &st);
    if (s == FSA_OK) {
        bind_text(st, 1, op_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            s = conflict_from_row(st, out);
        else
            s = rc == SQLITE_DONE ? FSA_ENOTFOUND : fsa__db_status(rc);
        release(j, st);
    }
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}

/* ---- several state keys at once ---- */

fsa_status_t fsa_journal_state_set_many(fsa_journal_t *j, const fsa_state_item_t *items, size_t n)
{
    if (j == NULL || (items == NULL && n > 0))
        return FSA_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (items[i].key == NULL || items[i].key[0] == '\0')
            return FSA_EINVAL;
    fsa_status_t s = begin(j);
    if (s != FSA_OK)
        return s;
    for (size_t i = 0; s == FSA_OK && i < n; i++) {
        sqlite3_stmt *st;
        s = prep(j,
                 "INSERT INTO sync_state(k, v) VALUES(?1, ?2) ON CONFLICT(k) DO UPDATE SET v = ?2",
                 &st);
        if (s != FSA_OK)
            break;
        bind_text(st, 1, items[i].key);
        if (items[i].s != NULL)
            bind_text(st, 2, items[i].s);
        else
            sqlite3_bind_int64(st, 2, items[i].i);
        s = step_done(j, st);
    }
    return finish(j, s);
}

/* ---- the change log ---- */

fsa_status_t fsa_journal_changes_last(fsa_journal_t *j, int64_t *seq)
{
    if (seq != NULL)
        *seq = 0;
    if (j == NULL || seq == NULL)
        return FSA_EINVAL;
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, "SELECT coalesce(max(seq), 0) FROM changes", &st);
    if (s == FSA_OK) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *seq = sqlite3_column_int64(st, 0);
        else
            s = fsa__db_status(rc);
        release(j, st);
    }
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}

fsa_status_t fsa_journal_changes_read(fsa_journal_t *j, int64_t after, fsa_change_t *out,
                                      size_t max, size_t *n)
{
    if (n != NULL)
        *n = 0;
    if (j == NULL || out == NULL || n == NULL || max == 0)
        return FSA_EINVAL;
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "SELECT seq, type, id, version, reason, op_id FROM changes "
                          "WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                          &st);
    if (s == FSA_OK) {
        sqlite3_bind_int64(st, 1, after);
        sqlite3_bind_int64(st, 2, (int64_t)max);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < max) {
            fsa_change_t *c = &out[*n];
            memset(c, 0, sizeof *c);
            c->seq = sqlite3_column_int64(st, 0);
            c->type = (fsa_type_t)sqlite3_column_int(st, 1);
            copy_col(c->id, sizeof c->id, st, 2);
            c->version = sqlite3_column_int64(st, 3);
            c->reason = (fsa_change_reason_t)sqlite3_column_int(st, 4);
            copy_col(c->op_id, sizeof c->op_id, st, 5);
            (*n)++;
        }
        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
            s = fsa__db_status(rc);
        release(j, st);
    }
    j->port->mutex_unlock(j->port->ctx, j->mu);
    if (s != FSA_OK)
        *n = 0;
    return s;
}

/* ---- listing entities ---- */

/* Open conflicts and rejections on one entity, inside the caller's lock. */
static fsa_status_t count_open_conflicts(fsa_journal_t *j, fsa_type_t type, const char *id,
                                         int64_t *n)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "SELECT count(*) FROM conflicts c JOIN outbox o ON o.seq = c.seq "
                          "WHERE o.type = ?1 AND o.id = ?2 AND c.resolution IS NULL",
                          &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int(st, 1, (int)type);
    bind_text(st, 2, id);
    int rc = sqlite3_step(st);
    *n = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    release(j, st);
    return rc == SQLITE_ROW ? FSA_OK : fsa__db_status(rc);
}

fsa_status_t fsa_journal_entity_conflicts(fsa_journal_t *j, fsa_type_t type, const char *id,
                                          int64_t *n)
{
    if (n != NULL)
        *n = 0;
    if (j == NULL || id == NULL || n == NULL || (unsigned)type >= FSA__TYPE_COUNT)
        return FSA_EINVAL;
    lock_j(j);
    fsa_status_t s = count_open_conflicts(j, type, id, n);
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}

/*
 * One statement for every filter: a NULL parameter does not filter. The filters read the local
 * view with json_extract; a device journal holds what one device works on (hundreds to a few
 * thousand entities), so the scan of one type's rows in key order costs little, and an
 * expression index per filter would tax every record instead.
 */
fsa_status_t fsa_journal_list(fsa_journal_t *j, const fsa_entity_filter_t *f, fsa_entity_fn fn,
                              void *arg)
{
    if (j == NULL || f == NULL || fn == NULL || (unsigned)f->type >= FSA__TYPE_COUNT ||
        f->limit > FSA_LIST_MAX || (f->to_ms != 0 && f->to_ms < f->from_ms))
        return FSA_EINVAL;
    const char *status_path = f->type == FSA_TYPE_TICKET ? "$.status" : "$.jobstatus";
    const char *people_path = f->type == FSA_TYPE_TICKET ? "$.assignedto" : "$.people_id";
    if (f->status != NULL && fsa_model_status_field(f->type) == NULL)
        return FSA_EINVAL; /* attendance has no status */
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "SELECT e.id, e.local_fields, e.base_version, "
                          " (SELECT count(*) FROM outbox o WHERE o.type = ?1 AND o.id = e.id "
                          "  AND o.state IN (0, 1)), "
                          " (SELECT count(*) FROM conflicts c JOIN outbox o ON o.seq = c.seq "
                          "  WHERE o.type = ?1 AND o.id = e.id AND c.resolution IS NULL) "
                          "FROM entities e WHERE e.type = ?2 AND e.local_fields IS NOT NULL "
                          " AND (?3 IS NULL OR e.id > ?3) "
                          " AND (?4 IS NULL OR json_extract(e.local_fields, '$.parent_id') = ?4) "
                          " AND (?5 IS NULL OR json_extract(e.local_fields, ?6) = ?5) "
                          " AND (?7 IS NULL OR json_extract(e.local_fields, ?8) = ?7) "
                          " AND (?9 IS NULL OR json_extract(e.local_fields, '$.site_id') = ?9) "
                          " AND (?10 = 0 OR json_extract(e.local_fields, '$.at') >= ?10) "
                          " AND (?11 = 0 OR json_extract(e.local_fields, '$.at') < ?11) "
                          "ORDER BY e.id LIMIT ?12",
                          &st);
    if (s == FSA_OK) {
        sqlite3_bind_int(st, 1, (int)f->type);
        bind_text(st, 2, fsa_type_name(f->type));
        if (f->after_id != NULL)
            bind_text(st, 3, f->after_id);
        if (f->parent_id != NULL)
            bind_text(st, 4, f->parent_id);
        if (f->status != NULL)
            bind_text(st, 5, f->status);
        bind_text(st, 6, status_path);
        if (f->people_id != NULL)
            bind_text(st, 7, f->people_id);
        bind_text(st, 8, people_path);
        if (f->site_id != NULL)
            bind_text(st, 9, f->site_id);
        sqlite3_bind_int64(st, 10, f->from_ms);
        sqlite3_bind_int64(st, 11, f->to_ms);
        sqlite3_bind_int64(st, 12, (int64_t)(f->limit != 0 ? f->limit : FSA_LIST_DEFAULT));
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *id = (const char *)sqlite3_column_text(st, 0);
            const char *fields = (const char *)sqlite3_column_text(st, 1);
            if (id == NULL || fields == NULL) {
                s = FSA_ENOMEM;
                break;
            }
            if (!fn(arg, f->type, id, fields, sqlite3_column_int64(st, 2),
                    sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4)))
                break;
        }
        if (s == FSA_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
            s = fsa__db_status(rc);
        release(j, st);
    }
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}

fsa_status_t fsa_outbox_op_state(fsa_journal_t *j, const char *op_id, fsa_op_state_t *state)
{
    if (state != NULL)
        *state = FSA_OPSTATE_PENDING;
    if (j == NULL || op_id == NULL || state == NULL)
        return FSA_EINVAL;
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "SELECT CASE WHEN state = 0 AND seq <= " SENT_UPTO_SQL
                          " THEN 1 ELSE state END FROM outbox WHERE op_id = ?1 "
                          "UNION ALL SELECT 2 FROM done_ops WHERE op_id = ?1 LIMIT 1",
                          &st);
    if (s == FSA_OK) {
        bind_text(st, 1, op_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *state = (fsa_op_state_t)sqlite3_column_int(st, 0);
        else
            s = rc == SQLITE_DONE ? FSA_ENOTFOUND : fsa__db_status(rc);
        release(j, st);
    }
    j->port->mutex_unlock(j->port->ctx, j->mu);
    return s;
}
