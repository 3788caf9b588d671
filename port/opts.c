/* fieldsync: the one command-line option parser (port/opts.h). */
#include <stdarg.h>
#include <stdio.h>
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

/* The option of opts named by arg ("--name"), or NULL. */
static fsa_opt_t *find(fsa_opt_t *opts, size_t nopts, const char *arg)
{
    for (size_t k = 0; k < nopts; k++)
        if (strcmp(arg + 2, opts[k].name) == 0)
            return &opts[k];
    return NULL;
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
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            res->help = true;
            break;
        }
        bool is_opt = strncmp(a, "--", 2) == 0 && a[2] != '\0';
        if (before_command && !is_opt && a[0] != '-')
            break; /* the command */
        if (!is_opt && before_command)
            return bad(err, errlen, "unknown option '%s'", a);
        if (!is_opt) {
            if (pos == NULL || res->npos >= maxpos) /* pos is NULL only when maxpos is 0 */
                return bad(err, errlen, "unexpected argument '%s'", a);
            pos[res->npos++] = args[i];
            continue;
        }
        fsa_opt_t *o = find(opts, nopts, a);
        if (o == NULL)
            return bad(err, errlen, "unknown option '%s'", a);
        if (o->value != NULL && !o->repeat)
            return bad(err, errlen, "option '%s' given twice", a);
        if (!o->has_value) {
            o->value = "";
            continue;
        }
        if (i + 1 >= argc)
            return bad(err, errlen, "option '%s' needs a value", a);
        o->value = args[++i];
    }
    res->used = i;
    return FSA_OK;
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
