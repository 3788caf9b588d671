/* fieldsync: the daemon, a thin program over libfieldsync's sync thread: metrics, signals, one
 * daemon per journal, syslog. */
#define _GNU_SOURCE /* F_OFD_SETLK; syslog's LOG_* with strict standards */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <fieldsync/fieldsync.h>

#include "agent/run.h"
#include "port/opts.h"
#include "port/timefmt.h"

/*
 * The sync loop (wake on record, the interval, the persisted backoff, the watchdog) is the
 * library's (fieldsync_start). What is left here is the program: its options, the metrics
 * (built from the status listener, fieldsync_stats and fieldsync_info), the signals (taken by
 * the main thread alone with sigwait, so no handler runs inside SQLite or curl), the lock that
 * keeps one daemon per journal, and the log to stderr and syslog.
 */

static const char RUN_HELP[] =
    "usage: fieldsync --db FILE run [--interval S] [--stall-after S] [--metrics-file PATH]\n"
    "                 [--metrics-listen 127.0.0.1:PORT] [--metrics-every S] [--syslog]\n"
    "\n"
    "Syncs continuously: at once after a new record (it watches the journal), otherwise every\n"
    "--interval seconds (default 60) to pull the server's changes. When the server cannot be\n"
    "reached or asks to wait, it backs off (the next attempt time is kept in the journal).\n"
    "A watchdog warns when the oldest pending op is older than --stall-after seconds (default\n"
    "600) while the server answers. One daemon per journal.\n"
    "\n"
    "Metrics in the Prometheus text format: written to --metrics-file (atomically, every\n"
    "--metrics-every seconds, default 10; for node_exporter's textfile collector) and/or served\n"
    "at http://HOST:PORT/metrics with --metrics-listen (loopback addresses only).\n"
    "Logs go to stderr (and syslog with --syslog); --log-level before the command sets the\n"
    "level. SIGTERM/SIGINT: stop within 5 s (a batch in flight is finished or abandoned; an\n"
    "abandoned one is resent next time). SIGHUP: reload the configuration from the journal and\n"
    "the secret file.\n";

#define STOP_WAIT_MS 4500 /* the batch in flight gets this long after SIGTERM; then abandoned */

typedef struct daemon {
    const char *db_path;
    int64_t interval_ms, stall_ms, metrics_every_ms;
    const char *metrics_file, *metrics_listen;
    bool use_syslog;
    fieldsync_t *fs;
    pthread_mutex_t mu;             /* guards everything below */
    pthread_cond_t cv;              /* STOPPED heard, or the daemon stops (the ticker) */
    fieldsync_sync_status_t status; /* the newest status event */
    bool stopped;                   /* STOPPED heard */
    bool quit;                      /* the metrics threads end */
    char text[8192];                /* the rendered metrics */
    int listen_fd;
    pthread_t metrics_thread, tick_thread;
    bool metrics_running, tick_running;
} daemon_t;

/* ---- logging ---- */

#if defined(__GNUC__)
static void vlogf(daemon_t *d, int prio, bool to_stderr, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
#endif
static void vlogf(daemon_t *d, int prio, bool to_stderr, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (to_stderr) {
        char ts[FSA_TIME_TEXT_MAX];
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (fsa_time_format_utc((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, FSA_TIME_ISO,
                                ts, sizeof ts) != FSA_OK)
            snprintf(ts, sizeof ts, "?");
        const char *level = prio == LOG_ERR ? "error" : prio == LOG_WARNING ? "warn" : "info";
        fprintf(stderr, "%s fieldsync[%ld]: %s: %s\n", ts, (long)getpid(), level, msg);
    }
    if (d->use_syslog)
        syslog(prio, "%s", msg);
}

/* A line of the daemon's own, to stderr and (with --syslog) to syslog. */
static void logf_(daemon_t *d, int prio, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void logf_(daemon_t *d, int prio, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlogf(d, prio, true, fmt, ap);
    va_end(ap);
}

/* A line for syslog only: the library says it on stderr already (it has no log hook). */
static void syslog_only(daemon_t *d, int prio, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void syslog_only(daemon_t *d, int prio, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlogf(d, prio, false, fmt, ap);
    va_end(ap);
}

/* ---- metrics ---- */

/* An integer member of a flat JSON object ("key":123), 0 when absent. */
static int64_t json_int(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = json != NULL ? strstr(json, pat) : NULL;
    return p != NULL ? strtoll(p + strlen(pat), NULL, 10) : 0;
}

/* Renders the metrics from the library's figures into d->text. */
static void render(daemon_t *d)
{
    fieldsync_stats_t s = {.size = sizeof s};
    if (fieldsync_stats(d->fs, &s) != FIELDSYNC_OK)
        memset(&s, 0, sizeof s);
    char *info = NULL;
    if (fieldsync_info(d->fs, &info) != FIELDSYNC_OK)
        info = NULL;
    int64_t pending = json_int(info, "pending"), oldest = json_int(info, "oldest_pending_at_ms");
    int64_t conflicts = json_int(info, "conflicts"), rejected = json_int(info, "rejected");
    int64_t offset = json_int(info, "clock_offset_ms"), last = json_int(info, "last_sync_ms");
    int64_t next = json_int(info, "next_attempt_ms");
    fieldsync_free(info);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    double age = oldest > 0 && now > oldest ? (double)(now - oldest) / 1000.0 : 0.0;
    const fieldsync_report_t *t = &s.totals;
    pthread_mutex_lock(&d->mu);
    int stalled = d->status.stalled ? 1 : 0;
    snprintf(d->text, sizeof d->text,
             "# HELP fieldsync_queue_depth Ops recorded on this device and not yet answered.\n"
             "# TYPE fieldsync_queue_depth gauge\nfieldsync_queue_depth %" PRId64 "\n"
             "# HELP fieldsync_oldest_pending_age_seconds Age of the oldest pending op.\n"
             "# TYPE fieldsync_oldest_pending_age_seconds gauge\n"
             "fieldsync_oldest_pending_age_seconds %.3f\n"
             "# HELP fieldsync_pushes_total Batches pushed to the server.\n"
             "# TYPE fieldsync_pushes_total counter\nfieldsync_pushes_total %" PRId64 "\n"
             "# HELP fieldsync_results_total Per-op results from the server, by status.\n"
             "# TYPE fieldsync_results_total counter\n"
             "fieldsync_results_total{status=\"applied\"} %" PRId64 "\n"
             "fieldsync_results_total{status=\"duplicate\"} %" PRId64 "\n"
             "fieldsync_results_total{status=\"conflict\"} %" PRId64 "\n"
             "fieldsync_results_total{status=\"rejected\"} %" PRId64 "\n"
             "# HELP fieldsync_retries_total Requests retried.\n"
             "# TYPE fieldsync_retries_total counter\nfieldsync_retries_total{policy=\"DEFAULT\"} "
             "%" PRId64 "\n"
             "# HELP fieldsync_conflicts_total Conflicts handled, by the resolver's verdict.\n"
             "# TYPE fieldsync_conflicts_total counter\n"
             "fieldsync_conflicts_total{kind=\"rebased\"} %" PRId64 "\n"
             "fieldsync_conflicts_total{kind=\"converged\"} %" PRId64 "\n"
             "fieldsync_conflicts_total{kind=\"server_wins\"} %" PRId64 "\n"
             "fieldsync_conflicts_total{kind=\"parked\"} %" PRId64 "\n"
             "# HELP fieldsync_open_conflicts Conflicts and rejections waiting for a person.\n"
             "# TYPE fieldsync_open_conflicts gauge\n"
             "fieldsync_open_conflicts{outcome=\"conflict\"} %" PRId64 "\n"
             "fieldsync_open_conflicts{outcome=\"rejected\"} %" PRId64 "\n"
             "# HELP fieldsync_lock_waits_total Sync cycles that found the SYNC lock held.\n"
             "# TYPE fieldsync_lock_waits_total counter\nfieldsync_lock_waits_total %" PRId64 "\n"
             "# HELP fieldsync_sync_cycles_total Sync cycles by result.\n"
             "# TYPE fieldsync_sync_cycles_total counter\n"
             "fieldsync_sync_cycles_total{result=\"ok\"} %" PRId64 "\n"
             "fieldsync_sync_cycles_total{result=\"offline\"} %" PRId64 "\n"
             "fieldsync_sync_cycles_total{result=\"error\"} %" PRId64 "\n"
             "# HELP fieldsync_pulled_total Server changes folded into the journal.\n"
             "# TYPE fieldsync_pulled_total counter\nfieldsync_pulled_total %" PRId64 "\n"
             "# HELP fieldsync_wire_bytes_total Bytes on the wire.\n"
             "# TYPE fieldsync_wire_bytes_total counter\n"
             "fieldsync_wire_bytes_total{direction=\"sent\"} %" PRId64 "\n"
             "fieldsync_wire_bytes_total{direction=\"received\"} %" PRId64 "\n"
             "# HELP fieldsync_clock_offset_seconds Server clock minus device clock.\n"
             "# TYPE fieldsync_clock_offset_seconds gauge\nfieldsync_clock_offset_seconds %.3f\n"
             "# HELP fieldsync_last_sync_timestamp_seconds Time of the last successful sync.\n"
             "# TYPE fieldsync_last_sync_timestamp_seconds gauge\n"
             "fieldsync_last_sync_timestamp_seconds %.3f\n"
             "# HELP fieldsync_next_attempt_timestamp_seconds Backoff: no sync before this time.\n"
             "# TYPE fieldsync_next_attempt_timestamp_seconds gauge\n"
             "fieldsync_next_attempt_timestamp_seconds %.3f\n"
             "# HELP fieldsync_watchdog_stalled Whether the queue is stuck although the server "
             "answers.\n"
             "# TYPE fieldsync_watchdog_stalled gauge\nfieldsync_watchdog_stalled %d\n",
             pending, age, s.batches, t->applied, t->duplicate, t->conflict, t->rejected,
             t->retries, t->rebased, t->converged, t->server_wins, t->parked, conflicts, rejected,
             s.cycles_busy, s.cycles_ok, s.cycles_offline, s.cycles_error, t->pulled, t->bytes_sent,
             t->bytes_received, (double)offset / 1000.0, (double)last / 1000.0,
             (double)next / 1000.0, stalled);
    pthread_mutex_unlock(&d->mu);
}

/* Writes the metrics file atomically: a reader never sees half a file. */
static void write_metrics_file(daemon_t *d)
{
    if (d->metrics_file == NULL)
        return;
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", d->metrics_file) >= (int)sizeof tmp)
        return;
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        logf_(d, LOG_WARNING, "cannot write metrics to %s: %s", tmp, strerror(errno));
        return;
    }
    pthread_mutex_lock(&d->mu);
    fputs(d->text, f);
    pthread_mutex_unlock(&d->mu);
    if (fclose(f) != 0 || rename(tmp, d->metrics_file) != 0)
        logf_(d, LOG_WARNING, "cannot write metrics to %s: %s", d->metrics_file, strerror(errno));
}

/* Parses "HOST:PORT" with a loopback host into addr. */
static bool parse_listen(const char *spec, struct sockaddr_storage *addr, socklen_t *len)
{
    const char *colon = strrchr(spec, ':');
    if (colon == NULL || colon == spec)
        return false;
    char host[64];
    size_t hl = (size_t)(colon - spec);
    if (hl >= sizeof host)
        return false;
    memcpy(host, spec, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535)
        return false;
    memset(addr, 0, sizeof *addr);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)(void *)addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)(void *)addr;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127)
            return false; /* metrics are for this device only */
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
        return true;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr))
            return false;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
        return true;
    }
    return false;
}

static bool quitting(daemon_t *d)
{
    pthread_mutex_lock(&d->mu);
    bool q = d->quit;
    pthread_mutex_unlock(&d->mu);
    return q;
}

/* Serves GET /metrics on the loopback socket until quit; one connection at a time. */
static void *metrics_server(void *arg)
{
    daemon_t *d = arg;
    while (!quitting(d)) {
        struct pollfd p = {d->listen_fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        int c = accept(d->listen_fd, NULL, NULL);
        if (c < 0)
            continue;
        char req[2048];
        size_t got = 0;
        struct pollfd pc = {c, POLLIN, 0};
        /* Read the request line and headers, bounded in size and in time (1 s). */
        while (got < sizeof req - 1 && poll(&pc, 1, 1000) > 0) {
            ssize_t n = read(c, req + got, sizeof req - 1 - got);
            if (n <= 0)
                break;
            got += (size_t)n;
            req[got] = '\0';
            if (strstr(req, "\r\n\r\n") != NULL || strstr(req, "\n\n") != NULL)
                break;
        }
        req[got] = '\0';
        char head[256];
        const char *body;
        char copy[sizeof d->text];
        if (strncmp(req, "GET /metrics ", 13) == 0 || strncmp(req, "GET / ", 6) == 0) {
            pthread_mutex_lock(&d->mu);
            memcpy(copy, d->text, sizeof copy);
            pthread_mutex_unlock(&d->mu);
            body = copy;
            snprintf(head, sizeof head,
                     "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     strlen(body));
        } else {
            body = "not found: try /metrics\n";
            snprintf(head, sizeof head,
                     "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     strlen(body));
        }
        if (write(c, head, strlen(head)) > 0) {
            ssize_t n = write(c, body, strlen(body));
            (void)n;
        }
        close(c);
    }
    return NULL;
}

static bool start_metrics_server(daemon_t *d, pthread_t *t)
{
    struct sockaddr_storage addr;
    socklen_t len = 0;
    if (!parse_listen(d->metrics_listen, &addr, &len)) {
        logf_(d, LOG_ERR,
              "--metrics-listen %s: expected HOST:PORT with a loopback host (127.0.0.1, ::1)",
              d->metrics_listen);
        return false;
    }
    d->listen_fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (d->listen_fd < 0 ||
        setsockopt(d->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(d->listen_fd, (struct sockaddr *)&addr, len) != 0 || listen(d->listen_fd, 16) != 0) {
        logf_(d, LOG_ERR, "--metrics-listen %s: %s", d->metrics_listen, strerror(errno));
        return false;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    if (getsockname(d->listen_fd, (struct sockaddr *)&bound, &bl) == 0) {
        // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): getsockname set it
        int port = bound.ss_family == AF_INET
                       ? ntohs(((struct sockaddr_in *)(void *)&bound)->sin_port)
                       : ntohs(((struct sockaddr_in6 *)(void *)&bound)->sin6_port);
        logf_(d, LOG_INFO, "metrics at http://%s/metrics (port %d)", d->metrics_listen, port);
        /* One line on stdout that tools (and tests) can read the port from. */
        printf("metrics on port %d\n", port);
        fflush(stdout);
    }
    return pthread_create(t, NULL, metrics_server, d) == 0;
}

/* Refreshes the metrics (and their file) on their own period, without syncing. */
static void *ticker(void *arg)
{
    daemon_t *d = arg;
    pthread_mutex_lock(&d->mu);
    while (!d->quit) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += d->metrics_every_ms / 1000;
        dl.tv_nsec += (long)(d->metrics_every_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        int rc = 0;
        while (!d->quit && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&d->cv, &d->mu, &dl);
        if (d->quit)
            break;
        pthread_mutex_unlock(&d->mu);
        render(d);
        write_metrics_file(d);
        pthread_mutex_lock(&d->mu);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* ---- the status listener (on the library's sync thread) ---- */

static void on_status(void *ctx, const fieldsync_sync_status_t *s)
{
    daemon_t *d = ctx;
    pthread_mutex_lock(&d->mu);
    fieldsync_sync_status_t was = d->status;
    d->status = *s;
    if (s->state == FIELDSYNC_STATE_STOPPED) {
        d->stopped = true;
        pthread_cond_broadcast(&d->cv);
    }
    pthread_mutex_unlock(&d->mu);
    render(d);
    /* What the library logs on stderr, syslog hears from here. */
    if (s->stalled && !was.stalled)
        syslog_only(d, LOG_WARNING,
                    "watchdog: the queue stopped moving: %" PRId64
                    " ops pending, the oldest for %" PRId64 " s, although the server answers",
                    s->queue_depth, s->oldest_pending_age_ms / 1000);
    else if (!s->stalled && was.stalled)
        syslog_only(d, LOG_INFO, "watchdog: the queue moves again");
    if (s->state != was.state &&
        (s->state == FIELDSYNC_STATE_ATTENTION || s->state == FIELDSYNC_STATE_OFFLINE))
        syslog_only(d, s->state == FIELDSYNC_STATE_ATTENTION ? LOG_ERR : LOG_WARNING, "%s: %s",
                    fieldsync_state_str(s->state),
                    s->last_error_msg[0] ? s->last_error_msg : s->reason);
}

/* ---- single instance, signals, life cycle ---- */

static int parse_seconds(const char *opt, const char *v, int64_t min_s, int64_t max_s,
                         int64_t *out_ms)
{
    char *end;
    errno = 0;
    double s = strtod(v, &end);
    if (errno != 0 || *end != '\0' || !isfinite(s) || s < (double)min_s || s > (double)max_s) {
        fprintf(stderr, "fieldsync: %s %s: expected seconds between %" PRId64 " and %" PRId64 "\n",
                opt, v, min_s, max_s);
        return -1;
    }
    *out_ms = (int64_t)(s * 1000.0);
    return 0;
}

/* One daemon per journal: an OFD lock on "<journal>.daemon" that the kernel drops if we die.
 * Returns the locked fd, -1 when another daemon holds it (its pid in *holder), -2 on errors. */
static int take_daemon_lock(const char *path, char *holder, size_t cap)
{
    holder[0] = '\0';
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -2;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
        int e = errno;
        if (e == EAGAIN || e == EACCES) {
            ssize_t n = pread(fd, holder, cap - 1, 0);
            holder[n > 0 ? (size_t)n : 0] = '\0';
            holder[strcspn(holder, "\n")] = '\0';
            close(fd);
            return -1;
        }
        close(fd);
        return -2;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    /* The pid only names the holder in another daemon's message. */
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != (ssize_t)n) {
        /* best effort: the lock is what counts */
    }
    return fd;
}

/* The options into d (defaults first). -1 to go on, else the exit status (0 after --help). */
static int parse_run_options(daemon_t *d, int argc, char **argv)
{
    d->interval_ms = 60 * 1000;
    d->stall_ms = 600 * 1000;
    d->metrics_every_ms = 10 * 1000;
    /* Options may be given again (the last stands), as they always could. */
    fsa_opt_t o[] = {{"interval", true, true, NULL},       {"stall-after", true, true, NULL},
                     {"metrics-every", true, true, NULL},  {"metrics-file", true, true, NULL},
                     {"metrics-listen", true, true, NULL}, {"syslog", false, true, NULL}};
    const size_t no = sizeof o / sizeof o[0];
    fsa_opts_result_t r;
    char err[256];
    if (fsa_opts_parse(argc, argv, o, no, NULL, 0, 0, &r, err, sizeof err) != FSA_OK) {
        fprintf(stderr, "fieldsync: run: %s (see 'fieldsync run --help')\n", err);
        return 2;
    }
    if (r.help) {
        fputs(RUN_HELP, stdout);
        return 0;
    }
    const char *v;
    if ((v = fsa_opts_get(o, no, "interval")) != NULL &&
        parse_seconds("--interval", v, 1, 86400, &d->interval_ms) != 0)
        return 2;
    if ((v = fsa_opts_get(o, no, "stall-after")) != NULL &&
        parse_seconds("--stall-after", v, 1, 30 * 86400, &d->stall_ms) != 0)
        return 2;
    if ((v = fsa_opts_get(o, no, "metrics-every")) != NULL &&
        parse_seconds("--metrics-every", v, 1, 3600, &d->metrics_every_ms) != 0)
        return 2;
    d->metrics_file = fsa_opts_get(o, no, "metrics-file");
    d->metrics_listen = fsa_opts_get(o, no, "metrics-listen");
    d->use_syslog = fsa_opts_get(o, no, "syslog") != NULL;
    if (d->db_path == NULL) {
        fprintf(stderr, "fieldsync: no journal: give --db FILE or set FIELDSYNC_DB\n");
        return 2;
    }
    return -1;
}

/* Opens the library on the journal and takes the one-daemon lock. The lock's fd, or -1 (said
 * on stderr; nothing left open). */
static int open_journal(daemon_t *d)
{
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = d->db_path;
    cfg.sync_interval_ms = d->interval_ms;
    cfg.stall_after_ms = d->stall_ms;
    cfg.label = "fieldsync-run";
    if (fieldsync_open(&cfg, &d->fs) != FIELDSYNC_OK) {
        fprintf(stderr, "fieldsync: %s\n", fieldsync_errmsg(d->fs));
        (void)fieldsync_close(d->fs);
        return -1;
    }
    char lpath[4200], holder[32];
    snprintf(lpath, sizeof lpath, "%s.daemon", d->db_path);
    int single = take_daemon_lock(lpath, holder, sizeof holder);
    if (single < 0) {
        if (single == -1)
            fprintf(stderr, "fieldsync: another 'fieldsync run'%s%s%s is already syncing %s\n",
                    holder[0] ? " (pid " : "", holder, holder[0] ? ")" : "", d->db_path);
        else
            fprintf(stderr, "fieldsync: cannot take the daemon lock %s: %s\n", lpath,
                    strerror(errno));
        (void)fieldsync_close(d->fs);
        return -1;
    }
    return single;
}

/* The status listener, the metrics threads and the sync thread. False when one failed (said;
 * what started is recorded in d and stopped by the caller). */
static bool start_all(daemon_t *d)
{
    render(d);
    if (fieldsync_add_status_listener(d->fs, on_status, d, NULL) != FIELDSYNC_OK) {
        fprintf(stderr, "fieldsync: %s\n", fieldsync_errmsg(d->fs));
        return false;
    }
    if (d->metrics_listen != NULL) {
        if (!start_metrics_server(d, &d->metrics_thread))
            return false;
        d->metrics_running = true;
    }
    if (d->metrics_file != NULL) {
        if (pthread_create(&d->tick_thread, NULL, ticker, d) != 0) {
            fprintf(stderr, "fieldsync: cannot start the metrics thread\n");
            return false;
        }
        d->tick_running = true;
    }
    if (fieldsync_start(d->fs, 0) != FIELDSYNC_OK) {
        fprintf(stderr, "fieldsync: %s\n", fieldsync_errmsg(d->fs));
        return false;
    }
    return true;
}

/* Waits for SIGTERM or SIGINT (blocked in set); SIGHUP reloads the configuration. */
static void wait_for_stop(daemon_t *d, const sigset_t *set)
{
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            logf_(d, LOG_INFO, "SIGHUP: reloading the configuration");
            (void)fieldsync_reload(d->fs);
            continue;
        }
        logf_(d, LOG_INFO, "%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        return;
    }
}

/* Stops the sync thread. The batch in flight gets 4.5 s to finish; past that it is abandoned
 * and the process exits at once: its ops stay in the outbox as in flight and are resent
 * (idempotently) by the next sync. */
static void stop_in_time(daemon_t *d)
{
    (void)fieldsync_stop(d->fs);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += STOP_WAIT_MS / 1000;
    dl.tv_nsec += (long)(STOP_WAIT_MS % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&d->mu);
    int wr = 0;
    while (!d->stopped && wr != ETIMEDOUT)
        wr = pthread_cond_timedwait(&d->cv, &d->mu, &dl);
    bool stopped = d->stopped;
    pthread_mutex_unlock(&d->mu);
    if (!stopped) {
        logf_(d, LOG_WARNING,
              "the request in flight did not finish in time: abandoned, it is resent next time");
        fflush(NULL);
        _exit(0);
    }
}

/* Ends the metrics threads, writes the last metrics after a clean stop, closes the library. */
static void finish(daemon_t *d, bool clean)
{
    pthread_mutex_lock(&d->mu);
    d->quit = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    if (d->metrics_running)
        pthread_join(d->metrics_thread, NULL);
    if (d->tick_running)
        pthread_join(d->tick_thread, NULL);
    if (clean) {
        render(d);
        write_metrics_file(d);
    }
    if (d->listen_fd >= 0)
        close(d->listen_fd);
    (void)fieldsync_close(d->fs);
    if (clean)
        logf_(d, LOG_INFO, "stopped");
}

int fsa_agent_run(const char *db_path, int argc, char **argv)
{
    static daemon_t dm;
    daemon_t *d = &dm;
    memset(d, 0, sizeof *d);
    d->db_path = db_path;
    d->listen_fd = -1;
    int rc = parse_run_options(d, argc, argv);
    if (rc >= 0)
        return rc;
    if (d->use_syslog)
        openlog("fieldsync", LOG_PID, LOG_DAEMON);
    /* Signals are taken by this thread alone, with sigwait; every thread made from here on (the
     * library's too) inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    (void)signal(SIGPIPE, SIG_IGN); /* cannot fail for SIGPIPE */
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    int single = open_journal(d);
    if (single < 0)
        return 1;
    rc = 1;
    if (start_all(d)) {
        logf_(d, LOG_INFO, "running on %s", db_path);
        wait_for_stop(d, &set);
        stop_in_time(d);
        rc = 0;
    }
    finish(d, rc == 0);
    /* The lock file stays: unlinking it would let a second daemon lock a new file while a
     * third still holds the old one. */
    close(single);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    return rc;
}
