/* libfieldsync: the fieldsync agent as a library that a device's app embeds. */
#ifndef FIELDSYNC_FIELDSYNC_H
#define FIELDSYNC_FIELDSYNC_H

/*
 * One handle (fieldsync_t) per device journal. The app records what a person did (a check-in, a
 * job's transition, a ticket's escalation) with the workflow verbs below; each returns after the
 * op is durable in the local journal (SQLite, synchronous=FULL by default), whether or not the
 * server can be reached. A sync thread owned by the library (fieldsync_start) pushes the ops to
 * the server of PROTOCOL.md and pulls the server's changes; listeners hear of the sync status,
 * of every change to an entity (made here, by another process on the same journal, or pulled
 * from the server) and of conflicts.
 *
 * Conventions, kept by every function of this header:
 * - Every function returns a fieldsync_status_t (FIELDSYNC_OK = 0), except the few documented
 *   as returning a string or nothing. A failed call writes nothing to the journal and leaves its
 *   out-parameters zeroed (pointers NULL).
 * - The detail of the last failure (a one-line English message naming the problem: "ticket T1:
 *   no transition from NEW to CLOSED") is read with fieldsync_errmsg() on the same handle from
 *   the same thread, as with sqlite3_errmsg.
 * - FIELDSYNC_MUST_CHECK (the compiler's warning for an ignored result) marks every call whose
 *   status says whether it did what was asked or filled its out-parameters. The few without it
 *   end, release or ask for something, and ignoring their status loses nothing: fieldsync_close,
 *   fieldsync_lock_release, fieldsync_sync_now, fieldsync_stop, fieldsync_remove_listener and
 *   fieldsync_dispatch.
 * - Ownership: strings passed in are copied before the call returns; nothing the caller passes
 *   is kept. A `char **` out-parameter receives a string that the caller frees with
 *   fieldsync_free(). Pointers handed to a listener are valid only during the call.
 * - Threads: a handle may be used from any number of threads at once, except where a function
 *   says otherwise; calls on one journal are serialized by the library. Listeners run on the
 *   library's sync thread, or, with FIELDSYNC_EVENTS_BUFFERED, on the thread that calls
 *   fieldsync_dispatch().
 * - Several processes may open the same journal: each one's records are durable and visible
 *   to the others at once, only one process syncs at a time (the SYNC lock), and every process's
 *   listeners hear of the others' changes.
 * - Values of the enums below are frozen; new ones are appended (FIELDSYNC_OP_RESOLVED and
 *   FIELDSYNC_CHANGE_HELD were, so): a caller treats a value it does not know as "other".
 * - All times are milliseconds since the Unix epoch (wall) or milliseconds (durations), int64_t.
 * - Only names starting with fieldsync_ / FIELDSYNC_ belong to this API.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define FIELDSYNC_API __attribute__((visibility("default")))
#define FIELDSYNC_MUST_CHECK __attribute__((warn_unused_result))
#else
#define FIELDSYNC_API
#define FIELDSYNC_MUST_CHECK
#endif

/* The library's version. The shared library's SONAME carries the major number. */
#define FIELDSYNC_VERSION_MAJOR 1
#define FIELDSYNC_VERSION_MINOR 0
#define FIELDSYNC_VERSION_PATCH 0

/* The version of the library actually loaded ("1.0.0"). Never NULL. Any thread. */
FIELDSYNC_API const char *fieldsync_version(void);

/* ---- Status ---- */

/* The project's status codes (the same numbers everywhere in fieldsync). Frozen. */
typedef enum fieldsync_status {
    FIELDSYNC_OK = 0,
    FIELDSYNC_EINVAL = 1,        /* an argument or input is malformed */
    FIELDSYNC_ENOMEM = 2,        /* an allocation failed */
    FIELDSYNC_EIO = 3,           /* the OS or SQLite failed to read or write */
    FIELDSYNC_ETIMEOUT = 4,      /* a wait ran out */
    FIELDSYNC_ENOTFOUND = 5,     /* the named thing does not exist */
    FIELDSYNC_EEXISTS = 6,       /* the named thing exists already */
    FIELDSYNC_ETOOLARGE = 7,     /* a value, field or batch would exceed its maximum */
    FIELDSYNC_ETRANSITION = 8,   /* a status transition the status machine does not allow */
    FIELDSYNC_EFULL = 9,         /* the journal reached its disk budget, or the disk is full */
    FIELDSYNC_EFENCED = 10,      /* recorded under a lock that another holder has since taken */
    FIELDSYNC_ELOCKTIMEOUT = 11, /* a named lock could not be acquired in its wait time */
    FIELDSYNC_ESCHEMA = 12,      /* a journal from a newer, unknown schema version */
    FIELDSYNC_ECORRUPT = 13,     /* a journal failed its integrity check */
    FIELDSYNC_EBUSY = 14,        /* busy: another sync holds the journal, or not allowed now */
    FIELDSYNC_ENET = 15,         /* the network failed: resolve, connect, reset, timeout */
    FIELDSYNC_EAUTH = 16,        /* the server refused our credentials */
    FIELDSYNC_ESKEW = 17,        /* the server says our clock is off */
    FIELDSYNC_EPROTO = 18,       /* the server broke the protocol (malformed answer) */
    FIELDSYNC_EREJECTED = 19,    /* the server rejected an op for good */
    FIELDSYNC_ECONFLICT = 20,    /* an op's precondition failed */
    FIELDSYNC_EPERM = 21,        /* permissions are wrong (a secret file readable by others) */
    FIELDSYNC_EUNSUPPORTED = 22, /* not supported here */
    FIELDSYNC_ELOST = 23,        /* a lock's lease ran out while it was held */
    FIELDSYNC_EEXHAUSTED = 24,   /* a retry policy ran out of tries */
    FIELDSYNC_ETLS = 25,         /* TLS failed: certificate not trusted, pin mismatch */
    FIELDSYNC_ECLOSED = 26       /* the handle is closed, or failed to open */
} fieldsync_status_t;

/* A short English name of a status ("journal is full"). Never NULL, also for unknown values.
 * Any thread. */
FIELDSYNC_API const char *fieldsync_status_str(fieldsync_status_t st);

/* The level of the library's log lines (on stderr): "debug", "info", "warn" (the default),
 * "error" or "off". Process-wide; takes effect for handles opened after the call. FIELDSYNC_OK,
 * FIELDSYNC_EINVAL (unknown level; fieldsync_errmsg(NULL) says which). Call it before opening
 * handles, from one thread. */
FIELDSYNC_API fieldsync_status_t fieldsync_set_log_level(const char *level) FIELDSYNC_MUST_CHECK;

/* ---- Opening a journal ---- */

typedef struct fieldsync fieldsync_t;

/* Durability of each record. */
typedef enum fieldsync_durability {
    FIELDSYNC_DURABLE_FULL = 0,  /* default: a record survives a power cut once its call returns */
    FIELDSYNC_DURABLE_NORMAL = 1 /* faster; a power cut may lose the last records (never
                                    corrupts the journal). The journal's periodic WAL checkpoint
                                    runs on a short-lived thread of the library's, not in the
                                    record's call; the handle's close waits for it. */
} fieldsync_durability_t;

/* fieldsync_config_t.flags */
#define FIELDSYNC_OPEN_INIT                                                                        \
    0x1u /* create the journal when missing and store this configuration                           \
            in it, all in one transaction (the device's first start) */
#define FIELDSYNC_EVENTS_BUFFERED                                                                  \
    0x2u /* listeners run on the app's thread, in                                                  \
            fieldsync_dispatch(), not on the sync thread */

/*
 * How to open a device's journal. Zero-initialise it, set `size`, and set what you need: every
 * other member's zero (or NULL) means the default. A caller compiled against an older header
 * passes its smaller size and gets the defaults for members added since; a caller compiled
 * against a newer header may pass a larger struct if the members this library does not know are
 * zero (else FIELDSYNC_EUNSUPPORTED). (For the maintainers: members are only ever appended, and
 * in whole 8-byte units, so that every version of the struct has a size of its own also where
 * int64_t is 8-aligned and pointers are 4 bytes, as on armhf.)
 *
 *   fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
 *   cfg.journal_path = "/var/lib/fieldsync/device.db";
 *
 * With FIELDSYNC_OPEN_INIT, device_id, server_url and secret_file are required and are stored
 * in the journal with the TLS and policy members; without it they are read from the journal,
 * and a member given here overrides the stored one for this handle only, also after a
 * fieldsync_reload (device_id, if given, must match the journal's: FIELDSYNC_EINVAL otherwise).
 * The file members (secret_file, ca_file, client_cert, client_key) are resolved against the
 * working directory of the open, with or without FIELDSYNC_OPEN_INIT: the handle keeps them
 * absolute, so a later chdir does not move them.
 * FIELDSYNC_OPEN_INIT checks the files before it creates anything: the secret and the client
 * key as said below, and ca_file and client_cert must hold a PEM certificate: FIELDSYNC_EINVAL
 * otherwise.
 */
typedef struct fieldsync_config {
    uint32_t size;            /* sizeof(fieldsync_config_t); required */
    uint32_t flags;           /* FIELDSYNC_OPEN_INIT, FIELDSYNC_EVENTS_BUFFERED */
    const char *journal_path; /* required */
    const char *device_id;    /* 1..128 of [A-Za-z0-9._:-] */
    const char *server_url;   /* "https://host[:port][/prefix]"; http:// only to loopback
                                 and without a proxy, unless allow_http */
    const char *secret_file;  /* 64 hex chars (the device's 32-byte secret); mode 0600 or
                                 0400, owned by this user, not a symlink */
    const char *ca_file;      /* PEM bundle trusted instead of the system's */
    const char *pins;         /* "sha256//BASE64[;sha256//BASE64...]": the server's public key */
    const char *client_cert;  /* PEM client certificate for mutual TLS */
    const char *client_key;   /* its PEM key (with client_cert); private as secret_file:
                                 mode 0600 or 0400, this user's, not a symlink. The TLS files
                                 are read when a sync engine is made, never by libcurl */
    const char *proxy;        /* "http://proxy:3128"; the environment's proxy is never used;
                                 no user:password@: proxy authentication is not supported
                                 (the configuration is kept in the journal) */
    bool allow_http;          /* plain http:// to a non-loopback host or through the proxy */
    fieldsync_durability_t durability;
    const char *retry_policy;    /* "DEFAULT" (NULL), "AGGRESSIVE", "CONSERVATIVE",
                                    "LOCK_ACQUISITION": one request's retries */
    const char *resolver_policy; /* per-type/field overrides of DESIGN.md's conflict table:
                                    "TYPE[.FIELD]=server-wins|local-wins|park[,...]"; NULL:
                                    the defaults */
    int64_t sync_interval_ms;    /* the sync thread pulls at least this often; 0: 60 s */
    int64_t stall_after_ms;      /* the watchdog's threshold for the oldest pending op while
                                    the server answers; 0: 600 s */
    int64_t budget_bytes;        /* the journal's disk budget; 0: 512 MiB. Records stop an
                                    eighth short of it (FIELDSYNC_EFULL, "journal full"): the
                                    rest is for syncing, so a full journal still drains */
    const char *label;           /* names this process to others (lock holders): 1..63
                                    printable ASCII characters; NULL: "app" ("": the lock
                                    manager's "fieldsync") */
} fieldsync_config_t;

#define FIELDSYNC_CONFIG_INIT                                                                      \
    {                                                                                              \
        .size = (uint32_t)sizeof(fieldsync_config_t)                                               \
    }

/*
 * Opens the journal that cfg names (creating and initialising it with FIELDSYNC_OPEN_INIT).
 * *out is set whenever out is not NULL and memory allows, also on failure: read the reason
 * with fieldsync_errmsg(*out), then fieldsync_close(*out) (as with sqlite3_open). A handle that
 * failed to open answers every other call with FIELDSYNC_ECLOSED.
 * Returns FIELDSYNC_OK; FIELDSYNC_EINVAL (cfg, size or a member malformed; a device id that
 * does not match the journal's); FIELDSYNC_EUNSUPPORTED (cfg from a newer header with members
 * this library does not know set); FIELDSYNC_ENOTFOUND (no journal, and no FIELDSYNC_OPEN_INIT;
 * or not initialised; or a file to be read does not exist); FIELDSYNC_EPERM (secret file or
 * client key not private); FIELDSYNC_EIO; FIELDSYNC_ESCHEMA; FIELDSYNC_ECORRUPT;
 * FIELDSYNC_EBUSY (another program kept the journal busy while it opened; or the journal is of an
 * older schema, which only a program alone on it moves to this library's, and other programs have
 * it open: stop them); FIELDSYNC_ENOMEM (then *out may be NULL). An init checks the server and TLS
 * members (their files read) and reads the secret file; an open without init does so only for what
 * cfg sets: the transport when it sets one of server_url, ca_file, pins, client_cert, client_key,
 * proxy, allow_http (the CA and client files in effect read, stored or given), the secret when it
 * sets secret_file. An open's paths are used as given (an init stores them absolute). Any thread.
 * cfg is not kept.
 */
FIELDSYNC_API fieldsync_status_t fieldsync_open(const fieldsync_config_t *cfg,
                                                fieldsync_t **out) FIELDSYNC_MUST_CHECK;

/*
 * Stops the sync thread if it runs (waiting for the cycle in progress to end: a batch in flight
 * is finished or abandoned, and an abandoned one is resent later), delivers nothing more, and
 * frees the handle. When it returns, nothing of the handle runs any more. NULL is accepted.
 * Must not be called from a listener of any handle (it returns FIELDSYNC_EBUSY and closes
 * nothing), nor twice
 * on one handle, nor while another thread still uses the handle.
 * Returns FIELDSYNC_OK, FIELDSYNC_EBUSY.
 */
FIELDSYNC_API fieldsync_status_t fieldsync_close(fieldsync_t *fs);

/* The last failure's message on this handle from the calling thread ("" if the last call on it
 * succeeded), one line (a control character in what it quotes is shown as '?'). Owned by the
 * library, valid until the thread's next call on fs. A thread keeps the messages of 16
 * handles: once 16 other handles have failed on the thread since its last call on fs, it is "". A
 * NULL handle gives the message of the last failed call on this thread that had no handle: a
 * fieldsync_open() that could not make one, or fieldsync_set_log_level(). */
FIELDSYNC_API const char *fieldsync_errmsg(const fieldsync_t *fs);

/* Frees a string that the library handed out. NULL is accepted. Any thread. */
FIELDSYNC_API void fieldsync_free(void *p);

/* ---- Named locks ---- */

/*
 * The platform's named locks, across the threads and processes of the device: each has a lease
 * (the holder loses it after) and a wait (how long an acquire waits for another holder):
 *   "ATTENDANCE_UPDATE" 10 s / 5 s, "JOB_WORKFLOW_UPDATE" 15 s / 10 s,
 *   "TICKET_ESCALATION" 15 s / 10 s, "JSON_FIELD_UPDATE" 10 s / 5 s.
 * Every acquisition gets a fencing token; a record made under a lock carries it, and the
 * journal refuses it (FIELDSYNC_EFENCED) once the lock has been taken by someone else, e.g.
 * after this holder was stopped past its lease.
 *
 * The verbs below take their lock themselves, on the resource "TYPE:ID" of the entity they
 * guard (documented with each verb), unless given one the caller holds. An app holds a lock
 * around its own multi-step work (read the ticket, ask the person, record) like this:
 *
 *   fieldsync_lock_t *l;
 *   if (fieldsync_lock_acquire(fs, "TICKET_ESCALATION", "ticket:T1", -1, &l) == FIELDSYNC_OK) {
 *       ... read, ask ...
 *       st = fieldsync_ticket_escalate(fs, "T1", "p7", "no answer at gate 3", l, &rec);
 *       fieldsync_lock_release(l);
 *   }
 */
typedef struct fieldsync_lock fieldsync_lock_t;

/*
 * Acquires the named lock on resource, waiting up to wait_ms (-1: the lock's own wait; 0: try
 * once). resource: printable ASCII, 1 byte up to what the lock's key "NAME:resource" (at most 192
 * bytes) leaves: 172 bytes for JOB_WORKFLOW_UPDATE, 174 for ATTENDANCE_UPDATE, TICKET_ESCALATION
 * and JSON_FIELD_UPDATE. On FIELDSYNC_OK *out is the held lock.
 * Returns FIELDSYNC_OK; FIELDSYNC_ELOCKTIMEOUT (the message names the holder: its label, pid
 * and lease left); FIELDSYNC_EBUSY (the lock table stayed busy, SQLite's lock, past the wait);
 * FIELDSYNC_EINVAL (unknown name, bad resource: the message names the bound); FIELDSYNC_EIO;
 * FIELDSYNC_ENOMEM.
 * Any thread; a lock may be released from another thread than the one that took it.
 */
FIELDSYNC_API fieldsync_status_t
fieldsync_lock_acquire(fieldsync_t *fs, const char *name, const char *resource, int64_t wait_ms,
                       fieldsync_lock_t **out) FIELDSYNC_MUST_CHECK;

/* The lock's fencing token (> 0). FIELDSYNC_OK, FIELDSYNC_EINVAL (NULL). */
FIELDSYNC_API fieldsync_status_t fieldsync_lock_token(const fieldsync_lock_t *l,
                                                      int64_t *token) FIELDSYNC_MUST_CHECK;

/*
 * Releases the lock and frees l (NULL accepted: FIELDSYNC_OK). FIELDSYNC_ELOST when the lease
 * had run out and another holder took it meanwhile (l is freed all the same).
 * Must be called before fieldsync_close of its handle.
 */
FIELDSYNC_API fieldsync_status_t fieldsync_lock_release(fieldsync_lock_t *l);

/* The lock statistics (acquisitions, contention, timeouts, expiries, wait and hold times per
 * lock, the holders now) as a JSON object, in *json (caller frees with fieldsync_free).
 * FIELDSYNC_OK, FIELDSYNC_EIO, FIELDSYNC_ENOMEM, FIELDSYNC_ECLOSED. */
FIELDSYNC_API fieldsync_status_t fieldsync_lock_stats(fieldsync_t *fs,
                                                      char **json) FIELDSYNC_MUST_CHECK;

/* ---- Recording: the platform's workflow verbs ---- */

/* What a recording call reports. */
typedef struct fieldsync_rec {
    char op_id[40]; /* the (first) op's id, a UUID */
    int64_t seq;    /* its sequence number on this device */
} fieldsync_rec_t;

/*
 * Common to every verb: one transaction (the op, or the ops of one group, applied all-or-nothing
 * on the server too), durable when the call returns. `lock`: NULL (the verb takes its named lock
 * itself, with the platform's lease and wait) or a lock the caller holds, which must be the
 * verb's (name and resource), else FIELDSYNC_EINVAL. `rec` may be NULL.
 * Statuses: FIELDSYNC_OK; FIELDSYNC_EINVAL (an argument or value, named in the message);
 * FIELDSYNC_ENOTFOUND (no such entity here); FIELDSYNC_EEXISTS (create of an existing one);
 * FIELDSYNC_ETRANSITION (the message names both states); FIELDSYNC_ELOCKTIMEOUT;
 * FIELDSYNC_ETOOLARGE (a value over its bound; fieldsync_record: more than 16 ops);
 * FIELDSYNC_EFENCED; FIELDSYNC_EFULL; FIELDSYNC_EBUSY; FIELDSYNC_EIO; FIELDSYNC_ENOMEM;
 * FIELDSYNC_ECLOSED. Any thread.
 */

/* A position fix. A check-in without one (NULL) is recorded with a null position. */
typedef struct fieldsync_position {
    double lat;        /* -90..90 */
    double lon;        /* -180..180 */
    double accuracy_m; /* >= 0; negative: unknown (null) */
} fieldsync_position_t;

/* A check-in (checkin true) or check-out of person people_id (1..167 printable ASCII bytes, what
 * the lock's key leaves) at site_id, now (the device clock corrected by the server's offset).
 * id: the attendance's id, NULL for a new UUID. Lock: ATTENDANCE_UPDATE on "people:PEOPLE_ID". */
FIELDSYNC_API fieldsync_status_t fieldsync_attendance(fieldsync_t *fs, bool checkin,
                                                      const char *people_id, const char *site_id,
                                                      const fieldsync_position_t *pos,
                                                      const char *id, fieldsync_lock_t *lock,
                                                      fieldsync_rec_t *rec) FIELDSYNC_MUST_CHECK;

/* Creates job (jobneed) id; fields_json (NULL: {}) an object of its fields, absent ones take
 * PROTOCOL.md's defaults (a checkpoint names its tour in parent_id). No lock. */
FIELDSYNC_API fieldsync_status_t fieldsync_job_create(fieldsync_t *fs, const char *id,
                                                      const char *fields_json,
                                                      fieldsync_rec_t *rec) FIELDSYNC_MUST_CHECK;

/* Sets fields (an object; not jobstatus) on job id, expecting the version known here.
 * Lock: JOB_WORKFLOW_UPDATE on "jobneed:ID". */
FIELDSYNC_API fieldsync_status_t fieldsync_job_set(fieldsync_t *fs, const char *id,
                                                   const char *fields_json, fieldsync_lock_t *lock,
                                                   fieldsync_rec_t *rec) FIELDSYNC_MUST_CHECK;

/* Merges an RFC 7396 patch (an object) into job id's other_info.
 * Lock: JSON_FIELD_UPDATE on "jobneed:ID". */
FIELDSYNC_API fieldsync_status_t fieldsync_job_merge(fieldsync_t *fs, const char *id,
                                                     const char *patch_json, fieldsync_lock_t *lock,
                                                     fieldsync_rec_t *rec) FIELDSYNC_MUST_CHECK;

/* Moves job id's jobstatus from its local value to `to` (ASSIGNED, INPROGRESS, COMPLETED,
 * PARTIALLYCOMPLETED). Lock: JOB_WORKFLOW_UPDATE on "jobneed:ID". */
FIELDSYNC_API fieldsync_status_t
fieldsync_job_transition(fieldsync_t *fs, const char *id, const char *to, fieldsync_lock_t *lock,
                         fieldsync_rec_t *rec) FIELDSYNC_MUST_CHECK;

/* Sets fields on checkpoint child_id and touches its tour (other_info.last_checkpoint and
 * last_checkpoint_at) as one group. FIELDSYNC_EINVAL if it has no tour.
 * Lock: JOB_WORKFLOW_UPDATE on "jobneed:TOUR_ID". */
FIELDSYNC_API fieldsync_status_t
fieldsync_checkpoint_update(fieldsync_t *fs, const char *child_id, const char *fields_json,
                            fieldsync_lock_t *lock, fieldsync_rec_t *rec) FIELDSYNC_MUST_CHECK;

/* The same fields_json set on each of tour_id's checkpoints that is not in a terminal state,
 * with the tour's touch, as one group (at most 15 checkpoints: FIELDSYNC_ETOOLARGE beyond).
 * *updated (may be NULL) counts them; when none is open, nothing is recorded: FIELDSYNC_OK,
 * *updated 0 and rec's op_id "". FIELDSYNC_EINVAL when tour_id is a checkpoint (it has a
 * parent_id). Lock: JOB_WORKFLOW_UPDATE on "jobneed:TOUR_ID". */
FIELDSYNC_API fieldsync_status_t fieldsync_tour_update(fieldsync_t *fs, const char *tour_id,
                                                       const char *fields_json,
                                                       fieldsync_lock_t *lock, size_t *updated,
                                                       fieldsync_rec_t *rec) FIELDSYNC_MUST_CHECK;

/* Creates ticket id (fields_json NULL: {}). No lock. */
FIELDSYNC_API fieldsync_status_t fieldsync_ticket_create(fieldsync_t *fs, const char *id,
                                                         const char *fields_json,
                                                         fieldsync_rec_t *rec) FIELDSYNC_MUST_CHECK;

/* Moves ticket id's status to `to` (OPEN, RESOLVED, CLOSED, CANCELLED).
 * Lock: TICKET_ESCALATION on "ticket:ID". */
FIELDSYNC_API fieldsync_status_t
fieldsync_ticket_transition(fieldsync_t *fs, const char *id, const char *to, fieldsync_lock_t *lock,
                            fieldsync_rec_t *rec) FIELDSYNC_MUST_CHECK;

/* Escalates ticket id: level + 1, an {"action":"escalated","at":...,"to":...,"note":...} entry in
 * its ticketlog.ticket_history, and with `to` (may be NULL) assignedto, as one group.
 * to, when given, is a person's id: 1..128 printable ASCII characters (else FIELDSYNC_EINVAL,
 * nothing recorded). note: NULL for none, else 1 byte to 64 KiB (FIELDSYNC_EINVAL otherwise).
 * Lock: TICKET_ESCALATION on "ticket:ID". */
FIELDSYNC_API fieldsync_status_t
fieldsync_ticket_escalate(fieldsync_t *fs, const char *id, const char *to, const char *note,
                          fieldsync_lock_t *lock, fieldsync_rec_t *rec) FIELDSYNC_MUST_CHECK;

/* Appends item_json to ticket id's ticketlog.ticket_history. Lock: JSON_FIELD_UPDATE on
 * "ticket:ID". */
FIELDSYNC_API fieldsync_status_t fieldsync_ticket_log(fieldsync_t *fs, const char *id,
                                                      const char *item_json, fieldsync_lock_t *lock,
                                                      fieldsync_rec_t *rec) FIELDSYNC_MUST_CHECK;

/*
 * The generic op builder, for anything the verbs do not cover: ops_json is one op or an array
 * of up to 16 ops (an array is recorded as one group), each
 *   {"kind": "create|set|merge|increment|transition|append", "type": "...", "id": "...",
 *    "fields": {...}, "field": "...", "patch": {...}, "by": N, "to": "...", "key": "...",
 *    "item": ..., "max_len": N}
 * with the members its kind takes (PROTOCOL.md section 2); the journal fills op_id, seq, at,
 * base_version and from. lock: NULL (no lock) or a lock the caller holds, recorded under.
 */
FIELDSYNC_API fieldsync_status_t fieldsync_record(fieldsync_t *fs, const char *ops_json,
                                                  fieldsync_lock_t *lock,
                                                  fieldsync_rec_t *rec) FIELDSYNC_MUST_CHECK;

/* ---- Reading ---- */

/*
 * An entity's local view as a JSON object in *json (caller frees):
 *   {"type":"ticket","id":"T1","server_version":4,"pending":1,"conflicts":0,"fields":{...}}
 * type: "attendance", "jobneed" (or "job"), "ticket".
 * FIELDSYNC_OK, FIELDSYNC_ENOTFOUND, FIELDSYNC_EINVAL, FIELDSYNC_EIO, FIELDSYNC_ENOMEM,
 * FIELDSYNC_ETOOLARGE (the answer would pass 64 MiB), FIELDSYNC_ECLOSED. Any thread.
 */
FIELDSYNC_API fieldsync_status_t fieldsync_get(fieldsync_t *fs, const char *type, const char *id,
                                               char **json) FIELDSYNC_MUST_CHECK;

/* Which entities fieldsync_list returns. Zero-initialise; set size; NULL/0 members do not filter.
 * A caller compiled against an older header passes its smaller size. */
typedef struct fieldsync_query {
    uint32_t size;         /* sizeof(fieldsync_query_t); required */
    const char *type;      /* required: "attendance", "jobneed" (or "job"), "ticket" */
    const char *parent_id; /* jobneed: a tour's checkpoints */
    const char *status;    /* jobneed.jobstatus or ticket.status */
    const char *people_id; /* attendance and jobneed: this person's; ticket: assignedto */
    const char *site_id;   /* attendance */
    int64_t from_ms;       /* attendance: `at` >= from_ms */
    int64_t to_ms;         /* attendance: `at` < to_ms (0: no bound) */
    const char *after_id;  /* paging: entities whose id sorts after this one */
    uint32_t limit;        /* at most this many (0: 100; at most 1000) */
} fieldsync_query_t;

#define FIELDSYNC_QUERY_INIT                                                                       \
    {                                                                                              \
        .size = (uint32_t)sizeof(fieldsync_query_t)                                                \
    }

/*
 * Entities matching q, in id order, as a JSON object in *json (caller frees):
 *   {"entities": [ {as fieldsync_get} ... ], "more": true, "next_after": "T17"}
 * `more` is true when a next page may exist: pass next_after as after_id.
 * FIELDSYNC_OK, FIELDSYNC_EINVAL, FIELDSYNC_EIO, FIELDSYNC_ENOMEM, FIELDSYNC_ETOOLARGE (the page
 * would pass 64 MiB: ask for fewer with limit), FIELDSYNC_ECLOSED.
 */
FIELDSYNC_API fieldsync_status_t fieldsync_list(fieldsync_t *fs, const fieldsync_query_t *q,
                                                char **json) FIELDSYNC_MUST_CHECK;

/* The sync state of the device. */
typedef enum fieldsync_state {
    FIELDSYNC_STATE_IDLE = 0,      /* nothing to do, or not started */
    FIELDSYNC_STATE_SYNCING = 1,   /* pushing or pulling */
    FIELDSYNC_STATE_OFFLINE = 2,   /* the server cannot be reached; next_attempt_ms says when */
    FIELDSYNC_STATE_ATTENTION = 3, /* the server refuses this device (credentials): a person
                                      must fix the configuration; retried on a long backoff */
    FIELDSYNC_STATE_STOPPED = 4    /* the sync thread ended (fieldsync_stop); the last event */
} fieldsync_state_t;

/* "idle", "syncing", "offline", "attention", "stopped". */
FIELDSYNC_API const char *fieldsync_state_str(fieldsync_state_t s);

/* The device's status. reason and last_error_msg may quote the server: each is one line, its
 * control characters and the characters that reorder text (bidi overrides, isolates, marks,
 * line separators) shown as '?'. */
typedef struct fieldsync_sync_status {
    uint32_t size; /* fieldsync_status(): set by the caller to sizeof */
    fieldsync_state_t state;
    char reason[128];              /* a short phrase: "pushing 100 ops", "server said 503" */
    int64_t queue_depth;           /* ops recorded and not yet answered by the server */
    int64_t oldest_pending_age_ms; /* 0 when the queue is empty */
    int64_t open_conflicts;        /* conflicts and rejections waiting for a person */
    int64_t last_sync_ms;          /* the last complete sync; 0: never */
    int64_t next_attempt_ms;       /* backing off until then; 0: no backoff */
    int64_t clock_offset_ms;       /* server clock minus device clock */
    fieldsync_status_t last_error; /* of the last cycle; FIELDSYNC_OK when none */
    char last_error_msg[320];      /* "" when none */
    bool stalled;                  /* the watchdog: pending ops older than stall_after_ms
                                      while the server answers */
} fieldsync_sync_status_t;

/* Fills *out (out->size set by the caller) with the device's status as the journal shows it
 * (also when the sync thread is not running: state IDLE, or OFFLINE while backing off).
 * FIELDSYNC_OK, FIELDSYNC_EINVAL, FIELDSYNC_EIO, FIELDSYNC_ENOMEM, FIELDSYNC_ECLOSED. */
FIELDSYNC_API fieldsync_status_t fieldsync_status(fieldsync_t *fs, fieldsync_sync_status_t *out)
    FIELDSYNC_MUST_CHECK;

/* The device's configuration and queue figures as a JSON object in *json (caller frees), for
 * diagnostics (`fieldsync status --json` prints it):
 *   {"device_id":"dev1","server":"https://...","pending":3,"inflight":1,"conflicts":0,
 *    "rejected":0,"oldest_pending_at_ms":...,"last_seq":17,"last_sync_ms":...,
 *    "next_attempt_ms":0,"sync_failures":0,"clock_offset_ms":-12}
 * FIELDSYNC_OK, FIELDSYNC_EINVAL, FIELDSYNC_EIO, FIELDSYNC_ENOMEM, FIELDSYNC_ECLOSED. Any thread.
 */
FIELDSYNC_API fieldsync_status_t fieldsync_info(fieldsync_t *fs, char **json) FIELDSYNC_MUST_CHECK;

/* Where an op recorded on this device stands. */
typedef enum fieldsync_op_state {
    FIELDSYNC_OP_PENDING = 0,  /* waiting to be sent */
    FIELDSYNC_OP_SENT = 1,     /* sent, no answer yet (it is resent as is: ops are idempotent) */
    FIELDSYNC_OP_DONE = 2,     /* the server applied it */
    FIELDSYNC_OP_CONFLICT = 3, /* its precondition failed on the server; open: it waits for a
                                * person (or the server's state stands: decision "server-wins") */
    FIELDSYNC_OP_REJECTED = 4, /* the server refused it for good; open: it waits for a person */
    FIELDSYNC_OP_RESOLVED = 5  /* was a conflict or a rejection, settled since: by the resolver
                                * (the server had the same, or it was recorded again as a new op)
                                * or by a person; fieldsync_conflicts(fs, true, ...) tells how */
} fieldsync_op_state_t;

/* The state of op op_id (from a fieldsync_rec_t) in *out. FIELDSYNC_OK; FIELDSYNC_ENOTFOUND
 * (never recorded here, or done and forgotten after the audit period of 30 days);
 * FIELDSYNC_EINVAL; FIELDSYNC_EIO; FIELDSYNC_ECLOSED. Any thread. */
FIELDSYNC_API fieldsync_status_t fieldsync_op_state(fieldsync_t *fs, const char *op_id,
                                                    fieldsync_op_state_t *out) FIELDSYNC_MUST_CHECK;

/* The conflicts and rejections waiting for a person (all: also resolved ones), oldest first, as
 * a JSON array in *json (caller frees); each {"op_id","seq","kind","type","id","outcome","code",
 * "reason","decision","resolution","server_version","server_fields","local"}.
 * FIELDSYNC_OK, FIELDSYNC_EIO, FIELDSYNC_ENOMEM, FIELDSYNC_ETOOLARGE (the answer would pass
 * 64 MiB: there is no paging; a long history of resolved conflicts with all), FIELDSYNC_ECLOSED.
 */
FIELDSYNC_API fieldsync_status_t fieldsync_conflicts(fieldsync_t *fs, bool all,
                                                     char **json) FIELDSYNC_MUST_CHECK;

/* Resolves the open conflict of op op_id (for an op of a group, the whole group): take_local
 * false lets the server's state stand; true records the op again on top of the server's state
 * (rec reports the new op; its op_id is "" when nothing was left to record). A create of an
 * entity the server has is taken as a transition to its status (when not the server's) and a set
 * of its other fields, in one group. Refused, the conflict left open: a transition the status
 * machine does not allow (FIELDSYNC_ETRANSITION), attendance, which is never changed
 * (FIELDSYNC_EINVAL), a group that would pass 16 ops (FIELDSYNC_ETOOLARGE). FIELDSYNC_OK,
 * FIELDSYNC_ENOTFOUND (no open conflict with that id), the recording statuses. */
FIELDSYNC_API fieldsync_status_t fieldsync_conflict_resolve(
    fieldsync_t *fs, const char *op_id, bool take_local, fieldsync_rec_t *rec) FIELDSYNC_MUST_CHECK;

/* ---- Sync ---- */

/* What one cycle did. Frozen: a caller allocates it without a size, so new figures go into a
 * struct of their own, never here. */
typedef struct fieldsync_report {
    int64_t pushed;                                  /* ops answered by the server */
    int64_t applied, duplicate, conflict, rejected;  /* per-op results */
    int64_t rebased, converged, server_wins, parked; /* the resolver's verdicts */
    int64_t pulled;                                  /* changes folded in */
    int64_t retries;                                 /* requests retried */
    int64_t bytes_sent, bytes_received;
    int64_t next_attempt_ms; /* persisted next attempt; 0: none */
    int last_http_status;    /* 0: no answer arrived */
} fieldsync_report_t;

/* fieldsync_start() flags */
#define FIELDSYNC_START_LISTEN_ONLY                                                                \
    0x1u /* deliver events, never sync: another process (the                                       \
            daemon) syncs this journal */
#define FIELDSYNC_START_FOREGROUND                                                                 \
    0x2u /* the sync thread keeps the priority of the thread                                       \
            that starts it (see below) */

/*
 * Starts the sync thread: it syncs at once, after every new record (in any process), every
 * sync_interval_ms, and at the persisted next attempt while backing off; it runs the listeners
 * (unless buffered). It runs as background work: on Linux with the SCHED_BATCH policy at the
 * starter's nice value, so that its wake-ups never preempt the app's threads (a check-in while a
 * long backlog drains), while it keeps a fair share of a busy processor: a thread starved while
 * it holds the journal would make the app's records wait as long. Listeners that it runs run so
 * too (FIELDSYNC_EVENTS_BUFFERED delivers them on the app's thread instead);
 * FIELDSYNC_START_FOREGROUND keeps the starter's scheduling. FIELDSYNC_OK; FIELDSYNC_EBUSY (already
 * started, or still stopping: wait for the STOPPED status; a fieldsync_sync_once is running on
 * this handle; or called from a listener);
 * FIELDSYNC_ENOTFOUND (not initialised); FIELDSYNC_EINVAL (unknown flags); FIELDSYNC_ENOMEM;
 * FIELDSYNC_ECLOSED. Any thread.
 */
FIELDSYNC_API fieldsync_status_t fieldsync_start(fieldsync_t *fs,
                                                 uint32_t flags) FIELDSYNC_MUST_CHECK;

/* Asks the sync thread for a cycle at once (also while backing off). FIELDSYNC_OK,
 * FIELDSYNC_EBUSY (not started), FIELDSYNC_ECLOSED. Any thread, also a listener. */
FIELDSYNC_API fieldsync_status_t fieldsync_sync_now(fieldsync_t *fs);

/*
 * Asks the sync thread to stop, cancels the fieldsync_sync_once calls running on this handle (on
 * any thread), and returns at once. A cycle in progress ends at its next step (a request on the
 * wire within about a second; its ops are sent again next time); a cancelled fieldsync_sync_once
 * returns FIELDSYNC_ETIMEOUT. A stop is not a failure: the journal's backoff stays as it was, so
 * the next start or call syncs at once. Once the sync thread has ended, the status listeners hear
 * state FIELDSYNC_STATE_STOPPED, the last event of this start: no listener of this handle runs
 * after it until the next start or fieldsync_sync_once. An app must not free what its listeners
 * use before it. FIELDSYNC_OK (also when not started), FIELDSYNC_ECLOSED. Any thread, also a
 * listener.
 */
FIELDSYNC_API fieldsync_status_t fieldsync_stop(fieldsync_t *fs);

/*
 * Re-reads the configuration stored in the journal (init was run again) and the secret file
 * (after a key rotation). The handle's configuration is then the stored one with the members
 * given to fieldsync_open over it again, as at open; journal_path, device_id, flags, label,
 * durability and budget_bytes stay as opened. The sync interval, the stall time and
 * fieldsync_status take it at once, the sync (the thread's or fieldsync_sync_once's) at its next
 * cycle, which reads the secret file again. On failure the configuration in use stays.
 * FIELDSYNC_OK; FIELDSYNC_EINVAL (the stored configuration names a policy this library does not
 * know); FIELDSYNC_EIO; FIELDSYNC_ENOMEM; FIELDSYNC_ECLOSED. Any thread, also while the sync
 * thread runs.
 */
FIELDSYNC_API fieldsync_status_t fieldsync_reload(fieldsync_t *fs) FIELDSYNC_MUST_CHECK;

/*
 * One blocking sync cycle on the calling thread, for an app that owns its loop (as coreMQTT's
 * process loop): push every pending op, resolve conflicts, pull. ignore_backoff: try even when
 * the persisted next attempt is later. report may be NULL. Listeners (unbuffered) run on this
 * thread meanwhile. FIELDSYNC_OK; FIELDSYNC_EBUSY (another sync holds the journal, the sync
 * thread is started, or backing off: nothing sent); FIELDSYNC_ENET, FIELDSYNC_ETIMEOUT,
 * FIELDSYNC_ETLS (unreachable, or the server asked to wait longer than the retry policy's longest
 * delay: the next attempt time is persisted, the server's wait included); FIELDSYNC_ETIMEOUT also
 * when fieldsync_stop cancelled it (nothing persisted); FIELDSYNC_EAUTH; FIELDSYNC_EPROTO;
 * FIELDSYNC_ETOOLARGE (a pull cannot progress: one change is over the answer limit; the next
 * attempt time is persisted); FIELDSYNC_ENOTFOUND (not initialised); FIELDSYNC_EPERM,
 * FIELDSYNC_EINVAL (the secret file, read again at each call: open to others, or not a key);
 * storage statuses; FIELDSYNC_EBUSY also from a listener of any handle. *report is filled on
 * failure too (its error, and next_attempt_ms when one was persisted).
 */
FIELDSYNC_API fieldsync_status_t fieldsync_sync_once(
    fieldsync_t *fs, bool ignore_backoff, fieldsync_report_t *report) FIELDSYNC_MUST_CHECK;

/* The sync figures of this handle since it was opened (the sync thread's cycles and
 * fieldsync_sync_once's alike), for metrics. A caller compiled against an older header passes
 * its smaller size and gets the members it knows. */
typedef struct fieldsync_stats {
    uint32_t size;             /* set by the caller to sizeof(fieldsync_stats_t) */
    int64_t cycles_ok;         /* pushed and pulled everything */
    int64_t cycles_offline;    /* the server could not be reached, or backing off */
    int64_t cycles_error;      /* refused, protocol, storage and other failures */
    int64_t cycles_busy;       /* another process held the SYNC lock: nothing done */
    int64_t batches;           /* batches pushed */
    fieldsync_report_t totals; /* every cycle's report summed; next_attempt_ms and
                                  last_http_status are the last cycle's */
} fieldsync_stats_t;

/* Fills *out (out->size set by the caller). FIELDSYNC_OK, FIELDSYNC_EINVAL (NULL, no size),
 * FIELDSYNC_ECLOSED. Any thread, also a listener. */
FIELDSYNC_API fieldsync_status_t fieldsync_stats(fieldsync_t *fs,
                                                 fieldsync_stats_t *out) FIELDSYNC_MUST_CHECK;

/* ---- Listeners ---- */

/* Why an entity changed. */
typedef enum fieldsync_change_reason {
    FIELDSYNC_CHANGE_RECORDED = 0,   /* an op was recorded (by any process on this journal) */
    FIELDSYNC_CHANGE_SYNCED = 1,     /* the server applied our op: its version moved */
    FIELDSYNC_CHANGE_PULLED = 2,     /* a newer server state was pulled */
    FIELDSYNC_CHANGE_REBASED = 3,    /* a conflicting op was recorded again on the server's state */
    FIELDSYNC_CHANGE_SERVER_WON = 4, /* the server's state stands over ours */
    FIELDSYNC_CHANGE_PARKED = 5,     /* an op waits for a person (conflict or rejection) */
    FIELDSYNC_CHANGE_RESOLVED = 6,   /* a person resolved a conflict */
    FIELDSYNC_CHANGE_GONE = 7,       /* the entity left this device's scope and was dropped */
    FIELDSYNC_CHANGE_HELD = 8        /* the server answered our op conflict or rejected: its effect
                                      * is out of the local view until it is judged (SYNCED,
                                      * SERVER_WON or PARKED of this op follows, or REBASED of the
                                      * op recorded again, which carries that op's id; RESOLVED
                                      * when a person comes first) */
} fieldsync_change_reason_t;

/* "recorded", "synced", "pulled", "rebased", "server-won", "parked", "resolved", "gone",
 * "held". */
FIELDSYNC_API const char *fieldsync_change_reason_str(fieldsync_change_reason_t r);

typedef struct fieldsync_change {
    const char *type; /* "attendance", "jobneed", "ticket" */
    const char *id;
    int64_t version; /* the server version known now; 0: never on the server */
    fieldsync_change_reason_t reason;
    const char *op_id; /* the op concerned, or "" (pulled) */
    int64_t seq;       /* the change's position in the journal's change log */
} fieldsync_change_t;

typedef struct fieldsync_conflict_event {
    const char *op_id;
    const char *type;
    const char *id;
    const char *outcome;  /* "conflict" or "rejected" */
    const char *decision; /* "park", "server-wins" */
    const char *reason;   /* the server's or the resolver's words */
} fieldsync_conflict_event_t;

typedef void (*fieldsync_status_fn)(void *ctx, const fieldsync_sync_status_t *status);
typedef void (*fieldsync_change_fn)(void *ctx, const fieldsync_change_t *change);
typedef void (*fieldsync_conflict_fn)(void *ctx, const fieldsync_conflict_event_t *conflict);

/* A registered listener, to remove it. */
typedef struct fieldsync_listener fieldsync_listener_t;

/*
 * Adds a listener; *token (may be NULL) identifies it for fieldsync_remove_listener. Listeners
 * hear of what happens while the sync thread runs (fieldsync_start), each event once, in order:
 * status changes; changes to entities (made by this process, by another process on the same
 * journal, or pulled), within a second; the resolver's decisions to leave a conflict to a
 * person ("park") or to let the server's state stand ("server-wins"), each once while it is
 * open (a conflict the resolver settles is none: the op is then FIELDSYNC_OP_RESOLVED). ctx is
 * passed back as is.
 * A listener may call any function of this header except fieldsync_start on its own handle, and
 * fieldsync_close, fieldsync_sync_once and fieldsync_dispatch on any handle (those return
 * FIELDSYNC_EBUSY: a close, a cycle or a dispatch in a listener could wait for a delivery that
 * waits for it); fieldsync_stop is fine (it does not wait).
 * It should return quickly: the sync waits for it.
 * FIELDSYNC_OK, FIELDSYNC_EINVAL, FIELDSYNC_ENOMEM, FIELDSYNC_ECLOSED. Any thread.
 */
FIELDSYNC_API fieldsync_status_t
fieldsync_add_status_listener(fieldsync_t *fs, fieldsync_status_fn fn, void *ctx,
                              fieldsync_listener_t **token) FIELDSYNC_MUST_CHECK;
FIELDSYNC_API fieldsync_status_t
fieldsync_add_change_listener(fieldsync_t *fs, fieldsync_change_fn fn, void *ctx,
                              fieldsync_listener_t **token) FIELDSYNC_MUST_CHECK;
FIELDSYNC_API fieldsync_status_t
fieldsync_add_conflict_listener(fieldsync_t *fs, fieldsync_conflict_fn fn, void *ctx,
                                fieldsync_listener_t **token) FIELDSYNC_MUST_CHECK;

/* Removes a listener (frees token). When it returns, that listener is not running and will not
 * run again, except when called from that listener itself (then it returns at once and the
 * listener is not called again). FIELDSYNC_OK, FIELDSYNC_ENOTFOUND, FIELDSYNC_ECLOSED. */
FIELDSYNC_API fieldsync_status_t fieldsync_remove_listener(fieldsync_t *fs,
                                                           fieldsync_listener_t *token);

/*
 * Buffered delivery (FIELDSYNC_EVENTS_BUFFERED at open): events wait in the handle until the
 * app calls fieldsync_dispatch(), which runs the listeners on the calling thread for every event
 * waiting. *fd is a file descriptor that is readable exactly while events wait: poll it in the
 * app's main loop (GLib, Qt, libuv all take one). The fd is the library's: do not read or close
 * it. FIELDSYNC_OK, FIELDSYNC_EINVAL (not buffered), FIELDSYNC_ECLOSED; on failure *fd is -1.
 */
FIELDSYNC_API fieldsync_status_t fieldsync_event_fd(fieldsync_t *fs, int *fd) FIELDSYNC_MUST_CHECK;

/* Runs the listeners for every event waiting, on the calling thread; *delivered (may be NULL)
 * counts them. Call it from one thread at a time. FIELDSYNC_OK, FIELDSYNC_EINVAL (not
 * buffered), FIELDSYNC_EBUSY (called from a listener), FIELDSYNC_ECLOSED. */
FIELDSYNC_API fieldsync_status_t fieldsync_dispatch(fieldsync_t *fs, size_t *delivered);

#ifdef __cplusplus
}
#endif

#endif
