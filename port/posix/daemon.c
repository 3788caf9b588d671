/* fieldsync: the programs' OS calls: signals, the one-instance lock, syslog, a loopback listener,
 * a server's listening sockets. */
#define _GNU_SOURCE /* F_OFD_SETLK; syslog's LOG_* with strict standards */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "port/alloc.h"
#include "port/daemon.h"

/* ---- signals ---- */

/* Whether the process blocked SIGHUP too (fsa_signals_block): written before any thread starts
 * (the functions' contract), read by fsa_signal_wait. sigwait on a signal left to its default
 * action is undefined, so it waits only for what was blocked. */
static bool hup_blocked;

static void stop_set(sigset_t *set, bool hup)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    if (hup)
        sigaddset(set, SIGHUP);
}

static fsa_status_t block(bool reload)
{
    sigset_t set;
    stop_set(&set, reload);
    hup_blocked = reload;
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return FSA_EIO;
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    return sigaction(SIGPIPE, &ign, NULL) == 0 ? FSA_OK : FSA_EIO;
}

fsa_status_t fsa_signals_block(void)
{
    return block(true);
}

fsa_status_t fsa_signals_block_stop(void)
{
    return block(false);
}

fsa_signal_t fsa_signal_wait(void)
{
    sigset_t set;
    stop_set(&set, hup_blocked); /* fsa_signals_block_stop leaves SIGHUP alone */
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP)
            return FSA_SIGNAL_RELOAD;
        return sig == SIGTERM ? FSA_SIGNAL_TERM : FSA_SIGNAL_INT;
    }
}

_Noreturn void fsa_process_exit_now(int status)
{
    _exit(status);
}

/* ---- one instance per file ---- */

struct fsa_pidlock {
    int fd;
};

fsa_status_t fsa_pidlock_take(const char *path, int64_t pid, fsa_pidlock_t **out, char *holder,
                              size_t holder_cap, char *err, size_t errlen)
{
    if (holder_cap > 0)
        holder[0] = '\0';
    if (path == NULL || out == NULL || holder_cap == 0) {
        snprintf(err, errlen, "pid lock: bad arguments");
        return FSA_EINVAL;
    }
    fsa_pidlock_t *l = fsa_malloc(sizeof *l);
    if (l == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        return FSA_ENOMEM;
    }
    l->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (l->fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        fsa_free(l);
        return FSA_EIO;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    if (fcntl(l->fd, F_OFD_SETLK, &fl) != 0) {
        int e = errno;
        fsa_status_t st = FSA_EIO;
        if (e == EAGAIN || e == EACCES) {
            /* The file was just opened: read() starts at its first byte. */
            ssize_t n = read(l->fd, holder, holder_cap - 1);
            holder[n > 0 ? (size_t)n : 0] = '\0';
            char *nl = strchr(holder, '\n');
            if (nl != NULL)
                *nl = '\0';
            st = FSA_EBUSY;
        } else {
            snprintf(err, errlen, "%s: %s", path, strerror(e));
        }
        close(l->fd);
        fsa_free(l);
        return st;
    }
    char text[32];
    int n = snprintf(text, sizeof text, "%lld\n", (long long)pid);
    /* The pid only names the holder in another instance's message: the lock is what counts. */
    /* Nothing was read or written yet: write() starts at the first byte. */
    if (ftruncate(l->fd, 0) != 0 || write(l->fd, text, (size_t)n) != (ssize_t)n) {
        /* best effort */
    }
    *out = l;
    return FSA_OK;
}

void fsa_pidlock_release(fsa_pidlock_t *l)
{
    if (l == NULL)
        return;
    close(l->fd); /* drops the OFD lock */
    fsa_free(l);
}

/* ---- syslog ---- */

struct fsa_syslog {
    char ident[64]; /* openlog keeps the pointer: it lives here until close */
};

fsa_status_t fsa_syslog_open(const char *ident, bool also_stderr, fsa_syslog_t **out)
{
    if (ident == NULL || ident[0] == '\0' || out == NULL)
        return FSA_EINVAL;
    fsa_syslog_t *s = fsa_calloc(1, sizeof *s);
    if (s == NULL)
        return FSA_ENOMEM;
    snprintf(s->ident, sizeof s->ident, "%s", ident);
    openlog(s->ident, LOG_PID | (also_stderr ? LOG_PERROR : 0), LOG_DAEMON);
    *out = s;
    return FSA_OK;
}

// cppcheck-suppress constParameter ; the signature of fsa_port_t.log, whose ctx is not const
void fsa_syslog_write(void *ctx, fsa_log_level_t level, const char *msg)
{
    if (ctx == NULL || level >= FSA_LOG_OFF)
        return;
    int prio = level == FSA_LOG_ERROR  ? LOG_ERR
               : level == FSA_LOG_WARN ? LOG_WARNING
               : level == FSA_LOG_INFO ? LOG_INFO
                                       : LOG_DEBUG;
    syslog(prio, "%s", msg);
}

void fsa_syslog_close(fsa_syslog_t *s)
{
    if (s == NULL)
        return;
    closelog();
    fsa_free(s);
}

/* ---- a loopback TCP listener ---- */

struct fsa_listener {
    int fd;
};
struct fsa_conn {
    int fd;
};

/* Parses "HOST:PORT" with a loopback host into addr; false with err (starting with spec) saying
 * what is wrong: the form, the port, or a host that is not loopback. */
static bool parse_listen(const char *spec, struct sockaddr_storage *addr, socklen_t *len, char *err,
                         size_t errlen)
{
    for (const char *p = spec; *p != '\0'; p++)
        if (*p == ' ' || (*p >= '\t' && *p <= '\r')) {
            snprintf(err, errlen, "%s: expected HOST:PORT without spaces", spec);
            return false;
        }
    const char *colon = strrchr(spec, ':');
    if (colon == NULL || colon == spec || colon[1] == '\0') {
        snprintf(err, errlen, "%s: expected HOST:PORT, such as 127.0.0.1:9100", spec);
        return false;
    }
    /* The port: decimal digits only (no sign, no space), 0 to 65535. */
    long port = 0;
    const char *d = colon + 1;
    for (; *d >= '0' && *d <= '9' && port <= 65535; d++)
        port = port * 10 + (*d - '0');
    if (*d != '\0' || port > 65535) {
        snprintf(err, errlen, "%s: the port must be a number from 0 to 65535", spec);
        return false;
    }
    char host[64];
    size_t hl = (size_t)(colon - spec);
    if (hl >= sizeof host)
        hl = 0; /* too long for any address: not loopback */
    memcpy(host, spec, hl);
    host[hl] = '\0';
    memset(addr, 0, sizeof *addr);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)(void *)addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)(void *)addr;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1 && (ntohl(a4->sin_addr.s_addr) >> 24) == 127) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
        return true;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1 && IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr)) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
        return true;
    }
    snprintf(err, errlen,
             "%s: the host must be a loopback address (127.0.0.1, localhost, ::1): for this "
             "device only",
             spec);
    return false;
}

fsa_status_t fsa_listener_check(const char *spec, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t len = 0;
    if (spec == NULL) {
        snprintf(err, errlen, "no HOST:PORT given");
        return FSA_EINVAL;
    }
    return parse_listen(spec, &addr, &len, err, errlen) ? FSA_OK : FSA_EINVAL;
}

/* socket, bind and listen on addr (close-on-exec, SO_REUSEADDR), and the port it got: FSA_OK,
 * FSA_EBUSY (the address is in use) or FSA_EIO, err the OS's reason. */
static fsa_status_t listen_on(const struct sockaddr *addr, socklen_t len, int backlog, int *out_fd,
                              int *bound_port, char *err, size_t errlen)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_storage bound;
    memset(&bound, 0, sizeof bound);
    socklen_t bl = sizeof bound;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, addr, len) != 0 || listen(fd, backlog) != 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &bl) != 0) {
        int e = errno;
        snprintf(err, errlen, "%s", strerror(e));
        if (fd >= 0)
            close(fd);
        return e == EADDRINUSE ? FSA_EBUSY : FSA_EIO;
    }
    *out_fd = fd;
    if (bound_port != NULL)
        *bound_port = bound.ss_family == AF_INET
                          ? ntohs(((struct sockaddr_in *)(void *)&bound)->sin_port)
                          : ntohs(((struct sockaddr_in6 *)(void *)&bound)->sin6_port);
    return FSA_OK;
}

fsa_status_t fsa_listener_open(const char *spec, fsa_listener_t **out, int *bound_port, char *err,
                               size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t len = 0;
    if (spec == NULL || out == NULL) {
        snprintf(err, errlen, "no HOST:PORT given");
        return FSA_EINVAL;
    }
    if (!parse_listen(spec, &addr, &len, err, errlen))
        return FSA_EINVAL;
    int fd = -1;
    char why[200];
    if (listen_on((struct sockaddr *)&addr, len, 16, &fd, bound_port, why, sizeof why) != FSA_OK) {
        snprintf(err, errlen, "%s: %s", spec, why);
        return FSA_EIO;
    }
    fsa_listener_t *l = fsa_malloc(sizeof *l);
    if (l == NULL) {
        snprintf(err, errlen, "%s: out of memory", spec);
        close(fd);
        return FSA_ENOMEM;
    }
    l->fd = fd;
    *out = l;
    return FSA_OK;
}

fsa_status_t fsa_listener_accept(fsa_listener_t *l, int timeout_ms, fsa_conn_t **out)
{
    struct pollfd p = {l->fd, POLLIN, 0};
    int r = poll(&p, 1, timeout_ms);
    if (r == 0 || (r < 0 && errno == EINTR))
        return FSA_ETIMEOUT;
    if (r < 0)
        return FSA_EIO;
    int c = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return errno == EAGAIN || errno == ECONNABORTED || errno == EINTR ? FSA_ETIMEOUT : FSA_EIO;
    fsa_conn_t *conn = fsa_malloc(sizeof *conn);
    if (conn == NULL) {
        close(c);
        return FSA_ENOMEM;
    }
    conn->fd = c;
    *out = conn;
    return FSA_OK;
}

void fsa_listener_close(fsa_listener_t *l)
{
    if (l == NULL)
        return;
    close(l->fd);
    fsa_free(l);
}

size_t fsa_conn_read_head(fsa_conn_t *c, char *buf, size_t cap, int timeout_ms)
{
    if (cap == 0)
        return 0;
    size_t got = 0;
    struct pollfd pc = {c->fd, POLLIN, 0};
    buf[0] = '\0';
    /* timeout_ms bounds the whole head, not each wait: a client that sends a byte now and then
     * would otherwise hold the (one-at-a-time) server for as long as it likes. */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int left = timeout_ms; got < cap - 1 && left > 0 && poll(&pc, 1, left) > 0;) {
        ssize_t n = read(c->fd, buf + got, cap - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL || strstr(buf, "\n\n") != NULL)
            break;
        clock_gettime(CLOCK_MONOTONIC, &t);
        left =
            timeout_ms - (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
    }
    buf[got] = '\0';
    return got;
}

fsa_status_t fsa_conn_write(fsa_conn_t *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(c->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return FSA_EIO;
        p += n;
        len -= (size_t)n;
    }
    return FSA_OK;
}

void fsa_conn_close(fsa_conn_t *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    fsa_free(c);
}

/* ---- a server's listening sockets ---- */

/* True for an address of the loopback interface: 127.0.0.0/8, ::1, or ::ffff:127.x.y.z. */
static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return false;
}

fsa_status_t fsa_socket_listen_tcp(const char *host, const char *port, int backlog,
                                   bool loopback_only, int *fd, int *bound_port, bool *v6,
                                   char *err, size_t errlen)
{
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "%s", gai_strerror(rc));
        return FSA_EINVAL;
    }
    fsa_status_t st;
    if (loopback_only && !is_loopback(ai->ai_addr)) {
        snprintf(err, errlen, "not a loopback address");
        st = FSA_EPERM;
    } else {
        *v6 = ai->ai_family == AF_INET6;
        st = listen_on(ai->ai_addr, ai->ai_addrlen, backlog, fd, bound_port, err, errlen);
    }
    freeaddrinfo(ai);
    return st;
}

fsa_status_t fsa_socket_listen_unix(const char *path, int backlog, int *out_fd, char *err,
                                    size_t errlen)
{
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (path[0] == '\0' || strlen(path) >= sizeof a.sun_path) {
        snprintf(err, errlen, "empty or over %zu bytes", sizeof a.sun_path - 1);
        return FSA_EINVAL;
    }
    memcpy(a.sun_path, path, strlen(path) + 1);
    struct stat sb;
    if (lstat(path, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode)) {
            snprintf(err, errlen, "a file that is not a socket is there");
            return FSA_EPERM;
        }
        /* A socket someone still listens on is in use; one left by an earlier run (nobody
         * listens: ECONNREFUSED) is replaced. The probe does not wait: a listener whose queue
         * is full (busy, or hung) answers EAGAIN, which is in use too, where a blocking connect
         * never returned. Any other failure (EACCES: someone else's socket) replaces nothing. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (probe < 0) {
            snprintf(err, errlen, "%s", strerror(errno));
            return FSA_EIO;
        }
        int pe = connect(probe, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : errno;
        close(probe);
        if (pe == 0 || pe == EAGAIN || pe == EINPROGRESS) {
            snprintf(err, errlen, "another process listens on it");
            return FSA_EBUSY;
        }
        if (pe != ECONNREFUSED) {
            snprintf(err, errlen, "cannot tell whether it is in use: %s", strerror(pe));
            return pe == EACCES ? FSA_EPERM : FSA_EIO;
        }
        (void)unlink(path); /* bind reports what remains */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    /* bind creates the file with the umask's mode: 0600 from the start, and chmod'ed again to be
     * sure. The umask is the process's: a file another thread creates in this instant (the
     * server's sweeper and watch threads run by then) gets a narrower mode, never a wider one. */
    int brc = -1;
    if (fd >= 0) {
        mode_t old = umask(0177);
        brc = bind(fd, (struct sockaddr *)&a, sizeof a);
        (void)umask(old);
    }
    if (fd < 0 || brc != 0 || chmod(path, 0600) != 0 || listen(fd, backlog) != 0) {
        int e = errno;
        snprintf(err, errlen, "%s", strerror(e));
        if (fd >= 0)
            close(fd);
        return e == EADDRINUSE ? FSA_EBUSY : FSA_EIO;
    }
    *out_fd = fd;
    return FSA_OK;
}

void fsa_socket_client_key(const void *addr, unsigned char key[FSA_SOCKET_CLIENT_KEY])
{
    const struct sockaddr *sa = addr;
    memset(key, 0, FSA_SOCKET_CLIENT_KEY);
    key[0] = 1; /* another family, or none */
    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        key[0] = 4;
        memcpy(key + 1, &in->sin_addr, 4);
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            key[0] = 4;
            memcpy(key + 1, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            key[0] = 6;
            memcpy(key + 1, in6->sin6_addr.s6_addr, 8); /* the /64 */
        }
    }
}

void fsa_socket_shutdown(int fd)
{
    (void)shutdown(fd, SHUT_RDWR); /* may fail on a socket closing already */
}

void fsa_socket_close(int fd)
{
    if (fd >= 0)
        close(fd);
}

void fsa_socket_unlink(const char *path)
{
    (void)unlink(path);
}
