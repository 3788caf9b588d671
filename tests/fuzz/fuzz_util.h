/* fieldsync fuzz targets: invariant checks that abort, and splitting an input into strings. */
#ifndef FSA_TESTS_FUZZ_UTIL_H
#define FSA_TESTS_FUZZ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port/alloc.h"

/* An invariant of the code under test: a violation is a bug, reported like a crash (abort), so
 * libFuzzer saves the input. Never compiled out. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant violated: %s (%s:%d)\n", #cond, __FILE__, __LINE__);   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A failed allocation in the harness itself cannot tell us anything: stop loudly. */
static inline void *fuzz_alloc(size_t n)
{
    void *p = fsa_malloc(n > 0 ? n : 1);
    FUZZ_CHECK(p != NULL);
    return p;
}

/* data[0..size) as a NUL-terminated copy (the caller fsa_free()s it). */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = fuzz_alloc(size + 1);
    if (size > 0)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/*
 * Splits data[0..size) at every sep byte into at most max NUL-terminated strings, all held in one
 * buffer (*buf, the caller fsa_free()s it); the last part takes the rest, separators included.
 * Returns the number of parts (at least 1).
 */
static inline size_t fuzz_split(const uint8_t *data, size_t size, uint8_t sep, char **parts,
                                size_t max, char **buf)
{
    char *b = fuzz_strndup(data, size);
    size_t n = 0;
    parts[n++] = b;
    for (size_t i = 0; i < size && n < max; i++) {
        if ((uint8_t)b[i] == sep) {
            b[i] = '\0';
            parts[n++] = b + i + 1;
        }
    }
    *buf = b;
    return n;
}

#endif
