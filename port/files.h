/* fieldsync: reading small private files (secrets, configuration), permissions checked. */
#ifndef FSA_PORT_FILES_H
#define FSA_PORT_FILES_H

#include <stddef.h>

#include "port/status.h"

/*
 * Reads the whole file at path (at most max_bytes) into *out (malloc'ed, NUL terminated, length
 * in *len; wipe it with fsa_file_wipe_free when it held a secret).
 * When private_only, a file that its group or others may read or write is refused: a secret must
 * be mode 0600 (or 0400) and owned by the user reading it.
 * Returns FSA_OK; FSA_ENOTFOUND; FSA_EPERM (permissions too open, or not owned by us: err says
 * which and how to fix it); FSA_ETOOLARGE; FSA_EIO; FSA_EINVAL; FSA_ENOMEM. err (errlen bytes)
 * names the file and the problem, never its content.
 */
fsa_status_t fsa_file_read(const char *path, size_t max_bytes, int private_only, char **out,
                           size_t *len, char *err, size_t errlen) FSA_MUST_CHECK;

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
