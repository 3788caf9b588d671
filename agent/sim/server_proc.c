/* fieldsync-sim: finding, starting and stopping fieldsync-server; private files; a dead port. */
/* nftw() is an X/Open interface. */
#define _XOPEN_SOURCE 700
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/sim/fleet.h"
#include "port/alloc.h"

#define START_TIMEOUT_MS 20000
#define STOP_TIMEOUT_MS 20000
#define MAX_ARGS 64

static bool executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

fsa_status_t fsa__server_find(fsa__server_t *s, char *err, size_t errlen)
{
    const char *env = getenv("FIELDSYNC_SERVER");
    if (env != NULL && env[0] != '\0') {
        if (!executable(env)) {
            snprintf(err, errlen, "$FIELDSYNC_SERVER names %s, which is not an executable file",
                     env);
            return FSA_ENOTFOUND;
        }
        snprintf(s->binary, sizeof s->binary, "%s", env);
        snprintf(s->found_via, sizeof s->found_via, "$FIELDSYNC_SERVER");
        return FSA_OK;
    }
    char self[FSA__PATH_BYTES];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || (size_t)n >= sizeof self - 1) {
        snprintf(err, errlen,
                 "cannot find fieldsync-server: /proc/self/exe is unreadable; set "
                 "$FIELDSYNC_SERVER to its path");
        return FSA_ENOTFOUND;
    }
    self[n] = '\0';
    char *dir = dirname(self);
    char build[FSA__PATH_BYTES + 64], beside[FSA__PATH_BYTES + 64];
    snprintf(build, sizeof build, "%s/../sync/server/fieldsync-server", dir);
    snprintf(beside, sizeof beside, "%s/fieldsync-server", dir);
    if (executable(build)) {
        char *real = realpath(build, NULL);
        snprintf(s->binary, sizeof s->binary, "%s", real != NULL ? real : build);
        fsa_free(real);
        snprintf(s->found_via, sizeof s->found_via, "build tree");
        return FSA_OK;
    }
    if (executable(beside)) {
        snprintf(s->binary, sizeof s->binary, "%s", beside);
        snprintf(s->found_via, sizeof s->found_via, "installed beside fieldsync-sim");
        return FSA_OK;
    }
    snprintf(err, errlen,
             "cannot find fieldsync-server: not at %.180s nor %.180s; set $FIELDSYNC_SERVER or "
             "use --server URL --devices-file F",
             build, beside);
    return FSA_ENOTFOUND;
}

static int64_t now_ms(void)
{
    return fsa__real_ms();
}

static void last_lines(const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char line[256];
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] != '\0')
            snprintf(out, cap, "%s", line); /* the last non-empty line says why */
    }
    (void)fclose(f);
}

/* The server's command line into argv (room for MAX_ARGS + 32): the emulator's words (in emu, a
 * copy of $FIELDSYNC_SERVER_EMULATOR, which argv points into), the binary, the fixed options and
 * extra. */
static void server_argv(const fsa__server_t *s, char *emu, size_t emucap, const char *db,
                        const char *devices_file, const char *token_file, const char *const *extra,
                        const char **argv)
{
    size_t n = 0;
    /* A cross-built simulator runs under qemu-user, and so must the server it starts when the
     * host has no binfmt_misc: $FIELDSYNC_SERVER_EMULATOR is a command prefix, words separated
     * by '|' (as CMake's emulator list), e.g. "qemu-aarch64|-L|/sysroot". */
    const char *env = getenv("FIELDSYNC_SERVER_EMULATOR");
    snprintf(emu, emucap, "%s", env != NULL ? env : "");
    for (char *w = emu; *w != '\0' && n < 12;) {
        char *bar = strchr(w, '|');
        if (bar != NULL)
            *bar = '\0';
        if (*w != '\0')
            argv[n++] = w;
        if (bar == NULL)
            break;
        w = bar + 1;
    }
    argv[n++] = s->binary;
    const char *fixed[] = {"--listen",   "127.0.0.1:0",        "--db",    db, "--devices-file",
                           devices_file, "--admin-token-file", token_file};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        argv[n++] = fixed[i];
    /* Every simulated device connects from 127.0.0.1: the server's per-address connection limit
     * (64 by default, for the internet) is raised for the fleet. */
    argv[n++] = "--per-addr-connections";
    argv[n++] = "1000";
    for (size_t i = 0; extra != NULL && extra[i] != NULL && i < MAX_ARGS; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
}

/* Starts argv with its stdout on a pipe (*out_fd, the read end), its stderr appended to s->log
 * and stdin from /dev/null; it gets SIGTERM when the simulator dies. */
static fsa_status_t spawn(const fsa__server_t *s, const char *const *argv, pid_t *pid_out,
                          int *out_fd, char *err, size_t errlen)
{
    int pfd[2];
    if (pipe(pfd) != 0) {
        snprintf(err, errlen, "cannot start fieldsync-server: pipe: %s", strerror(errno));
        return FSA_EIO;
    }
    fcntl(pfd[0], F_SETFD, FD_CLOEXEC);
    fcntl(pfd[1], F_SETFD, FD_CLOEXEC);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        snprintf(err, errlen, "cannot start fieldsync-server: fork: %s", strerror(errno));
        return FSA_EIO;
    }
    if (pid == 0) {
        dup2(pfd[1], 1);
        int efd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (efd >= 0)
            dup2(efd, 2);
        int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (nul >= 0)
            dup2(nul, 0);
        /* The server must not outlive the simulator, however the simulator ends. It starts with
         * no signal blocked: the simulator blocks SIGINT and SIGTERM (main.c, stop_on_signal). */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* The emulator may be a bare name found on PATH; the server is a path either way. */
        execvp(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(pfd[1]);
    *pid_out = pid;
    *out_fd = pfd[0];
    return FSA_OK;
}

/* Reads the server's stdout (fd) until it says where it listens: s->url (and s->admin_url, which
 * comes first when there is one). False on its end of output or START_TIMEOUT_MS. */
static bool read_listening(fsa__server_t *s, int fd)
{
    char line[FSA__URL_BYTES + 32];
    size_t len = 0;
    int64_t deadline = now_ms() + START_TIMEOUT_MS;
    bool ok = false, eof = false;
    while (!ok && !eof && now_ms() < deadline && len + 1 < sizeof line) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t got = read(fd, line + len, 1);
        if (got <= 0) {
            eof = got == 0 || errno != EINTR;
            continue;
        }
        if (line[len] != '\n') {
            len++;
            continue;
        }
        line[len] = '\0';
        len = 0;
        static const char prefix[] = "listening on ";
        static const char admin[] = "admin listening on "; /* comes first */
        /* memcpy of the measured length: gcc -Os cannot see the check and calls a snprintf
         * here a possible truncation. */
        if (strncmp(line, admin, sizeof admin - 1) == 0 &&
            strlen(line + sizeof admin - 1) < sizeof s->admin_url)
            memcpy(s->admin_url, line + sizeof admin - 1, strlen(line + sizeof admin - 1) + 1);
        if (strncmp(line, prefix, sizeof prefix - 1) == 0 &&
            strlen(line + sizeof prefix - 1) < sizeof s->url) {
            memcpy(s->url, line + sizeof prefix - 1, strlen(line + sizeof prefix - 1) + 1);
            ok = true;
        }
    }
    return ok;
}

fsa_status_t fsa__server_start(fsa__server_t *s, const char *db, const char *devices_file,
                               const char *token_file, const char *const *extra, char *err,
                               size_t errlen)
{
    const char *argv[MAX_ARGS + 32];
    char emu[FSA__PATH_BYTES];
    server_argv(s, emu, sizeof emu, db, devices_file, token_file, extra, argv);
    pid_t pid = 0;
    int fd = -1;
    fsa_status_t st = spawn(s, argv, &pid, &fd, err, errlen);
    if (st != FSA_OK)
        return st;
    s->pid = (int)pid;
    s->url[0] = '\0';
    s->admin_url[0] = '\0';
    if (!read_listening(s, fd)) {
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        close(fd);
        s->pid = 0;
        char why[256];
        last_lines(s->log, why, sizeof why);
        snprintf(err, errlen, "fieldsync-server (%.200s) did not start%s%.256s", s->binary,
                 why[0] ? ": " : " (no message)", why);
        return FSA_EIO;
    }
    s->out_fd = fd;
    return FSA_OK;
}

int fsa__server_stop(fsa__server_t *s)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, SIGTERM);
    /* The server holds its stdout until it exits: EOF on the pipe is the exit, no sleep loop. */
    int64_t deadline = now_ms() + STOP_TIMEOUT_MS;
    bool exited = false;
    while (!exited && now_ms() < deadline) {
        struct pollfd p = {s->out_fd, POLLIN, 0};
        int r = poll(&p, 1, 200);
        if (r <= 0)
            continue;
        char chunk[256];
        ssize_t got = read(s->out_fd, chunk, sizeof chunk);
        if (got == 0 || (got < 0 && errno != EINTR))
            exited = true;
    }
    if (!exited)
        kill(s->pid, SIGKILL);
    int status = 0;
    while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
        ;
    close(s->out_fd);
    s->out_fd = -1;
    s->pid = 0;
    if (!exited)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

fsa_status_t fsa__write_private(const char *path, const char *text, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return FSA_EIO;
    }
    size_t len = strlen(text), off = 0;
    bool ok = fchmod(fd, 0600) == 0;
    while (ok && off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            ok = false;
        else
            off += (size_t)w;
    }
    ok = close(fd) == 0 && ok;
    if (!ok) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return FSA_EIO;
    }
    return FSA_OK;
}

fsa_status_t fsa__dead_url(char *url, size_t cap, int *fd)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return FSA_EIO;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    /* Bound but never listening: the kernel refuses every connection to it at once, and nobody
     * else can take the port while we hold it. */
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &alen) != 0) {
        close(s);
        return FSA_EIO;
    }
    snprintf(url, cap, "http://127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
    *fd = s;
    return FSA_OK;
}

static int remove_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    (void)remove(path); /* best effort: what is left is only a scratch directory */
    return 0;
}

void fsa__remove_tree(const char *dir)
{
    (void)nftw(dir, remove_one, 32, FTW_DEPTH | FTW_PHYS);
}
