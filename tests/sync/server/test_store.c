/* fieldsync tests: sync/server/store.c, the server's SQLite store, in process: groups, the op log,
 * change numbers and visibility, refusing a database that is not its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "port/alloc.h"
#include "sync/server/store.h"
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
    op_make(&ops[1], "a2", FSA_OP_INCREMENT, FSA_TYPE_TICKET, "T1", NULL, NULL);
    snprintf(ops[1].op.field, sizeof ops[1].op.field, "level");
    ops[1].op.by = 4;
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
    op_make(&ops[3], "p4", FSA_OP_INCREMENT, FSA_TYPE_TICKET, "TA", NULL, NULL);
    snprintf(ops[3].op.field, sizeof ops[3].op.field, "level");
    ops[3].op.by = 1;
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
    assert_int_equal(last, 4);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fsa_store_apply__versions_and_duplicates, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_apply__group_rolls_back_with_repeated_op_id,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_pull__order_paging_visibility, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_store_open__refuses_a_foreign_database, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
