/* fieldsync: the journal's change log. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/journal_internal.h"

/* Appends a row to the change log inside the open transaction (see fsa_change_reason_t). */
fsa_status_t fsa__jn_log_change(fsa_journal_t *j, fsa_type_t type, const char *id, int64_t version,
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
    fsa__db_bind_text(st, 2, id != NULL ? id : "");
    sqlite3_bind_int64(st, 3, version);
    sqlite3_bind_int(st, 4, (int)why);
    fsa__db_bind_text(st, 5, op_id != NULL ? op_id : "");
    sqlite3_bind_int64(st, 6, j->port->wall_now(j->port->ctx).ms);
    return step_done(j, st);
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
