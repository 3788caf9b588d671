/* fieldsync: exponential backoff with full jitter, the platform's named retry policies, and the
 * classification of sync errors. Pure: no clock, no sleep, no randomness of its own. */
#ifndef FSA_SYNC_BACKOFF_H
#define FSA_SYNC_BACKOFF_H

#include <stdbool.h>
#include <stdint.h>

#include "port/status.h"

/*
 * As in FreeRTOS's backoffAlgorithm: the caller passes in a random number and gets a delay back;
 * the caller sleeps (on its port, so tests run on the sim clock). Delays are nanoseconds of
 * monotonic time.
 */

/* The platform's named policies (values frozen). */
typedef enum fsa_retry_kind {
    FSA_RETRY_DEFAULT = 0,          /* 3 retries, 0.1 s, x2.0, max 5 s */
    FSA_RETRY_AGGRESSIVE = 1,       /* 5 retries, 0.05 s, x1.5, max 3 s */
    FSA_RETRY_CONSERVATIVE = 2,     /* 2 retries, 0.5 s, x2.5, max 10 s */
    FSA_RETRY_LOCK_ACQUISITION = 3, /* 4 retries, 0.1 s, x1.5, max 2 s */
    FSA__RETRY_COUNT
} fsa_retry_kind_t;

typedef struct fsa_retry_policy {
    char name[sizeof "LOCK_ACQUISITION"]; /* characters, not a pointer: no relocation each */
    uint32_t max_retries;                 /* retries after the first try */
    int64_t initial_ns;                   /* the cap of the first retry's delay */
    double multiplier;                    /* the cap grows by this per retry */
    int64_t max_ns;                       /* and never beyond this */
} fsa_retry_policy_t;

/* The policy of a kind (static, never freed), NULL for an unknown kind. */
const fsa_retry_policy_t *fsa_retry_policy(fsa_retry_kind_t kind);

/* Finds a policy by name ("DEFAULT", case-sensitive). FSA_OK or FSA_EINVAL. */
fsa_status_t fsa_retry_policy_parse(const char *name, fsa_retry_kind_t *out) FSA_MUST_CHECK;

/* The state of one retried attempt. Initialise with fsa_backoff_init(). */
typedef struct fsa_backoff {
    const fsa_retry_policy_t *policy;
    uint32_t retries; /* retries taken so far */
} fsa_backoff_t;

void fsa_backoff_init(fsa_backoff_t *b, const fsa_retry_policy_t *policy);

/*
 * The delay before the next retry, with full jitter: a uniform pick in [0, cap] where
 * cap = min(max_ns, initial_ns * multiplier^retries), using `random`. When the server asked to
 * wait (retry_after_ns > 0, from Retry-After), the delay is at least that.
 * Returns FSA_OK with *delay_ns set and the retry counted; FSA_EEXHAUSTED when the policy's
 * retries are used up (*delay_ns 0); FSA_EINVAL for NULL arguments.
 */
fsa_status_t fsa_backoff_next(fsa_backoff_t *b, uint64_t random, int64_t retry_after_ns,
                              int64_t *delay_ns) FSA_MUST_CHECK;

/*
 * The sync cycle's delay after `failures` failed cycles in a row (>= 1): never exhausted;
 * cap = min(FSA_LIMIT_CYCLE_BACKOFF_MAX_MS, FSA_LIMIT_CYCLE_BACKOFF_INITIAL_MS * 2^(failures-1)),
 * and the delay is cap/2 plus a uniform pick in [0, cap/2] ("equal jitter": a device that keeps
 * failing never retries at once, yet a fleet still spreads out). At least retry_after_ns.
 */
int64_t fsa_backoff_cycle_delay(uint32_t failures, uint64_t random, int64_t retry_after_ns);

/*
 * A stored cycle deadline `next` (wall ms) as seen at wall time `now`: next itself, or now when it
 * lies further ahead than fsa_backoff_cycle_delay ever waits (its cap or the Retry-After cap,
 * whichever is larger, plus a minute). Such a deadline was stored before the wall clock was set
 * back (a clock that ran a year ahead would otherwise keep the device from syncing for a year).
 */
int64_t fsa_backoff_cycle_due(int64_t next, int64_t now);

/* How a failed exchange with the server is handled (PROTOCOL.md section 3). */
typedef enum fsa_errclass {
    FSA_ERRCLASS_NONE = 0,      /* not an error */
    FSA_ERRCLASS_TRANSIENT = 1, /* network error, timeout, reset, 5xx, and any answer that is
                                   not the protocol's (3xx, 403, 404...): back off, retry as is */
    FSA_ERRCLASS_WAIT = 2,      /* 429/503: wait at least Retry-After, else back off */
    FSA_ERRCLASS_TOO_LARGE = 3, /* 413: split the batch and retry */
    FSA_ERRCLASS_SKEW = 4,      /* 401 clock_skew: correct the clock offset and retry */
    FSA_ERRCLASS_AUTH = 5,      /* other 401s: keep the outbox, retry on the long backoff with
                                   the key read again, and report (PROTOCOL.md section 7, 4) */
    FSA_ERRCLASS_REJECTED = 6,  /* 400: the server cannot read the request; with the code
                                   "malformed" the batch is quarantined, not resent as is */
    FSA_ERRCLASS_RESIGN = 7     /* 401 replay: the server saw this nonce (an HTTP library resent
                                   the request after a dropped connection): sign again and resend */
} fsa_errclass_t;

/*
 * Classifies the outcome of one request: net is the transport's status (FSA_OK when an HTTP
 * answer arrived), http its status code, code the error body's code ("clock_skew", may be NULL).
 */
fsa_errclass_t fsa_errclass(fsa_status_t net, int http, const char *code);

/* A short name for logs and metrics ("transient", "wait", ...). */
const char *fsa_errclass_name(fsa_errclass_t c);

#endif
