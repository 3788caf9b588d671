/* Tests for port/timefmt.c: wall times as text and HTTP dates read, also after 2038 on 32-bit
 * time_t (armhf). */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "port/timefmt.h"
#include "tests/test_util.h"

typedef struct {
    int64_t ms;
    const char *human;
    const char *iso;
} time_case_t;

static const time_case_t cases[] = {
    {0, "1970-01-01 00:00:00 UTC", "1970-01-01T00:00:00Z"},
    {999, "1970-01-01 00:00:00 UTC", "1970-01-01T00:00:00Z"},
    {-1, "1969-12-31 23:59:59 UTC", "1969-12-31T23:59:59Z"},
    {-1000, "1969-12-31 23:59:59 UTC", "1969-12-31T23:59:59Z"},
    {-1001, "1969-12-31 23:59:58 UTC", "1969-12-31T23:59:58Z"},
    {951782400000, "2000-02-29 00:00:00 UTC", "2000-02-29T00:00:00Z"},
    {1795640703000, "2026-11-25 21:05:03 UTC", "2026-11-25T21:05:03Z"},
    /* The last second of a signed 32-bit time_t, the first one past it, and later. */
    {INT64_C(2147483647000), "2038-01-19 03:14:07 UTC", "2038-01-19T03:14:07Z"},
    {INT64_C(2147483648000), "2038-01-19 03:14:08 UTC", "2038-01-19T03:14:08Z"},
    {INT64_C(2208988800000), "2040-01-01 00:00:00 UTC", "2040-01-01T00:00:00Z"},
    {INT64_C(4294967296000), "2106-02-07 06:28:16 UTC", "2106-02-07T06:28:16Z"},
    {INT64_C(4107542399999), "2100-02-28 23:59:59 UTC", "2100-02-28T23:59:59Z"},
    {INT64_C(4107542400000), "2100-03-01 00:00:00 UTC", "2100-03-01T00:00:00Z"},
    {INT64_C(253402300799999), "9999-12-31 23:59:59 UTC", "9999-12-31T23:59:59Z"},
    {INT64_C(-62167219200000), "0000-01-01 00:00:00 UTC", "0000-01-01T00:00:00Z"},
};

static void test_fsa_time_format_utc__table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[FSA_TIME_TEXT_MAX];
        assert_fsa_ok(fsa_time_format_utc(cases[i].ms, FSA_TIME_HUMAN, buf, sizeof buf));
        assert_string_equal(buf, cases[i].human);
        assert_fsa_ok(fsa_time_format_utc(cases[i].ms, FSA_TIME_ISO, buf, sizeof buf));
        assert_string_equal(buf, cases[i].iso);
    }
}

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : days[m - 1];
}

/*
 * Every day from 1900 to 2200 against a calendar counted one day at a time (an expectation that
 * shares nothing with the civil-from-days arithmetic), at a time of day that moves with the day.
 */
static void test_fsa_time_format_utc__every_day_1900_to_2200(void **state)
{
    (void)state;
    int y = 1900, m = 1, d = 1;
    int64_t day = -25567; /* 1900-01-01 is 25567 days before 1970-01-01 */
    while (y < 2200) {
        const int64_t sec_of_day = (day * 7919 % 86400 + 86400) % 86400;
        const int64_t ms = day * 86400000 + sec_of_day * 1000 + (day & 1) * 999;
        char want[64], got[FSA_TIME_TEXT_MAX];
        snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02dZ", y, m, d,
                 (int)(sec_of_day / 3600), (int)(sec_of_day / 60 % 60), (int)(sec_of_day % 60));
        assert_fsa_ok(fsa_time_format_utc(ms, FSA_TIME_ISO, got, sizeof got));
        assert_string_equal(got, want);
        day++;
        if (++d > month_days(y, m)) {
            d = 1;
            if (++m > 12) {
                m = 1;
                y++;
            }
        }
    }
    assert_int_equal(day, 84006); /* 2200-01-01 */
}

/* Where time_t holds it, the C library agrees (on 32-bit time_t only up to 2038). */
static void test_fsa_time_format_utc__agrees_with_gmtime(void **state)
{
    (void)state;
    const int64_t lo = sizeof(time_t) >= 8 ? INT64_C(-62167219200) : INT32_MIN;
    const int64_t hi = sizeof(time_t) >= 8 ? INT64_C(253402300799) : INT32_MAX;
    const int64_t step = (hi - lo) / 20011; /* a prime count of steps: all times of day */
    for (int64_t s = lo; s <= hi; s += step) {
        time_t t = (time_t)s;
        struct tm tm;
        char want[64], got[FSA_TIME_TEXT_MAX];
        assert_non_null(gmtime_r(&t, &tm));
        snprintf(want, sizeof want, "%04d-%02d-%02d %02d:%02d:%02d UTC", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        assert_fsa_ok(fsa_time_format_utc(s * 1000, FSA_TIME_HUMAN, got, sizeof got));
        assert_string_equal(got, want);
    }
}

static void test_fsa_time_format_utc__out_of_range(void **state)
{
    (void)state;
    char buf[FSA_TIME_TEXT_MAX] = "x";
    assert_int_equal(fsa_time_format_utc(INT64_C(253402300800000), FSA_TIME_ISO, buf, sizeof buf),
                     FSA_EINVAL);
    assert_string_equal(buf, "");
    assert_int_equal(fsa_time_format_utc(INT64_C(-62167219200001), FSA_TIME_ISO, buf, sizeof buf),
                     FSA_EINVAL);
    assert_int_equal(fsa_time_format_utc(INT64_MAX, FSA_TIME_ISO, buf, sizeof buf), FSA_EINVAL);
    assert_int_equal(fsa_time_format_utc(INT64_MIN, FSA_TIME_HUMAN, buf, sizeof buf), FSA_EINVAL);
}

static void test_fsa_time_format_utc__invalid_params(void **state)
{
    (void)state;
    char buf[FSA_TIME_TEXT_MAX] = "x";
    assert_int_equal(fsa_time_format_utc(0, FSA_TIME_ISO, NULL, 10), FSA_EINVAL);
    assert_int_equal(fsa_time_format_utc(0, (fsa_time_style_t)7, buf, sizeof buf), FSA_EINVAL);
    assert_string_equal(buf, "");
}

static void test_fsa_time_format_utc__small_buffer(void **state)
{
    (void)state;
    char buf[FSA_TIME_TEXT_MAX];
    /* "1970-01-01T00:00:00Z" needs 21 bytes, the human shape 24. */
    assert_int_equal(fsa_time_format_utc(0, FSA_TIME_ISO, buf, 20), FSA_ETOOLARGE);
    assert_string_equal(buf, "");
    assert_fsa_ok(fsa_time_format_utc(0, FSA_TIME_ISO, buf, 21));
    assert_int_equal(fsa_time_format_utc(0, FSA_TIME_HUMAN, buf, 23), FSA_ETOOLARGE);
    assert_string_equal(buf, "");
    assert_fsa_ok(fsa_time_format_utc(0, FSA_TIME_HUMAN, buf, 24));
    assert_int_equal(fsa_time_format_utc(0, FSA_TIME_HUMAN, buf, 0), FSA_ETOOLARGE);
}

/* ---- fsa_time_parse_http ---- */

/* "Now" for the RFC 850 two-digit years: 2026-11-25 21:05:03 UTC, and 2100-03-01. */
#define NOW_2026 INT64_C(1795640703000)
#define NOW_2100 INT64_C(4107542400000)

typedef struct {
    const char *text;
    int64_t now_ms;
    int64_t ms; /* -1: refused (no case here is 1969-12-31 23:59:59) */
} http_case_t;

/* Expected values from Python's calendar.timegm, not from this code. */
static const http_case_t http_cases[] = {
    /* RFC 9110's own examples, in its three forms. */
    {"Sun, 06 Nov 1994 08:49:37 GMT", NOW_2026, 784111777000},
    {"Sunday, 06-Nov-94 08:49:37 GMT", NOW_2026, 784111777000},
    {"Sun Nov  6 08:49:37 1994", NOW_2026, 784111777000},
    {"Sun Nov 06 08:49:37 1994", NOW_2026, 784111777000},
    /* The last second of a signed 32-bit time_t, the first one past it, and later. */
    {"Tue, 19 Jan 2038 03:14:07 GMT", NOW_2026, INT64_C(2147483647000)},
    {"Tue, 19 Jan 2038 03:14:08 GMT", NOW_2026, INT64_C(2147483648000)},
    {"Sun, 01 Jan 2040 00:00:00 GMT", NOW_2026, INT64_C(2208988800000)},
    {"Sun Jan  1 00:00:00 2040", NOW_2026, INT64_C(2208988800000)},
    {"Sunday, 01-Jan-40 00:00:00 GMT", NOW_2026, INT64_C(2208988800000)},
    {"Sun, 07 Feb 2106 06:28:16 GMT", NOW_2026, INT64_C(4294967296000)},
    {"Fri, 31 Dec 9999 23:59:59 GMT", NOW_2026, INT64_C(253402300799000)},
    {"Sat, 01 Jan 0000 00:00:00 GMT", NOW_2026, INT64_C(-62167219200000)},
    {"Wed, 31 Dec 1969 23:59:59 GMT", NOW_2026, -1000},
    /* Leap days, and a leap second (the next second's start). */
    {"Tue, 29 Feb 2000 12:00:00 GMT", NOW_2026, 951825600000},
    {"Wed, 31 Dec 2008 23:59:60 GMT", NOW_2026, 1230768000000},
    /* RFC 850 years: in now's century unless more than 50 years ahead of now's year. */
    {"Tuesday, 01-Mar-77 00:00:00 GMT", NOW_2026, 226022400000},
    {"Sunday, 01-Mar-76 00:00:00 GMT", NOW_2026, 3350246400000},
    {"Friday, 01-Jan-40 00:00:00 GMT", NOW_2100, INT64_C(5364662400000)},
    {"Monday, 01-Mar-77 00:00:00 GMT", NOW_2100, 3381782400000},
    /* White space around the value (RFC 9110's OWS). */
    {" \tSun, 06 Nov 1994 08:49:37 GMT \t", NOW_2026, 784111777000},
    /* Refused: not one of the three forms, case, widths, ranges, dates that do not exist. */
    {"", NOW_2026, -1},
    {"   ", NOW_2026, -1},
    {"soon", NOW_2026, -1},
    {"120", NOW_2026, -1},
    {"sun, 06 Nov 1994 08:49:37 GMT", NOW_2026, -1},
    {"Sun, 06 nov 1994 08:49:37 GMT", NOW_2026, -1},
    {"Sun, 06 Nov 1994 08:49:37 gmt", NOW_2026, -1},
    {"Sun, 06 Nov 1994 08:49:37 UTC", NOW_2026, -1},
    {"Sun, 06 Nov 1994 08:49:37", NOW_2026, -1},
    {"Sun, 06 Nov 1994 08:49:37 GMTx", NOW_2026, -1},
    {"Sun, 06 Nov 1994 08:49:37 GMT x", NOW_2026, -1},
    {"Sun, 6 Nov 1994 08:49:37 GMT", NOW_2026, -1},
    {"Sun,06 Nov 1994 08:49:37 GMT", NOW_2026, -1},
    {"Sun, 06 Nov 94 08:49:37 GMT", NOW_2026, -1},
    {"Sun, 06 Nov 19940 08:49:37 GMT", NOW_2026, -1},
    {"Sun, 06 Nov -994 08:49:37 GMT", NOW_2026, -1},
    {"Sun, 06 Nov 1994 8:49:37 GMT", NOW_2026, -1},
    {"Sun, 06 Nov 1994 24:00:00 GMT", NOW_2026, -1},
    {"Sun, 06 Nov 1994 08:60:00 GMT", NOW_2026, -1},
    {"Sun, 06 Nov 1994 08:49:61 GMT", NOW_2026, -1},
    {"Sun, 00 Nov 1994 08:49:37 GMT", NOW_2026, -1},
    {"Sun, 31 Nov 1994 08:49:37 GMT", NOW_2026, -1},
    {"Thu, 29 Feb 2001 00:00:00 GMT", NOW_2026, -1},
    {"Mon, 29 Feb 2100 00:00:00 GMT", NOW_2026, -1},
    {"Xyz, 06 Nov 1994 08:49:37 GMT", NOW_2026, -1},
    {"Sunday, 06-Nov-1994 08:49:37 GMT", NOW_2026, -1},
    {"Sunday, 06 Nov 94 08:49:37 GMT", NOW_2026, -1},
    {"Sun, 06-Nov-94 08:49:37 GMT", NOW_2026, -1},
    {"Sun Nov 6 08:49:37 1994", NOW_2026, -1},
    {"Sun Nov  6 08:49:37 94", NOW_2026, -1},
    {"Sun Nov  6 08:49:37 1994 GMT", NOW_2026, -1},
    {"Sun Nov 36 08:49:37 1994", NOW_2026, -1},
    {"Sun, 06 Nov 1994 08:49:37 GMT\r\n", NOW_2026, -1},
};

static void test_fsa_time_parse_http__table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof http_cases / sizeof http_cases[0]; i++) {
        const http_case_t *c = &http_cases[i];
        int64_t got = 12345;
        fsa_status_t st = fsa_time_parse_http(c->text, c->now_ms, &got);
        if (c->ms == -1 ? st != FSA_EINVAL || got != 0 : st != FSA_OK || got != c->ms)
            fail_msg("\"%s\": status %d, %" PRId64 " ms; want %" PRId64, c->text, (int)st, got,
                     c->ms);
    }
}

/*
 * Every day from 1900 to 2200, at a time that moves with the day, in the three forms, against a
 * calendar counted one day at a time (1900-01-01 was a Monday); the RFC 850 form only where its
 * two-digit year reads back as the same year from NOW_2026 (1977 to 2076).
 */
static void test_fsa_time_parse_http__every_day_1900_to_2200(void **state)
{
    (void)state;
    static const char *const wd[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const wdl[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                      "Friday", "Saturday", "Sunday"};
    static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    int64_t day = -25567; /* 1900-01-01 */
    int weekday = 0;
    for (int y = 1900; y <= 2200; y++) {
        for (int m = 1; m <= 12; m++) {
            for (int d = 1; d <= month_days(y, m); d++, day++, weekday = (weekday + 1) % 7) {
                const int secs = (int)((day * 7919) % 86400 + 86400) % 86400;
                const int hh = secs / 3600, mi = secs / 60 % 60, ss = secs % 60;
                const int64_t want = (day * 86400 + secs) * 1000;
                char text[64];
                int64_t got = 0;
                snprintf(text, sizeof text, "%s, %02d %s %04d %02d:%02d:%02d GMT", wd[weekday], d,
                         mon[m - 1], y, hh, mi, ss);
                assert_fsa_ok(fsa_time_parse_http(text, NOW_2026, &got));
                assert_true(got == want);
                snprintf(text, sizeof text, "%s %s %2d %02d:%02d:%02d %04d", wd[weekday],
                         mon[m - 1], d, hh, mi, ss, y);
                assert_fsa_ok(fsa_time_parse_http(text, NOW_2026, &got));
                assert_true(got == want);
                if (y < 1977 || y > 2076)
                    continue;
                snprintf(text, sizeof text, "%s, %02d-%s-%02d %02d:%02d:%02d GMT", wdl[weekday], d,
                         mon[m - 1], y % 100, hh, mi, ss);
                assert_fsa_ok(fsa_time_parse_http(text, NOW_2026, &got));
                assert_true(got == want);
            }
        }
    }
    assert_int_equal(day, 84371); /* 2201-01-01 */
}

static void test_fsa_time_parse_http__invalid_params(void **state)
{
    (void)state;
    int64_t ms = 7;
    assert_int_equal(fsa_time_parse_http(NULL, NOW_2026, &ms), FSA_EINVAL);
    assert_true(ms == 0);
    assert_int_equal(fsa_time_parse_http("Sun, 06 Nov 1994 08:49:37 GMT", NOW_2026, NULL),
                     FSA_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_time_format_utc__table),
        cmocka_unit_test(test_fsa_time_format_utc__every_day_1900_to_2200),
        cmocka_unit_test(test_fsa_time_format_utc__agrees_with_gmtime),
        cmocka_unit_test(test_fsa_time_format_utc__out_of_range),
        cmocka_unit_test(test_fsa_time_format_utc__invalid_params),
        cmocka_unit_test(test_fsa_time_format_utc__small_buffer),
        cmocka_unit_test(test_fsa_time_parse_http__table),
        cmocka_unit_test(test_fsa_time_parse_http__every_day_1900_to_2200),
        cmocka_unit_test(test_fsa_time_parse_http__invalid_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
