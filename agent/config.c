/* fieldsync: the agent's configuration in the journal; the device secret; building the engine. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "port/files.h"

fsa_status_t fsa_agent_parse_secret(const char *text, size_t len, fsa_signer_key_t *key)
{
    if (text == NULL)
        return fsa_signer_key_parse(NULL, 0, key);
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    return fsa_signer_key_parse(text, len, key);
}

fsa_status_t fsa_agent_read_secret(const char *path, fsa_signer_key_t *key, char *err,
                                   size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    fsa_status_t st = fsa_file_read(path, 4096, 1, &text, &len, err, errlen);
    if (st != FSA_OK)
        return st;
    st = fsa_agent_parse_secret(text, len, key);
    if (st != FSA_OK)
        snprintf(err, errlen, "secret file %s must hold exactly 64 hex characters", path);
    fsa_file_wipe_free(text, len);
    return st;
}

/* A config string from the journal, or NULL. */
static char *cfg(fsa_journal_t *j, const char *key)
{
    char *v = NULL;
    if (fsa_journal_state_get_str(j, key, &v) != FSA_OK)
        return NULL;
    return v;
}

fsa_status_t fsa_agent_engine_new(fsa_port_t *port, fsa_journal_t *j, const fsa_engine_opts_t *base,
                                  fsa_engine_t **out, char *err, size_t errlen)
{
    char *device = cfg(j, FSA_CFG_DEVICE_ID), *server = cfg(j, FSA_CFG_SERVER);
    char *secret = cfg(j, FSA_CFG_SECRET_FILE), *ca = cfg(j, FSA_CFG_CA_FILE);
    char *pins = cfg(j, FSA_CFG_PINS);
    int64_t allow_http = 0;
    fsa_signer_key_t key;
    memset(&key, 0, sizeof key);
    fsa_status_t st = FSA_OK;
    if (device == NULL || server == NULL || secret == NULL) {
        snprintf(err, errlen, "journal %s is not set up for sync: run 'fieldsync init' first",
                 fsa_journal_path(j));
        st = FSA_ENOTFOUND;
        goto out;
    }
    st = fsa_journal_state_get_int(j, FSA_CFG_ALLOW_HTTP, 0, &allow_http);
    if (st == FSA_OK)
        st = fsa_agent_read_secret(secret, &key, err, errlen);
    if (st != FSA_OK)
        goto out;
    fsa_engine_opts_t o;
    memset(&o, 0, sizeof o);
    if (base != NULL)
        o = *base;
    o.device_id = device;
    o.key = &key;
    o.transport.base_url = server;
    o.transport.ca_file = ca != NULL && ca[0] ? ca : NULL;
    o.transport.pins = pins != NULL && pins[0] ? pins : NULL;
    o.transport.allow_insecure_http = allow_http != 0;
    st = fsa_engine_new(port, j, &o, out, err, errlen);
out:
    fsa_signer_key_wipe(&key);
    fsa_model_free(device);
    fsa_model_free(server);
    fsa_model_free(secret);
    fsa_model_free(ca);
    fsa_model_free(pins);
    return st;
}
