/* fieldsync tests: a private PostgreSQL cluster for a test run (initdb, pg_ctl, a loopback port).
 */
/* setgroups, syscall, nftw: GNU and XSI interfaces beside the project's C11 + POSIX. */
#define _GNU_SOURCE
#include "tests/sync/pg_harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef FSA_TEST_HAVE_PG
#include <libpq-fe.h>
#endif

/* The bin dir of Debian's newest installed PostgreSQL server, or FSA_PG_BINDIR. */
static bool find_bindir(char *out, size_t cap)
{
    const char *env = getenv("FSA_PG_BINDIR");
    if (env != NULL && env[0] != '\0') {
        snprintf(out, cap, "%s", env);
        return true;
    }
    glob_t g;
    memset(&g, 0, sizeof g);
    bool ok = false;
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) == 0 && g.gl_pathc > 0) {
        /* glob sorts: the last is the newest version (as long as it has two digits). */
        const char *p = g.gl_pathv[g.gl_pathc - 1];
        size_t n = strlen(p) - strlen("/initdb");
        if (n < cap) {
            memcpy(out, p, n);
            out[n] = '\0';
            ok = true;
        }
    }
    globfree(&g);
    return ok;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* The user the cluster belongs to when we are root ("nobody": PostgreSQL refuses root). */
static bool nobody_ids(uid_t *uid, gid_t *gid)
{
    struct passwd pw, *found = NULL;
    char buf[1024];
    if (getpwnam_r("nobody", &pw, buf, sizeof buf, &found) != 0 || found == NULL)
        return false;
    *uid = pw.pw_uid;
    *gid = pw.pw_gid;
    return true;
}

/* Runs argv as the cluster's owner (nobody when we are root), output appended to log; waits at
 * most timeout_s. Returns the exit status, -1 on failure or timeout. */
static int run_as_owner(const char *const *argv, const char *log, int timeout_s)
{
    bool as_nobody = getuid() == 0;
    uid_t uid = 0;
    gid_t gid = 0;
    if (as_nobody && !nobody_ids(&uid, &gid)) {
        fprintf(stderr, "pg harness: running as root and there is no user 'nobody'\n");
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (as_nobody && (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0))
            _exit(126);
        /* Opened as the owner, so that pg_ctl (also the owner) can append to it too. */
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull >= 0)
            dup2(devnull, 0);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    /* Waits for the exit itself (a pidfd becomes readable then), bounded by timeout_s. */
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd >= 0) {
        struct pollfd p = {pfd, POLLIN, 0};
        int r;
        do
            r = poll(&p, 1, timeout_s * 1000);
        while (r < 0 && errno == EINTR);
        close(pfd);
        if (r == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return -1;
        }
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void print_log(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char line[512];
    while (fgets(line, sizeof line, f) != NULL)
        fprintf(stderr, "  postgres: %s", line);
    (void)fclose(f);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

bool th_pg_start(th_pg_t *pg, bool durable)
{
    memset(pg, 0, sizeof *pg);
    if (!find_bindir(pg->bindir, sizeof pg->bindir)) {
        fprintf(stderr, "pg harness: no PostgreSQL server binaries (install the Debian package "
                        "'postgresql' or set FSA_PG_BINDIR)\n");
        return false;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(pg->dir, sizeof pg->dir, "%s/fsa-pg-XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
    if (mkdtemp(pg->dir) == NULL)
        return false;
    if (getuid() == 0) {
        uid_t uid = 0;
        gid_t gid = 0;
        if (!nobody_ids(&uid, &gid) || chown(pg->dir, uid, gid) != 0) {
            fprintf(stderr, "pg harness: cannot give %s to 'nobody'\n", pg->dir);
            rmdir(pg->dir);
            return false;
        }
    }
    char initdb[320], pg_ctl[320], data[320], log[320], opts[512];
    snprintf(initdb, sizeof initdb, "%s/initdb", pg->bindir);
    snprintf(pg_ctl, sizeof pg_ctl, "%s/pg_ctl", pg->bindir);
    snprintf(data, sizeof data, "%s/data", pg->dir);
    snprintf(log, sizeof log, "%s/postgres.log", pg->dir);
    const char *init_argv[] = {initdb,      "-D",
                               data,        "-U",
                               "fsa",       "--auth=trust",
                               "-E",        "UTF8",
                               "--no-sync", "--no-instructions",
                               NULL};
    if (run_as_owner(init_argv, log, 120) != 0) {
        fprintf(stderr, "pg harness: initdb failed\n");
        print_log(log);
        th_pg_stop(pg);
        return false;
    }
    for (int attempt = 0; attempt < 3 && !pg->running; attempt++) {
        pg->port = free_port();
        /* Test settings: a short deadlock_timeout resolves the deadlocks of racing batches in
         * 100 ms instead of 1 s; room for four server processes' pools. */
        snprintf(opts, sizeof opts,
                 "-k %s -h 127.0.0.1 -p %d -c max_connections=200 -c shared_buffers=64MB"
                 " -c deadlock_timeout=100ms%s",
                 pg->dir, pg->port,
                 durable ? "" : " -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        const char *start_argv[] = {pg_ctl, "-D", data, "-l", log,     "-o",
                                    opts,   "-w", "-t", "60", "start", NULL};
        pg->running = run_as_owner(start_argv, log, 90) == 0;
    }
    if (!pg->running) {
        fprintf(stderr, "pg harness: the cluster did not start\n");
        print_log(log);
        th_pg_stop(pg);
        return false;
    }
    return true;
}

void th_pg_stop(th_pg_t *pg)
{
    if (pg->dir[0] == '\0')
        return;
    if (pg->running) {
        char pg_ctl[320], data[320], log[320];
        snprintf(pg_ctl, sizeof pg_ctl, "%s/pg_ctl", pg->bindir);
        snprintf(data, sizeof data, "%s/data", pg->dir);
        snprintf(log, sizeof log, "%s/postgres.log", pg->dir);
        const char *argv[] = {pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "60", "stop", NULL};
        if (run_as_owner(argv, log, 90) != 0)
            fprintf(stderr, "pg harness: pg_ctl stop failed\n");
        pg->running = false;
    }
    nftw(pg->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    pg->dir[0] = '\0';
}

bool th_pg_createdb(const th_pg_t *pg, const char *name, char *uri, size_t cap)
{
#ifdef FSA_TEST_HAVE_PG
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d user=fsa dbname=postgres",
             pg->port);
    PGconn *c = PQconnectdb(conninfo);
    bool ok = c != NULL && PQstatus(c) == CONNECTION_OK;
    if (ok) {
        char sql[200];
        snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
        PGresult *r = PQexec(c, sql);
        ok = r != NULL && PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            fprintf(stderr, "pg harness: %s", PQerrorMessage(c));
        PQclear(r);
    }
    PQfinish(c);
    snprintf(uri, cap, "postgresql://fsa@127.0.0.1:%d/%s", pg->port, name);
    return ok;
#else
    (void)pg;
    (void)name;
    (void)uri;
    (void)cap;
    fprintf(stderr, "pg harness: built without libpq\n");
    return false;
#endif
}

static th_pg_t g_cluster;

static void stop_cluster(void)
{
    th_pg_stop(&g_cluster);
}

bool th_pg_drop_connections(const char *uri)
{
#ifdef FSA_TEST_HAVE_PG
    PGconn *c = PQconnectdb(uri);
    bool ok = c != NULL && PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *r = PQexec(c, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                " WHERE datname = current_database() AND pid <> pg_backend_pid()");
        ok = r != NULL && PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
    }
    PQfinish(c);
    return ok;
#else
    (void)uri;
    return false;
#endif
}

bool th_backend_is_pg(void)
{
    const char *b = getenv("FSA_TEST_DB");
    return b != NULL && strcmp(b, "postgresql") == 0;
}

bool th_backend_db(char *db, size_t cap)
{
    if (!th_backend_is_pg())
        return true;
    if (!g_cluster.running) {
        if (!th_pg_start(&g_cluster, false))
            return false;
        if (atexit(stop_cluster) != 0)
            fprintf(stderr, "pg harness: the cluster in %s will not be stopped at exit\n",
                    g_cluster.dir);
    }
    static int counter;
    char name[64];
    snprintf(name, sizeof name, "fsa_%d_%d", (int)getpid(), ++counter);
    return th_pg_createdb(&g_cluster, name, db, cap);
}
