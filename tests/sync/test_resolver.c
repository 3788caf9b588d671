/* Tests for sync/resolver.c: DESIGN.md's conflict table, overrides and groups. */
#include <stdio.h>
#include <string.h>

#include "sync/resolver.h"
#include "tests/test_util.h"

static const char JOB_V4[] = "{\"jobstatus\":\"INPROGRESS\",\"parent_id\":null,\"seqno\":2,"
                             "\"expirytime\":30,\"other_info\":{},\"people_id\":\"p1\"}";

static fsa_op_t make_op(fsa_op_kind_t kind, fsa_type_t type, const char *json)
{
    fsa_op_t op;
    memset(&op, 0, sizeof op);
    op.kind = kind;
    op.type = type;
    snprintf(op.id, sizeof op.id, "J1");
    op.json = (char *)(uintptr_t)json;
    return op;
}

static fsa_resolution_t resolve(const fsa_resolver_policy_t *p, const fsa_op_t *op,
                                fsa_result_status_t outcome, const char *prior, const char *server)
{
    fsa_resolver_input_t in = {op, outcome, prior, 4, server};
    char why[256] = "";
    fsa_resolution_t r = fsa_resolve(p, &in, why, sizeof why);
    assert_string_not_equal(why, ""); /* every verdict is explained */
    return r;
}

static void test_fsa_resolve__set_rebases_when_server_changed_other_fields(void **state)
{
    (void)state;
    /* we set seqno from 2; the server changed expirytime and status, not seqno */
    fsa_op_t op = make_op(FSA_OP_SET, FSA_TYPE_JOBNEED, "{\"seqno\":5}");
    assert_int_equal(resolve(NULL, &op, FSA_RESULT_CONFLICT, "{\"seqno\":2}", JOB_V4),
                     FSA_RESOLVE_REBASE);
}

static void test_fsa_resolve__set_server_wins_when_same_field_changed(void **state)
{
    (void)state;
    fsa_op_t op = make_op(FSA_OP_SET, FSA_TYPE_JOBNEED, "{\"seqno\":5,\"expirytime\":10}");
    assert_int_equal(
        resolve(NULL, &op, FSA_RESULT_CONFLICT, "{\"seqno\":2,\"expirytime\":0}", JOB_V4),
        FSA_RESOLVE_SERVER_WINS);
    /* no prior known: cannot tell, so the server wins (visibly) */
    assert_int_equal(resolve(NULL, &op, FSA_RESULT_CONFLICT, NULL, JOB_V4),
                     FSA_RESOLVE_SERVER_WINS);
}

static void test_fsa_resolve__set_policy_overrides(void **state)
{
    (void)state;
    fsa_op_t op = make_op(FSA_OP_SET, FSA_TYPE_JOBNEED, "{\"expirytime\":10}");
    fsa_policy_rule_t local[] = {{FSA_TYPE_JOBNEED, "expirytime", FSA_POLICY_LOCAL_WINS}};
    fsa_resolver_policy_t pl = {local, 1};
    assert_int_equal(resolve(&pl, &op, FSA_RESULT_CONFLICT, "{\"expirytime\":0}", JOB_V4),
                     FSA_RESOLVE_REBASE);
    fsa_policy_rule_t park[] = {{FSA_TYPE_JOBNEED, NULL, FSA_POLICY_PARK}};
    fsa_resolver_policy_t pp = {park, 1};
    assert_int_equal(resolve(&pp, &op, FSA_RESULT_CONFLICT, "{\"expirytime\":30}", JOB_V4),
                     FSA_RESOLVE_PARK);
    fsa_policy_rule_t server[] = {{FSA_TYPE_TICKET, NULL, FSA_POLICY_PARK},
                                  {FSA_TYPE_JOBNEED, "expirytime", FSA_POLICY_SERVER_WINS}};
    fsa_resolver_policy_t ps = {server, 2};
    assert_int_equal(resolve(&ps, &op, FSA_RESULT_CONFLICT, "{\"expirytime\":30}", JOB_V4),
                     FSA_RESOLVE_SERVER_WINS);
}

/* A local-wins rule covers its own fields only: a set that also carries a field without a rule,
 * which the server changed since the prior, is parked for a person. It was rebased, the rule's
 * strength carried to the set, and resent whole: someone else's change to that field was
 * overwritten without a trace. When the server did not change the other field, the set rebases. */
static void test_fsa_resolve__local_wins_covers_its_own_fields(void **state)
{
    (void)state;
    fsa_op_t op = make_op(FSA_OP_SET, FSA_TYPE_JOBNEED, "{\"seqno\":5,\"expirytime\":10}");
    fsa_policy_rule_t local[] = {{FSA_TYPE_JOBNEED, "seqno", FSA_POLICY_LOCAL_WINS}};
    fsa_resolver_policy_t pl = {local, 1};
    /* the server's expirytime is 30, the prior 0: someone else changed it */
    assert_int_equal(
        resolve(&pl, &op, FSA_RESULT_CONFLICT, "{\"seqno\":2,\"expirytime\":0}", JOB_V4),
        FSA_RESOLVE_PARK);
    /* the prior 30: only seqno changed on the server, which the rule gives to us */
    assert_int_equal(
        resolve(&pl, &op, FSA_RESULT_CONFLICT, "{\"seqno\":7,\"expirytime\":30}", JOB_V4),
        FSA_RESOLVE_REBASE);
    /* no prior known: cannot tell about expirytime */
    assert_int_equal(resolve(&pl, &op, FSA_RESULT_CONFLICT, NULL, JOB_V4), FSA_RESOLVE_PARK);
    /* a rule for the whole type covers every field */
    fsa_policy_rule_t all[] = {{FSA_TYPE_JOBNEED, NULL, FSA_POLICY_LOCAL_WINS}};
    fsa_resolver_policy_t pa = {all, 1};
    assert_int_equal(
        resolve(&pa, &op, FSA_RESULT_CONFLICT, "{\"seqno\":2,\"expirytime\":0}", JOB_V4),
        FSA_RESOLVE_REBASE);
}

static void test_fsa_resolve__transition_table(void **state)
{
    (void)state;
    fsa_op_t op = make_op(FSA_OP_TRANSITION, FSA_TYPE_JOBNEED, NULL);
    snprintf(op.field, sizeof op.field, "jobstatus");
    snprintf(op.from, sizeof op.from, "ASSIGNED");
    snprintf(op.to, sizeof op.to, "INPROGRESS");
    /* converged: the server is already there */
    assert_int_equal(resolve(NULL, &op, FSA_RESULT_CONFLICT, NULL, JOB_V4), FSA_RESOLVE_CONVERGED);
    /* terminal on the server: server wins */
    snprintf(op.from, sizeof op.from, "INPROGRESS");
    snprintf(op.to, sizeof op.to, "COMPLETED");
    assert_int_equal(
        resolve(NULL, &op, FSA_RESULT_CONFLICT, NULL, "{\"jobstatus\":\"AUTOCLOSED\"}"),
        FSA_RESOLVE_SERVER_WINS);
    /* elsewhere: park */
    assert_int_equal(
        resolve(NULL, &op, FSA_RESULT_CONFLICT, NULL, "{\"jobstatus\":\"PARTIALLYCOMPLETED\"}"),
        FSA_RESOLVE_PARK);
}

static void test_fsa_resolve__create_converges_on_same_content(void **state)
{
    (void)state;
    const char *att = "{\"people_id\":\"p\",\"site_id\":\"s\",\"kind\":\"checkin\",\"at\":5,"
                      "\"lat\":1.5,\"lon\":2.5}";
    const char *server_same = "{\"people_id\":\"p\",\"site_id\":\"s\",\"kind\":\"checkin\","
                              "\"at\":5,\"lat\":1.5,\"lon\":2.5,\"accuracy_m\":0,"
                              "\"other_info\":{}}";
    const char *server_other = "{\"people_id\":\"q\",\"site_id\":\"s\",\"kind\":\"checkin\","
                               "\"at\":5,\"lat\":1.5,\"lon\":2.5,\"accuracy_m\":0,"
                               "\"other_info\":{}}";
    fsa_op_t op = make_op(FSA_OP_CREATE, FSA_TYPE_ATTENDANCE, att);
    assert_int_equal(resolve(NULL, &op, FSA_RESULT_CONFLICT, NULL, server_same),
                     FSA_RESOLVE_CONVERGED);
    assert_int_equal(resolve(NULL, &op, FSA_RESULT_CONFLICT, NULL, server_other), FSA_RESOLVE_PARK);
    /* Any other type is a person's to decide (DESIGN.md): a ticket created with "{}" (every
     * default) or with a field the server's ticket has too compared equal on those few keys, and
     * was dropped as converged over a different ticket. */
    fsa_op_t t = make_op(FSA_OP_CREATE, FSA_TYPE_TICKET, "{}");
    assert_int_equal(resolve(NULL, &t, FSA_RESULT_CONFLICT, NULL,
                             "{\"status\":\"CLOSED\",\"level\":4,\"priority\":\"HIGH\"}"),
                     FSA_RESOLVE_PARK);
    t = make_op(FSA_OP_CREATE, FSA_TYPE_TICKET, "{\"priority\":\"HIGH\"}");
    assert_int_equal(resolve(NULL, &t, FSA_RESULT_CONFLICT, NULL,
                             "{\"status\":\"CLOSED\",\"level\":4,\"priority\":\"HIGH\"}"),
                     FSA_RESOLVE_PARK);
}

static void test_fsa_resolve__commuting_ops_rebase_and_rejections_park(void **state)
{
    (void)state;
    fsa_op_t m = make_op(FSA_OP_MERGE, FSA_TYPE_JOBNEED, "{\"a\":1}");
    assert_int_equal(resolve(NULL, &m, FSA_RESULT_CONFLICT, NULL, JOB_V4), FSA_RESOLVE_REBASE);
    fsa_op_t i = make_op(FSA_OP_INCREMENT, FSA_TYPE_TICKET, NULL);
    assert_int_equal(resolve(NULL, &i, FSA_RESULT_CONFLICT, NULL, "{\"level\":3}"),
                     FSA_RESOLVE_REBASE);
    assert_int_equal(resolve(NULL, &i, FSA_RESULT_REJECTED, NULL, NULL), FSA_RESOLVE_PARK);
    assert_int_equal(resolve(NULL, &m, FSA_RESULT_CONFLICT, NULL, NULL), FSA_RESOLVE_PARK);
    char why[64];
    assert_int_equal(fsa_resolve(NULL, NULL, why, sizeof why), FSA_RESOLVE_PARK);
}

static void test_fsa_resolve_group__worst_member_decides(void **state)
{
    (void)state;
    fsa_op_t set = make_op(FSA_OP_SET, FSA_TYPE_JOBNEED, "{\"seqno\":5}");
    fsa_op_t touch = make_op(FSA_OP_MERGE, FSA_TYPE_JOBNEED, "{\"last_checkpoint\":\"J1\"}");
    fsa_resolver_input_t ok[2] = {{&set, FSA_RESULT_CONFLICT, "{\"seqno\":2}", 4, JOB_V4},
                                  {&touch, FSA_RESULT_CONFLICT, NULL, 9, "{\"other_info\":{}}"}};
    char why[256];
    assert_int_equal(fsa_resolve_group(NULL, ok, 2, why, sizeof why), FSA_RESOLVE_REBASE);
    fsa_resolver_input_t bad[2] = {{&set, FSA_RESULT_CONFLICT, "{\"seqno\":1}", 4, JOB_V4},
                                   {&touch, FSA_RESULT_CONFLICT, NULL, 9, "{\"other_info\":{}}"}};
    assert_int_equal(fsa_resolve_group(NULL, bad, 2, why, sizeof why), FSA_RESOLVE_SERVER_WINS);
    assert_non_null(strstr(why, "group"));
    assert_int_equal(fsa_resolve_group(NULL, NULL, 0, why, sizeof why), FSA_RESOLVE_PARK);
    assert_string_equal(fsa_resolution_name(FSA_RESOLVE_SERVER_WINS), "server-wins");
}

/* A group failed by one member (a parent's stale set, which rebases): the other members did not
 * fail themselves, a transition whose server status is still its from, a create of an entity the
 * server does not have (a conflict without its state). They go again with the group; both were
 * parked, and the whole group waited for a person although the table rebases it. */
static void test_fsa_resolve_group__members_that_did_not_fail_go_again(void **state)
{
    (void)state;
    fsa_op_t set = make_op(FSA_OP_SET, FSA_TYPE_JOBNEED, "{\"seqno\":5}");
    fsa_op_t tr = make_op(FSA_OP_TRANSITION, FSA_TYPE_JOBNEED, NULL);
    snprintf(tr.id, sizeof tr.id, "J2");
    snprintf(tr.field, sizeof tr.field, "jobstatus");
    snprintf(tr.from, sizeof tr.from, "ASSIGNED");
    snprintf(tr.to, sizeof tr.to, "INPROGRESS");
    fsa_op_t cr = make_op(FSA_OP_CREATE, FSA_TYPE_JOBNEED, "{\"parent_id\":\"J1\"}");
    snprintf(cr.id, sizeof cr.id, "J3");
    fsa_resolver_input_t in[3] = {
        {&tr, FSA_RESULT_CONFLICT, NULL, 3, "{\"jobstatus\":\"ASSIGNED\",\"seqno\":0}"},
        {&cr, FSA_RESULT_CONFLICT, NULL, 0, NULL},
        {&set, FSA_RESULT_CONFLICT, "{\"seqno\":2}", 4, JOB_V4}};
    char why[256];
    assert_int_equal(fsa_resolve_group(NULL, in, 3, why, sizeof why), FSA_RESOLVE_REBASE);
    /* alone, each says why */
    assert_int_equal(fsa_resolve(NULL, &in[0], why, sizeof why), FSA_RESOLVE_REBASE);
    assert_non_null(strstr(why, "still ASSIGNED"));
    assert_int_equal(fsa_resolve(NULL, &in[1], why, sizeof why), FSA_RESOLVE_REBASE);
    assert_non_null(strstr(why, "not on the server"));
    /* a set without the server's state is still not decided on nothing */
    fsa_resolver_input_t unknown = {&set, FSA_RESULT_CONFLICT, "{\"seqno\":2}", 0, NULL};
    assert_int_equal(fsa_resolve(NULL, &unknown, why, sizeof why), FSA_RESOLVE_PARK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_resolve__set_rebases_when_server_changed_other_fields),
        cmocka_unit_test(test_fsa_resolve__set_server_wins_when_same_field_changed),
        cmocka_unit_test(test_fsa_resolve__set_policy_overrides),
        cmocka_unit_test(test_fsa_resolve__local_wins_covers_its_own_fields),
        cmocka_unit_test(test_fsa_resolve__transition_table),
        cmocka_unit_test(test_fsa_resolve__create_converges_on_same_content),
        cmocka_unit_test(test_fsa_resolve__commuting_ops_rebase_and_rejections_park),
        cmocka_unit_test(test_fsa_resolve_group__worst_member_decides),
        cmocka_unit_test(test_fsa_resolve_group__members_that_did_not_fail_go_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
