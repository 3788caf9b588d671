/* fieldsync fuzz target: the CLI's NAME=VALUE arguments and JSON string quoting (agent/args.h). */
#include <cjson/cJSON.h>

#include "agent/args.h"
#include "port/limits.h"
#include "storage/model.h"
#include "tests/fuzz/fuzz_util.h"

/*
 * Input: one byte (a buffer capacity for fsa_args_quote), then arguments separated by NUL bytes,
 * as the shell hands them to fieldsync (at most 64). When that byte is 0xff, for one input in 8
 * (by a hash of the input), the second byte is not an argument: a first argument pad=[<spaces>1]
 * is put ahead of the others, sized to leave 1 + (that byte % 64) bytes of the object's 1 MiB
 * buffer: the arguments that follow
 * land on its limit, where the overflow fixed in fsa_args_quote was. Rare on purpose (one such
 * input costs ~30 ms, fifty ordinary ones).
 * Invariants:
 *   - fsa_args_object() returns FSA_OK, FSA_EINVAL or FSA_ETOOLARGE;
 *   - on FSA_OK the text is one JSON object (valid: every string in it UTF-8) with exactly the
 *     given names, in order, each with VALUE as JSON when the model accepts VALUE as JSON, else
 *     VALUE as a string;
 *   - FSA_EINVAL only for an argument without a valid NAME= or a repeated NAME, or a VALUE taken
 *     as a string that is longer than a string may be or not UTF-8 (RFC 3629);
 *   - fsa_args_quote() never writes past its capacity, leaves the buffer unchanged when the
 *     string does not fit, and otherwise appends a JSON string that reads back as the input.
 */

#define MAX_ARGS 64

static bool name_valid(const char *arg, size_t *nlen)
{
    const char *eq = strchr(arg, '=');
    if (eq == NULL)
        return false;
    size_t n = (size_t)(eq - arg);
    *nlen = n;
    if (n == 0 || n > 31)
        return false;
    return strspn(arg, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

/* RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const unsigned char *p)
{
    while (*p != 0) {
        unsigned c = *p;
        size_t n = c < 0x80             ? 0
                   : (c & 0xe0) == 0xc0 ? 1
                   : (c & 0xf0) == 0xe0 ? 2
                   : (c & 0xf8) == 0xf0 ? 3
                                        : 9;
        if (n == 9)
            return false;
        unsigned cp = n == 0 ? c : n == 1 ? c & 0x1f : n == 2 ? c & 0x0f : c & 0x07;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        static const unsigned min[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

static void check_object(char **args, size_t n)
{
    char *out = NULL;
    char err[256];
    fsa_status_t st = fsa_args_object(args, n, &out, err, sizeof err);
    FUZZ_CHECK(st == FSA_OK || st == FSA_EINVAL || st == FSA_ETOOLARGE);
    bool all_valid = true;
    for (size_t i = 0; i < n && all_valid; i++) {
        size_t nl = 0;
        if (!name_valid(args[i], &nl)) {
            all_valid = false;
            break;
        }
        for (size_t k = 0; k < i; k++) {
            if (strncmp(args[k], args[i], nl + 1) == 0)
                all_valid = false;
        }
        /* a VALUE taken as a string must be one JSON can hold */
        const char *value = args[i] + nl + 1;
        if ((value[0] == '\0' || fsa_model_json_check(value, FSA_LIMIT_FIELDS_BYTES) != FSA_OK) &&
            (strlen(value) > FSA_LIMIT_STRING_BYTES || !utf8_valid((const unsigned char *)value)))
            all_valid = false;
    }
    if (st != FSA_OK) {
        FUZZ_CHECK(out == NULL && err[0] != '\0');
        if (st == FSA_EINVAL)
            FUZZ_CHECK(!all_valid);
        return;
    }
    FUZZ_CHECK(all_valid);
    cJSON *obj = cJSON_Parse(out);
    FUZZ_CHECK(cJSON_IsObject(obj));
    FUZZ_CHECK((size_t)cJSON_GetArraySize(obj) == n);
    const cJSON *m = obj->child;
    bool utf8 = true; /* every VALUE taken as a string is valid UTF-8 */
    for (size_t i = 0; i < n; i++, m = m->next) {
        const char *eq = strchr(args[i], '=');
        const char *value = eq + 1;
        FUZZ_CHECK(m != NULL && strlen(m->string) == (size_t)(eq - args[i]) &&
                   strncmp(m->string, args[i], (size_t)(eq - args[i])) == 0);
        if (value[0] != '\0' && fsa_model_json_check(value, FSA_LIMIT_FIELDS_BYTES) == FSA_OK) {
            /* Kept as JSON text; compared where the model reads it too (no repeated keys, no
             * number beyond a double, which the journal refuses later with its own message). */
            char *alone = NULL;
            if (fsa_model_merge_patch(NULL, value, &alone) == FSA_OK) {
                cJSON *v = cJSON_Parse(value);
                FUZZ_CHECK(v != NULL && cJSON_Compare(m, v, true));
                cJSON_Delete(v);
            }
            fsa_model_free(alone);
        } else {
            FUZZ_CHECK(cJSON_IsString(m) && strcmp(m->valuestring, value) == 0);
            utf8 = utf8 && utf8_valid((const unsigned char *)value);
        }
    }
    cJSON_Delete(obj);
    /* Valid JSON text: a string VALUE that is not UTF-8 was refused above, naming its field. */
    FUZZ_CHECK(utf8 && fsa_model_json_check(out, FSA_LIMIT_FIELDS_BYTES) == FSA_OK);
    /* The model reads what the CLI built: this is the fields object of a create or set. */
    char *merged = NULL;
    fsa_status_t mst = fsa_model_merge_patch("{}", out, &merged);
    FUZZ_CHECK(mst == FSA_OK || mst == FSA_EINVAL);
    fsa_model_free(merged);
    fsa_free(out);
}

static void check_quote(const char *s, size_t cap)
{
    /* A guard zone past cap catches a write past the capacity even where ASan would not. */
    char *buf = fuzz_alloc(cap + 16);
    memset(buf, 0x5a, cap + 16);
    size_t pre = cap > 4 ? cap / 4 : 0;
    memset(buf, 'p', pre);
    if (cap > 0)
        buf[pre < cap ? pre : cap - 1] = '\0';
    size_t before = strlen(buf);
    fsa_status_t st = fsa_args_quote(s, buf, cap);
    FUZZ_CHECK(st == FSA_OK || st == FSA_ETOOLARGE);
    for (size_t i = cap; i < cap + 16; i++)
        FUZZ_CHECK(buf[i] == 0x5a);
    if (st != FSA_OK) {
        FUZZ_CHECK(strlen(buf) == before);
    } else {
        FUZZ_CHECK(strlen(buf) < cap);
        FUZZ_CHECK(strncmp(buf + before, "\"", 1) == 0);
        cJSON *v = cJSON_Parse(buf + before);
        FUZZ_CHECK(cJSON_IsString(v) && strcmp(v->valuestring, s) == 0);
        cJSON_Delete(v);
    }
    fsa_free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t cap = data[0] > 0 ? data[0] : 1; /* the buffer holds at least its NUL */
    char *args[MAX_ARGS + 1];
    char *buf = NULL;
    char *pad = NULL;
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    size_t n;
    if (data[0] == 0xff && size > 1 && h % 8 == 0) {
        /* {"pad":V then leaves 1 + data[1] % 64 bytes of FSA_LIMIT_FIELDS_BYTES */
        size_t vlen = FSA_LIMIT_FIELDS_BYTES - 7 - 1 - data[1] % 64;
        pad = fuzz_alloc(4 + vlen + 1);
        memcpy(pad, "pad=[", 5);
        memset(pad + 5, ' ', vlen - 3);
        memcpy(pad + 4 + vlen - 2, "1]", 3);
        args[0] = pad;
        n = fuzz_split(data + 2, size - 2, '\0', args + 1, MAX_ARGS, &buf);
        check_object(args, n + 1);
    } else {
        n = fuzz_split(data + 1, size - 1, '\0', args + 1, MAX_ARGS, &buf);
        check_object(args + 1, n);
    }
    for (size_t i = 1; i <= n; i++) {
        check_quote(args[i], cap);
        check_quote(args[i], strlen(args[i]) * 6 + 8);
    }
    fsa_free(pad);
    fsa_free(buf);
    return 0;
}
