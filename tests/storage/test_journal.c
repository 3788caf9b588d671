/* Tests for storage/journal.c and storage/db.c: opening, recording, the outbox, conflicts. */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/journal_internal.h"
#include "storage/lock.h"
#include "tests/storage/journal_test_util.h"
#include "tests/storage/vfs_fault.h"

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
    if (fsa_sim_new(7, START, "journal", &f->sim) != FSA_OK)
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

static int64_t seq_count(fsa_journal_t *j)
{
    fsa_outbox_stats_t s;
    assert_fsa_ok(fsa_outbox_stats(j, &s));
    return s.last_seq;
}

/* The local view's value of one field, as JSON text, into a static buffer. */
static const char *field_of(fsa_journal_t *j, fsa_type_t type, const char *id, const char *name)
{
    static char buf[4096];
    char *fields = NULL, *v = NULL;
    assert_fsa_ok(fsa_journal_get(j, type, id, &fields, NULL, NULL));
    fsa_status_t st = fsa_model_get_field(fields, name, &v);
    snprintf(buf, sizeof buf, "%s", st == FSA_OK ? v : "<absent>");
    fsa_model_free(v);
    fsa_model_free(fields);
    return buf;
}

static void test_fsa_journal_open__creates_private_wal_file(void **state)
{
    fixture_t *f = *state;
    struct stat sb;
    assert_int_equal(stat(f->dir.path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_fsa_journal_open__missing_without_create(void **state)
{
    fixture_t *f = *state;
    char path[160], err[256];
    snprintf(path, sizeof path, "%s/none.db", f->dir.dir);
    fsa_journal_t *j = (fsa_journal_t *)1;
    fsa_journal_opts_t o = {.create = false};
    assert_int_equal(fsa_journal_open(f->port, path, &o, &j, err, sizeof err), FSA_ENOTFOUND);
    assert_null(j);
    assert_non_null(strstr(err, "does not exist"));
}

static void test_fsa_journal_open__newer_schema_refused(void **state)
{
    fixture_t *f = *state;
    fsa_journal_close(f->j);
    f->j = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    char err[256];
    fsa_journal_opts_t o = {.create = true};
    assert_int_equal(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err),
                     FSA_ESCHEMA);
    assert_non_null(strstr(err, "newer"));
    assert_null(f->j);
    /* A negative version is no fieldsync's either (it read before the table of steps). */
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = -3", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err),
                     FSA_ESCHEMA);
    assert_non_null(strstr(err, "version -3"));
    assert_null(f->j);
}

static void test_fsa_journal_open__garbage_file_refused(void **state)
{
    fixture_t *f = *state;
    char path[160], err[256];
    snprintf(path, sizeof path, "%s/garbage.db", f->dir.dir);
    FILE *fp = fopen(path, "w");
    for (int i = 0; i < 200; i++)
        fputs("this is not a database at all. ", fp);
    assert_int_equal(fclose(fp), 0);
    fsa_journal_t *j = NULL;
    fsa_journal_opts_t o = {.create = true};
    fsa_status_t st = fsa_journal_open(f->port, path, &o, &j, err, sizeof err);
    assert_int_equal(st, FSA_ECORRUPT);
    assert_null(j);
    assert_non_null(strstr(err, path));
}

static void test_fsa_journal_open__migrates_version_zero_file(void **state)
{
    fixture_t *f = *state;
    char path[160], err[256];
    snprintf(path, sizeof path, "%s/old.db", f->dir.dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK); /* an empty, version-0 database */
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE unrelated(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    fsa_journal_t *j = NULL;
    fsa_journal_opts_t o = {.create = false};
    assert_fsa_ok(fsa_journal_open(f->port, path, &o, &j, err, sizeof err));
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    fsa_journal_close(j);
}

/* The journal reads outbox rows whole ("SELECT *") by position (OP_COL_*, OP_NCOLS): the schema
 * must keep its columns in that order. A migrated journal has the same columns as a new one
 * (test_fsa_journal_open__v2_journal_migrates_to_v3). */
static void test_fsa_journal_open__outbox_columns_in_the_order_read(void **state)
{
    fixture_t *f = *state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT * FROM outbox", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_column_count(st), OP_NCOLS);
    static const char *const names[] = {"seq",    "op_id", "at_ms",    "kind",           "type",
                                        "id",     "grp",   "field",    "base_version",   "by_n",
                                        "from_s", "to_s",  "akey",     "max_len",        "payload",
                                        "prior",  "state", "attempts", "result_version", "done_ms"};
    assert_int_equal(sizeof names / sizeof names[0], OP_NCOLS);
    for (int i = 0; i < OP_NCOLS; i++)
        assert_string_equal(sqlite3_column_name(st, i), names[i]);
    assert_string_equal(sqlite3_column_name(st, OP_COL_PRIOR), "prior");
    assert_string_equal(sqlite3_column_name(st, OP_COL_STATE), "state");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_fsa_journal_create__defaults_and_seq(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "J1", "{\"seqno\":3}", NULL, &rec));
    assert_int_equal(rec.seq, 1);
    assert_int_equal(strlen(rec.op_id), 36);
    assert_string_equal(rec.error, "");
    assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, "J1", "jobstatus"), "\"ASSIGNED\"");
    assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, "J1", "seqno"), "3");
    assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, "J1", "parent_id"), "null");
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    assert_int_equal(rec.seq, 2);
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "ticketlog"),
                        "{\"ticket_history\":[]}");
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "priority"), "\"MEDIUM\"");
}

static void test_fsa_journal_create__existing_refused(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    assert_int_equal(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec),
                     FSA_EEXISTS);
    assert_non_null(strstr(rec.error, "already exists"));
    assert_int_equal(seq_count(f->j), 1);
}

static void test_fsa_journal_create__attendance_requires_fields(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_int_equal(
        fsa_journal_create(f->j, FSA_TYPE_ATTENDANCE, "A1", "{\"people_id\":\"p\"}", NULL, &rec),
        FSA_EINVAL);
    assert_string_not_equal(rec.error, "");
    assert_int_equal(seq_count(f->j), 0);
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_ATTENDANCE, "A1",
                                     "{\"people_id\":\"p\",\"site_id\":\"s\",\"kind\":\"checkin\","
                                     "\"at\":1,\"lat\":1.5,\"lon\":2.5}",
                                     NULL, &rec));
    assert_string_equal(field_of(f->j, FSA_TYPE_ATTENDANCE, "A1", "accuracy_m"), "null");
    /* No position fix (PROTOCOL.md section 7, amendment 2): a check-in is never refused for it. */
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_ATTENDANCE, "A2",
                                     "{\"people_id\":\"p\",\"site_id\":\"s\",\"kind\":\"checkin\","
                                     "\"at\":1,\"lat\":null,\"lon\":null}",
                                     NULL, &rec));
    assert_string_equal(field_of(f->j, FSA_TYPE_ATTENDANCE, "A2", "lat"), "null");
    assert_int_equal(fsa_journal_create(f->j, FSA_TYPE_ATTENDANCE, "A3",
                                        "{\"people_id\":\"p\",\"site_id\":\"s\","
                                        "\"kind\":\"checkin\",\"at\":1,\"lat\":1.5}",
                                        NULL, &rec),
                     FSA_EINVAL);
    /* attendance is append-only */
    assert_int_equal(
        fsa_journal_set(f->j, FSA_TYPE_ATTENDANCE, "A1", "{\"site_id\":\"x\"}", NULL, &rec),
        FSA_EINVAL);
}

static void test_fsa_journal_create__bad_id_refused(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_int_equal(fsa_journal_create(f->j, FSA_TYPE_TICKET, "bad id!", NULL, NULL, &rec),
                     FSA_EINVAL);
    assert_non_null(strstr(rec.error, "invalid ticket id"));
    assert_int_equal(fsa_journal_create(f->j, FSA_TYPE_TICKET, "", NULL, NULL, &rec), FSA_EINVAL);
    assert_int_equal(fsa_journal_create(NULL, FSA_TYPE_TICKET, "T", NULL, NULL, &rec), FSA_EINVAL);
    assert_int_equal(fsa_journal_create(f->j, FSA_TYPE_TICKET, NULL, NULL, NULL, NULL), FSA_EINVAL);
    assert_int_equal(seq_count(f->j), 0);
}

static void test_fsa_journal_set__status_field_refused(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "J1", NULL, NULL, &rec));
    assert_int_equal(
        fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J1", "{\"jobstatus\":\"COMPLETED\"}", NULL, &rec),
        FSA_EINVAL);
    assert_int_equal(seq_count(f->j), 1);
    assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, "J1", "jobstatus"), "\"ASSIGNED\"");
}

static void test_fsa_journal_set__base_version_counts_pending(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "J1", NULL, NULL, &rec));
    assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J1", "{\"expirytime\":45}", NULL, &rec));
    fsa_op_t op;
    fsa_op_state_t state_;
    assert_fsa_ok(fsa_outbox_find(f->j, rec.op_id, &op, &state_));
    assert_int_equal(op.kind, FSA_OP_SET);
    assert_int_equal(op.base_version, 1); /* the create will make version 1 */
    assert_int_equal(state_, FSA_OPSTATE_PENDING);
    fsa_op_clear(&op);
    assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, "J1", "expirytime"), "45");
}

static void test_fsa_journal_merge__patch_semantics(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "J1",
                                     "{\"other_info\":{\"a\":1,\"b\":{\"c\":2,\"d\":3}}}", NULL,
                                     &rec));
    assert_fsa_ok(fsa_journal_merge(f->j, FSA_TYPE_JOBNEED, "J1", "other_info",
                                    "{\"a\":null,\"b\":{\"c\":9},\"e\":[1]}", NULL, &rec));
    assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, "J1", "other_info"),
                        "{\"b\":{\"c\":9,\"d\":3},\"e\":[1]}");
    assert_int_equal(
        fsa_journal_merge(f->j, FSA_TYPE_JOBNEED, "J1", "seqno", "{\"a\":1}", NULL, &rec),
        FSA_EINVAL);
    assert_int_equal(
        fsa_journal_merge(f->j, FSA_TYPE_JOBNEED, "J1", "other_info", "{bad", NULL, &rec),
        FSA_EINVAL);
}

static void test_fsa_journal_increment__adds(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", 2, NULL, &rec));
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", -1, NULL, &rec));
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "level"), "1");
    assert_int_equal(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "priority", 1, NULL, &rec),
                     FSA_EINVAL);
    assert_int_equal(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T9", "level", 1, NULL, &rec),
                     FSA_ENOTFOUND);
    assert_non_null(strstr(rec.error, "T9"));
}

static void test_fsa_journal_transition__valid_and_invalid(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "J1", NULL, NULL, &rec));
    int64_t before = seq_count(f->j);
    assert_int_equal(fsa_journal_transition(f->j, FSA_TYPE_JOBNEED, "J1", "COMPLETED", NULL, &rec),
                     FSA_ETRANSITION);
    assert_non_null(strstr(rec.error, "ASSIGNED"));
    assert_non_null(strstr(rec.error, "COMPLETED"));
    assert_int_equal(seq_count(f->j), before); /* nothing written */
    assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, "J1", "jobstatus"), "\"ASSIGNED\"");
    assert_fsa_ok(fsa_journal_transition(f->j, FSA_TYPE_JOBNEED, "J1", "INPROGRESS", NULL, &rec));
    assert_fsa_ok(fsa_journal_transition(f->j, FSA_TYPE_JOBNEED, "J1", "COMPLETED", NULL, &rec));
    fsa_op_t op;
    assert_fsa_ok(fsa_outbox_find(f->j, rec.op_id, &op, NULL));
    assert_string_equal(op.from, "INPROGRESS");
    assert_string_equal(op.to, "COMPLETED");
    assert_string_equal(op.field, "jobstatus");
    fsa_op_clear(&op);
    /* AUTOCLOSED is the server's alone */
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "J2", NULL, NULL, &rec));
    assert_int_equal(fsa_journal_transition(f->j, FSA_TYPE_JOBNEED, "J2", "AUTOCLOSED", NULL, &rec),
                     FSA_ETRANSITION);
    int64_t n = seq_count(f->j);
    assert_int_not_equal(fsa_journal_transition(f->j, FSA_TYPE_JOBNEED, "J2", "NOSUCH", NULL, &rec),
                         FSA_OK);
    if (strstr(rec.error, "NOSUCH") == NULL)
        fail_msg("error: %s", rec.error);
    assert_int_equal(seq_count(f->j), n);
}

static void test_fsa_journal_append__max_len(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    for (int i = 1; i <= 4; i++) {
        char item[32];
        snprintf(item, sizeof item, "{\"n\":%d}", i);
        assert_fsa_ok(fsa_journal_append(f->j, FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history",
                                         item, 3, NULL, &rec));
    }
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "ticketlog"),
                        "{\"ticket_history\":[{\"n\":2},{\"n\":3},{\"n\":4}]}");
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

/* The server's answer that it rejects the op op_id for good, with code, applied. */
static void reject(fixture_t *f, const char *op_id, const char *code)
{
    fsa_op_result_t r = result_for(op_id, FSA_RESULT_REJECTED, 0);
    snprintf(r.code, sizeof r.code, "%s", code);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
}

static void test_fsa_journal_checkpoint_update__one_group(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "TOUR", NULL, NULL, &rec));
    assert_fsa_ok(
        fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "CP1", "{\"parent_id\":\"TOUR\"}", NULL, &rec));
    assert_fsa_ok(fsa_journal_checkpoint_update(f->j, "CP1", "{\"expirytime\":45}", NULL, &rec));
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    /* The group's set on CP1 waits for the answer to CP1's create (its base_version counts it). */
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 2);
    fsa_op_result_t res[2];
    for (size_t i = 0; i < n; i++) {
        res[i] = result_for(ops[i].op_id, FSA_RESULT_APPLIED, 1);
        fsa_op_clear(&ops[i]);
    }
    assert_fsa_ok(fsa_outbox_apply_results(f->j, res, 2));
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 2);
    assert_int_equal(ops[0].kind, FSA_OP_SET);
    assert_string_equal(ops[0].id, "CP1");
    assert_int_equal(ops[0].base_version, 1);
    assert_int_equal(ops[1].kind, FSA_OP_MERGE);
    assert_string_equal(ops[1].id, "TOUR");
    assert_string_not_equal(ops[0].group, "");
    assert_string_equal(ops[0].group, ops[1].group);
    assert_int_equal(ops[1].seq, ops[0].seq + 1);
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&ops[i]);
    assert_non_null(strstr(field_of(f->j, FSA_TYPE_JOBNEED, "TOUR", "other_info"), "CP1"));
    /* a tour is not a checkpoint */
    assert_int_equal(fsa_journal_checkpoint_update(f->j, "TOUR", "{\"seqno\":1}", NULL, &rec),
                     FSA_EINVAL);
    assert_non_null(strstr(rec.error, "no parent"));
}

/* A port whose mutex_lock moves checkpoint CP1 to another tour (T2, T3, ...) each time a thread
 * that does not hold the journal's mutex is about to take it: whatever the journal read before
 * its write transaction, the checkpoint may have moved since. */
static fsa_port_t g_moving_port;
static const fsa_port_t *g_real_port;
static fsa_journal_t *g_moving_j;
static int g_moves;
static bool g_in_move;

static void moving_lock(void *ctx, fsa_mutex_t *mu)
{
    if (g_moving_j != NULL && mu == g_moving_j->mu && !g_in_move && !fsa__jn_held(g_moving_j) &&
        g_moves < 8) {
        g_in_move = true;
        char fields[64];
        snprintf(fields, sizeof fields, "{\"parent_id\":\"T%d\"}", 2 + g_moves++);
        fsa_rec_t rec;
        assert_fsa_ok(fsa_journal_set(g_moving_j, FSA_TYPE_JOBNEED, "CP1", fields, NULL, &rec));
        g_in_move = false;
    }
    g_real_port->mutex_lock(ctx, mu);
}

/* The tour that a checkpoint's update touches is the checkpoint's parent when the group is
 * recorded. It was read before the write transaction (the comment said a change in between would
 * conflict: local sets never conflict with each other), so a set of parent_id by another thread
 * or process in between sent the touch to the tour the checkpoint had left. */
static void test_fsa_journal_checkpoint_update__touches_the_parent_it_has(void **state)
{
    fixture_t *f = *state;
    fsa_journal_close(f->j);
    g_real_port = f->port;
    g_moving_port = *f->port;
    g_moving_port.mutex_lock = moving_lock;
    fsa_journal_opts_t o = {0};
    char err[256];
    assert_fsa_ok(fsa_journal_open(&g_moving_port, f->dir.path, &o, &f->j, err, sizeof err));
    fsa_rec_t rec;
    for (int t = 1; t <= 9; t++) {
        char id[8];
        snprintf(id, sizeof id, "T%d", t);
        assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, id, NULL, NULL, &rec));
    }
    assert_fsa_ok(
        fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "CP1", "{\"parent_id\":\"T1\"}", NULL, &rec));
    g_moves = 0;
    g_moving_j = f->j;
    fsa_status_t st = fsa_journal_checkpoint_update(f->j, "CP1", "{\"seqno\":3}", NULL, &rec);
    g_moving_j = NULL;
    assert_fsa_ok(st);
    assert_true(g_moves >= 1);
    char *parent = NULL;
    char *fields = NULL;
    assert_fsa_ok(fsa_journal_get(f->j, FSA_TYPE_JOBNEED, "CP1", &fields, NULL, NULL));
    assert_fsa_ok(fsa_model_get_field(fields, "parent_id", &parent));
    fsa_model_free(fields);
    char tour[16];
    snprintf(tour, sizeof tour, "%.*s", (int)strlen(parent) - 2, parent + 1);
    fsa_model_free(parent);
    for (int t = 1; t <= 9; t++) {
        char id[8];
        snprintf(id, sizeof id, "T%d", t);
        bool touched = strstr(field_of(f->j, FSA_TYPE_JOBNEED, id, "other_info"), "CP1") != NULL;
        if (touched != (strcmp(id, tour) == 0))
            fail_msg("%s %s touched; CP1's tour is %s", id, touched ? "was" : "was not", tour);
    }
    fsa_journal_close(f->j);
    f->j = NULL;
}

/* An update that moves the checkpoint to another tour touches that tour, the one it then has (the
 * touch went to the tour it left). */
static void test_fsa_journal_checkpoint_update__moved_touches_its_new_tour(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "T1", NULL, NULL, &rec));
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "T2", NULL, NULL, &rec));
    assert_fsa_ok(
        fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "CP1", "{\"parent_id\":\"T1\"}", NULL, &rec));
    assert_fsa_ok(fsa_journal_checkpoint_update(f->j, "CP1", "{\"parent_id\":\"T2\",\"seqno\":1}",
                                                NULL, &rec));
    assert_non_null(strstr(field_of(f->j, FSA_TYPE_JOBNEED, "T2", "other_info"), "CP1"));
    assert_null(strstr(field_of(f->j, FSA_TYPE_JOBNEED, "T1", "other_info"), "CP1"));
    /* moved out of every tour: not a checkpoint's update */
    assert_int_equal(fsa_journal_checkpoint_update(f->j, "CP1", "{\"parent_id\":null}", NULL, &rec),
                     FSA_EINVAL);
    assert_non_null(strstr(rec.error, "no parent"));
}

static void test_fsa_journal_record_group__failure_writes_nothing(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    fsa_op_t ops[2] = {
        {.kind = FSA_OP_INCREMENT, .type = FSA_TYPE_TICKET, .id = "T1", .field = "level", .by = 1},
        {.kind = FSA_OP_TRANSITION, .type = FSA_TYPE_TICKET, .id = "T1", .to = "CLOSED"},
    };
    assert_int_equal(fsa_journal_record_group(f->j, ops, 2, NULL, &rec), FSA_ETRANSITION);
    assert_int_equal(seq_count(f->j), 1);
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "level"), "0");
}

static void test_fsa_outbox_next_batch__never_splits_a_group(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    for (int i = 0; i < 15; i++)
        assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", 1, NULL, &rec));
    fsa_op_t g[3];
    memset(g, 0, sizeof g);
    for (int i = 0; i < 3; i++) {
        g[i].kind = FSA_OP_INCREMENT;
        g[i].type = FSA_TYPE_TICKET;
        snprintf(g[i].id, sizeof g[i].id, "T1");
        snprintf(g[i].field, sizeof g[i].field, "level");
        g[i].by = 1;
    }
    assert_fsa_ok(fsa_journal_record_group(f->j, g, 3, NULL, &rec)); /* seqs 17..19 */
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    /* 16 fit by count, but the group (seq 17-19) would be split: the batch stops before it. */
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 16);
    assert_int_equal(ops[15].seq, 16);
    assert_fsa_ok(fsa_outbox_mark_inflight(f->j, ops, n));
    fsa_op_result_t res[FSA_JOURNAL_GROUP_MAX];
    memset(res, 0, sizeof res);
    for (size_t i = 0; i < n; i++) {
        memcpy(res[i].op_id, ops[i].op_id, sizeof res[i].op_id);
        res[i].status = FSA_RESULT_APPLIED;
        res[i].version = (int64_t)i + 1;
        fsa_op_clear(&ops[i]);
    }
    assert_fsa_ok(fsa_outbox_apply_results(f->j, res, n));
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 3);
    assert_int_equal(ops[0].seq, 17);
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&ops[i]);
    assert_int_equal(fsa_outbox_next_batch(f->j, ops, 4, 1 << 20, &n), FSA_EINVAL);
}

static void test_fsa_outbox_next_batch__bounded_by_bytes(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    for (int i = 0; i < 40; i++)
        assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", 1, NULL, &rec));
    fsa_op_t ops[64];
    size_t n = 0;
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, 64, 2000, &n));
    assert_true(n >= 1 && n < 10);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ops[i].seq, (int64_t)i + 1);
        fsa_op_clear(&ops[i]);
    }
}

static const char TICKET_V1[] = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                                "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}";

/* The seqs of a batch, as "1,2,3" (ops cleared). */
static void batch_seqs(fsa_op_t *ops, size_t n, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%" PRId64, i > 0 ? "," : "", ops[i].seq);
        fsa_op_clear(&ops[i]);
    }
}

static int64_t base_version_of(fixture_t *f, const char *op_id)
{
    fsa_op_t op;
    assert_fsa_ok(fsa_outbox_find(f->j, op_id, &op, NULL));
    int64_t v = op.base_version;
    fsa_op_clear(&op);
    return v;
}

/*
 * A set counts the ops before it on its entity as applied (its base_version), so it is not sent
 * with them unanswered: the batch ends before it (before its group, taken whole), and the batch
 * read while they are in flight ends there too, even empty. Ops of its own group do not hold it
 * (all-or-nothing), nor ops on other entities. (The set went in the same batch.)
 */
static void test_fsa_outbox_next_batch__set_waits_for_answers_on_its_entity(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 1, TICKET_V1));
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T2", 1, TICKET_V1));
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", 1, NULL, &rec));
    assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_TICKET, "T2", "{\"priority\":\"LOW\"}", NULL,
                                  &rec)); /* seq 2: nothing before it on T2 */
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T2", "level", 1, NULL, &rec));
    fsa_op_t g[2];
    memset(g, 0, sizeof g);
    g[0].kind = FSA_OP_INCREMENT; /* seq 4, 5: a group whose set waits for seq 1 */
    g[0].type = FSA_TYPE_TICKET;
    snprintf(g[0].id, sizeof g[0].id, "T2");
    snprintf(g[0].field, sizeof g[0].field, "level");
    g[0].by = 1;
    g[1].kind = FSA_OP_SET;
    g[1].type = FSA_TYPE_TICKET;
    snprintf(g[1].id, sizeof g[1].id, "T1");
    g[1].json = "{\"priority\":\"HIGH\"}";
    assert_fsa_ok(fsa_journal_record_group(f->j, g, 2, NULL, &rec));
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    char seqs[64];
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    batch_seqs(ops, n, seqs, sizeof seqs);
    assert_string_equal(seqs, "1,2,3");
    /* While 1-3 are in flight, the next batch would start with the group: it waits. */
    assert_fsa_ok(fsa_outbox_next_batch_after(f->j, 3, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 0);
    /* Answered: the group goes, its set expecting T1 at 2 (1 + the increment). */
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    fsa_op_result_t res[3];
    for (size_t i = 0; i < 3; i++)
        res[i] = result_for(ops[i].op_id, FSA_RESULT_APPLIED, i == 0 ? 2 : (int64_t)i + 1);
    batch_seqs(ops, n, seqs, sizeof seqs);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, res, 3));
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 2);
    assert_int_equal(ops[1].kind, FSA_OP_SET);
    assert_int_equal(ops[1].base_version, 2);
    batch_seqs(ops, n, seqs, sizeof seqs);
    assert_string_equal(seqs, "4,5");
    /* A group of an increment and a set on one entity goes together: one outcome for both. */
    snprintf(g[0].id, sizeof g[0].id, "T1");
    assert_fsa_ok(fsa_journal_record_group(f->j, g, 2, NULL, &rec));
    assert_fsa_ok(fsa_outbox_next_batch_after(f->j, 5, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    batch_seqs(ops, n, seqs, sizeof seqs);
    assert_string_equal(seqs, ""); /* seq 4-5 on T1 unanswered still */
}

/*
 * An op that is parked (conflict or rejected) did not move the server's version, so each later set
 * on its entity expects one version less: it applies only if nobody else changed the entity, else
 * it conflicts. Sets on other entities, and other kinds, keep theirs; an applied op moves none.
 */
static void test_fsa_outbox_apply_results__parked_op_lowers_later_sets(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t a, s1, s2, s3, other;
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 1, TICKET_V1));
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T2", 1, TICKET_V1));
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", 1, NULL, &a));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"priority\":\"LOW\"}", NULL, &s1));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T2", "{\"priority\":\"LOW\"}", NULL, &other));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"assignedto\":\"al\"}", NULL, &s2));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"priority\":\"HIGH\"}", NULL, &s3));
    assert_int_equal(base_version_of(f, s1.op_id), 2);
    assert_int_equal(base_version_of(f, s2.op_id), 3);
    assert_int_equal(base_version_of(f, s3.op_id), 4);
    /* The increment applies: nothing moves. */
    fsa_op_result_t r = result_for(a.op_id, FSA_RESULT_APPLIED, 2);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    assert_int_equal(base_version_of(f, s2.op_id), 3);
    /* The first set conflicts (someone made v3): the two after it expect one less. */
    r = result_for(s1.op_id, FSA_RESULT_CONFLICT, 0);
    r.current_version = 3;
    r.current_fields = (char *)(uintptr_t)TICKET_V1; /* the journal only reads it */
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    assert_int_equal(base_version_of(f, s2.op_id), 2);
    assert_int_equal(base_version_of(f, s3.op_id), 3);
    assert_int_equal(base_version_of(f, other.op_id), 1);
    /* The second is rejected: the third expects one less again. Its answer once more (a resent
     * batch) changes nothing: the op is not open any more. */
    r = result_for(s2.op_id, FSA_RESULT_REJECTED, 0);
    snprintf(r.code, sizeof r.code, "forbidden");
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    assert_int_equal(base_version_of(f, s3.op_id), 2);
    assert_int_equal(base_version_of(f, other.op_id), 1);
}

/* ---- a model server against the journal's batches and its sets' expected versions ---- */

#define MODEL_SEQS 2048

/* The server of one ticket, T1, as the engine meets it: ops answered in order, groups all or
 * nothing, a set applied only at its base_version, an increment rejected now and then, and
 * (foreign) changes by other devices between ops. What it checks, per set the device recorded:
 * the base version the device knew then. */
typedef struct model {
    int64_t v;            /* the server's version of T1 */
    int64_t last_foreign; /* the version the latest foreign change made */
    int64_t last_seq;     /* the last seq the server saw */
    int64_t known[MODEL_SEQS];
    bool is_set[MODEL_SEQS];
    uint64_t rnd;
    bool foreign;
    int silent, needless, out_of_order;
} model_t;

static uint32_t model_rand(model_t *m)
{
    m->rnd = m->rnd * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(m->rnd >> 33);
}

/* Records an increment, a set, or a group of an increment and a set, noting each set's seq. */
static void model_record(fixture_t *f, model_t *m)
{
    fsa_rec_t rec;
    int64_t base = 0;
    assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_TICKET, "T1", NULL, &base));
    uint32_t r = model_rand(m) % 4;
    int64_t set_seq = 0;
    if (r == 0) {
        assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", 1, NULL, &rec));
    } else if (r < 3) {
        char js[64];
        snprintf(js, sizeof js, "{\"assignedto\":\"u%u\"}", (unsigned)(model_rand(m) % 100));
        assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", js, NULL, &rec));
        set_seq = rec.seq;
    } else {
        fsa_op_t g[2] = {{.kind = FSA_OP_INCREMENT,
                          .type = FSA_TYPE_TICKET,
                          .id = "T1",
                          .field = "level",
                          .by = 1},
                         {.kind = FSA_OP_SET,
                          .type = FSA_TYPE_TICKET,
                          .id = "T1",
                          .json = (char *)(uintptr_t) "{\"priority\":\"HIGH\"}"}};
        assert_fsa_ok(fsa_journal_record_group(f->j, g, 2, NULL, &rec));
        set_seq = rec.seq + 1; /* a group's seqs follow one another; rec names its first */
    }
    assert_true(rec.seq > 0 && rec.seq + 1 < MODEL_SEQS);
    if (set_seq > 0) {
        m->is_set[set_seq] = true;
        m->known[set_seq] = base;
    }
}

/* The server answers ops[0..n) in res. */
static void model_serve(model_t *m, const fsa_op_t *ops, size_t n, fsa_op_result_t *res)
{
    for (size_t i = 0; i < n;) {
        size_t k = i + 1; /* ops[i..k): one group, or one op */
        while (ops[i].group[0] != '\0' && k < n && strcmp(ops[k].group, ops[i].group) == 0)
            k++;
        if (m->foreign && model_rand(m) % 5 == 0)
            m->last_foreign = ++m->v;
        bool ok = true, stale = false;
        for (size_t x = i, v = (size_t)m->v; x < k; x++, v++) {
            if (ops[x].seq <= m->last_seq)
                m->out_of_order++;
            m->last_seq = ops[x].seq;
            if (ops[x].kind == FSA_OP_SET && ops[x].base_version != (int64_t)v)
                ok = false, stale = true;
            if (ops[x].kind == FSA_OP_INCREMENT && model_rand(m) % 4 == 0)
                ok = false;
        }
        for (size_t x = i; x < k; x++) {
            memset(&res[x], 0, sizeof res[x]);
            memcpy(res[x].op_id, ops[x].op_id, sizeof res[x].op_id);
            bool set = ops[x].kind == FSA_OP_SET && m->is_set[ops[x].seq];
            if (ok) {
                res[x].status = FSA_RESULT_APPLIED;
                res[x].version = ++m->v;
                /* applied over a change newer than what the device knew: silent */
                if (set && m->last_foreign > m->known[ops[x].seq])
                    m->silent++;
            } else if (!stale && k == i + 1) {
                res[x].status = FSA_RESULT_REJECTED;
                snprintf(res[x].code, sizeof res[x].code, "forbidden");
            } else {
                res[x].status = FSA_RESULT_CONFLICT;
                res[x].current_version = m->v;
                res[x].current_fields = (char *)(uintptr_t)TICKET_V1; /* only read */
                if (set && stale && !m->foreign)
                    m->needless++; /* nobody else changed it: its own count was off */
            }
        }
        i = k;
    }
}

/* Records at random while the engine's loop runs against the model (a batch from the head, the
 * next read while it is in flight, both answered before their results land), then drains; a
 * pull folds the server's state when the queue is empty. */
static void run_model(fixture_t *f, uint64_t seed, bool foreign)
{
    model_t *m = fsa_calloc(1, sizeof *m);
    assert_non_null(m);
    m->rnd = seed;
    m->v = 1;
    m->foreign = foreign;
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 1, TICKET_V1));
    for (int step = 0; step < 300; step++) {
        int records = step < 80 ? (int)(model_rand(m) % 3) : 0;
        for (int i = 0; i < records; i++)
            model_record(f, m);
        fsa_op_t cur[FSA_JOURNAL_GROUP_MAX], nxt[FSA_JOURNAL_GROUP_MAX];
        size_t nc = 0, nn = 0;
        assert_fsa_ok(fsa_outbox_next_batch(f->j, cur, FSA_JOURNAL_GROUP_MAX, 1 << 20, &nc));
        if (nc == 0) {
            if (model_rand(m) % 2 == 0)
                assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", m->v, TICKET_V1));
            continue;
        }
        assert_fsa_ok(fsa_outbox_mark_inflight(f->j, cur, nc));
        if (records > 0)
            model_record(f, m);
        assert_fsa_ok(fsa_outbox_next_batch_after(f->j, cur[nc - 1].seq, nxt, FSA_JOURNAL_GROUP_MAX,
                                                  1 << 20, &nn));
        fsa_op_result_t rc[FSA_JOURNAL_GROUP_MAX], rn[FSA_JOURNAL_GROUP_MAX];
        model_serve(m, cur, nc, rc);
        model_serve(m, nxt, nn, rn);
        assert_fsa_ok(fsa_outbox_apply_batch(f->j, cur, rc, nc, nxt, nn));
        if (records > 1)
            model_record(f, m);
        assert_fsa_ok(fsa_outbox_apply_batch(f->j, nxt, rn, nn, NULL, 0));
        for (size_t i = 0; i < nc; i++)
            fsa_op_clear(&cur[i]);
        for (size_t i = 0; i < nn; i++)
            fsa_op_clear(&nxt[i]);
    }
    fsa_outbox_stats_t os;
    assert_fsa_ok(fsa_outbox_stats(f->j, &os));
    if (m->silent + m->needless + m->out_of_order != 0 || os.pending != 0)
        fail_msg("seed %llu, foreign %d: %d sets applied over an unseen change, %d conflicted "
                 "needlessly, %d ops out of order, %lld left open",
                 (unsigned long long)seed, (int)foreign, m->silent, m->needless, m->out_of_order,
                 (long long)os.pending);
    fsa_free(m);
}

/*
 * Sets, increments and groups recorded at random while batches go and come back (the next one
 * read while the first is in flight), against a server that rejects some increments and, with
 * foreign changes, is changed by others between ops: no set is ever applied over a change the
 * device had not seen, none conflicts when nobody else changed the ticket, the server gets the
 * ops in seq order, and the queue drains. (Without the set's wait, the first seed applied 17 sets
 * over others' changes; without the lowering at a park, the second conflicted 101 needlessly.)
 * A review's model, kept with two fixed seeds.
 */
static void test_fsa_outbox__sets_never_land_on_unseen_changes(void **state)
{
    run_model(*state, 1, true);
}

static void test_fsa_outbox__sets_conflict_only_on_others_changes(void **state)
{
    run_model(*state, 2, false);
}

/* A count read by SQL on a connection of its own (what the journal keeps, not what it says). */
/* The count sql gives, on the open connection db. */
static int64_t count_sql_on(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return n;
}

static int64_t count_sql(fixture_t *f, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    int64_t n = count_sql_on(db, sql);
    sqlite3_close(db);
    return n;
}

static void test_fsa_outbox_apply_results__applied_moves_base(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t c, s;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "J1", NULL, NULL, &c));
    assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J1", "{\"seqno\":5}", NULL, &s));
    fsa_op_result_t r = result_for(c.op_id, FSA_RESULT_APPLIED, 1);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    char *base = NULL;
    int64_t v = 0, pending = 0;
    assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_JOBNEED, "J1", &base, &v));
    assert_int_equal(v, 1);
    assert_non_null(strstr(base, "\"seqno\":0"));
    fsa_model_free(base);
    assert_fsa_ok(fsa_journal_get(f->j, FSA_TYPE_JOBNEED, "J1", NULL, NULL, &pending));
    assert_int_equal(pending, 1);
    assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, "J1", "seqno"), "5");
    /* a duplicate of applied is the same as applied; repeating a result changes nothing */
    fsa_op_result_t d = result_for(s.op_id, FSA_RESULT_DUPLICATE, 2);
    d.original = FSA_RESULT_APPLIED;
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &d, 1));
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &d, 1));
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.pending, 0);
    /* Both left the outbox with their results (no compaction): their ids are in done_ops. */
    assert_int_equal(st.done, 0);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM outbox"), 0);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM done_ops"), 2);
    fsa_op_state_t os = FSA_OPSTATE_PENDING;
    assert_fsa_ok(fsa_outbox_op_state(f->j, c.op_id, &os));
    assert_int_equal(os, FSA_OPSTATE_DONE);
    os = FSA_OPSTATE_PENDING;
    assert_fsa_ok(fsa_outbox_op_state(f->j, s.op_id, &os));
    assert_int_equal(os, FSA_OPSTATE_DONE);
    assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_JOBNEED, "J1", &base, &v));
    assert_int_equal(v, 2);
    assert_non_null(strstr(base, "\"seqno\":5"));
    fsa_model_free(base);
    /* an unknown op id is ignored */
    fsa_op_result_t u = result_for("00000000-0000-4000-8000-000000000000", FSA_RESULT_APPLIED, 9);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &u, 1));
}

/* When others changed the entity between our base and our op, the server's version jumps: the
 * base must not take that version with fields that lack their changes; the pull's state does. */
static void test_fsa_outbox_apply_results__version_jump_leaves_base_to_pull(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    const char *v5 = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                     "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}";
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 5, v5));
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", 1, NULL, &rec));
    fsa_op_result_t r = result_for(rec.op_id, FSA_RESULT_APPLIED, 7); /* someone made v6 */
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    int64_t v = 0;
    char *base = NULL;
    assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_TICKET, "T1", &base, &v));
    assert_int_equal(v, 5);
    fsa_model_free(base);
    const char *v7 = "{\"status\":\"NEW\",\"level\":1,\"assignedto\":\"\","
                     "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"HIGH\"}";
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 7, v7));
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "priority"), "\"HIGH\"");
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "level"), "1");
    /* a set made now expects version 7, so it cannot overwrite the HIGH it has seen */
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"priority\":\"LOW\"}", NULL, &rec));
    fsa_op_t op;
    assert_fsa_ok(fsa_outbox_find(f->j, rec.op_id, &op, NULL));
    assert_int_equal(op.base_version, 7);
    fsa_op_clear(&op);
}

static bool count_conflict(void *arg, const fsa_conflict_t *c)
{
    fsa_conflict_t *out = arg;
    fsa_conflict_clear(out);
    *out = *c;
    out->op.json = c->op.json != NULL ? fsa_strdup(c->op.json) : NULL;
    out->server_fields = c->server_fields != NULL ? fsa_strdup(c->server_fields) : NULL;
    out->prior_fields = c->prior_fields != NULL ? fsa_strdup(c->prior_fields) : NULL;
    out->created_ms++; /* mark "seen" */
    return true;
}

/* The prior of the outbox's op seq, as the journal keeps it, into out ("" when NULL). */
static void prior_of(const fixture_t *f, int64_t seq, char *out, size_t cap)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT prior FROM outbox WHERE seq=?1", -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, seq);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    const unsigned char *p = sqlite3_column_text(st, 0);
    snprintf(out, cap, "%s", p != NULL ? (const char *)p : "");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* A parked set is taken out of the prior of the set right after it on its entity: its values
 * there go back to what they were before it. Not out of a later one's: the set between may give
 * the same value and apply (it does here), and taking it back there would make the resolver miss
 * another device's change of that field. */
static void test_fsa_outbox_apply_results__parked_set_leaves_only_the_next_sets_prior(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t s1, sy, s2;
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 1, TICKET_V1));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"assignedto\":\"al\"}", NULL, &s1));
    assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1",
                                  "{\"assignedto\":\"al\",\"priority\":\"HIGH\"}", NULL, &sy));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"assignedto\":\"cy\"}", NULL, &s2));
    char p[256];
    prior_of(f, sy.seq, p, sizeof p);
    assert_string_equal(p, "{\"assignedto\":\"al\",\"priority\":\"MEDIUM\"}");
    reject(f, s1.op_id, "forbidden");
    prior_of(f, sy.seq, p, sizeof p);
    assert_string_equal(p, "{\"assignedto\":\"\",\"priority\":\"MEDIUM\"}");
    prior_of(f, s2.seq, p, sizeof p);
    assert_string_equal(p, "{\"assignedto\":\"al\"}");
    /* sy applies; another device unassigns; s2's conflict shows "al" replaced, so that the
     * resolver sees that the server changed assignedto. */
    fsa_op_result_t r = result_for(sy.op_id, FSA_RESULT_APPLIED, 2);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    r = result_for(s2.op_id, FSA_RESULT_CONFLICT, 0);
    r.current_version = 3;
    r.current_fields = (char *)(uintptr_t)TICKET_V1;
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    prior_of(f, s2.seq, p, sizeof p);
    assert_string_equal(p, "{\"assignedto\":\"al\"}");
}

/* Nor when a pull came between the two records: the later set was recorded after its author saw
 * the pulled value (another device's "bo"), and its prior, the parked set's "al", differs from
 * it only because the parked set stayed on top. Taken back to the parked set's prior (""), a
 * third device's change back to "" would look like no change to the resolver, and the later set
 * would overwrite it. Left as it is, the resolver sees the change ("server wins"). */
static void test_fsa_outbox_apply_results__parked_set_kept_in_a_prior_after_a_pull(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t sa, sb;
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 1, TICKET_V1));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"assignedto\":\"al\"}", NULL, &sa));
    static const char V2[] = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"bo\","
                             "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}";
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 2, V2));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"assignedto\":\"cy\"}", NULL, &sb));
    reject(f, sa.op_id, "invalid_value");
    char p[256];
    prior_of(f, sb.seq, p, sizeof p);
    assert_string_equal(p, "{\"assignedto\":\"al\"}");
    bool same = true;
    assert_fsa_ok(fsa_model_same_values(p, TICKET_V1, "{\"assignedto\":\"cy\"}", &same));
    assert_false(same); /* the resolver's test: the server changed assignedto */
}

#define JOB_V1                                                                                     \
    "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":1,\"expirytime\":0,"                 \
    "\"other_info\":{},\"people_id\":\"\"}"

/*
 * A group is decided as a whole, in one transaction: the verdict on one member is every open
 * member's. Decided member by member, a crash between two left the group half decided, and its
 * undecided member (a merge, which never conflicts on its own) was rebased alone next time, taking
 * the set decided "server wins" with it (sync/engine.c, collect_t).
 */
static void test_fsa_conflict_set_decision__decides_the_whole_group(void **state)
{
    fixture_t *f = *state;
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 1, TICKET_V1));
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_JOBNEED, "J1", 1, JOB_V1));
    fsa_op_t g[2];
    memset(g, 0, sizeof g);
    g[0].kind = FSA_OP_SET;
    g[0].type = FSA_TYPE_TICKET;
    snprintf(g[0].id, sizeof g[0].id, "T1");
    g[0].json = "{\"priority\":\"LOW\"}";
    g[1].kind = FSA_OP_MERGE;
    g[1].type = FSA_TYPE_JOBNEED;
    snprintf(g[1].id, sizeof g[1].id, "J1");
    snprintf(g[1].field, sizeof g[1].field, "other_info");
    g[1].json = "{\"note\":\"x\"}";
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_record_group(f->j, g, 2, NULL, &rec));
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 2);
    fsa_op_result_t res[2] = {result_for(ops[0].op_id, FSA_RESULT_CONFLICT, 0),
                              result_for(ops[1].op_id, FSA_RESULT_CONFLICT, 0)};
    res[0].current_version = 2;
    res[0].current_fields = (char *)(uintptr_t)TICKET_V1; /* only read */
    res[1].current_version = 1;
    res[1].current_fields = JOB_V1;
    assert_fsa_ok(fsa_outbox_apply_results(f->j, res, 2));
    assert_fsa_ok(fsa_conflict_set_decision(f->j, ops[0].op_id, FSA_DECISION_SERVER_WINS));
    for (size_t i = 0; i < 2; i++) {
        fsa_conflict_t c;
        assert_fsa_ok(fsa_conflict_get(f->j, ops[i].op_id, &c));
        assert_int_equal(c.decision, FSA_DECISION_SERVER_WINS);
        assert_int_equal(c.resolution, FSA_RESOLVED_NONE);
        fsa_conflict_clear(&c);
    }
    /* Named by its other member, the group's verdict changes for both. */
    assert_fsa_ok(fsa_conflict_set_decision(f->j, ops[1].op_id, FSA_DECISION_PARK));
    for (size_t i = 0; i < 2; i++) {
        fsa_conflict_t c;
        assert_fsa_ok(fsa_conflict_get(f->j, ops[i].op_id, &c));
        assert_int_equal(c.decision, FSA_DECISION_PARK);
        fsa_conflict_clear(&c);
    }
    /* Resolved, the group has no open conflict left to decide. */
    assert_fsa_ok(fsa_conflict_resolve(f->j, ops[1].op_id, false, FSA_RESOLVED_SERVER, NULL));
    assert_int_equal(fsa_conflict_set_decision(f->j, ops[0].op_id, FSA_DECISION_PARK),
                     FSA_ENOTFOUND);
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&ops[i]);
}

/* A conflict's current state gets a pulled state's checks: one past them (nested deeper than the
 * model takes) is not made the base, whose pending ops could then no longer be applied; the
 * conflict is kept with the server's state unknown, and the base stays. */
static void
test_fsa_outbox_apply_results__conflict_state_past_the_bounds_is_not_the_base(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t s1, s2;
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 1, TICKET_V1));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"priority\":\"LOW\"}", NULL, &s1));
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"assignedto\":\"al\"}", NULL, &s2));
    char deep[256];
    size_t n = (size_t)snprintf(deep, sizeof deep, "{\"status\":\"NEW\",\"x\":");
    for (int i = 0; i < 40; i++)
        deep[n++] = '[';
    for (int i = 0; i < 40; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    fsa_op_result_t r = result_for(s1.op_id, FSA_RESULT_CONFLICT, 0);
    r.current_version = 7;
    r.current_fields = deep;
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    char *base = NULL;
    int64_t bv = 0;
    assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_TICKET, "T1", &base, &bv));
    assert_int_equal(bv, 1);
    assert_null(strstr(base, "[["));
    fsa_model_free(base);
    fsa_conflict_t c;
    memset(&c, 0, sizeof c);
    assert_fsa_ok(fsa_conflicts_each(f->j, false, count_conflict, &c));
    assert_string_equal(c.op.op_id, s1.op_id);
    assert_int_equal(c.outcome, FSA_RESULT_CONFLICT);
    assert_null(c.server_fields);
    assert_int_equal(c.server_version, 0);
    assert_non_null(strstr(c.reason, "past this device's bounds"));
    fsa_conflict_clear(&c);
    /* the local view: the base and the set still pending on it */
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "assignedto"), "\"al\"");
    fsa_op_state_t os = FSA_OPSTATE_DONE;
    assert_fsa_ok(fsa_outbox_op_state(f->j, s2.op_id, &os));
    assert_int_equal(os, FSA_OPSTATE_PENDING);
}

static void test_fsa_outbox_apply_results__conflict_parked_then_resolved(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    /* The server had J1 at version 3 (pulled), we set seqno expecting 3, the server moved on. */
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_JOBNEED, "J1", 3,
                                   "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":1,"
                                   "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}"));
    assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J1", "{\"seqno\":7}", NULL, &rec));
    fsa_op_result_t r = result_for(rec.op_id, FSA_RESULT_CONFLICT, 0);
    r.current_version = 4;
    r.current_fields = "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":2,"
                       "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}";
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.conflicts, 1);
    /* the local view is the server's state now */
    assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, "J1", "seqno"), "2");
    fsa_conflict_t c;
    memset(&c, 0, sizeof c);
    assert_fsa_ok(fsa_conflicts_each(f->j, false, count_conflict, &c));
    assert_string_equal(c.op.op_id, rec.op_id);
    assert_int_equal(c.outcome, FSA_RESULT_CONFLICT);
    assert_int_equal(c.server_version, 4);
    assert_non_null(strstr(c.server_fields, "\"seqno\":2"));
    assert_string_equal(c.prior_fields, "{\"seqno\":1}"); /* what the set replaced */
    assert_int_equal(c.decision, FSA_DECISION_NONE);
    fsa_conflict_clear(&c);
    assert_fsa_ok(fsa_conflict_set_decision(f->j, rec.op_id, FSA_DECISION_SERVER_WINS));
    assert_fsa_ok(fsa_conflicts_each(f->j, false, count_conflict, &c));
    assert_int_equal(c.decision, FSA_DECISION_SERVER_WINS);
    fsa_conflict_clear(&c);
    assert_int_equal(fsa_conflict_set_decision(f->j, "nope", FSA_DECISION_PARK), FSA_ENOTFOUND);
    /* take local: recorded again, expecting version 4 */
    fsa_rec_t again;
    assert_fsa_ok(fsa_conflict_resolve(f->j, rec.op_id, true, FSA_RESOLVED_LOCAL, &again));
    assert_string_not_equal(again.op_id, rec.op_id);
    fsa_op_t op;
    assert_fsa_ok(fsa_outbox_find(f->j, again.op_id, &op, NULL));
    assert_int_equal(op.base_version, 4);
    fsa_op_clear(&op);
    assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, "J1", "seqno"), "7");
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.conflicts, 0);
    assert_int_equal(st.pending, 1);
    assert_int_equal(fsa_conflict_resolve(f->j, rec.op_id, false, FSA_RESOLVED_SERVER, NULL),
                     FSA_ENOTFOUND);
}

/* What a query finds in the file, read with SQLite: each row's columns as text, joined by '=',
 * each row ended by ';'. param (may be NULL) is bound to ?1. */
static void raw_rows(fixture_t *f, const char *sql, const char *param, char *out, size_t cap)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (param != NULL)
        sqlite3_bind_text(st, 1, param, -1, SQLITE_STATIC);
    size_t len = 0;
    out[0] = '\0';
    while (sqlite3_step(st) == SQLITE_ROW && len < cap) {
        for (int i = 0; i < sqlite3_column_count(st) && len < cap; i++) {
            const unsigned char *v = sqlite3_column_text(st, i);
            int n = snprintf(out + len, cap - len, "%s%s", i > 0 ? "=" : "",
                             v != NULL ? (const char *)v : "NULL");
            len += n > 0 ? (size_t)n : 0;
        }
        if (len < cap)
            out[len++] = ';';
        out[len < cap ? len : cap - 1] = '\0';
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* An op id carries its seq (schema 6): the outbox keeps no index of op ids, every lookup by id
 * finds the op by the seq in its id and checks the id, and an id that is not one the journal made
 * (one random digit changed, another op's tail under this op's clock and random bits, not an id at
 * all) finds nothing. */
static void test_fsa_journal_create__op_ids_carry_their_seq(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t a, b;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &a));
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T2", NULL, NULL, &b));
    assert_int_equal(fsa__jn_op_id_seq(f->j, a.op_id), a.seq);
    assert_int_equal(fsa__jn_op_id_seq(f->j, b.op_id), b.seq);
    assert_string_not_equal(a.op_id + 26, b.op_id + 26);
    char raw[512];
    raw_rows(f,
             "SELECT (SELECT count(*) FROM sqlite_master WHERE tbl_name = 'outbox' AND "
             "sql IS NULL), (SELECT count(*) FROM outbox WHERE substr(op_id, 15, 1) <> '8')",
             NULL, raw, sizeof raw);
    assert_string_equal(raw, "0=0;"); /* no UNIQUE index; no op in outbox_legacy_ids */
    fsa_op_state_t os;
    assert_fsa_ok(fsa_outbox_op_state(f->j, a.op_id, &os));
    assert_int_equal(os, FSA_OPSTATE_PENDING);
    char forged[FSA_UUID_STR_LEN];
    snprintf(forged, sizeof forged, "%s", a.op_id);
    forged[20] = forged[20] == '0' ? '1' : '0'; /* a random digit */
    assert_int_equal(fsa__jn_op_id_seq(f->j, forged), a.seq);
    assert_int_equal(fsa_outbox_op_state(f->j, forged, &os), FSA_ENOTFOUND);
    fsa_op_t op;
    assert_int_equal(fsa_outbox_find(f->j, forged, &op, NULL), FSA_ENOTFOUND);
    memcpy(forged + 26, b.op_id + 26, 10); /* b's seq, a's clock and random bits */
    assert_int_equal(fsa__jn_op_id_seq(f->j, forged), b.seq);
    assert_int_equal(fsa_outbox_op_state(f->j, forged, &os), FSA_ENOTFOUND);
    fsa_op_result_t r = result_for(forged, FSA_RESULT_APPLIED, 1);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1)); /* not ours: nothing to do */
    assert_fsa_ok(fsa_outbox_op_state(f->j, b.op_id, &os));
    assert_int_equal(os, FSA_OPSTATE_PENDING);
    static const char *const not_ids[] = {"", "T1", "0193941d-c87b-7000-8000-00000000000G",
                                          "0193941d-c87b-7000-8000-0000000000010",
                                          "0193941d-c87b-7000-8000-00-000000001"};
    for (size_t i = 0; i < sizeof not_ids / sizeof not_ids[0]; i++)
        assert_int_equal(fsa_outbox_op_state(f->j, not_ids[i], &os), FSA_ENOTFOUND);
    assert_int_equal(fsa__jn_op_id_seq(f->j, "T1"), -1);
    /* found by id as before: the op, and its result */
    assert_fsa_ok(fsa_outbox_find(f->j, b.op_id, &op, NULL));
    assert_int_equal(op.seq, b.seq);
    fsa_op_clear(&op);
    r = result_for(a.op_id, FSA_RESULT_APPLIED, 1);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    assert_fsa_ok(fsa_outbox_op_state(f->j, a.op_id, &os));
    assert_int_equal(os, FSA_OPSTATE_DONE);
}

/* An op id carries 40 bits of its seq: the journal numbers 2^40 - 1 ops, and refuses the next one
 * (too large) with a message, writing nothing. */
static void test_fsa_journal_create__the_last_seq(void **state)
{
    fixture_t *f = *state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    char sql[160];
    snprintf(sql, sizeof sql, "INSERT INTO sync_state(k, v) VALUES('outbox_last_deleted', %lld)",
             (long long)FSA__OP_SEQ_MAX - 1);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    fsa_rec_t a, b;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &a));
    assert_int_equal(a.seq, FSA__OP_SEQ_MAX);
    assert_int_equal(fsa__jn_op_id_seq(f->j, a.op_id), a.seq);
    fsa_op_state_t os;
    assert_fsa_ok(fsa_outbox_op_state(f->j, a.op_id, &os));
    assert_int_equal(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T2", NULL, NULL, &b),
                     FSA_ETOOLARGE);
    assert_non_null(strstr(b.error, "has given all 1099511627775 op numbers: start a new one"));
    assert_int_equal(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T2", NULL, NULL, NULL), FSA_ENOTFOUND);
    char raw[64];
    raw_rows(f, "SELECT count(*) FROM outbox", NULL, raw, sizeof raw);
    assert_string_equal(raw, "1;");
}

/* An entity with nothing pending keeps its base once: stored as '' it reads as its local view
 * (schema 6); while an op is pending the base is its own text again. */
static void test_fsa_journal_get_base__a_synced_entity_is_stored_once(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t a, b;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &a));
    fsa_op_result_t r = result_for(a.op_id, FSA_RESULT_APPLIED, 1);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    char raw[1024];
    raw_rows(f, "SELECT base, base_version FROM entities WHERE id = ?1", "T1", raw, sizeof raw);
    assert_string_equal(raw, "=1;");
    char *base = NULL, *local = NULL;
    int64_t v = 0;
    assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_TICKET, "T1", &base, &v));
    assert_fsa_ok(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T1", &local, NULL, NULL));
    assert_string_equal(base, local);
    assert_int_equal(v, 1);
    fsa_free(local);
    assert_fsa_ok(
        fsa_journal_set(f->j, FSA_TYPE_TICKET, "T1", "{\"priority\":\"HIGH\"}", NULL, &b));
    raw_rows(f, "SELECT base FROM entities WHERE id = ?1", "T1", raw, sizeof raw);
    char want[1024];
    snprintf(want, sizeof want, "%s;", base);
    assert_string_equal(raw, want); /* the base whole, beside the new local view */
    fsa_free(base);
    r = result_for(b.op_id, FSA_RESULT_APPLIED, 2);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    raw_rows(f, "SELECT base, base_version FROM entities WHERE id = ?1", "T1", raw, sizeof raw);
    assert_string_equal(raw, "=2;");
    assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_TICKET, "T1", &base, &v));
    assert_non_null(strstr(base, "\"priority\":\"HIGH\""));
    fsa_free(base);
}

/* The sync state's rows, less the journal's own bookkeeping, in key order. */
static void raw_state(fixture_t *f, char *out, size_t cap)
{
    raw_rows(f,
             "SELECT k, v FROM sync_state WHERE k NOT IN ('clean_close', 'fsync_failures', "
             "'wal_starts', 'op_id_salt') "
             "ORDER BY k",
             NULL, out, cap);
}

/* The stored outcome, decision and resolution of the conflict of op_id. */
static void raw_conflict(fixture_t *f, const char *op_id, char *out, size_t cap)
{
    raw_rows(f, "SELECT outcome, decision, resolution FROM conflicts WHERE op_id = ?1", op_id, out,
             cap);
}

static void test_fsa_conflict_names__round_trip_and_unknown(void **state)
{
    (void)state;
    for (int v = FSA_RESULT_CONFLICT; v <= FSA_RESULT_REJECTED; v++) {
        fsa_result_status_t o = FSA_RESULT_APPLIED;
        assert_fsa_ok(fsa_conflict_outcome_parse(fsa_conflict_outcome_name(v), &o));
        assert_int_equal(o, v);
    }
    for (int v = FSA_DECISION_NONE; v <= FSA_DECISION_SERVER_WINS; v++) {
        fsa_conflict_decision_t d = (fsa_conflict_decision_t)-1;
        assert_fsa_ok(fsa_conflict_decision_parse(fsa_conflict_decision_name(v), &d));
        assert_int_equal(d, v);
    }
    for (int v = FSA_RESOLVED_NONE; v <= FSA_RESOLVED_CONVERGED; v++) {
        fsa_conflict_resolution_t r = (fsa_conflict_resolution_t)-1;
        assert_fsa_ok(fsa_conflict_resolution_parse(fsa_conflict_resolution_name(v), &r));
        assert_int_equal(r, v);
    }
    /* the stored names are a persisted format: spelled out */
    assert_string_equal(fsa_conflict_outcome_name(FSA_RESULT_CONFLICT), "conflict");
    assert_string_equal(fsa_conflict_outcome_name(FSA_RESULT_REJECTED), "rejected");
    assert_string_equal(fsa_conflict_decision_name(FSA_DECISION_NONE), "");
    assert_string_equal(fsa_conflict_decision_name(FSA_DECISION_PARK), "park");
    assert_string_equal(fsa_conflict_decision_name(FSA_DECISION_SERVER_WINS), "server-wins");
    assert_string_equal(fsa_conflict_resolution_name(FSA_RESOLVED_NONE), "");
    assert_string_equal(fsa_conflict_resolution_name(FSA_RESOLVED_SERVER), "server");
    assert_string_equal(fsa_conflict_resolution_name(FSA_RESOLVED_LOCAL), "local");
    assert_string_equal(fsa_conflict_resolution_name(FSA_RESOLVED_REBASED), "rebased");
    assert_string_equal(fsa_conflict_resolution_name(FSA_RESOLVED_CONVERGED), "converged");
    /* unknown names are errors; values out of range have no name */
    fsa_result_status_t o;
    fsa_conflict_decision_t d;
    fsa_conflict_resolution_t r;
    assert_int_equal(fsa_conflict_outcome_parse("applied", &o), FSA_EINVAL);
    assert_int_equal(fsa_conflict_outcome_parse("Conflict", &o), FSA_EINVAL);
    assert_int_equal(fsa_conflict_outcome_parse(NULL, &o), FSA_EINVAL);
    assert_int_equal(fsa_conflict_outcome_parse("", &o), FSA_EINVAL); /* no outcome is "" */
    assert_string_equal(fsa_conflict_outcome_name(FSA_RESULT_DUPLICATE), "?");
    assert_string_equal(fsa_conflict_outcome_name((fsa_result_status_t)-1), "?");
    assert_int_equal(fsa_conflict_decision_parse("server_wins", &d), FSA_EINVAL);
    assert_int_equal(fsa_conflict_resolution_parse("dismissed", &r), FSA_EINVAL);
    assert_int_equal(fsa_conflict_resolution_parse("local", NULL), FSA_EINVAL);
    assert_string_equal(fsa_conflict_outcome_name(FSA_RESULT_APPLIED), "?");
    assert_string_equal(fsa_conflict_decision_name((fsa_conflict_decision_t)9), "?");
    assert_string_equal(fsa_conflict_resolution_name((fsa_conflict_resolution_t)-1), "?");
}

static void test_fsa_conflict__enums_stored_as_names(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    reject(f, rec.op_id, "invalid_value");
    char v[64];
    raw_conflict(f, rec.op_id, v, sizeof v);
    assert_string_equal(v, "rejected==NULL;");
    assert_int_equal(fsa_conflict_set_decision(f->j, rec.op_id, FSA_DECISION_NONE), FSA_EINVAL);
    assert_int_equal(fsa_conflict_set_decision(f->j, rec.op_id, (fsa_conflict_decision_t)7),
                     FSA_EINVAL);
    assert_fsa_ok(fsa_conflict_set_decision(f->j, rec.op_id, FSA_DECISION_PARK));
    raw_conflict(f, rec.op_id, v, sizeof v);
    assert_string_equal(v, "rejected=park=NULL;");
    assert_int_equal(fsa_conflict_resolve(f->j, rec.op_id, false, FSA_RESOLVED_NONE, NULL),
                     FSA_EINVAL);
    assert_int_equal(
        fsa_conflict_resolve(f->j, rec.op_id, false, (fsa_conflict_resolution_t)5, NULL),
        FSA_EINVAL);
    fsa_conflict_t c;
    assert_fsa_ok(fsa_conflict_get(f->j, rec.op_id, &c));
    assert_int_equal(c.outcome, FSA_RESULT_REJECTED);
    assert_int_equal(c.decision, FSA_DECISION_PARK);
    assert_int_equal(c.resolution, FSA_RESOLVED_NONE);
    fsa_conflict_clear(&c);
    assert_fsa_ok(fsa_conflict_resolve(f->j, rec.op_id, false, FSA_RESOLVED_SERVER, NULL));
    raw_conflict(f, rec.op_id, v, sizeof v);
    assert_string_equal(v, "rejected=park=server;");
    /* a name the journal does not know (written by something else) is corruption, not a guess */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "UPDATE conflicts SET resolution = 'maybe'", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(fsa_conflict_get(f->j, rec.op_id, &c), FSA_ECORRUPT);
}

/* A person who takes their create of an entity the server has (with other content) gets their
 * fields recorded as a set over the server's state, and their status, when it is not the
 * server's, as a transition from it, in one group. Before, the create was left out as "already
 * satisfied" and what they chose was dropped without a word. A transition the status machine does
 * not allow fails the resolve and leaves the conflict open; a create whose status is the
 * server's and that gives nothing else records nothing; the resolver's own rebase still leaves a
 * create out. */
static void test_fsa_conflict_resolve__a_persons_create_goes_as_set_and_transition(void **state)
{
    fixture_t *f = *state;
    const char *server = "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":1,"
                         "\"expirytime\":0,\"other_info\":{},\"people_id\":\"p2\"}";
    static const struct {
        const char *id, *fields;
        fsa_conflict_resolution_t resolution;
        fsa_status_t st;
        const char *set;    /* the set recorded, NULL: none */
        const char *to;     /* the transition recorded, NULL: none */
        const char *status; /* the local view's after */
    } cases[] = {
        {"J1", "{\"seqno\":5,\"jobstatus\":\"INPROGRESS\"}", FSA_RESOLVED_LOCAL, FSA_OK,
         "{\"seqno\":5}", "INPROGRESS", "\"INPROGRESS\""},
        {"J2", "{\"seqno\":5,\"jobstatus\":\"ASSIGNED\"}", FSA_RESOLVED_LOCAL, FSA_OK,
         "{\"seqno\":5}", NULL, "\"ASSIGNED\""},
        {"J3", "{\"jobstatus\":\"INPROGRESS\"}", FSA_RESOLVED_LOCAL, FSA_OK, NULL, "INPROGRESS",
         "\"INPROGRESS\""},
        {"J4", "{\"seqno\":5,\"jobstatus\":\"COMPLETED\"}", FSA_RESOLVED_LOCAL, FSA_ETRANSITION,
         NULL, NULL, "\"ASSIGNED\""},
        {"J5", "{\"jobstatus\":\"ASSIGNED\"}", FSA_RESOLVED_LOCAL, FSA_OK, NULL, NULL,
         "\"ASSIGNED\""},
        {"J6", "{\"seqno\":5}", FSA_RESOLVED_REBASED, FSA_OK, NULL, NULL, "\"ASSIGNED\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fsa_rec_t rec;
        assert_fsa_ok(
            fsa_journal_create(f->j, FSA_TYPE_JOBNEED, cases[i].id, cases[i].fields, NULL, &rec));
        fsa_op_result_t r = result_for(rec.op_id, FSA_RESULT_CONFLICT, 0);
        r.current_version = 2;
        r.current_fields = (char *)(uintptr_t)server; /* the journal only reads it */
        assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
        fsa_rec_t again;
        assert_int_equal(fsa_conflict_resolve(f->j, rec.op_id, true, cases[i].resolution, &again),
                         cases[i].st);
        fsa_outbox_stats_t st;
        assert_fsa_ok(fsa_outbox_stats(f->j, &st));
        assert_int_equal(st.conflicts, cases[i].st == FSA_OK ? 0 : 1);
        assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, cases[i].id, "jobstatus"),
                            cases[i].status);
        if (cases[i].st != FSA_OK) {
            assert_int_equal(st.pending, 0);
            assert_fsa_ok(
                fsa_conflict_resolve(f->j, rec.op_id, false, FSA_RESOLVED_SERVER, &again));
            continue;
        }
        size_t want = (cases[i].set != NULL) + (cases[i].to != NULL);
        assert_int_equal(st.pending, (int64_t)want);
        assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, cases[i].id, "seqno"),
                            cases[i].set != NULL ? "5" : "1");
        assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, cases[i].id, "people_id"), "\"p2\"");
        if (want == 0) {
            assert_string_equal(again.op_id, "");
            continue;
        }
        fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
        size_t n = 0;
        assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
        assert_int_equal(n, want);
        assert_string_equal(ops[0].op_id, again.op_id);
        /* The transition first: a set that moved the entity out of a device's scope would
         * forbid a transition after it. */
        if (cases[i].to != NULL) {
            assert_int_equal(ops[0].kind, FSA_OP_TRANSITION);
            assert_string_equal(ops[0].from, "ASSIGNED");
            assert_string_equal(ops[0].to, cases[i].to);
        }
        if (cases[i].set != NULL) {
            const fsa_op_t *set = &ops[n - 1];
            assert_int_equal(set->kind, FSA_OP_SET);
            assert_int_equal(set->base_version, 2 + (int64_t)(n - 1)); /* after the transition */
            assert_string_equal(set->json, cases[i].set);
        }
        assert_string_not_equal(ops[0].group, ""); /* one group: both or neither */
        assert_string_equal(ops[0].group, ops[n - 1].group);
        fsa_op_result_t applied[2];
        for (size_t k = 0; k < n; k++)
            applied[k] = result_for(ops[k].op_id, FSA_RESULT_APPLIED, 3 + (int64_t)k);
        assert_fsa_ok(fsa_outbox_apply_results(f->j, applied, n));
        for (size_t k = 0; k < n; k++)
            fsa_op_clear(&ops[k]);
    }
}

/* What a person's creates cannot become is refused, and the conflict stays open: attendance,
 * which is never changed (the server's record stands), and a group that would grow past
 * FSA_JOURNAL_GROUP_MAX ops (16 creates, each a transition and a set), which a batch could not
 * take whole. */
static void test_fsa_conflict_resolve__a_persons_creates_that_cannot_go(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_ATTENDANCE, "A9",
                                     "{\"people_id\":\"p1\",\"site_id\":\"s1\","
                                     "\"kind\":\"checkin\",\"at\":5}",
                                     NULL, &rec));
    fsa_op_result_t r[FSA_JOURNAL_GROUP_MAX];
    r[0] = result_for(rec.op_id, FSA_RESULT_CONFLICT, 0);
    r[0].current_version = 1;
    r[0].current_fields = "{\"people_id\":\"p1\",\"site_id\":\"s2\",\"kind\":\"checkin\","
                          "\"at\":5,\"lat\":null,\"lon\":null,\"accuracy_m\":null,"
                          "\"other_info\":{}}";
    assert_fsa_ok(fsa_outbox_apply_results(f->j, r, 1));
    fsa_rec_t again;
    assert_int_equal(fsa_conflict_resolve(f->j, rec.op_id, true, FSA_RESOLVED_LOCAL, &again),
                     FSA_EINVAL);
    assert_non_null(strstr(again.error, "never changed"));
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.conflicts, 1);
    assert_fsa_ok(fsa_conflict_resolve(f->j, rec.op_id, false, FSA_RESOLVED_SERVER, &again));

    fsa_op_t g[FSA_JOURNAL_GROUP_MAX];
    memset(g, 0, sizeof g);
    for (int i = 0; i < FSA_JOURNAL_GROUP_MAX; i++) {
        g[i].kind = FSA_OP_CREATE;
        g[i].type = FSA_TYPE_JOBNEED;
        snprintf(g[i].id, sizeof g[i].id, "G%d", i);
        g[i].json = (char *)(uintptr_t) "{\"jobstatus\":\"INPROGRESS\",\"seqno\":5}";
    }
    assert_fsa_ok(fsa_journal_record_group(f->j, g, FSA_JOURNAL_GROUP_MAX, NULL, &rec));
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, FSA_JOURNAL_GROUP_MAX);
    for (size_t i = 0; i < n; i++) {
        r[i] = result_for(ops[i].op_id, FSA_RESULT_CONFLICT, 0);
        r[i].current_version = 1;
        r[i].current_fields = "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":1,"
                              "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}";
    }
    assert_fsa_ok(fsa_outbox_apply_results(f->j, r, n));
    assert_int_equal(fsa_conflict_resolve(f->j, ops[0].op_id, true, FSA_RESOLVED_LOCAL, &again),
                     FSA_ETOOLARGE);
    assert_non_null(strstr(again.error, "would pass 16 ops"));
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.conflicts, FSA_JOURNAL_GROUP_MAX);
    assert_int_equal(st.pending, 0);
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&ops[i]);
}

static void test_fsa_conflict_resolve__group_without_converged_member(void **state)
{
    fixture_t *f = *state;
    const char *v1 = "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":0,"
                     "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}";
    const char *v2 = "{\"jobstatus\":\"INPROGRESS\",\"parent_id\":null,\"seqno\":0,"
                     "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}";
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_JOBNEED, "J1", 1, v1));
    fsa_op_t g[2];
    memset(g, 0, sizeof g);
    g[0].kind = FSA_OP_TRANSITION;
    g[0].type = FSA_TYPE_JOBNEED;
    snprintf(g[0].id, sizeof g[0].id, "J1");
    snprintf(g[0].to, sizeof g[0].to, "INPROGRESS");
    g[1].kind = FSA_OP_MERGE;
    g[1].type = FSA_TYPE_JOBNEED;
    snprintf(g[1].id, sizeof g[1].id, "J1");
    snprintf(g[1].field, sizeof g[1].field, "other_info");
    g[1].json = (char *)(uintptr_t) "{\"started_by\":\"me\"}";
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_record_group(f->j, g, 2, NULL, &rec));
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 2);
    /* another device started the job first: the whole group conflicts */
    fsa_op_result_t r[2];
    for (int i = 0; i < 2; i++) {
        r[i] = result_for(ops[i].op_id, FSA_RESULT_CONFLICT, 0);
        r[i].current_version = 2;
        r[i].current_fields = (char *)(uintptr_t)v2; /* the journal only reads it */
    }
    assert_fsa_ok(fsa_outbox_apply_results(f->j, r, 2));
    fsa_rec_t again;
    assert_fsa_ok(fsa_conflict_resolve(f->j, ops[0].op_id, true, FSA_RESOLVED_REBASED, &again));
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&ops[i]);
    /* only the merge is sent again */
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 1);
    assert_int_equal(ops[0].kind, FSA_OP_MERGE);
    assert_string_equal(ops[0].op_id, again.op_id);
    fsa_op_clear(&ops[0]);
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.conflicts, 0);
}

/* A group [transition id -> to, merge of patch into field] recorded on id at version 1 (v1),
 * then a transition to later_to; the server had come to `to` already (version 2, v2): the
 * group's two ops answered conflict, the later transition applied (version 3). rec: the group. */
static void converged_then_moved_on(fixture_t *f, fsa_type_t type, const char *v1, const char *v2,
                                    const char *to, const char *field, const char *patch,
                                    const char *later_to, fsa_rec_t *rec)
{
    assert_fsa_ok(fsa_journal_fold(f->j, type, "X1", 1, v1));
    fsa_op_t g[2];
    memset(g, 0, sizeof g);
    g[0].kind = FSA_OP_TRANSITION;
    g[0].type = type;
    snprintf(g[0].id, sizeof g[0].id, "X1");
    snprintf(g[0].to, sizeof g[0].to, "%s", to);
    g[1].kind = FSA_OP_MERGE;
    g[1].type = type;
    snprintf(g[1].id, sizeof g[1].id, "X1");
    snprintf(g[1].field, sizeof g[1].field, "%s", field);
    g[1].json = (char *)(uintptr_t)patch;
    fsa_rec_t later;
    assert_fsa_ok(fsa_journal_record_group(f->j, g, 2, NULL, rec));
    assert_fsa_ok(fsa_journal_transition(f->j, type, "X1", later_to, NULL, &later));
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 3);
    fsa_op_result_t r[3];
    for (int i = 0; i < 2; i++) {
        r[i] = result_for(ops[i].op_id, FSA_RESULT_CONFLICT, 0);
        r[i].current_version = 2;
        r[i].current_fields = (char *)(uintptr_t)v2;
    }
    r[2] = result_for(ops[2].op_id, FSA_RESULT_APPLIED, 3);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, r, 3));
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&ops[i]);
}

/* A job's group [ASSIGNED->INPROGRESS, merge] fails because another device started the job
 * first; this device's later INPROGRESS->COMPLETED applies. The resolver says the transition
 * converged and the merge rebases (group: rebase), but record_again judged "satisfied" on the
 * local view (COMPLETED now) and recorded the transition again from COMPLETED, which fails: the
 * engine then parked the whole group, the merge ("never conflicts") with it. */
static void test_fsa_conflict_resolve__a_converged_transition_keeps_its_group_whole(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec, again;
    converged_then_moved_on(f, FSA_TYPE_JOBNEED,
                            "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":0,"
                            "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}",
                            "{\"jobstatus\":\"INPROGRESS\",\"parent_id\":null,\"seqno\":0,"
                            "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}",
                            "INPROGRESS", "other_info", "{\"started_by\":\"me\"}", "COMPLETED",
                            &rec);
    fsa_status_t st = fsa_conflict_resolve(f->j, rec.op_id, true, FSA_RESOLVED_REBASED, &again);
    if (st != FSA_OK)
        fail_msg("rebase: %s", again.error);
    /* the merge goes again, alone; the transition converged */
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 1);
    assert_int_equal(ops[0].kind, FSA_OP_MERGE);
    fsa_op_clear(&ops[0]);
    assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, "X1", "jobstatus"), "\"COMPLETED\"");
}

/* A ticket's group [NEW->RESOLVED, merge into ticketlog]; another device resolved it first, so
 * the group conflicts; the user's later reopen RESOLVED->OPEN applies. record_again judged the
 * transition on the local view (OPEN), found it unsatisfied and recorded it again as
 * OPEN->RESOLVED: the converged transition went a second time and undid the user's reopen. */
static void test_fsa_conflict_resolve__a_converged_transition_is_not_sent_again(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec, again;
    converged_then_moved_on(f, FSA_TYPE_TICKET,
                            "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                            "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}",
                            "{\"status\":\"RESOLVED\",\"level\":0,\"assignedto\":\"\","
                            "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}",
                            "RESOLVED", "ticketlog", "{\"resolved_note\":\"fixed\"}", "OPEN", &rec);
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "X1", "status"), "\"OPEN\"");
    assert_fsa_ok(fsa_conflict_resolve(f->j, rec.op_id, true, FSA_RESOLVED_REBASED, &again));
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    for (size_t i = 0; i < n; i++) {
        if (ops[i].kind == FSA_OP_TRANSITION)
            fail_msg("the converged transition goes again, %s->%s", ops[i].from, ops[i].to);
        fsa_op_clear(&ops[i]);
    }
    /* the user's last action, the reopen, stands */
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "X1", "status"), "\"OPEN\"");
}

/* Closing a conflict without taking ours ("server", "converged") logs the change at the entity's
 * server version, as the server-wins decision does: 0 would say "never on the server". */
static void test_fsa_conflict_resolve__logged_at_the_server_version(void **state)
{
    fixture_t *f = *state;
    const char *v1 = "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":1,"
                     "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}";
    const char *v4 = "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":2,"
                     "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}";
    const char *v7 = "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":7,"
                     "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}";
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_JOBNEED, "J1", 3, v1));
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_JOBNEED, "J2", 5, v1));
    fsa_rec_t s1, s2;
    assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J1", "{\"seqno\":7}", NULL, &s1));
    assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J2", "{\"seqno\":7}", NULL, &s2));
    /* J1's server moved on to version 4 with other content; J2's to version 6 with ours */
    fsa_op_result_t r[2] = {result_for(s1.op_id, FSA_RESULT_CONFLICT, 0),
                            result_for(s2.op_id, FSA_RESULT_CONFLICT, 0)};
    r[0].current_version = 4;
    r[0].current_fields = (char *)(uintptr_t)v4; /* the journal only reads it */
    r[1].current_version = 6;
    r[1].current_fields = (char *)(uintptr_t)v7;
    assert_fsa_ok(fsa_outbox_apply_results(f->j, r, 2));
    int64_t last = 0;
    assert_fsa_ok(fsa_journal_changes_last(f->j, &last));
    assert_fsa_ok(fsa_conflict_resolve(f->j, s1.op_id, false, FSA_RESOLVED_SERVER, NULL));
    assert_fsa_ok(fsa_conflict_resolve(f->j, s2.op_id, false, FSA_RESOLVED_CONVERGED, NULL));
    fsa_change_t c[4];
    size_t n = 0;
    assert_fsa_ok(fsa_journal_changes_read(f->j, last, c, 4, &n));
    assert_int_equal(n, 2);
    assert_int_equal(c[0].reason, FSA_CHANGE_RESOLVED);
    assert_string_equal(c[0].op_id, s1.op_id);
    assert_int_equal(c[0].version, 4);
    assert_int_equal(c[1].reason, FSA_CHANGE_SYNCED);
    assert_string_equal(c[1].op_id, s2.op_id);
    assert_int_equal(c[1].version, 6);
}

/* A group is resolved whole or not at all. With each read of the journal's files failing in turn
 * (a cold cache, one member per page, so reading the group's later members reaches the disk), the
 * call either resolves every member or fails and leaves them all open. */
static void test_fsa_conflict_resolve__group_whole_under_read_faults(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(vfs_fault_install(), SQLITE_OK);
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    enum { MEMBERS = 3, NOTE = 3000 }; /* a member's patch fills most of a 4 KiB page */
    static char patch[MEMBERS][NOTE + 32];
    fsa_op_t g[MEMBERS];
    memset(g, 0, sizeof g);
    for (int i = 0; i < MEMBERS; i++) {
        int n = snprintf(patch[i], sizeof patch[i], "{\"note%d\":\"", i);
        memset(patch[i] + n, 'a' + i, NOTE);
        snprintf(patch[i] + n + NOTE, sizeof patch[i] - (size_t)n - NOTE, "\"}");
        g[i].kind = FSA_OP_MERGE;
        g[i].type = FSA_TYPE_TICKET;
        snprintf(g[i].id, sizeof g[i].id, "T1");
        snprintf(g[i].field, sizeof g[i].field, "ticketlog");
        g[i].json = patch[i];
    }
    assert_fsa_ok(fsa_journal_record_group(f->j, g, MEMBERS, NULL, &rec));
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    size_t n = 0;
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, MEMBERS + 1);
    fsa_op_result_t r[MEMBERS + 1];
    for (size_t i = 0; i < n; i++) {
        r[i] = result_for(ops[i].op_id, i == 0 ? FSA_RESULT_APPLIED : FSA_RESULT_REJECTED, 1);
        snprintf(r[i].code, sizeof r[i].code, "invalid_value");
        snprintf(r[i].message, sizeof r[i].message, "nope");
    }
    assert_fsa_ok(fsa_outbox_apply_results(f->j, r, n));
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.rejected, MEMBERS);
    fsa_journal_opts_t o = {.create = false};
    char err[256];
    for (int64_t k = 1;; k++) {
        fsa_journal_close(f->j); /* a cold page cache: every page is read again */
        assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err));
        vfs_fault_plan_t plan = {.kinds = VFS_FAULT_READ, .nth = k};
        vfs_fault_arm(f->dir.path, &plan);
        fsa_status_t s = fsa_conflict_resolve(f->j, ops[1].op_id, false, FSA_RESOLVED_SERVER, NULL);
        bool fired = vfs_fault_fired() > 0;
        vfs_fault_disarm();
        assert_fsa_ok(fsa_outbox_stats(f->j, &st));
        if (s == FSA_OK && !fired) {
            assert_int_equal(st.rejected, 0);
            assert_true(k > 1); /* some read did fail on the way: the sweep swept */
            break;
        }
        if (s == FSA_OK)
            fail_msg("read %lld failed, yet resolving the group succeeded (%lld of %d left open)",
                     (long long)k, (long long)st.rejected, MEMBERS);
        assert_int_equal(st.rejected, MEMBERS); /* none of them resolved */
        assert_true(k < 10000);
    }
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&ops[i]);
}

/* ---- applying a batch while the app records (fsa_outbox_apply_batch) ---- */

enum { BIG_TICKETS = 10, BIG_INCREMENTS = 3990, BIG_OPS = BIG_TICKETS + BIG_INCREMENTS };

/* Records BIG_INCREMENTS increments of the tickets' level in groups of 15, round robin. */
static void big_increments(fixture_t *f)
{
    fsa_rec_t rec;
    for (int done = 0; done < BIG_INCREMENTS; done += 15) {
        fsa_op_t ops[15];
        memset(ops, 0, sizeof ops);
        for (int k = 0; k < 15; k++) {
            ops[k].kind = FSA_OP_INCREMENT;
            ops[k].type = FSA_TYPE_TICKET;
            ops[k].by = 1;
            snprintf(ops[k].id, sizeof ops[k].id, "T%d", (done + k) % BIG_TICKETS);
            snprintf(ops[k].field, sizeof ops[k].field, "level");
        }
        assert_fsa_ok(fsa_journal_record_group(f->j, ops, 15, NULL, &rec));
    }
}

/* Reopens the fixture's journal (FULL, or NORMAL when sync_normal) and records a backlog: tickets
 * T0..T9 created, then BIG_INCREMENTS increments of their level in groups, round robin. */
static void big_backlog(fixture_t *f, bool sync_normal)
{
    fsa_journal_close(f->j);
    fsa_journal_opts_t o = {.sync_normal = sync_normal};
    char err[256];
    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err));
    fsa_rec_t rec;
    for (int t = 0; t < BIG_TICKETS; t++) {
        char id[16];
        snprintf(id, sizeof id, "T%d", t);
        assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, id, NULL, NULL, &rec));
    }
    big_increments(f);
}

/* The whole backlog as one batch, and the server's answers: every op applied, each entity's
 * versions counting up from 1. */
static fsa_op_t big_ops[BIG_OPS];
static fsa_op_result_t big_res[BIG_OPS];

static size_t big_batch(fixture_t *f)
{
    size_t n = 0;
    assert_fsa_ok(fsa_outbox_next_batch(f->j, big_ops, BIG_OPS, 1 << 26, &n));
    assert_int_equal(n, BIG_OPS);
    int64_t version[BIG_TICKETS] = {0};
    for (size_t i = 0; i < n; i++) {
        int t = big_ops[i].id[1] - '0';
        big_res[i] = result_for(big_ops[i].op_id, FSA_RESULT_APPLIED, ++version[t]);
    }
    return n;
}

static void big_clear(size_t n)
{
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&big_ops[i]);
}

/* The results' commits do not wait for the disk: a lost result only makes its op be sent again
 * (the server answers a known op id with its first result). After the batch the drain starts the
 * WAL's writing without waiting for it (no sync), or checkpoints it (the WAL, then the database),
 * outside the journal's mutex; records stay synchronous=FULL. Counted with the VFS shim, over a
 * batch of several transactions. */
static void test_fsa_outbox_apply_batch__results_commit_without_sync(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(vfs_fault_install(), SQLITE_OK);
    big_backlog(f, false); /* reopened: through the shim, FULL */
    size_t n = big_batch(f);
    vfs_fault_plan_t count_only = {.kinds = VFS_FAULT_SYNC, .nth = INT64_MAX};
    vfs_fault_arm(f->dir.path, &count_only);
    assert_fsa_ok(fsa_outbox_apply_batch(f->j, big_ops, big_res, n, NULL, 0));
    int64_t apply_syncs = vfs_fault_calls();
    vfs_fault_arm(f->dir.path, &count_only);
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T0", "level", 1, NULL, &rec));
    int64_t record_syncs = vfs_fault_calls();
    vfs_fault_disarm();
    /* The flush: none (the WAL's writeback is only started), or a checkpoint (the WAL, then the
     * database) and the next WAL's start (its header); a system without the writeback call syncs
     * the WAL once. FULL commits would have synced once per transaction, at least
     * BIG_OPS / FSA_LIMIT_BATCH_OPS of them. The record after it syncs once (a new WAL's header
     * was the drain's). */
    assert_true(apply_syncs <= 3);
    assert_int_equal(record_syncs, 1);
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.pending, 1);
    assert_int_equal(st.done, 0); /* the applied ops left the outbox with their results */
    assert_int_equal(count_sql(f, "SELECT count(*) FROM done_ops"), BIG_OPS);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM outbox"), 1);
    int64_t bv = 0;
    char *base = NULL;
    assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_TICKET, "T3", &base, &bv));
    assert_int_equal(bv, 1 + BIG_INCREMENTS / BIG_TICKETS);
    fsa_model_free(base);
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T0", "level"), "400");
    big_clear(n);
}

typedef struct applier {
    fsa_journal_t *j;
    size_t n;
    fsa_status_t st;
} applier_t;

static void *apply_thread(void *arg)
{
    applier_t *a = arg;
    a->st = fsa_outbox_apply_batch(a->j, big_ops, big_res, a->n, NULL, 0);
    return NULL;
}

/* A record made while a large batch's results are applied does not wait for all of them: the
 * results go in several transactions, and between two of them the applying thread lets a thread
 * that waits for the journal go first. The change log tells the order: the record's row comes
 * before the batch's last. */
static void test_fsa_outbox_apply_batch__record_goes_between_transactions(void **state)
{
    fixture_t *f = *state;
    big_backlog(f, true); /* NORMAL: a fast backlog; the order is what is looked at */
    size_t n = big_batch(f);
    int64_t before = 0;
    assert_fsa_ok(fsa_journal_changes_last(f->j, &before));
    applier_t a = {.j = f->j, .n = n, .st = FSA_EIO};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, apply_thread, &a), 0);
    /* Until the first of the batch's transactions is in (each look waits its turn too). */
    int64_t last = before;
    while (last == before)
        assert_fsa_ok(fsa_journal_changes_last(f->j, &last));
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T0", "level", 1, NULL, &rec));
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_fsa_ok(a.st);
    static fsa_change_t ch[BIG_OPS + 1];
    size_t nch = 0;
    assert_fsa_ok(fsa_journal_changes_read(f->j, before, ch, BIG_OPS + 1, &nch));
    assert_int_equal(nch, BIG_OPS + 1);
    size_t mine = nch;
    for (size_t i = 0; i < nch; i++)
        if (ch[i].reason == FSA_CHANGE_RECORDED && strcmp(ch[i].op_id, rec.op_id) == 0)
            mine = i;
    assert_true(mine < nch);
    if (mine == nch - 1)
        fail_msg("the record waited for all %d results", BIG_OPS);
    assert_int_equal(ch[nch - 1].reason, FSA_CHANGE_SYNCED);
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.pending, 1);
    assert_int_equal(st.done, 0); /* the applied ops left the outbox with their results */
    assert_int_equal(count_sql(f, "SELECT count(*) FROM done_ops"), BIG_OPS);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM outbox"), 1);
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T0", "level"), "400");
    big_clear(n);
}

/* After the drain's checkpoint lets the WAL start again (fsa__db_flush), the drain starts the
 * WAL's next generation itself: the next record's FULL commit syncs the WAL once, not the new
 * WAL's header first and then its frames. */
static void test_fsa_db_flush__next_record_syncs_once(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(vfs_fault_install(), SQLITE_OK);
    vfs_fault_set_real_sync(false); /* no power is cut: the backlog need not wait for the disk */
    fsa__db_checkpoint_claim(60 * FSA_NS_PER_S); /* the WAL grows past a checkpoint's size */
    big_backlog(f, false);                       /* reopened FULL, through the shim */
    sqlite3 *own = NULL;
    fsa__db_flush(f->dir.path, &own);
    fsa__db_checkpoint_claim(0);
    char wal[sizeof f->dir.path + 8];
    snprintf(wal, sizeof wal, "%s-wal", f->dir.path);
    vfs_fault_plan_t count_only = {.kinds = VFS_FAULT_SYNC, .nth = INT64_MAX};
    vfs_fault_arm(wal, &count_only);
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T0", "level", 1, NULL, &rec));
    int64_t syncs = vfs_fault_calls();
    vfs_fault_disarm();
    vfs_fault_set_real_sync(true);
    sqlite3_close(own);
    assert_int_equal(syncs, 1);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM sync_state WHERE k = 'wal_starts'"), 1);
}

typedef struct creator {
    fsa_journal_t *j;
    fsa_status_t st;
    atomic_bool done;
} creator_t;

static void *create_thread(void *arg)
{
    creator_t *c = arg;
    fsa_rec_t rec;
    c->st = fsa_journal_create(c->j, FSA_TYPE_TICKET, "T9", NULL, NULL, &rec);
    atomic_store(&c->done, true);
    return NULL;
}

/* The queue's figures are read without the journal's mutex (on a reader connection): a record
 * that holds it while it waits for the write lock (here another connection's open transaction)
 * does not hold them up, and they show the last commit. */
static void test_fsa_outbox_stats__does_not_wait_for_a_record(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T2", NULL, NULL, &rec));
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(f->dir.path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    uint64_t waits0 = fsa__db_busy_waits();
    creator_t c = {.j = f->j, .st = FSA_EIO};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, create_thread, &c), 0);
    /* Until the record waits for the write lock (the journal's busy handler counts it). */
    while (fsa__db_busy_waits() == waits0)
        sched_yield();
    fsa_outbox_stats_t st;
    fsa_status_t s = fsa_outbox_stats(f->j, &st);
    bool record_ended_first = atomic_load(&c.done);
    assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(other), SQLITE_OK);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_fsa_ok(s);
    if (record_ended_first)
        fail_msg("the figures waited for the record (it ended with %s)", fsa_status_str(c.st));
    assert_int_equal(st.pending, 2);
    assert_int_equal(st.last_seq, 2);
    assert_fsa_ok(c.st);
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.pending, 3);
    assert_int_equal(st.last_seq, 3);
}

/* A batch of 40 increments on one ticket whose answers mix runs of applied ops (and duplicates of
 * applied), a conflict and a rejection, where ops 5..9 were answered before (one at a time): each
 * applied op is closed once; the parked ops keep their rows; a listener hears each op once; the
 * same batch applied again changes nothing. Ops 5..9, answered first, are past the base (at 1),
 * which stops at ops 0..4's 6 and takes none of the later ones: those applied ops stay in the
 * outbox as done until folded (journal_apply.c, keep_until_folded), and the view that the
 * conflict's rebuild makes keeps every applied increment. */
enum { MIX_KEPT = 33 }; /* ops 5..39 applied (all but the conflict and the rejection) */
enum { MIX_OPS = 40, MIX_CONFLICT = 17, MIX_REJECTED = 30 };

static void test_fsa_outbox_apply_batch__mixed_answers_once(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 1,
                                   "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                                   "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"LOW\"}"));
    for (int i = 0; i < MIX_OPS; i++)
        assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", 1, NULL, &rec));
    static fsa_op_t ops[MIX_OPS];
    static fsa_op_result_t res[MIX_OPS];
    size_t n = 0;
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, MIX_OPS, 1 << 20, &n));
    assert_int_equal(n, MIX_OPS);
    int64_t version = 1, applied = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == MIX_CONFLICT) {
            res[i] = result_for(ops[i].op_id, FSA_RESULT_CONFLICT, 0);
            res[i].current_version = version;
        } else if (i == MIX_REJECTED) {
            res[i] = result_for(ops[i].op_id, FSA_RESULT_REJECTED, 0);
            snprintf(res[i].code, sizeof res[i].code, "invalid_value");
        } else {
            res[i] = result_for(ops[i].op_id, FSA_RESULT_APPLIED, ++version);
            applied++;
            if (i % 7 == 3) { /* a duplicate of applied counts as applied */
                res[i].status = FSA_RESULT_DUPLICATE;
                res[i].original = FSA_RESULT_APPLIED;
            }
        }
    }
    /* ops 5..9 answered first, as a lost batch's answers could be */
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &res[5], 5));
    assert_int_equal(count_sql(f, "SELECT count(*) FROM done_ops"), 0);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM outbox WHERE state=2"), 5);
    int64_t before = 0;
    assert_fsa_ok(fsa_journal_changes_last(f->j, &before));
    assert_fsa_ok(fsa_outbox_apply_batch(f->j, ops, res, n, NULL, 0));
    /* the outbox keeps the two parked ops and the applied ones past the base; done_ops the
     * others, once; every applied op's id is in one of them */
    assert_int_equal(count_sql(f, "SELECT count(*) FROM outbox"), 2 + MIX_KEPT);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM outbox WHERE state IN (3, 4)"), 2);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM outbox WHERE state=2"), MIX_KEPT);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM done_ops"), applied - MIX_KEPT);
    assert_int_equal(count_sql(f, "SELECT count(DISTINCT op_id) FROM done_ops"),
                     applied - MIX_KEPT);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM done_ops d JOIN outbox o USING(op_id)"), 0);
    char want_level[24];
    snprintf(want_level, sizeof want_level, "%" PRId64, applied);
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "level"), want_level);
    for (size_t i = 0; i < n; i++) {
        fsa_op_state_t os = FSA_OPSTATE_PENDING;
        assert_fsa_ok(fsa_outbox_op_state(f->j, ops[i].op_id, &os));
        assert_int_equal(os, i == MIX_CONFLICT   ? FSA_OPSTATE_CONFLICT
                             : i == MIX_REJECTED ? FSA_OPSTATE_REJECTED
                                                 : FSA_OPSTATE_DONE);
    }
    static fsa_change_t ch[2 * MIX_OPS];
    size_t nch = 0;
    assert_fsa_ok(fsa_journal_changes_read(f->j, before, ch, 2 * MIX_OPS, &nch));
    assert_int_equal(nch, MIX_OPS - 5); /* one per op not answered before */
    for (size_t i = 0; i < nch; i++)
        for (size_t k = 0; k < 5; k++)
            assert_string_not_equal(ch[i].op_id, ops[5 + k].op_id);
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.done, MIX_KEPT);
    assert_int_equal(st.conflicts, 1);
    assert_int_equal(st.rejected, 1);
    char *base = NULL;
    int64_t bv = 0;
    assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_TICKET, "T1", &base, &bv));
    fsa_model_free(base);
    /* again: nothing moves, nothing is heard */
    int64_t last = 0;
    assert_fsa_ok(fsa_journal_changes_last(f->j, &last));
    assert_fsa_ok(fsa_outbox_apply_batch(f->j, ops, res, n, NULL, 0));
    int64_t last2 = 0;
    assert_fsa_ok(fsa_journal_changes_last(f->j, &last2));
    assert_int_equal(last2, last);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM outbox"), 2 + MIX_KEPT);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM done_ops"), applied - MIX_KEPT);
    int64_t bv2 = 0;
    assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_TICKET, "T1", &base, &bv2));
    fsa_model_free(base);
    assert_int_equal(bv2, bv);
    assert_int_equal(bv, 6);
    /* a compaction leaves the kept ones while the base is behind them; once a pull has folded
     * the server's state (at 39: 38 increments applied), it moves them to done_ops */
    size_t removed = 9;
    assert_fsa_ok(fsa_outbox_compact(f->j, FSA_LIMIT_AUDIT_MS, &removed));
    assert_int_equal(removed, 0);
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "level"), want_level);
    char server[160];
    snprintf(server, sizeof server,
             "{\"status\":\"NEW\",\"level\":%" PRId64 ",\"assignedto\":\"\","
             "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"LOW\"}",
             applied);
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 1 + applied, server));
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "level"), want_level);
    assert_fsa_ok(fsa_outbox_compact(f->j, FSA_LIMIT_AUDIT_MS, &removed));
    assert_int_equal(removed, MIX_KEPT);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM outbox"), 2);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM done_ops"), applied);
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&ops[i]);
}

/*
 * A drain's results on one entity are replayed as a run and its base printed once
 * (storage/journal_apply.c). The same ops and answers on a second ticket, applied one by one
 * (fsa_outbox_apply_results), must leave the same base, version and change rows, through each
 * place where a run ends early: a conflict that keeps the base (the run before it printed), an
 * applied op without a version, a conflict that replaces the base, an op that does not apply onto
 * it (a transition from NEW on a CLOSED base: the base stays before it, and the next results no
 * longer follow), a run that passes the entity limit (the base stops before the op that passes
 * it), and one that passes it and comes back under it (one by one, the base stops before the op
 * that passed it, and a later conflict at that op's version replaces it).
 */
enum { RUN_OPS = 21, RUN_ITEM = 10000, RUN_BIG_ITEM = 30000 };

static void record_run_ops(fixture_t *f, const char *id, fsa_rec_t *rec)
{
    static char item[RUN_ITEM + 3], big_item[RUN_BIG_ITEM + 3];
    memset(item, 'i', sizeof item);
    item[0] = item[RUN_ITEM + 1] = '"';
    item[RUN_ITEM + 2] = '\0';
    memset(big_item, 'j', sizeof big_item);
    big_item[0] = big_item[RUN_BIG_ITEM + 1] = '"';
    big_item[RUN_BIG_ITEM + 2] = '\0';
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, id, 1,
                                   "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                                   "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"LOW\"}"));
    for (int i = 0; i < RUN_OPS; i++) {
        fsa_journal_t *j = f->j;
        if (i == 2)
            assert_fsa_ok(fsa_journal_append(j, FSA_TYPE_TICKET, id, "ticketlog", "ticket_history",
                                             "{\"n\":2}", 0, NULL, &rec[i]));
        else if (i == 9)
            assert_fsa_ok(fsa_journal_transition(j, FSA_TYPE_TICKET, id, "OPEN", NULL, &rec[i]));
        else if (i >= 12 && i < 16)
            assert_fsa_ok(fsa_journal_append(j, FSA_TYPE_TICKET, id, "ticketlog", "big", item, 0,
                                             NULL, &rec[i]));
        else if (i == 17)
            assert_fsa_ok(fsa_journal_append(j, FSA_TYPE_TICKET, id, "ticketlog", "big", big_item,
                                             0, NULL, &rec[i]));
        else if (i == 18)
            assert_fsa_ok(fsa_journal_merge(j, FSA_TYPE_TICKET, id, "ticketlog", "{\"k05\":null}",
                                            NULL, &rec[i]));
        else
            assert_fsa_ok(fsa_journal_increment(j, FSA_TYPE_TICKET, id, "level", 1, NULL, &rec[i]));
    }
}

/* The answer to op i of record_run_ops (op_id), as the server could give it. */
static fsa_op_result_t run_result(int i, const char *op_id, char *closed, char *big)
{
    static const int64_t version[RUN_OPS] = {2, 3,  4,  0,  5,  0, 6,  0,  10, 11, 12,
                                             0, 21, 22, 23, 24, 0, 31, 32, 0,  0};
    fsa_op_result_t r = result_for(op_id, FSA_RESULT_APPLIED, version[i]);
    if (i == 3) { /* the server is at 3: older than the base (4), which stays */
        r.status = FSA_RESULT_CONFLICT;
        r.current_version = 3;
        r.current_fields = closed;
    } else if (i == 5 || i == 20) {
        r.status = FSA_RESULT_DUPLICATE;
        r.original = FSA_RESULT_APPLIED;
    } else if (i == 7 || i == 11 || i == 16) { /* the base becomes the server's */
        r.status = FSA_RESULT_CONFLICT;
        r.current_version = i == 7 ? 9 : i == 11 ? 20 : 30;
        r.current_fields = i == 7 ? closed : big;
    } else if (i == 19) { /* at 31: the version one by one left the base before */
        r.status = FSA_RESULT_CONFLICT;
        r.current_version = 31;
        r.current_fields = closed;
    }
    return r;
}

/* The change rows of ticket id after seq `after`, as "reason@version" in seq order. */
static void changes_of(fixture_t *f, int64_t after, const char *id, char *out, size_t cap)
{
    static fsa_change_t ch[4 * RUN_OPS];
    size_t n = 0, used = 0;
    assert_fsa_ok(fsa_journal_changes_read(f->j, after, ch, 4 * RUN_OPS, &n));
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        if (strcmp(ch[i].id, id) == 0)
            used += (size_t)snprintf(out + used, cap - used, "%d@%" PRId64 " ", (int)ch[i].reason,
                                     ch[i].version);
}

/* A ticket at version 1 with an increment and a transition recorded on it, both read for a
 * batch into ops (FSA_JOURNAL_GROUP_MAX of room). */
static void sent_increment_and_transition(fixture_t *f, const char *id, fsa_op_t *ops)
{
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, id, 1,
                                   "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                                   "\"ticketlog\":{},\"priority\":\"LOW\"}"));
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, id, "level", 1, NULL, &rec));
    assert_fsa_ok(fsa_journal_transition(f->j, FSA_TYPE_TICKET, id, "OPEN", NULL, &rec));
    size_t n = 0;
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 2);
}

/*
 * An applied op whose version skipped ahead (another device changed the entity at 2) moves no
 * base; when an op after it on the entity is parked, the local view is rebuilt, and must keep the
 * applied op's effect until a fold brings the server's state at its version, and then not apply
 * it twice. Both in one answer (a run) and in two (one by one, a later batch). Before, the
 * increment vanished from the view (level 0) until the next pull, which a device offline after
 * the push may not make for days.
 */
static void test_fsa_outbox_apply_batch__applied_past_the_base_survives_a_rebuild(void **state)
{
    fixture_t *f = *state;
    for (int apart = 0; apart < 2; apart++) {
        const char *id = apart ? "T2" : "T1";
        fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
        sent_increment_and_transition(f, id, ops);
        fsa_op_result_t res[2] = {result_for(ops[0].op_id, FSA_RESULT_APPLIED, 3),
                                  result_for(ops[1].op_id, FSA_RESULT_REJECTED, 0)};
        snprintf(res[1].code, sizeof res[1].code, "forbidden");
        if (apart) {
            assert_fsa_ok(fsa_outbox_apply_batch(f->j, ops, res, 1, NULL, 0));
            assert_fsa_ok(fsa_outbox_apply_results(f->j, &res[1], 1));
        } else {
            assert_fsa_ok(fsa_outbox_apply_batch(f->j, ops, res, 2, NULL, 0));
        }
        if (strcmp(field_of(f->j, FSA_TYPE_TICKET, id, "level"), "1") != 0)
            fail_msg("%s: the applied increment left the view: level %s", id,
                     field_of(f->j, FSA_TYPE_TICKET, id, "level"));
        assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, id, "status"), "\"NEW\"");
        fsa_op_state_t st = FSA_OPSTATE_PENDING;
        assert_fsa_ok(fsa_outbox_op_state(f->j, ops[0].op_id, &st));
        assert_int_equal(st, FSA_OPSTATE_DONE);
        /* A compaction before the pull (a cycle pushes again after its pull when it rebased)
         * keeps what the view still needs. */
        size_t removed = 9;
        assert_fsa_ok(fsa_outbox_compact(f->j, FSA_LIMIT_AUDIT_MS, &removed));
        assert_int_equal(removed, apart ? 1 : 0); /* T2's turn: T1's increment, folded below */
        fsa_rec_t again;
        assert_fsa_ok(fsa_journal_transition(f->j, FSA_TYPE_TICKET, id, "OPEN", NULL, &again));
        reject(f, again.op_id, "forbidden"); /* another rebuild, in a later transaction */
        assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, id, "level"), "1");
        /* The server's state at 3 holds the increment and the other device's change. */
        assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, id, 3,
                                       "{\"status\":\"NEW\",\"level\":1,\"assignedto\":\"\","
                                       "\"ticketlog\":{},\"priority\":\"HIGH\"}"));
        assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, id, "level"), "1");
        assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, id, "priority"), "\"HIGH\"");
        fsa_op_clear(&ops[0]);
        fsa_op_clear(&ops[1]);
    }
    /* Folded, the kept ops go at the next compaction, into done_ops. */
    size_t removed = 0;
    assert_fsa_ok(fsa_outbox_compact(f->j, FSA_LIMIT_AUDIT_MS, &removed));
    assert_int_equal(removed, 1);
    assert_int_equal(count_sql(f, "SELECT count(*) FROM outbox WHERE state=2"), 0);
    fsa_outbox_stats_t os;
    assert_fsa_ok(fsa_outbox_stats(f->j, &os));
    assert_int_equal(os.done, 0);
    assert_fsa_ok(fsa_journal_integrity(f->j, NULL, 0));
}

static void test_fsa_outbox_apply_batch__a_run_leaves_what_one_by_one_does(void **state)
{
    fixture_t *f = *state;
    static fsa_rec_t r1[RUN_OPS], r2[RUN_OPS];
    static fsa_op_t ops[RUN_OPS];
    static fsa_op_result_t res[RUN_OPS], one[RUN_OPS];
    record_run_ops(f, "T1", r1);
    size_t n = 0;
    assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, RUN_OPS, 1 << 22, &n));
    assert_int_equal(n, RUN_OPS);
    record_run_ops(f, "T2", r2);
    char closed[] = "{\"status\":\"CLOSED\",\"level\":50,\"assignedto\":\"\","
                    "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"LOW\"}";
    /* A base ~28 KB under the limit: the third 10 KB item passes it. */
    enum { KEYS = 17, KEY_BYTES = 60000 };
    const size_t cap = (size_t)KEYS * (KEY_BYTES + 16) + 256;
    char *big = fsa_malloc(cap);
    assert_non_null(big);
    size_t len = (size_t)snprintf(big, cap,
                                  "{\"status\":\"CLOSED\",\"level\":7,\"assignedto\":\"\","
                                  "\"ticketlog\":{\"ticket_history\":[]");
    for (int k = 0; k < KEYS; k++) {
        len += (size_t)snprintf(big + len, cap - len, ",\"k%02d\":\"", k);
        memset(big + len, 'b', KEY_BYTES);
        len += KEY_BYTES;
        big[len++] = '"';
    }
    len += (size_t)snprintf(big + len, cap - len, "},\"priority\":\"LOW\"}");
    assert_true(len + 2 * (RUN_ITEM + 3) < FSA_LIMIT_FIELDS_BYTES);
    assert_true(len + 3 * (RUN_ITEM + 3) > FSA_LIMIT_FIELDS_BYTES);
    for (int i = 0; i < RUN_OPS; i++) {
        res[i] = run_result(i, ops[i].op_id, closed, big);
        one[i] = run_result(i, r2[i].op_id, closed, big);
    }
    int64_t before = 0;
    assert_fsa_ok(fsa_journal_changes_last(f->j, &before));
    /* Three batches, each checked against one by one. */
    static const size_t cut[] = {0, 11, 16, RUN_OPS};
    static const int64_t want_version[] = {10, 22, 31};
    static const char *const want_level[] = {"51", "7", "50"};
    for (size_t b = 0; b < 3; b++) {
        size_t from = cut[b], k = cut[b + 1] - cut[b];
        assert_fsa_ok(fsa_outbox_apply_batch(f->j, &ops[from], &res[from], k, NULL, 0));
        assert_fsa_ok(fsa_outbox_apply_results(f->j, &one[from], k));
        char *b1 = NULL, *b2 = NULL;
        int64_t v1 = 0, v2 = 0;
        assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_TICKET, "T1", &b1, &v1));
        assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_TICKET, "T2", &b2, &v2));
        assert_int_equal(v1, want_version[b]);
        assert_int_equal(v2, v1);
        assert_string_equal(b1, b2);
        char *level = NULL;
        assert_fsa_ok(fsa_model_get_field(b1, "level", &level));
        assert_string_equal(level, want_level[b]);
        fsa_model_free(level);
        if (b == 1) { /* two of the four 10 KB items: the third would pass the limit */
            assert_true(strlen(b1) > len + 2 * RUN_ITEM && strlen(b1) < len + 3 * RUN_ITEM);
            assert_fsa_ok(fsa_model_json_check(b1, FSA_LIMIT_FIELDS_BYTES));
        }
        fsa_model_free(b1);
        fsa_model_free(b2);
    }
    char c1[1024], c2[1024];
    changes_of(f, before, "T1", c1, sizeof c1);
    changes_of(f, before, "T2", c2, sizeof c2);
    assert_string_equal(c1, c2);
    /* held (the answer, not judged yet) at the base's version; the applied op without one at the
     * base's (5); the op that did not apply at its own version (11) */
    char want[256];
    snprintf(want, sizeof want, "%d@4 ", (int)FSA_CHANGE_HELD);
    assert_non_null(strstr(c1, want));
    snprintf(want, sizeof want, "%d@5 %d@6 ", (int)FSA_CHANGE_SYNCED, (int)FSA_CHANGE_SYNCED);
    assert_non_null(strstr(c1, want));
    fsa_free(big);
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&ops[i]);
}

/*
 * A run that starts from a text stored as it came (a conflict's current fields here; a pull's
 * too) bounds its texts by how the model prints that text, not by its length: 1e+18 is 5 bytes
 * as it came and 19 digits as printed. One by one, the first result's text passes the limit and
 * the base stays; the run must not take the base past it on the strength of the text's length
 * (found in review: the base went 2 versions on, and a later conflict at the version between kept
 * it).
 */
static void test_fsa_outbox_apply_batch__a_run_bounds_a_stored_text_as_printed(void **state)
{
    fixture_t *f = *state;
    enum { OPS = 4, NUMBERS = 55000 };
    static fsa_rec_t r1[OPS], r2[OPS];
    static fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    static fsa_op_result_t res[OPS], one[OPS];
    const char *ids[] = {"T1", "T2"};
    for (int t = 0; t < 2; t++) {
        fsa_rec_t *rec = t == 0 ? r1 : r2;
        assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, ids[t], 1,
                                       "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                                       "\"ticketlog\":{\"ticket_history\":[]},"
                                       "\"priority\":\"LOW\"}"));
        for (int i = 0; i < OPS; i++)
            if (i == 2)
                assert_fsa_ok(fsa_journal_merge(f->j, FSA_TYPE_TICKET, ids[t], "ticketlog",
                                                "{\"n\":null}", NULL, &rec[i]));
            else
                assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, ids[t], "level", 1, NULL,
                                                    &rec[i]));
        if (t == 0) {
            size_t n = 0;
            assert_fsa_ok(fsa_outbox_next_batch(f->j, ops, FSA_JOURNAL_GROUP_MAX, 1 << 22, &n));
            assert_int_equal(n, OPS); /* T1's: T2's are recorded after */
        }
    }
    /* ~330 KB as it came, ~1.1 MB as printed */
    const size_t cap = (size_t)NUMBERS * 6 + 256;
    char *stored = fsa_malloc(cap);
    assert_non_null(stored);
    size_t len = (size_t)snprintf(stored, cap,
                                  "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                                  "\"ticketlog\":{\"ticket_history\":[],\"n\":[");
    for (int k = 0; k < NUMBERS; k++)
        len += (size_t)snprintf(stored + len, cap - len, "%s1e+18", k > 0 ? "," : "");
    snprintf(stored + len, cap - len, "]},\"priority\":\"LOW\"}");
    char small[] = "{\"status\":\"OPEN\",\"level\":9,\"assignedto\":\"\","
                   "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"LOW\"}";
    for (int t = 0; t < 2; t++) {
        fsa_op_result_t *r = t == 0 ? res : one;
        const fsa_rec_t *rec = t == 0 ? r1 : r2;
        for (int i = 0; i < OPS; i++)
            r[i] = result_for(t == 0 ? ops[i].op_id : rec[i].op_id, FSA_RESULT_APPLIED, 10 + i);
        r[0].status = r[3].status = FSA_RESULT_CONFLICT;
        r[0].current_version = 10; /* the base becomes the stored text */
        r[0].current_fields = stored;
        r[3].current_version = 11; /* at the version one by one stops before */
        r[3].current_fields = small;
    }
    assert_fsa_ok(fsa_outbox_apply_batch(f->j, ops, res, OPS, NULL, 0));
    assert_fsa_ok(fsa_outbox_apply_results(f->j, one, OPS));
    for (int t = 0; t < 2; t++) {
        char *base = NULL;
        int64_t v = 0;
        assert_fsa_ok(fsa_journal_get_base(f->j, FSA_TYPE_TICKET, ids[t], &base, &v));
        assert_int_equal(v, 11);
        assert_string_equal(base, small);
        fsa_model_free(base);
    }
    fsa_free(stored);
    for (int i = 0; i < OPS; i++)
        fsa_op_clear(&ops[i]);
}

enum { SWEEP_ENTITIES = 10 };

/* One round of the sweep on entities of its own (S<round>.<k>): two increments each, their
 * batch applied with allocation fail_at failing, and once more if that failed. */
static void sweep_apply_once(fsa_journal_t *j, unsigned long fail_at, bool *fired)
{
    char id[32];
    for (int k = 0; k < SWEEP_ENTITIES; k++) {
        snprintf(id, sizeof id, "S%lu.%d", fail_at, k);
        assert_fsa_ok(fsa_journal_fold(j, FSA_TYPE_TICKET, id, 1,
                                       "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                                       "\"ticketlog\":{\"ticket_history\":[]},"
                                       "\"priority\":\"LOW\"}"));
    }
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < SWEEP_ENTITIES; k++) {
            fsa_rec_t rec;
            snprintf(id, sizeof id, "S%lu.%d", fail_at, k);
            assert_fsa_ok(fsa_journal_increment(j, FSA_TYPE_TICKET, id, "level", 1, NULL, &rec));
        }
    static fsa_op_t ops[2 * SWEEP_ENTITIES + FSA_JOURNAL_GROUP_MAX];
    static fsa_op_result_t res[2 * SWEEP_ENTITIES];
    size_t n = 0;
    assert_fsa_ok(
        fsa_outbox_next_batch(j, ops, 2 * SWEEP_ENTITIES + FSA_JOURNAL_GROUP_MAX, 1 << 20, &n));
    assert_int_equal(n, 2 * SWEEP_ENTITIES);
    for (size_t i = 0; i < n; i++)
        res[i] = result_for(ops[i].op_id, FSA_RESULT_APPLIED, i < SWEEP_ENTITIES ? 2 : 3);
    fsa_alloc_fail_nth(fail_at);
    fsa_status_t st = fsa_outbox_apply_batch(j, ops, res, n, NULL, 0);
    *fired = fsa_alloc_fault_fired();
    fsa_alloc_fail_nth(0);
    if (!*fired)
        assert_fsa_ok(st);
    else if (st != FSA_OK)
        assert_fsa_ok(fsa_outbox_apply_batch(j, ops, res, n, NULL, 0)); /* the same call again */
    for (int k = 0; k < SWEEP_ENTITIES; k++) {
        char *base = NULL;
        int64_t v = 0;
        snprintf(id, sizeof id, "S%lu.%d", fail_at, k);
        assert_fsa_ok(fsa_journal_get_base(j, FSA_TYPE_TICKET, id, &base, &v));
        if (v != 3 || strstr(base, "\"level\":2") == NULL)
            fail_msg("allocation %lu failed (apply: %s): %s at version %" PRId64 ": %s", fail_at,
                     fsa_status_str(st), id, v, base);
        fsa_model_free(base);
    }
    fsa_outbox_stats_t os;
    assert_fsa_ok(fsa_outbox_stats(j, &os));
    assert_int_equal(os.pending, 0);
    for (size_t i = 0; i < n; i++)
        fsa_op_clear(&ops[i]);
}

/*
 * Each allocation of a batch's apply failing in turn (SQLite's too), on more entities than the
 * apply's cache holds, each run of results an entity's (storage/journal_apply.c): the call fails
 * or succeeds, and the same call again leaves every base where a call that never failed leaves
 * it, every op closed once.
 */
static void test_fsa_outbox_apply_batch__every_allocation_failing_in_turn(void **state)
{
    fixture_t *f = *state;
    test_dir_t dir; /* a journal of its own, whose commits do not sync: ~1,500 rounds */
    test_dir_make(&dir);
    fsa_journal_opts_t o = {.create = true, .sync_normal = true};
    fsa_journal_t *j;
    assert_fsa_ok(fsa_journal_open(f->port, dir.path, &o, &j, NULL, 0));
    bool fired = true;
    unsigned long n = 1;
    for (; fired; n++)
        sweep_apply_once(j, n, &fired);
    assert_true(n > 100);
    fsa_journal_close(j);
    test_dir_remove(&dir);
}

static void test_fsa_outbox_apply_results__rejection_parked(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    fsa_op_result_t r = result_for(rec.op_id, FSA_RESULT_REJECTED, 0);
    snprintf(r.code, sizeof r.code, "invalid_value");
    snprintf(r.message, sizeof r.message, "nope");
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.pending, 0);
    /* the rejected create leaves no local entity */
    assert_int_equal(fsa_journal_get(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, NULL), FSA_ENOTFOUND);
    assert_fsa_ok(fsa_conflict_resolve(f->j, rec.op_id, false, FSA_RESOLVED_SERVER, NULL));
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.rejected, 0);
}

static void test_fsa_journal_fold__replays_pending_on_new_base(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    const char *v1 = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                     "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}";
    const char *v5 = "{\"status\":\"OPEN\",\"level\":3,\"assignedto\":\"bob\","
                     "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"HIGH\"}";
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 1, v1));
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T1", "level", 1, NULL, &rec));
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 5, v5));
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "level"), "4");
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "assignedto"), "\"bob\"");
    /* an older state never replaces a newer base */
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 2, v1));
    assert_string_equal(field_of(f->j, FSA_TYPE_TICKET, "T1", "assignedto"), "\"bob\"");
    assert_int_equal(fsa_journal_fold(f->j, FSA_TYPE_TICKET, "T1", 6, "{not json"), FSA_EINVAL);
}

typedef struct compactor {
    fsa_journal_t *j;
    size_t removed;
    fsa_status_t st;
} compactor_t;

static void *compact_thread(void *arg)
{
    compactor_t *c = arg;
    c->st = fsa_outbox_compact(c->j, FSA_LIMIT_AUDIT_MS, &c->removed);
    return NULL;
}

/* A compaction of more done ops than one of its transactions takes (4,096) goes in several, and a
 * thread that waits for the journal meanwhile gets it between two: the done count is seen between
 * all and none, and a record made then lands. Every done op ends in done_ops once. */
static void test_fsa_outbox_compact__in_steps_that_give_way(void **state)
{
    fixture_t *f = *state;
    big_backlog(f, true);
    fsa_rec_t rec;
    big_increments(f);
    /* Applied ops leave the outbox with their results now; done ops that wait for a compaction
     * are what a journal of an older version left (state 2), marked here as it marked them. */
    const int64_t total = BIG_OPS + BIG_INCREMENTS;
    sqlite3 *mk;
    assert_int_equal(sqlite3_open(f->dir.path, &mk), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(mk, "UPDATE outbox SET state = 2, done_ms = at_ms", NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_changes(mk), total);
    sqlite3_close(mk);
    fsa_outbox_stats_t st;
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.done, total);

    compactor_t c = {.j = f->j, .st = FSA_EIO};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, compact_thread, &c), 0);
    /* Each look waits for the journal's mutex, so the compaction ends its transaction for it, and
     * reads the done ops on a connection of its own while holding it: what the compaction has
     * committed, with none of its transactions open. (fsa_outbox_stats reads on the journal's
     * reader without the mutex: a look through it need not wait, and could miss every step.) */
    sqlite3 *look;
    assert_int_equal(sqlite3_open(f->dir.path, &look), SQLITE_OK);
    int64_t done = total;
    while (done == total) {
        fsa__jn_lock_j(f->j);
        done = count_sql_on(look, "SELECT count(*) FROM outbox WHERE state=2");
        fsa__jn_unlock_j(f->j);
    }
    sqlite3_close(look);
    bool between = done > 0;
    assert_fsa_ok(fsa_journal_increment(f->j, FSA_TYPE_TICKET, "T0", "level", 1, NULL, &rec));
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_fsa_ok(c.st);
    if (!between)
        fail_msg("the done ops went all at once: no look saw some of them moved");
    assert_int_equal(c.removed, total);
    assert_fsa_ok(fsa_outbox_stats(f->j, &st));
    assert_int_equal(st.done, 0);
    assert_int_equal(st.pending, 1);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT count(*), count(DISTINCT op_id), "
                                        "(SELECT count(*) FROM outbox) FROM done_ops",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(q, 0), total);
    assert_int_equal(sqlite3_column_int64(q, 1), total);
    assert_int_equal(sqlite3_column_int64(q, 2), 1);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

static void test_fsa_outbox_compact__keeps_ids_for_audit(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t a, b;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &a));
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T2", NULL, NULL, &b));
    fsa_op_result_t r = result_for(a.op_id, FSA_RESULT_APPLIED, 1);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    fsa_op_t op;
    /* gone from the outbox with its result, before any compaction */
    assert_int_equal(fsa_outbox_find(f->j, a.op_id, &op, NULL), FSA_ENOTFOUND);
    size_t removed = 9;
    assert_fsa_ok(fsa_outbox_compact(f->j, FSA_LIMIT_AUDIT_MS, &removed));
    assert_int_equal(removed, 0);
    assert_int_equal(fsa_outbox_find(f->j, a.op_id, &op, NULL), FSA_ENOTFOUND);
    assert_fsa_ok(fsa_outbox_find(f->j, b.op_id, &op, NULL));
    fsa_op_clear(&op);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT count(*) FROM done_ops WHERE op_id = ?1", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_text(st, 1, a.op_id, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* seq is never reused after compaction, also across a reopen */
    fsa_journal_close(f->j);
    fsa_journal_opts_t o = {0};
    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, NULL, 0));
    fsa_rec_t c;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T3", NULL, NULL, &c));
    assert_int_equal(c.seq, 3);
    /* past the audit period the ids go */
    fsa_sim_advance(f->sim, 2 * FSA_LIMIT_AUDIT_MS * FSA_NS_PER_MS);
    assert_fsa_ok(fsa_outbox_compact(f->j, FSA_LIMIT_AUDIT_MS, NULL));
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM done_ops", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* Inserts a done op id into done_ops beside the journal (as an older journal, or one whose clock
 * moved, may hold it). */
static void done_id_insert(sqlite3 *db, const char *op_id, int64_t done_ms)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO done_ops(op_id, seq, done_ms) "
                                        "VALUES(?1, 0, ?2)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, op_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, done_ms);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
}

/* The audit ids are forgotten in op id order (schema 4 has no index by done time): never one
 * before the audit period; an old one past more than a compaction step of young ones; and the
 * random ids of an older journal, below and above every UUIDv7 made now. */
static void test_fsa_outbox_compact__forgets_audit_ids_in_id_order(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t a;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &a));
    fsa_op_result_t r = result_for(a.op_id, FSA_RESULT_APPLIED, 1);
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &r, 1));
    int64_t then_ms = f->port->wall_now(f->port->ctx).ms;
    fsa_sim_advance(f->sim, 2 * FSA_LIMIT_AUDIT_MS * FSA_NS_PER_MS);
    int64_t now_ms = f->port->wall_now(f->port->ctx).ms;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    /* 100 ids made and done now: more than a step (64) of young ids after a's */
    for (int i = 0; i < 100; i++) {
        char id[FSA_UUID_STR_LEN];
        assert_fsa_ok(fsa_uuid8(f->port, (uint64_t)i, id));
        done_id_insert(db, id, now_ms);
    }
    /* UUIDv4 ids of an older journal: old ones below and above the UUIDv7 ids, a young one */
    done_id_insert(db, "00000000-1111-4222-8333-444444444444", then_ms);
    done_id_insert(db, "f0000000-1111-4222-8333-444444444444", then_ms);
    done_id_insert(db, "f1000000-1111-4222-8333-444444444444", then_ms);
    done_id_insert(db, "f2000000-1111-4222-8333-444444444444", now_ms);
    assert_fsa_ok(fsa_outbox_compact(f->j, FSA_LIMIT_AUDIT_MS, NULL));
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT count(*), sum(done_ms < ?1), "
                                        "sum(op_id = ?2), sum(op_id LIKE 'f2%') FROM done_ops",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, now_ms - FSA_LIMIT_AUDIT_MS);
    sqlite3_bind_text(st, 2, a.op_id, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 101); /* the young ones, all kept */
    assert_int_equal(sqlite3_column_int(st, 1), 0);   /* no old one left */
    assert_int_equal(sqlite3_column_int(st, 2), 0);   /* a's among them */
    assert_int_equal(sqlite3_column_int(st, 3), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_fsa_journal_now__applies_clock_offset(void **state)
{
    fixture_t *f = *state;
    assert_fsa_ok(fsa_journal_clock_offset_set(f->j, 3600 * 1000));
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    fsa_op_t op;
    assert_fsa_ok(fsa_outbox_find(f->j, rec.op_id, &op, NULL));
    assert_int_equal(op.at_ms, START.ms + 3600 * 1000);
    fsa_op_clear(&op);
    int64_t v = 0;
    assert_fsa_ok(fsa_journal_clock_offset_get(f->j, &v));
    assert_int_equal(v, 3600 * 1000);
}

/* The typed calls keep the key names journals have always had (a persisted format: spelled out
 * here on purpose), and read what is there. */
static void test_fsa_journal_state__typed_calls_keep_the_stored_keys(void **state)
{
    fixture_t *f = *state;
    const fsa_device_config_t c = {.device_id = "dev001",
                                   .server = "https://s.example",
                                   .secret_file = "/s",
                                   .pins = "sha256//x",
                                   .allow_http = true,
                                   .durability = 1,
                                   .sync_interval_ms = 5000,
                                   .budget_bytes = 1 << 20};
    assert_fsa_ok(fsa_journal_config_store(f->j, &c));
    const fsa_backoff_state_t b = {.next_attempt_ms = 777, .failures = 3};
    assert_fsa_ok(fsa_journal_backoff_set(f->j, &b));
    assert_fsa_ok(fsa_journal_clock_offset_set(f->j, -25));
    assert_fsa_ok(fsa_journal_cursor_set(f->j, "c:42"));
    assert_fsa_ok(fsa_journal_last_error_set(f->j, 9, "server away"));
    char raw[2048];
    raw_state(f, raw, sizeof raw);
    assert_string_equal(raw, "allow_http=1;budget_bytes=1048576;ca_file=;client_cert=;"
                             "client_key=;clock_offset_ms=-25;cursor=c:42;device_id=dev001;"
                             "durability=1;last_error=9;last_error_msg=server away;"
                             "next_attempt_ms=777;pins=sha256//x;proxy=;resolver_policy=;"
                             "retry_policy=;secret_file=/s;server=https://s.example;"
                             "stall_after_ms=0;sync_failures=3;sync_interval_ms=5000;");
    assert_fsa_ok(fsa_journal_sync_done(f->j, 4242));
    raw_state(f, raw, sizeof raw);
    assert_non_null(strstr(raw, "last_sync_ms=4242;next_attempt_ms=0;"));
    assert_non_null(strstr(raw, "sync_failures=0;"));

    /* and back: "" reads as absent, numbers as stored */
    fsa_device_config_t got;
    assert_fsa_ok(fsa_journal_config_load(f->j, &got));
    assert_string_equal(got.device_id, "dev001");
    assert_string_equal(got.server, "https://s.example");
    assert_string_equal(got.pins, "sha256//x");
    assert_null(got.ca_file);
    assert_null(got.proxy);
    assert_true(got.allow_http);
    assert_int_equal(got.durability, 1);
    assert_int_equal(got.sync_interval_ms, 5000);
    assert_int_equal(got.stall_after_ms, 0);
    assert_int_equal(got.budget_bytes, 1 << 20);
    fsa_device_config_clear(&got);
    fsa_sync_state_t ss;
    assert_fsa_ok(fsa_journal_sync_state_get(f->j, &ss));
    assert_int_equal(ss.clock_offset_ms, -25);
    assert_int_equal(ss.last_sync_ms, 4242);
    assert_int_equal(ss.backoff.next_attempt_ms, 0);
    assert_int_equal(ss.backoff.failures, 0);
    char *s = NULL;
    int64_t code = -1;
    assert_fsa_ok(fsa_journal_last_error_get(f->j, &code, &s));
    assert_int_equal(code, 9);
    assert_string_equal(s, "server away");
    fsa_model_free(s);
    assert_fsa_ok(fsa_journal_device_id(f->j, &s));
    assert_string_equal(s, "dev001");
    fsa_model_free(s);

    /* a new init clears what an older one set */
    const fsa_device_config_t c2 = {.device_id = "dev001", .server = "https://t.example"};
    assert_fsa_ok(fsa_journal_config_store(f->j, &c2));
    assert_fsa_ok(fsa_journal_config_load(f->j, &got));
    assert_null(got.pins);
    assert_false(got.allow_http);
    assert_int_equal(got.sync_interval_ms, 0);
    fsa_device_config_clear(&got);
}

static void test_fsa_journal_state__absent_and_bad_arguments(void **state)
{
    fixture_t *f = *state;
    char *s = (char *)1;
    assert_fsa_ok(fsa_journal_device_id(f->j, &s));
    assert_null(s); /* never set up */
    assert_fsa_ok(fsa_journal_cursor_get(f->j, &s));
    assert_null(s);
    fsa_sync_state_t ss;
    assert_fsa_ok(fsa_journal_sync_state_get(f->j, &ss));
    assert_int_equal(ss.clock_offset_ms + ss.last_sync_ms + ss.backoff.failures, 0);
    fsa_device_config_t got;
    assert_fsa_ok(fsa_journal_config_load(f->j, &got));
    assert_null(got.device_id);
    assert_null(got.server);
    fsa_device_config_clear(&got);
    /* a device id stored as "" (an init without one) is no device id */
    const fsa_device_config_t empty = {0};
    assert_fsa_ok(fsa_journal_config_store(f->j, &empty));
    assert_fsa_ok(fsa_journal_device_id(f->j, &s));
    assert_null(s);
    assert_int_equal(fsa_journal_cursor_set(f->j, NULL), FSA_EINVAL);
    assert_int_equal(fsa_journal_config_store(f->j, NULL), FSA_EINVAL);
    assert_int_equal(fsa_journal_config_load(NULL, &got), FSA_EINVAL);
    assert_int_equal(fsa_journal_backoff_set(f->j, NULL), FSA_EINVAL);
    assert_int_equal(fsa_journal_sync_state_get(f->j, NULL), FSA_EINVAL);
    assert_int_equal(fsa_journal_clock_offset_get(f->j, NULL), FSA_EINVAL);
    assert_int_equal(fsa_journal_last_error_get(f->j, NULL, &s), FSA_EINVAL);
}

static void test_fsa_journal_create__budget_full_writes_nothing(void **state)
{
    fixture_t *f = *state;
    fsa_journal_close(f->j);
    fsa_journal_opts_t o = {.budget_bytes = 256 * 1024};
    char err[256];
    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err));
    char big[8192];
    snprintf(big, sizeof big, "{\"other_info\":{\"pad\":\"");
    size_t len = strlen(big);
    memset(big + len, 'x', 6000);
    snprintf(big + len + 6000, sizeof big - len - 6000, "\"}}");
    fsa_rec_t rec;
    fsa_status_t st = FSA_OK;
    int i;
    for (i = 0; i < 1000 && st == FSA_OK; i++) {
        char id[16];
        snprintf(id, sizeof id, "J%d", i);
        st = fsa_journal_create(f->j, FSA_TYPE_JOBNEED, id, big, NULL, &rec);
    }
    assert_int_equal(st, FSA_EFULL);
    assert_non_null(strstr(rec.error, "journal full"));
    fsa_outbox_stats_t s;
    assert_fsa_ok(fsa_outbox_stats(f->j, &s));
    assert_int_equal(s.pending, i - 1); /* the refused one left nothing behind */
    char id[16];
    snprintf(id, sizeof id, "J%d", i - 1);
    assert_int_equal(fsa_journal_get(f->j, FSA_TYPE_JOBNEED, id, NULL, NULL, NULL), FSA_ENOTFOUND);
    assert_fsa_ok(fsa_journal_integrity(f->j, err, sizeof err));
}

/* Opens f's journal with budget, records 6 KB jobs until it is full, closes it, and returns the
 * bytes of its file's pages (*page_size: the file's page size). */
static int64_t fill_to_budget(fixture_t *f, int64_t budget, int64_t *page_size)
{
    fsa_journal_opts_t o = {.create = true, .budget_bytes = budget};
    char err[256];
    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err));
    char big[8192];
    snprintf(big, sizeof big, "{\"other_info\":{\"pad\":\"%06000d\"}}", 0);
    fsa_rec_t rec;
    fsa_status_t st = FSA_OK;
    for (int i = 0; i < 1000 && st == FSA_OK; i++) {
        char id[16];
        snprintf(id, sizeof id, "J%d", i);
        st = fsa_journal_create(f->j, FSA_TYPE_JOBNEED, id, big, NULL, &rec);
    }
    assert_int_equal(st, FSA_EFULL);
    fsa_journal_close(f->j);
    f->j = NULL;
    *page_size = count_sql(f, "PRAGMA page_size");
    return count_sql(f, "PRAGMA page_count") * *page_size;
}

/* The budget counts the file's own pages: a new journal's (FSA_LIMIT_PAGE_BYTES), and those of a
 * journal made with SQLite's default 4 KiB pages, which it keeps. Either fills to the budget and
 * not past it. */
static void test_fsa_journal_open__budget_in_the_file_s_pages(void **state)
{
    fixture_t *f = *state;
    fsa_journal_close(f->j);
    f->j = NULL;
    const int64_t budget = 256 * 1024;
    int64_t page = 0, used = fill_to_budget(f, budget, &page);
    assert_int_equal(page, FSA_LIMIT_PAGE_BYTES);
    assert_in_range(used, budget * 3 / 4, budget);
    /* an older journal: 4 KiB pages */
    static const char *const sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[sizeof f->dir.path + 8];
        snprintf(p, sizeof p, "%s%s", f->dir.path, sfx[i]);
        (void)unlink(p);
    }
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->dir.path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;"
                                  "PRAGMA user_version = 0",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    used = fill_to_budget(f, budget, &page);
    assert_int_equal(page, 4096);
    assert_in_range(used, budget * 3 / 4, budget);
}

/* Sends everything pending, a batch of 100 at a time, each op answered applied at the version
 * after its base (a create: 1), until nothing is pending; returns the ops answered. */
static int64_t drain_all(fsa_journal_t *j)
{
    int64_t answered = 0;
    for (int round = 0; round < 100000; round++) {
        fsa_op_t ops[100];
        size_t n = 0;
        assert_fsa_ok(fsa_outbox_next_batch(j, ops, 100, 1 << 20, &n));
        if (n == 0)
            return answered;
        fsa_op_result_t res[100];
        memset(res, 0, sizeof res);
        for (size_t k = 0; k < n; k++) {
            memcpy(res[k].op_id, ops[k].op_id, sizeof res[k].op_id);
            res[k].status = FSA_RESULT_APPLIED;
            res[k].version = ops[k].kind == FSA_OP_CREATE ? 1 : ops[k].base_version + 1;
        }
        fsa_status_t st = fsa_outbox_apply_batch(j, ops, res, n, NULL, 0);
        for (size_t k = 0; k < n; k++)
            fsa_op_clear(&ops[k]);
        assert_fsa_ok(st);
        answered += (int64_t)n;
    }
    fail_msg("the outbox did not drain");
    return answered;
}

/* A journal that recorded until its budget refused a record is drained whole: applying results
 * takes pages before it gives any (done_ops, the entity's base beside its local view), and it
 * had none left, so every batch failed "journal full" and the outbox never shrank: "sync to make
 * room" could not. Records stop an eighth short of the budget now; the drain has that eighth. */
static void test_fsa_outbox_apply_batch__a_full_journal_drains(void **state)
{
    fixture_t *f = *state;
    fsa_journal_close(f->j);
    fsa_journal_opts_t o = {.budget_bytes = 256 * 1024};
    char err[256];
    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err));
    fsa_rec_t rec;
    fsa_status_t st = FSA_OK;
    int64_t recorded = 0;
    while (st == FSA_OK && recorded < 100000) {
        char id[32], fields[160];
        snprintf(id, sizeof id, "A%" PRId64, recorded);
        snprintf(fields, sizeof fields,
                 "{\"people_id\":\"P1\",\"site_id\":\"S1\",\"kind\":\"checkin\",\"at\":%" PRId64
                 "}",
                 recorded);
        st = fsa_journal_create(f->j, FSA_TYPE_ATTENDANCE, id, fields, NULL, &rec);
        recorded += st == FSA_OK;
    }
    assert_int_equal(st, FSA_EFULL);
    assert_non_null(strstr(rec.error, "journal full"));
    assert_non_null(strstr(rec.error, "budget of 262144 bytes")); /* not "0 MiB" */
    assert_int_equal(drain_all(f->j), recorded);
    size_t removed = 0;
    assert_fsa_ok(fsa_outbox_compact(f->j, 0, &removed));
    assert_fsa_ok(fsa_journal_integrity(f->j, err, sizeof err));
}

/* A person's "take mine" records the conflict's ops again: in a journal that records no more, it
 * is refused as a record is ("journal full"), and the conflict stays open; the eighth kept for the
 * drain was theirs to use up before. Taking the server's state records nothing and goes. */
static void test_fsa_conflict_resolve__a_persons_take_respects_the_budget(void **state)
{
    fixture_t *f = *state;
    fsa_journal_close(f->j);
    fsa_journal_opts_t o = {.budget_bytes = 256 * 1024};
    char err[256];
    assert_fsa_ok(fsa_journal_open(f->port, f->dir.path, &o, &f->j, err, sizeof err));
    const char *v1 = "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":1,"
                     "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}";
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_JOBNEED, "J1", 1, v1));
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_JOBNEED, "J2", 1, v1));
    fsa_rec_t a, b, rec;
    assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J1", "{\"seqno\":5}", NULL, &a));
    assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J2", "{\"seqno\":5}", NULL, &b));
    fsa_op_result_t r[2] = {result_for(a.op_id, FSA_RESULT_CONFLICT, 0),
                            result_for(b.op_id, FSA_RESULT_CONFLICT, 0)};
    for (int i = 0; i < 2; i++) {
        r[i].current_version = 2;
        r[i].current_fields = (char *)(uintptr_t)v1;
    }
    assert_fsa_ok(fsa_outbox_apply_results(f->j, r, 2));
    /* and a transition the server made too: taken "local", it records nothing */
    const char *v2 = "{\"jobstatus\":\"INPROGRESS\",\"parent_id\":null,\"seqno\":1,"
                     "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}";
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_JOBNEED, "J4", 1, v1));
    fsa_rec_t t;
    assert_fsa_ok(fsa_journal_transition(f->j, FSA_TYPE_JOBNEED, "J4", "INPROGRESS", NULL, &t));
    fsa_op_result_t rt = result_for(t.op_id, FSA_RESULT_CONFLICT, 0);
    rt.current_version = 2;
    rt.current_fields = (char *)(uintptr_t)v2;
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &rt, 1));
    fsa_status_t st = FSA_OK;
    for (int64_t i = 0; st == FSA_OK && i < 100000; i++) {
        char id[32], fields[160];
        snprintf(id, sizeof id, "A%" PRId64, i);
        snprintf(
            fields, sizeof fields,
            "{\"people_id\":\"P1\",\"site_id\":\"S1\",\"kind\":\"checkin\",\"at\":%" PRId64 "}", i);
        st = fsa_journal_create(f->j, FSA_TYPE_ATTENDANCE, id, fields, NULL, &rec);
    }
    assert_int_equal(st, FSA_EFULL);
    /* then sets, as large as the take's, until one is refused too (a smaller record may still fit
     * in the pages it has) */
    assert_fsa_ok(fsa_journal_fold(f->j, FSA_TYPE_JOBNEED, "J3", 1, v1));
    for (int i = 0; i < 100000 && (st = fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J3",
                                                        "{\"seqno\":5}", NULL, &rec)) == FSA_OK;
         i++)
        ;
    assert_int_equal(st, FSA_EFULL);
    int64_t before = seq_count(f->j);
    assert_int_equal(fsa_conflict_resolve(f->j, a.op_id, true, FSA_RESOLVED_LOCAL, &rec),
                     FSA_EFULL);
    assert_non_null(strstr(rec.error, "journal full"));
    assert_int_equal(seq_count(f->j), before);
    fsa_outbox_stats_t stats;
    assert_fsa_ok(fsa_outbox_stats(f->j, &stats));
    assert_int_equal(stats.conflicts, 3);
    /* a take that records nothing takes no room: not refused */
    assert_fsa_ok(fsa_conflict_resolve(f->j, t.op_id, true, FSA_RESOLVED_LOCAL, &rec));
    assert_int_equal(rec.seq, 0);
    assert_int_equal(seq_count(f->j), before);
    assert_fsa_ok(fsa_conflict_resolve(f->j, a.op_id, false, FSA_RESOLVED_SERVER, &rec));
    /* the engine's rebase is the drain's: it may use the eighth */
    assert_fsa_ok(fsa_conflict_resolve(f->j, b.op_id, true, FSA_RESOLVED_REBASED, &rec));
    assert_int_equal(seq_count(f->j), before + 1);
    assert_fsa_ok(fsa_outbox_stats(f->j, &stats));
    assert_int_equal(stats.conflicts, 0);
}

static void test_fsa_journal_set__fenced_write_refused(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_JOBNEED, "J1", NULL, NULL, &rec));
    fsa_lockmgr_t *lm = NULL;
    assert_fsa_ok(fsa_lockmgr_open(f->port, f->dir.path, NULL, &lm, NULL, 0));
    fsa_lock_t first, second;
    assert_fsa_ok(fsa_lock_acquire(lm, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J1", &first, NULL, 0));
    fsa_fence_t fence1 = fsa_lock_fence(&first);
    assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J1", "{\"seqno\":1}", &fence1, &rec));
    /* the holder overruns its 15 s lease; someone else takes the lock */
    fsa_sim_advance(f->sim, 16 * FSA_NS_PER_S);
    assert_fsa_ok(fsa_lock_acquire(lm, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J1", &second, NULL, 0));
    assert_true(second.token > first.token);
    int64_t before = seq_count(f->j);
    assert_int_equal(fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J1", "{\"seqno\":2}", &fence1, &rec),
                     FSA_EFENCED);
    assert_non_null(strstr(rec.error, "JOB_WORKFLOW_UPDATE:J1"));
    assert_int_equal(seq_count(f->j), before);
    assert_string_equal(field_of(f->j, FSA_TYPE_JOBNEED, "J1", "seqno"), "1");
    fsa_fence_t fence2 = fsa_lock_fence(&second);
    assert_fsa_ok(fsa_journal_set(f->j, FSA_TYPE_JOBNEED, "J1", "{\"seqno\":3}", &fence2, &rec));
    assert_fsa_ok(fsa_lock_release(&second, NULL, 0));
    assert_int_equal(fsa_lock_release(&first, NULL, 0), FSA_ELOST);
    fsa_lockmgr_close(lm);
}

/* A thread's fence (fsa_journal_fence_thread) holds for every write it makes, whichever call:
 * once the lock is taken over, a record with no fence of its own, the cursor, a result and a
 * compaction are all refused and change nothing; another thread's writes are not fenced; and
 * with the fence cleared the thread writes again. */
static void test_fsa_journal_fence_thread__fences_every_write_of_the_thread(void **state)
{
    fixture_t *f = *state;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec));
    fsa_op_result_t res = {.status = FSA_RESULT_APPLIED, .version = 1};
    snprintf(res.op_id, sizeof res.op_id, "%s", rec.op_id);
    fsa_lockmgr_t *lm = NULL;
    assert_fsa_ok(fsa_lockmgr_open(f->port, f->dir.path, NULL, &lm, NULL, 0));
    fsa_lock_t first, second;
    assert_fsa_ok(fsa_lock_acquire(lm, FSA_LOCK_SYNC, "device", &first, NULL, 0));
    fsa_fence_t fence = fsa_lock_fence(&first);
    assert_null(fsa_journal_fence_thread(&fence));
    /* while the lock is held, the writes go through */
    assert_fsa_ok(fsa_journal_cursor_set(f->j, "c1"));
    assert_fsa_ok(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T2", NULL, NULL, &rec));
    /* past its lease, someone else takes the lock */
    fsa_sim_advance(f->sim, 121 * FSA_NS_PER_S);
    assert_fsa_ok(fsa_lock_acquire(lm, FSA_LOCK_SYNC, "device", &second, NULL, 0));
    int64_t before = seq_count(f->j);
    assert_int_equal(fsa_journal_create(f->j, FSA_TYPE_TICKET, "T3", NULL, NULL, &rec),
                     FSA_EFENCED);
    assert_int_equal(fsa_journal_cursor_set(f->j, "c2"), FSA_EFENCED);
    assert_int_equal(fsa_outbox_apply_results(f->j, &res, 1), FSA_EFENCED);
    assert_int_equal(fsa_outbox_compact(f->j, 0, NULL), FSA_EFENCED);
    assert_int_equal(seq_count(f->j), before);
    char *cursor = NULL;
    assert_fsa_ok(fsa_journal_cursor_get(f->j, &cursor));
    assert_string_equal(cursor, "c1");
    fsa_free(cursor);
    fsa_outbox_stats_t os;
    assert_fsa_ok(fsa_outbox_stats(f->j, &os));
    assert_int_equal(os.pending, 2); /* the result was not applied */
    /* another thread is not under this thread's fence */
    creator_t c = {.j = f->j, .st = FSA_EIO};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, create_thread, &c), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_fsa_ok(c.st);
    /* cleared, this thread writes again */
    assert_ptr_equal(fsa_journal_fence_thread(NULL), &fence);
    assert_fsa_ok(fsa_journal_cursor_set(f->j, "c3"));
    assert_fsa_ok(fsa_outbox_apply_results(f->j, &res, 1));
    assert_fsa_ok(fsa_lock_release(&second, NULL, 0));
    assert_int_equal(fsa_lock_release(&first, NULL, 0), FSA_ELOST);
    fsa_lockmgr_close(lm);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_fsa_journal_open__creates_private_wal_file),
        T(test_fsa_journal_open__missing_without_create),
        T(test_fsa_journal_open__newer_schema_refused),
        T(test_fsa_journal_open__garbage_file_refused),
        T(test_fsa_journal_open__migrates_version_zero_file),
        T(test_fsa_journal_open__outbox_columns_in_the_order_read),
        T(test_fsa_journal_create__defaults_and_seq),
        T(test_fsa_journal_create__op_ids_carry_their_seq),
        T(test_fsa_journal_create__the_last_seq),
        T(test_fsa_journal_get_base__a_synced_entity_is_stored_once),
        T(test_fsa_journal_create__existing_refused),
        T(test_fsa_journal_create__attendance_requires_fields),
        T(test_fsa_journal_create__bad_id_refused),
        T(test_fsa_journal_set__status_field_refused),
        T(test_fsa_journal_set__base_version_counts_pending),
        T(test_fsa_journal_merge__patch_semantics),
        T(test_fsa_journal_increment__adds),
        T(test_fsa_journal_transition__valid_and_invalid),
        T(test_fsa_journal_append__max_len),
        T(test_fsa_journal_checkpoint_update__one_group),
        T(test_fsa_journal_checkpoint_update__touches_the_parent_it_has),
        T(test_fsa_journal_checkpoint_update__moved_touches_its_new_tour),
        T(test_fsa_journal_record_group__failure_writes_nothing),
        T(test_fsa_outbox_next_batch__never_splits_a_group),
        T(test_fsa_outbox_next_batch__bounded_by_bytes),
        T(test_fsa_outbox_next_batch__set_waits_for_answers_on_its_entity),
        T(test_fsa_outbox_apply_results__parked_op_lowers_later_sets),
        T(test_fsa_outbox__sets_never_land_on_unseen_changes),
        T(test_fsa_outbox__sets_conflict_only_on_others_changes),
        T(test_fsa_outbox_apply_results__applied_moves_base),
        T(test_fsa_outbox_apply_results__version_jump_leaves_base_to_pull),
        T(test_fsa_outbox_apply_results__conflict_parked_then_resolved),
        T(test_fsa_outbox_apply_results__conflict_state_past_the_bounds_is_not_the_base),
        T(test_fsa_conflict_set_decision__decides_the_whole_group),
        T(test_fsa_outbox_apply_results__parked_set_leaves_only_the_next_sets_prior),
        T(test_fsa_outbox_apply_results__parked_set_kept_in_a_prior_after_a_pull),
        T(test_fsa_conflict_names__round_trip_and_unknown),
        T(test_fsa_conflict__enums_stored_as_names),
        T(test_fsa_conflict_resolve__a_persons_create_goes_as_set_and_transition),
        T(test_fsa_conflict_resolve__a_persons_creates_that_cannot_go),
        T(test_fsa_conflict_resolve__group_without_converged_member),
        T(test_fsa_conflict_resolve__a_converged_transition_keeps_its_group_whole),
        T(test_fsa_conflict_resolve__a_converged_transition_is_not_sent_again),
        T(test_fsa_conflict_resolve__logged_at_the_server_version),
        T(test_fsa_conflict_resolve__group_whole_under_read_faults),
        T(test_fsa_outbox_apply_results__rejection_parked),
        T(test_fsa_outbox_apply_batch__results_commit_without_sync),
        T(test_fsa_outbox_apply_batch__record_goes_between_transactions),
        T(test_fsa_outbox_apply_batch__mixed_answers_once),
        T(test_fsa_outbox_apply_batch__a_run_leaves_what_one_by_one_does),
        T(test_fsa_outbox_apply_batch__applied_past_the_base_survives_a_rebuild),
        T(test_fsa_outbox_apply_batch__a_run_bounds_a_stored_text_as_printed),
        T(test_fsa_outbox_apply_batch__every_allocation_failing_in_turn),
        T(test_fsa_outbox_stats__does_not_wait_for_a_record),
        T(test_fsa_db_flush__next_record_syncs_once),
        T(test_fsa_journal_fold__replays_pending_on_new_base),
        T(test_fsa_outbox_compact__keeps_ids_for_audit),
        T(test_fsa_outbox_compact__forgets_audit_ids_in_id_order),
        T(test_fsa_outbox_compact__in_steps_that_give_way),
        T(test_fsa_journal_now__applies_clock_offset),
        T(test_fsa_journal_state__typed_calls_keep_the_stored_keys),
        T(test_fsa_journal_state__absent_and_bad_arguments),
        T(test_fsa_journal_create__budget_full_writes_nothing),
        T(test_fsa_journal_open__budget_in_the_file_s_pages),
        T(test_fsa_outbox_apply_batch__a_full_journal_drains),
        T(test_fsa_conflict_resolve__a_persons_take_respects_the_budget),
        T(test_fsa_journal_set__fenced_write_refused),
        T(test_fsa_journal_fence_thread__fences_every_write_of_the_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
