/* Tests for sync/backoff.c: the named policies, jitter bounds, Retry-After, error classes. */
#include <stdint.h>
#include <string.h>

#include "port/limits.h"
#include "port/sim/sim.h"
#include "sync/backoff.h"
#include "tests/test_util.h"

#define MS(x) ((int64_t)((x)*1e6))

static void test_fsa_retry_policy__platform_table(void **state)
{
    (void)state;
    static const struct {
        fsa_retry_kind_t kind;
        const char *name;
        uint32_t retries;
        int64_t initial, max;
        double mult;
    } want[] = {
        {FSA_RETRY_DEFAULT, "DEFAULT", 3, MS(100), MS(5000), 2.0},
        {FSA_RETRY_AGGRESSIVE, "AGGRESSIVE", 5, MS(50), MS(3000), 1.5},
        {FSA_RETRY_CONSERVATIVE, "CONSERVATIVE", 2, MS(500), MS(10000), 2.5},
        {FSA_RETRY_LOCK_ACQUISITION, "LOCK_ACQUISITION", 4, MS(100), MS(2000), 1.5},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const fsa_retry_policy_t *p = fsa_retry_policy(want[i].kind);
        assert_non_null(p);
        assert_string_equal(p->name, want[i].name);
        assert_int_equal(p->max_retries, want[i].retries);
        assert_int_equal(p->initial_ns, want[i].initial);
        assert_int_equal(p->max_ns, want[i].max);
        assert_true(p->multiplier == want[i].mult);
        fsa_retry_kind_t k;
        assert_fsa_ok(fsa_retry_policy_parse(want[i].name, &k));
        assert_int_equal(k, want[i].kind);
    }
    assert_null(fsa_retry_policy(FSA__RETRY_COUNT));
    fsa_retry_kind_t k;
    assert_int_equal(fsa_retry_policy_parse("default", &k), FSA_EINVAL);
    assert_int_equal(fsa_retry_policy_parse(NULL, &k), FSA_EINVAL);
}

/* With the largest random number the delay is the cap itself; with 0 it is 0. */
static void test_fsa_backoff_next__caps_grow_then_exhaust(void **state)
{
    (void)state;
    static const struct {
        fsa_retry_kind_t kind;
        int64_t caps[6];
        int n;
    } cases[] = {
        {FSA_RETRY_DEFAULT, {MS(100), MS(200), MS(400)}, 3},
        {FSA_RETRY_AGGRESSIVE, {MS(50), MS(75), MS(112.5), MS(168.75), MS(253.125)}, 5},
        {FSA_RETRY_CONSERVATIVE, {MS(500), MS(1250)}, 2},
        {FSA_RETRY_LOCK_ACQUISITION, {MS(100), MS(150), MS(225), MS(337.5)}, 4},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fsa_backoff_t hi, lo;
        fsa_backoff_init(&hi, fsa_retry_policy(cases[c].kind));
        fsa_backoff_init(&lo, fsa_retry_policy(cases[c].kind));
        for (int i = 0; i < cases[c].n; i++) {
            int64_t d;
            /* random % (cap + 1) == cap when random == cap */
            assert_fsa_ok(fsa_backoff_next(&hi, (uint64_t)cases[c].caps[i], 0, &d));
            assert_int_equal(d, cases[c].caps[i]);
            assert_fsa_ok(fsa_backoff_next(&lo, 0, 0, &d));
            assert_int_equal(d, 0);
        }
        int64_t d = 123;
        assert_int_equal(fsa_backoff_next(&hi, 5, 0, &d), FSA_EEXHAUSTED);
        assert_int_equal(d, 0);
    }
}

static void test_fsa_backoff_next__never_beyond_max(void **state)
{
    (void)state;
    fsa_retry_policy_t p = {"LONG", 40, MS(100), 2.0, MS(5000)};
    fsa_backoff_t b;
    fsa_backoff_init(&b, &p);
    for (int i = 0; i < 40; i++) {
        int64_t d;
        assert_fsa_ok(fsa_backoff_next(&b, UINT64_MAX - (uint64_t)i, 0, &d));
        assert_true(d >= 0 && d <= MS(5000));
    }
}

static void test_fsa_backoff_next__retry_after_is_a_floor(void **state)
{
    (void)state;
    fsa_backoff_t b;
    fsa_backoff_init(&b, fsa_retry_policy(FSA_RETRY_DEFAULT));
    int64_t d;
    assert_fsa_ok(fsa_backoff_next(&b, 0, 7 * FSA_NS_PER_S, &d));
    assert_int_equal(d, 7 * FSA_NS_PER_S);
    /* an absurd Retry-After is capped */
    assert_fsa_ok(fsa_backoff_next(&b, 0, INT64_C(1) << 62, &d));
    assert_int_equal(d, FSA_LIMIT_RETRY_AFTER_MAX_MS * FSA_NS_PER_MS);
    assert_int_equal(fsa_backoff_next(NULL, 0, 0, &d), FSA_EINVAL);
    assert_int_equal(fsa_backoff_next(&b, 0, 0, NULL), FSA_EINVAL);
}

/* A whole retry loop on the sim clock: the virtual time slept is the sum of the jittered delays,
 * which stays within the sum of the caps, and no real time passes. */
static void test_fsa_backoff_next__retry_loop_on_sim_clock(void **state)
{
    (void)state;
    fsa_sim_t *sim;
    fsa_wall_t w = {0};
    assert_fsa_ok(fsa_sim_new(2024, w, "backoff", &sim));
    fsa_port_t *p = fsa_sim_port(sim);
    fsa_mono_t real0 = fsa_port_posix()->mono_now(NULL);
    fsa_backoff_t b;
    fsa_backoff_init(&b, fsa_retry_policy(FSA_RETRY_CONSERVATIVE));
    int64_t slept = 0, d;
    int tries = 1;
    for (;;) {
        uint64_t r;
        assert_fsa_ok(p->random(p->ctx, &r, sizeof r));
        if (fsa_backoff_next(&b, r, 0, &d) != FSA_OK)
            break;
        p->sleep(p->ctx, d);
        slept += d;
        tries++;
    }
    assert_int_equal(tries, 3); /* the first try and 2 retries */
    assert_int_equal(p->mono_now(p->ctx).ns, slept);
    assert_true(slept <= MS(500) + MS(1250));
    assert_true(test_real_elapsed_ns(real0) < FSA_NS_PER_S / 10);
    fsa_sim_free(sim);
}

static void test_fsa_backoff_cycle_delay__grows_caps_never_ends(void **state)
{
    (void)state;
    int64_t max = FSA_LIMIT_CYCLE_BACKOFF_MAX_MS * FSA_NS_PER_MS;
    assert_int_equal(fsa_backoff_cycle_delay(1, 0, 0), FSA_NS_PER_S / 2);
    assert_int_equal(fsa_backoff_cycle_delay(1, FSA_NS_PER_S / 2, 0), FSA_NS_PER_S);
    assert_int_equal(fsa_backoff_cycle_delay(3, 0, 0), 2 * FSA_NS_PER_S);
    assert_int_equal(fsa_backoff_cycle_delay(1000, 0, 0), max / 2);
    for (uint32_t f = 1; f < 100; f++) {
        int64_t d = fsa_backoff_cycle_delay(f, UINT64_MAX - f, 0);
        assert_true(d > 0 && d <= max);
    }
    assert_int_equal(fsa_backoff_cycle_delay(1, 0, 30 * FSA_NS_PER_S), 30 * FSA_NS_PER_S);
}

static void test_fsa_errclass__protocol_table(void **state)
{
    (void)state;
    static const struct {
        fsa_status_t net;
        int http;
        const char *code;
        fsa_errclass_t want;
    } cases[] = {
        {FSA_ENET, 0, NULL, FSA_ERRCLASS_TRANSIENT},
        {FSA_ETIMEOUT, 0, NULL, FSA_ERRCLASS_TRANSIENT},
        {FSA_OK, 200, NULL, FSA_ERRCLASS_NONE},
        {FSA_OK, 400, "malformed", FSA_ERRCLASS_REJECTED},
        {FSA_OK, 401, "clock_skew", FSA_ERRCLASS_SKEW},
        {FSA_OK, 401, "bad_signature", FSA_ERRCLASS_AUTH},
        {FSA_OK, 401, "replay", FSA_ERRCLASS_RESIGN},
        {FSA_OK, 401, NULL, FSA_ERRCLASS_AUTH},
        {FSA_OK, 413, "too_large", FSA_ERRCLASS_TOO_LARGE},
        {FSA_OK, 429, NULL, FSA_ERRCLASS_WAIT},
        {FSA_OK, 503, NULL, FSA_ERRCLASS_WAIT},
        {FSA_OK, 500, NULL, FSA_ERRCLASS_TRANSIENT},
        {FSA_OK, 502, NULL, FSA_ERRCLASS_TRANSIENT},
        {FSA_OK, 404, NULL, FSA_ERRCLASS_TRANSIENT}, /* a proxy in the way: not an answer */
        {FSA_OK, 302, NULL, FSA_ERRCLASS_TRANSIENT}, /* a captive portal */
        {FSA_OK, 403, NULL, FSA_ERRCLASS_TRANSIENT},
        {FSA_OK, 400, "malformed_cursor", FSA_ERRCLASS_REJECTED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (fsa_errclass(cases[i].net, cases[i].http, cases[i].code) != cases[i].want)
            fail_msg("case %zu: http %d code %s gave %s", i, cases[i].http,
                     cases[i].code ? cases[i].code : "-",
                     fsa_errclass_name(fsa_errclass(cases[i].net, cases[i].http, cases[i].code)));
    }
    assert_string_equal(fsa_errclass_name(FSA_ERRCLASS_SKEW), "skew");
    assert_string_equal(fsa_errclass_name(FSA_ERRCLASS_RESIGN), "resign");
    assert_string_equal(fsa_errclass_name((fsa_errclass_t)99), "?");
}

/* A stored deadline further ahead than any cycle delay (the clock was set back since) is due now;
 * any deadline a delay could have made stands. */
static void test_fsa_backoff_cycle_due__a_deadline_from_a_clock_set_back_is_now(void **state)
{
    (void)state;
    const int64_t now = 1700000000000LL, year = 365LL * 24 * 3600 * 1000;
    int64_t most = FSA_LIMIT_RETRY_AFTER_MAX_MS > FSA_LIMIT_CYCLE_BACKOFF_MAX_MS
                       ? FSA_LIMIT_RETRY_AFTER_MAX_MS
                       : FSA_LIMIT_CYCLE_BACKOFF_MAX_MS;
    assert_int_equal(fsa_backoff_cycle_due(now + year, now), now);
    assert_int_equal(fsa_backoff_cycle_due(now + most + 60001, now), now);
    assert_int_equal(fsa_backoff_cycle_due(now + most + 60000, now), now + most + 60000);
    assert_int_equal(fsa_backoff_cycle_due(now + 1000, now), now + 1000);
    assert_int_equal(fsa_backoff_cycle_due(now - year, now), now - year); /* past: due anyway */
    assert_int_equal(fsa_backoff_cycle_due(INT64_MAX, now), now);
    assert_int_equal(fsa_backoff_cycle_due(INT64_MAX, INT64_MAX - 5), INT64_MAX);
    /* every delay the cycle can pick stands */
    for (uint32_t failures = 1; failures < 40; failures++) {
        int64_t d = fsa_backoff_cycle_delay(failures, UINT64_MAX, 3600LL * FSA_NS_PER_S * 2);
        assert_int_equal(fsa_backoff_cycle_due(now + d / FSA_NS_PER_MS, now),
                         now + d / FSA_NS_PER_MS);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_retry_policy__platform_table),
        cmocka_unit_test(test_fsa_backoff_next__caps_grow_then_exhaust),
        cmocka_unit_test(test_fsa_backoff_next__never_beyond_max),
        cmocka_unit_test(test_fsa_backoff_next__retry_after_is_a_floor),
        cmocka_unit_test(test_fsa_backoff_next__retry_loop_on_sim_clock),
        cmocka_unit_test(test_fsa_backoff_cycle_delay__grows_caps_never_ends),
        cmocka_unit_test(test_fsa_errclass__protocol_table),
        cmocka_unit_test(test_fsa_backoff_cycle_due__a_deadline_from_a_clock_set_back_is_now),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
