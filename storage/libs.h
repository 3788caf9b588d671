/* fieldsync: hands the project's allocator (port/alloc.h) to cJSON and SQLite. */
#ifndef FSA_STORAGE_LIBS_H
#define FSA_STORAGE_LIBS_H

/*
 * Installs fsa_malloc and friends as cJSON's hooks and as SQLite's allocator
 * (SQLITE_CONFIG_MALLOC, without SQLite's memory statistics: SQLITE_CONFIG_MEMSTATUS off), once
 * per process; later calls do nothing. SQLite takes an allocator
 * only before its first use, so the journal and the server's store call this before they open a
 * database, and programs call it first thing in main(). Installed or not, every pointer either
 * library returns is still released correctly: the project's allocator is the C library's.
 */
void fsa_libs_use_allocator(void);

#endif
