/* fieldsync: applying the server's per-op results to the outbox, the entities and conflicts. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "port/alloc.h"
#include "port/limits.h"
#include "port/pulse.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/journal_internal.h"

/*
 * A set that will not apply (parked: a conflict or a rejection) is still in the prior of the set
 * recorded right after it on its entity: the local view that one replaced held its values. The
 * resolver compares a prior with the server's values to tell whether someone else changed those
 * fields; against this set's values it said so when nobody had ("the server changed the same
 * fields": server wins), and the device's own later value was lost under its earlier one. So
 * that set's values that are this set's go back to what they were before this set (op: a set).
 * Only the op right after it, when that op is a set (of any later op, what came between could
 * have given the same value, and may apply: taking it back there would hide someone else's change
 * from the resolver). The ops after it are all still waiting: none is answered before it (a
 * batch is answered in seq order, and a set waits for the answers before it on its entity). A
 * later set is reached in turn: when this one is parked too, its own park takes it out of the
 * next. The scan is the entity's waiting ops after it, as the base_version update's (park()).
 * And only when that set was recorded on the base this one was (their base_version equal, now
 * that park() took this one out of the later's): a pull between the two records brought a value
 * of someone else's that the later set's author saw, and taking the prior back past it would make
 * the resolver miss a change back to the older value.
 */
static fsa_status_t priors_without(fsa_journal_t *j, const fsa_op_t *op)
{
    sqlite3_stmt *st, *up;
    fsa_status_t s =
        prep(j,
             "SELECT o.seq,o.prior,a.prior FROM outbox a JOIN outbox o ON o.seq="
             "(SELECT min(seq)FROM outbox WHERE type=a.type AND id=a.id AND state IN(0,1) AND "
             "seq>a.seq)WHERE a.seq=?1 AND o.kind=a.kind AND o.base_version=a.base_version "
             "AND o.prior NOTNULL AND a.prior NOTNULL",
             &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, op->seq);
    int rc = sqlite3_step(st);
    char *now = NULL;
    if (rc == SQLITE_ROW) {
        const char *later = (const char *)sqlite3_column_text(st, 1);
        const char *before = (const char *)sqlite3_column_text(st, 2);
        s = later != NULL && before != NULL ? fsa_model_prior_without(later, op->json, before, &now)
                                            : FSA_ENOMEM;
        if (s == FSA_EINVAL)
            s = FSA_OK; /* a prior that does not parse is left as it is */
        if (s == FSA_OK && now != NULL)
            s = prep(j, "UPDATE outbox SET prior=?2 WHERE seq=?1", &up);
        if (s == FSA_OK && now != NULL) {
            sqlite3_bind_int64(up, 1, sqlite3_column_int64(st, 0));
            fsa__db_bind_text(up, 2, now);
            s = step_done(j, up);
        }
    } else if (rc != SQLITE_DONE) {
        s = fsa__db_status(rc);
    }
    fsa_model_free(now);
    release(j, st);
    return s;
}

static fsa_status_t park(fsa_journal_t *j, const fsa_op_t *op, fsa_result_status_t outcome,
                         const char *code, const char *reason, int64_t server_version,
                         const char *server_fields, int64_t now_ms)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "INSERT INTO conflicts(seq,op_id,outcome,code,reason,"
                          "server_version,server_fields,created_ms) "
                          "VALUES(?1,?2,?3,?4,?5,?6,?7,?8) ON CONFLICT(seq) DO UPDATE SET "
                          "outcome=excluded.outcome,code=excluded.code,"
                          "reason=excluded.reason,server_version=excluded.server_version,"
                          "server_fields=excluded.server_fields,resolution=NULL,"
                          "resolved_ms=NULL",
                          &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, op->seq);
    fsa__db_bind_text(st, 2, op->op_id);
    fsa__db_bind_text(st, 3, fsa_conflict_outcome_name(outcome));
    fsa__db_bind_text(st, 4, code != NULL ? code : "");
    fsa__db_bind_text(st, 5, reason != NULL ? reason : "");
    if (server_version > 0)
        sqlite3_bind_int64(st, 6, server_version);
    if (server_fields != NULL)
        fsa__db_bind_text(st, 7, server_fields);
    sqlite3_bind_int64(st, 8, now_ms);
    s = step_done(j, st);
    if (s != FSA_OK)
        return s;
    /* The later sets on the entity counted this op in their base_version, as if it would apply
     * (journal_record.c); it did not, so each expects one version less. Without this, a change
     * by someone else could take the version this op would have had, and the set would be
     * applied over it, silently. With it, the set applies only if nobody else changed the entity;
     * else it is a conflict, for the resolver. They are still waiting: a set is not sent before
     * the answers of the ops before it on its entity (set_waits, journal_outbox.c). */
    s = prep(j,
             "UPDATE outbox SET base_version=base_version-1 WHERE type=?1 AND id=?2 "
             "AND state IN(0,1) AND seq>?3 AND kind=?4",
             &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)op->type);
    fsa__db_bind_text(st, 2, op->id);
    sqlite3_bind_int64(st, 3, op->seq);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)FSA_OP_SET);
    s = step_done(j, st);
    if (s == FSA_OK && op->kind == FSA_OP_SET && op->json != NULL)
        s = priors_without(j, op);
    return s;
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
    fsa_model_entity_t *m; /* the base's parsed tree between results (NULL: parse each time) */
    /* A run of applied results replayed onto m's tree and not printed yet (run_n > 0:
     * ent_run_add): e.base_fields is still the text before the run, whose version was run_v0,
     * and e.base_version is the run's last result's. The run's ops and versions are kept should
     * it have to be replayed one by one (ent_run_again). */
    struct ent_run_item {
        const fsa_op_t *op;
        int64_t version;
    } * run;
    size_t run_n, run_cap;
    int64_t run_v0;
} ent_slot_t;

typedef struct ent_cache {
    ent_slot_t slot[ENT_CACHE_MAX];
    size_t n;
    fsa__jn_change_rows_t changes; /* the change rows of the results applied, not yet appended */
} ent_cache_t;

/*
 * A drain's results on one entity are replayed onto its base without printing the base after
 * each (fsa_model_entity_replay), and printed once, when the run ends (ent_run_end): before the
 * entity is stored, and before a result that reads the base or its version (a parked op, an
 * applied one without a version). Printing the base was half of the replay's cost when each
 * result printed it (docs/performance.md, "Drain").
 *
 * A run decides as one by one would: each result moves the base only when its version is the
 * base's next, and the entity's limits, which one by one checked on each result's text, hold for
 * every text in between as long as the model vouches for them from the run's bound
 * (fsa_model_entity_replay). When an op does not apply onto the base here (the agent's model and
 * the server's differ), when the model cannot vouch for the limits (an entity near them), or when
 * the print fails, the run is replayed one by one from its start (ent_run_again), every result
 * since it started included, which leaves the base where one by one leaves it.
 */

/* One result replayed onto the slot's base and printed, as each result was before runs: the
 * base moves only to the very next version, and stays where it is when the op does not apply. */
static fsa_status_t replay_one(ent_slot_t *sl, const fsa_op_t *op, int64_t version)
{
    entity_t *e = &sl->e;
    if (version != e->base_version + 1)
        return FSA_OK;
    char *next = NULL;
    fsa_status_t as = fsa_model_entity_apply_strict(sl->m, op, e->base_fields, e->base_version,
                                                    FSA_APPLY_REPLAY, &next, NULL);
    if (as == FSA_OK) {
        fsa_free(e->base_fields);
        e->base_fields = next;
        e->base_version = version;
    }
    return as == FSA_ENOMEM ? as : FSA_OK;
}

/* The slot's run replayed one result at a time from the base before it; the run ends. */
static fsa_status_t ent_run_again(ent_slot_t *sl)
{
    size_t n = sl->run_n;
    sl->run_n = 0;
    sl->e.base_version = sl->run_v0;
    fsa_status_t s = FSA_OK;
    for (size_t i = 0; s == FSA_OK && i < n; i++)
        s = replay_one(sl, sl->run[i].op, sl->run[i].version);
    return s;
}

/* Ends the slot's run, if any: the base becomes its printed text, or, should the print fail,
 * what replaying it one by one leaves. */
static fsa_status_t ent_run_end(ent_slot_t *sl)
{
    if (sl->run_n == 0)
        return FSA_OK;
    char *text = NULL;
    fsa_status_t s = fsa_model_entity_print(sl->m, sl->type, &text);
    if (s == FSA_OK) {
        sl->run_n = 0;
        fsa_free(sl->e.base_fields);
        sl->e.base_fields = text;
    } else if (s != FSA_ENOMEM) {
        s = ent_run_again(sl);
    }
    return s;
}

/* The applied result of op, at version, onto the slot's base: added to its run. The caller keeps
 * op where it is until the run ends (the slot's flush, at the latest). */
static fsa_status_t ent_run_add(ent_slot_t *sl, const fsa_op_t *op, int64_t version)
{
    entity_t *e = &sl->e;
    bool next = version == e->base_version + 1;
    if (!next && sl->run_n == 0)
        return FSA_OK; /* not the base's next: one by one leaves it too */
    if (sl->run_n == sl->run_cap) {
        size_t cap = sl->run_cap > 0 ? 2 * sl->run_cap : 16;
        struct ent_run_item *more = fsa_realloc(sl->run, cap * sizeof *more);
        if (more == NULL)
            return FSA_ENOMEM;
        sl->run = more;
        sl->run_cap = cap;
    }
    if (sl->run_n == 0)
        sl->run_v0 = e->base_version;
    sl->run[sl->run_n++] = (struct ent_run_item){op, version};
    if (!next)
        return FSA_OK; /* left alone, and kept: one by one, the base may be elsewhere by then */
    fsa_status_t as =
        fsa_model_entity_replay(sl->m, op, e->base_fields, e->base_version, FSA_APPLY_REPLAY, NULL);
    if (as == FSA_OK) {
        e->base_version = version;
        return FSA_OK;
    }
    /* It does not apply here, or the limits need its text printed: one by one. */
    return as == FSA_ENOMEM ? as : ent_run_again(sl);
}

/* Stores every cached entity (a view made from the base where it had none) when s is FSA_OK,
 * and empties the cache; after a failure nothing more is written: SQLite may have rolled the
 * transaction back already (out of memory in a statement), and a write now would commit on its
 * own. Returns the final status. */
static fsa_status_t ent_flush(fsa_journal_t *j, ent_cache_t *c, fsa_status_t s)
{
    if (s == FSA_OK)
        s = fsa__jn_change_flush(j, &c->changes);
    c->changes.n = 0;
    for (size_t i = 0; i < c->n; i++) {
        entity_t *e = &c->slot[i].e;
        if (s == FSA_OK)
            s = ent_run_end(&c->slot[i]);
        if (s == FSA_OK && e->local_fields == NULL && e->base_fields != NULL) {
            e->local_fields = fsa_strdup(e->base_fields);
            if (e->local_fields == NULL)
                s = FSA_ENOMEM;
        }
        if (s == FSA_OK && (e->local_fields != NULL || e->base_fields != NULL))
            s = entity_store(j, c->slot[i].type, c->slot[i].id, e);
        entity_clear(e);
        fsa_model_entity_free(c->slot[i].m);
        fsa_free(c->slot[i].run);
        memset(&c->slot[i], 0, sizeof c->slot[i]);
    }
    c->n = 0;
    return s;
}

/* The cached entity (type, id), loaded on first use. */
static fsa_status_t ent_get(fsa_journal_t *j, ent_cache_t *c, fsa_type_t type, const char *id,
                            ent_slot_t **out)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->slot[i].type == type && strcmp(c->slot[i].id, id) == 0) {
            *out = &c->slot[i];
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
    sl->m = fsa_model_entity_new();
    if (sl->m == NULL) {
        entity_clear(&sl->e);
        return FSA_ENOMEM;
    }
    sl->type = type;
    snprintf(sl->id, sizeof sl->id, "%s", id);
    c->n++;
    *out = sl;
    return FSA_OK;
}

/*
 * An applied op leaves the outbox in the transaction that applies its result: its op id goes to
 * done_ops (which answers "was this op done" for the audit period: fsa_outbox_op_state) and its
 * row is deleted. Only conflicted and rejected ops keep a row, with their state, for the
 * conflicts that reference them, and the applied ops that their base did not take
 * (keep_until_folded, below). Before, a done op was marked (an UPDATE of its state column,
 * which moved its entry in two indexes) and moved by the cycle's compaction (a copy and a
 * delete): each op's rows were written three times instead of once. Op ids are time-ordered
 * (UUIDv7, version 8 since schema 6), so a batch's ids land on the last pages of done_ops (and of
 * the op_id index that schema 6 dropped); with the random ids of older journals each op dirtied a
 * page of both, which is why this was not done before (docs/performance.md, "Drain").
 *
 * Both statements select the open ops (state 0 or 1) with after <= seq <= upto; ?3 is the time
 * the ops were done.
 */
#define DONE_OPS_COPY_SQL                                                                          \
    "INSERT OR IGNORE INTO done_ops(op_id,seq,done_ms) SELECT op_id,seq,?3 "                       \
    "FROM outbox NOT INDEXED WHERE seq BETWEEN ?1 AND ?2 AND state IN(0,1)"
/* NOT INDEXED: the rows are found by their seq (the rowid) in the table itself. Through an index
 * that the statement changes (schema 4's outbox_open did), SQLite would collect the rows first and
 * seek each again. */
#define DONE_OPS_DELETE_SQL                                                                        \
    "DELETE FROM outbox NOT INDEXED WHERE seq BETWEEN ?1 AND ?2 AND state IN(0,1)"

/* The open ops with after <= seq <= upto leave the outbox as done (above); *rows (may be NULL)
 * is set to how many did. */
static fsa_status_t done_leave(fsa_journal_t *j, int64_t after, int64_t upto, int64_t now_ms,
                               int64_t *rows)
{
    fsa_status_t s = run_cached(j, OUTBOX_NOTE_TOP_SQL, NULL);
    if (s == FSA_OK)
        s = step_range(j, DONE_OPS_COPY_SQL, after, upto, now_ms, NULL);
    if (s == FSA_OK)
        s = step_range(j, DONE_OPS_DELETE_SQL, after, upto, now_ms, rows);
    return s;
}

/* Ends an open op's life in the outbox: an applied one leaves it (done_leave), a conflicted or
 * rejected one keeps its row with its state, for good: nothing may set a parked op open again (a
 * handle's reads skip the closed rows below its open_from, journal_internal.h; a retry records a
 * new op). FSA_OK with *was_open false when it was not open any more (answered already: nothing
 * to do). */
static fsa_status_t close_op(fsa_journal_t *j, const fsa_op_t *op, fsa_op_state_t to,
                             int64_t now_ms, bool *was_open)
{
    *was_open = false;
    if (to == FSA_OPSTATE_DONE) {
        int64_t rows = 0;
        fsa_status_t s = done_leave(j, op->seq, op->seq, now_ms, &rows);
        *was_open = s == FSA_OK && rows == 1;
        return s;
    }
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "UPDATE outbox SET state=?2,result_version=0,done_ms=?3 "
                          "WHERE seq=?1 AND state IN(0,1)",
                          &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, op->seq);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)to);
    sqlite3_bind_int64(st, 3, now_ms);
    s = step_done(j, st);
    *was_open = s == FSA_OK && sqlite3_changes(j->db) == 1;
    return s;
}

/*
 * An applied op that its base did not take (its version is not the base's next: others changed the
 * entity in between; or it did not apply on the base here) moves no base: its effect lives only
 * in the local view until a fold brings the server's state at or past its version. A rebuild of the
 * view before then (an op after it parked) replays the base and the open ops only, and would lose
 * it: an accepted action that looks undone, and a set recorded on that view judged against a stale
 * prior. So such an op stays in the outbox, closed as done (state 2) with its result_version:
 * fsa__jn_rebuild_local replays it while the base is below that version, and a compaction removes
 * it once the base has caught up (or the entity is gone) and not before (fsa_outbox_compact: a
 * cycle may push again after its pull). It left as done ops do (done_leave), and comes back here
 * with its seq, in the same transaction: its op id is in done_ops or in the outbox, never both.
 */
static fsa_status_t keep_until_folded(fsa_journal_t *j, const fsa_op_t *op, int64_t version,
                                      int64_t now_ms)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "INSERT INTO outbox(seq,op_id,at_ms,kind,type,id,grp,field,base_version,"
                          "by_n,from_s,to_s,akey,max_len,payload,state,result_version,done_ms) "
                          "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,2,?16,?17)",
                          &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, op->seq);
    fsa__jn_op_bind(st, 2, op);
    sqlite3_bind_int64(st, 16, version);
    sqlite3_bind_int64(st, 17, now_ms);
    s = step_done(j, st);
    if (s == FSA_OK)
        s = prep(j, "DELETE FROM done_ops WHERE op_id=?1", &st);
    if (s == FSA_OK) {
        fsa__db_bind_text(st, 1, op->op_id);
        s = step_done(j, st);
    }
    return s;
}

/* Applies one result for op (the outbox row as read) inside the open transaction, onto its
 * entity in cache c. run: an applied op joins its entity's run (op stays where it is until the
 * cache is flushed). *parked is set when the op was parked: its entity's local view must then be
 * rebuilt. */
static fsa_status_t apply_result_locked(fsa_journal_t *j, ent_cache_t *c, const fsa_op_t *op,
                                        const fsa_op_result_t *r, int64_t now_ms, bool closed,
                                        bool run, bool *parked)
{
    *parked = false;
    fsa_result_status_t outcome = fsa_op_result_outcome(r);
    bool applied = fsa_op_result_applied(r);
    fsa_op_state_t to = applied                          ? FSA_OPSTATE_DONE
                        : outcome == FSA_RESULT_CONFLICT ? FSA_OPSTATE_CONFLICT
                                                         : FSA_OPSTATE_REJECTED;
    bool was_open = closed;
    fsa_status_t s = FSA_OK;
    if (!closed) /* else the caller closed it, with others (close_run) */
        s = close_op(j, op, to, now_ms, &was_open);
    if (s != FSA_OK || !was_open)
        return s; /* answered already: left alone */
    ent_slot_t *slot = NULL;
    s = ent_get(j, c, op->type, op->id, &slot);
    if (s != FSA_OK)
        return s;
    entity_t *e = &slot->e;
    /* The base follows the server only when an applied op is the very next change after it: if
     * the version jumped, others changed the entity in between, and labelling our base with that
     * version would hide their changes (and let a stale set through). The pull that follows
     * every push folds the server's state then. A run of results on one entity is replayed onto
     * the tree the one before left, and printed once (above). */
    if (applied && run && r->version > 0)
        s = ent_run_add(slot, op, r->version);
    else
        s = ent_run_end(slot); /* what follows reads the base */
    if (s != FSA_OK)
        return s;
    if (applied) {
        if (!run)
            s = replay_one(slot, op, r->version);
        /* Not taken by the base (its version is not the base's next, or it did not apply here):
         * kept until folded. A run decides as one by one does (ent_run_add). */
        if (s == FSA_OK && r->version > e->base_version)
            s = keep_until_folded(j, op, r->version, now_ms);
    } else if (outcome == FSA_RESULT_CONFLICT) {
        /* The server's state gets the checks of a pulled one (fsa_journal_fold). One past them
         * would be stored as the base, whose pending ops the model then could not apply: the
         * conflict is kept with the state unknown instead (a person decides), the base as it
         * was. */
        const char *cur = r->current_fields;
        int64_t cur_version = r->current_version;
        char reason[FSA_ID_BYTES + 192];
        if (cur != NULL && fsa_model_json_check(cur, FSA_LIMIT_FIELDS_BYTES) != FSA_OK) {
            snprintf(reason, sizeof reason,
                     "%s %s on the server is at version %" PRId64 ", in a state past this "
                     "device's bounds; this %s expected otherwise",
                     fsa_type_name(op->type), op->id, cur_version, fsa_op_kind_name(op->kind));
            cur = NULL;
            cur_version = 0;
        } else {
            snprintf(reason, sizeof reason,
                     "%s %s on the server is at version %" PRId64 "; this %s expected otherwise",
                     fsa_type_name(op->type), op->id, cur_version, fsa_op_kind_name(op->kind));
        }
        s = park(j, op, FSA_RESULT_CONFLICT, "conflict", reason, cur_version, cur, now_ms);
        /* The server's current state is the best base there is. */
        if (s == FSA_OK && cur != NULL && cur_version >= e->base_version) {
            char *copy = fsa_strdup(cur);
            if (copy == NULL) {
                s = FSA_ENOMEM;
            } else {
                fsa_free(e->base_fields);
                e->base_fields = copy;
                e->base_version = cur_version;
            }
        }
    } else {
        s = park(j, op, FSA_RESULT_REJECTED, r->code, r->message, 0, NULL, now_ms);
    }
    /* An applied op moved from the pending ops into the base (or, when the base did not take
     * it, into the ops kept until folded), so the local view is what it was: only a parked op
     * changes it. Skipping the rebuild keeps draining a long
     * backlog on one entity linear instead of quadratic. */
    if (s == FSA_OK && !applied)
        *parked = true;
    if (s == FSA_OK)
        s = fsa__jn_change_add(j, &c->changes, op->type, op->id,
                               *parked ? e->base_version
                                       : (r->version > 0 ? r->version : e->base_version),
                               *parked ? FSA_CHANGE_HELD : FSA_CHANGE_SYNCED, op->op_id);
    return s;
}

/*
 * Closes the run of applied ops that starts at ops[i] with three statements instead of two per op
 * (done_leave). *closed_to is set past the run, or
 * left at i when the run is shorter than 2 or not all of it is open any more (then each op is
 * closed on its own, which tells which). A batch holds the open ops of a seq range, and an open op
 * never gets a seq below one recorded before it, so when the open ops in the run's seq range are
 * as many as the run, they are the run.
 */
static fsa_status_t close_run(fsa_journal_t *j, const fsa_op_t *ops, const fsa_op_result_t *res,
                              size_t n, size_t i, int64_t now_ms, size_t *closed_to)
{
    size_t k = i;
    while (k < n && fsa_op_result_applied(&res[k]) && (k == i || ops[k].seq > ops[k - 1].seq))
        k++;
    if (k - i < 2)
        return FSA_OK;
    sqlite3_stmt *st;
    fsa_status_t s =
        prep(j, "SELECT count(*) FROM outbox WHERE seq BETWEEN ?1 AND ?2 AND state IN(0,1)", &st);
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
    s = done_leave(j, ops[i].seq, ops[k - 1].seq, now_ms, NULL);
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

/* fsa_outbox_apply_results: each op is read by its result's op_id (an unknown one is ignored),
 * and its result applied on its own (no run: the op read is gone by the next result). */
static fsa_status_t apply_results(fsa_journal_t *j, const fsa_op_result_t *results, size_t n)
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
    for (size_t i = 0; s == FSA_OK && i < n; i++) {
        bool parked = false;
        fsa_op_t op;
        fsa_op_state_t state;
        s = find_locked(j, results[i].op_id, &op, &state);
        if (s == FSA_ENOTFOUND) {
            s = FSA_OK; /* not ours, or compacted long ago: nothing to do */
            continue;
        }
        if (s == FSA_OK && (state == FSA_OPSTATE_PENDING || state == FSA_OPSTATE_INFLIGHT))
            s = apply_result_locked(j, c, &op, &results[i], now_ms, false, false, &parked);
        if (s == FSA_OK && parked)
            touch_entity(t, &nt, &op);
        fsa_op_clear(&op);
    }
    if (c != NULL)
        s = ent_flush(j, c, s);
    for (size_t k = 0; s == FSA_OK && k < nt; k++)
        s = rebuild_local(j, t[k].type, t[k].id);
    fsa_free(c);
    fsa_free(t);
    return finish(j, s);
}

fsa_status_t fsa_outbox_apply_results(fsa_journal_t *j, const fsa_op_result_t *results, size_t n)
{
    if (j == NULL || (results == NULL && n > 0))
        return FSA_EINVAL;
    return apply_results(j, results, n);
}

/*
 * Applying a batch's results while the app records (fsa_outbox_apply_batch). The sync thread and
 * the app's threads share the journal's connection, and the lock manager's connection and other
 * processes share its write lock, so a check-in recorded during a drain waits for whatever write
 * transaction of the drain is open. So that it waits little:
 *   - The results go in several transactions: one ends after any run of APPLY_RUN_MAX results once
 *     a thread of this process waits (for the mutex: j->waiting; for the write lock:
 *     fsa__db_busy_waits), and after APPLY_CHUNK_MAX results in any case (a waiter in another
 *     process is not seen, and waits at most that long). APPLY_CHUNK_MAX is the largest batch:
 *     when no one waits, a batch's results are one transaction. Each commit writes the pages it
 *     dirtied to the WAL, and most of them are the same few hot pages whatever the number of
 *     results (the last pages of done_ops, of its time index and of the change log, the entity,
 *     the outbox's head): a 500-op batch on one entity in transactions of 128 wrote 0.26 WAL
 *     frames per result and took 6.6-6.9 us of CPU per result; in one, 0.10 and 5.2-5.4 us
 *     (docs/performance.md, "Drain"). The price is the wait of a writer in another process
 *     (a check-in of an app while a separate daemon drains): up to a batch's results instead of
 *     128 when the batches are that large (the engine's default batch is 100 ops).
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
#define APPLY_CHUNK_MAX FSA_LIMIT_BATCH_OPS
#define APPLY_YIELD_TURNS 8
#define APPLY_YIELD_BUSY_NS (2 * FSA_NS_PER_MS)
#define APPLY_CHECKPOINT_CLAIM_NS (5 * FSA_NS_PER_S)

/* synchronous=NORMAL for a transaction of results (under the mutex, outside a transaction). Set
 * before trying, so that FULL is always put back (a failure here leaves FULL: slower, not wrong).
 */
void fsa__jn_sync_relax(fsa_journal_t *j)
{
    if (!j->sync_full)
        return;
    j->relaxed = true;
    (void)sqlite3_exec(j->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
}

/* synchronous=FULL again (journal_internal.h). */
fsa_status_t fsa__jn_sync_full_again(fsa_journal_t *j)
{
    if (!j->relaxed)
        return FSA_OK;
    int rc = sqlite3_exec(j->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        j->relaxed = false;
    return fsa__db_status(rc);
}

/* True when a thread of this process waits for the journal's mutex or for a write lock. */
bool fsa__jn_someone_waits(const fsa_journal_t *j, uint64_t busy0)
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
    fsa_status_t s = write_begin(j);
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
        s = apply_result_locked(j, c, &ops[k], &res[k], now_ms, k < closed_to, true, &parked);
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
void fsa__jn_give_way(fsa_journal_t *j, uint64_t *busy0)
{
    for (int turn = 0; turn < APPLY_YIELD_TURNS && atomic_load(&j->waiting) > 0; turn++) {
        /* The first waiter to get the mutex signals turn (lock_j); a spurious or sim-port wake-up
         * only ends a turn early. */
        j->yielding = true;
        fsa__jn_wait_turn(j);
        j->yielding = false;
        end_leftover(j);
    }
    if (fsa__db_busy_waits() == *busy0)
        return;
    /* Our commit woke it (the pulse); its commit wakes us, or the bound. Real time: the writer
     * is a real thread. */
    fsa_port_t *real = fsa_port_posix();
    uint64_t seen = fsa_pulse_count();
    unlock_j(j);
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
    unlock_j(j);
    flush_wal(j);
    return s;
}

void fsa__jn_flush_wal(fsa_journal_t *j)
{
    /* Outside the mutex, on a connection of its own (taken out of j while in use, should another
     * thread apply results or compact at the same time). */
    sqlite3 *own = atomic_exchange(&j->ckpt, NULL);
    fsa__db_flush(j->path, &own);
    sqlite3_close_v2(atomic_exchange(&j->ckpt, own));
}
