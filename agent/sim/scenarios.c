/* fieldsync-sim: the platform's race scenarios played by a fleet, and their invariants. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "agent/sim/fleet.h"
#include "port/alloc.h"

/*
 * Every scenario follows the same shape: the server holds the entities (seeded through the admin
 * API, or created by device 0 when there is no admin access), the devices pull them, record ops
 * with the real journal calls while offline or online, sync with the real engine over real HTTP,
 * and finally drain their outboxes. Then the server's final state is read, through the admin API
 * or, without it, through the protocol: the reader (a device of its own journal, no scope or one
 * covering the run) pulls everything and reads each entity's local view, which after a pull with
 * nothing pending is the server's state (fields and version). Every invariant is checked either
 * way, except the server's counters (counts_consistent), which only the admin API shows; each
 * invariant says how it was checked.
 */

/* Syncs a device may take to empty its outbox at the end (faults, backoff, rebases). */
#define DRAIN_ROUNDS 40

void fsa__result_free(fsa__result_t *r)
{
    if (r == NULL)
        return;
    fsa_free(r->lags);
    fsa_free(r->samples);
    r->lags = NULL;
    r->samples = NULL;
}

/* ---- helpers shared by the scenarios ---- */

static void entity_id(const fsa__run_t *run, char *out, size_t cap, const char *fmt, ...)
    FSA_PRINTF(4, 5);
static void entity_id(const fsa__run_t *run, char *out, size_t cap, const char *fmt, ...)
{
    size_t n = (size_t)snprintf(out, cap, "%s", run->prefix);
    va_list ap;
    va_start(ap, fmt);
    if (n < cap)
        vsnprintf(out + n, cap - n, fmt, ap);
    va_end(ap);
}

/* The person of device dev's attendances in this run: the run's prefix too, so that another run
 * on the same server (--server, --server-db) never counts as this one's. */
#define PEOPLE_BYTES (FSA_ID_BYTES + 56)
static void people_of(const fsa__run_t *run, const char *dev, char *out, size_t cap)
{
    snprintf(out, cap, "%sp-%s", run->prefix, dev);
}

typedef struct seed_ent {
    fsa_type_t type;
    char id[FSA_ID_BYTES];
    char fields[FSA_ID_BYTES + 64];
} seed_ent_t;

/* Puts the scenario's entities on the server: through the admin API, or, without admin access,
 * as creates recorded and synced by device 0 (which then count as the scenario's ops). */
static bool seed_all(fsa__run_t *run, const seed_ent_t *e, size_t n)
{
    fsa__fleet_t *f = run->fleet;
    char err[FSA__ERR_BYTES];
    if (run->admin != NULL) {
        for (size_t i = 0; i < n; i++) {
            fsa_status_t st =
                fsa__admin_seed(run->admin, e[i].type, e[i].id, e[i].fields, err, sizeof err);
            if (st != FSA_ENET && st != FSA_EAUTH && st != FSA_ENOMEM && st != FSA_ETOOLARGE)
                run->admin_ops++; /* it reached the server's op counters, whatever its result */
            if (st != FSA_OK) {
                fsa__inv_add(run->res, "entities_seeded", FSA__INV_FAIL, "%s", err);
                return false;
            }
        }
        return true;
    }
    fsa__device_t *d = &f->dev[0];
    fieldsync_t *fs = NULL;
    if (!fsa__dev_open(f, d, &fs)) {
        fsa__inv_add(run->res, "entities_seeded", FSA__INV_FAIL, "%s", d->error);
        return false;
    }
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        fieldsync_rec_t rec;
        fieldsync_status_t st = e[i].type == FSA_TYPE_TICKET
                                    ? fieldsync_ticket_create(fs, e[i].id, e[i].fields, &rec)
                                    : fieldsync_job_create(fs, e[i].id, e[i].fields, &rec);
        ok = fsa__dev_mark(f, d, fs, st, &rec, 1, "seeding");
    }
    ok = ok && fsa__dev_drain(f, d, fs, DRAIN_ROUNDS);
    fsa__dev_close(f, d, fs);
    if (!ok)
        fsa__inv_add(run->res, "entities_seeded", FSA__INV_FAIL,
                     "device %s could not create the scenario's entities: %s%s%s%s", d->id,
                     d->error[0] ? d->error : "its outbox did not drain",
                     !d->error[0] && d->last_sync_error[0] ? " (its last sync: " : "",
                     d->error[0] ? "" : d->last_sync_error,
                     !d->error[0] && d->last_sync_error[0] ? ")" : "");
    return ok;
}

extern char **environ;

/* Runs the --server-hook command for a server-side actor: `/bin/sh -c CMD` with {action},
 * {type} and {id} replaced (ids are the simulator's own: letters, digits, '.', '-', '_').
 * FSA_OK when it exits 0. */
static fsa_status_t run_hook(const char *hook, const char *action, const char *type, const char *id,
                             char *err, size_t errlen)
{
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == '_')) {
            snprintf(err, errlen, "--server-hook: id '%s' is not shell-safe", id);
            return FSA_EINVAL;
        }
    char cmd[2048];
    size_t n = 0;
    for (const char *p = hook; *p && n + 1 < sizeof cmd;) {
        const char *val = NULL;
        size_t skip = 0;
        if (strncmp(p, "{action}", 8) == 0)
            val = action, skip = 8;
        else if (strncmp(p, "{type}", 6) == 0)
            val = type, skip = 6;
        else if (strncmp(p, "{id}", 4) == 0)
            val = id, skip = 4;
        if (val != NULL) {
            n += (size_t)snprintf(cmd + n, sizeof cmd - n, "%s", val);
            p += skip;
        } else {
            cmd[n++] = *p++;
        }
        if (n >= sizeof cmd - 1) {
            snprintf(err, errlen, "--server-hook: the command is too long");
            return FSA_ETOOLARGE;
        }
    }
    cmd[n] = '\0';
    char *argv[] = {"sh", "-c", cmd, NULL};
    pid_t pid;
    /* Its output goes to stderr: stdout is the simulator's summary. */
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none;
    sigemptyset(&none);
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc == 0) {
        rc = posix_spawnattr_init(&attr);
        /* The simulator blocks SIGINT and SIGTERM (main.c, stop_on_signal) and ignores SIGPIPE;
         * the hook does neither (a `timeout` in it must be able to end what it runs, a `| head`
         * to end what writes into it). Debian's /bin/sh, dash, clears its mask at start anyway;
         * a shell that does not would inherit the simulator's. */
        sigset_t pipe_default;
        sigemptyset(&pipe_default);
        sigaddset(&pipe_default, SIGPIPE);
        if (rc == 0) {
            rc = posix_spawnattr_setsigmask(&attr, &none);
            if (rc == 0)
                rc = posix_spawnattr_setsigdefault(&attr, &pipe_default);
            if (rc == 0)
                rc =
                    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
            if (rc == 0)
                rc = posix_spawn_file_actions_adddup2(&fa, 2, 1);
            if (rc == 0)
                rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
            posix_spawnattr_destroy(&attr);
        }
        posix_spawn_file_actions_destroy(&fa);
    }
    if (rc != 0) {
        snprintf(err, errlen, "--server-hook: cannot run /bin/sh: %s", strerror(rc));
        return FSA_EIO;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            snprintf(err, errlen, "--server-hook: waitpid: %s", strerror(errno));
            return FSA_EIO;
        }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(err, errlen, "--server-hook %s %d for %.16s %.100s: %.120s",
                 WIFEXITED(status) ? "exited with" : "was killed by signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), type, id, cmd);
        return FSA_EIO;
    }
    return FSA_OK;
}

/* Steps every scenario uses. */
static void step_pull(fsa__fleet_t *f, fsa__device_t *d, void *arg)
{
    (void)arg;
    fieldsync_t *fs = NULL;
    if (!fsa__dev_open(f, d, &fs))
        return;
    fieldsync_status_t st = fsa__dev_sync(f, d, fs, true);
    if (st != FIELDSYNC_OK && !fsa__dev_drain(f, d, fs, DRAIN_ROUNDS))
        fsa__dev_error(d, "cannot pull the scenario's entities: %s", fieldsync_status_str(st));
    fsa__dev_close(f, d, fs);
}

static void step_drain(fsa__fleet_t *f, fsa__device_t *d, void *arg)
{
    (void)arg;
    fieldsync_t *fs = NULL;
    if (!fsa__dev_open(f, d, &fs))
        return;
    (void)fsa__dev_drain(f, d, fs, DRAIN_ROUNDS);
    fsa__dev_close(f, d, fs);
}

static void step_finish(fsa__fleet_t *f, fsa__device_t *d, void *arg)
{
    (void)arg;
    fieldsync_t *fs = NULL;
    if (!fsa__dev_open(f, d, &fs))
        return;
    (void)fsa__dev_drain(f, d, fs, DRAIN_ROUNDS);
    fsa__dev_collect(f, d, fs);
    fsa__dev_close(f, d, fs);
}

/* How the server's state is read in this run. */
static const char *state_how(const fsa__run_t *run)
{
    return run->admin != NULL ? "admin API" : "pulls";
}

/* Without the admin API: a reader pulls the final state (once per scenario, after the fleet has
 * drained) and keeps its journal open for the reads; which: 0 the reader (jobneeds, tickets),
 * 1 the site reader (attendances). false, and invariant `name` failed (or not checked, when
 * there is no site reader), when it cannot. */
static bool reader_pull(fsa__run_t *run, const char *name, int which);

static bool need_state_of(fsa__run_t *run, const char *name, int which)
{
    if (run->admin != NULL)
        return true;
    return reader_pull(run, name, which);
}

/* The pull of need_state_of, whether or not there is an admin API. */
static bool reader_pull(fsa__run_t *run, const char *name, int which)
{
    fsa__fleet_t *f = run->fleet;
    fsa__device_t *d = which == 0 ? f->reader : f->site_reader;
    if (d == NULL) {
        fsa__inv_add(run->res, name, FSA__INV_NOT_CHECKED,
                     "the protocol shows a device only the attendances of its scope's sites: "
                     "give --site-reader (a device whose scope has site0..site6 and s1) or "
                     "--admin-token-file");
        return false;
    }
    if (run->reader_state[which] == 0) {
        fieldsync_t *fs = NULL;
        bool ok = d != NULL && fsa__dev_open(f, d, &fs);
        if (ok && !fsa__dev_drain(f, d, fs, DRAIN_ROUNDS)) {
            if (d->error[0] == '\0')
                fsa__dev_error(d, "its pull did not complete in %d cycles", DRAIN_ROUNDS);
            ok = false;
        }
        if (ok)
            run->reader_fs[which] = fs;
        else if (fs != NULL)
            fsa__dev_close(f, d, fs);
        run->reader_state[which] = ok ? 1 : -1;
    }
    if (run->reader_state[which] > 0)
        return true;
    run->res->how = "pulls";
    fsa__inv_add(run->res, name, FSA__INV_FAIL,
                 "the reader (device %s, own journal) could not pull the final state: %s", d->id,
                 d->error[0] ? d->error : "no answer");
    return false;
}

static bool need_state(fsa__run_t *run, const char *name)
{
    return need_state_of(run, name, 0);
}

/* Reads an entity as the server holds it: admin API, else the reader's view after its pull
 * (need_state first). FSA_OK (*fields fsa_malloc'ed), else an explanation in err. */
static fsa_status_t get_entity(fsa__run_t *run, fsa_type_t type, const char *id, int64_t *version,
                               char **fields, char *err, size_t errlen)
{
    *fields = NULL;
    if (run->admin != NULL)
        return fsa__admin_get_entity(run->admin, type, id, version, fields, err, errlen);
    fieldsync_t *rfs = run->reader_fs[type == FSA_TYPE_ATTENDANCE ? 1 : 0];
    if (rfs == NULL) {
        snprintf(err, errlen, "the reader has not pulled");
        return FSA_EINVAL;
    }
    char *json = NULL;
    fieldsync_status_t st = fieldsync_get(rfs, fsa_type_name(type), id, &json);
    if (st != FIELDSYNC_OK) {
        snprintf(err, errlen, "%s %s: %s through the reader's pull", fsa_type_name(type), id,
                 st == FIELDSYNC_ENOTFOUND ? "not found" : fieldsync_status_str(st));
        fieldsync_free(json);
        return st == FIELDSYNC_ENOTFOUND ? FSA_ENOTFOUND : FSA_EIO;
    }
    cJSON *root = cJSON_Parse(json);
    fieldsync_free(json);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "server_version");
    const cJSON *fl = cJSON_GetObjectItemCaseSensitive(root, "fields");
    const cJSON *pend = cJSON_GetObjectItemCaseSensitive(root, "pending");
    char *text = cJSON_IsNumber(v) && cJSON_IsObject(fl) ? cJSON_PrintUnformatted(fl) : NULL;
    bool pending = cJSON_IsNumber(pend) && pend->valuedouble != 0;
    if (text != NULL)
        *version = (int64_t)v->valuedouble;
    cJSON_Delete(root);
    if (text == NULL || pending) {
        cJSON_free(text);
        snprintf(err, errlen, "%s %s: the reader's view is %s", fsa_type_name(type), id,
                 pending ? "not the server's (ops pending)" : "malformed");
        return FSA_EPROTO;
    }
    *fields = text; /* cJSON allocates with fsa_malloc (storage/libs.h) */
    return FSA_OK;
}

/* Reads an entity from the server; on failure adds a failing invariant and returns false. */
static bool read_entity(fsa__run_t *run, const char *inv, fsa_type_t type, const char *id,
                        int64_t *version, char **fields)
{
    char err[FSA__ERR_BYTES];
    run->res->how = state_how(run);
    fsa_status_t st = get_entity(run, type, id, version, fields, err, sizeof err);
    if (st != FSA_OK) {
        fsa__inv_add(run->res, inv, FSA__INV_FAIL, "%s", err);
        return false;
    }
    return true; /* how stays set for the invariant this read is for */
}

/* An invariant over many entities: counts failures, keeps the first explanation. stopped: the
 * loop ended early (a read of the server's state failed, and said so): what was not checked is
 * never a pass. */
typedef struct tally {
    bool server; /* checks of the server's state (how: admin API or pulls) */
    bool stopped;
    size_t checked, failed;
    char first[400];
} tally_t;

static void tally(tally_t *t, bool ok, const char *what, const char *details)
{
    t->checked++;
    if (!ok && t->failed++ == 0)
        snprintf(t->first, sizeof t->first, "%.100s: %.290s", what, details);
}

static void tally_done(fsa__run_t *run, const char *name, const tally_t *t, const char *what)
{
    if (t->server)
        run->res->how = state_how(run);
    if (t->stopped && t->failed == 0)
        fsa__inv_add(run->res, name, FSA__INV_NOT_CHECKED,
                     "stopped after %zu %s: the server's state could not be read (see the "
                     "failures above)",
                     t->checked, what);
    else if (t->failed == 0)
        fsa__inv_add(run->res, name, FSA__INV_PASS, "%zu %s checked", t->checked, what);
    else
        fsa__inv_add(run->res, name, FSA__INV_FAIL, "%zu of %zu %s wrong; first: %s", t->failed,
                     t->checked, what, t->first);
}

/* Why the server's counters do not tell this run's figures, with the admin API at hand. */
static const char *counters_unknown(const fsa__run_t *run)
{
    if (!run->owned_server)
        return "the server's counters are server-wide and it is not this run's own";
    if (run->fleet->nurls > 1)
        return "the server's counters are per process, and it has several";
    return "the server's counters could not be read (server_stats_read)";
}

/* The mark at index i of device d, or NULL. */
static const fsa__mark_t *mark_at(const fsa__device_t *d, long i)
{
    return i >= 0 && (size_t)i < d->nmarks ? &d->marks[i] : NULL;
}

/* Records an op and returns its mark index (-1 when not recorded). */
static long rec_mark(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t *fs, fieldsync_status_t st,
                     const fieldsync_rec_t *rec, int nops, const char *what)
{
    long at = (long)d->nmarks;
    return fsa__dev_mark(f, d, fs, st, rec, nops, what) && (size_t)at < d->nmarks ? at : -1;
}

static const fsa__dconflict_t *find_conflict(const fsa__device_t *d, const char *op_id)
{
    for (size_t i = 0; i < d->nconflicts; i++)
        if (strcmp(d->conflicts[i].op_id, op_id) == 0)
            return &d->conflicts[i];
    return NULL;
}

/* Builds an item {"dev": id, "n": n} (and extra members) into out. */
static void item(char *out, size_t cap, const char *dev, int64_t n, const char *extra)
{
    snprintf(out, cap, "{\"dev\":\"%s\",\"n\":%" PRId64 "%s%s}", dev, n, extra[0] ? "," : "",
             extra);
}

/* ================= autoclose ================= */

/*
 * The server autocloses jobs (admin API) while their devices are offline; the devices then
 * complete them. Server wins: the completion is a conflict the device records and can show. Each
 * device also races every other device of its race group on one shared job's ASSIGNED→INPROGRESS:
 * exactly one wins, the others converge.
 */
typedef struct ac_ctx {
    fsa__run_t *run;
    int races;
    bool *closed; /* per device: its job was autoclosed */
    long *m_start, *m_race, *m_complete;
    char (*local)[FSA_STATUS_BYTES]; /* the device's local view of its job at the end */
} ac_ctx_t;

static void ac_job(const fsa__run_t *run, int i, char *out, size_t cap)
{
    entity_id(run, out, cap, "job%d", i);
}

static void ac_race(const fsa__run_t *run, int k, char *out, size_t cap)
{
    entity_id(run, out, cap, "race%d", k);
}

/* A transition of job id to `to`, recorded on device d: its mark index (-1 when not recorded). */
static long ac_transition(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t *fs, const char *id,
                          const char *to, const char *what)
{
    fieldsync_rec_t rec;
    return rec_mark(f, d, fs, fieldsync_job_transition(fs, id, to, NULL, &rec), &rec, 1, what);
}

static void ac_record_start(fsa__fleet_t *f, fsa__device_t *d, void *arg)
{
    ac_ctx_t *c = arg;
    fieldsync_t *fs = NULL;
    if (!fsa__dev_open(f, d, &fs))
        return;
    char id[FSA_ID_BYTES];
    ac_job(c->run, d->index, id, sizeof id);
    c->m_start[d->index] = ac_transition(f, d, fs, id, "INPROGRESS", "starting the job");
    ac_race(c->run, fsa__race_of(d->index, f->ndev), id, sizeof id);
    c->m_race[d->index] = ac_transition(f, d, fs, id, "INPROGRESS", "racing for the shared job");
    fsa__dev_close(f, d, fs);
}

static void ac_record_complete(fsa__fleet_t *f, fsa__device_t *d, void *arg)
{
    ac_ctx_t *c = arg;
    fieldsync_t *fs = NULL;
    if (!fsa__dev_open(f, d, &fs))
        return;
    char id[FSA_ID_BYTES];
    ac_job(c->run, d->index, id, sizeof id);
    c->m_complete[d->index] = ac_transition(f, d, fs, id, "COMPLETED", "completing the job");
    /* Offline: the attempt fails and the engine persists its backoff. */
    (void)fsa__dev_sync(f, d, fs, false);
    fsa__dev_close(f, d, fs);
}

static void ac_finish(fsa__fleet_t *f, fsa__device_t *d, void *arg)
{
    ac_ctx_t *c = arg;
    fieldsync_t *fs = NULL;
    if (!fsa__dev_open(f, d, &fs))
        return;
    (void)fsa__dev_drain(f, d, fs, DRAIN_ROUNDS);
    fsa__dev_collect(f, d, fs);
    char id[FSA_ID_BYTES];
    ac_job(c->run, d->index, id, sizeof id);
    char *json = NULL;
    if (fieldsync_get(fs, "jobneed", id, &json) != FIELDSYNC_OK ||
        !fsa__json_status(json, "jobstatus", c->local[d->index], sizeof c->local[d->index]))
        c->local[d->index][0] = '\0';
    fieldsync_free(json);
    fsa__dev_close(f, d, fs);
}

static void ac_ctx_free(ac_ctx_t *c)
{
    fsa_free(c->closed);
    fsa_free(c->m_start);
    fsa_free(c->m_race);
    fsa_free(c->m_complete);
    fsa_free(c->local);
}

/* The per-device arrays of c for D devices; false (an invariant failed) when out of memory. */
static bool ac_ctx_alloc(fsa__run_t *run, ac_ctx_t *c, int D)
{
    c->closed = fsa_calloc((size_t)D, sizeof *c->closed);
    c->m_start = fsa_calloc((size_t)D, sizeof *c->m_start);
    c->m_race = fsa_calloc((size_t)D, sizeof *c->m_race);
    c->m_complete = fsa_calloc((size_t)D, sizeof *c->m_complete);
    c->local = fsa_calloc((size_t)D, sizeof *c->local);
    if (c->closed && c->m_start && c->m_race && c->m_complete && c->local)
        return true;
    fsa__inv_add(run->res, "scenario_ran", FSA__INV_FAIL, "out of memory");
    return false;
}

/* Every device's own job (its people_id the device's id) and the race groups' shared jobs (the
 * race group's scope key), on the server. */
static bool ac_seed(fsa__run_t *run, const ac_ctx_t *c)
{
    fsa__fleet_t *f = run->fleet;
    int D = f->ndev;
    size_t nseed = (size_t)D + (size_t)c->races;
    seed_ent_t *seeds = fsa_calloc(nseed, sizeof *seeds);
    if (seeds == NULL) {
        fsa__inv_add(run->res, "scenario_ran", FSA__INV_FAIL, "out of memory");
        return false;
    }
    for (int i = 0; i < D; i++) {
        seeds[i].type = FSA_TYPE_JOBNEED;
        ac_job(run, i, seeds[i].id, sizeof seeds[i].id);
        snprintf(seeds[i].fields, sizeof seeds[i].fields, "{\"people_id\":\"%s\"}", f->dev[i].id);
    }
    for (int k = 0; k < c->races; k++) {
        seeds[D + k].type = FSA_TYPE_JOBNEED;
        ac_race(run, k, seeds[D + k].id, sizeof seeds[D + k].id);
        char key[FSA_ID_BYTES];
        fsa__scope_key(f, "race", k, key, sizeof key);
        snprintf(seeds[D + k].fields, sizeof seeds[D + k].fields, "{\"people_id\":\"%s\"}", key);
    }
    bool ok = seed_all(run, seeds, nseed);
    fsa_free(seeds);
    return ok;
}

/* The server autocloses about half of the jobs (seeded choice), at least one and, with two
 * devices or more, not all, while their devices are offline: through the admin API or the hook.
 * Without either the choice is still made (c->closed) but nothing is sent. */
static void ac_server_autoclose(fsa__run_t *run, ac_ctx_t *c)
{
    fsa__fleet_t *f = run->fleet;
    int D = f->ndev;
    uint64_t rs = f->seed ^ UINT64_C(0xA0C105E);
    int nclosed = 0;
    for (int i = 0; i < D; i++) {
        c->closed[i] = (fsa__mix(&rs) & 1) != 0 || (i == D - 1 && nclosed == 0);
        if (D >= 2 && i == D - 1 && nclosed == D - 1)
            c->closed[i] = false;
        if (!c->closed[i])
            continue;
        nclosed++;
        if (run->admin == NULL && run->hook == NULL)
            continue;
        char id[FSA_ID_BYTES], err[FSA__ERR_BYTES];
        ac_job(run, i, id, sizeof id);
        fsa_status_t st;
        if (run->admin != NULL) {
            st = fsa__admin_autoclose(run->admin, id, err, sizeof err);
            run->admin_ops++;
        } else {
            st = run_hook(run->hook, "autoclose", "jobneed", id, err, sizeof err);
        }
        if (st != FSA_OK) {
            run->res->how = run->admin != NULL ? "admin API" : "hook";
            fsa__inv_add(run->res, "autoclose_applied", FSA__INV_FAIL, "%s", err);
            c->closed[i] = false;
        }
    }
}

/* Device i's completion: a conflict the server won (its job autoclosed), else applied. False
 * when it was not recorded at all. */
static bool ac_tally_completion(const ac_ctx_t *c, const fsa__device_t *d, int i, tally_t *tc)
{
    const fsa__mark_t *m = mark_at(d, c->m_complete[i]);
    char det[200];
    if (m == NULL) {
        tally(tc, false, d->id, "its completion was not recorded");
        return false;
    }
    const fsa__dconflict_t *x = find_conflict(d, m->op_id);
    if (c->closed[i]) {
        bool ok = m->state == FSA__MARK_CONFLICT && x != NULL &&
                  strcmp(x->decision, "server-wins") == 0 &&
                  strcmp(x->server_status, "AUTOCLOSED") == 0;
        snprintf(det, sizeof det,
                 "completion of an autoclosed job: state %d, conflict %s, "
                 "decision %.16s, server %.20s",
                 m->state, x ? "recorded" : "missing", x ? x->decision : "-",
                 x ? x->server_status : "-");
        tally(tc, ok, d->id, det);
    } else {
        snprintf(det, sizeof det, "completion of an open job: state %d%s", m->state,
                 x ? ", with a conflict" : "");
        tally(tc, m->state == FSA__MARK_DONE && x == NULL, d->id, det);
    }
    return true;
}

/* Client side: the journals' own record of what happened to each device's job. */
static void ac_check_devices(fsa__run_t *run, const ac_ctx_t *c)
{
    fsa__fleet_t *f = run->fleet;
    tally_t tc = {0}, tl = {0};
    for (int i = 0; i < f->ndev; i++) {
        fsa__device_t *d = &f->dev[i];
        if (!ac_tally_completion(c, d, i, &tc))
            continue;
        char det[200];
        const char *want = c->closed[i] ? "AUTOCLOSED" : "COMPLETED";
        snprintf(det, sizeof det, "local view %.20s, server %s", c->local[i], want);
        tally(&tl, strcmp(c->local[i], want) == 0, d->id, det);
    }
    run->res->how =
        run->admin != NULL ? "devices (autoclose: admin API)" : "devices (autoclose: hook)";
    tally_done(run, "server_wins_recorded_as_conflict", &tc, "completions");
    tally_done(run, "local_views_converged", &tl, "devices");
}

/* Client side: in each race group exactly one device's transition applied, the others
 * converged. */
static void ac_check_races(fsa__run_t *run, const ac_ctx_t *c)
{
    fsa__fleet_t *f = run->fleet;
    tally_t tr = {0};
    for (int k = 0; k < c->races; k++) {
        int winners = 0, converged = 0, racers = 0;
        for (int i = k; i < f->ndev; i += c->races) {
            fsa__device_t *d = &f->dev[i];
            const fsa__mark_t *m = mark_at(d, c->m_race[i]);
            racers++;
            if (m == NULL)
                continue;
            const fsa__dconflict_t *x = find_conflict(d, m->op_id);
            if (m->state == FSA__MARK_DONE && x == NULL)
                winners++;
            else if (x != NULL && strcmp(x->resolution, "converged") == 0)
                converged++;
        }
        char det[160], id[FSA_ID_BYTES];
        ac_race(run, k, id, sizeof id);
        snprintf(det, sizeof det, "%d racers: %d applied, %d converged", racers, winners,
                 converged);
        tally(&tr, winners == 1 && converged == racers - 1, id, det);
    }
    tally_done(run, "one_winner_per_race", &tr, "races");
}

/* Server side: every job is AUTOCLOSED or COMPLETED as chosen, at version 3. */
static void ac_check_server_jobs(fsa__run_t *run, const ac_ctx_t *c)
{
    if (!need_state(run, "autoclosed_jobs_stay_autoclosed"))
        return;
    tally_t ts = {.server = true};
    for (int i = 0; i < run->fleet->ndev; i++) {
        char id[FSA_ID_BYTES], det[200];
        ac_job(run, i, id, sizeof id);
        int64_t v = 0;
        char *fields = NULL;
        if (!read_entity(run, "autoclosed_jobs_stay_autoclosed", FSA_TYPE_JOBNEED, id, &v,
                         &fields)) {
            ts.stopped = true;
            break;
        }
        const char *want = c->closed[i] ? "AUTOCLOSED" : "COMPLETED";
        bool ok = fsa__check_str_field(fields, "jobstatus", want, det, sizeof det) && v == 3;
        if (v != 3)
            snprintf(det, sizeof det, "version %" PRId64 ", expected 3 (seed, start, %s)", v,
                     c->closed[i] ? "autoclose" : "completion");
        tally(&ts, ok, id, det);
        fsa_free(fields);
    }
    tally_done(run, "autoclosed_jobs_stay_autoclosed", &ts, "jobs");
}

/* Server side: every shared job INPROGRESS, its transition applied once (version 2). */
static void ac_check_server_races(fsa__run_t *run, const ac_ctx_t *c)
{
    if (!need_state(run, "race_applied_once"))
        return;
    tally_t ts = {.server = true};
    for (int k = 0; k < c->races; k++) {
        char id[FSA_ID_BYTES], det[200];
        ac_race(run, k, id, sizeof id);
        int64_t v = 0;
        char *fields = NULL;
        if (!read_entity(run, "race_applied_once", FSA_TYPE_JOBNEED, id, &v, &fields)) {
            ts.stopped = true;
            break;
        }
        bool ok = fsa__check_str_field(fields, "jobstatus", "INPROGRESS", det, sizeof det);
        if (ok && v != 2) {
            ok = false;
            snprintf(det, sizeof det,
                     "version %" PRId64 ": the transition applied %" PRId64 " times", v, v - 1);
        }
        tally(&ts, ok, id, det);
        fsa_free(fields);
    }
    tally_done(run, "race_applied_once", &ts, "shared jobs");
}

/* Every device of the fleet takes part: its own job's people_id is its id and its race job's
 * the race group's scope key, so that with the devices file the simulator writes (fleet.h) a
 * device pulls its two jobs, not the fleet's. */
static void scn_autoclose(fsa__run_t *run)
{
    fsa__fleet_t *f = run->fleet;
    int D = f->ndev;
    run->res->devices = D;
    ac_ctx_t c = {.run = run, .races = fsa__races(D)};
    if (ac_ctx_alloc(run, &c, D) && ac_seed(run, &c)) {
        fsa__fleet_run(f, "pull", D, step_pull, NULL);
        fsa__fleet_run(f, "record start+race", D, ac_record_start, &c);
        fsa__fleet_run(f, "sync", D, step_drain, NULL);
        fsa__fleet_run(f, "offline: complete", D, ac_record_complete, &c);
        ac_server_autoclose(run, &c);
        fsa__fleet_run(f, "online: sync", D, ac_finish, &c);
        ac_check_devices(run, &c);
        ac_check_races(run, &c);
        ac_check_server_jobs(run, &c);
        ac_check_server_races(run, &c);
    }
    ac_ctx_free(&c);
}

/* ================= checkpoints ================= */

/*
 * One tour of C checkpoints; every checkpoint is updated twice, by two devices, on different
 * fields (expirytime, seqno), each update a group with the touch of the tour
 * (fieldsync_checkpoint_update). Both updates are recorded on the same base version, so one
 * of each pair is stale on the server: the group conflicts as a whole and is rebased (the server
 * changed other fields) and applied.
 */
typedef struct cp_ctx {
    fsa__run_t *run;
    int C, U;
} cp_ctx_t;

static void cp_child(const fsa__run_t *run, int k, char *out, size_t cap)
{
    entity_id(run, out, cap, "cp%d", k);
}

static void cp_record(fsa__fleet_t *f, fsa__device_t *d, void *arg)
{
    cp_ctx_t *c = arg;
    fieldsync_t *fs = NULL;
    if (!fsa__dev_open(f, d, &fs))
        return;
    for (int u = d->index; u < 2 * c->C; u += c->U) {
        int k = u / 2;
        char id[FSA_ID_BYTES], fields[64];
        cp_child(c->run, k, id, sizeof id);
        if (u % 2 == 0)
            snprintf(fields, sizeof fields, "{\"expirytime\":%d}", 100000 + k);
        else
            snprintf(fields, sizeof fields, "{\"seqno\":%d}", k + 1);
        fieldsync_rec_t rec;
        (void)fsa__dev_mark(f, d, fs, fieldsync_checkpoint_update(fs, id, fields, NULL, &rec), &rec,
                            2, "checkpoint update");
    }
    fsa__dev_close(f, d, fs);
}

/* The tour (the crew's, fleet.h: its checkpoints follow it into the scopes of the crew) and its
 * C checkpoints, on the server. */
static bool cp_seed(fsa__run_t *run, const cp_ctx_t *c, const char *tour)
{
    seed_ent_t *seeds = fsa_calloc((size_t)c->C + 1, sizeof *seeds);
    if (seeds == NULL) {
        fsa__inv_add(run->res, "scenario_ran", FSA__INV_FAIL, "out of memory");
        return false;
    }
    seeds[0].type = FSA_TYPE_JOBNEED;
    snprintf(seeds[0].id, sizeof seeds[0].id, "%s", tour);
    char crew[FSA_ID_BYTES];
    fsa__scope_key(run->fleet, "crew", -1, crew, sizeof crew);
    snprintf(seeds[0].fields, sizeof seeds[0].fields, "{\"people_id\":\"%s\"}", crew);
    for (int k = 0; k < c->C; k++) {
        seeds[k + 1].type = FSA_TYPE_JOBNEED;
        cp_child(run, k, seeds[k + 1].id, sizeof seeds[k + 1].id);
        snprintf(seeds[k + 1].fields, sizeof seeds[k + 1].fields, "{\"parent_id\":\"%s\"}", tour);
    }
    bool seeded = seed_all(run, seeds, (size_t)c->C + 1);
    fsa_free(seeds);
    return seeded;
}

/* Client side: the stale groups were rebased whole and no conflict is left open. */
static void cp_check_rebased(fsa__run_t *run, const cp_ctx_t *c)
{
    int64_t rebased = 0, open = 0;
    for (int i = 0; i < c->U; i++) {
        rebased += run->fleet->dev[i].rebased;
        open += run->fleet->dev[i].open_conflicts;
    }
    /* Every pair has exactly one stale update when two devices made it (a group of 2 ops); one
     * device alone records its second update on top of its first, which is not stale. */
    int64_t want_rebased = c->U >= 2 ? 2 * (int64_t)c->C : 0;
    fsa__inv_add(run->res, "stale_groups_rebased_whole",
                 rebased == want_rebased && open == 0 ? FSA__INV_PASS : FSA__INV_FAIL,
                 "%" PRId64 " ops rebased (expected %" PRId64 ": with two devices, one stale "
                 "group of 2 per checkpoint), %" PRId64 " conflicts left open",
                 rebased, want_rebased, open);
}

/* Server side: both updates of every checkpoint applied (version 3). */
static void cp_check_fields(fsa__run_t *run, const cp_ctx_t *c)
{
    if (!need_state(run, "checkpoint_fields_applied"))
        return;
    tally_t tf = {.server = true};
    for (int k = 0; k < c->C; k++) {
        char id[FSA_ID_BYTES], det[200];
        cp_child(run, k, id, sizeof id);
        int64_t v = 0;
        char *fields = NULL;
        if (!read_entity(run, "checkpoint_fields_applied", FSA_TYPE_JOBNEED, id, &v, &fields)) {
            tf.stopped = true;
            break;
        }
        bool ok = fsa__check_int_field(fields, "expirytime", 100000 + k, det, sizeof det);
        if (ok)
            ok = fsa__check_int_field(fields, "seqno", k + 1, det, sizeof det);
        if (ok && v != 3) {
            ok = false;
            snprintf(det, sizeof det, "version %" PRId64 ", expected 3 (seed + 2 updates)", v);
        }
        tally(&tf, ok, id, det);
        fsa_free(fields);
    }
    tally_done(run, "checkpoint_fields_applied", &tf, "checkpoints");
}

/* Server side: the tour was touched once by every applied group, its last checkpoint one of
 * the tour's. */
static void cp_check_tour(fsa__run_t *run, const cp_ctx_t *c, const char *tour)
{
    int64_t v = 0;
    char *fields = NULL;
    if (!need_state(run, "groups_whole") ||
        !read_entity(run, "groups_whole", FSA_TYPE_JOBNEED, tour, &v, &fields))
        return;
    char det[300];
    /* The tour is touched by every applied group, once: its version counts them. */
    int64_t want = 1 + 2 * (int64_t)c->C;
    char **names = fsa_calloc((size_t)c->C + 1, sizeof *names);
    char(*buf)[FSA_ID_BYTES] = fsa_calloc((size_t)c->C + 1, sizeof *buf);
    bool last_ok = false;
    if (names != NULL && buf != NULL) {
        for (int k = 0; k < c->C; k++) {
            cp_child(run, k, buf[k], sizeof buf[k]);
            names[k] = buf[k];
        }
        last_ok = fsa__check_member_in(fields, "other_info", "last_checkpoint",
                                       (const char *const *)names, (size_t)c->C, det, sizeof det);
    }
    if (v != want)
        fsa__inv_add(run->res, "groups_whole", FSA__INV_FAIL,
                     "tour version %" PRId64 ", expected %" PRId64
                     " (1 + one touch per applied update): a group was split or doubled",
                     v, want);
    else if (!last_ok)
        fsa__inv_add(run->res, "groups_whole", FSA__INV_FAIL, "tour: %s", det);
    else
        fsa__inv_add(run->res, "groups_whole", FSA__INV_PASS,
                     "tour version %" PRId64 " = 1 + %d group touches; %s", v, 2 * c->C, det);
    fsa_free(names);
    fsa_free(buf);
    fsa_free(fields);
}

static void scn_checkpoints(fsa__run_t *run)
{
    fsa__fleet_t *f = run->fleet;
    cp_ctx_t c = {.run = run, .C = run->ops > 0 ? run->ops : 1};
    c.U = f->ndev < 2 * c.C ? f->ndev : 2 * c.C;
    char tour[FSA_ID_BYTES];
    entity_id(run, tour, sizeof tour, "tour");
    if (!cp_seed(run, &c, tour))
        return;
    run->res->devices = c.U;
    fsa__fleet_run(f, "pull", c.U, step_pull, NULL);
    fsa__fleet_run(f, "record updates", c.U, cp_record, &c);
    fsa__fleet_run(f, "sync", c.U, step_drain, NULL);
    fsa__fleet_run(f, "finish", c.U, step_finish, NULL);
    cp_check_rebased(run, &c);
    cp_check_fields(run, &c);
    cp_check_tour(run, &c, tour);
}

/* ================= escalation / ticketlog / json: many devices, one field ================= */

typedef enum many_kind { MANY_ESCALATE, MANY_LOG, MANY_MERGE } many_kind_t;

typedef struct many_ctx {
    fsa__run_t *run;
    many_kind_t kind;
    int total;   /* ops (escalations, entries, keys) */
    int targets; /* entities they spread over */
    int devices;
    int sub; /* grouped (log, merge): entities per group of devices; 0: by entry (escalation) */
} many_ctx_t;

static void many_target(const many_ctx_t *c, int t, char *out, size_t cap)
{
    entity_id(c->run, out, cap, "%s%d", c->kind == MANY_MERGE ? "job" : "ticket", t);
}

/* The entity entry e goes to: escalations spread over the crew's tickets; entries and keys go
 * to one of the entities of their device's group (fleet.h), which no other group sees. */
static int many_target_of(const many_ctx_t *c, int e)
{
    if (c->sub == 0)
        return e % c->targets;
    int dev = e % c->devices;
    return (dev / FSA__GROUP_DEVICES) * c->sub + (e / c->devices) % c->sub;
}

/* The scope key of target t (fleet.h). */
static void many_key(const many_ctx_t *c, int t, char *out, size_t cap)
{
    if (c->sub == 0)
        fsa__scope_key(c->run->fleet, "crew", -1, out, cap);
    else
        fsa__scope_key(c->run->fleet, "grp", t / c->sub, out, cap);
}

/* Records the device's share, half before a sync and half after, so that devices interleave. */
static void many_record(fsa__fleet_t *f, fsa__device_t *d, many_ctx_t *c, int half)
{
    fieldsync_t *fs = NULL;
    if (!fsa__dev_open(f, d, &fs))
        return;
    int mine = 0;
    for (int e = d->index; e < c->total; e += c->devices, mine++) {
        if ((mine % 2) != half)
            continue;
        char id[FSA_ID_BYTES], it[FSA_ID_BYTES + 96];
        many_target(c, many_target_of(c, e), id, sizeof id);
        fieldsync_rec_t rec;
        if (c->kind == MANY_ESCALATE) {
            /* The library's escalation (level + 1 and a history entry, one group); the entry's
             * note names the device and the escalation, which the invariant checks. */
            char note[FSA_ID_BYTES + 24];
            snprintf(note, sizeof note, "%s#%d", d->id, e);
            (void)fsa__dev_mark(f, d, fs, fieldsync_ticket_escalate(fs, id, NULL, note, NULL, &rec),
                                &rec, 2, "escalation");
        } else if (c->kind == MANY_LOG) {
            item(it, sizeof it, d->id, e, "\"action\":\"noted\"");
            (void)fsa__dev_mark(f, d, fs, fieldsync_ticket_log(fs, id, it, NULL, &rec), &rec, 1,
                                "history entry");
        } else {
            char patch[FSA_ID_BYTES + 160];
            item(it, sizeof it, d->id, e, "");
            snprintf(patch, sizeof patch, "{\"k%d\":%s}", e, it);
            (void)fsa__dev_mark(f, d, fs, fieldsync_job_merge(fs, id, patch, NULL, &rec), &rec, 1,
                                "merge into other_info");
        }
    }
    if (half == 0)
        (void)fsa__dev_drain(f, d, fs, DRAIN_ROUNDS);
    fsa__dev_close(f, d, fs);
}

static void many_first(fsa__fleet_t *f, fsa__device_t *d, void *arg)
{
    many_record(f, d, arg, 0);
}

static void many_second(fsa__fleet_t *f, fsa__device_t *d, void *arg)
{
    many_record(f, d, arg, 1);
}

/* An entity's fields are at most FSA_LIMIT_FIELDS_BYTES (1 MiB): a history entry or a key is
 * about 60 bytes, so past this many a second entity takes the rest. */
#define ENTRIES_PER_ENTITY 8000

/* The targets on the server, each in the scope of the devices that write to it. */
static bool many_seed(fsa__run_t *run, const many_ctx_t *c)
{
    int targets = c->targets;
    many_kind_t kind = c->kind;
    seed_ent_t *seeds = fsa_calloc((size_t)targets, sizeof *seeds);
    if (seeds == NULL) {
        fsa__inv_add(run->res, "scenario_ran", FSA__INV_FAIL, "out of memory");
        return false;
    }
    for (int t = 0; t < targets; t++) {
        seeds[t].type = kind == MANY_MERGE ? FSA_TYPE_JOBNEED : FSA_TYPE_TICKET;
        many_target(c, t, seeds[t].id, sizeof seeds[t].id);
        char key[FSA_ID_BYTES];
        many_key(c, t, key, sizeof key);
        snprintf(seeds[t].fields, sizeof seeds[t].fields, "{\"%s\":\"%s\"}",
                 kind == MANY_MERGE ? "people_id" : "assignedto", key);
    }
    bool seeded = seed_all(run, seeds, (size_t)targets);
    fsa_free(seeds);
    return seeded;
}

/* Server side: every target holds its entries (level and history, entries, keys) and its
 * version counts each op once. */
static void many_check_server(fsa__run_t *run, const many_ctx_t *c, const char *name)
{
    fsa__fleet_t *f = run->fleet;
    int total = c->total, targets = c->targets;
    many_kind_t kind = c->kind;
    tally_t tv = {.server = true}, tc = {.server = true};
    const char **devs = fsa_calloc((size_t)total + 1, sizeof *devs);
    int64_t *ns = fsa_calloc((size_t)total + 1, sizeof *ns);
    for (int t = 0; devs != NULL && ns != NULL && t < targets; t++) {
        size_t n = 0;
        for (int e = 0; e < total; e++) {
            if (many_target_of(c, e) != t)
                continue;
            devs[n] = f->dev[e % c->devices].id;
            ns[n++] = e;
        }
        char id[FSA_ID_BYTES], det[400];
        many_target(c, t, id, sizeof id);
        int64_t v = 0;
        char *fields = NULL;
        if (!read_entity(run, name, kind == MANY_MERGE ? FSA_TYPE_JOBNEED : FSA_TYPE_TICKET, id, &v,
                         &fields)) {
            tc.stopped = tv.stopped = true;
            break;
        }
        bool ok;
        if (kind == MANY_ESCALATE) {
            ok = fsa__check_int_field(fields, "level", (int64_t)n, det, sizeof det);
            if (ok)
                ok = fsa__check_log(fields, "ticketlog", "ticket_history", devs, ns, n, det,
                                    sizeof det);
        } else if (kind == MANY_LOG) {
            ok =
                fsa__check_log(fields, "ticketlog", "ticket_history", devs, ns, n, det, sizeof det);
        } else {
            ok = fsa__check_keys(fields, "other_info", "k", devs, ns, n, det, sizeof det);
        }
        tally(&tc, ok, id, det);
        /* Every op applied exactly once: an escalation is two ops, the others one. */
        int64_t want = 1 + (int64_t)n * (kind == MANY_ESCALATE ? 2 : 1);
        snprintf(det, sizeof det, "version %" PRId64 ", expected %" PRId64, v, want);
        tally(&tv, v == want, id, det);
        fsa_free(fields);
    }
    if (devs == NULL || ns == NULL)
        fsa__inv_add(run->res, name, FSA__INV_FAIL, "out of memory");
    else {
        tally_done(run, name, &tc, kind == MANY_MERGE ? "jobs" : "tickets");
        tally_done(run, "each_op_applied_once", &tv, "entity versions");
    }
    fsa_free(devs);
    fsa_free(ns);
}

/* targets: the escalations' tickets; 0 for entries and keys, which go to their group's entities:
 * as many per group of devices as its entries need (ENTRIES_PER_ENTITY). */
static void scn_many(fsa__run_t *run, many_kind_t kind, int total, int targets)
{
    fsa__fleet_t *f = run->fleet;
    many_ctx_t c = {.run = run, .kind = kind, .total = total, .targets = targets};
    c.devices = f->ndev < total ? f->ndev : total;
    if (targets == 0) {
        int groups = (c.devices + FSA__GROUP_DEVICES - 1) / FSA__GROUP_DEVICES;
        int per_dev = (total + c.devices - 1) / c.devices;
        int in_group = c.devices < FSA__GROUP_DEVICES ? c.devices : FSA__GROUP_DEVICES;
        c.sub = (per_dev * in_group + ENTRIES_PER_ENTITY - 1) / ENTRIES_PER_ENTITY;
        c.targets = groups * c.sub;
    }
    if (!many_seed(run, &c))
        return;
    run->res->devices = c.devices;
    fsa__fleet_run(f, "pull", c.devices, step_pull, NULL);
    fsa__fleet_run(f, "record, sync", c.devices, many_first, &c);
    fsa__fleet_run(f, "record more", c.devices, many_second, &c);
    fsa__fleet_run(f, "finish", c.devices, step_finish, NULL);

    int64_t conflicts = 0;
    for (int i = 0; i < c.devices; i++)
        conflicts += f->dev[i].conflict + f->dev[i].rejected;
    fsa__inv_add(run->res, "never_conflicts", conflicts == 0 ? FSA__INV_PASS : FSA__INV_FAIL,
                 "%" PRId64 " conflicts or rejections (increment, append and merge never "
                 "conflict)",
                 conflicts);
    const char *name = kind == MANY_ESCALATE ? "level_and_history_match"
                       : kind == MANY_LOG    ? "all_entries_present_once"
                                             : "all_keys_present";
    if (!need_state(run, name))
        return;
    many_check_server(run, &c, name);
}

static void scn_escalation(fsa__run_t *run)
{
    int total = run->ops > 0 ? run->ops : 1;
    int targets = total / 10 > 0 ? total / 10 : 1;
    scn_many(run, MANY_ESCALATE, total, targets);
}

static void scn_ticketlog(fsa__run_t *run)
{
    int total = 2 * run->ops > run->fleet->ndev ? 2 * run->ops : run->fleet->ndev;
    scn_many(run, MANY_LOG, total, 0);
}

static void scn_json(fsa__run_t *run)
{
    int total = run->ops > run->fleet->ndev ? run->ops : run->fleet->ndev;
    scn_many(run, MANY_MERGE, total, 0);
}

/* ================= attendance ================= */

typedef struct att_rec {
    char id[FSA_UUID_STR_LEN];
    int dev;
    bool checkout;
} att_rec_t;

typedef struct att_ctx {
    const fsa__run_t *run;
    int pairs;
    att_rec_t **recs; /* per device: 2 * pairs */
    int *nrecs;
} att_ctx_t;

static void att_record(fsa__fleet_t *f, fsa__device_t *d, att_ctx_t *c, bool checkout)
{
    fieldsync_t *fs = NULL;
    if (!fsa__dev_open(f, d, &fs))
        return;
    att_rec_t *r = &c->recs[d->index][c->nrecs[d->index]];
    if (fsa_uuid4(fsa_sim_port(d->sim), r->id) != FSA_OK) {
        fsa__dev_error(d, "no random for an attendance id");
        fsa__dev_close(f, d, fs);
        return;
    }
    char people[PEOPLE_BYTES], site[16];
    people_of(c->run, d->id, people, sizeof people);
    snprintf(site, sizeof site, "site%d", d->index % 7);
    fieldsync_position_t pos = {12.9 + (double)(d->index % 100) / 1000.0,
                                77.5 + (double)(d->index % 97) / 1000.0, 5};
    fieldsync_rec_t rec;
    if (fsa__dev_mark(f, d, fs,
                      fieldsync_attendance(fs, !checkout, people, site, &pos, r->id, NULL, &rec),
                      &rec, 1, checkout ? "check-out" : "check-in")) {
        r->dev = d->index;
        r->checkout = checkout;
        c->nrecs[d->index]++;
    }
    /* Offline: the attempt fails and the backoff is persisted. */
    (void)fsa__dev_sync(f, d, fs, false);
    fsa__dev_close(f, d, fs);
}

static void att_checkin(fsa__fleet_t *f, fsa__device_t *d, void *arg)
{
    att_record(f, d, arg, false);
}

static void att_checkout(fsa__fleet_t *f, fsa__device_t *d, void *arg)
{
    att_record(f, d, arg, true);
}

/* Half of the fleet comes online between a check-in and its check-out; the other half stays
 * offline through the whole shift and syncs only at the end. */
static void att_online(fsa__fleet_t *f, fsa__device_t *d, void *arg)
{
    (void)arg;
    if (d->index % 2 == 1)
        return;
    step_drain(f, d, NULL);
}

/* A device id and its index, sorted by id: who an attendance's people_id ("p-ID") names. */
typedef struct who_ent {
    const char *id;
    int index;
} who_ent_t;

static int who_cmp(const void *a, const void *b)
{
    return strcmp(((const who_ent_t *)a)->id, ((const who_ent_t *)b)->id);
}

/* no_extra_attendance through the protocol: the attendances of the fleet's people since the
 * scenario began, as the reader pulled them, are exactly the recorded ones. One pass over the
 * reader's attendances (a query per person would scan them once per device). */
static void count_attendance(fsa__run_t *run, const att_ctx_t *c, int64_t expected)
{
    fsa__fleet_t *f = run->fleet;
    who_ent_t *who = fsa_calloc((size_t)f->ndev, sizeof *who);
    int64_t *mine = fsa_calloc((size_t)f->ndev, sizeof *mine);
    if (who == NULL || mine == NULL) {
        fsa_free(who);
        fsa_free(mine);
        fsa__inv_add(run->res, "no_extra_attendance", FSA__INV_FAIL, "out of memory");
        return;
    }
    for (int i = 0; i < f->ndev; i++)
        who[i] = (who_ent_t){f->dev[i].id, i};
    qsort(who, (size_t)f->ndev, sizeof *who, who_cmp);
    int64_t found = 0;
    char after[FSA_UUID_STR_LEN + 8] = "";
    bool failed = false;
    for (bool more = true; more && !failed;) {
        fieldsync_query_t q = FIELDSYNC_QUERY_INIT;
        q.type = "attendance";
        q.after_id = after[0] ? after : NULL;
        q.limit = 1000;
        char *json = NULL;
        if (fieldsync_list(run->reader_fs[1], &q, &json) != FIELDSYNC_OK) {
            run->res->how = "pulls";
            fsa__inv_add(run->res, "no_extra_attendance", FSA__INV_FAIL,
                         "the reader cannot query its view: %s",
                         fieldsync_errmsg(run->reader_fs[1]));
            fieldsync_free(json);
            failed = true;
            break;
        }
        cJSON *root = cJSON_Parse(json);
        fieldsync_free(json);
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, "entities"))
        {
            const cJSON *fl = cJSON_GetObjectItemCaseSensitive(e, "fields");
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(fl, "people_id");
            char mark[sizeof run->prefix + 4];
            int ml = snprintf(mark, sizeof mark, "%sp-", run->prefix);
            if (!cJSON_IsString(p) || strncmp(p->valuestring, mark, (size_t)ml) != 0)
                continue;
            who_ent_t key = {p->valuestring + ml, 0};
            const who_ent_t *w = bsearch(&key, who, (size_t)f->ndev, sizeof *who, who_cmp);
            if (w == NULL)
                continue; /* not one of the fleet's people */
            mine[w->index]++;
            found++;
        }
        const cJSON *nx = cJSON_GetObjectItemCaseSensitive(root, "next_after");
        more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "more")) && cJSON_IsString(nx) &&
               strlen(nx->valuestring) < sizeof after;
        if (more)
            snprintf(after, sizeof after, "%s", nx->valuestring);
        cJSON_Delete(root);
    }
    char first[PEOPLE_BYTES + 80] = "";
    for (int i = 0; i < f->ndev && !failed; i++)
        if (mine[i] != c->nrecs[i] && first[0] == '\0') {
            char who_i[PEOPLE_BYTES];
            people_of(run, f->dev[i].id, who_i, sizeof who_i);
            snprintf(first, sizeof first, "; first: %s has %" PRId64 ", recorded %d", who_i,
                     mine[i], c->nrecs[i]);
        }
    fsa_free(who);
    fsa_free(mine);
    if (failed)
        return;
    run->res->how = "pulls";
    fsa__inv_add(run->res, "no_extra_attendance",
                 found == expected && first[0] == '\0' ? FSA__INV_PASS : FSA__INV_FAIL,
                 "the server holds %" PRId64 " attendances of this run's people, for %" PRId64
                 " recorded%s",
                 found, expected, first);
}

static void scn_attendance(fsa__run_t *run)
{
    fsa__fleet_t *f = run->fleet;
    int D = f->ndev;
    att_ctx_t c = {.run = run, .pairs = run->ops / D > 0 ? run->ops / D : 1};
    if (c.pairs > 50)
        c.pairs = 50;
    c.recs = fsa_calloc((size_t)D, sizeof *c.recs); // NOLINT(bugprone-sizeof-expression)
    c.nrecs = fsa_calloc((size_t)D, sizeof *c.nrecs);
    bool ok = c.recs != NULL && c.nrecs != NULL;
    for (int i = 0; ok && i < D; i++)
        ok = (c.recs[i] = fsa_calloc(2 * (size_t)c.pairs, sizeof **c.recs)) != NULL;
    if (!ok) {
        fsa__inv_add(run->res, "scenario_ran", FSA__INV_FAIL, "out of memory");
        goto out;
    }
    for (int p = 0; p < c.pairs; p++) {
        fsa__fleet_run(f, "offline: check in", D, att_checkin, &c);
        fsa__fleet_run(f, "half online", D, att_online, &c);
        fsa__fleet_run(f, "offline: check out", D, att_checkout, &c);
    }
    fsa__fleet_run(f, "online: finish", D, step_finish, NULL);

    int64_t conflicts = 0, expected = 0;
    for (int i = 0; i < D; i++) {
        conflicts += f->dev[i].conflict + f->dev[i].rejected + f->dev[i].open_conflicts;
        expected += c.nrecs[i];
    }
    fsa__inv_add(run->res, "no_attendance_conflict", conflicts == 0 ? FSA__INV_PASS : FSA__INV_FAIL,
                 "%" PRId64 " conflicts or rejections for %" PRId64 " attendances", conflicts,
                 expected);
    fsa__inv_add(run->res, "every_shift_recorded",
                 expected == 2 * (int64_t)c.pairs * D ? FSA__INV_PASS : FSA__INV_FAIL,
                 "%" PRId64 " of %" PRId64 " check-ins and check-outs recorded", expected,
                 2 * (int64_t)c.pairs * D);
    if (need_state_of(run, "every_attendance_exists_once", 1)) {
        tally_t t = {.server = true};
        bool broke = false;
        for (int i = 0; i < D && !broke; i++) {
            for (int k = 0; k < c.nrecs[i]; k++) {
                att_rec_t *r = &c.recs[i][k];
                int64_t v = 0;
                char *fields = NULL, det[200], who[PEOPLE_BYTES];
                if (!read_entity(run, "every_attendance_exists_once", FSA_TYPE_ATTENDANCE, r->id,
                                 &v, &fields)) {
                    broke = true;
                    break;
                }
                people_of(run, f->dev[i].id, who, sizeof who);
                bool good =
                    fsa__check_str_field(fields, "kind", r->checkout ? "checkout" : "checkin", det,
                                         sizeof det) &&
                    fsa__check_str_field(fields, "people_id", who, det, sizeof det);
                if (good && v != 1) {
                    good = false;
                    snprintf(det, sizeof det, "version %" PRId64 ": changed after its create", v);
                }
                tally(&t, good, r->id, det);
                fsa_free(fields);
            }
        }
        if (!broke)
            tally_done(run, "every_attendance_exists_once", &t, "attendances");
        fsa__scenario_stats_after(run);
        if (run->res->have_server) {
            run->res->how = "admin API";
            fsa__inv_add(run->res, "no_extra_attendance",
                         run->res->s_delta.entities == expected ? FSA__INV_PASS : FSA__INV_FAIL,
                         "the server gained %" PRId64 " entities for %" PRId64
                         " attendances recorded",
                         run->res->s_delta.entities, expected);
        } else if (run->admin == NULL || f->site_reader != NULL) {
            /* No counters (or one process's of several): through the site reader's pull. */
            if (reader_pull(run, "no_extra_attendance", 1))
                count_attendance(run, &c, expected);
        } else {
            fsa__inv_add(run->res, "no_extra_attendance", FSA__INV_NOT_CHECKED,
                         "%s, and no --site-reader was given", counters_unknown(run));
        }
    }
out:
    for (int i = 0; c.recs != NULL && i < D; i++)
        fsa_free(c.recs[i]);
    fsa_free(c.recs);
    fsa_free(c.nrecs);
}

/* ================= flaky ================= */

/*
 * Everything at once on one counter, one history and one job: a server with faults (5xx, 429
 * with Retry-After, responses dropped after commit, connections reset, latency), devices whose
 * clocks are off by hours (the server answers clock_skew and the engine corrects its offset), and
 * devices that crash mid-sync (a forked child SIGKILLed with its batch in flight) and reboot.
 */
typedef struct fl_ctx {
    fsa__run_t *run;
    int rounds;
    int round;
    bool sync_after;
    att_rec_t *atts; /* per device: rounds */
    int *natts;
    int64_t *shift; /* per device: how far its clock is off */
} fl_ctx_t;

static bool fl_crasher(int i)
{
    return i % 7 == 3 && i / 7 < 64;
}

static void fl_record(fsa__fleet_t *f, fsa__device_t *d, void *arg)
{
    fl_ctx_t *c = arg;
    fieldsync_t *fs = NULL;
    if (!fsa__dev_open(f, d, &fs))
        return;
    char count[FSA_ID_BYTES], log[FSA_ID_BYTES], job[FSA_ID_BYTES], it[FSA_ID_BYTES + 96];
    int g = d->index / FSA__GROUP_DEVICES;
    entity_id(c->run, count, sizeof count, "count%d", g);
    entity_id(c->run, log, sizeof log, "log%d", g);
    entity_id(c->run, job, sizeof job, "job%d", g);
    int64_t n = (int64_t)d->index * 1000 + c->round;
    fieldsync_rec_t rec;
    /* An increment has no workflow verb: the generic op builder records it. */
    char op[FSA_ID_BYTES + 128];
    snprintf(op, sizeof op,
             "{\"kind\":\"increment\",\"type\":\"ticket\",\"id\":\"%s\",\"field\":\"level\","
             "\"by\":1}",
             count);
    (void)fsa__dev_mark(f, d, fs, fieldsync_record(fs, op, NULL, &rec), &rec, 1, "increment");
    item(it, sizeof it, d->id, n, "");
    (void)fsa__dev_mark(f, d, fs, fieldsync_ticket_log(fs, log, it, NULL, &rec), &rec, 1, "append");
    char patch[FSA_ID_BYTES + 160];
    snprintf(patch, sizeof patch, "{\"k%" PRId64 "\":%s}", n, it);
    (void)fsa__dev_mark(f, d, fs, fieldsync_job_merge(fs, job, patch, NULL, &rec), &rec, 1,
                        "merge");
    att_rec_t *a = &c->atts[(size_t)d->index * (size_t)c->rounds + (size_t)c->natts[d->index]];
    if (fsa_uuid4(fsa_sim_port(d->sim), a->id) == FSA_OK) {
        /* In a flaky place the device often has no position fix either (PROTOCOL.md section 7,
         * amendment 2): every other round is recorded without one. */
        char people[PEOPLE_BYTES];
        people_of(c->run, d->id, people, sizeof people);
        fieldsync_position_t pos = {1.5, 2.5, -1};
        bool checkin = c->round % 2 == 0;
        if (fsa__dev_mark(f, d, fs,
                          fieldsync_attendance(fs, checkin, people, "s1",
                                               (c->round / 2) % 2 ? NULL : &pos, a->id, NULL, &rec),
                          &rec, 1, "attendance")) {
            a->dev = d->index;
            a->checkout = c->round % 2 != 0;
            c->natts[d->index]++;
        }
    }
    /* One sync, not a drain: faults may leave ops pending for a later round. The crashers keep
     * their last round pending for the crash, device 0 for its restore (fl_restore). */
    if (c->sync_after && !((fl_crasher(d->index) || d->index == 0) && c->round == c->rounds - 1))
        (void)fsa__dev_sync(f, d, fs, true);
    fsa__dev_close(f, d, fs);
}

/* counter_exact, history_entries_once and json_keys_present over every group's entities: one
 * invariant each, the first wrong entity in its details. */
static void fl_check_groups(fsa__run_t *run, const fl_ctx_t *c, int groups)
{
    fsa__fleet_t *f = run->fleet;
    int D = f->ndev;
    size_t cap = (size_t)FSA__GROUP_DEVICES * (size_t)c->rounds + 1;
    const char **devs = fsa_calloc(cap, sizeof *devs);
    int64_t *ns = fsa_calloc(cap, sizeof *ns);
    if (devs == NULL || ns == NULL) {
        fsa__inv_add(run->res, "counter_exact", FSA__INV_FAIL, "out of memory");
        fsa_free(devs);
        fsa_free(ns);
        return;
    }
    tally_t tc = {.server = true}, th = {.server = true}, tj = {.server = true};
    int64_t total_all = 0;
    int g = 0;
    for (; g < groups; g++) {
        int lo = g * FSA__GROUP_DEVICES,
            hi = lo + FSA__GROUP_DEVICES < D ? lo + FSA__GROUP_DEVICES : D;
        int64_t total = (int64_t)(hi - lo) * c->rounds;
        total_all += total;
        size_t n = 0;
        for (int i = lo; i < hi; i++)
            for (int r = 0; r < c->rounds; r++) {
                devs[n] = f->dev[i].id;
                ns[n++] = (int64_t)i * 1000 + r;
            }
        char id[FSA_ID_BYTES], det[400];
        int64_t v = 0;
        char *fields = NULL;
        entity_id(run, id, sizeof id, "count%d", g);
        if (!read_entity(run, "counter_exact", FSA_TYPE_TICKET, id, &v, &fields))
            break;
        bool ok = fsa__check_int_field(fields, "level", total, det, sizeof det);
        if (ok && v != 1 + total) {
            ok = false;
            snprintf(det, sizeof det, "version %" PRId64 ", expected %" PRId64, v, 1 + total);
        }
        tally(&tc, ok, id, det);
        fsa_free(fields);
        entity_id(run, id, sizeof id, "log%d", g);
        if (!read_entity(run, "history_entries_once", FSA_TYPE_TICKET, id, &v, &fields))
            break;
        tally(&th,
              fsa__check_log(fields, "ticketlog", "ticket_history", devs, ns, n, det, sizeof det),
              id, det);
        fsa_free(fields);
        entity_id(run, id, sizeof id, "job%d", g);
        if (!read_entity(run, "json_keys_present", FSA_TYPE_JOBNEED, id, &v, &fields))
            break;
        tally(&tj, fsa__check_keys(fields, "other_info", "k", devs, ns, n, det, sizeof det), id,
              det);
        fsa_free(fields);
    }
    /* A read that failed ended the loop (and said so): what it did not reach is not checked. */
    tc.stopped = th.stopped = tj.stopped = g < groups;
    char what[64];
    snprintf(what, sizeof what, "counters (%" PRId64 " increments)", total_all);
    tally_done(run, "counter_exact", &tc, what);
    tally_done(run, "history_entries_once", &th, "histories");
    tally_done(run, "json_keys_present", &tj, "jobs");
    fsa_free(devs);
    fsa_free(ns);
}

/* A counter, a log and a job per group of devices (fleet.h), which only that group sees. */
static bool fl_seed(fsa__run_t *run, int groups)
{
    seed_ent_t *seeds = fsa_calloc(3 * (size_t)groups, sizeof *seeds);
    if (seeds == NULL) {
        fsa__inv_add(run->res, "scenario_ran", FSA__INV_FAIL, "out of memory");
        return false;
    }
    for (int g = 0; g < groups; g++) {
        seed_ent_t *e = &seeds[3 * g];
        char key[FSA_ID_BYTES];
        fsa__scope_key(run->fleet, "grp", g, key, sizeof key);
        e[0].type = FSA_TYPE_TICKET;
        entity_id(run, e[0].id, sizeof e[0].id, "count%d", g);
        e[1].type = FSA_TYPE_TICKET;
        entity_id(run, e[1].id, sizeof e[1].id, "log%d", g);
        e[2].type = FSA_TYPE_JOBNEED;
        entity_id(run, e[2].id, sizeof e[2].id, "job%d", g);
        snprintf(e[0].fields, sizeof e[0].fields, "{\"assignedto\":\"%s\"}", key);
        snprintf(e[1].fields, sizeof e[1].fields, "{\"assignedto\":\"%s\"}", key);
        snprintf(e[2].fields, sizeof e[2].fields, "{\"people_id\":\"%s\"}", key);
    }
    bool seeded = seed_all(run, seeds, 3 * (size_t)groups);
    fsa_free(seeds);
    return seeded;
}

/* Clocks off by 1-4 hours, ahead or behind, on two devices in five; returns how many. */
static int fl_skew_clocks(fsa__fleet_t *f, fl_ctx_t *c)
{
    int skewed = 0;
    for (int i = 0; i < f->ndev; i++) {
        int64_t h = 1 + i % 4;
        if (i % 5 == 1 || i % 5 == 2) {
            c->shift[i] = (i % 5 == 1 ? 1 : -1) * h * 3600 * 1000;
            fsa__dev_shift_clock(&f->dev[i], c->shift[i]);
            skewed++;
        }
    }
    return skewed;
}

/* The crashes: in the main thread, with no worker running (fork); half of the crashers are
 * killed before sending their batch, half while sending it. */
static void fl_crash(fsa__run_t *run)
{
    fsa__fleet_t *f = run->fleet;
    int crashers = 0, before = 0, before_landed = 0, during = 0, during_landed = 0, broken = 0;
    for (int i = 0; i < f->ndev; i++) {
        if (!fl_crasher(i))
            continue;
        bool before_send = crashers++ % 2 == 0;
        int r = fsa__dev_crash(f, &f->dev[i], before_send);
        before += before_send;
        during += !before_send;
        before_landed += before_send && r == 1;
        during_landed += !before_send && r == 1;
        broken += r < 0;
    }
    /* A kill before sending always lands; one while sending lands unless the child's whole
     * cycle was faster than the random delay (then it simply finished: reported, not failed). */
    if (crashers > 0)
        fsa__inv_add(run->res, "crashes_mid_sync",
                     broken == 0 && before_landed == before ? FSA__INV_PASS : FSA__INV_FAIL,
                     "SIGKILLed with a batch in flight: %d of %d before sending it, %d of %d "
                     "while sending it (the others finished their cycle first); %d never reached "
                     "their push",
                     before_landed, before, during_landed, during, broken);
}

/* Device 0 restored from a backup taken before it synced its last round (fsa__dev_restore_resend):
 * the server answers every op it had applied already as a duplicate and applies nothing twice
 * (PROTOCOL.md sections 3 and 6). A server that applies a resent op again fails here, and its
 * counter, history and keys fail counter_exact and the rest. */
static void fl_restore(fsa__run_t *run)
{
    fsa__device_t *d = &run->fleet->dev[0];
    fsa__resend_t r;
    if (!fsa__dev_restore_resend(run->fleet, d, &r)) {
        fsa__inv_add(run->res, "resend_is_duplicate", FSA__INV_FAIL, "%s", d->error);
        return;
    }
    /* Each op the copy held was answered once more: a duplicate when the drain before had got it
     * through, else applied now; never a conflict or a rejection. */
    int64_t through = r.held - r.left;
    if (through <= 0) {
        /* Nothing got through before the copy was put back: nothing was sent twice. */
        fsa__inv_add(run->res, "resend_is_duplicate", FSA__INV_FAIL,
                     "%s: the drain before the restore got none of its %" PRId64
                     " pending ops through, so nothing was sent twice%s%s",
                     d->id, r.held, d->error[0] != '\0' ? ": " : "", d->error);
        return;
    }
    bool ok = r.other == 0 && r.duplicate + r.applied == r.held && r.duplicate >= through;
    fsa__inv_add(run->res, "resend_is_duplicate", ok ? FSA__INV_PASS : FSA__INV_FAIL,
                 "%s restored from a copy holding %" PRId64 " pending ops (%" PRId64
                 " through before the copy was put back): answered %" PRId64 " duplicate, %" PRId64
                 " applied, %" PRId64 " conflict or rejected",
                 d->id, r.held, through, r.duplicate, r.applied, r.other);
}

/* Client side: the offset each skewed device's engine learned cancels its clock's error; no op
 * was answered with a conflict or a rejection. */
static void fl_check_devices(fsa__run_t *run, const fl_ctx_t *c, int skewed)
{
    fsa__fleet_t *f = run->fleet;
    tally_t tk = {0};
    /* The server's clock less the simulator's, as the first device whose clock was not shifted
     * and that learned an offset has it (0 when none did): a server may keep its own time
     * (PROTOCOL.md section 5 tolerates 300 s), and the offsets then cancel that too. */
    int64_t server_ahead = 0;
    for (int i = 0; i < f->ndev; i++)
        if (c->shift[i] == 0 && f->dev[i].clock_offset_ms != 0) {
            server_ahead = f->dev[i].clock_offset_ms + f->dev[i].clock_error_ms;
            break;
        }
    for (int i = 0; i < f->ndev; i++) {
        if (c->shift[i] == 0)
            continue;
        /* The offset the engine learned must cancel the clock's error: the shift of hours plus
         * the virtual time the device spent waiting (backoff) ahead of real time, and the
         * server's own difference. */
        char det[200];
        int64_t err = f->dev[i].clock_offset_ms + f->dev[i].clock_error_ms - server_ahead;
        snprintf(det, sizeof det,
                 "clock shifted by %" PRId64 " ms, off by %" PRId64 " ms at the end, learned "
                 "offset %" PRId64 " ms",
                 c->shift[i], f->dev[i].clock_error_ms, f->dev[i].clock_offset_ms);
        tally(&tk, err > -60000 && err < 60000, f->dev[i].id, det);
    }
    if (skewed > 0)
        tally_done(run, "skewed_clocks_corrected", &tk, "devices with clocks off by hours");
    /* Every answer counts, not only what devices keep: the resolver retries a conflict on an
     * increment, an append or a merge at once, so a server that answered one with a conflict
     * leaves nothing open. */
    int64_t conflicts = 0;
    for (int i = 0; i < f->ndev; i++)
        conflicts += f->dev[i].conflict + f->dev[i].rejected + f->dev[i].open_conflicts;
    fsa__inv_add(run->res, "never_conflicts", conflicts == 0 ? FSA__INV_PASS : FSA__INV_FAIL,
                 "%" PRId64 " conflicts or rejections (increment, append, merge and a new "
                 "attendance never conflict)",
                 conflicts);
}

/* Server side: every recorded attendance exists once, of its kind, never changed. */
static void fl_check_attendance(fsa__run_t *run, const fl_ctx_t *c)
{
    tally_t ta = {.server = true};
    for (int i = 0; i < run->fleet->ndev; i++)
        for (int k = 0; k < c->natts[i]; k++) {
            int64_t v = 0;
            char *fields = NULL, det[200];
            const att_rec_t *a = &c->atts[(size_t)i * (size_t)c->rounds + (size_t)k];
            char err[FSA__ERR_BYTES];
            fsa_status_t st =
                get_entity(run, FSA_TYPE_ATTENDANCE, a->id, &v, &fields, err, sizeof err);
            if (st != FSA_OK)
                tally(&ta, false, a->id, err);
            else {
                bool ok = fsa__check_str_field(fields, "kind", a->checkout ? "checkout" : "checkin",
                                               det, sizeof det);
                if (ok && v != 1) {
                    ok = false;
                    snprintf(det, sizeof det, "version %" PRId64 ": changed after its create", v);
                }
                tally(&ta, ok, a->id, det);
            }
            fsa_free(fields);
        }
    tally_done(run, "attendance_exists_once", &ta, "attendances");
}

static void scn_flaky(fsa__run_t *run)
{
    fsa__fleet_t *f = run->fleet;
    int D = f->ndev;
    fl_ctx_t c = {.run = run};
    c.rounds = 2 * run->ops / D;
    if (c.rounds < 2)
        c.rounds = 2;
    if (c.rounds > 20)
        c.rounds = 20;
    c.atts = fsa_calloc((size_t)D * (size_t)c.rounds, sizeof *c.atts);
    c.natts = fsa_calloc((size_t)D, sizeof *c.natts);
    c.shift = fsa_calloc((size_t)D, sizeof *c.shift);
    int groups = (D + FSA__GROUP_DEVICES - 1) / FSA__GROUP_DEVICES;
    if (c.atts == NULL || c.natts == NULL || c.shift == NULL) {
        fsa__inv_add(run->res, "scenario_ran", FSA__INV_FAIL, "out of memory");
    } else if (fl_seed(run, groups)) {
        int skewed = fl_skew_clocks(f, &c);
        fsa__fleet_run(f, "pull", D, step_pull, NULL);
        for (c.round = 0; c.round < c.rounds; c.round++) {
            c.sync_after = true;
            fsa__fleet_run(f, "record, sync under faults", D, fl_record, &c);
        }
        fl_crash(run);
        fl_restore(run);
        fsa__fleet_run(f, "reboot, finish", D, step_finish, NULL);
        fl_check_devices(run, &c, skewed);
        if (need_state(run, "counter_exact")) {
            fl_check_groups(run, &c, groups);
            if (need_state_of(run, "attendance_exists_once", 1))
                fl_check_attendance(run, &c);
        }
    }
    fsa_free(c.atts);
    fsa_free(c.natts);
    fsa_free(c.shift);
}

/* ================= the table ================= */

static const fsa__scenario_t scenarios[] = {
    {"autoclose", "server autocloses jobs while devices are offline; server wins, recorded",
     scn_autoclose, false, true},
    {"checkpoints", "one tour, every checkpoint updated by two devices, grouped with the parent",
     scn_checkpoints, false, false},
    {"escalation", "escalations across tickets: level +1 and a history entry, one group",
     scn_escalation, false, false},
    {"ticketlog", "every device appends to one ticket's history", scn_ticketlog, false, false},
    {"json", "devices merge distinct keys into one job's other_info", scn_json, false, false},
    {"attendance", "check-ins and check-outs across offline periods", scn_attendance, false, false},
    {"flaky", "server faults, dropped responses, crashes mid-sync, clocks off by hours", scn_flaky,
     true, false},
};

const fsa__scenario_t *fsa__scenarios(size_t *n)
{
    *n = sizeof scenarios / sizeof scenarios[0];
    return scenarios;
}

/* ================= the common part ================= */

void fsa__scenario_stats_after(fsa__run_t *run)
{
    if (run->have_after || !run->have_before || run->admin == NULL)
        return;
    fsa__stats_t a;
    char err[FSA__ERR_BYTES];
    if (fsa__admin_stats(run->admin, &a, err, sizeof err) != FSA_OK) {
        fsa__inv_add(run->res, "server_stats_read", FSA__INV_FAIL, "%s", err);
        return;
    }
    run->have_after = true;
    const fsa__stats_t *b = &run->before;
    fsa__stats_t *d = &run->res->s_delta;
    d->applied = a.applied - b->applied;
    d->duplicate = a.duplicate - b->duplicate;
    d->conflict = a.conflict - b->conflict;
    d->rejected = a.rejected - b->rejected;
    d->push = a.push - b->push;
    d->pull = a.pull - b->pull;
    d->clock_skew = a.clock_skew - b->clock_skew;
    d->replay = a.replay - b->replay;
    d->bad_signature = a.bad_signature - b->bad_signature;
    d->f_5xx = a.f_5xx - b->f_5xx;
    d->f_429 = a.f_429 - b->f_429;
    d->f_drop = a.f_drop - b->f_drop;
    d->f_reset = a.f_reset - b->f_reset;
    d->f_latency = a.f_latency - b->f_latency;
    d->entities = a.entities - b->entities;
    run->res->have_server = true;
}

static void count_kind(fsa__result_t *r, const fsa__dconflict_t *x)
{
    char label[48];
    const char *how = x->resolution[0] ? x->resolution : x->decision[0] ? x->decision : "open";
    snprintf(label, sizeof label, "%s %s: %s", fsa_op_kind_name(x->kind), x->outcome, how);
    for (size_t i = 0; i < r->nkinds; i++)
        if (strcmp(r->kinds[i].label, label) == 0) {
            r->kinds[i].n++;
            return;
        }
    if (r->nkinds < FSA__KINDS_MAX) {
        snprintf(r->kinds[r->nkinds].label, sizeof r->kinds[r->nkinds].label, "%s", label);
        r->kinds[r->nkinds++].n = 1;
    }
}

/* The wall clock at the start (attendances since then are the run's) and the server's counters
 * before, those of one process: the server's only when it has one (one --server). */
static void scenario_before(fsa__run_t *run)
{
    char err[FSA__ERR_BYTES];
    /* The counters tell this run's figures only of a server that serves this run alone: one the
     * simulator started, with one process (each process counts its own). A server given with
     * --server counts every other client's ops too (another run's, say). */
    if (run->admin != NULL && run->owned_server && run->fleet->nurls <= 1) {
        if (fsa__admin_stats(run->admin, &run->before, err, sizeof err) == FSA_OK)
            run->have_before = true;
        else
            fsa__inv_add(run->res, "server_stats_read", FSA__INV_FAIL, "%s", err);
    }
}

/* What the devices saw: their counters summed into the result, no_op_lost and
 * devices_error_free. */
static void scenario_devices(fsa__run_t *run)
{
    fsa__fleet_t *f = run->fleet;
    fsa__result_t *r = run->res;
    int64_t lost = 0, unsettled_devs = 0, pending_devs = 0, pending = 0, errors = 0;
    const char *first_error = NULL, *first_error_dev = NULL;
    for (int i = 0; i < f->ndev; i++) {
        fsa__device_t *d = &f->dev[i];
        r->recorded += d->recorded_ops;
        r->retries += d->retries;
        r->syncs += d->syncs;
        r->crashes += d->crashes;
        r->rebased += d->rebased;
        r->server_wins += d->server_wins;
        r->converged += d->converged;
        r->parked += d->parked;
        r->c_applied += d->applied;
        r->c_duplicate += d->duplicate;
        r->c_conflict += d->conflict;
        r->c_rejected += d->rejected;
        bool unsettled = false;
        for (size_t k = d->first_unsettled; k < d->nmarks; k++)
            if (d->marks[k].state == FSA__MARK_PENDING) {
                lost += d->marks[k].nops;
                unsettled = true;
            }
        unsettled_devs += unsettled;
        pending_devs += d->pending > 0;
        pending += d->pending;
        for (size_t k = 0; k < d->nconflicts; k++)
            count_kind(r, &d->conflicts[k]);
        if (d->error[0] != '\0' && errors++ == 0) {
            first_error = d->error;
            first_error_dev = d->id;
        }
    }
    r->lost = lost;
    fsa__inv_add(r, "no_op_lost", lost == 0 && pending == 0 ? FSA__INV_PASS : FSA__INV_FAIL,
                 "%" PRId64 " ops recorded; %" PRId64 " never answered (on %" PRId64
                 " devices), %" PRId64 " still in outboxes (on %" PRId64 " devices)",
                 r->recorded, lost, unsettled_devs, pending, pending_devs);
    if (errors == 0)
        fsa__inv_add(r, "devices_error_free", FSA__INV_PASS, "no device hit an unexpected error");
    else {
        int64_t same = 0;
        for (int i = 0; i < f->ndev; i++)
            same += strcmp(f->dev[i].error, first_error) == 0;
        fsa__inv_add(r, "devices_error_free", FSA__INV_FAIL,
                     "%" PRId64 " devices hit an unexpected error (%" PRId64
                     " of them this one); first, %s: %.300s",
                     errors, same, first_error_dev, first_error);
    }
}

/* counts_consistent: the server's first outcomes against the ops the devices sent, when its
 * counters are this run's to read. */
static void scenario_counts(fsa__run_t *run)
{
    fsa__result_t *r = run->res;
    if (r->have_server) {
        r->admin_ops = run->admin_ops;
        r->s_applied = r->s_delta.applied - run->admin_ops;
        r->s_duplicate = r->s_delta.duplicate;
        r->s_conflict = r->s_delta.conflict;
        r->s_rejected = r->s_delta.rejected;
        /* Every op id gets exactly one first outcome on the server (later ones are duplicates):
         * the ops the devices recorded, and those the resolver recorded again (rebases). */
        int64_t firsts = r->s_applied + r->s_conflict + r->s_rejected;
        int64_t sent = r->recorded + r->rebased;
        r->how = "admin API";
        fsa__inv_add(r, "counts_consistent", firsts == sent ? FSA__INV_PASS : FSA__INV_FAIL,
                     "server answered %" PRId64 " ops first (applied %" PRId64
                     " + conflict %" PRId64 " + rejected %" PRId64 "), devices sent %" PRId64
                     " (%" PRId64 " recorded + %" PRId64 " rebased); %" PRId64 " duplicates",
                     firsts, r->s_applied, r->s_conflict, r->s_rejected, sent, r->recorded,
                     r->rebased, r->s_duplicate);
    } else if (run->admin != NULL) {
        fsa__inv_add(r, "counts_consistent", FSA__INV_NOT_CHECKED, "%s", counters_unknown(run));
    } else {
        fsa__inv_add(r, "counts_consistent", FSA__INV_NOT_CHECKED,
                     "the server's counters are not part of the protocol: needs the reference "
                     "server's admin API (--admin-token-file)");
    }
}

/* The fleet's lags (sorted), samples and phases, copied into the result. */
static void scenario_series(fsa__run_t *run)
{
    fsa__fleet_t *f = run->fleet;
    fsa__result_t *r = run->res;
    r->nlags = f->nlags;
    r->lags = NULL;
    if (f->nlags > 0 && (r->lags = fsa_malloc(f->nlags * sizeof *r->lags)) != NULL) {
        memcpy(r->lags, f->lags, f->nlags * sizeof *r->lags);
        r->lag_p50 = fsa__percentile(r->lags, r->nlags, 50);
        r->lag_p99 = fsa__percentile(r->lags, r->nlags, 99);
        r->lag_max = r->lags[r->nlags - 1];
    } else {
        r->nlags = 0;
    }
    r->nsamples = 0;
    if (f->nsamples > 0 && (r->samples = fsa_malloc(f->nsamples * sizeof *r->samples)) != NULL) {
        memcpy(r->samples, f->samples, f->nsamples * sizeof *r->samples);
        r->nsamples = f->nsamples;
    }
    fsa__fleet_mark(f, "main thread: checks");
    memcpy(r->phases, f->phases, f->nphases * sizeof r->phases[0]);
    r->nphases = f->nphases;
}

void fsa__scenario_run(const fsa__scenario_t *s, fsa__run_t *run)
{
    fsa__fleet_t *f = run->fleet;
    fsa__result_t *r = run->res;
    int64_t t0 = fsa__real_ms();
    scenario_before(run);
    if (s->needs_admin && run->admin == NULL && run->hook == NULL) {
        snprintf(r->note, sizeof r->note,
                 "not run: the server must autoclose jobs, through its admin API "
                 "(--admin-token-file) or a command (--server-hook 'CMD {type} {id}')");
        fsa__inv_add(r, "scenario_ran", FSA__INV_NOT_CHECKED, "%s", r->note);
        r->duration_ms = fsa__real_ms() - t0;
        return;
    }
    if (s->needs_admin && run->admin == NULL)
        snprintf(r->note, sizeof r->note, "the server's autoclose through --server-hook");
    s->fn(run);
    for (int k = 0; k < 2; k++)
        if (run->reader_fs[k] != NULL) {
            fsa__dev_close(f, k == 0 ? f->reader : f->site_reader, run->reader_fs[k]);
            run->reader_fs[k] = NULL;
        }
    fsa__scenario_stats_after(run);
    scenario_devices(run);
    scenario_counts(run);
    scenario_series(run);
    r->duration_ms = fsa__real_ms() - t0;
}
