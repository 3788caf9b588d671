/* libfieldsync: listeners, the change-log pump, and buffered delivery (an fd and dispatch). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "agent/lib/internal.h"
#include "port/alloc.h"
#include "port/notify.h"

/*
 * Events are delivered in the order they happen, each once. Unbuffered, the thread that makes an
 * event (the sync thread, or the caller of fieldsync_sync_once) runs the listeners at once;
 * buffered, the event waits in a bounded queue until the app calls fieldsync_dispatch() on its
 * own thread, and an eventfd is readable exactly while the queue holds something.
 *
 * Two locks: `deliver` serializes whoever makes or delivers events (so that they run in order,
 * and the change log's position moves under one owner); `mu` guards the listener list and the
 * queue, and is never held while a listener runs, so a listener may add or remove listeners.
 */

#define EVENTS_QUEUE_MAX 16384 /* queued events; beyond, they are dropped and counted */
#define PUMP_BATCH 32          /* change rows read per journal call */

typedef enum ev_kind { EV_STATUS = 0, EV_CHANGE = 1, EV_CONFLICT = 2 } ev_kind_t;

struct fieldsync_listener {
    ev_kind_t kind;
    union {
        fieldsync_status_fn status;
        fieldsync_change_fn change;
        fieldsync_conflict_fn conflict;
    } fn;
    void *ctx;
    struct fieldsync_listener *next;
    int busy;          /* threads running it now */
    bool removed;      /* it runs no more */
    bool self_removed; /* removed from inside itself: the thread running it frees it */
};

typedef struct ev_change {
    fsa_type_t type;
    char id[FSA_ID_BYTES];
    char op_id[FSA_OP_ID_BYTES];
    int64_t version, seq;
    fieldsync_change_reason_t reason;
} ev_change_t;

typedef struct ev_conflict {
    fsa_type_t type;
    char id[FSA_ID_BYTES];
    char op_id[FSA_OP_ID_BYTES];
    char outcome[16], decision[16];
    char reason[256];
} ev_conflict_t;

typedef struct fsl_event {
    struct fsl_event *next;
    ev_kind_t kind;
    uint64_t dropped; /* a status event standing for this many events dropped before it */
    union {
        fieldsync_sync_status_t status;
        ev_change_t change;
        ev_conflict_t conflict;
    } u;
} fsl_event_t;

struct fsl_events {
    fieldsync_t *fs;
    fsa_mutex_t *mu;      /* the listeners, the queue */
    fsa_cond_t *cv;       /* a listener stopped running */
    fsa_mutex_t *deliver; /* one maker/deliverer of events at a time */
    fieldsync_listener_t *head;
    bool buffered;
    fsa_notify_t *notify;
    fsl_event_t *qhead, *qtail;
    size_t qlen, qmax;
    fsl_event_t *marker;  /* the "events dropped" status at the queue's tail, if any */
    uint64_t dropped_all; /* over the handle's life, for the log */
    fieldsync_sync_status_t last_status;
    int64_t last_seq; /* the change log's position delivered (or queued) */
    bool muted;       /* closing: nothing more is delivered or queued */
};

/* The listeners running on this thread, innermost first (a listener of one handle may dispatch
 * another handle's events). */
typedef struct frame {
    const fieldsync_t *fs;
    const fieldsync_listener_t *l;
    struct frame *prev;
} frame_t;
static _Thread_local frame_t *tl_frames;

bool fsl__in_listener(const fieldsync_t *fs)
{
    for (const frame_t *f = tl_frames; f != NULL; f = f->prev)
        if (f->fs == fs)
            return true;
    return false;
}

bool fsl__in_any_listener(void)
{
    return tl_frames != NULL;
}

static bool in_this_listener(const fieldsync_listener_t *l)
{
    for (const frame_t *f = tl_frames; f != NULL; f = f->prev)
        if (f->l == l)
            return true;
    return false;
}

/* ---- life cycle ---- */

fsa_status_t fsl__events_new(fieldsync_t *fs)
{
    fsl_events_t *ev = fsa_calloc(1, sizeof *ev);
    if (ev == NULL)
        return FSA_ENOMEM;
    ev->fs = fs;
    ev->qmax = EVENTS_QUEUE_MAX;
    ev->buffered = (fs->cfg.flags & FIELDSYNC_EVENTS_BUFFERED) != 0;
    ev->last_status.size = (uint32_t)sizeof ev->last_status;
    fsa_status_t st = fs->port.mutex_new(fs->port.ctx, &ev->mu);
    if (st == FSA_OK)
        st = fs->port.mutex_new(fs->port.ctx, &ev->deliver);
    if (st == FSA_OK)
        st = fs->port.cond_new(fs->port.ctx, &ev->cv);
    if (st == FSA_OK && ev->buffered)
        st = fsa_notify_open(&ev->notify);
    /* Listeners hear of what happens from now on: the history is not replayed. */
    if (st == FSA_OK && fs->j != NULL)
        st = fsa_journal_changes_last(fs->j, &ev->last_seq);
    if (st != FSA_OK) {
        fs->events = ev;
        fsl__events_free(fs);
        return st;
    }
    fs->events = ev;
    return FSA_OK;
}

static void queue_free(fsl_events_t *ev)
{
    while (ev->qhead != NULL) {
        fsl_event_t *e = ev->qhead;
        ev->qhead = e->next;
        fsa_free(e);
    }
    ev->qtail = NULL;
    ev->marker = NULL;
    ev->qlen = 0;
}

void fsl__events_free(fieldsync_t *fs)
{
    fsl_events_t *ev = fs != NULL ? fs->events : NULL;
    if (ev == NULL)
        return;
    fs->events = NULL;
    while (ev->head != NULL) {
        fieldsync_listener_t *l = ev->head;
        ev->head = l->next;
        fsa_free(l);
    }
    queue_free(ev);
    fsa_notify_close(ev->notify);
    fs->port.cond_free(fs->port.ctx, ev->cv);
    fs->port.mutex_free(fs->port.ctx, ev->deliver);
    fs->port.mutex_free(fs->port.ctx, ev->mu);
    fsa_free(ev);
}

void fsl__events_mute(fieldsync_t *fs)
{
    fsl_events_t *ev = fs != NULL ? fs->events : NULL;
    if (ev == NULL)
        return;
    fs->port.mutex_lock(fs->port.ctx, ev->mu);
    ev->muted = true;
    fs->port.mutex_unlock(fs->port.ctx, ev->mu);
}

void fsl__events_set_queue_max(fieldsync_t *fs, size_t max)
{
    fsl_events_t *ev = fs->events;
    fs->port.mutex_lock(fs->port.ctx, ev->mu);
    ev->qmax = max > 0 ? max : EVENTS_QUEUE_MAX;
    fs->port.mutex_unlock(fs->port.ctx, ev->mu);
}

/* ---- delivery ---- */

static void call(fieldsync_listener_t *l, const fsl_event_t *e)
{
    switch (e->kind) {
    case EV_STATUS:
        if (e->dropped == 0) {
            l->fn.status(l->ctx, &e->u.status);
        } else {
            /* The app hears that it missed events, with the newest status it missed. */
            fieldsync_sync_status_t s = e->u.status;
            snprintf(s.reason, sizeof s.reason,
                     "%" PRIu64 " events dropped: fieldsync_dispatch was not called in time",
                     e->dropped);
            l->fn.status(l->ctx, &s);
        }
        break;
    case EV_CHANGE: {
        fieldsync_change_t c = {
            .type = fsa_type_name(e->u.change.type),
            .id = e->u.change.id,
            .version = e->u.change.version,
            .reason = e->u.change.reason,
            .op_id = e->u.change.op_id,
            .seq = e->u.change.seq,
        };
        l->fn.change(l->ctx, &c);
        break;
    }
    case EV_CONFLICT: {
        fieldsync_conflict_event_t c = {
            .op_id = e->u.conflict.op_id,
            .type = fsa_type_name(e->u.conflict.type),
            .id = e->u.conflict.id,
            .outcome = e->u.conflict.outcome,
            .decision = e->u.conflict.decision,
            .reason = e->u.conflict.reason,
        };
        l->fn.conflict(l->ctx, &c);
        break;
    }
    }
}

static void unlink_free(fsl_events_t *ev, fieldsync_listener_t *l)
{
    for (fieldsync_listener_t **p = &ev->head; *p != NULL; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            break;
        }
    fsa_free(l);
}

/* Runs every listener of e's kind on this thread, in the order they were added. */
static void deliver(fsl_events_t *ev, const fsl_event_t *e)
{
    fsa_port_t *p = &ev->fs->port;
    p->mutex_lock(p->ctx, ev->mu);
    fieldsync_listener_t *l = ev->head;
    while (l != NULL) {
        if (l->kind != e->kind || l->removed) {
            l = l->next;
            continue;
        }
        /* busy keeps l in the list while the lock is dropped, so l->next is current after. */
        l->busy++;
        p->mutex_unlock(p->ctx, ev->mu);
        frame_t f = {ev->fs, l, tl_frames};
        tl_frames = &f;
        call(l, e);
        tl_frames = f.prev;
        p->mutex_lock(p->ctx, ev->mu);
        l->busy--;
        fieldsync_listener_t *next = l->next;
        if (l->removed && l->busy == 0) {
            if (l->self_removed)
                unlink_free(ev, l);
            else
                p->cond_broadcast(p->ctx, ev->cv); /* its remover waits for this */
        }
        l = next;
    }
    p->mutex_unlock(p->ctx, ev->mu);
}

/* Appends e to the queue (buffered), or drops it when the queue is full: then a status event
 * at the tail says how many were dropped (and carries the newest status). `always`: never
 * dropped (the STOPPED status, which must end a start). Takes e. Called with mu held. */
static void enqueue(fsl_events_t *ev, fsl_event_t *e, bool always)
{
    fsa_port_t *p = &ev->fs->port;
    if (ev->qlen >= ev->qmax && !always) {
        if (ev->marker == NULL) {
            e->kind = EV_STATUS;
            e->u.status = ev->last_status;
            e->dropped = 0;
            ev->marker = e;
            e->next = NULL;
            if (ev->qtail != NULL)
                ev->qtail->next = e;
            else
                ev->qhead = e;
            ev->qtail = e;
            ev->qlen++;
            if (ev->dropped_all == 0)
                fsa_log(p, FSA_LOG_WARN,
                        "events dropped: the app did not call fieldsync_dispatch in time (%zu "
                        "waiting)",
                        ev->qlen);
        } else {
            if (e->kind == EV_STATUS)
                ev->marker->u.status = e->u.status;
            fsa_free(e);
        }
        ev->marker->dropped++;
        ev->dropped_all++;
        return;
    }
    e->next = NULL;
    if (ev->qtail != NULL)
        ev->qtail->next = e;
    else
        ev->qhead = e;
    ev->qtail = e;
    ev->qlen++;
    ev->marker = NULL; /* a later overflow starts a new marker after this event */
    if (ev->qlen == 1 && fsa_notify_set(ev->notify) != FSA_OK)
        fsa_log(p, FSA_LOG_WARN, "events: cannot signal the event fd");
}

/* Delivers e now (unbuffered) or queues it (buffered). Called with `deliver` held. Takes e. */
static void emit(fsl_events_t *ev, fsl_event_t *e, bool always)
{
    fsa_port_t *p = &ev->fs->port;
    p->mutex_lock(p->ctx, ev->mu);
    bool muted = ev->muted;
    p->mutex_unlock(p->ctx, ev->mu);
    if (muted) {
        fsa_free(e);
        return;
    }
    if (e->kind == EV_STATUS) {
        p->mutex_lock(p->ctx, ev->mu);
        ev->last_status = e->u.status;
        p->mutex_unlock(p->ctx, ev->mu);
    }
    if (!ev->buffered) {
        deliver(ev, e);
        fsa_free(e);
        return;
    }
    p->mutex_lock(p->ctx, ev->mu);
    enqueue(ev, e, always);
    p->mutex_unlock(p->ctx, ev->mu);
}

static fsl_event_t *event_new(fsl_events_t *ev, ev_kind_t kind)
{
    fsl_event_t *e = fsa_calloc(1, sizeof *e);
    if (e == NULL) {
        fsa_log(&ev->fs->port, FSA_LOG_WARN, "events: out of memory: an event was not delivered");
        return NULL;
    }
    e->kind = kind;
    return e;
}

void fsl__events_status(fieldsync_t *fs, const fieldsync_sync_status_t *s)
{
    fsl_events_t *ev = fs->events;
    fsl_event_t *e = event_new(ev, EV_STATUS);
    if (e == NULL)
        return;
    e->u.status = *s;
    e->u.status.size = (uint32_t)sizeof e->u.status;
    fs->port.mutex_lock(fs->port.ctx, ev->deliver);
    emit(ev, e, s->state == FIELDSYNC_STATE_STOPPED);
    fs->port.mutex_unlock(fs->port.ctx, ev->deliver);
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? src : "");
}

/* A conflict event; NULL strings are stored as "". NULL when out of memory. */
static fsl_event_t *conflict_event(fsl_events_t *ev, fsa_type_t type, const char *id,
                                   const char *op_id, const char *outcome, const char *decision,
                                   const char *reason)
{
    fsl_event_t *e = event_new(ev, EV_CONFLICT);
    if (e == NULL)
        return NULL;
    ev_conflict_t *k = &e->u.conflict;
    k->type = type;
    copy_str(k->id, sizeof k->id, id);
    copy_str(k->op_id, sizeof k->op_id, op_id);
    copy_str(k->outcome, sizeof k->outcome, outcome);
    copy_str(k->decision, sizeof k->decision, decision);
    copy_str(k->reason, sizeof k->reason, reason);
    return e;
}

/* The conflict event of the resolver's decision to leave an op to a person (a PARKED change) or
 * to let the server's state stand (SERVER_WON), from the journal's conflicts table: only while
 * that conflict is open with that decision. A conflict the resolver settled (converged, rebased)
 * is no conflict event; nor is the answer itself (HELD), which the resolver has not judged yet.
 * (A library from before session 28 wrote PARKED for the answer and no change for "park": such
 * a row read after the decision is told as before; read before it, while an older library syncs
 * the same journal, its conflict is not told. Mixing versions on one journal is not supported.) */
static void decided_conflict(fsl_events_t *ev, const fsa_change_t *ch, fsa_conflict_decision_t told)
{
    fsa_conflict_t c;
    memset(&c, 0, sizeof c);
    fsa_status_t st = fsa_conflict_get(ev->fs->j, ch->op_id, &c);
    if (st != FSA_OK) {
        if (st != FSA_ENOTFOUND) /* resolved and cleared meanwhile: nothing to tell */
            fsa_log(&ev->fs->port, FSA_LOG_WARN, "events: conflict of op %s: %s", ch->op_id,
                    fsa_status_str(st));
        return;
    }
    if (c.resolution == FSA_RESOLVED_NONE && c.decision == told) {
        fsl_event_t *e =
            conflict_event(ev, c.op.type, c.op.id, c.op.op_id, fsa_conflict_outcome_name(c.outcome),
                           fsa_conflict_decision_name(c.decision), c.reason);
        if (e != NULL)
            emit(ev, e, false);
    }
    fsa_conflict_clear(&c);
}

_Static_assert((int)FIELDSYNC_CHANGE_RECORDED == (int)FSA_CHANGE_RECORDED &&
                   (int)FIELDSYNC_CHANGE_SYNCED == (int)FSA_CHANGE_SYNCED &&
                   (int)FIELDSYNC_CHANGE_PULLED == (int)FSA_CHANGE_PULLED &&
                   (int)FIELDSYNC_CHANGE_REBASED == (int)FSA_CHANGE_REBASED &&
                   (int)FIELDSYNC_CHANGE_SERVER_WON == (int)FSA_CHANGE_SERVER_WON &&
                   (int)FIELDSYNC_CHANGE_PARKED == (int)FSA_CHANGE_PARKED &&
                   (int)FIELDSYNC_CHANGE_RESOLVED == (int)FSA_CHANGE_RESOLVED &&
                   (int)FIELDSYNC_CHANGE_GONE == (int)FSA_CHANGE_GONE &&
                   (int)FIELDSYNC_CHANGE_HELD == (int)FSA_CHANGE_HELD,
               "the public change reasons are the journal's");

void fsl__events_pump(fieldsync_t *fs)
{
    fsl_events_t *ev = fs->events;
    fs->port.mutex_lock(fs->port.ctx, ev->deliver);
    fsa_change_t rows[PUMP_BATCH];
    for (;;) {
        size_t n = 0;
        fsa_status_t st = fsa_journal_changes_read(fs->j, ev->last_seq, rows, PUMP_BATCH, &n);
        if (st != FSA_OK) {
            fsa_log(&fs->port, FSA_LOG_WARN, "events: reading the change log: %s",
                    fsa_status_str(st));
            break;
        }
        for (size_t i = 0; i < n; i++) {
            const fsa_change_t *ch = &rows[i];
            /* The position moves first: an event that cannot be made (out of memory) is lost
             * once, not delivered twice. */
            ev->last_seq = ch->seq;
            fsl_event_t *e = event_new(ev, EV_CHANGE);
            if (e == NULL)
                continue;
            e->u.change.type = ch->type;
            copy_str(e->u.change.id, sizeof e->u.change.id, ch->id);
            copy_str(e->u.change.op_id, sizeof e->u.change.op_id, ch->op_id);
            e->u.change.version = ch->version;
            e->u.change.seq = ch->seq;
            e->u.change.reason = (fieldsync_change_reason_t)ch->reason;
            emit(ev, e, false);
            if (ch->op_id[0] != '\0' && ch->reason == FSA_CHANGE_PARKED)
                decided_conflict(ev, ch, FSA_DECISION_PARK);
            else if (ch->op_id[0] != '\0' && ch->reason == FSA_CHANGE_SERVER_WON)
                decided_conflict(ev, ch, FSA_DECISION_SERVER_WINS);
        }
        if (n < PUMP_BATCH)
            break;
    }
    fs->port.mutex_unlock(fs->port.ctx, ev->deliver);
}

/* ---- the public API ---- */

/* Adds a copy of tmpl (kind, fn, ctx set) at the end of the list. */
static fieldsync_status_t add_listener(fieldsync_t *fs, const fieldsync_listener_t *tmpl,
                                       bool fn_set, fieldsync_listener_t **token)
{
    if (token != NULL)
        *token = NULL;
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    if (!fn_set)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "a listener function is required");
    fieldsync_listener_t *l = fsa_calloc(1, sizeof *l);
    if (l == NULL)
        return fsl__fail(fs, FIELDSYNC_ENOMEM, "out of memory adding a listener");
    *l = *tmpl;
    l->next = NULL;
    fsl_events_t *ev = fs->events;
    fs->port.mutex_lock(fs->port.ctx, ev->mu);
    fieldsync_listener_t **p = &ev->head;
    while (*p != NULL)
        p = &(*p)->next;
    *p = l;
    fs->port.mutex_unlock(fs->port.ctx, ev->mu);
    if (token != NULL)
        *token = l;
    return fsl__ok(fs);
}

fieldsync_status_t fieldsync_add_status_listener(fieldsync_t *fs, fieldsync_status_fn fn, void *ctx,
                                                 fieldsync_listener_t **token)
{
    fieldsync_listener_t t = {.kind = EV_STATUS, .fn.status = fn, .ctx = ctx};
    return add_listener(fs, &t, fn != NULL, token);
}

fieldsync_status_t fieldsync_add_change_listener(fieldsync_t *fs, fieldsync_change_fn fn, void *ctx,
                                                 fieldsync_listener_t **token)
{
    fieldsync_listener_t t = {.kind = EV_CHANGE, .fn.change = fn, .ctx = ctx};
    return add_listener(fs, &t, fn != NULL, token);
}

fieldsync_status_t fieldsync_add_conflict_listener(fieldsync_t *fs, fieldsync_conflict_fn fn,
                                                   void *ctx, fieldsync_listener_t **token)
{
    fieldsync_listener_t t = {.kind = EV_CONFLICT, .fn.conflict = fn, .ctx = ctx};
    return add_listener(fs, &t, fn != NULL, token);
}

// cppcheck-suppress constParameter ; the public signature: remove frees the listener
fieldsync_status_t fieldsync_remove_listener(fieldsync_t *fs, fieldsync_listener_t *token)
{
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    fsl_events_t *ev = fs->events;
    fsa_port_t *p = &fs->port;
    p->mutex_lock(p->ctx, ev->mu);
    fieldsync_listener_t *l = ev->head;
    while (l != NULL && l != token)
        l = l->next;
    if (l == NULL || l->removed) {
        p->mutex_unlock(p->ctx, ev->mu);
        return fsl__fail(fs, FIELDSYNC_ENOTFOUND, "no such listener on this handle");
    }
    l->removed = true;
    if (l->busy > 0 && in_this_listener(l)) {
        /* From inside itself: it returns at once; the thread running it frees it after. */
        l->self_removed = true;
        p->mutex_unlock(p->ctx, ev->mu);
        return fsl__ok(fs);
    }
    while (l->busy > 0)
        (void)p->cond_wait(p->ctx, ev->cv, ev->mu, fsa_mono_forever());
    unlink_free(ev, l);
    p->mutex_unlock(p->ctx, ev->mu);
    return fsl__ok(fs);
}

fieldsync_status_t fieldsync_event_fd(fieldsync_t *fs, int *fd)
{
    if (fd != NULL)
        *fd = -1;
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    if (fd == NULL)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "fd is NULL");
    if (!fs->events->buffered)
        return fsl__fail(fs, FIELDSYNC_EINVAL,
                         "not buffered: open with FIELDSYNC_EVENTS_BUFFERED for an event fd");
    *fd = fsa_notify_fd(fs->events->notify);
    return fsl__ok(fs);
}

fieldsync_status_t fieldsync_dispatch(fieldsync_t *fs, size_t *delivered)
{
    if (delivered != NULL)
        *delivered = 0;
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    fsl_events_t *ev = fs->events;
    if (!ev->buffered)
        return fsl__fail(fs, FIELDSYNC_EINVAL,
                         "not buffered: listeners run on the sync thread (open with "
                         "FIELDSYNC_EVENTS_BUFFERED to dispatch them)");
    /* Any handle's listener, as fieldsync_sync_once: two threads dispatching each other's handle
     * from their listeners would each wait for the other's delivery. */
    if (fsl__in_any_listener())
        return fsl__fail(fs, FIELDSYNC_EBUSY, "fieldsync_dispatch called from a listener");
    fsa_port_t *p = &fs->port;
    size_t n = 0;
    p->mutex_lock(p->ctx, ev->mu);
    /* The events waiting now, not those that arrive meanwhile: a busy sync thread cannot keep
     * the app's thread in here. One at a time, so the fd stays readable while any waits. */
    size_t budget = ev->qlen;
    while (n < budget && ev->qhead != NULL) {
        fsl_event_t *e = ev->qhead;
        ev->qhead = e->next;
        if (ev->qhead == NULL) {
            ev->qtail = NULL;
            if (fsa_notify_clear(ev->notify) != FSA_OK)
                fsa_log(p, FSA_LOG_WARN, "events: cannot clear the event fd");
        }
        if (ev->marker == e)
            ev->marker = NULL;
        ev->qlen--;
        p->mutex_unlock(p->ctx, ev->mu);
        deliver(ev, e);
        fsa_free(e);
        n++;
        p->mutex_lock(p->ctx, ev->mu);
    }
    p->mutex_unlock(p->ctx, ev->mu);
    if (delivered != NULL)
        *delivered = n;
    return fsl__ok(fs);
}

const char *fieldsync_change_reason_str(fieldsync_change_reason_t r)
{
    static const char names[][11] = {"recorded", "synced",   "pulled", "rebased", "server-won",
                                     "parked",   "resolved", "gone",   "held"};
    if ((unsigned)r < sizeof names / sizeof names[0])
        return names[r];
    return "unknown";
}

const char *fieldsync_state_str(fieldsync_state_t s)
{
    static const char names[][10] = {"idle", "syncing", "offline", "attention", "stopped"};
    if ((unsigned)s < sizeof names / sizeof names[0])
        return names[s];
    return "unknown";
}
