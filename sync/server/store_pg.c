/* fieldsync-server: the store's PostgreSQL backend (libpq): row locks, a commit-ordered feed. */

/*
 * Like store_sqlite.c, a deliberate exception to STYLE.md's "only storage/ includes sqlite3.h"
 * rule in spirit: the server's own database client lives next to the server. Only this file
 * includes libpq-fe.h.
 *
 * How the protocol's guarantees map onto PostgreSQL (READ COMMITTED):
 * - A batch is one transaction on one pooled connection. Every entity is read with SELECT ... FOR
 *   UPDATE, so increments, merges, appends and transitions are computed under the row lock and
 *   concurrent writers of one entity queue on it (other processes and threads alike).
 * - Each op_id is claimed first (INSERT ... ON CONFLICT DO NOTHING): a concurrent transaction with
 *   the same op_id waits on the claim, then sees the outcome logged and answers duplicate.
 * - A create that finds no row inserts with ON CONFLICT DO NOTHING; when a concurrent create won,
 *   the transaction is retried and answers conflict.
 * - The change feed never skips: sequence values are not commit-ordered, so change numbers are
 *   not taken while the batch runs. At commit, the batch takes its numbers from a one-row counter
 *   (UPDATE ... RETURNING, whose row lock it holds until its COMMIT) and stamps its entities. The
 *   next batch can take numbers only after this one's COMMIT made them visible, so numbers become
 *   visible in order and a pull "chg > cursor" never passes over a change that commits later.
 *   The cost: committing transactions queue on that row for the length of a few updates and the
 *   commit itself.
 * - Serialization failures, deadlocks and unique violations from racing transactions come back as
 *   FSA_EBUSY, and store.c retries the whole batch a bounded number of times.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-events.h>
#include <libpq-fe.h>

#include "port/alloc.h"
#include "sync/server/store_internal.h"

#define PG_SCHEMA 3
#define PG_CONNS_MAX 16
/* pg_advisory_xact_lock key for creating and migrating the schema: "FSAS". */
#define PG_SCHEMA_LOCK "1179861331"
/* The first of the two keys of a scoped pull's lock on its device (pg_pull): "FSAD". */
#define PG_DELIVERED_LOCK "1179861316"

static const char pg_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS entities("
    " type text NOT NULL, id text NOT NULL, version bigint NOT NULL, mdtz bigint NOT NULL,"
    " fields text NOT NULL, chg bigint, owner text, PRIMARY KEY(type, id));"
    "CREATE UNIQUE INDEX IF NOT EXISTS entities_chg ON entities(chg);"
    "CREATE TABLE IF NOT EXISTS ops("
    " op_id text PRIMARY KEY, device text NOT NULL, seq bigint NOT NULL, type text NOT NULL,"
    " id text NOT NULL, status integer NOT NULL, version bigint NOT NULL, code text NOT NULL,"
    " message text NOT NULL, received bigint NOT NULL);"
    "CREATE INDEX IF NOT EXISTS ops_received ON ops(received);"
    "CREATE TABLE IF NOT EXISTS nonces("
    " device text NOT NULL, nonce text NOT NULL, expires bigint NOT NULL,"
    " PRIMARY KEY(device, nonce));"
    "CREATE INDEX IF NOT EXISTS nonces_expires ON nonces(expires);"
    "CREATE TABLE IF NOT EXISTS change_counter("
    " one integer PRIMARY KEY CHECK (one = 1), last bigint NOT NULL);"
    "INSERT INTO change_counter VALUES (1, 0) ON CONFLICT DO NOTHING;"
    /* Schema 3: scopes (store_sqlite.c says why). */
    "ALTER TABLE entities ADD COLUMN IF NOT EXISTS site text;"
    "ALTER TABLE entities ADD COLUMN IF NOT EXISTS person text;"
    "ALTER TABLE entities ADD COLUMN IF NOT EXISTS parent text;"
    "UPDATE entities SET"
    " site = CASE WHEN type = 'attendance' THEN fields::json->>'site_id' END,"
    " person = CASE type WHEN 'jobneed' THEN fields::json->>'people_id'"
    "  WHEN 'ticket' THEN fields::json->>'assignedto' END,"
    " parent = CASE WHEN type = 'jobneed' THEN fields::json->>'parent_id' END;"
    "CREATE INDEX IF NOT EXISTS entities_site ON entities(site, chg);"
    "CREATE INDEX IF NOT EXISTS entities_person ON entities(person, chg);"
    "CREATE INDEX IF NOT EXISTS entities_parent ON entities(parent, chg);"
    "CREATE INDEX IF NOT EXISTS entities_owner ON entities(owner, chg);"
    "CREATE TABLE IF NOT EXISTS delivered("
    " device text NOT NULL, type text NOT NULL, id text NOT NULL, gone_chg bigint,"
    " PRIMARY KEY(device, type, id));";

/* One entity touched by the transaction, stamped with a change number at commit. */
typedef struct touched {
    char type[16];
    char id[FSA_ID_BYTES];
    uint64_t last; /* the number of its last touch: the order of the stamps */
} touched_t;

/* One op's outcome, waiting to be logged (pg_log_op): the parameters of its row, as text. */
typedef struct logrow {
    char op_id[FSA_OP_ID_BYTES];
    char device[FSA_ID_BYTES];
    char seq[24];
    const char *type; /* a static name */
    char id[FSA_ID_BYTES];
    char status[8];
    char version[24];
    char code[FSA_CODEC_CODE_BYTES];
    char message[FSA_CODEC_MESSAGE_BYTES];
    char received[24];
} logrow_t;

typedef struct pg_conn {
    fsa__store_tx_t head; /* the transaction this connection runs */
    PGconn *c;
    bool busy;
    /* Each entity once, however often the batch touches it (a parent's person changed by 500
     * ops touches each of its checkpoints 500 times): found through slots. */
    touched_t *touched;
    size_t ntouched, cap;
    int32_t *slots; /* open addressing over touched: index, or -1 */
    size_t nslots;  /* a power of two, over twice ntouched; 0 before the first touch */
    uint64_t touches;
    size_t sp_touched; /* ntouched when the group's savepoint began */
    logrow_t *logs;    /* outcomes not yet sent (log_flush) */
    size_t nlogs, logcap;
} pg_conn_t;

typedef struct pg_store {
    fsa_store_t head;
    const fsa_port_t *port;
    char *uri;
    pg_conn_t conns[PG_CONNS_MAX];
    unsigned nconns;
    fsa_mutex_t *lock;
    fsa_cond_t *cond;
} pg_store_t;

static const fsa__store_ops_t pg_ops;

static pg_store_t *PG(fsa_store_t *s)
{
    return (pg_store_t *)(void *)s;
}

static pg_conn_t *CONN(fsa__store_tx_t *tx)
{
    return (pg_conn_t *)(void *)tx;
}

/* Maps a failed result to a status: what a retry may cure is FSA_EBUSY. */
static fsa_status_t map_result(const PGresult *r)
{
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (state == NULL)
        return FSA_EIO; /* no answer: the connection failed */
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "23505") == 0 ||
        strcmp(state, "55P03") == 0)
        return FSA_EBUSY;
    if (strcmp(state, "53100") == 0)
        return FSA_EFULL; /* disk_full */
    if (strncmp(state, "53", 2) == 0)
        return FSA_EBUSY; /* insufficient resources: too many connections, out of memory */
    return FSA_EIO;
}

/*
 * The statements of the apply path (an INSERT, an UPDATE, a SELECT without ORDER BY, with
 * parameters) are prepared once per connection and then only executed: sent whole with
 * PQexecParams, PostgreSQL parses and plans each one every time. The pulls, the sweeps and the
 * statements without parameters are sent whole as before (a generic plan is not asked for where a
 * parameter's value may change the plan). The cache is the connection's libpq instance data,
 * emptied by libpq's reset event (a reconnect loses the server's prepared statements) and freed
 * with the connection (pg_events).
 */
#define PG_STMTS_MAX 32

typedef struct pg_stmts {
    size_t n;
    const char *sql[PG_STMTS_MAX]; /* the text the caller passed (a literal, compared first) */
    char *copy[PG_STMTS_MAX];      /* its copy, the one compared to decide */
} pg_stmts_t;

static void stmts_clear(pg_stmts_t *ps)
{
    for (size_t i = 0; i < ps->n; i++)
        fsa_free(ps->copy[i]);
    ps->n = 0;
}

static int pg_events(PGEventId id, void *info, void *pass)
{
    (void)pass;
    if (id == PGEVT_CONNRESET || id == PGEVT_CONNDESTROY) {
        PGconn *c = id == PGEVT_CONNRESET ? ((PGEventConnReset *)info)->conn
                                          : ((PGEventConnDestroy *)info)->conn;
        pg_stmts_t *ps = PQinstanceData(c, pg_events);
        if (ps != NULL)
            stmts_clear(ps);
        if (ps != NULL && id == PGEVT_CONNDESTROY) {
            fsa_free(ps);
            (void)PQsetInstanceData(c, pg_events, NULL);
        }
    }
    return 1;
}

/* Gives c its statement cache (none when out of memory: every statement is then sent whole). */
static void stmts_attach(PGconn *c)
{
    pg_stmts_t *ps = fsa_calloc(1, sizeof *ps);
    if (ps == NULL)
        return;
    if (!PQregisterEventProc(c, pg_events, "fieldsync-statements", NULL) ||
        !PQsetInstanceData(c, pg_events, ps))
        fsa_free(ps);
}

static bool preparable(const char *sql, int n)
{
    return n > 0 && (strncmp(sql, "INSERT", 6) == 0 || strncmp(sql, "UPDATE", 6) == 0 ||
                     (strncmp(sql, "SELECT", 6) == 0 && strstr(sql, "ORDER BY") == NULL));
}

/*
 * Executes sql prepared on c, preparing it on its first use. NULL when it is not to be prepared
 * or there is no room (the caller sends it whole); else the result, which may be the failed
 * prepare's (what sending it whole would have failed with at its parse).
 */
static PGresult *exec_prepared(PGconn *c, const char *sql, int n, const char *const *params)
{
    pg_stmts_t *ps = preparable(sql, n) ? PQinstanceData(c, pg_events) : NULL;
    if (ps == NULL)
        return NULL;
    size_t i = 0;
    while (i < ps->n && ps->sql[i] != sql)
        i++;
    if (i == ps->n || strcmp(ps->copy[i], sql) != 0) {
        for (i = 0; i < ps->n && strcmp(ps->copy[i], sql) != 0;)
            i++;
    }
    char name[24];
    snprintf(name, sizeof name, "fsa_%zu", i);
    if (i == ps->n) {
        if (ps->n == PG_STMTS_MAX || (ps->copy[i] = fsa_strdup(sql)) == NULL)
            return NULL;
        PGresult *pr = PQprepare(c, name, sql, n, NULL);
        if (pr == NULL || PQresultStatus(pr) != PGRES_COMMAND_OK) {
            fsa_free(ps->copy[i]);
            return pr;
        }
        PQclear(pr);
        ps->sql[i] = sql;
        ps->n++;
    }
    ps->sql[i] = sql;
    return PQexecPrepared(c, name, n, params, NULL, NULL, 0);
}

/* Runs a statement with text parameters; on success *out is the result (PQclear it). */
static fsa_status_t run(PGconn *c, const char *sql, int n, const char *const *params,
                        PGresult **out)
{
    *out = NULL;
    PGresult *r = exec_prepared(c, sql, n, params);
    if (r == NULL)
        r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType es = r != NULL ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK) {
        *out = r;
        return FSA_OK;
    }
    fsa_status_t st = r == NULL ? FSA_ENOMEM : map_result(r);
    PQclear(r);
    return st;
}

/* Runs a statement whose result is not needed. */
static fsa_status_t run0(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = NULL;
    fsa_status_t st = run(c, sql, n, params, &r);
    PQclear(r);
    return st;
}

/* The number of rows a command changed. */
static long changed(const PGresult *r)
{
    const char *t = PQcmdTuples((PGresult *)(uintptr_t)r);
    return t != NULL && t[0] != '\0' ? strtol(t, NULL, 10) : 0;
}

static char *dup_value(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    const char *v = PQgetvalue(r, row, col);
    size_t n = (size_t)PQgetlength(r, row, col);
    char *p = fsa_malloc(n + 1);
    if (p != NULL) {
        memcpy(p, v, n);
        p[n] = '\0';
    }
    return p;
}

static int64_t int_value(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* ---- the pool ---- */

static pg_conn_t *conn_take(pg_store_t *s)
{
    const fsa_port_t *port = s->port;
    port->mutex_lock(port->ctx, s->lock);
    pg_conn_t *c = NULL;
    while (c == NULL) {
        for (unsigned i = 0; i < s->nconns && c == NULL; i++) {
            if (!s->conns[i].busy)
                c = &s->conns[i];
        }
        if (c == NULL)
            (void)port->cond_wait(port->ctx, s->cond, s->lock, fsa_mono_forever());
    }
    c->busy = true;
    port->mutex_unlock(port->ctx, s->lock);
    /* A connection the server dropped (restart, idle timeout) is made again before use. */
    if (PQstatus(c->c) != CONNECTION_OK)
        PQreset(c->c);
    return c;
}

static void conn_give(pg_store_t *s, pg_conn_t *c)
{
    const fsa_port_t *port = s->port;
    port->mutex_lock(port->ctx, s->lock);
    c->busy = false;
    port->cond_signal(port->ctx, s->cond);
    port->mutex_unlock(port->ctx, s->lock);
}

static void pg_close(fsa_store_t *head)
{
    pg_store_t *s = PG(head);
    for (unsigned i = 0; i < s->nconns; i++) {
        PQfinish(s->conns[i].c);
        fsa_free(s->conns[i].touched);
        fsa_free(s->conns[i].slots);
        fsa_free(s->conns[i].logs);
    }
    s->port->mutex_free(s->port->ctx, s->lock);
    s->port->cond_free(s->port->ctx, s->cond);
    if (s->uri != NULL) {
        memset(s->uri, 0, strlen(s->uri)); /* it may hold a password */
        fsa_free(s->uri);
    }
    fsa_free(s);
}

/* Copies the connection's error into err without the URI (which may hold a password): libpq's
 * messages name the host and port, never the password. */
static void conn_error(PGconn *c, const char *what, char *err, size_t errlen)
{
    const char *m = c != NULL ? PQerrorMessage(c) : "out of memory";
    size_t n = strcspn(m, "\n");
    snprintf(err, errlen, "%s: %.*s", what, (int)n, m);
}

/* Every transaction of the store: READ COMMITTED whatever the database's default (a DBA may set
 * REPEATABLE READ or SERIALIZABLE). Each statement reads what committed before it, so a read
 * after a lock is granted sees what the lock's holder wrote: the schema after another process's
 * migration, a tour's checkpoints after a create committed. Under a snapshot taken at the
 * transaction's first statement, a push would read stale rows and fail at the change counter
 * once another push had committed (retried, then 503 under load). */
#define PG_BEGIN "BEGIN ISOLATION LEVEL READ COMMITTED"

/*
 * What PostgreSQL says to a connection besides answers (NOTICE, WARNING): libpq printed it raw to
 * stderr, as "NOTICE:  relation ... already exists, skipping" at each start of a second process.
 * A warning becomes one of the server's log lines; the rest (NOTICE, INFO: routine) is dropped.
 */
static void pg_notice(void *arg, const PGresult *res)
{
    (void)arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (severity != NULL && strcmp(severity, "WARNING") == 0 && message != NULL)
        fprintf(stderr, "fieldsync-server: warn: PostgreSQL: %.*s\n", (int)strcspn(message, "\n"),
                message);
}

/* Creates or migrates the schema, once, under an advisory lock: several processes may start at
 * the same moment. */
static fsa_status_t init_schema(PGconn *c, char *err, size_t errlen)
{
    PGresult *r = NULL;
    fsa_status_t st = run0(c, PG_BEGIN, 0, NULL);
    if (st == FSA_OK)
        st = run0(c, "SELECT pg_advisory_xact_lock(" PG_SCHEMA_LOCK ")", 0, NULL);
    if (st == FSA_OK)
        st = run0(c,
                  "CREATE TABLE IF NOT EXISTS fsa_schema("
                  " one integer PRIMARY KEY CHECK (one = 1), version integer NOT NULL)",
                  0, NULL);
    if (st == FSA_OK)
        st = run(c, "SELECT version FROM fsa_schema", 0, NULL, &r);
    int64_t ver = st == FSA_OK && PQntuples(r) == 1 ? int_value(r, 0, 0) : 0;
    PQclear(r);
    if (st == FSA_OK && ver > PG_SCHEMA) {
        snprintf(err, errlen, "the database has schema version %lld; this server knows 1..%d",
                 (long long)ver, PG_SCHEMA);
        (void)run0(c, "ROLLBACK", 0, NULL);
        return FSA_ESCHEMA;
    }
    if (st == FSA_OK && ver < PG_SCHEMA) {
        /* Schema 2 was the first PostgreSQL schema (SQLite's 2 with the same tables); every step
         * since is idempotent (IF NOT EXISTS), so the whole text creates or migrates. */
        PGresult *m = PQexec(c, pg_schema_sql);
        if (m == NULL || PQresultStatus(m) != PGRES_COMMAND_OK)
            st = m == NULL ? FSA_ENOMEM : map_result(m);
        PQclear(m);
        if (st == FSA_OK)
            st = run0(c,
                      "INSERT INTO fsa_schema VALUES (1, 3) ON CONFLICT (one) DO UPDATE"
                      " SET version = EXCLUDED.version",
                      0, NULL);
    }
    if (st == FSA_OK)
        st = run0(c, "COMMIT", 0, NULL);
    if (st != FSA_OK) {
        conn_error(c, "cannot create the schema", err, errlen);
        (void)run0(c, "ROLLBACK", 0, NULL);
    }
    return st;
}

fsa_status_t fsa__store_pg_open(const fsa_port_t *port, const char *uri, unsigned conns,
                                fsa_store_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (conns > PG_CONNS_MAX)
        conns = PG_CONNS_MAX; /* a few connections per process keep max_connections in reach */
    pg_store_t *s = fsa_calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return FSA_ENOMEM;
    }
    s->head.ops = &pg_ops;
    s->head.port = port;
    s->port = port;
    fsa_status_t st = port->mutex_new(port->ctx, &s->lock);
    if (st == FSA_OK)
        st = port->cond_new(port->ctx, &s->cond);
    s->uri = fsa_strdup(uri);
    if (st != FSA_OK || s->uri == NULL) {
        snprintf(err, errlen, "out of memory");
        st = FSA_ENOMEM;
        goto out;
    }
    /* libpq quotes a malformed URI, or its bad part, in its message: say only what is wrong,
     * never its words (without a message, libpq ran out of memory). */
    char *why = NULL;
    PQconninfoOption *parsed = PQconninfoParse(uri, &why);
    if (parsed == NULL && why == NULL) {
        snprintf(err, errlen, "out of memory");
        st = FSA_ENOMEM;
    } else if (parsed == NULL) {
        snprintf(err, errlen,
                 "cannot connect to PostgreSQL: the database URI is malformed or names a "
                 "parameter this libpq does not know (libpq's message is not shown: it quotes the "
                 "URI, password and all)");
        st = FSA_EINVAL;
    }
    PQconninfoFree(parsed);
    PQfreemem(why);
    for (unsigned i = 0; i < conns && st == FSA_OK; i++) {
        PGconn *c = PQconnectdb(uri);
        if (c != NULL && PQstatus(c) == CONNECTION_OK) {
            stmts_attach(c);
            PQsetNoticeReceiver(c, pg_notice, NULL);
        }
        s->conns[i].c = c;
        s->conns[i].head.store = &s->head;
        s->nconns = i + 1;
        if (c == NULL || PQstatus(c) != CONNECTION_OK) {
            conn_error(c, "cannot connect to PostgreSQL", err, errlen);
            st = FSA_EIO;
        } else if (i == 0) {
            st = init_schema(c, err, errlen);
        }
    }
out:
    if (st != FSA_OK) {
        pg_close(&s->head);
        return st;
    }
    *out = &s->head;
    return FSA_OK;
}

/* ---- transactions ---- */

/*
 * The outcomes logged since the last flush, in one statement per LOG_ROWS_MAX rows (a round trip
 * per op before): sent before anything reads the op log (a claim that finds its op_id, a find),
 * before a savepoint is begun, released or rolled back to (so that a rolled back group's rows go
 * with it) and before the commit. Each row replaces only its own claim (status -1); a row that
 * finds none was logged by another transaction first: FSA_EBUSY, the batch is tried again (as
 * when each was sent alone).
 */
#define LOG_ROWS_MAX 100
#define LOG_COLS 10
/* log_flush's text takes at most 8 bytes per placeholder (", ($999" and "$9999)" included): true
 * while the placeholders have at most 4 digits. */
_Static_assert(LOG_ROWS_MAX *LOG_COLS < 10000, "log_flush's sql buffer holds 4-digit placeholders");
static fsa_status_t log_flush(pg_conn_t *c)
{
    fsa_status_t st = FSA_OK;
    size_t done = 0;
    while (st == FSA_OK && done < c->nlogs) {
        size_t rows = c->nlogs - done < LOG_ROWS_MAX ? c->nlogs - done : LOG_ROWS_MAX;
        static const char head[] = "INSERT INTO ops(op_id, device, seq, type, id, status, version,"
                                   " code, message, received) VALUES ";
        static const char tail[] = " ON CONFLICT (op_id) DO UPDATE SET status = EXCLUDED.status,"
                                   " version = EXCLUDED.version, code = EXCLUDED.code,"
                                   " message = EXCLUDED.message WHERE ops.status = -1";
        char sql[sizeof head + sizeof tail + LOG_ROWS_MAX * LOG_COLS * 8];
        const char *p[LOG_ROWS_MAX * LOG_COLS];
        size_t n = (size_t)snprintf(sql, sizeof sql, "%s", head);
        // cppcheck-suppress knownConditionTrueFalse ; rows >= 1 here (done < c->nlogs)
        for (size_t i = 0; i < rows; i++) {
            const logrow_t *l = &c->logs[done + i];
            const char *v[LOG_COLS] = {l->op_id,  l->device,  l->seq,  l->type,    l->id,
                                       l->status, l->version, l->code, l->message, l->received};
            for (size_t k = 0; k < LOG_COLS; k++) {
                size_t at = i * LOG_COLS + k;
                p[at] = v[k];
                n += (size_t)snprintf(sql + n, sizeof sql - n, "%s$%zu%s",
                                      k == 0 ? (i == 0 ? "(" : ", (") : ", ", at + 1,
                                      k + 1 == LOG_COLS ? ")" : "");
            }
        }
        snprintf(sql + n, sizeof sql - n, "%s", tail);
        /* Sent whole: its text changes with the rows (run() would prepare each one). */
        PGresult *r = PQexecParams(c->c, sql, (int)(rows * LOG_COLS), NULL, p, NULL, NULL, 0);
        ExecStatusType es = r != NULL ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (es != PGRES_COMMAND_OK)
            st = r == NULL ? FSA_ENOMEM : map_result(r);
        else if (changed(r) != (long)rows)
            st = FSA_EBUSY;
        PQclear(r);
        done += rows;
    }
    c->nlogs = 0;
    return st;
}

/* The slot of (type, id): where it is, or the empty one where it would go. */
static size_t touched_slot(const pg_conn_t *c, const char *type, const char *id)
{
    size_t mask = c->nslots - 1;
    size_t i = fsa__store_entity_hash(type, id) & mask;
    while (c->slots[i] >= 0) {
        const touched_t *t = &c->touched[c->slots[i]];
        if (strcmp(t->id, id) == 0 && strcmp(t->type, type) == 0)
            break;
        i = (i + 1) & mask;
    }
    return i;
}

/* Fills the slots anew from touched[0..ntouched): after a growth, or a savepoint's rollback. */
static void touched_reindex(pg_conn_t *c)
{
    for (size_t i = 0; i < c->nslots; i++)
        c->slots[i] = -1;
    for (size_t k = 0; k < c->ntouched; k++)
        c->slots[touched_slot(c, c->touched[k].type, c->touched[k].id)] = (int32_t)k;
}

static fsa_status_t pg_begin(fsa_store_t *store, fsa__store_tx_t **tx, char *err, size_t errlen)
{
    pg_conn_t *c = conn_take(PG(store));
    c->ntouched = 0;
    touched_reindex(c);
    c->nlogs = 0;
    fsa_status_t st = run0(c->c, PG_BEGIN, 0, NULL);
    if (st != FSA_OK) {
        conn_error(c->c, "cannot begin a transaction", err, errlen);
        conn_give(PG(store), c);
        return st;
    }
    *tx = &c->head;
    return FSA_OK;
}

static fsa_status_t touch(pg_conn_t *c, const char *type, const char *id)
{
    if (c->nslots > 0) {
        size_t i = touched_slot(c, type, id);
        if (c->slots[i] >= 0) {
            c->touched[c->slots[i]].last = ++c->touches;
            return FSA_OK;
        }
    }
    if (c->ntouched >= INT32_MAX / 4)
        return FSA_ETOOLARGE;
    touched_t *t = fsa_array_grow(c->touched, &c->cap, c->ntouched, sizeof *t, 64, 0);
    if (t == NULL)
        return FSA_ENOMEM;
    c->touched = t;
    if (2 * (c->ntouched + 1) > c->nslots) {
        size_t ns = c->nslots > 0 ? 2 * c->nslots : 128;
        int32_t *slots = fsa_realloc(c->slots, ns * sizeof *slots);
        if (slots == NULL)
            return FSA_ENOMEM;
        c->slots = slots;
        c->nslots = ns;
        touched_reindex(c);
    }
    touched_t *e = &c->touched[c->ntouched];
    snprintf(e->type, sizeof e->type, "%s", type);
    snprintf(e->id, sizeof e->id, "%s", id);
    e->last = ++c->touches;
    c->slots[touched_slot(c, type, id)] = (int32_t)c->ntouched;
    c->ntouched++;
    return FSA_OK;
}

static int by_last_touch(const void *a, const void *b)
{
    uint64_t x = ((const touched_t *)a)->last, y = ((const touched_t *)b)->last;
    return (x > y) - (x < y);
}

/* Takes the batch's change numbers (holding the counter's row lock until COMMIT) and stamps each
 * touched entity with one, in the order of their last change in the batch. */
static fsa_status_t stamp_changes(pg_conn_t *c)
{
    size_t unique = c->ntouched;
    if (unique == 0)
        return FSA_OK;
    qsort(c->touched, unique, sizeof *c->touched, by_last_touch);
    char k[24];
    snprintf(k, sizeof k, "%zu", unique);
    const char *p1[] = {k};
    PGresult *r = NULL;
    fsa_status_t st = run(
        c->c, "UPDATE change_counter SET last = last + $1 WHERE one = 1 RETURNING last", 1, p1, &r);
    if (st != FSA_OK)
        return st;
    int64_t last = PQntuples(r) == 1 ? int_value(r, 0, 0) : -1;
    PQclear(r);
    if (last < (int64_t)unique)
        return FSA_EIO;
    for (size_t i = 0; i < unique && st == FSA_OK; i++) {
        char chg[24];
        int64_t number = last - (int64_t)unique + 1 + (int64_t)i;
        snprintf(chg, sizeof chg, "%lld", (long long)number);
        const char *p[] = {c->touched[i].type, c->touched[i].id, chg};
        st = run0(c->c, "UPDATE entities SET chg = $3 WHERE type = $1 AND id = $2", 3, p);
    }
    return st;
}

static fsa_status_t pg_commit(fsa__store_tx_t *tx, char *err, size_t errlen)
{
    pg_conn_t *c = CONN(tx);
    fsa_status_t st = log_flush(c);
    if (st == FSA_OK)
        st = stamp_changes(c);
    if (st == FSA_OK)
        st = run0(c->c, "COMMIT", 0, NULL);
    if (st != FSA_OK) {
        conn_error(c->c, "commit failed", err, errlen);
        (void)run0(c->c, "ROLLBACK", 0, NULL);
    }
    conn_give(PG(tx->store), c);
    return st;
}

static void pg_abort(fsa__store_tx_t *tx)
{
    pg_conn_t *c = CONN(tx);
    c->nlogs = 0;
    (void)run0(c->c, "ROLLBACK", 0, NULL);
    conn_give(PG(tx->store), c);
}

static fsa_status_t pg_savepoint(fsa__store_tx_t *tx, fsa__store_savepoint_t what)
{
    pg_conn_t *c = CONN(tx);
    fsa_status_t st = log_flush(c);
    if (st != FSA_OK)
        return st;
    if (what == FSA__SP_BEGIN) {
        c->sp_touched = c->ntouched;
        return run0(c->c, "SAVEPOINT grp", 0, NULL);
    }
    if (what == FSA__SP_RELEASE)
        return run0(c->c, "RELEASE SAVEPOINT grp", 0, NULL);
    c->ntouched = c->sp_touched;
    touched_reindex(c);
    return run0(c->c, "ROLLBACK TO SAVEPOINT grp", 0, NULL);
}

/* ---- entities and the op log ---- */

static fsa_status_t pg_load_entity(fsa__store_tx_t *tx, const char *type, const char *id,
                                   int64_t *version, char **fields, char *owner,
                                   fsa_model_keys_t *keys)
{
    *version = 0;
    *fields = NULL;
    if (owner != NULL)
        owner[0] = '\0';
    if (keys != NULL)
        memset(keys, 0, sizeof *keys);
    const char *p[] = {type, id};
    PGresult *r = NULL;
    fsa_status_t st = run(CONN(tx)->c,
                          "SELECT version, fields, owner, site, person, parent FROM entities"
                          " WHERE type = $1 AND id = $2 FOR UPDATE",
                          2, p, &r);
    if (st == FSA_OK && PQntuples(r) == 1) {
        *version = int_value(r, 0, 0);
        *fields = dup_value(r, 0, 1);
        if (*fields == NULL)
            st = FSA_ENOMEM;
        if (owner != NULL)
            snprintf(owner, FSA_ID_BYTES, "%s", PQgetvalue(r, 0, 2));
        if (keys != NULL) {
            snprintf(keys->site, sizeof keys->site, "%s", PQgetvalue(r, 0, 3));
            snprintf(keys->person, sizeof keys->person, "%s", PQgetvalue(r, 0, 4));
            snprintf(keys->parent, sizeof keys->parent, "%s", PQgetvalue(r, 0, 5));
        }
    }
    PQclear(r);
    return st;
}

static fsa_status_t pg_write_entity(fsa__store_tx_t *tx, const char *type, const char *id,
                                    bool exists, int64_t version, const char *fields,
                                    int64_t now_ms, const char *owner, const fsa_model_keys_t *keys)
{
    pg_conn_t *c = CONN(tx);
    char v[24], m[24];
    snprintf(v, sizeof v, "%lld", (long long)version);
    snprintf(m, sizeof m, "%lld", (long long)now_ms);
    const char *site = keys->site[0] ? keys->site : NULL;
    const char *person = keys->person[0] ? keys->person : NULL;
    const char *parent = keys->parent[0] ? keys->parent : NULL;
    const char *p[] = {type, id, v, m, fields, site, person, parent, owner};
    PGresult *r = NULL;
    /* The change number is stamped at commit (stamp_changes); until then it is NULL, which no
     * pull's "chg > cursor" matches, and only this transaction sees the row anyway. */
    fsa_status_t st =
        exists ? run(c->c,
                     "UPDATE entities SET version = $3, mdtz = $4, fields = $5, chg = NULL,"
                     " site = $6, person = $7, parent = $8 WHERE type = $1 AND id = $2",
                     8, p, &r)
               : run(c->c,
                     "INSERT INTO entities(type, id, version, mdtz, fields, chg, site, person,"
                     " parent, owner) VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, $9)"
                     " ON CONFLICT DO NOTHING",
                     9, p, &r);
    /* No row: a concurrent transaction created the entity after our look (or, for an update,
     * cannot happen under the row lock). The retry of the batch sees it and answers conflict. */
    if (st == FSA_OK && changed(r) != 1)
        st = FSA_EBUSY;
    PQclear(r);
    if (st == FSA_OK)
        st = touch(c, type, id);
    return st;
}

static fsa_status_t pg_touch_children(fsa__store_tx_t *tx, const char *parent_id)
{
    pg_conn_t *c = CONN(tx);
    const char *p[] = {parent_id};
    PGresult *r = NULL;
    fsa_status_t st = run(c->c,
                          "SELECT id FROM entities WHERE parent = $1 AND type = 'jobneed'"
                          " FOR UPDATE",
                          1, p, &r);
    int n = st == FSA_OK ? PQntuples(r) : 0;
    for (int i = 0; i < n && st == FSA_OK; i++)
        st = touch(c, "jobneed", PQgetvalue(r, i, 0));
    PQclear(r);
    return st;
}

static fsa_status_t pg_find_op(fsa__store_tx_t *tx, const char *op_id, fsa__store_logged_t *out)
{
    memset(out, 0, sizeof *out);
    fsa_status_t fst = log_flush(CONN(tx));
    if (fst != FSA_OK)
        return fst;
    const char *p[] = {op_id};
    PGresult *r = NULL;
    fsa_status_t st = run(CONN(tx)->c,
                          "SELECT status, version, code, message, type, id FROM ops"
                          " WHERE op_id = $1",
                          1, p, &r);
    if (st == FSA_OK && PQntuples(r) == 1) {
        out->found = true;
        int64_t v = int_value(r, 0, 0);
        out->status =
            (v >= 0 && v < FSA__RESULT_COUNT) ? (fsa_result_status_t)v : FSA_RESULT_REJECTED;
        out->version = int_value(r, 0, 1);
        snprintf(out->code, sizeof out->code, "%s", PQgetvalue(r, 0, 2));
        snprintf(out->message, sizeof out->message, "%s", PQgetvalue(r, 0, 3));
        snprintf(out->type, sizeof out->type, "%s", PQgetvalue(r, 0, 4));
        snprintf(out->id, sizeof out->id, "%s", PQgetvalue(r, 0, 5));
    }
    PQclear(r);
    return st;
}

static const char *type_or_unknown(const fsa_op_t *op)
{
    return (unsigned)op->type < FSA__TYPE_COUNT ? fsa_type_name(op->type) : "?";
}

static fsa_status_t pg_claim_op(fsa__store_tx_t *tx, const char *device, const fsa_op_t *op,
                                int64_t now_ms, fsa__store_logged_t *out)
{
    memset(out, 0, sizeof *out);
    char seq[24], m[24];
    snprintf(seq, sizeof seq, "%lld", (long long)op->seq);
    snprintf(m, sizeof m, "%lld", (long long)now_ms);
    const char *p[] = {op->op_id, device, seq, type_or_unknown(op), op->id, m};
    PGresult *r = NULL;
    /* status -1: claimed by a transaction that has not logged the outcome yet; never committed
     * so, because the claimer logs the outcome before its commit. */
    fsa_status_t st = run(CONN(tx)->c,
                          "INSERT INTO ops(op_id, device, seq, type, id, status, version, code,"
                          " message, received) VALUES ($1, $2, $3, $4, $5, -1, 0, '', '', $6)"
                          " ON CONFLICT (op_id) DO NOTHING",
                          6, p, &r);
    long n = st == FSA_OK ? changed(r) : 0;
    PQclear(r);
    if (st != FSA_OK || n == 1)
        return st;
    return pg_find_op(tx, op->op_id, out);
}

static fsa_status_t pg_log_op(fsa__store_tx_t *tx, const char *device, const fsa_op_t *op,
                              const fsa_codec_result_t *res, int64_t now_ms)
{
    pg_conn_t *c = CONN(tx);
    logrow_t *nl = fsa_array_grow(c->logs, &c->logcap, c->nlogs, sizeof *nl, 64, 0);
    if (nl == NULL)
        return FSA_ENOMEM;
    c->logs = nl;
    logrow_t *l = &c->logs[c->nlogs];
    snprintf(l->op_id, sizeof l->op_id, "%s", op->op_id);
    snprintf(l->device, sizeof l->device, "%s", device);
    snprintf(l->seq, sizeof l->seq, "%lld", (long long)op->seq);
    l->type = type_or_unknown(op);
    snprintf(l->id, sizeof l->id, "%s", op->id);
    snprintf(l->status, sizeof l->status, "%d", (int)res->status);
    snprintf(l->version, sizeof l->version, "%lld", (long long)res->version);
    snprintf(l->code, sizeof l->code, "%s", res->code);
    snprintf(l->message, sizeof l->message, "%s", res->message);
    snprintf(l->received, sizeof l->received, "%lld", (long long)now_ms);
    c->nlogs++;
    /* A batch's rows go in a few statements, not one each (log_flush). */
    return c->nlogs >= LOG_ROWS_MAX ? log_flush(c) : FSA_OK;
}

/* ---- reads and the rest ---- */

/* Records what a scoped device was sent on this page, in pg_pull's transaction. */
static fsa_status_t mark_delivered(pg_conn_t *c, const char *device, const fsa_codec_pull_t *out,
                                   const int64_t *chgs)
{
    fsa_status_t st = FSA_OK;
    for (size_t i = 0; i < out->count && st == FSA_OK; i++) {
        const fsa_codec_change_t *ch = &out->changes[i];
        char g[24];
        snprintf(g, sizeof g, "%lld", (long long)chgs[i]);
        const char *p[] = {device, fsa_type_name(ch->type), ch->id, ch->gone ? g : NULL};
        st = run0(c->c,
                  "INSERT INTO delivered(device, type, id, gone_chg) VALUES ($1, $2, $3, $4)"
                  " ON CONFLICT (device, type, id) DO UPDATE SET gone_chg = EXCLUDED.gone_chg",
                  4, p);
    }
    return st;
}

/* The scoped pull of store_sqlite.c's R_SCOPED, in PostgreSQL's words (see there why a gone is
 * sent again, and in which place). The lists are arrays (= ANY(ARRAY(...))), not IN (subquery):
 * the planner then knows their size and reads each rule through its index (measured: 0.7 ms
 * instead of 47 ms with 100,000 entities). */
#define PG_SITES "ANY(ARRAY(SELECT json_array_elements_text($4::json)))"
#define PG_PEOPLE "ANY(ARRAY(SELECT json_array_elements_text($5::json)))"
#define PG_SCOPED_SQL                                                                              \
    "WITH cand(type, id, vis, gone_chg) AS ("                                                      \
    "  SELECT type, id, 1, NULL::bigint FROM entities WHERE site = " PG_SITES " AND chg > $1"      \
    "   AND type = 'attendance'"                                                                   \
    "  UNION ALL SELECT type, id, 1, NULL FROM entities WHERE person = " PG_PEOPLE                 \
    "   AND chg > $1 AND type <> 'attendance'"                                                     \
    "  UNION ALL SELECT c.type, c.id, 1, NULL FROM entities par JOIN entities c"                   \
    "   ON c.parent = par.id AND c.type = 'jobneed'"                                               \
    "   WHERE par.person = " PG_PEOPLE " AND par.type = 'jobneed' AND c.chg > $1"                  \
    "  UNION ALL SELECT type, id, 1, NULL FROM entities WHERE owner = $2 AND chg > $1"             \
    "  UNION ALL SELECT e.type, e.id, 0, d.gone_chg FROM delivered d JOIN entities e"              \
    "   ON e.type = d.type AND e.id = d.id WHERE d.device = $2 AND e.chg > $1"                     \
    "   AND (d.gone_chg IS NULL OR d.gone_chg > $1)),"                                             \
    " best(type, id, vis, gone_chg) AS"                                                            \
    "  (SELECT type, id, max(vis), max(gone_chg) FROM cand GROUP BY type, id)"                     \
    " SELECT e.type, e.id, e.version, e.mdtz, e.fields,"                                           \
    "  CASE b.vis WHEN 1 THEN e.chg ELSE coalesce(b.gone_chg, e.chg) END AS pos, b.vis"            \
    " FROM best b JOIN entities e ON e.type = b.type AND e.id = b.id ORDER BY pos LIMIT $3"
#define PG_STR_(x) #x
#define PG_STR(x) PG_STR_(x)
#define PG_UNSCOPED_SQL                                                                            \
    "SELECT type, id, version, mdtz, fields, chg AS pos, 1 AS vis FROM entities"                   \
    " WHERE chg > $1 AND (type <> 'attendance' OR owner IS NULL OR owner = $2)"                    \
    " ORDER BY chg LIMIT $3"
/* libpq holds a query's whole result in the server's memory: up to the limit's 1,001 changes of
 * up to FSA_LIMIT_FIELDS_BYTES each (about a GiB), of which a page sends 4 MiB. So only the rows
 * that pg_pull's loop reads come back: those whose predecessors' costs (fields and
 * FSA_STORE_CHANGE_OVERHEAD, as fsa__store_page_fits counts them) add up to at most a page, and
 * the first two (a page holds one change whatever its size, and the next tells that there is
 * more). The loop's first refused row is among them: its predecessors fit. */
#define PG_OVERHEAD PG_STR(FSA_STORE_CHANGE_OVERHEAD)
#define PG_PAGE PG_STR(FSA_STORE_PAGE_BYTES)
#define PG_PAGE_SQL(rows)                                                                          \
    "SELECT type, id, version, mdtz, fields, pos, vis FROM (SELECT r.*, row_number() OVER w AS n," \
    " coalesce(sum(octet_length(r.fields) + " PG_OVERHEAD ") OVER"                                 \
    " (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before"                          \
    " FROM (" rows ") r WINDOW w AS (ORDER BY r.pos)) page"                                        \
    " WHERE n <= 2 OR before <= " PG_PAGE " ORDER BY pos"

static fsa_status_t pg_pull(fsa_store_t *store, const char *device, const fsa_store_scope_t *scope,
                            int64_t since, unsigned limit, fsa_codec_pull_t *out,
                            int64_t *next_cursor)
{
    out->changes = fsa_calloc(limit, sizeof *out->changes);
    int64_t *chgs = scope != NULL ? fsa_calloc(limit, sizeof *chgs) : NULL;
    if (out->changes == NULL || (scope != NULL && chgs == NULL)) {
        fsa_free(chgs);
        fsa_codec_pull_free(out);
        return FSA_ENOMEM;
    }
    char s_since[24], s_limit[24];
    snprintf(s_since, sizeof s_since, "%lld", (long long)since);
    snprintf(s_limit, sizeof s_limit, "%u", limit + 1); /* one more tells whether there is more */
    const char *p[] = {s_since, device, s_limit, scope != NULL ? scope->sites_json : NULL,
                       scope != NULL ? scope->people_json : NULL};
    pg_conn_t *c = conn_take(PG(store));
    PGresult *r = NULL;
    fsa_status_t st = FSA_OK;
    bool in_tx = false;
    if (scope != NULL) {
        /* A scoped pull reads and records what it sent in one transaction, under a lock on its
         * device: two pulls of one device at once (a retry while the first still runs, in any
         * process) run one after the other, each reading what the one before recorded. Were
         * they to overlap, the older read could write last: a gone over the newer pull's
         * "sent with its fields", after which the entity's next leave of the scope would never
         * be sent; and their rows, locked in different orders, could deadlock. */
        /* READ COMMITTED (PG_BEGIN): the read's snapshot must be taken after the lock is
         * granted, not at the transaction's first statement. */
        st = run0(c->c, PG_BEGIN, 0, NULL);
        in_tx = st == FSA_OK;
        if (st == FSA_OK)
            st = run0(c->c, "SELECT pg_advisory_xact_lock(" PG_DELIVERED_LOCK ", hashtext($1))", 1,
                      &device);
        if (st == FSA_OK)
            st = run(c->c, PG_PAGE_SQL(PG_SCOPED_SQL), 5, p, &r);
    } else {
        st = run(c->c, PG_PAGE_SQL(PG_UNSCOPED_SQL), 3, p, &r);
    }

    int64_t last = since;
    size_t bytes = 0;
    int rows = st == FSA_OK ? PQntuples(r) : 0;
    for (int i = 0; i < rows && st == FSA_OK; i++) {
        if (out->count == limit ||
            !fsa__store_page_fits(&bytes, out->count, (size_t)PQgetlength(r, i, 4))) {
            out->more = true;
            break;
        }
        fsa_codec_change_t *ch = &out->changes[out->count];
        if (fsa_type_parse(PQgetvalue(r, i, 0), &ch->type) != FSA_OK) {
            st = FSA_ECORRUPT;
            break;
        }
        snprintf(ch->id, sizeof ch->id, "%s", PQgetvalue(r, i, 1));
        ch->version = int_value(r, i, 2);
        ch->mdtz_ms = int_value(r, i, 3);
        ch->gone = int_value(r, i, 6) == 0;
        if (!ch->gone) {
            ch->fields = dup_value(r, i, 4);
            if (ch->fields == NULL) {
                st = FSA_ENOMEM;
                break;
            }
        }
        last = int_value(r, i, 5);
        if (chgs != NULL)
            chgs[out->count] = last;
        out->count++;
    }
    PQclear(r);
    if (st == FSA_OK && scope != NULL && out->count > 0) {
        fsa__store_pull_gap();
        st = mark_delivered(c, device, out, chgs);
    }
    if (in_tx && st == FSA_OK)
        st = run0(c->c, "COMMIT", 0, NULL);
    if (in_tx && st != FSA_OK)
        (void)run0(c->c, "ROLLBACK", 0, NULL);
    conn_give(PG(store), c);
    fsa_free(chgs);
    if (st != FSA_OK) {
        fsa_codec_pull_free(out);
        return st;
    }
    *next_cursor = last;
    return FSA_OK;
}

static fsa_status_t pg_get(fsa_store_t *store, fsa_type_t type, const char *id,
                           fsa_codec_change_t *out)
{
    const char *p[] = {fsa_type_name(type), id};
    pg_conn_t *c = conn_take(PG(store));
    PGresult *r = NULL;
    fsa_status_t st = run(
        c->c, "SELECT version, mdtz, fields FROM entities WHERE type = $1 AND id = $2", 2, p, &r);
    conn_give(PG(store), c);
    if (st == FSA_OK && PQntuples(r) == 1) {
        out->type = type;
        snprintf(out->id, sizeof out->id, "%s", id);
        out->version = int_value(r, 0, 0);
        out->mdtz_ms = int_value(r, 0, 1);
        out->fields = dup_value(r, 0, 2);
        if (out->fields == NULL)
            st = FSA_ENOMEM;
    } else if (st == FSA_OK) {
        st = FSA_ENOTFOUND;
    }
    PQclear(r);
    if (st != FSA_OK)
        fsa_codec_change_clear(out);
    return st;
}

static fsa_status_t pg_counts(fsa_store_t *store, int64_t *entities, int64_t *ops,
                              int64_t *last_change)
{
    pg_conn_t *c = conn_take(PG(store));
    PGresult *r = NULL;
    fsa_status_t st = run(c->c,
                          "SELECT (SELECT count(*) FROM entities), (SELECT count(*) FROM ops),"
                          " (SELECT coalesce(max(chg), 0) FROM entities)",
                          0, NULL, &r);
    conn_give(PG(store), c);
    if (st == FSA_OK && PQntuples(r) == 1) {
        *entities = int_value(r, 0, 0);
        *ops = int_value(r, 0, 1);
        *last_change = int_value(r, 0, 2);
    }
    PQclear(r);
    return st;
}

static fsa_status_t pg_nonce(fsa_store_t *store, const char *device, const char *nonce,
                             int64_t expires_ms, int64_t now_ms, bool *replay)
{
    char e[24], n[24];
    snprintf(e, sizeof e, "%lld", (long long)expires_ms);
    snprintf(n, sizeof n, "%lld", (long long)now_ms);
    const char *p[] = {device, nonce, e, n};
    pg_conn_t *c = conn_take(PG(store));
    PGresult *r = NULL;
    /* A concurrent insert of the same nonce by another process waits for that one's commit and
     * then finds the row: a replay, exactly once fresh. */
    fsa_status_t st = run(c->c,
                          "INSERT INTO nonces(device, nonce, expires) VALUES ($1, $2, $3)"
                          " ON CONFLICT (device, nonce) DO UPDATE SET expires = EXCLUDED.expires"
                          " WHERE nonces.expires < $4",
                          4, p, &r);
    if (st == FSA_OK)
        *replay = changed(r) == 0;
    PQclear(r);
    if (st == FSA_OK) {
        /* Incremental cleanup: a few expired rows per check, skipping rows another process is
         * deleting. A failure here loses nothing. */
        const char *q[] = {n};
        (void)run0(c->c,
                   "DELETE FROM nonces WHERE (device, nonce) IN (SELECT device, nonce FROM nonces"
                   " WHERE expires < $1 LIMIT 32 FOR UPDATE SKIP LOCKED)",
                   1, q);
    }
    conn_give(PG(store), c);
    return st;
}

static fsa_status_t pg_nonce_seen(fsa_store_t *store, const char *device, const char *nonce,
                                  int64_t now_ms, bool *seen)
{
    char n[24];
    snprintf(n, sizeof n, "%lld", (long long)now_ms);
    const char *p[] = {device, nonce, n};
    pg_conn_t *c = conn_take(PG(store));
    PGresult *r = NULL;
    fsa_status_t st = run(
        c->c, "SELECT 1 FROM nonces WHERE device = $1 AND nonce = $2 AND expires >= $3", 3, p, &r);
    conn_give(PG(store), c);
    *seen = st == FSA_OK && PQntuples(r) > 0;
    PQclear(r);
    return st;
}

static fsa_status_t pg_sweep_ops(fsa_store_t *store, int64_t before_ms, unsigned max_rows,
                                 int64_t *deleted)
{
    char b[24], m[24];
    snprintf(b, sizeof b, "%lld", (long long)before_ms);
    snprintf(m, sizeof m, "%u", max_rows);
    const char *p[] = {b, m};
    pg_conn_t *c = conn_take(PG(store));
    PGresult *r = NULL;
    fsa_status_t st = run(c->c,
                          "DELETE FROM ops WHERE op_id IN (SELECT op_id FROM ops WHERE received <"
                          " $1 AND status >= 0 ORDER BY received LIMIT $2 FOR UPDATE SKIP LOCKED)",
                          2, p, &r);
    conn_give(PG(store), c);
    if (st == FSA_OK)
        *deleted = changed(r);
    PQclear(r);
    return st;
}

static const fsa__store_ops_t pg_ops = {
    .version = FSA__STORE_OPS_VERSION,
    .name = "postgresql",
    .close = pg_close,
    .begin = pg_begin,
    .commit = pg_commit,
    .abort = pg_abort,
    .savepoint = pg_savepoint,
    .load_entity = pg_load_entity,
    .write_entity = pg_write_entity,
    .touch_children = pg_touch_children,
    .find_op = pg_find_op,
    .claim_op = pg_claim_op,
    .log_op = pg_log_op,
    .pull = pg_pull,
    .get = pg_get,
    .counts = pg_counts,
    .nonce = pg_nonce,
    .nonce_seen = pg_nonce_seen,
    .sweep_ops = pg_sweep_ops,
};
