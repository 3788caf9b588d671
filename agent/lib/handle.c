/* libfieldsync: the handle: open (and init), close, errors per handle and thread, statuses. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/lib/internal.h"
#include "port/alloc.h"
#include "port/files.h"
#include "port/jsonstr.h"
#include "port/limits.h"
#include "storage/lock.h"

/* ---- statuses: the public numbers are the project's ---- */

#define SAME(x) _Static_assert((int)FIELDSYNC_##x == (int)FSA_##x, "FIELDSYNC_" #x " != FSA_" #x)
SAME(OK);
SAME(EINVAL);
SAME(ENOMEM);
SAME(EIO);
SAME(ETIMEOUT);
SAME(ENOTFOUND);
SAME(EEXISTS);
SAME(ETOOLARGE);
SAME(ETRANSITION);
SAME(EFULL);
SAME(EFENCED);
SAME(ELOCKTIMEOUT);
SAME(ESCHEMA);
SAME(ECORRUPT);
SAME(EBUSY);
SAME(ENET);
SAME(EAUTH);
SAME(ESKEW);
SAME(EPROTO);
SAME(EREJECTED);
SAME(ECONFLICT);
SAME(EPERM);
SAME(EUNSUPPORTED);
SAME(ELOST);
SAME(EEXHAUSTED);
SAME(ETLS);
SAME(ECLOSED);
_Static_assert(FSA__STATUS_COUNT == FIELDSYNC_ECLOSED + 1, "a status is missing from the API");

fieldsync_status_t fsl__status(fsa_status_t st)
{
    return (fieldsync_status_t)st;
}

const char *fieldsync_version(void)
{
#define STR2(x) #x
#define STR(x) STR2(x)
    return STR(FIELDSYNC_VERSION_MAJOR) "." STR(FIELDSYNC_VERSION_MINOR) "." STR(
        FIELDSYNC_VERSION_PATCH);
}

const char *fieldsync_status_str(fieldsync_status_t st)
{
    return fsa_status_str((fsa_status_t)st);
}

/* ---- errors: per handle and per calling thread ---- */

/*
 * Each thread keeps the last message of the last few handles it used, keyed by the handle's id
 * (unique in the process, never reused), as sqlite3_errmsg keeps one per connection. Id 0 is
 * the last open that could not make a handle. A thread that uses more handles than there are
 * slots loses the oldest messages (they read as "").
 */
#define ERR_SLOTS 16
#define ERR_BYTES 512

typedef struct err_slot {
    uint64_t id;
    uint64_t used; /* for least-recently-used replacement */
    bool set;
    char msg[ERR_BYTES];
} err_slot_t;

static _Thread_local err_slot_t err_slots[ERR_SLOTS];
static _Thread_local uint64_t err_clock;
static _Atomic uint64_t next_handle_id = 1;

static err_slot_t *err_slot(uint64_t id, bool create)
{
    err_slot_t *victim = &err_slots[0];
    for (size_t i = 0; i < ERR_SLOTS; i++) {
        err_slot_t *s = &err_slots[i];
        if (s->set && s->id == id) {
            s->used = ++err_clock;
            return s;
        }
        if (!s->set || s->used < victim->used)
            victim = s;
        if (!victim->set)
            break;
    }
    if (!create)
        return NULL;
    victim->set = true;
    victim->id = id;
    victim->used = ++err_clock;
    victim->msg[0] = '\0';
    return victim;
}

static void err_setv(uint64_t id, const char *fmt, va_list ap) FSA_PRINTF(2, 0);
static void err_setv(uint64_t id, const char *fmt, va_list ap)
{
    err_slot_t *s = err_slot(id, true);
    vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    fsa_one_line(s->msg);
}

static void err_set(uint64_t id, const char *fmt, ...) FSA_PRINTF(2, 3);
static void err_set(uint64_t id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_setv(id, fmt, ap);
    va_end(ap);
}

fieldsync_status_t fsl__fail(const fieldsync_t *fs, fieldsync_status_t st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_setv(fs != NULL ? fs->id : 0, fmt, ap);
    va_end(ap);
    return st;
}

void fsl__zero_sized(void *out, uint32_t size)
{
    if (out != NULL && size > sizeof size)
        memset((char *)out + sizeof size, 0, size - sizeof size);
}

fieldsync_status_t fsl__ok(const fieldsync_t *fs)
{
    if (fs != NULL) {
        err_slot_t *s = err_slot(fs->id, false);
        if (s != NULL)
            s->msg[0] = '\0';
    }
    return FIELDSYNC_OK;
}

bool fsl__usable(const fieldsync_t *fs)
{
    if (fs == NULL)
        return false;
    uint32_t m = atomic_load(&fs->magic);
    if (m == FSL_MAGIC_OPEN)
        return true;
    if (m == FSL_MAGIC_FAILED)
        err_set(fs->id, "this handle failed to open: only fieldsync_errmsg and fieldsync_close "
                        "work on it");
    return false;
}

const char *fieldsync_errmsg(const fieldsync_t *fs)
{
    if (fs != NULL) {
        uint32_t m = atomic_load(&fs->magic);
        if (m != FSL_MAGIC_OPEN && m != FSL_MAGIC_FAILED)
            return "not a handle (closed, or never opened)";
    }
    const err_slot_t *s = err_slot(fs != NULL ? fs->id : 0, false);
    return s != NULL ? s->msg : "";
}

void fieldsync_free(void *p)
{
    fsa_free(p);
}

bool fsl__type_parse(const char *name, fsa_type_t *out)
{
    if (name == NULL)
        return false;
    if (strcmp(name, "job") == 0) {
        *out = FSA_TYPE_JOBNEED;
        return true;
    }
    return fsa_type_parse(name, out) == FSA_OK;
}

/* ---- JSON text, bounded ---- */

/* A JSON answer is at most this large: a list of 1000 entities of 1 MiB each does not fit, and
 * says so (FIELDSYNC_ETOOLARGE) instead of taking the device's memory. */
#define JB_MAX ((size_t)64 * 1024 * 1024)

static bool jb_reserve(fsl_jb_t *b, size_t more)
{
    if (b->st != FSA_OK)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    if (b->len + more + 1 > JB_MAX) {
        b->st = FSA_ETOOLARGE;
        return false;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    if (cap > JB_MAX)
        cap = JB_MAX;
    char *n = fsa_realloc(b->buf, cap);
    if (n == NULL) {
        b->st = FSA_ENOMEM;
        return false;
    }
    b->buf = n;
    b->cap = cap;
    return true;
}

void fsl__jb_raw(fsl_jb_t *b, const char *s)
{
    size_t n = strlen(s);
    if (!jb_reserve(b, n) || b->buf == NULL)
        return;
    memcpy(b->buf + b->len, s, n + 1);
    b->len += n;
}

void fsl__jb_str(fsl_jb_t *b, const char *s)
{
    if (s == NULL) {
        fsl__jb_raw(b, "null");
        return;
    }
    size_t max = FSA_JSON_QUOTE_MAX(strlen(s));
    if (!jb_reserve(b, max) || b->buf == NULL)
        return;
    b->len += fsa_json_quote(s, b->buf + b->len, max + 1);
}

void fsl__jb_fmt(fsl_jb_t *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        if (b->st == FSA_OK)
            b->st = FSA_ETOOLARGE;
        return;
    }
    fsl__jb_raw(b, tmp);
}

fsa_status_t fsl__jb_take(fsl_jb_t *b, char **out)
{
    if (b->st == FSA_OK && b->buf == NULL)
        fsl__jb_raw(b, "");
    fsa_status_t st = b->st;
    if (st != FSA_OK) {
        fsa_free(b->buf);
        *out = NULL;
    } else {
        *out = b->buf;
    }
    memset(b, 0, sizeof *b);
    return st;
}

/* ---- open ---- */

/* Where each member of fieldsync_config_t ends: a caller's size must end on one of them. */
#define END(m) (offsetof(fieldsync_config_t, m) + sizeof(((fieldsync_config_t *)0)->m))
static const size_t cfg_ends[] = {END(journal_path),    END(device_id),
                                  END(server_url),      END(secret_file),
                                  END(ca_file),         END(pins),
                                  END(client_cert),     END(client_key),
                                  END(proxy),           END(allow_http),
                                  END(durability),      END(retry_policy),
                                  END(resolver_policy), END(sync_interval_ms),
                                  END(stall_after_ms),  END(budget_bytes),
                                  END(label),           sizeof(fieldsync_config_t)};
#undef END

/* Copies the caller's config (of its own size) into *c, defaults for what it does not have. */
static fieldsync_status_t config_copy(const fieldsync_config_t *cfg, fieldsync_config_t *c,
                                      char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    size_t size = cfg->size;
    if (size > sizeof *c) {
        /* A newer caller: what this library does not know must be zero (unset). */
        const unsigned char *tail = (const unsigned char *)cfg + sizeof *c;
        for (size_t i = 0; i < size - sizeof *c; i++)
            if (tail[i] != 0) {
                snprintf(err, errlen,
                         "config: member at byte %zu is set, but this library (%s) knows only "
                         "%zu bytes of fieldsync_config_t",
                         sizeof *c + i, fieldsync_version(), sizeof *c);
                return FIELDSYNC_EUNSUPPORTED;
            }
        size = sizeof *c;
    }
    bool boundary = false;
    for (size_t i = 0; i < sizeof cfg_ends / sizeof cfg_ends[0]; i++)
        boundary = boundary || cfg_ends[i] == size;
    if (!boundary) {
        snprintf(err, errlen,
                 "config: size %u is not the size of any fieldsync_config_t (set it to "
                 "sizeof(fieldsync_config_t))",
                 (unsigned)cfg->size);
        return FIELDSYNC_EINVAL;
    }
    memcpy(c, cfg, size);
    return FIELDSYNC_OK;
}

static fsa_status_t dup_opt(const char *s, char **dst)
{
    if (s == NULL || s[0] == '\0')
        return FSA_OK;
    *dst = fsa_strdup(s);
    return *dst != NULL ? FSA_OK : FSA_ENOMEM;
}

/* An absolute path for a file the journal keeps (a later process may start elsewhere); a private
 * file (a secret, a key) must not be a symlink (fsa_file_absolute). */
static fieldsync_status_t absolute(char **path, const char *what, bool private_file, char *err,
                                   size_t errlen)
{
    if (*path == NULL)
        return FIELDSYNC_OK;
    char *abs = NULL;
    char why[256];
    fsa_status_t st = fsa_file_absolute(*path, private_file, &abs, why, sizeof why);
    if (st == FSA_ENOMEM)
        return FIELDSYNC_ENOMEM;
    if (st != FSA_OK) {
        snprintf(err, errlen, "%s %s", what, why);
        return (fieldsync_status_t)st; /* the same numbers (SAME above) */
    }
    fsa_free(*path);
    *path = abs;
    return FIELDSYNC_OK;
}

/* The files of k made absolute, as an init stores them and an open's overrides keep them (a
 * reload, or the sync thread, reads them later, wherever the process then is). Each keeps its
 * last component as given, its directory resolved: the secrets may not be links; the public CA
 * file and certificate may, as in /etc/ssl/certs, and stay links, so that a renewal that moves
 * the link is read. */
static fieldsync_status_t absolute_paths(fsl_config_t *k, char *err, size_t errlen)
{
    fieldsync_status_t ps = absolute(&k->secret_file, "secret file", true, err, errlen);
    if (ps == FIELDSYNC_OK)
        ps = absolute(&k->ca_file, "CA file", false, err, errlen);
    if (ps == FIELDSYNC_OK)
        ps = absolute(&k->client_cert, "client certificate", false, err, errlen);
    if (ps == FIELDSYNC_OK)
        ps = absolute(&k->client_key, "client key", true, err, errlen);
    return ps;
}

static fsa_status_t journal_open(fieldsync_t *fs, bool create, char *err, size_t errlen)
{
    fsa_journal_opts_t o = {.create = create,
                            .sync_normal = fs->cfg.durability == FIELDSYNC_DURABLE_NORMAL,
                            .budget_bytes = fs->cfg.budget_bytes};
    return fsa_journal_open(&fs->port, fs->cfg.journal_path, &o, &fs->j, err, errlen);
}

/* Checks the members of the caller's config that need no file and no journal. */
static fieldsync_status_t config_validate(const fieldsync_config_t *c, char *err, size_t errlen)
{
    if (c->journal_path == NULL || c->journal_path[0] == '\0') {
        snprintf(err, errlen, "config: journal_path is required");
        return FIELDSYNC_EINVAL;
    }
    if ((c->flags & ~(FIELDSYNC_OPEN_INIT | FIELDSYNC_EVENTS_BUFFERED)) != 0) {
        snprintf(err, errlen, "config: unknown flags 0x%x", (unsigned)c->flags);
        return FIELDSYNC_EUNSUPPORTED;
    }
    if (c->durability != FIELDSYNC_DURABLE_FULL && c->durability != FIELDSYNC_DURABLE_NORMAL) {
        snprintf(err, errlen, "config: unknown durability %d", (int)c->durability);
        return FIELDSYNC_EINVAL;
    }
    if (c->sync_interval_ms < 0 || c->stall_after_ms < 0 || c->budget_bytes < 0 ||
        c->budget_bytes > FSA_LIMIT_JOURNAL_BUDGET_BYTES_MAX) {
        snprintf(err, errlen,
                 "config: sync_interval_ms, stall_after_ms and budget_bytes must be >= 0 "
                 "(budget at most 64 GiB)");
        return FIELDSYNC_EINVAL;
    }
    if (c->label != NULL && c->label[0] != '\0' && !fsa_lock_label_valid(c->label)) {
        snprintf(err, errlen, FSA_LOCK_LABEL_ERROR_FMT, "config", FSA_LOCK_LABEL_BYTES - 1);
        return FIELDSYNC_EINVAL;
    }
    return FIELDSYNC_OK;
}

/* Makes the handle's own copy of the caller's config (fs->cfg, strings owned). */
static fieldsync_status_t config_keep(fieldsync_t *fs, const fieldsync_config_t *c, char *err,
                                      size_t errlen)
{
    fsl_config_t *k = &fs->cfg;
    k->flags = c->flags;
    k->allow_http = c->allow_http;
    k->durability = c->durability;
    k->sync_interval_ms = c->sync_interval_ms;
    k->stall_after_ms = c->stall_after_ms;
    k->budget_bytes = c->budget_bytes;
    /* The strings by their offsets in the two configs: one loop, not a call each (a table of
     * offsets needs no relocations). */
#define FIELD(f)                                                                                   \
    {                                                                                              \
        offsetof(fieldsync_config_t, f), offsetof(fsl_config_t, f)                                 \
    }
    static const struct {
        unsigned char from, to;
    } strs[] = {FIELD(journal_path), FIELD(device_id),    FIELD(server_url),     FIELD(secret_file),
                FIELD(ca_file),      FIELD(pins),         FIELD(client_cert),    FIELD(client_key),
                FIELD(proxy),        FIELD(retry_policy), FIELD(resolver_policy)};
#undef FIELD
    fsa_status_t st = FSA_OK;
    for (size_t i = 0; i < sizeof strs / sizeof strs[0] && st == FSA_OK; i++)
        st = dup_opt(*(const char *const *)((const char *)c + strs[i].from),
                     (char **)((char *)k + strs[i].to));
    if (st == FSA_OK)
        st = dup_opt(c->label != NULL ? c->label : "app", &k->label);
    if (st != FSA_OK) {
        snprintf(err, errlen, "out of memory");
        return FIELDSYNC_ENOMEM;
    }
    return FIELDSYNC_OK;
}

/* FIELDSYNC_OPEN_INIT: checks everything before the journal file is created (a typo leaves
 * nothing) and creates the journal; open_steps stores the configuration in it last, once nothing
 * else can fail. */
static fieldsync_status_t open_init(fieldsync_t *fs, char *err, size_t errlen)
{
    fsl_config_t *k = &fs->cfg;
    if (k->device_id == NULL || k->server_url == NULL || k->secret_file == NULL) {
        snprintf(err, errlen, "init needs device_id, server_url and secret_file");
        return FIELDSYNC_EINVAL;
    }
    if (!fsa_model_id_valid(k->device_id)) {
        snprintf(err, errlen, "invalid device id '%.40s': 1-128 characters of A-Z a-z 0-9 . _ : -",
                 k->device_id);
        return FIELDSYNC_EINVAL;
    }
    fieldsync_status_t ps = absolute_paths(k, err, errlen);
    if (ps != FIELDSYNC_OK)
        return ps;
    fsa_status_t st =
        fsl__config_check(&fs->port, k, FSL_CHECK_TRANSPORT | FSL_CHECK_SECRET, err, errlen);
    if (st != FSA_OK)
        return fsl__status(st);
    st = journal_open(fs, true, err, errlen);
    if (st != FSA_OK)
        return fsl__status(st);
    char *existing = NULL;
    st = fsa_journal_device_id(fs->j, &existing);
    if (st == FSA_OK && existing != NULL && existing[0] != '\0' &&
        strcmp(existing, k->device_id) != 0) {
        snprintf(err, errlen, "journal %s belongs to device %s, not %s", k->journal_path, existing,
                 k->device_id);
        st = FSA_EINVAL;
    } else if (st != FSA_OK) {
        snprintf(err, errlen, "cannot read %s: %s", k->journal_path, fsa_status_str(st));
    }
    fsa_model_free(existing);
    return fsl__status(st);
}

/* Checks that the journal is set up, and for this device (taking its id when none is given). */
static fsa_status_t journal_owner(fieldsync_t *fs, char *err, size_t errlen)
{
    fsl_config_t *k = &fs->cfg;
    char *stored = NULL;
    fsa_status_t st = fsa_journal_device_id(fs->j, &stored);
    if (st != FSA_OK) {
        snprintf(err, errlen, "cannot read %s: %s", k->journal_path, fsa_status_str(st));
    } else if (stored == NULL || stored[0] == '\0') {
        snprintf(err, errlen, "journal %s is not set up: run 'fieldsync init' first",
                 k->journal_path);
        st = FSA_ENOTFOUND;
    } else if (k->device_id != NULL && strcmp(k->device_id, stored) != 0) {
        snprintf(err, errlen, "journal %s belongs to device %s, not %s", k->journal_path, stored,
                 k->device_id);
        st = FSA_EINVAL;
    } else if (k->device_id == NULL && (k->device_id = fsa_strdup(stored)) == NULL) {
        st = FSA_ENOMEM;
    }
    fsa_model_free(stored);
    return st;
}

/* An existing journal: opens it, checks whose it is, and reads the stored configuration under
 * the caller's overrides. */
static fieldsync_status_t open_existing(fieldsync_t *fs, char *err, size_t errlen)
{
    fsl_config_t *k = &fs->cfg;
    fieldsync_status_t ps = absolute_paths(k, err, errlen);
    if (ps != FIELDSYNC_OK)
        return ps;
    /* The caller's members as given, before the stored ones fill the rest: a reload lays them
     * over the stored configuration again. */
    fsa_status_t st = fsl__config_dup(k, &fs->given);
    if (st != FSA_OK) {
        snprintf(err, errlen, "out of memory");
        return fsl__status(st);
    }
    st = journal_open(fs, false, err, errlen);
    if (st != FSA_OK)
        return fsl__status(st);
    st = journal_owner(fs, err, errlen);
    bool durability_given = k->durability != FIELDSYNC_DURABLE_FULL;
    bool budget_given = k->budget_bytes != 0;
    if (st == FSA_OK)
        st = fsl__config_load(fs->j, k, err, errlen);
    /* What the caller overrides here is checked as an init checks it, so that a typo fails the
     * open, not every sync after it, reloads included: a transport member given, the transport
     * made (the URL, pins and proxy parsed; the CA and client files in effect read); a secret
     * file given, read. Only then: an open without overrides (each CLI command) reads no file,
     * and a stored file out of reach for a while fails syncs, not recording. */
    const fsl_config_t *g = &fs->given;
    unsigned check = 0;
    if (g->server_url != NULL || g->ca_file != NULL || g->pins != NULL || g->client_cert != NULL ||
        g->client_key != NULL || g->proxy != NULL || g->allow_http)
        check |= FSL_CHECK_TRANSPORT;
    if (g->secret_file != NULL)
        check |= FSL_CHECK_SECRET;
    if (st == FSA_OK)
        st = fsl__config_check(&fs->port, k, check, err, errlen);
    if (st != FSA_OK)
        return fsl__status(st);
    /* The journal's own options come from the stored configuration unless overridden: open it
     * again with them when they differ from the defaults it was opened with. */
    if ((!durability_given && k->durability != FIELDSYNC_DURABLE_FULL) ||
        (!budget_given && k->budget_bytes != 0)) {
        fsa_journal_close(fs->j);
        fs->j = NULL;
        st = journal_open(fs, false, err, errlen);
        if (st != FSA_OK)
            return fsl__status(st);
    }
    return FIELDSYNC_OK;
}

static fieldsync_status_t open_steps(fieldsync_t *fs, const fieldsync_config_t *cfg, char *err,
                                     size_t errlen)
{
    fieldsync_config_t c;
    fieldsync_status_t ps = config_copy(cfg, &c, err, errlen);
    if (ps == FIELDSYNC_OK)
        ps = config_validate(&c, err, errlen);
    if (ps == FIELDSYNC_OK)
        ps = config_keep(fs, &c, err, errlen);
    if (ps == FIELDSYNC_OK)
        ps = (c.flags & FIELDSYNC_OPEN_INIT) != 0 ? open_init(fs, err, errlen)
                                                  : open_existing(fs, err, errlen);
    if (ps != FIELDSYNC_OK)
        return ps;
    /* The lock manager is opened by the first call that needs a lock (fsl__locks): joining the
     * journal's lock holders is a write, and most handles (status, show, a sync) take none. */
    fsa_status_t st = fsl__events_new(fs);
    if (st != FSA_OK) {
        snprintf(err, errlen, "cannot set up the listeners: %s", fsa_status_str(st));
        return fsl__status(st);
    }
    /* The configuration last, in one transaction: an init that fails stored none of it (a
     * failed call writes nothing), and the next open says the journal is not set up. */
    if ((c.flags & FIELDSYNC_OPEN_INIT) != 0)
        st = fsl__config_store(fs->j, &fs->cfg, err, errlen);
    return fsl__status(st);
}

fieldsync_status_t fsl__open_with_port(const fieldsync_config_t *cfg, const fsa_port_t *port,
                                       fieldsync_t **out)
{
    if (out == NULL)
        return fsl__fail(NULL, FIELDSYNC_EINVAL, "fieldsync_open: out is NULL");
    *out = NULL;
    if (port == NULL)
        return fsl__fail(NULL, FIELDSYNC_EINVAL, "fieldsync_open: port is NULL");
    fieldsync_t *fs = fsa_calloc(1, sizeof *fs);
    if (fs == NULL)
        return fsl__fail(NULL, FIELDSYNC_ENOMEM, "fieldsync_open: out of memory");
    fs->port = *port;
    fs->id = atomic_fetch_add(&next_handle_id, 1);
    atomic_store(&fs->magic, FSL_MAGIC_FAILED);
    char err[512] = "";
    fieldsync_status_t st;
    if (cfg == NULL) {
        snprintf(err, sizeof err, "fieldsync_open: cfg is NULL");
        st = FIELDSYNC_EINVAL;
    } else {
        st = open_steps(fs, cfg, err, sizeof err);
    }
    if (st != FIELDSYNC_OK) {
        /* The failed handle keeps only its id (for its message); the rest is undone now. */
        fsl__events_free(fs);
        fsa_lockmgr_close(fs->locks);
        fs->locks = NULL;
        fsa_journal_close(fs->j);
        fs->j = NULL;
        fsl__config_clear(&fs->cfg);
        fsl__config_clear(&fs->given);
        if (err[0] == '\0')
            snprintf(err, sizeof err, "fieldsync_open: %s", fieldsync_status_str(st));
        err_set(0, "%s", err);
        err_set(fs->id, "%s", err);
        *out = fs;
        return st;
    }
    atomic_store(&fs->magic, FSL_MAGIC_OPEN);
    *out = fs;
    fsl__ok(fs);
    return FIELDSYNC_OK;
}

fsa_status_t fsl__locks(fieldsync_t *fs, fsa_lockmgr_t **out, char *err, size_t errlen)
{
    fsa_lockmgr_t *m = __atomic_load_n(&fs->locks, __ATOMIC_ACQUIRE);
    if (m == NULL) {
        fsa_lockmgr_opts_t lo = {.label = fs->cfg.label};
        fsa_status_t st = fsa_lockmgr_open(&fs->port, fs->cfg.journal_path, &lo, &m, err, errlen);
        if (st != FSA_OK)
            return st;
        /* Two threads may open one at once: the first stored wins, the other closes its own. */
        fsa_lockmgr_t *none = NULL;
        if (!__atomic_compare_exchange_n(&fs->locks, &none, m, false, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE)) {
            fsa_lockmgr_close(m);
            m = none;
        }
    }
    *out = m;
    return FSA_OK;
}

fieldsync_status_t fieldsync_open(const fieldsync_config_t *cfg, fieldsync_t **out)
{
    return fsl__open_with_port(cfg, fsa_port_posix(), out);
}

fieldsync_status_t fieldsync_close(fieldsync_t *fs)
{
    if (fs == NULL)
        return FIELDSYNC_OK;
    uint32_t m = atomic_load(&fs->magic);
    if (m == FSL_MAGIC_FAILED) {
        atomic_store(&fs->magic, FSL_MAGIC_CLOSED);
        fsl__config_clear(&fs->cfg);
        fsa_free(fs);
        return FIELDSYNC_OK;
    }
    if (m != FSL_MAGIC_OPEN)
        return FIELDSYNC_EINVAL;
    /* Any handle's listener: its own handle's would free what runs it; another's waits for that
     * handle's sync thread, which may wait for a delivery that waits for this listener. */
    if (fsl__in_any_listener())
        return fsl__fail(fs, FIELDSYNC_EBUSY, "fieldsync_close: called from a listener");
    /* The sync thread first (it uses the journal, the locks and the listeners), then the
     * listeners, then what they used. */
    fsl__worker_shutdown(fs);
    fsl__worker_free(fs);
    fsl__events_free(fs);
    atomic_store(&fs->magic, FSL_MAGIC_CLOSED);
    fsa_lockmgr_close(fs->locks);
    fsa_journal_close(fs->j);
    fsl__config_clear(&fs->cfg);
    fsl__config_clear(&fs->given);
    fsa_free(fs);
    return FIELDSYNC_OK;
}

fieldsync_status_t fieldsync_set_log_level(const char *level)
{
    fsa_log_level_t l;
    if (level == NULL)
        return fsl__fail(NULL, FIELDSYNC_EINVAL, "log level is NULL");
    if (strcmp(level, "off") == 0)
        l = FSA_LOG_OFF;
    else if (fsa_log_level_parse(level, &l) != FSA_OK)
        return fsl__fail(NULL, FIELDSYNC_EINVAL,
                         "unknown log level '%.20s' (debug, info, warn, error, off)", level);
    /* Handles copy the posix port at open, so this reaches the handles opened after it. */
    fsa_port_posix()->log_level = l;
    return FIELDSYNC_OK;
}
