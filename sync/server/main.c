/* fieldsync-server: the command line of the reference server (PROTOCOL.md), see docs/server.md. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port/daemon.h"
#include "port/files.h"
#include "port/limits.h"
#include "port/opts.h"
#include "storage/libs.h"
#include "sync/server/server.h"

static const char usage[] =
    "usage: fieldsync-server --listen HOST:PORT --db FILE|URI --devices-file FILE\n"
    "                        [--admin-token-file FILE [--admin-listen ADDR]]\n"
    "                        [--tls-cert FILE --tls-key FILE]\n"
    "                        [fault options] [--help]\n"
    "\n"
    "The reference server of the fieldsync protocol (push, pull, HMAC authentication) on SQLite\n"
    "or PostgreSQL.\n"
    "\n"
    "  --listen HOST:PORT       address to listen on; port 0 picks a free one. Prints\n"
    "                           'listening on http://HOST:PORT' once it accepts connections\n"
    "  --db FILE|URI            the server's database: a SQLite file (created when missing,\n"
    "                           mode 0600) or a PostgreSQL URI postgresql://USER@HOST:PORT/DB\n"
    "                           (schema created and migrated by the server). Several server\n"
    "                           processes may share one database\n"
    "  --devices-file FILE      {\"devices\": [{\"id\": \"dev001\", \"secret\": \"<64 hex>\"}]},\n"
    "                           must not be accessible to group or others (chmod 600)\n"
    "  --admin-token-file FILE  enables the admin API under /admin/v1/ with\n"
    "                           'Authorization: Bearer <token>' (token: the file's first line,\n"
    "                           at least 32 random chars, e.g. openssl rand -hex 16; chmod 600)\n"
    "                           on its own listener (--admin-listen); the device listener never\n"
    "                           serves it. Without it the admin API is off\n"
    "  --admin-listen ADDR      where the admin API listens: HOST:PORT on loopback (port 0 picks\n"
    "                           a free one) or unix:PATH (a socket file, mode 0600); default\n"
    "                           127.0.0.1:0. Prints 'admin listening on URL' (before the\n"
    "                           'listening on' line). It can read and change every entity:\n"
    "                           an address that is not loopback is refused\n"
    "  --admin-allow-remote     allow a non-loopback --admin-listen (then put TLS and a\n"
    "                           firewall in front of it)\n"
    "  --tls-cert FILE          serve HTTPS with this PEM certificate (chain)\n"
    "  --tls-key FILE           and this PEM private key (chmod 600)\n"
    "  --op-retention-days D    keep op outcomes (idempotency) D days, default 180: at least as\n"
    "                           long as a device may stay offline (D may have a fraction)\n"
    "  --device-rate N          requests a second one device may make (bursts of 4*N), over it\n"
    "                           429 for that device only; default 50, at most 10000\n"
    "  --per-addr-connections N connections open at once from one client address, default 64,\n"
    "                           and its share of the 64 MiB body budget: N/1000 of it, at\n"
    "                           least a quarter (behind a proxy all clients share its address:\n"
    "                           raise it)\n"
    "  --request-deadline-s N   seconds a request's headers and body may take from its first\n"
    "                           line, then the connection is closed; default 120\n"
    "  --header-timeout N       seconds a connection may take to complete a request's headers\n"
    "                           (from its start, or from the previous answer plus the 30 s\n"
    "                           idle timeout), then it is shut down; default 10, at most 300\n"
    "  --help                   this text\n"
    "\n"
    "Fault options (for tests and simulations; all off by default; they apply to /v1/ requests):\n"
    "  --fault-latency-ms N     wait N ms before processing each request\n"
    "  --fault-5xx RATE         answer 500 (nothing applied) with probability RATE (0..1)\n"
    "  --fault-429 RATE         answer 429 with Retry-After (nothing applied) with probability "
    "RATE\n"
    "  --fault-retry-after S    the Retry-After of injected 429s, in seconds (default 1)\n"
    "  --fault-drop RATE        process and commit, then close the connection without answering\n"
    "  --fault-reset RATE       close the connection before processing the request\n"
    "  --fault-seed S           seed of the fault generator (default 1): same seed, same faults\n"
    "\n"
    "SIGTERM or SIGINT: stop accepting, finish requests in flight, close the database, exit 0.\n";

/* One line naming the problem, exit 2. */
static _Noreturn void die_usage(const char *fmt, ...) FSA_PRINTF(1, 2);
static _Noreturn void die_usage(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fieldsync-server: %s (see --help)\n", msg);
    exit(2);
}

/* The options, in the order of the usage text. Each may be given again: the last stands. */
enum {
    O_LISTEN,
    O_DB,
    O_DEVICES_FILE,
    O_ADMIN_TOKEN_FILE,
    O_ADMIN_LISTEN,
    O_ADMIN_ALLOW_REMOTE,
    O_TLS_CERT,
    O_TLS_KEY,
    O_OP_RETENTION_DAYS,
    O_DEVICE_RATE,
    O_PER_ADDR_CONNECTIONS,
    O_REQUEST_DEADLINE_S,
    O_HEADER_TIMEOUT,
    O_FAULT_LATENCY_MS,
    O_FAULT_5XX,
    O_FAULT_429,
    O_FAULT_RETRY_AFTER,
    O_FAULT_DROP,
    O_FAULT_RESET,
    O_FAULT_SEED,
    O_COUNT
};

/* o's value as a whole number from min to max into *out, when it was given. */
static void take_num(const fsa_opt_t *o, long long min, long long max, long long *out)
{
    char err[256];
    if (o->value != NULL &&
        fsa_opts_int(o->name, o->value, min, max, out, err, sizeof err) != FSA_OK)
        die_usage("%s", err);
}

static void take_int(const fsa_opt_t *o, int min, int max, int *out)
{
    long long v = *out;
    take_num(o, min, max, &v);
    *out = (int)v;
}

static void take_rate(const fsa_opt_t *o, double *out)
{
    char err[256];
    if (o->value != NULL &&
        fsa_opts_real(o->name, o->value, 0.0, 1.0, "rate", out, err, sizeof err) != FSA_OK)
        die_usage("%s", err);
}

/* Splits HOST:PORT (HOST may be [v6]) into buffers; false when v is not one. */
static bool split_listen(const char *v, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon == v || colon[1] == '\0')
        return false;
    const char *h = v;
    size_t hlen = (size_t)(colon - v);
    if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= hcap || strlen(colon + 1) >= pcap)
        return false;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, colon + 1, strlen(colon + 1) + 1);
    long long n = 0;
    char err[128];
    return fsa_opts_int("port", port, 0, 65535, &n, err, sizeof err) == FSA_OK;
}

/* The server's addresses and files: --listen (into host and port, which cfg then points at),
 * --db and --devices-file, all three required. */
static void take_required(const fsa_opt_t *o, fsa_server_config_t *cfg, char *host, size_t hcap,
                          char *port, size_t pcap)
{
    const char *listen = o[O_LISTEN].value;
    if (listen == NULL)
        die_usage("--listen HOST:PORT is required");
    if (!split_listen(listen, host, hcap, port, pcap))
        die_usage("--listen needs HOST:PORT, not '%s'", listen);
    cfg->host = host;
    cfg->port = port;
    cfg->db_path = o[O_DB].value;
    if (cfg->db_path == NULL)
        die_usage("--db FILE|URI is required");
    cfg->devices_file = o[O_DEVICES_FILE].value;
    if (cfg->devices_file == NULL)
        die_usage("--devices-file FILE is required");
}

/* The admin API's options and TLS's, with the ones that go together. */
static void take_admin_tls(const fsa_opt_t *o, fsa_server_config_t *cfg)
{
    cfg->admin_token_file = o[O_ADMIN_TOKEN_FILE].value;
    cfg->admin_listen = o[O_ADMIN_LISTEN].value;
    cfg->admin_remote = o[O_ADMIN_ALLOW_REMOTE].value != NULL;
    const char *al = cfg->admin_listen;
    if (al != NULL) {
        char h[256], p[16];
        bool ok = strncmp(al, "unix:", 5) == 0 ? al[5] != '\0'
                                               : split_listen(al, h, sizeof h, p, sizeof p);
        if (!ok)
            die_usage("--admin-listen needs HOST:PORT or unix:PATH, not '%s'", al);
    }
    if (cfg->admin_listen != NULL && cfg->admin_token_file == NULL)
        die_usage("--admin-listen goes with --admin-token-file (the admin API is off without it)");
    if (cfg->admin_remote && cfg->admin_listen == NULL)
        die_usage("--admin-allow-remote goes with --admin-listen");
    cfg->tls_cert = o[O_TLS_CERT].value;
    cfg->tls_key = o[O_TLS_KEY].value;
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL))
        die_usage("--tls-cert and --tls-key go together");
}

/* --op-retention-days: above 0 and at most 100 years, so the milliseconds fit easily. */
static void take_retention(const fsa_opt_t *o, fsa_server_config_t *cfg)
{
    if (o->value == NULL)
        return;
    char err[256];
    double d = 0.0;
    if (fsa_opts_real(o->name, o->value, 0.0, 36500.0, "number of days", &d, err, sizeof err) !=
            FSA_OK ||
        !(d > 0.0))
        die_usage("--op-retention-days needs a number of days above 0 (at most 36500), not "
                  "'%s'",
                  o->value);
    cfg->op_retention_ms = (int64_t)(d * 86400000.0);
    /* Made 1 ms, a tiny value had every outcome swept at once (and every resent op applied
     * again) without a word. */
    if (cfg->op_retention_ms < 1)
        die_usage("--op-retention-days %s is under a millisecond", o->value);
}

/* The fault injection options (--fault-*), over cfg's defaults. */
static void take_faults(const fsa_opt_t *o, fsa_server_config_t *cfg)
{
    long long v = cfg->faults.latency_ms;
    take_num(&o[O_FAULT_LATENCY_MS], 0, 600000, &v);
    cfg->faults.latency_ms = v;
    take_rate(&o[O_FAULT_5XX], &cfg->faults.rate_5xx);
    take_rate(&o[O_FAULT_429], &cfg->faults.rate_429);
    take_int(&o[O_FAULT_RETRY_AFTER], 0, 86400, &cfg->faults.retry_after_s);
    take_rate(&o[O_FAULT_DROP], &cfg->faults.rate_drop);
    take_rate(&o[O_FAULT_RESET], &cfg->faults.rate_reset);
    v = (long long)cfg->faults.seed;
    take_num(&o[O_FAULT_SEED], 0, INT64_MAX, &v);
    cfg->faults.seed = (uint64_t)v;
}

/* The command line into cfg (host and port into the buffers cfg then points at); --help prints
 * the usage and exits 0; a usage error is one line and exit 2. */
static void parse_args(int argc, char **argv, fsa_server_config_t *cfg, char *host, size_t hcap,
                       char *port, size_t pcap)
{
    fsa_opt_t o[O_COUNT] = {
        [O_LISTEN] = {"listen", true, true, NULL},
        [O_DB] = {"db", true, true, NULL},
        [O_DEVICES_FILE] = {"devices-file", true, true, NULL},
        [O_ADMIN_TOKEN_FILE] = {"admin-token-file", true, true, NULL},
        [O_ADMIN_LISTEN] = {"admin-listen", true, true, NULL},
        [O_ADMIN_ALLOW_REMOTE] = {"admin-allow-remote", false, true, NULL},
        [O_TLS_CERT] = {"tls-cert", true, true, NULL},
        [O_TLS_KEY] = {"tls-key", true, true, NULL},
        [O_OP_RETENTION_DAYS] = {"op-retention-days", true, true, NULL},
        [O_DEVICE_RATE] = {"device-rate", true, true, NULL},
        [O_PER_ADDR_CONNECTIONS] = {"per-addr-connections", true, true, NULL},
        [O_REQUEST_DEADLINE_S] = {"request-deadline-s", true, true, NULL},
        [O_HEADER_TIMEOUT] = {"header-timeout", true, true, NULL},
        [O_FAULT_LATENCY_MS] = {"fault-latency-ms", true, true, NULL},
        [O_FAULT_5XX] = {"fault-5xx", true, true, NULL},
        [O_FAULT_429] = {"fault-429", true, true, NULL},
        [O_FAULT_RETRY_AFTER] = {"fault-retry-after", true, true, NULL},
        [O_FAULT_DROP] = {"fault-drop", true, true, NULL},
        [O_FAULT_RESET] = {"fault-reset", true, true, NULL},
        [O_FAULT_SEED] = {"fault-seed", true, true, NULL},
    };
    fsa_opts_result_t r;
    char err[256];
    if (fsa_opts_parse(argc - 1, argv + 1, o, O_COUNT, NULL, 0, FSA_OPTS_NONEMPTY, &r, err,
                       sizeof err) != FSA_OK)
        die_usage("%s", err);
    if (r.help) {
        fputs(usage, stdout);
        exit(0);
    }
    memset(cfg, 0, sizeof *cfg);
    cfg->faults.retry_after_s = 1;
    cfg->faults.seed = 1;

    take_required(o, cfg, host, hcap, port, pcap);
    take_admin_tls(o, cfg);
    take_retention(&o[O_OP_RETENTION_DAYS], cfg);
    take_int(&o[O_HEADER_TIMEOUT], 1, FSA_LIMIT_SERVER_HEADER_S_MAX, &cfg->header_timeout_s);
    take_int(&o[O_DEVICE_RATE], 1, FSA_LIMIT_DEVICE_REQ_PER_S_MAX, &cfg->device_rate);
    take_int(&o[O_REQUEST_DEADLINE_S], 1, FSA_LIMIT_SERVER_REQUEST_S_MAX, &cfg->request_deadline_s);
    take_int(&o[O_PER_ADDR_CONNECTIONS], 1, FSA_LIMIT_SERVER_CONNECTIONS,
             &cfg->per_addr_connections);
    take_faults(o, cfg);
}

int main(int argc, char **argv)
{
    fsa_libs_use_allocator();
    char perr[160];
    if (fsa_process_protect_secrets(perr, sizeof perr) != FSA_OK) {
        fprintf(stderr, "fieldsync-server: %s\n", perr);
        return 1;
    }
    fsa_server_config_t cfg;
    char host[256] = "";
    char port[16] = "";
    parse_args(argc, argv, &cfg, host, sizeof host, port, sizeof port);

    /* The signals are blocked before any thread starts, so every thread inherits the mask and
     * only the wait below receives them; a peer closing its socket must not kill the server
     * (SIGPIPE ignored). SIGHUP keeps its default action: the server has nothing to reload. */
    if (fsa_signals_block_stop() != FSA_OK) {
        fprintf(stderr, "fieldsync-server: cannot block the stop signals\n");
        return 1;
    }

    /* Shorter than a day: for tests. Said, since it breaks idempotency for any device that
     * resends later (PROTOCOL.md section 6: no op applied twice). */
    if (cfg.op_retention_ms > 0 && cfg.op_retention_ms < INT64_C(86400000))
        fprintf(stderr,
                "fieldsync-server: warning: op outcomes are kept only %.3f s "
                "(--op-retention-days): an op a device resends after that is applied again\n",
                (double)cfg.op_retention_ms / 1000.0);
    fsa_server_t *srv = NULL;
    char err[512];
    fsa_status_t st = fsa_server_start(&cfg, &srv, err, sizeof err);
    if (st != FSA_OK) {
        fprintf(stderr, "fieldsync-server: %s\n", err);
        return 1;
    }
    /* The admin line first: whoever waits for "listening on" has read it too by then. */
    if (fsa_server_admin_url(srv)[0] != '\0')
        printf("admin listening on %s\n", fsa_server_admin_url(srv));
    printf("listening on %s\n", fsa_server_url(srv));
    fflush(stdout);

    (void)fsa_signal_wait(); /* SIGTERM or SIGINT */
    fsa_server_stop(srv);
    return 0;
}
