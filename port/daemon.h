/* fieldsync: what a daemon asks of the OS: signals, one instance per file, syslog, a loopback
 * listener, a server's listening sockets. posix only; for the programs (fieldsync run,
 * fieldsync-server), not part of libfieldsync. */
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

/* As fsa_signals_block, but SIGHUP is left alone (its default action ends the process): for a
 * program that has nothing to reload (fieldsync-server). FSA_OK or FSA_EIO. */
fsa_status_t fsa_signals_block_stop(void) FSA_MUST_CHECK;

/* Waits for one of the signals that the process's fsa_signals_block or fsa_signals_block_stop
 * blocked, and says which. */
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
 * Listens on "HOST:PORT" (HOST 127.x.x.x, localhost, ::1 or [::1]; PORT 0 to 65535 in decimal
 * digits, 0 picks a free one, said in *bound_port; no spaces): a device's own services (metrics)
 * are for the device only. FSA_OK; FSA_EINVAL (err starts with spec and says which is wrong: the
 * form, the port, or a host that is not loopback); FSA_EIO (err: the reason).
 */
typedef struct fsa_listener fsa_listener_t;
typedef struct fsa_conn fsa_conn_t;
fsa_status_t fsa_listener_open(const char *spec, fsa_listener_t **out, int *bound_port, char *err,
                               size_t errlen) FSA_MUST_CHECK;
/* Checks spec as fsa_listener_open does, without listening (for a program's option parsing):
 * FSA_OK, or FSA_EINVAL with err as fsa_listener_open's. */
fsa_status_t fsa_listener_check(const char *spec, char *err, size_t errlen) FSA_MUST_CHECK;
/* Waits up to timeout_ms for a connection: FSA_OK (*out set), FSA_ETIMEOUT, FSA_EIO. */
fsa_status_t fsa_listener_accept(fsa_listener_t *l, int timeout_ms,
                                 fsa_conn_t **out) FSA_MUST_CHECK;
/* Closes and frees. NULL is accepted. */
void fsa_listener_close(fsa_listener_t *l);

/*
 * Reads a request head into buf (NUL terminated): until a blank line ("\r\n\r\n" or "\n\n"), cap-1
 * bytes, the peer's end, or timeout_ms from the call (for the whole head, however the bytes
 * trickle in). Returns the bytes read (0 when none).
 */
size_t fsa_conn_read_head(fsa_conn_t *c, char *buf, size_t cap, int timeout_ms);
/* Writes all len bytes: FSA_OK, or FSA_EIO (the peer went away). */
fsa_status_t fsa_conn_write(fsa_conn_t *c, const void *data, size_t len) FSA_MUST_CHECK;
/* Closes and frees. NULL is accepted. */
void fsa_conn_close(fsa_conn_t *c);

/* ---- a server's listening sockets (fieldsync-server hands them to libmicrohttpd) ---- */

/*
 * Listens on host:port over TCP (host a name or numeric address, "[v6]" accepted; port numeric,
 * "0" for a free one) with backlog queued connections. loopback_only: an address that is not a
 * loopback one (127.0.0.0/8, ::1, ::ffff:127.x.y.z) is refused. *fd the socket (close-on-exec:
 * fsa_socket_close), *bound_port its port, *v6 whether it is an IPv6 socket.
 * FSA_OK; FSA_EINVAL (host:port does not resolve); FSA_EPERM (not loopback); FSA_EBUSY (the
 * address is in use); FSA_EIO. err gets the reason alone (the resolver's or the OS's words), for
 * the caller to put in its own.
 */
fsa_status_t fsa_socket_listen_tcp(const char *host, const char *port, int backlog,
                                   bool loopback_only, int *fd, int *bound_port, bool *v6,
                                   char *err, size_t errlen) FSA_MUST_CHECK;

/*
 * Listens on a unix socket at path with backlog queued connections, the socket file mode 0600
 * from its creation (only this user may connect). A socket file left by an earlier run is
 * replaced; one that a process still listens on is not (FSA_EBUSY), nor is any other file there
 * (FSA_EPERM). FSA_EINVAL: path empty or too long for a socket. FSA_EIO otherwise. err: the reason.
 */
fsa_status_t fsa_socket_listen_unix(const char *path, int backlog, int *fd, char *err,
                                    size_t errlen) FSA_MUST_CHECK;

/* Shuts a connected socket down both ways (its reader sees the end of the stream); fails quietly
 * on a socket that is closing already. */
void fsa_socket_shutdown(int fd);

/* Closes a socket fsa_socket_listen_* made (or a library handed back); -1 is accepted. */
void fsa_socket_close(int fd);

/* A client's address as a key of FSA_SOCKET_CLIENT_KEY bytes, for limits per client: an IPv4
 * address (an IPv4-mapped IPv6 one as such), an IPv6 /64 (one host owns a /64, so its addresses
 * are one client), or one key for every other family (a unix socket) and for addr NULL. addr is a
 * struct sockaddr (what libmicrohttpd gives). key[0] is never 0. */
#define FSA_SOCKET_CLIENT_KEY 9
void fsa_socket_client_key(const void *addr, unsigned char key[FSA_SOCKET_CLIENT_KEY]);

/* Removes the socket file at path (what fsa_socket_listen_unix made); fails quietly. */
void fsa_socket_unlink(const char *path);

#endif
