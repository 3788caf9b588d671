/* fieldsync: run a function once per process, whichever thread asks first. */
#ifndef FSA_PORT_ONCE_H
#define FSA_PORT_ONCE_H

#include <pthread.h>

/*
 * Process-wide one-time set-up (handing the project's allocator to SQLite, cJSON and libcurl):
 * fsa_once(&once, fn) runs fn exactly once however many threads call it at the same time, and
 * returns in every caller only after fn has returned. Define the flag statically:
 *     static fsa_once_t once = FSA_ONCE_INIT;
 * posix only (pthread_once): the sim port's threads are the real ones too.
 */
typedef pthread_once_t fsa_once_t;
#define FSA_ONCE_INIT PTHREAD_ONCE_INIT

void fsa_once(fsa_once_t *once, void (*fn)(void));

#endif
