/* Tests for storage/journal.c and db.c under I/O faults: each write, sync, open and read fails. */
#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>

#include "port/alloc.h"
#include "tests/storage/journal_test_util.h"
#include "tests/storage/vfs_fault.h"

/*
 * Method. Two journals record the same workload side by side: the faulty one through the fault
 * VFS with a fault armed, and a shadow that is never faulted. A call that returns FSA_OK on the
 * faulty journal is made on the shadow too (and must succeed there); a call that fails while
 * the fault fired is left out of the shadow; a call that fails with no fault firing must fail
 * the same way on the shadow (it depends on an op that a fault kept out). So the shadow holds
 * exactly what the faulty journal promised, and at every checkpoint of the test their outboxes,
 * entities and sync state must be the same, row for row. The sweep moves the fault over every
 * counted call (N = 1, 2, ...) until a whole run goes by without it firing.
 */

static const fsa_wall_t START = {INT64_C(1764090000000)};
#define MAX_OPS 128
#define AUDIT_MS (24 * 3600 * 1000)

/* ---- a minimal server: applies each op once, in the order it is pushed ---- */

typedef struct fake_server {
    struct {
        char op_id[FSA_OP_ID_BYTES];
        int64_t version;
    } seen[MAX_OPS];
    size_t nseen;
    struct {
        fsa_type_t type;
        char id[FSA_ID_BYTES];
        int64_t version;
    } ent[32];
    size_t nent;
} fake_server_t;

static void server_answer(fake_server_t *s, const fsa_op_t *op, fsa_op_result_t *r)
{
    memset(r, 0, sizeof *r);
    memcpy(r->op_id, op->op_id, sizeof r->op_id);
    for (size_t i = 0; i < s->nseen; i++) {
        if (strcmp(s->seen[i].op_id, op->op_id) == 0) {
            r->status = FSA_RESULT_DUPLICATE;
            r->original = FSA_RESULT_APPLIED;
            r->version = s->seen[i].version;
            return;
        }
    }
    size_t k = 0;
    while (k < s->nent && !(s->ent[k].type == op->type && strcmp(s->ent[k].id, op->id) == 0))
        k++;
    if (k == s->nent) {
        assert_true(s->nent < 32);
        s->ent[k].type = op->type;
        memcpy(s->ent[k].id, op->id, sizeof s->ent[k].id);
        s->ent[k].version = 0;
        s->nent++;
    }
    assert_true(s->nseen < MAX_OPS);
    r->status = FSA_RESULT_APPLIED;
    r->version = ++s->ent[k].version;
    memcpy(s->seen[s->nseen].op_id, op->op_id, sizeof op->op_id);
    s->seen[s->nseen++].version = r->version;
}

/* ---- one journal of the pair ---- */

typedef struct side {
    char path[160];
    fsa_journal_t *j;
    fsa_journal_opts_t opts;
    fake_server_t server;
    fsa_op_t batch[FSA_JOURNAL_GROUP_MAX];
    size_t nbatch;
} side_t;

static void side_drop_batch(side_t *s)
{
    for (size_t i = 0; i < s->nbatch; i++)
        fsa_op_clear(&s->batch[i]);
    s->nbatch = 0;
}

typedef struct run {
    fsa_sim_t *sim;
    fsa_port_t *port;
    side_t faulty, shadow;
    vfs_fault_plan_t plan;
    /* op ids the faulty journal reported recorded, and how many ops those calls recorded */
    char ok_ids[MAX_OPS][FSA_OP_ID_BYTES];
    size_t nok_ids;
    int64_t ok_ops;
    int failed_calls;   /* calls that failed while the fault fired */
    int after_fault_ok; /* calls that succeeded on the faulty journal after its first fault */
} run_t;

static void quiet_log(void *arg, fsa_log_level_t level, const char *msg)
{
    (void)arg;
    (void)level;
    (void)msg;
}

/* ---- the workload ---- */

typedef enum step_kind {
    S_CREATE,
    S_SET,
    S_MERGE,
    S_INCREMENT,
    S_TRANSITION,
    S_APPEND,
    S_GROUP,
    S_CHECKPOINT,
    S_STATE,
    S_BATCH,    /* outbox read of the next batch */
    S_INFLIGHT, /* marks the batch in flight */
    S_APPLY,    /* applies the server's answers to the batch */
    S_COMPACT,
    S_REOPEN, /* close and open again */
} step_kind_t;

static const char *const STEP_NAMES[] = {
    "create",     "set",          "merge",          "increment",
    "transition", "append",       "group",          "checkpoint update",
    "state set",  "outbox batch", "mark in flight", "apply results",
    "compact",    "reopen",
};

typedef struct step {
    step_kind_t kind;
    fsa_type_t type;
    const char *id;
    const char *field; /* field; to (transition); key (state) */
    const char *json;
    int64_t n; /* increment by; append max_len; state value */
} step_t;

#define T_TICKET FSA_TYPE_TICKET
#define T_JOB FSA_TYPE_JOBNEED
#define T_ATT FSA_TYPE_ATTENDANCE

static const step_t WORKLOAD[] = {
    {S_CREATE, T_TICKET, "T1", NULL, "{\"priority\":\"HIGH\"}", 0},
    {S_CREATE, T_JOB, "TOUR", NULL, "{}", 0},
    {S_CREATE, T_JOB, "CP1", NULL, "{\"parent_id\":\"TOUR\",\"seqno\":1}", 0},
    {S_SET, T_TICKET, "T1", NULL, "{\"assignedto\":\"p42\"}", 0},
    {S_MERGE, T_JOB, "TOUR", "other_info", "{\"route\":\"north\",\"gates\":[1,2]}", 0},
    {S_INCREMENT, T_TICKET, "T1", "level", NULL, 2},
    {S_TRANSITION, T_TICKET, "T1", "OPEN", NULL, 0},
    {S_APPEND, T_TICKET, "T1", "ticketlog", "{\"note\":\"called the gate\"}", 8},
    {S_GROUP, 0, NULL, NULL, NULL, 0},
    {S_CHECKPOINT, T_JOB, "CP1", NULL, "{\"expirytime\":45}", 0},
    {S_STATE, 0, NULL, "last_sync_ms", NULL, 1234},
    {S_BATCH, 0, NULL, NULL, NULL, 0},
    {S_INFLIGHT, 0, NULL, NULL, NULL, 0},
    {S_APPLY, 0, NULL, NULL, NULL, 0},
    {S_COMPACT, 0, NULL, NULL, NULL, 0},
    {S_SET, T_TICKET, "T1", NULL, "{\"priority\":\"LOW\"}", 0},
    {S_REOPEN, 0, NULL, NULL, NULL, 0},
    {S_CREATE, T_TICKET, "T2", NULL, "{}", 0},
    {S_TRANSITION, T_JOB, "CP1", "INPROGRESS", NULL, 0},
    {S_MERGE, T_JOB, "CP1", "other_info", "{\"photo\":\"p1.jpg\",\"ok\":true}", 0},
    {S_BATCH, 0, NULL, NULL, NULL, 0},
    {S_INFLIGHT, 0, NULL, NULL, NULL, 0},
    {S_APPLY, 0, NULL, NULL, NULL, 0},
    {S_INCREMENT, T_TICKET, "T2", "level", NULL, 1},
    {S_TRANSITION, T_TICKET, "T2", "RESOLVED", NULL, 0},
};
#define WORKLOAD_STEPS (sizeof WORKLOAD / sizeof WORKLOAD[0])

/* After the run: recording goes on, on the same handle and after a reopen. */
static const step_t MORE_SAME_HANDLE[] = {
    {S_CREATE, T_TICKET, "T9", NULL, "{\"priority\":\"LOW\"}", 0},
    {S_INCREMENT, T_TICKET, "T9", "level", NULL, 3},
};
static const step_t MORE_AFTER_REOPEN[] = {
    {S_SET, T_TICKET, "T9", NULL, "{\"assignedto\":\"p7\"}", 0},
    {S_GROUP, 0, NULL, NULL, NULL, 0},
};

static const char GROUP_ATT[] = "{\"people_id\":\"p42\",\"site_id\":\"hq\",\"kind\":\"checkin\","
                                "\"at\":1764090000,\"lat\":52.5,\"lon\":13.4}";

/* The group step: one attendance created, the tour started, the ticket bumped (a fresh attendance
 * id each time, so the group can be recorded again later). */
static fsa_status_t record_group(fsa_journal_t *j, int serial, fsa_rec_t *rec, int *nops)
{
    fsa_op_t ops[3] = {
        {.kind = FSA_OP_CREATE, .type = T_ATT, .json = (char *)(uintptr_t)GROUP_ATT},
        {.kind = FSA_OP_TRANSITION, .type = T_JOB, .id = "TOUR", .to = "INPROGRESS"},
        {.kind = FSA_OP_INCREMENT, .type = T_TICKET, .id = "T1", .field = "level", .by = 1},
    };
    snprintf(ops[0].id, sizeof ops[0].id, "A%d", serial);
    /* After the first group the tour is in progress: the later groups leave the transition out. */
    if (serial > 0) {
        ops[1] = ops[2];
        *nops = 2;
    } else {
        *nops = 3;
    }
    return fsa_journal_record_group(j, ops, (size_t)*nops, NULL, rec);
}

/* Runs one step on one side. *nops: ops recorded when it is a recording call that succeeded. */
static fsa_status_t do_step(run_t *r, side_t *s, const step_t *st, int serial, fsa_rec_t *rec,
                            int *nops)
{
    *nops = 1;
    memset(rec, 0, sizeof *rec);
    fsa_journal_t *j = s->j;
    switch (st->kind) {
    case S_CREATE: return fsa_journal_create(j, st->type, st->id, st->json, NULL, rec);
    case S_SET: return fsa_journal_set(j, st->type, st->id, st->json, NULL, rec);
    case S_MERGE: return fsa_journal_merge(j, st->type, st->id, st->field, st->json, NULL, rec);
    case S_INCREMENT:
        return fsa_journal_increment(j, st->type, st->id, st->field, st->n, NULL, rec);
    case S_TRANSITION: return fsa_journal_transition(j, st->type, st->id, st->field, NULL, rec);
    case S_APPEND:
        return fsa_journal_append(j, st->type, st->id, st->field, "ticket_history", st->json, st->n,
                                  NULL, rec);
    case S_GROUP: return record_group(j, serial, rec, nops);
    case S_CHECKPOINT:
        *nops = 2;
        return fsa_journal_checkpoint_update(j, st->id, st->json, NULL, rec);
    default: break;
    }
    *nops = 0;
    switch (st->kind) {
    case S_STATE: return fsa_journal_sync_done(j, st->n);
    case S_BATCH:
        side_drop_batch(s);
        return fsa_outbox_next_batch(j, s->batch, FSA_JOURNAL_GROUP_MAX, 1 << 20, &s->nbatch);
    case S_INFLIGHT: return fsa_outbox_mark_inflight(j, s->batch, s->nbatch);
    case S_APPLY: {
        fsa_op_result_t res[FSA_JOURNAL_GROUP_MAX];
        for (size_t i = 0; i < s->nbatch; i++)
            server_answer(&s->server, &s->batch[i], &res[i]);
        fsa_status_t st2 = fsa_outbox_apply_results(j, res, s->nbatch);
        if (st2 == FSA_OK)
            side_drop_batch(s);
        return st2;
    }
    case S_COMPACT: return fsa_outbox_compact(j, AUDIT_MS, NULL);
    case S_REOPEN: {
        fsa_journal_close(s->j);
        s->j = NULL;
        char err[320] = "";
        fsa_status_t st2 = fsa_journal_open(r->port, s->path, &s->opts, &s->j, err, sizeof err);
        if (st2 != FSA_OK) {
            snprintf(rec->error, sizeof rec->error, "%s", err);
            assert_null(s->j);
        }
        return st2;
    }
    default: fail_msg("unknown step %d", (int)st->kind);
    }
    return FSA_EINVAL;
}

static bool is_recording(step_kind_t k)
{
    return k <= S_CHECKPOINT;
}

/* The statuses an injected fault may surface as. */
static void assert_fault_status(const run_t *r, fsa_status_t st, const step_t *step,
                                const fsa_rec_t *rec)
{
    bool ok = st == FSA_EIO || (st == FSA_EFULL && r->plan.flavour == VFS_FAULT_ENOSPC);
    if (getenv("FSA_FAULT_VERBOSE") != NULL)
        fprintf(stderr, "# kinds %u N %lld: %s -> %s: %s\n", r->plan.kinds, (long long)r->plan.nth,
                STEP_NAMES[step->kind], fsa_status_str(st), rec->error);
    if (!ok)
        fail_msg("%s under fault (kinds %u, N %lld) returned %s: %s", STEP_NAMES[step->kind],
                 r->plan.kinds, (long long)r->plan.nth, fsa_status_str(st), rec->error);
    if (is_recording(step->kind) || step->kind == S_REOPEN) {
        /* One line a person can act on: it names the journal. */
        if (strstr(rec->error, r->faulty.path) == NULL)
            fail_msg("%s failed with %s and a message without the journal's path: '%s'",
                     STEP_NAMES[step->kind], fsa_status_str(st), rec->error);
        assert_string_equal(rec->op_id, "");
        assert_int_equal(rec->seq, 0);
    }
    /* A failed fsync leaves the op's fate open until the next write: the message must say so. */
    if (st == FSA_EIO && is_recording(step->kind) && r->plan.kinds == VFS_FAULT_SYNC &&
        strstr(rec->error, "fsync failed") == NULL)
        fail_msg("%s after a failed fsync says: %s", STEP_NAMES[step->kind], rec->error);
    /* A full device is not the journal's budget: syncing would not help, freeing space would. */
    if (st == FSA_EFULL && is_recording(step->kind) &&
        (strstr(rec->error, "disk full") == NULL || strstr(rec->error, r->faulty.path) == NULL))
        fail_msg("%s on a full device says: %s", STEP_NAMES[step->kind], rec->error);
}

/*
 * Runs one step on the faulty journal and mirrors it on the shadow (see the method at the top).
 * Returns whether the fault fired during the step.
 */
static bool mirror_step(run_t *r, const step_t *st, int serial)
{
    fsa_rec_t rec, srec;
    int nops = 0, snops = 0;
    int64_t fired_before = vfs_fault_fired();
    if (r->faulty.j == NULL && st->kind != S_REOPEN) {
        /* The journal could not be opened again (a persistent fault): nothing is recorded. */
        return false;
    }
    fsa_status_t st1 = do_step(r, &r->faulty, st, serial, &rec, &nops);
    bool fired = vfs_fault_fired() > fired_before;
    if (st1 == FSA_OK) {
        if (is_recording(st->kind)) {
            assert_int_not_equal(rec.seq, 0);
            assert_true(r->nok_ids < MAX_OPS);
            memcpy(r->ok_ids[r->nok_ids++], rec.op_id, FSA_OP_ID_BYTES);
            r->ok_ops += nops;
        }
        if (r->failed_calls > 0)
            r->after_fault_ok++;
        fsa_status_t st2 = do_step(r, &r->shadow, st, serial, &srec, &snops);
        if (st2 != FSA_OK)
            fail_msg("%s: faulty journal OK, shadow %s (%s)", STEP_NAMES[st->kind],
                     fsa_status_str(st2), srec.error);
        if (st->kind == S_BATCH)
            assert_int_equal(r->faulty.nbatch, r->shadow.nbatch);
        return fired;
    }
    if (fired) {
        assert_fault_status(r, st1, st, &rec);
        r->failed_calls++;
        if (st->kind == S_BATCH) {
            side_drop_batch(&r->faulty);
            side_drop_batch(&r->shadow);
        }
        return true;
    }
    /* Failed with no fault firing: a consequence of an op kept out earlier, so the shadow, which
     * lacks that op too, must answer the same. */
    fsa_status_t st2 = do_step(r, &r->shadow, st, serial, &srec, &snops);
    if (st2 != st1)
        fail_msg("%s with no fault firing: faulty journal %s (%s), shadow %s (%s)",
                 STEP_NAMES[st->kind], fsa_status_str(st1), rec.error, fsa_status_str(st2),
                 srec.error);
    return false;
}

/* ---- comparing the two journals ---- */

typedef struct text {
    char *buf;
    size_t len, cap;
} text_t;

static void text_add(text_t *t, const char *s)
{
    size_t n = strlen(s);
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *p = fsa_realloc(t->buf, cap);
        assert_non_null(p);
        t->buf = p;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n + 1);
    t->len += n;
}

static void dump_query(sqlite3 *db, const char *sql, text_t *t)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("prepare %s: %s", sql, sqlite3_errmsg(db));
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            const unsigned char *v = sqlite3_column_text(st, i);
            text_add(t, i > 0 ? "|" : "");
            text_add(t, v != NULL ? (const char *)v : "NULL");
        }
        text_add(t, "\n");
    }
    if (rc != SQLITE_DONE)
        fail_msg("step %s: %s", sql, sqlite3_errmsg(db));
    sqlite3_finalize(st);
}

/*
 * What a journal holds, as text: every outbox row but its random or timed members (op_id, the
 * group id itself: only which ops share a group, at_ms, done_ms), every entity, the sync state
 * but the clean-close mark, the done ids, the conflicts and the last seq issued. Read through a
 * connection of its own (the journal may be open: WAL lets it read).
 */
static char *journal_dump(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        fail_msg("open %s: %s", path, sqlite3_errmsg(db));
    text_t t = {0};
    text_add(&t, "outbox:\n");
    dump_query(db,
               "SELECT seq, kind, type, id, CASE WHEN grp = '' THEN 0 ELSE (SELECT min(seq) FROM "
               "outbox g WHERE g.grp = o.grp) END, field, base_version, by_n, from_s, to_s, akey, "
               "max_len, payload, prior, state, attempts, result_version FROM outbox o "
               "ORDER BY seq",
               &t);
    text_add(&t, "entities:\n");
    dump_query(db,
               "SELECT type, id, base, base_version, local_fields FROM entities "
               "ORDER BY type, id",
               &t);
    text_add(&t, "state:\n");
    /* not the journal's own bookkeeping: the clean-close flag, the failed fsyncs, the WAL
     * generations a drain started; nor the op ids' random salt */
    dump_query(db,
               "SELECT k, v FROM sync_state WHERE k NOT IN ('clean_close', 'fsync_failures', "
               "'wal_starts', 'op_id_salt') ORDER BY k",
               &t);
    text_add(&t, "done, conflicts, last seq:\n");
    dump_query(db,
               "SELECT (SELECT count(*) FROM done_ops), (SELECT count(*) FROM conflicts), "
               /* schema 3: the outbox's highest seq, in it or compacted from its top */
               "max(coalesce((SELECT max(seq) FROM outbox), 0), (SELECT coalesce(max(v), 0) "
               "FROM sync_state WHERE k = 'outbox_last_deleted'))",
               &t);
    sqlite3_close(db);
    return t.buf;
}

static void assert_same_journals(const run_t *r, const char *when)
{
    char *a = journal_dump(r->faulty.path);
    char *b = journal_dump(r->shadow.path);
    if (strcmp(a, b) != 0) {
        fprintf(stderr, "faulty journal (kinds %u, N %lld, %s):\n%s\nshadow:\n%s\n", r->plan.kinds,
                (long long)r->plan.nth, when, a, b);
        fsa_free(a);
        fsa_free(b);
        fail_msg("the faulty journal and its shadow differ %s", when);
    }
    fsa_free(a);
    fsa_free(b);
}

/* The faulty journal holds every op it reported recorded, and no other: the last seq issued
 * counts exactly the ops of the calls that returned FSA_OK (a rolled-back transaction gives its
 * seqs back), and each reported op id is in the outbox or, once compacted, in done_ops. */
static void assert_ok_ops_present(const run_t *r)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(r->faulty.path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT max(coalesce((SELECT max(seq) FROM outbox), 0), "
                                        "(SELECT coalesce(max(v), 0) FROM sync_state WHERE k = "
                                        "'outbox_last_deleted')), (SELECT count(*) FROM outbox) + "
                                        "(SELECT count(*) FROM done_ops)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(st, 0), r->ok_ops);
    assert_int_equal(sqlite3_column_int64(st, 1), r->ok_ops);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT (SELECT count(*) FROM outbox WHERE op_id = ?1) + "
                                        "(SELECT count(*) FROM done_ops WHERE op_id = ?1)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    for (size_t i = 0; i < r->nok_ids; i++) {
        sqlite3_bind_text(st, 1, r->ok_ids[i], -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        if (sqlite3_column_int64(st, 0) != 1)
            fail_msg("op %s was reported recorded but is not in the journal", r->ok_ids[i]);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void assert_integrity(fsa_journal_t *j)
{
    char err[256] = "";
    fsa_status_t st = fsa_journal_integrity(j, err, sizeof err);
    if (st != FSA_OK)
        fail_msg("integrity_check: %s (%s)", fsa_status_str(st), err);
}

/* ---- one run ---- */

static void side_open(run_t *r, side_t *s)
{
    char err[320] = "";
    fsa_status_t st = fsa_journal_open(r->port, s->path, &s->opts, &s->j, err, sizeof err);
    if (st != FSA_OK)
        fail_msg("open %s: %s (%s)", s->path, fsa_status_str(st), err);
}

static void run_steps(run_t *r, const step_t *steps, size_t n, int *serial)
{
    for (size_t i = 0; i < n; i++) {
        mirror_step(r, &steps[i], *serial);
        if (steps[i].kind == S_GROUP)
            (*serial)++;
    }
}

/* Syncs both journals with their servers until nothing is pending. */
static void sync_all(run_t *r)
{
    static const step_t round[] = {
        {S_BATCH, 0, NULL, NULL, NULL, 0},
        {S_INFLIGHT, 0, NULL, NULL, NULL, 0},
        {S_APPLY, 0, NULL, NULL, NULL, 0},
        {S_COMPACT, 0, NULL, NULL, NULL, 0},
    };
    for (int i = 0; i < 16; i++) {
        int serial = 0;
        run_steps(r, round, 4, &serial);
        fsa_outbox_stats_t a, b;
        assert_fsa_ok(fsa_outbox_stats(r->faulty.j, &a));
        assert_fsa_ok(fsa_outbox_stats(r->shadow.j, &b));
        assert_int_equal(a.pending, b.pending);
        if (a.pending == 0) {
            assert_int_equal(a.done, 0);
            return;
        }
    }
    fail_msg("the outbox did not drain");
}

/* Like test_dir_make(), in a memory file system when there is one: a sweep creates and deletes
 * thousands of files, which costs seconds on a disk file system and nothing there. */
static void fast_dir_make(test_dir_t *t)
{
    if (access("/dev/shm", W_OK | X_OK) == 0) {
        snprintf(t->dir, sizeof t->dir, "/dev/shm/fsa-test-XXXXXX");
        if (mkdtemp(t->dir) != NULL) {
            snprintf(t->path, sizeof t->path, "%s/journal.db", t->dir);
            return;
        }
    }
    test_dir_make(t);
}

/* Removes a journal and the files SQLite and the journal keep beside it. */
static void remove_journal(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", ".users", ".locks"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char p[200];
        snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
        if (unlink(p) != 0 && errno != ENOENT)
            fail_msg("unlink %s: %s", p, strerror(errno));
    }
}

/*
 * One run of the workload with plan armed on the faulty journal (armed before it is created, so
 * creating and migrating it are exercised too). A persistent fault stays until `recover_after`
 * calls have failed under it (space returns). Returns whether the fault fired at all.
 */
static bool run_once(fsa_sim_t *sim, const char *dir, const vfs_fault_plan_t *plan,
                     int recover_after)
{
    run_t *r = fsa_calloc(1, sizeof *r);
    assert_non_null(r);
    r->sim = sim;
    r->port = fsa_sim_port(sim);
    r->plan = *plan;
    snprintf(r->faulty.path, sizeof r->faulty.path, "%s/faulty.db", dir);
    snprintf(r->shadow.path, sizeof r->shadow.path, "%s/shadow.db", dir);
    r->faulty.opts = (fsa_journal_opts_t){.create = true};
    /* The shadow's durability is not under test: NORMAL spares it an fsync per commit. */
    r->shadow.opts = (fsa_journal_opts_t){.create = true, .sync_normal = true};
    side_open(r, &r->shadow);

    vfs_fault_arm(r->faulty.path, plan);
    int serial = 0;
    static const step_t open_step = {S_REOPEN, 0, NULL, NULL, NULL, 0};
    fsa_rec_t rec;
    int nops;
    fsa_status_t st = do_step(r, &r->faulty, &open_step, 0, &rec, &nops);
    if (st != FSA_OK) {
        assert_true(vfs_fault_fired() > 0);
        assert_fault_status(r, st, &open_step, &rec);
        r->failed_calls++;
    }
    int since_fault = 0; /* steps run since the fault first fired */
    for (size_t i = 0; i < WORKLOAD_STEPS; i++) {
        if (vfs_fault_fired() > 0)
            since_fault++;
        bool cleared = !plan->persistent || since_fault > recover_after;
        if (plan->persistent && cleared)
            vfs_fault_disarm(); /* space returns */
        if (r->faulty.j == NULL && cleared) {
            /* A fault kept the journal from opening; it has cleared, so it opens now. */
            st = do_step(r, &r->faulty, &open_step, 0, &rec, &nops);
            if (st != FSA_OK)
                fail_msg("open after the fault cleared: %s (%s)", fsa_status_str(st), rec.error);
        }
        mirror_step(r, &WORKLOAD[i], serial);
        if (WORKLOAD[i].kind == S_GROUP)
            serial++;
    }
    vfs_fault_disarm();
    bool fired = vfs_fault_fired() > 0;
    if (!plan->persistent && fired)
        assert_int_equal(vfs_fault_fired(), 1);
    if (r->faulty.j == NULL) {
        st = do_step(r, &r->faulty, &open_step, 0, &rec, &nops);
        if (st != FSA_OK)
            fail_msg("open after the fault cleared: %s (%s)", fsa_status_str(st), rec.error);
    }

    /* Right after the run, on the handle that saw the fault. */
    assert_integrity(r->faulty.j);
    assert_same_journals(r, "after the run");
    /* Recording goes on on the same handle. */
    run_steps(r, MORE_SAME_HANDLE, sizeof MORE_SAME_HANDLE / sizeof MORE_SAME_HANDLE[0], &serial);
    assert_int_equal(vfs_fault_fired() > 0, fired);
    if (r->failed_calls > 0) /* the handle that saw a call fail records again */
        assert_true(r->after_fault_ok >=
                    (int)(sizeof MORE_SAME_HANDLE / sizeof MORE_SAME_HANDLE[0]));
    assert_same_journals(r, "after recording on the same handle");

    /* Closed and opened again with no fault: every promised op is there, whole. */
    fsa_journal_close(r->faulty.j);
    r->faulty.j = NULL;
    assert_ok_ops_present(r);
    side_open(r, &r->faulty);
    assert_integrity(r->faulty.j);
    assert_same_journals(r, "after reopening");
    run_steps(r, MORE_AFTER_REOPEN, sizeof MORE_AFTER_REOPEN / sizeof MORE_AFTER_REOPEN[0],
              &serial);

    /* And everything syncs. */
    side_drop_batch(&r->faulty);
    side_drop_batch(&r->shadow);
    sync_all(r);
    assert_same_journals(r, "after the final sync");
    assert_ok_ops_present(r);

    fsa_journal_close(r->faulty.j);
    fsa_journal_close(r->shadow.j);
    remove_journal(r->faulty.path);
    remove_journal(r->shadow.path);
    fsa_free(r);
    return fired;
}

/* ---- the sweeps ---- */

/*
 * How much of a sweep to run: 1 (every N) by default; FSA_TEST_SCALE in (0, 1) runs about that
 * fraction (every 1/scale-th N), and so does an emulated run (FSA_TEST_EMULATED, set by the build
 * when tests run under qemu), at 1/8 unless FSA_TEST_SCALE says otherwise.
 */
static int64_t scale_stride(void)
{
    const char *s = getenv("FSA_TEST_SCALE");
    if (s != NULL && s[0] != '\0') {
        char *end = NULL;
        double scale = strtod(s, &end);
        if (end != s && scale > 0.0 && scale < 1.0)
            return (int64_t)(1.0 / scale + 0.5);
        return 1;
    }
    const char *emu = getenv("FSA_TEST_EMULATED");
    return emu != NULL && emu[0] != '\0' && strcmp(emu, "0") != 0 ? 8 : 1;
}

/* Moves a fault of the plan's kind over N = 1, 1 + stride, ... until a run goes by without it
 * firing. */
static int64_t sweep(const vfs_fault_plan_t *base, int recover_after, int64_t stride,
                     const char *label)
{
    fsa_sim_t *sim = NULL;
    assert_fsa_ok(fsa_sim_new(11, START, "faults", &sim));
    /* One directory for the sweep. The fault VFS matches SQLite's full path: the directory's path
     * is absolute and has no symbolic link in it. */
    test_dir_t dir;
    fast_dir_make(&dir);
    fsa_sim_set_log(sim, quiet_log, NULL);
    fsa_mono_t t0 = fsa_port_posix()->mono_now(NULL);
    if (base->kinds != VFS_FAULT_OPEN) /* a handful of opens: always all of them */
        stride *= scale_stride();
    int64_t points = 0, n = 1;
    for (;; n += stride) {
        if (n > 5000)
            fail_msg("%s: the fault still fires at N = %lld; the workload never ends?", label,
                     (long long)n);
        vfs_fault_plan_t plan = *base;
        plan.nth = n;
        if (!run_once(sim, dir.dir, &plan, recover_after))
            break;
        points++;
    }
    test_dir_remove(&dir);
    fsa_sim_free(sim);
    fprintf(stderr, "# %s: %lld fault points, N = 1 by %lld (none fired at N = %lld), %.2f s\n",
            label, (long long)points, (long long)stride, (long long)n,
            (double)test_real_elapsed_ns(t0) / 1e9);
    assert_true(points > 0);
    return points;
}

static void test_journal__each_write_fails_eio(void **state)
{
    (void)state;
    vfs_fault_plan_t p = {.kinds = VFS_FAULT_WRITE, .flavour = VFS_FAULT_EIO};
    sweep(&p, 0, 1, "write EIO");
}

static void test_journal__each_write_fails_enospc_torn(void **state)
{
    (void)state;
    vfs_fault_plan_t p = {.kinds = VFS_FAULT_WRITE, .flavour = VFS_FAULT_ENOSPC, .torn = true};
    /* Every third N: the EIO sweep takes every one through the same paths; this one adds the
     * half-written page and the full-device status. */
    sweep(&p, 0, 3, "write ENOSPC torn");
}

static void test_journal__each_sync_fails(void **state)
{
    (void)state;
    vfs_fault_plan_t p = {.kinds = VFS_FAULT_SYNC, .flavour = VFS_FAULT_EIO};
    sweep(&p, 0, 1, "sync EIO");
}

static void test_journal__each_open_fails(void **state)
{
    (void)state;
    vfs_fault_plan_t p = {.kinds = VFS_FAULT_OPEN, .flavour = VFS_FAULT_EIO};
    sweep(&p, 0, 1, "open EIO");
}

static void test_journal__each_read_fails(void **state)
{
    (void)state;
    vfs_fault_plan_t p = {.kinds = VFS_FAULT_READ, .flavour = VFS_FAULT_EIO};
    sweep(&p, 0, 1, "read EIO");
}

/* A test of one journal on a quiet sim port, in a fresh directory: lone_open creates it (name in
 * the directory, with o) and returns it open; lone_end removes the directory and the sim. */
typedef struct lone {
    fsa_sim_t *sim;
    test_dir_t dir;
    char path[160];
} lone_t;

static fsa_journal_t *lone_open(lone_t *l, uint64_t seed, const char *name,
                                const fsa_journal_opts_t *o)
{
    assert_fsa_ok(fsa_sim_new(seed, START, "faults", &l->sim));
    fsa_sim_set_log(l->sim, quiet_log, NULL);
    fast_dir_make(&l->dir);
    snprintf(l->path, sizeof l->path, "%s/%s", l->dir.dir, name);
    char err[320];
    fsa_journal_t *j = NULL;
    if (fsa_journal_open(fsa_sim_port(l->sim), l->path, o, &j, err, sizeof err) != FSA_OK)
        fail_msg("open %s: %s", l->path, err);
    return j;
}

static void lone_end(lone_t *l)
{
    test_dir_remove(&l->dir);
    fsa_sim_free(l->sim);
}

/* A journal whose last users did not close it cleanly is checked when it is opened again; a read
 * that fails during that check is the disk failing, not corruption, and the journal opens once
 * the disk reads again. */
static void test_journal__unclean_reopen_read_fails(void **state)
{
    (void)state;
    lone_t l;
    fsa_journal_opts_t o = {.create = true};
    fsa_journal_t *j = lone_open(&l, 12, "unclean.db", &o);
    fsa_sim_t *sim = l.sim;
    const char *path = l.path;
    char err[320];
    fsa_rec_t rec;
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof id, "T%d", i);
        assert_fsa_ok(fsa_journal_create(j, T_TICKET, id, "{\"priority\":\"HIGH\"}", NULL, &rec));
    }
    fsa_journal_close(j);
    int64_t points = 0, n = 1;
    for (;; n++) {
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, "UPDATE sync_state SET v = 0 WHERE k = 'clean_close'",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(db);
        vfs_fault_plan_t plan = {.kinds = VFS_FAULT_READ, .nth = n, .flavour = VFS_FAULT_EIO};
        vfs_fault_arm(path, &plan);
        fsa_status_t st = fsa_journal_open(fsa_sim_port(sim), path, &o, &j, err, sizeof err);
        vfs_fault_disarm();
        if (vfs_fault_fired() == 0) {
            assert_fsa_ok(st);
            fsa_journal_close(j);
            break;
        }
        points++;
        if (st == FSA_OK) {
            fsa_journal_close(j);
        } else if (st != FSA_EIO || strstr(err, path) == NULL) {
            fail_msg("open with the read %lld failing: %s (%s)", (long long)n, fsa_status_str(st),
                     err);
        }
        assert_fsa_ok(fsa_journal_open(fsa_sim_port(sim), path, &o, &j, err, sizeof err));
        assert_integrity(j);
        int64_t pending = 0;
        assert_fsa_ok(fsa_journal_get(j, T_TICKET, "T19", NULL, NULL, &pending));
        assert_int_equal(pending, 1);
        fsa_journal_close(j);
    }
    fprintf(stderr, "# unclean reopen, read EIO: %lld fault points\n", (long long)points);
    assert_true(points > 0);
    lone_end(&l);
}

/* A whole check (fsa_journal_integrity) that cannot read a page or runs out of memory says so:
 * FSA_EIO or FSA_ENOMEM, never FSA_ECORRUPT, which would have a person restore a journal that is
 * whole. Once the disk reads again (or memory returns) the same journal checks out. */
static void test_journal__integrity_check_that_cannot_read_or_allocate(void **state)
{
    (void)state;
    lone_t l;
    fsa_journal_opts_t o = {.create = true};
    fsa_journal_t *j = lone_open(&l, 13, "check.db", &o);
    fsa_rec_t rec;
    for (int i = 0; i < 200; i++) {
        char id[16];
        snprintf(id, sizeof id, "T%d", i);
        assert_fsa_ok(fsa_journal_create(j, T_TICKET, id, "{\"priority\":\"HIGH\"}", NULL, &rec));
    }
    fsa_journal_close(j);
    char err[256];
    int64_t reads = 0;
    for (int64_t n = 1;; n++) {
        /* opened anew each time, so that the check reads the file rather than a warm cache */
        assert_fsa_ok(fsa_journal_open(fsa_sim_port(l.sim), l.path, &o, &j, err, sizeof err));
        vfs_fault_plan_t plan = {.kinds = VFS_FAULT_READ, .nth = n, .flavour = VFS_FAULT_EIO};
        vfs_fault_arm(l.path, &plan);
        err[0] = '\0';
        fsa_status_t st = fsa_journal_integrity(j, err, sizeof err);
        vfs_fault_disarm();
        if (vfs_fault_fired() == 0) {
            assert_fsa_ok(st);
            fsa_journal_close(j);
            break;
        }
        reads++;
        if (st != FSA_EIO || err[0] == '\0')
            fail_msg("the check with the read %lld failing: %s (%s)", (long long)n,
                     fsa_status_str(st), err);
        assert_integrity(j);
        fsa_journal_close(j);
    }
    assert_fsa_ok(fsa_journal_open(fsa_sim_port(l.sim), l.path, &o, &j, err, sizeof err));
    int64_t allocs = 0;
    for (unsigned long n = 1;; n++) {
        fsa_alloc_fail_nth(n);
        err[0] = '\0';
        fsa_status_t st = fsa_journal_integrity(j, err, sizeof err);
        bool fired = fsa_alloc_fault_fired();
        fsa_alloc_fail_nth(0);
        if (!fired) {
            assert_fsa_ok(st);
            break;
        }
        allocs++;
        /* SQLite lives without some of its allocations: the check then ran */
        if (st != FSA_OK && (st != FSA_ENOMEM || err[0] == '\0'))
            fail_msg("the check with the allocation %lu failing: %s (%s)", n, fsa_status_str(st),
                     err);
    }
    assert_integrity(j);
    fsa_journal_close(j);
    fprintf(stderr, "# integrity check: %lld read faults, %lld allocation faults\n",
            (long long)reads, (long long)allocs);
    assert_true(reads > 0);
    assert_true(allocs > 0);
    lone_end(&l);
}

/* Copies the file at from to to, bytes as the OS holds them: what a power cut that kept every
 * write would leave. */
static void copy_bytes(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    (void)fclose(in); /* read only */
    assert_int_equal(fclose(out), 0);
}

/*
 * A failed fsync at COMMIT: the op's WAL frames were written before the fsync failed. The journal
 * then commits a small write of its own over them, so that once that commit is on the disk the
 * op cannot come back. "Power loss" here is a copy of the journal and its -wal as written (no
 * -shm, so SQLite recovers from the WAL), opened as a journal: the op must not be in it (without
 * the follow-up it is: seen). When the follow-up fails too (a device that keeps failing), the
 * message says the op may come back.
 */
static void test_journal__failed_fsync_op_does_not_come_back(void **state)
{
    (void)state;
    lone_t l;
    fsa_journal_opts_t o = {.create = true};
    fsa_journal_t *j = lone_open(&l, 13, "fsync.db", &o);
    fsa_sim_t *sim = l.sim;
    const char *path = l.path;
    char copy[160], from[200], to[200], err[320];
    snprintf(copy, sizeof copy, "%s/after-power-loss.db", l.dir.dir);
    fsa_rec_t rec;
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "T%d", i);
        assert_fsa_ok(fsa_journal_create(j, T_TICKET, id, "{\"priority\":\"HIGH\"}", NULL, &rec));
    }
    /* One failed fsync: the op's COMMIT fails, the journal's own follow-up commit succeeds. */
    vfs_fault_plan_t plan = {.kinds = VFS_FAULT_SYNC, .nth = 1, .flavour = VFS_FAULT_EIO};
    vfs_fault_arm(path, &plan);
    fsa_status_t st = fsa_journal_create(j, T_TICKET, "LOST", "{\"priority\":\"LOW\"}", NULL, &rec);
    vfs_fault_disarm();
    assert_int_equal(vfs_fault_fired(), 1);
    assert_int_equal(vfs_fault_calls(), 2); /* the failed fsync and the follow-up's */
    assert_int_equal(st, FSA_EIO);
    assert_non_null(strstr(rec.error, "fsync failed"));
    assert_non_null(strstr(rec.error, "nothing was recorded"));
    assert_null(strstr(rec.error, "may come back"));
    snprintf(from, sizeof from, "%s-wal", path);
    snprintf(to, sizeof to, "%s-wal", copy);
    copy_bytes(path, copy);
    copy_bytes(from, to);
    fsa_journal_t *after = NULL;
    o.create = false;
    assert_fsa_ok(fsa_journal_open(fsa_sim_port(sim), copy, &o, &after, err, sizeof err));
    assert_int_equal(fsa_journal_get(after, T_TICKET, "LOST", NULL, NULL, NULL), FSA_ENOTFOUND);
    assert_fsa_ok(fsa_journal_get(after, T_TICKET, "T4", NULL, NULL, NULL));
    fsa_journal_close(after);
    /* Again: the follow-up changes its row every time, so it commits and syncs every time. */
    vfs_fault_arm(path, &plan);
    st = fsa_journal_create(j, T_TICKET, "LOST2", "{\"priority\":\"LOW\"}", NULL, &rec);
    vfs_fault_disarm();
    assert_int_equal(st, FSA_EIO);
    assert_int_equal(vfs_fault_calls(), 2);
    assert_non_null(strstr(rec.error, "nothing was recorded"));
    /* A device that keeps failing: the follow-up fails too, and the message says what may be. */
    plan.persistent = true;
    vfs_fault_arm(path, &plan);
    st = fsa_journal_create(j, T_TICKET, "MAYBE", "{\"priority\":\"LOW\"}", NULL, &rec);
    vfs_fault_disarm();
    assert_int_equal(st, FSA_EIO);
    assert_non_null(strstr(rec.error, "may come back"));
    /* Once the device works again, recording goes on. */
    assert_fsa_ok(fsa_journal_create(j, T_TICKET, "T5", "{\"priority\":\"HIGH\"}", NULL, &rec));
    assert_integrity(j);
    fsa_journal_close(j);
    lone_end(&l);
}

/* The clean-close flag of the journal at path, or of a copy of it and its -wal as the OS holds
 * them while the journal is open (what a process that died would leave): -1 when not set. */
static int64_t clean_flag(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT v FROM sync_state WHERE k = 'clean_close'", -1, &st, NULL),
        SQLITE_OK);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/*
 * The marks of an open and of a clean close are written without a sync of their own (storage/db.c,
 * set_clean): an idle open and close sync 3 times (the new WAL's header, the close's checkpoint of
 * the WAL and the database) where they synced 5, and a CLI command that records one op 5 times
 * where it synced 7. A second user's open and close write no mark and sync nothing. The marks are
 * still there: the open's in the bytes the OS holds while the journal is open (a process that dies
 * leaves them, and the next open checks the journal), the close's after the close.
 */
static void test_journal__open_and_close_sync_only_for_the_checkpoint(void **state)
{
    (void)state;
    lone_t l;
    fsa_journal_opts_t o = {.create = true};
    fsa_journal_t *j = lone_open(&l, 14, "marks.db", &o);
    const char *path = l.path;
    fsa_rec_t rec;
    assert_fsa_ok(fsa_journal_create(j, T_TICKET, "T0", "{\"priority\":\"HIGH\"}", NULL, &rec));
    fsa_journal_close(j);
    assert_int_equal(clean_flag(path), 1);

    char err[320];
    vfs_fault_plan_t count = {.kinds = VFS_FAULT_SYNC, .nth = INT64_MAX};
    vfs_fault_arm(path, &count);
    assert_fsa_ok(fsa_journal_open(fsa_sim_port(l.sim), path, &o, &j, err, sizeof err));
    assert_int_equal(vfs_fault_calls(), 1); /* the new WAL's header (SQLite's own) */
    /* A second user: not a write, not a sync. */
    vfs_fault_plan_t writes = {.kinds = VFS_FAULT_SYNC | VFS_FAULT_WRITE, .nth = INT64_MAX};
    vfs_fault_arm(path, &writes);
    fsa_journal_t *second = NULL;
    assert_fsa_ok(fsa_journal_open(fsa_sim_port(l.sim), path, &o, &second, err, sizeof err));
    fsa_journal_close(second);
    assert_int_equal(vfs_fault_calls(), 0);
    vfs_fault_arm(path, &count);

    /* Open, as the OS holds it: marked open. */
    char copy[200], from[240], to[240];
    snprintf(copy, sizeof copy, "%s/as-left.db", l.dir.dir);
    snprintf(from, sizeof from, "%s-wal", path);
    snprintf(to, sizeof to, "%s-wal", copy);
    copy_bytes(path, copy);
    copy_bytes(from, to);
    assert_int_equal(clean_flag(copy), 0);

    /* A record syncs once, its commit; the close twice, its checkpoint. */
    assert_fsa_ok(fsa_journal_create(j, T_TICKET, "T1", "{\"priority\":\"LOW\"}", NULL, &rec));
    assert_int_equal(vfs_fault_calls(), 1);
    fsa_journal_close(j);
    vfs_fault_disarm();
    assert_int_equal(vfs_fault_calls(), 3);
    assert_int_equal(vfs_fault_fired(), 0);
    assert_int_equal(clean_flag(path), 1);
    lone_end(&l);
}

static void test_journal__disk_full_from_n_until_space_returns(void **state)
{
    (void)state;
    vfs_fault_plan_t p = {
        .kinds = VFS_FAULT_WRITE, .flavour = VFS_FAULT_ENOSPC, .persistent = true};
    sweep(&p, 4, 3, "write ENOSPC persistent");
}

/*
 * A full device and the journal's budget, told apart in a statement. A group too large for SQLite's
 * page cache spills pages to the WAL from within its statements; a full device refuses the spill,
 * and the statement fails with SQLITE_FULL, as it does when it passes the budget. The journal's
 * size could not tell them apart (SQLite rolls the whole group back: the size is the journal's
 * before it, far from its budget); the count of refused writes does: "disk full". With the
 * device's space back, the same group passes the budget: "journal full".
 */
static void test_journal__full_device_near_the_budget_is_disk_full(void **state)
{
    (void)state;
    lone_t l;
    fsa_journal_opts_t o = {.create = true, .budget_bytes = 5 * 1024 * 1024};
    fsa_journal_t *j = lone_open(&l, 13, "near.db", &o);
    const char *path = l.path;
    /* 16 jobs of ~180 KB each (three strings under the 64 KiB string limit): ~2.9 MB of
     * payloads and as much of local views, past the 2 MB page cache and past the budget. */
    enum { PART = 60 * 1000 };
    size_t cap = 3 * (PART + 16) + 64;
    char *big = fsa_malloc(cap);
    assert_non_null(big);
    size_t len = (size_t)snprintf(big, cap, "{\"other_info\":{");
    for (int k = 0; k < 3; k++) {
        len += (size_t)snprintf(big + len, cap - len, "%s\"p%d\":\"", k > 0 ? "," : "", k);
        memset(big + len, 'x', PART);
        len += PART;
        big[len++] = '"';
    }
    snprintf(big + len, cap - len, "}}");
    fsa_op_t ops[FSA_JOURNAL_GROUP_MAX];
    memset(ops, 0, sizeof ops);
    for (int i = 0; i < FSA_JOURNAL_GROUP_MAX; i++) {
        ops[i].kind = FSA_OP_CREATE;
        ops[i].type = T_JOB;
        ops[i].json = big;
        snprintf(ops[i].id, sizeof ops[i].id, "BIG%d", i);
    }
    fsa_rec_t rec;
    vfs_fault_plan_t plan = {
        .kinds = VFS_FAULT_WRITE, .nth = 1, .flavour = VFS_FAULT_ENOSPC, .persistent = true};
    vfs_fault_arm(path, &plan);
    fsa_status_t st = fsa_journal_record_group(j, ops, FSA_JOURNAL_GROUP_MAX, NULL, &rec);
    vfs_fault_disarm();
    assert_true(vfs_fault_fired() > 0);
    assert_int_equal(st, FSA_EFULL);
    if (strstr(rec.error, "disk full") == NULL || strstr(rec.error, path) == NULL)
        fail_msg("a full device near the budget says: %s", rec.error);
    /* Space is back: the same group is refused by the budget, and told so. */
    st = fsa_journal_record_group(j, ops, FSA_JOURNAL_GROUP_MAX, NULL, &rec);
    assert_int_equal(st, FSA_EFULL);
    if (strstr(rec.error, "journal full") == NULL)
        fail_msg("the budget reached says: %s", rec.error);
    /* Neither left anything behind; a small op still goes in. */
    int64_t pending = 0;
    assert_int_equal(fsa_journal_get(j, T_JOB, "BIG0", NULL, NULL, &pending), FSA_ENOTFOUND);
    assert_fsa_ok(fsa_journal_create(j, T_TICKET, "SMALL", "{\"priority\":\"LOW\"}", NULL, &rec));
    assert_integrity(j);
    fsa_journal_close(j);
    fsa_free(big);
    remove_journal(path);
    lone_end(&l);
}

int main(void)
{
    if (vfs_fault_install() != SQLITE_OK) {
        fprintf(stderr, "cannot register the fault VFS\n");
        return 1;
    }
    /* No power is cut here: the syncs are counted and failed, but need not wait for the disk. */
    vfs_fault_set_real_sync(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_journal__each_write_fails_eio),
        cmocka_unit_test(test_journal__each_write_fails_enospc_torn),
        cmocka_unit_test(test_journal__each_sync_fails),
        cmocka_unit_test(test_journal__each_open_fails),
        cmocka_unit_test(test_journal__each_read_fails),
        cmocka_unit_test(test_journal__unclean_reopen_read_fails),
        cmocka_unit_test(test_journal__integrity_check_that_cannot_read_or_allocate),
        cmocka_unit_test(test_journal__disk_full_from_n_until_space_returns),
        cmocka_unit_test(test_journal__failed_fsync_op_does_not_come_back),
        cmocka_unit_test(test_journal__open_and_close_sync_only_for_the_checkpoint),
        cmocka_unit_test(test_journal__full_device_near_the_budget_is_disk_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
