/* fieldsync-server: the pure steps of a device request (request.h): routing, authentication,
 * the body, the pull query. No I/O, no clock, no global state; server.c runs them around
 * libmicrohttpd, the store and its statistics, and the fuzz targets run them alone. */
#include "sync/server/request.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "port/alloc.h"
#include "port/limits.h"
#include "sync/gzip.h"
#include "sync/server/store.h"

static int device_find_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const fsa__server_device_t *)elem)->id);
}

const fsa__server_device_t *fsa__server_device_find(const fsa__server_device_t *devices, size_t n,
                                                    const char *id)
{
    return bsearch(id, devices, n, sizeof *devices, device_find_cmp);
}

bool fsa__server_nonce_parse(const char *hex, uint64_t *a, uint64_t *b)
{
    if (strlen(hex) != FSA_LIMIT_NONCE_HEX ||
        strspn(hex, "0123456789abcdefABCDEF") != FSA_LIMIT_NONCE_HEX)
        return false;
    char half[17];
    memcpy(half, hex, 16);
    half[16] = '\0';
    *a = strtoull(half, NULL, 16);
    memcpy(half, hex + 16, 16);
    *b = strtoull(half, NULL, 16);
    return true;
}

/* A decimal integer of at most 18 digits (so it can neither overflow nor, as a timestamp, make
 * the skew arithmetic overflow), optionally negative. */
bool fsa__server_parse_i64(const char *s, int64_t *out)
{
    if (s == NULL)
        return false;
    size_t i = (s[0] == '-') ? 1 : 0;
    size_t digits = strlen(s + i);
    if (digits == 0 || digits > 18)
        return false;
    int64_t v = 0;
    for (; s[i] != '\0'; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = s[0] == '-' ? -v : v;
    return true;
}

/* The device of X-Device-Id; NULL (*out the verdict) when there is none. */
static const fsa__server_device_t *known_device(const fsa__server_device_t *devices, size_t n,
                                                const fsa__server_auth_in_t *in,
                                                fsa__server_auth_t *out)
{
    memset(out, 0, sizeof *out);
    const fsa__server_device_t *d =
        in->device_id != NULL ? fsa__server_device_find(devices, n, in->device_id) : NULL;
    if (d == NULL) {
        out->verdict = FSA__AUTH_UNKNOWN_DEVICE;
        out->fail = (fsa__server_fail_t){401, "unknown_device", "unknown device"};
    }
    return d;
}

static void bad_signature(fsa__server_auth_t *out)
{
    out->verdict = FSA__AUTH_BAD_SIGNATURE;
    out->fail = (fsa__server_fail_t){401, "bad_signature", "the request signature does not verify"};
}

/* The last check: out->ts within FSA_LIMIT_SKEW_MS of now; the verdict into *out. */
static void check_window(const fsa__server_device_t *d, const fsa__server_auth_in_t *in,
                         fsa__server_auth_t *out)
{
    int64_t skew = in->now_ms > out->ts ? in->now_ms - out->ts : out->ts - in->now_ms;
    if (skew > FSA_LIMIT_SKEW_MS) {
        out->verdict = FSA__AUTH_CLOCK_SKEW;
        out->fail = (fsa__server_fail_t){401, "clock_skew",
                                         "X-Timestamp is more than 300 s from server_time"};
        return;
    }
    out->verdict = FSA__AUTH_OK;
    out->dev = d;
}

void fsa__server_auth_check(const fsa__server_device_t *devices, size_t n,
                            const fsa__server_auth_in_t *in, fsa__server_auth_t *out)
{
    const fsa__server_device_t *d = known_device(devices, n, in, out);
    if (d == NULL)
        return;
    if (in->timestamp == NULL || in->signature == NULL || in->nonce == NULL ||
        !fsa__server_parse_i64(in->timestamp, &out->ts) ||
        !fsa__server_nonce_parse(in->nonce, &out->nonce_a, &out->nonce_b) ||
        fsa_signer_verify(&d->key, in->method, in->uri, in->timestamp, in->nonce,
                          in->body != NULL ? in->body : "", in->len, in->signature) != FSA_OK) {
        bad_signature(out);
        return;
    }
    /* The signer is known only now: a path naming another device is refused after the signature
     * so that probing does not reveal which ids exist. */
    if (in->path_device != NULL && strcmp(in->path_device, d->id) != 0) {
        out->verdict = FSA__AUTH_NOT_SIGNER;
        out->fail =
            (fsa__server_fail_t){401, "unknown_device", "the device in the path is not the signer"};
        return;
    }
    check_window(d, in, out);
}

static bool hex_of(const char *s, size_t n)
{
    return s != NULL && strlen(s) == n && strspn(s, "0123456789abcdefABCDEF") == n;
}

void fsa__server_precheck(const fsa__server_device_t *devices, size_t n,
                          const fsa__server_auth_in_t *in, fsa__server_auth_t *out)
{
    const fsa__server_device_t *d = known_device(devices, n, in, out);
    if (d == NULL)
        return;
    if (!fsa__server_parse_i64(in->timestamp, &out->ts) || in->nonce == NULL ||
        !fsa__server_nonce_parse(in->nonce, &out->nonce_a, &out->nonce_b) ||
        !hex_of(in->signature, FSA_SIGNER_HEX_BYTES - 1)) {
        bad_signature(out);
        return;
    }
    check_window(d, in, out);
}

bool fsa__server_framing_ok(unsigned content_length, unsigned transfer_encoding)
{
    return content_length <= 1 && transfer_encoding <= 1 &&
           !(content_length > 0 && transfer_encoding > 0);
}

bool fsa__server_expects_continue(const char *expect)
{
    return expect != NULL && strcasecmp(expect, "100-continue") == 0;
}

fsa__server_body_plan_t fsa__server_body_plan(const char *content_length, const char *expect)
{
    int64_t clen = 0;
    if (content_length == NULL)
        return FSA__BODY_READ;
    /* Digits only, as libmicrohttpd takes them: leading zeros count for nothing, and a number of
     * more than 18 digits is over every bound (it was read whole, past the discard bound). */
    const char *d = content_length + strspn(content_length, "0");
    if (*d == '\0' && *content_length != '\0')
        d--; /* "0", "000": zero */
    if (content_length[strspn(content_length, "0123456789")] == '\0' && strlen(d) > 18)
        return FSA__BODY_REFUSE;
    if (!fsa__server_parse_i64(d, &clen) || clen <= FSA__SERVER_RAW_BODY_MAX)
        return FSA__BODY_READ;
    /* Only a body over FSA__SERVER_DISCARD_MAX is refused mid-way. */
    if ((uint64_t)clen > FSA__SERVER_DISCARD_MAX || fsa__server_expects_continue(expect))
        return FSA__BODY_REFUSE;
    return FSA__BODY_DROP;
}

bool fsa__server_accepts_gzip(const char *accept_encoding)
{
    const char *g = accept_encoding != NULL ? strstr(accept_encoding, "gzip") : NULL;
    if (g == NULL)
        return false;
    /* "gzip", then optional whitespace on either side of the ";" (RFC 9110), then a weight. */
    g += 4;
    g += strspn(g, " \t");
    if (*g != ';')
        return true;
    g += 1 + strspn(g + 1, " \t");
    if ((g[0] != 'q' && g[0] != 'Q') || g[1] != '=' || g[2] != '0')
        return true;
    g += 3;
    if (*g == '.')
        g += 1 + strspn(g + 1, "0");
    return *g >= '1' && *g <= '9';
}

/* The segment of s up to its next '/', into out (cap bytes): a pointer to that '/', or NULL when
 * there is none or the segment does not fit. */
static const char *admin_segment(const char *s, char *out, size_t cap)
{
    const char *slash = strchr(s, '/');
    if (slash == NULL || (size_t)(slash - s) >= cap)
        return NULL;
    memcpy(out, s, (size_t)(slash - s));
    out[slash - s] = '\0';
    return slash;
}

void fsa__server_admin_route(const char *path, fsa__server_admin_route_t *out)
{
    memset(out, 0, sizeof *out);
    const char *rest = path + strlen("/admin/v1/");
    if (strcmp(rest, "stats") == 0) {
        *out = (fsa__server_admin_route_t){.res = FSA__ADMIN_STATS, .method = "GET"};
    } else if (strcmp(rest, "entities") == 0) {
        *out = (fsa__server_admin_route_t){.res = FSA__ADMIN_SEED, .method = "POST"};
    } else if (strcmp(rest, "ops") == 0) {
        *out = (fsa__server_admin_route_t){.res = FSA__ADMIN_OPS, .method = "POST"};
    } else if (strncmp(rest, "entities/", 9) == 0) {
        char type[32];
        const char *slash = admin_segment(rest + 9, type, sizeof type);
        if (slash != NULL && fsa_type_parse(type, &out->type) == FSA_OK &&
            fsa_model_id_valid(slash + 1)) {
            out->res = FSA__ADMIN_ENTITY;
            out->method = "GET";
            snprintf(out->id, sizeof out->id, "%s", slash + 1);
        }
    } else if (strncmp(rest, "jobneeds/", 9) == 0) {
        /* An id too long for out->id is not valid either. */
        const char *slash = admin_segment(rest + 9, out->id, sizeof out->id);
        if (slash != NULL && strcmp(slash, "/autoclose") == 0 && fsa_model_id_valid(out->id)) {
            out->res = FSA__ADMIN_AUTOCLOSE;
            out->method = "POST";
        } else {
            out->id[0] = '\0';
        }
    }
}

fsa_status_t fsa__server_push_body(const char *content_encoding, const char *body, size_t len,
                                   fsa_codec_push_t *push, fsa_model_err_t *cerr,
                                   fsa__server_fail_t *fail)
{
    memset(push, 0, sizeof *push);
    *fail = (fsa__server_fail_t){0, "", ""};
    const char *text = body != NULL ? body : "";
    char *owned = NULL;
    if (content_encoding != NULL && strcasecmp(content_encoding, "identity") != 0) {
        if (strcasecmp(content_encoding, "gzip") != 0) {
            *fail = (fsa__server_fail_t){400, "malformed", "unsupported Content-Encoding"};
            return FSA_EINVAL;
        }
        fsa_status_t st = fsa_gzip_inflate(text, len, FSA_LIMIT_BODY_BYTES, &owned, &len);
        if (st == FSA_ETOOLARGE)
            *fail = (fsa__server_fail_t){413, "too_large", "the inflated body is over 1 MiB"};
        else if (st == FSA_EINVAL)
            *fail = (fsa__server_fail_t){400, "malformed", "the gzip body is corrupt"};
        else if (st != FSA_OK)
            *fail = (fsa__server_fail_t){500, "internal", "out of memory"};
        if (st != FSA_OK)
            return st == FSA_ETOOLARGE || st == FSA_EINVAL ? st : FSA_ENOMEM;
        text = owned;
    }
    fsa_status_t st = fsa_codec_decode_push(text, len, push, cerr);
    fsa_free(owned);
    if (st == FSA_ETOOLARGE)
        *fail = (fsa__server_fail_t){413, "too_large", cerr->message};
    else if (st == FSA_EINVAL)
        *fail = (fsa__server_fail_t){400, "malformed", cerr->message};
    else if (st != FSA_OK)
        *fail = (fsa__server_fail_t){500, "internal", "out of memory"};
    return st == FSA_OK || st == FSA_ETOOLARGE || st == FSA_EINVAL ? st : FSA_ENOMEM;
}

/* Finds name=value in a raw query string (no percent-decoding: our values never need it). */
static bool query_get(const char *query, const char *name, char *out, size_t cap, bool *present)
{
    size_t nlen = strlen(name);
    *present = false;
    out[0] = '\0';
    for (const char *p = query; p != NULL && *p != '\0';) {
        const char *amp = strchr(p, '&');
        size_t plen = amp != NULL ? (size_t)(amp - p) : strlen(p);
        if (plen >= nlen && strncmp(p, name, nlen) == 0 && (plen == nlen || p[nlen] == '=')) {
            size_t vlen = plen > nlen ? plen - nlen - 1 : 0;
            if (vlen >= cap)
                return false;
            memcpy(out, p + nlen + (plen > nlen ? 1 : 0), vlen);
            out[vlen] = '\0';
            *present = true;
            return true;
        }
        p = amp != NULL ? amp + 1 : NULL;
    }
    return true;
}

bool fsa__server_pull_query(const char *query, int64_t *since, int64_t *limit)
{
    char since_s[FSA_CODEC_CURSOR_BYTES];
    char limit_s[16];
    bool has_since = false, has_limit = false;
    *since = 0;
    *limit = FSA__SERVER_PULL_DEFAULT_LIMIT;
    const size_t plen = strlen(FSA__SERVER_CURSOR_PREFIX);
    return query_get(query, "since", since_s, sizeof since_s, &has_since) &&
           query_get(query, "limit", limit_s, sizeof limit_s, &has_limit) &&
           !(has_since && since_s[0] != '\0' &&
             (strncmp(since_s, FSA__SERVER_CURSOR_PREFIX, plen) != 0 ||
              !fsa__server_parse_i64(since_s + plen, since) || *since < 0)) &&
           !(has_limit &&
             (!fsa__server_parse_i64(limit_s, limit) || *limit < 1 || *limit > FSA_STORE_PULL_MAX));
}

void fsa__server_route(const char *uri, fsa__server_route_t *out)
{
    char *path = out->path;
    snprintf(path, sizeof out->path, "%s", uri);
    char *q = strchr(path, '?');
    out->query = "";
    if (q != NULL) {
        *q = '\0';
        out->query = uri + (q - path) + 1;
    }
    out->admin = strncmp(path, "/admin/v1/", 10) == 0;
    out->push = out->pull = false;
    out->device[0] = '\0';
    if (out->admin)
        return;

    static const char prefix[] = "/v1/devices/";
    if (strncmp(path, prefix, sizeof prefix - 1) == 0) {
        const char *d = path + sizeof prefix - 1;
        const char *tail = strchr(d, '/');
        if (tail != NULL && (size_t)(tail - d) < sizeof out->device) {
            memcpy(out->device, d, (size_t)(tail - d));
            out->device[tail - d] = '\0';
            out->push = strcmp(tail, "/ops") == 0;
            out->pull = strcmp(tail, "/changes") == 0;
        }
    }
}

/* ---- body bytes per client address ---- */

static size_t hold_home(const fsa__server_holds_t *h, const unsigned char *key)
{
    uint64_t x = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < FSA__SERVER_ADDR_KEY; i++)
        x = (x ^ key[i]) * 1099511628211ULL;
    return (size_t)x & (h->cap - 1);
}

/* key's slot, or else the free slot where it would go (NULL: the table is full). */
static fsa__server_hold_t *hold_find(const fsa__server_holds_t *h, const unsigned char *key)
{
    size_t i = hold_home(h, key);
    for (size_t n = 0; n < h->cap; n++, i = (i + 1) & (h->cap - 1)) {
        fsa__server_hold_t *s = &h->slot[i];
        if (s->key[0] == 0 || memcmp(s->key, key, FSA__SERVER_ADDR_KEY) == 0)
            return s;
    }
    return NULL;
}

bool fsa__server_hold_take(fsa__server_holds_t *h, const unsigned char *key, long long n,
                           long long share)
{
    if (n <= 0)
        return true;
    fsa__server_hold_t *s = hold_find(h, key);
    if (s == NULL || n > share - s->bytes)
        return false;
    if (s->key[0] == 0)
        memcpy(s->key, key, FSA__SERVER_ADDR_KEY);
    s->bytes += n;
    return true;
}

/* Frees slot i and moves back the entries after it that probed past it (linear probing's
 * deletion: every key stays reachable from its home without tombstones). */
static void hold_free(fsa__server_holds_t *h, size_t i)
{
    size_t mask = h->cap - 1;
    h->slot[i].key[0] = 0;
    h->slot[i].bytes = 0;
    for (size_t j = (i + 1) & mask; h->slot[j].key[0] != 0; j = (j + 1) & mask) {
        size_t home = hold_home(h, h->slot[j].key);
        /* Slot j's entry stays when its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            h->slot[i] = h->slot[j];
            h->slot[j].key[0] = 0;
            h->slot[j].bytes = 0;
            i = j;
        }
    }
}

void fsa__server_hold_give(fsa__server_holds_t *h, const unsigned char *key, long long n)
{
    fsa__server_hold_t *s = hold_find(h, key);
    if (s == NULL || s->key[0] == 0)
        return; /* nothing held: a caller's bug, not a reason to corrupt the table */
    s->bytes -= n < s->bytes ? n : s->bytes;
    if (s->bytes == 0)
        hold_free(h, (size_t)(s - h->slot));
}

long long fsa__server_hold_of(const fsa__server_holds_t *h, const unsigned char *key)
{
    const fsa__server_hold_t *s = hold_find(h, key);
    return s != NULL && s->key[0] != 0 ? s->bytes : 0;
}
