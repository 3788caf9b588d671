/* libfieldsync: reading: an entity's local view, lists, the device's status, conflicts. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "agent/lib/internal.h"
#include "port/alloc.h"
#include "sync/backoff.h"

/* Common start: a usable handle and a place for the answer. */
#define READ_START(out)                                                                            \
    do {                                                                                           \
        if ((out) != NULL)                                                                         \
            *(out) = NULL;                                                                         \
        if (!fsl__usable(fs))                                                                      \
            return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;                              \
        if ((out) == NULL)                                                                         \
            return fsl__fail(fs, FIELDSYNC_EINVAL, "%s: the out-parameter is NULL", __func__);     \
    } while (0)

/* One entity as fieldsync_get shows it. */
static void entity_json(fsl_jb_t *b, fsa_type_t type, const char *id, const char *fields,
                        int64_t version, int64_t pending, int64_t conflicts)
{
    fsl__jb_raw(b, "{\"type\":");
    fsl__jb_str(b, fsa_type_name(type));
    fsl__jb_raw(b, ",\"id\":");
    fsl__jb_str(b, id);
    fsl__jb_fmt(b,
                ",\"server_version\":%" PRId64 ",\"pending\":%" PRId64 ",\"conflicts\":%" PRId64
                ",\"fields\":",
                version, pending, conflicts);
    fsl__jb_raw(b, fields != NULL ? fields : "null");
    fsl__jb_raw(b, "}");
}

static fieldsync_status_t answer(fieldsync_t *fs, fsl_jb_t *b, char **json, const char *what)
{
    fsa_status_t st = fsl__jb_take(b, json);
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "%s: %s", what,
                         st == FSA_ETOOLARGE ? "the answer is too large (ask for fewer)"
                                             : fsa_status_str(st));
    return fsl__ok(fs);
}

fieldsync_status_t fieldsync_get(fieldsync_t *fs, const char *type, const char *id, char **json)
{
    READ_START(json);
    fsa_type_t t;
    if (!fsl__type_parse(type, &t))
        return fsl__fail(fs, FIELDSYNC_EINVAL, "unknown type '%.40s' (attendance, jobneed, ticket)",
                         type != NULL ? type : "(null)");
    if (id == NULL || !fsa_model_id_valid(id))
        return fsl__fail(fs, FIELDSYNC_EINVAL,
                         "invalid id '%.40s': 1-128 characters of A-Z a-z 0-9 . _ : -",
                         id != NULL ? id : "(null)");
    char *fields = NULL;
    int64_t version = 0, pending = 0, conflicts = 0;
    fsa_status_t st = fsa_journal_get(fs->j, t, id, &fields, &version, &pending);
    if (st == FSA_OK)
        st = fsa_journal_entity_conflicts(fs->j, t, id, &conflicts);
    if (st == FSA_ENOTFOUND)
        return fsl__fail(fs, FIELDSYNC_ENOTFOUND, "no %s %s in this journal", fsa_type_name(t), id);
    if (st != FSA_OK) {
        fsa_model_free(fields);
        return fsl__fail(fs, fsl__status(st), "cannot read %s %s: %s", fsa_type_name(t), id,
                         fsa_status_str(st));
    }
    fsl_jb_t b = {0};
    entity_json(&b, t, id, fields, version, pending, conflicts);
    fsa_model_free(fields);
    return answer(fs, &b, json, "fieldsync_get");
}

/* ---- lists ---- */

#define QEND(m) (offsetof(fieldsync_query_t, m) + sizeof(((fieldsync_query_t *)0)->m))

typedef struct list_walk {
    fsl_jb_t b;
    size_t n;
    char last[FSA_ID_BYTES];
} list_walk_t;

static bool list_one(void *arg, fsa_type_t type, const char *id, const char *fields_json,
                     int64_t base_version, int64_t pending, int64_t open_conflicts)
{
    list_walk_t *w = arg;
    if (w->n > 0)
        fsl__jb_raw(&w->b, ",");
    entity_json(&w->b, type, id, fields_json, base_version, pending, open_conflicts);
    snprintf(w->last, sizeof w->last, "%s", id);
    w->n++;
    return w->b.st == FSA_OK;
}

fieldsync_status_t fieldsync_list(fieldsync_t *fs, const fieldsync_query_t *q, char **json)
{
    READ_START(json);
    if (q == NULL)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "fieldsync_list: the query is NULL");
    /* The size rule of fieldsync_config_t: an older caller's smaller query gets the defaults of
     * what it lacks; a newer one's larger query must leave what this library lacks unset. */
    fieldsync_query_t c;
    memset(&c, 0, sizeof c);
    static const size_t ends[] = {QEND(type),      QEND(parent_id), QEND(status),
                                  QEND(people_id), QEND(site_id),   QEND(from_ms),
                                  QEND(to_ms),     QEND(after_id),  sizeof(fieldsync_query_t)};
    size_t size = q->size;
    if (size > sizeof c) {
        const unsigned char *tail = (const unsigned char *)q + sizeof c;
        for (size_t i = 0; i < size - sizeof c; i++)
            if (tail[i] != 0)
                return fsl__fail(fs, FIELDSYNC_EUNSUPPORTED,
                                 "query: member at byte %zu is set, but this library knows only "
                                 "%zu bytes of fieldsync_query_t",
                                 sizeof c + i, sizeof c);
        size = sizeof c;
    }
    bool boundary = false;
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++)
        boundary = boundary || ends[i] == size;
    if (!boundary)
        return fsl__fail(fs, FIELDSYNC_EINVAL,
                         "query: size %u is not the size of any fieldsync_query_t (set it to "
                         "sizeof(fieldsync_query_t))",
                         (unsigned)q->size);
    memcpy(&c, q, size);
    fsa_entity_filter_t f;
    memset(&f, 0, sizeof f);
    if (!fsl__type_parse(c.type, &f.type))
        return fsl__fail(fs, FIELDSYNC_EINVAL,
                         "query: unknown type '%.40s' (attendance, jobneed, ticket)",
                         c.type != NULL ? c.type : "(null)");
    if (c.from_ms < 0 || c.to_ms < 0)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "query: from_ms and to_ms must be >= 0");
    f.parent_id = c.parent_id;
    f.status = c.status;
    f.people_id = c.people_id;
    f.site_id = c.site_id;
    f.from_ms = c.from_ms;
    f.to_ms = c.to_ms;
    f.after_id = c.after_id;
    f.limit = c.limit == 0 ? FSA_LIST_DEFAULT : c.limit > FSA_LIST_MAX ? FSA_LIST_MAX : c.limit;
    list_walk_t *w = fsa_calloc(1, sizeof *w);
    if (w == NULL)
        return fsl__fail(fs, FIELDSYNC_ENOMEM, "out of memory");
    fsl__jb_raw(&w->b, "{\"entities\":[");
    fsa_status_t st = fsa_journal_list(fs->j, &f, list_one, w);
    if (st != FSA_OK) {
        char *drop = NULL;
        (void)fsl__jb_take(&w->b, &drop);
        fsa_free(drop);
        fsa_free(w);
        return fsl__fail(fs, fsl__status(st), "cannot list %s: %s", fsa_type_name(f.type),
                         fsa_status_str(st));
    }
    /* A full page may have a next one; a short page is the last. */
    bool more = w->n == f.limit;
    fsl__jb_fmt(&w->b, "],\"more\":%s,\"next_after\":", more ? "true" : "false");
    fsl__jb_str(&w->b, w->n > 0 ? w->last : NULL);
    fsl__jb_raw(&w->b, "}");
    fieldsync_status_t ps = answer(fs, &w->b, json, "fieldsync_list");
    fsa_free(w);
    return ps;
}

/* ---- status ---- */

fsa_status_t fsl__sync_note(fieldsync_t *fs, fsa_status_t st, const char *msg)
{
    return fsa_journal_last_error_set(fs->j, (int64_t)st, st != FSA_OK ? msg : NULL);
}

/* The journal's sync state as the engine reads it (and the sync thread from the status): a backoff
 * deadline stored before the wall clock was set back is no deadline (fsa_backoff_cycle_due). */
static fsa_status_t sync_state(fieldsync_t *fs, fsa_sync_state_t *ss)
{
    fsa_status_t st = fsa_journal_sync_state_get(fs->j, ss);
    if (st == FSA_OK)
        ss->backoff.next_attempt_ms =
            fsa_backoff_cycle_due(ss->backoff.next_attempt_ms, fs->port.wall_now(fs->port.ctx).ms);
    return st;
}

fsa_status_t fsl__status_read(fieldsync_t *fs, fieldsync_sync_status_t *s)
{
    uint32_t size = s->size;
    memset(s, 0, sizeof *s);
    s->size = size;
    fsa_outbox_stats_t os;
    int64_t last_error = 0;
    char *msg = NULL;
    fsa_sync_state_t ss;
    fsa_status_t st = fsa_outbox_stats(fs->j, &os);
    if (st == FSA_OK)
        st = sync_state(fs, &ss);
    if (st == FSA_OK) {
        s->last_sync_ms = ss.last_sync_ms;
        s->clock_offset_ms = ss.clock_offset_ms;
        st = fsa_journal_last_error_get(fs->j, &last_error, &msg);
    }
    if (st != FSA_OK) {
        fsa_model_free(msg);
        return st;
    }
    int64_t now = fs->port.wall_now(fs->port.ctx).ms;
    s->next_attempt_ms = ss.backoff.next_attempt_ms;
    s->queue_depth = os.pending;
    s->open_conflicts = os.conflicts + os.rejected;
    if (os.pending > 0 && os.oldest_pending_at_ms > 0 && now > os.oldest_pending_at_ms)
        s->oldest_pending_age_ms = now - os.oldest_pending_at_ms;
    s->last_error = last_error >= 0 && last_error < FSA__STATUS_COUNT
                        ? fsl__status((fsa_status_t)last_error)
                        : FIELDSYNC_EIO;
    snprintf(s->last_error_msg, sizeof s->last_error_msg, "%s", msg != NULL ? msg : "");
    fsa_one_line(s->last_error_msg); /* stored by any process, quoting the server */
    fsa_model_free(msg);
    int64_t stall = fsl__stall_after_ms(fs); /* a reload's, after one */
    if (s->last_error == FIELDSYNC_EAUTH) {
        s->state = FIELDSYNC_STATE_ATTENTION;
        snprintf(s->reason, sizeof s->reason, "the server refused this device's credentials");
    } else if (s->next_attempt_ms > now) {
        s->state = FIELDSYNC_STATE_OFFLINE;
        snprintf(s->reason, sizeof s->reason, "backing off: next attempt in %" PRId64 " s",
                 (s->next_attempt_ms - now + 999) / 1000);
    } else {
        s->state = FIELDSYNC_STATE_IDLE;
        if (os.pending > 0)
            snprintf(s->reason, sizeof s->reason, "%" PRId64 " ops pending", os.pending);
        else
            snprintf(s->reason, sizeof s->reason, "up to date");
    }
    /* The watchdog's view: old ops while the server answers (no backoff, no error). */
    s->stalled = s->state == FIELDSYNC_STATE_IDLE && s->last_error == FIELDSYNC_OK &&
                 s->oldest_pending_age_ms > stall;
    return FSA_OK;
}

#define SEND(m) (offsetof(fieldsync_sync_status_t, m) + sizeof(((fieldsync_sync_status_t *)0)->m))

fieldsync_status_t fieldsync_status(fieldsync_t *fs, fieldsync_sync_status_t *out)
{
    if (!fsl__usable(fs)) {
        if (out != NULL)
            fsl__zero_sized(out, out->size);
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    }
    if (out == NULL)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "fieldsync_status: out is NULL");
    /* A caller's size from an older header holds at least the state; a newer one's larger
     * struct gets its unknown tail zeroed. */
    uint32_t size = out->size;
    if (size < SEND(state)) {
        fsl__zero_sized(out, size);
        return fsl__fail(fs, FIELDSYNC_EINVAL,
                         "fieldsync_status: out->size %u is too small (set it to "
                         "sizeof(fieldsync_sync_status_t))",
                         (unsigned)size);
    }
    fieldsync_sync_status_t s;
    memset(&s, 0, sizeof s);
    s.size = size;
    fsa_status_t st = fsl__status_read(fs, &s);
    if (st != FSA_OK) {
        fsl__zero_sized(out, size);
        return fsl__fail(fs, fsl__status(st), "cannot read the status: %s", fsa_status_str(st));
    }
    fsl__worker_overlay(fs, &s);
    if (size > sizeof s)
        memset((char *)out + sizeof s, 0, size - sizeof s);
    memcpy(out, &s, size < sizeof s ? size : sizeof s);
    out->size = size;
    return fsl__ok(fs);
}

/* ---- conflicts ---- */

typedef struct conflict_walk {
    fsl_jb_t b;
    size_t n;
} conflict_walk_t;

/* The format of `fieldsync conflicts --json` (kept: scripts read it). */
static bool conflict_one(void *arg, const fsa_conflict_t *c)
{
    conflict_walk_t *w = arg;
    fsl_jb_t *b = &w->b;
    fsl__jb_raw(b, w->n > 0 ? ",{\"op_id\":" : "{\"op_id\":");
    fsl__jb_str(b, c->op.op_id);
    fsl__jb_fmt(b, ",\"seq\":%" PRId64 ",\"kind\":", c->op.seq);
    fsl__jb_str(b, fsa_op_kind_name(c->op.kind));
    fsl__jb_raw(b, ",\"type\":");
    fsl__jb_str(b, fsa_type_name(c->op.type));
    fsl__jb_raw(b, ",\"id\":");
    fsl__jb_str(b, c->op.id);
    fsl__jb_raw(b, ",\"outcome\":");
    fsl__jb_str(b, fsa_conflict_outcome_name(c->outcome));
    fsl__jb_raw(b, ",\"code\":");
    fsl__jb_str(b, c->code);
    fsl__jb_raw(b, ",\"reason\":");
    fsl__jb_str(b, c->reason);
    fsl__jb_raw(b, ",\"decision\":");
    fsl__jb_str(b, fsa_conflict_decision_name(c->decision));
    fsl__jb_raw(b, ",\"resolution\":");
    fsl__jb_str(b, c->resolution != FSA_RESOLVED_NONE ? fsa_conflict_resolution_name(c->resolution)
                                                      : NULL);
    fsl__jb_fmt(b, ",\"server_version\":%" PRId64 ",\"server_fields\":", c->server_version);
    fsl__jb_raw(b, c->server_fields != NULL ? c->server_fields : "null");
    fsl__jb_raw(b, ",\"local\":");
    fsl__jb_raw(b, c->op.json != NULL ? c->op.json : "null");
    fsl__jb_raw(b, "}");
    w->n++;
    return b->st == FSA_OK;
}

fieldsync_status_t fieldsync_conflicts(fieldsync_t *fs, bool all, char **json)
{
    READ_START(json);
    conflict_walk_t w;
    memset(&w, 0, sizeof w);
    fsl__jb_raw(&w.b, "[");
    fsa_status_t st = fsa_conflicts_each(fs->j, all, conflict_one, &w);
    fsl__jb_raw(&w.b, "]");
    if (st != FSA_OK) {
        char *drop = NULL;
        (void)fsl__jb_take(&w.b, &drop);
        fsa_free(drop);
        return fsl__fail(fs, fsl__status(st), "cannot read conflicts: %s", fsa_status_str(st));
    }
    return answer(fs, &w.b, json, "fieldsync_conflicts");
}

fieldsync_status_t fieldsync_conflict_resolve(fieldsync_t *fs, const char *op_id, bool take_local,
                                              fieldsync_rec_t *rec)
{
    if (rec != NULL)
        memset(rec, 0, sizeof *rec);
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    if (op_id == NULL || op_id[0] == '\0' || strlen(op_id) >= FSA_OP_ID_BYTES)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "conflict: '%.40s' is not an op id",
                         op_id != NULL ? op_id : "(null)");
    fsa_rec_t r;
    memset(&r, 0, sizeof r);
    fsa_status_t st = fsa_conflict_resolve(
        fs->j, op_id, take_local, take_local ? FSA_RESOLVED_LOCAL : FSA_RESOLVED_SERVER, &r);
    if (st == FSA_ENOTFOUND && r.error[0] == '\0')
        return fsl__fail(fs, FIELDSYNC_ENOTFOUND, "no open conflict with op id %s", op_id);
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "%s", r.error[0] ? r.error : fsa_status_str(st));
    if (rec != NULL) {
        snprintf(rec->op_id, sizeof rec->op_id, "%s", r.op_id);
        rec->seq = r.seq;
    }
    return fsl__ok(fs);
}

/* ---- the device's figures ---- */

fieldsync_status_t fieldsync_info(fieldsync_t *fs, char **json)
{
    READ_START(json);
    fsa_outbox_stats_t s;
    fsa_sync_state_t ss = {0};
    fsa_status_t st = fsa_outbox_stats(fs->j, &s);
    if (st == FSA_OK)
        st = sync_state(fs, &ss);
    int64_t last = ss.last_sync_ms, next = ss.backoff.next_attempt_ms;
    int64_t offset = ss.clock_offset_ms, failures = ss.backoff.failures;
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "cannot read %s: %s", fs->cfg.journal_path,
                         fsa_status_str(st));
    /* The server in effect: after a reload, the one it read. */
    fsl_config_t now;
    st = fsl__config_now(fs, &now);
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "fieldsync_info: %s", fsa_status_str(st));
    /* The format of `fieldsync status --json` before the library (scripts read it). */
    fsl_jb_t b = {0};
    fsl__jb_raw(&b, "{\"device_id\":");
    fsl__jb_str(&b, now.device_id);
    fsl__jb_raw(&b, ",\"server\":");
    fsl__jb_str(&b, now.server_url);
    fsl__config_clear(&now);
    fsl__jb_fmt(&b,
                ",\"pending\":%" PRId64 ",\"inflight\":%" PRId64 ",\"conflicts\":%" PRId64
                ",\"rejected\":%" PRId64 ",\"oldest_pending_at_ms\":%" PRId64
                ",\"last_seq\":%" PRId64,
                s.pending, s.inflight, s.conflicts, s.rejected, s.oldest_pending_at_ms, s.last_seq);
    fsl__jb_fmt(&b,
                ",\"last_sync_ms\":%" PRId64 ",\"next_attempt_ms\":%" PRId64
                ",\"sync_failures\":%" PRId64 ",\"clock_offset_ms\":%" PRId64 "}",
                last, next, failures, offset);
    return answer(fs, &b, json, "fieldsync_info");
}
