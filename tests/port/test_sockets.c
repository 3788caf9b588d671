/* fieldsync tests: a server's listening sockets (port/daemon.h fsa_socket_*), on loopback and
 * in a temp dir: the port they get, the loopback rule, a busy address, and the unix socket's
 * mode and the files it replaces or refuses. */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "port/daemon.h"
#include "tests/test_util.h"

/* Connects to 127.0.0.1:port; true when a listener accepted (the kernel's queue does). */
static bool can_connect_tcp(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static bool can_connect_unix(const char *path)
{
    struct sockaddr_un a;
    if (strlen(path) >= sizeof a.sun_path)
        return false;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, path, strlen(path) + 1);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static void test_socket_tcp__port_zero_gets_a_port_and_listens(void **state)
{
    (void)state;
    int fd = -1, port = 0;
    bool v6 = true;
    char err[256] = "";
    assert_fsa_ok(
        fsa_socket_listen_tcp("127.0.0.1", "0", 16, true, &fd, &port, &v6, err, sizeof err));
    assert_true(fd >= 0);
    assert_true(port > 0 && port < 65536);
    assert_false(v6);
    assert_true(can_connect_tcp(port));

    /* The same address again: busy, and the OS says so. */
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int fd2 = -1, port2 = 0;
    assert_int_equal(
        fsa_socket_listen_tcp("127.0.0.1", portstr, 16, false, &fd2, &port2, &v6, err, sizeof err),
        FSA_EBUSY);
    assert_int_equal(fd2, -1);
    assert_non_null(strstr(err, "in use"));
    fsa_socket_shutdown(fd); /* a listening socket: nothing to shut down, and no harm */
    fsa_socket_close(fd);
    fsa_socket_close(-1);
    assert_false(can_connect_tcp(port));
}

static void test_socket_tcp__loopback_only_and_bad_addresses(void **state)
{
    (void)state;
    int fd = -1, port = 0;
    bool v6 = false;
    char err[256] = "";
    /* Refused before anything is bound: no socket on a non-loopback address. */
    assert_int_equal(
        fsa_socket_listen_tcp("0.0.0.0", "0", 16, true, &fd, &port, &v6, err, sizeof err),
        FSA_EPERM);
    assert_int_equal(fd, -1);
    assert_non_null(strstr(err, "loopback"));
    assert_int_equal(
        fsa_socket_listen_tcp("10.1.2.3", "0", 16, true, &fd, &port, &v6, err, sizeof err),
        FSA_EPERM);
    /* A port that is not a number does not resolve (no lookup over the network). */
    err[0] = '\0';
    assert_int_equal(
        fsa_socket_listen_tcp("127.0.0.1", "http", 16, false, &fd, &port, &v6, err, sizeof err),
        FSA_EINVAL);
    assert_true(err[0] != '\0');
    assert_int_equal(fd, -1);
    /* The v4-mapped loopback and ::1 are loopback. */
    if (fsa_socket_listen_tcp("::1", "0", 16, true, &fd, &port, &v6, err, sizeof err) == FSA_OK) {
        assert_true(v6);
        fsa_socket_close(fd);
    } /* else: no IPv6 on this machine */
}

static void test_socket_unix__private_replaces_stale_refuses_others(void **state)
{
    (void)state;
    char dir[] = "/tmp/fsa-sock-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/a.sock", dir);
    char err[256] = "";
    mode_t old = umask(0); /* the widest umask: the socket must still be 0600 */
    int fd = -1;
    assert_fsa_ok(fsa_socket_listen_unix(path, 8, &fd, err, sizeof err));
    umask(old);
    struct stat sb;
    assert_int_equal(lstat(path, &sb), 0);
    assert_true(S_ISSOCK(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_true(can_connect_unix(path));

    /* Another process's (here: our own) live socket is not taken over. */
    int fd2 = -1;
    assert_int_equal(fsa_socket_listen_unix(path, 8, &fd2, err, sizeof err), FSA_EBUSY);
    assert_int_equal(fd2, -1);
    /* A socket file left behind (no listener) is replaced. */
    fsa_socket_close(fd);
    assert_false(can_connect_unix(path));
    assert_fsa_ok(fsa_socket_listen_unix(path, 8, &fd2, err, sizeof err));
    assert_true(can_connect_unix(path));
    fsa_socket_close(fd2);
    fsa_socket_unlink(path);
    assert_int_not_equal(lstat(path, &sb), 0);

    /* Any other file there is refused and left alone. */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(fsa_socket_listen_unix(path, 8, &fd, err, sizeof err), FSA_EPERM);
    assert_non_null(strstr(err, "not a socket"));
    assert_int_equal(lstat(path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_int_equal(unlink(path), 0);

    /* Empty, or too long for a socket address. */
    assert_int_equal(fsa_socket_listen_unix("", 8, &fd, err, sizeof err), FSA_EINVAL);
    char longp[200];
    memset(longp, 'x', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    assert_int_equal(fsa_socket_listen_unix(longp, 8, &fd, err, sizeof err), FSA_EINVAL);
    assert_int_equal(rmdir(dir), 0);
}

/* A live listener whose queue is full (a server busy or hung) is in use: the probe that tells a
 * live socket from one left behind was a blocking connect, which never returned there, so a
 * second server hung at its start. Run in a child, given 3 s. */
static void test_socket_unix__full_queue_is_busy_not_a_hang(void **state)
{
    (void)state;
    char dir[] = "/tmp/fsa-sock-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], err[256] = "";
    snprintf(path, sizeof path, "%s/b.sock", dir);
    int fd = -1;
    assert_fsa_ok(fsa_socket_listen_unix(path, 1, &fd, err, sizeof err));
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, path, strlen(path) + 1);
    int held[16], nheld = 0;
    for (int i = 0; i < 16; i++) { /* fill the queue: nobody accepts */
        int c = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) != 0) {
            if (c >= 0)
                close(c);
            break;
        }
        held[nheld++] = c;
    }
    assert_true(nheld >= 1);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd2 = -1;
        fsa_status_t st = fsa_socket_listen_unix(path, 1, &fd2, err, sizeof err);
        _exit(st == FSA_EBUSY ? 0 : 1);
    }
    int status = 0;
    bool done = false;
    for (int i = 0; i < 300 && !done; i++) {
        done = waitpid(pid, &status, WNOHANG) == pid;
        if (!done) {
            struct pollfd none;
            (void)poll(&none, 0, 10); /* paces the bounded wait for the child's exit */
        }
    }
    if (!done) {
        kill(pid, SIGKILL);
        (void)waitpid(pid, &status, 0);
    }
    for (int i = 0; i < nheld; i++)
        close(held[i]);
    fsa_socket_close(fd);
    fsa_socket_unlink(path);
    assert_int_equal(rmdir(dir), 0);
    if (!done)
        fail_msg("a second listen on a socket with a full queue hung");
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_socket_tcp__port_zero_gets_a_port_and_listens),
        cmocka_unit_test(test_socket_tcp__loopback_only_and_bad_addresses),
        cmocka_unit_test(test_socket_unix__private_replaces_stale_refuses_others),
        cmocka_unit_test(test_socket_unix__full_queue_is_busy_not_a_hang),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
