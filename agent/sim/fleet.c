/* fieldsync-sim: simulated devices (a journal, a sim port, the real engine) and the worker pool. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "agent/sim/fleet.h"
#include "port/alloc.h"
#include "port/files.h"

/* Samples of the series: at most one per this many ms, and at most this many (then halved). */
#define SAMPLE_EVERY_MS 20
#define SAMPLES_MAX 4096
/* Syncs in one fsa__dev_sync() that only wait out a persisted backoff. */
#define BACKOFF_WAITS_MAX 3

int64_t fsa__real_ms(void)
{
    fsa_port_t *p = fsa_port_posix();
    return p->mono_now(p->ctx).ns / FSA_NS_PER_MS;
}

uint64_t fsa__mix(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

int fsa__races(int ndev)
{
    return ndev / FSA__RACERS > 0 ? ndev / FSA__RACERS : 1;
}

int fsa__race_of(int i, int ndev)
{
    return i % fsa__races(ndev);
}

void fsa__scope_key(const fsa__fleet_t *f, const char *what, int n, char *out, size_t cap)
{
    if (n < 0)
        snprintf(out, cap, "%s.%s", f->tag, what);
    else
        snprintf(out, cap, "%s.%s%d", f->tag, what, n);
}

void fsa__dev_error(fsa__device_t *d, const char *fmt, ...)
{
    if (d->error[0] != '\0')
        return; /* the first error explains the rest */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->error, sizeof d->error, fmt, ap);
    va_end(ap);
}

/* The engine and journal log through the port; a fleet of hundreds would drown a terminal, and
 * every failure that matters reaches the report through statuses and invariants. */
static void quiet_log(void *arg, fsa_log_level_t level, const char *msg)
{
    (void)arg;
    (void)level;
    (void)msg;
}

/* A fresh boot of a device: a new sim port whose seed depends on the run seed, the scenario, the
 * device and the boot (a rebooted device must never repeat the random sequence, op ids and
 * nonces, of its previous life). */
static fsa_status_t dev_boot(fsa__fleet_t *f, fsa__device_t *d)
{
    fsa_sim_free(d->sim);
    d->sim = NULL;
    uint64_t s = f->seed ^ f->seed_mix;
    s ^= (uint64_t)(f->scenario_index + 1) * UINT64_C(0x100000001B3);
    s ^= (uint64_t)(d->index + 1) * UINT64_C(0x9E3779B97F4A7C15);
    s ^= (uint64_t)(d->boot + 1) * UINT64_C(0xC2B2AE3D27D4EB4F);
    uint64_t seed = fsa__mix(&s);
    fsa_port_t *p = fsa_port_posix();
    fsa_wall_t start = {p->wall_now(p->ctx).ms + d->wall_shift_ms};
    fsa_status_t st = fsa_sim_new(seed, start, d->id, &d->sim);
    if (st != FSA_OK)
        return st;
    fsa_sim_set_log(d->sim, quiet_log, NULL);
    d->boot_real_ms = fsa__real_ms();
    return FSA_OK;
}

/* The virtual clock of a device never lags real time: its sleeps (retries) and waits (offline
 * backoff) put it ahead, but the server's clock keeps moving too. */
static void catch_up(fsa__device_t *d)
{
    fsa_port_t *p = fsa_sim_port(d->sim);
    int64_t virt_ms = p->mono_now(p->ctx).ns / FSA_NS_PER_MS;
    int64_t real_ms = fsa__real_ms() - d->boot_real_ms;
    if (real_ms > virt_ms)
        fsa_sim_advance(d->sim, (real_ms - virt_ms) * FSA_NS_PER_MS);
}

void fsa__dev_shift_clock(fsa__device_t *d, int64_t delta_ms)
{
    d->wall_shift_ms += delta_ms;
    if (d->sim != NULL)
        fsa_sim_shift_wall(d->sim, delta_ms);
}

fsa_status_t fsa__fleet_init(fsa__fleet_t *f, char *err, size_t errlen)
{
    fsa_port_t *p = fsa_port_posix();
    fsa_status_t st = p->mutex_new(p->ctx, &f->mu);
    if (st != FSA_OK)
        snprintf(err, errlen, "cannot create a mutex: %s", fsa_status_str(st));
    return st;
}

static void dev_reset(fsa__device_t *d)
{
    fsa_free(d->marks);
    fsa_free(d->conflicts);
    d->marks = NULL;
    d->conflicts = NULL;
    d->nmarks = d->capmarks = d->first_unsettled = d->nconflicts = 0;
    d->pending = d->recorded_ops = d->retries = d->applied = d->conflict = d->rejected = 0;
    d->duplicate = 0;
    d->rebased = d->server_wins = d->converged = d->parked = 0;
    d->syncs = d->sync_errors = d->crashes = d->clock_offset_ms = d->open_conflicts = 0;
    d->clock_error_ms = 0;
    d->error[0] = '\0';
    d->last_sync_error[0] = '\0';
}

const char *fsa__dev_url(const fsa__fleet_t *f, const fsa__device_t *d)
{
    return f->nurls > 0 ? f->urls[d->index % f->nurls] : f->url;
}

/* The devices and the reader (dev[ndev]), when the fleet has one. */
static int with_reader(const fsa__fleet_t *f)
{
    return f->ndev + (f->reader != NULL ? 1 : 0) + (f->site_reader != NULL ? 1 : 0);
}

void fsa__fleet_end(fsa__fleet_t *f)
{
    for (int i = 0; i < with_reader(f); i++) {
        fsa_sim_free(f->dev[i].sim);
        f->dev[i].sim = NULL;
    }
}

void fsa__fleet_free(fsa__fleet_t *f)
{
    if (f == NULL)
        return;
    fsa__fleet_end(f);
    for (int i = 0; f->dev != NULL && i < with_reader(f); i++) {
        dev_reset(&f->dev[i]);
        fsa_signer_key_wipe(&f->dev[i].key);
    }
    fsa_free(f->dev);
    fsa_free(f->urls);
    f->urls = NULL;
    f->nurls = 0;
    f->reader = NULL;
    f->site_reader = NULL;
    fsa_free(f->samples);
    fsa_free(f->lags);
    f->dev = NULL;
    f->samples = NULL;
    f->lags = NULL;
    if (f->mu != NULL)
        fsa_port_posix()->mutex_free(fsa_port_posix()->ctx, f->mu);
    f->mu = NULL;
}

fsa_status_t fsa__fleet_begin(fsa__fleet_t *f, const char *scenario, int index, const char *dir,
                              char *err, size_t errlen)
{
    f->scenario = scenario;
    f->scenario_index = index;
    if ((size_t)snprintf(f->dir, sizeof f->dir, "%s", dir) >= sizeof f->dir) {
        snprintf(err, errlen, "workdir path too long: %s", dir);
        return FSA_ETOOLARGE;
    }
    fsa_free(f->samples);
    fsa_free(f->lags);
    f->samples = NULL;
    f->lags = NULL;
    f->nsamples = f->capsamples = f->nlags = f->caplags = 0;
    f->depth_total = f->retries_total = 0;
    f->last_sample_ms = 0;
    f->t0_ms = fsa__real_ms();
    f->nphases = 0;
    f->phase_end_ms = f->t0_ms;
    for (int i = 0; i < with_reader(f); i++) {
        fsa__device_t *d = &f->dev[i];
        dev_reset(d);
        d->boot = 0;
        d->wall_shift_ms = 0;
        d->initialised = false;
        /* The reader may carry device 0's identity (--server): its own file names. */
        const char *file = d == f->reader ? "reader" : d == f->site_reader ? "site-reader" : d->id;
        if ((size_t)snprintf(d->journal, sizeof d->journal, "%s/%s.db", dir, file) >=
                sizeof d->journal ||
            (size_t)snprintf(d->secret, sizeof d->secret, "%s/%s.secret", dir, file) >=
                sizeof d->secret) {
            snprintf(err, errlen, "journal path too long under %s", dir);
            return FSA_ETOOLARGE;
        }
        fsa_status_t st = dev_boot(f, d);
        if (st != FSA_OK) {
            snprintf(err, errlen, "cannot create the sim port of %s: %s", d->id,
                     fsa_status_str(st));
            return st;
        }
    }
    return FSA_OK;
}

/* ---- the shared series (under f->mu) ---- */

static void lock(fsa__fleet_t *f)
{
    fsa_port_posix()->mutex_lock(fsa_port_posix()->ctx, f->mu);
}

static void unlock(fsa__fleet_t *f)
{
    fsa_port_posix()->mutex_unlock(fsa_port_posix()->ctx, f->mu);
}

static void sample_locked(fsa__fleet_t *f, bool force)
{
    int64_t now = fsa__real_ms() - f->t0_ms;
    if (!force && f->nsamples > 0 && now - f->last_sample_ms < SAMPLE_EVERY_MS)
        return;
    if (f->nsamples == SAMPLES_MAX) {
        /* Halve the resolution rather than grow: the chart has a few hundred pixels anyway. */
        size_t k = 0;
        for (size_t i = 0; i < f->nsamples; i += 2)
            f->samples[k++] = f->samples[i];
        f->nsamples = k;
    }
    fsa__sample_t *n =
        fsa_array_grow(f->samples, &f->capsamples, f->nsamples, sizeof *n, 256, SAMPLES_MAX);
    if (n == NULL)
        return; /* a missing sample only thins the chart */
    f->samples = n;
    f->samples[f->nsamples++] = (fsa__sample_t){now, f->depth_total, f->retries_total};
    f->last_sample_ms = now;
}

static void add_lag(fsa__fleet_t *f, int64_t lag)
{
    lock(f);
    int64_t *n = fsa_array_grow(f->lags, &f->caplags, f->nlags, sizeof *n, 1024, 0);
    if (n == NULL) {
        unlock(f);
        return;
    }
    f->lags = n;
    f->lags[f->nlags++] = lag;
    unlock(f);
}

static void account(fsa__fleet_t *f, int64_t depth_delta, int64_t retries_delta)
{
    lock(f);
    f->depth_total += depth_delta;
    f->retries_total += retries_delta;
    sample_locked(f, false);
    unlock(f);
}

/* ---- the worker pool ---- */

typedef struct pool {
    fsa__fleet_t *f;
    fsa__step_fn fn;
    void *arg;
    int count;
    int next; /* under f->mu */
} pool_t;

static void progress_locked(fsa__fleet_t *f, bool final)
{
    if (!f->progress)
        return;
    int64_t now = fsa__real_ms();
    if (!final && now - f->last_progress_ms < 100)
        return;
    f->last_progress_ms = now;
    fprintf(stderr, "\r\033[K%s: %s %d/%d devices, %" PRId64 " ops pending, %.1f s", f->scenario,
            f->phase, f->phase_done, f->phase_total, f->depth_total,
            (double)(now - f->t0_ms) / 1000.0);
    fflush(stderr);
}

static void *worker(void *arg)
{
    pool_t *p = arg;
    fsa__fleet_t *f = p->f;
    for (;;) {
        lock(f);
        int i = p->next < p->count ? p->next++ : -1;
        unlock(f);
        if (i < 0)
            break;
        fsa__device_t *d = &f->dev[i];
        catch_up(d);
        p->fn(f, d, p->arg);
        lock(f);
        f->phase_done++;
        progress_locked(f, false);
        unlock(f);
    }
    return NULL;
}

static void add_phase(fsa__fleet_t *f, const char *a, const char *b, int64_t ms, int devices)
{
    if (f->nphases == FSA__PHASES_MAX)
        return;
    fsa__phase_t *p = &f->phases[f->nphases++];
    snprintf(p->name, sizeof p->name, "%s%s", a, b);
    p->ms = ms;
    p->devices = devices;
}

void fsa__fleet_mark(fsa__fleet_t *f, const char *name)
{
    int64_t now = fsa__real_ms();
    add_phase(f, name, "", now - f->phase_end_ms, 0);
    f->phase_end_ms = now;
}

void fsa__fleet_run(fsa__fleet_t *f, const char *phase, int count, fsa__step_fn fn, void *arg)
{
    if (count > f->ndev)
        count = f->ndev;
    int64_t t0 = fsa__real_ms();
    if (t0 - f->phase_end_ms > 0)
        add_phase(f, "main thread, before: ", phase, t0 - f->phase_end_ms, 0);
    pool_t p = {.f = f, .fn = fn, .arg = arg, .count = count};
    lock(f);
    f->phase = phase;
    f->phase_done = 0;
    f->phase_total = count;
    unlock(f);
    int n = f->workers < count ? f->workers : count;
    fsa_thread_t *threads[64];
    int started = 0;
    fsa_port_t *port = fsa_port_posix();
    for (int i = 0; i < n && i < 64; i++) {
        if (port->thread_create(port->ctx, &threads[started], worker, &p) != FSA_OK)
            break;
        started++;
    }
    if (started == 0)
        worker(&p); /* no thread to be had: the main thread steps every device itself */
    for (int i = 0; i < started; i++)
        (void)port->thread_join(port->ctx, threads[i], NULL);
    lock(f);
    sample_locked(f, true);
    progress_locked(f, true);
    unlock(f);
    f->phase_end_ms = fsa__real_ms();
    add_phase(f, phase, "", f->phase_end_ms - t0, count);
}

/* A string member of a JSON object, or NULL. */
static const char *json_str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const char *json_str_or(const cJSON *o, const char *name, const char *dflt)
{
    const char *v = json_str(o, name);
    return v != NULL ? v : dflt;
}

/* ---- one device ---- */

/* The device's secret file, for libfieldsync to read (0600), written at its first open. */
static bool write_secret(fsa__device_t *d)
{
    char hex[2 * sizeof d->key.bytes + 2];
    for (size_t i = 0; i < sizeof d->key.bytes; i++)
        snprintf(hex + 2 * i, 3, "%02x", d->key.bytes[i]);
    char err[FSA__ERR_BYTES];
    fsa_status_t st = fsa__write_private(d->secret, hex, err, sizeof err);
    fsa_signer_wipe(hex, sizeof hex);
    if (st != FSA_OK)
        fsa__dev_error(d, "%s", err);
    return st == FSA_OK;
}

/* One open of the device's journal through libfieldsync on its sim port; init: its first, which
 * stores the configuration (device id, the real server, the secret file). */
static bool dev_open_once(fsa__fleet_t *f, fsa__device_t *d, const char *server_url, bool init,
                          fieldsync_t **fs)
{
    *fs = NULL;
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = d->journal;
    cfg.durability = f->sync_normal ? FIELDSYNC_DURABLE_NORMAL : FIELDSYNC_DURABLE_FULL;
    cfg.label = "fieldsync-sim";
    cfg.server_url = server_url;
    if (init) {
        if (!write_secret(d))
            return false;
        cfg.flags = FIELDSYNC_OPEN_INIT;
        cfg.device_id = d->id;
        cfg.server_url = fsa__dev_url(f, d);
        cfg.secret_file = d->secret;
    }
    fieldsync_status_t st = fsl__open_with_port(&cfg, fsa_sim_port(d->sim), fs);
    if (st != FIELDSYNC_OK) {
        fsa__dev_error(d, "cannot open journal %s: %s", d->journal, fieldsync_errmsg(*fs));
        (void)fieldsync_close(*fs);
        *fs = NULL;
        return false;
    }
    d->initialised = true;
    return true;
}

/* Opens the device's journal. server_url: NULL for the one the journal holds, else this handle's
 * override (the refused port of an offline period), which is never stored. */
static bool dev_open_url(fsa__fleet_t *f, fsa__device_t *d, const char *server_url,
                         fieldsync_t **fs)
{
    if (!d->initialised) {
        if (!dev_open_once(f, d, NULL, true, fs))
            return false;
        if (server_url == NULL)
            return true;
        (void)fieldsync_close(*fs);
    }
    return dev_open_once(f, d, server_url, false, fs);
}

bool fsa__dev_open(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t **fs)
{
    return dev_open_url(f, d, NULL, fs);
}

/* The device's status; false (and d->error) when it cannot be read. */
static bool dev_status(fsa__device_t *d, fieldsync_t *fs, fieldsync_sync_status_t *s)
{
    memset(s, 0, sizeof *s);
    s->size = (uint32_t)sizeof *s;
    if (fieldsync_status(fs, s) == FIELDSYNC_OK)
        return true;
    fsa__dev_error(d, "cannot read the status of %s: %s", d->journal, fieldsync_errmsg(fs));
    return false;
}

void fsa__dev_close(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t *fs)
{
    fieldsync_sync_status_t s;
    if (fs != NULL && dev_status(d, fs, &s)) {
        account(f, s.queue_depth - d->pending, 0);
        d->pending = s.queue_depth;
    }
    if (fieldsync_close(fs) != FIELDSYNC_OK)
        fsa__dev_error(d, "cannot close journal %s", d->journal);
}

bool fsa__dev_mark(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t *fs, fieldsync_status_t st,
                   const fieldsync_rec_t *rec, int nops, const char *what)
{
    (void)f;
    if (st != FIELDSYNC_OK) {
        fsa__dev_error(d, "%s: %s", what, fieldsync_errmsg(fs));
        return false;
    }
    fsa__mark_t *n = fsa_array_grow(d->marks, &d->capmarks, d->nmarks, sizeof *n, 16, 0);
    if (n == NULL) {
        fsa__dev_error(d, "out of memory following %s", what);
        return true; /* recorded all the same; the op is only not followed */
    }
    d->marks = n;
    fsa__mark_t *m = &d->marks[d->nmarks++];
    memset(m, 0, sizeof *m);
    snprintf(m->op_id, sizeof m->op_id, "%.36s", rec->op_id);
    m->rec_ms = fsa__real_ms();
    m->nops = nops;
    m->state = FSA__MARK_PENDING;
    d->recorded_ops += nops;
    return true;
}

/* Looks at every recording still pending: done means applied (also once compacted: its id is
 * kept for the audit period); parked means conflict or rejected. */
static void settle(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t *fs)
{
    int64_t now = fsa__real_ms();
    bool prefix = true;
    for (size_t i = d->first_unsettled; i < d->nmarks; i++) {
        fsa__mark_t *m = &d->marks[i];
        if (m->state == FSA__MARK_PENDING) {
            fieldsync_op_state_t state = FIELDSYNC_OP_PENDING;
            if (fieldsync_op_state(fs, m->op_id, &state) != FIELDSYNC_OK)
                state = FIELDSYNC_OP_PENDING; /* unknown: followed again next time */
            if (state == FIELDSYNC_OP_DONE) {
                m->state = FSA__MARK_DONE;
                add_lag(f, now - m->rec_ms);
            } else if (state == FIELDSYNC_OP_CONFLICT || state == FIELDSYNC_OP_RESOLVED) {
                /* resolved: a conflict the resolver settled (the simulator settles none, and
                 * the resolver parks every rejection) */
                m->state = FSA__MARK_CONFLICT;
            } else if (state == FIELDSYNC_OP_REJECTED) {
                m->state = FSA__MARK_REJECTED;
            }
        }
        if (m->state == FSA__MARK_PENDING)
            prefix = false;
        else if (prefix)
            d->first_unsettled = i + 1;
    }
}

static void add_report(fsa__fleet_t *f, fsa__device_t *d, const fieldsync_report_t *r)
{
    d->retries += r->retries;
    d->applied += r->applied;
    d->duplicate += r->duplicate;
    d->conflict += r->conflict;
    d->rejected += r->rejected;
    d->rebased += r->rebased;
    d->server_wins += r->server_wins;
    d->converged += r->converged;
    d->parked += r->parked;
    if (r->retries > 0)
        account(f, 0, r->retries);
}

fieldsync_status_t fsa__dev_sync(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t *fs, bool online)
{
    fsa_port_t *port = fsa_sim_port(d->sim);
    /* Offline: a second handle on the same journal whose server is the refused port. */
    fieldsync_t *via = fs;
    if (!online && !dev_open_url(f, d, f->dead_url, &via))
        return FIELDSYNC_EIO;
    fieldsync_status_t st = FIELDSYNC_OK;
    for (int wait = 0; wait <= BACKOFF_WAITS_MAX; wait++) {
        fieldsync_report_t r;
        memset(&r, 0, sizeof r);
        st = fieldsync_sync_once(via, false, &r);
        d->syncs++;
        add_report(f, d, &r);
        if (st == FIELDSYNC_EBUSY && r.next_attempt_ms > 0 && online) {
            /* The device keeps its persisted backoff, as a real one would: time passes (on its
             * virtual clock) until the next attempt is due. */
            int64_t wait_ms = r.next_attempt_ms - port->wall_now(port->ctx).ms + 1;
            if (wait_ms > 0)
                fsa_sim_advance(d->sim, wait_ms * FSA_NS_PER_MS);
            continue;
        }
        if (online)
            snprintf(d->last_sync_error, sizeof d->last_sync_error, "%s",
                     st == FIELDSYNC_OK ? "" : fieldsync_errmsg(via));
        if (st != FIELDSYNC_OK && online) {
            d->sync_errors++;
            if (st == FIELDSYNC_EAUTH || st == FIELDSYNC_EPROTO || st == FIELDSYNC_EIO ||
                st == FIELDSYNC_ENOMEM)
                fsa__dev_error(d, "sync: %s", fieldsync_errmsg(via));
        }
        break;
    }
    if (via != fs)
        (void)fieldsync_close(via);
    settle(f, d, fs);
    return st;
}

bool fsa__dev_drain(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t *fs, int max_rounds)
{
    for (int i = 0; i < max_rounds; i++) {
        fieldsync_status_t st = fsa__dev_sync(f, d, fs, true);
        fieldsync_sync_status_t s;
        if (!dev_status(d, fs, &s))
            return false;
        if (st == FIELDSYNC_OK && s.queue_depth == 0)
            return true;
        /* On FIELDSYNC_EAUTH too: `fieldsync run` keeps its schedule after a refusal (and a
         * backoff is persisted, which fsa__dev_sync waits out), so the device tries again. The
         * refusal itself stays on record as the device's error. */
    }
    return false;
}

/* A journal file's bytes (NULL, 0 when it does not exist); false (d->error) when it cannot be
 * read. A simulated journal stays far under the bound. */
#define RESEND_COPY_MAX ((size_t)256 * 1024 * 1024)
static bool copy_in(fsa__device_t *d, const char *path, char **data, size_t *len)
{
    char err[FSA__ERR_BYTES];
    fsa_status_t st = fsa_file_read(path, RESEND_COPY_MAX, 0, data, len, err, sizeof err);
    if (st == FSA_ENOTFOUND) {
        *data = NULL;
        *len = 0;
        return true;
    }
    if (st != FSA_OK)
        fsa__dev_error(d, "restore: cannot copy %s", err);
    return st == FSA_OK;
}

/* Puts a copy back (or removes the file the copy did not have). */
static bool copy_out(fsa__device_t *d, const char *path, const char *data, size_t len)
{
    char err[FSA__ERR_BYTES];
    if (data == NULL) {
        if (unlink(path) == 0 || errno == ENOENT)
            return true;
        fsa__dev_error(d, "restore: cannot remove %s: %s", path, strerror(errno));
        return false;
    }
    if (fsa_file_write_atomic(path, data, len, err, sizeof err) == FSA_OK)
        return true;
    fsa__dev_error(d, "restore: cannot put back %s", err);
    return false;
}

bool fsa__dev_restore_resend(fsa__fleet_t *f, fsa__device_t *d, fsa__resend_t *out)
{
    memset(out, 0, sizeof *out);
    char wal[FSA__PATH_BYTES + 8], shm[FSA__PATH_BYTES + 8];
    snprintf(wal, sizeof wal, "%s-wal", d->journal);
    snprintf(shm, sizeof shm, "%s-shm", d->journal);
    fieldsync_t *fs = NULL;
    fieldsync_sync_status_t s;
    if (!fsa__dev_open(f, d, &fs))
        return false;
    bool ok = dev_status(d, fs, &s);
    fsa__dev_close(f, d, fs);
    out->held = s.queue_depth;
    /* Closed: the journal is its file and its WAL (the wal-index is made again at the open). */
    char *db_copy = NULL, *wal_copy = NULL;
    size_t db_len = 0, wal_len = 0;
    ok = ok && copy_in(d, d->journal, &db_copy, &db_len) && copy_in(d, wal, &wal_copy, &wal_len);
    if (ok && db_copy == NULL) {
        fsa__dev_error(d, "restore: %s does not exist", d->journal);
        ok = false;
    }
    if (ok && (ok = fsa__dev_open(f, d, &fs))) {
        (void)fsa__dev_drain(f, d, fs, 8);
        ok = dev_status(d, fs, &s);
        out->left = s.queue_depth;
        fsa__dev_close(f, d, fs);
    }
    ok = ok && copy_out(d, wal, wal_copy, wal_len) && copy_out(d, shm, NULL, 0) &&
         copy_out(d, d->journal, db_copy, db_len);
    fsa_free(db_copy);
    fsa_free(wal_copy);
    if (ok && (ok = fsa__dev_open(f, d, &fs))) {
        int64_t dup0 = d->duplicate, app0 = d->applied, other0 = d->conflict + d->rejected;
        (void)fsa__dev_drain(f, d, fs, 8);
        out->duplicate = d->duplicate - dup0;
        out->applied = d->applied - app0;
        out->other = d->conflict + d->rejected - other0;
        fsa__dev_close(f, d, fs);
    }
    return ok;
}

/* ---- collecting ---- */

/* One conflict of the library's JSON list into d->conflicts; false when it is malformed. */
static bool collect_conflict(fsa__device_t *d, const cJSON *c, size_t *cap)
{
    const char *op_id = json_str(c, "op_id"), *kind = json_str(c, "kind");
    const char *type = json_str(c, "type"), *id = json_str(c, "id");
    if (op_id == NULL || kind == NULL || type == NULL || id == NULL)
        return false;
    fsa__dconflict_t *n = fsa_array_grow(d->conflicts, cap, d->nconflicts, sizeof *n, 4, 0);
    if (n == NULL)
        return false;
    d->conflicts = n;
    fsa__dconflict_t *x = &d->conflicts[d->nconflicts];
    memset(x, 0, sizeof *x);
    if (fsa_op_kind_parse(kind, &x->kind) != FSA_OK || fsa_type_parse(type, &x->type) != FSA_OK)
        return false;
    d->nconflicts++;
    snprintf(x->op_id, sizeof x->op_id, "%s", op_id);
    snprintf(x->id, sizeof x->id, "%s", id);
    snprintf(x->outcome, sizeof x->outcome, "%s", json_str_or(c, "outcome", ""));
    snprintf(x->decision, sizeof x->decision, "%s", json_str_or(c, "decision", ""));
    snprintf(x->resolution, sizeof x->resolution, "%s", json_str_or(c, "resolution", ""));
    const cJSON *sf = cJSON_GetObjectItemCaseSensitive(c, "server_fields");
    const char *sfield = x->type == FSA_TYPE_TICKET ? "status" : "jobstatus";
    const cJSON *sv = cJSON_IsObject(sf) ? cJSON_GetObjectItemCaseSensitive(sf, sfield) : NULL;
    if (sv != NULL && cJSON_IsString(sv))
        snprintf(x->server_status, sizeof x->server_status, "%s", sv->valuestring);
    return true;
}

void fsa__dev_collect(fsa__fleet_t *f, fsa__device_t *d, fieldsync_t *fs)
{
    fieldsync_sync_status_t s;
    if (dev_status(d, fs, &s)) {
        d->open_conflicts = s.open_conflicts;
        d->clock_offset_ms = s.clock_offset_ms;
    }
    /* The shift, plus the virtual time the device spent waiting ahead of real time. */
    fsa_port_t *sp = fsa_sim_port(d->sim), *rp = fsa_port_posix();
    d->clock_error_ms = sp->wall_now(sp->ctx).ms - rp->wall_now(rp->ctx).ms;
    fsa_free(d->conflicts);
    d->conflicts = NULL;
    d->nconflicts = 0;
    char *json = NULL;
    cJSON *list = NULL;
    bool ok = fieldsync_conflicts(fs, true, &json) == FIELDSYNC_OK &&
              (list = cJSON_Parse(json)) != NULL && cJSON_IsArray(list);
    size_t cap = 0;
    const cJSON *c;
    const cJSON *items = ok ? list : NULL;
    cJSON_ArrayForEach(c, items)
    {
        if (!collect_conflict(d, c, &cap)) {
            ok = false;
            break;
        }
    }
    cJSON_Delete(list);
    fieldsync_free(json);
    if (!ok)
        fsa__dev_error(d, "cannot read the conflicts of %s", d->journal);
    settle(f, d, fs);
}

/* ---- a crash ---- */

typedef struct crash_child {
    int fd;
    bool before_send;
    bool signalled;
} crash_child_t;

static void crash_status(void *arg, const fieldsync_sync_status_t *s)
{
    crash_child_t *c = arg;
    if (s->state != FIELDSYNC_STATE_SYNCING || strncmp(s->reason, "pushing ", 8) != 0 ||
        c->signalled)
        return;
    c->signalled = true;
    /* The batch is marked in flight now. Tell the parent, which kills this process. */
    ssize_t w;
    do {
        w = write(c->fd, "p", 1);
    } while (w < 0 && errno == EINTR);
    if (c->before_send)
        for (;;)
            pause(); /* killed while it waits to send: the batch is abandoned unsent */
}

/* The child: never returns. Only _exit: the parent's atexit handlers and stdio buffers are not
 * the child's to run or flush. */
static void crash_child_run(fsa__fleet_t *f, fsa__device_t *d, int fd, bool before_send)
{
    fieldsync_t *fs = NULL;
    if (!fsa__dev_open(f, d, &fs))
        _exit(3);
    crash_child_t c = {.fd = fd, .before_send = before_send};
    if (fieldsync_add_status_listener(fs, crash_status, &c, NULL) != FIELDSYNC_OK)
        _exit(4);
    fieldsync_report_t r;
    fieldsync_status_t st = fieldsync_sync_once(fs, true, &r);
    _exit(c.signalled ? 0 : st == FIELDSYNC_OK ? 5 : 6);
}

int fsa__dev_crash(fsa__fleet_t *f, fsa__device_t *d, bool before_send)
{
    int pfd[2];
    if (pipe(pfd) != 0) {
        fsa__dev_error(d, "crash: pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        fsa__dev_error(d, "crash: fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close(pfd[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a simulator stopped by a signal takes it along */
        crash_child_run(f, d, pfd[1], before_send);
    }
    close(pfd[1]);
    bool mid_cycle = false, pushing = false;
    struct pollfd p = {pfd[0], POLLIN, 0};
    int r;
    do {
        r = poll(&p, 1, 20000);
    } while (r < 0 && errno == EINTR);
    char c = 0;
    if (r == 1 && read(pfd[0], &c, 1) == 1 && c == 'p') {
        pushing = true;
        if (!before_send) {
            /* A moment into the request: the server may or may not have committed the batch;
             * either way the answer never arrives. */
            uint64_t s = f->seed ^ (uint64_t)d->index;
            struct timespec ts = {0, (long)(fsa__mix(&s) % 3000000)};
            nanosleep(&ts, NULL);
        }
        mid_cycle = kill(pid, SIGKILL) == 0;
    } else {
        kill(pid, SIGKILL);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    close(pfd[0]);
    /* Killed by our SIGKILL, not finished on its own before it: a crash mid-cycle. */
    mid_cycle = mid_cycle && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    if (mid_cycle)
        d->crashes++;
    /* The reboot: a new port (new monotonic epoch, new random sequence), same journal. */
    d->boot++;
    if (dev_boot(f, d) != FSA_OK)
        fsa__dev_error(d, "cannot reboot after the crash");
    if (mid_cycle)
        return 1;
    /* While sending, the child may win the race and finish its cycle before the kill lands: no
     * crash then, but nothing wrong either. Before the push, it never gets that far. */
    return pushing && !before_send && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}
