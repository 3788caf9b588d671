/* fieldsync: the project's allocator: the C library's, with a countdown for fault injection. */
#include "port/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_ulong fail_at; /* 0: disarmed; else the count at which an allocation fails */
static atomic_ulong calls;
static atomic_bool fired;

void fsa_alloc_fail_nth(unsigned long n)
{
    atomic_store(&fail_at, 0);
    atomic_store(&calls, 0);
    atomic_store(&fired, false);
    atomic_store(&fail_at, n);
}

unsigned long fsa_alloc_count(void)
{
    return atomic_load(&calls);
}

bool fsa_alloc_fault_fired(void)
{
    return atomic_load(&fired);
}

/* True when this allocation is the armed one. The common case is one relaxed load. */
static bool fault(void)
{
    if (atomic_load_explicit(&fail_at, memory_order_relaxed) == 0)
        return false;
    unsigned long n = atomic_fetch_add(&calls, 1) + 1;
    if (n != atomic_load(&fail_at))
        return false;
    atomic_store(&fired, true);
    return true;
}

void *fsa_malloc(size_t size)
{
    return fault() ? NULL : malloc(size);
}

void *fsa_calloc(size_t count, size_t size)
{
    return fault() ? NULL : calloc(count, size);
}

void *fsa_realloc(void *ptr, size_t size)
{
    return fault() ? NULL : realloc(ptr, size);
}

void fsa_free(void *ptr)
{
    free(ptr);
}

char *fsa_strdup(const char *s)
{
    return fsa_strndup(s, strlen(s));
}

char *fsa_strndup(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    char *out = fsa_malloc(n + 1);
    if (out != NULL) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return out;
}
