/* fieldsync: the server's devices file (sync/devices.h). */
#include "sync/devices.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "port/alloc.h"
#include "port/files.h"
#include "sync/codec_json.h"
#include "sync/signer.h"

/* Depth of {"devices": [{"scope": {"sites": [...]}}]}. */
#define DEVICES_DEPTH 5

static fsa_status_t fail(fsa_status_t st, char *err, size_t errlen, const char *fmt, ...)
    FSA_PRINTF(4, 5);

/* Writes the one-line error (when there is room) and returns st. */
static fsa_status_t fail(fsa_status_t st, char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

static void scope_free(fsa_device_scope_t *sc)
{
    if (sc == NULL)
        return;
    fsa_free(sc->sites);
    fsa_free(sc->people);
    fsa_free(sc);
}

/* Reads one list of a scope (absent: empty). FSA_EINVAL when it is not an array of at most
 * FSA_DEVICES_SCOPE_MAX short strings; FSA_ENOMEM. */
static fsa_status_t scope_list(const cJSON *scope, const char *name, char (**out)[FSA_ID_BYTES],
                               size_t *n)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(scope, name);
    *out = NULL;
    *n = 0;
    if (arr == NULL)
        return FSA_OK;
    size_t total = fsa__json_count(arr);
    if (!json_array(arr) || total > FSA_DEVICES_SCOPE_MAX)
        return FSA_EINVAL;
    if (total == 0)
        return FSA_OK;
    *out = fsa_calloc((size_t)total, sizeof **out);
    if (*out == NULL)
        return FSA_ENOMEM;
    for (const cJSON *v = arr->child; v != NULL; v = v->next) {
        if (!json_string(v) || v->valuestring[0] == '\0' || strlen(v->valuestring) >= sizeof **out)
            return FSA_EINVAL;
        memcpy((*out)[*n], v->valuestring, strlen(v->valuestring) + 1);
        (*n)++;
    }
    return FSA_OK;
}

/* Reads a device's optional scope into *out (NULL when absent or null). */
static fsa_status_t decode_scope(const cJSON *d, fsa_device_scope_t **out)
{
    *out = NULL;
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(d, "scope");
    if (sc == NULL || json_null(sc))
        return FSA_OK;
    if (!json_object(sc))
        return FSA_EINVAL;
    fsa_device_scope_t *s = fsa_calloc(1, sizeof *s);
    if (s == NULL)
        return FSA_ENOMEM;
    fsa_status_t st = scope_list(sc, "sites", &s->sites, &s->nsites);
    if (st == FSA_OK)
        st = scope_list(sc, "people", &s->people, &s->npeople);
    if (st != FSA_OK) {
        scope_free(s);
        return st;
    }
    *out = s;
    return FSA_OK;
}

void fsa_devices_free(fsa_device_entry_t *devices, size_t count)
{
    if (devices == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        scope_free(devices[i].scope);
    fsa_signer_wipe(devices, count * sizeof *devices);
    fsa_free(devices);
}

/* Wipes every "secret" string of the parsed file before the tree is freed. */
static void wipe_secrets(cJSON *arr)
{
    for (cJSON *d = arr != NULL ? arr->child : NULL; d != NULL; d = d->next) {
        cJSON *sec = cJSON_GetObjectItemCaseSensitive(d, "secret");
        if (json_string(sec))
            fsa_signer_wipe(sec->valuestring, strlen(sec->valuestring));
    }
}

static int device_cmp(const void *a, const void *b)
{
    return strcmp(((const fsa_device_entry_t *)a)->id, ((const fsa_device_entry_t *)b)->id);
}

/* One device of the list into *dev: id, secret, scope. */
static fsa_status_t decode_device(const cJSON *d, size_t idx, fsa_device_entry_t *dev, char *err,
                                  size_t errlen)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(d, "id");
    if (!json_object(d) || !json_string(id) || !fsa_model_id_valid(id->valuestring))
        return fail(FSA_EINVAL, err, errlen,
                    "devices[%zu]: id must be 1..%d bytes of [A-Za-z0-9._:-]", idx,
                    FSA_LIMIT_ID_BYTES);
    memcpy(dev->id, id->valuestring, strlen(id->valuestring) + 1);
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(d, "secret");
    fsa_signer_key_t key;
    if (!json_string(sec) ||
        fsa_signer_key_parse(sec->valuestring, strlen(sec->valuestring), &key) != FSA_OK)
        return fail(FSA_EINVAL, err, errlen, "device %s: secret must be 64 hex chars (32 bytes)",
                    dev->id);
    fsa_signer_key_wipe(&key);
    memcpy(dev->secret_hex, sec->valuestring, sizeof dev->secret_hex);
    fsa_status_t st = decode_scope(d, &dev->scope);
    if (st == FSA_ENOMEM)
        return fail(st, err, errlen, "out of memory");
    if (st != FSA_OK)
        return fail(st, err, errlen,
                    "device %s: scope must be {\"sites\": [str...], \"people\": [str...]} with at "
                    "most %d strings of 1..128 bytes each",
                    dev->id, FSA_DEVICES_SCOPE_MAX);
    return FSA_OK;
}

fsa_status_t fsa_devices_decode(const char *text, size_t len, fsa_device_entry_t **out,
                                size_t *count, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out != NULL)
        *out = NULL;
    if (count != NULL)
        *count = 0;
    if (text == NULL || out == NULL || count == NULL)
        return fail(FSA_EINVAL, err, errlen, "no devices file");
    cJSON *root = NULL;
    const char *why = NULL;
    fsa_status_t st = fsa__codec_parse_bounded(text, len, FSA_DEVICES_FILE_BYTES, DEVICES_DEPTH,
                                               FSA_DEVICES_FILE_VALUES, &root, &why);
    if (st != FSA_OK)
        return fail(st, err, errlen, "%s", why);
    fsa_device_entry_t *devs = NULL;
    size_t n = 0;
    size_t total = 0;
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "devices");
    if (!json_object(root) || !json_array(arr)) {
        st = fail(FSA_EINVAL, err, errlen,
                  "expected {\"devices\": [{\"id\": ..., \"secret\": ...}]}");
        goto out;
    }
    total = fsa__json_count(arr);
    if (total == 0 || total > FSA_DEVICES_MAX) {
        st = fail(total == 0 ? FSA_EINVAL : FSA_ETOOLARGE, err, errlen,
                  "the devices list must hold 1..%d devices, not %zu", FSA_DEVICES_MAX, total);
        goto out;
    }
    devs = fsa_calloc(total, sizeof *devs);
    if (devs == NULL) {
        st = fail(FSA_ENOMEM, err, errlen, "out of memory");
        goto out;
    }
    for (const cJSON *d = arr->child; d != NULL && st == FSA_OK; d = d->next, n++)
        st = decode_device(d, n, &devs[n], err, errlen);
    if (st != FSA_OK)
        goto out;
    qsort(devs, n, sizeof *devs, device_cmp);
    for (size_t i = 1; i < n && st == FSA_OK; i++)
        if (strcmp(devs[i - 1].id, devs[i].id) == 0)
            st = fail(FSA_EINVAL, err, errlen, "device %s is listed twice", devs[i].id);
out:
    wipe_secrets(arr);
    cJSON_Delete(root);
    if (st != FSA_OK) {
        fsa_devices_free(devs, total);
        return st;
    }
    *out = devs;
    *count = n;
    return FSA_OK;
}

fsa_status_t fsa_devices_load(const char *path, fsa_device_entry_t **out, size_t *count, char *err,
                              size_t errlen)
{
    if (out != NULL)
        *out = NULL;
    if (count != NULL)
        *count = 0;
    if (path == NULL || out == NULL || count == NULL)
        return fail(FSA_EINVAL, err, errlen, "no devices file");
    char *text = NULL;
    size_t len = 0;
    char why[400];
    /* The port's reader: no symlink (O_NOFOLLOW), a regular file, mode 0600 or stricter and owned
     * by this user, as the agent reads its own secret. */
    fsa_status_t st = fsa_file_read(path, FSA_DEVICES_FILE_BYTES, 1, &text, &len, why, sizeof why);
    if (st != FSA_OK)
        return fail(st, err, errlen, "%s the devices file: %s",
                    st == FSA_ENOTFOUND || st == FSA_EIO ? "cannot read" : "refusing", why);
    st = fsa_devices_decode(text, len, out, count, why, sizeof why);
    fsa_file_wipe_free(text, len);
    if (st != FSA_OK)
        return fail(st, err, errlen, "the devices file %s is malformed: %s", path, why);
    return FSA_OK;
}
