/* fieldsync: the lock manager's interface to the journal (the fencing check). Internal to storage/.
 */
#ifndef FSA_STORAGE_LOCK_INTERNAL_H
#define FSA_STORAGE_LOCK_INTERNAL_H

#include <sqlite3.h>

#include "port/port.h"
#include "port/status.h"
#include "storage/fence.h"
#include "storage/lock.h"

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

/* A slot of the shared token table runs at most this many tokens ahead of its row in the locks
 * table; a generation of the table that ended without its write-back moves every row up by it. */
#define FSA__LOCK_SYNC_EVERY INT64_C(1024)

/* For tests: leaves key's slot in the shared table as a writer that died inside it would (seq
 * odd, token set). FSA_OK; FSA_ENOTFOUND (key not in the table); FSA_EINVAL (NULL). */
fsa_status_t fsa__lock_table_tear(fsa_lockmgr_t *m, const char *key, int64_t token) FSA_MUST_CHECK;

#ifdef FSA_FAULT_HOOKS
/* For tests: fn(arg) runs once, in the next manager's open, between its exclusive try for the
 * table's attach byte that found the byte taken and its shared try (the gap where the last manager
 * on the table may close). */
void fsa__lock_attach_gap_hook(void (*fn)(void *), void *arg);
#endif

#endif
