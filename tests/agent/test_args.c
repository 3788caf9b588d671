/* Tests for agent/args.c: NAME=VALUE into a JSON object, JSON string quoting, one-line errors. */
#define _XOPEN_SOURCE 700
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/args.h"
#include "port/alloc.h"
#include "port/limits.h"
#include "tests/test_util.h"

static char *obj(int n, char **args, fsa_status_t want, const char *err_has)
{
    char *out = NULL;
    char err[256] = "";
    fsa_status_t st = fsa_args_object(args, (size_t)n, &out, err, sizeof err);
    if (st != want)
        fail_msg("got %s (%s)", fsa_status_str(st), err);
    if (err_has != NULL && strstr(err, err_has) == NULL)
        fail_msg("error '%s' lacks '%s'", err, err_has);
    return out;
}

static void test_fsa_args_object__json_values_keep_their_types(void **state)
{
    (void)state;
    char *a[] = {"seqno=5",      "ok=true",         "none=null", "o={\"a\":[1,2]}",
                 "s=\"quoted\"", "name=plain text", "empty="};
    char *out = obj(7, a, FSA_OK, NULL);
    assert_string_equal(out, "{\"seqno\":5,\"ok\":true,\"none\":null,\"o\":{\"a\":[1,2]},"
                             "\"s\":\"quoted\",\"name\":\"plain text\",\"empty\":\"\"}");
    fsa_free(out);
    out = obj(0, NULL, FSA_OK, NULL);
    assert_string_equal(out, "{}");
    fsa_free(out);
}

static void test_fsa_args_object__strings_are_escaped(void **state)
{
    (void)state;
    char *a[] = {"note=say \"hi\"\\\n\tnow", "bad={unclosed"};
    char *out = obj(2, a, FSA_OK, NULL);
    assert_string_equal(out, "{\"note\":\"say \\\"hi\\\"\\\\\\n\\tnow\",\"bad\":\"{unclosed\"}");
    fsa_free(out);
}

static void test_fsa_args_object__bad_names_and_repeats(void **state)
{
    (void)state;
    char *noeq[] = {"seqno"};
    assert_null(obj(1, noeq, FSA_EINVAL, "NAME=VALUE"));
    char *upper[] = {"Seq=1"};
    assert_null(obj(1, upper, FSA_EINVAL, "NAME=VALUE"));
    char *empty[] = {"=1"};
    assert_null(obj(1, empty, FSA_EINVAL, NULL));
    char *twice[] = {"a=1", "a=2"};
    assert_null(obj(2, twice, FSA_EINVAL, "given twice"));
    char *prefix[] = {"ab=1", "a=2"}; /* a prefix of another name is not a repeat */
    char *out = obj(2, prefix, FSA_OK, NULL);
    fsa_free(out);
    char *longname[] = {"abcdefghijklmnopqrstuvwxyzabcdef=1"};
    assert_null(obj(1, longname, FSA_EINVAL, NULL));
    char *o = NULL;
    assert_int_equal(fsa_args_object(NULL, 1, &o, NULL, 0), FSA_EINVAL);
    assert_int_equal(fsa_args_object(noeq, 1, NULL, NULL, 0), FSA_EINVAL);
}

/* The object is bounded by the size of an entity's fields: 20 texts of 60,000 bytes, each
 * within a string's limit, do not fit. */
static void test_fsa_args_object__bounded(void **state)
{
    (void)state;
    enum { N = 20, LEN = 60000 };
    char *a[N];
    for (int i = 0; i < N; i++) {
        a[i] = fsa_malloc(LEN + 8);
        assert_non_null(a[i]);
        int k = snprintf(a[i], 8, "a%d=", i);
        memset(a[i] + k, 'x', LEN);
        a[i][k + LEN] = '\0';
    }
    assert_null(obj(N, a, FSA_ETOOLARGE, "too large"));
    for (int i = 0; i < N; i++)
        fsa_free(a[i]);
}

/* A value taken as text that breaks a string's limits is refused naming its field and what it
 * breaks, not as an object the library cannot read: longer than 64 KiB (also what was meant as
 * JSON), or not UTF-8. */
static void test_fsa_args_object__text_errors_name_the_field(void **state)
{
    (void)state;
    size_t big = FSA_LIMIT_STRING_BYTES + 1;
    char *text = fsa_malloc(big + 16), *json = fsa_malloc(big + 32);
    assert_non_null(text);
    assert_non_null(json);
    memcpy(text, "note=", 5);
    memset(text + 5, 'x', big);
    text[5 + big] = '\0';
    int k = snprintf(json, 32, "other_info={\"a\":\"");
    memset(json + k, 'a', big);
    memcpy(json + k + big, "\"}", 3);
    char *a[] = {text};
    assert_null(obj(1, a, FSA_EINVAL, "field 'note': text longer than 65536 bytes"));
    a[0] = json;
    assert_null(
        obj(1, a, FSA_EINVAL,
            "field 'other_info': not JSON within this device's limits, and as text longer"));
    char bad[] = "people_id=\xff\xfe";
    a[0] = bad;
    assert_null(obj(1, a, FSA_EINVAL, "field 'people_id': the value is not valid UTF-8"));
    text[5 + FSA_LIMIT_STRING_BYTES] = '\0'; /* 64 KiB: a string */
    a[0] = text;
    char *out = obj(1, a, FSA_OK, NULL);
    fsa_free(out);
    char ok[] = "name=h\xc3\xa9llo";
    a[0] = ok;
    out = obj(1, a, FSA_OK, NULL);
    assert_string_equal(out, "{\"name\":\"h\xc3\xa9llo\"}");
    fsa_free(out);
    fsa_free(text);
    fsa_free(json);
}

static void test_fsa_args_quote__control_chars_and_room(void **state)
{
    (void)state;
    char buf[32] = "";
    assert_fsa_ok(fsa_args_quote("a\x01z", buf, sizeof buf));
    assert_string_equal(buf, "\"a\\u0001z\"");
    char small[6] = "";
    assert_int_equal(fsa_args_quote("toolong", small, sizeof small), FSA_ETOOLARGE);
    assert_string_equal(small, ""); /* unchanged */
}

/* Found by tests/fuzz/fuzz_args: "" needs three bytes (two quotes and the NUL); with two left,
 * the closing NUL went one byte past the buffer. */
static void test_fsa_args_quote__empty_string_at_the_end(void **state)
{
    (void)state;
    char buf[4] = {'x', '\0', 'G', 'G'};
    assert_int_equal(fsa_args_quote("", buf, 3), FSA_ETOOLARGE);
    assert_string_equal(buf, "x");
    assert_int_equal(buf[2], 'G');
    assert_fsa_ok(fsa_args_quote("", buf, 4));
    assert_string_equal(buf, "x\"\"");
}

/* The same one byte past the object's buffer: an empty VALUE quoted where it just does not fit
 * ahead of the closing brace. VALUE of the first argument is sized to leave exactly that. */
static void test_fsa_args_object__empty_value_at_the_limit(void **state)
{
    (void)state;
    size_t cap = FSA_LIMIT_FIELDS_BYTES;
    size_t vlen = cap - 13; /* {"a":V,"b": then leaves cap - 3 bytes used */
    char *a0 = fsa_malloc(2 + vlen + 1);
    assert_non_null(a0);
    memcpy(a0, "a=[", 3); // NOLINT(bugprone-not-null-terminated-result): "1]" below ends it
    memset(a0 + 3, ' ', vlen - 3);
    memcpy(a0 + vlen, "1]", 3);
    char b0[] = "b=";
    char *a[] = {a0, b0};
    assert_null(obj(2, a, FSA_ETOOLARGE, "too large"));
    fsa_free(a0);
}

/* "a=[ ... 1]", sized so that {"a":V leaves `left` bytes of the object's buffer. */
static char *arg_leaving(size_t left)
{
    size_t vlen = FSA_LIMIT_FIELDS_BYTES - 5 - left;
    char *a = fsa_malloc(2 + vlen + 1);
    assert_non_null(a);
    memcpy(a, "a=[", 3); // NOLINT(bugprone-not-null-terminated-result): "1]" below ends it
    memset(a + 3, ' ', vlen - 3);
    memcpy(a + vlen, "1]", 3);
    return a;
}

/* Found by tests/fuzz/fuzz_args: a NAME or a JSON VALUE that did not fit left the loop before the
 * error was written, so fieldsync printed an empty error. */
static void test_fsa_args_object__too_large_always_says_why(void **state)
{
    (void)state;
    char n12[] = "n=12";
    char *a0 = arg_leaving(5); /* no room for ,"n": */
    char *a[] = {a0, n12};
    assert_null(obj(2, a, FSA_ETOOLARGE, "too large"));
    fsa_free(a0);
    a0 = arg_leaving(8); /* room for ,"n": but not for 12 and the brace */
    a[0] = a0;
    assert_null(obj(2, a, FSA_ETOOLARGE, "too large"));
    fsa_free(a0);
}

/* `ticket set` builds its op for the library's generic builder: names quoted, fields as given. */
static void test_fsa_args_op__builds_and_refuses(void **state)
{
    (void)state;
    char *op = NULL;
    assert_int_equal(fsa_args_op("set", "ticket", "T\"1", "{\"priority\":\"HIGH\"}", &op), FSA_OK);
    assert_string_equal(op, "{\"kind\":\"set\",\"type\":\"ticket\",\"id\":\"T\\\"1\","
                            "\"fields\":{\"priority\":\"HIGH\"}}");
    fsa_free(op);
    op = (char *)1;
    assert_int_equal(fsa_args_op("set", NULL, "T1", "{}", &op), FSA_EINVAL);
    assert_null(op);
    assert_int_equal(fsa_args_op("set", "ticket", "T1", NULL, &op), FSA_EINVAL);
    assert_int_equal(fsa_args_op("set", "ticket", "T1", "{}", NULL), FSA_EINVAL);
    /* a control character in a name is escaped, never copied raw */
    assert_int_equal(fsa_args_op("set", "ticket", "T\n1", "{}", &op), FSA_OK);
    assert_non_null(strstr(op, "\"T\\n1\""));
    fsa_free(op);
}

/* What fsa_cli_fail writes to stderr, in out. */
static int cli_fail_output(const char *msg, char *out, size_t cap)
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    int rc = fsa_cli_fail("prog", "bad '%s'", msg);
    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    assert_int_equal(fseek(tmp, 0, SEEK_SET), 0);
    size_t n = fread(out, 1, cap - 1, tmp);
    out[n] = '\0';
    assert_int_equal(fclose(tmp), 0);
    return rc;
}

static void test_fsa_cli_fail__one_line_without_control_characters(void **state)
{
    (void)state;
    char out[8192];
    assert_int_equal(cli_fail_output("a\nb\033[2J\r\x7f\tc", out, sizeof out), EXIT_FAILURE);
    assert_string_equal(out, "prog: bad 'a?b?[2J???c'\n");
    /* a message longer than the first buffer is neither cut nor let through raw */
    char long_msg[3001];
    memset(long_msg, 'x', 3000);
    long_msg[3000] = '\0';
    long_msg[2500] = '\n';
    assert_int_equal(cli_fail_output(long_msg, out, sizeof out), EXIT_FAILURE);
    assert_int_equal(strlen(out), strlen("prog: bad ''\n") + 3000);
    assert_int_equal(out[strlen("prog: bad '") + 2500], '?');
    assert_string_equal(strchr(out, '\n'), "\n"); /* one line */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_args_object__json_values_keep_their_types),
        cmocka_unit_test(test_fsa_args_object__strings_are_escaped),
        cmocka_unit_test(test_fsa_args_object__bad_names_and_repeats),
        cmocka_unit_test(test_fsa_args_object__bounded),
        cmocka_unit_test(test_fsa_args_object__text_errors_name_the_field),
        cmocka_unit_test(test_fsa_args_quote__control_chars_and_room),
        cmocka_unit_test(test_fsa_args_quote__empty_string_at_the_end),
        cmocka_unit_test(test_fsa_args_object__empty_value_at_the_limit),
        cmocka_unit_test(test_fsa_args_object__too_large_always_says_why),
        cmocka_unit_test(test_fsa_args_op__builds_and_refuses),
        cmocka_unit_test(test_fsa_cli_fail__one_line_without_control_characters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
