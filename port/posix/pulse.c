/* fieldsync: the process-wide pulse (port/pulse.h): pthreads, CLOCK_MONOTONIC deadlines. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "port/posix/posix.h"
#include "port/pulse.h"

static pthread_mutex_t pulse_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pulse_cv;
static pthread_once_t pulse_once = PTHREAD_ONCE_INIT;
static _Atomic uint64_t pulse_n;
static _Atomic int pulse_waiters;

static void pulse_init(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&pulse_cv, &a); /* no allocation on Linux: cannot fail */
    pthread_condattr_destroy(&a);
}

uint64_t fsa_pulse_count(void)
{
    return atomic_load(&pulse_n);
}

/* A waiter counts itself before it reads the count, and a poster bumps the count before it reads
 * the waiters (both sequentially consistent): a poster that sees no waiter bumped the count before
 * any waiter read it, so that waiter does not wait; one that sees a waiter wakes it under the
 * mutex, which the waiter holds from its read of the count until it sleeps. */
void fsa_pulse_post(void)
{
    atomic_fetch_add(&pulse_n, 1);
    if (atomic_load(&pulse_waiters) == 0)
        return;
    pthread_once(&pulse_once, pulse_init);
    pthread_mutex_lock(&pulse_mu);
    pthread_cond_broadcast(&pulse_cv);
    pthread_mutex_unlock(&pulse_mu);
}

uint64_t fsa_pulse_wait(uint64_t seen, fsa_mono_t deadline)
{
    pthread_once(&pulse_once, pulse_init);
    struct timespec ts = fsa__posix_timespec(deadline.ns);
    atomic_fetch_add(&pulse_waiters, 1);
    pthread_mutex_lock(&pulse_mu);
    uint64_t n;
    while ((n = atomic_load(&pulse_n)) == seen) {
        if (pthread_cond_timedwait(&pulse_cv, &pulse_mu, &ts) != 0) {
            n = atomic_load(&pulse_n); /* the deadline (or an error): no more waiting */
            break;
        }
    }
    pthread_mutex_unlock(&pulse_mu);
    atomic_fetch_sub(&pulse_waiters, 1);
    return n;
}
