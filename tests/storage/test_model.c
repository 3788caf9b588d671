/* Tests for storage/model.c: types, fields, status machines, op validation and application. */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "port/alloc.h"
#include "storage/model.h"
#include "tests/test_util.h"

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                    */

/* strcat with the destination's size: fails the test instead of overflowing. */
static void test_cat(char *dst, size_t cap, const char *s)
{
    size_t have = strlen(dst), add = strlen(s);
    if (have + add >= cap) {
        fail_msg("test buffer of %zu bytes too small", cap);
        return; /* fail_msg does not return; gcc -O3 cannot tell */
    }
    memcpy(dst + have, s, add + 1);
}
#define CAT(arr, s) test_cat((arr), sizeof(arr), (s))

static fsa_op_t make_op(fsa_op_kind_t kind, fsa_type_t type, const char *id, const char *json)
{
    fsa_op_t op;
    memset(&op, 0, sizeof op);
    snprintf(op.op_id, sizeof op.op_id, "%s", "5f0c6e0e-1a2b-4c3d-8e4f-001122334455");
    op.seq = 1;
    op.at_ms = INT64_C(1764090000000);
    op.kind = kind;
    op.type = type;
    snprintf(op.id, sizeof op.id, "%s", id);
    if (json != NULL) {
        op.json = fsa_strdup(json);
        assert_non_null(op.json);
    }
    return op;
}

static fsa_op_t op_create(fsa_type_t type, const char *id, const char *fields)
{
    return make_op(FSA_OP_CREATE, type, id, fields);
}

static fsa_op_t op_set(fsa_type_t type, const char *id, int64_t base, const char *fields)
{
    fsa_op_t op = make_op(FSA_OP_SET, type, id, fields);
    op.base_version = base;
    return op;
}

static fsa_op_t op_merge(fsa_type_t type, const char *id, const char *field, const char *patch)
{
    fsa_op_t op = make_op(FSA_OP_MERGE, type, id, patch);
    snprintf(op.field, sizeof op.field, "%s", field);
    return op;
}

static fsa_op_t op_incr(fsa_type_t type, const char *id, const char *field, int64_t by)
{
    fsa_op_t op = make_op(FSA_OP_INCREMENT, type, id, NULL);
    snprintf(op.field, sizeof op.field, "%s", field);
    op.by = by;
    return op;
}

static fsa_op_t op_trans(fsa_type_t type, const char *id, const char *field, const char *from,
                         const char *to)
{
    fsa_op_t op = make_op(FSA_OP_TRANSITION, type, id, NULL);
    snprintf(op.field, sizeof op.field, "%s", field);
    snprintf(op.from, sizeof op.from, "%s", from);
    snprintf(op.to, sizeof op.to, "%s", to);
    return op;
}

static fsa_op_t op_append(fsa_type_t type, const char *id, const char *field, const char *key,
                          const char *item, int64_t max_len)
{
    fsa_op_t op = make_op(FSA_OP_APPEND, type, id, item);
    snprintf(op.field, sizeof op.field, "%s", field);
    snprintf(op.key, sizeof op.key, "%s", key);
    op.max_len = max_len;
    return op;
}

/* Applies op (then clears it) and returns the new fields; fails the test unless it applied. */
static char *apply_ok(fsa_op_t op, const char *fields, int64_t version, unsigned flags)
{
    char *out = NULL;
    fsa_model_err_t err;
    fsa_status_t st = fsa_model_apply(&op, fields, version, flags, &out, &err);
    if (st != FSA_OK)
        fail_msg("apply returned %s (%s: %s)", fsa_status_str(st), err.code, err.message);
    assert_non_null(out);
    assert_string_equal(err.code, "");
    /* The sequence form answers the same, byte for byte (its own printer). */
    fsa_model_entity_t *e = fsa_model_entity_new();
    assert_non_null(e);
    char *seq = NULL;
    assert_int_equal(fsa_model_entity_apply(e, &op, fields, version, flags, &seq, &err), FSA_OK);
    assert_string_equal(seq, out);
    fsa_model_free(seq);
    fsa_model_entity_free(e);
    fsa_op_clear(&op);
    return out;
}

static void expect_applied(fsa_op_t op, const char *fields, int64_t version, unsigned flags,
                           const char *want)
{
    char *out = apply_ok(op, fields, version, flags);
    assert_string_equal(out, want);
    fsa_model_free(out);
}

/*
 * Applies op (then clears it), expecting status st and error code; also with err NULL, which
 * must give the same status without crashing. Returns nothing; the message is checked to be set.
 */
static void expect_refused_msg(fsa_op_t op, const char *fields, int64_t version, unsigned flags,
                               fsa_status_t st, const char *code, char *msg, size_t msg_size)
{
    char sentinel = 0;
    char *out = &sentinel;
    fsa_model_err_t err;
    memset(&err, 'x', sizeof err);
    fsa_status_t got = fsa_model_apply(&op, fields, version, flags, &out, &err);
    if (got != st)
        fail_msg("apply returned %s, expected %s (%s: %s)", fsa_status_str(got), fsa_status_str(st),
                 err.code, err.message);
    assert_null(out);
    assert_string_equal(err.code, code);
    assert_true(strlen(err.message) > 0 && strlen(err.message) < sizeof err.message);
    out = &sentinel;
    assert_int_equal(fsa_model_apply(&op, fields, version, flags, &out, NULL), st);
    assert_null(out);
    fsa_model_err_t serr;
    fsa_model_entity_t *e = fsa_model_entity_new();
    assert_non_null(e);
    out = &sentinel;
    assert_int_equal(fsa_model_entity_apply(e, &op, fields, version, flags, &out, &serr), st);
    assert_null(out);
    assert_string_equal(serr.code, err.code);
    assert_string_equal(serr.message, err.message);
    fsa_model_entity_free(e);
    if (msg != NULL)
        snprintf(msg, msg_size, "%s", err.message);
    fsa_op_clear(&op);
}

static void expect_refused(fsa_op_t op, const char *fields, int64_t version, unsigned flags,
                           fsa_status_t st, const char *code)
{
    expect_refused_msg(op, fields, version, flags, st, code, NULL, 0);
}

/* A malloc'ed text of n copies of c between prefix and suffix. */
static char *repeat(const char *prefix, char c, size_t n, const char *suffix)
{
    size_t lp = strlen(prefix), ls = strlen(suffix);
    char *s = fsa_malloc(lp + n + ls + 1);
    assert_non_null(s);
    memcpy(s, prefix, lp); // NOLINT(bugprone-not-null-terminated-result): the suffix ends it
    memset(s + lp, c, n);
    memcpy(s + lp + n, suffix, ls + 1);
    return s;
}

/* A malloc'ed JSON text of depth nested arrays: [[...]]. */
static char *nested(size_t depth)
{
    char *s = fsa_malloc(2 * depth + 1);
    assert_non_null(s);
    memset(s, '[', depth);
    memset(s + depth, ']', depth);
    s[2 * depth] = '\0';
    return s;
}

static const char JOBNEED_DEFAULTS[] = "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":null,\"seqno\":0,"
                                       "\"expirytime\":0,\"other_info\":{},\"people_id\":\"\"}";
static const char TICKET_DEFAULTS[] = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                                      "\"ticketlog\":{\"ticket_history\":[]},"
                                      "\"priority\":\"MEDIUM\"}";
static const char ATTENDANCE_GIVEN[] = "{\"people_id\":\"P1\",\"site_id\":\"S1\",\"kind\":"
                                       "\"checkin\",\"at\":1764090000000,\"lat\":12.9716,"
                                       "\"lon\":77.5946}";

/* ------------------------------------------------------------------------------------------ */
/* Names and tables                                                                           */

static void test_fsa_type_name__round_trip(void **state)
{
    (void)state;
    const char *names[] = {"attendance", "jobneed", "ticket"};
    for (int t = 0; t < FSA__TYPE_COUNT; t++) {
        fsa_type_t got = FSA__TYPE_COUNT;
        assert_string_equal(fsa_type_name((fsa_type_t)t), names[t]);
        assert_fsa_ok(fsa_type_parse(names[t], &got));
        assert_int_equal(got, t);
    }
    fsa_type_t out = FSA_TYPE_TICKET;
    assert_string_equal(fsa_type_name(FSA__TYPE_COUNT), "?");
    assert_string_equal(fsa_type_name((fsa_type_t)-1), "?");
    assert_int_equal(fsa_type_parse("Ticket", &out), FSA_EINVAL);
    assert_int_equal(fsa_type_parse("", &out), FSA_EINVAL);
    assert_int_equal(out, FSA_TYPE_TICKET); /* untouched on failure */
    assert_int_equal(fsa_type_parse(NULL, &out), FSA_EINVAL);
    assert_int_equal(fsa_type_parse("ticket", NULL), FSA_EINVAL);
}

static void test_fsa_op_kind_name__round_trip(void **state)
{
    (void)state;
    const char *names[] = {"create", "set", "merge", "increment", "transition", "append"};
    for (int k = 0; k < FSA__OP_COUNT; k++) {
        fsa_op_kind_t got = FSA__OP_COUNT;
        assert_string_equal(fsa_op_kind_name((fsa_op_kind_t)k), names[k]);
        assert_fsa_ok(fsa_op_kind_parse(names[k], &got));
        assert_int_equal(got, k);
    }
    fsa_op_kind_t out = FSA_OP_SET;
    assert_string_equal(fsa_op_kind_name(FSA__OP_COUNT), "?");
    assert_string_equal(fsa_op_kind_name((fsa_op_kind_t)-3), "?");
    assert_int_equal(fsa_op_kind_parse("delete", &out), FSA_EINVAL);
    assert_int_equal(out, FSA_OP_SET);
    assert_int_equal(fsa_op_kind_parse(NULL, &out), FSA_EINVAL);
    assert_int_equal(fsa_op_kind_parse("set", NULL), FSA_EINVAL);
}

struct field_row {
    fsa_type_t type;
    const char *name;
    fsa_field_kind_t kind;
    bool required;
    const char *default_json;
};

/* PROTOCOL.md section 1, written out again here so the table in model.c is checked. */
static const struct field_row FIELD_ROWS[] = {
    {FSA_TYPE_ATTENDANCE, "people_id", FSA_FIELD_STR, true, NULL},
    {FSA_TYPE_ATTENDANCE, "site_id", FSA_FIELD_STR, true, NULL},
    {FSA_TYPE_ATTENDANCE, "kind", FSA_FIELD_ENUM, true, NULL},
    {FSA_TYPE_ATTENDANCE, "at", FSA_FIELD_INT, true, NULL},
    {FSA_TYPE_ATTENDANCE, "lat", FSA_FIELD_NUM_NULL, false, "null"},
    {FSA_TYPE_ATTENDANCE, "lon", FSA_FIELD_NUM_NULL, false, "null"},
    {FSA_TYPE_ATTENDANCE, "accuracy_m", FSA_FIELD_NUM_NULL, false, "null"},
    {FSA_TYPE_ATTENDANCE, "other_info", FSA_FIELD_OBJ, false, "{}"},
    {FSA_TYPE_JOBNEED, "jobstatus", FSA_FIELD_STATUS, false, "\"ASSIGNED\""},
    {FSA_TYPE_JOBNEED, "parent_id", FSA_FIELD_STR_NULL, false, "null"},
    {FSA_TYPE_JOBNEED, "seqno", FSA_FIELD_INT, false, "0"},
    {FSA_TYPE_JOBNEED, "expirytime", FSA_FIELD_INT, false, "0"},
    {FSA_TYPE_JOBNEED, "other_info", FSA_FIELD_OBJ, false, "{}"},
    {FSA_TYPE_JOBNEED, "people_id", FSA_FIELD_STR, false, "\"\""},
    {FSA_TYPE_TICKET, "status", FSA_FIELD_STATUS, false, "\"NEW\""},
    {FSA_TYPE_TICKET, "level", FSA_FIELD_INT, false, "0"},
    {FSA_TYPE_TICKET, "assignedto", FSA_FIELD_STR, false, "\"\""},
    {FSA_TYPE_TICKET, "ticketlog", FSA_FIELD_OBJ, false, "{\"ticket_history\":[]}"},
    {FSA_TYPE_TICKET, "priority", FSA_FIELD_STR, false, "\"MEDIUM\""},
};

static void test_fsa_model_fields__protocol_table(void **state)
{
    (void)state;
    size_t row = 0;
    for (int t = 0; t < FSA__TYPE_COUNT; t++) {
        size_t n = 99;
        const fsa_field_def_t *defs = fsa_model_fields((fsa_type_t)t, &n);
        assert_non_null(defs);
        for (size_t i = 0; i < n; i++, row++) {
            const struct field_row *want = &FIELD_ROWS[row];
            assert_int_equal(want->type, t);
            assert_string_equal(defs[i].name, want->name);
            assert_int_equal(defs[i].kind, want->kind);
            assert_int_equal(defs[i].required, want->required);
            if (want->default_json == NULL) {
                assert_string_equal(defs[i].default_json, "");
            } else {
                assert_string_equal(defs[i].default_json, want->default_json);
                assert_fsa_ok(fsa_model_json_check(defs[i].default_json, 64));
            }
            assert_ptr_equal(fsa_model_field((fsa_type_t)t, want->name), &defs[i]);
            /* the texts are arrays sized by the longest: each must keep its NUL (C accepts an
             * initializer that fills the array exactly, without one) */
            assert_non_null(memchr(defs[i].name, '\0', sizeof defs[i].name));
            assert_non_null(memchr(defs[i].default_json, '\0', sizeof defs[i].default_json));
            assert_true(strlen(defs[i].name) < FSA_FIELD_NAME_BYTES);
        }
    }
    assert_int_equal(row, sizeof FIELD_ROWS / sizeof FIELD_ROWS[0]);
}

static void test_fsa_model_fields__unknown_type(void **state)
{
    (void)state;
    size_t n = 99;
    assert_null(fsa_model_fields(FSA__TYPE_COUNT, &n));
    assert_int_equal(n, 0);
    assert_null(fsa_model_fields((fsa_type_t)-1, NULL));
    assert_non_null(fsa_model_fields(FSA_TYPE_TICKET, NULL)); /* count is optional */
}

static void test_fsa_model_field__unknown_names(void **state)
{
    (void)state;
    assert_null(fsa_model_field(FSA_TYPE_JOBNEED, "status")); /* that is ticket's */
    assert_null(fsa_model_field(FSA_TYPE_TICKET, "jobstatus"));
    assert_null(fsa_model_field(FSA_TYPE_TICKET, "Status"));
    assert_null(fsa_model_field(FSA_TYPE_TICKET, ""));
    assert_null(fsa_model_field(FSA_TYPE_TICKET, NULL));
    assert_null(fsa_model_field(FSA__TYPE_COUNT, "status"));
}

static void test_fsa_model_id_valid__table(void **state)
{
    (void)state;
    char max[FSA_LIMIT_ID_BYTES + 2];
    memset(max, 'a', FSA_LIMIT_ID_BYTES);
    max[FSA_LIMIT_ID_BYTES] = '\0';
    assert_true(fsa_model_id_valid(max));
    max[FSA_LIMIT_ID_BYTES] = 'a';
    max[FSA_LIMIT_ID_BYTES + 1] = '\0';
    assert_false(fsa_model_id_valid(max));

    static const struct {
        const char *id;
        bool valid;
    } rows[] = {
        {"J1", true},
        {"5f0c6e0e-1a2b-4c3d-8e4f-001122334455", true},
        {"a.b_c:d-E9", true},
        {"0", true},
        {"", false},
        {"a b", false},
        {"a/b", false},
        {"a\"b", false},
        {"caf\xc3\xa9", false},
        {"tab\t", false},
        {"a+b", false},
        {"a,b", false},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (fsa_model_id_valid(rows[i].id) != rows[i].valid)
            fail_msg("id \"%s\": expected %s", rows[i].id, rows[i].valid ? "valid" : "invalid");
    }
    assert_false(fsa_model_id_valid(NULL));
}

/* ------------------------------------------------------------------------------------------ */
/* Status machines                                                                            */

static const char *const JOBNEED_STATES[] = {"ASSIGNED", "INPROGRESS", "PARTIALLYCOMPLETED",
                                             "COMPLETED", "AUTOCLOSED"};
static const char *const TICKET_STATES[] = {"NEW", "OPEN", "RESOLVED", "CLOSED", "CANCELLED"};

struct edge_row {
    fsa_type_t type;
    const char *from;
    const char *to;
    bool server_only;
};

/* PROTOCOL.md section 1, written out again. */
static const struct edge_row EDGES[] = {
    {FSA_TYPE_JOBNEED, "ASSIGNED", "INPROGRESS", false},
    {FSA_TYPE_JOBNEED, "INPROGRESS", "COMPLETED", false},
    {FSA_TYPE_JOBNEED, "INPROGRESS", "PARTIALLYCOMPLETED", false},
    {FSA_TYPE_JOBNEED, "PARTIALLYCOMPLETED", "COMPLETED", false},
    {FSA_TYPE_JOBNEED, "ASSIGNED", "AUTOCLOSED", true},
    {FSA_TYPE_JOBNEED, "INPROGRESS", "AUTOCLOSED", true},
    {FSA_TYPE_JOBNEED, "PARTIALLYCOMPLETED", "AUTOCLOSED", true},
    {FSA_TYPE_TICKET, "NEW", "OPEN", false},
    {FSA_TYPE_TICKET, "NEW", "RESOLVED", false},
    {FSA_TYPE_TICKET, "OPEN", "RESOLVED", false},
    {FSA_TYPE_TICKET, "RESOLVED", "CLOSED", false},
    {FSA_TYPE_TICKET, "RESOLVED", "OPEN", false},
    {FSA_TYPE_TICKET, "NEW", "CANCELLED", false},
    {FSA_TYPE_TICKET, "OPEN", "CANCELLED", false},
};

/* 0: no edge, 1: any writer, 2: only the server. */
static int edge_in_table(fsa_type_t type, const char *from, const char *to)
{
    for (size_t i = 0; i < sizeof EDGES / sizeof EDGES[0]; i++) {
        if (EDGES[i].type == type && strcmp(EDGES[i].from, from) == 0 &&
            strcmp(EDGES[i].to, to) == 0)
            return EDGES[i].server_only ? 2 : 1;
    }
    return 0;
}

static void states_of(fsa_type_t type, const char *const **states, size_t *n)
{
    if (type == FSA_TYPE_JOBNEED) {
        *states = JOBNEED_STATES;
        *n = sizeof JOBNEED_STATES / sizeof JOBNEED_STATES[0];
    } else {
        *states = TICKET_STATES;
        *n = sizeof TICKET_STATES / sizeof TICKET_STATES[0];
    }
}

/* Every ordered pair of states, by a device and by the server: the predicate, validate_op and
 * apply all agree with the protocol's table. */
static void test_fsa_model_transition_allowed__every_pair(void **state)
{
    (void)state;
    const fsa_type_t machines[] = {FSA_TYPE_JOBNEED, FSA_TYPE_TICKET};
    int applied = 0, refused = 0;
    for (size_t m = 0; m < 2; m++) {
        fsa_type_t type = machines[m];
        const char *field = fsa_model_status_field(type);
        const char *const *states;
        size_t n;
        states_of(type, &states, &n);
        for (size_t i = 0; i < n; i++) {
            for (size_t j = 0; j < n; j++) {
                for (int by_server = 0; by_server <= 1; by_server++) {
                    const char *from = states[i], *to = states[j];
                    int e = edge_in_table(type, from, to);
                    bool want = e == 1 || (e == 2 && by_server);
                    unsigned flags = by_server ? FSA_APPLY_BY_SERVER : 0;
                    if (fsa_model_transition_allowed(type, from, to, by_server) != want)
                        fail_msg("%s %s->%s by_server=%d: expected %d", fsa_type_name(type), from,
                                 to, by_server, want);

                    fsa_op_t op = op_trans(type, "E1", field, from, to);
                    fsa_model_err_t err;
                    assert_int_equal(fsa_model_validate_op(&op, flags, &err),
                                     want ? FSA_OK : FSA_ETRANSITION);

                    char fields[128];
                    snprintf(fields, sizeof fields, "{\"%s\":\"%s\"}", field, from);
                    if (want) {
                        char *out = apply_ok(op, fields, 3, flags);
                        char st[FSA_STATUS_BYTES];
                        assert_fsa_ok(fsa_model_get_status(out, type, st));
                        assert_string_equal(st, to);
                        fsa_model_free(out);
                        applied++;
                    } else {
                        char msg[256], want_msg[256];
                        expect_refused_msg(op, fields, 3, flags, FSA_ETRANSITION,
                                           "invalid_transition", msg, sizeof msg);
                        snprintf(want_msg, sizeof want_msg,
                                 "%s E1: %s\xe2\x86\x92%s is not an allowed transition",
                                 fsa_type_name(type), from, to);
                        assert_memory_equal(msg, want_msg, strlen(want_msg));
                        refused++;
                    }
                }
            }
        }
    }
    /* 25 + 25 pairs, twice; 4 + 7 device edges, 7 + 7 server edges. */
    assert_int_equal(applied, 4 + 7 + 7 + 7);
    assert_int_equal(refused, 100 - applied);
}

static void test_fsa_model_transition_allowed__message_examples(void **state)
{
    (void)state;
    char msg[256];
    expect_refused_msg(op_trans(FSA_TYPE_JOBNEED, "J1", "jobstatus", "ASSIGNED", "COMPLETED"),
                       "{\"jobstatus\":\"ASSIGNED\"}", 1, 0, FSA_ETRANSITION, "invalid_transition",
                       msg, sizeof msg);
    assert_string_equal(msg, "jobneed J1: ASSIGNED\xe2\x86\x92"
                             "COMPLETED is not an allowed "
                             "transition");
    expect_refused_msg(op_trans(FSA_TYPE_JOBNEED, "J1", "jobstatus", "ASSIGNED", "AUTOCLOSED"),
                       "{\"jobstatus\":\"ASSIGNED\"}", 1, 0, FSA_ETRANSITION, "invalid_transition",
                       msg, sizeof msg);
    assert_string_equal(msg, "jobneed J1: ASSIGNED\xe2\x86\x92"
                             "AUTOCLOSED is not an allowed "
                             "transition (only the server makes it)");
}

static void test_fsa_model_transition_allowed__bad_arguments(void **state)
{
    (void)state;
    assert_false(fsa_model_transition_allowed(FSA_TYPE_JOBNEED, NULL, "INPROGRESS", true));
    assert_false(fsa_model_transition_allowed(FSA_TYPE_JOBNEED, "ASSIGNED", NULL, true));
    assert_false(fsa_model_transition_allowed(FSA_TYPE_ATTENDANCE, "NEW", "OPEN", true));
    assert_false(fsa_model_transition_allowed(FSA__TYPE_COUNT, "NEW", "OPEN", true));
    assert_false(fsa_model_transition_allowed(FSA_TYPE_TICKET, "new", "open", true));
    assert_false(fsa_model_transition_allowed(FSA_TYPE_TICKET, "NEW", "NEW", true));
    /* Each machine's states belong to it alone. */
    assert_false(fsa_model_transition_allowed(FSA_TYPE_TICKET, "ASSIGNED", "INPROGRESS", true));
}

static void test_fsa_model_status_terminal__table(void **state)
{
    (void)state;
    static const struct {
        fsa_type_t type;
        const char *s;
        bool terminal;
    } rows[] = {
        {FSA_TYPE_JOBNEED, "ASSIGNED", false},
        {FSA_TYPE_JOBNEED, "INPROGRESS", false},
        {FSA_TYPE_JOBNEED, "PARTIALLYCOMPLETED", false},
        {FSA_TYPE_JOBNEED, "COMPLETED", true},
        {FSA_TYPE_JOBNEED, "AUTOCLOSED", true},
        {FSA_TYPE_TICKET, "NEW", false},
        {FSA_TYPE_TICKET, "OPEN", false},
        {FSA_TYPE_TICKET, "RESOLVED", false},
        {FSA_TYPE_TICKET, "CLOSED", true},
        {FSA_TYPE_TICKET, "CANCELLED", true},
        {FSA_TYPE_TICKET, "COMPLETED", false},
        {FSA_TYPE_JOBNEED, "CLOSED", false},
        {FSA_TYPE_ATTENDANCE, "CLOSED", false},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (fsa_model_status_terminal(rows[i].type, rows[i].s) != rows[i].terminal)
            fail_msg("%s %s", fsa_type_name(rows[i].type), rows[i].s);
    }
    assert_false(fsa_model_status_terminal(FSA_TYPE_TICKET, NULL));

    /* A terminal state has no way out, for anyone. */
    const fsa_type_t machines[] = {FSA_TYPE_JOBNEED, FSA_TYPE_TICKET};
    for (size_t m = 0; m < 2; m++) {
        const char *const *states;
        size_t n;
        states_of(machines[m], &states, &n);
        for (size_t i = 0; i < n; i++) {
            bool out = false;
            for (size_t j = 0; j < n; j++)
                out = out || fsa_model_transition_allowed(machines[m], states[i], states[j], true);
            assert_int_equal(out, !fsa_model_status_terminal(machines[m], states[i]));
        }
    }
}

static void test_fsa_model_status_known__per_type(void **state)
{
    (void)state;
    assert_string_equal(fsa_model_status_field(FSA_TYPE_JOBNEED), "jobstatus");
    assert_string_equal(fsa_model_status_field(FSA_TYPE_TICKET), "status");
    assert_null(fsa_model_status_field(FSA_TYPE_ATTENDANCE));
    assert_null(fsa_model_status_field(FSA__TYPE_COUNT));
    for (size_t i = 0; i < 5; i++) {
        assert_true(fsa_model_status_known(FSA_TYPE_JOBNEED, JOBNEED_STATES[i]));
        assert_true(fsa_model_status_known(FSA_TYPE_TICKET, TICKET_STATES[i]));
        assert_false(fsa_model_status_known(FSA_TYPE_JOBNEED, TICKET_STATES[i]));
        assert_false(fsa_model_status_known(FSA_TYPE_ATTENDANCE, TICKET_STATES[i]));
        assert_true(strlen(JOBNEED_STATES[i]) < FSA_STATUS_BYTES);
    }
    assert_false(fsa_model_status_known(FSA_TYPE_JOBNEED, "assigned"));
    assert_false(fsa_model_status_known(FSA_TYPE_JOBNEED, ""));
    assert_false(fsa_model_status_known(FSA_TYPE_JOBNEED, NULL));
    assert_false(fsa_model_status_known(FSA__TYPE_COUNT, "NEW"));
    /* The defaults are states of their machines. */
    assert_string_equal(fsa_model_field(FSA_TYPE_JOBNEED, "jobstatus")->default_json,
                        "\"ASSIGNED\"");
    assert_string_equal(fsa_model_field(FSA_TYPE_TICKET, "status")->default_json, "\"NEW\"");
}

/* ------------------------------------------------------------------------------------------ */
/* create                                                                                     */

static void test_fsa_model_apply__create_fills_defaults(void **state)
{
    (void)state;
    expect_applied(op_create(FSA_TYPE_JOBNEED, "J1", "{}"), NULL, 0, 0, JOBNEED_DEFAULTS);
    expect_applied(op_create(FSA_TYPE_TICKET, "T1", "{}"), NULL, 0, 0, TICKET_DEFAULTS);
    expect_applied(op_create(FSA_TYPE_ATTENDANCE, "A1", ATTENDANCE_GIVEN), NULL, 0, 0,
                   "{\"people_id\":\"P1\",\"site_id\":\"S1\",\"kind\":\"checkin\","
                   "\"at\":1764090000000,\"lat\":12.9716,\"lon\":77.5946,\"accuracy_m\":null,"
                   "\"other_info\":{}}");
}

/* PROTOCOL.md section 7, amendments 1 and 2: a create without fields is a create of {}; a
 * check-in without a position fix has lat, lon and accuracy_m null, given or left out. */
static void test_fsa_model_apply__create_without_fields_and_without_fix(void **state)
{
    (void)state;
    expect_applied(op_create(FSA_TYPE_JOBNEED, "J1", NULL), NULL, 0, 0, JOBNEED_DEFAULTS);
    expect_applied(op_create(FSA_TYPE_TICKET, "T1", NULL), NULL, 0, 0, TICKET_DEFAULTS);
    static const char no_fix[] = "{\"people_id\":\"P1\",\"site_id\":\"S1\",\"kind\":\"checkin\","
                                 "\"at\":5,\"lat\":null,\"lon\":null,\"accuracy_m\":null,"
                                 "\"other_info\":{}}";
    expect_applied(op_create(FSA_TYPE_ATTENDANCE, "A1", no_fix), NULL, 0, 0, no_fix);
    expect_applied(op_create(FSA_TYPE_ATTENDANCE, "A1",
                             "{\"people_id\":\"P1\",\"site_id\":\"S1\",\"kind\":\"checkin\","
                             "\"at\":5}"),
                   NULL, 0, 0, no_fix);
    expect_applied(op_create(FSA_TYPE_ATTENDANCE, "A1",
                             "{\"people_id\":\"P1\",\"site_id\":\"S1\",\"kind\":\"checkout\","
                             "\"at\":5,\"lat\":-1.5,\"lon\":2,\"accuracy_m\":null}"),
                   NULL, 0, 0,
                   "{\"people_id\":\"P1\",\"site_id\":\"S1\",\"kind\":\"checkout\",\"at\":5,"
                   "\"lat\":-1.5,\"lon\":2,\"accuracy_m\":null,\"other_info\":{}}");
    /* Half a position, or a wrong type, is refused; an attendance still needs its other fields. */
    static const char *const bad[] = {
        "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkin\",\"at\":1,\"lat\":1}",
        "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkin\",\"at\":1,\"lon\":1}",
        "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkin\",\"at\":1,\"lat\":null,"
        "\"lon\":1}",
        "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkin\",\"at\":1,"
        "\"accuracy_m\":\"5\"}",
        "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkin\",\"at\":1,\"lat\":true,"
        "\"lon\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_refused(op_create(FSA_TYPE_ATTENDANCE, "A1", bad[i]), NULL, 0, 0, FSA_EINVAL,
                       "invalid_value");
    expect_refused(op_create(FSA_TYPE_ATTENDANCE, "A1", NULL), NULL, 0, 0, FSA_EINVAL,
                   "invalid_value");
}

/*
 * The sequence form along a chain of ops on one entity, each on the text of the last result (so
 * its held tree is used): every answer equals fsa_model_apply's on the same text, through
 * strings that need escaping (control bytes, DEL, quotes, UTF-8), inexact and large numbers,
 * merges that delete, appends past max_len, and refusals in the middle (after which the entity's
 * text is unchanged and the chain goes on from it).
 */
static void test_fsa_model_entity_apply__chain_matches_apply(void **state)
{
    (void)state;
    fsa_op_t ops[] = {
        op_create(FSA_TYPE_TICKET, "T1",
                  "{\"assignedto\":\"p\\u0001\\t\\\"q\\\\\",\"level\":3,"
                  "\"ticketlog\":{\"n\":0.1,\"big\":1e300,\"z\":-0,\"s\":\"\x7f\xc3\xa9/\"}}"),
        op_incr(FSA_TYPE_TICKET, "T1", "level", 9007199254740000),
        op_incr(FSA_TYPE_TICKET, "T1", "level", 10000), /* refused: past 2^53 */
        op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "h", "{\"by\":\"a\\n\",\"x\":1.5e-7}", 2),
        op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "h", "2", 2),
        op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "h", "[3,\"\\b\"]", 2),
        op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", "{\"n\":null,\"m\":{\"k\":[1,2.25]}}"),
        op_set(FSA_TYPE_TICKET, "T1", 1, "{\"priority\":\"HIGH\"}"), /* conflict: stale base */
        op_set(FSA_TYPE_TICKET, "T1", 7, "{\"priority\":\"HIGH\"}"),
        op_trans(FSA_TYPE_TICKET, "T1", "status", "CLOSED", "NEW"), /* refused */
        op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", "{\"m\":{\"k\":null},\"e\":{}}"),
        op_create(FSA_TYPE_TICKET, "T1", "{}"), /* conflict: exists */
    };
    fsa_model_entity_t *e = fsa_model_entity_new();
    assert_non_null(e);
    char *cur = NULL; /* the entity's fields, NULL before the create */
    int64_t version = 0;
    size_t applied = 0;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        char *want = NULL, *got = NULL;
        fsa_model_err_t werr, gerr;
        fsa_status_t ws = fsa_model_apply(&ops[i], cur, version, 0, &want, &werr);
        fsa_status_t gs = fsa_model_entity_apply(e, &ops[i], cur, version, 0, &got, &gerr);
        assert_int_equal(gs, ws);
        assert_string_equal(gerr.code, werr.code);
        assert_string_equal(gerr.message, werr.message);
        if (ws == FSA_OK) {
            assert_non_null(got);
            assert_string_equal(got, want);
            fsa_model_free(cur);
            cur = got;
            version++;
            applied++;
        } else {
            assert_null(got);
        }
        fsa_model_free(want);
        fsa_op_clear(&ops[i]);
    }
    assert_int_equal(applied, 7);
    assert_non_null(strstr(cur, "\"level\":9007199254740003"));
    assert_non_null(strstr(cur, "\"assignedto\":\"p\\u0001\\t\\\"q\\\\\""));
    assert_non_null(strstr(cur, "\"s\":\"\x7f\xc3\xa9/\""));
    /* The scope keys from the held tree are those of the text. */
    fsa_model_keys_t kt, kw;
    assert_int_equal(fsa_model_entity_scope_keys(e, FSA_TYPE_TICKET, cur, &kt), FSA_OK);
    assert_int_equal(fsa_model_scope_keys(FSA_TYPE_TICKET, cur, &kw), FSA_OK);
    assert_memory_equal(&kt, &kw, sizeof kt);
    assert_string_equal(kt.person, "p\x01\t\"q\\");
    /* Text other than its last result is parsed, not mistaken for the held tree. */
    char *other = NULL, *want = NULL;
    fsa_op_t inc = op_incr(FSA_TYPE_TICKET, "T1", "level", 1);
    const char *fields = "{\"level\":1}";
    assert_int_equal(fsa_model_entity_apply(e, &inc, fields, 1, 0, &other, NULL), FSA_OK);
    assert_int_equal(fsa_model_apply(&inc, fields, 1, 0, &want, NULL), FSA_OK);
    assert_string_equal(other, want);
    fsa_model_free(other);
    fsa_model_free(want);
    fsa_op_clear(&inc);
    fsa_model_free(cur);
    fsa_model_entity_free(e);
    fsa_model_entity_free(NULL);
}

/*
 * The strict sequence form (the journal's): the same answers as fsa_model_apply along a chain,
 * and where an allocation fails, FSA_ENOMEM with no text, never a success that held nothing;
 * without an entity (fsa_model_entity_new failed) it is FSA_ENOMEM too.
 */
static void test_fsa_model_entity_apply_strict__enomem_never_a_slower_success(void **state)
{
    (void)state;
    fsa_op_t inc = op_incr(FSA_TYPE_TICKET, "T1", "level", 2);
    const char *base = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\","
                       "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}";
    char *out = (char *)1;
    assert_int_equal(fsa_model_entity_apply_strict(NULL, &inc, base, 1, 0, &out, NULL), FSA_ENOMEM);
    assert_null(out);
    /* A chain of three, each on the last text: as fsa_model_apply. */
    fsa_model_entity_t *e = fsa_model_entity_new();
    assert_non_null(e);
    char *cur = fsa_strdup(base);
    for (int64_t v = 1; v <= 3; v++) {
        char *want = NULL, *got = NULL;
        assert_int_equal(fsa_model_apply(&inc, cur, v, FSA_APPLY_REPLAY, &want, NULL), FSA_OK);
        assert_int_equal(
            fsa_model_entity_apply_strict(e, &inc, cur, v, FSA_APPLY_REPLAY, &got, NULL), FSA_OK);
        assert_string_equal(got, want);
        fsa_model_free(want);
        fsa_model_free(cur);
        cur = got;
    }
    assert_non_null(strstr(cur, "\"level\":6"));
    /* Each allocation of one more step (on the held tree) failing in turn. */
    size_t failed = 0;
    for (unsigned long n = 1;; n++) {
        char *got = (char *)1;
        fsa_model_entity_t *f = fsa_model_entity_new();
        assert_non_null(f);
        char *first = NULL;
        assert_int_equal(fsa_model_entity_apply_strict(f, &inc, cur, 4, 0, &first, NULL), FSA_OK);
        fsa_alloc_fail_nth(n);
        fsa_status_t st = fsa_model_entity_apply_strict(f, &inc, first, 5, 0, &got, NULL);
        bool fired = fsa_alloc_fault_fired();
        fsa_alloc_fail_nth(0);
        if (fired) {
            assert_int_equal(st, FSA_ENOMEM);
            assert_null(got);
            failed++;
        } else {
            assert_int_equal(st, FSA_OK);
            assert_non_null(strstr(got, "\"level\":10"));
        }
        fsa_model_free(got == (char *)1 ? NULL : got);
        fsa_model_free(first);
        fsa_model_entity_free(f);
        if (!fired)
            break;
    }
    assert_true(failed > 0);
    fsa_model_free(cur);
    fsa_model_entity_free(e);
    fsa_op_clear(&inc);
}

/*
 * A run (the journal's drain): ops replayed one after the other and printed once give the text
 * that applying them one by one gave, printed at any point along the chain (the run going on from
 * the printed text): fields added by default at the end and a field no type knows, in the middle,
 * come out in the protocol's order as one by one. An op that does not apply answers as
 * fsa_model_entity_apply_strict and leaves nothing held; a print with no run is refused; the limit
 * is checked on the run's text only.
 */
static void test_fsa_model_entity_replay__a_run_prints_what_one_by_one_did(void **state)
{
    (void)state;
    const char *start = "{\"zzz\":{\"a\":1},\"status\":\"NEW\",\"qq\":[1]}";
    enum { N = 9 };
    fsa_op_t ops[N] = {
        op_incr(FSA_TYPE_TICKET, "T1", "level", 5), /* added with its default */
        op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "h", "{\"by\":\"a\\n\",\"x\":1.5e-7}", 2),
        op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "h", "2", 2),
        op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "h", "[3,\"\\b\"]", 2),
        op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", "{\"n\":null,\"m\":{\"k\":[1,2.25]}}"),
        op_set(FSA_TYPE_TICKET, "T1", 1, "{\"priority\":\"HIGH\",\"assignedto\":\"p\\u0001\"}"),
        op_trans(FSA_TYPE_TICKET, "T1", "status", "NEW", "OPEN"),
        op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", "{\"m\":null}"),
        op_incr(FSA_TYPE_TICKET, "T1", "level", -2),
    };
    char *chain[N + 1]; /* chain[k]: the text after k ops, one by one */
    chain[0] = fsa_strdup(start);
    for (int k = 0; k < N; k++)
        assert_int_equal(
            fsa_model_apply(&ops[k], chain[k], k + 1, FSA_APPLY_REPLAY, &chain[k + 1], NULL),
            FSA_OK);
    assert_non_null(strstr(chain[N], "\"level\":3"));
    assert_int_equal(strncmp(chain[N], "{\"status\":\"OPEN\",\"level\":3,", 27), 0);
    /* Printed once at the end, and printed at every point with the run going on from there. */
    for (int cut = 0; cut <= N; cut++) {
        fsa_model_entity_t *e = fsa_model_entity_new();
        assert_non_null(e);
        const char *from = start;
        char *printed = NULL;
        for (int k = 0; k < N; k++) {
            assert_int_equal(
                fsa_model_entity_replay(e, &ops[k], from, k + 1, FSA_APPLY_REPLAY, NULL), FSA_OK);
            if (k + 1 == cut || k + 1 == N) {
                fsa_model_free(printed);
                assert_int_equal(fsa_model_entity_print(e, FSA_TYPE_TICKET, &printed), FSA_OK);
                assert_string_equal(printed, chain[k + 1]);
                from = printed; /* e holds its parse: the next replay goes on from it */
            }
        }
        /* Nothing replayed since the print: nothing to print. */
        char *again = (char *)1;
        assert_int_equal(fsa_model_entity_print(e, FSA_TYPE_TICKET, &again), FSA_EINVAL);
        assert_null(again);
        /* An op that does not apply (NEW -> OPEN again): as the strict form, and nothing held. */
        fsa_model_err_t rerr, serr;
        char *sout = NULL;
        fsa_status_t ss = fsa_model_entity_apply_strict(NULL, &ops[6], printed, N + 1,
                                                        FSA_APPLY_REPLAY, &sout, &serr);
        assert_int_equal(ss, FSA_ENOMEM); /* no entity: the strict form's answer */
        fsa_model_entity_t *g = fsa_model_entity_new();
        assert_non_null(g);
        ss = fsa_model_entity_apply_strict(g, &ops[6], printed, N + 1, FSA_APPLY_REPLAY, &sout,
                                           &serr);
        fsa_status_t rs =
            fsa_model_entity_replay(e, &ops[6], printed, N + 1, FSA_APPLY_REPLAY, &rerr);
        assert_int_not_equal(rs, FSA_OK);
        assert_int_equal(rs, ss);
        assert_string_equal(rerr.code, serr.code);
        assert_string_equal(rerr.message, serr.message);
        assert_int_equal(fsa_model_entity_print(e, FSA_TYPE_TICKET, &again), FSA_EINVAL);
        fsa_model_entity_free(g);
        fsa_model_free(printed);
        fsa_model_entity_free(e);
    }
    /* A run's tree is nobody's text: the other forms parse what they are given. */
    fsa_model_entity_t *h = fsa_model_entity_new();
    assert_non_null(h);
    assert_int_equal(fsa_model_entity_replay(h, &ops[0], start, 1, FSA_APPLY_REPLAY, NULL), FSA_OK);
    fsa_model_keys_t kr, kw;
    assert_int_equal(fsa_model_entity_scope_keys(h, FSA_TYPE_TICKET, chain[5], &kr), FSA_OK);
    assert_int_equal(fsa_model_scope_keys(FSA_TYPE_TICKET, chain[5], &kw), FSA_OK);
    assert_memory_equal(&kr, &kw, sizeof kr);
    char *next = NULL;
    assert_int_equal(
        fsa_model_entity_apply_strict(h, &ops[1], chain[1], 2, FSA_APPLY_REPLAY, &next, NULL),
        FSA_OK);
    assert_string_equal(next, chain[2]);
    fsa_model_free(next);
    fsa_model_entity_free(h);
    /* A fresh entity has no run; NULL arguments are refused. */
    fsa_model_entity_t *e = fsa_model_entity_new();
    char *out = NULL;
    assert_int_equal(fsa_model_entity_print(e, FSA_TYPE_TICKET, &out), FSA_EINVAL);
    assert_int_equal(fsa_model_entity_print(e, FSA_TYPE_TICKET, NULL), FSA_EINVAL);
    assert_int_equal(fsa_model_entity_print(NULL, FSA_TYPE_TICKET, &out), FSA_EINVAL);
    assert_int_equal(fsa_model_entity_replay(NULL, &ops[0], start, 1, 0, NULL), FSA_ENOMEM);
    /* The limits, vouched for from the run's bound: near the size limit (a base ~28 KB under it,
     * 15 KB items) the run cannot tell, though one op applied one by one fits; far from it, a
     * run of the same items prints what one by one prints. */
    enum { KEYS = 17, KEY_BYTES = 60000 };
    const size_t cap = (size_t)KEYS * (KEY_BYTES + 16) + 64;
    char *big = fsa_malloc(cap);
    assert_non_null(big);
    size_t len = (size_t)snprintf(big, cap, "{\"ticketlog\":{\"ticket_history\":[]");
    for (int k = 0; k < KEYS; k++) {
        len += (size_t)snprintf(big + len, cap - len, ",\"k%02d\":\"", k);
        memset(big + len, 'b', KEY_BYTES);
        len += KEY_BYTES;
        big[len++] = '"';
    }
    memcpy(big + len, "}}", sizeof "}}");
    char *extra = repeat("\"", 'z', 15000, "\"");
    fsa_op_t add = op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", extra, 0);
    fsa_op_t drop = op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", "{\"k00\":null}");
    assert_int_equal(fsa_model_apply(&add, big, 1, 0, &out, NULL), FSA_OK); /* one: within */
    fsa_model_free(out);
    fsa_model_err_t lerr;
    assert_int_equal(fsa_model_entity_replay(e, &add, big, 1, 0, &lerr), FSA_ETOOLARGE);
    assert_string_equal(lerr.code, "entity_too_large");
    assert_int_equal(fsa_model_entity_print(e, FSA_TYPE_TICKET, &out), FSA_EINVAL);
    assert_null(out);
    big[len - 11 * (KEY_BYTES + 8)] = '\0'; /* ~360 KB: far under the limit */
    memcpy(big + strlen(big), "\"}}", sizeof "\"}}");
    char *one = NULL, *two = NULL, *three = NULL;
    assert_int_equal(fsa_model_apply(&add, big, 1, 0, &one, NULL), FSA_OK);
    assert_int_equal(fsa_model_apply(&add, one, 2, 0, &two, NULL), FSA_OK);
    assert_int_equal(fsa_model_apply(&drop, two, 3, 0, &three, NULL), FSA_OK);
    assert_int_equal(fsa_model_entity_replay(e, &add, big, 1, 0, NULL), FSA_OK);
    assert_int_equal(fsa_model_entity_replay(e, &add, big, 2, 0, NULL), FSA_OK);
    assert_int_equal(fsa_model_entity_replay(e, &drop, big, 3, 0, NULL), FSA_OK);
    assert_int_equal(fsa_model_entity_print(e, FSA_TYPE_TICKET, &out), FSA_OK);
    assert_string_equal(out, three);
    assert_null(strstr(out, "\"k00\""));
    assert_non_null(strstr(out, "zzz\",\"zzz"));
    fsa_model_free(out);
    fsa_model_free(one);
    fsa_model_free(two);
    fsa_model_free(three);
    /* Depth: what a merge puts one level down, and an append three, may reach the limit, not
     * pass it (one by one would print a text too deep). */
    char deep[2 * FSA_LIMIT_JSON_DEPTH + 16];
    for (int reach = FSA_LIMIT_JSON_DEPTH; reach <= FSA_LIMIT_JSON_DEPTH + 1; reach++) {
        for (int kind = 0; kind < 2; kind++) {
            int d = reach - (kind == 0 ? 1 : 3); /* the payload's own depth */
            size_t k = 0;
            if (kind == 0)
                k += (size_t)snprintf(deep, sizeof deep, "{\"x\":");
            for (int i = kind == 0 ? 1 : 0; i < d; i++)
                deep[k++] = '[';
            for (int i = kind == 0 ? 1 : 0; i < d; i++)
                deep[k++] = ']';
            snprintf(deep + k, sizeof deep - k, "%s", kind == 0 ? "}" : "");
            fsa_op_t op = kind == 0 ? op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", deep)
                                    : op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "h", deep, 0);
            fsa_status_t one_st = fsa_model_apply(&op, chain[0], 1, 0, &out, NULL);
            fsa_model_free(out);
            fsa_status_t run_st = fsa_model_entity_replay(e, &op, chain[0], 1, 0, NULL);
            if (reach <= FSA_LIMIT_JSON_DEPTH) {
                assert_int_equal(one_st, FSA_OK);
                assert_int_equal(run_st, FSA_OK);
                assert_int_equal(fsa_model_entity_print(e, FSA_TYPE_TICKET, &out), FSA_OK);
                fsa_model_free(out);
            } else {
                assert_int_not_equal(one_st, FSA_OK);
                assert_int_equal(run_st, FSA_ETOOLARGE);
            }
            fsa_op_clear(&op);
        }
    }
    fsa_op_clear(&add);
    fsa_op_clear(&drop);
    fsa_free(extra);
    fsa_free(big);
    /* Each allocation of a run of two and its print failing in turn: FSA_ENOMEM from one of
     * them, never a text other than one by one's. */
    size_t failed = 0;
    for (unsigned long n = 1;; n++) {
        fsa_model_entity_t *f = fsa_model_entity_new();
        assert_non_null(f);
        fsa_alloc_fail_nth(n);
        fsa_status_t st = fsa_model_entity_replay(f, &ops[0], start, 1, FSA_APPLY_REPLAY, NULL);
        if (st == FSA_OK)
            st = fsa_model_entity_replay(f, &ops[1], start, 2, FSA_APPLY_REPLAY, NULL);
        out = NULL;
        if (st == FSA_OK)
            st = fsa_model_entity_print(f, FSA_TYPE_TICKET, &out);
        bool fired = fsa_alloc_fault_fired();
        fsa_alloc_fail_nth(0);
        if (fired) {
            assert_int_equal(st, FSA_ENOMEM);
            assert_null(out);
            failed++;
        } else {
            assert_int_equal(st, FSA_OK);
            assert_string_equal(out, chain[2]);
        }
        fsa_model_free(out);
        fsa_model_entity_free(f);
        if (!fired)
            break;
    }
    assert_true(failed > 10);
    fsa_model_entity_free(e);
    for (int k = 0; k <= N; k++)
        fsa_model_free(chain[k]);
    for (int k = 0; k < N; k++)
        fsa_op_clear(&ops[k]);
}

/*
 * An applied op's text is printed by print_exact, the merge patch's by cJSON's printer with exact
 * numbers (emit): the same text for the same values, through escapes, control bytes, DEL, UTF-8,
 * inexact, tiny, huge and negative-zero numbers, and empty containers.
 */
static void test_fsa_model_apply__prints_as_the_merge_patch_does(void **state)
{
    (void)state;
    static const char *const patches[] = {
        "{\"s\":\"p\\u0001\\t\\\"q\\\\/\\u007f\\u00e9\\ud83d\\ude00\"}",
        "{\"n\":[0.1,1e300,-0,1.5e-7,-77.59460000000001,9007199254740991,5e-324]}",
        "{\"i\":[123456789012345678,9e18,-9e18,1e15,2.5e-5,1e-7]}",
        "{\"e\":{},\"a\":[],\"z\":[{},[[]],null,true,false,\"\"]}",
    };
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        char *merged = NULL, *applied = NULL, want[1024];
        assert_int_equal(fsa_model_merge_patch("{}", patches[i], &merged), FSA_OK);
        fsa_op_t op = op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", patches[i]);
        assert_int_equal(fsa_model_apply(&op, "{\"ticketlog\":{}}", 1, 0, &applied, NULL), FSA_OK);
        snprintf(want, sizeof want, "\"ticketlog\":%s", merged);
        if (strstr(applied, want) == NULL)
            fail_msg("%s applied as %s, merged as %s", patches[i], applied, merged);
        fsa_model_free(merged);
        fsa_model_free(applied);
        fsa_op_clear(&op);
    }
}

static void test_fsa_model_apply__create_keeps_protocol_order(void **state)
{
    (void)state;
    expect_applied(op_create(FSA_TYPE_TICKET, "T1",
                             "{ \"priority\" : \"HIGH\", \"ticketlog\": {\"ticket_history\":[1],"
                             "\"x\":{}}, \"status\":\"OPEN\", \"level\": 2 }"),
                   NULL, 0, 0,
                   "{\"status\":\"OPEN\",\"level\":2,\"assignedto\":\"\",\"ticketlog\":"
                   "{\"ticket_history\":[1],\"x\":{}},\"priority\":\"HIGH\"}");
    expect_applied(op_create(FSA_TYPE_JOBNEED, "CP.1",
                             "{\"people_id\":\"U7\",\"parent_id\":\"T:1\",\"seqno\":3}"),
                   NULL, 0, 0,
                   "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":\"T:1\",\"seqno\":3,"
                   "\"expirytime\":0,\"other_info\":{},\"people_id\":\"U7\"}");
}

/* A create may start in any state of the machine (documented in model.c), not an unknown one. */
static void test_fsa_model_apply__create_with_known_status(void **state)
{
    (void)state;
    char *out =
        apply_ok(op_create(FSA_TYPE_JOBNEED, "J1", "{\"jobstatus\":\"INPROGRESS\"}"), NULL, 0, 0);
    char st[FSA_STATUS_BYTES];
    assert_fsa_ok(fsa_model_get_status(out, FSA_TYPE_JOBNEED, st));
    assert_string_equal(st, "INPROGRESS");
    fsa_model_free(out);
    expect_refused(op_create(FSA_TYPE_JOBNEED, "J1", "{\"jobstatus\":\"DONE\"}"), NULL, 0, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_create(FSA_TYPE_TICKET, "T1", "{\"status\":\"ASSIGNED\"}"), NULL, 0, 0,
                   FSA_EINVAL, "invalid_value");
}

struct refusal_row {
    fsa_type_t type;
    const char *fields;
    const char *code;
};

static void test_fsa_model_apply__create_refusals(void **state)
{
    (void)state;
    static const struct refusal_row rows[] = {
        {FSA_TYPE_JOBNEED, "{\"status\":\"NEW\"}", "unknown_field"},
        {FSA_TYPE_TICKET, "{\"jobstatus\":\"ASSIGNED\"}", "unknown_field"},
        {FSA_TYPE_JOBNEED, "{\"seqno\":1,\"extra\":true}", "unknown_field"},
        /* attendance: each required field missing in turn */
        {FSA_TYPE_ATTENDANCE,
         "{\"site_id\":\"S\",\"kind\":\"checkin\",\"at\":1,\"lat\":0,\"lon\":0}", "invalid_value"},
        {FSA_TYPE_ATTENDANCE,
         "{\"people_id\":\"P\",\"kind\":\"checkin\",\"at\":1,\"lat\":0,\"lon\":0}",
         "invalid_value"},
        {FSA_TYPE_ATTENDANCE,
         "{\"people_id\":\"P\",\"site_id\":\"S\",\"at\":1,\"lat\":0,\"lon\":0}", "invalid_value"},
        {FSA_TYPE_ATTENDANCE,
         "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkin\",\"lat\":0,\"lon\":0}",
         "invalid_value"},
        {FSA_TYPE_ATTENDANCE,
         "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkin\",\"at\":1,\"lon\":0}",
         "invalid_value"},
        {FSA_TYPE_ATTENDANCE,
         "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkin\",\"at\":1,\"lat\":0}",
         "invalid_value"},
        {FSA_TYPE_ATTENDANCE, "{}", "invalid_value"},
        /* wrong JSON types, field kind by field kind */
        {FSA_TYPE_ATTENDANCE,
         "{\"people_id\":1,\"site_id\":\"S\",\"kind\":\"checkin\",\"at\":1,\"lat\":0,\"lon\":0}",
         "invalid_value"},
        {FSA_TYPE_ATTENDANCE,
         "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkon\",\"at\":1,\"lat\":0,"
         "\"lon\":0}",
         "invalid_value"},
        {FSA_TYPE_ATTENDANCE,
         "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"CHECKIN\",\"at\":1,\"lat\":0,"
         "\"lon\":0}",
         "invalid_value"},
        {FSA_TYPE_ATTENDANCE,
         "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkin\",\"at\":1.5,\"lat\":0,"
         "\"lon\":0}",
         "invalid_value"},
        {FSA_TYPE_ATTENDANCE,
         "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkin\",\"at\":1,\"lat\":\"0\","
         "\"lon\":0}",
         "invalid_value"},
        {FSA_TYPE_ATTENDANCE,
         "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkin\",\"at\":1,\"lat\":0,"
         "\"lon\":null}",
         "invalid_value"},
        {FSA_TYPE_ATTENDANCE,
         "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkin\",\"at\":1,\"lat\":0,"
         "\"lon\":0,\"other_info\":[]}",
         "invalid_value"},
        {FSA_TYPE_JOBNEED, "{\"seqno\":\"1\"}", "invalid_value"},
        {FSA_TYPE_JOBNEED, "{\"seqno\":true}", "invalid_value"},
        {FSA_TYPE_JOBNEED, "{\"expirytime\":null}", "invalid_value"},
        {FSA_TYPE_JOBNEED, "{\"parent_id\":5}", "invalid_value"},
        {FSA_TYPE_JOBNEED, "{\"parent_id\":\"\"}", "invalid_value"},
        {FSA_TYPE_JOBNEED, "{\"parent_id\":\"has space\"}", "invalid_value"},
        {FSA_TYPE_JOBNEED, "{\"jobstatus\":null}", "invalid_value"},
        {FSA_TYPE_JOBNEED, "{\"jobstatus\":\"assigned\"}", "invalid_value"},
        {FSA_TYPE_JOBNEED, "{\"other_info\":\"{}\"}", "invalid_value"},
        {FSA_TYPE_JOBNEED, "{\"people_id\":null}", "invalid_value"},
        {FSA_TYPE_TICKET, "{\"level\":1e300}", "invalid_value"},
        {FSA_TYPE_TICKET, "{\"ticketlog\":null}", "invalid_value"},
        {FSA_TYPE_TICKET, "{\"priority\":[\"HIGH\"]}", "invalid_value"},
        /* not a fields object */
        {FSA_TYPE_TICKET, "[]", "invalid_value"},
        {FSA_TYPE_TICKET, "null", "invalid_value"},
        {FSA_TYPE_TICKET, "{", "invalid_value"},
        {FSA_TYPE_TICKET, "", "invalid_value"},
        {FSA_TYPE_TICKET, "{} {}", "invalid_value"},
        /* valid JSON that would not survive cJSON */
        {FSA_TYPE_TICKET, "{\"level\":1,\"level\":2}", "invalid_value"},
        {FSA_TYPE_TICKET, "{\"ticketlog\":{\"x\":1e400}}", "invalid_value"},
        {FSA_TYPE_TICKET, "{\"assignedto\":\"a\\u0000b\"}", "invalid_value"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        fsa_op_t op = op_create(rows[i].type, "E1", rows[i].fields);
        fsa_model_err_t err;
        fsa_status_t st = fsa_model_validate_op(&op, 0, &err);
        if (st != FSA_EINVAL || strcmp(err.code, rows[i].code) != 0)
            fail_msg("row %zu %s: got %s %s (%s)", i, rows[i].fields, fsa_status_str(st), err.code,
                     err.message);
        expect_refused(op, NULL, 0, 0, FSA_EINVAL, rows[i].code);
    }
}

static void test_fsa_model_apply__create_on_existing_conflicts(void **state)
{
    (void)state;
    char msg[256];
    expect_refused_msg(op_create(FSA_TYPE_TICKET, "T1", "{}"), TICKET_DEFAULTS, 1, 0, FSA_ECONFLICT,
                       "conflict", msg, sizeof msg);
    assert_string_equal(msg, "ticket T1: exists already");
    expect_refused(op_create(FSA_TYPE_ATTENDANCE, "A1", ATTENDANCE_GIVEN), "{}", 1,
                   FSA_APPLY_BY_SERVER | FSA_APPLY_REPLAY, FSA_ECONFLICT, "conflict");
}

static void test_fsa_model_apply__missing_entity_not_found(void **state)
{
    (void)state;
    char msg[256];
    expect_refused_msg(op_set(FSA_TYPE_JOBNEED, "J1", 1, "{\"seqno\":1}"), NULL, 0, 0,
                       FSA_ENOTFOUND, "not_found", msg, sizeof msg);
    assert_string_equal(msg, "jobneed J1: no such entity");
    expect_refused(op_merge(FSA_TYPE_JOBNEED, "J1", "other_info", "{}"), NULL, 0, 0, FSA_ENOTFOUND,
                   "not_found");
    expect_refused(op_incr(FSA_TYPE_TICKET, "T1", "level", 1), NULL, 0, 0, FSA_ENOTFOUND,
                   "not_found");
    expect_refused(op_trans(FSA_TYPE_TICKET, "T1", "status", "NEW", "OPEN"), NULL, 0, 0,
                   FSA_ENOTFOUND, "not_found");
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", "1", 0), NULL, 0,
                   0, FSA_ENOTFOUND, "not_found");
    /* A rejection of the op itself comes first. */
    expect_refused(op_trans(FSA_TYPE_TICKET, "T1", "status", "NEW", "CLOSED"), NULL, 0, 0,
                   FSA_ETRANSITION, "invalid_transition");
}

/* ------------------------------------------------------------------------------------------ */
/* set                                                                                        */

static void test_fsa_model_apply__set_replaces_fields_in_place(void **state)
{
    (void)state;
    expect_applied(op_set(FSA_TYPE_JOBNEED, "J1", 4,
                          "{\"other_info\":{\"a\":[1]},\"people_id\":\"U2\",\"seqno\":-3,"
                          "\"parent_id\":\"T1\"}"),
                   JOBNEED_DEFAULTS, 4, 0,
                   "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":\"T1\",\"seqno\":-3,"
                   "\"expirytime\":0,\"other_info\":{\"a\":[1]},\"people_id\":\"U2\"}");
    expect_applied(op_set(FSA_TYPE_JOBNEED, "J1", 2, "{\"parent_id\":null}"),
                   "{\"parent_id\":\"T1\",\"seqno\":1}", 2, 0, "{\"parent_id\":null,\"seqno\":1}");
    /* set replaces a whole object field, never merges into it */
    expect_applied(op_set(FSA_TYPE_TICKET, "T1", 1, "{\"ticketlog\":{}}"), TICKET_DEFAULTS, 1, 0,
                   "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\",\"ticketlog\":{},"
                   "\"priority\":\"MEDIUM\"}");
    /* a field absent from the stored entity is added in its protocol place */
    expect_applied(op_set(FSA_TYPE_TICKET, "T1", 1, "{\"level\":5}"),
                   "{\"priority\":\"LOW\",\"status\":\"OPEN\",\"zzz\":1}", 1, 0,
                   "{\"status\":\"OPEN\",\"level\":5,\"priority\":\"LOW\",\"zzz\":1}");
}

static void test_fsa_model_apply__set_stale_base_version_conflicts(void **state)
{
    (void)state;
    char msg[256];
    expect_refused_msg(op_set(FSA_TYPE_TICKET, "T1", 3, "{\"level\":1}"), TICKET_DEFAULTS, 4, 0,
                       FSA_ECONFLICT, "conflict", msg, sizeof msg);
    assert_string_equal(msg, "ticket T1: version is 4, the set was based on 3");
    expect_refused(op_set(FSA_TYPE_TICKET, "T1", 5, "{\"level\":1}"), TICKET_DEFAULTS, 4,
                   FSA_APPLY_BY_SERVER, FSA_ECONFLICT, "conflict");
    /* A local replay skips the check. */
    char *out = apply_ok(op_set(FSA_TYPE_TICKET, "T1", 3, "{\"level\":1}"), TICKET_DEFAULTS, 4,
                         FSA_APPLY_REPLAY);
    char *level = NULL;
    assert_fsa_ok(fsa_model_get_field(out, "level", &level));
    assert_string_equal(level, "1");
    fsa_model_free(level);
    fsa_model_free(out);
}

static void test_fsa_model_apply__set_refusals(void **state)
{
    (void)state;
    static const struct refusal_row rows[] = {
        {FSA_TYPE_JOBNEED, "{\"jobstatus\":\"INPROGRESS\"}", "invalid_value"},
        {FSA_TYPE_JOBNEED, "{\"jobstatus\":\"ASSIGNED\"}", "invalid_value"},
        {FSA_TYPE_TICKET, "{\"status\":\"OPEN\"}", "invalid_value"},
        {FSA_TYPE_TICKET, "{\"level\":1,\"status\":\"OPEN\"}", "invalid_value"},
        {FSA_TYPE_TICKET, "{\"owner\":\"x\"}", "unknown_field"},
        {FSA_TYPE_TICKET, "{\"level\":\"high\"}", "invalid_value"},
        {FSA_TYPE_TICKET, "{\"level\":0.5}", "invalid_value"},
        {FSA_TYPE_TICKET, "{\"assignedto\":7}", "invalid_value"},
        {FSA_TYPE_TICKET, "{\"ticketlog\":[]}", "invalid_value"},
        {FSA_TYPE_TICKET, "{}", "invalid_value"},
        {FSA_TYPE_TICKET, "[{\"level\":1}]", "invalid_value"},
        {FSA_TYPE_JOBNEED, "{\"parent_id\":\"a/b\"}", "invalid_value"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *stored = rows[i].type == FSA_TYPE_TICKET ? TICKET_DEFAULTS : JOBNEED_DEFAULTS;
        expect_refused(op_set(rows[i].type, "E1", 1, rows[i].fields), stored, 1, 0, FSA_EINVAL,
                       rows[i].code);
    }
    expect_refused(op_set(FSA_TYPE_TICKET, "T1", 1, NULL), TICKET_DEFAULTS, 1, 0, FSA_EINVAL,
                   "invalid_value");
}

/* ------------------------------------------------------------------------------------------ */
/* merge                                                                                      */

static void test_fsa_model_apply__merge_patches_object_field(void **state)
{
    (void)state;
    const char *stored = "{\"jobstatus\":\"INPROGRESS\",\"other_info\":{\"a\":1,\"b\":{\"c\":2,"
                         "\"d\":3},\"e\":[1,2]}}";
    expect_applied(op_merge(FSA_TYPE_JOBNEED, "J1", "other_info",
                            "{\"a\":null,\"b\":{\"d\":null,\"x\":true},\"e\":[3],\"f\":{\"g\":"
                            "null,\"h\":1}}"),
                   stored, 7, 0,
                   "{\"jobstatus\":\"INPROGRESS\",\"other_info\":{\"b\":{\"c\":2,\"x\":true},"
                   "\"e\":[3],\"f\":{\"h\":1}}}");
    /* An empty patch changes nothing but is still applied (it bumps the version). */
    expect_applied(op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", "{}"), TICKET_DEFAULTS, 1, 0,
                   TICKET_DEFAULTS);
    /* A field absent from the stored entity merges into its default. */
    expect_applied(op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", "{\"note\":\"x\"}"),
                   "{\"status\":\"OPEN\"}", 1, 0,
                   "{\"status\":\"OPEN\",\"ticketlog\":{\"ticket_history\":[],\"note\":\"x\"}}");
}

static void test_fsa_model_apply__merge_refusals(void **state)
{
    (void)state;
    expect_refused(op_merge(FSA_TYPE_TICKET, "T1", "level", "{}"), TICKET_DEFAULTS, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_merge(FSA_TYPE_TICKET, "T1", "status", "{}"), TICKET_DEFAULTS, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_merge(FSA_TYPE_TICKET, "T1", "priority", "{}"), TICKET_DEFAULTS, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_merge(FSA_TYPE_TICKET, "T1", "log", "{}"), TICKET_DEFAULTS, 1, 0, FSA_EINVAL,
                   "unknown_field");
    expect_refused(op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", "[1]"), TICKET_DEFAULTS, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", "null"), TICKET_DEFAULTS, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", NULL), TICKET_DEFAULTS, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", "{\"a\":1"), TICKET_DEFAULTS, 1, 0,
                   FSA_EINVAL, "invalid_value");
    /* the stored value is broken */
    expect_refused(op_merge(FSA_TYPE_TICKET, "T1", "ticketlog", "{}"), "{\"ticketlog\":3}", 1, 0,
                   FSA_EINVAL, "invalid_value");
}

/* ------------------------------------------------------------------------------------------ */
/* increment                                                                                  */

static void test_fsa_model_apply__increment(void **state)
{
    (void)state;
    expect_applied(op_incr(FSA_TYPE_TICKET, "T1", "level", 2), "{\"level\":40}", 1, 0,
                   "{\"level\":42}");
    expect_applied(op_incr(FSA_TYPE_TICKET, "T1", "level", -50), "{\"level\":40}", 1, 0,
                   "{\"level\":-10}");
    expect_applied(op_incr(FSA_TYPE_TICKET, "T1", "level", 0), "{\"level\":40}", 1, 0,
                   "{\"level\":40}");
    expect_applied(op_incr(FSA_TYPE_JOBNEED, "J1", "expirytime", 60000),
                   "{\"jobstatus\":\"ASSIGNED\",\"expirytime\":1764090000000}", 1, 0,
                   "{\"jobstatus\":\"ASSIGNED\",\"expirytime\":1764090060000}");
    /* absent: from the default 0 */
    expect_applied(op_incr(FSA_TYPE_JOBNEED, "J1", "seqno", 3), "{}", 1, 0, "{\"seqno\":3}");
    /* exact at the edge of the range */
    expect_applied(op_incr(FSA_TYPE_JOBNEED, "J1", "seqno", 1), "{\"seqno\":9007199254740990}", 1,
                   0, "{\"seqno\":9007199254740991}");
    expect_applied(op_incr(FSA_TYPE_JOBNEED, "J1", "seqno", -1), "{\"seqno\":-9007199254740990}", 1,
                   0, "{\"seqno\":-9007199254740991}");
}

static void test_fsa_model_apply__increment_overflow(void **state)
{
    (void)state;
    static const struct {
        const char *stored;
        int64_t by;
    } rows[] = {
        {"{\"seqno\":1}", INT64_MAX},
        {"{\"seqno\":-1}", INT64_MIN},
        {"{\"seqno\":0}", INT64_MIN},
        {"{\"seqno\":9007199254740991}", 1},
        {"{\"seqno\":9007199254740990}", 2},
        {"{\"seqno\":-9007199254740991}", -1},
        {"{\"seqno\":0}", INT64_C(9007199254740992)},
        {"{\"seqno\":-5}", INT64_C(-9007199254740987)},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        expect_refused(op_incr(FSA_TYPE_JOBNEED, "J1", "seqno", rows[i].by), rows[i].stored, 1, 0,
                       FSA_EINVAL, "invalid_value");
}

static void test_fsa_model_apply__increment_refusals(void **state)
{
    (void)state;
    expect_refused(op_incr(FSA_TYPE_TICKET, "T1", "priority", 1), TICKET_DEFAULTS, 1, 0, FSA_EINVAL,
                   "invalid_value");
    expect_refused(op_incr(FSA_TYPE_TICKET, "T1", "status", 1), TICKET_DEFAULTS, 1, 0, FSA_EINVAL,
                   "invalid_value");
    expect_refused(op_incr(FSA_TYPE_TICKET, "T1", "ticketlog", 1), TICKET_DEFAULTS, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_incr(FSA_TYPE_TICKET, "T1", "levels", 1), TICKET_DEFAULTS, 1, 0, FSA_EINVAL,
                   "unknown_field");
    expect_refused(op_incr(FSA_TYPE_TICKET, "T1", "", 1), TICKET_DEFAULTS, 1, 0, FSA_EINVAL,
                   "unknown_field");
    expect_refused(op_incr(FSA_TYPE_TICKET, "T1", "level", 1), "{\"level\":\"3\"}", 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_incr(FSA_TYPE_TICKET, "T1", "level", 1), "{\"level\":2.5}", 1, 0, FSA_EINVAL,
                   "invalid_value");
    /* a field name without its NUL */
    fsa_op_t op = op_incr(FSA_TYPE_TICKET, "T1", "level", 1);
    memset(op.field, 'l', sizeof op.field);
    expect_refused(op, TICKET_DEFAULTS, 1, 0, FSA_EINVAL, "invalid_value");
}

/* ------------------------------------------------------------------------------------------ */
/* transition                                                                                 */

static void test_fsa_model_apply__transition_precondition(void **state)
{
    (void)state;
    char msg[256];
    expect_applied(op_trans(FSA_TYPE_TICKET, "T1", "status", "NEW", "OPEN"), TICKET_DEFAULTS, 1, 0,
                   "{\"status\":\"OPEN\",\"level\":0,\"assignedto\":\"\",\"ticketlog\":"
                   "{\"ticket_history\":[]},\"priority\":\"MEDIUM\"}");
    expect_refused_msg(op_trans(FSA_TYPE_JOBNEED, "J1", "jobstatus", "ASSIGNED", "INPROGRESS"),
                       "{\"jobstatus\":\"INPROGRESS\"}", 2, 0, FSA_ECONFLICT, "conflict", msg,
                       sizeof msg);
    assert_string_equal(msg, "jobneed J1: jobstatus is INPROGRESS, not ASSIGNED");
    /* The edge is validated before the precondition: a non-edge is a rejection, not a conflict. */
    expect_refused(op_trans(FSA_TYPE_JOBNEED, "J1", "jobstatus", "COMPLETED", "INPROGRESS"),
                   "{\"jobstatus\":\"INPROGRESS\"}", 2, 0, FSA_ETRANSITION, "invalid_transition");
    /* Absent status: the default. */
    expect_applied(op_trans(FSA_TYPE_JOBNEED, "J1", "jobstatus", "ASSIGNED", "INPROGRESS"), "{}", 1,
                   0, "{\"jobstatus\":\"INPROGRESS\"}");
    /* Of racing devices exactly one wins: the second sees the first's result. */
    char *out = apply_ok(op_trans(FSA_TYPE_TICKET, "T1", "status", "OPEN", "RESOLVED"),
                         "{\"status\":\"OPEN\"}", 1, 0);
    expect_refused(op_trans(FSA_TYPE_TICKET, "T1", "status", "OPEN", "RESOLVED"), out, 2, 0,
                   FSA_ECONFLICT, "conflict");
    fsa_model_free(out);
    /* the server's AUTOCLOSED */
    expect_applied(
        op_trans(FSA_TYPE_JOBNEED, "J1", "jobstatus", "PARTIALLYCOMPLETED", "AUTOCLOSED"),
        "{\"jobstatus\":\"PARTIALLYCOMPLETED\"}", 1, FSA_APPLY_BY_SERVER,
        "{\"jobstatus\":\"AUTOCLOSED\"}");
}

static void test_fsa_model_apply__transition_refusals(void **state)
{
    (void)state;
    const char *stored = "{\"jobstatus\":\"ASSIGNED\"}";
    expect_refused(op_trans(FSA_TYPE_JOBNEED, "J1", "status", "ASSIGNED", "INPROGRESS"), stored, 1,
                   0, FSA_EINVAL, "unknown_field");
    expect_refused(op_trans(FSA_TYPE_JOBNEED, "J1", "seqno", "ASSIGNED", "INPROGRESS"), stored, 1,
                   0, FSA_EINVAL, "invalid_value");
    expect_refused(op_trans(FSA_TYPE_JOBNEED, "J1", "jobstatus", "Assigned", "INPROGRESS"), stored,
                   1, 0, FSA_EINVAL, "invalid_value");
    expect_refused(op_trans(FSA_TYPE_JOBNEED, "J1", "jobstatus", "ASSIGNED", ""), stored, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_trans(FSA_TYPE_JOBNEED, "J1", "jobstatus", "NEW", "OPEN"), stored, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_trans(FSA_TYPE_JOBNEED, "J1", "jobstatus", "ASSIGNED", "ASSIGNED"), stored, 1,
                   0, FSA_ETRANSITION, "invalid_transition");
    fsa_op_t op = op_trans(FSA_TYPE_JOBNEED, "J1", "jobstatus", "ASSIGNED", "INPROGRESS");
    memset(op.to, 'A', sizeof op.to);
    expect_refused(op, stored, 1, 0, FSA_EINVAL, "invalid_value");
    expect_refused(op_trans(FSA_TYPE_JOBNEED, "J1", "jobstatus", "ASSIGNED", "INPROGRESS"),
                   "{\"jobstatus\":7}", 1, 0, FSA_EINVAL, "invalid_value");
}

/* ------------------------------------------------------------------------------------------ */
/* append                                                                                     */

static void test_fsa_model_apply__append(void **state)
{
    (void)state;
    expect_applied(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history",
                             "{\"by\":\"U1\",\"what\":\"opened\"}", 0),
                   TICKET_DEFAULTS, 1, 0,
                   "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"\",\"ticketlog\":"
                   "{\"ticket_history\":[{\"by\":\"U1\",\"what\":\"opened\"}]},"
                   "\"priority\":\"MEDIUM\"}");
    /* absent key: the array is created */
    expect_applied(op_append(FSA_TYPE_JOBNEED, "J1", "other_info", "photos", "\"p1.jpg\"", 0),
                   "{\"other_info\":{\"a\":1}}", 1, 0,
                   "{\"other_info\":{\"a\":1,\"photos\":[\"p1.jpg\"]}}");
    /* absent field: its default object */
    expect_applied(op_append(FSA_TYPE_JOBNEED, "J1", "other_info", "k", "null", 0), "{}", 1, 0,
                   "{\"other_info\":{\"k\":[null]}}");
    /* any JSON value is an item */
    expect_applied(op_append(FSA_TYPE_JOBNEED, "J1", "other_info", "k", "[1,{\"x\":[]}]", 0),
                   "{\"other_info\":{\"k\":[true]}}", 1, 0,
                   "{\"other_info\":{\"k\":[true,[1,{\"x\":[]}]]}}");
}

static void test_fsa_model_apply__append_max_len_drops_oldest(void **state)
{
    (void)state;
    const char *stored = "{\"ticketlog\":{\"ticket_history\":[1,2,3]}}";
    expect_applied(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", "4", 3), stored,
                   1, 0, "{\"ticketlog\":{\"ticket_history\":[2,3,4]}}");
    expect_applied(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", "4", 4), stored,
                   1, 0, "{\"ticketlog\":{\"ticket_history\":[1,2,3,4]}}");
    expect_applied(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", "4", 1), stored,
                   1, 0, "{\"ticketlog\":{\"ticket_history\":[4]}}");
    /* 0 means unbounded */
    expect_applied(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", "4", 0), stored,
                   1, 0, "{\"ticketlog\":{\"ticket_history\":[1,2,3,4]}}");
    expect_applied(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", "4", INT64_MAX),
                   stored, 1, 0, "{\"ticketlog\":{\"ticket_history\":[1,2,3,4]}}");
}

static void test_fsa_model_apply__append_refusals(void **state)
{
    (void)state;
    const char *stored = "{\"ticketlog\":{\"ticket_history\":{},\"n\":1}}";
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", "1", 0), stored,
                   1, 0, FSA_EINVAL, "invalid_value");
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "n", "1", 0), stored, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "x", "1", -1), stored, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "", "1", 0), stored, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "bad\x01key", "1", 0), stored, 1,
                   0, FSA_EINVAL, "invalid_value");
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "bad\xff", "1", 0), stored, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "x", NULL, 0), stored, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "x", "[1,", 0), stored, 1, 0,
                   FSA_EINVAL, "invalid_value");
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "level", "x", "1", 0), stored, 1, 0, FSA_EINVAL,
                   "invalid_value");
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "history", "x", "1", 0), stored, 1, 0,
                   FSA_EINVAL, "unknown_field");
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "x", "1", 0), "{\"ticketlog\":[]}",
                   1, 0, FSA_EINVAL, "invalid_value");
    /* a UTF-8 key is fine */
    expect_applied(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "caf\xc3\xa9", "1", 0),
                   "{\"ticketlog\":{}}", 1, 0, "{\"ticketlog\":{\"caf\xc3\xa9\":[1]}}");
}

/* ------------------------------------------------------------------------------------------ */
/* Rejections common to every op                                                              */

static void test_fsa_model_apply__attendance_is_immutable(void **state)
{
    (void)state;
    const char *stored = "{\"people_id\":\"P1\",\"other_info\":{},\"at\":1}";
    char msg[256];
    expect_refused_msg(op_set(FSA_TYPE_ATTENDANCE, "A1", 1, "{\"people_id\":\"P2\"}"), stored, 1, 0,
                       FSA_EINVAL, "immutable", msg, sizeof msg);
    assert_string_equal(msg, "attendance A1: attendance is append-only, set does not apply");
    expect_refused(op_merge(FSA_TYPE_ATTENDANCE, "A1", "other_info", "{}"), stored, 1, 0,
                   FSA_EINVAL, "immutable");
    expect_refused(op_incr(FSA_TYPE_ATTENDANCE, "A1", "at", 1), stored, 1, FSA_APPLY_BY_SERVER,
                   FSA_EINVAL, "immutable");
    expect_refused(op_trans(FSA_TYPE_ATTENDANCE, "A1", "kind", "checkin", "checkout"), stored, 1, 0,
                   FSA_EINVAL, "immutable");
    expect_refused(op_append(FSA_TYPE_ATTENDANCE, "A1", "other_info", "k", "1", 0), stored, 1, 0,
                   FSA_EINVAL, "immutable");
    /* even on a missing entity: the op can never apply, which beats not_found */
    expect_refused(op_incr(FSA_TYPE_ATTENDANCE, "A1", "at", 1), NULL, 0, 0, FSA_EINVAL,
                   "immutable");
}

static void test_fsa_model_apply__unknown_type_kind_flags(void **state)
{
    (void)state;
    expect_refused(op_create(FSA__TYPE_COUNT, "X1", "{}"), NULL, 0, 0, FSA_EINVAL, "unknown_type");
    expect_refused(op_create((fsa_type_t)-1, "X1", "{}"), NULL, 0, 0, FSA_EINVAL, "unknown_type");
    fsa_op_t op = op_create(FSA_TYPE_TICKET, "T1", "{}");
    op.kind = FSA__OP_COUNT;
    expect_refused(op, NULL, 0, 0, FSA_EINVAL, "invalid_value");
    expect_refused(op_create(FSA_TYPE_TICKET, "T1", "{}"), NULL, 0, 0x4u, FSA_EINVAL,
                   "invalid_value");
}

static void test_fsa_model_apply__bad_ids(void **state)
{
    (void)state;
    static const char *const ids[] = {"", "has space", "a/b", "caf\xc3\xa9", "J1\n", "a?b"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char msg[256];
        expect_refused_msg(op_create(FSA_TYPE_JOBNEED, ids[i], "{}"), NULL, 0, 0, FSA_EINVAL,
                           "invalid_value", msg, sizeof msg);
        /* the message names the type, and does not echo the bad id */
        assert_string_equal(msg, "jobneed: id is not 1..128 bytes of [A-Za-z0-9._:-]");
    }
    /* 128 bytes is the longest id; an id filling the buffer without a NUL is refused */
    fsa_op_t op = op_create(FSA_TYPE_JOBNEED, "", "{}");
    memset(op.id, 'a', FSA_LIMIT_ID_BYTES);
    char *out = apply_ok(op, NULL, 0, 0);
    fsa_model_free(out);
    op = op_create(FSA_TYPE_JOBNEED, "", "{}");
    memset(op.id, 'a', sizeof op.id);
    expect_refused(op, NULL, 0, 0, FSA_EINVAL, "invalid_value");
}

static void test_fsa_model_apply__stored_fields_malformed(void **state)
{
    (void)state;
    static const char *const stored[] = {"", "[]", "\"x\"", "{\"level\":1", "{\"a\":1,\"a\":2}"};
    for (size_t i = 0; i < sizeof stored / sizeof stored[0]; i++)
        expect_refused(op_incr(FSA_TYPE_TICKET, "T1", "level", 1), stored[i], 1, 0, FSA_EINVAL,
                       "invalid_value");
}

static void test_fsa_model_apply__null_arguments(void **state)
{
    (void)state;
    fsa_model_err_t err;
    char *out = NULL;
    assert_int_equal(fsa_model_apply(NULL, NULL, 0, 0, &out, &err), FSA_EINVAL);
    assert_null(out);
    assert_string_equal(err.code, "invalid_value");
    assert_int_equal(fsa_model_apply(NULL, NULL, 0, 0, &out, NULL), FSA_EINVAL);
    fsa_op_t op = op_create(FSA_TYPE_TICKET, "T1", "{}");
    assert_int_equal(fsa_model_apply(&op, NULL, 0, 0, NULL, &err), FSA_EINVAL);
    assert_string_equal(err.code, "invalid_value");
    assert_int_equal(fsa_model_apply(&op, NULL, 0, 0, NULL, NULL), FSA_EINVAL);
    fsa_op_clear(&op);
    assert_int_equal(fsa_model_validate_op(NULL, 0, &err), FSA_EINVAL);
    assert_string_equal(err.code, "invalid_value");
    assert_int_equal(fsa_model_validate_op(NULL, 0, NULL), FSA_EINVAL);
}

/* ------------------------------------------------------------------------------------------ */
/* validate_op                                                                                */

static void test_fsa_model_validate_op__each_kind_without_the_entity(void **state)
{
    (void)state;
    fsa_op_t ops[] = {
        op_create(FSA_TYPE_ATTENDANCE, "A1", ATTENDANCE_GIVEN),
        op_set(FSA_TYPE_TICKET, "T1", 9, "{\"assignedto\":\"U3\"}"),
        op_merge(FSA_TYPE_JOBNEED, "J1", "other_info", "{\"a\":null}"),
        op_incr(FSA_TYPE_TICKET, "T1", "level", -1),
        op_trans(FSA_TYPE_TICKET, "T1", "status", "RESOLVED", "OPEN"),
        op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", "{}", 10),
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        fsa_model_err_t err;
        memset(&err, 'x', sizeof err);
        assert_fsa_ok(fsa_model_validate_op(&ops[i], 0, &err));
        assert_string_equal(err.code, ""); /* cleared on success */
        assert_fsa_ok(fsa_model_validate_op(&ops[i], FSA_APPLY_BY_SERVER | FSA_APPLY_REPLAY, NULL));
        fsa_op_clear(&ops[i]);
    }
    /* op_id, seq, at and group are not its business */
    fsa_op_t op = op_incr(FSA_TYPE_TICKET, "T1", "level", 1);
    memset(op.op_id, '?', sizeof op.op_id);
    memset(op.group, '?', sizeof op.group);
    op.seq = -1;
    assert_fsa_ok(fsa_model_validate_op(&op, 0, NULL));
}

static void test_fsa_model_validate_op__server_only_edge(void **state)
{
    (void)state;
    fsa_op_t op = op_trans(FSA_TYPE_JOBNEED, "J1", "jobstatus", "INPROGRESS", "AUTOCLOSED");
    fsa_model_err_t err;
    assert_int_equal(fsa_model_validate_op(&op, 0, &err), FSA_ETRANSITION);
    assert_string_equal(err.code, "invalid_transition");
    assert_fsa_ok(fsa_model_validate_op(&op, FSA_APPLY_BY_SERVER, &err));
    fsa_op_clear(&op);
}

/* ------------------------------------------------------------------------------------------ */
/* Limits                                                                                     */

static void test_fsa_model_json_check__nesting(void **state)
{
    (void)state;
    char *ok = nested(FSA_LIMIT_JSON_DEPTH);
    char *deep = nested(FSA_LIMIT_JSON_DEPTH + 1);
    char *very_deep = nested(200000); /* would exhaust a recursive parser's stack */
    assert_fsa_ok(fsa_model_json_check(ok, 1000));
    assert_int_equal(fsa_model_json_check(deep, 1000), FSA_EINVAL);
    assert_int_equal(fsa_model_json_check(very_deep, 1000000), FSA_EINVAL);

    /* the same through the op paths */
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "k", very_deep, 0),
                   TICKET_DEFAULTS, 1, 0, FSA_EINVAL, "invalid_value");
    expect_refused(op_incr(FSA_TYPE_TICKET, "T1", "level", 1), very_deep, 1, 0, FSA_EINVAL,
                   "invalid_value");
    char *out = NULL;
    assert_int_equal(fsa_model_merge_patch(very_deep, "{}", &out), FSA_EINVAL);
    assert_int_equal(fsa_model_merge_patch("{}", very_deep, &out), FSA_EINVAL);
    assert_null(out);
    fsa_free(ok);
    fsa_free(deep);
    fsa_free(very_deep);

    /* objects count too */
    char buf[512] = "";
    for (int i = 0; i < FSA_LIMIT_JSON_DEPTH; i++)
        CAT(buf, "{\"a\":");
    CAT(buf, "1");
    for (int i = 0; i < FSA_LIMIT_JSON_DEPTH; i++)
        CAT(buf, "}");
    assert_fsa_ok(fsa_model_json_check(buf, sizeof buf));
    memmove(buf + 1, buf, strlen(buf) + 1); /* one level more: [ {...} ] */
    buf[0] = '[';
    CAT(buf, "]");
    assert_int_equal(fsa_model_json_check(buf, sizeof buf), FSA_EINVAL);
}

/* An op whose inputs are within the limits, but whose result would nest too deep. */
static void test_fsa_model_apply__result_too_deep(void **state)
{
    (void)state;
    /* fields { ticketlog { ticket_history [ item ] } }: the item starts at depth 3 */
    char *fits = nested(FSA_LIMIT_JSON_DEPTH - 3);
    char *too_deep = nested(FSA_LIMIT_JSON_DEPTH - 2);
    char *out = apply_ok(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", fits, 0),
                         TICKET_DEFAULTS, 1, 0);
    assert_fsa_ok(fsa_model_json_check(out, FSA_LIMIT_FIELDS_BYTES));
    fsa_model_free(out);
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", too_deep, 0),
                   TICKET_DEFAULTS, 1, 0, FSA_EINVAL, "invalid_value");
    fsa_free(fits);
    fsa_free(too_deep);
}

static void test_fsa_model_json_check__string_length(void **state)
{
    (void)state;
    char *ok = repeat("\"", 'a', FSA_LIMIT_STRING_BYTES, "\"");
    char *long1 = repeat("\"", 'a', FSA_LIMIT_STRING_BYTES + 1, "\"");
    char *long_key = repeat("{\"", 'k', FSA_LIMIT_STRING_BYTES + 1, "\":1}");
    assert_fsa_ok(fsa_model_json_check(ok, FSA_LIMIT_FIELDS_BYTES));
    assert_int_equal(fsa_model_json_check(long1, FSA_LIMIT_FIELDS_BYTES), FSA_EINVAL);
    assert_int_equal(fsa_model_json_check(long_key, FSA_LIMIT_FIELDS_BYTES), FSA_EINVAL);

    /* The limit counts decoded bytes: "\u00e9" is 6 characters of text and 2 bytes of value. */
    size_t n = FSA_LIMIT_STRING_BYTES / 2;
    char *esc = fsa_malloc(6 * (n + 1) + 3);
    assert_non_null(esc);
    char *p = esc;
    *p++ = '"';
    for (size_t i = 0; i < n; i++, p += 6)
        memcpy(p, "\\u00e9", 6); // NOLINT(bugprone-not-null-terminated-result): "\"" ends it
    memcpy(p, "\"", sizeof "\"");
    assert_fsa_ok(fsa_model_json_check(esc, FSA_LIMIT_FIELDS_BYTES));
    memcpy(p, "\\u00e9\"", sizeof "\\u00e9\"");
    assert_int_equal(fsa_model_json_check(esc, FSA_LIMIT_FIELDS_BYTES), FSA_EINVAL);

    /* through create, set and append */
    char *fields = repeat("{\"assignedto\":\"", 'x', FSA_LIMIT_STRING_BYTES + 1, "\"}");
    expect_refused(op_create(FSA_TYPE_TICKET, "T1", fields), NULL, 0, 0, FSA_EINVAL,
                   "invalid_value");
    expect_refused(op_set(FSA_TYPE_TICKET, "T1", 1, fields), TICKET_DEFAULTS, 1, 0, FSA_EINVAL,
                   "invalid_value");
    expect_refused(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "k", long1, 0), TICKET_DEFAULTS, 1,
                   0, FSA_EINVAL, "invalid_value");
    char *fits = repeat("{\"assignedto\":\"", 'x', FSA_LIMIT_STRING_BYTES, "\"}");
    char *out = apply_ok(op_create(FSA_TYPE_TICKET, "T1", fits), NULL, 0, 0);
    fsa_model_free(out);
    fsa_free(fits);
    fsa_free(fields);
    fsa_free(esc);
    fsa_free(ok);
    fsa_free(long1);
    fsa_free(long_key);
}

static void test_fsa_model_json_check__size(void **state)
{
    (void)state;
    assert_fsa_ok(fsa_model_json_check("[1,2]", 5));
    assert_int_equal(fsa_model_json_check("[1,2]", 4), FSA_EINVAL);
    assert_int_equal(fsa_model_json_check("1", 0), FSA_EINVAL);
    assert_int_equal(fsa_model_json_check(NULL, 10), FSA_EINVAL);
    char *big = repeat("[\"", 'x', FSA_LIMIT_FIELDS_BYTES, "\"]");
    expect_refused(op_create(FSA_TYPE_TICKET, "T1", big), NULL, 0, 0, FSA_EINVAL, "invalid_value");
    fsa_free(big);
}

/* The result of an op may not pass FSA_LIMIT_FIELDS_BYTES; max_len can keep it within. */
static void test_fsa_model_apply__result_too_large(void **state)
{
    (void)state;
    const size_t item = 65000, items = 16;
    char *stored = fsa_malloc(items * (item + 3) + 64);
    assert_non_null(stored);
    memcpy(stored, "{\"ticketlog\":{\"ticket_history\":[",
           sizeof "{\"ticketlog\":{\"ticket_history\":[");
    char *p = stored + strlen(stored);
    for (size_t i = 0; i < items; i++) {
        *p++ = i ? ',' : '"';
        if (i)
            *p++ = '"';
        memset(p, 'a' + (char)i, item);
        p += item;
        *p++ = '"';
    }
    memcpy(p, "]}}", sizeof "]}}");
    assert_true(strlen(stored) < FSA_LIMIT_FIELDS_BYTES);
    assert_fsa_ok(fsa_model_json_check(stored, FSA_LIMIT_FIELDS_BYTES));

    char *extra = repeat("\"", 'z', 10000, "\"");
    char msg[256];
    expect_refused_msg(op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", extra, 0),
                       stored, 1, 0, FSA_EINVAL, "entity_too_large", msg, sizeof msg);
    assert_non_null(strstr(msg, "longer than 1048576 bytes as JSON"));

    char *out = apply_ok(
        op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", extra, (int64_t)items),
        stored, 1, 0);
    assert_null(strstr(out, "\"aaaa")); /* the oldest item went */
    assert_non_null(strstr(out, "\"bbbb"));
    assert_non_null(strstr(out, "\"zzzz"));
    fsa_model_free(out);
    fsa_free(extra);
    fsa_free(stored);
}

struct text_row {
    const char *text;
    bool ok;
};

/* The scan is strict RFC 8259: it refuses what cJSON would accept loosely or misread. */
static void test_fsa_model_json_check__syntax_table(void **state)
{
    (void)state;
    static const struct text_row rows[] = {
        {"0", true},
        {"-0", true},
        {"-1.5e+10", true},
        {"1E-3", true},
        {" \t\r\n{ \"a\" : [ 1 , true , false , null , \"s\" ] } \n", true},
        {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u20AC\"", true},
        {"\"\\ud83d\\ude00\"", true},                         /* a surrogate pair */
        {"\"\xf0\x9f\x98\x80 \xc3\xa9 \xe2\x82\xac\"", true}, /* raw UTF-8 */
        {"{}", true},
        {"[]", true},
        {"[[],{}]", true},
        {"", false},
        {"   ", false},
        {"01", false},
        {"+1", false},
        {".5", false},
        {"1.", false},
        {"1e", false},
        {"-", false},
        {"0x10", false},
        {"NaN", false},
        {"Infinity", false},
        {"tru", false},
        {"nul", false},
        {"True", false},
        {"[1,]", false},
        {"{\"a\":1,}", false},
        {"{\"a\" 1}", false},
        {"{a:1}", false},
        {"{'a':1}", false},
        {"[1 2]", false},
        {"[1}", false},
        {"{\"a\":1]", false},
        {"]", false},
        {"1 2", false},
        {"{} x", false},
        {"\"abc", false},
        {"\"a\tb\"", false},  /* raw control character */
        {"\"\\x41\"", false}, /* unknown escape */
        {"\"\\u12G4\"", false},
        {"\"\\u0000\"", false}, /* cJSON would cut the string here */
        {"\"\\ud83d\"", false}, /* lone high surrogate */
        {"\"\\ude00\"", false}, /* lone low surrogate */
        {"\"\\ud83d\\u0041\"", false},
        {"\"\xff\"", false},             /* not UTF-8 */
        {"\"\xc0\xaf\"", false},         /* overlong */
        {"\"\xed\xa0\x80\"", false},     /* an encoded surrogate */
        {"\"\xf4\x90\x80\x80\"", false}, /* above U+10FFFF */
        {"\"\xe2\x82\"", false},         /* truncated */
        {"\xef\xbb\xbf{}", false},       /* byte order mark */
        {"\v1", false},
        {"1234567890123456789012345678901234567890123456789012345678901234", false},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        fsa_status_t st = fsa_model_json_check(rows[i].text, 1000);
        if ((st == FSA_OK) != rows[i].ok)
            fail_msg("row %zu \"%s\": expected %s", i, rows[i].text, rows[i].ok ? "ok" : "EINVAL");
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Numbers                                                                                    */

static void test_fsa_model_apply__int_fields_are_exact(void **state)
{
    (void)state;
    static const struct {
        const char *given;
        const char *printed; /* NULL: refused */
    } rows[] = {
        {"0", "0"},
        {"-0", "0"},
        {"42", "42"},
        {"1.0", "1"},
        {"1e3", "1000"},
        {"-2147483649", "-2147483649"},
        {"1764090000000", "1764090000000"},
        {"1000000000000000", "1000000000000000"}, /* cJSON alone prints 1e+15 */
        {"9007199254740991", "9007199254740991"}, /* cJSON alone prints 9.00719925474099e+15 */
        {"-9007199254740991", "-9007199254740991"},
        {"9007199254740992", NULL}, /* 2^53: 2^53 + 1 would read as the same double */
        {"9007199254740993", NULL},
        {"-9007199254740992", NULL},
        {"9223372036854775807", NULL},
        {"1.5", NULL},
        {"0.1", NULL},
        {"1e-7", NULL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char fields[128], want[128];
        snprintf(fields, sizeof fields, "{\"seqno\":%s}", rows[i].given);
        if (rows[i].printed == NULL) {
            expect_refused(op_set(FSA_TYPE_JOBNEED, "J1", 1, fields), JOBNEED_DEFAULTS, 1, 0,
                           FSA_EINVAL, "invalid_value");
            continue;
        }
        char *out = apply_ok(op_set(FSA_TYPE_JOBNEED, "J1", 1, fields), "{}", 1, 0);
        snprintf(want, sizeof want, "{\"seqno\":%s}", rows[i].printed);
        if (strcmp(out, want) != 0)
            fail_msg("%s printed as %s", rows[i].given, out);
        fsa_model_free(out);
    }
}

/* Numbers that are not ints come back as the same double, wherever they are. */
static void test_fsa_model_apply__numbers_round_trip(void **state)
{
    (void)state;
    static const char *const nums[] = {"12.345678901234567",
                                       "0.1",
                                       "-77.59460000000001",
                                       "5e-324",
                                       "1.7976931348623157e308",
                                       "123456789012345678",
                                       "1e20",
                                       "-3.14159"};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        char fields[256];
        snprintf(fields, sizeof fields,
                 "{\"people_id\":\"P\",\"site_id\":\"S\",\"kind\":\"checkout\",\"at\":1,"
                 "\"lat\":%s,\"lon\":0,\"other_info\":{\"n\":[%s]}}",
                 nums[i], nums[i]);
        char *out = apply_ok(op_create(FSA_TYPE_ATTENDANCE, "A1", fields), NULL, 0, 0);
        char *lat = NULL, *info = NULL;
        assert_fsa_ok(fsa_model_get_field(out, "lat", &lat));
        assert_fsa_ok(fsa_model_get_field(out, "other_info", &info));
        if (strtod(lat, NULL) != strtod(nums[i], NULL))
            fail_msg("%s came back as %s", nums[i], lat);
        assert_true(strtod(strchr(info, '[') + 1, NULL) == strtod(nums[i], NULL));
        assert_fsa_ok(fsa_model_json_check(out, FSA_LIMIT_FIELDS_BYTES));
        fsa_model_free(lat);
        fsa_model_free(info);
        fsa_model_free(out);
    }
}

/* The text the model printed for a number before its fast path (format_number in model.c):
 * integers in int64 range as integers, else the first of %.15g, %.16g, %.17g that reads back. */
static void reference_number(double d, char *buf, size_t size)
{
    if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && (double)(int64_t)d == d) {
        snprintf(buf, size, "%" PRId64, (int64_t)d);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A number for the formatter: a short decimal (digits and a point placed at random, the kind
 * most fields hold), a random finite bit pattern, or a value next to one of the fast path's
 * edges (1e-4, 1e15, 15 significant digits), one ulp off or not. */
static double number_case(uint64_t *rng, int i)
{
    static const double edges[] = {1e-4,
                                   1e15,
                                   1e14,
                                   123456789012345.6,
                                   0.1 + 0.2,
                                   0.5,
                                   2.5e-5,
                                   99.995,
                                   1e-4 * 3,
                                   52.52,
                                   13.405,
                                   5e-324,
                                   1.7976931348623157e308,
                                   4503599627370495.5};
    double d;
    switch (i % 4) {
    case 0:
    case 1: {
        char text[64];
        int digits = 1 + (int)(xorshift(rng) % 17), point = (int)(xorshift(rng) % 22);
        uint64_t m = xorshift(rng) % 100000000000000000ULL; /* up to 17 digits */
        uint64_t cap = 1;
        for (int k = 0; k < digits; k++)
            cap *= 10;
        snprintf(text, sizeof text, "%" PRIu64 "e-%d", m % cap, point);
        d = strtod(text, NULL);
        break;
    }
    case 2: {
        uint64_t bits = xorshift(rng);
        memcpy(&d, &bits, sizeof d);
        if (!isfinite(d))
            d = 1.5;
        break;
    }
    default: {
        d = edges[xorshift(rng) % (sizeof edges / sizeof edges[0])];
        int step = (int)(xorshift(rng) % 3) - 1;
        uint64_t bits; /* one ulp up or down: every edge is positive and finite */
        memcpy(&bits, &d, sizeof bits);
        bits = step > 0 && d < 1.7976931348623157e308 ? bits + 1 : step < 0 ? bits - 1 : bits;
        memcpy(&d, &bits, sizeof d);
        break;
    }
    }
    return (xorshift(rng) & 1) != 0 ? -d : d;
}

/* Every number prints as the reference does, digit for digit (the fast path must not change a
 * byte of a stored view or a payload), and reads back as the same double. */
static void test_fsa_model_merge_patch__numbers_print_as_before(void **state)
{
    (void)state;
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    enum { PER = 64, ROUNDS = 400 };
    int fast_shaped = 0;
    for (int r = 0; r < ROUNDS; r++) {
        double nums[PER];
        char patch[PER * 40 + 16] = "{\"n\":[";
        for (int i = 0; i < PER; i++) {
            nums[i] = number_case(&rng, r * PER + i);
            char t[40];
            snprintf(t, sizeof t, "%s%.17g", i > 0 ? "," : "", nums[i]);
            test_cat(patch, sizeof patch, t);
        }
        test_cat(patch, sizeof patch, "]}");
        char *out = NULL;
        assert_fsa_ok(fsa_model_merge_patch("{}", patch, &out));
        const char *p = strchr(out, '[');
        assert_non_null(p);
        p++;
        for (int i = 0; i < PER; i++) {
            size_t len = strcspn(p, ",]");
            char want[40];
            reference_number(nums[i], want, sizeof want);
            if (strlen(want) != len || strncmp(p, want, len) != 0)
                fail_msg("%.17g printed as %.*s, before as %s", nums[i], (int)len, p, want);
            if (strtod(p, NULL) != nums[i])
                fail_msg("%.*s does not read back as %.17g", (int)len, p, nums[i]);
            if (strchr(want, 'e') == NULL && strchr(want, '.') != NULL && len <= 17)
                fast_shaped++;
            p += len + 1;
        }
        fsa_model_free(out);
    }
    /* the cases reach the fast path's shape (fixed notation, a fraction) often */
    assert_true(fast_shaped > ROUNDS * PER / 4);
}

/* ------------------------------------------------------------------------------------------ */
/* merge patch                                                                                */

struct patch_row {
    const char *target;
    const char *patch;
    const char *result;
};

static void test_fsa_model_merge_patch__rfc7396_appendix_a(void **state)
{
    (void)state;
    static const struct patch_row rows[] = {
        {"{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
        {"{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"},
        {"{\"a\":\"b\"}", "{\"a\":null}", "{}"},
        {"{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"},
        {"{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
        {"{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"},
        {"{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"},
        {"{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"},
        {"[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]"},
        {"{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]"},
        {"{\"a\":\"foo\"}", "null", "null"},
        {"{\"a\":\"foo\"}", "\"bar\"", "\"bar\""},
        {"{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"},
        {"[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}"},
        {"{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"},
        /* RFC 7396 section 3 */
        {"{\"title\":\"Goodbye!\",\"author\":{\"givenName\":\"John\",\"familyName\":\"Doe\"},"
         "\"tags\":[\"example\",\"sample\"],\"content\":\"This will be unchanged\"}",
         "{\"title\":\"Hello!\",\"phoneNumber\":\"+01-123-456-7890\",\"author\":{\"familyName\":"
         "null},\"tags\":[\"example\"]}",
         "{\"title\":\"Hello!\",\"author\":{\"givenName\":\"John\"},\"tags\":[\"example\"],"
         "\"content\":\"This will be unchanged\",\"phoneNumber\":\"+01-123-456-7890\"}"},
        /* more: a scalar target, a number target, deletion of an absent key */
        {"7", "{\"a\":{\"b\":null,\"c\":1}}", "{\"a\":{\"c\":1}}"},
        {"{\"a\":1}", "42", "42"},
        {"{\"a\":1}", "{\"z\":null}", "{\"a\":1}"},
        {"{\"a\":{\"b\":{\"c\":{\"d\":1}}}}", "{\"a\":{\"b\":{\"c\":{\"e\":2}}}}",
         "{\"a\":{\"b\":{\"c\":{\"d\":1,\"e\":2}}}}"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char *out = NULL;
        assert_fsa_ok(fsa_model_merge_patch(rows[i].target, rows[i].patch, &out));
        if (strcmp(out, rows[i].result) != 0)
            fail_msg("row %zu: %s + %s = %s, expected %s", i, rows[i].target, rows[i].patch, out,
                     rows[i].result);
        fsa_model_free(out);
    }
}

static void test_fsa_model_merge_patch__arguments(void **state)
{
    (void)state;
    char *out = NULL;
    assert_fsa_ok(fsa_model_merge_patch(NULL, "{\"a\":null,\"b\":1}", &out)); /* NULL is {} */
    assert_string_equal(out, "{\"b\":1}");
    fsa_model_free(out);
    char sentinel = 0;
    out = &sentinel;
    assert_int_equal(fsa_model_merge_patch("{}", NULL, &out), FSA_EINVAL);
    assert_null(out);
    assert_int_equal(fsa_model_merge_patch("{}", "{}", NULL), FSA_EINVAL);
    out = &sentinel;
    assert_int_equal(fsa_model_merge_patch("{", "{}", &out), FSA_EINVAL);
    assert_null(out);
    assert_int_equal(fsa_model_merge_patch("{}", "{\"a\":1,\"a\":2}", &out), FSA_EINVAL);
    assert_int_equal(fsa_model_merge_patch("{}", "{\"a\":1e999}", &out), FSA_EINVAL);
    assert_null(out);
}

/* Objects above the pairwise threshold take the sorted-index path; the result is the same. */
static void test_fsa_model_merge_patch__large_objects(void **state)
{
    (void)state;
    char target[4096] = "{", patch[4096] = "{", want[4096] = "{";
    for (int i = 0; i < 40; i++) {
        char m[64];
        if (i == 7)
            snprintf(m, sizeof m, ",\"k%d\":{\"a\":1,\"b\":2}", i);
        else
            snprintf(m, sizeof m, "%s\"k%d\":%d", i ? "," : "", i, i);
        CAT(target, m);
    }
    CAT(target, "}");
    /* 20 patch members in scrambled order: deletes, replacements, a nested merge, additions */
    CAT(patch, "\"k39\":null,\"new1\":{\"x\":null,\"y\":[1]},\"k7\":{\"b\":null,\"c\":3},"
               "\"k0\":\"zero\",\"k5\":null,\"k20\":{\"n\":null},\"absent\":null,"
               "\"k33\":[33],\"new2\":true");
    for (int i = 10; i < 21; i++) {
        if (i == 20)
            continue;
        char m[32];
        snprintf(m, sizeof m, ",\"k%d\":%d", i, -i);
        CAT(patch, m);
    }
    CAT(patch, "}");
    for (int i = 0; i < 39; i++) {
        char m[64];
        if (i == 5)
            continue;
        if (i == 0)
            snprintf(m, sizeof m, "\"k0\":\"zero\"");
        else if (i == 7)
            snprintf(m, sizeof m, ",\"k7\":{\"a\":1,\"c\":3}");
        else if (i == 20)
            snprintf(m, sizeof m, ",\"k20\":{}");
        else if (i == 33)
            snprintf(m, sizeof m, ",\"k33\":[33]");
        else if (i >= 10 && i < 20)
            snprintf(m, sizeof m, ",\"k%d\":%d", i, -i);
        else
            snprintf(m, sizeof m, ",\"k%d\":%d", i, i);
        CAT(want, m);
    }
    CAT(want, ",\"new1\":{\"y\":[1]},\"new2\":true}");
    char *out = NULL;
    assert_fsa_ok(fsa_model_merge_patch(target, patch, &out));
    assert_string_equal(out, want);
    fsa_model_free(out);

    /* the same through a merge op into a nested large object */
    char stored[4200];
    snprintf(stored, sizeof stored, "{\"other_info\":{\"big\":%s}}", target);
    char op_patch[4200];
    snprintf(op_patch, sizeof op_patch, "{\"big\":%s}", patch);
    char expected[4200];
    snprintf(expected, sizeof expected, "{\"other_info\":{\"big\":%s}}", want);
    expect_applied(op_merge(FSA_TYPE_JOBNEED, "J1", "other_info", op_patch), stored, 1, 0,
                   expected);

    /* duplicate keys in a large object are found too */
    char dup[1024] = "{";
    for (int i = 0; i < 30; i++) {
        char m[32];
        snprintf(m, sizeof m, "%s\"d%d\":%d", i ? "," : "", i % 29, i);
        CAT(dup, m);
    }
    CAT(dup, "}");
    out = NULL;
    assert_int_equal(fsa_model_merge_patch(dup, "{}", &out), FSA_EINVAL);
    assert_null(out);
}

/* ------------------------------------------------------------------------------------------ */
/* get_field, get_status                                                                      */

static void test_fsa_model_get_field__values(void **state)
{
    (void)state;
    const char *fields = "{ \"a\": 1, \"b\": {\"c\": [1, \"x\"]}, \"n\": 9007199254740991, "
                         "\"s\": \"t\\u00e9\", \"z\": null }";
    static const struct {
        const char *name;
        const char *value;
    } rows[] = {
        {"a", "1"},
        {"b", "{\"c\":[1,\"x\"]}"},
        {"n", "9007199254740991"},
        {"s", "\"t\xc3\xa9\""},
        {"z", "null"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char *out = NULL;
        assert_fsa_ok(fsa_model_get_field(fields, rows[i].name, &out));
        assert_string_equal(out, rows[i].value);
        fsa_model_free(out);
    }
    char sentinel = 0;
    char *out = &sentinel;
    assert_int_equal(fsa_model_get_field(fields, "c", &out), FSA_ENOTFOUND);
    assert_null(out);
    assert_int_equal(fsa_model_get_field("[1]", "a", &out), FSA_EINVAL);
    assert_int_equal(fsa_model_get_field("{\"a\":", "a", &out), FSA_EINVAL);
    assert_int_equal(fsa_model_get_field(NULL, "a", &out), FSA_EINVAL);
    assert_int_equal(fsa_model_get_field(fields, NULL, &out), FSA_EINVAL);
    assert_null(out);
    assert_int_equal(fsa_model_get_field(fields, "a", NULL), FSA_EINVAL);
}

static void test_fsa_model_get_status__per_type(void **state)
{
    (void)state;
    char st[FSA_STATUS_BYTES];
    assert_fsa_ok(fsa_model_get_status(JOBNEED_DEFAULTS, FSA_TYPE_JOBNEED, st));
    assert_string_equal(st, "ASSIGNED");
    assert_fsa_ok(fsa_model_get_status(TICKET_DEFAULTS, FSA_TYPE_TICKET, st));
    assert_string_equal(st, "NEW");
    /* it reads, it does not judge */
    assert_fsa_ok(fsa_model_get_status("{\"status\":\"WHATEVER\"}", FSA_TYPE_TICKET, st));
    assert_string_equal(st, "WHATEVER");

    static const struct {
        const char *fields;
        fsa_type_t type;
        fsa_status_t want;
    } rows[] = {
        {"{\"status\":\"NEW\"}", FSA_TYPE_JOBNEED, FSA_ENOTFOUND},
        {"{\"status\":3}", FSA_TYPE_TICKET, FSA_ENOTFOUND},
        {"{\"status\":null}", FSA_TYPE_TICKET, FSA_ENOTFOUND},
        {"{}", FSA_TYPE_TICKET, FSA_ENOTFOUND},
        {"{\"people_id\":\"P\"}", FSA_TYPE_ATTENDANCE, FSA_ENOTFOUND},
        {"{\"status\":\"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456\"}", FSA_TYPE_TICKET, FSA_EINVAL},
        {"[\"status\"]", FSA_TYPE_TICKET, FSA_EINVAL},
        {"{\"status\":", FSA_TYPE_TICKET, FSA_EINVAL},
        {"{}", FSA__TYPE_COUNT, FSA_EINVAL},
        {NULL, FSA_TYPE_TICKET, FSA_EINVAL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        snprintf(st, sizeof st, "junk");
        assert_int_equal(fsa_model_get_status(rows[i].fields, rows[i].type, st), rows[i].want);
        assert_string_equal(st, "");
    }
    assert_int_equal(fsa_model_get_status("{}", FSA_TYPE_TICKET, NULL), FSA_EINVAL);
}

/* ------------------------------------------------------------------------------------------ */
/* fsa_op_copy, fsa_op_clear, fsa_model_free                                                  */

static void test_fsa_op_copy__deep_copy(void **state)
{
    (void)state;
    fsa_op_t src = op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", "{\"a\":1}", 5);
    snprintf(src.group, sizeof src.group, "%s", "g1");
    fsa_op_t dst;
    memset(&dst, 0xAB, sizeof dst);
    assert_fsa_ok(fsa_op_copy(&dst, &src));
    assert_ptr_not_equal(dst.json, src.json);
    assert_string_equal(dst.json, "{\"a\":1}");
    assert_string_equal(dst.id, "T1");
    assert_string_equal(dst.group, "g1");
    assert_string_equal(dst.key, "ticket_history");
    assert_int_equal(dst.max_len, 5);
    assert_int_equal(dst.kind, FSA_OP_APPEND);
    src.json[2] = 'b';
    assert_string_equal(dst.json, "{\"a\":1}");
    fsa_op_clear(&src);
    assert_string_equal(dst.json, "{\"a\":1}"); /* outlives its source */
    fsa_op_clear(&dst);
    assert_null(dst.json);
    assert_string_equal(dst.id, "");
    assert_int_equal(dst.max_len, 0);

    /* no json */
    fsa_op_t inc = op_incr(FSA_TYPE_TICKET, "T1", "level", 3);
    assert_fsa_ok(fsa_op_copy(&dst, &inc));
    assert_null(dst.json);
    assert_int_equal(dst.by, 3);
    /* onto itself */
    assert_fsa_ok(fsa_op_copy(&dst, &dst));
    assert_int_equal(dst.by, 3);
    fsa_op_clear(&dst);
}

static void test_fsa_op_copy__null_arguments(void **state)
{
    (void)state;
    fsa_op_t op = op_create(FSA_TYPE_TICKET, "T1", "{}");
    assert_int_equal(fsa_op_copy(NULL, &op), FSA_EINVAL);
    assert_int_equal(fsa_op_copy(&op, NULL), FSA_EINVAL);
    fsa_op_clear(&op);
    fsa_op_clear(&op); /* twice is fine: the first zeroed it */
    fsa_op_clear(NULL);
    fsa_model_free(NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* A whole life: every op kind in turn, each result feeding the next.                         */

static void test_fsa_model_apply__ticket_lifecycle(void **state)
{
    (void)state;
    char *v1 = apply_ok(op_create(FSA_TYPE_TICKET, "T-9", "{\"priority\":\"HIGH\"}"), NULL, 0, 0);
    char *v2 = apply_ok(op_set(FSA_TYPE_TICKET, "T-9", 1, "{\"assignedto\":\"U1\"}"), v1, 1, 0);
    char *v3 = apply_ok(op_trans(FSA_TYPE_TICKET, "T-9", "status", "NEW", "OPEN"), v2, 2, 0);
    char *v4 = apply_ok(op_incr(FSA_TYPE_TICKET, "T-9", "level", 2), v3, 3, 0);
    char *v5 = apply_ok(op_append(FSA_TYPE_TICKET, "T-9", "ticketlog", "ticket_history",
                                  "{\"e\":\"escalated\"}", 0),
                        v4, 4, 0);
    char *v6 =
        apply_ok(op_merge(FSA_TYPE_TICKET, "T-9", "ticketlog", "{\"sla\":{\"h\":4}}"), v5, 5, 0);
    char *v7 = apply_ok(op_trans(FSA_TYPE_TICKET, "T-9", "status", "OPEN", "RESOLVED"), v6, 6, 0);
    char *v8 = apply_ok(op_trans(FSA_TYPE_TICKET, "T-9", "status", "RESOLVED", "CLOSED"), v7, 7, 0);
    assert_string_equal(v8, "{\"status\":\"CLOSED\",\"level\":2,\"assignedto\":\"U1\","
                            "\"ticketlog\":{\"ticket_history\":[{\"e\":\"escalated\"}],"
                            "\"sla\":{\"h\":4}},\"priority\":\"HIGH\"}");
    /* CLOSED is terminal: no way out, for the server either */
    for (size_t i = 0; i < 5; i++)
        expect_refused(op_trans(FSA_TYPE_TICKET, "T-9", "status", "CLOSED", TICKET_STATES[i]), v8,
                       8, FSA_APPLY_BY_SERVER, FSA_ETRANSITION, "invalid_transition");
    char *all[] = {v1, v2, v3, v4, v5, v6, v7, v8};
    for (size_t i = 0; i < 8; i++)
        fsa_model_free(all[i]);
}

/* ------------------------------------------------------------------------------------------ */
/* Allocation failures                                                                        */

/*
 * The torture test fails cJSON's n-th allocation for n = 0, 1, 2, ... until the call succeeds,
 * and checks that every failure is a clean FSA_ENOMEM: no output, the error set, nothing leaked
 * (ASan). The hooks still allocate with malloc and free, so the model's fsa_free() of printed text
 * stays right. Test-only state; the module itself has none.
 */
static long allocs_left = -1; /* -1: never fail */

static void *failing_malloc(size_t n)
{
    if (allocs_left == 0)
        return NULL;
    if (allocs_left > 0)
        allocs_left--;
    return fsa_malloc(n);
}

struct torture_row {
    fsa_op_t op;
    const char *fields;
    unsigned flags;
};

/* A create's fields: members drawn from what the fast path takes and what it leaves to the tree
 * path (escapes, numbers not in their printed form, objects with members, unknown or repeated
 * fields, values of the wrong kind), in any order, with or without whitespace. */
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *const create_values[] = {
    "\"P1\"",
    "\"a b\"",
    "\"\xc3\xa9\"",
    "\"x\\\"y\"",
    "\"\\u0041\"",
    "\"\\/\"",
    "\"\"",
    "\"ASSIGNED\"",
    "\"INPROGRESS\"",
    "\"NEW\"",
    "\"CLOSED\"",
    "\"checkin\"",
    "\"checkout\"",
    "\"bogus\"",
    "\"T-1.x:y_z\"",
    "0",
    "-0",
    "7",
    "-7",
    "12",
    "1.5",
    "1.50",
    "1e2",
    "1E2",
    "0.1",
    "-0.0",
    "52.52",
    "13.405",
    "77.5946",
    "1764090000000",
    "123456789012345",
    "1234567890123456",
    "9007199254740991",
    "9007199254740992",
    "1e400",
    "0.30000000000000004",
    "null",
    "true",
    "false",
    "{}",
    "{ }",
    "{\"a\":1}",
    "{\"ticket_history\":[]}",
    "[]",
    "[1,2]",
};

/* Values of one field kind, in the forms the fast path writes as they are and in others. */
typedef struct kind_values {
    const char *const *v;
    size_t n;
} kind_values_t;

#define KIND_VALUES(...)                                                                           \
    {                                                                                              \
        (const char *const[]){__VA_ARGS__},                                                        \
            sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)                      \
    }

static const kind_values_t kind_values[] = {
    [FSA_FIELD_STR] =
        KIND_VALUES("\"G-1\"", "\"a b\"", "\"\xc3\xa9\"", "\"x\\\"y\"", "\"\\u0041\"", "\"\""),
    [FSA_FIELD_STR_NULL] = KIND_VALUES("null", "\"T-1\"", "\"a b\"", "\"\\u0041\"", "\"\""),
    [FSA_FIELD_INT] = KIND_VALUES("0", "-0", "7", "-7", "1e2", "1.0", "1764090000000",
                                  "123456789012345", "-123456789012345", "1234567890123456",
                                  "9007199254740991", "9007199254740992", "-9007199254740992"),
    [FSA_FIELD_NUM] = KIND_VALUES("1.5", "1.50", "8"),
    [FSA_FIELD_NUM_NULL] =
        KIND_VALUES("null", "52.52", "1.50", "1e2", "0.1", "-0.0", "13.405", "0.30000000000000004",
                    "1e400", "-0", "8", "8.0", "1E-5", "0.0001", "-77.5946", "123456789.123456789"),
    [FSA_FIELD_OBJ] =
        KIND_VALUES("{}", "{ }", "{\n}", "{\"a\":1}", "{\"ticket_history\":[]}", "[]"),
    [FSA_FIELD_STATUS] = KIND_VALUES("\"ASSIGNED\"", "\"INPROGRESS\"", "\"NEW\"", "\"CLOSED\"",
                                     "\"bogus\"", "\"\\u0041SSIGNED\""),
    [FSA_FIELD_ENUM] = KIND_VALUES("\"checkin\"", "\"checkout\"", "\"bogus\"", "\"check\\u0069n\""),
};

static unsigned rand_next(uint64_t *s)
{
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return (unsigned)(*s >> 33);
}

/* The tree path's answer for op: fsa_model_entity_apply keeps the tree, which only it builds. */
static fsa_status_t create_by_tree(const fsa_op_t *op, char **out, fsa_model_err_t *err)
{
    fsa_model_entity_t *e = fsa_model_entity_new();
    assert_non_null(e);
    fsa_status_t st = fsa_model_entity_apply(e, op, NULL, 0, 0, out, err);
    fsa_model_entity_free(e);
    return st;
}

/* The fast path of a create (straight from its text) answers as the tree path, byte for byte,
 * error for error, defaults included (a field left out); the common creates take it (one
 * allocation: their text), and its allocation failing is FSA_ENOMEM. */
static void test_fsa_model_apply__a_create_prints_as_its_tree(void **state)
{
    (void)state;
    static const fsa_type_t types_[] = {FSA_TYPE_ATTENDANCE, FSA_TYPE_JOBNEED, FSA_TYPE_TICKET};
    static const char *const ws[] = {"", " ", "\n\t "};
    uint64_t seed = 26;
    size_t ok = 0;
    for (int round = 0; round < 20000; round++) {
        fsa_type_t t = types_[rand_next(&seed) % 3];
        size_t nf = 0;
        const fsa_field_def_t *defs = fsa_model_fields(t, &nf);
        char text[2048];
        const char *w = ws[rand_next(&seed) % 3];
        size_t n = (size_t)snprintf(text, sizeof text, "%s{%s", w, w);
        /* Each field mostly given (a required one nearly always), mostly with a value of its
         * kind in one of its forms, sometimes anything; now and then one the type lacks, or one
         * given twice. */
        bool first = true;
        for (size_t k = 0; k <= nf; k++) {
            size_t f = k;
            if (k == nf) {
                unsigned r = rand_next(&seed) % 20;
                if (r > 1)
                    break;
                f = r == 0 ? nf : rand_next(&seed) % nf; /* unknown, or twice */
            }
            if (f < nf && rand_next(&seed) % 10 >= (defs[f].required ? 9u : 6u))
                continue;
            const char *name = f < nf ? defs[f].name : "nope", *v;
            const kind_values_t *kv = f < nf ? &kind_values[defs[f].kind] : NULL;
            if (kv != NULL && rand_next(&seed) % 4 != 0)
                v = kv->v[rand_next(&seed) % kv->n];
            else
                v = create_values[rand_next(&seed) % COUNT(create_values)];
            n += (size_t)snprintf(text + n, sizeof text - n, "%s\"%s\"%s:%s%s%s", first ? "" : ",",
                                  name, w, w, v, w);
            first = false;
        }
        snprintf(text + n, sizeof text - n, "}%s", w);
        fsa_op_t op = op_create(t, "E1", text);
        char *fast = NULL, *tree = NULL;
        fsa_model_err_t ef, et;
        fsa_status_t sf = fsa_model_apply(&op, NULL, 0, 0, &fast, &ef);
        fsa_status_t st = create_by_tree(&op, &tree, &et);
        if (sf != st || (sf == FSA_OK && strcmp(fast, tree) != 0) ||
            (sf != FSA_OK &&
             (strcmp(ef.code, et.code) != 0 || strcmp(ef.message, et.message) != 0)))
            fail_msg("%s: %s %s [%s] against the tree's %s %s [%s]", text, fsa_status_str(sf),
                     fast != NULL ? fast : "", ef.message, fsa_status_str(st),
                     tree != NULL ? tree : "", et.message);
        ok += sf == FSA_OK;
        fsa_model_free(fast);
        fsa_model_free(tree);
        fsa_op_clear(&op);
    }
    assert_true(ok > 2000); /* enough of them applied to compare texts */
    /* A check-in takes the fast path: one allocation, its text. */
    fsa_op_t op = op_create(FSA_TYPE_ATTENDANCE, "A1", ATTENDANCE_GIVEN);
    char *out = NULL;
    fsa_alloc_fail_nth(ULONG_MAX);
    assert_fsa_ok(fsa_model_apply(&op, NULL, 0, 0, &out, NULL));
    assert_int_equal(fsa_alloc_count(), 1);
    fsa_alloc_fail_nth(0);
    fsa_model_free(out);
    fsa_model_err_t err;
    out = (char *)1;
    fsa_alloc_fail_nth(1);
    assert_int_equal(fsa_model_apply(&op, NULL, 0, 0, &out, &err), FSA_ENOMEM);
    assert_true(fsa_alloc_fault_fired());
    fsa_alloc_fail_nth(0);
    assert_null(out);
    assert_string_equal(err.code, "out_of_memory");
    fsa_op_clear(&op);
}

static void test_fsa_model_apply__allocation_failures(void **state)
{
    (void)state;
    const char *ticket = "{\"status\":\"OPEN\",\"level\":3,\"ticketlog\":{\"ticket_history\":"
                         "[1,2,{\"a\":[1.5]}],\"m\":{\"x\":1}},\"zzz\":[true]}";
    struct torture_row rows[] = {
        {op_create(FSA_TYPE_TICKET, "T1", "{\"level\":2,\"ticketlog\":{\"k\":[1,2.5]}}"), NULL, 0},
        /* other_info with members: the tree path (a create the fast path writes allocates once:
         * test_fsa_model_apply__a_create_prints_as_its_tree) */
        {op_create(FSA_TYPE_ATTENDANCE, "A1",
                   "{\"people_id\":\"P1\",\"site_id\":\"S1\",\"kind\":\"checkin\",\"at\":1,"
                   "\"lat\":12.9716,\"lon\":77.5946,\"other_info\":{\"k\":[1]}}"),
         NULL, 0},
        {op_set(FSA_TYPE_TICKET, "T1", 1, "{\"level\":9,\"assignedto\":\"U\",\"ticketlog\":{}}"),
         ticket, 0},
        {op_merge(FSA_TYPE_TICKET, "T1", "ticketlog",
                  "{\"m\":{\"x\":null,\"y\":{\"z\":null,\"w\":1}},\"n\":[1],"
                  "\"ticket_history\":null}"),
         ticket, 0},
        {op_merge(FSA_TYPE_JOBNEED, "J1", "other_info", "{\"a\":{\"b\":1}}"), "{}", 0},
        {op_incr(FSA_TYPE_TICKET, "T1", "level", 5), ticket, 0},
        {op_trans(FSA_TYPE_TICKET, "T1", "status", "OPEN", "RESOLVED"), ticket, 0},
        {op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "new", "{\"e\":[1,2]}", 0), ticket, 0},
        {op_append(FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history", "7", 2), ticket, 0},
    };
    /* What each row gives when no allocation fails: a run that got through after failures must
     * give the same, not merely something. */
    char *want[sizeof rows / sizeof rows[0]];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        want[i] = NULL;
        assert_fsa_ok(
            fsa_model_apply(&rows[i].op, rows[i].fields, 1, rows[i].flags, &want[i], NULL));
    }
    cJSON_Hooks hooks = {failing_malloc, free};
    cJSON_InitHooks(&hooks);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        for (long n = 0;; n++) {
            char sentinel = 0;
            char *out = &sentinel;
            fsa_model_err_t err;
            allocs_left = n;
            fsa_status_t st =
                fsa_model_apply(&rows[i].op, rows[i].fields, 1, rows[i].flags, &out, &err);
            allocs_left = -1;
            if (st == FSA_OK) {
                assert_non_null(out);
                assert_string_equal(out, want[i]);
                fsa_model_free(out);
                assert_true(n > 0); /* else the hooks never failed anything */
                break;
            }
            if (st != FSA_ENOMEM)
                fail_msg("row %zu, allocation %ld: %s (%s)", i, n, fsa_status_str(st), err.message);
            assert_null(out);
            assert_string_equal(err.code, "out_of_memory");
        }
        fsa_op_clear(&rows[i].op);
        fsa_model_free(want[i]);
    }
    for (long n = 0;; n++) {
        char *out = NULL, *field = NULL;
        char st_buf[FSA_STATUS_BYTES];
        allocs_left = n;
        fsa_status_t a =
            fsa_model_merge_patch(ticket, "{\"ticketlog\":{\"m\":null,\"q\":2}}", &out);
        fsa_status_t b = fsa_model_get_field(ticket, "ticketlog", &field);
        fsa_status_t c = fsa_model_get_status(ticket, FSA_TYPE_TICKET, st_buf);
        allocs_left = -1;
        assert_true(a == FSA_OK || (a == FSA_ENOMEM && out == NULL));
        assert_true(b == FSA_OK || (b == FSA_ENOMEM && field == NULL));
        assert_true(c == FSA_OK || c == FSA_ENOMEM);
        /* Whatever got through is exactly right (written out by hand). */
        if (a == FSA_OK)
            assert_string_equal(out, "{\"status\":\"OPEN\",\"level\":3,\"ticketlog\":{"
                                     "\"ticket_history\":[1,2,{\"a\":[1.5]}],\"q\":2},"
                                     "\"zzz\":[true]}");
        if (b == FSA_OK)
            assert_string_equal(field, "{\"ticket_history\":[1,2,{\"a\":[1.5]}],\"m\":{\"x\":1}}");
        if (c == FSA_OK)
            assert_string_equal(st_buf, "OPEN");
        fsa_model_free(out);
        fsa_model_free(field);
        if (a == FSA_OK && b == FSA_OK && c == FSA_OK)
            break;
    }
    cJSON_InitHooks(NULL);
}

static void test_fsa_model_same_values__compares_named_keys_only(void **state)
{
    (void)state;
    bool same = false;
    const char *a = "{\"x\":1,\"y\":{\"p\":1,\"q\":2},\"z\":3}";
    const char *b = "{\"y\":{\"q\":2,\"p\":1},\"x\":1.0,\"z\":4}";
    assert_int_equal(fsa_model_same_values(a, b, "{\"x\":0,\"y\":0}", &same), FSA_OK);
    assert_true(same); /* key order and 1 vs 1.0 do not matter */
    assert_int_equal(fsa_model_same_values(a, b, "{\"z\":0}", &same), FSA_OK);
    assert_false(same);
    assert_int_equal(fsa_model_same_values(a, b, "{\"w\":0}", &same), FSA_OK);
    assert_true(same); /* absent from both */
    assert_int_equal(fsa_model_same_values(a, "{}", "{\"x\":0}", &same), FSA_OK);
    assert_false(same); /* absent from one */
    assert_int_equal(fsa_model_same_values(a, "[1]", "{\"x\":0}", &same), FSA_EINVAL);
    assert_int_equal(fsa_model_same_values(a, b, "{bad", &same), FSA_EINVAL);
    assert_int_equal(fsa_model_same_values(NULL, b, "{}", &same), FSA_EINVAL);
    assert_int_equal(fsa_model_same_values(a, b, "{}", NULL), FSA_EINVAL);
}

static void test_fsa_model_project__picks_keys_with_null_for_absent(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(
        fsa_model_project("{\"seqno\":3,\"expirytime\":9}", "{\"seqno\":5,\"nope\":1}", &out),
        FSA_OK);
    assert_string_equal(out, "{\"seqno\":3,\"nope\":null}");
    fsa_model_free(out);
    assert_int_equal(fsa_model_project(NULL, "{\"a\":1}", &out), FSA_OK);
    assert_string_equal(out, "{\"a\":null}");
    fsa_model_free(out);
    assert_int_equal(fsa_model_project("{}", "[]", &out), FSA_EINVAL);
    assert_null(out);
    assert_int_equal(fsa_model_project("{}", NULL, &out), FSA_EINVAL);
}

/* An earlier set (seqno 5 over 0, notes "a" over null) that will not apply leaves a later set's
 * prior: a value it gave goes back to what was before it; a value it did not give stays
 * (expirytime), as does one that differs from what it gave (something after it changed it). */
static void test_fsa_model_prior_without__takes_back_only_what_the_set_gave(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(fsa_model_prior_without("{\"seqno\":5,\"expirytime\":9,\"other_info\":\"a\"}",
                                             "{\"seqno\":5,\"other_info\":\"a\"}",
                                             "{\"seqno\":0,\"other_info\":null}", &out),
                     FSA_OK);
    assert_string_equal(out, "{\"seqno\":0,\"expirytime\":9,\"other_info\":null}");
    fsa_model_free(out);
    assert_int_equal(
        fsa_model_prior_without("{\"seqno\":7}", "{\"seqno\":5}", "{\"seqno\":0}", &out), FSA_OK);
    assert_null(out); /* nothing changed */
    assert_int_equal(fsa_model_prior_without("{\"seqno\":7}", "{\"x\":1}", "{\"x\":0}", &out),
                     FSA_OK);
    assert_null(out);
    assert_int_equal(fsa_model_prior_without("{bad", "{}", "{}", &out), FSA_EINVAL);
    assert_null(out);
    assert_int_equal(fsa_model_prior_without("{}", "{}", "[]", &out), FSA_EINVAL);
}

int main(void)
{
    /* cJSON's allocations fail in the allocation sweeps too (storage/libs.c does this in every
     * program; this test links the model alone) */
    cJSON_Hooks hooks = {.malloc_fn = fsa_malloc, .free_fn = fsa_free};
    cJSON_InitHooks(&hooks);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_type_name__round_trip),
        cmocka_unit_test(test_fsa_op_kind_name__round_trip),
        cmocka_unit_test(test_fsa_model_fields__protocol_table),
        cmocka_unit_test(test_fsa_model_entity_apply__chain_matches_apply),
        cmocka_unit_test(test_fsa_model_entity_replay__a_run_prints_what_one_by_one_did),
        cmocka_unit_test(test_fsa_model_apply__prints_as_the_merge_patch_does),
        cmocka_unit_test(test_fsa_model_entity_apply_strict__enomem_never_a_slower_success),
        cmocka_unit_test(test_fsa_model_fields__unknown_type),
        cmocka_unit_test(test_fsa_model_field__unknown_names),
        cmocka_unit_test(test_fsa_model_id_valid__table),
        cmocka_unit_test(test_fsa_model_transition_allowed__every_pair),
        cmocka_unit_test(test_fsa_model_transition_allowed__message_examples),
        cmocka_unit_test(test_fsa_model_transition_allowed__bad_arguments),
        cmocka_unit_test(test_fsa_model_status_terminal__table),
        cmocka_unit_test(test_fsa_model_status_known__per_type),
        cmocka_unit_test(test_fsa_model_apply__create_fills_defaults),
        cmocka_unit_test(test_fsa_model_apply__create_without_fields_and_without_fix),
        cmocka_unit_test(test_fsa_model_apply__create_keeps_protocol_order),
        cmocka_unit_test(test_fsa_model_apply__create_with_known_status),
        cmocka_unit_test(test_fsa_model_apply__create_refusals),
        cmocka_unit_test(test_fsa_model_apply__create_on_existing_conflicts),
        cmocka_unit_test(test_fsa_model_apply__missing_entity_not_found),
        cmocka_unit_test(test_fsa_model_apply__set_replaces_fields_in_place),
        cmocka_unit_test(test_fsa_model_apply__set_stale_base_version_conflicts),
        cmocka_unit_test(test_fsa_model_apply__set_refusals),
        cmocka_unit_test(test_fsa_model_apply__merge_patches_object_field),
        cmocka_unit_test(test_fsa_model_apply__merge_refusals),
        cmocka_unit_test(test_fsa_model_apply__increment),
        cmocka_unit_test(test_fsa_model_apply__increment_overflow),
        cmocka_unit_test(test_fsa_model_apply__increment_refusals),
        cmocka_unit_test(test_fsa_model_apply__transition_precondition),
        cmocka_unit_test(test_fsa_model_apply__transition_refusals),
        cmocka_unit_test(test_fsa_model_apply__append),
        cmocka_unit_test(test_fsa_model_apply__append_max_len_drops_oldest),
        cmocka_unit_test(test_fsa_model_apply__append_refusals),
        cmocka_unit_test(test_fsa_model_apply__attendance_is_immutable),
        cmocka_unit_test(test_fsa_model_apply__unknown_type_kind_flags),
        cmocka_unit_test(test_fsa_model_apply__bad_ids),
        cmocka_unit_test(test_fsa_model_apply__stored_fields_malformed),
        cmocka_unit_test(test_fsa_model_apply__null_arguments),
        cmocka_unit_test(test_fsa_model_validate_op__each_kind_without_the_entity),
        cmocka_unit_test(test_fsa_model_validate_op__server_only_edge),
        cmocka_unit_test(test_fsa_model_json_check__nesting),
        cmocka_unit_test(test_fsa_model_apply__result_too_deep),
        cmocka_unit_test(test_fsa_model_json_check__string_length),
        cmocka_unit_test(test_fsa_model_json_check__size),
        cmocka_unit_test(test_fsa_model_apply__result_too_large),
        cmocka_unit_test(test_fsa_model_json_check__syntax_table),
        cmocka_unit_test(test_fsa_model_apply__int_fields_are_exact),
        cmocka_unit_test(test_fsa_model_apply__numbers_round_trip),
        cmocka_unit_test(test_fsa_model_merge_patch__numbers_print_as_before),
        cmocka_unit_test(test_fsa_model_merge_patch__rfc7396_appendix_a),
        cmocka_unit_test(test_fsa_model_merge_patch__arguments),
        cmocka_unit_test(test_fsa_model_merge_patch__large_objects),
        cmocka_unit_test(test_fsa_model_get_field__values),
        cmocka_unit_test(test_fsa_model_get_status__per_type),
        cmocka_unit_test(test_fsa_op_copy__deep_copy),
        cmocka_unit_test(test_fsa_op_copy__null_arguments),
        cmocka_unit_test(test_fsa_model_apply__ticket_lifecycle),
        cmocka_unit_test(test_fsa_model_apply__a_create_prints_as_its_tree),
        cmocka_unit_test(test_fsa_model_apply__allocation_failures),
        cmocka_unit_test(test_fsa_model_same_values__compares_named_keys_only),
        cmocka_unit_test(test_fsa_model_project__picks_keys_with_null_for_absent),
        cmocka_unit_test(test_fsa_model_prior_without__takes_back_only_what_the_set_gave),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
