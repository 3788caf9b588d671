/* Tests for port/posix: real clocks, sleep, random, threads, mutexes, condvars and OFD locks. */
#define _GNU_SOURCE /* SCHED_BATCH */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "port/once.h"
#include "port/posix/posix.h"
#include "tests/test_util.h"

static fsa_port_t *P;

static void test_mono_now__never_goes_back(void **state)
{
    (void)state;
    fsa_mono_t prev = P->mono_now(P->ctx);
    for (int i = 0; i < 10000; i++) {
        fsa_mono_t t = P->mono_now(P->ctx);
        assert_true(t.ns >= prev.ns);
        prev = t;
    }
}

static void test_wall_now__is_after_2025(void **state)
{
    (void)state;
    assert_true(P->wall_now(P->ctx).ms > INT64_C(1735689600000)); /* 2025-01-01 */
}

static void test_sleep__waits_at_least_the_time(void **state)
{
    (void)state;
    fsa_mono_t t0 = P->mono_now(P->ctx);
    P->sleep(P->ctx, 20 * FSA_NS_PER_MS);
    assert_true(fsa_mono_diff_ns(P->mono_now(P->ctx), t0) >= 20 * FSA_NS_PER_MS);
}

static void test_random__fills_and_differs(void **state)
{
    (void)state;
    unsigned char a[64] = {0}, b[64] = {0}, zero[64] = {0};
    assert_fsa_ok(P->random(P->ctx, a, sizeof a));
    assert_fsa_ok(P->random(P->ctx, b, sizeof b));
    assert_memory_not_equal(a, zero, sizeof a);
    assert_memory_not_equal(a, b, sizeof a);
}

struct counter {
    fsa_mutex_t *mu;
    long value;
};

static void *count_up(void *arg)
{
    struct counter *c = arg;
    for (int i = 0; i < 10000; i++) {
        P->mutex_lock(P->ctx, c->mu);
        c->value++;
        P->mutex_unlock(P->ctx, c->mu);
    }
    return arg;
}

static void test_thread_create__sixteen_threads_share_a_mutex(void **state)
{
    (void)state;
    struct counter c = {0};
    assert_fsa_ok(P->mutex_new(P->ctx, &c.mu));
    fsa_thread_t *t[16];
    for (int i = 0; i < 16; i++)
        assert_fsa_ok(P->thread_create(P->ctx, &t[i], count_up, &c));
    for (int i = 0; i < 16; i++) {
        void *ret = NULL;
        assert_fsa_ok(P->thread_join(P->ctx, t[i], &ret));
        assert_ptr_equal(ret, &c);
    }
    assert_int_equal(c.value, 16 * 10000);
    P->mutex_free(P->ctx, c.mu);
}

/* The nice value of the calling thread (Linux: PRIO_PROCESS with who 0 is this thread). */
static int own_nice(void)
{
    errno = 0;
    int n = getpriority(PRIO_PROCESS, 0);
    assert_false(n == -1 && errno != 0);
    return n;
}

/* The scheduling policy of the calling thread; -1 when it cannot be read. */
static int own_policy(void)
{
    int policy = -1;
    struct sched_param sp;
    return pthread_getschedparam(pthread_self(), &policy, &sp) == 0 ? policy : -1;
}

struct background {
    fsa_status_t st;
    int policy_before, policy_after, policy_child;
    int nice_before, nice_after;
    int steps_wrong;
};

static void *child_policy(void *arg)
{
    ((struct background *)arg)->policy_child = own_policy();
    return NULL;
}

static void *go_background(void *arg)
{
    struct background *b = arg;
    b->policy_before = own_policy();
    b->nice_before = own_nice();
    b->st = P->thread_background(P->ctx);
    b->policy_after = own_policy();
    b->nice_after = own_nice();
    fsa_thread_t *t;
    if (P->thread_create(P->ctx, &t, child_policy, b) != FSA_OK ||
        P->thread_join(P->ctx, t, NULL) != FSA_OK)
        b->policy_child = -100;
    /* Again: it stays there. */
    for (int i = 0; i < 3; i++)
        if (P->thread_background(P->ctx) != FSA_OK || own_policy() != SCHED_BATCH)
            b->steps_wrong++;
    return NULL;
}

/* Background work is SCHED_BATCH for that thread (and the threads it creates), its nice value
 * left as it was: never a priority below the app's threads, which wait for its locks. */
static void test_thread_background__batch_for_that_thread_only(void **state)
{
    (void)state;
    int main_policy = own_policy(), main_nice = own_nice();
    assert_int_equal(main_policy, SCHED_OTHER);
    struct background b = {.st = FSA_EIO};
    fsa_thread_t *t;
    assert_fsa_ok(P->thread_create(P->ctx, &t, go_background, &b));
    assert_fsa_ok(P->thread_join(P->ctx, t, NULL));
    assert_fsa_ok(b.st);
    assert_int_equal(b.policy_before, SCHED_OTHER); /* a new thread starts with its creator's */
    assert_int_equal(b.policy_after, SCHED_BATCH);
    assert_int_equal(b.policy_child, SCHED_BATCH); /* the threads it creates inherit it */
    assert_int_equal(b.nice_before, main_nice);
    assert_int_equal(b.nice_after, main_nice); /* not lowered */
    assert_int_equal(b.steps_wrong, 0);
    assert_int_equal(own_policy(), main_policy); /* the process's other threads keep theirs */
}

static void test_cond_wait__deadline_times_out(void **state)
{
    (void)state;
    fsa_mutex_t *mu;
    fsa_cond_t *cv;
    assert_fsa_ok(P->mutex_new(P->ctx, &mu));
    assert_fsa_ok(P->cond_new(P->ctx, &cv));
    fsa_mono_t t0 = P->mono_now(P->ctx);
    P->mutex_lock(P->ctx, mu);
    fsa_status_t st = FSA_OK;
    while (st == FSA_OK) /* spurious wake-ups are allowed */
        st = P->cond_wait(P->ctx, cv, mu, fsa_mono_add_ns(t0, 30 * FSA_NS_PER_MS));
    P->mutex_unlock(P->ctx, mu);
    assert_int_equal(st, FSA_ETIMEOUT);
    assert_true(fsa_mono_diff_ns(P->mono_now(P->ctx), t0) >= 30 * FSA_NS_PER_MS);
    P->cond_free(P->ctx, cv);
    P->mutex_free(P->ctx, mu);
}

struct flag {
    fsa_mutex_t *mu;
    fsa_cond_t *cv;
    int set;
};

static void *raise_flag(void *arg)
{
    struct flag *f = arg;
    P->sleep(P->ctx, 5 * FSA_NS_PER_MS);
    P->mutex_lock(P->ctx, f->mu);
    f->set = 1;
    P->cond_broadcast(P->ctx, f->cv);
    P->mutex_unlock(P->ctx, f->mu);
    return NULL;
}

static void test_cond_wait__woken_by_broadcast(void **state)
{
    (void)state;
    struct flag f = {0};
    assert_fsa_ok(P->mutex_new(P->ctx, &f.mu));
    assert_fsa_ok(P->cond_new(P->ctx, &f.cv));
    fsa_thread_t *t;
    assert_fsa_ok(P->thread_create(P->ctx, &t, raise_flag, &f));
    P->mutex_lock(P->ctx, f.mu);
    fsa_mono_t deadline = fsa_mono_add_ns(P->mono_now(P->ctx), 60 * FSA_NS_PER_S);
    while (!f.set)
        assert_fsa_ok(P->cond_wait(P->ctx, f.cv, f.mu, deadline));
    P->mutex_unlock(P->ctx, f.mu);
    assert_fsa_ok(P->thread_join(P->ctx, t, NULL));
    P->cond_free(P->ctx, f.cv);
    P->mutex_free(P->ctx, f.mu);
}

static char lock_path[64];

static int setup_lockfile(void **state)
{
    (void)state;
    snprintf(lock_path, sizeof lock_path, "/tmp/fsa-test-posix-%ld.lock", (long)getpid());
    return 0;
}

static int teardown_lockfile(void **state)
{
    (void)state;
    fsa__posix_refuse_punch(false); /* also when a failed assertion left the test early */
    unlink(lock_path);
    return 0;
}

static void test_flock_try__two_handles_exclude_each_other(void **state)
{
    (void)state;
    fsa_flock_t *a, *b;
    assert_fsa_ok(P->flock_open(P->ctx, lock_path, &a));
    assert_fsa_ok(P->flock_open(P->ctx, lock_path, &b));
    assert_fsa_ok(P->flock_try(P->ctx, a, 7));
    assert_int_equal(P->flock_try(P->ctx, b, 7), FSA_EBUSY);
    assert_fsa_ok(P->flock_try(P->ctx, b, 8)); /* other slots are independent */
    P->flock_release(P->ctx, a, 7);
    assert_fsa_ok(P->flock_try(P->ctx, b, 7));
    P->flock_close(P->ctx, a);
    P->flock_close(P->ctx, b);
}

static void test_flock_try_shared__readers_share_writers_exclude(void **state)
{
    (void)state;
    fsa_flock_t *a, *b, *c;
    assert_fsa_ok(P->flock_open(P->ctx, lock_path, &a));
    assert_fsa_ok(P->flock_open(P->ctx, lock_path, &b));
    assert_fsa_ok(P->flock_open(P->ctx, lock_path, &c));
    assert_fsa_ok(P->flock_try_shared(P->ctx, a, 0));
    assert_fsa_ok(P->flock_try_shared(P->ctx, b, 0));
    assert_int_equal(P->flock_try(P->ctx, c, 0), FSA_EBUSY);
    /* a reader cannot upgrade while another reader holds the byte... */
    assert_int_equal(P->flock_try(P->ctx, a, 0), FSA_EBUSY);
    P->flock_release(P->ctx, b, 0);
    /* ...and can once it is the only one; the conversion is in place */
    assert_fsa_ok(P->flock_try(P->ctx, a, 0));
    assert_int_equal(P->flock_try_shared(P->ctx, b, 0), FSA_EBUSY);
    assert_fsa_ok(P->flock_try_shared(P->ctx, a, 0)); /* downgrade */
    assert_fsa_ok(P->flock_try_shared(P->ctx, b, 0));
    P->flock_close(P->ctx, a);
    P->flock_close(P->ctx, b);
    P->flock_close(P->ctx, c);
}

static void test_flock_try__released_when_holder_dies(void **state)
{
    (void)state;
    /* ready: the child holds the lock; go: the parent has seen it held, the child may die. No
     * fixed hold time, so a slow machine cannot let the lock go before the parent looks. */
    int ready[2], go[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fsa_flock_t *c;
        char y;
        if (P->flock_open(P->ctx, lock_path, &c) != FSA_OK || P->flock_try(P->ctx, c, 3) != FSA_OK)
            _exit(2);
        if (write(ready[1], "x", 1) != 1)
            _exit(3);
        if (read(go[0], &y, 1) != 1)
            _exit(4);
        _exit(0); /* dies holding the lock: the kernel releases it */
    }
    char x;
    assert_int_equal(read(ready[0], &x, 1), 1);
    fsa_flock_t *f;
    assert_fsa_ok(P->flock_open(P->ctx, lock_path, &f));
    assert_int_equal(P->flock_try(P->ctx, f, 3), FSA_EBUSY);
    assert_int_equal(write(go[1], "x", 1), 1);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_fsa_ok(P->flock_try(P->ctx, f, 3));
    P->flock_close(P->ctx, f);
    close(ready[0]);
    close(ready[1]);
    close(go[0]);
    close(go[1]);
}

/* Two handles (as two processes would) map one file: a store through one is seen through the
 * other at once, and outlives both mappings; the file grows to the length, and never shrinks. */
static void test_flock_map__shared_between_handles(void **state)
{
    (void)state;
    fsa_flock_t *a, *b;
    void *pa = NULL, *pb = NULL;
    assert_fsa_ok(P->flock_open(P->ctx, lock_path, &a));
    assert_fsa_ok(P->flock_open(P->ctx, lock_path, &b));
    assert_fsa_ok(P->flock_map(P->ctx, a, 8192, &pa));
    assert_fsa_ok(P->flock_map(P->ctx, b, 4096, &pb));
    struct stat st;
    assert_int_equal(stat(lock_path, &st), 0);
    assert_int_equal(st.st_size, 8192);
    assert_int_equal(((unsigned char *)pb)[100], 0); /* grown with zeros */
    memcpy((char *)pa + 100, "token", 6);
    assert_string_equal((char *)pb + 100, "token");
    P->flock_unmap(P->ctx, pa, 8192);
    P->flock_unmap(P->ctx, pb, 4096);
    P->flock_unmap(P->ctx, NULL, 4096);
    P->flock_close(P->ctx, a);
    assert_fsa_ok(P->flock_map(P->ctx, b, 4096, &pb));
    assert_string_equal((char *)pb + 100, "token");
    P->flock_unmap(P->ctx, pb, 4096);
    assert_int_equal(stat(lock_path, &st), 0);
    assert_int_equal(st.st_size, 8192);
    assert_int_equal(P->flock_map(P->ctx, b, 0, &pb), FSA_EINVAL);
    assert_int_equal(P->flock_map(P->ctx, b, 4096, NULL), FSA_EINVAL);
    assert_int_equal(P->flock_map(P->ctx, NULL, 4096, &pb), FSA_EINVAL);
    P->flock_close(P->ctx, b);
}

/* flock_clear zeroes the file in place and never makes it shorter, not even for a moment: another
 * process reading its own mapping all along never reads past the end (SIGBUS). Emptied by a
 * truncation to nothing and a growth, this child died of SIGBUS within the first clears. With
 * refuse, as on a file system that cannot punch a hole: the zeros are written instead. */
static void flock_clear_check(bool refuse)
{
    enum { LEN = 16384, CLEARS = 2000 };
    fsa__posix_refuse_punch(refuse);
    fsa_flock_t *a;
    char *pa = NULL;
    assert_fsa_ok(P->flock_open(P->ctx, lock_path, &a));
    assert_fsa_ok(P->flock_map(P->ctx, a, LEN, (void **)&pa));
    memcpy(pa + 100, "token", 6);
    memcpy(pa + 12000, "token", 6);
    assert_fsa_ok(P->flock_clear(P->ctx, a, LEN));
    assert_int_equal(pa[100], 0);
    assert_int_equal(pa[12000], 0);
    struct stat st;
    assert_int_equal(stat(lock_path, &st), 0);
    assert_int_equal(st.st_size, LEN);
    /* A reader in another process, until the parent sets *stop (a page of their own). */
    atomic_int *stop =
        // cppcheck-suppress invalidFunctionArg ; an anonymous mapping takes no file: fd is -1
        mmap(NULL, sizeof *stop, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(stop != MAP_FAILED);
    atomic_store(stop, 0);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* Not cmocka's handlers: the parent is to see a crash. */
        (void)signal(SIGBUS, SIG_DFL);
        (void)signal(SIGSEGV, SIG_DFL);
        close(ready[0]);
        fsa_flock_t *b;
        volatile char *pb = NULL;
        if (P->flock_open(P->ctx, lock_path, &b) != FSA_OK ||
            P->flock_map(P->ctx, b, LEN, (void **)(uintptr_t)&pb) != FSA_OK ||
            write(ready[1], "x", 1) != 1)
            _exit(2);
        unsigned sum = 0;
        while (!atomic_load(stop))
            sum += (unsigned char)pb[0] + (unsigned char)pb[LEN - 1];
        _exit(sum == 0 ? 0 : 3); /* every byte read was a zero or the parent's 0 */
    }
    close(ready[1]); /* a child that failed before its byte: the read sees the end */
    char x;
    fsa_status_t cleared = read(ready[0], &x, 1) == 1 ? FSA_OK : FSA_EIO;
    for (int i = 0; cleared == FSA_OK && i < CLEARS; i++) {
        pa[0] = 0; /* the page is there again after each clear */
        cleared = P->flock_clear(P->ctx, a, LEN);
    }
    atomic_store(stop, 1); /* before any assertion: the reader never outlives the test */
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_fsa_ok(cleared);
    if (WIFSIGNALED(status))
        fail_msg("the reader died of signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(stat(lock_path, &st), 0);
    assert_int_equal(st.st_size, LEN);
    assert_int_equal(P->flock_clear(P->ctx, NULL, LEN), FSA_EINVAL);
    munmap(stop, sizeof *stop);
    close(ready[0]);
    P->flock_unmap(P->ctx, pa, LEN);
    P->flock_close(P->ctx, a);
    fsa__posix_refuse_punch(false);
}

static void test_flock_clear__zeroes_and_never_shortens(void **state)
{
    (void)state;
    flock_clear_check(false);
}

static void test_flock_clear__without_holes_writes_zeros(void **state)
{
    (void)state;
    flock_clear_check(true);
}

static void test_flock_open__unwritable_path(void **state)
{
    (void)state;
    fsa_flock_t *f = NULL;
    assert_int_equal(P->flock_open(P->ctx, "/nonexistent-dir/x.lock", &f), FSA_EIO);
    assert_null(f);
}

static void test_process_id__is_this_process(void **state)
{
    (void)state;
    assert_int_equal(P->process_id(P->ctx), (int64_t)getpid());
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(P->process_id(P->ctx) == (int64_t)getpid() && P->process_id(P->ctx) != 0 ? 0 : 1);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static fsa_once_t once_flag = FSA_ONCE_INIT;
static atomic_int once_runs;

static void once_body(void)
{
    atomic_fetch_add(&once_runs, 1);
}

static void *once_caller(void *arg)
{
    fsa_once(&once_flag, once_body);
    /* Every caller returns after the body ran. */
    *(int *)arg = atomic_load(&once_runs);
    return NULL;
}

static void test_once__runs_once_across_threads(void **state)
{
    (void)state;
    fsa_thread_t *t[8];
    int seen[8] = {0};
    for (int i = 0; i < 8; i++)
        assert_fsa_ok(P->thread_create(P->ctx, &t[i], once_caller, &seen[i]));
    for (int i = 0; i < 8; i++)
        assert_fsa_ok(P->thread_join(P->ctx, t[i], NULL));
    fsa_once(&once_flag, once_body);
    assert_int_equal(atomic_load(&once_runs), 1);
    for (int i = 0; i < 8; i++)
        assert_int_equal(seen[i], 1);
}

/* The one conversion of 64-bit nanoseconds to a timespec: exact up to INT32_MAX seconds (68 years
 * of a monotonic clock), clamped there (the forever of a wait, which a 32-bit kernel older than
 * 5.1 could not take); negatives are zero. */
static void test_posix_timespec__exact_and_clamped(void **state)
{
    (void)state;
    struct timespec ts = fsa__posix_timespec(1500000000LL);
    assert_int_equal((int64_t)ts.tv_sec, 1);
    assert_int_equal(ts.tv_nsec, 500000000L);
    ts = fsa__posix_timespec(-5);
    assert_int_equal((int64_t)ts.tv_sec, 0);
    assert_int_equal(ts.tv_nsec, 0);
    /* 2040-01-01 in ns: past a 32-bit time_t. */
    const int64_t y2040 = 2208988800LL * FSA_NS_PER_S;
    ts = fsa__posix_timespec((int64_t)(INT32_MAX - 1) * FSA_NS_PER_S + 7);
    assert_int_equal((int64_t)ts.tv_sec, (int64_t)INT32_MAX - 1);
    assert_int_equal(ts.tv_nsec, 7L);
    ts = fsa__posix_timespec(y2040);
    assert_int_equal((int64_t)ts.tv_sec, (int64_t)INT32_MAX);
    ts = fsa__posix_timespec(fsa_mono_forever().ns);
    assert_int_equal((int64_t)ts.tv_sec, (int64_t)INT32_MAX);
    assert_int_equal(ts.tv_nsec, 0L);
}

int main(void)
{
    P = fsa_port_posix();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mono_now__never_goes_back),
        cmocka_unit_test(test_wall_now__is_after_2025),
        cmocka_unit_test(test_sleep__waits_at_least_the_time),
        cmocka_unit_test(test_random__fills_and_differs),
        cmocka_unit_test(test_thread_create__sixteen_threads_share_a_mutex),
        cmocka_unit_test(test_thread_background__batch_for_that_thread_only),
        cmocka_unit_test(test_cond_wait__deadline_times_out),
        cmocka_unit_test(test_cond_wait__woken_by_broadcast),
        cmocka_unit_test_setup_teardown(test_flock_try__two_handles_exclude_each_other,
                                        setup_lockfile, teardown_lockfile),
        cmocka_unit_test_setup_teardown(test_flock_try_shared__readers_share_writers_exclude,
                                        setup_lockfile, teardown_lockfile),
        cmocka_unit_test_setup_teardown(test_flock_try__released_when_holder_dies, setup_lockfile,
                                        teardown_lockfile),
        cmocka_unit_test_setup_teardown(test_flock_map__shared_between_handles, setup_lockfile,
                                        teardown_lockfile),
        cmocka_unit_test_setup_teardown(test_flock_clear__zeroes_and_never_shortens, setup_lockfile,
                                        teardown_lockfile),
        cmocka_unit_test_setup_teardown(test_flock_clear__without_holes_writes_zeros,
                                        setup_lockfile, teardown_lockfile),
        cmocka_unit_test(test_flock_open__unwritable_path),
        cmocka_unit_test(test_process_id__is_this_process),
        cmocka_unit_test(test_once__runs_once_across_threads),
        cmocka_unit_test(test_posix_timespec__exact_and_clamped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
