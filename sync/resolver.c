/* fieldsync: the conflict resolver: DESIGN.md's table, per-field overrides, three-way merge. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sync/resolver.h"

static void say(char *why, size_t whylen, const char *fmt, ...) FSA_PRINTF(3, 4);
static void say(char *why, size_t whylen, const char *fmt, ...)
{
    if (why == NULL || whylen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

static fsa_policy_action_t rule_for(const fsa_resolver_policy_t *policy, fsa_type_t type,
                                    const char *field)
{
    if (policy == NULL)
        return FSA_POLICY_DEFAULT;
    for (size_t i = 0; i < policy->n; i++) {
        const fsa_policy_rule_t *r = &policy->rules[i];
        if (r->type == type &&
            (r->field == NULL || (field != NULL && strcmp(r->field, field) == 0)))
            return r->action;
    }
    return FSA_POLICY_DEFAULT;
}

/* The strongest override among the fields of a set (park > server > local > default) in *best,
 * and the fields that have one, as the keys of a JSON object, in ruled (cap bytes). FSA_OK, or
 * FSA_ENOMEM: a field the set names must not be missed for want of memory. */
static fsa_status_t rule_for_set(const fsa_resolver_policy_t *policy, const fsa_op_t *op,
                                 fsa_policy_action_t *best_out, char *ruled, size_t cap)
{
    fsa_policy_action_t best = FSA_POLICY_DEFAULT;
    size_t nfields = 0, used = (size_t)snprintf(ruled, cap, "{");
    const fsa_field_def_t *defs = fsa_model_fields(op->type, &nfields);
    *best_out = best;
    for (size_t i = 0; defs != NULL && i < nfields; i++) {
        char *v = NULL;
        fsa_status_t st = fsa_model_get_field(op->json, defs[i].name, &v);
        if (st == FSA_ENOMEM)
            return st;
        if (st != FSA_OK)
            continue;
        fsa_model_free(v);
        fsa_policy_action_t a = rule_for(policy, op->type, defs[i].name);
        if (a != FSA_POLICY_DEFAULT && used < cap)
            used += (size_t)snprintf(ruled + used, cap - used, "%s\"%s\":0", used > 1 ? "," : "",
                                     defs[i].name);
        static const int rank[] = {[FSA_POLICY_DEFAULT] = 0,
                                   [FSA_POLICY_LOCAL_WINS] = 1,
                                   [FSA_POLICY_SERVER_WINS] = 2,
                                   [FSA_POLICY_PARK] = 3};
        if (rank[a] > rank[best])
            best = a;
    }
    if (used < cap)
        (void)snprintf(ruled + used, cap - used, "}");
    *best_out = best;
    return used + 1 < cap ? FSA_OK : FSA_ENOMEM;
}

static fsa_resolution_t from_action(fsa_policy_action_t a)
{
    switch (a) {
    case FSA_POLICY_SERVER_WINS: return FSA_RESOLVE_SERVER_WINS;
    case FSA_POLICY_LOCAL_WINS: return FSA_RESOLVE_REBASE;
    default: return FSA_RESOLVE_PARK;
    }
}

/* An allocation failed while comparing values: no verdict, so nothing is stored and the conflict
 * is decided again later, instead of a verdict taken on a comparison that did not happen. */
static fsa_resolution_t no_memory(char *why, size_t whylen, const fsa_op_t *op)
{
    say(why, whylen, "out of memory while deciding %s %s %s; decided later",
        fsa_op_kind_name(op->kind), fsa_type_name(op->type), op->id);
    return FSA_RESOLVE_RETRY;
}

/* A create the server has already: an attendance record converges when its content is the op's
 * (DESIGN.md's table); any other is parked for a person. Compared on the op's own keys, a create
 * that names few fields (a ticket's "{}" takes every default) would match any entity of that id,
 * and be dropped without a word; an attendance create names its required fields, always. */
static fsa_resolution_t resolve_create(const fsa_resolver_input_t *in, char *why, size_t whylen)
{
    const fsa_op_t *op = in->op;
    const char *tname = fsa_type_name(op->type);
    if (op->type != FSA_TYPE_ATTENDANCE) {
        say(why, whylen, "%s %s already exists on the server", tname, op->id);
        return FSA_RESOLVE_PARK;
    }
    bool same = false;
    fsa_status_t st = fsa_model_same_values(op->json, in->server_fields, op->json, &same);
    if (st == FSA_ENOMEM)
        return no_memory(why, whylen, op);
    if (st == FSA_OK && same) {
        say(why, whylen, "%s %s already exists with the same content", tname, op->id);
        return FSA_RESOLVE_CONVERGED;
    }
    say(why, whylen, "%s %s already exists on the server with other content", tname, op->id);
    return FSA_RESOLVE_PARK;
}

/* Whether the server changed none of keys_json's fields since the set's prior (*same). */
static fsa_status_t unchanged_since_prior(const fsa_resolver_input_t *in, const char *keys_json,
                                          bool *same)
{
    *same = false;
    return in->prior_fields != NULL
               ? fsa_model_same_values(in->prior_fields, in->server_fields, keys_json, same)
               : FSA_EINVAL;
}

/* A set on a stale version: the policy of its fields, else rebased when the server changed only
 * other fields, else the server wins. A local-wins rule covers only its own fields: when the set
 * also carries fields without a rule that the server changed, resending it whole would overwrite
 * someone else's change, and the server winning would drop the local-wins field: a person
 * decides. */
static fsa_resolution_t resolve_set(const fsa_resolver_policy_t *policy,
                                    const fsa_resolver_input_t *in, char *why, size_t whylen)
{
    const fsa_op_t *op = in->op;
    const char *tname = fsa_type_name(op->type);
    fsa_policy_action_t a;
    char ruled[512];
    if (rule_for_set(policy, op, &a, ruled, sizeof ruled) != FSA_OK)
        return no_memory(why, whylen, op);
    if (a == FSA_POLICY_LOCAL_WINS) {
        char *others = NULL;
        bool same = true;
        fsa_status_t st = fsa_model_without_keys(op->json, ruled, &others);
        if (st == FSA_OK && others != NULL)
            st = unchanged_since_prior(in, others, &same);
        fsa_model_free(others);
        if (st == FSA_ENOMEM)
            return no_memory(why, whylen, op);
        if (st != FSA_OK || !same) {
            say(why, whylen, "%s %s: local wins its fields; others it sets %s", tname, op->id,
                st == FSA_OK ? "the server changed" : "may have changed (no prior)");
            return FSA_RESOLVE_PARK;
        }
    }
    if (a != FSA_POLICY_DEFAULT) {
        say(why, whylen, "policy for %s: %s", tname,
            a == FSA_POLICY_LOCAL_WINS    ? "local wins"
            : a == FSA_POLICY_SERVER_WINS ? "server wins"
                                          : "park");
        return from_action(a);
    }
    bool same = false;
    fsa_status_t st = unchanged_since_prior(in, op->json, &same);
    if (st == FSA_ENOMEM)
        return no_memory(why, whylen, op);
    if (st == FSA_OK && same) {
        say(why, whylen, "the server changed other fields of %s %s; rebased on version %lld", tname,
            op->id, (long long)in->server_version);
        return FSA_RESOLVE_REBASE;
    }
    say(why, whylen, "the server changed the same fields of %s %s (now version %lld)", tname,
        op->id, (long long)in->server_version);
    return FSA_RESOLVE_SERVER_WINS;
}

/* A transition the server's status does not allow: converged when the server is already there,
 * else the field's policy, else dropped after a final state and parked otherwise. */
static fsa_resolution_t resolve_transition(const fsa_resolver_policy_t *policy,
                                           const fsa_resolver_input_t *in, char *why, size_t whylen)
{
    const fsa_op_t *op = in->op;
    const char *tname = fsa_type_name(op->type);
    char now[FSA_STATUS_BYTES];
    fsa_status_t st = fsa_model_get_status(in->server_fields, op->type, now);
    if (st == FSA_ENOMEM)
        return no_memory(why, whylen, op);
    if (st != FSA_OK) {
        say(why, whylen, "the server's %s %s has no status", tname, op->id);
        return FSA_RESOLVE_PARK;
    }
    fsa_policy_action_t a = rule_for(policy, op->type, op->field);
    if (strcmp(now, op->to) == 0) {
        say(why, whylen, "%s %s is already %s on the server", tname, op->id, now);
        return FSA_RESOLVE_CONVERGED;
    }
    /* Its own precondition holds: another op of its group failed it (a group is all or nothing),
     * so it goes again with the group. */
    if (strcmp(now, op->from) == 0) {
        say(why, whylen, "%s %s is still %s on the server; resent", tname, op->id, now);
        return FSA_RESOLVE_REBASE;
    }
    if (a != FSA_POLICY_DEFAULT) {
        say(why, whylen, "policy for %s.%s", tname, op->field);
        return from_action(a);
    }
    if (fsa_model_status_terminal(op->type, now)) {
        say(why, whylen, "%s %s is %s on the server, a final state; %s→%s dropped", tname, op->id,
            now, op->from, op->to);
        return FSA_RESOLVE_SERVER_WINS;
    }
    say(why, whylen, "%s %s is %s on the server, not %s", tname, op->id, now, op->from);
    return FSA_RESOLVE_PARK;
}

fsa_resolution_t fsa_resolve(const fsa_resolver_policy_t *policy, const fsa_resolver_input_t *in,
                             char *why, size_t whylen)
{
    if (in == NULL || in->op == NULL) {
        say(why, whylen, "no op to resolve");
        return FSA_RESOLVE_PARK;
    }
    const fsa_op_t *op = in->op;
    if (in->outcome == FSA_RESULT_REJECTED) {
        say(why, whylen, "the server rejected the %s for good", fsa_op_kind_name(op->kind));
        return FSA_RESOLVE_PARK;
    }
    if (in->server_fields == NULL && op->kind == FSA_OP_CREATE) {
        /* A conflict without the entity: the server does not have it, the create's own
         * precondition holds, and another op of its group failed it. */
        say(why, whylen, "%s %s is not on the server; resent", fsa_type_name(op->type), op->id);
        return FSA_RESOLVE_REBASE;
    }
    if (in->server_fields == NULL) {
        say(why, whylen, "the server's state of %s %s is unknown", fsa_type_name(op->type), op->id);
        return FSA_RESOLVE_PARK;
    }
    switch (op->kind) {
    case FSA_OP_CREATE: return resolve_create(in, why, whylen);
    case FSA_OP_SET: return resolve_set(policy, in, why, whylen);
    case FSA_OP_TRANSITION: return resolve_transition(policy, in, why, whylen);
    case FSA_OP_MERGE:
    case FSA_OP_INCREMENT:
    case FSA_OP_APPEND:
        say(why, whylen, "a %s never conflicts on its own: resent with its group",
            fsa_op_kind_name(op->kind));
        return FSA_RESOLVE_REBASE;
    default: say(why, whylen, "unknown op kind"); return FSA_RESOLVE_PARK;
    }
}

fsa_resolution_t fsa_resolve_group(const fsa_resolver_policy_t *policy,
                                   const fsa_resolver_input_t *in, size_t n, char *why,
                                   size_t whylen)
{
    if (in == NULL || n == 0) {
        say(why, whylen, "empty group");
        return FSA_RESOLVE_PARK;
    }
    /* retry > park > server wins > rebase > converged; the verdict explained is the deciding
     * one. A member that could not be decided leaves the whole group undecided. */
    static const int rank[] = {[FSA_RESOLVE_CONVERGED] = 0,
                               [FSA_RESOLVE_REBASE] = 1,
                               [FSA_RESOLVE_SERVER_WINS] = 2,
                               [FSA_RESOLVE_PARK] = 3,
                               [FSA_RESOLVE_RETRY] = 4};
    fsa_resolution_t worst = FSA_RESOLVE_CONVERGED;
    int worst_rank = -1;
    for (size_t i = 0; i < n; i++) {
        char one[256];
        fsa_resolution_t r = fsa_resolve(policy, &in[i], one, sizeof one);
        if (rank[r] > worst_rank) {
            worst_rank = rank[r];
            worst = r;
            say(why, whylen, "group: %s", one);
        }
    }
    return worst;
}

const char *fsa_resolution_name(fsa_resolution_t r)
{
    switch (r) {
    case FSA_RESOLVE_REBASE: return "rebase";
    case FSA_RESOLVE_CONVERGED: return "converged";
    case FSA_RESOLVE_SERVER_WINS: return "server-wins";
    case FSA_RESOLVE_PARK: return "park";
    case FSA_RESOLVE_RETRY: return "retry";
    }
    return "?";
}
