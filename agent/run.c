/* fieldsync: the daemon: continuous sync, wake on record, watchdog, metrics, signals. */
#define _GNU_SOURCE /* syslog's LOG_* with strict standards, vsyslog */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "agent/config.h"
#include "agent/run.h"
#include "port/limits.h"
#include "port/watch.h"
#include "storage/lock.h"

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

typedef struct metrics {
    int64_t cycles_ok, cycles_offline, cycles_error, cycles_busy;
    int64_t batches, applied, duplicate, conflict, rejected, pulled;
    int64_t retries, rebased, converged, server_wins, parked;
    int64_t bytes_sent, bytes_received;
    int64_t queue_depth, oldest_pending_at_ms, open_conflicts, open_rejected;
    int64_t clock_offset_ms, last_sync_ms, next_attempt_ms;
    int stalled;
} metrics_t;

typedef struct daemon {
    const char *db_path;
    int64_t interval_ms, stall_ms, metrics_every_ms;
    const char *metrics_file, *metrics_listen;
    bool use_syslog;
    fsa_port_t port; /* posix, with this daemon's log sink */
    fsa_journal_t *j;
    fsa_watch_t *watch;
    pthread_mutex_t mu; /* guards engine, metrics, text */
    fsa_engine_t *engine;
    metrics_t m;
    const char *retry_name;
    char text[8192]; /* the rendered metrics */
    atomic_int stop, reload, worker_done;
    int listen_fd;
} daemon_t;

/* ---- logging ---- */

static void daemon_log(void *ctx, fsa_log_level_t level, const char *msg)
{
    daemon_t *d = ctx;
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm) == NULL || strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(ts, sizeof ts, "?");
    fprintf(stderr, "%s fieldsync[%ld]: %s: %s\n", ts, (long)getpid(), fsa_log_level_str(level),
            msg);
    if (d->use_syslog) {
        static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
        syslog(prio[level <= FSA_LOG_ERROR ? level : FSA_LOG_ERROR], "%s", msg);
    }
}

/* ---- metrics ---- */

static void render(daemon_t *d)
{
    const metrics_t *m = &d->m;
    int64_t now = d->port.wall_now(NULL).ms;
    double age =
        m->oldest_pending_at_ms > 0 ? (double)(now - m->oldest_pending_at_ms) / 1000.0 : 0.0;
    snprintf(
        d->text, sizeof d->text,
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
        "# HELP fieldsync_retries_total Requests retried, by retry policy.\n"
        "# TYPE fieldsync_retries_total counter\nfieldsync_retries_total{policy=\"%s\"} %" PRId64
        "\n"
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
        m->queue_depth, age, m->batches, m->applied, m->duplicate, m->conflict, m->rejected,
        d->retry_name, m->retries, m->rebased, m->converged, m->server_wins, m->parked,
        m->open_conflicts, m->open_rejected, m->cycles_busy, m->cycles_ok, m->cycles_offline,
        m->cycles_error, m->pulled, m->bytes_sent, m->bytes_received,
        (double)m->clock_offset_ms / 1000.0, (double)m->last_sync_ms / 1000.0,
        (double)m->next_attempt_ms / 1000.0, m->stalled);
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
        fsa_log(&d->port, FSA_LOG_WARN, "cannot write metrics to %s: %s", tmp, strerror(errno));
        return;
    }
    pthread_mutex_lock(&d->mu);
    fputs(d->text, f);
    pthread_mutex_unlock(&d->mu);
    if (fclose(f) != 0 || rename(tmp, d->metrics_file) != 0)
        fsa_log(&d->port, FSA_LOG_WARN, "cannot write metrics to %s: %s", d->metrics_file,
                strerror(errno));
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

/* Serves GET /metrics on the loopback socket until stop; one connection at a time. */
static void *metrics_server(void *arg)
{
    daemon_t *d = arg;
    while (!atomic_load(&d->stop)) {
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
        fsa_log(&d->port, FSA_LOG_ERROR,
                "--metrics-listen %s: expected HOST:PORT with a loopback host (127.0.0.1, ::1)",
                d->metrics_listen);
        return false;
    }
    d->listen_fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (d->listen_fd < 0 ||
        setsockopt(d->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(d->listen_fd, (struct sockaddr *)&addr, len) != 0 || listen(d->listen_fd, 16) != 0) {
        fsa_log(&d->port, FSA_LOG_ERROR, "--metrics-listen %s: %s", d->metrics_listen,
                strerror(errno));
        return false;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    if (getsockname(d->listen_fd, (struct sockaddr *)&bound, &bl) == 0) {
        // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): getsockname set it
        int port = bound.ss_family == AF_INET
                       ? ntohs(((struct sockaddr_in *)(void *)&bound)->sin_port)
                       : ntohs(((struct sockaddr_in6 *)(void *)&bound)->sin6_port);
        fsa_log(&d->port, FSA_LOG_INFO, "metrics at http://%s/metrics (port %d)", d->metrics_listen,
                port);
        /* One line on stdout that tools (and tests) can read the port from. */
        printf("metrics on port %d\n", port);
        fflush(stdout);
    }
    return pthread_create(t, NULL, metrics_server, d) == 0;
}

/* ---- the sync loop ---- */

static void refresh_queue(daemon_t *d)
{
    fsa_outbox_stats_t os;
    int64_t off = 0, last = 0, next = 0;
    if (fsa_outbox_stats(d->j, &os) != FSA_OK)
        return;
    if (fsa_journal_state_get_int(d->j, "clock_offset_ms", 0, &off) != FSA_OK ||
        fsa_journal_state_get_int(d->j, "last_sync_ms", 0, &last) != FSA_OK ||
        fsa_journal_state_get_int(d->j, "next_attempt_ms", 0, &next) != FSA_OK)
        return;
    pthread_mutex_lock(&d->mu);
    d->m.queue_depth = os.pending;
    d->m.oldest_pending_at_ms = os.oldest_pending_at_ms;
    d->m.open_conflicts = os.conflicts;
    d->m.open_rejected = os.rejected;
    d->m.clock_offset_ms = off;
    d->m.last_sync_ms = last;
    d->m.next_attempt_ms = next;
    render(d);
    pthread_mutex_unlock(&d->mu);
}

static void account(daemon_t *d, fsa_status_t st, const fsa_sync_report_t *r)
{
    pthread_mutex_lock(&d->mu);
    metrics_t *m = &d->m;
    if (st == FSA_OK)
        m->cycles_ok++;
    else if (st == FSA_EBUSY && strstr(r->error, "backing off") == NULL)
        m->cycles_busy++;
    else if (st == FSA_ENET || st == FSA_ETIMEOUT || st == FSA_ETLS || st == FSA_EBUSY)
        m->cycles_offline++;
    else
        m->cycles_error++;
    m->batches += r->batches;
    m->applied += r->applied;
    m->duplicate += r->duplicate;
    m->conflict += r->conflict;
    m->rejected += r->rejected;
    m->pulled += r->pulled;
    m->retries += r->retries;
    m->rebased += r->rebased;
    m->converged += r->converged;
    m->server_wins += r->server_wins;
    m->parked += r->parked;
    m->bytes_sent += r->bytes_sent;
    m->bytes_received += r->bytes_received;
    pthread_mutex_unlock(&d->mu);
}

/* The watchdog: pending ops older than the threshold while the server answers. */
static void watchdog(daemon_t *d, fsa_status_t st, const fsa_sync_report_t *r)
{
    int64_t now = d->port.wall_now(NULL).ms;
    pthread_mutex_lock(&d->mu);
    /* "The network is up": the server answered something in this cycle (even a 5xx). */
    bool server_answers = st == FSA_OK || r->last_http_status != 0;
    bool old = d->m.queue_depth > 0 && d->m.oldest_pending_at_ms > 0 &&
               now - d->m.oldest_pending_at_ms > d->stall_ms;
    int was = d->m.stalled;
    /* A cycle that did not try (backing off, lock busy) tells nothing new. */
    if (st != FSA_EBUSY)
        d->m.stalled = server_answers && old;
    int64_t age_s = (now - d->m.oldest_pending_at_ms) / 1000;
    int64_t depth = d->m.queue_depth;
    render(d);
    pthread_mutex_unlock(&d->mu);
    if (d->m.stalled && !was)
        fsa_log(&d->port, FSA_LOG_WARN,
                "watchdog: the queue stopped moving: %" PRId64
                " ops pending, the oldest for %" PRId64 " s, although the server answers",
                depth, age_s);
    else if (!d->m.stalled && was)
        fsa_log(&d->port, FSA_LOG_INFO, "watchdog: the queue moves again");
}

static void make_engine(daemon_t *d)
{
    pthread_mutex_lock(&d->mu);
    fsa_engine_free(d->engine);
    d->engine = NULL;
    pthread_mutex_unlock(&d->mu);
    char err[320];
    fsa_engine_t *e = NULL;
    fsa_status_t st = fsa_agent_engine_new(&d->port, d->j, NULL, &e, err, sizeof err);
    if (st != FSA_OK) {
        fsa_log(&d->port, FSA_LOG_ERROR, "cannot sync: %s", err);
        return;
    }
    pthread_mutex_lock(&d->mu);
    d->engine = e;
    pthread_mutex_unlock(&d->mu);
    fsa_log(&d->port, FSA_LOG_INFO, "configuration loaded");
}

static void *sync_loop(void *arg)
{
    daemon_t *d = arg;
    bool need_engine = true;
    bool refused = false; /* the server refused this device: no sync until a reload */
    while (!atomic_load(&d->stop)) {
        if (need_engine || atomic_exchange(&d->reload, 0)) {
            make_engine(d);
            need_engine = false;
            refused = false;
            if (atomic_load(&d->stop))
                break; /* a SIGTERM right after a SIGHUP: do not start a cycle */
        }
        fsa_status_t st = FSA_EINVAL;
        fsa_sync_report_t r;
        memset(&r, 0, sizeof r);
        if (d->engine != NULL && !refused) {
            st = fsa_engine_sync(d->engine, &r);
            account(d, st, &r);
            if (st == FSA_OK && (r.pushed > 0 || r.pulled > 0))
                fsa_log(&d->port, FSA_LOG_INFO,
                        "synced: %" PRId64 " applied, %" PRId64 " duplicate, %" PRId64
                        " conflict, %" PRId64 " rejected, %" PRId64 " pulled",
                        r.applied, r.duplicate, r.conflict, r.rejected, r.pulled);
            if (st == FSA_EAUTH) {
                refused = true;
                fsa_log(&d->port, FSA_LOG_ERROR,
                        "the server refused this device: no sync until the configuration is "
                        "fixed and reloaded (SIGHUP)");
            }
        }
        /* Our own writes during the cycle are not news: take them off the watch, then look at
         * the queue, which also shows records that others made meanwhile. */
        if (fsa_watch_wait(d->watch, 0) == FSA_EIO)
            fsa_log(&d->port, FSA_LOG_WARN, "journal watch failed");
        refresh_queue(d);
        if (!refused && d->engine != NULL)
            watchdog(d, st, &r);
        write_metrics_file(d);

        /* When to sync next: at the persisted next attempt while backing off (new records do
         * not cut it short); soon when ops came in during the cycle; else on a new record or
         * on the schedule. Without a usable configuration, only a reload helps. */
        int64_t now = d->port.wall_now(NULL).ms;
        pthread_mutex_lock(&d->mu);
        int64_t next = d->m.next_attempt_ms, depth = d->m.queue_depth;
        pthread_mutex_unlock(&d->mu);
        int64_t wait_ms = d->interval_ms;
        bool records_wake = true;
        if (d->engine == NULL || refused) {
            wait_ms = INT64_MAX / FSA_NS_PER_MS;
            records_wake = false;
        } else if (next > now) {
            wait_ms = next - now + 1; /* past the boundary, not a hair before it */
            records_wake = false;
        } else if (st == FSA_OK && depth > 0) {
            wait_ms = 1000; /* recorded during the cycle, or rebased past the cycle's rounds */
        }
        fsa_mono_t due = fsa_mono_add_ns(d->port.mono_now(NULL), wait_ms * FSA_NS_PER_MS);
        while (!atomic_load(&d->stop) && !atomic_load(&d->reload)) {
            int64_t left_ns = fsa_mono_diff_ns(due, d->port.mono_now(NULL));
            int64_t left = (left_ns + FSA_NS_PER_MS - 1) / FSA_NS_PER_MS; /* round up */
            if (left <= 0)
                break;
            /* The metrics file is refreshed on its own period, without a sync. */
            bool metrics_tick = d->metrics_file != NULL && left > d->metrics_every_ms;
            fsa_status_t ws = fsa_watch_wait(d->watch, metrics_tick ? d->metrics_every_ms : left);
            if (ws == FSA_OK && records_wake)
                break;
            if (ws == FSA_ETIMEOUT && metrics_tick) {
                refresh_queue(d);
                write_metrics_file(d);
            }
            if (ws == FSA_EIO) {
                d->port.sleep(NULL, (metrics_tick ? d->metrics_every_ms : left) * FSA_NS_PER_MS);
                if (!metrics_tick)
                    break;
            }
        }
    }
    atomic_store(&d->worker_done, 1);
    return NULL;
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

int fsa_agent_run(const char *db_path, int argc, char **argv)
{
    static daemon_t dm;
    daemon_t *d = &dm;
    memset(d, 0, sizeof *d);
    d->db_path = db_path;
    d->interval_ms = 60 * 1000;
    d->stall_ms = 600 * 1000;
    d->metrics_every_ms = 10 * 1000;
    d->listen_fd = -1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(RUN_HELP, stdout);
            return 0;
        } else if (strcmp(a, "--syslog") == 0) {
            d->use_syslog = true;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr,
                    "fieldsync: run: unknown option or missing value: '%s' (see "
                    "'fieldsync run --help')\n",
                    a);
            return 2;
        }
        int bad = 0;
        if (strcmp(a, "--interval") == 0)
            bad = parse_seconds(a, v, 1, 86400, &d->interval_ms);
        else if (strcmp(a, "--stall-after") == 0)
            bad = parse_seconds(a, v, 1, 30 * 86400, &d->stall_ms);
        else if (strcmp(a, "--metrics-every") == 0)
            bad = parse_seconds(a, v, 1, 3600, &d->metrics_every_ms);
        else if (strcmp(a, "--metrics-file") == 0)
            d->metrics_file = v;
        else if (strcmp(a, "--metrics-listen") == 0)
            d->metrics_listen = v;
        else {
            fprintf(stderr, "fieldsync: run: unknown option '%s' (see 'fieldsync run --help')\n",
                    a);
            return 2;
        }
        if (bad)
            return 2;
        i++;
    }
    if (db_path == NULL) {
        fprintf(stderr, "fieldsync: no journal: give --db FILE or set FIELDSYNC_DB\n");
        return 2;
    }
    d->port = *fsa_port_posix();
    d->port.ctx = d;
    d->port.log = daemon_log;
    d->retry_name = fsa_retry_policy(FSA_RETRY_DEFAULT)->name;
    if (d->use_syslog)
        openlog("fieldsync", LOG_PID, LOG_DAEMON);
    pthread_mutex_init(&d->mu, NULL);
    render(d);

    char err[320];
    fsa_journal_opts_t jo = {0};
    fsa_status_t st = fsa_journal_open(&d->port, db_path, &jo, &d->j, err, sizeof err);
    if (st != FSA_OK) {
        fprintf(stderr, "fieldsync: %s\n", err);
        return 1;
    }
    /* One daemon per journal: an OFD lock the kernel drops if we die. */
    char lpath[4200];
    snprintf(lpath, sizeof lpath, "%s.daemon", db_path);
    fsa_flock_t *single = NULL;
    int rc = 1;
    st = d->port.flock_open(NULL, lpath, &single);
    if (st == FSA_OK)
        st = d->port.flock_try(NULL, single, 0);
    if (st != FSA_OK && st != FSA_EBUSY) {
        fprintf(stderr, "fieldsync: cannot take the daemon lock %s: %s\n", lpath,
                fsa_status_str(st));
        d->port.flock_close(NULL, single);
        fsa_journal_close(d->j);
        return 1;
    }
    if (st == FSA_EBUSY) {
        char pid[32] = "";
        FILE *f = fopen(lpath, "r");
        if (f != NULL) {
            if (fgets(pid, sizeof pid, f) == NULL)
                pid[0] = '\0';
            (void)fclose(f);
            pid[strcspn(pid, "\n")] = '\0';
        }
        fprintf(stderr, "fieldsync: another 'fieldsync run'%s%s%s is already syncing %s\n",
                pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "", db_path);
        d->port.flock_close(NULL, single);
        fsa_journal_close(d->j);
        return 1;
    }
    FILE *pf = fopen(lpath, "w");
    if (pf != NULL) {
        fprintf(pf, "%ld\n", (long)getpid());
        (void)fclose(pf); /* the pid only names the holder in the message above */
    }

    st = fsa_watch_open(db_path, &d->watch);
    if (st != FSA_OK) {
        fprintf(stderr, "fieldsync: cannot watch %s for new records: %s\n", db_path,
                fsa_status_str(st));
        goto out;
    }

    /* Signals are taken by this thread alone, with sigwait: no handler runs inside SQLite or
     * curl, and the sync thread is told through atomics and the watch's self-pipe. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    (void)signal(SIGPIPE, SIG_IGN); /* cannot fail for SIGPIPE */

    pthread_t metrics_thread, worker;
    bool metrics_running = false;
    if (d->metrics_listen != NULL) {
        if (!start_metrics_server(d, &metrics_thread))
            goto out;
        metrics_running = true;
    }
    fsa_log(&d->port, FSA_LOG_INFO, "running on %s", db_path);
    if (pthread_create(&worker, NULL, sync_loop, d) != 0) {
        fprintf(stderr, "fieldsync: cannot start the sync thread\n");
        atomic_store(&d->stop, 1);
        if (metrics_running)
            pthread_join(metrics_thread, NULL);
        goto out;
    }
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            fsa_log(&d->port, FSA_LOG_INFO, "SIGHUP: reloading the configuration");
            atomic_store(&d->reload, 1);
            fsa_watch_poke(d->watch);
            continue;
        }
        fsa_log(&d->port, FSA_LOG_INFO, "%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    atomic_store(&d->stop, 1);
    pthread_mutex_lock(&d->mu);
    fsa_engine_cancel(d->engine);
    pthread_mutex_unlock(&d->mu);
    fsa_watch_poke(d->watch);
    /* Give the batch in flight 4.5 s to finish; past that it is abandoned: its ops stay in the
     * outbox as in flight and are resent (idempotently) by the next sync. */
    for (int i = 0; i < 45 && !atomic_load(&d->worker_done); i++)
        d->port.sleep(NULL, 100 * FSA_NS_PER_MS);
    if (!atomic_load(&d->worker_done)) {
        fsa_log(&d->port, FSA_LOG_WARN,
                "the request in flight did not finish in time: abandoned, it is resent next time");
        fflush(NULL);
        _exit(0);
    }
    pthread_join(worker, NULL);
    if (metrics_running)
        pthread_join(metrics_thread, NULL);
    refresh_queue(d);
    write_metrics_file(d);
    fsa_log(&d->port, FSA_LOG_INFO, "stopped");
    rc = 0;
out:
    if (d->listen_fd >= 0)
        close(d->listen_fd);
    fsa_engine_free(d->engine);
    fsa_watch_close(d->watch);
    fsa_journal_close(d->j);
    /* The lock file stays: unlinking it would let a second daemon lock a new file while a
     * third still holds the old one. */
    d->port.flock_close(NULL, single);
    return rc;
}
