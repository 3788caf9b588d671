/* fieldsync: the journal's sync state (key/value rows) and its corrected clock. */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/journal_internal.h"
#include "storage/state_keys.h"

/* ---- sync state: key/value rows (state_keys.h), behind the typed calls of journal.h ---- */

typedef struct state_item {
    const char *key;
    const char *s;
    int64_t i;
} state_item_t;

fsa_status_t fsa__jn_state_get_int_locked(fsa_journal_t *j, const char *key, int64_t dflt,
                                          int64_t *out)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, "SELECT v FROM sync_state WHERE k=?1", &st);
    if (s != FSA_OK)
        return s;
    fsa__db_bind_text(st, 1, key != NULL ? key : "");
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : dflt;
    release(j, st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? FSA_OK : fsa__db_status(rc);
}

static fsa_status_t state_get_int(fsa_journal_t *j, const char *key, int64_t dflt, int64_t *out)
{
    if (j == NULL || key == NULL || out == NULL)
        return FSA_EINVAL;
    lock_j(j);
    fsa_status_t s = state_get_int_locked(j, key, dflt, out);
    unlock_j(j);
    return s;
}

static fsa_status_t state_set_many(fsa_journal_t *j, const state_item_t *items, size_t n);

/* One key, as a write transaction of its own (state_set_many): every write of the journal
 * begins in write_begin, where the thread's fence is checked. */
static fsa_status_t state_set(fsa_journal_t *j, const char *key, const char *sv, int64_t iv)
{
    const state_item_t item = {key, sv, iv};
    return state_set_many(j, &item, 1);
}

/* A string key: *out malloc'ed, NULL when absent. */
static fsa_status_t state_get_str(fsa_journal_t *j, const char *key, char **out)
{
    if (j == NULL || key == NULL || out == NULL)
        return FSA_EINVAL;
    *out = NULL;
    lock_j(j);
    sqlite3_stmt *st;
    fsa_status_t s = prep(j, "SELECT v FROM sync_state WHERE k=?1", &st);
    if (s == FSA_OK) {
        fsa__db_bind_text(st, 1, key);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            s = dup_col(st, 0, out);
        } else if (rc != SQLITE_DONE) {
            s = fsa__db_status(rc);
        }
        release(j, st);
    }
    unlock_j(j);
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

fsa_status_t fsa_journal_now_checked(fsa_journal_t *j, fsa_wall_t *out)
{
    lock_j(j);
    fsa_status_t s = now_locked(j, out);
    unlock_j(j);
    return s;
}

/* ---- several state keys at once ---- */

/* Several keys in one transaction: all are written or none. Each item sets a string (s non-NULL)
 * or an integer (s NULL). */
static fsa_status_t state_set_many(fsa_journal_t *j, const state_item_t *items, size_t n)
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
        s = prep(j, "INSERT INTO sync_state(k,v) VALUES(?1,?2) ON CONFLICT(k) DO UPDATE SET v=?2",
                 &st);
        if (s != FSA_OK)
            break;
        fsa__db_bind_text(st, 1, items[i].key);
        if (items[i].s != NULL)
            fsa__db_bind_text(st, 2, items[i].s);
        else
            sqlite3_bind_int64(st, 2, items[i].i);
        s = step_done(j, st);
    }
    return finish(j, s);
}

/* ---- typed calls over the key/value rows ---- */

/* The configuration's members and their keys, in the order `fieldsync init` has written them.
 * Keys as characters, not pointers: no relocation for each in the device binary. */
#define CONFIG_KEY_BYTES sizeof FSA_STATE_SYNC_INTERVAL_MS /* the longest */
static const struct {
    char key[CONFIG_KEY_BYTES];
    unsigned short off;
} config_strings[] = {
    {FSA_STATE_DEVICE_ID, offsetof(fsa_device_config_t, device_id)},
    {FSA_STATE_SERVER, offsetof(fsa_device_config_t, server)},
    {FSA_STATE_SECRET_FILE, offsetof(fsa_device_config_t, secret_file)},
    {FSA_STATE_CA_FILE, offsetof(fsa_device_config_t, ca_file)},
    {FSA_STATE_PINS, offsetof(fsa_device_config_t, pins)},
    {FSA_STATE_CLIENT_CERT, offsetof(fsa_device_config_t, client_cert)},
    {FSA_STATE_CLIENT_KEY, offsetof(fsa_device_config_t, client_key)},
    {FSA_STATE_PROXY, offsetof(fsa_device_config_t, proxy)},
    {FSA_STATE_RETRY_POLICY, offsetof(fsa_device_config_t, retry_policy)},
    {FSA_STATE_RESOLVER_POLICY, offsetof(fsa_device_config_t, resolver_policy)},
};

static const struct {
    char key[CONFIG_KEY_BYTES];
    unsigned short off;
} config_ints[] = {
    {FSA_STATE_DURABILITY, offsetof(fsa_device_config_t, durability)},
    {FSA_STATE_SYNC_INTERVAL_MS, offsetof(fsa_device_config_t, sync_interval_ms)},
    {FSA_STATE_STALL_AFTER_MS, offsetof(fsa_device_config_t, stall_after_ms)},
    {FSA_STATE_BUDGET_BYTES, offsetof(fsa_device_config_t, budget_bytes)},
};

#define NCONFIG_STRINGS (sizeof config_strings / sizeof config_strings[0])
#define NCONFIG_INTS (sizeof config_ints / sizeof config_ints[0])

static char **config_str(fsa_device_config_t *c, size_t i)
{
    return (char **)(void *)((char *)c + config_strings[i].off);
}

static int64_t *config_int(fsa_device_config_t *c, size_t i)
{
    return (int64_t *)(void *)((char *)c + config_ints[i].off);
}

fsa_status_t fsa_journal_config_store(fsa_journal_t *j, const fsa_device_config_t *c)
{
    if (j == NULL || c == NULL)
        return FSA_EINVAL;
    /* Read through a copy: the tables give member addresses of a non-const struct. */
    fsa_device_config_t m = *c;
    state_item_t items[NCONFIG_STRINGS + NCONFIG_INTS + 1];
    size_t n = 0;
    for (size_t i = 0; i < NCONFIG_STRINGS; i++) {
        const char *v = *config_str(&m, i);
        items[n++] = (state_item_t){config_strings[i].key, v != NULL ? v : "", 0};
    }
    items[n++] = (state_item_t){FSA_STATE_ALLOW_HTTP, NULL, c->allow_http ? 1 : 0};
    for (size_t i = 0; i < NCONFIG_INTS; i++)
        items[n++] = (state_item_t){config_ints[i].key, NULL, *config_int(&m, i)};
    return state_set_many(j, items, n);
}

void fsa_device_config_clear(fsa_device_config_t *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < NCONFIG_STRINGS; i++)
        fsa_free(*config_str(c, i));
    memset(c, 0, sizeof *c);
}

/* A stored string; "" counts as absent (NULL). */
static fsa_status_t state_get_nonempty(fsa_journal_t *j, const char *key, char **out)
{
    fsa_status_t s = state_get_str(j, key, out);
    if (s == FSA_OK && *out != NULL && (*out)[0] == '\0') {
        fsa_free(*out);
        *out = NULL;
    }
    return s;
}

fsa_status_t fsa_journal_config_load(fsa_journal_t *j, fsa_device_config_t *out)
{
    if (out == NULL)
        return FSA_EINVAL;
    memset(out, 0, sizeof *out);
    if (j == NULL)
        return FSA_EINVAL;
    fsa_status_t s = FSA_OK;
    for (size_t i = 0; s == FSA_OK && i < NCONFIG_STRINGS; i++)
        s = state_get_nonempty(j, config_strings[i].key, config_str(out, i));
    int64_t allow = 0;
    if (s == FSA_OK)
        s = state_get_int(j, FSA_STATE_ALLOW_HTTP, 0, &allow);
    out->allow_http = allow != 0;
    for (size_t i = 0; s == FSA_OK && i < NCONFIG_INTS; i++)
        s = state_get_int(j, config_ints[i].key, 0, config_int(out, i));
    if (s != FSA_OK)
        fsa_device_config_clear(out);
    return s;
}

fsa_status_t fsa_journal_device_id(fsa_journal_t *j, char **out)
{
    if (out != NULL)
        *out = NULL;
    if (j == NULL || out == NULL)
        return FSA_EINVAL;
    return state_get_nonempty(j, FSA_STATE_DEVICE_ID, out);
}

fsa_status_t fsa_journal_sync_state_get(fsa_journal_t *j, fsa_sync_state_t *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (j == NULL || out == NULL)
        return FSA_EINVAL;
    lock_j(j);
    fsa_status_t s = state_get_int_locked(j, FSA_STATE_CLOCK_OFFSET_MS, 0, &out->clock_offset_ms);
    if (s == FSA_OK)
        s = state_get_int_locked(j, FSA_STATE_NEXT_ATTEMPT_MS, 0, &out->backoff.next_attempt_ms);
    if (s == FSA_OK)
        s = state_get_int_locked(j, FSA_STATE_SYNC_FAILURES, 0, &out->backoff.failures);
    if (s == FSA_OK)
        s = state_get_int_locked(j, FSA_STATE_LAST_SYNC_MS, 0, &out->last_sync_ms);
    unlock_j(j);
    if (s != FSA_OK)
        memset(out, 0, sizeof *out);
    return s;
}

fsa_status_t fsa_journal_backoff_get(fsa_journal_t *j, fsa_backoff_state_t *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (out == NULL)
        return FSA_EINVAL;
    fsa_sync_state_t ss;
    fsa_status_t s = fsa_journal_sync_state_get(j, &ss);
    *out = ss.backoff;
    return s;
}

fsa_status_t fsa_journal_backoff_set(fsa_journal_t *j, const fsa_backoff_state_t *b)
{
    if (b == NULL)
        return FSA_EINVAL;
    const state_item_t items[] = {{FSA_STATE_SYNC_FAILURES, NULL, b->failures},
                                  {FSA_STATE_NEXT_ATTEMPT_MS, NULL, b->next_attempt_ms}};
    return state_set_many(j, items, 2);
}

fsa_status_t fsa_journal_sync_done(fsa_journal_t *j, int64_t at_ms)
{
    const state_item_t items[] = {{FSA_STATE_SYNC_FAILURES, NULL, 0},
                                  {FSA_STATE_NEXT_ATTEMPT_MS, NULL, 0},
                                  {FSA_STATE_LAST_SYNC_MS, NULL, at_ms}};
    return state_set_many(j, items, 3);
}

fsa_status_t fsa_journal_clock_offset_get(fsa_journal_t *j, int64_t *ms)
{
    return state_get_int(j, FSA_STATE_CLOCK_OFFSET_MS, 0, ms);
}

fsa_status_t fsa_journal_clock_offset_set(fsa_journal_t *j, int64_t ms)
{
    return state_set(j, FSA_STATE_CLOCK_OFFSET_MS, NULL, ms);
}

fsa_status_t fsa_journal_cursor_get(fsa_journal_t *j, char **out)
{
    return state_get_str(j, FSA_STATE_CURSOR, out);
}

fsa_status_t fsa_journal_cursor_set(fsa_journal_t *j, const char *cursor)
{
    if (cursor == NULL)
        return FSA_EINVAL;
    return state_set(j, FSA_STATE_CURSOR, cursor, 0);
}

fsa_status_t fsa_journal_last_error_set(fsa_journal_t *j, int64_t status, const char *msg)
{
    const state_item_t items[] = {{FSA_STATE_LAST_ERROR, NULL, status},
                                  {FSA_STATE_LAST_ERROR_MSG, msg != NULL ? msg : "", 0}};
    return state_set_many(j, items, 2);
}

fsa_status_t fsa_journal_last_error_get(fsa_journal_t *j, int64_t *status, char **msg)
{
    if (msg != NULL)
        *msg = NULL;
    if (status == NULL || msg == NULL)
        return FSA_EINVAL;
    fsa_status_t s = state_get_int(j, FSA_STATE_LAST_ERROR, 0, status);
    if (s == FSA_OK)
        s = state_get_str(j, FSA_STATE_LAST_ERROR_MSG, msg);
    return s;
}
