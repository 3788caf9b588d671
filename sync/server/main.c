/* fieldsync-server: the command line of the reference server (PROTOCOL.md), see docs/server.md. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port/files.h"
#include "port/limits.h"
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
    "  --per-addr-connections N connections open at once from one client address, default 64\n"
    "                           (behind a proxy all clients share its address: raise it)\n"
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

/* One line naming the problem (and the offending argument, when there is one), exit 2. */
static void die_usage(const char *problem, const char *arg)
{
    if (arg != NULL)
        fprintf(stderr, "fieldsync-server: %s: '%s' (see --help)\n", problem, arg);
    else
        fprintf(stderr, "fieldsync-server: %s (see --help)\n", problem);
    exit(2);
}

static double parse_rate(const char *flag, const char *v)
{
    char *end = NULL;
    errno = 0;
    double d = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !(d >= 0.0 && d <= 1.0))
        die_usage("this option needs a rate between 0 and 1", flag);
    return d;
}

static long long parse_num(const char *flag, const char *v, long long min, long long max)
{
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < min || n > max)
        die_usage("this option needs a whole number in range", flag);
    return n;
}

/* Splits HOST:PORT (HOST may be [v6]) into buffers. */
static void split_listen(const char *flag, const char *v, char *host, size_t hcap, char *port,
                         size_t pcap)
{
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon == v || colon[1] == '\0')
        die_usage(strcmp(flag, "--listen") == 0 ? "--listen needs HOST:PORT"
                                                : "--admin-listen needs HOST:PORT or unix:PATH",
                  v);
    const char *h = v;
    size_t hlen = (size_t)(colon - v);
    if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= hcap || strlen(colon + 1) >= pcap)
        die_usage(strcmp(flag, "--listen") == 0 ? "--listen needs HOST:PORT"
                                                : "--admin-listen needs HOST:PORT or unix:PATH",
                  v);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, colon + 1, strlen(colon + 1) + 1);
    (void)parse_num(flag, port, 0, 65535);
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
    memset(&cfg, 0, sizeof cfg);
    cfg.faults.retry_after_s = 1;
    cfg.faults.seed = 1;
    char host[256] = "";
    char port[16] = "";
    bool have_listen = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0)
            die_usage("unexpected argument", a);
        if (strcmp(a, "--admin-allow-remote") == 0) {
            cfg.admin_remote = true;
            continue;
        }
        if (i + 1 >= argc)
            die_usage("this option needs a value", a);
        const char *v = argv[++i];
        if (strcmp(a, "--listen") == 0) {
            split_listen(a, v, host, sizeof host, port, sizeof port);
            have_listen = true;
        } else if (strcmp(a, "--db") == 0) {
            cfg.db_path = v;
        } else if (strcmp(a, "--devices-file") == 0) {
            cfg.devices_file = v;
        } else if (strcmp(a, "--admin-token-file") == 0) {
            cfg.admin_token_file = v;
        } else if (strcmp(a, "--admin-listen") == 0) {
            if (strncmp(v, "unix:", 5) == 0) {
                if (v[5] == '\0')
                    die_usage("--admin-listen needs HOST:PORT or unix:PATH", v);
            } else {
                char h[256], p[16];
                split_listen(a, v, h, sizeof h, p, sizeof p);
            }
            cfg.admin_listen = v;
        } else if (strcmp(a, "--header-timeout") == 0) {
            cfg.header_timeout_s = (int)parse_num(a, v, 1, FSA_LIMIT_SERVER_HEADER_S_MAX);
        } else if (strcmp(a, "--tls-cert") == 0) {
            cfg.tls_cert = v;
        } else if (strcmp(a, "--tls-key") == 0) {
            cfg.tls_key = v;
        } else if (strcmp(a, "--op-retention-days") == 0) {
            char *end = NULL;
            errno = 0;
            double d = strtod(v, &end);
            /* At most 100 years, so the milliseconds fit easily. */
            if (errno != 0 || end == v || *end != '\0' || !(d > 0.0 && d <= 36500.0))
                die_usage("--op-retention-days needs a number of days above 0", v);
            cfg.op_retention_ms = (int64_t)(d * 86400000.0);
            if (cfg.op_retention_ms < 1)
                cfg.op_retention_ms = 1;
        } else if (strcmp(a, "--device-rate") == 0) {
            cfg.device_rate = (int)parse_num(a, v, 1, FSA_LIMIT_DEVICE_REQ_PER_S_MAX);
        } else if (strcmp(a, "--request-deadline-s") == 0) {
            cfg.request_deadline_s = (int)parse_num(a, v, 1, FSA_LIMIT_SERVER_REQUEST_S_MAX);
        } else if (strcmp(a, "--per-addr-connections") == 0) {
            cfg.per_addr_connections = (int)parse_num(a, v, 1, FSA_LIMIT_SERVER_CONNECTIONS);
        } else if (strcmp(a, "--fault-latency-ms") == 0) {
            cfg.faults.latency_ms = parse_num(a, v, 0, 600000);
        } else if (strcmp(a, "--fault-5xx") == 0) {
            cfg.faults.rate_5xx = parse_rate(a, v);
        } else if (strcmp(a, "--fault-429") == 0) {
            cfg.faults.rate_429 = parse_rate(a, v);
        } else if (strcmp(a, "--fault-retry-after") == 0) {
            cfg.faults.retry_after_s = (int)parse_num(a, v, 0, 86400);
        } else if (strcmp(a, "--fault-drop") == 0) {
            cfg.faults.rate_drop = parse_rate(a, v);
        } else if (strcmp(a, "--fault-reset") == 0) {
            cfg.faults.rate_reset = parse_rate(a, v);
        } else if (strcmp(a, "--fault-seed") == 0) {
            cfg.faults.seed = (uint64_t)parse_num(a, v, 0, INT64_MAX);
        } else {
            die_usage("unknown option", a);
        }
    }
    if (!have_listen)
        die_usage("--listen HOST:PORT is required", NULL);
    if (cfg.db_path == NULL)
        die_usage("--db FILE|URI is required", NULL);
    if (cfg.devices_file == NULL)
        die_usage("--devices-file FILE is required", NULL);
    if (cfg.admin_listen != NULL && cfg.admin_token_file == NULL)
        die_usage("--admin-listen goes with --admin-token-file (the admin API is off without it)",
                  NULL);
    if (cfg.admin_remote && cfg.admin_listen == NULL)
        die_usage("--admin-allow-remote goes with --admin-listen", NULL);
    if ((cfg.tls_cert == NULL) != (cfg.tls_key == NULL))
        die_usage("--tls-cert and --tls-key go together", NULL);
    cfg.host = host;
    cfg.port = port;

    /* The signals are blocked before any thread starts, so every thread inherits the mask and
     * only sigwait below receives them. A peer closing its socket must not kill the server. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    (void)signal(SIGPIPE, SIG_IGN); /* cannot fail for SIGPIPE */

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

    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    fsa_server_stop(srv);
    return 0;
}
