/* fieldsync: the project's allocator: the C library's, with a countdown for fault injection in
 * builds with FSA_FAULT_HOOKS (the tests'). */
#include "port/alloc.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local unsigned long failures; /* NULL returns on this thread */

unsigned long fsa_alloc_failures(void)
{
    return failures;
}

#ifdef FSA_FAULT_HOOKS
static atomic_ulong fail_at; /* 0: disarmed; else the count at which an allocation fails */
static atomic_ulong calls;
static atomic_bool fired;
static void (*_Atomic on_fault)(void *arg);
static void *_Atomic on_fault_arg;
static const void *_Atomic fault_caller;

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

const void *fsa_alloc_fault_caller(void)
{
    return atomic_load(&fault_caller);
}

void fsa_alloc_on_fault(void (*fn)(void *arg), void *arg)
{
    atomic_store(&on_fault, NULL);
    atomic_store(&on_fault_arg, arg);
    atomic_store(&on_fault, fn);
}

/* True when this allocation is the armed one. The common case is one relaxed load. caller: the
 * return address of the public function's call (CALLER). */
static bool fault(const void *caller)
{
    if (atomic_load_explicit(&fail_at, memory_order_relaxed) == 0)
        return false;
    unsigned long n = atomic_fetch_add(&calls, 1) + 1;
    if (n != atomic_load(&fail_at))
        return false;
    atomic_store(&fault_caller, caller);
    atomic_store(&fired, true);
    void (*fn)(void *) = atomic_load(&on_fault);
    if (fn != NULL)
        fn(atomic_load(&on_fault_arg));
    return true;
}
#define CALLER __builtin_return_address(0)
#else
/* The production allocator: no countdown, nothing to check. */
static bool fault(const void *caller)
{
    (void)caller;
    return false;
}
#define CALLER NULL
#endif

/* Counts a NULL result of a non-empty request (malloc(0) may return NULL and is no failure). */
static void *counted(void *p, bool nonempty)
{
    if (p == NULL && nonempty)
        failures++;
    return p;
}

void *fsa_malloc(size_t size)
{
    return counted(fault(CALLER) ? NULL : malloc(size), size > 0);
}

/* malloc and memset, which the device binary imports anyway, rather than calloc (one import
 * less); count * size that overflows is refused as calloc refuses it. */
void *fsa_calloc(size_t count, size_t size)
{
    void *p = NULL;
    if (!fault(CALLER) && (size == 0 || count <= SIZE_MAX / size)) {
        /* malloc(0), as calloc(0, n): NULL or a pointer to free, neither a failure (counted) */
        p = malloc(count * size); // NOLINT(clang-analyzer-optin.portability.UnixAPI)
        if (p != NULL)
            memset(p, 0, count * size);
    }
    return counted(p, count > 0 && size > 0);
}

void *fsa_realloc(void *ptr, size_t size)
{
    return counted(fault(CALLER) ? NULL : realloc(ptr, size), size > 0);
}

void fsa_free(void *ptr)
{
    free(ptr);
}

/* The n first bytes of s and a NUL; caller as fault()'s (a library's strdup hook is ours). */
static char *dup_n(const char *s, size_t n, const void *caller)
{
    char *out = counted(fault(caller) ? NULL : malloc(n + 1), true);
    if (out != NULL) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return out;
}

char *fsa_strdup(const char *s)
{
    return dup_n(s, strlen(s), CALLER);
}

char *fsa_strndup(const char *s, size_t max)
{
    return dup_n(s, strnlen(s, max), CALLER);
}

void *fsa_array_grow(void *items, size_t *cap, size_t n, size_t size, size_t first, size_t max)
{
    if (cap == NULL || size == 0 || first == 0 || n > *cap)
        return NULL;
    if (n < *cap)
        return items;
    const size_t limit = max > 0 && max < SIZE_MAX / size ? max : SIZE_MAX / size;
    if (*cap >= limit)
        return NULL;
    size_t grown = *cap == 0 ? first : (*cap > limit / 2 ? limit : *cap * 2);
    if (grown > limit)
        grown = limit;
    void *p = fsa_realloc(items, grown * size);
    if (p == NULL)
        return NULL;
    *cap = grown;
    return p;
}
