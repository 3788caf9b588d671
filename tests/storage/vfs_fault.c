/* fieldsync tests: a SQLite VFS shim that fails the Nth write, sync, open or read of some files. */
#include "tests/storage/vfs_fault.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "storage/libs.h"

/* A file of the shim: our header, then the wrapped VFS's file object (real) right after it. */
typedef struct vf_file {
    sqlite3_file base;
    sqlite3_file *real;
    const char *name; /* SQLite keeps the name valid until xClose; NULL for temporary files */
} vf_file_t;

/* The real file starts at the next max_align_t boundary after our header. */
#define VF_HEADER                                                                                  \
    ((sizeof(vf_file_t) + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t))

static struct {
    pthread_mutex_t mu;
    bool armed;
    char prefix[256];
    vfs_fault_plan_t plan;
    int64_t calls;
    int64_t fired;
    bool skip_sync;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

static sqlite3_vfs *g_base;

/* Counts a call of kind on the file called name; true when it must fail. */
static bool should_fail(unsigned kind, const char *name)
{
    bool fail = false;
    pthread_mutex_lock(&g.mu);
    if (g.armed && (g.plan.kinds & kind) != 0 && name != NULL &&
        strncmp(name, g.prefix, strlen(g.prefix)) == 0) {
        g.calls++;
        if (g.calls == g.plan.nth || (g.plan.persistent && g.calls > g.plan.nth)) {
            fail = true;
            g.fired++;
        }
    }
    pthread_mutex_unlock(&g.mu);
    return fail;
}

static vfs_fault_plan_t current_plan(void)
{
    pthread_mutex_lock(&g.mu);
    vfs_fault_plan_t p = g.plan;
    pthread_mutex_unlock(&g.mu);
    return p;
}

/* ---- file methods: forward to the real file, failing writes and syncs when told ---- */

static sqlite3_file *real_of(sqlite3_file *f)
{
    return ((vf_file_t *)f)->real;
}

static int vf_close(sqlite3_file *f)
{
    sqlite3_file *r = real_of(f);
    int rc = r->pMethods != NULL ? r->pMethods->xClose(r) : SQLITE_OK;
    f->pMethods = NULL;
    return rc;
}

static int vf_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    sqlite3_file *r = real_of(f);
    if (should_fail(VFS_FAULT_READ, ((vf_file_t *)f)->name)) {
        errno = EIO;
        return SQLITE_IOERR_READ;
    }
    return r->pMethods->xRead(r, buf, n, off);
}

static int vf_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    sqlite3_file *r = real_of(f);
    if (should_fail(VFS_FAULT_WRITE, ((vf_file_t *)f)->name)) {
        vfs_fault_plan_t p = current_plan();
        if (p.torn && n > 1)
            (void)r->pMethods->xWrite(r, buf, n / 2, off);
        errno = p.flavour == VFS_FAULT_ENOSPC ? ENOSPC : EIO;
        return p.flavour == VFS_FAULT_ENOSPC ? SQLITE_FULL : SQLITE_IOERR_WRITE;
    }
    return r->pMethods->xWrite(r, buf, n, off);
}

static int vf_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xTruncate(r, size);
}

static int vf_sync(sqlite3_file *f, int flags)
{
    sqlite3_file *r = real_of(f);
    if (should_fail(VFS_FAULT_SYNC, ((vf_file_t *)f)->name)) {
        errno = current_plan().flavour == VFS_FAULT_ENOSPC ? ENOSPC : EIO;
        return SQLITE_IOERR_FSYNC;
    }
    pthread_mutex_lock(&g.mu);
    bool skip = g.skip_sync;
    pthread_mutex_unlock(&g.mu);
    return skip ? SQLITE_OK : r->pMethods->xSync(r, flags);
}

static int vf_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xFileSize(r, size);
}

static int vf_lock(sqlite3_file *f, int level)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xLock(r, level);
}

static int vf_unlock(sqlite3_file *f, int level)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xUnlock(r, level);
}

static int vf_check_reserved(sqlite3_file *f, int *out)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xCheckReservedLock(r, out);
}

static int vf_file_control(sqlite3_file *f, int op, void *arg)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xFileControl(r, op, arg);
}

static int vf_sector_size(sqlite3_file *f)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xSectorSize(r);
}

static int vf_device_characteristics(sqlite3_file *f)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xDeviceCharacteristics(r);
}

static int vf_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **out)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xShmMap(r, region, size, extend, out);
}

static int vf_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xShmLock(r, offset, n, flags);
}

static void vf_shm_barrier(sqlite3_file *f)
{
    sqlite3_file *r = real_of(f);
    r->pMethods->xShmBarrier(r);
}

static int vf_shm_unmap(sqlite3_file *f, int delete_flag)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xShmUnmap(r, delete_flag);
}

static int vf_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **out)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xFetch(r, off, n, out);
}

static int vf_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xUnfetch(r, off, p);
}

/* One table per method version, so a wrapped file never claims methods its real file lacks. */
#define VF_IO_METHODS(version)                                                                     \
    {                                                                                              \
        version, vf_close, vf_read, vf_write, vf_truncate, vf_sync, vf_file_size, vf_lock,         \
            vf_unlock, vf_check_reserved, vf_file_control, vf_sector_size,                         \
            vf_device_characteristics, vf_shm_map, vf_shm_lock, vf_shm_barrier, vf_shm_unmap,      \
            vf_fetch, vf_unfetch                                                                   \
    }
static const sqlite3_io_methods vf_io[3] = {VF_IO_METHODS(1), VF_IO_METHODS(2), VF_IO_METHODS(3)};

/* ---- VFS methods: forward to the wrapped VFS ---- */

static int vf_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
                   int *out_flags)
{
    vf_file_t *f = (vf_file_t *)file;
    memset(file, 0, (size_t)vfs->szOsFile);
    f->real = (sqlite3_file *)(void *)((unsigned char *)file + VF_HEADER);
    f->name = name;
    if (should_fail(VFS_FAULT_OPEN, name)) {
        errno = current_plan().flavour == VFS_FAULT_ENOSPC ? ENOSPC : EIO;
        return SQLITE_CANTOPEN;
    }
    int rc = g_base->xOpen(g_base, name, f->real, flags, out_flags);
    /* SQLite calls xClose after a failed xOpen only when pMethods is set: mirror the real file. */
    if (f->real->pMethods != NULL) {
        int v = f->real->pMethods->iVersion;
        f->base.pMethods = &vf_io[(v < 1 ? 1 : v > 3 ? 3 : v) - 1];
    }
    return rc;
}

static int vf_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void)vfs;
    return g_base->xDelete(g_base, name, sync_dir);
}

static int vf_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void)vfs;
    return g_base->xAccess(g_base, name, flags, out);
}

static int vf_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    (void)vfs;
    return g_base->xFullPathname(g_base, name, n, out);
}

static void *vf_dl_open(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return g_base->xDlOpen(g_base, name);
}

static void vf_dl_error(sqlite3_vfs *vfs, int n, char *msg)
{
    (void)vfs;
    g_base->xDlError(g_base, n, msg);
}

static void (*vf_dl_sym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
    (void)vfs;
    return g_base->xDlSym(g_base, h, sym);
}

static void vf_dl_close(sqlite3_vfs *vfs, void *h)
{
    (void)vfs;
    g_base->xDlClose(g_base, h);
}

static int vf_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return g_base->xRandomness(g_base, n, out);
}

static int vf_sleep(sqlite3_vfs *vfs, int us)
{
    (void)vfs;
    return g_base->xSleep(g_base, us);
}

static int vf_current_time(sqlite3_vfs *vfs, double *out)
{
    (void)vfs;
    return g_base->xCurrentTime(g_base, out);
}

static int vf_get_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return g_base->xGetLastError != NULL ? g_base->xGetLastError(g_base, n, out) : 0;
}

static int vf_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    return g_base->xCurrentTimeInt64(g_base, out);
}

static sqlite3_vfs g_vfs;

int vfs_fault_install(void)
{
    if (g_base != NULL)
        return SQLITE_OK;
    fsa_libs_use_allocator();
    sqlite3_vfs *base = sqlite3_vfs_find(NULL);
    if (base == NULL)
        return SQLITE_ERROR;
    /* Version 2 methods (xCurrentTimeInt64) at most: the system-call overrides of version 3 are
     * left to the wrapped VFS. */
    g_vfs = (sqlite3_vfs){
        .iVersion = base->iVersion < 2 ? base->iVersion : 2,
        .szOsFile = (int)VF_HEADER + base->szOsFile,
        .mxPathname = base->mxPathname,
        .zName = "fsa-fault",
        .xOpen = vf_open,
        .xDelete = vf_delete,
        .xAccess = vf_access,
        .xFullPathname = vf_full_pathname,
        .xDlOpen = vf_dl_open,
        .xDlError = vf_dl_error,
        .xDlSym = vf_dl_sym,
        .xDlClose = vf_dl_close,
        .xRandomness = vf_randomness,
        .xSleep = vf_sleep,
        .xCurrentTime = vf_current_time,
        .xGetLastError = vf_get_last_error,
        .xCurrentTimeInt64 = vf_current_time_int64,
    };
    g_base = base;
    int rc = sqlite3_vfs_register(&g_vfs, 1);
    if (rc != SQLITE_OK)
        g_base = NULL;
    return rc;
}

void vfs_fault_arm(const char *path_prefix, const vfs_fault_plan_t *plan)
{
    pthread_mutex_lock(&g.mu);
    snprintf(g.prefix, sizeof g.prefix, "%s", path_prefix != NULL ? path_prefix : "");
    g.plan = *plan;
    g.calls = 0;
    g.fired = 0;
    g.armed = true;
    pthread_mutex_unlock(&g.mu);
}

void vfs_fault_set_real_sync(bool on)
{
    pthread_mutex_lock(&g.mu);
    g.skip_sync = !on;
    pthread_mutex_unlock(&g.mu);
}

void vfs_fault_disarm(void)
{
    pthread_mutex_lock(&g.mu);
    g.armed = false;
    pthread_mutex_unlock(&g.mu);
}

int64_t vfs_fault_calls(void)
{
    pthread_mutex_lock(&g.mu);
    int64_t n = g.calls;
    pthread_mutex_unlock(&g.mu);
    return n;
}

int64_t vfs_fault_fired(void)
{
    pthread_mutex_lock(&g.mu);
    int64_t n = g.fired;
    pthread_mutex_unlock(&g.mu);
    return n;
}
