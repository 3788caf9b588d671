/* fieldsync: the daemon, a thin program over libfieldsync's sync thread: metrics, signals, one
 * daemon per journal, syslog. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fieldsync/fieldsync.h>

#include "agent/run.h"
#include "port/alloc.h"
#include "port/daemon.h"
#include "port/files.h"
#include "port/limits.h"
#include "port/opts.h"
#include "port/port.h"
#include "port/timefmt.h"
#include "storage/journal.h"

/*
 * The sync loop (wake on record, the interval, the persisted backoff, the watchdog) is the
 * library's (fieldsync_start). What is left here is the program: its options, the metrics
 * (built from the status listener, fieldsync_stats and fieldsync_info), the signals (taken by
 * the main thread alone with sigwait, so no handler runs inside SQLite or curl), the lock that
 * keeps one daemon per journal, and the log to stderr and syslog. Every OS call goes through the
 * port: its table (clocks, threads, mutexes, the process id) and port/daemon.h and port/files.h
 * (signals, the instance lock, syslog, the metrics listener, the metrics file).
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
    "Metrics in the Prometheus text format: written to --metrics-file (atomically, at start and\n"
    "then every --metrics-every seconds, default 10; for node_exporter's textfile collector;\n"
    "it replaces nothing but an earlier metrics file)\n"
    "and/or served at http://HOST:PORT/metrics with --metrics-listen (loopback addresses only),\n"
    "refreshed every --metrics-every seconds either way.\n"
    "Logs go to stderr (and syslog with --syslog); --log-level before the command sets the\n"
    "level of both. SIGTERM/SIGINT: stop within 5 s (a batch in flight is finished or\n"
    "abandoned; an abandoned one is resent next time). SIGHUP: reload the configuration from the\n"
    "journal and the secret file.\n";

#define STOP_WAIT_MS 4500 /* the batch in flight gets this long after SIGTERM; then abandoned */

typedef struct daemon {
    const char *db_path;
    int64_t interval_ms, stall_ms, metrics_every_ms;
    const char *metrics_file, *metrics_listen;
    bool use_syslog;
    bool metrics_file_failing; /* the last write of the metrics file failed (the ticker's) */
    fieldsync_t *fs;
    fsa_port_t *port;               /* the posix port: clocks, threads, the process id */
    fsa_syslog_t *syslog;           /* with --syslog: the daemon's own log sink */
    fsa_mutex_t *mu;                /* guards everything below */
    fsa_cond_t *cv;                 /* STOPPED heard, or the daemon stops (the ticker) */
    fieldsync_sync_status_t status; /* the newest status event */
    bool stopped;                   /* STOPPED heard */
    bool quit;                      /* the metrics threads end */
    char text[8192];                /* the rendered metrics */
    fsa_listener_t *listener;
    fsa_thread_t *metrics_thread, *tick_thread;
} daemon_t;

static void lock(daemon_t *d)
{
    d->port->mutex_lock(d->port->ctx, d->mu);
}

static void unlock(daemon_t *d)
{
    d->port->mutex_unlock(d->port->ctx, d->mu);
}

static void broadcast(daemon_t *d)
{
    d->port->cond_broadcast(d->port->ctx, d->cv);
}

/* Waits on d->cv (d->mu held) until pred or the port's monotonic clock reaches deadline. */
static void wait_until(daemon_t *d, const bool *pred, fsa_mono_t deadline)
{
    fsa_status_t st = FSA_OK;
    while (!*pred && st != FSA_ETIMEOUT)
        st = d->port->cond_wait(d->port->ctx, d->cv, d->mu, deadline);
}

/* ---- logging ---- */

/* A line of the daemon's own: to stderr when to_stderr, and (with --syslog) to syslog. */
static void log_line(daemon_t *d, fsa_log_level_t prio, bool to_stderr, const char *fmt, ...)
    FSA_PRINTF(4, 5);
static void log_line(daemon_t *d, fsa_log_level_t prio, bool to_stderr, const char *fmt, ...)
{
    /* --log-level (fieldsync_set_log_level sets the posix port's level) governs stderr and
     * syslog alike. */
    if (prio < d->port->log_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fsa_one_line(msg);
    if (to_stderr) {
        char ts[FSA_TIME_TEXT_MAX];
        if (fsa_time_format_utc(d->port->wall_now(d->port->ctx).ms, FSA_TIME_ISO, ts, sizeof ts) !=
            FSA_OK)
            snprintf(ts, sizeof ts, "?");
        fprintf(stderr, "%s fieldsync[%" PRId64 "]: %s: %s\n", ts,
                d->port->process_id(d->port->ctx), fsa_log_level_str(prio), msg);
    }
    if (d->syslog != NULL)
        fsa_syslog_write(d->syslog, prio, msg);
}

/* To stderr and syslog; and to syslog only, for what the library says on stderr already (it
 * has no log hook). One function: two wrappers cost more than the flag. */
#define logf_(d, prio, ...) log_line((d), (prio), true, __VA_ARGS__)
#define syslog_only(d, prio, ...) log_line((d), (prio), false, __VA_ARGS__)

/* ---- metrics ---- */

/* An integer member of a flat JSON object ("key":123), 0 when absent. */
static int64_t json_int(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = json != NULL ? strstr(json, pat) : NULL;
    return p != NULL ? strtoll(p + strlen(pat), NULL, 10) : 0;
}

/* What every metrics file this daemon writes starts with. */
#define METRICS_FIRST "# HELP fieldsync_"

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
    int64_t now = d->port->wall_now(d->port->ctx).ms;
    double age = oldest > 0 && now > oldest ? (double)(now - oldest) / 1000.0 : 0.0;
    const fieldsync_report_t *t = &s.totals;
    lock(d);
    int stalled = d->status.stalled ? 1 : 0;
    snprintf(d->text, sizeof d->text,
             METRICS_FIRST
             "queue_depth Ops recorded on this device and not yet answered.\n"
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
    unlock(d);
}

/* True when name (absolute) is one of the files of the journal at jn (absolute), which may not
 * exist yet: the storage's (fsa_journal_file_suffixes) and the daemon's lock. */
static bool journal_owns(const char *jn, const char *name)
{
    size_t n = strlen(jn);
    if (strncmp(name, jn, n) != 0)
        return false;
    for (size_t i = 0; i < FSA_JOURNAL_FILES; i++)
        if (strcmp(name + n, fsa_journal_file_suffixes[i]) == 0)
            return true;
    return strcmp(name + n, ".daemon") == 0;
}

/* The metrics file replaces what is at its path, so that path may hold only nothing, an empty file
 * or an earlier metrics file: a mistyped path (the journal, its secret, a configuration) must not
 * be replaced by metrics, losing what it held. Nor may it name one of the journal's own files (db,
 * when known), which may not exist yet (its WAL, made at the open; the lock manager's table).
 * FSA_OK, or why not (err: the path and the reason). */
static fsa_status_t metrics_target_ok(const char *path, const char *db, char *err, size_t errlen)
{
    char *m = NULL, *jn = NULL;
    bool own = false;
    if (db != NULL && fsa_file_absolute_name(path, &m, NULL, 0) == FSA_OK &&
        fsa_file_absolute_name(db, &jn, NULL, 0) == FSA_OK)
        own = journal_owns(jn, m);
    fsa_free(m);
    fsa_free(jn);
    if (own) {
        snprintf(err, errlen, "%s is one of the journal's own files: give another path", path);
        return FSA_EINVAL;
    }
    char *old = NULL;
    size_t len = 0;
    /* Read as any file is (it may be a secret: wiped after), up to the largest metrics file. */
    fsa_status_t st =
        fsa_file_read(path, sizeof((daemon_t *)NULL)->text, 0, &old, &len, err, errlen);
    if (st == FSA_ENOTFOUND)
        return FSA_OK;
    if ((st == FSA_OK && len > 0 && strncmp(old, METRICS_FIRST, strlen(METRICS_FIRST)) != 0) ||
        st == FSA_ETOOLARGE) {
        snprintf(err, errlen,
                 "%s exists and is not a fieldsync metrics file: it is not replaced (give "
                 "another path, or remove it)",
                 path);
        st = FSA_EINVAL;
    }
    fsa_file_wipe_free(old, len);
    return st;
}

/* Writes the metrics file atomically: a reader never sees half a file. FSA_OK (also without
 * --metrics-file), else the error (err: the path and the reason). */
static fsa_status_t write_metrics_file(daemon_t *d, char *err, size_t errlen)
{
    if (d->metrics_file == NULL)
        return FSA_OK;
    char copy[sizeof d->text];
    lock(d);
    memcpy(copy, d->text, sizeof copy);
    unlock(d);
    return fsa_file_write_atomic(d->metrics_file, copy, strlen(copy), err, errlen);
}

/* The periodic write: a failure is said once, when it begins, and its end once too. */
static void rewrite_metrics_file(daemon_t *d)
{
    char err[FSA_LIMIT_PATH_BYTES + 160];
    if (write_metrics_file(d, err, sizeof err) != FSA_OK) {
        if (!d->metrics_file_failing)
            logf_(d, FSA_LOG_WARN, "cannot write the metrics file: %s", err);
        d->metrics_file_failing = true;
    } else if (d->metrics_file_failing) {
        logf_(d, FSA_LOG_INFO, "the metrics file %s is written again", d->metrics_file);
        d->metrics_file_failing = false;
    }
}

static bool quitting(daemon_t *d)
{
    lock(d);
    bool q = d->quit;
    unlock(d);
    return q;
}

/* Serves GET /metrics on the loopback listener until quit; one connection at a time. */
static void *metrics_server(void *arg)
{
    daemon_t *d = arg;
    while (!quitting(d)) {
        fsa_conn_t *c = NULL;
        if (fsa_listener_accept(d->listener, 200, &c) != FSA_OK)
            continue;
        char req[2048];
        /* The request line and headers, bounded in size and in time (1 s). */
        (void)fsa_conn_read_head(c, req, sizeof req, 1000);
        char head[256];
        const char *body, *status = "200 OK", *type = "; version=0.0.4";
        char copy[sizeof d->text];
        if (strncmp(req, "GET /metrics ", 13) == 0 || strncmp(req, "GET / ", 6) == 0) {
            lock(d);
            memcpy(copy, d->text, sizeof copy);
            unlock(d);
            body = copy;
        } else {
            body = "not found: try /metrics\n";
            status = "404 Not Found";
            type = "";
        }
        snprintf(head, sizeof head,
                 "HTTP/1.0 %s\r\nContent-Type: text/plain%s\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n",
                 status, type, strlen(body));
        fsa_status_t ws = fsa_conn_write(c, head, strlen(head));
        if (ws == FSA_OK)
            ws = fsa_conn_write(c, body, strlen(body));
        (void)ws; /* a client that went away gets nothing more: close, serve the next */
        fsa_conn_close(c);
    }
    return NULL;
}

static bool start_metrics_server(daemon_t *d)
{
    char err[256];
    int port = 0;
    fsa_status_t st = fsa_listener_open(d->metrics_listen, &d->listener, &port, err, sizeof err);
    if (st != FSA_OK) {
        logf_(d, FSA_LOG_ERROR, "--metrics-listen %s", err);
        return false;
    }
    logf_(d, FSA_LOG_INFO, "metrics at http://%s/metrics (port %d)", d->metrics_listen, port);
    /* One line on stdout that tools (and tests) can read the port from. */
    printf("metrics on port %d\n", port);
    fflush(stdout);
    return d->port->thread_create(d->port->ctx, &d->metrics_thread, metrics_server, d) == FSA_OK;
}

/* Refreshes the metrics (for the endpoint and the file) on their own period, without syncing:
 * between status events (a request that hangs, a backoff) the ages still move. */
static void *ticker(void *arg)
{
    daemon_t *d = arg;
    lock(d);
    while (!d->quit) {
        fsa_mono_t dl =
            fsa_mono_add_ns(d->port->mono_now(d->port->ctx), d->metrics_every_ms * FSA_NS_PER_MS);
        wait_until(d, &d->quit, dl);
        if (d->quit)
            break;
        unlock(d);
        render(d);
        rewrite_metrics_file(d);
        lock(d);
    }
    unlock(d);
    return NULL;
}

/* ---- the status listener (on the library's sync thread) ---- */

static void on_status(void *ctx, const fieldsync_sync_status_t *s)
{
    daemon_t *d = ctx;
    lock(d);
    fieldsync_sync_status_t was = d->status;
    d->status = *s;
    if (s->state == FIELDSYNC_STATE_STOPPED) {
        d->stopped = true;
        broadcast(d);
    }
    unlock(d);
    render(d);
    /* What the library logs on stderr, syslog hears from here. */
    if (s->stalled && !was.stalled)
        syslog_only(d, FSA_LOG_WARN,
                    "watchdog: the queue stopped moving: %" PRId64
                    " ops pending, the oldest for %" PRId64 " s, although the server answers",
                    s->queue_depth, s->oldest_pending_age_ms / 1000);
    else if (!s->stalled && was.stalled)
        syslog_only(d, FSA_LOG_INFO, "watchdog: the queue moves again");
    if (s->state != was.state &&
        (s->state == FIELDSYNC_STATE_ATTENTION || s->state == FIELDSYNC_STATE_OFFLINE))
        syslog_only(d, s->state == FIELDSYNC_STATE_ATTENTION ? FSA_LOG_ERROR : FSA_LOG_WARN,
                    "%s: %s", fieldsync_state_str(s->state),
                    s->last_error_msg[0] ? s->last_error_msg : s->reason);
}

/* ---- single instance, signals, life cycle ---- */

/* An error before or while starting: "fieldsync: WHAT DETAIL" on stderr, one line whatever the
 * values in it hold (an option's value, a path): control characters and characters that reorder
 * text become '?' (fsa_one_line). */
static void say(const char *what, const char *detail)
{
    char line[FSA_LIMIT_PATH_BYTES + FSA_LIMIT_LOG_LINE];
    snprintf(line, sizeof line, "%s%s", what, detail);
    fsa_one_line(line);
    fprintf(stderr, "fieldsync: %s\n", line);
}

static int parse_seconds(const char *opt, const char *v, int64_t min_s, int64_t max_s,
                         int64_t *out_ms)
{
    /* A plain decimal number, as every number of the CLI (fsa_opts_real): not hex ("0x3c"), not
     * with spaces, not inf. */
    double s = 0; /* its own message below: no err wanted */
    if (fsa_opts_real(opt, v, (double)min_s, (double)max_s, NULL, &s, NULL, 0) != FSA_OK) {
        char detail[FSA_LIMIT_LOG_LINE];
        snprintf(detail, sizeof detail,
                 " %s: expected seconds between %" PRId64 " and %" PRId64 " (a plain number)", v,
                 min_s, max_s);
        say(opt, detail);
        return -1;
    }
    *out_ms = (int64_t)(s * 1000.0);
    return 0;
}

/* The options into d (defaults first). -1 to go on, else the exit status (0 after --help). */
static int parse_run_options(daemon_t *d, int argc, char **argv)
{
    d->interval_ms = 60 * 1000;
    d->stall_ms = 600 * 1000;
    d->metrics_every_ms = 10 * 1000;
    /* Options may be given again (the last stands), as they always could. By their index: */
#define RUN_OPTS(X)                                                                                \
    X(O_INTERVAL, "=interval")                                                                     \
    X(O_STALL, "=stall-after")                                                                     \
    X(O_EVERY, "=metrics-every")                                                                   \
    X(O_FILE, "=metrics-file") X(O_LISTEN, "=metrics-listen") X(O_SYSLOG, "-syslog")
    enum { RUN_OPTS(FSA_OPT_INDEX) O_COUNT };
    fsa_opt_t o[O_COUNT];
    const size_t no = fsa_opts_init(o, O_COUNT, RUN_OPTS(FSA_OPT_SPEC), true);
    fsa_opts_result_t r;
    char err[FSA_LIMIT_PATH_BYTES + 160];
    if (fsa_opts_parse(argc, argv, o, no, NULL, 0, 0, &r, err, sizeof err) != FSA_OK) {
        char line[sizeof err + 48];
        snprintf(line, sizeof line, "%s (see 'fieldsync run --help')", err);
        say("run: ", line);
        return 2;
    }
    if (r.help) {
        fputs(RUN_HELP, stdout);
        return 0;
    }
    const char *v;
    if ((v = o[O_INTERVAL].value) != NULL &&
        parse_seconds("--interval", v, 1, 86400, &d->interval_ms) != 0)
        return 2;
    if ((v = o[O_STALL].value) != NULL &&
        parse_seconds("--stall-after", v, 1, 30 * 86400, &d->stall_ms) != 0)
        return 2;
    if ((v = o[O_EVERY].value) != NULL &&
        parse_seconds("--metrics-every", v, 1, 3600, &d->metrics_every_ms) != 0)
        return 2;
    d->metrics_file = o[O_FILE].value;
    if (d->metrics_file != NULL &&
        metrics_target_ok(d->metrics_file, d->db_path, err, sizeof err) != FSA_OK) {
        say("--metrics-file ", err);
        return 2;
    }
    d->metrics_listen = o[O_LISTEN].value;
    if (d->metrics_listen != NULL &&
        fsa_listener_check(d->metrics_listen, err, sizeof err) != FSA_OK) {
        say("--metrics-listen ", err);
        return 2;
    }
    d->use_syslog = o[O_SYSLOG].value != NULL;
    if (d->db_path == NULL) {
        say("no journal: give --db FILE or set FIELDSYNC_DB", "");
        return 2;
    }
    return -1;
}

/* Opens the library on the journal and takes the one-daemon lock, "<journal>.daemon". The lock,
 * or NULL (said on stderr; nothing left open). */
static fsa_pidlock_t *open_journal(daemon_t *d)
{
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = d->db_path;
    cfg.sync_interval_ms = d->interval_ms;
    cfg.stall_after_ms = d->stall_ms;
    cfg.label = "fieldsync-run";
    if (fieldsync_open(&cfg, &d->fs) != FIELDSYNC_OK) {
        say("", fieldsync_errmsg(d->fs));
        (void)fieldsync_close(d->fs);
        return NULL;
    }
    char lpath[FSA_LIMIT_PATH_BYTES + 16], holder[32], err[FSA_LIMIT_PATH_BYTES + 160];
    snprintf(lpath, sizeof lpath, "%s.daemon", d->db_path);
    fsa_pidlock_t *single = NULL;
    fsa_status_t st = fsa_pidlock_take(lpath, d->port->process_id(d->port->ctx), &single, holder,
                                       sizeof holder, err, sizeof err);
    if (st != FSA_OK) {
        if (st == FSA_EBUSY) {
            char what[96];
            snprintf(what, sizeof what, "another 'fieldsync run'%s%s%s is already syncing ",
                     holder[0] ? " (pid " : "", holder, holder[0] ? ")" : "");
            say(what, d->db_path);
        } else
            say("cannot take the daemon lock ", err);
        (void)fieldsync_close(d->fs);
        return NULL;
    }
    return single;
}

/* The status listener, the metrics threads and the sync thread. False when one failed (said;
 * what started is recorded in d and stopped by the caller). */
static bool start_all(daemon_t *d)
{
    render(d);
    /* The file at once (not after a period): a stale one from an earlier run goes, and a path
     * that cannot be written stops the start rather than warn for ever. */
    char err[FSA_LIMIT_PATH_BYTES + 160];
    if (write_metrics_file(d, err, sizeof err) != FSA_OK) {
        say("--metrics-file ", err);
        return false;
    }
    if (fieldsync_add_status_listener(d->fs, on_status, d, NULL) != FIELDSYNC_OK) {
        say("", fieldsync_errmsg(d->fs));
        return false;
    }
    if (d->metrics_listen != NULL && !start_metrics_server(d))
        return false;
    if ((d->metrics_file != NULL || d->metrics_listen != NULL) &&
        d->port->thread_create(d->port->ctx, &d->tick_thread, ticker, d) != FSA_OK) {
        say("cannot start the metrics thread", "");
        return false;
    }
    if (fieldsync_start(d->fs, 0) != FIELDSYNC_OK) {
        say("", fieldsync_errmsg(d->fs));
        return false;
    }
    return true;
}

/* Waits for SIGTERM or SIGINT (blocked by fsa_signals_block); SIGHUP reloads the
 * configuration. */
static void wait_for_stop(daemon_t *d)
{
    for (;;) {
        fsa_signal_t sig = fsa_signal_wait();
        if (sig == FSA_SIGNAL_RELOAD) {
            logf_(d, FSA_LOG_INFO, "SIGHUP: reloading the configuration");
            if (fieldsync_reload(d->fs) == FIELDSYNC_OK)
                logf_(d, FSA_LOG_INFO, "the configuration is reloaded");
            else /* the library said why on stderr */
                syslog_only(d, FSA_LOG_WARN, "%s", fieldsync_errmsg(d->fs));
            continue;
        }
        logf_(d, FSA_LOG_INFO, "%s: stopping", sig == FSA_SIGNAL_TERM ? "SIGTERM" : "SIGINT");
        return;
    }
}

/* Stops the sync thread. The batch in flight gets 4.5 s to finish; past that it is abandoned
 * and the process exits at once: its ops stay in the outbox as in flight and are resent
 * (idempotently) by the next sync. */
static void stop_in_time(daemon_t *d)
{
    (void)fieldsync_stop(d->fs);
    fsa_mono_t dl =
        fsa_mono_add_ns(d->port->mono_now(d->port->ctx), (int64_t)STOP_WAIT_MS * FSA_NS_PER_MS);
    lock(d);
    wait_until(d, &d->stopped, dl);
    bool stopped = d->stopped;
    unlock(d);
    if (!stopped) {
        logf_(d, FSA_LOG_WARN,
              "the request in flight did not finish in time: abandoned, it is resent next time");
        fflush(NULL);
        fsa_process_exit_now(0);
    }
}

/* Ends the metrics threads, writes the last metrics after a clean stop, closes the library. */
static void finish(daemon_t *d, bool clean)
{
    lock(d);
    d->quit = true;
    broadcast(d);
    unlock(d);
    if (d->metrics_thread != NULL)
        (void)d->port->thread_join(d->port->ctx, d->metrics_thread, NULL);
    if (d->tick_thread != NULL)
        (void)d->port->thread_join(d->port->ctx, d->tick_thread, NULL);
    d->metrics_thread = d->tick_thread = NULL;
    if (clean) {
        render(d);
        rewrite_metrics_file(d);
    }
    fsa_listener_close(d->listener);
    d->listener = NULL;
    (void)fieldsync_close(d->fs);
    if (clean)
        logf_(d, FSA_LOG_INFO, "stopped");
}

int fsa_agent_run(const char *db_path, int argc, char **argv)
{
    static daemon_t dm;
    daemon_t *d = &dm;
    memset(d, 0, sizeof *d);
    d->db_path = db_path;
    d->port = fsa_port_posix();
    int rc = parse_run_options(d, argc, argv);
    if (rc >= 0)
        return rc;
    if (d->use_syslog && fsa_syslog_open("fieldsync", false, &d->syslog) != FSA_OK) {
        say("cannot open syslog", "");
        return 1;
    }
    /* Signals are taken by this thread alone (fsa_signal_wait); every thread made from here on
     * (the library's too) inherits the mask. */
    if (fsa_signals_block() != FSA_OK || d->port->mutex_new(d->port->ctx, &d->mu) != FSA_OK ||
        d->port->cond_new(d->port->ctx, &d->cv) != FSA_OK) {
        say("cannot set up the daemon (signals, a mutex)", "");
        d->port->mutex_free(d->port->ctx, d->mu);
        fsa_syslog_close(d->syslog);
        return 1;
    }
    fsa_pidlock_t *single = open_journal(d);
    rc = 1;
    if (single != NULL) {
        if (start_all(d)) {
            logf_(d, FSA_LOG_INFO, "running on %s", db_path);
            wait_for_stop(d);
            stop_in_time(d);
            rc = 0;
        }
        finish(d, rc == 0);
        fsa_pidlock_release(single);
    }
    d->port->cond_free(d->port->ctx, d->cv);
    d->port->mutex_free(d->port->ctx, d->mu);
    fsa_syslog_close(d->syslog);
    d->syslog = NULL;
    return rc;
}
