/* fieldsync: the command line: record actions, sync, and look at status, conflicts and locks.
 * It walks through libfieldsync's public API only (<fieldsync/fieldsync.h>), as any app does. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fieldsync/fieldsync.h>

#include "agent/args.h"
#include "agent/run.h"
#include "port/files.h"
#include "port/opts.h"
#include "port/port.h"
#include "port/timefmt.h"

#define EXIT_USAGE 2
#define EXIT_TEMPFAIL 75 /* sysexits.h EX_TEMPFAIL: try again later */

static const char *prog = "fieldsync";

/* One-line errors on stderr (agent/args.h): usage errors exit 2, others return 1. */
#define die_usage(...) fsa_cli_die_usage(prog, __VA_ARGS__)
#define fail(...) fsa_cli_fail(prog, __VA_ARGS__)

static const char USAGE[] =
    "usage: fieldsync [--db FILE] [--log-level debug|info|warn|error] COMMAND ...\n"
    "       fieldsync --version\n"
    "\n"
    "Records field actions in a local journal at once, and syncs them to the server when it can.\n"
    "The journal is FILE (or $FIELDSYNC_DB).\n"
    "\n"
    "commands:\n"
    "  init --device-id ID --server URL --secret-file FILE [--ca-file F] [--pin sha256//...]\n"
    "       [--allow-http]                      create the journal and set up sync\n"
    "  attendance checkin|checkout --people ID --site ID [--lat X --lon Y [--accuracy M]]\n"
    "  job create ID [--parent ID] [NAME=VALUE ...]\n"
    "  job transition ID --to STATUS\n"
    "  job set ID NAME=VALUE ...\n"
    "  job merge ID JSON_PATCH                  RFC 7396 patch into other_info\n"
    "  checkpoint update CHILD_ID NAME=VALUE ... the change and its tour's touch, one group\n"
    "  ticket create ID [NAME=VALUE ...]\n"
    "  ticket transition ID --to STATUS\n"
    "  ticket escalate ID [--to PERSON] [--note TEXT]   level +1 and a history entry, one group\n"
    "  ticket log ID JSON_ITEM                  append to ticketlog.ticket_history\n"
    "  ticket set ID NAME=VALUE ...\n"
    "  sync [--now]                             push and pull (exit 0: nothing pending; 75:\n"
    "                                           unreachable or asked to wait; 1: errors)\n"
    "  run [--interval S] [--metrics-file F] [--metrics-listen 127.0.0.1:PORT] ...\n"
    "                                           the daemon: syncs continuously (see run --help)\n"
    "  status [--json]                          queue, conflicts, last sync, clock offset\n"
    "  conflicts [--json] [--all]               conflicts and rejections kept for a person\n"
    "  conflicts resolve OP_ID --take server|local\n"
    "  locks [--json]                           locks held on this device\n"
    "  show TYPE ID [--json]                    local view of an attendance, jobneed or ticket\n"
    "\n"
    "NAME=VALUE takes VALUE as JSON when it parses (5, true, \"x\", {\"a\":1}), else as a string.\n"
    "Every command takes --help. Errors are one line on stderr and a non-zero exit status.\n";

/* What a command returns, checked against its output: output that could not all be written (a
 * full disk, a failed pipe) fails the command with a line saying so, whatever the command did.
 * "status --json > out.json" on a full disk must not report success with half a file. */
static int output_checked(int rc)
{
    bool failed = ferror(stdout) != 0;
    int e = 0;
    if (fclose(stdout) != 0) { /* the process ends next: a close's own error counts too */
        failed = true;
        e = errno;
    }
    if (!failed)
        return rc;
    fprintf(stderr, "fieldsync: cannot write the output%s%s\n", e != 0 ? ": " : "",
            e != 0 ? strerror(e) : "");
    return rc != EXIT_SUCCESS ? rc : EXIT_FAILURE;
}

/* ---- options: the one parser (port/opts.h); --help prints and exits, errors are usage ---- */

/* Parses argv[0..argc) into opts and positional args; dies on a usage error. */
static int parse_opts(int argc, char **argv, fsa_opt_t *opts, size_t nopts, char **pos, int maxpos,
                      const char *help)
{
    fsa_opts_result_t r;
    char err[256];
    if (fsa_opts_parse(argc, argv, opts, nopts, pos, maxpos, 0, &r, err, sizeof err) != FSA_OK)
        die_usage("%s", err);
    if (r.help) {
        fputs(help, stdout);
        exit(output_checked(EXIT_SUCCESS));
    }
    return r.npos;
}

/* ---- a small reader for the library's JSON answers (known shapes; no JSON library here) ---- */

static const char *ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* The end of the JSON string that opens at p (the closing quote's successor). */
static const char *skip_string(const char *p)
{
    for (p++; *p && *p != '"'; p++)
        if (*p == '\\' && p[1] != '\0')
            p++;
    return *p == '"' ? p + 1 : p;
}

/* The end of the JSON value at p (p itself when it is not one). */
static const char *skip_value(const char *p)
{
    p = ws(p);
    if (*p == '"')
        return skip_string(p);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        do {
            if (*p == '"') {
                p = skip_string(p);
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if (*p == '}' || *p == ']')
                depth--;
            p++;
        } while (*p && depth > 0);
        return p;
    }
    while (*p && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n')
        p++;
    return p;
}

/* The value of member name of the object at obj, or NULL. */
static const char *member(const char *obj, const char *name)
{
    const char *p = ws(obj);
    if (*p != '{')
        return NULL;
    p = ws(p + 1);
    size_t n = strlen(name);
    while (*p == '"') {
        const char *k = p + 1;
        const char *v = skip_value(p);
        bool hit = (size_t)(v - k) == n + 1 && strncmp(k, name, n) == 0;
        v = ws(v);
        if (*v != ':')
            return NULL;
        v = ws(v + 1);
        if (hit)
            return v;
        p = ws(skip_value(v));
        if (*p != ',')
            return NULL;
        p = ws(p + 1);
    }
    return NULL;
}

/* The JSON string at v into out, for a person's terminal ("" when absent or null). What came
 * from elsewhere (the server, the journal) stays one line, cannot steer the terminal and reads in
 * its order: a control character, raw or escaped (\n, \u001b), or a character that reorders
 * text becomes '?' (fsa_one_line), as does a \u escape of a character other than ASCII. */
static const char *str_of(const char *v, char *out, size_t cap)
{
    size_t o = 0;
    if (v != NULL && *v == '"') {
        for (const char *p = v + 1; *p && *p != '"' && o + 1 < cap; p++) {
            char c = *p;
            if (c == '\\' && p[1] != '\0') {
                p++;
                switch (*p) {
                case 'n': c = '\n'; break;
                case 't': c = '\t'; break;
                case 'r': c = '\r'; break;
                case 'b': c = '\b'; break;
                case 'f': c = '\f'; break;
                case 'u': {
                    unsigned u = 0;
                    int k = 0;
                    for (; k < 4 && p[1] != '\0'; k++, p++) {
                        char h = p[1];
                        u = u * 16 + (unsigned)(h >= 'a'   ? h - 'a' + 10
                                                : h >= 'A' ? h - 'A' + 10
                                                           : h - '0');
                    }
                    c = (char)(u < 0x80 ? u : (unsigned)'?');
                    break;
                }
                default: c = *p; break;
                }
            }
            if (c == '\0')
                c = '?'; /* \u0000: shown, not an end */
            out[o++] = c;
        }
    }
    out[o] = '\0';
    fsa_one_line(out);
    return out;
}

static int64_t int_of(const char *v)
{
    return v != NULL ? strtoll(v, NULL, 10) : 0;
}

/* Calls fn for each element of the array at arr. */
static void each_element(const char *arr, void (*fn)(void *arg, const char *elem), void *arg)
{
    const char *p = ws(arr);
    if (*p != '[')
        return;
    p = ws(p + 1);
    while (*p && *p != ']') {
        fn(arg, p);
        p = ws(skip_value(p));
        if (*p == ',')
            p = ws(p + 1);
        else
            break;
    }
}

/* ---- the journal ---- */

static const char *db_path;
static const char *log_level; /* --log-level, else the command's default */

/* Opens the journal through the library; exits with the library's message when it cannot. */
static fieldsync_t *open_fs(const char *label)
{
    if (db_path == NULL)
        die_usage("no journal: give --db FILE or set FIELDSYNC_DB");
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = db_path;
    cfg.label = label;
    fieldsync_t *fs = NULL;
    if (fieldsync_open(&cfg, &fs) != FIELDSYNC_OK) {
        fail("%s", fieldsync_errmsg(fs));
        (void)fieldsync_close(fs);
        exit(EXIT_FAILURE);
    }
    return fs;
}

/* Reports a recording call and closes the handle: the exit status. */
static int recorded(fieldsync_t *fs, fieldsync_status_t st, const fieldsync_rec_t *rec)
{
    int rc = EXIT_SUCCESS;
    if (st != FIELDSYNC_OK)
        rc = fail("%s", fieldsync_errmsg(fs)[0] ? fieldsync_errmsg(fs) : fieldsync_status_str(st));
    else
        printf("recorded op %s (seq %" PRId64 ")\n", rec->op_id, rec->seq);
    (void)fieldsync_close(fs);
    return rc;
}

/* ---- init ---- */

static int cmd_init(int argc, char **argv)
{
    /* The options by their index in o: a value is o[i].value (NULL when not given). */
#define INIT_OPTS(X)                                                                               \
    X(O_DEV, "=device-id")                                                                         \
    X(O_SERVER, "=server")                                                                         \
    X(O_SECRET, "=secret-file") X(O_CA, "=ca-file") X(O_PIN, "=pin") X(O_HTTP, "-allow-http")
    enum { INIT_OPTS(FSA_OPT_INDEX) O_COUNT };
    fsa_opt_t o[O_COUNT];
    const size_t no = fsa_opts_init(o, O_COUNT, INIT_OPTS(FSA_OPT_SPEC), false);
    char *pos[1];
    parse_opts(
        argc, argv, o, no, pos, 0,
        "usage: fieldsync --db FILE init --device-id ID --server URL --secret-file FILE\n"
        "                 [--ca-file F] [--pin sha256//BASE64[;sha256//...]] [--allow-http]\n"
        "Creates the journal (mode 0600) and stores how to reach the server. The secret\n"
        "file holds the device's 32-byte secret as 64 hex characters and must be mode\n"
        "0600. Plain http:// is accepted only for loopback unless --allow-http.\n");
    const char *dev = o[O_DEV].value, *server = o[O_SERVER].value;
    const char *secret = o[O_SECRET].value;
    if (dev == NULL || server == NULL || secret == NULL)
        die_usage("init needs --device-id, --server and --secret-file");
    if (db_path == NULL)
        die_usage("no journal: give --db FILE or set FIELDSYNC_DB");
    /* Everything is checked before the journal is made, and stored in one transaction. */
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.flags = FIELDSYNC_OPEN_INIT;
    cfg.journal_path = db_path;
    cfg.device_id = dev;
    cfg.server_url = server;
    cfg.secret_file = secret;
    cfg.ca_file = o[O_CA].value;
    cfg.pins = o[O_PIN].value;
    cfg.allow_http = o[O_HTTP].value != NULL;
    cfg.label = "fieldsync";
    fieldsync_t *fs = NULL;
    int rc = EXIT_SUCCESS;
    if (fieldsync_open(&cfg, &fs) != FIELDSYNC_OK)
        rc = fail("%s", fieldsync_errmsg(fs));
    else
        printf("journal %s ready for device %s, server %s\n", db_path, dev, server);
    (void)fieldsync_close(fs);
    return rc;
}

/* ---- recording ---- */

/* Whether every character of s is one of set's. */
static bool all_in(const char *s, const char *set)
{
    for (; *s != '\0'; s++)
        if (strchr(set, *s) == NULL)
            return false;
    return true;
}

/* The value of option --name as a plain decimal number from min to max ("52.5", "-13", "1e2");
 * dies on a usage error naming the option: empty, hex ("0x20"), "inf", "nan", spaces, '+'
 * (fsa_opts_real). */
static void real_opt(const char *name, const char *value, double min, double max, const char *what,
                     double *out)
{
    char err[256];
    if (fsa_opts_real(name, value, min, max, what, out, err, sizeof err) != FSA_OK)
        die_usage("%s", err);
}

static int cmd_attendance(int argc, char **argv)
{
#define ATTENDANCE_OPTS(X)                                                                         \
    X(O_PEOPLE, "=people")                                                                         \
    X(O_SITE, "=site") X(O_LAT, "=lat") X(O_LON, "=lon") X(O_ACC, "=accuracy") X(O_ID, "=id")
    enum { ATTENDANCE_OPTS(FSA_OPT_INDEX) O_COUNT };
    fsa_opt_t o[O_COUNT];
    const size_t no = fsa_opts_init(o, O_COUNT, ATTENDANCE_OPTS(FSA_OPT_SPEC), false);
    char *pos[1];
    int n = parse_opts(argc, argv, o, no, pos, 1,
                       "usage: fieldsync --db FILE attendance checkin|checkout --people ID "
                       "--site ID\n"
                       "                 [--lat X --lon Y [--accuracy M]] [--id UUID]\n"
                       "Records a check-in or check-out now (device clock corrected by the\n"
                       "server's offset). The position is optional: without --lat and --lon\n"
                       "(no GPS fix) it is recorded as null, and the server may flag it.\n");
    if (n != 1 || (strcmp(pos[0], "checkin") != 0 && strcmp(pos[0], "checkout") != 0))
        die_usage("attendance needs checkin or checkout");
    const char *people = o[O_PEOPLE].value, *site = o[O_SITE].value;
    const char *lat = o[O_LAT].value, *lon = o[O_LON].value;
    const char *acc = o[O_ACC].value, *id = o[O_ID].value;
    if (people == NULL || site == NULL)
        die_usage("attendance needs --people and --site");
    if ((lat == NULL) != (lon == NULL))
        die_usage("attendance takes --lat and --lon together, or neither (no position)");
    if (acc != NULL && lat == NULL)
        die_usage("--accuracy goes with --lat and --lon");
    /* A negative accuracy is unknown (null): a fix without --accuracy claims no precision. */
    fieldsync_position_t p = {0, 0, -1};
    if (lat != NULL) {
        real_opt("lat", lat, -90, 90, "latitude", &p.lat);
        real_opt("lon", lon, -180, 180, "longitude", &p.lon);
        if (acc != NULL)
            real_opt("accuracy", acc, 0, 1e7, "distance in metres", &p.accuracy_m);
    }
    fieldsync_t *fs = open_fs("fieldsync");
    fieldsync_rec_t rec;
    fieldsync_status_t st = fieldsync_attendance(fs, strcmp(pos[0], "checkin") == 0, people, site,
                                                 lat != NULL ? &p : NULL, id, NULL, &rec);
    return recorded(fs, st, &rec);
}

/* NAME=VALUE arguments into a JSON object (*out): a malformed, repeated or oversized one is a
 * usage error (2), as a bad option value is; only running out of memory is an error (1). */
static void fields_from(char **args, int n, char **out)
{
    char err[200];
    fsa_status_t st = fsa_args_object(args, (size_t)n, out, err, sizeof err);
    if (st == FSA_EINVAL || st == FSA_ETOOLARGE)
        die_usage("%s", err);
    if (st != FSA_OK) {
        fail("%s", fsa_status_str(st));
        exit(EXIT_FAILURE);
    }
}

/* The options of job and ticket subcommands (cmd_entity), by their index. */
#define ENTITY_OPTS(X) X(E_PARENT, "=parent") X(E_TO, "=to") X(E_NOTE, "=note")
enum { ENTITY_OPTS(FSA_OPT_INDEX) E_COUNT };

/* What a job or ticket subcommand got on its command line. */
typedef struct ent_args {
    bool job;
    const char *tname;  /* "job" or "ticket" */
    const fsa_opt_t *o; /* o[E_PARENT] and the rest */
    char **pos;         /* pos[0] is the id */
    int n;
} ent_args_t;

static int ent_create(const ent_args_t *a)
{
    const char *parent = a->o[E_PARENT].value; /* a job's only (cmd_entity) */
    char *extra[66];
    int m = 0;
    for (int i = 1; i < a->n; i++)
        extra[m++] = a->pos[i];
    char parent_arg[200];
    if (parent != NULL) {
        /* An id is 1-128 of [A-Za-z0-9._:-]: nothing in it needs quoting in JSON. */
        size_t len = strlen(parent);
        if (len == 0 || len > 128 ||
            !all_in(parent, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklm"
                            "nopqrstuvwxyz0123456789._:-"))
            return fail("invalid parent id '%.40s'", parent);
        snprintf(parent_arg, sizeof parent_arg, "parent_id=\"%s\"", parent);
        extra[m++] = parent_arg;
    }
    char *fields = NULL;
    fields_from(extra, m, &fields);
    fieldsync_t *fs = open_fs("fieldsync");
    fieldsync_rec_t rec;
    fieldsync_status_t st = a->job ? fieldsync_job_create(fs, a->pos[0], fields, &rec)
                                   : fieldsync_ticket_create(fs, a->pos[0], fields, &rec);
    fsa_args_free(fields);
    return recorded(fs, st, &rec);
}

static int ent_transition(const ent_args_t *a)
{
    const char *to = a->o[E_TO].value;
    if (to == NULL || a->n != 1)
        die_usage("%s transition needs ID and --to STATUS", a->tname);
    fieldsync_t *fs = open_fs("fieldsync");
    fieldsync_rec_t rec;
    fieldsync_status_t st = a->job ? fieldsync_job_transition(fs, a->pos[0], to, NULL, &rec)
                                   : fieldsync_ticket_transition(fs, a->pos[0], to, NULL, &rec);
    return recorded(fs, st, &rec);
}

static int ent_set(const ent_args_t *a)
{
    if (a->n < 2)
        die_usage("%s set needs ID and NAME=VALUE", a->tname);
    char *fields = NULL;
    fields_from(a->pos + 1, a->n - 1, &fields);
    fieldsync_t *fs = open_fs("fieldsync");
    fieldsync_rec_t rec;
    fieldsync_status_t st;
    if (a->job) {
        st = fieldsync_job_set(fs, a->pos[0], fields, NULL, &rec);
    } else {
        /* A ticket has no set verb: the generic op builder, as the CLI always did. */
        char *op = NULL;
        fsa_status_t qs = fsa_args_op("set", "ticket", a->pos[0], fields, &op);
        st = qs == FSA_OK       ? fieldsync_record(fs, op, NULL, &rec)
             : qs == FSA_ENOMEM ? FIELDSYNC_ENOMEM
                                : FIELDSYNC_ETOOLARGE;
        fsa_args_free(op);
    }
    fsa_args_free(fields);
    return recorded(fs, st, &rec);
}

static int ent_merge(const ent_args_t *a)
{
    if (a->n != 2)
        die_usage("job merge needs ID and one JSON_PATCH");
    fieldsync_t *fs = open_fs("fieldsync");
    fieldsync_rec_t rec;
    fieldsync_status_t st = fieldsync_job_merge(fs, a->pos[0], a->pos[1], NULL, &rec);
    return recorded(fs, st, &rec);
}

static int ent_log(const ent_args_t *a)
{
    if (a->n != 2)
        die_usage("ticket log needs ID and one JSON_ITEM");
    fieldsync_t *fs = open_fs("fieldsync");
    fieldsync_rec_t rec;
    fieldsync_status_t st = fieldsync_ticket_log(fs, a->pos[0], a->pos[1], NULL, &rec);
    return recorded(fs, st, &rec);
}

static int ent_escalate(const ent_args_t *a)
{
    if (a->n != 1)
        die_usage("ticket escalate needs one ID");
    /* An empty note would be recorded as one: a history entry that says "" */
    if (a->o[E_NOTE].value != NULL && a->o[E_NOTE].value[0] == '\0')
        die_usage("--note needs a text (leave it out for none)");
    fieldsync_t *fs = open_fs("fieldsync");
    fieldsync_rec_t rec;
    fieldsync_status_t st =
        fieldsync_ticket_escalate(fs, a->pos[0], a->o[E_TO].value, a->o[E_NOTE].value, NULL, &rec);
    return recorded(fs, st, &rec);
}

/* job|ticket create/transition/set and the rest. */
static int cmd_entity(bool job, int argc, char **argv)
{
    /* Characters and a switch, not pointers: no load-time relocation each. */
    enum { P = 1 << E_PARENT, T = 1 << E_TO, N = 1 << E_NOTE };
    static const struct {
        char name[sizeof "transition"];
        unsigned char kinds; /* 1: jobs, 2: tickets */
        unsigned char opts;  /* the options it takes (--parent: a job's create only) */
    } subs[] = {{"create", 3, P}, {"transition", 3, T}, {"set", 3, 0},
                {"merge", 1, 0},  {"log", 2, 0},        {"escalate", 2, T | N}};
    static const char opt_names[E_COUNT][sizeof "parent"] = {"parent", "to", "note"};
    const char *tname = job ? "job" : "ticket";
    fsa_opt_t o[E_COUNT];
    const size_t no = fsa_opts_init(o, E_COUNT, ENTITY_OPTS(FSA_OPT_SPEC), false);
    char *pos[65]; /* the subcommand, then its arguments */
    char help[512];
    snprintf(help, sizeof help,
             "usage: fieldsync --db FILE %s create ID [%sNAME=VALUE ...]\n"
             "       fieldsync --db FILE %s transition ID --to STATUS\n"
             "       fieldsync --db FILE %s %s\n",
             tname, job ? "--parent ID] [" : "", tname, tname,
             job ? "set ID NAME=VALUE ... | merge ID JSON_PATCH"
                 : "escalate ID [--to PERSON] [--note TEXT] | "
                   "log ID JSON_ITEM | set ID NAME=VALUE ...");
    /* The subcommand is the first positional: options (--help too) are parsed first, so that
     * "job --help" is help, not a subcommand. */
    int n = parse_opts(argc, argv, o, no, pos, 65, help);
    if (n < 1)
        die_usage("%s needs a subcommand", tname);
    const char *sub = pos[0];
    ent_args_t a = {job, tname, o, pos + 1, n - 1};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if (strcmp(sub, subs[i].name) != 0 || (subs[i].kinds & (job ? 1 : 2)) == 0)
            continue;
        if (a.n < 1)
            die_usage("%s %s needs an id", tname, sub);
        /* An option a subcommand does not use is refused, not dropped: "ticket create T1 --to
         * bob" must not record a ticket for nobody. */
        unsigned allowed = subs[i].opts & (job ? ~0u : ~(unsigned)P);
        for (int k = 0; k < E_COUNT; k++)
            if (o[k].value != NULL && (allowed & (1u << k)) == 0)
                die_usage("--%s does not apply to %s %s", opt_names[k], tname, sub);
        switch (i) {
        case 0: return ent_create(&a);
        case 1: return ent_transition(&a);
        case 2: return ent_set(&a);
        case 3: return ent_merge(&a);
        case 4: return ent_log(&a);
        default: return ent_escalate(&a);
        }
    }
    die_usage("unknown %s subcommand '%s'", tname, sub);
    return EXIT_USAGE;
}

static int cmd_checkpoint(int argc, char **argv)
{
    char *pos[64];
    int n = parse_opts(argc, argv, NULL, 0, pos, 64,
                       "usage: fieldsync --db FILE checkpoint update CHILD_ID NAME=VALUE ...\n"
                       "Sets fields on a checkpoint and touches its tour (other_info.\n"
                       "last_checkpoint) in one group: both apply on the server or neither.\n");
    if (n < 3 || strcmp(pos[0], "update") != 0)
        die_usage("checkpoint update needs CHILD_ID and NAME=VALUE");
    char *fields = NULL;
    fields_from(pos + 2, n - 2, &fields);
    fieldsync_t *fs = open_fs("fieldsync");
    fieldsync_rec_t rec;
    fieldsync_status_t st = fieldsync_checkpoint_update(fs, pos[1], fields, NULL, &rec);
    fsa_args_free(fields);
    return recorded(fs, st, &rec);
}

/* ---- sync ---- */

typedef struct progress {
    bool tty;
    bool printed;
} progress_t;

static void on_status(void *arg, const fieldsync_sync_status_t *s)
{
    progress_t *p = arg;
    if (!p->tty || s->state != FIELDSYNC_STATE_SYNCING)
        return;
    /* The reason may quote the server: the library gives it as one line that reads as it is. */
    fprintf(stderr, "\r\033[Ksync: %s, %" PRId64 " pending", s->reason, s->queue_depth);
    p->printed = true;
}

static int cmd_sync(int argc, char **argv)
{
    fsa_opt_t o[] = {{"now", false, false, NULL}};
    char *pos[1];
    parse_opts(argc, argv, o, 1, pos, 0,
               "usage: fieldsync --db FILE sync [--now]\n"
               "Pushes every pending op and pulls the server's changes.\n"
               "Exit status: 0 nothing pending; 75 the server is unreachable or asked to wait\n"
               "(the next attempt time is kept; --now tries anyway); 1 other errors.\n");
    fieldsync_t *fs = open_fs("fieldsync");
    progress_t p = {.tty = isatty(STDERR_FILENO) != 0};
    fieldsync_listener_t *tok = NULL;
    if (p.tty && fieldsync_add_status_listener(fs, on_status, &p, &tok) != FIELDSYNC_OK)
        p.tty = false;
    fieldsync_report_t r;
    fieldsync_status_t st = fieldsync_sync_once(fs, o[0].value != NULL, &r);
    if (p.printed)
        fputs("\r\033[K", stderr);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", fieldsync_errmsg(fs));
    fieldsync_sync_status_t s = {.size = sizeof s};
    fieldsync_status_t ss = fieldsync_status(fs, &s);
    (void)fieldsync_close(fs);
    if (st == FIELDSYNC_OK && ss == FIELDSYNC_OK) {
        printf("synced: %" PRId64 " applied, %" PRId64 " duplicate, %" PRId64 " conflict, %" PRId64
               " rejected, %" PRId64 " pulled; %" PRId64 " pending, %" PRId64 " conflicts open\n",
               r.applied, r.duplicate, r.conflict, r.rejected, r.pulled, s.queue_depth,
               s.open_conflicts);
        return s.queue_depth == 0 ? EXIT_SUCCESS : EXIT_TEMPFAIL;
    }
    fail("sync: %s", msg[0] ? msg : fieldsync_status_str(st != FIELDSYNC_OK ? st : ss));
    switch (st) {
    case FIELDSYNC_ENET:
    case FIELDSYNC_ETIMEOUT:
    case FIELDSYNC_EBUSY: return EXIT_TEMPFAIL;
    default: return EXIT_FAILURE;
    }
}

/* ---- status, conflicts, locks, show ---- */

/* A wall time for people: "2026-11-25 21:05:03 UTC (in 4 s)", "... (4 s ago)", or "never".
 * Within a second of now it is "(just now)" for a time past (past true: the last sync) and
 * "(in under 1 s)" for one to come, never "(in 0 s)". */
static const char *when(int64_t ms, bool past, char *buf, size_t cap)
{
    if (ms <= 0)
        return "never";
    char ts[FSA_TIME_TEXT_MAX];
    if (fsa_time_format_utc(ms, FSA_TIME_HUMAN, ts, sizeof ts) != FSA_OK)
        snprintf(ts, sizeof ts, "?");
    const fsa_port_t *port = fsa_port_posix();
    int64_t d_ms = ms - port->wall_now(port->ctx).ms;
    if (d_ms >= 1000)
        snprintf(buf, cap, "%s (in %" PRId64 " s)", ts, d_ms / 1000);
    else if (d_ms <= -1000)
        snprintf(buf, cap, "%s (%" PRId64 " s ago)", ts, -d_ms / 1000);
    else
        snprintf(buf, cap, "%s (%s)", ts, past ? "just now" : "in under 1 s");
    return buf;
}

static int cmd_status(int argc, char **argv)
{
    fsa_opt_t o[] = {{"json", false, false, NULL}};
    char *pos[1];
    parse_opts(argc, argv, o, 1, pos, 0,
               "usage: fieldsync --db FILE status [--json]\n"
               "Shows the queue, open conflicts and rejections, the last sync, the next attempt\n"
               "and the clock offset to the server. Times are ms since the epoch.\n");
    fieldsync_t *fs = open_fs("fieldsync");
    char *json = NULL;
    int rc = EXIT_SUCCESS;
    if (fieldsync_info(fs, &json) != FIELDSYNC_OK) {
        rc = fail("%s", fieldsync_errmsg(fs));
    } else if (o[0].value != NULL) {
        printf("%s\n", json);
    } else {
        char dev[160], server[1024], b1[96], b2[96];
        str_of(member(json, "device_id"), dev, sizeof dev);
        str_of(member(json, "server"), server, sizeof server);
        int64_t next = int_of(member(json, "next_attempt_ms"));
        printf("device:        %s\nserver:        %s\n", dev[0] ? dev : "(not set up)",
               server[0] ? server : "(not set up)");
        printf("pending ops:   %" PRId64 " (%" PRId64 " sent, awaiting an answer)\n",
               int_of(member(json, "pending")), int_of(member(json, "inflight")));
        printf("conflicts:     %" PRId64 " open\nrejected:      %" PRId64 " open\n",
               int_of(member(json, "conflicts")), int_of(member(json, "rejected")));
        printf("last sync:     %s\nnext attempt:  %s\n",
               when(int_of(member(json, "last_sync_ms")), true, b1, sizeof b1),
               next ? when(next, false, b2, sizeof b2) : "now (no backoff)");
        printf("clock offset:  %" PRId64 " ms\n", int_of(member(json, "clock_offset_ms")));
    }
    fieldsync_free(json);
    (void)fieldsync_close(fs);
    return rc;
}

/* One conflict as a line: "OP_ID  KIND TYPE ID  OUTCOME / DECISION  REASON". */
static void print_conflict(void *arg, const char *c)
{
    int *count = arg;
    char op_id[64], kind[32], type[32], id[160], outcome[32], decision[32], reason[512];
    str_of(member(c, "decision"), decision, sizeof decision);
    printf("%s  %s %s %s  %s%s%s  %s\n", str_of(member(c, "op_id"), op_id, sizeof op_id),
           str_of(member(c, "kind"), kind, sizeof kind),
           str_of(member(c, "type"), type, sizeof type), str_of(member(c, "id"), id, sizeof id),
           str_of(member(c, "outcome"), outcome, sizeof outcome), decision[0] ? " / " : "",
           decision, str_of(member(c, "reason"), reason, sizeof reason));
    (*count)++;
}

static int cmd_conflicts(int argc, char **argv)
{
#define CONFLICTS_OPTS(X) X(O_JSON, "-json") X(O_ALL, "-all") X(O_TAKE, "=take")
    enum { CONFLICTS_OPTS(FSA_OPT_INDEX) O_COUNT };
    fsa_opt_t o[O_COUNT];
    const size_t no = fsa_opts_init(o, O_COUNT, CONFLICTS_OPTS(FSA_OPT_SPEC), false);
    char *pos[2];
    int n = parse_opts(argc, argv, o, no, pos, 2,
                       "usage: fieldsync --db FILE conflicts [--json] [--all]\n"
                       "       fieldsync --db FILE conflicts resolve OP_ID --take server|local\n"
                       "Lists the ops the server answered with a conflict or a rejection and that\n"
                       "wait for a person (--all: also resolved ones). 'resolve --take server'\n"
                       "accepts the server's state; '--take local' records the op again on top of\n"
                       "it (a group is resolved as a whole).\n");
    if (n == 0 && o[O_TAKE].value != NULL)
        die_usage("--take is for 'conflicts resolve OP_ID --take server|local'");
    if (n > 0) {
        if (strcmp(pos[0], "resolve") != 0 || n != 2)
            die_usage("conflicts takes 'resolve OP_ID --take server|local'");
        if (o[O_JSON].value != NULL || o[O_ALL].value != NULL)
            die_usage("--%s does not apply to conflicts resolve",
                      o[O_JSON].value != NULL ? "json" : "all");
        const char *take = o[O_TAKE].value;
        if (take == NULL || (strcmp(take, "server") != 0 && strcmp(take, "local") != 0))
            die_usage("conflicts resolve needs --take server or --take local");
        bool local = strcmp(take, "local") == 0;
        fieldsync_t *fs = open_fs("fieldsync");
        fieldsync_rec_t rec;
        int rc = EXIT_SUCCESS;
        if (fieldsync_conflict_resolve(fs, pos[1], local, &rec) != FIELDSYNC_OK)
            rc = fail("%s", fieldsync_errmsg(fs));
        else if (local && rec.op_id[0] != '\0')
            printf("recorded again as op %s (seq %" PRId64 ")\n", rec.op_id, rec.seq);
        else
            printf("resolved: %s\n",
                   local ? "nothing to record again" : "the server's state stands");
        (void)fieldsync_close(fs);
        return rc;
    }
    bool json = o[O_JSON].value != NULL;
    fieldsync_t *fs = open_fs("fieldsync");
    char *list = NULL;
    int rc = EXIT_SUCCESS;
    if (fieldsync_conflicts(fs, o[O_ALL].value != NULL, &list) != FIELDSYNC_OK) {
        rc = fail("cannot read conflicts: %s", fieldsync_errmsg(fs));
    } else if (json) {
        printf("%s\n", list);
    } else {
        int count = 0;
        each_element(list, print_conflict, &count);
        if (count == 0)
            printf("no open conflicts\n");
    }
    fieldsync_free(list);
    (void)fieldsync_close(fs);
    return rc;
}

/* One held lock as a line: "KEY  token N  held by LABEL (pid P)[ [dead]]  N ms left". */
static void print_holder(void *arg, const char *h)
{
    (void)arg;
    char key[260], label[80];
    const char *alive = member(h, "alive");
    printf("%s  token %" PRId64 "  held by %s (pid %" PRId64 ")%s  %" PRId64 " ms left\n",
           str_of(member(h, "key"), key, sizeof key), int_of(member(h, "token")),
           str_of(member(h, "label"), label, sizeof label), int_of(member(h, "pid")),
           alive != NULL && strncmp(alive, "false", 5) == 0 ? " [dead]" : "",
           int_of(member(h, "remaining_ns")) / 1000000);
}

static void count_element(void *arg, const char *e)
{
    (void)e;
    (*(int64_t *)arg)++;
}

static int cmd_locks(int argc, char **argv)
{
    fsa_opt_t o[] = {{"json", false, false, NULL}};
    char *pos[1];
    parse_opts(argc, argv, o, 1, pos, 0,
               "usage: fieldsync --db FILE locks [--json]\n"
               "Lists the named locks held on this device, their fencing tokens and holders.\n");
    fieldsync_t *fs = open_fs("fieldsync-locks");
    char *json = NULL;
    int rc = EXIT_SUCCESS;
    if (fieldsync_lock_stats(fs, &json) != FIELDSYNC_OK) {
        rc = fail("%s", fieldsync_errmsg(fs));
    } else if (o[0].value != NULL) {
        printf("%s\n", json);
    } else {
        int64_t total = int_of(member(json, "holders_total")), listed = 0;
        const char *holders = member(json, "holders");
        if (total == 0)
            printf("no locks held\n");
        each_element(holders, print_holder, NULL);
        each_element(holders, count_element, &listed);
        if (total > listed)
            printf("... and %" PRId64 " more\n", total - listed);
    }
    fieldsync_free(json);
    (void)fieldsync_close(fs);
    return rc;
}

static int cmd_show(int argc, char **argv)
{
    fsa_opt_t o[] = {{"json", false, false, NULL}};
    char *pos[2];
    int n =
        parse_opts(argc, argv, o, 1, pos, 2,
                   "usage: fieldsync --db FILE show TYPE ID [--json]\n"
                   "Shows an entity's local view: the server's last known state with the\n"
                   "device's pending ops applied. TYPE: attendance, jobneed (or job), ticket.\n");
    if (n != 2)
        die_usage("show needs TYPE and ID");
    if (strcmp(pos[0], "job") != 0 && strcmp(pos[0], "jobneed") != 0 &&
        strcmp(pos[0], "attendance") != 0 && strcmp(pos[0], "ticket") != 0)
        die_usage("unknown type '%s' (attendance, jobneed, ticket)", pos[0]);
    fieldsync_t *fs = open_fs("fieldsync");
    char *json = NULL;
    int rc = EXIT_SUCCESS;
    fieldsync_status_t st = fieldsync_get(fs, pos[0], pos[1], &json);
    if (st != FIELDSYNC_OK) {
        rc = fail("%s", fieldsync_errmsg(fs));
    } else if (o[0].value != NULL) {
        printf("%s\n", json);
    } else {
        char type[32];
        str_of(member(json, "type"), type, sizeof type);
        int64_t version = int_of(member(json, "server_version"));
        int64_t pending = int_of(member(json, "pending"));
        char *fields = (char *)(uintptr_t)member(json, "fields");
        if (fields != NULL) {
            /* For a person's terminal, as str_of's: the fields' text (the server's, often) with
             * every control character and every character that reorders text as '?', byte for
             * byte. JSON escapes only the controls below 0x20; DEL, the C1 controls and the bidi
             * marks come through it as they are. */
            *(char *)(uintptr_t)skip_value(fields) = '\0';
            fsa_one_line(fields);
        }
        printf("%s %s (server version %" PRId64 ", %" PRId64 " pending)\n%s\n", type, pos[1],
               version, pending, fields != NULL ? fields : "null");
    }
    fieldsync_free(json);
    (void)fieldsync_close(fs);
    return rc;
}

static int run_command(int argc, char **argv)
{
    /* The secret this process reads stays out of core dumps and other processes' reach (the
     * library leaves this to the program that embeds it). */
    char perr[160];
    if (fsa_process_protect_secrets(perr, sizeof perr) != FSA_OK)
        return fail("%s", perr);
    db_path = getenv("FIELDSYNC_DB");
#define MAIN_OPTS(X) X(O_DB, "=db") X(O_LOG_LEVEL, "=log-level") X(O_VERSION, "-version")
    enum { MAIN_OPTS(FSA_OPT_INDEX) O_COUNT };
    fsa_opt_t o[O_COUNT];
    const size_t no = fsa_opts_init(o, O_COUNT, MAIN_OPTS(FSA_OPT_SPEC), true);
    fsa_opts_result_t r;
    char err[256];
    if (fsa_opts_parse(argc - 1, argv + 1, o, no, NULL, 0, FSA_OPTS_BEFORE_COMMAND, &r, err,
                       sizeof err) != FSA_OK)
        die_usage("%s", err);
    if (r.help) {
        fputs(USAGE, stdout);
        return EXIT_SUCCESS;
    }
    if (o[O_VERSION].value != NULL) {
        printf("fieldsync 0.1.0 (protocol v1)\n");
        return EXIT_SUCCESS;
    }
    if (o[O_DB].value != NULL)
        db_path = o[O_DB].value;
    log_level = o[O_LOG_LEVEL].value;
    if (log_level != NULL &&
        (strcmp(log_level, "off") == 0 || fieldsync_set_log_level(log_level) != FIELDSYNC_OK))
        die_usage("unknown log level '%s'", log_level);
    int i = 1 + r.used;
    if (i >= argc)
        die_usage("no command given");
    const char *cmd = argv[i];
    /* A command reports its own errors in one line, so the library's warnings are shown only at
     * --log-level; the daemon says what it does (info) unless told otherwise. */
    if (log_level == NULL &&
        fieldsync_set_log_level(strcmp(cmd, "run") == 0 ? "info" : "error") != FIELDSYNC_OK)
        die_usage("%s", fieldsync_errmsg(NULL)); /* a level of the library's own: not reached */
    int rest = argc - i - 1;
    char **rv = argv + i + 1;
    if (strcmp(cmd, "init") == 0)
        return cmd_init(rest, rv);
    if (strcmp(cmd, "attendance") == 0)
        return cmd_attendance(rest, rv);
    if (strcmp(cmd, "job") == 0)
        return cmd_entity(true, rest, rv);
    if (strcmp(cmd, "ticket") == 0)
        return cmd_entity(false, rest, rv);
    if (strcmp(cmd, "checkpoint") == 0)
        return cmd_checkpoint(rest, rv);
    if (strcmp(cmd, "sync") == 0)
        return cmd_sync(rest, rv);
    if (strcmp(cmd, "run") == 0)
        return fsa_agent_run(db_path, rest, rv);
    if (strcmp(cmd, "status") == 0)
        return cmd_status(rest, rv);
    if (strcmp(cmd, "conflicts") == 0)
        return cmd_conflicts(rest, rv);
    if (strcmp(cmd, "locks") == 0)
        return cmd_locks(rest, rv);
    if (strcmp(cmd, "show") == 0)
        return cmd_show(rest, rv);
    die_usage("unknown command '%s'", cmd);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    return output_checked(run_command(argc, argv));
}
