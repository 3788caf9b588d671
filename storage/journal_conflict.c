/* fieldsync: conflicts and rejections: reading, resolving, the resolver's verdicts. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/journal_internal.h"

/* ---- the names in the conflicts table: one table each, both ways ---- */

/* Names as arrays of characters: a table of pointers costs the device binary a relocation (24 bytes
 * on aarch64) for each. "" marks a value without a name (the outcomes applied and duplicate), but
 * for decisions and resolutions the value 0 (none) is named "" (NONE_NAMED). One width for all. */
#define NAME_BYTES sizeof "server-wins"
static const char outcome_names[][NAME_BYTES] = {[FSA_RESULT_APPLIED] = "",
                                                 [FSA_RESULT_DUPLICATE] = "",
                                                 [FSA_RESULT_CONFLICT] = "conflict",
                                                 [FSA_RESULT_REJECTED] = "rejected"};
static const char decision_names[][NAME_BYTES] = {[FSA_DECISION_NONE] = "",
                                                  [FSA_DECISION_PARK] = "park",
                                                  [FSA_DECISION_SERVER_WINS] = "server-wins"};
static const char resolution_names[][NAME_BYTES] = {[FSA_RESOLVED_NONE] = "",
                                                    [FSA_RESOLVED_SERVER] = "server",
                                                    [FSA_RESOLVED_LOCAL] = "local",
                                                    [FSA_RESOLVED_REBASED] = "rebased",
                                                    [FSA_RESOLVED_CONVERGED] = "converged"};
_Static_assert(FSA_DECISION_NONE == 0 && FSA_RESOLVED_NONE == 0, "none is value 0");

#define NAMES(t) (t), sizeof(t) / sizeof(t)[0]
#define NONE_NAMED true

/* names[v] of a table of n names, or NULL when v has none. */
static const char *name_at(const char (*names)[NAME_BYTES], size_t n, bool none_named, size_t v)
{
    if (v >= n)
        return NULL;
    return names[v][0] != '\0' || (none_named && v == 0) ? names[v] : NULL;
}

static const char *name_of(const char (*names)[NAME_BYTES], size_t n, bool none_named, int v)
{
    const char *name = v >= 0 ? name_at(names, n, none_named, (size_t)v) : NULL;
    return name != NULL ? name : "?";
}

static fsa_status_t parse_name(const char (*names)[NAME_BYTES], size_t n, bool none_named,
                               const char *s, int *out)
{
    for (size_t i = 0; s != NULL && i < n; i++) {
        const char *name = name_at(names, n, none_named, i);
        if (name != NULL && strcmp(name, s) == 0) {
            *out = (int)i;
            return FSA_OK;
        }
    }
    return FSA_EINVAL;
}

const char *fsa_conflict_outcome_name(fsa_result_status_t o)
{
    return name_of(NAMES(outcome_names), false, (int)o);
}

fsa_status_t fsa_conflict_outcome_parse(const char *s, fsa_result_status_t *out)
{
    int v = 0;
    fsa_status_t st = parse_name(NAMES(outcome_names), false, s, &v);
    if (st == FSA_OK && out != NULL)
        *out = (fsa_result_status_t)v;
    return out != NULL ? st : FSA_EINVAL;
}

const char *fsa_conflict_decision_name(fsa_conflict_decision_t d)
{
    return name_of(NAMES(decision_names), NONE_NAMED, (int)d);
}

fsa_status_t fsa_conflict_decision_parse(const char *s, fsa_conflict_decision_t *out)
{
    int v = 0;
    fsa_status_t st = parse_name(NAMES(decision_names), NONE_NAMED, s, &v);
    if (st == FSA_OK && out != NULL)
        *out = (fsa_conflict_decision_t)v;
    return out != NULL ? st : FSA_EINVAL;
}

const char *fsa_conflict_resolution_name(fsa_conflict_resolution_t r)
{
    return name_of(NAMES(resolution_names), NONE_NAMED, (int)r);
}

fsa_status_t fsa_conflict_resolution_parse(const char *s, fsa_conflict_resolution_t *out)
{
    int v = 0;
    fsa_status_t st = parse_name(NAMES(resolution_names), NONE_NAMED, s, &v);
    if (st == FSA_OK && out != NULL)
        *out = (fsa_conflict_resolution_t)v;
    return out != NULL ? st : FSA_EINVAL;
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
    "SELECT o.*,c.outcome,c.code,c.reason,c.server_version,c.server_fields,c.created_ms,"          \
    "coalesce(c.resolution,''),c.decision FROM conflicts c JOIN outbox o ON o.seq=c.seq "

/* Fills *c from a CONFLICT_SELECT row; on failure c is cleared. A name the tables above do not
 * know (a journal written by something else) is FSA_ECORRUPT. */
static fsa_status_t conflict_from_row(sqlite3_stmt *st, fsa_conflict_t *c)
{
    memset(c, 0, sizeof *c);
    fsa_status_t s = op_from_row(st, &c->op, NULL);
    char name[16];
    copy_col(name, sizeof name, st, OP_NCOLS);
    if (s == FSA_OK && fsa_conflict_outcome_parse(name, &c->outcome) != FSA_OK)
        s = FSA_ECORRUPT;
    copy_col(c->code, sizeof c->code, st, OP_NCOLS + 1);
    copy_col(c->reason, sizeof c->reason, st, OP_NCOLS + 2);
    c->server_version = sqlite3_column_int64(st, OP_NCOLS + 3);
    fsa_status_t ds = dup_col(st, OP_NCOLS + 4, &c->server_fields);
    c->created_ms = sqlite3_column_int64(st, OP_NCOLS + 5);
    copy_col(name, sizeof name, st, OP_NCOLS + 6);
    if (s == FSA_OK && fsa_conflict_resolution_parse(name, &c->resolution) != FSA_OK)
        s = FSA_ECORRUPT;
    if (ds == FSA_OK)
        ds = dup_col(st, OP_COL_PRIOR, &c->prior_fields);
    copy_col(name, sizeof name, st, OP_NCOLS + 7);
    if (s == FSA_OK && fsa_conflict_decision_parse(name, &c->decision) != FSA_OK)
        s = FSA_ECORRUPT;
    if (s == FSA_OK)
        s = ds; /* not a conflict without the server's state */
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
        sqlite3_bind_int64(st, 1, all ? 1 : 0);
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
    unlock_j(j);
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
                          "SELECT " OP_COLUMNS " FROM outbox WHERE grp=?1 AND seq IN "
                          "(SELECT seq FROM conflicts WHERE resolution IS NULL) ORDER BY seq",
                          &st);
    if (s != FSA_OK)
        return s;
    fsa__db_bind_text(st, 1, op->group);
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

/* The server's state that op's conflict came with (NULL: none, a rejection), into *fields. */
static fsa_status_t conflict_server_fields(fsa_journal_t *j, const fsa_op_t *op, char **fields)
{
    *fields = NULL;
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, "SELECT server_fields FROM conflicts WHERE seq=?1", &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, op->seq);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        s = dup_col(st, 0, fields);
    else if (rc != SQLITE_DONE)
        s = fsa__db_status(rc);
    release(j, st);
    return s;
}

/*
 * True in *yes when the state known already has what op meant: a transition whose target is the
 * status, a create of an entity that exists. Recording such an op again could only fail (or, for
 * a group, fail the whole group), or worse, so it is left out. For the engine's rebase (on_server)
 * a transition is judged on the server's state its conflict came with, which the resolver judged
 * it converged on: judged on the local view instead, a later op of this device that had moved the
 * status on (a reopen after a resolve) made it "not satisfied", and the converged transition was
 * sent again from there, undoing that later op. A person (not on_server) decides on the view
 * they see.
 */
static fsa_status_t already_satisfied(fsa_journal_t *j, const fsa_op_t *op, bool on_server,
                                      bool *yes)
{
    *yes = false;
    if (op->kind != FSA_OP_TRANSITION && op->kind != FSA_OP_CREATE)
        return FSA_OK;
    char *server = NULL;
    fsa_status_t s = FSA_OK;
    if (on_server && op->kind == FSA_OP_TRANSITION)
        s = conflict_server_fields(j, op, &server);
    if (s != FSA_OK)
        return s;
    entity_t e = {0};
    if (server == NULL)
        s = entity_load(j, op->type, op->id, &e);
    const char *fields = server != NULL ? server : e.exists ? e.local_fields : NULL;
    if (s == FSA_OK && op->kind == FSA_OP_CREATE) {
        *yes = e.exists;
    } else if (s == FSA_OK && fields != NULL) {
        char now[FSA_STATUS_BYTES];
        s = fsa_model_get_status(fields, op->type, now);
        *yes = s == FSA_OK && strcmp(now, op->to) == 0;
        if (s != FSA_ENOMEM)
            s = FSA_OK; /* no status: not satisfied, and the record says why */
    }
    fsa_free(server);
    entity_clear(&e);
    return s;
}

/* The open conflict of op_id: its group's members (or the op alone) into members[0 .. *n - 1].
 * FSA_ENOTFOUND when op_id is not in conflict or rejected. */
static fsa_status_t conflict_group(fsa_journal_t *j, const char *op_id, fsa_op_t *members,
                                   size_t *n)
{
    fsa_op_t op;
    fsa_op_state_t state;
    fsa_status_t s = find_locked(j, op_id, &op, &state);
    if (s == FSA_OK && state != FSA_OPSTATE_CONFLICT && state != FSA_OPSTATE_REJECTED)
        s = FSA_ENOTFOUND;
    if (s == FSA_OK)
        s = conflict_members(j, &op, members, n);
    fsa_op_clear(&op);
    return s;
}

/* Each member's conflict row gets its resolution; taking the server's state logs the change of
 * the local view now (the op is gone from it); taking ours is told by the op recorded again. */
/* The change row of a conflict member m, carrying its entity's server version (0 would say "never
 * on the server"). One load per member: deciding and resolving are per conflict, never a hot
 * path. */
static fsa_status_t log_member(fsa_journal_t *j, const fsa_op_t *m, fsa_change_reason_t why)
{
    entity_t e;
    fsa_status_t s = entity_load(j, m->type, m->id, &e);
    if (s == FSA_OK)
        s = log_change(j, m->type, m->id, e.base_version, why, m->op_id);
    entity_clear(&e);
    return s;
}

static fsa_status_t mark_resolved(fsa_journal_t *j, const fsa_op_t *members, size_t n,
                                  bool take_local, fsa_conflict_resolution_t resolution)
{
    fsa_status_t s = FSA_OK;
    int64_t now_ms = j->port->wall_now(j->port->ctx).ms;
    for (size_t i = 0; s == FSA_OK && i < n; i++) {
        sqlite3_stmt *st;
        s = prep(j,
                 "UPDATE conflicts SET resolution=?2,resolved_ms=?3 "
                 "WHERE seq=?1 AND resolution IS NULL",
                 &st);
        if (s != FSA_OK)
            break;
        sqlite3_bind_int64(st, 1, members[i].seq);
        fsa__db_bind_text(st, 2, fsa_conflict_resolution_name(resolution));
        sqlite3_bind_int64(st, 3, now_ms);
        s = step_done(j, st);
        if (s == FSA_OK && sqlite3_changes(j->db) == 0)
            s = FSA_ENOTFOUND;
        if (s == FSA_OK && !take_local)
            s = log_member(j, &members[i],
                           resolution == FSA_RESOLVED_CONVERGED ? FSA_CHANGE_SYNCED
                                                                : FSA_CHANGE_RESOLVED);
    }
    return s;
}

/* Records op again (a copy made for it) as the resolve's *n-th new op; rec gets the first. A
 * person's creates may make a group grow: never past FSA_JOURNAL_GROUP_MAX (a batch takes a group
 * whole, and a conflict's group is read whole). */
static fsa_status_t again_one(fsa_journal_t *j, fsa_op_t *op, fsa_wall_t at, const char *group,
                              fsa_conflict_resolution_t resolution, fsa_rec_t *rec, size_t *n)
{
    if (*n == FSA_JOURNAL_GROUP_MAX) {
        rec_error(rec, "taken so, the group would pass %d ops", FSA_JOURNAL_GROUP_MAX);
        return FSA_ETOOLARGE;
    }
    fsa_status_t s = record_one_locked(
        j, op, at, group,
        resolution == FSA_RESOLVED_REBASED ? FSA_CHANGE_REBASED : FSA_CHANGE_RESOLVED, rec);
    if (s == FSA_OK && *n == 0 && rec != NULL) {
        memcpy(rec->op_id, op->op_id, sizeof rec->op_id);
        rec->seq = op->seq;
    }
    *n += s == FSA_OK;
    return s;
}

/*
 * A person took their create c of an entity the server has. Left out as "already satisfied", what
 * they chose was dropped without a word. Their status, when it is not the server's, goes as a
 * transition from it (only a transition changes a status; one the status machine does not allow
 * fails the resolve, which says why), then their fields as a set over the server's state: in this
 * order, a set that moves the entity out of a device's scope (PROTOCOL.md section 4) cannot
 * forbid the transition after it.
 */
static fsa_status_t take_create(fsa_journal_t *j, const fsa_op_t *c, fsa_wall_t at,
                                const char *group, fsa_rec_t *rec, size_t *n)
{
    fsa_op_t again = *c; /* shallow: json stays owned by c */
    fsa_status_t s = fsa_model_get_status(c->json, c->type, again.to);
    entity_t e;
    if (s != FSA_OK) {
        if (s != FSA_ENOMEM)
            s = FSA_OK; /* no status given: nothing to change */
    } else if ((s = entity_load(j, c->type, c->id, &e)) == FSA_OK) {
        char now[FSA_STATUS_BYTES];
        s = fsa_model_get_status(e.local_fields, c->type, now);
        if (s == FSA_OK && strcmp(now, again.to) != 0) {
            again.kind = FSA_OP_TRANSITION;
            again.json = NULL;
            s = again_one(j, &again, at, group, FSA_RESOLVED_LOCAL, rec, n);
        } else if (s != FSA_ENOMEM) {
            s = FSA_OK; /* the same status, or none known: nothing to change */
        }
        entity_clear(&e);
    }
    char *fields = NULL;
    if (s == FSA_OK)
        s = fsa_model_settable(c->type, c->json, &fields);
    if (s == FSA_OK && fields != NULL) {
        again = *c;
        again.kind = FSA_OP_SET;
        again.json = fields;
        s = again_one(j, &again, at, group, FSA_RESOLVED_LOCAL, rec, n);
    }
    fsa_model_free(fields);
    return s;
}

/* Taking ours: the members recorded again as new ops (those the state now known does not
 * already satisfy, but a person's create: take_create): new op_ids (the old ones have their
 * answers on the server), the next seqs, preconditions from the state now known, and a new group
 * id for a group, which is resent whole, and for a person's create, which may become two ops.
 * rec gets the first one's op_id and seq. A person's create of attendance, which is never
 * changed, is refused: the server's record stands. */
static fsa_status_t record_again(fsa_journal_t *j, const fsa_op_t *members, size_t n,
                                 fsa_conflict_resolution_t resolution, fsa_rec_t *rec,
                                 size_t *made_out)
{
    fsa_status_t s = FSA_OK;
    char group[FSA_GROUP_BYTES] = "";
    const bool person = resolution == FSA_RESOLVED_LOCAL;
    if (members[0].group[0] != '\0' || (person && members[0].kind == FSA_OP_CREATE))
        s = fsa_uuid4(j->port, group);
    fsa_wall_t at = {0};
    if (s == FSA_OK)
        s = now_locked(j, &at);
    size_t made = 0;
    const bool rebase = resolution == FSA_RESOLVED_REBASED;
    for (size_t i = 0; s == FSA_OK && i < n; i++) {
        bool satisfied = false;
        s = already_satisfied(j, &members[i], rebase, &satisfied);
        fsa_op_t again = members[i]; /* shallow: json stays owned by members[i] */
        if (s != FSA_OK || (satisfied && (!person || again.kind != FSA_OP_CREATE ||
                                          again.json == NULL))) /* gave nothing to take */
            continue;
        if (!satisfied) {
            s = again_one(j, &again, at, group, resolution, rec, &made);
        } else if (again.type == FSA_TYPE_ATTENDANCE) {
            rec_error(rec, "attendance is never changed: take the server's");
            s = FSA_EINVAL;
        } else {
            s = take_create(j, &members[i], at, group, rec, &made);
        }
    }
    *made_out = made;
    return s;
}

fsa_status_t fsa_conflict_resolve(fsa_journal_t *j, const char *op_id, bool take_local,
                                  fsa_conflict_resolution_t resolution, fsa_rec_t *rec)
{
    if (rec != NULL)
        memset(rec, 0, sizeof *rec);
    if (j == NULL || op_id == NULL || resolution == FSA_RESOLVED_NONE ||
        (unsigned)resolution > FSA_RESOLVED_CONVERGED) {
        rec_error(rec, "resolve needs an op id and a resolution");
        return FSA_EINVAL;
    }
    fsa_status_t s = begin(j);
    if (s != FSA_OK)
        return s;
    fsa_op_t members[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    s = conflict_group(j, op_id, members, &n);
    if (s == FSA_OK)
        s = mark_resolved(j, members, n, take_local, resolution);
    if (s == FSA_OK && n == 0)
        s = FSA_ENOTFOUND;
    if (s == FSA_ENOTFOUND)
        rec_error(rec, "no open conflict for op %s", op_id);
    size_t made = 0;
    if (s == FSA_OK && take_local)
        s = record_again(j, members, n, resolution, rec, &made);
    /* What a person takes again is a record like any other: the last eighth is the drain's. The
     * engine's rebase is part of a drain; a resolve that records nothing takes no room. */
    if (s == FSA_OK && resolution == FSA_RESOLVED_LOCAL && made > 0)
        s = fsa__jn_recording_room(j);
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&members[i]);
    return finish_record(j, s, rec);
}

fsa_status_t fsa_conflict_set_decision(fsa_journal_t *j, const char *op_id,
                                       fsa_conflict_decision_t decision)
{
    if (j == NULL || op_id == NULL || decision == FSA_DECISION_NONE ||
        (unsigned)decision > FSA_DECISION_SERVER_WINS)
        return FSA_EINVAL;
    fsa_status_t s = begin(j);
    if (s != FSA_OK)
        return s;
    /* The verdict is the group's, as a resolve is (conflict_group): decided member by member, a
     * crash between two left a group half decided, and its undecided members were then judged
     * alone: a merge that rebases alone took the group's set, decided "server wins", with it. */
    fsa_op_t members[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    s = conflict_group(j, op_id, members, &n);
    if (s == FSA_OK && n == 0)
        s = FSA_ENOTFOUND;
    for (size_t i = 0; s == FSA_OK && i < n; i++) {
        /* A member that has this decision already is left as it is: its change was told then
         * (the rest of a half-decided group takes its decision, sync/engine.c). */
        sqlite3_stmt *st;
        s = prep(j,
                 "UPDATE conflicts SET decision=?2 WHERE seq=?1 AND resolution IS NULL "
                 "AND decision!=?2",
                 &st);
        if (s != FSA_OK)
            break;
        sqlite3_bind_int64(st, 1, members[i].seq);
        fsa__db_bind_text(st, 2, fsa_conflict_decision_name(decision));
        s = step_done(j, st);
        if (s == FSA_OK && sqlite3_changes(j->db) == 1)
            s = log_member(j, &members[i],
                           decision == FSA_DECISION_SERVER_WINS ? FSA_CHANGE_SERVER_WON
                                                                : FSA_CHANGE_PARKED);
    }
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&members[i]);
    return finish(j, s);
}

fsa_status_t fsa_conflict_get(fsa_journal_t *j, const char *op_id, fsa_conflict_t *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (j == NULL || op_id == NULL || out == NULL)
        return FSA_EINVAL;
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, CONFLICT_SELECT "WHERE " OP_REF_WHERE_O, &st);
    if (s == FSA_OK) {
        fsa__jn_bind_op_ref(j, st, op_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            s = conflict_from_row(st, out);
        else
            s = rc == SQLITE_DONE ? FSA_ENOTFOUND : fsa__db_status(rc);
        release(j, st);
    }
    unlock_j(j);
    return s;
}
