/* Tests for port/buf.c: the growable buffer's growth, its bound, and a failed allocation. */
#include <stdint.h>
#include <string.h>

#include "port/alloc.h"
#include "port/buf.h"
#include "tests/test_util.h"

static void test_fsa_buf_append__grows_by_doubling_and_terminates(void **state)
{
    (void)state;
    fsa_buf_t b = {0};
    assert_fsa_ok(fsa_buf_append(&b, "", 0, 4, 100)); /* nothing: no allocation */
    assert_null(b.p);
    assert_fsa_ok(fsa_buf_append(&b, "abc", 3, 4, 100));
    assert_int_equal(b.cap, 4);
    assert_string_equal(b.p, "abc");
    assert_fsa_ok(fsa_buf_append(&b, "defgh", 5, 4, 100));
    assert_int_equal(b.cap, 16); /* 4 -> 8 -> 16 for 9 bytes */
    assert_int_equal(b.len, 8);
    assert_string_equal(b.p, "abcdefgh");
    fsa_free(b.p);
    /* A reserved buffer is a terminated empty string before anything is appended. */
    fsa_buf_t r = {0};
    assert_fsa_ok(fsa_buf_reserve(&r, 8));
    assert_int_equal(r.cap, 8);
    assert_string_equal(r.p, "");
    assert_fsa_ok(fsa_buf_append(&r, "", 0, 4, 100));
    assert_string_equal(r.p, "");
    fsa_free(r.p);
}

/* max bytes of data fit, with their NUL, in max + 1 bytes; one more is refused and the buffer
 * is left as it was. */
static void test_fsa_buf_append__bound(void **state)
{
    (void)state;
    char data[40];
    memset(data, 'x', sizeof data);
    fsa_buf_t b = {0};
    assert_fsa_ok(fsa_buf_append(&b, data, 20, 16, 30));
    assert_int_equal(b.cap, 31); /* 16 -> 32, clamped to max + 1 */
    assert_int_equal(fsa_buf_append(&b, data, 11, 16, 30), FSA_ETOOLARGE);
    assert_int_equal(b.len, 20);
    assert_int_equal(b.p[20], '\0');
    assert_fsa_ok(fsa_buf_append(&b, data, 10, 16, 30));
    assert_int_equal(b.len, 30);
    assert_int_equal(b.cap, 31);
    assert_int_equal(b.p[30], '\0');
    assert_int_equal(fsa_buf_append(&b, data, 1, 16, 30), FSA_ETOOLARGE);
    assert_int_equal(fsa_buf_grown_cap(&b, 1, 16, 30), 0);
    assert_int_equal(fsa_buf_grown_cap(&b, 0, 16, 30), 31);
    /* Sizes near SIZE_MAX do not wrap. */
    assert_int_equal(fsa_buf_grown_cap(&b, SIZE_MAX, 16, SIZE_MAX - 1), 0);
    assert_int_equal(fsa_buf_grown_cap(&b, SIZE_MAX - 5, 16, SIZE_MAX - 1), 0);
    assert_int_equal(fsa_buf_append(&b, data, 1, 16, SIZE_MAX), FSA_ETOOLARGE);
    fsa_free(b.p);
}

static void test_fsa_buf_append__invalid(void **state)
{
    (void)state;
    fsa_buf_t b = {0};
    assert_int_equal(fsa_buf_append(NULL, "a", 1, 4, 10), FSA_EINVAL);
    assert_int_equal(fsa_buf_append(&b, NULL, 1, 4, 10), FSA_EINVAL);
    assert_int_equal(fsa_buf_append(&b, "a", 1, 0, 10), FSA_EINVAL);
    assert_int_equal(fsa_buf_reserve(NULL, 4), FSA_EINVAL);
    assert_null(b.p);
}

/* A failed growth (the tests are built with FSA_FAULT_HOOKS) appends nothing and keeps what was
 * there; the next append succeeds. */
static void test_fsa_buf_append__allocation_failure(void **state)
{
    (void)state;
    fsa_buf_t b = {0};
    fsa_alloc_fail_nth(1);
    assert_int_equal(fsa_buf_append(&b, "abc", 3, 4, 100), FSA_ENOMEM);
    assert_true(fsa_alloc_fault_fired());
    assert_null(b.p);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_fsa_ok(fsa_buf_append(&b, "abc", 3, 4, 100));
    fsa_alloc_fail_nth(1);
    assert_int_equal(fsa_buf_append(&b, "defgh", 5, 4, 100), FSA_ENOMEM);
    fsa_alloc_fail_nth(0);
    assert_int_equal(b.len, 3);
    assert_int_equal(b.cap, 4);
    assert_string_equal(b.p, "abc");
    assert_int_equal(fsa_buf_reserve(&b, 2), FSA_OK); /* never shrinks */
    assert_int_equal(b.cap, 4);
    fsa_free(b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_buf_append__grows_by_doubling_and_terminates),
        cmocka_unit_test(test_fsa_buf_append__bound),
        cmocka_unit_test(test_fsa_buf_append__invalid),
        cmocka_unit_test(test_fsa_buf_append__allocation_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
