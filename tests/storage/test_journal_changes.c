/* Tests for the journal's change log, entity listing, conflict lookup and multi-key state writes
 * (storage/journal.c), and the migration that adds the change log (storage/db.c). */
#include <sqlite3.h>
#include <stdatomic.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/journal_internal.h"
#include "tests/storage/journal_test_util.h"
#include "tests/storage/vfs_fault.h"

static void make_v5(sqlite3 *db); /* the older schemas are made from schema 5 */

typedef struct fixture {
    test_dir_t dir;
    fsa_sim_t *sim;
    fsa_port_t *port;
    fsa_journal_t *j;
} fixture_t;

static const fsa_wall_t START = {INT64_C(1764090000000)};

static int setup(void **state)
{
    fixture_t *f = fsa_calloc(1, sizeof *f);
    test_dir_make(&f->dir);
    if (fsa_sim_new(11, START, "changes", &f->sim) != FSA_OK)
        return -1;
    f->port = fsa_sim_port(f->sim);
    fsa_journal_opts_t o = {.create = true};
    char err[256];
    if (fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err) != FSA_OK) {
        fprintf(stderr, "open: %s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    fsa_journal_close(f->j);
    fsa_sim_free(f->sim);
    test_dir_remove(&f->dir);
    fsa_free(f);
    return 0;
}

/* Reads every change after `after` into out (at most 64). */
static size_t changes(fsa_journal_t *j, int64_t after, fsa_change_t out[64])
{
    size_t n = 0;
    assert_fsa_ok(fsa_journal_changes_read(j, after, out, 64, &n));
    return n;
}

static fsa_op_result_t result_for(const char *op_id, fsa_result_status_t status, int64_t version)
{
    fsa_op_result_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.op_id, sizeof r.op_id, "%.36s", op_id);
    r.status = status;
    r.version = version;
    return r;
}

static void test_fsa_journal_changes_read__records_results_and_pulls(void **state)
{
    fixture_t *f = *state;
    int64_t last = -1;
    assert_fsa_ok(fsa_journal_changes_last(f->j, &last));
    assert_int_equal(last, 0);
    fsa_rec_t c, s;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "J1", NULL, NULL, &c));
    assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J1", "{\"seqno\":5}", NULL, &s));
    fsa_change_t ch[64];
    size_t n = changes(f->j, 0, ch);
    assert_int_equal(n, 2);
    assert_int_equal(ch[0].reason, FSA_CHANGE_RECORDED);
    assert_string_equal(ch[0].op_id, c.op_id);
    assert_string_equal(ch[0].id, "J1");
    assert_int_equal(ch[0].type, FSA_TYPE_JOBNEED);
    assert_int_equal(ch[0].version, 0);
    assert_string_equal(ch[1].op_id, s.op_id);
    assert_true(ch[1].seq > ch[0].seq);

    /* applied: SYNCED with the server's version; a repeated result adds nothing */
    fsa_op_result_t r = result_for(c.op_id, FSA_RESULT_APPLIED, 1);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    n = changes(f->j, ch[1].seq, ch);
    assert_int_equal(n, 1);
    assert_int_equal(ch[0].reason, FSA_CHANGE_SYNCED);
    assert_int_equal(ch[0].version, 1);
    assert_string_equal(ch[0].op_id, c.op_id);
    int64_t after = ch[0].seq;

    /* a pull of a newer state: PULLED; of an older one: nothing */
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_JOBNEED, "J1", 4,
                                   "{\"jobstatus\":\"INPROGRESS\",\"parent_id\":null,\"seqno\":1,"
                                   "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}"));
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_JOBNEED, "J1", 3,
                                   "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":1,"
                                   "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}"));
    n = changes(f->j, after, ch);
    assert_int_equal(n, 1);
    assert_int_equal(ch[0].reason, FSA_CHANGE_PULLED);
    assert_int_equal(ch[0].version, 4);
    assert_string_equal(ch[0].op_id, "");
    assert_fsa_ok(fsa_journal_changes_last(f->j, &last));
    assert_int_equal(last, ch[0].seq);
}

static void test_fsa_journal_changes_read__parked_resolved_and_server_won(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t c, s, t;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &c));
    fsa_op_result_t r = result_for(c.op_id, FSA_RESULT_APPLIED, 1);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"priority\":\"HIGH\"}", NULL, &s));
    assert_fsa_ok(fsa_journal_transition(f->j, FSA_TYPE_TICKET, "T1", "OPEN", NULL, &t));
    int64_t after = 0;
    assert_fsa_ok(fsa_journal_changes_last(f->j, &after));

    fsa_op_result_t res[2] = {result_for(s.op_id, FSA_RESULT_CONFLICT, 0),
                              result_for(t.op_id, FSA_RESULT_REJECTED, 0)};
    res[0].current_version = 3;
    res[0].current_fields = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                            "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"LOW\"}";
    snprintf(res[1].code, sizeof res[1].code, "invalid_transition");
    assert_fsa_ok(fsa_outbox_apply_results(f->j, res, 2));
    fsa_change_t ch[64];
    size_t n = changes(f->j, after, ch);
    assert_int_equal(n, 2);
    assert_int_equal(ch[0].reason, FSA_CHANGE_HELD); /* the answers: not judged yet */
    assert_string_equal(ch[0].op_id, s.op_id);
    assert_int_equal(ch[0].version, 3);
    assert_int_equal(ch[1].reason, FSA_CHANGE_HELD);
    assert_string_equal(ch[1].op_id, t.op_id);
    after = ch[1].seq;

    /* the resolver's verdicts (server wins; left to a person), each a change once, then a
     * person's take-local and take-server */
    assert_fsa_ok(fsa_conflict_set_decision(f->j, s.op_id, FSA_DECISION_SERVER_WINS));
    assert_fsa_ok(fsa_conflict_set_decision(f->j, t.op_id, FSA_DECISION_PARK));
    assert_fsa_ok(fsa_conflict_set_decision(f->j, t.op_id, FSA_DECISION_PARK));
    n = changes(f->j, after, ch);
    assert_int_equal(n, 2);
    assert_int_equal(ch[0].reason, FSA_CHANGE_SERVER_WON);
    assert_string_equal(ch[0].op_id, s.op_id);
    assert_int_equal(ch[1].reason, FSA_CHANGE_PARKED);
    assert_string_equal(ch[1].op_id, t.op_id);
    after = ch[1].seq;
    fsa_rec_t again;
    assert_fsa_ok(fsa_conflict_resolve(f->j, s.op_id, true, FSA_RESOLVED_LOCAL, &again));
    assert_fsa_ok(fsa_conflict_resolve(f->j, t.op_id, false, FSA_RESOLVED_SERVER, NULL));
    n = changes(f->j, after, ch);
    assert_int_equal(n, 2);
    assert_int_equal(ch[0].reason, FSA_CHANGE_RESOLVED);
    assert_string_equal(ch[0].op_id, again.op_id);
    assert_int_equal(ch[1].reason, FSA_CHANGE_RESOLVED);
    assert_string_equal(ch[1].op_id, t.op_id);

    /* conflict lookup by op id, open or closed */
    fsa_conflict_t cf;
    assert_fsa_ok(fsa_conflict_get(f->j, t.op_id, &cf));
    assert_int_equal(cf.outcome, FSA_RESULT_REJECTED);
    assert_string_equal(cf.code, "invalid_transition");
    assert_int_equal(cf.resolution, FSA_RESOLVED_SERVER);
    assert_string_equal(cf.op.id, "T1");
    fsa_conflict_clear(&cf);
    assert_int_equal(fsa_conflict_get(f->j, c.op_id, &cf), FSA_ENOTFOUND);
    assert_int_equal(fsa_conflict_get(f->j, NULL, &cf), FSA_EINVAL);
}

static void test_fsa_journal_changes_read__rebase_is_one_change(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t c, s;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "J2", NULL, NULL, &c));
    fsa_op_result_t r = result_for(c.op_id, FSA_RESULT_APPLIED, 1);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J2", "{\"seqno\":9}", NULL, &s));
    fsa_op_result_t cr = result_for(s.op_id, FSA_RESULT_CONFLICT, 0);
    cr.current_version = 2;
    cr.current_fields = "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":0,"
                        "\"expirytime\":0,\"other_info\":{\"x\":1},\"people_id\":\"\"}";
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &cr, 1));
    int64_t after = 0;
    assert_fsa_ok(fsa_journal_changes_last(f->j, &after));
    fsa_rec_t again;
    assert_fsa_ok(fsa_conflict_resolve(f->j, s.op_id, true, FSA_RESOLVED_REBASED, &again));
    fsa_change_t ch[64];
    size_t n = changes(f->j, after, ch);
    assert_int_equal(n, 1);
    assert_int_equal(ch[0].reason, FSA_CHANGE_REBASED);
    assert_string_equal(ch[0].op_id, again.op_id);
    assert_int_equal(ch[0].version, 2);
}

static void test_fsa_outbox_op_state__through_compaction(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t c, t;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &c));
    assert_fsa_ok(fsa_journal_transition(f->j, FSA_TYPE_TICKET, "T1", "OPEN", NULL, &t));
    fsa_op_state_t s = FSA_OPSTATE_DONE;
    assert_fsa_ok(fsa_outbox_op_state(f->j, c.op_id, &s));
    assert_int_equal(s, FSA_OPSTATE_PENDING);
    fsa_op_result_t r[2] = {result_for(c.op_id, FSA_RESULT_APPLIED, 1),
                            result_for(t.op_id, FSA_RESULT_REJECTED, 0)};
    assert_fsa_ok(fsa_outbox_apply_results(f->j, r, 2));
    assert_fsa_ok(fsa_outbox_op_state(f->j, t.op_id, &s));
    assert_int_equal(s, FSA_OPSTATE_REJECTED);
    /* The applied op left the outbox with its result: its id answers from done_ops at once. */
    fsa_op_t op;
    assert_int_equal(fsa_outbox_find(f->j, c.op_id, &op, NULL), FSA_ENOTFOUND);
    s = FSA_OPSTATE_PENDING;
    assert_fsa_ok(fsa_outbox_op_state(f->j, c.op_id, &s));
    assert_int_equal(s, FSA_OPSTATE_DONE);
    size_t removed = 9;
    assert_fsa_ok(fsa_outbox_compact(f->j, 3600 * 1000, &removed));
    assert_int_equal(removed, 0); /* nothing left to move: the rejected op stays */
    s = FSA_OPSTATE_PENDING;
    assert_fsa_ok(fsa_outbox_op_state(f->j, c.op_id, &s));
    assert_int_equal(s, FSA_OPSTATE_DONE);
    assert_fsa_ok(fsa_outbox_op_state(f->j, t.op_id, &s));
    assert_int_equal(s, FSA_OPSTATE_REJECTED);
    /* past the audit period the done op's id is forgotten, the rejected op is not */
    fsa_sim_advance(f->sim, (int64_t)2 * 3600 * 1000 * FSA_NS_PER_MS);
    assert_fsa_ok(fsa_outbox_compact(f->j, 3600 * 1000, NULL));
    assert_int_equal(fsa_outbox_op_state(f->j, c.op_id, &s), FSA_ENOTFOUND);
    assert_fsa_ok(fsa_outbox_op_state(f->j, t.op_id, &s));
    assert_int_equal(s, FSA_OPSTATE_REJECTED);
    assert_int_equal(fsa_outbox_op_state(f->j, "00000000-0000-4000-8000-000000000000", &s),
                     FSA_ENOTFOUND);
    assert_int_equal(fsa_outbox_op_state(f->j, NULL, &s), FSA_EINVAL);
}

static void test_fsa_journal_changes_read__paged_and_bounded(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof id, "T%02d", i);
        assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, id, NULL, NULL, NULL));
    }
    fsa_change_t ch[4];
    size_t n = 0, total = 0;
    int64_t after = 0;
    do {
        assert_fsa_ok(fsa_journal_changes_read(f->j, after, ch, 4, &n));
        assert_true(n <= 4);
        for (size_t i = 0; i < n; i++) {
            char id[16];
            snprintf(id, sizeof id, "T%02zu", total + i);
            assert_string_equal(ch[i].id, id);
            assert_true(ch[i].seq > after);
            after = ch[i].seq;
        }
        total += n;
    } while (n > 0);
    assert_int_equal(total, 10);
    assert_int_equal(fsa_journal_changes_read(f->j, 0, ch, 0, &n), FSA_EINVAL);
    assert_int_equal(fsa_journal_changes_read(NULL, 0, ch, 4, &n), FSA_EINVAL);
    assert_int_equal(n, 0);
}

static void test_fsa_outbox_compact__prunes_old_changes_only_beyond_the_newest(void **state)
{
    fixture_t *f = *state;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, NULL));
    /* Two hours later the row is old, but it is among the newest FSA_CHANGES_KEEP_ROWS: kept. */
    f->port->sleep(f->port->ctx, 2 * 3600 * FSA_NS_PER_S);
    assert_fsa_ok(fsa_outbox_compact(f->j, 0, NULL));
    fsa_change_t ch[64];
    assert_int_equal(changes(f->j, 0, ch), 1);
    /* Past the row budget, the old rows go and the new ones stay. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    char sql[256];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) "
             "INSERT INTO changes(type, id, version, reason, op_id, at_ms) "
             "SELECT 2, 'X', 0, 0, '', %lld FROM n",
             FSA_CHANGES_KEEP_ROWS, (long long)(f->port->wall_now(f->port->ctx).ms));
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_fsa_ok(fsa_outbox_compact(f->j, 0, NULL));
    size_t n = changes(f->j, 0, ch);
    assert_int_equal(n, 64);
    assert_string_equal(ch[0].id, "X"); /* T1's row is gone */
}

static void test_fsa_journal_open__v1_journal_gains_the_change_log(void **state)
{
    fixture_t *f = *state;
    fsa_journal_close(f->j);
    f->j = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    /* What schemas 2, 5 and 6 added goes, and what schema 4 dropped comes back: the file is as
     * schema 1 left it. */
    make_v5(db);
    assert_int_equal(sqlite3_exec(db,
                                  "DROP TABLE changes; DROP INDEX outbox_closed; "
                                  "DROP INDEX outbox_by_group; "
                                  "CREATE INDEX done_ops_by_time ON done_ops(done_ms); "
                                  "PRAGMA user_version = 1",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    fsa_journal_opts_t o = {0};
    char err[256];
    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err));
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T9", NULL, NULL, NULL));
    fsa_change_t ch[64];
    assert_int_equal(changes(f->j, 0, ch), 1);
}

/* ---- schema 3: the outbox and the change log without AUTOINCREMENT ---- */

/* Every row of a query as text, one line per row (for before/after comparisons). */
static char *dump(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    size_t cap = 1 << 16, len = 0;
    char *out = fsa_calloc(1, cap);
    assert_non_null(out);
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            const unsigned char *v = sqlite3_column_text(st, i);
            int w = snprintf(out + len, cap - len, "%s|", v != NULL ? (const char *)v : "NULL");
            assert_true(w >= 0 && (size_t)w < cap - len);
            len += (size_t)w;
        }
        assert_true(len + 1 < cap);
        out[len++] = '\n';
    }
    sqlite3_finalize(st);
    return out;
}

static int64_t q_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

#define OUTBOX_ROWS "SELECT * FROM outbox ORDER BY seq"
#define CONFLICT_ROWS "SELECT * FROM conflicts ORDER BY seq"
#define CHANGE_ROWS "SELECT * FROM changes ORDER BY seq"

/* Turns a journal of this schema back into schema 2 as schema 2's DDL made it (storage/db.c,
 * steps 0 -> 1 and 1 -> 2): outbox, conflicts and changes with AUTOINCREMENT, no trigger, done_ops
 * with its index by time, the outbox's last seq in sqlite_sequence (last_seq: as if the ops above
 * its rows were compacted). */
static void make_v2(sqlite3 *db, int64_t last_seq)
{
    make_v5(db);
    char sql[4096];
    snprintf(
        sql, sizeof sql,
        "BEGIN;"
        "DROP TRIGGER IF EXISTS outbox_keeps_last_seq;"
        "CREATE INDEX IF NOT EXISTS done_ops_by_time ON done_ops(done_ms);"
        "DELETE FROM sync_state WHERE k = 'outbox_last_deleted';"
        "CREATE TABLE outbox_v2(seq INTEGER PRIMARY KEY AUTOINCREMENT, op_id TEXT NOT NULL UNIQUE,"
        "  at_ms INTEGER NOT NULL, kind INTEGER NOT NULL, type INTEGER NOT NULL, id TEXT NOT NULL,"
        "  grp TEXT NOT NULL DEFAULT '', field TEXT NOT NULL DEFAULT '',"
        "  base_version INTEGER NOT NULL DEFAULT 0, by_n INTEGER NOT NULL DEFAULT 0,"
        "  from_s TEXT NOT NULL DEFAULT '', to_s TEXT NOT NULL DEFAULT '',"
        "  akey TEXT NOT NULL DEFAULT '', max_len INTEGER NOT NULL DEFAULT 0, payload TEXT,"
        "  prior TEXT, state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
        "  result_version INTEGER, done_ms INTEGER);"
        "INSERT INTO outbox_v2 SELECT * FROM outbox;"
        "CREATE TABLE conflicts_v2(seq INTEGER PRIMARY KEY REFERENCES outbox_v2(seq),"
        "  op_id TEXT NOT NULL, outcome TEXT NOT NULL, code TEXT NOT NULL DEFAULT '',"
        "  reason TEXT NOT NULL DEFAULT '', server_version INTEGER, server_fields TEXT,"
        "  created_ms INTEGER NOT NULL, decision TEXT NOT NULL DEFAULT '', resolution TEXT,"
        "  resolved_ms INTEGER);"
        "INSERT INTO conflicts_v2 SELECT * FROM conflicts;"
        "CREATE TABLE changes_v2(seq INTEGER PRIMARY KEY AUTOINCREMENT, type INTEGER NOT NULL,"
        "  id TEXT NOT NULL, version INTEGER NOT NULL, reason INTEGER NOT NULL,"
        "  op_id TEXT NOT NULL DEFAULT '', at_ms INTEGER NOT NULL);"
        "INSERT INTO changes_v2 SELECT * FROM changes;"
        "DROP TABLE conflicts; DROP TABLE outbox; DROP TABLE changes;"
        "ALTER TABLE outbox_v2 RENAME TO outbox;"
        "ALTER TABLE conflicts_v2 RENAME TO conflicts;"
        "ALTER TABLE changes_v2 RENAME TO changes;"
        "CREATE INDEX outbox_by_entity ON outbox(type, id, state, seq);"
        "CREATE INDEX outbox_open ON outbox(seq, state) WHERE state IN (0, 1);"
        "CREATE INDEX outbox_done ON outbox(seq) WHERE state = 2;"
        "CREATE INDEX outbox_by_group ON outbox(grp, state) WHERE grp != '';"
        "UPDATE sqlite_sequence SET seq = %lld WHERE name = 'outbox';"
        "PRAGMA user_version = 2;"
        "COMMIT;",
        (long long)last_seq);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("making a schema 2 journal: %s", msg);
    char *sql_now = dump(db, "SELECT sql FROM sqlite_master WHERE name = 'outbox'");
    assert_non_null(strstr(sql_now, "AUTOINCREMENT"));
    fsa_free(sql_now);
}

/* What a schema is made of, whatever the text that made it (a renamed table's CREATE statement
 * is rewritten by SQLite): tables and their columns, indexes and their keys and WHERE clauses,
 * foreign keys, triggers, and which tables are AUTOINCREMENT. */
static char *schema_signature(sqlite3 *db)
{
    static const char *const parts[] = {
        "SELECT m.name, p.* FROM sqlite_master m JOIN pragma_table_xinfo(m.name) p "
        "WHERE m.type = 'table' ORDER BY m.name, p.cid",
        "SELECT m.name, m.tbl_name, p.* FROM sqlite_master m JOIN pragma_index_xinfo(m.name) p "
        "WHERE m.type = 'index' ORDER BY m.name, p.seqno",
        "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND "
        "sql IS NOT NULL ORDER BY name",
        "SELECT m.name, p.* FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) p "
        "WHERE m.type = 'table' ORDER BY m.name, p.id",
        "SELECT name FROM sqlite_master WHERE sql LIKE '%AUTOINCREMENT%' ORDER BY name",
        "PRAGMA user_version",
    };
    size_t cap = 1 << 17, len = 0;
    char *out = fsa_calloc(1, cap);
    assert_non_null(out);
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        char *d = dump(db, parts[i]);
        size_t n = strlen(d);
        assert_true(len + n + 2 < cap);
        len += (size_t)snprintf(out + len, cap - len, "%s#", d);
        fsa_free(d);
    }
    return out;
}

/* The schema_signature of a journal created now, in a directory of its own (the caller frees it).
 */
static char *new_journal_schema(fixture_t *f)
{
    test_dir_t dir;
    test_dir_make(&dir);
    fsa_journal_t *j = NULL;
    fsa_journal_opts_t co = {.create = true};
    char err[256];
    assert_fsa_ok(fsa_journal_open(f->port, dir.path, &co, &j, err, sizeof err));
    fsa_journal_close(j);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(dir.path, &db), SQLITE_OK);
    char *sig = schema_signature(db);
    sqlite3_close(db);
    test_dir_remove(&dir);
    return sig;
}

/* A journal of schema 2 (pending, in-flight, done and parked ops, a group, changes, the top of
 * the outbox compacted away) opens through schema 3 as the current schema with every row as it
 * was, every conflict with its op, and the seqs it gave never given again; a migration that fails
 * leaves schema 2 as it was. */
static void test_fsa_journal_open__v2_journal_migrates_to_v3(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t a, b, c;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &a));
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T2", NULL, NULL, &b));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T2", "{\"priority\":\"HIGH\"}", NULL, &c));
    fsa_op_t grp[2] = {{.kind = FSA_OP_CREATE, .type = FSA_TYPE_TICKET, .id = "T3"},
                       {.kind = FSA_OP_INCREMENT, .type = FSA_TYPE_TICKET, .id = "T3", .by = 2}};
    snprintf(grp[1].field, sizeof grp[1].field, "level");
    grp[0].json = (char *)(uintptr_t) "{}";
    assert_fsa_ok(fsa_journal_record_group(f->j, grp, 2, NULL, NULL));
    fsa_op_t sent[3] = {{.seq = a.seq}, {.seq = b.seq}, {.seq = c.seq}};
    assert_fsa_ok(fsa_outbox_mark_inflight(f->j, sent, 3));
    fsa_op_result_t res[2] = {result_for(a.op_id, FSA_RESULT_APPLIED, 1),
                              result_for(c.op_id, FSA_RESULT_CONFLICT, 0)};
    res[1].current_version = 4;
    res[1].current_fields = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                            "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"LOW\"}";
    assert_fsa_ok(fsa_outbox_apply_results(f->j, res, 2));
    assert_fsa_ok(fsa_outbox_compact(f->j, 3600 * 1000, NULL));
    fsa_journal_close(f->j);
    f->j = NULL;

    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    int64_t max_seq = q_int(db, "SELECT max(seq) FROM outbox");
    assert_int_equal(max_seq, 5);
    assert_int_equal(q_int(db, "SELECT count(*) FROM conflicts"), 1);
    make_v2(db, max_seq + 3); /* ops 6, 7, 8 were done and compacted */
    char *outbox = dump(db, OUTBOX_ROWS), *conflicts = dump(db, CONFLICT_ROWS);
    char *changes_before = dump(db, CHANGE_ROWS);
    int64_t last_change = q_int(db, "SELECT max(seq) FROM changes");
    /* A migration that fails (here: a name it needs is taken) leaves schema 2 whole. */
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE changes_v3(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    fsa_journal_opts_t o = {0};
    char err[256];
    assert_int_equal(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err), FSA_EIO);
    assert_non_null(strstr(err, "migration to version 3 failed"));
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(q_int(db, "PRAGMA user_version"), 2);
    assert_int_equal(q_int(db, "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"),
                     max_seq + 3);
    char *again = dump(db, OUTBOX_ROWS);
    assert_string_equal(again, outbox);
    fsa_free(again);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE changes_v3", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err));
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(q_int(db, "PRAGMA user_version"), FSA_SCHEMA_VERSION);
    char *schema = dump(db, "SELECT name, sql FROM sqlite_master WHERE name IN "
                            "('outbox', 'changes', 'conflicts') ORDER BY name");
    assert_null(strstr(schema, "AUTOINCREMENT"));
    assert_null(strstr(schema, "REFERENCES")); /* schema 5 dropped conflicts' foreign key */
    assert_null(strstr(schema, "_v3"));
    fsa_free(schema);
    assert_int_equal(q_int(db, "SELECT count(*) FROM sqlite_sequence WHERE name IN "
                               "('outbox', 'changes')"),
                     0);
    assert_int_equal(q_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                               "tbl_name = 'outbox'"),
                     4); /* op_id's own, by entity, by group, and schema 5's outbox_closed */
    char *v = dump(db, OUTBOX_ROWS);
    assert_string_equal(v, outbox);
    fsa_free(v);
    v = dump(db, CONFLICT_ROWS);
    assert_string_equal(v, conflicts);
    fsa_free(v);
    v = dump(db, CHANGE_ROWS);
    assert_string_equal(v, changes_before);
    fsa_free(v);
    sqlite3_close(db);
    assert_fsa_ok(fsa_journal_integrity(f->j, err, sizeof err));
    /* the same schema as a journal created as it is now */
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    char *sig_fresh = new_journal_schema(f), *sig_migrated = schema_signature(db);
    /* schema 4 dropped schema 3's trigger and schema 1's index by done time */
    assert_null(strstr(sig_fresh, "outbox_keeps_last_seq"));
    assert_null(strstr(sig_fresh, "done_ops_by_time"));
    assert_non_null(strstr(sig_fresh, "#lock_holders|\n#")); /* the one AUTOINCREMENT left */
    assert_string_equal(sig_migrated, sig_fresh);
    fsa_free(sig_fresh);
    fsa_free(sig_migrated);
    sqlite3_close(db);

    /* The seqs go on above the last one schema 2 gave, compacted or not. */
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.last_seq, max_seq + 3);
    assert_int_equal(st.pending, 3);  /* open: T2 create and T3 group */
    assert_int_equal(st.inflight, 1); /* T1's create was done; T2's: sent, no answer */
    assert_int_equal(st.conflicts, 1);
    fsa_rec_t d;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T4", NULL, NULL, &d));
    assert_int_equal(d.seq, max_seq + 4);
    fsa_change_t ch[64];
    assert_int_equal(changes(f->j, last_change, ch), 1);
    assert_int_equal(ch[0].seq, last_change + 1);
    assert_string_equal(ch[0].op_id, d.op_id);
    /* the parked op is still resolvable (its conflict row points at its outbox row) */
    fsa_rec_t re;
    assert_fsa_ok(fsa_conflict_resolve(f->j, c.op_id, true, FSA_RESOLVED_LOCAL, &re));
    assert_int_equal(re.seq, max_seq + 5);
    fsa_free(outbox);
    fsa_free(conflicts);
    fsa_free(changes_before);
}

/* ---- schema 6: no index of op ids ---- */

/* Turns a journal of this schema back into schema 5 (storage/db.c): the outbox with its UNIQUE op
 * id, and every base stored whole, as base_fields. The op id salt stays, so that the ids the test
 * made still carry their seqs (a journal of schema 5 has none, and ids of version 7: the 5 -> 6
 * test makes them so). */
static void make_v5(sqlite3 *db)
{
    char *msg = NULL;
    if (sqlite3_exec(db,
                     "BEGIN;"
                     "CREATE TABLE outbox_v5(seq INTEGER PRIMARY KEY, op_id TEXT NOT NULL UNIQUE,"
                     "  at_ms INTEGER NOT NULL, kind INTEGER NOT NULL, type INTEGER NOT NULL,"
                     "  id TEXT NOT NULL, grp TEXT NOT NULL DEFAULT '',"
                     "  field TEXT NOT NULL DEFAULT '', base_version INTEGER NOT NULL DEFAULT 0,"
                     "  by_n INTEGER NOT NULL DEFAULT 0, from_s TEXT NOT NULL DEFAULT '',"
                     "  to_s TEXT NOT NULL DEFAULT '', akey TEXT NOT NULL DEFAULT '',"
                     "  max_len INTEGER NOT NULL DEFAULT 0, payload TEXT, prior TEXT,"
                     "  state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
                     "  result_version INTEGER, done_ms INTEGER);"
                     "INSERT INTO outbox_v5 SELECT * FROM outbox;"
                     "DROP TABLE outbox;"
                     "ALTER TABLE outbox_v5 RENAME TO outbox;"
                     "CREATE INDEX outbox_by_entity ON outbox(type,id,state,seq);"
                     "CREATE INDEX outbox_by_group ON outbox(grp,state) WHERE grp!='';"
                     "CREATE INDEX outbox_closed ON outbox(seq) WHERE state!=0;"
                     "UPDATE entities SET base = local_fields WHERE base = '';"
                     "ALTER TABLE entities RENAME base TO base_fields;"
                     "PRAGMA user_version = 5;"
                     "COMMIT;",
                     NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("making a schema 5 journal: %s", msg);
}

/* A journal of schema 5, its ops' ids random as an older journal made them (pending, parked by a
 * rejection and by a conflict, one applied and gone to done_ops), opens as schema 6 with the
 * schema of a new journal and its rows as they were; every such id is still found (the op's
 * state, the op, its conflict, its result), and a new op's id carries its seq. A migration that
 * fails leaves schema 5 whole, and none is made while another program has the journal open. */
static void test_fsa_journal_open__v5_journal_migrates_to_v6(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t r[5];
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "T%d", i);
        assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, id, NULL, NULL, &r[i]));
    }
    fsa_journal_close(f->j);
    f->j = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    make_v5(db);
    /* an older journal's ids: random, carrying nothing; no salt */
    assert_int_equal(sqlite3_exec(db,
                                  "UPDATE outbox SET op_id = printf('%08x-1111-4222-8333-%012x', "
                                  "  abs(random()) % 4294967296, seq * 7919);"
                                  "DELETE FROM sync_state WHERE k = 'op_id_salt';",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    char id[5][FSA_UUID_STR_LEN];
    for (int i = 0; i < 5; i++) {
        sqlite3_stmt *q;
        assert_int_equal(
            sqlite3_prepare_v2(db, "SELECT op_id FROM outbox WHERE seq = ?1", -1, &q, NULL),
            SQLITE_OK);
        sqlite3_bind_int64(q, 1, r[i].seq);
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        snprintf(id[i], sizeof id[i], "%s", (const char *)sqlite3_column_text(q, 0));
        sqlite3_finalize(q);
    }
    char *outbox = dump(db, OUTBOX_ROWS);
    /* A migration that fails (the name of its copy of the outbox is taken) leaves schema 5. */
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE outbox_v6(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    fsa_journal_opts_t o = {0};
    char err[256];
    assert_int_equal(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err), FSA_EIO);
    assert_non_null(strstr(err, "migration to version 6 failed"));
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(q_int(db, "PRAGMA user_version"), 5);
    assert_int_equal(q_int(db, "SELECT count(*) FROM sqlite_master WHERE name = "
                               "'sqlite_autoindex_outbox_1'"),
                     1);
    assert_int_equal(q_int(db, "SELECT count(*) FROM sync_state WHERE k = 'op_id_salt'"), 0);
    char *v = dump(db, OUTBOX_ROWS);
    assert_string_equal(v, outbox);
    fsa_free(v);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE outbox_v6", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    /* Not while another program (an older build, say) has it open: it would go on by schema 5. */
    fsa_port_t *real = fsa_port_posix();
    fsa_flock_t *other = NULL;
    char upath[sizeof f->dir.path + 8];
    snprintf(upath, sizeof upath, "%s.users", f->dir.path);
    assert_fsa_ok(real->flock_open(real->ctx, upath, &other));
    assert_fsa_ok(real->flock_try_shared(real->ctx, other, 0));
    assert_int_equal(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err), FSA_EBUSY);
    assert_non_null(strstr(err, "has schema 5 and other programs open: stop them to upgrade it"));
    real->flock_close(real->ctx, other);
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(q_int(db, "PRAGMA user_version"), 5);
    sqlite3_close(db);

    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err));
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(q_int(db, "PRAGMA user_version"), FSA_SCHEMA_VERSION);
    v = dump(db, OUTBOX_ROWS);
    assert_string_equal(v, outbox);
    fsa_free(v);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox INDEXED BY outbox_legacy_ids "
                               "WHERE substr(op_id, 15, 1) <> '8' AND op_id > ''"),
                     5);
    assert_int_equal(q_int(db, "SELECT count(*) FROM sync_state WHERE k = 'op_id_salt'"), 1);
    /* an older build's statements fail rather than read a base stored once as the text "" */
    sqlite3_stmt *old = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT base_fields FROM entities", -1, &old, NULL),
                     SQLITE_ERROR);
    char *sig_fresh = new_journal_schema(f), *sig_migrated = schema_signature(db);
    assert_null(strstr(sig_fresh, "sqlite_autoindex_outbox"));
    assert_non_null(strstr(sig_fresh, "outbox_legacy_ids"));
    assert_string_equal(sig_migrated, sig_fresh);
    fsa_free(sig_fresh);
    fsa_free(sig_migrated);
    sqlite3_close(db);
    assert_fsa_ok(fsa_journal_integrity(f->j, err, sizeof err));

    /* the old ids: a rejection and a conflict park two ops, a result takes a third away */
    fsa_op_result_t res[3] = {result_for(id[1], FSA_RESULT_REJECTED, 0),
                              result_for(id[2], FSA_RESULT_CONFLICT, 0),
                              result_for(id[0], FSA_RESULT_APPLIED, 1)};
    res[1].current_version = 3;
    res[1].current_fields = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                            "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"LOW\"}";
    assert_fsa_ok(fsa_outbox_apply_results(f->j, res, 3));
    fsa_op_state_t os;
    static const fsa_op_state_t want[5] = {FSA_OPSTATE_DONE, FSA_OPSTATE_REJECTED,
                                           FSA_OPSTATE_CONFLICT, FSA_OPSTATE_PENDING,
                                           FSA_OPSTATE_PENDING};
    for (int i = 0; i < 5; i++) {
        assert_fsa_ok(fsa_outbox_op_state(f->j, id[i], &os));
        assert_int_equal(os, want[i]);
    }
    fsa_op_t op;
    assert_fsa_ok(fsa_outbox_find(f->j, id[3], &op, NULL));
    assert_int_equal(op.seq, r[3].seq);
    fsa_op_clear(&op);
    fsa_conflict_t c;
    assert_fsa_ok(fsa_conflict_get(f->j, id[2], &c));
    assert_int_equal(c.op.seq, r[2].seq);
    fsa_conflict_clear(&c);
    /* the ids the new journal made for them before are not theirs any more */
    assert_int_equal(fsa_outbox_op_state(f->j, r[3].op_id, &os), FSA_ENOTFOUND);
    /* a new op: its id carries its seq, and it is not in the old ids' index */
    fsa_rec_t n;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T9", NULL, NULL, &n));
    assert_int_equal(fsa__jn_op_id_seq(f->j, n.op_id), n.seq);
    assert_fsa_ok(fsa_outbox_op_state(f->j, n.op_id, &os));
    assert_int_equal(os, FSA_OPSTATE_PENDING);
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox INDEXED BY outbox_legacy_ids "
                               "WHERE substr(op_id, 15, 1) <> '8' AND op_id > ''"),
                     4);
    sqlite3_close(db);
    fsa_free(outbox);
}

/* ---- schema 5: the queue's indexes ---- */

/* Turns a journal of this schema back into schema 4 (storage/db.c): outbox_open and outbox_done
 * instead of outbox_closed, and conflicts with its foreign key to the outbox. */
static void make_v4(sqlite3 *db)
{
    make_v5(db);
    char *msg = NULL;
    if (sqlite3_exec(db,
                     "BEGIN;"
                     "DROP INDEX outbox_closed;"
                     "CREATE INDEX outbox_open ON outbox(seq, state) WHERE state IN (0, 1);"
                     "CREATE INDEX outbox_done ON outbox(seq) WHERE state = 2;"
                     "CREATE TABLE conflicts_v4(seq INTEGER PRIMARY KEY REFERENCES outbox(seq),"
                     "  op_id TEXT NOT NULL, outcome TEXT NOT NULL, code TEXT NOT NULL DEFAULT '',"
                     "  reason TEXT NOT NULL DEFAULT '', server_version INTEGER,"
                     "  server_fields TEXT, created_ms INTEGER NOT NULL,"
                     "  decision TEXT NOT NULL DEFAULT '', resolution TEXT, resolved_ms INTEGER);"
                     "INSERT INTO conflicts_v4 SELECT * FROM conflicts;"
                     "DROP TABLE conflicts;"
                     "ALTER TABLE conflicts_v4 RENAME TO conflicts;"
                     "PRAGMA user_version = 4;"
                     "COMMIT;",
                     NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("making a schema 4 journal: %s", msg);
}

/* ---- schema 4: no trigger on the outbox, no index by time on done_ops ---- */

/* Turns a journal of this schema back into schema 3 as the 2 -> 3 step left it (storage/db.c):
 * schema 4's indexes, its trigger and done_ops' index by time. */
static void make_v3(sqlite3 *db)
{
    make_v4(db);
    char *msg = NULL;
    if (sqlite3_exec(db,
                     "BEGIN;"
                     "CREATE INDEX done_ops_by_time ON done_ops(done_ms);"
                     "CREATE TRIGGER outbox_keeps_last_seq AFTER DELETE ON outbox "
                     "  WHEN NOT EXISTS (SELECT 1 FROM outbox WHERE seq > old.seq) BEGIN "
                     "  INSERT INTO sync_state(k, v) VALUES('outbox_last_deleted', old.seq) "
                     "  ON CONFLICT(k) DO UPDATE SET v = max(v, excluded.v); END;"
                     "PRAGMA user_version = 3;"
                     "COMMIT;",
                     NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("making a schema 3 journal: %s", msg);
}

/* A journal of schema 3 whose top ops were answered and left opens as schema 4 with every row as
 * it was and the schema of a new journal; the next op still takes a seq above every one given,
 * and the done ids still answer. */
static void test_fsa_journal_open__v3_journal_migrates_to_v4(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t r[4];
    for (int i = 0; i < 4; i++) {
        char id[16];
        snprintf(id, sizeof id, "T%d", i);
        assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, id, NULL, NULL, &r[i]));
    }
    fsa_op_result_t res[2] = {result_for(r[2].op_id, FSA_RESULT_APPLIED, 1),
                              result_for(r[3].op_id, FSA_RESULT_APPLIED, 1)};
    assert_fsa_ok(fsa_outbox_apply_results(f->j, res, 2));
    fsa_journal_close(f->j);
    f->j = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    make_v3(db);
    char *outbox = dump(db, OUTBOX_ROWS);
    char *done = dump(db, "SELECT * FROM done_ops ORDER BY op_id");
    char *st = dump(db, "SELECT * FROM sync_state WHERE k = 'outbox_last_deleted'");
    assert_string_equal(st, "outbox_last_deleted|4|\n");
    sqlite3_close(db);

    fsa_journal_opts_t o = {0};
    char err[256];
    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err));
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(q_int(db, "PRAGMA user_version"), FSA_SCHEMA_VERSION);
    char *v = dump(db, OUTBOX_ROWS);
    assert_string_equal(v, outbox);
    fsa_free(v);
    v = dump(db, "SELECT * FROM done_ops ORDER BY op_id");
    assert_string_equal(v, done);
    fsa_free(v);
    v = dump(db, "SELECT * FROM sync_state WHERE k = 'outbox_last_deleted'");
    assert_string_equal(v, st);
    fsa_free(v);
    /* the same schema as a new journal's */
    char *sig_fresh = new_journal_schema(f), *sig_migrated = schema_signature(db);
    assert_string_equal(sig_migrated, sig_fresh);
    fsa_free(sig_fresh);
    fsa_free(sig_migrated);
    sqlite3_close(db);
    assert_fsa_ok(fsa_journal_integrity(f->j, err, sizeof err));

    fsa_op_state_t os;
    assert_fsa_ok(fsa_outbox_op_state(f->j, r[3].op_id, &os));
    assert_int_equal(os, FSA_OPSTATE_DONE);
    fsa_rec_t n;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T9", NULL, NULL, &n));
    assert_int_equal(n.seq, 5);
    /* and without the trigger, answering the new top op and the rest leaves the same promise */
    fsa_op_result_t all[3] = {result_for(r[0].op_id, FSA_RESULT_APPLIED, 1),
                              result_for(r[1].op_id, FSA_RESULT_APPLIED, 1),
                              result_for(n.op_id, FSA_RESULT_APPLIED, 1)};
    assert_fsa_ok(fsa_outbox_apply_results(f->j, all, 3));
    fsa_outbox_stats_t s;
    assert_fsa_ok(fsa_outbox_stats(f->j, &s));
    assert_int_equal(s.pending, 0);
    assert_int_equal(s.last_seq, 5);
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T10", NULL, NULL, &n));
    assert_int_equal(n.seq, 6);
    fsa_free(outbox);
    fsa_free(done);
    fsa_free(st);
}

/* A journal of schema 4 with every kind of outbox row (pending, in flight by the mark, rejected,
 * conflicted, and the done ops and in-flight marks of a journal older still) opens as schema 5
 * with the schema of a new journal, its rows and conflicts as they were, and the same figures,
 * queue and compaction as before; a migration that fails leaves schema 4 whole. */
static void test_fsa_journal_open__v4_journal_migrates_to_v5(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t r[7];
    for (int i = 0; i < 7; i++) {
        char id[16];
        snprintf(id, sizeof id, "T%d", i);
        assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, id, NULL, NULL, &r[i]));
    }
    fsa_op_t sent[2] = {{.seq = r[0].seq}, {.seq = r[1].seq}};
    assert_fsa_ok(fsa_outbox_mark_inflight(f->j, sent, 2));
    fsa_op_result_t res[2] = {result_for(r[1].op_id, FSA_RESULT_REJECTED, 0),
                              result_for(r[6].op_id, FSA_RESULT_CONFLICT, 0)};
    res[1].current_version = 3;
    res[1].current_fields = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                            "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"LOW\"}";
    assert_fsa_ok(fsa_outbox_apply_results(f->j, res, 2));
    fsa_journal_close(f->j);
    f->j = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    make_v4(db);
    /* What an older journal left: T2's op done and kept for the compaction, T0's (at the mark)
     * and T4's (above it) marked in flight by their state. */
    assert_int_equal(sqlite3_exec(db,
                                  "UPDATE outbox SET state = 2, done_ms = at_ms WHERE id = 'T2';"
                                  "UPDATE outbox SET state = 1 WHERE id IN ('T0', 'T4');",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    int64_t oldest = q_int(db, "SELECT at_ms FROM outbox WHERE id = 'T0'");
    char *outbox = dump(db, OUTBOX_ROWS), *conflicts = dump(db, CONFLICT_ROWS);
    assert_non_null(strstr(conflicts, "rejected"));
    assert_non_null(strstr(conflicts, "conflict"));
    assert_int_equal(q_int(db, "SELECT count(*) FROM pragma_foreign_key_list('conflicts')"), 1);
    /* A migration that fails (here: the name of its copy of the conflicts is taken, after the
     * indexes have changed) leaves schema 4 whole. */
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE conflicts_v5(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    fsa_journal_opts_t o = {0};
    char err[256];
    assert_int_equal(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err), FSA_EIO);
    assert_non_null(strstr(err, "migration to version 5 failed"));
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(q_int(db, "PRAGMA user_version"), 4);
    assert_int_equal(
        q_int(db,
              "SELECT count(*) FROM sqlite_master WHERE name IN ('outbox_open', 'outbox_done')"),
        2);
    assert_int_equal(q_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'outbox_closed'"),
                     0);
    assert_int_equal(q_int(db, "SELECT count(*) FROM pragma_foreign_key_list('conflicts')"), 1);
    char *v = dump(db, CONFLICT_ROWS);
    assert_string_equal(v, conflicts);
    fsa_free(v);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE conflicts_v5", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err));
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(q_int(db, "PRAGMA user_version"), FSA_SCHEMA_VERSION);
    v = dump(db, OUTBOX_ROWS);
    assert_string_equal(v, outbox);
    fsa_free(v);
    v = dump(db, CONFLICT_ROWS);
    assert_string_equal(v, conflicts);
    fsa_free(v);
    assert_int_equal(q_int(db, "SELECT count(*) FROM pragma_foreign_key_list('conflicts')"), 0);
    char *sig_fresh = new_journal_schema(f), *sig_migrated = schema_signature(db);
    assert_null(strstr(sig_fresh, "outbox_open"));
    assert_null(strstr(sig_fresh, "outbox_done"));
    assert_non_null(strstr(sig_fresh, "outbox_closed"));
    assert_string_equal(sig_migrated, sig_fresh);
    fsa_free(sig_fresh);
    fsa_free(sig_migrated);
    sqlite3_close(db);
    assert_fsa_ok(fsa_journal_integrity(f->j, err, sizeof err));

    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.pending, 4);   /* T0 and T4 (state 1), T3, T5 */
    assert_int_equal(st.inflight, 2);  /* T0 at the mark, T4 by its state above it */
    assert_int_equal(st.done, 1);      /* T2 */
    assert_int_equal(st.rejected, 1);  /* T1 */
    assert_int_equal(st.conflicts, 1); /* T6 */
    assert_int_equal(st.oldest_pending_at_ms, oldest);
    assert_int_equal(st.last_seq, r[6].seq);
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 4);
    const char *queue[] = {"T0", "T3", "T4", "T5"};
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(ops[i].id, queue[i]);
        fsa_op_clear(&ops[i]);
    }
    /* the compaction finds the done op through the new index, and its id still answers */
    size_t removed = 0;
    assert_fsa_ok(fsa_outbox_compact(f->j, 3600 * 1000, &removed));
    assert_int_equal(removed, 1);
    fsa_op_state_t os;
    assert_fsa_ok(fsa_outbox_op_state(f->j, r[2].op_id, &os));
    assert_int_equal(os, FSA_OPSTATE_DONE);
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.done, 0);
    assert_int_equal(st.pending, 4);
    assert_fsa_ok(fsa_journal_integrity(f->j, err, sizeof err));
    fsa_free(outbox);
    fsa_free(conflicts);
}

/* With no foreign key behind it, the integrity check says when a conflict has lost its op. */
static void test_fsa_journal_integrity__a_conflict_without_its_op(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t r;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &r));
    fsa_op_result_t res = result_for(r.op_id, FSA_RESULT_REJECTED, 0);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &res, 1));
    char err[256];
    assert_fsa_ok(fsa_journal_integrity(f->j, err, sizeof err));
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DELETE FROM outbox", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(fsa_journal_integrity(f->j, err, sizeof err), FSA_ECORRUPT);
    char want[128];
    snprintf(want, sizeof want, "conflict %lld (op %s) has no op in the outbox", (long long)r.seq,
             r.op_id);
    assert_string_equal(err, want);
}

/* The file's bytes (fsa_malloc'ed, *len set). */
static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long n = ftell(fp);
    assert_true(n > 0);
    rewind(fp);
    unsigned char *b = fsa_malloc((size_t)n);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, fp), (size_t)n);
    assert_int_equal(fclose(fp), 0);
    *len = (size_t)n;
    return b;
}

/* The journal at path made the bytes again, with no -wal or -shm beside it. */
static void write_all(const char *path, const unsigned char *b, size_t len)
{
    char side[160];
    for (const char *const *sfx = (const char *const[]){"-wal", "-shm", NULL}; *sfx != NULL;
         sfx++) {
        snprintf(side, sizeof side, "%s%s", path, *sfx);
        (void)unlink(side);
    }
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* The migration is one transaction under I/O faults too: with each write and each sync of the
 * journal's files failing in turn (EIO), the open either succeeds or fails with an error naming
 * the journal, and the next open, the disk whole again, finds every op as schema 2 had it. */
static void test_fsa_journal_open__v2_migration_under_io_faults(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(vfs_fault_install(), SQLITE_OK);
    vfs_fault_set_real_sync(false);
    fsa_rec_t r;
    for (int i = 0; i < 6; i++) {
        char id[16];
        snprintf(id, sizeof id, "T%d", i);
        assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, id, NULL, NULL, &r));
    }
    fsa_op_result_t res = result_for(r.op_id, FSA_RESULT_CONFLICT, 0);
    res.current_version = 2;
    res.current_fields = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                         "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"LOW\"}";
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &res, 1));
    fsa_journal_close(f->j);
    f->j = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    make_v2(db, 9);
    char *outbox = dump(db, OUTBOX_ROWS), *conflicts = dump(db, CONFLICT_ROWS);
    sqlite3_close(db);
    size_t len = 0;
    unsigned char *v2 = read_all(f->dir.path, &len);
    fsa_journal_opts_t o = {0};
    char err[320];
    int64_t points = 0;
    for (int64_t n = 1;; n++) {
        write_all(f->dir.path, v2, len);
        vfs_fault_plan_t plan = {
            .kinds = VFS_FAULT_WRITE | VFS_FAULT_SYNC, .nth = n, .flavour = VFS_FAULT_EIO};
        vfs_fault_arm(f->dir.path, &plan);
        fsa_status_t st = fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err);
        bool fired = vfs_fault_fired() > 0;
        vfs_fault_disarm();
        if (st == FSA_OK) {
            fsa_journal_close(f->j);
            f->j = NULL;
        } else if (strstr(err, f->dir.path) == NULL) {
            fail_msg("open with write/sync %lld failing: %s (%s)", (long long)n, fsa_status_str(st),
                     err);
        }
        if (!fired) {
            assert_fsa_ok(st);
            break;
        }
        points++;
        assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err));
        assert_fsa_ok(fsa_journal_integrity(f->j, err, sizeof err));
        fsa_outbox_stats_t s;
        assert_fsa_ok(fsa_outbox_stats(f->j, &s));
        assert_int_equal(s.last_seq, 9);
        assert_int_equal(s.conflicts, 1);
        fsa_journal_close(f->j);
        f->j = NULL;
        assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
        assert_int_equal(q_int(db, "PRAGMA user_version"), FSA_SCHEMA_VERSION);
        char *o2 = dump(db, OUTBOX_ROWS), *c2 = dump(db, CONFLICT_ROWS);
        assert_string_equal(o2, outbox);
        assert_string_equal(c2, conflicts);
        fsa_free(o2);
        fsa_free(c2);
        sqlite3_close(db);
    }
    fprintf(stderr, "# schema 2 -> 3 under write/sync EIO: %lld fault points\n", (long long)points);
    assert_true(points > 0);
    vfs_fault_set_real_sync(true);
    fsa_free(v2);
    fsa_free(outbox);
    fsa_free(conflicts);
    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err));
}

/* Without AUTOINCREMENT a seq is still never given twice: compaction that empties the outbox,
 * done ops never marked in flight included, leaves the next op above every seq given. */
static void test_fsa_outbox_compact__seq_never_reused(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t r[3];
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "T%d", i);
        assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, id, NULL, NULL, &r[i]));
        assert_int_equal(r[i].seq, i + 1);
    }
    /* the last two answered without being marked in flight: seq 3 is above the mark */
    for (int i = 0; i < 3; i++) {
        fsa_op_result_t res = result_for(r[i].op_id, FSA_RESULT_APPLIED, 1);
        if (i == 0) {
            fsa_op_t op = {.seq = r[0].seq};
            assert_fsa_ok(fsa_outbox_mark_inflight(f->j, &op, 1));
        }
        assert_fsa_ok(fsa_outbox_apply_results(f->j, &res, 1));
    }
    /* Applied ops leave the outbox with their results: it is empty before any compaction. */
    size_t removed = 9;
    assert_fsa_ok(fsa_outbox_compact(f->j, 3600 * 1000, &removed));
    assert_int_equal(removed, 0);
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.pending + st.done, 0);
    assert_int_equal(st.last_seq, 3);
    fsa_rec_t n;
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"priority\":\"HIGH\"}", NULL, &n));
    assert_int_equal(n.seq, 4);
    fsa_op_state_t os;
    assert_fsa_ok(fsa_outbox_op_state(f->j, n.op_id, &os));
    assert_int_equal(os, FSA_OPSTATE_PENDING);
    /* a group takes consecutive seqs above it, and a rolled-back write takes none */
    assert_int_equal(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &n), FSA_EEXISTS);
    fsa_op_t grp[2] = {{.kind = FSA_OP_CREATE, .type = FSA_TYPE_TICKET, .id = "T7"},
                       {.kind = FSA_OP_CREATE, .type = FSA_TYPE_TICKET, .id = "T8"}};
    grp[0].json = grp[1].json = (char *)(uintptr_t) "{}";
    assert_fsa_ok(fsa_journal_record_group(f->j, grp, 2, NULL, &n));
    assert_int_equal(n.seq, 5);
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.last_seq, 6);
    /* changes keep counting too: pruning never takes the newest row */
    int64_t last = 0;
    assert_fsa_ok(fsa_journal_changes_last(f->j, &last));
    f->port->sleep(f->port->ctx, 2 * 3600 * FSA_NS_PER_S);
    assert_fsa_ok(fsa_outbox_compact(f->j, 0, NULL));
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T9", NULL, NULL, &n));
    fsa_change_t ch[64];
    assert_int_equal(changes(f->j, last, ch), 1);
    assert_int_equal(ch[0].seq, last + 1);
}

static void test_fsa_journal_gone__drops_unless_pending(void **state)
{
    fixture_t *f = *state;
    const char *t = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"P1\","
                    "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}";
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 1, t));
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T2", 1, t));
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T2", "level", 1, NULL, &rec));
    int64_t after = 0;
    assert_fsa_ok(fsa_journal_changes_last(f->j, &after));
    bool dropped = false;
    assert_fsa_ok(fsa_journal_gone(f->j, FSA_TYPE_TICKET, "T1", 2, &dropped));
    assert_true(dropped);
    assert_int_equal(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, NULL), FSA_ENOTFOUND);
    /* T2 has an op pending: kept, with its local view */
    assert_fsa_ok(fsa_journal_gone(f->j, FSA_TYPE_TICKET, "T2", 2, &dropped));
    assert_false(dropped);
    int64_t pending = 0;
    assert_fsa_ok(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T2", NULL, NULL, &pending));
    assert_int_equal(pending, 1);
    fsa_change_t ch[64];
    size_t n = changes(f->j, after, ch);
    assert_int_equal(n, 1);
    assert_int_equal(ch[0].reason, FSA_CHANGE_GONE);
    assert_string_equal(ch[0].id, "T1");
    assert_int_equal(ch[0].version, 2);
    /* an entity never seen: nothing to drop, nothing logged */
    assert_fsa_ok(fsa_journal_gone(f->j, FSA_TYPE_TICKET, "T9", 2, &dropped));
    assert_false(dropped);
    assert_int_equal(changes(f->j, after, ch), 1);
    assert_int_equal(fsa_journal_gone(f->j, FSA_TYPE_TICKET, "bad id", 2, &dropped), FSA_EINVAL);
}

/* An entity kept at its `gone` for ops of ours is dropped by the sweep once they are answered and
 * their conflicts closed; one a pull brought back meanwhile is kept. A pull says `gone` once:
 * without the sweep, the entity stayed for good, as it was when it left. */
static void test_fsa_journal_gone_sweep__drops_once_idle(void **state)
{
    fixture_t *f = *state;
    const char *t = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"P1\","
                    "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}";
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 1, t));
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T2:x", 1, t));
    fsa_rec_t a, b;
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", 1, NULL, &a));
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T2:x", "level", 1, NULL, &b));
    bool dropped = true;
    assert_fsa_ok(fsa_journal_gone(f->j, FSA_TYPE_TICKET, "T1", 2, &dropped));
    assert_false(dropped);
    assert_fsa_ok(fsa_journal_gone(f->j, FSA_TYPE_TICKET, "T2:x", 2, &dropped));
    assert_false(dropped);
    size_t n = 99;
    assert_fsa_ok(fsa_journal_gone_sweep(f->j, &n));
    assert_int_equal(n, 0); /* both pending */
    /* T1's op is refused (out of scope now): parked, its conflict open */
    fsa_op_result_t r = result_for(a.op_id, FSA_RESULT_REJECTED, 0);
    snprintf(r.code, sizeof r.code, "forbidden");
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    assert_fsa_ok(fsa_journal_gone_sweep(f->j, &n));
    assert_int_equal(n, 0);
    assert_fsa_ok(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, NULL));
    /* T2:x comes back into scope, unchanged (its version as at the gone), and its op lands */
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T2:x", 2, t));
    r = result_for(b.op_id, FSA_RESULT_APPLIED, 3);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    /* a person lets the server's refusal stand: T1 is idle */
    assert_fsa_ok(fsa_conflict_resolve(f->j, a.op_id, false, FSA_RESOLVED_SERVER, NULL));
    int64_t after = 0;
    assert_fsa_ok(fsa_journal_changes_last(f->j, &after));
    assert_fsa_ok(fsa_journal_gone_sweep(f->j, &n));
    assert_int_equal(n, 1);
    assert_int_equal(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, NULL), FSA_ENOTFOUND);
    assert_fsa_ok(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T2:x", NULL, NULL, NULL));
    fsa_change_t ch[64];
    assert_int_equal(changes(f->j, after, ch), 1);
    assert_int_equal(ch[0].reason, FSA_CHANGE_GONE);
    assert_string_equal(ch[0].id, "T1");
    assert_int_equal(ch[0].version, 2);
    /* nothing is left to sweep */
    assert_fsa_ok(fsa_journal_gone_sweep(f->j, &n));
    assert_int_equal(n, 0);
    assert_int_equal(changes(f->j, after, ch), 1);
    assert_int_equal(fsa_journal_gone_sweep(NULL, &n), FSA_EINVAL);
}

/* The sync_state rows whose key starts with "gone:" in the journal at path. */
static int gone_notes(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM sync_state WHERE k LIKE 'gone:%'",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* The sweep reads every note: 70 entities kept busy at their `gone` (more than a page of 64) do
 * not hide the one after them that became idle. A note this build cannot read (another build's
 * type) is dropped with a warning, and the sweep goes on: it must not fail every later cycle. */
static void test_fsa_journal_gone_sweep__every_note_and_a_bad_one(void **state)
{
    fixture_t *f = *state;
    const char *t = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"P1\","
                    "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}";
    fsa_rec_t last;
    for (int i = 0; i <= 70; i++) {
        char id[16];
        snprintf(id, sizeof id, "T%03d", i); /* T070 sorts last */
        assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, id, 1, t));
        assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, id, "level", 1, NULL, &last));
        bool dropped = true;
        assert_fsa_ok(fsa_journal_gone(f->j, FSA_TYPE_TICKET, id, 2, &dropped));
        assert_false(dropped);
    }
    assert_int_equal(gone_notes(f->dir.path), 71);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(
        sqlite3_exec(db, "INSERT INTO sync_state(k,v) VALUES('gone:gizmo:G1',3)", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    /* T070's op lands: T070 is idle, the other 70 still busy */
    fsa_op_result_t r = result_for(last.op_id, FSA_RESULT_APPLIED, 3);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    size_t n = 0;
    assert_fsa_ok(fsa_journal_gone_sweep(f->j, &n));
    assert_int_equal(n, 1);
    assert_int_equal(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T070", NULL, NULL, NULL),
                     FSA_ENOTFOUND);
    assert_fsa_ok(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T000", NULL, NULL, NULL));
    assert_int_equal(gone_notes(f->dir.path), 70); /* the busy ones' notes; the bad one gone */
    assert_fsa_ok(fsa_journal_gone_sweep(f->j, &n));
    assert_int_equal(n, 0);
}

/* Fails unless sql's plan has a step (and at least one) and none of them scans every op (the
 * table, or outbox_by_entity whole, but for counts: counts of all ops, which SQLite counts from
 * the smallest b-tree, outbox_by_entity since schema 6); and, when want is not NULL, one step
 * says want. */
static void check_plan_counts(sqlite3 *db, const char *sql, const char *want, int counts)
{
    char explain[4096];
    assert_true((size_t)snprintf(explain, sizeof explain, "EXPLAIN QUERY PLAN %s", sql) <
                sizeof explain);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, explain, -1, &st, NULL), SQLITE_OK);
    int rows = 0;
    bool planned = want == NULL;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *detail = (const char *)sqlite3_column_text(st, 3);
        rows++;
        if (want != NULL && strstr(detail, want) != NULL)
            planned = true;
        if (strcmp(detail, "SCAN outbox") == 0 ||
            (strstr(detail, "SCAN") != NULL && strstr(detail, "outbox_by_entity") != NULL &&
             counts-- == 0))
            fail_msg("%.80s: %s (a scan of every op)", sql, detail);
    }
    sqlite3_finalize(st);
    assert_true(rows > 0);
    if (!planned)
        fail_msg("%s: not planned %s", sql, want);
}

static void check_plan(sqlite3 *db, const char *sql, const char *want)
{
    check_plan_counts(db, sql, want, 0);
}

/* The queue's figures and its reads never visit every open op (a backlog can hold 100,000): the
 * figures count the table from its b-tree's pages and the few ops that are not pending through
 * outbox_closed, and the queue is read in seq order from where it is asked to start. Each text is
 * the journal's, with the plan it must get (a partial index is used for a bound value only when
 * the statement itself implies the index's condition, and a count of some states through
 * outbox_by_entity would scan all of it). */
static void test_fsa_outbox__hot_queries_use_indexes(void **state)
{
    fixture_t *f = *state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    static const struct {
        const char *sql, *plan;
    } queries[] = {
        {"SELECT count(*) FROM outbox", "SCAN outbox USING COVERING INDEX"},
        {"SELECT count(*) FROM outbox INDEXED BY outbox_closed WHERE state != 0 AND state > 1",
         "USING INDEX outbox_closed"},
        {"SELECT count(*) FROM outbox WHERE state IN (0, 1) AND seq >= ?1 AND seq <= ?2",
         "USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"},
        {"SELECT count(*) FROM outbox INDEXED BY outbox_closed WHERE state != 0 AND state = 1 "
         "AND seq > ?1",
         "USING INDEX outbox_closed (seq>?)"},
        {"SELECT count(*) FROM outbox INDEXED BY outbox_closed WHERE state != 0 AND state = 2",
         "USING INDEX outbox_closed"},
        {"SELECT * FROM outbox NOT INDEXED WHERE seq > ?2 AND state IN (0, 1) ORDER BY seq "
         "LIMIT ?1",
         "USING INTEGER PRIMARY KEY (rowid>?)"},
        {"SELECT seq FROM outbox WHERE state != 0 AND state = 2 AND seq > ?1 ORDER BY seq "
         "LIMIT 1 OFFSET ?2",
         "USING INDEX outbox_closed (seq>?)"},
        {"DELETE FROM outbox WHERE state != 0 AND state = 2 AND seq > ?1 AND seq <= ?2",
         "USING INDEX outbox_closed (seq>? AND seq<?)"},
        {"SELECT count(*) FROM outbox WHERE grp = ?1 AND grp != '' AND state IN (0, 1)",
         "outbox_by_group"},
        /* the oldest open op: the table from its head, stopping at the first */
        {"SELECT min(seq) FROM outbox NOT INDEXED WHERE state IN (0, 1) AND seq >= ?1",
         "USING INTEGER PRIMARY KEY (rowid>?)"},
        /* an op by its id: by the seq it carries, or an older journal's through its index */
        {"SELECT * FROM outbox WHERE " OP_REF_WHERE, "MULTI-INDEX OR"},
        /* close_run's count of a run's open ops */
        {"SELECT count(*) FROM outbox WHERE seq BETWEEN ?1 AND ?2 AND state IN (0, 1)",
         "USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"},
    };
    /* The journal's own statements, whole: no step of them reads every op, but the figures'
     * count of them all. */
    check_plan_counts(db, fsa__jn_stats_sql, NULL, 1);
    check_plan(db, fsa__jn_queue_read_sql, NULL);
    check_plan_counts(db, queries[0].sql, queries[0].plan, 1);
    for (size_t i = 1; i < sizeof queries / sizeof queries[0]; i++)
        check_plan(db, queries[i].sql, queries[i].plan);
    sqlite3_close(db);
}

/* The ids of the first batch from the queue's head, as one string ("T2 T3 T4"). */
static void head_ids(fsa_journal_t *j, char *out, size_t cap)
{
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0, len = 0;
    assert_fsa_ok(fsa_outbox_next_batch(j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i > 0 ? " " : "", ops[i].id);
        assert_true(len < cap);
        fsa_op_clear(&ops[i]);
    }
}

/* A read from the queue's head starts past the parked ops that an earlier read found there
 * (open_from), so that a device's parked ops are not walked again at every cycle, and never past
 * an open op: a parked op never reopens, an applied one leaves, and a new op, recorded by this
 * handle or another, takes a seq above every one given. The figures move the bound too. */
static void test_fsa_outbox_next_batch__starts_past_the_parked_head(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t r[5];
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "T%d", i);
        assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, id, NULL, NULL, &r[i]));
    }
    fsa_op_result_t res[3] = {result_for(r[0].op_id, FSA_RESULT_REJECTED, 0),
                              result_for(r[1].op_id, FSA_RESULT_REJECTED, 0),
                              result_for(r[2].op_id, FSA_RESULT_APPLIED, 1)};
    assert_fsa_ok(fsa_outbox_apply_results(f->j, res, 2));
    assert_int_equal(atomic_load(&f->j->open_from), 0);
    char ids[128];
    head_ids(f->j, ids, sizeof ids);
    assert_string_equal(ids, "T2 T3 T4");
    assert_int_equal(atomic_load(&f->j->open_from), r[2].seq);
    head_ids(f->j, ids, sizeof ids); /* T2 is still open: read again */
    assert_string_equal(ids, "T2 T3 T4");
    /* A read after a batch in flight (the engine's next batch) says nothing of the ops before its
     * start, which are open: the bound stays. One that starts below the bound starts at it. */
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    assert_fsa_ok(
        fsa_outbox_next_batch_after(f->j, r[3].seq, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 1);
    assert_string_equal(ops[0].id, "T4");
    fsa_op_clear(&ops[0]);
    assert_int_equal(atomic_load(&f->j->open_from), r[2].seq);
    assert_fsa_ok(
        fsa_outbox_next_batch_after(f->j, r[0].seq, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 3);
    assert_string_equal(ops[0].id, "T2");
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&ops[i]);
    assert_int_equal(atomic_load(&f->j->open_from), r[2].seq);
    /* T2 applied (it leaves), T3 conflicted (parked): the next read starts at T4 */
    res[0] = res[2];
    res[1] = result_for(r[3].op_id, FSA_RESULT_CONFLICT, 0);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, res, 2));
    head_ids(f->j, ids, sizeof ids);
    assert_string_equal(ids, "T4");
    assert_int_equal(atomic_load(&f->j->open_from), r[4].seq);
    /* nothing open: the bound goes past the last seq given, and no further */
    res[0] = result_for(r[4].op_id, FSA_RESULT_APPLIED, 1);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, res, 1));
    head_ids(f->j, ids, sizeof ids);
    assert_string_equal(ids, "");
    assert_int_equal(atomic_load(&f->j->open_from), r[4].seq + 1);
    /* the figures of a handle that has read nothing find the same */
    fsa_journal_t *j3 = NULL;
    fsa_journal_opts_t o3 = {0};
    char err3[256];
    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o3, &j3, err3, sizeof err3));
    fsa_outbox_stats_t st3;
    assert_fsa_ok(fsa_outbox_stats(j3, &st3));
    assert_int_equal(st3.pending, 0);
    assert_int_equal(atomic_load(&j3->open_from), r[4].seq + 1);
    fsa_journal_close(j3);
    /* ops recorded now, by this handle and by another, are read */
    fsa_rec_t r5, r6;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T5", NULL, NULL, &r5));
    fsa_journal_t *j2 = NULL;
    fsa_journal_opts_t o = {0};
    char err[256];
    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &j2, err, sizeof err));
    assert_fsa_ok(fsa_journal_create(j2, FSA_TYPE_TICKET, "T6", NULL, NULL, &r6));
    assert_int_equal(r5.seq, r[4].seq + 1);
    head_ids(f->j, ids, sizeof ids);
    assert_string_equal(ids, "T5 T6");
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.pending, 2);
    assert_int_equal(st.rejected, 2);
    assert_int_equal(st.conflicts, 1);
    /* a handle that has not read the head: its figures find it first, then its reads start there */
    assert_int_equal(atomic_load(&j2->open_from), 0);
    fsa_op_t sent = {.seq = r5.seq};
    assert_fsa_ok(fsa_outbox_mark_inflight(j2, &sent, 1));
    assert_fsa_ok(fsa_outbox_stats(j2, &st));
    assert_int_equal(st.pending, 2);
    assert_int_equal(st.inflight, 1);
    assert_int_equal(atomic_load(&j2->open_from), r5.seq);
    head_ids(j2, ids, sizeof ids);
    assert_string_equal(ids, "T5 T6");
    fsa_journal_close(j2);
}

/* ---- listing ---- */

typedef struct seen {
    char ids[32][FSA_ID_BYTES];
    int64_t pending[32], conflicts[32];
    size_t n;
} seen_t;

static bool collect(void *arg, fsa_type_t type, const char *id, const char *fields_json,
                    int64_t base_version, int64_t pending, int64_t open_conflicts)
{
    (void)type;
    (void)base_version;
    seen_t *s = arg;
    assert_non_null(fields_json);
    assert_true(s->n < 32);
    snprintf(s->ids[s->n], sizeof s->ids[s->n], "%s", id);
    s->pending[s->n] = pending;
    s->conflicts[s->n] = open_conflicts;
    s->n++;
    return true;
}

static seen_t list(fsa_journal_t *j, const fsa_entity_filter_t *flt)
{
    seen_t s;
    memset(&s, 0, sizeof s);
    assert_fsa_ok(fsa_journal_list(j, flt, collect, &s));
    return s;
}

static void test_fsa_journal_list__filters(void **state)
{
    fixture_t *f = *state;
    assert_fsa_ok(
        fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "TOUR1", "{\"people_id\":\"p1\"}", NULL, NULL));
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "TOUR2", NULL, NULL, NULL));
    const char *kids[] = {"CP3", "CP1", "CP2"};
    for (int i = 0; i < 3; i++)
        assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, kids[i],
                                         "{\"parent_id\":\"TOUR1\"}", NULL, NULL));
    assert_fsa_ok(
        fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "CP9", "{\"parent_id\":\"TOUR2\"}", NULL, NULL));
    assert_fsa_ok(fsa_journal_transition(f->j, FSA_TYPE_JOBNEED, "CP2", "INPROGRESS", NULL, NULL));

    fsa_entity_filter_t flt = {.type = FSA_TYPE_JOBNEED, .parent_id = "TOUR1"};
    seen_t s = list(f->j, &flt);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.ids[0], "CP1"); /* id order */
    assert_string_equal(s.ids[2], "CP3");
    assert_int_equal(s.pending[1], 2); /* CP2: create + transition */

    flt = (fsa_entity_filter_t){.type = FSA_TYPE_JOBNEED, .status = "INPROGRESS"};
    s = list(f->j, &flt);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], "CP2");

    flt = (fsa_entity_filter_t){.type = FSA_TYPE_JOBNEED, .people_id = "p1"};
    s = list(f->j, &flt);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], "TOUR1");

    /* paging */
    flt = (fsa_entity_filter_t){.type = FSA_TYPE_JOBNEED, .limit = 2};
    s = list(f->j, &flt);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[1], "CP2");
    flt.after_id = "CP2";
    s = list(f->j, &flt);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[0], "CP3");
    assert_string_equal(s.ids[1], "CP9");

    /* bad filters */
    flt = (fsa_entity_filter_t){.type = FSA_TYPE_JOBNEED, .limit = FSA_LIST_MAX + 1};
    assert_int_equal(fsa_journal_list(f->j, &flt, collect, &s), FSA_EINVAL);
    flt = (fsa_entity_filter_t){.type = FSA_TYPE_ATTENDANCE, .status = "OPEN"};
    assert_int_equal(fsa_journal_list(f->j, &flt, collect, &s), FSA_EINVAL);
    flt = (fsa_entity_filter_t){.type = (fsa_type_t)99};
    assert_int_equal(fsa_journal_list(f->j, &flt, collect, &s), FSA_EINVAL);
    assert_int_equal(fsa_journal_list(f->j, NULL, collect, &s), FSA_EINVAL);
}

static void test_fsa_journal_list__attendance_by_person_site_and_day(void **state)
{
    fixture_t *f = *state;
    const int64_t day = INT64_C(1764028800000); /* a midnight UTC */
    struct {
        const char *id, *people, *site;
        int64_t at;
    } rows[] = {{"A1", "p1", "s1", day + 1000},
                {"A2", "p1", "s1", day + 86400000 + 5},
                {"A3", "p2", "s1", day + 2000},
                {"A4", "p1", "s2", day + 3000}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char fields[256];
        snprintf(fields, sizeof fields,
                 "{\"people_id\":\"%s\",\"site_id\":\"%s\",\"kind\":\"checkin\",\"at\":%lld,"
                 "\"lat\":1.0,\"lon\":2.0}",
                 rows[i].people, rows[i].site, (long long)rows[i].at);
        assert_fsa_ok(
            fsa_journal_create(f->j, FSA_TYPE_ATTENDANCE, rows[i].id, fields, NULL, NULL));
    }
    fsa_entity_filter_t flt = {
        .type = FSA_TYPE_ATTENDANCE, .people_id = "p1", .from_ms = day, .to_ms = day + 86400000};
    seen_t s = list(f->j, &flt);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[0], "A1");
    assert_string_equal(s.ids[1], "A4");
    flt.site_id = "s2";
    s = list(f->j, &flt);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], "A4");
    flt = (fsa_entity_filter_t){.type = FSA_TYPE_ATTENDANCE, .from_ms = day + 10, .to_ms = day};
    assert_int_equal(fsa_journal_list(f->j, &flt, collect, &s), FSA_EINVAL);
}

static void test_fsa_journal_entity_conflicts__counts_open_ones(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t c, t;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &c));
    assert_fsa_ok(fsa_journal_transition(f->j, FSA_TYPE_TICKET, "T1", "OPEN", NULL, &t));
    fsa_op_result_t r[2] = {result_for(c.op_id, FSA_RESULT_APPLIED, 1),
                            result_for(t.op_id, FSA_RESULT_REJECTED, 0)};
    assert_fsa_ok(fsa_outbox_apply_results(f->j, r, 2));
    int64_t n = -1;
    assert_fsa_ok(fsa_journal_entity_conflicts(f->j, FSA_TYPE_TICKET, "T1", &n));
    assert_int_equal(n, 1);
    fsa_entity_filter_t flt = {.type = FSA_TYPE_TICKET};
    seen_t s = list(f->j, &flt);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.conflicts[0], 1);
    assert_fsa_ok(fsa_conflict_resolve(f->j, t.op_id, false, FSA_RESOLVED_SERVER, NULL));
    assert_fsa_ok(fsa_journal_entity_conflicts(f->j, FSA_TYPE_TICKET, "T1", &n));
    assert_int_equal(n, 0);
    assert_int_equal(fsa_journal_entity_conflicts(f->j, FSA_TYPE_TICKET, NULL, &n), FSA_EINVAL);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_fsa_journal_changes_read__records_results_and_pulls),
        T(test_fsa_journal_changes_read__parked_resolved_and_server_won),
        T(test_fsa_journal_changes_read__rebase_is_one_change),
        T(test_fsa_journal_changes_read__paged_and_bounded),
        T(test_fsa_journal_open__v2_journal_migrates_to_v3),
        T(test_fsa_journal_open__v2_migration_under_io_faults),
        T(test_fsa_journal_open__v3_journal_migrates_to_v4),
        T(test_fsa_journal_open__v4_journal_migrates_to_v5),
        T(test_fsa_journal_open__v5_journal_migrates_to_v6),
        T(test_fsa_journal_integrity__a_conflict_without_its_op),
        T(test_fsa_outbox_compact__seq_never_reused),
        T(test_fsa_outbox_op_state__through_compaction),
        T(test_fsa_outbox_compact__prunes_old_changes_only_beyond_the_newest),
        T(test_fsa_journal_open__v1_journal_gains_the_change_log),
        T(test_fsa_journal_gone__drops_unless_pending),
        T(test_fsa_journal_gone_sweep__drops_once_idle),
        T(test_fsa_journal_gone_sweep__every_note_and_a_bad_one),
        T(test_fsa_outbox__hot_queries_use_indexes),
        T(test_fsa_outbox_next_batch__starts_past_the_parked_head),
        T(test_fsa_journal_list__filters),
        T(test_fsa_journal_list__attendance_by_person_site_and_day),
        T(test_fsa_journal_entity_conflicts__counts_open_ones),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
