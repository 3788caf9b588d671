/* Tests for agent/example/guard_console.c, the example app: run as a person would, through its
 * standard input and output, against the real fieldsync-server. */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fieldsync/fieldsync.h"
#include "port/alloc.h"
#include "tests/sync/server_client.h"
#include "tests/sync/server_harness.h"
#include "tests/test_exec.h"
#include "tests/test_util.h"

#ifndef FSA_CONSOLE_BIN
#error "FSA_CONSOLE_BIN must name the guard-console binary"
#endif
#ifndef FSA_TEST_EMULATOR
#define FSA_TEST_EMULATOR ""
#endif

typedef struct fx {
    th_server_t srv;
    bool started;
    char secret[400], db[400];
    pid_t pid;
    int in, out;       /* the console's stdin (write end) and stdout (read end) */
    char buf[1 << 16]; /* what it printed, all of it */
    size_t len, seen;  /* bytes read; bytes already matched */
} fx_t;

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int setup(void **state)
{
    fx_t *f = fsa_calloc(1, sizeof *f);
    f->in = f->out = -1;
    if (!th_dir_make(f->srv.dir) || !th_write_files(&f->srv, 2))
        return -1;
    snprintf(f->secret, sizeof f->secret, "%s/dev.secret", f->srv.dir);
    snprintf(f->db, sizeof f->db, "%s/dev.db", f->srv.dir);
    fsa_signer_key_t key;
    th_device_key(0, &key);
    char hex[66];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key.bytes[i]);
    int fd = open(f->secret, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, hex, 64) != 64)
        return -1;
    close(fd);
    if (!th_server_start(&f->srv, NULL))
        return -1;
    f->started = true;
    /* The device is set up through the library, as an app's installer would. */
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.flags = FIELDSYNC_OPEN_INIT;
    cfg.journal_path = f->db;
    cfg.device_id = "dev000";
    cfg.server_url = f->srv.url;
    cfg.secret_file = f->secret;
    fieldsync_t *fs = NULL;
    fieldsync_status_t st = fieldsync_open(&cfg, &fs);
    if (st != FIELDSYNC_OK)
        fprintf(stderr, "init: %s\n", fieldsync_errmsg(fs));
    if (fieldsync_close(fs) != FIELDSYNC_OK || st != FIELDSYNC_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->in >= 0)
        close(f->in);
    if (f->out >= 0)
        close(f->out);
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
    }
    if (f->started)
        th_server_stop(&f->srv);
    th_dir_remove(f->srv.dir);
    fsa_free(f);
    return 0;
}

static void spawn_console(fx_t *f)
{
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    char emu[512];
    snprintf(emu, sizeof emu, "%s", FSA_TEST_EMULATOR);
    const char *args[] = {f->db, NULL};
    const char *argv[16];
    test_exec_argv(emu, FSA_CONSOLE_BIN, args, argv, 16);
    f->pid = fork();
    assert_true(f->pid >= 0);
    if (f->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    f->in = in[1];
    f->out = out[0];
}

static void say(fx_t *f, const char *line)
{
    size_t n = strlen(line);
    assert_int_equal(write(f->in, line, n), (ssize_t)n);
    assert_int_equal(write(f->in, "\n", 1), 1);
}

/* Waits (bounded: the console's own output is the signal) until what it printed after the last
 * match contains `want`; the match moves past it. */
static void expect(fx_t *f, const char *want)
{
    int64_t end = now_ms() + 30000;
    for (;;) {
        f->buf[f->len] = '\0';
        char *hit = strstr(f->buf + f->seen, want);
        if (hit != NULL) {
            f->seen = (size_t)(hit - f->buf) + strlen(want);
            return;
        }
        int left = (int)(end - now_ms());
        if (left <= 0 || f->len + 1 >= sizeof f->buf)
            fail_msg("guard-console did not print '%s'; it printed:\n%s", want, f->buf);
        struct pollfd p = {.fd = f->out, .events = POLLIN};
        if (poll(&p, 1, left) <= 0)
            continue;
        ssize_t got = read(f->out, f->buf + f->len, sizeof f->buf - 1 - f->len);
        if (got <= 0)
            fail_msg("guard-console ended before printing '%s'; it printed:\n%s", want, f->buf);
        f->len += (size_t)got;
    }
}

static void test_guard_console__records_syncs_and_hears_the_server(void **state)
{
    fx_t *f = *state;
    spawn_console(f);
    expect(f, "ready\n");
    /* A check-in without a position fix, another with one; both reach the server. */
    say(f, "checkin p1 gate-3");
    expect(f, "ok op ");
    expect(f, "change: recorded attendance ");
    say(f, "checkout p1 gate-3 52.52 13.40");
    expect(f, "ok op ");
    say(f, "ticket T1");
    expect(f, "ok op ");
    expect(f, "change: synced ticket T1 v1\n");
    /* Another device changes the ticket on the server; a sync brings it here. */
    char op[512];
    tc_op(op, sizeof op, NULL, "increment", "ticket", "T1", ",\"field\":\"level\",\"by\":5");
    fsa_codec_result_t *res = NULL;
    size_t n = 0;
    assert_int_equal(tc_push(NULL, f->srv.url, 1, op, &res, &n), 200);
    assert_int_equal(n, 1);
    assert_int_equal(res[0].status, FSA_RESULT_APPLIED);
    fsa_codec_results_free(res, n);
    say(f, "sync");
    expect(f, "change: pulled ticket T1 v2\n");
    /* An escalation with a note with spaces: one group, level +1 on top of the server's 5. */
    say(f, "escalate T1 no answer at gate 3");
    expect(f, "ok op ");
    expect(f, "change: synced ticket T1 v3\n");
    say(f, "show ticket T1");
    expect(f, "\"level\":6");
    assert_non_null(strstr(f->buf, "no answer at gate 3"));
    say(f, "escalate NOPE");
    expect(f, "error: ");
    say(f, "frobnicate");
    expect(f, "error: unknown command");
    say(f, "status");
    expect(f, "ok ");
    say(f, "quit");
    expect(f, "status: stopped");
    int status = 0;
    assert_int_equal(waitpid(f->pid, &status, 0), f->pid);
    f->pid = 0;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The server has the escalated ticket. */
    char level[32];
    tc_field(NULL, f->srv.url, "ticket", "T1", "level", level, sizeof level);
    assert_string_equal(level, "6");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_guard_console__records_syncs_and_hears_the_server,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
