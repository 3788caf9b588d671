/* fieldsync: file change notification with Linux inotify, for the daemon's wake-on-record. */
#define _GNU_SOURCE /* inotify_init1 flags */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "port/alloc.h"
#include "port/port.h"
#include "port/watch.h"

struct fsa_watch {
    int fd;
    int poke[2];             /* a self-pipe: poke writes, wait returns */
    char name[NAME_MAX + 1]; /* the watched file's base name */
};

fsa_status_t fsa_watch_open(const char *path, fsa_watch_t **out)
{
    if (path == NULL || out == NULL || path[0] == '\0')
        return FSA_EINVAL;
    *out = NULL;
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;
    if (strlen(base) == 0 || strlen(base) > NAME_MAX)
        return FSA_EINVAL;
    char dir[PATH_MAX];
    if (slash == NULL) {
        dir[0] = '.';
        dir[1] = '\0';
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir)
            return FSA_EINVAL;
        memcpy(dir, path, n);
        dir[n] = '\0';
        if (n == 0) {
            dir[0] = '/';
            dir[1] = '\0';
        }
    }
    fsa_watch_t *w = fsa_calloc(1, sizeof *w);
    if (w == NULL)
        return FSA_ENOMEM;
    memcpy(w->name, base, strlen(base) + 1);
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0) {
        fsa_free(w);
        return FSA_EIO;
    }
    if (pipe2(w->poke, O_NONBLOCK | O_CLOEXEC) != 0) {
        close(w->fd);
        fsa_free(w);
        return FSA_EIO;
    }
    if (inotify_add_watch(w->fd, dir, IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO) < 0) {
        int e = errno;
        close(w->fd);
        close(w->poke[0]);
        close(w->poke[1]);
        fsa_free(w);
        return e == ENOENT ? FSA_ENOTFOUND : FSA_EIO;
    }
    *out = w;
    return FSA_OK;
}

/* Reads every queued event; true when one concerns the watched file or its -wal/-shm. */
static int drain(fsa_watch_t *w)
{
    int hit = 0;
    size_t nlen = strlen(w->name);
    for (;;) {
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        ssize_t n = read(w->fd, buf, sizeof buf);
        if (n <= 0)
            return hit;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
            if (ev->len > 0 && strncmp(ev->name, w->name, nlen) == 0)
                hit = 1;
            p += sizeof *ev + ev->len;
        }
    }
}

fsa_status_t fsa_watch_wait(fsa_watch_t *w, int64_t timeout_ms)
{
    if (w == NULL)
        return FSA_EINVAL;
    if (drain(w))
        return FSA_OK;
    fsa_port_t *clock = fsa_port_posix();
    /* A timeout past what nanoseconds can count is as good as none (timeout_ms * FSA_NS_PER_MS
     * would overflow, and the deadline land in the past). */
    if (timeout_ms < 0 || timeout_ms > INT64_MAX / FSA_NS_PER_MS)
        timeout_ms = -1;
    fsa_mono_t deadline = fsa_mono_add_ns(clock->mono_now(NULL), timeout_ms * FSA_NS_PER_MS);
    for (;;) {
        int t = -1;
        if (timeout_ms >= 0) {
            int64_t left = fsa_mono_diff_ns(deadline, clock->mono_now(NULL)) / FSA_NS_PER_MS;
            if (left <= 0)
                return FSA_ETIMEOUT;
            t = left > INT_MAX ? INT_MAX : (int)left;
        }
        struct pollfd p[2] = {{w->fd, POLLIN, 0}, {w->poke[0], POLLIN, 0}};
        int rc = poll(p, 2, t);
        if (rc < 0)
            return errno == EINTR ? FSA_EBUSY : FSA_EIO;
        if (rc == 0)
            return FSA_ETIMEOUT;
        if (p[1].revents != 0) {
            char b[64];
            while (read(w->poke[0], b, sizeof b) > 0) {
            }
            return FSA_EBUSY;
        }
        if (drain(w))
            return FSA_OK;
        /* Events about other files in the directory: keep waiting for ours. */
    }
}

void fsa_watch_poke(fsa_watch_t *w)
{
    if (w == NULL)
        return;
    char b = 1;
    /* A full pipe already holds a wake-up; nothing is lost by a failed write. */
    ssize_t n = write(w->poke[1], &b, 1);
    (void)n;
}

void fsa_watch_close(fsa_watch_t *w)
{
    if (w == NULL)
        return;
    close(w->poke[0]);
    close(w->poke[1]);
    close(w->fd);
    fsa_free(w);
}
