/* fieldsync: the journal: its SQLite helpers, transactions and commit failures, open and close. */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "port/alloc.h"
#include "port/limits.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/journal_internal.h"
#include "storage/lock_internal.h"
#include "storage/state_keys.h"

/* ---- small SQLite helpers ---- */

/* A cached statement for sql (a string literal), ready to bind. Hand it back with release(). */
fsa_status_t fsa__jn_prep(fsa_journal_t *j, const char *sql, sqlite3_stmt **st)
{
    assert(fsa__jn_held(j)); /* the connection has no mutex of SQLite's own */
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
void fsa__jn_release(fsa_journal_t *j, sqlite3_stmt *st)
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

/* Steps a statement that returns no rows, then finalizes it. */
fsa_status_t fsa__jn_step_done(fsa_journal_t *j, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    release(j, st);
    return rc == SQLITE_DONE ? FSA_OK : fsa__db_status(rc == SQLITE_ROW ? SQLITE_MISUSE : rc);
}

fsa_status_t fsa__jn_step_range(fsa_journal_t *j, const char *sql, int64_t lo, int64_t hi,
                                int64_t at_ms, int64_t *rows)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, sql, &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, lo);
    sqlite3_bind_int64(st, 2, hi);
    /* A statement with two parameters refuses the third (SQLITE_RANGE) and is unchanged. */
    (void)sqlite3_bind_int64(st, 3, at_ms);
    s = step_done(j, st);
    if (s == FSA_OK && rows != NULL)
        *rows = sqlite3_changes(j->db);
    return s;
}

void fsa__jn_rec_error(fsa_rec_t *rec, const char *fmt, ...)
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
void fsa__jn_end_leftover(fsa_journal_t *j)
{
    assert(fsa__jn_held(j));
    if (!sqlite3_get_autocommit(j->db))
        (void)sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
}

/* The calling thread's tag: an address that no other thread has. */
static const void *self_tag(void)
{
    static _Thread_local char tag;
    return &tag;
}

/* owner is only ever compared with the calling thread's own tag, and a thread sees its own last
 * store: no ordering is needed. */
static void note_owner(fsa_journal_t *j, const void *tag)
{
    atomic_store_explicit(&j->owner, tag, memory_order_relaxed);
}

bool fsa__jn_held(fsa_journal_t *j)
{
    return atomic_load_explicit(&j->owner, memory_order_relaxed) == self_tag();
}

void fsa__jn_wait_turn(fsa_journal_t *j)
{
    note_owner(j, NULL); /* the wait lets mu go, and takes it again */
    (void)j->port->cond_wait(j->port->ctx, j->turn, j->mu, fsa_mono_forever());
    note_owner(j, self_tag());
}

void fsa__jn_unlock_j(fsa_journal_t *j)
{
    note_owner(j, NULL);
    j->port->mutex_unlock(j->port->ctx, j->mu);
}

/* Takes the journal's mutex; every call that touches the database starts here, so that a write
 * in autocommit mode never lands in a transaction left open, and a read never sees one. A thread
 * waits counted in j->waiting, and the sync thread applying results gives way to such threads
 * (fsa_outbox_apply_batch): when it waits for them, the first to get the mutex tells it. */
void fsa__jn_lock_j(fsa_journal_t *j)
{
    atomic_fetch_add(&j->waiting, 1);
    j->port->mutex_lock(j->port->ctx, j->mu);
    note_owner(j, self_tag());
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
fsa_status_t fsa__jn_run_cached(fsa_journal_t *j, const char *sql, int *xrc)
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

/* The fence of the calling thread's writes (fsa_journal_fence_thread). */
static _Thread_local const fsa_fence_t *thread_fence;

const fsa_fence_t *fsa_journal_fence_thread(const fsa_fence_t *f)
{
    const fsa_fence_t *was = thread_fence;
    thread_fence = f;
    return was;
}

fsa_status_t fsa__jn_write_begin(fsa_journal_t *j)
{
    fsa_status_t st = run_cached(j, "BEGIN IMMEDIATE", NULL);
    if (st != FSA_OK || thread_fence == NULL)
        return st;
    /* Inside the transaction: a takeover is a write transaction too, so no later token can be
     * issued between this check and the commit (storage/lock.c, "Fencing"). */
    st = fsa__lock_fence_check(j->port, j->db, thread_fence);
    if (st != FSA_OK)
        (void)sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

fsa_status_t fsa__jn_begin(fsa_journal_t *j)
{
    lock_j(j);
    /* Never a write at synchronous=NORMAL that should have been FULL. */
    fsa_status_t st = j->relaxed ? FSA_ENOMEM : write_begin(j);
    if (st != FSA_OK)
        unlock_j(j);
    else
        j->wal_full0 = fsa__db_wal_full_writes(j->db);
    return st;
}

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
                        "INSERT INTO sync_state(k,v) VALUES('" FSA_STATE_FSYNC_FAILURES "',1) "
                        "ON CONFLICT(k) DO UPDATE SET v=v+1",
                        NULL, NULL, NULL) == SQLITE_OK;
}

/*
 * Whether a statement's SQLITE_FULL in the open transaction was the journal's budget
 * (max_page_count) rather than a full device: SQLite says SQLITE_FULL for both. A full device
 * shows as a refused write of the WAL (db.c counts them: the commit's frames, or pages a large
 * transaction spills from within its statements), so a SQLITE_FULL with no refusal since BEGIN
 * was the budget. (The page count cannot tell: SQLite rolls the whole transaction back on
 * SQLITE_FULL, so a large group that reached the budget shows the journal's size before it.) A
 * device that refused a temporary file (a statement journal spilled to the temp directory) is not
 * counted and is told as the budget.
 */
static bool at_budget(fsa_journal_t *j)
{
    return fsa__db_wal_full_writes(j->db) == j->wal_full0;
}

/* Commits when st is FSA_OK, else rolls back; returns the final status. Releases the mutex.
 * *how (may be NULL) tells how it ended (see commit_fail_t). */
fsa_status_t fsa__jn_finish_commit(fsa_journal_t *j, fsa_status_t st, commit_fail_t *how)
{
    assert(fsa__jn_held(j));
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
    unlock_j(j);
    return st;
}

fsa_status_t fsa__jn_finish(fsa_journal_t *j, fsa_status_t st)
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
    if (device_full) {
        rec_error(rec,
                  "disk full: no space left on the device holding journal %s; nothing was "
                  "recorded; free space on the device",
                  j->path);
        return;
    }
    /* In bytes: the budget is budget_bytes, any number (in MiB, 256 KiB was "0 MiB"). */
    rec_error(
        rec,
        "journal full: %s holds what it may record of its budget of %" PRId64
        " bytes (an eighth is for syncing); nothing was recorded; sync, or raise budget_bytes",
        j->path, j->budget_bytes);
}

fsa_status_t fsa__jn_query_int(fsa_journal_t *j, const char *sql, int64_t *out)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, sql, &st);
    if (s != FSA_OK)
        return s;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    release(j, st);
    return rc == SQLITE_ROW ? FSA_OK : fsa__db_status(rc);
}

/*
 * The journal's budget is SQLite's page limit (max_page_count, set at open): no write takes the
 * file past it. Records stop an eighth short of it, counted in pages in use (the file's pages but
 * its free ones): the rest is for the writes of syncing, which take pages before they give any
 * back (an applied result keeps its op id in done_ops and the entity's base beside its local
 * view, then its outbox row goes), so that a journal full of records can still be drained.
 * Counted in use, not by the file's size: pages that a drain added and freed again are not the
 * records' to keep, or each drain at the budget would leave the next less room.
 */
fsa_status_t fsa__jn_recording_room(fsa_journal_t *j)
{
    int64_t count = 0, free_pages = 0;
    fsa_status_t s = fsa__jn_query_int(j, "PRAGMA page_count", &count);
    /* SQLite parses a PRAGMA again at every run (it marks each one run-once), so the free pages
     * are asked for only when they can change the answer: the pages in use are never more than
     * the file's. */
    if (s == FSA_OK && count > j->record_pages)
        s = fsa__jn_query_int(j, "PRAGMA freelist_count", &free_pages);
    if (s == FSA_OK && count - free_pages > j->record_pages)
        s = FSA_EFULL;
    return s;
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

fsa_status_t fsa__jn_finish_record(fsa_journal_t *j, fsa_status_t st, fsa_rec_t *rec)
{
    commit_fail_t how = COMMIT_DONE;
    st = finish_commit(j, st, &how);
    if (st == FSA_EFULL)
        full_message(j, rec, how != COMMIT_DONE);
    else if (how == COMMIT_FSYNC_FAILED || how == COMMIT_FSYNC_OVERWRITTEN)
        fsync_message(j, rec, how == COMMIT_FSYNC_OVERWRITTEN);
    else if (st != FSA_OK && rec != NULL && rec->error[0] == '\0')
        rec_error(rec, "journal %s: write failed (%s)", j->path, fsa_status_str(st));
    if (st != FSA_OK && rec != NULL) {
        rec->op_id[0] = '\0';
        rec->seq = 0;
    }
    return st;
}

const char fsa_journal_file_suffixes[FSA_JOURNAL_FILES][10] = {"",         "-wal",   "-shm",
                                                               "-journal", ".users", ".locks"};

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
    if (st == FSA_OK)
        st = port->mutex_new(port->ctx, &j->rd_mu);
    if (st != FSA_OK)
        goto fail;
    fsa_db_opts_t dbo = {
        .sync_normal = o.sync_normal, .busy_timeout_ms = o.busy_timeout_ms, .create = o.create};
    st = fsa__db_open(port, path, &dbo, &j->db, &j->users, err, errlen);
    if (st != FSA_OK)
        goto fail;
    /* The disk budget is SQLite's page limit: a write that would grow the file past it fails
     * with SQLITE_FULL, which the recording calls report as "journal full". Records stop an
     * eighth short of it (fsa__jn_recording_room), so a journal full of records still applies
     * results, folds pulls and compacts; pages they free are reused. */
    char sql[96];
    int64_t page = 0; /* the file's own: a journal made before session 9 has 4 KiB pages */
    (void)fsa__db_query_int(j->db, "PRAGMA page_size", &page);
    int64_t pages = j->budget_bytes / (page > 0 ? page : FSA_LIMIT_PAGE_BYTES);
    if (pages < FSA_LIMIT_JOURNAL_MIN_PAGES)
        pages = FSA_LIMIT_JOURNAL_MIN_PAGES;
    j->record_pages = pages - pages / 8;
    snprintf(sql, sizeof sql, "PRAGMA max_page_count=%" PRId64, pages);
    st = fsa__db_exec(j->db, sql, err, errlen);
    if (st != FSA_OK)
        goto fail;
    int64_t salt = -1;
    st = fsa__db_query_int(
        j->db, "SELECT ifnull(max(v),-1)FROM sync_state WHERE k='" FSA_STATE_OP_ID_SALT "'", &salt);
    if (st == FSA_OK && salt < 0)
        st = FSA_ECORRUPT; /* made with the schema, never changed: something else changed it */
    if (st != FSA_OK) {    /* the op id salt: the same words as db.c's read of the state */
        snprintf(err, errlen, "journal %s: cannot read state (%s)", path, fsa_status_str(st));
        goto fail;
    }
    j->op_id_salt = (uint64_t)salt;
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
    sqlite3_finalize(j->rd_stats);
    sqlite3_close_v2(j->rd);
    /* Before the journal's: the last to close checkpoints. */
    sqlite3_close_v2(atomic_load(&j->ckpt));
    fsa__db_close(j->port, j->db, j->users);
    if (j->mu != NULL)
        j->port->mutex_free(j->port->ctx, j->mu);
    if (j->turn != NULL)
        j->port->cond_free(j->port->ctx, j->turn);
    if (j->rd_mu != NULL)
        j->port->mutex_free(j->port->ctx, j->rd_mu);
    fsa_free(j->path);
    fsa_free(j);
}

const char *fsa_journal_path(const fsa_journal_t *j)
{
    return j != NULL ? j->path : "";
}

fsa_status_t fsa_journal_integrity(fsa_journal_t *j, char *err, size_t errlen)
{
    if (j == NULL)
        return FSA_EINVAL;
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s = fsa__db_check(j->db, "PRAGMA integrity_check", err, errlen);
    if (s == FSA_OK)
        s = prep(j,
                 "SELECT c.seq,c.op_id FROM conflicts c LEFT JOIN outbox o ON o.seq=c.seq "
                 "WHERE o.seq ISNULL LIMIT 1",
                 &st);
    if (s == FSA_OK) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            s = FSA_ECORRUPT;
            const char *op_id = (const char *)sqlite3_column_text(st, 1);
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "conflict %lld (op %.40s) has no op in the outbox",
                         (long long)sqlite3_column_int64(st, 0), op_id != NULL ? op_id : "?");
        } else if (rc != SQLITE_DONE) {
            s = fsa__db_status(rc);
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "%s", sqlite3_errstr(rc));
        }
        release(j, st);
    }
    unlock_j(j);
    return s;
}
