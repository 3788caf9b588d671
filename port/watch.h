/* fieldsync: waiting for a file to change (the daemon wakes when the journal is written). */
#ifndef FSA_PORT_WATCH_H
#define FSA_PORT_WATCH_H

#include <stdint.h>

#include "port/status.h"

typedef struct fsa_watch fsa_watch_t;

/*
 * Watches the file at path (it need not exist yet): any write to it, or to a file whose name
 * starts with its name (a SQLite journal's -wal), counts as a change. Linux inotify on the
 * directory, so a file that is created, replaced or removed is seen too.
 * FSA_OK (*out set), FSA_EINVAL, FSA_ENOTFOUND (the directory does not exist), FSA_EIO,
 * FSA_ENOMEM.
 */
fsa_status_t fsa_watch_open(const char *path, fsa_watch_t **out) FSA_MUST_CHECK;

/* Waits up to timeout_ms (-1: forever) for a change, without spinning. Returns FSA_OK when one
 * or more changes happened (all pending events are consumed), FSA_ETIMEOUT when none did,
 * FSA_EBUSY when a signal interrupted the wait or fsa_watch_poke was called (the caller checks its
 * flags), FSA_EIO. */
fsa_status_t fsa_watch_wait(fsa_watch_t *w, int64_t timeout_ms) FSA_MUST_CHECK;

/* Wakes a thread blocked in fsa_watch_wait on w (it returns FSA_EBUSY). Safe from any thread and
 * from a signal handler. */
void fsa_watch_poke(fsa_watch_t *w);

/* Stops watching and frees. NULL is accepted. */
void fsa_watch_close(fsa_watch_t *w);

#endif
