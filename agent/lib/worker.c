/* libfieldsync: the sync thread (start, stop, sync_now, reload), sync_once, the watchdog. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "agent/lib/due.h"
#include "agent/lib/internal.h"
#include "port/alloc.h"
#include "port/limits.h"

/*
 * One sync thread per started handle. It syncs at start, when a new record appears in the
 * journal (by any process: an inotify watch on the journal, read by a second, small thread),
 * every sync_interval_ms, and at the persisted next attempt while backing off (new records do
 * not cut a backoff short; fieldsync_sync_now does). After each cycle and on each change of the
 * journal it pumps the change log to the listeners and sends a status event when the status
 * changed. Waits are on the port's condition variable and clock, so a sim port's virtual time
 * drives it too.
 *
 * Life of a start: NONE -> RUNNING (fieldsync_start) -> ENDED (the thread, just before its
 * STOPPED event) -> joined by the next start, by close, or by free. A stop only raises a flag,
 * cancels the engine's cycle and wakes the thread, so it may be called from a listener.
 */

#define WATCH_RETRY_MS FSL_DUE_WATCH_RETRY_MS

typedef enum phase { PH_NONE = 0, PH_RUNNING = 1, PH_ENDED = 2 } phase_t;

/* A fieldsync_sync_once call, on its caller's stack, listed while it runs: fieldsync_stop cancels
 * its engine, and fieldsync_start is refused while one is listed. */
typedef struct fsl_once {
    fsa_engine_t *engine;
    bool cancelled;
    struct fsl_once *next;
} fsl_once_t;

struct fsl_worker {
    fsa_mutex_t *mu; /* everything below */
    fsa_cond_t *cv;  /* a request or a journal change for the sync thread */
    phase_t phase;
    fsa_thread_t *thread; /* the sync thread of the current or last start, until joined */
    fsl_once_t *onces;    /* the fieldsync_sync_once calls running */
    uint32_t flags;       /* of the current start */
    bool stop, now, reload, changed, watch_stop;
    /* The configuration of the last fieldsync_reload (NULL: none yet, fs->cfg is in effect):
     * the stored one re-read, with the open's overrides over it. Replaced whole, never written
     * in place, and read under mu (fsl__config_now copies it). */
    fsl_config_t *live;
    fsa_engine_t *engine; /* the engine of the cycle running (to cancel it) */
    /* The live status the sync thread shows (fieldsync_status overlays it while started). */
    fieldsync_state_t state;
    char reason[128];
    fsa_status_t last_error;
    char last_error_msg[320];
    bool stalled;
    fieldsync_sync_status_t shown; /* the last status event sent */
    bool shown_valid;
    /* What was last stored with fsl__sync_note, to write it only when it changes. */
    fsa_status_t noted;
    char noted_msg[320];
    bool noted_valid;
    fieldsync_stats_t stats;
};

/* ---- helpers ---- */

static void lock(fieldsync_t *fs)
{
    fs->port.mutex_lock(fs->port.ctx, fs->worker->mu);
}

static void unlock(fieldsync_t *fs)
{
    fs->port.mutex_unlock(fs->port.ctx, fs->worker->mu);
}

/* The sync interval and the stall time in effect, their defaults applied. Not with mu held. */
static void times_now(fieldsync_t *fs, int64_t *interval, int64_t *stall)
{
    int64_t i = fs->cfg.sync_interval_ms, s = fs->cfg.stall_after_ms;
    fsl_worker_t *w = __atomic_load_n(&fs->worker, __ATOMIC_ACQUIRE);
    if (w != NULL) {
        lock(fs);
        if (w->live != NULL) {
            i = w->live->sync_interval_ms;
            s = w->live->stall_after_ms;
        }
        unlock(fs);
    }
    *interval = i > 0 ? i : FSA_LIMIT_SYNC_INTERVAL_MS;
    *stall = s > 0 ? s : FSA_LIMIT_STALL_AFTER_MS;
}

static int64_t interval_ms(fieldsync_t *fs)
{
    int64_t interval = 0, stall = 0;
    times_now(fs, &interval, &stall);
    return interval;
}

int64_t fsl__stall_after_ms(fieldsync_t *fs)
{
    int64_t interval = 0, stall = 0;
    times_now(fs, &interval, &stall);
    return stall;
}

fsa_status_t fsl__config_now(fieldsync_t *fs, fsl_config_t *out)
{
    fsl_worker_t *w = __atomic_load_n(&fs->worker, __ATOMIC_ACQUIRE);
    if (w == NULL)
        return fsl__config_dup(&fs->cfg, out);
    lock(fs);
    fsa_status_t st = fsl__config_dup(w->live != NULL ? w->live : &fs->cfg, out);
    unlock(fs);
    return st;
}

static void wake(fieldsync_t *fs)
{
    fs->port.cond_broadcast(fs->port.ctx, fs->worker->cv);
}

/* Makes fs->worker on first use. Two threads may race here: one wins, the other frees its own. */
static fsa_status_t worker_get(fieldsync_t *fs, fsl_worker_t **out)
{
    fsl_worker_t *w = __atomic_load_n(&fs->worker, __ATOMIC_ACQUIRE);
    if (w != NULL) {
        *out = w;
        return FSA_OK;
    }
    w = fsa_calloc(1, sizeof *w);
    if (w == NULL)
        return FSA_ENOMEM;
    w->stats.size = (uint32_t)sizeof w->stats;
    fsa_status_t st = fs->port.mutex_new(fs->port.ctx, &w->mu);
    if (st == FSA_OK)
        st = fs->port.cond_new(fs->port.ctx, &w->cv);
    fsl_worker_t *expected = NULL;
    if (st == FSA_OK && __atomic_compare_exchange_n(&fs->worker, &expected, w, false,
                                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        *out = w;
        return FSA_OK;
    }
    fs->port.cond_free(fs->port.ctx, w->cv);
    fs->port.mutex_free(fs->port.ctx, w->mu);
    fsa_free(w);
    if (st != FSA_OK)
        return st;
    *out = expected;
    return FSA_OK;
}

/* Copies src into dst (cap bytes), cut if it does not fit: a reason is a short phrase. */
/* Copies src (NULL: "") into dst of cap bytes, cut to fit, as one line that reads as it is
 * (fsa_one_line): a status's reason and message may quote the server. */
static void copy_cut(char *dst, size_t cap, const char *src)
{
    size_t n = src != NULL ? strlen(src) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n > 0)
        memcpy(dst, src, n);
    dst[n] = '\0';
    fsa_one_line(dst);
}

static void set_live(fsl_worker_t *w, fieldsync_state_t state, const char *reason)
{
    w->state = state;
    copy_cut(w->reason, sizeof w->reason, reason);
}

static void set_error(fsl_worker_t *w, fsa_status_t st, const char *msg)
{
    w->last_error = st;
    copy_cut(w->last_error_msg, sizeof w->last_error_msg, st != FSA_OK ? msg : NULL);
}

/* The live part of the status, over what the journal shows. Called with mu held. */
static void overlay_locked(const fsl_worker_t *w, fieldsync_sync_status_t *s)
{
    s->state = w->state;
    copy_cut(s->reason, sizeof s->reason, w->reason);
    s->last_error = fsl__status(w->last_error);
    copy_cut(s->last_error_msg, sizeof s->last_error_msg, w->last_error_msg);
    s->stalled = w->stalled;
}

void fsl__worker_overlay(fieldsync_t *fs, fieldsync_sync_status_t *s)
{
    fsl_worker_t *w = __atomic_load_n(&fs->worker, __ATOMIC_ACQUIRE);
    if (w == NULL)
        return;
    lock(fs);
    if (w->phase == PH_RUNNING && (w->flags & FIELDSYNC_START_LISTEN_ONLY) == 0)
        overlay_locked(w, s);
    unlock(fs);
}

/* Two statuses that an app would tell apart. The age of the oldest op grows by itself and is
 * left out: it is sent with the next status that differs otherwise. */
static bool status_same(const fieldsync_sync_status_t *a, const fieldsync_sync_status_t *b)
{
    return a->state == b->state && strcmp(a->reason, b->reason) == 0 &&
           a->queue_depth == b->queue_depth && a->open_conflicts == b->open_conflicts &&
           a->last_sync_ms == b->last_sync_ms && a->next_attempt_ms == b->next_attempt_ms &&
           a->clock_offset_ms == b->clock_offset_ms && a->last_error == b->last_error &&
           strcmp(a->last_error_msg, b->last_error_msg) == 0 && a->stalled == b->stalled;
}

/* Sends s as a status event unless it equals the last one sent (or always). */
static void show(fieldsync_t *fs, const fieldsync_sync_status_t *s, bool always)
{
    fsl_worker_t *w = fs->worker;
    lock(fs);
    bool same = w->shown_valid && status_same(&w->shown, s);
    if (!same || always) {
        w->shown = *s;
        w->shown_valid = true;
    }
    unlock(fs);
    if (!same || always)
        fsl__events_status(fs, s);
}

/* The status now: the journal's figures with the live state over them. */
static void status_now(fieldsync_t *fs, fieldsync_sync_status_t *s, bool listen_only)
{
    memset(s, 0, sizeof *s);
    s->size = (uint32_t)sizeof *s;
    fsa_status_t st = fsl__status_read(fs, s);
    fsl_worker_t *w = fs->worker;
    lock(fs);
    if (st != FSA_OK && w->shown_valid) {
        /* The journal could not be read now: keep the figures last shown. */
        fieldsync_sync_status_t keep = w->shown;
        *s = keep;
    }
    if (!listen_only)
        overlay_locked(w, s);
    unlock(fs);
    /* A refusal the syncing process stored stays ATTENTION, as fieldsync_status says: a person
     * must fix the configuration, whichever process syncs. */
    if (listen_only && s->state != FIELDSYNC_STATE_ATTENTION) {
        int64_t now = fs->port.wall_now(fs->port.ctx).ms;
        s->state = s->next_attempt_ms > now ? FIELDSYNC_STATE_OFFLINE : FIELDSYNC_STATE_IDLE;
        snprintf(s->reason, sizeof s->reason, "listening: another process syncs this journal");
    }
}

static void show_now(fieldsync_t *fs, bool listen_only)
{
    fieldsync_sync_status_t s;
    status_now(fs, &s, listen_only);
    show(fs, &s, false);
}

/* The engine's progress during a cycle ("pushing 100 ops", "server said 503; retrying"). */
static void on_engine_status(void *arg, const fsa_engine_status_t *es)
{
    fieldsync_t *fs = arg;
    fsl_worker_t *w = fs->worker;
    fieldsync_state_t state;
    switch (es->state) {
    case FSA_ENGINE_OFFLINE: state = FIELDSYNC_STATE_OFFLINE; break;
    case FSA_ENGINE_STOPPED: state = FIELDSYNC_STATE_ATTENTION; break;
    case FSA_ENGINE_IDLE: state = FIELDSYNC_STATE_IDLE; break;
    default: state = FIELDSYNC_STATE_SYNCING; break;
    }
    bool ended = es->state == FSA_ENGINE_OFFLINE || es->state == FSA_ENGINE_STOPPED ||
                 es->state == FSA_ENGINE_IDLE;
    lock(fs);
    if (ended && w->phase == PH_RUNNING && es->state == FSA_ENGINE_IDLE &&
        es->last_error != FSA_OK) {
        /* The engine ended the cycle at a cancel (fieldsync_stop): not a failure to show. A
         * failure that ended it before the stop came is shown as any other. */
        unlock(fs);
        return;
    }
    set_live(w, state, es->reason);
    if (es->state == FSA_ENGINE_OFFLINE || es->state == FSA_ENGINE_STOPPED)
        set_error(w, es->last_error, es->last_error_msg);
    if (ended) {
        /* The cycle is over and its outcome persisted (the next attempt): show the journal's. */
        unlock(fs);
        show_now(fs, false);
        return;
    }
    fieldsync_sync_status_t s = w->shown_valid ? w->shown : (fieldsync_sync_status_t){0};
    s.size = (uint32_t)sizeof s;
    if (es->queue_depth >= 0)
        s.queue_depth = es->queue_depth;
    overlay_locked(w, &s);
    unlock(fs);
    show(fs, &s, false);
    /* Between the steps of a long cycle (a backlog drained batch by batch), the listeners hear
     * of the changes so far: the last batch's results, the app's new records. */
    fsl__events_pump(fs);
}

/* Counts a cycle in the handle's figures. */
static void account(fieldsync_t *fs, fsa_status_t st, const fsa_sync_report_t *r, bool cancelled)
{
    fsl_worker_t *w = fs->worker;
    lock(fs);
    fieldsync_stats_t *m = &w->stats;
    if (st == FSA_OK)
        m->cycles_ok++;
    else if (st == FSA_EBUSY && strstr(r->error, "backing off") == NULL)
        m->cycles_busy++;
    else if (st == FSA_ENET || st == FSA_ETIMEOUT || st == FSA_ETLS || st == FSA_EBUSY || cancelled)
        m->cycles_offline++;
    else
        m->cycles_error++;
    m->batches += r->batches;
    fieldsync_report_t *t = &m->totals;
    t->pushed += r->pushed;
    t->applied += r->applied;
    t->duplicate += r->duplicate;
    t->conflict += r->conflict;
    t->rejected += r->rejected;
    t->rebased += r->rebased;
    t->converged += r->converged;
    t->server_wins += r->server_wins;
    t->parked += r->parked;
    t->pulled += r->pulled;
    t->retries += r->retries;
    t->bytes_sent += r->bytes_sent;
    t->bytes_received += r->bytes_received;
    t->next_attempt_ms = r->next_attempt_ms;
    t->last_http_status = r->last_http_status;
    unlock(fs);
}

/* Stores the cycle's error in the journal (fieldsync_status of every process reads it), only
 * when it changed: a quiet cycle writes nothing more. */
static void note(fieldsync_t *fs, fsa_status_t st, char *msg)
{
    fsl_worker_t *w = fs->worker;
    /* msg (at most 319 bytes: a report's error) made the line the status shows and noted_msg
     * keeps (copy_cut), in place: compared raw, one that quoted a bidi character never matched,
     * and was written again every cycle. */
    if (msg != NULL)
        fsa_one_line(msg);
    const char *m = st == FSA_OK || msg == NULL ? "" : msg;
    lock(fs);
    bool same = w->noted_valid && w->noted == st && strcmp(w->noted_msg, m) == 0;
    unlock(fs);
    if (same)
        return;
    fsa_status_t ns = fsl__sync_note(fs, st, m);
    if (ns != FSA_OK) {
        fsa_log(&fs->port, FSA_LOG_WARN, "sync: cannot store the last error: %s",
                fsa_status_str(ns));
        return;
    }
    lock(fs);
    w->noted = st;
    copy_cut(w->noted_msg, sizeof w->noted_msg, m);
    w->noted_valid = true;
    unlock(fs);
}

/* The live state after a cycle that returned st. */
static void settle(fieldsync_t *fs, fsa_status_t st, const fsa_sync_report_t *r)
{
    fsl_worker_t *w = fs->worker;
    lock(fs);
    switch (st) {
    case FSA_OK:
        set_live(w, FIELDSYNC_STATE_IDLE, "synced");
        set_error(w, FSA_OK, NULL);
        break;
    case FSA_EBUSY:
        if (strstr(r->error, "backing off") != NULL)
            set_live(w, FIELDSYNC_STATE_OFFLINE, r->error);
        /* else another process syncs: not an error, the state stays as it is */
        break;
    case FSA_EAUTH:
        /* PROTOCOL.md section 7, amendment 4: a refusal does not stop a device for good; it is
         * retried on a long backoff, and a person should look at the configuration. */
        set_live(w, FIELDSYNC_STATE_ATTENTION, "the server refused this device's credentials");
        set_error(w, st, r->error);
        break;
    default:
        set_live(w, FIELDSYNC_STATE_OFFLINE, r->error[0] ? r->error : fsa_status_str(st));
        set_error(w, st, r->error[0] ? r->error : fsa_status_str(st));
        break;
    }
    unlock(fs);
}

static void report_copy(const fsa_sync_report_t *r, fieldsync_report_t *out)
{
    out->pushed = r->pushed;
    out->applied = r->applied;
    out->duplicate = r->duplicate;
    out->conflict = r->conflict;
    out->rejected = r->rejected;
    out->rebased = r->rebased;
    out->converged = r->converged;
    out->server_wins = r->server_wins;
    out->parked = r->parked;
    out->pulled = r->pulled;
    out->retries = r->retries;
    out->bytes_sent = r->bytes_sent;
    out->bytes_received = r->bytes_received;
    out->next_attempt_ms = r->next_attempt_ms;
    out->last_http_status = r->last_http_status;
}

/* ---- engines ---- */

/*
 * Builds an engine for a cycle. Until the first fieldsync_reload, from the handle's
 * configuration (fsl__engine_new); after it, from the configuration the last reload read (the
 * stored one, a person having run init again or rotated the key, with the open's overrides over
 * it): a shell of the handle carries a copy of it, since fsl__engine_new reads a handle. The
 * engine keeps a pointer to the shell's port, so the shell lives as long as the engine (*shell,
 * freed by engine_unmake). The handle's own configuration is never written here: other threads
 * read it.
 */
static fsa_status_t engine_make(fieldsync_t *fs, bool ignore_backoff, fsa_engine_t **out,
                                fieldsync_t **shell, char *err, size_t errlen)
{
    *out = NULL;
    *shell = NULL;
    fsl_worker_t *w = fs->worker;
    lock(fs);
    bool reloaded = w->live != NULL;
    unlock(fs);
    if (!reloaded)
        return fsl__engine_new(fs, ignore_backoff, out, err, errlen);
    fieldsync_t *b = fsa_calloc(1, sizeof *b);
    if (b == NULL)
        return FSA_ENOMEM;
    /* What an engine and its tick read of a handle (the port, the journal, the events), set at
     * open and never written after; nothing of it is freed through b. Not a copy of the whole
     * handle: other threads write some of its members meanwhile (the lock manager, at a first
     * lock's acquire). */
    b->port = fs->port;
    b->j = fs->j;
    b->events = fs->events;
    b->id = fs->id;
    /* w->live is replaced by a later reload, never cleared: the copy is of the newest. */
    lock(fs);
    fsa_status_t st = fsl__config_dup(w->live, &b->cfg);
    unlock(fs);
    if (st != FSA_OK)
        snprintf(err, errlen, "out of memory copying the configuration");
    if (st == FSA_OK)
        st = fsl__engine_new(b, ignore_backoff, out, err, errlen);
    if (st != FSA_OK) {
        fsl__config_clear(&b->cfg);
        fsa_free(b);
        return st;
    }
    *shell = b;
    return FSA_OK;
}

static void engine_unmake(fsa_engine_t *e, fieldsync_t *shell)
{
    fsa_engine_free(e);
    if (shell != NULL) {
        fsl__config_clear(&shell->cfg);
        fsa_free(shell);
    }
}

/* ---- the watchdog ---- */

/* Pending ops older than stall_after_ms while the server answers: the queue is stuck (a
 * rejected batch resent forever, a server that answers 5xx to us alone). */
static void watchdog(fieldsync_t *fs, fsa_status_t st, const fsa_sync_report_t *r)
{
    fsl_worker_t *w = fs->worker;
    if (st == FSA_EBUSY)
        return; /* a cycle that did not try tells nothing new */
    fieldsync_sync_status_t s;
    memset(&s, 0, sizeof s);
    s.size = (uint32_t)sizeof s;
    if (fsl__status_read(fs, &s) != FSA_OK)
        return;
    /* "The network is up": the server answered something in this cycle (even a 5xx). */
    bool answers = st == FSA_OK || r->last_http_status != 0;
    bool pull_stuck = st == FSA_ETOOLARGE;
    bool stalled = fsl__due_stalled(answers, s.queue_depth, s.oldest_pending_age_ms,
                                    fsl__stall_after_ms(fs), pull_stuck);
    lock(fs);
    bool was = w->stalled;
    w->stalled = stalled;
    bool now = w->stalled;
    unlock(fs);
    if (now && !was && pull_stuck)
        fsa_log(&fs->port, FSA_LOG_WARN, "watchdog: %s", r->error);
    else if (now && !was)
        fsa_log(&fs->port, FSA_LOG_WARN,
                "watchdog: the queue stopped moving: %" PRId64
                " ops pending, the oldest for %" PRId64 " s, although the server answers",
                s.queue_depth, s.oldest_pending_age_ms / 1000);
    else if (!now && was)
        fsa_log(&fs->port, FSA_LOG_INFO, "watchdog: the queue moves again");
}

/* ---- the threads ---- */

typedef struct loop {
    fieldsync_t *fs;
    fsa_watch_t *watch;
    fsa_thread_t *watcher;
    bool listen_only;
    bool background; /* made background work (fieldsync_start without FIELDSYNC_START_FOREGROUND) */
    fsa_engine_t *engine;
    fieldsync_t *shell;    /* the engine's configuration after a reload (engine_make) */
    int64_t seen_seq;      /* the outbox's last seq when the last cycle began */
    fsa_mono_t last_cycle; /* when the last cycle ended */
    fsl_due_memo_t memo;   /* what the when-to-sync rule remembers of the last cycle (due.h) */
    bool remake; /* the server refused our credentials, or TLS failed: the next cycle's engine
                    reads the secret file (a person may have fixed it; PROTOCOL.md 7.4) and the
                    TLS files (an engine keeps what it read: a certificate or CA renewed on disk
                    is taken up so) again */
} loop_t;

/* Reads the journal's watch and tells the sync thread that the journal changed. */
static void *watcher_main(void *arg)
{
    loop_t *L = arg;
    fieldsync_t *fs = L->fs;
    fsl_worker_t *w = fs->worker;
    for (;;) {
        fsa_status_t ws = fsa_watch_wait(L->watch, -1);
        lock(fs);
        bool stop = w->watch_stop;
        if (ws == FSA_OK && !stop) {
            w->changed = true;
            wake(fs);
        }
        unlock(fs);
        if (stop)
            break;
        if (ws == FSA_EIO)
            fs->port.sleep(fs->port.ctx, 100 * FSA_NS_PER_MS); /* not a spin if it persists */
    }
    return NULL;
}

static void engine_drop(loop_t *L)
{
    fieldsync_t *fs = L->fs;
    lock(fs);
    fs->worker->engine = NULL;
    unlock(fs);
    engine_unmake(L->engine, L->shell);
    L->engine = NULL;
    L->shell = NULL;
}

/* Makes the engine when there is none. False when it cannot be made (ATTENTION shown). */
static bool engine_ready(loop_t *L)
{
    fieldsync_t *fs = L->fs;
    fsl_worker_t *w = fs->worker;
    if (L->engine != NULL)
        return true;
    char err[320] = "";
    fsa_engine_t *e = NULL;
    /* The backoff is the loop's to honour (fieldsync_sync_now must be able to cut it short). */
    fieldsync_t *shell = NULL;
    fsa_status_t st = engine_make(fs, true, &e, &shell, err, sizeof err);
    if (st != FSA_OK) {
        fsa_log(&fs->port, FSA_LOG_ERROR, "cannot sync: %s", err);
        lock(fs);
        set_live(w, FIELDSYNC_STATE_ATTENTION, "the configuration cannot be used");
        set_error(w, st, err);
        unlock(fs);
        note(fs, st, err);
        return false;
    }
    fsa_engine_on_status(e, on_engine_status, fs);
    L->engine = e;
    L->shell = shell;
    fsa_log(&fs->port, FSA_LOG_INFO, "configuration loaded");
    return true;
}

/* One cycle with the thread's engine. */
static void cycle(loop_t *L, fsa_status_t *out_st, fsa_sync_report_t *r)
{
    fieldsync_t *fs = L->fs;
    fsl_worker_t *w = fs->worker;
    lock(fs);
    bool stop = w->stop;
    fieldsync_state_t prev = w->state;
    char prev_reason[sizeof w->reason];
    copy_cut(prev_reason, sizeof prev_reason, w->reason);
    if (!stop) {
        w->engine = L->engine;
        set_live(w, FIELDSYNC_STATE_SYNCING, "syncing");
    }
    unlock(fs);
    *out_st = FSA_ETIMEOUT;
    if (stop)
        return;
    show_now(fs, false);
    /* A cancelled cycle persists no backoff (a stop is not a failure): the next start syncs at
     * once. */
    fsa_status_t st = fsa_engine_sync(L->engine, r);
    lock(fs);
    w->engine = NULL;
    bool stopping = w->stop;
    unlock(fs);
    *out_st = st;
    /* The engine's verdict, as fieldsync_sync_once's: a stop that came after the cycle ended
     * otherwise (a refusal, say) leaves that outcome counted, noted and logged. */
    bool cancelled = r->cancelled;
    account(fs, st, r, cancelled);
    if (stopping || cancelled)
        engine_drop(L); /* a cancel is sticky in the engine; the next start makes a new one */
    if (cancelled)
        return;
    if (st == FSA_OK && (r->pushed > 0 || r->pulled > 0))
        fsa_log(&fs->port, FSA_LOG_INFO,
                "synced: %" PRId64 " applied, %" PRId64 " duplicate, %" PRId64 " conflict, %" PRId64
                " rejected, %" PRId64 " pulled",
                r->applied, r->duplicate, r->conflict, r->rejected, r->pulled);
    if (st == FSA_EAUTH)
        fsa_log(&fs->port, FSA_LOG_ERROR,
                "the server refused this device: %s; retrying on a long backoff, with the "
                "secret file read again each time (or fix the configuration and reload)",
                r->error);
    settle(fs, st, r);
    if (st == FSA_EBUSY && strstr(r->error, "backing off") == NULL) {
        /* Another process syncs: this cycle did nothing, the state is what it was. */
        lock(fs);
        set_live(w, prev, prev_reason);
        unlock(fs);
    }
    if (st != FSA_EBUSY)
        note(fs, st, r->error);
    watchdog(fs, st, r);
}

static fsa_status_t outbox_last_seq(fieldsync_t *fs, int64_t *seq, int64_t *depth)
{
    fsa_outbox_stats_t os;
    fsa_status_t st = fsa_outbox_stats(fs->j, &os);
    if (st == FSA_OK) {
        *seq = os.last_seq;
        *depth = os.pending;
    }
    return st;
}

/* Waits until the deadline, a request, or a change of the journal. */
static void wait_until(fieldsync_t *fs, fsa_mono_t deadline)
{
    fsl_worker_t *w = fs->worker;
    lock(fs);
    while (!w->stop && !w->now && !w->reload && !w->changed) {
        if (fs->port.mono_now(fs->port.ctx).ns >= deadline.ns)
            break;
        if (fs->port.cond_wait(fs->port.ctx, w->cv, w->mu, deadline) == FSA_ETIMEOUT)
            break;
    }
    unlock(fs);
}

static fsa_mono_t after_ms(fieldsync_t *fs, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    if (ms > INT64_MAX / FSA_NS_PER_MS)
        return fsa_mono_forever();
    return fsa_mono_add_ns(fs->port.mono_now(fs->port.ctx), ms * FSA_NS_PER_MS);
}

/* Runs the cycle that the rule found due (in: what it was decided on), then notes what the rule
 * remembers of it. */
static void run_due_cycle(loop_t *L, const fsl_due_in_t *in)
{
    fieldsync_t *fs = L->fs;
    fsa_sync_report_t r;
    memset(&r, 0, sizeof r);
    fsa_status_t st = FSA_EINVAL;
    if (L->remake) {
        engine_drop(L);
        L->remake = false;
    }
    if (engine_ready(L)) {
        L->seen_seq = in->outbox_read ? in->last_seq : L->seen_seq;
        cycle(L, &st, &r);
        if (L->engine == NULL)
            return; /* cancelled: the loop ends at its top */
    }
    L->remake = st == FSA_EAUTH || st == FSA_ETLS;
    L->last_cycle = fs->port.mono_now(fs->port.ctx);
    int64_t left = 0, ignored = 0;
    bool ops_left = st == FSA_OK && outbox_last_seq(fs, &ignored, &left) == FSA_OK && left > 0;
    bool other_syncs = st == FSA_EBUSY && strstr(r.error, "backing off") == NULL;
    L->memo = fsl__due_after(st, other_syncs, r.pushed, ops_left);
    fsl__events_pump(fs);
    show_now(fs, false);
}

static void sync_loop(loop_t *L)
{
    fieldsync_t *fs = L->fs;
    fsl_worker_t *w = fs->worker;
    L->memo = FSL_DUE_MEMO_START;
    L->seen_seq = -1;
    /* What changed since the handle was opened (or last stopped) is told first. */
    fsl__events_pump(fs);
    for (;;) {
        lock(fs);
        bool stop = w->stop, now = w->now, reload = w->reload, changed = w->changed;
        w->now = w->reload = w->changed = false;
        unlock(fs);
        if (stop)
            return;
        if (reload && !L->listen_only) {
            engine_drop(L);
            fsa_log(&fs->port, FSA_LOG_INFO, "reloading the configuration");
            now = true; /* a person fixed something: try it at once */
        }
        if (changed || L->watch == NULL)
            fsl__events_pump(fs);

        if (L->listen_only) {
            show_now(fs, true);
            wait_until(fs, L->watch != NULL ? fsa_mono_forever() : after_ms(fs, WATCH_RETRY_MS));
            continue;
        }

        /* Is a cycle due? (due.h: the rule) */
        fsl_due_in_t in = {.memo = L->memo,
                           .asked = now,
                           .seen_seq = L->seen_seq,
                           .interval_ms = interval_ms(fs),
                           .watched = L->watch != NULL};
        int64_t depth = 0;
        in.outbox_read = outbox_last_seq(fs, &in.last_seq, &depth) == FSA_OK;
        fieldsync_sync_status_t s;
        status_now(fs, &s, false);
        in.next_attempt_ms = s.next_attempt_ms;
        in.wall_ms = fs->port.wall_now(fs->port.ctx).ms;
        in.since_ms =
            fsa_mono_diff_ns(fs->port.mono_now(fs->port.ctx), L->last_cycle) / FSA_NS_PER_MS;
        lock(fs);
        in.attention = w->state == FIELDSYNC_STATE_ATTENTION;
        unlock(fs);
        fsl_due_t d = fsl__due(&in);
        if (d.due) {
            run_due_cycle(L, &in);
            continue;
        }
        if (d.backing_off) {
            /* A backoff persisted by an earlier run (or another process) shows as such. */
            lock(fs);
            if (w->state == FIELDSYNC_STATE_IDLE || w->state == FIELDSYNC_STATE_SYNCING)
                set_live(w, FIELDSYNC_STATE_OFFLINE, "backing off: waiting for the next attempt");
            overlay_locked(w, &s);
            unlock(fs);
        }
        show(fs, &s, false);
        wait_until(fs, after_ms(fs, d.wait_ms));
    }
}

static void *sync_main(void *arg)
{
    loop_t *L = arg;
    fieldsync_t *fs = L->fs;
    fsl_worker_t *w = fs->worker;
    /* First, so that the watcher thread it creates inherits it. */
    if (L->background && fs->port.thread_background != NULL) {
        fsa_status_t bs = fs->port.thread_background(fs->port.ctx);
        if (bs != FSA_OK)
            fsa_log(&fs->port, FSA_LOG_INFO,
                    "the sync thread is scheduled as the app's threads are: it cannot be made "
                    "background work here (%s)",
                    fsa_status_str(bs));
    }
    fsa_status_t ws = fsa_watch_open(fsa_journal_path(fs->j), &L->watch);
    if (ws == FSA_OK) {
        ws = fs->port.thread_create(fs->port.ctx, &L->watcher, watcher_main, L);
        if (ws != FSA_OK) {
            fsa_watch_close(L->watch);
            L->watch = NULL;
        }
    }
    if (ws != FSA_OK)
        fsa_log(&fs->port, FSA_LOG_WARN,
                "cannot watch %s for changes (%s): looking at it every %d ms instead",
                fsa_journal_path(fs->j), fsa_status_str(ws), WATCH_RETRY_MS);
    L->last_cycle = fs->port.mono_now(fs->port.ctx);

    sync_loop(L);

    engine_drop(L);
    if (L->watcher != NULL) {
        lock(fs);
        w->watch_stop = true;
        unlock(fs);
        fsa_watch_poke(L->watch);
        (void)fs->port.thread_join(fs->port.ctx, L->watcher, NULL);
    }
    fsa_watch_close(L->watch);
    /* What happened up to now is told before STOPPED, which is the last event of this start. */
    fsl__events_pump(fs);
    fieldsync_sync_status_t s;
    status_now(fs, &s, L->listen_only);
    lock(fs);
    w->phase = PH_ENDED;
    set_live(w, FIELDSYNC_STATE_STOPPED, "stopped");
    w->stalled = false;
    unlock(fs);
    s.state = FIELDSYNC_STATE_STOPPED;
    snprintf(s.reason, sizeof s.reason, "stopped");
    fsa_free(L);
    show(fs, &s, true);
    return NULL;
}

/* Joins a thread that has ended (its start is over). Called without mu. */
static void join_ended(fieldsync_t *fs, fsa_thread_t *t)
{
    if (t != NULL)
        (void)fs->port.thread_join(fs->port.ctx, t, NULL);
}

/* ---- the public API ---- */

fieldsync_status_t fieldsync_start(fieldsync_t *fs, uint32_t flags)
{
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    if (fsl__in_listener(fs))
        return fsl__fail(fs, FIELDSYNC_EBUSY, "fieldsync_start called from a listener");
    const uint32_t known = FIELDSYNC_START_LISTEN_ONLY | FIELDSYNC_START_FOREGROUND;
    if ((flags & ~known) != 0)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "unknown start flags 0x%x",
                         (unsigned)(flags & ~known));
    bool listen_only = (flags & FIELDSYNC_START_LISTEN_ONLY) != 0;
    if (!listen_only &&
        (fs->cfg.device_id == NULL || fs->cfg.server_url == NULL || fs->cfg.secret_file == NULL))
        return fsl__fail(fs, FIELDSYNC_ENOTFOUND,
                         "journal %s is not set up for sync: initialise it first",
                         fsa_journal_path(fs->j));
    fsl_worker_t *w = NULL;
    if (worker_get(fs, &w) != FSA_OK)
        return fsl__fail(fs, FIELDSYNC_ENOMEM, "out of memory starting the sync thread");
    loop_t *L = fsa_calloc(1, sizeof *L);
    if (L == NULL)
        return fsl__fail(fs, FIELDSYNC_ENOMEM, "out of memory starting the sync thread");
    L->fs = fs;
    L->listen_only = listen_only;
    L->background = (flags & FIELDSYNC_START_FOREGROUND) == 0;

    lock(fs);
    if (w->phase == PH_RUNNING || w->onces != NULL) {
        bool once = w->onces != NULL;
        unlock(fs);
        fsa_free(L);
        return fsl__fail(fs, FIELDSYNC_EBUSY,
                         once ? "a fieldsync_sync_once is running on this handle"
                              : "already started (or still stopping: wait for the STOPPED "
                                "status)");
    }
    fsa_thread_t *old = w->phase == PH_ENDED ? w->thread : NULL;
    w->thread = NULL;
    w->phase = PH_RUNNING; /* taken: a concurrent start is refused from here on */
    /* ... and what is asked of the sync thread is this start's from here on: a stop (or a
     * sync_now) that comes while the last thread is joined below is for the new one (they were
     * cleared after the join, and lost). The last thread reads none of them once ended. */
    w->stop = w->now = w->reload = w->changed = w->watch_stop = false;
    unlock(fs);
    /* The last start's thread delivered its STOPPED (or is delivering it): wait for its end, so
     * that nothing of it runs with the new one. */
    join_ended(fs, old);

    lock(fs);
    w->flags = flags;
    w->stalled = false;
    w->shown_valid = false;
    set_live(w, FIELDSYNC_STATE_IDLE, listen_only ? "listening" : "starting");
    set_error(w, FSA_OK, NULL);
    /* Created with mu held: the thread's first step waits for w->thread to be set. */
    fsa_status_t st = fs->port.thread_create(fs->port.ctx, &w->thread, sync_main, L);
    if (st != FSA_OK)
        w->phase = PH_NONE;
    unlock(fs);
    if (st != FSA_OK) {
        fsa_free(L);
        return fsl__fail(fs, fsl__status(st), "cannot start the sync thread: %s",
                         fsa_status_str(st));
    }
    return fsl__ok(fs);
}

fieldsync_status_t fieldsync_sync_now(fieldsync_t *fs)
{
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    fsl_worker_t *w = __atomic_load_n(&fs->worker, __ATOMIC_ACQUIRE);
    if (w == NULL)
        return fsl__fail(fs, FIELDSYNC_EBUSY, "the sync thread is not started");
    lock(fs);
    /* A listen-only thread takes it as a look at the journal. */
    bool running = w->phase == PH_RUNNING && !w->stop;
    if (running) {
        w->now = true;
        wake(fs);
    }
    unlock(fs);
    if (!running)
        return fsl__fail(fs, FIELDSYNC_EBUSY, "the sync thread is not started");
    return fsl__ok(fs);
}

fieldsync_status_t fieldsync_stop(fieldsync_t *fs)
{
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    fsl_worker_t *w = __atomic_load_n(&fs->worker, __ATOMIC_ACQUIRE);
    if (w == NULL)
        return fsl__ok(fs);
    lock(fs);
    if (w->phase == PH_RUNNING) {
        w->stop = true;
        fsa_engine_cancel(w->engine);
        wake(fs);
    }
    for (fsl_once_t *o = w->onces; o != NULL; o = o->next) {
        o->cancelled = true;
        if (o->engine != NULL)
            fsa_engine_cancel(o->engine);
    }
    unlock(fs);
    return fsl__ok(fs);
}

fieldsync_status_t fieldsync_reload(fieldsync_t *fs)
{
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    fsl_worker_t *w = NULL;
    if (worker_get(fs, &w) != FSA_OK)
        return fsl__fail(fs, FIELDSYNC_ENOMEM, "out of memory");
    /* Read here, on the caller's thread, so that the interval, the stall time and the status
     * take it at once and a configuration that cannot be used is told to the caller; the
     * engines read the secret file again when they are made from it. */
    fsl_config_t *c = fsa_calloc(1, sizeof *c);
    if (c == NULL)
        return fsl__fail(fs, FIELDSYNC_ENOMEM, "out of memory");
    char err[320] = "";
    fsa_status_t st = fsl__config_reread(fs, c, err, sizeof err);
    if (st != FSA_OK) {
        fsa_free(c);
        fsa_log(&fs->port, FSA_LOG_WARN, "reload: %s; the configuration in use stays", err);
        return fsl__fail(fs, fsl__status(st), "reload: %s; the configuration in use stays", err);
    }
    /* Handed over whole under mu: a reader copies what it needs under mu, so the one replaced
     * is no longer read once it is out. */
    lock(fs);
    fsl_config_t *old = w->live;
    w->live = c;
    w->reload = true;
    wake(fs);
    unlock(fs);
    if (old != NULL) {
        fsl__config_clear(old);
        fsa_free(old);
    }
    /* Without a thread, fieldsync_sync_once makes a new engine at each call anyway. */
    return fsl__ok(fs);
}

fieldsync_status_t fieldsync_sync_once(fieldsync_t *fs, bool ignore_backoff,
                                       fieldsync_report_t *report)
{
    if (report != NULL)
        memset(report, 0, sizeof *report);
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    /* Any handle's listener: that handle's delivery waits for this cycle, and this cycle's
     * listeners wait for a delivery in progress, maybe that one's (two threads, each in one
     * handle's listener, each syncing the other: neither returns). */
    if (fsl__in_any_listener())
        return fsl__fail(fs, FIELDSYNC_EBUSY, "fieldsync_sync_once called from a listener");
    fsl_worker_t *w = NULL;
    if (worker_get(fs, &w) != FSA_OK)
        return fsl__fail(fs, FIELDSYNC_ENOMEM, "out of memory");
    lock(fs);
    if (w->phase == PH_RUNNING) {
        unlock(fs);
        return fsl__fail(fs, FIELDSYNC_EBUSY,
                         "the sync thread is started: use fieldsync_sync_now, or stop it first");
    }
    /* Listed from here to the end: a start is refused meanwhile, and a stop while the engine is
     * made cancels it as soon as it exists. */
    fsl_once_t me = {.next = w->onces};
    w->onces = &me;
    unlock(fs);

    char err[320] = "";
    fsa_engine_t *e = NULL;
    fieldsync_t *shell = NULL;
    fsa_status_t st = engine_make(fs, ignore_backoff, &e, &shell, err, sizeof err);
    const bool made = st == FSA_OK;
    fsa_sync_report_t r;
    memset(&r, 0, sizeof r);
    lock(fs);
    if (made) {
        me.engine = e;
        if (me.cancelled)
            fsa_engine_cancel(e); /* sticky: the cycle ends at its first step */
    }
    unlock(fs);
    if (made) {
        fsa_engine_on_status(e, on_engine_status, fs);
        st = fsa_engine_sync(e, &r);
    }
    lock(fs);
    // cppcheck-suppress redundantAssignment ; fieldsync_stop reads me through w->onces
    me.engine = NULL; /* freed next: a stop no longer reaches it */
    unlock(fs);
    if (made) {
        engine_unmake(e, shell);
        /* As the thread's: a cycle the engine ended at the cancel persisted no backoff, and is
         * no failure to show; one that ended otherwise before the stop came is what it was. */
        bool cancelled = r.cancelled;
        account(fs, st, &r, cancelled);
        if (!cancelled) {
            settle(fs, st, &r);
            if (st != FSA_EBUSY)
                note(fs, st, r.error);
        }
        snprintf(err, sizeof err, "%s", cancelled ? "cancelled by fieldsync_stop" : r.error);
        fsl__events_pump(fs);
        show_now(fs, false);
    }
    lock(fs);
    fsl_once_t **p = &w->onces;
    while (*p != &me)
        p = &(*p)->next;
    *p = me.next;
    unlock(fs);
    if (report != NULL)
        report_copy(&r, report);
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "%s", err[0] ? err : fsa_status_str(st));
    return fsl__ok(fs);
}

fieldsync_status_t fieldsync_stats(fieldsync_t *fs, fieldsync_stats_t *out)
{
    if (!fsl__usable(fs)) {
        if (out != NULL)
            fsl__zero_sized(out, out->size);
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    }
    if (out == NULL || out->size < sizeof(uint32_t))
        return fsl__fail(fs, FIELDSYNC_EINVAL, "out is NULL or its size is not set");
    uint32_t size = out->size;
    fieldsync_stats_t s;
    memset(&s, 0, sizeof s);
    fsl_worker_t *w = __atomic_load_n(&fs->worker, __ATOMIC_ACQUIRE);
    if (w != NULL) {
        lock(fs);
        s = w->stats;
        unlock(fs);
    }
    s.size = size < sizeof s ? size : (uint32_t)sizeof s;
    /* A caller compiled against an older header gets the members it knows; a newer one's members
     * that this library does not know read as zero. */
    if (size > sizeof s)
        memset((char *)out + sizeof s, 0, size - sizeof s);
    memcpy(out, &s, s.size);
    out->size = size;
    return fsl__ok(fs);
}

/* ---- close ---- */

void fsl__worker_shutdown(fieldsync_t *fs)
{
    fsl_worker_t *w = fs != NULL ? __atomic_load_n(&fs->worker, __ATOMIC_ACQUIRE) : NULL;
    if (w == NULL)
        return;
    /* Close delivers nothing more (its caller may be tearing down what listeners use): the
     * thread still ends its cycle and its STOPPED, unheard. A listener running now finishes. */
    fsl__events_mute(fs);
    lock(fs);
    if (w->phase == PH_RUNNING) {
        w->stop = true;
        fsa_engine_cancel(w->engine);
        wake(fs);
    }
    fsa_thread_t *t = w->thread;
    w->thread = NULL;
    unlock(fs);
    /* The thread ends its cycle (the batch in flight is finished or abandoned), sends STOPPED,
     * and returns: then nothing of the handle runs. */
    join_ended(fs, t);
    lock(fs);
    w->phase = PH_NONE;
    unlock(fs);
}

void fsl__worker_free(fieldsync_t *fs)
{
    fsl_worker_t *w = fs != NULL ? fs->worker : NULL;
    if (w == NULL)
        return;
    fsl__worker_shutdown(fs);
    fs->worker = NULL;
    if (w->live != NULL) {
        fsl__config_clear(w->live);
        fsa_free(w->live);
    }
    fs->port.cond_free(fs->port.ctx, w->cv);
    fs->port.mutex_free(fs->port.ctx, w->mu);
    fsa_free(w);
}
