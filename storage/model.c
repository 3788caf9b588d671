/* fieldsync: the entity model (types, fields, status machines) and how an op applies to it. */
#include "storage/model.h"
#include "port/alloc.h"
#include "port/jsonstr.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* cJSON's type tests (what cJSON_IsObject and its kin answer) without a call into the library:
 * each function the device binary imports costs it ~85 bytes. One function a type keeps each
 * test a one-argument call, as the library's was (sync/codec.c has the same for sync/). */
#define JSON_TYPE_TEST(name, t)                                                                    \
    static bool name(const cJSON *item)                                                            \
    {                                                                                              \
        return item != NULL && (item->type & 0xFF) == (t);                                         \
    }
JSON_TYPE_TEST(json_object, cJSON_Object)
JSON_TYPE_TEST(json_array, cJSON_Array)
JSON_TYPE_TEST(json_string, cJSON_String)
JSON_TYPE_TEST(json_number, cJSON_Number)
JSON_TYPE_TEST(json_null, cJSON_NULL)

/* A new item of type (cJSON_NULL, cJSON_Number: num, cJSON_String: a copy of str), as cJSON's
 * CreateNull, CreateNumber and CreateString make them but for a number's valueint, which is left
 * 0 (this module and cJSON's printer and compare read valuedouble), from one import the binary has
 * anyway: a copy of an item on the stack. NULL on ENOMEM. */
static cJSON *json_new(int type, double num, const char *str)
{
    cJSON proto = {.type = type, .valuedouble = num, .valuestring = (char *)(uintptr_t)str};
    return cJSON_Duplicate(&proto, false);
}

/*
 * Memory: every text this module returns comes from cJSON_PrintUnformatted() or fsa_strdup(), and
 * fsa_model_free() releases it with fsa_free(). That pairing holds because cJSON's hooks, when
 * installed (storage/libs.h), are the project's allocator, itself the C library's; it also lets a
 * caller move a returned text into fsa_op_t.json, which fsa_op_clear() frees the same way.
 */

/* "→" in UTF-8: the arrow of every transition message, as in PROTOCOL.md. */
#define ARROW "\xe2\x86\x92"

/*
 * Integer fields hold integers of magnitude at most 2^53 - 1. This is a deliberate limit below
 * int64: cJSON keeps every number as a double, which represents exactly the integers up to 2^53,
 * so anything larger could not be read back exactly (9007199254740993 parses as ...992). It is
 * also the range JavaScript clients hold exactly, and a millisecond timestamp needs only 41 bits.
 */
#define SAFE_INT_MAX INT64_C(9007199254740991)

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------------------------------ */
/* Tables: the single source of truth for types, fields, defaults and status machines.        */

/* One field, one edge a line, as the protocol lists them. Each kind of row is one table for all
 * types, which a type finds by its first row's index and its count: a table of pointers costs the
 * device binary a relocation (24 bytes on aarch64) for each, an index none. */
/* clang-format off */

enum { F_ATTENDANCE = 0, F_JOBNEED = 8, F_TICKET = 14, F_END = 19 };

static const fsa_field_def_t all_fields[F_END] = {
    [F_ATTENDANCE] =
    {FSA_FIELD_STR, "people_id", true, ""},
    {FSA_FIELD_STR, "site_id", true, ""},
    {FSA_FIELD_ENUM, "kind", true, ""},
    {FSA_FIELD_INT, "at", true, ""},
    {FSA_FIELD_NUM_NULL, "lat", false, "null"},
    {FSA_FIELD_NUM_NULL, "lon", false, "null"},
    {FSA_FIELD_NUM_NULL, "accuracy_m", false, "null"},
    {FSA_FIELD_OBJ, "other_info", false, "{}"},
    [F_JOBNEED] =
    {FSA_FIELD_STATUS, "jobstatus", false, "\"ASSIGNED\""},
    {FSA_FIELD_STR_NULL, "parent_id", false, "null"},
    {FSA_FIELD_INT, "seqno", false, "0"},
    {FSA_FIELD_INT, "expirytime", false, "0"},
    {FSA_FIELD_OBJ, "other_info", false, "{}"},
    {FSA_FIELD_STR, "people_id", false, "\"\""},
    [F_TICKET] =
    {FSA_FIELD_STATUS, "status", false, "\"NEW\""},
    {FSA_FIELD_INT, "level", false, "0"},
    {FSA_FIELD_STR, "assignedto", false, "\"\""},
    {FSA_FIELD_OBJ, "ticketlog", false, "{\"ticket_history\":[]}"},
    {FSA_FIELD_STR, "priority", false, "\"MEDIUM\""},
};

static const char attendance_kinds[][sizeof "checkout"] = {"checkin", "checkout"};

/* An edge names its states by their index in all_states. */
typedef struct status_edge {
    unsigned char from;
    unsigned char to;
    bool server_only; /* only the server makes it (FSA_APPLY_BY_SERVER) */
} status_edge_t;

/* A state's name, as characters in the table. */
#define STATE_NAME_BYTES sizeof "PARTIALLYCOMPLETED"

enum { J_ASSIGNED, J_INPROGRESS, J_PARTIALLYCOMPLETED, J_COMPLETED, J_AUTOCLOSED,
       T_NEW, T_OPEN, T_RESOLVED, T_CLOSED, T_CANCELLED, S_END };

static const char all_states[S_END][STATE_NAME_BYTES] = {
    [J_ASSIGNED] = "ASSIGNED",   [J_INPROGRESS] = "INPROGRESS",
    [J_PARTIALLYCOMPLETED] = "PARTIALLYCOMPLETED", [J_COMPLETED] = "COMPLETED",
    [J_AUTOCLOSED] = "AUTOCLOSED",
    [T_NEW] = "NEW", [T_OPEN] = "OPEN", [T_RESOLVED] = "RESOLVED", [T_CLOSED] = "CLOSED",
    [T_CANCELLED] = "CANCELLED"};

enum { E_JOBNEED = 0, E_TICKET = 7, E_END = 14 };

static const status_edge_t all_edges[E_END] = {
    [E_JOBNEED] =
    {J_ASSIGNED, J_INPROGRESS, false},
    {J_INPROGRESS, J_COMPLETED, false},
    {J_INPROGRESS, J_PARTIALLYCOMPLETED, false},
    {J_PARTIALLYCOMPLETED, J_COMPLETED, false},
    {J_ASSIGNED, J_AUTOCLOSED, true},
    {J_INPROGRESS, J_AUTOCLOSED, true},
    {J_PARTIALLYCOMPLETED, J_AUTOCLOSED, true},
    [E_TICKET] =
    {T_NEW, T_OPEN, false},
    {T_NEW, T_RESOLVED, false},
    {T_OPEN, T_RESOLVED, false},
    {T_RESOLVED, T_CLOSED, false},
    {T_RESOLVED, T_OPEN, false},
    {T_NEW, T_CANCELLED, false},
    {T_OPEN, T_CANCELLED, false},
};
/* clang-format on */

/* A type's rows in the tables above: [first, first + count). */
typedef struct type_def {
    char name[sizeof "attendance"];
    char status_field[sizeof "jobstatus"]; /* "": the type has no status */
    unsigned char fields, n_fields;
    unsigned char states, n_states;
    unsigned char edges, n_edges;
} type_def_t;

/* A state with no outgoing edge is terminal; terminality is derived, never listed twice. */
static const type_def_t types[FSA__TYPE_COUNT] = {
    [FSA_TYPE_ATTENDANCE] = {"attendance", "", F_ATTENDANCE, F_JOBNEED - F_ATTENDANCE, 0, 0, 0, 0},
    [FSA_TYPE_JOBNEED] = {"jobneed", "jobstatus", F_JOBNEED, F_TICKET - F_JOBNEED, J_ASSIGNED,
                          T_NEW - J_ASSIGNED, E_JOBNEED, E_TICKET - E_JOBNEED},
    [FSA_TYPE_TICKET] = {"ticket", "status", F_TICKET, F_END - F_TICKET, T_NEW, S_END - T_NEW,
                         E_TICKET, E_END - E_TICKET},
};

/* Names as arrays of characters, not pointers: a table of pointers costs the device binary a
 * relocation (24 bytes on aarch64) for each. */
static const char op_kind_names[FSA__OP_COUNT][sizeof "transition"] = {
    [FSA_OP_CREATE] = "create",         [FSA_OP_SET] = "set",
    [FSA_OP_MERGE] = "merge",           [FSA_OP_INCREMENT] = "increment",
    [FSA_OP_TRANSITION] = "transition", [FSA_OP_APPEND] = "append",
};

static bool type_ok(fsa_type_t type)
{
    return (unsigned)type < FSA__TYPE_COUNT;
}

/* ------------------------------------------------------------------------------------------ */
/* Names, fields, ids, status machines.                                                       */

const char *fsa_type_name(fsa_type_t type)
{
    return type_ok(type) ? types[type].name : "?";
}

fsa_status_t fsa_type_parse(const char *name, fsa_type_t *out)
{
    if (name == NULL || out == NULL)
        return FSA_EINVAL;
    for (unsigned t = 0; t < FSA__TYPE_COUNT; t++) {
        if (strcmp(name, types[t].name) == 0) {
            *out = (fsa_type_t)t;
            return FSA_OK;
        }
    }
    return FSA_EINVAL;
}

const char *fsa_op_kind_name(fsa_op_kind_t kind)
{
    return (unsigned)kind < FSA__OP_COUNT ? op_kind_names[kind] : "?";
}

fsa_status_t fsa_op_kind_parse(const char *name, fsa_op_kind_t *out)
{
    if (name == NULL || out == NULL)
        return FSA_EINVAL;
    for (unsigned k = 0; k < FSA__OP_COUNT; k++) {
        if (strcmp(name, op_kind_names[k]) == 0) {
            *out = (fsa_op_kind_t)k;
            return FSA_OK;
        }
    }
    return FSA_EINVAL;
}

/* count is optional: a caller may only want to know whether the type exists. */
const fsa_field_def_t *fsa_model_fields(fsa_type_t type, size_t *count)
{
    if (count != NULL)
        *count = type_ok(type) ? types[type].n_fields : 0;
    return type_ok(type) ? &all_fields[types[type].fields] : NULL;
}

const fsa_field_def_t *fsa_model_field(fsa_type_t type, const char *name)
{
    if (!type_ok(type) || name == NULL)
        return NULL;
    const fsa_field_def_t *f = &all_fields[types[type].fields];
    for (size_t i = 0; i < types[type].n_fields; i++) {
        if (strcmp(f[i].name, name) == 0)
            return &f[i];
    }
    return NULL;
}

bool fsa_model_id_valid(const char *id)
{
    if (id == NULL)
        return false;
    size_t n = 0;
    for (; id[n] != '\0'; n++) {
        char c = id[n];
        if (n == FSA_LIMIT_ID_BYTES)
            return false;
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return n > 0;
}

const char *fsa_model_status_field(fsa_type_t type)
{
    return type_ok(type) && types[type].status_field[0] != '\0' ? types[type].status_field : NULL;
}

bool fsa_model_status_known(fsa_type_t type, const char *s)
{
    if (!type_ok(type) || s == NULL)
        return false;
    const type_def_t *t = &types[type];
    for (size_t i = t->states; i < (size_t)t->states + t->n_states; i++) {
        if (strcmp(all_states[i], s) == 0)
            return true;
    }
    return false;
}

/* The edge from→to of the type's machine, whoever may make it; NULL when there is none. */
static const status_edge_t *find_edge(fsa_type_t type, const char *from, const char *to)
{
    if (!type_ok(type) || from == NULL || to == NULL)
        return NULL;
    const type_def_t *t = &types[type];
    for (size_t i = t->edges; i < (size_t)t->edges + t->n_edges; i++) {
        if (strcmp(all_states[all_edges[i].from], from) == 0 &&
            strcmp(all_states[all_edges[i].to], to) == 0)
            return &all_edges[i];
    }
    return NULL;
}

bool fsa_model_transition_allowed(fsa_type_t type, const char *from, const char *to, bool by_server)
{
    const status_edge_t *e = find_edge(type, from, to);
    return e != NULL && (by_server || !e->server_only);
}

bool fsa_model_status_terminal(fsa_type_t type, const char *s)
{
    if (!fsa_model_status_known(type, s))
        return false;
    const type_def_t *t = &types[type];
    for (size_t i = t->edges; i < (size_t)t->edges + t->n_edges; i++) {
        if (strcmp(all_states[all_edges[i].from], s) == 0)
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* JSON text: a strict, non-recursive scan that runs before cJSON sees the text.              */

/*
 * Why a text or tree was refused. The scan decides every syntax question itself, so cJSON parses
 * only texts known to be valid JSON within the limits: a parse failure after a passed scan can
 * only be an allocation failure, and no input can drive cJSON's recursion deeper than the limit.
 */
typedef enum json_why {
    JSON_OK = 0,
    JSON_SYNTAX,      /* not one valid JSON value */
    JSON_DEPTH,       /* nested deeper than FSA_LIMIT_JSON_DEPTH */
    JSON_STRING,      /* a string or key longer than FSA_LIMIT_STRING_BYTES (decoded) */
    JSON_SIZE,        /* the text is longer than its maximum */
    JSON_NUMBER_LONG, /* a number longer than cJSON reads (it would misparse it) */
    JSON_NUL,         /* \u0000 in a string: cJSON would silently cut the string there */
    JSON_UTF8,        /* invalid UTF-8, or an unpaired surrogate escape */
    JSON_RANGE,       /* a number outside the range of a double */
    JSON_DUP_KEY,     /* an object names the same key twice */
    JSON_NOMEM
} json_why_t;

/* Longer numbers are refused: cJSON before the fix of CVE-2023-26819 read only their first 63
 * characters (Debian 12's reads the whole run), so what such a number means would depend on the
 * library's version; no field needs one. */
#define JSON_NUMBER_MAX 63

static void describe_json(json_why_t why, size_t max_bytes, char *buf, size_t size)
{
    switch (why) {
    case JSON_DEPTH:
        snprintf(buf, size, "nested deeper than %d levels", FSA_LIMIT_JSON_DEPTH);
        break;
    case JSON_STRING:
        snprintf(buf, size, "a string is longer than %d bytes", FSA_LIMIT_STRING_BYTES);
        break;
    case JSON_SIZE: snprintf(buf, size, "longer than %zu bytes", max_bytes); break;
    case JSON_NUMBER_LONG:
        snprintf(buf, size, "a number is longer than %d characters", JSON_NUMBER_MAX);
        break;
    case JSON_NUL: snprintf(buf, size, "a string holds \\u0000"); break;
    case JSON_UTF8: snprintf(buf, size, "invalid UTF-8 or unpaired surrogate"); break;
    case JSON_RANGE: snprintf(buf, size, "a number is out of range"); break;
    case JSON_DUP_KEY: snprintf(buf, size, "an object repeats a key"); break;
    case JSON_NOMEM: snprintf(buf, size, "out of memory"); break;
    case JSON_OK:
    case JSON_SYNTAX:
    default: snprintf(buf, size, "not valid JSON"); break;
    }
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* The length of the well-formed UTF-8 sequence at p (RFC 3629), 0 when it is not one. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* the range of the second byte */
    if (p[0] >= 0xC2 && p[0] <= 0xDF) {
        n = 2;
    } else if (p[0] == 0xE0) {
        n = 3;
        lo = 0xA0; /* no overlong forms */
    } else if ((p[0] >= 0xE1 && p[0] <= 0xEC) || p[0] == 0xEE || p[0] == 0xEF) {
        n = 3;
    } else if (p[0] == 0xED) {
        n = 3;
        hi = 0x9F; /* no surrogates */
    } else if (p[0] == 0xF0) {
        n = 4;
        lo = 0x90;
    } else if (p[0] >= 0xF1 && p[0] <= 0xF3) {
        n = 4;
    } else if (p[0] == 0xF4) {
        n = 4;
        hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    }
    return n;
}

void fsa_model_utf8_fix(char *s)
{
    unsigned char *p = (unsigned char *)s;
    unsigned char *end = p + strlen(s);
    while (p < end) {
        size_t n = *p < 0x80 ? 1 : utf8_len(p, end);
        if (n == 0) {
            *p++ = '?';
        } else {
            p += n;
        }
    }
}

static bool hex4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
    unsigned v = 0;
    if (end - p < 4)
        return false;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        unsigned d;
        if (is_digit(c))
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return false;
        v = v * 16 + d;
    }
    *out = v;
    return true;
}

/* Scans the string whose opening quote is at *pp, leaving *pp after its closing quote. */
static json_why_t scan_string(const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *p = *pp + 1;
    size_t bytes = 0; /* decoded length: the limit is on the value, not on its escaping */
    for (;;) {
        if (p == end)
            return JSON_SYNTAX;
        unsigned char c = *p;
        if (c == '"')
            break;
        if (c < 0x20)
            return JSON_SYNTAX;
        if (c == '\\') {
            if (end - p < 2)
                return JSON_SYNTAX;
            c = p[1];
            if (c == 'u') {
                unsigned cp, lo;
                if (!hex4(p + 2, end, &cp))
                    return JSON_SYNTAX;
                p += 6;
                if (cp == 0)
                    return JSON_NUL;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return JSON_UTF8;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, end, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return JSON_UTF8;
                    p += 6;
                    bytes += 4;
                } else {
                    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : 3;
                }
            } else if (c != '\0' && strchr("\"\\/bfnrt", c) != NULL) {
                p += 2;
                bytes += 1;
            } else {
                return JSON_SYNTAX;
            }
        } else if (c < 0x80) {
            p++;
            bytes++;
        } else {
            size_t n = utf8_len(p, end);
            if (n == 0)
                return JSON_UTF8;
            p += n;
            bytes += n;
        }
        if (bytes > FSA_LIMIT_STRING_BYTES)
            return JSON_STRING;
    }
    *pp = p + 1;
    return JSON_OK;
}

/* Scans the number at *pp (RFC 8259 grammar: no leading zeros, no '+', digits around '.'). */
static json_why_t scan_number(const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *p = *pp, *start = *pp;
    if (*p == '-')
        p++;
    if (p == end || !is_digit(*p))
        return JSON_SYNTAX;
    if (*p == '0') {
        p++;
    } else {
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && *p == '.') {
        p++;
        if (p == end || !is_digit(*p))
            return JSON_SYNTAX;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !is_digit(*p))
            return JSON_SYNTAX;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p - start > JSON_NUMBER_MAX)
        return JSON_NUMBER_LONG;
    *pp = p;
    return JSON_OK;
}

static bool scan_literal(const unsigned char **pp, const unsigned char *end, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(end - *pp) < n || memcmp(*pp, word, n) != 0)
        return false;
    *pp += n;
    return true;
}

/*
 * Checks that text is exactly one JSON value (RFC 8259, whitespace around it allowed) of at most
 * max_bytes, nested at most FSA_LIMIT_JSON_DEPTH deep, with every string within its limit. It
 * keeps one bit per open container instead of recursing, so no input can exhaust the stack.
 */
static json_why_t json_scan(const char *text, size_t max_bytes)
{
    _Static_assert(FSA_LIMIT_JSON_DEPTH_MAX <= 64, "one bit per level in a uint64_t");
    size_t len = strnlen(text, max_bytes < SIZE_MAX ? max_bytes + 1 : max_bytes);
    if (len > max_bytes)
        return JSON_SIZE;
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    uint64_t in_object = 0; /* bit d: the container at depth d + 1 is an object */
    unsigned depth = 0;
    enum { WANT_VALUE, WANT_VALUE_OR_CLOSE, WANT_KEY, WANT_KEY_OR_CLOSE, WANT_COLON, WANT_NEXT };
    int want = WANT_VALUE;
    json_why_t why;

    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        if (p == end)
            break;
        unsigned char c = *p;
        switch (want) {
        case WANT_KEY_OR_CLOSE:
            if (c == '}')
                goto close;
            __attribute__((fallthrough)); /* clang does not read the comment form */
        case WANT_KEY:
            if (c != '"')
                return JSON_SYNTAX;
            if ((why = scan_string(&p, end)) != JSON_OK)
                return why;
            want = WANT_COLON;
            break;
        case WANT_COLON:
            if (c != ':')
                return JSON_SYNTAX;
            p++;
            want = WANT_VALUE;
            break;
        case WANT_VALUE_OR_CLOSE:
            if (c == ']')
                goto close;
            __attribute__((fallthrough));
        case WANT_VALUE:
            if (c == '{' || c == '[') {
                if (depth == FSA_LIMIT_JSON_DEPTH)
                    return JSON_DEPTH;
                if (c == '{')
                    in_object |= UINT64_C(1) << depth;
                else
                    in_object &= ~(UINT64_C(1) << depth);
                depth++;
                p++;
                want = c == '{' ? WANT_KEY_OR_CLOSE : WANT_VALUE_OR_CLOSE;
                break;
            }
            if (c == '"')
                why = scan_string(&p, end);
            else if (c == '-' || is_digit(c))
                why = scan_number(&p, end);
            else if (scan_literal(&p, end, "true") || scan_literal(&p, end, "false") ||
                     scan_literal(&p, end, "null"))
                why = JSON_OK;
            else
                why = JSON_SYNTAX;
            if (why != JSON_OK)
                return why;
            want = WANT_NEXT;
            break;
        default: /* WANT_NEXT */
            if (depth == 0)
                return JSON_SYNTAX; /* text after the value */
            bool obj = (in_object >> (depth - 1)) & 1u;
            if (c == ',') {
                p++;
                want = obj ? WANT_KEY : WANT_VALUE;
                break;
            }
            if (c != (obj ? '}' : ']'))
                return JSON_SYNTAX;
            goto close;
        }
        continue;
    close:
        depth--;
        p++;
        want = WANT_NEXT;
    }
    return want == WANT_NEXT && depth == 0 ? JSON_OK : JSON_SYNTAX;
}

/* ------------------------------------------------------------------------------------------ */
/* Trees: what the scan cannot see, parsing, and printing exactly.                            */

static int cmp_member_key(const void *a, const void *b)
{
    const cJSON *const *x = a;
    const cJSON *const *y = b;
    return strcmp((*x)->string, (*y)->string);
}

static size_t count_children(const cJSON *item)
{
    size_t n = 0;
    for (const cJSON *c = item->child; c != NULL; c = c->next)
        n++;
    return n;
}

/* Small objects are compared pairwise; larger ones sorted, so a hostile object costs n log n. */
#define SMALL_OBJECT 16

static json_why_t check_unique_keys(const cJSON *obj)
{
    size_t n = count_children(obj);
    if (n <= SMALL_OBJECT) {
        for (const cJSON *a = obj->child; a != NULL; a = a->next) {
            for (const cJSON *b = a->next; b != NULL; b = b->next) {
                if (strcmp(a->string, b->string) == 0)
                    return JSON_DUP_KEY;
            }
        }
        return JSON_OK;
    }
    /* sorted holds cJSON pointers: sizeof *sorted is a pointer's size, as meant. */
    // NOLINTNEXTLINE(bugprone-sizeof-expression)
    const cJSON **sorted = fsa_malloc(n * sizeof *sorted);
    if (sorted == NULL)
        return JSON_NOMEM;
    size_t i = 0;
    for (const cJSON *c = obj->child; c != NULL; c = c->next)
        sorted[i++] = c;
    qsort(sorted, n, sizeof *sorted, cmp_member_key); // NOLINT(bugprone-sizeof-expression)
    json_why_t why = JSON_OK;
    for (i = 1; i < n && why == JSON_OK; i++) {
        if (strcmp(sorted[i - 1]->string, sorted[i]->string) == 0)
            why = JSON_DUP_KEY;
    }
    fsa_free(sorted);
    return why;
}

/*
 * Refuses what is valid JSON but would not survive cJSON: numbers beyond a double (cJSON keeps
 * them as infinity and prints null), and repeated keys (cJSON keeps both and reads the first,
 * while other parsers read the last). Recursion is bounded by the depth the scan enforced.
 */
// NOLINTNEXTLINE(misc-no-recursion): bounded by FSA_LIMIT_JSON_DEPTH (json_scan)
static json_why_t check_tree(const cJSON *item)
{
    if (json_number(item) && !isfinite(item->valuedouble))
        return JSON_RANGE;
    if (json_object(item)) {
        json_why_t why = check_unique_keys(item);
        if (why != JSON_OK)
            return why;
    }
    for (const cJSON *c = item->child; c != NULL; c = c->next) {
        json_why_t why = check_tree(c);
        if (why != JSON_OK)
            return why;
    }
    return JSON_OK;
}

/* Parses text (within max_bytes and the limits) into *out, which the caller deletes. */
static json_why_t parse_checked(const char *text, size_t max_bytes, cJSON **out)
{
    *out = NULL;
    json_why_t why = json_scan(text, max_bytes);
    if (why != JSON_OK)
        return why;
    cJSON *root = cJSON_ParseWithLengthOpts(text, strlen(text) + 1, NULL, true);
    if (root == NULL)
        return JSON_NOMEM; /* the scan accepted the text, so only an allocation can have failed */
    why = check_tree(root);
    if (why != JSON_OK) {
        cJSON_Delete(root);
        return why;
    }
    *out = root;
    return JSON_OK;
}

/* Room for any double printed by format_number(), with its NUL. */
#define NUMBER_TEXT_BYTES 32

/* The powers of ten the fast path uses: each exact in a double (10^22 is the last that is). */
static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,
                                     1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19};

/*
 * The fast path of format_number for a finite non-integral d with 1e-4 <= |d| < 1e15 whose
 * shortest exact text has at most 15 significant digits (a coordinate, a price, a reading): the
 * least k for which the integer m nearest to |d| * 10^k reads back as d, i.e. m / 10^k == d
 * (both exact doubles, IEEE division correctly rounded, so the decimal m * 10^-k rounds to d, as
 * strtod would read it). With at most 15 digits that decimal is the only one of its length within
 * half an ulp of d, so it is the text %.15g prints (trailing zeros cut), without printf or
 * strtod: those cost ~10k instructions a number. m is found exactly: |d| * 10^k is within
 * 0.25 of m below 10^15. False (buf untouched) when no such k exists: printf decides.
 */
static bool format_short_decimal(double d, char *buf, size_t size)
{
    double a = d < 0 ? -d : d;
    if (!(a >= 1e-4 && a < 1e15) || size < NUMBER_TEXT_BYTES)
        return false;
    for (size_t k = 1; k < sizeof pow10_exact / sizeof pow10_exact[0]; k++) {
        double x = a * pow10_exact[k];
        if (x >= 1e15) /* more than 15 significant digits */
            return false;
        uint64_t m = (uint64_t)(x + 0.5); /* x + 0.5 is exact below 2^52 */
        if ((double)m / pow10_exact[k] != a)
            continue;
        char tmp[NUMBER_TEXT_BYTES + 8];
        char *end = tmp + sizeof tmp, *p = fsa_digits_u64(end, m);
        while ((size_t)(end - p) <= k) /* leading zeros of the fraction, then "0" */
            *--p = '0';
        size_t n = 0, len = (size_t)(end - p);
        if (d < 0)
            buf[n++] = '-';
        memcpy(buf + n, p, len - k);
        n += len - k;
        buf[n++] = '.';
        memcpy(buf + n, end - k, k);
        n += k;
        buf[n] = '\0';
        return true;
    }
    return false;
}

/*
 * Prints a finite double as the shortest text that reads back as exactly the same double, and
 * integral values as plain integers. cJSON's own printer is not exact: it prints
 * 9007199254740991 as 9.00719925474099e+15 and 10^15 as 1e+15, which an int field must not be.
 * The text is %.15g's when that reads back exactly, else %.16g's, else %.17g's; integers and
 * short decimals are written without printf (format_short_decimal), to the same text.
 */
static void format_number(double d, char *buf, size_t size)
{
    if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && (double)(int64_t)d == d) {
        int64_t v = (int64_t)d;
        char tmp[24], *end = tmp + sizeof tmp;
        char *p = fsa_digits_u64(end, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
        if (v < 0)
            *--p = '-';
        size_t len = (size_t)(end - p);
        if (len < size) {
            memcpy(buf, p, len);
            buf[len] = '\0';
        } else if (size > 0) {
            buf[0] = '\0'; /* never: every caller's buffer is NUMBER_TEXT_BYTES */
        }
        return;
    }
    if (format_short_decimal(d, buf, size))
        return;
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    /* printf writes the locale's decimal point; JSON's is '.' whatever the locale. */
    for (char *p = buf; *p != '\0'; p++) {
        if (!is_digit((unsigned char)*p) && *p != '-' && *p != '+' && *p != 'e')
            *p = '.';
    }
}

/*
 * Puts v in place of the member cur of obj, keeping its position. v takes over cur's key, so
 * nothing is allocated and nothing can fail. cur is deleted.
 */
static void replace_member(cJSON *obj, cJSON *cur, cJSON *v)
{
    if (v->string != NULL && !(v->type & cJSON_StringIsConst))
        cJSON_free(v->string);
    v->string = cur->string;
    v->type = (v->type & ~cJSON_StringIsConst) | (cur->type & cJSON_StringIsConst);
    cur->string = NULL;
    cur->type &= ~cJSON_StringIsConst;
    (void)cJSON_ReplaceItemViaPointer(obj, cur, v);
}

/* Sets obj[name] = v, in place when the member exists. Takes v; false (v deleted) on ENOMEM.
 * name may be v's own name (apply_set): it is not read after replace_member frees that, and
 * cJSON_AddItemToObject copies it before it frees it. */
static bool put_member(cJSON *obj, const char *name, cJSON *v)
{
    cJSON *cur = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cur != NULL) {
        replace_member(obj, cur, v);
        return true;
    }
    if (cJSON_AddItemToObject(obj, name, v))
        return true;
    cJSON_Delete(v);
    return false;
}

/* Replaces every number below parent by a raw node holding its exact text (format_number). */
// NOLINTNEXTLINE(misc-no-recursion): bounded by FSA_LIMIT_JSON_DEPTH (json_scan)
static json_why_t exact_numbers(cJSON *parent)
{
    cJSON *next;
    for (cJSON *c = parent->child; c != NULL; c = next) {
        next = c->next;
        if (json_number(c)) {
            char buf[NUMBER_TEXT_BYTES];
            if (!isfinite(c->valuedouble))
                return JSON_RANGE;
            format_number(c->valuedouble, buf, sizeof buf);
            cJSON *raw = cJSON_CreateRaw(buf);
            if (raw == NULL)
                return JSON_NOMEM;
            replace_member(parent, c, raw);
        } else if (json_array(c) || json_object(c)) {
            json_why_t why = exact_numbers(c);
            if (why != JSON_OK)
                return why;
        }
    }
    return JSON_OK;
}

/*
 * Prints root compactly into *out (the caller frees it) and checks the result against the limits
 * again: an applied op can make a tree deeper or larger than any of its inputs. root is changed
 * (its numbers become raw text) and stays the caller's to delete.
 */
static json_why_t emit(cJSON *root, size_t max_bytes, char **out)
{
    char *text;
    json_why_t why;
    *out = NULL;
    if (json_number(root)) {
        char buf[NUMBER_TEXT_BYTES];
        if (!isfinite(root->valuedouble))
            return JSON_RANGE;
        format_number(root->valuedouble, buf, sizeof buf);
        text = fsa_strdup(buf);
    } else {
        if ((why = exact_numbers(root)) != JSON_OK)
            return why;
        text = cJSON_PrintUnformatted(root);
    }
    if (text == NULL)
        return JSON_NOMEM;
    if ((why = json_scan(text, max_bytes)) != JSON_OK) {
        fsa_free(text);
        return why;
    }
    *out = text;
    return JSON_OK;
}

/* A growing text buffer for print_exact. */
typedef struct pbuf {
    char *p;
    size_t len, cap;
    bool nomem;
} pbuf_t;

/* Makes room for n more bytes and the NUL; false (nomem set) when it cannot. */
static bool pb_room(pbuf_t *b, size_t n)
{
    if (b->nomem)
        return false;
    if (b->len + n + 1 <= b->cap)
        return true;
    size_t ncap = b->cap == 0 ? 512 : b->cap;
    while (b->len + n + 1 > ncap)
        ncap *= 2;
    char *np = fsa_realloc(b->p, ncap);
    if (np == NULL) {
        b->nomem = true;
        return false;
    }
    b->p = np;
    b->cap = ncap;
    return true;
}

static void pb_put(pbuf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap && !pb_room(b, n))
        return;
    if (b->nomem)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void pb_char(pbuf_t *b, char c)
{
    if (b->len + 2 > b->cap && !pb_room(b, 1))
        return;
    if (b->nomem)
        return;
    b->p[b->len++] = c;
}

/* A number as format_number() prints it, integers without printf. */
static void pb_number(pbuf_t *b, double d)
{
    char buf[NUMBER_TEXT_BYTES];
    if (d > -1e15 && d < 1e15 && (double)(int64_t)d == d) {
        int64_t v = (int64_t)d;
        uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        char *end = buf + sizeof buf, *p = end;
        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u != 0);
        if (v < 0)
            *--p = '-';
        pb_put(b, p, (size_t)(end - p));
        return;
    }
    format_number(d, buf, sizeof buf);
    pb_put(b, buf, strlen(buf));
}

/* A string literal escaped exactly as cJSON prints it: '"' '\' and the bytes below 0x20 (the
 * short forms \b \f \n \r \t, else \u00xx), every other byte as it is. */
static void pb_string(pbuf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    pb_char(b, '"');
    for (;;) {
        const unsigned char *run = p;
        while (*p >= 0x20 && *p != '"' && *p != '\\')
            p++;
        if (p > run)
            pb_put(b, (const char *)run, (size_t)(p - run));
        if (*p == '\0')
            break;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t n = 2;
        switch (*p) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[*p >> 4];
            esc[5] = hex[*p & 15];
            n = 6;
            break;
        }
        pb_put(b, esc, n);
        p++;
    }
    pb_char(b, '"');
}

/*
 * Prints item compactly with exact numbers (format_number), the text emit() writes for the same
 * tree (exact_numbers, then cJSON's printer), without changing the tree. Recursion is bounded by
 * the depth of the inputs the tree was built from (each checked by json_scan).
 */
// NOLINTNEXTLINE(misc-no-recursion): bounded by FSA_LIMIT_JSON_DEPTH (json_scan)
static json_why_t print_exact(pbuf_t *b, const cJSON *item, unsigned depth, unsigned *deepest)
{
    switch (item->type & 0xff) {
    case cJSON_NULL: pb_put(b, "null", 4); break;
    case cJSON_False: pb_put(b, "false", 5); break;
    case cJSON_True: pb_put(b, "true", 4); break;
    case cJSON_Number:
        if (!isfinite(item->valuedouble))
            return JSON_RANGE;
        pb_number(b, item->valuedouble);
        break;
    case cJSON_Raw:
        if (item->valuestring == NULL)
            return JSON_SYNTAX;
        pb_put(b, item->valuestring, strlen(item->valuestring));
        break;
    case cJSON_String: pb_string(b, item->valuestring); break;
    case cJSON_Array:
    case cJSON_Object: {
        bool obj = (item->type & 0xff) == cJSON_Object;
        if (depth + 1 > *deepest)
            *deepest = depth + 1;
        pb_char(b, obj ? '{' : '[');
        for (const cJSON *c = item->child; c != NULL; c = c->next) {
            if (c != item->child)
                pb_char(b, ',');
            if (obj) {
                pb_string(b, c->string);
                pb_char(b, ':');
            }
            json_why_t why = print_exact(b, c, depth + 1, deepest);
            if (why != JSON_OK)
                return why;
        }
        pb_char(b, obj ? '}' : ']');
        break;
    }
    default: return JSON_SYNTAX;
    }
    return JSON_OK;
}

/*
 * emit() for an object root, leaving the tree as it is (print_exact). What json_scan checks of
 * emit's text holds here by construction, but for the size and the depth: every string of the tree
 * comes from a text that passed json_scan (a stored entity, an op's payload) or from the model's
 * own tables and checked op members, and print_exact writes valid JSON with numbers of at most
 * NUMBER_TEXT_BYTES. So only those two are checked, in json_scan's order (the size first).
 */
static json_why_t emit_exact(const cJSON *root, size_t max_bytes, char **out)
{
    pbuf_t b = {NULL, 0, 0, false};
    unsigned deepest = 0;
    *out = NULL;
    json_why_t why = print_exact(&b, root, 0, &deepest);
    if (why == JSON_OK && (b.nomem || !pb_room(&b, 0)))
        why = JSON_NOMEM;
    if (why == JSON_OK) {
        b.p[b.len] = '\0';
        if (b.len > max_bytes)
            why = JSON_SIZE;
        else if (deepest > FSA_LIMIT_JSON_DEPTH)
            why = JSON_DEPTH;
    }
    if (why == JSON_OK) {
        *out = b.p;
        return JSON_OK;
    }
    fsa_free(b.p);
    return why;
}

/* Reads an int field's value: an integral number of magnitude at most SAFE_INT_MAX. */
static bool int_value(const cJSON *v, int64_t *out)
{
    if (!json_number(v))
        return false;
    double d = v->valuedouble;
    if (!(d >= (double)-SAFE_INT_MAX && d <= (double)SAFE_INT_MAX) || (double)(int64_t)d != d)
        return false;
    *out = (int64_t)d;
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* RFC 7396 merge patch.                                                                      */

static bool merge_into(cJSON *target, const cJSON *patch);

/*
 * MergePatch(target, patch) of RFC 7396 section 2, on a target the function owns (NULL: absent).
 * Returns the result, which the caller owns, or NULL when an allocation failed (target deleted).
 * It recurses with merge_into as deep as the patch, which parse_checked bounded.
 */
// NOLINTNEXTLINE(misc-no-recursion): bounded by FSA_LIMIT_JSON_DEPTH (json_scan)
static cJSON *merge_value(cJSON *target, const cJSON *patch)
{
    if (!json_object(patch)) {
        cJSON_Delete(target);
        return cJSON_Duplicate(patch, true);
    }
    if (!json_object(target)) {
        cJSON_Delete(target);
        target = cJSON_CreateObject();
        if (target == NULL)
            return NULL;
    }
    if (!merge_into(target, patch)) {
        cJSON_Delete(target);
        return NULL;
    }
    return target;
}

/* The slot of index (sorted by key) holding the member named like key_holder, NULL if none. */
static cJSON **member_slot(cJSON **index, size_t n, const cJSON *key_holder)
{
    /* bsearch's loop: one import less in the device binary */
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_member_key(&key_holder, &index[mid]);
        if (c == 0)
            return &index[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/*
 * Merges the object patch into the object target in place; false on ENOMEM (target then holds a
 * partial merge, which every caller discards). A large target is indexed once, sorted by key,
 * so a patch of many keys into an object of many keys costs n log n, not n squared. Members the
 * patch deletes are parked until the end, because the index still compares against their keys.
 */
// NOLINTNEXTLINE(misc-no-recursion): bounded by FSA_LIMIT_JSON_DEPTH (json_scan)
static bool merge_into(cJSON *target, const cJSON *patch)
{
    assert(target != NULL && patch != NULL); /* two objects, as merge_value and its callers check */
    cJSON **index = NULL;
    cJSON *parked = NULL;
    bool ok = false;
    size_t n = count_children(target);

    if (n > SMALL_OBJECT && patch->child != NULL) {
        index = fsa_malloc(n * sizeof *index); // NOLINT(bugprone-sizeof-expression)
        parked = cJSON_CreateArray();
        if (index == NULL || parked == NULL)
            goto out;
        size_t i = 0;
        for (cJSON *c = target->child; c != NULL; c = c->next)
            index[i++] = c;
        qsort(index, n, sizeof *index, cmp_member_key); // NOLINT(bugprone-sizeof-expression)
    }
    for (const cJSON *p = patch->child; p != NULL; p = p->next) {
        cJSON **slot = NULL;
        cJSON *cur;
        if (index != NULL) {
            slot = member_slot(index, n, p);
            cur = slot != NULL ? *slot : NULL;
        } else {
            cur = cJSON_GetObjectItemCaseSensitive(target, p->string);
        }
        if (json_null(p)) {
            if (cur != NULL) {
                cJSON_DetachItemViaPointer(target, cur);
                if (parked != NULL)
                    cJSON_AddItemToArray(parked, cur);
                else
                    cJSON_Delete(cur);
            }
            continue;
        }
        if (json_object(p) && json_object(cur)) {
            if (!merge_into(cur, p))
                goto out;
            continue;
        }
        cJSON *v = merge_value(NULL, p);
        if (v == NULL)
            goto out;
        if (cur != NULL) {
            replace_member(target, cur, v);
            if (slot != NULL)
                *slot = v;
        } else if (!cJSON_AddItemToObject(target, p->string, v)) {
            cJSON_Delete(v);
            goto out;
        }
    }
    ok = true;
out:
    fsa_free(index);
    cJSON_Delete(parked);
    return ok;
}

/* ------------------------------------------------------------------------------------------ */
/* Errors.                                                                                    */

static void clear_err(fsa_model_err_t *err)
{
    if (err != NULL) {
        err->code[0] = '\0';
        err->message[0] = '\0';
    }
}

/* True when the fixed-size string member s holds a NUL, so it can be read as a C string. */
static bool terminated(const char *s, size_t size)
{
    return memchr(s, '\0', size) != NULL;
}

static bool op_id_ok(const fsa_op_t *op)
{
    return terminated(op->id, sizeof op->id) && fsa_model_id_valid(op->id);
}

/* s when it is printable ASCII, so a message stays one readable line; else a placeholder (NULL
 * included: a cJSON member without a name). */
static const char *printable(const char *s)
{
    if (s == NULL)
        return "(unnamed)";
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < 0x20 || *p > 0x7E)
            return "(unprintable)";
    }
    return s;
}

/*
 * Fills err (when non-NULL) with code and a message that starts with the entity it is about,
 * "jobneed J1: ...", and returns st. op may be NULL; an invalid type or id is left out of the
 * prefix rather than echoed.
 */
static fsa_status_t op_fail(fsa_model_err_t *err, const fsa_op_t *op, fsa_status_t st,
                            const char *code, const char *fmt, ...) FSA_PRINTF(5, 6);

static fsa_status_t op_fail(fsa_model_err_t *err, const fsa_op_t *op, fsa_status_t st,
                            const char *code, const char *fmt, ...)
{
    if (err == NULL)
        return st;
    snprintf(err->code, sizeof err->code, "%s", code);
    int n = 0;
    if (op != NULL && type_ok(op->type) && op_id_ok(op))
        n = snprintf(err->message, sizeof err->message, "%s %s: ", types[op->type].name, op->id);
    else if (op != NULL && type_ok(op->type))
        n = snprintf(err->message, sizeof err->message, "%s: ", types[op->type].name);
    if (n < 0 || (size_t)n >= sizeof err->message)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message + n, sizeof err->message - (size_t)n, fmt, ap);
    va_end(ap);
    return st;
}
/* The static analyzer does not follow calls into variadic functions, so it would take any status
 * from op_fail, FSA_OK included, and then report the NULL outputs of the failure paths. Every
 * call below returns its st in plain sight instead (st is always a constant). */
#define op_fail(err, op, st, ...) (op_fail(err, op, st, __VA_ARGS__), (st))

/* Maps a refused JSON text to its status and error: what names the text ("fields", "patch"). */
static fsa_status_t json_fail(fsa_model_err_t *err, const fsa_op_t *op, json_why_t why,
                              size_t max_bytes, const char *what)
{
    char detail[96];
    if (why == JSON_NOMEM)
        return op_fail(err, op, FSA_ENOMEM, "out_of_memory", "out of memory");
    describe_json(why, max_bytes, detail, sizeof detail);
    return op_fail(err, op, FSA_EINVAL, "invalid_value", "%s: %s", what, detail);
}

static fsa_status_t nomem(fsa_model_err_t *err, const fsa_op_t *op)
{
    return op_fail(err, op, FSA_ENOMEM, "out_of_memory", "out of memory");
}

/* ------------------------------------------------------------------------------------------ */
/* Validating an op on its own.                                                               */

static bool enum_allowed(const char *s)
{
    for (size_t i = 0; i < COUNT_OF(attendance_kinds); i++) {
        if (strcmp(attendance_kinds[i], s) == 0)
            return true;
    }
    return false;
}

/* Checks that v may be the value of field def (its JSON type, status names, enum members). */
static fsa_status_t check_value(const fsa_op_t *op, const fsa_field_def_t *def, const cJSON *v,
                                fsa_model_err_t *err)
{
    int64_t i;
    switch (def->kind) {
    case FSA_FIELD_STR:
        if (json_string(v))
            return FSA_OK;
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "%s must be a string", def->name);
    case FSA_FIELD_STR_NULL:
        /* The one such field, parent_id, names another jobneed, so a string must be an id. */
        if (json_null(v) || (json_string(v) && fsa_model_id_valid(v->valuestring)))
            return FSA_OK;
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "%s must be null or an id", def->name);
    case FSA_FIELD_INT:
        if (int_value(v, &i))
            return FSA_OK;
        return op_fail(err, op, FSA_EINVAL, "invalid_value",
                       "%s must be an integer of magnitude below 2^53", def->name);
    case FSA_FIELD_NUM:
        if (json_number(v))
            return FSA_OK;
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "%s must be a number", def->name);
    case FSA_FIELD_NUM_NULL:
        if (json_number(v) || json_null(v))
            return FSA_OK;
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "%s must be a number or null",
                       def->name);
    case FSA_FIELD_OBJ:
        if (json_object(v))
            return FSA_OK;
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "%s must be an object", def->name);
    case FSA_FIELD_STATUS:
        if (json_string(v) && fsa_model_status_known(op->type, v->valuestring))
            return FSA_OK;
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "%s must be a status of %s", def->name,
                       types[op->type].name);
    case FSA_FIELD_ENUM:
        if (json_string(v) && enum_allowed(v->valuestring))
            return FSA_OK;
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "%s must be one of checkin, checkout",
                       def->name);
    }
    return op_fail(err, op, FSA_EINVAL, "invalid_value", "%s has an unknown kind", def->name);
}

/* The definition of the field op names, or a failure (unknown_field, invalid_value). */
static fsa_status_t op_field(const fsa_op_t *op, fsa_model_err_t *err, const fsa_field_def_t **out)
{
    *out = NULL;
    if (!terminated(op->field, sizeof op->field))
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "field name is not terminated");
    *out = fsa_model_field(op->type, op->field);
    if (*out == NULL)
        return op_fail(err, op, FSA_EINVAL, "unknown_field", "%s has no field %s",
                       types[op->type].name, printable(op->field));
    return FSA_OK;
}

/* An append key: 1..FSA_LIMIT_ID_BYTES bytes of UTF-8 without control characters. */
static bool key_valid(const char *key, size_t size)
{
    if (!terminated(key, size) || key[0] == '\0')
        return false;
    const unsigned char *p = (const unsigned char *)key, *end = p + strlen(key);
    if (end - p > FSA_LIMIT_ID_BYTES)
        return false;
    while (p < end) {
        if (*p < 0x20 || *p == 0x7F)
            return false;
        size_t n = *p < 0x80 ? 1 : utf8_len(p, end);
        if (n == 0)
            return false;
        p += n;
    }
    return true;
}

/* Parses op->json, which must be present (a create's fields may be absent: same as {}); what
 * names it in messages. */
static fsa_status_t op_payload(const fsa_op_t *op, const char *what, fsa_model_err_t *err,
                               cJSON **out)
{
    if (op->json == NULL && op->kind == FSA_OP_CREATE) {
        *out = cJSON_CreateObject();
        return *out != NULL ? FSA_OK : nomem(err, op);
    }
    if (op->json == NULL)
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "%s has no %s",
                       op_kind_names[op->kind], what);
    json_why_t why = parse_checked(op->json, FSA_LIMIT_FIELDS_BYTES, out);
    if (why != JSON_OK)
        return json_fail(err, op, why, FSA_LIMIT_FIELDS_BYTES, what);
    return FSA_OK;
}

/* Checks a create's or a set's fields object, member by member. */
static fsa_status_t check_fields(const fsa_op_t *op, const cJSON *fields, fsa_model_err_t *err)
{
    if (!json_object(fields))
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "fields must be an object");
    if (op->kind == FSA_OP_SET && fields->child == NULL)
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "set names no field");
    for (const cJSON *m = fields->child; m != NULL; m = m->next) {
        const fsa_field_def_t *def = fsa_model_field(op->type, m->string);
        if (def == NULL)
            return op_fail(err, op, FSA_EINVAL, "unknown_field", "%s has no field %s",
                           types[op->type].name, printable(m->string));
        if (op->kind == FSA_OP_SET && def->kind == FSA_FIELD_STATUS)
            return op_fail(err, op, FSA_EINVAL, "invalid_value",
                           "%s changes only by transition, never by set", def->name);
        fsa_status_t st = check_value(op, def, m, err);
        if (st != FSA_OK)
            return st;
    }
    if (op->kind == FSA_OP_CREATE) {
        size_t n = 0;
        const fsa_field_def_t *f = fsa_model_fields(op->type, &n);
        for (size_t i = 0; i < n; i++) {
            if (f[i].required && cJSON_GetObjectItemCaseSensitive(fields, f[i].name) == NULL)
                return op_fail(err, op, FSA_EINVAL, "invalid_value", "create lacks %s", f[i].name);
        }
        /* A position is whole or absent (no fix): half of one would be read as a place. Absent
         * means null, the default. Attendance is created once and never changed, so create is
         * the only op that has to check it. */
        if (op->type == FSA_TYPE_ATTENDANCE) {
            const cJSON *lat = cJSON_GetObjectItemCaseSensitive(fields, "lat");
            const cJSON *lon = cJSON_GetObjectItemCaseSensitive(fields, "lon");
            bool lat_null = lat == NULL || json_null(lat);
            bool lon_null = lon == NULL || json_null(lon);
            if (lat_null != lon_null)
                return op_fail(err, op, FSA_EINVAL, "invalid_value",
                               "lat and lon are both numbers or both null (no fix), not one of "
                               "each");
        }
    }
    return FSA_OK;
}

static fsa_status_t check_transition(const fsa_op_t *op, unsigned flags, fsa_model_err_t *err)
{
    fsa_type_t t = op->type;
    if (!terminated(op->from, sizeof op->from) || !fsa_model_status_known(t, op->from))
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "from '%.31s' is not a status of %s",
                       terminated(op->from, sizeof op->from) ? printable(op->from) : "(overlong)",
                       fsa_type_name(t));
    if (!terminated(op->to, sizeof op->to) || !fsa_model_status_known(t, op->to))
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "to '%.31s' is not a status of %s",
                       terminated(op->to, sizeof op->to) ? printable(op->to) : "(overlong)",
                       fsa_type_name(t));
    bool by_server = (flags & FSA_APPLY_BY_SERVER) != 0;
    if (fsa_model_transition_allowed(t, op->from, op->to, by_server))
        return FSA_OK;
    const status_edge_t *e = find_edge(t, op->from, op->to);
    return op_fail(err, op, FSA_ETRANSITION, "invalid_transition",
                   "%s" ARROW "%s is not an allowed transition%s", op->from, op->to,
                   e != NULL ? " (only the server makes it)" : "");
}

/* What every op must be, whatever its kind: flags, type, kind, id, and attendance append-only. */
static fsa_status_t check_head(const fsa_op_t *op, unsigned flags, fsa_model_err_t *err)
{
    if (op == NULL)
        return op_fail(err, NULL, FSA_EINVAL, "invalid_value", "no op");
    if ((flags & ~(FSA_APPLY_BY_SERVER | FSA_APPLY_REPLAY)) != 0)
        return op_fail(err, NULL, FSA_EINVAL, "invalid_value", "unknown flags 0x%x", flags);
    if (!type_ok(op->type))
        return op_fail(err, NULL, FSA_EINVAL, "unknown_type", "unknown entity type %d",
                       (int)op->type);
    if ((unsigned)op->kind >= FSA__OP_COUNT)
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "unknown op kind %d", (int)op->kind);
    if (!op_id_ok(op))
        return op_fail(err, op, FSA_EINVAL, "invalid_value",
                       "id is not 1..%d bytes of [A-Za-z0-9._:-]", FSA_LIMIT_ID_BYTES);
    if (op->type == FSA_TYPE_ATTENDANCE && op->kind != FSA_OP_CREATE)
        return op_fail(err, op, FSA_EINVAL, "immutable",
                       "attendance is append-only, %s does not apply", op_kind_names[op->kind]);
    return FSA_OK;
}

/* A field of the kind the op applies to (what: the op's name, kind_name: the field kind's). */
static fsa_status_t check_field_kind(const fsa_op_t *op, fsa_field_kind_t kind, const char *what,
                                     const char *kind_name, fsa_model_err_t *err)
{
    const fsa_field_def_t *def = NULL;
    fsa_status_t st = op_field(op, err, &def);
    if (st != FSA_OK)
        return st;
    if (def->kind != kind)
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "%s applies to %s, not to %s", what,
                       kind_name, def->name);
    return FSA_OK;
}

/* A merge: an object field, and an object patch (into *json, the caller's to delete). */
static fsa_status_t check_merge(const fsa_op_t *op, fsa_model_err_t *err, cJSON **json)
{
    fsa_status_t st = check_field_kind(op, FSA_FIELD_OBJ, "merge", "object fields", err);
    if (st != FSA_OK)
        return st;
    if ((st = op_payload(op, "patch", err, json)) != FSA_OK)
        return st;
    /* RFC 7396 lets a non-object patch replace the target, which would change the field's
     * type; an object field takes only object patches. */
    if (!json_object(*json))
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "patch must be an object");
    return FSA_OK;
}

/* An append: an object field, a valid key and max_len, and an item (into *json). */
static fsa_status_t check_append(const fsa_op_t *op, fsa_model_err_t *err, cJSON **json)
{
    fsa_status_t st = check_field_kind(op, FSA_FIELD_OBJ, "append", "object fields", err);
    if (st != FSA_OK)
        return st;
    if (!key_valid(op->key, sizeof op->key))
        return op_fail(err, op, FSA_EINVAL, "invalid_value",
                       "key is not 1..%d bytes of printable UTF-8", FSA_LIMIT_ID_BYTES);
    if (op->max_len < 0)
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "max_len is negative");
    return op_payload(op, "item", err, json);
}

/*
 * fsa_model_validate_op(), handing back the op's parsed json (create, set, merge, append) in
 * *payload for fsa_model_apply() to use; NULL for the other kinds and on failure.
 */
static fsa_status_t check_op(const fsa_op_t *op, unsigned flags, fsa_model_err_t *err,
                             cJSON **payload)
{
    cJSON *json = NULL;
    *payload = NULL;
    fsa_status_t st = check_head(op, flags, err);
    if (st != FSA_OK)
        return st;

    switch (op->kind) {
    case FSA_OP_CREATE:
    case FSA_OP_SET:
        if ((st = op_payload(op, "fields", err, &json)) == FSA_OK)
            st = check_fields(op, json, err);
        break;
    case FSA_OP_MERGE: st = check_merge(op, err, &json); break;
    case FSA_OP_INCREMENT:
        st = check_field_kind(op, FSA_FIELD_INT, "increment", "integer fields", err);
        break;
    case FSA_OP_TRANSITION:
        st = check_field_kind(op, FSA_FIELD_STATUS, "transition", "the status field", err);
        if (st == FSA_OK)
            st = check_transition(op, flags, err);
        break;
    case FSA_OP_APPEND: st = check_append(op, err, &json); break;
    default: st = op_fail(err, op, FSA_EINVAL, "invalid_value", "unknown op kind"); break;
    }
    if (st == FSA_OK) {
        *payload = json;
        json = NULL;
    }
    cJSON_Delete(json);
    return st;
}

fsa_status_t fsa_model_validate_op(const fsa_op_t *op, unsigned flags, fsa_model_err_t *err)
{
    cJSON *payload = NULL;
    clear_err(err);
    fsa_status_t st = check_op(op, flags, err, &payload);
    cJSON_Delete(payload);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Applying an op.                                                                            */

/*
 * A create takes the fields in the protocol's order, each given or defaulted. A create may give
 * the status field any status of the machine, not only the initial one (check_value enforces
 * that it is known): entities also come into being on the server or by import already in
 * progress, and the status machine governs changes, which a create is not.
 */
static fsa_status_t build_created(const fsa_op_t *op, cJSON *given, cJSON **out,
                                  fsa_model_err_t *err)
{
    size_t n = 0;
    const fsa_field_def_t *f = fsa_model_fields(op->type, &n);
    cJSON *obj = cJSON_CreateObject();
    if (obj == NULL)
        return nomem(err, op);
    for (size_t i = 0; i < n; i++) {
        const fsa_field_def_t *def = &f[i];
        cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(given, def->name);
        if (v == NULL) /* check_fields saw every required field, so this one has a default */
            v = cJSON_ParseWithLengthOpts(def->default_json, strlen(def->default_json) + 1, NULL,
                                          false);
        if (v == NULL || !cJSON_AddItemToObject(obj, def->name, v)) {
            cJSON_Delete(v);
            cJSON_Delete(obj);
            return nomem(err, op);
        }
    }
    *out = obj;
    return FSA_OK;
}

/*
 * The member of fields for def, added with its default when absent (an entity stored before a
 * field existed, or by another writer); NULL on ENOMEM.
 */
static cJSON *field_or_default(cJSON *fields, const fsa_field_def_t *def)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(fields, def->name);
    if (v != NULL)
        return v;
    v = cJSON_ParseWithLengthOpts(def->default_json, strlen(def->default_json) + 1, NULL, false);
    if (v == NULL || !cJSON_AddItemToObject(fields, def->name, v)) {
        cJSON_Delete(v);
        return NULL;
    }
    return v;
}

static fsa_status_t apply_set(const fsa_op_t *op, cJSON *fields, cJSON *given, fsa_model_err_t *err)
{
    cJSON *next;
    for (cJSON *m = given->child; m != NULL; m = next) {
        next = m->next;
        /* check_fields vouched for every member: its name is a field's, byte for byte */
        assert(fsa_model_field(op->type, m->string) != NULL);
        cJSON_DetachItemViaPointer(given, m);
        if (!put_member(fields, m->string, m))
            return nomem(err, op);
    }
    return FSA_OK;
}

static fsa_status_t apply_increment(const fsa_op_t *op, cJSON *fields, const fsa_field_def_t *def,
                                    fsa_model_err_t *err)
{
    int64_t cur;
    cJSON *v = field_or_default(fields, def);
    if (v == NULL)
        return nomem(err, op);
    if (!int_value(v, &cur))
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "stored %s is not an integer",
                       def->name);
    /* Both bounds are checked without forming the sum, which could overflow int64. */
    if ((op->by > 0 && cur > SAFE_INT_MAX - op->by) || (op->by < 0 && cur < -SAFE_INT_MAX - op->by))
        return op_fail(err, op, FSA_EINVAL, "invalid_value",
                       "%s %+" PRId64 " leaves the integer range of magnitude below 2^53",
                       def->name, op->by);
    cJSON *sum = json_new(cJSON_Number, (double)(cur + op->by), NULL);
    if (sum == NULL)
        return nomem(err, op);
    replace_member(fields, v, sum);
    return FSA_OK;
}

static fsa_status_t apply_transition(const fsa_op_t *op, cJSON *fields, const fsa_field_def_t *def,
                                     fsa_model_err_t *err)
{
    cJSON *v = field_or_default(fields, def);
    if (v == NULL)
        return nomem(err, op);
    if (!json_string(v))
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "stored %s is not a string",
                       def->name);
    if (strcmp(v->valuestring, op->from) != 0) {
        if (fsa_model_status_known(op->type, v->valuestring))
            return op_fail(err, op, FSA_ECONFLICT, "conflict", "%s is %s, not %s", def->name,
                           v->valuestring, op->from);
        return op_fail(err, op, FSA_ECONFLICT, "conflict", "%s is not %s", def->name, op->from);
    }
    cJSON *to = json_new(cJSON_String, 0, op->to);
    if (to == NULL)
        return nomem(err, op);
    replace_member(fields, v, to);
    return FSA_OK;
}

/* Appends item (taken, *item set to NULL) to the array at op->key inside the object field. */
static fsa_status_t apply_append(const fsa_op_t *op, cJSON *fields, const fsa_field_def_t *def,
                                 cJSON **item, fsa_model_err_t *err)
{
    cJSON *obj = field_or_default(fields, def);
    if (obj == NULL)
        return nomem(err, op);
    if (!json_object(obj))
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "stored %s is not an object",
                       def->name);
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, op->key);
    if (arr == NULL) {
        arr = cJSON_CreateArray();
        if (arr == NULL || !cJSON_AddItemToObject(obj, op->key, arr)) {
            cJSON_Delete(arr);
            return nomem(err, op);
        }
    } else if (!json_array(arr)) {
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "%s.%s is not an array", def->name,
                       printable(op->key));
    }
    cJSON_AddItemToArray(arr, *item);
    *item = NULL;
    if (op->max_len > 0) {
        int64_t size = (int64_t)count_children(arr); /* cJSON_GetArraySize */
        for (; size > op->max_len; size--)
            cJSON_Delete(cJSON_DetachItemViaPointer(arr, arr->child)); /* the oldest, first */
    }
    return FSA_OK;
}

/*
 * Rebuilds fields with the type's fields first, in the protocol's order, then any others in
 * their stored order (kept rather than lost: a newer writer may know them), so the text of an
 * entity does not depend on the order its ops came in. Takes *fields; NULL on ENOMEM.
 */
static cJSON *in_protocol_order(fsa_type_t type, cJSON *fields)
{
    cJSON *out = cJSON_CreateObject();
    if (out == NULL) {
        cJSON_Delete(fields);
        return NULL;
    }
    const fsa_field_def_t *f = &all_fields[types[type].fields];
    for (size_t i = 0; i < types[type].n_fields; i++) {
        cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(fields, f[i].name);
        if (v != NULL)
            cJSON_AddItemToArray(out, v); /* keeps v's key; this is how objects are linked */
    }
    while (fields->child != NULL)
        cJSON_AddItemToArray(out, cJSON_DetachItemViaPointer(fields, fields->child));
    cJSON_Delete(fields);
    return out;
}

/* A merge of payload into the object field def (made from its default when missing). */
static fsa_status_t apply_merge(const fsa_op_t *op, cJSON *fields, const fsa_field_def_t *def,
                                const cJSON *payload, fsa_model_err_t *err)
{
    cJSON *obj = field_or_default(fields, def);
    /* Two out-of-memory cases, with the type check between them. */
    if (obj == NULL)
        return nomem(err, op);
    if (!json_object(obj))
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "stored %s is not an object",
                       def->name);
    if (!merge_into(obj, payload))
        return nomem(err, op);
    return FSA_OK;
}

/* An op other than create on a stored entity: *fields is its tree (parsed from fields_json here
 * when NULL), changed in place; *payload is check_op's (an append may take it). */
static fsa_status_t apply_to_stored(const fsa_op_t *op, const char *fields_json, int64_t version,
                                    unsigned flags, cJSON **fields, cJSON **payload,
                                    fsa_model_err_t *err)
{
    if (op->kind == FSA_OP_CREATE)
        return op_fail(err, op, FSA_ECONFLICT, "conflict", "exists already");
    json_why_t why =
        *fields != NULL ? JSON_OK : parse_checked(fields_json, FSA_LIMIT_FIELDS_BYTES, fields);
    if (why != JSON_OK)
        return json_fail(err, op, why, FSA_LIMIT_FIELDS_BYTES, "stored fields");
    if (!json_object(*fields))
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "stored fields are not an object");
    const fsa_field_def_t *def = NULL;
    if (op->kind != FSA_OP_SET) {
        def = fsa_model_field(op->type, op->field);
        assert(def != NULL); /* check_op vouched for it */
    }

    switch (op->kind) {
    case FSA_OP_SET:
        if (!(flags & FSA_APPLY_REPLAY) && op->base_version != version)
            return op_fail(err, op, FSA_ECONFLICT, "conflict",
                           "version is %" PRId64 ", the set was based on %" PRId64, version,
                           op->base_version);
        return apply_set(op, *fields, *payload, err);
    case FSA_OP_MERGE: return apply_merge(op, *fields, def, *payload, err);
    case FSA_OP_INCREMENT: return apply_increment(op, *fields, def, err);
    case FSA_OP_TRANSITION: return apply_transition(op, *fields, def, err);
    case FSA_OP_APPEND: return apply_append(op, *fields, def, payload, err);
    default: return op_fail(err, op, FSA_EINVAL, "invalid_value", "unknown op kind");
    }
}

/* The resulting tree (*fields, put in the protocol's order) printed into *out_json, within the
 * entity limit, by print_exact (emit's text, without changing the tree or scanning the text
 * again: emit_exact says why that holds for a tree built from checked texts, which this one is);
 * with keep, the tree is handed over in *keep. */
static fsa_status_t emit_result(const fsa_op_t *op, cJSON **fields, cJSON **keep, char **out_json,
                                fsa_model_err_t *err)
{
    *fields = in_protocol_order(op->type, *fields);
    if (*fields == NULL)
        return nomem(err, op);
    json_why_t why = emit_exact(*fields, FSA_LIMIT_FIELDS_BYTES, out_json);
    if (why == JSON_SIZE)
        /* PROTOCOL.md section 3: the op would take the entity past the limit; nothing changes. */
        return op_fail(err, op, FSA_EINVAL, "entity_too_large",
                       "the entity's fields would be longer than %d bytes as JSON",
                       FSA_LIMIT_FIELDS_BYTES);
    if (why != JSON_OK)
        return json_fail(err, op, why, FSA_LIMIT_FIELDS_BYTES, "the resulting fields");
    if (keep != NULL) {
        *keep = *fields;
        *fields = NULL;
    }
    return FSA_OK;
}

/* The op checked and applied onto *fields: the tree the caller holds, else fields_json parsed
 * here, else (both NULL: no entity) built by a create. *fields is the result, not yet put in the
 * protocol's order, or what is left of it after a failure (the caller deletes it). */
static fsa_status_t change_tree(const fsa_op_t *op, const char *fields_json, int64_t version,
                                unsigned flags, cJSON **fields, fsa_model_err_t *err)
{
    cJSON *payload = NULL;
    fsa_status_t st = check_op(op, flags, err, &payload);
    if (st == FSA_OK && *fields == NULL && fields_json == NULL)
        st = op->kind != FSA_OP_CREATE
                 ? op_fail(err, op, FSA_ENOTFOUND, "not_found", "no such entity")
                 : build_created(op, payload, fields, err);
    else if (st == FSA_OK)
        st = apply_to_stored(op, fields_json, version, flags, fields, &payload, err);
    cJSON_Delete(payload);
    return st;
}

/*
 * A create's result written straight from its payload's text, without a tree: the common record
 * (a check-in) spent a quarter of its instructions parsing its fields into cJSON, building the
 * entity with its defaults and printing it again (docs/performance.md, "Recording", session 26).
 * Only a payload that the tree path would accept and print member for member as it came takes it:
 * every member a field of the type, once, with a value of its kind written as print_exact writes it
 * (a string with no escape, a number in its shortest exact form, null, or an empty object). The
 * fields then come out in the protocol's order, each given or its default (the table's text, which
 * is print_exact's for it: the test named below compares creates that leave fields out). Anything
 * else returns 0 and the tree path decides, naming any error; both paths give the same text
 * (test_fsa_model_apply__a_create_prints_as_its_tree).
 * Returns 1 with *out_json set, 0 when the tree path must decide, -1 out of memory.
 */
typedef struct fast_member {
    const char *v; /* the value's text, in op->json */
    size_t n;
} fast_member_t;

/* The end of the string whose opening quote is at p, past its closing quote; NULL when it holds
 * an escape (printed back, an escape may change: "\/" as "/"). The scan vouched for the rest. */
static const char *fast_string_end(const char *p)
{
    for (p++; *p != '"'; p++) {
        if (*p == '\\')
            return NULL;
    }
    return p + 1;
}

/* Whether the number text v (n bytes) is what print_exact writes for its value. */
static bool fast_number_exact(const char *v, size_t n)
{
    const char *d = v[0] == '-' ? v + 1 : v;
    size_t digits = (size_t)(v + n - d);
    if (digits <= 15 && strspn(d, "0123456789") >= digits)
        return !(d[0] == '0' && (digits > 1 || d != v)); /* "-0" prints as 0 */
    if (n >= NUMBER_TEXT_BYTES)
        return false;
    char text[NUMBER_TEXT_BYTES], *end = NULL, printed[NUMBER_TEXT_BYTES];
    memcpy(text, v, n);
    text[n] = '\0';
    double x = strtod(text, &end);
    if (end != text + n || !isfinite(x))
        return false; /* a locale whose decimal point is not '.', or out of range */
    format_number(x, printed, sizeof printed);
    return strlen(printed) == n && memcmp(printed, v, n) == 0;
}

/* Whether the value v (n bytes, a JSON value the scan vouched for) is one of def's kind as
 * check_value would accept it and written as print_exact writes it. */
static bool fast_value_ok(fsa_type_t type, const fsa_field_def_t *def, const char *v, size_t n)
{
    bool str = v[0] == '"', num = v[0] == '-' || is_digit((unsigned char)v[0]);
    bool null = n == 4 && memcmp(v, "null", 4) == 0;
    char text[FSA_ID_BYTES];
    if (str && n - 2 < sizeof text) {
        memcpy(text, v + 1, n - 2);
        text[n - 2] = '\0';
    } else {
        text[0] = '\0';
    }
    switch (def->kind) {
    case FSA_FIELD_STR: return str;
    case FSA_FIELD_STR_NULL: return null || (str && fsa_model_id_valid(text));
    case FSA_FIELD_INT: /* at most 15 digits: within SAFE_INT_MAX, as int_value wants */
        return num && strspn(v, "-0123456789") >= n && n - (v[0] == '-') <= 15 &&
               fast_number_exact(v, n);
    case FSA_FIELD_NUM: return num && fast_number_exact(v, n);
    case FSA_FIELD_NUM_NULL: return null || (num && fast_number_exact(v, n));
    case FSA_FIELD_OBJ: return n == 2 && memcmp(v, "{}", 2) == 0;
    case FSA_FIELD_STATUS: return str && fsa_model_status_known(type, text);
    case FSA_FIELD_ENUM: return str && enum_allowed(text);
    }
    return false;
}

#define FAST_WS " \t\r\n"

static int create_fast(const fsa_op_t *op, char **out_json)
{
    size_t nf = 0;
    const fsa_field_def_t *defs = fsa_model_fields(op->type, &nf);
    fast_member_t given[F_END] = {{NULL, 0}};
    _Static_assert(F_END <= 32, "the fields given fit a bit set");
    uint32_t seen = 0;
    if (op->json == NULL || defs == NULL || json_scan(op->json, FSA_LIMIT_FIELDS_BYTES) != JSON_OK)
        return 0;
    const char *p = op->json + strspn(op->json, FAST_WS);
    if (*p++ != '{')
        return 0;
    p += strspn(p, FAST_WS);
    while (*p == '"') { /* the scan vouched for the syntax: key, colon, value, comma or brace */
        const char *key = p + 1, *kend = fast_string_end(p);
        if (kend == NULL)
            return 0;
        size_t k = 0, klen = (size_t)(kend - 1 - key);
        while (k < nf && !(strlen(defs[k].name) == klen && memcmp(defs[k].name, key, klen) == 0))
            k++;
        if (k == nf || (seen & (UINT32_C(1) << k)))
            return 0;                         /* not a field of the type, or given twice */
        p = kend + strspn(kend, FAST_WS) + 1; /* past the colon */
        p += strspn(p, FAST_WS);
        const char *v = p;
        if (*p == '"') {
            if ((p = fast_string_end(p)) == NULL)
                return 0;
        } else if (*p == '{') {
            p += 1 + strspn(p + 1, FAST_WS);
            if (*p++ != '}')
                return 0; /* an object with members: the tree path */
        } else {
            while (*p != '\0' && strchr(FAST_WS ",}", *p) == NULL) /* strcspn, not imported */
                p++;
        }
        size_t n = (size_t)(p - v);
        if (*v == '{') {
            v = "{}"; /* as print_exact prints an empty object */
            n = 2;
        }
        if (!fast_value_ok(op->type, &defs[k], v, n))
            return 0;
        given[k] = (fast_member_t){v, n};
        seen |= UINT32_C(1) << k;
        p += strspn(p, FAST_WS);
        if (*p == ',')
            p += 1 + strspn(p + 1, FAST_WS);
    }
    /* The closing brace: the scan vouched for it and for nothing after it. */
    size_t len = 2;
    for (size_t k = 0; k < nf; k++) {
        if (!(seen & (UINT32_C(1) << k))) {
            if (defs[k].required)
                return 0;
            given[k] = (fast_member_t){defs[k].default_json, strlen(defs[k].default_json)};
        }
        len += strlen(defs[k].name) + 3 + given[k].n + (k > 0);
    }
    if (op->type == FSA_TYPE_ATTENDANCE) {
        /* check_fields: lat and lon are both null or both numbers. */
        int nulls = 0, of = 0;
        for (size_t k = 0; k < nf; k++) {
            if (strcmp(defs[k].name, "lat") == 0 || strcmp(defs[k].name, "lon") == 0) {
                nulls += given[k].v[0] == 'n';
                of++;
            }
        }
        if (of != 2 || nulls == 1)
            return 0;
    }
    if (len > FSA_LIMIT_FIELDS_BYTES)
        return 0;
    char *out = fsa_malloc(len + 1), *w = out;
    if (out == NULL)
        return -1;
    *w++ = '{';
    for (size_t k = 0; k < nf; k++) {
        size_t nl = strlen(defs[k].name);
        if (k > 0)
            *w++ = ',';
        *w++ = '"';
        memcpy(w, defs[k].name, nl);
        w += nl;
        *w++ = '"';
        *w++ = ':';
        memcpy(w, given[k].v, given[k].n);
        w += given[k].n;
    }
    *w++ = '}';
    *w = '\0';
    *out_json = out;
    return 1;
}

/*
 * fsa_model_apply's work. held: the parsed tree of fields_json when the caller has it (taken: it
 * is changed and then kept or deleted), NULL to parse fields_json. keep: NULL, or where the tree
 * of *out_json is handed over on FSA_OK.
 */
static fsa_status_t apply_core(const fsa_op_t *op, const char *fields_json, cJSON *held,
                               int64_t version, unsigned flags, char **out_json, cJSON **keep,
                               fsa_model_err_t *err)
{
    cJSON *fields = held;
    clear_err(err);
    if (out_json == NULL)
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "no out_json");
    *out_json = NULL;
    if (keep == NULL && held == NULL && fields_json == NULL &&
        check_head(op, flags, NULL) == FSA_OK && op->kind == FSA_OP_CREATE) {
        int fast = create_fast(op, out_json);
        if (fast != 0)
            return fast > 0 ? FSA_OK : nomem(err, op);
    }
    fsa_status_t st = change_tree(op, fields_json, version, flags, &fields, err);
    if (st == FSA_OK)
        st = emit_result(op, &fields, keep, out_json, err);
    if (st != FSA_OK) {
        fsa_free(*out_json);
        *out_json = NULL;
    }
    cJSON_Delete(fields);
    return st;
}

fsa_status_t fsa_model_apply(const fsa_op_t *op, const char *fields_json, int64_t version,
                             unsigned flags, char **out_json, fsa_model_err_t *err)
{
    return apply_core(op, fields_json, NULL, version, flags, out_json, NULL, err);
}

/* ------------------------------------------------------------------------------------------ */
/* A sequence of ops on one entity.                                                           */

struct fsa_model_entity {
    char *text;   /* the fields tree is the parse of (NULL: no tree held, or a run's) */
    cJSON *tree;  /* NULL: none held */
    size_t bound; /* a run's: the most any text printed along it could be long (run_vouches) */
};

/* True when e holds the parse of exactly fields_json (a run's tree, ahead of any text, is not). */
static bool held_for(const fsa_model_entity_t *e, const char *fields_json)
{
    return e->tree != NULL && e->text != NULL && fields_json != NULL &&
           strcmp(e->text, fields_json) == 0;
}

static void entity_drop(fsa_model_entity_t *e)
{
    cJSON_Delete(e->tree);
    fsa_free(e->text);
    e->tree = NULL;
    e->text = NULL;
}

fsa_model_entity_t *fsa_model_entity_new(void)
{
    return fsa_calloc(1, sizeof(fsa_model_entity_t));
}

void fsa_model_entity_free(fsa_model_entity_t *e)
{
    if (e == NULL)
        return;
    entity_drop(e);
    fsa_free(e);
}

/* fsa_model_entity_apply's work; strict: a result whose tree cannot be held (out of memory) is
 * FSA_ENOMEM (*out_json NULL) rather than a success that holds nothing. */
static fsa_status_t entity_apply(fsa_model_entity_t *e, const fsa_op_t *op, const char *fields_json,
                                 int64_t version, unsigned flags, char **out_json,
                                 fsa_model_err_t *err, bool strict)
{
    cJSON *held = NULL;
    if (held_for(e, fields_json)) {
        held = e->tree; /* the parse of exactly these fields: taken, changed by the op */
        e->tree = NULL;
    }
    entity_drop(e);
    cJSON *keep = NULL;
    clear_err(err);
    if (out_json == NULL) {
        cJSON_Delete(held);
        return op_fail(err, op, FSA_EINVAL, "invalid_value", "no out_json");
    }
    fsa_status_t st = apply_core(op, fields_json, held, version, flags, out_json, &keep, err);
    if (st == FSA_OK) {
        e->text = fsa_strdup(*out_json);
        if (e->text != NULL) {
            e->tree = keep;
        } else {
            cJSON_Delete(keep); /* nothing is held: the next op parses */
            if (strict) {
                fsa_free(*out_json);
                *out_json = NULL;
                st = nomem(err, op);
            }
        }
    }
    return st;
}

fsa_status_t fsa_model_entity_apply(fsa_model_entity_t *e, const fsa_op_t *op,
                                    const char *fields_json, int64_t version, unsigned flags,
                                    char **out_json, fsa_model_err_t *err)
{
    if (e == NULL)
        return fsa_model_apply(op, fields_json, version, flags, out_json, err);
    return entity_apply(e, op, fields_json, version, flags, out_json, err, false);
}

fsa_status_t fsa_model_entity_apply_strict(fsa_model_entity_t *e, const fsa_op_t *op,
                                           const char *fields_json, int64_t version, unsigned flags,
                                           char **out_json, fsa_model_err_t *err)
{
    if (e == NULL) {
        clear_err(err);
        if (out_json != NULL)
            *out_json = NULL;
        return nomem(err, op);
    }
    return entity_apply(e, op, fields_json, version, flags, out_json, err, true);
}

/* The most bytes an op can add to an entity's text beyond 6 per byte of its payload: the field's
 * default, the field's name and the append's key (escaped), a number's or a status's text, and
 * the punctuation around them. */
#define RUN_SLACK 1024

/* How deep text nests (a valid JSON text: the op's payload, checked when it was recorded). */
static unsigned text_depth(const char *text)
{
    unsigned depth = 0, deepest = 0;
    bool in_string = false;
    for (const char *p = text; p != NULL && *p != '\0'; p++) {
        if (in_string) {
            if (*p == '\\' && p[1] != '\0')
                p++;
            else if (*p == '"')
                in_string = false;
        } else if (*p == '"') {
            in_string = true;
        } else if (*p == '{' || *p == '[') {
            if (++depth > deepest)
                deepest = depth;
        } else if ((*p == '}' || *p == ']') && depth > 0) {
            depth--;
        }
    }
    return deepest;
}

/*
 * Whether op, replayed onto a run whose texts so far were at most *bound bytes long, keeps the
 * text that fsa_model_entity_apply would print after it within the entity's limits, without
 * printing it: then the run decides as one by one would. *bound grows by the most op can add: its
 * payload's values print in at most 6 bytes per byte of their text (strings never longer, a
 * number at most 5 times: "9e18" prints 19 digits), plus RUN_SLACK. Depth: a set or a create
 * places its payload at the top (no deeper than the payload, which passed the limit), a merge one
 * level down (the field), an append three (the field, its key's array, the item); increments and
 * transitions add no level. The tree before op was within both limits (parsed, or vouched for).
 */
static bool run_vouches(const fsa_op_t *op, size_t *bound)
{
    size_t payload = op->json != NULL ? strlen(op->json) : 0;
    *bound += 6 * payload + RUN_SLACK;
    if (*bound > FSA_LIMIT_FIELDS_BYTES)
        return false;
    unsigned above = op->kind == FSA_OP_MERGE ? 1 : op->kind == FSA_OP_APPEND ? 3 : 0;
    return above == 0 || above + text_depth(op->json) <= FSA_LIMIT_JSON_DEPTH;
}

/* The tree of a run's first text, fields_json, parsed, and in *len at least how long print_exact
 * prints it: a text stored as it came (a pull's, a conflict's) may print longer than it is (cJSON
 * writes 1e18 as "1e+18", print_exact as its 19 digits), at most 5 times (run_vouches), which is
 * the bound while it stays far enough under the limit; nearer, the text is printed to measure it.
 * FSA_ETOOLARGE when that print is past the limits already. */
static fsa_status_t run_start(const fsa_op_t *op, const char *fields_json, cJSON **tree,
                              size_t *len, fsa_model_err_t *err)
{
    json_why_t why = parse_checked(fields_json, FSA_LIMIT_FIELDS_BYTES, tree);
    if (why != JSON_OK)
        return json_fail(err, op, why, FSA_LIMIT_FIELDS_BYTES, "stored fields");
    *len = 5 * strlen(fields_json);
    if (*len <= FSA_LIMIT_FIELDS_BYTES / 2)
        return FSA_OK; /* no print needed: room for the run's ops is left */
    char *text = NULL;
    why = emit_exact(*tree, FSA_LIMIT_FIELDS_BYTES, &text);
    *len = text != NULL ? strlen(text) : 0;
    fsa_free(text);
    if (why == JSON_NOMEM)
        return nomem(err, op);
    if (why != JSON_OK)
        return op_fail(err, op, FSA_ETOOLARGE, "entity_too_large",
                       "the stored fields print past the limits: apply one op at a time");
    return FSA_OK;
}

fsa_status_t fsa_model_entity_replay(fsa_model_entity_t *e, const fsa_op_t *op,
                                     const char *fields_json, int64_t version, unsigned flags,
                                     fsa_model_err_t *err)
{
    clear_err(err);
    if (e == NULL)
        return nomem(err, op);
    cJSON *tree = NULL;
    size_t bound = 0; /* no fields: a create starts from nothing */
    fsa_status_t st = FSA_OK;
    if (e->tree != NULL && e->text == NULL) { /* a run's tree */
        bound = e->bound;
        tree = e->tree;
        e->tree = NULL;
    } else if (held_for(e, fields_json)) { /* the parse of print_exact's text */
        bound = strlen(e->text);
        tree = e->tree;
        e->tree = NULL;
    }
    entity_drop(e);
    if (tree == NULL && fields_json != NULL)
        st = run_start(op, fields_json, &tree, &bound, err);
    if (st == FSA_OK)
        st = change_tree(op, fields_json, version, flags, &tree, err);
    if (st == FSA_OK && !run_vouches(op, &bound))
        st = op_fail(err, op, FSA_ETOOLARGE, "entity_too_large",
                     "the run cannot tell without printing whether the fields stay within the "
                     "limits: apply it one op at a time");
    if (st == FSA_OK) {
        e->tree = tree; /* no text: the tree is ahead of every text printed */
        e->bound = bound;
    } else {
        cJSON_Delete(tree);
    }
    return st;
}

fsa_status_t fsa_model_entity_print(fsa_model_entity_t *e, fsa_type_t type, char **out_json)
{
    if (out_json == NULL)
        return FSA_EINVAL;
    *out_json = NULL;
    if (e == NULL || e->tree == NULL || e->text != NULL)
        return FSA_EINVAL;
    if (!type_ok(type)) {
        entity_drop(e);
        return FSA_EINVAL;
    }
    fsa_op_t op = {.type = type}; /* emit_result's errors name an op; nobody reads them here */
    cJSON *tree = e->tree;
    e->tree = NULL;
    cJSON *keep = NULL;
    fsa_status_t st = emit_result(&op, &tree, &keep, out_json, NULL);
    cJSON_Delete(tree);
    if (st == FSA_OK)
        e->text = fsa_strdup(*out_json);
    if (st == FSA_OK && e->text == NULL) {
        fsa_free(*out_json);
        *out_json = NULL;
        st = FSA_ENOMEM;
    }
    if (st == FSA_OK)
        e->tree = keep; /* the parse of the text printed, as after fsa_model_entity_apply */
    else
        cJSON_Delete(keep);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Plain JSON helpers.                                                                        */

static fsa_status_t why_status(json_why_t why)
{
    return why == JSON_OK ? FSA_OK : why == JSON_NOMEM ? FSA_ENOMEM : FSA_EINVAL;
}

fsa_status_t fsa_model_merge_patch(const char *target_json, const char *patch_json, char **out_json)
{
    cJSON *target = NULL, *patch = NULL, *result = NULL;
    json_why_t why;

    if (out_json == NULL)
        return FSA_EINVAL;
    *out_json = NULL;
    if (patch_json == NULL)
        return FSA_EINVAL;
    if (target_json != NULL &&
        (why = parse_checked(target_json, FSA_LIMIT_FIELDS_BYTES, &target)) != JSON_OK)
        goto out;
    if ((why = parse_checked(patch_json, FSA_LIMIT_FIELDS_BYTES, &patch)) != JSON_OK)
        goto out;
    result = merge_value(target, patch); /* takes target, also on failure */
    target = NULL;
    if (result == NULL) {
        why = JSON_NOMEM;
        goto out;
    }
    why = emit(result, FSA_LIMIT_FIELDS_BYTES, out_json);
out:
    cJSON_Delete(target);
    cJSON_Delete(patch);
    cJSON_Delete(result);
    return why_status(why);
}

/*
 * Only the scan, which allocates nothing: the header promises FSA_OK or FSA_EINVAL. What needs a
 * tree to see (repeated keys, numbers beyond a double) is refused when the text is parsed.
 */
fsa_status_t fsa_model_json_check(const char *text, size_t max_bytes)
{
    if (text == NULL)
        return FSA_EINVAL;
    return json_scan(text, max_bytes) == JSON_OK ? FSA_OK : FSA_EINVAL;
}

fsa_status_t fsa_model_get_field(const char *fields_json, const char *name, char **out_json)
{
    cJSON *fields = NULL;
    json_why_t why;
    fsa_status_t st;

    if (out_json == NULL)
        return FSA_EINVAL;
    *out_json = NULL;
    if (fields_json == NULL || name == NULL)
        return FSA_EINVAL;
    if ((why = parse_checked(fields_json, FSA_LIMIT_FIELDS_BYTES, &fields)) != JSON_OK) {
        st = why_status(why);
        goto out;
    }
    if (!json_object(fields)) {
        st = FSA_EINVAL;
        goto out;
    }
    cJSON *v = cJSON_GetObjectItemCaseSensitive(fields, name);
    if (v == NULL) {
        st = FSA_ENOTFOUND;
        goto out;
    }
    st = why_status(emit(v, FSA_LIMIT_FIELDS_BYTES, out_json));
out:
    cJSON_Delete(fields);
    return st;
}

fsa_status_t fsa_model_get_status(const char *fields_json, fsa_type_t type,
                                  char out[FSA_STATUS_BYTES])
{
    cJSON *fields = NULL;
    json_why_t why;
    fsa_status_t st;

    if (out == NULL)
        return FSA_EINVAL;
    out[0] = '\0';
    if (fields_json == NULL || !type_ok(type))
        return FSA_EINVAL;
    const char *sf = fsa_model_status_field(type);
    if (sf == NULL)
        return FSA_ENOTFOUND; /* attendance has no status */
    if ((why = parse_checked(fields_json, FSA_LIMIT_FIELDS_BYTES, &fields)) != JSON_OK) {
        st = why_status(why);
        goto out;
    }
    if (!json_object(fields)) {
        st = FSA_EINVAL;
        goto out;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(fields, sf);
    if (!json_string(v)) {
        st = FSA_ENOTFOUND;
        goto out;
    }
    /* Too long to be any status, and too long for out: a malformed entity, not an absent one. */
    if (strlen(v->valuestring) >= FSA_STATUS_BYTES) {
        st = FSA_EINVAL;
        goto out;
    }
    snprintf(out, FSA_STATUS_BYTES, "%s", v->valuestring);
    st = FSA_OK;
out:
    cJSON_Delete(fields);
    return st;
}

/* Parses text into an object, or fails with FSA_EINVAL / FSA_ENOMEM. */
static fsa_status_t parse_object(const char *text, cJSON **out)
{
    json_why_t why = parse_checked(text, FSA_LIMIT_FIELDS_BYTES, out);
    if (why != JSON_OK)
        return why_status(why);
    if (!json_object(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return FSA_EINVAL;
    }
    return FSA_OK;
}

fsa_status_t fsa_model_same_values(const char *a_json, const char *b_json, const char *keys_json,
                                   bool *same)
{
    cJSON *a = NULL, *b = NULL, *keys = NULL;
    if (same == NULL)
        return FSA_EINVAL;
    *same = false;
    if (a_json == NULL || b_json == NULL || keys_json == NULL)
        return FSA_EINVAL;
    fsa_status_t st = parse_object(a_json, &a);
    if (st == FSA_OK)
        st = parse_object(b_json, &b);
    if (st == FSA_OK)
        st = parse_object(keys_json, &keys);
    if (st == FSA_OK) {
        bool all = true;
        for (const cJSON *k = keys->child; k != NULL && all; k = k->next) {
            const cJSON *va = cJSON_GetObjectItemCaseSensitive(a, k->string);
            const cJSON *vb = cJSON_GetObjectItemCaseSensitive(b, k->string);
            if (va == NULL || vb == NULL)
                all = va == vb;
            else
                all = cJSON_Compare(va, vb, true) != 0;
        }
        *same = all;
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON_Delete(keys);
    return st;
}

fsa_status_t fsa_model_settable(fsa_type_t type, const char *fields_json, char **out_json)
{
    cJSON *fields = NULL;
    *out_json = NULL;
    fsa_status_t st = parse_object(fields_json, &fields);
    for (cJSON *m = st == FSA_OK ? fields->child : NULL, *next; m != NULL; m = next) {
        next = m->next;
        const fsa_field_def_t *def = fsa_model_field(type, m->string);
        if (def == NULL || def->kind == FSA_FIELD_STATUS)
            cJSON_Delete(cJSON_DetachItemViaPointer(fields, m));
    }
    if (st == FSA_OK && fields->child != NULL)
        st = why_status(emit(fields, FSA_LIMIT_FIELDS_BYTES, out_json));
    cJSON_Delete(fields);
    return st;
}

fsa_status_t fsa_model_project(const char *fields_json, const char *keys_json, char **out_json)
{
    cJSON *fields = NULL, *keys = NULL, *res = NULL;
    if (out_json == NULL)
        return FSA_EINVAL;
    *out_json = NULL;
    if (keys_json == NULL)
        return FSA_EINVAL;
    fsa_status_t st = parse_object(keys_json, &keys);
    if (st == FSA_OK && fields_json != NULL)
        st = parse_object(fields_json, &fields);
    if (st == FSA_OK) {
        res = cJSON_CreateObject();
        if (res == NULL)
            st = FSA_ENOMEM;
    }
    for (const cJSON *k = keys != NULL ? keys->child : NULL; st == FSA_OK && k != NULL;
         k = k->next) {
        const cJSON *v =
            fields != NULL ? cJSON_GetObjectItemCaseSensitive(fields, k->string) : NULL;
        cJSON *copy = v != NULL ? cJSON_Duplicate(v, true) : json_new(cJSON_NULL, 0, NULL);
        if (copy == NULL || !cJSON_AddItemToObject(res, k->string, copy)) {
            cJSON_Delete(copy);
            st = FSA_ENOMEM;
        }
    }
    if (st == FSA_OK)
        st = why_status(emit(res, FSA_LIMIT_FIELDS_BYTES, out_json));
    cJSON_Delete(fields);
    cJSON_Delete(keys);
    cJSON_Delete(res);
    return st;
}

fsa_status_t fsa_model_prior_without(const char *later_prior, const char *set_json,
                                     const char *set_prior, char **out_json)
{
    cJSON *later = NULL, *set = NULL, *before = NULL;
    *out_json = NULL;
    fsa_status_t st = parse_object(later_prior, &later);
    if (st == FSA_OK)
        st = parse_object(set_json, &set);
    if (st == FSA_OK)
        st = parse_object(set_prior, &before);
    bool changed = false;
    for (cJSON *m = st == FSA_OK ? later->child : NULL; m != NULL && st == FSA_OK; m = m->next) {
        const cJSON *given = cJSON_GetObjectItemCaseSensitive(set, m->string);
        const cJSON *was = cJSON_GetObjectItemCaseSensitive(before, m->string);
        if (given == NULL || was == NULL || !cJSON_Compare(m, given, true))
            continue;
        cJSON *copy = cJSON_Duplicate(was, true);
        if (copy == NULL) {
            st = FSA_ENOMEM;
            break;
        }
        replace_member(later, m, copy);
        m = copy;
        changed = true;
    }
    if (st == FSA_OK && changed)
        st = why_status(emit(later, FSA_LIMIT_FIELDS_BYTES, out_json));
    cJSON_Delete(later);
    cJSON_Delete(set);
    cJSON_Delete(before);
    return st;
}

fsa_status_t fsa_model_without_keys(const char *fields_json, const char *keys_json, char **out_json)
{
    cJSON *fields = NULL, *keys = NULL;
    *out_json = NULL;
    fsa_status_t st = parse_object(fields_json, &fields);
    if (st == FSA_OK)
        st = parse_object(keys_json, &keys);
    for (const cJSON *k = st == FSA_OK ? keys->child : NULL; k != NULL; k = k->next)
        cJSON_Delete(cJSON_DetachItemFromObjectCaseSensitive(fields, k->string)); /* 1 import */
    if (st == FSA_OK && fields->child != NULL)
        st = why_status(emit(fields, FSA_LIMIT_FIELDS_BYTES, out_json));
    cJSON_Delete(fields);
    cJSON_Delete(keys);
    return st;
}

void fsa_model_free(char *json)
{
    fsa_free(json);
}

/* dst's previous json is not freed: dst is taken as uninitialised (like memcpy). On ENOMEM dst
 * is zeroed, so fsa_op_clear() on it is still safe. */
fsa_status_t fsa_op_copy(fsa_op_t *dst, const fsa_op_t *src)
{
    if (dst == NULL || src == NULL)
        return FSA_EINVAL;
    if (dst == src)
        return FSA_OK;
    char *json = NULL;
    if (src->json != NULL && (json = fsa_strdup(src->json)) == NULL) {
        memset(dst, 0, sizeof *dst);
        return FSA_ENOMEM;
    }
    *dst = *src;
    dst->json = json;
    return FSA_OK;
}

void fsa_op_clear(fsa_op_t *op)
{
    if (op == NULL)
        return;
    fsa_free(op->json);
    memset(op, 0, sizeof *op);
}

/* Copies a string member of fields into out when it fits (else leaves out empty). */
static void key_of(const cJSON *fields, const char *name, char *out, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(fields, name);
    out[0] = '\0';
    if (json_string(v) && strlen(v->valuestring) < cap)
        memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
}

/* The keys of a parsed fields tree (an object or not: then FSA_EINVAL). */
static fsa_status_t keys_of_tree(fsa_type_t type, const cJSON *fields, fsa_model_keys_t *out)
{
    if (!json_object(fields))
        return FSA_EINVAL;
    if (type == FSA_TYPE_ATTENDANCE)
        key_of(fields, "site_id", out->site, sizeof out->site);
    else if (type == FSA_TYPE_TICKET)
        key_of(fields, "assignedto", out->person, sizeof out->person);
    else {
        key_of(fields, "people_id", out->person, sizeof out->person);
        key_of(fields, "parent_id", out->parent, sizeof out->parent);
    }
    return FSA_OK;
}

fsa_status_t fsa_model_scope_keys(fsa_type_t type, const char *fields_json, fsa_model_keys_t *out)
{
    if (out == NULL)
        return FSA_EINVAL;
    memset(out, 0, sizeof *out);
    if (fields_json == NULL || !type_ok(type))
        return FSA_EINVAL;
    cJSON *fields = NULL;
    json_why_t why = parse_checked(fields_json, FSA_LIMIT_FIELDS_BYTES, &fields);
    if (why != JSON_OK)
        return why_status(why);
    fsa_status_t st = keys_of_tree(type, fields, out);
    cJSON_Delete(fields);
    return st;
}

fsa_status_t fsa_model_entity_scope_keys(const fsa_model_entity_t *e, fsa_type_t type,
                                         const char *fields_json, fsa_model_keys_t *out)
{
    if (e == NULL || out == NULL || !type_ok(type) || !held_for(e, fields_json))
        return fsa_model_scope_keys(type, fields_json, out);
    memset(out, 0, sizeof *out);
    return keys_of_tree(type, e->tree, out);
}
