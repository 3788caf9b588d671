/* fieldsync: the lock manager: named leases across threads and processes, fencing tokens, stats. */
#ifndef FSA_STORAGE_LOCK_H
#define FSA_STORAGE_LOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port/limits.h"
#include "port/port.h"
#include "port/status.h"
#include "storage/fence.h"

/*
 * Named locks with the platform's configurations, shared by every thread and process on the
 * device that opens the same journal. A lock's key is "NAME:resource" ("JOB_WORKFLOW_UPDATE:J1").
 *
 * - A lock is a lease: a holder that overruns its lease may be replaced by the next acquirer.
 * - A holder that dies (crash, kill, power loss) releases its locks at once: the next acquirer
 *   takes them over without waiting for the lease to run out.
 * - Every acquisition gets a fencing token, strictly increasing per key: kept in a token table
 *   shared by the managers ("<journal>.locks", mapped), whose durable copy is the journal's locks
 *   table (see lock.c: an uncontended acquisition writes no database page).
 *   A journal write made under a lock carries fsa_lock_fence() and is refused with FSA_EFENCED,
 *   changing nothing, once a later token has been issued for the key; so a holder whose lease ran
 *   out cannot write over its successor.
 * - Locks are not re-entrant: acquiring a key that this manager already holds waits like anyone
 *   else (and times out, or takes the lease over once it has run out).
 *
 * Objects and ownership:
 *   fsa_lockmgr_t  one per journal and user; opened by fsa_lockmgr_open(), closed by
 *                  fsa_lockmgr_close(). Thread-safe: many threads may share one manager. It holds
 *                  its own SQLite connection, OFD locks on "<journal>.locks" (its liveness) and
 *                  a shared mapping of that file's token table.
 *                  Do not use a manager in a child after fork(); open a new one there.
 *   fsa_lock_t     caller-owned (stack or struct member), one acquisition. Used by one thread at a
 *                  time; may be released from another thread than the one that acquired it.
 *
 * All managers sharing a journal must read the same monotonic clock: the posix port
 * (CLOCK_MONOTONIC is system-wide) or, in tests and the simulator, one sim port. A reboot starts
 * a new monotonic epoch, but it also kills every holder, and dead holders are detected by their
 * liveness lock, not by time.
 *
 * Error detail: functions that can fail take `err`/`errlen`, a caller buffer (may be NULL or 0)
 * that receives one line naming the problem ("lock JOB_WORKFLOW_UPDATE:J1 not acquired in 10 s:
 * held by fieldsync-run (pid 1234, token 17)"); it is "" on FSA_OK.
 */

/* The platform's named locks. Values are frozen. */
typedef enum fsa_lock_kind {
    FSA_LOCK_ATTENDANCE_UPDATE = 0,   /* lease 10 s, wait 5 s */
    FSA_LOCK_JOB_WORKFLOW_UPDATE = 1, /* lease 15 s, wait 10 s */
    FSA_LOCK_TICKET_ESCALATION = 2,   /* lease 15 s, wait 10 s */
    FSA_LOCK_JSON_FIELD_UPDATE = 3,   /* lease 10 s, wait 5 s */
    FSA_LOCK_SYNC = 4,                /* lease 120 s, wait 0 (try once); see lock.c */
    FSA__LOCK_KIND_COUNT
} fsa_lock_kind_t;

/* Longest lock name ("JOB_WORKFLOW_UPDATE" and any custom name): [A-Z0-9_], 1..64 bytes. */
#define FSA_LOCK_NAME_MAX 64
/* A key "NAME:resource" is at most FSA_LIMIT_LOCK_KEY_BYTES bytes; buffers add the NUL. */
#define FSA_LOCK_KEY_BYTES (FSA_LIMIT_LOCK_KEY_BYTES + 1)
/* A holder label ("fieldsync-run"): 1..63 printable ASCII bytes; buffers add the NUL. */
#define FSA_LOCK_LABEL_BYTES 64
/* Whether label (not NULL) is such a label. */
bool fsa_lock_label_valid(const char *label);
/* The message for one that is not: "<who>: label must be ...", with who and the longest length
 * (one text for every caller: the device binary keeps one copy). */
#define FSA_LOCK_LABEL_ERROR_FMT "%s: label must be 1..%d printable ASCII characters"

/* Holders listed in fsa_lock_stats_t. More are counted in holders_total, not listed. 16 covers
 * every lock a device holds at once in practice (one sync, a few record paths). */
#define FSA_LOCK_STATS_HOLDERS_MAX 16

/* A lock's configuration. name must be [A-Z0-9_]{1,64}; lease_ns > 0; wait_ns >= 0, where 0 means
 * try once and return FSA_EBUSY if held. */
typedef struct fsa_lock_config {
    char name[sizeof "JOB_WORKFLOW_UPDATE"]; /* characters, not a pointer: no relocation each */
    int64_t lease_ns;
    int64_t wait_ns;
} fsa_lock_config_t;

/* The configuration of a named lock (static storage, never freed), or NULL for an unknown kind. */
const fsa_lock_config_t *fsa_lock_config(fsa_lock_kind_t kind);

/* Finds a named lock by its name ("SYNC"). Returns FSA_OK and sets *out, or FSA_EINVAL (unknown
 * name, or a NULL argument; *out is then unchanged). */
fsa_status_t fsa_lock_kind_parse(const char *name, fsa_lock_kind_t *out) FSA_MUST_CHECK;

/*
 * Forms the key "NAME:resource" into out (outlen bytes, NUL terminated).
 * name: a lock name as in fsa_lock_config_t. resource: 1 or more bytes, none a control character
 * (< 0x20 or 0x7f); typically an entity id, or "device" for the SYNC lock.
 * Returns FSA_OK; FSA_EINVAL (NULL, empty or malformed name or resource, out NULL or outlen 0);
 * FSA_ETOOLARGE (the key is longer than FSA_LIMIT_LOCK_KEY_BYTES, or does not fit in outlen).
 * On failure out is "" when outlen > 0.
 */
fsa_status_t fsa_lock_key(const char *name, const char *resource, char *out,
                          size_t outlen) FSA_MUST_CHECK;

typedef struct fsa_lockmgr fsa_lockmgr_t;

typedef struct fsa_lockmgr_opts {
    const char *label; /* shown to others as the holder ("fieldsync-run"); copied. NULL: the
                          default "fieldsync". 1..63 printable ASCII bytes. */
    bool create;       /* create the journal (mode 0600, migrated) when it does not exist */
    bool durable;      /* commit lock changes with synchronous=FULL (an fsync each) instead of
                          NORMAL. Not needed for safety; see "Durability" in lock.c. */
} fsa_lockmgr_opts_t;

/*
 * Opens a lock manager on the journal at journal_path, through port (which must outlive the
 * manager): opens its own connection to the journal, registers a holder row (label, pid) and takes
 * its liveness lock on "<journal>.locks" (created mode 0600 if missing), named after the journal's
 * file as SQLite resolves journal_path (a symlink's target), so that every name of one journal
 * reaches the same managers.
 * opts may be NULL (all defaults). On FSA_OK *out is the manager; otherwise *out is NULL.
 * Returns FSA_OK; FSA_EINVAL (NULL port, path or out, an invalid label, an overlong path);
 * FSA_ENOTFOUND (no journal and opts->create false); FSA_ENOMEM; FSA_EIO; FSA_EBUSY (the journal
 * stayed locked by another writer longer than the busy timeout); FSA_ESCHEMA; FSA_ECORRUPT.
 */
fsa_status_t fsa_lockmgr_open(fsa_port_t *port, const char *journal_path,
                              const fsa_lockmgr_opts_t *opts, fsa_lockmgr_t **out, char *err,
                              size_t errlen) FSA_MUST_CHECK;

/* Releases every lock this manager still holds (their fsa_lock_t must not be used afterwards),
 * removes its holder row, drops its liveness lock and frees it. NULL is accepted. No other thread
 * may be using the manager. */
void fsa_lockmgr_close(fsa_lockmgr_t *m);

/* This manager's holder id (its row in lock_holders), > 0. 0 for NULL. */
int64_t fsa_lockmgr_holder_id(const fsa_lockmgr_t *m);

/* One acquisition. Caller-owned; treat the members as read-only. */
typedef struct fsa_lock {
    fsa_lockmgr_t *mgr;           /* the manager holding it; NULL when not held */
    char key[FSA_LOCK_KEY_BYTES]; /* "NAME:resource" */
    int64_t token;                /* the fencing token of this acquisition, > 0 */
    int64_t lease_ns;             /* the lease it was taken (or last renewed) with */
    fsa_mono_t acquired;          /* on the manager's port clock */
    fsa_mono_t expires;           /* acquired (or last renewal) + lease_ns */
} fsa_lock_t;

/* Initialises l as "not held". Cannot fail; l may be NULL (then nothing happens). */
void fsa_lock_init(fsa_lock_t *l);

/* True when l holds its lock as far as this process knows (it may still have been lost to a
 * successor after its lease ran out; release or renew tell). False for NULL. */
bool fsa_lock_held(const fsa_lock_t *l);

/*
 * Acquires kind's lock on resource with kind's lease and wait time. See fsa_lock_acquire_cfg.
 * FSA_EINVAL also for an unknown kind.
 */
fsa_status_t fsa_lock_acquire(fsa_lockmgr_t *m, fsa_lock_kind_t kind, const char *resource,
                              fsa_lock_t *out, char *err, size_t errlen) FSA_MUST_CHECK;

/*
 * Acquires the lock "cfg->name:resource" with cfg's lease and wait time. Waits (threads sharing
 * m are woken on release; others are polled every 1 ms, backing off to 20 ms) until the lock is
 * free, its holder is dead, or its holder's lease has run out.
 * out: filled on FSA_OK (token, key, times); set to "not held" otherwise. It is overwritten: a
 * lock it still held is not released (its lease, or closing the manager, frees it).
 * Returns FSA_OK; FSA_EINVAL (NULL or invalid argument, see fsa_lock_key); FSA_ETOOLARGE (key too
 * long); FSA_ELOCKTIMEOUT (still held when the wait ran out; err names the lock and its holder);
 * FSA_EBUSY (cfg->wait_ns is 0 and the lock is held, err names the holder; or the journal stayed
 * locked by another writer longer than the busy timeout); FSA_EIO; FSA_EFULL; FSA_ENOMEM.
 */
fsa_status_t fsa_lock_acquire_cfg(fsa_lockmgr_t *m, const fsa_lock_config_t *cfg,
                                  const char *resource, fsa_lock_t *out, char *err,
                                  size_t errlen) FSA_MUST_CHECK;

/*
 * Releases l. The lock is freed only if it is still l's (same holder, same token); its token is
 * kept, so the next acquisition gets a higher one. A lease that ran out but was not taken over is
 * still l's: releasing it is FSA_OK.
 * Returns FSA_OK (l is "not held" afterwards); FSA_ELOST (l's lease ran out and someone else took
 * the lock: nothing was changed, l is "not held"); FSA_EINVAL (NULL, or l not held); FSA_EBUSY or
 * FSA_EIO (the journal could not be written: l stays held, so the caller may retry; if it gives
 * up, the lease, or closing the manager, frees the lock).
 */
fsa_status_t fsa_lock_release(fsa_lock_t *l, char *err, size_t errlen) FSA_MUST_CHECK;

/*
 * Extends l's lease to now + lease_ns (lease_ns 0: the lease it was taken with), if the lock is
 * still l's. For long holders such as a sync cycle, between batches.
 * Returns FSA_OK; FSA_EINVAL (NULL, not held, negative lease_ns); FSA_ELOST (taken over: l is
 * "not held" afterwards); FSA_EBUSY; FSA_EIO.
 */
fsa_status_t fsa_lock_renew(fsa_lock_t *l, int64_t lease_ns, char *err,
                            size_t errlen) FSA_MUST_CHECK;

/* The fence a journal write made under l carries: {l->key, l->token}. key points into l and is
 * valid while l is. For a NULL or not-held l: {NULL, 0}, which every write refuses. */
fsa_fence_t fsa_lock_fence(const fsa_lock_t *l);

/* One lock currently held on the device, as the shared token table (or, for a key not in it, the
 * locks table) says: its holder is using it, or died while holding it (alive false). A holder that
 * released the lock and died later holds nothing and is not listed. After a power cut the table's
 * record of releases may be gone with it: a lock released shortly before the cut may then be
 * listed as a dead holder's, and taken over as one. */
typedef struct fsa_lock_holder_info {
    char key[FSA_LOCK_KEY_BYTES];
    int64_t token;
    char label[FSA_LOCK_LABEL_BYTES]; /* the holder's label */
    int64_t pid;                      /* the holder's process id; 0 if its row is gone */
    int64_t holder_id;                /* its row in lock_holders */
    int64_t remaining_ns;             /* lease left; <= 0 once run out */
    bool alive;                       /* false: it died holding it; taken over at once */
} fsa_lock_holder_info_t;

/*
 * Statistics. The counters and times are this manager's since it was opened (a process that wants
 * one set of figures shares one manager between its threads); the holders are the device's, read
 * from the journal.
 */
typedef struct fsa_lock_stats {
    uint64_t acquired;       /* successful acquisitions */
    uint64_t contended;      /* acquisitions (successful or not) that found the lock held at least
                                once and had to wait or give up */
    uint64_t timed_out;      /* acquisitions that returned FSA_ELOCKTIMEOUT */
    uint64_t busy;           /* try-once acquisitions (wait 0) that returned FSA_EBUSY */
    uint64_t expired;        /* acquisitions that took over a live holder's run-out lease */
    uint64_t dead_takeovers; /* acquisitions that took over the lock of a holder that died holding
                                it (not one it had released before it died) */
    uint64_t lost;           /* releases and renewals that found the lock taken over */
    int64_t wait_ns_mean;    /* wait of successful acquisitions */
    int64_t wait_ns_max;
    int64_t hold_ns_mean; /* acquired to released, over successful releases */
    int64_t hold_ns_max;
    size_t n_holders;     /* entries filled in holders[] */
    size_t holders_total; /* locks held on the device (may exceed n_holders) */
    fsa_lock_holder_info_t holders[FSA_LOCK_STATS_HOLDERS_MAX]; /* sorted by key */
} fsa_lock_stats_t;

/* Fills *out with m's counters and the device's current holders.
 * Returns FSA_OK; FSA_EINVAL (NULL); FSA_EBUSY; FSA_EIO (then *out holds the counters and no
 * holders). */
fsa_status_t fsa_lockmgr_stats(fsa_lockmgr_t *m, fsa_lock_stats_t *out, char *err,
                               size_t errlen) FSA_MUST_CHECK;

/*
 * Renders s as one JSON object into buf (buflen bytes, NUL terminated):
 *   {"acquired":3,"contended":1,"timed_out":0,"busy":0,"expired":0,"dead_takeovers":0,"lost":0,
 *    "wait_ns":{"mean":0,"max":0},"hold_ns":{"mean":0,"max":0},"holders_total":1,
 *    "holders":[{"key":"SYNC:device","token":7,"label":"fieldsync-run","pid":1234,
 *                "holder_id":3,"remaining_ns":119000000000,"alive":true}]}
 * needed (may be NULL) receives the length of the whole text without the NUL, also when it does
 * not fit. Pure: no I/O.
 * Returns FSA_OK; FSA_EINVAL (NULL s or buf, buflen 0); FSA_ETOOLARGE (buf too small: buf is then
 * "").
 */
fsa_status_t fsa_lock_stats_json(const fsa_lock_stats_t *s, char *buf, size_t buflen,
                                 size_t *needed) FSA_MUST_CHECK;

#endif
