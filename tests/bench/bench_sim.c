/* bench_sim: runs `fieldsync-sim --scenario all --devices N` for each N given (default 1000 and
 * 10000, in this order, in the same run) and prints each run's wall time, the peak RSS of the
 * simulator and of its largest server process, and each scenario's time, as BENCH lines
 * (DESIGN.md; no baseline for these figures but each other: the cost per device of the largest run
 * over that of the smallest, at most 1 when the cost grows at most linearly, in wall time and in
 * CPU time, which a loaded machine does not inflate; a run that fails has no figure). Built with
 * libpq, each run's server is fieldsync-server with 2 processes on a fresh database of a private
 * PostgreSQL cluster (tests/sync/pg_harness.c, fsync off as in the tests), unless --sqlite (one
 * process on a fresh SQLite file per scenario). Each run is bounded (--timeout S, default 3600):
 * one that does not finish is killed and reported as such, with no figure. Arguments after `--`
 * go to every fieldsync-sim run. */
/* wait4() is a BSD interface that glibc declares with _DEFAULT_SOURCE. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "port/alloc.h"
#include "tests/sync/pg_harness.h"
#include "tests/test_read.h"

#ifndef FSA_SIM_BIN
#error "FSA_SIM_BIN must name the fieldsync-sim binary"
#endif

#define MAX_RUNS 8
#define MAX_EXTRA 40

static const char USAGE[] =
    "usage: bench_sim [--timeout S] [--sqlite] [DEVICES...] [-- SIM-ARGS...]\n"
    "  DEVICES 1..100000 (default: 1000 10000)\n";

static volatile sig_atomic_t alarmed;

static void on_alarm(int sig)
{
    (void)sig;
    alarmed = 1;
}

static double secs(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/* One run: false when it did not complete (killed at the timeout, or could not start). */
static bool run_one(const char *devices, const char *db, const char *report,
                    const char *const *extra, size_t nextra, long timeout, double *wall,
                    double *cpu, long *rss, int *rc)
{
    const char *args[16 + MAX_EXTRA];
    size_t n = 0;
    args[n++] = FSA_SIM_BIN;
    args[n++] = "--scenario";
    args[n++] = "all";
    args[n++] = "--devices";
    args[n++] = devices;
    args[n++] = "--report";
    args[n++] = report;
    if (db != NULL) {
        args[n++] = "--server-procs";
        args[n++] = "2";
        args[n++] = "--server-db";
        args[n++] = db;
    }
    for (size_t i = 0; i < nextra; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("bench_sim: fork");
        return false;
    }
    if (pid == 0) {
        execv(args[0], (char *const *)(uintptr_t)args);
        perror("bench_sim: exec fieldsync-sim");
        _exit(127);
    }
    alarmed = 0;
    alarm((unsigned)timeout);
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    bool killed = false;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("bench_sim: wait4");
            return false;
        }
        if (alarmed && !killed) {
            kill(pid, SIGKILL);
            killed = true;
        }
    }
    alarm(0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    *wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    *cpu = secs(&ru.ru_utime) + secs(&ru.ru_stime);
    *rss = ru.ru_maxrss;
    *rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("fieldsync-sim --scenario all --devices %s%s: %s %d, %.1f s wall, %.1f s user, "
           "%.1f s system (the simulator and its servers), peak RSS %ld KiB\n",
           devices, db != NULL ? " --server-procs 2 (PostgreSQL)" : "",
           killed ? "KILLED at the timeout, status" : "exit", *rc, *wall, secs(&ru.ru_utime),
           secs(&ru.ru_stime), ru.ru_maxrss);
    return !killed;
}

/* The growth of a per-device figure from the smallest run to the largest, as a BENCH line and in
 * words: at most 1.1 is at most linear. */
static void print_growth(const char *figure, const char *what, const double *per_dev,
                         const char *const *sizes, size_t nsizes)
{
    if (per_dev[0] <= 0)
        return;
    double growth = per_dev[nsizes - 1] / per_dev[0];
    printf("BENCH {\"name\":\"sim.all_%s_over_%s_devices.%s\",\"value\":%.2f,\"unit\":\"ratio\"}\n",
           sizes[nsizes - 1], sizes[0], figure, growth);
    printf("%s per device grew %.2fx from %s to %s devices (%s)\n", what, growth, sizes[0],
           sizes[nsizes - 1], growth <= 1.1 ? "at most linear" : "MORE than linear");
}

/* The integer after `"key":` at or after from; -1 when absent. */
static long long json_int_after(const char *from, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(from, pat);
    if (p == NULL)
        return -1;
    char *end = NULL;
    long long v = strtoll(p + strlen(pat), &end, 10);
    return end == p + strlen(pat) ? -1 : v;
}

/* The figures of fieldsync-sim's JSON report: peak RSS of the simulator and of its largest server
 * process, and each scenario's time (also per device: the cost curve). */
static void report_figures(const char *path, const char *devices)
{
    char *text = test_read_file(path);
    if (text == NULL) {
        printf("no report in %s: no RSS or scenario figures\n", path);
        return;
    }
    const char *rss = strstr(text, "\"peak_rss_kib\":");
    if (rss != NULL) {
        printf("BENCH {\"name\":\"sim.all_%s_devices.simulator_peak_rss\",\"value\":%lld,"
               "\"unit\":\"KiB\"}\n",
               devices, json_int_after(rss, "simulator"));
        printf("BENCH {\"name\":\"sim.all_%s_devices.server_peak_rss\",\"value\":%lld,"
               "\"unit\":\"KiB\"}\n",
               devices, json_int_after(rss, "server"));
    }
    double ndev = strtod(devices, NULL);
    for (const char *p = strstr(text, "\"scenarios\":["); p != NULL;) {
        p = strstr(p, "{\"name\":\"");
        if (p == NULL)
            break;
        p += 9;
        const char *q = strchr(p, '"');
        if (q == NULL)
            break;
        if (q - p > 40 || strncmp(q, "\",\"devices\":", 12) != 0) {
            p = q; /* an invariant's name, not a scenario's */
            continue;
        }
        char name[48];
        snprintf(name, sizeof name, "%.*s", (int)(q - p), p);
        long long ms = json_int_after(q, "duration_ms");
        long long used = json_int_after(q, "devices");
        printf("BENCH {\"name\":\"sim.%s_%s_devices.ms_per_device\",\"value\":%.2f,"
               "\"unit\":\"ms\"} (%lld devices took part, %.1f s)\n",
               name, devices, used > 0 ? (double)ms / (double)used : (double)ms / ndev, used,
               (double)ms / 1000.0);
        p = q;
    }
    fsa_free(text);
}

int main(int argc, char **argv)
{
    const char *sizes[MAX_RUNS];
    size_t nsizes = 0;
    const char *extra[MAX_EXTRA];
    size_t nextra = 0;
    long timeout = 3600;
    bool sqlite = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sqlite") == 0) {
            sqlite = true;
            continue;
        }
        if (strcmp(argv[i], "--") == 0) {
            for (i++; i < argc && nextra < MAX_EXTRA; i++)
                extra[nextra++] = argv[i];
            break;
        }
        char *end = NULL;
        errno = 0;
        if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            timeout = strtol(argv[++i], &end, 10);
            if (errno != 0 || *end != '\0' || timeout < 1) {
                fputs(USAGE, stderr);
                return 2;
            }
            continue;
        }
        long n = strtol(argv[i], &end, 10);
        if (errno != 0 || end == argv[i] || *end != '\0' || n < 1 || n > 100000 ||
            nsizes == MAX_RUNS) {
            fputs(USAGE, stderr);
            return 2;
        }
        sizes[nsizes++] = argv[i];
    }
    if (nsizes == 0) {
        sizes[nsizes++] = "1000";
        sizes[nsizes++] = "10000";
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART: wait4 returns EINTR */
    sigaction(SIGALRM, &sa, NULL);
#ifndef FSA_TEST_HAVE_PG
    if (!sqlite) {
        printf("bench_sim: built without libpq: the server runs on SQLite (one process)\n");
        sqlite = true;
    }
#endif
    th_pg_t pg;
    memset(&pg, 0, sizeof pg);
    if (!sqlite && !th_pg_start(&pg, false)) {
        fprintf(stderr, "bench_sim: cannot start a PostgreSQL cluster (--sqlite runs without)\n");
        return 1;
    }
    char report[64];
    snprintf(report, sizeof report, "/tmp/bench_sim.%d.json", (int)getpid());
    double per_dev[MAX_RUNS] = {0}, cpu_per_dev[MAX_RUNS] = {0};
    bool done[MAX_RUNS] = {false};
    int worst = 0;
    for (size_t k = 0; k < nsizes; k++) {
        double wall = 0, cpu = 0;
        long rss = 0;
        int rc = 0;
        char uri[256], dbname[32];
        snprintf(dbname, sizeof dbname, "sim_%zu_%s", k, sizes[k]);
        if (!sqlite && !th_pg_createdb(&pg, dbname, uri, sizeof uri)) {
            th_pg_stop(&pg);
            return 1;
        }
        (void)remove(report);
        done[k] = run_one(sizes[k], sqlite ? NULL : uri, report, extra, nextra, timeout, &wall,
                          &cpu, &rss, &rc);
        if (!done[k]) {
            printf("fieldsync-sim --devices %s did not complete in %ld s: no figure\n", sizes[k],
                   timeout);
            worst = 1;
            continue;
        }
        if (rc != 0) {
            /* A run that failed an invariant or could not run has no figure: its time is not
             * the cost of the fleet it was asked for. */
            printf("fieldsync-sim --devices %s exited %d: no figure\n", sizes[k], rc);
            done[k] = false;
            worst = 1;
            continue;
        }
        per_dev[k] = wall / strtod(sizes[k], NULL);
        cpu_per_dev[k] = cpu / strtod(sizes[k], NULL);
        printf("BENCH {\"name\":\"sim.all_%s_devices.wall\",\"value\":%.2f,\"unit\":\"s\"}\n",
               sizes[k], wall);
        /* ru_maxrss of the simulator's process tree: the largest of the simulator and the servers
         * it started and reaped (servers given with --server are not its children). */
        printf("BENCH {\"name\":\"sim.all_%s_devices.peak_rss\",\"value\":%ld,\"unit\":\"KiB\"}\n",
               sizes[k], rss);
        printf("BENCH {\"name\":\"sim.all_%s_devices.wall_per_device\",\"value\":%.2f,"
               "\"unit\":\"ms\"}\n",
               sizes[k], 1000.0 * per_dev[k]);
        /* CPU time (user + system) of the simulator and the server processes it reaped (not
         * PostgreSQL's): the cost that does not depend on what else the machine runs. */
        printf("BENCH {\"name\":\"sim.all_%s_devices.cpu_per_device\",\"value\":%.2f,"
               "\"unit\":\"ms\"}\n",
               sizes[k], 1000.0 * cpu_per_dev[k]);
        report_figures(report, sizes[k]);
        fflush(stdout);
    }
    (void)remove(report);
    if (!sqlite)
        th_pg_stop(&pg);
    if (nsizes >= 2 && done[0] && done[nsizes - 1]) {
        print_growth("wall_per_device", "cost", per_dev, sizes, nsizes);
        print_growth("cpu_per_device", "CPU time", cpu_per_dev, sizes, nsizes);
    }
    return worst;
}
