/* fieldsync: command-line values (NAME=VALUE pairs into a JSON object, JSON string quoting) and
 * one-line errors, shared by fieldsync and fieldsync-sim. */
#ifndef FSA_AGENT_ARGS_H
#define FSA_AGENT_ARGS_H

#include <stddef.h>

#include "port/status.h"

/*
 * Builds a JSON object from NAME=VALUE arguments: VALUE is taken as JSON when it is one valid
 * JSON value within the limits (so 5, true, null, "x", {"a":1} keep their types), else as a
 * string. NAME must be 1..31 characters of [a-z0-9_] and may not repeat.
 * On FSA_OK *out is a malloc'ed object text (fsa_free()); on FSA_EINVAL / FSA_ETOOLARGE err names
 * the bad argument. FSA_ENOMEM.
 */
fsa_status_t fsa_args_object(char *const *args, size_t n, char **out, char *err,
                             size_t errlen) FSA_MUST_CHECK;

/* Appends s as a JSON string literal (quoted, escaped) to buf (a NUL-terminated string of
 * capacity cap). FSA_OK or FSA_ETOOLARGE (buf unchanged). */
fsa_status_t fsa_args_quote(const char *s, char *buf, size_t cap) FSA_MUST_CHECK;

/* One op of libfieldsync's generic builder, {"kind":KIND,"type":TYPE,"id":ID,"fields":FIELDS}
 * (fields_json is an object's text, inserted as is), into *out (fsa_args_free). FSA_OK,
 * FSA_EINVAL, FSA_ETOOLARGE, FSA_ENOMEM. */
fsa_status_t fsa_args_op(const char *kind, const char *type, const char *id,
                         const char *fields_json, char **out) FSA_MUST_CHECK;

/* Frees what fsa_args_object and fsa_args_op made. NULL is accepted. */
void fsa_args_free(char *p);

/* Prints "PROG: MESSAGE (see 'PROG --help')" as one line on stderr and exits with status 2.
 * Here and in fsa_cli_fail a control character in MESSAGE (< 0x20, 0x7f) is printed as '?'. */
_Noreturn void fsa_cli_die_usage(const char *prog, const char *fmt, ...) FSA_PRINTF(2, 3);

/* Prints "PROG: MESSAGE" as one line on stderr; returns EXIT_FAILURE (1): `return fail(...)`. */
int fsa_cli_fail(const char *prog, const char *fmt, ...) FSA_PRINTF(2, 3);

#endif
