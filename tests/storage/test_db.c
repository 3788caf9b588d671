/* Tests for storage/db.c: opening a journal (mode 0600, pragmas, schema version) and the mapping
 * of SQLite's result codes. */
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/state_keys.h"
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
    fsa__db_checkpointer_hold(false); /* a test that failed holding it leaves none held */
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
    /* No mutex of SQLite's own: the owner serialises its use (db.h). */
    assert_null(sqlite3_db_mutex(db));
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

static mode_t mode_of(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return sb.st_mode & 07777;
}

/* 0600 under any umask, -wal and -shm too; a -wal widened while open is narrowed by the next open.
 */
static void test_fsa__db_open__private_under_wide_umask(void **state)
{
    fx_t *f = *state;
    fsa_db_opts_t o = {.create = true};
    sqlite3 *db = NULL, *db2 = NULL;
    fsa_flock_t *users = NULL, *users2 = NULL;
    mode_t old = umask(0);
    fsa_status_t st = open_db(f, &o, &db, &users);
    umask(old);
    assert_fsa_ok(st);
    assert_fsa_ok(fsa__db_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES(1)", NULL, 0));
    char wal[160], shm[160];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    snprintf(shm, sizeof shm, "%s-shm", f->path);
    assert_int_equal(mode_of(f->path), 0600);
    assert_int_equal(mode_of(wal), 0600);
    assert_int_equal(mode_of(shm), 0600);
    assert_int_equal(chmod(wal, 0644), 0);
    o.create = false;
    assert_fsa_ok(open_db(f, &o, &db2, &users2));
    assert_int_equal(mode_of(wal), 0600);
    fsa__db_close(fsa_port_posix(), db2, users2);
    fsa__db_close(fsa_port_posix(), db, users);
}

/* One journal reached through two names (its path and a symlink to it) has one set of users: the
 * user that leaves first is not the last one, and does not mark a clean close under the other,
 * whose crash would then go unchecked at the next open. */
static void test_fsa__db_open__symlinked_journal_shares_its_users(void **state)
{
    fx_t *f = *state;
    char link[160];
    snprintf(link, sizeof link, "%s/current.db", f->dir);
    fsa_db_opts_t o = {.create = true};
    sqlite3 *db = NULL, *db2 = NULL;
    fsa_flock_t *users = NULL, *users2 = NULL;
    assert_fsa_ok(open_db(f, &o, &db, &users));
    assert_int_equal(symlink(f->path, link), 0);
    assert_fsa_ok(fsa__db_open(fsa_port_posix(), link, &o, &db2, &users2, f->err, sizeof f->err));
    const char *clean = "SELECT v FROM sync_state WHERE k = '" FSA_STATE_CLEAN_CLOSE "'";
    assert_int_equal(pragma(db, clean), 0);
    fsa__db_close(fsa_port_posix(), db2, users2);
    assert_int_equal(pragma(db, clean), 0); /* db still has it open */
    fsa__db_close(fsa_port_posix(), db, users);
    assert_int_equal(unlink(link), 0);
    sqlite3 *plain = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &plain, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(pragma(plain, clean), 1); /* the last one out marked it */
    sqlite3_close(plain);
}

/* The file's own errors name the journal and the reason. */
static void test_fsa__db_open__file_errors_name_the_journal(void **state)
{
    fx_t *f = *state;
    fsa_db_opts_t o = {.create = true};
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    char path[200];
    snprintf(path, sizeof path, "%s/no-such-dir/j.db", f->dir);
    assert_int_equal(fsa__db_open(fsa_port_posix(), path, &o, &db, &users, f->err, sizeof f->err),
                     FSA_EIO);
    assert_null(db);
    assert_non_null(strstr(f->err, "cannot create journal"));
    assert_non_null(strstr(f->err, path));
    /* Under a regular file: whether it exists cannot be told. */
    int fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    close(fd);
    snprintf(path, sizeof path, "%s/j.db", f->path);
    assert_int_equal(fsa__db_open(fsa_port_posix(), path, &o, &db, &users, f->err, sizeof f->err),
                     FSA_EIO);
    assert_null(db);
    assert_non_null(strstr(f->err, "journal "));
    assert_non_null(strstr(f->err, path));
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

/* The write system calls this process made so far (Linux /proc/self/io), or -1. */
static long write_calls(void)
{
    FILE *fp = fopen("/proc/self/io", "r");
    if (fp == NULL)
        return -1;
    char line[128];
    long n = -1;
    while (fgets(line, sizeof line, fp) != NULL)
        if (strncmp(line, "syscw:", 6) == 0)
            n = strtol(line + 6, NULL, 10);
    (void)fclose(fp); /* read only: nothing to lose */
    return n;
}

/* A commit that changes many pages reaches the -wal file as one write (not a header and a page
 * per frame), and is there for another connection, and another process, as soon as COMMIT
 * returns. */
static void test_fsa__db_open__wal_commit_is_one_write(void **state)
{
    fx_t *f = *state;
    fsa_db_opts_t o = {.create = true, .sync_normal = true};
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    assert_int_equal(open_db(f, &o, &db, &users), FSA_OK);
    assert_int_equal(fsa__db_exec(db, "CREATE TABLE t(v TEXT); CREATE INDEX t_v ON t(v)", NULL, 0),
                     FSA_OK);
    assert_int_equal(fsa__db_exec(db, "BEGIN IMMEDIATE", NULL, 0), FSA_OK);
    /* ~10 KB of rows and as much index: a dozen pages or more, well under the 128 KiB that the
     * shim gathers at most. */
    for (int i = 0; i < 20; i++)
        assert_int_equal(fsa__db_exec(db,
                                      "INSERT INTO t(v) SELECT printf('%d', random()) || "
                                      "hex(randomblob(250))",
                                      NULL, 0),
                         FSA_OK);
    long before = write_calls();
    assert_int_equal(fsa__db_exec(db, "COMMIT", NULL, 0), FSA_OK);
    long after = write_calls();
    if (before >= 0 && after >= 0)
        assert_in_range(after - before, 1, 2); /* unshimmed: 2 per page, 20 or more */
    /* Another connection (the default VFS) sees every row at once; so does a process that died
     * right after its commit. */
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &other, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(pragma(other, "SELECT count(*) FROM t"), 20);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sqlite3 *c = NULL;
        fsa_flock_t *cu = NULL;
        if (fsa__db_open(fsa_port_posix(), f->path, &o, &c, &cu, NULL, 0) != FSA_OK ||
            fsa__db_exec(c, "INSERT INTO t(v) VALUES('from the child')", NULL, 0) != FSA_OK)
            _exit(1);
        _exit(0); /* no close: whatever the shim kept would be lost */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(pragma(other, "SELECT count(*) FROM t WHERE v = 'from the child'"), 1);
    sqlite3_close(other);
    fsa__db_close(fsa_port_posix(), db, users);
}

/* integrity_check's first line on db. */
static void assert_intact(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
}

/* A transaction larger than the page cache spills pages to the WAL and changes some of them again:
 * SQLite then rewrites those frames in place and, after the commit frame, the checksums of the
 * frames that follow. A process that dies right after such a commit has it all in the file: a
 * recovery from the WAL alone (no -shm) finds every row. */
static void test_fsa__db_open__wal_rewrites_reach_the_file(void **state)
{
    fx_t *f = *state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fsa_db_opts_t o = {.create = true, .sync_normal = true};
        sqlite3 *c = NULL;
        fsa_flock_t *cu = NULL;
        bool ok =
            fsa__db_open(fsa_port_posix(), f->path, &o, &c, &cu, NULL, 0) == FSA_OK &&
            fsa__db_exec(
                c,
                "PRAGMA cache_size = 8; CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);"
                "BEGIN;"
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)"
                "  INSERT INTO t SELECT i, hex(randomblob(300)) FROM n;"
                "UPDATE t SET v = 'changed ' || k;"
                "COMMIT",
                NULL, 0) == FSA_OK;
        _exit(ok ? 0 : 1); /* no close, no checkpoint: the WAL holds the commit */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char shm[160];
    snprintf(shm, sizeof shm, "%s-shm", f->path);
    assert_int_equal(unlink(shm), 0); /* the next open rebuilds the index from the WAL */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(pragma(db, "SELECT count(*) FROM t WHERE v = 'changed ' || k"), 300);
    assert_intact(db);
    sqlite3_close(db);
}

/* Copies the file at from to to; false on any failure. */
static bool copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    bool ok = in != NULL && out != NULL;
    char buf[8192];
    for (size_t n; ok && (n = fread(buf, 1, sizeof buf, in)) > 0;)
        ok = fwrite(buf, 1, n, out) == n;
    ok = ok && !ferror(in);
    if (in != NULL)
        (void)fclose(in);
    if (out != NULL && fclose(out) != 0)
        ok = false;
    return ok;
}

/* A transaction larger than its connection's page cache spills frames to the WAL before it
 * commits; rolled back, those frames were never committed. Another connection then commits over
 * the same offsets of the WAL (its commits acknowledged at FULL), and the first connection reads
 * again. Nothing the first one gathered may reach the file after its write lock is gone: every
 * acknowledged commit is there, for a reader and for a recovery from the WAL alone. (The shim kept
 * the rolled-back frames and wrote them at its next read, over the other connection's: a corrupt
 * journal at once, and after a recovery none of the 20 commits.) */
static void test_fsa__db_open__rolled_back_frames_never_reach_the_file(void **state)
{
    fx_t *f = *state;
    fsa_db_opts_t o = {.create = true};
    sqlite3 *a = NULL, *b = NULL;
    fsa_flock_t *ua = NULL, *ub = NULL;
    assert_fsa_ok(open_db(f, &o, &a, &ua));
    assert_fsa_ok(open_db(f, &o, &b, &ub));
    assert_fsa_ok(
        fsa__db_exec(b,
                     "CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB);"
                     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)"
                     "  INSERT INTO big SELECT i, randomblob(1500) FROM n",
                     NULL, 0));
    assert_int_equal(sqlite3_wal_checkpoint_v2(b, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL),
                     SQLITE_OK);
    assert_fsa_ok(fsa__db_exec(b, "INSERT INTO big VALUES(1000, 'the WAL in use')", NULL, 0));
    assert_fsa_ok(fsa__db_exec(a,
                               "PRAGMA cache_size = 8; BEGIN IMMEDIATE;"
                               "UPDATE big SET v = zeroblob(1500) WHERE id <= 40; ROLLBACK",
                               NULL, 0));
    for (int i = 0; i < 20; i++) {
        char sql[160];
        snprintf(sql, sizeof sql,
                 "UPDATE big SET v = hex(randomblob(700)) WHERE id = %d;"
                 "INSERT INTO big VALUES(%d, 'acknowledged')",
                 1 + i * 9, 2000 + i);
        assert_fsa_ok(fsa__db_exec(b, sql, NULL, 0));
    }
    assert_int_equal(pragma(a, "SELECT count(*) FROM big WHERE v = 'acknowledged'"), 20);
    assert_intact(b);
    /* What a power cut leaves: the database and its WAL, recovered without the -shm. */
    char wal[160], copy[160], copy_wal[170];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    snprintf(copy, sizeof copy, "%s/copy.db", f->dir);
    snprintf(copy_wal, sizeof copy_wal, "%s-wal", copy);
    assert_true(copy_file(f->path, copy) && copy_file(wal, copy_wal));
    sqlite3 *c = NULL;
    assert_int_equal(sqlite3_open_v2(copy, &c, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_intact(c);
    assert_int_equal(pragma(c, "SELECT count(*) FROM big WHERE v = 'acknowledged'"), 20);
    sqlite3_close(c);
    fsa__db_close(fsa_port_posix(), a, ua);
    fsa__db_close(fsa_port_posix(), b, ub);
    static const char *const sfx[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        char p[180];
        snprintf(p, sizeof p, "%s%s", copy, sfx[i]);
        (void)unlink(p);
    }
}

/* Without power-safe overwrite (psow=0 here; a device that does not promise it), SQLite pads each
 * FULL commit to a sector with copies of its commit frame and splits the last copy around a sync.
 * The rest of that copy, written after the sync, is part of the published commit: another
 * connection reads every commit whole, at once. (The shim gathered it with no commit frame to end
 * it, and the next connection's read came up short; the shim now gathers nothing there.) */
static void test_fsa__db_open__wal_padded_commits_reach_the_file(void **state)
{
    fx_t *f = *state;
    fsa_db_opts_t o = {.create = true};
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    assert_fsa_ok(open_db(f, &o, &db, &users)); /* registers the shim over the default VFS */
    fsa__db_close(fsa_port_posix(), db, users);
    assert_non_null(sqlite3_vfs_find("fsa-wal-0"));
    char uri[200];
    snprintf(uri, sizeof uri, "file:%s?psow=0", f->path);
    sqlite3 *a = NULL, *b = NULL;
    assert_int_equal(sqlite3_open_v2(uri, &a, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, "fsa-wal-0"),
                     SQLITE_OK);
    assert_fsa_ok(fsa__db_exec(a,
                               "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                               "CREATE TABLE padded(id INTEGER PRIMARY KEY, v BLOB)",
                               NULL, 0));
    assert_int_equal(sqlite3_open_v2(f->path, &b, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    for (int i = 0; i < 300; i++) { /* past frame 85, where a split leaves 24 bytes after a sync */
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT INTO padded VALUES(%d, randomblob(300))", i);
        assert_fsa_ok(fsa__db_exec(a, sql, NULL, 0));
        assert_int_equal(pragma(b, "SELECT count(*) FROM padded"), i + 1);
    }
    assert_intact(b);
    sqlite3_close(b);
    sqlite3_close(a);
}

/* The threads of this process (the entries of /proc/self/task), -1 when that cannot be read. */
static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    if (d == NULL)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* The process has `extra` threads more than when it had `before` (-1: /proc unreadable, not
 * checked). */
static void assert_threads(int before, int extra)
{
    if (before > 0)
        assert_int_equal(thread_count(), before + extra);
}

/* One transaction of ~4,500 pages (a row of 3,500 bytes takes two 2 KiB pages): past the size at
 * which a commit at NORMAL has the WAL checkpointed (FSA__DB_CHECKPOINT_PAGES_NORMAL), short of
 * the size at which it runs one itself (8,000). */
#define BIG_COMMIT                                                                                 \
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2200)"               \
    "  INSERT INTO t SELECT randomblob(3500) FROM n"
#define BIG_ROWS 2200 /* BIG_COMMIT's */
/* One of ~1,500 pages: past SQLite's own checkpoint size (1,000), which a commit at FULL keeps,
 * short of the size at NORMAL. */
#define MID_COMMIT                                                                                 \
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 700)"                \
    "  INSERT INTO t SELECT randomblob(3500) FROM n"

/* Waits for the checkpointer's count to pass n (its own signal), at most a minute. */
static void wait_checkpoints_past(uint64_t n)
{
    fsa_port_t *real = fsa_port_posix();
    fsa_mono_t end = fsa_mono_add_ns(real->mono_now(real->ctx), 60 * FSA_NS_PER_S);
    while (fsa__db_checkpoints_run() <= n) {
        if (fsa_mono_diff_ns(real->mono_now(real->ctx), end) > 0)
            fail_msg("no checkpoint after a minute");
        sched_yield();
    }
}

/* The frames in db's WAL now (a PASSIVE checkpoint's count: it copies what it can too). */
static int wal_frames(sqlite3 *db)
{
    int log = -1, copied = -1;
    assert_int_equal(sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied),
                     SQLITE_OK);
    return log;
}

/* Opens f's journal (at NORMAL or FULL) with a table t of blobs. */
static void open_with_table(fx_t *f, bool normal, sqlite3 **db, fsa_flock_t **users)
{
    fsa_db_opts_t o = {.create = true, .sync_normal = normal};
    assert_int_equal(open_db(f, &o, db, users), FSA_OK);
    assert_fsa_ok(fsa__db_exec(*db, "CREATE TABLE t(v BLOB)", NULL, 0));
}

/* The commit that takes the WAL past the checkpoint size does not run the checkpoint: it returns
 * before any, and a thread of the process runs it (here held until the commit has returned),
 * after which the WAL starts again. The journal's close leaves no thread behind. */
static void test_fsa__db_checkpoint__left_to_a_thread(void **state)
{
    fx_t *f = *state;
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    open_with_table(f, true, &db, &users);
    int threads0 = thread_count();
    uint64_t runs0 = fsa__db_checkpoints_run();
    fsa__db_checkpointer_hold(true);
    assert_fsa_ok(fsa__db_exec(db, BIG_COMMIT, NULL, 0));
    /* The commit is back; the checkpoint has not run: its thread waits. */
    assert_int_equal(fsa__db_checkpoints_run(), runs0);
    assert_threads(threads0, 1);
    fsa__db_checkpointer_hold(false);
    wait_checkpoints_past(runs0);
    /* Everything was copied and the WAL started again: the commit that starts its generation is
     * all it holds. */
    assert_in_range(wal_frames(db), 0, 4);
    assert_int_equal(pragma(db, "SELECT count(*) FROM t"), BIG_ROWS);
    fsa__db_close(fsa_port_posix(), db, users);
    assert_threads(threads0, 0);
}

/* Opens f's journal at NORMAL (*db, *users) and has the checkpointer thread end a checkpoint
 * short: a reader's snapshot, taken between a commit past the size and the next, holds it back,
 * and is gone when this returns. *threads0 and *runs0: the thread count and checkpoints run
 * before. */
static void short_checkpoint(fx_t *f, sqlite3 **db, fsa_flock_t **users, int *threads0,
                             uint64_t *runs0)
{
    sqlite3 *reader = NULL;
    open_with_table(f, true, db, users);
    assert_int_equal(sqlite3_open_v2(f->path, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    *threads0 = thread_count();
    *runs0 = fsa__db_checkpoints_run();
    fsa__db_checkpointer_hold(true);
    assert_fsa_ok(fsa__db_exec(*db, BIG_COMMIT, NULL, 0));
    /* A snapshot that ends before the next commit's frames: the checkpoint copies up to it. */
    assert_fsa_ok(fsa__db_exec(reader, "BEGIN; SELECT count(*) FROM t", NULL, 0));
    assert_fsa_ok(fsa__db_exec(*db, "INSERT INTO t VALUES(1)", NULL, 0));
    fsa__db_checkpointer_hold(false);
    wait_checkpoints_past(*runs0);
    sqlite3_close(reader); /* its read transaction ends with it */
}

/* A checkpoint that ended short (a reader held it back here; while records come one after another,
 * the commits during its passes do) is finished by the next commit past the size, in that commit,
 * not by another thread: the WAL then starts again at the next write. Asked of a thread again, it
 * ended short again, time after time (storage/db.c, ckpt_request). */
static void test_fsa__db_checkpoint__the_next_commit_finishes_a_short_one(void **state)
{
    fx_t *f = *state;
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    int threads0 = 0;
    uint64_t runs0 = 0;
    short_checkpoint(f, &db, &users, &threads0, &runs0);
    /* A thread asked now would wait. */
    fsa__db_checkpointer_hold(true);
    assert_fsa_ok(fsa__db_exec(db, "INSERT INTO t VALUES(2)", NULL, 0));
    assert_int_equal(fsa__db_checkpoints_run(), runs0 + 1);
    assert_threads(threads0, 0);
    /* That commit copied the rest: the next write starts the WAL again. */
    assert_fsa_ok(fsa__db_exec(db, "INSERT INTO t VALUES(3)", NULL, 0));
    assert_in_range(wal_frames(db), 1, 4);
    fsa__db_checkpointer_hold(false);
    assert_int_equal(pragma(db, "SELECT count(*) FROM t"), BIG_ROWS + 3);
    fsa__db_close(fsa_port_posix(), db, users);
    assert_threads(threads0, 0);
}

/* What a short checkpoint left is of the WAL it saw: once a commit of this process finds the WAL
 * small (another connection started it again), a commit past the size in the new WAL asks a
 * thread again rather than copy the new WAL in its own commit. */
static void test_fsa__db_checkpoint__a_new_wal_is_not_finished_in_a_commit(void **state)
{
    fx_t *f = *state;
    sqlite3 *db = NULL, *other = NULL;
    fsa_flock_t *users = NULL, *users2 = NULL;
    int threads0 = 0;
    uint64_t runs0 = 0;
    short_checkpoint(f, &db, &users, &threads0, &runs0);
    /* Another connection of the process copies all, starts the WAL again and writes in it: its
     * commits find the WAL small. */
    fsa_db_opts_t o = {0};
    assert_int_equal(open_db(f, &o, &other, &users2), FSA_OK);
    assert_fsa_ok(fsa__db_exec(other, "PRAGMA wal_checkpoint(RESTART)", NULL, 0));
    /* Enough that the next commit takes the new WAL past what was copied of the old one. */
    assert_fsa_ok(
        fsa__db_exec(other, "INSERT INTO t SELECT randomblob(3500) FROM t LIMIT 60", NULL, 0));
    fsa__db_checkpointer_hold(true);
    assert_fsa_ok(fsa__db_exec(db, BIG_COMMIT, NULL, 0));
    assert_threads(threads0, 1); /* asked of a thread, which waits */
    fsa__db_checkpointer_hold(false);
    wait_checkpoints_past(runs0 + 1);
    fsa__db_close(fsa_port_posix(), other, users2);
    fsa__db_close(fsa_port_posix(), db, users);
    assert_threads(threads0, 0);
}

/* While a drain claims the checkpoints, a commit past the size leaves them to it: no thread. */
static void test_fsa__db_checkpoint__claimed_by_a_drain(void **state)
{
    fx_t *f = *state;
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    open_with_table(f, true, &db, &users);
    int threads0 = thread_count();
    uint64_t runs0 = fsa__db_checkpoints_run();
    fsa__db_checkpoint_claim(60 * FSA_NS_PER_S);
    assert_fsa_ok(fsa__db_exec(db, BIG_COMMIT, NULL, 0));
    assert_fsa_ok(fsa__db_exec(db, "INSERT INTO t VALUES(1)", NULL, 0));
    fsa__db_checkpoint_claim(0);
    assert_int_equal(fsa__db_checkpoints_run(), runs0);
    assert_threads(threads0, 0);
    assert_true(wal_frames(db) > FSA__DB_CHECKPOINT_PAGES_NORMAL); /* nothing was copied */
    fsa__db_close(fsa_port_posix(), db, users);
}

/* A connection at FULL checkpoints in its own commit, as SQLite does: no thread (its records wait
 * for a sync each anyway, and a checkpoint beside them made them slower). */
static void test_fsa__db_checkpoint__full_commits_run_their_own(void **state)
{
    fx_t *f = *state;
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    open_with_table(f, false, &db, &users);
    int threads0 = thread_count();
    uint64_t runs0 = fsa__db_checkpoints_run();
    assert_fsa_ok(fsa__db_exec(db, MID_COMMIT, NULL, 0));
    assert_int_equal(fsa__db_checkpoints_run(), runs0);
    assert_threads(threads0, 0);
    /* It copied every frame: the next commit starts the WAL again. */
    assert_fsa_ok(fsa__db_exec(db, "INSERT INTO t VALUES(1)", NULL, 0));
    assert_in_range(wal_frames(db), 1, 4);
    fsa__db_close(fsa_port_posix(), db, users);
}

/* A commit at NORMAL under FSA__DB_CHECKPOINT_PAGES_NORMAL asks for nothing, though past the
 * size at which a FULL one checkpoints (above): no thread, no checkpoint, the WAL keeps every
 * frame. Each checkpoint's end costs a run of NORMAL records three syncs, so they come a quarter
 * as often. */
static void test_fsa__db_checkpoint__normal_commits_wait_for_a_larger_wal(void **state)
{
    fx_t *f = *state;
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    open_with_table(f, true, &db, &users);
    int threads0 = thread_count();
    uint64_t runs0 = fsa__db_checkpoints_run();
    assert_fsa_ok(fsa__db_exec(db, MID_COMMIT, NULL, 0));
    assert_fsa_ok(fsa__db_exec(db, "INSERT INTO t VALUES(1)", NULL, 0));
    assert_int_equal(fsa__db_checkpoints_run(), runs0);
    assert_threads(threads0, 0);
    int frames = wal_frames(db);
    assert_in_range(frames, 1000, FSA__DB_CHECKPOINT_PAGES_NORMAL - 1);
    fsa__db_close(fsa_port_posix(), db, users);
}

/* A close waits for its journal's checkpoint in progress: what it leaves on disk is settled (the
 * last connection's close then removes the WAL), and no thread is left. */
static void test_fsa__db_checkpoint__close_waits_for_it(void **state)
{
    fx_t *f = *state;
    sqlite3 *db = NULL;
    fsa_flock_t *users = NULL;
    open_with_table(f, true, &db, &users);
    int threads0 = thread_count();
    uint64_t runs0 = fsa__db_checkpoints_run();
    assert_fsa_ok(fsa__db_exec(db, BIG_COMMIT, NULL, 0));
    fsa__db_close(fsa_port_posix(), db, users);
    assert_true(fsa__db_checkpoints_run() > runs0);
    assert_threads(threads0, 0);
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    assert_int_equal(access(wal, F_OK), -1);
    fsa_db_opts_t o = {.sync_normal = true};
    assert_int_equal(open_db(f, &o, &db, &users), FSA_OK);
    assert_int_equal(pragma(db, "SELECT count(*) FROM t"), BIG_ROWS);
    fsa__db_close(fsa_port_posix(), db, users);
}

/* NULL binds as SQL NULL (a NOT NULL column refuses it), "" as the empty text, a string as
 * itself; the journal passes "" itself where its columns want it. */
static void test_fsa__db_bind_text__null_is_null(void **state)
{
    (void)state;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_fsa_ok(fsa__db_exec(db, "CREATE TABLE t(n INTEGER, v TEXT)", NULL, 0));
    assert_fsa_ok(fsa__db_exec(db, "CREATE TABLE nn(v TEXT NOT NULL)", NULL, 0));
    sqlite3_stmt *ins = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?1, ?2)", -1, &ins, NULL),
                     SQLITE_OK);
    const char *vals[] = {NULL, "", "a\"b"};
    for (int i = 0; i < 3; i++) {
        sqlite3_bind_int(ins, 1, i);
        fsa__db_bind_text(ins, 2, vals[i]);
        assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT typeof(v), v FROM t ORDER BY n", -1, &q, NULL),
                     SQLITE_OK);
    const char *types[] = {"null", "text", "text"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(q, 0), types[i]);
        if (vals[i] != NULL)
            assert_string_equal((const char *)sqlite3_column_text(q, 1), vals[i]);
    }
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO nn VALUES (?1)", -1, &ins, NULL),
                     SQLITE_OK);
    fsa__db_bind_text(ins, 1, NULL);
    assert_int_equal(sqlite3_step(ins), SQLITE_CONSTRAINT);
    sqlite3_finalize(ins);
    sqlite3_close(db);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_fsa__db_open__invalid_params),
        T(test_fsa__db_open__missing_without_create),
        T(test_fsa__db_open__creates_a_private_wal_journal),
        T(test_fsa__db_open__existing_file_made_private),
        T(test_fsa__db_open__private_under_wide_umask),
        T(test_fsa__db_open__symlinked_journal_shares_its_users),
        T(test_fsa__db_open__file_errors_name_the_journal),
        T(test_fsa__db_open__newer_schema_refused),
        T(test_fsa__db_open__not_a_database),
        T(test_fsa__db_exec__error_is_told),
        T(test_fsa__db_status__table),
        T(test_fsa__db_open__wal_commit_is_one_write),
        T(test_fsa__db_open__wal_rewrites_reach_the_file),
        T(test_fsa__db_open__rolled_back_frames_never_reach_the_file),
        T(test_fsa__db_open__wal_padded_commits_reach_the_file),
        T(test_fsa__db_checkpoint__left_to_a_thread),
        T(test_fsa__db_checkpoint__the_next_commit_finishes_a_short_one),
        T(test_fsa__db_checkpoint__a_new_wal_is_not_finished_in_a_commit),
        T(test_fsa__db_checkpoint__claimed_by_a_drain),
        T(test_fsa__db_checkpoint__full_commits_run_their_own),
        T(test_fsa__db_checkpoint__normal_commits_wait_for_a_larger_wal),
        T(test_fsa__db_checkpoint__close_waits_for_it),
        cmocka_unit_test(test_fsa__db_bind_text__null_is_null),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
