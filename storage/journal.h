/* fieldsync: the journal: entities with their base and local view, the outbox, conflicts, the
 * device's configuration and sync state. */
#ifndef FSA_STORAGE_JOURNAL_H
#define FSA_STORAGE_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port/port.h"
#include "storage/fence.h"
#include "storage/model.h"

/*
 * One SQLite file per device. Every recording call is one transaction that validates the op
 * against the model, applies it to the entity's local view and appends it to the outbox; it
 * returns only after the commit (synchronous=FULL by default), and then the op survives a power
 * cut. A journal handle may be shared by threads (calls are serialized on it); several
 * processes may open the same file at once (SQLite serializes their writes).
 *
 * Ownership: strings passed in are copied; strings handed out are malloc'ed and documented as
 * the caller's to fsa_free (with fsa_model_free).
 */

typedef struct fsa_journal fsa_journal_t;

typedef struct fsa_journal_opts {
    bool create;          /* create the file (mode 0600) when missing */
    bool sync_normal;     /* synchronous=NORMAL: faster, but a power cut may lose the last
                             commits (never corrupts); default FULL loses nothing */
    int64_t budget_bytes; /* disk budget; 0 = FSA_LIMIT_JOURNAL_BUDGET_BYTES; records stop an
                             eighth short of it (the rest is for syncing's writes) */
    int busy_timeout_ms;  /* 0 = FSA_LIMIT_BUSY_TIMEOUT_MS */
} fsa_journal_opts_t;

/* Outbox states, as stored (values are frozen). */
typedef enum fsa_op_state {
    FSA_OPSTATE_PENDING = 0,  /* waiting to be sent */
    FSA_OPSTATE_INFLIGHT = 1, /* sent at least once, no answer yet (resent as is: idempotent) */
    FSA_OPSTATE_DONE = 2,     /* applied (or duplicate of applied) on the server */
    FSA_OPSTATE_CONFLICT = 3, /* parked: precondition failed */
    FSA_OPSTATE_REJECTED = 4  /* parked: the server refused it for good */
} fsa_op_state_t;

/* What a recording call reports: the op_id and seq of its (first) op, or why it failed. */
typedef struct fsa_rec {
    char op_id[FSA_OP_ID_BYTES];
    int64_t seq;
    char error[320]; /* one line naming the problem; "" on FSA_OK */
} fsa_rec_t;

/*
 * Opens (or creates) the journal. port supplies the clocks, random (op ids) and logging; it must
 * outlive the journal. On FSA_OK *out is set; otherwise err (errlen bytes, may be NULL) holds one
 * line. Returns FSA_OK, FSA_EINVAL, FSA_ENOTFOUND, FSA_EIO, FSA_ESCHEMA, FSA_ECORRUPT,
 * FSA_ENOMEM.
 */
fsa_status_t fsa_journal_open(fsa_port_t *port, const char *path, const fsa_journal_opts_t *opts,
                              fsa_journal_t **out, char *err, size_t errlen) FSA_MUST_CHECK;

/* Closes the journal (NULL accepted). Marks a clean shutdown. */
void fsa_journal_close(fsa_journal_t *j);

/* The journal's path (owned by the journal). */
const char *fsa_journal_path(const fsa_journal_t *j);

/*
 * Fences every write the calling thread makes on a journal from now on with f (NULL: none),
 * whichever call makes it: each write transaction checks f first and is refused with
 * FSA_EFENCED, nothing written, once a later token has been issued for f->key. For work whose
 * writes many calls make, such as a sync cycle under the SYNC lock (results, pulled changes,
 * conflicts, the cursor, the backoff): once its lease has run out and another has taken the lock,
 * it writes nothing more. A record's own fence is checked as well. f is not copied: it must stay
 * valid while set. Returns the fence it replaces, so that code calling out to others (a listener)
 * can set NULL around the call and put it back. Per thread; never fails.
 */
const fsa_fence_t *fsa_journal_fence_thread(const fsa_fence_t *f);

/*
 * Recording. Each function is one transaction; on any failure nothing is written.
 * fence: NULL, or the fencing token of a lock held for this write (refused with FSA_EFENCED if a
 * later token was issued for its key). rec: may be NULL; receives op_id/seq or the error line.
 * Common statuses: FSA_OK; FSA_EINVAL (bad argument or value, rec->error names it);
 * FSA_ENOTFOUND (no such entity); FSA_EEXISTS (create of an existing entity);
 * FSA_ETRANSITION (rec->error names both states); FSA_EFULL (journal reached its budget:
 * "journal full"; or the device holding it has no space left: "disk full"); FSA_EFENCED;
 * FSA_EBUSY (another writer held the journal past the busy timeout); FSA_EIO; FSA_ENOMEM.
 */

/* create: fields_json is an object of the type's fields; absent ones take their defaults. */
fsa_status_t fsa_journal_create(fsa_journal_t *j, fsa_type_t type, const char *id,
                                const char *fields_json, const fsa_fence_t *fence,
                                fsa_rec_t *rec) FSA_MUST_CHECK;
/* set: fields_json is an object of settable fields; the op carries the version it expects. */
fsa_status_t fsa_journal_set(fsa_journal_t *j, fsa_type_t type, const char *id,
                             const char *fields_json, const fsa_fence_t *fence,
                             fsa_rec_t *rec) FSA_MUST_CHECK;
/* merge: an RFC 7396 patch (an object) into an object field. */
fsa_status_t fsa_journal_merge(fsa_journal_t *j, fsa_type_t type, const char *id, const char *field,
                               const char *patch_json, const fsa_fence_t *fence,
                               fsa_rec_t *rec) FSA_MUST_CHECK;
/* increment: an int field by `by` (may be negative). */
fsa_status_t fsa_journal_increment(fsa_journal_t *j, fsa_type_t type, const char *id,
                                   const char *field, int64_t by, const fsa_fence_t *fence,
                                   fsa_rec_t *rec) FSA_MUST_CHECK;
/* transition: the type's status field from its local value to `to`. */
fsa_status_t fsa_journal_transition(fsa_journal_t *j, fsa_type_t type, const char *id,
                                    const char *to, const fsa_fence_t *fence,
                                    fsa_rec_t *rec) FSA_MUST_CHECK;
/* append: item_json to the array `key` inside object field `field`; max_len 0 = unbounded. */
fsa_status_t fsa_journal_append(fsa_journal_t *j, fsa_type_t type, const char *id,
                                const char *field, const char *key, const char *item_json,
                                int64_t max_len, const fsa_fence_t *fence,
                                fsa_rec_t *rec) FSA_MUST_CHECK;

/*
 * A group: n ops (1..FSA_JOURNAL_GROUP_MAX) recorded in one transaction under one fresh group
 * id, applied by the server all-or-nothing. Callers fill kind, type, id and the kind's members
 * (field, by, to, key, max_len, json); the journal fills op_id, seq, at_ms, group, base_version
 * (set) and from (transition). The ops array is not modified. rec reports the first op.
 */
#define FSA_JOURNAL_GROUP_MAX 16
fsa_status_t fsa_journal_record_group(fsa_journal_t *j, const fsa_op_t *ops, size_t n,
                                      const fsa_fence_t *fence, fsa_rec_t *rec) FSA_MUST_CHECK;

/* The checkpoint update: set fields_json on the checkpoint child_id and touch its parent tour
 * (a merge into the parent's other_info of {"last_checkpoint": child_id, "last_checkpoint_at":
 * at}) as one group. FSA_EINVAL if the child has no parent. */
fsa_status_t fsa_journal_checkpoint_update(fsa_journal_t *j, const char *child_id,
                                           const char *fields_json, const fsa_fence_t *fence,
                                           fsa_rec_t *rec) FSA_MUST_CHECK;

/* Reads an entity's local view: *fields_json (malloc'ed, free with fsa_model_free), its server
 * version (0 when it has never been on the server) and pending op count. Any out may be NULL.
 * FSA_OK, FSA_ENOTFOUND, FSA_EINVAL, FSA_EIO. */
fsa_status_t fsa_journal_get(fsa_journal_t *j, fsa_type_t type, const char *id, char **fields_json,
                             int64_t *base_version, int64_t *pending) FSA_MUST_CHECK;

/* Reads an entity's base (last known server state). Same conventions as fsa_journal_get;
 * FSA_ENOTFOUND when the entity has never been on the server. */
fsa_status_t fsa_journal_get_base(fsa_journal_t *j, fsa_type_t type, const char *id,
                                  char **fields_json, int64_t *base_version) FSA_MUST_CHECK;

/* ---- The outbox, for the sync engine. ---- */

/*
 * Reads the next batch: pending and in-flight ops in seq order, at most max_ops ops and about
 * max_bytes of payload, never splitting a group (a group that does not fit ends the batch; a
 * group larger than max_bytes is still returned whole when it comes first; max_ops must be at least
 * FSA_JOURNAL_GROUP_MAX, so a group always fits by count). Fills ops[0..*n)
 * (each with its own json: fsa_op_clear() each). Memory is bounded by the arguments, whatever
 * the backlog. FSA_OK (with *n 0 when nothing is pending), FSA_EINVAL, FSA_EIO, FSA_ENOMEM.
 */
fsa_status_t fsa_outbox_next_batch(fsa_journal_t *j, fsa_op_t *ops, size_t max_ops,
                                   size_t max_bytes, size_t *n) FSA_MUST_CHECK;

/* The same, of the ops after seq after_seq only: the batch that follows one still in flight. */
fsa_status_t fsa_outbox_next_batch_after(fsa_journal_t *j, int64_t after_seq, fsa_op_t *ops,
                                         size_t max_ops, size_t max_bytes,
                                         size_t *n) FSA_MUST_CHECK;

/* Marks ops (as fsa_outbox_next_batch returned them: by seq) as in flight: the journal's mark of
 * the highest seq sent rises to theirs (no attempt is counted per op). FSA_OK, FSA_EINVAL (an op
 * without a seq), FSA_EIO, FSA_EBUSY, FSA_ENOMEM. */
fsa_status_t fsa_outbox_mark_inflight(fsa_journal_t *j, const fsa_op_t *ops,
                                      size_t n) FSA_MUST_CHECK;

/* fsa_op_result_t, one per-op result from the server, is in storage/model.h. */

/*
 * Applies results in one transaction: applied/duplicate ops become done and their entity's base
 * takes the server version; conflicts and rejections are parked in the conflicts table with the
 * server's state, the op and the reason; each touched entity's local view is rebuilt from its
 * base and its still-pending ops. A result for an unknown op_id is ignored (FSA_OK); an op that
 * is already done is left alone. FSA_OK, FSA_EINVAL, FSA_EIO, FSA_ENOMEM.
 */
fsa_status_t fsa_outbox_apply_results(fsa_journal_t *j, const fsa_op_result_t *results,
                                      size_t n) FSA_MUST_CHECK;

/*
 * The drain's way: applies results[i], the answer to ops[i] (the ops as fsa_outbox_next_batch
 * returned them and as they were sent; op_ids must match, else FSA_EINVAL and nothing is done),
 * as fsa_outbox_apply_results does, but without reading the ops again; a run of applied ops is
 * closed with one statement (their result_version is not kept), and each entity is read and
 * written once per transaction, however many results land on it. One transaction when nobody
 * else writes (at most 500 results), else several: one ends after any run of 16 results once
 * another writer of this process waits, which goes between them. They commit at
 * synchronous=NORMAL. A failure leaves the transactions before it committed and the rest of the
 * results unapplied: their ops stay open and are sent again, and the server answers a known op id
 * with its first result (PROTOCOL.md section 3).
 * The first transaction marks mark[0..nmark) in flight (the next batch, already on the wire; may
 * be NULL/0). FSA_OK, FSA_EINVAL, FSA_EIO, FSA_EBUSY, FSA_ENOMEM, FSA_EFULL.
 */
fsa_status_t fsa_outbox_apply_batch(fsa_journal_t *j, const fsa_op_t *ops,
                                    const fsa_op_result_t *results, size_t n, const fsa_op_t *mark,
                                    size_t nmark) FSA_MUST_CHECK;

/* Folds a pulled server state into the entity's base when it is newer than the base, and
 * rebuilds the local view (base + pending ops). fields_json is the entity's full fields. The
 * entity is in the device's scope again: a `gone` kept for it (fsa_journal_gone) is forgotten. */
fsa_status_t fsa_journal_fold(fsa_journal_t *j, fsa_type_t type, const char *id, int64_t version,
                              const char *fields_json) FSA_MUST_CHECK;

/* An entity that left the device's scope (a pull's `gone`, PROTOCOL.md section 4): dropped from
 * the journal (change FSA_CHANGE_GONE), unless ops are still pending on it or conflicts are open
 * on it: then it is kept as it is, so that nothing the device recorded is lost (the server
 * answers those ops, forbidden or not, and a person sees them), with a note in sync_state by
 * which fsa_journal_gone_sweep drops it once they are answered and their conflicts closed.
 * *dropped (may be NULL) tells (false also for an entity the journal does not hold).
 * FSA_OK, FSA_EINVAL, FSA_EIO. */
fsa_status_t fsa_journal_gone(fsa_journal_t *j, fsa_type_t type, const char *id, int64_t version,
                              bool *dropped) FSA_MUST_CHECK;

/* Drops the entities that fsa_journal_gone kept once nothing of ours is on them any more (their
 * ops answered, their conflicts closed), as fsa_journal_gone would have (change FSA_CHANGE_GONE
 * at the gone's version); a pull that brought one back since keeps it. One transaction (the sync
 * engine calls it once a cycle); a note this build cannot read is dropped with a warning.
 * *dropped (may be NULL) counts the entities dropped. FSA_OK, FSA_EINVAL, FSA_EIO. */
fsa_status_t fsa_journal_gone_sweep(fsa_journal_t *j, size_t *dropped) FSA_MUST_CHECK;

/* Compaction: removes done ops from the outbox (an older journal's: an applied op now leaves it
 * with its result), keeping their op ids (in done_ops) until audit_ms after they were done;
 * forgets older ids. *removed (may be NULL) counts outbox rows removed. */
fsa_status_t fsa_outbox_compact(fsa_journal_t *j, int64_t audit_ms, size_t *removed) FSA_MUST_CHECK;

/* Queue figures for status and metrics. */
typedef struct fsa_outbox_stats {
    int64_t pending; /* pending + in flight */
    int64_t inflight;
    int64_t done;      /* not yet compacted: applied ops kept until a fold (journal_apply.c), and an
                        * older journal's (an applied op otherwise leaves at once) */
    int64_t conflicts; /* open (unresolved) conflicts */
    int64_t rejected;  /* open rejections */
    int64_t oldest_pending_at_ms; /* `at` of the oldest pending op; 0 when none */
    int64_t last_seq;             /* highest seq ever issued */
} fsa_outbox_stats_t;
fsa_status_t fsa_outbox_stats(fsa_journal_t *j, fsa_outbox_stats_t *out) FSA_MUST_CHECK;

/* Looks an op up by op_id in the outbox: fills *op (json owned by the caller: fsa_op_clear) and
 * *state. FSA_OK, FSA_ENOTFOUND (never recorded, or done: an applied op leaves the outbox when its
 * result is applied; fsa_outbox_op_state still says DONE for the audit period). */
fsa_status_t fsa_outbox_find(fsa_journal_t *j, const char *op_id, fsa_op_t *op,
                             fsa_op_state_t *state) FSA_MUST_CHECK;

/* The state of an op by op_id: from the outbox, or FSA_OPSTATE_DONE when it was compacted and its
 * id is still kept for the audit period. FSA_OK, FSA_ENOTFOUND (never recorded here, or done and
 * forgotten after the audit period), FSA_EINVAL, FSA_EIO. */
fsa_status_t fsa_outbox_op_state(fsa_journal_t *j, const char *op_id,
                                 fsa_op_state_t *state) FSA_MUST_CHECK;

/* ---- Conflicts ---- */

/* The resolver's verdict on an open conflict, shown to people. */
typedef enum fsa_conflict_decision {
    FSA_DECISION_NONE = 0,       /* not decided (yet) */
    FSA_DECISION_PARK = 1,       /* waits for a person */
    FSA_DECISION_SERVER_WINS = 2 /* the server's state stands (a person may still take ours) */
} fsa_conflict_decision_t;

/* How a conflict was closed. */
typedef enum fsa_conflict_resolution {
    FSA_RESOLVED_NONE = 0,     /* open */
    FSA_RESOLVED_SERVER = 1,   /* a person let the server's state stand */
    FSA_RESOLVED_LOCAL = 2,    /* a person took the local op: recorded again */
    FSA_RESOLVED_REBASED = 3,  /* the resolver recorded the op again on the server's state */
    FSA_RESOLVED_CONVERGED = 4 /* the server already had what the op meant */
} fsa_conflict_resolution_t;

/* The names stored in the journal's conflicts table (and shown by libfieldsync): outcome
 * "conflict" and "rejected" (an fsa_result_status_t, FSA_RESULT_CONFLICT or _REJECTED);
 * decision "" (none), "park", "server-wins"; resolution "" (open), "server", "local", "rebased",
 * "converged". _name: "?" for a value out of range. _parse: FSA_EINVAL for an unknown name. */
const char *fsa_conflict_outcome_name(fsa_result_status_t o);
fsa_status_t fsa_conflict_outcome_parse(const char *s, fsa_result_status_t *out) FSA_MUST_CHECK;
const char *fsa_conflict_decision_name(fsa_conflict_decision_t d);
fsa_status_t fsa_conflict_decision_parse(const char *s,
                                         fsa_conflict_decision_t *out) FSA_MUST_CHECK;
const char *fsa_conflict_resolution_name(fsa_conflict_resolution_t r);
fsa_status_t fsa_conflict_resolution_parse(const char *s,
                                           fsa_conflict_resolution_t *out) FSA_MUST_CHECK;

typedef struct fsa_conflict {
    fsa_op_t op;                 /* the local op (json owned: fsa_conflict_clear) */
    fsa_result_status_t outcome; /* FSA_RESULT_CONFLICT or FSA_RESULT_REJECTED */
    char code[32];
    char reason[256];
    int64_t server_version;
    char *server_fields; /* may be NULL (owned) */
    char *prior_fields;  /* set: the values it replaced, for a 3-way merge; may be NULL */
    int64_t created_ms;
    fsa_conflict_decision_t decision;     /* the resolver's verdict while open */
    fsa_conflict_resolution_t resolution; /* FSA_RESOLVED_NONE while open */
} fsa_conflict_t;

void fsa_conflict_clear(fsa_conflict_t *c);

/* Calls fn for each conflict (open ones only unless all) in seq order; the conflict is valid
 * only during the call. Stops early when fn returns false. fn must not call the journal (the
 * handle is busy during the walk). */
typedef bool (*fsa_conflict_fn)(void *arg, const fsa_conflict_t *c);
fsa_status_t fsa_conflicts_each(fsa_journal_t *j, bool all, fsa_conflict_fn fn,
                                void *arg) FSA_MUST_CHECK;

/*
 * Resolves an open conflict or rejection; for an op of a group, every open conflict of the group
 * together (a group is resolved as a whole). take_local: the op is recorded again as a new op (new
 * op_id and seq; a set expects the server version now known; a transition starts from the
 * server's current status), in the same transaction that closes the conflict; validation
 * errors of the new op are returned as from a recording call; a group's ops are recorded again
 * as one new group, leaving out the ones the known state already satisfies (a transition to the
 * current status; a create of an existing entity, unless a person takes it, resolution
 * FSA_RESOLVED_LOCAL: then its status, when not the current one, goes as a transition and its
 * other fields as a set, in one new group; refused: attendance (FSA_EINVAL), a group past
 * FSA_JOURNAL_GROUP_MAX ops (FSA_ETOOLARGE)). Not take_local: the server's state
 * stands; the conflict is closed. resolution (not FSA_RESOLVED_NONE) is stored. rec (may be
 * NULL) reports the new op or the error. FSA_OK, FSA_ENOTFOUND (no open conflict with that
 * op_id), FSA_EINVAL, the recording statuses.
 */
fsa_status_t fsa_conflict_resolve(fsa_journal_t *j, const char *op_id, bool take_local,
                                  fsa_conflict_resolution_t resolution,
                                  fsa_rec_t *rec) FSA_MUST_CHECK;

/* One conflict (open or closed) by its op id: *out filled, its strings owned by the caller
 * (fsa_conflict_clear). FSA_OK, FSA_ENOTFOUND, FSA_EINVAL, FSA_EIO, FSA_ENOMEM. */
fsa_status_t fsa_conflict_get(fsa_journal_t *j, const char *op_id,
                              fsa_conflict_t *out) FSA_MUST_CHECK;

/* Records the resolver's verdict on an open conflict (shown to people): on op_id's and, for an op
 * of a group, on every open conflict of its group, in one transaction (a group is decided, as it
 * is resolved, as a whole). A member that has this decision already is left as it is. FSA_OK,
 * FSA_ENOTFOUND, FSA_EINVAL (FSA_DECISION_NONE or out of range). The decision is a change of
 * each member it decides: FSA_CHANGE_SERVER_WON, or FSA_CHANGE_PARKED (the conflict now waits
 * for a person: what the library's conflict listeners hear of). */
fsa_status_t fsa_conflict_set_decision(fsa_journal_t *j, const char *op_id,
                                       fsa_conflict_decision_t decision) FSA_MUST_CHECK;

/* ---- The device's configuration and sync state (durable) ---- */

/*
 * Stored as rows of the journal's sync_state table under the names of storage/state_keys.h (a
 * persisted format: journals written by earlier versions read the same). Strings handed out are
 * malloc'ed (fsa_model_free, or fsa_device_config_clear).
 */

/* The configuration `fieldsync init` (fieldsync_init) stores. Strings: NULL when absent. */
typedef struct fsa_device_config {
    char *device_id, *server, *secret_file, *ca_file, *pins;
    char *client_cert, *client_key, *proxy, *retry_policy, *resolver_policy;
    bool allow_http;
    int64_t durability;                                     /* 0: synchronous=FULL, 1: NORMAL */
    int64_t sync_interval_ms, stall_after_ms, budget_bytes; /* 0: the default */
} fsa_device_config_t;

/* Stores every member in one transaction: all or none. A NULL string is stored as "", so that a
 * new init clears what an older one set. FSA_OK, FSA_EINVAL, FSA_EIO, FSA_EBUSY, FSA_ENOMEM. */
fsa_status_t fsa_journal_config_store(fsa_journal_t *j,
                                      const fsa_device_config_t *c) FSA_MUST_CHECK;
/* Loads the stored configuration into *out (cleared first): strings NULL when absent or "",
 * numbers 0 when absent. On failure *out is cleared. FSA_OK, FSA_EINVAL, FSA_EIO, FSA_ENOMEM. */
fsa_status_t fsa_journal_config_load(fsa_journal_t *j, fsa_device_config_t *out) FSA_MUST_CHECK;
/* Frees the strings of a loaded configuration and zeroes it (NULL accepted). */
void fsa_device_config_clear(fsa_device_config_t *c);
/* The device id alone: *out malloc'ed, NULL when the journal was never set up. */
fsa_status_t fsa_journal_device_id(fsa_journal_t *j, char **out) FSA_MUST_CHECK;

/* The engine's backoff: no sync before next_attempt_ms (a wall time; 0: none), after `failures`
 * failed cycles in a row (the backoff's n). */
typedef struct fsa_backoff_state {
    int64_t next_attempt_ms;
    int64_t failures;
} fsa_backoff_state_t;

/* What the engine keeps between cycles, read at once for status. */
typedef struct fsa_sync_state {
    int64_t clock_offset_ms; /* server clock minus device clock */
    fsa_backoff_state_t backoff;
    int64_t last_sync_ms; /* wall time of the last complete sync; 0: never */
} fsa_sync_state_t;

/* Absent values read as 0. FSA_OK, FSA_EINVAL, FSA_EIO, FSA_ENOMEM. */
fsa_status_t fsa_journal_sync_state_get(fsa_journal_t *j, fsa_sync_state_t *out) FSA_MUST_CHECK;
fsa_status_t fsa_journal_backoff_get(fsa_journal_t *j, fsa_backoff_state_t *out) FSA_MUST_CHECK;
/* Both members in one transaction. FSA_OK, FSA_EINVAL, FSA_EIO, FSA_EBUSY, FSA_ENOMEM. */
fsa_status_t fsa_journal_backoff_set(fsa_journal_t *j, const fsa_backoff_state_t *b) FSA_MUST_CHECK;
/* A complete sync at at_ms: the backoff cleared and last_sync_ms set, in one transaction. */
fsa_status_t fsa_journal_sync_done(fsa_journal_t *j, int64_t at_ms) FSA_MUST_CHECK;
/* The server clock offset that corrects recorded times (fsa_journal_now_checked). */
fsa_status_t fsa_journal_clock_offset_get(fsa_journal_t *j, int64_t *ms) FSA_MUST_CHECK;
fsa_status_t fsa_journal_clock_offset_set(fsa_journal_t *j, int64_t ms) FSA_MUST_CHECK;
/* The server's pull cursor: *out malloc'ed, NULL when there is none yet. */
fsa_status_t fsa_journal_cursor_get(fsa_journal_t *j, char **out) FSA_MUST_CHECK;
fsa_status_t fsa_journal_cursor_set(fsa_journal_t *j, const char *cursor) FSA_MUST_CHECK;
/* The last sync cycle's outcome as libfieldsync notes it for status: a status code (0: ok) and
 * its message (NULL stored as ""). Both in one transaction; get: *msg malloc'ed, NULL when
 * absent; *status 0 when absent. */
fsa_status_t fsa_journal_last_error_set(fsa_journal_t *j, int64_t status,
                                        const char *msg) FSA_MUST_CHECK;
fsa_status_t fsa_journal_last_error_get(fsa_journal_t *j, int64_t *status,
                                        char **msg) FSA_MUST_CHECK;

/* ---- The change log ---- */

/*
 * Every transaction that changes an entity appends rows to the journal's change log, in the same
 * transaction, so that every process on the journal can hear what changed, each change once, by
 * reading past the last row it saw (libfieldsync's listeners do). Rows older than
 * FSA_CHANGES_KEEP_MS and beyond the newest FSA_CHANGES_KEEP_ROWS are pruned at compaction.
 * Values are frozen (libfieldsync's fieldsync_change_reason_t has the same numbers).
 */
typedef enum fsa_change_reason {
    FSA_CHANGE_RECORDED = 0,   /* an op was recorded (op_id: it) */
    FSA_CHANGE_SYNCED = 1,     /* the server applied our op (or already had what it meant) */
    FSA_CHANGE_PULLED = 2,     /* a newer server state was folded in */
    FSA_CHANGE_REBASED = 3,    /* a conflicting op was recorded again (op_id: the new op) */
    FSA_CHANGE_SERVER_WON = 4, /* the resolver let the server's state stand (op_id: ours) */
    FSA_CHANGE_PARKED = 5,     /* the resolver left the op to a person (op_id: ours); until
                                * session 28 also written for the answer itself (now HELD) */
    FSA_CHANGE_RESOLVED = 6,   /* a person resolved a conflict (op_id: the conflict's op) */
    FSA_CHANGE_GONE = 7,       /* the entity left the device's scope and was dropped */
    FSA_CHANGE_HELD = 8        /* the server answered conflict or rejected: the op's effect left
                                * the local view until the resolver judges it (op_id: ours) */
} fsa_change_reason_t;

#define FSA_CHANGES_KEEP_MS (60 * 60 * 1000)
#define FSA_CHANGES_KEEP_ROWS 10000
/* Schema 3's change-log seqs are never reused because compaction keeps the newest row. */
_Static_assert(FSA_CHANGES_KEEP_ROWS > 0, "compaction must keep the change log's newest row");

typedef struct fsa_change {
    int64_t seq;
    fsa_type_t type;
    char id[FSA_ID_BYTES];
    int64_t version; /* the entity's server version after the change; 0: never on the server */
    fsa_change_reason_t reason;
    char op_id[FSA_OP_ID_BYTES]; /* "" when no op is concerned */
} fsa_change_t;

/* The seq of the newest change (0 when none). FSA_OK, FSA_EINVAL, FSA_EIO. */
fsa_status_t fsa_journal_changes_last(fsa_journal_t *j, int64_t *seq) FSA_MUST_CHECK;

/* Reads up to max changes with seq > after, in seq order, into out[0..*n). FSA_OK (*n 0 when
 * none), FSA_EINVAL, FSA_EIO. */
fsa_status_t fsa_journal_changes_read(fsa_journal_t *j, int64_t after, fsa_change_t *out,
                                      size_t max, size_t *n) FSA_MUST_CHECK;

/* ---- Listing entities ---- */

/* Which entities fsa_journal_list visits; NULL/0 members do not filter. */
typedef struct fsa_entity_filter {
    fsa_type_t type;
    const char *parent_id; /* jobneed.parent_id */
    const char *status;    /* the type's status field */
    const char *people_id; /* attendance, jobneed: people_id; ticket: assignedto */
    const char *site_id;   /* attendance.site_id */
    int64_t from_ms;       /* attendance: at >= from_ms */
    int64_t to_ms;         /* attendance: at < to_ms (0: no bound) */
    const char *after_id;  /* ids sorting after this one (paging) */
    size_t limit;          /* at most this many (0: FSA_LIST_DEFAULT; at most FSA_LIST_MAX) */
} fsa_entity_filter_t;

#define FSA_LIST_DEFAULT 100
#define FSA_LIST_MAX 1000

/* Called for each entity in id order with its local view; stop early by returning false.
 * fn must not call the journal (the handle is busy during the walk). */
typedef bool (*fsa_entity_fn)(void *arg, fsa_type_t type, const char *id, const char *fields_json,
                              int64_t base_version, int64_t pending, int64_t open_conflicts);

/* Visits the entities matching f (local views; entities deleted locally are skipped).
 * FSA_OK, FSA_EINVAL (bad filter, limit over FSA_LIST_MAX), FSA_EIO, FSA_ENOMEM. */
fsa_status_t fsa_journal_list(fsa_journal_t *j, const fsa_entity_filter_t *f, fsa_entity_fn fn,
                              void *arg) FSA_MUST_CHECK;

/* Open conflicts and rejections on one entity. FSA_OK, FSA_EINVAL, FSA_EIO. */
fsa_status_t fsa_journal_entity_conflicts(fsa_journal_t *j, fsa_type_t type, const char *id,
                                          int64_t *n) FSA_MUST_CHECK;

/* The device wall clock corrected by the stored server clock offset, as stamped on new ops and
 * signed into requests. FSA_OK, or the failure to read the offset (FSA_ENOMEM, FSA_EIO; *out then
 * uncorrected, which a caller must not use where the time matters: an op's time, a signature). */
fsa_status_t fsa_journal_now_checked(fsa_journal_t *j, fsa_wall_t *out) FSA_MUST_CHECK;

/* Runs PRAGMA integrity_check, then checks that every conflict has its op in the outbox (the
 * journal keeps that without a foreign key: storage/db.c, the 4 -> 5 step); FSA_OK or
 * FSA_ECORRUPT (err names the first problem), FSA_ENOMEM or FSA_EIO when a check could not run or
 * read (err says why: that says nothing of the journal), or another failure of the conflicts'
 * read. */
fsa_status_t fsa_journal_integrity(fsa_journal_t *j, char *err, size_t errlen) FSA_MUST_CHECK;

/* The files a journal at PATH keeps: PATH followed by each of these ("" is PATH itself; then
 * SQLite's WAL, shared memory and rollback journal, the users' lock, the lock manager's table),
 * whether they exist yet or not. What writes files by a name it is given (the
 * daemon's metrics file) must take none of them. */
#define FSA_JOURNAL_FILES 6
extern const char fsa_journal_file_suffixes[FSA_JOURNAL_FILES][10];

#endif
