/* fieldsync: reading small private files, refusing secrets that others could read. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "port/alloc.h"
#include "port/files.h"

/* The checks on the open file (fstat: the permissions checked are those of the bytes read). */
static fsa_status_t check_open_file(int fd, const char *path, size_t max_bytes, int private_only,
                                    char *err, size_t errlen)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
        return FSA_EINVAL;
    }
    if (private_only && (sb.st_mode & 077) != 0) {
        snprintf(err, errlen, "%s is accessible by others (mode %04o): run 'chmod 600 %s'", path,
                 (unsigned)(sb.st_mode & 07777), path);
        return FSA_EPERM;
    }
    if (private_only && sb.st_uid != geteuid()) {
        snprintf(err, errlen, "%s is owned by uid %u, not by this user", path, (unsigned)sb.st_uid);
        return FSA_EPERM;
    }
    if ((size_t)sb.st_size > max_bytes) {
        snprintf(err, errlen, "%s is too large (%lld bytes, at most %zu)", path,
                 (long long)sb.st_size, max_bytes);
        return FSA_ETOOLARGE;
    }
    return FSA_OK;
}

/* Reads fd to its end into buf (max_bytes + 1 of room), NUL-terminated; *got its length. */
static fsa_status_t read_bounded(int fd, const char *path, char *buf, size_t max_bytes, size_t *got,
                                 char *err, size_t errlen)
{
    size_t n = 0;
    while (n <= max_bytes) {
        ssize_t r = read(fd, buf + n, max_bytes + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            return FSA_EIO;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > max_bytes) { /* it grew after the fstat */
        snprintf(err, errlen, "%s is too large (at most %zu bytes)", path, max_bytes);
        return FSA_ETOOLARGE;
    }
    buf[n] = '\0';
    *got = n;
    return FSA_OK;
}

fsa_status_t fsa_file_read(const char *path, size_t max_bytes, int private_only, char **out,
                           size_t *len, char *err, size_t errlen)
{
    char scratch[8];
    if (err == NULL || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    if (out != NULL)
        *out = NULL;
    if (len != NULL)
        *len = 0;
    if (path == NULL || out == NULL || len == NULL) {
        snprintf(err, errlen, "no file given");
        return FSA_EINVAL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
        return e == ENOENT ? FSA_ENOTFOUND : e == EACCES ? FSA_EPERM : FSA_EIO;
    }
    char *buf = NULL;
    fsa_status_t st = check_open_file(fd, path, max_bytes, private_only, err, errlen);
    if (st == FSA_OK) {
        buf = fsa_malloc(max_bytes + 1);
        st = buf == NULL ? FSA_ENOMEM : read_bounded(fd, path, buf, max_bytes, len, err, errlen);
    }
    if (st == FSA_OK) {
        *out = buf;
    } else {
        fsa_file_wipe_free(buf, max_bytes + 1);
        *len = 0;
    }
    close(fd);
    return st;
}

void fsa_file_wipe_free(char *p, size_t n)
{
    if (p == NULL)
        return;
    /* A volatile pointer keeps the compiler from dropping the stores before fsa_free(). */
    volatile char *v = p;
    for (size_t i = 0; i < n; i++)
        v[i] = 0;
    fsa_free(p);
}

fsa_status_t fsa_process_protect_secrets(char *err, size_t errlen)
{
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0) {
        snprintf(err, errlen, "cannot turn core dumps off (setrlimit): %s", strerror(errno));
        return FSA_EIO;
    }
#ifdef __linux__
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        snprintf(err, errlen, "cannot make the process undumpable (prctl): %s", strerror(errno));
        return FSA_EIO;
    }
#endif
    return FSA_OK;
}
