/* fieldsync: the journal's change log. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/journal_internal.h"

/* Binds one row's six values from parameter base + 1 on. */
static void bind_row(sqlite3_stmt *st, int base, fsa_type_t type, const char *id, int64_t version,
                     fsa_change_reason_t why, const char *op_id, int64_t at_ms)
{
    sqlite3_bind_int64(st, base + 1, (sqlite3_int64)type);
    fsa__db_bind_text(st, base + 2, id != NULL ? id : "");
    sqlite3_bind_int64(st, base + 3, version);
    sqlite3_bind_int64(st, base + 4, (sqlite3_int64)why);
    fsa__db_bind_text(st, base + 5, op_id != NULL ? op_id : "");
    sqlite3_bind_int64(st, base + 6, at_ms);
}

static fsa_status_t insert_one(fsa_journal_t *j, fsa_type_t type, const char *id, int64_t version,
                               fsa_change_reason_t why, const char *op_id, int64_t at_ms)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "INSERT INTO changes(type,id,version,reason,op_id,at_ms) "
                          "VALUES(?1,?2,?3,?4,?5,?6)",
                          &st);
    if (s != FSA_OK)
        return s;
    bind_row(st, 0, type, id, version, why, op_id, at_ms);
    return step_done(j, st);
}

/* Appends a row to the change log inside the open transaction (see fsa_change_reason_t). */
fsa_status_t fsa__jn_log_change(fsa_journal_t *j, fsa_type_t type, const char *id, int64_t version,
                                fsa_change_reason_t why, const char *op_id)
{
    return insert_one(j, type, id, version, why, op_id, j->port->wall_now(j->port->ctx).ms);
}

/* FSA__JN_CHANGE_ROWS rows in one INSERT: each statement costs SQLite its own start and end (the
 * AUTOINCREMENT counter is read and written once per statement), about half of a row's cost when
 * a drain appends one row per op. */
#define ROW_PARAMS "(?,?,?,?,?,?)"
#define ROWS_4 ROW_PARAMS "," ROW_PARAMS "," ROW_PARAMS "," ROW_PARAMS
static const char INSERT_ROWS_SQL[] =
    "INSERT INTO changes(type,id,version,reason,op_id,at_ms) VALUES " ROWS_4 "," ROWS_4 "," ROWS_4
    "," ROWS_4;
_Static_assert(FSA__JN_CHANGE_ROWS == 16, "INSERT_ROWS_SQL has 16 rows");

fsa_status_t fsa__jn_change_flush(fsa_journal_t *j, fsa__jn_change_rows_t *rows)
{
    size_t n = rows->n;
    rows->n = 0;
    if (n == FSA__JN_CHANGE_ROWS) {
        sqlite3_stmt *st;
        fsa_status_t s = prep(j, INSERT_ROWS_SQL, &st);
        if (s != FSA_OK)
            return s;
        for (size_t i = 0; i < n; i++)
            bind_row(st, (int)(6 * i), rows->row[i].type, rows->row[i].id, rows->row[i].version,
                     rows->row[i].why, rows->row[i].op_id, rows->row[i].at_ms);
        return step_done(j, st);
    }
    fsa_status_t s = FSA_OK;
    for (size_t i = 0; s == FSA_OK && i < n; i++)
        s = insert_one(j, rows->row[i].type, rows->row[i].id, rows->row[i].version,
                       rows->row[i].why, rows->row[i].op_id, rows->row[i].at_ms);
    return s;
}

/* Copies s (NULL: "") into dst of cap bytes, cut to fit. */
fsa_status_t fsa__jn_change_add(fsa_journal_t *j, fsa__jn_change_rows_t *rows, fsa_type_t type,
                                const char *id, int64_t version, fsa_change_reason_t why,
                                const char *op_id)
{
    if (rows->n == FSA__JN_CHANGE_ROWS) {
        fsa_status_t s = fsa__jn_change_flush(j, rows);
        if (s != FSA_OK)
            return s;
    }
    size_t i = rows->n++;
    rows->row[i].type = type;
    rows->row[i].version = version;
    rows->row[i].why = why;
    rows->row[i].at_ms = j->port->wall_now(j->port->ctx).ms;
    copy_cut(rows->row[i].id, sizeof rows->row[i].id, id);
    copy_cut(rows->row[i].op_id, sizeof rows->row[i].op_id, op_id);
    return FSA_OK;
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
    fsa_status_t s = prep(j, "SELECT coalesce(max(seq),0) FROM changes", &st);
    if (s == FSA_OK) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *seq = sqlite3_column_int64(st, 0);
        else
            s = fsa__db_status(rc);
        release(j, st);
    }
    unlock_j(j);
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
                          "SELECT seq,type,id,version,reason,op_id FROM changes "
                          "WHERE seq>?1 ORDER BY seq LIMIT ?2",
                          &st);
    if (s == FSA_OK) {
        sqlite3_bind_int64(st, 1, after);
        sqlite3_bind_int64(st, 2, (int64_t)max);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < max) {
            fsa_change_t *c = &out[*n];
            memset(c, 0, sizeof *c);
            c->seq = sqlite3_column_int64(st, 0);
            c->type = (fsa_type_t)sqlite3_column_int64(st, 1);
            copy_col(c->id, sizeof c->id, st, 2);
            c->version = sqlite3_column_int64(st, 3);
            c->reason = (fsa_change_reason_t)sqlite3_column_int64(st, 4);
            copy_col(c->op_id, sizeof c->op_id, st, 5);
            (*n)++;
        }
        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
            s = fsa__db_status(rc);
        release(j, st);
    }
    unlock_j(j);
    if (s != FSA_OK)
        *n = 0;
    return s;
}
