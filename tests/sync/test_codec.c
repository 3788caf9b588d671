/* fieldsync tests: sync/codec (push bodies, results, pull answers, errors, devices; limits). */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "port/alloc.h"
#include "sync/codec.h"
#include "tests/test_util.h"

static void make_op(fsa_op_t *op, fsa_op_kind_t kind, const char *id, const char *json)
{
    memset(op, 0, sizeof *op);
    snprintf(op->op_id, sizeof op->op_id, "00000000-0000-4000-8000-%012d", (int)kind + 1);
    op->seq = 7;
    op->at_ms = 1764090000123;
    op->kind = kind;
    op->type = FSA_TYPE_TICKET;
    snprintf(op->id, sizeof op->id, "%s", id);
    if (json != NULL)
        op->json = fsa_strdup(json);
}

static void test_fsa_codec_push__round_trip_every_kind(void **state)
{
    (void)state;
    fsa_op_t ops[6];
    make_op(&ops[0], FSA_OP_CREATE, "T1", "{\"priority\":\"HIGH\"}");
    make_op(&ops[1], FSA_OP_SET, "T1", "{\"assignedto\":\"p\\\"1\"}");
    ops[1].base_version = 3;
    snprintf(ops[1].group, sizeof ops[1].group, "g-1");
    make_op(&ops[2], FSA_OP_MERGE, "T1", "{\"a\":{\"b\":null}}");
    snprintf(ops[2].field, sizeof ops[2].field, "ticketlog");
    make_op(&ops[3], FSA_OP_INCREMENT, "T1", NULL);
    snprintf(ops[3].field, sizeof ops[3].field, "level");
    ops[3].by = -9007199254740991LL;
    make_op(&ops[4], FSA_OP_TRANSITION, "T1", NULL);
    snprintf(ops[4].field, sizeof ops[4].field, "status");
    snprintf(ops[4].from, sizeof ops[4].from, "NEW");
    snprintf(ops[4].to, sizeof ops[4].to, "OPEN");
    make_op(&ops[5], FSA_OP_APPEND, "T1", "[1,\"x\"]");
    snprintf(ops[5].field, sizeof ops[5].field, "ticketlog");
    snprintf(ops[5].key, sizeof ops[5].key, "ticket_history");
    ops[5].max_len = 50;

    char *body = NULL;
    size_t len = 0;
    assert_fsa_ok(fsa_codec_encode_push("batch-1", ops, 6, &body, &len));
    assert_int_equal(strlen(body), len);
    fsa_codec_push_t p;
    fsa_model_err_t err;
    assert_fsa_ok(fsa_codec_decode_push(body, len, &p, &err));
    assert_string_equal(p.batch_id, "batch-1");
    assert_int_equal(p.count, 6);
    for (size_t i = 0; i < 6; i++) {
        const fsa_op_t *a = &ops[i], *b = &p.ops[i].op;
        assert_string_equal(p.ops[i].reject.code, "");
        assert_string_equal(a->op_id, b->op_id);
        assert_int_equal(a->seq, b->seq);
        assert_int_equal(a->at_ms, b->at_ms);
        assert_int_equal(a->kind, b->kind);
        assert_int_equal(a->type, b->type);
        assert_string_equal(a->id, b->id);
        assert_string_equal(a->group, b->group);
        assert_string_equal(a->field, b->field);
        assert_int_equal(a->base_version, b->base_version);
        assert_int_equal(a->by, b->by);
        assert_string_equal(a->from, b->from);
        assert_string_equal(a->to, b->to);
        assert_string_equal(a->key, b->key);
        assert_int_equal(a->max_len, b->max_len);
        if (a->json != NULL)
            assert_string_equal(a->json, b->json);
        else
            assert_null(b->json);
    }
    fsa_codec_push_free(&p);
    fsa_codec_push_free(&p); /* cleared: a second free is harmless */
    fsa_codec_free(body);
    for (size_t i = 0; i < 6; i++)
        fsa_op_clear(&ops[i]);
}

static void test_fsa_codec_encode_push__invalid(void **state)
{
    (void)state;
    fsa_op_t op;
    char *body = (char *)1;
    size_t len = 99;
    static const char *const not_json[] = {"{not json", "{\"a\":1} x", "{\"a\":1}}]]",
                                           "{\"a\": 1}}"};
    for (size_t i = 0; i < sizeof not_json / sizeof not_json[0]; i++) {
        make_op(&op, FSA_OP_CREATE, "T1", not_json[i]);
        if (fsa_codec_encode_push("b", &op, 1, &body, &len) != FSA_EINVAL)
            fail_msg("sent: %s", not_json[i]);
        assert_null(body);
        assert_int_equal(len, 0);
        fsa_op_clear(&op);
    }
    make_op(&op, FSA_OP_CREATE, "T1", " {\"a\": 1} \n"); /* whitespace around is fine */
    assert_fsa_ok(fsa_codec_encode_push("b", &op, 1, &body, &len));
    assert_non_null(strstr(body, "\"fields\":{\"a\":1}"));
    fsa_codec_free(body);
    fsa_op_clear(&op);
    /* A create without fields (PROTOCOL.md section 7, amendment 1) is sent without them. */
    make_op(&op, FSA_OP_CREATE, "T1", NULL);
    assert_fsa_ok(fsa_codec_encode_push("b", &op, 1, &body, &len));
    assert_null(strstr(body, "fields"));
    fsa_codec_free(body);
    body = (char *)1;
    assert_int_equal(fsa_codec_encode_push("bad id", &op, 0, &body, &len), FSA_EINVAL);
    assert_int_equal(fsa_codec_encode_push("b", &op, FSA_LIMIT_BATCH_OPS + 1, &body, &len),
                     FSA_ETOOLARGE);
    op.kind = (fsa_op_kind_t)42;
    assert_int_equal(fsa_codec_encode_push("b", &op, 1, &body, &len), FSA_EINVAL);
    fsa_op_clear(&op);
}

/* Decodes body and checks the status and code. */
static void expect_decode(const char *body, fsa_status_t want, const char *code)
{
    fsa_codec_push_t p;
    fsa_model_err_t err;
    fsa_status_t st = fsa_codec_decode_push(body, strlen(body), &p, &err);
    if (st != want)
        fail_msg("%s: got %d (%s), want %d", body, (int)st, err.message, (int)want);
    if (st != FSA_OK) {
        assert_string_equal(err.code, code);
        assert_int_equal(p.count, 0);
        assert_null(p.ops);
    }
    fsa_codec_push_free(&p);
}

static void test_fsa_codec_decode_push__malformed_shapes(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "nul",
        "{",
        "[]",
        "42",
        "{\"batch_id\":\"b\"}",
        "{\"ops\":[]}",
        "{\"batch_id\":1,\"ops\":[]}",
        "{\"batch_id\":\"b\",\"ops\":{}}",
        "{\"batch_id\":\"b\",\"ops\":[]}x",
        "{\"batch_id\":\"b\",\"ops\":[[]]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"seq\":1,\"at\":1,\"kind\":\"create\",\"type\":\"ticket\","
        "\"id\":\"T\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"a "
        "b\",\"seq\":1,\"at\":1,\"kind\":\"create\",\"type\":\"ticket\",\"id\":\"T\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"0123456789012345678901234567890123456\",\"seq\":"
        "1,\"at\":1,\"kind\":\"create\",\"type\":\"ticket\",\"id\":\"T\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"a\",\"seq\":\"1\",\"at\":1,\"kind\":\"create\","
        "\"type\":\"ticket\",\"id\":\"T\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"a\",\"seq\":1.5,\"at\":1,\"kind\":\"create\","
        "\"type\":\"ticket\",\"id\":\"T\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"a\",\"seq\":1,\"at\":1e300,\"kind\":\"create\","
        "\"type\":\"ticket\",\"id\":\"T\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"a\",\"seq\":1,\"at\":1,\"kind\":3,\"type\":"
        "\"ticket\",\"id\":\"T\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"a\",\"seq\":1,\"at\":1,\"kind\":\"create\","
        "\"type\":null,\"id\":\"T\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"a\",\"seq\":1,\"at\":1,\"kind\":\"create\","
        "\"type\":\"ticket\",\"id\":\"T\",\"group\":5}]}",
        /* What cJSON cannot keep as it is: a NUL in a string (the op id read as "o1", the id as
         * "T"), a number out of a double's range (read as infinity, printed as null: the patch
         * deleted the history), an integer past 2^53 - 1 (9007199254740993 read as 2^53). */
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\\u0000zzz\",\"seq\":1,\"at\":1,\"kind\":"
        "\"create\",\"type\":\"ticket\",\"id\":\"T\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"a\",\"seq\":1,\"at\":1,\"kind\":\"create\","
        "\"type\":\"ticket\",\"id\":\"T\\uZZZZ1\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"a\",\"seq\":1,\"at\":1,\"kind\":\"merge\","
        "\"type\":\"ticket\",\"id\":\"T\",\"field\":\"ticketlog\",\"patch\":{\"ticket_history\":"
        "1e999}}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"a\",\"seq\":1,\"at\":1,\"kind\":\"create\","
        "\"type\":\"attendance\",\"id\":\"A\",\"fields\":{\"lat\":-1e400}}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"a\",\"seq\":9007199254740993,\"at\":1,"
        "\"kind\":\"create\",\"type\":\"ticket\",\"id\":\"T\"}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_decode(bad[i], FSA_EINVAL, "malformed");
    /* 2^53 - 1 is still a number that keeps its value */
    const char *edge = "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"a\",\"seq\":9007199254740991,"
                       "\"at\":1,\"kind\":\"create\",\"type\":\"ticket\",\"id\":\"T\"}]}";
    fsa_codec_push_t ok;
    assert_fsa_ok(fsa_codec_decode_push(edge, strlen(edge), &ok, NULL));
    assert_int_equal(ok.ops[0].op.seq, INT64_C(9007199254740991));
    fsa_codec_push_free(&ok);
    /* an increment by -2^53: that op is rejected */
    const char *by = "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"a\",\"seq\":1,\"at\":1,\"kind\":"
                     "\"increment\",\"type\":\"ticket\",\"id\":\"T\",\"field\":\"level\",\"by\":"
                     "-9007199254740992}]}";
    assert_fsa_ok(fsa_codec_decode_push(by, strlen(by), &ok, NULL));
    assert_string_equal(ok.ops[0].reject.code, "invalid_value");
    fsa_codec_push_free(&ok);
    fsa_codec_push_t p;
    assert_int_equal(fsa_codec_decode_push(NULL, 3, &p, NULL), FSA_EINVAL);
}

static void test_fsa_codec_decode_push__per_op_rejections(void **state)
{
    (void)state;
    const char *body =
        "{\"batch_id\":\"b\",\"ops\":["
        "{\"op_id\":\"o1\",\"seq\":1,\"at\":1,\"kind\":\"fly\",\"type\":\"ticket\",\"id\":\"T\"},"
        "{\"op_id\":\"o2\",\"seq\":2,\"at\":1,\"kind\":\"create\",\"type\":\"boat\",\"id\":\"T\","
        "\"fields\":{}},"
        "{\"op_id\":\"o3\",\"seq\":3,\"at\":1,\"kind\":\"create\",\"type\":\"ticket\",\"id\":\"T "
        "T\",\"fields\":{}},"
        "{\"op_id\":\"o4\",\"seq\":4,\"at\":1,\"kind\":\"create\",\"type\":\"ticket\",\"id\":\"T\","
        "\"fields\":[]},"
        "{\"op_id\":\"o5\",\"seq\":5,\"at\":1,\"kind\":\"increment\",\"type\":\"ticket\",\"id\":"
        "\"T\",\"field\":\"level\",\"by\":\"1\"},"
        "{\"op_id\":\"o6\",\"seq\":6,\"at\":1,\"kind\":\"increment\",\"type\":\"ticket\",\"id\":"
        "\"T\",\"field\":\"a_field_name_that_is_far_too_long_to_exist\",\"by\":1},"
        "{\"op_id\":\"o7\",\"seq\":7,\"at\":1,\"kind\":\"append\",\"type\":\"ticket\",\"id\":\"T\","
        "\"field\":\"ticketlog\",\"key\":\"k\",\"item\":1,\"max_len\":-1},"
        "{\"op_id\":\"o8\",\"seq\":8,\"at\":1,\"kind\":\"set\",\"type\":\"ticket\",\"id\":\"T\","
        "\"fields\":{}},"
        "{\"op_id\":\"o9\",\"seq\":9,\"at\":1,\"kind\":\"transition\",\"type\":\"ticket\",\"id\":"
        "\"T\",\"field\":\"status\",\"from\":\"NEW\"},"
        "{\"op_id\":\"o10\",\"seq\":10,\"at\":1,\"kind\":\"append\",\"type\":\"ticket\",\"id\":"
        "\"T\",\"field\":\"ticketlog\",\"key\":\"k\"},"
        "{\"op_id\":\"o11\",\"seq\":11,\"at\":1,\"kind\":\"increment\",\"type\":\"ticket\",\"id\":"
        "\"T\",\"field\":\"level\",\"by\":2},"
        "{\"op_id\":\"o12\",\"seq\":12,\"at\":1,\"kind\":\"create\",\"type\":\"ticket\",\"id\":"
        "\"T\"},"
        "{\"op_id\":\"o13\",\"seq\":13,\"at\":1,\"kind\":\"increment\",\"type\":\"ticket\",\"id\":"
        "\"T\",\"field\":5,\"by\":1},"
        "{\"op_id\":\"o14\",\"seq\":14,\"at\":1,\"kind\":\"increment\",\"type\":\"ticket\",\"id\":"
        "\"T\",\"by\":1}"
        "]}";
    const char *codes[] = {"invalid_value",
                           "unknown_type",
                           "invalid_value",
                           "invalid_value",
                           "invalid_value",
                           "unknown_field",
                           "invalid_value",
                           "invalid_value",
                           "invalid_value",
                           "invalid_value",
                           "",
                           "",
                           "invalid_value",  /* a field name of the wrong type, */
                           "invalid_value"}; /* or none: not unknown_field */
    fsa_codec_push_t p;
    fsa_model_err_t err;
    assert_fsa_ok(fsa_codec_decode_push(body, strlen(body), &p, &err));
    assert_int_equal(p.count, 14);
    for (size_t i = 0; i < p.count; i++) {
        if (strcmp(p.ops[i].reject.code, codes[i]) != 0)
            fail_msg("op %zu: code '%s', want '%s'", i, p.ops[i].reject.code, codes[i]);
        char want_id[32];
        snprintf(want_id, sizeof want_id, "o%zu", i + 1);
        assert_string_equal(p.ops[i].op.op_id, want_id);
    }
    assert_int_equal(p.ops[10].op.by, 2);
    /* A create without fields (PROTOCOL.md section 7, amendment 1): accepted, json NULL. */
    assert_null(p.ops[11].op.json);
    fsa_codec_push_free(&p);
}

static void test_fsa_codec_decode_push__limits(void **state)
{
    (void)state;
    /* Nesting: a value 32 deep passes, 33 deep is too large, 50000 deep is refused cheaply. */
    size_t cap = 600000;
    char *b = fsa_malloc(cap);
    assert_non_null(b);
    const char *head =
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o\",\"seq\":1,\"at\":1,\"kind\":"
        "\"merge\",\"type\":\"ticket\",\"id\":\"T\",\"field\":\"ticketlog\",\"patch\":";
    const size_t depths[] = {32, 33, 50000};
    const fsa_status_t want[] = {FSA_OK, FSA_ETOOLARGE, FSA_ETOOLARGE};
    for (size_t k = 0; k < 3; k++) {
        size_t n = (size_t)snprintf(b, cap, "%s", head);
        for (size_t i = 0; i + 1 < depths[k]; i++)
            n += (size_t)snprintf(b + n, cap - n, "{\"a\":");
        n += (size_t)snprintf(b + n, cap - n, "{}");
        for (size_t i = 0; i + 1 < depths[k]; i++)
            b[n++] = '}';
        n += (size_t)snprintf(b + n, cap - n, "}]}");
        fsa_codec_push_t p;
        fsa_model_err_t err;
        fsa_status_t st = fsa_codec_decode_push(b, n, &p, &err);
        if (st != want[k])
            fail_msg("depth %zu: %d (%s)", depths[k], (int)st, err.message);
        fsa_codec_push_free(&p);
    }
    /* Brackets inside strings do not count. */
    assert_int_equal(fsa_codec_json_depth("[\"[[[[\\\"[[[\"]", 13, 10), 1);
    assert_int_equal(fsa_codec_json_depth("{\"a\":[{}]}", 10, 10), 3);
    assert_int_equal(fsa_codec_json_depth("[[[[", 4, 2), 3);
    /* The values, the nodes a parser makes: 1 + commas + containers that are not empty, outside
     * strings, cut at the limit plus one. An empty container is one value ("[]," was two). */
    assert_int_equal(fsa_codec_json_values("5", 1, 10), 1);
    assert_int_equal(fsa_codec_json_values("[]", 2, 10), 1);
    assert_int_equal(fsa_codec_json_values("[ \n]", 4, 10), 1);
    assert_int_equal(fsa_codec_json_values("[[],{},[ ]]", 11, 10), 4);
    assert_int_equal(fsa_codec_json_values("{ \"a\" : [ 0 ] }", 15, 10), 3);
    assert_int_equal(fsa_codec_json_values("[[],[],[],[]]", 13, 2), 3);
    assert_int_equal(fsa_codec_json_values("[1,2,{\"a\":3}]", 13, 10), 5);
    assert_int_equal(fsa_codec_json_values("[\",[{\\\",\"]", 10, 10), 2);
    assert_int_equal(fsa_codec_json_values("[0,0,0,0,0,0]", 13, 3), 4);
    assert_int_equal(fsa_codec_json_values(NULL, 0, 3), 0);
    /* Deep text does not stop the count of values, nor many values the depth. */
    assert_int_equal(fsa_codec_json_values("[[[[[[1,2]]]]]]", 15, 100), 8);
    assert_int_equal(fsa_codec_json_depth("[1,2,3,4,5,6,[7]]", 17, 4), 2);
    fsa_free(b);

    /* A string of exactly the limit passes, one byte more is too large. */
    cap = FSA_LIMIT_STRING_BYTES + 200;
    b = fsa_malloc(cap);
    assert_non_null(b);
    for (size_t extra = 0; extra < 2; extra++) {
        size_t n = (size_t)snprintf(b, cap, "{\"batch_id\":\"b\",\"ops\":[],\"x\":\"");
        memset(b + n, 'y', FSA_LIMIT_STRING_BYTES + extra);
        n += FSA_LIMIT_STRING_BYTES + extra;
        n += (size_t)snprintf(b + n, cap - n, "\"}");
        fsa_codec_push_t p;
        fsa_model_err_t err;
        fsa_status_t st = fsa_codec_decode_push(b, n, &p, &err);
        assert_int_equal(st, extra ? FSA_ETOOLARGE : FSA_OK);
        fsa_codec_push_free(&p);
    }
    fsa_free(b);

    /* Body size and op count. */
    cap = FSA_LIMIT_BODY_BYTES + 10;
    b = fsa_malloc(cap);
    assert_non_null(b);
    memset(b, ' ', cap);
    fsa_codec_push_t p;
    fsa_model_err_t err;
    assert_int_equal(fsa_codec_decode_push(b, FSA_LIMIT_BODY_BYTES + 1, &p, &err), FSA_ETOOLARGE);
    assert_string_equal(err.code, "too_large");
    for (int count = FSA_LIMIT_BATCH_OPS; count <= FSA_LIMIT_BATCH_OPS + 1; count++) {
        size_t n = (size_t)snprintf(b, cap, "{\"batch_id\":\"b\",\"ops\":[");
        for (int i = 0; i < count; i++)
            n += (size_t)snprintf(b + n, cap - n,
                                  "%s{\"op_id\":\"o%d\",\"seq\":%d,\"at\":1,\"kind\":\"increment\","
                                  "\"type\":\"ticket\",\"id\":\"T\",\"field\":\"level\",\"by\":1}",
                                  i ? "," : "", i, i);
        n += (size_t)snprintf(b + n, cap - n, "]}");
        fsa_status_t st = fsa_codec_decode_push(b, n, &p, &err);
        assert_int_equal(st, count > FSA_LIMIT_BATCH_OPS ? FSA_ETOOLARGE : FSA_OK);
        if (st == FSA_OK)
            assert_int_equal(p.count, (size_t)count);
        fsa_codec_push_free(&p);
    }
    fsa_free(b);
}

static void test_fsa_codec_results__round_trip(void **state)
{
    (void)state;
    fsa_codec_result_t in[4];
    memset(in, 0, sizeof in);
    snprintf(in[0].op_id, sizeof in[0].op_id, "a");
    in[0].status = FSA_RESULT_APPLIED;
    in[0].version = 7;
    snprintf(in[1].op_id, sizeof in[1].op_id, "b");
    in[1].status = FSA_RESULT_DUPLICATE;
    in[1].original = FSA_RESULT_APPLIED;
    in[1].version = 7;
    snprintf(in[2].op_id, sizeof in[2].op_id, "c");
    in[2].status = FSA_RESULT_CONFLICT;
    in[2].has_current = true;
    in[2].current_version = 9;
    in[2].current_fields = fsa_strdup("{\"status\":\"OPEN\",\"level\":2}");
    snprintf(in[2].code, sizeof in[2].code, "conflict");
    snprintf(in[3].op_id, sizeof in[3].op_id, "d");
    in[3].status = FSA_RESULT_REJECTED;
    snprintf(in[3].code, sizeof in[3].code, "invalid_transition");
    snprintf(in[3].message, sizeof in[3].message, "NEW→CLOSED is not allowed");
    char *text = NULL;
    size_t len = 0;
    assert_fsa_ok(fsa_codec_encode_results(in, 4, 1764090000000, &text, &len));
    /* The text cJSON printed for these results, byte for byte (the writer is direct now). */
    assert_string_equal(
        text,
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"applied\",\"version\":7},"
        "{\"op_id\":\"b\",\"status\":\"duplicate\",\"version\":7,\"original\":\"applied\"},"
        "{\"op_id\":\"c\",\"status\":\"conflict\",\"current\":{\"version\":9,\"fields\":"
        "{\"status\":\"OPEN\",\"level\":2}},\"error\":{\"code\":\"conflict\",\"message\":\"\"}},"
        "{\"op_id\":\"d\",\"status\":\"rejected\",\"error\":{\"code\":"
        "\"invalid_transition\",\"message\":\"NEW→CLOSED is not allowed\"}}],"
        "\"server_time\":1764090000000}");
    assert_int_equal(len, strlen(text));
    fsa_codec_result_t *out = NULL;
    size_t n = 0;
    int64_t t = 0;
    assert_fsa_ok(fsa_codec_decode_results(text, len, &out, &n, &t));
    assert_int_equal(n, 4);
    assert_int_equal(t, 1764090000000);
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(out[i].op_id, in[i].op_id);
        assert_int_equal(out[i].status, in[i].status);
        assert_int_equal(out[i].version, in[i].version);
        assert_string_equal(out[i].code, in[i].code);
        assert_string_equal(out[i].message, in[i].message);
    }
    assert_int_equal(out[1].original, FSA_RESULT_APPLIED);
    assert_true(out[2].has_current);
    assert_int_equal(out[2].current_version, 9);
    assert_string_equal(out[2].current_fields, "{\"status\":\"OPEN\",\"level\":2}");
    fsa_codec_results_free(out, n);
    fsa_codec_free(text);
    fsa_codec_result_clear(&in[2]);
}

/* A message with every kind of byte JSON escapes, as cJSON escaped it; decoded back the same but
 * for its control characters, which the decoder makes '?' (server text is printed). */
static void test_fsa_codec_encode_results__escapes(void **state)
{
    (void)state;
    fsa_codec_result_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.op_id, sizeof r.op_id, "x");
    r.status = FSA_RESULT_REJECTED;
    snprintf(r.code, sizeof r.code, "invalid_value");
    snprintf(r.message, sizeof r.message, "q\"b\\s\b\f\n\r\t\x01\x1f\x7f\xc3\xa9/");
    char *text = NULL;
    size_t len = 0;
    assert_fsa_ok(fsa_codec_encode_results(&r, 1, -5, &text, &len));
    assert_string_equal(text, "{\"results\":[{\"op_id\":\"x\",\"status\":\"rejected\",\"error\":"
                              "{\"code\":\"invalid_value\",\"message\":"
                              "\"q\\\"b\\\\s\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\xc3\xa9/\"}}],"
                              "\"server_time\":-5}");
    fsa_codec_result_t *out = NULL;
    size_t n = 0;
    int64_t t = 0;
    assert_fsa_ok(fsa_codec_decode_results(text, len, &out, &n, &t));
    assert_int_equal(n, 1);
    assert_string_equal(out[0].message, "q\"b\\s????????\xc3\xa9/");
    fsa_codec_results_free(out, n);
    fsa_codec_free(text);
    /* Nothing to encode: an empty list. */
    assert_fsa_ok(fsa_codec_encode_results(NULL, 0, 1, &text, &len));
    assert_string_equal(text, "{\"results\":[],\"server_time\":1}");
    fsa_codec_free(text);
}

static void test_fsa_codec_decode_results__hostile(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "{",
        "[]",
        "{\"results\":{}}",
        "{\"results\":[1]}",
        "{\"results\":[{\"status\":\"applied\",\"version\":1}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"won\"}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"applied\"}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"applied\",\"version\":\"7\"}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"applied\",\"version\":0}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"duplicate\"}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"duplicate\",\"original\":\"duplicate\"}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"conflict\",\"current\":{\"version\":1}}]}",
        /* one string in two pieces: */
        // NOLINTNEXTLINE(bugprone-suspicious-missing-comma)
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"conflict\",\"current\":{\"version\":1,"
        "\"fields\":[]}}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"rejected\"}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"rejected\",\"error\":{\"code\":\"a_code_that_"
        "is_much_too_long_for_us\"}}]}",
        "{\"results\":[{\"op_id\":\"0123456789012345678901234567890123456789\",\"status\":"
        "\"conflict\"}]}",
        "{\"results\":[],\"server_time\":\"now\"}",
        "{\"results\":[]}garbage",
        /* a NUL in a string (the op id read as "a"), a number out of range (read as null) */
        "{\"results\":[{\"op_id\":\"a\\u0000b\",\"status\":\"applied\",\"version\":1}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"conflict\",\"current\":{\"version\":1,"
        "\"fields\":{\"level\":1e999}}}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fsa_codec_result_t *out = (fsa_codec_result_t *)1;
        size_t n = 5;
        fsa_status_t st = fsa_codec_decode_results(bad[i], strlen(bad[i]), &out, &n, NULL);
        if (st != FSA_EPROTO)
            fail_msg("case %zu: %d", i, (int)st);
        assert_null(out);
        assert_int_equal(n, 0);
    }
    /* Deep nesting inside current.fields is refused before parsing. */
    char deep[4000];
    size_t n = (size_t)snprintf(deep, sizeof deep,
                                "{\"results\":[{\"op_id\":\"a\",\"status\":\"conflict\","
                                "\"current\":{\"version\":1,\"fields\":");
    for (int i = 0; i < 1000; i++)
        deep[n++] = '[';
    deep[n] = '\0';
    fsa_codec_result_t *out = NULL;
    size_t cnt = 0;
    assert_int_equal(fsa_codec_decode_results(deep, n, &out, &cnt, NULL), FSA_EPROTO);
    assert_int_equal(fsa_codec_decode_results(NULL, 0, &out, &cnt, NULL), FSA_EPROTO);
    assert_int_equal(fsa_codec_decode_results("{}", 2, NULL, &cnt, NULL), FSA_EINVAL);
    /* An empty list is fine. */
    assert_fsa_ok(fsa_codec_decode_results("{\"results\":[]}", 14, &out, &cnt, NULL));
    assert_int_equal(cnt, 0);
    fsa_codec_results_free(out, cnt);
}

static void test_fsa_codec_pull__round_trip_and_hostile(void **state)
{
    (void)state;
    fsa_codec_change_t ch[2] = {
        {FSA_TYPE_JOBNEED, "J1", 9, 1764090000001, fsa_strdup("{\"jobstatus\":\"ASSIGNED\"}"),
         false},
        {FSA_TYPE_ATTENDANCE, "A:1", 1, 1764090000002, fsa_strdup("{}"), false},
    };
    fsa_codec_pull_t in = {ch, 2, "v1.42", true, 1764090000003};
    char *text = NULL;
    size_t len = 0;
    assert_fsa_ok(fsa_codec_encode_pull(&in, &text, &len));
    fsa_codec_pull_t out;
    assert_fsa_ok(fsa_codec_decode_pull(text, len, &out));
    assert_int_equal(out.count, 2);
    assert_string_equal(out.cursor, "v1.42");
    assert_true(out.more);
    assert_int_equal(out.server_time_ms, 1764090000003);
    assert_int_equal(out.changes[0].type, FSA_TYPE_JOBNEED);
    assert_string_equal(out.changes[0].id, "J1");
    assert_int_equal(out.changes[0].version, 9);
    assert_int_equal(out.changes[0].mdtz_ms, 1764090000001);
    assert_string_equal(out.changes[0].fields, "{\"jobstatus\":\"ASSIGNED\"}");
    assert_int_equal(out.changes[1].type, FSA_TYPE_ATTENDANCE);
    assert_false(out.changes[1].gone);
    fsa_codec_pull_free(&out);
    fsa_codec_free(text);
    /* A gone change (PROTOCOL.md section 4): type, id, version, gone, no fields. */
    fsa_codec_change_t gone = {FSA_TYPE_TICKET, "T9", 4, 0, NULL, true};
    fsa_codec_pull_t gin = {&gone, 1, "v1.43", false, 1764090000004};
    assert_fsa_ok(fsa_codec_encode_pull(&gin, &text, &len));
    assert_non_null(
        strstr(text, "{\"type\":\"ticket\",\"id\":\"T9\",\"version\":4,\"gone\":true}"));
    assert_fsa_ok(fsa_codec_decode_pull(text, len, &out));
    assert_int_equal(out.count, 1);
    assert_true(out.changes[0].gone);
    assert_null(out.changes[0].fields);
    assert_int_equal(out.changes[0].version, 4);
    fsa_codec_pull_free(&out);
    fsa_codec_free(text);
    /* One entity, as the admin API answers it. */
    assert_fsa_ok(fsa_codec_encode_entity(&ch[0], -1, &text, &len));
    fsa_codec_change_t e;
    fsa_model_err_t err;
    assert_fsa_ok(fsa_codec_decode_entity(text, len, &e, &err));
    assert_string_equal(e.id, "J1");
    assert_string_equal(e.fields, "{\"jobstatus\":\"ASSIGNED\"}");
    fsa_codec_change_clear(&e);
    fsa_codec_free(text);
    assert_int_equal(
        fsa_codec_decode_entity("{\"type\":\"car\",\"id\":\"x\",\"fields\":{}}", 35, &e, &err),
        FSA_EINVAL);
    assert_string_equal(err.code, "malformed");
    fsa_codec_change_clear(&ch[0]);
    fsa_codec_change_clear(&ch[1]);

    const char *bad[] = {
        "{\"changes\":[],\"cursor\":\"c\"}",
        "{\"changes\":[],\"more\":false}",
        "{\"changes\":[],\"cursor\":1,\"more\":false}",
        "{\"changes\":[],\"cursor\":\"c\",\"more\":0}",
        "{\"changes\":[{\"type\":\"jobneed\",\"id\":\"J\",\"version\":1,\"mdtz\":1}],\"cursor\":"
        "\"c\",\"more\":false}",
        "{\"changes\":[{\"type\":\"robot\",\"id\":\"J\",\"version\":1,\"mdtz\":1,\"fields\":{}}],"
        "\"cursor\":\"c\",\"more\":false}",
        "{\"changes\":[{\"type\":\"jobneed\",\"id\":\"J "
        "J\",\"version\":1,\"mdtz\":1,\"fields\":{}}],\"cursor\":\"c\",\"more\":false}",
        "{\"changes\":[{\"type\":\"jobneed\",\"id\":\"J\",\"version\":0,\"mdtz\":1,\"fields\":{}}],"
        "\"cursor\":\"c\",\"more\":false}",
        "{\"changes\":[null],\"cursor\":\"c\",\"more\":false}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fsa_status_t st = fsa_codec_decode_pull(bad[i], strlen(bad[i]), &out);
        if (st != FSA_EPROTO)
            fail_msg("case %zu: %d", i, (int)st);
        assert_int_equal(out.count, 0);
        assert_null(out.changes);
    }
    /* An opaque cursor of up to FSA_CODEC_CURSOR_BYTES - 1 bytes is taken (one of 64 bytes and
     * more failed every pull as malformed); one longer is refused. */
    static char page[4096];
    _Static_assert(FSA_CODEC_CURSOR_BYTES + 64 <= 4096, "the page fits the longest cursor");
    static const size_t lens[] = {64, 200, FSA_CODEC_CURSOR_BYTES - 1, FSA_CODEC_CURSOR_BYTES};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t clen = lens[i];
        int n = snprintf(page, sizeof page, "{\"changes\":[],\"cursor\":\"");
        memset(page + n, 'c', clen);
        snprintf(page + n + clen, sizeof page - (size_t)n - clen, "\",\"more\":true}");
        fsa_status_t st = fsa_codec_decode_pull(page, strlen(page), &out);
        if (clen < 201 || clen < FSA_CODEC_CURSOR_BYTES) {
            if (st != FSA_OK)
                fail_msg("a cursor of %zu bytes: %d", clen, (int)st);
            assert_int_equal(strlen(out.cursor), clen);
            fsa_codec_pull_free(&out);
        } else {
            assert_int_equal(st, FSA_EPROTO);
        }
    }
}

static void test_fsa_codec_error__round_trip_and_hostile(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    assert_fsa_ok(
        fsa_codec_encode_error("clock_skew", "off by \"a lot\"", 1764090000000, &text, &len));
    fsa_model_err_t e;
    int64_t t = 0;
    assert_fsa_ok(fsa_codec_decode_error(text, len, &e, &t));
    assert_string_equal(e.code, "clock_skew");
    assert_string_equal(e.message, "off by \"a lot\"");
    assert_int_equal(t, 1764090000000);
    fsa_codec_free(text);
    assert_fsa_ok(fsa_codec_encode_error("malformed", NULL, -1, &text, &len));
    assert_string_equal(text, "{\"error\":{\"code\":\"malformed\",\"message\":\"\"}}");
    assert_fsa_ok(fsa_codec_decode_error(text, len, &e, &t));
    assert_int_equal(t, -1);
    fsa_codec_free(text);
    assert_int_equal(fsa_codec_encode_error("", "x", 0, &text, &len), FSA_EINVAL);
    assert_null(text);
    const char *bad[] = {"{}",
                         "{\"error\":\"x\"}",
                         "{\"error\":{\"code\":\"\"}}",
                         "{\"error\":{\"code\":1}}",
                         "{\"error\":{\"code\":\"a\",\"message\":2}}",
                         "<html>",
                         "{\"error\":{\"code\":\"a\"},\"server_time\":true}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(fsa_codec_decode_error(bad[i], strlen(bad[i]), &e, &t), FSA_EPROTO);
    /* A long message is cut, never overrun. */
    char longmsg[1000];
    int n = snprintf(longmsg, sizeof longmsg, "{\"error\":{\"code\":\"x\",\"message\":\"");
    memset(longmsg + n, 'm', 600);
    snprintf(longmsg + n + 600, sizeof longmsg - (size_t)n - 600, "\"}}");
    assert_fsa_ok(fsa_codec_decode_error(longmsg, strlen(longmsg), &e, NULL));
    assert_int_equal(strlen(e.message), FSA_CODEC_MESSAGE_BYTES - 1);
}

/* The string member name of o, or NULL. */
static const char *json_string(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The array member name of o and its size; -1 when it is not an array. */
static int json_array_size(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
}

/* What a successful decode must agree with: the same text read by cJSON directly, an expectation
 * that shares nothing with the codec's checks. */
static cJSON *parsed_as_json(const char *buf, size_t use)
{
    cJSON *doc = cJSON_ParseWithLength(buf, use);
    if (doc == NULL || !cJSON_IsObject(doc))
        fail_msg("a decoder accepted text that is not a JSON object: %.*s", (int)use, buf);
    return doc;
}

static void expect_push_like_json(const char *buf, size_t use, const fsa_codec_push_t *p)
{
    cJSON *doc = parsed_as_json(buf, use);
    const char *batch_id = json_string(doc, "batch_id");
    assert_non_null(batch_id);
    assert_string_equal(p->batch_id, batch_id);
    assert_int_equal(json_array_size(doc, "ops"), p->count);
    const cJSON *ops = cJSON_GetObjectItemCaseSensitive(doc, "ops");
    for (size_t i = 0; i < p->count; i++) {
        const char *op_id = json_string(cJSON_GetArrayItem(ops, (int)i), "op_id");
        assert_non_null(op_id);
        assert_string_equal(p->ops[i].op.op_id, op_id);
    }
    cJSON_Delete(doc);
}

static void expect_results_like_json(const char *buf, size_t use, const fsa_codec_result_t *res,
                                     size_t n)
{
    cJSON *doc = parsed_as_json(buf, use);
    assert_int_equal(json_array_size(doc, "results"), n);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(doc, "results");
    for (size_t i = 0; i < n; i++) {
        const char *op_id = json_string(cJSON_GetArrayItem(arr, (int)i), "op_id");
        assert_non_null(op_id);
        assert_string_equal(res[i].op_id, op_id);
    }
    cJSON_Delete(doc);
}

static void expect_pull_like_json(const char *buf, size_t use, const fsa_codec_pull_t *pl)
{
    cJSON *doc = parsed_as_json(buf, use);
    assert_int_equal(json_array_size(doc, "changes"), pl->count);
    const char *cursor = json_string(doc, "cursor");
    assert_string_equal(pl->cursor, cursor != NULL ? cursor : "");
    assert_int_equal(pl->more, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "more")));
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(doc, "changes");
    for (size_t i = 0; i < pl->count; i++) {
        const cJSON *c = cJSON_GetArrayItem(arr, (int)i);
        const char *id = json_string(c, "id");
        const cJSON *version = cJSON_GetObjectItemCaseSensitive(c, "version");
        assert_non_null(id);
        assert_string_equal(pl->changes[i].id, id);
        assert_true(cJSON_IsNumber(version));
        assert_int_equal(pl->changes[i].version, (int64_t)version->valuedouble);
    }
    cJSON_Delete(doc);
}

/* Every prefix and a few thousand seeded byte mutations of valid texts: the decoders answer with a
 * status, never crash or leak (the sanitizer build checks both); no proper prefix decodes (none is
 * a whole JSON text), and what does decode agrees with cJSON's own reading of the text. */
static void test_fsa_codec_decoders__truncations_and_mutations(void **state)
{
    (void)state;
    const char *push = "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,"
                       "\"kind\":\"append\",\"type\":\"ticket\",\"id\":\"T\",\"group\":\"g\","
                       "\"field\":\"ticketlog\",\"key\":\"h\",\"item\":{\"a\":[1,\"x\"]},"
                       "\"max_len\":3},{\"op_id\":\"o2\",\"seq\":2,\"at\":2,\"kind\":\"set\","
                       "\"type\":\"jobneed\",\"id\":\"J\",\"base_version\":4,\"fields\":{}}]}";
    const char *results = "{\"results\":[{\"op_id\":\"a\",\"status\":\"duplicate\",\"version\":3,"
                          "\"original\":\"applied\"},{\"op_id\":\"b\",\"status\":\"conflict\","
                          "\"current\":{\"version\":2,\"fields\":{\"x\":[1]}},\"error\":{\"code\":"
                          "\"conflict\",\"message\":\"m\"}}],\"server_time\":5}";
    const char *pull = "{\"changes\":[{\"type\":\"ticket\",\"id\":\"T\",\"version\":2,\"mdtz\":9,"
                       "\"fields\":{\"level\":1}}],\"cursor\":\"v1.7\",\"more\":true,"
                       "\"server_time\":5}";
    const char *texts[] = {push, results, pull};
    uint64_t rng = 12345;
    int decoded = 0;
    for (size_t t = 0; t < 3; t++) {
        size_t len = strlen(texts[t]);
        char *buf = fsa_malloc(len + 1);
        assert_non_null(buf);
        for (size_t round = 0; round < len + 2000; round++) {
            memcpy(buf, texts[t], len + 1);
            size_t use = len;
            if (round < len) {
                use = round; /* every prefix */
            } else {
                for (int k = 0; k < 3; k++) {
                    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                    buf[(rng >> 33) % len] = (char)(rng >> 13);
                }
            }
            const bool prefix = round < len;
            fsa_codec_push_t p;
            fsa_model_err_t err;
            fsa_status_t st = fsa_codec_decode_push(buf, use, &p, &err);
            assert_true(st == FSA_OK || st == FSA_EINVAL || st == FSA_ETOOLARGE);
            if (st == FSA_OK) {
                assert_false(prefix);
                expect_push_like_json(buf, use, &p);
                decoded++;
            }
            fsa_codec_push_free(&p);
            fsa_codec_result_t *res = NULL;
            size_t n = 0;
            st = fsa_codec_decode_results(buf, use, &res, &n, NULL);
            assert_true(st == FSA_OK || st == FSA_EPROTO);
            if (st == FSA_OK) {
                assert_false(prefix);
                expect_results_like_json(buf, use, res, n);
                decoded++;
            }
            fsa_codec_results_free(res, n);
            fsa_codec_pull_t pl;
            st = fsa_codec_decode_pull(buf, use, &pl);
            assert_true(st == FSA_OK || st == FSA_EPROTO);
            if (st == FSA_OK) {
                assert_false(prefix);
                expect_pull_like_json(buf, use, &pl);
                decoded++;
            }
            fsa_codec_pull_free(&pl);
            int64_t tm;
            st = fsa_codec_decode_error(buf, use, &err, &tm);
            assert_true(st == FSA_OK || st == FSA_EPROTO);
            if (st == FSA_OK) {
                assert_false(prefix);
                cJSON_Delete(parsed_as_json(buf, use));
            }
        }
        fsa_free(buf);
    }
    /* Some mutations (inside strings and numbers) leave a valid text: the comparisons ran. */
    assert_true(decoded > 0);
}

/* ---- the push body as a cJSON tree printed it (the encoder before it wrote the text itself) */

static bool ref_add_int(cJSON *o, const char *name, int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    return cJSON_AddRawToObject(o, name, buf) != NULL;
}

/* FSA_OK, or FSA_EINVAL for a payload that is missing, too deep or not JSON. */
static fsa_status_t ref_add_json(cJSON *o, const char *name, const char *json)
{
    if (json == NULL)
        return FSA_EINVAL;
    size_t len = strlen(json);
    if (fsa_codec_json_depth(json, len, FSA_LIMIT_JSON_DEPTH) > FSA_LIMIT_JSON_DEPTH)
        return FSA_EINVAL;
    cJSON *v = cJSON_ParseWithLengthOpts(json, len + 1, NULL, true); /* nothing after it */
    if (v == NULL)
        return FSA_EINVAL;
    cJSON_AddItemToObject(o, name, v);
    return FSA_OK;
}

static fsa_status_t ref_encode_op(const fsa_op_t *op, cJSON *o)
{
    cJSON_AddStringToObject(o, "op_id", op->op_id);
    ref_add_int(o, "seq", op->seq);
    ref_add_int(o, "at", op->at_ms);
    cJSON_AddStringToObject(o, "kind", fsa_op_kind_name(op->kind));
    cJSON_AddStringToObject(o, "type", fsa_type_name(op->type));
    cJSON_AddStringToObject(o, "id", op->id);
    if (op->group[0] != '\0')
        cJSON_AddStringToObject(o, "group", op->group);
    switch (op->kind) {
    case FSA_OP_CREATE: return op->json == NULL ? FSA_OK : ref_add_json(o, "fields", op->json);
    case FSA_OP_SET:
        ref_add_int(o, "base_version", op->base_version);
        return ref_add_json(o, "fields", op->json);
    case FSA_OP_MERGE:
        cJSON_AddStringToObject(o, "field", op->field);
        return ref_add_json(o, "patch", op->json);
    case FSA_OP_INCREMENT:
        cJSON_AddStringToObject(o, "field", op->field);
        ref_add_int(o, "by", op->by);
        return FSA_OK;
    case FSA_OP_TRANSITION:
        cJSON_AddStringToObject(o, "field", op->field);
        cJSON_AddStringToObject(o, "from", op->from);
        cJSON_AddStringToObject(o, "to", op->to);
        return FSA_OK;
    default:
        cJSON_AddStringToObject(o, "field", op->field);
        cJSON_AddStringToObject(o, "key", op->key);
        if (op->max_len > 0)
            ref_add_int(o, "max_len", op->max_len);
        return ref_add_json(o, "item", op->json);
    }
}

/* *out: the body cJSON printed (NULL unless FSA_OK). */
static fsa_status_t ref_encode_push(const char *batch_id, const fsa_op_t *ops, size_t n, char **out)
{
    *out = NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "batch_id", batch_id);
    cJSON *arr = cJSON_AddArrayToObject(root, "ops");
    fsa_status_t st = FSA_OK;
    for (size_t i = 0; i < n && st == FSA_OK; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        st = ref_encode_op(&ops[i], o);
    }
    if (st == FSA_OK)
        *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return st;
}

/* The body written directly is byte for byte the one a cJSON tree printed: payloads copied as
 * they are when cJSON would print them so, and parsed and printed when not (blanks, escapes
 * cJSON rewrites, numbers it prints otherwise), and the same refusals. */
static void test_fsa_codec_encode_push__same_bytes_as_a_cjson_tree(void **state)
{
    (void)state;
    static const char *const payloads[] = {
        "{}",
        "[]",
        "{\"a\":1}",
        "{\"a\": 1}",
        " {\"a\":1}",
        "{\"a\":1} ",
        "{\"a\":1}\n",
        "{\"a\":[1,2,{\"b\":null}],\"c\":true,\"d\":false}",
        "{\"a\":\"x\\\"y\\\\z\\n\\t\\r\\b\\f\"}",
        "{\"a\":\"\\u00e9\"}",
        "{\"a\":\"\\u0001\"}",
        "{\"a\":\"\\/\"}",
        "{\"a\":\"\xc3\xa9\x7f\"}",
        "{\"a\":0}",
        "{\"a\":-0}",
        "{\"a\":-0.0}",
        "{\"a\":1.0}",
        "{\"a\":1.5}",
        "{\"a\":-1.25}",
        "{\"a\":0.1}",
        "{\"a\":0.01}",
        "{\"a\":0.00001}",
        "{\"a\":1e5}",
        "{\"a\":1E5}",
        "{\"a\":1.5e-3}",
        "{\"a\":2147483647}",
        "{\"a\":2147483648}",
        "{\"a\":-2147483648}",
        "{\"a\":-2147483649}",
        "{\"a\":999999999999999}",
        "{\"a\":9999999999999999}",
        "{\"a\":12345678901234567}",
        "{\"a\":123456789012.345}",
        "{\"a\":1234567890123.456}",
        "{\"a\":0.123456789012345}",
        "{\"a\":52.52}",
        "{\"a\":13.4}",
        "{\"a\":1e400}",
        "{\"a\":1,\"a\":2}",
        "{\"a\":01}",
        "{\"a\":+1}",
        "{\"a\":.5}",
        "{\"a\":1.}",
        "{\"a\":1} x",
        "{\"a\":1}}",
        "{not json",
        "",
        "{\"a\":\"\x01\"}",
        "\"s\"",
        "17",
        "null",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"};
    static const fsa_op_kind_t kinds[] = {FSA_OP_CREATE, FSA_OP_SET, FSA_OP_MERGE, FSA_OP_APPEND};
    size_t compared = 0, refused = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
            fsa_op_t ops[2];
            make_op(&ops[0], FSA_OP_TRANSITION, "T\"1\\", NULL);
            snprintf(ops[0].group, sizeof ops[0].group, "g\n1");
            snprintf(ops[0].field, sizeof ops[0].field, "status");
            snprintf(ops[0].from, sizeof ops[0].from, "NEW");
            snprintf(ops[0].to, sizeof ops[0].to, "OPEN");
            make_op(&ops[1], kinds[k], "T2", payloads[i]);
            ops[1].base_version = 12;
            ops[1].max_len = (int64_t)i;
            snprintf(ops[1].field, sizeof ops[1].field, "ticketlog");
            snprintf(ops[1].key, sizeof ops[1].key, "h\x01");
            char *want = NULL, *got = NULL;
            size_t len = 0;
            fsa_status_t ref = ref_encode_push("batch-1", ops, 2, &want);
            fsa_status_t st = fsa_codec_encode_push("batch-1", ops, 2, &got, &len);
            if (st != ref)
                fail_msg("kind %d payload '%s': %s, cJSON's tree %s", (int)kinds[k], payloads[i],
                         fsa_status_str(st), fsa_status_str(ref));
            if (st == FSA_OK) {
                if (got == NULL || want == NULL || strcmp(got, want) != 0)
                    fail_msg("kind %d payload '%s':\n%s\nwant\n%s", (int)kinds[k], payloads[i],
                             got != NULL ? got : "(none)", want != NULL ? want : "(none)");
                else
                    assert_int_equal(len, strlen(got));
                compared++;
            } else {
                assert_null(got);
                refused++;
            }
            cJSON_free(want);
            fsa_codec_free(got);
            fsa_op_clear(&ops[0]);
            fsa_op_clear(&ops[1]);
        }
    }
    assert_true(compared > 100);
    assert_true(refused > 0);
}

/* The decoded answer as text, to compare two decodes (status included). */
static void results_text(fsa_status_t st, const fsa_codec_result_t *r, size_t n, int64_t t,
                         char *buf, size_t cap)
{
    size_t len = (size_t)snprintf(buf, cap, "%s t=%lld n=%zu", fsa_status_str(st), (long long)t, n);
    for (size_t i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(
            buf + len, cap - len, " [%s %d v%lld o%d c%d %lld %s %s %s]", r[i].op_id,
            (int)r[i].status, (long long)r[i].version, (int)r[i].original, (int)r[i].has_current,
            (long long)r[i].current_version,
            r[i].current_fields != NULL ? r[i].current_fields : "-", r[i].code, r[i].message);
}

/* Decodes body, and the same body after one blank (which the direct reader leaves to the cJSON
 * tree): the two answers are the same. */
static void decode_both_ways(const char *body, size_t len)
{
    char *padded = fsa_malloc(len + 2);
    assert_non_null(padded);
    padded[0] = ' ';
    memcpy(padded + 1, body, len);
    padded[len + 1] = '\0';
    static char a[16384], b[16384];
    fsa_codec_result_t *r = NULL;
    size_t n = 0;
    int64_t t = 0;
    fsa_status_t st = fsa_codec_decode_results(body, len, &r, &n, &t);
    results_text(st, r, n, t, a, sizeof a);
    fsa_codec_results_free(r, n);
    st = fsa_codec_decode_results(padded, len + 1, &r, &n, &t);
    results_text(st, r, n, t, b, sizeof b);
    fsa_codec_results_free(r, n);
    fsa_free(padded);
    if (strcmp(a, b) != 0)
        fail_msg("'%.*s':\n  %s\nthrough the tree:\n  %s", (int)len, body, a, b);
}

/* The answers a drain gets are read without a tree; every answer reads the same either way,
 * also each of them with one byte changed or cut short. */
static void test_fsa_codec_decode_results__direct_reader_agrees_with_the_tree(void **state)
{
    (void)state;
    fsa_codec_result_t res[4];
    memset(res, 0, sizeof res);
    snprintf(res[0].op_id, sizeof res[0].op_id, "00000000-0000-4000-8000-000000000001");
    res[0].status = FSA_RESULT_APPLIED;
    res[0].version = 123456789012345;
    snprintf(res[1].op_id, sizeof res[1].op_id, "b");
    res[1].status = FSA_RESULT_DUPLICATE;
    res[1].original = FSA_RESULT_APPLIED;
    res[1].version = 9;
    snprintf(res[2].op_id, sizeof res[2].op_id, "c");
    res[2].status = FSA_RESULT_DUPLICATE;
    res[2].original = FSA_RESULT_CONFLICT;
    snprintf(res[3].op_id, sizeof res[3].op_id, "d");
    res[3].status = FSA_RESULT_CONFLICT;
    char *enc = NULL;
    size_t enc_len = 0;
    assert_fsa_ok(fsa_codec_encode_results(res, 4, 1764090000123, &enc, &enc_len));
    const char *bodies[] = {
        enc,
        "{\"results\":[]}",
        "{\"results\":[],\"server_time\":-5}",
        "{\"results\":[],\"server_time\":0}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"applied\",\"version\":1}],\"server_time\":7}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"applied\",\"version\":1.0}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"applied\",\"version\":1e3}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"applied\",\"version\":9007199254740993}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"applied\",\"version\":1,\"version\":2}]}",
        "{\"results\":[{\"op_id\":\"a\\u0041\",\"status\":\"applied\",\"version\":1}]}",
        "{\"results\":[{\"status\":\"applied\",\"op_id\":\"a\",\"version\":1}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"conflict\",\"version\":3}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"rejected\",\"error\":{\"code\":\"x\"}}]}",
        /* one string in two pieces: */
        // NOLINTNEXTLINE(bugprone-suspicious-missing-comma)
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"conflict\",\"current\":{\"version\":2,"
        "\"fields\":{\"a\":1}}}]}",
        "{\"results\":[{\"op_id\":\"\",\"status\":\"applied\",\"version\":1}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"applied\",\"version\":1}],\"extra\":1}",
        "{\"server_time\":1,\"results\":[]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"applied\"}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"rejected\"}]}",
        "{\"results\":[{\"op_id\":\"a\",\"status\":\"duplicate\",\"original\":\"duplicate\"}]}",
    };
    size_t tried = 0;
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        const char *body = bodies[i];
        size_t len = strlen(body);
        decode_both_ways(body, len);
        char *m = fsa_malloc(len + 1);
        assert_non_null(m);
        static const char subs[] = "\"\\-0189.e,:{}[] x";
        for (size_t k = 0; k < len; k++) {
            decode_both_ways(body, k); /* cut short */
            for (size_t c = 0; c < sizeof subs - 1; c++) {
                memcpy(m, body, len + 1);
                m[k] = subs[c];
                decode_both_ways(m, len);
                tried++;
            }
        }
        fsa_free(m);
    }
    fsa_codec_free(enc);
    assert_true(tried > 1000);
}

/* Whether s holds a control byte (below 0x20, or 0x7f). */
static bool has_control(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* A server's text (an error's code and message, a result's) comes out of the decoders as one
 * line without control characters, for logs and terminals: "\n" cannot start a forged log line,
 * ESC cannot drive the terminal. The rest of the text is kept. */
static void test_fsa_codec_decoders__server_text_is_one_printable_line(void **state)
{
    (void)state;
    /* \n, \r, ESC, DEL, U+0085 (NEL, a C1 control) and a tab; é is kept. */
    static const char msg[] = "bad\\nfieldsync: error: forged line\\r\\u001b[31mred\\u007f"
                              "\\u0085x\\té";
    static const char want[] = "bad?fieldsync: error: forged line??[31mred??x?é";
    char body[512];
    snprintf(body, sizeof body, "{\"error\":{\"code\":\"c\\u001bd\",\"message\":\"%s\"}}", msg);
    fsa_model_err_t e;
    assert_fsa_ok(fsa_codec_decode_error(body, strlen(body), &e, NULL));
    printf("error message: %s\n", e.message);
    assert_false(has_control(e.message));
    assert_false(has_control(e.code));
    assert_string_equal(e.message, want);
    assert_string_equal(e.code, "c?d");

    snprintf(body, sizeof body,
             "{\"results\":[{\"op_id\":\"a\",\"status\":\"rejected\",\"error\":{\"code\":"
             "\"x\\n\",\"message\":\"%s\"}}]}",
             msg);
    fsa_codec_result_t *res = NULL;
    size_t n = 0;
    assert_fsa_ok(fsa_codec_decode_results(body, strlen(body), &res, &n, NULL));
    assert_int_equal(n, 1);
    assert_false(has_control(res[0].message));
    assert_string_equal(res[0].message, want);
    assert_string_equal(res[0].code, "x?");
    fsa_codec_results_free(res, n);

    /* An op id is the agent's own, echoed: one outside the id alphabet is malformed, read
     * directly or through the tree, and never reaches a log line naming the op. */
    const char *ids[] = {"a\\nb", "a\x7f", "a b"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        snprintf(body, sizeof body,
                 "{\"results\":[{\"op_id\":\"%s\",\"status\":\"applied\",\"version\":1}]}", ids[i]);
        res = NULL;
        n = 0;
        assert_int_equal(fsa_codec_decode_results(body, strlen(body), &res, &n, NULL), FSA_EPROTO);
        decode_both_ways(body, strlen(body));
    }
}

/* An answer of 8 MiB, under the transport's limit, that is one array of small values after head:
 * 4 million values. */
static char *many_values_answer(const char *head, size_t *len)
{
    const size_t cap = (size_t)8 * 1024 * 1024 - 64;
    char *b = fsa_malloc(cap + 1);
    assert_non_null(b);
    size_t n = (size_t)snprintf(b, cap, "%s[0", head);
    while (n + 4 < cap) {
        b[n++] = ',';
        b[n++] = '0';
    }
    b[n++] = ']';
    b[n++] = '}';
    b[n] = '\0';
    *len = n;
    return b;
}

/* A pull page as the server would send it: count changes of type, each with these fields. */
static char *page_of(fsa_type_t type, char *fields, size_t count, size_t *len)
{
    fsa_codec_change_t *ch = fsa_calloc(count, sizeof *ch);
    assert_non_null(ch);
    for (size_t i = 0; i < count; i++) {
        ch[i].type = type;
        snprintf(ch[i].id, sizeof ch[i].id, "T%zu", i);
        ch[i].version = 1;
        ch[i].mdtz_ms = 1764090000000;
        ch[i].fields = fields; /* the caller's: only read */
    }
    fsa_codec_pull_t pull = {ch, count, "c", true, 1764090000000};
    char *text = NULL;
    assert_fsa_ok(fsa_codec_encode_pull(&pull, &text, len));
    fsa_free(ch);
    return text;
}

/* Fields of about size bytes: a ticket whose history is records of 3 values in ~31 bytes. */
static char *ticket_fields_of(size_t size)
{
    static const char item[] = "{\"at\":1764090000000,\"by\":\"P1\"}";
    char *f = fsa_malloc(size + 1);
    assert_non_null(f);
    size_t n = (size_t)snprintf(f, size, "{\"ticketlog\":{\"ticket_history\":[%s", item);
    while (n + sizeof item + 4 < size) {
        f[n++] = ',';
        memcpy(f + n, item, sizeof item - 1);
        n += sizeof item - 1;
    }
    memcpy(f + n, "]}}", 4);
    return f;
}

/* Answers are bounded in values, not only bytes (FSA_LIMIT_ANSWER_VALUES): 8 MiB of "[0,0,...]"
 * is refused before a parser node is made, as over this device's bound (FSA_ETOOLARGE: the engine
 * asks for a smaller answer), and the densest legitimate answers still pass. */
static void test_fsa_codec_answers__values_bounded(void **state)
{
    (void)state;
    /* cJSON allocates through the project's allocator here, so that the count sees its nodes. */
    cJSON_InitHooks(&(cJSON_Hooks){.malloc_fn = fsa_malloc, .free_fn = fsa_free});
    size_t len = 0;
    char *body = many_values_answer("{\"changes\":[],\"cursor\":\"c\",\"more\":false,\"x\":", &len);
    fsa_codec_pull_t pull;
    fsa_alloc_fail_nth(ULONG_MAX); /* counts allocations, fails none */
    fsa_status_t st = fsa_codec_decode_pull(body, len, &pull);
    unsigned long allocs = fsa_alloc_count();
    fsa_alloc_fail_nth(0);
    if (st == FSA_OK)
        fsa_codec_pull_free(&pull);
    printf("decode_pull of %zu bytes: %s after %lu allocations\n", len, fsa_status_str(st), allocs);
    assert_int_equal(st, FSA_ETOOLARGE);
    assert_true(allocs < 16);
    fsa_free(body);

    body = many_values_answer("{\"results\":[],\"x\":", &len);
    fsa_codec_result_t *res = NULL;
    size_t count = 0;
    fsa_alloc_fail_nth(ULONG_MAX);
    st = fsa_codec_decode_results(body, len, &res, &count, NULL);
    allocs = fsa_alloc_count();
    fsa_alloc_fail_nth(0);
    fsa_codec_results_free(res, count);
    printf("decode_results of %zu bytes: %s after %lu allocations\n", len, fsa_status_str(st),
           allocs);
    assert_int_equal(st, FSA_ETOOLARGE);
    assert_true(allocs < 16);
    fsa_free(body);

    /* A full page of the biggest entities: 4 MiB of JSON (PROTOCOL.md section 4), each change's
     * fields 1 MiB less the server's allowance for the rest of the change, of records. */
    char *fields = ticket_fields_of((size_t)FSA_LIMIT_FIELDS_BYTES - 256);
    body = page_of(FSA_TYPE_TICKET, fields, 4, &len);
    fsa_free(fields);
    assert_true(len >= (size_t)4 * 1024 * 1024 - 1024);
    assert_true(fsa_codec_json_values(body, len, SIZE_MAX - 1) > FSA_LIMIT_ANSWER_VALUES / 2);
    assert_fsa_ok(fsa_codec_decode_pull(body, len, &pull));
    assert_int_equal(pull.count, 4);
    fsa_codec_pull_free(&pull);
    fsa_codec_free(body);

    /* One change alone whose 1 MiB of fields is as dense as JSON gets. */
    fields = fsa_malloc(FSA_LIMIT_FIELDS_BYTES + 1);
    assert_non_null(fields);
    size_t n = (size_t)snprintf(fields, 32, "{\"other_info\":{\"a\":[0");
    while (n + 8 < FSA_LIMIT_FIELDS_BYTES) {
        fields[n++] = ',';
        fields[n++] = '0';
    }
    memcpy(fields + n, "]}}", 4);
    body = page_of(FSA_TYPE_JOBNEED, fields, 1, &len);
    fsa_free(fields);
    assert_true(fsa_codec_json_values(body, len, SIZE_MAX - 1) > FSA_LIMIT_FIELDS_BYTES / 2 - 16);
    assert_fsa_ok(fsa_codec_decode_pull(body, len, &pull));
    assert_int_equal(pull.count, 1);
    fsa_codec_pull_free(&pull);
    fsa_codec_free(body);

    /* ... and one of empty arrays, three bytes a value: counted as two values each, they were
     * over the bound, and the pull could never move past that change. */
    fields = fsa_malloc(FSA_LIMIT_FIELDS_BYTES + 1);
    assert_non_null(fields);
    n = (size_t)snprintf(fields, 32, "{\"other_info\":{\"a\":[[]");
    while (n + 8 < FSA_LIMIT_FIELDS_BYTES) {
        fields[n++] = ',';
        fields[n++] = '[';
        fields[n++] = ']';
    }
    memcpy(fields + n, "]}}", 4);
    body = page_of(FSA_TYPE_JOBNEED, fields, 1, &len);
    fsa_free(fields);
    assert_true(fsa_codec_json_values(body, len, SIZE_MAX - 1) > FSA_LIMIT_FIELDS_BYTES / 3 - 16);
    assert_fsa_ok(fsa_codec_decode_pull(body, len, &pull));
    assert_int_equal(pull.count, 1);
    fsa_codec_pull_free(&pull);
    fsa_codec_free(body);

    /* A full batch's results, read through the tree (conflicts and rejections). */
    fsa_codec_result_t *in = fsa_calloc(FSA_LIMIT_BATCH_OPS, sizeof *in);
    assert_non_null(in);
    for (size_t i = 0; i < FSA_LIMIT_BATCH_OPS; i++) {
        snprintf(in[i].op_id, sizeof in[i].op_id, "00000000-0000-4000-8000-%012zu", i);
        if (i % 2 == 0) {
            in[i].status = FSA_RESULT_CONFLICT;
            in[i].has_current = true;
            in[i].current_version = 3;
            in[i].current_fields = fsa_strdup("{\"status\":\"OPEN\",\"level\":2,\"ticketlog\":"
                                              "{\"ticket_history\":[{\"at\":1,\"by\":\"P1\"}]}}");
            assert_non_null(in[i].current_fields);
        } else {
            in[i].status = FSA_RESULT_REJECTED;
            snprintf(in[i].code, sizeof in[i].code, "invalid_transition");
            snprintf(in[i].message, sizeof in[i].message, "NEW to CLOSED is not allowed");
        }
    }
    char *text = NULL;
    assert_fsa_ok(fsa_codec_encode_results(in, FSA_LIMIT_BATCH_OPS, 1, &text, &len));
    assert_fsa_ok(fsa_codec_decode_results(text, len, &res, &count, NULL));
    assert_int_equal(count, FSA_LIMIT_BATCH_OPS);
    fsa_codec_results_free(res, count);
    fsa_codec_free(text);
    fsa_codec_results_free(in, FSA_LIMIT_BATCH_OPS);
    cJSON_InitHooks(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_codec_push__round_trip_every_kind),
        cmocka_unit_test(test_fsa_codec_encode_push__invalid),
        cmocka_unit_test(test_fsa_codec_encode_push__same_bytes_as_a_cjson_tree),
        cmocka_unit_test(test_fsa_codec_decode_push__malformed_shapes),
        cmocka_unit_test(test_fsa_codec_decode_push__per_op_rejections),
        cmocka_unit_test(test_fsa_codec_decode_push__limits),
        cmocka_unit_test(test_fsa_codec_results__round_trip),
        cmocka_unit_test(test_fsa_codec_encode_results__escapes),
        cmocka_unit_test(test_fsa_codec_decode_results__hostile),
        cmocka_unit_test(test_fsa_codec_decode_results__direct_reader_agrees_with_the_tree),
        cmocka_unit_test(test_fsa_codec_pull__round_trip_and_hostile),
        cmocka_unit_test(test_fsa_codec_error__round_trip_and_hostile),
        cmocka_unit_test(test_fsa_codec_decoders__truncations_and_mutations),
        cmocka_unit_test(test_fsa_codec_answers__values_bounded),
        cmocka_unit_test(test_fsa_codec_decoders__server_text_is_one_printable_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
