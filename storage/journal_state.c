/* fieldsync: the journal's sync state (key/value rows) and its corrected clock. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/journal_internal.h"
#include "storage/state_keys.h"

/* ---- sync state ---- */

fsa_status_t fsa__jn_state_get_int_locked(fsa_journal_t *j, const char *key, int64_t dflt,
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
fsa_status_t fsa__jn_now_locked(fsa_journal_t *j, fsa_wall_t *out)
{
    int64_t offset = 0;
    fsa_status_t s = state_get_int_locked(j, FSA_STATE_CLOCK_OFFSET_MS, 0, &offset);
    *out = j->port->wall_now(j->port->ctx);
    out->ms += offset;
    return s;
}

fsa_status_t fsa__jn_now_checked(fsa_journal_t *j, fsa_wall_t *out)
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
