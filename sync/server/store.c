/* fieldsync-server: the store's protocol logic (ops, groups, the op log, retries) over a backend.
 */
#include "sync/server/store.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port/alloc.h"
#include "port/jsonstr.h"
#include "sync/server/store_internal.h"

/* The backend of a transaction. */
#define B(tx) ((tx)->store->ops)

/* ---- opening and the backends' doors ---- */

static bool is_pg_uri(const char *loc)
{
    return strncmp(loc, "postgresql://", 13) == 0 || strncmp(loc, "postgres://", 11) == 0;
}

fsa_status_t fsa_store_open(const fsa_port_t *port, const char *location, unsigned conns,
                            fsa_store_t **out, char *err, size_t errlen)
{
    char dummy[8];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (out != NULL)
        *out = NULL;
    if (port == NULL || location == NULL || out == NULL || conns == 0 ||
        conns > FSA_STORE_CONNS_MAX) {
        snprintf(err, errlen, "invalid arguments");
        return FSA_EINVAL;
    }
    fsa_status_t st;
    if (is_pg_uri(location)) {
#ifdef FSA_HAVE_LIBPQ
        st = fsa__store_pg_open(port, location, conns, out, err, errlen);
#else
        snprintf(err, errlen, "this fieldsync-server was built without PostgreSQL (libpq)");
        return FSA_EUNSUPPORTED;
#endif
    } else {
        st = fsa__store_sqlite_open(port, location, conns, out, err, errlen);
    }
    if (st == FSA_OK && port->mutex_new(port->ctx, &(*out)->warm_lock) != FSA_OK) {
        (*out)->warm_lock = NULL;
        fsa_store_close(*out);
        *out = NULL;
        snprintf(err, errlen, "cannot create a mutex");
        st = FSA_ENOMEM;
    }
    return st;
}

static void cache_drop(struct fsa__store_cache *c);

const char *fsa_store_backend(const fsa_store_t *store)
{
    return store != NULL ? store->ops->name : "";
}

void fsa_store_close(fsa_store_t *store)
{
    if (store == NULL)
        return;
    cache_drop(store->warm);
    store->warm = NULL;
    if (store->warm_lock != NULL)
        store->port->mutex_free(store->port->ctx, store->warm_lock);
    store->warm_lock = NULL;
    store->ops->close(store);
}

bool fsa__store_page_fits(size_t *bytes, size_t count, size_t fields_len)
{
    size_t cost = fields_len + FSA_STORE_CHANGE_OVERHEAD;
    /* A page ends at FSA_STORE_PAGE_BYTES of JSON, but always holds at least one change so that
     * a device makes progress. */
    if (count > 0 && *bytes + cost > FSA_STORE_PAGE_BYTES)
        return false;
    *bytes += cost;
    return true;
}

fsa_status_t fsa_store_pull(fsa_store_t *store, const char *device, int64_t since, unsigned limit,
                            fsa_codec_pull_t *out, int64_t *next_cursor)
{
    return fsa_store_pull_scoped(store, device, NULL, since, limit, out, next_cursor);
}

fsa_status_t fsa_store_pull_scoped(fsa_store_t *store, const char *device,
                                   const fsa_store_scope_t *scope, int64_t since, unsigned limit,
                                   fsa_codec_pull_t *out, int64_t *next_cursor)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (next_cursor != NULL)
        *next_cursor = since;
    if (store == NULL || device == NULL || out == NULL || next_cursor == NULL || since < 0 ||
        limit == 0 || limit > FSA_STORE_PULL_MAX)
        return FSA_EINVAL;
    if (scope != NULL && (scope->sites_json == NULL || scope->people_json == NULL))
        return FSA_EINVAL;
    return store->ops->pull(store, device, scope, since, limit, out, next_cursor);
}

fsa_status_t fsa_store_get(fsa_store_t *store, fsa_type_t type, const char *id,
                           fsa_codec_change_t *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (store == NULL || id == NULL || out == NULL || (unsigned)type >= FSA__TYPE_COUNT ||
        strlen(id) >= sizeof out->id)
        return FSA_EINVAL;
    return store->ops->get(store, type, id, out);
}

fsa_status_t fsa_store_counts(fsa_store_t *store, int64_t *entities, int64_t *ops,
                              int64_t *last_change)
{
    *entities = *ops = *last_change = 0;
    if (store == NULL)
        return FSA_EINVAL;
    return store->ops->counts(store, entities, ops, last_change);
}

fsa_status_t fsa_store_nonce(fsa_store_t *store, const char *device, const char *nonce,
                             int64_t expires_ms, int64_t now_ms, bool *replay)
{
    if (replay != NULL)
        *replay = false;
    if (store == NULL || device == NULL || nonce == NULL || replay == NULL)
        return FSA_EINVAL;
    fsa_status_t st = store->ops->nonce(store, device, nonce, expires_ms, now_ms, replay);
    if (st != FSA_OK)
        *replay = false;
    return st;
}

fsa_status_t fsa_store_nonce_seen(fsa_store_t *store, const char *device, const char *nonce,
                                  int64_t now_ms, bool *seen)
{
    if (seen != NULL)
        *seen = false;
    if (store == NULL || device == NULL || nonce == NULL || seen == NULL)
        return FSA_EINVAL;
    fsa_status_t st = store->ops->nonce_seen(store, device, nonce, now_ms, seen);
    if (st != FSA_OK)
        *seen = false;
    return st;
}

fsa_status_t fsa_store_sweep_ops(fsa_store_t *store, int64_t before_ms, unsigned max_rows,
                                 int64_t *deleted)
{
    if (deleted != NULL)
        *deleted = 0;
    if (store == NULL || deleted == NULL || max_rows == 0)
        return FSA_EINVAL;
    return store->ops->sweep_ops(store, before_ms, max_rows, deleted);
}

/* Appends list as a JSON array of strings to a new buffer (escaping what JSON needs). */
static char *json_list(const char (*list)[FSA_ID_BYTES], size_t n)
{
    size_t cap = 3 + n * (FSA_JSON_QUOTE_MAX(FSA_ID_BYTES) + 1), len = 0;
    char *out = fsa_malloc(cap);
    if (out == NULL)
        return NULL;
    out[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            out[len++] = ',';
        len += fsa_json_quote(list[i], out + len, cap - len);
    }
    out[len++] = ']';
    out[len] = '\0';
    return out;
}

fsa_status_t fsa_store_scope_prepare(fsa_store_scope_t *scope)
{
    if (scope == NULL)
        return FSA_EINVAL;
    scope->sites_json = json_list(scope->sites, scope->nsites);
    scope->people_json = json_list(scope->people, scope->npeople);
    if (scope->sites_json == NULL || scope->people_json == NULL) {
        fsa_store_scope_release(scope);
        return FSA_ENOMEM;
    }
    return FSA_OK;
}

void fsa_store_scope_release(fsa_store_scope_t *scope)
{
    if (scope == NULL)
        return;
    fsa_free(scope->sites_json);
    fsa_free(scope->people_json);
    scope->sites_json = scope->people_json = NULL;
}

/* ---- the transaction's entities: each read once, written once ---- */

/*
 * A batch often holds several ops on one entity (a ticket created, then incremented, appended
 * to, set). Each op reads the entity, applies to it and writes it; writing it to the database each
 * time costs the row and every index of it (all of them hold the change number) again. So the
 * transaction keeps the entities it read or wrote here: a read after the first is a copy from
 * here, a write replaces the entry and marks it dirty, and the dirty ones go to the database once
 * each (ent_flush): before the commit, before a group's savepoint (inside a group every read and
 * write goes to the database, so that its rollback needs nothing here), and before a jobneed's
 * checkpoints are touched. The answers are the same as writing at once; what differs is only the
 * number of change numbers used (one per entity and flush rather than one per op).
 *
 * The scope keys of a written entity are known without parsing its fields when the op cannot have
 * changed them (it names another field); otherwise they are read from the final fields at the
 * flush, once.
 */
#define CACHE_MAX_BYTES (8u * 1024 * 1024) /* fields held at once; past it: flush and forget */

typedef struct cent {
    char type[16];
    char id[FSA_ID_BYTES];
    bool in_db; /* a row in the database (as this transaction sees it) */
    bool dirty; /* written here, not yet to the database */
    bool keys_known;
    uint64_t wseq; /* when it was last written here: the flush keeps that order */
    int64_t version;
    int64_t mdtz_ms;
    char *fields; /* NULL: no such entity */
    char owner[FSA_ID_BYTES];
    fsa_model_keys_t keys;
    fsa_model_entity_t *model; /* the parse of the last fields an op made here (NULL: none) */
    size_t charged;            /* what it counts against the budget now (cent_charge) */
} cent_t;

struct fsa__store_cache {
    cent_t *e;
    size_t n, cap;
    int32_t *slot; /* open addressing over e: index or -1 */
    size_t nslots;
    size_t bytes;
    uint64_t wseq;
    size_t last; /* the entry cache_find found or cache_add made last (an op looks it up 4 times) */
    bool through;                  /* inside a group: straight to the database */
    struct fsa__store_cache *prev; /* the store's warm entities, taken for this batch (or NULL) */
};

uint32_t fsa__store_entity_hash(const char *type, const char *id)
{
    uint32_t h = 2166136261u;
    for (const char *p = type; *p != '\0'; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0xffu) * 16777619u;
    for (const char *p = id; *p != '\0'; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static void cache_clear(struct fsa__store_cache *c)
{
    for (size_t i = 0; i < c->n; i++) {
        fsa_free(c->e[i].fields);
        fsa_model_entity_free(c->e[i].model);
    }
    c->n = 0;
    c->bytes = 0;
    for (size_t i = 0; i < c->nslots; i++)
        c->slot[i] = -1;
}

static void cache_free(struct fsa__store_cache *c)
{
    if (c == NULL)
        return;
    cache_clear(c);
    fsa_free(c->e);
    fsa_free(c->slot);
    memset(c, 0, sizeof *c);
}

/* cache_free of a cache on the heap, and the cache itself. NULL is accepted. */
static void cache_drop(struct fsa__store_cache *c)
{
    cache_free(c);
    fsa_free(c);
}

static cent_t *cache_find(struct fsa__store_cache *c, const char *type, const char *id)
{
    if (c->nslots == 0)
        return NULL;
    if (c->last < c->n && strcmp(c->e[c->last].id, id) == 0 &&
        strcmp(c->e[c->last].type, type) == 0)
        return &c->e[c->last];
    for (size_t i = fsa__store_entity_hash(type, id) & (c->nslots - 1);;
         i = (i + 1) & (c->nslots - 1)) {
        int32_t k = c->slot[i];
        if (k < 0)
            return NULL;
        if (strcmp(c->e[k].id, id) == 0 && strcmp(c->e[k].type, type) == 0) {
            c->last = (size_t)k;
            return &c->e[k];
        }
    }
}

/* A new, empty entry for (type, id) (not there yet); NULL when out of memory. */
static cent_t *cache_add(struct fsa__store_cache *c, const char *type, const char *id)
{
    if (strlen(type) >= sizeof c->e[0].type || strlen(id) >= sizeof c->e[0].id)
        return NULL;
    cent_t *ne = fsa_array_grow(c->e, &c->cap, c->n, sizeof *ne, 64, 0);
    if (ne == NULL)
        return NULL;
    c->e = ne;
    if ((c->n + 1) * 2 > c->nslots) {
        size_t ns = c->nslots == 0 ? 128 : c->nslots * 2;
        int32_t *sl = fsa_malloc(ns * sizeof *sl);
        if (sl == NULL)
            return NULL;
        for (size_t i = 0; i < ns; i++)
            sl[i] = -1;
        for (size_t k = 0; k < c->n; k++) {
            size_t i = fsa__store_entity_hash(c->e[k].type, c->e[k].id) & (ns - 1);
            while (sl[i] >= 0)
                i = (i + 1) & (ns - 1);
            sl[i] = (int32_t)k;
        }
        fsa_free(c->slot);
        c->slot = sl;
        c->nslots = ns;
    }
    size_t i = fsa__store_entity_hash(type, id) & (c->nslots - 1);
    while (c->slot[i] >= 0)
        i = (i + 1) & (c->nslots - 1);
    cent_t *e = &c->e[c->n];
    memset(e, 0, sizeof *e);
    memcpy(e->type, type, strlen(type) + 1);
    memcpy(e->id, id, strlen(id) + 1);
    c->last = c->n;
    c->slot[i] = (int32_t)c->n++;
    return e;
}

/* Scope keys of an entry's fields, read from them when an op may have changed them. */
static fsa_status_t cent_keys(cent_t *e)
{
    if (e->keys_known || e->fields == NULL)
        return FSA_OK;
    fsa_type_t t;
    if (fsa_type_parse(e->type, &t) != FSA_OK)
        return FSA_EIO;
    fsa_status_t st = fsa_model_entity_scope_keys(e->model, t, e->fields, &e->keys);
    if (st != FSA_OK)
        return st == FSA_ENOMEM ? st : FSA_EIO;
    e->keys_known = true;
    return FSA_OK;
}

/*
 * What a held entity costs: its text, and when the model holds its parse, the tree at
 * TREE_BYTES_PER_TEXT_BYTE per byte of the text. That factor is a bound, not an average: the
 * densest text, "[0,0,...]", is 2 bytes per value, and a cJSON node is 64 bytes plus 16 of
 * malloc's header (40 per byte of text); a string or key value adds its copy, at least one 32-byte
 * chunk, to a node that takes at least 3 bytes of text ("",). The charge is taken again whenever
 * the text changes (an append grows the tree with it), so the budget bounds what is held.
 */
#define TREE_BYTES_PER_TEXT_BYTE 40u
static void cent_charge(struct fsa__store_cache *c, cent_t *e)
{
    size_t text = e->fields != NULL ? strlen(e->fields) : 0;
    size_t now = text + (e->model != NULL ? TREE_BYTES_PER_TEXT_BYTE * (text > 64 ? text : 64) : 0);
    c->bytes = c->bytes - (c->bytes >= e->charged ? e->charged : c->bytes) + now;
    e->charged = now;
}

static int by_wseq(const void *a, const void *b)
{
    uint64_t x = (*(cent_t *const *)a)->wseq, y = (*(cent_t *const *)b)->wseq;
    return x < y ? -1 : x > y;
}

/* Writes every dirty entity to the database, in the order of their last writes here (so the
 * change numbers are in the order the ops made the changes, as when written at once). */
static fsa_status_t ent_flush(fsa__store_tx_t *tx)
{
    struct fsa__store_cache *c = tx->cache;
    if (c == NULL || c->n == 0)
        return FSA_OK;
    cent_t **dirty = fsa_malloc(c->n * sizeof(cent_t *));
    if (dirty == NULL)
        return FSA_ENOMEM;
    size_t nd = 0;
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].dirty)
            dirty[nd++] = &c->e[i];
    qsort(dirty, nd, sizeof(cent_t *), by_wseq);
    fsa_status_t st = FSA_OK;
    for (size_t i = 0; i < nd && st == FSA_OK; i++) {
        cent_t *e = dirty[i];
        st = cent_keys(e);
        if (st == FSA_OK)
            st = B(tx)->write_entity(tx, e->type, e->id, e->in_db, e->version, e->fields,
                                     e->mdtz_ms, e->owner[0] != '\0' ? e->owner : NULL, &e->keys);
        if (st == FSA_OK) {
            e->dirty = false;
            e->in_db = true;
        }
    }
    fsa_free(dirty);
    return st;
}

/* Flushes and forgets everything (a group's savepoint, or the byte budget). */
static fsa_status_t ent_forget(fsa__store_tx_t *tx)
{
    fsa_status_t st = ent_flush(tx);
    if (st == FSA_OK && tx->cache != NULL)
        cache_clear(tx->cache);
    return st;
}

static char *dup_text(const char *s)
{
    size_t n = strlen(s);
    char *d = fsa_malloc(n + 1);
    if (d != NULL)
        memcpy(d, s, n + 1);
    return d;
}

/*
 * Entities kept parsed from one batch to the next. A device's batches often name the entities its
 * last batch did (a drain's increments on one ticket, a round's merges into the same jobneeds),
 * and parsing an entity's stored fields was the largest part of the model's work (a jobneed of
 * bench_server: 29,000 instructions). So the entities a committed batch held stay with the store
 * (one batch's worth, within the same byte budget), and an entity the next batch loads from the
 * database takes its parse from there. It is only a parse: the model uses it when the fields just
 * loaded are byte for byte the text it is the parse of (fsa_model_entity_apply), so a row that
 * another process or a rolled-back batch changed meanwhile is parsed anew. The warm entities are
 * taken whole by one batch at a time (under warm_lock); a batch that finds them taken parses.
 */
static struct fsa__store_cache *warm_take(fsa_store_t *store)
{
    if (store->warm_lock == NULL)
        return NULL;
    store->port->mutex_lock(store->port->ctx, store->warm_lock);
    struct fsa__store_cache *w = store->warm;
    store->warm = NULL;
    store->port->mutex_unlock(store->port->ctx, store->warm_lock);
    return w;
}

/* After a commit: c's entities become the store's warm ones (c is emptied); prev is freed. */
static void warm_give(fsa_store_t *store, struct fsa__store_cache *c)
{
    struct fsa__store_cache *prev = c->prev;
    c->prev = NULL;
    struct fsa__store_cache *w = NULL;
    if (store->warm_lock != NULL && c->n > 0 && c->bytes <= CACHE_MAX_BYTES &&
        (w = fsa_malloc(sizeof *w)) != NULL) {
        *w = *c;
        w->through = false;
        memset(c, 0, sizeof *c);
        store->port->mutex_lock(store->port->ctx, store->warm_lock);
        struct fsa__store_cache *old = store->warm;
        store->warm = w; /* the newest batch's entities are the likelier to be named again */
        store->port->mutex_unlock(store->port->ctx, store->warm_lock);
        cache_drop(old);
    }
    cache_drop(prev);
}

/* A newly loaded entry takes the parse its entity had in the warm entities, if any. */
static void warm_adopt(struct fsa__store_cache *c, cent_t *e)
{
    cent_t *w = c->prev != NULL ? cache_find(c->prev, e->type, e->id) : NULL;
    if (w == NULL || w->model == NULL || e->fields == NULL)
        return;
    e->model = w->model;
    w->model = NULL;
}

/* load_entity through the transaction's entities (same contract; keys may be NULL). */
static fsa_status_t ent_load(fsa__store_tx_t *tx, const char *type, const char *id,
                             int64_t *version, char **fields, char *owner, fsa_model_keys_t *keys)
{
    struct fsa__store_cache *c = tx->cache;
    if (c == NULL || c->through)
        return B(tx)->load_entity(tx, type, id, version, fields, owner, keys);
    /* Checked before every op's load, held entity or not: what is held stays within the budget
     * plus one op's growth. */
    if (c->bytes > CACHE_MAX_BYTES) {
        fsa_status_t st = ent_forget(tx);
        if (st != FSA_OK)
            return st;
    }
    cent_t *e = cache_find(c, type, id);
    if (e == NULL) {
        int64_t v = 0;
        char *f = NULL, own[FSA_ID_BYTES] = "";
        fsa_model_keys_t k;
        fsa_status_t st = B(tx)->load_entity(tx, type, id, &v, &f, own, &k);
        if (st != FSA_OK)
            return st;
        e = cache_add(c, type, id);
        if (e == NULL) {
            fsa_free(f);
            return FSA_ENOMEM;
        }
        e->in_db = f != NULL;
        e->version = v;
        e->fields = f;
        memcpy(e->owner, own, sizeof own);
        e->keys = k;
        e->keys_known = true;
        warm_adopt(c, e);
        cent_charge(c, e);
    }
    *version = e->fields != NULL ? e->version : 0;
    *fields = NULL;
    if (e->fields != NULL && (*fields = dup_text(e->fields)) == NULL)
        return FSA_ENOMEM;
    if (owner != NULL)
        memcpy(owner, e->owner, FSA_ID_BYTES);
    if (keys != NULL) {
        fsa_status_t st = cent_keys(e);
        if (st != FSA_OK) {
            fsa_free(*fields);
            *fields = NULL;
            return st;
        }
        *keys = e->keys;
    }
    return FSA_OK;
}

/* True when op cannot have changed the scope keys of the fields it applied to: it names one
 * field that is not a key, or (a set) its payload names none of them (spelled plainly: a payload
 * with an escape in it is read at the flush). */
static bool keys_untouched(const fsa_op_t *op)
{
    static const char *const names[] = {"site_id", "assignedto", "people_id", "parent_id"};
    if (op->kind == FSA_OP_CREATE)
        return false;
    if (op->kind == FSA_OP_SET) {
        if (op->json == NULL || strchr(op->json, '\\') != NULL)
            return false;
        for (size_t i = 0; i < 4; i++)
            if (strstr(op->json, names[i]) != NULL)
                return false;
        return true;
    }
    for (size_t i = 0; i < 4; i++)
        if (strcmp(op->field, names[i]) == 0)
            return false;
    return true;
}

/* Writes the entity through the transaction's entities: held dirty until the flush. *next is
 * the new fields (fsa_malloc'ed): a held entity takes it (*next NULL after), else it is only read.
 */
static fsa_status_t ent_write(fsa__store_tx_t *tx, const fsa_op_t *op, bool exists, int64_t version,
                              char **next, int64_t now_ms, const char *owner,
                              const fsa_model_keys_t *keys)
{
    struct fsa__store_cache *c = tx->cache;
    const char *type = fsa_type_name(op->type);
    cent_t *e = c != NULL && !c->through ? cache_find(c, type, op->id) : NULL;
    if (e == NULL)
        return B(tx)->write_entity(tx, type, op->id, exists, version, *next, now_ms, owner, keys);
    fsa_free(e->fields);
    e->fields = *next;
    *next = NULL;
    cent_charge(c, e);
    e->version = version;
    e->mdtz_ms = now_ms;
    e->dirty = true;
    e->wseq = ++c->wseq;
    if (!e->in_db)
        snprintf(e->owner, sizeof e->owner, "%s", owner != NULL ? owner : "");
    if (keys != NULL) {
        e->keys = *keys;
        e->keys_known = true;
    } else if (!keys_untouched(op)) {
        e->keys_known = false;
    }
    return FSA_OK;
}

/*
 * The model's cache of the held entity op names (its parsed fields, so that the batch's next op
 * on it does not parse them again); NULL when it is not held (inside a group), when its tree
 * would take more than a quarter of the budget (such an entity is parsed by each op, as before
 * the cache), or out of memory, which only costs the parse. The tree counts against the budget
 * (cent_charge).
 */
static fsa_model_entity_t *ent_model(fsa__store_tx_t *tx, const fsa_op_t *op)
{
    struct fsa__store_cache *c = tx->cache;
    if (c == NULL || c->through)
        return NULL;
    cent_t *e = cache_find(c, fsa_type_name(op->type), op->id);
    if (e == NULL)
        return NULL;
    if (e->model == NULL) {
        size_t text = e->fields != NULL ? strlen(e->fields) : 0;
        if (TREE_BYTES_PER_TEXT_BYTE * text > CACHE_MAX_BYTES / 4)
            return NULL;
        e->model = fsa_model_entity_new();
        if (e->model != NULL)
            cent_charge(c, e);
    }
    return e->model;
}

/* The scope keys of the held entity op names, before op's write replaces them. */
static fsa_status_t ent_load_keys(fsa__store_tx_t *tx, const fsa_op_t *op, fsa_model_keys_t *out)
{
    cent_t *e = cache_find(tx->cache, fsa_type_name(op->type), op->id);
    memset(out, 0, sizeof *out);
    if (e == NULL)
        return FSA_EIO;
    fsa_status_t st = cent_keys(e);
    if (st == FSA_OK)
        *out = e->keys;
    return st;
}

/* A group's savepoint: everything held goes to the database before it, and inside the group
 * every read and write goes there directly, so that rolling the savepoint back is enough. */
static fsa_status_t group_savepoint(fsa__store_tx_t *tx, fsa__store_savepoint_t what)
{
    if (what == FSA__SP_BEGIN) {
        fsa_status_t st = ent_forget(tx);
        if (st != FSA_OK)
            return st;
        if (tx->cache != NULL)
            tx->cache->through = true;
    } else if (tx->cache != NULL) {
        tx->cache->through = false;
    }
    return B(tx)->savepoint(tx, what);
}

/* ---- applying a batch ---- */

static fsa_status_t in_scope(fsa__store_tx_t *tx, const fsa_store_scope_t *scope,
                             const char *device, fsa_type_t type, const char *owner,
                             const char *fields, bool *in);

/*
 * The conflicts' current entities one answer carries, in all. An answer holds one per conflict,
 * and a batch of small ops on one large entity would make one far larger than its request (500
 * creates of an existing 1 MiB entity: 500 MiB held here, and more than the agent reads of an
 * answer, FSA_LIMIT_RESPONSE_BYTES). Past it the batch is rolled back and answered 413, which the
 * agent meets by sending fewer ops at a time (PROTOCOL.md section 3). The agent's bound less
 * 512 KiB for the rest of the results (a batch holds at most 500 ops): what an agent can read
 * still comes, a group's conflicts included, and one op's answer always fits.
 */
#define ANSWER_CURRENT_MAX (FSA_LIMIT_RESPONSE_BYTES - 512 * 1024)
_Static_assert(FSA_LIMIT_FIELDS_BYTES < ANSWER_CURRENT_MAX, "one conflict's answer must fit");

/* Clears r, counting out its current entity. */
static void result_clear(fsa__store_tx_t *tx, fsa_codec_result_t *r)
{
    if (r->current_fields != NULL)
        tx->answer_bytes -= strlen(r->current_fields);
    fsa_codec_result_clear(r);
}

/* Gives r the current entity (fields, taken) at version, in place of any it had; FSA_ETOOLARGE
 * when the batch's answer passes ANSWER_CURRENT_MAX with it. */
static fsa_status_t result_current(fsa__store_tx_t *tx, fsa_codec_result_t *r, char *fields,
                                   int64_t version)
{
    if (r->current_fields != NULL)
        tx->answer_bytes -= strlen(r->current_fields);
    fsa_free(r->current_fields);
    r->current_fields = fields;
    r->current_version = version;
    r->has_current = true;
    tx->answer_bytes += strlen(fields);
    return tx->answer_bytes > ANSWER_CURRENT_MAX ? FSA_ETOOLARGE : FSA_OK;
}

/* Sets r->current from the entity as the transaction sees it now (nothing when it is absent, or
 * outside the device's scope: a conflict never shows what the device may not see; the admin API's
 * ops, by_server, see everything). */
static fsa_status_t attach_current(fsa__store_tx_t *tx, bool by_server,
                                   const fsa_store_scope_t *scope, const char *device,
                                   const char *type, const char *id, fsa_codec_result_t *r)
{
    int64_t version = 0;
    char *fields = NULL;
    char owner[FSA_ID_BYTES] = "";
    fsa_type_t t;
    fsa_status_t st = ent_load(tx, type, id, &version, &fields, owner, NULL);
    bool in = true;
    if (st == FSA_OK && fields != NULL && !by_server && fsa_type_parse(type, &t) == FSA_OK)
        st = in_scope(tx, scope, device, t, owner, fields, &in);
    if (st != FSA_OK || fields == NULL || !in) {
        fsa_free(fields);
        return st;
    }
    return result_current(tx, r, fields, version);
}

/* Every result's code and message: they quote what the device sent, cut at byte bounds (a name at
 * 48 or 64 bytes, the message at its size), which can split a character, or hold bytes that are
 * not UTF-8 at all. Made well-formed here, where every result's message is set: the answer is
 * JSON, and PostgreSQL refuses such text (a push answered 500 for good). */
static void set_result_err(fsa_codec_result_t *r, const char *code, const char *message)
{
    snprintf(r->code, sizeof r->code, "%s", code);
    snprintf(r->message, sizeof r->message, "%s", message);
    fsa_model_utf8_fix(r->code);
    fsa_model_utf8_fix(r->message);
}

/* Fills r as a duplicate of the logged outcome. */
static fsa_status_t duplicate_result(fsa__store_tx_t *tx, bool by_server,
                                     const fsa_store_scope_t *scope, const char *device,
                                     const fsa__store_logged_t *lg, fsa_codec_result_t *r)
{
    r->status = FSA_RESULT_DUPLICATE;
    r->original = lg->status;
    r->version = lg->status == FSA_RESULT_APPLIED ? lg->version : 0;
    if (lg->code[0] != '\0')
        set_result_err(r, lg->code, lg->message);
    if (lg->status == FSA_RESULT_CONFLICT)
        return attach_current(tx, by_server, scope, device, lg->type, lg->id, r);
    return FSA_OK;
}

static bool listed(const char (*list)[FSA_ID_BYTES], size_t n, const char *v)
{
    if (v[0] == '\0')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], v) == 0)
            return true;
    }
    return false;
}

/*
 * Whether an existing entity is in a device's scope (docs/server.md): what the device created;
 * attendance of its sites; tickets assigned to its people; jobneeds of its people and their
 * checkpoints (a jobneed whose parent is one of its people's). The parent is read locked, like
 * every entity the transaction reads. A device without a scope sees what its pulls show: every
 * entity but another device's attendance (the server's own, made through the admin API, too).
 */
static fsa_status_t in_scope(fsa__store_tx_t *tx, const fsa_store_scope_t *scope,
                             const char *device, fsa_type_t type, const char *owner,
                             const char *fields, bool *in)
{
    *in = true;
    if (strcmp(owner, device) == 0)
        return FSA_OK;
    if (scope == NULL) {
        *in = type != FSA_TYPE_ATTENDANCE || owner[0] == '\0';
        return FSA_OK;
    }
    fsa_model_keys_t k;
    fsa_status_t st = fsa_model_scope_keys(type, fields, &k);
    if (st != FSA_OK)
        return st == FSA_ENOMEM ? st : FSA_EIO;
    if (type == FSA_TYPE_ATTENDANCE) {
        *in = listed(scope->sites, scope->nsites, k.site);
        return FSA_OK;
    }
    *in = listed(scope->people, scope->npeople, k.person);
    if (*in || type != FSA_TYPE_JOBNEED || k.parent[0] == '\0')
        return FSA_OK;
    int64_t pv = 0;
    char *pf = NULL;
    st = ent_load(tx, "jobneed", k.parent, &pv, &pf, NULL, NULL);
    if (st == FSA_OK && pf != NULL) {
        fsa_model_keys_t pk;
        st = fsa_model_scope_keys(FSA_TYPE_JOBNEED, pf, &pk);
        if (st == FSA_OK)
            *in = listed(scope->people, scope->npeople, pk.person);
        else if (st != FSA_ENOMEM)
            st = FSA_EIO;
    }
    fsa_free(pf);
    return st;
}

/* Writes the entity with its scope keys (*next: ent_write's); when a jobneed's person changes,
 * its checkpoints get a new change number too, so that pulls take them into (or out of) the
 * scopes that follow it. *no_parent is set, and nothing written, when a jobneed's parent_id
 * names no jobneed. */
static fsa_status_t write_with_keys(fsa__store_tx_t *tx, const fsa_op_t *op, const char *old,
                                    int64_t version, char **next, int64_t now_ms, const char *owner,
                                    bool *no_parent)
{
    *no_parent = false;
    /* Only a jobneed's keys are needed now (its person against the old one's); the others' are
     * read at the flush when the op may have changed them. */
    bool held = tx->cache != NULL && !tx->cache->through &&
                cache_find(tx->cache, fsa_type_name(op->type), op->id) != NULL;
    if (held && (op->type != FSA_TYPE_JOBNEED || (old != NULL && keys_untouched(op))))
        return ent_write(tx, op, old != NULL, version, next, now_ms, owner, NULL);
    fsa_model_keys_t k, ok;
    memset(&ok, 0, sizeof ok);
    fsa_status_t st = fsa_model_scope_keys(op->type, *next, &k);
    if (st == FSA_OK && old != NULL)
        st = held ? ent_load_keys(tx, op, &ok) : fsa_model_scope_keys(op->type, old, &ok);
    if (st != FSA_OK)
        return st == FSA_ENOMEM ? st : FSA_EIO;
    if (op->type == FSA_TYPE_JOBNEED && k.parent[0] != '\0' &&
        (old == NULL || strcmp(ok.parent, k.parent) != 0)) {
        /* A checkpoint that joins a tour reads the tour, locked (load_entity): a reassign of the
         * tour (its person changing) running meanwhile either commits first, and this one after
         * it with a later change number, or waits for this one and touches it with the tour's
         * other checkpoints. Unlocked, on PostgreSQL, a checkpoint that committed between the
         * reassign's read of the checkpoints and its commit kept a number below the tour's, and a
         * device of the new person that pulled in between never got it. */
        int64_t pv = 0;
        char *pf = NULL;
        st = ent_load(tx, "jobneed", k.parent, &pv, &pf, NULL, NULL);
        bool found = pf != NULL;
        fsa_free(pf);
        if (st != FSA_OK)
            return st;
        /* A checkpoint names a tour that exists. One made before its tour would stay out of the
         * pulls of the tour's devices (selected by its own change number, older than the tour's),
         * and a later create of a tour under that id would take it into the creator's scope. */
        if (!found) {
            *no_parent = true;
            return FSA_OK;
        }
    }
    st = ent_write(tx, op, old != NULL, version, next, now_ms, owner, &k);
    if (st == FSA_OK && old != NULL && op->type == FSA_TYPE_JOBNEED &&
        strcmp(ok.person, k.person) != 0) {
        /* The checkpoints are found by their parent in the database: it must hold every write. */
        st = ent_flush(tx);
        if (st == FSA_OK)
            st = B(tx)->touch_children(tx, op->id);
    }
    return st;
}

/*
 * Tries one (non-duplicate) op inside the transaction. On FSA_OK r holds its outcome (applied,
 * conflict or rejected) and, if applied, the entity is written. Other statuses are database or
 * memory failures that abort the batch.
 */
static fsa_status_t try_op(fsa__store_tx_t *tx, const char *device, bool by_server,
                           const fsa_store_scope_t *scope, const fsa_codec_op_t *cop,
                           int64_t now_ms, fsa_codec_result_t *r)
{
    const fsa_op_t *op = &cop->op;
    if (cop->reject.code[0] != '\0') {
        r->status = FSA_RESULT_REJECTED;
        set_result_err(r, cop->reject.code, cop->reject.message);
        return FSA_OK;
    }
    const char *type = fsa_type_name(op->type);
    int64_t version = 0;
    char *fields = NULL;
    char *next = NULL;
    fsa_model_err_t merr;
    memset(&merr, 0, sizeof merr);
    char owner[FSA_ID_BYTES] = "";
    fsa_status_t st = ent_load(tx, type, op->id, &version, &fields, owner, NULL);
    bool in = true;
    if (st == FSA_OK && fields != NULL && !by_server)
        st = in_scope(tx, scope, device, op->type, owner, fields, &in);
    if (st != FSA_OK) {
        fsa_free(fields);
        return st;
    }
    if (!in) {
        /* PROTOCOL.md section 3: outside the device's scope (its own creates aside, which never
         * reach here: they find no entity). Says nothing about the entity. */
        fsa_free(fields);
        r->status = FSA_RESULT_REJECTED;
        set_result_err(r, "forbidden", "the entity is outside this device's scope");
        return FSA_OK;
    }
    fsa_status_t ast = fsa_model_entity_apply(ent_model(tx, op), op, fields, version,
                                              by_server ? FSA_APPLY_BY_SERVER : 0u, &next, &merr);
    switch (ast) {
    case FSA_OK: {
        int64_t nv = fields != NULL ? version + 1 : 1;
        bool no_parent = false;
        st = write_with_keys(tx, op, fields, nv, &next, now_ms, by_server ? NULL : device,
                             &no_parent);
        if (st == FSA_OK && no_parent) { /* nothing was written */
            r->status = FSA_RESULT_REJECTED;
            set_result_err(r, "not_found", "the jobneed's parent_id names no jobneed");
        } else if (st == FSA_OK) {
            r->status = FSA_RESULT_APPLIED;
            r->version = nv;
        }
        break;
    }
    case FSA_ECONFLICT:
        r->status = FSA_RESULT_CONFLICT;
        set_result_err(r, "conflict",
                       merr.message[0] != '\0' ? merr.message : "the op's precondition failed");
        if (fields != NULL) {
            st = result_current(tx, r, fields, version);
            fields = NULL;
        }
        break;
    case FSA_ENOMEM: st = FSA_ENOMEM; break;
    default:
        /* FSA_ENOTFOUND, FSA_EINVAL, FSA_ETRANSITION: the model named the rejection. */
        r->status = FSA_RESULT_REJECTED;
        set_result_err(r, merr.code[0] != '\0' ? merr.code : "invalid_value",
                       merr.message[0] != '\0' ? merr.message : fsa_status_str(ast));
        break;
    }
    fsa_model_free(next);
    fsa_free(fields); /* the backend's copy, not the model's */
    return st;
}

static fsa_status_t apply_single(fsa__store_tx_t *tx, const char *device, bool by_server,
                                 const fsa_store_scope_t *scope, const fsa_codec_op_t *cop,
                                 int64_t now_ms, fsa_codec_result_t *r)
{
    fsa__store_logged_t lg;
    fsa_status_t st = B(tx)->claim_op(tx, device, &cop->op, now_ms, &lg);
    if (st != FSA_OK)
        return st;
    if (lg.found)
        return duplicate_result(tx, by_server, scope, device, &lg, r);
    st = try_op(tx, device, by_server, scope, cop, now_ms, r);
    if (st == FSA_OK)
        st = B(tx)->log_op(tx, device, &cop->op, r, now_ms);
    return st;
}

/*
 * Applies the group of ops[first] (every later op with the same group) all-or-nothing, marking
 * them done. Each op is logged as it is tried, inside the savepoint; when one is not applied the
 * savepoint is rolled back (entities and those log rows) and every op of the group is looked up in
 * the op log again: one logged before the group (an earlier batch, or earlier in this batch
 * outside the group) is answered as a duplicate of that outcome and not logged again, every other
 * one is logged with the group's outcome. The ops after the failing one were never claimed, so
 * only this look-up tells whether they were logged before.
 */
static fsa_status_t apply_group(fsa__store_tx_t *tx, const char *device, bool by_server,
                                const fsa_store_scope_t *scope, const fsa_codec_op_t *ops, size_t n,
                                size_t first, int64_t now_ms, fsa_codec_result_t *results,
                                bool *done)
{
    const char *group = ops[first].op.group;
    fsa_status_t st = group_savepoint(tx, FSA__SP_BEGIN);
    if (st != FSA_OK)
        return st;
    size_t failed = n; /* index of the op that was not applied, n when none */
    for (size_t i = first; i < n && st == FSA_OK; i++) {
        if (done[i] || strcmp(ops[i].op.group, group) != 0)
            continue;
        done[i] = true;
        if (failed < n)
            continue; /* the group failed: later ops only get the group's outcome */
        fsa__store_logged_t lg;
        st = B(tx)->claim_op(tx, device, &ops[i].op, now_ms, &lg);
        if (st != FSA_OK)
            break;
        if (lg.found) {
            st = duplicate_result(tx, by_server, scope, device, &lg, &results[i]);
            continue;
        }
        st = try_op(tx, device, by_server, scope, &ops[i], now_ms, &results[i]);
        if (st == FSA_OK)
            st = B(tx)->log_op(tx, device, &ops[i].op, &results[i], now_ms);
        if (st == FSA_OK && results[i].status != FSA_RESULT_APPLIED)
            failed = i;
    }
    if (st != FSA_OK || failed == n) {
        if (st == FSA_OK)
            st = group_savepoint(tx, FSA__SP_RELEASE);
        return st; /* on failure the caller rolls the whole batch back */
    }

    st = B(tx)->savepoint(tx, FSA__SP_ROLLBACK);
    if (st != FSA_OK)
        return st;
    fsa_result_status_t status = results[failed].status;
    char code[FSA_CODEC_CODE_BYTES];
    char msg[FSA_CODEC_MESSAGE_BYTES];
    snprintf(code, sizeof code, "%s", results[failed].code);
    snprintf(msg, sizeof msg, "group %.48s not applied: op %.36s: %.120s", group,
             ops[failed].op.op_id, results[failed].message);
    /* An op logged before this group is a duplicate of that outcome (PROTOCOL.md section 3),
     * whether the group's loop found it or skipped it after the failing op: logging it again
     * would be refused (PostgreSQL's insert replaces only a claim: FSA_EBUSY, the batch retried
     * until it answers 503) or dropped (SQLite) while the answer said the group's outcome. A
     * duplicate of an op of this very group (an op_id repeated in the batch) was rolled back with
     * it and takes the group's outcome. Decided for all before anything is logged again. The
     * loop's duplicates are answered again too: a conflict's current was read inside the
     * savepoint, with what the group's earlier ops wrote and the rollback undid. */
    bool *retake = fsa_calloc(n - first, sizeof *retake);
    if (retake == NULL)
        return FSA_ENOMEM;
    for (size_t i = first; i < n && st == FSA_OK; i++) {
        if (strcmp(ops[i].op.group, group) != 0)
            continue;
        fsa__store_logged_t lg;
        st = B(tx)->find_op(tx, ops[i].op.op_id, &lg);
        retake[i - first] = st == FSA_OK && !lg.found;
        if (st == FSA_OK && lg.found) {
            fsa_codec_result_t *r = &results[i];
            result_clear(tx, r);
            snprintf(r->op_id, sizeof r->op_id, "%s", ops[i].op.op_id);
            st = duplicate_result(tx, by_server, scope, device, &lg, r);
        }
    }
    for (size_t i = first; i < n && st == FSA_OK; i++) {
        fsa_codec_result_t *r = &results[i];
        if (!retake[i - first])
            continue;
        /* An op_id repeated in the group is logged once, at its first place. */
        bool repeated = false;
        for (size_t j = first; j < i && !repeated; j++)
            repeated = retake[j - first] && strcmp(ops[j].op.op_id, ops[i].op.op_id) == 0;
        result_clear(tx, r);
        snprintf(r->op_id, sizeof r->op_id, "%s", ops[i].op.op_id);
        r->status = status;
        set_result_err(r, code, msg);
        if (status == FSA_RESULT_CONFLICT && ops[i].reject.code[0] == '\0')
            st = attach_current(tx, by_server, scope, device, fsa_type_name(ops[i].op.type),
                                ops[i].op.id, r);
        if (st == FSA_OK && !repeated)
            st = B(tx)->log_op(tx, device, &ops[i].op, r, now_ms);
    }
    fsa_free(retake);
    if (st == FSA_OK)
        st = group_savepoint(tx, FSA__SP_RELEASE);
    return st;
}

/* Transactions the database gave up (FSA_EBUSY: lock timeout, serialization failure, deadlock, a
 * concurrent insert of the same key) are tried again, up to this many times in all, with a short
 * randomised pause that doubles (1, 2, 4, ... ms, at most 64 ms); then the push answers 503. */
#define APPLY_TRIES 12

static int64_t retry_pause_ns(const fsa_port_t *port, int attempt)
{
    uint32_t r = 0;
    (void)port->random(port->ctx, &r, sizeof r);
    int64_t cap_ms = (int64_t)1 << (attempt < 6 ? attempt : 6);
    /* Full jitter: anywhere in [cap/2, cap) so that two racing transactions drift apart. */
    int64_t ns = cap_ms * FSA_NS_PER_MS;
    return ns / 2 + (int64_t)(r % (uint32_t)(ns / 2 > 0 ? ns / 2 : 1));
}

/* One attempt at the whole batch in one transaction; lazy: its claims may skip the log's read
 * (fsa__store_ops_t lazy_claims), FSA_ECONFLICT then when an op of it was a duplicate. */
static fsa_status_t apply_once(fsa_store_t *store, const char *device, bool by_server,
                               const fsa_store_scope_t *scope, const fsa_codec_op_t *ops, size_t n,
                               int64_t now_ms, fsa_codec_result_t *results, bool *done,
                               struct fsa__store_cache *cache, bool lazy, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        fsa_codec_result_clear(&results[i]);
        /* Both are FSA_OP_ID_BYTES: the op's is NUL-terminated within them. */
        memcpy(results[i].op_id, ops[i].op.op_id, sizeof results[i].op_id);
        results[i].op_id[sizeof results[i].op_id - 1] = '\0';
        done[i] = false;
    }
    fsa__store_tx_t *tx = NULL;
    fsa_status_t st = store->ops->begin(store, &tx, err, errlen);
    if (st != FSA_OK)
        return st;
    cache_clear(cache);
    cache->through = false;
    tx->cache = cache;
    tx->lazy_claims = lazy && store->ops->lazy_claims;
    tx->answer_bytes = 0;
    for (size_t i = 0; i < n && st == FSA_OK; i++) {
        if (done[i])
            continue;
        if (ops[i].op.group[0] == '\0') {
            done[i] = true;
            st = apply_single(tx, device, by_server, scope, &ops[i], now_ms, &results[i]);
        } else {
            st = apply_group(tx, device, by_server, scope, ops, n, i, now_ms, results, done);
        }
    }
    if (st == FSA_OK)
        st = ent_flush(tx);
    tx->cache = NULL;
    if (st == FSA_OK)
        return store->ops->commit(tx, err, errlen);
    store->ops->abort(tx);
    if (st == FSA_ETOOLARGE)
        snprintf(err, errlen,
                 "its conflicts' current entities would make an answer of over %d KiB: "
                 "send fewer ops at a time",
                 (int)(ANSWER_CURRENT_MAX >> 10));
    else if (err[0] == '\0')
        snprintf(err, errlen, "applying the batch failed: %s", fsa_status_str(st));
    return st;
}

fsa_status_t fsa_store_apply(fsa_store_t *store, const char *device, bool by_server,
                             const fsa_codec_op_t *ops, size_t n, int64_t now_ms,
                             fsa_codec_result_t *results, char *err, size_t errlen)
{
    return fsa_store_apply_scoped(store, device, by_server, NULL, ops, n, now_ms, results, err,
                                  errlen);
}

fsa_status_t fsa_store_apply_scoped(fsa_store_t *store, const char *device, bool by_server,
                                    const fsa_store_scope_t *scope, const fsa_codec_op_t *ops,
                                    size_t n, int64_t now_ms, fsa_codec_result_t *results,
                                    char *err, size_t errlen)
{
    char dummy[8];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (store == NULL || device == NULL || (n > 0 && (ops == NULL || results == NULL))) {
        snprintf(err, errlen, "invalid arguments");
        return FSA_EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        memset(&results[i], 0, sizeof results[i]);
    bool *done = fsa_calloc(n > 0 ? n : 1, sizeof *done);
    if (done == NULL) {
        snprintf(err, errlen, "out of memory");
        return FSA_ENOMEM;
    }
    struct fsa__store_cache cache;
    memset(&cache, 0, sizeof cache);
    cache.prev = warm_take(store);
    fsa_status_t st = FSA_EBUSY;
    bool lazy = true;
    for (int attempt = 0; attempt < APPLY_TRIES && st == FSA_EBUSY; attempt++) {
        if (attempt > 0)
            store->port->sleep(store->port->ctx, retry_pause_ns(store->port, attempt));
        err[0] = '\0';
        st = apply_once(store, device, by_server, scope, ops, n, now_ms, results, done, &cache,
                        lazy, err, errlen);
        if (st == FSA_ECONFLICT && lazy) {
            /* An op claimed without reading the log was logged already (a batch sent again):
             * rolled back; the batch again at once, every claim reading the log. */
            lazy = false;
            err[0] = '\0';
            st = apply_once(store, device, by_server, scope, ops, n, now_ms, results, done, &cache,
                            false, err, errlen);
        }
    }
    if (st == FSA_OK) {
        warm_give(store, &cache);
    } else {
        cache_drop(cache.prev);
        cache.prev = NULL;
    }
    cache_free(&cache);
    fsa_free(done);
    if (st != FSA_OK) {
        for (size_t i = 0; i < n; i++)
            fsa_codec_result_clear(&results[i]);
    }
    return st;
}

#ifdef FSA_FAULT_HOOKS
static void (*_Atomic pull_gap_fn)(void *);
static void *pull_gap_arg;

void fsa__store_pull_gap_hook(void (*fn)(void *), void *arg)
{
    pull_gap_arg = arg;
    atomic_store(&pull_gap_fn, fn);
}

void fsa__store_pull_gap(void)
{
    void (*fn)(void *) = atomic_exchange(&pull_gap_fn, NULL);
    if (fn != NULL)
        fn(pull_gap_arg);
}
#endif
