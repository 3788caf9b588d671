/* fieldsync: the agent's configuration, kept in the journal, and building a sync engine from it. */
#ifndef FSA_AGENT_CONFIG_H
#define FSA_AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "sync/engine.h"

/* Keys in the journal's sync state. */
#define FSA_CFG_DEVICE_ID "device_id"
#define FSA_CFG_SERVER "server"
#define FSA_CFG_SECRET_FILE "secret_file"
#define FSA_CFG_CA_FILE "ca_file"
#define FSA_CFG_PINS "pins"
#define FSA_CFG_ALLOW_HTTP "allow_http"

/* Parses the content of a device secret file (len bytes, need not be NUL terminated): exactly 64
 * hex characters, then optional whitespace. FSA_OK, or FSA_EINVAL with *key wiped. */
fsa_status_t fsa_agent_parse_secret(const char *text, size_t len,
                                    fsa_signer_key_t *key) FSA_MUST_CHECK;

/* Reads a device secret file: it must be private (mode 0600 or 0400, ours) and hold exactly 64
 * hex characters (a trailing newline is allowed). FSA_OK, FSA_EPERM, FSA_EINVAL, FSA_ENOTFOUND,
 * FSA_EIO; err names the file and the problem, never the secret. */
fsa_status_t fsa_agent_read_secret(const char *path, fsa_signer_key_t *key, char *err,
                                   size_t errlen) FSA_MUST_CHECK;

/* Creates a sync engine from the journal's configuration (init stored it). base may carry
 * engine options to keep (retry policy, batch sizes, ignore_backoff); its device, key and
 * transport are taken from the journal. FSA_OK, FSA_ENOTFOUND (not initialised), the errors of
 * fsa_agent_read_secret and fsa_engine_new; err names the problem. */
fsa_status_t fsa_agent_engine_new(fsa_port_t *port, fsa_journal_t *j, const fsa_engine_opts_t *base,
                                  fsa_engine_t **out, char *err, size_t errlen) FSA_MUST_CHECK;

#endif
