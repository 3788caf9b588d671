/* fieldsync: opening a journal database: file mode, pragmas, migrations, integrity check. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port/alloc.h"
#include "port/files.h"
#include "port/limits.h"
#include "port/once.h"
#include "port/port.h"
#include "port/pulse.h"
#include "storage/db.h"
#include "storage/libs.h"
#include "storage/state_keys.h"

#define DB_STR_(x) #x
#define DB_STR(x) DB_STR_(x) /* a macro's value as a string literal */

/* The tables of schema 1 that later schemas keep as they were (schema_current), but for the
 * entities' base_fields, which schema 6 names base (its 5 -> 6 step). */
#define ENTITIES_DDL                                                                               \
    "CREATE TABLE entities("                                                                       \
    "type TEXT NOT NULL,"                                                                          \
    "id TEXT NOT NULL,"                                                                            \
    "base TEXT," /* last known server fields; NULL: not on the server; '': local_fields */         \
    "base_version INTEGER NOT NULL DEFAULT 0," /* server version of base; 0: none */               \
    "local_fields TEXT,"                       /* base with pending ops replayed; NULL: none */    \
    "updated_ms INTEGER NOT NULL DEFAULT 0,"                                                       \
    "PRIMARY KEY(type,id)) WITHOUT ROWID;"
#define DONE_OPS_TABLE_DDL                                                                         \
    /* Done ops leave the outbox at compaction; their ids stay here for the audit period. */       \
    "CREATE TABLE done_ops("                                                                       \
    "op_id TEXT PRIMARY KEY,"                                                                      \
    "seq INTEGER NOT NULL,"                                                                        \
    "done_ms INTEGER NOT NULL) WITHOUT ROWID;"
#define STATE_AND_LOCKS_DDL                                                                        \
    "CREATE TABLE sync_state("                                                                     \
    "k TEXT PRIMARY KEY,"                                                                          \
    "v) WITHOUT ROWID;"                                                                            \
    "CREATE TABLE lock_holders("                                                                   \
    "id INTEGER PRIMARY KEY AUTOINCREMENT,"                                                        \
    "pid INTEGER NOT NULL,"                                                                        \
    "label TEXT NOT NULL,"                                                                         \
    "started_ms INTEGER NOT NULL);"                                                                \
    "CREATE TABLE locks("                                                                          \
    "key TEXT PRIMARY KEY,"                                                                        \
    "token INTEGER NOT NULL,"                                                                      \
    "holder INTEGER,"                                                                              \
    "holder_label TEXT,"                                                                           \
    "acquired_ns INTEGER,"                                                                         \
    "expires_ns INTEGER) WITHOUT ROWID;"

/* Schema 3's outbox, conflicts and change log (the 2 -> 3 step builds them under these names and
 * renames them; a new journal creates them as they are, schema_current). The outbox's columns
 * are its head, " UNIQUE," and its tail (DDL_OUTBOX_COLUMNS); schema 6's have no UNIQUE
 * (DDL_OUTBOX_V6_COLUMNS). */
#define OUTBOX_COLUMNS_HEAD "(seq INTEGER PRIMARY KEY,op_id TEXT NOT NULL"
#define OUTBOX_COLUMNS_TAIL                                                                        \
    "at_ms INTEGER NOT NULL,"                                                                      \
    "kind INTEGER NOT NULL,"                                                                       \
    "type INTEGER NOT NULL,"                                                                       \
    "id TEXT NOT NULL,"                                                                            \
    "grp TEXT NOT NULL DEFAULT '',"                                                                \
    "field TEXT NOT NULL DEFAULT '',"                                                              \
    "base_version INTEGER NOT NULL DEFAULT 0,"                                                     \
    "by_n INTEGER NOT NULL DEFAULT 0,"                                                             \
    "from_s TEXT NOT NULL DEFAULT '',"                                                             \
    "to_s TEXT NOT NULL DEFAULT '',"                                                               \
    "akey TEXT NOT NULL DEFAULT '',"                                                               \
    "max_len INTEGER NOT NULL DEFAULT 0,"                                                          \
    "payload TEXT,"                                                                                \
    "prior TEXT,"                                                                                  \
    "state INTEGER NOT NULL DEFAULT 0,"                                                            \
    "attempts INTEGER NOT NULL DEFAULT 0,"                                                         \
    "result_version INTEGER,"                                                                      \
    "done_ms INTEGER"
/* Schema 6's outbox has no index of op ids, which every record wrote an entry of. An op id made
 * since carries its seq (storage/journal_record.c) and is of UUID version 8; only the ops whose
 * ids are not (an older journal's, of version 7 or 4: the 15th character) are in
 * outbox_legacy_ids. */
#define OUTBOX_LEGACY_IDS_INDEX                                                                    \
    "CREATE INDEX outbox_legacy_ids ON outbox(op_id)WHERE substr(op_id,15,1)<>'8';"
/* The journal's op id salt, made once with schema 6 (one there is kept): 40 random bits from
 * SQLite's random(), which the system's entropy seeds (journal_record.c says what it is for). Not
 * the port's random source, whose seed a simulated device follows: only the ids' last 40 bits
 * differ from run to run, which order nothing (the clock and 34 random bits come first). */
#define OP_ID_SALT_ROW                                                                             \
    "INSERT OR IGNORE INTO sync_state VALUES('" FSA_STATE_OP_ID_SALT "',random()&1099511627775);"
#define CONFLICTS_V3_AFTER_SEQ                                                                     \
    " op_id TEXT NOT NULL,"                                                                        \
    "outcome TEXT NOT NULL,"                                                                       \
    "code TEXT NOT NULL DEFAULT '',"                                                               \
    "reason TEXT NOT NULL DEFAULT '',"                                                             \
    "server_version INTEGER,"                                                                      \
    "server_fields TEXT,"                                                                          \
    "created_ms INTEGER NOT NULL,"                                                                 \
    "decision TEXT NOT NULL DEFAULT '',"                                                           \
    "resolution TEXT,"                                                                             \
    "resolved_ms INTEGER);"
#define CHANGES_V3_COLUMNS                                                                         \
    "(seq INTEGER PRIMARY KEY,"                                                                    \
    "type INTEGER NOT NULL,"                                                                       \
    "id TEXT NOT NULL,"                                                                            \
    "version INTEGER NOT NULL,"                                                                    \
    "reason INTEGER NOT NULL,"                                                                     \
    "op_id TEXT NOT NULL DEFAULT '',"                                                              \
    "at_ms INTEGER NOT NULL);"
/* The outbox's indexes as schema 2 made them, in its order: the two that every schema since
 * keeps, by entity and by group, and between them the two that schema 5 drops (outbox_closed
 * takes their place). Schema 3's trigger, which schema 4 drops. */
#define OUTBOX_BY_ENTITY_INDEX "CREATE INDEX outbox_by_entity ON outbox(type,id,state,seq);"
#define OUTBOX_V2_QUEUE_INDEXES                                                                    \
    "CREATE INDEX outbox_open ON outbox(seq,state) WHERE state IN(0,1);"                           \
    "CREATE INDEX outbox_done ON outbox(seq) WHERE state=2;"
#define OUTBOX_BY_GROUP_INDEX "CREATE INDEX outbox_by_group ON outbox(grp,state) WHERE grp!='';"
/* Every row of the conflicts table, for a copy of it (a step that rebuilds it). */
#define CONFLICTS_ROWS                                                                             \
    "SELECT seq,op_id,outcome,code,reason,server_version,server_fields,created_ms,decision,"       \
    "resolution,resolved_ms FROM conflicts;"
/* Schema 5's index of the outbox rows whose state is not 0: the parked ops (conflicted or
 * rejected, states 3 and 4), and the done ops and in-flight marks (states 2 and 1) that an older
 * journal left. A query finds its rows through it only when its WHERE says state!=0. */
#define OUTBOX_CLOSED_INDEX "CREATE INDEX outbox_closed ON outbox(seq) WHERE state!=0;"
/* What the steps and the current schema share is kept once, in shared_ddl: in their text, a byte
 * 1 to DDL_PARTS stands for the first to last of its parts (ddl_expand). */
#define DDL_OUTBOX_COLUMNS "\001 UNIQUE,\006);"
#define DDL_CONFLICTS_AFTER_SEQ "\002"
#define DDL_CHANGES_COLUMNS "\003"
#define DDL_OUTBOX_BY_ENTITY_INDEX "\004"
#define DDL_OUTBOX_BY_GROUP_INDEX "\005"
#define DDL_OUTBOX_V6_COLUMNS "\001,\006);"
#define DDL_OUTBOX_CLOSED_INDEX "\007"
#define DDL_OUTBOX_LEGACY_IDS_INDEX "\010"
#define DDL_OP_ID_SALT_ROW "\011"
#define DDL_PARTS 9
static const char shared_ddl[] = OUTBOX_COLUMNS_HEAD
    "\0" CONFLICTS_V3_AFTER_SEQ "\0" CHANGES_V3_COLUMNS "\0" OUTBOX_BY_ENTITY_INDEX
    "\0" OUTBOX_BY_GROUP_INDEX "\0" OUTBOX_COLUMNS_TAIL "\0" OUTBOX_CLOSED_INDEX
    "\0" OUTBOX_LEGACY_IDS_INDEX "\0" OP_ID_SALT_ROW;
#define OUTBOX_V3_INDEXES                                                                          \
    DDL_OUTBOX_BY_ENTITY_INDEX OUTBOX_V2_QUEUE_INDEXES DDL_OUTBOX_BY_GROUP_INDEX                   \
        "CREATE TRIGGER outbox_keeps_last_seq AFTER DELETE ON outbox "                             \
        "WHEN NOT EXISTS(SELECT 1 FROM outbox WHERE seq>old.seq) BEGIN "                           \
        "INSERT INTO sync_state(k,v) VALUES('" FSA_STATE_OUTBOX_LAST_DELETED "', old.seq) "        \
        "ON CONFLICT(k) DO UPDATE SET v=max(v,excluded.v); END;"

/*
 * Migrations: the steps from schema version 1 up, each ended by a NUL; migration(v) takes a
 * journal from schema version v to v + 1. A journal's version is PRAGMA user_version (0 for a
 * new file). Each step runs in the same transaction as the version bump, so a crash
 * mid-migration leaves the old version intact. Never edit a step that has shipped: append a new
 * one. One array of chars, not a table of pointers to them: each pointer in a table costs the
 * binary a relocation.
 */
static const char migration_steps[] =
    /* 0 -> 1: never run. A new file (version 0) gets schema_current in one step, and no journal
     * was ever made without a version. Schema 1 was ENTITIES_DDL, an outbox with AUTOINCREMENT
     * and the columns of DDL_OUTBOX_COLUMNS, its index outbox_by_entity, DONE_OPS_TABLE_DDL with
     * an index done_ops_by_time ON done_ops(done_ms) (schema 4 drops it), the conflicts table of
     * CONFLICTS_V3_AFTER_SEQ and STATE_AND_LOCKS_DDL (git history has its text;
     * tests/storage/test_journal_changes.c turns a new journal into one of schema 1's shape to
     * test the steps after it). */
    /* 1 -> 2: the change log. Every transaction that changes an entity appends a row, so that
     * every process on the journal (an app, the daemon) can tell its listeners what changed,
     * each change once, by reading past the last row it saw. AUTOINCREMENT: a seq is never
     * reused after pruning. type is the model's number, as in the outbox. */
    "CREATE TABLE changes("
    "seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "type INTEGER NOT NULL,"
    "id TEXT NOT NULL,"
    "version INTEGER NOT NULL,"
    "reason INTEGER NOT NULL,"
    "op_id TEXT NOT NULL DEFAULT '',"
    "at_ms INTEGER NOT NULL);"
    /* The ops still to be answered, in seq order. Done ops leave the outbox only when a cycle
     * ends (compaction), so while a long backlog drains they pile up at the head of the table:
     * without this index, reading the next batch and counting the queue scan them all, once
     * per batch, and a drain of n ops costs n^2. Appending to it is cheap (seq grows). */
    "CREATE INDEX outbox_open ON outbox(seq,state) WHERE state IN(0,1);"
    /* ... and the status figures count the done ops not yet compacted after every batch: */
    "CREATE INDEX outbox_done ON outbox(seq) WHERE state=2;"
    /* A batch takes a group whole: its size is counted before its first op is taken, once per
     * group per batch; without an index that count scanned the whole outbox. Only grouped ops
     * are in it. */
    "CREATE INDEX outbox_by_group ON outbox(grp,state) WHERE grp!='';"
    "\0"
    /* 2 -> 3: the outbox and the change log without AUTOINCREMENT. AUTOINCREMENT rewrote a row of
     * sqlite_sequence (its own b-tree, one more page in the WAL) for every insert into either:
     * an eighth of a record's cost. The promise stays: a seq is never reused.
     * - The outbox's seq is set by the record (journal_record.c): one above both the highest seq
     *   in the table and the highest ever deleted from its top, which the trigger keeps in
     *   sync_state (only compaction deletes, done ops, and the top row fires it).
     * - The change log's rowid is one above its highest row, and pruning keeps the newest
     *   FSA_CHANGES_KEEP_ROWS rows, so its highest row is never deleted.
     * SQLite cannot drop AUTOINCREMENT in place: both tables are rebuilt, and the conflicts table
     * with the outbox (its rows reference outbox seqs; dropped first, child before parent, so
     * foreign keys stay on and checked). The last seq AUTOINCREMENT gave the outbox is carried
     * over. One transaction, as every step. A new journal gets schema_current instead. */
    "CREATE TABLE outbox_v3" DDL_OUTBOX_COLUMNS
    "INSERT INTO outbox_v3 SELECT seq,op_id,at_ms,kind,type,id,grp,field,base_version,"
    "by_n, from_s, to_s, akey, max_len, payload, prior, state, attempts, result_version, "
    "done_ms FROM outbox;"
    "CREATE TABLE conflicts_v3(seq INTEGER PRIMARY KEY REFERENCES "
    "outbox_v3(seq)," DDL_CONFLICTS_AFTER_SEQ "INSERT INTO conflicts_v3 " CONFLICTS_ROWS
    "INSERT INTO sync_state(k,v) SELECT '" FSA_STATE_OUTBOX_LAST_DELETED "', seq "
    "FROM sqlite_sequence WHERE name='outbox' AND seq>0 "
    "ON CONFLICT(k) DO UPDATE SET v=max(v,excluded.v);"
    "CREATE TABLE changes_v3" DDL_CHANGES_COLUMNS
    "INSERT INTO changes_v3 SELECT seq,type,id,version,reason,op_id,at_ms FROM changes;"
    "DROP TABLE conflicts;"
    "DROP TABLE outbox;"
    "DROP TABLE changes;"
    "ALTER TABLE outbox_v3 RENAME TO outbox;"
    "ALTER TABLE conflicts_v3 RENAME TO conflicts;"
    "ALTER TABLE changes_v3 RENAME TO changes;" OUTBOX_V3_INDEXES "\0"
    /* 3 -> 4: two writes less for every op the drain applies (docs/performance.md, "Drain").
     * - The trigger ran a program and a seek for every row deleted from the outbox, to keep the
     *   highest seq deleted from its top. The two statements that delete outbox rows now note the
     *   outbox's highest seq in the same row of sync_state before they delete, once per
     *   statement (fsa__jn_outbox_note_top): what the trigger kept, by a value at least as high,
     *   which is all that the next seq needs (one above both).
     * - done_ops' index by time, one more entry per done op: the audit ids are pruned in op id
     *   order instead, which for UUIDv7 ids is the order they were made (journal_outbox.c). */
    "DROP TRIGGER outbox_keeps_last_seq; DROP INDEX done_ops_by_time;"
    "\0"
    /* 4 -> 5: less work for every op recorded and every op the drain applies
     * (docs/performance.md, "Session 21").
     * - outbox_open (every open op by seq) was for reading the queue past the done ops that
     *   piled up at its head until a cycle's compaction; since schema 4's journals an applied op
     *   leaves the outbox with its result, so the table itself, in seq order, is the queue but
     *   for the parked ops (and the done ops an older journal left). The rows whose state is not
     *   0 are in outbox_closed (it takes outbox_done's place). The queue's figures count the
     *   whole table (SQLite counts a b-tree's pages, not its rows) less the parked and done ops,
     *   instead of every open op one by one.
     * - The conflicts table without its foreign key to the outbox: SQLite checked it for every
     *   outbox row deleted (each applied op), loading the whole row to do so, ~6% of the drain's
     *   instructions, and no row the journal deletes can have a conflict: a conflict is made only
     *   for the op parked in the same transaction (journal_apply.c, park), a parked op never
     *   leaves state 3 or 4, and only open ops (0, 1) and an older journal's done ops (2) are
     *   ever deleted. fsa_journal_integrity checks that every conflict has its op. SQLite cannot
     *   drop a foreign key in place: the table is copied, as in the 2 -> 3 step. */
    "DROP INDEX outbox_open; DROP INDEX outbox_done;" DDL_OUTBOX_CLOSED_INDEX
    "CREATE TABLE conflicts_v5(seq INTEGER PRIMARY KEY," DDL_CONFLICTS_AFTER_SEQ
    "INSERT INTO conflicts_v5 " CONFLICTS_ROWS "DROP TABLE conflicts;"
    "ALTER TABLE conflicts_v5 RENAME TO conflicts;"
    "\0"
    /* 5 -> 6: no index of op ids (docs/performance.md, Recording, "Session 32"). Every record
     * wrote an entry of the op id's UNIQUE index (1.4 of the ~7 pages a record's commit wrote),
     * and every applied op deleted one. An op id made since carries its seq: its last 40 bits are
     * the seq plus the journal's salt, 40 random bits kept in sync_state (OP_ID_SALT_ROW;
     * storage/journal_record.c), so a lookup by op id is one by seq, the table's own key, and
     * checks the id. Those ids are of UUID version 8; the ops already there keep their ids (of
     * version 7, or 4 in the oldest journals), found through outbox_legacy_ids, which holds only
     * those. SQLite cannot drop a UNIQUE constraint in place: the outbox is copied, as in the
     * 2 -> 3 step (the conflicts have no foreign key to it since schema 5), and its indexes made
     * again. The step is run only by a program alone on the journal (migrate): one of an older
     * build still on it would take a base stored once (below) for the text "".
     * Also from schema 6, an entity whose base is its local view stores its base as '' (once, not
     * twice: journal_entity.c); rows stored before keep both until they are written again. The
     * column is renamed base_fields -> base, so that a program of an older build that reaches the
     * journal all the same (it checks the schema before it joins the users: a newer program may
     * migrate in between) fails on "no such column" rather than take '' for the text "". */
    "CREATE TABLE outbox_v6" DDL_OUTBOX_V6_COLUMNS "INSERT INTO outbox_v6 SELECT * FROM outbox;"
    "DROP TABLE outbox;"
    "ALTER TABLE outbox_v6 RENAME TO outbox;ALTER TABLE entities RENAME base_fields TO "
    "base;" DDL_OUTBOX_BY_ENTITY_INDEX DDL_OUTBOX_BY_GROUP_INDEX DDL_OUTBOX_CLOSED_INDEX
        DDL_OUTBOX_LEGACY_IDS_INDEX DDL_OP_ID_SALT_ROW;
_Static_assert(FSA_SCHEMA_VERSION == 6, "a new step: append it to migration_steps");
#define SCHEMA_VERSION_TEXT_(v) #v
#define SCHEMA_VERSION_TEXT_OF(v) SCHEMA_VERSION_TEXT_(v)
#define SCHEMA_VERSION_TEXT SCHEMA_VERSION_TEXT_OF(FSA_SCHEMA_VERSION) /* "6" */

/* The step from version v to v + 1, v from 1 to FSA_SCHEMA_VERSION - 1 (a few, once per open of
 * an older journal: the walk costs nothing that matters). */
static const char *migration(int64_t v)
{
    const char *s = migration_steps;
    for (int64_t i = 1; i < v; i++)
        s += strlen(s) + 1;
    return s;
}

/*
 * The current schema, for a new journal, in one script: what the steps above leave, without
 * making three tables to rebuild them at once (renaming a table makes SQLite parse the whole
 * schema again: a new journal's open took three times the allocations, and the allocation
 * sweep three times as long). A new step must change it too: a test compares the schema a step
 * leaves with this one (test_fsa_journal_open__v2_journal_migrates_to_v3).
 */
static const char schema_current[] = ENTITIES_DDL
    "CREATE TABLE outbox" DDL_OUTBOX_V6_COLUMNS DONE_OPS_TABLE_DDL
    "CREATE TABLE conflicts(seq INTEGER PRIMARY KEY," DDL_CONFLICTS_AFTER_SEQ STATE_AND_LOCKS_DDL
    "CREATE TABLE changes" DDL_CHANGES_COLUMNS DDL_OUTBOX_BY_ENTITY_INDEX DDL_OUTBOX_BY_GROUP_INDEX
        DDL_OUTBOX_CLOSED_INDEX DDL_OUTBOX_LEGACY_IDS_INDEX DDL_OP_ID_SALT_ROW;

/* sql with each stand-in byte (1 to DDL_PARTS) replaced by its part of shared_ddl, into out (cap
 * bytes); false when it does not fit. */
static bool ddl_expand(const char *sql, char *out, size_t cap)
{
    size_t n = 0;
    for (; *sql != '\0'; sql++) {
        const char *part = sql;
        size_t len = 1;
        if ((unsigned char)*sql <= DDL_PARTS) {
            part = shared_ddl;
            for (unsigned char k = (unsigned char)*sql; k > 1; k--)
                part += strlen(part) + 1;
            len = strlen(part);
        }
        if (cap - n <= len)
            return false;
        memcpy(out + n, part, len);
        n += len;
    }
    out[n] = '\0';
    return true;
}

fsa_status_t fsa__db_status(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW: return FSA_OK;
    case SQLITE_FULL: return FSA_EFULL;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return FSA_EBUSY;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return FSA_ECORRUPT;
    case SQLITE_NOMEM: return FSA_ENOMEM;
    case SQLITE_CONSTRAINT: return FSA_EEXISTS;
    /* SQLITE_CANTOPEN included: a missing journal is told before SQLite sees the path
     * (create_private), so SQLite failing to open a file (the journal, its -wal, a temporary
     * file) is the disk failing, not "no such entity". */
    default: return FSA_EIO;
    }
}

fsa_status_t fsa__db_exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK && err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", msg != NULL ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return fsa__db_status(rc);
}

void fsa__db_bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s == NULL)
        (void)sqlite3_bind_null(st, i);
    else
        (void)sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

fsa_status_t fsa__db_query_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(db, sql, -1, 0, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            *out = 0;
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return fsa__db_status(rc);
}

/* Takes group and other permissions away from path when it exists with them (a copy made with a
 * wide umask, a chmod by hand). */
static fsa_status_t make_private(const char *path, char *err, size_t errlen)
{
    char detail[FSA_LIMIT_PATH_BYTES + 160];
    fsa_status_t st = fsa_file_make_private(path, detail, sizeof detail);
    if (st != FSA_OK)
        snprintf(err, errlen, "journal file %s", detail);
    return st;
}

/* Creates the file with mode 0600 before SQLite sees it: SQLite would create it with the
 * process umask, and a journal holds a guard's whereabouts. The -wal and -shm files take the
 * mode of the database file when SQLite creates them. An existing journal, -wal or -shm that
 * others may access is made private again (0600 stays the invariant, whoever widened it). */
static fsa_status_t create_private(const char *path, bool create, char *err, size_t errlen)
{
    char detail[FSA_LIMIT_PATH_BYTES + 160];
    fsa_status_t st = fsa_file_exists(path, detail, sizeof detail);
    if (st == FSA_OK) {
        st = make_private(path, err, errlen);
        for (const char *const *sfx = (const char *const[]){"-wal", "-shm", NULL};
             st == FSA_OK && *sfx != NULL; sfx++) {
            char side[FSA_LIMIT_PATH_BYTES];
            if ((size_t)snprintf(side, sizeof side, "%s%s", path, *sfx) < sizeof side)
                st = make_private(side, err, errlen);
        }
        return st;
    }
    if (st != FSA_ENOTFOUND) {
        snprintf(err, errlen, "journal %s", detail);
        return FSA_EIO;
    }
    if (!create) {
        snprintf(err, errlen, "journal %s does not exist (run 'fieldsync init' first)", path);
        return FSA_ENOTFOUND;
    }
    if (fsa_file_create_private(path, detail, sizeof detail) != FSA_OK) {
        snprintf(err, errlen, "cannot create journal %s", detail);
        return FSA_EIO;
    }
    return FSA_OK;
}

/* Migrates the journal to FSA_SCHEMA_VERSION; alone: no other user has it open (join_users). */
static fsa_status_t migrate(sqlite3 *db, const char *path, bool alone, char *err, size_t errlen)
{
    char detail[256] = "";
    fsa_status_t st = fsa__db_exec(db, "BEGIN IMMEDIATE", detail, sizeof detail);
    if (st != FSA_OK) {
        snprintf(err, errlen, "journal %s: cannot start migration: %s", path, detail);
        return st;
    }
    int64_t version = 0;
    st = fsa__db_query_int(db, "PRAGMA user_version", &version);
    if (st != FSA_OK) {
        snprintf(err, errlen, "journal %s: cannot read schema version (%s)", path,
                 fsa_status_str(st));
        goto out;
    }
    if (version > FSA_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "journal %s has schema version %lld, newer than this program's %d: "
                 "upgrade fieldsync",
                 path, (long long)version, FSA_SCHEMA_VERSION);
        st = FSA_ESCHEMA;
        goto out;
    }
    if (version < 0) { /* no fieldsync wrote it: migration(version) has no step for it */
        snprintf(err, errlen, "journal %s has schema version %lld, which no fieldsync writes", path,
                 (long long)version);
        st = FSA_ESCHEMA;
        goto out;
    }
    /* An older journal moves only while nobody else has it open: a program of an older build that
     * has it open would go on reading and writing it by its own schema (since schema 6 its base
     * of an entity stored once would be taken for the text "", and so corrupt the entity). */
    if (!alone && version > 0 && version < FSA_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "journal %s has schema %lld and other programs open: stop them to upgrade it",
                 path, (long long)version);
        st = FSA_EBUSY;
        goto out;
    }
    /* A new file gets the current schema at once; an older journal, each step from its own. */
    int64_t v = version == 0 ? FSA_SCHEMA_VERSION - 1 : version;
    char sql[4096]; /* the longest, expanded: the 2 -> 3 step, 2,310 bytes */
    for (; v < FSA_SCHEMA_VERSION; v++) {
        st = ddl_expand(version == 0 ? schema_current : migration(v), sql, sizeof sql)
                 ? fsa__db_exec(db, sql, detail, sizeof detail)
                 : FSA_EINVAL; /* a step longer than sql: no test would pass */
        if (st != FSA_OK) {
            snprintf(err, errlen, "journal %s: migration to version %lld failed: %s", path,
                     (long long)v + 1, detail);
            goto out;
        }
    }
    if (version < FSA_SCHEMA_VERSION) {
        st = fsa__db_exec(db, "PRAGMA user_version=" SCHEMA_VERSION_TEXT, detail, sizeof detail);
        if (st != FSA_OK) {
            snprintf(err, errlen, "journal %s: cannot set schema version: %s", path, detail);
            goto out;
        }
    }
    st = fsa__db_exec(db, "COMMIT", detail, sizeof detail);
    if (st != FSA_OK)
        snprintf(err, errlen, "journal %s: migration commit failed: %s", path, detail);
out:
    if (st != FSA_OK)
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

/* The statement that gives a connection the durability opts ask for. */
static const char *sync_pragma(const fsa_db_opts_t *opts)
{
    return opts->sync_normal ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL";
}

/*
 * Sets the clean-close flag in a commit that does not sync: at synchronous=NORMAL, whose commits do
 * not sync in WAL mode but whose checkpoints do (the WAL, then the database); then runs restore,
 * which sets the connection's own setting again (NULL at a close: the connection closes next, and
 * its checkpoint syncs at NORMAL too). Neither mark needs a sync of its own, and each cost one on
 * every open and every close (a CLI command opens and closes once):
 * - The open's mark (0) reaches the disk with the first commit after it that syncs, or with the
 *   checkpoint that copies it. A power cut that loses it loses every commit after it too (the WAL's
 *   frames are checksummed in a chain: a frame that survives vouches for every frame before it),
 *   and the journal is then as its last clean close left it: nothing to check. A process that
 *   dies leaves its writes with the OS: the mark stays, and the next open checks.
 * - The close's mark (1) is synced by the checkpoint of the file's last connection to close. A
 *   power cut before that loses it, and the next open checks a journal that needed no check:
 *   slower, never wrong.
 * A mark already set writes nothing (SQLite does not dirty a page that a row overwrites with the
 * same bytes): a second user's open and close write no page at all. A restore that fails fails
 * the open, which closes the connection: never a FULL journal left at NORMAL.
 */
static fsa_status_t set_clean(sqlite3 *db, int clean, const char *restore, char *err, size_t errlen)
{
    fsa_status_t st = fsa__db_exec(db, "PRAGMA synchronous=NORMAL", err, errlen);
    if (st == FSA_OK)
        st = fsa__db_exec(db,
                          clean ? "INSERT INTO sync_state(k,v) VALUES('" FSA_STATE_CLEAN_CLOSE
                                  "',1) ON CONFLICT(k) DO UPDATE SET v=1"
                                : "INSERT INTO sync_state(k,v) VALUES('" FSA_STATE_CLEAN_CLOSE
                                  "',0) ON CONFLICT(k) DO UPDATE SET v=0",
                          err, errlen);
    fsa_status_t back = restore != NULL ? fsa__db_exec(db, restore, NULL, 0) : FSA_OK;
    return st != FSA_OK ? st : back;
}

fsa_status_t fsa__db_check(sqlite3 *db, const char *pragma, char *finding, size_t len)
{
    sqlite3_stmt *q = NULL;
    int rc = SQLITE_OK;
    const char *res = NULL;
    /* A page of the freelist that cannot be fetched is reported without its error code ("failed
     * to get page N"; a page number out of range has a finding of its own): a read that failed,
     * or no memory, not what the page holds. The check runs once more; the second answer
     * stands, and the same finding twice is a disk that does not read. */
    bool unread = false;
    for (int attempt = 0; attempt < 2; attempt++) {
        sqlite3_finalize(q);
        q = NULL;
        rc = sqlite3_prepare_v3(db, pragma, -1, 0, &q, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(q);
        res = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(q, 0) : NULL;
        unread = res != NULL && strstr(res, "failed to get page ") != NULL;
        if (!unread)
            break;
    }
    /* SQLite reports a page it could not get as a finding, with the code of the failure
     * ("unable to get the page. error code=266"): a read error or no memory, or corruption. */
    int page_rc = 0;
    const char *page = res != NULL ? strstr(res, "unable to get the page. error code=") : NULL;
    if (page != NULL)
        page_rc = (int)strtoll(page + strlen("unable to get the page. error code="), NULL, 10);
    fsa_status_t st;
    /* Only what the check finds (or SQLite's own corruption codes) is corruption: a check that
     * could not run for want of memory says nothing of the journal, */
    if ((rc == SQLITE_ROW && res == NULL) ||
        (rc != SQLITE_ROW && fsa__db_status(rc) == FSA_ENOMEM) || page_rc == SQLITE_NOMEM)
        st = FSA_ENOMEM;
    /* nor does a check that could not read (SQLite returns the read error itself when it fails
     * before any page). */
    else if ((rc != SQLITE_ROW && (rc & 0xff) == SQLITE_IOERR) ||
             (page_rc & 0xff) == SQLITE_IOERR || unread)
        st = FSA_EIO;
    else
        st = res != NULL && strcmp(res, "ok") == 0 ? FSA_OK : FSA_ECORRUPT;
    if (finding != NULL && len > 0) {
        snprintf(finding, len, "%s",
                 st == FSA_ENOMEM ? "out of memory"
                 : res != NULL    ? res
                                  : sqlite3_errstr(rc));
        fsa_one_line(finding); /* SQLite's findings come a line each */
    }
    sqlite3_finalize(q);
    return st;
}

/* Run by the only user of a journal: a journal left open (clean_close 0) by users that are all
 * gone now was not closed cleanly, and gets a quick check before use. */
static fsa_status_t check_after_unclean(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    int64_t clean = 1;
    fsa_status_t st = fsa__db_query_int(db,
                                        "SELECT coalesce((SELECT v FROM sync_state WHERE "
                                        "k='" FSA_STATE_CLEAN_CLOSE "'), 1)",
                                        &clean);
    if (st != FSA_OK) {
        snprintf(err, errlen, "journal %s: cannot read state (%s)", path, fsa_status_str(st));
        return st;
    }
    if (clean)
        return FSA_OK;
    char finding[256];
    st = fsa__db_check(db, "PRAGMA quick_check", finding, sizeof finding);
    if (st == FSA_ENOMEM)
        snprintf(err, errlen, "journal %s: out of memory during its integrity check", path);
    else if (st == FSA_EIO)
        snprintf(err, errlen,
                 "journal %s: cannot read it for its integrity check after an unclean shutdown: %s",
                 path, finding);
    else if (st != FSA_OK)
        snprintf(err, errlen, "journal %s failed its integrity check after an unclean shutdown: %s",
                 path, finding);
    return st;
}

/*
 * Who has the journal open is told by "<journal>.users": every user holds a shared lock on its
 * byte 0 for as long as it has the journal open, and the kernel drops the lock of a user that
 * dies. A user that can take the byte exclusively is alone: at open, it alone may migrate an older
 * journal (migrate), and checks the journal if the last users did not close it cleanly; at close,
 * it is the last one and marks a clean close.
 * The file is named after the journal's file as SQLite resolved it, not after path: a journal
 * reached through another name (a symlink to it) is the same database, and a user on a .users file
 * of its own would think itself alone, mark a clean close under the others, and a crash of theirs
 * would then go unchecked at the next open.
 */
static fsa_status_t join_users(fsa_port_t *port, const char *path, sqlite3 *db,
                               const fsa_db_opts_t *opts, fsa_flock_t **users, char *err,
                               size_t errlen)
{
    char upath[FSA_LIMIT_PATH_BYTES];
    const char *file = sqlite3_db_filename(db, "main");
    if (file == NULL || file[0] == '\0')
        file = path; /* SQLite names every file it opens: a fallback all the same */
    if (snprintf(upath, sizeof upath, "%s.users", file) >= (int)sizeof upath) {
        snprintf(err, errlen, "journal path too long");
        return FSA_EINVAL;
    }
    fsa_status_t st = port->flock_open(port->ctx, upath, users);
    if (st != FSA_OK) {
        snprintf(err, errlen, "journal %s: cannot open %s", path, upath);
        return st;
    }
    bool alone = port->flock_try(port->ctx, *users, 0) == FSA_OK;
    if (!alone) {
        /* Others have it open; one of them may be opening or closing right now and hold the byte
         * exclusively for a moment. */
        int timeout_ms =
            opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : FSA_LIMIT_BUSY_TIMEOUT_MS;
        fsa_mono_t deadline =
            fsa_mono_add_ns(port->mono_now(port->ctx), (int64_t)timeout_ms * FSA_NS_PER_MS);
        while ((st = port->flock_try_shared(port->ctx, *users, 0)) == FSA_EBUSY &&
               port->mono_now(port->ctx).ns < deadline.ns)
            port->sleep(port->ctx, FSA_NS_PER_MS);
        if (st != FSA_OK) {
            snprintf(err, errlen, "journal %s: another program kept it busy while opening", path);
            return st == FSA_EBUSY ? FSA_EBUSY : st;
        }
    }
    st = migrate(db, path, alone, err, errlen);
    if (alone && st == FSA_OK)
        st = check_after_unclean(db, path, err, errlen);
    if (st == FSA_OK) {
        char detail[256] = "";
        st = set_clean(db, 0, sync_pragma(opts), detail, sizeof detail);
        if (st != FSA_OK)
            snprintf(err, errlen, "journal %s: cannot record that it is open: %s", path, detail);
    }
    if (alone && st == FSA_OK)
        st = port->flock_try_shared(port->ctx, *users, 0); /* a downgrade: cannot be refused */
    return st;
}

/*
 * The wait for another connection's write lock (the same journal is written by the app's
 * threads, the lock manager's connection, the sync thread and other processes). SQLite's own busy
 * timeout sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between tries, so a record that meets a 10 ms
 * commit of the sync waits 18-33 ms. Here the pause starts at 50 us and doubles up to 10 ms, and
 * a pause ends early at the next commit of any journal connection in this process (the pulse,
 * port/pulse.h, posted by wal_committed()): a waiter behind a writer of its own process tries
 * again the moment that writer is done, and one behind another process's writer still polls, with
 * the backoff, so that many waiters (threads of several processes) do not try the file lock a
 * thousand times a second each. The timeout is real time since the wait began (a thread waits for
 * one lock at a time: the start is the thread's own); the waits are real time whatever the
 * journal's port: the other writer is a real thread or process. arg is the timeout in ms; n counts
 * the tries so far. Each wait is counted (fsa__db_busy_waits): the drain ends its transaction
 * early when a writer of this process waits for it.
 */
#define BUSY_FIRST_US 50
#define BUSY_MAX_US 10000

static _Thread_local int64_t busy_since_ns;
static _Atomic uint64_t busy_waits;

static int64_t busy_pause_us(int n)
{
    int64_t us = BUSY_FIRST_US;
    for (int i = 0; i < n && us < BUSY_MAX_US; i++)
        us *= 2;
    return us < BUSY_MAX_US ? us : BUSY_MAX_US;
}

static int busy_wait(void *arg, int n)
{
    fsa_port_t *real = fsa_port_posix();
    fsa_mono_t now = real->mono_now(real->ctx);
    if (n == 0)
        busy_since_ns = now.ns;
    int64_t timeout_ns = (int64_t)(intptr_t)arg * FSA_NS_PER_MS;
    if (now.ns - busy_since_ns >= timeout_ns)
        return 0;
    atomic_fetch_add(&busy_waits, 1);
    uint64_t seen = fsa_pulse_count();
    int64_t pause_ns = busy_pause_us(n) * 1000;
    if (pause_ns > busy_since_ns + timeout_ns - now.ns)
        pause_ns = busy_since_ns + timeout_ns - now.ns;
    (void)fsa_pulse_wait(seen, fsa_mono_add_ns(now, pause_ns));
    return 1;
}

uint64_t fsa__db_busy_waits(void)
{
    return atomic_load(&busy_waits);
}

/*
 * Checkpoints. SQLite's own hook, which wal_committed() replaces, runs a PASSIVE checkpoint in the
 * commit that finds WAL_CHECKPOINT_PAGES pages or more in the WAL, on whichever connection made
 * it. A checkpoint syncs the WAL, copies its pages into the database file and syncs that: a
 * thousand pages and two syncs, measured at 30 to 600 ms during a drain on the loaded development
 * machine and 3-5 ms when idle, which the record whose commit ran it waited for (a third of the
 * wall time of a run of records at synchronous=NORMAL: docs/performance.md, "Recording"). So the
 * commit of a connection at NORMAL only asks for it: this process's checkpointer thread (below)
 * runs it on a connection of its own, outside every journal mutex, and a PASSIVE checkpoint takes
 * no write lock, so records go on meanwhile. A connection at FULL still checkpoints in its commit:
 * its records wait for a sync each anyway, and a checkpoint beside them, whose syncs and final
 * RESTART their syncs then waited behind, made them slower (0.82-0.87 of a bare insert's rate
 * against 0.97-0.98 in the commit, same runs). A commit at NORMAL asks only at
 * WAL_CHECKPOINT_PAGES_NORMAL pages: each checkpoint's end costs that run of records three syncs
 * (the checkpoint finished in a commit, ckpt_request, and the new WAL's header), so checkpoints
 * four times as large but a quarter as often made NORMAL records 10% faster
 * (docs/performance.md, Recording, "Session 32"); a FULL record that runs one waits for it, so
 * FULL keeps SQLite's size. A commit that finds the WAL at
 * WAL_CHECKPOINT_FORCE pages (the checkpointer cannot keep up, or a reader pins the WAL) runs one
 * itself too, as does one whose request cannot be made (no memory, no thread): never a WAL
 * without bound. Failures are benign (the next commit past the size asks again).
 * While a drain runs, it claims the checkpoints (fsa__db_checkpoint_claim): the commits of every
 * journal connection of the process leave them to it, unless the WAL has grown past
 * WAL_CHECKPOINT_FORCE pages (a claim not kept), and the drain runs them between batches on a
 * connection of its own (fsa__db_flush). The claim is per process, not per file (a simulator's
 * devices share it); it lapses by itself when the drain stops renewing it.
 */
#define WAL_CHECKPOINT_PAGES 1000
#define WAL_CHECKPOINT_PAGES_NORMAL FSA__DB_CHECKPOINT_PAGES_NORMAL
#define WAL_CHECKPOINT_FORCE (8 * WAL_CHECKPOINT_PAGES)
#define WAL_FLUSH_PAGES 64
#define WAL_CHECKPOINT_PASSES 3

static _Atomic int64_t ckpt_claim_ns; /* posix monotonic: the drain checkpoints until then */
static _Atomic int wal_pages;         /* the WAL's pages at the last commit in this process */
/* What the checkpointer's last checkpoint left (ckpt_request): the frames it copied when the WAL
 * did not start again (checkpoint_passes()'s result; -1: nothing to finish), and the frames the
 * WAL held at its last pass. */
static _Atomic int ck_copied = -1;
static _Atomic int ck_log;

static bool ckpt_request(const char *path, int pages);

/*
 * Called by SQLite after every commit of a journal connection (sqlite3_wal_hook), with the pages
 * now in the WAL; arg is non-NULL for a connection at synchronous=NORMAL. It wakes the busy
 * waiters of this process (a write lock was just let go), then has the WAL checkpointed unless a
 * drain claims it (above).
 */
// cppcheck-suppress constParameter ; the type of SQLite's hook
static int wal_committed(void *arg, sqlite3 *db, const char *name, int pages)
{
    fsa_pulse_post();
    atomic_store(&wal_pages, pages);
    if (pages < WAL_CHECKPOINT_PAGES) {
        /* A new WAL, or a small one: what the last checkpoint left is of an older one. */
        if (atomic_load(&ck_copied) >= 0)
            atomic_store(&ck_copied, -1);
        return SQLITE_OK;
    }
    if (arg != NULL && pages < WAL_CHECKPOINT_PAGES_NORMAL)
        return SQLITE_OK;
    fsa_port_t *real = fsa_port_posix();
    if (pages < WAL_CHECKPOINT_FORCE && real->mono_now(real->ctx).ns < atomic_load(&ckpt_claim_ns))
        return SQLITE_OK;
    if (pages >= WAL_CHECKPOINT_FORCE || arg == NULL ||
        !ckpt_request(sqlite3_db_filename(db, name), pages))
        (void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return SQLITE_OK;
}

void fsa__db_checkpoint_claim(int64_t for_ns)
{
    fsa_port_t *real = fsa_port_posix();
    atomic_store(&ckpt_claim_ns, fsa_mono_add_ns(real->mono_now(real->ctx), for_ns).ns);
}

static const char *cw_vfs_name(void);

/* The reader's settings; its busy timeout as a PRAGMA (sqlite3_busy_timeout would be one more
 * import in the device binary). */
#define READER_PRAGMAS                                                                             \
    "PRAGMA busy_timeout=" DB_STR(FSA_LIMIT_BUSY_TIMEOUT_MS) ";PRAGMA query_only=1;"               \
                                                             "PRAGMA cache_size=-256"

fsa_status_t fsa__db_open_reader(const char *path, sqlite3 **out)
{
    *out = NULL;
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, cw_vfs_name());
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(db, 1);
        rc = sqlite3_exec(db, READER_PRAGMAS, NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        sqlite3_close_v2(db);
        return fsa__db_status(rc);
    }
    *out = db;
    return FSA_OK;
}

/*
 * After a RESTART, the first commit starts the WAL's next generation, and SQLite syncs the new
 * header before that commit's frames (at synchronous=NORMAL too: a frame of the generation before
 * must never pass for one of the new). Left to the next writer, that was often an app's check-in,
 * whose FULL commit then synced twice: 4% of the check-ins made while a 100,000-op backlog
 * drained (bench_lib). So the drain starts it itself, outside the journal's mutex, with a
 * one-row write at NORMAL (own's setting): one sync, the header's. A write that changes nothing
 * writes no page, hence a count. Its failure is benign (busy: another writer starts it).
 */
static void wal_start(sqlite3 *own)
{
    (void)sqlite3_exec(own,
                       "INSERT INTO sync_state(k,v) VALUES('" FSA_STATE_WAL_STARTS "', 1) "
                       "ON CONFLICT(k) DO UPDATE SET v=v + 1",
                       NULL, NULL, NULL);
}

/* Opens *own, when NULL, on the journal at path: a bare connection will do (the journal exists
 * and is in WAL mode, a persistent setting); it writes checkpoints and the row that starts a WAL
 * (wal_start), at NORMAL. A first read opens its WAL (this one reads the header, not the schema).
 * False when it cannot. */
static bool own_open(const char *path, sqlite3 **own)
{
    if (*own != NULL)
        return true;
    if (sqlite3_open_v2(path, own, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(*own, "PRAGMA user_version; PRAGMA synchronous=NORMAL", NULL, NULL, NULL) !=
            SQLITE_OK) {
        sqlite3_close_v2(*own);
        *own = NULL;
        return false;
    }
    sqlite3_wal_hook(*own, wal_committed, NULL);
    return true;
}

/*
 * Checkpoints the WAL on own. It syncs the WAL before it copies it. The WAL starts again from its
 * beginning only when a writer begins once every frame is copied; a frame committed while the
 * checkpoint ran (a record, the lock manager's writes) leaves it growing instead, towards
 * WAL_CHECKPOINT_FORCE and a checkpoint under someone's commit. So passes that copied what they
 * saw go on (at most WAL_CHECKPOINT_PASSES) while frames came during the last one, each copying
 * only those, and are followed by a RESTART without a busy handler: it takes the write lock only
 * when no one writes (else it is one more PASSIVE pass), copies what came after the last pass
 * (little: it holds writers off meanwhile), and then this starts the WAL's next generation.
 * Returns the WAL's frames copied when it did not start again, -1 when it did or failed; *frames,
 * the frames in the WAL at the last pass.
 */
static int checkpoint_passes(sqlite3 *own, int *frames)
{
    int log = 0, copied = 0, rc = SQLITE_OK;
    for (int pass = 0, seen = -1;
         pass < WAL_CHECKPOINT_PASSES && rc == SQLITE_OK && copied >= log && log != seen; pass++) {
        seen = log;
        rc = sqlite3_wal_checkpoint_v2(own, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
    }
    if (rc != SQLITE_OK)
        copied = -1;
    if (rc == SQLITE_OK && copied >= log) {
        if (sqlite3_wal_checkpoint_v2(own, NULL, SQLITE_CHECKPOINT_RESTART, NULL, NULL) ==
            SQLITE_OK) {
            copied = -1;
            wal_start(own);
        }
        /* It held the write lock: a writer of this process that waited for it goes now, not at
         * the end of its backoff pause (busy_wait() waits for a pulse or the pause). */
        fsa_pulse_post();
    }
    *frames = log;
    return copied;
}

void fsa__db_flush(const char *path, sqlite3 **own)
{
    /* A small WAL: what the next record's commit writes first is small too. */
    if (atomic_load(&wal_pages) < WAL_FLUSH_PAGES || !own_open(path, own))
        return;
    if (atomic_load(&wal_pages) >= WAL_CHECKPOINT_PAGES) {
        int frames;
        (void)checkpoint_passes(*own, &frames);
        return;
    }
    /* Not a sync: the kernel is asked to start writing the WAL's pages, and the drain goes on
     * while they are written. What this bounds is what the next record's FULL commit has to write
     * first; the results' commits need no durability of their own (journal_apply.c says why).
     * The drain waited here for the disk after every batch: 0.7-5 ms per 500-op batch on the
     * development machine, 10-26% of its wall time (docs/performance.md, "Drain"). A system
     * without the call syncs, as before. */
    char wal_path[FSA_LIMIT_PATH_BYTES];
    int len = snprintf(wal_path, sizeof wal_path, "%s-wal", path);
    if (len > 0 && (size_t)len < sizeof wal_path && fsa_file_start_writeback(wal_path) == FSA_OK)
        return;
    sqlite3_file *wal = NULL;
    if (sqlite3_file_control(*own, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal) == SQLITE_OK &&
        wal != NULL && wal->pMethods != NULL)
        (void)wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
}

/*
 * The checkpointer: a thread per checkpoint, one at a time in the process, started by the commit
 * that asks for it and joined by the next request after it ended, or by the close of its
 * journal's connection, which waits for it: what the close leaves on disk is settled when it
 * returns, and no thread outlives the journals it works for. It checkpoints on a connection opened
 * for it and closed after. A commit that finds another journal's checkpoint in progress runs its
 * own, as before (a simulator's devices). A forked child has none of its parent's threads: its
 * first request starts its own (the copy of the parent's handle is kept, unused).
 */
static fsa_once_t ck_once = FSA_ONCE_INIT;
static fsa_mutex_t *ck_mu;                 /* guards what follows */
static fsa_thread_t *ck_thread;            /* not joined yet; NULL: none */
static int64_t ck_pid;                     /* the process that started it */
static char ck_path[FSA_LIMIT_PATH_BYTES]; /* its journal */
static fsa_thread_t *ck_forked;            /* a fork's copy of the parent's */
static _Atomic bool ck_done;               /* it has ended */
static _Atomic uint64_t ck_served;         /* checkpoints it has run (fsa__db_checkpoints_run) */

static void ck_init(void)
{
    fsa_port_t *real = fsa_port_posix();
    (void)real->mutex_new(real->ctx, &ck_mu);
}

#ifdef FSA_FAULT_HOOKS
static atomic_bool ck_held;

void fsa__db_checkpointer_hold(bool hold)
{
    atomic_store(&ck_held, hold);
    fsa_pulse_post();
}
#endif

static void *ckpt_main(void *arg)
{
    (void)arg;
#ifdef FSA_FAULT_HOOKS
    for (uint64_t seen = fsa_pulse_count(); atomic_load(&ck_held); seen = fsa_pulse_count())
        (void)fsa_pulse_wait(seen, fsa_mono_forever());
#endif
    sqlite3 *own = NULL;
    int copied = -1, frames = 0;
    /* As the drain's: its RESTART is tried without waiting, only once the passes copied all they
     * saw; a checkpoint that stopped short (a record's commit came during its last pass) leaves
     * the next commit to ask again. Measured, a RESTART that waited for a gap between records
     * held them up longer than the extra checkpoints cost (docs/performance.md). */
    if (own_open(ck_path, &own))
        copied = checkpoint_passes(own, &frames);
    sqlite3_close_v2(own);
    atomic_store(&ck_log, frames);
    atomic_store(&ck_copied, copied);
    atomic_fetch_add(&ck_served, 1);
    atomic_store(&ck_done, true);
    return NULL;
}

/* Locks ck_mu and joins the thread if it has ended, or when it works for path (non-NULL), once it
 * ends: a close during its journal's checkpoint holds ck_mu that long, and a commit of another
 * journal that asks for a checkpoint meanwhile waits for it too (rare: at worst one checkpoint).
 * False when there is no mutex (nothing locked). */
static bool ck_reap(fsa_port_t *real, const char *path)
{
    fsa_once(&ck_once, ck_init);
    if (ck_mu == NULL)
        return false;
    real->mutex_lock(real->ctx, ck_mu);
    if (ck_thread != NULL && ck_pid != real->process_id(real->ctx)) {
        ck_forked = ck_thread;
        ck_thread = NULL;
    }
    if (ck_thread != NULL &&
        (atomic_load(&ck_done) || (path != NULL && strcmp(ck_path, path) == 0))) {
        (void)real->thread_join(real->ctx, ck_thread, NULL);
        ck_thread = NULL;
    }
    return true;
}

/*
 * Has the journal at path, whose WAL holds pages, checkpointed by a thread of its own. False when
 * the caller is to checkpoint itself: when it cannot (another journal's checkpoint in progress, no
 * thread), and to finish this journal's last one. A request for the journal in progress is
 * taken: the commits during a checkpoint find the WAL as large until the next writer starts it
 * again.
 * Finishing: while records come one after another, commits land during the thread's passes, its
 * RESTART finds a writer, and it ends with the WAL copied but for what came meanwhile (tens to
 * hundreds of frames), so the WAL cannot start again: only a writer that begins once every frame
 * is copied starts it. Asked again at once, a thread copied the few new frames, ended the same way,
 * and so on: one checkpoint, a connection and two syncs every ~30 records, and the WAL grew to
 * WAL_CHECKPOINT_FORCE all the same (docs/performance.md, Recording, "Session 17"). So the first
 * commit after such an end copies the rest in its own commit: fewer than WAL_CHECKPOINT_PAGES
 * frames, what SQLite's own checkpoint in a commit copies (and in a run of records, tens to
 * hundreds). A commit of another connection during that copy leaves it short once more (the next
 * commit asks a thread); else the WAL starts again at the next write. What the thread left is
 * taken only for the WAL it saw: not after a commit of this process found the WAL small (it
 * started again meanwhile, by another connection or process), nor below the frames it saw.
 */
static bool ckpt_request(const char *path, int pages)
{
    fsa_port_t *real = fsa_port_posix();
    if (path == NULL || strlen(path) >= sizeof ck_path || !ck_reap(real, NULL))
        return false;
    bool ok = ck_thread != NULL && strcmp(ck_path, path) == 0;
    int left = atomic_load(&ck_copied);
    if (ck_thread == NULL && left >= 0 && pages >= atomic_load(&ck_log) &&
        pages - left < WAL_CHECKPOINT_PAGES && strcmp(ck_path, path) == 0) {
        atomic_store(&ck_copied, -1); /* finished here, or asked of a thread next time */
    } else if (ck_thread == NULL) {
        memcpy(ck_path, path, strlen(path) + 1); /* fits: checked above */
        atomic_store(&ck_done, false);
        atomic_store(&ck_copied, -1);
        ck_pid = real->process_id(real->ctx);
        ok = real->thread_create(real->ctx, &ck_thread, ckpt_main, NULL) == FSA_OK;
    }
    real->mutex_unlock(real->ctx, ck_mu);
    return ok;
}

uint64_t fsa__db_checkpoints_run(void)
{
    return atomic_load(&ck_served);
}

/*
 * WAL write coalescing. SQLite appends each frame to the WAL in two writes, its 24-byte header and
 * its page, at offsets that are not page aligned: a record that changes 8 pages of the journal's
 * tables and indexes makes 16 pwrite calls, each touching two pages of the page cache. Measured on
 * the development machine, 16 such writes cost 4 times one write of the same bytes. So the
 * journal's connections open files through a shim over the default VFS that gathers the writes
 * to the -wal file while they are contiguous and hands them down as one write:
 *   - at the end of a commit frame (its header says the database size after commit, non-zero
 *     only for a commit frame): the write of its page returns the result of the whole write, so a
 *     failure is a failed commit as before, and the commit is on the file before SQLite publishes
 *     it in the wal-index (readers of other processes read the file only after that);
 *   - before anything else that looks at the file or needs it whole: a sync (so FULL still syncs
 *     every byte of the commit), a read, a truncate, its size, a close, a write elsewhere;
 *   - when the gathered bytes would pass WAL_GATHER_MAX (a large transaction: written in slices).
 * Only appends are gathered (see cw_write()): the writes SQLite makes over frames it wrote before
 * (a page spilled and changed again in one transaction, and the checksums it then rewrites after
 * the commit frame) go down at once. Nothing is gathered on a file without power-safe overwrite
 * (SQLITE_IOCAP_POWERSAFE_OVERWRITE, on by default in Debian's SQLite): SQLite then pads each
 * commit to a sector with copies of its commit frame and splits the last copy around a sync, and
 * the rest of that copy, part of a published commit, would be gathered with no commit frame to end
 * it. So a commit's bytes are always written by the write of its commit frame's page, and bytes
 * still gathered when a transaction ends without a commit were never committed: frames it spilled
 * (a transaction larger than the page cache writes frames before its commit), then rolled back.
 * Written later, after the connection let its write lock go, they would land over frames another
 * connection committed meanwhile at the same offsets. So they are dropped unwritten: by the
 * connection's rollback hook (cw_rolled_back, which every connection that writes through the shim
 * registers: fsa__db_open; nothing else may set that hook), and at the WAL's close (SQLite's
 * documentation does not promise the hook when a connection closes in a transaction). Within the
 * transaction, before either, anything that reads or rewrites the WAL writes them first, under
 * the write lock, where SQLite itself would have written them.
 * A process that dies with bytes gathered had not committed them. Without memory for the buffer a
 * write goes down at once, as without the shim. Other files (the database, temporary files) are
 * the wrapped VFS's own, untouched.
 */
#define WAL_GATHER_MAX (128 * 1024)
#define WAL_FRAME_HEADER 24

typedef struct cw_file {
    sqlite3_file base;
    sqlite3_file *real;
    unsigned char *buf;
    size_t len, cap;
    sqlite3_int64 off;      /* file offset of buf[0] */
    sqlite3_int64 frontier; /* where the last write ended: the next append starts there */
    bool commit_pending; /* the last write was a commit frame's header: its page ends the commit */
    bool no_gather;      /* no power-safe overwrite: every write goes down at once (above) */
    _Atomic uint64_t full_writes; /* writes refused for want of space (fsa__db_wal_full_writes) */
} cw_file_t;

/* The real file starts at the next max_align_t boundary after our header. */
#define CW_HEADER                                                                                  \
    ((sizeof(cw_file_t) + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t))

typedef struct cw_vfs {
    sqlite3_vfs vfs;
    sqlite3_vfs *parent;
    char name[64];
} cw_vfs_t;

static sqlite3_file *cw_real(sqlite3_file *f)
{
    return ((cw_file_t *)f)->real;
}

/* Every write of the WAL goes down through here: one refused for want of space (the unix VFS's
 * SQLITE_FULL for ENOSPC, or a quota) is counted. */
static int cw_write_down(cw_file_t *f, const void *buf, int n, sqlite3_int64 off)
{
    int rc = f->real->pMethods->xWrite(f->real, buf, n, off);
    if (rc == SQLITE_FULL)
        atomic_fetch_add(&f->full_writes, 1);
    return rc;
}

static int cw_flush(cw_file_t *f)
{
    if (f->len == 0)
        return SQLITE_OK;
    int rc = cw_write_down(f, f->buf, (int)f->len, f->off);
    f->len = 0;
    return rc;
}

/* What the WAL still gathers at its close was never committed (above): dropped. */
static int cw_close(sqlite3_file *file)
{
    cw_file_t *f = (cw_file_t *)file;
    int rc = f->real->pMethods != NULL ? f->real->pMethods->xClose(f->real) : SQLITE_OK;
    fsa_free(f->buf);
    f->buf = NULL;
    file->pMethods = NULL;
    return rc;
}

static int cw_read(sqlite3_file *file, void *buf, int n, sqlite3_int64 off)
{
    int rc = cw_flush((cw_file_t *)file);
    return rc != SQLITE_OK ? rc : cw_real(file)->pMethods->xRead(cw_real(file), buf, n, off);
}

/* Room for n more bytes in f->buf (grown up to WAL_GATHER_MAX); false without memory. */
static bool cw_room(cw_file_t *f, size_t n)
{
    if (f->len + n <= f->cap)
        return true;
    size_t cap = f->cap > 0 ? f->cap : 16 * 1024;
    while (cap < f->len + n)
        cap *= 2;
    if (cap > WAL_GATHER_MAX)
        return false;
    unsigned char *grown = fsa_realloc(f->buf, cap);
    if (grown == NULL)
        return false;
    f->buf = grown;
    f->cap = cap;
    return true;
}

static int cw_write(sqlite3_file *file, const void *buf, int n, sqlite3_int64 off)
{
    cw_file_t *f = (cw_file_t *)file;
    int rc = SQLITE_OK;
    if (f->len > 0 && off != f->off + (sqlite3_int64)f->len)
        rc = cw_flush(f);
    if (rc != SQLITE_OK)
        return rc;
    const unsigned char *b = buf;
    bool header = n == WAL_FRAME_HEADER;
    bool commit_page = !header && f->commit_pending;
    f->commit_pending = header && (b[4] | b[5] | b[6] | b[7]) != 0;
    /* Only appends are gathered: a write that continues the last one, or starts a new log at
     * offset 0. Anything else goes down at once: a page rewritten in place within a transaction,
     * and the frame checksums SQLite rewrites after a commit frame when it did so (no page write
     * follows them to end a gathering, and the commit is published right after). */
    bool append = f->len > 0 || off == f->frontier || off == 0;
    if (!append || f->no_gather || n <= 0 || !cw_room(f, (size_t)n)) {
        rc = cw_flush(f); /* a rewrite, a large transaction, or no memory: write through */
        f->frontier = off + n;
        return rc != SQLITE_OK ? rc : cw_write_down(f, buf, n, off);
    }
    if (f->len == 0)
        f->off = off;
    memcpy(f->buf + f->len, buf, (size_t)n);
    f->len += (size_t)n;
    f->frontier = off + n;
    return commit_page ? cw_flush(f) : SQLITE_OK;
}

static int cw_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    int rc = cw_flush((cw_file_t *)file);
    return rc != SQLITE_OK ? rc : cw_real(file)->pMethods->xTruncate(cw_real(file), size);
}

static int cw_sync(sqlite3_file *file, int flags)
{
    int rc = cw_flush((cw_file_t *)file);
    return rc != SQLITE_OK ? rc : cw_real(file)->pMethods->xSync(cw_real(file), flags);
}

static int cw_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    int rc = cw_flush((cw_file_t *)file);
    return rc != SQLITE_OK ? rc : cw_real(file)->pMethods->xFileSize(cw_real(file), size);
}

static int cw_lock(sqlite3_file *file, int level)
{
    return cw_real(file)->pMethods->xLock(cw_real(file), level);
}

static int cw_unlock(sqlite3_file *file, int level)
{
    return cw_real(file)->pMethods->xUnlock(cw_real(file), level);
}

static int cw_check_reserved(sqlite3_file *file, int *out)
{
    return cw_real(file)->pMethods->xCheckReservedLock(cw_real(file), out);
}

static int cw_file_control(sqlite3_file *file, int op, void *arg)
{
    return cw_real(file)->pMethods->xFileControl(cw_real(file), op, arg);
}

static int cw_sector_size(sqlite3_file *file)
{
    return cw_real(file)->pMethods->xSectorSize(cw_real(file));
}

static int cw_device_characteristics(sqlite3_file *file)
{
    return cw_real(file)->pMethods->xDeviceCharacteristics(cw_real(file));
}

/* Version 1 methods: only the WAL is wrapped, and SQLite maps shared memory and pages of the
 * database file only, never of the WAL (a version 3 table, with methods forwarding those calls,
 * was 36 relocated pointers and ~1.3 KB of the device binary for calls that never came). */
static const sqlite3_io_methods cw_io = {
    .iVersion = 1,
    .xClose = cw_close,
    .xRead = cw_read,
    .xWrite = cw_write,
    .xTruncate = cw_truncate,
    .xSync = cw_sync,
    .xFileSize = cw_file_size,
    .xLock = cw_lock,
    .xUnlock = cw_unlock,
    .xCheckReservedLock = cw_check_reserved,
    .xFileControl = cw_file_control,
    .xSectorSize = cw_sector_size,
    .xDeviceCharacteristics = cw_device_characteristics,
};

static int cw_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
                   int *out_flags)
{
    sqlite3_vfs *parent = ((cw_vfs_t *)vfs)->parent;
    if ((flags & SQLITE_OPEN_WAL) == 0) /* not the WAL: the wrapped VFS's own file, in place */
        return parent->xOpen(parent, name, file, flags, out_flags);
    cw_file_t *f = (cw_file_t *)file;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)(void *)((unsigned char *)file + CW_HEADER);
    int rc = parent->xOpen(parent, name, f->real, flags, out_flags);
    /* SQLite calls xClose after a failed xOpen only when pMethods is set: mirror the real file. */
    if (f->real->pMethods != NULL) {
        file->pMethods = &cw_io;
        /* SQLite pads by its database file's characteristics, opened before its WAL. */
        sqlite3_file *db = sqlite3_database_file_object(name);
        f->no_gather =
            db == NULL || db->pMethods == NULL ||
            (db->pMethods->xDeviceCharacteristics(db) & SQLITE_IOCAP_POWERSAFE_OVERWRITE) == 0;
    }
    return rc;
}

/* db's WAL as the shim's file; NULL when it is not open yet (nothing written) or not the shim's. */
static cw_file_t *cw_of(sqlite3 *db)
{
    sqlite3_file *wal = NULL;
    if (db == NULL ||
        sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal) != SQLITE_OK ||
        wal == NULL || wal->pMethods != &cw_io)
        return NULL;
    return (cw_file_t *)wal;
}

uint64_t fsa__db_wal_full_writes(sqlite3 *db)
{
    cw_file_t *f = cw_of(db);
    return f != NULL ? atomic_load(&f->full_writes) : 0;
}

/* The rollback hook of a connection that writes through the shim: what its WAL still gathers was
 * never committed (above), and is dropped unwritten. */
static void cw_rolled_back(void *db)
{
    cw_file_t *f = cw_of(db);
    if (f != NULL)
        f->len = 0;
}

static int cw_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    sqlite3_vfs *p = ((cw_vfs_t *)vfs)->parent;
    return p->xDelete(p, name, sync_dir);
}

static int cw_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    sqlite3_vfs *p = ((cw_vfs_t *)vfs)->parent;
    return p->xAccess(p, name, flags, out);
}

static int cw_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    sqlite3_vfs *p = ((cw_vfs_t *)vfs)->parent;
    return p->xFullPathname(p, name, n, out);
}

static void *cw_dl_open(sqlite3_vfs *vfs, const char *name)
{
    sqlite3_vfs *p = ((cw_vfs_t *)vfs)->parent;
    return p->xDlOpen(p, name);
}

static void cw_dl_error(sqlite3_vfs *vfs, int n, char *msg)
{
    sqlite3_vfs *p = ((cw_vfs_t *)vfs)->parent;
    p->xDlError(p, n, msg);
}

static void (*cw_dl_sym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
    sqlite3_vfs *p = ((cw_vfs_t *)vfs)->parent;
    return p->xDlSym(p, h, sym);
}

static void cw_dl_close(sqlite3_vfs *vfs, void *h)
{
    sqlite3_vfs *p = ((cw_vfs_t *)vfs)->parent;
    p->xDlClose(p, h);
}

static int cw_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    sqlite3_vfs *p = ((cw_vfs_t *)vfs)->parent;
    return p->xRandomness(p, n, out);
}

static int cw_sleep(sqlite3_vfs *vfs, int us)
{
    sqlite3_vfs *p = ((cw_vfs_t *)vfs)->parent;
    return p->xSleep(p, us);
}

static int cw_current_time(sqlite3_vfs *vfs, double *out)
{
    sqlite3_vfs *p = ((cw_vfs_t *)vfs)->parent;
    return p->xCurrentTime(p, out);
}

static int cw_get_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    sqlite3_vfs *p = ((cw_vfs_t *)vfs)->parent;
    return p->xGetLastError != NULL ? p->xGetLastError(p, n, out) : 0;
}

static int cw_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    sqlite3_vfs *p = ((cw_vfs_t *)vfs)->parent;
    return p->xCurrentTimeInt64(p, out);
}

/* The shims made so far, one per wrapped VFS (the default one can change: the fault tests install
 * theirs), registered with SQLite for the life of the process. Static: no allocation to fail. */
#define CW_VFS_MAX 4
static cw_vfs_t cw_vfs[CW_VFS_MAX];
static int cw_nvfs;

/* The name of the shim over the current default VFS, or NULL (no default, a VFS too old, the
 * table full): the journal then opens without it. */
static const char *cw_vfs_name(void)
{
    sqlite3_vfs *parent = sqlite3_vfs_find(NULL);
    if (parent == NULL || parent->iVersion < 2 || parent->szOsFile < 0)
        return NULL;
    sqlite3_mutex *mu = sqlite3_mutex_alloc(SQLITE_MUTEX_STATIC_APP1);
    sqlite3_mutex_enter(mu);
    const char *name = NULL;
    for (int i = 0; i < cw_nvfs && name == NULL; i++) {
        if (cw_vfs[i].parent == parent)
            name = cw_vfs[i].name;
    }
    if (name == NULL && cw_nvfs < CW_VFS_MAX) {
        cw_vfs_t *v = &cw_vfs[cw_nvfs];
        snprintf(v->name, sizeof v->name, "fsa-wal-%d", cw_nvfs);
        v->parent = parent;
        v->vfs = (sqlite3_vfs){
            .iVersion = 2,
            .szOsFile = (int)CW_HEADER + parent->szOsFile,
            .mxPathname = parent->mxPathname,
            .zName = v->name,
            .xOpen = cw_open,
            .xDelete = cw_delete,
            .xAccess = cw_access,
            .xFullPathname = cw_full_pathname,
            .xDlOpen = cw_dl_open,
            .xDlError = cw_dl_error,
            .xDlSym = cw_dl_sym,
            .xDlClose = cw_dl_close,
            .xRandomness = cw_randomness,
            .xSleep = cw_sleep,
            .xCurrentTime = cw_current_time,
            .xGetLastError = cw_get_last_error,
            .xCurrentTimeInt64 = cw_current_time_int64,
        };
        if (sqlite3_vfs_register(&v->vfs, 0) == SQLITE_OK) {
            cw_nvfs++;
            name = v->name;
        }
    }
    sqlite3_mutex_leave(mu);
    return name;
}

fsa_status_t fsa__db_open(fsa_port_t *port, const char *path, const fsa_db_opts_t *opts,
                          sqlite3 **out, fsa_flock_t **users, char *err, size_t errlen)
{
    char scratch[8];
    if (err == NULL || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    if (out == NULL || users == NULL)
        return FSA_EINVAL;
    *out = NULL;
    *users = NULL;
    if (port == NULL || path == NULL || path[0] == '\0' || opts == NULL) {
        snprintf(err, errlen, "no journal path given");
        return FSA_EINVAL;
    }
    fsa_status_t st = create_private(path, opts->create, err, errlen);
    if (st != FSA_OK)
        return st;

    fsa_libs_use_allocator();
    sqlite3 *db = NULL;
    /* NOMUTEX: the owner's mutex already serialises every use (db.h); SQLite's own mutex was
     * taken some 100 times per op for nothing (docs/performance.md). */
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, cw_vfs_name());
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open journal %s: %s", path,
                 db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        st = fsa__db_status(rc);
        goto fail;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_handler(db, busy_wait,
                         (void *)(intptr_t)(opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms
                                                                      : FSA_LIMIT_BUSY_TIMEOUT_MS));
    sqlite3_wal_hook(db, wal_committed, opts->sync_normal ? db : NULL);
    sqlite3_rollback_hook(db, cw_rolled_back, db);
    char detail[256] = "";
    /* A new journal's page size (an existing file keeps its own): port/limits.h says why. */
    st = fsa__db_exec(db, "PRAGMA page_size=" DB_STR(FSA_LIMIT_PAGE_BYTES), detail, sizeof detail);
    if (st == FSA_OK)
        st = fsa__db_exec(db, "PRAGMA journal_mode=WAL", detail, sizeof detail);
    if (st == FSA_OK)
        st = fsa__db_exec(db, sync_pragma(opts), detail, sizeof detail);
    if (st == FSA_OK)
        st = fsa__db_exec(db, "PRAGMA foreign_keys=ON", detail, sizeof detail);
    if (st != FSA_OK) {
        /* A read or write that failed says nothing about the file's contents. */
        if (st == FSA_ECORRUPT)
            snprintf(err, errlen, "journal %s is not a usable SQLite database: %s", path, detail);
        else if (st == FSA_EIO)
            snprintf(err, errlen, "journal %s: cannot read or write it: %s", path, detail);
        else
            snprintf(err, errlen, "journal %s: %s", path, detail);
        goto fail;
    }
    st = join_users(port, path, db, opts, users, err, errlen);
    if (st != FSA_OK)
        goto fail;
    *out = db;
    return FSA_OK;
fail:
    port->flock_close(port->ctx, *users);
    *users = NULL;
    sqlite3_close_v2(db);
    return st;
}

void fsa__db_close(fsa_port_t *port, sqlite3 *db, fsa_flock_t *users)
{
    if (db != NULL && users != NULL && port->flock_try(port->ctx, users, 0) == FSA_OK)
        (void)set_clean(db, 1, NULL, NULL, 0); /* the last user leaves; the connection closes */
    if (users != NULL)
        port->flock_close(port->ctx, users);
    /* Its checkpoint in progress ends first (above). */
    fsa_port_t *real = fsa_port_posix();
    if (db != NULL && ck_reap(real, sqlite3_db_filename(db, "main")))
        real->mutex_unlock(real->ctx, ck_mu);
    sqlite3_close_v2(db);
}
