/* fieldsync tests: the server's pure request steps (sync/server/request.h) that run on a
 * request's headers before its body: precheck, framing, the body plan, Expect, Accept-Encoding,
 * and the admin API's routes. (Authentication, bodies and the pull query are fuzzed by
 * tests/fuzz/fuzz_server_request.c and run by the server's integration tests.) */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

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

/* A key for IPv4 address a.b.c.d. */
static void key4(unsigned char key[FSA__SERVER_ADDR_KEY], uint32_t host_order)
{
    struct sockaddr_in in;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(host_order);
    fsa_socket_client_key((const struct sockaddr *)&in, key);
}

/* Body bytes per address: each key within its share, slots freed and reused, every key still
 * found after deletions moved others back, and a full table refusing a new key. */
static void test_request__holds_per_address(void **state)
{
    (void)state;
    enum { CAP = 64 };
    fsa__server_hold_t slots[CAP];
    memset(slots, 0, sizeof slots);
    fsa__server_holds_t h = {slots, CAP};
    unsigned char a[FSA__SERVER_ADDR_KEY], b[FSA__SERVER_ADDR_KEY];
    key4(a, 0x7f000002);
    key4(b, 0x7f000003);
    assert_true(fsa__server_hold_take(&h, a, 600, 1000));
    assert_true(fsa__server_hold_take(&h, a, 400, 1000));
    assert_false(fsa__server_hold_take(&h, a, 1, 1000));   /* a's share is spent */
    assert_true(fsa__server_hold_take(&h, b, 1000, 1000)); /* b's is its own */
    assert_int_equal(fsa__server_hold_of(&h, a), 1000);
    fsa__server_hold_give(&h, a, 400);
    assert_true(fsa__server_hold_take(&h, a, 400, 1000));
    fsa__server_hold_give(&h, a, 1000);
    assert_int_equal(fsa__server_hold_of(&h, a), 0);
    fsa__server_hold_give(&h, b, 1000);
    for (size_t i = 0; i < CAP; i++)
        assert_int_equal(slots[i].key[0], 0); /* every slot free again */

    /* The table full (collisions, wrap-around), then emptied in another order: every key keeps
     * what it holds while others leave, and nothing is left. */
    unsigned char keys[CAP][FSA__SERVER_ADDR_KEY];
    for (uint32_t i = 0; i < CAP; i++) {
        key4(keys[i], 0x0a000000 + i * 7919);
        assert_true(fsa__server_hold_take(&h, keys[i], i + 1, 1000));
    }
    key4(a, 0x0b000001);
    assert_false(fsa__server_hold_take(&h, a, 1, 1000)); /* no slot free */
    for (uint32_t k = 0; k < CAP; k++) {
        uint32_t i = (k * 37) % CAP; /* 37 is prime to 64: each once */
        fsa__server_hold_give(&h, keys[i], i + 1);
        for (uint32_t j = 0; j < CAP; j++) {
            bool gone = false;
            for (uint32_t m = 0; m <= k; m++)
                gone = gone || (m * 37) % CAP == j;
            assert_int_equal(fsa__server_hold_of(&h, keys[j]), gone ? 0 : (long long)j + 1);
        }
    }
    for (size_t i = 0; i < CAP; i++)
        assert_int_equal(slots[i].key[0], 0);
    assert_true(fsa__server_hold_take(&h, a, 1, 1000));
    fsa__server_hold_give(&h, a, 1);

    /* 200,000 takes and gives at random over 100 addresses (more than the table has slots),
     * against a plain array of what each holds. */
    long long model[100] = {0};
    unsigned char k[100][FSA__SERVER_ADDR_KEY];
    for (uint32_t i = 0; i < 100; i++)
        key4(k[i], 0x7f000000 + i * 131);
    uint64_t x = 88172645463325252ULL;
    int live = 0;
    for (int step = 0; step < 200000; step++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint32_t i = (uint32_t)(x % 100);
        long long n = (long long)((x >> 8) % 300) + 1;
        if ((x >> 20) & 1) {
            bool fits = model[i] + n <= 1000 && (model[i] > 0 || live < CAP);
            assert_int_equal(fsa__server_hold_take(&h, k[i], n, 1000), fits);
            if (fits) {
                live += model[i] == 0;
                model[i] += n;
            }
        } else if (model[i] > 0) {
            long long g = n < model[i] ? n : model[i];
            fsa__server_hold_give(&h, k[i], g);
            model[i] -= g;
            live -= model[i] == 0;
        }
        assert_int_equal(fsa__server_hold_of(&h, k[i]), model[i]);
    }
    for (uint32_t i = 0; i < 100; i++)
        assert_int_equal(fsa__server_hold_of(&h, k[i]), model[i]);
}

/* Addresses that are one client share a key: an IPv4 address and its IPv4-mapped IPv6 form, the
 * addresses of one IPv6 /64; another /64 and other families do not. */
static void test_request__address_keys(void **state)
{
    (void)state;
    unsigned char k4[FSA__SERVER_ADDR_KEY], k[FSA__SERVER_ADDR_KEY];
    key4(k4, 0xc0000201); /* 192.0.2.1 */
    struct sockaddr_in6 in6;
    memset(&in6, 0, sizeof in6);
    in6.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, "::ffff:192.0.2.1", &in6.sin6_addr), 1);
    fsa_socket_client_key((const struct sockaddr *)&in6, k);
    assert_memory_equal(k, k4, FSA__SERVER_ADDR_KEY);

    unsigned char a[FSA__SERVER_ADDR_KEY], b[FSA__SERVER_ADDR_KEY];
    assert_int_equal(inet_pton(AF_INET6, "2001:db8:1:2::1", &in6.sin6_addr), 1);
    fsa_socket_client_key((const struct sockaddr *)&in6, a);
    assert_int_equal(inet_pton(AF_INET6, "2001:db8:1:2:ffff:1:2:3", &in6.sin6_addr), 1);
    fsa_socket_client_key((const struct sockaddr *)&in6, b);
    assert_memory_equal(a, b, FSA__SERVER_ADDR_KEY);
    assert_int_equal(inet_pton(AF_INET6, "2001:db8:1:3::1", &in6.sin6_addr), 1);
    fsa_socket_client_key((const struct sockaddr *)&in6, b);
    assert_memory_not_equal(a, b, FSA__SERVER_ADDR_KEY);
    assert_memory_not_equal(a, k4, FSA__SERVER_ADDR_KEY);

    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    fsa_socket_client_key((const struct sockaddr *)&un, a);
    fsa_socket_client_key(NULL, b);
    assert_memory_equal(a, b, FSA__SERVER_ADDR_KEY);
    assert_memory_not_equal(a, k4, FSA__SERVER_ADDR_KEY);
    assert_int_not_equal(a[0], 0); /* never the mark of a free slot */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request__precheck),
        cmocka_unit_test(test_request__framing_and_body_plan),
        cmocka_unit_test(test_request__accepts_gzip),
        cmocka_unit_test(test_request__admin_routes),
        cmocka_unit_test(test_request__holds_per_address),
        cmocka_unit_test(test_request__address_keys),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
