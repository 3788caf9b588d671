/* fieldsync tests: the CMocka prelude and small helpers shared by test programs. */
#ifndef FSA_TESTS_TEST_UTIL_H
#define FSA_TESTS_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "port/port.h"

/* Asserts that a call returned FSA_OK, printing the status name if not. */
#define assert_fsa_ok(expr)                                                                        \
    do {                                                                                           \
        fsa_status_t st_ = (expr);                                                                 \
        if (st_ != FSA_OK)                                                                         \
            fail_msg("%s returned %d (%s)", #expr, (int)st_, fsa_status_str(st_));                 \
    } while (0)

/* Real elapsed nanoseconds of the posix monotonic clock since t0. */
static inline int64_t test_real_elapsed_ns(fsa_mono_t t0)
{
    return fsa_mono_diff_ns(fsa_port_posix()->mono_now(NULL), t0);
}

#endif
