/* fieldsync: hands the project's allocator to cJSON and SQLite (see libs.h). */
#include "storage/libs.h"

#include <stddef.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "port/alloc.h"
#include "port/once.h"

/*
 * SQLite asks an allocator for the size of a block (xSize), which the C library cannot tell
 * portably, so each block SQLite takes carries its size in a header of one max_align_t.
 */
#define HEADER sizeof(max_align_t)

static void *sq_malloc(int n)
{
    if (n <= 0)
        return NULL;
    unsigned char *p = fsa_malloc(HEADER + (size_t)n);
    if (p == NULL)
        return NULL;
    memcpy(p, &(size_t){(size_t)n}, sizeof(size_t));
    return p + HEADER;
}

static void sq_free(void *ptr)
{
    if (ptr != NULL)
        fsa_free((unsigned char *)ptr - HEADER);
}

static int sq_size(void *ptr)
{
    if (ptr == NULL)
        return 0;
    size_t n;
    memcpy(&n, (unsigned char *)ptr - HEADER, sizeof n);
    return (int)n;
}

static void *sq_realloc(void *ptr, int n)
{
    if (ptr == NULL)
        return sq_malloc(n);
    if (n <= 0)
        return NULL; /* SQLite never asks this; its contract leaves the block untouched */
    unsigned char *p = fsa_realloc((unsigned char *)ptr - HEADER, HEADER + (size_t)n);
    if (p == NULL)
        return NULL;
    memcpy(p, &(size_t){(size_t)n}, sizeof(size_t));
    return p + HEADER;
}

static int sq_roundup(int n)
{
    return (n + 7) & ~7;
}

static int sq_init(void *app)
{
    (void)app;
    return SQLITE_OK;
}

static void sq_shutdown(void *app)
{
    (void)app;
}

static fsa_once_t once = FSA_ONCE_INIT;

static void install(void)
{
    cJSON_InitHooks(&(cJSON_Hooks){.malloc_fn = fsa_malloc, .free_fn = fsa_free});
    static const sqlite3_mem_methods methods = {
        sq_malloc, sq_free, sq_realloc, sq_size, sq_roundup, sq_init, sq_shutdown, NULL,
    };
    /* SQLITE_MISUSE when SQLite is already in use in this process (a test that opened a database
     * through another path first): it then keeps its own allocator, which is equally correct. */
    (void)sqlite3_config(SQLITE_CONFIG_MALLOC, &methods);
    /* No statistics of SQLite's memory (nothing reads sqlite3_memory_used, and no soft heap
     * limit is set): with them, each of SQLite's allocations and frees takes a global mutex,
     * about 23 of each per recorded op, 5.3k of its 146k instructions (4% of the server's on a
     * push: its store installs this allocator too). */
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

void fsa_libs_use_allocator(void)
{
    fsa_once(&once, install);
}
