/* fieldsync: the JSON wire format (push bodies, per-op results, pull answers, errors) with cJSON.
 */
#include "sync/codec.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "port/alloc.h"
#include "sync/codec_json.h"

/* Integers travel as JSON numbers, which cJSON reads as doubles: only values a double holds
 * exactly are accepted, so a number never silently changes on its way through. */
#define JSON_INT_MAX 9007199254740992.0 /* 2^53 */

#define ANSWER_MAX_RESULTS FSA_LIMIT_BATCH_OPS_MAX
#define ANSWER_MAX_CHANGES 100000

void fsa_codec_free(char *text)
{
    fsa_free(text);
}

/* A protocol error (storage/model.h) has the codec's sizes. */
_Static_assert(sizeof(((fsa_model_err_t *)0)->code) == FSA_CODEC_CODE_BYTES &&
                   sizeof(((fsa_model_err_t *)0)->message) == FSA_CODEC_MESSAGE_BYTES,
               "a protocol error's sizes are the codec's");

static void set_err(fsa_model_err_t *err, const char *code, const char *fmt, ...) FSA_PRINTF(3, 4);

static void set_err(fsa_model_err_t *err, const char *code, const char *fmt, ...)
{
    if (err == NULL)
        return;
    snprintf(err->code, sizeof err->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

/* What one scan of JSON text found: the deepest nesting, and a bound on the values. */
typedef struct json_scan {
    size_t deepest;
    size_t values;
} json_scan_t;

/*
 * The one scan behind fsa_codec_json_depth, fsa_codec_json_values and the parse's bounds: it reads
 * text without recursion and without parsing, skips strings (brackets and commas in them do not
 * count) and stops as soon as the nesting exceeds max_depth (deepest is then max_depth + 1) or
 * the values exceed max_values (values is then max_values + 1). Every value but the first follows
 * a ',' or opens a container's first member ('[' '{'), so 1 + commas + opens bounds the values
 * (object keys counted with their values).
 */
static json_scan_t json_scan(const char *text, size_t len, size_t max_depth, size_t max_values)
{
    json_scan_t r = {0, 1};
    size_t depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++; /* the escaped char cannot end the string */
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > r.deepest && ++r.deepest > max_depth)
                return r;
            if (++r.values > max_values)
                return r;
        } else if (c == ',') {
            if (++r.values > max_values)
                return r;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return r;
}

size_t fsa_codec_json_depth(const char *text, size_t len, size_t max_depth)
{
    return text == NULL ? 0 : json_scan(text, len, max_depth, SIZE_MAX - 1).deepest;
}

size_t fsa_codec_json_values(const char *text, size_t len, size_t max_values)
{
    return text == NULL ? 0 : json_scan(text, len, SIZE_MAX - 1, max_values).values;
}

/* Every string value and key within FSA_LIMIT_STRING_BYTES. The recursion is bounded because the
 * depth was checked before parsing. */
// NOLINTNEXTLINE(misc-no-recursion): bounded by the depth parse_bounded checked first
static bool strings_within_limit(const cJSON *item)
{
    for (; item != NULL; item = item->next) {
        if (item->string != NULL && strlen(item->string) > FSA_LIMIT_STRING_BYTES)
            return false;
        if (cJSON_IsString(item) && strlen(item->valuestring) > FSA_LIMIT_STRING_BYTES)
            return false;
        if ((cJSON_IsArray(item) || cJSON_IsObject(item)) && !strings_within_limit(item->child))
            return false;
    }
    return true;
}

typedef enum parse_fail { PARSE_OK, PARSE_TOO_LARGE, PARSE_MALFORMED, PARSE_NOMEM } parse_fail_t;

/* The status and err of a body that parse_bounded() refused. */
static fsa_status_t parse_status(parse_fail_t pf, const char *why, fsa_model_err_t *err)
{
    switch (pf) {
    case PARSE_TOO_LARGE: set_err(err, "too_large", "%s", why); return FSA_ETOOLARGE;
    case PARSE_NOMEM: set_err(err, "internal", "out of memory"); return FSA_ENOMEM;
    default: set_err(err, "malformed", "%s", why); return FSA_EINVAL;
    }
}

/*
 * Parses text[0..len) as exactly one JSON value within max_bytes, max_depth and the string limit.
 * *root is set only on PARSE_OK; the caller then owns it (one cJSON_Delete).
 */
static parse_fail_t parse_bounded(const char *text, size_t len, size_t max_bytes, size_t max_depth,
                                  size_t max_values, cJSON **root, const char **why)
{
    *root = NULL;
    if (len > max_bytes) {
        *why = "body is over the size limit";
        return PARSE_TOO_LARGE;
    }
    /* Each parsed value costs a cJSON node (about 64 bytes), so a small body of "[0,0,...]"
     * would cost far more memory than its size: the values are counted, with the nesting, by
     * one scan before parsing. */
    json_scan_t scan = json_scan(text, len, max_depth, max_values);
    if (scan.deepest > max_depth) {
        *why = "JSON nesting is over the depth limit";
        return PARSE_TOO_LARGE;
    }
    if (scan.values > max_values) {
        *why = "JSON has more values than the limit";
        return PARSE_TOO_LARGE;
    }
    const char *end = NULL;
    unsigned long failures = fsa_alloc_failures();
    cJSON *r = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (r == NULL) {
        /* cJSON says NULL for bad text and for no memory alike; a body is refused as malformed
         * (for good) only when no allocation failed. */
        if (fsa_alloc_failures() != failures) {
            *why = "out of memory";
            return PARSE_NOMEM;
        }
        *why = "body is not valid JSON";
        return PARSE_MALFORMED;
    }
    /* Only whitespace may follow the value (cJSON would otherwise ignore trailing garbage). */
    for (const char *p = end; p != NULL && p < text + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(r);
            *why = "trailing bytes after the JSON value";
            return PARSE_MALFORMED;
        }
    }
    if (!strings_within_limit(r)) {
        cJSON_Delete(r);
        *why = "a string is over the length limit";
        return PARSE_TOO_LARGE;
    }
    *root = r;
    return PARSE_OK;
}

fsa_status_t fsa__codec_parse_bounded(const char *text, size_t len, size_t max_bytes,
                                      size_t max_depth, size_t max_values, cJSON **root,
                                      const char **why)
{
    *why = "";
    switch (parse_bounded(text, len, max_bytes, max_depth, max_values, root, why)) {
    case PARSE_OK: return FSA_OK;
    case PARSE_TOO_LARGE: return FSA_ETOOLARGE;
    case PARSE_NOMEM: return FSA_ENOMEM;
    default: return FSA_EINVAL;
    }
}

static bool get_int(const cJSON *item, int64_t *out)
{
    if (!cJSON_IsNumber(item))
        return false;
    double d = item->valuedouble;
    /* The range check comes first so that the cast below is defined. */
    if (!isfinite(d) || d > JSON_INT_MAX || d < -JSON_INT_MAX || (double)(int64_t)d != d)
        return false;
    *out = (int64_t)d;
    return true;
}

/* Copies a string member into dst (cap bytes with NUL). False when absent, not a string, or too
 * long; dst is then "". */
static bool get_str(const cJSON *obj, const char *name, char *dst, size_t cap)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(obj, name);
    dst[0] = '\0';
    if (!cJSON_IsString(s))
        return false;
    size_t n = strlen(s->valuestring);
    if (n >= cap)
        return false;
    memcpy(dst, s->valuestring, n + 1);
    return true;
}

static char *dup_text(const char *s)
{
    size_t n = strlen(s);
    char *p = fsa_malloc(n + 1);
    if (p != NULL)
        memcpy(p, s, n + 1);
    return p;
}

/* Prints item into a malloc'ed string of our own allocator. NULL on allocation failure. */
static char *print_item(const cJSON *item)
{
    char *printed = cJSON_PrintUnformatted(item);
    if (printed == NULL)
        return NULL;
    char *copy = dup_text(printed);
    cJSON_free(printed);
    return copy;
}

/* Prints root as the final answer text. */
static fsa_status_t finish(cJSON *root, char **out, size_t *out_len)
{
    char *text = print_item(root);
    if (text == NULL)
        return FSA_ENOMEM;
    *out = text;
    if (out_len != NULL)
        *out_len = strlen(text);
    return FSA_OK;
}

/* An exact int64 as a raw JSON number (cJSON's own numbers are doubles). */
static bool add_int(cJSON *obj, const char *name, int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return cJSON_AddRawToObject(obj, name, buf) != NULL;
}

/* An answer's end: when st is FSA_OK, adds "server_time" (unless server_time_ms < 0) and prints
 * root into *out; deletes root either way. */
static fsa_status_t finish_timed(cJSON *root, fsa_status_t st, int64_t server_time_ms, char **out,
                                 size_t *out_len)
{
    if (st == FSA_OK && server_time_ms >= 0 && !add_int(root, "server_time", server_time_ms))
        st = FSA_ENOMEM;
    if (st == FSA_OK)
        st = finish(root, out, out_len);
    cJSON_Delete(root);
    return st;
}

static bool id_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
}

/* 1..max bytes of the id alphabet. The codec checks it itself so that it does not depend on the
 * model for its own envelope (op_id, batch_id). */
static bool id_ok(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        if (n >= max || !id_char_ok(s[n]))
            return false;
    }
    return n > 0;
}

/* A JSON object text, cheaply recognised by its first and last non-blank chars. */
static bool looks_like_object(const char *s)
{
    if (s == NULL)
        return false;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    if (*s != '{')
        return false;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    return n >= 2 && s[n - 1] == '}';
}

static void out_reset(char **out, size_t *out_len)
{
    if (out != NULL)
        *out = NULL;
    if (out_len != NULL)
        *out_len = 0;
}

/* ---- push ---- */

void fsa_codec_push_free(fsa_codec_push_t *push)
{
    if (push == NULL)
        return;
    for (size_t i = 0; i < push->count; i++)
        fsa_op_clear(&push->ops[i].op);
    fsa_free(push->ops);
    memset(push, 0, sizeof *push);
}

/* The member carrying an op's JSON payload; a missing or mistyped one rejects the op. */
static fsa_status_t take_payload(const cJSON *o, const char *name, bool must_be_object,
                                 fsa_codec_op_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (v == NULL || (must_be_object && !cJSON_IsObject(v))) {
        set_err(&out->reject, "invalid_value", "%s op: \"%s\" must be %s",
                fsa_op_kind_name(out->op.kind), name, must_be_object ? "an object" : "present");
        return FSA_OK;
    }
    out->op.json = print_item(v);
    return out->op.json != NULL ? FSA_OK : FSA_ENOMEM;
}

/* Reads a short string member of a kind into dst; a missing, mistyped or overlong one rejects. */
static bool take_str(const cJSON *o, const char *name, char *dst, size_t cap, const char *code,
                     fsa_codec_op_t *out)
{
    if (get_str(o, name, dst, cap))
        return true;
    set_err(&out->reject, code, "%s op: \"%s\" must be a string of at most %zu bytes",
            fsa_op_kind_name(out->op.kind), name, cap - 1);
    return false;
}

/* Decodes one op. FSA_OK (perhaps with a rejection), FSA_EINVAL (malformed), FSA_ENOMEM. */
static fsa_status_t decode_op(const cJSON *o, size_t idx, fsa_codec_op_t *out, fsa_model_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(o)) {
        set_err(err, "malformed", "ops[%zu] is not an object", idx);
        return FSA_EINVAL;
    }
    fsa_op_t *op = &out->op;
    if (!get_str(o, "op_id", op->op_id, sizeof op->op_id) ||
        !id_ok(op->op_id, FSA_OP_ID_BYTES - 1)) {
        set_err(err, "malformed", "ops[%zu]: op_id must be 1..36 bytes of [A-Za-z0-9._:-]", idx);
        return FSA_EINVAL;
    }
    if (!get_int(cJSON_GetObjectItemCaseSensitive(o, "seq"), &op->seq) ||
        !get_int(cJSON_GetObjectItemCaseSensitive(o, "at"), &op->at_ms)) {
        set_err(err, "malformed", "ops[%zu]: seq and at must be integers", idx);
        return FSA_EINVAL;
    }
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "kind");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    if (!cJSON_IsString(kind) || !cJSON_IsString(type) || !cJSON_IsString(id)) {
        set_err(err, "malformed", "ops[%zu]: kind, type and id must be strings", idx);
        return FSA_EINVAL;
    }
    const cJSON *group = cJSON_GetObjectItemCaseSensitive(o, "group");
    if (group != NULL && !cJSON_IsNull(group) &&
        !get_str(o, "group", op->group, sizeof op->group)) {
        set_err(err, "malformed", "ops[%zu]: group must be a string of at most %d bytes", idx,
                FSA_LIMIT_ID_BYTES);
        return FSA_EINVAL;
    }

    if (fsa_op_kind_parse(kind->valuestring, &op->kind) != FSA_OK) {
        set_err(&out->reject, "invalid_value", "unknown op kind \"%.64s\"", kind->valuestring);
        return FSA_OK;
    }
    if (fsa_type_parse(type->valuestring, &op->type) != FSA_OK) {
        set_err(&out->reject, "unknown_type", "unknown entity type \"%.64s\"", type->valuestring);
        return FSA_OK;
    }
    if (!id_ok(id->valuestring, FSA_LIMIT_ID_BYTES)) {
        set_err(&out->reject, "invalid_value", "entity id must be 1..%d bytes of [A-Za-z0-9._:-]",
                FSA_LIMIT_ID_BYTES);
        return FSA_OK;
    }
    memcpy(op->id, id->valuestring, strlen(id->valuestring) + 1);

    if (op->kind != FSA_OP_CREATE && op->kind != FSA_OP_SET &&
        !take_str(o, "field", op->field, sizeof op->field, "unknown_field", out))
        return FSA_OK;
    switch (op->kind) {
    case FSA_OP_CREATE:
        /* PROTOCOL.md section 7, amendment 1: a create without fields is a create of {} (the
         * model reads a NULL json so). */
        if (cJSON_GetObjectItemCaseSensitive(o, "fields") == NULL)
            return FSA_OK;
        return take_payload(o, "fields", true, out);
    case FSA_OP_SET:
        if (!get_int(cJSON_GetObjectItemCaseSensitive(o, "base_version"), &op->base_version)) {
            set_err(&out->reject, "invalid_value", "set op: base_version must be an integer");
            return FSA_OK;
        }
        return take_payload(o, "fields", true, out);
    case FSA_OP_MERGE: return take_payload(o, "patch", true, out);
    case FSA_OP_INCREMENT:
        if (!get_int(cJSON_GetObjectItemCaseSensitive(o, "by"), &op->by))
            set_err(&out->reject, "invalid_value", "increment op: by must be an integer");
        return FSA_OK;
    case FSA_OP_TRANSITION:
        if (take_str(o, "from", op->from, sizeof op->from, "invalid_value", out))
            (void)take_str(o, "to", op->to, sizeof op->to, "invalid_value", out);
        return FSA_OK;
    case FSA_OP_APPEND: {
        if (!take_str(o, "key", op->key, sizeof op->key, "invalid_value", out))
            return FSA_OK;
        const cJSON *ml = cJSON_GetObjectItemCaseSensitive(o, "max_len");
        if (ml != NULL && !cJSON_IsNull(ml) && (!get_int(ml, &op->max_len) || op->max_len < 0)) {
            set_err(&out->reject, "invalid_value",
                    "append op: max_len must be a non-negative integer");
            return FSA_OK;
        }
        return take_payload(o, "item", false, out);
    }
    default: set_err(&out->reject, "invalid_value", "unknown op kind"); return FSA_OK;
    }
}

fsa_status_t fsa_codec_decode_push(const char *body, size_t len, fsa_codec_push_t *out,
                                   fsa_model_err_t *err)
{
    if (err != NULL)
        memset(err, 0, sizeof *err);
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (out == NULL || (body == NULL && len > 0)) {
        set_err(err, "malformed", "no body");
        return FSA_EINVAL;
    }
    cJSON *root = NULL;
    const char *why = NULL;
    fsa_status_t st = FSA_OK;
    parse_fail_t pf = parse_bounded(body != NULL ? body : "", len, FSA_LIMIT_BODY_BYTES,
                                    FSA_LIMIT_JSON_DEPTH + FSA_CODEC_PUSH_ENVELOPE_DEPTH,
                                    FSA_LIMIT_JSON_VALUES, &root, &why);
    if (pf != PARSE_OK)
        return parse_status(pf, why, err);
    const cJSON *ops = cJSON_GetObjectItemCaseSensitive(root, "ops");
    if (!cJSON_IsObject(root) || !get_str(root, "batch_id", out->batch_id, sizeof out->batch_id) ||
        !cJSON_IsArray(ops)) {
        set_err(err, "malformed", "body must be {\"batch_id\": string, \"ops\": [...]}");
        st = FSA_EINVAL;
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(ops);
    if (n > FSA_LIMIT_BATCH_OPS) {
        set_err(err, "too_large", "%zu ops in one batch; the limit is %d", n, FSA_LIMIT_BATCH_OPS);
        st = FSA_ETOOLARGE;
        goto out;
    }
    if (n > 0) {
        out->ops = fsa_calloc(n, sizeof *out->ops);
        if (out->ops == NULL) {
            st = FSA_ENOMEM;
            goto out;
        }
    }
    size_t i = 0;
    for (const cJSON *o = ops->child; o != NULL; o = o->next, i++) {
        st = decode_op(o, i, &out->ops[i], err);
        out->count = i + 1; /* so push_free releases what this op holds, even on failure */
        if (st != FSA_OK)
            goto out;
    }
out:
    cJSON_Delete(root);
    if (st != FSA_OK) {
        fsa_codec_push_free(out);
        if (st == FSA_ENOMEM)
            set_err(err, "internal", "out of memory");
    }
    return st;
}

/* ---- results ---- */

static const char *const result_names[] = {"applied", "duplicate", "conflict", "rejected"};

const char *fsa_result_status_name(fsa_result_status_t s)
{
    return (unsigned)s < FSA__RESULT_COUNT ? result_names[s] : "?";
}

fsa_status_t fsa_result_status_parse(const char *name, fsa_result_status_t *out)
{
    if (name == NULL || out == NULL)
        return FSA_EINVAL;
    for (unsigned i = 0; i < FSA__RESULT_COUNT; i++) {
        if (strcmp(name, result_names[i]) == 0) {
            *out = (fsa_result_status_t)i;
            return FSA_OK;
        }
    }
    return FSA_EINVAL;
}

void fsa_codec_result_clear(fsa_codec_result_t *r)
{
    if (r == NULL)
        return;
    fsa_free(r->current_fields);
    memset(r, 0, sizeof *r);
}

void fsa_codec_results_free(fsa_codec_result_t *results, size_t count)
{
    if (results == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        fsa_codec_result_clear(&results[i]);
    fsa_free(results);
}

static fsa_status_t add_error_object(cJSON *parent, const char *code, const char *message)
{
    cJSON *e = cJSON_AddObjectToObject(parent, "error");
    if (e == NULL || cJSON_AddStringToObject(e, "code", code) == NULL ||
        cJSON_AddStringToObject(e, "message", message != NULL ? message : "") == NULL)
        return FSA_ENOMEM;
    return FSA_OK;
}

/*
 * The answer to a push is written directly, not through a cJSON tree (one allocation instead of a
 * dozen per result): the same text cJSON printed, member for member. Strings are escaped as cJSON
 * escapes them ('"', '\\' and the bytes below 0x20), integers exact.
 */
typedef struct wbuf {
    char *p;
    size_t len;
} wbuf_t;

static void w_put(wbuf_t *w, const char *s, size_t n)
{
    /* The buffer is sized for the worst case up front (results_bound). */
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

#define W_LIT(w, lit) w_put((w), (lit), sizeof(lit) - 1)

/* Writes s (at most max bytes of it) as a JSON string. */
static void w_strn(wbuf_t *w, const char *s, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + max;
    w->p[w->len++] = '"';
    for (; p < end && *p != '\0'; p++) {
        unsigned char c = *p;
        if (c >= 0x20 && c != '"' && c != '\\') {
            w->p[w->len++] = (char)c;
            continue;
        }
        w->p[w->len++] = '\\';
        switch (c) {
        case '"': w->p[w->len++] = '"'; break;
        case '\\': w->p[w->len++] = '\\'; break;
        case '\b': w->p[w->len++] = 'b'; break;
        case '\f': w->p[w->len++] = 'f'; break;
        case '\n': w->p[w->len++] = 'n'; break;
        case '\r': w->p[w->len++] = 'r'; break;
        case '\t': w->p[w->len++] = 't'; break;
        default:
            w->p[w->len++] = 'u';
            w->p[w->len++] = '0';
            w->p[w->len++] = '0';
            w->p[w->len++] = hex[c >> 4];
            w->p[w->len++] = hex[c & 15];
            break;
        }
    }
    w->p[w->len++] = '"';
}

static void w_int(wbuf_t *w, int64_t v)
{
    char buf[24], *end = buf + sizeof buf, *p = end;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *--p = '-';
    w_put(w, p, (size_t)(end - p));
}

/* Checks a result as encode_result needs it; FSA_EINVAL when it cannot be encoded. */
static fsa_status_t result_ok(const fsa_codec_result_t *r)
{
    if ((unsigned)r->status >= FSA__RESULT_COUNT ||
        (r->status == FSA_RESULT_DUPLICATE &&
         ((unsigned)r->original >= FSA__RESULT_COUNT || r->original == FSA_RESULT_DUPLICATE)))
        return FSA_EINVAL;
    if (r->has_current && !looks_like_object(r->current_fields))
        return FSA_EINVAL;
    return FSA_OK;
}

/* The most a result's text can take (strings escaped at 6 bytes a byte). */
static size_t result_bound(const fsa_codec_result_t *r)
{
    size_t n = 256 + 6 * (strnlen(r->op_id, sizeof r->op_id) + strnlen(r->code, sizeof r->code) +
                          strnlen(r->message, sizeof r->message));
    if (r->has_current)
        n += strlen(r->current_fields) + 64;
    return n;
}

/* {"op_id","status","version"?,"original"?,"current"?:{"version","fields"},"error"?:{...}} */
static void encode_result(wbuf_t *w, const fsa_codec_result_t *r)
{
    W_LIT(w, "{\"op_id\":");
    w_strn(w, r->op_id, sizeof r->op_id);
    W_LIT(w, ",\"status\":");
    w_strn(w, fsa_result_status_name(r->status), 16);
    if (r->version > 0) {
        W_LIT(w, ",\"version\":");
        w_int(w, r->version);
    }
    if (r->status == FSA_RESULT_DUPLICATE) {
        W_LIT(w, ",\"original\":");
        w_strn(w, fsa_result_status_name(r->original), 16);
    }
    if (r->has_current) {
        /* The fields come from the server's own store: embedded as they are, not re-parsed. */
        W_LIT(w, ",\"current\":{\"version\":");
        w_int(w, r->current_version);
        W_LIT(w, ",\"fields\":");
        w_put(w, r->current_fields, strlen(r->current_fields));
        w->p[w->len++] = '}';
    }
    if (r->code[0] != '\0') {
        W_LIT(w, ",\"error\":{\"code\":");
        w_strn(w, r->code, sizeof r->code);
        W_LIT(w, ",\"message\":");
        w_strn(w, r->message, sizeof r->message);
        w->p[w->len++] = '}';
    }
    w->p[w->len++] = '}';
}

fsa_status_t fsa_codec_encode_results(const fsa_codec_result_t *results, size_t count,
                                      int64_t server_time_ms, char **out, size_t *out_len)
{
    out_reset(out, out_len);
    if (out == NULL || (results == NULL && count > 0))
        return FSA_EINVAL;
    size_t cap = 64;
    for (size_t i = 0; i < count; i++) {
        if (result_ok(&results[i]) != FSA_OK)
            return FSA_EINVAL;
        cap += result_bound(&results[i]) + 1;
    }
    wbuf_t w = {fsa_malloc(cap), 0};
    if (w.p == NULL)
        return FSA_ENOMEM;
    W_LIT(&w, "{\"results\":[");
    for (size_t i = 0; i < count; i++) {
        if (i > 0)
            w.p[w.len++] = ',';
        encode_result(&w, &results[i]);
    }
    W_LIT(&w, "],\"server_time\":");
    w_int(&w, server_time_ms);
    w.p[w.len++] = '}';
    w.p[w.len] = '\0';
    *out = w.p;
    if (out_len != NULL)
        *out_len = w.len;
    return FSA_OK;
}

/* ---- the push body, written directly ---- */

/*
 * A push body is written without a cJSON tree, the same text cJSON printed from one, member for
 * member (tests/sync/test_codec.c compares the two). An op's JSON payload (create's and set's
 * fields, a merge's patch, an append's item) is stored as the caller gave it; cJSON printed it
 * after parsing it, which drops blanks and rewrites some escapes and numbers. A payload that is
 * already in the form cJSON prints (canonical_json) is copied as it is; any other is parsed and
 * printed by cJSON as before, so the body's bytes do not change either way.
 */

/* Canonical JSON's scanner: pos moves past one value; false when the text is not in cJSON's
 * printed form (which includes anything that is not JSON at all). */
typedef struct canon {
    const char *p;
    unsigned depth;
} canon_t;

static bool canon_value(canon_t *c);

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* A string as cJSON prints it: bytes from 0x20 up, '"' and '\\' and the five control characters
 * with a short escape escaped that way. (\u escapes, "\/" and raw control bytes are not.) */
static bool canon_string(canon_t *c)
{
    const char *p = c->p + 1; /* past the opening quote */
    for (;;) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"')
            break;
        if (ch < 0x20)
            return false; /* NUL (the end) and raw control bytes */
        if (ch == '\\') {
            char e = p[1];
            if (e != '"' && e != '\\' && e != 'b' && e != 'f' && e != 'n' && e != 'r' && e != 't')
                return false;
            p++;
        }
        p++;
    }
    c->p = p + 1;
    return true;
}

/* A number as cJSON prints it, and prints again the same: an integer of at most 15 digits, or a
 * plain decimal of at most 15 significant digits with no trailing zero after the point (never
 * "-0", "1.0", "1e5" or ".5"); a value from 0.1 up when it is below 1. */
static bool canon_number(canon_t *c)
{
    const char *p = c->p;
    if (*p == '-')
        p++;
    const char *int_start = p;
    if (*p == '0') {
        p++;
    } else {
        while (is_digit(*p))
            p++;
    }
    size_t int_digits = (size_t)(p - int_start);
    if (int_digits == 0 || is_digit(*p))
        return false; /* no digit, or a leading zero */
    size_t digits = int_digits;
    if (*p == '.') {
        const char *frac = ++p;
        while (is_digit(*p))
            p++;
        size_t frac_digits = (size_t)(p - frac);
        if (frac_digits == 0 || p[-1] == '0' || (*int_start == '0' && *frac == '0'))
            return false;
        digits += frac_digits;
    } else if (*int_start == '0' && c->p[0] == '-') {
        return false; /* -0 prints as 0 */
    }
    if (digits > 15 || *p == 'e' || *p == 'E')
        return false;
    c->p = p;
    return true;
}

static bool canon_literal(canon_t *c, const char *lit, size_t n)
{
    if (strncmp(c->p, lit, n) != 0)
        return false;
    c->p += n;
    return true;
}

/* An object or array: no blanks, members separated by single commas. The depth check (within
 * the limit add_json_member had) bounds the recursion. */
// NOLINTNEXTLINE(misc-no-recursion): bounded by FSA_LIMIT_JSON_DEPTH
static bool canon_container(canon_t *c, char close, bool object)
{
    if (++c->depth >= FSA_LIMIT_JSON_DEPTH)
        return false; /* the parsing path decides (and refuses what is too deep) */
    c->p++;
    if (*c->p == close) {
        c->p++;
        c->depth--;
        return true;
    }
    for (;;) {
        if (object) {
            if (*c->p != '"' || !canon_string(c) || *c->p != ':')
                return false;
            c->p++;
        }
        if (!canon_value(c))
            return false;
        if (*c->p == close)
            break;
        if (*c->p != ',')
            return false;
        c->p++;
    }
    c->p++;
    c->depth--;
    return true;
}

// NOLINTNEXTLINE(misc-no-recursion): bounded by FSA_LIMIT_JSON_DEPTH
static bool canon_value(canon_t *c)
{
    switch (*c->p) {
    case '{': return canon_container(c, '}', true);
    case '[': return canon_container(c, ']', false);
    case '"': return canon_string(c);
    case 't': return canon_literal(c, "true", 4);
    case 'f': return canon_literal(c, "false", 5);
    case 'n': return canon_literal(c, "null", 4);
    default: return *c->p == '-' || is_digit(*c->p) ? canon_number(c) : false;
    }
}

/* True when json is one JSON value exactly as cJSON prints it after parsing it; *len is then its
 * length. */
static bool canonical_json(const char *json, size_t *len)
{
    canon_t c = {json, 0};
    if (!canon_value(&c) || *c.p != '\0')
        return false;
    *len = (size_t)(c.p - json);
    return true;
}

/* The text of an op's payload in the body: *text is json itself when it is canonical, else
 * cJSON's print of its parse (malloc'ed into *printed). FSA_EINVAL when it is missing, too deep
 * or not JSON. */
static fsa_status_t payload_text(const char *json, const char **text, size_t *len, char **printed)
{
    *printed = NULL;
    if (json == NULL)
        return FSA_EINVAL;
    if (canonical_json(json, len)) {
        *text = json;
        return FSA_OK;
    }
    size_t n = strlen(json);
    if (fsa_codec_json_depth(json, n, FSA_LIMIT_JSON_DEPTH) > FSA_LIMIT_JSON_DEPTH)
        return FSA_EINVAL;
    unsigned long failures = fsa_alloc_failures();
    cJSON *v = cJSON_ParseWithLength(json, n);
    if (v == NULL)
        return fsa_alloc_failures() != failures ? FSA_ENOMEM : FSA_EINVAL;
    *printed = print_item(v);
    cJSON_Delete(v);
    if (*printed == NULL)
        return FSA_ENOMEM;
    *text = *printed;
    *len = strlen(*printed);
    return FSA_OK;
}

/* An op as the body carries it: its payload's text (NULL: none), and the bytes it can take. */
typedef struct push_op {
    const char *payload;
    size_t payload_len;
    char *printed; /* the payload's print when it was not canonical */
} push_op_t;

static bool op_has_payload(const fsa_op_t *op)
{
    return op->kind == FSA_OP_SET || op->kind == FSA_OP_MERGE || op->kind == FSA_OP_APPEND ||
           (op->kind == FSA_OP_CREATE && op->json != NULL);
}

/* The most an op's text can take: its strings escaped at 6 bytes a byte, its payload as is. */
static size_t push_op_bound(const fsa_op_t *op, const push_op_t *po)
{
    return 256 + po->payload_len +
           6 * (strnlen(op->op_id, sizeof op->op_id) + strnlen(op->id, sizeof op->id) +
                strnlen(op->group, sizeof op->group) + strnlen(op->field, sizeof op->field) +
                strnlen(op->from, sizeof op->from) + strnlen(op->to, sizeof op->to) +
                strnlen(op->key, sizeof op->key));
}

static void w_member_str(wbuf_t *w, const char *lit, size_t lit_len, const char *s, size_t max)
{
    w_put(w, lit, lit_len);
    w_strn(w, s, max);
}

#define W_STR(w, lit, s) w_member_str((w), (lit), sizeof(lit) - 1, (s), sizeof(s))

/* {"op_id","seq","at","kind","type","id","group"?, then the kind's members}: encode_op's order. */
static void encode_op(wbuf_t *w, const fsa_op_t *op, const push_op_t *po)
{
    W_STR(w, "{\"op_id\":", op->op_id);
    W_LIT(w, ",\"seq\":");
    w_int(w, op->seq);
    W_LIT(w, ",\"at\":");
    w_int(w, op->at_ms);
    W_LIT(w, ",\"kind\":");
    w_strn(w, fsa_op_kind_name(op->kind), 16);
    W_LIT(w, ",\"type\":");
    w_strn(w, fsa_type_name(op->type), 16);
    W_STR(w, ",\"id\":", op->id);
    if (op->group[0] != '\0')
        W_STR(w, ",\"group\":", op->group);
    switch (op->kind) {
    case FSA_OP_CREATE:
        if (po->payload != NULL)
            W_LIT(w, ",\"fields\":");
        break;
    case FSA_OP_SET:
        W_LIT(w, ",\"base_version\":");
        w_int(w, op->base_version);
        W_LIT(w, ",\"fields\":");
        break;
    case FSA_OP_MERGE:
        W_STR(w, ",\"field\":", op->field);
        W_LIT(w, ",\"patch\":");
        break;
    case FSA_OP_INCREMENT:
        W_STR(w, ",\"field\":", op->field);
        W_LIT(w, ",\"by\":");
        w_int(w, op->by);
        break;
    case FSA_OP_TRANSITION:
        W_STR(w, ",\"field\":", op->field);
        W_STR(w, ",\"from\":", op->from);
        W_STR(w, ",\"to\":", op->to);
        break;
    case FSA_OP_APPEND:
        W_STR(w, ",\"field\":", op->field);
        W_STR(w, ",\"key\":", op->key);
        if (op->max_len > 0) {
            W_LIT(w, ",\"max_len\":");
            w_int(w, op->max_len);
        }
        W_LIT(w, ",\"item\":");
        break;
    default: break;
    }
    if (po->payload != NULL)
        w_put(w, po->payload, po->payload_len);
    w->p[w->len++] = '}';
}

fsa_status_t fsa_codec_encode_push(const char *batch_id, const fsa_op_t *ops, size_t count,
                                   char **out, size_t *out_len)
{
    out_reset(out, out_len);
    if (batch_id == NULL || out == NULL || (ops == NULL && count > 0) ||
        !id_ok(batch_id, FSA_LIMIT_ID_BYTES))
        return FSA_EINVAL;
    if (count > FSA_LIMIT_BATCH_OPS)
        return FSA_ETOOLARGE;
    push_op_t *po = fsa_calloc(count > 0 ? count : 1, sizeof *po);
    if (po == NULL)
        return FSA_ENOMEM;
    fsa_status_t st = FSA_OK;
    size_t cap = 64 + 6 * strlen(batch_id);
    for (size_t i = 0; i < count && st == FSA_OK; i++) {
        const fsa_op_t *op = &ops[i];
        if ((unsigned)op->kind >= FSA__OP_COUNT || (unsigned)op->type >= FSA__TYPE_COUNT)
            st = FSA_EINVAL;
        else if (op_has_payload(op))
            st = payload_text(op->json, &po[i].payload, &po[i].payload_len, &po[i].printed);
        cap += push_op_bound(op, &po[i]) + 1;
    }
    wbuf_t w = {NULL, 0};
    if (st == FSA_OK) {
        w.p = fsa_malloc(cap);
        if (w.p == NULL)
            st = FSA_ENOMEM;
    }
    if (st == FSA_OK) {
        W_LIT(&w, "{\"batch_id\":");
        w_strn(&w, batch_id, FSA_LIMIT_ID_BYTES);
        W_LIT(&w, ",\"ops\":[");
        for (size_t i = 0; i < count; i++) {
            if (i > 0)
                w.p[w.len++] = ',';
            encode_op(&w, &ops[i], &po[i]);
        }
        W_LIT(&w, "]}");
        w.p[w.len] = '\0';
        if (w.len > FSA_LIMIT_BODY_BYTES)
            st = FSA_ETOOLARGE;
    }
    for (size_t i = 0; i < count; i++)
        fsa_free(po[i].printed);
    fsa_free(po);
    if (st != FSA_OK) {
        fsa_free(w.p);
        return st;
    }
    *out = w.p;
    if (out_len != NULL)
        *out_len = w.len;
    return FSA_OK;
}

/* Reads an answer's optional server_time. False when present but not an integer. */
static bool get_server_time(const cJSON *root, int64_t *out, int64_t absent)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "server_time");
    *out = absent;
    if (t == NULL)
        return true;
    return get_int(t, out);
}

static fsa_status_t decode_answer_root(const char *body, size_t len, cJSON **root)
{
    const char *why = NULL;
    *root = NULL;
    if (body == NULL)
        return FSA_EPROTO;
    parse_fail_t pf =
        parse_bounded(body, len, FSA_LIMIT_BODY_BYTES_MAX,
                      FSA_LIMIT_JSON_DEPTH + FSA_CODEC_ANSWER_ENVELOPE_DEPTH, len + 1, root, &why);
    if (pf == PARSE_NOMEM)
        return FSA_ENOMEM;
    if (pf != PARSE_OK)
        return FSA_EPROTO;
    if (!cJSON_IsObject(*root)) {
        cJSON_Delete(*root);
        *root = NULL;
        return FSA_EPROTO;
    }
    return FSA_OK;
}

/* Reads {"code","message"} of an answer; FSA_EPROTO when not that shape. */
/* The model's result struct holds what this codec reads into it. */
_Static_assert(sizeof(((fsa_op_result_t *)0)->code) == FSA_CODEC_CODE_BYTES &&
                   sizeof(((fsa_op_result_t *)0)->message) == FSA_CODEC_MESSAGE_BYTES,
               "fsa_op_result_t's code and message are the codec's sizes");

static fsa_status_t decode_error_object(const cJSON *e, char code[FSA_CODEC_CODE_BYTES],
                                        char message[FSA_CODEC_MESSAGE_BYTES])
{
    if (!cJSON_IsObject(e) || !get_str(e, "code", code, FSA_CODEC_CODE_BYTES) || code[0] == '\0')
        return FSA_EPROTO;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    message[0] = '\0';
    if (m != NULL) {
        if (!cJSON_IsString(m))
            return FSA_EPROTO;
        snprintf(message, FSA_CODEC_MESSAGE_BYTES, "%s", m->valuestring); /* cut, never overrun */
    }
    return FSA_OK;
}

static fsa_status_t decode_result(const cJSON *o, fsa_codec_result_t *r)
{
    char status[16];
    if (!cJSON_IsObject(o) || !get_str(o, "op_id", r->op_id, sizeof r->op_id) ||
        r->op_id[0] == '\0' || !get_str(o, "status", status, sizeof status) ||
        fsa_result_status_parse(status, &r->status) != FSA_OK)
        return FSA_EPROTO;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "version");
    if (v != NULL && (!get_int(v, &r->version) || r->version < 1))
        return FSA_EPROTO;
    if (r->status == FSA_RESULT_APPLIED && v == NULL)
        return FSA_EPROTO;
    if (r->status == FSA_RESULT_DUPLICATE) {
        if (!get_str(o, "original", status, sizeof status) ||
            fsa_result_status_parse(status, &r->original) != FSA_OK ||
            r->original == FSA_RESULT_DUPLICATE)
            return FSA_EPROTO;
    }
    const cJSON *cur = cJSON_GetObjectItemCaseSensitive(o, "current");
    if (cur != NULL && !cJSON_IsNull(cur)) {
        const cJSON *fields = cJSON_GetObjectItemCaseSensitive(cur, "fields");
        if (!cJSON_IsObject(cur) ||
            !get_int(cJSON_GetObjectItemCaseSensitive(cur, "version"), &r->current_version) ||
            r->current_version < 1 || !cJSON_IsObject(fields))
            return FSA_EPROTO;
        r->current_fields = print_item(fields);
        if (r->current_fields == NULL)
            return FSA_ENOMEM;
        r->has_current = true;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (e != NULL && decode_error_object(e, r->code, r->message) != FSA_OK)
        return FSA_EPROTO;
    if (r->status == FSA_RESULT_REJECTED && r->code[0] == '\0')
        return FSA_EPROTO;
    return FSA_OK;
}

/*
 * The answer to a push as the reference server writes it, read without a cJSON tree: no blanks,
 * {"results":[...] then "server_time"?}, each result {"op_id","status","version"?,"original"?} in
 * that order, strings without escapes, integers of at most 15 digits. That is every answer of a
 * drain with no conflict or rejection. An answer not of exactly that form (any other member, a
 * blank, an escape, a conflict's "current", an error, anything malformed) is not read here
 * (FAST_NO) and goes through the tree, which decides, so the two ways give the same answer.
 */
typedef struct fast_rd {
    const char *p, *end;
} fast_rd_t;

typedef enum fast { FAST_OK, FAST_NO, FAST_NOMEM } fast_t;

static bool fast_lit(fast_rd_t *r, const char *lit, size_t n)
{
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, lit, n) != 0)
        return false;
    r->p += n;
    return true;
}

#define FAST_LIT(r, lit) fast_lit((r), (lit), sizeof(lit) - 1)

/* A string of cap - 1 bytes at most, each from 0x20 up, no '\\' (copied into dst, may be NULL). */
static bool fast_str(fast_rd_t *r, char *dst, size_t cap)
{
    if (r->p >= r->end || *r->p != '"')
        return false;
    const char *s = ++r->p;
    while (r->p < r->end && *r->p != '"') {
        unsigned char c = (unsigned char)*r->p;
        if (c < 0x20 || c == '\\' || (size_t)(r->p - s) >= cap - 1)
            return false;
        r->p++;
    }
    if (r->p >= r->end)
        return false;
    size_t n = (size_t)(r->p - s);
    if (dst != NULL) {
        memcpy(dst, s, n);
        dst[n] = '\0';
    }
    r->p++;
    return true;
}

/* An integer of 1 to 15 digits, no leading zero (but "0"), '-' only when negative allows it. */
static bool fast_int(fast_rd_t *r, bool negative_ok, int64_t *out)
{
    bool neg = r->p < r->end && *r->p == '-' && negative_ok;
    if (neg)
        r->p++;
    const char *s = r->p;
    int64_t v = 0;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9' && r->p - s < 16) {
        v = v * 10 + (*r->p - '0');
        r->p++;
    }
    size_t n = (size_t)(r->p - s);
    if (n == 0 || n > 15 || (n > 1 && *s == '0') || (neg && v == 0))
        return false;
    /* What follows a number here is ',', '}' or ']': a '.', 'e' or 'E' goes to the tree. */
    if (r->p >= r->end || (*r->p != ',' && *r->p != '}' && *r->p != ']'))
        return false;
    *out = neg ? -v : v;
    return true;
}

/* One result (into *res when not NULL). */
static bool fast_result(fast_rd_t *r, fsa_codec_result_t *res)
{
    fsa_codec_result_t tmp;
    memset(&tmp, 0, sizeof tmp);
    fsa_codec_result_t *x = res != NULL ? res : &tmp;
    char status[16];
    if (res != NULL)
        memset(res, 0, sizeof *res);
    if (!FAST_LIT(r, "{\"op_id\":") || !fast_str(r, x->op_id, sizeof x->op_id) ||
        x->op_id[0] == '\0' || !FAST_LIT(r, ",\"status\":") ||
        !fast_str(r, status, sizeof status) ||
        fsa_result_status_parse(status, &x->status) != FSA_OK)
        return false;
    if (FAST_LIT(r, ",\"version\":") && (!fast_int(r, false, &x->version) || x->version < 1))
        return false;
    if (x->status == FSA_RESULT_APPLIED && x->version == 0)
        return false;
    if (x->status == FSA_RESULT_DUPLICATE) {
        if (!FAST_LIT(r, ",\"original\":") || !fast_str(r, status, sizeof status) ||
            fsa_result_status_parse(status, &x->original) != FSA_OK ||
            x->original == FSA_RESULT_DUPLICATE)
            return false;
    }
    /* A rejection has an error (the tree reads it); "current" and "error" go to the tree. */
    return x->status != FSA_RESULT_REJECTED && FAST_LIT(r, "}");
}

/* The whole answer; res NULL: only checks and counts into *n. */
static bool fast_results(const char *body, size_t len, fsa_codec_result_t *res, size_t *n,
                         int64_t *server_time)
{
    fast_rd_t r = {body, body + len};
    *n = 0;
    *server_time = 0;
    if (!FAST_LIT(&r, "{\"results\":["))
        return false;
    if (!FAST_LIT(&r, "]")) {
        do {
            if (*n >= ANSWER_MAX_RESULTS || !fast_result(&r, res != NULL ? &res[*n] : NULL))
                return false;
            (*n)++;
        } while (FAST_LIT(&r, ","));
        if (!FAST_LIT(&r, "]"))
            return false;
    }
    if (FAST_LIT(&r, ",\"server_time\":") && !fast_int(&r, true, server_time))
        return false;
    return FAST_LIT(&r, "}") && r.p == r.end;
}

static fast_t fast_decode_results(const char *body, size_t len, fsa_codec_result_t **out,
                                  size_t *count, int64_t *server_time_ms)
{
    size_t n = 0;
    int64_t t = 0;
    if (body == NULL || len > FSA_LIMIT_BODY_BYTES_MAX || !fast_results(body, len, NULL, &n, &t))
        return FAST_NO;
    fsa_codec_result_t *res = NULL;
    if (n > 0) {
        res = fsa_calloc(n, sizeof *res);
        if (res == NULL)
            return FAST_NOMEM;
        size_t again = 0;
        if (!fast_results(body, len, res, &again, &t) || again != n) {
            fsa_free(res); /* not reached: the same text reads the same */
            return FAST_NO;
        }
    }
    *out = res;
    *count = n;
    if (server_time_ms != NULL)
        *server_time_ms = t;
    return FAST_OK;
}

fsa_status_t fsa_codec_decode_results(const char *body, size_t len, fsa_codec_result_t **out,
                                      size_t *count, int64_t *server_time_ms)
{
    if (out != NULL)
        *out = NULL;
    if (count != NULL)
        *count = 0;
    if (server_time_ms != NULL)
        *server_time_ms = 0;
    if (out == NULL || count == NULL)
        return FSA_EINVAL;
    switch (fast_decode_results(body, len, out, count, server_time_ms)) {
    case FAST_OK: return FSA_OK;
    case FAST_NOMEM: return FSA_ENOMEM;
    default: break; /* the tree reads it */
    }
    cJSON *root = NULL;
    fsa_codec_result_t *res = NULL;
    size_t n = 0;
    int64_t t = 0;
    fsa_status_t st = decode_answer_root(body, len, &root);
    if (st != FSA_OK)
        return st;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "results");
    if (!cJSON_IsArray(arr) || !get_server_time(root, &t, 0)) {
        st = FSA_EPROTO;
        goto out;
    }
    size_t total = (size_t)cJSON_GetArraySize(arr);
    if (total > ANSWER_MAX_RESULTS) {
        st = FSA_EPROTO;
        goto out;
    }
    if (total > 0) {
        res = fsa_calloc(total, sizeof *res);
        if (res == NULL) {
            st = FSA_ENOMEM;
            goto out;
        }
    }
    /* n < total: never past res, even if cJSON's count and its list disagreed. */
    for (const cJSON *o = arr->child; o != NULL && n < total; o = o->next) {
        st = decode_result(o, &res[n]);
        n++;
        if (st != FSA_OK)
            goto out;
    }
out:
    cJSON_Delete(root);
    if (st != FSA_OK) {
        fsa_codec_results_free(res, n);
        return st;
    }
    *out = res;
    *count = n;
    if (server_time_ms != NULL)
        *server_time_ms = t;
    return FSA_OK;
}

/* ---- pull and entities ---- */

void fsa_codec_change_clear(fsa_codec_change_t *c)
{
    if (c == NULL)
        return;
    fsa_free(c->fields);
    memset(c, 0, sizeof *c);
}

void fsa_codec_pull_free(fsa_codec_pull_t *pull)
{
    if (pull == NULL)
        return;
    for (size_t i = 0; i < pull->count; i++)
        fsa_codec_change_clear(&pull->changes[i]);
    fsa_free(pull->changes);
    memset(pull, 0, sizeof *pull);
}

static fsa_status_t encode_change(const fsa_codec_change_t *c, cJSON *o)
{
    if ((unsigned)c->type >= FSA__TYPE_COUNT)
        return FSA_EINVAL;
    if (c->gone) {
        /* PROTOCOL.md section 4: an entity that left the scope, without fields. */
        if (cJSON_AddStringToObject(o, "type", fsa_type_name(c->type)) == NULL ||
            cJSON_AddStringToObject(o, "id", c->id) == NULL || !add_int(o, "version", c->version) ||
            cJSON_AddTrueToObject(o, "gone") == NULL)
            return FSA_ENOMEM;
        return FSA_OK;
    }
    if (!looks_like_object(c->fields))
        return FSA_EINVAL;
    if (cJSON_AddStringToObject(o, "type", fsa_type_name(c->type)) == NULL ||
        cJSON_AddStringToObject(o, "id", c->id) == NULL || !add_int(o, "version", c->version) ||
        !add_int(o, "mdtz", c->mdtz_ms) || cJSON_AddRawToObject(o, "fields", c->fields) == NULL)
        return FSA_ENOMEM;
    return FSA_OK;
}

fsa_status_t fsa_codec_encode_pull(const fsa_codec_pull_t *pull, char **out, size_t *out_len)
{
    out_reset(out, out_len);
    if (pull == NULL || out == NULL || (pull->changes == NULL && pull->count > 0))
        return FSA_EINVAL;
    fsa_status_t st = FSA_ENOMEM;
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = root != NULL ? cJSON_AddArrayToObject(root, "changes") : NULL;
    if (arr == NULL)
        goto out;
    for (size_t i = 0; i < pull->count; i++) {
        cJSON *o = cJSON_CreateObject();
        if (o == NULL || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            st = FSA_ENOMEM;
            goto out;
        }
        st = encode_change(&pull->changes[i], o);
        if (st != FSA_OK)
            goto out;
    }
    if (cJSON_AddStringToObject(root, "cursor", pull->cursor) == NULL ||
        cJSON_AddBoolToObject(root, "more", pull->more) == NULL ||
        !add_int(root, "server_time", pull->server_time_ms)) {
        st = FSA_ENOMEM;
        goto out;
    }
    st = finish(root, out, out_len);
out:
    cJSON_Delete(root);
    return st;
}

/* Reads {type, id, fields[, version, mdtz]}; need_meta requires version >= 1 and mdtz. */
static fsa_status_t decode_change(const cJSON *o, fsa_codec_change_t *c, bool need_meta)
{
    char type[16];
    const cJSON *fields = cJSON_GetObjectItemCaseSensitive(o, "fields");
    if (!cJSON_IsObject(o) || !get_str(o, "type", type, sizeof type) ||
        fsa_type_parse(type, &c->type) != FSA_OK || !get_str(o, "id", c->id, sizeof c->id) ||
        !id_ok(c->id, FSA_LIMIT_ID_BYTES))
        return FSA_EINVAL;
    /* A pull's "gone" change: type, id, version and nothing else. */
    if (need_meta && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "gone"))) {
        c->gone = true;
        return get_int(cJSON_GetObjectItemCaseSensitive(o, "version"), &c->version) &&
                       c->version >= 1
                   ? FSA_OK
                   : FSA_EINVAL;
    }
    if (!cJSON_IsObject(fields))
        return FSA_EINVAL;
    if (need_meta &&
        (!get_int(cJSON_GetObjectItemCaseSensitive(o, "version"), &c->version) || c->version < 1 ||
         !get_int(cJSON_GetObjectItemCaseSensitive(o, "mdtz"), &c->mdtz_ms)))
        return FSA_EINVAL;
    c->fields = print_item(fields);
    return c->fields != NULL ? FSA_OK : FSA_ENOMEM;
}

fsa_status_t fsa_codec_decode_pull(const char *body, size_t len, fsa_codec_pull_t *out)
{
    if (out == NULL)
        return FSA_EINVAL;
    memset(out, 0, sizeof *out);
    cJSON *root = NULL;
    fsa_status_t st = decode_answer_root(body, len, &root);
    if (st != FSA_OK)
        return st;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "changes");
    const cJSON *more = cJSON_GetObjectItemCaseSensitive(root, "more");
    if (!cJSON_IsArray(arr) || !get_str(root, "cursor", out->cursor, sizeof out->cursor) ||
        !cJSON_IsBool(more) || !get_server_time(root, &out->server_time_ms, 0)) {
        st = FSA_EPROTO;
        goto out;
    }
    out->more = cJSON_IsTrue(more);
    size_t total = (size_t)cJSON_GetArraySize(arr);
    if (total > ANSWER_MAX_CHANGES) {
        st = FSA_EPROTO;
        goto out;
    }
    if (total > 0) {
        out->changes = fsa_calloc(total, sizeof *out->changes);
        if (out->changes == NULL) {
            st = FSA_ENOMEM;
            goto out;
        }
    }
    for (const cJSON *o = arr->child; o != NULL && out->count < total; o = o->next) {
        st = decode_change(o, &out->changes[out->count], true);
        out->count++;
        if (st != FSA_OK) {
            if (st == FSA_EINVAL)
                st = FSA_EPROTO;
            goto out;
        }
    }
out:
    cJSON_Delete(root);
    if (st != FSA_OK)
        fsa_codec_pull_free(out);
    return st;
}

fsa_status_t fsa_codec_encode_entity(const fsa_codec_change_t *entity, int64_t server_time_ms,
                                     char **out, size_t *out_len)
{
    out_reset(out, out_len);
    if (entity == NULL || out == NULL)
        return FSA_EINVAL;
    cJSON *root = cJSON_CreateObject();
    if (root == NULL)
        return FSA_ENOMEM;
    fsa_status_t st = encode_change(entity, root);
    return finish_timed(root, st, server_time_ms, out, out_len);
}

fsa_status_t fsa_codec_decode_entity(const char *body, size_t len, fsa_codec_change_t *out,
                                     fsa_model_err_t *err)
{
    if (err != NULL)
        memset(err, 0, sizeof *err);
    if (out == NULL || (body == NULL && len > 0)) {
        set_err(err, "malformed", "no body");
        return FSA_EINVAL;
    }
    memset(out, 0, sizeof *out);
    cJSON *root = NULL;
    const char *why = NULL;
    parse_fail_t pf = parse_bounded(body != NULL ? body : "", len, FSA_LIMIT_BODY_BYTES,
                                    FSA_LIMIT_JSON_DEPTH + 1, FSA_LIMIT_JSON_VALUES, &root, &why);
    if (pf != PARSE_OK)
        return parse_status(pf, why, err);
    fsa_status_t st = decode_change(root, out, false);
    cJSON_Delete(root);
    if (st != FSA_OK) {
        fsa_codec_change_clear(out);
        set_err(err, st == FSA_ENOMEM ? "internal" : "malformed", "%s",
                st == FSA_ENOMEM ? "out of memory"
                                 : "body must be {\"type\": known type, \"id\": valid id, "
                                   "\"fields\": {...}}");
        return st;
    }
    out->version = 0;
    out->mdtz_ms = 0;
    return FSA_OK;
}

/* ---- errors ---- */

fsa_status_t fsa_codec_encode_error(const char *code, const char *message, int64_t server_time_ms,
                                    char **out, size_t *out_len)
{
    out_reset(out, out_len);
    if (code == NULL || code[0] == '\0' || out == NULL)
        return FSA_EINVAL;
    cJSON *root = cJSON_CreateObject();
    if (root == NULL)
        return FSA_ENOMEM;
    fsa_status_t st = add_error_object(root, code, message);
    return finish_timed(root, st, server_time_ms, out, out_len);
}

fsa_status_t fsa_codec_decode_error(const char *body, size_t len, fsa_model_err_t *err,
                                    int64_t *server_time_ms)
{
    if (server_time_ms != NULL)
        *server_time_ms = -1;
    if (err == NULL)
        return FSA_EINVAL;
    memset(err, 0, sizeof *err);
    cJSON *root = NULL;
    fsa_status_t st = decode_answer_root(body, len, &root);
    if (st != FSA_OK)
        return st;
    int64_t t = -1;
    st = decode_error_object(cJSON_GetObjectItemCaseSensitive(root, "error"), err->code,
                             err->message);
    if (st == FSA_OK && !get_server_time(root, &t, -1))
        st = FSA_EPROTO;
    cJSON_Delete(root);
    if (st != FSA_OK) {
        memset(err, 0, sizeof *err);
        return st;
    }
    if (server_time_ms != NULL)
        *server_time_ms = t;
    return FSA_OK;
}
