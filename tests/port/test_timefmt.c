/* Tests for port/timefmt.c: wall times as text, also after 2038 on 32-bit time_t (armhf). */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_time_format_utc__table),
        cmocka_unit_test(test_fsa_time_format_utc__every_day_1900_to_2200),
        cmocka_unit_test(test_fsa_time_format_utc__agrees_with_gmtime),
        cmocka_unit_test(test_fsa_time_format_utc__out_of_range),
        cmocka_unit_test(test_fsa_time_format_utc__invalid_params),
        cmocka_unit_test(test_fsa_time_format_utc__small_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
