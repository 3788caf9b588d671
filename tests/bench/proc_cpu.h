/* fieldsync benchmarks: the CPU time another process has used, read from /proc. */
#ifndef FSA_TESTS_BENCH_PROC_CPU_H
#define FSA_TESTS_BENCH_PROC_CPU_H

#include <dirent.h>
#include <stdio.h>

/*
 * The CPU time the threads of process pid have used so far, in seconds (the sum of
 * /proc/PID/task/ * /schedstat's first field, nanoseconds on a CPU); -1 when unreadable. Beside
 * the wall time of a phase it shows whether the process was computing or waiting (for the disk,
 * for the client, for a core).
 */
static inline double bench_proc_cpu_s(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    double total = 0;
    const struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char f[128];
        snprintf(f, sizeof f, "/proc/%d/task/%.16s/schedstat", pid, de->d_name);
        FILE *fp = fopen(f, "r");
        unsigned long long ns = 0;
        if (fp != NULL) {
            if (fscanf(fp, "%llu", &ns) == 1)
                total += (double)ns / 1e9;
            (void)fclose(fp);
        }
    }
    (void)closedir(d);
    return total;
}

#endif
