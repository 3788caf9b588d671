/* Tests for storage/db.c: opening a journal (mode 0600, pragmas, schema version) and the mapping
 * of SQLite's result codes. */
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "tests/test_util.h"

typedef struct {
    char dir[64];
    char path[128]; /* dir/j.db */
    char err[256];
} fx_t;

static int setup(void **state)
{
    fx_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/fsa-db-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof f->path, "%s/j.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    static const char *const sfx[] = {"", "-wal", "-shm", ".users", ".locks"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        char p[160];
        snprintf(p, sizeof p, "%s%s", f->path, sfx[i]);
        (void)unlink(p);
    }
    int rc = rmdir(f->dir);
    fsa_free(f);
    return rc == 0 ? 0 : -1;
}

static int64_t pragma(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static fsa_status_t open_db(fx_t *f, const fsa_db_opts_t *o, sqlite3 **db, fsa_flock_t **users)
{
    f->err[0] = '\0';
    return fsa__db_open(fsa_port_posix(), f->path, o, db, users, f->err, sizeof f->err);
}

static void test_fsa__db_open__invalid_params(void **state)
{
    fx_t *f = *state;
    fsa_db_opts_t o = {.create = true};
    sqlite3 *db = (sqlite3 *)f;
    fsa_flock_t *users = (fsa_flock_t *)f;
    char err[64];
    assert_int_equal(fsa__db_open(fsa_port_posix(), NULL, &o, &db, &users, err, sizeof err),
                     FSA_EINVAL);
    assert_int_equal(fsa__db_open(fsa_port_posix(), f->path, &o, NULL, &users, err, sizeof err),
                     FSA_EINVAL);
    assert_int_equal(access(f->path, F_OK), -1); /* nothing was created */
}

static void test_fsa__db_open__missing_without_create(void **state)
{
    fx_t *f = *state;
    fsa_db_opts_t o = {.create = false};
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    assert_int_equal(open_db(f, &o, &db, &users), FSA_ENOTFOUND);
    assert_null(db);
    assert_null(users);
    assert_true(strlen(f->err) > 0);
    assert_int_equal(access(f->path, F_OK), -1);
}

/* A new journal: mode 0600, WAL, synchronous FULL, foreign keys, the current schema version. */
static void test_fsa__db_open__creates_a_private_wal_journal(void **state)
{
    fx_t *f = *state;
    fsa_db_opts_t o = {.create = true};
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    assert_fsa_ok(open_db(f, &o, &db, &users));
    assert_non_null(db);
    assert_non_null(users);
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    assert_int_equal(pragma(db, "PRAGMA synchronous"), 2); /* FULL */
    assert_int_equal(pragma(db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(pragma(db, "PRAGMA user_version"), FSA_SCHEMA_VERSION);
    fsa__db_close(fsa_port_posix(), db, users);
    /* opened again, without create: the same journal */
    o.create = false;
    o.sync_normal = true;
    assert_fsa_ok(open_db(f, &o, &db, &users));
    assert_int_equal(pragma(db, "PRAGMA synchronous"), 1); /* NORMAL */
    assert_int_equal(pragma(db, "PRAGMA user_version"), FSA_SCHEMA_VERSION);
    fsa__db_close(fsa_port_posix(), db, users);
    fsa__db_close(fsa_port_posix(), NULL, NULL);
}

/* A journal file that others can read is made private on open. */
static void test_fsa__db_open__existing_file_made_private(void **state)
{
    fx_t *f = *state;
    int fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(chmod(f->path, 0644), 0);
    fsa_db_opts_t o = {.create = false};
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    assert_fsa_ok(open_db(f, &o, &db, &users));
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    fsa__db_close(fsa_port_posix(), db, users);
}

static void test_fsa__db_open__newer_schema_refused(void **state)
{
    fx_t *f = *state;
    fsa_db_opts_t o = {.create = true};
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    assert_fsa_ok(open_db(f, &o, &db, &users));
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", FSA_SCHEMA_VERSION + 1);
    assert_fsa_ok(fsa__db_exec(db, sql, NULL, 0));
    fsa__db_close(fsa_port_posix(), db, users);
    assert_int_equal(open_db(f, &o, &db, &users), FSA_ESCHEMA);
    assert_null(db);
    assert_null(users);
    assert_true(strlen(f->err) > 0);
}

static void test_fsa__db_open__not_a_database(void **state)
{
    fx_t *f = *state;
    int fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    char junk[4096];
    memset(junk, 'J', sizeof junk);
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    fsa_db_opts_t o = {.create = false};
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    assert_int_equal(open_db(f, &o, &db, &users), FSA_ECORRUPT);
    assert_null(db);
    assert_null(users);
    assert_true(strlen(f->err) > 0);
}

static void test_fsa__db_exec__error_is_told(void **state)
{
    fx_t *f = *state;
    fsa_db_opts_t o = {.create = true};
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    assert_fsa_ok(open_db(f, &o, &db, &users));
    char err[128] = "";
    assert_fsa_ok(fsa__db_exec(db, "CREATE TABLE t(x INTEGER PRIMARY KEY)", err, sizeof err));
    assert_fsa_ok(fsa__db_exec(db, "INSERT INTO t VALUES (1)", err, sizeof err));
    assert_int_equal(fsa__db_exec(db, "INSERT INTO t VALUES (1)", err, sizeof err), FSA_EEXISTS);
    assert_non_null(strstr(err, "UNIQUE"));
    err[0] = '\0';
    assert_int_equal(fsa__db_exec(db, "SELEKT 1", err, sizeof err), FSA_EIO);
    assert_true(strlen(err) > 0);
    assert_int_equal(fsa__db_exec(db, "SELEKT 1", NULL, 0), FSA_EIO);
    fsa__db_close(fsa_port_posix(), db, users);
}

static void test_fsa__db_status__table(void **state)
{
    (void)state;
    static const struct {
        int rc;
        fsa_status_t want;
    } rows[] = {
        {SQLITE_OK, FSA_OK},
        {SQLITE_ROW, FSA_OK},
        {SQLITE_DONE, FSA_OK},
        {SQLITE_FULL, FSA_EFULL},
        {SQLITE_BUSY, FSA_EBUSY},
        {SQLITE_BUSY_SNAPSHOT, FSA_EBUSY}, /* extended codes map as their primary */
        {SQLITE_LOCKED, FSA_EBUSY},
        {SQLITE_CORRUPT, FSA_ECORRUPT},
        {SQLITE_NOTADB, FSA_ECORRUPT},
        {SQLITE_NOMEM, FSA_ENOMEM},
        {SQLITE_CONSTRAINT_UNIQUE, FSA_EEXISTS},
        {SQLITE_IOERR_FSYNC, FSA_EIO},
        {SQLITE_CANTOPEN, FSA_EIO},
        {SQLITE_ERROR, FSA_EIO},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (fsa__db_status(rows[i].rc) != rows[i].want)
            fail_msg("SQLite code %d: %s, expected %s", rows[i].rc,
                     fsa_status_str(fsa__db_status(rows[i].rc)), fsa_status_str(rows[i].want));
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_fsa__db_open__invalid_params),
        T(test_fsa__db_open__missing_without_create),
        T(test_fsa__db_open__creates_a_private_wal_journal),
        T(test_fsa__db_open__existing_file_made_private),
        T(test_fsa__db_open__newer_schema_refused),
        T(test_fsa__db_open__not_a_database),
        T(test_fsa__db_exec__error_is_told),
        T(test_fsa__db_status__table),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
