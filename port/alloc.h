/* fieldsync: the project's allocator, the one place memory is taken from the C library. */
#ifndef FSA_PORT_ALLOC_H
#define FSA_PORT_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Every allocation of the project goes through these functions (toolchain/banned.sh refuses raw
 * malloc elsewhere), and they are handed to cJSON, SQLite (fsa_libs_use_allocator) and libcurl
 * (the transport's global init), so that a test can make the Nth allocation of a whole path fail.
 *
 * They have the C library's contracts exactly, and fsa_free is the C library's release: memory
 * from fsa_malloc may reach libc's own release and memory from libc (realpath) fsa_free(), so
 * mixing the two never corrupts the heap.
 */
void *fsa_malloc(size_t size);
void *fsa_calloc(size_t count, size_t size);
void *fsa_realloc(void *ptr, size_t size);
void fsa_free(void *ptr);
char *fsa_strdup(const char *s);
char *fsa_strndup(const char *s, size_t max);

/*
 * The one growth rule of the project's growable arrays: makes room for element n of an array
 * (items, of *cap elements of size bytes each) that holds n. While n < *cap that is items itself;
 * at n == *cap the array is reallocated to first elements when *cap is 0, else to twice *cap, and
 * never past max elements (0: no maximum but size_t's), *cap updated. Returns the array to use
 * (store it back); NULL when memory is short, when it already holds max elements, when the bytes
 * would overflow size_t, for n > *cap (a caller's mistake: one doubling might not reach it), or
 * for a NULL cap, a size or first of 0: items and *cap are unchanged
 * then, and items is still the caller's to free.
 */
void *fsa_array_grow(void *items, size_t *cap, size_t n, size_t size, size_t first, size_t max);

#ifdef FSA_FAULT_HOOKS
/*
 * Fault injection, for tests: compiled only with -DFSA_FAULT_HOOKS=ON (on whenever the tests are
 * built), never into libfieldsync.so or .a. fsa_alloc_fail_nth(n) arms the allocator so that the
 * nth allocation from now (1-based; fsa_realloc, fsa_strdup and the rest count as allocations)
 * returns NULL, once; 0 disarms it. The count is process-wide and atomic, so the tests that sweep
 * N = 1, 2, ... run their workload on one thread. fsa_alloc_count() is the number of allocations
 * since the last fsa_alloc_fail_nth() (counted only while armed: arm with ULONG_MAX to count
 * without failing); fsa_alloc_fault_fired() tells whether the armed allocation has failed.
 */
void fsa_alloc_fail_nth(unsigned long n);
unsigned long fsa_alloc_count(void);
bool fsa_alloc_fault_fired(void);

/*
 * For tests that must tell where the armed allocation failed: fn(arg) is called on the failing
 * thread just before the armed allocation returns NULL (fn must not call this allocator; it may
 * take a backtrace). NULL removes it.
 */
void fsa_alloc_on_fault(void (*fn)(void *arg), void *arg);

/* Where the armed allocation that failed was called from: the return address of its call to
 * fsa_malloc (or calloc, realloc, strdup, strndup). A library given these functions as its hooks
 * (libcurl, cJSON) calls them directly, so the address is in that library even where its frames
 * cannot be unwound (ARM without unwind tables). NULL before any armed allocation failed. */
const void *fsa_alloc_fault_caller(void);
#endif

/*
 * The number of allocations of this thread that returned NULL (injected or real), ever. A
 * library that reports a failure without its cause (cJSON_Parse returns NULL for bad text and
 * for a failed allocation alike) is told apart by comparing this before and after the call; it
 * sees the library's allocations only when they come here (fsa_libs_use_allocator()).
 */
unsigned long fsa_alloc_failures(void);

#endif
