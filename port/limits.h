/* fieldsync: every limit in one place, each with its default, its reason and its ceiling. */
#ifndef FSA_PORT_LIMITS_H
#define FSA_PORT_LIMITS_H

/*
 * Protocol limits (PROTOCOL.md section 3). A server states and enforces them; the agent keeps to
 * them when it builds batches. The ceilings bound what a configuration may raise them to.
 */

/* A push body, inflated. 1 MiB keeps one batch in memory on a small device. Ceiling 16 MiB. */
#define FSA_LIMIT_BODY_BYTES (1024 * 1024)
#define FSA_LIMIT_BODY_BYTES_MAX (16 * 1024 * 1024)

/* Ops in one batch. 500 bounds one server transaction. Ceiling 5000. */
#define FSA_LIMIT_BATCH_OPS 500
#define FSA_LIMIT_BATCH_OPS_MAX 5000

/* JSON nesting depth. 32 is deep enough for any real field and stops stack-exhausting input. */
#define FSA_LIMIT_JSON_DEPTH 32
#define FSA_LIMIT_JSON_DEPTH_MAX 64

/* One JSON string (a field value or a key). 64 KiB. Ceiling 1 MiB. */
#define FSA_LIMIT_STRING_BYTES (64 * 1024)
#define FSA_LIMIT_STRING_BYTES_MAX (1024 * 1024)

/* Entity and device ids: 1..128 bytes of [A-Za-z0-9._:-]. Fixed by the protocol. */
#define FSA_LIMIT_ID_BYTES 128

/* The JSON of one entity's fields, or one op's payload, as stored. Same as a body: 1 MiB. */
#define FSA_LIMIT_FIELDS_BYTES FSA_LIMIT_BODY_BYTES

/* Authentication (PROTOCOL.md section 5). */
#define FSA_LIMIT_SKEW_MS (300 * 1000) /* accepted |server_now - X-Timestamp| */
#define FSA_LIMIT_NONCE_HEX 32         /* X-Nonce: 16 random bytes in hex */
#define FSA_LIMIT_SECRET_BYTES 32      /* a device secret: 32 random bytes (64 hex chars) */

/* A status name (ASSIGNED, PARTIALLYCOMPLETED, ...). */
#define FSA_LIMIT_STATUS_BYTES 32

/* One log line, formatted. Longer lines are cut, never overflowed. */
#define FSA_LIMIT_LOG_LINE 1024

/* Lock names: "NAME:resource". */
#define FSA_LIMIT_LOCK_KEY_BYTES (64 + FSA_LIMIT_ID_BYTES)

/* Journal disk budget, default 512 MiB; 0 in a config means this default. Ceiling 64 GiB. */
#define FSA_LIMIT_JOURNAL_BUDGET_BYTES (512LL * 1024 * 1024)
#define FSA_LIMIT_JOURNAL_BUDGET_BYTES_MAX (64LL * 1024 * 1024 * 1024)

/* SQLite busy timeout: how long a writer waits for another writer, in ms. */
#define FSA_LIMIT_BUSY_TIMEOUT_MS 10000

/* Done ops keep their op ids this long after compaction, for audit: 30 days. */
#define FSA_LIMIT_AUDIT_MS (30LL * 24 * 3600 * 1000)

/* The sync cycle's own backoff when the server is unreachable: it never gives up, but waits
 * from 1 s doubling up to 5 min between cycles, so a device offline for days neither hammers the
 * network nor waits hours after it comes back. */
#define FSA_LIMIT_CYCLE_BACKOFF_INITIAL_MS 1000
#define FSA_LIMIT_CYCLE_BACKOFF_MAX_MS (5 * 60 * 1000)

/* A Retry-After the agent honours, at most: a server asking for more than an hour is capped. */
#define FSA_LIMIT_RETRY_AFTER_MAX_MS (3600 * 1000)

#endif
