/* fieldsync: DESIGN.md's conflict policy as a pure function, configurable per type and field. */
#ifndef FSA_SYNC_RESOLVER_H
#define FSA_SYNC_RESOLVER_H

#include <stddef.h>
#include <stdint.h>

#include "storage/model.h"

/* What to do with an op the server answered `conflict` (or `rejected`). */
typedef enum fsa_resolution {
    FSA_RESOLVE_REBASE = 0,      /* record it again on the server's current state and resend */
    FSA_RESOLVE_CONVERGED = 1,   /* the server already has what the op meant: done */
    FSA_RESOLVE_SERVER_WINS = 2, /* the server's state stands; kept visible, a person may
                                    override it with the local op */
    FSA_RESOLVE_PARK = 3,        /* kept for a person to decide */
    FSA_RESOLVE_RETRY = 4        /* nothing decided: an allocation failed; leave the conflict
                                    open and undecided, and decide again later */
} fsa_resolution_t;

/* A per-type/field override of the default table. */
typedef enum fsa_policy_action {
    FSA_POLICY_DEFAULT = 0, /* the table of DESIGN.md */
    FSA_POLICY_SERVER_WINS = 1,
    FSA_POLICY_LOCAL_WINS = 2, /* rebase and resend even if the server changed the field */
    FSA_POLICY_PARK = 3
} fsa_policy_action_t;

typedef struct fsa_policy_rule {
    fsa_type_t type;
    const char *field; /* NULL: every field of the type */
    fsa_policy_action_t action;
} fsa_policy_rule_t;

/* Rules are tried in order; the first that matches an op's type and field applies. A NULL
 * policy, or no matching rule, means the defaults. */
typedef struct fsa_resolver_policy {
    const fsa_policy_rule_t *rules;
    size_t n;
} fsa_resolver_policy_t;

typedef struct fsa_resolver_input {
    const fsa_op_t *op;          /* the local op */
    fsa_result_status_t outcome; /* FSA_RESULT_CONFLICT or FSA_RESULT_REJECTED */
    const char *prior_fields;    /* set: its fields' values before it was recorded; may be NULL */
    int64_t server_version;      /* the entity on the server now; 0 if unknown */
    const char *server_fields;   /* its fields (JSON object); NULL if unknown */
} fsa_resolver_input_t;

/*
 * Decides one op, DESIGN.md's table:
 *   create: an attendance the server has with the same content: converged; any other create of
 *        an entity the server has: park (a create that names few fields would match any entity).
 *   set: the server did not change the op's fields since the op's prior values: rebase;
 *        else server wins (visible, overridable). Rules may force server/local/park per field.
 *   transition: the server is already at `to`: converged; still at `from` (another op of its
 *        group failed it): rebase; the server is in a terminal state (e.g. AUTOCLOSED): server
 *        wins; else park.
 *   merge, increment, append: never conflict on their own (only as part of a failed group):
 *        rebase.
 *   rejected (any kind), or an unknown server state: park.
 *   FSA_RESOLVE_RETRY when an allocation failed (the comparison of values needs memory): never
 *        a verdict, never stored.
 * why (whylen bytes, may be NULL) receives one line explaining the verdict.
 */
fsa_resolution_t fsa_resolve(const fsa_resolver_policy_t *policy, const fsa_resolver_input_t *in,
                             char *why, size_t whylen);

/* Decides a group as a whole from its members' inputs: retry if any member could not be decided
 * (an allocation failed), else park if any member parks, else server wins if any member's server
 * wins, else rebase (the group is resent without its converged members, or is converged when all
 * of them are). */
fsa_resolution_t fsa_resolve_group(const fsa_resolver_policy_t *policy,
                                   const fsa_resolver_input_t *in, size_t n, char *why,
                                   size_t whylen);

/* "rebase", "converged", "server-wins", "park", "retry". */
const char *fsa_resolution_name(fsa_resolution_t r);

#endif
