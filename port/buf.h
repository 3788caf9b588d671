/* fieldsync: the one growable byte buffer (a body read in pieces: the transport's answer, the
 * server's request body, the simulator's admin answers). */
#ifndef FSA_PORT_BUF_H
#define FSA_PORT_BUF_H

#include <stddef.h>

#include "port/status.h"

/*
 * Pure code over port/alloc.h, in port/ because it is the one layer below all its users.
 *
 * A buffer starts zeroed ({0}): p NULL, len 0, cap 0. Once p is set it holds len bytes and a
 * NUL after them (a body can be read as a string), in cap bytes. The capacity starts
 * at first and doubles until the data fits, but never passes max + 1 (max bytes of data and the
 * NUL; max must be below SIZE_MAX, else nothing fits). Release p with fsa_free (or hand it on and
 * zero the buffer).
 *
 * fsa_buf_append: appends n bytes of data (n 0 is a no-op: FSA_OK, p may stay NULL).
 *   FSA_OK; FSA_ETOOLARGE when len + n would pass max; FSA_ENOMEM when growing failed; FSA_EINVAL
 *   on NULL b, NULL data with n > 0, or first 0. On an error nothing is appended and the buffer is
 *   as it was.
 * fsa_buf_grown_cap: the capacity an append of n bytes would grow the buffer to (cap itself when
 *   it fits already), 0 when len + n would pass max. Lets a caller account for memory (a budget)
 *   before fsa_buf_reserve.
 * fsa_buf_reserve: grows the capacity to at least cap (never shrinks; cap 0 is a no-op). FSA_OK,
 * FSA_ENOMEM (the buffer as it was), FSA_EINVAL (b NULL).
 */
typedef struct fsa_buf {
    char *p;
    size_t len;
    size_t cap;
} fsa_buf_t;

fsa_status_t fsa_buf_append(fsa_buf_t *b, const void *data, size_t n, size_t first,
                            size_t max) FSA_MUST_CHECK;
size_t fsa_buf_grown_cap(const fsa_buf_t *b, size_t n, size_t first, size_t max);
fsa_status_t fsa_buf_reserve(fsa_buf_t *b, size_t cap) FSA_MUST_CHECK;

#endif
