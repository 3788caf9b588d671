/* guard-console: an example app on libfieldsync: a guard's console that records check-ins and
 * escalations from its input and prints the sync status and the changes as they arrive. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fieldsync/fieldsync.h>

/*
 * It shows the shape of an app with a main loop of its own (a UI's, GLib's, Qt's, libuv's): the
 * journal is opened with buffered events, the library's sync thread runs beside the app, and the
 * app polls the library's event fd with its own input and calls fieldsync_dispatch() when it is
 * readable, so every listener runs on the app's thread. Only the public header is used.
 */

static const char HELP[] =
    "usage: guard-console JOURNAL\n"
    "A guard's console on a journal that 'fieldsync init' set up. Commands on standard input,\n"
    "one per line:\n"
    "  checkin PEOPLE SITE [LAT LON]   checkout PEOPLE SITE [LAT LON]\n"
    "  ticket ID                       escalate ID [NOTE...]\n"
    "  show TYPE ID                    status          sync          quit\n"
    "It answers each with 'ok ...' or 'error: ...', and prints 'status: ...', 'change: ...' and\n"
    "'conflict: ...' lines as the sync thread reports them. End of input quits.\n";

typedef struct app {
    fieldsync_t *fs;
    fieldsync_state_t state;
    int64_t depth;
    int stopped;
} app_t;

static void on_status(void *ctx, const fieldsync_sync_status_t *s)
{
    app_t *a = ctx;
    if (s->state == FIELDSYNC_STATE_STOPPED)
        a->stopped = 1;
    if (s->state == a->state && s->queue_depth == a->depth)
        return; /* print what a person would want to see change */
    a->state = s->state;
    a->depth = s->queue_depth;
    printf("status: %s, %lld pending%s%s\n", fieldsync_state_str(s->state),
           (long long)s->queue_depth, s->last_error_msg[0] ? "; " : "", s->last_error_msg);
}

static void on_change(void *ctx, const fieldsync_change_t *c)
{
    (void)ctx;
    printf("change: %s %s %s v%lld\n", fieldsync_change_reason_str(c->reason), c->type, c->id,
           (long long)c->version);
}

static void on_conflict(void *ctx, const fieldsync_conflict_event_t *c)
{
    (void)ctx;
    printf("conflict: %s %s %s (%s): %s\n", c->outcome, c->type, c->id, c->decision, c->reason);
}

static void report(app_t *a, fieldsync_status_t st, const fieldsync_rec_t *rec)
{
    if (st == FIELDSYNC_OK)
        printf("ok op %s\n", rec->op_id);
    else
        printf("error: %s\n", fieldsync_errmsg(a->fs));
}

/* Splits line into at most max words (in place); returns the count. */
static int split(char *line, char **w, int max)
{
    int n = 0;
    for (char *p = line; *p != '\0' && n < max;) {
        while (*p == ' ' || *p == '\t')
            *p++ = '\0';
        if (*p == '\0')
            break;
        w[n++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t')
            p++;
    }
    return n;
}

/* Runs one command; false for quit. */
static int command(app_t *a, char *line)
{
    char *rest_of_note = NULL;
    char *w[8];
    /* Three words at most, the third one holding the rest of the line: an escalation's note keeps
     * its spaces; any other command splits the rest too. */
    int n = split(line, w, 3);
    if (n == 0)
        return 1;
    if (n == 3 && strcmp(w[0], "escalate") == 0)
        rest_of_note = w[2];
    else if (n == 3)
        n = 2 + split(w[2], w + 2, 6);
    fieldsync_rec_t rec;
    fieldsync_status_t st;
    if (strcmp(w[0], "quit") == 0)
        return 0;
    if ((strcmp(w[0], "checkin") == 0 || strcmp(w[0], "checkout") == 0) && (n == 3 || n == 5)) {
        fieldsync_position_t pos = {0, 0, -1};
        char *end1 = NULL, *end2 = NULL;
        if (n == 5) {
            pos.lat = strtod(w[3], &end1);
            pos.lon = strtod(w[4], &end2);
            if (*end1 != '\0' || *end2 != '\0') {
                printf("error: LAT and LON are numbers\n");
                return 1;
            }
        }
        st = fieldsync_attendance(a->fs, strcmp(w[0], "checkin") == 0, w[1], w[2],
                                  n == 5 ? &pos : NULL, NULL, NULL, &rec);
        report(a, st, &rec);
    } else if (strcmp(w[0], "ticket") == 0 && n == 2) {
        report(a, fieldsync_ticket_create(a->fs, w[1], NULL, &rec), &rec);
    } else if (strcmp(w[0], "escalate") == 0 && n >= 2) {
        report(a, fieldsync_ticket_escalate(a->fs, w[1], NULL, rest_of_note, NULL, &rec), &rec);
    } else if (strcmp(w[0], "show") == 0 && n == 3) {
        char *json = NULL;
        if (fieldsync_get(a->fs, w[1], w[2], &json) == FIELDSYNC_OK)
            printf("ok %s\n", json);
        else
            printf("error: %s\n", fieldsync_errmsg(a->fs));
        fieldsync_free(json);
    } else if (strcmp(w[0], "status") == 0 && n == 1) {
        fieldsync_sync_status_t s = {.size = sizeof s};
        if (fieldsync_status(a->fs, &s) == FIELDSYNC_OK)
            printf("ok %s, %lld pending, %lld conflicts\n", fieldsync_state_str(s.state),
                   (long long)s.queue_depth, (long long)s.open_conflicts);
        else
            printf("error: %s\n", fieldsync_errmsg(a->fs));
    } else if (strcmp(w[0], "sync") == 0 && n == 1) {
        if (fieldsync_sync_now(a->fs) == FIELDSYNC_OK)
            printf("ok syncing\n");
        else
            printf("error: %s\n", fieldsync_errmsg(a->fs));
    } else {
        printf("error: unknown command or wrong arguments: '%s' (see --help)\n", w[0]);
    }
    return 1;
}

static int dispatch(app_t *a)
{
    if (fieldsync_dispatch(a->fs, NULL) != FIELDSYNC_OK) {
        fprintf(stderr, "guard-console: %s\n", fieldsync_errmsg(a->fs));
        return -1;
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(HELP, stdout);
        return 0;
    }
    if (argc != 2) {
        fputs("guard-console: give the journal (see --help)\n", stderr);
        return 2;
    }
    app_t a = {.state = FIELDSYNC_STATE_IDLE, .depth = -1};
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = argv[1];
    cfg.flags = FIELDSYNC_EVENTS_BUFFERED;
    cfg.label = "guard-console";
    int fd = -1;
    if (fieldsync_open(&cfg, &a.fs) != FIELDSYNC_OK ||
        fieldsync_add_status_listener(a.fs, on_status, &a, NULL) != FIELDSYNC_OK ||
        fieldsync_add_change_listener(a.fs, on_change, &a, NULL) != FIELDSYNC_OK ||
        fieldsync_add_conflict_listener(a.fs, on_conflict, &a, NULL) != FIELDSYNC_OK ||
        fieldsync_event_fd(a.fs, &fd) != FIELDSYNC_OK || fieldsync_start(a.fs, 0) != FIELDSYNC_OK) {
        fprintf(stderr, "guard-console: %s\n", fieldsync_errmsg(a.fs));
        (void)fieldsync_close(a.fs);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char buf[4096];
    size_t len = 0;
    int running = 1, rc = 0;
    while (running) {
        struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            rc = 1;
            break;
        }
        if ((p[1].revents & POLLIN) && dispatch(&a) != 0) {
            rc = 1;
            break;
        }
        if (!(p[0].revents & (POLLIN | POLLHUP)))
            continue;
        ssize_t got = read(STDIN_FILENO, buf + len, sizeof buf - 1 - len);
        if (got <= 0)
            break; /* end of input */
        len += (size_t)got;
        buf[len] = '\0';
        char *line = buf, *nl;
        while (running && (nl = strchr(line, '\n')) != NULL) {
            *nl = '\0';
            running = command(&a, line);
            line = nl + 1;
        }
        len = strlen(line);
        memmove(buf, line, len + 1);
        if (len == sizeof buf - 1) {
            printf("error: line too long\n");
            len = 0;
        }
        fflush(stdout);
    }
    /* Stop, and keep dispatching until the STOPPED status: only then is nothing left to run. */
    if (fieldsync_stop(a.fs) == FIELDSYNC_OK) {
        while (!a.stopped) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (poll(&p, 1, 10000) <= 0 || dispatch(&a) != 0)
                break;
        }
    }
    fflush(stdout);
    if (fieldsync_close(a.fs) != FIELDSYNC_OK)
        rc = 1;
    return a.stopped ? rc : 1;
}
