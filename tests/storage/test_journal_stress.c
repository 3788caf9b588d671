/* Stress tests for storage/journal.c: SIGKILL mid-recording, and many threads and processes. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <time.h>

#include "tests/storage/journal_test_util.h"

static const char ATT_FMT[] = "{\"people_id\":\"p%d\",\"site_id\":\"s1\",\"kind\":\"checkin\","
                              "\"at\":%d,\"lat\":1.25,\"lon\":2.5}";

static fsa_status_t record_checkin(fsa_journal_t *j, const char *id, int n, fsa_rec_t *rec)
{
    char fields[256];
    snprintf(fields, sizeof fields, ATT_FMT, n, n);
    return fsa_journal_create(j, FSA_TYPE_ATTENDANCE, id, fields, NULL, rec);
}

/* count, min and max of seq in the outbox, and whether op ids and entity ids are unique. */
static void outbox_shape(const char *path, int64_t *count, int64_t *min, int64_t *max)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT count(*), coalesce(min(seq), 0), "
                                        "coalesce(max(seq), 0), count(DISTINCT op_id), "
                                        "count(DISTINCT id) FROM outbox",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    *count = sqlite3_column_int64(st, 0);
    *min = sqlite3_column_int64(st, 1);
    *max = sqlite3_column_int64(st, 2);
    assert_int_equal(sqlite3_column_int64(st, 3), *count);
    assert_int_equal(sqlite3_column_int64(st, 4), *count);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static bool seq_exists(fsa_journal_t *j, int64_t seq, const char *op_id)
{
    fsa_op_t op;
    if (fsa_outbox_find(j, op_id, &op, NULL) != FSA_OK)
        return false;
    bool ok = op.seq == seq;
    fsa_op_clear(&op);
    return ok;
}

/* What the child tells the parent after each call returned: the op's seq and id. */
typedef struct report {
    int64_t seq;
    char op_id[FSA_OP_ID_BYTES];
} report_t;

static void child_record_forever(const char *path, int iter, int fd)
{
    fsa_journal_t *j = NULL;
    fsa_journal_opts_t o = {.create = true};
    if (fsa_journal_open(fsa_port_posix(), path, &o, &j, NULL, 0) != FSA_OK)
        _exit(3);
    for (int k = 0;; k++) {
        char id[48];
        snprintf(id, sizeof id, "A%d-%d", iter, k);
        fsa_rec_t rec;
        if (record_checkin(j, id, k, &rec) != FSA_OK)
            _exit(4);
        report_t r = {.seq = rec.seq};
        memcpy(r.op_id, rec.op_id, sizeof r.op_id);
        if (write(fd, &r, sizeof r) != (ssize_t)sizeof r)
            _exit(5);
    }
}

static void test_record__survives_sigkill_at_random_moments(void **state)
{
    (void)state;
    test_dir_t d;
    test_dir_make(&d);
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    print_message("kill-timing seed %u\n", seed);
    const int iterations = 50;
    int64_t reported_total = 0;
    for (int iter = 0; iter < iterations; iter++) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            child_record_forever(d.path, iter, p[1]);
        }
        close(p[1]);
        /* Every fifth child is killed 1-40 ms after its fork, wherever it is: in the journal's
         * open, its recovery of the last child's WAL, its first record. The others once they have
         * recorded (their first report: an open under qemu can take longer than the whole
         * window, and then no child of a run ever recorded), 1-40 ms after: mid-transaction,
         * mid-fsync. */
        if (iter % 5 != 0) {
            struct pollfd pfd = {.fd = p[0], .events = POLLIN};
            if (poll(&pfd, 1, 60000) != 1)
                fail_msg("iteration %d: the child recorded nothing in a minute", iter);
        }
        fsa_port_posix()->sleep(NULL, (1 + rand() % 40) * FSA_NS_PER_MS);
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status)); /* it died by the kill, not by an error exit */

        fsa_journal_t *j = NULL;
        char err[256];
        fsa_journal_opts_t o = {.create = true};
        assert_fsa_ok(fsa_journal_open(fsa_port_posix(), d.path, &o, &j, err, sizeof err));
        assert_fsa_ok(fsa_journal_integrity(j, err, sizeof err));
        report_t r;
        while (read(p[0], &r, sizeof r) == (ssize_t)sizeof r) {
            /* every record whose call returned is there, with the seq it was given */
            if (!seq_exists(j, r.seq, r.op_id))
                fail_msg("iteration %d: op %s (seq %lld) returned but is missing", iter, r.op_id,
                         (long long)r.seq);
            reported_total++;
        }
        close(p[0]);
        fsa_journal_close(j);
        int64_t count, min, max;
        outbox_shape(d.path, &count, &min, &max);
        /* no gap and no repeat in seq, across all the crashes so far */
        if (count > 0) {
            assert_int_equal(min, 1);
            assert_int_equal(max, count);
        }
    }
    assert_true(reported_total > 0);
    print_message("%d kills, %lld records confirmed\n", iterations, (long long)reported_total);
    test_dir_remove(&d);
}

enum { PROCS = 4, THREADS = 12, PER_THREAD = 20 };

typedef struct worker {
    const char *path;
    fsa_journal_t *shared; /* NULL: the worker opens its own handle */
    int proc, thread;
    int failures;
} worker_t;

static void *record_worker(void *arg)
{
    worker_t *w = arg;
    fsa_journal_t *j = w->shared;
    fsa_journal_opts_t o = {0};
    if (j == NULL && fsa_journal_open(fsa_port_posix(), w->path, &o, &j, NULL, 0) != FSA_OK) {
        w->failures = PER_THREAD;
        return NULL;
    }
    for (int k = 0; k < PER_THREAD; k++) {
        char id[48];
        snprintf(id, sizeof id, "P%d-T%d-%d", w->proc, w->thread, k);
        fsa_rec_t rec;
        fsa_status_t st = record_checkin(j, id, k, &rec);
        if (st != FSA_OK) {
            fprintf(stderr, "record %s: %s (%s)\n", id, fsa_status_str(st), rec.error);
            w->failures++;
        }
    }
    if (w->shared == NULL)
        fsa_journal_close(j);
    return NULL;
}

/* One process: THREADS threads, half with their own handle, half sharing one. */
static int run_process(const char *path, int proc)
{
    fsa_port_t *p = fsa_port_posix();
    fsa_journal_t *shared = NULL;
    fsa_journal_opts_t o = {0};
    if (fsa_journal_open(p, path, &o, &shared, NULL, 0) != FSA_OK)
        return 1;
    worker_t w[THREADS];
    fsa_thread_t *t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker_t){.path = path, .shared = i % 2 ? shared : NULL, .proc = proc, .thread = i};
        if (p->thread_create(p->ctx, &t[i], record_worker, &w[i]) != FSA_OK)
            return 1;
    }
    int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        (void)p->thread_join(p->ctx, t[i], NULL);
        failures += w[i].failures;
    }
    fsa_journal_close(shared);
    return failures > 0 ? 1 : 0;
}

static void test_record__threads_and_processes_lose_nothing(void **state)
{
    (void)state;
    test_dir_t d;
    test_dir_make(&d);
    fsa_journal_t *j = NULL;
    fsa_journal_opts_t o = {.create = true};
    assert_fsa_ok(fsa_journal_open(fsa_port_posix(), d.path, &o, &j, NULL, 0));
    fsa_journal_close(j);
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0)
            _exit(run_process(d.path, p));
    }
    for (int p = 0; p < PROCS; p++) {
        int status;
        assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    int64_t count, min, max;
    outbox_shape(d.path, &count, &min, &max);
    assert_int_equal(count, PROCS * THREADS * PER_THREAD);
    assert_int_equal(min, 1);
    assert_int_equal(max, count);
    assert_fsa_ok(fsa_journal_open(fsa_port_posix(), d.path, &o, &j, NULL, 0));
    char err[256];
    assert_fsa_ok(fsa_journal_integrity(j, err, sizeof err));
    for (int p = 0; p < PROCS; p++)
        for (int t = 0; t < THREADS; t++)
            for (int k = 0; k < PER_THREAD; k += 7) {
                char id[48];
                snprintf(id, sizeof id, "P%d-T%d-%d", p, t, k);
                assert_fsa_ok(fsa_journal_get(j, FSA_TYPE_ATTENDANCE, id, NULL, NULL, NULL));
            }
    fsa_journal_close(j);
    test_dir_remove(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record__survives_sigkill_at_random_moments),
        cmocka_unit_test(test_record__threads_and_processes_lose_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
