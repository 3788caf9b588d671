/* fieldsync: posix building blocks that other port implementations (sim) reuse. Internal. */
#ifndef FSA_PORT_POSIX_POSIX_H
#define FSA_PORT_POSIX_POSIX_H

#include <stdbool.h>
#include <time.h>

#include "port/port.h"

fsa_status_t fsa__posix_thread_create(void *ctx, fsa_thread_t **out, fsa_thread_fn fn,
                                      void *arg) FSA_MUST_CHECK;
fsa_status_t fsa__posix_thread_join(void *ctx, fsa_thread_t *t, void **ret) FSA_MUST_CHECK;
fsa_status_t fsa__posix_mutex_new(void *ctx, fsa_mutex_t **out) FSA_MUST_CHECK;
void fsa__posix_mutex_lock(void *ctx, fsa_mutex_t *m);
void fsa__posix_mutex_unlock(void *ctx, fsa_mutex_t *m);
void fsa__posix_mutex_free(void *ctx, fsa_mutex_t *m);
fsa_status_t fsa__posix_cond_new(void *ctx, fsa_cond_t **out) FSA_MUST_CHECK;
fsa_status_t fsa__posix_cond_wait_real(fsa_cond_t *c, fsa_mutex_t *m,
                                       fsa_mono_t deadline) FSA_MUST_CHECK;
void fsa__posix_cond_signal(void *ctx, fsa_cond_t *c);
void fsa__posix_cond_broadcast(void *ctx, fsa_cond_t *c);
void fsa__posix_cond_free(void *ctx, fsa_cond_t *c);
fsa_status_t fsa__posix_flock_open(void *ctx, const char *path, fsa_flock_t **out) FSA_MUST_CHECK;
fsa_status_t fsa__posix_flock_try(void *ctx, fsa_flock_t *f, uint64_t slot) FSA_MUST_CHECK;
fsa_status_t fsa__posix_flock_try_shared(void *ctx, fsa_flock_t *f, uint64_t slot) FSA_MUST_CHECK;
void fsa__posix_flock_release(void *ctx, fsa_flock_t *f, uint64_t slot);
void fsa__posix_flock_close(void *ctx, fsa_flock_t *f);
fsa_status_t fsa__posix_flock_map(void *ctx, fsa_flock_t *f, size_t len,
                                  void **addr) FSA_MUST_CHECK;
void fsa__posix_flock_unmap(void *ctx, void *addr, size_t len);
fsa_status_t fsa__posix_flock_clear(void *ctx, fsa_flock_t *f, size_t len) FSA_MUST_CHECK;
#ifdef FSA_FAULT_HOOKS
/* For tests: while on, flock_clear is told that no hole can be punched (EOPNOTSUPP, as on a file
 * system without them), and writes the zeros itself. Process-wide. */
void fsa__posix_refuse_punch(bool on);
#endif

/* ns (a duration or a CLOCK_MONOTONIC deadline) as a timespec, negatives as zero and seconds
 * clamped to INT32_MAX (posix.c says why). The one conversion of the project's 64-bit nanoseconds
 * to the C library's time_t, which every build makes 64 bits wide (posix.c). */
struct timespec fsa__posix_timespec(int64_t ns);

#endif
