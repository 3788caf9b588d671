/* fieldsync: the lock manager's interface to the journal (the fencing check). Internal to storage/.
 */
#ifndef FSA_STORAGE_LOCK_INTERNAL_H
#define FSA_STORAGE_LOCK_INTERNAL_H

#include <sqlite3.h>

#include "port/port.h"
#include "port/status.h"
#include "storage/fence.h"

/*
 * Checks a fence against the latest token issued for its key on the journal open on db: the lock
 * managers' shared token table ("<journal>.locks") while it is live, the locks table otherwise
 * (see "The shared token table" in lock.c). The journal calls it inside its own write transaction
 * (BEGIN IMMEDIATE), before it changes anything: every acquisition that can take a lock from a
 * holder still using it (a takeover) runs in a write transaction too, so none can slip in between
 * the check and the commit. The check starts no transaction of its own and writes nothing.
 * port: used only to map the shared table when f->mgr is NULL or on another journal.
 * Returns FSA_OK when f->token is the latest token issued for f->key; FSA_EFENCED when a later
 * token has been issued, or the fence cannot be one this journal issued (NULL key, token <= 0, no
 * token for the key, a token above the latest); FSA_EINVAL (db or f NULL, or port NULL when it is
 * needed); FSA_EBUSY, FSA_EIO, FSA_ENOMEM, FSA_ECORRUPT (SQLite failed to read, or the shared
 * table could not be mapped).
 */
fsa_status_t fsa__lock_fence_check(fsa_port_t *port, sqlite3 *db,
                                   const fsa_fence_t *f) FSA_MUST_CHECK;

#endif
