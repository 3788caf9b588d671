/* fieldsync: the sim port, a virtual clock and seeded randomness for tests and the simulator. */
#ifndef FSA_PORT_SIM_SIM_H
#define FSA_PORT_SIM_SIM_H

#include "port/port.h"

/*
 * A sim owns one fsa_port_t whose clocks are virtual: they start at zero (monotonic) and at
 * start_wall (wall) and move only when someone sleeps on the port, waits on it past its grace
 * period, or calls fsa_sim_advance(). Random bytes come from a generator seeded with `seed`, so
 * the same seed gives the same sequence. Threads, mutexes and file locks are the real posix ones:
 * a simulated device still runs real concurrent code.
 *
 * Many sims may live in one process; each has its own clock and random sequence.
 *
 * Waits: cond_wait with a deadline returns FSA_OK when signalled. If nobody signals within a short
 * real grace period (FSA_SIM_WAIT_GRACE_NS), the waiter behaves as a sleeper: it advances the
 * virtual clock to its deadline and returns FSA_ETIMEOUT. So a lock wait of 10 virtual seconds
 * costs about a millisecond of real time.
 */

#define FSA_SIM_WAIT_GRACE_NS (2 * FSA_NS_PER_MS)

typedef struct fsa_sim fsa_sim_t;

typedef void (*fsa_sim_log_fn)(void *arg, fsa_log_level_t level, const char *msg);

/* Creates a sim. label names it in log lines (copied; NULL means "sim"). Sets *out on FSA_OK;
 * returns FSA_EINVAL or FSA_ENOMEM otherwise. Free with fsa_sim_free(). */
fsa_status_t fsa_sim_new(uint64_t seed, fsa_wall_t start_wall, const char *label,
                         fsa_sim_t **out) FSA_MUST_CHECK;

/* Frees the sim (NULL is accepted). No thread may still use its port. */
void fsa_sim_free(fsa_sim_t *sim);

/* The sim's port; valid until fsa_sim_free(). */
fsa_port_t *fsa_sim_port(fsa_sim_t *sim);

/* Moves the virtual monotonic (and with it the wall) clock forward by ns; negative is ignored. */
void fsa_sim_advance(fsa_sim_t *sim, int64_t ns);

/* Shifts the wall clock alone by delta_ms (a device clock that is off, or is corrected). The
 * monotonic clock is not affected. */
void fsa_sim_shift_wall(fsa_sim_t *sim, int64_t delta_ms);

/* Redirects the sim's log lines (default: stderr, prefixed with the label). fn NULL restores the
 * default. */
void fsa_sim_set_log(fsa_sim_t *sim, fsa_sim_log_fn fn, void *arg);

#endif
