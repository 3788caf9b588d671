/* Tests for storage/lock: keys, contention, timeouts, leases, holder death, fencing, statistics. */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "port/alloc.h"
#include "port/sim/sim.h"
#include "storage/db.h"
#include "storage/lock.h"
#include "storage/lock_internal.h"
#include "tests/test_util.h"

static const fsa_wall_t START = {INT64_C(1764090000000)};

/* Each test gets a fresh directory with a journal path in it, and a sim port. */
typedef struct fixture {
    char dir[64];
    char path[128];
    fsa_sim_t *sim;
    fsa_port_t *sp; /* the sim's port */
    char log[2048]; /* what the sim logged, lines joined by '\n' */
} fixture_t;

static void capture_log(void *arg, fsa_log_level_t level, const char *msg)
{
    fixture_t *fx = arg;
    (void)level;
    size_t len = strlen(fx->log);
    snprintf(fx->log + len, sizeof fx->log - len, "%s\n", msg);
}

static int setup(void **state)
{
    fixture_t *fx = fsa_calloc(1, sizeof *fx);
    if (fx == NULL)
        return -1;
    snprintf(fx->dir, sizeof fx->dir, "/tmp/fsa-lock-XXXXXX");
    if (mkdtemp(fx->dir) == NULL) {
        fsa_free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof fx->path, "%s/journal.db", fx->dir);
    if (fsa_sim_new(42, START, "lock-test", &fx->sim) != FSA_OK) {
        rmdir(fx->dir);
        fsa_free(fx);
        return -1;
    }
    fx->sp = fsa_sim_port(fx->sim);
    fx->sp->log_level = FSA_LOG_DEBUG;
    fsa_sim_set_log(fx->sim, capture_log, fx);
    *state = fx;
    return 0;
}

/* Removes the journal, its -wal/-shm/.locks companions and the directory: proves the test left
 * nothing else behind. */
static int teardown(void **state)
{
    fixture_t *fx = *state;
    fsa__lock_attach_gap_hook(NULL, NULL); /* also when a failed assertion left the test early */
    DIR *d = opendir(fx->dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[384];
            snprintf(p, sizeof p, "%s/%s", fx->dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    int rc = rmdir(fx->dir);
    fsa_sim_free(fx->sim);
    fsa_free(fx);
    return rc == 0 ? 0 : -1;
}

/* A manager on the journal reached through path (the fixture's, or another name of it). */
static fsa_lockmgr_t *open_mgr_at(fsa_port_t *port, const char *path, const char *label)
{
    fsa_lockmgr_opts_t o = {.label = label, .create = true};
    fsa_lockmgr_t *m = NULL;
    char err[256];
    fsa_status_t st = fsa_lockmgr_open(port, path, &o, &m, err, sizeof err);
    if (st != FSA_OK)
        fail_msg("fsa_lockmgr_open %s: %s: %s", path, fsa_status_str(st), err);
    return m;
}

static fsa_lockmgr_t *open_mgr(fixture_t *fx, fsa_port_t *port, const char *label)
{
    return open_mgr_at(port, fx->path, label);
}

/* A plain connection to the journal, for looking at (and tampering with) the locks table. */
static sqlite3 *open_db(fixture_t *fx)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
        fail_msg("sqlite3_open_v2 %s: %s", fx->path, sqlite3_errmsg(db));
    sqlite3_busy_timeout(db, 10000);
    return db;
}

static int64_t stored_token(sqlite3 *db, const char *key)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT token FROM locks WHERE key = ?1", -1, &s, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    int64_t t = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_finalize(s);
    return t;
}

/* The latest token issued for key, as the journal's fence check reads it (the shared token table
 * while managers are open, the locks table otherwise): token passes, its neighbours do not. */
static void assert_latest_token(sqlite3 *db, const char *key, int64_t token)
{
    fsa_port_t *p = fsa_port_posix();
    fsa_fence_t f = {key, token, NULL};
    assert_fsa_ok(fsa__lock_fence_check(p, db, &f));
    f.token = token - 1;
    assert_int_equal(fsa__lock_fence_check(p, db, &f), FSA_EFENCED);
    f.token = token + 1;
    assert_int_equal(fsa__lock_fence_check(p, db, &f), FSA_EFENCED);
}

/* A journal write as the journal makes it: check the fence inside the write transaction, change
 * a row only if the fence holds. */
static fsa_status_t fenced_write(sqlite3 *db, const fsa_fence_t *f, int value)
{
    assert_fsa_ok(fsa__db_exec(db, "BEGIN IMMEDIATE", NULL, 0));
    fsa_status_t st = fsa__lock_fence_check(fsa_port_posix(), db, f);
    assert_int_equal(sqlite3_get_autocommit(db), 0); /* the check left our transaction open */
    if (st == FSA_OK) {
        char sql[64];
        snprintf(sql, sizeof sql, "UPDATE fence_probe SET v = %d", value);
        assert_fsa_ok(fsa__db_exec(db, sql, NULL, 0));
        assert_fsa_ok(fsa__db_exec(db, "COMMIT", NULL, 0));
    } else {
        assert_fsa_ok(fsa__db_exec(db, "ROLLBACK", NULL, 0));
    }
    return st;
}

static int probe_value(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT v FROM fence_probe", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* ---- keys and configurations ---- */

static void test_lock_key__forms_name_colon_resource(void **state)
{
    (void)state;
    char key[FSA_LOCK_KEY_BYTES];
    assert_fsa_ok(fsa_lock_key("JOB_WORKFLOW_UPDATE", "J1", key, sizeof key));
    assert_string_equal(key, "JOB_WORKFLOW_UPDATE:J1");
    assert_fsa_ok(fsa_lock_key("SYNC", "device", key, sizeof key));
    assert_string_equal(key, "SYNC:device");
    assert_fsa_ok(fsa_lock_key("X", "a:b c/é", key, sizeof key)); /* ids may hold ':' */
    assert_string_equal(key, "X:a:b c/é");
}

static void test_lock_key__invalid_params(void **state)
{
    (void)state;
    char key[FSA_LOCK_KEY_BYTES];
    struct {
        const char *name, *resource;
        fsa_status_t want;
    } cases[] = {
        {NULL, "J1", FSA_EINVAL},
        {"SYNC", NULL, FSA_EINVAL},
        {"", "J1", FSA_EINVAL},
        {"SYNC", "", FSA_EINVAL},
        {"sync", "J1", FSA_EINVAL},
        {"SY NC", "J1", FSA_EINVAL},
        {"SYNC", "a\nb", FSA_EINVAL},
        {"SYNC", "a\x7f", FSA_EINVAL},
        {"A_NAME_LONGER_THAN_SIXTY_FOUR_CHARACTERS_IS_NOT_A_LOCK_NAME_AT_ALL", "x", FSA_EINVAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(key, sizeof key, "junk");
        assert_int_equal(fsa_lock_key(cases[i].name, cases[i].resource, key, sizeof key),
                         cases[i].want);
        assert_string_equal(key, "");
    }
    assert_int_equal(fsa_lock_key("SYNC", "J1", NULL, 10), FSA_EINVAL);
    assert_int_equal(fsa_lock_key("SYNC", "J1", key, 0), FSA_EINVAL);
    assert_int_equal(fsa_lock_key("SYNC", "J1", key, 7), FSA_ETOOLARGE); /* needs 8 */
    assert_fsa_ok(fsa_lock_key("SYNC", "J1", key, 8));
}

static void test_lock_key__length_limit_is_exact(void **state)
{
    (void)state;
    char key[FSA_LOCK_KEY_BYTES + 8];
    char res[FSA_LIMIT_LOCK_KEY_BYTES + 2];
    size_t fit = FSA_LIMIT_LOCK_KEY_BYTES - strlen("SYNC:"); /* the longest resource that fits */
    memset(res, 'r', fit);
    res[fit] = '\0';
    assert_fsa_ok(fsa_lock_key("SYNC", res, key, sizeof key));
    assert_int_equal(strlen(key), FSA_LIMIT_LOCK_KEY_BYTES);
    res[fit] = 'r';
    res[fit + 1] = '\0';
    assert_int_equal(fsa_lock_key("SYNC", res, key, sizeof key), FSA_ETOOLARGE);
}

static void test_lock_config__platform_values(void **state)
{
    (void)state;
    struct {
        fsa_lock_kind_t kind;
        const char *name;
        int64_t lease_s, wait_s;
    } want[] = {
        {FSA_LOCK_ATTENDANCE_UPDATE, "ATTENDANCE_UPDATE", 10, 5},
        {FSA_LOCK_JOB_WORKFLOW_UPDATE, "JOB_WORKFLOW_UPDATE", 15, 10},
        {FSA_LOCK_TICKET_ESCALATION, "TICKET_ESCALATION", 15, 10},
        {FSA_LOCK_JSON_FIELD_UPDATE, "JSON_FIELD_UPDATE", 10, 5},
        {FSA_LOCK_SYNC, "SYNC", 120, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const fsa_lock_config_t *c = fsa_lock_config(want[i].kind);
        assert_non_null(c);
        assert_string_equal(c->name, want[i].name);
        assert_int_equal(c->lease_ns, want[i].lease_s * FSA_NS_PER_S);
        assert_int_equal(c->wait_ns, want[i].wait_s * FSA_NS_PER_S);
        fsa_lock_kind_t k;
        assert_fsa_ok(fsa_lock_kind_parse(want[i].name, &k));
        assert_int_equal(k, want[i].kind);
    }
    assert_null(fsa_lock_config(FSA__LOCK_KIND_COUNT));
    assert_null(fsa_lock_config((fsa_lock_kind_t)-1));
    fsa_lock_kind_t k = FSA_LOCK_SYNC;
    assert_int_equal(fsa_lock_kind_parse("NOPE", &k), FSA_EINVAL);
    assert_int_equal(k, FSA_LOCK_SYNC);
    assert_int_equal(fsa_lock_kind_parse(NULL, &k), FSA_EINVAL);
    assert_int_equal(fsa_lock_kind_parse("SYNC", NULL), FSA_EINVAL);
}

/* ---- argument checks ---- */

static void test_lockmgr_open__invalid_params(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *m = (fsa_lockmgr_t *)&m; /* must be reset to NULL on failure */
    char err[256];
    fsa_lockmgr_opts_t o = {.create = true};
    assert_int_equal(fsa_lockmgr_open(NULL, fx->path, &o, &m, err, sizeof err), FSA_EINVAL);
    assert_null(m);
    assert_int_equal(fsa_lockmgr_open(fx->sp, NULL, &o, &m, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_lockmgr_open(fx->sp, "", &o, &m, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_lockmgr_open(fx->sp, fx->path, &o, NULL, err, sizeof err), FSA_EINVAL);
    o.label = "";
    assert_int_equal(fsa_lockmgr_open(fx->sp, fx->path, &o, &m, err, sizeof err), FSA_EINVAL);
    o.label = "tab\there";
    assert_int_equal(fsa_lockmgr_open(fx->sp, fx->path, &o, &m, err, sizeof err), FSA_EINVAL);
    assert_non_null(strstr(err, "label"));
    char long_label[80];
    memset(long_label, 'l', sizeof long_label - 1);
    long_label[sizeof long_label - 1] = '\0';
    o.label = long_label;
    assert_int_equal(fsa_lockmgr_open(fx->sp, fx->path, &o, &m, NULL, 0), FSA_EINVAL);
    char *long_path = fsa_malloc(5000);
    assert_non_null(long_path);
    memset(long_path, 'p', 4999);
    long_path[4999] = '\0';
    o.label = NULL;
    assert_int_equal(fsa_lockmgr_open(fx->sp, long_path, &o, &m, err, sizeof err), FSA_EINVAL);
    fsa_free(long_path);
    /* No journal and no create: nothing is created, not even the .locks file's journal. */
    o.create = false;
    assert_int_equal(fsa_lockmgr_open(fx->sp, fx->path, &o, &m, err, sizeof err), FSA_ENOTFOUND);
    assert_non_null(strstr(err, "does not exist"));
    assert_int_equal(access(fx->path, F_OK), -1);
    fsa_lockmgr_close(NULL);
    assert_int_equal(fsa_lockmgr_holder_id(NULL), 0);
}

static void test_lock_acquire__invalid_params(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *m = open_mgr(fx, fx->sp, NULL);
    fsa_lock_t l;
    char err[256];
    char big[FSA_LIMIT_LOCK_KEY_BYTES + 1];
    memset(big, 'r', sizeof big - 1);
    big[sizeof big - 1] = '\0';

    assert_int_equal(fsa_lock_acquire(NULL, FSA_LOCK_SYNC, "d", &l, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_lock_acquire(m, FSA_LOCK_SYNC, "d", NULL, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_lock_acquire(m, FSA_LOCK_SYNC, NULL, &l, err, sizeof err), FSA_EINVAL);
    assert_false(fsa_lock_held(&l));
    assert_int_equal(fsa_lock_acquire(m, FSA_LOCK_SYNC, "", &l, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_lock_acquire(m, FSA_LOCK_SYNC, big, &l, err, sizeof err), FSA_ETOOLARGE);
    assert_non_null(strstr(err, "longer than the limit"));
    assert_int_equal(fsa_lock_acquire(m, (fsa_lock_kind_t)99, "d", &l, err, sizeof err),
                     FSA_EINVAL);
    assert_int_equal(fsa_lock_acquire(m, (fsa_lock_kind_t)-1, "d", &l, NULL, 0), FSA_EINVAL);
    fsa_lock_config_t bad[] = {{"", 1, 0}, {"X", 0, 0}, {"X", 1, -1}, {"x", 1, 0}, {"", 1, 0}};
    memset(bad[4].name, 'X', sizeof bad[4].name); /* no NUL in the name */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(fsa_lock_acquire_cfg(m, &bad[i], "d", &l, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_lock_acquire_cfg(m, NULL, "d", &l, err, sizeof err), FSA_EINVAL);

    fsa_lock_init(&l);
    fsa_lock_init(NULL);
    assert_false(fsa_lock_held(NULL));
    assert_int_equal(fsa_lock_release(NULL, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_lock_release(&l, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_lock_renew(&l, 0, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_lock_renew(NULL, 0, NULL, 0), FSA_EINVAL);
    fsa_fence_t f = fsa_lock_fence(&l);
    assert_null(f.key);
    assert_int_equal(f.token, 0);
    f = fsa_lock_fence(NULL);
    assert_null(f.key);

    fsa_lock_stats_t s;
    assert_int_equal(fsa_lockmgr_stats(NULL, &s, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_lockmgr_stats(m, NULL, err, sizeof err), FSA_EINVAL);
    char buf[16];
    assert_int_equal(fsa_lock_stats_json(NULL, buf, sizeof buf, NULL), FSA_EINVAL);
    assert_int_equal(fsa_lock_stats_json(&s, NULL, 10, NULL), FSA_EINVAL);
    assert_int_equal(fsa_lock_stats_json(&s, buf, 0, NULL), FSA_EINVAL);

    /* Nothing above took a lock or counted anything. */
    assert_fsa_ok(fsa_lockmgr_stats(m, &s, err, sizeof err));
    assert_int_equal(s.acquired + s.contended + s.timed_out + s.busy, 0);
    assert_int_equal(s.holders_total, 0);
    fsa_lockmgr_close(m);
}

/* ---- basic acquire and release, tokens ---- */

static void test_lock_acquire__and_release(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *m = open_mgr(fx, fx->sp, "fieldsync-test");
    fsa_lock_t l;
    char err[256];
    assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_ATTENDANCE_UPDATE, "A1", &l, err, sizeof err));
    assert_string_equal(err, "");
    assert_true(fsa_lock_held(&l));
    assert_ptr_equal(l.mgr, m);
    assert_string_equal(l.key, "ATTENDANCE_UPDATE:A1");
    assert_int_equal(l.token, 1);
    assert_int_equal(l.lease_ns, 10 * FSA_NS_PER_S);
    assert_int_equal(fsa_mono_diff_ns(l.expires, l.acquired), 10 * FSA_NS_PER_S);
    fsa_fence_t f = fsa_lock_fence(&l);
    assert_string_equal(f.key, "ATTENDANCE_UPDATE:A1");
    assert_int_equal(f.token, 1);
    assert_fsa_ok(fsa_lock_release(&l, err, sizeof err));
    assert_false(fsa_lock_held(&l));
    assert_int_equal(fsa_lock_release(&l, err, sizeof err), FSA_EINVAL); /* twice */

    /* Free again at once, with the next token; other keys count on their own. */
    assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_ATTENDANCE_UPDATE, "A1", &l, err, sizeof err));
    assert_int_equal(l.token, 2);
    fsa_lock_t other;
    assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_ATTENDANCE_UPDATE, "A2", &other, NULL, 0));
    assert_int_equal(other.token, 1);
    assert_fsa_ok(fsa_lock_release(&other, NULL, 0));
    assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    fsa_lockmgr_close(m);
}

static int64_t data_version(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA data_version", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* A release writes no database page (it clears its slot in the shared table; the row keeps naming
 * the holder); the lock is free all the same: another manager takes it at once, with the next
 * token, and that is no takeover. */
static void test_lock_release__writes_nothing_and_frees_the_lock(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *a = open_mgr(fx, fx->sp, "a");
    fsa_lockmgr_t *b = open_mgr(fx, fx->sp, "b");
    sqlite3 *db = open_db(fx);
    fsa_lock_t la, lb;
    assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_TICKET_ESCALATION, "T5", &la, NULL, 0));
    int64_t v0 = data_version(db); /* changes when another connection commits */
    assert_fsa_ok(fsa_lock_release(&la, NULL, 0));
    assert_int_equal(data_version(db), v0);
    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(b, &s, NULL, 0));
    assert_int_equal(s.holders_total, 0); /* an idle holder holds nothing */

    /* Another manager: no wait, the next token, no takeover counted or logged. */
    fsa_mono_t t0 = fx->sp->mono_now(fx->sp->ctx);
    assert_fsa_ok(fsa_lock_acquire(b, FSA_LOCK_TICKET_ESCALATION, "T5", &lb, NULL, 0));
    assert_int_equal(fsa_mono_diff_ns(fx->sp->mono_now(fx->sp->ctx), t0), 0);
    assert_int_equal(lb.token, la.token + 1);
    assert_latest_token(db, "TICKET_ESCALATION:T5", lb.token);
    assert_fsa_ok(fsa_lockmgr_stats(b, &s, NULL, 0));
    assert_int_equal(s.contended + s.expired + s.dead_takeovers, 0);
    assert_int_equal(s.holders_total, 1);
    assert_null(strstr(fx->log, "took over"));
    /* The first manager now waits for b like anyone else (try once: busy). */
    fsa_lock_config_t try_once = {"TICKET_ESCALATION", 15 * FSA_NS_PER_S, 0};
    assert_int_equal(fsa_lock_acquire_cfg(a, &try_once, "T5", &la, NULL, 0), FSA_EBUSY);
    assert_fsa_ok(fsa_lock_release(&lb, NULL, 0));
    /* ... and retakes it once b let it go. */
    assert_fsa_ok(fsa_lock_acquire_cfg(a, &try_once, "T5", &la, NULL, 0));
    assert_int_equal(la.token, lb.token + 1);
    assert_fsa_ok(fsa_lock_release(&la, NULL, 0));
    sqlite3_close(db);
    fsa_lockmgr_close(a);
    fsa_lockmgr_close(b);
}

/* The statistics read a slot's holder, probe it, then name it from lock_holders. A holder that
 * released and closed in between (its close clears its slots, then deletes its row) holds
 * nothing: a slot that names a holder whose row is gone is not listed, rather than listed as held
 * by "?" with pid 0 (seen under load in test_lib_procs). The row is deleted here by hand: the
 * state the reader sees when the close falls between its reads. */
static void test_lock_stats__holder_without_row_is_not_listed(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *a = open_mgr(fx, fx->sp, "a");
    fsa_lockmgr_t *b = open_mgr(fx, fx->sp, "b");
    sqlite3 *db = open_db(fx);
    fsa_lock_t la;
    assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_TICKET_ESCALATION, "T9", &la, NULL, 0));
    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(b, &s, NULL, 0));
    assert_int_equal(s.holders_total, 1);
    assert_string_equal(s.holders[0].label, "a");
    assert_int_equal(s.holders[0].holder_id, fsa_lockmgr_holder_id(a));

    sqlite3_stmt *del = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "DELETE FROM lock_holders WHERE id = ?1", -1, &del, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(del, 1, fsa_lockmgr_holder_id(a));
    assert_int_equal(sqlite3_step(del), SQLITE_DONE);
    sqlite3_finalize(del);
    assert_fsa_ok(fsa_lockmgr_stats(b, &s, NULL, 0));
    assert_int_equal(s.holders_total, 0);
    assert_int_equal(s.n_holders, 0);

    assert_fsa_ok(fsa_lock_release(&la, NULL, 0));
    sqlite3_close(db);
    fsa_lockmgr_close(a);
    fsa_lockmgr_close(b);
}

/* A manager remembers the tokens of the keys it released lately (so that taking one again is one
 * UPDATE); past that memory, and when another manager took a key meanwhile, it reads the row: the
 * tokens go on from the row's either way. */
static void test_lock_acquire__many_keys_again(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *m = open_mgr(fx, fx->sp, "a");
    fsa_lockmgr_t *other = open_mgr(fx, fx->sp, "b");
    fsa_lock_t l;
    char res[16];
    for (int round = 1; round <= 3; round++) {
        for (int i = 0; i < 40; i++) {
            snprintf(res, sizeof res, "K%d", i);
            assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_JOB_WORKFLOW_UPDATE, res, &l, NULL, 0));
            assert_int_equal(l.token, round == 3 && i % 2 == 0 ? 4 : round);
            assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
        }
        for (int i = 0; round == 2 && i < 40; i += 2) { /* the other manager takes half of them */
            snprintf(res, sizeof res, "K%d", i);
            assert_fsa_ok(fsa_lock_acquire(other, FSA_LOCK_JOB_WORKFLOW_UPDATE, res, &l, NULL, 0));
            assert_int_equal(l.token, 3);
            assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
        }
    }
    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(m, &s, NULL, 0));
    assert_int_equal(s.acquired, 120);
    assert_int_equal(s.contended + s.expired + s.dead_takeovers + s.lost, 0);
    assert_int_equal(s.holders_total, 0);
    fsa_lockmgr_close(m);
    fsa_lockmgr_close(other);
}

static void test_lock_acquire__tokens_increase_and_persist_across_reopen(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *m = open_mgr(fx, fx->sp, NULL);
    fsa_lock_t l;
    int64_t last = 0;
    for (int i = 0; i < 5; i++) {
        assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_TICKET_ESCALATION, "T9", &l, NULL, 0));
        assert_true(l.token > last);
        last = l.token;
        assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    }
    assert_int_equal(last, 5);
    int64_t id1 = fsa_lockmgr_holder_id(m);
    fsa_lockmgr_close(m);

    m = open_mgr(fx, fx->sp, NULL);
    assert_true(fsa_lockmgr_holder_id(m) > id1); /* holder ids are never reused */
    assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_TICKET_ESCALATION, "T9", &l, NULL, 0));
    assert_int_equal(l.token, 6);
    sqlite3 *db = open_db(fx);
    assert_int_equal(stored_token(db, "TICKET_ESCALATION:T9"), 6);
    sqlite3_close(db);
    assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    fsa_lockmgr_close(m);
}

static void test_lockmgr_close__releases_held_locks(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *a = open_mgr(fx, fx->sp, "a");
    fsa_lockmgr_t *b = open_mgr(fx, fx->sp, "b");
    fsa_lock_t la, lb;
    assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J1", &la, NULL, 0));
    fsa_lockmgr_close(a); /* without releasing: close does it, and says so */
    assert_non_null(strstr(fx->log, "closed with 1 locks held"));
    fsa_mono_t v0 = fx->sp->mono_now(fx->sp->ctx);
    assert_fsa_ok(fsa_lock_acquire(b, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J1", &lb, NULL, 0));
    assert_int_equal(fsa_mono_diff_ns(fx->sp->mono_now(fx->sp->ctx), v0), 0); /* no wait */
    assert_int_equal(lb.token, 2);
    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(b, &s, NULL, 0));
    assert_int_equal(s.contended + s.expired + s.dead_takeovers, 0);
    assert_fsa_ok(fsa_lock_release(&lb, NULL, 0));
    fsa_lockmgr_close(b);
}

/* ---- waiting: timeouts and try-once, on the virtual clock ---- */

static void test_lock_acquire__wait_timeout_names_holder(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *a = open_mgr(fx, fx->sp, "fieldsync-run");
    fsa_lockmgr_t *b = open_mgr(fx, fx->sp, "fieldsync-cli");
    fsa_lock_t la, lb;
    char err[256];
    assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J1", &la, NULL, 0));

    fsa_mono_t real0 = fsa_port_posix()->mono_now(NULL);
    fsa_mono_t v0 = fx->sp->mono_now(fx->sp->ctx);
    assert_int_equal(fsa_lock_acquire(b, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J1", &lb, err, sizeof err),
                     FSA_ELOCKTIMEOUT);
    int64_t virt = fsa_mono_diff_ns(fx->sp->mono_now(fx->sp->ctx), v0);
    assert_true(virt >= 10 * FSA_NS_PER_S);                  /* waited the whole 10 s ... */
    assert_true(virt < 10 * FSA_NS_PER_S + FSA_NS_PER_MS);   /* ... and not longer */
    assert_true(test_real_elapsed_ns(real0) < FSA_NS_PER_S); /* of virtual time only */
    assert_false(fsa_lock_held(&lb));

    char want[256];
    snprintf(want, sizeof want,
             "lock JOB_WORKFLOW_UPDATE:J1 not acquired in 10 s: held by fieldsync-run "
             "(pid %ld, token 1)",
             (long)getpid());
    assert_string_equal(err, want);

    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(b, &s, NULL, 0));
    assert_int_equal(s.timed_out, 1);
    assert_int_equal(s.contended, 1);
    assert_int_equal(s.acquired, 0);

    /* The holder was never disturbed: still its lock, token unchanged. */
    assert_fsa_ok(fsa_lock_release(&la, NULL, 0));
    assert_fsa_ok(fsa_lock_acquire(b, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J1", &lb, NULL, 0));
    assert_int_equal(lb.token, 2);
    assert_fsa_ok(fsa_lock_release(&lb, NULL, 0));
    fsa_lockmgr_close(a);
    fsa_lockmgr_close(b);
}

static void test_lock_acquire__sync_tries_once(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *a = open_mgr(fx, fx->sp, "fieldsync-daemon");
    fsa_lockmgr_t *b = open_mgr(fx, fx->sp, "fieldsync-cli");
    fsa_lock_t la, lb;
    char err[256];
    assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_SYNC, "device", &la, NULL, 0));
    assert_int_equal(la.lease_ns, 120 * FSA_NS_PER_S);
    fsa_mono_t v0 = fx->sp->mono_now(fx->sp->ctx);
    assert_int_equal(fsa_lock_acquire(b, FSA_LOCK_SYNC, "device", &lb, err, sizeof err), FSA_EBUSY);
    assert_int_equal(fsa_mono_diff_ns(fx->sp->mono_now(fx->sp->ctx), v0), 0);
    assert_non_null(strstr(err, "lock SYNC:device is busy: held by fieldsync-daemon"));
    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(b, &s, NULL, 0));
    assert_int_equal(s.busy, 1);
    assert_int_equal(s.timed_out, 0);
    assert_fsa_ok(fsa_lock_release(&la, NULL, 0));
    fsa_lockmgr_close(a);
    fsa_lockmgr_close(b);
}

/* ---- leases and fencing ---- */

static void test_lock_acquire__overrun_lease_is_taken_over_and_fenced(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *a = open_mgr(fx, fx->sp, "slow");
    fsa_lockmgr_t *b = open_mgr(fx, fx->sp, "next");
    sqlite3 *db = open_db(fx);
    assert_fsa_ok(fsa__db_exec(db,
                               "CREATE TEMP TABLE fence_probe(v INTEGER);"
                               "INSERT INTO fence_probe VALUES(0)",
                               NULL, 0));
    fsa_lock_t la, lb;
    char err[256];
    assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_JSON_FIELD_UPDATE, "F1", &la, NULL, 0));
    fsa_fence_t fa = fsa_lock_fence(&la);
    assert_fsa_ok(fenced_write(db, &fa, 1)); /* the holder writes while its lease runs */
    assert_int_equal(probe_value(db), 1);

    fsa_sim_advance(fx->sim, 11 * FSA_NS_PER_S); /* the holder overruns its 10 s lease */
    fsa_mono_t v0 = fx->sp->mono_now(fx->sp->ctx);
    assert_fsa_ok(fsa_lock_acquire(b, FSA_LOCK_JSON_FIELD_UPDATE, "F1", &lb, NULL, 0));
    assert_int_equal(fsa_mono_diff_ns(fx->sp->mono_now(fx->sp->ctx), v0), 0); /* no wait */
    assert_true(lb.token > la.token);
    assert_int_equal(stored_token(db, "JSON_FIELD_UPDATE:F1"), lb.token);
    assert_non_null(strstr(fx->log, "took over token 1 from slow (lease ran out)"));

    /* The old holder's write is refused and changes nothing; the new holder's goes through. */
    assert_int_equal(fenced_write(db, &fa, 2), FSA_EFENCED);
    assert_int_equal(probe_value(db), 1);
    fsa_fence_t fb = fsa_lock_fence(&lb);
    assert_fsa_ok(fenced_write(db, &fb, 3));
    assert_int_equal(probe_value(db), 3);

    /* The old holder learns it lost the lock, and its release changes nothing. */
    assert_int_equal(fsa_lock_release(&la, err, sizeof err), FSA_ELOST);
    assert_false(fsa_lock_held(&la));
    assert_non_null(strstr(err, "JSON_FIELD_UPDATE:F1 (token 1) was lost"));
    assert_non_null(strstr(fx->log, "was lost"));
    assert_fsa_ok(fenced_write(db, &fb, 4)); /* still b's */

    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(a, &s, NULL, 0));
    assert_int_equal(s.lost, 1);
    assert_fsa_ok(fsa_lockmgr_stats(b, &s, NULL, 0));
    assert_int_equal(s.expired, 1);
    assert_int_equal(s.dead_takeovers, 0);
    assert_int_equal(s.contended, 0); /* the lease was over when b came: no wait */
    assert_fsa_ok(fsa_lock_release(&lb, NULL, 0));
    sqlite3_close(db);
    fsa_lockmgr_close(a);
    fsa_lockmgr_close(b);
}

static void test_lock_acquire__waiter_takes_over_when_lease_runs_out(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *a = open_mgr(fx, fx->sp, "a");
    fsa_lockmgr_t *b = open_mgr(fx, fx->sp, "b");
    fsa_lock_config_t short_lease = {"JOB_WORKFLOW_UPDATE", 4 * FSA_NS_PER_S, 10 * FSA_NS_PER_S};
    fsa_lock_t la, lb;
    assert_fsa_ok(fsa_lock_acquire_cfg(a, &short_lease, "J2", &la, NULL, 0));
    fsa_mono_t v0 = fx->sp->mono_now(fx->sp->ctx);
    assert_fsa_ok(fsa_lock_acquire(b, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J2", &lb, NULL, 0));
    /* b polled until the moment the lease ran out, not a poll interval later. */
    assert_int_equal(fsa_mono_diff_ns(fx->sp->mono_now(fx->sp->ctx), v0), 4 * FSA_NS_PER_S);
    assert_int_equal(lb.token, la.token + 1);
    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(b, &s, NULL, 0));
    assert_int_equal(s.expired, 1);
    assert_int_equal(s.contended, 1);
    assert_int_equal(s.wait_ns_max, 4 * FSA_NS_PER_S);
    assert_int_equal(fsa_lock_release(&la, NULL, 0), FSA_ELOST);
    assert_fsa_ok(fsa_lock_release(&lb, NULL, 0));
    fsa_lockmgr_close(a);
    fsa_lockmgr_close(b);
}

/* One journal reached through two names (its path and a symlink to it) is one database to SQLite,
 * so its managers share one .locks file: the second finds the lock held, not a table of its own
 * that grants it again. */
static void test_lock_acquire__symlinked_journal_shares_the_lock(void **state)
{
    fixture_t *fx = *state;
    char link[160];
    snprintf(link, sizeof link, "%s/current.db", fx->dir);
    fsa_lockmgr_close(open_mgr(fx, fx->sp, NULL)); /* creates the journal */
    assert_int_equal(symlink(fx->path, link), 0);
    fsa_lockmgr_t *a = open_mgr(fx, fx->sp, "via-path");
    fsa_lockmgr_t *b = open_mgr_at(fx->sp, link, "via-symlink");
    fsa_lock_config_t try_once = {"JOB_WORKFLOW_UPDATE", 15 * FSA_NS_PER_S, 0};
    fsa_lock_t la, lb;
    char err[256];
    assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J1", &la, NULL, 0));
    fsa_status_t st = fsa_lock_acquire_cfg(b, &try_once, "J1", &lb, err, sizeof err);
    if (st != FSA_EBUSY)
        fail_msg("b through the symlink: %s, token %lld (a holds token %lld)", fsa_status_str(st),
                 (long long)lb.token, (long long)la.token);
    assert_non_null(strstr(err, "via-path"));
    assert_fsa_ok(fsa_lock_release(&la, NULL, 0));
    assert_fsa_ok(fsa_lock_acquire_cfg(b, &try_once, "J1", &lb, NULL, 0));
    assert_int_equal(lb.token, la.token + 1);
    assert_fsa_ok(fsa_lock_release(&lb, NULL, 0));
    fsa_lockmgr_close(b);
    fsa_lockmgr_close(a);
}

/* Two threads sharing one manager have the same holder id: only the token tells the overrun
 * acquisition from its successor. */
static void test_lock_release__lost_within_one_manager_frees_nothing(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *m = open_mgr(fx, fx->sp, "shared");
    fsa_lockmgr_t *other = open_mgr(fx, fx->sp, "other");
    fsa_lock_config_t try_once = {"ATTENDANCE_UPDATE", 10 * FSA_NS_PER_S, 0};
    fsa_lock_t first, second, lo;
    assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_ATTENDANCE_UPDATE, "A3", &first, NULL, 0));
    fsa_sim_advance(fx->sim, 11 * FSA_NS_PER_S);
    assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_ATTENDANCE_UPDATE, "A3", &second, NULL, 0));
    assert_int_equal(second.token, first.token + 1);
    fx->log[0] = '\0';
    assert_int_equal(fsa_lock_release(&first, NULL, 0), FSA_ELOST);
    /* Told whole in the log, though the caller gave no buffer for the message. */
    if (strstr(fx->log, "lock ATTENDANCE_UPDATE:A3 (token 1) was lost: its lease ran out and it "
                        "was taken over\n") == NULL)
        fail_msg("logged: [%s]", fx->log);
    /* second still holds it: another manager finds it busy. */
    assert_int_equal(fsa_lock_acquire_cfg(other, &try_once, "A3", &lo, NULL, 0), FSA_EBUSY);
    assert_int_equal(fsa_lock_renew(&first, 0, NULL, 0), FSA_EINVAL); /* first is let go */
    assert_fsa_ok(fsa_lock_release(&second, NULL, 0));

    /* The same for renew: the overrun acquisition cannot stretch its successor's lease. */
    assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_ATTENDANCE_UPDATE, "A4", &first, NULL, 0));
    fsa_sim_advance(fx->sim, 11 * FSA_NS_PER_S);
    assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_ATTENDANCE_UPDATE, "A4", &second, NULL, 0));
    assert_int_equal(fsa_lock_renew(&first, 60 * FSA_NS_PER_S, NULL, 0), FSA_ELOST);
    fsa_sim_advance(fx->sim, 11 * FSA_NS_PER_S); /* second's own 10 s lease has run out */
    assert_fsa_ok(fsa_lock_acquire_cfg(other, &try_once, "A4", &lo, NULL, 0));
    assert_fsa_ok(fsa_lock_release(&lo, NULL, 0));
    assert_int_equal(fsa_lock_release(&second, NULL, 0), FSA_ELOST);

    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(m, &s, NULL, 0));
    assert_int_equal(s.expired, 2);
    assert_int_equal(s.lost, 3);
    fsa_lockmgr_close(m);
    fsa_lockmgr_close(other);
}

static void test_lock_release__overrun_not_taken_over_is_still_ours(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *a = open_mgr(fx, fx->sp, "a");
    fsa_lock_t la;
    assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_ATTENDANCE_UPDATE, "A1", &la, NULL, 0));
    fsa_sim_advance(fx->sim, 60 * FSA_NS_PER_S);
    sqlite3 *db = open_db(fx);
    fsa_fence_t f = fsa_lock_fence(&la);
    assert_fsa_ok(
        fsa__lock_fence_check(fsa_port_posix(), db, &f)); /* no later token: the fence holds */
    sqlite3_close(db);
    assert_fsa_ok(fsa_lock_release(&la, NULL, 0));
    fsa_lockmgr_close(a);
}

static void test_lock_renew__extends_lease_until_lost(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *a = open_mgr(fx, fx->sp, "a");
    fsa_lockmgr_t *b = open_mgr(fx, fx->sp, "b");
    fsa_lock_config_t try_once = {"ATTENDANCE_UPDATE", 10 * FSA_NS_PER_S, 0};
    fsa_lock_t la, lb;
    char err[256];
    assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_ATTENDANCE_UPDATE, "A7", &la, NULL, 0));
    fsa_sim_advance(fx->sim, 8 * FSA_NS_PER_S);
    assert_fsa_ok(fsa_lock_renew(&la, 0, err, sizeof err));
    assert_int_equal(fsa_mono_diff_ns(la.expires, la.acquired), 18 * FSA_NS_PER_S);
    fsa_sim_advance(fx->sim, 8 * FSA_NS_PER_S); /* 16 s after acquiring, 8 after renewing */
    assert_int_equal(fsa_lock_acquire_cfg(b, &try_once, "A7", &lb, NULL, 0), FSA_EBUSY);
    assert_int_equal(fsa_lock_renew(&la, -1, NULL, 0), FSA_EINVAL);
    fsa_sim_advance(fx->sim, 3 * FSA_NS_PER_S); /* now the renewed lease has run out */
    assert_fsa_ok(fsa_lock_acquire_cfg(b, &try_once, "A7", &lb, NULL, 0));
    assert_int_equal(fsa_lock_renew(&la, 0, err, sizeof err), FSA_ELOST);
    assert_false(fsa_lock_held(&la));
    assert_fsa_ok(fsa_lock_renew(&lb, 30 * FSA_NS_PER_S, NULL, 0));
    assert_int_equal(lb.lease_ns, 30 * FSA_NS_PER_S);
    assert_fsa_ok(fsa_lock_release(&lb, NULL, 0));
    fsa_lockmgr_close(a);
    fsa_lockmgr_close(b);
}

static void test_lock_fence_check__refuses_what_was_not_issued(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *m = open_mgr(fx, fx->sp, NULL);
    fsa_lock_t l;
    assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_TICKET_ESCALATION, "T1", &l, NULL, 0));
    sqlite3 *db = open_db(fx);
    fsa_fence_t ok = fsa_lock_fence(&l);
    fsa_fence_t none = {NULL, 0, NULL};
    fsa_fence_t zero = {"TICKET_ESCALATION:T1", 0, NULL};
    fsa_fence_t future = {"TICKET_ESCALATION:T1", l.token + 1, NULL};
    fsa_fence_t unknown = {"TICKET_ESCALATION:T2", 1, NULL};
    assert_fsa_ok(fsa__lock_fence_check(fsa_port_posix(), db, &ok));
    assert_int_equal(fsa__lock_fence_check(fsa_port_posix(), db, &none), FSA_EFENCED);
    assert_int_equal(fsa__lock_fence_check(fsa_port_posix(), db, &zero), FSA_EFENCED);
    assert_int_equal(fsa__lock_fence_check(fsa_port_posix(), db, &future), FSA_EFENCED);
    assert_int_equal(fsa__lock_fence_check(fsa_port_posix(), db, &unknown), FSA_EFENCED);
    assert_int_equal(fsa__lock_fence_check(fsa_port_posix(), NULL, &ok), FSA_EINVAL);
    assert_int_equal(fsa__lock_fence_check(fsa_port_posix(), db, NULL), FSA_EINVAL);
    /* Outside a transaction it starts none either. */
    assert_int_equal(sqlite3_get_autocommit(db), 1);
    sqlite3_close(db);
    assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    fsa_lockmgr_close(m);
}

/* ---- contention between threads (real clock) ---- */

#define N_THREADS 12

typedef struct counter_run {
    fixture_t *fx;
    fsa_lockmgr_t *shared; /* NULL: each thread opens its own manager */
    int rounds;
    long counter;              /* protected only by the lock */
    pthread_barrier_t started; /* every thread ready (its manager open) before any takes the lock:
                                  under qemu a thread took ms to start, and the first ones had
                                  done all their rounds alone, so no acquisition ever waited */
} counter_run_t;

static void *count_under_lock(void *arg)
{
    counter_run_t *r = arg;
    fsa_port_t *p = fsa_port_posix();
    fsa_lockmgr_t *m = r->shared;
    bool opened = true;
    if (m == NULL) {
        fsa_lockmgr_opts_t o = {.label = "worker"};
        opened = fsa_lockmgr_open(p, r->fx->path, &o, &m, NULL, 0) == FSA_OK;
    }
    (void)pthread_barrier_wait(&r->started); /* also after a failed open: no one waits for ever */
    if (!opened)
        return (void *)1;
    void *ret = NULL;
    for (int i = 0; i < r->rounds; i++) {
        fsa_lock_t l;
        char err[256];
        fsa_status_t st =
            fsa_lock_acquire(m, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J42", &l, err, sizeof err);
        if (st != FSA_OK) {
            fprintf(stderr, "acquire: %s: %s\n", fsa_status_str(st), err);
            ret = (void *)1;
            break;
        }
        long v = r->counter; /* a read-modify-write that loses updates unless excluded */
        sched_yield();
        r->counter = v + 1;
        if (fsa_lock_release(&l, err, sizeof err) != FSA_OK) {
            fprintf(stderr, "release: %s\n", err);
            ret = (void *)1;
            break;
        }
    }
    if (r->shared == NULL)
        fsa_lockmgr_close(m);
    return ret;
}

static void run_counter(counter_run_t *r)
{
    fsa_port_t *p = fsa_port_posix();
    fsa_thread_t *t[N_THREADS];
    assert_int_equal(pthread_barrier_init(&r->started, NULL, N_THREADS), 0);
    for (int i = 0; i < N_THREADS; i++)
        assert_fsa_ok(p->thread_create(p->ctx, &t[i], count_under_lock, r));
    for (int i = 0; i < N_THREADS; i++) {
        void *ret = NULL;
        assert_fsa_ok(p->thread_join(p->ctx, t[i], &ret));
        assert_null(ret);
    }
    assert_int_equal(pthread_barrier_destroy(&r->started), 0);
    assert_int_equal(r->counter, (long)N_THREADS * r->rounds);
}

static void test_lock_acquire__threads_sharing_a_manager_exclude_each_other(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *m = open_mgr(fx, fsa_port_posix(), "shared");
    counter_run_t r = {.fx = fx, .shared = m, .rounds = 30};
    run_counter(&r);
    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(m, &s, NULL, 0));
    assert_int_equal(s.acquired, N_THREADS * 30);
    assert_true(s.contended > 0);
    assert_int_equal(s.timed_out + s.expired + s.lost, 0);
    assert_int_equal(s.holders_total, 0);
    sqlite3 *db = open_db(fx);
    assert_latest_token(db, "JOB_WORKFLOW_UPDATE:J42", N_THREADS * 30);
    fsa_lockmgr_close(m); /* the last manager out writes the tokens back to the locks table */
    assert_int_equal(stored_token(db, "JOB_WORKFLOW_UPDATE:J42"), N_THREADS * 30);
    sqlite3_close(db);
}

static void test_lock_acquire__threads_with_own_managers_exclude_each_other(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_close(open_mgr(fx, fsa_port_posix(), NULL)); /* create the journal */
    counter_run_t r = {.fx = fx, .shared = NULL, .rounds = 15};
    run_counter(&r);
    sqlite3 *db = open_db(fx);
    assert_int_equal(stored_token(db, "JOB_WORKFLOW_UPDATE:J42"), N_THREADS * 15);
    sqlite3_close(db);
}

/* ---- other processes (fork, real clock) ---- */

/* A child ended by the parent's SIGKILL, not by an exit or a crash of its own; else the other
 * children (kids, n: none when NULL, 0) are killed and reaped before the test fails. */
static void killed_by_us(int status, const pid_t *kids, int n)
{
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        return;
    for (int i = 0; i < n; i++) {
        if (kids[i] > 0 && kill(kids[i], SIGKILL) == 0) /* never kill(-1): every process */
            (void)waitpid(kids[i], NULL, 0);
    }
    if (WIFEXITED(status))
        fail_msg("child exited with %d", WEXITSTATUS(status));
    fail_msg("child died of signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
}

/* Every forked child calls this first. A crash in it then kills it, for the parent to see:
 * cmocka's handlers, inherited through fork(), would report it as the test's failure and run the
 * rest of the tests in the child (its teardown removing the journal under the parent). */
static void child_crashes_kill(void)
{
    const int crashes[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGSYS};
    for (size_t i = 0; i < sizeof crashes / sizeof crashes[0]; i++)
        (void)signal(crashes[i], SIG_DFL);
}

/* The child's side of the holder-death test: takes the lock, reports its token, waits for the word
 * to die, and dies without releasing. Exit codes name what failed; no CMocka in the child. */
static int child_hold_and_die(const char *path, int report_fd, int go_fd)
{
    child_crashes_kill();
    fsa_lockmgr_opts_t o = {.label = "doomed-child"};
    fsa_lockmgr_t *m = NULL;
    if (fsa_lockmgr_open(fsa_port_posix(), path, &o, &m, NULL, 0) != FSA_OK)
        return 10;
    fsa_lock_t l;
    if (fsa_lock_acquire(m, FSA_LOCK_TICKET_ESCALATION, "T7", &l, NULL, 0) != FSA_OK)
        return 11;
    if (write(report_fd, &l.token, sizeof l.token) != (ssize_t)sizeof l.token)
        return 12;
    char go;
    if (read(go_fd, &go, 1) != 1)
        return 13;
    return 0; /* _exit(0) with the lock held and the manager open */
}

static void test_lock_acquire__dead_holder_is_taken_over(void **state)
{
    fixture_t *fx = *state;
    fsa_port_t *p = fsa_port_posix();
    /* Create the journal, and have no connection open across fork(). */
    fsa_lockmgr_close(open_mgr(fx, p, NULL));
    int report[2], go[2];
    assert_int_equal(pipe(report), 0);
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(report[0]);
        close(go[1]);
        _exit(child_hold_and_die(fx->path, report[1], go[0]));
    }
    close(report[1]);
    close(go[0]);
    int64_t child_token = 0;
    assert_int_equal(read(report[0], &child_token, sizeof child_token), sizeof child_token);
    assert_int_equal(child_token, 1);

    /* While the child lives, its lock is its own. */
    fsa_lockmgr_t *m = open_mgr(fx, p, "survivor");
    fsa_lock_config_t try_once = {"TICKET_ESCALATION", 15 * FSA_NS_PER_S, 0};
    fsa_lock_t l;
    char err[256];
    assert_int_equal(fsa_lock_acquire_cfg(m, &try_once, "T7", &l, err, sizeof err), FSA_EBUSY);
    char want[128];
    snprintf(want, sizeof want, "held by doomed-child (pid %ld, token 1)", (long)pid);
    assert_non_null(strstr(err, want));
    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(m, &s, NULL, 0));
    assert_int_equal(s.holders_total, 1);
    assert_true(s.holders[0].alive);
    assert_int_equal(s.holders[0].pid, pid);

    /* The child dies holding it. */
    assert_int_equal(write(go[1], "x", 1), 1);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    close(report[0]);
    close(go[1]);

    assert_fsa_ok(fsa_lockmgr_stats(m, &s, NULL, 0));
    assert_int_equal(s.holders_total, 1);
    assert_false(s.holders[0].alive);
    assert_true(s.holders[0].remaining_ns > 0); /* its lease has not run out: death alone */

    fsa_mono_t t0 = p->mono_now(p->ctx);
    assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_TICKET_ESCALATION, "T7", &l, err, sizeof err));
    assert_true(fsa_mono_diff_ns(p->mono_now(p->ctx), t0) < FSA_NS_PER_S); /* not 15 s */
    assert_int_equal(l.token, 2);
    assert_fsa_ok(fsa_lockmgr_stats(m, &s, NULL, 0));
    assert_int_equal(s.dead_takeovers, 1);
    assert_int_equal(s.expired, 0);
    assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    fsa_lockmgr_close(m);

    /* The next manager forgets the dead holder's row: nothing points at it any more. */
    m = open_mgr(fx, p, NULL);
    sqlite3 *db = open_db(fx);
    sqlite3_stmt *q = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT count(*) FROM lock_holders WHERE pid = ?1", -1, &q, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(q, 1, pid);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(q, 0), 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    fsa_lockmgr_close(m);
}

/* The child of the dead-holder tests below: once told to go (a byte on go_fd), takes
 * JOB_WORKFLOW_UPDATE:J9 twice (the first take runs a transaction, the second is a quiet one),
 * releases the second too unless `hold`, reports its last token, and waits for SIGKILL: an app
 * that crashes later, holding J9 or nothing. Exit codes name what failed. */
static int child_take_then_wait(const char *path, bool hold, int go_fd, int report_fd)
{
    child_crashes_kill();
    char go;
    if (read(go_fd, &go, 1) != 1)
        return 9;
    fsa_lockmgr_opts_t o = {.label = "app"};
    fsa_lockmgr_t *m = NULL;
    if (fsa_lockmgr_open(fsa_port_posix(), path, &o, &m, NULL, 0) != FSA_OK)
        return 10;
    fsa_lock_t l;
    for (int i = 0; i < 2; i++) {
        if (fsa_lock_acquire(m, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J9", &l, NULL, 0) != FSA_OK)
            return 11;
        if ((i == 0 || !hold) && fsa_lock_release(&l, NULL, 0) != FSA_OK)
            return 12;
    }
    if (write(report_fd, &l.token, sizeof l.token) != (ssize_t)sizeof l.token)
        return 13;
    for (;;)
        pause(); /* until the parent's SIGKILL */
}

/* Where the child of child_take_then_wait leaves J9: in the shared table's slot, with another
 * manager open all along (the generation lives on); in its row, as the last manager (the next one
 * starts a new generation from the locks table); in its row alone, the table being full. */
typedef enum dead_child_case { IN_SLOT, LAST_MANAGER, NO_ROOM, DEAD_CHILD_CASES } dead_child_case_t;

/* Forks child_take_then_wait, waits for its token and kills it; returns the token. For IN_SLOT and
 * NO_ROOM a manager opened before the child's (after the fork: no connection crosses it) stays
 * open (*survivor_out; NULL for LAST_MANAGER); for NO_ROOM it fills the table with other keys
 * first. */
static int64_t run_child_then_kill(fixture_t *fx, bool hold, dead_child_case_t c,
                                   fsa_lockmgr_t **survivor_out, pid_t *pid_out)
{
    fsa_lockmgr_close(open_mgr(fx, fsa_port_posix(), NULL)); /* create the journal */
    int report[2], go[2];
    assert_int_equal(pipe(report), 0);
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(report[0]);
        close(go[1]);
        _exit(child_take_then_wait(fx->path, hold, go[0], report[1]));
    }
    close(report[1]);
    close(go[0]);
    *survivor_out = c != LAST_MANAGER ? open_mgr(fx, fx->sp, "survivor") : NULL;
    for (int i = 0; c == NO_ROOM && i < 1024; i++) { /* the table's slots (lock.c) */
        char res[16];
        fsa_lock_t l;
        snprintf(res, sizeof res, "fill%d", i);
        assert_fsa_ok(fsa_lock_acquire(*survivor_out, FSA_LOCK_SYNC, res, &l, NULL, 0));
        assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    }
    assert_int_equal(write(go[1], "x", 1), 1);
    int64_t token = 0;
    assert_int_equal(read(report[0], &token, sizeof token), sizeof token);
    close(report[0]);
    close(go[1]);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    killed_by_us(status, NULL, 0);
    *pid_out = pid;
    return token;
}

/* An app released J9 and crashed later: J9 is not held by anyone, so the statistics list nothing,
 * and taking it is an ordinary acquisition, not a takeover of a dead holder's lock. The same
 * wherever J9 was kept (dead_child_case_t). */
static void test_lock_stats__released_then_dead_holds_nothing(void **state)
{
    fixture_t *fx = *state;
    for (int pass = 0; pass < DEAD_CHILD_CASES; pass++) {
        fsa_lockmgr_t *survivor = NULL;
        pid_t pid = 0;
        int64_t token = run_child_then_kill(fx, false, (dead_child_case_t)pass, &survivor, &pid);
        fx->log[0] = '\0';
        fsa_lockmgr_t *m = open_mgr(fx, fx->sp, "next");
        fsa_lock_stats_t s;
        assert_fsa_ok(fsa_lockmgr_stats(m, &s, NULL, 0));
        printf("pass %d: holders_total %zu (%s alive=%d)\n", pass, s.holders_total,
               s.n_holders > 0 ? s.holders[0].key : "-", s.n_holders > 0 ? s.holders[0].alive : -1);
        assert_int_equal(s.holders_total, 0);
        assert_int_equal(s.n_holders, 0);

        fsa_lock_t l;
        assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J9", &l, NULL, 0));
        assert_true(l.token > token);
        assert_fsa_ok(fsa_lockmgr_stats(m, &s, NULL, 0));
        printf("pass %d: dead_takeovers %llu expired %llu\n", pass,
               (unsigned long long)s.dead_takeovers, (unsigned long long)s.expired);
        assert_int_equal(s.dead_takeovers, 0);
        assert_int_equal(s.expired, 0);
        assert_int_equal(s.contended, 0);
        assert_null(strstr(fx->log, "took over"));
        assert_int_equal(s.holders_total, 1); /* ours now */
        assert_true(s.holders[0].alive);
        assert_int_equal(s.holders[0].holder_id, fsa_lockmgr_holder_id(m));
        assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
        assert_fsa_ok(fsa_lockmgr_stats(m, &s, NULL, 0));
        assert_int_equal(s.holders_total, 0);
        fsa_lockmgr_close(m);
        fsa_lockmgr_close(survivor);
    }
}

/* The control: an app that crashed holding J9 still holds it as far as anyone can tell: listed,
 * dead, until the next acquirer takes it over at once, which counts and logs a dead holder's
 * takeover. Every way, as above. */
static void test_lock_stats__dead_while_holding_is_listed_until_taken_over(void **state)
{
    fixture_t *fx = *state;
    for (int pass = 0; pass < DEAD_CHILD_CASES; pass++) {
        fsa_lockmgr_t *survivor = NULL;
        pid_t pid = 0;
        int64_t token = run_child_then_kill(fx, true, (dead_child_case_t)pass, &survivor, &pid);
        fx->log[0] = '\0';
        fsa_lockmgr_t *m = open_mgr(fx, fx->sp, "next");
        fsa_lock_stats_t s;
        assert_fsa_ok(fsa_lockmgr_stats(m, &s, NULL, 0));
        assert_int_equal(s.holders_total, 1);
        assert_string_equal(s.holders[0].key, "JOB_WORKFLOW_UPDATE:J9");
        assert_string_equal(s.holders[0].label, "app");
        assert_int_equal(s.holders[0].pid, pid);
        assert_false(s.holders[0].alive);
        if (pass != LAST_MANAGER)
            assert_int_equal(s.holders[0].token, token);

        fsa_lock_t l;
        assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J9", &l, NULL, 0));
        assert_true(l.token > token);
        assert_fsa_ok(fsa_lockmgr_stats(m, &s, NULL, 0));
        assert_int_equal(s.dead_takeovers, 1);
        assert_int_equal(s.expired, 0);
        assert_non_null(strstr(fx->log, "from app (holder died)"));
        assert_int_equal(s.holders_total, 1);
        assert_true(s.holders[0].alive);
        assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
        fsa_lockmgr_close(m);
        fsa_lockmgr_close(survivor);
    }
}

#define N_PROCS 4
#define PROC_ROUNDS 25

/* One of the processes that count in a file under the lock. */
static int child_count_in_file(const char *path, const char *counter_path)
{
    child_crashes_kill();
    fsa_lockmgr_opts_t o = {.label = "counter"};
    fsa_lockmgr_t *m = NULL;
    if (fsa_lockmgr_open(fsa_port_posix(), path, &o, &m, NULL, 0) != FSA_OK)
        return 10;
    int fd = open(counter_path, O_RDWR);
    if (fd < 0)
        return 11;
    int rc = 0;
    for (int i = 0; i < PROC_ROUNDS && rc == 0; i++) {
        fsa_lock_t l;
        char err[256];
        fsa_status_t st =
            fsa_lock_acquire(m, FSA_LOCK_ATTENDANCE_UPDATE, "shared-file", &l, err, sizeof err);
        if (st != FSA_OK) {
            fprintf(stderr, "child %ld: %s\n", (long)getpid(), err);
            rc = 12;
            break;
        }
        long v = 0;
        if (pread(fd, &v, sizeof v, 0) != (ssize_t)sizeof v)
            rc = 13;
        sched_yield();
        v++;
        if (pwrite(fd, &v, sizeof v, 0) != (ssize_t)sizeof v)
            rc = 14;
        if (fsa_lock_release(&l, NULL, 0) != FSA_OK)
            rc = 15;
    }
    close(fd);
    fsa_lockmgr_close(m);
    return rc;
}

static void test_lock_acquire__processes_exclude_each_other(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_close(open_mgr(fx, fsa_port_posix(), NULL));
    char counter_path[160];
    snprintf(counter_path, sizeof counter_path, "%s/counter", fx->dir);
    int fd = open(counter_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    long zero = 0;
    assert_int_equal(pwrite(fd, &zero, sizeof zero, 0), sizeof zero);

    pid_t pids[N_PROCS];
    for (int i = 0; i < N_PROCS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0)
            _exit(child_count_in_file(fx->path, counter_path));
    }
    for (int i = 0; i < N_PROCS; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    long v = -1;
    assert_int_equal(pread(fd, &v, sizeof v, 0), sizeof v);
    close(fd);
    assert_int_equal(v, N_PROCS * PROC_ROUNDS);
    sqlite3 *db = open_db(fx);
    assert_int_equal(stored_token(db, "ATTENDANCE_UPDATE:shared-file"), N_PROCS * PROC_ROUNDS);
    sqlite3_close(db);
}

/* ---- statistics ---- */

static void test_lockmgr_stats__counts_times_holders_and_json(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *a = open_mgr(fx, fx->sp, "fieldsync-run");
    fsa_lockmgr_t *b = open_mgr(fx, fx->sp, "other");
    fsa_lock_t l1, l2, lb;

    /* a: holds X for 2 s, then Y for 6 s, then takes "q\"uote" and keeps it. */
    assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_ATTENDANCE_UPDATE, "X", &l1, NULL, 0));
    fsa_sim_advance(fx->sim, 2 * FSA_NS_PER_S);
    assert_fsa_ok(fsa_lock_release(&l1, NULL, 0));
    assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_ATTENDANCE_UPDATE, "Y", &l1, NULL, 0));
    fsa_sim_advance(fx->sim, 6 * FSA_NS_PER_S);
    assert_fsa_ok(fsa_lock_release(&l1, NULL, 0));
    assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_JSON_FIELD_UPDATE, "q\"uote", &l2, NULL, 0));

    /* b: one wait that times out (5 s) against a's lock. */
    assert_int_equal(fsa_lock_acquire(b, FSA_LOCK_JSON_FIELD_UPDATE, "q\"uote", &lb, NULL, 0),
                     FSA_ELOCKTIMEOUT);

    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(a, &s, NULL, 0));
    assert_int_equal(s.acquired, 3);
    assert_int_equal(s.contended, 0);
    assert_int_equal(s.wait_ns_mean, 0);
    assert_int_equal(s.wait_ns_max, 0);
    assert_int_equal(s.hold_ns_mean, 4 * FSA_NS_PER_S);
    assert_int_equal(s.hold_ns_max, 6 * FSA_NS_PER_S);
    assert_int_equal(s.holders_total, 1);
    assert_int_equal(s.n_holders, 1);
    const fsa_lock_holder_info_t *h = &s.holders[0];
    assert_string_equal(h->key, "JSON_FIELD_UPDATE:q\"uote");
    assert_int_equal(h->token, 1);
    assert_string_equal(h->label, "fieldsync-run");
    assert_int_equal(h->pid, getpid());
    assert_int_equal(h->holder_id, fsa_lockmgr_holder_id(a));
    assert_int_equal(h->remaining_ns, 5 * FSA_NS_PER_S); /* 10 s lease, 5 s spent by b */
    assert_true(h->alive);

    fsa_lock_stats_t sb;
    assert_fsa_ok(fsa_lockmgr_stats(b, &sb, NULL, 0));
    assert_int_equal(sb.timed_out, 1);
    assert_int_equal(sb.contended, 1);
    assert_int_equal(sb.holders_total, 1); /* holders are the device's, the same for both */

    char json[2048];
    size_t needed = 0;
    assert_fsa_ok(fsa_lock_stats_json(&s, json, sizeof json, &needed));
    assert_int_equal(needed, strlen(json));
    char want[512];
    snprintf(want, sizeof want,
             "{\"acquired\":3,\"contended\":0,\"timed_out\":0,\"busy\":0,\"expired\":0,"
             "\"dead_takeovers\":0,\"lost\":0,\"wait_ns\":{\"mean\":0,\"max\":0},"
             "\"hold_ns\":{\"mean\":4000000000,\"max\":6000000000},\"holders_total\":1,"
             "\"holders\":[{\"key\":\"JSON_FIELD_UPDATE:q\\\"uote\",\"token\":1,"
             "\"label\":\"fieldsync-run\",\"pid\":%ld,\"holder_id\":%lld,"
             "\"remaining_ns\":5000000000,\"alive\":true}]}",
             (long)getpid(), (long long)fsa_lockmgr_holder_id(a));
    assert_string_equal(json, want);

    /* Too small a buffer: refused, told how much is needed, left empty. */
    char small[64];
    size_t need2 = 0;
    assert_int_equal(fsa_lock_stats_json(&s, small, sizeof small, &need2), FSA_ETOOLARGE);
    assert_int_equal(need2, needed);
    assert_string_equal(small, "");
    char exact[2048];
    assert_fsa_ok(fsa_lock_stats_json(&s, exact, needed + 1, NULL));
    assert_int_equal(fsa_lock_stats_json(&s, exact, needed, NULL), FSA_ETOOLARGE);

    assert_fsa_ok(fsa_lock_release(&l2, NULL, 0));
    fsa_lockmgr_close(a);
    fsa_lockmgr_close(b);
}

static void test_lockmgr_stats__lists_at_most_the_maximum(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *m = open_mgr(fx, fx->sp, NULL);
    enum { N = FSA_LOCK_STATS_HOLDERS_MAX + 3 };
    fsa_lock_t l[N];
    for (int i = 0; i < N; i++) {
        char res[16];
        snprintf(res, sizeof res, "r%02d", i);
        assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_SYNC, res, &l[i], NULL, 0));
    }
    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(m, &s, NULL, 0));
    assert_int_equal(s.holders_total, N);
    assert_int_equal(s.n_holders, FSA_LOCK_STATS_HOLDERS_MAX);
    assert_string_equal(s.holders[0].key, "SYNC:r00"); /* sorted by key */
    char *json = fsa_malloc(16384);
    assert_non_null(json);
    assert_fsa_ok(fsa_lock_stats_json(&s, json, 16384, NULL));
    assert_non_null(strstr(json, "\"holders_total\":19"));
    assert_null(strstr(json, "SYNC:r16")); /* beyond the listed maximum */
    fsa_free(json);
    for (int i = 0; i < N; i++)
        assert_fsa_ok(fsa_lock_release(&l[i], NULL, 0));
    fsa_lockmgr_close(m);
}

/* ---- the shared token table ---- */

/* Once a key is in the shared table, its uncontended pairs write no database page: the latest
 * token is in the table, which the fence check reads; the locks row, its durable copy, falls at
 * most FSA__LOCK_SYNC_EVERY tokens behind, and is exact again once the last manager closes. */
static void test_lock_acquire__uncontended_pairs_write_no_page(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *m = open_mgr(fx, fx->sp, "quiet");
    sqlite3 *db = open_db(fx);
    const char *key = "JOB_WORKFLOW_UPDATE:J7";
    fsa_lock_t l;
    assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J7", &l, NULL, 0));
    assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    int64_t v0 = data_version(db);
    for (int i = 2; i <= 100; i++) {
        assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J7", &l, NULL, 0));
        assert_int_equal(l.token, i);
        assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    }
    assert_int_equal(data_version(db), v0); /* 99 pairs, not one commit */
    assert_int_equal(stored_token(db, key), 1);
    assert_latest_token(db, key, 100);

    /* The row keeps up within FSA__LOCK_SYNC_EVERY tokens. */
    int64_t n = 3 * FSA__LOCK_SYNC_EVERY;
    for (int64_t i = 101; i <= n; i++) {
        assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_JOB_WORKFLOW_UPDATE, "J7", &l, NULL, 0));
        assert_int_equal(l.token, i);
        assert_true(l.token - stored_token(db, key) <= FSA__LOCK_SYNC_EVERY);
        assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    }
    assert_true(data_version(db) > v0);
    assert_latest_token(db, key, n);
    fsa_lock_stats_t s;
    assert_fsa_ok(fsa_lockmgr_stats(m, &s, NULL, 0));
    assert_int_equal(s.acquired, n);
    assert_int_equal(s.contended + s.expired + s.dead_takeovers + s.lost, 0);
    fsa_lockmgr_close(m);
    assert_int_equal(stored_token(db, key), n); /* written back */
    assert_latest_token(db, key, n);
    sqlite3_close(db);
}

/* A slot left half-changed by a process that died in it (seq odd): a writer that died after its
 * commit leaves the row ahead of the slot. The fence check and the next acquisition both go by
 * the higher of the two, and the acquisition mends the slot. */
static void test_lock_acquire__torn_slot_goes_by_the_row(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *a = open_mgr(fx, fx->sp, "a");
    fsa_lockmgr_t *b = open_mgr(fx, fx->sp, "b");
    sqlite3 *db = open_db(fx);
    const char *key = "TICKET_ESCALATION:T3";
    fsa_lock_t l;
    for (int i = 0; i < 3; i++) {
        assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_TICKET_ESCALATION, "T3", &l, NULL, 0));
        assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    }
    assert_int_equal(l.token, 3);
    /* The dead writer's commit (token 10) went through; its slot was left odd at 3. */
    assert_fsa_ok(fsa__db_exec(db, "UPDATE locks SET token = 10 WHERE key = 'TICKET_ESCALATION:T3'",
                               NULL, 0));
    assert_fsa_ok(fsa__lock_table_tear(a, key, 3));
    assert_latest_token(db, key, 10);
    assert_fsa_ok(fsa_lock_acquire(b, FSA_LOCK_TICKET_ESCALATION, "T3", &l, NULL, 0));
    assert_int_equal(l.token, 11);
    assert_latest_token(db, key, 11);
    assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    /* Mended: the next pair is a quiet one again. */
    int64_t v0 = data_version(db);
    assert_fsa_ok(fsa_lock_acquire(b, FSA_LOCK_TICKET_ESCALATION, "T3", &l, NULL, 0));
    assert_int_equal(l.token, 12);
    assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    assert_int_equal(data_version(db), v0);
    assert_int_equal(fsa__lock_table_tear(a, "TICKET_ESCALATION:nope", 1), FSA_ENOTFOUND);
    assert_int_equal(fsa__lock_table_tear(NULL, key, 1), FSA_EINVAL);
    sqlite3_close(db);
    fsa_lockmgr_close(a);
    fsa_lockmgr_close(b);
}

/* The child of the tests below: takes and releases key `rounds` times, each token written to
 * report_fd while the lock is held (so the pipe holds the tokens in the order they were issued),
 * then waits for SIGKILL if wait_kill. Exit codes name what failed. */
static int child_take_and_report(const char *path, const char *resource, int rounds, int report_fd,
                                 bool wait_kill)
{
    child_crashes_kill();
    fsa_lockmgr_opts_t o = {.label = "reporter"};
    fsa_lockmgr_t *m = NULL;
    if (fsa_lockmgr_open(fsa_port_posix(), path, &o, &m, NULL, 0) != FSA_OK)
        return 10;
    for (int i = 0; i < rounds || rounds < 0; i++) {
        fsa_lock_t l;
        char err[256];
        if (fsa_lock_acquire(m, FSA_LOCK_ATTENDANCE_UPDATE, resource, &l, err, sizeof err) !=
            FSA_OK) {
            fprintf(stderr, "child %ld: %s\n", (long)getpid(), err);
            return 11;
        }
        if (write(report_fd, &l.token, sizeof l.token) != (ssize_t)sizeof l.token)
            return 12;
        if (fsa_lock_release(&l, NULL, 0) != FSA_OK)
            return 13;
    }
    if (wait_kill) {
        for (;;)
            pause(); /* until the parent's SIGKILL */
    }
    fsa_lockmgr_close(m);
    return 0;
}

static void close_in_the_gap(void *arg)
{
    fsa_lockmgr_t **m = arg;
    fsa_lockmgr_close(*m);
    *m = NULL;
}

/* A manager opens while the last one on the journal closes: its try for the table's attach byte
 * alone finds the byte taken, the last one ends the generation and lets the byte go, and its
 * shared try then finds nobody (seen in the crash loop: "is not the journal's live one ... was a
 * file replaced?"). The hook closes the last manager in exactly that gap. The open tries again
 * and starts a new generation; its tokens go on above the old ones. */
static void test_lockmgr_open__while_the_last_one_closes(void **state)
{
    fixture_t *fx = *state;
    fsa_port_t *p = fsa_port_posix();
    fsa_lockmgr_t *a = open_mgr(fx, p, "last");
    fsa_lock_t l;
    assert_fsa_ok(fsa_lock_acquire(a, FSA_LOCK_ATTENDANCE_UPDATE, "A1", &l, NULL, 0));
    int64_t old = l.token;
    assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    fsa__lock_attach_gap_hook(close_in_the_gap, &a);
    fx->log[0] = '\0';
    fsa_lockmgr_t *b = open_mgr(fx, fx->sp, "next");
    fsa__lock_attach_gap_hook(NULL, NULL);
    assert_null(a); /* the hook ran: the last one closed in the gap */
    assert_null(strstr(fx->log, "ended without closing")); /* its write-back stood */
    assert_fsa_ok(fsa_lock_acquire(b, FSA_LOCK_ATTENDANCE_UPDATE, "A1", &l, NULL, 0));
    assert_true(l.token > old);
    assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    /* and the manager after it shares b's generation */
    fsa_lockmgr_t *c = open_mgr(fx, p, "third");
    assert_fsa_ok(fsa_lock_acquire(c, FSA_LOCK_ATTENDANCE_UPDATE, "A1", &l, NULL, 0));
    assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    fsa_lockmgr_close(c);
    fsa_lockmgr_close(b);
}

/* A table that stays wrong is no race: a manager still attached to a .locks file that is not
 * the journal's (here the journal's generation moved, as when the journal file is replaced) keeps
 * the next one from ever being alone, and its open says so after its tries. */
static void test_lockmgr_open__a_table_that_stays_wrong_is_refused(void **state)
{
    fixture_t *fx = *state;
    fsa_lockmgr_t *a = open_mgr(fx, fsa_port_posix(), "stays");
    sqlite3 *db = open_db(fx);
    assert_int_equal(sqlite3_exec(db, "UPDATE sync_state SET v = v + 5 WHERE k = 'lock_table'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_changes(db), 1);
    sqlite3_close(db);
    fsa_lockmgr_opts_t o = {.label = "next", .create = true};
    fsa_lockmgr_t *b = NULL;
    char err[256];
    assert_int_equal(fsa_lockmgr_open(fx->sp, fx->path, &o, &b, err, sizeof err), FSA_EIO);
    assert_null(b);
    assert_non_null(strstr(err, "is not the journal's live one"));
    fsa_lockmgr_close(a);
}

/* The last manager on the journal dies (SIGKILL) with tokens issued that its row never saw; the
 * next manager starts a new generation of the table, and its first token is above them all. The
 * same when the .locks file itself is gone (re-created). */
static void test_lock_acquire__tokens_increase_after_the_last_manager_dies(void **state)
{
    fixture_t *fx = *state;
    fsa_port_t *p = fsa_port_posix();
    fsa_lockmgr_close(open_mgr(fx, p, NULL)); /* create the journal */
    char locks[160];
    snprintf(locks, sizeof locks, "%s.locks", fx->path);
    for (int pass = 0; pass < 2; pass++) {
        int report[2];
        assert_int_equal(pipe(report), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(report[0]);
            _exit(child_take_and_report(fx->path, "A9", 50, report[1], true));
        }
        close(report[1]);
        int64_t last = 0, t = 0;
        for (int i = 0; i < 50; i++) {
            assert_int_equal(read(report[0], &t, sizeof t), sizeof t);
            assert_true(t > last);
            last = t;
        }
        close(report[0]);
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        killed_by_us(status, NULL, 0);
        if (pass == 1)
            assert_int_equal(unlink(locks), 0); /* and the table goes with its file */

        sqlite3 *db = open_db(fx);
        assert_true(stored_token(db, "ATTENDANCE_UPDATE:A9") < last); /* the row lags */
        fx->log[0] = '\0';
        fsa_lockmgr_t *m = open_mgr(fx, fx->sp, "next");
        assert_non_null(strstr(fx->log, "ended without closing"));
        fsa_lock_t l;
        assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_ATTENDANCE_UPDATE, "A9", &l, NULL, 0));
        assert_true(l.token > last);
        assert_latest_token(db, "ATTENDANCE_UPDATE:A9", l.token);
        assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
        fsa_lockmgr_close(m);
        assert_int_equal(stored_token(db, "ATTENDANCE_UPDATE:A9"), l.token);
        sqlite3_close(db);
    }

    /* A clean close writes every token back: a new table (its file gone too) goes on exactly. */
    assert_int_equal(unlink(locks), 0);
    fx->log[0] = '\0';
    fsa_lockmgr_t *m = open_mgr(fx, p, NULL);
    assert_null(strstr(fx->log, "ended without closing"));
    sqlite3 *db = open_db(fx);
    int64_t before = stored_token(db, "ATTENDANCE_UPDATE:A9");
    fsa_lock_t l;
    assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_ATTENDANCE_UPDATE, "A9", &l, NULL, 0));
    assert_int_equal(l.token, before + 1);
    assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    sqlite3_close(db);
    fsa_lockmgr_close(m);
}

#define KILL_CHILDREN 3
#define KILL_ROUNDS 16

/* Processes take turns on one key and are SIGKILLed at random moments (mid-acquire, holding,
 * mid-release, all of them at once at the end); every token any of them reported, in the order
 * they were issued, is above the one before, and the next manager's is above them all. */
static void test_lock_acquire__tokens_increase_across_kills(void **state)
{
    fixture_t *fx = *state;
    fsa_port_t *p = fsa_port_posix();
    fsa_lockmgr_close(open_mgr(fx, p, NULL));
    uint64_t seed = (uint64_t)getpid();
    int report[2];
    assert_int_equal(pipe(report), 0);
    pid_t kids[KILL_CHILDREN];
    for (int i = 0; i < KILL_CHILDREN; i++) {
        kids[i] = fork();
        assert_true(kids[i] >= 0);
        if (kids[i] == 0) {
            close(report[0]);
            _exit(child_take_and_report(fx->path, "K", -1, report[1], false));
        }
    }
    int64_t last = 0, t = 0;
    long seen = 0;
    for (int round = 0; round < KILL_ROUNDS; round++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        int reads = 5 + (int)((seed >> 33) % 60);
        for (int i = 0; i < reads; i++, seen++) {
            assert_int_equal(read(report[0], &t, sizeof t), sizeof t);
            if (t <= last)
                fail_msg("token %lld after %lld (round %d)", (long long)t, (long long)last, round);
            last = t;
        }
        int victim = (int)((seed >> 20) % KILL_CHILDREN);
        assert_int_equal(kill(kids[victim], SIGKILL), 0);
        int status = 0;
        assert_int_equal(waitpid(kids[victim], &status, 0), kids[victim]);
        kids[victim] = -1;
        killed_by_us(status, kids, KILL_CHILDREN);
        kids[victim] = fork();
        assert_true(kids[victim] >= 0);
        if (kids[victim] == 0) {
            close(report[0]);
            _exit(child_take_and_report(fx->path, "K", -1, report[1], false));
        }
    }
    for (int i = 0; i < KILL_CHILDREN; i++)
        assert_int_equal(kill(kids[i], SIGKILL), 0);
    for (int i = 0; i < KILL_CHILDREN; i++) {
        int status = 0;
        assert_int_equal(waitpid(kids[i], &status, 0), kids[i]);
        killed_by_us(status, NULL, 0); /* all were killed above */
    }
    close(report[1]);
    /* What they reported before dying, in order too. */
    while (read(report[0], &t, sizeof t) == (ssize_t)sizeof t) {
        assert_true(t > last);
        last = t;
        seen++;
    }
    close(report[0]);
    assert_true(seen >= KILL_ROUNDS * 5);
    fsa_lockmgr_t *m = open_mgr(fx, p, "after");
    fsa_lock_t l;
    assert_fsa_ok(fsa_lock_acquire(m, FSA_LOCK_ATTENDANCE_UPDATE, "K", &l, NULL, 0));
    assert_true(l.token > last);
    assert_fsa_ok(fsa_lock_release(&l, NULL, 0));
    fsa_lockmgr_close(m);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_key__forms_name_colon_resource),
        cmocka_unit_test(test_lock_key__invalid_params),
        cmocka_unit_test(test_lock_key__length_limit_is_exact),
        cmocka_unit_test(test_lock_config__platform_values),
        T(test_lockmgr_open__invalid_params),
        T(test_lock_acquire__invalid_params),
        T(test_lock_acquire__and_release),
        T(test_lock_acquire__tokens_increase_and_persist_across_reopen),
        T(test_lock_release__writes_nothing_and_frees_the_lock),
        T(test_lock_stats__holder_without_row_is_not_listed),
        T(test_lock_acquire__many_keys_again),
        T(test_lockmgr_close__releases_held_locks),
        T(test_lock_acquire__wait_timeout_names_holder),
        T(test_lock_acquire__sync_tries_once),
        T(test_lock_acquire__overrun_lease_is_taken_over_and_fenced),
        T(test_lock_acquire__waiter_takes_over_when_lease_runs_out),
        T(test_lock_acquire__symlinked_journal_shares_the_lock),
        T(test_lock_release__lost_within_one_manager_frees_nothing),
        T(test_lock_release__overrun_not_taken_over_is_still_ours),
        T(test_lock_renew__extends_lease_until_lost),
        T(test_lock_fence_check__refuses_what_was_not_issued),
        T(test_lock_acquire__threads_sharing_a_manager_exclude_each_other),
        T(test_lock_acquire__threads_with_own_managers_exclude_each_other),
        T(test_lock_acquire__dead_holder_is_taken_over),
        T(test_lock_stats__released_then_dead_holds_nothing),
        T(test_lock_stats__dead_while_holding_is_listed_until_taken_over),
        T(test_lock_acquire__processes_exclude_each_other),
        T(test_lockmgr_stats__counts_times_holders_and_json),
        T(test_lockmgr_stats__lists_at_most_the_maximum),
        T(test_lock_acquire__uncontended_pairs_write_no_page),
        T(test_lock_acquire__torn_slot_goes_by_the_row),
        T(test_lockmgr_open__while_the_last_one_closes),
        T(test_lockmgr_open__a_table_that_stays_wrong_is_refused),
        T(test_lock_acquire__tokens_increase_after_the_last_manager_dies),
        T(test_lock_acquire__tokens_increase_across_kills),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
