/* libfieldsync: the handle and the library's cross-file internals (not installed). */
#ifndef FSA_AGENT_LIB_INTERNAL_H
#define FSA_AGENT_LIB_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fieldsync/fieldsync.h"
#include "port/port.h"
#include "port/watch.h"
#include "storage/journal.h"
#include "storage/lock.h"
#include "sync/engine.h"

/*
 * Layout of the library (agent/lib/):
 *   handle.c   open, close, configuration (stored at init), errors per handle and thread
 *   record.c   the workflow verbs, the generic op builder, the named-lock API
 *   read.c     get, list, status, conflicts
 *   worker.c   the sync thread: start, stop, sync_now, sync_once, reload, watchdog, backoff
 *   events.c   listeners, the change-log pump, buffered delivery (fd + dispatch)
 * Cross-file internal names are fsl__*; everything else is static. Only fieldsync_* is exported.
 */

#define FSL_MAGIC_OPEN 0x46534c4fu   /* "FSLO" */
#define FSL_MAGIC_FAILED 0x46534c46u /* "FSLF": open failed; only errmsg and close work */
#define FSL_MAGIC_CLOSED 0x46534c43u /* "FSLC" */

/* The configuration as used by this handle: the journal's stored values with the caller's
 * overrides. Strings are owned (fsa_free). */
typedef struct fsl_config {
    char *journal_path, *device_id, *server_url, *secret_file, *ca_file, *pins;
    char *client_cert, *client_key, *proxy, *label;
    char *retry_policy, *resolver_policy;
    bool allow_http;
    fieldsync_durability_t durability;
    int64_t sync_interval_ms, stall_after_ms, budget_bytes;
    uint32_t flags;
} fsl_config_t;

typedef struct fsl_listener_list fsl_listener_list_t; /* events.c */
typedef struct fsl_worker fsl_worker_t;               /* worker.c */
typedef struct fsl_events fsl_events_t;               /* events.c */

struct fieldsync {
    _Atomic uint32_t magic;
    fsa_port_t port; /* a copy of the posix port (or the simulator's, through the sim hook) */
    fsl_config_t cfg;
    fsa_journal_t *j;
    fsa_lockmgr_t *locks;
    fsl_worker_t *worker; /* worker.c; NULL until the first start */
    fsl_events_t *events; /* events.c; made at open */
    uint64_t id;          /* unique per handle in this process (errors are keyed by it) */
};

/* ---- handle.c ---- */

/* True when fs is an open handle; else records FIELDSYNC_ECLOSED (or EINVAL for NULL) as the
 * calling thread's last error. */
bool fsl__usable(const fieldsync_t *fs);
/* The calling thread's last error on fs. fsl__fail returns st, for `return fsl__fail(...)`. */
fieldsync_status_t fsl__fail(const fieldsync_t *fs, fieldsync_status_t st, const char *fmt, ...)
    FSA_PRINTF(3, 4);
fieldsync_status_t fsl__ok(const fieldsync_t *fs);
/* Maps the project's internal status to the public one (the same numbers, checked at build). */
fieldsync_status_t fsl__status(fsa_status_t st);
/* Builds a sync engine from the handle's configuration (reads the secret file).
 * fsa_status_t with err filled. */
fsa_status_t fsl__engine_new(fieldsync_t *fs, bool ignore_backoff, fsa_engine_t **out, char *err,
                             size_t errlen) FSA_MUST_CHECK;
/* The entity type from its public name ("job" is accepted for jobneed). */
bool fsl__type_parse(const char *name, fsa_type_t *out);

/* ---- worker.c ---- */

/* Stops the sync thread and joins it (close). */
void fsl__worker_shutdown(fieldsync_t *fs);
void fsl__worker_free(fieldsync_t *fs);

/* ---- events.c ---- */

fsa_status_t fsl__events_new(fieldsync_t *fs) FSA_MUST_CHECK;
void fsl__events_free(fieldsync_t *fs);
/* Reads the journal's change log past what this handle delivered and delivers it (or queues it
 * when buffered). Called by the sync thread after each cycle and on each journal wake-up. */
void fsl__events_pump(fieldsync_t *fs);
/* A status event (delivered or queued). */
void fsl__events_status(fieldsync_t *fs, const fieldsync_sync_status_t *s);
/* A conflict event. */
void fsl__events_conflict(fieldsync_t *fs, const fieldsync_conflict_event_t *c);
/* True when the calling thread is running one of fs's listeners. */
bool fsl__in_listener(const fieldsync_t *fs);

/* ---- the simulator's hook (documented in docs/api.md; not exported from the shared library) */

/* fieldsync_open with a port of the caller's (a sim port with its virtual clock); the port must
 * outlive the handle. */
fieldsync_status_t fsl__open_with_port(const fieldsync_config_t *cfg, const fsa_port_t *port,
                                       fieldsync_t **out);

#endif
