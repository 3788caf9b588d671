/* fieldsync: opening a journal database (pragmas, mode 0600, migrations). Internal to storage/. */
#ifndef FSA_STORAGE_DB_H
#define FSA_STORAGE_DB_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

#include "port/port.h"

/* The schema version this program writes. Older journals are migrated on open; newer ones are
 * refused with FSA_ESCHEMA. */
#define FSA_SCHEMA_VERSION 6

typedef struct fsa_db_opts {
    bool sync_normal;    /* synchronous=NORMAL instead of FULL (may lose the last commits on
                            power loss; never corrupts) */
    int busy_timeout_ms; /* 0: FSA_LIMIT_BUSY_TIMEOUT_MS */
    bool create;         /* create the file when missing (mode 0600) */
} fsa_db_opts_t;

/*
 * Opens (and when asked, creates) the journal at path: WAL, synchronous FULL (or NORMAL), busy
 * timeout, foreign keys, the schema migrated to FSA_SCHEMA_VERSION in one transaction (an older
 * journal only by a user alone on it: FSA_EBUSY while others have it open), and joins
 * the journal's users (a shared lock on "<journal>.users", named after the file SQLite resolves
 * path to, a symlink's target); a user that finds itself alone on a journal whose last users did
 * not close it cleanly runs a quick integrity check first.
 * On FSA_OK *out is an open connection and *users its membership (close both with
 * fsa__db_close). Otherwise both are NULL and err (errlen bytes) holds one line naming the
 * problem. Returns FSA_OK, FSA_EINVAL, FSA_ENOTFOUND (missing and not create), FSA_EIO,
 * FSA_EBUSY, FSA_ESCHEMA (newer journal), FSA_ECORRUPT, FSA_ENOMEM.
 * The connection is opened SQLITE_OPEN_NOMUTEX: SQLite takes no mutex of its own for it, so only
 * one thread at a time may use it and its statements; its owner serialises them under a mutex of
 * its own (the journal's j->mu, the lock manager's m->mu). The journal's statement cache and its
 * transactions' ends assert that the calling thread holds j->mu (fsa__jn_held).
 */
fsa_status_t fsa__db_open(fsa_port_t *port, const char *path, const fsa_db_opts_t *opts,
                          sqlite3 **out, fsa_flock_t **users, char *err,
                          size_t errlen) FSA_MUST_CHECK;

/* Leaves the journal's users (marking a clean close when this was the last one) and closes the
 * connection, once a checkpoint of its journal that the process's checkpointer runs has ended
 * (db.c). NULLs are accepted. */
void fsa__db_close(fsa_port_t *port, sqlite3 *db, fsa_flock_t *users);

/* Maps a SQLite result code to a status (SQLITE_FULL -> FSA_EFULL, BUSY/LOCKED -> FSA_EBUSY,
 * CORRUPT/NOTADB -> FSA_ECORRUPT, NOMEM -> FSA_ENOMEM, else FSA_EIO). */
fsa_status_t fsa__db_status(int rc) FSA_MUST_CHECK;

/* How many times a journal connection of this process has waited for another's write lock so
 * far (a count that only grows): a long write transaction that sees it move ends soon, so that the
 * waiter goes. */
uint64_t fsa__db_busy_waits(void);

/* How many writes of db's WAL the device has refused for want of space (ENOSPC, a quota) since
 * its WAL file was opened (a count that only grows; 0 before the WAL is opened). A statement's
 * SQLITE_FULL with no such refusal since BEGIN was the journal's budget (max_page_count), not
 * the device. The connection's own thread. */
uint64_t fsa__db_wal_full_writes(sqlite3 *db);

/* The first column of sql's first row on db as an integer into *out (0 when there is no row). */
fsa_status_t fsa__db_query_int(sqlite3 *db, const char *sql, int64_t *out);

/* The WAL's size, in pages, at which a commit at synchronous=NORMAL asks for a checkpoint (db.c
 * explains; a commit at FULL runs one at 1,000 pages, as SQLite's own): 8 MiB with the 2 KiB
 * pages of a new journal. */
#define FSA__DB_CHECKPOINT_PAGES_NORMAL 4000

/* Checkpoints (db.c explains): the calling drain runs them for for_ns from now, and every
 * journal connection of this process leaves them to it meanwhile (unless the WAL grows far past
 * the usual size). */
void fsa__db_checkpoint_claim(int64_t for_ns);

/* How many checkpoints this process's checkpointer thread has run so far (a count that only
 * grows). A commit that finds the WAL at the checkpoint size leaves its checkpoint to that thread
 * (db.c says why) rather than running it itself. */
uint64_t fsa__db_checkpoints_run(void);

#ifdef FSA_FAULT_HOOKS
/* For tests: while held, the checkpointer's thread waits before it starts a checkpoint. */
void fsa__db_checkpointer_hold(bool hold);
#endif

/* The drain's flush after a batch (db.c says why), on *own, a connection of the caller's that
 * this opens on first use (close it with sqlite3_close): starts the writing of the journal's WAL
 * to the disk once it holds 64 pages or more (without waiting for it; a sync where the system
 * cannot), so that the next record's commit does not have the batch's pages to write first,
 * and runs a PASSIVE checkpoint when the WAL has reached the size at which SQLite would; after a
 * checkpoint that let the WAL start again, it starts the WAL's next generation itself (one small
 * write: the sync of the new WAL header is its, not the next record's). Takes no lock that a
 * writer needs but for that write: records go on meanwhile. Failures are benign (the next call
 * tries again). */
void fsa__db_flush(const char *path, sqlite3 **own);

/* A connection of the journal at path for reads that should not wait for, nor hold up, the
 * journal's writes (a count over a long queue): the same VFS, query_only, a small page cache,
 * SQLite's plain busy timeout (a reader of a WAL journal waits only in rare moments, such as a
 * recovery). No mutex of its own (SQLITE_OPEN_NOMUTEX): the caller serializes its use. Close it
 * with sqlite3_close. */
fsa_status_t fsa__db_open_reader(const char *path, sqlite3 **out) FSA_MUST_CHECK;

/* Runs an integrity pragma on db ("PRAGMA quick_check" or "PRAGMA integrity_check") and says what
 * its first answer means: FSA_OK (nothing found), FSA_ECORRUPT (a finding), or FSA_ENOMEM /
 * FSA_EIO when the check could not run or read a page (which says nothing of what the file
 * holds). finding (len bytes, may be NULL) gets the finding or the failure. */
fsa_status_t fsa__db_check(sqlite3 *db, const char *pragma, char *finding,
                           size_t len) FSA_MUST_CHECK;

/* Runs sql (no results) and maps errors; err may be NULL. */
fsa_status_t fsa__db_exec(sqlite3 *db, const char *sql, char *err, size_t errlen) FSA_MUST_CHECK;

/*
 * Schema of the lock manager's tables (part of the journal schema, so a journal write can check
 * its fencing token in its own transaction):
 *
 *   lock_holders(id INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER NOT NULL, label TEXT NOT NULL,
 *                started_ms INTEGER NOT NULL)
 *     one row per open lock manager; its liveness is an OFD lock on byte `id` of "<journal>.locks"
 *   locks(key TEXT PRIMARY KEY, token INTEGER NOT NULL, holder INTEGER, holder_label TEXT,
 *         acquired_ns INTEGER, expires_ns INTEGER)
 *     token: the last fencing token issued for key (strictly increasing, never reset), or, while
 *     the lock managers' shared token table is live, its durable copy, at most
 *     FSA__LOCK_SYNC_EVERY behind (storage/lock.c);
 *     holder NULL when free; *_ns are CLOCK_MONOTONIC (port mono) nanoseconds.
 */

/* Binds s to parameter i of st as text, and NULL as SQL NULL (a caller that wants "" for
 * NULL passes it). SQLITE_STATIC: SQLite keeps the pointer instead of a copy, so binding
 * allocates nothing and cannot fail for want of memory (a failed copy would leave the parameter
 * NULL and the statement would run on with it). s must outlive the statement's use, until its
 * reset or finalize. The one binder of the journal and of the server's SQLite store (one copy,
 * not an inline one in each file that uses it: the device binary had seven). */
void fsa__db_bind_text(sqlite3_stmt *st, int i, const char *s);

#endif
