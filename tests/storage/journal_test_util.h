/* fieldsync tests: helpers for journal tests (temp dirs, opening on a sim port). */
#ifndef FSA_TESTS_STORAGE_JOURNAL_TEST_UTIL_H
#define FSA_TESTS_STORAGE_JOURNAL_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "port/sim/sim.h"
#include "storage/journal.h"
#include "tests/test_util.h"

/* A fresh temp directory with a journal path inside; removed (with its files) by
 * test_dir_remove(). */
typedef struct test_dir {
    char dir[64];
    char path[128];
} test_dir_t;

static inline void test_dir_make(test_dir_t *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/fsa-test-XXXXXX");
    if (mkdtemp(t->dir) == NULL)
        fail_msg("mkdtemp failed");
    snprintf(t->path, sizeof t->path, "%s/journal.db", t->dir);
}

static inline void test_dir_remove(test_dir_t *t)
{
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", t->dir);
}

#endif
