/* Crash loops: the fieldsync command and daemon killed with SIGKILL at random moments while they
 * record and sync against the real fieldsync-server; at the end the server holds every accepted
 * op exactly once, nothing was applied twice, and the journal is intact and drained. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "port/alloc.h"
#include "storage/journal.h"
#include "storage/libs.h"
#include "tests/sync/server_client.h"
#include "tests/sync/server_harness.h"
#include "tests/test_exec.h"
#include "tests/test_util.h"

#ifndef FSA_FIELDSYNC_BIN
#error "FSA_FIELDSYNC_BIN must name the fieldsync binary"
#endif
#ifndef FSA_TEST_EMULATOR
#define FSA_TEST_EMULATOR ""
#endif

/*
 * Iterations: FSA_CRASH_ITERATIONS, else 400 on the host (about 340-390 kills that land on a live
 * process; 10-25 s), 150 under ASan (which runs each process ~4x slower: about 35 s) and 60 under
 * an emulator (qemu-user runs each process ~20x slower: about 30 s), each multiplied by
 * FSA_TEST_SCALE (a factor, e.g. 0.25) when that is set. The seed: FSA_CRASH_SEED (non-zero), else
 * drawn from the clock; it is printed. It replays the same modes, op kinds and relative kill
 * moments; the moments are real time, scaled by how long the runs take on this machine, so a replay
 * lands near, not on, the same instructions.
 */
#if defined(__SANITIZE_ADDRESS__)
#define DEFAULT_ITERATIONS_HOST 150
#else
#define DEFAULT_ITERATIONS_HOST 400
#endif
#define DEFAULT_ITERATIONS_EMULATED 60
#define MAX_ITERATIONS 100000

/* ---- a seeded PRNG (splitmix64) ---- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static int64_t rng_below(int64_t n)
{
    return n <= 0 ? 0 : (int64_t)(rng_next() % (uint64_t)n);
}

static int64_t mono_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* ---- child processes, each killed at its own moment ---- */

typedef struct proc {
    pid_t pid;
    int fd[2]; /* read ends of its stdout and stderr; -1 once at EOF */
    char out[2048];
    char err[2048];
    size_t len[2];
    int64_t t0_us;
    int64_t kill_at_us; /* after t0; < 0: never (runs to its end) */
    bool kill_sent;
    bool exited;
    int status; /* exit status, or 128 + signal */
    int64_t dur_us;
} proc_t;

static void cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    assert_true(fl >= 0);
    assert_int_equal(fcntl(fd, F_SETFD, fl | FD_CLOEXEC), 0);
}

/* Starts fieldsync with args (NULL-terminated), its stdout and stderr on pipes. */
static void proc_start(proc_t *p, const char *const *args, int64_t kill_at_us)
{
    memset(p, 0, sizeof *p);
    char emu[512];
    snprintf(emu, sizeof emu, "%s", FSA_TEST_EMULATOR);
    const char *argv[64];
    test_exec_argv(emu, FSA_FIELDSYNC_BIN, args, argv, 64);
    int po[2], pe[2];
    assert_int_equal(pipe(po), 0);
    assert_int_equal(pipe(pe), 0);
    /* Two children run at once: neither may hold the other's pipes open. */
    cloexec(po[0]);
    cloexec(po[1]);
    cloexec(pe[0]);
    cloexec(pe[1]);
    p->t0_us = mono_us();
    p->kill_at_us = kill_at_us;
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    p->fd[0] = po[0];
    p->fd[1] = pe[0];
}

static void proc_read(proc_t *p, int k)
{
    char *buf = k == 0 ? p->out : p->err;
    // cppcheck-suppress duplicateValueTernary ; the two buffers are only the same size today
    size_t cap = k == 0 ? sizeof p->out : sizeof p->err;
    char tmp[1024];
    ssize_t got = read(p->fd[k], tmp, sizeof tmp);
    if (got < 0 && errno == EINTR)
        return;
    if (got <= 0) {
        close(p->fd[k]);
        p->fd[k] = -1;
        return;
    }
    size_t take = (size_t)got < cap - 1 - p->len[k] ? (size_t)got : cap - 1 - p->len[k];
    memcpy(buf + p->len[k], tmp, take);
    p->len[k] += take;
    buf[p->len[k]] = '\0';
}

/* Runs the n started processes to their ends: each is sent SIGKILL at its kill moment if it is
 * still alive then. A process that runs past hard_us without a kill moment fails the test. */
static void procs_run(proc_t *ps, int n, int64_t hard_us)
{
    assert_true(n >= 1 && n <= 4);
    for (;;) {
        int64_t now = mono_us();
        int64_t next_kill = INT64_MAX;
        bool busy = false;
        struct pollfd fds[8];
        proc_t *owner[8];
        int kind[8];
        int nfds = 0;
        for (int i = 0; i < n; i++) {
            proc_t *p = &ps[i];
            if (!p->exited) {
                int status = 0;
                pid_t r = waitpid(p->pid, &status, WNOHANG);
                if (r == p->pid) {
                    p->exited = true;
                    p->dur_us = now - p->t0_us;
                    p->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                }
            }
            if (!p->exited && !p->kill_sent) {
                if (p->kill_at_us >= 0 && now - p->t0_us >= p->kill_at_us) {
                    kill(p->pid, SIGKILL);
                    p->kill_sent = true;
                } else if (p->kill_at_us >= 0) {
                    if (p->t0_us + p->kill_at_us < next_kill)
                        next_kill = p->t0_us + p->kill_at_us;
                } else if (now - p->t0_us > hard_us) {
                    /* A hang: leave no process behind, then fail. */
                    for (int k = 0; k < n; k++)
                        if (!ps[k].exited) {
                            kill(ps[k].pid, SIGKILL);
                            waitpid(ps[k].pid, NULL, 0);
                            ps[k].exited = true;
                        }
                    fail_msg("fieldsync ran for more than %" PRId64 " s: %s", hard_us / 1000000,
                             p->err);
                }
            }
            busy = busy || !p->exited;
            for (int k = 0; k < 2; k++) {
                if (p->fd[k] < 0)
                    continue;
                busy = true;
                fds[nfds] = (struct pollfd){p->fd[k], POLLIN, 0};
                owner[nfds] = p;
                kind[nfds++] = k;
            }
        }
        if (!busy)
            return;
        int wait_ms = 5; /* for the exit of a process whose pipes are already closed */
        if (next_kill != INT64_MAX) {
            int64_t left = next_kill - now;
            if (left < 1000) {
                /* The random kill delay itself: the only sleep here, finer than poll's ms. */
                struct timespec ts = {0, (long)(left > 0 ? left : 0) * 1000L};
                nanosleep(&ts, NULL);
                continue;
            }
            if (left / 1000 < wait_ms)
                wait_ms = (int)(left / 1000);
        }
        if (poll(fds, (nfds_t)nfds, wait_ms) > 0)
            for (int i = 0; i < nfds; i++)
                if (fds[i].revents != 0)
                    proc_read(owner[i], kind[i]);
    }
}

static bool proc_killed(const proc_t *p)
{
    return p->status == 128 + SIGKILL;
}

/* ---- what the loop recorded ---- */

typedef enum op_kind {
    K_LOG,        /* ticket log T1 {"k":"L<i>"}: an append */
    K_ESCALATE,   /* ticket escalate T1 --note E<i>: increment + append, one group */
    K_MERGE,      /* job merge TOUR1 {"m<i>":<i>} */
    K_ATTENDANCE, /* attendance checkin --id <uuid> */
    K_SET,        /* job set J2 seqno=<i> */
    K_CHECKPOINT, /* checkpoint update CP1 expirytime=<i>: set + merge into TOUR1, one group */
    K_CREATE,     /* ticket create TC<i> */
    K__COUNT
} op_kind_t;

static const char *const kind_names[K__COUNT] = {
    "ticket log", "ticket escalate",   "job merge",    "attendance",
    "job set",    "checkpoint update", "ticket create"};

typedef struct attempt {
    op_kind_t kind;
    int value;                   /* i: the marker inside the op */
    char uuid[37];               /* attendance id */
    char op_id[40];              /* the op id the command printed; "" when it did not confirm */
    bool committed;              /* the journal's seq moved (confirmed or not) */
    int64_t first_seq, last_seq; /* when committed: the seqs its ops took in the journal */
} attempt_t;

/* Where the kills landed, as seen in the journal and the server's counters right after. */
enum {
    PH_REC_BEFORE_COMMIT,
    PH_REC_COMMITTED_UNCONFIRMED,
    PH_REC_AFTER_CONFIRM,
    PH_SYNC_BEFORE_PUSH,
    PH_SYNC_REQUEST_UNANSWERED,
    PH_SYNC_APPLIED_ANSWER_LOST,
    PH_SYNC_AFTER_RESULTS,
    PH_SYNC_NOTHING_TO_PUSH,
    PH_DAEMON_BEFORE_PUSH,
    PH_DAEMON_REQUEST_UNANSWERED,
    PH_DAEMON_APPLIED_ANSWER_LOST,
    PH_DAEMON_AFTER_RESULTS,
    PH__COUNT
};

static const char *const phase_names[PH__COUNT] = {
    "record: before its commit",
    "record: committed, not yet confirmed",
    "record: confirmed, before its exit",
    "sync: before its push reached the server",
    "sync: push sent, the server had not applied it",
    "sync: server applied, answer not recorded",
    "sync: after the results (pull, compaction)",
    "sync: nothing was pending (startup or pull)",
    "daemon: no push reached the server",
    "daemon: push sent, the server had not applied it",
    "daemon: server applied, answer not recorded",
    "daemon: after the results, or idle",
};

typedef struct fx {
    th_server_t srv;
    bool started;
    char secret[400], db[400];
    attempt_t *att;
    int natt, capatt;
    int phases[PH__COUNT];
    int kills, record_runs, sync_runs, daemon_runs, completed_records, completed_syncs;
    int64_t avg_record_us, avg_sync_us; /* from runs that were not killed */
} fx_t;

/* ---- looking at the journal and the server between runs ---- */

typedef struct jsnap {
    int64_t last_seq, pending, inflight;
} jsnap_t;

/* Reads the journal's outbox figures through a read-only SQLite connection of our own: opening it
 * as a journal user would mark it closed cleanly, and hide the kill from the next command. */
static void journal_snap(const fx_t *f, jsnap_t *s)
{
    memset(s, 0, sizeof *s);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        db,
        /* the last seq given: schema 3 keeps the highest compacted from the top in sync_state */
        "SELECT max(coalesce((SELECT max(seq) FROM outbox), 0), (SELECT coalesce(max(v), 0) "
        "FROM sync_state WHERE k = 'outbox_last_deleted')),"
        " (SELECT count(*) FROM outbox WHERE state = 0),"
        " (SELECT count(*) FROM outbox WHERE state = 1)",
        -1, &st, NULL);
    if (rc != SQLITE_OK)
        fail_msg("reading the journal: %s", sqlite3_errmsg(db));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    s->last_seq = sqlite3_column_int64(st, 0);
    s->pending = sqlite3_column_int64(st, 1);
    s->inflight = sqlite3_column_int64(st, 2);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

typedef struct ssnap {
    int64_t push, applied;
} ssnap_t;

static int64_t json_int_after(const char *body, const char *key)
{
    const char *p = strstr(body, key);
    assert_non_null(p);
    return strtoll(p + strlen(key), NULL, 10);
}

static void server_snap(const fx_t *f, ssnap_t *s)
{
    th_resp_t r;
    th_req_opts_t ao = {.bearer = TH_ADMIN_TOKEN};
    assert_true(th_request(NULL, f->srv.url, "GET", "/admin/v1/stats", 0, NULL, 0, &ao, &r));
    assert_int_equal(r.status, 200);
    s->push = json_int_after(r.body, "\"push\":");
    s->applied = json_int_after(r.body, "\"applied\":");
    th_resp_free(&r);
}

/* Classifies a killed sync or daemon by what changed in the journal and on the server. */
static int sync_phase(bool daemon, const jsnap_t *jb, const jsnap_t *ja, const ssnap_t *sb,
                      const ssnap_t *sa)
{
    if (sa->push == sb->push) {
        if (daemon)
            return PH_DAEMON_BEFORE_PUSH;
        return jb->pending + jb->inflight == 0 ? PH_SYNC_NOTHING_TO_PUSH : PH_SYNC_BEFORE_PUSH;
    }
    if (ja->inflight > 0 && sa->applied > sb->applied)
        return daemon ? PH_DAEMON_APPLIED_ANSWER_LOST : PH_SYNC_APPLIED_ANSWER_LOST;
    if (ja->inflight > 0)
        return daemon ? PH_DAEMON_REQUEST_UNANSWERED : PH_SYNC_REQUEST_UNANSWERED;
    return daemon ? PH_DAEMON_AFTER_RESULTS : PH_SYNC_AFTER_RESULTS;
}

/* ---- the commands ---- */

static void add_words(const char **args, int *n, const char *const *words)
{
    for (size_t i = 0; words[i] != NULL; i++)
        args[(*n)++] = words[i];
}

#define ADD(...) add_words(args, &n, (const char *const[]){__VA_ARGS__, NULL})

/* Builds the arguments of a record command for attempt a (args holds 24; its marker is formatted
 * in buf; an attendance gets its fresh id here). */
static void record_args(fx_t *f, attempt_t *a, const char **args, char *buf, size_t cap)
{
    int n = 0;
    int i = a->value;
    ADD("--db", f->db);
    switch (a->kind) {
    case K_LOG:
        snprintf(buf, cap, "{\"k\":\"L%d\"}", i);
        ADD("ticket", "log", "T1", buf);
        break;
    case K_ESCALATE:
        snprintf(buf, cap, "E%d", i);
        ADD("ticket", "escalate", "T1", "--note", buf);
        break;
    case K_MERGE:
        snprintf(buf, cap, "{\"m%d\":%d}", i, i);
        ADD("job", "merge", "TOUR1", buf);
        break;
    case K_ATTENDANCE:
        tc_op_id(a->uuid);
        snprintf(buf, cap, "p%d", i);
        ADD("attendance", i % 2 ? "checkout" : "checkin", "--id", a->uuid, "--people", buf,
            "--site", "s1", "--lat", "52.5", "--lon", "13.4");
        break;
    case K_SET:
        snprintf(buf, cap, "seqno=%d", i);
        ADD("job", "set", "J2", buf);
        break;
    case K_CHECKPOINT:
        snprintf(buf, cap, "expirytime=%d", i);
        ADD("checkpoint", "update", "CP1", buf);
        break;
    case K_CREATE:
        snprintf(buf, cap, "TC%d", i);
        ADD("ticket", "create", buf, "priority=HIGH");
        break;
    case K__COUNT: fail();
    }
    args[n] = NULL;
}

static attempt_t *new_attempt(fx_t *f, int value)
{
    if (f->natt == f->capatt) {
        f->capatt = f->capatt ? 2 * f->capatt : 256;
        f->att = fsa_realloc(f->att, (size_t)f->capatt * sizeof *f->att);
        assert_non_null(f->att);
    }
    attempt_t *a = &f->att[f->natt++];
    memset(a, 0, sizeof *a);
    a->kind = (op_kind_t)rng_below(K__COUNT);
    a->value = value;
    return a;
}

/* The op id of "recorded op <uuid> (seq N)", or "" when the command did not get that far. */
static void confirmed_op(const proc_t *p, char out[40])
{
    out[0] = '\0';
    const char *m = strstr(p->out, "recorded op ");
    if (m == NULL)
        return;
    m += strlen("recorded op ");
    size_t n = strcspn(m, " \n");
    if (n == 36)
        snprintf(out, 40, "%.36s", m);
}

static void run_ok(const char *const *args, const char *what)
{
    proc_t p;
    proc_start(&p, args, -1);
    procs_run(&p, 1, 300 * 1000000LL);
    if (p.status != 0)
        fail_msg("%s exited %d: %s%s", what, p.status, p.err, p.out);
}

/* ---- fixture ---- */

static int setup(void **state)
{
    fx_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL || !th_dir_make(f->srv.dir) || !th_write_files(&f->srv, 2))
        return -1;
    snprintf(f->secret, sizeof f->secret, "%s/dev000.secret", f->srv.dir);
    snprintf(f->db, sizeof f->db, "%s/dev000.db", f->srv.dir);
    fsa_signer_key_t key;
    th_device_key(0, &key);
    char hex[70];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key.bytes[i]);
    int fd = open(f->secret, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, hex, 64) != 64)
        return -1;
    close(fd);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->started)
        th_server_stop(&f->srv);
    th_dir_remove(f->srv.dir);
    fsa_free(f->att);
    fsa_free(f);
    return 0;
}

static int64_t env_int(const char *name, int64_t dflt)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return dflt;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 0);
    if (errno != 0 || *end != '\0')
        fail_msg("%s=%s is not an integer", name, v);
    return x;
}

static int iterations(void)
{
    int64_t n =
        FSA_TEST_EMULATOR[0] != '\0' ? DEFAULT_ITERATIONS_EMULATED : DEFAULT_ITERATIONS_HOST;
    const char *scale = getenv("FSA_TEST_SCALE");
    if (scale != NULL && *scale != '\0') {
        char *end;
        double s = strtod(scale, &end);
        if (*end != '\0' || !(s > 0))
            fail_msg("FSA_TEST_SCALE=%s is not a positive factor", scale);
        n = (int64_t)((double)n * s);
        if (n < 10)
            n = 10;
    }
    n = env_int("FSA_CRASH_ITERATIONS", n);
    if (n < 1 || n > MAX_ITERATIONS)
        fail_msg("FSA_CRASH_ITERATIONS must be 1..%d", MAX_ITERATIONS);
    return (int)n;
}

/* A kill moment for a run of about avg_us: uniform over [0, 1.2 avg], so kills land from before
 * the program has started up to its end; with probability keep_pct, none (it runs to its end). */
static int64_t kill_moment(int64_t avg_us, int keep_pct)
{
    if (rng_below(100) < keep_pct)
        return -1;
    return rng_below(avg_us * 6 / 5 + 1);
}

/* A moving mean of the run times of commands that were never to be killed (those that merely
 * finished before their kill moment would bias it short). */
static void learn(int64_t *avg_us, const proc_t *p)
{
    if (p->kill_at_us >= 0 || p->status != 0)
        return;
    *avg_us = *avg_us == 0 ? p->dur_us : (*avg_us * 7 + p->dur_us) / 8;
}

/* After a record run: was the op committed, confirmed; where did a kill land. */
static void settle_record(fx_t *f, attempt_t *a, const proc_t *p, const jsnap_t *jb,
                          const jsnap_t *ja)
{
    confirmed_op(p, a->op_id);
    a->committed = ja->last_seq > jb->last_seq;
    if (a->committed) {
        a->first_seq = jb->last_seq + 1;
        a->last_seq = ja->last_seq;
    }
    f->record_runs++;
    if (proc_killed(p)) {
        f->kills++;
        int ph = a->op_id[0] ? PH_REC_AFTER_CONFIRM
                             : (a->committed ? PH_REC_COMMITTED_UNCONFIRMED : PH_REC_BEFORE_COMMIT);
        f->phases[ph]++;
        return;
    }
    /* Not killed: it must have recorded, whatever the kills before it left behind. */
    if (p->status != 0 || a->op_id[0] == '\0')
        fail_msg("%s %d exited %d without a kill: %s%s", kind_names[a->kind], a->value, p->status,
                 p->err, p->out);
    assert_true(a->committed);
    f->completed_records++;
    learn(&f->avg_record_us, p);
}

/* ---- the final checks, on the server's store with the journal attached ---- */

static int64_t q_int(sqlite3 *db, const char *sql, const char *arg);

/* How many of a's ops (by the seqs they took) the server applied to the jobneed id. */
static int ops_applied_on(sqlite3 *db, const attempt_t *a, const char *id)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM ops WHERE device = 'dev000' AND seq BETWEEN %" PRId64
             " AND %" PRId64 " AND type = 'jobneed' AND id = ?1 AND status = 0",
             a->first_seq, a->last_seq);
    return (int)q_int(db, sql, id);
}

static int64_t q_int(sqlite3 *db, const char *sql, const char *arg)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    if (arg != NULL)
        sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The fields of an entity on the server (malloc'ed), and its version. */
static char *q_fields(sqlite3 *db, const char *type, const char *id, int64_t *version)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT fields, version FROM entities WHERE type = ?1 "
                                        "AND id = ?2",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_TRANSIENT);
    char *out = NULL;
    *version = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        out = fsa_strdup((const char *)sqlite3_column_text(st, 0));
        *version = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return out;
}

static int occurrences(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; p != NULL && (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void final_checks(fx_t *f, int64_t *accepted_out, int64_t *unconfirmed_out)
{
    /* The journal: intact, drained, nothing parked, nothing rebased. */
    fsa_journal_t *j = NULL;
    char err[320];
    fsa_journal_opts_t jo = {0};
    assert_fsa_ok(fsa_journal_open(fsa_port_posix(), f->db, &jo, &j, err, sizeof err));
    if (fsa_journal_integrity(j, err, sizeof err) != FSA_OK)
        fail_msg("journal integrity: %s", err);
    fsa_outbox_stats_t os;
    assert_fsa_ok(fsa_outbox_stats(j, &os));
    fsa_journal_close(j);
    if (os.pending != 0 || os.inflight != 0 || os.conflicts != 0 || os.rejected != 0)
        fail_msg("after the final sync: %" PRId64 " pending, %" PRId64 " in flight, %" PRId64
                 " conflicts, %" PRId64 " rejected",
                 os.pending, os.inflight, os.conflicts, os.rejected);

    assert_int_equal(th_server_stop(&f->srv), 0);
    f->started = false;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->srv.db, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL),
                     SQLITE_OK);
    char uri[600];
    snprintf(uri, sizeof uri, "file:%s?mode=ro", f->db);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "ATTACH DATABASE ?1 AS j", -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_text(st, 1, uri, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE)
        fail_msg("attaching the journal: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);

    assert_int_equal(q_int(db, "SELECT count(*) FROM j.conflicts", NULL), 0); /* none, ever */
    /* The server's store is intact too. */
    assert_int_equal(q_int(db,
                           "SELECT count(*) FROM pragma_integrity_check WHERE "
                           "integrity_check <> 'ok'",
                           NULL),
                     0);

    /* Every op the journal ever committed (done ops keep their ids for the audit period) is on
     * the server exactly once, applied, under its own seq; the server has none the journal does
     * not know; no seq was sent under two op ids. */
    const char *jops = "(SELECT op_id, seq FROM j.outbox UNION ALL SELECT op_id, seq FROM "
                       "j.done_ops)";
    char sql[1024];
    int64_t journal_ops = 0, last_seq = 0;
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", jops);
    journal_ops = q_int(db, sql, NULL);
    last_seq = q_int(db,
                     "SELECT max(coalesce((SELECT max(seq) FROM j.outbox), 0), (SELECT "
                     "coalesce(max(v), 0) FROM j.sync_state WHERE k = 'outbox_last_deleted'))",
                     NULL);
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT op_id) FROM %s", jops);
    int64_t distinct = q_int(db, sql, NULL);
    /* Seqs are 1..last (a killed transaction takes none): the journal forgot none. */
    if (distinct != journal_ops || journal_ops != last_seq)
        fail_msg("the journal knows %" PRId64 " ops (%" PRId64 " distinct ids) of the %" PRId64
                 " it recorded",
                 journal_ops, distinct, last_seq);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM %s AS l WHERE (SELECT count(*) FROM ops o WHERE "
             "o.op_id = l.op_id AND o.seq = l.seq AND o.device = 'dev000' AND o.status = 0) <> 1",
             jops);
    int64_t missing = q_int(db, sql, NULL);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM ops o WHERE o.device = 'dev000' AND o.op_id NOT IN "
             "(SELECT op_id FROM %s)",
             jops);
    int64_t extra = q_int(db, sql, NULL);
    int64_t server_ops = q_int(db, "SELECT count(*) FROM ops WHERE device = 'dev000'", NULL);
    int64_t seqs = q_int(db, "SELECT count(DISTINCT seq) FROM ops WHERE device = 'dev000'", NULL);
    if (missing != 0 || extra != 0 || server_ops != journal_ops || seqs != server_ops)
        fail_msg("journal ops %" PRId64 ", server ops %" PRId64 " (%" PRId64 " seqs): %" PRId64
                 " not applied exactly once, %" PRId64 " unknown to the journal",
                 journal_ops, server_ops, seqs, missing, extra);
    /* Each entity's version counts the ops applied to it: no op was applied twice. */
    assert_int_equal(q_int(db,
                           "SELECT count(*) FROM entities e WHERE e.version <> (SELECT count(*) "
                           "FROM ops o WHERE o.type = e.type AND o.id = e.id AND o.status = 0)",
                           NULL),
                     0);

    /* Every accepted op: on the server once, applied; its marker there exactly once. A
     * committed-but-unconfirmed op is there too (it is in the journal); one killed before its
     * commit is not; none is there twice. */
    int64_t v_t1 = 0, v_tour = 0, v_j2 = 0, v_cp1 = 0;
    char *t1 = q_fields(db, "ticket", "T1", &v_t1);
    char *tour = q_fields(db, "jobneed", "TOUR1", &v_tour);
    char *j2 = q_fields(db, "jobneed", "J2", &v_j2);
    char *cp1 = q_fields(db, "jobneed", "CP1", &v_cp1);
    assert_non_null(t1);
    assert_non_null(tour);
    assert_non_null(j2);
    assert_non_null(cp1);
    int64_t accepted = 0, unconfirmed = 0;
    int last_set = -1, last_cp = -1, escalations = 0, sets = 0, checkpoints = 0;
    for (int i = 0; i < f->natt; i++) {
        attempt_t *a = &f->att[i];
        if (a->op_id[0] != '\0') {
            accepted++;
            if (q_int(db, "SELECT count(*) FROM ops WHERE op_id = ?1 AND status = 0", a->op_id) !=
                1)
                fail_msg("accepted op %s (%s %d) is not applied on the server", a->op_id,
                         kind_names[a->kind], a->value);
        } else if (a->committed) {
            unconfirmed++;
        }
        char m[64];
        int want = a->committed ? 1 : 0;
        int got = 0;
        switch (a->kind) {
        case K_LOG:
            snprintf(m, sizeof m, "\"L%d\"", a->value);
            got = occurrences(t1, m);
            break;
        case K_ESCALATE:
            snprintf(m, sizeof m, "\"E%d\"", a->value);
            got = occurrences(t1, m);
            escalations += got;
            break;
        case K_MERGE:
            snprintf(m, sizeof m, "\"m%d\":%d", a->value, a->value);
            got = occurrences(tour, m);
            break;
        case K_ATTENDANCE: {
            int64_t v = 0;
            char *fa = q_fields(db, "attendance", a->uuid, &v);
            got = fa != NULL ? (int)v : 0; /* a create: version 1 */
            fsa_free(fa);
            break;
        }
        case K_SET:
            /* A set leaves no marker (the next one overwrites it): its op, found by the seq it
             * took in the journal, must be applied on J2, once. */
            if (a->committed) {
                last_set = a->value;
                sets++;
                got = ops_applied_on(db, a, "J2");
            }
            break;
        case K_CHECKPOINT:
            /* Its group: the set on CP1 and the merge into TOUR1, each applied once. */
            if (a->committed) {
                last_cp = a->value;
                checkpoints++;
                got = ops_applied_on(db, a, "CP1");
                if (ops_applied_on(db, a, "TOUR1") != 1)
                    fail_msg("checkpoint update %d (seqs %" PRId64 "-%" PRId64
                             "): its merge into TOUR1 is not applied once on the server",
                             a->value, a->first_seq, a->last_seq);
            }
            break;
        case K_CREATE: {
            snprintf(m, sizeof m, "TC%d", a->value);
            int64_t v = 0;
            char *ft = q_fields(db, "ticket", m, &v);
            got = ft != NULL ? (int)v : 0;
            fsa_free(ft);
            break;
        }
        case K__COUNT: fail_msg("op kind %d out of range", (int)a->kind); return;
        }
        if (got != want)
            fail_msg("%s %d (op %s, %s): found %d times on the server, expected %d",
                     kind_names[a->kind], a->value, a->op_id[0] ? a->op_id : "unconfirmed",
                     a->committed ? "committed" : "never committed", got, want);
    }
    /* The increments of the escalations: one level per escalation that reached the server. */
    int64_t level = 0;
    const char *lv = strstr(t1, "\"level\":");
    assert_non_null(lv);
    level = strtoll(lv + strlen("\"level\":"), NULL, 10);
    assert_int_equal(level, escalations);
    /* J2 and CP1 were each created by one op; every other op applied to them is a committed
     * set or checkpoint update of the loop. */
    assert_int_equal(v_j2, 1 + sets);
    assert_int_equal(v_cp1, 1 + checkpoints);
    /* Sets are recorded one after another: the last committed one stands. */
    char m[64];
    if (last_set >= 0) {
        snprintf(m, sizeof m, "\"seqno\":%d", last_set);
        if (strstr(j2, m) == NULL)
            fail_msg("J2 on the server is %s; the last set recorded was seqno %d", j2, last_set);
    }
    if (last_cp >= 0) {
        snprintf(m, sizeof m, "\"expirytime\":%d", last_cp);
        if (strstr(cp1, m) == NULL)
            fail_msg("CP1 on the server is %s; the last update recorded was expirytime %d", cp1,
                     last_cp);
    }
    fsa_free(t1);
    fsa_free(tour);
    fsa_free(j2);
    fsa_free(cp1);
    sqlite3_close(db);
    *accepted_out = accepted;
    *unconfirmed_out = unconfirmed;
}

/* ---- the loop ---- */

static void test_crash_loop__kills_lose_and_double_nothing(void **state)
{
    fx_t *f = *state;
    int64_t t_start = mono_us();
    uint64_t seed = (uint64_t)env_int("FSA_CRASH_SEED", 0);
    if (seed == 0)
        seed = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ (uint64_t)mono_us();
    rng_state = seed;
    int n = iterations();
    /* cppcheck sees the host build only, where FSA_TEST_EMULATOR is "": */
    bool emulated = FSA_TEST_EMULATOR[0] != '\0';
    // cppcheck-suppress knownConditionTrueFalse
    const int64_t hard_us = (emulated ? 300 : 60) * 1000000LL;
    const char *how = emulated ? " (emulated)" : ""; // cppcheck-suppress knownConditionTrueFalse
    print_message("crash loop: seed %" PRIu64 " (replay: FSA_CRASH_SEED=%" PRIu64
                  "), %d iterations%s\n",
                  seed, seed, n, how);

    /* A little latency widens the window of a request in flight; nothing else is faulty. */
    const char *srv_args[] = {"--fault-latency-ms", "15", NULL};
    assert_true(th_server_start(&f->srv, srv_args));
    f->started = true;
    const char *init[] = {"--db",     f->db,      "init",          "--device-id", "dev000",
                          "--server", f->srv.url, "--secret-file", f->secret,     NULL};
    run_ok(init, "init");
    const char *const setups[][8] = {
        {"ticket", "create", "T1", NULL},
        {"job", "create", "TOUR1", NULL},
        {"job", "create", "CP1", "--parent", "TOUR1", "seqno=1", NULL},
        {"job", "create", "J2", NULL},
    };
    for (size_t s = 0; s < sizeof setups / sizeof setups[0]; s++) {
        const char *a[12] = {"--db", f->db};
        int k = 2;
        for (int w = 0; setups[s][w] != NULL; w++)
            a[k++] = setups[s][w];
        a[k] = NULL;
        proc_t p;
        proc_start(&p, a, -1);
        procs_run(&p, 1, hard_us);
        if (p.status != 0)
            fail_msg("setup record exited %d: %s", p.status, p.err);
        learn(&f->avg_record_us, &p);
    }
    const char *sync_args[] = {"--db", f->db, "sync", "--now", NULL};
    const char *daemon_args[] = {"--db", f->db,           "run", "--interval",
                                 "1",    "--stall-after", "600", NULL};
    {
        proc_t p;
        proc_start(&p, sync_args, -1);
        procs_run(&p, 1, hard_us);
        if (p.status != 0)
            fail_msg("first sync exited %d: %s", p.status, p.err);
        learn(&f->avg_sync_us, &p);
    }

    /* Each iteration: a record alone (45%), a sync alone (25%), a record beside a sync (15%) or
     * beside the daemon (15%); each process killed at its own random moment, except that 15% of
     * records and syncs are left to finish (they are the accepted ops, and time the runs). */
    for (int it = 0; it < n; it++) {
        int mode = (int)rng_below(100);
        bool rec = mode < 45 || mode >= 70;
        bool syn = mode >= 45 && mode < 85;
        bool dmn = mode >= 85;
        jsnap_t jb, ja;
        ssnap_t sb, sa;
        journal_snap(f, &jb);
        server_snap(f, &sb);
        proc_t ps[2];
        int np = 0;
        attempt_t *a = NULL;
        const char *rargs[24];
        char buf[128];
        int ir = -1, is = -1;
        if (rec) {
            a = new_attempt(f, it);
            record_args(f, a, rargs, buf, sizeof buf);
            ir = np;
            proc_start(&ps[np++], rargs, kill_moment(f->avg_record_us, 15));
        }
        if (syn) {
            is = np;
            proc_start(&ps[np++], sync_args, kill_moment(f->avg_sync_us, 15));
        }
        if (dmn) {
            is = np;
            int64_t span = f->avg_record_us + 2 * f->avg_sync_us;
            proc_start(&ps[np++], daemon_args, rng_below(span + 1));
        }
        procs_run(ps, np, hard_us);
        journal_snap(f, &ja);
        server_snap(f, &sa);
        if (ir >= 0)
            settle_record(f, a, &ps[ir], &jb, &ja);
        if (is >= 0) {
            proc_t *p = &ps[is];
            if (dmn) {
                f->daemon_runs++;
                /* A daemon never stops by itself: an exit is a refusal to start (a stale
                 * single-instance lock, a journal it cannot open). */
                if (!proc_killed(p))
                    fail_msg("the daemon exited %d by itself: %s", p->status, p->err);
                f->kills++;
                f->phases[sync_phase(true, &jb, &ja, &sb, &sa)]++;
            } else {
                f->sync_runs++;
                if (proc_killed(p)) {
                    f->kills++;
                    f->phases[sync_phase(false, &jb, &ja, &sb, &sa)]++;
                } else {
                    /* Alone, a sync after any kill must finish: a dead holder's SYNC lock is
                     * taken over, in-flight ops are resent. With a record beside it, that
                     * record may arrive after its push: 75, pending. */
                    if (p->status != 0 && !(rec && p->status == 75))
                        fail_msg("sync exited %d without a kill: %s%s", p->status, p->err, p->out);
                    f->completed_syncs++;
                    if (!rec)
                        learn(&f->avg_sync_us, p);
                }
            }
        }
        if ((it + 1) % 100 == 0)
            print_message("crash loop: %d/%d iterations, %d kills, %.1f s\n", it + 1, n, f->kills,
                          (double)(mono_us() - t_start) / 1e6);
    }
    int64_t t_loop = mono_us();

    /* Drain: one clean sync must do it (nothing is faulty and nobody else runs). */
    proc_t p;
    proc_start(&p, sync_args, -1);
    procs_run(&p, 1, hard_us);
    if (p.status != 0)
        fail_msg("the final sync exited %d: %s%s", p.status, p.err, p.out);
    int64_t accepted = 0, unconfirmed = 0;
    final_checks(f, &accepted, &unconfirmed);
    int64_t t_end = mono_us();

    print_message("crash loop: seed %" PRIu64 ", %d iterations: %d record runs, %d sync runs, "
                  "%d daemon runs; %d kills landed on a live process\n",
                  seed, n, f->record_runs, f->sync_runs, f->daemon_runs, f->kills);
    for (int ph = 0; ph < PH__COUNT; ph++)
        print_message("  %-48s %5d\n", phase_names[ph], f->phases[ph]);
    int by_kind[K__COUNT] = {0};
    for (int i = 0; i < f->natt; i++)
        if (f->att[i].op_id[0] != '\0')
            by_kind[f->att[i].kind]++;
    print_message("  accepted ops %" PRId64 " (", accepted);
    for (int k = 0; k < K__COUNT; k++)
        print_message("%s%s %d", k ? ", " : "", kind_names[k], by_kind[k]);
    print_message("), committed but unconfirmed %" PRId64 ", records finished %d, syncs "
                  "finished %d\n",
                  unconfirmed, f->completed_records, f->completed_syncs);
    print_message("  mean record run %.1f ms, sync run %.1f ms; loop %.1f s, drain and checks "
                  "%.1f s, total %.1f s\n",
                  (double)f->avg_record_us / 1e3, (double)f->avg_sync_us / 1e3,
                  (double)(t_loop - t_start) / 1e6, (double)(t_end - t_loop) / 1e6,
                  (double)(t_end - t_start) / 1e6);
}

int main(void)
{
    fsa_libs_use_allocator();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_crash_loop__kills_lose_and_double_nothing, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
