/* fieldsync: the one command-line option parser ("--name value", "--flag", positionals). */
#ifndef FSA_PORT_OPTS_H
#define FSA_PORT_OPTS_H

#include <stdbool.h>
#include <stddef.h>

#include "port/status.h"

/*
 * Pure code (no OS, no allocation, never exits): the programs print the one-line error it
 * writes and choose their exit status. It lives in port/, the one layer below every program, so
 * that all of them use it: fieldsync, its daemon, fieldsync-server (sync/server) and
 * fieldsync-sim.
 *
 * An option is "--NAME" (more than the two dashes); "--help" and "-h" ask for help anywhere.
 * An option with a value takes the next argument whatever it looks like ("--note -x" is fine).
 */
typedef struct fsa_opt {
    const char *name;  /* without the dashes: "db" */
    bool has_value;    /* "--name VALUE"; else a flag */
    bool repeat;       /* may be given again: the last value stands (fsa_opts_values has them
                        * all); else "given twice" */
    const char *value; /* out: the value, "" for a flag given, NULL when absent */
} fsa_opt_t;

enum {
    /* The options before a command: stop at the first argument that does not start with '-'
     * (*used counts what was parsed, the command is args[*used]); any other '-' argument is an
     * unknown option. Without it, arguments that are not options are positionals, wherever
     * they stand. */
    FSA_OPTS_BEFORE_COMMAND = 1,
    /* No value may be empty: "--db ''" is "option '--db' needs a non-empty value". A program
     * with an option that may be empty parses without it. */
    FSA_OPTS_NONEMPTY = 2
};

typedef struct fsa_opts_result {
    bool help; /* "--help" or "-h" was met (parsing stopped there) */
    int npos;  /* positionals stored in pos[] */
    int used;  /* arguments consumed (FSA_OPTS_BEFORE_COMMAND: the command's index) */
} fsa_opts_result_t;

/*
 * Fills opts[0..cap) from spec, a list of names in one string: "=NAME" for an option with a
 * value, "-NAME" for a flag, each ended by "\0", the list by an empty one (a literal that ends
 * in "\0"): "=db\0-version\0". repeat as fsa_opt_t's for all. Returns how many were filled (at
 * most cap). The names point into spec. One string of characters rather than a table of
 * {"name", ...} initialisers, whose name pointers cost a position-independent program a
 * load-time relocation each.
 */
size_t fsa_opts_init(fsa_opt_t *opts, size_t cap, const char *spec, bool repeat);

/*
 * A command's options kept in one list, so that their indexes and their spec cannot drift apart:
 * LIST(X) expands X(INDEX, "=name") or X(INDEX, "-flag") once per option, in order;
 *     enum { LIST(FSA_OPT_INDEX) O_COUNT };
 *     fsa_opt_t o[O_COUNT];
 *     fsa_opts_init(o, O_COUNT, LIST(FSA_OPT_SPEC), repeat);
 * and o[INDEX].value is that option's.
 */
#define FSA_OPT_INDEX(index, spec) index,
#define FSA_OPT_SPEC(index, spec) spec "\0"

/*
 * Parses args[0..argc) into opts[0..nopts) (their value fields, reset first) and up to maxpos
 * positionals into pos (NULL when maxpos is 0). FSA_OK (*res set), or FSA_EINVAL with err
 * naming the problem in one line: "unknown option '--x'", "option '--x' given twice",
 * "option '--x' needs a value", "unexpected argument 'x'" (more positionals than maxpos), or
 * an invalid call ("invalid arguments").
 */
fsa_status_t fsa_opts_parse(int argc, char *const *args, fsa_opt_t *opts, size_t nopts, char **pos,
                            int maxpos, unsigned flags, fsa_opts_result_t *res, char *err,
                            size_t errlen) FSA_MUST_CHECK;

/* The value of option name in opts (NULL when it was not given or is not there). */
const char *fsa_opts_get(const fsa_opt_t *opts, size_t nopts, const char *name);

/*
 * Collects every value of a repeatable option, in the order given ("--server A --server B"):
 * args and flags as given to fsa_opts_parse, which accepted them (opts as it left them). Up to
 * cap values into out; *n receives how many were given. FSA_OK; FSA_EINVAL when name is not an
 * option with a value in opts, or it was given more than cap times: err then says
 * "option '--server' given more than 16 times".
 */
fsa_status_t fsa_opts_values(int argc, char *const *args, const fsa_opt_t *opts, size_t nopts,
                             unsigned flags, const char *name, const char **out, size_t cap,
                             size_t *n, char *err, size_t errlen) FSA_MUST_CHECK;

/*
 * An option's value as a whole number from min to max (decimal, optional sign, nothing after
 * it). FSA_OK and *out, or FSA_EINVAL with err naming the option (name, without the dashes) and
 * the value: "option '--devices' needs a whole number from 1 to 100000, not '12x'".
 */
fsa_status_t fsa_opts_int(const char *name, const char *value, long long min, long long max,
                          long long *out, char *err, size_t errlen) FSA_MUST_CHECK;

/*
 * The same for a real number from min to max (strtod's syntax; not NaN); what names the kind of
 * value ("rate", "number"; NULL: "number"): "option '--fault-5xx' needs a rate from 0 to 1, not
 * '2'".
 */
fsa_status_t fsa_opts_real(const char *name, const char *value, double min, double max,
                           const char *what, double *out, char *err, size_t errlen) FSA_MUST_CHECK;

#endif
