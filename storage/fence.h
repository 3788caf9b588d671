/* fieldsync: a fencing token, carried by a journal write made under a named lock. */
#ifndef FSA_STORAGE_FENCE_H
#define FSA_STORAGE_FENCE_H

#include <stdint.h>

/* key: the lock key ("JOB_WORKFLOW_UPDATE:J1"); token: what the lock manager issued with it.
 * A write carrying a fence is refused (FSA_EFENCED, nothing written) when the journal's locks
 * table holds a later token for key. */
typedef struct fsa_fence {
    const char *key;
    int64_t token;
} fsa_fence_t;

#endif
