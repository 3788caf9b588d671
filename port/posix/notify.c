/* fieldsync: the notifier of port/notify.h with a Linux eventfd. */
#define _GNU_SOURCE /* eventfd flags */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "port/alloc.h"
#include "port/notify.h"

struct fsa_notify {
    int fd;
};

fsa_status_t fsa_notify_open(fsa_notify_t **out)
{
    if (out == NULL)
        return FSA_EINVAL;
    *out = NULL;
    fsa_notify_t *n = fsa_calloc(1, sizeof *n);
    if (n == NULL)
        return FSA_ENOMEM;
    /* Non-semaphore mode: one read takes the whole count, so one read clears the flag however
     * many times it was set. */
    n->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (n->fd < 0) {
        fsa_free(n);
        return FSA_EIO;
    }
    *out = n;
    return FSA_OK;
}

int fsa_notify_fd(const fsa_notify_t *n)
{
    return n != NULL ? n->fd : -1;
}

fsa_status_t fsa_notify_set(fsa_notify_t *n)
{
    if (n == NULL)
        return FSA_EINVAL;
    uint64_t one = 1;
    for (;;) {
        if (write(n->fd, &one, sizeof one) == (ssize_t)sizeof one)
            return FSA_OK;
        if (errno == EINTR)
            continue;
        /* EAGAIN: the counter is at its maximum, so the fd is readable already. */
        return errno == EAGAIN ? FSA_OK : FSA_EIO;
    }
}

fsa_status_t fsa_notify_clear(fsa_notify_t *n)
{
    if (n == NULL)
        return FSA_EINVAL;
    uint64_t v;
    for (;;) {
        if (read(n->fd, &v, sizeof v) == (ssize_t)sizeof v)
            return FSA_OK;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN ? FSA_OK : FSA_EIO; /* EAGAIN: it was clear */
    }
}

bool fsa_notify_is_set(const fsa_notify_t *n)
{
    if (n == NULL)
        return false;
    struct pollfd p = {n->fd, POLLIN, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

void fsa_notify_close(fsa_notify_t *n)
{
    if (n == NULL)
        return;
    close(n->fd);
    fsa_free(n);
}
