/* fieldsync: the entity model of PROTOCOL.md sections 1-2, shared by the journal and the server. */
#ifndef FSA_STORAGE_MODEL_H
#define FSA_STORAGE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port/limits.h"
#include "port/status.h"

/*
 * One source of truth for entity types, their fields, defaults and field kinds, the op kinds, the
 * status machines, and how an op applies to an entity's fields. The journal uses it to validate a
 * record and to build the local view; the reference server uses the same code to apply pushed ops.
 *
 * Pure: no I/O, no clock, no globals that change. Field values travel as JSON text (UTF-8, NUL
 * terminated); every function that returns text returns a malloc'ed string the caller frees with
 * fsa_model_free().
 */

typedef enum fsa_type {
    FSA_TYPE_ATTENDANCE = 0,
    FSA_TYPE_JOBNEED = 1,
    FSA_TYPE_TICKET = 2,
    FSA__TYPE_COUNT
} fsa_type_t;

typedef enum fsa_field_kind {
    FSA_FIELD_STR = 0,      /* JSON string */
    FSA_FIELD_STR_NULL = 1, /* JSON string or null (jobneed.parent_id) */
    FSA_FIELD_INT = 2,      /* JSON integer (no fraction), int64 range; takes increment */
    FSA_FIELD_NUM = 3,      /* JSON number */
    FSA_FIELD_OBJ = 4,      /* JSON object; takes merge and append */
    FSA_FIELD_STATUS = 5,   /* JSON string in the type's status machine; only by transition */
    FSA_FIELD_ENUM = 6,     /* JSON string from a fixed set (attendance.kind: checkin/checkout) */
    FSA_FIELD_NUM_NULL = 7  /* JSON number or null (attendance lat, lon, accuracy_m: no fix) */
} fsa_field_kind_t;

/* The texts are arrays of characters, not pointers: a pointer costs the device binary a
 * relocation (24 bytes on aarch64). */
typedef struct fsa_field_def {
    fsa_field_kind_t kind;
    char name[sizeof "accuracy_m"];
    bool required;                                       /* create must give it (no default) */
    char default_json[sizeof "{\"ticket_history\":[]}"]; /* on create, as JSON; "" if required */
} fsa_field_def_t;

typedef enum fsa_op_kind {
    FSA_OP_CREATE = 0,
    FSA_OP_SET = 1,
    FSA_OP_MERGE = 2,
    FSA_OP_INCREMENT = 3,
    FSA_OP_TRANSITION = 4,
    FSA_OP_APPEND = 5,
    FSA__OP_COUNT
} fsa_op_kind_t;

/* A server's answer for one op (PROTOCOL.md section 3). Values are frozen. */
typedef enum fsa_result_status {
    FSA_RESULT_APPLIED = 0,
    FSA_RESULT_DUPLICATE = 1,
    FSA_RESULT_CONFLICT = 2,
    FSA_RESULT_REJECTED = 3,
    FSA__RESULT_COUNT
} fsa_result_status_t;

#define FSA_FIELD_NAME_BYTES 32 /* longest field name + NUL, with room */
#define FSA_GROUP_BYTES (FSA_LIMIT_ID_BYTES + 1)
#define FSA_ID_BYTES (FSA_LIMIT_ID_BYTES + 1)
#define FSA_KEY_BYTES (FSA_LIMIT_ID_BYTES + 1) /* append: the array's key inside the object */
#define FSA_STATUS_BYTES FSA_LIMIT_STATUS_BYTES
#define FSA_OP_ID_BYTES 37 /* canonical UUID + NUL */

/*
 * One operation, as recorded, stored, sent and applied. Which members mean something depends on
 * kind (PROTOCOL.md section 2):
 *   create:     json = the fields object (NULL: {}, all defaults)
 *   set:        base_version, json = the fields object
 *   merge:      field, json = the RFC 7396 merge patch (an object)
 *   increment:  field, by
 *   transition: field, from, to
 *   append:     field, key, json = the item (any JSON value), max_len (0 = unbounded)
 * Strings are NUL terminated; group "" means no group. json is owned by the op (malloc'ed);
 * fsa_op_clear() frees it.
 */
typedef struct fsa_op {
    char op_id[FSA_OP_ID_BYTES];
    int64_t seq;
    int64_t at_ms;
    fsa_op_kind_t kind;
    fsa_type_t type;
    char id[FSA_ID_BYTES];
    char group[FSA_GROUP_BYTES];
    char field[FSA_FIELD_NAME_BYTES];
    int64_t base_version;
    int64_t by;
    char from[FSA_STATUS_BYTES];
    char to[FSA_STATUS_BYTES];
    char key[FSA_KEY_BYTES];
    int64_t max_len;
    char *json;
} fsa_op_t;

/* A protocol error: the protocol's error code and one human-readable line naming the problem.
 * Why an op cannot apply ("invalid_value", "unknown_field", "unknown_type", "not_found",
 * "invalid_transition", "immutable", "entity_too_large", or "conflict" for a failed
 * precondition), e.g. "jobneed J1: ASSIGNED→COMPLETED is not an allowed transition"; also why the
 * codec refused a body ("malformed", "too_large") and a decoded error body (sync/codec.h). */
typedef struct fsa_model_err {
    char code[32];
    char message[256];
} fsa_model_err_t;

/*
 * One op's outcome from the server (PROTOCOL.md section 3): what the codec decodes an answer into
 * (sync/codec.h, which also calls it fsa_codec_result_t) and what the journal applies. On the wire:
 *   {"op_id", "status", "version"?, "original"?, "current"?: {"version", "fields"}, "error"?:
 *    {"code", "message"}}
 * version:  applied, and duplicate of an applied op: the entity's version right after the op;
 *           0 (absent on the wire) otherwise.
 * original: duplicate only: the original outcome (never duplicate).
 * current:  has_current: the entity as it is now (conflicts; current_fields is a JSON object text,
 *           malloc'ed by whoever filled the result and freed by it: the journal only reads it).
 * code, message: "" when absent. Rejections carry them; the reference server adds them to
 *           conflicts too.
 */
typedef struct fsa_op_result {
    char op_id[FSA_OP_ID_BYTES];
    fsa_result_status_t status;
    int64_t version;
    fsa_result_status_t original;
    bool has_current;
    int64_t current_version;
    char *current_fields;
    char code[32];
    char message[256];
} fsa_op_result_t;

/* The outcome r stands for: a duplicate's original, else its status. */
static inline fsa_result_status_t fsa_op_result_outcome(const fsa_op_result_t *r)
{
    return r->status == FSA_RESULT_DUPLICATE ? r->original : r->status;
}

/* True when r says its op is applied on the server: now, or before (a duplicate of an applied
 * op; a duplicate whose original says duplicate is taken so too). What the journal applies as
 * done, and what the engine checks a group's answer against. */
static inline bool fsa_op_result_applied(const fsa_op_result_t *r)
{
    fsa_result_status_t outcome = fsa_op_result_outcome(r);
    return outcome == FSA_RESULT_APPLIED || outcome == FSA_RESULT_DUPLICATE;
}

/* Names: "attendance", "jobneed", "ticket"; "create", "set", "merge", "increment", "transition",
 * "append". *_name never returns NULL ("?" for an unknown value). *_parse return FSA_OK or
 * FSA_EINVAL and set *out only on FSA_OK. */
const char *fsa_type_name(fsa_type_t type);
fsa_status_t fsa_type_parse(const char *name, fsa_type_t *out) FSA_MUST_CHECK;
const char *fsa_op_kind_name(fsa_op_kind_t kind);
fsa_status_t fsa_op_kind_parse(const char *name, fsa_op_kind_t *out) FSA_MUST_CHECK;

/* The field definitions of a type, in the protocol's order; *count receives their number. NULL
 * for an unknown type. The table is static: never free it. */
const fsa_field_def_t *fsa_model_fields(fsa_type_t type, size_t *count);

/* One field's definition, NULL when the type has no such field. */
const fsa_field_def_t *fsa_model_field(fsa_type_t type, const char *name);

/* True when id is 1..128 bytes of [A-Za-z0-9._:-] (entity ids, device ids). */
bool fsa_model_id_valid(const char *id);

/* Status machines (PROTOCOL.md section 1). The status field of a type ("jobstatus", "status"),
 * NULL for attendance. */
const char *fsa_model_status_field(fsa_type_t type);
/* True when s is a status of the type's machine. */
bool fsa_model_status_known(fsa_type_t type, const char *s);
/* True when from→to is an edge of the type's machine. Server-only edges (→AUTOCLOSED) count only
 * when by_server is true. */
bool fsa_model_transition_allowed(fsa_type_t type, const char *from, const char *to,
                                  bool by_server);
/* True for COMPLETED, AUTOCLOSED (jobneed), CLOSED, CANCELLED (ticket). */
bool fsa_model_status_terminal(fsa_type_t type, const char *s);

/* Flags for fsa_model_apply(). */
#define FSA_APPLY_BY_SERVER 0x1u /* allow server-only transitions (→AUTOCLOSED) */
#define FSA_APPLY_REPLAY 0x2u    /* local replay: skip the set's base_version check */

/*
 * Validates op on its own, without the entity: the type and id, that the kind may touch the field
 * (field kinds), the JSON types of values, the status names, that from→to is an allowed edge, and
 * the limits of port/limits.h (nesting depth, string length, sizes). It does not look at op_id,
 * seq, at or group.
 * Returns FSA_OK; FSA_ETRANSITION (code invalid_transition); FSA_EINVAL (code invalid_value,
 * unknown_field, unknown_type or immutable); FSA_ENOMEM. err may be NULL; it is set on failure.
 */
fsa_status_t fsa_model_validate_op(const fsa_op_t *op, unsigned flags,
                                   fsa_model_err_t *err) FSA_MUST_CHECK;

/*
 * Applies op to one entity, the server pattern of PROTOCOL.md section 2: validates it as
 * fsa_model_validate_op() does, checks its precondition, and computes the new fields.
 *   fields_json: the entity's current fields object, NULL when the entity does not exist.
 *   version:     its current version (ignored when fields_json is NULL).
 *   *out_json:   on FSA_OK, the new fields object (malloc'ed, caller frees with fsa_model_free);
 *                NULL on every other return.
 * create fills the defaults of absent fields and refuses unknown or missing required ones.
 * merge applies an RFC 7396 patch; append adds item to the array at key inside the object field
 * (creating the array when the key is absent), dropping the oldest items past max_len.
 * Returns FSA_OK; FSA_ECONFLICT (code conflict: create on an existing entity, set with a stale
 * base_version unless FSA_APPLY_REPLAY, transition whose from is not the current status);
 * FSA_ENOTFOUND (code not_found: not create and the entity does not exist); the rejections of
 * fsa_model_validate_op(); FSA_EINVAL also when the result would break a limit (code
 * entity_too_large when the fields would be longer than FSA_LIMIT_FIELDS_BYTES as JSON);
 * FSA_ENOMEM.
 */
fsa_status_t fsa_model_apply(const fsa_op_t *op, const char *fields_json, int64_t version,
                             unsigned flags, char **out_json, fsa_model_err_t *err) FSA_MUST_CHECK;

/*
 * A sequence of ops on one entity (the server applies a batch's ops on an entity one after the
 * other): fsa_model_entity_apply(e, ...) answers exactly as fsa_model_apply(...) with the same
 * arguments, but keeps the parsed result in e, so that the next op on the text it returned does
 * not parse it again. e only caches: the caller passes the entity's current fields each time,
 * and e's tree is used only when they are, byte for byte, the text of its last result (anything
 * else is parsed as fsa_model_apply does). A held tree costs memory of up to ~20 times its text.
 * fsa_model_entity_new returns NULL on ENOMEM; fsa_model_entity_apply with e NULL is
 * fsa_model_apply. fsa_model_entity_free accepts NULL.
 */
typedef struct fsa_model_entity fsa_model_entity_t;
fsa_model_entity_t *fsa_model_entity_new(void);
void fsa_model_entity_free(fsa_model_entity_t *e);
fsa_status_t fsa_model_entity_apply(fsa_model_entity_t *e, const fsa_op_t *op,
                                    const char *fields_json, int64_t version, unsigned flags,
                                    char **out_json, fsa_model_err_t *err) FSA_MUST_CHECK;

/* fsa_model_entity_apply for a caller that may not succeed past a failed allocation (the
 * journal: a failed allocation is FSA_ENOMEM there, never a slower success): FSA_ENOMEM when e is
 * NULL (fsa_model_entity_new failed) or when the result's tree cannot be held; else the same. */
fsa_status_t fsa_model_entity_apply_strict(fsa_model_entity_t *e, const fsa_op_t *op,
                                           const char *fields_json, int64_t version, unsigned flags,
                                           char **out_json, fsa_model_err_t *err) FSA_MUST_CHECK;

/*
 * A run of ops on one entity whose texts in between nobody needs (the journal replaying a
 * drain's results onto a base: docs/performance.md, "Drain"): each fsa_model_entity_replay
 * changes e's tree as fsa_model_entity_apply_strict would and prints nothing; one
 * fsa_model_entity_print at the end prints the last tree, the same text that a chain of
 * fsa_model_entity_apply_strict calls would have returned for the last op (fields in the
 * protocol's order, then the others in the order they came).
 * - fsa_model_entity_replay: fields_json is the entity's fields before op, and is read only
 *   when e holds no run's tree (the run's first op; then e's held tree is used when it is the
 *   parse of exactly fields_json, as in fsa_model_entity_apply). Returns what
 *   fsa_model_entity_apply_strict would, but for the entity's limits, which it checks without
 *   printing, from a bound on every text along the run (which starts from how long the run's
 *   first text prints: a text stored as it came may print longer): FSA_ETOOLARGE (code
 *   entity_too_large) when it cannot tell that each text, printed op by op, would have stayed
 *   within the size and depth limits (near them; the op may well apply: the caller applies the
 *   run one op at a time).
 *   After any status but FSA_OK, e holds nothing.
 * - fsa_model_entity_print: *out_json (fsa_model_free) is the run's text; type is the
 *   entity's. FSA_EINVAL when e holds no run (nothing replayed since the last print, e NULL) or
 *   the text breaks a limit (which a run of FSA_OK replays does not), or out_json is NULL;
 *   FSA_ENOMEM. After FSA_OK e holds the parse of *out_json as after fsa_model_entity_apply;
 *   after a failure with a run, nothing.
 * fsa_model_entity_apply and fsa_model_entity_scope_keys do not use a run's tree (they parse
 * their fields_json), and a call of fsa_model_entity_apply ends the run without printing it.
 */
fsa_status_t fsa_model_entity_replay(fsa_model_entity_t *e, const fsa_op_t *op,
                                     const char *fields_json, int64_t version, unsigned flags,
                                     fsa_model_err_t *err) FSA_MUST_CHECK;
fsa_status_t fsa_model_entity_print(fsa_model_entity_t *e, fsa_type_t type,
                                    char **out_json) FSA_MUST_CHECK;

/*
 * RFC 7396 JSON merge patch: *out_json = target with patch applied (null deletes a key, objects
 * merge recursively, anything else replaces). target_json NULL means {}. Enforces the nesting and
 * string limits on both inputs and the result. Returns FSA_OK, FSA_EINVAL (malformed or over a
 * limit; *out_json NULL), FSA_ENOMEM.
 */
fsa_status_t fsa_model_merge_patch(const char *target_json, const char *patch_json,
                                   char **out_json) FSA_MUST_CHECK;

/* Checks that text is one JSON value within the limits (FSA_LIMIT_JSON_DEPTH nesting,
 * FSA_LIMIT_STRING_BYTES per string, max_bytes in all). FSA_OK or FSA_EINVAL. */
fsa_status_t fsa_model_json_check(const char *text, size_t max_bytes) FSA_MUST_CHECK;

/* Makes s well-formed UTF-8 in place: every byte that does not begin a well-formed sequence (a
 * stray byte, or the head of a sequence that a byte count cut short) becomes '?'. For messages
 * that quote what a client sent, cut at a byte bound. */
void fsa_model_utf8_fix(char *s);

/* Reads one top-level field of a fields object as JSON text (malloc'ed into *out_json; NULL when
 * absent). FSA_OK, FSA_ENOTFOUND, FSA_EINVAL (not an object), FSA_ENOMEM. */
fsa_status_t fsa_model_get_field(const char *fields_json, const char *name,
                                 char **out_json) FSA_MUST_CHECK;

/* Reads a status field's string value into out (size FSA_STATUS_BYTES); FSA_ENOTFOUND if absent
 * or not a string. */
fsa_status_t fsa_model_get_status(const char *fields_json, fsa_type_t type,
                                  char out[FSA_STATUS_BYTES]) FSA_MUST_CHECK;

/* Compares two objects at the top-level keys of keys_json (an object; its values are ignored):
 * *same is true when, for every key, both lack it or both hold equal JSON values (deep, key order
 * ignored). FSA_OK, FSA_EINVAL (an input is not an object, or malformed), FSA_ENOMEM. */
fsa_status_t fsa_model_same_values(const char *a_json, const char *b_json, const char *keys_json,
                                   bool *same) FSA_MUST_CHECK;

/* *out_json = fields_json (an object of type's fields) without its status field, which changes
 * only by transition: what a set may carry of a create's fields. NULL when nothing is left.
 * Malloc'ed; free with fsa_model_free. FSA_OK, FSA_EINVAL, FSA_ENOMEM. */
fsa_status_t fsa_model_settable(fsa_type_t type, const char *fields_json,
                                char **out_json) FSA_MUST_CHECK;

/* A later set's prior (later_prior, as fsa_model_project made it) without the effect of an earlier
 * set on the same entity that will not apply (set_json, recorded over the values set_prior): each
 * member whose value is the one set_json gave takes its value in set_prior. *out_json NULL when no
 * member changed, else malloc'ed (free with fsa_model_free). FSA_OK, FSA_EINVAL, FSA_ENOMEM. */
fsa_status_t fsa_model_prior_without(const char *later_prior, const char *set_json,
                                     const char *set_prior, char **out_json) FSA_MUST_CHECK;

/* *out_json = fields_json's members but those whose key is one of keys_json's (both objects):
 * the fields of a set that no rule of the resolver covers. NULL when nothing is left, else
 * malloc'ed (free with fsa_model_free). FSA_OK, FSA_EINVAL, FSA_ENOMEM. */
fsa_status_t fsa_model_without_keys(const char *fields_json, const char *keys_json,
                                    char **out_json) FSA_MUST_CHECK;

/* *out_json = {key: fields[key]} for every top-level key of keys_json, with null for a key that
 * fields lacks (fields_json NULL: all null). Malloc'ed; free with fsa_model_free. FSA_OK,
 * FSA_EINVAL, FSA_ENOMEM. */
fsa_status_t fsa_model_project(const char *fields_json, const char *keys_json,
                               char **out_json) FSA_MUST_CHECK;

/* The values that place an entity in a device's scope (PROTOCOL.md section 4): attendance
 * site_id; jobneed people_id and parent_id; ticket assignedto. "" when absent, null, not a string
 * or longer than an id. */
typedef struct fsa_model_keys {
    char site[FSA_ID_BYTES];
    char person[FSA_ID_BYTES];
    char parent[FSA_ID_BYTES];
} fsa_model_keys_t;

/* Reads the scope keys of an entity of type from its fields. FSA_OK, FSA_EINVAL (not an object,
 * malformed), FSA_ENOMEM. */
fsa_status_t fsa_model_scope_keys(fsa_type_t type, const char *fields_json,
                                  fsa_model_keys_t *out) FSA_MUST_CHECK;

/* fsa_model_scope_keys(type, fields_json, out), from e's tree when it is the parse of exactly
 * fields_json (the same answer, without parsing). */
fsa_status_t fsa_model_entity_scope_keys(const fsa_model_entity_t *e, fsa_type_t type,
                                         const char *fields_json,
                                         fsa_model_keys_t *out) FSA_MUST_CHECK;

/* Frees text returned by this module. NULL is accepted. */
void fsa_model_free(char *json);

/* Copies src into dst with its own json (deep copy). FSA_OK or FSA_ENOMEM. */
fsa_status_t fsa_op_copy(fsa_op_t *dst, const fsa_op_t *src) FSA_MUST_CHECK;
/* Frees op->json and zeroes the op. NULL is accepted. */
void fsa_op_clear(fsa_op_t *op);

#endif
