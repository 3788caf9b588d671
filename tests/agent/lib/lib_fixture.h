/* fieldsync tests: a device journal in a temp dir, initialised through libfieldsync (no server:
 * the URL is loopback and never contacted), shared by test_lib_api, test_lib_record and
 * test_lib_locks. */
#ifndef FSA_TESTS_AGENT_LIB_FIXTURE_H
#define FSA_TESTS_AGENT_LIB_FIXTURE_H

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fieldsync/fieldsync.h"
#include "port/alloc.h"
#include "tests/sync/server_harness.h"
#include "tests/test_util.h"

typedef struct cfx {
    char dir[256];
    char secret[400], db[400];
    fieldsync_t *fs;
} cfx_t;

/* Asserts FIELDSYNC_OK, printing the handle's message if not. */
#define assert_fs_ok(fs, expr)                                                                     \
    do {                                                                                           \
        fieldsync_status_t st_ = (expr);                                                           \
        if (st_ != FIELDSYNC_OK)                                                                   \
            fail_msg("%s returned %d (%s): %s", #expr, (int)st_, fieldsync_status_str(st_),        \
                     fieldsync_errmsg(fs));                                                        \
    } while (0)

static inline bool cfx_write_secret(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return false;
    static const char hex[] = "000102030405060708090a0b0c0d0e0f"
                              "101112131415161718191a1b1c1d1e1f\n";
    bool ok = write(fd, hex, sizeof hex - 1) == (ssize_t)(sizeof hex - 1);
    return close(fd) == 0 && ok;
}

/* The config of the fixture's device (flags as given). */
static inline fieldsync_config_t cfx_config(const cfx_t *f, uint32_t flags)
{
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.flags = flags;
    cfg.journal_path = f->db;
    cfg.device_id = "dev000";
    cfg.server_url = "http://127.0.0.1:9";
    cfg.secret_file = f->secret;
    cfg.label = "test";
    return cfg;
}

/* A temp dir, a secret, a journal initialised through the library, and f->fs open on it. */
static inline int cfx_setup(void **state)
{
    cfx_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL || !th_dir_make(f->dir))
        return -1;
    snprintf(f->secret, sizeof f->secret, "%s/dev.secret", f->dir);
    snprintf(f->db, sizeof f->db, "%s/dev.db", f->dir);
    if (!cfx_write_secret(f->secret))
        return -1;
    fieldsync_config_t cfg = cfx_config(f, FIELDSYNC_OPEN_INIT);
    if (fieldsync_open(&cfg, &f->fs) != FIELDSYNC_OK) {
        fprintf(stderr, "cfx_setup: %s\n", fieldsync_errmsg(f->fs));
        return -1;
    }
    *state = f;
    return 0;
}

static inline int cfx_teardown(void **state)
{
    cfx_t *f = *state;
    int rc = fieldsync_close(f->fs) == FIELDSYNC_OK ? 0 : -1;
    th_dir_remove(f->dir);
    fsa_free(f);
    return rc;
}

/* The JSON text of fieldsync_get into a caller-freed string (fails the test if absent). */
static inline char *cfx_get(fieldsync_t *fs, const char *type, const char *id)
{
    char *json = NULL;
    assert_fs_ok(fs, fieldsync_get(fs, type, id, &json));
    assert_non_null(json);
    return json;
}

/* True when fieldsync_get of (type, id) contains needle. */
static inline bool cfx_has(fieldsync_t *fs, const char *type, const char *id, const char *needle)
{
    char *json = cfx_get(fs, type, id);
    bool found = strstr(json, needle) != NULL;
    if (!found)
        print_message("%s %s: %s (no %s)\n", type, id, json, needle);
    fieldsync_free(json);
    return found;
}

#endif
