/* fieldsync tests: small protocol helpers over the server harness (ops, pushes, entity reads). */
#ifndef FSA_TESTS_SYNC_SERVER_CLIENT_H
#define FSA_TESTS_SYNC_SERVER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sync/codec.h"
#include "tests/sync/server_harness.h"

/* A fresh op id (UUIDv4). */
void tc_op_id(char out[37]);

/* Formats one op object into out (cap bytes): op_id (fresh unless op_id given), seq, at, kind,
 * type, id, then `extra` (e.g. ",\"field\":\"level\",\"by\":1") verbatim. Returns out. */
char *tc_op(char *out, size_t cap, const char *op_id, const char *kind, const char *type,
            const char *id, const char *extra);

/* Pushes {"batch_id": fresh, "ops": [ops_csv]} as device dev. On an HTTP 200 decodes the results
 * into *results and *count (free with fsa_codec_results_free). Returns the HTTP status (0 if
 * none). */
long tc_push(void *h, const char *url, int dev, const char *ops_csv, fsa_codec_result_t **results,
             size_t *count);

/* Pushes a raw body; returns the HTTP status and the error code of a non-200 answer into code. */
long tc_push_raw(void *h, const char *url, int dev, const char *body, size_t len,
                 const th_req_opts_t *opts, char code[32]);

/* Reads an entity through the admin API: version (0 if absent) and fields (malloc'ed or NULL;
 * fields may be NULL when not wanted). */
int64_t tc_get(void *h, const char *url, const char *type, const char *id, char **fields);

/* One top-level field of an entity as JSON text into out ("" if absent). */
void tc_field(void *h, const char *url, const char *type, const char *id, const char *name,
              char *out, size_t cap);

/* Seeds an entity through the admin API; returns the HTTP status. */
long tc_seed(void *h, const char *url, const char *type, const char *id, const char *fields_json);

#endif
