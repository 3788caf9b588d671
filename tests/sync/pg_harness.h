/* fieldsync tests: a private PostgreSQL cluster for a test run (initdb, pg_ctl, a loopback port).
 */
#ifndef FSA_TESTS_SYNC_PG_HARNESS_H
#define FSA_TESTS_SYNC_PG_HARNESS_H

#include <stdbool.h>
#include <stddef.h>

/*
 * No test needs a database someone else started: th_pg_start() makes a cluster of its own with
 * Debian's postgresql binaries (/usr/lib/postgresql/N/bin, or FSA_PG_BINDIR) in a fresh temp dir,
 * as an unprivileged user when the tests run as root (PostgreSQL refuses root: the user "nobody"
 * then owns the dir), trust authentication for user "fsa", the unix socket in that dir and a free
 * port on 127.0.0.1. pg_ctl's own wait tells when it accepts connections. th_pg_stop() stops it
 * (fast shutdown) and removes the dir. Not available in a build without libpq (FSA_TEST_HAVE_PG).
 */

typedef struct th_pg {
    char dir[256]; /* the temp dir: data/ and the socket */
    char bindir[256];
    int port;
    bool running;
} th_pg_t;

/* Starts a cluster. durable: fsync and synchronous commit on (benchmarks); off for tests, which
 * do not survive a power cut anyway. False on failure (what failed is printed to stderr). */
bool th_pg_start(th_pg_t *pg, bool durable);

/* Creates database `name` and writes its URI (postgresql://fsa@127.0.0.1:PORT/name) into uri. */
bool th_pg_createdb(const th_pg_t *pg, const char *name, char *uri, size_t cap);

/* Stops the cluster and removes its dir. Safe to call twice. */
void th_pg_stop(th_pg_t *pg);

/*
 * For the server tests that run on both backends: when the environment says FSA_TEST_DB=postgresql
 * (set by ctest for the PostgreSQL variants), starts this process's cluster on first use (stopped
 * at exit), creates a fresh database and writes its URI into db (cap bytes); otherwise leaves db
 * (a SQLite path) alone. False when PostgreSQL was asked for and cannot be had.
 */
bool th_backend_db(char *db, size_t cap);

/* Ends every other session on uri's database (pg_terminate_backend), as a database restart or an
 * idle timeout does to a server's connections. False when it could not. */
bool th_pg_drop_connections(const char *uri);

/* True when this run uses PostgreSQL (FSA_TEST_DB=postgresql). */
bool th_backend_is_pg(void);

#endif
