/* fieldsync tests: a SQLite VFS shim that fails the Nth write, sync, open or read of some files. */
#ifndef FSA_TESTS_STORAGE_VFS_FAULT_H
#define FSA_TESTS_STORAGE_VFS_FAULT_H

#include <stdbool.h>
#include <stdint.h>

/*
 * vfs_fault_install() registers "fsa-fault" as the process's default SQLite VFS. It wraps the
 * default VFS it finds (unix) and forwards every call to it, so the journal, which opens its file
 * with sqlite3_open_v2(..., NULL vfs), goes through the shim with no product change.
 *
 * While armed, the shim counts the calls of the armed kinds on files whose path starts with the
 * armed prefix (the main database, its -wal file; temporary files have no path and are never
 * counted) and fails the nth one (1-based), or every one from the nth on when persistent, the
 * way the unix VFS reports the errno of the flavour:
 *
 *   kind    EIO                        ENOSPC
 *   write   SQLITE_IOERR_WRITE         SQLITE_FULL
 *   sync    SQLITE_IOERR_FSYNC         SQLITE_IOERR_FSYNC (os_unix reports every fsync failure so)
 *   open    SQLITE_CANTOPEN            SQLITE_CANTOPEN
 *   read    SQLITE_IOERR_READ          SQLITE_IOERR_READ
 *
 * A failed write writes nothing, unless torn: then its first half reaches the file (a sector
 * torn by the failure). A failed sync does not sync; a failed open leaves no file open; a failed
 * read reads nothing. The WAL index (-shm) is memory-mapped through xShmMap and is not counted.
 *
 * The state is global to the process and guarded by a mutex, so files used by other threads
 * count too. Not for product code.
 */

typedef enum vfs_fault_kind {
    VFS_FAULT_WRITE = 1u << 0, /* xWrite */
    VFS_FAULT_SYNC = 1u << 1,  /* xSync */
    VFS_FAULT_OPEN = 1u << 2,  /* xOpen */
    VFS_FAULT_READ = 1u << 3,  /* xRead */
} vfs_fault_kind_t;

typedef enum vfs_fault_flavour {
    VFS_FAULT_EIO = 0,    /* the device failed */
    VFS_FAULT_ENOSPC = 1, /* the device is full */
} vfs_fault_flavour_t;

typedef struct vfs_fault_plan {
    unsigned kinds; /* a mask of vfs_fault_kind_t */
    int64_t nth;    /* 1-based index of the first failing call among the counted ones */
    vfs_fault_flavour_t flavour;
    bool persistent; /* every counted call from the nth on fails, until disarmed */
    bool torn;       /* a failing write writes its first half */
} vfs_fault_plan_t;

/* Registers the shim as the default VFS (once; later calls do nothing). Installs the project's
 * allocator into SQLite first (storage/libs.h), which must precede any other SQLite use.
 * Returns 0, or a SQLite error code. */
int vfs_fault_install(void);

/* Whether a sync that is not failed reaches the disk (default true). A test that cuts no power
 * may turn it off: the counting and the failing are the same, and a sweep that commits thousands
 * of times does not wait for the disk thousands of times. */
void vfs_fault_set_real_sync(bool on);

/* Arms the plan for files whose path starts with path_prefix (copied; at most 255 bytes) and
 * resets the counters. */
void vfs_fault_arm(const char *path_prefix, const vfs_fault_plan_t *plan);

/* Disarms: every call goes through again. The counters keep their values until the next arm. */
void vfs_fault_disarm(void);

/* Calls of the armed kinds counted since the last arm, and how many of them were failed. */
int64_t vfs_fault_calls(void);
int64_t vfs_fault_fired(void);

#endif
