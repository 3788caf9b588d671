/* fieldsync: the keys of the journal's sync state rows, named once (storage/ only). */
#ifndef FSA_STORAGE_STATE_KEYS_H
#define FSA_STORAGE_STATE_KEYS_H

/*
 * The journal keeps the device's configuration and the engine's sync state as key/value rows.
 * The keys are a persisted format: a journal written by one version is read by the next, so a
 * key is never renamed (the tests spell them out on purpose, to catch that). Only storage/ reads
 * or writes them: journal_state.c behind the typed calls of journal.h (fsa_journal_config_*,
 * fsa_journal_backoff_*, fsa_journal_cursor_*, ...), and the journal's own bookkeeping.
 */

/* The configuration: the first six are what `fieldsync init` has always written (journals made
 * before libfieldsync read the same); fsa_journal_config_store and _load write and read them. */
#define FSA_STATE_DEVICE_ID "device_id"
#define FSA_STATE_SERVER "server"
#define FSA_STATE_SECRET_FILE "secret_file"
#define FSA_STATE_CA_FILE "ca_file"
#define FSA_STATE_PINS "pins"
#define FSA_STATE_ALLOW_HTTP "allow_http"
#define FSA_STATE_CLIENT_CERT "client_cert"
#define FSA_STATE_CLIENT_KEY "client_key"
#define FSA_STATE_PROXY "proxy"
#define FSA_STATE_RETRY_POLICY "retry_policy"
#define FSA_STATE_RESOLVER_POLICY "resolver_policy"
#define FSA_STATE_DURABILITY "durability"
#define FSA_STATE_SYNC_INTERVAL_MS "sync_interval_ms"
#define FSA_STATE_STALL_AFTER_MS "stall_after_ms"
#define FSA_STATE_BUDGET_BYTES "budget_bytes"

/* The sync state: written by the engine (sync/engine.c), read by the journal (the clock offset
 * that corrects recorded times), the library's reads and its sync thread (the backoff). */
#define FSA_STATE_CLOCK_OFFSET_MS "clock_offset_ms" /* server clock minus device clock */
#define FSA_STATE_NEXT_ATTEMPT_MS "next_attempt_ms" /* backoff: no sync before this wall time */
#define FSA_STATE_SYNC_FAILURES "sync_failures"     /* failed cycles in a row (the backoff's n) */
#define FSA_STATE_LAST_SYNC_MS "last_sync_ms"       /* wall time of the last complete sync */
#define FSA_STATE_CURSOR "cursor"                   /* the server's pull cursor */

/* The last sync cycle's outcome, noted by libfieldsync's sync thread for status. */
#define FSA_STATE_LAST_ERROR "last_error"         /* its status code (0: ok) */
#define FSA_STATE_LAST_ERROR_MSG "last_error_msg" /* its message ("" when ok) */

/* The journal's own bookkeeping (storage/), written in SQL text: the literals concatenate. */
#define FSA_STATE_CLEAN_CLOSE "clean_close"       /* 0 while users have the journal open */
#define FSA_STATE_FSYNC_FAILURES "fsync_failures" /* commits whose fsync failed (journal.c) */
#define FSA_STATE_WAL_STARTS "wal_starts"         /* the WAL generations the drain started (db.c) */
#define FSA_STATE_LOCK_TABLE "lock_table" /* the live shared lock table's generation (lock.c) */
#define FSA_STATE_OUTBOX_SENT_UPTO                                                                 \
    "outbox_sent_upto" /* highest seq sent: open ops at or below                                   \
                          it are in flight (journal.c) */
/* "gone:TYPE:ID" = the version of a `gone` kept for ops of ours on the entity: dropped once they
 * are answered and their conflicts closed (fsa_journal_gone_sweep), forgotten when a pull brings
 * the entity back. gone; is the first key after every such one. */
#define FSA_STATE_GONE_PREFIX "gone:"
#define FSA_STATE_GONE_END "gone;"
#define FSA_STATE_OP_ID_SALT "op_id_salt" /* 40 random bits in every op id (journal_record.c) */
#define FSA_STATE_OUTBOX_LAST_DELETED                                                              \
    "outbox_last_deleted" /* at least the highest seq deleted from the top of the outbox           \
                             (journal_internal.h): no new op takes a seq at or below it */

#endif
