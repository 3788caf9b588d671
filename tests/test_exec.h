/* fieldsync tests: building the argv that runs one of the project's programs, through the
 * cross-compiling emulator when there is one. */
#ifndef FSA_TESTS_TEST_EXEC_H
#define FSA_TESTS_TEST_EXEC_H

#include <stddef.h>
#include <string.h>

/*
 * Fills argv (cap entries, NULL-terminated) with the words of emulator (|-separated, may be "";
 * they are split in place in scratch, which must hold a copy of it and live as long as argv),
 * then bin, then args (NULL-terminated). Returns the number of words.
 */
static inline size_t test_exec_argv(char *scratch, const char *bin, const char *const *args,
                                    const char **argv, size_t cap)
{
    size_t n = 0;
    for (char *w = scratch; *w != '\0' && n + 2 < cap;) {
        argv[n++] = w;
        char *bar = strchr(w, '|');
        if (bar == NULL)
            break;
        *bar = '\0';
        w = bar + 1;
    }
    argv[n++] = bin;
    for (size_t i = 0; args[i] != NULL && n + 1 < cap; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return n;
}

#endif
