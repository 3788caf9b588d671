/* fieldsync: a fencing token, carried by a journal write made under a named lock. */
#ifndef FSA_STORAGE_FENCE_H
#define FSA_STORAGE_FENCE_H

#include <stdint.h>

struct fsa_lockmgr;

/* key: the lock key ("JOB_WORKFLOW_UPDATE:J1"); token: what the lock manager issued with it.
 * A write carrying a fence is refused (FSA_EFENCED, nothing written) when a later token has been
 * issued for key (the lock manager's shared token table, or the journal's locks table: see
 * storage/lock.c). mgr: the manager that issued it (fsa_lock_fence sets it), whose mapping of the
 * shared table the check reads; NULL (a fence made by hand) maps the table for the check. */
typedef struct fsa_fence {
    const char *key;
    int64_t token;
    const struct fsa_lockmgr *mgr;
} fsa_fence_t;

#endif
