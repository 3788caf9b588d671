/* fieldsync: wall times as text and HTTP dates read, on 64-bit civil-day arithmetic (no time_t;
 * see timefmt.h). */
#include "port/timefmt.h"

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

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

/* The day number (days since 1970-01-01) of a proleptic Gregorian date: civil_from_days
 * inverted (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = floor_div(y, 400);
    const int64_t yoe = y - era * 400;                                            /* [0, 399] */
    const int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + (int64_t)d - 1; /* [0, 365] */
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;                    /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned char days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* Arrays of characters, not of pointers: a pointer costs the device binary its relocation too. */
static const char day_names[7][4] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char day_names_long[7][10] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                           "Friday", "Saturday", "Sunday"};
static const char month_names[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Consumes the literal s at *p. */
static bool take(const char **p, const char *s)
{
    size_t n = strlen(s);
    if (strncmp(*p, s, n) != 0)
        return false;
    *p += n;
    return true;
}

/* Consumes one of names (count of them, each in a slot of width bytes) at *p: its index, or -1. */
static int take_name(const char **p, const char *names, size_t width, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (take(p, names + i * width))
            return (int)i;
    return -1;
}
#define TAKE_NAME(p, names)                                                                        \
    take_name((p), (names)[0], sizeof(names)[0], sizeof(names) / sizeof(names)[0])

/* Consumes exactly n digits at *p. */
static bool take_digits(const char **p, int n, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < n; i++) {
        const char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (unsigned)(c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* time-of-day = hour ":" minute ":" second, as seconds into the day. */
static bool take_time_of_day(const char **p, unsigned *secs)
{
    unsigned hh, mm, ss;
    if (!take_digits(p, 2, &hh) || !take(p, ":") || !take_digits(p, 2, &mm) || !take(p, ":") ||
        !take_digits(p, 2, &ss))
        return false;
    if (hh > 23 || mm > 59 || ss > 60)
        return false;
    *secs = hh * 3600 + mm * 60 + ss;
    return true;
}

static bool take_month(const char **p, unsigned *m)
{
    const int i = TAKE_NAME(p, month_names);
    *m = (unsigned)(i + 1);
    return i >= 0;
}

static void skip_ows(const char **p)
{
    while (**p == ' ' || **p == '\t')
        (*p)++;
}

/* The civil year of an RFC 850 two-digit year yy, seen at now_ms (RFC 9110 section 5.6.7). */
static int64_t rfc850_year(unsigned yy, int64_t now_ms)
{
    int64_t now_y = 1970;
    unsigned m, d;
    if (now_ms >= MS_MIN && now_ms <= MS_MAX)
        civil_from_days(floor_div(now_ms, MS_PER_DAY), &now_y, &m, &d);
    int64_t y = now_y - now_y % 100 + (int64_t)yy;
    return y - now_y > 50 ? y - 100 : y;
}

fsa_status_t fsa_time_parse_http(const char *text, int64_t now_ms, int64_t *ms)
{
    if (ms != NULL)
        *ms = 0;
    if (text == NULL || ms == NULL)
        return FSA_EINVAL;
    const char *p = text;
    skip_ows(&p);
    unsigned d = 0, m = 0, yy = 0, secs = 0;
    int64_t y;
    if (TAKE_NAME(&p, day_names_long) >= 0) {
        /* rfc850-date = day-name-l "," SP day "-" month "-" 2DIGIT SP time-of-day SP "GMT" */
        if (!take(&p, ", ") || !take_digits(&p, 2, &d) || !take(&p, "-") || !take_month(&p, &m) ||
            !take(&p, "-") || !take_digits(&p, 2, &yy) || !take(&p, " ") ||
            !take_time_of_day(&p, &secs) || !take(&p, " GMT"))
            return FSA_EINVAL;
        y = rfc850_year(yy, now_ms);
    } else if (TAKE_NAME(&p, day_names) >= 0) {
        if (take(&p, ", ")) {
            /* IMF-fixdate = day-name "," SP day SP month SP 4DIGIT SP time-of-day SP "GMT" */
            if (!take_digits(&p, 2, &d) || !take(&p, " ") || !take_month(&p, &m) ||
                !take(&p, " ") || !take_digits(&p, 4, &yy) || !take(&p, " ") ||
                !take_time_of_day(&p, &secs) || !take(&p, " GMT"))
                return FSA_EINVAL;
        } else {
            /* asctime-date = day-name SP month SP ( 2DIGIT / ( SP DIGIT ) ) SP time-of-day SP
             * 4DIGIT */
            if (!take(&p, " ") || !take_month(&p, &m) || !take(&p, " ") ||
                !(take(&p, " ") ? take_digits(&p, 1, &d) : take_digits(&p, 2, &d)) ||
                !take(&p, " ") || !take_time_of_day(&p, &secs) || !take(&p, " ") ||
                !take_digits(&p, 4, &yy))
                return FSA_EINVAL;
        }
        y = yy;
    } else {
        return FSA_EINVAL;
    }
    skip_ows(&p);
    if (*p != '\0' || d < 1 || d > days_in_month(y, m))
        return FSA_EINVAL;
    *ms = (days_from_civil(y, m, d) * 86400 + secs) * 1000;
    return FSA_OK;
}
