/* fieldsync: the one command-line option parser (port/opts.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port/opts.h"

/* Writes the one-line error; returns FSA_EINVAL. */
static fsa_status_t bad(char *err, size_t errlen, const char *fmt, ...) FSA_PRINTF(3, 4);
static fsa_status_t bad(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return FSA_EINVAL;
}

/* The index in opts of the option named by arg ("--name"), or nopts. */
static size_t find(const fsa_opt_t *opts, size_t nopts, const char *arg)
{
    size_t k = 0;
    while (k < nopts && strcmp(arg + 2, opts[k].name) != 0)
        k++;
    return k;
}

/* What an argument is, where options are expected: the one reading of arguments that
 * fsa_opts_parse and fsa_opts_values share. */
typedef enum arg_kind {
    ARG_HELP,       /* "--help" or "-h": stop */
    ARG_COMMAND,    /* FSA_OPTS_BEFORE_COMMAND: the command, stop */
    ARG_BAD_OPTION, /* FSA_OPTS_BEFORE_COMMAND: a '-' argument that is no "--NAME" */
    ARG_POSITIONAL,
    ARG_OPTION /* "--NAME" */
} arg_kind_t;

static arg_kind_t arg_kind(const char *a, bool before_command)
{
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
        return ARG_HELP;
    if (strncmp(a, "--", 2) == 0 && a[2] != '\0')
        return ARG_OPTION;
    if (!before_command)
        return ARG_POSITIONAL;
    return a[0] == '-' ? ARG_BAD_OPTION : ARG_COMMAND;
}

fsa_status_t fsa_opts_parse(int argc, char *const *args, fsa_opt_t *opts, size_t nopts, char **pos,
                            int maxpos, unsigned flags, fsa_opts_result_t *res, char *err,
                            size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (res == NULL || argc < 0 || (args == NULL && argc > 0) || (opts == NULL && nopts > 0) ||
        maxpos < 0 || (pos == NULL && maxpos > 0))
        return bad(err, errlen, "invalid arguments");
    memset(res, 0, sizeof *res);
    for (size_t k = 0; k < nopts; k++)
        opts[k].value = NULL;
    const bool before_command = (flags & FSA_OPTS_BEFORE_COMMAND) != 0;
    int i = 0;
    for (; i < argc; i++) {
        const char *a = args[i];
        arg_kind_t kind = arg_kind(a, before_command);
        if (kind == ARG_HELP) {
            res->help = true;
            break;
        }
        if (kind == ARG_COMMAND)
            break;
        if (kind == ARG_BAD_OPTION)
            return bad(err, errlen, "unknown option '%s'", a);
        if (kind == ARG_POSITIONAL) {
            if (pos == NULL || res->npos >= maxpos) /* pos is NULL only when maxpos is 0 */
                return bad(err, errlen, "unexpected argument '%s'", a);
            pos[res->npos++] = args[i];
            continue;
        }
        size_t k = opts != NULL ? find(opts, nopts, a) : nopts;
        if (k == nopts)
            return bad(err, errlen, "unknown option '%s'", a);
        fsa_opt_t *o = &opts[k];
        if (o->value != NULL && !o->repeat)
            return bad(err, errlen, "option '%s' given twice", a);
        if (!o->has_value) {
            o->value = "";
            continue;
        }
        if (i + 1 >= argc)
            return bad(err, errlen, "option '%s' needs a value", a);
        if ((flags & FSA_OPTS_NONEMPTY) != 0 && args[i + 1][0] == '\0')
            return bad(err, errlen, "option '%s' needs a non-empty value", a);
        o->value = args[++i];
    }
    res->used = i;
    return FSA_OK;
}

size_t fsa_opts_init(fsa_opt_t *opts, size_t cap, const char *spec, bool repeat)
{
    size_t k = 0;
    for (; k < cap && spec[0] != '\0'; k++, spec += strlen(spec) + 1) {
        opts[k].name = spec + 1;
        opts[k].has_value = spec[0] == '=';
        opts[k].repeat = repeat;
        opts[k].value = NULL;
    }
    return k;
}

const char *fsa_opts_get(const fsa_opt_t *opts, size_t nopts, const char *name)
{
    if (opts == NULL || name == NULL)
        return NULL;
    for (size_t k = 0; k < nopts; k++)
        if (strcmp(opts[k].name, name) == 0)
            return opts[k].value;
    return NULL;
}

fsa_status_t fsa_opts_values(int argc, char *const *args, const fsa_opt_t *opts, size_t nopts,
                             unsigned flags, const char *name, const char **out, size_t cap,
                             size_t *n, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (n != NULL)
        *n = 0;
    if (n == NULL || argc < 0 || (args == NULL && argc > 0) || (opts == NULL && nopts > 0) ||
        name == NULL || (out == NULL && cap > 0))
        return bad(err, errlen, "invalid arguments");
    const fsa_opt_t *want = NULL;
    for (size_t k = 0; k < nopts && want == NULL; k++)
        if (strcmp(opts[k].name, name) == 0 && opts[k].has_value)
            want = &opts[k];
    if (want == NULL)
        return bad(err, errlen, "no option '--%s' with a value", name);
    const bool before_command = (flags & FSA_OPTS_BEFORE_COMMAND) != 0;
    /* The arguments were accepted by fsa_opts_parse: only the options and where they stop
     * matter here (an unknown option cannot be met; one would be stepped over). */
    for (int i = 0; i < argc; i++) {
        arg_kind_t kind = arg_kind(args[i], before_command);
        if (kind == ARG_HELP || kind == ARG_COMMAND || kind == ARG_BAD_OPTION)
            break;
        if (kind == ARG_POSITIONAL)
            continue;
        size_t k = opts != NULL ? find(opts, nopts, args[i]) : nopts;
        if (k == nopts || !opts[k].has_value || i + 1 >= argc)
            continue;
        i++;
        if (&opts[k] != want)
            continue;
        if (*n == cap)
            return bad(err, errlen, "option '--%s' given more than %zu times", name, cap);
        out[(*n)++] = args[i];
    }
    return FSA_OK;
}

/* value is written as a plain decimal number: a '-' only when minus (negative values are in
 * range), digits, and for a real a fraction and an exponent. strtoll and strtod also take
 * leading spaces, '+', hexadecimal and (strtod) inf and nan: "--listen 127.0.0.1:+80" listened
 * on port 80, and "0x10" days were 16. */
static bool plain_number(const char *value, bool minus, bool real)
{
    const char *p = value;
    if (*p == '-' && minus)
        p++;
    if (!(*p >= '0' && *p <= '9') && !(real && *p == '.'))
        return false;
    for (; *p != '\0'; p++) {
        bool ok = (*p >= '0' && *p <= '9') ||
                  (real && (*p == '.' || *p == 'e' || *p == 'E' ||
                            ((*p == '-' || *p == '+') && (p[-1] == 'e' || p[-1] == 'E'))));
        if (!ok)
            return false;
    }
    return true;
}

fsa_status_t fsa_opts_int(const char *name, const char *value, long long min, long long max,
                          long long *out, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (name == NULL || value == NULL || out == NULL)
        return bad(err, errlen, "invalid arguments");
    char *end = NULL;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (!plain_number(value, min < 0, false) || errno != 0 || end == value || *end != '\0' ||
        v < min || v > max)
        return bad(err, errlen, "option '--%s' needs a whole number from %lld to %lld, not '%s'",
                   name, min, max, value);
    *out = v;
    return FSA_OK;
}

fsa_status_t fsa_opts_real(const char *name, const char *value, double min, double max,
                           const char *what, double *out, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (name == NULL || value == NULL || out == NULL)
        return bad(err, errlen, "invalid arguments");
    char *end = NULL;
    errno = 0;
    double v = strtod(value, &end);
    /* !(v >= min && v <= max) is also true for NaN. */
    if (!plain_number(value, min < 0.0, true) || errno != 0 || end == value || *end != '\0' ||
        !(v >= min && v <= max))
        return bad(err, errlen, "option '--%s' needs a %s from %g to %g, not '%s'", name,
                   what != NULL ? what : "number", min, max, value);
    *out = v;
    return FSA_OK;
}
