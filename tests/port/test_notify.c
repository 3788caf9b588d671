/* Tests for port/posix/notify.c: an fd readable exactly while the flag is set. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <unistd.h>

#include "port/notify.h"
#include "tests/test_util.h"

/* What a main loop sees: poll(2) with timeout 0 on the fd. */
static bool readable(const fsa_notify_t *n)
{
    struct pollfd p = {fsa_notify_fd(n), POLLIN, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

static void test_fsa_notify__invalid_arguments(void **state)
{
    (void)state;
    assert_int_equal(fsa_notify_open(NULL), FSA_EINVAL);
    assert_int_equal(fsa_notify_set(NULL), FSA_EINVAL);
    assert_int_equal(fsa_notify_clear(NULL), FSA_EINVAL);
    assert_int_equal(fsa_notify_fd(NULL), -1);
    assert_false(fsa_notify_is_set(NULL));
    fsa_notify_close(NULL);
}

static void test_fsa_notify__opens_clear(void **state)
{
    (void)state;
    fsa_notify_t *n = NULL;
    assert_fsa_ok(fsa_notify_open(&n));
    assert_non_null(n);
    assert_true(fsa_notify_fd(n) >= 0);
    assert_false(readable(n));
    assert_false(fsa_notify_is_set(n));
    fsa_notify_close(n);
}

static void test_fsa_notify__set_makes_readable_until_cleared(void **state)
{
    (void)state;
    fsa_notify_t *n = NULL;
    assert_fsa_ok(fsa_notify_open(&n));
    assert_fsa_ok(fsa_notify_set(n));
    assert_true(readable(n));
    assert_true(fsa_notify_is_set(n));
    assert_true(readable(n)); /* looking does not clear it */
    assert_fsa_ok(fsa_notify_clear(n));
    assert_false(readable(n));
    assert_false(fsa_notify_is_set(n));
    fsa_notify_close(n);
}

static void test_fsa_notify__many_sets_one_clear(void **state)
{
    (void)state;
    fsa_notify_t *n = NULL;
    assert_fsa_ok(fsa_notify_open(&n));
    for (int i = 0; i < 1000; i++)
        assert_fsa_ok(fsa_notify_set(n));
    assert_true(readable(n));
    assert_fsa_ok(fsa_notify_clear(n)); /* a flag, not a counter */
    assert_false(readable(n));
    assert_fsa_ok(fsa_notify_clear(n)); /* clearing a clear flag is fine */
    assert_false(readable(n));
    assert_fsa_ok(fsa_notify_set(n));
    assert_true(readable(n));
    fsa_notify_close(n);
}

static void test_fsa_notify__fd_is_close_on_exec_and_nonblocking(void **state)
{
    (void)state;
    fsa_notify_t *n = NULL;
    assert_fsa_ok(fsa_notify_open(&n));
    int fd = fsa_notify_fd(n);
    /* Not inherited by a child the app executes; never blocks the app's loop. */
    assert_true((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    assert_true((fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
    unsigned char buf[8];
    errno = 0;
    assert_true(read(fd, buf, sizeof buf) < 0); /* clear: EAGAIN at once */
    assert_int_equal(errno, EAGAIN);
    fsa_notify_close(n);
}

static void test_fsa_notify__independent_notifiers(void **state)
{
    (void)state;
    fsa_notify_t *a = NULL, *b = NULL;
    assert_fsa_ok(fsa_notify_open(&a));
    assert_fsa_ok(fsa_notify_open(&b));
    assert_int_not_equal(fsa_notify_fd(a), fsa_notify_fd(b));
    assert_fsa_ok(fsa_notify_set(a));
    assert_true(readable(a));
    assert_false(readable(b));
    fsa_notify_close(a);
    fsa_notify_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_notify__invalid_arguments),
        cmocka_unit_test(test_fsa_notify__opens_clear),
        cmocka_unit_test(test_fsa_notify__set_makes_readable_until_cleared),
        cmocka_unit_test(test_fsa_notify__many_sets_one_clear),
        cmocka_unit_test(test_fsa_notify__fd_is_close_on_exec_and_nonblocking),
        cmocka_unit_test(test_fsa_notify__independent_notifiers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
