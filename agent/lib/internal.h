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
 *   due.c      the sync thread's when-to-sync rule and watchdog test, pure (due.h)
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
    fsa_port_t port;    /* a copy of the posix port (or the simulator's, through the sim hook) */
    fsl_config_t cfg;   /* as opened; never written after open (any thread reads it) */
    fsl_config_t given; /* the caller's members at an open without FIELDSYNC_OPEN_INIT: the
                           overrides that fieldsync_reload lays over the stored configuration
                           again (fsl__config_reread); zero after an init */
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
/* What a failed call leaves in a size-versioned out-parameter (its first member the caller's
 * uint32_t size, the bytes it has: a newer caller's larger struct too): zeros after the size. */
void fsl__zero_sized(void *out, uint32_t size);
/* Maps the project's internal status to the public one (the same numbers, checked at build). */
fieldsync_status_t fsl__status(fsa_status_t st);
/* Builds a sync engine from the handle's configuration (reads the secret file).
 * fsa_status_t with err filled. */
fsa_status_t fsl__engine_new(fieldsync_t *fs, bool ignore_backoff, fsa_engine_t **out, char *err,
                             size_t errlen) FSA_MUST_CHECK;
/* The handle's lock manager, opened on first use (any thread). FSA_OK with *out set, or the
 * lock manager's open error with err filled. */
fsa_status_t fsl__locks(fieldsync_t *fs, fsa_lockmgr_t **out, char *err,
                        size_t errlen) FSA_MUST_CHECK;
/* The entity type from its public name ("job" is accepted for jobneed). */
bool fsl__type_parse(const char *name, fsa_type_t *out);
/* core (handle.c, config.c, record.c, read.c): a bounded, growable JSON text (fsl__jb_*). */
typedef struct fsl_jb {
    char *buf;
    size_t len, cap;
    fsa_status_t st; /* the first failure (ENOMEM, ETOOLARGE); later appends do nothing */
} fsl_jb_t;
void fsl__jb_raw(fsl_jb_t *b, const char *s);
void fsl__jb_str(fsl_jb_t *b, const char *s); /* s as a quoted, escaped string; NULL: null */
void fsl__jb_fmt(fsl_jb_t *b, const char *fmt, ...) FSA_PRINTF(2, 3);
fsa_status_t fsl__jb_take(fsl_jb_t *b, char **out); /* *out owned by the caller; frees on error */
/* The last cycle's error, which the sync thread stores in the journal (fsl__sync_note) and
 * fieldsync_status reads. */
fsa_status_t fsl__sync_note(fieldsync_t *fs, fsa_status_t st, const char *msg) FSA_MUST_CHECK;
/* Fills s from the journal (read.c); the worker may overlay its live state. */
fsa_status_t fsl__status_read(fieldsync_t *fs, fieldsync_sync_status_t *s) FSA_MUST_CHECK;
/* config.c: the configuration in the journal (all keys in one transaction), the secret, the
 * policies. Errors name the problem in err. */
fsa_status_t fsl__config_store(fsa_journal_t *j, const fsl_config_t *c, char *err,
                               size_t errlen) FSA_MUST_CHECK;
fsa_status_t fsl__config_load(fsa_journal_t *j, fsl_config_t *c, char *err,
                              size_t errlen) FSA_MUST_CHECK; /* fills the members still NULL */
void fsl__config_clear(fsl_config_t *c);
/* A deep copy of src into *dst (cleared on failure). FSA_OK, FSA_ENOMEM. */
fsa_status_t fsl__config_dup(const fsl_config_t *src, fsl_config_t *dst) FSA_MUST_CHECK;
/* The configuration stored in the journal now, with the handle's overrides (fs->given) over it,
 * as fieldsync_open made fs->cfg; journal_path, device_id, label, flags, durability and
 * budget_bytes are the handle's. *c owned by the caller (fsl__config_clear), cleared on failure
 * with err filled. FSA_OK, FSA_EINVAL (a stored policy unknown), FSA_EIO, FSA_ENOMEM. */
fsa_status_t fsl__config_reread(fieldsync_t *fs, fsl_config_t *c, char *err,
                                size_t errlen) FSA_MUST_CHECK;
/* The id and the policies; files, FSL_CHECK_* or'ed: also the URL and TLS (a transport made on
 * port, and freed, which reads the CA and client files), the secret (read). */
enum { FSL_CHECK_TRANSPORT = 1, FSL_CHECK_SECRET = 2 };
fsa_status_t fsl__config_check(const fsa_port_t *port, const fsl_config_t *c, unsigned files,
                               char *err, size_t errlen) FSA_MUST_CHECK;
/* A secret file's content: exactly 64 hex characters, then optional whitespace. FSA_OK, or
 * FSA_EINVAL with *key wiped. Pure (the fuzz target fuzz_config feeds it). */
fsa_status_t fsl__parse_secret(const char *text, size_t len, fsa_signer_key_t *key) FSA_MUST_CHECK;
/* Reads a private secret file (the port's reader: O_NOFOLLOW, owner, mode) and parses it. */
fsa_status_t fsl__read_secret(const char *path, fsa_signer_key_t *key, char *err,
                              size_t errlen) FSA_MUST_CHECK;
fsa_status_t fsl__resolver_policy(const char *spec, const fsa_resolver_policy_t **out, char *err,
                                  size_t errlen) FSA_MUST_CHECK; /* NULL/"": *out NULL */
/* Test hook (record.c): the named locks' lease and wait for this process (0: the platform's). */
void fsl__test_lock_times(fsa_lock_kind_t kind, int64_t lease_ns, int64_t wait_ns);

/* ---- worker.c ---- */

/* Stops the sync thread and joins it (close): when it returns, nothing of fs runs. Not from a
 * listener. fsl__worker_free also does it, then frees fs->worker (NULL accepted). */
void fsl__worker_shutdown(fieldsync_t *fs);
void fsl__worker_free(fieldsync_t *fs);
/* fieldsync_status: while the sync thread runs (not listen-only), its live state, reason,
 * last error and watchdog over what fsl__status_read found in the journal. */
void fsl__worker_overlay(fieldsync_t *fs, fieldsync_sync_status_t *s);
/* The configuration in effect: the last fieldsync_reload's, else fs->cfg. A deep copy into *out
 * (fsl__config_clear). FSA_OK, FSA_ENOMEM. */
fsa_status_t fsl__config_now(fieldsync_t *fs, fsl_config_t *out) FSA_MUST_CHECK;
/* The watchdog's stall time in effect (its default applied), as fsl__config_now's. */
int64_t fsl__stall_after_ms(fieldsync_t *fs);

/* ---- events.c ---- */

/* Made at open, after fs->j and fs->cfg (its flags say buffered): the change log's position
 * starts at its newest row, so listeners do not hear the history. */
fsa_status_t fsl__events_new(fieldsync_t *fs) FSA_MUST_CHECK;
void fsl__events_free(fieldsync_t *fs);
/* Reads the journal's change log past what this handle delivered and delivers it (or queues it
 * when buffered). Called by the sync thread after each cycle and on each journal wake-up. */
void fsl__events_pump(fieldsync_t *fs);
/* A status event (delivered or queued). */
void fsl__events_status(fieldsync_t *fs, const fieldsync_sync_status_t *s);
/* True when the calling thread is running one of fs's listeners. */
bool fsl__in_listener(const fieldsync_t *fs);
/* True when the calling thread is running a listener of any handle. */
bool fsl__in_any_listener(void);
/* Close: no event is delivered or queued any more (fsl__worker_shutdown calls it). */
void fsl__events_mute(fieldsync_t *fs);
/* Test hook: the bound of the buffered queue (0: the default, 16384 events). */
void fsl__events_set_queue_max(fieldsync_t *fs, size_t max);

/* ---- the simulator's hook: agent/lib/sim_hook.h ---- */
#include "agent/lib/sim_hook.h"

#endif
