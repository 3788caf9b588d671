/* fieldsync-sim: the command line: a fleet of simulated devices against a server, checked. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/args.h"
#include "agent/sim/fleet.h"
#include "port/alloc.h"
#include "port/daemon.h"
#include "port/files.h"
#include "port/opts.h"
#include "storage/libs.h"
#include "sync/devices.h"
#include "sync/transport.h"

#define DEVICES_MAX FSA_DEVICES_MAX
#define OPS_MAX 5000 /* checkpoints seeded one admin request each; histories stay < 1 MiB */
#define WORKERS_MAX 64
#define DEFAULT_DEVICES 20
#define DEFAULT_OPS 100
#define SERVERS_MAX 16
#define PROCS_MAX 8
#define DEFAULT_FLAKY_FAULTS "5xx=0.05,429=0.05,drop=0.05,reset=0.03,latency=1,retry-after=1"

static const char USAGE[] =
    "usage: fieldsync-sim [--devices N] [--scenario NAME] [--seed S] [--ops N] [--duration D]\n"
    "                     [--faults SPEC] [--server URL]... --devices-file F\n"
    "                     [--admin-token-file F --admin-url URL] [--server-hook CMD]\n"
    "                     [--site-reader ID]\n"
    "                     [--report FILE.json] [--html FILE.html] [--workdir DIR]\n"
    "                     [--workers N] [--journal-sync normal|full]\n"
    "\n"
    "Runs N simulated devices, each with its own journal, the real recording calls and the real\n"
    "sync engine over real HTTP, through the platform's race scenarios against a fieldsync\n"
    "server; then reads the server's final state and checks every invariant (nothing lost or\n"
    "doubled, one winner per race, groups whole, conflicts recorded where expected).\n"
    "\n"
    "  --devices N          simulated devices (default 20, at most 100000)\n"
    "  --scenario NAME      autoclose, checkpoints, escalation, ticketlog, json, attendance,\n"
    "                       flaky, or all (default: all, each on a fresh server database)\n"
    "  --seed S             seed of every choice and of the devices' ports (default 1)\n"
    "  --ops N              scale of each scenario (1..5000): checkpoints, escalations, history\n"
    "                       entries, keys (default 100; see docs/sim.md)\n"
    "  --duration D         repeat the scenarios until D has passed (e.g. 90s, 5m, 1h)\n"
    "  --faults SPEC        server faults for every scenario, e.g.\n"
    "                       '5xx=0.05,429=0.05,drop=0.05,reset=0.03,latency=1,retry-after=1',\n"
    "                       or 'none' (default: faults in 'flaky' only, as above)\n"
    "  --server URL         use this server instead of starting one; needs --devices-file;\n"
    "                       give it again for each process of the server (at most 16): the\n"
    "                       devices are spread over them, the final state is read through one\n"
    "  --devices-file F     the devices and secrets the server knows ({\"devices\": [...]});\n"
    "                       device 0 creates the entities, and also reads the final state\n"
    "                       through pulls (its scope must cover the run, or it has none)\n"
    "  --admin-token-file F the server's admin token: entities seeded and the final state read\n"
    "                       through the admin API, and the server's counters checked\n"
    "  --admin-url URL      with --admin-token-file: the address of the server's admin API\n"
    "                       (its own listener, printed as 'admin listening on URL'),\n"
    "                       http://HOST:PORT or unix:PATH\n"
    "  --server-hook CMD    without the admin API: a shell command the server's actor runs,\n"
    "                       {type} and {id} replaced, e.g. 'ssh stg ./manage.py autoclose\n"
    "                       {type} {id}'; without it `autoclose` cannot run\n"
    "  --server-procs N     own server: N processes on one database (default 1, at most 8)\n"
    "  --server-db URI      own server: this PostgreSQL database (postgresql://...) instead of a\n"
    "                       fresh SQLite file per scenario; ids are then unique per run\n"
    "  --site-reader ID     without the admin API: a device of the devices file whose scope\n"
    "                       has the sites site0..site6 and s1, to read every attendance\n"
    "                       through pulls\n"
    "                       (without it, attendances are checked through the admin API only)\n"
    "  --report FILE.json   write the JSON report\n"
    "  --html FILE.html     write a self-contained HTML report with charts\n"
    "  --workdir DIR        keep journals, server database and logs in DIR (created, must be\n"
    "                       empty); default: a temporary directory removed at the end, under\n"
    "                       $TMPDIR, else /dev/shm (memory) when writable, else /tmp\n"
    "  --workers N          threads stepping devices (default 8, at most 64)\n"
    "  --journal-sync MODE  the devices' journals: normal (default, see docs/sim.md) or full\n"
    "\n"
    "The server is $FIELDSYNC_SERVER, or fieldsync-server from the build tree or installed\n"
    "beside this program. Exit status: 0 every checked invariant holds; 1 an invariant failed,\n"
    "nothing could be checked, a scenario could not run, or the run could not be completed;\n"
    "2 usage error.\n";

static const char *prog = "fieldsync-sim";

/* One-line errors on stderr (agent/args.h): usage errors exit 2, others return 1. */
#define die_usage(...) fsa_cli_die_usage(prog, __VA_ARGS__)
#define fail(...) fsa_cli_fail(prog, __VA_ARGS__)

static long long parse_int(const char *opt, const char *v, long long min, long long max)
{
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < min || n > max)
        die_usage("%s needs a whole number from %lld to %lld, not '%s'", opt, min, max, v);
    return n;
}

static uint64_t parse_seed(const char *v)
{
    char *end = NULL;
    errno = 0;
    if (v[0] == '-' || v[0] == '\0')
        die_usage("--seed needs a non-negative whole number, not '%s'", v);
    unsigned long long n = strtoull(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0')
        die_usage("--seed needs a non-negative whole number, not '%s'", v);
    return (uint64_t)n;
}

/* "90", "90s", "500ms", "5m", "1h" into ms. */
static int64_t parse_duration(const char *v)
{
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno == 0 && end != v && n > 0) {
        int64_t mul;
        if (strcmp(end, "ms") == 0)
            mul = 1;
        else if (strcmp(end, "s") == 0 || *end == '\0')
            mul = 1000;
        else if (strcmp(end, "m") == 0)
            mul = 60000;
        else if (strcmp(end, "h") == 0)
            mul = 3600000;
        else
            mul = 0;
        if (mul != 0 && n <= INT64_C(7) * 24 * 3600 * 1000 / mul)
            return (int64_t)n * mul;
    }
    die_usage("--duration needs a positive time such as 90s, 5m or 1h (at most a week), not '%s'",
              v);
    return 0;
}

/* Server fault options from a SPEC; args receives pairs for fieldsync-server. */
typedef struct faults {
    char text[256];
    char vals[8][32];
    const char *args[20];
    size_t nargs;
} faults_t;

static void parse_faults(const char *spec, uint64_t seed, faults_t *out)
{
    memset(out, 0, sizeof *out);
    if (strcmp(spec, "none") == 0)
        return;
    static const struct {
        const char *key, *flag;
        bool rate;
    } keys[] = {{"5xx", "--fault-5xx", true},
                {"429", "--fault-429", true},
                {"drop", "--fault-drop", true},
                {"reset", "--fault-reset", true},
                {"latency", "--fault-latency-ms", false},
                {"retry-after", "--fault-retry-after", false}};
    char copy[256];
    if (strlen(spec) >= sizeof copy)
        die_usage("--faults: the spec is too long");
    snprintf(copy, sizeof copy, "%s", spec);
    size_t nv = 0;
    bool seen[6] = {false};
    for (char *item = copy; item != NULL && *item != '\0';) {
        char *comma = strchr(item, ',');
        if (comma != NULL)
            *comma = '\0';
        char *eq = strchr(item, '=');
        if (eq == NULL)
            die_usage("--faults: '%s' is not KEY=VALUE (keys: 5xx 429 drop reset latency "
                      "retry-after)",
                      item);
        *eq = '\0';
        const char *val = eq + 1;
        size_t k;
        for (k = 0; k < sizeof keys / sizeof keys[0]; k++)
            if (strcmp(item, keys[k].key) == 0)
                break;
        if (k == sizeof keys / sizeof keys[0])
            die_usage("--faults: unknown fault '%s' (5xx 429 drop reset latency retry-after)",
                      item);
        if (seen[k])
            die_usage("--faults: '%s' given twice", item);
        seen[k] = true;
        if (keys[k].rate) {
            char *end = NULL;
            errno = 0;
            double d = strtod(val, &end);
            if (errno != 0 || end == val || *end != '\0' || !(d >= 0.0 && d <= 1.0))
                die_usage("--faults: %s needs a rate from 0 to 1, not '%s'", item, val);
        } else {
            (void)parse_int(strcmp(item, "latency") == 0 ? "--faults latency (ms)"
                                                         : "--faults retry-after (s)",
                            val, 0, strcmp(item, "latency") == 0 ? 10000 : 3600);
        }
        snprintf(out->vals[nv], sizeof out->vals[nv], "%s", val);
        out->args[out->nargs++] = keys[k].flag;
        out->args[out->nargs++] = out->vals[nv++];
        size_t l = strlen(out->text);
        /* No longer than the spec (its own characters): a cut would be a bug, said as one. */
        int w = snprintf(out->text + l, sizeof out->text - l, "%s%s=%s", l ? "," : "", item, val);
        if (w < 0 || (size_t)w >= sizeof out->text - l)
            die_usage("--faults: the spec is too long");
        item = comma != NULL ? comma + 1 : NULL;
    }
    snprintf(out->vals[nv], sizeof out->vals[nv], "%" PRIu64, seed % 1000000000u + 1);
    out->args[out->nargs++] = "--fault-seed";
    out->args[out->nargs++] = out->vals[nv];
    out->args[out->nargs] = NULL;
}

static bool dir_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return false;
    bool empty = true;
    const struct dirent *e;
    while (empty && (e = readdir(d)) != NULL)
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    return empty;
}

/* ---- the devices ---- */

static bool hex_random(char *out, size_t nbytes)
{
    unsigned char b[64];
    if (nbytes > sizeof b)
        return false;
    fsa_port_t *p = fsa_port_posix();
    if (p->random(p->ctx, b, nbytes) != FSA_OK)
        return false;
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    memset(b, 0, sizeof b);
    return true;
}

/* The sites the scenarios' attendances use (attendance: site0 .. site6; flaky: s1): the site
 * reader's scope. */
#define SITE_SCOPE                                                                                 \
    "{\"sites\": [\"site0\", \"site1\", \"site2\", \"site3\", \"site4\", \"site5\", \"site6\", "   \
    "\"s1\"]}"

/* Our own server: device ids and fresh secrets, written to a devices file (0600), each device
 * with the scope of fleet.h (what its scenarios need: its own job, its race group's job, its
 * group's shared entities, the crew's); then the two readers of the final state when the checks
 * go through pulls: "reader" (no scope: every jobneed and ticket) and "site-reader" (scope: the
 * sites, so every attendance). ops: --ops (the crew is the first 2 x ops devices). */
static int make_devices(fsa__fleet_t *f, const char *path, int ops)
{
    size_t cap = 256 + ((size_t)f->ndev + 2) * (220 + 4 * sizeof f->tag);
    char *text = fsa_malloc(cap);
    if (text == NULL)
        return fail("out of memory");
    size_t n = (size_t)snprintf(text, cap, "{\"devices\": [");
    for (int i = 0; i < f->ndev + 2; i++) {
        fsa__device_t *d = &f->dev[i];
        d->index = i;
        char scope[sizeof d->id + 4 * (sizeof f->tag + 16) + 64] = "";
        if (i == f->ndev) {
            snprintf(d->id, sizeof d->id, "reader");
        } else if (i == f->ndev + 1) {
            snprintf(d->id, sizeof d->id, "site-reader");
            snprintf(scope, sizeof scope, ", \"scope\": %s", SITE_SCOPE);
        } else {
            snprintf(d->id, sizeof d->id, "dev%05d", i);
            char race[sizeof f->tag + 16], grp[sizeof f->tag + 16], crew[sizeof f->tag + 16];
            fsa__scope_key(f, "race", fsa__race_of(i, f->ndev), race, sizeof race);
            fsa__scope_key(f, "grp", i / FSA__GROUP_DEVICES, grp, sizeof grp);
            fsa__scope_key(f, "crew", -1, crew, sizeof crew);
            snprintf(scope, sizeof scope,
                     ", \"scope\": {\"people\": [\"%s\", \"%s\", \"%s\"%s%s%s]}", d->id, race, grp,
                     i < 2 * ops ? ", \"" : "", i < 2 * ops ? crew : "", i < 2 * ops ? "\"" : "");
        }
        char hex[2 * FSA_LIMIT_SECRET_BYTES + 1];
        if (!hex_random(hex, FSA_LIMIT_SECRET_BYTES) ||
            fsa_signer_key_parse(hex, strlen(hex), &d->key) != FSA_OK) {
            fsa_free(text);
            return fail("no random source for the device secrets");
        }
        n += (size_t)snprintf(text + n, cap - n, "%s{\"id\": \"%s\", \"secret\": \"%s\"%s}",
                              i ? ", " : "", d->id, hex, scope);
        fsa_signer_wipe(hex, sizeof hex);
        if (n >= cap) {
            fsa_signer_wipe(text, cap);
            fsa_free(text);
            return fail("out of memory for the devices file");
        }
    }
    snprintf(text + n, cap - n, "]}\n");
    char err[FSA__ERR_BYTES];
    fsa_status_t st = fsa__write_private(path, text, err, sizeof err);
    fsa_signer_wipe(text, cap);
    fsa_free(text);
    return st == FSA_OK ? EXIT_SUCCESS : fail("%s", err);
}

/* Another server: the devices and secrets it knows, from the devices file. */
static int load_devices(fsa__fleet_t *f, const char *path, bool devices_given,
                        const char *site_reader)
{
    char err[FSA__ERR_BYTES];
    fsa_device_entry_t *devs = NULL;
    size_t count = 0;
    if (fsa_devices_load(path, &devs, &count, err, sizeof err) != FSA_OK)
        return fail("%s", err);
    if (count == 0) {
        fsa_devices_free(devs, count);
        return fail("devices file %s lists no device", path);
    }
    /* The fleet: the file's devices in order but the site reader, whose pulls must not be
     * those of a device that records (it read its own scenarios' attendances as extra). */
    size_t fleet = count;
    for (size_t i = 0; site_reader != NULL && i < count; i++)
        fleet -= strcmp(devs[i].id, site_reader) == 0;
    if (fleet == 0) {
        fsa_devices_free(devs, count);
        return fail("devices file %s lists no device besides the site reader", path);
    }
    if (devices_given && (size_t)f->ndev > fleet) {
        fsa_devices_free(devs, count);
        return fail("--devices %d, but the devices file %s lists only %zu%s", f->ndev, path, fleet,
                    fleet < count ? " besides the site reader" : "");
    }
    if (!devices_given) {
        f->ndev = fleet < DEVICES_MAX ? (int)fleet : DEVICES_MAX;
        fsa__device_t *nd = fsa_calloc((size_t)f->ndev + 2, sizeof *nd);
        if (nd == NULL) {
            fsa_devices_free(devs, count);
            return fail("out of memory");
        }
        fsa_free(f->dev);
        f->dev = nd;
    }
    for (size_t i = 0, n = 0; n < (size_t)f->ndev; i++) {
        if (site_reader != NULL && strcmp(devs[i].id, site_reader) == 0)
            continue;
        fsa__device_t *d = &f->dev[n];
        d->index = (int)n++;
        snprintf(d->id, sizeof d->id, "%s", devs[i].id);
        if (fsa_signer_key_parse(devs[i].secret_hex, strlen(devs[i].secret_hex), &d->key) !=
            FSA_OK) {
            fsa_devices_free(devs, count);
            return fail("devices file %s: the secret of %s is not 64 hex characters", path, d->id);
        }
    }
    /* The reader: device 0's identity on a journal of its own (it only pulls; device 0 created
     * the scenario's entities, so it sees them whatever its scope). */
    fsa__device_t *r = &f->dev[f->ndev];
    r->index = f->ndev;
    memcpy(r->id, f->dev[0].id, sizeof r->id);
    r->key = f->dev[0].key;
    /* The site reader: the device named by --site-reader (its scope covers the sites). */
    f->site_reader = NULL;
    for (size_t i = 0; site_reader != NULL && i < count; i++) {
        if (strcmp(devs[i].id, site_reader) != 0)
            continue;
        fsa__device_t *s = &f->dev[f->ndev + 1];
        s->index = f->ndev + 1;
        snprintf(s->id, sizeof s->id, "%s", devs[i].id);
        if (fsa_signer_key_parse(devs[i].secret_hex, strlen(devs[i].secret_hex), &s->key) !=
            FSA_OK) {
            fsa_devices_free(devs, count);
            return fail("devices file %s: the secret of %s is not 64 hex characters", path, s->id);
        }
        f->site_reader = s;
    }
    fsa_devices_free(devs, count);
    if (site_reader != NULL && f->site_reader == NULL)
        return fail("--site-reader %s: no such device in %s", site_reader, path);
    return EXIT_SUCCESS;
}

static int read_token(const char *path, char *out, size_t cap)
{
    char *text = NULL, err[FSA__ERR_BYTES];
    size_t len = 0;
    fsa_status_t st = fsa_file_read(path, 4096, 1, &text, &len, err, sizeof err);
    if (st != FSA_OK)
        return fail("%s", err);
    size_t n = strcspn(text, "\r\n");
    while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\t'))
        n--;
    if (n < 16 || n >= cap) {
        fsa_file_wipe_free(text, len);
        return fail("admin token file %s must hold a token of 16 to %zu characters", path, cap - 1);
    }
    memcpy(out, text, n);
    out[n] = '\0';
    fsa_file_wipe_free(text, len);
    return EXIT_SUCCESS;
}

/* The peak resident set of a running process (VmHWM of /proc/PID/status) in KiB; 0 when it
 * cannot be read. */
static int64_t peak_rss_of(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return 0;
    int64_t kib = 0;
    while (fgets(line, sizeof line, fp) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0) {
            char *end = NULL;
            long long v = strtoll(line + 6, &end, 10);
            kib = end != line + 6 && v > 0 ? (int64_t)v : 0;
            break;
        }
    (void)fclose(fp);
    return kib;
}

/* ---- main ---- */

typedef struct opts {
    int devices, ops, workers;
    bool devices_given;
    const char *scenario;
    uint64_t seed;
    int64_t duration_ms;
    const char *faults, *server, *devices_file, *token_file, *report, *html, *workdir;
    const char *admin_url; /* --admin-url: the admin listener of a --server */
    const char *servers[SERVERS_MAX];
    int nservers;
    const char *hook, *site_reader, *server_db;
    int procs;
    bool sync_full;
} opts_t;

/* The options, in the order of the usage text. Only --server may be given again (once for each
 * process of the server). */
enum {
    O_DEVICES,
    O_SCENARIO,
    O_SEED,
    O_OPS,
    O_DURATION,
    O_FAULTS,
    O_SERVER,
    O_DEVICES_FILE,
    O_ADMIN_TOKEN_FILE,
    O_ADMIN_URL,
    O_SERVER_HOOK,
    O_SERVER_PROCS,
    O_SERVER_DB,
    O_SITE_READER,
    O_REPORT,
    O_HTML,
    O_WORKDIR,
    O_WORKERS,
    O_JOURNAL_SYNC,
    O_COUNT
};

/* o's value as a whole number from min to max into *out, when it was given. */
static void take_int(const fsa_opt_t *o, int min, int max, int *out)
{
    long long v = 0;
    char err[256];
    if (o->value == NULL)
        return;
    if (fsa_opts_int(o->name, o->value, min, max, &v, err, sizeof err) != FSA_OK)
        die_usage("%s", err);
    *out = (int)v;
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Each option's own value: numbers in range, URLs of the right scheme, known names. */
static void take_values(int argc, char **argv, const fsa_opt_t *opt, opts_t *o)
{
    take_int(&opt[O_DEVICES], 1, DEVICES_MAX, &o->devices);
    o->devices_given = opt[O_DEVICES].value != NULL;
    take_int(&opt[O_OPS], 1, OPS_MAX, &o->ops);
    take_int(&opt[O_WORKERS], 1, WORKERS_MAX, &o->workers);
    take_int(&opt[O_SERVER_PROCS], 1, PROCS_MAX, &o->procs);
    if (opt[O_SEED].value != NULL)
        o->seed = parse_seed(opt[O_SEED].value);
    if (opt[O_DURATION].value != NULL)
        o->duration_ms = parse_duration(opt[O_DURATION].value);
    if (opt[O_SCENARIO].value != NULL)
        o->scenario = opt[O_SCENARIO].value;
    o->faults = opt[O_FAULTS].value;
    o->hook = opt[O_SERVER_HOOK].value;
    o->site_reader = opt[O_SITE_READER].value;
    o->devices_file = opt[O_DEVICES_FILE].value;
    o->token_file = opt[O_ADMIN_TOKEN_FILE].value;
    o->report = opt[O_REPORT].value;
    o->html = opt[O_HTML].value;
    o->workdir = opt[O_WORKDIR].value;

    size_t n = 0;
    char err[256];
    if (fsa_opts_values(argc - 1, argv + 1, opt, O_COUNT, FSA_OPTS_NONEMPTY, "server", o->servers,
                        SERVERS_MAX, &n, err, sizeof err) != FSA_OK)
        die_usage("%s", err);
    o->nservers = (int)n;
    for (size_t i = 0; i < n; i++) {
        const char *v = o->servers[i];
        if (!has_prefix(v, "http://") && !has_prefix(v, "https://"))
            die_usage("--server needs an http:// or https:// URL, not '%s'", v);
        if (strlen(v) >= FSA__URL_BYTES)
            die_usage("--server URL too long: '%s'", v);
    }
    o->server = n > 0 ? o->servers[0] : NULL;

    const char *v = opt[O_SERVER_DB].value;
    if (v != NULL && !has_prefix(v, "postgresql://") && !has_prefix(v, "postgres://"))
        die_usage("--server-db needs a postgresql:// URI (a SQLite file per scenario is the "
                  "default)");
    o->server_db = v;
    v = opt[O_ADMIN_URL].value;
    if (v != NULL && !has_prefix(v, "http://") && !has_prefix(v, "https://") &&
        !has_prefix(v, "unix:"))
        die_usage("--admin-url needs an http://, https:// or unix: address, not '%s'", v);
    o->admin_url = v;
    v = opt[O_JOURNAL_SYNC].value;
    if (v != NULL && strcmp(v, "full") != 0 && strcmp(v, "normal") != 0)
        die_usage("--journal-sync needs 'normal' or 'full', not '%s'", v);
    o->sync_full = v != NULL && strcmp(v, "full") == 0;
}

/* The options that go together, or only with --server, or only without it. */
static void check_combinations(const opts_t *o)
{
    size_t ns = 0;
    const fsa__scenario_t *sc = fsa__scenarios(&ns);
    bool known = strcmp(o->scenario, "all") == 0;
    for (size_t i = 0; i < ns && !known; i++)
        known = strcmp(o->scenario, sc[i].name) == 0;
    if (!known)
        die_usage("unknown scenario '%s' (autoclose, checkpoints, escalation, ticketlog, json, "
                  "attendance, flaky, all)",
                  o->scenario);
    if (o->server != NULL && o->devices_file == NULL)
        die_usage("--server needs --devices-file (the devices' secrets)");
    if (o->server == NULL && o->devices_file != NULL)
        die_usage("--devices-file goes with --server (the simulator writes its own otherwise)");
    if (o->server == NULL && o->token_file != NULL)
        die_usage("--admin-token-file goes with --server (the simulator makes its own otherwise)");
    if ((o->token_file != NULL) != (o->admin_url != NULL))
        die_usage("--admin-token-file and --admin-url go together (the server's admin API has "
                  "its own listener: fieldsync-server --admin-listen)");
    if (o->server != NULL && (o->procs > 1 || o->server_db != NULL))
        die_usage("--server-procs and --server-db are for the simulator's own server");
    if (o->server == NULL && o->site_reader != NULL)
        die_usage("--site-reader goes with --server (the simulator makes its own otherwise)");
    if (o->server == NULL && o->hook != NULL)
        die_usage(
            "--server-hook goes with --server (the simulator's own server has its admin API)");
    if (o->hook != NULL && o->token_file != NULL)
        die_usage("--server-hook and --admin-token-file: the autoclose goes one way, the admin "
                  "API's when there is a token (give one of them)");
    if (o->server != NULL && o->faults != NULL)
        die_usage("--faults needs the simulator's own server (they are fieldsync-server options)");
    if (o->faults != NULL) {
        faults_t tmp;
        parse_faults(o->faults, o->seed, &tmp); /* validates now, before anything runs */
    }
}

/* Checked now, not after a run of minutes: the report files' directories must be writable. */
static void check_outputs(const opts_t *o)
{
    const char *outs[2] = {o->report, o->html};
    for (int i = 0; i < 2; i++) {
        if (outs[i] == NULL)
            continue;
        char dir[FSA__PATH_BYTES];
        if ((size_t)snprintf(dir, sizeof dir, "%s", outs[i]) >= sizeof dir)
            die_usage("%s: path too long", i == 0 ? "--report" : "--html");
        char *slash = strrchr(dir, '/');
        if (slash == dir)
            dir[1] = '\0';
        else if (slash != NULL)
            *slash = '\0';
        else
            snprintf(dir, sizeof dir, ".");
        if (access(dir, W_OK) != 0)
            die_usage("%s %s: directory %s is missing or not writable",
                      i == 0 ? "--report" : "--html", outs[i], dir);
    }
}

/* The command line into *o; --help prints the usage and exits 0; a usage error is one line and
 * exit 2. No option may be empty. */
static void parse_args(int argc, char **argv, opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->devices = DEFAULT_DEVICES;
    o->ops = DEFAULT_OPS;
    o->workers = 8;
    o->scenario = "all";
    o->seed = 1;
    o->procs = 1;
    fsa_opt_t opt[O_COUNT] = {
        [O_DEVICES] = {"devices", true, false, NULL},
        [O_SCENARIO] = {"scenario", true, false, NULL},
        [O_SEED] = {"seed", true, false, NULL},
        [O_OPS] = {"ops", true, false, NULL},
        [O_DURATION] = {"duration", true, false, NULL},
        [O_FAULTS] = {"faults", true, false, NULL},
        [O_SERVER] = {"server", true, true, NULL},
        [O_DEVICES_FILE] = {"devices-file", true, false, NULL},
        [O_ADMIN_TOKEN_FILE] = {"admin-token-file", true, false, NULL},
        [O_ADMIN_URL] = {"admin-url", true, false, NULL},
        [O_SERVER_HOOK] = {"server-hook", true, false, NULL},
        [O_SERVER_PROCS] = {"server-procs", true, false, NULL},
        [O_SERVER_DB] = {"server-db", true, false, NULL},
        [O_SITE_READER] = {"site-reader", true, false, NULL},
        [O_REPORT] = {"report", true, false, NULL},
        [O_HTML] = {"html", true, false, NULL},
        [O_WORKDIR] = {"workdir", true, false, NULL},
        [O_WORKERS] = {"workers", true, false, NULL},
        [O_JOURNAL_SYNC] = {"journal-sync", true, false, NULL},
    };
    fsa_opts_result_t r;
    char err[256];
    if (fsa_opts_parse(argc - 1, argv + 1, opt, O_COUNT, NULL, 0, FSA_OPTS_NONEMPTY, &r, err,
                       sizeof err) != FSA_OK)
        die_usage("%s", err);
    if (r.help) {
        fputs(USAGE, stdout);
        exit(EXIT_SUCCESS);
    }
    take_values(argc, argv, opt, o);
    check_combinations(o);
    check_outputs(o);
}

/* The scenarios to run, in order. */
static size_t pick(const opts_t *o, const fsa__scenario_t **out, size_t cap)
{
    size_t ns = 0, n = 0;
    const fsa__scenario_t *sc = fsa__scenarios(&ns);
    for (size_t i = 0; i < ns && n < cap; i++)
        if (strcmp(o->scenario, "all") == 0 || strcmp(o->scenario, sc[i].name) == 0)
            out[n++] = &sc[i];
    return n;
}

static void command_line(int argc, char **argv, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < argc && n + 1 < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? " " : "", argv[i]);
    if (n >= cap)
        out[cap - 1] = '\0';
}

/* One run of the simulator: what main's steps share. */
typedef struct sim {
    opts_t o;
    int64_t t_start;
    fsa__fleet_t f;
    char workdir[FSA__PATH_BYTES];
    bool keep;                     /* --workdir: kept at the end */
    char token[256];               /* the admin token; wiped at the end */
    fsa__server_t srvs[PROCS_MAX]; /* the simulator's own server processes */
    char devices_file[FSA__PATH_BYTES + 32], token_file[FSA__PATH_BYTES + 32];
    char runtag[32];
    int dead_fd;
    fsa__result_t *results;
    size_t nres, capres;
    int64_t server_rss; /* the peak of the server processes, KiB */
} sim_t;

/* The fleet of --devices devices (and the two readers), and libcurl's process-wide set-up. */
static int setup_fleet(sim_t *s)
{
    char err[FSA__ERR_BYTES];
    fsa__fleet_t *f = &s->f;
    f->ndev = s->o.devices;
    f->workers = s->o.workers;
    f->seed = s->o.seed;
    f->sync_normal = !s->o.sync_full;
    f->progress = isatty(STDERR_FILENO) != 0;
    f->dev = fsa_calloc((size_t)f->ndev + 2, sizeof *f->dev); /* and the readers */
    if (f->dev == NULL)
        return fail("out of memory for %d devices", f->ndev);
    if (fsa__fleet_init(f, err, sizeof err) != FSA_OK) {
        fsa_free(f->dev);
        f->dev = NULL;
        return fail("%s", err);
    }
    /* libcurl's process-wide set-up, before the worker threads make their transports. */
    if (fsa_transport_global_init() != FSA_OK) {
        fsa__fleet_free(f);
        return fail("libcurl failed to initialise");
    }
    return EXIT_SUCCESS;
}

/* --workdir (created, must be empty), or a temporary directory. */
static int make_workdir(sim_t *s)
{
    s->keep = s->o.workdir != NULL;
    if (s->keep) {
        struct stat st;
        if (snprintf(s->workdir, sizeof s->workdir, "%s", s->o.workdir) >=
            (int)sizeof s->workdir - 64)
            die_usage("--workdir path is too long");
        if (stat(s->workdir, &st) == 0) {
            if (!S_ISDIR(st.st_mode))
                die_usage("--workdir %s exists and is not a directory", s->workdir);
            if (!dir_empty(s->workdir))
                die_usage("--workdir %s is not empty (journals of another run would be reused)",
                          s->workdir);
        } else if (mkdir(s->workdir, 0700) != 0) {
            return fail("cannot create --workdir %s: %s", s->workdir, strerror(errno));
        }
        return EXIT_SUCCESS;
    }
    /* $TMPDIR, else memory (/dev/shm) when there is one: thousands of journals are created,
     * opened, closed and removed, and a disk file system pays for each file (and each fsync)
     * what the simulation does not need, since it simulates process deaths, never power cuts
     * (docs/sim.md). Else /tmp. */
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0')
        tmp = access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(s->workdir, sizeof s->workdir, "%s/fieldsync-sim-XXXXXX", tmp);
    if (mkdtemp(s->workdir) == NULL)
        return fail("cannot create a temporary directory under %s: %s", tmp, strerror(errno));
    return EXIT_SUCCESS;
}

/* A per-run random value mixed into the devices' seeds (op ids and nonces unique forever on a
 * database that outlives the run), and the run's tag "rXXXXXXXX" for the entity ids. */
static int random_runtag(sim_t *s)
{
    fsa_port_t *p = fsa_port_posix();
    uint32_t r = 0;
    if (p->random(p->ctx, &s->f.seed_mix, sizeof s->f.seed_mix) != FSA_OK ||
        p->random(p->ctx, &r, sizeof r) != FSA_OK)
        return fail("no random source");
    snprintf(s->runtag, sizeof s->runtag, "r%08" PRIx32, r);
    return EXIT_SUCCESS;
}

/* The simulator's own server: the binary, an admin token and a devices file of fresh secrets in
 * the workdir, the URLs of --server-procs processes. */
static int setup_own_server(sim_t *s)
{
    char err[FSA__ERR_BYTES];
    fsa__server_t *srv0 = &s->srvs[0];
    if (fsa__server_find(srv0, err, sizeof err) != FSA_OK)
        return fail("%s", err);
    snprintf(s->devices_file, sizeof s->devices_file, "%s/devices.json", s->workdir);
    snprintf(s->token_file, sizeof s->token_file, "%s/admin.token", s->workdir);
    char line[sizeof s->token + 2];
    if (!hex_random(s->token, 24))
        return fail("no random source for the admin token");
    snprintf(line, sizeof line, "%s\n", s->token);
    fsa_status_t wst = fsa__write_private(s->token_file, line, err, sizeof err);
    fsa_signer_wipe(line, sizeof line);
    if (wst != FSA_OK)
        return fail("%s", err);
    snprintf(s->runtag, sizeof s->runtag, "s%" PRIu64, s->o.seed % 1000000000u);
    for (int i = 1; i < s->o.procs; i++) {
        snprintf(s->srvs[i].binary, sizeof s->srvs[i].binary, "%s", srv0->binary);
        snprintf(s->srvs[i].found_via, sizeof s->srvs[i].found_via, "%s", srv0->found_via);
    }
    if (s->o.procs > 1) {
        s->f.urls = fsa_calloc((size_t)s->o.procs, sizeof *s->f.urls);
        if (s->f.urls == NULL)
            return fail("out of memory");
        s->f.nurls = s->o.procs;
    }
    /* A database that outlives the run: ids and nonces unique forever (see --server). */
    if (s->o.server_db != NULL && random_runtag(s) != EXIT_SUCCESS)
        return EXIT_FAILURE;
    snprintf(s->f.tag, sizeof s->f.tag, "%s", s->runtag);
    return make_devices(&s->f, s->devices_file, s->o.ops);
}

/* Another server (--server): the devices and the admin token it knows, its URLs. */
static int setup_other_server(sim_t *s)
{
    const opts_t *o = &s->o;
    int rc = load_devices(&s->f, o->devices_file, o->devices_given, o->site_reader);
    if (rc != EXIT_SUCCESS)
        return rc;
    if (o->token_file != NULL &&
        (rc = read_token(o->token_file, s->token, sizeof s->token)) != EXIT_SUCCESS)
        return rc;
    snprintf(s->f.url, sizeof s->f.url, "%s", o->server);
    s->f.urls = fsa_calloc((size_t)o->nservers, sizeof *s->f.urls);
    if (s->f.urls == NULL)
        return fail("out of memory");
    for (int i = 0; i < o->nservers; i++)
        snprintf(s->f.urls[i], sizeof s->f.urls[i], "%s", o->servers[i]);
    s->f.nurls = o->nservers;
    /* Op ids and nonces must be unique forever on a server that outlives this run. */
    if (random_runtag(s) != EXIT_SUCCESS)
        return EXIT_FAILURE;
    /* Fixed scope keys (fleet.h), so that the platform can give its devices the scopes of
     * docs/sim.md once, not per run. */
    snprintf(s->f.tag, sizeof s->f.tag, "sim");
    return EXIT_SUCCESS;
}

/* A new, zeroed result at the end of the results; NULL when out of memory. */
static fsa__result_t *result_add(sim_t *s)
{
    fsa__result_t *nr = fsa_array_grow(s->results, &s->capres, s->nres, sizeof *nr, 8, 0);
    if (nr == NULL)
        return NULL;
    s->results = nr;
    fsa__result_t *res = &s->results[s->nres++];
    memset(res, 0, sizeof *res);
    return res;
}

/* Starts the simulator's own server processes for a scenario (their faults and database in
 * dir); on failure stops those that started and records it. */
static int start_own_servers(sim_t *s, const fsa__scenario_t *sc, int round, const char *dir,
                             fsa__run_t *run)
{
    char err[FSA__ERR_BYTES];
    fsa__result_t *res = run->res;
    faults_t fl;
    const char *spec = s->o.faults != NULL ? s->o.faults
                       : sc->wants_faults  ? DEFAULT_FLAKY_FAULTS
                                           : "none";
    parse_faults(spec, s->o.seed + (uint64_t)round, &fl);
    snprintf(res->faults, sizeof res->faults, "%s", fl.text);
    run->faults = fl.text[0] != '\0';
    char db[FSA__PATH_BYTES + 96];
    snprintf(db, sizeof db, "%s/server.db", dir);
    /* --server-procs N: N processes on one database, started one after the other (the first
     * creates the schema), the devices spread over them. */
    int rc = EXIT_SUCCESS;
    for (int p = 0; p < s->o.procs && rc == EXIT_SUCCESS; p++) {
        fsa__server_t *sp = &s->srvs[p];
        snprintf(sp->log, sizeof sp->log, "%s/server%s%.0d.log", dir, p ? "." : "", p);
        if (fsa__server_start(sp, s->o.server_db != NULL ? s->o.server_db : db, s->devices_file,
                              s->token_file, fl.args, err, sizeof err) != FSA_OK) {
            fsa__inv_add(res, "scenario_ran", FSA__INV_FAIL, "%s", err);
            rc = fail("%s", err);
        }
        if (s->f.urls != NULL)
            snprintf(s->f.urls[p], sizeof s->f.urls[p], "%s", sp->url);
    }
    if (rc != EXIT_SUCCESS) {
        for (int p = 0; p < s->o.procs; p++)
            if (s->srvs[p].pid > 0)
                (void)fsa__server_stop(&s->srvs[p]);
        return rc;
    }
    snprintf(s->f.url, sizeof s->f.url, "%s", s->srvs[0].url);
    run->owned_server = true;
    return EXIT_SUCCESS;
}

/* Stops the simulator's own server processes after a scenario: their peak memory, their exit. */
static void stop_own_servers(sim_t *s, fsa__result_t *res)
{
    for (int p = 0; s->o.server == NULL && p < s->o.procs; p++) {
        fsa__server_t *sp = &s->srvs[p];
        if (sp->pid <= 0)
            continue;
        int64_t hwm = peak_rss_of(sp->pid);
        if (hwm > s->server_rss)
            s->server_rss = hwm;
        int src = fsa__server_stop(sp);
        if (src != 0)
            fsa__inv_add(res, "server_clean_exit", FSA__INV_FAIL,
                         "fieldsync-server exited with status %d (log: %s)", src, sp->log);
    }
}

/* One scenario of one round: its directory, its servers, the fleet through it, its checks.
 * EXIT_SUCCESS, or the run must stop (the reason printed). */
static int run_scenario(sim_t *s, const fsa__scenario_t *sc, size_t si, int round)
{
    char err[FSA__ERR_BYTES];
    fsa__result_t *res = result_add(s);
    if (res == NULL)
        return fail("out of memory");
    if (round > 1)
        snprintf(res->name, sizeof res->name, "%s#%d", sc->name, round);
    else
        snprintf(res->name, sizeof res->name, "%s", sc->name);
    res->devices = s->f.ndev;
    char dir[FSA__PATH_BYTES + 64];
    snprintf(dir, sizeof dir, "%s/%s.%d", s->workdir, sc->name, round);
    if (mkdir(dir, 0700) != 0)
        return fail("cannot create %s: %s", dir, strerror(errno));
    fsa__run_t run;
    memset(&run, 0, sizeof run);
    run.fleet = &s->f;
    run.ops = s->o.ops;
    run.res = res;
    run.hook = s->o.hook;
    snprintf(run.prefix, sizeof run.prefix, "%s.%s.%d.", s->runtag, sc->name, round);
    if (s->o.server == NULL) {
        int rc = start_own_servers(s, sc, round, dir, &run);
        if (rc != EXIT_SUCCESS)
            return rc;
    } else if (sc->wants_faults) {
        snprintf(res->note, sizeof res->note,
                 "server faults not injected (--server): crashes and skewed clocks only");
    }
    int rc = EXIT_SUCCESS;
    fsa__admin_t *admin = NULL;
    if (s->token[0] != '\0' &&
        fsa__admin_new(s->o.server == NULL ? s->srvs[0].admin_url : s->o.admin_url, s->token,
                       &admin, err, sizeof err) != FSA_OK)
        rc = fail("%s", err);
    run.admin = admin;
    if (rc == EXIT_SUCCESS && fsa__fleet_begin(&s->f, sc->name, (int)si + 100 * (round - 1), dir,
                                               err, sizeof err) != FSA_OK)
        rc = fail("%s", err);
    if (rc == EXIT_SUCCESS)
        fsa__scenario_run(sc, &run);
    if (s->f.progress)
        fputs("\r\033[K", stderr);
    fsa__fleet_end(&s->f);
    fsa__admin_free(admin);
    stop_own_servers(s, res);
    if (!s->keep)
        fsa__remove_tree(dir); /* the journals of a finished scenario are not needed */
    return rc;
}

/* The scenarios, round after round until --duration has passed (one round without it). */
static int run_scenarios(sim_t *s)
{
    const fsa__scenario_t *list[16];
    size_t nlist = pick(&s->o, list, 16);
    int64_t deadline = s->o.duration_ms > 0 ? s->t_start + s->o.duration_ms : 0;
    for (int round = 1;; round++) {
        for (size_t si = 0; si < nlist; si++) {
            int rc = run_scenario(s, list[si], si, round);
            if (rc != EXIT_SUCCESS)
                return rc;
        }
        if (deadline == 0 || fsa__real_ms() >= deadline)
            return EXIT_SUCCESS;
    }
}

/* What the reports say of the run as a whole. */
static void report_meta(const sim_t *s, const char *cmd, fsa__report_meta_t *meta)
{
    const fsa__server_t *srv0 = &s->srvs[0];
    memset(meta, 0, sizeof *meta);
    meta->command = cmd;
    meta->seed = s->o.seed;
    meta->devices = s->f.ndev;
    meta->ops = s->o.ops;
    meta->workers = s->o.workers;
    meta->server_url =
        s->o.server != NULL ? s->o.server : (srv0->url[0] ? srv0->url : "(not started)");
    meta->server_binary = s->o.server == NULL ? srv0->binary : NULL;
    meta->server_found_via = srv0->found_via;
    meta->workdir = s->workdir;
    meta->workdir_kept = s->keep;
    meta->wall_ms = fsa__real_ms() - s->t_start;
    meta->server_rss_kib = s->server_rss;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        meta->sim_rss_kib = ru.ru_maxrss;
}

/* The JSON and HTML reports, when asked for. */
static int write_reports(const sim_t *s, const fsa__report_meta_t *meta)
{
    char err[FSA__ERR_BYTES];
    int rc = EXIT_SUCCESS;
    if (s->o.report != NULL &&
        fsa__report_json(s->o.report, meta, s->results, s->nres, err, sizeof err) != FSA_OK)
        rc = fail("%s", err);
    if (s->o.html != NULL &&
        fsa__report_html(s->o.html, meta, s->results, s->nres, err, sizeof err) != FSA_OK)
        rc = fail("%s", err);
    return rc;
}

/* An honest exit: a failed invariant, a scenario that could not run, or nothing checked at all
 * is a failure, never a pass. */
static int exit_status(const sim_t *s)
{
    size_t not_run = 0;
    fsa__verdict_t v = fsa__verdict(s->results, s->nres, &not_run);
    if (not_run > 0)
        fprintf(stderr, "%s: %zu scenario(s) could not run (see 'not checked' above)\n", prog,
                not_run);
    if (v == FSA__RUN_NOTHING_CHECKED)
        fprintf(stderr, "%s: no invariant could be checked\n", prog);
    return v == FSA__RUN_PASSED ? EXIT_SUCCESS : EXIT_FAILURE;
}

/*
 * Ctrl-C (SIGINT) or SIGTERM in the middle of a run: the workdir holds every device's secret and
 * the admin token (in memory, /dev/shm, by default), so it is removed before the process ends,
 * unless it is the user's own (--workdir); the servers this run started end with it (their
 * PR_SET_PDEATHSIG). The signals are blocked in every thread from main's start and taken here
 * alone. A worker may still write a journal while the tree goes: the removal is tried again.
 */
static void *stop_on_signal(void *arg)
{
    const sim_t *s = arg;
    fsa_signal_t sig = fsa_signal_wait();
    for (int i = 0; i < 5 && !s->keep; i++)
        fsa__remove_tree(s->workdir);
    fprintf(stderr, "\n%s: stopped by SIG%s; %s %s\n", prog,
            sig == FSA_SIGNAL_TERM ? "TERM" : "INT", s->keep ? "kept" : "removed", s->workdir);
    fflush(NULL);
    fsa_process_exit_now(128 + (sig == FSA_SIGNAL_TERM ? 15 : 2));
}

int main(int argc, char **argv)
{
    fsa_libs_use_allocator();
    char perr[160];
    if (fsa_process_protect_secrets(perr, sizeof perr) != FSA_OK)
        return fail("%s", perr);
    if (fsa_signals_block_stop() != FSA_OK) /* before any thread starts: see stop_on_signal */
        return fail("cannot block SIGINT and SIGTERM");
    static sim_t s; /* large (the server table), and one per process */
    parse_args(argc, argv, &s.o);
    s.t_start = fsa__real_ms();
    s.dead_fd = -1;
    int rc = setup_fleet(&s);
    if (rc != EXIT_SUCCESS)
        return rc;
    rc = make_workdir(&s);
    if (rc != EXIT_SUCCESS)
        goto out_fleet;
    pthread_t stopper;
    if (pthread_create(&stopper, NULL, stop_on_signal, &s) != 0 || pthread_detach(stopper) != 0) {
        rc = fail("cannot start the thread that takes SIGINT and SIGTERM");
        goto out_dir;
    }
    rc = s.o.server == NULL ? setup_own_server(&s) : setup_other_server(&s);
    if (rc != EXIT_SUCCESS)
        goto out_dir;
    s.f.reader = &s.f.dev[s.f.ndev];
    if (s.o.server == NULL)
        s.f.site_reader = &s.f.dev[s.f.ndev + 1];
    if (fsa__dead_url(s.f.dead_url, sizeof s.f.dead_url, &s.dead_fd) != FSA_OK) {
        rc = fail("cannot reserve a loopback port for offline periods");
        goto out_dir;
    }

    rc = run_scenarios(&s);
    close(s.dead_fd);
    /* The summary, the status and the reports, also after a run that had to stop: what was
     * checked stands. */
    char cmd[1024];
    command_line(argc, argv, cmd, sizeof cmd);
    fsa__report_meta_t meta;
    report_meta(&s, cmd, &meta);
    fsa__report_summary(stdout, &meta, s.results, s.nres);
    fflush(stdout);
    if (exit_status(&s) != EXIT_SUCCESS)
        rc = EXIT_FAILURE;
    if (write_reports(&s, &meta) != EXIT_SUCCESS)
        rc = EXIT_FAILURE;
    for (size_t i = 0; i < s.nres; i++)
        fsa__result_free(&s.results[i]);
    fsa_free(s.results);
out_dir:
    if (!s.keep)
        fsa__remove_tree(s.workdir);
out_fleet:
    fsa_signer_wipe(s.token, sizeof s.token);
    fsa__fleet_free(&s.f);
    return rc;
}
