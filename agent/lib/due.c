/* libfieldsync: the sync thread's when-to-sync rule and its watchdog, pure (no I/O, no clock). */
#include "agent/lib/due.h"

fsl_due_t fsl__due(const fsl_due_in_t *in)
{
    const fsl_due_memo_t *m = &in->memo;
    fsl_due_t d = {.due = in->asked, .backing_off = in->next_attempt_ms > in->wall_ms};
    int64_t since = in->since_ms;
    if (!d.due && !d.backing_off) {
        if (in->attention)
            /* Refused (or no usable configuration): a long wait, whatever is recorded. */
            d.due = since >= in->interval_ms;
        else
            d.due = m->never_synced || (in->outbox_read && in->last_seq > in->seen_seq) ||
                    since >= in->interval_ms || (m->soon && since >= m->soon_ms) ||
                    (m->failed && since >= FSL_DUE_SOON_MS);
    }
    if (d.due)
        return d;

    /* Sleep until the next reason to sync. */
    int64_t wait = in->interval_ms - since;
    if (d.backing_off)
        /* Past the boundary, not a hair before. */
        wait = in->next_attempt_ms - in->wall_ms < INT64_MAX ? in->next_attempt_ms - in->wall_ms + 1
                                                             : INT64_MAX;
    else if (m->soon && !in->attention && m->soon_ms - since < wait)
        wait = m->soon_ms - since;
    else if (m->failed && !in->attention && FSL_DUE_SOON_MS - since < wait)
        wait = FSL_DUE_SOON_MS - since;
    if (!in->watched && wait > FSL_DUE_WATCH_RETRY_MS)
        wait = FSL_DUE_WATCH_RETRY_MS;
    d.wait_ms = wait > 0 ? wait : 0;
    return d;
}

fsl_due_memo_t fsl__due_after(fsa_status_t st, bool other_syncs, int64_t pushed, bool ops_left)
{
    fsl_due_memo_t m = {.never_synced = false};
    m.failed = st != FSA_OK && !(st == FSA_EBUSY && other_syncs);
    m.soon = st == FSA_OK && ops_left;
    m.soon_ms = pushed > 0 ? 0 : FSL_DUE_SOON_MS;
    return m;
}

bool fsl__due_stalled(bool answers, int64_t queue_depth, int64_t oldest_pending_age_ms,
                      int64_t stall_ms, bool pull_stuck)
{
    bool old = queue_depth > 0 && oldest_pending_age_ms > stall_ms;
    return (answers && old) || pull_stuck;
}
