/* Integration tests for agent/fieldsync.c with the sync engine, against the real fieldsync-server
 * on loopback: offline recording then sync, faults, conflicts, HTTPS, and a killed sync. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "fieldsync/fieldsync.h"
#include "port/alloc.h"
#include "tests/sync/server_client.h"
#include "tests/sync/server_harness.h"
#include "tests/test_exec.h"
#include "tests/test_util.h"

#ifndef FSA_FIELDSYNC_BIN
#error "FSA_FIELDSYNC_BIN must name the fieldsync binary"
#endif
#ifndef FSA_TEST_EMULATOR
#define FSA_TEST_EMULATOR ""
#endif

/* ---- running the fieldsync command ---- */

typedef struct run {
    int status; /* exit status, 128+signal, -1 on timeout */
    char out[8192];
    char err[4096];
} run_t;

/* When set, the next runs' standard output goes to this file instead of r->out. */
static const char *stdout_to;

/* Runs fieldsync with args (NULL-terminated), bounded by timeout_s; kill_after_ms > 0 sends it
 * SIGKILL after that long instead. */
static void run_fieldsync(run_t *r, int timeout_s, int kill_after_ms, const char *const *args)
{
    memset(r, 0, sizeof *r);
    char emu[512];
    snprintf(emu, sizeof emu, "%s", FSA_TEST_EMULATOR);
    const char *argv[64];
    test_exec_argv(emu, FSA_FIELDSYNC_BIN, args, argv, 64);
    int po[2], pe[2];
    assert_int_equal(pipe(po), 0);
    assert_int_equal(pipe(pe), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int out = stdout_to != NULL ? open(stdout_to, O_WRONLY) : po[1];
        if (out < 0)
            _exit(126);
        dup2(out, 1);
        close(po[1]);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    size_t no = 0, ne = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int open_fds = 2;
    bool killed = false;
    while (open_fds > 0) {
        struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
        poll(fds, 2, 20);
        for (int k = 0; k < 2; k++) {
            if (fds[k].revents == 0)
                continue;
            char *buf = k == 0 ? r->out : r->err;
            size_t *len = k == 0 ? &no : &ne;
            size_t cap = k == 0 ? sizeof r->out : sizeof r->err;
            char tmp[1024];
            ssize_t got = read(fds[k].fd, tmp, sizeof tmp);
            if (got <= 0) {
                fds[k].fd = -1;
                close(k == 0 ? po[0] : pe[0]);
                if (k == 0)
                    po[0] = -1;
                else
                    pe[0] = -1;
                open_fds--;
                continue;
            }
            size_t take = (size_t)got < cap - 1 - *len ? (size_t)got : cap - 1 - *len;
            memcpy(buf + *len, tmp, take);
            *len += take;
            buf[*len] = '\0';
        }
        if (po[0] < 0 && pe[0] < 0)
            break;
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (!killed && kill_after_ms > 0 && ms >= kill_after_ms) {
            kill(pid, SIGKILL);
            killed = true;
        }
        if (!killed && ms > timeout_s * 1000) {
            kill(pid, SIGKILL);
            killed = true;
            r->status = -1;
        }
    }
    if (po[0] >= 0)
        close(po[0]);
    if (pe[0] >= 0)
        close(pe[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (r->status != -1)
        r->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#define FS(r, ...)                                                                                 \
    do {                                                                                           \
        const char *a_[] = {__VA_ARGS__, NULL};                                                    \
        run_fieldsync((r), 120, 0, a_);                                                            \
    } while (0)

/* Runs and expects exit 0, printing what it said otherwise. */
#define FS_OK(r, ...)                                                                              \
    do {                                                                                           \
        FS((r), __VA_ARGS__);                                                                      \
        if ((r)->status != 0)                                                                      \
            fail_msg("fieldsync exited %d: %s%s", (r)->status, (r)->err, (r)->out);                \
    } while (0)

/* ---- fixtures ---- */

typedef struct fx {
    th_server_t srv;
    bool started;
    char secret[2][400]; /* secret files of dev000, dev001 */
    char db[2][400];     /* journals of two devices */
} fx_t;

static void write_secret(const char *path, int dev)
{
    fsa_signer_key_t key;
    th_device_key(dev, &key);
    char hex[70];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key.bytes[i]);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, hex, 64), 64);
    assert_int_equal(write(fd, "\n", 1), 1);
    close(fd);
}

static int setup(void **state)
{
    fx_t *f = fsa_calloc(1, sizeof *f);
    if (!th_dir_make(f->srv.dir) || !th_write_files(&f->srv, 4))
        return -1;
    for (int d = 0; d < 2; d++) {
        snprintf(f->secret[d], sizeof f->secret[d], "%s/dev%03d.secret", f->srv.dir, d);
        snprintf(f->db[d], sizeof f->db[d], "%s/dev%03d.db", f->srv.dir, d);
        write_secret(f->secret[d], d);
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->started)
        th_server_stop(&f->srv);
    th_dir_remove(f->srv.dir);
    fsa_free(f);
    return 0;
}

static void start(fx_t *f, const char *const *extra)
{
    assert_true(th_server_start(&f->srv, extra));
    f->started = true;
}

static void init_device(fx_t *f, int d, const char *url)
{
    run_t r;
    char dev[16];
    th_device_id(d, dev);
    FS_OK(&r, "--db", f->db[d], "init", "--device-id", dev, "--server", url, "--secret-file",
          f->secret[d]);
}

/* Syncs until it exits 0, at most `tries` times (faults may need several runs). */
static void sync_until_done(fx_t *f, int d, int tries)
{
    run_t r;
    for (int i = 0; i < tries; i++) {
        FS(&r, "--db", f->db[d], "sync", "--now");
        if (r.status == 0)
            return;
        if (r.status != 75)
            fail_msg("sync exited %d: %s", r.status, r.err);
    }
    fail_msg("sync did not finish in %d runs: %s", tries, r.err);
}

static void field(fx_t *f, const char *type, const char *id, const char *name, char *out,
                  size_t cap)
{
    tc_field(NULL, f->srv.url, type, id, name, out, cap);
}

/* ---- the tests ---- */

static void test_cli__help_and_bad_usage(void **state)
{
    fx_t *f = *state;
    run_t r;
    FS(&r, "--help");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "usage: fieldsync"));
    FS(&r, "--db", f->db[0], "sync", "--help");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "75"));
    FS(&r, "--db", f->db[0], "frobnicate");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "unknown command 'frobnicate'"));
    assert_null(strchr(strchr(r.err, '\n') + 1, '\n')); /* one line */
    FS(&r, "--version");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "fieldsync 0.1.0"));
    FS(&r, "--frob", "status");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "unknown option '--frob'"));
    FS(&r, "--db");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "option '--db' needs a value"));
    FS(&r, "--db", f->db[0], "--log-level", "loud", "status");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "unknown log level 'loud'"));
    FS(&r, "--db", f->db[0]);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "no command given"));
    FS(&r, "--db", f->db[0], "sync", "--now", "--now");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "option '--now' given twice"));
    FS(&r, "--db", f->db[0], "status", "extra");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "unexpected argument 'extra'"));
    FS(&r, "status");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "--db"));
    /* NAME=VALUE arguments that are malformed or repeat are usage errors too */
    FS(&r, "--db", f->db[0], "job", "create", "J1", "a=1", "a=2");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "field 'a' is given twice"));
    assert_null(strchr(strchr(r.err, '\n') + 1, '\n'));
    FS(&r, "--db", f->db[0], "ticket", "create", "T1", "Bad-Name=1");
    assert_int_equal(r.status, 2);
    assert_null(strchr(strchr(r.err, '\n') + 1, '\n'));
    /* no journal yet: a clear error, and no file left behind */
    FS(&r, "--db", f->db[0], "job", "create", "J1");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "fieldsync init"));
    assert_int_not_equal(access(f->db[0], F_OK), 0);
}

static void test_cli__init_refuses_bad_secret_and_insecure_http(void **state)
{
    fx_t *f = *state;
    run_t r;
    /* plain http to a non-loopback host is refused before anything is written */
    FS(&r, "--db", f->db[0], "init", "--device-id", "dev000", "--server",
       "http://server.invalid:8080", "--secret-file", f->secret[0]);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "http"));
    assert_int_not_equal(access(f->db[0], F_OK), 0);
    /* a secret readable by others is refused */
    chmod(f->secret[0], 0644);
    FS(&r, "--db", f->db[0], "init", "--device-id", "dev000", "--server", "http://127.0.0.1:9",
       "--secret-file", f->secret[0]);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "chmod 600"));
    chmod(f->secret[0], 0600);
    FS_OK(&r, "--db", f->db[0], "init", "--device-id", "dev000", "--server", "http://127.0.0.1:9",
          "--secret-file", f->secret[0]);
    /* the journal belongs to its device */
    FS(&r, "--db", f->db[0], "init", "--device-id", "dev001", "--server", "http://127.0.0.1:9",
       "--secret-file", f->secret[1]);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "belongs to device dev000"));
    struct stat sb;
    assert_int_equal(stat(f->db[0], &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
}

/* A check-in without a GPS fix (PROTOCOL.md section 7, amendment 2): recorded with a null
 * position, synced, and the server keeps it null; --lat without --lon is a usage error. */
static void test_cli__attendance_without_position(void **state)
{
    fx_t *f = *state;
    run_t r;
    start(f, NULL);
    init_device(f, 0, f->srv.url);
    const char *id = "7c1e4d2a-5b6f-4a3e-9d8c-0b1a2c3d4e5f";
    FS_OK(&r, "--db", f->db[0], "attendance", "checkin", "--people", "p1", "--site", "s1", "--id",
          id);
    FS_OK(&r, "--db", f->db[0], "show", "attendance", id, "--json");
    assert_non_null(strstr(r.out, "\"lat\":null"));
    assert_non_null(strstr(r.out, "\"lon\":null"));
    FS(&r, "--db", f->db[0], "attendance", "checkout", "--people", "p1", "--site", "s1", "--lat",
       "52.5");
    assert_int_equal(r.status, 2);
    FS(&r, "--db", f->db[0], "attendance", "checkout", "--people", "p1", "--site", "s1",
       "--accuracy", "5");
    assert_int_equal(r.status, 2);
    FS_OK(&r, "--db", f->db[0], "sync", "--now");
    assert_non_null(strstr(r.out, "1 applied"));
    char v[64];
    field(f, "attendance", id, "lat", v, sizeof v);
    assert_string_equal(v, "null");
    field(f, "attendance", id, "kind", v, sizeof v);
    assert_string_equal(v, "\"checkin\"");
}

/* A position without --accuracy has an unknown accuracy (null), not a perfect one (0); a value
 * that is not a plain decimal number in range is a usage error naming the option, and records
 * nothing. */
static void test_cli__attendance_position_values(void **state)
{
    fx_t *f = *state;
    run_t r;
    init_device(f, 0, "http://127.0.0.1:9");
    const char *id = "7c1e4d2a-5b6f-4a3e-9d8c-0b1a2c3d4e60";
    FS_OK(&r, "--db", f->db[0], "attendance", "checkin", "--people", "p1", "--site", "s1", "--lat",
          "52.5", "--lon", "-13.25", "--id", id);
    FS_OK(&r, "--db", f->db[0], "show", "attendance", id, "--json");
    assert_non_null(strstr(r.out, "\"lat\":52.5"));
    assert_non_null(strstr(r.out, "\"lon\":-13.25"));
    assert_non_null(strstr(r.out, "\"accuracy_m\":null"));
    const char *id2 = "7c1e4d2a-5b6f-4a3e-9d8c-0b1a2c3d4e61";
    FS_OK(&r, "--db", f->db[0], "attendance", "checkout", "--people", "p1", "--site", "s1", "--lat",
          "52.5", "--lon", "13.4", "--accuracy", "8", "--id", id2);
    FS_OK(&r, "--db", f->db[0], "show", "attendance", id2, "--json");
    assert_non_null(strstr(r.out, "\"accuracy_m\":8"));
    static const struct {
        const char *lat, *lon, *acc, *named;
    } bad[] = {{"", "13", NULL, "'--lat'"},        {"52", "", NULL, "'--lon'"},
               {"52", "13", "", "'--accuracy'"},   {"0x20", "13", NULL, "'--lat'"},
               {"52", "inf", NULL, "'--lon'"},     {"nan", "13", NULL, "'--lat'"},
               {"52", "13", "-1", "'--accuracy'"}, {"91", "13", NULL, "'--lat'"},
               {" 5", "13", NULL, "'--lat'"},      {"52", "13", "1e999", "'--accuracy'"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (bad[i].acc != NULL)
            FS(&r, "--db", f->db[0], "attendance", "checkin", "--people", "p1", "--site", "s1",
               "--lat", bad[i].lat, "--lon", bad[i].lon, "--accuracy", bad[i].acc);
        else
            FS(&r, "--db", f->db[0], "attendance", "checkin", "--people", "p1", "--site", "s1",
               "--lat", bad[i].lat, "--lon", bad[i].lon);
        if (r.status != 2 || strstr(r.err, bad[i].named) == NULL)
            fail_msg("--lat '%s' --lon '%s' --accuracy '%s': exit %d, %s%s", bad[i].lat, bad[i].lon,
                     bad[i].acc ? bad[i].acc : "(none)", r.status, r.err, r.out);
        assert_null(strchr(strchr(r.err, '\n') + 1, '\n')); /* one line */
    }
    FS_OK(&r, "--db", f->db[0], "status", "--json");
    assert_non_null(strstr(r.out, "\"pending\":2,")); /* the refused ones recorded nothing */
}

/* "job --help" and "ticket -h" are help (exit 0), wherever the option stands; the main help
 * lists every command; an argument echoed in an error stays on one line. */
static void test_cli__entity_help_and_one_line_errors(void **state)
{
    fx_t *f = *state;
    run_t r;
    FS(&r, "--db", f->db[0], "job", "--help");
    if (r.status != 0)
        fail_msg("job --help exited %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "usage: fieldsync --db FILE job create ID"));
    FS(&r, "--db", f->db[0], "ticket", "-h");
    if (r.status != 0)
        fail_msg("ticket -h exited %d: %s", r.status, r.err);
    assert_non_null(strstr(r.out, "ticket escalate ID"));
    FS_OK(&r, "--db", f->db[0], "ticket", "set", "--help");
    assert_non_null(strstr(r.out, "set ID NAME=VALUE"));
    FS(&r, "--db", f->db[0], "job", "frob", "J1");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "unknown job subcommand 'frob'"));
    FS(&r, "--db", f->db[0], "job", "create");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "job create needs an id"));
    FS(&r, "--help");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "ticket set ID"));
    assert_non_null(strstr(r.out, "--version"));
    FS(&r, "--db", f->db[0], "fro\nb\033[2J");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "unknown command 'fro?b?[2J'"));
    assert_null(strchr(strchr(r.err, '\n') + 1, '\n')); /* one line */
    assert_null(strchr(r.err, '\033'));
}

/* An option the subcommand does not use is a usage error naming it, and nothing is recorded:
 * before, "ticket create T1 --to bob" recorded a ticket for nobody and said so with exit 0. So is
 * an empty --note (it was recorded as a note ""). */
static void test_cli__options_a_subcommand_does_not_use_are_refused(void **state)
{
    fx_t *f = *state;
    static const struct {
        const char *args[8];
        const char *says;
    } bad[] = {
        {{"ticket", "create", "T1", "--to", "bob", "priority=\"HIGH\""},
         "--to does not apply to ticket create"},
        {{"ticket", "create", "T1", "--note", "urgent"}, "--note does not apply to ticket create"},
        {{"ticket", "create", "T1", "--parent", "J0"}, "--parent does not apply to ticket create"},
        {{"job", "set", "J1", "--to", "COMPLETED", "seqno=3"}, "--to does not apply to job set"},
        {{"job", "transition", "J1", "--to", "X", "--note", "why"},
         "--note does not apply to job transition"},
        {{"job", "transition", "J1", "--to", "X", "--parent", "J0"},
         "--parent does not apply to job transition"},
        {{"ticket", "log", "T1", "{}", "--to", "bob"}, "--to does not apply to ticket log"},
        {{"ticket", "escalate", "T1", "--note", ""}, "--note needs a text"},
        {{"conflicts", "--take", "server"}, "--take is for 'conflicts resolve"},
        {{"conflicts", "resolve", "x", "--take", "server", "--json"},
         "--json does not apply to conflicts resolve"},
    };
    run_t r;
    start(f, NULL);
    init_device(f, 0, f->srv.url);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv[12] = {"--db", f->db[0]};
        size_t n = 2;
        for (size_t k = 0; k < 8 && bad[i].args[k] != NULL; k++)
            argv[n++] = bad[i].args[k];
        argv[n] = NULL;
        run_fieldsync(&r, 120, 0, argv);
        if (r.status != 2 || strstr(r.err, bad[i].says) == NULL)
            fail_msg("%s %s: exit %d, stderr '%s' (want 2, '%s')", bad[i].args[0], bad[i].args[1],
                     r.status, r.err, bad[i].says);
    }
    FS_OK(&r, "--db", f->db[0], "status", "--json");
    assert_non_null(strstr(r.out, "\"pending\":0,")); /* nothing recorded */
    /* what a subcommand takes still works */
    FS_OK(&r, "--db", f->db[0], "job", "create", "J0");
    FS_OK(&r, "--db", f->db[0], "job", "create", "J1", "--parent", "J0");
    FS_OK(&r, "--db", f->db[0], "ticket", "create", "T1");
    FS_OK(&r, "--db", f->db[0], "ticket", "escalate", "T1", "--to", "bob", "--note", "hi");
}

/* Output that cannot be written fails the command (exit 1, a line on stderr), whatever the
 * command did: a full disk under "status --json > out.json" is not a success. */
static void test_cli__output_that_cannot_be_written_fails(void **state)
{
    fx_t *f = *state;
    run_t r;
    start(f, NULL);
    init_device(f, 0, f->srv.url);
    FS_OK(&r, "--db", f->db[0], "ticket", "create", "T1");
    static const char *const cmds[][5] = {
        {"status", "--json"}, {"show", "ticket", "T1", "--json"}, {"--help"}, {"--version"}};
    stdout_to = "/dev/full";
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        const char *argv[8] = {"--db", f->db[0]};
        size_t n = 2;
        for (size_t k = 0; k < 5 && cmds[i][k] != NULL; k++)
            argv[n++] = cmds[i][k];
        argv[n] = NULL;
        run_fieldsync(&r, 120, 0, argv);
        if (r.status != 1 || strstr(r.err, "cannot write the output") == NULL) {
            stdout_to = NULL;
            fail_msg("%s > /dev/full: exit %d, stderr '%s'", cmds[i][0], r.status, r.err);
        }
    }
    stdout_to = NULL;
    FS_OK(&r, "--db", f->db[0], "status", "--json"); /* and to a pipe, as ever */
}

/* "show" prints the fields for a person's terminal: DEL, a C1 control (U+009B starts an escape
 * sequence on some terminals) and a bidi override (U+202E) come out as '?', byte for byte; with
 * --json they are the JSON as it is. */
static void test_cli__show_cannot_steer_the_terminal(void **state)
{
    fx_t *f = *state;
    run_t r;
    start(f, NULL);
    init_device(f, 0, f->srv.url);
    /* made at run time: U+202E and U+009B, as UTF-8 bytes */
    static const char rlo[] = {(char)0xe2, (char)0x80, (char)0xae, 0};
    static const char csi[] = {(char)0xc2, (char)0x9b, 0};
    char value[64], arg[96];
    snprintf(value, sizeof value, "x%sy%s31mz\x7f", rlo, csi);
    snprintf(arg, sizeof arg, "ticketlog={\"a\":\"%s\"}", value);
    FS_OK(&r, "--db", f->db[0], "ticket", "create", "T1", arg);
    FS_OK(&r, "--db", f->db[0], "show", "ticket", "T1");
    if (strstr(r.out, "\"x???y??31mz?\"") == NULL || strchr(r.out, 0x7f) != NULL ||
        strstr(r.out, csi) != NULL || strstr(r.out, rlo) != NULL)
        fail_msg("show printed the controls as they are: %s", r.out);
    FS_OK(&r, "--db", f->db[0], "show", "ticket", "T1", "--json");
    assert_non_null(strstr(r.out, value));
}

static void test_sync__offline_records_then_sum_of_intents(void **state)
{
    fx_t *f = *state;
    run_t r;
    /* Offline: nothing listens on the configured port. */
    init_device(f, 0, "http://127.0.0.1:9");
    FS_OK(&r, "--db", f->db[0], "attendance", "checkin", "--people", "p1", "--site", "s1", "--lat",
          "52.5", "--lon", "13.4", "--accuracy", "8");
    FS_OK(&r, "--db", f->db[0], "job", "create", "TOUR1");
    FS_OK(&r, "--db", f->db[0], "job", "create", "CP1", "--parent", "TOUR1", "seqno=1");
    FS_OK(&r, "--db", f->db[0], "job", "transition", "CP1", "--to", "INPROGRESS");
    FS_OK(&r, "--db", f->db[0], "checkpoint", "update", "CP1", "expirytime=45");
    FS_OK(&r, "--db", f->db[0], "job", "merge", "TOUR1", "{\"weather\":\"rain\",\"n\":1}");
    FS_OK(&r, "--db", f->db[0], "job", "set", "CP1", "seqno=3", "people_id=p1");
    FS_OK(&r, "--db", f->db[0], "ticket", "create", "T1", "priority=HIGH");
    for (int i = 0; i < 3; i++)
        FS_OK(&r, "--db", f->db[0], "ticket", "escalate", "T1", "--note", "no answer");
    FS_OK(&r, "--db", f->db[0], "ticket", "log", "T1", "{\"action\":\"called\"}");
    FS_OK(&r, "--db", f->db[0], "ticket", "transition", "T1", "--to", "OPEN");
    FS_OK(&r, "--db", f->db[0], "attendance", "checkout", "--people", "p1", "--site", "s1", "--lat",
          "52.5", "--lon", "13.4");
    /* an invalid transition fails at once, naming both states, and records nothing */
    FS(&r, "--db", f->db[0], "ticket", "transition", "T1", "--to", "CLOSED");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "OPEN"));
    assert_non_null(strstr(r.err, "CLOSED"));
    FS(&r, "--db", f->db[0], "sync");
    assert_int_equal(r.status, 75); /* unreachable */
    FS_OK(&r, "--db", f->db[0], "status", "--json");
    assert_non_null(strstr(r.out, "\"pending\":18"));
    assert_non_null(strstr(r.out, "\"next_attempt_ms\":"));
    assert_null(strstr(r.out, "\"next_attempt_ms\":0,"));
    /* Again: 75 whether the backoff is still in force ("backing off") or over (unreachable);
     * which one depends on the speed of the machine (qemu), so both are accepted here, and the
     * backoff itself is tested on the sim clock (tests/sync/test_engine.c). */
    FS(&r, "--db", f->db[0], "sync");
    assert_int_equal(r.status, 75);
    assert_true(strstr(r.err, "backing off") != NULL || strstr(r.err, "network error") != NULL);

    start(f, NULL);
    init_device(f, 0, f->srv.url); /* the server came back at another address */
    FS_OK(&r, "--db", f->db[0], "sync", "--now");
    assert_non_null(strstr(r.out, "18 applied"));
    FS_OK(&r, "--db", f->db[0], "status", "--json");
    assert_non_null(strstr(r.out, "\"pending\":0"));
    assert_non_null(strstr(r.out, "\"next_attempt_ms\":0"));

    char v[4096];
    field(f, "ticket", "T1", "level", v, sizeof v);
    assert_string_equal(v, "3");
    field(f, "ticket", "T1", "status", v, sizeof v);
    assert_string_equal(v, "\"OPEN\"");
    field(f, "ticket", "T1", "ticketlog", v, sizeof v);
    int entries = 0;
    for (const char *p = v; (p = strstr(p, "\"action\"")) != NULL; p++)
        entries++;
    assert_int_equal(entries, 4);
    field(f, "jobneed", "CP1", "expirytime", v, sizeof v);
    assert_string_equal(v, "45");
    field(f, "jobneed", "CP1", "seqno", v, sizeof v);
    assert_string_equal(v, "3");
    field(f, "jobneed", "CP1", "jobstatus", v, sizeof v);
    assert_string_equal(v, "\"INPROGRESS\"");
    field(f, "jobneed", "TOUR1", "other_info", v, sizeof v);
    assert_non_null(strstr(v, "\"weather\":\"rain\""));
    assert_non_null(strstr(v, "\"last_checkpoint\":\"CP1\""));
    /* the local view agrees with the server */
    FS_OK(&r, "--db", f->db[0], "show", "ticket", "T1", "--json");
    assert_non_null(strstr(r.out, "\"level\":3"));
    /* a second sync has nothing to do */
    FS_OK(&r, "--db", f->db[0], "sync");
    assert_non_null(strstr(r.out, "0 applied"));
    /* a sync under a second ago is past, not "(in 0 s)" (a slow machine may take a second) */
    FS_OK(&r, "--db", f->db[0], "status");
    const char *last = strstr(r.out, "last sync:");
    assert_non_null(last);
    assert_true(strstr(last, "(just now)\n") != NULL || strstr(last, " s ago)\n") != NULL);
    assert_null(strstr(r.out, "(in 0 s)"));
}

static void test_sync__faults_give_exactly_once(void **state)
{
    fx_t *f = *state;
    run_t r;
    const char *faults[] = {"--fault-drop",
                            "0.3",
                            "--fault-5xx",
                            "0.2",
                            "--fault-reset",
                            "0.1",
                            "--fault-429",
                            "0.1",
                            "--fault-retry-after",
                            "1",
                            "--fault-seed",
                            "11",
                            NULL};
    start(f, faults);
    assert_int_equal(tc_seed(NULL, f->srv.url, "ticket", "T9", "{}"), 201);
    init_device(f, 0, f->srv.url);
    FS_OK(&r, "--db", f->db[0], "sync", "--now"); /* pulls T9 */
    for (int i = 0; i < 40; i++)
        FS_OK(&r, "--db", f->db[0], "ticket", "escalate", "T9");
    sync_until_done(f, 0, 30);
    char v[1 << 16];
    field(f, "ticket", "T9", "level", v, sizeof v);
    assert_string_equal(v, "40"); /* not one lost, not one doubled */
    field(f, "ticket", "T9", "ticketlog", v, sizeof v);
    int entries = 0;
    for (const char *p = v; (p = strstr(p, "escalated")) != NULL; p++)
        entries++;
    assert_int_equal(entries, 40);
}

/* Two devices create the same ticket offline with other content: the second one's create is
 * parked for a person. Taking theirs ("--take local") sends their fields as a set over the
 * server's ticket, and their status as a transition; before, the create was left out as already
 * satisfied, their content dropped, and the command said "recorded again as op  (seq 0)". */
static void test_sync__create_conflict_taken_local(void **state)
{
    fx_t *f = *state;
    run_t r;
    start(f, NULL);
    for (int d = 0; d < 2; d++)
        init_device(f, d, f->srv.url);
    FS_OK(&r, "--db", f->db[0], "ticket", "create", "T7", "priority=\"LOW\"", "level=1");
    FS_OK(&r, "--db", f->db[1], "ticket", "create", "T7", "priority=\"HIGH\"", "assignedto=\"p2\"");
    FS_OK(&r, "--db", f->db[0], "sync");
    FS_OK(&r, "--db", f->db[1], "sync");
    FS_OK(&r, "--db", f->db[1], "conflicts", "--json");
    char *p = strstr(r.out, "\"op_id\":\"");
    assert_non_null(p);
    char op_id[37];
    memcpy(op_id, p + 9, 36);
    op_id[36] = '\0';
    FS_OK(&r, "--db", f->db[1], "conflicts", "resolve", op_id, "--take", "local");
    assert_non_null(strstr(r.out, "recorded again as op "));
    assert_null(strstr(r.out, "op  (seq 0)"));
    FS_OK(&r, "--db", f->db[1], "sync");
    char v[4096];
    field(f, "ticket", "T7", "priority", v, sizeof v);
    assert_string_equal(v, "\"HIGH\"");
    field(f, "ticket", "T7", "assignedto", v, sizeof v);
    assert_string_equal(v, "\"p2\"");
    field(f, "ticket", "T7", "level", v, sizeof v); /* a field they did not give stays */
    assert_string_equal(v, "1");
    /* Their status, when it is not the server's, goes as a transition from it. */
    FS_OK(&r, "--db", f->db[0], "ticket", "create", "T8", "priority=\"LOW\"");
    FS_OK(&r, "--db", f->db[1], "ticket", "create", "T8", "status=\"OPEN\"");
    FS_OK(&r, "--db", f->db[0], "sync");
    FS_OK(&r, "--db", f->db[1], "sync");
    FS_OK(&r, "--db", f->db[1], "conflicts", "--json");
    p = strstr(r.out, "\"op_id\":\"");
    assert_non_null(p);
    memcpy(op_id, p + 9, 36);
    FS_OK(&r, "--db", f->db[1], "conflicts", "resolve", op_id, "--take", "local");
    assert_non_null(strstr(r.out, "recorded again as op "));
    FS_OK(&r, "--db", f->db[1], "sync");
    field(f, "ticket", "T8", "status", v, sizeof v);
    assert_string_equal(v, "\"OPEN\"");
    field(f, "ticket", "T8", "priority", v, sizeof v);
    assert_string_equal(v, "\"LOW\"");
}

/* The server started with the entities of type ids (NULL-terminated) on it, and both devices set
 * up against it, each having pulled them. */
static void two_devices_on(fx_t *f, const char *type, const char *const *ids)
{
    run_t r;
    start(f, NULL);
    for (const char *const *id = ids; *id != NULL; id++)
        assert_int_equal(tc_seed(NULL, f->srv.url, type, *id, "{}"), 201);
    for (int d = 0; d < 2; d++) {
        init_device(f, d, f->srv.url);
        FS_OK(&r, "--db", f->db[d], "sync");
    }
}

/* Two sets of one field in a row, while another device changed another field: the first
 * conflicts and is rebased; the second, whose prior held the first's value, was judged "the server
 * changed the same fields" (server wins), and the device's last value was lost under its first.
 * The parked first set is now taken out of the second's prior, so both are rebased, in order. */
static void test_sync__sets_in_a_row_after_another_change_keep_the_last(void **state)
{
    fx_t *f = *state;
    run_t r;
    two_devices_on(f, "jobneed", (const char *const[]){"J1", NULL});
    FS_OK(&r, "--db", f->db[1], "job", "set", "J1", "expirytime=9");
    FS_OK(&r, "--db", f->db[1], "sync");
    FS_OK(&r, "--db", f->db[0], "job", "set", "J1", "seqno=5");
    FS_OK(&r, "--db", f->db[0], "job", "set", "J1", "seqno=6");
    FS_OK(&r, "--db", f->db[0], "sync");
    assert_non_null(strstr(r.out, "2 applied, 0 duplicate, 2 conflict"));
    FS_OK(&r, "--db", f->db[0], "conflicts");
    assert_non_null(strstr(r.out, "no open conflicts"));
    char v[4096];
    field(f, "jobneed", "J1", "seqno", v, sizeof v);
    assert_string_equal(v, "6");
    field(f, "jobneed", "J1", "expirytime", v, sizeof v);
    assert_string_equal(v, "9");
}

/* A transition taken "local" once the server has come to its status since: it is already
 * satisfied, nothing is recorded again, and the command says so (the journal's test of the same
 * is in tests/storage; this is the command's word for it). */
static void test_sync__conflict_taken_local_when_the_server_agrees(void **state)
{
    fx_t *f = *state;
    run_t r;
    two_devices_on(f, "ticket", (const char *const[]){"T1", NULL});
    FS_OK(&r, "--db", f->db[0], "ticket", "transition", "T1", "--to", "OPEN");
    FS_OK(&r, "--db", f->db[0], "ticket", "transition", "T1", "--to", "RESOLVED");
    FS_OK(&r, "--db", f->db[0], "sync");
    FS_OK(&r, "--db", f->db[1], "ticket", "transition", "T1", "--to", "OPEN");
    FS_OK(&r, "--db", f->db[1], "sync"); /* from NEW, but the server's is RESOLVED */
    FS_OK(&r, "--db", f->db[1], "conflicts", "--json");
    char *p = strstr(r.out, "\"op_id\":\"");
    if (p == NULL)
        fail_msg("no open conflict: %s", r.out);
    char op_id[37];
    memcpy(op_id, p + 9, 36);
    op_id[36] = '\0';
    /* The other device reopens it, and this one learns that. */
    FS_OK(&r, "--db", f->db[0], "ticket", "transition", "T1", "--to", "OPEN");
    FS_OK(&r, "--db", f->db[0], "sync");
    FS_OK(&r, "--db", f->db[1], "sync");
    FS_OK(&r, "--db", f->db[1], "conflicts", "resolve", op_id, "--take", "local");
    if (strstr(r.out, "resolved: nothing to record again") == NULL)
        fail_msg("resolve said: %s", r.out);
    FS_OK(&r, "--db", f->db[1], "status", "--json");
    assert_non_null(strstr(r.out, "\"pending\":0"));
    FS_OK(&r, "--db", f->db[1], "conflicts");
    assert_non_null(strstr(r.out, "no open conflicts"));
    FS_OK(&r, "--db", f->db[1], "show", "ticket", "T1", "--json");
    if (strstr(r.out, "\"status\":\"OPEN\"") == NULL)
        fail_msg("this device's view: %s", r.out);
    char v[64];
    field(f, "ticket", "T1", "status", v, sizeof v);
    assert_string_equal(v, "\"OPEN\"");
}

static void test_sync__conflicts_resolved_per_table(void **state)
{
    fx_t *f = *state;
    run_t r;
    two_devices_on(f, "jobneed", (const char *const[]){"J1", "J2", NULL});
    /* two devices edit different fields of one job: the second is rebased, both land */
    FS_OK(&r, "--db", f->db[0], "job", "set", "J1", "seqno=5");
    FS_OK(&r, "--db", f->db[1], "job", "set", "J1", "expirytime=9");
    FS_OK(&r, "--db", f->db[0], "sync");
    FS_OK(&r, "--db", f->db[1], "sync");
    char v[4096];
    field(f, "jobneed", "J1", "seqno", v, sizeof v);
    assert_string_equal(v, "5");
    field(f, "jobneed", "J1", "expirytime", v, sizeof v);
    assert_string_equal(v, "9");
    /* both race the same transition: the second converges */
    FS_OK(&r, "--db", f->db[0], "job", "transition", "J1", "--to", "INPROGRESS");
    FS_OK(&r, "--db", f->db[1], "job", "transition", "J1", "--to", "INPROGRESS");
    FS_OK(&r, "--db", f->db[0], "sync");
    FS_OK(&r, "--db", f->db[1], "sync");
    FS_OK(&r, "--db", f->db[1], "conflicts");
    assert_non_null(strstr(r.out, "no open conflicts"));
    /* both set the same field: the server wins, visibly, and a person can override */
    FS_OK(&r, "--db", f->db[0], "job", "set", "J1", "seqno=7");
    FS_OK(&r, "--db", f->db[1], "job", "set", "J1", "seqno=8");
    FS_OK(&r, "--db", f->db[0], "sync");
    FS_OK(&r, "--db", f->db[1], "sync");
    field(f, "jobneed", "J1", "seqno", v, sizeof v);
    assert_string_equal(v, "7");
    FS_OK(&r, "--db", f->db[1], "conflicts", "--json");
    assert_non_null(strstr(r.out, "\"decision\":\"server-wins\""));
    char *p = strstr(r.out, "\"op_id\":\"");
    assert_non_null(p);
    char op_id[37];
    memcpy(op_id, p + 9, 36);
    op_id[36] = '\0';
    FS_OK(&r, "--db", f->db[1], "show", "job", "J1", "--json");
    assert_non_null(strstr(r.out, "\"seqno\":7")); /* the local view shows the server's value */
    FS_OK(&r, "--db", f->db[1], "conflicts", "resolve", op_id, "--take", "local");
    FS_OK(&r, "--db", f->db[1], "sync");
    field(f, "jobneed", "J1", "seqno", v, sizeof v);
    assert_string_equal(v, "8");
    /* the server autocloses a job while a device completes it offline: server wins */
    FS_OK(&r, "--db", f->db[0], "job", "transition", "J2", "--to", "INPROGRESS");
    FS_OK(&r, "--db", f->db[0], "sync");
    FS_OK(&r, "--db", f->db[0], "job", "transition", "J2", "--to", "COMPLETED");
    th_resp_t ar;
    th_req_opts_t ao = {.bearer = TH_ADMIN_TOKEN};
    assert_true(th_request(NULL, f->srv.url, "POST", "/admin/v1/jobneeds/J2/autoclose", 0, "", 0,
                           &ao, &ar));
    assert_int_equal(ar.status, 200);
    th_resp_free(&ar);
    FS_OK(&r, "--db", f->db[0], "sync");
    field(f, "jobneed", "J2", "jobstatus", v, sizeof v);
    assert_string_equal(v, "\"AUTOCLOSED\"");
    FS_OK(&r, "--db", f->db[0], "conflicts", "--json");
    assert_non_null(strstr(r.out, "AUTOCLOSED"));
    assert_non_null(strstr(r.out, "\"decision\":\"server-wins\""));
    FS_OK(&r, "--db", f->db[0], "status", "--json");
    assert_non_null(strstr(r.out, "\"conflicts\":1"));
    /* A stored reason with control characters (from a server, or a journal written by another
     * version): the list stays one line per conflict, sends no escape sequence to the terminal
     * (C1's CSI, U+009B, in UTF-8 included) and is read in its order (no U+202E, RIGHT-TO-LEFT
     * OVERRIDE); --json keeps the exact value, escaped. */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->db[0], &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "UPDATE conflicts SET reason = 'one' || char(10) || char(27) "
                                  "|| '[2J' || char(13) || char(127) || char(155) || "
                                  "char(8238) || 'two'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    FS_OK(&r, "--db", f->db[0], "conflicts");
    assert_non_null(strstr(r.out, "one"));
    assert_non_null(strstr(r.out, "two\n"));
    assert_null(strchr(strchr(r.out, '\n') + 1, '\n')); /* one line */
    for (const char *q = r.out; *q != '\0'; q++)
        if (((unsigned char)*q < 0x20 && *q != '\n') || *q == 0x7f)
            fail_msg("control character 0x%02x printed: %s", (unsigned)(unsigned char)*q, r.out);
    assert_null(strstr(r.out, "\xc2\x9b"));
    // NOLINTNEXTLINE(misc-misleading-bidirectional): the input is a bidi override, on purpose
    assert_null(strstr(r.out, "\xe2\x80\xae"));
    assert_non_null(strstr(r.out, "[2J???????two")); /* CR, DEL, U+009B: 2, U+202E: 3 */
    FS_OK(&r, "--db", f->db[0], "conflicts", "--json");
    assert_non_null(strstr(r.out, "\"reason\":\"one\\n\\u001b[2J\\r"));
}

static void test_sync__killed_mid_batch_loses_and_doubles_nothing(void **state)
{
    fx_t *f = *state;
    run_t r;
    const char *slow[] = {"--fault-latency-ms", "20", NULL};
    start(f, slow);
    assert_int_equal(tc_seed(NULL, f->srv.url, "ticket", "TK", "{}"), 201);
    init_device(f, 0, f->srv.url);
    FS_OK(&r, "--db", f->db[0], "sync");
    /* The ops are recorded through the library in this process: 300 runs of the command cost
     * minutes under qemu, and what is tested here is the sync command's. */
    const int n = 300;
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = f->db[0];
    fieldsync_t *fs = NULL;
    assert_int_equal(fieldsync_open(&cfg, &fs), FIELDSYNC_OK);
    for (int i = 0; i < n; i += 1)
        assert_int_equal(fieldsync_ticket_log(fs, "TK", "{\"n\":1}", NULL, NULL), FIELDSYNC_OK);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    /* kill syncs at several points, then let one finish */
    for (int k = 0; k < 4; k++) {
        const char *args[] = {"--db", f->db[0], "sync", "--now", NULL};
        run_fieldsync(&r, 60, 30 + 40 * k, args);
    }
    sync_until_done(f, 0, 5);
    char *fields = NULL;
    assert_true(tc_get(NULL, f->srv.url, "ticket", "TK", &fields) > 0);
    int entries = 0;
    for (const char *p = fields; (p = strstr(p, "\"n\":1")) != NULL; p++)
        entries++;
    fsa_free(fields);
    assert_int_equal(entries, n);
}

/* True when the file at path contains needle (n bytes) anywhere. */
static bool file_contains(const char *path, const void *needle, size_t n)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return false;
    bool found = false;
    size_t cap = 1 << 20, len = 0;
    unsigned char *buf = fsa_malloc(cap);
    assert_non_null(buf);
    for (;;) {
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        for (size_t i = 0; !found && len >= n && i + n <= len; i++)
            found = memcmp(buf + i, needle, n) == 0;
        if (found || got == 0 || len < n)
            break;
        /* keep the last n - 1 bytes: a match may straddle two reads */
        memmove(buf, buf + len - (n - 1), n - 1);
        len = n - 1;
    }
    fsa_free(buf);
    (void)fclose(fp);
    return found;
}

/* The secret appears in no output, log, journal or WAL, as hex text or as raw key bytes. */
static void assert_secret_absent(fx_t *f, const run_t *r, int dev)
{
    fsa_signer_key_t key;
    th_device_key(dev, &key);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key.bytes[i]);
    /* any 16 hex digits of it would be a leak */
    for (int at = 0; at + 16 <= 64; at += 8) {
        char part[17];
        memcpy(part, hex + at, 16);
        part[16] = '\0';
        if (strstr(r->out, part) != NULL || strstr(r->err, part) != NULL)
            fail_msg("secret hex in the output of fieldsync: %s%s", r->out, r->err);
    }
    const char *sfx[] = {"", "-wal", "-shm", ".users"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        char p[450];
        snprintf(p, sizeof p, "%s%s", f->db[dev], sfx[i]);
        assert_false(file_contains(p, hex, 64));
        assert_false(file_contains(p, key.bytes, 16));
    }
    assert_false(file_contains(f->srv.errlog, hex, 16));
}

static void assert_private(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        fail_msg("%s: %s", path, strerror(errno));
    if ((sb.st_mode & 0777) != 0600)
        fail_msg("%s has mode %04o, not 0600", path, (unsigned)(sb.st_mode & 0777));
}

static void test_security__private_files_and_no_secret_in_output(void **state)
{
    fx_t *f = *state;
    run_t r;
    /* The widest umask: every file the agent creates must still be private. */
    mode_t old = umask(0);
    /* the search itself finds what it looks for (the secret file holds the hex) */
    fsa_signer_key_t key;
    th_device_key(0, &key);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key.bytes[i]);
    assert_true(file_contains(f->secret[0], hex + 40, 16));
    start(f, NULL);
    init_device(f, 0, f->srv.url);
    FS_OK(&r, "--db", f->db[0], "--log-level", "debug", "ticket", "create", "T1", "priority=HIGH");
    assert_secret_absent(f, &r, 0);
    FS_OK(&r, "--db", f->db[0], "--log-level", "debug", "sync", "--now");
    assert_non_null(strstr(r.out, "1 applied"));
    assert_secret_absent(f, &r, 0);
    char p[450];
    const char *sfx[] = {"", "-wal", "-shm", ".users"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        snprintf(p, sizeof p, "%s%s", f->db[0], sfx[i]);
        if (i == 0 || access(p, F_OK) == 0) /* -wal and -shm exist only while in use */
            assert_private(p);
    }
    /* Someone widens the journal, its -wal and its -shm: the next command makes them private
     * again. A reader of our own keeps the -wal and -shm in being meanwhile (SQLite removes the
     * -wal when the last connection closes). */
    sqlite3 *reader = NULL;
    assert_int_equal(sqlite3_open_v2(f->db[0], &reader, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(reader, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL),
                     SQLITE_OK);
    char wal[450], shm[450];
    snprintf(wal, sizeof wal, "%s-wal", f->db[0]);
    snprintf(shm, sizeof shm, "%s-shm", f->db[0]);
    assert_int_equal(chmod(f->db[0], 0644), 0);
    assert_int_equal(chmod(wal, 0666), 0);
    assert_int_equal(chmod(shm, 0666), 0);
    FS_OK(&r, "--db", f->db[0], "status");
    assert_private(f->db[0]);
    assert_private(wal);
    assert_private(shm);
    sqlite3_close(reader);
    /* A wrong secret (another device's) fails to authenticate, and neither secret is printed. */
    assert_int_equal(rename(f->secret[1], f->secret[0]), 0);
    FS(&r, "--db", f->db[0], "--log-level", "debug", "ticket", "create", "T2");
    assert_int_equal(r.status, 0);
    FS(&r, "--db", f->db[0], "--log-level", "debug", "sync", "--now");
    assert_int_not_equal(r.status, 0);
    assert_secret_absent(f, &r, 0);
    assert_secret_absent(f, &r, 1);
    umask(old);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_cli__help_and_bad_usage),
        T(test_cli__options_a_subcommand_does_not_use_are_refused),
        T(test_cli__output_that_cannot_be_written_fails),
        T(test_cli__show_cannot_steer_the_terminal),
        T(test_cli__init_refuses_bad_secret_and_insecure_http),
        T(test_cli__attendance_without_position),
        T(test_cli__attendance_position_values),
        T(test_cli__entity_help_and_one_line_errors),
        T(test_sync__offline_records_then_sum_of_intents),
        T(test_sync__faults_give_exactly_once),
        T(test_sync__create_conflict_taken_local),
        T(test_sync__conflicts_resolved_per_table),
        T(test_sync__conflict_taken_local_when_the_server_agrees),
        T(test_sync__sets_in_a_row_after_another_change_keep_the_last),
        T(test_sync__killed_mid_batch_loses_and_doubles_nothing),
        T(test_security__private_files_and_no_secret_in_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
