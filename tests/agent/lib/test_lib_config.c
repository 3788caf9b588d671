/* fieldsync tests: agent/lib/config.c, the library's configuration, rule by rule, in tables (one
 * CMocka case per row, named by what it shows): the device secret (its text and its file), the
 * resolver policy grammar and its per-process table, the checks at init and at open, the
 * configuration stored in and loaded from the journal (overrides, zeroed members, clearing), the
 * engine built from it; and the public struct's rules that fill it (handle.c: size, flags,
 * durability, bounds), through fieldsync_open. Every refusal is one line naming the problem, and
 * no message holds a secret. */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/lib/internal.h"
#include "port/alloc.h"
#include "port/limits.h"
#include "tests/sync/server_harness.h"
#include "tests/test_util.h"

/* The secret every good row uses, and a marker that bad rows put in a secret file: neither may
 * appear in any message. */
#define HEX64 "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define MARK "c0ffee5ec2e7"

typedef struct fx {
    char dir[256];
    char good[400], db[400];
    fsa_journal_t *j;
} fx_t;

static fx_t fx; /* one temp dir and journal for the whole program (rows write their own files) */

static bool write_file(const char *path, const char *text, size_t len, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return false;
    bool ok = write(fd, text, len) == (ssize_t)len;
    return close(fd) == 0 && ok && chmod(path, mode) == 0;
}

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", fx.dir, name);
}

static int group_setup(void **state)
{
    (void)state;
    if (!th_dir_make(fx.dir))
        return -1;
    path_in(fx.good, sizeof fx.good, "good.secret");
    path_in(fx.db, sizeof fx.db, "dev.db");
    if (!write_file(fx.good, HEX64 "\n", 65, 0600))
        return -1;
    fsa_journal_opts_t o = {.create = true};
    char err[256];
    if (fsa_journal_open(fsa_port_posix(), fx.db, &o, &fx.j, err, sizeof err) != FSA_OK) {
        fprintf(stderr, "journal: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fsa_journal_close(fx.j);
    th_dir_remove(fx.dir);
    return 0;
}

/* A refusal's message: not empty, one line, holds want, holds neither the secret nor the
 * marker. */
static void check_message(const char *row, const char *err, const char *want)
{
    if (err[0] == '\0')
        fail_msg("%s: no message", row);
    if (strchr(err, '\n') != NULL)
        fail_msg("%s: the message is not one line: %s", row, err);
    if (want != NULL && strstr(err, want) == NULL)
        fail_msg("%s: the message \"%s\" does not say \"%s\"", row, err, want);
    if (strstr(err, HEX64) != NULL || strstr(err, "0a0b0c0d") != NULL || strstr(err, MARK) != NULL)
        fail_msg("%s: the message holds the secret: %s", row, err);
}

static void check_status(const char *row, fsa_status_t got, fsa_status_t want, const char *err)
{
    if (got != want)
        fail_msg("%s: got %s, want %s (%s)", row, fsa_status_str(got), fsa_status_str(want), err);
}

static bool key_is_zero(const fsa_signer_key_t *k)
{
    for (size_t i = 0; i < sizeof k->bytes; i++)
        if (k->bytes[i] != 0)
            return false;
    return true;
}

/* The key of HEX64: bytes 0, 1, ..., 31. */
static bool key_is_hex64(const fsa_signer_key_t *k)
{
    for (size_t i = 0; i < sizeof k->bytes; i++)
        if (k->bytes[i] != (unsigned char)i)
            return false;
    return true;
}

/* ---- fsl__parse_secret: exactly 64 hex characters, then optional whitespace ---- */

typedef struct secret_row {
    const char *name;
    const char *text; /* NULL: a NULL text */
    size_t len;       /* 0: strlen(text) */
    bool ok;
} secret_row_t;

static const secret_row_t secret_rows[] = {
    {"secret: 64 lower-case hex", HEX64, 0, true},
    {"secret: 64 upper-case hex",
     "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", 0, true},
    {"secret: a trailing newline", HEX64 "\n", 0, true},
    {"secret: trailing spaces, tabs, CR LF", HEX64 " \t\r\n \n", 0, true},
    {"secret: 63 hex refused", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1", 0,
     false},
    {"secret: 65 hex refused", HEX64 "0", 0, false},
    {"secret: 62 hex and whitespace refused",
     "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e  ", 0, false},
    {"secret: leading whitespace refused", " " HEX64, 0, false},
    {"secret: a non-hex character refused",
     "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1g", 0, false},
    {"secret: whitespace inside refused",
     "000102030405060708090a0b0c0d0e0f 101112131415161718191a1b1c1d1e1f", 0, false},
    {"secret: a second line refused", HEX64 "\n" HEX64 "\n", 0, false},
    {"secret: a NUL after it refused", HEX64 "\0", 65, false},
    {"secret: empty refused", "", 0, false},
    {"secret: whitespace only refused", " \n", 0, false},
    {"secret: NULL refused", NULL, 0, false},
};

static void run_secret_row(void **state)
{
    const secret_row_t *row = *state;
    fsa_signer_key_t key;
    memset(&key, 0xa5, sizeof key);
    size_t len = row->text == NULL ? 0 : row->len != 0 ? row->len : strlen(row->text);
    fsa_status_t st = fsl__parse_secret(row->text, len, &key);
    check_status(row->name, st, row->ok ? FSA_OK : FSA_EINVAL, "");
    if (row->ok && !key_is_hex64(&key))
        fail_msg("%s: the key is not the secret's bytes", row->name);
    if (!row->ok && !key_is_zero(&key))
        fail_msg("%s: the key is not wiped after a refusal", row->name);
}

/* ---- fsl__read_secret: the port's private reader, then the parse ---- */

typedef struct secret_file_row {
    const char *name;
    const char *file;    /* a name in the temp dir; its content below */
    const char *content; /* NULL: no such file (or what kind says) */
    mode_t mode;
    int kind; /* 0: a file; 1: a symlink to the good secret; 2: a directory */
    fsa_status_t want;
    const char *says; /* in the message */
} secret_file_row_t;

static const secret_file_row_t secret_file_rows[] = {
    {"secret file: 0600 and 64 hex: read", "a.secret", HEX64 "\n", 0600, 0, FSA_OK, NULL},
    {"secret file: 0400: read", "b.secret", HEX64, 0400, 0, FSA_OK, NULL},
    {"secret file: group-readable refused (chmod 600 said)", "c.secret", HEX64, 0640, 0, FSA_EPERM,
     "chmod 600"},
    {"secret file: world-readable refused", "d.secret", HEX64, 0604, 0, FSA_EPERM, "accessible"},
    {"secret file: missing", "none.secret", NULL, 0, 0, FSA_ENOTFOUND, "none.secret"},
    {"secret file: a symlink is not followed", "link.secret", NULL, 0, 1, FSA_EIO, "link.secret"},
    {"secret file: a directory refused", "dir.secret", NULL, 0, 2, FSA_EINVAL,
     "not a regular file"},
    {"secret file: 63 hex: the content is not shown", "short.secret",
     MARK "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e", 0600, 0, FSA_EINVAL,
     "must hold exactly 64 hex characters"},
    {"secret file: text after the secret: the content is not shown", "long.secret",
     HEX64 "\n" MARK "\n", 0600, 0, FSA_EINVAL, "must hold exactly 64 hex characters"},
    {"secret file: a password, not hex: not shown", "pw.secret", "password=" MARK "\n", 0600, 0,
     FSA_EINVAL, "pw.secret"},
};

static void run_secret_file_row(void **state)
{
    const secret_file_row_t *row = *state;
    char path[450];
    path_in(path, sizeof path, row->file);
    if (row->kind == 0 && row->content != NULL)
        assert_true(write_file(path, row->content, strlen(row->content), row->mode));
    if (row->kind == 1) {
        unlink(path);
        assert_int_equal(symlink(fx.good, path), 0);
    }
    if (row->kind == 2) {
        rmdir(path);
        assert_int_equal(mkdir(path, 0700), 0);
    }
    fsa_signer_key_t key;
    memset(&key, 0xa5, sizeof key);
    char err[512] = "";
    fsa_status_t st = fsl__read_secret(path, &key, err, sizeof err);
    if (row->kind == 2)
        rmdir(path);
    else
        unlink(path);
    check_status(row->name, st, row->want, err);
    if (st == FSA_OK) {
        if (!key_is_hex64(&key))
            fail_msg("%s: the key is not the file's", row->name);
        return;
    }
    check_message(row->name, err, row->says);
    if (strstr(err, row->file) == NULL)
        fail_msg("%s: the message does not name the file: %s", row->name, err);
    if (!key_is_zero(&key))
        fail_msg("%s: the key is not wiped after a refusal", row->name);
}

static void test_secret_file__too_large_refused_unread(void **state)
{
    (void)state;
    char path[450], big[5000];
    path_in(path, sizeof path, "big.secret");
    memset(big, 'a', sizeof big);
    memcpy(big, MARK, sizeof MARK - 1); /* no NUL: the file is one run of text */
    assert_true(write_file(path, big, sizeof big, 0600));
    fsa_signer_key_t key;
    memset(&key, 0xa5, sizeof key);
    char err[512] = "";
    fsa_status_t st = fsl__read_secret(path, &key, err, sizeof err);
    unlink(path);
    check_status("too large", st, FSA_ETOOLARGE, err);
    check_message("too large", err, "at most 4096");
    assert_true(key_is_zero(&key));
}

/* ---- fsl__resolver_policy: TYPE[.FIELD]=ACTION[,...], interned per process ---- */

/* Distinct specs this program had accepted (the table holds at most POLICY_CACHE_MAX = 32). */
#define POLICY_CACHE_MAX 32
static char accepted[POLICY_CACHE_MAX][1200];
static int n_accepted;

static void note_accepted(const char *spec)
{
    if (spec == NULL || spec[0] == '\0')
        return;
    for (int i = 0; i < n_accepted; i++)
        if (strcmp(accepted[i], spec) == 0)
            return;
    assert_true(n_accepted < POLICY_CACHE_MAX && strlen(spec) < sizeof accepted[0]);
    snprintf(accepted[n_accepted++], sizeof accepted[0], "%s", spec);
}

typedef struct policy_rule_want {
    fsa_type_t type;
    const char *field; /* NULL: the whole type */
    fsa_policy_action_t action;
} policy_rule_want_t;

typedef struct policy_row {
    const char *name;
    const char *spec;
    fsa_status_t want;
    const char *says;        /* in the message, when refused */
    size_t n;                /* rules, when accepted */
    policy_rule_want_t r[3]; /* the first rules, when accepted */
} policy_row_t;

#define RULE(t, f, a)                                                                              \
    {                                                                                              \
        FSA_TYPE_##t, f, FSA_POLICY_##a                                                            \
    }

static const policy_row_t policy_rows[] = {
    {"policy: NULL is the defaults", NULL, FSA_OK, NULL, 0, {{0}}},
    {"policy: empty is the defaults", "", FSA_OK, NULL, 0, {{0}}},
    {"policy: a whole type", "ticket=park", FSA_OK, NULL, 1, {RULE(TICKET, NULL, PARK)}},
    {"policy: a field, each action, in order",
     "ticket.priority=local-wins,jobneed=server-wins,attendance.other_info=park",
     FSA_OK,
     NULL,
     3,
     {RULE(TICKET, "priority", LOCAL_WINS), RULE(JOBNEED, NULL, SERVER_WINS),
      RULE(ATTENDANCE, "other_info", PARK)}},
    {"policy: 'job' names jobneed",
     "job.jobstatus=park",
     FSA_OK,
     NULL,
     1,
     {RULE(JOBNEED, "jobstatus", PARK)}},
    {"policy: an unknown type",
     "invoice=park",
     FSA_EINVAL,
     "unknown type 'invoice' (attendance, jobneed, ticket)",
     0,
     {{0}}},
    {"policy: a field the type has not",
     "ticket.jobstatus=park",
     FSA_EINVAL,
     "ticket has no field 'jobstatus'",
     0,
     {{0}}},
    {"policy: an unknown action",
     "ticket=client-wins",
     FSA_EINVAL,
     "unknown action 'client-wins' (server-wins, local-wins, park)",
     0,
     {{0}}},
    {"policy: actions are case-sensitive",
     "ticket=PARK",
     FSA_EINVAL,
     "unknown action 'PARK'",
     0,
     {{0}}},
    {"policy: no '='", "ticket", FSA_EINVAL, "'ticket' is not TYPE[.FIELD]=ACTION", 0, {{0}}},
    {"policy: no type", "=park", FSA_EINVAL, "is not TYPE[.FIELD]=ACTION", 0, {{0}}},
    {"policy: an empty field", "ticket.=park", FSA_EINVAL, "is not TYPE[.FIELD]=ACTION", 0, {{0}}},
    {"policy: no action", "ticket=", FSA_EINVAL, "is not TYPE[.FIELD]=ACTION", 0, {{0}}},
    {"policy: an empty rule first",
     ",ticket=park",
     FSA_EINVAL,
     "is not TYPE[.FIELD]=ACTION",
     0,
     {{0}}},
    {"policy: an empty rule inside",
     "ticket=park,,jobneed=park",
     FSA_EINVAL,
     "is not TYPE[.FIELD]=ACTION",
     0,
     {{0}}},
    {"policy: ends with a comma", "ticket=park,", FSA_EINVAL, "ends with ','", 0, {{0}}},
    {"policy: a type of 16 characters",
     "attendanceattend=park",
     FSA_EINVAL,
     "is not TYPE[.FIELD]=ACTION",
     0,
     {{0}}},
    {"policy: a type of 15 characters is looked up",
     "attendanceatten=park",
     FSA_EINVAL,
     "unknown type 'attendanceatten'",
     0,
     {{0}}},
    {"policy: a field of 32 characters",
     "ticket.abcdefghijabcdefghijabcdefghijab=park",
     FSA_EINVAL,
     "is not TYPE[.FIELD]=ACTION",
     0,
     {{0}}},
    {"policy: a field of 31 characters is looked up",
     "ticket.abcdefghijabcdefghijabcdefghija=park",
     FSA_EINVAL,
     "has no field 'abcdefghijabcdefghijabcdefghija'",
     0,
     {{0}}},
    {"policy: an action of 16 characters",
     "ticket=server-winsserve",
     FSA_EINVAL,
     "is not TYPE[.FIELD]=ACTION",
     0,
     {{0}}},
    {"policy: a second '=' is part of the action",
     "ticket=park=x",
     FSA_EINVAL,
     "unknown action 'park=x'",
     0,
     {{0}}},
    {"policy: a long bad rule is cut at 60 characters in the message",
     "ticketticketticketticketticketticketticketticketticketticketXYZ",
     FSA_EINVAL,
     "'ticketticketticketticketticketticketticketticketticketticket' is",
     0,
     {{0}}},
};

static void run_policy_row(void **state)
{
    const policy_row_t *row = *state;
    const fsa_resolver_policy_t *p = (const fsa_resolver_policy_t *)1;
    char err[512] = "";
    fsa_status_t st = fsl__resolver_policy(row->spec, &p, err, sizeof err);
    check_status(row->name, st, row->want, err);
    if (st != FSA_OK) {
        check_message(row->name, err, row->says);
        assert_true(strstr(err, "resolver policy: ") == err);
        assert_null(p);
        return;
    }
    note_accepted(row->spec);
    if (row->n == 0) {
        assert_null(p);
        return;
    }
    assert_non_null(p);
    assert_int_equal(p->n, row->n);
    for (size_t i = 0; i < row->n && i < 3; i++) {
        const fsa_policy_rule_t *r = &p->rules[i];
        if (r->type != row->r[i].type || r->action != row->r[i].action ||
            (r->field == NULL) != (row->r[i].field == NULL) ||
            (r->field != NULL && strcmp(r->field, row->r[i].field) != 0))
            fail_msg("%s: rule %zu is type %d field %s action %d", row->name, i, (int)r->type,
                     r->field != NULL ? r->field : "(none)", (int)r->action);
    }
    /* interned: the same spec gives the same policy, also from a copy of the text */
    char copy[256];
    snprintf(copy, sizeof copy, "%s", row->spec);
    const fsa_resolver_policy_t *again = NULL;
    assert_int_equal(fsl__resolver_policy(copy, &again, err, sizeof err), FSA_OK);
    assert_ptr_equal(again, p);
}

/* "ticket=park" n times, comma-separated. */
static void rules_spec(char *out, size_t size, int n)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, size - len, "%sticket=park", i > 0 ? "," : "");
    assert_true(len < size);
}

static void test_policy__at_most_32_rules(void **state)
{
    (void)state;
    char spec[1200], err[512] = "";
    const fsa_resolver_policy_t *p = NULL;
    rules_spec(spec, sizeof spec, 32);
    assert_int_equal(fsl__resolver_policy(spec, &p, err, sizeof err), FSA_OK);
    note_accepted(spec);
    assert_int_equal(p->n, 32);
    rules_spec(spec, sizeof spec, 33);
    check_status("33 rules", fsl__resolver_policy(spec, &p, err, sizeof err), FSA_EINVAL, err);
    check_message("33 rules", err, "more than 32 rules");
    assert_null(p);
}

/* Threads interning the same new policies at once (engines of several handles made together)
 * each get the one entry of each, whole: the table takes no lock, a slot is filled once. This pins
 * the lock-free table's correctness; what it replaced (a spin lock held over the parse) gave the
 * same answers here, and its hazard (a real-time thread spinning over a preempted holder on one
 * core) is not one a unit test can show. */
#define INTERN_THREADS 12
#define INTERN_SPECS 3
static const char *const intern_specs[INTERN_SPECS] = {
    "ticket.priority=local-wins", "jobneed=park,ticket=server-wins", "attendance=park"};

typedef struct intern_arg {
    pthread_barrier_t *go;
    const fsa_resolver_policy_t *got[INTERN_SPECS];
    fsa_status_t st;
} intern_arg_t;

static void *intern_thread(void *arg)
{
    intern_arg_t *a = arg;
    char err[256];
    pthread_barrier_wait(a->go);
    for (int k = 0; k < INTERN_SPECS && a->st == FSA_OK; k++)
        a->st = fsl__resolver_policy(intern_specs[k], &a->got[k], err, sizeof err);
    return NULL;
}

static void test_policy__interned_once_by_threads_at_once(void **state)
{
    (void)state;
    pthread_barrier_t go;
    assert_int_equal(pthread_barrier_init(&go, NULL, INTERN_THREADS), 0);
    pthread_t t[INTERN_THREADS];
    intern_arg_t a[INTERN_THREADS];
    memset(a, 0, sizeof a);
    for (int i = 0; i < INTERN_THREADS; i++) {
        a[i].go = &go;
        assert_int_equal(pthread_create(&t[i], NULL, intern_thread, &a[i]), 0);
    }
    for (int i = 0; i < INTERN_THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    pthread_barrier_destroy(&go);
    for (int k = 0; k < INTERN_SPECS; k++) {
        note_accepted(intern_specs[k]);
        for (int i = 0; i < INTERN_THREADS; i++) {
            assert_int_equal(a[i].st, FSA_OK);
            assert_non_null(a[i].got[k]);
            assert_ptr_equal(a[i].got[k], a[0].got[k]);
        }
        assert_int_equal(a[0].got[k]->n, k == 1 ? 2 : 1);
    }
    assert_ptr_not_equal(a[0].got[0], a[0].got[1]);
    /* and later callers get the same */
    const fsa_resolver_policy_t *p = NULL;
    char err[256];
    assert_int_equal(fsl__resolver_policy(intern_specs[2], &p, err, sizeof err), FSA_OK);
    assert_ptr_equal(p, a[0].got[2]);
}

/* Must run after every other test that accepts a policy: the table never shrinks. The process
 * holds 32 distinct policies; the next distinct one is refused, the known ones still answer. */
static void test_policy__at_most_32_distinct_policies_per_process(void **state)
{
    (void)state;
    char spec[1200], err[512] = "";
    const fsa_resolver_policy_t *p = NULL;
    int room = POLICY_CACHE_MAX - n_accepted;
    assert_true(room > 0);
    for (int i = 0; i < room; i++) {
        rules_spec(spec, sizeof spec, i + 2); /* 2..: "ticket=park" and 32 rules are noted */
        fsa_status_t st = fsl__resolver_policy(spec, &p, err, sizeof err);
        if (st != FSA_OK && strstr(err, "distinct") != NULL)
            fail_msg("refused after %d distinct policies, not %d: %s", n_accepted, POLICY_CACHE_MAX,
                     err);
        check_status("filling the table", st, FSA_OK, err);
        note_accepted(spec);
    }
    assert_int_equal(n_accepted, POLICY_CACHE_MAX);
    check_status("the 33rd", fsl__resolver_policy("jobneed.seqno=park", &p, err, sizeof err),
                 FSA_EINVAL, err);
    check_message("the 33rd", err, "more than 32 distinct policies in one process");
    assert_null(p);
    for (int i = 0; i < n_accepted; i++)
        check_status("a known one", fsl__resolver_policy(accepted[i], &p, err, sizeof err), FSA_OK,
                     err);
    /* a malformed one still says what is wrong with it */
    check_status("malformed", fsl__resolver_policy("ticket=nope", &p, err, sizeof err), FSA_EINVAL,
                 err);
    check_message("malformed", err, "unknown action 'nope'");
}

/* ---- fsl__config_check: the checks at open (full = false: no file) and at init (full = true:
 * the transport and the secret) ---- */

typedef struct check_row {
    const char *name;
    bool full;
    /* members (NULL: unset); secret: a name in the temp dir, "good" for the good secret; cert
     * and key: a path, or a name in the temp dir made by make_tls_file */
    const char *device_id, *retry, *policy, *url, *secret, *pins, *cert, *key;
    bool allow_http;
    fsa_status_t want;
    const char *says;
    const char *never; /* must not appear in the message */
} check_row_t;

#define ID129                                                                                      \
    "a123456789b123456789c123456789d123456789e123456789f123456789g123456789h123456789i123456789"   \
    "j123456789k123456789l123456789m1234567X"
#define ID128                                                                                      \
    "a123456789b123456789c123456789d123456789e123456789f123456789g123456789h123456789i123456789"   \
    "j123456789k123456789l123456789m1234567"

static const check_row_t check_rows[] = {
    {"check: nothing set passes, at open", false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     false, FSA_OK, NULL, NULL},
    {"check: nothing set passes, at init", true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     false, FSA_OK, NULL, NULL},
    {"check: everything good, at init", true, "dev-1", "AGGRESSIVE", "ticket=park",
     "https://127.0.0.1:8443/fs", "good", NULL, NULL, NULL, false, FSA_OK, NULL, NULL},
    /* device id */
    {"check: a device id of 128 characters", false, ID128, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     false, FSA_OK, NULL, NULL},
    {"check: a device id of 129 characters, shown cut at 40", false, ID129, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, false, FSA_EINVAL,
     "invalid device id 'a123456789b123456789c123456789d123456789'", "e1"},
    {"check: a device id with a space", false, "dev 1", NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     false, FSA_EINVAL, "invalid device id 'dev 1': 1-128 characters", NULL},
    {"check: an empty device id", false, "", NULL, NULL, NULL, NULL, NULL, NULL, NULL, false,
     FSA_EINVAL, "invalid device id ''", NULL},
    {"check: the device id first, before a bad retry policy", false, "dev/1", "NOPE", NULL, NULL,
     NULL, NULL, NULL, NULL, false, FSA_EINVAL, "device id", "NOPE"},
    /* retry policy */
    {"check: retry DEFAULT", false, NULL, "DEFAULT", NULL, NULL, NULL, NULL, NULL, NULL, false,
     FSA_OK, NULL, NULL},
    {"check: retry CONSERVATIVE", false, NULL, "CONSERVATIVE", NULL, NULL, NULL, NULL, NULL, NULL,
     false, FSA_OK, NULL, NULL},
    {"check: retry LOCK_ACQUISITION", false, NULL, "LOCK_ACQUISITION", NULL, NULL, NULL, NULL, NULL,
     NULL, false, FSA_OK, NULL, NULL},
    {"check: retry names are case-sensitive", false, NULL, "aggressive", NULL, NULL, NULL, NULL,
     NULL, NULL, false, FSA_EINVAL,
     "unknown retry policy 'aggressive' (DEFAULT, AGGRESSIVE, CONSERVATIVE, LOCK_ACQUISITION)",
     NULL},
    {"check: an empty retry policy", false, NULL, "", NULL, NULL, NULL, NULL, NULL, NULL, false,
     FSA_EINVAL, "unknown retry policy ''", NULL},
    /* resolver policy */
    {"check: a bad resolver policy, at open", false, NULL, NULL, "ticket=win", NULL, NULL, NULL,
     NULL, NULL, false, FSA_EINVAL, "resolver policy: unknown action 'win'", NULL},
    /* the URL and TLS: at init only */
    {"check: a bad URL is not looked at when opening", false, NULL, NULL, NULL, "ftp://x", NULL,
     NULL, NULL, NULL, false, FSA_OK, NULL, NULL},
    {"check: a URL of another scheme, at init", true, NULL, NULL, NULL, "ftp://x/", NULL, NULL,
     NULL, NULL, false, FSA_EINVAL, "scheme \"ftp\" is not supported", NULL},
    {"check: plain http to another host, at init", true, NULL, NULL, NULL, "http://example.com/",
     NULL, NULL, NULL, NULL, false, FSA_EINVAL, NULL, NULL},
    {"check: plain http to another host with allow_http", true, NULL, NULL, NULL,
     "http://example.com/", NULL, NULL, NULL, NULL, true, FSA_OK, NULL, NULL},
    {"check: plain http to loopback", true, NULL, NULL, NULL, "http://127.0.0.1:9", NULL, NULL,
     NULL, NULL, false, FSA_OK, NULL, NULL},
    {"check: a password in the URL refused and not shown", true, NULL, NULL, NULL,
     "https://dev:" MARK "@127.0.0.1/", NULL, NULL, NULL, NULL, false, FSA_EINVAL, "credentials",
     NULL},
    {"check: a malformed URL with a password: not shown", true, NULL, NULL, NULL,
     "https://dev:" MARK "@127.0.0.1:99999999/", NULL, NULL, NULL, NULL, false, FSA_EINVAL,
     "malformed server URL", NULL},
    {"check: a malformed pin list, at init", true, NULL, NULL, NULL, "https://127.0.0.1/", NULL,
     "sha256//nope", NULL, NULL, false, FSA_EINVAL, "malformed pin list", NULL},
    {"check: a client certificate without its key, at init", true, NULL, NULL, NULL,
     "https://127.0.0.1/", NULL, NULL, "/etc/hostname", NULL, false, FSA_EINVAL,
     "client_cert and client_key go together", NULL},
    /* the client key is a secret: private, as the secret file, at init */
    {"check: a client key of mode 0600, at init", true, NULL, NULL, NULL, "https://127.0.0.1/",
     NULL, NULL, "c.pem", "good.key", false, FSA_OK, NULL, NULL},
    {"check: a client key of mode 0400, at init", true, NULL, NULL, NULL, "https://127.0.0.1/",
     NULL, NULL, "c.pem", "ro.key", false, FSA_OK, NULL, NULL},
    {"check: a client key others may read, at init (chmod 600 said, not shown)", true, NULL, NULL,
     NULL, "https://127.0.0.1/", NULL, NULL, "c.pem", "open.key", false, FSA_EPERM,
     "(mode 0644): run 'chmod 600", "BEGIN"},
    {"check: a client key that is a symlink, at init", true, NULL, NULL, NULL, "https://127.0.0.1/",
     NULL, NULL, "c.pem", "link.key", false, FSA_EIO, "link.key", NULL},
    {"check: a missing client key, at init", true, NULL, NULL, NULL, "https://127.0.0.1/", NULL,
     NULL, "c.pem", "none.key", false, FSA_ENOTFOUND, "none.key", NULL},
    {"check: a client key others may read is not read when opening", false, NULL, NULL, NULL,
     "https://127.0.0.1/", NULL, NULL, "c.pem", "open.key", false, FSA_OK, NULL, NULL},
    /* the secret: at init only */
    {"check: a missing secret file is not read when opening", false, NULL, NULL, NULL, NULL,
     "missing.secret", NULL, NULL, NULL, false, FSA_OK, NULL, NULL},
    {"check: a missing secret file, at init", true, NULL, NULL, NULL, NULL, "missing.secret", NULL,
     NULL, NULL, false, FSA_ENOTFOUND, "missing.secret", NULL},
    {"check: a bad secret, at init, not shown", true, NULL, NULL, NULL, NULL, "bad.secret", NULL,
     NULL, NULL, false, FSA_EINVAL, "must hold exactly 64 hex characters", NULL},
    {"check: the URL before the secret, at init", true, NULL, NULL, NULL, "ftp://x/", "bad.secret",
     NULL, NULL, NULL, false, FSA_EINVAL, "scheme", NULL},
};

/* A TLS file named in a row: a path is taken as it is; a name is made in the temp dir (into out),
 * "open.key" mode 0644, "ro.key" 0400, "link.key" a symlink to a 0600 key, "none.key" absent,
 * any other 0600. The content is a stand-in, a certificate's and a key's PEM lines around no real
 * one: the key checks do not parse it, and init's certificate check looks for the lines only. */
static const char *make_tls_file(const char *name, char *out, size_t n)
{
    if (name == NULL || strchr(name, '/') != NULL)
        return name;
    static const char pem[] = "-----BEGIN CERTIFICATE-----\n" MARK "\n-----END CERTIFICATE-----\n"
                              "-----BEGIN PRIVATE KEY-----\n" MARK "\n-----END PRIVATE KEY-----\n";
    path_in(out, n, name);
    unlink(out);
    if (strcmp(name, "link.key") == 0) {
        char target[450];
        path_in(target, sizeof target, "target.key");
        assert_true(write_file(target, pem, sizeof pem - 1, 0600));
        assert_int_equal(symlink(target, out), 0);
    } else if (strcmp(name, "none.key") != 0) {
        mode_t mode = strcmp(name, "open.key") == 0 ? 0644
                      : strcmp(name, "ro.key") == 0 ? 0400
                                                    : 0600;
        assert_true(write_file(out, pem, sizeof pem - 1, mode));
    }
    return out;
}

static void run_check_row(void **state)
{
    const check_row_t *row = *state;
    char cert[450], key[450];
    char secret[450] = "", bad[450];
    path_in(bad, sizeof bad, "bad.secret");
    assert_true(write_file(bad, MARK "\n", strlen(MARK) + 1, 0600));
    if (row->secret != NULL && strcmp(row->secret, "good") == 0)
        snprintf(secret, sizeof secret, "%s", fx.good);
    else if (row->secret != NULL)
        path_in(secret, sizeof secret, row->secret);
    fsl_config_t c;
    memset(&c, 0, sizeof c);
    c.device_id = (char *)(uintptr_t)row->device_id;
    c.retry_policy = (char *)(uintptr_t)row->retry;
    c.resolver_policy = (char *)(uintptr_t)row->policy;
    c.server_url = (char *)(uintptr_t)row->url;
    c.secret_file = row->secret != NULL ? secret : NULL;
    c.pins = (char *)(uintptr_t)row->pins;
    c.client_cert = (char *)(uintptr_t)make_tls_file(row->cert, cert, sizeof cert);
    c.client_key = (char *)(uintptr_t)make_tls_file(row->key, key, sizeof key);
    c.allow_http = row->allow_http;
    char err[512] = "";
    fsa_status_t st =
        fsl__config_check(fsa_port_posix(), &c,
                          row->full ? FSL_CHECK_TRANSPORT | FSL_CHECK_SECRET : 0, err, sizeof err);
    unlink(bad);
    if (c.client_cert == cert)
        unlink(cert);
    if (c.client_key == key)
        unlink(key);
    check_status(row->name, st, row->want, err);
    if (st == FSA_OK) {
        note_accepted(row->policy);
        return;
    }
    check_message(row->name, err, row->says);
    if (row->never != NULL && strstr(err, row->never) != NULL)
        fail_msg("%s: the message shows \"%s\": %s", row->name, row->never, err);
}

/* ---- fsl__config_store, fsl__config_load, fsl__config_clear: the journal's copy ---- */

/* A configuration with every member set (owned strings, as a handle keeps them). */
static void full_config(fsl_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->device_id = fsa_strdup("dev-7");
    c->server_url = fsa_strdup("https://fs.example:8443/x");
    c->secret_file = fsa_strdup("/etc/fieldsync/dev-7.secret");
    c->ca_file = fsa_strdup("/etc/fieldsync/ca.pem");
    c->pins = fsa_strdup("sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    c->client_cert = fsa_strdup("/etc/fieldsync/c.pem");
    c->client_key = fsa_strdup("/etc/fieldsync/k.pem");
    c->proxy = fsa_strdup("http://proxy:3128");
    c->retry_policy = fsa_strdup("CONSERVATIVE");
    c->resolver_policy = fsa_strdup("ticket=park");
    c->allow_http = true;
    c->durability = FIELDSYNC_DURABLE_NORMAL;
    c->sync_interval_ms = 11;
    c->stall_after_ms = 22;
    c->budget_bytes = 33;
}

static void store(const fsl_config_t *c)
{
    char err[512] = "";
    fsa_status_t st = fsl__config_store(fx.j, c, err, sizeof err);
    check_status("store", st, FSA_OK, err);
}

static void load(fsl_config_t *c)
{
    char err[512] = "";
    fsa_status_t st = fsl__config_load(fx.j, c, err, sizeof err);
    check_status("load", st, FSA_OK, err);
}

static void test_store__every_member_comes_back(void **state)
{
    (void)state;
    fsl_config_t in, out;
    full_config(&in);
    store(&in);
    memset(&out, 0, sizeof out);
    load(&out);
    assert_string_equal(out.server_url, in.server_url);
    assert_string_equal(out.secret_file, in.secret_file);
    assert_string_equal(out.ca_file, in.ca_file);
    assert_string_equal(out.pins, in.pins);
    assert_string_equal(out.client_cert, in.client_cert);
    assert_string_equal(out.client_key, in.client_key);
    assert_string_equal(out.proxy, in.proxy);
    assert_string_equal(out.retry_policy, in.retry_policy);
    assert_string_equal(out.resolver_policy, in.resolver_policy);
    assert_true(out.allow_http);
    assert_int_equal(out.durability, FIELDSYNC_DURABLE_NORMAL);
    assert_int_equal(out.sync_interval_ms, 11);
    assert_int_equal(out.stall_after_ms, 22);
    assert_int_equal(out.budget_bytes, 33);
    /* the device id is the journal's own (fsa_journal_device_id), not loaded here; the path,
     * the label and the flags are the handle's */
    assert_null(out.device_id);
    assert_null(out.journal_path);
    assert_null(out.label);
    assert_int_equal(out.flags, 0);
    char *id = NULL;
    assert_fsa_ok(fsa_journal_device_id(fx.j, &id));
    assert_string_equal(id, "dev-7");
    fsa_model_free(id);
    fsl__config_clear(&in);
    fsl__config_clear(&out);
}

/* What the caller gave wins over the journal; only what it left NULL or 0 is filled. */
static void test_load__the_callers_members_win(void **state)
{
    (void)state;
    fsl_config_t in, out;
    full_config(&in);
    store(&in);
    memset(&out, 0, sizeof out);
    out.server_url = fsa_strdup("https://127.0.0.1:1/");
    out.proxy = fsa_strdup("http://other:1");
    out.sync_interval_ms = 5;
    out.budget_bytes = 7;
    load(&out);
    assert_string_equal(out.server_url, "https://127.0.0.1:1/");
    assert_string_equal(out.proxy, "http://other:1");
    assert_string_equal(out.ca_file, in.ca_file);
    assert_int_equal(out.sync_interval_ms, 5);
    assert_int_equal(out.stall_after_ms, 22);
    assert_int_equal(out.budget_bytes, 7);
    fsl__config_clear(&in);
    fsl__config_clear(&out);
}

/* allow_http and durability: either side's "on" wins (the caller cannot switch off what the
 * journal has, nor the journal what the caller asks). */
typedef struct flag_row {
    const char *name;
    bool stored_http, caller_http, want_http;
    fieldsync_durability_t stored_dur, caller_dur, want_dur;
} flag_row_t;

#define FULL FIELDSYNC_DURABLE_FULL
#define NORMAL FIELDSYNC_DURABLE_NORMAL
static const flag_row_t flag_rows[] = {
    {"load: neither allows http, full durability", false, false, false, FULL, FULL, FULL},
    {"load: the journal allows http, NORMAL stored", true, false, true, NORMAL, FULL, NORMAL},
    {"load: the caller allows http, NORMAL asked", false, true, true, FULL, NORMAL, NORMAL},
    {"load: both", true, true, true, NORMAL, NORMAL, NORMAL},
};

static void run_flag_row(void **state)
{
    const flag_row_t *row = *state;
    fsl_config_t in, out;
    memset(&in, 0, sizeof in);
    in.allow_http = row->stored_http;
    in.durability = row->stored_dur;
    store(&in);
    memset(&out, 0, sizeof out);
    out.allow_http = row->caller_http;
    out.durability = row->caller_dur;
    load(&out);
    if (out.allow_http != row->want_http || out.durability != row->want_dur)
        fail_msg("%s: allow_http %d durability %d", row->name, out.allow_http, (int)out.durability);
    fsl__config_clear(&out);
}

/* A new store replaces the whole configuration: members it leaves unset read back unset (NULL,
 * 0: the defaults), not as the older store's. */
static void test_store__a_new_store_clears_what_it_does_not_set(void **state)
{
    (void)state;
    fsl_config_t in, out;
    full_config(&in);
    store(&in);
    fsl__config_clear(&in);
    in.device_id = "dev-7";
    in.server_url = "https://127.0.0.1:2/";
    store(&in);
    memset(&out, 0, sizeof out);
    load(&out);
    assert_string_equal(out.server_url, "https://127.0.0.1:2/");
    const char *unset[] = {out.secret_file, out.ca_file, out.pins,         out.client_cert,
                           out.client_key,  out.proxy,   out.retry_policy, out.resolver_policy};
    for (size_t i = 0; i < sizeof unset / sizeof unset[0]; i++)
        assert_null(unset[i]);
    assert_false(out.allow_http);
    assert_int_equal(out.durability, FIELDSYNC_DURABLE_FULL);
    assert_int_equal(out.sync_interval_ms, 0);
    assert_int_equal(out.stall_after_ms, 0);
    assert_int_equal(out.budget_bytes, 0);
    fsl__config_clear(&out);
}

/* Clear frees every owned string and zeroes every member. */
static void test_clear__frees_and_zeroes_everything(void **state)
{
    (void)state;
    fsl_config_t c, zero;
    full_config(&c);
    c.journal_path = fsa_strdup("/x.db");
    c.label = fsa_strdup("app");
    c.flags = 3;
    fsl__config_clear(&c);
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(&c, &zero, sizeof c);
    fsl__config_clear(&c); /* twice is harmless */
}

/* Each allocation failing in turn: a status and a message naming the journal, never a crash
 * or a leak; a store that failed left the one before it whole. */
static void test_store_load__each_allocation_failing(void **state)
{
    (void)state;
    fsl_config_t in, out;
    full_config(&in);
    store(&in);
    fsl_config_t other;
    memset(&other, 0, sizeof other);
    other.device_id = "dev-7";
    other.server_url = "https://127.0.0.1:3/";
    int failures = 0;
    for (unsigned long n = 1; n < 5000; n++) {
        char err[512] = "";
        fsa_alloc_fail_nth(n);
        fsa_status_t st = fsl__config_store(fx.j, &other, err, sizeof err);
        bool fired = fsa_alloc_fault_fired();
        fsa_alloc_fail_nth(0);
        if (st != FSA_OK) {
            failures++;
            check_message("store failing", err, fx.db);
            memset(&out, 0, sizeof out);
            load(&out);
            assert_string_equal(out.server_url, in.server_url); /* all or nothing */
            assert_string_equal(out.proxy, in.proxy);
            fsl__config_clear(&out);
        }
        store(&in);
        if (!fired)
            break;
    }
    for (unsigned long n = 1; n < 5000; n++) {
        char err[512] = "";
        memset(&out, 0, sizeof out);
        fsa_alloc_fail_nth(n);
        fsa_status_t st = fsl__config_load(fx.j, &out, err, sizeof err);
        bool fired = fsa_alloc_fault_fired();
        fsa_alloc_fail_nth(0);
        if (st != FSA_OK) {
            failures++;
            check_message("load failing", err, fx.db);
        } else {
            assert_string_equal(out.server_url, in.server_url);
        }
        fsl__config_clear(&out);
        if (!fired)
            break;
    }
    assert_true(failures > 0);
    fsl__config_clear(&in);
}

/* ---- fsl__engine_new: an engine from a handle's configuration ---- */

typedef struct engine_row {
    const char *name;
    bool no_id, no_url, no_secret;
    const char *retry, *policy, *secret; /* secret: a file name in the temp dir, NULL: good */
    fsa_status_t want;
    const char *says;
    const char *key; /* the client key, as make_tls_file makes it; NULL: none */
} engine_row_t;

static const engine_row_t engine_rows[] = {
    {"engine: a set-up configuration", false, false, false, NULL, NULL, NULL, FSA_OK, NULL, NULL},
    {"engine: with its policies", false, false, false, "AGGRESSIVE", "ticket=park", NULL, FSA_OK,
     NULL, NULL},
    {"engine: no device id: not set up", true, false, false, NULL, NULL, NULL, FSA_ENOTFOUND,
     "is not set up for sync: run 'fieldsync init' first", NULL},
    {"engine: no server: not set up", false, true, false, NULL, NULL, NULL, FSA_ENOTFOUND,
     "is not set up for sync", NULL},
    {"engine: no secret file: not set up", false, false, true, NULL, NULL, NULL, FSA_ENOTFOUND,
     "is not set up for sync", NULL},
    {"engine: an unknown retry policy", false, false, false, "SOMETIMES", NULL, NULL, FSA_EINVAL,
     "unknown retry policy 'SOMETIMES'", NULL},
    {"engine: a bad resolver policy", false, false, false, NULL, "park", NULL, FSA_EINVAL,
     "resolver policy", NULL},
    {"engine: a bad secret, not shown", false, false, false, NULL, NULL, "bad.secret", FSA_EINVAL,
     "must hold exactly 64 hex characters", NULL},
    {"engine: a secret others may read", false, false, false, NULL, NULL, "open.secret", FSA_EPERM,
     "chmod 600", NULL},
    {"engine: a client key of mode 0600", false, false, false, NULL, NULL, NULL, FSA_OK, NULL,
     "good.key"},
    {"engine: a client key made readable since init", false, false, false, NULL, NULL, NULL,
     FSA_EPERM, "client key: ", "open.key"},
};

static void run_engine_row(void **state)
{
    const engine_row_t *row = *state;
    char secret[450];
    if (row->secret == NULL)
        snprintf(secret, sizeof secret, "%s", fx.good);
    else
        path_in(secret, sizeof secret, row->secret);
    if (row->secret != NULL && strcmp(row->secret, "bad.secret") == 0)
        assert_true(write_file(secret, MARK "\n", strlen(MARK) + 1, 0600));
    if (row->secret != NULL && strcmp(row->secret, "open.secret") == 0)
        assert_true(write_file(secret, HEX64 "\n", 65, 0644));
    static fieldsync_t fs; /* the members fsl__engine_new reads: port, cfg, j */
    memset(&fs, 0, sizeof fs);
    fs.port = *fsa_port_posix();
    fs.j = fx.j;
    fs.cfg.device_id = row->no_id ? NULL : (char *)"dev-7";
    fs.cfg.server_url = row->no_url ? NULL : (char *)"http://127.0.0.1:9";
    fs.cfg.secret_file = row->no_secret ? NULL : secret;
    fs.cfg.retry_policy = (char *)(uintptr_t)row->retry;
    fs.cfg.resolver_policy = (char *)(uintptr_t)row->policy;
    char cert[450], key[450];
    if (row->key != NULL) {
        fs.cfg.client_cert = (char *)(uintptr_t)make_tls_file("c.pem", cert, sizeof cert);
        fs.cfg.client_key = (char *)(uintptr_t)make_tls_file(row->key, key, sizeof key);
    }
    fsa_engine_t *e = (fsa_engine_t *)1;
    char err[512] = "";
    fsa_status_t st = fsl__engine_new(&fs, false, &e, err, sizeof err);
    if (row->secret != NULL)
        unlink(secret);
    if (row->key != NULL) {
        unlink(cert);
        unlink(key);
    }
    check_status(row->name, st, row->want, err);
    if (st == FSA_OK) {
        assert_non_null(e);
        note_accepted(row->policy);
        fsa_engine_free(e);
        return;
    }
    assert_null(e);
    check_message(row->name, err, row->says);
}

/* ---- the public struct's rules (handle.c) that fill fsl_config_t, through fieldsync_open ---- */

typedef struct open_row {
    const char *name;
    void (*edit)(fieldsync_config_t *c);
    fieldsync_status_t want;
    const char *says;
} open_row_t;

static void e_none(fieldsync_config_t *c)
{
    (void)c;
}
static void e_size0(fieldsync_config_t *c)
{
    c->size = 0;
}
static void e_size_mid(fieldsync_config_t *c)
{
    c->size = (uint32_t)offsetof(fieldsync_config_t, device_id) + 1;
}
static void e_flags(fieldsync_config_t *c)
{
    c->flags = 0x4;
}
static void e_durability(fieldsync_config_t *c)
{
    c->durability = (fieldsync_durability_t)2;
}
static void e_durability_neg(fieldsync_config_t *c)
{
    c->durability = (fieldsync_durability_t)-1;
}
static void e_interval(fieldsync_config_t *c)
{
    c->sync_interval_ms = -1;
}
static void e_stall(fieldsync_config_t *c)
{
    c->stall_after_ms = -1;
}
static void e_budget(fieldsync_config_t *c)
{
    c->budget_bytes = -1;
}
static void e_budget_max(fieldsync_config_t *c)
{
    c->budget_bytes = FSA_LIMIT_JOURNAL_BUDGET_BYTES_MAX;
}
static void e_budget_over(fieldsync_config_t *c)
{
    c->budget_bytes = FSA_LIMIT_JOURNAL_BUDGET_BYTES_MAX + 1;
}
static void e_no_path(fieldsync_config_t *c)
{
    c->journal_path = NULL;
}
static void e_empty_path(fieldsync_config_t *c)
{
    c->journal_path = "";
}
static void e_init_no_id(fieldsync_config_t *c)
{
    c->flags = FIELDSYNC_OPEN_INIT;
    c->device_id = NULL;
}
static void e_init_no_url(fieldsync_config_t *c)
{
    c->flags = FIELDSYNC_OPEN_INIT;
    c->server_url = NULL;
}
static void e_init_no_secret(fieldsync_config_t *c)
{
    c->flags = FIELDSYNC_OPEN_INIT;
    c->secret_file = NULL;
}
static void e_init_bad_policy(fieldsync_config_t *c)
{
    c->flags = FIELDSYNC_OPEN_INIT;
    c->resolver_policy = "ticket=sometimes";
}
/* Init with a TLS client key of the given make_tls_file name. */
static void init_with_key(fieldsync_config_t *c, const char *key_name)
{
    static char cert[450], key[450];
    c->flags = FIELDSYNC_OPEN_INIT;
    c->server_url = "https://127.0.0.1:9";
    c->client_cert = make_tls_file("c.pem", cert, sizeof cert);
    c->client_key = make_tls_file(key_name, key, sizeof key);
}
static void e_init_private_key(fieldsync_config_t *c)
{
    init_with_key(c, "good.key");
}
static void e_init_open_key(fieldsync_config_t *c)
{
    init_with_key(c, "open.key");
}
static void e_init_proxy_password(fieldsync_config_t *c)
{
    c->flags = FIELDSYNC_OPEN_INIT;
    c->server_url = "https://127.0.0.1:9";
    c->proxy = "http://dev:" MARK "@proxy.invalid:3128";
}
static void e_wrong_device(fieldsync_config_t *c)
{
    c->device_id = "dev-8";
}
static void e_bad_retry(fieldsync_config_t *c)
{
    c->retry_policy = "OFTEN";
}
/* Overrides of an open without init, checked as an init checks them (before, each opened with
 * FIELDSYNC_OK and left the handle unable to sync, reloads included). */
static void e_bad_url(fieldsync_config_t *c)
{
    c->server_url = "htp:/x";
}
static void e_proxy_password(fieldsync_config_t *c)
{
    c->proxy = "http://dev:" MARK "@proxy.invalid:3128";
}
static void e_open_secret(fieldsync_config_t *c)
{
    static char path[450];
    path_in(path, sizeof path, "open.secret");
    assert_true(write_file(path, HEX64 "\n", 65, 0644));
    c->secret_file = path;
}
static void e_missing_ca(fieldsync_config_t *c)
{
    static char path[450];
    path_in(path, sizeof path, "no-such-ca.pem");
    c->server_url = "https://127.0.0.1:9";
    c->ca_file = path;
}

static const open_row_t open_rows[] = {
    {"open: the fixture's journal opens", e_none, FIELDSYNC_OK, NULL},
    {"open: size 0", e_size0, FIELDSYNC_EINVAL, "size 0 is not the size of any"},
    {"open: a size inside a member", e_size_mid, FIELDSYNC_EINVAL, "is not the size of any"},
    {"open: an unknown flag", e_flags, FIELDSYNC_EUNSUPPORTED, "unknown flags 0x4"},
    {"open: durability 2", e_durability, FIELDSYNC_EINVAL, "unknown durability 2"},
    {"open: durability -1", e_durability_neg, FIELDSYNC_EINVAL, "unknown durability -1"},
    {"open: a negative sync interval", e_interval, FIELDSYNC_EINVAL, "sync_interval_ms"},
    {"open: a negative stall threshold", e_stall, FIELDSYNC_EINVAL, "stall_after_ms"},
    {"open: a negative budget", e_budget, FIELDSYNC_EINVAL, "budget_bytes"},
    {"open: the largest budget", e_budget_max, FIELDSYNC_OK, NULL},
    {"open: a budget over 64 GiB", e_budget_over, FIELDSYNC_EINVAL, "at most 64 GiB"},
    {"open: no journal path", e_no_path, FIELDSYNC_EINVAL, "journal_path is required"},
    {"open: an empty journal path", e_empty_path, FIELDSYNC_EINVAL, "journal_path is required"},
    {"open: init without device_id", e_init_no_id, FIELDSYNC_EINVAL, "device_id"},
    {"open: init without server_url", e_init_no_url, FIELDSYNC_EINVAL, "server_url"},
    {"open: init without secret_file", e_init_no_secret, FIELDSYNC_EINVAL, "secret_file"},
    {"open: init with a bad resolver policy", e_init_bad_policy, FIELDSYNC_EINVAL,
     "unknown action 'sometimes'"},
    {"open: init with a client key of mode 0600", e_init_private_key, FIELDSYNC_OK, NULL},
    {"open: init with a client key others may read", e_init_open_key, FIELDSYNC_EPERM,
     "client key: "},
    {"open: init with a password in the proxy: refused, not shown", e_init_proxy_password,
     FIELDSYNC_EINVAL, "proxy must not hold credentials"},
    {"open: another device's journal", e_wrong_device, FIELDSYNC_EINVAL,
     "belongs to device dev-7, not dev-8"},
    {"open: an unknown retry policy override", e_bad_retry, FIELDSYNC_EINVAL,
     "unknown retry policy 'OFTEN'"},
    {"open: a malformed server_url override", e_bad_url, FIELDSYNC_EINVAL,
     "scheme \"htp\" is not supported"},
    {"open: a password in a proxy override: refused, not shown", e_proxy_password, FIELDSYNC_EINVAL,
     "proxy must not hold credentials"},
    {"open: a secret_file override others may read", e_open_secret, FIELDSYNC_EPERM, "secret"},
    {"open: a ca_file override that does not exist", e_missing_ca, FIELDSYNC_ENOTFOUND,
     "no-such-ca.pem"},
};

/* The public config of the journal this program set up (device dev-7). */
static fieldsync_config_t public_config(void)
{
    fieldsync_config_t c = FIELDSYNC_CONFIG_INIT;
    c.journal_path = fx.db;
    c.device_id = "dev-7";
    c.server_url = "http://127.0.0.1:9";
    c.secret_file = fx.good;
    return c;
}

/* The journal as fieldsync_init leaves it (the other tests stored other configurations). */
static void store_public(void)
{
    fsl_config_t c;
    memset(&c, 0, sizeof c);
    c.device_id = "dev-7";
    c.server_url = "http://127.0.0.1:9";
    c.secret_file = fx.good;
    store(&c);
}

static void run_open_row(void **state)
{
    const open_row_t *row = *state;
    store_public();
    fieldsync_config_t c = public_config();
    row->edit(&c);
    fieldsync_t *fs = NULL;
    fieldsync_status_t st = fieldsync_open(&c, &fs);
    const char *msg = fieldsync_errmsg(st == FIELDSYNC_OK ? NULL : fs);
    if (st != row->want)
        fail_msg("%s: got %s, want %s (%s)", row->name, fieldsync_status_str(st),
                 fieldsync_status_str(row->want), st == FIELDSYNC_OK ? "" : msg);
    if (st != FIELDSYNC_OK)
        check_message(row->name, msg, row->says);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

/* Every older size (each member's end) opens, with the defaults for the members it lacks. */
static void test_open__every_older_size_opens(void **state)
{
    (void)state;
    store_public();
    size_t ends[] = {
        offsetof(fieldsync_config_t, journal_path) + sizeof(const char *),
        offsetof(fieldsync_config_t, device_id) + sizeof(const char *),
        offsetof(fieldsync_config_t, server_url) + sizeof(const char *),
        offsetof(fieldsync_config_t, secret_file) + sizeof(const char *),
        offsetof(fieldsync_config_t, ca_file) + sizeof(const char *),
        offsetof(fieldsync_config_t, pins) + sizeof(const char *),
        offsetof(fieldsync_config_t, client_cert) + sizeof(const char *),
        offsetof(fieldsync_config_t, client_key) + sizeof(const char *),
        offsetof(fieldsync_config_t, proxy) + sizeof(const char *),
        offsetof(fieldsync_config_t, allow_http) + sizeof(bool),
        offsetof(fieldsync_config_t, durability) + sizeof(fieldsync_durability_t),
        offsetof(fieldsync_config_t, retry_policy) + sizeof(const char *),
        offsetof(fieldsync_config_t, resolver_policy) + sizeof(const char *),
        offsetof(fieldsync_config_t, sync_interval_ms) + sizeof(int64_t),
        offsetof(fieldsync_config_t, stall_after_ms) + sizeof(int64_t),
        offsetof(fieldsync_config_t, budget_bytes) + sizeof(int64_t),
        offsetof(fieldsync_config_t, label) + sizeof(const char *),
        sizeof(fieldsync_config_t),
    };
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        /* the members past the size are garbage the library must not read */
        fieldsync_config_t c;
        memset(&c, 0x5a, sizeof c);
        fieldsync_config_t good = public_config();
        memcpy(&c, &good, ends[i]);
        c.size = (uint32_t)ends[i];
        fieldsync_t *fs = NULL;
        fieldsync_status_t st = fieldsync_open(&c, &fs);
        if (st != FIELDSYNC_OK)
            fail_msg("size %zu: %s: %s", ends[i], fieldsync_status_str(st), fieldsync_errmsg(fs));
        assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    }
    /* and one past each end that is not another member's end is refused */
    for (size_t i = 0; i + 1 < sizeof ends / sizeof ends[0]; i++) {
        if (ends[i] + 1 == ends[i + 1] || ends[i] + 1 >= sizeof(fieldsync_config_t))
            continue;
        fieldsync_config_t c = public_config();
        c.size = (uint32_t)(ends[i] + 1);
        fieldsync_t *fs = NULL;
        assert_int_equal(fieldsync_open(&c, &fs), FIELDSYNC_EINVAL);
        check_message("one past an end", fieldsync_errmsg(fs), "is not the size of any");
        assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    }
}

/* Init stores absolute paths, but a secret's is made absolute without following it: a symlinked
 * secret file or client key is refused, one line naming it (realpath would have stored the
 * target, which then passed the reader's O_NOFOLLOW); a plain relative name is still taken. */
static void test_init__a_symlinked_secret_refused_a_relative_one_made_absolute(void **state)
{
    (void)state;
    char link[450], target[450], key[450], cwd[PATH_MAX];
    path_in(link, sizeof link, "init-link.secret");
    unlink(link);
    assert_int_equal(symlink(fx.good, link), 0);
    fieldsync_config_t c = public_config();
    c.flags = FIELDSYNC_OPEN_INIT;
    c.secret_file = link;
    fieldsync_t *fs = NULL;
    assert_int_equal(fieldsync_open(&c, &fs), FIELDSYNC_EPERM);
    check_message("symlinked secret", fieldsync_errmsg(fs), "init-link.secret is a symlink");
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    unlink(link);
    /* the client key likewise, with a plain secret */
    c = public_config();
    c.flags = FIELDSYNC_OPEN_INIT;
    c.server_url = "https://127.0.0.1:9";
    c.client_cert = make_tls_file("c.pem", target, sizeof target);
    c.client_key = make_tls_file("link.key", key, sizeof key);
    assert_int_equal(fieldsync_open(&c, &fs), FIELDSYNC_EPERM);
    check_message("symlinked client key", fieldsync_errmsg(fs), "link.key is a symlink");
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    unlink(key);
    /* a relative name, from the secret's directory: stored as its absolute path */
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(fx.dir), 0);
    c = public_config();
    c.flags = FIELDSYNC_OPEN_INIT;
    c.secret_file = "good.secret";
    fieldsync_status_t st = fieldsync_open(&c, &fs);
    assert_int_equal(chdir(cwd), 0);
    if (st != FIELDSYNC_OK)
        fail_msg("relative secret file: %s: %s", fieldsync_status_str(st), fieldsync_errmsg(fs));
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    /* absolute, ending in the name given, and that very file (the temp dir may be reached
     * through a link, which is resolved) */
    fsl_config_t got;
    memset(&got, 0, sizeof got);
    load(&got);
    struct stat a, b;
    size_t n = strlen(got.secret_file);
    if (got.secret_file[0] != '/' || n < 12 ||
        strcmp(got.secret_file + n - 12, "/good.secret") != 0 || lstat(got.secret_file, &a) != 0 ||
        stat(fx.good, &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
        fail_msg("relative secret file stored as %s, not the absolute path of %s", got.secret_file,
                 fx.good);
    fsl__config_clear(&got);
}

/* A CA file that is a link is stored as the link, its directory made absolute: a renewal that
 * moves the link (certbot's layout, /etc/ssl/certs) is read by the next engine. Before, init
 * stored the link's target for good. */
static void test_init__a_linked_ca_file_stored_as_the_link(void **state)
{
    (void)state;
    char target[450], link[450];
    make_tls_file("ca-target.pem", target, sizeof target);
    path_in(link, sizeof link, "ca-link.pem");
    unlink(link);
    assert_int_equal(symlink(target, link), 0);
    fieldsync_config_t c = public_config();
    c.flags = FIELDSYNC_OPEN_INIT;
    c.ca_file = link;
    fieldsync_t *fs = NULL;
    fieldsync_status_t st = fieldsync_open(&c, &fs);
    if (st != FIELDSYNC_OK)
        fail_msg("init with a linked CA file: %s", fieldsync_errmsg(fs));
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    fsl_config_t got;
    memset(&got, 0, sizeof got);
    load(&got);
    size_t n = got.ca_file != NULL ? strlen(got.ca_file) : 0;
    if (n < 12 || got.ca_file[0] != '/' || strcmp(got.ca_file + n - 12, "/ca-link.pem") != 0)
        fail_msg("a linked CA file stored as %s, not as the link", got.ca_file);
    fsl__config_clear(&got);
    unlink(link);
    unlink(target);
}

/* A newer caller: a larger struct opens while its unknown members are zero; each set byte of
 * them is refused, naming its place. */
static void test_open__a_newer_struct_with_unknown_members(void **state)
{
    (void)state;
    store_public();
    struct {
        fieldsync_config_t c;
        unsigned char newer[16];
    } big;
    memset(&big, 0, sizeof big);
    big.c = public_config();
    big.c.size = sizeof big;
    fieldsync_t *fs = NULL;
    assert_int_equal(fieldsync_open(&big.c, &fs), FIELDSYNC_OK);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    for (size_t i = 0; i < sizeof big.newer; i++) {
        big.newer[i] = 1;
        assert_int_equal(fieldsync_open(&big.c, &fs), FIELDSYNC_EUNSUPPORTED);
        char want[64];
        snprintf(want, sizeof want, "member at byte %zu is set", sizeof big.c + i);
        check_message("newer", fieldsync_errmsg(fs), want);
        assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
        big.newer[i] = 0;
    }
}

/* Zeroed members at open take the journal's, and the journal's zero stays zero (the defaults
 * apply downstream: 60 s, 600 s, 512 MiB). */
static void test_open__zeroed_members_take_the_journals(void **state)
{
    (void)state;
    fsl_config_t in;
    full_config(&in);
    fsa_free(in.server_url);
    in.server_url = fsa_strdup("http://127.0.0.1:9");
    fsa_free(in.secret_file);
    in.secret_file = fsa_strdup(fx.good);
    fsa_free(in.pins); /* the fixture's pin is not a real key's, and is checked only at init */
    in.pins = NULL;
    in.budget_bytes = 0;
    store(&in);
    fieldsync_config_t c = FIELDSYNC_CONFIG_INIT;
    c.journal_path = fx.db;
    fieldsync_t *fs = NULL;
    fieldsync_status_t st = fieldsync_open(&c, &fs);
    if (st != FIELDSYNC_OK)
        fail_msg("open: %s", fieldsync_errmsg(fs));
    assert_string_equal(fs->cfg.device_id, "dev-7");
    assert_string_equal(fs->cfg.server_url, "http://127.0.0.1:9");
    assert_string_equal(fs->cfg.retry_policy, "CONSERVATIVE");
    assert_string_equal(fs->cfg.label, "app");
    assert_int_equal(fs->cfg.durability, FIELDSYNC_DURABLE_NORMAL);
    assert_int_equal(fs->cfg.sync_interval_ms, 11);
    assert_int_equal(fs->cfg.stall_after_ms, 22);
    assert_int_equal(fs->cfg.budget_bytes, 0);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    fsl__config_clear(&in);
}

/* An open that overrides the server only reads no stored file: a secret out of reach for a while
 * (being rotated, on a volume not mounted yet) fails syncs, not the open, and recording goes on. */
static void test_open__a_server_override_reads_no_stored_secret(void **state)
{
    (void)state;
    char gone[450];
    path_in(gone, sizeof gone, "gone.secret");
    unlink(gone);
    fsl_config_t in;
    memset(&in, 0, sizeof in);
    in.device_id = "dev-7";
    in.server_url = "http://127.0.0.1:9";
    in.secret_file = gone;
    store(&in);
    fieldsync_config_t c = FIELDSYNC_CONFIG_INIT;
    c.journal_path = fx.db;
    c.server_url = "https://127.0.0.1:9";
    fieldsync_t *fs = NULL;
    fieldsync_status_t st = fieldsync_open(&c, &fs);
    if (st != FIELDSYNC_OK)
        fail_msg("open: %s", fieldsync_errmsg(fs));
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    c.secret_file = gone; /* given: read, and refused */
    assert_int_equal(fieldsync_open(&c, &fs), FIELDSYNC_ENOTFOUND);
    assert_non_null(strstr(fieldsync_errmsg(fs), "gone.secret"));
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    store_public();
}

/* An open's file overrides are made absolute, as an init stores them: a relative secret file
 * given at an open still names that file once the process has moved (a reload, and every engine
 * of the sync thread, read it later). Before, the engine looked for it in the new directory. */
static void test_open__a_relative_override_is_made_absolute(void **state)
{
    (void)state;
    store_public();
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(fx.dir), 0);
    fieldsync_config_t c = FIELDSYNC_CONFIG_INIT;
    c.journal_path = fx.db;
    c.secret_file = "good.secret";
    fieldsync_t *fs = NULL;
    fieldsync_status_t st = fieldsync_open(&c, &fs);
    assert_int_equal(chdir("/"), 0);
    if (st != FIELDSYNC_OK) {
        assert_int_equal(chdir(cwd), 0);
        fail_msg("open: %s", fieldsync_errmsg(fs));
    }
    st = fieldsync_reload(fs);
    char err[512] = "";
    fsa_engine_t *e = NULL;
    fsa_status_t es = st == FIELDSYNC_OK ? fsl__engine_new(fs, false, &e, err, sizeof err) : FSA_OK;
    fsa_engine_free(e);
    assert_int_equal(chdir(cwd), 0);
    if (st != FIELDSYNC_OK)
        fail_msg("reload elsewhere: %s", fieldsync_errmsg(fs));
    check_status("an engine elsewhere", es, FSA_OK, err);
    struct stat a, b;
    const char *kept = fs->given.secret_file;
    if (kept == NULL || kept[0] != '/' || lstat(kept, &a) != 0 || stat(fx.good, &b) != 0 ||
        a.st_ino != b.st_ino || a.st_dev != b.st_dev)
        fail_msg("the override kept as %s, not the absolute path of %s", kept ? kept : "NULL",
                 fx.good);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

int main(void)
{
    static struct CMUnitTest tests[N(secret_rows) + N(secret_file_rows) + N(policy_rows) +
                                   N(check_rows) + N(flag_rows) + N(engine_rows) + N(open_rows) +
                                   20];
    size_t n = 0;
#define ROWS(rows, fn)                                                                             \
    for (size_t i = 0; i < N(rows); i++)                                                           \
        tests[n++] = (struct CMUnitTest){.name = (rows)[i].name,                                   \
                                         .test_func = (fn),                                        \
                                         .initial_state = (void *)(uintptr_t)(&(rows)[i])};
#define TEST(fn) tests[n++] = (struct CMUnitTest)cmocka_unit_test(fn);
    ROWS(secret_rows, run_secret_row)
    ROWS(secret_file_rows, run_secret_file_row)
    TEST(test_secret_file__too_large_refused_unread)
    ROWS(policy_rows, run_policy_row)
    TEST(test_policy__at_most_32_rules)
    TEST(test_policy__interned_once_by_threads_at_once)
    ROWS(check_rows, run_check_row)
    TEST(test_store__every_member_comes_back)
    TEST(test_load__the_callers_members_win)
    ROWS(flag_rows, run_flag_row)
    TEST(test_store__a_new_store_clears_what_it_does_not_set)
    TEST(test_clear__frees_and_zeroes_everything)
    TEST(test_store_load__each_allocation_failing)
    ROWS(engine_rows, run_engine_row)
    ROWS(open_rows, run_open_row)
    TEST(test_open__every_older_size_opens)
    TEST(test_open__a_newer_struct_with_unknown_members)
    TEST(test_init__a_symlinked_secret_refused_a_relative_one_made_absolute)
    TEST(test_init__a_linked_ca_file_stored_as_the_link)
    TEST(test_open__zeroed_members_take_the_journals)
    TEST(test_open__a_server_override_reads_no_stored_secret)
    TEST(test_open__a_relative_override_is_made_absolute)
    TEST(test_policy__at_most_32_distinct_policies_per_process) /* last: fills the table */
#undef ROWS
#undef TEST
    return cmocka_run_group_tests_name("agent/lib/config.c", tests, group_setup, group_teardown);
}
