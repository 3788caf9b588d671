/* fieldsync tests: sync/server/store.c, the server's SQLite store, in process: groups, the op log,
 * change numbers and visibility, refusing a database that is not its own, nonces and retention,
 * two stores on one file, the migration from schema 1. With FSA_TEST_DB=postgresql (ctest's _pg
 * variant) only the tests that hold for every backend run, on a PostgreSQL store. */
#define _GNU_SOURCE /* nanosleep */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>
#include <stdatomic.h>
#ifdef FSA_TEST_HAVE_PG
#include <libpq-fe.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#endif

#include "port/alloc.h"
#include "sync/server/store.h"
#include "sync/server/store_internal.h"
#include "tests/sync/pg_harness.h"
#include "tests/test_util.h"

typedef struct fixture {
    char dir[64];
    char path[128];
    fsa_store_t *store;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/fsa-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof f->path, "%s/s.db", f->dir);
    char err[256];
    /* PostgreSQL's variant: a fresh database's URI instead of the path (SQLite's is left). */
    if (!th_backend_db(f->path, sizeof f->path))
        return -1;
    if (fsa_store_open(fsa_port_posix(), f->path, 2, &f->store, err, sizeof err) != FSA_OK) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    fsa_store_close(f->store);
    char p[200];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
        unlink(p);
    }
    rmdir(f->dir);
    fsa_free(f);
    return 0;
}

/* Builds a decoded op (the codec's output shape). json may be NULL. */
static void op_make(fsa_codec_op_t *o, const char *op_id, fsa_op_kind_t kind, fsa_type_t type,
                    const char *id, const char *group, const char *json)
{
    memset(o, 0, sizeof *o);
    snprintf(o->op.op_id, sizeof o->op.op_id, "%s", op_id);
    o->op.kind = kind;
    o->op.type = type;
    snprintf(o->op.id, sizeof o->op.id, "%s", id);
    snprintf(o->op.group, sizeof o->op.group, "%s", group != NULL ? group : "");
    o->op.json = json != NULL ? fsa_strdup(json) : NULL;
}

/* An increment of a ticket's level by `by`. */
static void incr_make(fsa_codec_op_t *o, const char *op_id, const char *id, const char *group,
                      int64_t by)
{
    op_make(o, op_id, FSA_OP_INCREMENT, FSA_TYPE_TICKET, id, group, NULL);
    snprintf(o->op.field, sizeof o->op.field, "level");
    o->op.by = by;
}

static void ops_clear(fsa_codec_op_t *ops, fsa_codec_result_t *res, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fsa_op_clear(&ops[i].op);
        fsa_codec_result_clear(&res[i]);
    }
}

static int64_t version_of(fsa_store_t *s, fsa_type_t type, const char *id)
{
    fsa_codec_change_t e;
    fsa_status_t st = fsa_store_get(s, type, id, &e);
    int64_t v = st == FSA_OK ? e.version : 0;
    fsa_codec_change_clear(&e);
    return v;
}

static void test_fsa_store_apply__versions_and_duplicates(void **state)
{
    fixture_t *f = *state;
    fsa_codec_op_t ops[3];
    fsa_codec_result_t res[3];
    op_make(&ops[0], "a1", FSA_OP_CREATE, FSA_TYPE_TICKET, "T1", NULL, "{}");
    incr_make(&ops[1], "a2", "T1", NULL, 4);
    op_make(&ops[2], "a1", FSA_OP_CREATE, FSA_TYPE_TICKET, "T1", NULL, "{}"); /* repeated id */
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 3, 1000, res, NULL, 0));
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    assert_int_equal(res[0].version, 1);
    assert_int_equal(res[1].status, FSA_RESULT_APPLIED);
    assert_int_equal(res[1].version, 2);
    assert_int_equal(res[2].status, FSA_RESULT_DUPLICATE);
    assert_int_equal(res[2].original, FSA_RESULT_APPLIED);
    assert_int_equal(res[2].version, 1);
    ops_clear(ops, res, 3);
    assert_int_equal(version_of(f->store, FSA_TYPE_TICKET, "T1"), 2);

    /* A codec rejection is reported and logged like any other outcome. */
    op_make(&ops[0], "a3", FSA_OP_CREATE, FSA_TYPE_TICKET, "T2", NULL, "{}");
    snprintf(ops[0].reject.code, sizeof ops[0].reject.code, "unknown_type");
    snprintf(ops[0].reject.message, sizeof ops[0].reject.message, "no such type");
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 1, 1000, res, NULL, 0));
    assert_int_equal(res[0].status, FSA_RESULT_REJECTED);
    assert_string_equal(res[0].code, "unknown_type");
    fsa_codec_result_clear(&res[0]);
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 1, 1000, res, NULL, 0));
    assert_int_equal(res[0].status, FSA_RESULT_DUPLICATE);
    assert_int_equal(res[0].original, FSA_RESULT_REJECTED);
    assert_string_equal(res[0].code, "unknown_type");
    ops_clear(ops, res, 1);
    assert_int_equal(version_of(f->store, FSA_TYPE_TICKET, "T2"), 0);
}

static void test_fsa_store_apply__group_rolls_back_with_repeated_op_id(void **state)
{
    fixture_t *f = *state;
    fsa_codec_op_t ops[4];
    fsa_codec_result_t res[4];
    op_make(&ops[0], "g1", FSA_OP_CREATE, FSA_TYPE_JOBNEED, "J1", "grp", "{}");
    op_make(&ops[1], "g1", FSA_OP_CREATE, FSA_TYPE_JOBNEED, "J1", "grp", "{}"); /* same id */
    op_make(&ops[2], "free", FSA_OP_CREATE, FSA_TYPE_JOBNEED, "J2", NULL, "{}");
    op_make(&ops[3], "g3", FSA_OP_SET, FSA_TYPE_JOBNEED, "J1", "grp", "{\"seqno\":1}");
    ops[3].op.base_version = 5; /* stale: the group fails */
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 4, 1000, res, NULL, 0));
    for (size_t i = 0; i < 4; i++) {
        if (i == 2)
            continue;
        assert_int_equal(res[i].status, FSA_RESULT_CONFLICT);
        assert_non_null(strstr(res[i].message, "group grp not applied: op g3"));
    }
    assert_int_equal(res[2].status, FSA_RESULT_APPLIED); /* after the group, in array order */
    ops_clear(ops, res, 4);
    assert_int_equal(version_of(f->store, FSA_TYPE_JOBNEED, "J1"), 0);
    assert_int_equal(version_of(f->store, FSA_TYPE_JOBNEED, "J2"), 1);
    /* The group's ops were logged with the group's outcome: a resend repeats it. */
    op_make(&ops[0], "g1", FSA_OP_CREATE, FSA_TYPE_JOBNEED, "J1", "grp", "{}");
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 1, 1000, res, NULL, 0));
    assert_int_equal(res[0].status, FSA_RESULT_DUPLICATE);
    assert_int_equal(res[0].original, FSA_RESULT_CONFLICT);
    assert_false(res[0].has_current); /* J1 does not exist */
    ops_clear(ops, res, 1);
}

static void test_fsa_store_pull__order_paging_visibility(void **state)
{
    fixture_t *f = *state;
    fsa_codec_op_t ops[4];
    fsa_codec_result_t res[4];
    const char *att = "{\"people_id\":\"p\",\"site_id\":\"s\",\"kind\":\"checkin\",\"at\":1,"
                      "\"lat\":1,\"lon\":2}";
    op_make(&ops[0], "p1", FSA_OP_CREATE, FSA_TYPE_TICKET, "TA", NULL, "{}");
    op_make(&ops[1], "p2", FSA_OP_CREATE, FSA_TYPE_ATTENDANCE, "A1", NULL, att);
    op_make(&ops[2], "p3", FSA_OP_CREATE, FSA_TYPE_TICKET, "TB", NULL, "{}");
    incr_make(&ops[3], "p4", "TA", NULL, 1);
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 4, 1000, res, NULL, 0));
    ops_clear(ops, res, 4);
    /* d1 sees A1, TB, TA (TA last: its latest change is the newest), each once. */
    fsa_codec_pull_t p;
    int64_t next = 0;
    assert_fsa_ok(fsa_store_pull(f->store, "d1", 0, 10, &p, &next));
    assert_int_equal(p.count, 3);
    assert_false(p.more);
    assert_string_equal(p.changes[0].id, "A1");
    assert_string_equal(p.changes[1].id, "TB");
    assert_string_equal(p.changes[2].id, "TA");
    assert_int_equal(p.changes[2].version, 2);
    fsa_codec_pull_free(&p);
    /* d2 does not see d1's attendance; pages of one. */
    int64_t cursor = 0;
    const char *want[] = {"TB", "TA"};
    for (int i = 0; i < 2; i++) {
        assert_fsa_ok(fsa_store_pull(f->store, "d2", cursor, 1, &p, &next));
        assert_int_equal(p.count, 1);
        assert_string_equal(p.changes[0].id, want[i]);
        assert_int_equal(p.more, i == 0);
        assert_true(next > cursor);
        cursor = next;
        fsa_codec_pull_free(&p);
    }
    assert_fsa_ok(fsa_store_pull(f->store, "d2", cursor, 5, &p, &next));
    assert_int_equal(p.count, 0);
    assert_int_equal(next, cursor);
    fsa_codec_pull_free(&p);
    assert_int_equal(fsa_store_pull(f->store, "d2", 0, 0, &p, &next), FSA_EINVAL);
    assert_int_equal(fsa_store_pull(f->store, "d2", -1, 5, &p, &next), FSA_EINVAL);
    int64_t ents = 0, nops = 0, last = 0;
    assert_fsa_ok(fsa_store_counts(f->store, &ents, &nops, &last));
    assert_int_equal(ents, 3);
    assert_int_equal(nops, 4);
    /* One change number per entity a batch wrote: TA's create and increment went to the
     * database once, as its last state. */
    assert_int_equal(last, 3);
}

static int64_t count_rows(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int64_t v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

/* Scope keys: a pull of a device whose scope has person p (its id is "d-"p) sees id or not. */
static bool scoped_sees(fsa_store_t *s, const char *person, const char *id)
{
    char people[1][FSA_ID_BYTES];
    snprintf(people[0], sizeof people[0], "%s", person);
    fsa_store_scope_t sc;
    memset(&sc, 0, sizeof sc);
    sc.people = (const char(*)[FSA_ID_BYTES])people;
    sc.npeople = 1;
    assert_fsa_ok(fsa_store_scope_prepare(&sc));
    fsa_codec_pull_t p;
    int64_t next = 0;
    char dev[FSA_ID_BYTES + 4];
    snprintf(dev, sizeof dev, "d-%s", person);
    assert_fsa_ok(fsa_store_pull_scoped(s, dev, &sc, 0, 100, &p, &next));
    bool seen = false;
    for (size_t i = 0; i < p.count; i++)
        seen = seen || (strcmp(p.changes[i].id, id) == 0 && !p.changes[i].gone);
    fsa_codec_pull_free(&p);
    fsa_store_scope_release(&sc);
    return seen;
}

/* Many ops on one entity in one batch: each sees the one before (the store holds the entity for
 * the transaction and writes it once), a conflict shows the state of that moment, a set that
 * changes a scope key (also spelled with an escape) moves the entity between scopes, and a group
 * after them sees and writes the same entity through its savepoint. */
/* Creates ticket id whose ticketlog holds `payload` bytes of text in 14 strings (a string holds
 * at most 64 KiB), so that the stored text is payload plus the same bytes around it for every
 * payload from 14 to 917,504; returns the stored fields' length. */
static size_t create_sized(fsa_store_t *s, const char *id, size_t payload)
{
    enum { PARTS = 14 };
    assert_in_range(payload, PARTS, PARTS * 65536);
    size_t cap = payload + PARTS * 16 + 32;
    char *json = fsa_malloc(cap);
    assert_non_null(json);
    size_t n = (size_t)snprintf(json, cap, "{\"ticketlog\":{");
    for (int i = 0; i < PARTS; i++) {
        size_t part = payload / PARTS + (i == 0 ? payload % PARTS : 0);
        n += (size_t)snprintf(json + n, cap - n, "%s\"p%02d\":\"", i > 0 ? "," : "", i);
        memset(json + n, 'x', part);
        n += part;
        json[n++] = '"';
    }
    memcpy(json + n, "}}", 3);
    fsa_codec_op_t op;
    fsa_codec_result_t res;
    char op_id[16];
    snprintf(op_id, sizeof op_id, "size-%.8s", id);
    op_make(&op, op_id, FSA_OP_CREATE, FSA_TYPE_TICKET, id, NULL, json);
    fsa_free(json);
    assert_fsa_ok(fsa_store_apply(s, "d1", false, &op, 1, 1000, &res, NULL, 0));
    if (res.status != FSA_RESULT_APPLIED)
        fail_msg("%s: %s %s", id, res.code, res.message);
    ops_clear(&op, &res, 1);
    fsa_codec_change_t e;
    assert_fsa_ok(fsa_store_get(s, FSA_TYPE_TICKET, id, &e));
    size_t len = strlen(e.fields);
    fsa_codec_change_clear(&e);
    return len;
}

/* A page holds changes while their fields and FSA_STORE_CHANGE_OVERHEAD each add up to at most
 * FSA_STORE_PAGE_BYTES: five that come to it exactly make one page (with more: the sixth is
 * next), and the same five one byte over make a page of four. Both backends agree to the byte. */
static void test_fsa_store_pull__page_ends_exactly_at_its_budget(void **state)
{
    fixture_t *f = *state;
    const size_t p = 838000, cost = FSA_STORE_CHANGE_OVERHEAD;
    int64_t cursor = 0;
    for (int over = 0; over <= 1; over++) {
        const char pre = over ? 'Q' : 'P';
        char id[16];
        snprintf(id, sizeof id, "T%c1", pre);
        size_t len = create_sized(f->store, id, p); /* the stored text: p plus what surrounds it */
        for (int i = 2; i <= 4; i++) {
            snprintf(id, sizeof id, "T%c%d", pre, i);
            assert_int_equal(create_sized(f->store, id, p), len);
        }
        size_t last = FSA_STORE_PAGE_BYTES - 4 * (len + cost) - cost + (size_t)over;
        snprintf(id, sizeof id, "T%c5", pre);
        assert_int_equal(create_sized(f->store, id, last - (len - p)), last);
        snprintf(id, sizeof id, "T%c6", pre);
        (void)create_sized(f->store, id, 100);
        fsa_codec_pull_t pg;
        int64_t next = 0;
        assert_fsa_ok(fsa_store_pull(f->store, "d1", cursor, 100, &pg, &next));
        assert_int_equal(pg.count, over ? 4 : 5);
        assert_true(pg.more);
        char want[16];
        snprintf(want, sizeof want, "T%c%d", pre, over ? 4 : 5);
        assert_string_equal(pg.changes[pg.count - 1].id, want);
        fsa_codec_pull_free(&pg);
        assert_fsa_ok(fsa_store_pull(f->store, "d1", next, 100, &pg, &next));
        assert_int_equal(pg.count, over ? 2 : 1);
        assert_false(pg.more);
        snprintf(want, sizeof want, "T%c6", pre);
        assert_string_equal(pg.changes[pg.count - 1].id, want);
        fsa_codec_pull_free(&pg);
        cursor = next;
    }
}

static void test_fsa_store_apply__one_entity_many_ops_in_a_batch(void **state)
{
    fixture_t *f = *state;
    enum { N = 8 };
    fsa_codec_op_t ops[N];
    fsa_codec_result_t res[N];
    op_make(&ops[0], "m1", FSA_OP_CREATE, FSA_TYPE_TICKET, "T1", NULL, "{\"assignedto\":\"p1\"}");
    incr_make(&ops[1], "m2", "T1", NULL, 1);
    op_make(&ops[2], "m3", FSA_OP_SET, FSA_TYPE_TICKET, "T1", NULL, "{\"assignedto\":\"p2\"}");
    ops[2].op.base_version = 2;
    op_make(&ops[3], "m4", FSA_OP_SET, FSA_TYPE_TICKET, "T1", NULL, "{\"priority\":\"HIGH\"}");
    ops[3].op.base_version = 1; /* stale: a conflict showing version 3 */
    op_make(&ops[4], "m5", FSA_OP_SET, FSA_TYPE_TICKET, "T1", NULL,
            "{\"assignedt\\u006f\":\"p3\"}");
    ops[4].op.base_version = 3;
    incr_make(&ops[5], "m6", "T1", NULL, 10);
    incr_make(&ops[6], "m7", "T1", "g", 100);
    op_make(&ops[7], "m8", FSA_OP_CREATE, FSA_TYPE_JOBNEED, "J1", "g", "{}");
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, N, 1000, res, NULL, 0));
    static const int64_t versions[N] = {1, 2, 3, 0, 4, 5, 6, 1};
    for (size_t i = 0; i < N; i++) {
        if (i == 3) {
            assert_int_equal(res[i].status, FSA_RESULT_CONFLICT);
            assert_true(res[i].has_current);
            assert_int_equal(res[i].current_version, 3);
            assert_non_null(strstr(res[i].current_fields, "\"p2\""));
            continue;
        }
        if (res[i].status != FSA_RESULT_APPLIED || res[i].version != versions[i])
            fail_msg("op %zu: status %d version %lld", i, (int)res[i].status,
                     (long long)res[i].version);
    }
    ops_clear(ops, res, N);
    fsa_codec_change_t e;
    assert_fsa_ok(fsa_store_get(f->store, FSA_TYPE_TICKET, "T1", &e));
    assert_int_equal(e.version, 6);
    assert_non_null(strstr(e.fields, "\"assignedto\":\"p3\""));
    assert_non_null(strstr(e.fields, "\"level\":111"));
    fsa_codec_change_clear(&e);
    assert_int_equal(version_of(f->store, FSA_TYPE_JOBNEED, "J1"), 1);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM entities WHERE id = 'T1'"
                                         " AND person = 'p3'"),
                     1);
    assert_true(scoped_sees(f->store, "p3", "T1"));
    assert_false(scoped_sees(f->store, "p2", "T1"));
    assert_false(scoped_sees(f->store, "p1", "T1"));
    /* A second batch: its first op, a set spelling the key with an escape, moves the entity
     * (its keys are read again, not taken from the row); a create of it is a conflict showing
     * the state of that moment. */
    op_make(&ops[0], "n1", FSA_OP_SET, FSA_TYPE_TICKET, "T1", NULL,
            "{\"assignedt\\u006f\":\"p4\"}");
    ops[0].op.base_version = 6;
    op_make(&ops[1], "n2", FSA_OP_CREATE, FSA_TYPE_TICKET, "T1", NULL, "{}");
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 2, 1000, res, NULL, 0));
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    assert_int_equal(res[0].version, 7);
    assert_int_equal(res[1].status, FSA_RESULT_CONFLICT);
    assert_int_equal(res[1].current_version, 7);
    ops_clear(ops, res, 2);
    assert_int_equal(version_of(f->store, FSA_TYPE_TICKET, "T1"), 7);
    assert_true(scoped_sees(f->store, "p4", "T1"));
    assert_false(scoped_sees(f->store, "p3", "T1"));
}

/*
 * A parent's person changed by many ops of one batch touches each of its checkpoints each time:
 * every entity is pulled once after the batch of creates before, and a group rolled back between
 * (it touched the checkpoints in its savepoint) takes nothing away. PostgreSQL's store keeps each
 * touched entity once (it kept every touch, ops x checkpoints entries, and compared them pairwise
 * at commit: quadratic).
 */
static void test_fsa_store_apply__parent_person_changes_touch_each_child_once(void **state)
{
    fixture_t *f = *state;
    enum { KIDS = 40, SETS = 30, N = SETS + 2 };
    _Static_assert(KIDS + 1 >= N, "the creates are the larger batch");
    fsa_codec_op_t ops[KIDS + 1];
    fsa_codec_result_t res[KIDS + 1];
    char id[32], opid[16], json[64];
    op_make(&ops[0], "k-p", FSA_OP_CREATE, FSA_TYPE_JOBNEED, "P", NULL, "{\"people_id\":\"p0\"}");
    for (int i = 1; i <= KIDS; i++) {
        snprintf(id, sizeof id, "C%02d", i);
        snprintf(opid, sizeof opid, "k-c%d", i);
        op_make(&ops[i], opid, FSA_OP_CREATE, FSA_TYPE_JOBNEED, id, NULL, "{\"parent_id\":\"P\"}");
    }
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, KIDS + 1, 1000, res, NULL, 0));
    for (int i = 0; i <= KIDS; i++)
        assert_int_equal(res[i].status, FSA_RESULT_APPLIED);
    ops_clear(ops, res, KIDS + 1);
    int64_t last0 = 0, ents = 0, nops = 0;
    assert_fsa_ok(fsa_store_counts(f->store, &ents, &nops, &last0));
    /* SETS sets of P's person; between them a group whose set of P applies (touching every
     * checkpoint inside the savepoint) and whose stale set of C01 fails: rolled back. */
    int k = 0;
    for (int i = 0; i < SETS; i++) {
        if (i == SETS / 2) {
            op_make(&ops[k], "g-1", FSA_OP_SET, FSA_TYPE_JOBNEED, "P", "g",
                    "{\"people_id\":\"pg\"}");
            ops[k++].op.base_version = 1 + i;
            op_make(&ops[k], "g-2", FSA_OP_SET, FSA_TYPE_JOBNEED, "C01", "g", "{\"seqno\":9}");
            ops[k++].op.base_version = 99;
        }
        snprintf(opid, sizeof opid, "s-%d", i);
        snprintf(json, sizeof json, "{\"people_id\":\"p%d\"}", i % 2 + 1);
        op_make(&ops[k], opid, FSA_OP_SET, FSA_TYPE_JOBNEED, "P", NULL, json);
        ops[k++].op.base_version = 1 + i;
    }
    assert_int_equal(k, N);
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, N, 2000, res, NULL, 0));
    for (int i = 0; i < N; i++) {
        bool grouped = ops[i].op.group[0] != '\0';
        assert_int_equal(res[i].status, grouped ? FSA_RESULT_CONFLICT : FSA_RESULT_APPLIED);
    }
    ops_clear(ops, res, N);
    assert_int_equal(version_of(f->store, FSA_TYPE_JOBNEED, "P"), 1 + SETS);
    fsa_codec_pull_t p;
    int64_t next = 0;
    assert_fsa_ok(fsa_store_pull(f->store, "d1", last0, 100, &p, &next));
    assert_int_equal(p.count, KIDS + 1);
    bool seen[KIDS + 1];
    memset(seen, 0, sizeof seen);
    for (size_t i = 0; i < p.count; i++) {
        int n = strcmp(p.changes[i].id, "P") == 0 ? 0 : (int)strtol(p.changes[i].id + 1, NULL, 10);
        assert_true(n >= 0 && n <= KIDS);
        assert_false(seen[n]);
        seen[n] = true;
    }
    fsa_codec_pull_free(&p);
}

/*
 * The op log of a batch goes to the database 100 rows per statement (the rows wait in the store
 * until then). 250 creates with two op ids repeated: one whose first row still waits (op 150
 * repeats op 120), one whose row went with the first 100 (op 240 repeats op 10): both are
 * duplicates of their first. Every outcome is in the log afterwards: the same batch again answers
 * each op as a duplicate with its version.
 */
static void test_fsa_store_apply__op_log_in_statements_of_100(void **state)
{
    fixture_t *f = *state;
    enum { N = 250 };
    fsa_codec_op_t *ops = fsa_calloc(N, sizeof *ops);
    fsa_codec_result_t *res = fsa_calloc(N, sizeof *res);
    assert_non_null(ops);
    assert_non_null(res);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < N; i++) {
            char op_id[16], id[16];
            int k = i == 150 ? 120 : i == 240 ? 10 : i;
            snprintf(op_id, sizeof op_id, "L%d", k);
            snprintf(id, sizeof id, "LT%d", k);
            op_make(&ops[i], op_id, FSA_OP_CREATE, FSA_TYPE_TICKET, id, NULL, NULL);
        }
        assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, N, 1000, res, NULL, 0));
        for (int i = 0; i < N; i++) {
            bool dup = pass == 1 || i == 150 || i == 240;
            if (res[i].status != (dup ? FSA_RESULT_DUPLICATE : FSA_RESULT_APPLIED) ||
                res[i].version != 1)
                fail_msg("pass %d op %d: status %d version %lld", pass, i, (int)res[i].status,
                         (long long)res[i].version);
            if (dup)
                assert_int_equal(res[i].original, FSA_RESULT_APPLIED);
        }
        ops_clear(ops, res, N);
    }
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM ops WHERE op_id LIKE 'L%'"), N - 2);
    fsa_free(ops);
    fsa_free(res);
}

/* One increment of T's level by `by` as its own batch at store s: its status and version. */
static fsa_result_status_t bump(fsa_store_t *s, const char *op_id, const char *id, int64_t by,
                                int64_t *version)
{
    fsa_codec_op_t op;
    fsa_codec_result_t r;
    incr_make(&op, op_id, id, NULL, by);
    assert_fsa_ok(fsa_store_apply(s, "d1", false, &op, 1, 1000, &r, NULL, 0));
    fsa_result_status_t st = r.status;
    *version = r.version;
    ops_clear(&op, &r, 1);
    return st;
}

static bool level_is(fsa_store_t *s, const char *id, const char *want)
{
    fsa_codec_change_t e;
    assert_fsa_ok(fsa_store_get(s, FSA_TYPE_TICKET, id, &e));
    bool ok = strstr(e.fields, want) != NULL;
    if (!ok)
        fprintf(stderr, "%s: %s, wanted %s\n", id, e.fields, want);
    fsa_codec_change_clear(&e);
    return ok;
}

/*
 * A claim of an op id new to its batch does not read the op log (lazy claims, SQLite): the log's
 * insert finds an op id logged already, and the batch is applied again with every claim read.
 * The answers are those of reading every claim: op ids of an earlier batch, met after 150 new
 * ops (found by a 100-row insert) and last in the batch (found by a one-row insert at the
 * commit), are duplicates and not applied again; in a failed group, an op after the failing one
 * takes the group's outcome when its op id is new, and repeats its logged outcome when it is not.
 */
static void test_fsa_store_apply__duplicates_found_by_the_log_insert(void **state)
{
    fixture_t *f = *state;
    enum { N = 230 };
    fsa_codec_op_t *ops = fsa_calloc(N, sizeof *ops);
    fsa_codec_result_t *res = fsa_calloc(N, sizeof *res);
    assert_non_null(ops);
    assert_non_null(res);
    op_make(&ops[0], "d0", FSA_OP_CREATE, FSA_TYPE_TICKET, "DT", NULL, "{}");
    incr_make(&ops[1], "d1", "DT", NULL, 1);
    incr_make(&ops[2], "d2", "DT", NULL, 10);
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 3, 1000, res, NULL, 0));
    assert_int_equal(res[2].version, 3);
    ops_clear(ops, res, 3);

    for (int i = 0; i < N; i++) {
        char op_id[16], id[16];
        snprintf(op_id, sizeof op_id, "dn%d", i);
        snprintf(id, sizeof id, "DN%d", i);
        if (i == 150)
            incr_make(&ops[i], "d1", "DT", NULL, 1);
        else if (i == N - 1)
            incr_make(&ops[i], "d2", "DT", NULL, 10);
        else
            op_make(&ops[i], op_id, FSA_OP_CREATE, FSA_TYPE_TICKET, id, NULL, NULL);
    }
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, N, 1000, res, NULL, 0));
    for (int i = 0; i < N; i++) {
        bool dup = i == 150 || i == N - 1;
        int64_t v = i == 150 ? 2 : i == N - 1 ? 3 : 1;
        if (res[i].status != (dup ? FSA_RESULT_DUPLICATE : FSA_RESULT_APPLIED) ||
            res[i].version != v)
            fail_msg("op %d: status %d version %lld", i, (int)res[i].status,
                     (long long)res[i].version);
    }
    ops_clear(ops, res, N);
    assert_int_equal(version_of(f->store, FSA_TYPE_TICKET, "DT"), 3);
    assert_true(level_is(f->store, "DT", "\"level\":11"));
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM ops WHERE op_id LIKE 'dn%'"), N - 2);

    /* A group failing at its second op; its third is logged already, its fourth is new. */
    incr_make(&ops[0], "dg0", "DT", "grp", 100);
    op_make(&ops[1], "dg1", FSA_OP_SET, FSA_TYPE_TICKET, "DT", "grp", "{\"priority\":\"HIGH\"}");
    ops[1].op.base_version = 1; /* stale: the group fails */
    incr_make(&ops[2], "d1", "DT", "grp", 1);
    incr_make(&ops[3], "dg3", "DT", "grp", 1);
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 4, 1000, res, NULL, 0));
    for (int i = 0; i < 4; i++) {
        if (i == 2)
            continue;
        assert_int_equal(res[i].status, FSA_RESULT_CONFLICT);
        assert_non_null(strstr(res[i].message, "group grp not applied: op dg1"));
    }
    assert_int_equal(res[2].status, FSA_RESULT_DUPLICATE);
    assert_int_equal(res[2].original, FSA_RESULT_APPLIED);
    assert_int_equal(res[2].version, 2);
    ops_clear(ops, res, 4);
    assert_int_equal(version_of(f->store, FSA_TYPE_TICKET, "DT"), 3);
    fsa_free(ops);
    fsa_free(res);
}

/* A failed group's duplicate of an earlier conflict carries the entity as it is after the
 * group's rollback: before, its current was read inside the group's savepoint, with what the
 * group's own earlier ops wrote (a version that never was), and kept after the rollback. */
static void test_fsa_store_apply__failed_group_duplicate_current_is_after_the_rollback(void **state)
{
    fixture_t *f = *state;
    fsa_codec_op_t ops[3];
    fsa_codec_result_t res[3];
    char err[256] = "";
    op_make(&ops[0], "q0", FSA_OP_CREATE, FSA_TYPE_TICKET, "R2", NULL, "{}");
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 1, 1000, res, NULL, 0));
    ops_clear(ops, res, 1);
    op_make(&ops[0], "k", FSA_OP_SET, FSA_TYPE_TICKET, "R2", NULL, "{\"priority\":\"HIGH\"}");
    ops[0].op.base_version = 99;
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 1, 1000, res, NULL, 0));
    assert_int_equal(res[0].status, FSA_RESULT_CONFLICT);
    ops_clear(ops, res, 1);
    /* The group: R2 incremented (version 2 inside it), k again, then a stale set that fails it. */
    incr_make(&ops[0], "q1", "R2", "gq", 1);
    op_make(&ops[1], "k", FSA_OP_SET, FSA_TYPE_TICKET, "R2", "gq", "{\"priority\":\"HIGH\"}");
    ops[1].op.base_version = 99;
    op_make(&ops[2], "q2", FSA_OP_SET, FSA_TYPE_TICKET, "R2", "gq", "{\"priority\":\"LOW\"}");
    ops[2].op.base_version = 99;
    fsa_status_t st = fsa_store_apply(f->store, "d1", false, ops, 3, 1000, res, err, sizeof err);
    if (st != FSA_OK)
        fail_msg("%s (%s)", fsa_status_str(st), err);
    assert_int_equal(res[0].status, FSA_RESULT_CONFLICT); /* the group's outcome */
    assert_int_equal(res[1].status, FSA_RESULT_DUPLICATE);
    assert_int_equal(res[1].original, FSA_RESULT_CONFLICT);
    assert_true(res[1].has_current);
    if (res[1].current_version != 1 || strstr(res[1].current_fields, "\"level\":0") == NULL)
        fail_msg("k's current is version %lld %s: R2 is at version 1, level 0",
                 (long long)res[1].current_version, res[1].current_fields);
    ops_clear(ops, res, 3);
}

/*
 * In a group that is not applied, an op logged before the group keeps its logged outcome
 * (PROTOCOL.md section 3: a duplicate repeats it), also after the failing op, where the group's
 * loop does not claim it: logged before by an earlier batch, or earlier in the same batch outside
 * the group. Logging it again with the group's outcome was refused on PostgreSQL (the batch ended
 * FSA_EBUSY, a 503 for ever) and dropped on SQLite (answered conflict).
 */
static void test_fsa_store_apply__failed_group_answers_logged_ops_as_duplicates(void **state)
{
    fixture_t *f = *state;
    fsa_codec_op_t ops[3];
    fsa_codec_result_t res[3];
    char err[256] = "";
    op_make(&ops[0], "c0", FSA_OP_CREATE, FSA_TYPE_TICKET, "R1", NULL, "{}");
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 1, 1000, res, NULL, 0));
    ops_clear(ops, res, 1);
    incr_make(&ops[0], "x", "R1", NULL, 1);
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 1, 1000, res, NULL, 0));
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    int64_t xv = res[0].version;
    assert_int_equal(xv, 2);
    ops_clear(ops, res, 1);

    /* x again, in a group after its stale op; the same batch once more repeats every answer. */
    for (int round = 0; round < 2; round++) {
        op_make(&ops[0], "g1", FSA_OP_SET, FSA_TYPE_TICKET, "R1", "g2", "{\"priority\":\"HIGH\"}");
        ops[0].op.base_version = 99;
        incr_make(&ops[1], "x", "R1", "g2", 1);
        fsa_status_t st =
            fsa_store_apply(f->store, "d1", false, ops, 2, 1000, res, err, sizeof err);
        if (st != FSA_OK)
            fail_msg("round %d: %s (%s)", round, fsa_status_str(st), err);
        if (round == 0) {
            assert_int_equal(res[0].status, FSA_RESULT_CONFLICT);
            assert_non_null(strstr(res[0].message, "group g2 not applied: op g1"));
        } else {
            assert_int_equal(res[0].status, FSA_RESULT_DUPLICATE);
            assert_int_equal(res[0].original, FSA_RESULT_CONFLICT);
        }
        assert_int_equal(res[1].status, FSA_RESULT_DUPLICATE);
        assert_int_equal(res[1].original, FSA_RESULT_APPLIED);
        assert_int_equal(res[1].version, xv);
        ops_clear(ops, res, 2);
    }

    /* The same in one batch: y alone, then a group failing before y's op id again. */
    incr_make(&ops[0], "y", "R1", NULL, 1);
    op_make(&ops[1], "h1", FSA_OP_SET, FSA_TYPE_TICKET, "R1", "h", "{\"priority\":\"HIGH\"}");
    ops[1].op.base_version = 99;
    incr_make(&ops[2], "y", "R1", "h", 1);
    fsa_status_t st = fsa_store_apply(f->store, "d1", false, ops, 3, 1000, res, err, sizeof err);
    if (st != FSA_OK)
        fail_msg("one batch: %s (%s)", fsa_status_str(st), err);
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    assert_int_equal(res[0].version, xv + 1);
    assert_int_equal(res[1].status, FSA_RESULT_CONFLICT);
    assert_int_equal(res[2].status, FSA_RESULT_DUPLICATE);
    assert_int_equal(res[2].original, FSA_RESULT_APPLIED);
    assert_int_equal(res[2].version, xv + 1);
    ops_clear(ops, res, 3);

    /* y's log row still says applied. */
    incr_make(&ops[0], "y", "R1", NULL, 1);
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 1, 1000, res, NULL, 0));
    assert_int_equal(res[0].status, FSA_RESULT_DUPLICATE);
    assert_int_equal(res[0].original, FSA_RESULT_APPLIED);
    assert_int_equal(res[0].version, xv + 1);
    ops_clear(ops, res, 1);
    assert_int_equal(version_of(f->store, FSA_TYPE_TICKET, "R1"), xv + 1);
    assert_true(level_is(f->store, "R1", "\"level\":2"));
}

/*
 * The store keeps the parsed entities of its last committed batch for the next one. Such a parse
 * must give way to what the database holds: a change made by another store on the file (another
 * process), and a group of the store's own that was rolled back, are both seen by the next batch.
 */
static void test_fsa_store_apply__warm_parse_follows_the_database(void **state)
{
    fixture_t *f = *state;
    fsa_store_t *other = NULL;
    char err[256];
    assert_fsa_ok(fsa_store_open(fsa_port_posix(), f->path, 1, &other, err, sizeof err));
    fsa_codec_op_t ops[3];
    fsa_codec_result_t res[3];
    op_make(&ops[0], "w1", FSA_OP_CREATE, FSA_TYPE_TICKET, "W1", NULL, "{\"assignedto\":\"p1\"}");
    incr_make(&ops[1], "w2", "W1", NULL, 2);
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 2, 1000, res, NULL, 0));
    assert_int_equal(res[1].status, FSA_RESULT_APPLIED);
    ops_clear(ops, res, 2);
    int64_t v = 0;
    assert_int_equal(bump(f->store, "w3", "W1", 1, &v), FSA_RESULT_APPLIED); /* the warm parse */
    assert_int_equal(v, 3);
    assert_true(level_is(f->store, "W1", "\"level\":3"));
    /* Another store on the file changes the row. */
    assert_int_equal(bump(other, "w4", "W1", 10, &v), FSA_RESULT_APPLIED);
    assert_int_equal(v, 4);
    assert_int_equal(bump(f->store, "w5", "W1", 1, &v), FSA_RESULT_APPLIED);
    assert_int_equal(v, 5);
    assert_true(level_is(f->store, "W1", "\"level\":14"));
    /* A group that fails after its increment: rolled back, the next batch does not see it. */
    incr_make(&ops[0], "w6", "W1", NULL, 1000);
    incr_make(&ops[1], "w7", "W1", "g", 100);
    op_make(&ops[2], "w8", FSA_OP_SET, FSA_TYPE_TICKET, "W1", "g", "{\"priority\":\"HIGH\"}");
    ops[2].op.base_version = 1; /* stale: the group fails */
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 3, 1000, res, NULL, 0));
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    assert_int_equal(res[1].status, FSA_RESULT_CONFLICT);
    ops_clear(ops, res, 3);
    assert_int_equal(bump(f->store, "w9", "W1", 1, &v), FSA_RESULT_APPLIED);
    assert_int_equal(v, 7);
    assert_true(level_is(f->store, "W1", "\"level\":1015"));
    /* And the other store, whose own warm parse (level 13) is stale twice over. */
    assert_int_equal(bump(other, "w10", "W1", 1, &v), FSA_RESULT_APPLIED);
    assert_int_equal(v, 8);
    assert_true(level_is(other, "W1", "\"level\":1016"));
    fsa_store_close(other);
}

/*
 * A batch whose held entities pass the store's 8 MiB budget: 100 tickets of ~4 KB each, held
 * parsed (their trees count at 40 bytes per byte of text: ~16 MB), then four increments of each.
 * The store writes and forgets what it holds part way, and every answer is still the one op by
 * op: versions 1 to 5, the level summed, the text whole. The change numbers show the forgetting:
 * an entity written at a forget and again at the commit takes two.
 */
static void test_fsa_store_apply__held_trees_over_the_budget(void **state)
{
    fixture_t *f = *state;
    enum { TICKETS = 100, ROUNDS = 4, N = TICKETS * (1 + ROUNDS), NOTE = 4000 };
    fsa_codec_op_t *ops = fsa_calloc(N, sizeof *ops);
    fsa_codec_result_t *res = fsa_calloc(N, sizeof *res);
    char *fields = fsa_malloc(NOTE + 128);
    assert_non_null(ops);
    assert_non_null(res);
    assert_non_null(fields);
    int n = snprintf(fields, NOTE + 128, "{\"ticketlog\":{\"ticket_history\":[],\"note\":\"");
    memset(fields + n, 'x', NOTE);
    snprintf(fields + n + NOTE, 128, "\"}}");
    char op_id[32], id[32];
    for (int t = 0; t < TICKETS; t++) {
        snprintf(op_id, sizeof op_id, "big-c-%d", t);
        snprintf(id, sizeof id, "BIG-%d", t);
        op_make(&ops[t], op_id, FSA_OP_CREATE, FSA_TYPE_TICKET, id, NULL, fields);
        for (int r = 0; r < ROUNDS; r++) {
            fsa_codec_op_t *o = &ops[TICKETS * (1 + r) + t];
            snprintf(op_id, sizeof op_id, "big-i-%d-%d", r, t);
            incr_make(o, op_id, id, NULL, 1 + r);
        }
    }
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, N, 1000, res, NULL, 0));
    for (int i = 0; i < N; i++) {
        int64_t want = 1 + i / TICKETS;
        if (res[i].status != FSA_RESULT_APPLIED || res[i].version != want)
            fail_msg("op %d: status %d version %lld", i, (int)res[i].status,
                     (long long)res[i].version);
    }
    ops_clear(ops, res, N);
    for (int t = 0; t < TICKETS; t += 33) {
        snprintf(id, sizeof id, "BIG-%d", t);
        fsa_codec_change_t e;
        assert_fsa_ok(fsa_store_get(f->store, FSA_TYPE_TICKET, id, &e));
        assert_int_equal(e.version, 1 + ROUNDS);
        assert_non_null(strstr(e.fields, "\"level\":10"));
        assert_int_equal(strspn(strstr(e.fields, "\"note\":\"") + 8, "x"), NOTE);
        fsa_codec_change_clear(&e);
    }
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM entities"), TICKETS);
    assert_true(count_rows(f->path, "SELECT max(chg) FROM entities") > TICKETS);
    fsa_free(ops);
    fsa_free(res);
    fsa_free(fields);
}

static void test_fsa_store_open__refuses_a_foreign_database(void **state)
{
    fixture_t *f = *state;
    char path[160];
    snprintf(path, sizeof path, "%s/foreign.db", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("this is not a database, just some text that is long enough to look like a header...",
          fp);
    assert_int_equal(fclose(fp), 0);
    fsa_store_t *s = (fsa_store_t *)1;
    char err[256];
    assert_int_not_equal(fsa_store_open(fsa_port_posix(), path, 1, &s, err, sizeof err), FSA_OK);
    assert_null(s);
    assert_true(strlen(err) > 0);
    unlink(path);
    assert_int_equal(fsa_store_open(fsa_port_posix(), path, 0, &s, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_store_open(NULL, path, 1, &s, err, sizeof err), FSA_EINVAL);
    unlink(path);
}

/* Replay state in the database: a nonce is a replay until it expires, then fresh again; expired
 * nonces are removed a few at a time by later checks. */
static void test_fsa_store_nonce__replay_expiry_and_cleanup(void **state)
{
    fixture_t *f = *state;
    bool replay = true;
    assert_fsa_ok(
        fsa_store_nonce(f->store, "d1", "00112233445566778899aabbccddeeff", 5000, 1000, &replay));
    assert_false(replay);
    assert_fsa_ok(
        fsa_store_nonce(f->store, "d1", "00112233445566778899aabbccddeeff", 5000, 2000, &replay));
    assert_true(replay);
    /* Another device may use the same nonce. */
    assert_fsa_ok(
        fsa_store_nonce(f->store, "d2", "00112233445566778899aabbccddeeff", 5000, 2000, &replay));
    assert_false(replay);
    /* Past its expiry the nonce is outside the window: the skew check refuses such a request
     * anyway, and the row is renewed rather than kept. */
    assert_fsa_ok(
        fsa_store_nonce(f->store, "d1", "00112233445566778899aabbccddeeff", 9000, 6000, &replay));
    assert_false(replay);
    /* 200 nonces expiring at 10000; then checks at 20000 remove them, 32 per check. */
    char nonce[33];
    for (int i = 0; i < 200; i++) {
        snprintf(nonce, sizeof nonce, "%032x", i + 1000);
        assert_fsa_ok(fsa_store_nonce(f->store, "d3", nonce, 10000, 7000, &replay));
        assert_false(replay);
    }
    /* d2's nonce (expired at 5000) went with the first of these checks. */
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM nonces"), 201);
    for (int i = 0; i < 7; i++) {
        snprintf(nonce, sizeof nonce, "%032x", i + 5000);
        assert_fsa_ok(fsa_store_nonce(f->store, "d3", nonce, 30000, 20000, &replay));
    }
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM nonces WHERE expires < 20000"), 0);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM nonces"), 7);
    /* The checks write with the writer's connection at synchronous=NORMAL, and leave it at FULL
     * (2) for the ops: an apply after a check commits with its fsync. */
    assert_int_equal(fsa__store_sqlite_sync_level(f->store), 2);
    fsa_codec_op_t op;
    fsa_codec_result_t r;
    op_make(&op, "s1", FSA_OP_CREATE, FSA_TYPE_TICKET, "S1", NULL, NULL);
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, &op, 1, 1000, &r, NULL, 0));
    assert_int_equal(r.status, FSA_RESULT_APPLIED);
    ops_clear(&op, &r, 1);
    assert_int_equal(fsa__store_sqlite_sync_level(f->store), 2);
    assert_int_equal(fsa_store_nonce(NULL, "d1", nonce, 1, 1, &replay), FSA_EINVAL);
}

/*
 * SQLite: a batch whose read of the last change number fails (out of memory here; an I/O error
 * elsewhere) fails whole. Before, the failed read counted as 0: the batch numbered its changes
 * from 1, and with change 1 unused (its entity has changed since) it committed them under every
 * device's cursor, never to be pulled. Each allocation of a create fails in turn; whatever the
 * create's fate, its entity, when written, carries a number above every earlier one.
 */
static void test_fsa_store_apply__a_failed_read_of_the_last_change_fails_the_batch(void **state)
{
    fixture_t *f = *state;
    fsa_codec_op_t ops[1];
    fsa_codec_result_t res[1];
    op_make(&ops[0], "m0", FSA_OP_CREATE, FSA_TYPE_TICKET, "M0", NULL, "{}");
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 1, 1000, res, NULL, 0));
    ops_clear(ops, res, 1);
    incr_make(&ops[0], "m1", "M0", NULL, 1); /* M0 moves to change 2: change 1 is free */
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 1, 1000, res, NULL, 0));
    ops_clear(ops, res, 1);
    assert_int_equal(count_rows(f->path, "SELECT min(chg) FROM entities"), 2);
    int failures = 0, applied = 0;
    for (unsigned long n = 1; n < 100000; n++) {
        char op_id[24], id[24], sql[128];
        snprintf(op_id, sizeof op_id, "mk%lu", n);
        snprintf(id, sizeof id, "K%lu", n);
        op_make(&ops[0], op_id, FSA_OP_CREATE, FSA_TYPE_TICKET, id, NULL, "{}");
        int64_t before = count_rows(f->path, "SELECT max(chg) FROM entities");
        fsa_alloc_fail_nth(n);
        fsa_status_t st = fsa_store_apply(f->store, "d1", false, ops, 1, 1000, res, NULL, 0);
        bool fired = fsa_alloc_fault_fired();
        fsa_alloc_fail_nth(0);
        snprintf(sql, sizeof sql, "SELECT chg FROM entities WHERE type = 'ticket' AND id = '%s'",
                 id);
        int64_t chg = count_rows(f->path, sql);
        if (chg != -1 && chg <= before)
            fail_msg("allocation %lu failed: %s was written as change %lld, under the last one "
                     "before it (%lld)",
                     n, id, (long long)chg, (long long)before);
        applied += st == FSA_OK && res[0].status == FSA_RESULT_APPLIED;
        ops_clear(ops, res, 1);
        if (!fired)
            break; /* the create ran to its end without a failure */
        failures++;
    }
    assert_true(failures > 0);
    assert_true(applied > 0);
}

/* Retention: outcomes received before the cut are removed in chunks; an op resent after its
 * outcome went applies again (why the retention must cover a device's longest time offline). */
static void test_fsa_store_sweep_ops__chunks_and_forgets(void **state)
{
    fixture_t *f = *state;
    fsa_codec_op_t ops[5];
    fsa_codec_result_t res[5];
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "s%d", i);
        incr_make(&ops[i], id, "T1", NULL, 1);
    }
    fsa_codec_op_t create;
    fsa_codec_result_t cres;
    op_make(&create, "c0", FSA_OP_CREATE, FSA_TYPE_TICKET, "T1", NULL, NULL);
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, &create, 1, 500, &cres, NULL, 0));
    ops_clear(&create, &cres, 1);
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 3, 1000, res, NULL, 0));
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops + 3, 2, 3000, res + 3, NULL, 0));
    for (int i = 0; i < 5; i++)
        fsa_codec_result_clear(&res[i]);
    int64_t deleted = -1;
    /* One row of op_batches per batch: [c0] at 500, [s0 s1 s2] at 1000, [s3 s4] at 3000. */
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM op_batches"), 3);
    assert_fsa_ok(fsa_store_sweep_ops(f->store, 2000, 2, &deleted));
    assert_int_equal(deleted, 2); /* c0 and s0: the oldest first */
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM op_batches"), 2); /* [s1 s2] left */
    assert_fsa_ok(fsa_store_sweep_ops(f->store, 2000, 2, &deleted));
    assert_int_equal(deleted, 2);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM op_batches"), 1);
    assert_fsa_ok(fsa_store_sweep_ops(f->store, 2000, 2, &deleted));
    assert_int_equal(deleted, 0);
    int64_t ents = 0, nops = 0, last = 0;
    assert_fsa_ok(fsa_store_counts(f->store, &ents, &nops, &last));
    assert_int_equal(nops, 2);
    /* s1 is forgotten: applied again; s4 is remembered: a duplicate. */
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops + 1, 1, 4000, res, NULL, 0));
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    assert_int_equal(res[0].version, 7);
    fsa_codec_result_clear(&res[0]);
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops + 4, 1, 4000, res, NULL, 0));
    assert_int_equal(res[0].status, FSA_RESULT_DUPLICATE);
    ops_clear(ops, res, 5);
    assert_int_equal(fsa_store_sweep_ops(f->store, 1, 0, &deleted), FSA_EINVAL);
}

/* Two stores on one file, as two server processes are: nothing is cached between transactions,
 * so change numbers stay unique and ordered, nonces and op ids are shared. */
static void test_fsa_store_two_handles__share_everything(void **state)
{
    fixture_t *f = *state;
    fsa_store_t *other = NULL;
    char err[256];
    assert_fsa_ok(fsa_store_open(fsa_port_posix(), f->path, 1, &other, err, sizeof err));
    fsa_codec_op_t op;
    fsa_codec_result_t r;
    for (int i = 0; i < 6; i++) {
        char op_id[16], id[16];
        snprintf(op_id, sizeof op_id, "t%d", i);
        snprintf(id, sizeof id, "T%d", i);
        op_make(&op, op_id, FSA_OP_CREATE, FSA_TYPE_TICKET, id, NULL, NULL);
        assert_fsa_ok(
            fsa_store_apply(i % 2 ? other : f->store, "d1", false, &op, 1, 1000, &r, NULL, 0));
        assert_int_equal(r.status, FSA_RESULT_APPLIED);
        ops_clear(&op, &r, 1);
    }
    /* The same op at the other handle: a duplicate with the original's version. */
    op_make(&op, "t4", FSA_OP_CREATE, FSA_TYPE_TICKET, "T4", NULL, NULL);
    assert_fsa_ok(fsa_store_apply(other, "d1", false, &op, 1, 1000, &r, NULL, 0));
    assert_int_equal(r.status, FSA_RESULT_DUPLICATE);
    assert_int_equal(r.version, 1);
    ops_clear(&op, &r, 1);
    fsa_codec_pull_t p;
    int64_t next = 0;
    assert_fsa_ok(fsa_store_pull(other, "d2", 0, 100, &p, &next));
    assert_int_equal(p.count, 6);
    assert_int_equal(next, 6);
    for (size_t i = 0; i < p.count; i++) {
        char id[16];
        snprintf(id, sizeof id, "T%d", (int)i);
        assert_string_equal(p.changes[i].id, id);
    }
    fsa_codec_pull_free(&p);
    bool replay = false;
    assert_fsa_ok(
        fsa_store_nonce(f->store, "d1", "ffffffffffffffffffffffffffffffff", 9000, 1000, &replay));
    assert_false(replay);
    assert_fsa_ok(
        fsa_store_nonce(other, "d1", "ffffffffffffffffffffffffffffffff", 9000, 1000, &replay));
    assert_true(replay);
    fsa_store_close(other);
}

/* A schema-1 database (the first server's) is migrated in place, its rows kept (and its op
 * outcomes still swept when they expire). */
static void test_fsa_store_open__migrates_schema_1(void **state)
{
    fixture_t *f = *state;
    char path[160];
    snprintf(path, sizeof path, "%s/v1.db", f->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "CREATE TABLE entities(type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER "
                     "NOT NULL, mdtz INTEGER NOT NULL, fields TEXT NOT NULL, chg INTEGER NOT NULL,"
                     " owner TEXT, PRIMARY KEY(type, id)) WITHOUT ROWID;"
                     "CREATE UNIQUE INDEX entities_chg ON entities(chg);"
                     "CREATE TABLE ops(op_id TEXT PRIMARY KEY, device TEXT NOT NULL, seq INTEGER "
                     "NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, status INTEGER NOT NULL, "
                     "version INTEGER NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL, "
                     "received INTEGER NOT NULL) WITHOUT ROWID;"
                     "INSERT INTO entities VALUES('ticket','T9',3,1,"
                     "'{\"level\":2,\"assignedto\":\"p7\"}',7,NULL);"
                     "INSERT INTO ops VALUES('o9','d1',1,'ticket','T9',0,3,'','',1);"
                     "PRAGMA application_id=1179861331; PRAGMA user_version=1;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    fsa_store_t *s = NULL;
    char err[256];
    assert_fsa_ok(fsa_store_open(fsa_port_posix(), path, 1, &s, err, sizeof err));
    assert_int_equal(version_of(s, FSA_TYPE_TICKET, "T9"), 3);
    bool replay = true;
    assert_fsa_ok(fsa_store_nonce(s, "d1", "0123456789abcdef0123456789abcdef", 10, 1, &replay));
    assert_false(replay);
    /* Schema 5: the op log's old rows are found by the retention sweep without ops_received. */
    assert_int_equal(count_rows(path, "SELECT count(*) FROM sqlite_master WHERE name = "
                                      "'ops_received'"),
                     0);
    assert_int_equal(count_rows(path, "SELECT count(*) FROM op_batches"), 1);
    int64_t deleted = -1;
    assert_fsa_ok(fsa_store_sweep_ops(s, 1, 10, &deleted));
    assert_int_equal(deleted, 0); /* received at 1: not before 1 */
    assert_fsa_ok(fsa_store_sweep_ops(s, 2, 10, &deleted));
    assert_int_equal(deleted, 1);
    assert_int_equal(count_rows(path, "SELECT count(*) FROM ops"), 0);
    assert_int_equal(count_rows(path, "SELECT count(*) FROM op_batches"), 0);
    fsa_store_close(s);
    assert_int_equal(count_rows(path, "PRAGMA user_version"), 5);
    /* Schema 3 filled the scope keys of the rows it found; schema 4 made their indexes partial
     * (an entity without the key has no entry). */
    assert_int_equal(count_rows(path, "SELECT count(*) FROM entities WHERE person = 'p7'"), 1);
    assert_int_equal(count_rows(path, "SELECT count(*) FROM sqlite_master WHERE type = 'index'"
                                      " AND name LIKE 'entities\\_%' ESCAPE '\\'"
                                      " AND sql LIKE '%WHERE%IS NOT NULL'"),
                     4);
    /* A newer schema than this server knows is refused. */
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(fsa_store_open(fsa_port_posix(), path, 1, &s, err, sizeof err), FSA_ESCHEMA);
    assert_non_null(strstr(err, "schema version 99"));
    const char *suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char p[200];
        snprintf(p, sizeof p, "%s%s", path, suffix[i]);
        unlink(p);
    }
}

#ifdef FSA_TEST_HAVE_PG
/* One batch applied on a thread of its own (as a server's worker). */
typedef struct applier {
    fsa_store_t *store;
    fsa_codec_op_t ops[2];
    fsa_codec_result_t res[2];
    size_t n;
    fsa_status_t st;
    _Atomic bool done;
} applier_t;

static void *apply_thread(void *arg)
{
    applier_t *a = arg;
    a->st = fsa_store_apply(a->store, "d1", false, a->ops, a->n, 1000, a->res, NULL, 0);
    atomic_store(&a->done, true);
    return NULL;
}

/* One row of one column from conn, as a number (-1 when the query fails). */
static long pg_number(PGconn *conn, const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    long n = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                 ? strtol(PQgetvalue(r, 0, 0), NULL, 10)
                 : -1;
    if (n < 0)
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(conn));
    PQclear(r);
    return n;
}

/* The backends of this database that wait for a lock, seen from conn. */
static long lock_waiters(PGconn *conn)
{
    return pg_number(conn, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND wait_event_type = 'Lock'");
}

/* Waits (bounded: 20 s) until `waiters` backends wait for a lock, or *done. */
static void wait_for(PGconn *conn, int waiters, _Atomic bool *done)
{
    for (int i = 0; i < 200000; i++) {
        if ((done != NULL && atomic_load(done)) || lock_waiters(conn) >= waiters)
            return;
        sched_yield();
        nanosleep(&(struct timespec){.tv_nsec = 100000}, NULL);
    }
    fail_msg("no %d lock waiters within 20 s", waiters);
}

/* Which changes of a pull as a device of person P2 (scoped) name id, from *cursor (moved on). */
static bool p2_pull_sees(fsa_store_t *s, int64_t *cursor, const char *id)
{
    char people[1][FSA_ID_BYTES] = {"P2"};
    fsa_store_scope_t sc;
    memset(&sc, 0, sizeof sc);
    sc.people = (const char(*)[FSA_ID_BYTES])people;
    sc.npeople = 1;
    assert_fsa_ok(fsa_store_scope_prepare(&sc));
    bool seen = false;
    for (bool more = true; more;) {
        fsa_codec_pull_t p;
        assert_fsa_ok(fsa_store_pull_scoped(s, "d-P2", &sc, *cursor, 100, &p, cursor));
        for (size_t i = 0; i < p.count; i++)
            seen = seen || (strcmp(p.changes[i].id, id) == 0 && !p.changes[i].gone);
        more = p.more;
        fsa_codec_pull_free(&p);
    }
    fsa_store_scope_release(&sc);
    return seen;
}

/*
 * PostgreSQL, several writers: a checkpoint created under a tour while the tour is reassigned
 * reaches the new person's device. The reassign's batch is held (a lock this test's connection
 * keeps on another entity of it) after it has read the tour's checkpoints and before its commit;
 * the checkpoint's create runs then, and the new person's device pulls a ticket of its own,
 * before the reassign commits. The device must get the checkpoint afterwards: the create waited
 * for the reassign (it reads the tour locked). Before, it committed at once with a change number
 * below the ticket's, under the old person's scope, and the device's cursor passed it for good.
 */
static void
test_fsa_store_apply__checkpoint_created_during_a_reassign_reaches_its_device(void **state)
{
    fixture_t *f = *state;
    fsa_codec_op_t ops[2];
    fsa_codec_result_t res[2];
    op_make(&ops[0], "r0", FSA_OP_CREATE, FSA_TYPE_JOBNEED, "TOUR", NULL, "{\"people_id\":\"P1\"}");
    op_make(&ops[1], "r1", FSA_OP_CREATE, FSA_TYPE_TICKET, "E", NULL, "{}");
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 2, 1000, res, NULL, 0));
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    ops_clear(ops, res, 2);
    fsa_store_t *reader = NULL; /* the pulls' own connection: the appliers hold the store's two */
    char err[256];
    assert_fsa_ok(fsa_store_open(fsa_port_posix(), f->path, 1, &reader, err, sizeof err));
    int64_t cursor = 0;
    assert_false(p2_pull_sees(reader, &cursor, "TOUR"));

    PGconn *conn = PQconnectdb(f->path);
    assert_int_equal(PQstatus(conn), CONNECTION_OK);
    PGresult *r = PQexec(conn, "BEGIN");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    r = PQexec(conn, "SELECT 1 FROM entities WHERE type = 'ticket' AND id = 'E' FOR UPDATE");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);

    applier_t a = {.store = f->store, .n = 2};
    op_make(&a.ops[0], "r2", FSA_OP_SET, FSA_TYPE_JOBNEED, "TOUR", NULL, "{\"people_id\":\"P2\"}");
    a.ops[0].op.base_version = 1;
    incr_make(&a.ops[1], "r3", "E", NULL, 1);
    applier_t b = {.store = f->store, .n = 1};
    op_make(&b.ops[0], "r4", FSA_OP_CREATE, FSA_TYPE_JOBNEED, "CP", NULL,
            "{\"parent_id\":\"TOUR\"}");
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, apply_thread, &a), 0);
    wait_for(conn, 1, NULL); /* the reassign waits for E, the tour's checkpoints read */
    assert_int_equal(pthread_create(&tb, NULL, apply_thread, &b), 0);
    wait_for(conn, 2, &b.done); /* the create: done, or waiting for the tour */
    /* Meanwhile P2 gets a ticket, and P2's device pulls it: its cursor moves past what
     * committed before the ticket. */
    op_make(&ops[0], "r5", FSA_OP_CREATE, FSA_TYPE_TICKET, "TK", NULL, "{\"assignedto\":\"P2\"}");
    assert_fsa_ok(fsa_store_apply(reader, "d1", false, ops, 1, 1000, res, NULL, 0));
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    ops_clear(ops, res, 1);
    assert_true(p2_pull_sees(reader, &cursor, "TK"));
    r = PQexec(conn, "COMMIT");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(conn);
    assert_int_equal(pthread_join(ta, NULL), 0);
    assert_int_equal(pthread_join(tb, NULL), 0);
    assert_fsa_ok(a.st);
    assert_fsa_ok(b.st);
    assert_int_equal(a.res[0].status, FSA_RESULT_APPLIED);
    assert_int_equal(b.res[0].status, FSA_RESULT_APPLIED);
    ops_clear(a.ops, a.res, 2);
    ops_clear(b.ops, b.res, 1);
    int64_t again = 0;
    assert_true(p2_pull_sees(reader, &again, "CP"));  /* in P2's scope now */
    assert_true(p2_pull_sees(reader, &cursor, "CP")); /* and the device gets it */
    fsa_store_close(reader);
}

/*
 * PostgreSQL: a push is a READ COMMITTED transaction whatever the database's default, as
 * docs/server.md says. The database here defaults to SERIALIZABLE, whose transactions leave
 * predicate locks (SIReadLock) on what they read: a push held on a lock (this test's connection
 * keeps one on an entity of its batch) after its first reads must hold none. Before, the push
 * took the default: its reads used the snapshot of its first statement, and it failed at the
 * change counter once another push had committed (tried again, then 503 under load).
 */
static void test_fsa_store_apply__read_committed_whatever_the_default(void **state)
{
    fixture_t *f = *state;
    fsa_codec_op_t ops[1];
    fsa_codec_result_t res[1];
    op_make(&ops[0], "s0", FSA_OP_CREATE, FSA_TYPE_TICKET, "E", NULL, "{}");
    assert_fsa_ok(fsa_store_apply(f->store, "d1", false, ops, 1, 1000, res, NULL, 0));
    ops_clear(ops, res, 1);
    PGconn *conn = PQconnectdb(f->path);
    assert_int_equal(PQstatus(conn), CONNECTION_OK);
    PGresult *r = PQexec(conn, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET "
                               "default_transaction_isolation = serializable', "
                               "current_database()); END $$");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    fsa_store_t *ser = NULL; /* its sessions start after the ALTER: SERIALIZABLE by default */
    char err[256];
    assert_fsa_ok(fsa_store_open(fsa_port_posix(), f->path, 1, &ser, err, sizeof err));
    PGconn *check = PQconnectdb(f->path); /* the default holds for a new session */
    assert_int_equal(PQstatus(check), CONNECTION_OK);
    r = PQexec(check, "SHOW default_transaction_isolation");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "serializable");
    PQclear(r);
    PQfinish(check);

    r = PQexec(conn, "BEGIN");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    r = PQexec(conn, "SELECT 1 FROM entities WHERE type = 'ticket' AND id = 'E' FOR UPDATE");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    applier_t a = {.store = ser, .n = 2};
    op_make(&a.ops[0], "s1", FSA_OP_CREATE, FSA_TYPE_TICKET, "F", NULL, "{}");
    incr_make(&a.ops[1], "s2", "E", NULL, 1);
    pthread_t ta;
    assert_int_equal(pthread_create(&ta, NULL, apply_thread, &a), 0);
    wait_for(conn, 1, NULL); /* the push waits for E: its claims and F read and written */
    long predicate_locks = pg_number(conn, "SELECT count(*) FROM pg_locks WHERE mode = "
                                           "'SIReadLock'");
    r = PQexec(conn, "COMMIT");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(conn);
    assert_int_equal(pthread_join(ta, NULL), 0);
    assert_fsa_ok(a.st);
    assert_int_equal(a.res[0].status, FSA_RESULT_APPLIED);
    assert_int_equal(a.res[1].status, FSA_RESULT_APPLIED);
    ops_clear(a.ops, a.res, 2);
    fsa_store_close(ser);
    if (predicate_locks != 0)
        fail_msg("the push held %ld predicate locks: it ran SERIALIZABLE, the database's default",
                 predicate_locks);
}
#endif

/* Sets ticket id's assignee (its scope key) at base version base. */
static void assign(fsa_store_t *s, const char *op_id, const char *id, int64_t base,
                   const char *person)
{
    char json[64];
    snprintf(json, sizeof json, "{\"assignedto\":\"%s\"}", person);
    fsa_codec_op_t op;
    fsa_codec_result_t res;
    op_make(&op, op_id, base == 0 ? FSA_OP_CREATE : FSA_OP_SET, FSA_TYPE_TICKET, id, NULL, json);
    op.op.base_version = base;
    assert_fsa_ok(fsa_store_apply(s, "d1", false, &op, 1, 1000, &res, NULL, 0));
    if (res.status != FSA_RESULT_APPLIED)
        fail_msg("%s: %s %s", op_id, res.code, res.message);
    ops_clear(&op, &res, 1);
}

/* A pull of P1's device, scope prepared by the test, on a thread of its own or not. */
typedef struct retry {
    fsa_store_t *store;
    const fsa_store_scope_t *scope;
    int64_t since;
    fsa_status_t st;
    fsa_codec_pull_t page;
    int64_t next;
    _Atomic bool done;
} retry_t;

static void *retry_pull(void *arg)
{
    retry_t *r = arg;
    r->st = fsa_store_pull_scoped(r->store, "d-P1", r->scope, r->since, 100, &r->page, &r->next);
    atomic_store(&r->done, true);
    return NULL;
}

typedef struct gap {
    fsa_store_t *store;
    retry_t retry;
    bool ran;
#ifdef FSA_TEST_HAVE_PG
    PGconn *conn;
    pthread_t thread;
#endif
} gap_t;

/* In the first pull's gap (read, not yet recorded): T1 comes back into P1's scope, and the
 * device's retry of that pull runs. On PostgreSQL the retry runs on a thread, and the first pull
 * goes on once the retry has finished or waits for a lock. */
static void in_the_gap(void *arg)
{
    gap_t *g = arg;
    g->ran = true;
    assign(g->store, "a3", "T1", 2, "P1");
#ifdef FSA_TEST_HAVE_PG
    if (th_backend_is_pg()) {
        assert_int_equal(pthread_create(&g->thread, NULL, retry_pull, &g->retry), 0);
        wait_for(g->conn, 1, &g->retry.done);
        return;
    }
#endif
    (void)retry_pull(&g->retry);
}

/*
 * A device's pull timed out while the server still ran it, and the device pulled again from the
 * same cursor (its retry policy does). Between the first pull's read and its record of what it
 * sent, ticket T1 came back into the device's scope and the retry sent it; the device took the
 * retry's answer. When T1 leaves the scope again the device must be told. Before, the first
 * pull's record (T1 sent as gone, at a number below the retry's cursor) came last and hid every
 * later leave: the device kept T1 for good.
 */
static void test_fsa_store_pull__a_retry_during_its_first_try(void **state)
{
    fixture_t *f = *state;
    assign(f->store, "a1", "T1", 0, "P1");
    char people[1][FSA_ID_BYTES] = {"P1"};
    fsa_store_scope_t sc;
    memset(&sc, 0, sizeof sc);
    sc.people = (const char(*)[FSA_ID_BYTES])people;
    sc.npeople = 1;
    assert_fsa_ok(fsa_store_scope_prepare(&sc));
    fsa_codec_pull_t p;
    int64_t cursor = 0;
    assert_fsa_ok(fsa_store_pull_scoped(f->store, "d-P1", &sc, 0, 100, &p, &cursor));
    assert_int_equal(p.count, 1);
    assert_false(p.changes[0].gone);
    fsa_codec_pull_free(&p);
    assign(f->store, "a2", "T1", 1, "P2"); /* T1 leaves the scope */

    gap_t g = {.store = f->store, .retry = {.store = f->store, .scope = &sc, .since = cursor}};
#ifdef FSA_TEST_HAVE_PG
    if (th_backend_is_pg()) {
        g.conn = PQconnectdb(f->path);
        assert_int_equal(PQstatus(g.conn), CONNECTION_OK);
    }
#endif
    fsa__store_pull_gap_hook(in_the_gap, &g);
    int64_t first_next = 0;
    assert_fsa_ok(fsa_store_pull_scoped(f->store, "d-P1", &sc, cursor, 100, &p, &first_next));
    assert_true(g.ran);
#ifdef FSA_TEST_HAVE_PG
    if (th_backend_is_pg()) {
        assert_int_equal(pthread_join(g.thread, NULL), 0);
        PQfinish(g.conn);
    }
#endif
    /* The first pull read T1 gone; its answer never reached the device. */
    assert_int_equal(p.count, 1);
    assert_true(p.changes[0].gone);
    fsa_codec_pull_free(&p);
    /* The retry sent T1 back with its fields, and the device took that. */
    assert_fsa_ok(g.retry.st);
    assert_int_equal(g.retry.page.count, 1);
    assert_string_equal(g.retry.page.changes[0].id, "T1");
    assert_false(g.retry.page.changes[0].gone);
    fsa_codec_pull_free(&g.retry.page);
    cursor = g.retry.next;

    assign(f->store, "a4", "T1", 3, "P2"); /* T1 leaves again */
    assert_fsa_ok(fsa_store_pull_scoped(f->store, "d-P1", &sc, cursor, 100, &p, &cursor));
    if (p.count != 1 || !p.changes[0].gone)
        fail_msg("T1 left the scope again, and the pull sent %zu changes instead of its gone",
                 p.count);
    assert_string_equal(p.changes[0].id, "T1");
    fsa_codec_pull_free(&p);
    fsa_store_scope_release(&sc);
}

int main(void)
{
    /* The tests that hold for every backend (no SQLite file read, no SQLite-only behaviour). */
    const struct CMUnitTest any_backend[] = {
        cmocka_unit_test_setup_teardown(
            test_fsa_store_apply__parent_person_changes_touch_each_child_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_apply__versions_and_duplicates, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_apply__group_rolls_back_with_repeated_op_id,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_fsa_store_apply__failed_group_answers_logged_ops_as_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_fsa_store_apply__failed_group_duplicate_current_is_after_the_rollback, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_pull__page_ends_exactly_at_its_budget, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_pull__a_retry_during_its_first_try, setup,
                                        teardown),
    };
#ifdef FSA_TEST_HAVE_PG
    const struct CMUnitTest pg_only[] = {
        cmocka_unit_test_setup_teardown(
            test_fsa_store_apply__checkpoint_created_during_a_reassign_reaches_its_device, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_apply__read_committed_whatever_the_default,
                                        setup, teardown),
    };
    if (th_backend_is_pg())
        return cmocka_run_group_tests_name("postgresql", any_backend, NULL, NULL) |
               cmocka_run_group_tests_name("postgresql only", pg_only, NULL, NULL);
#else
    if (th_backend_is_pg())
        return cmocka_run_group_tests_name("postgresql", any_backend, NULL, NULL);
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_fsa_store_apply__parent_person_changes_touch_each_child_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_apply__versions_and_duplicates, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_apply__group_rolls_back_with_repeated_op_id,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_apply__op_log_in_statements_of_100, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_apply__duplicates_found_by_the_log_insert,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_fsa_store_apply__failed_group_answers_logged_ops_as_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_fsa_store_apply__failed_group_duplicate_current_is_after_the_rollback, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_apply__warm_parse_follows_the_database,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_apply__one_entity_many_ops_in_a_batch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_pull__order_paging_visibility, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_pull__page_ends_exactly_at_its_budget, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_open__refuses_a_foreign_database, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_nonce__replay_expiry_and_cleanup, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_apply__held_trees_over_the_budget, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_fsa_store_apply__a_failed_read_of_the_last_change_fails_the_batch, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_sweep_ops__chunks_and_forgets, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_two_handles__share_everything, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_open__migrates_schema_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_pull__a_retry_during_its_first_try, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
