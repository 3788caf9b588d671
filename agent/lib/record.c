/* libfieldsync: recording: the platform's workflow verbs under their named locks, the generic op
 * builder, and the named-lock API. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "agent/lib/internal.h"
#include "port/alloc.h"
#include "sync/codec.h"

#define LOCK_MAGIC 0x46534c4bu /* "FSLK" */
/* A buffer for any lock's resource and its NUL: a resource is shorter than its key. */
#define RESOURCE_BYTES FSA_LIMIT_LOCK_KEY_BYTES

struct fieldsync_lock {
    uint32_t magic;
    fieldsync_t *fs;
    fsa_lock_kind_t kind;
    char resource[RESOURCE_BYTES];
    fsa_lock_t l;
};

/* ---- lock times: the platform's, or a test's ---- */

static _Atomic int64_t test_lease_ns[FSA__LOCK_KIND_COUNT];
static _Atomic int64_t test_wait_ns[FSA__LOCK_KIND_COUNT];

void fsl__test_lock_times(fsa_lock_kind_t kind, int64_t lease_ns, int64_t wait_ns)
{
    if ((unsigned)kind >= FSA__LOCK_KIND_COUNT)
        return;
    atomic_store(&test_lease_ns[kind], lease_ns > 0 ? lease_ns : 0);
    atomic_store(&test_wait_ns[kind], wait_ns > 0 ? wait_ns : 0);
}

/* fieldsync.h states the bounds that resource_max() gives, in bytes: a new key size is a new
 * promise to the app. */
_Static_assert(FSA_LIMIT_LOCK_KEY_BYTES == 192,
               "fieldsync.h states the resource bounds (fieldsync_lock_acquire, "
               "fieldsync_attendance) of a 192-byte key");

/* The longest resource of kind's lock: its key "NAME:resource" is at most
 * FSA_LIMIT_LOCK_KEY_BYTES bytes, so the bound is what the name leaves of that (172 bytes for
 * JOB_WORKFLOW_UPDATE, 174 for the other names). Checked here, so that a resource too long is an
 * argument refused with the bound named, not a lock that failed as too large. */
static size_t resource_max(fsa_lock_kind_t kind)
{
    return FSA_LIMIT_LOCK_KEY_BYTES - strlen(fsa_lock_config(kind)->name) - strlen(":");
}

static bool resource_ok(const char *r, size_t max)
{
    size_t n = r != NULL ? strlen(r) : 0;
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)r[i] < 0x20 || (unsigned char)r[i] > 0x7e)
            return false;
    return true;
}

/* Acquires kind's lock on resource. wait_ms: -1 the lock's own wait, 0 try once. The message of a
 * timeout names the holder: its label, pid, token and the lease it has left. */
static fieldsync_status_t take(fieldsync_t *fs, fsa_lock_kind_t kind, const char *resource,
                               int64_t wait_ms, fsa_lock_t *l)
{
    fsa_lock_config_t cfg = *fsa_lock_config(kind);
    int64_t lease = atomic_load(&test_lease_ns[kind]), wait = atomic_load(&test_wait_ns[kind]);
    if (lease > 0)
        cfg.lease_ns = lease;
    if (wait > 0)
        cfg.wait_ns = wait;
    if (wait_ms >= 0)
        cfg.wait_ns = wait_ms > INT64_MAX / FSA_NS_PER_MS ? INT64_MAX : wait_ms * FSA_NS_PER_MS;
    char err[320] = "";
    fsa_lockmgr_t *lm = NULL;
    fsa_status_t st = fsl__locks(fs, &lm, err, sizeof err);
    if (st == FSA_OK)
        st = fsa_lock_acquire_cfg(lm, &cfg, resource, l, err, sizeof err);
    if (st == FSA_OK)
        return FIELDSYNC_OK;
    bool held = strstr(err, "held by") != NULL;
    if (st == FSA_EBUSY && cfg.wait_ns == 0 && held)
        st = FSA_ELOCKTIMEOUT; /* try once: the same answer as a wait that ran out */
    if (st == FSA_ELOCKTIMEOUT) {
        char key[FSA_LOCK_KEY_BYTES];
        fsa_lock_stats_t *s = fsa_calloc(1, sizeof *s);
        int64_t left = -1;
        if (s != NULL && fsa_lock_key(cfg.name, resource, key, sizeof key) == FSA_OK &&
            fsa_lockmgr_stats(lm, s, NULL, 0) == FSA_OK)
            for (size_t i = 0; i < s->n_holders; i++)
                if (strcmp(s->holders[i].key, key) == 0)
                    left = s->holders[i].remaining_ns / FSA_NS_PER_MS;
        fsa_free(s);
        if (left >= 0)
            return fsl__fail(fs, FIELDSYNC_ELOCKTIMEOUT, "%s, %" PRId64 " ms of its lease left",
                             err, left);
    }
    return fsl__fail(fs, fsl__status(st), "%s", err[0] ? err : fsa_status_str(st));
}

/* ---- recording under a lock ---- */

typedef fsa_status_t (*record_fn)(fieldsync_t *fs, void *arg, const fsa_fence_t *fence,
                                  fsa_rec_t *rec);

static void rec_zero(fieldsync_rec_t *rec)
{
    if (rec != NULL)
        memset(rec, 0, sizeof *rec);
}

static fieldsync_status_t recorded(fieldsync_t *fs, fsa_status_t st, const fsa_rec_t *r,
                                   fieldsync_rec_t *rec)
{
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "%s", r->error[0] ? r->error : fsa_status_str(st));
    if (rec != NULL) {
        snprintf(rec->op_id, sizeof rec->op_id, "%s", r->op_id);
        rec->seq = r->seq;
    }
    return fsl__ok(fs);
}

/*
 * Records fn under kind's lock on "TYPE:ID" (resource): with the caller's lock when given (it
 * must be that lock), else with one taken here with the platform's lease and wait and released
 * after. A holder whose lease ran out and was taken over gets FIELDSYNC_EFENCED from the journal.
 */
static fieldsync_status_t guarded(fieldsync_t *fs, fsa_lock_kind_t kind, const char *resource,
                                  fieldsync_lock_t *lock, record_fn fn, void *arg,
                                  fieldsync_rec_t *rec)
{
    fsa_rec_t r;
    memset(&r, 0, sizeof r);
    if (lock != NULL) {
        if (lock->magic != LOCK_MAGIC || lock->fs != fs)
            return fsl__fail(fs, FIELDSYNC_EINVAL, "lock: not a lock held on this handle");
        if (lock->kind != kind || strcmp(lock->resource, resource) != 0)
            return fsl__fail(fs, FIELDSYNC_EINVAL,
                             "lock %s:%s is not this record's: it needs %s on \"%s\"",
                             fsa_lock_config(lock->kind)->name, lock->resource,
                             fsa_lock_config(kind)->name, resource);
        fsa_fence_t fence = fsa_lock_fence(&lock->l);
        return recorded(fs, fn(fs, arg, &fence, &r), &r, rec);
    }
    fsa_lock_t l;
    fieldsync_status_t ps = take(fs, kind, resource, -1, &l);
    if (ps != FIELDSYNC_OK)
        return ps;
    fsa_fence_t fence = fsa_lock_fence(&l);
    fsa_status_t st = fn(fs, arg, &fence, &r);
    /* A release that could not write (busy, I/O, memory) leaves the lock held until its lease
     * runs out, which would stall the next record of this entity: try it again at once. */
    char err[320];
    fsa_status_t rs = FSA_OK;
    for (int i = 0; i < 3; i++) {
        rs = fsa_lock_release(&l, err, sizeof err);
        if (rs != FSA_EBUSY && rs != FSA_EIO && rs != FSA_ENOMEM)
            break;
    }
    if (rs != FSA_OK && rs != FSA_ELOST)
        fsa_log(&fs->port, FSA_LOG_WARN, "releasing %s: %s", l.key, err);
    return recorded(fs, st, &r, rec);
}

/* "TYPE:ID" into buf; false (with the message set) when id is not an entity id. */
static bool resource_of(fieldsync_t *fs, const char *what, const char *id, char *buf, size_t cap)
{
    if (id == NULL || !fsa_model_id_valid(id)) {
        fsl__fail(fs, FIELDSYNC_EINVAL,
                  "invalid %s id '%.40s': 1-128 characters of A-Z a-z 0-9 . _ : -", what,
                  id != NULL ? id : "(null)");
        return false;
    }
    snprintf(buf, cap, "%s:%s", what, id);
    return true;
}

/* A JSON object argument: NULL gives dflt; else it must be one object within the limits. */
static bool object_arg(fieldsync_t *fs, const char *name, const char *json, const char *dflt,
                       const char **out)
{
    if (json == NULL) {
        if (dflt == NULL) {
            fsl__fail(fs, FIELDSYNC_EINVAL, "%s is NULL", name);
            return false;
        }
        *out = dflt;
        return true;
    }
    const char *p = json;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p != '{' || fsa_model_json_check(json, FSA_LIMIT_FIELDS_BYTES) != FSA_OK) {
        fsl__fail(fs, FIELDSYNC_EINVAL, "%s is not a JSON object: %.60s", name, json);
        return false;
    }
    *out = json;
    return true;
}

/* ---- the verbs ---- */

typedef struct verb_arg {
    fsa_type_t type;
    const char *id, *json, *to, *field;
    const fsa_op_t *ops;
    size_t n;
} verb_arg_t;

static fsa_status_t do_create(fieldsync_t *fs, void *arg, const fsa_fence_t *fence, fsa_rec_t *r)
{
    const verb_arg_t *a = arg;
    return fsa_journal_create(fs->j, a->type, a->id, a->json, fence, r);
}

static fsa_status_t do_set(fieldsync_t *fs, void *arg, const fsa_fence_t *fence, fsa_rec_t *r)
{
    const verb_arg_t *a = arg;
    return fsa_journal_set(fs->j, a->type, a->id, a->json, fence, r);
}

static fsa_status_t do_merge(fieldsync_t *fs, void *arg, const fsa_fence_t *fence, fsa_rec_t *r)
{
    const verb_arg_t *a = arg;
    return fsa_journal_merge(fs->j, a->type, a->id, a->field, a->json, fence, r);
}

static fsa_status_t do_transition(fieldsync_t *fs, void *arg, const fsa_fence_t *fence,
                                  fsa_rec_t *r)
{
    const verb_arg_t *a = arg;
    return fsa_journal_transition(fs->j, a->type, a->id, a->to, fence, r);
}

static fsa_status_t do_history(fieldsync_t *fs, void *arg, const fsa_fence_t *fence, fsa_rec_t *r)
{
    const verb_arg_t *a = arg;
    return fsa_journal_append(fs->j, FSA_TYPE_TICKET, a->id, "ticketlog", "ticket_history", a->json,
                              0, fence, r);
}

static fsa_status_t do_group(fieldsync_t *fs, void *arg, const fsa_fence_t *fence, fsa_rec_t *r)
{
    const verb_arg_t *a = arg;
    return fsa_journal_record_group(fs->j, a->ops, a->n, fence, r);
}

static fsa_status_t do_checkpoint(fieldsync_t *fs, void *arg, const fsa_fence_t *fence,
                                  fsa_rec_t *r)
{
    const verb_arg_t *a = arg;
    return fsa_journal_checkpoint_update(fs->j, a->id, a->json, fence, r);
}

fieldsync_status_t fieldsync_attendance(fieldsync_t *fs, bool checkin, const char *people_id,
                                        const char *site_id, const fieldsync_position_t *pos,
                                        const char *id, fieldsync_lock_t *lock,
                                        fieldsync_rec_t *rec)
{
    rec_zero(rec);
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    if (people_id == NULL || people_id[0] == '\0' || site_id == NULL || site_id[0] == '\0')
        return fsl__fail(fs, FIELDSYNC_EINVAL, "attendance needs a people_id and a site_id");
    /* Bounded before any copy: a string over the journal's bound is refused as it would be
     * there, not after a buffer six times its size (or ETOOLARGE past 64 MiB). */
    if (strnlen(site_id, FSA_LIMIT_STRING_BYTES + 1) > FSA_LIMIT_STRING_BYTES)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "attendance: the site_id is over %d bytes",
                         FSA_LIMIT_STRING_BYTES);
    if (pos != NULL) {
        if (!isfinite(pos->lat) || pos->lat < -90 || pos->lat > 90)
            return fsl__fail(fs, FIELDSYNC_EINVAL, "latitude %g is not in -90..90", pos->lat);
        if (!isfinite(pos->lon) || pos->lon < -180 || pos->lon > 180)
            return fsl__fail(fs, FIELDSYNC_EINVAL, "longitude %g is not in -180..180", pos->lon);
        if (isnan(pos->accuracy_m) || pos->accuracy_m > 1e7)
            return fsl__fail(fs, FIELDSYNC_EINVAL, "accuracy %g m is not a distance",
                             pos->accuracy_m);
    }
    char uuid[FSA_UUID_STR_LEN];
    if (id == NULL) {
        if (fsa_uuid4(&fs->port, uuid) != FSA_OK)
            return fsl__fail(fs, FIELDSYNC_EIO, "cannot make an attendance id: no random source");
        id = uuid;
    } else if (!fsa_model_id_valid(id)) {
        return fsl__fail(fs, FIELDSYNC_EINVAL, "invalid attendance id '%.40s'", id);
    }
    char resource[RESOURCE_BYTES];
    size_t people_max = resource_max(FSA_LOCK_ATTENDANCE_UPDATE) - strlen("people:");
    if (!resource_ok(people_id, people_max))
        return fsl__fail(fs, FIELDSYNC_EINVAL,
                         "people_id must be 1..%zu printable ASCII characters (its lock's key "
                         "ATTENDANCE_UPDATE:people:PEOPLE_ID is at most %d bytes)",
                         people_max, FSA_LIMIT_LOCK_KEY_BYTES);
    snprintf(resource, sizeof resource, "people:%s", people_id);
    /* The check-in's time: never an uncorrected one (the journal's offset unreadable). */
    fsa_wall_t now;
    fsa_status_t st = fsa_journal_now_checked(fs->j, &now);
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "attendance: the clock offset: %s",
                         fsa_status_str(st));

    fsl_jb_t b = {0};
    fsl__jb_raw(&b, "{\"people_id\":");
    fsl__jb_str(&b, people_id);
    fsl__jb_raw(&b, ",\"site_id\":");
    fsl__jb_str(&b, site_id);
    fsl__jb_fmt(&b, ",\"kind\":\"%s\",\"at\":%" PRId64, checkin ? "checkin" : "checkout", now.ms);
    if (pos != NULL) {
        fsl__jb_fmt(&b, ",\"lat\":%.7f,\"lon\":%.7f", pos->lat, pos->lon);
        if (pos->accuracy_m >= 0)
            fsl__jb_fmt(&b, ",\"accuracy_m\":%.2f", pos->accuracy_m);
        else
            fsl__jb_raw(&b, ",\"accuracy_m\":null");
    } else {
        fsl__jb_raw(&b, ",\"lat\":null,\"lon\":null,\"accuracy_m\":null");
    }
    fsl__jb_raw(&b, "}");
    char *fields = NULL;
    st = fsl__jb_take(&b, &fields);
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "attendance: %s", fsa_status_str(st));
    verb_arg_t a = {.type = FSA_TYPE_ATTENDANCE, .id = id, .json = fields};
    fieldsync_status_t ps =
        guarded(fs, FSA_LOCK_ATTENDANCE_UPDATE, resource, lock, do_create, &a, rec);
    fsa_free(fields);
    return ps;
}

/* Common start of the verbs on one entity: a usable handle, a valid id, the lock's resource. */
#define VERB_START(what, id, resource)                                                             \
    do {                                                                                           \
        rec_zero(rec);                                                                             \
        if (!fsl__usable(fs))                                                                      \
            return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;                              \
        if (!resource_of(fs, what, id, resource, sizeof(resource)))                                \
            return FIELDSYNC_EINVAL;                                                               \
    } while (0)

static fieldsync_status_t create_verb(fieldsync_t *fs, fsa_type_t type, const char *id,
                                      const char *fields_json, fieldsync_rec_t *rec)
{
    char resource[RESOURCE_BYTES];
    VERB_START(fsa_type_name(type), id, resource);
    const char *fields;
    if (!object_arg(fs, "fields_json", fields_json, "{}", &fields))
        return FIELDSYNC_EINVAL;
    fsa_rec_t r;
    memset(&r, 0, sizeof r);
    return recorded(fs, fsa_journal_create(fs->j, type, id, fields, NULL, &r), &r, rec);
}

fieldsync_status_t fieldsync_job_create(fieldsync_t *fs, const char *id, const char *fields_json,
                                        fieldsync_rec_t *rec)
{
    return create_verb(fs, FSA_TYPE_JOBNEED, id, fields_json, rec);
}

fieldsync_status_t fieldsync_ticket_create(fieldsync_t *fs, const char *id, const char *fields_json,
                                           fieldsync_rec_t *rec)
{
    return create_verb(fs, FSA_TYPE_TICKET, id, fields_json, rec);
}

fieldsync_status_t fieldsync_job_set(fieldsync_t *fs, const char *id, const char *fields_json,
                                     fieldsync_lock_t *lock, fieldsync_rec_t *rec)
{
    char resource[RESOURCE_BYTES];
    VERB_START("jobneed", id, resource);
    verb_arg_t a = {.type = FSA_TYPE_JOBNEED, .id = id};
    if (!object_arg(fs, "fields_json", fields_json, NULL, &a.json))
        return FIELDSYNC_EINVAL;
    return guarded(fs, FSA_LOCK_JOB_WORKFLOW_UPDATE, resource, lock, do_set, &a, rec);
}

fieldsync_status_t fieldsync_job_merge(fieldsync_t *fs, const char *id, const char *patch_json,
                                       fieldsync_lock_t *lock, fieldsync_rec_t *rec)
{
    char resource[RESOURCE_BYTES];
    VERB_START("jobneed", id, resource);
    verb_arg_t a = {.type = FSA_TYPE_JOBNEED, .id = id, .field = "other_info"};
    if (!object_arg(fs, "patch_json", patch_json, NULL, &a.json))
        return FIELDSYNC_EINVAL;
    return guarded(fs, FSA_LOCK_JSON_FIELD_UPDATE, resource, lock, do_merge, &a, rec);
}

fieldsync_status_t fieldsync_job_transition(fieldsync_t *fs, const char *id, const char *to,
                                            fieldsync_lock_t *lock, fieldsync_rec_t *rec)
{
    char resource[RESOURCE_BYTES];
    VERB_START("jobneed", id, resource);
    if (to == NULL || to[0] == '\0')
        return fsl__fail(fs, FIELDSYNC_EINVAL, "job %s: no target status", id);
    verb_arg_t a = {.type = FSA_TYPE_JOBNEED, .id = id, .to = to};
    return guarded(fs, FSA_LOCK_JOB_WORKFLOW_UPDATE, resource, lock, do_transition, &a, rec);
}

fieldsync_status_t fieldsync_ticket_transition(fieldsync_t *fs, const char *id, const char *to,
                                               fieldsync_lock_t *lock, fieldsync_rec_t *rec)
{
    char resource[RESOURCE_BYTES];
    VERB_START("ticket", id, resource);
    if (to == NULL || to[0] == '\0')
        return fsl__fail(fs, FIELDSYNC_EINVAL, "ticket %s: no target status", id);
    verb_arg_t a = {.type = FSA_TYPE_TICKET, .id = id, .to = to};
    return guarded(fs, FSA_LOCK_TICKET_ESCALATION, resource, lock, do_transition, &a, rec);
}

fieldsync_status_t fieldsync_ticket_log(fieldsync_t *fs, const char *id, const char *item_json,
                                        fieldsync_lock_t *lock, fieldsync_rec_t *rec)
{
    char resource[RESOURCE_BYTES];
    VERB_START("ticket", id, resource);
    if (item_json == NULL || fsa_model_json_check(item_json, FSA_LIMIT_FIELDS_BYTES) != FSA_OK)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "ticket %s: the history item is not JSON: %.60s", id,
                         item_json != NULL ? item_json : "(null)");
    verb_arg_t a = {.type = FSA_TYPE_TICKET, .id = id, .json = item_json};
    return guarded(fs, FSA_LOCK_JSON_FIELD_UPDATE, resource, lock, do_history, &a, rec);
}

fieldsync_status_t fieldsync_ticket_escalate(fieldsync_t *fs, const char *id, const char *to,
                                             const char *note, fieldsync_lock_t *lock,
                                             fieldsync_rec_t *rec)
{
    char resource[RESOURCE_BYTES];
    VERB_START("ticket", id, resource);
    /* A person's id, as an attendance's people_id: "" would unassign the ticket, and a control
     * character has no place in it. */
    if (to != NULL && !resource_ok(to, FSA_ID_BYTES - 1))
        return fsl__fail(fs, FIELDSYNC_EINVAL,
                         "ticket %s: the person to escalate to must be 1..%d printable ASCII "
                         "characters",
                         id, FSA_ID_BYTES - 1);
    if (note != NULL && note[0] == '\0')
        return fsl__fail(fs, FIELDSYNC_EINVAL, "ticket %s: the note is empty (NULL for none)", id);
    if (note != NULL && strnlen(note, FSA_LIMIT_STRING_BYTES + 1) > FSA_LIMIT_STRING_BYTES)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "ticket %s: the note is over %d bytes", id,
                         FSA_LIMIT_STRING_BYTES);
    /* As one group: level + 1, the history entry, and the new assignee when given. */
    fsa_wall_t now;
    fsa_status_t st = fsa_journal_now_checked(fs->j, &now);
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "ticket %s: the clock offset: %s", id,
                         fsa_status_str(st));
    fsl_jb_t item = {0}, assign = {0};
    fsl__jb_fmt(&item, "{\"action\":\"escalated\",\"at\":%" PRId64, now.ms);
    if (to != NULL) {
        fsl__jb_raw(&item, ",\"to\":");
        fsl__jb_str(&item, to);
        fsl__jb_raw(&assign, "{\"assignedto\":");
        fsl__jb_str(&assign, to);
        fsl__jb_raw(&assign, "}");
    }
    if (note != NULL) {
        fsl__jb_raw(&item, ",\"note\":");
        fsl__jb_str(&item, note);
    }
    fsl__jb_raw(&item, "}");
    char *item_json = NULL, *assign_json = NULL;
    st = fsl__jb_take(&item, &item_json);
    fsa_status_t st2 = fsl__jb_take(&assign, &assign_json);
    if (st == FSA_OK)
        st = st2;
    if (st != FSA_OK) {
        fsa_free(item_json);
        fsa_free(assign_json);
        return fsl__fail(fs, fsl__status(st), "ticket %s: escalation: %s", id, fsa_status_str(st));
    }
    fsa_op_t ops[3];
    memset(ops, 0, sizeof ops);
    size_t k = 0;
    ops[k] = (fsa_op_t){.kind = FSA_OP_INCREMENT, .type = FSA_TYPE_TICKET, .by = 1};
    snprintf(ops[k].field, sizeof ops[k].field, "level");
    k++;
    ops[k] = (fsa_op_t){.kind = FSA_OP_APPEND, .type = FSA_TYPE_TICKET, .json = item_json};
    snprintf(ops[k].field, sizeof ops[k].field, "ticketlog");
    snprintf(ops[k].key, sizeof ops[k].key, "ticket_history");
    k++;
    if (to != NULL) {
        ops[k] = (fsa_op_t){.kind = FSA_OP_SET, .type = FSA_TYPE_TICKET, .json = assign_json};
        k++;
    }
    for (size_t i = 0; i < k; i++)
        snprintf(ops[i].id, sizeof ops[i].id, "%s", id);
    verb_arg_t a = {.ops = ops, .n = k};
    fieldsync_status_t ps =
        guarded(fs, FSA_LOCK_TICKET_ESCALATION, resource, lock, do_group, &a, rec);
    fsa_free(item_json);
    fsa_free(assign_json);
    return ps;
}

/* The tour of checkpoint child_id into tour (FSA_ID_BYTES). */
static fieldsync_status_t tour_of(fieldsync_t *fs, const char *child_id, char *tour)
{
    char *fields = NULL, *parent = NULL;
    fsa_status_t st = fsa_journal_get(fs->j, FSA_TYPE_JOBNEED, child_id, &fields, NULL, NULL);
    if (st == FSA_ENOTFOUND)
        return fsl__fail(fs, FIELDSYNC_ENOTFOUND, "no jobneed %s in this journal", child_id);
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "cannot read jobneed %s: %s", child_id,
                         fsa_status_str(st));
    st = fsa_model_get_field(fields, "parent_id", &parent);
    fsa_model_free(fields);
    fieldsync_status_t ps = FIELDSYNC_OK;
    size_t n = parent != NULL ? strlen(parent) : 0;
    /* An id is plain [A-Za-z0-9._:-]: its JSON string is the id in quotes. */
    if (st == FSA_ENOMEM)
        ps = fsl__fail(fs, FIELDSYNC_ENOMEM, "out of memory");
    else if (n < 3 || parent[0] != '"' || parent[n - 1] != '"' || n - 2 >= FSA_ID_BYTES)
        ps = fsl__fail(fs, FIELDSYNC_EINVAL,
                       "jobneed %s is not a checkpoint: it has no tour "
                       "(parent_id)",
                       child_id);
    else {
        memcpy(tour, parent + 1, n - 2);
        tour[n - 2] = '\0';
        if (!fsa_model_id_valid(tour))
            ps =
                fsl__fail(fs, FIELDSYNC_EINVAL, "jobneed %s: its parent_id is not an id", child_id);
    }
    fsa_model_free(parent);
    return ps;
}

fieldsync_status_t fieldsync_checkpoint_update(fieldsync_t *fs, const char *child_id,
                                               const char *fields_json, fieldsync_lock_t *lock,
                                               fieldsync_rec_t *rec)
{
    char resource[RESOURCE_BYTES];
    VERB_START("jobneed", child_id, resource);
    verb_arg_t a = {.id = child_id};
    if (!object_arg(fs, "fields_json", fields_json, NULL, &a.json))
        return FIELDSYNC_EINVAL;
    char tour[FSA_ID_BYTES];
    fieldsync_status_t ps = tour_of(fs, child_id, tour);
    if (ps != FIELDSYNC_OK)
        return ps;
    snprintf(resource, sizeof resource, "jobneed:%s", tour);
    return guarded(fs, FSA_LOCK_JOB_WORKFLOW_UPDATE, resource, lock, do_checkpoint, &a, rec);
}

/* ---- tour update ---- */

#define TOUR_CHILDREN_MAX (FSA_JOURNAL_GROUP_MAX - 1) /* and the tour's touch */

/* The checkpoints are read in pages of this many, in id order. */
#define TOUR_PAGE 64

typedef struct tour_walk {
    char ids[TOUR_CHILDREN_MAX + 1][FSA_ID_BYTES];
    size_t n;
    bool more;               /* more than TOUR_CHILDREN_MAX */
    size_t seen;             /* checkpoints of this page, terminal ones too */
    char last[FSA_ID_BYTES]; /* the id of the last one: the next page starts after it */
} tour_walk_t;

static bool tour_child(void *arg, fsa_type_t type, const char *id, const char *fields_json,
                       int64_t base_version, int64_t pending, int64_t open_conflicts)
{
    (void)base_version;
    (void)pending;
    (void)open_conflicts;
    tour_walk_t *w = arg;
    w->seen++;
    snprintf(w->last, sizeof w->last, "%s", id);
    char status[FSA_STATUS_BYTES];
    if (fsa_model_get_status(fields_json, type, status) == FSA_OK &&
        fsa_model_status_terminal(type, status))
        return true;
    if (w->n == TOUR_CHILDREN_MAX) {
        w->more = true;
        return false;
    }
    snprintf(w->ids[w->n++], FSA_ID_BYTES, "%s", id);
    return true;
}

typedef struct tour_arg {
    const char *tour, *fields;
    size_t updated;
} tour_arg_t;

static fsa_status_t do_tour(fieldsync_t *fs, void *arg, const fsa_fence_t *fence, fsa_rec_t *r)
{
    /* Listed under the lock, so the set of checkpoints is the one the group changes. */
    tour_arg_t *a = arg;
    tour_walk_t *w = fsa_calloc(1, sizeof *w);
    if (w == NULL)
        return FSA_ENOMEM;
    /* Page by page, to the last checkpoint: one page of FSA_LIST_MAX missed the open ones of a
     * tour whose first thousand by id were done. */
    fsa_entity_filter_t f = {.type = FSA_TYPE_JOBNEED, .parent_id = a->tour, .limit = TOUR_PAGE};
    char after[FSA_ID_BYTES] = "";
    fsa_status_t st = FSA_OK;
    do {
        w->seen = 0;
        f.after_id = after[0] != '\0' ? after : NULL;
        st = fsa_journal_list(fs->j, &f, tour_child, w);
        memcpy(after, w->last, sizeof after);
    } while (st == FSA_OK && !w->more && w->seen == TOUR_PAGE);
    if (st == FSA_OK && w->more) {
        snprintf(r->error, sizeof r->error,
                 "tour %s has more than %d checkpoints not in a terminal state: at most %d in "
                 "one group",
                 a->tour, TOUR_CHILDREN_MAX, TOUR_CHILDREN_MAX);
        st = FSA_ETOOLARGE;
    }
    if (st != FSA_OK || w->n == 0) {
        fsa_free(w);
        return st;
    }
    fsa_wall_t now;
    st = fsa_journal_now_checked(fs->j, &now);
    if (st != FSA_OK) {
        fsa_free(w);
        return st;
    }
    char touch[FSA_ID_BYTES + 96];
    snprintf(touch, sizeof touch, "{\"last_checkpoint\":\"%s\",\"last_checkpoint_at\":%" PRId64 "}",
             w->ids[w->n - 1], now.ms);
    char *fields = fsa_strdup(a->fields); /* one copy, shared by the sets (not modified) */
    if (fields == NULL) {
        fsa_free(w);
        return FSA_ENOMEM;
    }
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    memset(ops, 0, sizeof ops);
    for (size_t i = 0; i < w->n; i++) {
        ops[i] = (fsa_op_t){.kind = FSA_OP_SET, .type = FSA_TYPE_JOBNEED, .json = fields};
        snprintf(ops[i].id, sizeof ops[i].id, "%s", w->ids[i]);
    }
    ops[w->n] = (fsa_op_t){.kind = FSA_OP_MERGE, .type = FSA_TYPE_JOBNEED, .json = touch};
    snprintf(ops[w->n].id, sizeof ops[w->n].id, "%s", a->tour);
    snprintf(ops[w->n].field, sizeof ops[w->n].field, "other_info");
    st = fsa_journal_record_group(fs->j, ops, w->n + 1, fence, r);
    if (st == FSA_OK)
        a->updated = w->n;
    fsa_free(fields);
    fsa_free(w);
    return st;
}

fieldsync_status_t fieldsync_tour_update(fieldsync_t *fs, const char *tour_id,
                                         const char *fields_json, fieldsync_lock_t *lock,
                                         size_t *updated, fieldsync_rec_t *rec)
{
    if (updated != NULL)
        *updated = 0;
    char resource[RESOURCE_BYTES];
    VERB_START("jobneed", tour_id, resource);
    tour_arg_t a = {.tour = tour_id};
    if (!object_arg(fs, "fields_json", fields_json, NULL, &a.fields))
        return FIELDSYNC_EINVAL;
    char *fields = NULL, *parent = NULL;
    fsa_status_t st = fsa_journal_get(fs->j, FSA_TYPE_JOBNEED, tour_id, &fields, NULL, NULL);
    if (st == FSA_ENOTFOUND)
        return fsl__fail(fs, FIELDSYNC_ENOTFOUND, "no jobneed %s in this journal", tour_id);
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "cannot read jobneed %s: %s", tour_id,
                         fsa_status_str(st));
    /* A checkpoint has a tour (parent_id, a string); a tour has none (null). A checkpoint's id
     * here found no checkpoints of its own, and recorded nothing with FIELDSYNC_OK. */
    st = fsa_model_get_field(fields, "parent_id", &parent);
    fsa_model_free(fields);
    bool checkpoint = st == FSA_OK && parent != NULL && parent[0] == '"';
    fsa_model_free(parent);
    if (st == FSA_ENOMEM)
        return fsl__fail(fs, FIELDSYNC_ENOMEM, "out of memory");
    if (checkpoint)
        return fsl__fail(fs, FIELDSYNC_EINVAL,
                         "jobneed %s is a checkpoint (it has a parent_id), not a tour", tour_id);
    fieldsync_status_t ps =
        guarded(fs, FSA_LOCK_JOB_WORKFLOW_UPDATE, resource, lock, do_tour, &a, rec);
    if (ps == FIELDSYNC_OK && updated != NULL)
        *updated = a.updated;
    return ps;
}

/* ---- the generic op builder ---- */

/* The envelope the journal fills in for real; the codec's decoder wants them present. */
static const char OP_PREFIX[] = "\"op_id\":\"00000000-0000-4000-8000-000000000000\",\"seq\":1,"
                                "\"at\":0,\"base_version\":0,\"from\":\"NEW\"";

/*
 * Wraps ops_json (one op object, or an array of them) in a push body for the codec's decoder,
 * adding the envelope members to each op object. A scan of strings and depth finds where each op
 * object opens; anything malformed is left for the decoder to refuse.
 */
static fsa_status_t wrap_ops(const char *ops_json, bool *array, char **out)
{
    const char *p = ops_json;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    *array = *p == '[';
    fsl_jb_t b = {0};
    fsl__jb_raw(&b, "{\"batch_id\":\"lib\",\"ops\":");
    if (!*array)
        fsl__jb_raw(&b, "[");
    int depth = 0;
    bool in_str = false, esc = false;
    const char *seg = ops_json;
    int op_depth = *array ? 1 : 0;
    for (const char *c = ops_json; *c; c++) {
        if (in_str) {
            if (esc)
                esc = false;
            else if (*c == '\\')
                esc = true;
            else if (*c == '"')
                in_str = false;
            continue;
        }
        if (*c == '"') {
            in_str = true;
        } else if (*c == '{' || *c == '[') {
            if (*c == '{' && depth == op_depth) {
                /* Copy through the brace, then the envelope, and a comma if members follow. */
                size_t n = (size_t)(c - seg) + 1;
                char *part = fsa_strndup(seg, n);
                if (part == NULL) {
                    b.st = FSA_ENOMEM;
                    break;
                }
                fsl__jb_raw(&b, part);
                fsa_free(part);
                fsl__jb_raw(&b, OP_PREFIX);
                const char *q = c + 1;
                while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
                    q++;
                if (*q != '}')
                    fsl__jb_raw(&b, ",");
                seg = c + 1;
            }
            depth++;
        } else if (*c == '}' || *c == ']') {
            depth--;
        }
    }
    fsl__jb_raw(&b, seg);
    fsl__jb_raw(&b, *array ? "}" : "]}");
    return fsl__jb_take(&b, out);
}

typedef struct generic_arg {
    fsa_op_t *ops;
    size_t n;
    bool group;
} generic_arg_t;

static fsa_status_t do_generic(fieldsync_t *fs, void *arg, const fsa_fence_t *fence, fsa_rec_t *r)
{
    const generic_arg_t *a = arg;
    if (a->group)
        return fsa_journal_record_group(fs->j, a->ops, a->n, fence, r);
    const fsa_op_t *op = &a->ops[0];
    switch (op->kind) {
    case FSA_OP_CREATE: return fsa_journal_create(fs->j, op->type, op->id, op->json, fence, r);
    case FSA_OP_SET: return fsa_journal_set(fs->j, op->type, op->id, op->json, fence, r);
    case FSA_OP_MERGE:
        return fsa_journal_merge(fs->j, op->type, op->id, op->field, op->json, fence, r);
    case FSA_OP_INCREMENT:
        return fsa_journal_increment(fs->j, op->type, op->id, op->field, op->by, fence, r);
    case FSA_OP_TRANSITION:
        return fsa_journal_transition(fs->j, op->type, op->id, op->to, fence, r);
    case FSA_OP_APPEND:
        return fsa_journal_append(fs->j, op->type, op->id, op->field, op->key, op->json,
                                  op->max_len, fence, r);
    default: snprintf(r->error, sizeof r->error, "unknown op kind"); return FSA_EINVAL;
    }
}

fieldsync_status_t fieldsync_record(fieldsync_t *fs, const char *ops_json, fieldsync_lock_t *lock,
                                    fieldsync_rec_t *rec)
{
    rec_zero(rec);
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    if (ops_json == NULL)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "ops_json is NULL");
    if (lock != NULL && (lock->magic != LOCK_MAGIC || lock->fs != fs))
        return fsl__fail(fs, FIELDSYNC_EINVAL, "lock: not a lock held on this handle");
    if (fsa_model_json_check(ops_json, FSA_LIMIT_FIELDS_BYTES) != FSA_OK)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "ops_json is not JSON within the limits: %.60s",
                         ops_json);
    bool array = false;
    char *body = NULL;
    fsa_status_t st = wrap_ops(ops_json, &array, &body);
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "ops_json: %s", fsa_status_str(st));
    fsa_codec_push_t push;
    fsa_model_err_t cerr;
    memset(&cerr, 0, sizeof cerr);
    /* The tree decoder: the same answers as the server's one-pass one (tested and fuzzed side by
     * side), and for the few ops of one record its speed buys nothing, while its code would take
     * the device binary past its size budget (docs/performance.md, Size). */
    st = fsa__codec_decode_push_tree(body, strlen(body), &push, &cerr);
    fsa_free(body);
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "ops_json: %s", cerr.message);
    fieldsync_status_t ps = FIELDSYNC_OK;
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    memset(ops, 0, sizeof ops);
    if (push.count == 0 || push.count > FSA_JOURNAL_GROUP_MAX) {
        ps = fsl__fail(fs, push.count == 0 ? FIELDSYNC_EINVAL : FIELDSYNC_ETOOLARGE,
                       "ops_json: %zu ops; 1 to %d in one record", push.count,
                       FSA_JOURNAL_GROUP_MAX);
        goto out;
    }
    for (size_t i = 0; i < push.count; i++) {
        const fsa_codec_op_t *o = &push.ops[i];
        if (o->reject.code[0] != '\0') {
            ps = fsl__fail(fs, FIELDSYNC_EINVAL, "ops[%zu]: %s", i, o->reject.message);
            goto out;
        }
        ops[i] = o->op; /* borrows json: push owns it */
        memset(ops[i].op_id, 0, sizeof ops[i].op_id);
        ops[i].seq = 0;
        ops[i].at_ms = 0;
        ops[i].group[0] = '\0';
        ops[i].base_version = 0;
        ops[i].from[0] = '\0';
    }
    generic_arg_t a = {.ops = ops, .n = push.count, .group = array};
    fsa_rec_t r;
    memset(&r, 0, sizeof r);
    if (lock != NULL) {
        fsa_fence_t fence = fsa_lock_fence(&lock->l);
        ps = recorded(fs, do_generic(fs, &a, &fence, &r), &r, rec);
    } else {
        ps = recorded(fs, do_generic(fs, &a, NULL, &r), &r, rec);
    }
out:
    fsa_codec_push_free(&push);
    return ps;
}

/* ---- the named-lock API ---- */

fieldsync_status_t fieldsync_lock_acquire(fieldsync_t *fs, const char *name, const char *resource,
                                          int64_t wait_ms, fieldsync_lock_t **out)
{
    if (out != NULL)
        *out = NULL;
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    if (out == NULL)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "fieldsync_lock_acquire: out is NULL");
    fsa_lock_kind_t kind;
    if (name == NULL || fsa_lock_kind_parse(name, &kind) != FSA_OK || kind == FSA_LOCK_SYNC)
        return fsl__fail(fs, FIELDSYNC_EINVAL,
                         "unknown lock '%.64s' (ATTENDANCE_UPDATE, JOB_WORKFLOW_UPDATE, "
                         "TICKET_ESCALATION, JSON_FIELD_UPDATE)",
                         name != NULL ? name : "(null)");
    if (!resource_ok(resource, resource_max(kind)))
        return fsl__fail(fs, FIELDSYNC_EINVAL,
                         "lock resource must be 1..%zu printable ASCII characters for %s (its key "
                         "NAME:resource is at most %d bytes)",
                         resource_max(kind), fsa_lock_config(kind)->name, FSA_LIMIT_LOCK_KEY_BYTES);
    if (wait_ms < -1)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "lock wait %" PRId64 " ms: -1, 0 or more", wait_ms);
    fieldsync_lock_t *l = fsa_calloc(1, sizeof *l);
    if (l == NULL)
        return fsl__fail(fs, FIELDSYNC_ENOMEM, "out of memory");
    fieldsync_status_t ps = take(fs, kind, resource, wait_ms, &l->l);
    if (ps != FIELDSYNC_OK) {
        fsa_free(l);
        return ps;
    }
    l->magic = LOCK_MAGIC;
    l->fs = fs;
    l->kind = kind;
    snprintf(l->resource, sizeof l->resource, "%s", resource);
    *out = l;
    return fsl__ok(fs);
}

fieldsync_status_t fieldsync_lock_token(const fieldsync_lock_t *l, int64_t *token)
{
    if (token != NULL)
        *token = 0;
    if (l == NULL || token == NULL || l->magic != LOCK_MAGIC)
        return FIELDSYNC_EINVAL;
    *token = l->l.token;
    return FIELDSYNC_OK;
}

fieldsync_status_t fieldsync_lock_release(fieldsync_lock_t *l)
{
    if (l == NULL)
        return FIELDSYNC_OK;
    if (l->magic != LOCK_MAGIC)
        return FIELDSYNC_EINVAL;
    fieldsync_t *fs = l->fs;
    char err[320] = "";
    fsa_status_t st = fsa_lock_release(&l->l, err, sizeof err);
    l->magic = 0;
    fsa_free(l);
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "%s", err[0] ? err : fsa_status_str(st));
    return fsl__ok(fs);
}

fieldsync_status_t fieldsync_lock_stats(fieldsync_t *fs, char **json)
{
    if (json != NULL)
        *json = NULL;
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    if (json == NULL)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "fieldsync_lock_stats: json is NULL");
    fsa_lock_stats_t *s = fsa_calloc(1, sizeof *s);
    if (s == NULL)
        return fsl__fail(fs, FIELDSYNC_ENOMEM, "out of memory");
    char err[320] = "";
    fsa_lockmgr_t *lm = NULL;
    fsa_status_t st = fsl__locks(fs, &lm, err, sizeof err);
    if (st == FSA_OK)
        st = fsa_lockmgr_stats(lm, s, err, sizeof err);
    size_t need = 0;
    char *buf = NULL;
    if (st == FSA_OK) {
        char probe[1];
        fsa_status_t js = fsa_lock_stats_json(s, probe, sizeof probe, &need);
        if (js != FSA_OK && js != FSA_ETOOLARGE)
            st = js;
    }
    if (st == FSA_OK) {
        buf = fsa_malloc(need + 1);
        if (buf == NULL)
            st = FSA_ENOMEM;
        else
            st = fsa_lock_stats_json(s, buf, need + 1, NULL);
    }
    fsa_free(s);
    if (st != FSA_OK) {
        fsa_free(buf);
        return fsl__fail(fs, fsl__status(st), "lock statistics: %s",
                         err[0] ? err : fsa_status_str(st));
    }
    *json = buf;
    return fsl__ok(fs);
}
