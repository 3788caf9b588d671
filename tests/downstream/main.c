/* fieldsync: a downstream app built against the installed libfieldsync only (tests/downstream). */
#include <fieldsync/fieldsync.h>

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define STR_(x) #x
#define STR(x) STR_(x)
#define HEADER_VERSION                                                                             \
    STR(FIELDSYNC_VERSION_MAJOR) "." STR(FIELDSYNC_VERSION_MINOR) "." STR(FIELDSYNC_VERSION_PATCH)

/* Opens journal with flags, expecting `want`, then closes the handle. Returns 0 when all went as
 * expected; else prints why and returns 1. */
static int open_close(const char *journal, const char *secret, uint32_t flags,
                      fieldsync_status_t want)
{
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.flags = flags;
    cfg.journal_path = journal;
    cfg.device_id = "downstream-1";
    cfg.server_url = "http://127.0.0.1:9";
    cfg.secret_file = secret;
    fieldsync_t *fs = NULL;
    fieldsync_status_t st = fieldsync_open(&cfg, &fs);
    int bad = 0;
    if (st != want) {
        fprintf(stderr, "downstream: open %s: %s (%s), expected %s\n", journal,
                fieldsync_status_str(st), fieldsync_errmsg(fs), fieldsync_status_str(want));
        bad = 1;
    } else if (st != FIELDSYNC_OK && fieldsync_errmsg(fs)[0] == '\0') {
        fprintf(stderr, "downstream: open %s failed without a message\n", journal);
        bad = 1;
    }
    if (fieldsync_close(fs) != FIELDSYNC_OK) {
        fprintf(stderr, "downstream: close %s failed\n", journal);
        bad = 1;
    }
    return bad;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: downstream EMPTY_DIR\n");
        return 2;
    }
    const char *v = fieldsync_version();
    if (strcmp(v, HEADER_VERSION) != 0) {
        fprintf(stderr, "downstream: library %s, header %s\n", v, HEADER_VERSION);
        return 1;
    }
    if (strcmp(fieldsync_status_str(FIELDSYNC_OK), fieldsync_status_str(FIELDSYNC_ENOTFOUND)) ==
        0) {
        fprintf(stderr, "downstream: fieldsync_status_str gives one text for two statuses\n");
        return 1;
    }

    char journal[4096], secret[4096], missing[4096];
    if (snprintf(journal, sizeof journal, "%s/journal.db", argv[1]) >= (int)sizeof journal ||
        snprintf(secret, sizeof secret, "%s/secret", argv[1]) >= (int)sizeof secret ||
        snprintf(missing, sizeof missing, "%s/missing.db", argv[1]) >= (int)sizeof missing) {
        fprintf(stderr, "downstream: directory name too long\n");
        return 2;
    }
    FILE *f = fopen(secret, "w");
    if (f == NULL || chmod(secret, 0600) != 0 ||
        fputs("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", f) < 0 ||
        fclose(f) != 0) {
        fprintf(stderr, "downstream: cannot write %s\n", secret);
        return 1;
    }

    /* A journal that does not exist is not created without FIELDSYNC_OPEN_INIT; the device's
     * first start creates it, and an ordinary start opens it. */
    if (open_close(missing, secret, 0, FIELDSYNC_ENOTFOUND) != 0 ||
        open_close(journal, secret, FIELDSYNC_OPEN_INIT, FIELDSYNC_OK) != 0 ||
        open_close(journal, secret, 0, FIELDSYNC_OK) != 0)
        return 1;
    struct stat sb;
    if (stat(journal, &sb) != 0) {
        fprintf(stderr, "downstream: no journal at %s after the first start\n", journal);
        return 1;
    }
    printf("downstream: ok (libfieldsync %s)\n", v);
    return 0;
}
