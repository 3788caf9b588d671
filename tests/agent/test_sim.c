/* Integration tests for fieldsync-sim (agent/sim/): the real binary, each scenario with a small
 * fleet against the server it starts, its reports, its usage errors, --server mode, and an
 * invariant failure that makes it exit non-zero. */
#define _XOPEN_SOURCE 700
#include <dirent.h>
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

#include <cjson/cJSON.h>

#include "port/alloc.h"
#include "tests/sync/server_harness.h"
#include "tests/test_exec.h"
#include "tests/test_read.h"
#include "tests/test_util.h"

#ifndef FSA_SIM_BIN
#error "FSA_SIM_BIN must name the fieldsync-sim binary"
#endif
#ifndef FSA_TEST_EMULATOR
#define FSA_TEST_EMULATOR ""
#endif

static char self_path[4096]; /* this program, the --server-hook of the tests */

typedef struct run {
    int status; /* exit status, 128+signal, -1 on timeout */
    char out[16384];
    char err[8192];
} run_t;

static long elapsed_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Runs fieldsync-sim with args (NULL-terminated) through the emulator when cross-compiled,
 * collecting stdout and stderr, bounded by timeout_s. */
static void run_sim(run_t *r, int timeout_s, const char *const *args)
{
    memset(r, 0, sizeof *r);
    char emu[512];
    snprintf(emu, sizeof emu, "%s", FSA_TEST_EMULATOR);
    const char *argv[64];
    (void)test_exec_argv(emu, FSA_SIM_BIN, args, argv, sizeof argv / sizeof argv[0]);
    int po[2], pe[2];
    assert_int_equal(pipe(po), 0);
    assert_int_equal(pipe(pe), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        close(po[1]);
        close(pe[1]);
        /* Cross-built: the simulator runs under the emulator, and so must the server it starts. */
        if (FSA_TEST_EMULATOR[0] != '\0')
            setenv("FIELDSYNC_SERVER_EMULATOR", FSA_TEST_EMULATOR, 1);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    int fds_open[2] = {po[0], pe[0]};
    size_t len[2] = {0, 0};
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool killed = false;
    while (fds_open[0] >= 0 || fds_open[1] >= 0) {
        struct pollfd fds[2] = {{fds_open[0], POLLIN, 0}, {fds_open[1], POLLIN, 0}};
        poll(fds, 2, 100);
        for (int k = 0; k < 2; k++) {
            if (fds_open[k] < 0 || fds[k].revents == 0)
                continue;
            char *buf = k == 0 ? r->out : r->err;
            size_t cap = k == 0 ? sizeof r->out : sizeof r->err;
            char tmp[2048];
            ssize_t got = read(fds_open[k], tmp, sizeof tmp);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) {
                close(fds_open[k]);
                fds_open[k] = -1;
                continue;
            }
            size_t take = (size_t)got < cap - 1 - len[k] ? (size_t)got : cap - 1 - len[k];
            memcpy(buf + len[k], tmp, take);
            len[k] += take;
            buf[len[k]] = '\0';
        }
        if (!killed && elapsed_ms(&t0) > timeout_s * 1000L) {
            kill(pid, SIGKILL);
            killed = true;
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (killed)
        r->status = -1;
    else if (WIFEXITED(status))
        r->status = WEXITSTATUS(status);
    else
        r->status = 128 + WTERMSIG(status);
}

typedef struct tmp {
    char dir[256];
    char report[320];
    char html[320];
} tmp_t;

static void tmp_make(tmp_t *t)
{
    assert_true(th_dir_make(t->dir));
    snprintf(t->report, sizeof t->report, "%s/report.json", t->dir);
    snprintf(t->html, sizeof t->html, "%s/report.html", t->dir);
}

static int64_t num(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsNumber(v))
        fail_msg("report: %s is missing or not a number", name);
    return (int64_t)v->valuedouble;
}

/* Checks one scenario's report: every invariant named and passing (or, when allow_not_checked,
 * not checked), and its counts consistent. */
static void check_scenario(const cJSON *s, bool allow_not_checked)
{
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "name");
    assert_true(cJSON_IsString(name));
    const cJSON *inv = cJSON_GetObjectItemCaseSensitive(s, "invariants");
    assert_true(cJSON_IsArray(inv));
    assert_true(cJSON_GetArraySize(inv) >= 3);
    const cJSON *v;
    cJSON_ArrayForEach(v, inv)
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(v, "name");
        const cJSON *res = cJSON_GetObjectItemCaseSensitive(v, "result");
        const cJSON *det = cJSON_GetObjectItemCaseSensitive(v, "details");
        assert_true(cJSON_IsString(n) && n->valuestring[0] != '\0');
        assert_true(cJSON_IsString(res) && cJSON_IsString(det));
        bool pass = strcmp(res->valuestring, "pass") == 0;
        bool nc = strcmp(res->valuestring, "not checked") == 0;
        if (!pass && !(allow_not_checked && nc))
            fail_msg("%s: invariant %s is %s: %s", name->valuestring, n->valuestring,
                     res->valuestring, det->valuestring);
    }
    const cJSON *ops = cJSON_GetObjectItemCaseSensitive(s, "ops");
    assert_true(cJSON_IsObject(ops));
    int64_t recorded = num(ops, "recorded");
    assert_true(recorded > 0);
    assert_int_equal(num(ops, "lost"), 0);
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(s, "counts_source");
    if (cJSON_IsString(src) && strcmp(src->valuestring, "server") == 0)
        /* Every op id got one first answer: the recorded ones and the rebased ones. */
        assert_int_equal(num(ops, "applied") + num(ops, "conflict") + num(ops, "rejected"),
                         recorded + num(ops, "rebased"));
    const cJSON *lag = cJSON_GetObjectItemCaseSensitive(s, "sync_lag_ms");
    assert_true(cJSON_IsObject(lag));
    assert_true(num(lag, "p50") <= num(lag, "p99"));
    assert_true(num(lag, "samples") > 0);
    (void)num(s, "retries");
}

static cJSON *load_report(const char *path)
{
    char *text = test_read_file(path);
    assert_non_null(text);
    cJSON *root = cJSON_Parse(text);
    fsa_free(text);
    assert_true(cJSON_IsObject(root));
    return root;
}

/* One scenario with a small fleet: exit 0, the report and the HTML. */
/* Runs one scenario, which must pass whole; must (NULL: none) names an invariant that must be
 * among those checked, and pass. */
static void scenario(const char *name, const char *devices, const char *extra_opt,
                     const char *extra_val, const char *must)
{
    tmp_t t;
    tmp_make(&t);
    run_t r;
    const char *args[] = {"--scenario", name,     "--devices", devices,    "--ops",
                          "12",         "--seed", "7",         "--report", t.report,
                          "--html",     t.html,   extra_opt,   extra_val,  NULL};
    run_sim(&r, 120, args);
    if (r.status != 0)
        fail_msg("fieldsync-sim --scenario %s exited %d\nstdout:\n%s\nstderr:\n%s", name, r.status,
                 r.out, r.err);
    assert_non_null(strstr(r.out, "result: all"));
    cJSON *root = load_report(t.report);
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(root, "ok");
    assert_true(cJSON_IsTrue(ok));
    const cJSON *scs = cJSON_GetObjectItemCaseSensitive(root, "scenarios");
    assert_int_equal(cJSON_GetArraySize(scs), 1);
    const cJSON *s = cJSON_GetArrayItem(scs, 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(s, "name")->valuestring, name);
    check_scenario(s, false);
    bool found = must == NULL;
    const cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(s, "invariants"))
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(v, "name");
        found = found || (cJSON_IsString(n) && strcmp(n->valuestring, must) == 0 &&
                          cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "pass")));
    }
    if (!found)
        fail_msg("%s: no passed invariant %s", name, must);
    cJSON_Delete(root);
    char *html = test_read_file(t.html);
    assert_non_null(html);
    assert_non_null(strstr(html, "<svg"));
    /* Self-contained: no scripts, stylesheets or images from anywhere. */
    assert_null(strstr(html, "<script"));
    assert_null(strstr(html, "<link"));
    assert_null(strstr(html, "src="));
    assert_null(strstr(html, "href="));
    fsa_free(html);
    unlink(t.report);
    unlink(t.html);
    th_dir_remove(t.dir);
}

static void test_sim__autoclose(void **state)
{
    (void)state;
    scenario("autoclose", "8", NULL, NULL, NULL);
}

static void test_sim__checkpoints(void **state)
{
    (void)state;
    scenario("checkpoints", "6", NULL, NULL, NULL);
}

static void test_sim__escalation(void **state)
{
    (void)state;
    scenario("escalation", "6", NULL, NULL, NULL);
}

static void test_sim__ticketlog(void **state)
{
    (void)state;
    scenario("ticketlog", "10", NULL, NULL, NULL);
}

static void test_sim__json(void **state)
{
    (void)state;
    scenario("json", "10", NULL, NULL, NULL);
}

/* Past 100 devices the shared entities are per group of 100 devices, each group's in the scope of
 * its devices only (docs/sim.md, Scopes): 104 devices merge into two jobs, every key of each
 * present, and device 103's scope names group 1, not group 0. */
static void test_sim__groups_scoped(void **state)
{
    (void)state;
    tmp_t t;
    tmp_make(&t);
    char wd[400];
    snprintf(wd, sizeof wd, "%s/work", t.dir);
    run_t r;
    const char *args[] = {"--scenario", "json",   "--devices", "104", "--ops", "12", "--seed", "3",
                          "--report",   t.report, "--workdir", wd,    NULL};
    run_sim(&r, 180, args);
    if (r.status != 0)
        fail_msg("fieldsync-sim exited %d\nstdout:\n%s\nstderr:\n%s", r.status, r.out, r.err);
    cJSON *root = load_report(t.report);
    const cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "scenarios"), 0);
    check_scenario(s, false);
    assert_int_equal(num(s, "devices"), 104);
    const cJSON *v;
    bool seen = false;
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(s, "invariants"))
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(v, "name");
        if (strcmp(n->valuestring, "all_keys_present") != 0)
            continue;
        seen = true;
        const char *det = cJSON_GetObjectItemCaseSensitive(v, "details")->valuestring;
        if (strstr(det, "2 jobs checked") == NULL)
            fail_msg("all_keys_present: %s (expected 2 jobs: one per group of 100)", det);
    }
    assert_true(seen);
    cJSON_Delete(root);
    char p[480];
    snprintf(p, sizeof p, "%s/devices.json", wd);
    char *text = test_read_file(p);
    assert_non_null(text);
    cJSON *devs = cJSON_Parse(text);
    fsa_free(text);
    const cJSON *d103 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(devs, "devices"), 103);
    const cJSON *people =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(d103, "scope"), "people");
    assert_true(cJSON_IsArray(people));
    bool grp1 = false, grp0 = false;
    cJSON_ArrayForEach(v, people)
    {
        grp1 = grp1 || (cJSON_IsString(v) && strstr(v->valuestring, ".grp1") != NULL &&
                        strstr(v->valuestring, ".grp10") == NULL);
        grp0 = grp0 || (cJSON_IsString(v) && strstr(v->valuestring, ".grp0") != NULL);
    }
    assert_true(grp1);
    assert_false(grp0);
    cJSON_Delete(devs);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t.dir);
    assert_int_equal(system(cmd), 0);
}

static void test_sim__attendance(void **state)
{
    (void)state;
    scenario("attendance", "8", NULL, NULL, NULL);
}

/* flaky: server faults (dropped responses in the next test), crashes mid-sync, clocks off by
 * hours; everything must hold. */
static void test_sim__flaky(void **state)
{
    (void)state;
    /* A device restored from a backup resends what it had sent: answered duplicate, each. */
    scenario("flaky", "12", "--faults", "5xx=0.05,429=0.05,reset=0.03,latency=1,retry-after=1",
             "resend_is_duplicate");
}

/*
 * Dropped responses ("commit, then close without an answer") on a reused connection: libcurl
 * resends the request as it was, nonce included, the server answers 401 replay, and the engine
 * signs again and resends. Everything must hold, the devices' error-freedom included.
 */
static void test_sim__flaky_drops_keep_data_whole(void **state)
{
    (void)state;
    tmp_t t;
    tmp_make(&t);
    run_t r;
    const char *args[] = {"--scenario", "flaky",     "--devices", "12",     "--ops", "12",
                          "--faults",   "drop=0.25", "--report",  t.report, NULL};
    run_sim(&r, 120, args);
    assert_int_equal(r.status, 0);
    cJSON *root = load_report(t.report);
    const cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "scenarios"), 0);
    const cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(s, "invariants"))
    {
        const char *n = cJSON_GetObjectItemCaseSensitive(v, "name")->valuestring;
        const char *res = cJSON_GetObjectItemCaseSensitive(v, "result")->valuestring;
        const char *det = cJSON_GetObjectItemCaseSensitive(v, "details")->valuestring;
        if (strcmp(res, "pass") == 0)
            continue;
        fail_msg("flaky with drops: %s is %s: %s", n, res, det);
    }
    const cJSON *ops = cJSON_GetObjectItemCaseSensitive(s, "ops");
    assert_int_equal(num(ops, "lost"), 0);
    assert_true(num(ops, "duplicate") > 0); /* a dropped answer makes the resend a duplicate */
    cJSON_Delete(root);
    unlink(t.report);
    th_dir_remove(t.dir);
}

/* all: every scenario in turn, each on a fresh server database. */
static void test_sim__all(void **state)
{
    (void)state;
    tmp_t t;
    tmp_make(&t);
    run_t r;
    const char *args[] = {"--scenario", "all",  "--devices", "5",      "--ops", "10",
                          "--faults",   "none", "--report",  t.report, NULL};
    run_sim(&r, 180, args);
    if (r.status != 0)
        fail_msg("exit %d\n%s\n%s", r.status, r.out, r.err);
    cJSON *root = load_report(t.report);
    const cJSON *scs = cJSON_GetObjectItemCaseSensitive(root, "scenarios");
    assert_int_equal(cJSON_GetArraySize(scs), 7);
    const cJSON *s;
    cJSON_ArrayForEach(s, scs)
    {
        check_scenario(s, false);
    }
    /* Quiet when stderr is not a terminal: no progress lines. */
    assert_null(strstr(r.err, "\r"));
    cJSON_Delete(root);
    unlink(t.report);
    th_dir_remove(t.dir);
}

/* ---- usage ---- */

static void usage_error(const char *const *args, const char *needle)
{
    run_t r;
    run_sim(&r, 30, args);
    if (r.status != 2)
        fail_msg("%s: exit %d, expected 2; stderr: %s", args[0], r.status, r.err);
    /* One line, naming the problem. */
    size_t len = strlen(r.err);
    assert_true(len > 0 && r.err[len - 1] == '\n');
    assert_true(strchr(r.err, '\n') == r.err + len - 1);
    if (strstr(r.err, needle) == NULL)
        fail_msg("stderr '%s' does not mention '%s'", r.err, needle);
    assert_string_equal(r.out, "");
}

static void test_sim__usage_errors(void **state)
{
    (void)state;
    const char *a1[] = {"--devices", "0", NULL};
    usage_error(a1, "--devices");
    const char *a2[] = {"--devices", "12x", NULL};
    usage_error(a2, "--devices");
    const char *a3[] = {"--scenario", "nope", NULL};
    usage_error(a3, "nope");
    const char *a4[] = {"--seed", "-3", NULL};
    usage_error(a4, "--seed");
    const char *a5[] = {"--ops", NULL};
    usage_error(a5, "--ops");
    const char *a6[] = {"--bogus", NULL};
    usage_error(a6, "--bogus");
    const char *a7[] = {"--server", "http://127.0.0.1:1", NULL};
    usage_error(a7, "--devices-file");
    const char *a8[] = {"--faults", "5xx=2", NULL};
    usage_error(a8, "5xx");
    const char *a9[] = {"--faults", "teleport=0.1", NULL};
    usage_error(a9, "teleport");
    const char *a10[] = {"--duration", "0", NULL};
    usage_error(a10, "--duration");
    const char *a11[] = {"--journal-sync", "fast", NULL};
    usage_error(a11, "--journal-sync");
    const char *a12[] = {"--workers", "1000", NULL};
    usage_error(a12, "--workers");
    const char *a13[] = {"--devices", "3", "--devices", "4", NULL};
    usage_error(a13, "twice");
    const char *a14[] = {"stray", NULL};
    usage_error(a14, "stray");
    const char *a15[] = {"--admin-token-file", "/nonexistent", NULL};
    usage_error(a15, "--server");
    const char *a16[] = {"--server", "ftp://x", "--devices-file", "/dev/null", NULL};
    usage_error(a16, "http");
    const char *a17[] = {"--server-hook", "true {id}", NULL};
    usage_error(a17, "--server-hook goes with --server");
    const char *a17b[] = {"--server",
                          "http://127.0.0.1:1",
                          "--devices-file",
                          "/dev/null",
                          "--admin-token-file",
                          "/dev/null",
                          "--admin-url",
                          "http://127.0.0.1:1",
                          "--server-hook",
                          "true {id}",
                          NULL};
    usage_error(a17b, "--server-hook and --admin-token-file");
    const char *a18[] = {"--server-procs", "9", NULL};
    usage_error(a18, "--server-procs");
    const char *a19[] = {"--server-db", "/tmp/x.db", NULL};
    usage_error(a19, "postgresql://");
    const char *a20[] = {"--server",  "http://127.0.0.1:1", "--devices-file",
                         "/dev/null", "--server-procs",     "2",
                         NULL};
    usage_error(a20, "own server");
    const char *a21[] = {"--site-reader", "dev005", NULL};
    usage_error(a21, "--site-reader goes with --server");
}

static void test_sim__help(void **state)
{
    (void)state;
    run_t r;
    const char *args[] = {"--help", NULL};
    run_sim(&r, 30, args);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "usage: fieldsync-sim"));
    assert_non_null(strstr(r.out, "--scenario"));
}

static void test_sim__workdir_kept_and_must_be_empty(void **state)
{
    (void)state;
    tmp_t t;
    tmp_make(&t);
    char wd[400];
    snprintf(wd, sizeof wd, "%s/work", t.dir);
    run_t r;
    const char *args[] = {"--scenario", "json",      "--devices", "3", "--ops",
                          "6",          "--workdir", wd,          NULL};
    run_sim(&r, 60, args);
    assert_int_equal(r.status, 0);
    char p[480];
    snprintf(p, sizeof p, "%s/devices.json", wd);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(p, sizeof p, "%s/admin.token", wd);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* A second run into the same, now full, directory is refused. */
    run_sim(&r, 30, args);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "not empty"));
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t.dir);
    assert_int_equal(system(cmd), 0);
}

/* The workdir fieldsync-sim made under dir (its TMPDIR) into wd, if there is one. */
static bool find_workdir(const char *dir, char *wd, size_t cap)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    bool found = false;
    for (struct dirent *e; !found && (e = readdir(d)) != NULL;) {
        found = strncmp(e->d_name, "fieldsync-sim-", 14) == 0;
        if (found)
            snprintf(wd, cap, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    return found;
}

/* Ctrl-C in the middle of a run: the simulator says so, ends with 128 + SIGINT, and leaves no
 * workdir behind. It was left in /dev/shm before, every device's secret and the admin token in
 * it. The run is interrupted once its scenario is under way (the scenario's directory exists). */
static void test_sim__interrupted_removes_its_workdir(void **state)
{
    (void)state;
    tmp_t t;
    tmp_make(&t);
    char tmpdir[400], errpath[400];
    snprintf(tmpdir, sizeof tmpdir, "%s/tmp", t.dir);
    snprintf(errpath, sizeof errpath, "%s/err", t.dir);
    assert_int_equal(mkdir(tmpdir, 0700), 0);
    const char *args[] = {"--scenario", "flaky", "--devices", "20", "--ops", "5000", NULL};
    char emu[512];
    snprintf(emu, sizeof emu, "%s", FSA_TEST_EMULATOR);
    const char *argv[64];
    (void)test_exec_argv(emu, FSA_SIM_BIN, args, argv, sizeof argv / sizeof argv[0]);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int nul = open("/dev/null", O_WRONLY);
        if (fd < 0 || nul < 0 || dup2(fd, 2) < 0 || dup2(nul, 1) < 0)
            _exit(126);
        setenv("TMPDIR", tmpdir, 1);
        if (FSA_TEST_EMULATOR[0] != '\0')
            setenv("FIELDSYNC_SERVER_EMULATOR", FSA_TEST_EMULATOR, 1);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    char wd[700], scenario_dir[800];
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct stat st;
    bool under_way = false;
    while (!under_way && elapsed_ms(&t0) < 60000 && waitpid(pid, NULL, WNOHANG) == 0) {
        if (find_workdir(tmpdir, wd, sizeof wd)) {
            snprintf(scenario_dir, sizeof scenario_dir, "%s/flaky.1", wd);
            under_way = stat(scenario_dir, &st) == 0;
        }
        if (!under_way)
            poll(NULL, 0, 20);
    }
    if (!under_way) {
        kill(pid, SIGKILL);
        fail_msg("the simulator's scenario never got under way");
    }
    assert_int_equal(kill(pid, SIGINT), 0);
    int status = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t got = 0;
    while ((got = waitpid(pid, &status, WNOHANG)) == 0 && elapsed_ms(&t0) < 30000)
        poll(NULL, 0, 20);
    if (got == 0) {
        kill(pid, SIGKILL);
        fail_msg("the simulator did not end within 30 s of SIGINT");
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 128 + SIGINT);
    assert_false(find_workdir(tmpdir, wd, sizeof wd));
    char *err = test_read_file(errpath);
    assert_non_null(err);
    if (strstr(err, "stopped by SIGINT; removed") == NULL)
        fail_msg("stderr: %s", err);
    fsa_free(err);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t.dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- --server mode ---- */

/* Writes a devices file for the simulator: the server's devices, device `wrong` (if >= 0) with a
 * secret the server does not know. */
static void write_sim_devices(const char *path, int n, int wrong)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"devices\": [");
    for (int i = 0; i < n; i++) {
        char id[16];
        fsa_signer_key_t k;
        th_device_id(i, id);
        th_device_key(i, &k);
        if (i == wrong)
            k.bytes[0] ^= 0x5a;
        fprintf(f, "%s{\"id\": \"%s\", \"secret\": \"", i ? "," : "", id);
        for (int j = 0; j < 32; j++)
            fprintf(f, "%02x", k.bytes[j]);
        fprintf(f, "\"}");
    }
    fprintf(f, "]}\n");
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, 0600), 0);
}

/* The server of the --server tests: two processes on one database (server and server2), stopped
 * and removed by the teardown even when a check fails half-way. Devices dev000..dev005; dev005
 * has a scope of the scenarios' sites (the site reader of attendances). */
static th_server_t server, server2;

static const char sites_scope[] = "{\"sites\": [\"site0\", \"site1\", \"site2\", \"site3\", "
                                  "\"site4\", \"site5\", \"site6\", \"s1\"]}";

static int server_setup(void **state)
{
    (void)state;
    memset(&server, 0, sizeof server);
    memset(&server2, 0, sizeof server2);
    const char *scopes[6] = {NULL, NULL, NULL, NULL, NULL, sites_scope};
    if (!th_dir_make(server.dir) || !th_write_files_scoped(&server, 6, scopes) ||
        !th_server_start(&server, NULL))
        return -1;
    server2 = server; /* the same files and database */
    server2.pid = 0;
    server2.out_fd = -1;
    snprintf(server2.errlog, sizeof server2.errlog, "%s/server2.err", server.dir);
    if (!th_server_start(&server2, NULL))
        return -1;
    return 0;
}

static int server_teardown(void **state)
{
    (void)state;
    int rc2 = server2.pid > 0 ? th_server_stop(&server2) : 0;
    int rc = server.pid > 0 ? th_server_stop(&server) : 0;
    if (rc == 0)
        rc = rc2;
    char p[400];
    snprintf(p, sizeof p, "%s/report.json", server.dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/sim-devices.json", server.dir);
    unlink(p);
    th_dir_remove(server.dir);
    return rc == 0 ? 0 : -1;
}

static void test_sim__server_mode(void **state)
{
    (void)state;
    th_server_t s = server;
    char report[320];
    snprintf(report, sizeof report, "%s/report.json", s.dir);
    run_t r;

    /* With the admin token: seeded through the admin API, every invariant checked; the devices
     * spread over the two processes. */
    const char *a1[] = {"--server",
                        s.url,
                        "--server",
                        server2.url,
                        "--devices-file",
                        s.devices,
                        "--admin-token-file",
                        s.token,
                        "--admin-url",
                        s.admin_url,
                        "--scenario",
                        "ticketlog",
                        "--devices",
                        "4",
                        "--ops",
                        "6",
                        "--report",
                        report,
                        NULL};
    run_sim(&r, 60, a1);
    if (r.status != 0)
        fail_msg("exit %d\n%s\n%s", r.status, r.out, r.err);
    cJSON *root = load_report(report);
    check_scenario(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "scenarios"), 0),
                   true);
    cJSON_Delete(root);

    /* One process of a server that is not the run's own, with its admin API: its counters are
     * server-wide (another run's ops count too), so the figures are the devices' (duplicates
     * included) and no_extra_attendance goes through the site reader's pulls. Taken from the
     * counters, two runs at once failed each other. */
    const char *a1b[] = {
        "--server",    s.url,       "--devices-file", s.devices, "--admin-token-file", s.token,
        "--admin-url", s.admin_url, "--site-reader",  "dev005",  "--scenario",         "attendance",
        "--devices",   "4",         "--ops",          "6",       "--report",           report,
        NULL};
    run_sim(&r, 60, a1b);
    if (r.status != 0)
        fail_msg("exit %d\n%s\n%s", r.status, r.out, r.err);
    root = load_report(report);
    const cJSON *one = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "scenarios"), 0);
    check_scenario(one, true);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(one, "counts_source")->valuestring,
                        "devices");
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(one, "ops"), "duplicate")));
    int seen = 0;
    const cJSON *iv;
    cJSON_ArrayForEach(iv, cJSON_GetObjectItemCaseSensitive(one, "invariants"))
    {
        const char *n = cJSON_GetObjectItemCaseSensitive(iv, "name")->valuestring;
        const char *res = cJSON_GetObjectItemCaseSensitive(iv, "result")->valuestring;
        const char *how = cJSON_GetObjectItemCaseSensitive(iv, "how")->valuestring;
        const char *det = cJSON_GetObjectItemCaseSensitive(iv, "details")->valuestring;
        if (strcmp(n, "no_extra_attendance") == 0) {
            seen++;
            if (strcmp(res, "pass") != 0 || strcmp(how, "pulls") != 0)
                fail_msg("no_extra_attendance: %s by %s: %s", res, how, det);
        } else if (strcmp(n, "counts_consistent") == 0) {
            seen++;
            assert_string_equal(res, "not checked");
            assert_non_null(strstr(det, "server-wide"));
        }
    }
    assert_int_equal(seen, 2);
    cJSON_Delete(root);

    /* Without it, protocol only: device 0 creates the entities, the final state is read through
     * pulls (the reader, and dev005 for attendances), through either process. Every invariant
     * but the server's counters is checked, and the server-state ones say "pulls"; autoclose
     * runs with the server's autoclose done by a --server-hook command (this test program,
     * calling the admin API as the server's own actor would). */
    char hook[5000], emu[400];
    snprintf(emu, sizeof emu, "%s", FSA_TEST_EMULATOR);
    for (char *p = emu; *p; p++)
        if (*p == '|')
            *p = ' ';
    snprintf(hook, sizeof hook, "%.400s %.4000s --hook-autoclose %.128s {id}", emu, self_path,
             server2.admin_url);
    const char *a2[] = {"--server",
                        s.url,
                        "--server",
                        server2.url,
                        "--devices-file",
                        s.devices,
                        "--site-reader",
                        "dev005",
                        "--server-hook",
                        hook,
                        "--scenario",
                        "all",
                        "--devices",
                        "4",
                        "--ops",
                        "8",
                        "--report",
                        report,
                        NULL};
    run_sim(&r, 240, a2);
    if (r.status != 0)
        fail_msg("exit %d\n%s\n%s", r.status, r.out, r.err);
    root = load_report(report);
    const cJSON *sc;
    int pulls = 0, not_checked = 0;
    cJSON_ArrayForEach(sc, cJSON_GetObjectItemCaseSensitive(root, "scenarios"))
    {
        check_scenario(sc, true);
        const cJSON *v;
        cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(sc, "invariants"))
        {
            const char *n = cJSON_GetObjectItemCaseSensitive(v, "name")->valuestring;
            const char *res = cJSON_GetObjectItemCaseSensitive(v, "result")->valuestring;
            const char *how = cJSON_GetObjectItemCaseSensitive(v, "how")->valuestring;
            if (strcmp(res, "not checked") == 0) {
                if (strcmp(n, "counts_consistent") != 0)
                    fail_msg("%s is not checked without the admin API", n);
                not_checked++;
            }
            assert_null(strstr(how, "admin"));
            pulls += strcmp(how, "pulls") == 0;
        }
    }
    assert_int_equal(not_checked, 7);
    assert_true(pulls >= 14);
    cJSON_Delete(root);

    /* The site reader is never one of the fleet: without --devices the fleet is the file's
     * other devices (before, dev005 recorded too, and its pulls read its own attendances as
     * extra ones); --devices counts the others only. */
    const char *a5[] = {"--server", s.url,        "--devices-file", s.devices, "--site-reader",
                        "dev005",   "--scenario", "attendance",     "--ops",   "10",
                        NULL};
    run_sim(&r, 120, a5);
    if (r.status != 0 || strstr(r.out, "attendance         5") == NULL)
        fail_msg("exit %d\n%s\n%s", r.status, r.out, r.err);
    const char *a6[] = {"--server",
                        s.url,
                        "--devices-file",
                        s.devices,
                        "--site-reader",
                        "dev005",
                        "--devices",
                        "6",
                        "--scenario",
                        "attendance",
                        NULL};
    run_sim(&r, 60, a6);
    if (r.status != 1 || strstr(r.err, "lists only 5 besides the site reader") == NULL)
        fail_msg("exit %d\n%s\n%s", r.status, r.out, r.err);

    /* Not run: autoclose without the admin API or a hook cannot run, and that is a failure, not
     * a pass, in the exit status, the result line, the JSON report and the HTML summary alike
     * (the reports said ok, the result line "nothing checked"). */
    char html[320];
    snprintf(html, sizeof html, "%s/report.html", s.dir);
    const char *a3[] = {"--server",  s.url, "--devices-file", s.devices, "--scenario", "autoclose",
                        "--devices", "2",   "--report",       report,    "--html",     html,
                        NULL};
    run_sim(&r, 60, a3);
    if (r.status != 1 || strstr(r.out, "not run") == NULL ||
        strstr(r.out, "result: FAILED: 1 scenario(s) could not run") == NULL ||
        strstr(r.err, "1 scenario(s) could not run") == NULL)
        fail_msg("exit %d\n%s\n%s", r.status, r.out, r.err);
    root = load_report(report);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(root, "ok")));
    cJSON_Delete(root);
    char *page = test_read_file(html);
    assert_non_null(page);
    if (strstr(page, "FAILED: a scenario could not run") == NULL)
        fail_msg("the HTML summary does not say the run failed");
    fsa_free(page);

    /* An invariant that fails makes the run fail: device 0's secret is not the one the server
     * knows, so it never gets the job and its keys never reach the server (all_keys_present,
     * each_op_applied_once, devices_error_free). */
    char bad[320];
    snprintf(bad, sizeof bad, "%s/sim-devices.json", s.dir);
    write_sim_devices(bad, 4, 0);
    const char *a4[] = {
        "--server",  s.url,         "--devices-file", bad,          "--admin-token-file",
        s.token,     "--admin-url", s.admin_url,      "--scenario", "json",
        "--devices", "4",           "--ops",          "8",          "--report",
        report,      NULL};
    run_sim(&r, 60, a4);
    if (r.status != 1 || strstr(r.out, "FAIL json: all_keys_present") == NULL ||
        strstr(r.out, "FAIL json: devices_error_free") == NULL)
        fail_msg("exit %d\n%s\n%s", r.status, r.out, r.err);
    root = load_report(report);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(root, "ok")));
    sc = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "scenarios"), 0);
    int failed = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(sc, "invariants"))
    {
        if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(v, "pass")) &&
            strcmp(cJSON_GetObjectItemCaseSensitive(v, "result")->valuestring, "fail") == 0)
            failed++;
    }
    assert_true(failed >= 2);
    cJSON_Delete(root);
}

/* No server binary to be found: one clear line, exit 1. */
static void test_sim__server_not_found(void **state)
{
    (void)state;
    setenv("FIELDSYNC_SERVER", "/nonexistent/fieldsync-server", 1);
    run_t r;
    const char *args[] = {"--scenario", "json", "--devices", "2", NULL};
    run_sim(&r, 30, args);
    unsetenv("FIELDSYNC_SERVER");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "FIELDSYNC_SERVER"));
}

/* A server given with --server that cannot be reached: the run fails, and says why in the words
 * of the device's last sync (it said only "its outbox did not drain"). Port 1 of loopback refuses
 * at once. */
static void test_sim__server_unreachable_says_why(void **state)
{
    (void)state;
    tmp_t t;
    tmp_make(&t);
    char devices[400];
    snprintf(devices, sizeof devices, "%s/devices.json", t.dir);
    write_sim_devices(devices, 2, -1);
    run_t r;
    const char *args[] = {"--server",
                          "http://127.0.0.1:1",
                          "--devices-file",
                          devices,
                          "--scenario",
                          "json",
                          "--devices",
                          "1",
                          NULL};
    run_sim(&r, 60, args);
    assert_int_equal(r.status, 1);
    if (strstr(r.out, "entities_seeded") == NULL || strstr(r.out, "its last sync: ") == NULL ||
        strstr(r.out, "127.0.0.1") == NULL)
        fail_msg("%s\n%s", r.out, r.err);
    unlink(devices);
    th_dir_remove(t.dir);
}

/* The --server-hook of the tests: autocloses jobneed id through the admin API of url. */
static int hook_autoclose(const char *url, const char *id)
{
    /* The simulator ignores SIGPIPE; its hooks must not inherit that (a `| head` in a hook would
     * no longer end what writes into it). A shell cannot undo an ignored signal it was given. */
    struct sigaction pipe_action;
    if (sigaction(SIGPIPE, NULL, &pipe_action) != 0 || pipe_action.sa_handler == SIG_IGN) {
        fprintf(stderr, "autoclose %s: the hook runs with SIGPIPE ignored\n", id);
        return 1;
    }
    char path[300];
    snprintf(path, sizeof path, "/admin/v1/jobneeds/%s/autoclose", id);
    th_req_opts_t opts = {.bearer = TH_ADMIN_TOKEN};
    th_resp_t r;
    memset(&r, 0, sizeof r);
    bool ok = th_request(NULL, url, "POST", path, 0, NULL, 0, &opts, &r) && r.status == 200;
    if (!ok)
        fprintf(stderr, "autoclose %s: HTTP %ld\n", id, r.status);
    th_resp_free(&r);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--hook-autoclose") == 0)
        return hook_autoclose(argv[2], argv[3]);
    if (realpath(argv[0], self_path) == NULL)
        snprintf(self_path, sizeof self_path, "%s", argv[0]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sim__help),
        cmocka_unit_test(test_sim__usage_errors),
        cmocka_unit_test(test_sim__server_not_found),
        cmocka_unit_test(test_sim__server_unreachable_says_why),
        cmocka_unit_test(test_sim__autoclose),
        cmocka_unit_test(test_sim__checkpoints),
        cmocka_unit_test(test_sim__escalation),
        cmocka_unit_test(test_sim__ticketlog),
        cmocka_unit_test(test_sim__json),
        cmocka_unit_test(test_sim__groups_scoped),
        cmocka_unit_test(test_sim__attendance),
        cmocka_unit_test(test_sim__flaky),
        cmocka_unit_test(test_sim__flaky_drops_keep_data_whole),
        cmocka_unit_test(test_sim__all),
        cmocka_unit_test(test_sim__workdir_kept_and_must_be_empty),
        cmocka_unit_test(test_sim__interrupted_removes_its_workdir),
        cmocka_unit_test_setup_teardown(test_sim__server_mode, server_setup, server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
