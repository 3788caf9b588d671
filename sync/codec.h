/* fieldsync: the JSON wire format of PROTOCOL.md sections 2-4 (push bodies, results, pull, errors).
 */
#ifndef FSA_SYNC_CODEC_H
#define FSA_SYNC_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port/limits.h"
#include "port/status.h"
#include "storage/model.h"

/*
 * With sync/devices.c (the server's devices file, which parses through this module's bounded
 * parse: codec_json.h), the only module in sync/ that touches cJSON. Pure: no I/O, no clock.
 *
 * Ownership, stated once: every char ** out-parameter receives a malloc'ed, NUL-terminated string
 * the caller frees with fsa_codec_free() (plain fsa_free() is equivalent); every decoded structure
 * is freed with its *_free()/_clear() function, which frees its contents (not the struct itself)
 * and accepts NULL and already-cleared structures. On every failure, out-parameters are left empty
 * (NULL pointers, zero counts, "" strings).
 *
 * Limits (port/limits.h), enforced by fsa_codec_decode_push(), the server's parser:
 *   - the body: at most FSA_LIMIT_BODY_BYTES bytes                              -> too_large
 *   - nesting: a value inside an op (fields, patch, item) at most FSA_LIMIT_JSON_DEPTH deep, i.e.
 *     the body at most FSA_LIMIT_JSON_DEPTH + FSA_CODEC_PUSH_ENVELOPE_DEPTH deep; checked by a
 *     non-recursive scan before the parser runs                                 -> too_large
 *   - every string and object key at most FSA_LIMIT_STRING_BYTES bytes          -> too_large
 *   - at most FSA_LIMIT_BATCH_OPS ops                                            -> too_large
 *   - not JSON, trailing bytes, not {"batch_id": str, "ops": [obj...]}, an op without a string
 *     op_id (1..36 bytes of the id alphabet), string kind, type and id, integer seq and at, or
 *     with a group that is not a string of at most FSA_LIMIT_ID_BYTES bytes      -> malformed
 * Everything else wrong with one op (an unknown kind or type, an id outside the alphabet, a
 * missing or mistyped kind-specific member, a field name or status too long to be real) does not
 * fail the batch: the op is decoded with a rejection (fsa_codec_op_t.reject) that the server
 * reports for that op alone.
 *
 * Decoders of answers (results, pull, error) are for the agent: a malformed or hostile answer is
 * FSA_EPROTO, never a crash; answers are bounded by FSA_LIMIT_BODY_BYTES_MAX bytes, nesting
 * FSA_LIMIT_JSON_DEPTH + FSA_CODEC_ANSWER_ENVELOPE_DEPTH and FSA_LIMIT_ANSWER_VALUES values (each
 * a parser node: the bytes alone do not bound the memory).
 */

#define FSA_CODEC_PUSH_ENVELOPE_DEPTH 3   /* {"ops": [ {op} ] } around an op's values */
#define FSA_CODEC_ANSWER_ENVELOPE_DEPTH 5 /* {"results": [ {"current": {"fields": ...}} ] } */
#define FSA_CODEC_CODE_BYTES 32
#define FSA_CODEC_MESSAGE_BYTES 256
/* A pull cursor, with its NUL: PROTOCOL.md section 4 makes it opaque and sets no bound, and a
 * server's token (a timestamp and an id, base64) may pass 63 bytes; every input is bounded. */
#define FSA_CODEC_CURSOR_BYTES 1024

/* Frees a string returned by this module. NULL is accepted. */
void fsa_codec_free(char *text);

/* Why a body was refused is an fsa_model_err_t (storage/model.h), the one type for a protocol
 * error: code "malformed" (HTTP 400) or "too_large" (HTTP 413), and one line; a decoded error
 * body's code and message. Its members are FSA_CODEC_CODE_BYTES and FSA_CODEC_MESSAGE_BYTES. */

/*
 * Scans JSON text without recursion and without parsing it, and returns the deepest nesting of
 * arrays and objects (0 for a scalar). Brackets inside strings do not count. Stops early and
 * returns max_depth + 1 as soon as the nesting exceeds max_depth. Never fails: text that is not
 * JSON gets some number, and the parser refuses it later.
 */
size_t fsa_codec_json_depth(const char *text, size_t len, size_t max_depth);

/*
 * Scans JSON text like fsa_codec_json_depth and returns the number of values in it, the nodes a
 * parser makes (1 + the commas outside strings + the containers that are not empty). Stops early
 * and returns max_values + 1 as soon as the count exceeds max_values. Never fails.
 */
size_t fsa_codec_json_values(const char *text, size_t len, size_t max_values);

/* ---- push: {"batch_id": "...", "ops": [ {op}, ... ]} ---- */

/* One decoded op. reject.code is "" when the op decoded cleanly; otherwise it names the protocol
 * rejection ("invalid_value", "unknown_type", "unknown_field") the op gets, with a message, and
 * only op.op_id (and what could be read of the rest) is meaningful. */
typedef struct fsa_codec_op {
    fsa_op_t op;
    fsa_model_err_t reject;
} fsa_codec_op_t;

typedef struct fsa_codec_push {
    char batch_id[FSA_ID_BYTES];
    fsa_codec_op_t *ops; /* count entries, malloc'ed; each op.json malloc'ed */
    size_t count;
} fsa_codec_push_t;

/* Frees the ops and their json and zeroes *push. NULL is accepted. */
void fsa_codec_push_free(fsa_codec_push_t *push);

/*
 * Encodes a push body from count ops (kinds as documented in storage/model.h; each op's json must
 * be valid JSON text of the right shape for its kind).
 *   batch_id: 1..128 bytes of the id alphabet.
 *   *out, *out_len: the body and its length (out_len may be NULL).
 * Returns FSA_OK; FSA_EINVAL (NULL argument, a bad batch_id, an op whose kind or type is out of
 * range or whose json is missing or not valid JSON); FSA_ETOOLARGE (more than FSA_LIMIT_BATCH_OPS
 * ops, or the body would be over FSA_LIMIT_BODY_BYTES: split the batch); FSA_ENOMEM.
 */
fsa_status_t fsa_codec_encode_push(const char *batch_id, const fsa_op_t *ops, size_t count,
                                   char **out, size_t *out_len) FSA_MUST_CHECK;

/*
 * Decodes a push body (need not be NUL terminated) under the limits above into *out (which the
 * caller frees with fsa_codec_push_free on FSA_OK; it is left empty otherwise).
 * Returns FSA_OK; FSA_EINVAL with err->code "malformed"; FSA_ETOOLARGE with err->code
 * "too_large"; FSA_ENOMEM. err may be NULL.
 */
fsa_status_t fsa_codec_decode_push(const char *body, size_t len, fsa_codec_push_t *out,
                                   fsa_model_err_t *err) FSA_MUST_CHECK;

/* The same decoder built on a cJSON tree of the whole body, the server's before session 6: the
 * reference fsa_codec_decode_push is tested against (same status, error and ops, byte for byte).
 * Also libfieldsync's decoder of an app's ops (fieldsync_record): a few ops at a time, where the
 * one-pass decoder's ~16 KB of code would cost the device binary more than its speed gives. */
fsa_status_t fsa__codec_decode_push_tree(const char *body, size_t len, fsa_codec_push_t *out,
                                         fsa_model_err_t *err) FSA_MUST_CHECK;

/* ---- per-op results: {"results": [...], "server_time": ms} ---- */

/* fsa_result_status_t (applied, duplicate, conflict, rejected) is in storage/model.h. */

/* "applied", "duplicate", "conflict", "rejected" ("?" out of range), and the reverse (FSA_EINVAL
 * for an unknown name; *out set only on FSA_OK). */
const char *fsa_result_status_name(fsa_result_status_t s);
fsa_status_t fsa_result_status_parse(const char *name, fsa_result_status_t *out) FSA_MUST_CHECK;

/* One op's outcome: the model's fsa_op_result_t (storage/model.h, where its fields are
 * described), the one struct that the codec decodes into, the journal applies and the server
 * encodes from. current_fields is owned by the result here (fsa_codec_result_clear frees it). */
typedef fsa_op_result_t fsa_codec_result_t;

/* Frees current_fields and zeroes the result. NULL is accepted. */
void fsa_codec_result_clear(fsa_codec_result_t *r);
/* Clears count results and frees the array. NULL is accepted. */
void fsa_codec_results_free(fsa_codec_result_t *results, size_t count);

/*
 * Encodes {"results": [...], "server_time": server_time_ms}. A result's current_fields must be
 * a JSON object text when has_current; it is embedded as it is (only its first and last chars are
 * checked), so it must come from a trusted source such as the server's own store. Returns FSA_OK,
 * FSA_EINVAL (NULL argument, a status out of range, current_fields not a JSON object), FSA_ENOMEM.
 */
fsa_status_t fsa_codec_encode_results(const fsa_codec_result_t *results, size_t count,
                                      int64_t server_time_ms, char **out,
                                      size_t *out_len) FSA_MUST_CHECK;

/*
 * Decodes a results answer. *out receives a malloc'ed array of *count results (free with
 * fsa_codec_results_free; NULL when count is 0), *server_time_ms the server's clock (0 when the
 * answer has none; server_time_ms may be NULL). Returns FSA_OK; FSA_EPROTO for anything that is
 * not a well-formed results answer within the limits; FSA_EINVAL (NULL argument); FSA_ENOMEM.
 */
fsa_status_t fsa_codec_decode_results(const char *body, size_t len, fsa_codec_result_t **out,
                                      size_t *count, int64_t *server_time_ms) FSA_MUST_CHECK;

/* ---- pull: {"changes": [{type, id, version, mdtz, fields}], "cursor", "more", "server_time"} */

typedef struct fsa_codec_change {
    fsa_type_t type;
    char id[FSA_ID_BYTES];
    int64_t version;
    int64_t mdtz_ms;
    char *fields; /* JSON object text, malloc'ed, owned by the change; NULL when gone */
    bool gone;    /* the entity left the device's scope: {"type","id","version","gone":true} */
} fsa_codec_change_t;

typedef struct fsa_codec_pull {
    fsa_codec_change_t *changes; /* count entries, malloc'ed */
    size_t count;
    char cursor[FSA_CODEC_CURSOR_BYTES];
    bool more;
    int64_t server_time_ms;
} fsa_codec_pull_t;

/* Frees the changes (and their fields) and zeroes *pull. NULL is accepted. */
void fsa_codec_pull_free(fsa_codec_pull_t *pull);
/* Frees one change's fields and zeroes it. NULL is accepted. */
void fsa_codec_change_clear(fsa_codec_change_t *c);

/* Encodes a pull answer. Each change's fields are embedded as they are (trusted JSON object text,
 * as for results). Returns FSA_OK, FSA_EINVAL (NULL argument, a type out of range, fields not a
 * JSON object), FSA_ENOMEM. */
fsa_status_t fsa_codec_encode_pull(const fsa_codec_pull_t *pull, char **out,
                                   size_t *out_len) FSA_MUST_CHECK;

/* Decodes a pull answer into *out (free with fsa_codec_pull_free). Every change must have a known
 * type, a valid id, version >= 1, an integer mdtz and an object fields; the cursor a string of at
 * most FSA_CODEC_CURSOR_BYTES - 1 bytes; more a boolean. Returns FSA_OK, FSA_EPROTO, FSA_EINVAL
 * (NULL argument), FSA_ENOMEM. */
fsa_status_t fsa_codec_decode_pull(const char *body, size_t len,
                                   fsa_codec_pull_t *out) FSA_MUST_CHECK;

/*
 * One entity as a JSON object {"type","id","version","mdtz","fields"} (the shape of a pull change),
 * plus "server_time" when server_time_ms >= 0. Returns FSA_OK, FSA_EINVAL, FSA_ENOMEM.
 */
fsa_status_t fsa_codec_encode_entity(const fsa_codec_change_t *entity, int64_t server_time_ms,
                                     char **out, size_t *out_len) FSA_MUST_CHECK;

/*
 * Decodes {"type": str, "id": str, "fields": {...}} (version and mdtz are ignored if present), the
 * body of the server's admin seed request, under the push limits. On FSA_OK out->fields is
 * malloc'ed (version and mdtz_ms are 0). Returns FSA_OK; FSA_EINVAL ("malformed": not this shape,
 * an unknown type, an invalid id); FSA_ETOOLARGE ("too_large"); FSA_ENOMEM. err may be NULL.
 */
fsa_status_t fsa_codec_decode_entity(const char *body, size_t len, fsa_codec_change_t *out,
                                     fsa_model_err_t *err) FSA_MUST_CHECK;

/* ---- errors: {"error": {"code", "message"}, "server_time"?} ---- */

/* Encodes an error body; server_time is included when server_time_ms >= 0. code must be
 * non-empty; message may be NULL (then ""). Returns FSA_OK, FSA_EINVAL, FSA_ENOMEM. */
fsa_status_t fsa_codec_encode_error(const char *code, const char *message, int64_t server_time_ms,
                                    char **out, size_t *out_len) FSA_MUST_CHECK;

/* Decodes an error body into *err (code truncated to fit is FSA_EPROTO; a long message is cut) and
 * *server_time_ms (-1 when absent; may be NULL). Returns FSA_OK, FSA_EPROTO, FSA_EINVAL (NULL
 * argument), FSA_ENOMEM. */
fsa_status_t fsa_codec_decode_error(const char *body, size_t len, fsa_model_err_t *err,
                                    int64_t *server_time_ms) FSA_MUST_CHECK;

#endif
