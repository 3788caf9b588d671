/* Tests for port/sim: the virtual clock, separate clocks per sim, seeded randomness, waits. */
#include <string.h>
#include <unistd.h>

#include "port/sim/sim.h"
#include "tests/test_util.h"

static const fsa_wall_t START = {INT64_C(1764090000000)};

static void test_sleep__ten_virtual_minutes_take_no_real_time(void **state)
{
    (void)state;
    fsa_sim_t *sim;
    assert_fsa_ok(fsa_sim_new(1, START, "t", &sim));
    fsa_port_t *p = fsa_sim_port(sim);
    fsa_mono_t real0 = fsa_port_posix()->mono_now(NULL);
    fsa_mono_t v0 = p->mono_now(p->ctx);
    p->sleep(p->ctx, 10 * 60 * FSA_NS_PER_S);
    int64_t real = test_real_elapsed_ns(real0);
    assert_int_equal(fsa_mono_diff_ns(p->mono_now(p->ctx), v0), 10 * 60 * FSA_NS_PER_S);
    assert_int_equal(p->wall_now(p->ctx).ms, START.ms + 10 * 60 * 1000);
    assert_true(real < FSA_NS_PER_S / 10); /* "well under a second" */
    fsa_sim_free(sim);
}

static void test_sim_new__two_sims_keep_separate_clocks(void **state)
{
    (void)state;
    fsa_sim_t *a, *b;
    assert_fsa_ok(fsa_sim_new(1, START, "a", &a));
    assert_fsa_ok(fsa_sim_new(2, START, "b", &b));
    fsa_port_t *pa = fsa_sim_port(a), *pb = fsa_sim_port(b);
    pa->sleep(pa->ctx, 5 * FSA_NS_PER_S);
    fsa_sim_advance(b, 7 * FSA_NS_PER_S);
    assert_int_equal(pa->mono_now(pa->ctx).ns, 5 * FSA_NS_PER_S);
    assert_int_equal(pb->mono_now(pb->ctx).ns, 7 * FSA_NS_PER_S);
    fsa_sim_shift_wall(a, -3600 * 1000);
    assert_int_equal(pa->wall_now(pa->ctx).ms, START.ms + 5000 - 3600 * 1000);
    assert_int_equal(pb->wall_now(pb->ctx).ms, START.ms + 7000);
    assert_int_equal(pa->mono_now(pa->ctx).ns, 5 * FSA_NS_PER_S); /* wall shift leaves mono */
    fsa_sim_free(a);
    fsa_sim_free(b);
}

static void test_random__same_seed_same_bytes(void **state)
{
    (void)state;
    fsa_sim_t *a, *b, *c;
    assert_fsa_ok(fsa_sim_new(99, START, "a", &a));
    assert_fsa_ok(fsa_sim_new(99, START, "b", &b));
    assert_fsa_ok(fsa_sim_new(100, START, "c", &c));
    unsigned char x[37], y[37], z[37];
    fsa_port_t *pa = fsa_sim_port(a), *pb = fsa_sim_port(b), *pc = fsa_sim_port(c);
    assert_fsa_ok(pa->random(pa->ctx, x, sizeof x));
    assert_fsa_ok(pb->random(pb->ctx, y, sizeof y));
    assert_fsa_ok(pc->random(pc->ctx, z, sizeof z));
    assert_memory_equal(x, y, sizeof x);
    assert_memory_not_equal(x, z, sizeof x);
    fsa_sim_free(a);
    fsa_sim_free(b);
    fsa_sim_free(c);
}

static void test_cond_wait__unsignalled_wait_jumps_virtual_clock(void **state)
{
    (void)state;
    fsa_sim_t *sim;
    assert_fsa_ok(fsa_sim_new(3, START, "w", &sim));
    fsa_port_t *p = fsa_sim_port(sim);
    fsa_mutex_t *mu;
    fsa_cond_t *cv;
    assert_fsa_ok(p->mutex_new(p->ctx, &mu));
    assert_fsa_ok(p->cond_new(p->ctx, &cv));
    fsa_mono_t real0 = fsa_port_posix()->mono_now(NULL);
    fsa_mono_t deadline = fsa_mono_add_ns(p->mono_now(p->ctx), 10 * FSA_NS_PER_S);
    p->mutex_lock(p->ctx, mu);
    fsa_status_t st = FSA_OK;
    while (st == FSA_OK)
        st = p->cond_wait(p->ctx, cv, mu, deadline);
    p->mutex_unlock(p->ctx, mu);
    assert_int_equal(st, FSA_ETIMEOUT);
    assert_true(p->mono_now(p->ctx).ns >= deadline.ns);
    assert_true(test_real_elapsed_ns(real0) < FSA_NS_PER_S / 2);
    p->cond_free(p->ctx, cv);
    p->mutex_free(p->ctx, mu);
    fsa_sim_free(sim);
}

static void test_cond_wait__past_deadline_returns_at_once(void **state)
{
    (void)state;
    fsa_sim_t *sim;
    assert_fsa_ok(fsa_sim_new(3, START, "w", &sim));
    fsa_port_t *p = fsa_sim_port(sim);
    fsa_mutex_t *mu;
    fsa_cond_t *cv;
    assert_fsa_ok(p->mutex_new(p->ctx, &mu));
    assert_fsa_ok(p->cond_new(p->ctx, &cv));
    fsa_sim_advance(sim, FSA_NS_PER_S);
    fsa_mono_t past = {FSA_NS_PER_S / 2};
    p->mutex_lock(p->ctx, mu);
    assert_int_equal(p->cond_wait(p->ctx, cv, mu, past), FSA_ETIMEOUT);
    p->mutex_unlock(p->ctx, mu);
    assert_int_equal(p->mono_now(p->ctx).ns, FSA_NS_PER_S); /* no time moved */
    p->cond_free(p->ctx, cv);
    p->mutex_free(p->ctx, mu);
    fsa_sim_free(sim);
}

struct shared {
    fsa_port_t *p;
    fsa_mutex_t *mu;
    fsa_cond_t *cv;
    int ready;
};

static void *signaller(void *arg)
{
    struct shared *s = arg;
    s->p->mutex_lock(s->p->ctx, s->mu);
    s->ready = 1;
    s->p->cond_broadcast(s->p->ctx, s->cv);
    s->p->mutex_unlock(s->p->ctx, s->mu);
    return NULL;
}

static void test_cond_wait__signal_from_thread_wakes_waiter(void **state)
{
    (void)state;
    fsa_sim_t *sim;
    assert_fsa_ok(fsa_sim_new(4, START, "s", &sim));
    struct shared s = {.p = fsa_sim_port(sim)};
    fsa_port_t *p = s.p;
    assert_fsa_ok(p->mutex_new(p->ctx, &s.mu));
    assert_fsa_ok(p->cond_new(p->ctx, &s.cv));
    p->mutex_lock(p->ctx, s.mu);
    fsa_thread_t *t;
    assert_fsa_ok(p->thread_create(p->ctx, &t, signaller, &s));
    while (!s.ready)
        (void)p->cond_wait(p->ctx, s.cv, s.mu, fsa_mono_forever());
    p->mutex_unlock(p->ctx, s.mu);
    assert_fsa_ok(p->thread_join(p->ctx, t, NULL));
    assert_int_equal(s.ready, 1);
    p->cond_free(p->ctx, s.cv);
    p->mutex_free(p->ctx, s.mu);
    fsa_sim_free(sim);
}

static void test_sim_new__rejects_null_out(void **state)
{
    (void)state;
    assert_int_equal(fsa_sim_new(1, START, NULL, NULL), FSA_EINVAL);
}

/* The sim's file locks are the real ones, so its lock holders are named by the real process. */
static void test_process_id__the_real_process(void **state)
{
    (void)state;
    fsa_sim_t *sim = NULL;
    assert_fsa_ok(fsa_sim_new(7, (fsa_wall_t){0}, "pid", &sim));
    fsa_port_t *p = fsa_sim_port(sim);
    assert_non_null(p->process_id);
    assert_int_equal(p->process_id(p->ctx), (int64_t)getpid());
    fsa_sim_free(sim);
}

static void test_mono_add_ns__saturates(void **state)
{
    (void)state;
    fsa_mono_t t = {INT64_MAX - 5};
    assert_int_equal(fsa_mono_add_ns(t, 100).ns, INT64_MAX);
    fsa_mono_t u = {10};
    assert_int_equal(fsa_mono_add_ns(u, -3).ns, 7);
}

/* A sleep "forever" (or an advance that large) leaves the virtual clock at its end: it added
 * without saturating, a signed overflow, and the monotonic clock went back. */
static void test_sleep__forever_does_not_wrap_the_clock(void **state)
{
    (void)state;
    fsa_sim_t *sim = NULL;
    assert_fsa_ok(fsa_sim_new(1, (fsa_wall_t){0}, "wrap", &sim));
    fsa_port_t *p = fsa_sim_port(sim);
    fsa_sim_advance(sim, FSA_NS_PER_S);
    int64_t before = p->mono_now(p->ctx).ns;
    p->sleep(p->ctx, INT64_MAX);
    int64_t after = p->mono_now(p->ctx).ns;
    fsa_sim_advance(sim, INT64_MAX);
    int64_t later = p->mono_now(p->ctx).ns;
    fsa_sim_shift_wall(sim, INT64_MAX);
    fsa_sim_shift_wall(sim, INT64_MAX);
    int64_t wall = p->wall_now(p->ctx).ms; /* the base at its end, the clock's time added */
    fsa_sim_free(sim);
    assert_true(wall == INT64_MAX);
    assert_true(after > before);
    assert_true(later >= after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sleep__ten_virtual_minutes_take_no_real_time),
        cmocka_unit_test(test_sim_new__two_sims_keep_separate_clocks),
        cmocka_unit_test(test_random__same_seed_same_bytes),
        cmocka_unit_test(test_cond_wait__unsignalled_wait_jumps_virtual_clock),
        cmocka_unit_test(test_cond_wait__past_deadline_returns_at_once),
        cmocka_unit_test(test_cond_wait__signal_from_thread_wakes_waiter),
        cmocka_unit_test(test_sim_new__rejects_null_out),
        cmocka_unit_test(test_mono_add_ns__saturates),
        cmocka_unit_test(test_process_id__the_real_process),
        cmocka_unit_test(test_sleep__forever_does_not_wrap_the_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
