/* fieldsync-sim: pure invariant checkers on the server's JSON (no I/O; unit-tested). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "agent/sim/fleet.h"
#include "port/alloc.h"

/*
 * The checkers read entity fields as the admin API returns them. They parse JSON with cJSON
 * directly: the codec decodes protocol shapes, not the insides of a ticket's history or a job's
 * other_info, and these checks must look at every entry. (An exception to "only the codec touches
 * cJSON", which STYLE.md states for sync/; this is a tool beside the agent.)
 */

const char *fsa__inv_status_name(fsa__inv_status_t s)
{
    switch (s) {
    case FSA__INV_PASS: return "pass";
    case FSA__INV_FAIL: return "fail";
    case FSA__INV_NOT_CHECKED: return "not checked";
    }
    return "?";
}

static cJSON *parse_obj(const char *text, char *details, size_t cap)
{
    cJSON *root = text != NULL ? cJSON_Parse(text) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        snprintf(details, cap, "the server's fields are not a JSON object");
        return NULL;
    }
    return root;
}

static bool get_int(const cJSON *v, int64_t *out)
{
    if (!cJSON_IsNumber(v))
        return false;
    double d = v->valuedouble;
    if (!(d >= -9.0e15 && d <= 9.0e15) || floor(d) != d)
        return false;
    *out = (int64_t)d;
    return true;
}

bool fsa__check_int_field(const char *fields_json, const char *field, int64_t expected,
                          char *details, size_t cap)
{
    cJSON *root = parse_obj(fields_json, details, cap);
    if (root == NULL)
        return false;
    int64_t v = 0;
    bool ok = get_int(cJSON_GetObjectItemCaseSensitive(root, field), &v);
    if (!ok)
        snprintf(details, cap, "%s is missing or not an integer", field);
    else if (v != expected)
        snprintf(details, cap, "%s is %" PRId64 ", expected %" PRId64, field, v, expected);
    else
        snprintf(details, cap, "%s is %" PRId64, field, v);
    cJSON_Delete(root);
    return ok && v == expected;
}

bool fsa__check_str_field(const char *fields_json, const char *field, const char *expected,
                          char *details, size_t cap)
{
    cJSON *root = parse_obj(fields_json, details, cap);
    if (root == NULL)
        return false;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, field);
    bool ok = cJSON_IsString(v) && strcmp(v->valuestring, expected) == 0;
    if (!cJSON_IsString(v))
        snprintf(details, cap, "%s is missing or not a string", field);
    else if (!ok)
        snprintf(details, cap, "%s is %.60s, expected %.60s", field, v->valuestring, expected);
    else
        snprintf(details, cap, "%s is %.60s", field, expected);
    cJSON_Delete(root);
    return ok;
}

/* An expected entry and how often it was seen. */
typedef struct want {
    const char *dev;
    int64_t n;
    int seen;
} want_t;

static int want_cmp(const void *a, const void *b)
{
    const want_t *x = a, *y = b;
    int c = strcmp(x->dev, y->dev);
    if (c != 0)
        return c;
    return (x->n > y->n) - (x->n < y->n);
}

static want_t *want_find(want_t *w, size_t count, const char *dev, int64_t n)
{
    want_t key = {dev, n, 0};
    return bsearch(&key, w, count, sizeof *w, want_cmp);
}

static want_t *wants_new(const char *const *devs, const int64_t *ns, size_t count)
{
    want_t *w = fsa_calloc(count + 1, sizeof *w);
    if (w == NULL)
        return NULL;
    for (size_t i = 0; i < count; i++)
        w[i] = (want_t){devs[i], ns[i], 0};
    qsort(w, count, sizeof *w, want_cmp);
    return w;
}

/* Appends "; what" to details once per kind of problem, with the first example. */
typedef struct problems {
    size_t missing, doubled, unexpected, malformed;
    char first_missing[96], first_doubled[96], first_unexpected[96];
} problems_t;

static bool wants_verdict(want_t *w, size_t count, problems_t *p, const char *what, size_t seen,
                          char *details, size_t cap)
{
    for (size_t i = 0; i < count; i++) {
        /* Duplicated expectations (the same pair twice) are expected as often as listed. */
        size_t same = 1;
        while (i + same < count && want_cmp(&w[i], &w[i + same]) == 0)
            same++;
        int seen_n = 0;
        for (size_t k = 0; k < same; k++)
            seen_n += w[i + k].seen;
        if ((size_t)seen_n < same) {
            if (p->missing++ == 0)
                snprintf(p->first_missing, sizeof p->first_missing, "%.40s/%" PRId64, w[i].dev,
                         w[i].n);
        } else if ((size_t)seen_n > same) {
            if (p->doubled++ == 0)
                snprintf(p->first_doubled, sizeof p->first_doubled, "%.40s/%" PRId64, w[i].dev,
                         w[i].n);
        }
        i += same - 1;
    }
    bool ok = p->missing == 0 && p->doubled == 0 && p->unexpected == 0 && p->malformed == 0;
    if (ok)
        snprintf(details, cap, "all %zu %s present once", count, what);
    else
        snprintf(details, cap,
                 "%zu %s seen, %zu expected: %zu missing%s%s%s, %zu doubled%s%s%s, %zu unexpected"
                 "%s%s%s, %zu malformed",
                 seen, what, count, p->missing, p->missing ? " (e.g. " : "", p->first_missing,
                 p->missing ? ")" : "", p->doubled, p->doubled ? " (e.g. " : "", p->first_doubled,
                 p->doubled ? ")" : "", p->unexpected, p->unexpected ? " (e.g. " : "",
                 p->first_unexpected, p->unexpected ? ")" : "", p->malformed);
    return ok;
}

/* Reads {"dev": str, "n": int} from an entry. */
/* An entry's identity: members dev and n, or a note "DEV#N" (an escalation's history entry as
 * libfieldsync writes it). dev points into e, or into note_dev for a note. */
static bool entry_ident(const cJSON *e, const char **dev, int64_t *n, char *note_dev, size_t cap)
{
    if (!cJSON_IsObject(e))
        return false;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "dev");
    if (cJSON_IsString(d)) {
        *dev = d->valuestring;
        return get_int(cJSON_GetObjectItemCaseSensitive(e, "n"), n);
    }
    const cJSON *note = cJSON_GetObjectItemCaseSensitive(e, "note");
    const char *hash = cJSON_IsString(note) ? strrchr(note->valuestring, '#') : NULL;
    if (hash == NULL || hash == note->valuestring || (size_t)(hash - note->valuestring) >= cap)
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(hash + 1, &end, 10);
    if (errno != 0 || end == hash + 1 || *end != '\0')
        return false;
    memcpy(note_dev, note->valuestring, (size_t)(hash - note->valuestring));
    note_dev[hash - note->valuestring] = '\0';
    *dev = note_dev;
    *n = (int64_t)v;
    return true;
}

static void seen_one(want_t *w, size_t count, problems_t *p, const cJSON *e)
{
    const char *dev = NULL;
    int64_t n = 0;
    char note_dev[FSA_ID_BYTES];
    if (!entry_ident(e, &dev, &n, note_dev, sizeof note_dev)) {
        p->malformed++;
        return;
    }
    want_t *hit = want_find(w, count, dev, n);
    if (hit == NULL) {
        if (p->unexpected++ == 0)
            snprintf(p->first_unexpected, sizeof p->first_unexpected, "%.40s/%" PRId64, dev, n);
        return;
    }
    /* Count on the first of equal expectations; the verdict sums over them. */
    while (hit > w && want_cmp(hit - 1, hit) == 0)
        hit--;
    hit->seen++;
}

bool fsa__check_log(const char *fields_json, const char *field, const char *key,
                    const char *const *devs, const int64_t *ns, size_t count, char *details,
                    size_t cap)
{
    cJSON *root = parse_obj(fields_json, details, cap);
    if (root == NULL)
        return false;
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, field);
    const cJSON *arr = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!cJSON_IsArray(arr)) {
        snprintf(details, cap, "%s.%s is missing or not an array", field, key);
        cJSON_Delete(root);
        return false;
    }
    want_t *w = wants_new(devs, ns, count);
    if (w == NULL) {
        cJSON_Delete(root);
        snprintf(details, cap, "out of memory");
        return false;
    }
    problems_t p;
    memset(&p, 0, sizeof p);
    size_t seen = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        seen++;
        seen_one(w, count, &p, e);
    }
    bool ok = wants_verdict(w, count, &p, "entries", seen, details, cap);
    fsa_free(w);
    cJSON_Delete(root);
    return ok;
}

bool fsa__check_keys(const char *fields_json, const char *field, const char *prefix,
                     const char *const *devs, const int64_t *ns, size_t count, char *details,
                     size_t cap)
{
    cJSON *root = parse_obj(fields_json, details, cap);
    if (root == NULL)
        return false;
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!cJSON_IsObject(obj)) {
        snprintf(details, cap, "%s is missing or not an object", field);
        cJSON_Delete(root);
        return false;
    }
    want_t *w = wants_new(devs, ns, count);
    if (w == NULL) {
        cJSON_Delete(root);
        snprintf(details, cap, "out of memory");
        return false;
    }
    problems_t p;
    memset(&p, 0, sizeof p);
    size_t seen = 0, plen = strlen(prefix);
    const cJSON *e;
    cJSON_ArrayForEach(e, obj)
    {
        if (e->string == NULL || strncmp(e->string, prefix, plen) != 0)
            continue; /* other keys (e.g. last_checkpoint) are not this check's business */
        seen++;
        const char *dev = NULL;
        int64_t n = 0;
        char expect_key[64], note_dev[FSA_ID_BYTES];
        if (!entry_ident(e, &dev, &n, note_dev, sizeof note_dev)) {
            p.malformed++;
            continue;
        }
        /* The key must name the same n as its value: a value under the wrong key is wrong. */
        snprintf(expect_key, sizeof expect_key, "%s%" PRId64, prefix, n);
        if (strcmp(expect_key, e->string) != 0) {
            p.malformed++;
            continue;
        }
        seen_one(w, count, &p, e);
    }
    bool ok = wants_verdict(w, count, &p, "keys", seen, details, cap);
    fsa_free(w);
    cJSON_Delete(root);
    return ok;
}

bool fsa__check_member_in(const char *fields_json, const char *field, const char *key,
                          const char *const *allowed, size_t count, char *details, size_t cap)
{
    cJSON *root = parse_obj(fields_json, details, cap);
    if (root == NULL)
        return false;
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, field);
    const cJSON *v = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    const char *s = cJSON_GetStringValue(v); /* NULL unless v is a string */
    bool ok = false;
    for (size_t i = 0; s != NULL && i < count && !ok; i++)
        ok = strcmp(s, allowed[i]) == 0;
    if (s == NULL)
        snprintf(details, cap, "%s.%s is missing or not a string", field, key);
    else if (!ok)
        snprintf(details, cap, "%s.%s is %.60s, not one of the %zu expected", field, key, s, count);
    else
        snprintf(details, cap, "%s.%s is %.60s", field, key, s);
    cJSON_Delete(root);
    return ok;
}

static int64_t member(const cJSON *root, const char *obj, const char *name, bool *ok)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, obj);
    int64_t v = 0;
    if (!cJSON_IsObject(o) || !get_int(cJSON_GetObjectItemCaseSensitive(o, name), &v))
        *ok = false;
    return v;
}

fsa_status_t fsa__stats_parse(const char *text, fsa__stats_t *out)
{
    memset(out, 0, sizeof *out);
    cJSON *root = text != NULL ? cJSON_Parse(text) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return FSA_EPROTO;
    }
    bool ok = true;
    out->applied = member(root, "ops", "applied", &ok);
    out->duplicate = member(root, "ops", "duplicate", &ok);
    out->conflict = member(root, "ops", "conflict", &ok);
    out->rejected = member(root, "ops", "rejected", &ok);
    out->push = member(root, "requests", "push", &ok);
    out->pull = member(root, "requests", "pull", &ok);
    out->clock_skew = member(root, "auth_failures", "clock_skew", &ok);
    out->replay = member(root, "auth_failures", "replay", &ok);
    out->bad_signature = member(root, "auth_failures", "bad_signature", &ok);
    out->f_5xx = member(root, "faults", "5xx", &ok);
    out->f_429 = member(root, "faults", "429", &ok);
    out->f_drop = member(root, "faults", "drop", &ok);
    out->f_reset = member(root, "faults", "reset", &ok);
    out->f_latency = member(root, "faults", "latency", &ok);
    out->entities = member(root, "store", "entities", &ok);
    cJSON_Delete(root);
    if (!ok)
        memset(out, 0, sizeof *out);
    return ok ? FSA_OK : FSA_EPROTO;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int64_t fsa__percentile(int64_t *values, size_t n, double p)
{
    if (n == 0 || values == NULL)
        return 0;
    qsort(values, n, sizeof *values, cmp_i64);
    double rank = ceil(p / 100.0 * (double)n);
    size_t k = rank < 1 ? 0 : (size_t)rank - 1;
    if (k >= n)
        k = n - 1;
    return values[k];
}

bool fsa__json_status(const char *entity_json, const char *field, char *out, size_t cap)
{
    if (cap > 0)
        out[0] = '\0';
    cJSON *root = entity_json != NULL ? cJSON_Parse(entity_json) : NULL;
    const cJSON *fields = cJSON_GetObjectItemCaseSensitive(root, "fields");
    const cJSON *v =
        cJSON_IsObject(fields) ? cJSON_GetObjectItemCaseSensitive(fields, field) : NULL;
    bool ok = v != NULL && cJSON_IsString(v) && strlen(v->valuestring) < cap;
    if (ok)
        memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    cJSON_Delete(root);
    return ok;
}

void fsa__inv_add(fsa__result_t *res, const char *name, fsa__inv_status_t st, const char *fmt, ...)
{
    /* An invariant is listed once. A failure stands: what is said of it later is dropped (a check
     * that stopped at a read that failed said "pass, 0 checked" beside the failure); and it
     * replaces a pass or a "not checked" said before. */
    fsa__inv_t *v = NULL;
    for (size_t i = 0; i < res->ninv && v == NULL; i++)
        if (strcmp(res->inv[i].name, name) == 0)
            v = &res->inv[i];
    if (v != NULL && (v->status == FSA__INV_FAIL || st != FSA__INV_FAIL)) {
        res->how = NULL;
        return;
    }
    if (v == NULL && res->ninv == FSA__INV_MAX)
        return;
    if (v == NULL)
        v = &res->inv[res->ninv++];
    snprintf(v->name, sizeof v->name, "%s", name);
    snprintf(v->how, sizeof v->how, "%s", res->how != NULL ? res->how : "devices");
    res->how = NULL; /* each server-side check says so again */
    v->status = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->details, sizeof v->details, fmt, ap);
    va_end(ap);
}
