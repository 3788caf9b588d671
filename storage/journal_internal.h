/* fieldsync: what the journal's files (storage/journal*.c) share; not part of its promise. */
#ifndef FSA_STORAGE_JOURNAL_INTERNAL_H
#define FSA_STORAGE_JOURNAL_INTERNAL_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/state_keys.h"

/*
 * The journal is one module in several files, one concern each: journal.c (the SQLite helpers,
 * transactions, open and close), journal_state.c (the device's configuration and sync state:
 * typed calls over key/value rows), journal_entity.c (base and local view, reads, listing),
 * journal_record.c (recording), journal_checkpoint.c (the checkpoint workflow),
 * journal_outbox.c (batches, lookups, compaction), journal_apply.c (the server's results),
 * journal_conflict.c (conflicts and the names of their enums), journal_changes.c (the change
 * log).
 *
 * The functions they share have internal names (fsa__jn_*: libfieldsync.a carries every object,
 * and an app may have a `begin` of its own); the journal's files call them by the short names
 * the macros below give.
 */

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
    fsa_mutex_t *mu; /* serializes every use of db and its statements across threads (NOMUTEX) */
    const void *_Atomic owner; /* the thread holding mu (fsa__jn_held), NULL when none */
    /* Yielding to waiting threads (fsa_outbox_apply_batch, journal_apply.c): the threads waiting
     * for mu, and, under mu, whether the sync thread waits in turn for them (on `turn`, signalled
     * by the first of them to get mu). */
    _Atomic int waiting;
    bool yielding;
    fsa_cond_t *turn;
    bool sync_full;        /* opened synchronous=FULL */
    bool relaxed;          /* under mu: left at synchronous=NORMAL by a restore that failed */
    sqlite3 *_Atomic ckpt; /* the drain's checkpoints' connection (fsa__db_checkpoint); NULL */
    /* Reads outside mu (fsa_outbox_stats: its counts scan the queue, milliseconds on a long
     * backlog, which a record would otherwise wait for): a connection of their own, opened on
     * first use (fsa__db_open_reader), used under rd_mu only. NULL until then, or when it could
     * not be opened (the reads then run on db under mu, as before). */
    fsa_mutex_t *rd_mu;
    sqlite3 *rd;
    sqlite3_stmt *rd_stats;
    /* Every outbox row with a lower seq is closed for good (parked, or done and to be deleted):
     * the reads from the queue's head start here instead of walking the parked ops before it
     * (open_from_raise, journal_outbox.c). It only rises, and it holds only while the outbox
     * keeps three rules, each stated where it is kept: a parked op never reopens (close_op,
     * journal_apply.c), every delete notes the outbox's top seq first (OUTBOX_NOTE_TOP_SQL), and
     * a new op takes a seq above every seq given (outbox_insert, journal_record.c). 0 until a
     * read has seen the head. */
    _Atomic int64_t open_from;
    int64_t budget_bytes;
    /* The pages a record may bring the journal's use to (its budget less the reserve for
     * syncing: fsa__jn_recording_room); the connection's own limit is the whole budget. */
    int64_t record_pages;
    uint64_t wal_full0;  /* under mu: fsa__db_wal_full_writes at the BEGIN of a record */
    uint64_t op_id_salt; /* FSA_STATE_OP_ID_SALT, read at open: it never changes */
    char *path;
};

/* ---- small SQLite helpers (journal.c) ---- */

/* A cached statement for sql (a string literal), ready to bind. Hand it back with release(). */
fsa_status_t fsa__jn_prep(fsa_journal_t *j, const char *sql, sqlite3_stmt **st) FSA_MUST_CHECK;
/* Resets a statement from prep() for its next use (or finalizes it if the cache was full). */
void fsa__jn_release(fsa_journal_t *j, sqlite3_stmt *st);
/* Steps a statement that returns no rows, then releases it. */
fsa_status_t fsa__jn_step_done(fsa_journal_t *j, sqlite3_stmt *st) FSA_MUST_CHECK;
/* Runs sql (no rows; a string literal) over a range of the outbox: lo and hi bound to ?1 and ?2,
 * at_ms to ?3 when the statement has one; *rows (may be NULL) gets the rows it changed. */
fsa_status_t fsa__jn_step_range(fsa_journal_t *j, const char *sql, int64_t lo, int64_t hi,
                                int64_t at_ms, int64_t *rows) FSA_MUST_CHECK;
/* Writes the one-line error of a recording call (rec may be NULL). */
void fsa__jn_rec_error(fsa_rec_t *rec, const char *fmt, ...) FSA_PRINTF(2, 3);

/* Column i of the current row into *out, malloc'ed: NULL for an SQL NULL. Its type is read before
 * its text: after sqlite3_column_text converts a value, what sqlite3_column_type says of it is
 * undefined (SQLite's documentation), so the type tells a NULL from a failed conversion only when
 * asked first. FSA_ENOMEM when the text could not be had. */
static inline fsa_status_t dup_col(sqlite3_stmt *st, int i, char **out)
{
    *out = NULL;
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return FSA_OK;
    const unsigned char *s = sqlite3_column_text(st, i);
    if (s != NULL)
        *out = fsa_strdup((const char *)s);
    return *out != NULL ? FSA_OK : FSA_ENOMEM;
}

/* s (NULL: "") into dst of cap bytes, cut to fit: snprintf(dst, cap, "%s", s) without the
 * formatting, for the hot paths (a batch of 500 ops reads 3,500 columns in op_from_row). */
static inline void copy_cut(char *dst, size_t cap, const char *s)
{
    size_t n = s != NULL ? strnlen(s, cap - 1) : 0;
    if (n > 0)
        memcpy(dst, s, n);
    dst[n] = '\0';
}

static inline void copy_col(char *dst, size_t cap, sqlite3_stmt *st, int i)
{
    copy_cut(dst, cap, (const char *)sqlite3_column_text(st, i));
}

/* ---- transactions (journal.c) ---- */

/* Takes the journal's mutex (ending a transaction a failed COMMIT left open); the caller
 * releases it with unlock_j. */
void fsa__jn_lock_j(fsa_journal_t *j);
/* Releases the journal's mutex. */
void fsa__jn_unlock_j(fsa_journal_t *j);
/* Under the mutex: waits for j->turn, the mutex let go meanwhile (fsa__jn_give_way). */
void fsa__jn_wait_turn(fsa_journal_t *j);
/* Whether the calling thread holds the journal's mutex: db is opened without SQLite's own
 * (storage/db.h), so that every use of it must be under j->mu; prep() (every cached statement),
 * end_leftover and finish_commit assert it. */
bool fsa__jn_held(fsa_journal_t *j);
/* Ends a transaction left open under the mutex (a COMMIT or ROLLBACK that had no memory to run). */
void fsa__jn_end_leftover(fsa_journal_t *j);
/* Runs a transaction statement (a string literal) from the statement cache; *xrc (may be NULL)
 * receives the extended result code of a failure. */
fsa_status_t fsa__jn_run_cached(fsa_journal_t *j, const char *sql, int *xrc) FSA_MUST_CHECK;
/* synchronous=FULL again after a transaction of results at NORMAL (journal_apply.c); when it
 * fails, j->relaxed stays, lock_j tries again and begin() refuses every write until it succeeds. */
fsa_status_t fsa__jn_sync_full_again(fsa_journal_t *j);
/* Begins a write transaction (BEGIN IMMEDIATE, the mutex held) and checks the calling thread's
 * fence in it (fsa_journal_fence_thread): on FSA_EFENCED the transaction is rolled back. Every
 * write transaction of the journal starts here. */
fsa_status_t fsa__jn_write_begin(fsa_journal_t *j) FSA_MUST_CHECK;
/* Takes the mutex and begins a write transaction (write_begin); on failure the mutex is
 * released. */
fsa_status_t fsa__jn_begin(fsa_journal_t *j) FSA_MUST_CHECK;

/* The scheduling of the long writes that other writers must not wait for (the drain's results,
 * the compaction: journal_apply.c). sync_relax: synchronous=NORMAL for the next transaction (under
 * the mutex, outside a transaction; sync_full_again puts FULL back). someone_waits: a thread of
 * this process waits for the mutex or, since busy0 (fsa__db_busy_waits), for a write lock.
 * give_way: between two such transactions (the mutex held), lets those threads go first.
 * flush_wal: after them, outside the mutex (fsa__db_flush on the journal's own connection). */
void fsa__jn_sync_relax(fsa_journal_t *j);
bool fsa__jn_someone_waits(const fsa_journal_t *j, uint64_t busy0);
void fsa__jn_give_way(fsa_journal_t *j, uint64_t *busy0);
void fsa__jn_flush_wal(fsa_journal_t *j);

/* How a write ended: committed; the COMMIT failed (at its fsync or otherwise); or a statement
 * found no room before the COMMIT, with the journal below its budget (so the device is full). */
typedef enum commit_fail {
    COMMIT_DONE,
    COMMIT_FAILED,
    COMMIT_FSYNC_FAILED,      /* and the op may come back after a power loss (fsync_message) */
    COMMIT_FSYNC_OVERWRITTEN, /* failed at its fsync, but cannot come back: nothing recorded */
    COMMIT_DEVICE_FULL
} commit_fail_t;

/* Commits when st is FSA_OK, else rolls back; returns the final status. Releases the mutex.
 * *how (may be NULL) tells how it ended (see commit_fail_t). */
fsa_status_t fsa__jn_finish_commit(fsa_journal_t *j, fsa_status_t st,
                                   commit_fail_t *how) FSA_MUST_CHECK;
/* finish_commit without how. */
fsa_status_t fsa__jn_finish(fsa_journal_t *j, fsa_status_t st) FSA_MUST_CHECK;
/* finish_commit for a write that recorded into rec (may be NULL): on failure rec gets the error
 * line (a full journal or device, a failed fsync at COMMIT, else the status) unless it has one,
 * and its op id and seq are cleared. */
fsa_status_t fsa__jn_finish_record(fsa_journal_t *j, fsa_status_t st,
                                   fsa_rec_t *rec) FSA_MUST_CHECK;
/* The first column of the one row sql answers, as an integer (under the mutex; the statement
 * from the cache). FSA_OK, or the step's failure (no row: its status). */
fsa_status_t fsa__jn_query_int(fsa_journal_t *j, const char *sql, int64_t *out) FSA_MUST_CHECK;
/* In a record's transaction, after its writes: FSA_EFULL when the pages in use (the file's, but
 * its free ones) are past record_pages, which finish_record then tells as "journal full". */
fsa_status_t fsa__jn_recording_room(fsa_journal_t *j) FSA_MUST_CHECK;

/* ---- the sync state and the clock (journal_state.c) ---- */

/* An integer key inside the caller's lock; *out = dflt when absent. */
fsa_status_t fsa__jn_state_get_int_locked(fsa_journal_t *j, const char *key, int64_t dflt,
                                          int64_t *out) FSA_MUST_CHECK;
/* The corrected clock in *out; without the offset (and an error) when it cannot be read, so that
 * an op is never stamped with an uncorrected time. _locked: inside the caller's lock. */
fsa_status_t fsa__jn_now_locked(fsa_journal_t *j, fsa_wall_t *out) FSA_MUST_CHECK;

/* ---- entities (journal_entity.c) ---- */

typedef struct entity {
    bool exists;
    char *base_fields; /* NULL: not on the server */
    int64_t base_version;
    char *local_fields; /* NULL: no local view */
} entity_t;

void fsa__jn_entity_clear(entity_t *e);
/* Loads an entity's row (all NULL, exists false, when there is none). */
fsa_status_t fsa__jn_entity_load(fsa_journal_t *j, fsa_type_t type, const char *id,
                                 entity_t *e) FSA_MUST_CHECK;
/* Stores it; with neither base nor view the row goes. */
fsa_status_t fsa__jn_entity_store(fsa_journal_t *j, fsa_type_t type, const char *id,
                                  const entity_t *e) FSA_MUST_CHECK;
/* Rebuilds the local view: base + pending ops in seq order. */
fsa_status_t fsa__jn_rebuild_local(fsa_journal_t *j, fsa_type_t type,
                                   const char *id) FSA_MUST_CHECK;
/* Pending and in-flight ops on an entity. */
fsa_status_t fsa__jn_count_pending(fsa_journal_t *j, fsa_type_t type, const char *id,
                                   int64_t *n) FSA_MUST_CHECK;
/* Open conflicts and rejections on an entity, inside the caller's lock. */
fsa_status_t fsa__jn_count_open_conflicts(fsa_journal_t *j, fsa_type_t type, const char *id,
                                          int64_t *n) FSA_MUST_CHECK;

/* ---- the change log (journal_changes.c) ---- */

/* Appends a row to the change log inside the open transaction (see fsa_change_reason_t). */
fsa_status_t fsa__jn_log_change(fsa_journal_t *j, fsa_type_t type, const char *id, int64_t version,
                                fsa_change_reason_t why, const char *op_id) FSA_MUST_CHECK;

/* A transaction's change rows, kept and appended FSA__JN_CHANGE_ROWS at a time (one statement
 * instead of one per row): the same rows, in the same order, as log_change would append one by
 * one. Start zeroed; fsa__jn_change_flush before the transaction commits. */
#define FSA__JN_CHANGE_ROWS 16
typedef struct fsa__jn_change_rows {
    struct {
        fsa_type_t type;
        int64_t version;
        fsa_change_reason_t why;
        int64_t at_ms;
        char id[FSA_ID_BYTES];
        char op_id[FSA_OP_ID_BYTES];
    } row[FSA__JN_CHANGE_ROWS];
    size_t n;
} fsa__jn_change_rows_t;
/* Adds a row (appending the rows kept when they are FSA__JN_CHANGE_ROWS). */
fsa_status_t fsa__jn_change_add(fsa_journal_t *j, fsa__jn_change_rows_t *rows, fsa_type_t type,
                                const char *id, int64_t version, fsa_change_reason_t why,
                                const char *op_id) FSA_MUST_CHECK;
/* Appends the rows kept (none: FSA_OK) and empties rows, also on failure. */
fsa_status_t fsa__jn_change_flush(fsa_journal_t *j, fsa__jn_change_rows_t *rows) FSA_MUST_CHECK;

/* ---- the outbox (journal_outbox.c) ---- */

/* An outbox row is read whole ("SELECT *", or "o.*" first), its columns in the schema's order
 * (storage/db.c, DDL_OUTBOX_V6_COLUMNS: seq, op_id, at_ms, kind, type, id, grp, field,
 * base_version, by_n, from_s, to_s, akey, max_len, payload, prior, state, attempts,
 * result_version, done_ms). A list of 16 names in each statement cost the device binary ~100 bytes
 * a statement. A test checks the order (test_fsa_journal_open__outbox_columns_in_the_order_read).
 */
#define OP_COLUMNS "*"
enum { OP_COL_PRIOR = 15, OP_COL_STATE = 16, OP_NCOLS = 20 };

/* An op's outbox row by its id: the row whose seq the id carries (fsa__jn_op_id_seq), or an older
 * journal's op through outbox_legacy_ids (storage/db.c, schema 6); either way the id is checked.
 * ?1 the op id, ?2 the seq it carries: fsa__jn_bind_op_ref. */
#define OP_REF_WHERE "seq=?2 AND op_id=?1 OR op_id=?1 AND substr(op_id,15,1)<>'8'"
#define OP_REF_WHERE_O "o.seq=?2 AND o.op_id=?1 OR o.op_id=?1 AND substr(o.op_id,15,1)<>'8'"

/* The seq a new op would take (OUTBOX_NEXT_SEQ_SQL), inside the caller's transaction. */
fsa_status_t fsa__jn_next_seq_locked(fsa_journal_t *j, int64_t *out) FSA_MUST_CHECK;

/* The highest seq an op may take: an op id carries 40 bits of it. */
#define FSA__OP_SEQ_MAX ((INT64_C(1) << 40) - 1)

/* The seq that op_id carries in j (-1 when it is not of an op id's length). Only an id the journal
 * made carries one: the lookups check the id (OP_REF_WHERE). */
int64_t fsa__jn_op_id_seq(const fsa_journal_t *j, const char *op_id);

/* Binds OP_REF_WHERE's ?1 and ?2 for op_id. */
void fsa__jn_bind_op_ref(const fsa_journal_t *j, sqlite3_stmt *st, const char *op_id);

/* Fills *op (and *state, may be NULL) from an OP_COLUMNS row. */
fsa_status_t fsa__jn_op_from_row(sqlite3_stmt *st, fsa_op_t *op,
                                 fsa_op_state_t *state) FSA_MUST_CHECK;
/* The reverse, for an INSERT: binds op's columns op_id to payload, in the row's order, to
 * ?first .. ?first+13 of st (text as SQLITE_STATIC: op must outlive the step). */
void fsa__jn_op_bind(sqlite3_stmt *st, int first, const fsa_op_t *op);
/* The statements that read the queue and count it (journal_outbox.c; their plans are pinned by a
 * test): the open ops after seq ?2 in seq order, at most ?1; the figures of fsa_outbox_stats. */
extern const char fsa__jn_queue_read_sql[];
extern const char fsa__jn_stats_sql[];
/* An outbox op by op_id, inside the caller's lock: FSA_OK (op and *state set), FSA_ENOTFOUND. */
fsa_status_t fsa__jn_find_locked(fsa_journal_t *j, const char *op_id, fsa_op_t *op,
                                 fsa_op_state_t *state) FSA_MUST_CHECK;
/*
 * "In flight" is not written op by op: the outbox's state column was in three of its indexes, and
 * rewriting it for every op sent cost as much as applying the op's result. Batches are read from
 * the head of the queue in seq order and a recorded op always gets a higher seq than any op
 * committed before it, so the ops sent at least once are exactly the open ones at or below the
 * highest seq sent, which is what this key keeps (state 1 stays meaningful in journals that
 * stored it). The attempts column is no longer counted.
 */
#define SENT_UPTO_SQL                                                                              \
    "(SELECT coalesce(max(v),0)FROM sync_state WHERE k='" FSA_STATE_OUTBOX_SENT_UPTO "')"

/* At least the highest seq deleted from the top of the outbox (0: none), in place of
 * AUTOINCREMENT's sqlite_sequence (storage/db.c): schema 3 kept it by a trigger; from schema 4
 * every statement that deletes outbox rows runs OUTBOX_NOTE_TOP_SQL first, in its transaction. */
#define OUTBOX_LAST_DELETED_SQL                                                                    \
    "(SELECT coalesce(max(v),0)FROM sync_state WHERE k='" FSA_STATE_OUTBOX_LAST_DELETED "')"
/* Raises it to the outbox's highest seq (an empty outbox leaves it; an equal or lower one
 * writes nothing): whatever the delete after it takes from the top, no seq it gave is given
 * again. Every delete of outbox rows must run it first: a seq given again would be below a
 * handle's open_from, and skipped by its reads. */
#define OUTBOX_NOTE_TOP_SQL                                                                        \
    "INSERT INTO sync_state(k,v)SELECT '" FSA_STATE_OUTBOX_LAST_DELETED "',seq FROM outbox "       \
    "WHERE true ORDER BY seq DESC LIMIT 1 "                                                        \
    "ON CONFLICT(k)DO UPDATE SET v=excluded.v WHERE excluded.v>v"
/* The highest seq the outbox ever gave (0: none): in it, or compacted from its top. */
#define OUTBOX_LAST_SEQ_SQL                                                                        \
    "max(coalesce((SELECT max(seq)FROM outbox),0)," OUTBOX_LAST_DELETED_SQL ")"
/* The seq of a new op: one above every seq the outbox ever gave, those still in it and those
 * compacted away from its top (schema 3: no AUTOINCREMENT; see storage/db.c). Two lookups at the
 * right edge of two b-trees, and no write of its own: AUTOINCREMENT rewrote sqlite_sequence. */
#define OUTBOX_NEXT_SEQ_SQL OUTBOX_LAST_SEQ_SQL "+1"

/* Marks ops in flight inside the open transaction. */
fsa_status_t fsa__jn_mark_inflight_locked(fsa_journal_t *j, const fsa_op_t *ops,
                                          size_t n) FSA_MUST_CHECK;

/* ---- recording (journal_record.c) ---- */

/* Records one op inside an open transaction (see journal_record.c). */
fsa_status_t fsa__jn_record_one_locked(fsa_journal_t *j, fsa_op_t *op, fsa_wall_t at,
                                       const char *group, fsa_change_reason_t why,
                                       fsa_rec_t *rec) FSA_MUST_CHECK;
/* Records n ops in one transaction; as a group (one fresh group id) when grouped. */
fsa_status_t fsa__jn_record_ops(fsa_journal_t *j, const fsa_op_t *ops, size_t n, bool grouped,
                                const fsa_fence_t *fence, fsa_rec_t *rec) FSA_MUST_CHECK;
/* The same, for ops that depend on the journal's state: fill(j, at, arg, rec) runs inside the
 * transaction, before the ops are read (at: the time they are recorded at), and completes them
 * (ops then points into arg); a status other than FSA_OK (with rec's error) records nothing. */
typedef fsa_status_t (*fsa__jn_fill_t)(fsa_journal_t *j, fsa_wall_t at, void *arg, fsa_rec_t *rec);
fsa_status_t fsa__jn_record_filled(fsa_journal_t *j, const fsa_op_t *ops, size_t n, bool grouped,
                                   const fsa_fence_t *fence, fsa__jn_fill_t fill, void *arg,
                                   fsa_rec_t *rec) FSA_MUST_CHECK;

/* The short names the journal's files use. */
#define prep(...) fsa__jn_prep(__VA_ARGS__)
#define release(...) fsa__jn_release(__VA_ARGS__)
#define step_done(...) fsa__jn_step_done(__VA_ARGS__)
#define step_range(...) fsa__jn_step_range(__VA_ARGS__)
#define rec_error(...) fsa__jn_rec_error(__VA_ARGS__)
#define lock_j(...) fsa__jn_lock_j(__VA_ARGS__)
#define unlock_j(...) fsa__jn_unlock_j(__VA_ARGS__)
#define end_leftover(...) fsa__jn_end_leftover(__VA_ARGS__)
#define run_cached(...) fsa__jn_run_cached(__VA_ARGS__)
#define sync_full_again(...) fsa__jn_sync_full_again(__VA_ARGS__)
#define write_begin(...) fsa__jn_write_begin(__VA_ARGS__)
#define begin(...) fsa__jn_begin(__VA_ARGS__)
#define sync_relax(...) fsa__jn_sync_relax(__VA_ARGS__)
#define someone_waits(...) fsa__jn_someone_waits(__VA_ARGS__)
#define give_way(...) fsa__jn_give_way(__VA_ARGS__)
#define flush_wal(...) fsa__jn_flush_wal(__VA_ARGS__)
#define finish_commit(...) fsa__jn_finish_commit(__VA_ARGS__)
#define finish(...) fsa__jn_finish(__VA_ARGS__)
#define finish_record(...) fsa__jn_finish_record(__VA_ARGS__)
#define state_get_int_locked(...) fsa__jn_state_get_int_locked(__VA_ARGS__)
#define now_locked(...) fsa__jn_now_locked(__VA_ARGS__)
#define now_checked(...) fsa_journal_now_checked(__VA_ARGS__) /* journal.h */
#define entity_clear(...) fsa__jn_entity_clear(__VA_ARGS__)
#define entity_load(...) fsa__jn_entity_load(__VA_ARGS__)
#define entity_store(...) fsa__jn_entity_store(__VA_ARGS__)
#define rebuild_local(...) fsa__jn_rebuild_local(__VA_ARGS__)
#define count_pending(...) fsa__jn_count_pending(__VA_ARGS__)
#define count_open_conflicts(...) fsa__jn_count_open_conflicts(__VA_ARGS__)
#define log_change(...) fsa__jn_log_change(__VA_ARGS__)
#define op_from_row(...) fsa__jn_op_from_row(__VA_ARGS__)
#define find_locked(...) fsa__jn_find_locked(__VA_ARGS__)
#define mark_inflight_locked(...) fsa__jn_mark_inflight_locked(__VA_ARGS__)
#define record_one_locked(...) fsa__jn_record_one_locked(__VA_ARGS__)
#define record_ops(...) fsa__jn_record_ops(__VA_ARGS__)

#endif
