/* Benchmark: journal record throughput (attendance check-ins) against a bare SQLite insert, and
 * the floor of any journal that checks its ops against the model (floor_record). */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "port/alloc.h"
#include "storage/journal.h"
#include "storage/libs.h"
#include "storage/model.h"

static double now_s(void)
{
    return (double)fsa_port_posix()->mono_now(NULL).ns / 1e9;
}

/* This process's CPU seconds (user + system) so far. On a machine loaded by other work the wall
 * clock of a loop also counts the time the scheduler gave to others; its CPU time does not. */
static double cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The CPU seconds of the last timed loop (bare_sqlite or journal_record). */
static double last_cpu_s;

static const char ATT_FMT[] = "{\"people_id\":\"guard-%05d\",\"site_id\":\"site-042\","
                              "\"kind\":\"checkin\",\"at\":%d,\"lat\":52.52,\"lon\":13.405,"
                              "\"accuracy_m\":8}";

/* The bare side: a table of one text column with the same pragmas as the journal (WAL, FULL or
 * NORMAL), one transaction per row; the statement prepared once. */
typedef struct bare {
    sqlite3 *db;
    sqlite3_stmt *ins;
    char *payload;
} bare_t;

/* Opens *db at path in WAL mode with FULL or NORMAL commits, after the setup statements first
 * (a page size) and makes its one table (table); false when it cannot be opened. */
static bool open_wal(sqlite3 **db, const char *path, const char *first, int sync_full,
                     const char *table)
{
    /* No mutex of SQLite's own, as the journal's connection (storage/db.h): like for like. */
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        return false;
    sqlite3_exec(*db, first, NULL, NULL, NULL);
    sqlite3_exec(*db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    sqlite3_exec(*db, sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", NULL,
                 NULL, NULL);
    sqlite3_exec(*db, table, NULL, NULL, NULL);
    return true;
}

static bool bare_open(bare_t *b, const char *path, size_t row_bytes, int sync_full)
{
    memset(b, 0, sizeof *b);
    if (!open_wal(&b->db, path, "", sync_full, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"))
        return false;
    b->payload = fsa_malloc(row_bytes + 1);
    if (b->payload == NULL ||
        sqlite3_prepare_v2(b->db, "INSERT INTO t(v) VALUES(?1)", -1, &b->ins, NULL) != SQLITE_OK)
        return false;
    memset(b->payload, 'x', row_bytes);
    b->payload[row_bytes] = '\0';
    return true;
}

static void bare_close(bare_t *b)
{
    sqlite3_finalize(b->ins);
    sqlite3_close(b->db);
    fsa_free(b->payload);
}

/* Inserts n rows; returns the seconds they took (their CPU seconds in last_cpu_s). */
static double bare_sqlite(bare_t *b, int n)
{
    double t0 = now_s(), c0 = cpu_s();
    for (int i = 0; i < n; i++) {
        sqlite3_bind_text(b->ins, 1, b->payload, -1, SQLITE_STATIC);
        if (sqlite3_step(b->ins) != SQLITE_DONE)
            fprintf(stderr, "bare insert failed: %s\n", sqlite3_errmsg(b->db));
        sqlite3_reset(b->ins);
    }
    double dt = now_s() - t0;
    last_cpu_s = cpu_s() - c0;
    return dt;
}

static fsa_journal_t *journal_open(const char *path, int sync_full)
{
    fsa_journal_t *j;
    fsa_journal_opts_t o = {.create = true, .sync_normal = !sync_full};
    char err[256];
    if (fsa_journal_open(fsa_port_posix(), path, &o, &j, err, sizeof err) != FSA_OK) {
        fprintf(stderr, "open: %s\n", err);
        return NULL;
    }
    return j;
}

/* Records check-ins [from, from + n); returns the seconds they took (CPU: last_cpu_s). */
static double journal_record(fsa_journal_t *j, int from, int n)
{
    double t0 = now_s(), c0 = cpu_s();
    for (int i = from; i < from + n; i++) {
        char id[32], fields[256];
        snprintf(id, sizeof id, "att-%08d", i);
        snprintf(fields, sizeof fields, ATT_FMT, i % 1000, i);
        fsa_rec_t rec;
        if (fsa_journal_create(j, FSA_TYPE_ATTENDANCE, id, fields, NULL, &rec) != FSA_OK)
            fprintf(stderr, "record failed: %s\n", rec.error);
    }
    double dt = now_s() - t0;
    last_cpu_s = cpu_s() - c0;
    return dt;
}

/*
 * The floor: the least that any journal recording these ops can do, whatever its schema. Each
 * record, in one transaction: read the entity's current fields (one seek), check and apply the op
 * with the model (fsa_model_apply, as the journal does), make its op id, and write ONE row, the op
 * with the entity's new fields, into ONE b-tree keyed by entity, which the seek reads too. No
 * outbox index, no change log, no entity row of its own: what the journal's readers (an entity's
 * pending ops, the queue's counts, the listeners) need is left out. The row (~305 bytes) is a
 * little smaller than the bare insert's. Same pragmas and page size as the journal; its
 * checkpoints run in its commits, as the bare insert's do (the journal's run on a thread of their
 * own). The journal's ratio below the floor's is what its schema costs; a goal near or above the
 * floor's needs a cheaper check of each op as well as fewer b-trees.
 */
typedef struct floor_side {
    sqlite3 *db;
    sqlite3_stmt *begin, *commit, *last, *ins;
    int64_t seq;
} floor_t;

static bool floor_open(floor_t *f, const char *path, int sync_full)
{
    memset(f, 0, sizeof *f);
    if (!open_wal(&f->db, path, "PRAGMA page_size=2048", sync_full,
                  "CREATE TABLE ops(type INTEGER, id TEXT, seq INTEGER, op_id TEXT, at_ms INTEGER,"
                  " fields TEXT, local TEXT, PRIMARY KEY(type, id, seq)) WITHOUT ROWID"))
        return false;
    return sqlite3_prepare_v2(f->db, "BEGIN IMMEDIATE", -1, &f->begin, NULL) == SQLITE_OK &&
           sqlite3_prepare_v2(f->db, "COMMIT", -1, &f->commit, NULL) == SQLITE_OK &&
           sqlite3_prepare_v2(f->db,
                              "SELECT local FROM ops WHERE type=?1 AND id=?2 "
                              "ORDER BY seq DESC LIMIT 1",
                              -1, &f->last, NULL) == SQLITE_OK &&
           sqlite3_prepare_v2(f->db, "INSERT INTO ops VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)", -1,
                              &f->ins, NULL) == SQLITE_OK;
}

static void floor_close(floor_t *f)
{
    sqlite3_finalize(f->begin);
    sqlite3_finalize(f->commit);
    sqlite3_finalize(f->last);
    sqlite3_finalize(f->ins);
    sqlite3_close(f->db);
}

/* One step of a statement that returns no row. A failure ends the benchmark: a record that failed
 * must not count as one made. */
static void floor_step(floor_t *f, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "bench_journal: floor: %s\n", sqlite3_errmsg(f->db));
        exit(1);
    }
}

/* Records check-ins [from, from + n) as the journal_record loop does, at the floor (CPU:
 * last_cpu_s). */
static double floor_record(floor_t *f, int from, int n)
{
    double t0 = now_s(), c0 = cpu_s();
    for (int i = from; i < from + n; i++) {
        fsa_op_t op = {.kind = FSA_OP_CREATE, .type = FSA_TYPE_ATTENDANCE};
        char fields[256];
        snprintf(op.id, sizeof op.id, "att-%08d", i);
        snprintf(fields, sizeof fields, ATT_FMT, i % 1000, i);
        op.json = fields;
        if (fsa_uuid8(fsa_port_posix(), (uint64_t)i, op.op_id) != FSA_OK) {
            fprintf(stderr, "bench_journal: floor: no op id\n");
            exit(1);
        }
        floor_step(f, f->begin);
        sqlite3_bind_int(f->last, 1, (int)op.type);
        sqlite3_bind_text(f->last, 2, op.id, -1, SQLITE_STATIC);
        char *cur = NULL, *next = NULL;
        if (sqlite3_step(f->last) == SQLITE_ROW)
            cur = fsa_strdup((const char *)sqlite3_column_text(f->last, 0));
        sqlite3_reset(f->last);
        fsa_model_err_t merr;
        if (fsa_model_apply(&op, cur, 0, FSA_APPLY_REPLAY, &next, &merr) != FSA_OK) {
            fprintf(stderr, "bench_journal: floor: %s\n", merr.message);
            exit(1);
        }
        sqlite3_bind_int(f->ins, 1, (int)op.type);
        sqlite3_bind_text(f->ins, 2, op.id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(f->ins, 3, ++f->seq);
        sqlite3_bind_text(f->ins, 4, op.op_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(f->ins, 5, fsa_port_posix()->wall_now(NULL).ms);
        sqlite3_bind_text(f->ins, 6, fields, -1, SQLITE_STATIC);
        sqlite3_bind_text(f->ins, 7, next, -1, SQLITE_STATIC);
        floor_step(f, f->ins);
        fsa_model_free(next);
        fsa_free(cur);
        floor_step(f, f->commit);
    }
    double dt = now_s() - t0;
    last_cpu_s = cpu_s() - c0;
    return dt;
}

/* The BENCH lines of one side (what: "" for the journal, "floor_" for the floor): ran records in
 * secs against the bare insert's bare_secs, and at NORMAL their CPU seconds. With NORMAL a record
 * waits for no disk: its CPU time is its cost, whatever else runs on the machine. (With FULL the
 * fsync's wait is the cost: no CPU figure.) */
static void bench_lines(const char *what, const char *mode, int ran, double secs, double bare_secs,
                        double cpu, double bare_cpu)
{
    printf("BENCH {\"name\":\"journal.record_%s%s\",\"value\":%.0f,\"unit\":\"ops/s\","
           "\"baseline\":%.0f,\"baseline_name\":\"sqlite.insert_%s\",\"ratio\":%.2f}\n",
           what, mode, ran / secs, ran / bare_secs, mode, bare_secs / secs);
    if (strcmp(mode, "normal") == 0 && cpu > 0 && bare_cpu > 0)
        printf("BENCH {\"name\":\"journal.record_%snormal_cpu\",\"value\":%.0f,"
               "\"unit\":\"ops/cpu-s\",\"baseline\":%.0f,"
               "\"baseline_name\":\"sqlite.insert_normal_cpu\",\"ratio\":%.2f}\n",
               what, ran / cpu, ran / bare_cpu, bare_cpu / cpu);
}

/*
 * Before the timed rounds, each side writes WARMUP rows untimed, on the connection the rounds then
 * use: a new WAL file grows with each commit until its first checkpoint, and a sync that also
 * grows the file costs the disk a metadata write besides the data (here up to twice the time of
 * one that overwrites). The bare insert's WAL (1.3 frames of 4 KiB a commit) grows through its
 * first ~770 commits, the journal's (~8 frames of 2 KiB) through ~125: timed from an empty file,
 * a short run compared the journal's steady state with the bare insert's growth (ratios of
 * 1.1-1.26 at FULL with 2,000 records, against ~0.8 past it). The agent's daemon and an app keep
 * their journal open: the steady state is what they see.
 */
#define WARMUP 1000

/*
 * Usage: bench_journal [N] [PROFILE]   N timed records per side and setting (default 2000), in 8
 * alternated rounds, after WARMUP untimed ones on the same connections.
 * PROFILE, for a profiler (callgrind, perf, strace) only: "journal-normal", "bare-normal",
 * "journal-fsync" or "bare-fsync" runs that one side with that setting, N records from a new file
 * (no warm-up), and prints no BENCH line (there is no baseline to compare with).
 */
int main(int argc, char **argv)
{
    /* As every program does first thing (storage/libs.h): SQLite takes its configuration only
     * before its first use, and the bare loop below would otherwise be first, leaving the journal
     * on SQLite's own allocator, unlike the agent. Both sides run under the same configuration. */
    fsa_libs_use_allocator();
    int n = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 2000;
    if (n <= 0)
        n = 2000;
    const char *profile = argc > 2 ? argv[2] : NULL;
    char dir[] = "/tmp/fsa-bench-XXXXXX";
    if (mkdtemp(dir) == NULL)
        return 1;
    char p1[64], p2[64], p3[64], p4[64];
    snprintf(p1, sizeof p1, "%s/bare.db", dir);
    snprintf(p2, sizeof p2, "%s/journal.db", dir);
    snprintf(p3, sizeof p3, "%s/bare-normal.db", dir);
    snprintf(p4, sizeof p4, "%s/journal-normal.db", dir);
    /* A row of the journal's size: the attendance fields appear twice (outbox payload and the
     * entity's local view) plus the op's fixed columns. */
    size_t row = 2 * (sizeof ATT_FMT + 8) + 120;
    if (profile != NULL) {
        bool journal = strncmp(profile, "journal-", 8) == 0;
        const char *mode = strchr(profile, '-');
        bool full = mode != NULL && strcmp(mode, "-fsync") == 0;
        if (mode == NULL || (!full && strcmp(mode, "-normal") != 0) ||
            (!journal && strncmp(profile, "bare-", 5) != 0)) {
            fprintf(stderr, "bench_journal: unknown profile '%s'\n", profile);
            return 2;
        }
        double s;
        if (journal) {
            fsa_journal_t *j = journal_open(p2, full);
            if (j == NULL)
                return 1;
            s = journal_record(j, 0, n);
            fsa_journal_close(j);
        } else {
            bare_t b;
            if (!bare_open(&b, p1, row, full))
                return 1;
            s = bare_sqlite(&b, n);
            bare_close(&b);
        }
        printf("%s: %d records in %.3f s (%.3f s of CPU)\n", profile, n, s, last_cpu_s);
    } else {
        for (int full = 1; full >= 0; full--) {
            bare_t b;
            floor_t f;
            char pf[64];
            snprintf(pf, sizeof pf, "%s/floor-%d.db", dir, full);
            fsa_journal_t *j = journal_open(full ? p2 : p4, full);
            if (j == NULL || !bare_open(&b, full ? p1 : p3, row, full) || !floor_open(&f, pf, full))
                return 1;
            (void)bare_sqlite(&b, WARMUP);
            (void)journal_record(j, 0, WARMUP);
            (void)floor_record(&f, 0, WARMUP);
            /* Alternate in rounds so that a drift in the machine's speed hits all three alike. */
            const int rounds = 8;
            double bare_s = 0, rec_s = 0, bare_cpu = 0, rec_cpu = 0, floor_s = 0, floor_cpu = 0;
            for (int r = 0; r < rounds; r++) {
                bare_s += bare_sqlite(&b, n / rounds);
                bare_cpu += last_cpu_s;
                rec_s += journal_record(j, WARMUP + r * (n / rounds), n / rounds);
                rec_cpu += last_cpu_s;
                floor_s += floor_record(&f, WARMUP + r * (n / rounds), n / rounds);
                floor_cpu += last_cpu_s;
            }
            fsa_journal_close(j);
            bare_close(&b);
            floor_close(&f);
            int ran = n / rounds * rounds; /* the records the rounds made */
            double bare = ran / bare_s, rec = ran / rec_s;
            const char *mode = full ? "fsync" : "normal";
            printf("journal record (%s): %.0f ops/s; bare SQLite insert of %zu bytes: %.0f ops/s; "
                   "ratio %.2f (goal >= %s)\n",
                   mode, rec, row, bare, rec / bare, full ? "0.95" : "0.5");
            bench_lines("", mode, ran, rec_s, bare_s, rec_cpu, bare_cpu);
            double fl = ran / floor_s;
            printf("floor (%s: one row, one b-tree, the model's check): %.0f ops/s, ratio %.2f; "
                   "the journal is %.2f of it\n",
                   mode, fl, fl / bare, rec / fl);
            bench_lines("floor_", mode, ran, floor_s, bare_s, floor_cpu, bare_cpu);
        }
    }
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
