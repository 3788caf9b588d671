/* fieldsync: a file descriptor that is readable while a flag is set, for an app's poll loop. */
#ifndef FSA_PORT_NOTIFY_H
#define FSA_PORT_NOTIFY_H

#include <stdbool.h>

#include "port/status.h"

/*
 * libfieldsync's buffered delivery hands the app one fd to poll (GLib, Qt and libuv main loops
 * all take one): it is readable exactly while the flag is set. The owner sets and clears the
 * flag under its own lock, so the fd follows the state it stands for. Linux eventfd.
 */
typedef struct fsa_notify fsa_notify_t;

/* Creates a notifier, flag clear. FSA_OK (*out set), FSA_EINVAL, FSA_EIO, FSA_ENOMEM. */
fsa_status_t fsa_notify_open(fsa_notify_t **out) FSA_MUST_CHECK;

/* The fd to poll for POLLIN. Owned by the notifier: never read or close it. -1 for NULL. */
int fsa_notify_fd(const fsa_notify_t *n);

/* Sets the flag: the fd becomes readable (stays readable if it was). FSA_OK or FSA_EIO. */
fsa_status_t fsa_notify_set(fsa_notify_t *n) FSA_MUST_CHECK;

/* Clears the flag: the fd is not readable when this returns. FSA_OK or FSA_EIO. */
fsa_status_t fsa_notify_clear(fsa_notify_t *n) FSA_MUST_CHECK;

/* True while the fd is readable (a poll with timeout 0). */
bool fsa_notify_is_set(const fsa_notify_t *n);

/* Closes the fd and frees. NULL is accepted. */
void fsa_notify_close(fsa_notify_t *n);

#endif
