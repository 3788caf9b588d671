/* fieldsync: reading small private files (secrets, configuration), permissions checked. */
#ifndef FSA_PORT_FILES_H
#define FSA_PORT_FILES_H

#include <stdbool.h>
#include <stddef.h>

#include "port/status.h"

/*
 * Reads the whole file at path (at most max_bytes) into *out (malloc'ed, NUL terminated, length
 * in *len; wipe it with fsa_file_wipe_free when it held a secret).
 * When private_only, a file that its group or others may read or write is refused: a secret must
 * be mode 0600 (or 0400) and owned by the user reading it, and path must not be a symlink (it
 * is not followed); otherwise a symlink is followed.
 * Returns FSA_OK; FSA_ENOTFOUND; FSA_EPERM (permissions too open, or not owned by us: err says
 * which and how to fix it); FSA_ETOOLARGE; FSA_EIO; FSA_EINVAL; FSA_ENOMEM. err (errlen bytes)
 * names the file and the problem, never its content.
 */
fsa_status_t fsa_file_read(const char *path, size_t max_bytes, int private_only, char **out,
                           size_t *len, char *err, size_t errlen) FSA_MUST_CHECK;

/*
 * Files the project creates itself (the journal, the metrics file). Each err (errlen bytes)
 * starts with the path and ends with the OS's reason, so a caller may prefix it ("journal file").
 *
 * fsa_file_exists: FSA_OK when path exists (any type), FSA_ENOTFOUND when it does not, FSA_EIO
 * when it cannot be told (a directory on the way not searchable, ...).
 *
 * fsa_file_make_private: takes group and other permissions away from path when it has them (a
 * copy made with a wide umask, a chmod by hand). FSA_OK also when path does not exist; FSA_EIO
 * when it cannot be examined; FSA_EPERM when it is open to others and cannot be narrowed (not
 * ours): err then names its mode.
 *
 * fsa_file_create_private: creates path empty with mode 0600 (whatever the umask widens; a umask
 * can only narrow it) unless it exists already, which is no error. FSA_OK or FSA_EIO (also a
 * symlink to nothing, which O_EXCL takes for a file that exists).
 *
 * fsa_file_write_atomic: replaces path with len bytes of data through a temporary file of its own
 * beside it ("<path>.tmp.<pid>.<n>", made with O_EXCL: nothing that is there is written through
 * or removed) and a rename, so a reader sees the old file or the new one, never half of one, also
 * with several writers of one path (threads, processes: each renames its own whole file). The new
 * bytes are synced before the rename, so after a power cut path holds the old bytes or the new
 * ones, never an empty file. The directory is not synced: the replacement itself is not durable
 * (a power cut may bring the previous file back), which suits its callers (the metrics file, the
 * simulator's reports). On any failure the temporary file is removed and path is as it was; a
 * crash between its creation and the rename leaves it behind. The new file has mode
 * 0666 & ~umask, as fopen gives. FSA_OK, FSA_EINVAL (a path too long), FSA_EIO.
 */
fsa_status_t fsa_file_exists(const char *path, char *err, size_t errlen) FSA_MUST_CHECK;

/*
 * An absolute name for the existing file path, in *out (freed with fsa_free), for a file named
 * once and opened later, maybe from another directory: its directory resolved, its own name kept.
 * A public file may be a link, and stays one: a certificate renewed by moving the link (certbot's
 * layout, /etc/ssl/certs) is read at its new target. no_link (a private file: a secret, a key):
 * path must not be a symlink (realpath would give its target, which then passes an O_NOFOLLOW
 * read). FSA_OK; FSA_ENOTFOUND (also a link to nothing, without no_link); FSA_EPERM (a symlink,
 * with no_link, or a directory on the way that may not be searched); FSA_EINVAL (too long);
 * FSA_EIO (any other failure to look, a loop of links: its reason); FSA_ENOMEM. err names the
 * problem after the path, for the caller to prefix with what it is.
 */
fsa_status_t fsa_file_absolute(const char *path, bool no_link, char **out, char *err,
                               size_t errlen) FSA_MUST_CHECK;
/* The same name for path whether or not the file exists (its directory must): what
 * fsa_file_absolute gives once it has checked the file. */
fsa_status_t fsa_file_absolute_name(const char *path, char **out, char *err,
                                    size_t errlen) FSA_MUST_CHECK;
fsa_status_t fsa_file_make_private(const char *path, char *err, size_t errlen) FSA_MUST_CHECK;
fsa_status_t fsa_file_create_private(const char *path, char *err, size_t errlen) FSA_MUST_CHECK;
fsa_status_t fsa_file_write_atomic(const char *path, const void *data, size_t len, char *err,
                                   size_t errlen) FSA_MUST_CHECK;

/*
 * Starts writing the file's dirty pages to the disk and returns without waiting for them (Linux:
 * sync_file_range with SYNC_FILE_RANGE_WRITE), so that a later fsync of it has less to write. Not
 * a sync: neither the device's cache nor the file's metadata is flushed. It opens and closes a
 * descriptor of its own, so it is not for a file on which the process holds fcntl locks (closing
 * any descriptor of a file lets them go; SQLite locks a database and its -shm file, never its
 * -wal file). FSA_OK when started; FSA_EIO when the file cannot be opened or the system has no
 * such call (the caller may sync instead).
 */
fsa_status_t fsa_file_start_writeback(const char *path) FSA_MUST_CHECK;

/* Overwrites n bytes of p with zeros (not optimised away) and frees p. NULL is accepted. */
void fsa_file_wipe_free(char *p, size_t n);

/*
 * Keeps the secrets a process holds in memory out of core dumps: no core file (RLIMIT_CORE 0)
 * and, on Linux, not dumpable (PR_SET_DUMPABLE 0, which also covers a core_pattern pipe such as
 * systemd-coredump, and keeps other processes of the same user from reading its memory). A
 * debugger that starts the program still works. Programs that read a secret call it first thing.
 * FSA_OK, or FSA_EIO with err naming the call that failed.
 */
fsa_status_t fsa_process_protect_secrets(char *err, size_t errlen) FSA_MUST_CHECK;

#endif
