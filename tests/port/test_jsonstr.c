/* Tests for port/jsonstr.c: the one JSON string escaper. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "port/jsonstr.h"
#include "tests/test_util.h"

static void test_fsa_json_quote__table(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } t[] = {
        {"", "\"\""},
        {"abc", "\"abc\""},
        {"a\"b", "\"a\\\"b\""},
        {"a\\b", "\"a\\\\b\""},
        {"\n\r\t\b\f", "\"\\n\\r\\t\\b\\f\""},
        {"\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\""},
        {"/", "\"/\""},
        {"caf\xc3\xa9 \xe2\x82\xac", "\"caf\xc3\xa9 \xe2\x82\xac\""}, /* UTF-8 as is */
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char out[64];
        size_t n = fsa_json_quote(t[i].in, out, sizeof out);
        assert_string_equal(out, t[i].want);
        assert_int_equal(n, strlen(t[i].want));
        assert_true(n <= FSA_JSON_QUOTE_MAX(strlen(t[i].in)));
    }
    char out[8];
    assert_int_equal(fsa_json_quote(NULL, out, sizeof out), 2);
    assert_string_equal(out, "\"\"");
}

static void test_fsa_json_quote__snprintf_contract(void **state)
{
    (void)state;
    /* The length is returned whatever the room; the text is cut and terminated. */
    assert_int_equal(fsa_json_quote("a\nb", NULL, 0), 6);
    char out[4];
    memset(out, 'x', sizeof out);
    assert_int_equal(fsa_json_quote("a\nb", out, sizeof out), 6);
    assert_int_equal(out[3], '\0');
    assert_memory_equal(out, "\"a\\", 3);
    char one[1] = {'x'};
    assert_int_equal(fsa_json_quote("abc", one, 1), 5);
    assert_int_equal(one[0], '\0');
    /* Exactly enough: length + 1. */
    char fit[6];
    assert_int_equal(fsa_json_quote("abc", fit, sizeof fit), 5);
    assert_string_equal(fit, "\"abc\"");
}

/* A seeded xorshift32: the same strings on every run. */
static int next(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return (int)(*x >> 1);
}

/* Every string of bytes 1..255 reads back through cJSON (an independent JSON parser) as
 * itself, and the literal holds no raw control character. */
static void test_fsa_json_quote__cjson_reads_back_random_strings(void **state)
{
    (void)state;
    uint32_t seed = 15;
    for (int round = 0; round < 2000; round++) {
        char in[48];
        size_t len = (size_t)(next(&seed) % (int)(sizeof in - 1));
        for (size_t i = 0; i < len; i++) {
            int r = next(&seed) % 5;
            /* Control characters, JSON's specials, ASCII, and UTF-8 of 'é'. */
            if (r == 0)
                in[i] = (char)(1 + next(&seed) % 0x20);
            else if (r == 1)
                in[i] = "\"\\/\x7f"[next(&seed) % 4];
            else if (r == 2 && i + 1 < len) {
                in[i++] = '\xc3';
                in[i] = '\xa9';
            } else
                in[i] = (char)(0x20 + next(&seed) % 0x5f);
        }
        in[len] = '\0';
        char out[FSA_JSON_QUOTE_MAX(sizeof in)];
        size_t n = fsa_json_quote(in, out, sizeof out);
        assert_int_equal(n, strlen(out));
        for (size_t i = 0; i < n; i++)
            assert_true((unsigned char)out[i] >= 0x20 && out[i] != 0x7f);
        cJSON *j = cJSON_Parse(out);
        if (j == NULL || !cJSON_IsString(j))
            fail_msg("cJSON cannot read %s", out);
        assert_string_equal(j->valuestring, in);
        cJSON_Delete(j);
    }
}

/* fsa_digits_u64: the digits end at end, no NUL written, from 0 to the largest uint64_t. */
static void test_fsa_digits_u64__ends_at_end(void **state)
{
    (void)state;
    static const struct {
        uint64_t m;
        const char *want;
    } rows[] = {{0, "0"},
                {7, "7"},
                {10, "10"},
                {1234567890, "1234567890"},
                {UINT64_MAX, "18446744073709551615"}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char buf[24];
        memset(buf, '#', sizeof buf);
        char *end = buf + 22;
        char *p = fsa_digits_u64(end, rows[i].m);
        size_t n = (size_t)(end - p);
        assert_int_equal(n, strlen(rows[i].want));
        assert_memory_equal(p, rows[i].want, n);
        assert_int_equal(buf[22], '#'); /* nothing at or after end */
        if (p > buf)
            assert_int_equal(p[-1], '#'); /* nothing before the digits */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_digits_u64__ends_at_end),
        cmocka_unit_test(test_fsa_json_quote__table),
        cmocka_unit_test(test_fsa_json_quote__snprintf_contract),
        cmocka_unit_test(test_fsa_json_quote__cjson_reads_back_random_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
