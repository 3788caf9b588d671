/* libfieldsync: the sync thread's when-to-sync rule and its watchdog, pure (no I/O, no clock). */
#ifndef FSA_AGENT_LIB_DUE_H
#define FSA_AGENT_LIB_DUE_H

#include <stdbool.h>
#include <stdint.h>

#include "port/status.h"

/*
 * The sync thread (worker.c) reads the journal and the clocks, fills an fsl_due_in_t, and asks
 * fsl__due whether a cycle is due now and, if not, how long to sleep before it looks again (it
 * also wakes at once on a request or a change of the journal). After each cycle fsl__due_after
 * says what the rule remembers of it. Neither reads a clock or the journal: the callers pass the
 * times in, so every case is a row of a table (tests/agent/lib/test_lib_due.c).
 *
 * The rule, in order:
 *   - asked (fieldsync_sync_now, a reload): due, even while backing off;
 *   - backing off (a next attempt persisted by this or another process, or an earlier run, is
 *     still ahead on the wall clock): not due; wake just past the next attempt;
 *   - ATTENTION (the server refused the device, or the configuration cannot be used): due once
 *     the interval has passed since the last cycle, whatever is recorded;
 *   - otherwise due when: no cycle yet in this start; new records in the outbox since the last
 *     cycle began; the interval has passed; "soon" after a cycle that went well but left ops
 *     (at once after one that pushed, FSL_DUE_SOON_MS after one that pushed nothing); or
 *     FSL_DUE_SOON_MS after a failed cycle that persisted no backoff (never a spin).
 * Without a working watch on the journal, no sleep is longer than FSL_DUE_WATCH_RETRY_MS.
 */

#define FSL_DUE_SOON_MS                                                                            \
    1000 /* after a cycle that left ops without pushing any; after a                               \
            failure that persisted no backoff */
#define FSL_DUE_WATCH_RETRY_MS                                                                     \
    1000 /* without a working watch, the journal is looked at this                                 \
            often */

/* What the rule remembers between cycles (fsl__due_after sets it; a start begins with
 * FSL_DUE_MEMO_START). */
typedef struct fsl_due_memo {
    bool never_synced; /* no cycle yet in this start */
    bool soon;         /* the last cycle went well but left ops: sync again after soon_ms */
    int64_t soon_ms;
    bool failed; /* the last cycle failed (another process syncing is not a failure) */
} fsl_due_memo_t;

#define FSL_DUE_MEMO_START ((fsl_due_memo_t){.never_synced = true})

typedef struct fsl_due_in {
    fsl_due_memo_t memo;
    bool asked;              /* fieldsync_sync_now or a reload since the last look */
    bool attention;          /* the live state is ATTENTION */
    bool outbox_read;        /* last_seq could be read (a failed read tells of no new records) */
    int64_t last_seq;        /* the outbox's last seq now */
    int64_t seen_seq;        /* ... when the last cycle began (-1: none yet) */
    int64_t since_ms;        /* monotonic time since the last cycle ended (or the start) */
    int64_t interval_ms;     /* sync_interval_ms, > 0 */
    int64_t wall_ms;         /* the wall clock now */
    int64_t next_attempt_ms; /* the persisted next attempt on the wall clock; 0: none */
    bool watched;            /* the journal's watch works */
} fsl_due_in_t;

typedef struct fsl_due {
    bool due;         /* run a cycle now */
    bool backing_off; /* a persisted next attempt is ahead (shown as OFFLINE when not due) */
    int64_t wait_ms;  /* when not due: sleep at most this long (>= 0); 0 when due */
} fsl_due_t;

/* The decision for in (not NULL). */
fsl_due_t fsl__due(const fsl_due_in_t *in);

/* What the rule remembers after a cycle that returned st: other_syncs when it did nothing
 * because another process holds the journal's sync (FSA_EBUSY without a backoff); pushed, the
 * ops it pushed; ops_left, whether ops stayed in the outbox after it (read after the cycle). */
fsl_due_memo_t fsl__due_after(fsa_status_t st, bool other_syncs, int64_t pushed, bool ops_left);

/*
 * The watchdog: the queue is stuck when ops have been pending longer than stall_ms while the
 * server answers (a rejected batch resent forever, a server that answers 5xx to us alone), or a
 * pull cannot progress (one change over this device's answer limit, PROTOCOL.md section 7,
 * amendment 6) whatever the queue. answers: the server answered something in the last cycle.
 */
bool fsl__due_stalled(bool answers, int64_t queue_depth, int64_t oldest_pending_age_ms,
                      int64_t stall_ms, bool pull_stuck);

#endif
