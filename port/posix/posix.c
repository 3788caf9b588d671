/* fieldsync: the posix port, for real devices (Linux): clocks, getrandom, pthreads, OFD locks. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "port/alloc.h"
#include "port/once.h"
#include "port/posix/posix.h"

struct fsa_thread {
    pthread_t tid;
};
struct fsa_mutex {
    pthread_mutex_t m;
};
struct fsa_cond {
    pthread_cond_t c;
};
struct fsa_flock {
    int fd;
};

static fsa_mono_t posix_mono_now(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    fsa_mono_t t = {(int64_t)ts.tv_sec * FSA_NS_PER_S + ts.tv_nsec};
    return t;
}

/* The build asks for a 64-bit time_t everywhere (CMakeLists.txt, _TIME_BITS=64): a 32-bit one,
 * armhf's default, makes clock_gettime() fail from January 2038, or on a device whose clock is set
 * past it. A build that lost the flag stops here, not in 2038. */
_Static_assert(sizeof(time_t) >= sizeof(int64_t), "time_t must be 64 bits (_TIME_BITS=64)");

static fsa_wall_t posix_wall_now(void *ctx)
{
    (void)ctx;
    struct timespec ts = {0, 0}; /* the epoch, should the clock be unreadable */
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    fsa_wall_t t = {(int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000};
    return t;
}

struct timespec fsa__posix_timespec(int64_t ns)
{
    struct timespec ts = {0, 0};
    if (ns <= 0)
        return ts;
    /* Seconds past INT32_MAX (68 years of a monotonic clock: only a wait's forever) would make
     * glibc fail the wait with EOVERFLOW on a 32-bit kernel older than 5.1, which has no 64-bit
     * time calls to hand them to: clamped. */
    if (ns / FSA_NS_PER_S >= INT32_MAX) {
        ts.tv_sec = INT32_MAX;
        return ts;
    }
    ts.tv_sec = (time_t)(ns / FSA_NS_PER_S);
    ts.tv_nsec = (long)(ns % FSA_NS_PER_S);
    return ts;
}

static void posix_sleep(void *ctx, int64_t ns)
{
    (void)ctx;
    if (ns <= 0)
        return;
    struct timespec ts = fsa__posix_timespec(ns);
    /* Restart after signals so a caller's sleep is never cut short silently. */
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static fsa_status_t posix_random(void *ctx, void *buf, size_t n)
{
    (void)ctx;
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return FSA_EIO;
        }
        p += got;
        n -= (size_t)got;
    }
    return FSA_OK;
}

fsa_status_t fsa__posix_thread_create(void *ctx, fsa_thread_t **out, fsa_thread_fn fn, void *arg)
{
    (void)ctx;
    fsa_thread_t *t = fsa_malloc(sizeof *t);
    if (t == NULL)
        return FSA_ENOMEM;
    if (pthread_create(&t->tid, NULL, fn, arg) != 0) {
        fsa_free(t);
        return FSA_ENOMEM;
    }
    *out = t;
    return FSA_OK;
}

fsa_status_t fsa__posix_thread_join(void *ctx, fsa_thread_t *t, void **ret)
{
    (void)ctx;
    void *r = NULL;
    int rc = pthread_join(t->tid, &r);
    fsa_free(t);
    if (ret != NULL)
        *ret = r;
    return rc == 0 ? FSA_OK : FSA_EINVAL;
}

fsa_status_t fsa__posix_mutex_new(void *ctx, fsa_mutex_t **out)
{
    (void)ctx;
    fsa_mutex_t *m = fsa_malloc(sizeof *m);
    if (m == NULL)
        return FSA_ENOMEM;
    if (pthread_mutex_init(&m->m, NULL) != 0) {
        fsa_free(m);
        return FSA_ENOMEM;
    }
    *out = m;
    return FSA_OK;
}

void fsa__posix_mutex_lock(void *ctx, fsa_mutex_t *m)
{
    (void)ctx;
    pthread_mutex_lock(&m->m);
}

void fsa__posix_mutex_unlock(void *ctx, fsa_mutex_t *m)
{
    (void)ctx;
    pthread_mutex_unlock(&m->m);
}

void fsa__posix_mutex_free(void *ctx, fsa_mutex_t *m)
{
    (void)ctx;
    if (m == NULL)
        return;
    pthread_mutex_destroy(&m->m);
    fsa_free(m);
}

fsa_status_t fsa__posix_cond_new(void *ctx, fsa_cond_t **out)
{
    (void)ctx;
    fsa_cond_t *c = fsa_malloc(sizeof *c);
    if (c == NULL)
        return FSA_ENOMEM;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    /* Deadlines are monotonic; a wall-clock jump must not stretch or cut a wait. */
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&c->c, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0) {
        fsa_free(c);
        return FSA_ENOMEM;
    }
    *out = c;
    return FSA_OK;
}

/* Waits on the real monotonic clock; the sim port builds its virtual waits on this. */
fsa_status_t fsa__posix_cond_wait_real(fsa_cond_t *c, fsa_mutex_t *m, fsa_mono_t deadline)
{
    if (deadline.ns == INT64_MAX) {
        pthread_cond_wait(&c->c, &m->m);
        return FSA_OK;
    }
    struct timespec ts = fsa__posix_timespec(deadline.ns);
    int rc = pthread_cond_timedwait(&c->c, &m->m, &ts);
    return rc == ETIMEDOUT ? FSA_ETIMEOUT : FSA_OK;
}

static fsa_status_t posix_cond_wait(void *ctx, fsa_cond_t *c, fsa_mutex_t *m, fsa_mono_t deadline)
{
    (void)ctx;
    return fsa__posix_cond_wait_real(c, m, deadline);
}

void fsa__posix_cond_signal(void *ctx, fsa_cond_t *c)
{
    (void)ctx;
    pthread_cond_signal(&c->c);
}

void fsa__posix_cond_broadcast(void *ctx, fsa_cond_t *c)
{
    (void)ctx;
    pthread_cond_broadcast(&c->c);
}

void fsa__posix_cond_free(void *ctx, fsa_cond_t *c)
{
    (void)ctx;
    if (c == NULL)
        return;
    pthread_cond_destroy(&c->c);
    fsa_free(c);
}

fsa_status_t fsa__posix_flock_open(void *ctx, const char *path, fsa_flock_t **out)
{
    (void)ctx;
    fsa_flock_t *f = fsa_malloc(sizeof *f);
    if (f == NULL)
        return FSA_ENOMEM;
    f->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (f->fd < 0) {
        fsa_free(f);
        return FSA_EIO;
    }
    *out = f;
    return FSA_OK;
}

/* Open file description locks belong to the open file, not the process: two handles in one
 * process exclude each other (as threads need), and the kernel drops them when the holder dies. */
static int ofd_lock(int fd, short type, uint64_t slot, int cmd)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)slot;
    fl.l_len = 1;
    return fcntl(fd, cmd, &fl);
}

static fsa_status_t try_lock(fsa_flock_t *f, short type, uint64_t slot)
{
    if (slot > (uint64_t)INT64_MAX)
        return FSA_EINVAL;
    while (ofd_lock(f->fd, type, slot, F_OFD_SETLK) != 0) {
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EACCES)
            return FSA_EBUSY;
        return FSA_EIO;
    }
    return FSA_OK;
}

fsa_status_t fsa__posix_flock_try(void *ctx, fsa_flock_t *f, uint64_t slot)
{
    (void)ctx;
    return try_lock(f, F_WRLCK, slot);
}

fsa_status_t fsa__posix_flock_try_shared(void *ctx, fsa_flock_t *f, uint64_t slot)
{
    (void)ctx;
    return try_lock(f, F_RDLCK, slot);
}

void fsa__posix_flock_release(void *ctx, fsa_flock_t *f, uint64_t slot)
{
    (void)ctx;
    (void)ofd_lock(f->fd, F_UNLCK, slot, F_OFD_SETLK);
}

void fsa__posix_flock_close(void *ctx, fsa_flock_t *f)
{
    (void)ctx;
    if (f == NULL)
        return;
    close(f->fd);
    fsa_free(f);
}

/* Makes fd's file at least len bytes long. Only ever grown: a concurrent mapper that grew it first
 * loses nothing to ours, and a mapping of len bytes never reads past the end (SIGBUS). */
static fsa_status_t grow_to(int fd, size_t len)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return FSA_EIO;
    if ((uint64_t)st.st_size < (uint64_t)len) {
        int rc;
        while ((rc = ftruncate(fd, (off_t)len)) != 0 && errno == EINTR) {
        }
        if (rc != 0)
            return errno == ENOSPC ? FSA_EFULL : FSA_EIO;
    }
    return FSA_OK;
}

fsa_status_t fsa__posix_flock_map(void *ctx, fsa_flock_t *f, size_t len, void **addr)
{
    (void)ctx;
    if (f == NULL || addr == NULL || len == 0 || len > (size_t)INT64_MAX)
        return FSA_EINVAL;
    *addr = NULL;
    fsa_status_t st = grow_to(f->fd, len);
    if (st != FSA_OK)
        return st;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
    if (p == MAP_FAILED)
        return errno == ENOMEM ? FSA_ENOMEM : FSA_EIO;
    *addr = p;
    return FSA_OK;
}

#ifdef FSA_FAULT_HOOKS
static atomic_bool refuse_punch;

void fsa__posix_refuse_punch(bool on)
{
    atomic_store(&refuse_punch, on);
}
#endif

/* fallocate, or (a test's fault hook) the refusal of a file system without holes. */
static int punch(int fd, int mode, off_t off, off_t len)
{
#ifdef FSA_FAULT_HOOKS
    if (atomic_load(&refuse_punch)) {
        errno = EOPNOTSUPP;
        return -1;
    }
#endif
    return fallocate(fd, mode, off, len);
}

/*
 * The file is never shorter than len, not even for a moment. It was emptied by truncating it to
 * nothing and growing it again: a process killed between the two (SIGKILL, the OOM killer) left it
 * empty, and another one that had mapped it earlier, waiting to set the table up in turn, read
 * past its end at its first look (SIGBUS; seen in test_lock's kill test under qemu). The bytes are
 * zeroed in place instead: holes punched where the file system can (no disk used, as before),
 * zeros written where it cannot.
 */
fsa_status_t fsa__posix_flock_clear(void *ctx, fsa_flock_t *f, size_t len)
{
    (void)ctx;
    if (f == NULL || len > (size_t)INT64_MAX)
        return FSA_EINVAL;
    fsa_status_t st = grow_to(f->fd, len);
    if (st != FSA_OK || len == 0)
        return st;
    int rc;
    while ((rc = punch(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)len)) != 0 &&
           errno == EINTR) {
    }
    if (rc == 0)
        return FSA_OK;
    /* Any file system that cannot punch this hole (EOPNOTSUPP, or another answer of its own):
     * the zeros are written. On the stack: a static buffer was 4 KB of the binary's data. */
    char zeros[1024] = {0};
    for (size_t off = 0; off < len;) {
        size_t n = len - off < sizeof zeros ? len - off : sizeof zeros;
        ssize_t w = pwrite(f->fd, zeros, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 && (errno == ENOSPC || errno == EDQUOT) ? FSA_EFULL : FSA_EIO;
        off += (size_t)w;
    }
    return FSA_OK;
}

void fsa__posix_flock_unmap(void *ctx, void *addr, size_t len)
{
    (void)ctx;
    if (addr != NULL && len > 0)
        (void)munmap(addr, len);
}

static fsa_status_t posix_thread_background(void *ctx)
{
    (void)ctx;
#if defined(__linux__) && defined(SCHED_BATCH)
    /* The calling thread only (Linux schedules threads); priority 0 is the only one of the
     * policy, and no privilege is needed to take it. */
    struct sched_param sp = {.sched_priority = 0};
    return pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp) == 0 ? FSA_OK : FSA_EIO;
#else
    return FSA_EUNSUPPORTED;
#endif
}

static void posix_log(void *ctx, fsa_log_level_t level, const char *msg)
{
    (void)ctx;
    /* One fprintf per line so lines from different threads do not interleave. */
    fprintf(stderr, "fieldsync: %s: %s\n", fsa_log_level_str(level), msg);
}

static int64_t posix_process_id(void *ctx)
{
    (void)ctx;
    return (int64_t)getpid();
}

void fsa_once(fsa_once_t *once, void (*fn)(void))
{
    (void)pthread_once(once, fn); /* fails only for an uninitialised once: FSA_ONCE_INIT */
}

/* The table is filled in at the first call rather than by a static initialiser: a pointer in
 * an initialised table costs the binary a load-time relocation each (24 bytes on 64-bit), more
 * than the store that sets it. */
static fsa_port_t posix_port;
static fsa_once_t posix_port_once = FSA_ONCE_INIT;

static void posix_port_init(void)
{
    fsa_port_t *p = &posix_port;
    p->version = FSA_PORT_VERSION;
    p->name = "posix";
    p->ctx = NULL;
    p->mono_now = posix_mono_now;
    p->wall_now = posix_wall_now;
    p->sleep = posix_sleep;
    p->random = posix_random;
    p->thread_create = fsa__posix_thread_create;
    p->thread_join = fsa__posix_thread_join;
    p->mutex_new = fsa__posix_mutex_new;
    p->mutex_lock = fsa__posix_mutex_lock;
    p->mutex_unlock = fsa__posix_mutex_unlock;
    p->mutex_free = fsa__posix_mutex_free;
    p->cond_new = fsa__posix_cond_new;
    p->cond_wait = posix_cond_wait;
    p->cond_signal = fsa__posix_cond_signal;
    p->cond_broadcast = fsa__posix_cond_broadcast;
    p->cond_free = fsa__posix_cond_free;
    p->flock_open = fsa__posix_flock_open;
    p->flock_try = fsa__posix_flock_try;
    p->flock_try_shared = fsa__posix_flock_try_shared;
    p->flock_release = fsa__posix_flock_release;
    p->flock_close = fsa__posix_flock_close;
    p->log = posix_log;
    p->log_level = FSA_LOG_WARN;
    p->process_id = posix_process_id;
    p->flock_map = fsa__posix_flock_map;
    p->flock_unmap = fsa__posix_flock_unmap;
    p->flock_clear = fsa__posix_flock_clear;
    p->thread_background = posix_thread_background;
}

fsa_port_t *fsa_port_posix(void)
{
    fsa_once(&posix_port_once, posix_port_init);
    return &posix_port;
}
