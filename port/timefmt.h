/* fieldsync: wall times shown to people and in logs, and HTTP dates read, as 64-bit milliseconds.
 */
#ifndef FSA_PORT_TIMEFMT_H
#define FSA_PORT_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

#include "port/status.h"

/*
 * The one conversion of a wall time (milliseconds since the Unix epoch, UTC, as fsa_wall_t
 * carries it) into text. It does its own civil-from-days arithmetic on 64-bit integers and never
 * goes through time_t, which is 32 bits in armhf's libraries (our own code asks for 64:
 * CMakeLists.txt) and would wrap in January 2038 there; gmtime_r and strftime are not used for
 * this anywhere else.
 */

/* The two shapes in use. */
typedef enum fsa_time_style {
    FSA_TIME_HUMAN = 0, /* "2026-11-25 21:05:03 UTC": the CLI's status lines */
    FSA_TIME_ISO = 1    /* "2026-11-25T21:05:03Z": the daemon's log lines (RFC 3339) */
} fsa_time_style_t;

/* Room for either shape, with the terminating NUL. */
#define FSA_TIME_TEXT_MAX 24

/*
 * Writes ms (truncated to the second, towards the past: -1 ms is 1969-12-31 23:59:59) in the
 * given style into buf, NUL-terminated. Years 0000 to 9999 are shown; others are refused.
 * Returns FSA_OK; FSA_EINVAL for a NULL buf, an unknown style or a year out of range;
 * FSA_ETOOLARGE when cap is too small (FSA_TIME_TEXT_MAX always suffices). On every failure
 * buf (when not NULL and cap > 0) holds "".
 */
FSA_MUST_CHECK fsa_status_t fsa_time_format_utc(int64_t ms, fsa_time_style_t style, char *buf,
                                                size_t cap);

/*
 * The one conversion of an HTTP-date (RFC 9110 section 5.6.7: Date, Retry-After) into
 * milliseconds since the Unix epoch, on the same 64-bit arithmetic (curl_getdate returns a time_t,
 * which is 32 bits in Debian's armhf libcurl). It accepts the three forms a recipient must accept,
 * case-sensitive as the RFC says, with optional white space (SP, HTAB) around the value:
 *   IMF-fixdate  "Sun, 06 Nov 1994 08:49:37 GMT"
 *   RFC 850      "Sunday, 06-Nov-94 08:49:37 GMT" (obsolete)
 *   asctime      "Sun Nov  6 08:49:37 1994" (obsolete; the day may also be "06")
 * The day name must be a valid one but is not checked against the date (it is redundant, and
 * RFC 9110 gives a recipient nothing to do with a wrong one); the date must exist (no Feb 30);
 * hours 00-23, minutes 00-59, seconds 00-60 (a leap second counts as the next second's start).
 * An RFC 850 two-digit year is read as RFC 9110 says: in now_ms's century, or the one before when
 * that year is more than 50 years after now_ms's year.
 * Returns FSA_OK with *ms set; FSA_EINVAL for NULL arguments or text that is none of the forms
 * (*ms, when not NULL, is 0 then).
 */
FSA_MUST_CHECK fsa_status_t fsa_time_parse_http(const char *text, int64_t now_ms, int64_t *ms);

#endif
