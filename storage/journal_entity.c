/* fieldsync: the journal's entities: base and local view, pulled states, reads and listing. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/journal_internal.h"

/* ---- entities and the local view ---- */

void fsa__jn_entity_clear(entity_t *e)
{
    fsa_free(e->base_fields);
    fsa_free(e->local_fields);
    memset(e, 0, sizeof *e);
}

fsa_status_t fsa__jn_entity_load(fsa_journal_t *j, fsa_type_t type, const char *id, entity_t *e)
{
    memset(e, 0, sizeof *e);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          /* a base stored as '' is the local view (fsa__jn_entity_store) */
                          "SELECT iif(base='',local_fields,base),base_version,"
                          "local_fields FROM entities WHERE type=?1 AND id=?2",
                          &st);
    if (s != FSA_OK)
        return s;
    fsa__db_bind_text(st, 1, fsa_type_name(type));
    fsa__db_bind_text(st, 2, id != NULL ? id : "");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        s = dup_col(st, 0, &e->base_fields);
        e->base_version = sqlite3_column_int64(st, 1);
        if (s == FSA_OK)
            s = dup_col(st, 2, &e->local_fields);
        e->exists = e->local_fields != NULL;
    } else if (rc != SQLITE_DONE) {
        s = fsa__db_status(rc);
    }
    release(j, st);
    if (s != FSA_OK)
        entity_clear(e);
    return s;
}

fsa_status_t fsa__jn_entity_store(fsa_journal_t *j, fsa_type_t type, const char *id,
                                  const entity_t *e)
{
    sqlite3_stmt *st;
    fsa_status_t s;
    if (e->base_fields == NULL && e->local_fields == NULL) {
        s = prep(j, "DELETE FROM entities WHERE type=?1 AND id=?2", &st);
        if (s != FSA_OK)
            return s;
        fsa__db_bind_text(st, 1, fsa_type_name(type));
        fsa__db_bind_text(st, 2, id != NULL ? id : "");
        return step_done(j, st);
    }
    /* A base that is the local view (an entity with nothing pending: after its ops' results, after
     * a pull) is stored once, as '' (no JSON text is empty): a drain that answered a journal full
     * of creates would otherwise double each one's row, which the eighth of the budget left for
     * syncing does not hold (schema 6, storage/db.c). */
    s = prep(j,
             "INSERT INTO entities(type,id,base,base_version,local_fields,updated_ms) "
             "VALUES(?1,?2,iif(?3=?5,'',?3),?4,?5,?6) ON CONFLICT(type,id) DO UPDATE SET "
             "base=excluded.base,base_version=excluded.base_version,"
             "local_fields=excluded.local_fields,updated_ms=excluded.updated_ms",
             &st);
    if (s != FSA_OK)
        return s;
    fsa__db_bind_text(st, 1, fsa_type_name(type));
    fsa__db_bind_text(st, 2, id != NULL ? id : "");
    if (e->base_fields != NULL)
        fsa__db_bind_text(st, 3, e->base_fields);
    sqlite3_bind_int64(st, 4, e->base_version);
    if (e->local_fields != NULL)
        fsa__db_bind_text(st, 5, e->local_fields);
    sqlite3_bind_int64(st, 6, j->port->wall_now(j->port->ctx).ms);
    return step_done(j, st);
}

/*
 * Rebuilds an entity's local view: its base with every pending op replayed in seq order, and the
 * applied ops the base has not caught up with (kept until folded: journal_apply.c) among them. An
 * op that no longer applies on the new base (a transition whose from is gone, a create of what
 * the server has) is skipped here; the server will answer it and the resolver will decide.
 */
fsa_status_t fsa__jn_rebuild_local(fsa_journal_t *j, fsa_type_t type, const char *id)
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
             "SELECT " OP_COLUMNS " FROM outbox WHERE type=?1 AND id=?2 AND (state IN(0,1) OR "
             "(state=2 AND result_version>?3)) ORDER BY seq",
             &st);
    if (s != FSA_OK)
        goto out;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)type);
    fsa__db_bind_text(st, 2, id != NULL ? id : "");
    sqlite3_bind_int64(st, 3, e.base_version);
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

/* Runs sql, a count(*) over one entity: type ?1 (the enum's number), id ?2. */
static fsa_status_t count_of_entity(fsa_journal_t *j, const char *sql, fsa_type_t type,
                                    const char *id, int64_t *n)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, sql, &st);
    if (s != FSA_OK)
        return s;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)type);
    fsa__db_bind_text(st, 2, id != NULL ? id : "");
    int rc = sqlite3_step(st);
    *n = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    release(j, st);
    return rc == SQLITE_ROW ? FSA_OK : fsa__db_status(rc);
}

fsa_status_t fsa__jn_count_pending(fsa_journal_t *j, fsa_type_t type, const char *id, int64_t *n)
{
    return count_of_entity(j,
                           "SELECT count(*) FROM outbox WHERE type=?1 AND id=?2 AND "
                           "state IN(0,1)",
                           type, id, n);
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
    unlock_j(j);
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

/* The state key of entity (type, id)'s kept `gone`. */
static void gone_key(char *out, size_t cap, fsa_type_t type, const char *id)
{
    snprintf(out, cap, FSA_STATE_GONE_PREFIX "%s:%s", fsa_type_name(type), id);
}

#define GONE_KEY_BYTES (sizeof FSA_STATE_GONE_PREFIX + 16 + FSA_ID_BYTES)

/* Notes (version >= 1) or forgets (version 0) the kept `gone` of (type, id), inside the caller's
 * transaction. A forget that finds none writes no page. */
static fsa_status_t gone_note(fsa_journal_t *j, fsa_type_t type, const char *id, int64_t version)
{
    char key[GONE_KEY_BYTES];
    gone_key(key, sizeof key, type, id);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          version > 0 ? "INSERT INTO sync_state(k,v) VALUES(?1,?2) "
                                        "ON CONFLICT(k) DO UPDATE SET v=excluded.v"
                                      : "DELETE FROM sync_state WHERE k=?1",
                          &st);
    if (s != FSA_OK)
        return s;
    fsa__db_bind_text(st, 1, key);
    if (version > 0)
        sqlite3_bind_int64(st, 2, version);
    return step_done(j, st);
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
    /* In scope again (the pages come in the order of the server's changes): a `gone` kept
     * before is forgotten, whatever the version (the entity may come back unchanged). */
    if (s == FSA_OK)
        s = gone_note(j, type, id, 0);
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
    } else if (s == FSA_OK && known) {
        s = gone_note(j, type, id, version); /* dropped once idle: fsa_journal_gone_sweep */
    }
    s = finish(j, s);
    if (s == FSA_OK && dropped != NULL)
        *dropped = drop;
    return s;
}

#define GONE_SWEEP_PAGE 64 /* the LIMIT of the statement below */

/* Up to GONE_SWEEP_PAGE notes after the key after ("" from the first) into keys/versions. */
static fsa_status_t gone_page(fsa_journal_t *j, const char *after, char (*keys)[GONE_KEY_BYTES],
                              int64_t *versions, size_t *n)
{
    *n = 0;
    sqlite3_stmt *st;
    fsa_status_t s =
        prep(j,
             "SELECT k,v FROM sync_state WHERE k>=?1 AND k>?2 AND k<'" FSA_STATE_GONE_END
             "' ORDER BY k LIMIT 64",
             &st);
    if (s != FSA_OK)
        return s;
    fsa__db_bind_text(st, 1, FSA_STATE_GONE_PREFIX);
    fsa__db_bind_text(st, 2, after);
    int rc = SQLITE_DONE;
    while (*n < GONE_SWEEP_PAGE && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        copy_col(keys[*n], GONE_KEY_BYTES, st, 0);
        versions[*n] = sqlite3_column_int64(st, 1);
        (*n)++;
    }
    if (*n < GONE_SWEEP_PAGE && rc != SQLITE_DONE)
        s = fsa__db_status(rc);
    release(j, st);
    return s;
}

/* Parses a note's key "gone:TYPE:ID" (the type has no ':'; the id may). */
static bool gone_parse(const char *key, fsa_type_t *type, const char **id)
{
    const char *t = key + sizeof FSA_STATE_GONE_PREFIX - 1;
    const char *colon = strchr(t, ':');
    char tname[16];
    if (colon == NULL || (size_t)(colon - t) >= sizeof tname)
        return false;
    memcpy(tname, t, (size_t)(colon - t));
    tname[colon - t] = '\0';
    *id = colon + 1;
    return fsa_type_parse(tname, type) == FSA_OK && fsa_model_id_valid(*id);
}

/* Sweeps one note, inside the transaction: drops its entity when nothing of ours is on it. */
static fsa_status_t gone_sweep_one(fsa_journal_t *j, const char *key, int64_t version,
                                   size_t *dropped)
{
    fsa_type_t type;
    const char *id;
    if (!gone_parse(key, &type, &id)) {
        /* Not one this build wrote (a newer one's type, a hand's edit): forgotten, said once, and
         * the sweep goes on; a note must not stop every later cycle. */
        fsa_log(j->port, FSA_LOG_WARN,
                "journal: a gone note this build cannot read (%.60s): dropped", key);
        sqlite3_stmt *st;
        fsa_status_t s = prep(j, "DELETE FROM sync_state WHERE k=?1", &st);
        if (s == FSA_OK) {
            fsa__db_bind_text(st, 1, key);
            s = step_done(j, st);
        }
        return s;
    }
    int64_t pending = 0, open = 0;
    fsa_status_t s = count_pending(j, type, id, &pending);
    if (s == FSA_OK)
        s = count_open_conflicts(j, type, id, &open);
    if (s != FSA_OK || pending > 0 || open > 0)
        return s; /* still busy: kept, and the note with it */
    entity_t e = {0};
    s = entity_load(j, type, id, &e);
    bool known = e.base_fields != NULL || e.local_fields != NULL;
    entity_clear(&e);
    if (s == FSA_OK && known) {
        entity_t none = {0};
        s = entity_store(j, type, id, &none);
        if (s == FSA_OK)
            s = log_change(j, type, id, version, FSA_CHANGE_GONE, "");
        *dropped += s == FSA_OK;
    }
    return s == FSA_OK ? gone_note(j, type, id, 0) : s;
}

fsa_status_t fsa_journal_gone_sweep(fsa_journal_t *j, size_t *dropped)
{
    if (dropped != NULL)
        *dropped = 0;
    if (j == NULL)
        return FSA_EINVAL;
    fsa_status_t s = begin(j);
    if (s != FSA_OK)
        return s;
    /* Page by page through every note (the busy ones stay, and must not hide those after them),
     * each page read whole before its writes: no statement stays open over them. */
    char keys[GONE_SWEEP_PAGE][GONE_KEY_BYTES];
    int64_t versions[GONE_SWEEP_PAGE];
    char after[GONE_KEY_BYTES] = "";
    size_t n = 0, gone = 0;
    do {
        s = gone_page(j, after, keys, versions, &n);
        for (size_t i = 0; s == FSA_OK && i < n; i++)
            s = gone_sweep_one(j, keys[i], versions[i], &gone);
        if (n > 0)
            memcpy(after, keys[n - 1], sizeof after);
    } while (s == FSA_OK && n == GONE_SWEEP_PAGE);
    s = finish(j, s);
    if (s == FSA_OK && dropped != NULL)
        *dropped = gone;
    return s;
}

/* ---- listing entities ---- */

/* Open conflicts and rejections on one entity, inside the caller's lock. */
fsa_status_t fsa__jn_count_open_conflicts(fsa_journal_t *j, fsa_type_t type, const char *id,
                                          int64_t *n)
{
    return count_of_entity(j,
                           "SELECT count(*) FROM conflicts c JOIN outbox o ON o.seq=c.seq "
                           "WHERE o.type=?1 AND o.id=?2 AND c.resolution IS NULL",
                           type, id, n);
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
    unlock_j(j);
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
                          "SELECT e.id,e.local_fields,e.base_version,"
                          " (SELECT count(*) FROM outbox o WHERE o.type=?1 AND o.id=e.id "
                          "  AND o.state IN(0,1)),"
                          " (SELECT count(*) FROM conflicts c JOIN outbox o ON o.seq=c.seq "
                          "  WHERE o.type=?1 AND o.id=e.id AND c.resolution IS NULL) "
                          "FROM entities e WHERE e.type=?2 AND e.local_fields IS NOT NULL "
                          " AND (?3 IS NULL OR e.id>?3) "
                          " AND (?4 IS NULL OR json_extract(e.local_fields,'$.parent_id')=?4) "
                          " AND (?5 IS NULL OR json_extract(e.local_fields,?6)=?5) "
                          " AND (?7 IS NULL OR json_extract(e.local_fields,?8)=?7) "
                          " AND (?9 IS NULL OR json_extract(e.local_fields,'$.site_id')=?9) "
                          " AND (?10=0 OR json_extract(e.local_fields,'$.at')>=?10) "
                          " AND (?11=0 OR json_extract(e.local_fields,'$.at')<?11) "
                          "ORDER BY e.id LIMIT ?12",
                          &st);
    if (s == FSA_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)f->type);
        fsa__db_bind_text(st, 2, fsa_type_name(f->type));
        if (f->after_id != NULL)
            fsa__db_bind_text(st, 3, f->after_id);
        if (f->parent_id != NULL)
            fsa__db_bind_text(st, 4, f->parent_id);
        if (f->status != NULL)
            fsa__db_bind_text(st, 5, f->status);
        fsa__db_bind_text(st, 6, status_path != NULL ? status_path : "");
        if (f->people_id != NULL)
            fsa__db_bind_text(st, 7, f->people_id);
        fsa__db_bind_text(st, 8, people_path != NULL ? people_path : "");
        if (f->site_id != NULL)
            fsa__db_bind_text(st, 9, f->site_id);
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
    unlock_j(j);
    return s;
}
