/* Unit tests for agent/sim/checks.c: the invariant checkers on hand-made server states, so that
 * every way an invariant can break (lost, doubled, foreign, malformed) is proven to fail. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/sim/fleet.h"
#include "tests/test_util.h"

static char det[512];

static void test_check_int_field__equal_passes(void **state)
{
    (void)state;
    assert_true(fsa__check_int_field("{\"level\":3}", "level", 3, det, sizeof det));
    assert_non_null(strstr(det, "level is 3"));
}

static void test_check_int_field__wrong_missing_or_malformed_fails(void **state)
{
    (void)state;
    assert_false(fsa__check_int_field("{\"level\":2}", "level", 3, det, sizeof det));
    assert_non_null(strstr(det, "expected 3"));
    assert_false(fsa__check_int_field("{\"level\":4}", "level", 3, det, sizeof det));
    assert_false(fsa__check_int_field("{}", "level", 0, det, sizeof det));
    assert_false(fsa__check_int_field("{\"level\":\"3\"}", "level", 3, det, sizeof det));
    assert_false(fsa__check_int_field("{\"level\":3.5}", "level", 3, det, sizeof det));
    assert_false(fsa__check_int_field("not json", "level", 3, det, sizeof det));
    assert_false(fsa__check_int_field("[3]", "level", 3, det, sizeof det));
    assert_false(fsa__check_int_field(NULL, "level", 3, det, sizeof det));
}

static void test_check_str_field__cases(void **state)
{
    (void)state;
    assert_true(fsa__check_str_field("{\"jobstatus\":\"AUTOCLOSED\"}", "jobstatus", "AUTOCLOSED",
                                     det, sizeof det));
    assert_false(fsa__check_str_field("{\"jobstatus\":\"COMPLETED\"}", "jobstatus", "AUTOCLOSED",
                                      det, sizeof det));
    assert_non_null(strstr(det, "COMPLETED"));
    assert_false(fsa__check_str_field("{\"jobstatus\":1}", "jobstatus", "X", det, sizeof det));
}

static const char *const devs3[] = {"d1", "d1", "d2"};
static const int64_t ns3[] = {1, 2, 3};

#define LOG(items) "{\"ticketlog\":{\"ticket_history\":[" items "]}}"

static void test_check_log__exact_passes(void **state)
{
    (void)state;
    assert_true(fsa__check_log(LOG("{\"dev\":\"d2\",\"n\":3},{\"dev\":\"d1\",\"n\":1},"
                                   "{\"dev\":\"d1\",\"n\":2,\"action\":\"x\"}"),
                               "ticketlog", "ticket_history", devs3, ns3, 3, det, sizeof det));
    assert_non_null(strstr(det, "all 3 entries present once"));
}

static void test_check_log__lost_entry_fails(void **state)
{
    (void)state;
    assert_false(fsa__check_log(LOG("{\"dev\":\"d2\",\"n\":3},{\"dev\":\"d1\",\"n\":1}"),
                                "ticketlog", "ticket_history", devs3, ns3, 3, det, sizeof det));
    assert_non_null(strstr(det, "1 missing (e.g. d1/2)"));
}

static void test_check_log__doubled_entry_fails(void **state)
{
    (void)state;
    assert_false(fsa__check_log(LOG("{\"dev\":\"d2\",\"n\":3},{\"dev\":\"d1\",\"n\":1},"
                                    "{\"dev\":\"d1\",\"n\":2},{\"dev\":\"d1\",\"n\":1}"),
                                "ticketlog", "ticket_history", devs3, ns3, 3, det, sizeof det));
    assert_non_null(strstr(det, "1 doubled (e.g. d1/1)"));
}

static void test_check_log__foreign_or_malformed_entry_fails(void **state)
{
    (void)state;
    assert_false(fsa__check_log(LOG("{\"dev\":\"d2\",\"n\":3},{\"dev\":\"d1\",\"n\":1},"
                                    "{\"dev\":\"d1\",\"n\":2},{\"dev\":\"d9\",\"n\":1}"),
                                "ticketlog", "ticket_history", devs3, ns3, 3, det, sizeof det));
    assert_non_null(strstr(det, "1 unexpected (e.g. d9/1)"));
    assert_false(fsa__check_log(LOG("{\"dev\":\"d2\",\"n\":3},{\"dev\":\"d1\",\"n\":1},"
                                    "{\"dev\":\"d1\",\"n\":2},\"junk\""),
                                "ticketlog", "ticket_history", devs3, ns3, 3, det, sizeof det));
    assert_non_null(strstr(det, "1 malformed"));
    /* The same entry from another device is not the entry expected. */
    assert_false(fsa__check_log(LOG("{\"dev\":\"d2\",\"n\":3},{\"dev\":\"d1\",\"n\":1},"
                                    "{\"dev\":\"d2\",\"n\":2}"),
                                "ticketlog", "ticket_history", devs3, ns3, 3, det, sizeof det));
}

/* An escalation recorded through libfieldsync names its device and number in its note. */
static void test_check_log__escalation_notes_identify_entries(void **state)
{
    (void)state;
    const char *esc = "{\"action\":\"escalated\",\"at\":1,\"note\":";
    char text[512];
    snprintf(text, sizeof text,
             "{\"ticketlog\":{\"ticket_history\":[%s\"d2#3\"},%s\"d1#1\"},%s\"d1#2\"}]}}", esc, esc,
             esc);
    assert_true(
        fsa__check_log(text, "ticketlog", "ticket_history", devs3, ns3, 3, det, sizeof det));
    snprintf(text, sizeof text,
             "{\"ticketlog\":{\"ticket_history\":[%s\"d2#3\"},%s\"d1#1\"},%s\"d1#1\"}]}}", esc, esc,
             esc);
    assert_false(
        fsa__check_log(text, "ticketlog", "ticket_history", devs3, ns3, 3, det, sizeof det));
    assert_non_null(strstr(det, "doubled"));
    /* A note without the number, with junk after it, or without a device is malformed. */
    const char *bad[] = {"\"d1\"", "\"d1#2x\"", "\"#2\"", "\"d1#\"", "7"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text,
                 "{\"ticketlog\":{\"ticket_history\":[%s\"d2#3\"},%s\"d1#1\"},%s%s}]}}", esc, esc,
                 esc, bad[i]);
        assert_false(
            fsa__check_log(text, "ticketlog", "ticket_history", devs3, ns3, 3, det, sizeof det));
        assert_non_null(strstr(det, "malformed"));
    }
}

static void test_json_status__entity_views(void **state)
{
    (void)state;
    char out[16];
    assert_true(fsa__json_status("{\"type\":\"jobneed\",\"fields\":{\"jobstatus\":\"COMPLETED\"}}",
                                 "jobstatus", out, sizeof out));
    assert_string_equal(out, "COMPLETED");
    assert_false(fsa__json_status("{\"fields\":{\"jobstatus\":3}}", "jobstatus", out, sizeof out));
    assert_string_equal(out, "");
    assert_false(fsa__json_status("{\"fields\":{}}", "jobstatus", out, sizeof out));
    assert_false(fsa__json_status("not json", "jobstatus", out, sizeof out));
    assert_false(fsa__json_status(NULL, "jobstatus", out, sizeof out));
    assert_false(fsa__json_status("{\"fields\":{\"jobstatus\":\"PARTIALLYCOMPLETED\"}}",
                                  "jobstatus", out, 8)); /* does not fit */
}

static void test_check_log__no_array_fails(void **state)
{
    (void)state;
    assert_false(fsa__check_log("{\"ticketlog\":{}}", "ticketlog", "ticket_history", devs3, ns3, 3,
                                det, sizeof det));
    assert_false(
        fsa__check_log("{}", "ticketlog", "ticket_history", devs3, ns3, 3, det, sizeof det));
    /* Nothing expected and nothing there: holds. */
    assert_true(
        fsa__check_log(LOG(""), "ticketlog", "ticket_history", devs3, ns3, 0, det, sizeof det));
}

static void test_check_log__repeated_expectation_counts(void **state)
{
    (void)state;
    const char *const d[] = {"a", "a"};
    const int64_t n[] = {5, 5};
    assert_true(fsa__check_log(LOG("{\"dev\":\"a\",\"n\":5},{\"dev\":\"a\",\"n\":5}"), "ticketlog",
                               "ticket_history", d, n, 2, det, sizeof det));
    assert_false(fsa__check_log(LOG("{\"dev\":\"a\",\"n\":5}"), "ticketlog", "ticket_history", d, n,
                                2, det, sizeof det));
}

#define KEYS(items) "{\"other_info\":{" items "}}"

static void test_check_keys__all_present_passes(void **state)
{
    (void)state;
    assert_true(fsa__check_keys(KEYS("\"k1\":{\"dev\":\"d1\",\"n\":1},\"k2\":{\"dev\":\"d1\","
                                     "\"n\":2},\"k3\":{\"dev\":\"d2\",\"n\":3},"
                                     "\"last_checkpoint\":\"x\""),
                                "other_info", "k", devs3, ns3, 3, det, sizeof det));
}

static void test_check_keys__missing_wrong_or_extra_fails(void **state)
{
    (void)state;
    /* Lost: k2 missing (a merge overwritten by another device's whole-object write). */
    assert_false(fsa__check_keys(KEYS("\"k1\":{\"dev\":\"d1\",\"n\":1},\"k3\":{\"dev\":\"d2\","
                                      "\"n\":3}"),
                                 "other_info", "k", devs3, ns3, 3, det, sizeof det));
    assert_non_null(strstr(det, "1 missing"));
    /* A value under the wrong key. */
    assert_false(fsa__check_keys(KEYS("\"k1\":{\"dev\":\"d1\",\"n\":1},\"k2\":{\"dev\":\"d1\","
                                      "\"n\":3},\"k3\":{\"dev\":\"d2\",\"n\":3}"),
                                 "other_info", "k", devs3, ns3, 3, det, sizeof det));
    /* A key nobody merged. */
    assert_false(fsa__check_keys(KEYS("\"k1\":{\"dev\":\"d1\",\"n\":1},\"k2\":{\"dev\":\"d1\","
                                      "\"n\":2},\"k3\":{\"dev\":\"d2\",\"n\":3},"
                                      "\"k4\":{\"dev\":\"d2\",\"n\":4}"),
                                 "other_info", "k", devs3, ns3, 3, det, sizeof det));
    assert_non_null(strstr(det, "unexpected"));
    assert_false(
        fsa__check_keys("{\"other_info\":[]}", "other_info", "k", devs3, ns3, 3, det, sizeof det));
}

static void test_check_member_in__cases(void **state)
{
    (void)state;
    const char *const allowed[] = {"c1", "c2"};
    assert_true(fsa__check_member_in("{\"other_info\":{\"last_checkpoint\":\"c2\"}}", "other_info",
                                     "last_checkpoint", allowed, 2, det, sizeof det));
    assert_false(fsa__check_member_in("{\"other_info\":{\"last_checkpoint\":\"c9\"}}", "other_info",
                                      "last_checkpoint", allowed, 2, det, sizeof det));
    assert_false(fsa__check_member_in("{\"other_info\":{}}", "other_info", "last_checkpoint",
                                      allowed, 2, det, sizeof det));
}

static void test_stats_parse__good_and_bad(void **state)
{
    (void)state;
    fsa__stats_t s;
    const char *good = "{\"requests\":{\"total\":9,\"push\":4,\"pull\":5,\"admin\":0,\"other\":0},"
                       "\"responses\":{\"2xx\":9,\"4xx\":0,\"5xx\":0},"
                       "\"ops\":{\"applied\":7,\"duplicate\":2,\"conflict\":1,\"rejected\":0},"
                       "\"auth_failures\":{\"bad_signature\":0,\"unknown_device\":0,\"replay\":3,"
                       "\"clock_skew\":1},\"bad_requests\":{\"malformed\":0,\"too_large\":0},"
                       "\"faults\":{\"latency\":0,\"5xx\":1,\"429\":2,\"drop\":3,\"reset\":4},"
                       "\"store\":{\"entities\":11,\"ops\":8,\"last_change\":8},\"devices\":2,"
                       "\"uptime_ms\":5,\"server_time\":6}";
    assert_fsa_ok(fsa__stats_parse(good, &s));
    assert_int_equal(s.applied, 7);
    assert_int_equal(s.duplicate, 2);
    assert_int_equal(s.replay, 3);
    assert_int_equal(s.f_drop, 3);
    assert_int_equal(s.entities, 11);
    assert_int_equal(fsa__stats_parse("{\"ops\":{}}", &s), FSA_EPROTO);
    assert_int_equal(s.applied, 0);
    assert_int_equal(fsa__stats_parse("nope", &s), FSA_EPROTO);
    assert_int_equal(fsa__stats_parse(NULL, &s), FSA_EPROTO);
}

static void test_percentile__nearest_rank(void **state)
{
    (void)state;
    int64_t v[] = {50, 10, 40, 20, 30, 60, 70, 80, 90, 100};
    assert_int_equal(fsa__percentile(v, 10, 50), 50);
    assert_int_equal(fsa__percentile(v, 10, 99), 100);
    assert_int_equal(fsa__percentile(v, 10, 10), 10);
    assert_int_equal(fsa__percentile(v, 0, 50), 0);
    int64_t one[] = {7};
    assert_int_equal(fsa__percentile(one, 1, 99), 7);
}

/* An invariant is listed once, and a failure stands: a check that stopped at a read that failed
 * (listed FAIL) went on to say "pass, 0 checked" of the same invariant, and the summary counted
 * both. */
static void test_inv_add__a_failure_stands(void **state)
{
    (void)state;
    static fsa__result_t res;
    memset(&res, 0, sizeof res);
    fsa__inv_add(&res, "a", FSA__INV_FAIL, "read failed");
    fsa__inv_add(&res, "a", FSA__INV_PASS, "0 checked");
    fsa__inv_add(&res, "b", FSA__INV_PASS, "3 checked");
    fsa__inv_add(&res, "b", FSA__INV_FAIL, "1 of 3 wrong");
    fsa__inv_add(&res, "c", FSA__INV_NOT_CHECKED, "no admin API");
    fsa__inv_add(&res, "c", FSA__INV_PASS, "0 checked");
    assert_int_equal(res.ninv, 3);
    assert_string_equal(res.inv[0].name, "a");
    assert_int_equal(res.inv[0].status, FSA__INV_FAIL);
    assert_string_equal(res.inv[0].details, "read failed");
    assert_int_equal(res.inv[1].status, FSA__INV_FAIL);
    assert_string_equal(res.inv[1].details, "1 of 3 wrong");
    assert_int_equal(res.inv[2].status, FSA__INV_NOT_CHECKED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_int_field__equal_passes),
        cmocka_unit_test(test_check_int_field__wrong_missing_or_malformed_fails),
        cmocka_unit_test(test_check_str_field__cases),
        cmocka_unit_test(test_check_log__exact_passes),
        cmocka_unit_test(test_check_log__lost_entry_fails),
        cmocka_unit_test(test_check_log__doubled_entry_fails),
        cmocka_unit_test(test_check_log__foreign_or_malformed_entry_fails),
        cmocka_unit_test(test_check_log__escalation_notes_identify_entries),
        cmocka_unit_test(test_json_status__entity_views),
        cmocka_unit_test(test_check_log__no_array_fails),
        cmocka_unit_test(test_check_log__repeated_expectation_counts),
        cmocka_unit_test(test_check_keys__all_present_passes),
        cmocka_unit_test(test_check_keys__missing_wrong_or_extra_fails),
        cmocka_unit_test(test_check_member_in__cases),
        cmocka_unit_test(test_stats_parse__good_and_bad),
        cmocka_unit_test(test_percentile__nearest_rank),
        cmocka_unit_test(test_inv_add__a_failure_stands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
