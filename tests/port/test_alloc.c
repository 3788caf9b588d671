/* Tests for port/alloc.c: the project's allocator, its fault injection, and its hand-over to cJSON
 * and SQLite (storage/libs.c). */
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "port/alloc.h"
#include "storage/libs.h"
#include "tests/test_util.h"

static int teardown_disarm(void **state)
{
    (void)state;
    fsa_alloc_fail_nth(0);
    fsa_alloc_on_fault(NULL, NULL);
    return 0;
}

static void test_fsa_alloc_fail_nth__nth_fails_once(void **state)
{
    (void)state;
    fsa_alloc_fail_nth(3);
    assert_false(fsa_alloc_fault_fired());
    void *a = fsa_malloc(16), *b = fsa_malloc(16);
    assert_non_null(a);
    assert_non_null(b);
    assert_false(fsa_alloc_fault_fired());
    unsigned long before = fsa_alloc_failures();
    assert_null(fsa_malloc(16));
    assert_true(fsa_alloc_fault_fired());
    assert_int_equal(fsa_alloc_failures(), before + 1);
    void *d = fsa_malloc(16); /* once: the next one succeeds again */
    assert_non_null(d);
    assert_int_equal(fsa_alloc_count(), 4);
    assert_true(fsa_alloc_fault_fired()); /* stays true until re-armed */
    fsa_free(a);
    fsa_free(b);
    fsa_free(d);
    fsa_alloc_fail_nth(5);
    assert_false(fsa_alloc_fault_fired());
    assert_int_equal(fsa_alloc_count(), 0);
}

static void test_fsa_alloc_count__counts_every_kind_while_armed(void **state)
{
    (void)state;
    fsa_alloc_fail_nth(ULONG_MAX);
    void *m = fsa_malloc(8);
    void *c = fsa_calloc(2, 8);
    m = fsa_realloc(m, 64);
    char *s = fsa_strdup("abc");
    char *t = fsa_strndup("abcdef", 2);
    void *r = fsa_realloc(NULL, 4); /* growing nothing is an allocation too */
    assert_non_null(m);
    assert_non_null(c);
    assert_non_null(r);
    assert_string_equal(s, "abc");
    assert_string_equal(t, "ab");
    assert_int_equal(fsa_alloc_count(), 6);
    fsa_free(NULL); /* releases do not count */
    fsa_free(m);
    fsa_free(c);
    fsa_free(s);
    fsa_free(t);
    fsa_free(r);
    assert_int_equal(fsa_alloc_count(), 6);
    assert_false(fsa_alloc_fault_fired());
}

static void test_fsa_alloc_fail_nth__every_entry_point_fails(void **state)
{
    (void)state;
    fsa_alloc_fail_nth(1);
    assert_null(fsa_calloc(4, 4));
    assert_true(fsa_alloc_fault_fired());
    fsa_alloc_fail_nth(1);
    assert_null(fsa_strdup("hello"));
    assert_true(fsa_alloc_fault_fired());
    fsa_alloc_fail_nth(1);
    assert_null(fsa_strndup("hello", 3));
    assert_true(fsa_alloc_fault_fired());
    fsa_alloc_fail_nth(1);
    assert_null(fsa_realloc(NULL, 10));
    assert_true(fsa_alloc_fault_fired());
}

static void test_fsa_realloc__failure_leaves_the_block_intact(void **state)
{
    (void)state;
    char *p = fsa_malloc(8);
    assert_non_null(p);
    memcpy(p, "1234567", 8);
    fsa_alloc_fail_nth(1);
    char *q = fsa_realloc(p, 1 << 20);
    assert_null(q);
    assert_true(fsa_alloc_fault_fired());
    assert_string_equal(p, "1234567"); /* still ours, unchanged (ASan would see a free) */
    q = fsa_realloc(p, 1 << 20);       /* disarmed by firing: it grows now */
    assert_non_null(q);
    assert_string_equal(q, "1234567");
    fsa_free(q);
}

static void test_fsa_alloc_fail_nth__zero_disarms(void **state)
{
    (void)state;
    fsa_alloc_fail_nth(1);
    fsa_alloc_fail_nth(0);
    unsigned long before = fsa_alloc_failures();
    void *p = fsa_malloc(1);
    assert_non_null(p);
    fsa_free(p);
    assert_false(fsa_alloc_fault_fired());
    assert_int_equal(fsa_alloc_count(), 0); /* counted only while armed */
    assert_int_equal(fsa_alloc_failures(), before);
}

static void on_fault(void *arg)
{
    (*(int *)arg)++;
}

static void test_fsa_alloc_on_fault__called_once_for_the_armed_allocation(void **state)
{
    (void)state;
    int calls = 0;
    fsa_alloc_on_fault(on_fault, &calls);
    fsa_alloc_fail_nth(2);
    void *a = fsa_malloc(4);
    assert_int_equal(calls, 0);
    assert_null(fsa_malloc(4));
    assert_int_equal(calls, 1);
    void *b = fsa_malloc(4);
    assert_int_equal(calls, 1);
    fsa_free(a);
    fsa_free(b);
    fsa_alloc_on_fault(NULL, NULL);
    fsa_alloc_fail_nth(1);
    assert_null(fsa_malloc(4));
    assert_int_equal(calls, 1);
}

static void *fail_one(void *arg)
{
    (void)arg;
    fsa_alloc_fail_nth(1);
    void *p = fsa_malloc(4);
    return p == NULL ? (void *)&fail_one : p;
}

static void test_fsa_alloc_failures__counts_this_thread_only(void **state)
{
    (void)state;
    unsigned long before = fsa_alloc_failures();
    pthread_t t;
    void *res = NULL;
    assert_int_equal(pthread_create(&t, NULL, fail_one, NULL), 0);
    assert_int_equal(pthread_join(t, &res), 0);
    assert_ptr_equal(res, (void *)&fail_one); /* the other thread's allocation failed */
    assert_int_equal(fsa_alloc_failures(), before);
    assert_true(fsa_alloc_fault_fired());
}

static void test_fsa_libs_use_allocator__cjson_goes_through_the_hook(void **state)
{
    (void)state;
    static const char text[] = "{\"a\":[1,2,{\"b\":\"c\"}],\"d\":\"e\"}";
    fsa_alloc_fail_nth(ULONG_MAX);
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    unsigned long n = fsa_alloc_count();
    assert_true(n >= 6); /* one per item at least */
    char *printed = cJSON_PrintUnformatted(root);
    assert_non_null(printed);
    assert_true(fsa_alloc_count() > n);
    assert_string_equal(printed, text);
    cJSON_free(printed);
    cJSON_Delete(root);
    /* Failing each of the parse's allocations in turn fails the parse, and counts. */
    for (unsigned long i = 1; i <= n; i++) {
        unsigned long before = fsa_alloc_failures();
        fsa_alloc_fail_nth(i);
        root = cJSON_Parse(text);
        assert_true(fsa_alloc_fault_fired());
        assert_null(root);
        assert_int_equal(fsa_alloc_failures(), before + 1);
    }
}

static void test_fsa_libs_use_allocator__sqlite_goes_through_the_hook(void **state)
{
    (void)state;
    fsa_alloc_fail_nth(ULONG_MAX);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_true(fsa_alloc_count() > 0);
    assert_int_equal(
        sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES('y')", NULL, NULL, NULL),
        SQLITE_OK);
    fsa_alloc_fail_nth(1);
    void *p = sqlite3_malloc(100);
    assert_null(p);
    assert_true(fsa_alloc_fault_fired());
    /* SQLite asks the size of its blocks back: the header of libs.c keeps it. */
    fsa_alloc_fail_nth(0);
    p = sqlite3_malloc(100);
    assert_non_null(p);
    assert_true(sqlite3_msize(p) >= 100);
    p = sqlite3_realloc(p, 5000);
    assert_non_null(p);
    assert_true(sqlite3_msize(p) >= 5000);
    sqlite3_free(p);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    /* An open whose first allocation fails reports no memory. */
    fsa_alloc_fail_nth(1);
    db = NULL;
    int rc = sqlite3_open(":memory:", &db);
    assert_true(fsa_alloc_fault_fired());
    assert_int_equal(rc, SQLITE_NOMEM);
    sqlite3_close(db);
}

/* fsa_array_grow: first, then twice, up to a maximum; room is no reallocation. */
static void test_fsa_array_grow__first_then_doubling_up_to_max(void **state)
{
    (void)state;
    int *a = NULL;
    size_t cap = 0, n = 0;
    static const size_t caps[] = {3, 3, 3, 6, 6, 6, 10, 10, 10, 10};
    for (; n < 10; n++) {
        int *g = fsa_array_grow(a, &cap, n, sizeof *a, 3, 10);
        assert_non_null(g);
        if (n > 0 && n < caps[n - 1])
            assert_ptr_equal(g, a); /* there was room */
        a = g;
        assert_int_equal(cap, caps[n]);
        a[n] = (int)n; /* ASan checks the room */
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(a[i], (int)i); /* kept across reallocations */
    /* Full at max: refused, the array and cap untouched. */
    assert_null(fsa_array_grow(a, &cap, n, sizeof *a, 3, 10));
    assert_int_equal(cap, 10);
    assert_int_equal(a[9], 9);
    fsa_free(a);
}

static void test_fsa_array_grow__overflow_and_bad_arguments(void **state)
{
    (void)state;
    size_t cap = 0;
    assert_null(fsa_array_grow(NULL, NULL, 0, 4, 1, 0));
    assert_null(fsa_array_grow(NULL, &cap, 0, 0, 1, 0));
    assert_null(fsa_array_grow(NULL, &cap, 0, 4, 0, 0));
    assert_int_equal(cap, 0);
    /* Element n of an array that does not hold n elements yet: one doubling might not reach it. */
    assert_null(fsa_array_grow(NULL, &cap, 5, 4, 1, 0));
    assert_int_equal(cap, 0);
    /* An array already at the most elements size_t can count bytes of: refused, not wrapped. */
    cap = SIZE_MAX / 16;
    assert_null(fsa_array_grow(NULL, &cap, cap, 16, 1, 0));
    assert_int_equal(cap, SIZE_MAX / 16);
    /* Past half of that, the next size is the limit itself, not twice (which would wrap). Such
     * an allocation is failed by the countdown before it reaches the C library (ASan aborts on
     * a request that large instead of returning NULL); the caller's array and cap stay. */
    cap = SIZE_MAX / 16 / 2 + 1;
    fsa_alloc_fail_nth(1);
    assert_null(fsa_array_grow(NULL, &cap, cap, 16, 1, 0));
    assert_true(fsa_alloc_fault_fired());
    assert_int_equal(cap, SIZE_MAX / 16 / 2 + 1);
}

static void test_fsa_array_grow__failure_leaves_the_array_intact(void **state)
{
    (void)state;
    char *a = NULL;
    size_t cap = 0;
    a = fsa_array_grow(a, &cap, 0, 1, 8, 0);
    assert_non_null(a);
    memcpy(a, "1234567", 8);
    fsa_alloc_fail_nth(1);
    assert_null(fsa_array_grow(a, &cap, 8, 1, 8, 0));
    assert_true(fsa_alloc_fault_fired());
    assert_int_equal(cap, 8);
    assert_string_equal(a, "1234567"); /* still ours (ASan would see a free) */
    char *g = fsa_array_grow(a, &cap, 8, 1, 8, 0);
    assert_non_null(g);
    assert_int_equal(cap, 16);
    assert_string_equal(g, "1234567");
    fsa_free(g);
}

int main(void)
{
    fsa_libs_use_allocator();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_fsa_alloc_fail_nth__nth_fails_once, teardown_disarm),
        cmocka_unit_test_teardown(test_fsa_alloc_count__counts_every_kind_while_armed,
                                  teardown_disarm),
        cmocka_unit_test_teardown(test_fsa_alloc_fail_nth__every_entry_point_fails,
                                  teardown_disarm),
        cmocka_unit_test_teardown(test_fsa_realloc__failure_leaves_the_block_intact,
                                  teardown_disarm),
        cmocka_unit_test_teardown(test_fsa_alloc_fail_nth__zero_disarms, teardown_disarm),
        cmocka_unit_test_teardown(test_fsa_alloc_on_fault__called_once_for_the_armed_allocation,
                                  teardown_disarm),
        cmocka_unit_test_teardown(test_fsa_alloc_failures__counts_this_thread_only,
                                  teardown_disarm),
        cmocka_unit_test_teardown(test_fsa_libs_use_allocator__cjson_goes_through_the_hook,
                                  teardown_disarm),
        cmocka_unit_test_teardown(test_fsa_libs_use_allocator__sqlite_goes_through_the_hook,
                                  teardown_disarm),
        cmocka_unit_test(test_fsa_array_grow__first_then_doubling_up_to_max),
        cmocka_unit_test_teardown(test_fsa_array_grow__overflow_and_bad_arguments, teardown_disarm),
        cmocka_unit_test_teardown(test_fsa_array_grow__failure_leaves_the_array_intact,
                                  teardown_disarm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
