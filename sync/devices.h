/* fieldsync: the server's devices file, {"devices": [{"id": "dev001", "secret": "<64 hex>",
 * "scope": {"sites": [...], "people": [...]}}]} (scope optional), read and decoded. */
#ifndef FSA_SYNC_DEVICES_H
#define FSA_SYNC_DEVICES_H

#include <stddef.h>

#include "port/limits.h"
#include "port/status.h"
#include "storage/model.h"

/*
 * Read by fieldsync-server (the devices it knows) and by fieldsync-sim pointed at another server
 * (the devices it may be). Decoding is pure (no I/O); fsa_devices_load reads the file through the
 * port first. Every err (errlen bytes) is one line naming the file or the device and the problem,
 * never a secret.
 */

/* A device's scope (PROTOCOL.md section 4): the sites and people whose entities it sees. Each
 * list is a malloc'ed array of n strings of 1..128 bytes. */
typedef struct fsa_device_scope {
    char (*sites)[FSA_ID_BYTES];
    size_t nsites;
    char (*people)[FSA_ID_BYTES];
    size_t npeople;
} fsa_device_scope_t;

typedef struct fsa_device_entry {
    char id[FSA_ID_BYTES];
    char secret_hex[2 * FSA_LIMIT_SECRET_BYTES + 1];
    fsa_device_scope_t *scope; /* NULL: no scope (sees everything); freed with the array */
} fsa_device_entry_t;

#define FSA_DEVICES_SCOPE_MAX 1000 /* entries in each list of one scope */
#define FSA_DEVICES_MAX 100000
/* A devices file's bounds: room for FSA_DEVICES_MAX devices of about 300 bytes (id, secret, a
 * small scope) and 16 JSON values each (a request body's 1 MiB holds fewer than 10,000). */
#define FSA_DEVICES_FILE_BYTES (32 * 1024 * 1024)
#define FSA_DEVICES_FILE_VALUES (16 * FSA_DEVICES_MAX)

/*
 * Decodes a devices file's text: every id valid (1..128 bytes of [A-Za-z0-9._:-]) and unique,
 * every secret exactly 64 hex chars, an optional scope {"sites": [str...], "people": [str...]}
 * (each list optional, at most FSA_DEVICES_SCOPE_MAX strings of 1..128 bytes; null or absent
 * scope: none), 1..FSA_DEVICES_MAX devices, the text within FSA_DEVICES_FILE_BYTES and
 * FSA_DEVICES_FILE_VALUES JSON values. *out receives a malloc'ed array of *count devices sorted by
 * id (free with fsa_devices_free, which wipes the secrets); the secret strings inside the parsed
 * JSON are wiped before it is freed.
 * FSA_OK; FSA_EINVAL (malformed; also NULL arguments); FSA_ETOOLARGE (over a bound); FSA_ENOMEM.
 */
fsa_status_t fsa_devices_decode(const char *text, size_t len, fsa_device_entry_t **out,
                                size_t *count, char *err, size_t errlen) FSA_MUST_CHECK;

/*
 * Reads the devices file at path (private: mode 0600 or stricter, owned by this user, no symlink;
 * port/files.h) and decodes it; the text is wiped. err: "cannot read the devices file: ..." (it is
 * missing or unreadable), "refusing the devices file: ..." (permissions, not a regular file, over
 * FSA_DEVICES_FILE_BYTES), "the devices file PATH is malformed: ..." (fsa_devices_decode's
 * problem). The statuses of fsa_file_read and fsa_devices_decode.
 */
fsa_status_t fsa_devices_load(const char *path, fsa_device_entry_t **out, size_t *count, char *err,
                              size_t errlen) FSA_MUST_CHECK;

/* Wipes and frees a devices array. NULL is accepted. */
void fsa_devices_free(fsa_device_entry_t *devices, size_t count);

#endif
