/* fieldsync tests: port/posix/pulse.c against its header (port/pulse.h): the count, a wait that
 * returns at once when the count has moved, a wait that times out on the posix monotonic clock, a
 * pulse from another thread that wakes one waiter and every waiter, and many posters and waiters
 * at once (16 threads). No test sleeps to synchronise: threads meet at latches (a count under a
 * mutex, waited for with a generous deadline) and each wait's deadline is the bound that fails a
 * lost wake-up. A wake of another kind (across processes) gets its own functions beside these. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "port/pulse.h"
#include "tests/test_util.h"

#define THREADS 16 /* waiters in the many-waiters test */
#define ROUNDS 200 /* rounds of one pulse to wake the waiters */
#define POSTERS 8
#define POSTS 500           /* posts by each poster */
#define BOUND_S 20          /* generous: a wait that reaches it is a lost wake-up */
#define TIMEOUT_NS 50000000 /* the timeout test's own wait: 50 ms of real time */

static fsa_mono_t now(void)
{
    return fsa_port_posix()->mono_now(NULL);
}

static fsa_mono_t in_s(int64_t s)
{
    return fsa_mono_add_ns(now(), s * FSA_NS_PER_S);
}

/* ---- a latch: threads count themselves in, another waits for the count (bounded) ---- */

typedef struct latch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
} latch_t;

static void latch_init(latch_t *l)
{
    pthread_condattr_t a;
    assert_int_equal(pthread_condattr_init(&a), 0);
    assert_int_equal(pthread_condattr_setclock(&a, CLOCK_MONOTONIC), 0);
    assert_int_equal(pthread_cond_init(&l->cv, &a), 0);
    pthread_condattr_destroy(&a);
    assert_int_equal(pthread_mutex_init(&l->mu, NULL), 0);
    l->n = 0;
}

static void latch_destroy(latch_t *l)
{
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
}

static void latch_add(latch_t *l)
{
    pthread_mutex_lock(&l->mu);
    l->n++;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

/* Waits until the count reaches want; false if BOUND_S passed first. */
static bool latch_wait(latch_t *l, int want)
{
    fsa_mono_t d = in_s(BOUND_S);
    struct timespec ts = {(time_t)(d.ns / FSA_NS_PER_S), (long)(d.ns % FSA_NS_PER_S)};
    bool ok = true;
    pthread_mutex_lock(&l->mu);
    while (ok && l->n < want)
        ok = pthread_cond_timedwait(&l->cv, &l->mu, &ts) == 0 || l->n >= want;
    pthread_mutex_unlock(&l->mu);
    return ok;
}

/* ---- the count, and waits in one thread ---- */

static void test_post__bumps_the_count_by_one(void **state)
{
    (void)state;
    uint64_t c0 = fsa_pulse_count();
    fsa_pulse_post();
    assert_int_equal(fsa_pulse_count(), c0 + 1);
    for (int i = 0; i < 100; i++)
        fsa_pulse_post();
    assert_int_equal(fsa_pulse_count(), c0 + 101);
}

/* A pulse with no waiter is not lost: it moved the count, and a wait from the count before it
 * returns at once (without its deadline), whatever the deadline. */
static void test_wait__a_pulse_before_the_wait_returns_it_at_once(void **state)
{
    (void)state;
    uint64_t seen = fsa_pulse_count();
    fsa_pulse_post();
    fsa_mono_t t0 = now();
    fsa_mono_t deadline = fsa_mono_add_ns(t0, (int64_t)BOUND_S * FSA_NS_PER_S);
    assert_int_equal(fsa_pulse_wait(seen, deadline), seen + 1);
    assert_true(fsa_mono_diff_ns(now(), deadline) < 0);
    assert_int_equal(fsa_pulse_wait(seen, fsa_mono_forever()), seen + 1);
    fsa_mono_t past = {t0.ns - FSA_NS_PER_S};
    assert_int_equal(fsa_pulse_wait(seen, past), seen + 1);
    /* any other seen than the count, also one ahead of it */
    assert_int_equal(fsa_pulse_wait(seen + 7, past), seen + 1);
}

/* No pulse: the wait returns the unchanged count once the deadline (posix CLOCK_MONOTONIC) has
 * passed, and not before it. */
static void test_wait__without_a_pulse_times_out_at_the_deadline(void **state)
{
    (void)state;
    uint64_t seen = fsa_pulse_count();
    fsa_mono_t deadline = fsa_mono_add_ns(now(), TIMEOUT_NS);
    assert_int_equal(fsa_pulse_wait(seen, deadline), seen);
    fsa_mono_t back = now();
    int64_t early_ns = -fsa_mono_diff_ns(back, deadline);
    if (early_ns > 0)
        fail_msg("returned %lld ns before its deadline", (long long)early_ns);
    /* a deadline already passed, or now: the count at once */
    fsa_mono_t past = {back.ns - FSA_NS_PER_S};
    assert_int_equal(fsa_pulse_wait(seen, past), seen);
    assert_int_equal(fsa_pulse_wait(seen, now()), seen);
}

/* ---- a pulse from another thread ---- */

typedef struct waiters {
    latch_t ready, done, go;
    uint64_t seen;        /* this round's count before the pulse (set before go) */
    bool stop;            /* set (under go.mu) when a round failed: the waiters end */
    int nthreads, rounds; /* the test's shape */
    bool forever;         /* the waits have no deadline (fsa_mono_forever) */
    uint64_t got[THREADS];
    bool timed_out[THREADS];
    int failures; /* waits that timed out or returned seen (under done.mu) */
} waiters_t;

typedef struct waiter_arg {
    waiters_t *w;
    int i;
} waiter_arg_t;

/* Each round: waits to be released, says it is ready, waits for the pulse, says it is done. */
static void *waiter(void *p)
{
    waiter_arg_t *a = p;
    waiters_t *w = a->w;
    for (int r = 1; r <= w->rounds; r++) {
        if (!latch_wait(&w->go, r))
            return NULL; /* the main thread fails the test on its own latch */
        pthread_mutex_lock(&w->go.mu);
        uint64_t seen = w->seen;
        bool stop = w->stop;
        pthread_mutex_unlock(&w->go.mu);
        if (stop)
            return NULL;
        latch_add(&w->ready);
        fsa_mono_t deadline = w->forever ? fsa_mono_forever() : in_s(BOUND_S);
        uint64_t n = fsa_pulse_wait(seen, deadline);
        bool late = fsa_mono_diff_ns(now(), deadline) >= 0;
        pthread_mutex_lock(&w->done.mu);
        w->got[a->i] = n;
        w->timed_out[a->i] = late;
        if (late || n == seen)
            w->failures++;
        pthread_mutex_unlock(&w->done.mu);
        latch_add(&w->done);
    }
    return NULL;
}

/* nthreads waiters, rounds rounds: each round one pulse must wake every waiter before the
 * bound, with the count after the pulse. forever: the waits have no deadline (a lost wake-up then
 * ends at ctest's timeout, unless the next pulse, sent on failure, wakes it). */
static void run_waiters(int nthreads, int rounds, bool forever)
{
    static waiters_t w;
    memset(&w, 0, sizeof w);
    latch_init(&w.ready);
    latch_init(&w.done);
    latch_init(&w.go);
    w.nthreads = nthreads;
    w.rounds = rounds;
    w.forever = forever;
    pthread_t t[THREADS];
    waiter_arg_t args[THREADS];
    for (int i = 0; i < nthreads; i++) {
        args[i] = (waiter_arg_t){&w, i};
        assert_int_equal(pthread_create(&t[i], NULL, waiter, &args[i]), 0);
    }
    int failed_round = 0;
    for (int r = 1; r <= rounds && failed_round == 0; r++) {
        pthread_mutex_lock(&w.go.mu);
        w.seen = fsa_pulse_count();
        pthread_mutex_unlock(&w.go.mu);
        latch_add(&w.go); /* go.n == r: round r released */
        if (!latch_wait(&w.ready, r * nthreads)) {
            failed_round = r;
            break;
        }
        fsa_pulse_post();
        if (!latch_wait(&w.done, r * nthreads)) {
            failed_round = r;
            break;
        }
        pthread_mutex_lock(&w.done.mu);
        for (int i = 0; i < nthreads; i++)
            if (w.timed_out[i] || w.got[i] != w.seen + 1) {
                print_message("round %d: waiter %d got %llu (seen %llu)%s\n", r, i,
                              (unsigned long long)w.got[i], (unsigned long long)w.seen,
                              w.timed_out[i] ? ", at its deadline" : "");
                failed_round = r;
            }
        pthread_mutex_unlock(&w.done.mu);
    }
    if (failed_round != 0) {
        /* end every waiter (one in a wait ends by its deadline at worst), then fail */
        pthread_mutex_lock(&w.go.mu);
        w.stop = true;
        pthread_mutex_unlock(&w.go.mu);
        for (int r = 0; r <= rounds; r++)
            latch_add(&w.go);
        fsa_pulse_post();
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    latch_destroy(&w.ready);
    latch_destroy(&w.done);
    latch_destroy(&w.go);
    if (failed_round != 0)
        fail_msg("round %d of %d: not every one of %d waiters was woken by one pulse", failed_round,
                 rounds, nthreads);
    assert_int_equal(w.failures, 0);
}

static void test_wait__a_pulse_from_another_thread_wakes_a_waiter(void **state)
{
    (void)state;
    run_waiters(1, ROUNDS, false);
}

static void test_wait__one_pulse_wakes_every_waiter(void **state)
{
    (void)state;
    run_waiters(THREADS, ROUNDS, false);
}

/* fsa_mono_forever() as the deadline: its seconds do not fit a 32-bit time_t (armhf); a
 * deadline that became one in the past would return the count unchanged at once. */
static void test_wait__without_a_deadline_a_pulse_wakes_it(void **state)
{
    (void)state;
    run_waiters(4, 20, true);
}

/* ---- many posters and many waiters at once ---- */

typedef struct storm {
    latch_t start;
    uint64_t target; /* the count once every poster is done */
} storm_t;

typedef struct storm_waiter {
    storm_t *s;
    uint64_t last;
    int wakes;
    bool timed_out, went_back;
} storm_waiter_t;

static void *storm_post(void *p)
{
    storm_t *s = p;
    latch_add(&s->start);
    for (int i = 0; i < POSTS; i++)
        fsa_pulse_post();
    return NULL;
}

/* Follows the count until it reaches the target: each wait returns a count past the one it was
 * given (the count only grows here), and the last posts wake it. */
static void *storm_wait(void *p)
{
    storm_waiter_t *sw = p;
    storm_t *s = sw->s;
    uint64_t seen = fsa_pulse_count();
    latch_add(&s->start);
    fsa_mono_t deadline = in_s(BOUND_S);
    while (seen < s->target) {
        uint64_t n = fsa_pulse_wait(seen, deadline);
        if (n == seen) {
            sw->timed_out = true;
            break;
        }
        if (n < seen) {
            sw->went_back = true;
            break;
        }
        sw->wakes++;
        seen = n;
    }
    sw->last = seen;
    return NULL;
}

static void test_pulse__many_posters_and_waiters_lose_nothing(void **state)
{
    (void)state;
    static storm_t s;
    latch_init(&s.start);
    s.target = fsa_pulse_count() + (uint64_t)POSTERS * POSTS;
    storm_waiter_t sw[THREADS / 2];
    pthread_t tw[THREADS / 2], tp[POSTERS];
    int nw = THREADS / 2;
    for (int i = 0; i < nw; i++) {
        sw[i] = (storm_waiter_t){.s = &s};
        assert_int_equal(pthread_create(&tw[i], NULL, storm_wait, &sw[i]), 0);
    }
    assert_true(latch_wait(&s.start, nw)); /* the waiters have read the count: then the posts */
    for (int i = 0; i < POSTERS; i++)
        assert_int_equal(pthread_create(&tp[i], NULL, storm_post, &s), 0);
    for (int i = 0; i < POSTERS; i++)
        pthread_join(tp[i], NULL);
    for (int i = 0; i < nw; i++)
        pthread_join(tw[i], NULL);
    latch_destroy(&s.start);
    assert_int_equal(fsa_pulse_count(), s.target); /* every post counted once */
    for (int i = 0; i < nw; i++) {
        if (sw[i].timed_out || sw[i].went_back || sw[i].last != s.target)
            fail_msg("waiter %d stopped at %llu of %llu (%s)", i, (unsigned long long)sw[i].last,
                     (unsigned long long)s.target,
                     sw[i].timed_out ? "a lost wake-up: its deadline passed"
                                     : "the count went back");
        assert_true(sw[i].wakes >= 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post__bumps_the_count_by_one),
        cmocka_unit_test(test_wait__a_pulse_before_the_wait_returns_it_at_once),
        cmocka_unit_test(test_wait__without_a_pulse_times_out_at_the_deadline),
        cmocka_unit_test(test_wait__a_pulse_from_another_thread_wakes_a_waiter),
        cmocka_unit_test(test_wait__one_pulse_wakes_every_waiter),
        cmocka_unit_test(test_wait__without_a_deadline_a_pulse_wakes_it),
        cmocka_unit_test(test_pulse__many_posters_and_waiters_lose_nothing),
    };
    return cmocka_run_group_tests_name("port/pulse", tests, NULL, NULL);
}
