/* fieldsync: a process-wide pulse: a count any thread bumps to wake the threads waiting on it. */
#ifndef FSA_PORT_PULSE_H
#define FSA_PORT_PULSE_H

#include <stdint.h>

#include "port/port.h"

/*
 * The journal's connections bump it each time one of them commits a write (storage/db.c), and a
 * connection that finds the journal's write lock taken waits for the next bump instead of sleeping
 * a guessed time: it tries again the moment a writer of this process is done (a writer in another
 * process is still polled). Deadlines are on the posix port's monotonic clock (CLOCK_MONOTONIC),
 * whatever the caller's port: the writers waited for are real threads. Static: nothing to create
 * or free, and no call fails.
 */

/* The current count. */
uint64_t fsa_pulse_count(void);

/* Bumps the count and wakes every waiter. Cheap when nobody waits (two atomic operations). */
void fsa_pulse_post(void);

/* Waits until the count differs from seen, or until deadline. Returns the count then. */
uint64_t fsa_pulse_wait(uint64_t seen, fsa_mono_t deadline);

#endif
