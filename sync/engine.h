/* fieldsync: the sync engine: pushes the outbox in signed batches, applies results, resolves
 * conflicts, pulls server changes, and backs off when the server cannot be reached. */
#ifndef FSA_SYNC_ENGINE_H
#define FSA_SYNC_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port/port.h"
#include "storage/journal.h"
#include "sync/backoff.h"
#include "sync/resolver.h"
#include "sync/signer.h"
#include "sync/transport.h"

typedef struct fsa_engine fsa_engine_t;

typedef struct fsa_engine_opts {
    const char *device_id;          /* required; copied */
    const fsa_signer_key_t *key;    /* required; copied, wiped by fsa_engine_free */
    fsa_transport_opts_t transport; /* base_url required */
    size_t batch_max_ops;           /* 0: 100; else FSA_JOURNAL_GROUP_MAX..FSA_LIMIT_BATCH_OPS */
    size_t batch_max_bytes;         /* 0: 256 KiB; else FSA_LIMIT_ENGINE_BATCH_BYTES_MIN..
                                       FSA_LIMIT_BODY_BYTES */
    size_t pull_limit; /* changes per pull page; 0: 200; at most FSA_LIMIT_BATCH_OPS_MAX */
    const fsa_retry_policy_t *retry;       /* one request's retries; NULL: DEFAULT */
    const fsa_resolver_policy_t *resolver; /* NULL: DESIGN.md's defaults */
    bool ignore_backoff; /* sync now even when the persisted next attempt is later */
    bool no_lock;        /* do not take the SYNC lock (the caller holds it) */
} fsa_engine_opts_t;

/* What the engine is doing, for the app that embeds it. Values are frozen. */
typedef enum fsa_engine_state {
    FSA_ENGINE_IDLE = 0, /* nothing to do, done, or cancelled */
    FSA_ENGINE_PUSHING = 1,
    FSA_ENGINE_PULLING = 2,
    FSA_ENGINE_RETRYING = 3, /* waiting before a retry (network error, 5xx, 429) */
    FSA_ENGINE_OFFLINE = 4,  /* gave up this cycle; the next attempt time is persisted */
    FSA_ENGINE_STOPPED = 5   /* refused by the server (auth): needs a person */
} fsa_engine_state_t;

typedef struct fsa_engine_status {
    fsa_engine_state_t state;
    const char *reason;      /* a short phrase ("pushing 100 ops", "server said 503") */
    int64_t queue_depth;     /* pending ops */
    int64_t pushed;          /* ops answered so far in this cycle */
    fsa_status_t last_error; /* FSA_OK when none */
    const char *last_error_msg;
} fsa_engine_status_t;

typedef void (*fsa_engine_status_fn)(void *arg, const fsa_engine_status_t *status);

/* One cycle's figures. */
typedef struct fsa_sync_report {
    int64_t batches, pushed;
    int64_t applied, duplicate, conflict, rejected;  /* per-op results */
    int64_t rebased, converged, server_wins, parked; /* resolver verdicts */
    int64_t pulled;                                  /* changes folded */
    int64_t retries;                                 /* requests retried */
    int64_t bytes_sent, bytes_received;              /* on the wire */
    int64_t compressed_ahead;                        /* batches sent compressed ahead */
    int64_t next_attempt_ms;                         /* persisted next attempt; 0: none */
    int last_http_status; /* the last HTTP status the server answered; 0: no answer arrived */
    bool cancelled;       /* the cycle ended at a cancel (fsa_engine_cancel): nothing persisted */
    char error[320];      /* "" on success */
} fsa_sync_report_t;

/*
 * Creates an engine for journal j (both must outlive it). port gives the clocks (the engine
 * sleeps on it between retries), random and logging. On FSA_OK *out is set; otherwise err
 * names the problem. FSA_OK, FSA_EINVAL (also an option out of its range above: rejected, not
 * clamped), FSA_ENOMEM, the transport's errors.
 */
fsa_status_t fsa_engine_new(fsa_port_t *port, fsa_journal_t *j, const fsa_engine_opts_t *opts,
                            fsa_engine_t **out, char *err, size_t errlen) FSA_MUST_CHECK;

/* Frees the engine (wiping its key). NULL is accepted. */
void fsa_engine_free(fsa_engine_t *e);

/* Sets the status callback (NULL to remove). It runs on the syncing thread. */
void fsa_engine_on_status(fsa_engine_t *e, fsa_engine_status_fn fn, void *arg);

/* Asks a running cycle to stop at its next step (from another thread or a signal handler's
 * flag); a request on the wire ends within about a second, unanswered, and its batch is resent
 * next time (ops are idempotent by op id); a retry's wait ends at once. The cycle returns
 * FSA_ETIMEOUT and persists no backoff (a stop is not a failure). Sticky: later cycles of this
 * engine return at once; make a new engine to sync again. */
void fsa_engine_cancel(fsa_engine_t *e);

/*
 * One sync cycle: takes the SYNC lock, pushes every pending op in seq order in bounded batches
 * (splitting on 413, correcting the clock on clock_skew, retrying transient failures per the
 * retry policy and Retry-After), applies the results, resolves conflicts per the resolver
 * (rebased ops are pushed in the same cycle), pulls changes until `more` is false, and compacts.
 * report (may be NULL) receives the figures.
 * The SYNC lease is kept while the cycle waits (opts.transport.tick, when given, runs every half
 * second of a wait, on this thread, with no fence: its journal writes are its own), and every
 * journal write of the cycle carries the lock's fence (fsa_journal_fence_thread).
 * Returns FSA_OK (all pushed and pulled); FSA_EBUSY (another sync holds the lock, or the
 * persisted next attempt is later: nothing sent; or another sync took the lock over after this
 * one's lease ran out (a process stopped past it): nothing written after that); FSA_ENET,
 * FSA_ETIMEOUT, FSA_ETLS (the server could not be reached within the retry policy: the next attempt
 * time is persisted; a 429/503 whose Retry-After is longer than the policy's longest delay ends
 * the cycle at once, its wait persisted as the next attempt); FSA_EAUTH (the server refused our
 * credentials: the cycle's backoff is persisted as for an unreachable server; a caller retries
 * later, with the key read again); FSA_EPROTO (a malformed answer); FSA_ETOOLARGE (one change of a
 * pull is more than opts.transport.max_response_bytes: the pull cannot progress; the backoff is
 * persisted, so that it is not downloaded again and again); FSA_ETIMEOUT also when cancelled (then
 * no backoff is persisted); FSA_ENOMEM (an allocation failed: not retried as a network failure, no
 * backoff persisted; ops sent stay in flight and are resent next cycle); storage errors.
 */
fsa_status_t fsa_engine_sync(fsa_engine_t *e, fsa_sync_report_t *report) FSA_MUST_CHECK;

#ifdef FSA_FAULT_HOOKS
/* For tests: the pages one pull may take before it fails as endless (n <= 0: the default,
 * 100,000), process-wide. */
void fsa__engine_pull_pages_max(int n);
#endif

const char *fsa_engine_state_name(fsa_engine_state_t s);

#endif
