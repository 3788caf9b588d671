/* fieldsync: NAME=VALUE arguments to a JSON object; JSON string quoting; one-line CLI errors. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/args.h"
#include "port/alloc.h"
#include "port/jsonstr.h"
#include "port/limits.h"
#include "port/port.h"
#include "storage/model.h"

fsa_status_t fsa_args_quote(const char *s, char *buf, size_t cap)
{
    size_t o = strlen(buf);
    /* Measured first: buf stays unchanged, also past its NUL, when it does not fit. */
    if (o >= cap || fsa_json_quote(s, NULL, 0) >= cap - o)
        return FSA_ETOOLARGE;
    (void)fsa_json_quote(s, buf + o, cap - o);
    return FSA_OK;
}

static int name_ok(const char *name, size_t len)
{
    if (len == 0 || len >= FSA_FIELD_NAME_BYTES)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

fsa_status_t fsa_args_object(char *const *args, size_t n, char **out, char *err, size_t errlen)
{
    char scratch[8];
    if (err == NULL || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    if (out == NULL || (args == NULL && n > 0))
        return FSA_EINVAL;
    *out = NULL;
    /* Bounded by the size of one entity's fields. */
    size_t cap = FSA_LIMIT_FIELDS_BYTES;
    char *buf = fsa_malloc(cap);
    if (buf == NULL)
        return FSA_ENOMEM;
    buf[0] = '{';
    buf[1] = '\0';
    fsa_status_t st = FSA_OK;
    for (size_t i = 0; i < n && st == FSA_OK; i++) {
        const char *eq = strchr(args[i], '=');
        if (eq == NULL || !name_ok(args[i], (size_t)(eq - args[i]))) {
            snprintf(err, errlen, "'%.60s' is not NAME=VALUE (NAME: a-z 0-9 _, 1-31 chars)",
                     args[i]);
            st = FSA_EINVAL;
            break;
        }
        size_t nlen = (size_t)(eq - args[i]);
        for (size_t k = 0; k < i; k++) {
            if (strncmp(args[k], args[i], nlen + 1) == 0) {
                snprintf(err, errlen, "field '%.*s' is given twice", (int)nlen, args[i]);
                st = FSA_EINVAL;
                break;
            }
        }
        if (st != FSA_OK)
            break;
        const char *value = eq + 1;
        size_t o = strlen(buf);
        if (o + nlen + 4 >= cap) {
            st = FSA_ETOOLARGE;
            break;
        }
        snprintf(buf + o, cap - o, "%s\"%.*s\":", i > 0 ? "," : "", (int)nlen, args[i]);
        if (value[0] != '\0' && fsa_model_json_check(value, FSA_LIMIT_FIELDS_BYTES) == FSA_OK) {
            o = strlen(buf);
            if (o + strlen(value) + 2 >= cap) {
                st = FSA_ETOOLARGE;
                break;
            }
            memcpy(buf + o, value, strlen(value) + 1);
        } else {
            /* Taken as text: say here what the text breaks, naming the field (the library's
             * check of the whole object could only say that the object is not one). */
            size_t vlen = strlen(value);
            if (vlen > FSA_LIMIT_STRING_BYTES) {
                snprintf(err, errlen, "field '%.*s': %s longer than %d bytes", (int)nlen, args[i],
                         value[0] == '{' || value[0] == '['
                             ? "not JSON within this device's limits, and as text"
                             : "text",
                         FSA_LIMIT_STRING_BYTES);
                st = FSA_EINVAL;
                break;
            }
            o = strlen(buf);
            st = fsa_args_quote(value, buf, cap - 1);
            if (st == FSA_OK && fsa_model_json_check(buf + o, vlen * 6 + 2) != FSA_OK) {
                snprintf(err, errlen, "field '%.*s': the value is not valid UTF-8", (int)nlen,
                         args[i]);
                st = FSA_EINVAL;
            }
        }
    }
    /* Every way of running out of room says so (two of them leave the loop early). */
    if (st == FSA_ETOOLARGE)
        snprintf(err, errlen, "fields are too large (at most %zu bytes)", cap);
    if (st == FSA_OK) {
        size_t o = strlen(buf);
        buf[o] = '}';
        buf[o + 1] = '\0';
        *out = buf;
        return FSA_OK;
    }
    fsa_free(buf);
    return st;
}

/* Writes "PROG: MESSAGE" and suffix to stderr as one line: a control character in the message
 * (a user's argument, a server's or a journal's text in it), below 0x20 or 0x7f, is written as
 * '?', so that it cannot break the line or steer the terminal. */
static void cli_line(const char *prog, const char *suffix, const char *fmt, va_list ap)
    FSA_PRINTF(3, 0);
static void cli_line(const char *prog, const char *suffix, const char *fmt, va_list ap)
{
    char small[1024];
    char *msg = small;
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    if (n >= (int)sizeof small) {
        char *big = fsa_malloc((size_t)n + 1);
        if (big != NULL) {
            (void)vsnprintf(big, (size_t)n + 1, fmt, copy);
            msg = big;
        }
    }
    va_end(copy);
    if (n < 0)
        small[0] = '\0';
    fsa_one_line(msg);
    fprintf(stderr, "%s: %s%s\n", prog, msg, suffix);
    if (msg != small)
        fsa_free(msg);
}

void fsa_cli_die_usage(const char *prog, const char *fmt, ...)
{
    char suffix[160];
    snprintf(suffix, sizeof suffix, " (see '%s --help')", prog);
    va_list ap;
    va_start(ap, fmt);
    cli_line(prog, suffix, fmt, ap);
    va_end(ap);
    exit(2);
}

int fsa_cli_fail(const char *prog, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cli_line(prog, "", fmt, ap);
    va_end(ap);
    return EXIT_FAILURE;
}

fsa_status_t fsa_args_op(const char *kind, const char *type, const char *id,
                         const char *fields_json, char **out)
{
    if (out == NULL)
        return FSA_EINVAL;
    *out = NULL;
    if (kind == NULL || type == NULL || id == NULL || fields_json == NULL)
        return FSA_EINVAL;
    size_t cap = strlen(fields_json) + 6 * (strlen(kind) + strlen(type) + strlen(id)) + 64;
    char *buf = fsa_malloc(cap);
    if (buf == NULL)
        return FSA_ENOMEM;
    snprintf(buf, cap, "{\"kind\":");
    fsa_status_t st = fsa_args_quote(kind, buf, cap);
    if (st == FSA_OK) {
        size_t o = strlen(buf);
        snprintf(buf + o, cap - o, ",\"type\":");
        st = fsa_args_quote(type, buf, cap);
    }
    if (st == FSA_OK) {
        size_t o = strlen(buf);
        snprintf(buf + o, cap - o, ",\"id\":");
        st = fsa_args_quote(id, buf, cap);
    }
    if (st == FSA_OK) {
        size_t o = strlen(buf);
        if (o + strlen(fields_json) + 12 > cap)
            st = FSA_ETOOLARGE;
        else
            snprintf(buf + o, cap - o, ",\"fields\":%s}", fields_json);
    }
    if (st != FSA_OK) {
        fsa_free(buf);
        return st;
    }
    *out = buf;
    return FSA_OK;
}

void fsa_args_free(char *p)
{
    fsa_free(p);
}
