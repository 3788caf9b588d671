/*
 * fieldsync tests: allocation failure sweeps (curl's torture mode). Each path (the journal's
 * recording and outbox calls on a real SQLite file, the codec's encoders and decoders, the
 * resolver) runs with its Nth allocation failing, for N = 1, 2, ... until it completes with no
 * fault fired. Where the fault fired, the call must fail with FSA_ENOMEM (the resolver: with
 * FSA_RESOLVE_RETRY), leave the journal as it was before the call, and work when called again;
 * or, only when the failed allocation was SQLite's own (it treats some as benign: page cache,
 * lookaside, schema scratch), succeed with a result equal to the fault-free run's. Leaks are
 * ASan's to find (the suite's sanitizer build).
 */
#define _GNU_SOURCE /* dladdr(): tells which library a failed allocation came from */
#include <dlfcn.h>
#include <execinfo.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "port/alloc.h"
#include "port/sim/sim.h"
#include "storage/journal.h"
#include "storage/libs.h"
#include "sync/codec.h"
#include "sync/devices.h"
#include "sync/engine.h"
#include "sync/resolver.h"
#include "sync/transport.h"
#include "tests/sync/server_harness.h"
#include "tests/test_util.h"

/* ---- text buffers ---- */

/* Fixed and static: the test's own memory must not come from the allocator it counts. */
#define BUF_CAP (48 * 1024)

typedef struct buf {
    char p[BUF_CAP];
    size_t len;
} buf_t;

static void buf_add(buf_t *b, const char *fmt, ...) FSA_PRINTF(2, 3);
static void buf_add(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, BUF_CAP - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= BUF_CAP - b->len)
        fail_msg("a test buffer is too small");
    b->len += (size_t)n;
}

static const char *buf_str(const buf_t *b)
{
    return b->p;
}

static void buf_reset(buf_t *b)
{
    b->len = 0;
    b->p[0] = '\0';
}

/* ---- where the armed allocation failed ---- */

#define FRAMES_MAX 64
static void *frames[FRAMES_MAX];
static int nframes;

static void on_fault(void *arg)
{
    (void)arg;
    nframes = backtrace(frames, FRAMES_MAX);
}

typedef enum site { SITE_OURS, SITE_SQLITE, SITE_CJSON, SITE_CURL, SITE_UNKNOWN } site_t;

static const char *const site_names[] = {"ours", "sqlite", "cjson", "curl", "unknown"};

/* The innermost library on the failed allocation's stack. Our code is never called back by SQLite
 * or cJSON except through the allocator, so a libsqlite3 frame means SQLite's own allocation.
 * Without a library frame, the allocation is ours only when the stack was unwound down to the
 * C library's start (an unwinder without tables for this target stops early: unknown). */
static site_t classify(void)
{
    /* A library that has the allocator as its hooks (libcurl, cJSON) called it itself: its
     * address names it even where its frames cannot be unwound (libcurl on armhf). */
    Dl_info caller;
    if (dladdr(fsa_alloc_fault_caller(), &caller) != 0 && caller.dli_fname != NULL) {
        const char *base = strrchr(caller.dli_fname, '/');
        base = base != NULL ? base + 1 : caller.dli_fname;
        if (strncmp(base, "libcurl", 7) == 0)
            return SITE_CURL;
        if (strncmp(base, "libcjson", 8) == 0)
            return SITE_CJSON;
    }
    bool complete = false;
    site_t lib = SITE_OURS;
    for (int i = 0; i < nframes; i++) {
        Dl_info info;
        if (dladdr(frames[i], &info) == 0 || info.dli_fname == NULL)
            continue;
        const char *base = strrchr(info.dli_fname, '/');
        base = base != NULL ? base + 1 : info.dli_fname;
        if (lib == SITE_OURS && strncmp(base, "libsqlite3", 10) == 0)
            lib = SITE_SQLITE;
        else if (lib == SITE_OURS && strncmp(base, "libcjson", 8) == 0)
            lib = SITE_CJSON;
        else if (lib == SITE_OURS && strncmp(base, "libcurl", 7) == 0)
            lib = SITE_CURL; /* curl's own, or the transport's callbacks that curl calls */
        else if (strncmp(base, "libc.so", 7) == 0 || strncmp(base, "libcmocka", 9) == 0)
            complete = true;
    }
    return lib != SITE_OURS ? lib : complete ? SITE_OURS : SITE_UNKNOWN;
}

/* ---- the sweep ---- */

typedef struct path path_t;

typedef struct step {
    const char *name;
    /* Runs the call; writes what it returned (never op ids: they are random) into out. */
    fsa_status_t (*run)(void *ctx, buf_t *out);
    /* A failure may leave its work done, as long as calling it again works: an open whose
     * schema migration committed before a later allocation failed. Never a recording call. */
    bool may_complete;
} step_t;

struct path {
    const char *name;
    const step_t *steps;
    size_t nsteps;
    void *(*setup)(const path_t *p);         /* fresh state for one run, made without faults */
    void (*teardown)(void *ctx);             /* without faults */
    void (*snapshot)(void *ctx, buf_t *out); /* the durable state, or NULL for pure paths */
    bool pure;   /* no library of ours allocates benignly here: every fault must be an error */
    int segment; /* the journal: which part of the workload (its setup starts from a template) */
    /* A failed call may leave progress behind (a sync cycle: ops marked in flight, batches
     * answered before the failure): only the call again, without a fault, must reach the
     * fault-free state; what it reports then may differ (duplicates). */
    bool progress;
    unsigned long stride; /* sweeps every stride-th N (times the emulator's); 0 is 1 */
};

typedef struct tally {
    unsigned long values;      /* N values run (the last one completes without a fault) */
    unsigned long errors;      /* the fault fired and the call failed with FSA_ENOMEM */
    unsigned long benign;      /* it fired in SQLite, and the call succeeded correctly */
    unsigned long benign_curl; /* it fired under libcurl, and the call succeeded correctly */
    unsigned long curl_other;  /* it fired under libcurl, which then failed otherwise (noted) */
    unsigned long unknown;     /* it fired where the stack could not be read; succeeded correctly */
    unsigned long problems;
    double secs;
} tally_t;

static void problem(tally_t *t, const path_t *p, unsigned long n, const char *step, const char *fmt,
                    ...) FSA_PRINTF(5, 6);
static void problem(tally_t *t, const path_t *p, unsigned long n, const char *step, const char *fmt,
                    ...)
{
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    t->problems++;
    if (t->problems <= 40)
        printf("PROBLEM %s N=%lu step %s: %s\n", p->name, n, step, line);
}

/* The first line where got and want differ, both sides, for a problem report. */
static const char *first_diff(const char *got, const char *want)
{
    static char line[900];
    const char *g = got, *w = want;
    while (*g != '\0' && *g == *w) {
        g++;
        w++;
    }
    while (g > got && g[-1] != '\n') { /* back to the start of the line, on both sides */
        g--;
        w--;
    }
    int gl = (int)strcspn(g, "\n"), wl = (int)strcspn(w, "\n");
    snprintf(line, sizeof line, "got \"%.*s\", expected \"%.*s\"", gl > 400 ? 400 : gl, g,
             wl > 400 ? 400 : wl, w);
    return line;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Every N on the host; under an emulator (FSA_TEST_EMULATED, set by CMake) every 8th; with
 * FSA_TEST_SCALE, a factor such as 0.25, every (1 / factor)th. */
static unsigned long sweep_stride(void)
{
    const char *s = getenv("FSA_TEST_SCALE");
    if (s == NULL || *s == '\0') {
        const char *emu = getenv("FSA_TEST_EMULATED");
        return emu != NULL && *emu != '\0' && strcmp(emu, "0") != 0 ? 8 : 1;
    }
    char *end;
    double scale = strtod(s, &end);
    if (*end != '\0' || !(scale > 0.0))
        fail_msg("FSA_TEST_SCALE=%s is not a positive factor", s);
    if (scale >= 1.0)
        return 1;
    double stride = 1.0 / scale;
    return stride > 64.0 ? 64 : (unsigned long)stride;
}

#define STEPS_MAX 32
static buf_t ref_out[STEPS_MAX];
static buf_t ref_snap[STEPS_MAX + 1]; /* [0] before step 0; [k + 1] after step k */
static buf_t run_out, run_snap;       /* one call's result and the journal after it */

static void sweep(const path_t *p, tally_t *t)
{
    double t0 = now_s();
    memset(t, 0, sizeof *t);
    size_t ns = p->nsteps;
    assert_true(ns <= STEPS_MAX);
    for (size_t k = 0; k < ns; k++)
        buf_reset(&ref_out[k]);
    for (size_t k = 0; k <= ns; k++)
        buf_reset(&ref_snap[k]);

    /* The fault-free run: what every call returns and what the journal holds after it. */
    void *ctx = p->setup(p);
    if (p->snapshot != NULL)
        p->snapshot(ctx, &ref_snap[0]);
    for (size_t k = 0; k < ns; k++) {
        fsa_status_t st = p->steps[k].run(ctx, &ref_out[k]);
        if (st != FSA_OK)
            fail_msg("%s: step %s fails without a fault: %s", p->name, p->steps[k].name,
                     fsa_status_str(st));
        if (p->snapshot != NULL)
            p->snapshot(ctx, &ref_snap[k + 1]);
    }
    p->teardown(ctx);

    unsigned long stride = sweep_stride() * (p->stride > 0 ? p->stride : 1);
    bool done = false;
    for (unsigned long n = 1; !done; n += stride) {
        t->values++;
        ctx = p->setup(p);
        nframes = 0;
        fsa_alloc_fail_nth(n);
        bool fired = false;
        for (size_t k = 0; k < ns && !fired; k++) {
            const step_t *s = &p->steps[k];
            buf_reset(&run_out);
            fsa_status_t st = s->run(ctx, &run_out);
            fired = fsa_alloc_fault_fired();
            if (!fired) {
                if (st != FSA_OK)
                    problem(t, p, n, s->name, "failed with %s but no allocation failed",
                            fsa_status_str(st));
                else if (strcmp(buf_str(&run_out), buf_str(&ref_out[k])) != 0)
                    problem(t, p, n, s->name, "wrong result without a fault:\n%s\nexpected:\n%s",
                            buf_str(&run_out), buf_str(&ref_out[k]));
                continue;
            }
            fsa_alloc_fail_nth(0);
            const char *trace = getenv("FSA_SWEEP_TRACE"); /* N whose failed allocation to show */
            if (trace != NULL && strtoul(trace, NULL, 10) == n) {
                printf("TRACE %s N=%lu step %s: %s\n", p->name, n, s->name, fsa_status_str(st));
                fflush(stdout);
                backtrace_symbols_fd(frames, nframes, STDOUT_FILENO);
            }
            if (st != FSA_OK) {
                t->errors++;
                site_t site = st != FSA_ENOMEM ? classify() : SITE_OURS;
                if (st != FSA_ENOMEM && site == SITE_CURL) {
                    /* libcurl went on after its own failed allocation and the exchange failed
                     * otherwise: a fact about libcurl, noted, not ours to fix. */
                    t->curl_other++;
                    printf("NOTE %s N=%lu step %s: failed with %s after a failed allocation in "
                           "libcurl\n",
                           p->name, n, s->name, fsa_status_str(st));
                } else if (st != FSA_ENOMEM) {
                    problem(t, p, n, s->name, "failed with %s, not ENOMEM (allocation in %s)",
                            fsa_status_str(st), site_names[site]);
                }
                if (p->snapshot != NULL && !p->progress) {
                    buf_reset(&run_snap);
                    p->snapshot(ctx, &run_snap);
                    if (strcmp(buf_str(&run_snap), buf_str(&ref_snap[k])) != 0 &&
                        !(s->may_complete &&
                          strcmp(buf_str(&run_snap), buf_str(&ref_snap[k + 1])) == 0))
                        problem(t, p, n, s->name, "%s after a failed call: %s",
                                strcmp(buf_str(&run_snap), buf_str(&ref_snap[k + 1])) == 0
                                    ? "committed, though it reported an error"
                                    : "half written",
                                first_diff(buf_str(&run_snap), buf_str(&ref_snap[k])));
                }
                /* The same call again, without a fault, must work. */
                buf_reset(&run_out);
                st = s->run(ctx, &run_out);
                if (st != FSA_OK)
                    problem(t, p, n, s->name, "fails again without a fault: %s",
                            fsa_status_str(st));
                else if (!p->progress && strcmp(buf_str(&run_out), buf_str(&ref_out[k])) != 0)
                    problem(t, p, n, s->name, "wrong result when called again:\n%s",
                            buf_str(&run_out));
                if (p->snapshot != NULL) {
                    buf_reset(&run_snap);
                    p->snapshot(ctx, &run_snap);
                    if (strcmp(buf_str(&run_snap), buf_str(&ref_snap[k + 1])) != 0)
                        problem(t, p, n, s->name, "wrong journal when called again: %s",
                                first_diff(buf_str(&run_snap), buf_str(&ref_snap[k + 1])));
                }
                break;
            }
            /* Succeeded although an allocation failed: only SQLite may do that, correctly. */
            site_t site = classify();
            if (getenv("FSA_SWEEP_VERBOSE") != NULL) { /* where SQLite took it in its stride */
                printf("BENIGN %s N=%lu step %s (%s):\n", p->name, n, s->name, site_names[site]);
                fflush(stdout);
                backtrace_symbols_fd(frames, nframes, STDOUT_FILENO);
            }
            if (site == SITE_SQLITE)
                t->benign++;
            else if (site == SITE_CURL)
                t->benign_curl++;
            else if (site == SITE_UNKNOWN)
                t->unknown++;
            if (p->pure || site == SITE_OURS || site == SITE_CJSON)
                problem(t, p, n, s->name, "succeeded although an allocation (%s) failed",
                        site_names[site]);
            if (strcmp(buf_str(&run_out), buf_str(&ref_out[k])) != 0)
                problem(t, p, n, s->name, "wrong result after a benign failure:\n%s",
                        buf_str(&run_out));
            /* The rest of the run, fault-free, must see exactly the fault-free state. */
            for (size_t r = k + 1; r < ns; r++) {
                buf_reset(&run_out);
                st = p->steps[r].run(ctx, &run_out);
                if (st != FSA_OK || strcmp(buf_str(&run_out), buf_str(&ref_out[r])) != 0)
                    problem(t, p, n, p->steps[r].name,
                            "after a benign failure in %s: %s, result:\n%s", s->name,
                            fsa_status_str(st), buf_str(&run_out));
            }
            if (p->snapshot != NULL) {
                buf_reset(&run_snap);
                p->snapshot(ctx, &run_snap);
                if (strcmp(buf_str(&run_snap), buf_str(&ref_snap[ns])) != 0)
                    problem(t, p, n, s->name, "wrong journal after a benign failure: %s",
                            first_diff(buf_str(&run_snap), buf_str(&ref_snap[ns])));
            }
        }
        fsa_alloc_fail_nth(0);
        p->teardown(ctx);
        done = !fired;
    }
    t->secs = now_s() - t0;
    printf("SWEEP {\"path\": \"%s\", \"n_values\": %lu, \"stride\": %lu, \"enomem\": %lu, "
           "\"benign_sqlite\": %lu, \"benign_curl\": %lu, \"curl_other_error\": %lu, "
           "\"benign_unknown_site\": %lu, \"problems\": %lu, \"seconds\": %.2f}\n",
           p->name, t->values, stride, t->errors, t->benign, t->benign_curl, t->curl_other,
           t->unknown, t->problems, t->secs);
    fflush(stdout);
}

static void run_sweep(const path_t *p)
{
    tally_t t;
    sweep(p, &t);
    if (t.problems > 0)
        fail_msg("%lu problem(s) in the %s sweep: see the PROBLEM lines", t.problems, p->name);
    assert_true(t.errors > 0); /* the sweep did reach the path's allocations */
}

/* ==== the journal ==== */

typedef struct jctx {
    fsa_sim_t *sim;
    char dir[64];
    char path[128];
    fsa_journal_t *j;
    sqlite3 *snapdb; /* the snapshots' own connection, opened at the first (never armed) */
    fsa_op_t batch[32];
    size_t nbatch;
} jctx_t;

static void jctx_clear_batch(jctx_t *c)
{
    for (size_t i = 0; i < c->nbatch; i++)
        fsa_op_clear(&c->batch[i]);
    c->nbatch = 0;
}

static void quiet(void *arg, fsa_log_level_t level, const char *msg)
{
    (void)arg;
    (void)level;
    (void)msg;
}

/*
 * The journal workload is swept in segments: sweeping it whole would rerun every call before the
 * Nth allocation for each N, thousands of times (an open alone takes some 2,000 allocations).
 * Segment s starts from templates[s], the journal as the segments before it left it (made once,
 * without faults), opened without faults, so its own opens and statement preparations are still
 * swept where they are its calls.
 */
#define SEGMENTS_MAX 8
static char templates[SEGMENTS_MAX][160]; /* "" : start from no journal */

static fsa_status_t j_open_create(void *ctx, buf_t *out);

static void copy_file(const char *from, const char *to)
{
    static char chunk[64 * 1024];
    FILE *in = fopen(from, "rb"), *dst = fopen(to, "wb");
    if (in == NULL || dst == NULL)
        fail_msg("cannot copy %s to %s", from, to);
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, in)) > 0) {
        if (fwrite(chunk, 1, n, dst) != n)
            fail_msg("cannot write %s", to);
    }
    (void)fclose(in); /* read only: nothing to lose */
    if (fclose(dst) != 0)
        fail_msg("cannot write %s", to);
}

/* The ops of the outbox in seq order (only their identity: what batch_find() looks at), as
 * next_batch would have left them for the steps that answer them. */
static void load_batch(jctx_t *c)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_open_v2(c->path, &c->snapdb, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(c->snapdb, "SELECT op_id, kind, type, id FROM outbox ORDER BY seq", -1,
                           &q, NULL) != SQLITE_OK)
        fail_msg("cannot read the outbox of %s", c->path);
    while (c->nbatch < 32 && sqlite3_step(q) == SQLITE_ROW) {
        fsa_op_t *op = &c->batch[c->nbatch++];
        memset(op, 0, sizeof *op);
        snprintf(op->op_id, sizeof op->op_id, "%s", (const char *)sqlite3_column_text(q, 0));
        op->kind = (fsa_op_kind_t)sqlite3_column_int(q, 1);
        op->type = (fsa_type_t)sqlite3_column_int(q, 2);
        snprintf(op->id, sizeof op->id, "%s", (const char *)sqlite3_column_text(q, 3));
    }
    sqlite3_finalize(q);
}

static void *journal_setup(const path_t *p)
{
    jctx_t *c = fsa_calloc(1, sizeof *c);
    assert_non_null(c);
    /* A seed per segment: a segment's op ids must not repeat those of the template's ops. */
    assert_fsa_ok(
        fsa_sim_new(7 + (uint64_t)p->segment, (fsa_wall_t){1764090000000}, "sweep", &c->sim));
    fsa_sim_set_log(c->sim, quiet, NULL); /* thousands of expected "out of memory" lines */
    /* A real SQLite file; on tmpfs when there is one, since the sweep creates a journal per N
     * and a disk's fsyncs would make it take minutes instead of seconds. */
    snprintf(c->dir, sizeof c->dir, "%s/fsa-sweep-XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (mkdtemp(c->dir) == NULL)
        fail_msg("mkdtemp failed");
    snprintf(c->path, sizeof c->path, "%s/journal.db", c->dir);
    if (templates[p->segment][0] != '\0') {
        copy_file(templates[p->segment], c->path);
        load_batch(c);
        static buf_t scratch;
        buf_reset(&scratch);
        assert_fsa_ok(j_open_create(c, &scratch));
    }
    return c;
}

static void journal_teardown(void *ctx)
{
    jctx_t *c = ctx;
    jctx_clear_batch(c);
    fsa_journal_close(c->j);
    sqlite3_close(c->snapdb);
    fsa_sim_free(c->sim);
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal", ".users", ".locks"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        char f[160];
        snprintf(f, sizeof f, "%s%s", c->path, sfx[i]);
        (void)unlink(f);
    }
    if (rmdir(c->dir) != 0)
        fprintf(stderr, "warning: could not remove %s\n", c->dir);
    fsa_free(c);
}

static int snap_row(void *arg, int n, char **vals, char **names)
{
    (void)names;
    buf_t *b = arg;
    for (int i = 0; i < n; i++)
        buf_add(b, "%s%s", i > 0 ? "|" : "", vals[i] != NULL ? vals[i] : "NULL");
    buf_add(b, "\n");
    return 0;
}

/* Everything the journal holds but random ids (op ids, group ids, their salt) and the clean-close
 * flag. Read through a connection of its own, which sees only committed state. */
static void journal_snapshot(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    static const char *const queries[] = {
        "PRAGMA user_version",
        "SELECT type, name, sql FROM sqlite_master ORDER BY name",
        "SELECT type, id, base, base_version, local_fields, updated_ms FROM entities "
        "ORDER BY type, id",
        "SELECT seq, at_ms, kind, type, id, grp <> '', field, base_version, by_n, from_s, to_s, "
        "akey, max_len, payload, prior, state, attempts, result_version, done_ms FROM outbox "
        "ORDER BY seq",
        "SELECT seq, done_ms FROM done_ops ORDER BY seq",
        "SELECT seq, outcome, code, reason, server_version, server_fields, created_ms, decision, "
        "resolution, resolved_ms FROM conflicts ORDER BY seq",
        "SELECT k, v FROM sync_state WHERE k NOT IN ('clean_close', 'wal_starts', 'op_id_salt') "
        "ORDER BY k",
        "SELECT name, seq FROM sqlite_sequence ORDER BY name",
    };
    /* No file and a file without tables (a failed create) are the same: no journal. Every open
     * migrates the schema, so a later open of the empty file works. */
    if (c->snapdb == NULL && access(c->path, F_OK) != 0) {
        buf_add(out, "no journal\n");
        return;
    }
    if (c->snapdb == NULL &&
        sqlite3_open_v2(c->path, &c->snapdb, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
        fail_msg("snapshot: cannot open %s", c->path);
    sqlite3 *db = c->snapdb;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master", -1, &q, NULL) != SQLITE_OK ||
        sqlite3_step(q) != SQLITE_ROW)
        fail_msg("snapshot: cannot read %s: %s", c->path, sqlite3_errmsg(db));
    int tables = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (tables == 0) {
        buf_add(out, "no journal\n");
        return;
    }
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        buf_add(out, "-- %zu\n", i);
        if (sqlite3_exec(db, queries[i], snap_row, out, NULL) != SQLITE_OK)
            buf_add(out, "(%s)\n", sqlite3_errmsg(db));
    }
}

static fsa_port_t *jport(jctx_t *c)
{
    return fsa_sim_port(c->sim);
}

static fsa_status_t rec_out(fsa_status_t st, const fsa_rec_t *rec, buf_t *out)
{
    if (st == FSA_OK)
        buf_add(out, "seq %lld\n", (long long)rec->seq);
    return st;
}

static fsa_status_t j_open_create(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_journal_opts_t o = {.create = true, .sync_normal = true};
    char err[256];
    fsa_status_t st = fsa_journal_open(jport(c), c->path, &o, &c->j, err, sizeof err);
    if (st == FSA_OK)
        buf_add(out, "open\n");
    else if (c->j != NULL)
        fail_msg("fsa_journal_open set *out on failure");
    return st;
}

static fsa_status_t j_reopen(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_journal_opts_t o = {.sync_normal = true};
    char err[256];
    fsa_status_t st = fsa_journal_open(jport(c), c->path, &o, &c->j, err, sizeof err);
    if (st == FSA_OK)
        buf_add(out, "open\n");
    return st;
}

static fsa_status_t j_close(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    jctx_clear_batch(c);
    /* The snapshots' connection goes first, so that the journal's close is the last one and
     * folds the log into the file, as on a device. */
    sqlite3_close(c->snapdb);
    c->snapdb = NULL;
    fsa_journal_close(c->j);
    c->j = NULL;
    buf_add(out, "closed\n");
    return FSA_OK;
}

static fsa_status_t j_clock_offset(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    (void)out;
    return fsa_journal_clock_offset_set(c->j, 1234);
}

static fsa_status_t j_state_str(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    (void)out;
    return fsa_journal_cursor_set(c->j, "c:0000000042");
}

static fsa_status_t j_config_store(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    (void)out;
    const fsa_device_config_t dc = {
        .device_id = "dev001", .server = "https://s.example", .allow_http = true, .durability = 1};
    return fsa_journal_config_store(c->j, &dc);
}

static fsa_status_t j_create_tour(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_rec_t rec;
    return rec_out(fsa_journal_create(c->j, FSA_TYPE_JOBNEED, "TOUR",
                                      "{\"people_id\":\"p1\",\"seqno\":1}", NULL, &rec),
                   &rec, out);
}

static fsa_status_t j_create_checkpoint(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_rec_t rec;
    return rec_out(fsa_journal_create(c->j, FSA_TYPE_JOBNEED, "CP1",
                                      "{\"parent_id\":\"TOUR\",\"seqno\":2}", NULL, &rec),
                   &rec, out);
}

/* T3: its create conflicts (another device made T3), and a person takes it: a set and a
 * transition (journal_conflict.c, take_create). */
static fsa_status_t j_create_ticket(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_rec_t rec;
    return rec_out(fsa_journal_create(c->j, FSA_TYPE_TICKET, "T3",
                                      "{\"status\":\"OPEN\",\"priority\":\"LOW\"}", NULL, &rec),
                   &rec, out);
}

/* T1 comes from the server, not from a create here: the set on it is then the first op on it, and
 * goes in the batch with the others (a set waits for the answers to the ops before it on its
 * entity, journal_outbox.c). */
static fsa_status_t j_fold_ticket(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    (void)out;
    return fsa_journal_fold(c->j, FSA_TYPE_TICKET, "T1", 1,
                            "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"p2\","
                            "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"HIGH\"}");
}

static fsa_status_t j_set(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_rec_t rec;
    return rec_out(fsa_journal_set(c->j, FSA_TYPE_TICKET, "T1",
                                   "{\"assignedto\":\"p3\",\"priority\":\"LOW\"}", NULL, &rec),
                   &rec, out);
}

static fsa_status_t j_merge(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_rec_t rec;
    return rec_out(fsa_journal_merge(c->j, FSA_TYPE_TICKET, "T1", "ticketlog",
                                     "{\"note\":\"gate 3\",\"x\":{\"y\":[1,2.5,null]}}", NULL,
                                     &rec),
                   &rec, out);
}

static fsa_status_t j_increment(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_rec_t rec;
    return rec_out(fsa_journal_increment(c->j, FSA_TYPE_TICKET, "T1", "level", 2, NULL, &rec), &rec,
                   out);
}

static fsa_status_t j_transition(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_rec_t rec;
    return rec_out(fsa_journal_transition(c->j, FSA_TYPE_TICKET, "T1", "OPEN", NULL, &rec), &rec,
                   out);
}

static fsa_status_t j_append(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_rec_t rec;
    return rec_out(fsa_journal_append(c->j, FSA_TYPE_TICKET, "T1", "ticketlog", "ticket_history",
                                      "{\"who\":\"p3\",\"what\":\"escalated\"}", 50, NULL, &rec),
                   &rec, out);
}

static fsa_status_t j_checkpoint_update(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_rec_t rec;
    return rec_out(fsa_journal_checkpoint_update(c->j, "CP1", "{\"seqno\":5}", NULL, &rec), &rec,
                   out);
}

static fsa_status_t j_group(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_op_t ops[2] = {
        {.kind = FSA_OP_TRANSITION, .type = FSA_TYPE_JOBNEED, .id = "TOUR", .to = "INPROGRESS"},
        {.kind = FSA_OP_SET,
         .type = FSA_TYPE_JOBNEED,
         .id = "TOUR",
         .json = (char *)(uintptr_t) "{\"expirytime\":99}"},
    };
    fsa_rec_t rec;
    return rec_out(fsa_journal_record_group(c->j, ops, 2, NULL, &rec), &rec, out);
}

static fsa_status_t j_attendance(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_rec_t rec;
    return rec_out(
        fsa_journal_create(c->j, FSA_TYPE_ATTENDANCE, "A1",
                           "{\"people_id\":\"p1\",\"site_id\":\"hq\",\"kind\":"
                           "\"checkin\",\"at\":1764090000000,\"lat\":52.52,\"lon\":13.4}",
                           NULL, &rec),
        &rec, out);
}

static fsa_status_t j_get(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    char *fields = NULL;
    int64_t version = -1, pending = -1;
    fsa_status_t st = fsa_journal_get(c->j, FSA_TYPE_TICKET, "T1", &fields, &version, &pending);
    if (st == FSA_OK)
        buf_add(out, "%s v%lld p%lld\n", fields, (long long)version, (long long)pending);
    else if (fields != NULL)
        fail_msg("fsa_journal_get left *fields_json set on failure");
    fsa_model_free(fields);
    return st;
}

static void op_line(buf_t *out, const fsa_op_t *op)
{
    buf_add(out, "%lld %lld %s %s %s g%d %s %lld %lld %s %s %s %lld %s\n", (long long)op->seq,
            (long long)op->at_ms, fsa_op_kind_name(op->kind), fsa_type_name(op->type), op->id,
            op->group[0] != '\0', op->field, (long long)op->base_version, (long long)op->by,
            op->from, op->to, op->key, (long long)op->max_len, op->json != NULL ? op->json : "-");
}

static fsa_status_t j_next_batch(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    jctx_clear_batch(c);
    size_t n = 99;
    fsa_status_t st = fsa_outbox_next_batch(c->j, c->batch, 32, 1 << 20, &n);
    if (st != FSA_OK) {
        if (n != 0)
            fail_msg("fsa_outbox_next_batch set *n on failure");
        return st;
    }
    c->nbatch = n;
    for (size_t i = 0; i < n; i++)
        op_line(out, &c->batch[i]);
    return FSA_OK;
}

static fsa_status_t j_mark_inflight(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    (void)out;
    return fsa_outbox_mark_inflight(c->j, c->batch, c->nbatch);
}

static const fsa_op_t *batch_find(jctx_t *c, fsa_op_kind_t kind, const char *id)
{
    for (size_t i = 0; i < c->nbatch; i++) {
        if (c->batch[i].kind == kind && strcmp(c->batch[i].id, id) == 0)
            return &c->batch[i];
    }
    fail_msg("no %s of %s in the batch", fsa_op_kind_name(kind), id);
    return NULL;
}

static fsa_status_t j_apply_results(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    (void)out;
    fsa_op_result_t r[7];
    memset(r, 0, sizeof r);
    static const struct {
        fsa_op_kind_t kind;
        const char *id;
        fsa_result_status_t status;
    } plan[7] = {
        {FSA_OP_CREATE, "TOUR", FSA_RESULT_APPLIED},  {FSA_OP_CREATE, "CP1", FSA_RESULT_APPLIED},
        {FSA_OP_INCREMENT, "T1", FSA_RESULT_APPLIED}, {FSA_OP_SET, "T1", FSA_RESULT_CONFLICT},
        {FSA_OP_MERGE, "T1", FSA_RESULT_REJECTED},    {FSA_OP_CREATE, "A1", FSA_RESULT_DUPLICATE},
        {FSA_OP_CREATE, "T3", FSA_RESULT_CONFLICT},
    };
    for (size_t i = 0; i < 7; i++) {
        const fsa_op_t *op = batch_find(c, plan[i].kind, plan[i].id);
        memcpy(r[i].op_id, op->op_id, sizeof r[i].op_id);
        r[i].status = plan[i].status;
        r[i].version = 1;
    }
    r[3].version = 0;
    r[3].current_version = 3;
    r[3].current_fields = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"boss\",\"ticketlog\":"
                          "{\"ticket_history\":[]},\"priority\":\"HIGH\"}";
    r[4].version = 0;
    snprintf(r[4].code, sizeof r[4].code, "invalid_value");
    snprintf(r[4].message, sizeof r[4].message, "ticketlog: the patch is refused");
    r[5].original = FSA_RESULT_APPLIED;
    r[6].version = 0;
    r[6].current_version = 1;
    r[6].current_fields = "{\"status\":\"NEW\",\"level\":0,\"assignedto\":\"p2\",\"ticketlog\":"
                          "{\"ticket_history\":[]},\"priority\":\"HIGH\"}";
    return fsa_outbox_apply_results(c->j, r, 7);
}

static fsa_status_t j_fold(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    (void)out;
    return fsa_journal_fold(c->j, FSA_TYPE_TICKET, "T2", 4,
                            "{\"status\":\"OPEN\",\"level\":1,\"assignedto\":\"p9\","
                            "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"LOW\"}");
}

/* A newer server state of an entity with pending ops: its local view is rebuilt. */
static fsa_status_t j_fold_pending(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    (void)out;
    return fsa_journal_fold(c->j, FSA_TYPE_JOBNEED, "CP1", 2,
                            "{\"jobstatus\":\"ASSIGNED\",\"parent_id\":\"TOUR\",\"seqno\":3,"
                            "\"expirytime\":0,\"other_info\":{},\"people_id\":\"p7\"}");
}

static bool conflict_line(void *arg, const fsa_conflict_t *cf)
{
    buf_t *out = arg;
    buf_add(out, "%s %s %s %s %lld %s %s %s %s\n", fsa_op_kind_name(cf->op.kind), cf->op.id,
            fsa_conflict_outcome_name(cf->outcome), cf->code, (long long)cf->server_version,
            cf->server_fields != NULL ? cf->server_fields : "-",
            cf->prior_fields != NULL ? cf->prior_fields : "-",
            fsa_conflict_decision_name(cf->decision), fsa_conflict_resolution_name(cf->resolution));
    return true;
}

static fsa_status_t j_conflicts(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_status_t st = fsa_conflicts_each(c->j, true, conflict_line, out);
    if (st != FSA_OK)
        buf_reset(out); /* what the walk saw before failing is no result */
    return st;
}

static fsa_status_t j_resolve_local(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_rec_t rec;
    return rec_out(fsa_conflict_resolve(c->j, batch_find(c, FSA_OP_SET, "T1")->op_id, true,
                                        FSA_RESOLVED_LOCAL, &rec),
                   &rec, out);
}

static fsa_status_t j_resolve_create_local(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_rec_t rec;
    return rec_out(fsa_conflict_resolve(c->j, batch_find(c, FSA_OP_CREATE, "T3")->op_id, true,
                                        FSA_RESOLVED_LOCAL, &rec),
                   &rec, out);
}

static fsa_status_t j_decide(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    (void)out;
    return fsa_conflict_set_decision(c->j, batch_find(c, FSA_OP_MERGE, "T1")->op_id,
                                     FSA_DECISION_PARK);
}

static fsa_status_t j_stats(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_outbox_stats_t s;
    fsa_status_t st = fsa_outbox_stats(c->j, &s);
    if (st == FSA_OK)
        buf_add(out, "%lld %lld %lld %lld %lld %lld %lld\n", (long long)s.pending,
                (long long)s.inflight, (long long)s.done, (long long)s.conflicts,
                (long long)s.rejected, (long long)s.oldest_pending_at_ms, (long long)s.last_seq);
    return st;
}

static fsa_status_t j_compact(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    size_t removed = 0;
    fsa_status_t st = fsa_outbox_compact(c->j, 0, &removed);
    if (st == FSA_OK)
        buf_add(out, "removed %zu\n", removed);
    return st;
}

static fsa_status_t j_state_read(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    char *s = NULL;
    int64_t v = 0;
    fsa_status_t st = fsa_journal_cursor_get(c->j, &s);
    if (st == FSA_OK)
        st = fsa_journal_clock_offset_get(c->j, &v);
    fsa_device_config_t dc = {0};
    if (st == FSA_OK)
        st = fsa_journal_config_load(c->j, &dc);
    if (st == FSA_OK)
        buf_add(out, "%s %lld %s %s %d %lld\n", s != NULL ? s : "-", (long long)v,
                dc.device_id != NULL ? dc.device_id : "-", dc.server != NULL ? dc.server : "-",
                dc.allow_http ? 1 : 0, (long long)dc.durability);
    fsa_device_config_clear(&dc);
    fsa_model_free(s);
    return st;
}

static fsa_status_t j_increment_again(void *ctx, buf_t *out)
{
    jctx_t *c = ctx;
    fsa_rec_t rec;
    return rec_out(fsa_journal_increment(c->j, FSA_TYPE_TICKET, "T1", "level", -1, NULL, &rec),
                   &rec, out);
}

static const step_t journal_steps[] = {
    {"open", j_open_create, true},
    {"state_set_int", j_clock_offset, false},
    {"state_set_str", j_state_str, false},
    {"config_store", j_config_store, false},
    {"create jobneed", j_create_tour, false},
    {"create checkpoint", j_create_checkpoint, false},
    {"create ticket", j_create_ticket, false},
    {"fold ticket", j_fold_ticket, false},
    {"set", j_set, false},
    {"merge", j_merge, false},
    {"increment", j_increment, false},
    {"transition", j_transition, false},
    {"append", j_append, false},
    {"create attendance", j_attendance, false}, /* before the groups, which wait */
    {"checkpoint_update", j_checkpoint_update, false},
    {"record_group", j_group, false},
    {"get", j_get, false},
    {"next_batch", j_next_batch, false},
    {"mark_inflight", j_mark_inflight, false},
    {"apply_results", j_apply_results, false},
    {"fold", j_fold, false},
    {"fold with pending ops", j_fold_pending, false},
    {"conflicts_each", j_conflicts, false},
    {"conflict_resolve", j_resolve_local, false},
    {"conflict_resolve create", j_resolve_create_local, false},
    {"conflict_set_decision", j_decide, false},
    {"stats", j_stats, false},
    {"compact", j_compact, false},
    {"close", j_close, false},
    {"reopen", j_reopen, true},
    {"state_get", j_state_read, false},
    {"increment after reopen", j_increment_again, false},
};

static const struct segment {
    const char *name;
    size_t first, count;
} segments[] = {
    {"journal-open", 0, 4},       {"journal-record", 4, 12}, {"journal-outbox", 16, 6},
    {"journal-conflicts", 22, 6}, {"journal-reopen", 28, 4},
};
#define NSEGMENTS (sizeof segments / sizeof segments[0])
#define SEGMENT_UNCLEAN (SEGMENTS_MAX - 1) /* the open-after-crash path: no template */

static path_t segment_path(size_t s)
{
    assert_true(segments[s].first + segments[s].count <=
                sizeof journal_steps / sizeof journal_steps[0]);
    return (path_t){segments[s].name,
                    &journal_steps[segments[s].first],
                    segments[s].count,
                    journal_setup,
                    journal_teardown,
                    journal_snapshot,
                    false,
                    (int)s,
                    false,
                    0};
}

static char template_dir[64];

/* Runs the workload once without faults, keeping the journal as each segment leaves it. */
static int templates_build(void **state)
{
    (void)state;
    snprintf(template_dir, sizeof template_dir, "%s/fsa-sweep-templates-XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (mkdtemp(template_dir) == NULL)
        return -1;
    static buf_t scratch;
    for (size_t s = 0; s + 1 < NSEGMENTS; s++) {
        path_t p = segment_path(s);
        jctx_t *c = journal_setup(&p);
        for (size_t k = 0; k < p.nsteps; k++) {
            buf_reset(&scratch);
            fsa_status_t st = p.steps[k].run(c, &scratch);
            if (st != FSA_OK) {
                fprintf(stderr, "templates: %s fails: %s\n", p.steps[k].name, fsa_status_str(st));
                return -1;
            }
        }
        if (j_close(c, &scratch) != FSA_OK) /* the last user: the log is folded into the file */
            return -1;
        snprintf(templates[s + 1], sizeof templates[s + 1], "%s/segment%zu.db", template_dir,
                 s + 1);
        copy_file(c->path, templates[s + 1]);
        journal_teardown(c);
    }
    return 0;
}

static int templates_remove(void **state)
{
    (void)state;
    for (size_t s = 0; s < SEGMENTS_MAX; s++) {
        if (templates[s][0] != '\0')
            (void)unlink(templates[s]);
        templates[s][0] = '\0';
    }
    return template_dir[0] != '\0' ? rmdir(template_dir) : 0;
}

static void test_sweep__journal_open(void **state)
{
    (void)state;
    path_t p = segment_path(0);
    run_sweep(&p);
}

static void test_sweep__journal_record(void **state)
{
    (void)state;
    path_t p = segment_path(1);
    run_sweep(&p);
}

static void test_sweep__journal_outbox(void **state)
{
    (void)state;
    path_t p = segment_path(2);
    run_sweep(&p);
}

static void test_sweep__journal_conflicts(void **state)
{
    (void)state;
    path_t p = segment_path(3);
    run_sweep(&p);
}

static void test_sweep__journal_reopen(void **state)
{
    (void)state;
    path_t p = segment_path(4);
    run_sweep(&p);
}

/* A journal whose last user did not close it: the next open runs the quick check. */
static void *journal_setup_unclean(const path_t *p)
{
    jctx_t *c = journal_setup(p);
    static buf_t scratch;
    assert_fsa_ok(j_open_create(c, &scratch));
    assert_fsa_ok(j_fold_ticket(c, &scratch));
    assert_fsa_ok(j_close(c, &scratch));
    buf_reset(&scratch);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(c->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "UPDATE sync_state SET v = 0 WHERE k = 'clean_close'", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    return c;
}

static const step_t unclean_steps[] = {
    {"open after a crash", j_reopen, true},
    {"transition", j_transition, false},
    {"close", j_close, false},
};

static void test_sweep__journal_open_after_crash(void **state)
{
    (void)state;
    const path_t p = {"open-after-crash",
                      unclean_steps,
                      sizeof unclean_steps / sizeof unclean_steps[0],
                      journal_setup_unclean,
                      journal_teardown,
                      journal_snapshot,
                      false,
                      SEGMENT_UNCLEAN,
                      false,
                      0};
    run_sweep(&p);
}

/* ==== the codec ==== */

static void *nothing_setup(const path_t *p)
{
    (void)p;
    return NULL;
}

static void nothing_teardown(void *ctx)
{
    (void)ctx;
}

static int op_count;

static void make_op(fsa_op_t *op, fsa_op_kind_t kind, fsa_type_t type, const char *id,
                    const char *json)
{
    memset(op, 0, sizeof *op);
    op_count++;
    snprintf(op->op_id, sizeof op->op_id, "00000000-0000-4000-8000-%012d", op_count % 1000);
    op->seq = op_count;
    op->at_ms = 1764090000123 + op_count;
    op->kind = kind;
    op->type = type;
    snprintf(op->id, sizeof op->id, "%s", id);
    op->json = (char *)(uintptr_t)json;
}

static void push_ops(fsa_op_t ops[7])
{
    op_count = 0;
    make_op(&ops[0], FSA_OP_CREATE, FSA_TYPE_TICKET, "T1",
            "{\"priority\":\"HIGH\",\"ticketlog\":{\"ticket_history\":[]}}");
    make_op(&ops[1], FSA_OP_SET, FSA_TYPE_TICKET, "T1", "{\"assignedto\":\"p\\\"1\",\"level\":4}");
    ops[1].base_version = 3;
    snprintf(ops[1].group, sizeof ops[1].group, "g-1");
    make_op(&ops[2], FSA_OP_MERGE, FSA_TYPE_TICKET, "T1", "{\"a\":{\"b\":null,\"c\":[1,2]}}");
    snprintf(ops[2].field, sizeof ops[2].field, "ticketlog");
    snprintf(ops[2].group, sizeof ops[2].group, "g-1");
    make_op(&ops[3], FSA_OP_INCREMENT, FSA_TYPE_TICKET, "T1", NULL);
    snprintf(ops[3].field, sizeof ops[3].field, "level");
    ops[3].by = -9007199254740991LL;
    make_op(&ops[4], FSA_OP_TRANSITION, FSA_TYPE_JOBNEED, "J1", NULL);
    snprintf(ops[4].field, sizeof ops[4].field, "jobstatus");
    snprintf(ops[4].from, sizeof ops[4].from, "ASSIGNED");
    snprintf(ops[4].to, sizeof ops[4].to, "INPROGRESS");
    make_op(&ops[5], FSA_OP_APPEND, FSA_TYPE_TICKET, "T1", "{\"who\":\"p1\",\"n\":[true,false]}");
    snprintf(ops[5].field, sizeof ops[5].field, "ticketlog");
    snprintf(ops[5].key, sizeof ops[5].key, "ticket_history");
    ops[5].max_len = 50;
    make_op(&ops[6], FSA_OP_CREATE, FSA_TYPE_ATTENDANCE, "A1",
            "{\"people_id\":\"p1\",\"site_id\":\"hq\",\"kind\":\"checkin\",\"at\":1,\"lat\":52.5,"
            "\"lon\":13.25}");
}

static fsa_status_t text_out(fsa_status_t st, char *text, size_t len, buf_t *out)
{
    if (st == FSA_OK) {
        if (text == NULL || strlen(text) != len)
            fail_msg("FSA_OK without the text and its length (%zu, fault %d)", len,
                     fsa_alloc_fault_fired());
        else
            buf_add(out, "%s\n", text);
    } else if (text != NULL || len != 0) {
        fail_msg("a failed encoder left its out-parameters set");
    }
    fsa_codec_free(text);
    return st;
}

static fsa_status_t c_encode_push(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_op_t ops[7];
    push_ops(ops);
    char *body = NULL;
    size_t len = 0;
    fsa_status_t st = fsa_codec_encode_push("batch-1", ops, 7, &body, &len);
    return text_out(st, body, len, out);
}

static const char conflict_fields[] =
    "{\"status\":\"OPEN\",\"level\":2,\"assignedto\":\"boss\",\"ticketlog\":{\"ticket_history\":"
    "[{\"who\":\"p1\"}]},\"priority\":\"HIGH\"}";

static fsa_status_t c_encode_results(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_codec_result_t r[4];
    memset(r, 0, sizeof r);
    snprintf(r[0].op_id, sizeof r[0].op_id, "op-1");
    r[0].status = FSA_RESULT_APPLIED;
    r[0].version = 7;
    snprintf(r[1].op_id, sizeof r[1].op_id, "op-2");
    r[1].status = FSA_RESULT_CONFLICT;
    r[1].has_current = true;
    r[1].current_version = 9;
    r[1].current_fields = (char *)(uintptr_t)conflict_fields;
    snprintf(r[1].code, sizeof r[1].code, "conflict");
    snprintf(r[2].op_id, sizeof r[2].op_id, "op-3");
    r[2].status = FSA_RESULT_REJECTED;
    snprintf(r[2].code, sizeof r[2].code, "invalid_transition");
    snprintf(r[2].message, sizeof r[2].message, "ticket T1: CLOSED->OPEN");
    snprintf(r[3].op_id, sizeof r[3].op_id, "op-4");
    r[3].status = FSA_RESULT_DUPLICATE;
    r[3].original = FSA_RESULT_APPLIED;
    r[3].version = 5;
    char *body = NULL;
    size_t len = 0;
    fsa_status_t st = fsa_codec_encode_results(r, 4, 1764090000999, &body, &len);
    return text_out(st, body, len, out);
}

static fsa_status_t c_encode_pull(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_codec_change_t ch[2] = {
        {FSA_TYPE_TICKET, "T1", 9, 1764090000001, (char *)(uintptr_t)conflict_fields, false},
        {FSA_TYPE_JOBNEED, "J1", 2, 1764090000002, (char *)(uintptr_t) "{\"seqno\":3}", false},
    };
    fsa_codec_pull_t pull = {ch, 2, "c:17", true, 1764090000999};
    char *body = NULL;
    size_t len = 0;
    fsa_status_t st = fsa_codec_encode_pull(&pull, &body, &len);
    return text_out(st, body, len, out);
}

static fsa_status_t c_encode_entity(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_codec_change_t ch = {
        FSA_TYPE_TICKET, "T1", 9, 1764090000001, (char *)(uintptr_t)conflict_fields, false};
    char *body = NULL;
    size_t len = 0;
    fsa_status_t st = fsa_codec_encode_entity(&ch, 1764090000999, &body, &len);
    return text_out(st, body, len, out);
}

static fsa_status_t c_encode_error(void *ctx, buf_t *out)
{
    (void)ctx;
    char *body = NULL;
    size_t len = 0;
    fsa_status_t st =
        fsa_codec_encode_error("clock_skew", "your clock is 9 s off", 1764090000999, &body, &len);
    return text_out(st, body, len, out);
}

static const step_t encode_steps[] = {
    {"encode_push", c_encode_push, false},   {"encode_results", c_encode_results, false},
    {"encode_pull", c_encode_pull, false},   {"encode_entity", c_encode_entity, false},
    {"encode_error", c_encode_error, false},
};

static void test_sweep__codec_encode(void **state)
{
    (void)state;
    const path_t p = {"encode",
                      encode_steps,
                      sizeof encode_steps / sizeof encode_steps[0],
                      nothing_setup,
                      nothing_teardown,
                      NULL,
                      true,
                      0,
                      false,
                      0};
    run_sweep(&p);
}

static const char results_answer[] =
    "{\"results\": ["
    "{\"op_id\":\"op-1\",\"status\":\"applied\",\"version\":7},"
    "{\"op_id\":\"op-2\",\"status\":\"conflict\",\"current\":{\"version\":9,\"fields\":"
    "{\"status\":\"OPEN\",\"level\":2,\"assignedto\":\"boss\",\"ticketlog\":{\"ticket_history\":"
    "[{\"who\":\"p1\",\"at\":1764090000000}]},\"priority\":\"HIGH\"}},"
    "\"error\":{\"code\":\"conflict\",\"message\":\"version is 9\"}},"
    "{\"op_id\":\"op-3\",\"status\":\"rejected\",\"error\":{\"code\":\"invalid_transition\","
    "\"message\":\"ticket T1: CLOSED\\u2192OPEN is not an allowed transition\"}},"
    "{\"op_id\":\"op-4\",\"status\":\"duplicate\",\"original\":\"applied\",\"version\":5},"
    "{\"op_id\":\"op-5\",\"status\":\"duplicate\",\"original\":\"conflict\",\"current\":"
    "{\"version\":3,\"fields\":{\"jobstatus\":\"AUTOCLOSED\"}}}"
    "], \"server_time\": 1764090000999}";

static fsa_status_t c_decode_results(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_codec_result_t *r = NULL;
    size_t n = 99;
    int64_t t = -5;
    fsa_status_t st =
        fsa_codec_decode_results(results_answer, sizeof results_answer - 1, &r, &n, &t);
    if (st != FSA_OK) {
        if (r != NULL || n != 0)
            fail_msg("a failed decode left its out-parameters set");
        return st;
    }
    buf_add(out, "t %lld\n", (long long)t);
    for (size_t i = 0; i < n; i++)
        buf_add(out, "%s %s %lld %s %d %lld %s %s %s\n", r[i].op_id,
                fsa_result_status_name(r[i].status), (long long)r[i].version,
                fsa_result_status_name(r[i].original), r[i].has_current,
                (long long)r[i].current_version,
                r[i].current_fields != NULL ? r[i].current_fields : "-", r[i].code, r[i].message);
    fsa_codec_results_free(r, n);
    return FSA_OK;
}

static const char pull_answer[] =
    "{\"changes\":["
    "{\"type\":\"ticket\",\"id\":\"T1\",\"version\":9,\"mdtz\":1764090000001,\"fields\":"
    "{\"status\":\"OPEN\",\"level\":2,\"ticketlog\":{\"ticket_history\":[]}}},"
    "{\"type\":\"jobneed\",\"id\":\"J1\",\"version\":2,\"mdtz\":1764090000002,\"fields\":"
    "{\"jobstatus\":\"INPROGRESS\",\"parent_id\":null,\"other_info\":{\"a\":[1,{\"b\":2}]}}},"
    "{\"type\":\"attendance\",\"id\":\"A1\",\"version\":1,\"mdtz\":1764090000003,\"fields\":"
    "{\"people_id\":\"p1\",\"lat\":52.52,\"lon\":13.4}}"
    "],\"cursor\":\"c:0000000042\",\"more\":true,\"server_time\":1764090000999}";

static fsa_status_t c_decode_pull(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_codec_pull_t pull;
    fsa_status_t st = fsa_codec_decode_pull(pull_answer, sizeof pull_answer - 1, &pull);
    if (st != FSA_OK) {
        if (pull.changes != NULL || pull.count != 0)
            fail_msg("a failed decode left its out-parameters set");
        return st;
    }
    buf_add(out, "%s %d %lld\n", pull.cursor, pull.more, (long long)pull.server_time_ms);
    for (size_t i = 0; i < pull.count; i++)
        buf_add(out, "%s %s %lld %lld %s\n", fsa_type_name(pull.changes[i].type),
                pull.changes[i].id, (long long)pull.changes[i].version,
                (long long)pull.changes[i].mdtz_ms, pull.changes[i].fields);
    fsa_codec_pull_free(&pull);
    return FSA_OK;
}

static fsa_status_t c_decode_error(void *ctx, buf_t *out)
{
    (void)ctx;
    static const char body[] = "{\"error\":{\"code\":\"clock_skew\",\"message\":\"your clock is "
                               "9 s off\"},\"server_time\":1764090000999}";
    fsa_model_err_t err;
    int64_t t = 0;
    fsa_status_t st = fsa_codec_decode_error(body, sizeof body - 1, &err, &t);
    if (st == FSA_OK)
        buf_add(out, "%s %s %lld\n", err.code, err.message, (long long)t);
    return st;
}

static const char push_body[] =
    "{\"batch_id\":\"b-1\",\"ops\":["
    "{\"op_id\":\"o1\",\"seq\":1,\"at\":5,\"kind\":\"create\",\"type\":\"ticket\",\"id\":\"T1\","
    "\"fields\":{\"priority\":\"HIGH\"}},"
    "{\"op_id\":\"o2\",\"seq\":2,\"at\":5,\"kind\":\"set\",\"type\":\"ticket\",\"id\":\"T1\","
    "\"group\":\"g\",\"base_version\":1,\"fields\":{\"level\":3}},"
    "{\"op_id\":\"o3\",\"seq\":3,\"at\":5,\"kind\":\"merge\",\"type\":\"ticket\",\"id\":\"T1\","
    "\"group\":\"g\",\"field\":\"ticketlog\",\"patch\":{\"a\":null}},"
    "{\"op_id\":\"o4\",\"seq\":4,\"at\":5,\"kind\":\"increment\",\"type\":\"ticket\",\"id\":"
    "\"T1\",\"field\":\"level\",\"by\":2},"
    "{\"op_id\":\"o5\",\"seq\":5,\"at\":5,\"kind\":\"transition\",\"type\":\"ticket\",\"id\":"
    "\"T1\",\"field\":\"status\",\"from\":\"NEW\",\"to\":\"OPEN\"},"
    "{\"op_id\":\"o6\",\"seq\":6,\"at\":5,\"kind\":\"append\",\"type\":\"ticket\",\"id\":\"T1\","
    "\"field\":\"ticketlog\",\"key\":\"ticket_history\",\"max_len\":9,\"item\":[1,\"x\"]},"
    "{\"op_id\":\"o7\",\"seq\":7,\"at\":5,\"kind\":\"explode\",\"type\":\"ticket\",\"id\":\"T1\"}"
    "]}";

static fsa_status_t c_decode_push(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_codec_push_t push;
    fsa_model_err_t err;
    fsa_status_t st = fsa_codec_decode_push(push_body, sizeof push_body - 1, &push, &err);
    if (st != FSA_OK) {
        if (push.ops != NULL || push.count != 0)
            fail_msg("a failed decode left its out-parameters set");
        return st;
    }
    buf_add(out, "%s\n", push.batch_id);
    for (size_t i = 0; i < push.count; i++) {
        op_line(out, &push.ops[i].op);
        buf_add(out, "  %s %s\n", push.ops[i].reject.code, push.ops[i].reject.message);
    }
    fsa_codec_push_free(&push);
    return FSA_OK;
}

static fsa_status_t c_decode_entity(void *ctx, buf_t *out)
{
    (void)ctx;
    static const char body[] =
        "{\"type\":\"jobneed\",\"id\":\"J9\",\"fields\":{\"seqno\":4,\"other_info\":{\"k\":[]}}}";
    fsa_codec_change_t ch;
    fsa_model_err_t err;
    fsa_status_t st = fsa_codec_decode_entity(body, sizeof body - 1, &ch, &err);
    if (st == FSA_OK)
        buf_add(out, "%s %s %s\n", fsa_type_name(ch.type), ch.id, ch.fields);
    fsa_codec_change_clear(&ch);
    return st;
}

static fsa_status_t c_decode_devices(void *ctx, buf_t *out)
{
    (void)ctx;
    static const char text[] =
        "{\"devices\":[{\"id\":\"dev002\",\"secret\":"
        "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"},"
        "{\"id\":\"dev001\",\"secret\":"
        "\"ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100\"}]}";
    fsa_device_entry_t *d = NULL;
    size_t n = 0;
    char err[256];
    fsa_status_t st = fsa_devices_decode(text, sizeof text - 1, &d, &n, err, sizeof err);
    for (size_t i = 0; st == FSA_OK && i < n; i++)
        buf_add(out, "%s %.8s\n", d[i].id, d[i].secret_hex);
    fsa_devices_free(d, n);
    return st;
}

static const step_t decode_steps[] = {
    {"decode_results", c_decode_results, false}, {"decode_pull", c_decode_pull, false},
    {"decode_error", c_decode_error, false},     {"decode_push", c_decode_push, false},
    {"decode_entity", c_decode_entity, false},   {"decode_devices", c_decode_devices, false},
};

static void test_sweep__codec_decode(void **state)
{
    (void)state;
    const path_t p = {"decode",
                      decode_steps,
                      sizeof decode_steps / sizeof decode_steps[0],
                      nothing_setup,
                      nothing_teardown,
                      NULL,
                      true,
                      0,
                      false,
                      0};
    run_sweep(&p);
}

/* ==== the resolver ==== */

static const char ticket_now[] = "{\"status\":\"OPEN\",\"level\":2,\"assignedto\":\"boss\","
                                 "\"ticketlog\":{\"ticket_history\":[]},\"priority\":\"HIGH\"}";
static const char job_closed[] = "{\"jobstatus\":\"AUTOCLOSED\",\"parent_id\":null,\"seqno\":1,"
                                 "\"expirytime\":0,\"other_info\":{},\"people_id\":\"p1\"}";

/* Resolves one input; the verdict (and why) is the result, RETRY the error. */
static fsa_status_t resolve_out(const fsa_resolver_policy_t *policy, const fsa_resolver_input_t *in,
                                size_t n, buf_t *out)
{
    char why[256];
    fsa_resolution_t r = n == 1 ? fsa_resolve(policy, in, why, sizeof why)
                                : fsa_resolve_group(policy, in, n, why, sizeof why);
    if (r == FSA_RESOLVE_RETRY)
        return FSA_ENOMEM;
    buf_add(out, "%s: %s\n", fsa_resolution_name(r), why);
    return FSA_OK;
}

static fsa_op_t r_op(fsa_op_kind_t kind, fsa_type_t type, const char *json)
{
    fsa_op_t op;
    make_op(&op, kind, type, type == FSA_TYPE_TICKET ? "T1" : "J1", json);
    return op;
}

static fsa_status_t r_create_same(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_op_t op = r_op(FSA_OP_CREATE, FSA_TYPE_TICKET, "{\"assignedto\":\"boss\",\"level\":2}");
    fsa_resolver_input_t in = {&op, FSA_RESULT_CONFLICT, NULL, 4, ticket_now};
    return resolve_out(NULL, &in, 1, out);
}

static fsa_status_t r_create_other(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_op_t op = r_op(FSA_OP_CREATE, FSA_TYPE_TICKET, "{\"assignedto\":\"p1\"}");
    fsa_resolver_input_t in = {&op, FSA_RESULT_CONFLICT, NULL, 4, ticket_now};
    return resolve_out(NULL, &in, 1, out);
}

static fsa_status_t r_set_rebase(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_op_t op = r_op(FSA_OP_SET, FSA_TYPE_TICKET, "{\"priority\":\"LOW\"}");
    fsa_resolver_input_t in = {&op, FSA_RESULT_CONFLICT, "{\"priority\":\"HIGH\"}", 4, ticket_now};
    return resolve_out(NULL, &in, 1, out);
}

static fsa_status_t r_set_server_wins(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_op_t op = r_op(FSA_OP_SET, FSA_TYPE_TICKET, "{\"assignedto\":\"p5\",\"level\":1}");
    fsa_resolver_input_t in = {&op, FSA_RESULT_CONFLICT, "{\"assignedto\":\"p2\",\"level\":1}", 4,
                               ticket_now};
    return resolve_out(NULL, &in, 1, out);
}

static fsa_status_t r_set_policy(void *ctx, buf_t *out)
{
    (void)ctx;
    static const fsa_policy_rule_t rules[] = {
        {FSA_TYPE_TICKET, "priority", FSA_POLICY_LOCAL_WINS},
        {FSA_TYPE_TICKET, "level", FSA_POLICY_PARK},
    };
    fsa_resolver_policy_t policy = {rules, 2};
    fsa_op_t op = r_op(FSA_OP_SET, FSA_TYPE_TICKET, "{\"priority\":\"LOW\",\"level\":7}");
    fsa_resolver_input_t in = {&op, FSA_RESULT_CONFLICT, "{\"priority\":\"HIGH\",\"level\":2}", 4,
                               ticket_now};
    fsa_status_t st = resolve_out(&policy, &in, 1, out); /* park outranks local wins */
    if (st != FSA_OK)
        return st;
    fsa_op_t op2 = r_op(FSA_OP_SET, FSA_TYPE_TICKET, "{\"priority\":\"LOW\"}");
    fsa_resolver_input_t in2 = {&op2, FSA_RESULT_CONFLICT, "{\"priority\":\"MEDIUM\"}", 4,
                                ticket_now};
    return resolve_out(&policy, &in2, 1, out); /* local wins though the server changed it */
}

static fsa_status_t r_transition_converged(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_op_t op = r_op(FSA_OP_TRANSITION, FSA_TYPE_TICKET, NULL);
    snprintf(op.from, sizeof op.from, "NEW");
    snprintf(op.to, sizeof op.to, "OPEN");
    fsa_resolver_input_t in = {&op, FSA_RESULT_CONFLICT, NULL, 4, ticket_now};
    return resolve_out(NULL, &in, 1, out);
}

static fsa_status_t r_transition_terminal(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_op_t op = r_op(FSA_OP_TRANSITION, FSA_TYPE_JOBNEED, NULL);
    snprintf(op.field, sizeof op.field, "jobstatus");
    snprintf(op.from, sizeof op.from, "ASSIGNED");
    snprintf(op.to, sizeof op.to, "INPROGRESS");
    fsa_resolver_input_t in = {&op, FSA_RESULT_CONFLICT, NULL, 2, job_closed};
    return resolve_out(NULL, &in, 1, out);
}

static fsa_status_t r_transition_park(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_op_t op = r_op(FSA_OP_TRANSITION, FSA_TYPE_TICKET, NULL);
    snprintf(op.from, sizeof op.from, "NEW");
    snprintf(op.to, sizeof op.to, "CANCELLED");
    fsa_resolver_input_t in = {&op, FSA_RESULT_CONFLICT, NULL, 4, ticket_now};
    return resolve_out(NULL, &in, 1, out);
}

static fsa_status_t r_group(void *ctx, buf_t *out)
{
    (void)ctx;
    fsa_op_t set = r_op(FSA_OP_SET, FSA_TYPE_TICKET, "{\"priority\":\"LOW\"}");
    fsa_op_t tr = r_op(FSA_OP_TRANSITION, FSA_TYPE_TICKET, NULL);
    snprintf(tr.from, sizeof tr.from, "NEW");
    snprintf(tr.to, sizeof tr.to, "OPEN");
    fsa_op_t merge = r_op(FSA_OP_MERGE, FSA_TYPE_TICKET, "{\"x\":1}");
    fsa_resolver_input_t in[3] = {
        {&set, FSA_RESULT_CONFLICT, "{\"priority\":\"HIGH\"}", 4, ticket_now},
        {&tr, FSA_RESULT_CONFLICT, NULL, 4, ticket_now},
        {&merge, FSA_RESULT_CONFLICT, NULL, 4, ticket_now},
    };
    fsa_status_t st = resolve_out(NULL, in, 3, out); /* rebase */
    if (st != FSA_OK)
        return st;
    fsa_op_t set2 = r_op(FSA_OP_SET, FSA_TYPE_TICKET, "{\"assignedto\":\"p5\"}");
    fsa_resolver_input_t in2[2] = {
        {&set2, FSA_RESULT_CONFLICT, "{\"assignedto\":\"p2\"}", 4, ticket_now},
        {&set, FSA_RESULT_CONFLICT, "{\"priority\":\"HIGH\"}", 4, ticket_now},
    };
    return resolve_out(NULL, in2, 2, out); /* server wins */
}

static const step_t resolve_steps[] = {
    {"create converged", r_create_same, false},
    {"create park", r_create_other, false},
    {"set rebase", r_set_rebase, false},
    {"set server wins", r_set_server_wins, false},
    {"set policy", r_set_policy, false},
    {"transition converged", r_transition_converged, false},
    {"transition terminal", r_transition_terminal, false},
    {"transition park", r_transition_park, false},
    {"group", r_group, false},
};

static void test_sweep__resolver(void **state)
{
    (void)state;
    const path_t p = {"resolve",
                      resolve_steps,
                      sizeof resolve_steps / sizeof resolve_steps[0],
                      nothing_setup,
                      nothing_teardown,
                      NULL,
                      true,
                      0,
                      false,
                      0};
    run_sweep(&p);
}

/* ==== the engine: one sync cycle against the real server ==== */

/*
 * Each run is a fresh device journal whose entity ids carry the run's number (the server keeps
 * what every run pushed), with a seed of its own (op ids never repeat, or the server would answer
 * duplicate), and a pull cursor past the server's end (pulls answer no change, whatever other runs
 * pushed). The results are compared with the run's number taken out of the ids.
 */
static th_server_t server;
static bool server_up;
static unsigned run_no;

typedef struct ectx {
    jctx_t *jc;
    fsa_engine_t *e;
    char suffix[24];
} ectx_t;

static void *engine_setup(const path_t *p)
{
    ectx_t *x = fsa_calloc(1, sizeof *x);
    assert_non_null(x);
    path_t jp = *p;
    jp.segment = SEGMENT_UNCLEAN; /* no template: a fresh journal */
    x->jc = journal_setup(&jp);
    jctx_t *c = x->jc;
    fsa_sim_free(c->sim); /* a seed per run */
    assert_fsa_ok(fsa_sim_new(1000 + run_no, (fsa_wall_t){fsa_port_posix()->wall_now(NULL).ms},
                              "sweep", &c->sim));
    fsa_sim_set_log(c->sim, quiet, NULL);
    snprintf(x->suffix, sizeof x->suffix, "_r%u", run_no++);
    static buf_t scratch;
    buf_reset(&scratch);
    assert_fsa_ok(j_open_create(c, &scratch));
    assert_fsa_ok(fsa_journal_cursor_set(c->j, "v1.999999999999"));
    char t1[64], t9[64], a1[64], j1[64];
    snprintf(t1, sizeof t1, "T1%s", x->suffix);
    snprintf(t9, sizeof t9, "T9%s", x->suffix);
    snprintf(a1, sizeof a1, "A1%s", x->suffix);
    snprintf(j1, sizeof j1, "J1%s", x->suffix);
    fsa_rec_t rec;
    assert_fsa_ok(
        fsa_journal_create(c->j, FSA_TYPE_TICKET, t1, "{\"priority\":\"HIGH\"}", NULL, &rec));
    assert_fsa_ok(
        fsa_journal_set(c->j, FSA_TYPE_TICKET, t1, "{\"assignedto\":\"p3\"}", NULL, &rec));
    assert_fsa_ok(fsa_journal_transition(c->j, FSA_TYPE_TICKET, t1, "OPEN", NULL, &rec));
    assert_fsa_ok(fsa_journal_append(c->j, FSA_TYPE_TICKET, t1, "ticketlog", "ticket_history",
                                     "{\"who\":\"p3\"}", 10, NULL, &rec));
    assert_fsa_ok(fsa_journal_create(c->j, FSA_TYPE_JOBNEED, j1, "{\"seqno\":1}", NULL, &rec));
    fsa_op_t group[2] = {
        {.kind = FSA_OP_TRANSITION, .type = FSA_TYPE_JOBNEED, .to = "INPROGRESS"},
        {.kind = FSA_OP_INCREMENT, .type = FSA_TYPE_JOBNEED, .field = "seqno", .by = 2},
    };
    snprintf(group[0].id, sizeof group[0].id, "%s", j1);
    snprintf(group[1].id, sizeof group[1].id, "%s", j1);
    assert_fsa_ok(fsa_journal_record_group(c->j, group, 2, NULL, &rec));
    assert_fsa_ok(fsa_journal_create(c->j, FSA_TYPE_ATTENDANCE, a1,
                                     "{\"people_id\":\"p1\",\"site_id\":\"hq\",\"kind\":"
                                     "\"checkin\",\"at\":1,\"lat\":52.5,\"lon\":13.25}",
                                     NULL, &rec));
    /* An entity the device believes the server has, which it has not: the set is rejected
     * (not_found), parked, and the resolver leaves it to a person. */
    assert_fsa_ok(fsa_journal_fold(c->j, FSA_TYPE_TICKET, t9, 1, "{\"level\":1}"));
    assert_fsa_ok(fsa_journal_set(c->j, FSA_TYPE_TICKET, t9, "{\"level\":2}", NULL, &rec));
    return x;
}

static void engine_teardown(void *ctx)
{
    ectx_t *x = ctx;
    fsa_engine_free(x->e);
    journal_teardown(x->jc);
    fsa_free(x);
}

/* Takes every "_r<run>" out of text (in place). */
static void strip_suffix(buf_t *b, const char *suffix)
{
    size_t n = strlen(suffix);
    char *p;
    while ((p = strstr(b->p, suffix)) != NULL) {
        memmove(p, p + n, strlen(p + n) + 1);
        b->len -= n;
    }
}

static int engine_snap_row(void *arg, int n, char **vals, char **names)
{
    return snap_row(arg, n, vals, names);
}

/* What the journal holds, less what depends on time or on how many times a batch was sent. */
static void engine_snapshot(void *ctx, buf_t *out)
{
    ectx_t *x = ctx;
    static const char *const queries[] = {
        "SELECT type, id, base, base_version, local_fields FROM entities ORDER BY type, id",
        "SELECT seq, kind, type, id, grp <> '', field, base_version, by_n, from_s, to_s, akey, "
        "max_len, payload, prior, state, result_version FROM outbox ORDER BY seq",
        "SELECT count(*) FROM done_ops",
        "SELECT seq, outcome, code, server_version, server_fields, decision, resolution FROM "
        "conflicts ORDER BY seq",
        "SELECT v FROM sync_state WHERE k = 'cursor'",
    };
    jctx_t *c = x->jc;
    if (c->snapdb == NULL &&
        sqlite3_open_v2(c->path, &c->snapdb, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
        fail_msg("snapshot: cannot open %s", c->path);
    size_t start = out->len;
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        buf_add(out, "-- %zu\n", i);
        if (sqlite3_exec(c->snapdb, queries[i], engine_snap_row, out, NULL) != SQLITE_OK)
            buf_add(out, "(%s)\n", sqlite3_errmsg(c->snapdb));
    }
    (void)start;
    strip_suffix(out, x->suffix);
}

static fsa_status_t e_new(void *ctx, buf_t *out)
{
    ectx_t *x = ctx;
    fsa_signer_key_t key;
    th_device_key(0, &key);
    fsa_engine_opts_t o = {.device_id = "dev000",
                           .key = &key,
                           .retry = fsa_retry_policy(FSA_RETRY_DEFAULT),
                           .ignore_backoff = true};
    o.transport.base_url = server.url;
    o.transport.connect_timeout_ms = 5000;
    o.transport.total_timeout_ms = 20000;
    char err[256];
    fsa_status_t st =
        fsa_engine_new(fsa_sim_port(x->jc->sim), x->jc->j, &o, &x->e, err, sizeof err);
    fsa_signer_key_wipe(&key);
    if (st == FSA_OK)
        buf_add(out, "engine\n");
    else if (x->e != NULL)
        fail_msg("fsa_engine_new set *out on failure");
    return st;
}

static fsa_status_t e_sync(void *ctx, buf_t *out)
{
    ectx_t *x = ctx;
    fsa_sync_report_t r;
    fsa_status_t st = fsa_engine_sync(x->e, &r);
    if (st == FSA_OK)
        buf_add(out,
                "batches %lld pushed %lld applied %lld duplicate %lld conflict %lld rejected %lld "
                "rebased %lld converged %lld server_wins %lld parked %lld pulled %lld\n",
                (long long)r.batches, (long long)r.pushed, (long long)r.applied,
                (long long)r.duplicate, (long long)r.conflict, (long long)r.rejected,
                (long long)r.rebased, (long long)r.converged, (long long)r.server_wins,
                (long long)r.parked, (long long)r.pulled);
    return st;
}

static fsa_status_t e_free(void *ctx, buf_t *out)
{
    ectx_t *x = ctx;
    fsa_engine_free(x->e);
    x->e = NULL;
    buf_add(out, "freed\n");
    return FSA_OK;
}

/* A sync cycle is some 3,300 allocations, each N a real HTTP exchange or two: every 4th N keeps
 * it to a few seconds (FSA_SWEEP_ENGINE_EVERY=1 sweeps them all). */
#define ENGINE_STRIDE engine_stride()
static unsigned long engine_stride(void)
{
    const char *s = getenv("FSA_SWEEP_ENGINE_EVERY");
    unsigned long v = s != NULL ? strtoul(s, NULL, 10) : 4;
    return v > 0 ? v : 1;
}

static const step_t engine_steps[] = {
    {"engine_new", e_new, false},
    {"sync", e_sync, false},
    {"engine_free", e_free, false},
};

static void test_sweep__engine_sync(void **state)
{
    (void)state;
    if (!server_up) {
        assert_true(th_dir_make(server.dir));
        assert_true(th_write_files(&server, 1));
        assert_true(th_server_start(&server, NULL));
        server_up = true;
    }
    const path_t p = {"engine-sync",
                      engine_steps,
                      sizeof engine_steps / sizeof engine_steps[0],
                      engine_setup,
                      engine_teardown,
                      engine_snapshot,
                      false,
                      0,
                      true,
                      ENGINE_STRIDE};
    run_sweep(&p);
}

static int server_down(void **state)
{
    (void)state;
    if (server_up) {
        (void)th_server_stop(&server);
        th_dir_remove(server.dir);
        server_up = false;
    }
    return 0;
}

int main(void)
{
    fsa_libs_use_allocator();
    if (fsa_transport_global_init() != FSA_OK) /* libcurl's allocations come here too */
        return 1;
    void *warm[1];
    (void)backtrace(warm, 1); /* loads the unwinder now, not inside a fault */
    fsa_alloc_on_fault(on_fault, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sweep__codec_encode),
        cmocka_unit_test(test_sweep__codec_decode),
        cmocka_unit_test(test_sweep__resolver),
        cmocka_unit_test(test_sweep__journal_open),
        cmocka_unit_test(test_sweep__journal_record),
        cmocka_unit_test(test_sweep__journal_outbox),
        cmocka_unit_test(test_sweep__journal_conflicts),
        cmocka_unit_test(test_sweep__journal_reopen),
        cmocka_unit_test(test_sweep__journal_open_after_crash),
        cmocka_unit_test_teardown(test_sweep__engine_sync, server_down),
    };
    /* The ctest parts (alloc_sweep.cmake) each run the sweeps one glob names; by hand, e.g.
     * FSA_TEST_FILTER='*engine*' runs one sweep while fixing it. A glob that names no sweep is a
     * mistake (a part that would pass running nothing): refused. */
    const char *only = getenv("FSA_TEST_FILTER");
    if (only != NULL) {
        size_t named = 0;
        for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
            named += fnmatch(only, tests[i].name, 0) == 0;
        if (named == 0) {
            fprintf(stderr, "test_alloc_sweep: FSA_TEST_FILTER '%s' names no sweep\n", only);
            return 1;
        }
        cmocka_set_test_filter(only);
    }
    int rc = cmocka_run_group_tests(tests, templates_build, templates_remove);
    fsa_alloc_fail_nth(0);
    fsa_alloc_on_fault(NULL, NULL);
    return rc;
}
