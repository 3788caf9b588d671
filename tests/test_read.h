/* fieldsync tests: reading a whole file (a program's report or log) into memory. */
#ifndef FSA_TESTS_TEST_READ_H
#define FSA_TESTS_TEST_READ_H

#include <stdio.h>

#include "port/alloc.h"

/* The whole file at path, NUL-terminated (fsa_malloc'ed: fsa_free it), or NULL when it cannot be
 * opened or memory runs out. */
static inline char *test_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = fsa_malloc(cap);
    while (buf != NULL) {
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
        if (len + 1 == cap) {
            char *nb = fsa_realloc(buf, cap * 2);
            if (nb == NULL) {
                fsa_free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    (void)fclose(f);
    if (buf != NULL)
        buf[len] = '\0';
    return buf;
}

#endif
