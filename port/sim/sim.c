/* fieldsync: the sim port: virtual clocks advanced by sleepers, seeded random bytes. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port/alloc.h"
#include "port/posix/posix.h"
#include "port/sim/sim.h"

struct fsa_sim {
    fsa_port_t port;
    pthread_mutex_t mu; /* guards the fields below */
    int64_t now_ns;
    int64_t wall_base_ms;
    uint64_t rng; /* splitmix64 state */
    fsa_sim_log_fn log_fn;
    void *log_arg;
    char label[64];
};

static fsa_mono_t sim_mono_now(void *ctx)
{
    fsa_sim_t *sim = ctx;
    pthread_mutex_lock(&sim->mu);
    fsa_mono_t t = {sim->now_ns};
    pthread_mutex_unlock(&sim->mu);
    return t;
}

static fsa_wall_t sim_wall_now(void *ctx)
{
    fsa_sim_t *sim = ctx;
    pthread_mutex_lock(&sim->mu);
    fsa_wall_t t;
    if (__builtin_add_overflow(sim->wall_base_ms, sim->now_ns / FSA_NS_PER_MS, &t.ms))
        t.ms = sim->wall_base_ms > 0 ? INT64_MAX : INT64_MIN; /* a base shifted to the end */
    pthread_mutex_unlock(&sim->mu);
    return t;
}

/* Advances the clock to at least target (never backwards: another sleeper may be ahead). */
static void advance_to(fsa_sim_t *sim, int64_t target)
{
    pthread_mutex_lock(&sim->mu);
    if (target > sim->now_ns)
        sim->now_ns = target;
    pthread_mutex_unlock(&sim->mu);
}

static void sim_sleep(void *ctx, int64_t ns)
{
    fsa_sim_t *sim = ctx;
    if (ns <= 0)
        return;
    pthread_mutex_lock(&sim->mu);
    /* Saturated, as fsa_mono_add_ns is: a sleep "forever" leaves the clock at its end, never
     * wrapped to the past (a signed overflow). */
    sim->now_ns = fsa_mono_add_ns((fsa_mono_t){sim->now_ns}, ns).ns;
    pthread_mutex_unlock(&sim->mu);
}

/* splitmix64: tiny, fast, and good enough for reproducible simulation; not for secrets. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static fsa_status_t sim_random(void *ctx, void *buf, size_t n)
{
    fsa_sim_t *sim = ctx;
    unsigned char *p = buf;
    pthread_mutex_lock(&sim->mu);
    while (n > 0) {
        uint64_t r = splitmix64(&sim->rng);
        size_t k = n < sizeof r ? n : sizeof r;
        memcpy(p, &r, k);
        p += k;
        n -= k;
    }
    pthread_mutex_unlock(&sim->mu);
    return FSA_OK;
}

static fsa_status_t sim_cond_wait(void *ctx, fsa_cond_t *c, fsa_mutex_t *m, fsa_mono_t deadline)
{
    fsa_sim_t *sim = ctx;
    if (sim_mono_now(sim).ns >= deadline.ns)
        return FSA_ETIMEOUT;
    /* The grace period is real time: it gives another thread the chance to signal before this
     * waiter decides nobody will and jumps the virtual clock to its deadline. */
    fsa_mono_t real_deadline =
        fsa_mono_add_ns(fsa_port_posix()->mono_now(NULL), FSA_SIM_WAIT_GRACE_NS);
    if (fsa__posix_cond_wait_real(c, m, real_deadline) == FSA_OK)
        return FSA_OK;
    if (deadline.ns == INT64_MAX)
        return FSA_OK; /* waiting forever: report a spurious wake-up, the caller waits again */
    advance_to(sim, deadline.ns);
    return FSA_ETIMEOUT;
}

static void default_log(void *arg, fsa_log_level_t level, const char *msg)
{
    fsa_sim_t *sim = arg;
    fprintf(stderr, "%s: %s: %s\n", sim->label, fsa_log_level_str(level), msg);
}

static void sim_log(void *ctx, fsa_log_level_t level, const char *msg)
{
    fsa_sim_t *sim = ctx;
    pthread_mutex_lock(&sim->mu);
    fsa_sim_log_fn fn = sim->log_fn;
    void *arg = sim->log_arg;
    pthread_mutex_unlock(&sim->mu);
    fn(arg, level, msg);
}

fsa_status_t fsa_sim_new(uint64_t seed, fsa_wall_t start_wall, const char *label, fsa_sim_t **out)
{
    if (out == NULL)
        return FSA_EINVAL;
    fsa_sim_t *sim = fsa_calloc(1, sizeof *sim);
    if (sim == NULL)
        return FSA_ENOMEM;
    if (pthread_mutex_init(&sim->mu, NULL) != 0) {
        fsa_free(sim);
        return FSA_ENOMEM;
    }
    sim->wall_base_ms = start_wall.ms;
    sim->rng = seed;
    sim->log_fn = default_log;
    sim->log_arg = sim;
    snprintf(sim->label, sizeof sim->label, "%s", label != NULL ? label : "sim");

    fsa_port_t *p = &sim->port;
    *p = *fsa_port_posix(); /* threads, mutexes and file locks are the real ones */
    p->name = "sim";
    p->ctx = sim;
    p->mono_now = sim_mono_now;
    p->wall_now = sim_wall_now;
    p->sleep = sim_sleep;
    p->random = sim_random;
    p->cond_wait = sim_cond_wait;
    p->log = sim_log;
    *out = sim;
    return FSA_OK;
}

void fsa_sim_free(fsa_sim_t *sim)
{
    if (sim == NULL)
        return;
    pthread_mutex_destroy(&sim->mu);
    fsa_free(sim);
}

fsa_port_t *fsa_sim_port(fsa_sim_t *sim)
{
    return &sim->port;
}

void fsa_sim_advance(fsa_sim_t *sim, int64_t ns)
{
    if (ns > 0)
        sim_sleep(sim, ns);
}

void fsa_sim_shift_wall(fsa_sim_t *sim, int64_t delta_ms)
{
    pthread_mutex_lock(&sim->mu);
    if (__builtin_add_overflow(sim->wall_base_ms, delta_ms, &sim->wall_base_ms))
        sim->wall_base_ms = delta_ms > 0 ? INT64_MAX : INT64_MIN;
    pthread_mutex_unlock(&sim->mu);
}

void fsa_sim_set_log(fsa_sim_t *sim, fsa_sim_log_fn fn, void *arg)
{
    pthread_mutex_lock(&sim->mu);
    sim->log_fn = fn != NULL ? fn : default_log;
    sim->log_arg = fn != NULL ? arg : sim;
    pthread_mutex_unlock(&sim->mu);
}
