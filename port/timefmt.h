/* fieldsync: wall times shown to people and in logs, from the project's 64-bit milliseconds. */
#ifndef FSA_PORT_TIMEFMT_H
#define FSA_PORT_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

#include "port/status.h"

/*
 * The one conversion of a wall time (milliseconds since the Unix epoch, UTC, as fsa_wall_t
 * carries it) into text. It does its own civil-from-days arithmetic on 64-bit integers and never
 * goes through time_t, which is 32 bits on armhf and would wrap in January 2038 there; gmtime_r
 * and strftime are not used for this anywhere else.
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

#endif
