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

/* JSON values in one request body (push, admin entity, devices file), counted before parsing:
 * each costs a parser node of ~64 bytes, so 1 KiB of gzip inflating to 1 MiB of "[0,0,...]"
 * would otherwise cost ~40 MB. 100,000 is ~20 times a full batch of 500 typical ops and bounds a
 * body's nodes to ~6.4 MB. Ceiling 1,000,000. (Answers the agent decodes have their own bound,
 * FSA_LIMIT_ANSWER_VALUES.) */
#define FSA_LIMIT_JSON_VALUES 100000
#define FSA_LIMIT_JSON_VALUES_MAX 1000000

/* JSON values in one answer the agent parses (a pull page, results not read directly, an error),
 * counted before parsing as in a request: an answer is bounded in bytes (FSA_LIMIT_RESPONSE_BYTES)
 * but 8 MiB of "[0,0,...]" would be 4 million parser nodes, ~320 MB. What an answer can hold: a
 * pull page is at most 4 MiB of JSON, or one change alone, whose fields are at most
 * FSA_LIMIT_FIELDS_BYTES (PROTOCOL.md section 4, section 7 amendment 6); results are one per op
 * of a batch of at most FSA_LIMIT_BATCH_OPS, ~7 values each (plus a conflict's entity). A value
 * costs at least 2 bytes ("0,"), so one change holds at most FSA_LIMIT_FIELDS_BYTES / 2 values:
 * the bound is that and room for the envelope, so that one change passes whatever its fields
 * hold, and a full 4 MiB page passes when its values average 8 bytes or more, as records do (a
 * key, quotes, punctuation: {"at":1764090000000,"by":"P1"} is 10 bytes a value). At most ~40 MB
 * of nodes. Fixed: an answer over it is malformed. */
#define FSA_LIMIT_ANSWER_VALUES (FSA_LIMIT_FIELDS_BYTES / 2 + 4096)

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

/*
 * The agent's defaults for a 0 in its options (engine.h, transport.h, the library's config), and
 * its own buffers. Each default is bounded by the protocol limits above where one applies.
 */

/* Ops per push batch: 100 keeps a batch well under the body limit with typical ops, and a lost
 * answer costs one small resend. Raised to FSA_JOURNAL_GROUP_MAX, capped at FSA_LIMIT_BATCH_OPS. */
#define FSA_LIMIT_ENGINE_BATCH_OPS 100
/* Encoded bytes per push batch: a quarter of the body limit, so a batch rarely needs halving. */
#define FSA_LIMIT_ENGINE_BATCH_BYTES (256 * 1024)
/* The floor when a batch that encodes too large is halved: below it, one op alone is tried. */
#define FSA_LIMIT_ENGINE_BATCH_BYTES_MIN 1024
/* Changes asked for per pull page: small enough that a page on a slow link answers in seconds. */
#define FSA_LIMIT_ENGINE_PULL_LIMIT 200

/* Connecting to the server: beyond 10 s a field network is down for our purpose. */
#define FSA_LIMIT_CONNECT_TIMEOUT_MS 10000
/* One whole request, upload and answer: 60 s carries a 1 MiB batch at about 17 KiB/s. */
#define FSA_LIMIT_REQUEST_TIMEOUT_MS 60000
/* Bodies below this are sent as they are: gzip does not pay for its header and CPU below ~1 KiB. */
#define FSA_LIMIT_GZIP_MIN_BYTES 1024
/* An answer body, inflated: a pull page of FSA_LIMIT_ENGINE_PULL_LIMIT entities of 40 KiB each. */
#define FSA_LIMIT_RESPONSE_BYTES ((size_t)8 * 1024 * 1024)
/* The first allocation for an answer body; it doubles up to the response limit. Most answers fit.
 */
#define FSA_LIMIT_RESPONSE_INITIAL_BYTES 16384

/* The page size of a new journal (an existing file keeps its own; SQLite's default is 4096). A
 * record changes some 7 b-trees, each a page written whole to the WAL at every commit (and synced,
 * with FULL): with 2 KiB pages a commit writes half the bytes of 4 KiB ones, for rows of a few
 * hundred bytes (docs/performance.md, "Recording"). The disk budget becomes max_page_count =
 * budget / the file's page size, and never fewer than FSA_LIMIT_JOURNAL_MIN_PAGES pages, which
 * the schema alone needs. */
#define FSA_LIMIT_PAGE_BYTES 2048
#define FSA_LIMIT_JOURNAL_MIN_PAGES 16

/* A file path the journal and the lock manager build on (the journal's path plus a suffix such as
 * ".users" or "-wal"): Linux's PATH_MAX. */
#define FSA_LIMIT_PATH_BYTES 4096

/* The library's sync interval when none is configured: a minute, next to the wake-up on record. */
#define FSA_LIMIT_SYNC_INTERVAL_MS (60 * 1000)
/* The watchdog calls a queue stuck after this long without progress although the server
 * answers: ten minutes, several intervals and backoffs. */
#define FSA_LIMIT_STALL_AFTER_MS (600 * 1000)

/*
 * The reference server under hostile clients (docs/server.md, "Deployment and threat model").
 * These are the server's own defences; a proxy in front adds its own (TLS, per-address rates).
 */

/* Connections open at once, all clients together. Ceiling of what poll() workers serve well. */
#define FSA_LIMIT_SERVER_CONNECTIONS 1000
#define FSA_LIMIT_SERVER_CONNECTIONS_MAX 10000

/* Connections open at once from one address: one client (or a NAT of a few devices) cannot take
 * all of them with half-sent requests. 64; ceiling FSA_LIMIT_SERVER_CONNECTIONS. Behind a proxy
 * every client has the proxy's address: raise it there, the proxy limits per address. */
#define FSA_LIMIT_SERVER_CONNECTIONS_PER_ADDR 64

/* A request's headers and body must have come within this many seconds of its first line, or its
 * connection is closed (checked as its headers complete and as body bytes come): a client
 * trickling a byte before each idle timeout cannot hold a connection for ever. 120 s lets a
 * 1 MiB body through at under 10 KB/s. Ceiling 3600. Headers have a deadline of their own. */
#define FSA_LIMIT_SERVER_REQUEST_S 120
#define FSA_LIMIT_SERVER_REQUEST_S_MAX 3600

/* A request's headers (and, on a new connection, the TLS handshake before them) must be complete
 * within this many seconds of the connection's start, or of the previous answer plus the idle
 * timeout, or the connection is shut down: libmicrohttpd has only an idle timeout, which a client
 * trickling a header byte now and then never meets. 10 s: a device's headers are under 1 KB and
 * come in one packet. Ceiling 300. */
#define FSA_LIMIT_SERVER_HEADER_S 10
#define FSA_LIMIT_SERVER_HEADER_S_MAX 300

/* A connection with nothing received or sent for this long is closed, in s. Ceiling 300. */
#define FSA_LIMIT_SERVER_IDLE_S 30

/* Body bytes buffered by all requests at once: past it a new body is refused with 503 and
 * Retry-After, so many uploads cannot take the memory (each is at most RAW_BODY_MAX, ~1.06 MiB).
 * 64 MiB: ~60 full bodies in flight. Ceiling 1 GiB. */
#define FSA_LIMIT_SERVER_BODY_BUDGET (64LL * 1024 * 1024)
#define FSA_LIMIT_SERVER_BODY_BUDGET_MAX (1024LL * 1024 * 1024)

/* Requests a device may make (authenticated), a token bucket: 50 a second sustained, bursts of
 * 200. An agent makes a few per sync cycle; a flood gets 429 for that device only. Kept per
 * server process (N processes on one database allow N times as much). Ceiling 10,000 a second. */
#define FSA_LIMIT_DEVICE_REQ_PER_S 50
#define FSA_LIMIT_DEVICE_REQ_BURST 200
#define FSA_LIMIT_DEVICE_REQ_PER_S_MAX 10000

/* Warnings a client can provoke (broken connections, admin failures), a second; the rest are
 * counted and the count logged with the next one that passes. */
#define FSA_LIMIT_SERVER_WARN_PER_S 10

/* The admin token: at least 32 characters (32 hex digits are 128 bits), not a pattern. */
#define FSA_LIMIT_ADMIN_TOKEN_MIN_CHARS 32

/* Wrong admin tokens, a token bucket for the whole server: 5 a second, bursts of 10; past it
 * every admin request gets 429 without its token being compared, so guessing runs at 5 tries a
 * second however many connections try, and no worker is held to slow it. Ceiling 100 a second. */
#define FSA_LIMIT_ADMIN_FAILS_PER_S 5
#define FSA_LIMIT_ADMIN_FAILS_BURST 10
#define FSA_LIMIT_ADMIN_FAILS_PER_S_MAX 100

#endif
