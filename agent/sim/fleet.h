/* fieldsync-sim: the simulator's internal interfaces (devices, the fleet, scenarios, checks). */
#ifndef FSA_AGENT_SIM_FLEET_H
#define FSA_AGENT_SIM_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "agent/lib/sim_hook.h"
#include "fieldsync/fieldsync.h"
#include "port/port.h"
#include "port/sim/sim.h"
#include "storage/model.h"
#include "sync/signer.h"

/*
 * Everything here is private to fieldsync-sim (agent/sim/); cross-file names carry the fsa__
 * prefix (STYLE.md). The files:
 *   main.c         the command line, the workdir, the order of scenarios, the exit status
 *   server_proc.c  finding, starting and stopping fieldsync-server; the devices and token files
 *   admin.c        a small libcurl client for the server's admin API (bearer token)
 *   fleet.c        simulated devices (libfieldsync on a sim port: its journal, verbs and sync
 *                  cycle; the hook of agent/lib/sim_hook.h) and the worker pool
 *   scenarios.c    the race scenarios and their invariants
 *   checks.c       pure invariant checkers on JSON text (unit-tested on hand-made inputs)
 *   report.c       the summary table, the JSON report and the HTML report
 */

#define FSA__PATH_BYTES 512
#define FSA__URL_BYTES 256
#define FSA__ERR_BYTES 320

/*
 * Scopes (PROTOCOL.md section 4): so that a device pulls what its scenario needs, not the fleet's
 * entities, the scenarios' entities carry scope keys that name the devices that need them, and
 * the devices file the simulator writes gives device i the scope {"people": [its id,
 * "TAG.race<i mod races>", "TAG.grp<i / FSA__GROUP_DEVICES>", and "TAG.crew" when i < 2 x --ops]}
 * (TAG: the run tag). Its own job (autoclose) has people_id its id, a race job (autoclose)
 * TAG.raceK, the entities a group of devices shares (ticketlog, json, flaky) TAG.grpG, those of
 * the fixed-size crew (checkpoints' tour, escalation's tickets) TAG.crew. A shared entity is
 * shared by at most FSA__GROUP_DEVICES devices, so that what each device pulls does not grow with
 * the fleet.
 */
#define FSA__GROUP_DEVICES 100
/* Devices per race job in autoclose. */
#define FSA__RACERS 10

/* The race group of device i in a fleet of ndev (autoclose). */
int fsa__race_of(int i, int ndev);
/* The number of race groups of a fleet of ndev. */
int fsa__races(int ndev);

/* ---- invariant results ---- */

typedef enum fsa__inv_status {
    FSA__INV_PASS = 0,
    FSA__INV_FAIL = 1,
    FSA__INV_NOT_CHECKED = 2 /* needs what this run does not have (admin access): never a pass */
} fsa__inv_status_t;

typedef struct fsa__inv {
    char name[64];
    fsa__inv_status_t status;
    char how[32]; /* how it was checked: "devices", "pulls", "admin API", "hook" */
    char details[512];
} fsa__inv_t;

const char *fsa__inv_status_name(fsa__inv_status_t s);

/* ---- the server's statistics (GET /admin/v1/stats), the figures the simulator uses ---- */

typedef struct fsa__stats {
    int64_t applied, duplicate, conflict, rejected;   /* ops by result */
    int64_t push, pull;                               /* requests */
    int64_t clock_skew, replay, bad_signature;        /* auth failures */
    int64_t f_5xx, f_429, f_drop, f_reset, f_latency; /* injected faults */
    int64_t entities;                                 /* store */
} fsa__stats_t;

/* ---- pure checkers (checks.c). Each returns true when the invariant holds and writes one line
 * into details (cap bytes) either way: what was seen, or what is wrong. Inputs are JSON texts as
 * the admin API returns them; a malformed input is a failure, never a crash. ---- */

/* The integer field `field` of fields_json equals expected. */
bool fsa__check_int_field(const char *fields_json, const char *field, int64_t expected,
                          char *details, size_t cap);

/* The string field `field` of fields_json equals expected (a status, a name). */
bool fsa__check_str_field(const char *fields_json, const char *field, const char *expected,
                          char *details, size_t cap);

/*
 * The array fields_json[field][key] holds exactly the expected entries, each once: every entry
 * is an object whose member `dev` (string) and `n` (integer) identify it, or, for an escalation
 * recorded through libfieldsync, whose `note` is "DEV#N"; the multiset of (dev, n) equals the
 * expected pairs devs[i], ns[i] (i < count). Reports missing, doubled and unexpected entries.
 */
bool fsa__check_log(const char *fields_json, const char *field, const char *key,
                    const char *const *devs, const int64_t *ns, size_t count, char *details,
                    size_t cap);

/*
 * The object fields_json[field] holds a key "<prefix><ns[i]>" with the value {"dev": devs[i],
 * "n": ns[i]} for every i < count, and no other key starting with prefix.
 */
bool fsa__check_keys(const char *fields_json, const char *field, const char *prefix,
                     const char *const *devs, const int64_t *ns, size_t count, char *details,
                     size_t cap);

/* fields_json[field][key] is a string equal to one of the `count` strings of `allowed`. */
bool fsa__check_member_in(const char *fields_json, const char *field, const char *key,
                          const char *const *allowed, size_t count, char *details, size_t cap);

/* The string field `field` of an entity as fieldsync_get() gives it ({..., "fields": {...}}) into
 * out (cap bytes). false when the text is malformed or the field is absent or not a string. */
bool fsa__json_status(const char *entity_json, const char *field, char *out, size_t cap);

/* Parses a stats answer. FSA_OK or FSA_EPROTO. */
fsa_status_t fsa__stats_parse(const char *text, fsa__stats_t *out) FSA_MUST_CHECK;

/* Nearest-rank percentile (0 < p <= 100) of n values (sorted in place). 0 when n is 0. */
int64_t fsa__percentile(int64_t *values, size_t n, double p);

/* ---- the admin client (admin.c) ---- */

typedef struct fsa__admin fsa__admin_t;

fsa_status_t fsa__admin_new(const char *base_url, const char *token, fsa__admin_t **out, char *err,
                            size_t errlen) FSA_MUST_CHECK;
void fsa__admin_free(fsa__admin_t *a);
/* Reads an entity: FSA_OK (*fields malloc'ed, fsa_free()), FSA_ENOTFOUND (404), FSA_EPROTO,
 * FSA_ENET, FSA_EAUTH (401). */
fsa_status_t fsa__admin_get_entity(fsa__admin_t *a, fsa_type_t type, const char *id,
                                   int64_t *version, char **fields, char *err,
                                   size_t errlen) FSA_MUST_CHECK;
/* Seeds an entity (201): FSA_OK, FSA_EEXISTS (409), FSA_EREJECTED (422), the others above. */
fsa_status_t fsa__admin_seed(fsa__admin_t *a, fsa_type_t type, const char *id,
                             const char *fields_json, char *err, size_t errlen) FSA_MUST_CHECK;
/* Autocloses a jobneed: FSA_OK, FSA_ECONFLICT (409), FSA_EREJECTED (422), FSA_ENOTFOUND. */
fsa_status_t fsa__admin_autoclose(fsa__admin_t *a, const char *id, char *err,
                                  size_t errlen) FSA_MUST_CHECK;
fsa_status_t fsa__admin_stats(fsa__admin_t *a, fsa__stats_t *out, char *err,
                              size_t errlen) FSA_MUST_CHECK;

/* ---- the server process (server_proc.c) ---- */

typedef struct fsa__server {
    int pid;                  /* 0 when not running */
    int out_fd;               /* its stdout: EOF when it exits */
    char url[FSA__URL_BYTES]; /* "http://127.0.0.1:PORT" */
    /* Its admin listener, "http://127.0.0.1:PORT" (its "admin listening on" line). */
    char admin_url[FSA__URL_BYTES];
    char binary[FSA__PATH_BYTES + 64];
    char found_via[64];              /* "$FIELDSYNC_SERVER", "build tree", "installed beside" */
    char log[FSA__PATH_BYTES + 128]; /* its stderr */
} fsa__server_t;

/* Finds the fieldsync-server binary: $FIELDSYNC_SERVER, else next to this program in the build
 * tree (dirname(/proc/self/exe)/../sync/server/fieldsync-server), else installed beside it
 * (same directory). FSA_OK or FSA_ENOTFOUND (err lists where it looked). */
fsa_status_t fsa__server_find(fsa__server_t *s, char *err, size_t errlen) FSA_MUST_CHECK;
/* Starts it on 127.0.0.1:0 with the given files and extra arguments (NULL-terminated, may be
 * NULL), and waits for its "listening on" line. */
fsa_status_t fsa__server_start(fsa__server_t *s, const char *db, const char *devices_file,
                               const char *token_file, const char *const *extra, char *err,
                               size_t errlen) FSA_MUST_CHECK;
/* SIGTERM, wait (at most 20 s, then SIGKILL). Returns its exit status, -1 when killed. */
int fsa__server_stop(fsa__server_t *s);

/* Writes a file of mode 0600 holding text. */
fsa_status_t fsa__write_private(const char *path, const char *text, char *err,
                                size_t errlen) FSA_MUST_CHECK;
/* Binds a loopback TCP port without listening, so that connecting to it is refused: the URL of
 * a server that is down, for offline periods. Keeps the socket open in *fd. */
fsa_status_t fsa__dead_url(char *url, size_t cap, int *fd) FSA_MUST_CHECK;
/* Removes a directory tree (no symlinks followed). */
void fsa__remove_tree(const char *dir);

/* ---- devices and the fleet (fleet.c) ---- */

/* One recording the simulator follows to its outcome. */
typedef enum fsa__mark_state {
    FSA__MARK_PENDING = 0,
    FSA__MARK_DONE = 1,     /* applied (or a duplicate of applied): left the outbox */
    FSA__MARK_CONFLICT = 2, /* parked or resolved as a conflict */
    FSA__MARK_REJECTED = 3
} fsa__mark_state_t;

typedef struct fsa__mark {
    char op_id[FSA_OP_ID_BYTES];
    int64_t rec_ms; /* real monotonic ms at record time */
    int32_t nops;   /* ops in this recording (a group counts each) */
    int8_t state;
} fsa__mark_t;

/* A conflict (or rejection) a device holds at the end, as collected. */
typedef struct fsa__dconflict {
    char op_id[FSA_OP_ID_BYTES];
    fsa_op_kind_t kind;
    fsa_type_t type;
    char id[FSA_ID_BYTES];
    char outcome[16];
    char decision[16];
    char resolution[16];
    char server_status[FSA_STATUS_BYTES]; /* the server's status field then, "" when none */
} fsa__dconflict_t;

typedef struct fsa__device {
    int index;
    char id[FSA_ID_BYTES];
    fsa_signer_key_t key;
    fsa_sim_t *sim; /* this boot's port (clock and random) */
    int boot;
    int64_t wall_shift_ms; /* how far this device's wall clock is off */
    int64_t boot_real_ms;  /* real monotonic ms when this boot began */
    char journal[FSA__PATH_BYTES];
    char secret[FSA__PATH_BYTES]; /* its secret file (0600), for libfieldsync */
    bool initialised;             /* its journal holds its configuration */
    fsa__mark_t *marks;
    size_t nmarks, capmarks, first_unsettled;
    int64_t pending; /* outbox depth after its last step */
    /* per-scenario figures */
    int64_t recorded_ops, retries, applied, duplicate, conflict, rejected;
    int64_t rebased, server_wins, converged, parked;
    int64_t syncs, sync_errors, crashes;
    int64_t clock_offset_ms; /* as the journal holds it at collect time */
    int64_t clock_error_ms;  /* its wall clock minus the real one at collect time */
    int64_t open_conflicts;
    fsa__dconflict_t *conflicts;
    size_t nconflicts;
    char error[FSA__ERR_BYTES]; /* the first unexpected error ("" when none) */
    char last_sync_error[240];  /* why its last sync online failed ("" after one that did not) */
} fsa__device_t;

typedef struct fsa__sample {
    int64_t t_ms;    /* since the scenario started */
    int64_t depth;   /* pending ops in every outbox */
    int64_t retries; /* requests retried so far */
} fsa__sample_t;

/* Where a scenario's time went: a phase of the worker pool, or the main thread's work between
 * phases (seeding, the server's actor) and after them (checks). */
#define FSA__PHASES_MAX 48
typedef struct fsa__phase {
    char name[48];
    int64_t ms;
    int devices; /* stepped by the pool; 0 for the main thread's work */
} fsa__phase_t;

typedef struct fsa__fleet {
    fsa__device_t *dev;
    int ndev;
    int workers;
    uint64_t seed;
    bool sync_normal;             /* journals with synchronous=NORMAL (see docs/sim.md) */
    bool progress;                /* progress lines on stderr (a terminal) */
    char url[FSA__URL_BYTES];     /* the server (the first of urls) */
    char (*urls)[FSA__URL_BYTES]; /* --server given n times: device i uses urls[i % nurls] */
    int nurls;                    /* 0: every device uses url */
    fsa__device_t *reader;        /* dev[ndev]: reads the final state through pulls */
    fsa__device_t *site_reader;   /* dev[ndev + 1]: reads attendances (scope: the sites), or NULL */
    char dead_url[FSA__URL_BYTES]; /* offline: connections refused */
    char dir[FSA__PATH_BYTES];     /* this scenario's journals */
    const char *scenario;
    int scenario_index;
    uint64_t seed_mix; /* mixed into port seeds (a per-run value with --server) */
    int64_t t0_ms;
    /* shared by the workers, under mu */
    fsa_mutex_t *mu;
    int64_t depth_total, retries_total;
    fsa__sample_t *samples;
    size_t nsamples, capsamples;
    int64_t last_sample_ms;
    int64_t *lags;
    size_t nlags, caplags;
    const char *phase;
    int phase_done, phase_total;
    int64_t last_progress_ms;
    fsa__phase_t phases[FSA__PHASES_MAX];
    size_t nphases;
    int64_t phase_end_ms; /* when the last phase ended (or the scenario began) */
    char tag[32];         /* the run tag: scope keys are "TAG.grpG", "TAG.raceK", "TAG.crew" */
} fsa__fleet_t;

/* The scope key of a group, race group or the crew ("grp", "race" with n; "crew" with n < 0). */
void fsa__scope_key(const fsa__fleet_t *f, const char *what, int n, char *out, size_t cap);

/* The server URL device d talks to (the reader included). */
const char *fsa__dev_url(const fsa__fleet_t *f, const fsa__device_t *d);

/* Real monotonic milliseconds (posix port). */
int64_t fsa__real_ms(void);
/* splitmix64 step: deterministic scenario choices from a seed. */
uint64_t fsa__mix(uint64_t *state);

fsa_status_t fsa__fleet_init(fsa__fleet_t *f, char *err, size_t errlen) FSA_MUST_CHECK;
void fsa__fleet_free(fsa__fleet_t *f);
/* Starts a scenario: journals under dir, fresh sims, figures and series reset. */
fsa_status_t fsa__fleet_begin(fsa__fleet_t *f, const char *scenario, int index, const char *dir,
                              char *err, size_t errlen) FSA_MUST_CHECK;
/* Notes the main thread's work since the last phase ended as a phase of its own (name). */
void fsa__fleet_mark(fsa__fleet_t *f, const char *name);
/* Ends it: frees the sims. */
void fsa__fleet_end(fsa__fleet_t *f);

typedef void (*fsa__step_fn)(fsa__fleet_t *f, fsa__device_t *d, void *arg);
/* Runs fn on devices [0, count) with the worker pool; returns when all are done. */
void fsa__fleet_run(fsa__fleet_t *f, const char *phase, int count, fsa__step_fn fn, void *arg);

/* Opens a device's journal through libfieldsync on the device's sim port (its first open
 * initialises it: device id, server, secret file). false (and d->error) on failure. */
bool fsa__dev_open(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t **fs);
/* Reads its outbox depth into the fleet's series and closes it. */
void fsa__dev_close(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t *fs);
/* Follows a recording (st FIELDSYNC_OK) or notes its error (fs's message). true when recorded. */
bool fsa__dev_mark(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t *fs, fieldsync_status_t st,
                   const fieldsync_rec_t *rec, int nops, const char *what);
/* One sync cycle (online: the server; offline: a refused port), waiting out a persisted backoff
 * by moving the device's virtual clock. Settles marks. Returns the cycle's status. */
fieldsync_status_t fsa__dev_sync(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t *fs, bool online);
/* Syncs until nothing is pending (at most max_rounds syncs). true when drained. */
bool fsa__dev_drain(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t *fs, int max_rounds);
/* Collects outbox figures, the clock offset and every conflict into d. */
void fsa__dev_collect(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t *fs);
/* Notes the first unexpected error of a device. */
void fsa__dev_error(fsa__device_t *d, const char *fmt, ...) FSA_PRINTF(2, 3);
/* Simulates a crash of device d mid-sync: a forked child opens the journal and syncs; it is
 * SIGKILLed once its batch is marked in flight (the library's "pushing" status) (before_send: while
 * it waits to send it; else a random moment, 0-3 ms, after it started sending). The device then
 * reboots (a new sim port). Main thread only, with no worker running. Returns 1 when the kill
 * landed mid-cycle; 0 when, while sending, the child finished its cycle before the kill (no crash);
 * -1 when the child never reached its push (an error). */
int fsa__dev_crash(fsa__fleet_t *f, fsa__device_t *d, bool before_send);

/* What fsa__dev_restore_resend saw. */
typedef struct fsa__resend {
    int64_t held;      /* ops the copy of the journal held pending */
    int64_t left;      /* ops still pending after the drain that the copy predates */
    int64_t duplicate; /* answers of the resend: duplicate, applied, anything else */
    int64_t applied;
    int64_t other;
} fsa__resend_t;

/*
 * A device restored from a backup: a copy of d's journal (its file and WAL) is taken, the device
 * drains, the copy is put back and the device drains again, so every op the copy held pending is
 * sent to the server a second time, deterministically (a crash mid-sync resends only when the
 * kill lands after the server committed). In the main thread, with no worker running. False (and
 * d->error) when a step failed.
 */
bool fsa__dev_restore_resend(fsa__fleet_t *f, fsa__device_t *d, fsa__resend_t *out);
/* Shifts a device's wall clock (a clock off by hours). */
void fsa__dev_shift_clock(fsa__device_t *d, int64_t delta_ms);

/* ---- scenarios (scenarios.c) ---- */

#define FSA__INV_MAX 16
#define FSA__KINDS_MAX 24

typedef struct fsa__kindcount {
    char label[48];
    int64_t n;
} fsa__kindcount_t;

typedef struct fsa__result {
    char name[32];
    int devices;
    int64_t duration_ms;
    char note[256];
    int64_t recorded, lost, retries, syncs, crashes;
    int64_t rebased, server_wins, converged, parked;
    int64_t c_applied, c_duplicate, c_conflict, c_rejected; /* as the devices' engines reported */
    bool have_server; /* server-side figures below are known */
    int64_t s_applied, s_duplicate, s_conflict, s_rejected, admin_ops;
    fsa__stats_t s_delta;
    int64_t lag_p50, lag_p99, lag_max;
    int64_t *lags;
    size_t nlags;
    fsa__sample_t *samples;
    size_t nsamples;
    fsa__kindcount_t kinds[FSA__KINDS_MAX];
    size_t nkinds;
    fsa__inv_t inv[FSA__INV_MAX];
    size_t ninv;
    char faults[256]; /* the server's fault options, "" when none */
    const char *how;  /* how the next invariant added was checked (NULL: "devices") */
    fsa__phase_t phases[FSA__PHASES_MAX];
    size_t nphases;
} fsa__result_t;

void fsa__result_free(fsa__result_t *r);

typedef struct fsa__run {
    fsa__fleet_t *fleet;
    fsa__admin_t *admin; /* NULL: no admin access (server-state invariants not checked) */
    int ops;
    char prefix[48]; /* entity id prefix of this run */
    bool faults;     /* the server injects faults */
    fsa__result_t *res;
    int64_t admin_ops; /* ops the admin API put through the server's counters (seeds...) */
    bool owned_server; /* the simulator started the server: its counters are this run's */
    bool have_before, have_after;
    fsa__stats_t before;
    const char *hook;          /* --server-hook: a command for server-side actors, NULL when none */
    fieldsync_t *reader_fs[2]; /* the readers' journals (reader, site reader), once pulled */
    int reader_state[2];       /* 0 not synced yet, 1 synced, -1 its pull failed */
} fsa__run_t;

typedef void (*fsa__scenario_fn)(fsa__run_t *run);

typedef struct fsa__scenario {
    const char *name;
    const char *summary;
    fsa__scenario_fn fn;
    bool wants_faults; /* started with the default fault options */
    bool needs_admin;  /* cannot run at all without admin access or a --server-hook */
} fsa__scenario_t;

/* The scenarios in the order `all` runs them; *n receives their number. */
const fsa__scenario_t *fsa__scenarios(size_t *n);

/* Runs one scenario: the server's counters before and after, the scenario, the invariants every
 * scenario shares (nothing lost, no device error, counts consistent), and the figures. */
void fsa__scenario_run(const fsa__scenario_t *s, fsa__run_t *run);

/* Reads the server's counters after the scenario into run->res (once; later calls do nothing). */
void fsa__scenario_stats_after(fsa__run_t *run);

/* Adds an invariant result to res. */
void fsa__inv_add(fsa__result_t *res, const char *name, fsa__inv_status_t st, const char *fmt, ...)
    FSA_PRINTF(4, 5);

/* ---- reports (report.c) ---- */

typedef struct fsa__report_meta {
    const char *command; /* the command line */
    uint64_t seed;
    int devices, ops, workers;
    const char *server_url;
    const char *server_binary; /* NULL with --server */
    const char *server_found_via;
    const char *workdir;
    bool workdir_kept;
    int64_t wall_ms;
    int64_t sim_rss_kib;    /* the simulator's peak resident set (getrusage) */
    int64_t server_rss_kib; /* the largest peak of the server processes it started (VmHWM); 0:
                               none (--server) */
} fsa__report_meta_t;

/* The run's verdict, which the exit status, the summary's result line, the JSON report's "ok"
 * and the HTML summary all give: failed when an invariant failed or a scenario could not run
 * (its "scenario_ran" not checked; *not_run counts them), nothing checked when no invariant
 * was, else passed. */
typedef enum { FSA__RUN_PASSED, FSA__RUN_FAILED, FSA__RUN_NOTHING_CHECKED } fsa__verdict_t;
fsa__verdict_t fsa__verdict(const fsa__result_t *r, size_t n, size_t *not_run);

void fsa__report_summary(FILE *out, const fsa__report_meta_t *m, const fsa__result_t *r, size_t n);
fsa_status_t fsa__report_json(const char *path, const fsa__report_meta_t *m, const fsa__result_t *r,
                              size_t n, char *err, size_t errlen) FSA_MUST_CHECK;
fsa_status_t fsa__report_html(const char *path, const fsa__report_meta_t *m, const fsa__result_t *r,
                              size_t n, char *err, size_t errlen) FSA_MUST_CHECK;

#endif
