/* fieldsync: the command line: record actions, sync, and look at status, conflicts and locks. */
/* realpath() is an X/Open interface. */
#define _XOPEN_SOURCE 700
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/args.h"
#include "agent/config.h"
#include "agent/run.h"
#include "port/alloc.h"
#include "port/files.h"
#include "port/limits.h"
#include "storage/journal.h"
#include "storage/libs.h"
#include "storage/lock.h"
#include "sync/engine.h"

#define EXIT_USAGE 2
#define EXIT_TEMPFAIL 75 /* sysexits.h EX_TEMPFAIL: try again later */

static const char *prog = "fieldsync";

/* One-line errors on stderr (agent/args.h): usage errors exit 2, others return 1. */
#define die_usage(...) fsa_cli_die_usage(prog, __VA_ARGS__)
#define fail(...) fsa_cli_fail(prog, __VA_ARGS__)

static const char USAGE[] =
    "usage: fieldsync [--db FILE] [--log-level debug|info|warn|error] COMMAND ...\n"
    "\n"
    "Records field actions in a local journal at once, and syncs them to the server when it can.\n"
    "The journal is FILE (or $FIELDSYNC_DB).\n"
    "\n"
    "commands:\n"
    "  init --device-id ID --server URL --secret-file FILE [--ca-file F] [--pin sha256//...]\n"
    "       [--allow-http]                      create the journal and set up sync\n"
    "  attendance checkin|checkout --people ID --site ID --lat X --lon Y [--accuracy M]\n"
    "  job create ID [--parent ID] [NAME=VALUE ...]\n"
    "  job transition ID --to STATUS\n"
    "  job set ID NAME=VALUE ...\n"
    "  job merge ID JSON_PATCH                  RFC 7396 patch into other_info\n"
    "  checkpoint update CHILD_ID NAME=VALUE ... the change and its tour's touch, one group\n"
    "  ticket create ID [NAME=VALUE ...]\n"
    "  ticket transition ID --to STATUS\n"
    "  ticket escalate ID [--to PERSON] [--note TEXT]   level +1 and a history entry, one group\n"
    "  ticket log ID JSON_ITEM                  append to ticketlog.ticket_history\n"
    "  sync [--now]                             push and pull; exit 0 when nothing is pending,\n"
    "                                           75 when the server is unreachable or asked to\n"
    "                                           wait, 1 on other errors\n"
    "  run [--interval S] [--metrics-file F] [--metrics-listen 127.0.0.1:PORT] ...\n"
    "                                           the daemon: syncs continuously (see run --help)\n"
    "  status [--json]                          queue, conflicts, last sync, clock offset\n"
    "  conflicts [--json] [--all]               conflicts and rejections kept for a person\n"
    "  conflicts resolve OP_ID --take server|local\n"
    "  locks [--json]                           locks held on this device\n"
    "  show TYPE ID [--json]                    an entity's local view (attendance, jobneed,\n"
    "                                           ticket)\n"
    "\n"
    "NAME=VALUE takes VALUE as JSON when it parses (5, true, \"x\", {\"a\":1}), else as a string.\n"
    "Every command takes --help. Errors are one line on stderr and a non-zero exit status.\n";

/* ---- a tiny option parser: --name value, --flag, and positional arguments ---- */

typedef struct optspec {
    const char *name; /* without the dashes */
    int has_value;
    const char *value; /* set by parse: the value, or "" for a flag given */
} optspec_t;

/* Parses argv[0..argc) into opts and positional args; dies on an unknown option. */
static int parse_opts(int argc, char **argv, optspec_t *opts, size_t nopts, char **pos, int maxpos,
                      const char *help)
{
    int npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(help, stdout);
            exit(EXIT_SUCCESS);
        }
        if (strncmp(a, "--", 2) == 0 && a[2] != '\0') {
            size_t k;
            for (k = 0; k < nopts; k++)
                if (strcmp(a + 2, opts[k].name) == 0)
                    break;
            if (k == nopts)
                die_usage("unknown option '%s'", a);
            if (opts[k].value != NULL)
                die_usage("option '%s' given twice", a);
            if (opts[k].has_value) {
                if (i + 1 >= argc)
                    die_usage("option '%s' needs a value", a);
                opts[k].value = argv[++i];
            } else {
                opts[k].value = "";
            }
            continue;
        }
        if (npos >= maxpos)
            die_usage("unexpected argument '%s'", a);
        pos[npos++] = argv[i];
    }
    return npos;
}

static const char *opt(const optspec_t *opts, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(opts[i].name, name) == 0)
            return opts[i].value;
    return NULL;
}

/* ---- the journal ---- */

static const char *db_path;

static fsa_journal_t *open_journal(bool create)
{
    if (db_path == NULL)
        die_usage("no journal: give --db FILE or set FIELDSYNC_DB");
    fsa_journal_t *j = NULL;
    char err[320];
    fsa_journal_opts_t o = {.create = create};
    fsa_status_t st = fsa_journal_open(fsa_port_posix(), db_path, &o, &j, err, sizeof err);
    if (st != FSA_OK) {
        fail("%s", err);
        exit(EXIT_FAILURE);
    }
    return j;
}

static int recorded(fsa_journal_t *j, fsa_status_t st, const fsa_rec_t *rec)
{
    fsa_journal_close(j);
    if (st != FSA_OK)
        return fail("%s", rec->error[0] ? rec->error : fsa_status_str(st));
    printf("recorded op %s (seq %" PRId64 ")\n", rec->op_id, rec->seq);
    return EXIT_SUCCESS;
}

/* ---- init ---- */

static int cmd_init(int argc, char **argv)
{
    optspec_t o[] = {{"device-id", 1, NULL}, {"server", 1, NULL}, {"secret-file", 1, NULL},
                     {"ca-file", 1, NULL},   {"pin", 1, NULL},    {"allow-http", 0, NULL}};
    const size_t no = sizeof o / sizeof o[0];
    char *pos[1];
    parse_opts(
        argc, argv, o, no, pos, 0,
        "usage: fieldsync --db FILE init --device-id ID --server URL --secret-file FILE\n"
        "                 [--ca-file F] [--pin sha256//BASE64[;sha256//...]] [--allow-http]\n"
        "Creates the journal (mode 0600) and stores how to reach the server. The secret\n"
        "file holds the device's 32-byte secret as 64 hex characters and must be mode\n"
        "0600. Plain http:// is accepted only for loopback unless --allow-http.\n");
    const char *dev = opt(o, no, "device-id"), *server = opt(o, no, "server");
    const char *secret = opt(o, no, "secret-file"), *ca = opt(o, no, "ca-file");
    const char *pin = opt(o, no, "pin");
    bool allow_http = opt(o, no, "allow-http") != NULL;
    if (dev == NULL || server == NULL || secret == NULL)
        die_usage("init needs --device-id, --server and --secret-file");
    if (!fsa_model_id_valid(dev))
        return fail("invalid device id '%.40s': 1-128 characters of A-Z a-z 0-9 . _ : -", dev);
    char err[320];
    fsa_signer_key_t key;
    char secret_abs[PATH_MAX], ca_abs[PATH_MAX] = "";
    if (realpath(secret, secret_abs) == NULL)
        return fail("secret file %s: not found", secret);
    fsa_status_t st = fsa_agent_read_secret(secret_abs, &key, err, sizeof err);
    fsa_signer_key_wipe(&key);
    if (st != FSA_OK)
        return fail("%s", err);
    if (ca != NULL && realpath(ca, ca_abs) == NULL)
        return fail("CA file %s: not found", ca);
    /* Check the URL and pins now, so a typo fails at init rather than at the first sync. */
    fsa_transport_opts_t to = {.base_url = server,
                               .ca_file = ca != NULL ? ca_abs : NULL,
                               .pins = pin,
                               .allow_insecure_http = allow_http};
    fsa_transport_t *t = NULL;
    st = fsa_transport_new(&to, &t, err, sizeof err);
    fsa_transport_free(t);
    if (st != FSA_OK)
        return fail("%s", err);

    fsa_journal_t *j = open_journal(true);
    char *existing = NULL;
    st = fsa_journal_state_get_str(j, FSA_CFG_DEVICE_ID, &existing);
    if (st == FSA_OK && existing != NULL && strcmp(existing, dev) != 0) {
        fail("journal %s belongs to device %s, not %s", db_path, existing, dev);
        fsa_model_free(existing);
        fsa_journal_close(j);
        return EXIT_FAILURE;
    }
    fsa_model_free(existing);
    if (st == FSA_OK)
        st = fsa_journal_state_set_str(j, FSA_CFG_DEVICE_ID, dev);
    if (st == FSA_OK)
        st = fsa_journal_state_set_str(j, FSA_CFG_SERVER, server);
    if (st == FSA_OK)
        st = fsa_journal_state_set_str(j, FSA_CFG_SECRET_FILE, secret_abs);
    if (st == FSA_OK)
        st = fsa_journal_state_set_str(j, FSA_CFG_CA_FILE, ca_abs);
    if (st == FSA_OK)
        st = fsa_journal_state_set_str(j, FSA_CFG_PINS, pin != NULL ? pin : "");
    if (st == FSA_OK)
        st = fsa_journal_state_set_int(j, FSA_CFG_ALLOW_HTTP, allow_http);
    fsa_journal_close(j);
    if (st != FSA_OK)
        return fail("cannot store the configuration in %s: %s", db_path, fsa_status_str(st));
    printf("journal %s ready for device %s, server %s\n", db_path, dev, server);
    return EXIT_SUCCESS;
}

/* ---- recording ---- */

static int cmd_attendance(int argc, char **argv)
{
    optspec_t o[] = {{"people", 1, NULL}, {"site", 1, NULL},     {"lat", 1, NULL},
                     {"lon", 1, NULL},    {"accuracy", 1, NULL}, {"id", 1, NULL}};
    const size_t no = sizeof o / sizeof o[0];
    char *pos[1];
    int n = parse_opts(argc, argv, o, no, pos, 1,
                       "usage: fieldsync --db FILE attendance checkin|checkout --people ID "
                       "--site ID\n"
                       "                 --lat X --lon Y [--accuracy M] [--id UUID]\n"
                       "Records a check-in or check-out now (device clock corrected by the\n"
                       "server's offset). The protocol requires a position: --lat and --lon.\n");
    if (n != 1 || (strcmp(pos[0], "checkin") != 0 && strcmp(pos[0], "checkout") != 0))
        die_usage("attendance needs checkin or checkout");
    const char *people = opt(o, no, "people"), *site = opt(o, no, "site");
    const char *lat = opt(o, no, "lat"), *lon = opt(o, no, "lon");
    const char *acc = opt(o, no, "accuracy"), *id = opt(o, no, "id");
    if (people == NULL || site == NULL)
        die_usage("attendance needs --people and --site");
    if (lat == NULL || lon == NULL)
        die_usage("attendance needs --lat and --lon (the server requires a position)");
    double vlat, vlon, vacc = 0;
    char *end;
    vlat = strtod(lat, &end);
    if (*end != '\0' || vlat < -90 || vlat > 90)
        return fail("--lat %s is not a latitude (-90..90)", lat);
    vlon = strtod(lon, &end);
    if (*end != '\0' || vlon < -180 || vlon > 180)
        return fail("--lon %s is not a longitude (-180..180)", lon);
    if (acc != NULL) {
        vacc = strtod(acc, &end);
        if (*end != '\0' || vacc < 0 || vacc > 1e7)
            return fail("--accuracy %s is not a distance in metres", acc);
    }
    char uuid[FSA_UUID_STR_LEN];
    if (id == NULL) {
        if (fsa_uuid4(fsa_port_posix(), uuid) != FSA_OK)
            return fail("cannot make an attendance id: no random source");
        id = uuid;
    }
    fsa_journal_t *j = open_journal(false);
    char fields[1024] = "{\"people_id\":";
    fsa_status_t st = fsa_args_quote(people, fields, sizeof fields - 300);
    if (st == FSA_OK) {
        size_t l = strlen(fields);
        snprintf(fields + l, sizeof fields - l, ",\"site_id\":");
        st = fsa_args_quote(site, fields, sizeof fields - 200);
    }
    if (st != FSA_OK) {
        fsa_journal_close(j);
        return fail("--people or --site is too long");
    }
    size_t l = strlen(fields);
    snprintf(fields + l, sizeof fields - l,
             ",\"kind\":\"%s\",\"at\":%" PRId64 ",\"lat\":%.7f,\"lon\":%.7f,\"accuracy_m\":%.2f}",
             pos[0], fsa_journal_now(j).ms, vlat, vlon, vacc);
    fsa_rec_t rec;
    st = fsa_journal_create(j, FSA_TYPE_ATTENDANCE, id, fields, NULL, &rec);
    return recorded(j, st, &rec);
}

static fsa_status_t fields_from(char **args, int n, char **out)
{
    char err[200];
    fsa_status_t st = fsa_args_object(args, (size_t)n, out, err, sizeof err);
    if (st != FSA_OK) {
        fail("%s", err);
        exit(EXIT_FAILURE);
    }
    return st;
}

/* job|ticket create/transition/set and the rest. */
static int cmd_entity(fsa_type_t type, int argc, char **argv)
{
    const char *tname = type == FSA_TYPE_JOBNEED ? "job" : "ticket";
    if (argc < 1)
        die_usage("%s needs a subcommand", tname);
    const char *sub = argv[0];
    optspec_t o[] = {{"parent", 1, NULL}, {"to", 1, NULL}, {"note", 1, NULL}};
    const size_t no = sizeof o / sizeof o[0];
    char *pos[64];
    char help[512];
    snprintf(help, sizeof help,
             "usage: fieldsync --db FILE %s create ID [%sNAME=VALUE ...]\n"
             "       fieldsync --db FILE %s transition ID --to STATUS\n"
             "       fieldsync --db FILE %s %s\n",
             tname, type == FSA_TYPE_JOBNEED ? "--parent ID] [" : "", tname, tname,
             type == FSA_TYPE_JOBNEED ? "set ID NAME=VALUE ... | merge ID JSON_PATCH"
                                      : "escalate ID [--to PERSON] [--note TEXT] | "
                                        "log ID JSON_ITEM | set ID NAME=VALUE ...");
    int n = parse_opts(argc - 1, argv + 1, o, no, pos, 64, help);
    if (n < 1)
        die_usage("%s %s needs an id", tname, sub);
    const char *id = pos[0];
    fsa_rec_t rec;
    fsa_status_t st;
    if (strcmp(sub, "create") == 0) {
        const char *parent = opt(o, no, "parent");
        char *fields = NULL;
        if (parent != NULL && type != FSA_TYPE_JOBNEED)
            die_usage("--parent is for jobs");
        char *extra[66];
        int m = 0;
        for (int i = 1; i < n; i++)
            extra[m++] = pos[i];
        char parent_arg[FSA_ID_BYTES + 16];
        if (parent != NULL) {
            if (!fsa_model_id_valid(parent))
                return fail("invalid parent id '%.40s'", parent);
            snprintf(parent_arg, sizeof parent_arg, "parent_id=\"%s\"", parent);
            extra[m++] = parent_arg;
        }
        fields_from(extra, m, &fields);
        fsa_journal_t *j = open_journal(false);
        st = fsa_journal_create(j, type, id, fields, NULL, &rec);
        fsa_free(fields);
        return recorded(j, st, &rec);
    }
    if (strcmp(sub, "transition") == 0) {
        const char *to = opt(o, no, "to");
        if (to == NULL || n != 1)
            die_usage("%s transition needs ID and --to STATUS", tname);
        fsa_journal_t *j = open_journal(false);
        st = fsa_journal_transition(j, type, id, to, NULL, &rec);
        return recorded(j, st, &rec);
    }
    if (strcmp(sub, "set") == 0) {
        if (n < 2)
            die_usage("%s set needs ID and NAME=VALUE", tname);
        char *fields = NULL;
        fields_from(pos + 1, n - 1, &fields);
        fsa_journal_t *j = open_journal(false);
        st = fsa_journal_set(j, type, id, fields, NULL, &rec);
        fsa_free(fields);
        return recorded(j, st, &rec);
    }
    if (strcmp(sub, "merge") == 0 && type == FSA_TYPE_JOBNEED) {
        if (n != 2)
            die_usage("job merge needs ID and one JSON_PATCH");
        fsa_journal_t *j = open_journal(false);
        st = fsa_journal_merge(j, type, id, "other_info", pos[1], NULL, &rec);
        return recorded(j, st, &rec);
    }
    if (strcmp(sub, "log") == 0 && type == FSA_TYPE_TICKET) {
        if (n != 2)
            die_usage("ticket log needs ID and one JSON_ITEM");
        fsa_journal_t *j = open_journal(false);
        st = fsa_journal_append(j, type, id, "ticketlog", "ticket_history", pos[1], 0, NULL, &rec);
        return recorded(j, st, &rec);
    }
    if (strcmp(sub, "escalate") == 0 && type == FSA_TYPE_TICKET) {
        if (n != 1)
            die_usage("ticket escalate needs one ID");
        const char *to = opt(o, no, "to"), *note = opt(o, no, "note");
        fsa_journal_t *j = open_journal(false);
        char item[2048];
        snprintf(item, sizeof item, "{\"action\":\"escalated\",\"at\":%" PRId64,
                 fsa_journal_now(j).ms);
        st = FSA_OK;
        if (to != NULL) {
            strncat(item, ",\"to\":", sizeof item - strlen(item) - 1);
            st = fsa_args_quote(to, item, sizeof item - 600);
        }
        if (st == FSA_OK && note != NULL) {
            strncat(item, ",\"note\":", sizeof item - strlen(item) - 1);
            st = fsa_args_quote(note, item, sizeof item - 2);
        }
        if (st != FSA_OK) {
            fsa_journal_close(j);
            return fail("--to or --note is too long");
        }
        strncat(item, "}", sizeof item - strlen(item) - 1);
        char assign[700] = "{\"assignedto\":";
        fsa_op_t ops[3];
        memset(ops, 0, sizeof ops);
        size_t k = 0;
        ops[k] = (fsa_op_t){.kind = FSA_OP_INCREMENT, .type = type, .by = 1};
        snprintf(ops[k].field, sizeof ops[k].field, "level");
        k++;
        ops[k] = (fsa_op_t){.kind = FSA_OP_APPEND, .type = type, .json = item};
        snprintf(ops[k].field, sizeof ops[k].field, "ticketlog");
        snprintf(ops[k].key, sizeof ops[k].key, "ticket_history");
        k++;
        if (to != NULL) {
            if (fsa_args_quote(to, assign, sizeof assign - 2) != FSA_OK) {
                fsa_journal_close(j);
                return fail("--to is too long");
            }
            strncat(assign, "}", sizeof assign - strlen(assign) - 1);
            ops[k] = (fsa_op_t){.kind = FSA_OP_SET, .type = type, .json = assign};
            k++;
        }
        for (size_t i = 0; i < k; i++)
            snprintf(ops[i].id, sizeof ops[i].id, "%s", id);
        st = fsa_journal_record_group(j, ops, k, NULL, &rec);
        return recorded(j, st, &rec);
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
    fsa_journal_t *j = open_journal(false);
    fsa_rec_t rec;
    fsa_status_t st = fsa_journal_checkpoint_update(j, pos[1], fields, NULL, &rec);
    fsa_free(fields);
    return recorded(j, st, &rec);
}

/* ---- sync ---- */

typedef struct progress {
    bool tty;
    int64_t start_depth;
    bool printed;
} progress_t;

static void on_status(void *arg, const fsa_engine_status_t *s)
{
    progress_t *p = arg;
    if (!p->tty)
        return;
    if (s->state == FSA_ENGINE_PUSHING || s->state == FSA_ENGINE_RETRYING ||
        s->state == FSA_ENGINE_PULLING) {
        if (p->start_depth == 0)
            p->start_depth = s->queue_depth + s->pushed;
        fprintf(stderr, "\r\033[Ksync: %-8s %" PRId64 " sent, %" PRId64 " pending%s%s",
                fsa_engine_state_name(s->state), s->pushed, s->queue_depth,
                s->state == FSA_ENGINE_RETRYING ? " - " : "",
                s->state == FSA_ENGINE_RETRYING ? s->reason : "");
        p->printed = true;
    }
}

static int cmd_sync(int argc, char **argv)
{
    optspec_t o[] = {{"now", 0, NULL}};
    char *pos[1];
    parse_opts(argc, argv, o, 1, pos, 0,
               "usage: fieldsync --db FILE sync [--now]\n"
               "Pushes every pending op and pulls the server's changes.\n"
               "Exit status: 0 nothing pending; 75 the server is unreachable or asked to wait\n"
               "(the next attempt time is kept; --now tries anyway); 1 other errors.\n");
    fsa_journal_t *j = open_journal(false);
    fsa_engine_t *e = NULL;
    char err[320];
    fsa_engine_opts_t base = {.ignore_backoff = o[0].value != NULL};
    fsa_status_t st = fsa_agent_engine_new(fsa_port_posix(), j, &base, &e, err, sizeof err);
    if (st != FSA_OK) {
        fsa_journal_close(j);
        return fail("%s", err);
    }
    progress_t p = {.tty = isatty(STDERR_FILENO) != 0};
    fsa_engine_on_status(e, on_status, &p);
    fsa_sync_report_t r;
    st = fsa_engine_sync(e, &r);
    if (p.printed)
        fputs("\r\033[K", stderr);
    fsa_engine_free(e);
    fsa_outbox_stats_t os = {0};
    fsa_status_t ss = fsa_outbox_stats(j, &os);
    fsa_journal_close(j);
    if (st == FSA_OK && ss == FSA_OK) {
        printf("synced: %" PRId64 " applied, %" PRId64 " duplicate, %" PRId64 " conflict, %" PRId64
               " rejected, %" PRId64 " pulled; %" PRId64 " pending, %" PRId64 " conflicts open\n",
               r.applied, r.duplicate, r.conflict, r.rejected, r.pulled, os.pending,
               os.conflicts + os.rejected);
        return os.pending == 0 ? EXIT_SUCCESS : EXIT_TEMPFAIL;
    }
    fail("sync: %s", r.error[0] ? r.error : fsa_status_str(st));
    switch (st) {
    case FSA_ENET:
    case FSA_ETIMEOUT:
    case FSA_EBUSY: return EXIT_TEMPFAIL;
    default: return EXIT_FAILURE;
    }
}

/* ---- status, conflicts, locks, show ---- */

static void json_str_or_null(const char *s)
{
    if (s == NULL) {
        fputs("null", stdout);
        return;
    }
    char buf[1024] = "";
    if (fsa_args_quote(s, buf, sizeof buf) == FSA_OK)
        fputs(buf, stdout);
    else
        fputs("null", stdout);
}

/* A wall time for people: "2026-11-25 21:05:03 UTC (in 4 s)", or "never". */
static const char *when(int64_t ms, char *buf, size_t cap)
{
    if (ms <= 0)
        return "never";
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char ts[32];
    if (gmtime_r(&t, &tm) == NULL || strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(ts, sizeof ts, "?");
    int64_t d = (ms - fsa_port_posix()->wall_now(NULL).ms) / 1000;
    if (d >= 0)
        snprintf(buf, cap, "%s (in %" PRId64 " s)", ts, d);
    else
        snprintf(buf, cap, "%s (%" PRId64 " s ago)", ts, -d);
    return buf;
}

static int cmd_status(int argc, char **argv)
{
    optspec_t o[] = {{"json", 0, NULL}};
    char *pos[1];
    parse_opts(argc, argv, o, 1, pos, 0,
               "usage: fieldsync --db FILE status [--json]\n"
               "Shows the queue, open conflicts and rejections, the last sync, the next attempt\n"
               "and the clock offset to the server. Times are ms since the epoch.\n");
    fsa_journal_t *j = open_journal(false);
    fsa_outbox_stats_t s;
    int64_t last = 0, next = 0, offset = 0, failures = 0;
    char *dev = NULL, *server = NULL;
    fsa_status_t st = fsa_outbox_stats(j, &s);
    if (st == FSA_OK)
        st = fsa_journal_state_get_int(j, "last_sync_ms", 0, &last);
    if (st == FSA_OK)
        st = fsa_journal_state_get_int(j, "next_attempt_ms", 0, &next);
    if (st == FSA_OK)
        st = fsa_journal_state_get_int(j, "clock_offset_ms", 0, &offset);
    if (st == FSA_OK)
        st = fsa_journal_state_get_int(j, "sync_failures", 0, &failures);
    if (st == FSA_OK)
        st = fsa_journal_state_get_str(j, FSA_CFG_DEVICE_ID, &dev);
    if (st == FSA_OK)
        st = fsa_journal_state_get_str(j, FSA_CFG_SERVER, &server);
    fsa_journal_close(j);
    if (st != FSA_OK) {
        fsa_model_free(dev);
        fsa_model_free(server);
        return fail("cannot read %s: %s", db_path, fsa_status_str(st));
    }
    if (o[0].value != NULL) {
        printf("{\"device_id\":");
        json_str_or_null(dev);
        printf(",\"server\":");
        json_str_or_null(server);
        printf(",\"pending\":%" PRId64 ",\"inflight\":%" PRId64 ",\"conflicts\":%" PRId64
               ",\"rejected\":%" PRId64 ",\"oldest_pending_at_ms\":%" PRId64
               ",\"last_seq\":%" PRId64 ",\"last_sync_ms\":%" PRId64 ",\"next_attempt_ms\":%" PRId64
               ",\"sync_failures\":%" PRId64 ",\"clock_offset_ms\":%" PRId64 "}\n",
               s.pending, s.inflight, s.conflicts, s.rejected, s.oldest_pending_at_ms, s.last_seq,
               last, next, failures, offset);
    } else {
        printf("device:        %s\nserver:        %s\n", dev ? dev : "(not set up)",
               server ? server : "(not set up)");
        printf("pending ops:   %" PRId64 " (%" PRId64 " sent, awaiting an answer)\n", s.pending,
               s.inflight);
        printf("conflicts:     %" PRId64 " open\nrejected:      %" PRId64 " open\n", s.conflicts,
               s.rejected);
        char b1[96], b2[96];
        printf("last sync:     %s\nnext attempt:  %s\n", when(last, b1, sizeof b1),
               next ? when(next, b2, sizeof b2) : "now (no backoff)");
        printf("clock offset:  %" PRId64 " ms\n", offset);
    }
    fsa_model_free(dev);
    fsa_model_free(server);
    return EXIT_SUCCESS;
}

typedef struct conflict_print {
    bool json;
    int count;
} conflict_print_t;

static bool print_conflict(void *arg, const fsa_conflict_t *c)
{
    conflict_print_t *p = arg;
    if (p->json) {
        printf("%s{\"op_id\":\"%s\",\"seq\":%" PRId64 ",\"kind\":\"%s\",\"type\":\"%s\","
               "\"id\":\"%s\",\"outcome\":\"%s\",\"code\":",
               p->count ? "," : "", c->op.op_id, c->op.seq, fsa_op_kind_name(c->op.kind),
               fsa_type_name(c->op.type), c->op.id, c->outcome);
        json_str_or_null(c->code);
        printf(",\"reason\":");
        json_str_or_null(c->reason);
        printf(",\"decision\":");
        json_str_or_null(c->decision);
        printf(",\"resolution\":");
        json_str_or_null(c->resolution[0] ? c->resolution : NULL);
        printf(",\"server_version\":%" PRId64 ",\"server_fields\":%s,\"local\":%s}",
               c->server_version, c->server_fields ? c->server_fields : "null",
               c->op.json ? c->op.json : "null");
    } else {
        printf("%s  %s %s %s  %s%s%s  %s\n", c->op.op_id, fsa_op_kind_name(c->op.kind),
               fsa_type_name(c->op.type), c->op.id, c->outcome, c->decision[0] ? " / " : "",
               c->decision, c->reason);
    }
    p->count++;
    return true;
}

static int cmd_conflicts(int argc, char **argv)
{
    optspec_t o[] = {{"json", 0, NULL}, {"all", 0, NULL}, {"take", 1, NULL}};
    const size_t no = sizeof o / sizeof o[0];
    char *pos[2];
    int n = parse_opts(argc, argv, o, no, pos, 2,
                       "usage: fieldsync --db FILE conflicts [--json] [--all]\n"
                       "       fieldsync --db FILE conflicts resolve OP_ID --take server|local\n"
                       "Lists the ops the server answered with a conflict or a rejection and that\n"
                       "wait for a person (--all: also resolved ones). 'resolve --take server'\n"
                       "accepts the server's state; '--take local' records the op again on top of\n"
                       "it (a group is resolved as a whole).\n");
    if (n > 0) {
        if (strcmp(pos[0], "resolve") != 0 || n != 2)
            die_usage("conflicts takes 'resolve OP_ID --take server|local'");
        const char *take = opt(o, no, "take");
        if (take == NULL || (strcmp(take, "server") != 0 && strcmp(take, "local") != 0))
            die_usage("conflicts resolve needs --take server or --take local");
        bool local = strcmp(take, "local") == 0;
        fsa_journal_t *j = open_journal(false);
        fsa_rec_t rec;
        fsa_status_t st = fsa_conflict_resolve(j, pos[1], local, local ? "local" : "server", &rec);
        fsa_journal_close(j);
        if (st != FSA_OK)
            return fail("%s", rec.error[0] ? rec.error : fsa_status_str(st));
        if (local)
            printf("recorded again as op %s (seq %" PRId64 ")\n", rec.op_id, rec.seq);
        else
            printf("resolved: the server's state stands\n");
        return EXIT_SUCCESS;
    }
    bool json = opt(o, no, "json") != NULL;
    conflict_print_t p = {.json = json};
    fsa_journal_t *j = open_journal(false);
    if (json)
        fputs("[", stdout);
    fsa_status_t st = fsa_conflicts_each(j, opt(o, no, "all") != NULL, print_conflict, &p);
    fsa_journal_close(j);
    if (json)
        fputs("]\n", stdout);
    else if (p.count == 0 && st == FSA_OK)
        printf("no open conflicts\n");
    return st == FSA_OK ? EXIT_SUCCESS : fail("cannot read conflicts: %s", fsa_status_str(st));
}

static int cmd_locks(int argc, char **argv)
{
    optspec_t o[] = {{"json", 0, NULL}};
    char *pos[1];
    parse_opts(argc, argv, o, 1, pos, 0,
               "usage: fieldsync --db FILE locks [--json]\n"
               "Lists the named locks held on this device, their fencing tokens and holders.\n");
    if (db_path == NULL)
        die_usage("no journal: give --db FILE or set FIELDSYNC_DB");
    fsa_lockmgr_t *m = NULL;
    char err[320];
    fsa_lockmgr_opts_t lo = {.label = "fieldsync-locks"};
    fsa_status_t st = fsa_lockmgr_open(fsa_port_posix(), db_path, &lo, &m, err, sizeof err);
    if (st != FSA_OK)
        return fail("%s", err);
    fsa_lock_stats_t s;
    st = fsa_lockmgr_stats(m, &s, err, sizeof err);
    fsa_lockmgr_close(m);
    if (st != FSA_OK)
        return fail("%s", err);
    if (o[0].value != NULL) {
        char buf[16384];
        st = fsa_lock_stats_json(&s, buf, sizeof buf, NULL);
        if (st != FSA_OK)
            return fail("cannot render the lock statistics: %s", fsa_status_str(st));
        printf("%s\n", buf);
        return EXIT_SUCCESS;
    }
    if (s.holders_total == 0)
        printf("no locks held\n");
    for (size_t i = 0; i < s.n_holders; i++) {
        const fsa_lock_holder_info_t *h = &s.holders[i];
        printf("%s  token %" PRId64 "  held by %s (pid %" PRId64 ")%s  %" PRId64 " ms left\n",
               h->key, h->token, h->label, h->pid, h->alive ? "" : " [dead]",
               h->remaining_ns / FSA_NS_PER_MS);
    }
    if (s.holders_total > s.n_holders)
        printf("... and %zu more\n", s.holders_total - s.n_holders);
    return EXIT_SUCCESS;
}

static int cmd_show(int argc, char **argv)
{
    optspec_t o[] = {{"json", 0, NULL}};
    char *pos[2];
    int n =
        parse_opts(argc, argv, o, 1, pos, 2,
                   "usage: fieldsync --db FILE show TYPE ID [--json]\n"
                   "Shows an entity's local view: the server's last known state with the\n"
                   "device's pending ops applied. TYPE: attendance, jobneed (or job), ticket.\n");
    if (n != 2)
        die_usage("show needs TYPE and ID");
    fsa_type_t type;
    if (strcmp(pos[0], "job") == 0)
        type = FSA_TYPE_JOBNEED;
    else if (fsa_type_parse(pos[0], &type) != FSA_OK)
        die_usage("unknown type '%s' (attendance, jobneed, ticket)", pos[0]);
    fsa_journal_t *j = open_journal(false);
    char *fields = NULL;
    int64_t version = 0, pending = 0;
    fsa_status_t st = fsa_journal_get(j, type, pos[1], &fields, &version, &pending);
    fsa_journal_close(j);
    if (st == FSA_ENOTFOUND)
        return fail("no %s %s in this journal", fsa_type_name(type), pos[1]);
    if (st != FSA_OK)
        return fail("cannot read %s %s: %s", fsa_type_name(type), pos[1], fsa_status_str(st));
    if (o[0].value != NULL)
        printf("{\"type\":\"%s\",\"id\":\"%s\",\"server_version\":%" PRId64 ",\"pending\":%" PRId64
               ",\"fields\":%s}\n",
               fsa_type_name(type), pos[1], version, pending, fields);
    else
        printf("%s %s (server version %" PRId64 ", %" PRId64 " pending)\n%s\n", fsa_type_name(type),
               pos[1], version, pending, fields);
    fsa_model_free(fields);
    return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
    fsa_libs_use_allocator();
    char perr[160];
    if (fsa_process_protect_secrets(perr, sizeof perr) != FSA_OK)
        return fail("%s", perr);
    db_path = getenv("FIELDSYNC_DB");
    bool level_given = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(USAGE, stdout);
            return EXIT_SUCCESS;
        } else if (strcmp(a, "--version") == 0) {
            printf("fieldsync 0.1.0 (protocol v1)\n");
            return EXIT_SUCCESS;
        } else if (strcmp(a, "--db") == 0 && i + 1 < argc) {
            db_path = argv[++i];
        } else if (strcmp(a, "--log-level") == 0 && i + 1 < argc) {
            if (fsa_log_level_parse(argv[++i], &fsa_port_posix()->log_level) != FSA_OK)
                die_usage("unknown log level '%s'", argv[i]);
            level_given = true;
        } else if (strcmp(a, "--db") == 0 || strcmp(a, "--log-level") == 0) {
            die_usage("option '%s' needs a value", a);
        } else {
            die_usage("unknown option '%s'", a);
        }
    }
    if (i >= argc)
        die_usage("no command given");
    const char *cmd = argv[i];
    /* A command reports its own errors in one line, so the library's warnings are shown only at
     * --log-level; the daemon says what it does (info) unless told otherwise. */
    if (!level_given)
        fsa_port_posix()->log_level = strcmp(cmd, "run") == 0 ? FSA_LOG_INFO : FSA_LOG_ERROR;
    int rest = argc - i - 1;
    char **rv = argv + i + 1;
    if (strcmp(cmd, "init") == 0)
        return cmd_init(rest, rv);
    if (strcmp(cmd, "attendance") == 0)
        return cmd_attendance(rest, rv);
    if (strcmp(cmd, "job") == 0)
        return cmd_entity(FSA_TYPE_JOBNEED, rest, rv);
    if (strcmp(cmd, "ticket") == 0)
        return cmd_entity(FSA_TYPE_TICKET, rest, rv);
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
