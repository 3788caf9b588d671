/* fieldsync tests: the server's pure request steps (sync/server/request.h) that run on a
 * request's headers before its body: precheck, framing, the body plan, Expect, Accept-Encoding,
 * and the admin API's routes. (Authentication, bodies and the pull query are fuzzed by
 * tests/fuzz/fuzz_server_request.c and run by the server's integration tests.) */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "sync/server/request.h"
#include "tests/test_util.h"

#define NOW INT64_C(1767225600000)
#define NONCE "0123456789abcdef0123456789ABCDEF"
#define SIG "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static fsa__server_device_t devices[2]; /* sorted by id */

static int setup(void **state)
{
    (void)state;
    snprintf(devices[0].id, sizeof devices[0].id, "dev001");
    snprintf(devices[1].id, sizeof devices[1].id, "dev002");
    return 0;
}

static fsa__server_auth_verdict_t pre(const char *id, const char *ts, const char *nonce,
                                      const char *sig, fsa__server_auth_t *a)
{
    fsa__server_auth_in_t in = {
        .device_id = id, .timestamp = ts, .nonce = nonce, .signature = sig, .now_ms = NOW};
    fsa__server_precheck(devices, 2, &in, a);
    return a->verdict;
}

static void test_request__precheck(void **state)
{
    (void)state;
    fsa__server_auth_t a;
    char now[32], late[32], edge[32];
    snprintf(now, sizeof now, "%" PRId64, NOW);
    snprintf(late, sizeof late, "%" PRId64, NOW - FSA_LIMIT_SKEW_MS - 1);
    snprintf(edge, sizeof edge, "%" PRId64, NOW + FSA_LIMIT_SKEW_MS);
    assert_int_equal(pre("dev002", now, NONCE, SIG, &a), FSA__AUTH_OK);
    assert_ptr_equal(a.dev, &devices[1]);
    assert_true(a.ts == NOW);
    assert_true(a.nonce_a == UINT64_C(0x0123456789abcdef));
    assert_true(a.nonce_b == UINT64_C(0x0123456789abcdef));
    assert_int_equal(pre("dev001", edge, NONCE, SIG, &a), FSA__AUTH_OK);

    assert_int_equal(pre(NULL, now, NONCE, SIG, &a), FSA__AUTH_UNKNOWN_DEVICE);
    assert_int_equal(a.fail.http, 401);
    assert_string_equal(a.fail.code, "unknown_device");
    assert_null(a.dev);
    assert_int_equal(pre("dev003", now, NONCE, SIG, &a), FSA__AUTH_UNKNOWN_DEVICE);
    /* Shapes: each header missing or malformed is a bad signature (the body is not read). */
    assert_int_equal(pre("dev001", NULL, NONCE, SIG, &a), FSA__AUTH_BAD_SIGNATURE);
    assert_string_equal(a.fail.code, "bad_signature");
    assert_int_equal(pre("dev001", "12x", NONCE, SIG, &a), FSA__AUTH_BAD_SIGNATURE);
    assert_int_equal(pre("dev001", now, NULL, SIG, &a), FSA__AUTH_BAD_SIGNATURE);
    assert_int_equal(pre("dev001", now, "0123", SIG, &a), FSA__AUTH_BAD_SIGNATURE);
    assert_int_equal(pre("dev001", now, NONCE "0", SIG, &a), FSA__AUTH_BAD_SIGNATURE);
    assert_int_equal(pre("dev001", now, "g123456789abcdef0123456789abcdef", SIG, &a),
                     FSA__AUTH_BAD_SIGNATURE);
    assert_int_equal(pre("dev001", now, NONCE, NULL, &a), FSA__AUTH_BAD_SIGNATURE);
    assert_int_equal(pre("dev001", now, NONCE, SIG "0", &a), FSA__AUTH_BAD_SIGNATURE);
    char notsig[] = SIG;
    notsig[7] = 'z';
    assert_int_equal(pre("dev001", now, NONCE, notsig, &a), FSA__AUTH_BAD_SIGNATURE);
    assert_int_equal(pre("dev001", late, NONCE, SIG, &a), FSA__AUTH_CLOCK_SKEW);
    assert_string_equal(a.fail.code, "clock_skew");
    assert_null(a.dev);
}

static void test_request__framing_and_body_plan(void **state)
{
    (void)state;
    assert_true(fsa__server_framing_ok(0, 0));
    assert_true(fsa__server_framing_ok(1, 0));
    assert_true(fsa__server_framing_ok(0, 1));
    assert_false(fsa__server_framing_ok(2, 0));
    assert_false(fsa__server_framing_ok(0, 2));
    assert_false(fsa__server_framing_ok(1, 1));

    assert_true(fsa__server_expects_continue("100-continue"));
    assert_true(fsa__server_expects_continue("100-Continue"));
    assert_false(fsa__server_expects_continue(NULL));
    assert_false(fsa__server_expects_continue("100"));

    char at[32], over[32], huge[32];
    snprintf(at, sizeof at, "%lld", (long long)FSA__SERVER_RAW_BODY_MAX);
    snprintf(over, sizeof over, "%lld", (long long)FSA__SERVER_RAW_BODY_MAX + 1);
    snprintf(huge, sizeof huge, "%llu", (unsigned long long)FSA__SERVER_DISCARD_MAX + 1);
    assert_int_equal(fsa__server_body_plan(NULL, NULL), FSA__BODY_READ); /* chunked */
    assert_int_equal(fsa__server_body_plan("0", NULL), FSA__BODY_READ);
    assert_int_equal(fsa__server_body_plan(at, NULL), FSA__BODY_READ);
    assert_int_equal(fsa__server_body_plan("junk", NULL), FSA__BODY_READ);
    /* Over the limit: read and dropped (the 413 reaches a client still sending), or refused at
     * once when the client waits for 100 Continue or the body is over the discard bound. */
    assert_int_equal(fsa__server_body_plan(over, NULL), FSA__BODY_DROP);
    assert_int_equal(fsa__server_body_plan(over, "100-continue"), FSA__BODY_REFUSE);
    assert_int_equal(fsa__server_body_plan(huge, NULL), FSA__BODY_REFUSE);
    /* 19 digits and more: over every bound, refused (it was read whole, past the discard bound,
     * and answered 100 Continue); leading zeros count for nothing. */
    assert_int_equal(fsa__server_body_plan("1000000000000000000", "100-continue"),
                     FSA__BODY_REFUSE);
    assert_int_equal(fsa__server_body_plan("99999999999999999999999", NULL), FSA__BODY_REFUSE);
    assert_int_equal(fsa__server_body_plan("0000000000000000000002000000", NULL), FSA__BODY_DROP);
    assert_int_equal(fsa__server_body_plan("00000000000000000000000000100", NULL), FSA__BODY_READ);
    assert_int_equal(fsa__server_body_plan("000", NULL), FSA__BODY_READ);
}

static void test_request__accepts_gzip(void **state)
{
    (void)state;
    assert_true(fsa__server_accepts_gzip("gzip"));
    assert_true(fsa__server_accepts_gzip("deflate, gzip"));
    assert_true(fsa__server_accepts_gzip("gzip;q=0.5"));
    assert_true(fsa__server_accepts_gzip("gzip ;q=1"));
    assert_false(fsa__server_accepts_gzip(NULL));
    assert_false(fsa__server_accepts_gzip("identity"));
    assert_false(fsa__server_accepts_gzip("gzip;q=0"));
    assert_false(fsa__server_accepts_gzip("gzip;q=0.0"));
    assert_false(fsa__server_accepts_gzip("gzip;q=0.000"));
    /* Whitespace after the ";" too (RFC 9110): a client that refused gzip got it. */
    assert_false(fsa__server_accepts_gzip("gzip; q=0"));
    assert_false(fsa__server_accepts_gzip("gzip ; q=0.0"));
    assert_false(fsa__server_accepts_gzip("gzip;\tQ=0"));
    assert_true(fsa__server_accepts_gzip("gzip; q=0.5"));
    assert_true(fsa__server_accepts_gzip("gzip; level=1"));
}

static void route(const char *path, fsa__server_admin_res_t res, const char *method, const char *id)
{
    fsa__server_admin_route_t rt;
    fsa__server_admin_route(path, &rt);
    if (rt.res != res)
        fail_msg("%s: resource %d, wanted %d", path, (int)rt.res, (int)res);
    if (method == NULL)
        assert_null(rt.method);
    else
        assert_string_equal(rt.method, method);
    assert_string_equal(rt.id, id);
}

static void test_request__admin_routes(void **state)
{
    (void)state;
    route("/admin/v1/stats", FSA__ADMIN_STATS, "GET", "");
    route("/admin/v1/entities", FSA__ADMIN_SEED, "POST", "");
    route("/admin/v1/ops", FSA__ADMIN_OPS, "POST", "");
    route("/admin/v1/entities/ticket/T-1", FSA__ADMIN_ENTITY, "GET", "T-1");
    fsa__server_admin_route_t rt;
    fsa__server_admin_route("/admin/v1/entities/jobneed/J.2", &rt);
    assert_int_equal(rt.type, FSA_TYPE_JOBNEED);
    route("/admin/v1/jobneeds/J.2/autoclose", FSA__ADMIN_AUTOCLOSE, "POST", "J.2");

    route("/admin/v1/", FSA__ADMIN_NONE, NULL, "");
    route("/admin/v1/stats/", FSA__ADMIN_NONE, NULL, "");
    route("/admin/v1/entities/nosuchtype/T-1", FSA__ADMIN_NONE, NULL, "");
    route("/admin/v1/entities/ticket/", FSA__ADMIN_NONE, NULL, "");
    route("/admin/v1/entities/ticket/a/b", FSA__ADMIN_NONE, NULL, "");
    route("/admin/v1/jobneeds/J.2/close", FSA__ADMIN_NONE, NULL, "");
    route("/admin/v1/jobneeds/J 2/autoclose", FSA__ADMIN_NONE, NULL, "");
    route("/admin/v1/jobneeds//autoclose", FSA__ADMIN_NONE, NULL, "");
    /* The longest id routes; one character more does not. */
    char id[FSA_ID_BYTES + 1], path[FSA_ID_BYTES + 64];
    memset(id, 'a', FSA_ID_BYTES - 1);
    id[FSA_ID_BYTES - 1] = '\0';
    snprintf(path, sizeof path, "/admin/v1/jobneeds/%s/autoclose", id);
    route(path, FSA__ADMIN_AUTOCLOSE, "POST", id);
    snprintf(path, sizeof path, "/admin/v1/entities/ticket/%s", id);
    route(path, FSA__ADMIN_ENTITY, "GET", id);
    id[FSA_ID_BYTES - 1] = 'a';
    id[FSA_ID_BYTES] = '\0';
    snprintf(path, sizeof path, "/admin/v1/jobneeds/%s/autoclose", id);
    route(path, FSA__ADMIN_NONE, NULL, "");
    snprintf(path, sizeof path, "/admin/v1/entities/ticket/%s", id);
    route(path, FSA__ADMIN_NONE, NULL, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request__precheck),
        cmocka_unit_test(test_request__framing_and_body_plan),
        cmocka_unit_test(test_request__accepts_gzip),
        cmocka_unit_test(test_request__admin_routes),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
