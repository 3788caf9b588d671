/* fieldsync: wall times as text with 64-bit civil-from-days arithmetic (no time_t; see timefmt.h).
 */
#include "port/timefmt.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>

#define MS_PER_DAY INT64_C(86400000)
/* 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: four-digit years, and no overflow below. */
#define MS_MIN INT64_C(-62167219200000)
#define MS_MAX INT64_C(253402300799999)

/* a / b rounded towards negative infinity (b > 0), so that times before 1970 fall on their day. */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/*
 * The proleptic Gregorian date of a day number (days since 1970-01-01), after Howard Hinnant's
 * civil_from_days: eras of 400 years (146097 days) start on 0000-03-01, so that the leap day
 * falls at the end of each computed year.
 */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468; /* days from 0000-03-01 to 1970-01-01 */
    const int64_t era = floor_div(z, 146097);
    const int64_t doe = z - era * 146097;                                      /* [0, 146096] */
    const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    const int64_t mp = (5 * doy + 2) / 153; /* [0, 11], March first */
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

fsa_status_t fsa_time_format_utc(int64_t ms, fsa_time_style_t style, char *buf, size_t cap)
{
    if (buf == NULL)
        return FSA_EINVAL;
    if (cap > 0)
        buf[0] = '\0';
    if ((style != FSA_TIME_HUMAN && style != FSA_TIME_ISO) || ms < MS_MIN || ms > MS_MAX)
        return FSA_EINVAL;
    const int64_t days = floor_div(ms, MS_PER_DAY);
    const int64_t sec = (ms - days * MS_PER_DAY) / 1000; /* [0, 86399] */
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    assert(y >= 0 && y <= 9999);
    const unsigned hh = (unsigned)(sec / 3600), mm = (unsigned)(sec / 60 % 60),
                   ss = (unsigned)(sec % 60);
    int n;
    if (style == FSA_TIME_HUMAN)
        n = snprintf(buf, cap, "%04" PRId64 "-%02u-%02u %02u:%02u:%02u UTC", y, m, d, hh, mm, ss);
    else
        n = snprintf(buf, cap, "%04" PRId64 "-%02u-%02uT%02u:%02u:%02uZ", y, m, d, hh, mm, ss);
    if (n < 0 || (size_t)n >= cap) {
        if (cap > 0)
            buf[0] = '\0';
        return FSA_ETOOLARGE;
    }
    return FSA_OK;
}
