/* fieldsync: the lock manager: leases in the journal's locks table, liveness by OFD locks. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "port/alloc.h"
#include "port/jsonstr.h"
#include "port/limits.h"
#include "storage/db.h"
#include "storage/lock.h"
#include "storage/lock_internal.h"

/*
 * How it works.
 *
 * State lives in the journal (tables lock_holders and locks, see storage/db.h), so it is shared by
 * every process that opens the journal and a journal write can check its fence in its own
 * transaction. Each manager registers a row in lock_holders and holds, for its whole life, an OFD
 * lock on byte `id` of "<journal>.locks". A holder is dead exactly when that byte can be locked by
 * someone else; the kernel drops OFD locks when the last descriptor of the holder closes, so a
 * crash, a kill or a power cut releases them. The registration takes its byte inside the same
 * write transaction that inserts its row, so no one can ever see a registered holder whose byte is
 * not locked yet. Holder ids come from AUTOINCREMENT and are never reused.
 *
 * Holding and releasing. While a manager holds a lock it also holds an OFD lock on its in-use byte
 * for the key, in its own range of "<journal>.locks" (in_use_byte()), and its memory lists the
 * lock (m->in_use). A release writes nothing: it lets the byte go and marks the entry idle; the
 * row keeps naming the manager, which is now idle on it. So the locks table says who holds a key
 * only together with that byte: a row's holder holds the lock when it is alive and its in-use byte
 * for the key is locked. Its lease and token in the row are those of its last acquisition, since
 * every acquisition is written (below), so a successor's token is exact and a hung holder's lease
 * is known to everyone.
 *
 * An acquisition is first tried as one statement (retake()): an UPDATE of a row that still names
 * this manager, idle, with the token it left there (remembered for its last IDLE_MAX released
 * keys), or an INSERT of a key that has no row yet (token 1). A lock this manager holds is never
 * retaken: its memory tells. Otherwise one BEGIN IMMEDIATE transaction
 * reads the key's row; the lock is free when its holder is dead, alive but idle (its in-use byte
 * can be taken, and is let go at once), or using it past its lease; then the token is the old one
 * plus one. The in-use byte is taken before the row is written, so a prober that finds it free
 * before the write finds the row changed when it writes: it is in the same transaction order. A
 * lock held by someone alive is waited for outside any transaction: threads sharing the manager
 * are woken by its condition variable on release, others (other managers, other processes) are
 * polled with a backoff from 1 ms to 20 ms, and the poll is moved earlier to the moment the
 * holder's lease runs out.
 *
 * A release within the lease needs no look at the row: no one takes a lock from a live holder
 * using it before its lease runs out. After the lease it reads the row to tell FSA_ELOST. A fence
 * is checked against the row's token, which is the last acquisition's; a released lock's
 * fsa_lock_t gives no fence.
 *
 * Time: leases are on the port's monotonic clock, CLOCK_MONOTONIC on posix, which is the same for
 * every process on the device. A reboot starts a new epoch, but a reboot also kills every holder,
 * and dead holders are found by their liveness lock, never by time.
 *
 * Durability. The manager commits with synchronous=NORMAL unless opts.durable: in WAL mode a
 * commit is then appended to the WAL without an fsync. A process crash loses nothing (the WAL is in
 * the page cache); a power cut may lose the last lock commits, and with them the last tokens
 * issued, so after a power cut a token may be issued a second time. That is safe, because:
 *   1. The WAL is one append-only log, and fsync makes a whole file durable, whichever process
 *      wrote it. A journal write under token T commits with synchronous=FULL after T's
 *      acquisition, so it makes that acquisition durable too: a token that fenced a durable write
 *      is never issued again.
 *   2. A token lost in a power cut fenced no durable write, and its holder died with the power, so
 *      no one can present it again. Tokens never leave the device (PROTOCOL.md carries none).
 *   3. Locks held at the cut come back with dead holders and are taken over at once.
 * The fsync that FULL would add (one per acquire-release pair) costs milliseconds on eMMC and buys
 * nothing the journal's own fsync does not already give. A caller that exports tokens beyond the
 * journal sets opts.durable.
 *
 * Layering: the port has no call for the process id, so holder_pid() calls getpid() itself. It is
 * the only OS call here besides SQLite's own; it belongs in the port when the port next grows.
 */

/* The SYNC lock: one sync cycle at a time per device. Lease 120 s: a cycle sends at most a batch
 * (FSA_LIMIT_BATCH_OPS ops, FSA_LIMIT_BODY_BYTES) and pulls once, under a retry policy whose delays
 * add up to seconds; 120 s leaves room for a slow cellular link, and the engine renews the lease
 * between batches (fsa_lock_renew) for longer cycles. A hung but living holder is the only case the
 * lease covers; a dead one is replaced at once. Wait 0: whoever finds a cycle running has nothing
 * to add, since the running cycle or the next one takes every pending op; waiting behind it would
 * only run a second, empty cycle. */
static const fsa_lock_config_t configs[FSA__LOCK_KIND_COUNT] = {
    [FSA_LOCK_ATTENDANCE_UPDATE] = {"ATTENDANCE_UPDATE", 10 * FSA_NS_PER_S, 5 * FSA_NS_PER_S},
    [FSA_LOCK_JOB_WORKFLOW_UPDATE] = {"JOB_WORKFLOW_UPDATE", 15 * FSA_NS_PER_S, 10 * FSA_NS_PER_S},
    [FSA_LOCK_TICKET_ESCALATION] = {"TICKET_ESCALATION", 15 * FSA_NS_PER_S, 10 * FSA_NS_PER_S},
    [FSA_LOCK_JSON_FIELD_UPDATE] = {"JSON_FIELD_UPDATE", 10 * FSA_NS_PER_S, 5 * FSA_NS_PER_S},
    [FSA_LOCK_SYNC] = {"SYNC", 120 * FSA_NS_PER_S, 0},
};

#define POLL_FIRST_NS (1 * FSA_NS_PER_MS)
#define POLL_MAX_NS (20 * FSA_NS_PER_MS)
/* Journal paths are file system paths; a longer one is a mistake, not a file. */
#define DEFAULT_LABEL "fieldsync"

/* A lock this manager holds now (held: some fsa_lock_t has it), or released and still named by
 * its row as far as we know (idle: token is the row's, so the next acquisition can update the row
 * without reading it). byte: its in-use byte, locked while a held entry has it (two keys of this
 * manager may share one). */
typedef struct in_use {
    char key[FSA_LOCK_KEY_BYTES];
    int64_t token;
    int64_t expires_ns;
    uint64_t byte;
    bool held;
} in_use_t;

/* Idle entries kept: a manager's recent keys (a guard re-records the same job). */
#define IDLE_MAX 16

struct fsa_lockmgr {
    fsa_port_t *port;
    fsa_mutex_t *mu;      /* guards the connection (each transaction) and everything below */
    fsa_cond_t *released; /* broadcast when a lock of this manager is released */
    fsa_flock_t *live;    /* our liveness byte `id`, and the probe for other holders' bytes */
    sqlite3 *db;
    fsa_flock_t *users; /* membership of the journal's users (db.c) */
    sqlite3_stmt *begin, *commit, *rollback, *get, *take, *retake, *check, *renew, *reuse;
    int64_t id;
    in_use_t *in_use; /* the locks this manager holds or recently held, one entry per key */
    size_t n_in_use, cap_in_use;
    char label[FSA_LOCK_LABEL_BYTES];
    size_t held; /* fsa_lock_t currently held through this manager */

    uint64_t acquired, contended, timed_out, busy, expired, dead_takeovers, lost, releases;
    double wait_sum_ns, hold_sum_ns; /* doubles: int64 sums of ns overflow after ~300 years */
    int64_t wait_max_ns, hold_max_ns;
};

/* What an attempt found in the way. */
typedef struct holder_seen {
    int64_t id;
    int64_t token;
    int64_t pid;
    int64_t expires_ns;
    char label[FSA_LOCK_LABEL_BYTES];
} holder_seen_t;

/* Most callers pass an error buffer; those that do not get a scratch one, so the code below can
 * always write. */
#define ERR_SCRATCH(err, errlen, scratch)                                                          \
    do {                                                                                           \
        if ((err) == NULL || (errlen) == 0) {                                                      \
            (err) = (scratch);                                                                     \
            (errlen) = sizeof(scratch);                                                            \
        }                                                                                          \
        (err)[0] = '\0';                                                                           \
    } while (0)

const fsa_lock_config_t *fsa_lock_config(fsa_lock_kind_t kind)
{
    if ((int)kind < 0 || kind >= FSA__LOCK_KIND_COUNT)
        return NULL;
    return &configs[kind];
}

fsa_status_t fsa_lock_kind_parse(const char *name, fsa_lock_kind_t *out)
{
    if (name == NULL || out == NULL)
        return FSA_EINVAL;
    for (int k = 0; k < FSA__LOCK_KIND_COUNT; k++) {
        if (strcmp(configs[k].name, name) == 0) {
            *out = (fsa_lock_kind_t)k;
            return FSA_OK;
        }
    }
    return FSA_EINVAL;
}

static bool valid_name(const char *name)
{
    size_t n = 0;
    for (; name[n] != '\0'; n++) {
        char c = name[n];
        if (n >= FSA_LOCK_NAME_MAX ||
            !((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return n > 0;
}

/* Control characters would break log lines and are never part of an id. */
static bool valid_resource(const char *resource)
{
    if (resource[0] == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)resource; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return false;
    }
    return true;
}

static bool valid_label(const char *label)
{
    size_t n = 0;
    for (; label[n] != '\0'; n++) {
        if (n >= FSA_LOCK_LABEL_BYTES - 1 || label[n] < 0x20 || label[n] > 0x7e)
            return false;
    }
    return n > 0;
}

fsa_status_t fsa_lock_key(const char *name, const char *resource, char *out, size_t outlen)
{
    if (out == NULL || outlen == 0)
        return FSA_EINVAL;
    out[0] = '\0';
    if (name == NULL || resource == NULL || !valid_name(name) || !valid_resource(resource))
        return FSA_EINVAL;
    size_t len = strlen(name) + 1 + strlen(resource);
    if (len > FSA_LIMIT_LOCK_KEY_BYTES || len >= outlen)
        return FSA_ETOOLARGE;
    snprintf(out, outlen, "%s:%s", name, resource);
    return FSA_OK;
}

void fsa_lock_init(fsa_lock_t *l)
{
    if (l != NULL)
        memset(l, 0, sizeof *l);
}

bool fsa_lock_held(const fsa_lock_t *l)
{
    return l != NULL && l->mgr != NULL;
}

int64_t fsa_lockmgr_holder_id(const fsa_lockmgr_t *m)
{
    return m != NULL ? m->id : 0;
}

fsa_fence_t fsa_lock_fence(const fsa_lock_t *l)
{
    fsa_fence_t f = {NULL, 0};
    if (fsa_lock_held(l)) {
        f.key = l->key;
        f.token = l->token;
    }
    return f;
}

static int64_t holder_pid(void)
{
    return (int64_t)getpid(); /* see "Layering" above */
}

/* A wait as a person reads it: "10 s", "250 ms". */
static void format_duration(int64_t ns, char *buf, size_t buflen)
{
    if (ns % FSA_NS_PER_S == 0)
        snprintf(buf, buflen, "%" PRId64 " s", ns / FSA_NS_PER_S);
    else
        snprintf(buf, buflen, "%" PRId64 " ms", (ns + FSA_NS_PER_MS / 2) / FSA_NS_PER_MS);
}

/* rc may be an extended code (the journal connection enables them): compare its primary code. */
static void db_error(fsa_lockmgr_t *m, int rc, const char *what, char *err, size_t errlen)
{
    bool busy = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
    snprintf(err, errlen, "lock manager: %s: %s", what,
             busy ? "journal busy (another writer)" : sqlite3_errmsg(m->db));
}

/* Runs a statement that returns no rows and resets it. */
static int step_done(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void rollback_if_open(fsa_lockmgr_t *m)
{
    if (!sqlite3_get_autocommit(m->db))
        (void)step_done(m->rollback);
}

/* True unless the holder's liveness byte can be locked. A probe that fails for another reason
 * counts as alive: we never take a lock from a holder we cannot prove dead. The byte is released
 * at once, so a concurrent probe of the same byte may see a dead holder as alive for an instant;
 * that only delays a takeover to the next poll. */
static bool holder_alive(fsa_lockmgr_t *m, int64_t holder)
{
    if (holder == m->id)
        return true; /* our own byte: probing it through our own descriptor would succeed */
    if (holder <= 0)
        return false;
    fsa_port_t *p = m->port;
    if (p->flock_try(p->ctx, m->live, (uint64_t)holder) != FSA_OK)
        return true;
    p->flock_release(p->ctx, m->live, (uint64_t)holder);
    return false;
}

static void copy_text(char *dst, size_t dstlen, const unsigned char *src)
{
    snprintf(dst, dstlen, "%s", src != NULL ? (const char *)src : "");
}

/* ---- in-use bytes ---- */

/* Holder h's in-use byte for key: in h's own range of "<journal>.locks", above every liveness byte
 * (holder ids stay far below 2^32). 2^16 bytes per holder: two keys of one holder share a byte
 * only when their hashes collide, which costs a waiter a wait for the lease, never a wrong
 * takeover. */
#define IN_USE_BASE (UINT64_C(1) << 32)
#define IN_USE_SPAN (UINT64_C(1) << 16)

static uint64_t in_use_byte(int64_t holder, const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++)
        h = (h ^ *p) * 16777619u;
    return IN_USE_BASE + (uint64_t)holder * IN_USE_SPAN + h % IN_USE_SPAN;
}

static in_use_t *find_in_use(fsa_lockmgr_t *m, const char *key)
{
    for (size_t i = 0; i < m->n_in_use; i++) {
        if (strcmp(m->in_use[i].key, key) == 0)
            return &m->in_use[i];
    }
    return NULL;
}

/* The held entry of key, or NULL. */
static in_use_t *find_held(fsa_lockmgr_t *m, const char *key)
{
    in_use_t *e = find_in_use(m, key);
    return e != NULL && e->held ? e : NULL;
}

static bool byte_in_use(const fsa_lockmgr_t *m, uint64_t byte)
{
    for (size_t i = 0; i < m->n_in_use; i++) {
        if (m->in_use[i].held && m->in_use[i].byte == byte)
            return true;
    }
    return false;
}

/* Takes our in-use byte (unless a lock we hold has it already). Only probes by other managers take
 * it, each for an instant, so a busy byte is tried again. */
static fsa_status_t lock_byte(fsa_lockmgr_t *m, uint64_t byte)
{
    if (byte_in_use(m, byte))
        return FSA_OK;
    fsa_port_t *p = m->port;
    fsa_status_t st = FSA_EBUSY;
    for (int i = 0; i < 1000 && st == FSA_EBUSY; i++) {
        st = p->flock_try(p->ctx, m->live, byte);
        if (st == FSA_EBUSY)
            p->sleep(p->ctx, 20 * 1000);
    }
    return st;
}

/* Lets go of the byte unless a lock we still hold has it. */
static void unlock_byte(fsa_lockmgr_t *m, uint64_t byte)
{
    if (!byte_in_use(m, byte))
        m->port->flock_release(m->port->ctx, m->live, byte);
}

/* The entry of key (a new idle one, token 0, when there is none), or NULL without memory. */
static in_use_t *entry_for(fsa_lockmgr_t *m, const char *key, uint64_t byte)
{
    in_use_t *e = find_in_use(m, key);
    if (e != NULL)
        return e;
    if (m->n_in_use == m->cap_in_use) {
        size_t cap = m->cap_in_use > 0 ? m->cap_in_use * 2 : 8;
        in_use_t *grown = fsa_realloc(m->in_use, cap * sizeof *grown);
        if (grown == NULL)
            return NULL;
        m->in_use = grown;
        m->cap_in_use = cap;
    }
    e = &m->in_use[m->n_in_use++];
    memset(e, 0, sizeof *e);
    snprintf(e->key, sizeof e->key, "%s", key);
    e->byte = byte;
    return e;
}

/* Marks e idle (token: what the row holds as far as we know, 0 when unknown), lets go of its byte
 * unless a held lock has it, and forgets other idle entries beyond IDLE_MAX. */
static void set_idle(fsa_lockmgr_t *m, in_use_t *e, int64_t token)
{
    e->held = false;
    e->token = token;
    unlock_byte(m, e->byte);
    size_t idle = 0;
    for (size_t i = 0; i < m->n_in_use; i++)
        idle += !m->in_use[i].held;
    for (size_t i = 0; i < m->n_in_use && idle > IDLE_MAX;) {
        if (!m->in_use[i].held && &m->in_use[i] != e) {
            m->in_use[i] = m->in_use[--m->n_in_use];
            if (e == &m->in_use[m->n_in_use])
                e = &m->in_use[i]; /* moved */
            idle--;
        } else {
            i++;
        }
    }
}

/* True when holder (alive, not us) is using key now: its in-use byte cannot be taken. The byte is
 * let go at once. A probe that fails for another reason than EBUSY counts as in use: we never
 * take a lock we cannot prove idle. */
static bool holder_using(fsa_lockmgr_t *m, int64_t holder, const char *key)
{
    fsa_port_t *p = m->port;
    uint64_t byte = in_use_byte(holder, key);
    if (p->flock_try(p->ctx, m->live, byte) != FSA_OK)
        return true;
    p->flock_release(p->ctx, m->live, byte);
    return false;
}

static void fill_lock(fsa_lockmgr_t *m, fsa_lock_t *out, const char *key, int64_t token,
                      int64_t lease_ns, fsa_mono_t now, fsa_mono_t expires)
{
    out->mgr = m;
    snprintf(out->key, sizeof out->key, "%s", key);
    out->token = token;
    out->lease_ns = lease_ns;
    out->acquired = now;
    out->expires = expires;
    m->held++;
}

/*
 * The uncontended acquisition, one statement in its own write transaction: when e (our entry of
 * the key) knows the row's token from our last release, an UPDATE of our own idle row; otherwise
 * an INSERT of a key that has no row yet. Returns FSA_OK with *token > 0 when taken, 0 when the
 * row is not as expected (the caller then reads it, in a transaction).
 */
static fsa_status_t retake(fsa_lockmgr_t *m, const in_use_t *e, const char *key, fsa_mono_t now,
                           fsa_mono_t expires, int64_t *token, char *err, size_t errlen)
{
    *token = 0;
    int rc;
    if (e != NULL && e->token > 0 && e->token < INT64_MAX) {
        sqlite3_stmt *s = m->reuse;
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, m->id);
        sqlite3_bind_int64(s, 3, e->token + 1);
        sqlite3_bind_int64(s, 4, now.ns);
        sqlite3_bind_int64(s, 5, expires.ns);
        sqlite3_bind_int64(s, 6, e->token);
        rc = step_done(s);
        sqlite3_clear_bindings(s);
        if (rc != SQLITE_OK) {
            db_error(m, rc, "cannot write the locks table", err, errlen);
            return fsa__db_status(rc);
        }
        if (sqlite3_changes(m->db) == 1) {
            *token = e->token + 1;
            return FSA_OK;
        }
    }
    /* A key no one ever took: token 1, if no row appeared meanwhile. */
    sqlite3_bind_text(m->retake, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(m->retake, 2, m->id);
    sqlite3_bind_text(m->retake, 3, m->label, -1, SQLITE_STATIC);
    sqlite3_bind_int64(m->retake, 4, now.ns);
    sqlite3_bind_int64(m->retake, 5, expires.ns);
    rc = step_done(m->retake);
    sqlite3_clear_bindings(m->retake);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot write the locks table", err, errlen);
        return fsa__db_status(rc);
    }
    if (sqlite3_changes(m->db) == 1)
        *token = 1;
    return FSA_OK;
}

/* e is held with token: out filled. */
static void mark_held(fsa_lockmgr_t *m, in_use_t *e, fsa_lock_t *out, int64_t token,
                      int64_t lease_ns, fsa_mono_t now, fsa_mono_t expires)
{
    e->held = true;
    e->token = token;
    e->expires_ns = expires.ns;
    fill_lock(m, out, e->key, token, lease_ns, now, expires);
}

/*
 * One attempt, with m->mu held: takes the lock if it is free and fills out, or reports the holder
 * in *seen. Sets *taken. Returns FSA_OK or a failure (nothing taken; any transaction rolled back).
 */
static fsa_status_t try_take(fsa_lockmgr_t *m, const char *key, int64_t lease_ns, fsa_lock_t *out,
                             bool *taken, holder_seen_t *seen, char *err, size_t errlen)
{
    *taken = false;
    fsa_mono_t now = m->port->mono_now(m->port->ctx);
    fsa_mono_t expires = fsa_mono_add_ns(now, lease_ns);
    /* Another thread of ours holds it: wait for its release, or take over its run-out lease. */
    in_use_t *held = find_held(m, key);
    if (held != NULL && held->expires_ns > now.ns) {
        seen->id = m->id;
        seen->token = held->token;
        seen->pid = holder_pid();
        seen->expires_ns = held->expires_ns;
        snprintf(seen->label, sizeof seen->label, "%s", m->label);
        return FSA_OK;
    }
    bool overrun = held != NULL; /* ours, its lease run out: the old fsa_lock_t loses it */
    uint64_t byte = in_use_byte(m->id, key);
    in_use_t *e = entry_for(m, key, byte);
    if (e == NULL) {
        snprintf(err, errlen, "lock %s: out of memory", key);
        return FSA_ENOMEM;
    }
    fsa_status_t st = overrun ? FSA_OK : lock_byte(m, byte);
    if (st != FSA_OK) {
        snprintf(err, errlen, "lock %s: cannot lock its in-use byte in the .locks file (%s)", key,
                 fsa_status_str(st));
        return st == FSA_EBUSY ? FSA_EIO : st;
    }
    if (!overrun) {
        int64_t token = 0;
        st = retake(m, e, key, now, expires, &token, err, errlen);
        if (st == FSA_OK && token > 0) {
            mark_held(m, e, out, token, lease_ns, now, expires);
            *taken = true;
            return FSA_OK;
        }
        if (st != FSA_OK) {
            set_idle(m, e, 0);
            return st;
        }
    }

    int rc = step_done(m->begin);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot start a transaction", err, errlen);
        if (!overrun)
            set_idle(m, e, 0);
        return fsa__db_status(rc);
    }
    int64_t old_token = 0;
    bool free_now = true, expired = false, dead = false;
    sqlite3_bind_text(m->get, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(m->get);
    if (rc == SQLITE_ROW) {
        old_token = sqlite3_column_int64(m->get, 0);
        if (sqlite3_column_type(m->get, 1) != SQLITE_NULL) {
            seen->id = sqlite3_column_int64(m->get, 1);
            seen->token = old_token;
            copy_text(seen->label, sizeof seen->label, sqlite3_column_text(m->get, 2));
            seen->expires_ns = sqlite3_column_int64(m->get, 3);
            seen->pid = sqlite3_column_int64(m->get, 4);
            expired = seen->expires_ns <= now.ns;
            if (seen->id == m->id) {
                /* Ours: held by another thread (its lease ran out, above) or idle. */
                expired = overrun;
                free_now = true;
            } else {
                dead = !holder_alive(m, seen->id);
                /* A live holder that is not using it released it without writing. */
                bool using = !dead && holder_using(m, seen->id, key);
                expired = using && expired;
                free_now = dead || !using || expired;
            }
        }
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_reset(m->get);
    sqlite3_clear_bindings(m->get);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot read the locks table", err, errlen);
        goto fail;
    }
    if (!free_now) {
        rc = step_done(m->commit);
        if (rc != SQLITE_OK) {
            db_error(m, rc, "cannot end a transaction", err, errlen);
            goto fail;
        }
        set_idle(m, e, 0); /* someone else's now */
        return FSA_OK;
    }
    if (old_token == INT64_MAX) {
        snprintf(err, errlen, "lock %s: fencing tokens exhausted", key);
        rollback_if_open(m);
        if (!overrun)
            set_idle(m, e, 0);
        return FSA_EIO;
    }
    sqlite3_bind_text(m->take, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(m->take, 2, old_token + 1);
    sqlite3_bind_int64(m->take, 3, m->id);
    sqlite3_bind_text(m->take, 4, m->label, -1, SQLITE_STATIC);
    sqlite3_bind_int64(m->take, 5, now.ns);
    sqlite3_bind_int64(m->take, 6, expires.ns);
    rc = step_done(m->take);
    sqlite3_clear_bindings(m->take);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot write the locks table", err, errlen);
        goto fail;
    }
    rc = step_done(m->commit);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot commit", err, errlen);
        goto fail;
    }
    /* A dead holder's run-out lease counts as a death: the death is why it ran out. */
    if (dead)
        m->dead_takeovers++;
    else if (expired)
        m->expired++;
    if (dead || expired) {
        fsa_log(m->port, FSA_LOG_INFO, "lock %s: took over token %" PRId64 " from %s (%s)", key,
                old_token, seen->label, dead ? "holder died" : "lease ran out");
    }
    mark_held(m, e, out, old_token + 1, lease_ns, now, expires);
    *taken = true;
    return FSA_OK;
fail:
    rollback_if_open(m);
    if (!overrun)
        set_idle(m, e, 0);
    return fsa__db_status(rc);
}

fsa_status_t fsa_lock_acquire(fsa_lockmgr_t *m, fsa_lock_kind_t kind, const char *resource,
                              fsa_lock_t *out, char *err, size_t errlen)
{
    const fsa_lock_config_t *cfg = fsa_lock_config(kind);
    if (cfg == NULL) {
        char scratch[8];
        ERR_SCRATCH(err, errlen, scratch);
        fsa_lock_init(out);
        snprintf(err, errlen, "unknown lock kind %d", (int)kind);
        return FSA_EINVAL;
    }
    return fsa_lock_acquire_cfg(m, cfg, resource, out, err, errlen);
}

fsa_status_t fsa_lock_acquire_cfg(fsa_lockmgr_t *m, const fsa_lock_config_t *cfg,
                                  const char *resource, fsa_lock_t *out, char *err, size_t errlen)
{
    char scratch[8];
    ERR_SCRATCH(err, errlen, scratch);
    fsa_lock_init(out);
    if (m == NULL || cfg == NULL || out == NULL || cfg->name == NULL || cfg->lease_ns <= 0 ||
        cfg->wait_ns < 0) {
        snprintf(err, errlen, "lock acquire: missing or invalid argument");
        return FSA_EINVAL;
    }
    char key[FSA_LOCK_KEY_BYTES];
    fsa_status_t st = fsa_lock_key(cfg->name, resource, key, sizeof key);
    if (st != FSA_OK) {
        snprintf(err, errlen, "lock acquire: %s (name \"%.64s\", resource of %zu bytes)",
                 st == FSA_ETOOLARGE ? "key longer than the limit" : "invalid name or resource",
                 cfg->name, resource != NULL ? strlen(resource) : (size_t)0);
        return st;
    }

    fsa_port_t *p = m->port;
    fsa_mono_t t0 = p->mono_now(p->ctx);
    fsa_mono_t deadline = fsa_mono_add_ns(t0, cfg->wait_ns);
    int64_t interval = POLL_FIRST_NS;
    bool contended = false, taken = false;
    holder_seen_t seen;
    memset(&seen, 0, sizeof seen);

    p->mutex_lock(p->ctx, m->mu);
    for (;;) {
        st = try_take(m, key, cfg->lease_ns, out, &taken, &seen, err, errlen);
        if (st != FSA_OK || taken)
            break;
        contended = true;
        fsa_mono_t now = p->mono_now(p->ctx);
        if (now.ns >= deadline.ns) {
            if (cfg->wait_ns == 0) {
                st = FSA_EBUSY;
                m->busy++;
                snprintf(err, errlen,
                         "lock %s is busy: held by %s (pid %" PRId64 ", token %" PRId64 ")", key,
                         seen.label, seen.pid, seen.token);
            } else {
                char waited[32];
                format_duration(cfg->wait_ns, waited, sizeof waited);
                st = FSA_ELOCKTIMEOUT;
                m->timed_out++;
                snprintf(err, errlen,
                         "lock %s not acquired in %s: held by %s (pid %" PRId64 ", token %" PRId64
                         ")",
                         key, waited, seen.label, seen.pid, seen.token);
            }
            break;
        }
        /* Wake at the next poll, at the deadline, or when the holder's lease runs out. */
        int64_t wake = fsa_mono_add_ns(now, interval).ns;
        if (deadline.ns < wake)
            wake = deadline.ns;
        if (seen.expires_ns > now.ns && seen.expires_ns < wake)
            wake = seen.expires_ns;
        if (seen.id == m->id) {
            /* A thread sharing this manager holds it: its release signals us. */
            fsa_mono_t until = {wake};
            (void)p->cond_wait(p->ctx, m->released, m->mu, until);
        } else {
            p->mutex_unlock(p->ctx, m->mu);
            p->sleep(p->ctx, wake - now.ns);
            p->mutex_lock(p->ctx, m->mu);
        }
        if (interval < POLL_MAX_NS)
            interval = interval * 2 < POLL_MAX_NS ? interval * 2 : POLL_MAX_NS;
    }
    if (contended)
        m->contended++;
    if (taken) {
        int64_t waited = fsa_mono_diff_ns(out->acquired, t0);
        m->acquired++;
        m->wait_sum_ns += (double)waited;
        if (waited > m->wait_max_ns)
            m->wait_max_ns = waited;
    }
    p->mutex_unlock(p->ctx, m->mu);
    return st;
}

/* Shared by release and renew: runs s (bound with key, holder, token in 1..3) and tells whether
 * the row was still ours. With m->mu held. */
static fsa_status_t update_own(fsa_lockmgr_t *m, sqlite3_stmt *s, const fsa_lock_t *l, bool *ours,
                               const char *what, char *err, size_t errlen)
{
    sqlite3_bind_text(s, 1, l->key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, m->id);
    sqlite3_bind_int64(s, 3, l->token);
    int rc = step_done(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_OK) {
        db_error(m, rc, what, err, errlen);
        return fsa__db_status(rc);
    }
    *ours = sqlite3_changes(m->db) == 1;
    return FSA_OK;
}

static void report_lost(fsa_lockmgr_t *m, fsa_lock_t *l, char *err, size_t errlen)
{
    m->lost++;
    m->held--;
    snprintf(err, errlen,
             "lock %s (token %" PRId64 ") was lost: its lease ran out and it was taken over",
             l->key, l->token);
    fsa_log(m->port, FSA_LOG_WARN, "%s", err);
    l->mgr = NULL;
}

/* Whether l's row is still l's (same holder, same token): a read, no transaction of its own. */
static fsa_status_t still_ours(fsa_lockmgr_t *m, const fsa_lock_t *l, bool *ours, char *err,
                               size_t errlen)
{
    sqlite3_bind_text(m->check, 1, l->key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(m->check, 2, m->id);
    sqlite3_bind_int64(m->check, 3, l->token);
    int rc = sqlite3_step(m->check);
    *ours = rc == SQLITE_ROW && sqlite3_column_int(m->check, 0) != 0;
    sqlite3_reset(m->check);
    sqlite3_clear_bindings(m->check);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        db_error(m, rc, "cannot read the locks table", err, errlen);
        return fsa__db_status(rc);
    }
    return FSA_OK;
}

fsa_status_t fsa_lock_release(fsa_lock_t *l, char *err, size_t errlen)
{
    char scratch[8];
    ERR_SCRATCH(err, errlen, scratch);
    if (!fsa_lock_held(l)) {
        snprintf(err, errlen, "lock release: lock not held");
        return FSA_EINVAL;
    }
    fsa_lockmgr_t *m = l->mgr;
    fsa_port_t *p = m->port;
    p->mutex_lock(p->ctx, m->mu);
    fsa_mono_t now = p->mono_now(p->ctx);
    in_use_t *e = find_held(m, l->key);
    bool ours = e != NULL && e->token == l->token;
    fsa_status_t st = FSA_OK;
    /* Within its lease nobody else can have taken it (see "Release"); after, the row tells. */
    if (ours && now.ns >= e->expires_ns)
        st = still_ours(m, l, &ours, err, errlen);
    if (st == FSA_OK && !ours) {
        if (e != NULL && e->token == l->token)
            set_idle(m, e, 0); /* taken over by another manager: the row is not ours */
        report_lost(m, l, err, errlen);
        st = FSA_ELOST;
    } else if (st == FSA_OK) {
        int64_t held_ns = fsa_mono_diff_ns(now, l->acquired);
        m->releases++;
        m->hold_sum_ns += (double)held_ns;
        if (held_ns > m->hold_max_ns)
            m->hold_max_ns = held_ns;
        m->held--;
        set_idle(m, e, l->token);
        l->mgr = NULL;
        p->cond_broadcast(p->ctx, m->released);
    }
    p->mutex_unlock(p->ctx, m->mu);
    return st;
}

fsa_status_t fsa_lock_renew(fsa_lock_t *l, int64_t lease_ns, char *err, size_t errlen)
{
    char scratch[8];
    ERR_SCRATCH(err, errlen, scratch);
    if (!fsa_lock_held(l) || lease_ns < 0) {
        snprintf(err, errlen, "lock renew: lock not held or negative lease");
        return FSA_EINVAL;
    }
    if (lease_ns == 0)
        lease_ns = l->lease_ns;
    fsa_lockmgr_t *m = l->mgr;
    fsa_port_t *p = m->port;
    p->mutex_lock(p->ctx, m->mu);
    fsa_mono_t expires = fsa_mono_add_ns(p->mono_now(p->ctx), lease_ns);
    sqlite3_bind_int64(m->renew, 4, expires.ns);
    bool ours = false;
    fsa_status_t st = update_own(m, m->renew, l, &ours, "cannot renew", err, errlen);
    in_use_t *e = find_held(m, l->key);
    if (e != NULL && e->token != l->token)
        e = NULL; /* a successor's within this manager: not l's */
    if (st == FSA_OK && !ours) {
        if (e != NULL)
            set_idle(m, e, 0);
        report_lost(m, l, err, errlen);
        st = FSA_ELOST;
    } else if (st == FSA_OK) {
        l->lease_ns = lease_ns;
        l->expires = expires;
        if (e != NULL)
            e->expires_ns = expires.ns;
    }
    p->mutex_unlock(p->ctx, m->mu);
    return st;
}

fsa_status_t fsa__lock_fence_check(sqlite3 *db, const fsa_fence_t *f)
{
    if (db == NULL || f == NULL)
        return FSA_EINVAL;
    if (f->key == NULL || f->token <= 0)
        return FSA_EFENCED;
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT token FROM locks WHERE key = ?1", -1, &s, NULL);
    if (rc != SQLITE_OK)
        return fsa__db_status(rc);
    sqlite3_bind_text(s, 1, f->key, -1, SQLITE_STATIC);
    fsa_status_t st;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        st = sqlite3_column_int64(s, 0) == f->token ? FSA_OK : FSA_EFENCED;
    else if (rc == SQLITE_DONE)
        st = FSA_EFENCED;
    else
        st = fsa__db_status(rc);
    sqlite3_finalize(s);
    return st;
}

static const char *const SQL_GET =
    "SELECT l.token, l.holder, l.holder_label, l.expires_ns, h.pid FROM locks l "
    "LEFT JOIN lock_holders h ON h.id = l.holder WHERE l.key = ?1";
static const char *const SQL_TAKE =
    "INSERT INTO locks(key, token, holder, holder_label, acquired_ns, expires_ns) "
    "VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(key) DO UPDATE SET token = excluded.token, "
    "holder = excluded.holder, holder_label = excluded.holder_label, "
    "acquired_ns = excluded.acquired_ns, expires_ns = excluded.expires_ns";
/* The uncontended acquisition of a new key (see retake()). */
static const char *const SQL_RETAKE =
    "INSERT INTO locks(key, token, holder, holder_label, acquired_ns, expires_ns) "
    "VALUES(?1, 1, ?2, ?3, ?4, ?5) ON CONFLICT(key) DO NOTHING";
/* The uncontended acquisition of a key this manager released (its token known): see retake(). */
static const char *const SQL_REUSE =
    "UPDATE locks SET token = ?3, acquired_ns = ?4, expires_ns = ?5 "
    "WHERE key = ?1 AND holder = ?2 AND token = ?6";
static const char *const SQL_CHECK = "SELECT holder = ?2 AND token = ?3 FROM locks WHERE key = ?1";
static const char *const SQL_RENEW =
    "UPDATE locks SET expires_ns = ?4 WHERE key = ?1 AND holder = ?2 AND token = ?3";
static const char *const SQL_LIST =
    "SELECT l.key, l.token, l.holder, l.holder_label, l.expires_ns, h.pid FROM locks l "
    "LEFT JOIN lock_holders h ON h.id = l.holder WHERE l.holder IS NOT NULL ORDER BY l.key";

static fsa_status_t prepare_all(fsa_lockmgr_t *m, char *err, size_t errlen)
{
    struct {
        sqlite3_stmt **s;
        const char *sql;
    } all[] = {
        {&m->begin, "BEGIN IMMEDIATE"}, {&m->commit, "COMMIT"},
        {&m->rollback, "ROLLBACK"},     {&m->get, SQL_GET},
        {&m->take, SQL_TAKE},           {&m->retake, SQL_RETAKE},
        {&m->check, SQL_CHECK},         {&m->renew, SQL_RENEW},
        {&m->reuse, SQL_REUSE},
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        int rc =
            sqlite3_prepare_v3(m->db, all[i].sql, -1, SQLITE_PREPARE_PERSISTENT, all[i].s, NULL);
        if (rc != SQLITE_OK) {
            db_error(m, rc, "cannot prepare a statement (is the journal's schema current?)", err,
                     errlen);
            return fsa__db_status(rc);
        }
    }
    return FSA_OK;
}

static void finalize_all(fsa_lockmgr_t *m)
{
    sqlite3_stmt *all[] = {m->begin,  m->commit, m->rollback, m->get,  m->take,
                           m->retake, m->check,  m->renew,    m->reuse};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(all[i]);
}

/* Runs a one-off statement whose one parameter is a holder id. */
static int exec_id(sqlite3 *db, const char *sql, int64_t id)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, id);
        rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

/* Deletes the rows of dead holders that no lock refers to (dead holders that still hold a lock
 * keep their row, so the next acquirer can name them, until it takes the lock over). Within the
 * registration transaction. Deleting the row a SELECT has just returned, while it runs, is one of
 * the changes SQLite's isolation rules declare safe. */
static int forget_dead_holders(fsa_lockmgr_t *m)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(m->db,
                                "SELECT id FROM lock_holders WHERE id NOT IN "
                                "(SELECT holder FROM locks WHERE holder IS NOT NULL)",
                                -1, &s, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0);
        rc = SQLITE_OK;
        if (id != m->id && !holder_alive(m, id))
            rc = exec_id(m->db, "DELETE FROM lock_holders WHERE id = ?1", id);
    }
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Inserts our holder row and takes its liveness byte in one transaction. */
static fsa_status_t register_holder(fsa_lockmgr_t *m, char *err, size_t errlen)
{
    fsa_port_t *p = m->port;
    int rc = step_done(m->begin);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot start registration", err, errlen);
        return fsa__db_status(rc);
    }
    bool byte_taken = false;
    fsa_status_t st = FSA_OK;
    sqlite3_stmt *s = NULL;
    rc = sqlite3_prepare_v2(
        m->db, "INSERT INTO lock_holders(pid, label, started_ms) VALUES(?1, ?2, ?3)", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, holder_pid());
        sqlite3_bind_text(s, 2, m->label, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, p->wall_now(p->ctx).ms);
        rc = sqlite3_step(s);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot register in lock_holders", err, errlen);
        goto fail;
    }
    m->id = sqlite3_last_insert_rowid(m->db);
    st = p->flock_try(p->ctx, m->live, (uint64_t)m->id);
    if (st != FSA_OK) {
        /* Ids are never reused, so only a journal replaced under a running process gets here. */
        snprintf(err, errlen, "lock manager: liveness byte %" PRId64 " is %s", m->id,
                 st == FSA_EBUSY ? "held by another process (was the journal replaced?)"
                                 : "not lockable");
        st = st == FSA_EBUSY ? FSA_EIO : st;
        goto fail;
    }
    byte_taken = true;
    rc = forget_dead_holders(m);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot clean lock_holders", err, errlen);
        goto fail;
    }
    rc = step_done(m->commit);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot commit registration", err, errlen);
        goto fail;
    }
    return FSA_OK;
fail:
    rollback_if_open(m);
    if (byte_taken)
        p->flock_release(p->ctx, m->live, (uint64_t)m->id);
    m->id = 0;
    return st != FSA_OK ? st : fsa__db_status(rc);
}

fsa_status_t fsa_lockmgr_open(fsa_port_t *port, const char *journal_path,
                              const fsa_lockmgr_opts_t *opts, fsa_lockmgr_t **out, char *err,
                              size_t errlen)
{
    char scratch[8];
    ERR_SCRATCH(err, errlen, scratch);
    if (out != NULL)
        *out = NULL;
    const char *label = opts != NULL && opts->label != NULL ? opts->label : DEFAULT_LABEL;
    if (port == NULL || journal_path == NULL || out == NULL || journal_path[0] == '\0') {
        snprintf(err, errlen, "lock manager: missing argument");
        return FSA_EINVAL;
    }
    size_t path_len = strnlen(journal_path, FSA_LIMIT_PATH_BYTES);
    if (path_len >= FSA_LIMIT_PATH_BYTES - sizeof ".locks") {
        snprintf(err, errlen, "lock manager: journal path longer than %d bytes",
                 FSA_LIMIT_PATH_BYTES);
        return FSA_EINVAL;
    }
    if (!valid_label(label)) {
        snprintf(err, errlen, "lock manager: label must be 1..%d printable ASCII characters",
                 FSA_LOCK_LABEL_BYTES - 1);
        return FSA_EINVAL;
    }

    fsa_lockmgr_t *m = fsa_calloc(1, sizeof *m);
    char *locks_path = fsa_malloc(path_len + sizeof ".locks");
    fsa_status_t st = FSA_ENOMEM;
    if (m == NULL || locks_path == NULL) {
        snprintf(err, errlen, "lock manager: out of memory");
        goto fail;
    }
    m->port = port;
    snprintf(m->label, sizeof m->label, "%s", label);
    snprintf(locks_path, path_len + sizeof ".locks", "%s.locks", journal_path);
    if ((st = port->mutex_new(port->ctx, &m->mu)) != FSA_OK ||
        (st = port->cond_new(port->ctx, &m->released)) != FSA_OK) {
        snprintf(err, errlen, "lock manager: cannot create a mutex (%s)", fsa_status_str(st));
        goto fail;
    }
    st = port->flock_open(port->ctx, locks_path, &m->live);
    if (st != FSA_OK) {
        snprintf(err, errlen, "lock manager: cannot open %s (%s)", locks_path, fsa_status_str(st));
        goto fail;
    }
    fsa_db_opts_t dbo = {
        .sync_normal = !(opts != NULL && opts->durable),
        .busy_timeout_ms = 0,
        .create = opts != NULL && opts->create,
    };
    st = fsa__db_open(port, journal_path, &dbo, &m->db, &m->users, err, errlen);
    if (st != FSA_OK)
        goto fail;
    if ((st = prepare_all(m, err, errlen)) != FSA_OK ||
        (st = register_holder(m, err, errlen)) != FSA_OK)
        goto fail;
    fsa_free(locks_path);
    *out = m;
    return FSA_OK;
fail:
    fsa_free(locks_path);
    if (m != NULL) {
        finalize_all(m);
        fsa__db_close(port, m->db, m->users);
        port->flock_close(port->ctx, m->live);
        port->cond_free(port->ctx, m->released);
        port->mutex_free(port->ctx, m->mu);
        fsa_free(m->in_use);
        fsa_free(m);
    }
    return st;
}

void fsa_lockmgr_close(fsa_lockmgr_t *m)
{
    if (m == NULL)
        return;
    fsa_port_t *p = m->port;
    if (m->held > 0)
        fsa_log(p, FSA_LOG_WARN, "lock manager %s closed with %zu locks held; releasing them",
                m->label, m->held);
    /* Free our locks and forget our row in one transaction; if that fails, the liveness byte
     * dropped below still frees them for the next acquirer. */
    int rc = step_done(m->begin);
    if (rc == SQLITE_OK)
        rc = exec_id(m->db,
                     "UPDATE locks SET holder = NULL, holder_label = NULL, acquired_ns = NULL, "
                     "expires_ns = NULL WHERE holder = ?1",
                     m->id);
    if (rc == SQLITE_OK)
        rc = exec_id(m->db, "DELETE FROM lock_holders WHERE id = ?1", m->id);
    if (rc == SQLITE_OK)
        rc = step_done(m->commit);
    if (rc != SQLITE_OK) {
        fsa_log(p, FSA_LOG_WARN, "lock manager %s: unclean close: %s", m->label,
                sqlite3_errmsg(m->db));
        rollback_if_open(m);
    }
    finalize_all(m);
    fsa__db_close(p, m->db, m->users);
    p->flock_close(p->ctx, m->live);
    p->cond_free(p->ctx, m->released);
    p->mutex_free(p->ctx, m->mu);
    fsa_free(m->in_use);
    fsa_free(m);
}

static fsa_status_t list_holders(fsa_lockmgr_t *m, fsa_lock_stats_t *out, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(m->db, SQL_LIST, -1, &s, NULL);
    fsa_mono_t now = m->port->mono_now(m->port->ctx);
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        rc = SQLITE_OK;
        const char *key = (const char *)sqlite3_column_text(s, 0);
        int64_t holder = sqlite3_column_int64(s, 2);
        bool alive = holder_alive(m, holder);
        /* A row whose live holder released it without writing is free: not listed. */
        if (key == NULL || (holder == m->id && find_held(m, key) == NULL) ||
            (holder != m->id && alive && !holder_using(m, holder, key)))
            continue;
        out->holders_total++;
        if (out->n_holders == FSA_LOCK_STATS_HOLDERS_MAX)
            continue;
        fsa_lock_holder_info_t *h = &out->holders[out->n_holders++];
        copy_text(h->key, sizeof h->key, sqlite3_column_text(s, 0));
        h->token = sqlite3_column_int64(s, 1);
        h->holder_id = holder;
        copy_text(h->label, sizeof h->label, sqlite3_column_text(s, 3));
        h->remaining_ns = sqlite3_column_int64(s, 4) - now.ns;
        h->pid = sqlite3_column_int64(s, 5);
        h->alive = alive;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        db_error(m, rc, "cannot list holders", err, errlen);
        out->n_holders = 0;
        out->holders_total = 0;
        return fsa__db_status(rc);
    }
    return FSA_OK;
}

fsa_status_t fsa_lockmgr_stats(fsa_lockmgr_t *m, fsa_lock_stats_t *out, char *err, size_t errlen)
{
    char scratch[8];
    ERR_SCRATCH(err, errlen, scratch);
    if (m == NULL || out == NULL) {
        snprintf(err, errlen, "lock stats: missing argument");
        return FSA_EINVAL;
    }
    memset(out, 0, sizeof *out);
    fsa_port_t *p = m->port;
    p->mutex_lock(p->ctx, m->mu);
    out->acquired = m->acquired;
    out->contended = m->contended;
    out->timed_out = m->timed_out;
    out->busy = m->busy;
    out->expired = m->expired;
    out->dead_takeovers = m->dead_takeovers;
    out->lost = m->lost;
    out->wait_ns_mean = m->acquired > 0 ? (int64_t)(m->wait_sum_ns / (double)m->acquired) : 0;
    out->wait_ns_max = m->wait_max_ns;
    out->hold_ns_mean = m->releases > 0 ? (int64_t)(m->hold_sum_ns / (double)m->releases) : 0;
    out->hold_ns_max = m->hold_max_ns;
    fsa_status_t st = list_holders(m, out, err, errlen);
    p->mutex_unlock(p->ctx, m->mu);
    return st;
}

/* A bounded writer: appends while there is room and counts what would have been written. */
typedef struct jbuf {
    char *buf;
    size_t cap;
    size_t len; /* the whole text's length, also past cap */
} jbuf_t;

static void jprintf(jbuf_t *j, const char *fmt, ...) FSA_PRINTF(2, 3);

static void jprintf(jbuf_t *j, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = j->len < j->cap ? j->cap - j->len : 0;
    int n = vsnprintf(room > 0 ? j->buf + j->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        j->len += (size_t)n;
}

/* A JSON string (port/jsonstr.h); counted past the end like jprintf, for *needed. */
static void jstring(jbuf_t *j, const char *s)
{
    size_t room = j->len < j->cap ? j->cap - j->len : 0;
    j->len += fsa_json_quote(s, room > 0 ? j->buf + j->len : NULL, room);
}

fsa_status_t fsa_lock_stats_json(const fsa_lock_stats_t *s, char *buf, size_t buflen,
                                 size_t *needed)
{
    if (needed != NULL)
        *needed = 0;
    if (s == NULL || buf == NULL || buflen == 0)
        return FSA_EINVAL;
    jbuf_t j = {buf, buflen, 0};
    jprintf(&j,
            "{\"acquired\":%" PRIu64 ",\"contended\":%" PRIu64 ",\"timed_out\":%" PRIu64
            ",\"busy\":%" PRIu64 ",\"expired\":%" PRIu64 ",\"dead_takeovers\":%" PRIu64
            ",\"lost\":%" PRIu64 ",\"wait_ns\":{\"mean\":%" PRId64 ",\"max\":%" PRId64
            "},\"hold_ns\":{\"mean\":%" PRId64 ",\"max\":%" PRId64 "},\"holders_total\":%zu"
            ",\"holders\":[",
            s->acquired, s->contended, s->timed_out, s->busy, s->expired, s->dead_takeovers,
            s->lost, s->wait_ns_mean, s->wait_ns_max, s->hold_ns_mean, s->hold_ns_max,
            s->holders_total);
    size_t n =
        s->n_holders < FSA_LOCK_STATS_HOLDERS_MAX ? s->n_holders : FSA_LOCK_STATS_HOLDERS_MAX;
    /* cppcheck 2.10 gives up on the PRI* formats above and takes n for 0. */
    // cppcheck-suppress knownConditionTrueFalse
    for (size_t i = 0; i < n; i++) {
        const fsa_lock_holder_info_t *h = &s->holders[i];
        jprintf(&j, "%s{\"key\":", i > 0 ? "," : "");
        jstring(&j, h->key);
        jprintf(&j, ",\"token\":%" PRId64 ",\"label\":", h->token);
        jstring(&j, h->label);
        jprintf(&j,
                ",\"pid\":%" PRId64 ",\"holder_id\":%" PRId64 ",\"remaining_ns\":%" PRId64
                ",\"alive\":%s}",
                h->pid, h->holder_id, h->remaining_ns, h->alive ? "true" : "false");
    }
    jprintf(&j, "]}");
    if (needed != NULL)
        *needed = j.len;
    if (j.len >= buflen) {
        buf[0] = '\0';
        return FSA_ETOOLARGE;
    }
    return FSA_OK;
}
