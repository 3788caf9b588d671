/* Tests for port/opts.c: the command-line option parser of the programs. */
#include <stdio.h>
#include <string.h>

#include "port/opts.h"
#include "tests/test_util.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static fsa_status_t parse(char **args, int argc, fsa_opt_t *o, size_t no, char **pos, int maxpos,
                          unsigned flags, fsa_opts_result_t *res, char *err)
{
    return fsa_opts_parse(argc, args, o, no, pos, maxpos, flags, res, err, 128);
}

static void test_fsa_opts_parse__values_flags_and_positionals(void **state)
{
    (void)state;
    char *args[] = {"J1", "--to", "done", "a=1", "--json", "-5", "--"};
    fsa_opt_t o[] = {
        {"to", true, false, NULL}, {"json", false, false, NULL}, {"all", false, false, NULL}};
    char *pos[4] = {NULL};
    fsa_opts_result_t r;
    char err[128];
    assert_fsa_ok(parse(args, (int)N(args), o, N(o), pos, 4, 0, &r, err));
    assert_false(r.help);
    assert_int_equal(r.used, (int)N(args));
    assert_string_equal(fsa_opts_get(o, N(o), "to"), "done");
    assert_string_equal(fsa_opts_get(o, N(o), "json"), "");
    assert_null(fsa_opts_get(o, N(o), "all"));
    assert_null(fsa_opts_get(o, N(o), "nope"));
    /* "-5" and "--" are not options: positionals, in order. */
    assert_int_equal(r.npos, 4);
    assert_string_equal(pos[0], "J1");
    assert_string_equal(pos[1], "a=1");
    assert_string_equal(pos[2], "-5");
    assert_string_equal(pos[3], "--");
    assert_string_equal(err, "");
}

static void test_fsa_opts_parse__a_value_may_look_like_an_option(void **state)
{
    (void)state;
    char *args[] = {"--note", "--json"};
    fsa_opt_t o[] = {{"note", true, false, NULL}, {"json", false, false, NULL}};
    fsa_opts_result_t r;
    char err[128];
    assert_fsa_ok(parse(args, 2, o, N(o), NULL, 0, 0, &r, err));
    assert_string_equal(o[0].value, "--json");
    assert_null(o[1].value);
}

static void test_fsa_opts_parse__errors_name_the_argument(void **state)
{
    (void)state;
    fsa_opt_t o[] = {{"to", true, false, NULL}, {"json", false, false, NULL}};
    char *pos[1];
    fsa_opts_result_t r;
    char err[128];
    char *unknown[] = {"--nope"};
    assert_int_equal(parse(unknown, 1, o, N(o), pos, 1, 0, &r, err), FSA_EINVAL);
    assert_string_equal(err, "unknown option '--nope'");
    char *twice[] = {"--json", "--json"};
    assert_int_equal(parse(twice, 2, o, N(o), pos, 1, 0, &r, err), FSA_EINVAL);
    assert_string_equal(err, "option '--json' given twice");
    char *novalue[] = {"x", "--to"};
    assert_int_equal(parse(novalue, 2, o, N(o), pos, 1, 0, &r, err), FSA_EINVAL);
    assert_string_equal(err, "option '--to' needs a value");
    char *extra[] = {"a", "b"};
    assert_int_equal(parse(extra, 2, o, N(o), pos, 1, 0, &r, err), FSA_EINVAL);
    assert_string_equal(err, "unexpected argument 'b'");
    assert_int_equal(parse(extra, 2, o, N(o), NULL, 0, 0, &r, err), FSA_EINVAL);
    assert_string_equal(err, "unexpected argument 'a'");
}

static void test_fsa_opts_parse__repeat_keeps_the_last(void **state)
{
    (void)state;
    char *args[] = {"--db", "a", "--db", "b"};
    fsa_opt_t o[] = {{"db", true, true, NULL}};
    fsa_opts_result_t r;
    char err[128];
    assert_fsa_ok(parse(args, 4, o, 1, NULL, 0, 0, &r, err));
    assert_string_equal(o[0].value, "b");
}

static void test_fsa_opts_parse__help_anywhere_stops(void **state)
{
    (void)state;
    fsa_opt_t o[] = {{"to", true, false, NULL}};
    fsa_opts_result_t r;
    char err[128];
    char *args[] = {"--to", "x", "-h", "--nope"};
    assert_fsa_ok(parse(args, 4, o, 1, NULL, 0, 0, &r, err));
    assert_true(r.help);
    assert_int_equal(r.used, 2);
    char *args2[] = {"--help"};
    assert_fsa_ok(parse(args2, 1, o, 1, NULL, 0, 0, &r, err));
    assert_true(r.help);
    /* A value is a value, even "--help". */
    char *args3[] = {"--to", "--help"};
    assert_fsa_ok(parse(args3, 2, o, 1, NULL, 0, 0, &r, err));
    assert_false(r.help);
    assert_string_equal(o[0].value, "--help");
}

static void test_fsa_opts_parse__before_command(void **state)
{
    (void)state;
    fsa_opt_t o[] = {{"db", true, true, NULL}, {"version", false, false, NULL}};
    fsa_opts_result_t r;
    char err[128];
    char *args[] = {"--db", "j.db", "job", "--to", "x"};
    assert_fsa_ok(parse(args, 5, o, N(o), NULL, 0, FSA_OPTS_BEFORE_COMMAND, &r, err));
    assert_int_equal(r.used, 2);
    assert_int_equal(r.npos, 0);
    assert_string_equal(o[0].value, "j.db");
    char *none[] = {"--version"};
    assert_fsa_ok(parse(none, 1, o, N(o), NULL, 0, FSA_OPTS_BEFORE_COMMAND, &r, err));
    assert_int_equal(r.used, 1); /* no command */
    assert_string_equal(o[1].value, "");
    /* Before the command, every '-' argument is an option. */
    char *dash[] = {"-x", "job"};
    assert_int_equal(parse(dash, 2, o, N(o), NULL, 0, FSA_OPTS_BEFORE_COMMAND, &r, err),
                     FSA_EINVAL);
    assert_string_equal(err, "unknown option '-x'");
    char *dd[] = {"--", "job"};
    assert_int_equal(parse(dd, 2, o, N(o), NULL, 0, FSA_OPTS_BEFORE_COMMAND, &r, err), FSA_EINVAL);
    assert_string_equal(err, "unknown option '--'");
}

static void test_fsa_opts_parse__values_reset_and_invalid_calls(void **state)
{
    (void)state;
    fsa_opt_t o[] = {{"json", false, false, "stale"}};
    fsa_opts_result_t r;
    char err[128];
    assert_fsa_ok(parse(NULL, 0, o, 1, NULL, 0, 0, &r, err));
    assert_null(o[0].value);
    assert_int_equal(r.used, 0);
    assert_int_equal(parse(NULL, 0, o, 1, NULL, 0, 0, NULL, err), FSA_EINVAL);
    assert_string_equal(err, "invalid arguments");
    assert_int_equal(parse(NULL, 1, o, 1, NULL, 0, 0, &r, err), FSA_EINVAL);
    assert_int_equal(parse(NULL, 0, NULL, 1, NULL, 0, 0, &r, err), FSA_EINVAL);
    assert_int_equal(parse(NULL, 0, o, 1, NULL, 2, 0, &r, err), FSA_EINVAL);
    /* No room for the message: still an error, nothing written past it. */
    char *args[] = {"--nope"};
    assert_int_equal(fsa_opts_parse(1, args, o, 1, NULL, 0, 0, &r, NULL, 0), FSA_EINVAL);
    char small[8];
    assert_int_equal(fsa_opts_parse(1, args, o, 1, NULL, 0, 0, &r, small, sizeof small),
                     FSA_EINVAL);
    assert_string_equal(small, "unknown");
}

static void test_fsa_opts_parse__nonempty_refuses_empty_values(void **state)
{
    (void)state;
    fsa_opt_t o[] = {{"db", true, false, NULL}, {"json", false, false, NULL}};
    fsa_opts_result_t r;
    char err[128];
    char *args[] = {"--json", "--db", ""};
    /* Without the rule an empty value is a value. */
    assert_fsa_ok(parse(args, 3, o, N(o), NULL, 0, 0, &r, err));
    assert_string_equal(o[0].value, "");
    assert_int_equal(parse(args, 3, o, N(o), NULL, 0, FSA_OPTS_NONEMPTY, &r, err), FSA_EINVAL);
    assert_string_equal(err, "option '--db' needs a non-empty value");
    /* A flag has no value to be empty; a positional is not a value. */
    char *ok[] = {"--json", "--db", "x", ""};
    char *pos[1] = {NULL};
    assert_fsa_ok(parse(ok, 4, o, N(o), pos, 1, FSA_OPTS_NONEMPTY, &r, err));
    assert_string_equal(o[0].value, "x");
    assert_string_equal(o[1].value, "");
    assert_int_equal(r.npos, 1);
    assert_string_equal(pos[0], "");
}

static void test_fsa_opts_values__collects_in_order(void **state)
{
    (void)state;
    char *args[] = {"--server", "http://a", "--json", "--note", "--server", "--server", "http://c"};
    fsa_opt_t o[] = {
        {"server", true, true, NULL}, {"json", false, false, NULL}, {"note", true, false, NULL}};
    fsa_opts_result_t r;
    char err[128];
    assert_fsa_ok(parse(args, (int)N(args), o, N(o), NULL, 0, 0, &r, err));
    assert_string_equal(o[0].value, "http://c"); /* the last stands */
    assert_string_equal(o[2].value, "--server"); /* a value, not an option */
    const char *v[4] = {NULL};
    size_t n = 99;
    assert_fsa_ok(fsa_opts_values((int)N(args), args, o, N(o), 0, "server", v, 4, &n, err, 128));
    assert_int_equal(n, 2);
    assert_string_equal(v[0], "http://a");
    assert_string_equal(v[1], "http://c");
    /* Not given: none. */
    assert_fsa_ok(fsa_opts_values(2, args + 2, o, N(o), 0, "server", v, 4, &n, err, 128));
    assert_int_equal(n, 0);
    /* More than there is room for: an error naming the option and the bound. */
    assert_int_equal(fsa_opts_values((int)N(args), args, o, N(o), 0, "server", v, 1, &n, err, 128),
                     FSA_EINVAL);
    assert_string_equal(err, "option '--server' given more than 1 times");
    /* A flag or an unknown name has no values. */
    assert_int_equal(fsa_opts_values((int)N(args), args, o, N(o), 0, "json", v, 4, &n, err, 128),
                     FSA_EINVAL);
    assert_string_equal(err, "no option '--json' with a value");
    assert_int_equal(fsa_opts_values((int)N(args), args, o, N(o), 0, "nope", v, 4, &n, err, 128),
                     FSA_EINVAL);
    assert_int_equal(fsa_opts_values(1, args, o, N(o), 0, "server", v, 4, NULL, err, 128),
                     FSA_EINVAL);
    assert_string_equal(err, "invalid arguments");
    assert_int_equal(fsa_opts_values(1, args, o, N(o), 0, "server", NULL, 4, &n, err, 128),
                     FSA_EINVAL);
}

static void test_fsa_opts_values__stops_where_parse_stops(void **state)
{
    (void)state;
    fsa_opt_t o[] = {{"db", true, true, NULL}};
    const char *v[4] = {NULL};
    size_t n = 0;
    char err[128];
    /* Help ends the options. */
    char *help[] = {"--db", "a", "-h", "--db", "b"};
    assert_fsa_ok(fsa_opts_values(5, help, o, 1, 0, "db", v, 4, &n, err, 128));
    assert_int_equal(n, 1);
    assert_string_equal(v[0], "a");
    /* So does the command, with FSA_OPTS_BEFORE_COMMAND; positionals are stepped over without. */
    char *cmd[] = {"--db", "a", "job", "--db", "b"};
    assert_fsa_ok(fsa_opts_values(5, cmd, o, 1, FSA_OPTS_BEFORE_COMMAND, "db", v, 4, &n, err, 128));
    assert_int_equal(n, 1);
    assert_fsa_ok(fsa_opts_values(5, cmd, o, 1, 0, "db", v, 4, &n, err, 128));
    assert_int_equal(n, 2);
    assert_string_equal(v[1], "b");
}

static void test_fsa_opts_int__range_and_syntax(void **state)
{
    (void)state;
    long long v = 7;
    char err[128];
    assert_fsa_ok(fsa_opts_int("devices", "12", 1, 100, &v, err, sizeof err));
    assert_int_equal(v, 12);
    assert_string_equal(err, "");
    assert_fsa_ok(fsa_opts_int("n", "-5", -5, 5, &v, err, sizeof err));
    assert_int_equal(v, -5);
    static const char *const bad[] = {
        "0",   "101", "12x", "",    " ",   "1.5", "99999999999999999999",
        " 12", "+12", "0x1", "-12", "12 ", "1e1"};
    for (size_t i = 0; i < N(bad); i++) {
        v = 7;
        assert_int_equal(fsa_opts_int("devices", bad[i], 1, 100, &v, err, sizeof err), FSA_EINVAL);
        assert_int_equal(v, 7); /* untouched */
        char want[128];
        snprintf(want, sizeof want,
                 "option '--devices' needs a whole number from 1 to 100, not '%s'", bad[i]);
        assert_string_equal(err, want);
    }
    assert_int_equal(fsa_opts_int(NULL, "1", 0, 1, &v, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_opts_int("x", NULL, 0, 1, &v, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_opts_int("x", "1", 0, 1, NULL, err, sizeof err), FSA_EINVAL);
}

static void test_fsa_opts_real__range_syntax_and_noun(void **state)
{
    (void)state;
    double v = 7.0;
    char err[128];
    assert_fsa_ok(fsa_opts_real("fault-5xx", "0.25", 0.0, 1.0, "rate", &v, err, sizeof err));
    assert_true(v == 0.25);
    assert_fsa_ok(fsa_opts_real("fault-5xx", "1", 0.0, 1.0, "rate", &v, err, sizeof err));
    assert_true(v == 1.0);
    static const char *const bad[] = {"2",    "-0.1", "nan",   "x",   "",   "0.5x", "1e999",
                                      " 0.5", "+0.5", "0x0.8", "inf", "-0", "."};
    for (size_t i = 0; i < N(bad); i++) {
        v = 7.0;
        assert_int_equal(fsa_opts_real("fault-5xx", bad[i], 0.0, 1.0, "rate", &v, err, sizeof err),
                         FSA_EINVAL);
        assert_true(v == 7.0);
        char want[128];
        snprintf(want, sizeof want, "option '--fault-5xx' needs a rate from 0 to 1, not '%s'",
                 bad[i]);
        assert_string_equal(err, want);
    }
    /* the plain forms: a fraction, an exponent, a minus where negatives are in range */
    assert_fsa_ok(fsa_opts_real("lat", "-45.5", -90.0, 90.0, NULL, &v, err, sizeof err));
    assert_true(v == -45.5);
    assert_fsa_ok(fsa_opts_real("d", ".5e-1", 0.0, 1.0, NULL, &v, err, sizeof err));
    assert_true(v == 0.05);
    assert_fsa_ok(fsa_opts_real("d", "1E+0", 0.0, 1.0, NULL, &v, err, sizeof err));
    assert_true(v == 1.0);
    assert_int_equal(fsa_opts_real("days", "0", 0.5, 10.0, NULL, &v, err, sizeof err), FSA_EINVAL);
    assert_string_equal(err, "option '--days' needs a number from 0.5 to 10, not '0'");
    assert_int_equal(fsa_opts_real("x", "1", 0.0, 1.0, NULL, NULL, err, sizeof err), FSA_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_opts_parse__values_flags_and_positionals),
        cmocka_unit_test(test_fsa_opts_parse__a_value_may_look_like_an_option),
        cmocka_unit_test(test_fsa_opts_parse__errors_name_the_argument),
        cmocka_unit_test(test_fsa_opts_parse__repeat_keeps_the_last),
        cmocka_unit_test(test_fsa_opts_parse__help_anywhere_stops),
        cmocka_unit_test(test_fsa_opts_parse__before_command),
        cmocka_unit_test(test_fsa_opts_parse__values_reset_and_invalid_calls),
        cmocka_unit_test(test_fsa_opts_parse__nonempty_refuses_empty_values),
        cmocka_unit_test(test_fsa_opts_values__collects_in_order),
        cmocka_unit_test(test_fsa_opts_values__stops_where_parse_stops),
        cmocka_unit_test(test_fsa_opts_int__range_and_syntax),
        cmocka_unit_test(test_fsa_opts_real__range_syntax_and_noun),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
