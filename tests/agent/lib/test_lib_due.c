/* fieldsync tests: agent/lib/due.c, the sync thread's when-to-sync rule and watchdog, by tables:
 * every row is its own CMocka case, named by what it shows. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "agent/lib/due.h"
#include "tests/test_util.h"

#define WALL 1700000000000 /* the wall clock in every row, ms */
#define IVL 60000          /* sync_interval_ms in every row unless it says otherwise */
#define SOON FSL_DUE_SOON_MS
#define RETRY FSL_DUE_WATCH_RETRY_MS

/* ---- fsl__due ---- */

typedef struct due_row {
    const char *name;
    fsl_due_in_t in; /* wall_ms, interval_ms and watched are filled in when left 0 (see base) */
    bool unwatched;  /* the journal's watch does not work */
    bool due, backing_off;
    int64_t wait_ms;
} due_row_t;

#define NEVER                                                                                      \
    {                                                                                              \
        .never_synced = true                                                                       \
    }
#define SOON_AFTER(ms)                                                                             \
    {                                                                                              \
        .soon = true, .soon_ms = (ms)                                                              \
    }
#define FAILED                                                                                     \
    {                                                                                              \
        .failed = true                                                                             \
    }
#define NEW_RECORDS .outbox_read = true, .last_seq = 5, .seen_seq = 4

static const due_row_t due_rows[] = {
    /* asked */
    {"asked: due at once", {.asked = true}, false, true, false, 0},
    {"asked while backing off: due (sync_now cuts a backoff short)",
     {.asked = true, .next_attempt_ms = WALL + 5000},
     false,
     true,
     true,
     0},
    {"asked in ATTENTION: due", {.asked = true, .attention = true}, false, true, false, 0},
    /* the first cycle of a start */
    {"never synced: due", {.memo = NEVER}, false, true, false, 0},
    /* new records */
    {"new records: due", {NEW_RECORDS, .since_ms = 10}, false, true, false, 0},
    {"new records but the outbox could not be read: not due, the rest of the interval",
     {.outbox_read = false, .last_seq = 5, .seen_seq = 4, .since_ms = 10000},
     false,
     false,
     false,
     50000},
    {"no new record (same seq): not due, the rest of the interval",
     {.outbox_read = true, .last_seq = 4, .seen_seq = 4, .since_ms = 10000},
     false,
     false,
     false,
     50000},
    {"first look after a start (seen -1, outbox empty at 0): due",
     {.outbox_read = true, .last_seq = 0, .seen_seq = -1, .since_ms = 0},
     false,
     true,
     false,
     0},
    /* the interval */
    {"interval passed: due", {.since_ms = IVL}, false, true, false, 0},
    {"interval 1 ms short: wait 1 ms", {.since_ms = IVL - 1}, false, false, false, 1},
    {"just after a cycle: wait the whole interval", {.since_ms = 0}, false, false, false, IVL},
    {"short interval passed: due", {.interval_ms = 500, .since_ms = 600}, false, true, false, 0},
    /* a persisted backoff (this process, an earlier run, or another process) */
    {"backing off: not due even never synced and with new records; wake past the attempt",
     {.memo = NEVER, NEW_RECORDS, .next_attempt_ms = WALL + 30000},
     false,
     false,
     true,
     30001},
    {"backing off longer than the interval: the backoff wins over the interval",
     {.since_ms = IVL + 10000, .next_attempt_ms = WALL + 3600000},
     false,
     false,
     true,
     3600001},
    {"backing off, next attempt 1 ms ahead: wait 2 ms (past the boundary)",
     {.memo = NEVER, .next_attempt_ms = WALL + 1},
     false,
     false,
     true,
     2},
    {"next attempt now (== wall): not backing off",
     {.memo = NEVER, .next_attempt_ms = WALL},
     false,
     true,
     false,
     0},
    {"next attempt in the past: not backing off",
     {.next_attempt_ms = WALL - 1, .since_ms = 100},
     false,
     false,
     false,
     IVL - 100},
    {"next attempt at the end of time: not due, no overflow",
     {.next_attempt_ms = INT64_MAX},
     false,
     false,
     true,
     INT64_MAX - WALL + 1},
    {"failed with a persisted backoff: wait for the backoff, not SOON",
     {.memo = FAILED, .since_ms = 5000, .next_attempt_ms = WALL + 10000},
     false,
     false,
     true,
     10001},
    /* ATTENTION: refused, or no usable configuration */
    {"attention: new records do not make it due",
     {.attention = true, NEW_RECORDS, .since_ms = 1000},
     false,
     false,
     false,
     IVL - 1000},
    {"attention: never synced does not make it due",
     {.attention = true, .memo = NEVER, .since_ms = 1000},
     false,
     false,
     false,
     IVL - 1000},
    {"attention: due after the interval",
     {.attention = true, .since_ms = IVL},
     false,
     true,
     false,
     0},
    {"attention: soon is ignored",
     {.attention = true, .memo = SOON_AFTER(0), .since_ms = 10},
     false,
     false,
     false,
     IVL - 10},
    {"attention: a failure waits the interval, not SOON",
     {.attention = true, .memo = FAILED, .since_ms = 300},
     false,
     false,
     false,
     IVL - 300},
    /* soon: the last cycle went well but ops stayed */
    {"soon after a cycle that pushed: due at once",
     {.memo = SOON_AFTER(0), .since_ms = 0},
     false,
     true,
     false,
     0},
    {"soon after a cycle that pushed nothing: wait the rest of SOON",
     {.memo = SOON_AFTER(SOON), .since_ms = 200},
     false,
     false,
     false,
     SOON - 200},
    {"soon after a cycle that pushed nothing: due after SOON",
     {.memo = SOON_AFTER(SOON), .since_ms = SOON},
     false,
     true,
     false,
     0},
    {"soon longer than the interval: the interval",
     {.interval_ms = 500, .memo = SOON_AFTER(SOON)},
     false,
     false,
     false,
     500},
    /* failed without a persisted backoff: never a spin */
    {"failed: wait the rest of SOON",
     {.memo = FAILED, .since_ms = 300},
     false,
     false,
     false,
     SOON - 300},
    {"failed: due after SOON", {.memo = FAILED, .since_ms = SOON}, false, true, false, 0},
    /* without a working watch on the journal */
    {"no watch: look again after WATCH_RETRY", {.since_ms = 0}, true, false, false, RETRY},
    {"no watch, backing off: capped too",
     {.next_attempt_ms = WALL + 30000},
     true,
     false,
     true,
     RETRY},
    {"no watch, a shorter wait is kept",
     {.memo = SOON_AFTER(SOON), .since_ms = 700},
     true,
     false,
     false,
     SOON - 700},
    {"no watch: new records still make it due", {NEW_RECORDS}, true, true, false, 0},
};

static void run_due_row(void **state)
{
    const due_row_t *row = *state;
    fsl_due_in_t in = row->in;
    in.wall_ms = WALL;
    if (in.interval_ms == 0)
        in.interval_ms = IVL;
    in.watched = !row->unwatched;
    fsl_due_t d = fsl__due(&in);
    if (d.due != row->due || d.backing_off != row->backing_off || d.wait_ms != row->wait_ms)
        fail_msg("%s: got due=%d backing_off=%d wait=%lld, want due=%d backing_off=%d wait=%lld",
                 row->name, d.due, d.backing_off, (long long)d.wait_ms, row->due, row->backing_off,
                 (long long)row->wait_ms);
}

/* ---- fsl__due_after ---- */

typedef struct after_row {
    const char *name;
    fsa_status_t st;
    bool other_syncs;
    int64_t pushed;
    bool ops_left;
    fsl_due_memo_t want;
} after_row_t;

static const after_row_t after_rows[] = {
    {"after: ok, pushed, ops left: soon at once",
     FSA_OK,
     false,
     10,
     true,
     {.soon = true, .soon_ms = 0}},
    {"after: ok, pushed nothing, ops left: soon after SOON",
     FSA_OK,
     false,
     0,
     true,
     {.soon = true, .soon_ms = SOON}},
    {"after: ok, outbox drained: not soon", FSA_OK, false, 10, false, {.soon_ms = 0}},
    {"after: network down: failed", FSA_ENET, false, 0, false, {.failed = true, .soon_ms = SOON}},
    {"after: another process syncs: not failed", FSA_EBUSY, true, 0, false, {.soon_ms = SOON}},
    {"after: busy backing off: failed",
     FSA_EBUSY,
     false,
     0,
     false,
     {.failed = true, .soon_ms = SOON}},
    {"after: refused: failed", FSA_EAUTH, false, 0, false, {.failed = true, .soon_ms = SOON}},
    {"after: no engine (configuration): failed, not soon even with ops left",
     FSA_EINVAL,
     false,
     0,
     true,
     {.failed = true, .soon_ms = SOON}},
    {"after: a failure after a push is still failed, not soon",
     FSA_ETIMEOUT,
     false,
     5,
     true,
     {.failed = true, .soon_ms = 0}},
};

static void run_after_row(void **state)
{
    const after_row_t *row = *state;
    fsl_due_memo_t m = fsl__due_after(row->st, row->other_syncs, row->pushed, row->ops_left);
    if (m.never_synced || m.soon != row->want.soon || m.failed != row->want.failed ||
        m.soon_ms != row->want.soon_ms)
        fail_msg("%s: got never_synced=%d soon=%d soon_ms=%lld failed=%d, want soon=%d "
                 "soon_ms=%lld failed=%d",
                 row->name, m.never_synced, m.soon, (long long)m.soon_ms, m.failed, row->want.soon,
                 (long long)row->want.soon_ms, row->want.failed);
}

/* ---- fsl__due_stalled ---- */

typedef struct stall_row {
    const char *name;
    bool answers;
    int64_t depth, oldest_age_ms, stall_ms;
    bool pull_stuck, want;
} stall_row_t;

static const stall_row_t stall_rows[] = {
    {"stalled: old ops while the server answers", true, 3, 10001, 10000, false, true},
    {"stalled: not yet at exactly stall_ms", true, 3, 10000, 10000, false, false},
    {"stalled: old ops but the server does not answer (offline): no", false, 3, 99999, 10000, false,
     false},
    {"stalled: an empty queue is never stalled", true, 0, 99999, 10000, false, false},
    {"stalled: a pull that cannot progress, whatever the queue", false, 0, 0, 10000, true, true},
};

static void run_stall_row(void **state)
{
    const stall_row_t *row = *state;
    bool got = fsl__due_stalled(row->answers, row->depth, row->oldest_age_ms, row->stall_ms,
                                row->pull_stuck);
    if (got != row->want)
        fail_msg("%s: got %d, want %d", row->name, got, row->want);
}

#define N_DUE (sizeof due_rows / sizeof due_rows[0])
#define N_AFTER (sizeof after_rows / sizeof after_rows[0])
#define N_STALL (sizeof stall_rows / sizeof stall_rows[0])

int main(void)
{
    static struct CMUnitTest tests[N_DUE + N_AFTER + N_STALL];
    size_t n = 0;
    for (size_t i = 0; i < N_DUE; i++)
        tests[n++] = (struct CMUnitTest){.name = due_rows[i].name,
                                         .test_func = run_due_row,
                                         .initial_state = (void *)(uintptr_t)&due_rows[i]};
    for (size_t i = 0; i < N_AFTER; i++)
        tests[n++] = (struct CMUnitTest){.name = after_rows[i].name,
                                         .test_func = run_after_row,
                                         .initial_state = (void *)(uintptr_t)&after_rows[i]};
    for (size_t i = 0; i < N_STALL; i++)
        tests[n++] = (struct CMUnitTest){.name = stall_rows[i].name,
                                         .test_func = run_stall_row,
                                         .initial_state = (void *)(uintptr_t)&stall_rows[i]};
    return cmocka_run_group_tests_name("fsl__due", tests, NULL, NULL);
}
