/* fieldsync: the lock manager: leases in the journal's locks table, liveness by OFD locks. */
#include <inttypes.h>
#include <stdarg.h>
#ifdef FSA_FAULT_HOOKS
#include <stdatomic.h>
#endif
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port/alloc.h"
#include "port/jsonstr.h"
#include "port/limits.h"
#include "storage/db.h"
#include "storage/lock.h"
#include "storage/lock_internal.h"
#include "storage/state_keys.h"

/*
 * How it works.
 *
 * Durable state lives in the journal (tables lock_holders and locks, see storage/db.h), so it is
 * shared by every process that opens the journal and a journal write can check its fence in its
 * own transaction. Each manager registers a row in lock_holders and holds, for its whole life, an
 * OFD lock on byte `id` of "<journal>.locks". A holder is dead exactly when that byte can be
 * locked by someone else; the kernel drops OFD locks when the last descriptor of the holder
 * closes, so a crash, a kill or a power cut releases them. The registration takes its byte inside
 * the same write transaction that inserts its row, so no one can ever see a registered holder
 * whose byte is not locked yet. Holder ids come from AUTOINCREMENT and are never reused.
 *
 * The shared token table. The first TABLE_BYTES of "<journal>.locks" are mapped shared by every
 * manager (port flock_map): one slot per key with its latest token, the manager that took it last
 * and that acquisition's lease (see the ---- the shared token table ---- section). While the table
 * is live it is the truth of a key it holds, and the locks row is its durable copy: written by
 * every acquisition that runs a transaction (below), by the first acquisition once a slot is
 * FSA__LOCK_SYNC_EVERY tokens ahead of its row, and by the last manager to close (write_back()).
 * A key that finds no room in the table is kept in the locks table alone, as before the table.
 * Generations: the journal's sync_state lock_table holds the live generation (> 0), or minus the
 * last one once its last manager wrote every slot back. Each manager holds the table's attach
 * byte shared; one that takes it exclusively at open is alone and starts a new generation (an
 * empty table) in its registration transaction; if the previous one was still live, its last
 * manager died (or the power went) before writing back, and its slots ran at most SYNC_EVERY
 * tokens ahead of their rows: every row moves up by SYNC_EVERY first, so no token is issued twice.
 *
 * Holding and releasing. While a manager holds a lock it also holds an OFD lock on its in-use byte
 * for the key, in its own range of "<journal>.locks" (in_use_byte()), and its memory lists the
 * lock (m->in_use). A release writes no database page: it clears the slot's holder (one atomic
 * store into the mapping, see name_nobody()) and lets the byte go. The clearing is what keeps a
 * released lock released once its holder dies: a dead holder's in-use byte is gone with the rest
 * of its OFD locks, so it cannot tell whether the holder was using the lock, and a slot that
 * still named it would be taken for a lock held by a dead holder (listed, and taken over as one).
 * A live holder named where it holds nothing (its row, for a key in the table: the row is not
 * cleared; a row whose clearing failed) is told apart by its in-use byte, as before: a holder
 * holds the lock when it is alive and its in-use byte for the key is locked. A key with no room in
 * the table has its row cleared instead, in a statement of its own: its acquisitions run a
 * transaction each anyway. When a generation of the table ends, its slots' holders go into the
 * rows (holders_to_rows()), so that the next generation, which starts from the rows, does not
 * take a holder that released and died for one that died holding.
 *
 * An acquisition first tries the table alone (fast_take()): under the slot's OFD byte, a slot
 * whose holder is nobody, this manager, or a live manager not using the key (its in-use byte can
 * be taken) gets the next token and our lease; no transaction, no database page. Anything else
 * (a key not in the table yet, a holder using it, dead, or past its lease, a slot left odd by a
 * writer that died in it, a row SYNC_EVERY behind) runs one BEGIN IMMEDIATE transaction that reads
 * the row and the slot (taking the slot's byte), puts a new key in the table, decides as the fast
 * path does (the lock is free when its holder is dead, idle, or using it past its lease), and
 * writes the row and then the slot, the slot odd from before the COMMIT to after it. A lock held
 * by someone alive is waited for outside any transaction: threads sharing the manager are woken by
 * its condition variable on release, others (other managers, other processes) are polled with a
 * backoff from 1 ms to 20 ms, and the poll is moved earlier to the moment the holder's lease runs
 * out.
 *
 * Fencing. A journal write checks its fence inside its write transaction (fsa__lock_fence_check):
 * the slot's token while the generation is live, the row otherwise, the higher of the two for a
 * slot left odd. A lock can be taken from a holder still using it only by a takeover, which is a
 * transaction, so no successor's token can appear between the check and the journal's commit.
 * The fast path changes a token only when its holder is not using the lock: that holder released
 * it, and a released lock's fsa_lock_t gives no fence. A release within the lease needs no look at
 * the slot: no one takes a lock from a live holder using it before its lease runs out. After the
 * lease it reads the slot (or row) to tell FSA_ELOST.
 *
 * Time: leases are on the port's monotonic clock, CLOCK_MONOTONIC on posix, which is the same for
 * every process on the device. A reboot starts a new epoch, but a reboot also kills every holder,
 * and dead holders are found by their liveness lock, never by time.
 *
 * Durability. The manager commits with synchronous=NORMAL unless opts.durable: in WAL mode a
 * commit is then appended to the WAL without an fsync; the table is never synced at all. A process
 * crash loses nothing (the WAL and the mapped file are in the page cache); a power cut may lose the
 * last lock commits and the table, and with them the last tokens issued, so after a power cut a
 * token may be issued a second time. That is safe, because:
 *   1. The WAL is one append-only log, and fsync makes a whole file durable, whichever process
 *      wrote it. A journal write under token T commits with synchronous=FULL after T's acquisition,
 *      so it makes durable every lock commit before it: the live generation, and a row at most
 *      SYNC_EVERY below T. The generation is found live after the power cut, so every row moves up
 *      by SYNC_EVERY: a token that fenced a durable write is never issued again.
 *   2. A token lost in a power cut fenced no durable write, and its holder died with the power, so
 *      no one can present it again. Tokens never leave the device (PROTOCOL.md carries none).
 *   3. Locks held at the cut come back with dead holders and are taken over at once.
 * The fsync that FULL would add costs milliseconds on eMMC and buys nothing the journal's own fsync
 * does not already give. A caller that exports tokens beyond the journal sets opts.durable, which
 * syncs the lock commits; the table's uncontended tokens are then covered by the same move of
 * SYNC_EVERY after a power cut, since the generation's start is synced too.
 */

/* The SYNC lock: one sync cycle at a time per device. Lease 120 s: a cycle sends at most a batch
 * (FSA_LIMIT_BATCH_OPS ops, FSA_LIMIT_BODY_BYTES) and pulls once, under a retry policy whose delays
 * add up to seconds; 120 s leaves room for a slow cellular link, and the engine renews the lease
 * (fsa_lock_renew) between batches and every half second while it waits (for an answer, or in a
 * retry's pause, which a Retry-After can make an hour long). A hung but living holder (a process
 * stopped) is the only case the lease covers; a dead one is replaced at once. Every journal write
 * of a cycle carries the lock's fence (fsa_journal_fence_thread), so a holder taken over after its
 * lease writes nothing more. Wait 0: whoever finds a cycle running has nothing
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
    /* The prepared statements, by name, and as one array for prepare_all and finalize_all. */
    union {
        struct {
            sqlite3_stmt *begin, *commit, *rollback, *get, *take, *check, *renew, *who, *unhold;
        };
        sqlite3_stmt *stmts[9];
    };
    int64_t id;
    struct table_head *tab; /* the shared token table, mapped (see "The shared token table") */
    bool attached;          /* we hold the table's attach byte (shared) */
    char *dbfile;           /* the journal's full path as SQLite names it (the fence check's key) */
    in_use_t *in_use;       /* the locks this manager holds or recently held, one entry per key */
    size_t n_in_use, cap_in_use;
    char label[FSA_LOCK_LABEL_BYTES];
    size_t held; /* fsa_lock_t currently held through this manager */

    uint64_t acquired, contended, timed_out, busy, expired, dead_takeovers, lost, releases;
    double wait_sum_ns, hold_sum_ns; /* doubles: int64 sums of ns overflow after ~300 years */
    int64_t wait_max_ns, hold_max_ns;
};
_Static_assert(offsetof(struct fsa_lockmgr, unhold) ==
                   offsetof(struct fsa_lockmgr, stmts) + 8 * sizeof(sqlite3_stmt *),
               "stmts covers every statement, and stmts_sql holds the SQL of each");

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

bool fsa_lock_label_valid(const char *label)
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
    size_t nlen = strlen(name), rlen = strlen(resource);
    size_t len = nlen + 1 + rlen;
    if (len > FSA_LIMIT_LOCK_KEY_BYTES || len >= outlen)
        return FSA_ETOOLARGE;
    /* On every acquisition: copies, not a formatted print. */
    memcpy(out, name, nlen);
    out[nlen] = ':';
    memcpy(out + nlen + 1, resource, rlen + 1);
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
    fsa_fence_t f = {NULL, 0, NULL};
    if (fsa_lock_held(l)) {
        f.key = l->key;
        f.token = l->token;
        f.mgr = l->mgr;
    }
    return f;
}

static int64_t holder_pid(const fsa_lockmgr_t *m)
{
    return m->port->process_id(m->port->ctx);
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

static uint32_t key_hash(const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static uint64_t in_use_byte(int64_t holder, const char *key)
{
    return IN_USE_BASE + (uint64_t)holder * IN_USE_SPAN + key_hash(key) % IN_USE_SPAN;
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
    in_use_t *grown = fsa_array_grow(m->in_use, &m->cap_in_use, m->n_in_use, sizeof *grown, 8, 0);
    if (grown == NULL)
        return NULL;
    m->in_use = grown;
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
    size_t len = strnlen(key, sizeof out->key - 1);
    memcpy(out->key, key, len);
    out->key[len] = '\0';
    out->token = token;
    out->lease_ns = lease_ns;
    out->acquired = now;
    out->expires = expires;
    m->held++;
}

/* ---- the shared token table ---- */

/*
 * The first TABLE_BYTES of "<journal>.locks", mapped shared by every manager on the journal: one
 * slot per key, with the key's latest token, the manager that took it last and that acquisition's
 * lease. A key takes the next free slot (slots fill from the first, so a journal with few keys
 * touches few pages), found through an index by key hash (open addressing), in a write
 * transaction, and keeps it for the generation; a key that finds no room (TABLE_SLOTS keys, or
 * TABLE_PROBES index entries) stays in the locks table alone, as before the table existed. A slot
 * is changed only by a manager holding its OFD byte (SLOT_BYTE), with seq odd meanwhile: a slot
 * left odd was being changed by a process that died. One store is made without the byte: a
 * release clears holder from its own id to 0 by compare-and-swap (name_nobody(), which says why
 * that is sound). Readers without the byte (the fence check, statistics) read each field
 * atomically.
 */
#define TABLE_MAGIC UINT64_C(0x314b434f4c415346) /* "FSALOCK1" */
#define TABLE_SLOTS 1024u
#define TABLE_PROBES 32u
/* A slot runs at most this many tokens ahead of its row (its durable copy). */
#define SYNC_EVERY FSA__LOCK_SYNC_EVERY
/* OFD bytes of "<journal>.locks", far above the liveness and in-use bytes. */
#define ATTACH_BYTE (UINT64_C(1) << 62)
#define SLOT_BYTE(i) (ATTACH_BYTE + 1 + (uint64_t)(i))

typedef struct table_head {
    uint64_t magic;
    int64_t gen; /* the generation: the journal's sync_state lock_table while the table is live */
    uint32_t slots;
    uint32_t slot_bytes;
    uint32_t nused; /* slots taken, in order from slot 0: a journal with few keys touches few
                       pages (the fleet simulator maps one table per device) */
    uint32_t pad;   /* slots start 8-aligned */
    uint16_t index[TABLE_SLOTS]; /* by key hash, open addressing: slot + 1, 0 for none */
} table_head_t;

typedef struct slot {
    uint32_t seq;       /* odd while being changed */
    uint32_t key_len;   /* 0: empty; set last, once key is written */
    int64_t token;      /* the latest token issued for key */
    int64_t synced;     /* the token the locks row holds */
    int64_t holder;     /* the manager that took it last (0: nobody, or it closed) */
    int64_t expires_ns; /* that acquisition's lease */
    char key[FSA_LOCK_KEY_BYTES];
} slot_t;

#define TABLE_BYTES (sizeof(table_head_t) + (size_t)TABLE_SLOTS * sizeof(slot_t))

static uint32_t ld32(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
// NOLINTNEXTLINE(readability-non-const-parameter): __atomic_store_n writes through p
static void st32(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static int64_t ld64(const int64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
// NOLINTNEXTLINE(readability-non-const-parameter): __atomic_store_n writes through p
static void st64(int64_t *p, int64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static slot_t *slot_at(const table_head_t *t, uint32_t i)
{
    return (slot_t *)((char *)(uintptr_t)(t + 1) + (size_t)i * sizeof(slot_t));
}

/* Marks s as being changed; the stores after it cannot be moved before it. */
static void slot_begin(slot_t *s)
{
    st32(&s->seq, ld32(&s->seq) | 1u);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static void slot_end(slot_t *s)
{
    st32(&s->seq, (ld32(&s->seq) | 1u) + 1u);
}

static uint16_t ld16(const uint16_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* The slot of key, or NULL (not in the table). Needs no lock: a slot is published in the index
 * once whole, its key never changes within a generation, and keys are published only in write
 * transactions. */
static slot_t *table_find(const table_head_t *t, const char *key, uint32_t *idx)
{
    size_t len = strlen(key);
    uint32_t h = key_hash(key);
    for (uint32_t n = 0; n < TABLE_PROBES; n++) {
        uint32_t v = ld16(&t->index[(h + n) % TABLE_SLOTS]);
        if (v == 0 || v > TABLE_SLOTS)
            return NULL;
        slot_t *s = slot_at(t, v - 1);
        uint32_t kl = ld32(&s->key_len);
        if (kl == len && memcmp(s->key, key, len) == 0) {
            *idx = v - 1;
            return s;
        }
    }
    return NULL;
}

/* A free slot for key (key must not be in the table): the next one in order, and the first empty
 * index entry on key's probe path; NULL when the table or the probe path is full. */
static slot_t *table_free_slot(const table_head_t *t, const char *key, uint32_t *idx, uint32_t *pos)
{
    uint32_t next = ld32(&t->nused);
    if (next >= TABLE_SLOTS)
        return NULL;
    uint32_t h = key_hash(key);
    for (uint32_t n = 0; n < TABLE_PROBES; n++) {
        uint32_t i = (h + n) % TABLE_SLOTS;
        if (ld16(&t->index[i]) == 0) {
            *idx = next;
            *pos = i;
            return slot_at(t, next);
        }
    }
    return NULL;
}

/* Takes slot i's byte. Held only for a few stores by others, so a busy byte is tried again. */
static fsa_status_t lock_slot(fsa_lockmgr_t *m, uint32_t i)
{
    fsa_port_t *p = m->port;
    fsa_status_t st = FSA_EBUSY;
    for (int n = 0; n < 100000 && st == FSA_EBUSY; n++) {
        st = p->flock_try(p->ctx, m->live, SLOT_BYTE(i));
        if (st == FSA_EBUSY)
            p->sleep(p->ctx, 20 * 1000);
    }
    return st == FSA_EBUSY ? FSA_EIO : st;
}

static void unlock_slot(fsa_lockmgr_t *m, uint32_t i)
{
    m->port->flock_release(m->port->ctx, m->live, SLOT_BYTE(i));
}

/* The slots taken (0 .. n-1; one whose inserter died before its key has key_len 0). */
static uint32_t table_used(const table_head_t *t)
{
    uint32_t n = ld32(&t->nused);
    return n < TABLE_SLOTS ? n : TABLE_SLOTS;
}

/* True when a slot of the table names holder (so its lock_holders row must stay). */
static bool table_names(const fsa_lockmgr_t *m, int64_t holder)
{
    uint32_t n = m->tab != NULL ? table_used(m->tab) : 0;
    for (uint32_t k = 0; k < n; k++) {
        const slot_t *s = slot_at(m->tab, k);
        if (ld32(&s->key_len) != 0 && ld64(&s->holder) == holder)
            return true;
    }
    return false;
}

/*
 * The uncontended acquisition: no transaction, no database page. With m->mu held and our in-use
 * byte for key locked, and no fsa_lock_t of ours holding key. Takes key when its slot is whole
 * (seq even), within SYNC_EVERY of its row, and free: last taken by nobody, by us, or by a live
 * manager not using it (its in-use byte can be taken). A dead holder, a lease to take over, a key
 * not in the table: false, and the caller runs the transaction.
 */
static bool fast_take(fsa_lockmgr_t *m, const char *key, fsa_mono_t expires, int64_t *token)
{
    uint32_t i = 0;
    slot_t *s = m->tab != NULL ? table_find(m->tab, key, &i) : NULL;
    if (s == NULL || lock_slot(m, i) != FSA_OK)
        return false;
    bool taken = false;
    int64_t t = s->token, holder = s->holder;
    if ((s->seq & 1u) == 0 && t > 0 && t < INT64_MAX && t + 1 - s->synced <= SYNC_EVERY &&
        (holder == 0 || holder == m->id ||
         (holder_alive(m, holder) && !holder_using(m, holder, key)))) {
        slot_begin(s);
        st64(&s->token, t + 1);
        st64(&s->holder, m->id);
        st64(&s->expires_ns, expires.ns);
        slot_end(s);
        *token = t + 1;
        taken = true;
    }
    unlock_slot(m, i);
    return taken;
}

fsa_status_t fsa__lock_table_tear(fsa_lockmgr_t *m, const char *key, int64_t token)
{
    if (m == NULL || key == NULL)
        return FSA_EINVAL;
    uint32_t si = 0;
    slot_t *s = table_find(m->tab, key, &si);
    if (s == NULL)
        return FSA_ENOTFOUND;
    slot_begin(s);
    st64(&s->token, token);
    return FSA_OK;
}

/* Names holder id in *seen (label and pid from lock_holders; "?" and 0 once its row is gone).
 * Returns SQLITE_ROW (named), SQLITE_DONE (no row) or the error. */
static int name_holder(fsa_lockmgr_t *m, int64_t id, holder_seen_t *seen)
{
    seen->id = id;
    snprintf(seen->label, sizeof seen->label, "?");
    seen->pid = 0;
    sqlite3_bind_int64(m->who, 1, id);
    int rc = sqlite3_step(m->who);
    if (rc == SQLITE_ROW) {
        seen->pid = sqlite3_column_int64(m->who, 0);
        copy_text(seen->label, sizeof seen->label, sqlite3_column_text(m->who, 1));
    }
    sqlite3_reset(m->who);
    return rc;
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

/* One attempt's inputs: the key, our in-use entry for it and the times. overrun: the key is ours,
 * held by another thread whose lease ran out (the old fsa_lock_t loses it). */
typedef struct attempt {
    const char *key;
    in_use_t *e;
    bool overrun;
    int64_t lease_ns;
    fsa_mono_t now;
    fsa_mono_t expires;
} attempt_t;

/* What the transaction finds for a key: its row, then its slot when the table has one. */
typedef struct take_state {
    slot_t *s;   /* the key's slot, its byte locked by us; NULL when none */
    uint32_t si; /* s's index */
    int64_t row_token;
    int64_t old_token;      /* the latest token issued: the slot's, or the row's when ahead */
    int64_t holder;         /* who took it last (0: nobody) */
    int64_t hexp;           /* that acquisition's lease end */
    holder_seen_t row_seen; /* the row's holder, named from the row */
} take_state_t;

/* Another thread of ours holds e within its lease: it is the holder to report. */
static void seen_ours(const fsa_lockmgr_t *m, const in_use_t *held, holder_seen_t *seen)
{
    seen->id = m->id;
    seen->token = held->token;
    seen->pid = holder_pid(m);
    seen->expires_ns = held->expires_ns;
    snprintf(seen->label, sizeof seen->label, "%s", m->label);
}

/* The row: the durable copy, and the whole truth for a key not in the table. Returns an SQLite
 * code (SQLITE_OK with a missing row leaves ts's row fields 0). */
static int read_row(fsa_lockmgr_t *m, const char *key, take_state_t *ts)
{
    sqlite3_bind_text(m->get, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(m->get);
    if (rc == SQLITE_ROW) {
        ts->row_token = sqlite3_column_int64(m->get, 0);
        if (sqlite3_column_type(m->get, 1) != SQLITE_NULL) {
            ts->holder = ts->row_seen.id = sqlite3_column_int64(m->get, 1);
            copy_text(ts->row_seen.label, sizeof ts->row_seen.label,
                      sqlite3_column_text(m->get, 2));
            ts->hexp = ts->row_seen.expires_ns = sqlite3_column_int64(m->get, 3);
            ts->row_seen.pid = sqlite3_column_int64(m->get, 4);
        }
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_reset(m->get);
    sqlite3_clear_bindings(m->get);
    ts->old_token = ts->row_token;
    return rc;
}

/* The slot, after read_row: found, or made for the key now (from its row), or none (no table, or
 * a full one). Locks its byte, and takes the latest token and holder from a found slot. On a
 * failure ts->s is NULL (nothing locked) and err says why. */
static fsa_status_t take_slot(fsa_lockmgr_t *m, const char *key, take_state_t *ts, char *err,
                              size_t errlen)
{
    slot_t *s = m->tab != NULL ? table_find(m->tab, key, &ts->si) : NULL;
    bool fresh = false;
    uint32_t pos = 0;
    if (s == NULL && m->tab != NULL) {
        s = table_free_slot(m->tab, key, &ts->si, &pos);
        fresh = s != NULL;
    }
    ts->s = NULL;
    if (s == NULL)
        return FSA_OK;
    fsa_status_t st = lock_slot(m, ts->si);
    if (st != FSA_OK) {
        snprintf(err, errlen, "lock %s: cannot lock its slot in the .locks file (%s)", key,
                 fsa_status_str(st));
        return st;
    }
    ts->s = s;
    if (fresh) {
        st32(&m->tab->nused, ts->si + 1); /* taken first: a death below wastes it, no more */
        slot_begin(s);
        memcpy(s->key, key, strlen(key) + 1);
        st64(&s->token, ts->row_token);
        st64(&s->synced, ts->row_token);
        st64(&s->holder, ts->holder);
        st64(&s->expires_ns, ts->hexp);
        st32(&s->key_len, (uint32_t)strlen(key));
        slot_end(s);
        __atomic_store_n(&m->tab->index[pos], (uint16_t)(ts->si + 1), __ATOMIC_RELEASE);
    } else {
        /* Left odd: its writer died between its commit and the slot; the row is then ahead. */
        ts->old_token = s->token;
        if ((s->seq & 1u) != 0 && ts->row_token > ts->old_token)
            ts->old_token = ts->row_token;
        ts->holder = s->holder;
        ts->hexp = s->expires_ns;
    }
    return FSA_OK;
}

/* Judges the last taker found in ts: true when the lock is free now (nobody, ours, dead, not
 * using it, or using it past its lease). Names the holder in *seen; *dead and *expired say why a
 * lock is taken over. */
static bool holder_lets_go(fsa_lockmgr_t *m, const attempt_t *a, const take_state_t *ts,
                           holder_seen_t *seen, bool *dead, bool *expired)
{
    *dead = false;
    *expired = false;
    if (ts->holder == 0)
        return true;
    if (ts->holder == ts->row_seen.id)
        *seen = ts->row_seen;
    else
        (void)name_holder(m, ts->holder, seen); /* only names the holder in a message */
    seen->token = ts->old_token;
    seen->expires_ns = ts->hexp;
    if (ts->holder == m->id) {
        /* Ours: held by another thread (its lease ran out, above) or idle. */
        *expired = a->overrun;
        return true;
    }
    *dead = !holder_alive(m, ts->holder);
    /* A live holder named but not using it: a row its release does not clear (see "Holding and
     * releasing"), or a release that had not cleared the slot yet when we read it. */
    bool using = !*dead && holder_using(m, ts->holder, a->key);
    *expired = using && ts->hexp <= a->now.ns;
    return *dead || !using || *expired;
}

/* Writes the take of token into the row and the slot and commits. The slot changes under our
 * commit: odd from before it to after it, so that a death in between leaves it marked (and the
 * row, ahead, tells the truth). Returns an SQLite code; on success the slot is whole and unlocked
 * (ts->s NULL), on a failure it is as it was and still locked. */
static int write_take(fsa_lockmgr_t *m, const attempt_t *a, take_state_t *ts, int64_t token,
                      char *err, size_t errlen)
{
    sqlite3_bind_text(m->take, 1, a->key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(m->take, 2, token);
    sqlite3_bind_int64(m->take, 3, m->id);
    sqlite3_bind_text(m->take, 4, m->label, -1, SQLITE_STATIC);
    sqlite3_bind_int64(m->take, 5, a->now.ns);
    sqlite3_bind_int64(m->take, 6, a->expires.ns);
    int rc = step_done(m->take);
    sqlite3_clear_bindings(m->take);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot write the locks table", err, errlen);
        return rc;
    }
    slot_t *s = ts->s;
    slot_t saved;
    memset(&saved, 0, sizeof saved);
    if (s != NULL) {
        saved = *s;
        slot_begin(s);
        st64(&s->token, token);
        st64(&s->synced, token);
        st64(&s->holder, m->id);
        st64(&s->expires_ns, a->expires.ns);
    }
    rc = step_done(m->commit);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot commit", err, errlen);
        if (s != NULL) {
            st64(&s->token, saved.token);
            st64(&s->synced, saved.synced);
            st64(&s->holder, saved.holder);
            st64(&s->expires_ns, saved.expires_ns);
            slot_end(s);
        }
        return rc;
    }
    if (s != NULL) {
        slot_end(s);
        unlock_slot(m, ts->si);
        ts->s = NULL;
    }
    return SQLITE_OK;
}

/* A takeover is counted and logged. A dead holder's run-out lease counts as a death: the death is
 * why it ran out. */
static void note_takeover(fsa_lockmgr_t *m, const char *key, int64_t old_token,
                          const holder_seen_t *seen, bool dead, bool expired)
{
    if (dead)
        m->dead_takeovers++;
    else if (expired)
        m->expired++;
    if (dead || expired) {
        fsa_log(m->port, FSA_LOG_INFO, "lock %s: took over token %" PRId64 " from %s (%s)", key,
                old_token, seen->label, dead ? "holder died" : "lease ran out");
    }
}

/* The failure of a transaction: its slot unlocked, the transaction rolled back, our in-use byte
 * let go unless another thread of ours still holds the lock. Returns st. */
static fsa_status_t take_failed(fsa_lockmgr_t *m, const attempt_t *a, const take_state_t *ts,
                                fsa_status_t st)
{
    if (ts->s != NULL)
        unlock_slot(m, ts->si);
    rollback_if_open(m);
    if (!a->overrun)
        set_idle(m, a->e, 0);
    return st;
}

/* The attempt as one transaction, for what the fast path does not take (see How it works). */
static fsa_status_t take_in_txn(fsa_lockmgr_t *m, const attempt_t *a, fsa_lock_t *out, bool *taken,
                                holder_seen_t *seen, char *err, size_t errlen)
{
    int rc = step_done(m->begin);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot start a transaction", err, errlen);
        if (!a->overrun)
            set_idle(m, a->e, 0);
        return fsa__db_status(rc);
    }
    take_state_t ts;
    memset(&ts, 0, sizeof ts);
    rc = read_row(m, a->key, &ts);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot read the locks table", err, errlen);
        return take_failed(m, a, &ts, fsa__db_status(rc));
    }
    fsa_status_t st = take_slot(m, a->key, &ts, err, errlen);
    if (st != FSA_OK)
        return take_failed(m, a, &ts, st);
    bool dead = false, expired = false;
    if (!holder_lets_go(m, a, &ts, seen, &dead, &expired)) {
        if (ts.s != NULL)
            unlock_slot(m, ts.si);
        ts.s = NULL;
        rc = step_done(m->commit);
        if (rc != SQLITE_OK) {
            db_error(m, rc, "cannot end a transaction", err, errlen);
            return take_failed(m, a, &ts, fsa__db_status(rc));
        }
        set_idle(m, a->e, 0); /* someone else's now */
        return FSA_OK;
    }
    if (ts.old_token == INT64_MAX) {
        snprintf(err, errlen, "lock %s: fencing tokens exhausted", a->key);
        return take_failed(m, a, &ts, FSA_EIO);
    }
    int64_t token = ts.old_token + 1;
    rc = write_take(m, a, &ts, token, err, errlen);
    if (rc != SQLITE_OK)
        return take_failed(m, a, &ts, fsa__db_status(rc));
    note_takeover(m, a->key, ts.old_token, seen, dead, expired);
    mark_held(m, a->e, out, token, a->lease_ns, a->now, a->expires);
    *taken = true;
    return FSA_OK;
}

/*
 * One attempt, with m->mu held: takes the lock if it is free and fills out, or reports the holder
 * in *seen. Sets *taken. Returns FSA_OK or a failure (nothing taken; any transaction rolled back).
 */
static fsa_status_t try_take(fsa_lockmgr_t *m, const char *key, int64_t lease_ns, fsa_lock_t *out,
                             bool *taken, holder_seen_t *seen, char *err, size_t errlen)
{
    *taken = false;
    attempt_t a = {.key = key, .lease_ns = lease_ns};
    a.now = m->port->mono_now(m->port->ctx);
    a.expires = fsa_mono_add_ns(a.now, lease_ns);
    /* Another thread of ours holds it: wait for its release, or take over its run-out lease. */
    in_use_t *held = find_held(m, key);
    if (held != NULL && held->expires_ns > a.now.ns) {
        seen_ours(m, held, seen);
        return FSA_OK;
    }
    a.overrun = held != NULL;
    uint64_t byte = in_use_byte(m->id, key);
    a.e = entry_for(m, key, byte);
    if (a.e == NULL) {
        snprintf(err, errlen, "lock %s: out of memory", key);
        return FSA_ENOMEM;
    }
    fsa_status_t st = a.overrun ? FSA_OK : lock_byte(m, byte);
    if (st != FSA_OK) {
        snprintf(err, errlen, "lock %s: cannot lock its in-use byte in the .locks file (%s)", key,
                 fsa_status_str(st));
        return st == FSA_EBUSY ? FSA_EIO : st;
    }
    int64_t token = 0;
    if (!a.overrun && fast_take(m, key, a.expires, &token)) {
        mark_held(m, a.e, out, token, lease_ns, a.now, a.expires);
        *taken = true;
        return FSA_OK;
    }
    return take_in_txn(m, &a, out, taken, seen, err, errlen);
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
    if (m == NULL || cfg == NULL || out == NULL || cfg->name[0] == '\0' ||
        memchr(cfg->name, '\0', sizeof cfg->name) == NULL || cfg->lease_ns <= 0 ||
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

/* The message is made whole here and logged from this copy: err may be a caller's short buffer,
 * or the 8-byte scratch one that stands for none (ERR_SCRATCH), and the log line is the only
 * trace a caller that passed none gets. */
static void report_lost(fsa_lockmgr_t *m, fsa_lock_t *l, char *err, size_t errlen)
{
    m->lost++;
    m->held--;
    char msg[FSA_LOCK_KEY_BYTES + 96];
    snprintf(msg, sizeof msg,
             "lock %s (token %" PRId64 ") was lost: its lease ran out and it was taken over",
             l->key, l->token);
    fsa_log(m->port, FSA_LOG_WARN, "%s", msg);
    snprintf(err, errlen, "%s", msg);
    l->mgr = NULL;
}

/* Whether l's lock is still l's (same holder, same token): its slot, or its row for a key not in
 * the table; a read, no transaction of its own. */
static fsa_status_t still_ours(fsa_lockmgr_t *m, const fsa_lock_t *l, bool *ours, char *err,
                               size_t errlen)
{
    uint32_t si = 0;
    const slot_t *s = m->tab != NULL ? table_find(m->tab, l->key, &si) : NULL;
    if (s != NULL) {
        /* Only a takeover (a transaction, which leaves no odd slot behind it) changes the token
         * of a lock in use. */
        *ours = ld64(&s->token) == l->token && ld64(&s->holder) == m->id;
        return FSA_OK;
    }
    sqlite3_bind_text(m->check, 1, l->key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(m->check, 2, m->id);
    sqlite3_bind_int64(m->check, 3, l->token);
    int rc = sqlite3_step(m->check);
    *ours = rc == SQLITE_ROW && sqlite3_column_int64(m->check, 0) != 0;
    sqlite3_reset(m->check);
    sqlite3_clear_bindings(m->check);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        db_error(m, rc, "cannot read the locks table", err, errlen);
        return fsa__db_status(rc);
    }
    return FSA_OK;
}

/*
 * A release's one write, before its in-use byte goes: the lock's slot stops naming us, so that
 * no one takes us for its holder once we are dead (see "Holding and releasing"). With m->mu held
 * and l still ours as far as release knows.
 *
 * The slot's holder is cleared without its slot byte, by one compare-and-swap from our id to 0,
 * which keeps the pair as fast as before: taking and letting go of the byte, two more fcntl calls,
 * cost the pair about 3 us of CPU, half as much again (bench_lock on the development machine:
 * 8.5-9.8 us of CPU per pair, against 5.8-6.6 us with the swap; docs/performance.md):
 *   - One aligned 8-byte field cannot be torn, so a death in it leaves no half-changed slot and
 *     needs no odd seq: the slot names us, or nobody.
 *   - Only we store our id into a slot, under m->mu, which we hold; so while the slot names us it
 *     names this acquisition, and the swap fails, changing nothing, once a successor has stored
 *     its own id (a takeover of a run-out lease).
 *   - A writer holding the slot byte that read holder before the swap acts on "us": within our
 *     lease it leaves the slot alone (our in-use byte is still locked: we are using it); past it,
 *     it takes the lock over and stores its own id after our swap. Either way the slot ends right.
 *     (A takeover whose commit then fails puts our id back: the old state, idle and named, which
 *     the in-use byte tells apart while we live.)
 * A key with no room in the table is cleared in its row, in a statement of its own; if the
 * journal is busy past the busy timeout the release goes on all the same: the lock is free to
 * every living manager by our in-use byte, and closing the manager clears the row, so only a
 * death before that would show the lock as a dead holder's.
 */
static void name_nobody(fsa_lockmgr_t *m, const fsa_lock_t *l)
{
    uint32_t si = 0;
    slot_t *s = m->tab != NULL ? table_find(m->tab, l->key, &si) : NULL;
    if (s != NULL) {
        int64_t us = m->id;
        (void)__atomic_compare_exchange_n(&s->holder, &us, 0, false, __ATOMIC_SEQ_CST,
                                          __ATOMIC_SEQ_CST);
        return;
    }
    char scratch[8];
    bool cleared = false;
    (void)update_own(m, m->unhold, l, &cleared, "cannot clear the lock's row", scratch,
                     sizeof scratch);
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
        name_nobody(m, l);
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
    bool ours = false;
    fsa_status_t st;
    uint32_t si = 0;
    slot_t *s = m->tab != NULL ? table_find(m->tab, l->key, &si) : NULL;
    if (s != NULL) {
        /* The lease lives in the slot: nobody reads the row's. */
        st = lock_slot(m, si);
        if (st == FSA_OK) {
            ours = ld64(&s->token) == l->token && ld64(&s->holder) == m->id;
            if (ours) {
                slot_begin(s);
                st64(&s->expires_ns, expires.ns);
                slot_end(s);
            }
            unlock_slot(m, si);
        } else {
            snprintf(err, errlen, "lock %s: cannot lock its slot in the .locks file (%s)", l->key,
                     fsa_status_str(st));
        }
    } else {
        sqlite3_bind_int64(m->renew, 4, expires.ns);
        st = update_own(m, m->renew, l, &ours, "cannot renew", err, errlen);
    }
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

/* The live table's generation from the journal's sync_state (0: no live table). */
static int journal_table_gen(sqlite3 *db, int64_t *gen)
{
    *gen = 0;
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v3(db, "SELECT v FROM sync_state WHERE k='" FSA_STATE_LOCK_TABLE "'",
                                -1, 0, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW)
            *gen = sqlite3_column_int64(s, 0);
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    return rc;
}

/* The latest token of key by the live table t of generation gen, given the row's token (-1: no
 * row). *found false when the key is not in the table (the row is the truth). */
static int64_t table_token(const table_head_t *t, const char *key, int64_t row_token, bool *found)
{
    uint32_t si = 0;
    const slot_t *s = table_find(t, key, &si);
    *found = s != NULL;
    if (s == NULL)
        return row_token;
    int64_t tok = ld64(&s->token);
    /* Odd: being changed (either value is right: see fast_take) or left by a dead writer after
     * its commit, when the row is ahead. */
    if ((ld32(&s->seq) & 1u) != 0 && row_token > tok)
        tok = row_token;
    return tok;
}

fsa_status_t fsa__lock_fence_check(fsa_port_t *port, sqlite3 *db, const fsa_fence_t *f)
{
    if (db == NULL || f == NULL)
        return FSA_EINVAL;
    if (f->key == NULL || f->token <= 0)
        return FSA_EFENCED;
    int64_t gen = 0;
    int rc = journal_table_gen(db, &gen);
    if (rc != SQLITE_OK)
        return fsa__db_status(rc);
    sqlite3_stmt *s = NULL;
    rc = sqlite3_prepare_v3(db, "SELECT token FROM locks WHERE key=?1", -1, 0, &s, NULL);
    if (rc != SQLITE_OK)
        return fsa__db_status(rc);
    sqlite3_bind_text(s, 1, f->key, -1, SQLITE_STATIC);
    int64_t row_token = -1;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        row_token = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return fsa__db_status(rc);
    int64_t latest = row_token;
    if (gen > 0) {
        const char *dbfile = sqlite3_db_filename(db, "main");
        const fsa_lockmgr_t *m = f->mgr;
        if (m != NULL && m->tab != NULL && dbfile != NULL && strcmp(m->dbfile, dbfile) == 0) {
            if (m->tab->gen != gen)
                return FSA_EFENCED; /* cannot happen while m is attached */
            bool found = false;
            latest = table_token(m->tab, f->key, row_token, &found);
        } else {
            /* A fence made by hand, or for another journal: map the table for this check. */
            if (port == NULL || dbfile == NULL)
                return FSA_EINVAL;
            size_t n = strlen(dbfile) + sizeof ".locks";
            char *path = fsa_malloc(n);
            if (path == NULL)
                return FSA_ENOMEM;
            snprintf(path, n, "%s.locks", dbfile);
            fsa_flock_t *fl = NULL;
            void *addr = NULL;
            fsa_status_t st = port->flock_open(port->ctx, path, &fl);
            fsa_free(path);
            if (st == FSA_OK)
                st = port->flock_map(port->ctx, fl, TABLE_BYTES, &addr);
            if (st == FSA_OK) {
                const table_head_t *t = addr;
                bool found = false;
                if (t->magic == TABLE_MAGIC && t->gen == gen)
                    latest = table_token(t, f->key, row_token, &found);
                else
                    latest = -1; /* not the live table: trust no token */
                port->flock_unmap(port->ctx, addr, TABLE_BYTES);
            }
            port->flock_close(port->ctx, fl);
            if (st != FSA_OK)
                return st;
        }
    }
    return latest == f->token ? FSA_OK : FSA_EFENCED;
}

#define SQL_GET                                                                                    \
    "SELECT l.token,l.holder,l.holder_label,l.expires_ns,h.pid FROM locks l "                      \
    "LEFT JOIN lock_holders h ON h.id=l.holder WHERE l.key=?1"
#define SQL_TAKE                                                                                   \
    "INSERT INTO locks(key,token,holder,holder_label,acquired_ns,expires_ns) "                     \
    "VALUES(?1,?2,?3,?4,?5,?6) ON CONFLICT(key) DO UPDATE SET token=excluded.token,"               \
    "holder=excluded.holder,holder_label=excluded.holder_label,"                                   \
    "acquired_ns=excluded.acquired_ns,expires_ns=excluded.expires_ns"
#define SQL_WHO "SELECT pid,label FROM lock_holders WHERE id=?1"
#define SQL_CHECK "SELECT holder=?2 AND token=?3 FROM locks WHERE key=?1"
#define SQL_UNHOLD                                                                                 \
    "UPDATE locks SET holder=NULL,holder_label=NULL,acquired_ns=NULL,expires_ns=NULL "             \
    "WHERE key=?1 AND holder=?2 AND token=?3"
#define SQL_RENEW "UPDATE locks SET expires_ns=?4 WHERE key=?1 AND holder=?2 AND token=?3"
static const char *const SQL_LIST =
    "SELECT l.key,l.token,l.holder,l.holder_label,l.expires_ns,h.pid FROM locks l "
    "LEFT JOIN lock_holders h ON h.id=l.holder WHERE l.holder IS NOT NULL ORDER BY l.key";

/* m->stmts' statements, in the order of their names in struct fsa_lockmgr, each ended by a NUL:
 * one array of chars, not a table of pointers (each would cost the binary a relocation). */
static const char stmts_sql[] =
    "BEGIN IMMEDIATE\0"
    "COMMIT\0"
    "ROLLBACK\0" SQL_GET "\0" SQL_TAKE "\0" SQL_CHECK "\0" SQL_RENEW "\0" SQL_WHO "\0" SQL_UNHOLD;

static fsa_status_t prepare_all(fsa_lockmgr_t *m, char *err, size_t errlen)
{
    const char *sql = stmts_sql;
    for (size_t i = 0; i < sizeof m->stmts / sizeof m->stmts[0]; i++, sql += strlen(sql) + 1) {
        int rc = sqlite3_prepare_v3(m->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &m->stmts[i], NULL);
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
    for (size_t i = 0; i < sizeof m->stmts / sizeof m->stmts[0]; i++)
        sqlite3_finalize(m->stmts[i]);
}

/* Runs a one-off statement whose one parameter is a holder id. */
static int exec_id(sqlite3 *db, const char *sql, int64_t id)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v3(db, sql, -1, 0, &s, NULL);
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
    int rc = sqlite3_prepare_v3(m->db,
                                "SELECT id FROM lock_holders WHERE id NOT IN "
                                "(SELECT holder FROM locks WHERE holder IS NOT NULL)",
                                -1, 0, &s, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0);
        rc = SQLITE_OK;
        if (id != m->id && !holder_alive(m, id) && !table_names(m, id))
            rc = exec_id(m->db, "DELETE FROM lock_holders WHERE id=?1", id);
    }
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Runs a one-off statement with two integer parameters. */
static int exec_2(sqlite3 *db, const char *sql, int64_t a, int64_t b)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v3(db, sql, -1, 0, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, a);
        sqlite3_bind_int64(s, 2, b);
        rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

static int set_table_gen(sqlite3 *db, int64_t gen)
{
    return exec_id(
        db, "INSERT OR REPLACE INTO sync_state(k,v) VALUES('" FSA_STATE_LOCK_TABLE "',?1)", gen);
}

/*
 * Within the transaction of a manager alone on the table (the last one closing, or the first one
 * after a generation that ended without that): the holder of each whole slot goes into its row,
 * which the next generation starts from. A release clears its slot and not the row, so without
 * this a row would go on naming a holder that released the lock, and once that holder is dead,
 * the next generation would list the lock as held by it and count its takeover as a death. The
 * holders named are all dead or gone by then (no other manager is on the table), so this decides
 * only what is listed and counted, never a token. A slot left odd (its writer died in it) leaves
 * its row as it was; a holder without a lock_holders row, or ourselves closing, names nobody.
 */
static int holders_to_rows(fsa_lockmgr_t *m)
{
    sqlite3_stmt *u = NULL;
    int rc = sqlite3_prepare_v3(m->db,
                                "UPDATE locks SET holder=?2,holder_label=?3,expires_ns=?4,"
                                "acquired_ns=CASE WHEN holder IS ?2 THEN acquired_ns END "
                                "WHERE key=?1 AND (holder IS NOT ?2 OR expires_ns IS NOT ?4)",
                                -1, 0, &u, NULL);
    for (uint32_t k = 0, n = table_used(m->tab); rc == SQLITE_OK && k < n; k++) {
        const slot_t *s = slot_at(m->tab, k);
        uint32_t kl = ld32(&s->key_len);
        if (kl == 0 || kl >= sizeof s->key || (ld32(&s->seq) & 1u) != 0)
            continue;
        int64_t holder = ld64(&s->holder);
        holder_seen_t seen;
        int named = holder != 0 && holder != m->id ? name_holder(m, holder, &seen) : SQLITE_DONE;
        if (named != SQLITE_ROW && named != SQLITE_DONE) {
            rc = named;
            break;
        }
        sqlite3_bind_text(u, 1, s->key, (int)kl, SQLITE_STATIC);
        if (named == SQLITE_ROW) {
            sqlite3_bind_int64(u, 2, holder);
            sqlite3_bind_text(u, 3, seen.label, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(u, 4, ld64(&s->expires_ns));
        } else {
            sqlite3_bind_null(u, 2);
            sqlite3_bind_null(u, 3);
            sqlite3_bind_null(u, 4);
        }
        rc = step_done(u);
    }
    sqlite3_finalize(u);
    return rc;
}

/*
 * Within the registration transaction: a manager alone on the journal (m->attached false: it holds
 * the attach byte exclusively) starts a new generation of the table; any other checks that the
 * table it mapped is the live one. A generation that was still live (gen > 0) ended without its
 * last manager's write-back (a crash, a power cut): its slots ran at most SYNC_EVERY tokens ahead
 * of their rows, so every row moves up by that much before any token is issued again.
 */
static fsa_status_t attach_table(fsa_lockmgr_t *m, bool alone, bool *raced, char *err,
                                 size_t errlen)
{
    int64_t gen = 0;
    int rc = journal_table_gen(m->db, &gen);
    if (rc == SQLITE_OK && alone) {
        /* The ended generation's table, still in the file after a crash (not after a power cut
         * that lost its pages, or a .locks file removed): its holders, before it is emptied. */
        if (gen > 0 && m->tab->magic == TABLE_MAGIC && m->tab->gen == gen &&
            m->tab->slots == TABLE_SLOTS && m->tab->slot_bytes == sizeof(slot_t))
            rc = holders_to_rows(m);
        if (gen > 0 && rc == SQLITE_OK)
            rc = exec_2(m->db, "UPDATE locks SET token=token+?1 WHERE token<=?2-?1 AND ?1>0",
                        SYNC_EVERY, INT64_MAX);
        if (gen > 0 && rc == SQLITE_OK)
            fsa_log(m->port, FSA_LOG_INFO,
                    "lock manager: the last one on the journal ended without closing; tokens "
                    "move up by %" PRId64,
                    SYNC_EVERY);
        int64_t next = (gen < 0 ? -gen : gen) + 1;
        if (rc == SQLITE_OK)
            rc = set_table_gen(m->db, next);
        fsa_status_t st = FSA_OK;
        if (rc == SQLITE_OK)
            st = m->port->flock_clear(m->port->ctx, m->live, TABLE_BYTES);
        if (st != FSA_OK) {
            snprintf(err, errlen, "lock manager: cannot empty the .locks file (%s)",
                     fsa_status_str(st));
            return st;
        }
        if (rc == SQLITE_OK) {
            m->tab->slots = TABLE_SLOTS;
            m->tab->slot_bytes = (uint32_t)sizeof(slot_t);
            m->tab->gen = next;
            st64((int64_t *)&m->tab->magic, (int64_t)TABLE_MAGIC);
        }
    }
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot set up the shared lock table", err, errlen);
        return fsa__db_status(rc);
    }
    if (!alone && (gen <= 0 || m->tab->magic != TABLE_MAGIC || m->tab->gen != gen ||
                   m->tab->slots != TABLE_SLOTS || m->tab->slot_bytes != sizeof(slot_t))) {
        /* Most likely a race lost, not a file replaced: between our exclusive try and our
         * shared one (attach), the manager that held the byte exclusively let it go without a
         * live table: the last one, having ended the generation (write_back), or a first one
         * whose setup failed or was killed. register_holder tries again. */
        *raced = true;
        snprintf(err, errlen,
                 "lock manager: the shared lock table (.locks) is not the journal's live one "
                 "(generation %" PRId64 " against %" PRId64 "): was a file replaced?",
                 m->tab->gen, gen);
        return FSA_EIO;
    }
    return FSA_OK;
}

#ifdef FSA_FAULT_HOOKS
static void (*_Atomic attach_gap_fn)(void *);
static void *attach_gap_arg;

void fsa__lock_attach_gap_hook(void (*fn)(void *), void *arg)
{
    attach_gap_arg = arg;
    atomic_store(&attach_gap_fn, fn);
}

/* Runs the test's hook once, in attach's gap between its two tries. */
static void run_attach_gap_hook(void)
{
    void (*fn)(void *) = atomic_exchange(&attach_gap_fn, NULL);
    if (fn != NULL)
        fn(attach_gap_arg);
}
#endif

/* Takes the table's attach byte: exclusively when no other manager has it (*alone), else shared.
 * An exclusive holder is setting the table up or writing it back: wait for it. */
static fsa_status_t attach(fsa_lockmgr_t *m, bool *alone, char *err, size_t errlen)
{
    fsa_port_t *p = m->port;
    for (int i = 0; i < 10000; i++) {
        fsa_status_t st = p->flock_try(p->ctx, m->live, ATTACH_BYTE);
        if (st == FSA_OK) {
            *alone = true;
            return FSA_OK;
        }
        if (st == FSA_EBUSY) {
#ifdef FSA_FAULT_HOOKS
            run_attach_gap_hook();
#endif
            st = p->flock_try_shared(p->ctx, m->live, ATTACH_BYTE);
        }
        if (st == FSA_OK) {
            *alone = false;
            m->attached = true;
            return FSA_OK;
        }
        if (st != FSA_EBUSY) {
            snprintf(err, errlen, "lock manager: cannot lock the .locks file (%s)",
                     fsa_status_str(st));
            return st;
        }
        p->sleep(p->ctx, FSA_NS_PER_MS);
    }
    snprintf(err, errlen, "lock manager: the .locks file stayed locked by another manager");
    return FSA_EBUSY;
}

/* Inserts our holder row and takes its liveness byte in one transaction (register_holder).
 * *raced is set when the table was found ended or set up by nobody after attaching shared. */
static fsa_status_t register_once(fsa_lockmgr_t *m, bool *raced, char *err, size_t errlen)
{
    fsa_port_t *p = m->port;
    /* Before the transaction: a manager writing the table back holds the attach byte while it
     * waits for the journal. */
    bool alone = false;
    fsa_status_t st = attach(m, &alone, err, errlen);
    if (st != FSA_OK)
        return st;
    int rc = step_done(m->begin);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot start registration", err, errlen);
        p->flock_release(p->ctx, m->live, ATTACH_BYTE);
        m->attached = false;
        return fsa__db_status(rc);
    }
    bool byte_taken = false;
    sqlite3_stmt *s = NULL;
    /* RETURNING rather than sqlite3_last_insert_rowid: one import less in the device binary */
    rc = sqlite3_prepare_v3(m->db,
                            "INSERT INTO lock_holders(pid,label,started_ms) VALUES(?1,?2,?3) "
                            "RETURNING id",
                            -1, 0, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, holder_pid(m));
        sqlite3_bind_text(s, 2, m->label, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, p->wall_now(p->ctx).ms);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            m->id = sqlite3_column_int64(s, 0);
            rc = sqlite3_step(s);
        }
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_OK) {
        db_error(m, rc, "cannot register in lock_holders", err, errlen);
        goto fail;
    }
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
    if ((st = attach_table(m, alone, raced, err, errlen)) != FSA_OK)
        goto fail;
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
    if (!m->attached) {
        /* Set up: let the others in (converts our exclusive lock, never letting go of it). */
        st = p->flock_try_shared(p->ctx, m->live, ATTACH_BYTE);
        if (st != FSA_OK) {
            snprintf(err, errlen, "lock manager: cannot share the .locks file (%s)",
                     fsa_status_str(st));
            p->flock_release(p->ctx, m->live, ATTACH_BYTE);
            p->flock_release(p->ctx, m->live, (uint64_t)m->id);
            m->id = 0;
            return st == FSA_EBUSY ? FSA_EIO : st;
        }
        m->attached = true;
    }
    return FSA_OK;
fail:
    /* The liveness byte first: the rollback gives our id back (AUTOINCREMENT's counter is rolled
     * back with the row), and the next manager to register, waiting for the write lock, would
     * take the same id and find its byte still ours. Nobody else sees the row before a commit. */
    if (byte_taken)
        p->flock_release(p->ctx, m->live, (uint64_t)m->id);
    rollback_if_open(m);
    p->flock_release(p->ctx, m->live, ATTACH_BYTE);
    m->attached = false;
    m->id = 0;
    return st != FSA_OK ? st : fsa__db_status(rc);
}

/* How often a registration that attached to a table no longer live tries again (attach_table). */
#define REGISTER_RACE_TRIES 100

/* Registers the manager (register_once), again after a race lost to a manager that let the table
 * go between our two tries for its attach byte: with that byte released and our rows rolled back,
 * the next try finds the byte unheld (and starts a new generation) or held by a manager on a live
 * one. Only a table that stays wrong is reported, as a replaced file. */
static fsa_status_t register_holder(fsa_lockmgr_t *m, char *err, size_t errlen)
{
    for (int attempt = 1;; attempt++) {
        bool raced = false;
        fsa_status_t st = register_once(m, &raced, err, errlen);
        if (st == FSA_OK || !raced || attempt == REGISTER_RACE_TRIES)
            return st;
        m->port->sleep(m->port->ctx, FSA_NS_PER_MS);
    }
}

/* fsa_lockmgr_open's arguments: FSA_OK or FSA_EINVAL. */
static fsa_status_t check_open_args(const fsa_port_t *port, const char *journal_path,
                                    fsa_lockmgr_t **out, const char *label, char *err,
                                    size_t errlen)
{
    if (port == NULL || journal_path == NULL || out == NULL || journal_path[0] == '\0') {
        snprintf(err, errlen, "lock manager: missing argument");
        return FSA_EINVAL;
    }
    if (strnlen(journal_path, FSA_LIMIT_PATH_BYTES) >= FSA_LIMIT_PATH_BYTES - sizeof ".locks") {
        snprintf(err, errlen, "lock manager: journal path longer than %d bytes",
                 FSA_LIMIT_PATH_BYTES);
        return FSA_EINVAL;
    }
    if (!fsa_lock_label_valid(label)) {
        snprintf(err, errlen, FSA_LOCK_LABEL_ERROR_FMT, "lock manager", FSA_LOCK_LABEL_BYTES - 1);
        return FSA_EINVAL;
    }
    return FSA_OK;
}

/* m's parts, in order: its mutex and condition, the journal and its file name, the .locks file
 * and its shared table. The .locks file is named after the journal's file as SQLite resolved it
 * (m->dbfile, which the fence check names it by too), not after journal_path: a journal reached
 * through another name (a symlink to it) is the same database to SQLite, and its managers must
 * share one table and one set of liveness bytes, or each would grant the same lock. On a failure
 * the parts made so far stay in m for free_parts(). */
static fsa_status_t open_parts(fsa_lockmgr_t *m, const char *journal_path,
                               const fsa_lockmgr_opts_t *opts, char *err, size_t errlen)
{
    fsa_port_t *port = m->port;
    fsa_status_t st;
    if ((st = port->mutex_new(port->ctx, &m->mu)) != FSA_OK ||
        (st = port->cond_new(port->ctx, &m->released)) != FSA_OK) {
        snprintf(err, errlen, "lock manager: cannot create a mutex (%s)", fsa_status_str(st));
        return st;
    }
    fsa_db_opts_t dbo = {
        .sync_normal = !(opts != NULL && opts->durable),
        .busy_timeout_ms = 0,
        .create = opts != NULL && opts->create,
    };
    st = fsa__db_open(port, journal_path, &dbo, &m->db, &m->users, err, errlen);
    if (st != FSA_OK)
        return st;
    const char *dbfile = sqlite3_db_filename(m->db, "main");
    if (dbfile == NULL || dbfile[0] == '\0')
        dbfile = journal_path; /* SQLite names every file it opens: a fallback all the same */
    size_t dblen = strlen(dbfile) + 1;
    char *locks_path = fsa_malloc(dblen + strlen(".locks"));
    if ((m->dbfile = fsa_malloc(dblen)) == NULL || locks_path == NULL) {
        fsa_free(locks_path);
        snprintf(err, errlen, "lock manager: out of memory");
        return FSA_ENOMEM;
    }
    memcpy(m->dbfile, dbfile, dblen);
    snprintf(locks_path, dblen + strlen(".locks"), "%s.locks", dbfile);
    st = port->flock_open(port->ctx, locks_path, &m->live);
    if (st != FSA_OK) {
        snprintf(err, errlen, "lock manager: cannot open %s (%s)", locks_path, fsa_status_str(st));
        fsa_free(locks_path);
        return st;
    }
    void *addr = NULL;
    st = port->flock_map(port->ctx, m->live, TABLE_BYTES, &addr);
    if (st != FSA_OK)
        snprintf(err, errlen, "lock manager: cannot map %s (%s)", locks_path, fsa_status_str(st));
    else
        m->tab = addr;
    fsa_free(locks_path);
    return st;
}

/* A manager that failed to open: whatever parts it has, then m itself. */
static void free_parts(fsa_port_t *port, fsa_lockmgr_t *m)
{
    finalize_all(m);
    fsa__db_close(port, m->db, m->users);
    if (m->tab != NULL)
        port->flock_unmap(port->ctx, m->tab, TABLE_BYTES);
    port->flock_close(port->ctx, m->live);
    port->cond_free(port->ctx, m->released);
    port->mutex_free(port->ctx, m->mu);
    fsa_free(m->dbfile);
    fsa_free(m->in_use);
    fsa_free(m);
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
    fsa_status_t st = check_open_args(port, journal_path, out, label, err, errlen);
    if (st != FSA_OK)
        return st;

    fsa_lockmgr_t *m = fsa_calloc(1, sizeof *m);
    if (m == NULL) {
        snprintf(err, errlen, "lock manager: out of memory");
        return FSA_ENOMEM;
    }
    m->port = port;
    snprintf(m->label, sizeof m->label, "%s", label);
    if ((st = open_parts(m, journal_path, opts, err, errlen)) != FSA_OK ||
        (st = prepare_all(m, err, errlen)) != FSA_OK ||
        (st = register_holder(m, err, errlen)) != FSA_OK) {
        free_parts(port, m);
        return st;
    }
    *out = m;
    return FSA_OK;
}

/*
 * At close, before the close transaction: true when no other manager is on the table, so that
 * this one writes it back (write_back()): our shared attach byte converted to exclusive. Else it
 * lets go and tries once more, so that of two last managers closing at once, one finds the other
 * gone. Either way m no longer holds the byte shared; the caller lets go of an exclusive one.
 */
static bool last_out(fsa_lockmgr_t *m)
{
    fsa_port_t *p = m->port;
    fsa_status_t st = p->flock_try(p->ctx, m->live, ATTACH_BYTE);
    if (st != FSA_OK) {
        p->flock_release(p->ctx, m->live, ATTACH_BYTE);
        st = p->flock_try(p->ctx, m->live, ATTACH_BYTE);
    }
    m->attached = false;
    return st == FSA_OK;
}

/*
 * Within the close transaction of the last manager on the table: writes every slot's token and
 * holder to its row (never lowering the token) and ends the generation, so that the rows are exact
 * and the fence check reads them. If the transaction fails, the generation stays live and the next
 * manager starts a new one as after a crash (tokens move up by SYNC_EVERY).
 */
static int write_back(fsa_lockmgr_t *m)
{
    int64_t gen = 0;
    int rc = journal_table_gen(m->db, &gen);
    if (rc != SQLITE_OK || gen != m->tab->gen)
        return rc;
    sqlite3_stmt *u = NULL;
    rc = sqlite3_prepare_v3(m->db, "UPDATE locks SET token=?2 WHERE key=?1 AND token<?2", -1, 0, &u,
                            NULL);
    for (uint32_t k = 0, n = table_used(m->tab); rc == SQLITE_OK && k < n; k++) {
        const slot_t *s = slot_at(m->tab, k);
        uint32_t kl = ld32(&s->key_len);
        if (kl == 0 || kl >= sizeof s->key || s->token <= 0)
            continue;
        sqlite3_bind_text(u, 1, s->key, (int)kl, SQLITE_STATIC);
        sqlite3_bind_int64(u, 2, s->token);
        rc = step_done(u);
    }
    sqlite3_finalize(u);
    if (rc == SQLITE_OK)
        rc = holders_to_rows(m);
    if (rc == SQLITE_OK)
        rc = set_table_gen(m->db, -gen);
    return rc;
}

void fsa_lockmgr_close(fsa_lockmgr_t *m)
{
    if (m == NULL)
        return;
    fsa_port_t *p = m->port;
    if (m->held > 0)
        fsa_log(p, FSA_LOG_WARN, "lock manager %s closed with %zu locks held; releasing them",
                m->label, m->held);
    /* Our slots name nobody now: free, not a dead holder's. */
    for (uint32_t i = 0, n = table_used(m->tab); i < n; i++) {
        slot_t *s = slot_at(m->tab, i);
        if (ld32(&s->key_len) != 0 && ld64(&s->holder) == m->id && lock_slot(m, i) == FSA_OK) {
            if (s->holder == m->id) {
                slot_begin(s);
                st64(&s->holder, 0);
                slot_end(s);
            }
            unlock_slot(m, i);
        }
    }
    /* Free our locks and forget our row in one transaction; if that fails, the liveness byte
     * dropped below still frees them for the next acquirer. */
    bool last = last_out(m);
    int rc = step_done(m->begin);
    if (rc == SQLITE_OK)
        rc = exec_id(m->db,
                     "UPDATE locks SET holder=NULL,holder_label=NULL,acquired_ns=NULL,"
                     "expires_ns=NULL WHERE holder=?1",
                     m->id);
    if (rc == SQLITE_OK && last)
        rc = write_back(m);
    if (rc == SQLITE_OK)
        rc = exec_id(m->db, "DELETE FROM lock_holders WHERE id=?1", m->id);
    if (rc == SQLITE_OK)
        rc = step_done(m->commit);
    if (rc != SQLITE_OK) {
        fsa_log(p, FSA_LOG_WARN, "lock manager %s: unclean close: %s", m->label,
                sqlite3_errmsg(m->db));
        rollback_if_open(m);
    }
    p->flock_release(p->ctx, m->live, ATTACH_BYTE);
    finalize_all(m);
    fsa__db_close(p, m->db, m->users);
    p->flock_unmap(p->ctx, m->tab, TABLE_BYTES);
    p->flock_close(p->ctx, m->live);
    p->cond_free(p->ctx, m->released);
    p->mutex_free(p->ctx, m->mu);
    fsa_free(m->dbfile);
    fsa_free(m->in_use);
    fsa_free(m);
}

static int cmp_holder(const void *a, const void *b)
{
    return strcmp(((const fsa_lock_holder_info_t *)a)->key,
                  ((const fsa_lock_holder_info_t *)b)->key);
}

/* A lock held now, by what its slot (or row) says: skipped when its holder is alive and not using
 * it (named where a release does not clear, see "Holding and releasing"), or it is ours and idle.
 * A dead holder still named died holding it: its releases cleared their slots and rows. */
static bool listed(fsa_lockmgr_t *m, const char *key, int64_t holder, bool *alive)
{
    *alive = holder_alive(m, holder);
    if (holder == m->id)
        return find_held(m, key) != NULL;
    return !*alive || holder_using(m, holder, key);
}

/* Appends h to *all (grown as needed); false without memory. */
static bool push_holder(fsa_lock_holder_info_t **all, size_t *n, size_t *cap,
                        const fsa_lock_holder_info_t *h)
{
    fsa_lock_holder_info_t *g = fsa_array_grow(*all, cap, *n, sizeof *g, 16, 0);
    if (g == NULL)
        return false;
    *all = g;
    (*all)[(*n)++] = *h;
    return true;
}

static fsa_status_t list_holders(fsa_lockmgr_t *m, fsa_lock_stats_t *out, char *err, size_t errlen)
{
    fsa_lock_holder_info_t *all = NULL, h;
    size_t n = 0, cap = 0;
    bool oom = false;
    int rc = SQLITE_DONE;
    fsa_mono_t now = m->port->mono_now(m->port->ctx);
    /* The table's keys. */
    for (uint32_t k = 0, nu = table_used(m->tab); k < nu && !oom && rc == SQLITE_DONE; k++) {
        const slot_t *s = slot_at(m->tab, k);
        uint32_t kl = ld32(&s->key_len);
        int64_t holder = ld64(&s->holder);
        bool alive = false;
        if (kl == 0 || kl >= sizeof h.key || holder == 0 || !listed(m, s->key, holder, &alive))
            continue;
        memset(&h, 0, sizeof h);
        memcpy(h.key, s->key, kl);
        h.token = ld64(&s->token);
        h.holder_id = holder;
        h.remaining_ns = ld64(&s->expires_ns) - now.ns;
        h.alive = alive;
        /* A holder whose row is gone holds nothing: its close cleared its slots before it
         * deleted the row (after our reads above), and a dead holder's row is forgotten only
         * once no slot names it. */
        holder_seen_t seen;
        int named = name_holder(m, holder, &seen);
        if (named != SQLITE_ROW) {
            if (named != SQLITE_DONE)
                rc = named;
            continue;
        }
        snprintf(h.label, sizeof h.label, "%s", seen.label);
        h.pid = seen.pid;
        oom = !push_holder(&all, &n, &cap, &h);
    }
    /* Keys in the locks table alone (no room in the table). */
    sqlite3_stmt *s = NULL;
    if (rc == SQLITE_DONE)
        rc = sqlite3_prepare_v3(m->db, SQL_LIST, -1, 0, &s, NULL);
    while (rc == SQLITE_OK && !oom && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        rc = SQLITE_OK;
        const char *key = (const char *)sqlite3_column_text(s, 0);
        uint32_t si = 0;
        int64_t holder = sqlite3_column_int64(s, 2);
        bool alive = false;
        if (key == NULL || table_find(m->tab, key, &si) != NULL || !listed(m, key, holder, &alive))
            continue;
        memset(&h, 0, sizeof h);
        copy_text(h.key, sizeof h.key, sqlite3_column_text(s, 0));
        h.token = sqlite3_column_int64(s, 1);
        h.holder_id = holder;
        copy_text(h.label, sizeof h.label, sqlite3_column_text(s, 3));
        h.remaining_ns = sqlite3_column_int64(s, 4) - now.ns;
        h.pid = sqlite3_column_int64(s, 5);
        h.alive = alive;
        oom = !push_holder(&all, &n, &cap, &h);
    }
    sqlite3_finalize(s);
    if (oom || rc != SQLITE_DONE) {
        if (oom)
            snprintf(err, errlen, "lock stats: out of memory");
        else
            db_error(m, rc, "cannot list holders", err, errlen);
        fsa_free(all);
        return oom ? FSA_ENOMEM : fsa__db_status(rc);
    }
    if (n > 1)
        qsort(all, n, sizeof *all, cmp_holder);
    size_t listed_n = n < FSA_LOCK_STATS_HOLDERS_MAX ? n : FSA_LOCK_STATS_HOLDERS_MAX;
    /* cppcheck 2.10 does not follow push_holder's count through its pointer and takes n for 0. */
    // cppcheck-suppress knownConditionTrueFalse
    if (listed_n > 0)
        memcpy(out->holders, all, listed_n * sizeof *all);
    out->holders_total = n;
    out->n_holders = listed_n;
    fsa_free(all);
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
