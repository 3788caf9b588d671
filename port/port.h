/* fieldsync: the port, the only interface through which the rest of the code reaches the OS. */
#ifndef FSA_PORT_PORT_H
#define FSA_PORT_PORT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "port/status.h"

/*
 * The port is a struct of function pointers with an opaque context, like SQLite's VFS: one
 * process can host many ports at once (many simulated devices, each with its own virtual clock
 * and seeded randomness), and tests can substitute any call.
 *
 * Two implementations exist: fsa_port_posix() for real devices (port/posix/) and the sim port
 * (port/sim/sim.h) for tests and the fleet simulator.
 *
 * Time comes in two distinct types that the compiler keeps apart: monotonic time (timeouts,
 * backoff, leases) and wall time (records, the protocol). Never convert one into the other.
 */

#define FSA_PORT_VERSION 1

/* Monotonic time in nanoseconds since an arbitrary origin. Only differences mean anything. */
typedef struct fsa_mono {
    int64_t ns;
} fsa_mono_t;

/* Wall-clock time in milliseconds since the Unix epoch (UTC). */
typedef struct fsa_wall {
    int64_t ms;
} fsa_wall_t;

typedef enum fsa_log_level {
    FSA_LOG_DEBUG = 0,
    FSA_LOG_INFO = 1,
    FSA_LOG_WARN = 2,
    FSA_LOG_ERROR = 3,
    FSA_LOG_OFF = 4
} fsa_log_level_t;

/* Opaque OS objects. Each is created and destroyed through the port that made it. */
typedef struct fsa_thread fsa_thread_t;
typedef struct fsa_mutex fsa_mutex_t;
typedef struct fsa_cond fsa_cond_t;
typedef struct fsa_flock fsa_flock_t;

typedef void *(*fsa_thread_fn)(void *arg);

typedef struct fsa_port fsa_port_t;

struct fsa_port {
    int version;      /* FSA_PORT_VERSION */
    const char *name; /* "posix", "sim" */
    void *ctx;        /* owned by the implementation; passed to every call */

    /* Clocks. Never fail. */
    fsa_mono_t (*mono_now)(void *ctx);
    fsa_wall_t (*wall_now)(void *ctx);
    /* Sleep for ns nanoseconds of this port's monotonic clock. The sim port advances its virtual
     * clock and returns without blocking. */
    void (*sleep)(void *ctx, int64_t ns);

    /* Fills buf with n random bytes: cryptographically secure on posix (getrandom), a seeded
     * deterministic sequence on sim. Returns FSA_OK or FSA_EIO. */
    fsa_status_t (*random)(void *ctx, void *buf, size_t n);

    /* Threads. thread_create sets *out only on FSA_OK; thread_join frees the handle and stores
     * the thread's return value in *ret if ret is not NULL. */
    fsa_status_t (*thread_create)(void *ctx, fsa_thread_t **out, fsa_thread_fn fn, void *arg);
    fsa_status_t (*thread_join)(void *ctx, fsa_thread_t *t, void **ret);

    /* Mutexes and condition variables. *_new set *out only on FSA_OK; *_free accept NULL. */
    fsa_status_t (*mutex_new)(void *ctx, fsa_mutex_t **out);
    void (*mutex_lock)(void *ctx, fsa_mutex_t *m);
    void (*mutex_unlock)(void *ctx, fsa_mutex_t *m);
    void (*mutex_free)(void *ctx, fsa_mutex_t *m);
    fsa_status_t (*cond_new)(void *ctx, fsa_cond_t **out);
    /* Waits until signalled or until the port's monotonic clock reaches deadline (a deadline of
     * {INT64_MAX} waits forever). Returns FSA_OK when woken, FSA_ETIMEOUT at the deadline.
     * Spurious wake-ups are allowed, as with pthreads: callers re-check their predicate. */
    fsa_status_t (*cond_wait)(void *ctx, fsa_cond_t *c, fsa_mutex_t *m, fsa_mono_t deadline);
    void (*cond_signal)(void *ctx, fsa_cond_t *c);
    void (*cond_broadcast)(void *ctx, fsa_cond_t *c);
    void (*cond_free)(void *ctx, fsa_cond_t *c);

    /* File locks on a byte of a file, shared by threads and processes, released by the kernel
     * when the holder dies (open file description locks). flock_open creates the file (mode
     * 0600) if needed. flock_try takes an exclusive lock on byte `slot` without waiting: FSA_OK,
     * FSA_EBUSY when someone else holds it, FSA_EIO. flock_release releases that byte.
     * flock_close releases everything and frees the handle (NULL is accepted). */
    fsa_status_t (*flock_open)(void *ctx, const char *path, fsa_flock_t **out);
    fsa_status_t (*flock_try)(void *ctx, fsa_flock_t *f, uint64_t slot);
    /* Like flock_try, but a shared lock: many holders at once, excluded by an exclusive one.
     * On a byte this handle already holds, it converts the lock (exclusive to shared or back)
     * atomically. */
    fsa_status_t (*flock_try_shared)(void *ctx, fsa_flock_t *f, uint64_t slot);
    void (*flock_release)(void *ctx, fsa_flock_t *f, uint64_t slot);
    void (*flock_close)(void *ctx, fsa_flock_t *f);

    /* The log sink. msg is one formatted line without a trailing newline. Lines below
     * log_level are dropped by fsa_log() before they reach the sink. */
    void (*log)(void *ctx, fsa_log_level_t level, const char *msg);
    fsa_log_level_t log_level;

    /* The id of the process, to name a lock holder to people (posix: getpid). The sim port's
     * file locks are the real ones, so it names the real process too. Never fails. */
    int64_t (*process_id)(void *ctx);

    /* Maps the first len bytes of f's file into memory, shared: every process (and handle) that
     * maps the file sees every change at once, and a change outlives the process that made it
     * (not a power cut: nothing is synced to the disk). The file is first grown to len bytes
     * (zeros) if shorter, never shrunk. Sets *addr on FSA_OK. Returns FSA_OK; FSA_EINVAL (NULL,
     * len 0); FSA_EFULL (no space to grow it); FSA_ENOMEM; FSA_EIO. The sim port's is the real
     * one, like its file locks, so that the two describe the same file. flock_unmap undoes a
     * mapping (addr NULL is accepted); the handle may be closed before or after. */
    fsa_status_t (*flock_map)(void *ctx, fsa_flock_t *f, size_t len, void **addr);
    void (*flock_unmap)(void *ctx, void *addr, size_t len);
    /* Makes the first len bytes of f's file zeros, as if new (holes where the file system has
     * them: no disk or memory used until written), growing it to len if it is shorter; mappings
     * of it stay valid and read zeros. The file is never shorter than len meanwhile, even if the
     * process dies in the call: a mapping of len bytes never reads past its end. The caller makes
     * sure that no one touches a mapping of the file meanwhile. FSA_OK; FSA_EINVAL; FSA_EFULL;
     * FSA_EIO. */
    fsa_status_t (*flock_clear)(void *ctx, fsa_flock_t *f, size_t len);

    /* Makes the calling thread background work (a sync thread beside an app's threads): its
     * wake-ups never preempt another thread (the scheduler's tick decides when it runs), yet it
     * keeps its share of the processor: it holds locks that the app's threads wait for (the
     * journal's), and a thread starved while it holds one makes them wait as long (a sync thread
     * at nice 19 held a check-in up to half a second on a processor busy with other work:
     * docs/performance.md). posix: on Linux, the SCHED_BATCH policy for the calling thread, its
     * nice value unchanged; its threads created after inherit it. The sim port's is the real
     * one, like its threads. FSA_OK; FSA_EUNSUPPORTED (no such policy); FSA_EIO. */
    fsa_status_t (*thread_background)(void *ctx);
};

/* The process-wide posix port: real clocks, getrandom, pthreads, OFD locks, log to stderr.
 * Never NULL; do not free it. Its log_level starts at FSA_LOG_WARN. */
fsa_port_t *fsa_port_posix(void);

/* Formats a line and hands it to port->log if level >= port->log_level. Lines longer than
 * FSA_LIMIT_LOG_LINE are cut. */
void fsa_log(const fsa_port_t *port, fsa_log_level_t level, const char *fmt, ...) FSA_PRINTF(3, 4);
void fsa_logv(const fsa_port_t *port, fsa_log_level_t level, const char *fmt, va_list ap)
    FSA_PRINTF(3, 0);

/* Makes s one line of text that reads as it is: each control character in it (a newline in a
 * path or in a server's message, which could otherwise forge a line of the log; a C1 control in
 * UTF-8) and each character that reorders text (the bidi overrides, embeddings, isolates and
 * marks, the line and paragraph separators) becomes '?', one per byte. Every log line and error
 * message goes through it, and the CLI's output of what came from elsewhere. */
void fsa_one_line(char *s);

/* The name of a level ("debug", "info", "warn", "error"), and the reverse (FSA_EINVAL if the
 * name is not one of these). */
const char *fsa_log_level_str(fsa_log_level_t level);
fsa_status_t fsa_log_level_parse(const char *name, fsa_log_level_t *out) FSA_MUST_CHECK;

/* A random (version 4, RFC 9562) UUID in canonical lower-case form, 36 chars + NUL, from the
 * port's random source. Returns FSA_OK or the random source's error (out is then ""). */
#define FSA_UUID_STR_LEN 37
fsa_status_t fsa_uuid4(const fsa_port_t *port, char out[FSA_UUID_STR_LEN]) FSA_MUST_CHECK;

/* A time-ordered UUID of version 8 (RFC 9562's version for a layout of one's own): the port's
 * wall clock in ms (48 bits) as in version 7, 34 random bits, then the low 40 bits of tail, in the
 * same form. The journal's op ids, whose tail is their outbox seq plus the journal's salt
 * (storage/journal_record.c; the version tells them from the random version 7 ids of older
 * journals): ids made one after the other sort near each other, so that the b-trees keyed by
 * them (done_ops, the server's op log) grow at one end instead of at a random page per id. Same
 * returns as fsa_uuid4. */
fsa_status_t fsa_uuid8(const fsa_port_t *port, uint64_t tail,
                       char out[FSA_UUID_STR_LEN]) FSA_MUST_CHECK;

/* Monotonic helpers. */
static inline fsa_mono_t fsa_mono_add_ns(fsa_mono_t t, int64_t ns)
{
    /* Saturate instead of overflowing: "forever" stays forever. */
    fsa_mono_t r = {(ns > 0 && t.ns > INT64_MAX - ns) ? INT64_MAX : t.ns + ns};
    return r;
}
static inline int64_t fsa_mono_diff_ns(fsa_mono_t later, fsa_mono_t earlier)
{
    return later.ns - earlier.ns;
}
static inline fsa_mono_t fsa_mono_forever(void)
{
    fsa_mono_t r = {INT64_MAX};
    return r;
}

#define FSA_NS_PER_MS INT64_C(1000000)
#define FSA_NS_PER_S INT64_C(1000000000)

#endif
