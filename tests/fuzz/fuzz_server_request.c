/* fieldsync fuzz target: the server's reading of a device request (sync/server/request.h):
 * routing, authentication and device binding, the body (gzip, limits, push decoding), the pull
 * query, the admin bodies, and the model applying each decoded op. */
#include <inttypes.h>
#include <strings.h>

#include <zlib.h>

#include "storage/model.h"
#include "sync/codec.h"
#include "sync/server/request.h"
#include "sync/signer.h"
#include "tests/fuzz/fuzz_util.h"

/*
 * Input: one flags byte, then an HTTP/1.1 request as text:
 *
 *   METHOD SP TARGET [SP VERSION] LF
 *   Name: value LF        (any number of headers; names case-insensitive, as libmicrohttpd)
 *   LF
 *   body...
 *
 * Flags let the fuzzer past the signature, which it could never guess:
 *   bits 0-1  sign the request: 0 not (X-Signature as given), 1 with dev001's key, 2 with
 *             dev002's key, 3 with the key of the device X-Device-Id names (dev001 otherwise)
 *   bit 2     X-Timestamp = the server's now
 *   bit 3     gzip the body (after padding) and send Content-Encoding: gzip
 *   bit 4     X-Nonce = a well-formed nonce unless the one given is already well-formed
 *   bits 4-7  all set with bits 0-2 (0xf7, 0xff: signed, fresh, good nonce), and a hash of the
 *             body = 0 mod 16: pad the body with spaces to FSA_LIMIT_BODY_BYTES - 4 + (its length
 *             % 8), around the body limit, to check the limit at its edge. Rare on purpose: a
 *             1 MiB request costs ~100 ms here (the byte scans are instrumented), 100 small ones.
 *
 * Invariants (abort on violation):
 *   - a request is accepted only as the device whose key signed it, whose id is in X-Device-Id
 *     and in the path: never as another device, and never with a bad signature or a timestamp
 *     outside the skew window;
 *   - a correctly signed, fresh request for dev001 or dev002 naming itself is accepted (the
 *     binding does not refuse the right device);
 *   - a push body is accepted only if its JSON text (inflated when gzip) is at most
 *     FSA_LIMIT_BODY_BYTES and holds at most FSA_LIMIT_BATCH_OPS ops; an unknown
 *     Content-Encoding is refused; a refusal is 400 or 413, never 500;
 *   - a decoded op either carries a rejection or has a valid id, kind and type, and the model
 *     applies it (or refuses it) without crashing; an applied result is a JSON object within the
 *     limits.
 */

#define NOW_MS INT64_C(1767225600000) /* the server's clock for every input: 2026-01-01 */
#define GOOD_NONCE "0123456789abcdef0123456789abcdef"
#define MAX_HEADERS 32

static fsa__server_device_t devices[2];

static void init_devices(void)
{
    static bool done = false;
    if (done)
        return;
    static const char *const ids[2] = {"dev001", "dev002"};
    static const char *const hex[2] = {
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f"};
    for (int i = 0; i < 2; i++) {
        snprintf(devices[i].id, sizeof devices[i].id, "%s", ids[i]);
        FUZZ_CHECK(fsa_signer_key_parse(hex[i], strlen(hex[i]), &devices[i].key) == FSA_OK);
    }
    done = true;
}

typedef struct header {
    char *name;
    char *value;
} header_t;

typedef struct request {
    char *method, *target;
    header_t headers[MAX_HEADERS + 4]; /* room for the 4 the flags may add */
    size_t nheaders;
    const char *body;
    size_t len;
} request_t;

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/* Parses text (NUL-terminated copy of size bytes, modified in place) into *r. */
static bool parse_request(char *text, size_t size, request_t *r)
{
    memset(r, 0, sizeof *r);
    char *end = text + size;
    char *nl = memchr(text, '\n', size);
    if (nl == NULL)
        return false;
    *nl = '\0';
    char *sp = strchr(text, ' ');
    if (sp == NULL)
        return false;
    *sp = '\0';
    r->method = text;
    r->target = trim(sp + 1);
    char *v = strchr(r->target, ' ');
    if (v != NULL)
        *v = '\0'; /* " HTTP/1.1" */
    char *line = nl + 1;
    for (;;) {
        if (line >= end)
            return false;
        nl = memchr(line, '\n', (size_t)(end - line));
        if (nl == NULL)
            return false;
        *nl = '\0';
        if (line[0] == '\0' || strcmp(line, "\r") == 0)
            break;
        char *colon = strchr(line, ':');
        if (colon != NULL && r->nheaders < MAX_HEADERS) {
            *colon = '\0';
            r->headers[r->nheaders].name = trim(line);
            r->headers[r->nheaders].value = trim(colon + 1);
            r->nheaders++;
        }
        line = nl + 1;
    }
    r->body = nl + 1;
    r->len = (size_t)(end - (nl + 1));
    return true;
}

/* The first header of that name (case-insensitive), NULL when absent: libmicrohttpd's lookup. */
static const char *header(const request_t *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    }
    return NULL;
}

static bool nonce_well_formed(const char *s)
{
    return s != NULL && strlen(s) == FSA_LIMIT_NONCE_HEX &&
           strspn(s, "0123456789abcdefABCDEF") == FSA_LIMIT_NONCE_HEX;
}

/* Gzips in[0..len) into a new buffer (fsa_free). */
static char *gzip(const char *in, size_t len, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    FUZZ_CHECK(deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) ==
               Z_OK);
    size_t cap = deflateBound(&z, (uLong)len);
    char *out = fuzz_alloc(cap);
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    FUZZ_CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
    *out_len = z.total_out;
    deflateEnd(&z);
    return out;
}

/* The inflated size of a gzip body, counted independently of the server (up to 4 MiB; more is
 * reported as 4 MiB + 1). */
static size_t inflated_size(const char *in, size_t len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    FUZZ_CHECK(inflateInit2(&z, 16 + MAX_WBITS) == Z_OK);
    static unsigned char sink[65536];
    size_t total = 0;
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)len;
    for (;;) {
        z.next_out = sink;
        z.avail_out = sizeof sink;
        int rc = inflate(&z, Z_NO_FLUSH);
        total += sizeof sink - z.avail_out;
        if (rc != Z_OK || total > 4u * 1024 * 1024)
            break;
    }
    inflateEnd(&z);
    return total > 4u * 1024 * 1024 ? 4u * 1024 * 1024 + 1 : total;
}

/* Realistic current fields for each type, so that every op kind reaches its apply code. */
static const char *const current_fields[FSA__TYPE_COUNT] = {
    "{\"people_id\":\"p42\",\"site_id\":\"hq\",\"kind\":\"checkin\",\"at\":1767225600000,"
    "\"lat\":52.52,\"lon\":13.4,\"accuracy_m\":0,\"other_info\":{}}",
    "{\"jobstatus\":\"INPROGRESS\",\"parent_id\":null,\"seqno\":1,\"expirytime\":0,"
    "\"other_info\":{\"notes\":\"gate 3\",\"tour\":{\"done\":2}},\"people_id\":\"p42\"}",
    "{\"status\":\"OPEN\",\"level\":1,\"assignedto\":\"p7\",\"ticketlog\":{\"ticket_history\":"
    "[{\"at\":1767225600000,\"note\":\"opened\"}]},\"priority\":\"HIGH\"}",
};

static void check_applied(fsa_status_t st, char *out)
{
    FUZZ_CHECK(st != FSA_ENOMEM);
    if (st == FSA_OK) {
        FUZZ_CHECK(out != NULL);
        FUZZ_CHECK(fsa_model_json_check(out, FSA_LIMIT_FIELDS_BYTES) == FSA_OK);
        FUZZ_CHECK(out[0] == '{');
    } else {
        FUZZ_CHECK(out == NULL);
    }
    fsa_model_free(out);
}

/* What the store does with each op of an accepted batch, minus SQLite. */
static void apply_ops(const fsa_codec_push_t *push, bool by_server)
{
    unsigned flags = by_server ? FSA_APPLY_BY_SERVER : 0;
    for (size_t i = 0; i < push->count; i++) {
        const fsa_codec_op_t *o = &push->ops[i];
        size_t idlen = strnlen(o->op.op_id, sizeof o->op.op_id);
        FUZZ_CHECK(idlen > 0 && idlen < sizeof o->op.op_id);
        if (o->reject.code[0] != '\0')
            continue;
        const fsa_op_t *op = &o->op;
        FUZZ_CHECK((unsigned)op->kind < FSA__OP_COUNT && (unsigned)op->type < FSA__TYPE_COUNT);
        FUZZ_CHECK(fsa_model_id_valid(op->id));
        /* A create may come without fields (PROTOCOL.md section 7, amendment 1): json NULL. */
        if (op->kind == FSA_OP_SET || op->kind == FSA_OP_MERGE || op->kind == FSA_OP_APPEND)
            FUZZ_CHECK(op->json != NULL);
        fsa_model_err_t err;
        fsa_status_t st = fsa_model_validate_op(op, flags, &err);
        FUZZ_CHECK(st != FSA_ENOMEM);
        if (st != FSA_OK)
            FUZZ_CHECK(err.code[0] != '\0');
        char *out = NULL;
        st = fsa_model_apply(op, NULL, 0, flags, &out, &err);
        check_applied(st, out);
        out = NULL;
        st = fsa_model_apply(op, current_fields[op->type], 1, flags | FSA_APPLY_REPLAY, &out, &err);
        check_applied(st, out);
    }
}

/* The server's admin bodies (seed an entity, server ops): no signature, a bearer token. */
static void check_admin(const fsa__server_route_t *rt, const request_t *r)
{
    if (strcmp(rt->path, "/admin/v1/entities") == 0) {
        fsa_codec_change_t e;
        fsa_model_err_t cerr;
        fsa_status_t st = fsa_codec_decode_entity(r->body, r->len, &e, &cerr);
        FUZZ_CHECK(st == FSA_OK || st == FSA_EINVAL || st == FSA_ETOOLARGE);
        if (st == FSA_OK) {
            FUZZ_CHECK(r->len <= FSA_LIMIT_BODY_BYTES);
            FUZZ_CHECK((unsigned)e.type < FSA__TYPE_COUNT && fsa_model_id_valid(e.id));
            FUZZ_CHECK(e.fields != NULL && e.fields[0] == '{');
        } else {
            FUZZ_CHECK(strcmp(cerr.code, st == FSA_EINVAL ? "malformed" : "too_large") == 0);
        }
        fsa_codec_change_clear(&e);
    } else if (strcmp(rt->path, "/admin/v1/ops") == 0) {
        fsa_codec_push_t push;
        fsa_model_err_t cerr;
        fsa_status_t st = fsa_codec_decode_push(r->body, r->len, &push, &cerr);
        FUZZ_CHECK(st == FSA_OK || st == FSA_EINVAL || st == FSA_ETOOLARGE);
        if (st == FSA_OK) {
            FUZZ_CHECK(r->len <= FSA_LIMIT_BODY_BYTES && push.count <= FSA_LIMIT_BATCH_OPS);
            apply_ops(&push, true);
        }
        fsa_codec_push_free(&push);
    }
}

static void check_push_body(const request_t *r, const char *enc)
{
    fsa_codec_push_t push;
    fsa_model_err_t cerr;
    fsa__server_fail_t fail;
    fsa_status_t st = fsa__server_push_body(enc, r->body, r->len, &push, &cerr, &fail);
    bool identity = enc == NULL || strcasecmp(enc, "identity") == 0;
    bool gz = enc != NULL && strcasecmp(enc, "gzip") == 0;
    if (!identity && !gz)
        FUZZ_CHECK(st == FSA_EINVAL && fail.http == 400);
    if (st != FSA_OK) {
        FUZZ_CHECK(st == FSA_EINVAL || st == FSA_ETOOLARGE);
        FUZZ_CHECK(fail.http == (st == FSA_EINVAL ? 400u : 413u));
        FUZZ_CHECK(strcmp(fail.code, st == FSA_EINVAL ? "malformed" : "too_large") == 0);
        FUZZ_CHECK(fail.message != NULL && fail.message[0] != '\0');
        FUZZ_CHECK(push.ops == NULL && push.count == 0);
        return;
    }
    size_t json_len = gz ? inflated_size(r->body, r->len) : r->len;
    FUZZ_CHECK(json_len <= FSA_LIMIT_BODY_BYTES);
    FUZZ_CHECK(push.count <= FSA_LIMIT_BATCH_OPS);
    apply_ops(&push, false);
    fsa_codec_push_free(&push);
}

static void check_pull_query(const char *query)
{
    int64_t since = -1, limit = -1;
    if (fsa__server_pull_query(query, &since, &limit)) {
        FUZZ_CHECK(since >= 0);
        FUZZ_CHECK(limit >= 1 && limit <= 1000);
    }
}

static const fsa__server_device_t *device_named(const char *id)
{
    for (size_t i = 0; id != NULL && i < 2; i++) {
        if (strcmp(devices[i].id, id) == 0)
            return &devices[i];
    }
    return NULL;
}

/* FNV-1a: picks the few inputs that are padded to the body limit. */
static uint32_t body_hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

/* Sets (or adds) a header of the request to a value that lives as long as the input. */
static void set_header(request_t *r, const char *name, char *value)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcasecmp(r->headers[i].name, name) == 0) {
            r->headers[i].value = value;
            return;
        }
    }
    FUZZ_CHECK(r->nheaders < MAX_HEADERS + 4); /* a harness bug otherwise */
    r->headers[r->nheaders].name = (char *)(uintptr_t)name;
    r->headers[r->nheaders].value = value;
    r->nheaders++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    init_devices();
    unsigned flags = data[0];
    char *text = fuzz_strndup(data + 1, size - 1);
    char *padded = NULL, *zipped = NULL;
    request_t r;
    if (!parse_request(text, size - 1, &r) || strlen(r.target) >= FSA__SERVER_URI_MAX)
        goto out; /* not a request libmicrohttpd would hand over; 414 for a long target */

    fsa__server_route_t rt;
    fsa__server_route(r.target, &rt);
    FUZZ_CHECK(!(rt.admin && (rt.push || rt.pull)) && !(rt.push && rt.pull));
    if (rt.push || rt.pull) {
        char expect[FSA__SERVER_URI_MAX + 32];
        snprintf(expect, sizeof expect, "/v1/devices/%s/%s", rt.device,
                 rt.push ? "ops" : "changes");
        FUZZ_CHECK(strcmp(expect, rt.path) == 0 && strchr(rt.device, '/') == NULL);
    }
    if (rt.admin) {
        check_admin(&rt, &r);
        goto out;
    }
    if (rt.pull)
        check_pull_query(rt.query);
    if ((!rt.push || strcmp(r.method, "POST") != 0) && (!rt.pull || strcmp(r.method, "GET") != 0))
        goto out; /* 404 or 405 before authentication */

    /* Shape the request as the flags say; the signature goes last, over what is sent. */
    if ((flags & 0xf7) == 0xf7 && body_hash(r.body, r.len) % 16 == 0) {
        size_t want = FSA_LIMIT_BODY_BYTES - 4 + r.len % 8;
        if (want > r.len) {
            padded = fuzz_alloc(want + 1);
            memcpy(padded, r.body, r.len);
            memset(padded + r.len, ' ', want - r.len);
            padded[want] = '\0';
            r.body = padded;
            r.len = want;
        }
    }
    if (flags & 8) {
        size_t zlen = 0;
        zipped = gzip(r.body, r.len, &zlen);
        r.body = zipped;
        r.len = zlen;
        set_header(&r, "Content-Encoding", "gzip");
    }
    char ts[32];
    if ((flags & 4) || ((flags & 3) != 0 && header(&r, "X-Timestamp") == NULL)) {
        snprintf(ts, sizeof ts, "%" PRId64, NOW_MS);
        set_header(&r, "X-Timestamp", ts);
    }
    static char good_nonce[] = GOOD_NONCE;
    if ((flags & 16) && !nonce_well_formed(header(&r, "X-Nonce")))
        set_header(&r, "X-Nonce", good_nonce);
    const fsa__server_device_t *signer = NULL;
    switch (flags & 3) {
    case 1: signer = &devices[0]; break;
    case 2: signer = &devices[1]; break;
    case 3:
        signer = device_named(header(&r, "X-Device-Id"));
        if (signer == NULL)
            signer = &devices[0];
        break;
    default: break;
    }
    char sig[FSA_SIGNER_HEX_BYTES];
    if (signer != NULL) {
        const char *hts = header(&r, "X-Timestamp");
        const char *hn = header(&r, "X-Nonce");
        if (fsa_signer_sign(&signer->key, r.method, r.target, hts, hn != NULL ? hn : "", r.body,
                            r.len, sig) != FSA_OK)
            sig[0] = '\0'; /* a '\n' cannot occur; "" is a bad signature */
        set_header(&r, "X-Signature", sig);
    }

    fsa__server_auth_in_t in = {
        .method = r.method,
        .uri = r.target,
        .device_id = header(&r, "X-Device-Id"),
        .timestamp = header(&r, "X-Timestamp"),
        .nonce = header(&r, "X-Nonce"),
        .signature = header(&r, "X-Signature"),
        .body = r.body,
        .len = r.len,
        .path_device = rt.device,
        .now_ms = NOW_MS,
    };
    fsa__server_auth_t a;
    fsa__server_auth_check(devices, 2, &in, &a);

    if (a.verdict == FSA__AUTH_OK) {
        /* Never accepted as another device than the one in the header, the path and the key. */
        FUZZ_CHECK(a.dev != NULL);
        FUZZ_CHECK(in.device_id != NULL && strcmp(a.dev->id, in.device_id) == 0);
        FUZZ_CHECK(strcmp(a.dev->id, rt.device) == 0);
        if (signer != NULL)
            FUZZ_CHECK(signer == a.dev);
        char expect[FSA_SIGNER_HEX_BYTES];
        FUZZ_CHECK(fsa_signer_sign(&a.dev->key, in.method, in.uri, in.timestamp, in.nonce, in.body,
                                   in.len, expect) == FSA_OK);
        FUZZ_CHECK(strcasecmp(expect, in.signature) == 0);
        FUZZ_CHECK(nonce_well_formed(in.nonce));
        FUZZ_CHECK(a.ts >= NOW_MS - FSA_LIMIT_SKEW_MS && a.ts <= NOW_MS + FSA_LIMIT_SKEW_MS);
    } else {
        FUZZ_CHECK(a.dev == NULL && a.fail.http == 401 && a.fail.code != NULL);
    }
    /* The right device, correctly signed and fresh, is let in. */
    if (signer != NULL && (flags & 4) && nonce_well_formed(in.nonce) && in.device_id != NULL &&
        strcmp(in.device_id, signer->id) == 0) {
        if (strcmp(rt.device, signer->id) == 0)
            FUZZ_CHECK(a.verdict == FSA__AUTH_OK);
        else
            FUZZ_CHECK(a.verdict == FSA__AUTH_NOT_SIGNER);
    }
    if (in.device_id == NULL || device_named(in.device_id) == NULL)
        FUZZ_CHECK(a.verdict == FSA__AUTH_UNKNOWN_DEVICE);

    if (a.verdict == FSA__AUTH_OK && rt.push)
        check_push_body(&r, header(&r, "Content-Encoding"));
out:
    fsa_free(zipped);
    fsa_free(padded);
    fsa_free(text);
    return 0;
}
