/* Tests for port/common.c and port/status.c: UUIDv4 and v7, log levels and filtering, status names.
 */
#include <stdio.h>
#include <string.h>

#include "port/sim/sim.h"
#include "tests/test_util.h"

static void test_fsa_uuid4__canonical_v4(void **state)
{
    (void)state;
    char a[FSA_UUID_STR_LEN], b[FSA_UUID_STR_LEN];
    assert_fsa_ok(fsa_uuid4(fsa_port_posix(), a));
    assert_fsa_ok(fsa_uuid4(fsa_port_posix(), b));
    assert_int_equal(strlen(a), 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(a[i], '-');
        else
            assert_non_null(strchr("0123456789abcdef", a[i]));
    }
    assert_int_equal(a[14], '4');           /* version */
    assert_non_null(strchr("89ab", a[19])); /* variant 10xx */
    assert_string_not_equal(a, b);
}

static void test_fsa_uuid4__sim_is_reproducible(void **state)
{
    (void)state;
    fsa_sim_t *s1, *s2;
    fsa_wall_t w = {0};
    assert_fsa_ok(fsa_sim_new(42, w, "a", &s1));
    assert_fsa_ok(fsa_sim_new(42, w, "b", &s2));
    char a[FSA_UUID_STR_LEN], b[FSA_UUID_STR_LEN];
    assert_fsa_ok(fsa_uuid4(fsa_sim_port(s1), a));
    assert_fsa_ok(fsa_uuid4(fsa_sim_port(s2), b));
    assert_string_equal(a, b);
    fsa_sim_free(s1);
    fsa_sim_free(s2);
}

/* Version 8: the wall clock's ms in the first 48 bits (ids made later sort after), as version 7,
 * the tail in the last 40, the rest random; the same canonical form as version 4. */
static void test_fsa_uuid8__time_ordered(void **state)
{
    (void)state;
    fsa_sim_t *sim;
    fsa_wall_t w = {.ms = INT64_C(1733356800123)}; /* 2024-12-05T00:00:00.123Z */
    assert_fsa_ok(fsa_sim_new(7, w, "u7", &sim));
    char a[FSA_UUID_STR_LEN], b[FSA_UUID_STR_LEN], c[FSA_UUID_STR_LEN];
    assert_fsa_ok(fsa_uuid8(fsa_sim_port(sim), UINT64_C(0xff0123456789), a));
    assert_fsa_ok(fsa_uuid8(fsa_sim_port(sim), UINT64_C(0xff0123456789), b));
    assert_int_equal(strlen(a), 36);
    assert_int_equal(a[8], '-');
    assert_int_equal(a[13], '-');
    assert_int_equal(a[18], '-');
    assert_int_equal(a[23], '-');
    assert_int_equal(a[14], '8');                /* version */
    assert_non_null(strchr("89ab", a[19]));      /* variant 10xx */
    assert_memory_equal(a, "0193941d-c87b", 13); /* 1733356800123 = 0x193941dc87b */
    assert_string_equal(a + 26, "0123456789");   /* the tail's low 40 bits */
    assert_memory_equal(a, b, 13);               /* same ms */
    assert_string_not_equal(a, b);               /* random between */
    assert_string_equal(b + 26, "0123456789");
    fsa_sim_advance(sim, 1 * FSA_NS_PER_MS);
    assert_fsa_ok(fsa_uuid8(fsa_sim_port(sim), 0, c));
    assert_true(strcmp(c, a) > 0 && strcmp(c, b) > 0);
    assert_string_equal(c + 26, "0000000000");
    assert_int_equal(fsa_uuid8(NULL, 0, c), FSA_EINVAL);
    assert_string_equal(c, "");
    fsa_sim_free(sim);
}

static void test_fsa_uuid4__null_port(void **state)
{
    (void)state;
    char a[FSA_UUID_STR_LEN] = "x";
    assert_int_equal(fsa_uuid4(NULL, a), FSA_EINVAL);
    assert_string_equal(a, "");
}

struct captured {
    int lines;
    fsa_log_level_t last_level;
    char last[4096];
};

static void capture(void *arg, fsa_log_level_t level, const char *msg)
{
    struct captured *c = arg;
    c->lines++;
    c->last_level = level;
    snprintf(c->last, sizeof c->last, "%s", msg);
}

/* A simulated port whose log lines go to c. */
static fsa_sim_t *logging_sim(struct captured *c)
{
    fsa_sim_t *sim;
    fsa_wall_t w = {0};
    assert_fsa_ok(fsa_sim_new(1, w, "log", &sim));
    fsa_sim_set_log(sim, capture, c);
    return sim;
}

static void test_fsa_log__filters_below_level(void **state)
{
    (void)state;
    struct captured c = {0};
    fsa_sim_t *sim = logging_sim(&c);
    fsa_port_t *p = fsa_sim_port(sim);
    p->log_level = FSA_LOG_INFO;
    fsa_log(p, FSA_LOG_DEBUG, "hidden %d", 1);
    assert_int_equal(c.lines, 0);
    fsa_log(p, FSA_LOG_WARN, "shown %d", 2);
    assert_int_equal(c.lines, 1);
    assert_int_equal(c.last_level, FSA_LOG_WARN);
    assert_string_equal(c.last, "shown 2");
    fsa_sim_free(sim);
}

/* A log line is one line: a newline in what it quotes (a path, a server's message) cannot forge
 * another. */
static void test_fsa_log__control_characters_shown_as_question_marks(void **state)
{
    (void)state;
    struct captured c = {0};
    fsa_sim_t *sim = logging_sim(&c);
    fsa_log(fsa_sim_port(sim), FSA_LOG_ERROR, "server said: %s",
            "no\nfieldsync: error: forged\r\x7f\x1b[2J");
    assert_int_equal(c.lines, 1);
    assert_string_equal(c.last, "server said: no?fieldsync: error: forged???[2J");
    fsa_sim_free(sim);
}

/* Nor can it steer a terminal with a C1 control in UTF-8 (U+009B: CSI), or make a person read it
 * in another order (U+202E, RIGHT-TO-LEFT OVERRIDE; U+2066, an isolate; U+2028, a line
 * separator; U+200F and U+061C, marks). Other characters, accented and Arabic ones (U+0627)
 * included, stay. */
static void test_fsa_log__c1_and_bidi_shown_as_question_marks(void **state)
{
    (void)state;
    struct captured c = {0};
    fsa_sim_t *sim = logging_sim(&c);
    // NOLINTBEGIN(misc-misleading-bidirectional): the input is a bidi override, on purpose
    fsa_log(fsa_sim_port(sim), FSA_LOG_ERROR, "%s",
            "caf\xc3\xa9 \xc2\x9b"
            "2J \xe2\x80\xaetxt.exe \xe2\x81\xa6x\xe2\x81\xa9 a\xe2\x80\xa8"
            "b "
            "\xe2\x80\x8f\xe2\x80\xa0 \xc2\xa0 \xd8\x9c\xd8\xa7 end\xc2");
    assert_string_equal(
        c.last,
        "caf\xc3\xa9 ??2J ???txt.exe ???x??? a???b ???\xe2\x80\xa0 \xc2\xa0 ??\xd8\xa7 end\xc2");
    // NOLINTEND(misc-misleading-bidirectional)
    fsa_sim_free(sim);
}

/* A lead byte that no continuation byte follows (Latin-1 text, a cut sequence) takes nothing with
 * it: the characters after it stay as they were. */
static void test_fsa_one_line__lone_lead_byte_keeps_the_next_character(void **state)
{
    (void)state;
    // NOLINTBEGIN(misc-misleading-bidirectional): the input has a bidi override, on purpose
    char s[] = "\xc2"
               "B \xe2\x80"
               "C \xe2"
               "DE caf\xe9! \xc2\xe2\x80\xae"
               "x";
    fsa_one_line(s);
    /* ... and a lone lead byte hides nothing: the override after it is still caught */
    assert_string_equal(s, "\xc2"
                           "B \xe2\x80"
                           "C \xe2"
                           "DE caf\xe9! \xc2???x");
    // NOLINTEND(misc-misleading-bidirectional)
}

static void test_fsa_log__long_line_is_cut(void **state)
{
    (void)state;
    struct captured c = {0};
    fsa_sim_t *sim = logging_sim(&c);
    char big[3 * 1024];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    fsa_log(fsa_sim_port(sim), FSA_LOG_ERROR, "%s", big);
    assert_int_equal(c.lines, 1);
    assert_int_equal(strlen(c.last), 1023);
    fsa_sim_free(sim);
}

static void test_fsa_log_level_parse__names(void **state)
{
    (void)state;
    fsa_log_level_t l;
    assert_fsa_ok(fsa_log_level_parse("debug", &l));
    assert_int_equal(l, FSA_LOG_DEBUG);
    assert_fsa_ok(fsa_log_level_parse("error", &l));
    assert_int_equal(l, FSA_LOG_ERROR);
    assert_int_equal(fsa_log_level_parse("loud", &l), FSA_EINVAL);
    assert_int_equal(fsa_log_level_parse(NULL, &l), FSA_EINVAL);
    assert_string_equal(fsa_log_level_str(FSA_LOG_WARN), "warn");
}

static void test_fsa_status_str__every_status_named(void **state)
{
    (void)state;
    for (int s = 0; s < FSA__STATUS_COUNT; s++)
        assert_string_not_equal(fsa_status_str((fsa_status_t)s), "unknown status");
    assert_string_equal(fsa_status_str(FSA__STATUS_COUNT), "unknown status");
    assert_string_equal(fsa_status_str((fsa_status_t)-1), "unknown status");
    assert_string_equal(fsa_status_str(FSA_EFULL), "journal is full");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_uuid4__canonical_v4),
        cmocka_unit_test(test_fsa_uuid4__sim_is_reproducible),
        cmocka_unit_test(test_fsa_uuid4__null_port),
        cmocka_unit_test(test_fsa_uuid8__time_ordered),
        cmocka_unit_test(test_fsa_log__filters_below_level),
        cmocka_unit_test(test_fsa_log__control_characters_shown_as_question_marks),
        cmocka_unit_test(test_fsa_log__c1_and_bidi_shown_as_question_marks),
        cmocka_unit_test(test_fsa_one_line__lone_lead_byte_keeps_the_next_character),
        cmocka_unit_test(test_fsa_log__long_line_is_cut),
        cmocka_unit_test(test_fsa_log_level_parse__names),
        cmocka_unit_test(test_fsa_status_str__every_status_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
