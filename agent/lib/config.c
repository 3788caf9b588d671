/* libfieldsync: the configuration kept in the journal, the device secret, the named policies, and
 * building a sync engine from a handle's configuration (moved here from agent/config.c). */
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/lib/internal.h"
#include "port/alloc.h"
#include "port/files.h"
#include "storage/state_keys.h"
#include "sync/backoff.h"
#include "sync/resolver.h"
#include "sync/transport.h"

static const char *or_empty(const char *s)
{
    return s != NULL ? s : "";
}

fsa_status_t fsl__config_store(fsa_journal_t *j, const fsl_config_t *c, char *err, size_t errlen)
{
    /* All keys in one transaction: a device never starts with half a configuration. Optional
     * strings are stored as "" so that a new init clears what an older one set. */
    const fsa_state_item_t items[] = {
        {FSA_STATE_DEVICE_ID, or_empty(c->device_id), 0},
        {FSA_STATE_SERVER, or_empty(c->server_url), 0},
        {FSA_STATE_SECRET_FILE, or_empty(c->secret_file), 0},
        {FSA_STATE_CA_FILE, or_empty(c->ca_file), 0},
        {FSA_STATE_PINS, or_empty(c->pins), 0},
        {FSA_STATE_ALLOW_HTTP, NULL, c->allow_http ? 1 : 0},
        {FSA_STATE_CLIENT_CERT, or_empty(c->client_cert), 0},
        {FSA_STATE_CLIENT_KEY, or_empty(c->client_key), 0},
        {FSA_STATE_PROXY, or_empty(c->proxy), 0},
        {FSA_STATE_RETRY_POLICY, or_empty(c->retry_policy), 0},
        {FSA_STATE_RESOLVER_POLICY, or_empty(c->resolver_policy), 0},
        {FSA_STATE_DURABILITY, NULL, (int64_t)c->durability},
        {FSA_STATE_SYNC_INTERVAL_MS, NULL, c->sync_interval_ms},
        {FSA_STATE_STALL_AFTER_MS, NULL, c->stall_after_ms},
        {FSA_STATE_BUDGET_BYTES, NULL, c->budget_bytes},
    };
    fsa_status_t st = fsa_journal_state_set_many(j, items, sizeof items / sizeof items[0]);
    if (st != FSA_OK)
        snprintf(err, errlen, "cannot store the configuration in %s: %s", fsa_journal_path(j),
                 fsa_status_str(st));
    return st;
}

/* Reads a stored string into *dst unless the caller gave one; "" counts as absent. */
static fsa_status_t load_str(fsa_journal_t *j, const char *key, char **dst)
{
    if (*dst != NULL)
        return FSA_OK;
    char *v = NULL;
    fsa_status_t st = fsa_journal_state_get_str(j, key, &v);
    if (st != FSA_OK)
        return st;
    if (v != NULL && v[0] != '\0') {
        *dst = fsa_strdup(v);
        if (*dst == NULL)
            st = FSA_ENOMEM;
    }
    fsa_model_free(v);
    return st;
}

static fsa_status_t load_int(fsa_journal_t *j, const char *key, int64_t *dst)
{
    if (*dst != 0)
        return FSA_OK;
    return fsa_journal_state_get_int(j, key, 0, dst);
}

fsa_status_t fsl__config_load(fsa_journal_t *j, fsl_config_t *c, char *err, size_t errlen)
{
    int64_t allow = 0, durability = (int64_t)c->durability;
    fsa_status_t st = load_str(j, FSA_STATE_SERVER, &c->server_url);
    if (st == FSA_OK)
        st = load_str(j, FSA_STATE_SECRET_FILE, &c->secret_file);
    if (st == FSA_OK)
        st = load_str(j, FSA_STATE_CA_FILE, &c->ca_file);
    if (st == FSA_OK)
        st = load_str(j, FSA_STATE_PINS, &c->pins);
    if (st == FSA_OK)
        st = load_str(j, FSA_STATE_CLIENT_CERT, &c->client_cert);
    if (st == FSA_OK)
        st = load_str(j, FSA_STATE_CLIENT_KEY, &c->client_key);
    if (st == FSA_OK)
        st = load_str(j, FSA_STATE_PROXY, &c->proxy);
    if (st == FSA_OK)
        st = load_str(j, FSA_STATE_RETRY_POLICY, &c->retry_policy);
    if (st == FSA_OK)
        st = load_str(j, FSA_STATE_RESOLVER_POLICY, &c->resolver_policy);
    if (st == FSA_OK)
        st = fsa_journal_state_get_int(j, FSA_STATE_ALLOW_HTTP, 0, &allow);
    if (st == FSA_OK)
        st = load_int(j, FSA_STATE_DURABILITY, &durability);
    if (st == FSA_OK)
        st = load_int(j, FSA_STATE_SYNC_INTERVAL_MS, &c->sync_interval_ms);
    if (st == FSA_OK)
        st = load_int(j, FSA_STATE_STALL_AFTER_MS, &c->stall_after_ms);
    if (st == FSA_OK)
        st = load_int(j, FSA_STATE_BUDGET_BYTES, &c->budget_bytes);
    if (st != FSA_OK) {
        snprintf(err, errlen, "cannot read the configuration in %s: %s", fsa_journal_path(j),
                 fsa_status_str(st));
        return st;
    }
    c->allow_http = c->allow_http || allow != 0;
    c->durability = durability == 1 ? FIELDSYNC_DURABLE_NORMAL : FIELDSYNC_DURABLE_FULL;
    return FSA_OK;
}

void fsl__config_clear(fsl_config_t *c)
{
    char **strings[] = {&c->journal_path, &c->device_id, &c->server_url,   &c->secret_file,
                        &c->ca_file,      &c->pins,      &c->client_cert,  &c->client_key,
                        &c->proxy,        &c->label,     &c->retry_policy, &c->resolver_policy};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        char **member = strings[i];
        fsa_free(*member);
        *member = NULL;
    }
    memset(c, 0, sizeof *c);
}

/* ---- the device secret ---- */

fsa_status_t fsl__parse_secret(const char *text, size_t len, fsa_signer_key_t *key)
{
    if (text == NULL)
        return fsa_signer_key_parse(NULL, 0, key);
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
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
 */
#define POLICY_CACHE_MAX 32
#define POLICY_RULES_MAX 32

typedef struct policy_entry {
    char *spec;
    fsa_policy_rule_t rules[POLICY_RULES_MAX];
    char fields[POLICY_RULES_MAX][FSA_FIELD_NAME_BYTES];
    fsa_resolver_policy_t policy;
} policy_entry_t;

static policy_entry_t *policy_cache[POLICY_CACHE_MAX];
static atomic_flag policy_lock = ATOMIC_FLAG_INIT;

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
    while (atomic_flag_test_and_set_explicit(&policy_lock, memory_order_acquire))
        ;
    fsa_status_t st = FSA_OK;
    size_t i = 0;
    for (; i < POLICY_CACHE_MAX && policy_cache[i] != NULL; i++)
        if (strcmp(policy_cache[i]->spec, spec) == 0) {
            *out = &policy_cache[i]->policy;
            goto out;
        }
    policy_entry_t *e = fsa_calloc(1, sizeof *e);
    if (e == NULL || (e->spec = fsa_strdup(spec)) == NULL) {
        fsa_free(e);
        snprintf(err, errlen, "resolver policy: out of memory");
        st = FSA_ENOMEM;
        goto out;
    }
    st = policy_parse(spec, e, err, errlen);
    if (st == FSA_OK && i == POLICY_CACHE_MAX) {
        snprintf(err, errlen, "resolver policy: more than %d distinct policies in one process",
                 POLICY_CACHE_MAX);
        st = FSA_EINVAL;
    }
    if (st != FSA_OK) {
        fsa_free(e->spec);
        fsa_free(e);
        goto out;
    }
    policy_cache[i] = e;
    *out = &e->policy;
out:
    atomic_flag_clear_explicit(&policy_lock, memory_order_release);
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

fsa_status_t fsl__config_check(const fsa_port_t *port, const fsl_config_t *c, bool full, char *err,
                               size_t errlen)
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
    if (full && c->server_url != NULL) {
        /* The URL, pins, proxy and client certificate now, so a typo fails at init rather than
         * at the first sync. */
        fsa_transport_opts_t to = transport_opts(c);
        fsa_transport_t *t = NULL;
        st = fsa_transport_new(port, &to, &t, err, errlen);
        fsa_transport_free(t);
        if (st != FSA_OK)
            return st;
    }
    if (full && c->secret_file != NULL) {
        fsa_signer_key_t key;
        memset(&key, 0, sizeof key);
        st = fsl__read_secret(c->secret_file, &key, err, errlen);
        fsa_signer_key_wipe(&key);
    }
    return st;
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
    st = fsl__read_secret(c->secret_file, &key, err, errlen);
    if (st == FSA_OK) {
        o.device_id = c->device_id;
        o.key = &key;
        o.transport = transport_opts(c);
        o.ignore_backoff = ignore_backoff;
        st = fsa_engine_new(&fs->port, fs->j, &o, out, err, errlen);
    }
    fsa_signer_key_wipe(&key);
    return st;
}
