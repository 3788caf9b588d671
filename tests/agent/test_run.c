/* Tests for agent/run.c, the daemon `fieldsync run`, against the real fieldsync-server: wake on
 * record, signals, one daemon per journal, the watchdog, metrics, and no secrets in the logs. */
#define _XOPEN_SOURCE 700
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "port/alloc.h"
#include "storage/journal.h"
#include "sync/transport.h"
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

typedef struct fx {
    th_server_t srv;
    bool started;
    char secret[400], db[400], out[400], err[400], prom[400];
    pid_t daemon;
} fx_t;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Starts the fieldsync binary with args, stdout and stderr to files; returns its pid. */
static pid_t spawn(const char *out, const char *err, const char *const *args)
{
    char emu[512];
    snprintf(emu, sizeof emu, "%s", FSA_TEST_EMULATOR);
    const char *argv[64];
    test_exec_argv(emu, FSA_FIELDSYNC_BIN, args, argv, 64);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_APPEND, 0600);
        int e = open(err, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (o < 0 || e < 0)
            _exit(126);
        dup2(o, 1);
        dup2(e, 2);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    return pid;
}

/* Waits up to ms for pid; returns its exit status, 128+signal, or -1 if it is still running. */
static int wait_exit(pid_t pid, int ms)
{
    int64_t end = now_ms() + ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (now_ms() > end)
            return -1;
        sleep_ms(20);
    }
}

static int run_cli(fx_t *f, const char *const *args)
{
    pid_t pid = spawn(f->out, f->err, args);
    int st = wait_exit(pid, 60000);
    if (st == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return st;
}

static char *slurp(const char *path)
{
    static char buf[1 << 16];
    buf[0] = '\0';
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return buf;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = '\0';
    (void)fclose(fp);
    return buf;
}

/* Polls cond(f) every 50 ms for up to ms; true when it held. */
static bool eventually(fx_t *f, bool (*cond)(fx_t *), int ms)
{
    int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        if (cond(f))
            return true;
        sleep_ms(50);
    }
    return cond(f);
}

static int setup(void **state)
{
    fx_t *f = fsa_calloc(1, sizeof *f);
    if (!th_dir_make(f->srv.dir) || !th_write_files(&f->srv, 2))
        return -1;
    snprintf(f->secret, sizeof f->secret, "%s/dev.secret", f->srv.dir);
    snprintf(f->db, sizeof f->db, "%s/dev.db", f->srv.dir);
    snprintf(f->out, sizeof f->out, "%s/out.txt", f->srv.dir);
    snprintf(f->err, sizeof f->err, "%s/err.txt", f->srv.dir);
    snprintf(f->prom, sizeof f->prom, "%s/fieldsync.prom", f->srv.dir);
    fsa_signer_key_t key;
    th_device_key(0, &key);
    char hex[66];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key.bytes[i]);
    int fd = open(f->secret, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, hex, 64) != 64)
        return -1;
    close(fd);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->daemon > 0) {
        kill(f->daemon, SIGKILL);
        waitpid(f->daemon, NULL, 0);
    }
    if (f->started)
        th_server_stop(&f->srv);
    th_dir_remove(f->srv.dir);
    fsa_free(f);
    return 0;
}

static void start_server(fx_t *f, const char *const *extra)
{
    assert_true(th_server_start(&f->srv, extra));
    f->started = true;
}

static void init(fx_t *f, const char *url)
{
    const char *a[] = {"--db",     f->db, "init",          "--device-id", "dev000",
                       "--server", url,   "--secret-file", f->secret,     NULL};
    assert_int_equal(run_cli(f, a), 0);
}

static void record_ticket(fx_t *f, const char *id)
{
    const char *a[] = {"--db", f->db, "ticket", "create", id, NULL};
    assert_int_equal(run_cli(f, a), 0);
}

static bool on_server(fx_t *f, const char *id)
{
    char *fields = NULL;
    bool there = tc_get(NULL, f->srv.url, "ticket", id, &fields) > 0;
    fsa_free(fields);
    return there;
}

static bool t1_on_server(fx_t *f)
{
    return on_server(f, "T1");
}

static bool t2_on_server(fx_t *f)
{
    return on_server(f, "T2");
}

/* Starts "fieldsync --db DB [--log-level LEVEL] run ARGS..." (level NULL: the daemon's default),
 * prefix's arguments first, then extra's (either may be NULL). */
static void start_daemon_with(fx_t *f, const char *level, const char *const *prefix,
                              const char *const *extra)
{
    const char *a[32] = {"--db", f->db};
    int n = 2;
    if (level != NULL) {
        a[n++] = "--log-level";
        a[n++] = level;
    }
    a[n++] = "run";
    for (int i = 0; prefix != NULL && prefix[i] != NULL && n < 30; i++)
        a[n++] = prefix[i];
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 30; i++)
        a[n++] = extra[i];
    a[n] = NULL;
    f->daemon = spawn(f->out, f->err, a);
}

/* Starts "fieldsync [--log-level LEVEL] --db DB run ..." with metrics to f->prom every second. */
static void start_daemon_at(fx_t *f, const char *level, const char *const *extra)
{
    const char *const metrics[] = {"--metrics-every", "1", "--metrics-file", f->prom, NULL};
    start_daemon_with(f, level, metrics, extra);
}

static void start_daemon(fx_t *f, const char *const *extra)
{
    start_daemon_at(f, NULL, extra);
}

static bool daemon_running(fx_t *f)
{
    return strstr(slurp(f->err), "running on") != NULL;
}

static int stop_daemon(fx_t *f, int sig)
{
    kill(f->daemon, sig);
    int64_t t0 = now_ms();
    int st = wait_exit(f->daemon, 6000);
    int64_t took = now_ms() - t0;
    if (st == -1)
        fail_msg("the daemon did not exit within 6 s of signal %d", sig);
    f->daemon = 0;
    assert_true(took < 5000);
    return st;
}

static void test_run__wakes_on_record_and_stops_on_sigterm(void **state)
{
    fx_t *f = *state;
    start_server(f, NULL);
    init(f, f->srv.url);
    const char *slow[] = {"--interval", "3600", NULL}; /* only a wake-up can sync in time */
    start_daemon(f, slow);
    if (!eventually(f, daemon_running, 20000))
        fail_msg("the daemon did not start: %s", slurp(f->err));
    record_ticket(f, "T1");
    if (!eventually(f, t1_on_server, 10000))
        fail_msg("the record was not synced within 10 s: %s", slurp(f->err));
    record_ticket(f, "T2");
    assert_true(eventually(f, t2_on_server, 10000));
    assert_int_equal(stop_daemon(f, SIGTERM), 0);
    const char *log = slurp(f->err);
    assert_non_null(strstr(log, "SIGTERM: stopping"));
    assert_non_null(strstr(log, "stopped"));
}

static bool metrics_written(fx_t *f)
{
    return access(f->prom, F_OK) == 0;
}

/* The daemon's count of sync cycles that ended with result ("ok", "offline", "error"). */
static long cycles(fx_t *f, const char *result)
{
    char label[96];
    snprintf(label, sizeof label, "fieldsync_sync_cycles_total{result=\"%s\"} ", result);
    const char *p = strstr(slurp(f->prom), label);
    return p == NULL ? 0 : strtol(p + strlen(label), NULL, 10);
}

static bool a_cycle_failed(fx_t *f)
{
    return cycles(f, "offline") + cycles(f, "error") > 0;
}

static bool one_cycle(fx_t *f)
{
    return strstr(slurp(f->prom), "fieldsync_sync_cycles_total{result=\"ok\"} 1\n") != NULL;
}

/* Metrics are refreshed on their own period; that does not make the daemon sync. */
static void test_run__metrics_refresh_does_not_sync(void **state)
{
    fx_t *f = *state;
    start_server(f, NULL);
    init(f, f->srv.url);
    const char *slow[] = {"--interval", "3600", NULL}; /* metrics every 1 s (start_daemon) */
    start_daemon(f, slow);
    /* the first cycle at start, however slow the machine (qemu) ... */
    if (!eventually(f, one_cycle, 20000))
        fail_msg("no first sync cycle: %s", slurp(f->err));
    /* ... and then several metrics periods without another one: each time the file is taken
     * away, the daemon's next refresh writes it again (its own sign that a period passed) */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(unlink(f->prom), 0);
        if (!eventually(f, metrics_written, 20000))
            fail_msg("the metrics file was not written again: %s", slurp(f->err));
        if (!one_cycle(f))
            fail_msg("expected exactly one sync cycle:\n%s", slurp(f->prom));
    }
    assert_int_equal(stop_daemon(f, SIGTERM), 0);
}

/* "running on" twice in the log: a second daemon got as far as the first. */
static bool two_daemons_ran(fx_t *f)
{
    const char *first = strstr(slurp(f->err), "running on");
    return first != NULL && strstr(first + 1, "running on") != NULL;
}

static void test_run__one_daemon_per_journal(void **state)
{
    fx_t *f = *state;
    start_server(f, NULL);
    init(f, f->srv.url);
    start_daemon(f, NULL);
    assert_true(eventually(f, daemon_running, 20000)); /* it holds the lock by then */
    const char *a[] = {"--db", f->db, "run", NULL};
    assert_int_equal(run_cli(f, a), 1);
    assert_non_null(strstr(slurp(f->err), "already syncing"));
    /* the refusal names the running daemon by the pid it wrote into the lock file */
    char holder[48];
    snprintf(holder, sizeof holder, "(pid %ld)", (long)f->daemon);
    if (strstr(slurp(f->err), holder) == NULL)
        fail_msg("expected %s in: %s", holder, slurp(f->err));
    assert_int_equal(stop_daemon(f, SIGINT), 0);
    /* once it is gone, a new one may run (and a SIGTERM once it runs stops it cleanly) */
    start_daemon(f, NULL);
    if (!eventually(f, two_daemons_ran, 20000))
        fail_msg("the second daemon did not start: %s", slurp(f->err));
    assert_int_equal(stop_daemon(f, SIGTERM), 0);
}

static bool reloaded(fx_t *f)
{
    return strstr(slurp(f->err), "SIGHUP: reloading") != NULL && t1_on_server(f);
}

static void test_run__sighup_reloads_configuration(void **state)
{
    fx_t *f = *state;
    start_server(f, NULL);
    init(f, "http://127.0.0.1:9"); /* wrong: nothing listens there */
    record_ticket(f, "T1");
    const char *fast[] = {"--interval", "1", NULL};
    start_daemon(f, fast);
    /* running (its signals are taken from then on), and unable to sync */
    if (!eventually(f, daemon_running, 20000))
        fail_msg("the daemon did not start: %s", slurp(f->err));
    if (!eventually(f, a_cycle_failed, 20000))
        fail_msg("no failed sync cycle counted: %s", slurp(f->prom));
    assert_false(t1_on_server(f));
    init(f, f->srv.url);
    kill(f->daemon, SIGHUP);
    if (!eventually(f, reloaded, 15000))
        fail_msg("no sync after SIGHUP: %s", slurp(f->err));
    assert_int_equal(stop_daemon(f, SIGTERM), 0);
}

static bool reload_refused(fx_t *f)
{
    const char *e = slurp(f->err);
    const char *r = strstr(e, "reload: ");
    return r != NULL && strstr(r, "TURBO") != NULL &&
           strstr(r, "the configuration in use stays") != NULL;
}

static bool reload_done(fx_t *f)
{
    return strstr(slurp(f->err), "the configuration is reloaded") != NULL;
}

/* A reload that cannot use the stored configuration (a retry policy this build does not know, as
 * a newer agent's init could store) is refused: the daemon says why, keeps running and syncs
 * with the configuration in use. A reload of a usable one then says that it took it. */
static void test_run__sighup_refused_reload_keeps_the_configuration(void **state)
{
    fx_t *f = *state;
    start_server(f, NULL);
    init(f, f->srv.url);
    const char *fast[] = {"--interval", "1", NULL};
    start_daemon(f, fast);
    if (!eventually(f, daemon_running, 20000))
        fail_msg("the daemon did not start: %s", slurp(f->err));
    assert_true(th_journal_state_set(f->db, "retry_policy", "TURBO"));
    kill(f->daemon, SIGHUP);
    if (!eventually(f, reload_refused, 15000))
        fail_msg("no refused reload reported: %s", slurp(f->err));
    assert_false(reload_done(f));
    /* The CLI refuses the journal now (it reads the stored policy too): recorded through the
     * journal itself, which wakes the daemon as any process's record does. */
    fsa_journal_t *j = NULL;
    fsa_journal_opts_t o = {0};
    char err[256];
    assert_int_equal(fsa_journal_open(fsa_port_posix(), f->db, &o, &j, err, sizeof err), FSA_OK);
    fsa_rec_t rec;
    assert_int_equal(fsa_journal_create(j, FSA_TYPE_TICKET, "T1", NULL, NULL, &rec), FSA_OK);
    fsa_journal_close(j);
    if (!eventually(f, t1_on_server, 20000))
        fail_msg("no sync after the refused reload: %s", slurp(f->err));
    assert_int_equal(waitpid(f->daemon, NULL, WNOHANG), 0); /* still running */
    assert_true(th_journal_state_set(f->db, "retry_policy", "CONSERVATIVE"));
    kill(f->daemon, SIGHUP);
    if (!eventually(f, reload_done, 15000))
        fail_msg("no reload reported: %s", slurp(f->err));
    assert_int_equal(stop_daemon(f, SIGTERM), 0);
}

static bool stalled(fx_t *f)
{
    return strstr(slurp(f->prom), "\nfieldsync_watchdog_stalled 1\n") != NULL;
}

static void test_run__watchdog_notices_a_stuck_queue(void **state)
{
    fx_t *f = *state;
    const char *broken[] = {"--fault-5xx", "1", NULL}; /* the server answers, always 500 */
    start_server(f, broken);
    init(f, f->srv.url);
    record_ticket(f, "T1");
    const char *a[] = {"--interval", "1", "--stall-after", "1", NULL};
    start_daemon(f, a);
    if (!eventually(f, stalled, 20000))
        fail_msg("watchdog did not fire: %s", slurp(f->err));
    assert_non_null(strstr(slurp(f->err), "watchdog: the queue stopped moving"));
    assert_int_equal(stop_daemon(f, SIGTERM), 0);
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    char *buf = arg;
    size_t have = strlen(buf), add = size * n;
    if (have + add >= 16384)
        add = 16383 - have;
    memcpy(buf + have, p, add);
    buf[have + add] = '\0';
    return size * n;
}

static bool port_printed(fx_t *f)
{
    return strstr(slurp(f->out), "metrics on port ") != NULL;
}

/* The port the daemon printed ("metrics on port N"); 0 when none yet. */
static int printed_port(fx_t *f)
{
    const char *p = strstr(slurp(f->out), "metrics on port ");
    return p != NULL ? (int)strtol(p + 16, NULL, 10) : 0;
}

/* GET http://127.0.0.1:port/metrics into body (16 KiB); the HTTP status. */
static long scrape(int port, char *body)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    long code = 0;
    body[0] = '\0';
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    return code;
}

static void test_run__metrics_file_and_endpoint(void **state)
{
    fx_t *f = *state;
    start_server(f, NULL);
    init(f, f->srv.url);
    record_ticket(f, "T1");
    const char *ok[] = {"--metrics-listen", "127.0.0.1:0", NULL};
    start_daemon_at(f, "debug", ok); /* the secret must stay out of the log even at debug */
    assert_true(eventually(f, t1_on_server, 10000));
    assert_true(eventually(f, port_printed, 5000));
    int port = printed_port(f);
    assert_true(port > 0);
    char body[16384] = "";
    /* The server has the record; the daemon counts it when its cycle ends: poll the endpoint. */
    long code = 0;
    for (int i = 0; i < 200; i++) {
        code = scrape(port, body);
        if (strstr(body, "fieldsync_results_total{status=\"applied\"} 1") != NULL)
            break;
        sleep_ms(50);
    }
    assert_int_equal(code, 200);
    static const char *const names[] = {
        "fieldsync_queue_depth 0",
        "fieldsync_oldest_pending_age_seconds",
        "fieldsync_pushes_total",
        "fieldsync_results_total{status=\"applied\"} 1",
        "fieldsync_retries_total{policy=\"DEFAULT\"}",
        "fieldsync_conflicts_total{kind=\"rebased\"}",
        "fieldsync_lock_waits_total",
        "fieldsync_clock_offset_seconds",
        "# TYPE fieldsync_queue_depth gauge",
        "\nfieldsync_watchdog_stalled 0\n",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strstr(body, names[i]) == NULL)
            fail_msg("endpoint lacks '%s':\n%s", names[i], body);
    assert_int_equal(stop_daemon(f, SIGTERM), 0);
    /* the file holds the same set, written atomically */
    const char *file = slurp(f->prom);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strstr(file, names[i]) == NULL)
            fail_msg("metrics file lacks '%s'", names[i]);
    struct stat sb;
    char tmp[420];
    snprintf(tmp, sizeof tmp, "%s.tmp", f->prom);
    assert_int_not_equal(stat(tmp, &sb), 0);
    /* never a secret in the logs, even at debug level */
    char *secret = NULL;
    FILE *fp = fopen(f->secret, "r");
    char hex[80] = "";
    assert_non_null(fgets(hex, sizeof hex, fp));
    (void)fclose(fp);
    secret = hex;
    assert_null(strstr(slurp(f->err), secret));
    /* only loopback addresses may serve metrics */
    const char *bad[] = {"--db", f->db, "run", "--metrics-listen", "0.0.0.0:0", NULL};
    assert_int_not_equal(run_cli(f, bad), 0);
    assert_non_null(strstr(slurp(f->err), "loopback"));
}

static bool refused_logged(fx_t *f)
{
    return strstr(slurp(f->err), "refused this device") != NULL;
}

/* PROTOCOL.md 7.4: a refusal (401) does not stop the device for good: the daemon keeps running,
 * and once the configuration is fixed and reloaded, it syncs. */
static void test_run__refused_device_keeps_running(void **state)
{
    fx_t *f = *state;
    start_server(f, NULL);
    init(f, f->srv.url);
    record_ticket(f, "T1");
    /* device 1's secret under device 0's name: the server refuses every request */
    fsa_signer_key_t key;
    th_device_key(1, &key);
    char hex[66];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key.bytes[i]);
    int fd = open(f->secret, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, hex, 64), 64);
    close(fd);
    const char *fast[] = {"--interval", "1", NULL};
    start_daemon(f, fast);
    if (!eventually(f, refused_logged, 20000))
        fail_msg("no refusal logged: %s", slurp(f->err));
    assert_int_equal(waitpid(f->daemon, NULL, WNOHANG), 0); /* still running */
    assert_false(t1_on_server(f));
    th_device_key(0, &key);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key.bytes[i]);
    fd = open(f->secret, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, hex, 64), 64);
    close(fd);
    kill(f->daemon, SIGHUP);
    if (!eventually(f, t1_on_server, 20000))
        fail_msg("no sync after the fix and SIGHUP: %s", slurp(f->err));
    assert_int_equal(stop_daemon(f, SIGTERM), 0);
}

static void test_run__bad_arguments(void **state)
{
    fx_t *f = *state;
    const char *a[] = {"--db", f->db, "run", "--interval", "soon", NULL};
    assert_int_equal(run_cli(f, a), 2);
    assert_non_null(strstr(slurp(f->err), "--interval soon"));
    const char *b[] = {"--db", f->db, "run", "--frob", "1", NULL};
    assert_int_equal(run_cli(f, b), 2);
    assert_non_null(strstr(slurp(f->err), "unknown option '--frob'"));
    const char *m[] = {"--db", f->db, "run", "--syslog", "--interval", NULL};
    assert_int_equal(run_cli(f, m), 2);
    assert_non_null(strstr(slurp(f->err), "option '--interval' needs a value"));
    const char *p[] = {"--db", f->db, "run", "now", NULL};
    assert_int_equal(run_cli(f, p), 2);
    assert_non_null(strstr(slurp(f->err), "unexpected argument 'now'"));
    const char *h[] = {"--db", f->db, "run", "--interval", "5", "--help", NULL};
    assert_int_equal(run_cli(f, h), 0);
    assert_non_null(strstr(slurp(f->out), "usage: fieldsync --db FILE run"));
    const char *c[] = {"--db", f->db, "run", NULL}; /* no journal */
    assert_int_equal(run_cli(f, c), 1);
    assert_non_null(strstr(slurp(f->err), "fieldsync init"));
}

/* Empties the captured stderr, so that what a check finds there is the last run's. */
static void clear_err(fx_t *f)
{
    int fd = open(f->err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    close(fd);
}

/* The number of lines in text. */
static int lines(const char *text)
{
    int n = 0;
    for (const char *p = text; (p = strchr(p, '\n')) != NULL; p++)
        n++;
    return n;
}

/* --log-level governs the daemon's own lines too: at "error", no info or warn line. */
static void test_run__log_level_drops_lower_lines(void **state)
{
    fx_t *f = *state;
    init(f, "http://127.0.0.1:9"); /* nothing listens: the cycles fail (warnings) */
    record_ticket(f, "T1");
    const char *listen[] = {"--metrics-listen", "127.0.0.1:0", NULL};
    start_daemon_at(f, "error", listen);
    /* the port is printed (stdout, not a log line) once the signals are the daemon's */
    if (!eventually(f, port_printed, 20000))
        fail_msg("the daemon did not start: %s", slurp(f->err));
    if (!eventually(f, a_cycle_failed, 20000))
        fail_msg("no failed sync cycle counted: %s", slurp(f->prom));
    assert_int_equal(stop_daemon(f, SIGTERM), 0);
    const char *log = slurp(f->err);
    if (strstr(log, ": info: ") != NULL || strstr(log, ": warn: ") != NULL)
        fail_msg("lines below --log-level error were logged:\n%s", log);
}

/* A loopback server that takes connections (the kernel's backlog) and never answers. */
static int hanging_server(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static double oldest_age(const char *body)
{
    static const char name[] = "\nfieldsync_oldest_pending_age_seconds ";
    const char *p = strstr(body, name);
    return p != NULL ? strtod(p + strlen(name), NULL) : -1.0;
}

/* With --metrics-listen alone the metrics are still refreshed every --metrics-every seconds:
 * the oldest op's age moves while a request hangs (no status event comes then). */
static void test_run__metrics_listen_alone_is_refreshed(void **state)
{
    fx_t *f = *state;
    int hport = 0;
    int hfd = hanging_server(&hport);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", hport);
    init(f, url);
    record_ticket(f, "T1");
    const char *a[] = {"--interval",  "3600", "--metrics-every", "1", "--metrics-listen",
                       "127.0.0.1:0", NULL};
    start_daemon_with(f, NULL, NULL, a);
    if (!eventually(f, port_printed, 20000))
        fail_msg("the daemon did not start: %s", slurp(f->err));
    /* the daemon's request is in flight once its connection waits to be accepted */
    struct pollfd p = {hfd, POLLIN, 0};
    if (poll(&p, 1, 20000) != 1)
        fail_msg("the daemon did not connect: %s", slurp(f->err));
    char body[16384];
    assert_int_equal(scrape(printed_port(f), body), 200);
    double first = oldest_age(body), age = first;
    assert_true(first >= 0.0);
    int64_t end = now_ms() + 15000;
    while (age < first + 2.0 && now_ms() < end) {
        sleep_ms(100);
        assert_int_equal(scrape(printed_port(f), body), 200);
        age = oldest_age(body);
    }
    if (age < first + 2.0)
        fail_msg("the oldest pending age stayed at %.3f s (from %.3f s) for 15 s:\n%s", age, first,
                 body);
    close(hfd); /* the request ends (reset): the daemon stops at once */
    assert_int_equal(stop_daemon(f, SIGTERM), 0);
}

static bool stale_replaced(fx_t *f)
{
    return strstr(slurp(f->prom), "\nfieldsync_watchdog_stalled 0\n") != NULL;
}

/* The metrics file is written at start, not a period later: a stale one goes at once. */
static void test_run__metrics_file_written_at_start(void **state)
{
    fx_t *f = *state;
    init(f, "http://127.0.0.1:9");
    FILE *fp = fopen(f->prom, "w");
    assert_non_null(fp);
    fputs("# HELP fieldsync_queue_depth a previous run's\nfieldsync_watchdog_stalled 1\n", fp);
    assert_int_equal(fclose(fp), 0);
    const char *hourly[] = {"--metrics-every", "3600", NULL};
    start_daemon(f, hourly);
    if (!eventually(f, daemon_running, 20000))
        fail_msg("the daemon did not start: %s", slurp(f->err));
    /* "running on" is said after the start, which wrote the file */
    if (!stale_replaced(f))
        fail_msg("the metrics file was not written at start:\n%s", slurp(f->prom));
    assert_int_equal(stop_daemon(f, SIGTERM), 0);
}

/* A metrics file that cannot be written stops the start: exit 1, one line naming it and why. */
static void test_run__unwritable_metrics_file_fails_the_start(void **state)
{
    fx_t *f = *state;
    init(f, "http://127.0.0.1:9");
    char bad[440];
    snprintf(bad, sizeof bad, "%s/missing/m.prom", f->srv.dir);
    clear_err(f);
    const char *a[] = {"--db", f->db, "run", "--metrics-file", bad, NULL};
    f->daemon = spawn(f->out, f->err, a);
    int st = wait_exit(f->daemon, 20000);
    if (st == -1)
        fail_msg("the daemon runs with an unwritable metrics file: %s", slurp(f->err));
    f->daemon = 0;
    assert_int_equal(st, 1);
    const char *log = slurp(f->err);
    if (lines(log) != 1 || strstr(log, bad) == NULL || strstr(log, strerror(ENOENT)) == NULL)
        fail_msg("expected one line naming %s and the reason, got:\n%s", bad, log);
}

/* The bytes of the file at path (at most cap), in buf; their count. */
static size_t file_bytes(const char *path, char *buf, size_t cap)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return 0;
    size_t n = fread(buf, 1, cap, fp);
    (void)fclose(fp);
    return n;
}

/* The metrics file replaces only an earlier metrics file (or an empty one): a path that names the
 * journal, the device's secret or any other file is a usage error (2), one line naming it, and
 * the file is left as it was; so is one of the journal's own names that does not exist yet (its
 * WAL, made at the open). (Before, the journal was replaced by metrics, and its pending ops
 * lost.) */
static void test_run__metrics_file_never_replaces_another_file(void **state)
{
    fx_t *f = *state;
    init(f, "http://127.0.0.1:9");
    record_ticket(f, "T1");
    char other[440], wal[440], locks[440];
    snprintf(other, sizeof other, "%s/notes.txt", f->srv.dir);
    snprintf(wal, sizeof wal, "%s-wal", f->db);
    snprintf(locks, sizeof locks, "%s.locks", f->db);
    FILE *fp = fopen(other, "w");
    assert_non_null(fp);
    fputs("fieldsync_queue_depth 3\n", fp); /* metrics-like, but not what the daemon writes */
    assert_int_equal(fclose(fp), 0);
    static const struct {
        int which; /* 0 the journal, 1 the secret, 2 another file, 3 the journal's WAL, 4 the
                      lock manager's table (made by the first process that takes a lock) */
        const char *says;
    } cases[] = {{0, "one of the journal's own files"},
                 {1, "not a fieldsync metrics file"},
                 {2, "not a fieldsync metrics file"},
                 {3, "one of the journal's own files"},
                 {4, "one of the journal's own files"}};
    static char before[1 << 16], after[1 << 16];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *target = cases[i].which == 0   ? f->db
                             : cases[i].which == 1 ? f->secret
                             : cases[i].which == 2 ? other
                             : cases[i].which == 3 ? wal
                                                   : locks;
        size_t nb = file_bytes(target, before, sizeof before);
        clear_err(f);
        const char *a[] = {"--db", f->db, "run", "--metrics-file", target, NULL};
        f->daemon = spawn(f->out, f->err, a);
        int st = wait_exit(f->daemon, 20000);
        if (st == -1)
            fail_msg("the daemon runs with --metrics-file %s: %s", target, slurp(f->err));
        f->daemon = 0;
        const char *log = slurp(f->err);
        if (st != 2 || lines(log) != 1 || strstr(log, target) == NULL ||
            strstr(log, cases[i].says) == NULL)
            fail_msg("--metrics-file %s: exit %d, expected 2 and one line saying '%s':\n%s", target,
                     st, cases[i].says, log);
        size_t na = file_bytes(target, after, sizeof after);
        if (na != nb || memcmp(after, before, nb) != 0)
            fail_msg("%s changed", target);
    }
    /* the journal still holds its op */
    const char *a[] = {"--db", f->db, "show", "ticket", "T1", NULL};
    assert_int_equal(run_cli(f, a), 0);

    /* A metrics path whose old temporary name ("<path>.tmp", removed before each write) was the
     * journal: the first write removed the journal. The temporary name is the writer's own now
     * (fsa_file_write_atomic): the journal stays. */
    char tdb[448], tmetrics[448];
    snprintf(tdb, sizeof tdb, "%s/j2.tmp", f->srv.dir);
    snprintf(tmetrics, sizeof tmetrics, "%s/j2", f->srv.dir);
    const char *ti[] = {"--db",
                        tdb,
                        "init",
                        "--device-id",
                        "dev000",
                        "--server",
                        "http://127.0.0.1:9",
                        "--secret-file",
                        f->secret,
                        NULL};
    assert_int_equal(run_cli(f, ti), 0);
    const char *tc[] = {"--db", tdb, "ticket", "create", "T2", NULL};
    assert_int_equal(run_cli(f, tc), 0);
    clear_err(f);
    const char *tr[] = {"--db", tdb, "run", "--metrics-file", tmetrics, NULL};
    f->daemon = spawn(f->out, f->err, tr);
    if (!eventually(f, daemon_running, 20000))
        fail_msg("the daemon did not start: %s", slurp(f->err));
    assert_int_equal(stop_daemon(f, SIGTERM), 0);
    assert_int_equal(access(tmetrics, F_OK), 0);
    assert_int_equal(access(tdb, F_OK), 0);
    const char *ts[] = {"--db", tdb, "show", "ticket", "T2", NULL};
    assert_int_equal(run_cli(f, ts), 0);
}

/* A number of seconds is a plain decimal number: hex, spaces, "inf" are usage errors (2), and the
 * error is one line whatever the value holds (a newline, an escape). */
static void test_run__bad_seconds_are_one_line_usage_errors(void **state)
{
    fx_t *f = *state;
    /* (hex last: a daemon that took it would run until the test's timeout) */
    static const char *const bad[] = {
        "5\nfieldsync: fake line", "\033[31m5", "inf", "1e9", "0x3c", " 0x3c"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clear_err(f);
        const char *a[] = {"--db", f->db, "run", "--interval", bad[i], NULL};
        int st = run_cli(f, a);
        const char *log = slurp(f->err);
        if (st != 2 || lines(log) != 1 || strchr(log, '\033') != NULL ||
            strstr(log, "expected seconds between 1 and 86400") == NULL)
            fail_msg("--interval '%s': exit %d, expected 2 and one line:\n%s", bad[i], st, log);
    }
}

/* --metrics-listen is checked with the other options: a usage error (2), before the journal is
 * opened (there is none here), saying what is wrong. */
static void test_run__bad_metrics_listen_is_a_usage_error(void **state)
{
    fx_t *f = *state;
    static const struct {
        const char *spec, *says, *not_says;
    } bad[] = {
        {"127.0.0.1:99999", "from 0 to 65535", "loopback"},
        {"127.0.0.1:-1", "from 0 to 65535", "loopback"},
        {"127.0.0.1: 0", "without spaces", "loopback"},
        {"127.0.0.1:0 ", "without spaces", "loopback"},
        {"0.0.0.0:9100", "loopback", "65535"},
        {"127.0.0.1", "expected HOST:PORT", "loopback"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clear_err(f);
        const char *a[] = {"--db", f->db, "run", "--metrics-listen", bad[i].spec, NULL};
        int st = run_cli(f, a);
        const char *log = slurp(f->err);
        if (st != 2 || lines(log) != 1 || strstr(log, bad[i].spec) == NULL ||
            strstr(log, bad[i].says) == NULL || strstr(log, bad[i].not_says) != NULL)
            fail_msg("--metrics-listen '%s': exit %d, expected 2 and one line with '%s':\n%s",
                     bad[i].spec, st, bad[i].says, log);
    }
}

int main(void)
{
    if (fsa_transport_global_init() != FSA_OK)
        return 1;
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_run__wakes_on_record_and_stops_on_sigterm),
        T(test_run__metrics_refresh_does_not_sync),
        T(test_run__one_daemon_per_journal),
        T(test_run__sighup_reloads_configuration),
        T(test_run__sighup_refused_reload_keeps_the_configuration),
        T(test_run__watchdog_notices_a_stuck_queue),
        T(test_run__metrics_file_and_endpoint),
        T(test_run__refused_device_keeps_running),
        T(test_run__bad_arguments),
        T(test_run__log_level_drops_lower_lines),
        T(test_run__metrics_listen_alone_is_refreshed),
        T(test_run__metrics_file_written_at_start),
        T(test_run__unwritable_metrics_file_fails_the_start),
        T(test_run__metrics_file_never_replaces_another_file),
        T(test_run__bad_seconds_are_one_line_usage_errors),
        T(test_run__bad_metrics_listen_is_a_usage_error),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
