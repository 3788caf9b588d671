/* fieldsync: reading small private files, refusing secrets that others could read. */
#define _GNU_SOURCE /* sync_file_range */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
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
#include "port/limits.h"

/* The checks on the open file (fstat: the permissions checked are those of the bytes read). */
static fsa_status_t check_open_file(int fd, const char *path, size_t max_bytes, int private_only,
                                    size_t *size, char *err, size_t errlen)
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
    *size = (size_t)sb.st_size;
    return FSA_OK;
}

/* Moves *buf (*cap bytes, n used) to one twice as large, at most max_bytes + 1: a copy and a wipe,
 * not realloc, so that no copy of a secret stays behind in freed memory. */
static fsa_status_t grow(char **buf, size_t *cap, size_t n, size_t max_bytes)
{
    size_t want = *cap > (max_bytes + 1) / 2 ? max_bytes + 1 : 2 * *cap;
    char *p = fsa_malloc(want);
    if (p == NULL)
        return FSA_ENOMEM;
    memcpy(p, *buf, n);
    fsa_file_wipe_free(*buf, *cap);
    *buf = p;
    *cap = want;
    return FSA_OK;
}

/* Reads fd to its end into *buf (*cap bytes, the file's size + 1 to begin with, grown up to
 * max_bytes + 1 if the file grew since the fstat), NUL-terminated; *got its length. */
static fsa_status_t read_bounded(int fd, const char *path, char **buf, size_t *cap,
                                 size_t max_bytes, size_t *got, char *err, size_t errlen)
{
    size_t n = 0;
    while (n <= max_bytes) {
        if (n == *cap && grow(buf, cap, n, max_bytes) != FSA_OK) {
            snprintf(err, errlen, "cannot read %s: out of memory", path);
            return FSA_ENOMEM;
        }
        ssize_t r = read(fd, *buf + n, *cap - n);
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
    if (n == *cap && grow(buf, cap, n, max_bytes) != FSA_OK) {
        snprintf(err, errlen, "cannot read %s: out of memory", path);
        return FSA_ENOMEM;
    }
    (*buf)[n] = '\0';
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
    /* A secret's path cannot be redirected to another file; a public one may be a link (a CA
     * bundle in /etc/ssl/certs, a certificate renewed behind a link). O_NONBLOCK: a FIFO opens at
     * once, to be refused as not a regular file, instead of waiting for a writer that may never
     * come (a regular file's reads do not heed it). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (private_only ? O_NOFOLLOW : 0));
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
        return e == ENOENT ? FSA_ENOTFOUND : e == EACCES ? FSA_EPERM : FSA_EIO;
    }
    char *buf = NULL;
    size_t size = 0, cap = 0;
    fsa_status_t st = check_open_file(fd, path, max_bytes, private_only, &size, err, errlen);
    if (st == FSA_OK) {
        /* Room for what fstat says (plus the NUL and one byte to see the end), not the limit: a
         * 32 MiB bound must not cost 32 MiB for a file of a few KB. */
        cap = size < max_bytes ? size + 2 : max_bytes + 1;
        buf = fsa_malloc(cap);
        st = buf == NULL ? FSA_ENOMEM
                         : read_bounded(fd, path, &buf, &cap, max_bytes, len, err, errlen);
    }
    if (st == FSA_OK) {
        *out = buf;
    } else {
        fsa_file_wipe_free(buf, cap);
        *len = 0;
    }
    close(fd);
    return st;
}

fsa_status_t fsa_file_exists(const char *path, char *err, size_t errlen)
{
    struct stat sb;
    if (stat(path, &sb) == 0)
        return FSA_OK;
    if (errno == ENOENT)
        return FSA_ENOTFOUND;
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return FSA_EIO;
}

fsa_status_t fsa_file_make_private(const char *path, char *err, size_t errlen)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT)
            return FSA_OK;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return FSA_EIO;
    }
    if ((sb.st_mode & 077) == 0)
        return FSA_OK;
    if (chmod(path, sb.st_mode & 0700) != 0) {
        snprintf(err, errlen,
                 "%s is accessible by others (mode %04o) and cannot be made private: %s", path,
                 (unsigned)(sb.st_mode & 07777), strerror(errno));
        return FSA_EPERM;
    }
    return FSA_OK;
}

fsa_status_t fsa_file_create_private(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return FSA_EIO;
    }
    if (fd >= 0) {
        close(fd);
        return FSA_OK;
    }
    /* O_EXCL says "exists" for a symlink to nothing too, which then is not there at all. */
    struct stat sb;
    if (stat(path, &sb) != 0 && lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode)) {
        snprintf(err, errlen, "%s is a symlink to nothing: create its target or name another file",
                 path);
        return FSA_EIO;
    }
    return FSA_OK;
}

/* Writes all len bytes of data to fd: 0, or an errno value (EIO for a write of nothing). */
static int write_all(int fd, const char *data, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        done += (size_t)n;
    }
    return 0;
}

fsa_status_t fsa_file_absolute(const char *path, bool no_link, char **out, char *err, size_t errlen)
{
    *out = NULL;
    struct stat sb;
    if ((no_link ? lstat(path, &sb) : stat(path, &sb)) != 0) {
        /* Not found only when it is not there: a directory on the way that may not be searched,
         * a name too long or a loop of links say so. */
        int e = errno;
        if (e == ENOENT) {
            snprintf(err, errlen, "%s: not found", path);
            return FSA_ENOTFOUND;
        }
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return e == ENAMETOOLONG ? FSA_EINVAL : e == EACCES ? FSA_EPERM : FSA_EIO;
    }
    if (no_link && S_ISLNK(sb.st_mode)) {
        snprintf(err, errlen, "%s is a symlink: name the file itself (not a link to it)", path);
        return FSA_EPERM;
    }
    return fsa_file_absolute_name(path, out, err, errlen);
}

fsa_status_t fsa_file_absolute_name(const char *path, char **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *base = path;
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX];
    if (slash == NULL) {
        snprintf(dir, sizeof dir, ".");
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path); /* "/name": the root */
        if (n >= sizeof dir) {
            snprintf(err, errlen, "%.80s...: the path is too long", path);
            return FSA_EINVAL;
        }
        memcpy(dir, path, n);
        dir[n] = '\0';
        base = slash + 1;
    }
    char *abs = realpath(dir, NULL);
    if (abs == NULL) {
        snprintf(err, errlen, "%s: not found", path);
        return FSA_ENOTFOUND;
    }
    /* abs is the file's directory: its name follows ("/" alone needs no second). */
    size_t alen = strlen(abs), blen = strlen(base);
    bool sep = abs[alen - 1] != '/';
    char *copy = fsa_malloc(alen + sep + blen + 1);
    if (copy != NULL) {
        memcpy(copy, abs, alen);
        if (sep)
            copy[alen] = '/';
        memcpy(copy + alen + sep, base, blen);
        copy[alen + sep + blen] = '\0';
    }
    fsa_free(abs); /* port/alloc.h: fsa_free releases libc memory too */
    if (copy == NULL)
        return FSA_ENOMEM;
    *out = copy;
    return FSA_OK;
}

fsa_status_t fsa_file_write_atomic(const char *path, const void *data, size_t len, char *err,
                                   size_t errlen)
{
    /* A fresh file of our own, under a name no other writer uses ("<path>.tmp.<pid>.<n>"):
     * O_EXCL never follows or reuses what is there (a crash's leftover, a symlink, a file of
     * someone else's: the next name is tried), and nothing is removed but what this call made.
     * With one fixed name, a second writer of the same path removed the first's file and the first
     * renamed a half-written one into place, and a journal named "<path>.tmp" was removed. */
    static _Atomic unsigned seq;
    char tmp[FSA_LIMIT_PATH_BYTES];
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 64; tries++) {
        if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(),
                             atomic_fetch_add(&seq, 1)) >= sizeof tmp) {
            snprintf(err, errlen, "%s: the path is too long", path);
            return FSA_EINVAL;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) {
            snprintf(err, errlen, "%s: cannot create %s: %s", path, tmp, strerror(errno));
            return FSA_EIO;
        }
    }
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s: %s", path, tmp, strerror(EEXIST));
        return FSA_EIO;
    }
    const char *step = "cannot write";
    int e = write_all(fd, data, len);
    /* On the disk before the rename: after a power cut the name holds the old bytes or the new
     * ones, never an empty file. */
    if (e == 0 && fsync(fd) != 0) {
        e = errno;
        step = "cannot sync";
    }
    if (close(fd) != 0 && e == 0) {
        e = errno;
        step = "cannot write";
    }
    if (e == 0 && rename(tmp, path) != 0) {
        e = errno;
        step = "cannot rename";
    }
    if (e != 0) {
        (void)unlink(tmp);
        snprintf(err, errlen, "%s: %s %s: %s", path, step, tmp, strerror(e));
        return FSA_EIO;
    }
    return FSA_OK;
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

fsa_status_t fsa_file_start_writeback(const char *path)
{
#ifdef SYNC_FILE_RANGE_WRITE
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return FSA_EIO;
    int rc = sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    (void)close(fd);
    return rc == 0 ? FSA_OK : FSA_EIO;
#else
    (void)path;
    return FSA_EIO;
#endif
}
