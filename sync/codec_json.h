/* fieldsync: the codec's bounded JSON parse, for the other JSON decoders of sync/ (devices.c). */
#ifndef FSA_SYNC_CODEC_JSON_H
#define FSA_SYNC_CODEC_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "port/status.h"

/*
 * Parses text[0..len) as exactly one JSON value within max_bytes, a nesting of max_depth, at most
 * max_values values (checked by one scan before the parser runs, so that a hostile text costs no
 * parse) and the string limit (FSA_LIMIT_STRING_BYTES). FSA_OK: *root is the tree (the caller
 * frees it with cJSON_Delete). Else *root is NULL and *why says why in a few words:
 * FSA_ETOOLARGE (over a bound), FSA_EINVAL (not JSON, trailing bytes), FSA_ENOMEM.
 */
fsa_status_t fsa__codec_parse_bounded(const char *text, size_t len, size_t max_bytes,
                                      size_t max_depth, size_t max_values, cJSON **root,
                                      const char **why) FSA_MUST_CHECK;

/* True when item is not NULL and an object (an array, a string, a number, null, true): what
 * cJSON_IsObject and its kin answer, without a call into the library (each function the device
 * binary imports costs it ~85 bytes). */
bool fsa__json_object(const cJSON *item);
bool fsa__json_array(const cJSON *item);
bool fsa__json_string(const cJSON *item);
bool fsa__json_number(const cJSON *item);
bool fsa__json_null(const cJSON *item);
bool fsa__json_true(const cJSON *item);
#define json_object(item) fsa__json_object(item)
#define json_array(item) fsa__json_array(item)
#define json_string(item) fsa__json_string(item)
#define json_number(item) fsa__json_number(item)
#define json_null(item) fsa__json_null(item)
#define json_true(item) fsa__json_true(item)
/* The members of an array (cJSON_GetArraySize, not imported either). */
size_t fsa__json_count(const cJSON *array);

#endif
