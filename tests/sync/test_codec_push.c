/* fieldsync tests: sync/codec.c's push decoder without a tree, against the cJSON tree decoder it
 * replaced (fsa__codec_decode_push_tree): the same status, error and ops, byte for byte, for
 * bodies built to reach cJSON's leniencies (numbers, whitespace, escapes, NULs, duplicate keys)
 * and for random mutations of them. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port/alloc.h"
#include "storage/libs.h"
#include "sync/codec.h"
#include "tests/sync/codec_push_diff.h"
#include "tests/test_util.h"

/* Fails the test naming the body (escaped) and what differs. */
static void expect_same(const char *body, size_t len)
{
    size_t op = 0;
    const char *why = codec_push_diff(body, len, &op);
    if (why == NULL)
        return;
    fprintf(stderr, "the decoders differ in %s (op %zu) on: ", why, op);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)body[i];
        if (c < 0x20 || c >= 0x7f)
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fputc('\n', stderr);
    fail();
}

static void expect_same_str(const char *body)
{
    expect_same(body, strlen(body));
}

/* Payloads that cJSON reads leniently or prints differently from their text. */
static const char *const payloads[] = {
    "{}",
    "{\"a\":1}",
    "{ \"a\":1}",
    "{\"a\": 1}",
    "{\"a\":1 }",
    "{\"a\" :1}",
    "{\"a\":1.5}",
    "{\"a\":01}",
    "{\"a\":1.}",
    "{\"a\":-0}",
    "{\"a\":-0.0}",
    "{\"a\":1e400}",
    "{\"a\":-1e400}",
    "{\"a\":1E5}",
    "{\"a\":1e5}",
    "{\"a\":1e+5}",
    "{\"a\":100000000000000000000}",
    "{\"a\":9007199254740993}",
    "{\"a\":123456789012345}",
    "{\"a\":1234567890123456}",
    "{\"a\":0.30000000000000004}",
    "{\"a\":0.1}",
    "{\"a\":-.5}",
    "{\"a\":2147483648}",
    "{\"a\":-2147483649}",
    "{\"a\":1.0}",
    "{\"a\":1e-320}",
    "{\"a\":5e-324}",
    "{\"a\":1.5e300}",
    "{\"a\":0.000001}",
    "{\"a\":1e-7}",
    "{\"a\":123456789012345678901234567890123456789012345678901234567890123}",
    "{\"a\":\"\\u00e9\"}",
    "{\"a\":\"\xc3\xa9\"}",
    "{\"a\":\"\\/\"}",
    "{\"a\":\"\\u0001\"}",
    "{\"a\":\"\\u001F\"}",
    "{\"a\":\"\\u001f\"}",
    "{\"a\":\"\\u0000x\"}",
    "{\"a\":\"\\uZZZZ\"}",
    "{\"a\":\"\\ud83d\\ude00\"}",
    "{\"a\":\"\\ud83d\"}",
    "{\"a\":\"\\ude00\"}",
    "{\"a\":\"\\b\\f\\n\\r\\t\\\"\\\\\"}",
    "{\"a\":\"\\u0008\"}",
    "{\"a\":\"\\u000a\"}",
    "{\"a\":\"x\x01y\"}",
    "{\"a\":\"\x7f\"}",
    "{\"a\":\"\xff\xfe\"}",
    "{\"a\":true,\"b\":false,\"c\":null}",
    "{\"a\":[1,2,{\"b\":[]}]}",
    "{\"a\":[ ]}",
    "{\"a\":{}}",
    "{\"a\\\"b\":1}",
    "{\"a\":1,\"a\":2}",
    "{\"a\":\"\\u12\"}",
    "{\"a\":\"\\uabc\\\\\"}",
    "{\"a\":\"\\uabc\\\"\"}",
    "{\"a\":\"\\x\"}",
    "{\"\\u0061\":1}",
    "{\"a\":[1,]}",
    "{\"a\":nul}",
    "{\"a\":truex}",
    "[1,2]",
    "\"text\"",
    "12",
    "-",
    "1.5",
    "null",
    "{\"a\":1}x",
    "{\"a\":\"\\",
    "{\"a\":\"\\u00e9\\u0000\"}",
    "{\"status\":\"NEW\",\"level\":3,\"site_id\":\"s1\"}",
    /* longer than the 63 chars cJSON 1.7.15 read before the fix of CVE-2023-26819 */
    "{\"a\":1333333333333333333333333333333333333333333333333333333333333333333333333333333}",
    "{\"a\":0000000000000000000000000000000000000000000000000000000000000000000000000000001}",
    "{\"a\":0.000000000000000000000000000000000000000000000000000000000000000000000000001e5}",
    "{\"a\":-}",
    "{\"a\":--1}",
    "{\"a\":1-2}",
    "{\"a\":1e}",
    "{\"a\":0x10}",
    "{\"a\":+1}",
};

static void test_decode_push__payloads_as_the_tree_decoder(void **state)
{
    (void)state;
    static const char *const shapes[] = {
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"create\","
        "\"type\":\"ticket\",\"id\":\"T1\",\"fields\":%s}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"set\","
        "\"type\":\"ticket\",\"id\":\"T1\",\"base_version\":3,\"fields\":%s}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"merge\","
        "\"type\":\"jobneed\",\"id\":\"J1\",\"field\":\"other_info\",\"patch\":%s}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"append\","
        "\"type\":\"ticket\",\"id\":\"T1\",\"field\":\"ticketlog\",\"key\":\"h\",\"item\":%s,"
        "\"max_len\":3}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":%s,\"at\":2,\"kind\":\"increment\","
        "\"type\":\"ticket\",\"id\":\"T1\",\"field\":\"level\",\"by\":1}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"increment\","
        "\"type\":\"ticket\",\"id\":\"T1\",\"field\":\"level\",\"by\":%s}]}",
        "{\"batch_id\":%s,\"ops\":[]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":%s,\"seq\":1,\"at\":2,\"kind\":\"increment\","
        "\"type\":\"ticket\",\"id\":\"T1\",\"field\":\"level\",\"by\":1}]}",
    };
    char body[1024];
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
            /* shapes[s] with its "%s" replaced by the payload */
            const char *hole = strstr(shapes[s], "%s");
            assert_non_null(hole);
            int n = snprintf(body, sizeof body, "%.*s%s%s", (int)(hole - shapes[s]), shapes[s],
                             payloads[i], hole + 2);
            assert_true(n > 0 && (size_t)n < sizeof body);
            expect_same(body, (size_t)n);
        }
    }
}

static void test_decode_push__envelopes_as_the_tree_decoder(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "",
        " ",
        "{}",
        "[]",
        "{\"batch_id\":\"b\"}",
        "{\"ops\":[]}",
        "{\"batch_id\":\"b\",\"ops\":[]}",
        "{\"batch_id\":\"b\",\"ops\":[]} \t\r\n",
        "{\"batch_id\":\"b\",\"ops\":[]}\x01",
        "\xef\xbb\xbf{\"batch_id\":\"b\",\"ops\":[]}",
        "\xef\xbb\xbf{}",
        "\xef\xbb\xbf",
        "\x01{\"batch_id\":\"b\",\"ops\":[]}",
        "{\"batch_id\":\"b\",\"ops\":{}}",
        "{\"batch_id\":1,\"ops\":[]}",
        "{\"batch_id\":\"b\",\"ops\":[],\"ops\":[1]}",
        "{\"batch_id\":\"b\",\"ops\":[1],\"ops\":[]}",
        "{\"batch_id\":\"b\",\"batch_id\":1,\"ops\":[]}",
        "{\"batch\\u005fid\":\"b\",\"op\\u0073\":[]}",
        "{\"batch_id\\u0000x\":\"b\",\"ops\":[]}",
        "{\"batch_id\":\"b\\u0000c\",\"ops\":[]}",
        "{\"batch_id\":\"b\",\"ops\":[1,2]}",
        "{\"batch_id\":\"b\",\"ops\":[{}]}",
        "{\"batch_id\":\"b\",\"ops\":[[]]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o 1\",\"seq\":1,\"at\":2}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1.5,\"at\":2}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"increment\","
        "\"type\":\"ticket\",\"id\":\"T\",\"field\":5,\"by\":1},{\"op_id\":\"o2\",\"seq\":2,"
        "\"at\":2,\"kind\":\"increment\",\"type\":\"ticket\",\"id\":\"T\",\"by\":1},{\"op_id\":"
        "\"o3\",\"seq\":3,\"at\":2,\"kind\":\"increment\",\"type\":\"ticket\",\"id\":\"T\","
        "\"field\":\"a_field_name_that_is_far_too_long_to_exist\",\"by\":1}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":1,"
        "\"type\":\"ticket\",\"id\":\"T\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"bogus\","
        "\"type\":\"ticket\",\"id\":\"T\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":"
        "\"increment\\u0000"
        "x\",\"type\":\"tick\\u0065t\",\"id\":\"T\\u0000!\",\"field\":\"level\",\"by\":-3}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"increment\","
        "\"type\":\"bogus\",\"id\":\"T\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"increment\","
        "\"type\":\"ticket\",\"id\":\"T!\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"increment\","
        "\"type\":\"ticket\",\"id\":\"T\",\"group\":null,\"field\":\"level\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"increment\","
        "\"type\":\"ticket\",\"id\":\"T\",\"group\":5,\"field\":\"level\",\"by\":1}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"transition\","
        "\"type\":\"ticket\",\"id\":\"T\",\"field\":\"status\",\"from\":\"NEW\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"transition\","
        "\"type\":\"ticket\",\"id\":\"T\",\"field\":\"status\",\"from\":\"NEW\",\"to\":\"OPEN\","
        "\"to\":1}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"append\","
        "\"type\":\"ticket\",\"id\":\"T\",\"field\":\"ticketlog\",\"key\":\"h\",\"max_len\":-1,"
        "\"item\":1}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"append\","
        "\"type\":\"ticket\",\"id\":\"T\",\"field\":\"ticketlog\",\"key\":\"h\",\"max_len\":null}]"
        "}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"set\","
        "\"type\":\"ticket\",\"id\":\"T\",\"base_version\":\"1\",\"fields\":{}}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"set\","
        "\"type\":\"ticket\",\"id\":\"T\",\"base_version\":1,\"fields\":[]}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"create\","
        "\"type\":\"ticket\",\"id\":\"T\",\"fields\":{\"a\":1},\"fields\":5}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"create\","
        "\"type\":\"ticket\",\"id\":\"T\"}, "
        "{\"op_id\":\"o2\",\"seq\":1e0,\"at\":-0,\"kind\":\"create\","
        "\"type\":\"ticket\",\"id\":\"T2\",\"fields\" : { \"a\" : 1 } } ]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":9007199254740992,\"at\":"
        "9007199254740993,\"kind\":\"create\",\"type\":\"ticket\",\"id\":\"T\"}]}",
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"create\","
        "\"type\":\"ticket\",\"id\":\"T\"},5]}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        expect_same_str(bodies[i]);
    /* every short escape in the envelope's strings */
    expect_same_str("{\"batch_id\":\"b\\n\\t\\\"\\\\\\/\\b\\f\\r\",\"ops\":[{\"op_id\":\"o\\n1\","
                    "\"seq\":1,\"at\":2,\"kind\":\"incr\\u0065ment\",\"type\":\"ticket\","
                    "\"id\":\"T\\/1\",\"field\":\"lev\\u0065l\",\"by\":1}]}");
    expect_same_str("{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,"
                    "\"kind\":\"transition\",\"type\":\"ticket\",\"id\":\"T1\",\"field\":"
                    "\"status\",\"from\":\"N\\tEW\",\"to\":\"OPEN\\/\"}]}");
    expect_same_str("{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,"
                    "\"kind\":\"append\",\"type\":\"ticket\",\"id\":\"T1\",\"field\":"
                    "\"ticketlog\",\"key\":\"k\\\"\\\\\\b\",\"item\":1}]}");
    /* NUL bytes: cJSON reads them as whitespace between tokens and keeps them in strings. */
    static const char nul1[] = "{\"batch_id\":\"b\",\x00\"ops\":[]}";
    expect_same(nul1, sizeof nul1 - 1);
    static const char nul2[] = "{\"batch_id\":\"b\x00x\",\"ops\":[]}";
    expect_same(nul2, sizeof nul2 - 1);
    static const char nul3[] = "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,"
                               "\"kind\":\"create\",\"type\":\"ticket\",\"id\":\"T\",\"fields\":{"
                               "\"a\":\"x\x00y\"}}]}";
    expect_same(nul3, sizeof nul3 - 1);
    static const char nul4[] = "{\"batch_id\":\"b\",\"ops\":[]}\x00";
    expect_same(nul4, sizeof nul4 - 1);
}

/* A string just within and just over the limit, as a key and as a value, and the op count. */
static void test_decode_push__limits_as_the_tree_decoder(void **state)
{
    (void)state;
    size_t cap = FSA_LIMIT_STRING_BYTES + 256;
    char *b = fsa_malloc(cap);
    assert_non_null(b);
    for (size_t extra = 0; extra < 2; extra++) {
        for (size_t as_key = 0; as_key < 2; as_key++) {
            size_t n = (size_t)snprintf(b, cap, "{\"batch_id\":\"b\",\"ops\":[],\"x\":%s\"",
                                        as_key ? "{" : "");
            memset(b + n, 'a', FSA_LIMIT_STRING_BYTES + extra);
            n += FSA_LIMIT_STRING_BYTES + extra;
            n += (size_t)snprintf(b + n, cap - n, "\"%s}", as_key ? ":1}" : "");
            expect_same(b, n);
            /* escapes count once decoded; \u0000 ends the string for cJSON's strlen */
            memcpy(b + n - 12, "\\u0000", 6); // NOLINT(bugprone-not-null-terminated-result)
            expect_same(b, n);
        }
    }
    fsa_free(b);
    size_t ops = FSA_LIMIT_BATCH_OPS + 1;
    cap = 64 + ops * 4;
    b = fsa_malloc(cap);
    assert_non_null(b);
    for (size_t count = FSA_LIMIT_BATCH_OPS - 1; count <= ops; count++) {
        size_t n = (size_t)snprintf(b, cap, "{\"batch_id\":\"b\",\"ops\":[");
        for (size_t i = 0; i < count; i++)
            n += (size_t)snprintf(b + n, cap - n, "%s{}", i > 0 ? "," : "");
        n += (size_t)snprintf(b + n, cap - n, "]}");
        expect_same(b, n);
    }
    fsa_free(b);
}

/* The nesting and value bounds, met and passed, alone and after a syntax error or the value. */
static void test_decode_push__bounds_as_the_tree_decoder(void **state)
{
    (void)state;
    size_t cap = 4 * FSA_LIMIT_JSON_VALUES + 1024;
    char *b = fsa_malloc(cap);
    assert_non_null(b);
    const size_t envelope = FSA_CODEC_PUSH_ENVELOPE_DEPTH;
    for (size_t deep = FSA_LIMIT_JSON_DEPTH - 1; deep <= FSA_LIMIT_JSON_DEPTH + 2; deep++) {
        for (int variant = 0; variant < 4; variant++) {
            size_t n = (size_t)snprintf(
                b, cap, "%s{\"batch_id\":\"b\",\"ops\":[{\"x\":", variant == 1 ? "x" : "");
            for (size_t i = 0; i + envelope < deep + envelope - 0 && i < deep; i++)
                b[n++] = '[';
            for (size_t i = 0; i < deep; i++)
                b[n++] = variant == 2 && i == 0 ? '}' : ']';
            n += (size_t)snprintf(b + n, cap - n, "}]}%s", variant == 3 ? "[[[[" : "");
            expect_same(b, n);
        }
    }
    for (size_t values = FSA_LIMIT_JSON_VALUES - 12; values <= FSA_LIMIT_JSON_VALUES - 4;
         values++) {
        for (int variant = 0; variant < 3; variant++) {
            size_t n = (size_t)snprintf(b, cap, "{\"batch_id\":\"b\",%s\"ops\":[{\"x\":[0",
                                        variant == 1 ? "x" : "");
            for (size_t i = 0; i < values; i++)
                n += (size_t)snprintf(b + n, cap - n, ",0");
            n += (size_t)snprintf(b + n, cap - n, "]}]}%s", variant == 2 ? "[[[[" : "");
            expect_same(b, n);
        }
    }
    /* Empty containers are one value each ("[]", "{}", with or without what cJSON skips inside:
     * the one-pass decoder counted every bracket, the tree decoder's scan does not any more). */
    static const char *const empties[] = {"[]", "{}", "[ ]", "{\x0b}"};
    for (size_t e = 0; e < sizeof empties / sizeof empties[0]; e++) {
        for (size_t values = FSA_LIMIT_JSON_VALUES - 10; values <= FSA_LIMIT_JSON_VALUES - 6;
             values++) {
            size_t n =
                (size_t)snprintf(b, cap, "{\"batch_id\":\"b\",\"ops\":[{\"x\":[%s", empties[e]);
            for (size_t i = 0; i < values; i++)
                n += (size_t)snprintf(b + n, cap - n, ",%s", empties[e]);
            n += (size_t)snprintf(b + n, cap - n, "]}]}");
            expect_same(b, n);
        }
    }
    fsa_free(b);
}

static uint64_t rng_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* Random mutations of a body with every kind: bytes replaced, inserted and deleted, drawn from
 * the characters JSON and cJSON care about. */
static void test_decode_push__mutations_as_the_tree_decoder(void **state)
{
    (void)state;
    static const char seed[] =
        "{\"batch_id\":\"b-1\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":1764090000123,"
        "\"kind\":\"create\",\"type\":\"ticket\",\"id\":\"T1\",\"fields\":{\"priority\":\"HIGH\","
        "\"level\":0}},{\"op_id\":\"o2\",\"seq\":2,\"at\":2,\"kind\":\"set\",\"type\":\"ticket\","
        "\"id\":\"T1\",\"base_version\":1,\"group\":\"g\",\"fields\":{\"assignedto\":\"p\\\"1\","
        "\"x\":[1.5,-2,true,null]}},{\"op_id\":\"o3\",\"seq\":3,\"at\":3,\"kind\":\"merge\","
        "\"type\":\"jobneed\",\"id\":\"J1\",\"field\":\"other_info\",\"patch\":{\"a\":{\"b\":null}}"
        "},{\"op_id\":\"o4\",\"seq\":4,\"at\":4,\"kind\":\"increment\",\"type\":\"ticket\","
        "\"id\":\"T1\",\"field\":\"level\",\"by\":-3},{\"op_id\":\"o5\",\"seq\":5,\"at\":5,"
        "\"kind\":\"transition\",\"type\":\"ticket\",\"id\":\"T1\",\"field\":\"status\","
        "\"from\":\"NEW\",\"to\":\"OPEN\"},{\"op_id\":\"o6\",\"seq\":6,\"at\":6,\"kind\":"
        "\"append\","
        "\"type\":\"ticket\",\"id\":\"T1\",\"field\":\"ticketlog\",\"key\":\"h\",\"max_len\":50,"
        "\"item\":{\"t\":\"\\u00e9\\n\"}}]}";
    static const char alphabet[] = "\"\\{}[]:,0123456789eE.+- \t\n\r\x01\x7f\x80\xc3ufbnrt/"
                                   "aTnull";
    const size_t len = sizeof seed - 1;
    char buf[sizeof seed + 64];
    uint64_t rng = 20261204;
    unsigned long rounds = 30000;
    const char *env = getenv("FSA_TEST_SCALE");
    if (env != NULL && strtod(env, NULL) > 0 && strtod(env, NULL) < 1)
        rounds = (unsigned long)((double)rounds * strtod(env, NULL));
    for (unsigned long r = 0; r < rounds; r++) {
        memcpy(buf, seed, len);
        size_t n = len;
        unsigned edits = 1 + (unsigned)(rng_next(&rng) % 4);
        for (unsigned k = 0; k < edits; k++) {
            size_t at = rng_next(&rng) % n;
            char c = alphabet[rng_next(&rng) % (sizeof alphabet - 1)];
            if (rng_next(&rng) % 8 == 0)
                c = (char)(unsigned char)(rng_next(&rng) & 0xff); /* any byte */
            switch (rng_next(&rng) % 3) {
            case 0: buf[at] = c; break;
            case 1:
                if (n + 1 < sizeof buf) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = c;
                    n++;
                }
                break;
            default:
                if (n > 1) {
                    memmove(buf + at, buf + at + 1, n - at - 1);
                    n--;
                }
                break;
            }
        }
        expect_same(buf, n);
        expect_same(buf, rng_next(&rng) % (n + 1)); /* and a prefix */
    }
}

/* Out of memory: FSA_ENOMEM with an empty push, or the full answer; never a malformed verdict.
 * The bodies take the copy path and cJSON's print path. */
static void test_decode_push__out_of_memory(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"batch_id\":\"b\",\"ops\":[{\"op_id\":\"o1\",\"seq\":1,\"at\":2,\"kind\":\"create\","
        "\"type\":\"ticket\",\"id\":\"T1\",\"fields\":{\"a\":1}},{\"op_id\":\"o2\",\"seq\":1,"
        "\"at\":2,\"kind\":\"create\",\"type\":\"ticket\",\"id\":\"T2\",\"fields\":{ "
        "\"a\":1.50}}]}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        bool done = false;
        for (unsigned long nth = 1; !done && nth < 100; nth++) {
            fsa_codec_push_t p;
            fsa_model_err_t err;
            fsa_alloc_fail_nth(nth);
            fsa_status_t st = fsa_codec_decode_push(bodies[i], strlen(bodies[i]), &p, &err);
            bool fired = fsa_alloc_fault_fired();
            fsa_alloc_fail_nth(0);
            if (fired) {
                assert_int_equal(st, FSA_ENOMEM);
                assert_string_equal(err.code, "internal");
                assert_int_equal(p.count, 0);
                assert_null(p.ops);
            } else {
                assert_fsa_ok(st);
                assert_int_equal(p.count, 2);
                assert_string_equal(p.ops[1].op.json, "{\"a\":1.5}");
                done = true;
            }
            fsa_codec_push_free(&p);
        }
        assert_true(done);
    }
}

int main(void)
{
    fsa_libs_use_allocator();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_push__payloads_as_the_tree_decoder),
        cmocka_unit_test(test_decode_push__envelopes_as_the_tree_decoder),
        cmocka_unit_test(test_decode_push__limits_as_the_tree_decoder),
        cmocka_unit_test(test_decode_push__bounds_as_the_tree_decoder),
        cmocka_unit_test(test_decode_push__mutations_as_the_tree_decoder),
        cmocka_unit_test(test_decode_push__out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
