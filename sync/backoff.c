/* fieldsync: the named retry policies, backoff with jitter, and error classification. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "port/limits.h"
#include "port/port.h"
#include "sync/backoff.h"

#define MS(x) ((int64_t)((x)*1e6))

/* The platform's table (race-condition guide, "Retry Policies"), exactly. */
static const fsa_retry_policy_t policies[FSA__RETRY_COUNT] = {
    [FSA_RETRY_DEFAULT] = {"DEFAULT", 3, MS(100), 2.0, MS(5000)},
    [FSA_RETRY_AGGRESSIVE] = {"AGGRESSIVE", 5, MS(50), 1.5, MS(3000)},
    [FSA_RETRY_CONSERVATIVE] = {"CONSERVATIVE", 2, MS(500), 2.5, MS(10000)},
    [FSA_RETRY_LOCK_ACQUISITION] = {"LOCK_ACQUISITION", 4, MS(100), 1.5, MS(2000)},
};

const fsa_retry_policy_t *fsa_retry_policy(fsa_retry_kind_t kind)
{
    if ((unsigned)kind >= FSA__RETRY_COUNT)
        return NULL;
    return &policies[kind];
}

fsa_status_t fsa_retry_policy_parse(const char *name, fsa_retry_kind_t *out)
{
    if (name == NULL || out == NULL)
        return FSA_EINVAL;
    for (unsigned i = 0; i < FSA__RETRY_COUNT; i++) {
        if (strcmp(name, policies[i].name) == 0) {
            *out = (fsa_retry_kind_t)i;
            return FSA_OK;
        }
    }
    return FSA_EINVAL;
}

void fsa_backoff_init(fsa_backoff_t *b, const fsa_retry_policy_t *policy)
{
    if (b == NULL)
        return;
    b->policy = policy;
    b->retries = 0;
}

/* A uniform pick in [0, cap] from a 64-bit random number. The modulo bias is at most cap / 2^64:
 * about 2^-27 for the largest cap a delay has (the cycle's 150 s, in nanoseconds), which no
 * schedule can notice. */
static int64_t pick(uint64_t random, int64_t cap)
{
    if (cap <= 0)
        return 0;
    return (int64_t)(random % ((uint64_t)cap + 1));
}

static int64_t clamp_retry_after(int64_t retry_after_ns)
{
    int64_t max = FSA_LIMIT_RETRY_AFTER_MAX_MS * FSA_NS_PER_MS;
    return retry_after_ns > max ? max : retry_after_ns;
}

fsa_status_t fsa_backoff_next(fsa_backoff_t *b, uint64_t random, int64_t retry_after_ns,
                              int64_t *delay_ns)
{
    if (b == NULL || b->policy == NULL || delay_ns == NULL)
        return FSA_EINVAL;
    *delay_ns = 0;
    const fsa_retry_policy_t *p = b->policy;
    if (b->retries >= p->max_retries)
        return FSA_EEXHAUSTED;
    double cap = (double)p->initial_ns;
    for (uint32_t i = 0; i < b->retries && cap < (double)p->max_ns; i++)
        cap *= p->multiplier;
    if (cap > (double)p->max_ns)
        cap = (double)p->max_ns;
    int64_t d = pick(random, (int64_t)cap);
    int64_t ra = clamp_retry_after(retry_after_ns);
    *delay_ns = d > ra ? d : ra;
    b->retries++;
    return FSA_OK;
}

int64_t fsa_backoff_cycle_delay(uint32_t failures, uint64_t random, int64_t retry_after_ns)
{
    int64_t max = FSA_LIMIT_CYCLE_BACKOFF_MAX_MS * FSA_NS_PER_MS;
    int64_t cap = FSA_LIMIT_CYCLE_BACKOFF_INITIAL_MS * FSA_NS_PER_MS;
    for (uint32_t i = 1; i < failures && cap < max; i++)
        cap *= 2;
    if (cap > max)
        cap = max;
    int64_t d = cap / 2 + pick(random, cap / 2);
    int64_t ra = clamp_retry_after(retry_after_ns);
    return d > ra ? d : ra;
}

fsa_errclass_t fsa_errclass(fsa_status_t net, int http, const char *code)
{
    if (net != FSA_OK)
        return FSA_ERRCLASS_TRANSIENT;
    if (http >= 200 && http < 300)
        return FSA_ERRCLASS_NONE;
    if (http == 429 || http == 503)
        return FSA_ERRCLASS_WAIT;
    if (http == 413)
        return FSA_ERRCLASS_TOO_LARGE;
    if (http == 401 && code != NULL && strcmp(code, "clock_skew") == 0)
        return FSA_ERRCLASS_SKEW;
    if (http == 401 && code != NULL && strcmp(code, "replay") == 0)
        return FSA_ERRCLASS_RESIGN;
    if (http == 401)
        return FSA_ERRCLASS_AUTH;
    if (http == 400)
        return FSA_ERRCLASS_REJECTED;
    /* Anything else (5xx, 408, a redirect from a captive portal, a 404 or 403 from a proxy in
     * the way) is not the protocol's answer: the ops stay, and the cycle backs off. */
    return FSA_ERRCLASS_TRANSIENT;
}

const char *fsa_errclass_name(fsa_errclass_t c)
{
    static const char names[][10] = {"none", "transient", "wait",     "too_large",
                                     "skew", "auth",      "rejected", "resign"};
    return (unsigned)c < sizeof names / sizeof names[0] ? names[c] : "?";
}

int64_t fsa_backoff_cycle_due(int64_t next, int64_t now)
{
    int64_t most = FSA_LIMIT_CYCLE_BACKOFF_MAX_MS > FSA_LIMIT_RETRY_AFTER_MAX_MS
                       ? FSA_LIMIT_CYCLE_BACKOFF_MAX_MS
                       : FSA_LIMIT_RETRY_AFTER_MAX_MS;
    most += 60 * 1000;
    return now <= INT64_MAX - most && next > now + most ? now : next;
}
