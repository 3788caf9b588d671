/* fieldsync tests: libfieldsync's named locks (agent/lib/record.c): processes taking turns on
 * TICKET_ESCALATION, a holder stopped past its lease fenced off, a timeout naming the holder, the
 * caller's lock checked against the verb's, the statistics. Leases are shortened through the
 * library's test hook (fsl__test_lock_times), so no test waits out the platform's 15 s. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/lib/internal.h"
#include "tests/agent/lib/lib_fixture.h"

static int locks_teardown(void **state)
{
    for (int k = 0; k < FSA__LOCK_KIND_COUNT; k++)
        fsl__test_lock_times((fsa_lock_kind_t)k, 0, 0);
    return cfx_teardown(state);
}

/* A second handle on the fixture's journal with its own label (and lock manager). */
static fieldsync_t *open_as(const cfx_t *f, const char *label)
{
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = f->db;
    cfg.label = label;
    fieldsync_t *fs = NULL;
    if (fieldsync_open(&cfg, &fs) != FIELDSYNC_OK) {
        fprintf(stderr, "open_as %s: %s\n", label, fieldsync_errmsg(fs));
        (void)fieldsync_close(fs);
        return NULL;
    }
    return fs;
}

static void put(int fd, char c)
{
    assert_int_equal(write(fd, &c, 1), 1);
}

static char get(int fd)
{
    char c = 0;
    if (read(fd, &c, 1) != 1)
        c = 0;
    return c;
}

/* Child side: the same, without cmocka (exit codes say what failed). */
static void child_put(int fd, char c)
{
    if (write(fd, &c, 1) != 1)
        _exit(90);
}

static int child_exit_status(pid_t pid)
{
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Process A: holds TICKET_ESCALATION on ticket:T1 (says 'h'), escalates under it when told
 * ('g'), releases, says 'd'. */
static void proc_a(const cfx_t *f, int in, int out)
{
    fieldsync_t *fs = open_as(f, "proc-a");
    if (fs == NULL)
        _exit(10);
    fieldsync_lock_t *l = NULL;
    if (fieldsync_lock_acquire(fs, "TICKET_ESCALATION", "ticket:T1", -1, &l) != FIELDSYNC_OK)
        _exit(11);
    child_put(out, 'h');
    char c = 0;
    if (read(in, &c, 1) != 1 || c != 'g')
        _exit(12);
    if (fieldsync_ticket_escalate(fs, "T1", NULL, "by a", l, NULL) != FIELDSYNC_OK)
        _exit(13);
    if (fieldsync_lock_release(l) != FIELDSYNC_OK)
        _exit(14);
    child_put(out, 'd');
    _exit(fieldsync_close(fs) == FIELDSYNC_OK ? 0 : 15);
}

/* Process B: finds the lock held by proc-a (a try that names it), says 'w', then escalates with
 * the library taking the lock itself (waiting for A), says 'd'. */
static void proc_b(const cfx_t *f, int out)
{
    fieldsync_t *fs = open_as(f, "proc-b");
    if (fs == NULL)
        _exit(20);
    fieldsync_lock_t *l = NULL;
    if (fieldsync_lock_acquire(fs, "TICKET_ESCALATION", "ticket:T1", 0, &l) !=
            FIELDSYNC_ELOCKTIMEOUT ||
        l != NULL)
        _exit(21);
    if (strstr(fieldsync_errmsg(fs), "proc-a") == NULL)
        _exit(22);
    child_put(out, 'w');
    if (fieldsync_ticket_escalate(fs, "T1", NULL, "by b", NULL, NULL) != FIELDSYNC_OK)
        _exit(23);
    child_put(out, 'd');
    _exit(fieldsync_close(fs) == FIELDSYNC_OK ? 0 : 24);
}

static void test_escalate__two_processes_take_turns(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_ticket_create(f->fs, "T1", NULL, NULL));
    int a_in[2], a_out[2], b_out[2];
    assert_int_equal(pipe(a_in), 0);
    assert_int_equal(pipe(a_out), 0);
    assert_int_equal(pipe(b_out), 0);
    pid_t a = fork();
    assert_true(a >= 0);
    if (a == 0)
        proc_a(f, a_in[0], a_out[1]);
    assert_int_equal(get(a_out[0]), 'h');
    pid_t b = fork();
    assert_true(b >= 0);
    if (b == 0)
        proc_b(f, b_out[1]);
    /* B saw A's lock and goes on to wait for it; A records under it and lets go; B follows. */
    assert_int_equal(get(b_out[0]), 'w');
    put(a_in[1], 'g');
    assert_int_equal(get(a_out[0]), 'd');
    assert_int_equal(get(b_out[0]), 'd');
    assert_int_equal(child_exit_status(a), 0);
    assert_int_equal(child_exit_status(b), 0);
    for (int i = 0; i < 2; i++) {
        close(a_in[i]);
        close(a_out[i]);
        close(b_out[i]);
    }
    char *json = cfx_get(f->fs, "ticket", "T1");
    assert_non_null(strstr(json, "\"level\":2"));
    const char *pa = strstr(json, "\"note\":\"by a\""), *pb = strstr(json, "\"note\":\"by b\"");
    assert_non_null(pa);
    assert_non_null(pb);
    assert_true(pa < pb); /* in turn: A's escalation first */
    fieldsync_free(json);
}

/* Process S: holds the lock (says 'h'), is stopped, and when told ('g') tries to record under
 * its lock: exits 0 when fenced, and 0 too for the release that finds it lost. */
static void proc_stopped(const cfx_t *f, int in, int out)
{
    fieldsync_t *fs = open_as(f, "sleeper");
    if (fs == NULL)
        _exit(30);
    fieldsync_lock_t *l = NULL;
    if (fieldsync_lock_acquire(fs, "TICKET_ESCALATION", "ticket:T1", -1, &l) != FIELDSYNC_OK)
        _exit(31);
    child_put(out, 'h');
    char c = 0;
    if (read(in, &c, 1) != 1 || c != 'g')
        _exit(32);
    fieldsync_status_t st = fieldsync_ticket_escalate(fs, "T1", NULL, "late", l, NULL);
    if (st != FIELDSYNC_EFENCED)
        _exit(33);
    if (fieldsync_lock_release(l) != FIELDSYNC_ELOST)
        _exit(34);
    _exit(fieldsync_close(fs) == FIELDSYNC_OK ? 0 : 35);
}

static void test_escalate__holder_stopped_past_its_lease_is_fenced(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_ticket_create(f->fs, "T1", NULL, NULL));
    /* A 300 ms lease; the other side waits up to 5 s for it to run out. */
    fsl__test_lock_times(FSA_LOCK_TICKET_ESCALATION, 300 * FSA_NS_PER_MS, 5 * FSA_NS_PER_S);
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    pid_t s = fork();
    assert_true(s >= 0);
    if (s == 0)
        proc_stopped(f, in[0], out[1]);
    assert_int_equal(get(out[0]), 'h');
    assert_int_equal(kill(s, SIGSTOP), 0);
    int status = 0;
    assert_int_equal(waitpid(s, &status, WUNTRACED), s);
    assert_true(WIFSTOPPED(status));
    /* The stopped holder is alive (its liveness lock stays), so this waits out its lease. */
    fsa_mono_t t0 = fsa_port_posix()->mono_now(NULL);
    assert_fs_ok(f->fs, fieldsync_ticket_escalate(f->fs, "T1", NULL, "on time", NULL, NULL));
    assert_true(test_real_elapsed_ns(t0) < 5 * FSA_NS_PER_S);
    assert_int_equal(kill(s, SIGCONT), 0);
    put(in[1], 'g');
    assert_int_equal(child_exit_status(s), 0);
    for (int i = 0; i < 2; i++) {
        close(in[i]);
        close(out[i]);
    }
    char *json = cfx_get(f->fs, "ticket", "T1");
    assert_non_null(strstr(json, "\"level\":1"));
    assert_non_null(strstr(json, "on time"));
    assert_null(strstr(json, "\"note\":\"late\""));
    fieldsync_free(json);
    char *stats = NULL;
    assert_fs_ok(f->fs, fieldsync_lock_stats(f->fs, &stats));
    assert_non_null(strstr(stats, "\"expired\":1"));
    fieldsync_free(stats);
}

static void test_lock_acquire__timeout_names_the_holder(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_ticket_create(f->fs, "T1", NULL, NULL));
    fieldsync_t *other = open_as(f, "other-app");
    assert_non_null(other);
    fieldsync_lock_t *l = NULL;
    assert_fs_ok(f->fs, fieldsync_lock_acquire(f->fs, "TICKET_ESCALATION", "ticket:T1", -1, &l));
    int64_t token = 0;
    assert_int_equal(fieldsync_lock_token(l, &token), FIELDSYNC_OK);
    assert_true(token > 0);
    fieldsync_lock_t *l2 = NULL;
    assert_int_equal(fieldsync_lock_acquire(other, "TICKET_ESCALATION", "ticket:T1", 50, &l2),
                     FIELDSYNC_ELOCKTIMEOUT);
    assert_null(l2);
    const char *msg = fieldsync_errmsg(other);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %d", (int)getpid());
    if (strstr(msg, "held by test") == NULL || strstr(msg, pid) == NULL ||
        strstr(msg, "lease left") == NULL)
        fail_msg("the timeout does not name the holder: %s", msg);
    /* a verb waiting with its own lock: the same, with the (shortened) wait */
    fsl__test_lock_times(FSA_LOCK_TICKET_ESCALATION, 0, 50 * FSA_NS_PER_MS);
    assert_int_equal(fieldsync_ticket_escalate(other, "T1", NULL, NULL, NULL, NULL),
                     FIELDSYNC_ELOCKTIMEOUT);
    assert_non_null(strstr(fieldsync_errmsg(other), "held by test"));
    /* a lock that is not the verb's is refused; the verb's is used */
    assert_int_equal(fieldsync_ticket_log(f->fs, "T1", "{}", l, NULL), FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "JSON_FIELD_UPDATE"));
    assert_int_equal(fieldsync_ticket_escalate(f->fs, "T2", NULL, NULL, l, NULL), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_ticket_escalate(other, "T1", NULL, NULL, l, NULL),
                     FIELDSYNC_EINVAL); /* another handle's lock */
    assert_fs_ok(f->fs, fieldsync_ticket_escalate(f->fs, "T1", "p7", NULL, l, NULL));
    assert_fs_ok(f->fs, fieldsync_ticket_transition(f->fs, "T1", "OPEN", l, NULL));
    /* the generic builder records under any lock the caller holds */
    assert_fs_ok(f->fs, fieldsync_record(f->fs,
                                         "{\"kind\":\"increment\",\"type\":\"ticket\",\"id\":"
                                         "\"T1\",\"field\":\"level\",\"by\":1}",
                                         l, NULL));
    assert_int_equal(fieldsync_lock_release(l), FIELDSYNC_OK);
    /* free again: the other handle gets it at once */
    assert_fs_ok(other, fieldsync_lock_acquire(other, "TICKET_ESCALATION", "ticket:T1", 0, &l2));
    assert_int_equal(fieldsync_lock_release(l2), FIELDSYNC_OK);
    assert_true(cfx_has(f->fs, "ticket", "T1", "\"level\":2"));
    assert_fs_ok(other, fieldsync_close(other));
}

static void test_lock_acquire__bad_names_and_resources(void **state)
{
    cfx_t *f = *state;
    fieldsync_lock_t *l = (fieldsync_lock_t *)1;
    assert_int_equal(fieldsync_lock_acquire(f->fs, "NO_SUCH_LOCK", "x", -1, &l), FIELDSYNC_EINVAL);
    assert_null(l);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "NO_SUCH_LOCK"));
    assert_int_equal(fieldsync_lock_acquire(f->fs, "SYNC", "device", -1, &l), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_lock_acquire(f->fs, "JSON_FIELD_UPDATE", "", -1, &l),
                     FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_lock_acquire(f->fs, "JSON_FIELD_UPDATE", "a\nb", -1, &l),
                     FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_lock_acquire(f->fs, "JSON_FIELD_UPDATE", "x", -2, &l),
                     FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_lock_release(NULL), FIELDSYNC_OK);
}

/* Fails unless st is FIELDSYNC_EINVAL with a message that names the bound 1..max. */
static void assert_bound_named(fieldsync_t *fs, fieldsync_status_t st, size_t max)
{
    char bound[32];
    snprintf(bound, sizeof bound, "1..%zu ", max);
    if (st != FIELDSYNC_EINVAL || strstr(fieldsync_errmsg(fs), bound) == NULL)
        fail_msg("%s: %s (wanted EINVAL naming %s)", fieldsync_status_str(st), fieldsync_errmsg(fs),
                 bound);
}

/* A lock's key is "NAME:resource", at most FSA_LIMIT_LOCK_KEY_BYTES bytes: the longest resource is
 * what the name leaves, for the longest name and a shorter one; one byte more is an invalid
 * argument naming the bound, not a failure of the lock. The same for a check-in's people_id, in
 * "ATTENDANCE_UPDATE:people:PEOPLE_ID". */
static void test_lock_acquire__longest_resource_and_one_more(void **state)
{
    cfx_t *f = *state;
    const char *names[] = {"JOB_WORKFLOW_UPDATE", "TICKET_ESCALATION"};
    char res[FSA_LIMIT_LOCK_KEY_BYTES + 1];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t fit = FSA_LIMIT_LOCK_KEY_BYTES - strlen(names[i]) - strlen(":");
        memset(res, 'r', fit);
        res[fit] = '\0';
        fieldsync_lock_t *l = NULL;
        assert_fs_ok(f->fs, fieldsync_lock_acquire(f->fs, names[i], res, 0, &l));
        assert_int_equal(fieldsync_lock_release(l), FIELDSYNC_OK);
        res[fit] = 'r';
        res[fit + 1] = '\0';
        assert_bound_named(f->fs, fieldsync_lock_acquire(f->fs, names[i], res, 0, &l), fit);
        assert_null(l);
    }
    size_t fit = FSA_LIMIT_LOCK_KEY_BYTES - strlen("ATTENDANCE_UPDATE:people:");
    memset(res, 'p', fit);
    res[fit] = '\0';
    assert_fs_ok(f->fs, fieldsync_attendance(f->fs, true, res, "s1", NULL, "A1", NULL, NULL));
    res[fit] = 'p';
    res[fit + 1] = '\0';
    assert_bound_named(f->fs, fieldsync_attendance(f->fs, true, res, "s1", NULL, "A2", NULL, NULL),
                       fit);
}

/* A label the lock manager cannot take (not printable ASCII, or 64 characters and more) is refused
 * at open, where the header says a malformed member is, not by every later call that locks; an
 * empty one still stands for the default. */
static void test_open__bad_label_refused(void **state)
{
    cfx_t *f = *state;
    char longest[64], too_long[65];
    memset(longest, 'a', sizeof longest - 1);
    longest[sizeof longest - 1] = '\0';
    memset(too_long, 'a', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = '\0';
    const char *bad[] = {"Ger\xc3\xa4t-App", "tab\there", too_long};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
        cfg.journal_path = f->db;
        cfg.label = bad[i];
        fieldsync_t *fs = NULL;
        assert_int_equal(fieldsync_open(&cfg, &fs), FIELDSYNC_EINVAL);
        assert_non_null(strstr(fieldsync_errmsg(fs), "label"));
        assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    }
    fieldsync_t *fs = open_as(f, ""); /* as before: the lock manager's default */
    assert_non_null(fs);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
    fs = open_as(f, longest);
    assert_non_null(fs);
    fieldsync_lock_t *l = NULL;
    assert_fs_ok(fs, fieldsync_lock_acquire(fs, "JOB_WORKFLOW_UPDATE", "jobneed:J1", -1, &l));
    assert_int_equal(fieldsync_lock_release(l), FIELDSYNC_OK);
    assert_int_equal(fieldsync_close(fs), FIELDSYNC_OK);
}

static void test_lock_stats__holders_and_counters(void **state)
{
    cfx_t *f = *state;
    fieldsync_lock_t *l = NULL;
    assert_fs_ok(f->fs, fieldsync_lock_acquire(f->fs, "JOB_WORKFLOW_UPDATE", "jobneed:J1", -1, &l));
    char *json = NULL;
    assert_fs_ok(f->fs, fieldsync_lock_stats(f->fs, &json));
    assert_non_null(strstr(json, "\"acquired\":1"));
    assert_non_null(strstr(json, "\"key\":\"JOB_WORKFLOW_UPDATE:jobneed:J1\""));
    assert_non_null(strstr(json, "\"label\":\"test\""));
    fieldsync_free(json);
    assert_int_equal(fieldsync_lock_release(l), FIELDSYNC_OK);
    assert_fs_ok(f->fs, fieldsync_lock_stats(f->fs, &json));
    assert_non_null(strstr(json, "\"holders_total\":0"));
    fieldsync_free(json);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, cfx_setup, locks_teardown)
    const struct CMUnitTest tests[] = {
        T(test_escalate__two_processes_take_turns),
        T(test_escalate__holder_stopped_past_its_lease_is_fenced),
        T(test_lock_acquire__timeout_names_the_holder),
        T(test_lock_acquire__bad_names_and_resources),
        T(test_lock_acquire__longest_resource_and_one_more),
        T(test_open__bad_label_refused),
        T(test_lock_stats__holders_and_counters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
