/* fieldsync: the JSON wire format (push bodies, per-op results, pull answers, errors) with cJSON.
 */
#include "sync/codec.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "port/alloc.h"
#include "port/jsonstr.h"
#include "sync/codec_json.h"

/* Integers travel as JSON numbers, which cJSON reads as doubles: only values a double holds
 * exactly are accepted, so a number never silently changes on its way through. */
#define JSON_INT_MAX 9007199254740991.0 /* 2^53 - 1: 2^53 + 1 reads as 2^53, a changed number */

#define ANSWER_MAX_RESULTS FSA_LIMIT_BATCH_OPS_MAX
#define ANSWER_MAX_CHANGES 100000

/* cJSON's type tests and count (codec_json.h). */
#define JSON_TYPE_TEST(name, t)                                                                    \
    bool name(const cJSON *item)                                                                   \
    {                                                                                              \
        return item != NULL && (item->type & 0xFF) == (t);                                         \
    }
JSON_TYPE_TEST(fsa__json_object, cJSON_Object)
JSON_TYPE_TEST(fsa__json_array, cJSON_Array)
JSON_TYPE_TEST(fsa__json_string, cJSON_String)
JSON_TYPE_TEST(fsa__json_number, cJSON_Number)
JSON_TYPE_TEST(fsa__json_null, cJSON_NULL)
JSON_TYPE_TEST(fsa__json_true, cJSON_True)

size_t fsa__json_count(const cJSON *array)
{
    size_t n = 0;
    for (const cJSON *c = array != NULL ? array->child : NULL; c != NULL; c = c->next)
        n++;
    return n;
}

/* A JSON boolean: what cJSON_IsBool answers. */
static bool json_bool(const cJSON *v)
{
    return v != NULL && ((v->type & 0xFF) == cJSON_True || (v->type & 0xFF) == cJSON_False);
}

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

/* cJSON's parse_hex4: a bad digit makes the whole escape 0. */
static unsigned hex4_cjson(const unsigned char *p)
{
    unsigned h = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return 0;
        h = (h << 4) | d;
    }
    return h;
}

/* What one scan of JSON text found: the deepest nesting, and a bound on the values. */
typedef struct json_scan {
    size_t deepest;
    size_t values;
    size_t nul_at; /* where the first NUL of a string is (\u0000, a \u escape cJSON reads as 0,
                      or the raw byte); SIZE_MAX: none */
} json_scan_t;

/*
 * The one scan behind fsa_codec_json_depth, fsa_codec_json_values and the parse's bounds: it reads
 * text without recursion and without parsing, skips strings (brackets and commas in them do not
 * count) and stops as soon as the nesting exceeds max_depth (deepest is then max_depth + 1) or
 * the values exceed max_values (values is then max_values + 1). Every value but the first follows
 * a ',' or is a container's first member (what follows a '[' or '{' but its closing bracket), so
 * 1 + commas + the containers that are not empty counts the values, object keys counted with their
 * values: the nodes a parser makes. Counting every '[' and '{' as a first member, as this did,
 * made "[]," two values in three bytes, and 1 MiB of fields could pass the answers' bound
 * (port/limits.h: two bytes a value at least).
 */
static json_scan_t json_scan(const char *text, size_t len, size_t max_depth, size_t max_values)
{
    json_scan_t r = {0, 1, SIZE_MAX};
    size_t depth = 0;
    bool in_string = false, opened = false; /* opened: a '[' or '{' and only whitespace since */
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (r.nul_at == SIZE_MAX &&
                (c == '\0' || (c == '\\' && i + 5 < len && text[i + 1] == 'u' &&
                               hex4_cjson((const unsigned char *)text + i + 2) == 0)))
                r.nul_at = i;
            if (c == '\\')
                i++; /* the escaped char cannot end the string */
            else if (c == '"')
                in_string = false;
            continue;
        }
        if ((unsigned char)c <= 32)
            continue; /* what cJSON and push_scan skip between tokens */
        if (opened) {
            opened = false;
            if (c != ']' && c != '}' && ++r.values > max_values)
                return r;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > r.deepest && ++r.deepest > max_depth)
                return r;
            opened = true;
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
        if (json_string(item) && strlen(item->valuestring) > FSA_LIMIT_STRING_BYTES)
            return false;
        if ((json_array(item) || json_object(item)) && !strings_within_limit(item->child))
            return false;
    }
    return true;
}

/* True when every number below item (and item itself) is finite. The recursion is bounded
 * because the depth was checked before parsing. */
// NOLINTNEXTLINE(misc-no-recursion): bounded by the depth parse_bounded checked first
static bool numbers_finite(const cJSON *item)
{
    for (; item != NULL; item = item->next) {
        if (json_number(item) && !isfinite(item->valuedouble))
            return false;
        if (item->child != NULL && !numbers_finite(item->child))
            return false;
    }
    return true;
}

/* PARSE_TOO_MANY: more values than the bound, which a smaller answer may keep within (the agent
 * asks for less); PARSE_TOO_LARGE: any other bound. */
typedef enum parse_fail {
    PARSE_OK,
    PARSE_TOO_LARGE,
    PARSE_TOO_MANY,
    PARSE_MALFORMED,
    PARSE_NOMEM
} parse_fail_t;

/* The status and err of a body that parse_bounded() refused. */
static fsa_status_t parse_status(parse_fail_t pf, const char *why, fsa_model_err_t *err)
{
    switch (pf) {
    case PARSE_TOO_LARGE:
    case PARSE_TOO_MANY: set_err(err, "too_large", "%s", why); return FSA_ETOOLARGE;
    case PARSE_NOMEM: set_err(err, "internal", "out of memory"); return FSA_ENOMEM;
    default: set_err(err, "malformed", "%s", why); return FSA_EINVAL;
    }
}

/*
 * Parses text[0..len) as exactly one JSON value within max_bytes, max_depth and the string limit.
 * *root is set only on PARSE_OK; the caller then owns it (one cJSON_Delete).
 */
/* What parse_bounded checks before it parses: the size, then the nesting and the values (*scan). */
static parse_fail_t bounds_check(const char *text, size_t len, size_t max_bytes, size_t max_depth,
                                 size_t max_values, json_scan_t *scan, const char **why)
{
    if (len > max_bytes) {
        *why = "body is over the size limit";
        return PARSE_TOO_LARGE;
    }
    /* Each parsed value costs a cJSON node (about 64 bytes), so a small body of "[0,0,...]"
     * would cost far more memory than its size: the values are counted, with the nesting, by
     * one scan before parsing. */
    *scan = json_scan(text, len, max_depth, max_values);
    if (scan->deepest > max_depth) {
        *why = "JSON nesting is over the depth limit";
        return PARSE_TOO_LARGE;
    }
    if (scan->values > max_values) {
        *why = "JSON has more values than the limit";
        return PARSE_TOO_MANY;
    }
    return PARSE_OK;
}

static parse_fail_t parse_bounded(const char *text, size_t len, size_t max_bytes, size_t max_depth,
                                  size_t max_values, cJSON **root, const char **why)
{
    *root = NULL;
    json_scan_t scan;
    parse_fail_t pf = bounds_check(text, len, max_bytes, max_depth, max_values, &scan, why);
    if (pf != PARSE_OK)
        return pf;
    const char *end = NULL;
    unsigned long failures = fsa_alloc_failures();
    cJSON *r = cJSON_ParseWithLengthOpts(text, len, &end, false);
    /* A NUL in a string of the value, which cJSON cuts the string at (an id "T1\u0000x" read as
     * "T1"), and a number out of a double's range, which it reads as infinity and prints as null
     * (a merge patch of 1e999 deleted what it meant to set): refused as JSON that cannot be kept
     * as it is, by both push decoders alike (scan_str, scan_num), before trailing bytes are. */
    if (r != NULL && (scan.nul_at < (size_t)(end - text) || !numbers_finite(r))) {
        cJSON_Delete(r);
        *why = "body is not valid JSON";
        return PARSE_MALFORMED;
    }
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
    case PARSE_TOO_LARGE:
    case PARSE_TOO_MANY: return FSA_ETOOLARGE;
    case PARSE_NOMEM: return FSA_ENOMEM;
    default: return FSA_EINVAL;
    }
}

static bool get_int(const cJSON *item, int64_t *out)
{
    if (!json_number(item))
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
    if (!json_string(s))
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

/* Prints item into a malloc'ed string of our own allocator. NULL on allocation failure. cJSON
 * prints a number with 15 significant digits when they read back within DBL_EPSILON, so a number
 * of 16 or 17 digits may come out one unit in the last place off (9007199254740991 as
 * 9007199254740990; 0.30000000000000004 as 0.3): known, not fixed (storage/model.c prints its own
 * numbers exactly; the codec would need the same printer on both sides). */
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
    if (v == NULL || (must_be_object && !json_object(v))) {
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
    if (!json_object(o)) {
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
    if (!json_string(kind) || !json_string(type) || !json_string(id)) {
        set_err(err, "malformed", "ops[%zu]: kind, type and id must be strings", idx);
        return FSA_EINVAL;
    }
    const cJSON *group = cJSON_GetObjectItemCaseSensitive(o, "group");
    if (group != NULL && !json_null(group) && !get_str(o, "group", op->group, sizeof op->group)) {
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

    /* A field name too long to be one is unknown_field; a missing one or not a string, a value
     * of the wrong type: invalid_value (PROTOCOL.md section 3). */
    if (op->kind != FSA_OP_CREATE && op->kind != FSA_OP_SET &&
        !take_str(o, "field", op->field, sizeof op->field,
                  json_string(cJSON_GetObjectItemCaseSensitive(o, "field")) ? "unknown_field"
                                                                            : "invalid_value",
                  out))
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
        if (ml != NULL && !json_null(ml) && (!get_int(ml, &op->max_len) || op->max_len < 0)) {
            set_err(&out->reject, "invalid_value",
                    "append op: max_len must be a non-negative integer");
            return FSA_OK;
        }
        return take_payload(o, "item", false, out);
    }
    default: set_err(&out->reject, "invalid_value", "unknown op kind"); return FSA_OK;
    }
}

/* Both push decoders' start: *err and *out zeroed; false (and the error) when there is nothing
 * to decode into or from. */
static bool push_args_ok(const char *body, size_t len, fsa_codec_push_t *out, fsa_model_err_t *err)
{
    if (err != NULL)
        memset(err, 0, sizeof *err);
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (out == NULL || (body == NULL && len > 0)) {
        set_err(err, "malformed", "no body");
        return false;
    }
    return true;
}

fsa_status_t fsa__codec_decode_push_tree(const char *body, size_t len, fsa_codec_push_t *out,
                                         fsa_model_err_t *err)
{
    if (!push_args_ok(body, len, out, err))
        return FSA_EINVAL;
    cJSON *root = NULL;
    const char *why = NULL;
    fsa_status_t st = FSA_OK;
    parse_fail_t pf = parse_bounded(body != NULL ? body : "", len, FSA_LIMIT_BODY_BYTES,
                                    FSA_LIMIT_JSON_DEPTH + FSA_CODEC_PUSH_ENVELOPE_DEPTH,
                                    FSA_LIMIT_JSON_VALUES, &root, &why);
    if (pf != PARSE_OK)
        return parse_status(pf, why, err);
    const cJSON *ops = cJSON_GetObjectItemCaseSensitive(root, "ops");
    if (!json_object(root) || !get_str(root, "batch_id", out->batch_id, sizeof out->batch_id) ||
        !json_array(ops)) {
        set_err(err, "malformed", "body must be {\"batch_id\": string, \"ops\": [...]}");
        st = FSA_EINVAL;
        goto out;
    }
    size_t n = fsa__json_count(ops);
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

/* ---- push: the decoder without a tree ----
 *
 * fsa_codec_decode_push reads the body in one pass that accepts exactly what the installed cJSON
 * (Debian's 1.7.15) parses (its lenient numbers, strtod over the whole run of [0-9+-eE.]; every
 * byte up to 32 as whitespace; a \u escape with a bad hex digit read as U+0000; a leading UTF-8
 * BOM) and notes where the members it needs are: the root's first "batch_id" and "ops", and
 * each op object's first member of each name it knows (cJSON_GetObjectItemCaseSensitive finds
 * the first). Nothing else is kept: no tree.
 * A payload (fields, patch, item) is copied from the body when its text is byte for byte what
 * cJSON prints for it (compact, strings escaped as cJSON escapes them, numbers as cJSON prints
 * them), which is the text the tree decoder made by parsing and printing it; any other payload is
 * parsed and printed by cJSON, as before. So the answer, error for error and op for op, is
 * fsa__codec_decode_push_tree's: tests/sync/test_codec_push.c and tests/fuzz/fuzz_codec_push.c
 * compare the two, and tell when a cJSON upgrade changes what it accepts.
 */

typedef enum jv_kind {
    JV_NONE,
    JV_STRING,
    JV_NUMBER,
    JV_OBJECT,
    JV_ARRAY,
    JV_TRUE,
    JV_FALSE,
    JV_NULL
} jv_kind_t;

/* A value noted in the body: where its text is, what it is. */
typedef struct jv {
    uint32_t off, len;
    uint8_t kind; /* jv_kind_t */
    bool canon;   /* the text is what cJSON prints for the value (payloads only) */
    double num;   /* a number's value, as cJSON reads it */
} jv_t;

enum {
    M_OP_ID,
    M_SEQ,
    M_AT,
    M_KIND,
    M_TYPE,
    M_ID,
    M_GROUP,
    M_FIELD,
    M_BASE_VERSION,
    M_FIELDS,
    M_PATCH,
    M_BY,
    M_FROM,
    M_TO,
    M_KEY,
    M_MAX_LEN,
    M_ITEM,
    M_COUNT,
    M_NONE = M_COUNT
};

static const unsigned char member_lens[M_COUNT] = {5, 3, 2, 4, 4, 2, 5, 5, 12,
                                                   6, 5, 2, 4, 2, 3, 7, 4};
static const char *const member_names[M_COUNT] = {
    "op_id",  "seq",   "at", "kind", "type", "id",  "group",   "field", "base_version",
    "fields", "patch", "by", "from", "to",   "key", "max_len", "item"};

/* One element of "ops": the element itself and its members by name. */
typedef struct pop {
    jv_t self;
    jv_t m[M_COUNT];
} pop_t;

enum { CTX_OTHER, CTX_ROOT, CTX_OPS, CTX_OP };

typedef struct pframe {
    bool obj;
    uint8_t ctx;
    uint32_t op; /* CTX_OP: which element of ops */
    jv_t *slot;  /* where this container is noted; NULL: nowhere */
} pframe_t;

typedef struct pscan {
    const unsigned char *b, *end;
    bool too_long; /* a string or key decodes to more than FSA_LIMIT_STRING_BYTES */
    bool canon;    /* the payload being read is still what cJSON prints */
    jv_t root, batch, ops;
    pop_t *pops; /* the first cap elements of ops (at most FSA_LIMIT_BATCH_OPS) */
    size_t cap, nops;
    size_t values; /* as json_scan counts them: 1 + commas + containers' first members */
} pscan_t;

static const char lower_hex[] = "0123456789abcdef";

/* The \u escape at p, as cJSON's utf16_literal_to_utf8 reads it (end: the closing quote): its
 * length in the text (6, or 12 for a surrogate pair; 0 when cJSON refuses it) and *cp. */
static unsigned u_escape(const unsigned char *p, const unsigned char *end, unsigned long *cp)
{
    if (end - p < 6)
        return 0;
    unsigned first = hex4_cjson(p + 2);
    if (first >= 0xDC00 && first <= 0xDFFF)
        return 0;
    if (first >= 0xD800 && first <= 0xDBFF) {
        const unsigned char *q = p + 6;
        if (end - q < 6 || q[0] != '\\' || q[1] != 'u')
            return 0;
        unsigned second = hex4_cjson(q + 2);
        if (second < 0xDC00 || second > 0xDFFF)
            return 0;
        *cp = 0x10000 + (((unsigned long)(first & 0x3FF) << 10) | (second & 0x3FF));
        return 12;
    }
    *cp = first;
    return 6;
}

static unsigned utf8_bytes(unsigned long cp)
{
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

/* True when a \u escape of cp (6 chars at p) is what cJSON prints for cp: a control char with no
 * short escape, in four lowercase hex digits. */
static bool u_escape_canon(const unsigned char *p, unsigned long cp)
{
    return cp > 0 && cp < 0x20 && cp != '\b' && cp != '\f' && cp != '\n' && cp != '\r' &&
           cp != '\t' && p[2] == '0' && p[3] == '0' && p[4] == (unsigned char)lower_hex[cp >> 4] &&
           p[5] == (unsigned char)lower_hex[cp & 15];
}

/* The first byte from p that is a quote, a backslash or a control char (end if none): eight bytes
 * at a time (a word has such a byte when one of the three tests below sets its top bit). */
static const unsigned char *plain_run(const unsigned char *p, const unsigned char *end)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, sizeof w);
        uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
        uint64_t hit = ((w - ones * 0x20) | (q - ones) | (b - ones)) & ~w & highs;
        if (hit != 0) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            /* The lowest flagged byte is a true one (a borrow only flags bytes above it). */
            return p + (__builtin_ctzll(hit) >> 3);
#else
            break;
#endif
        }
        p += 8;
    }
    while (p < end && *p != '"' && *p != '\\' && *p >= 0x20)
        p++;
    return p;
}

/*
 * Scans the string whose opening quote is at *pp as cJSON's parse_string does, leaving *pp after
 * its closing quote. False when cJSON refuses it, and when it holds a NUL (parse_bounded says
 * why). *len: its decoded bytes; *canon cleared when the text is not what cJSON prints.
 */
static bool scan_str(const unsigned char **pp, const unsigned char *end, size_t *len, bool *canon,
                     bool *plain)
{
    const unsigned char *start = *pp + 1, *q = plain_run(*pp + 1, end);
    if (q < end && *q == '"') {
        *len = (size_t)(q - start);
        *pp = q + 1;
        *plain = true;
        return true;
    }
    *plain = false;
    /* cJSON finds the end first (a backslash hides the next char), then decodes up to it. */
    while (q < end && *q != '"') {
        if (*q == '\\') {
            if (q + 1 >= end)
                return false;
            q++;
        }
        q++;
    }
    if (q >= end)
        return false;
    size_t n = 0;
    for (const unsigned char *p = start; p < q;) {
        if (*p != '\\') {
            if (*p == 0)
                return false; /* a NUL: refused (parse_bounded) */
            if (*p < 0x20)
                *canon = false;
            n++;
            p++;
            continue;
        }
        unsigned char e = p[1];
        unsigned long cp = 0;
        size_t bytes = 1;
        if (e == 'u') {
            unsigned k = u_escape(p, q, &cp);
            if (k == 0 || cp == 0)
                return false; /* cJSON refuses it, or reads a NUL (refused: parse_bounded) */
            if (k != 6 || !u_escape_canon(p, cp))
                *canon = false;
            bytes = utf8_bytes(cp);
            p += k;
        } else if (e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't' || e == '"' ||
                   e == '\\' || e == '/') {
            if (e == '/')
                *canon = false; /* cJSON prints '/' as it is */
            p += 2;
        } else {
            return false;
        }
        n += bytes;
    }
    *len = n;
    *pp = q + 1;
    return true;
}

/* Decodes the string text[0..close) (text at its opening quote, close its closing quote, both
 * checked by scan_str) as cJSON does, into dst (cap bytes, cut at cap - 1 and at the first NUL).
 * Returns the decoded length before the first NUL. */
static size_t decode_str(const unsigned char *text, const unsigned char *close, char *dst,
                         size_t cap)
{
    size_t n = 0, w = 0;
    size_t raw = (size_t)(close - text - 1);
    if (memchr(text + 1, '\\', raw) == NULL && memchr(text + 1, '\0', raw) == NULL) {
        w = raw < cap - 1 ? raw : cap - 1; /* the usual string: its text */
        memcpy(dst, text + 1, w);
        dst[w] = '\0';
        return raw;
    }
    char tmp[4];
    for (const unsigned char *p = text + 1; p < close;) {
        size_t k = 1;
        if (*p != '\\') {
            tmp[0] = (char)*p++;
        } else {
            unsigned char e = p[1];
            unsigned long cp = 0;
            if (e == 'u') {
                p += u_escape(p, close, &cp);
                k = utf8_bytes(cp);
                static const unsigned char mark[5] = {0, 0, 0xC0, 0xE0, 0xF0};
                for (size_t i = k - 1; i > 0; i--) {
                    tmp[i] = (char)((cp | 0x80) & 0xBF);
                    cp >>= 6;
                }
                tmp[0] = (char)(k > 1 ? (cp | mark[k]) & 0xFF : cp & 0x7F);
            } else {
                static const char short_escape[][2] = {
                    {'b', '\b'}, {'f', '\f'}, {'n', '\n'}, {'r', '\r'}, {'t', '\t'}};
                tmp[0] = (char)e; /* '"', '\\' and '/' stand for themselves */
                for (size_t i = 0; i < sizeof short_escape / sizeof short_escape[0]; i++) {
                    if (short_escape[i][0] == (char)e)
                        tmp[0] = short_escape[i][1];
                }
                p += 2;
            }
        }
        for (size_t i = 0; i < k; i++) {
            if (tmp[i] == '\0') {
                dst[w] = '\0';
                return n;
            }
            if (w + 1 < cap)
                dst[w++] = tmp[i];
            n++;
        }
    }
    dst[w] = '\0';
    return n;
}

static bool num_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || c == '+' || c == '-' || c == 'e' || c == 'E' || c == '.';
}

/*
 * The number at p as cJSON's parse_number reads it (Debian's 1.7.15 with the fix of
 * CVE-2023-26819): strtod over a copy of the whole run of the chars [0-9+-eE.] from p. Returns
 * the length strtod took (0: cJSON refuses it; SIZE_MAX: out of memory for a long run's copy),
 * *value its value and *canon whether the text is what cJSON prints for that value.
 */
static size_t scan_num(const unsigned char *p, const unsigned char *end, double *value, bool *canon)
{
    const unsigned char *d = p + (*p == '-' ? 1 : 0), *q = d;
    int64_t v = 0;
    while (q < end && q - d < 16 && *q >= '0' && *q <= '9')
        v = v * 10 + (*q++ - '0');
    if (q > d && q - d <= 15 && (q == end || !num_char(*q))) {
        /* An integer strtod reads exactly; cJSON prints it back as it is unless it has a
         * leading zero or is -0. */
        *value = d != p ? -(double)v : (double)v;
        *canon = (*d != '0' || q - d == 1) && !(d != p && v == 0);
        return (size_t)(q - p);
    }
    size_t n = 0;
    while (p + n < end && num_char(p[n]))
        n++;
    char small[128];
    char *buf = n < sizeof small ? small : fsa_malloc(n + 1);
    if (buf == NULL)
        return SIZE_MAX;
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *after = NULL;
    double x = strtod(buf, &after);
    size_t taken = (size_t)(after - buf);
    if (taken == 0 || !isfinite(x)) { /* out of range: refused (parse_bounded) */
        if (buf != small)
            fsa_free(buf);
        return 0;
    }
    *value = x;
    /* cJSON's print_number: %1.15g unless it does not read back (within DBL_EPSILON), then
     * %1.17g. -0 is left to cJSON. */
    if (x == 0 && signbit(x)) {
        *canon = false;
    } else {
        char out[32];
        snprintf(out, sizeof out, "%1.15g", x);
        double back = strtod(out, NULL);
        double big = fabs(back) > fabs(x) ? fabs(back) : fabs(x);
        if (!(fabs(back - x) <= big * DBL_EPSILON))
            snprintf(out, sizeof out, "%1.17g", x);
        *canon = strlen(out) == taken && memcmp(out, buf, taken) == 0;
    }
    if (buf != small)
        fsa_free(buf);
    return taken;
}

/* The member name at key (its opening quote; close its closing quote), if it is one of an op's. */
static int member_of(const unsigned char *key, const unsigned char *close, bool plain)
{
    char name[16];
    size_t n;
    if (plain) {
        n = (size_t)(close - key - 1);
        if (n >= sizeof name)
            return M_NONE;
        memcpy(name, key + 1, n);
        name[n] = '\0';
    } else if ((n = decode_str(key, close, name, sizeof name)) >= sizeof name) {
        return M_NONE;
    }
    int m;
    switch (name[0]) { /* the first char and the length tell the names apart */
    case 'o': m = M_OP_ID; break;
    case 's': m = M_SEQ; break;
    case 'a': m = M_AT; break;
    case 'k': m = n == 4 ? M_KIND : M_KEY; break;
    case 't': m = n == 4 ? M_TYPE : M_TO; break;
    case 'i': m = n == 2 ? M_ID : M_ITEM; break;
    case 'g': m = M_GROUP; break;
    case 'f': m = n == 5 ? M_FIELD : n == 6 ? M_FIELDS : M_FROM; break;
    case 'b': m = n == 2 ? M_BY : M_BASE_VERSION; break;
    case 'p': m = M_PATCH; break;
    case 'm': m = M_MAX_LEN; break;
    default: return M_NONE;
    }
    return n == member_lens[m] && memcmp(name, member_names[m], n) == 0 ? m : M_NONE;
}

static bool root_member(const unsigned char *key, const unsigned char *close, bool plain,
                        const char *want)
{
    char name[16];
    if (plain) {
        size_t n = (size_t)(close - key - 1);
        return n == strlen(want) && memcmp(key + 1, want, n) == 0;
    }
    return decode_str(key, close, name, sizeof name) < sizeof name && strcmp(name, want) == 0;
}

/* PS_DEPTH and PS_VALUES: over a bound where json_scan would stop (the text before is valid). */
typedef enum pscan_fail {
    PS_OK,
    PS_SYNTAX,
    PS_TRAILING,
    PS_DEPTH,
    PS_VALUES,
    PS_NOMEM
} pscan_fail_t;

#define PS_MAX_DEPTH (FSA_LIMIT_JSON_DEPTH + FSA_CODEC_PUSH_ENVELOPE_DEPTH)

/* Room for element i of ops (i < FSA_LIMIT_BATCH_OPS), zeroed; false when out of memory. The
 * first guess is an op per 128 bytes of body (a real op is longer). */
static bool pops_room(pscan_t *s, size_t i)
{
    if (i >= s->cap) {
        size_t guess = (size_t)(s->end - s->b) / 128;
        size_t ncap = s->cap == 0 ? (guess > 64 ? guess : 64) : s->cap * 2;
        if (ncap > FSA_LIMIT_BATCH_OPS)
            ncap = FSA_LIMIT_BATCH_OPS;
        pop_t *np = fsa_realloc(s->pops, ncap * sizeof *np);
        if (np == NULL)
            return false;
        s->pops = np;
        s->cap = ncap;
    }
    memset(&s->pops[i], 0, sizeof s->pops[i]);
    return true;
}

static void note_begin(jv_t *slot, const unsigned char *b, const unsigned char *p, jv_kind_t kind)
{
    if (slot != NULL) {
        slot->off = (uint32_t)(p - b);
        slot->kind = (uint8_t)kind;
    }
}

static void note_end(jv_t *slot, const unsigned char *b, const unsigned char *after, bool canon)
{
    if (slot != NULL) {
        slot->len = (uint32_t)(after - b) - slot->off;
        slot->canon = canon;
    }
}

/* A member's name at *pp (in the object top): *pp moved past it; where its value is to be noted
 * (*pending: a member of the root or of an op that is read, else NULL) and in which context. */
static pscan_fail_t scan_key(pscan_t *s, const pframe_t *top, const unsigned char **pp,
                             jv_t **pending, uint8_t *pending_ctx)
{
    const unsigned char *p = *pp;
    if (*p != '"')
        return PS_SYNTAX;
    const unsigned char *key = p;
    size_t len = 0;
    bool canon = true, plain = false; /* plain: the key is its own text */
    if (!scan_str(&p, s->end, &len, &canon, &plain))
        return PS_SYNTAX;
    *pp = p;
    s->too_long = s->too_long || len > FSA_LIMIT_STRING_BYTES;
    s->canon = s->canon && canon;
    *pending = NULL;
    *pending_ctx = CTX_OTHER;
    if (top == NULL)
        return PS_SYNTAX; /* cannot happen: a key is inside an object */
    if (top->ctx == CTX_ROOT) {
        if (s->batch.kind == JV_NONE && root_member(key, p - 1, plain, "batch_id")) {
            *pending = &s->batch;
        } else if (s->ops.kind == JV_NONE && root_member(key, p - 1, plain, "ops")) {
            *pending = &s->ops;
            *pending_ctx = CTX_OPS;
        }
    } else if (top->ctx == CTX_OP) {
        int m = member_of(key, p - 1, plain);
        if (m != M_NONE && s->pops[top->op].m[m].kind == JV_NONE) {
            *pending = &s->pops[top->op].m[m];
            s->canon = true;
        }
    }
    return PS_OK;
}

/* An element of the array top begins: an element of ops is noted (its op made room for), any
 * other nowhere. False without memory. */
static bool array_element(pscan_t *s, const pframe_t *top, jv_t **pending, uint8_t *pending_ctx,
                          uint32_t *pending_op)
{
    *pending = NULL;
    *pending_ctx = CTX_OTHER;
    if (top->ctx != CTX_OPS)
        return true;
    size_t i = s->nops++;
    /* Growing pops moves it: no frame points into it here (depth 2). */
    if (i < FSA_LIMIT_BATCH_OPS && !pops_room(s, i))
        return false;
    if (i < s->cap) {
        *pending = &s->pops[i].self;
        *pending_ctx = CTX_OP;
        *pending_op = (uint32_t)i;
    }
    return true;
}

/* A scalar at *pp (null, false, true, a string or a number): its kind, *pp moved past it, a
 * number's value noted in slot (may be NULL). */
static pscan_fail_t scan_scalar(pscan_t *s, const unsigned char **pp, jv_t *slot, jv_kind_t *kind)
{
    const unsigned char *p = *pp, *end = s->end;
    unsigned char c = *p;
    size_t avail = (size_t)(end - p);
    if (avail >= 4 && memcmp(p, "null", 4) == 0) {
        *kind = JV_NULL;
        p += 4;
    } else if (avail >= 5 && memcmp(p, "false", 5) == 0) {
        *kind = JV_FALSE;
        p += 5;
    } else if (avail >= 4 && memcmp(p, "true", 4) == 0) {
        *kind = JV_TRUE;
        p += 4;
    } else if (c == '"') {
        size_t len = 0;
        bool canon = true, plain = false;
        if (!scan_str(&p, end, &len, &canon, &plain))
            return PS_SYNTAX;
        s->too_long = s->too_long || len > FSA_LIMIT_STRING_BYTES;
        s->canon = s->canon && canon;
        *kind = JV_STRING;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        double v = 0;
        bool canon = true;
        size_t n = scan_num(p, end, &v, &canon);
        if (n == SIZE_MAX)
            return PS_NOMEM;
        if (n == 0)
            return PS_SYNTAX;
        p += n;
        s->canon = s->canon && canon;
        *kind = JV_NUMBER;
        if (slot != NULL)
            slot->num = v;
    } else {
        return PS_SYNTAX;
    }
    *pp = p;
    return PS_OK;
}

/* A container opens at p ('{' or '['): a frame pushed on st (*depth deep), the container noted in
 * slot (may be NULL), and read as the root, ops or an op when its context (ctx, op) says so. Its
 * first member is counted where it starts (push_scan), as json_scan counts it. */
static pscan_fail_t open_container(pscan_t *s, pframe_t *st, size_t *depth, jv_t *slot,
                                   const unsigned char *p, uint8_t ctx, uint32_t op)
{
    if (*depth == PS_MAX_DEPTH)
        return PS_DEPTH;
    bool obj = *p == '{';
    note_begin(slot, s->b, p, obj ? JV_OBJECT : JV_ARRAY);
    pframe_t *f = &st[(*depth)++];
    f->obj = obj;
    f->ctx = CTX_OTHER;
    f->op = 0;
    f->slot = slot;
    if (slot != NULL &&
        ((ctx == CTX_OP && obj) || (ctx == CTX_ROOT && obj) || (ctx == CTX_OPS && !obj))) {
        f->ctx = ctx;
        f->op = op;
    }
    return PS_OK;
}

/* The one pass over the body (see above). */
static pscan_fail_t push_scan(pscan_t *s)
{
    const unsigned char *b = s->b, *p = b, *end = s->end;
    if (end - b >= 5 && memcmp(b, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    pframe_t st[PS_MAX_DEPTH];
    size_t depth = 0;
    enum { W_VALUE, W_VALUE_OR_CLOSE, W_KEY, W_KEY_OR_CLOSE, W_COLON, W_NEXT } want = W_VALUE;
    jv_t *pending = &s->root; /* where the next value is noted */
    uint8_t pending_ctx = CTX_ROOT;
    uint32_t pending_op = 0;
    for (;;) {
        const unsigned char *ws = p;
        while (p < end && *p <= 32)
            p++;
        if (p != ws && depth >= 4)
            s->canon = false;
        if (p == end)
            return PS_SYNTAX;
        unsigned char c = *p;
        pframe_t *top = depth > 0 ? &st[depth - 1] : NULL;
        switch (want) {
        case W_KEY_OR_CLOSE:
            if (c == '}')
                goto close;
            if (++s->values > FSA_LIMIT_JSON_VALUES) /* a first member */
                return PS_VALUES;
            __attribute__((fallthrough));
        case W_KEY: {
            pscan_fail_t f = scan_key(s, top, &p, &pending, &pending_ctx);
            if (f != PS_OK)
                return f;
            want = W_COLON;
            continue;
        }
        case W_COLON:
            if (c != ':')
                return PS_SYNTAX;
            p++;
            want = W_VALUE;
            continue;
        case W_VALUE_OR_CLOSE:
            if (c == ']')
                goto close;
            if (++s->values > FSA_LIMIT_JSON_VALUES) /* a first member */
                return PS_VALUES;
            __attribute__((fallthrough));
        case W_VALUE: {
            if (top != NULL && !top->obj &&
                !array_element(s, top, &pending, &pending_ctx, &pending_op))
                return PS_NOMEM;
            jv_t *slot = pending;
            pending = NULL;
            if (c == '{' || c == '[') {
                pscan_fail_t f = open_container(s, st, &depth, slot, p, pending_ctx, pending_op);
                if (f != PS_OK)
                    return f;
                p++;
                want = c == '{' ? W_KEY_OR_CLOSE : W_VALUE_OR_CLOSE;
                continue;
            }
            jv_kind_t kind = JV_NONE;
            const unsigned char *at = p;
            pscan_fail_t f = scan_scalar(s, &p, slot, &kind);
            if (f != PS_OK)
                return f;
            note_begin(slot, b, at, kind);
            note_end(slot, b, p, s->canon);
            break;
        }
        default: /* W_NEXT */
            if (c == ',') {
                if (++s->values > FSA_LIMIT_JSON_VALUES)
                    return PS_VALUES;
                p++;
                want = top->obj ? W_KEY : W_VALUE;
                continue;
            }
            if (c != (top->obj ? '}' : ']'))
                return PS_SYNTAX;
            goto close;
        }
        /* a value ended */
        if (depth == 0)
            break;
        want = W_NEXT;
        continue;
    close:
        p++;
        depth--;
        note_end(st[depth].slot, b, p, s->canon);
        if (depth == 0)
            break;
        want = W_NEXT;
    }
    for (; p < end; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return PS_TRAILING;
    }
    return PS_OK;
}

static const unsigned char *jv_text(const pscan_t *s, const jv_t *v)
{
    return s->b + v->off;
}

/* get_str on a noted member: a string whose decoded length is under cap, into dst. */
static bool jv_str(const pscan_t *s, const jv_t *v, char *dst, size_t cap)
{
    dst[0] = '\0';
    if (v->kind != JV_STRING)
        return false;
    const unsigned char *t = jv_text(s, v);
    if (decode_str(t, t + v->len - 1, dst, cap) < cap)
        return true;
    dst[0] = '\0';
    return false;
}

/* get_int on a noted member. */
static bool jv_int(const jv_t *v, int64_t *out)
{
    if (v->kind != JV_NUMBER)
        return false;
    double d = v->num;
    if (!isfinite(d) || d > JSON_INT_MAX || d < -JSON_INT_MAX || (double)(int64_t)d != d)
        return false;
    *out = (int64_t)d;
    return true;
}

/* take_payload on a noted member. */
static fsa_status_t jv_payload(const pscan_t *s, const jv_t *v, const char *name,
                               bool must_be_object, fsa_codec_op_t *out)
{
    if (v->kind == JV_NONE || (must_be_object && v->kind != JV_OBJECT)) {
        set_err(&out->reject, "invalid_value", "%s op: \"%s\" must be %s",
                fsa_op_kind_name(out->op.kind), name, must_be_object ? "an object" : "present");
        return FSA_OK;
    }
    const char *text = (const char *)jv_text(s, v);
    if (v->canon) {
        out->op.json = fsa_malloc((size_t)v->len + 1);
        if (out->op.json == NULL)
            return FSA_ENOMEM;
        memcpy(out->op.json, text, v->len);
        out->op.json[v->len] = '\0';
        return FSA_OK;
    }
    cJSON *tree = cJSON_ParseWithLengthOpts(text, v->len, NULL, false);
    if (tree == NULL)
        return FSA_ENOMEM; /* the scan accepted the text: only an allocation can have failed */
    out->op.json = print_item(tree);
    cJSON_Delete(tree);
    return out->op.json != NULL ? FSA_OK : FSA_ENOMEM;
}

static bool jv_take_str(const pscan_t *s, const jv_t *v, const char *name, char *dst, size_t cap,
                        const char *code, fsa_codec_op_t *out)
{
    if (jv_str(s, v, dst, cap))
        return true;
    set_err(&out->reject, code, "%s op: \"%s\" must be a string of at most %zu bytes",
            fsa_op_kind_name(out->op.kind), name, cap - 1);
    return false;
}

/* decode_op on a noted element of ops. */
static fsa_status_t decode_noted_op(const pscan_t *s, const pop_t *o, size_t idx,
                                    fsa_codec_op_t *out, fsa_model_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (o->self.kind != JV_OBJECT) {
        set_err(err, "malformed", "ops[%zu] is not an object", idx);
        return FSA_EINVAL;
    }
    fsa_op_t *op = &out->op;
    if (!jv_str(s, &o->m[M_OP_ID], op->op_id, sizeof op->op_id) ||
        !id_ok(op->op_id, FSA_OP_ID_BYTES - 1)) {
        set_err(err, "malformed", "ops[%zu]: op_id must be 1..36 bytes of [A-Za-z0-9._:-]", idx);
        return FSA_EINVAL;
    }
    if (!jv_int(&o->m[M_SEQ], &op->seq) || !jv_int(&o->m[M_AT], &op->at_ms)) {
        set_err(err, "malformed", "ops[%zu]: seq and at must be integers", idx);
        return FSA_EINVAL;
    }
    if (o->m[M_KIND].kind != JV_STRING || o->m[M_TYPE].kind != JV_STRING ||
        o->m[M_ID].kind != JV_STRING) {
        set_err(err, "malformed", "ops[%zu]: kind, type and id must be strings", idx);
        return FSA_EINVAL;
    }
    const jv_t *group = &o->m[M_GROUP];
    if (group->kind != JV_NONE && group->kind != JV_NULL &&
        !jv_str(s, group, op->group, sizeof op->group)) {
        set_err(err, "malformed", "ops[%zu]: group must be a string of at most %d bytes", idx,
                FSA_LIMIT_ID_BYTES);
        return FSA_EINVAL;
    }

    char name[80];
    const unsigned char *t = jv_text(s, &o->m[M_KIND]);
    size_t n = decode_str(t, t + o->m[M_KIND].len - 1, name, sizeof name);
    if (n >= sizeof name || fsa_op_kind_parse(name, &op->kind) != FSA_OK) {
        set_err(&out->reject, "invalid_value", "unknown op kind \"%.64s\"", name);
        return FSA_OK;
    }
    t = jv_text(s, &o->m[M_TYPE]);
    n = decode_str(t, t + o->m[M_TYPE].len - 1, name, sizeof name);
    if (n >= sizeof name || fsa_type_parse(name, &op->type) != FSA_OK) {
        set_err(&out->reject, "unknown_type", "unknown entity type \"%.64s\"", name);
        return FSA_OK;
    }
    char id[FSA_ID_BYTES + 1];
    t = jv_text(s, &o->m[M_ID]);
    n = decode_str(t, t + o->m[M_ID].len - 1, id, sizeof id);
    if (n > FSA_LIMIT_ID_BYTES || !id_ok(id, FSA_LIMIT_ID_BYTES)) {
        set_err(&out->reject, "invalid_value", "entity id must be 1..%d bytes of [A-Za-z0-9._:-]",
                FSA_LIMIT_ID_BYTES);
        return FSA_OK;
    }
    memcpy(op->id, id, n + 1);

    if (op->kind != FSA_OP_CREATE && op->kind != FSA_OP_SET &&
        !jv_take_str(s, &o->m[M_FIELD], "field", op->field, sizeof op->field,
                     o->m[M_FIELD].kind == JV_STRING ? "unknown_field" : "invalid_value", out))
        return FSA_OK; /* the codes as decode_op's */
    switch (op->kind) {
    case FSA_OP_CREATE:
        /* PROTOCOL.md section 7, amendment 1: a create without fields is a create of {}. */
        if (o->m[M_FIELDS].kind == JV_NONE)
            return FSA_OK;
        return jv_payload(s, &o->m[M_FIELDS], "fields", true, out);
    case FSA_OP_SET:
        if (!jv_int(&o->m[M_BASE_VERSION], &op->base_version)) {
            set_err(&out->reject, "invalid_value", "set op: base_version must be an integer");
            return FSA_OK;
        }
        return jv_payload(s, &o->m[M_FIELDS], "fields", true, out);
    case FSA_OP_MERGE: return jv_payload(s, &o->m[M_PATCH], "patch", true, out);
    case FSA_OP_INCREMENT:
        if (!jv_int(&o->m[M_BY], &op->by))
            set_err(&out->reject, "invalid_value", "increment op: by must be an integer");
        return FSA_OK;
    case FSA_OP_TRANSITION:
        if (jv_take_str(s, &o->m[M_FROM], "from", op->from, sizeof op->from, "invalid_value", out))
            (void)jv_take_str(s, &o->m[M_TO], "to", op->to, sizeof op->to, "invalid_value", out);
        return FSA_OK;
    case FSA_OP_APPEND: {
        if (!jv_take_str(s, &o->m[M_KEY], "key", op->key, sizeof op->key, "invalid_value", out))
            return FSA_OK;
        const jv_t *ml = &o->m[M_MAX_LEN];
        if (ml->kind != JV_NONE && ml->kind != JV_NULL &&
            (!jv_int(ml, &op->max_len) || op->max_len < 0)) {
            set_err(&out->reject, "invalid_value",
                    "append op: max_len must be a non-negative integer");
            return FSA_OK;
        }
        return jv_payload(s, &o->m[M_ITEM], "item", false, out);
    }
    default: set_err(&out->reject, "invalid_value", "unknown op kind"); return FSA_OK;
    }
}

fsa_status_t fsa_codec_decode_push(const char *body, size_t len, fsa_codec_push_t *out,
                                   fsa_model_err_t *err)
{
    if (!push_args_ok(body, len, out, err))
        return FSA_EINVAL;
    const char *text = body != NULL ? body : "";
    const char *why = NULL;
    if (len > FSA_LIMIT_BODY_BYTES)
        return parse_status(PARSE_TOO_LARGE, "body is over the size limit", err);
    pscan_t s;
    memset(&s, 0, sizeof s);
    s.b = (const unsigned char *)text;
    s.end = s.b + len;
    s.values = 1;
    fsa_status_t st = FSA_OK;
    pscan_fail_t ps = push_scan(&s);
    if (ps == PS_SYNTAX || ps == PS_TRAILING) {
        /* The tree decoder checked the bounds over the whole text before parsing: a bound
         * passed after the bad byte still makes it too_large. */
        json_scan_t bounds;
        if (bounds_check(text, len, FSA_LIMIT_BODY_BYTES, PS_MAX_DEPTH, FSA_LIMIT_JSON_VALUES,
                         &bounds, &why) != PARSE_OK) {
            st = parse_status(PARSE_TOO_LARGE, why, err);
            goto out;
        }
    }
    switch (ps) {
    case PS_SYNTAX: st = parse_status(PARSE_MALFORMED, "body is not valid JSON", err); goto out;
    case PS_TRAILING:
        st = parse_status(PARSE_MALFORMED, "trailing bytes after the JSON value", err);
        goto out;
    case PS_DEPTH:
        st = parse_status(PARSE_TOO_LARGE, "JSON nesting is over the depth limit", err);
        goto out;
    case PS_VALUES:
        st = parse_status(PARSE_TOO_LARGE, "JSON has more values than the limit", err);
        goto out;
    case PS_NOMEM: st = FSA_ENOMEM; goto out;
    case PS_OK: break;
    }
    if (s.too_long) {
        st = parse_status(PARSE_TOO_LARGE, "a string is over the length limit", err);
        goto out;
    }
    if (s.root.kind != JV_OBJECT || !jv_str(&s, &s.batch, out->batch_id, sizeof out->batch_id) ||
        s.ops.kind != JV_ARRAY) {
        set_err(err, "malformed", "body must be {\"batch_id\": string, \"ops\": [...]}");
        st = FSA_EINVAL;
        goto out;
    }
    if (s.nops > FSA_LIMIT_BATCH_OPS) {
        set_err(err, "too_large", "%zu ops in one batch; the limit is %d", s.nops,
                FSA_LIMIT_BATCH_OPS);
        st = FSA_ETOOLARGE;
        goto out;
    }
    if (s.nops > 0) {
        out->ops = fsa_malloc(s.nops * sizeof *out->ops); /* each zeroed as it is decoded */
        if (out->ops == NULL) {
            st = FSA_ENOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < s.nops; i++) {
        st = decode_noted_op(&s, &s.pops[i], i, &out->ops[i], err);
        out->count = i + 1; /* so push_free releases what this op holds, even on failure */
        if (st != FSA_OK)
            goto out;
    }
out:
    fsa_free(s.pops);
    if (st != FSA_OK) {
        fsa_codec_push_free(out);
        if (st == FSA_ENOMEM)
            set_err(err, "internal", "out of memory");
    }
    return st;
}

/* ---- results ---- */

/* Characters, not pointers: no relocation per name in the device binary (storage/model.c). */
static const char result_names[FSA__RESULT_COUNT][sizeof "duplicate"] = {"applied", "duplicate",
                                                                         "conflict", "rejected"};

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
    /* Written through a local pointer: stores through w->p (a char *) may alias w->len, which the
     * compiler would then load and store again for every byte. */
    char *o = w->p + w->len;
    *o++ = '"';
    for (; p < end && *p != '\0'; p++) {
        unsigned char c = *p;
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
            break;
        }
    }
    *o++ = '"';
    w->len = (size_t)(o - w->p);
}

static void w_int(wbuf_t *w, int64_t v)
{
    char buf[24], *end = buf + sizeof buf;
    char *p = fsa_digits_u64(end, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
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

/* A number as cJSON prints it: the decoder's rule (scan_num: cJSON's own reading of the number,
 * and its printing compared with the text), so that encoder and decoder agree on what is copied
 * as it is. */
static bool canon_number(canon_t *c)
{
    const unsigned char *p = (const unsigned char *)c->p, *end = p;
    while (num_char(*end))
        end++;
    double v = 0;
    bool canon = false;
    size_t n = scan_num(p, end, &v, &canon);
    if (n == 0 || n == SIZE_MAX || !canon)
        return false;
    c->p += n;
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
    /* Only whitespace after the value (its NUL is in the length cJSON sees, as it wants): with
     * anything else allowed, {"a":1}}] went as {"a":1}. */
    cJSON *v = cJSON_ParseWithLengthOpts(json, n + 1, NULL, true);
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
    /* The values are bounded like the bytes (port/limits.h, FSA_LIMIT_ANSWER_VALUES): an answer
     * of small values would otherwise cost ~40 times its size in parser nodes. */
    parse_fail_t pf = parse_bounded(body, len, FSA_LIMIT_BODY_BYTES_MAX,
                                    FSA_LIMIT_JSON_DEPTH + FSA_CODEC_ANSWER_ENVELOPE_DEPTH,
                                    FSA_LIMIT_ANSWER_VALUES, root, &why);
    if (pf == PARSE_NOMEM)
        return FSA_ENOMEM;
    if (pf == PARSE_TOO_MANY)
        return FSA_ETOOLARGE; /* over this device's bound on values: the engine asks for less */
    if (pf != PARSE_OK)
        return FSA_EPROTO;
    if (!json_object(*root)) {
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

/*
 * A server's text made safe to print: its code and message reach the log, the status report, the
 * library's error and the command's stderr, where a decoded "\n" would start a forged log line and
 * "\u001b" drive the terminal. Every control character (below 0x20, 0x7f, and the C1 controls
 * U+0080..U+009F, C2 80..C2 9F in UTF-8, which some terminals obey too) becomes '?', in place,
 * here where the text is decoded, so that every consumer gets one terminal-safe line.
 */
static void printable_in_place(char *s)
{
    char *w = s;
    for (const char *r = s; *r != '\0'; r++) {
        unsigned char c = (unsigned char)*r;
        if (c == 0xc2 && (unsigned char)r[1] >= 0x80 && (unsigned char)r[1] <= 0x9f) {
            *w++ = '?';
            r++; /* the pair is one character */
        } else if (c < 0x20 || c == 0x7f) {
            *w++ = '?';
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

static fsa_status_t decode_error_object(const cJSON *e, char code[FSA_CODEC_CODE_BYTES],
                                        char message[FSA_CODEC_MESSAGE_BYTES])
{
    if (!json_object(e) || !get_str(e, "code", code, FSA_CODEC_CODE_BYTES) || code[0] == '\0')
        return FSA_EPROTO;
    printable_in_place(code);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    message[0] = '\0';
    if (m != NULL) {
        if (!json_string(m))
            return FSA_EPROTO;
        snprintf(message, FSA_CODEC_MESSAGE_BYTES, "%s", m->valuestring); /* cut, never overrun */
        printable_in_place(message);
    }
    return FSA_OK;
}

static fsa_status_t decode_result(const cJSON *o, fsa_codec_result_t *r)
{
    char status[16];
    /* The op id is the agent's own, echoed (the id alphabet): anything else is malformed, and
     * never reaches a log line that names the op. */
    if (!json_object(o) || !get_str(o, "op_id", r->op_id, sizeof r->op_id) ||
        !id_ok(r->op_id, FSA_OP_ID_BYTES - 1) || !get_str(o, "status", status, sizeof status) ||
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
    if (cur != NULL && !json_null(cur)) {
        const cJSON *fields = cJSON_GetObjectItemCaseSensitive(cur, "fields");
        if (!json_object(cur) ||
            !get_int(cJSON_GetObjectItemCaseSensitive(cur, "version"), &r->current_version) ||
            r->current_version < 1 || !json_object(fields))
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
        !id_ok(x->op_id, FSA_OP_ID_BYTES - 1) || !FAST_LIT(r, ",\"status\":") ||
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

/* The whole answer, at most cap results into res (res NULL: only checks and counts into *n). */
static bool fast_results(const char *body, size_t len, fsa_codec_result_t *res, size_t cap,
                         size_t *n, int64_t *server_time)
{
    fast_rd_t r = {body, body + len};
    *n = 0;
    *server_time = 0;
    if (!FAST_LIT(&r, "{\"results\":["))
        return false;
    if (!FAST_LIT(&r, "]")) {
        do {
            if (*n >= cap || !fast_result(&r, res != NULL ? &res[*n] : NULL))
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
    if (body == NULL || len > FSA_LIMIT_BODY_BYTES_MAX)
        return FAST_NO;
    /* One pass, into room for as many results as the body has '{' after its first: each result
     * of the exact form opens one (reading the answer twice, to count and then to fill, was half
     * of the decode). An answer with fewer results than that, or in another form, wastes the
     * room, no more. */
    size_t cap = 0;
    for (const char *p = body, *end = body + len;
         (p = memchr(p, '{', (size_t)(end - p))) != NULL && cap <= ANSWER_MAX_RESULTS; p++)
        cap++;
    cap = cap > 0 ? cap - 1 : 0;
    fsa_codec_result_t *res = NULL;
    if (cap > 0) {
        res = fsa_calloc(cap, sizeof *res);
        if (res == NULL)
            return FAST_NOMEM;
    }
    if (!fast_results(body, len, res, cap, &n, &t)) {
        fsa_free(res);
        return FAST_NO;
    }
    if (n == 0) {
        fsa_free(res);
        res = NULL;
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
    if (!json_array(arr) || !get_server_time(root, &t, 0)) {
        st = FSA_EPROTO;
        goto out;
    }
    size_t total = fsa__json_count(arr);
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
    if (!json_object(o) || !get_str(o, "type", type, sizeof type) ||
        fsa_type_parse(type, &c->type) != FSA_OK || !get_str(o, "id", c->id, sizeof c->id) ||
        !id_ok(c->id, FSA_LIMIT_ID_BYTES))
        return FSA_EINVAL;
    /* A pull's "gone" change: type, id, version and nothing else. */
    if (need_meta && json_true(cJSON_GetObjectItemCaseSensitive(o, "gone"))) {
        c->gone = true;
        return get_int(cJSON_GetObjectItemCaseSensitive(o, "version"), &c->version) &&
                       c->version >= 1
                   ? FSA_OK
                   : FSA_EINVAL;
    }
    if (!json_object(fields))
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
    if (!json_array(arr) || !get_str(root, "cursor", out->cursor, sizeof out->cursor) ||
        !json_bool(more) || !get_server_time(root, &out->server_time_ms, 0)) {
        st = FSA_EPROTO;
        goto out;
    }
    out->more = json_true(more);
    size_t total = fsa__json_count(arr);
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
