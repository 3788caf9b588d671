/* fieldsync: the lock manager's interface to the journal (the fencing check). Internal to storage/.
 */
#ifndef FSA_STORAGE_LOCK_INTERNAL_H
#define FSA_STORAGE_LOCK_INTERNAL_H

#include <sqlite3.h>

#include "port/status.h"
#include "storage/fence.h"

/*
 * Checks a fence against the locks table of the journal open on db. The journal calls it inside
 * its own write transaction (BEGIN IMMEDIATE), before it changes anything, so that no acquisition
 * can slip in between the check and the commit; the check starts no transaction of its own and
 * writes nothing.
 * Returns FSA_OK when f->token is the latest token issued for f->key; FSA_EFENCED when a later
 * token has been issued, or the fence cannot be one this journal issued (NULL key, token <= 0, no
 * token for the key, a token above the latest); FSA_EINVAL (db or f NULL); FSA_EBUSY, FSA_EIO,
 * FSA_ENOMEM, FSA_ECORRUPT (SQLite failed to read).
 */
fsa_status_t fsa__lock_fence_check(sqlite3 *db, const fsa_fence_t *f) FSA_MUST_CHECK;

#endif
