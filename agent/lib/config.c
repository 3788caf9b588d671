/* libfieldsync: the configuration kept in the journal, the device secret, the named policies, and
 * building a sync engine from a handle's configuration (moved here from agent/config.c). */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/lib/internal.h"
#include "port/alloc.h"
#include "port/files.h"
#include "sync/backoff.h"
#include "sync/resolver.h"
#include "sync/transport.h"

fsa_status_t fsl__config_store(fsa_journal_t *j, const fsl_config_t *c, char *err, size_t errlen)
{
    /* All members in one transaction: a device never starts with half a configuration. Absent
     * strings are stored as "" so that a new init clears what an older one set. */
    const fsa_device_config_t dc = {
        .device_id = c->device_id,
        .server = c->server_url,
        .secret_file = c->secret_file,
        .ca_file = c->ca_file,
        .pins = c->pins,
        .client_cert = c->client_cert,
        .client_key = c->client_key,
        .proxy = c->proxy,
        .retry_policy = c->retry_policy,
        .resolver_policy = c->resolver_policy,
        .allow_http = c->allow_http,
        .durability = (int64_t)c->durability,
        .sync_interval_ms = c->sync_interval_ms,
        .stall_after_ms = c->stall_after_ms,
        .budget_bytes = c->budget_bytes,
    };
    fsa_status_t st = fsa_journal_config_store(j, &dc);
    if (st != FSA_OK)
        snprintf(err, errlen, "cannot store the configuration in %s: %s", fsa_journal_path(j),
                 fsa_status_str(st));
    return st;
}

/* Takes a stored string into *dst unless the caller gave one. */
static void take_str(char **dst, char **stored)
{
    if (*dst == NULL) {
        *dst = *stored;
        *stored = NULL;
    }
}

/* Takes a stored number into *dst unless the caller gave one (not 0). */
static void take_int(int64_t *dst, int64_t stored)
{
    if (*dst == 0)
        *dst = stored;
}

fsa_status_t fsl__config_load(fsa_journal_t *j, fsl_config_t *c, char *err, size_t errlen)
{
    fsa_device_config_t dc;
    fsa_status_t st = fsa_journal_config_load(j, &dc);
    if (st != FSA_OK) {
        snprintf(err, errlen, "cannot read the configuration in %s: %s", fsa_journal_path(j),
                 fsa_status_str(st));
        return st;
    }
    take_str(&c->server_url, &dc.server);
    take_str(&c->secret_file, &dc.secret_file);
    take_str(&c->ca_file, &dc.ca_file);
    take_str(&c->pins, &dc.pins);
    take_str(&c->client_cert, &dc.client_cert);
    take_str(&c->client_key, &dc.client_key);
    take_str(&c->proxy, &dc.proxy);
    take_str(&c->retry_policy, &dc.retry_policy);
    take_str(&c->resolver_policy, &dc.resolver_policy);
    int64_t durability = (int64_t)c->durability;
    take_int(&durability, dc.durability);
    take_int(&c->sync_interval_ms, dc.sync_interval_ms);
    take_int(&c->stall_after_ms, dc.stall_after_ms);
    take_int(&c->budget_bytes, dc.budget_bytes);
    c->allow_http = c->allow_http || dc.allow_http;
    c->durability = durability == 1 ? FIELDSYNC_DURABLE_NORMAL : FIELDSYNC_DURABLE_FULL;
    fsa_device_config_clear(&dc);
    return FSA_OK;
}

/* The string members of fsl_config_t, by their offsets. */
static const size_t config_strings[] = {
    offsetof(fsl_config_t, journal_path), offsetof(fsl_config_t, device_id),
    offsetof(fsl_config_t, server_url),   offsetof(fsl_config_t, secret_file),
    offsetof(fsl_config_t, ca_file),      offsetof(fsl_config_t, pins),
    offsetof(fsl_config_t, client_cert),  offsetof(fsl_config_t, client_key),
    offsetof(fsl_config_t, proxy),        offsetof(fsl_config_t, label),
    offsetof(fsl_config_t, retry_policy), offsetof(fsl_config_t, resolver_policy)};

#define N_CONFIG_STRINGS (sizeof config_strings / sizeof config_strings[0])

static char **config_string(fsl_config_t *c, size_t i)
{
    return (char **)((char *)c + config_strings[i]);
}

void fsl__config_clear(fsl_config_t *c)
{
    for (size_t i = 0; i < N_CONFIG_STRINGS; i++) {
        char **member = config_string(c, i);
        fsa_free(*member);
        *member = NULL;
    }
    memset(c, 0, sizeof *c);
}

fsa_status_t fsl__config_dup(const fsl_config_t *src, fsl_config_t *dst)
{
    *dst = *src;
    for (size_t i = 0; i < N_CONFIG_STRINGS; i++)
        *config_string(dst, i) = NULL;
    for (size_t i = 0; i < N_CONFIG_STRINGS; i++) {
        const char *s = *(const char *const *)((const char *)src + config_strings[i]);
        if (s != NULL && (*config_string(dst, i) = fsa_strdup(s)) == NULL) {
            fsl__config_clear(dst);
            return FSA_ENOMEM;
        }
    }
    return FSA_OK;
}

/* Replaces *dst by a copy of src (NULL: none). */
static fsa_status_t replace_str(char **dst, const char *src)
{
    fsa_free(*dst);
    *dst = NULL;
    if (src == NULL)
        return FSA_OK;
    *dst = fsa_strdup(src);
    return *dst != NULL ? FSA_OK : FSA_ENOMEM;
}

fsa_status_t fsl__config_reread(fieldsync_t *fs, fsl_config_t *c, char *err, size_t errlen)
{
    const fsl_config_t *own = &fs->cfg;
    /* The open's overrides first: fsl__config_load fills only what they leave unset, as at
     * open. The journal's path, the device (the journal's owner, checked at open), the label
     * and the flags are the handle's own, whatever was given. */
    fsa_status_t st = fsl__config_dup(&fs->given, c);
    if (st == FSA_OK)
        st = replace_str(&c->journal_path, own->journal_path);
    if (st == FSA_OK)
        st = replace_str(&c->device_id, own->device_id);
    if (st == FSA_OK)
        st = replace_str(&c->label, own->label);
    if (st != FSA_OK)
        snprintf(err, errlen, "out of memory reading the configuration");
    c->flags = own->flags;
    if (st == FSA_OK)
        st = fsl__config_load(fs->j, c, err, errlen);
    if (st == FSA_OK) {
        /* The journal was opened with these: they are its options until the handle closes. */
        c->durability = own->durability;
        c->budget_bytes = own->budget_bytes;
        st = fsl__config_check(&fs->port, c, 0, err, errlen);
    }
    if (st != FSA_OK)
        fsl__config_clear(c);
    return st;
}

/* ---- the device secret ---- */

fsa_status_t fsl__parse_secret(const char *text, size_t len, fsa_signer_key_t *key)
{
    if (text == NULL)
        return fsa_signer_key_parse(NULL, 0, key);
    while (len > 0 && text[len - 1] != '\0' && strchr(" \t\n\v\f\r", text[len - 1]) != NULL)
        len--; /* isspace's set, in the C locale */
    return fsa_signer_key_parse(text, len, key);
}

fsa_status_t fsl__read_secret(const char *path, fsa_signer_key_t *key, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    fsa_status_t st = fsa_file_read(path, 4096, 1, &text, &len, err, errlen);
    if (st != FSA_OK) {
        fsa_signer_key_wipe(key);
        return st;
    }
    st = fsl__parse_secret(text, len, key);
    if (st != FSA_OK)
        snprintf(err, errlen, "secret file %s must hold exactly 64 hex characters", path);
    fsa_file_wipe_free(text, len);
    return st;
}

/* ---- the resolver policy ---- */

/*
 * Parsed policies are interned for the life of the process: the engine keeps a pointer to its
 * policy, and a handle's engines come and go (reload, sync_once) while its configuration stays.
 * A process uses one or two distinct policy strings, so the table is small and never shrinks.
 * It takes no lock: a slot is filled once, by compare-and-swap, and never emptied, so a reader
 * sees NULL or a whole entry. (A spin lock held over the parse could starve its holder for good
 * on a one-core device, under an app thread of a real-time priority spinning for it.)
 */
#define POLICY_CACHE_MAX 32
#define POLICY_RULES_MAX 32

typedef struct policy_entry {
    char *spec;
    fsa_policy_rule_t rules[POLICY_RULES_MAX];
    char fields[POLICY_RULES_MAX][FSA_FIELD_NAME_BYTES];
    fsa_resolver_policy_t policy;
} policy_entry_t;

static _Atomic(policy_entry_t *) policy_cache[POLICY_CACHE_MAX];

/* The interned entry of spec, or NULL; *free_slot: the first empty slot seen (POLICY_CACHE_MAX
 * when none). */
static policy_entry_t *policy_find(const char *spec, size_t *free_slot)
{
    *free_slot = POLICY_CACHE_MAX;
    for (size_t i = 0; i < POLICY_CACHE_MAX; i++) {
        policy_entry_t *p = atomic_load_explicit(&policy_cache[i], memory_order_acquire);
        if (p == NULL) {
            *free_slot = i;
            return NULL; /* slots fill in order: none after an empty one */
        }
        if (strcmp(p->spec, spec) == 0)
            return p;
    }
    return NULL;
}

static void policy_entry_free(policy_entry_t *e)
{
    if (e != NULL)
        fsa_free(e->spec);
    fsa_free(e);
}

static fsa_status_t policy_parse(const char *spec, policy_entry_t *e, char *err, size_t errlen)
{
    const char *p = spec;
    size_t n = 0;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (n == POLICY_RULES_MAX) {
            snprintf(err, errlen, "resolver policy: more than %d rules", POLICY_RULES_MAX);
            return FSA_EINVAL;
        }
        if (eq == NULL) {
            snprintf(err, errlen, "resolver policy: '%.*s' is not TYPE[.FIELD]=ACTION",
                     (int)(len > 60 ? 60 : len), p);
            return FSA_EINVAL;
        }
        char type[16] = "", field[FSA_FIELD_NAME_BYTES] = "", action[16] = "";
        const char *dot = memchr(p, '.', (size_t)(eq - p));
        size_t tlen = (size_t)((dot != NULL ? dot : eq) - p);
        size_t flen = dot != NULL ? (size_t)(eq - dot - 1) : 0;
        size_t alen = len - (size_t)(eq - p) - 1;
        if (tlen == 0 || tlen >= sizeof type ||
            (dot != NULL && (flen == 0 || flen >= sizeof field)) || alen == 0 ||
            alen >= sizeof action) {
            snprintf(err, errlen, "resolver policy: '%.*s' is not TYPE[.FIELD]=ACTION",
                     (int)(len > 60 ? 60 : len), p);
            return FSA_EINVAL;
        }
        memcpy(type, p, tlen);
        if (dot != NULL)
            memcpy(field, dot + 1, flen);
        memcpy(action, eq + 1, alen);
        fsa_policy_rule_t *r = &e->rules[n];
        if (!fsl__type_parse(type, &r->type)) {
            snprintf(err, errlen,
                     "resolver policy: unknown type '%s' (attendance, jobneed, ticket)", type);
            return FSA_EINVAL;
        }
        if (dot != NULL && fsa_model_field(r->type, field) == NULL) {
            snprintf(err, errlen, "resolver policy: %s has no field '%s'", fsa_type_name(r->type),
                     field);
            return FSA_EINVAL;
        }
        if (strcmp(action, "server-wins") == 0)
            r->action = FSA_POLICY_SERVER_WINS;
        else if (strcmp(action, "local-wins") == 0)
            r->action = FSA_POLICY_LOCAL_WINS;
        else if (strcmp(action, "park") == 0)
            r->action = FSA_POLICY_PARK;
        else {
            snprintf(err, errlen,
                     "resolver policy: unknown action '%s' (server-wins, local-wins, park)",
                     action);
            return FSA_EINVAL;
        }
        if (dot != NULL) {
            memcpy(e->fields[n], field, flen + 1);
            r->field = e->fields[n];
        } else {
            r->field = NULL;
        }
        n++;
        p = end != NULL ? end + 1 : p + len;
        if (end != NULL && *p == '\0') {
            snprintf(err, errlen, "resolver policy: ends with ','");
            return FSA_EINVAL;
        }
    }
    e->policy.rules = e->rules;
    e->policy.n = n;
    return FSA_OK;
}

fsa_status_t fsl__resolver_policy(const char *spec, const fsa_resolver_policy_t **out, char *err,
                                  size_t errlen)
{
    *out = NULL;
    if (spec == NULL || spec[0] == '\0')
        return FSA_OK;
    size_t slot;
    policy_entry_t *found = policy_find(spec, &slot);
    if (found != NULL) {
        *out = &found->policy;
        return FSA_OK;
    }
    policy_entry_t *e = fsa_calloc(1, sizeof *e);
    if (e == NULL || (e->spec = fsa_strdup(spec)) == NULL) {
        policy_entry_free(e);
        snprintf(err, errlen, "resolver policy: out of memory");
        return FSA_ENOMEM;
    }
    fsa_status_t st = policy_parse(spec, e, err, errlen);
    /* Into the first empty slot; another thread may fill it first, with this very spec too. */
    while (st == FSA_OK) {
        if (slot == POLICY_CACHE_MAX) {
            snprintf(err, errlen, "resolver policy: more than %d distinct policies in one process",
                     POLICY_CACHE_MAX);
            st = FSA_EINVAL;
            break;
        }
        policy_entry_t *expected = NULL;
        if (atomic_compare_exchange_strong_explicit(&policy_cache[slot], &expected, e,
                                                    memory_order_acq_rel, memory_order_acquire)) {
            *out = &e->policy;
            return FSA_OK;
        }
        found = policy_find(spec, &slot);
        if (found != NULL) {
            *out = &found->policy;
            break;
        }
    }
    policy_entry_free(e);
    return st;
}

/* ---- checks and the engine ---- */

static fsa_transport_opts_t transport_opts(const fsl_config_t *c)
{
    fsa_transport_opts_t t;
    memset(&t, 0, sizeof t);
    t.base_url = c->server_url;
    t.ca_file = c->ca_file;
    t.pins = c->pins;
    t.client_cert = c->client_cert;
    t.client_key = c->client_key;
    t.proxy = c->proxy;
    t.allow_insecure_http = c->allow_http;
    return t;
}

fsa_status_t fsl__config_check(const fsa_port_t *port, const fsl_config_t *c, unsigned files,
                               char *err, size_t errlen)
{
    if (c->device_id != NULL && !fsa_model_id_valid(c->device_id)) {
        snprintf(err, errlen, "invalid device id '%.40s': 1-128 characters of A-Z a-z 0-9 . _ : -",
                 c->device_id);
        return FSA_EINVAL;
    }
    fsa_retry_kind_t rk;
    if (c->retry_policy != NULL && fsa_retry_policy_parse(c->retry_policy, &rk) != FSA_OK) {
        snprintf(err, errlen,
                 "unknown retry policy '%.40s' (DEFAULT, AGGRESSIVE, CONSERVATIVE, "
                 "LOCK_ACQUISITION)",
                 c->retry_policy);
        return FSA_EINVAL;
    }
    const fsa_resolver_policy_t *rp = NULL;
    fsa_status_t st = fsl__resolver_policy(c->resolver_policy, &rp, err, errlen);
    if (st != FSA_OK)
        return st;
    if ((files & FSL_CHECK_TRANSPORT) != 0 && c->server_url != NULL) {
        /* The URL, pins, proxy and client certificate now, so a typo fails at init rather than
         * at the first sync. */
        fsa_transport_opts_t to = transport_opts(c);
        fsa_transport_t *t = NULL;
        st = fsa_transport_new(port, &to, &t, err, errlen);
        fsa_transport_free(t);
        if (st != FSA_OK)
            return st;
    }
    if ((files & FSL_CHECK_SECRET) != 0 && c->secret_file != NULL) {
        fsa_signer_key_t key;
        memset(&key, 0, sizeof key);
        st = fsl__read_secret(c->secret_file, &key, err, errlen);
        fsa_signer_key_wipe(&key);
    }
    return st;
}

static void engine_tick(void *arg)
{
    fsl__events_pump(arg);
}

fsa_status_t fsl__engine_new(fieldsync_t *fs, bool ignore_backoff, fsa_engine_t **out, char *err,
                             size_t errlen)
{
    *out = NULL;
    const fsl_config_t *c = &fs->cfg;
    if (c->device_id == NULL || c->server_url == NULL || c->secret_file == NULL) {
        snprintf(err, errlen, "journal %s is not set up for sync: run 'fieldsync init' first",
                 fsa_journal_path(fs->j));
        return FSA_ENOTFOUND;
    }
    fsa_engine_opts_t o;
    memset(&o, 0, sizeof o);
    fsa_retry_kind_t rk = FSA_RETRY_DEFAULT;
    if (c->retry_policy != NULL && fsa_retry_policy_parse(c->retry_policy, &rk) != FSA_OK) {
        snprintf(err, errlen, "unknown retry policy '%.40s'", c->retry_policy);
        return FSA_EINVAL;
    }
    o.retry = fsa_retry_policy(rk);
    fsa_status_t st = fsl__resolver_policy(c->resolver_policy, &o.resolver, err, errlen);
    if (st != FSA_OK)
        return st;
    fsa_signer_key_t key;
    memset(&key, 0, sizeof key);
    /* The client key too is read again at each engine, by its transport, as the secret: a key
     * made readable since init is refused. */
    st = fsl__read_secret(c->secret_file, &key, err, errlen);
    if (st == FSA_OK) {
        o.device_id = c->device_id;
        o.key = &key;
        o.transport = transport_opts(c);
        /* While a request or a retry waits, the listeners hear of the changes made meanwhile
         * (fieldsync.h: within a second), on the thread that waits. */
        o.transport.tick = engine_tick;
        o.transport.tick_arg = fs;
        o.ignore_backoff = ignore_backoff;
        st = fsa_engine_new(&fs->port, fs->j, &o, out, err, errlen);
    }
    fsa_signer_key_wipe(&key);
    return st;
}
