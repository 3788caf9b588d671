/* Tests for port/posix/daemon.c: signals taken with a wait, the one-instance lock, the syslog
 * sink, the loopback listener. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "port/daemon.h"
#include "tests/test_util.h"

/* Runs fn in a child (signal masks and syslog are process state) and returns its exit status. */
static int in_child(int (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn());
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* After fsa_signals_block or fsa_signals_block_stop: SIGTERM and SIGINT are waited for, SIGPIPE
 * is ignored. 0, or the code of the first failed check. */
static int stop_signals_waited(void)
{
    kill(getpid(), SIGTERM);
    if (fsa_signal_wait() != FSA_SIGNAL_TERM)
        return 12;
    kill(getpid(), SIGINT);
    if (fsa_signal_wait() != FSA_SIGNAL_INT)
        return 13;
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler != SIG_IGN)
        return 14;
    return 0;
}

static int signals_child(void)
{
    if (fsa_signals_block() != FSA_OK)
        return 10;
    /* Blocked signals stay pending until the wait takes them. */
    kill(getpid(), SIGHUP);
    if (fsa_signal_wait() != FSA_SIGNAL_RELOAD)
        return 11;
    int rc = stop_signals_waited();
    if (rc != 0)
        return rc;
    kill(getpid(), SIGPIPE); /* ignored: the child lives on */
    return 0;
}

static void test_signals__blocked_then_waited_for(void **state)
{
    (void)state;
    assert_int_equal(in_child(signals_child), 0);
}

/* Without SIGHUP: TERM and INT are waited for, SIGHUP keeps its default action and ends the
 * process (the parent sees it die of SIGHUP). */
static int signals_stop_child(void)
{
    if (fsa_signals_block_stop() != FSA_OK)
        return 10;
    sigset_t cur;
    if (pthread_sigmask(SIG_BLOCK, NULL, &cur) != 0 || sigismember(&cur, SIGHUP) ||
        !sigismember(&cur, SIGTERM) || !sigismember(&cur, SIGINT))
        return 11;
    int rc = stop_signals_waited();
    if (rc != 0)
        return rc;
    kill(getpid(), SIGHUP);
    return 15; /* not reached: SIGHUP ends the process at once */
}

static void test_signals__block_stop_leaves_sighup_alone(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(signals_stop_child());
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status))
        fail_msg("child exited %d instead of dying of SIGHUP", WEXITSTATUS(status));
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGHUP);
}

static void atexit_says_it_ran(void)
{
    _exit(99);
}

static int exit_now_child(void)
{
    if (atexit(atexit_says_it_ran) != 0)
        return 20;
    fsa_process_exit_now(7);
}

static void test_process_exit_now__skips_atexit(void **state)
{
    (void)state;
    assert_int_equal(in_child(exit_now_child), 7);
}

static char lock_path[64];
static char lock_dir[32];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(lock_dir, sizeof lock_dir, "/tmp/fsa-daemon-XXXXXX");
    if (mkdtemp(lock_dir) == NULL)
        return -1;
    snprintf(lock_path, sizeof lock_path, "%s/j.daemon", lock_dir);
    return 0;
}

static int teardown_dir(void **state)
{
    (void)state;
    unlink(lock_path);
    rmdir(lock_dir);
    return 0;
}

static int pidlock_child(void)
{
    char holder[32], err[256];
    fsa_pidlock_t *l = NULL;
    fsa_status_t st = fsa_pidlock_take(lock_path, 5, &l, holder, sizeof holder, err, sizeof err);
    if (st != FSA_EBUSY || l != NULL)
        return 30;
    return strcmp(holder, "4242") == 0 ? 0 : 31;
}

static void test_pidlock__one_holder_named_by_pid(void **state)
{
    (void)state;
    char holder[32], err[256];
    fsa_pidlock_t *l = NULL, *again = NULL;
    mode_t old = umask(0);
    assert_int_equal(fsa_pidlock_take(lock_path, 4242, &l, holder, sizeof holder, err, sizeof err),
                     FSA_OK);
    umask(old);
    assert_non_null(l);
    struct stat sb;
    assert_int_equal(stat(lock_path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    /* Another process, and another open of the same file in this one, find it held. */
    assert_int_equal(in_child(pidlock_child), 0);
    assert_int_equal(fsa_pidlock_take(lock_path, 1, &again, holder, sizeof holder, err, sizeof err),
                     FSA_EBUSY);
    assert_string_equal(holder, "4242");
    fsa_pidlock_release(l);
    /* Released: the next one takes it and writes its own pid. */
    assert_int_equal(
        fsa_pidlock_take(lock_path, 77, &again, holder, sizeof holder, err, sizeof err), FSA_OK);
    fsa_pidlock_release(again);
    fsa_pidlock_release(NULL);
    char text[16] = "";
    int fd = open(lock_path, O_RDONLY);
    assert_true(fd >= 0);
    assert_true(read(fd, text, sizeof text - 1) > 0);
    close(fd);
    assert_string_equal(text, "77\n");
    /* A place that cannot hold it: EIO naming it. */
    char bad[96];
    snprintf(bad, sizeof bad, "%s/no-such-dir/j.daemon", lock_dir);
    assert_int_equal(fsa_pidlock_take(bad, 1, &again, holder, sizeof holder, err, sizeof err),
                     FSA_EIO);
    assert_non_null(strstr(err, bad));
}

static int syslog_child(void)
{
    fsa_syslog_t *s = NULL;
    if (fsa_syslog_open("", false, &s) != FSA_EINVAL ||
        fsa_syslog_open(NULL, false, &s) != FSA_EINVAL)
        return 40;
    if (fsa_syslog_open("fsa-test-ident", true, &s) != FSA_OK)
        return 41;
    fsa_syslog_write(s, FSA_LOG_WARN, "a line for the system log");
    fsa_syslog_write(s, FSA_LOG_OFF, "never shown");
    fsa_syslog_close(s);
    fsa_syslog_close(NULL);
    return 0;
}

/* The sink writes through syslog(3); its stderr copy (LOG_PERROR) shows what it sent. */
static void test_syslog__lines_reach_syslog(void **state)
{
    (void)state;
    char path[] = "/tmp/fsa-syslog-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(2);
    assert_true(saved >= 0);
    fflush(stderr);
    assert_true(dup2(fd, 2) >= 0);
    int rc = in_child(syslog_child);
    assert_true(dup2(saved, 2) >= 0);
    close(saved);
    assert_int_equal(rc, 0);
    char text[512] = "";
    assert_true(pread(fd, text, sizeof text - 1, 0) > 0);
    close(fd);
    unlink(path);
    assert_non_null(strstr(text, "fsa-test-ident"));
    assert_non_null(strstr(text, "a line for the system log"));
    assert_null(strstr(text, "never shown"));
}

typedef struct client {
    int port;
    const char *send;
    bool half_close; /* shut the write side after sending */
    char got[256];
} client_t;

/* A TCP connection to 127.0.0.1:port: its descriptor, or -1. */
static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void *client_run(void *arg)
{
    client_t *c = arg;
    int fd = connect_to(c->port);
    if (fd < 0)
        return NULL;
    ssize_t n = write(fd, c->send, strlen(c->send));
    (void)n;
    if (c->half_close)
        shutdown(fd, SHUT_WR);
    size_t got = 0;
    while (got < sizeof c->got - 1 && (n = read(fd, c->got + got, sizeof c->got - 1 - got)) > 0)
        got += (size_t)n;
    c->got[got] = '\0';
    close(fd);
    return NULL;
}

/* Accepts one connection, reads its head into buf (cap bytes), answers "pong" and closes. */
static size_t serve_one(fsa_listener_t *l, char *buf, size_t cap)
{
    fsa_conn_t *c = NULL;
    assert_int_equal(fsa_listener_accept(l, 10000, &c), FSA_OK);
    size_t n = fsa_conn_read_head(c, buf, cap, 10000);
    assert_int_equal(fsa_conn_write(c, "pong", 4), FSA_OK);
    fsa_conn_close(c);
    return n;
}

static void test_listener__serves_loopback(void **state)
{
    (void)state;
    fsa_port_t *p = fsa_port_posix();
    char err[256];
    fsa_listener_t *l = NULL;
    int port = 0;
    assert_int_equal(fsa_listener_open("127.0.0.1:0", &l, &port, err, sizeof err), FSA_OK);
    assert_true(port > 0);
    /* Nobody connects: the wait ends at its timeout. */
    fsa_conn_t *none = NULL;
    assert_int_equal(fsa_listener_accept(l, 10, &none), FSA_ETIMEOUT);
    assert_null(none);
    /* A request head up to its blank line. */
    client_t c = {.port = port, .send = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n"};
    fsa_thread_t *t = NULL;
    assert_fsa_ok(p->thread_create(p->ctx, &t, client_run, &c));
    char buf[256];
    assert_int_equal(serve_one(l, buf, sizeof buf), strlen(c.send));
    assert_string_equal(buf, c.send);
    assert_fsa_ok(p->thread_join(p->ctx, t, NULL));
    assert_string_equal(c.got, "pong");
    /* Bounded by the buffer: no blank line, more than fits. */
    client_t big = {.port = port, .send = "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    assert_fsa_ok(p->thread_create(p->ctx, &t, client_run, &big));
    assert_int_equal(serve_one(l, buf, 16), 15);
    assert_string_equal(buf, "GET /aaaaaaaaaa");
    assert_fsa_ok(p->thread_join(p->ctx, t, NULL));
    /* Ended by the peer before a blank line. */
    client_t half = {.port = port, .send = "GET /x", .half_close = true};
    assert_fsa_ok(p->thread_create(p->ctx, &t, client_run, &half));
    assert_int_equal(serve_one(l, buf, sizeof buf), 6);
    assert_fsa_ok(p->thread_join(p->ctx, t, NULL));
    assert_string_equal(half.got, "pong");
    /* The port is taken: a second listener on it fails with the reason. */
    char spec[32];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", port);
    fsa_listener_t *l2 = NULL;
    assert_int_equal(fsa_listener_open(spec, &l2, NULL, err, sizeof err), FSA_EIO);
    assert_non_null(strstr(err, spec));
    fsa_listener_close(l);
    fsa_listener_close(NULL);
    fsa_conn_close(NULL);
    /* localhost means 127.0.0.1. */
    assert_int_equal(fsa_listener_open("localhost:0", &l, &port, err, sizeof err), FSA_OK);
    fsa_listener_close(l);
}

/* A client that sends its head one byte every 20 ms (never a blank line), up to 200 bytes, until
 * the server closes. */
static void *trickle_run(void *arg)
{
    client_t *c = arg;
    int fd = connect_to(c->port);
    if (fd < 0)
        return NULL;
    for (int i = 0; i < 200 && send(fd, "x", 1, MSG_NOSIGNAL) == 1; i++) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    close(fd);
    return NULL;
}

/* The head's timeout is for the whole head: a client whose bytes trickle in (each well within
 * the timeout) is cut off at it, instead of holding the one-at-a-time server for as long as it
 * keeps sending (the daemon's stop waited for such a client). */
static void test_listener__a_trickling_head_ends_at_its_timeout(void **state)
{
    (void)state;
    fsa_port_t *p = fsa_port_posix();
    char err[256];
    fsa_listener_t *l = NULL;
    int port = 0;
    assert_int_equal(fsa_listener_open("127.0.0.1:0", &l, &port, err, sizeof err), FSA_OK);
    client_t c = {.port = port};
    fsa_thread_t *t = NULL;
    assert_fsa_ok(p->thread_create(p->ctx, &t, trickle_run, &c));
    fsa_conn_t *conn = NULL;
    assert_int_equal(fsa_listener_accept(l, 10000, &conn), FSA_OK);
    char buf[512];
    size_t n = fsa_conn_read_head(conn, buf, sizeof buf, 300);
    fsa_conn_close(conn); /* the client's next send fails: it stops */
    assert_fsa_ok(p->thread_join(p->ctx, t, NULL));
    fsa_listener_close(l);
    /* at 20 ms a byte, 300 ms hold ~15; all 200 only if the timeout restarted with each byte */
    if (n == 0 || n >= 200)
        fail_msg("the head read %zu bytes of a client trickling 200", n);
}

static void test_listener__only_loopback_and_well_formed(void **state)
{
    (void)state;
    /* Each refusal says what is wrong: the form, the port, spaces, or a host not loopback. */
    static const struct {
        const char *spec, *says;
    } bad[] = {
        {"0.0.0.0:0", "loopback"},
        {"10.1.2.3:80", "loopback"},
        {"[::]:0", "loopback"},
        {"example.org:80", "loopback"},
        {"nocolon", "expected HOST:PORT"},
        {":80", "expected HOST:PORT"},
        {"127.0.0.1:", "expected HOST:PORT"},
        {"127.0.0.1:x", "from 0 to 65535"},
        {"127.0.0.1:70000", "from 0 to 65535"},
        {"127.0.0.1:99999", "from 0 to 65535"},
        {"127.0.0.1:99999999999999999999", "from 0 to 65535"},
        {"127.0.0.1:-1", "from 0 to 65535"},
        {"127.0.0.1:+80", "from 0 to 65535"},
        {"127.0.0.1: 0", "without spaces"},
        {"127.0.0.1:0 ", "without spaces"},
        {" 127.0.0.1:0", "without spaces"},
        {"127.0.0.1:\t0", "without spaces"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "", checked[256] = "";
        fsa_listener_t *l = NULL;
        if (fsa_listener_open(bad[i].spec, &l, NULL, err, sizeof err) != FSA_EINVAL)
            fail_msg("'%s' was accepted", bad[i].spec);
        assert_null(l);
        if (strstr(err, bad[i].spec) == NULL || strstr(err, bad[i].says) == NULL)
            fail_msg("'%s': expected '%s' in: %s", bad[i].spec, bad[i].says, err);
        /* a port out of range is not blamed on the host */
        if (strcmp(bad[i].says, "loopback") != 0 && strstr(err, "loopback") != NULL)
            fail_msg("'%s': blamed on the host: %s", bad[i].spec, err);
        /* the check without listening says the same */
        assert_int_equal(fsa_listener_check(bad[i].spec, checked, sizeof checked), FSA_EINVAL);
        assert_string_equal(checked, err);
    }
    static const char *const good[] = {"127.0.0.1:0",    "127.1.2.3:9100", "localhost:65535",
                                       "[::1]:0",        "::1:0",          "127.0.0.1:00080",
                                       "localhost:00000"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char err[256] = "";
        if (fsa_listener_check(good[i], err, sizeof err) != FSA_OK)
            fail_msg("'%s' was refused: %s", good[i], err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signals__blocked_then_waited_for),
        cmocka_unit_test(test_signals__block_stop_leaves_sighup_alone),
        cmocka_unit_test(test_process_exit_now__skips_atexit),
        cmocka_unit_test_setup_teardown(test_pidlock__one_holder_named_by_pid, setup_dir,
                                        teardown_dir),
        cmocka_unit_test(test_syslog__lines_reach_syslog),
        cmocka_unit_test(test_listener__serves_loopback),
        cmocka_unit_test(test_listener__a_trickling_head_ends_at_its_timeout),
        cmocka_unit_test(test_listener__only_loopback_and_well_formed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
