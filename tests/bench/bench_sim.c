/* bench_sim: runs `fieldsync-sim --scenario all --devices N` (N = argv[1], default 1000) and
 * prints its wall time and peak RSS as BENCH lines (DESIGN.md; no baseline for these figures). */
/* wait4() is a BSD interface that glibc declares with _DEFAULT_SOURCE. */
#define _DEFAULT_SOURCE
#include <errno.h>
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

#ifndef FSA_SIM_BIN
#error "FSA_SIM_BIN must name the fieldsync-sim binary"
#endif

int main(int argc, char **argv)
{
    const char *devices = "1000";
    if (argc > 1) {
        char *end = NULL;
        errno = 0;
        long n = strtol(argv[1], &end, 10);
        if (errno != 0 || end == argv[1] || *end != '\0' || n < 1 || n > 100000) {
            fprintf(stderr, "usage: bench_sim [DEVICES]  (1..100000, default 1000)\n");
            return 2;
        }
        devices = argv[1];
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("bench_sim: fork");
        return 1;
    }
    if (pid == 0) {
        const char *args[] = {FSA_SIM_BIN, "--scenario", "all", "--devices", devices, NULL};
        execv(args[0], (char *const *)(uintptr_t)args);
        perror("bench_sim: exec fieldsync-sim");
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("bench_sim: wait4");
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("fieldsync-sim --scenario all --devices %s: exit %d, %.1f s wall, %.1f s user, "
           "%.1f s system, peak RSS %ld KiB\n",
           devices, rc, wall, (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6, ru.ru_maxrss);
    printf("BENCH {\"name\":\"sim.all_%s_devices.wall\",\"value\":%.2f,\"unit\":\"s\"}\n", devices,
           wall);
    /* ru_maxrss of the simulator's process tree: the largest of the simulator and the servers it
     * started and reaped. */
    printf("BENCH {\"name\":\"sim.all_%s_devices.peak_rss\",\"value\":%ld,\"unit\":\"KiB\"}\n",
           devices, ru.ru_maxrss);
    return rc == 0 ? 0 : 1;
}
