/* fieldsync: the growable byte buffer (port/buf.h). */
#include "port/buf.h"

#include <stdint.h>
#include <string.h>

#include "port/alloc.h"

size_t fsa_buf_grown_cap(const fsa_buf_t *b, size_t n, size_t first, size_t max)
{
    if (b == NULL || first == 0 || max == SIZE_MAX || n > max || b->len > max - n)
        return 0;
    size_t need = b->len + n + 1; /* no overflow: len + n <= max < SIZE_MAX */
    if (need <= b->cap)
        return b->cap;
    size_t cap = b->cap != 0 ? b->cap : first;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    return cap > max + 1 ? max + 1 : cap;
}

fsa_status_t fsa_buf_reserve(fsa_buf_t *b, size_t cap)
{
    if (b == NULL)
        return FSA_EINVAL;
    if (cap <= b->cap)
        return FSA_OK;
    char *p = fsa_realloc(b->p, cap);
    if (p == NULL)
        return FSA_ENOMEM;
    p[b->len] = '\0'; /* cap > len: a buffer that has one is always terminated */
    b->p = p;
    b->cap = cap;
    return FSA_OK;
}

fsa_status_t fsa_buf_append(fsa_buf_t *b, const void *data, size_t n, size_t first, size_t max)
{
    if (b == NULL || (data == NULL && n > 0) || first == 0)
        return FSA_EINVAL;
    if (n == 0)
        return FSA_OK;
    size_t cap = fsa_buf_grown_cap(b, n, first, max);
    if (cap == 0)
        return FSA_ETOOLARGE;
    fsa_status_t st = fsa_buf_reserve(b, cap);
    if (st != FSA_OK)
        return st;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return FSA_OK;
}
