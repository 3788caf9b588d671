/* fieldsync: what a daemon asks of the OS: signals, one instance per file, syslog, a loopback
 * listener. posix only; for the programs (fieldsync run), not part of libfieldsync. */
#ifndef FSA_PORT_DAEMON_H
#define FSA_PORT_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port/port.h"
#include "port/status.h"

/* ---- signals ---- */

typedef enum fsa_signal {
    FSA_SIGNAL_TERM = 1,  /* SIGTERM: stop */
    FSA_SIGNAL_INT = 2,   /* SIGINT: stop */
    FSA_SIGNAL_RELOAD = 3 /* SIGHUP: reload the configuration */
} fsa_signal_t;

/*
 * Blocks SIGTERM, SIGINT and SIGHUP in the calling thread, so that every thread it starts from
 * then on (a library's too) inherits the mask and no handler runs inside SQLite or curl; the
 * signals are then taken with fsa_signal_wait alone. SIGPIPE is ignored (a peer that hangs up
 * is an error from write, not a death). Call it before any thread starts. FSA_OK or FSA_EIO.
 */
fsa_status_t fsa_signals_block(void) FSA_MUST_CHECK;

/* Waits for one of the blocked signals and says which. */
fsa_signal_t fsa_signal_wait(void);

/* Ends the process at once with status, without atexit handlers or stdio flushing (flush first):
 * for a daemon that gives up on a thread it cannot join. */
_Noreturn void fsa_process_exit_now(int status);

/* ---- one instance per file ---- */

/*
 * An open file description lock on byte 0 of path (created 0600), released by the kernel when
 * the process dies; the file holds the holder's pid as text, to name it in another instance's
 * message. FSA_OK (*out set; pid written), FSA_EBUSY (someone holds it: holder gets its pid text,
 * "" if unknown), FSA_EIO (err names path and the reason). The file stays when released:
 * unlinking it would let a second instance lock a new file while a third holds the old one.
 */
typedef struct fsa_pidlock fsa_pidlock_t;
fsa_status_t fsa_pidlock_take(const char *path, int64_t pid, fsa_pidlock_t **out, char *holder,
                              size_t holder_cap, char *err, size_t errlen) FSA_MUST_CHECK;
/* Releases the lock and frees the handle. NULL is accepted. */
void fsa_pidlock_release(fsa_pidlock_t *l);

/* ---- syslog ---- */

/*
 * A log sink of its own to the system log (facility daemon, with the pid), which fits the port's
 * log member: fsa_syslog_write(ctx, level, msg). One per process (syslog's state is global).
 * also_stderr copies each line to stderr (syslog's LOG_PERROR), for tests. FSA_OK, FSA_ENOMEM,
 * FSA_EINVAL (ident NULL or empty). fsa_syslog_close accepts NULL.
 */
typedef struct fsa_syslog fsa_syslog_t;
fsa_status_t fsa_syslog_open(const char *ident, bool also_stderr,
                             fsa_syslog_t **out) FSA_MUST_CHECK;
void fsa_syslog_write(void *ctx, fsa_log_level_t level, const char *msg);
void fsa_syslog_close(fsa_syslog_t *s);

/* ---- a loopback TCP listener ---- */

/*
 * Listens on "HOST:PORT" (HOST 127.x.x.x, localhost, ::1 or [::1]; PORT 0 picks a free one, said
 * in *bound_port): a device's own services (metrics) are for the device only. FSA_OK; FSA_EINVAL
 * (err: the form expected, or a host that is not loopback); FSA_EIO (err: the reason).
 */
typedef struct fsa_listener fsa_listener_t;
typedef struct fsa_conn fsa_conn_t;
fsa_status_t fsa_listener_open(const char *spec, fsa_listener_t **out, int *bound_port, char *err,
                               size_t errlen) FSA_MUST_CHECK;
/* Waits up to timeout_ms for a connection: FSA_OK (*out set), FSA_ETIMEOUT, FSA_EIO. */
fsa_status_t fsa_listener_accept(fsa_listener_t *l, int timeout_ms,
                                 fsa_conn_t **out) FSA_MUST_CHECK;
/* Closes and frees. NULL is accepted. */
void fsa_listener_close(fsa_listener_t *l);

/*
 * Reads a request head into buf (NUL terminated): until a blank line ("\r\n\r\n" or "\n\n"), cap-1
 * bytes, the peer's end, or timeout_ms without a byte. Returns the bytes read (0 when none).
 */
size_t fsa_conn_read_head(fsa_conn_t *c, char *buf, size_t cap, int timeout_ms);
/* Writes all len bytes: FSA_OK, or FSA_EIO (the peer went away). */
fsa_status_t fsa_conn_write(fsa_conn_t *c, const void *data, size_t len) FSA_MUST_CHECK;
/* Closes and frees. NULL is accepted. */
void fsa_conn_close(fsa_conn_t *c);

#endif
