/* Tests for port/posix/watch.c: waiting for a file (and its -wal) to change, with inotify. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "port/alloc.h"
#include "port/watch.h"
#include "tests/test_util.h"

typedef struct {
    char dir[64];
    char path[128]; /* dir/journal.db, the watched file */
} fx_t;

static int setup(void **state)
{
    fx_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/fsa-watch-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof f->path, "%s/journal.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    static const char *const names[] = {"journal.db", "journal.db-wal", "other.db", "journal.d",
                                        "new.tmp"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[160];
        snprintf(p, sizeof p, "%s/%s", f->dir, names[i]);
        (void)unlink(p);
    }
    int rc = rmdir(f->dir);
    fsa_free(f);
    return rc == 0 ? 0 : -1;
}

/* Appends a byte to dir/name (creating it). */
static void touch(const fx_t *f, const char *name)
{
    char p[160];
    snprintf(p, sizeof p, "%s/%s", f->dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_APPEND, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x", 1), 1);
    assert_int_equal(close(fd), 0);
}

static void test_fsa_watch_open__invalid_params(void **state)
{
    fx_t *f = *state;
    fsa_watch_t *w = (fsa_watch_t *)f; /* anything but NULL: it must be reset */
    assert_int_equal(fsa_watch_open(NULL, &w), FSA_EINVAL);
    assert_int_equal(fsa_watch_open(f->path, NULL), FSA_EINVAL);
    assert_int_equal(fsa_watch_open("", &w), FSA_EINVAL);
    w = (fsa_watch_t *)f;
    assert_int_equal(fsa_watch_open("/tmp/", &w), FSA_EINVAL); /* no file name */
    assert_null(w);
    assert_int_equal(fsa_watch_wait(NULL, 0), FSA_EINVAL);
    fsa_watch_poke(NULL);
    fsa_watch_close(NULL);
}

static void test_fsa_watch_open__missing_directory(void **state)
{
    fx_t *f = *state;
    char p[160];
    snprintf(p, sizeof p, "%s/nonexistent/journal.db", f->dir);
    fsa_watch_t *w = NULL;
    assert_int_equal(fsa_watch_open(p, &w), FSA_ENOTFOUND);
    assert_null(w);
}

/* The file need not exist: its creation is a change; nothing else happened before. */
static void test_fsa_watch_wait__creation_then_nothing(void **state)
{
    fx_t *f = *state;
    fsa_watch_t *w = NULL;
    assert_fsa_ok(fsa_watch_open(f->path, &w));
    assert_int_equal(fsa_watch_wait(w, 0), FSA_ETIMEOUT);
    touch(f, "journal.db");
    assert_fsa_ok(fsa_watch_wait(w, 10000));
    /* every pending event was consumed by that one wait */
    assert_int_equal(fsa_watch_wait(w, 0), FSA_ETIMEOUT);
    fsa_watch_close(w);
}

/* inotify queues an event before write() returns, so an immediate wait sees it or never will. */
static void test_fsa_watch_wait__writes_to_the_file_and_its_wal(void **state)
{
    fx_t *f = *state;
    touch(f, "journal.db");
    fsa_watch_t *w = NULL;
    assert_fsa_ok(fsa_watch_open(f->path, &w));
    touch(f, "journal.db");
    assert_fsa_ok(fsa_watch_wait(w, 0));
    touch(f, "journal.db-wal");
    assert_fsa_ok(fsa_watch_wait(w, 0));
    assert_int_equal(fsa_watch_wait(w, 0), FSA_ETIMEOUT);
    fsa_watch_close(w);
}

static void test_fsa_watch_wait__other_files_do_not_count(void **state)
{
    fx_t *f = *state;
    fsa_watch_t *w = NULL;
    assert_fsa_ok(fsa_watch_open(f->path, &w));
    touch(f, "other.db");
    touch(f, "journal.d"); /* a prefix of the name is another file */
    assert_int_equal(fsa_watch_wait(w, 0), FSA_ETIMEOUT);
    fsa_watch_close(w);
}

/* A file written elsewhere and renamed over the watched one is a change. */
static void test_fsa_watch_wait__replaced_by_rename(void **state)
{
    fx_t *f = *state;
    touch(f, "journal.db");
    fsa_watch_t *w = NULL;
    assert_fsa_ok(fsa_watch_open(f->path, &w));
    touch(f, "new.tmp");
    char from[160];
    snprintf(from, sizeof from, "%s/new.tmp", f->dir);
    assert_int_equal(rename(from, f->path), 0);
    assert_fsa_ok(fsa_watch_wait(w, 0));
    fsa_watch_close(w);
}

typedef struct {
    fsa_watch_t *w;
    int ready[2];
    fsa_status_t st;
} waiter_t;

static void *wait_forever(void *arg)
{
    waiter_t *wt = arg;
    if (write(wt->ready[1], "x", 1) != 1)
        return NULL;
    wt->st = fsa_watch_wait(wt->w, -1);
    return NULL;
}

/* A poke wakes a waiter with no timeout (before or after it blocked: the pipe keeps it). */
static void test_fsa_watch_poke__wakes_a_waiter(void **state)
{
    fx_t *f = *state;
    waiter_t wt = {.st = FSA_OK};
    assert_fsa_ok(fsa_watch_open(f->path, &wt.w));
    assert_int_equal(pipe(wt.ready), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_forever, &wt), 0);
    char x;
    assert_int_equal(read(wt.ready[0], &x, 1), 1);
    fsa_watch_poke(wt.w);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(wt.st, FSA_EBUSY);
    /* the poke was consumed: nothing is pending now */
    assert_int_equal(fsa_watch_wait(wt.w, 0), FSA_ETIMEOUT);
    /* a poke before the wait is not lost */
    fsa_watch_poke(wt.w);
    assert_int_equal(fsa_watch_wait(wt.w, -1), FSA_EBUSY);
    close(wt.ready[0]);
    close(wt.ready[1]);
    fsa_watch_close(wt.w);
}

/* A timeout too long to count in nanoseconds is as good as none: it overflowed, the deadline
 * fell in the past, and a pending poke was reported as a timeout. */
static void test_fsa_watch_wait__huge_timeout_is_not_a_timeout(void **state)
{
    fx_t *f = *state;
    fsa_watch_t *w = NULL;
    assert_fsa_ok(fsa_watch_open(f->path, &w));
    fsa_watch_poke(w);
    fsa_status_t st = fsa_watch_wait(w, INT64_MAX / 1000);
    fsa_watch_close(w);
    assert_int_equal(st, FSA_EBUSY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fsa_watch_open__invalid_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsa_watch_open__missing_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsa_watch_wait__creation_then_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_watch_wait__writes_to_the_file_and_its_wal, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_watch_wait__other_files_do_not_count, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsa_watch_wait__replaced_by_rename, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsa_watch_poke__wakes_a_waiter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsa_watch_wait__huge_timeout_is_not_a_timeout, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
