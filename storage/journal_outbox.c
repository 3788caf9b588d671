/* fieldsync: the outbox: batches, in flight, lookups, compaction and figures. */
#include <assert.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/journal_internal.h"
#include "storage/state_keys.h"

void fsa__jn_op_bind(sqlite3_stmt *st, int first, const fsa_op_t *op)
{
    fsa__db_bind_text(st, first, op->op_id);
    sqlite3_bind_int64(st, first + 1, op->at_ms);
    sqlite3_bind_int64(st, first + 2, (sqlite3_int64)op->kind);
    sqlite3_bind_int64(st, first + 3, (sqlite3_int64)op->type);
    fsa__db_bind_text(st, first + 4, op->id);
    fsa__db_bind_text(st, first + 5, op->group);
    fsa__db_bind_text(st, first + 6, op->field);
    sqlite3_bind_int64(st, first + 7, op->base_version);
    sqlite3_bind_int64(st, first + 8, op->by);
    fsa__db_bind_text(st, first + 9, op->from);
    fsa__db_bind_text(st, first + 10, op->to);
    fsa__db_bind_text(st, first + 11, op->key);
    sqlite3_bind_int64(st, first + 12, op->max_len);
    if (op->json != NULL)
        fsa__db_bind_text(st, first + 13, op->json);
}

fsa_status_t fsa__jn_op_from_row(sqlite3_stmt *st, fsa_op_t *op, fsa_op_state_t *state)
{
    memset(op, 0, sizeof *op);
    op->seq = sqlite3_column_int64(st, 0);
    copy_col(op->op_id, sizeof op->op_id, st, 1);
    op->at_ms = sqlite3_column_int64(st, 2);
    op->kind = (fsa_op_kind_t)sqlite3_column_int64(st, 3);
    op->type = (fsa_type_t)sqlite3_column_int64(st, 4);
    copy_col(op->id, sizeof op->id, st, 5);
    copy_col(op->group, sizeof op->group, st, 6);
    copy_col(op->field, sizeof op->field, st, 7);
    op->base_version = sqlite3_column_int64(st, 8);
    op->by = sqlite3_column_int64(st, 9);
    copy_col(op->from, sizeof op->from, st, 10);
    copy_col(op->to, sizeof op->to, st, 11);
    copy_col(op->key, sizeof op->key, st, 12);
    op->max_len = sqlite3_column_int64(st, 13);
    fsa_status_t s = dup_col(st, 14, &op->json);
    if (s != FSA_OK)
        return s;
    if (state != NULL)
        *state = (fsa_op_state_t)sqlite3_column_int64(st, OP_COL_STATE);
    return FSA_OK;
}

/* ---- the outbox ---- */

static fsa_status_t group_size(fsa_journal_t *j, const char *group, size_t *n)
{
    sqlite3_stmt *st;
    /* grp != '': what lets SQLite use the partial index outbox_by_group for a bound ?1. */
    fsa_status_t s =
        prep(j, "SELECT count(*) FROM outbox WHERE grp=?1 AND grp!='' AND state IN(0,1)", &st);
    if (s != FSA_OK)
        return s;
    fsa__db_bind_text(st, 1, group != NULL ? group : "");
    int rc = sqlite3_step(st);
    *n = rc == SQLITE_ROW ? (size_t)sqlite3_column_int64(st, 0) : 0;
    release(j, st);
    return rc == SQLITE_ROW ? FSA_OK : fsa__db_status(rc);
}

/*
 * Whether set op must wait for the answers to earlier open ops on its entity (other than its own
 * group's). Its base_version counts them as applied (journal_record.c). Sent in the same batch
 * (or while they are in flight), one of them not applied (a conflict, a rejection) would leave
 * the server one version short, and a change by someone else could fill that version: the set
 * would then be applied over a state this device never saw, silently. Sent after their answers,
 * it carries a base_version lowered for each of them that was not applied (park in
 * journal_apply.c), and such a change makes it a conflict.
 */
static fsa_status_t set_waits(fsa_journal_t *j, const fsa_op_t *op, bool *waits)
{
    *waits = false;
    if (op->kind != FSA_OP_SET)
        return FSA_OK;
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "SELECT 1 FROM outbox WHERE type=?1 AND id=?2 AND state IN(0,1) "
                          "AND seq<?3 AND (?4='' OR grp!=?4) LIMIT 1",
                          &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)op->type);
    fsa__db_bind_text(st, 2, op->id);
    sqlite3_bind_int64(st, 3, op->seq);
    fsa__db_bind_text(st, 4, op->group);
    int rc = sqlite3_step(st);
    *waits = rc == SQLITE_ROW;
    release(j, st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? FSA_OK : fsa__db_status(rc);
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

const char fsa__jn_queue_read_sql[] =
    "SELECT " OP_COLUMNS " FROM outbox NOT INDEXED WHERE seq>?2 AND state IN(0,1) "
    "ORDER BY seq LIMIT ?1";

/* Raises j->open_from to seq (never lowers it): the caller read, in one snapshot, that every
 * outbox row below seq is closed (states 2-4). */
static void open_from_raise(fsa_journal_t *j, int64_t seq)
{
    int64_t now = atomic_load(&j->open_from);
    while (seq > now && !atomic_compare_exchange_weak(&j->open_from, &now, seq)) {
    }
}

fsa_status_t fsa__jn_next_seq_locked(fsa_journal_t *j, int64_t *out)
{
    return fsa__jn_query_int(j, "SELECT " OUTBOX_NEXT_SEQ_SQL, out);
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
        unlock_j(j);
        return s;
    }
    /* The open ops are read from the table in seq (rowid) order, NOT INDEXED: an applied op
     * leaves the outbox with its result (journal_apply.c), so the rows are the open ops but for
     * the parked ones (conflicted or rejected) and a few done ones (an older journal's, and those
     * kept until their base takes them), and through an index SQLite would seek each row again in
     * the table (about 1 k instructions per op). A read from the head starts at j->open_from, past
     * the parked ops that a read before it found there, and moves it up to the first open op it
     * finds (or past the last seq when none is open). The same read says "nothing left" at a
     * cycle's end. */
    int64_t from = atomic_load(&j->open_from), below = from > 0 ? from - 1 : 0;
    bool from_head = after_seq <= below; /* the rows between the two are closed for good */
    int64_t start = from_head ? below : after_seq, first = 0;
    sqlite3_stmt *st;
    s = prep(j, fsa__jn_queue_read_sql, &st);
    size_t count = 0, bytes = 0, group_start = 0;
    char current_group[FSA_GROUP_BYTES] = "";
    if (s == FSA_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)max_ops);
        sqlite3_bind_int64(st, 2, start);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            fsa_op_t op;
            s = op_from_row(st, &op, NULL);
            if (s != FSA_OK) {
                fsa_op_clear(&op);
                break;
            }
            if (first == 0)
                first = op.seq; /* the first open row after start */
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
                group_start = count;
            }
            if (count >= max_ops) { /* only a group bigger than max_ops could get here */
                fsa_op_clear(&op);
                break;
            }
            bool waits = false;
            s = set_waits(j, &op, &waits);
            if (s != FSA_OK || waits) {
                /* The batch ends before it, or before its group: a group goes whole. At the
                 * queue's head the ops it waits for are in this batch, so the batch is not empty;
                 * after after_seq it may be (the next batch waits for the answer in flight). */
                fsa_op_clear(&op);
                while (count > group_start)
                    fsa_op_clear(&ops[--count]);
                break;
            }
            ops[count++] = op;
            bytes += sz;
        }
        if (s == FSA_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
            s = fsa__db_status(rc);
        release(j, st);
        /* Nothing open after start: every row is closed, up to the last seq given. (Its read
         * failing fails the call, as any statement of the read does: out of memory, SQLite may
         * have ended the read transaction.) */
        if (s == FSA_OK && from_head && first == 0 && rc == SQLITE_DONE)
            s = fsa__jn_next_seq_locked(j, &first);
        if (s == FSA_OK && from_head && first > 0)
            open_from_raise(j, first);
    }
    /* The read transaction must end even when COMMIT cannot run (no memory to prepare it): it
     * wrote nothing, so a rollback ends it as well. */
    int end = sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL);
    if (end != SQLITE_OK)
        end = sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
    if (s == FSA_OK && end != SQLITE_OK)
        s = fsa__db_status(end);
    unlock_j(j);
    if (s != FSA_OK) {
        for (size_t i = 0; i < count; i++)
            fsa_op_clear(&ops[i]);
        return s;
    }
    *n = count;
    return FSA_OK;
}

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

int64_t fsa__jn_op_id_seq(const fsa_journal_t *j, const char *op_id)
{
    /* The canonical form's last 10 hex digits (fsa_uuid8's tail). Whatever else is read there
     * (not an id the journal made) gives a seq whose row, if any, has another id: every lookup
     * checks the id. */
    if (strlen(op_id) != FSA_UUID_STR_LEN - 1)
        return -1;
    uint64_t tail = (uint64_t)strtoll(op_id + FSA_UUID_STR_LEN - 11, NULL, 16);
    return (int64_t)((tail - j->op_id_salt) & (uint64_t)FSA__OP_SEQ_MAX);
}

void fsa__jn_bind_op_ref(const fsa_journal_t *j, sqlite3_stmt *st, const char *op_id)
{
    fsa__db_bind_text(st, 1, op_id);
    sqlite3_bind_int64(st, 2, fsa__jn_op_id_seq(j, op_id));
}

fsa_status_t fsa__jn_find_locked(fsa_journal_t *j, const char *op_id, fsa_op_t *op,
                                 fsa_op_state_t *state)
{
    memset(op, 0, sizeof *op);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, "SELECT " OP_COLUMNS " FROM outbox WHERE " OP_REF_WHERE, &st);
    if (s != FSA_OK)
        return s;
    fsa__jn_bind_op_ref(j, st, op_id != NULL ? op_id : "");
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

/* Marks ops in flight inside the open transaction. */
fsa_status_t fsa__jn_mark_inflight_locked(fsa_journal_t *j, const fsa_op_t *ops, size_t n)
{
    int64_t upto = 0;
    for (size_t i = 0; i < n; i++)
        if (ops[i].seq > upto)
            upto = ops[i].seq;
    if (upto == 0)
        return FSA_OK;
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "INSERT INTO sync_state(k,v) VALUES('" FSA_STATE_OUTBOX_SENT_UPTO "',?1) "
                          "ON CONFLICT(k) DO UPDATE SET v=max(v,excluded.v)",
                          &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, upto);
    return step_done(j, st);
}

/*
 * Compaction in steps. Moving a cycle's done ops to done_ops in one transaction held the write
 * lock for the whole of it: at the end of a 100,000-op drain about a second, during which every
 * record of the process (and of the others on the journal) waited. So it goes in steps of
 * COMPACT_STEP rows, in transactions that end after COMPACT_TXN_MAX rows, or after any step once
 * a thread of the process waits (the drain's rule, journal_apply.c), and the compaction gives way
 * between two of them. A transaction per step would cost more: done_ops is keyed by op ids
 * (time-ordered since they are UUIDv7, and version 8 ids since schema 6 begin the same way: a
 * journal's older ops may still hold random ones), and each commit writes every page it dirtied,
 * so the fewer the commits the fewer the pages written.
 *
 * An applied op leaves the outbox with its result (journal_apply.c), so the done ops here (state
 * 2) are those an older journal left and those whose base had not taken them
 * (keep_until_folded), which go only once the base has caught up (KEPT_FOR_VIEW_SQL) or their
 * entity is gone: before, a rebuild of its view would replay them. A compaction after a drain on
 * one device finds none.
 *
 * The steps, in order: the done ops in seq order (each step the next COMPACT_STEP of them, copied
 * to done_ops and deleted), then the ids older than the audit period, then the change log's rows
 * past its keep. Each transaction is whole: a failure leaves the steps committed before it, and
 * the journal as consistent as between two compactions (the rest is done by the next one). A
 * compaction of at most COMPACT_TXN_MAX done ops with nobody waiting is one, as before.
 *
 * Its transactions commit at synchronous=NORMAL, as the drain's results do: what a power cut
 * could take back is a compaction, which leaves done ops in the outbox, compacted again by the
 * next cycle, and ids or change rows not yet forgotten. After it, the WAL is synced or
 * checkpointed outside the mutex (fsa__db_flush), so that the next record's FULL commit does not
 * write it first.
 */
#define COMPACT_STEP 64
#define COMPACT_TXN_MAX 4096
#define COMPACT_CHECKPOINT_CLAIM_NS (5 * FSA_NS_PER_S)

typedef struct compact {
    int phase; /* 0: done ops, 1 and 2: ids past the audit period (the oldest, then those above
                  the clock), 3: the change log; 4: done */
    int64_t after_seq; /* phase 0: the done ops up to this seq are moved */
    int64_t now_ms;    /* the port's wall clock, which UUIDv7 ids are made of too */
    int64_t audit_ms;
    size_t removed;
} compact_t;

/* A done op (state 2) whose entity's base is below its result_version: its view still needs it
 * (journal_apply.c, keep_until_folded). outbox.type is the type's number, entities.type its name
 * (fsa_type_name: the protocol's). */
#define KEPT_FOR_VIEW_SQL                                                                          \
    "EXISTS(SELECT 1 FROM entities e WHERE e.type=CASE outbox.type WHEN 0 THEN 'attendance' "      \
    "WHEN 1 THEN 'jobneed' ELSE 'ticket' END AND e.id=outbox.id AND "                              \
    "e.base_version<outbox.result_version)"

/* The next COMPACT_STEP done ops after c->after_seq that no view needs: copied to done_ops and
 * deleted. Each statement says state!=0, so that SQLite finds them through outbox_closed
 * (storage/db.c) rather than in every row of the queue. */
static fsa_status_t compact_done_ops(fsa_journal_t *j, compact_t *c)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(
        j,
        "SELECT seq FROM outbox WHERE state!=0 AND state=2 AND seq>?1 AND NOT " KEPT_FOR_VIEW_SQL
        " ORDER BY seq LIMIT 1 OFFSET ?2",
        &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, c->after_seq);
    sqlite3_bind_int64(st, 2, COMPACT_STEP - 1);
    int rc = sqlite3_step(st);
    bool last = rc == SQLITE_DONE; /* fewer than a step left: all of them */
    int64_t upto = last ? INT64_MAX : sqlite3_column_int64(st, 0);
    release(j, st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return fsa__db_status(rc);
    s = run_cached(j, OUTBOX_NOTE_TOP_SQL, NULL);
    if (s == FSA_OK)
        s = step_range(
            j,
            "INSERT OR IGNORE INTO done_ops(op_id,seq,done_ms) "
            "SELECT op_id,seq,coalesce(done_ms,0) FROM outbox "
            "WHERE state!=0 AND state=2 AND seq>?1 AND seq<=?2 AND NOT " KEPT_FOR_VIEW_SQL,
            c->after_seq, upto, 0, NULL);
    int64_t rows = 0;
    if (s == FSA_OK)
        s = step_range(j,
                       "DELETE FROM outbox WHERE state!=0 AND state=2 AND seq>?1 AND seq<=?2 AND "
                       "NOT " KEPT_FOR_VIEW_SQL,
                       c->after_seq, upto, 0, &rows);
    if (s != FSA_OK)
        return s;
    c->removed += (size_t)rows;
    c->after_seq = upto;
    if (last)
        c->phase = 1;
    return FSA_OK;
}

/*
 * Up to COMPACT_STEP rows of the audit ids (phases 1 and 2) or of the change log (phase 3): the
 * change log keeps an hour and at least the newest rows, so that a listener that is behind by
 * less than that misses nothing.
 *
 * The audit ids are taken in op id order, which for UUIDv7 ids (and the version 8 ids of schema
 * 6) is the order the ops were made (their first 48 bits are the wall clock's ms), and an op is
 * done after it is made: phase 1 looks at the COMPACT_STEP smallest ids and forgets those done
 * before the audit period. It stops at a step that forgot fewer: a younger id among the oldest (an
 * op made long ago and answered late, or a wall clock set back) keeps those after it until it ages;
 * an id is never forgotten early, only sometimes late. (An index by done time did this exactly, at
 * the cost of one more entry for every op the drain applies; schema 4 dropped it.) Phase 2 does the
 * same from the first id above any UUIDv7 made now: the random UUIDv4 ids of an older journal's
 * ops, and ids made while the clock ran ahead, which phase 1 would reach only once every id made
 * since had gone.
 */
static fsa_status_t compact_forget(fsa_journal_t *j, compact_t *c)
{
    sqlite3_stmt *st;
    fsa_status_t s;
    if (c->phase == 1 || c->phase == 2) {
        s = prep(j,
                 "DELETE FROM done_ops WHERE op_id IN(SELECT op_id FROM done_ops WHERE op_id>?3 "
                 "ORDER BY op_id LIMIT ?2) AND done_ms<?1",
                 &st);
        if (s != FSA_OK)
            return s;
        sqlite3_bind_int64(st, 1, c->now_ms - c->audit_ms);
        char above[FSA_UUID_STR_LEN] = "";
        if (c->phase == 2) {
            /* The text of a UUIDv7 made 1 ms from now up to its version digit ("tttttttt-tttt"):
             * every id made until now sorts below it. */
            uint64_t t = (uint64_t)(c->now_ms > 0 ? c->now_ms : 0) + 1;
            snprintf(above, sizeof above, "%08" PRIx64 "-%04" PRIx64, (t >> 16) & 0xffffffffu,
                     t & 0xffffu);
        }
        sqlite3_bind_text(st, 3, above, -1, SQLITE_TRANSIENT);
    } else {
        /* The oldest rows first, then those of them past the keep: filtering by age first
         * scanned the whole log when nothing was old enough (200,000 rows, ~20 ms under the
         * mutex, after every drain). Rows are in time order but for a wall clock set back: a
         * younger row among the oldest stops the pruning there (those after it are kept until
         * it ages; never fewer than promised). */
        s = prep(j,
                 "DELETE FROM changes WHERE seq IN(SELECT seq FROM changes WHERE "
                 "seq<=(SELECT coalesce(max(seq),0) FROM changes)-?3 ORDER BY seq LIMIT ?2) "
                 "AND at_ms<?1",
                 &st);
        if (s != FSA_OK)
            return s;
        sqlite3_bind_int64(st, 1, c->now_ms - FSA_CHANGES_KEEP_MS);
        sqlite3_bind_int64(st, 3, FSA_CHANGES_KEEP_ROWS);
    }
    sqlite3_bind_int64(st, 2, COMPACT_STEP);
    s = step_done(j, st);
    if (s == FSA_OK && sqlite3_changes(j->db) < COMPACT_STEP)
        c->phase++;
    return s;
}

/* One transaction of steps (the mutex held, no transaction open): up to COMPACT_TXN_MAX rows,
 * fewer when someone waits (at least one step). */
static fsa_status_t compact_txn(fsa_journal_t *j, compact_t *c, uint64_t busy0)
{
    fsa_status_t s = write_begin(j);
    if (s != FSA_OK)
        return s;
    size_t removed0 = c->removed;
    for (int rows = 0; s == FSA_OK && c->phase < 4; rows += COMPACT_STEP) {
        if (rows > 0 && (rows >= COMPACT_TXN_MAX || someone_waits(j, busy0)))
            break;
        s = c->phase == 0 ? compact_done_ops(j, c) : compact_forget(j, c);
    }
    if (s == FSA_OK)
        s = run_cached(j, "COMMIT", NULL);
    if (s != FSA_OK) {
        (void)sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
        c->removed = removed0; /* not committed: not removed */
    }
    return s;
}

fsa_status_t fsa_outbox_compact(fsa_journal_t *j, int64_t audit_ms, size_t *removed)
{
    if (removed != NULL)
        *removed = 0;
    if (j == NULL || audit_ms < 0)
        return FSA_EINVAL;
    compact_t c = {.audit_ms = audit_ms};
    lock_j(j);
    c.now_ms = j->port->wall_now(j->port->ctx).ms;
    uint64_t busy0 = fsa__db_busy_waits();
    fsa_status_t s = j->relaxed ? FSA_ENOMEM : FSA_OK; /* FULL could not be put back */
    while (s == FSA_OK && c.phase < 4) {
        /* The checkpoints stay the drain's meanwhile (db.c). */
        fsa__db_checkpoint_claim(COMPACT_CHECKPOINT_CLAIM_NS);
        sync_relax(j);
        s = compact_txn(j, &c, busy0);
        (void)sync_full_again(j); /* on failure j->relaxed stays: see sync_full_again() */
        if (s != FSA_OK || c.phase == 4)
            break;
        give_way(j, &busy0);
        /* The WAL synced (or checkpointed) outside the mutex, as after each batch of a drain. */
        unlock_j(j);
        flush_wal(j);
        lock_j(j);
    }
    unlock_j(j);
    flush_wal(j);
    if (removed != NULL)
        *removed = c.removed;
    return s;
}

/* The queue's figures in one statement (fsa_outbox_stats). */
const char fsa__jn_stats_sql[] =
    "SELECT"
    /* They run once per push of a drain, and whenever the app or the CLI asks for the status. No
     * count reads every open op: the open ops (states 0 and 1) are every row of the outbox
     * (SQLite counts a table's rows from its b-tree's pages, the smallest of its indexes) less
     * the parked ops and the done ops still kept (states 2-4), counted in outbox_closed.
     * Each count of outbox_closed names it (else SQLite counts them by scanning all of
     * outbox_by_entity) and says state!=0, its WHERE, without which it cannot be used. */
    "(SELECT count(*) FROM outbox)-"
    "(SELECT count(*) FROM outbox INDEXED BY outbox_closed WHERE state!=0 AND state>1),"
    /* In flight: the open ops at or below the mark (the table's rows from j->open_from, ?1, all
     * sent but the parked ones), and those above it that an older journal marked with state 1. */
    "(SELECT count(*) FROM outbox WHERE state IN(0,1) AND seq>=?1 AND seq<=" SENT_UPTO_SQL
    ")+(SELECT count(*) FROM outbox INDEXED BY outbox_closed WHERE state!=0 AND state=1 AND "
    "seq>" SENT_UPTO_SQL "),"
    /* Done ops wait for a compaction: an older journal's, and the applied ops their base has
     * not taken yet (journal_apply.c, keep_until_folded); an applied op otherwise leaves the
     * outbox with its result. */
    "(SELECT count(*) FROM outbox INDEXED BY outbox_closed WHERE state!=0 AND state=2),"
    "(SELECT count(*) FROM conflicts WHERE resolution IS NULL AND outcome='conflict'),"
    "(SELECT count(*) FROM conflicts WHERE resolution IS NULL AND outcome='rejected'),"
    /* The oldest open op, and its seq, which moves j->open_from up (stats_step). */
    "(SELECT coalesce(min(at_ms),0) FROM outbox WHERE seq="
    "(SELECT min(seq) FROM outbox NOT INDEXED WHERE state IN(0,1) AND "
    "seq>=?1))," OUTBOX_LAST_SEQ_SQL ","
    "(SELECT min(seq) FROM outbox NOT INDEXED WHERE state IN(0,1) AND seq>=?1)";

/* Steps the statement of fsa__jn_stats_sql into *out (the caller resets it), from j->open_from,
 * and moves that up to the first open op it finds (past the last seq when none is). */
static fsa_status_t stats_step(fsa_journal_t *j, sqlite3_stmt *st, fsa_outbox_stats_t *out)
{
    sqlite3_bind_int64(st, 1, atomic_load(&j->open_from));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        open_from_raise(j, sqlite3_column_type(st, 7) == SQLITE_NULL
                               ? sqlite3_column_int64(st, 6) + 1
                               : sqlite3_column_int64(st, 7));
        out->pending = sqlite3_column_int64(st, 0);
        out->inflight = sqlite3_column_int64(st, 1);
        out->done = sqlite3_column_int64(st, 2);
        out->conflicts = sqlite3_column_int64(st, 3);
        out->rejected = sqlite3_column_int64(st, 4);
        out->oldest_pending_at_ms = sqlite3_column_int64(st, 5);
        out->last_seq = sqlite3_column_int64(st, 6);
    }
    return rc == SQLITE_ROW ? FSA_OK : fsa__db_status(rc);
}

/* The figures on the reader connection (j->rd, opened here on first use), outside the journal's
 * mutex: counting a backlog of 100,000 ops takes milliseconds that a record made meanwhile would
 * wait for. One snapshot as on the journal's connection (WAL: the last commit before the read). */
static fsa_status_t stats_read(fsa_journal_t *j, fsa_outbox_stats_t *out)
{
    j->port->mutex_lock(j->port->ctx, j->rd_mu);
    fsa_status_t s = FSA_OK;
    if (j->rd == NULL)
        s = fsa__db_open_reader(j->path, &j->rd);
    if (s == FSA_OK && j->rd_stats == NULL &&
        sqlite3_prepare_v3(j->rd, fsa__jn_stats_sql, -1, SQLITE_PREPARE_PERSISTENT, &j->rd_stats,
                           NULL) != SQLITE_OK)
        s = fsa__db_status(sqlite3_extended_errcode(j->rd));
    if (s == FSA_OK) {
        s = stats_step(j, j->rd_stats, out);
        sqlite3_reset(j->rd_stats); /* ends the read: a reader kept open holds back checkpoints */
    }
    j->port->mutex_unlock(j->port->ctx, j->rd_mu);
    return s;
}

fsa_status_t fsa_outbox_stats(fsa_journal_t *j, fsa_outbox_stats_t *out)
{
    if (j == NULL || out == NULL)
        return FSA_EINVAL;
    if (stats_read(j, out) == FSA_OK)
        return FSA_OK;
    /* No reader (it could not be opened, or its read failed): on the journal's connection. */
    memset(out, 0, sizeof *out);
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, fsa__jn_stats_sql, &st);
    if (s == FSA_OK) {
        s = stats_step(j, st, out);
        release(j, st);
    }
    unlock_j(j);
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
    unlock_j(j);
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
                          "SELECT CASE WHEN state=0 AND seq<=" SENT_UPTO_SQL
                          " THEN 1 ELSE state END FROM outbox WHERE " OP_REF_WHERE
                          " UNION ALL SELECT 2 FROM done_ops WHERE op_id=?1 LIMIT 1",
                          &st);
    if (s == FSA_OK) {
        fsa__jn_bind_op_ref(j, st, op_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *state = (fsa_op_state_t)sqlite3_column_int64(st, 0);
        else
            s = rc == SQLITE_DONE ? FSA_ENOTFOUND : fsa__db_status(rc);
        release(j, st);
    }
    unlock_j(j);
    return s;
}
