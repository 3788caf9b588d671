/* fieldsync tests: sync/gzip.c, the wire's gzip (round trips, the inflate bound, bad input, a
 * member's proof of its bytes). */
#include <stdlib.h>
#include <string.h>

#include "port/alloc.h"
#include "sync/gzip.h"
#include "tests/test_util.h"

/* Text that compresses (repeats) with some that does not (a little noise). */
static char *sample(size_t n)
{
    char *s = fsa_malloc(n + 1);
    assert_non_null(s);
    static const char letters[] = "abcdefghijklmnopqrstuvwxyz";
    static const char pattern[] = "{\"level\":1,";
    unsigned x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        if (i % 7 == 0)
            s[i] = letters[(x >> 16) % 26];
        else
            s[i] = pattern[i % 11];
    }
    s[n] = '\0';
    return s;
}

/* Each size round trips at both levels the wire uses; the header's XFL byte (offset 8, RFC 1952)
 * says which level zlib compressed at: 4 "fastest" for level 1, 0 for the default. */
static void test_gzip__round_trips(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 100, 65536, 1000 * 1000};
    static const struct {
        int level;
        unsigned char xfl;
    } levels[] = {{FSA_GZIP_LEVEL_FAST, 4}, {FSA_GZIP_LEVEL_DEFAULT, 0}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0] * 2; k++) {
        const size_t size = sizes[k / 2];
        const int level = levels[k % 2].level;
        char *text = sample(size);
        unsigned char *gz = NULL;
        size_t gz_len = 0;
        assert_int_equal(fsa_gzip_compress(text, size, level, &gz, &gz_len), FSA_OK);
        assert_true(gz_len >= 18); /* a gzip header and trailer at least */
        assert_int_equal(gz[0], 0x1f);
        assert_int_equal(gz[1], 0x8b);
        assert_int_equal(gz[8], levels[k % 2].xfl);
        if (size >= 65536)
            assert_true(gz_len < size / 2);
        char *back = NULL;
        size_t back_len = 0;
        assert_int_equal(fsa_gzip_inflate(gz, gz_len, size, &back, &back_len), FSA_OK);
        assert_int_equal(back_len, size);
        assert_memory_equal(back, text, size);
        assert_int_equal(back[back_len], '\0');
        fsa_free(back);
        /* One byte under the size is over the bound: refused, nothing returned. */
        if (size > 0) {
            back = (char *)1;
            assert_int_equal(fsa_gzip_inflate(gz, gz_len, size - 1, &back, &back_len),
                             FSA_ETOOLARGE);
            assert_null(back);
            assert_int_equal(back_len, 0);
        }
        fsa_free(gz);
        fsa_free(text);
    }
}

/* A bomb: 16 MiB of zeros in ~16 KB of gzip, inflated against a 1 MiB bound. */
static void test_gzip__bomb_stops_at_the_bound(void **state)
{
    (void)state;
    const size_t n = 16u * 1024 * 1024;
    char *zeros = fsa_calloc(1, n);
    assert_non_null(zeros);
    unsigned char *gz = NULL;
    size_t gz_len = 0;
    assert_int_equal(fsa_gzip_compress(zeros, n, FSA_GZIP_LEVEL_DEFAULT, &gz, &gz_len), FSA_OK);
    fsa_free(zeros);
    assert_true(gz_len < 128 * 1024);
    char *out = NULL;
    size_t out_len = 0;
    assert_int_equal(fsa_gzip_inflate(gz, gz_len, 1024 * 1024, &out, &out_len), FSA_ETOOLARGE);
    assert_null(out);
    fsa_free(gz);
}

static void test_gzip__bad_input(void **state)
{
    (void)state;
    char *text = sample(5000);
    unsigned char *gz = NULL;
    size_t gz_len = 0;
    assert_int_equal(fsa_gzip_compress(text, 5000, FSA_GZIP_LEVEL_DEFAULT, &gz, &gz_len), FSA_OK);
    char *out = NULL;
    size_t out_len = 0;
    /* Truncated, trailing bytes, a flipped byte in the data, not gzip at all, empty. */
    assert_int_equal(fsa_gzip_inflate(gz, gz_len - 5, 10000, &out, &out_len), FSA_EINVAL);
    unsigned char *longer = fsa_malloc(gz_len + 3);
    assert_non_null(longer);
    memcpy(longer, gz, gz_len);
    static const unsigned char junk[3] = {0x78, 0x79, 0x7a};
    memcpy(longer + gz_len, junk, sizeof junk);
    assert_int_equal(fsa_gzip_inflate(longer, gz_len + 3, 10000, &out, &out_len), FSA_EINVAL);
    fsa_free(longer);
    gz[gz_len / 2] ^= 0x55;
    assert_int_equal(fsa_gzip_inflate(gz, gz_len, 10000, &out, &out_len), FSA_EINVAL);
    assert_int_equal(fsa_gzip_inflate("{\"a\":1}", 7, 10000, &out, &out_len), FSA_EINVAL);
    assert_int_equal(fsa_gzip_inflate("", 0, 10000, &out, &out_len), FSA_EINVAL);
    assert_null(out);
    fsa_free(gz);
    fsa_free(text);
}

/* Level 1 searches less than the default for repeats: on 1 MB of the sample both inflate to the
 * same text, and level 1's bytes are more. */
static void test_gzip__fast_level_makes_more_bytes(void **state)
{
    (void)state;
    const size_t n = 1000 * 1000;
    char *text = sample(n);
    unsigned char *fast = NULL, *dflt = NULL;
    size_t fast_len = 0, dflt_len = 0;
    assert_int_equal(fsa_gzip_compress(text, n, FSA_GZIP_LEVEL_FAST, &fast, &fast_len), FSA_OK);
    assert_int_equal(fsa_gzip_compress(text, n, FSA_GZIP_LEVEL_DEFAULT, &dflt, &dflt_len), FSA_OK);
    assert_true(fast_len > dflt_len);
    char *back = NULL;
    size_t back_len = 0;
    assert_int_equal(fsa_gzip_inflate(fast, fast_len, n, &back, &back_len), FSA_OK);
    assert_int_equal(back_len, n);
    assert_memory_equal(back, text, n);
    fsa_free(back);
    fsa_free(fast);
    fsa_free(dflt);
    fsa_free(text);
}

/* A level zlib does not have, or 0 (stored: larger than the input), is refused with nothing
 * allocated. */
static void test_gzip__bad_level(void **state)
{
    (void)state;
    static const int bad[] = {-1, 0, 10, 100};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        unsigned char *gz = (unsigned char *)1;
        size_t gz_len = 1;
        assert_int_equal(fsa_gzip_compress("{\"a\":1}", 7, bad[k], &gz, &gz_len), FSA_EINVAL);
        assert_null(gz);
        assert_int_equal(gz_len, 0);
    }
}

/* A member is of the bytes it was made from, at either level and for an empty input; the bytes
 * with any one changed (first, middle, last) or one fewer (at either end), no bytes, no member, or
 * a gz too short for a trailer are not. */
static void test_gzip__member_of_its_bytes_only(void **state)
{
    (void)state;
    const size_t n = 40 * 1000;
    char *text = sample(n);
    const int levels[] = {FSA_GZIP_LEVEL_FAST, FSA_GZIP_LEVEL_DEFAULT};
    for (size_t k = 0; k < 2; k++) {
        unsigned char *gz = NULL;
        size_t gz_len = 0;
        assert_int_equal(fsa_gzip_compress(text, n, levels[k], &gz, &gz_len), FSA_OK);
        assert_true(fsa_gzip_member_of(gz, gz_len, text, n));
        const size_t at[] = {0, n / 3, n - 1};
        for (size_t i = 0; i < 3; i++) {
            text[at[i]] ^= 0x20;
            assert_false(fsa_gzip_member_of(gz, gz_len, text, n));
            text[at[i]] ^= 0x20;
        }
        assert_false(fsa_gzip_member_of(gz, gz_len, text, n - 1));
        assert_false(fsa_gzip_member_of(gz, gz_len, text + 1, n - 1));
        assert_false(fsa_gzip_member_of(gz, 17, text, n));
        assert_false(fsa_gzip_member_of(NULL, gz_len, text, n));
        assert_false(fsa_gzip_member_of(gz, gz_len, NULL, n));
        fsa_free(gz);
    }
    unsigned char *empty = NULL;
    size_t empty_len = 0;
    assert_int_equal(fsa_gzip_compress("", 0, FSA_GZIP_LEVEL_FAST, &empty, &empty_len), FSA_OK);
    assert_true(fsa_gzip_member_of(empty, empty_len, "", 0));
    assert_true(fsa_gzip_member_of(empty, empty_len, NULL, 0));
    assert_false(fsa_gzip_member_of(empty, empty_len, text, 1));
    fsa_free(empty);
    fsa_free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gzip__round_trips),
        cmocka_unit_test(test_gzip__bomb_stops_at_the_bound),
        cmocka_unit_test(test_gzip__bad_input),
        cmocka_unit_test(test_gzip__fast_level_makes_more_bytes),
        cmocka_unit_test(test_gzip__bad_level),
        cmocka_unit_test(test_gzip__member_of_its_bytes_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
