/* fieldsync fuzz target: the agent's decoders of server answers (sync/codec.h: results, pull,
 * error). */
#include <inttypes.h>

#include <cjson/cJSON.h>

#include "sync/codec.h"
#include "tests/fuzz/fuzz_util.h"

/*
 * Every input is offered to the three decoders, as the agent does with whatever a server (or a
 * man in the middle with a stolen certificate) answers. Invariants:
 *   - a decoder returns FSA_OK or FSA_EPROTO, nothing else (no allocation fails here);
 *   - what decodes is within the documented shapes (ids, statuses, versions, lengths);
 *   - what decodes encodes again, and the encoding decodes to the same values (the codec's own
 *     encoder is what the server uses, so the two sides agree on every value the agent accepts).
 */

static bool is_object_text(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    bool ok = cJSON_IsObject(j);
    cJSON_Delete(j);
    return ok;
}

static void check_result_shape(const fsa_codec_result_t *r)
{
    size_t idlen = strnlen(r->op_id, sizeof r->op_id);
    FUZZ_CHECK(idlen > 0 && idlen < sizeof r->op_id);
    FUZZ_CHECK((unsigned)r->status < FSA__RESULT_COUNT);
    FUZZ_CHECK(r->version >= 0);
    if (r->status == FSA_RESULT_APPLIED)
        FUZZ_CHECK(r->version >= 1);
    if (r->status == FSA_RESULT_DUPLICATE)
        FUZZ_CHECK((unsigned)r->original < FSA__RESULT_COUNT &&
                   r->original != FSA_RESULT_DUPLICATE);
    if (r->status == FSA_RESULT_REJECTED)
        FUZZ_CHECK(r->code[0] != '\0');
    FUZZ_CHECK(strnlen(r->code, sizeof r->code) < sizeof r->code);
    FUZZ_CHECK(strnlen(r->message, sizeof r->message) < sizeof r->message);
    if (r->has_current) {
        FUZZ_CHECK(r->current_version >= 1);
        FUZZ_CHECK(r->current_fields != NULL && is_object_text(r->current_fields));
    } else {
        FUZZ_CHECK(r->current_fields == NULL);
    }
}

static void check_results(const char *body, size_t len)
{
    fsa_codec_result_t *res = NULL;
    size_t n = 0;
    int64_t t = 0;
    fsa_status_t st = fsa_codec_decode_results(body, len, &res, &n, &t);
    FUZZ_CHECK(st == FSA_OK || st == FSA_EPROTO);
    if (st != FSA_OK) {
        FUZZ_CHECK(res == NULL && n == 0 && t == 0);
        return;
    }
    FUZZ_CHECK((n == 0) == (res == NULL));
    for (size_t i = 0; i < n; i++)
        check_result_shape(&res[i]);

    char *text = NULL;
    size_t tlen = 0;
    FUZZ_CHECK(fsa_codec_encode_results(res, n, t, &text, &tlen) == FSA_OK);
    fsa_codec_result_t *again = NULL;
    size_t n2 = 0;
    int64_t t2 = 0;
    FUZZ_CHECK(fsa_codec_decode_results(text, tlen, &again, &n2, &t2) == FSA_OK);
    FUZZ_CHECK(n2 == n && t2 == t);
    for (size_t i = 0; i < n; i++) {
        const fsa_codec_result_t *a = &res[i], *b = &again[i];
        FUZZ_CHECK(strcmp(a->op_id, b->op_id) == 0);
        FUZZ_CHECK(a->status == b->status && a->version == b->version);
        if (a->status == FSA_RESULT_DUPLICATE)
            FUZZ_CHECK(a->original == b->original);
        FUZZ_CHECK(a->has_current == b->has_current);
        if (a->has_current) {
            FUZZ_CHECK(a->current_version == b->current_version);
            FUZZ_CHECK(strcmp(a->current_fields, b->current_fields) == 0);
        }
        FUZZ_CHECK(strcmp(a->code, b->code) == 0);
        /* The message is sent only with a code; without one it is dropped. */
        if (a->code[0] != '\0')
            FUZZ_CHECK(strcmp(a->message, b->message) == 0);
    }
    fsa_codec_results_free(again, n2);
    fsa_codec_free(text);
    fsa_codec_results_free(res, n);
}

static void check_pull(const char *body, size_t len)
{
    fsa_codec_pull_t p;
    fsa_status_t st = fsa_codec_decode_pull(body, len, &p);
    FUZZ_CHECK(st == FSA_OK || st == FSA_EPROTO);
    if (st != FSA_OK) {
        FUZZ_CHECK(p.changes == NULL && p.count == 0);
        return;
    }
    FUZZ_CHECK((p.count == 0) == (p.changes == NULL));
    FUZZ_CHECK(strnlen(p.cursor, sizeof p.cursor) < sizeof p.cursor);
    for (size_t i = 0; i < p.count; i++) {
        const fsa_codec_change_t *c = &p.changes[i];
        FUZZ_CHECK((unsigned)c->type < FSA__TYPE_COUNT);
        FUZZ_CHECK(fsa_model_id_valid(c->id));
        FUZZ_CHECK(c->version >= 1);
        FUZZ_CHECK(c->fields != NULL && is_object_text(c->fields));
    }

    char *text = NULL;
    size_t tlen = 0;
    FUZZ_CHECK(fsa_codec_encode_pull(&p, &text, &tlen) == FSA_OK);
    fsa_codec_pull_t q;
    FUZZ_CHECK(fsa_codec_decode_pull(text, tlen, &q) == FSA_OK);
    FUZZ_CHECK(q.count == p.count && q.more == p.more && q.server_time_ms == p.server_time_ms);
    FUZZ_CHECK(strcmp(q.cursor, p.cursor) == 0);
    for (size_t i = 0; i < p.count; i++) {
        const fsa_codec_change_t *a = &p.changes[i], *b = &q.changes[i];
        FUZZ_CHECK(a->type == b->type && strcmp(a->id, b->id) == 0);
        FUZZ_CHECK(a->version == b->version && a->mdtz_ms == b->mdtz_ms);
        FUZZ_CHECK(strcmp(a->fields, b->fields) == 0);
    }
    fsa_codec_pull_free(&q);
    fsa_codec_free(text);
    fsa_codec_pull_free(&p);
    FUZZ_CHECK(p.changes == NULL && p.count == 0);
}

static void check_error(const char *body, size_t len)
{
    fsa_model_err_t e;
    int64_t t = 0;
    fsa_status_t st = fsa_codec_decode_error(body, len, &e, &t);
    FUZZ_CHECK(st == FSA_OK || st == FSA_EPROTO);
    if (st != FSA_OK) {
        FUZZ_CHECK(e.code[0] == '\0' && e.message[0] == '\0' && t == -1);
        return;
    }
    FUZZ_CHECK(e.code[0] != '\0');
    FUZZ_CHECK(strnlen(e.code, sizeof e.code) < sizeof e.code);
    FUZZ_CHECK(strnlen(e.message, sizeof e.message) < sizeof e.message);

    char *text = NULL;
    size_t tlen = 0;
    FUZZ_CHECK(fsa_codec_encode_error(e.code, e.message, t, &text, &tlen) == FSA_OK);
    fsa_model_err_t e2;
    int64_t t2 = 0;
    FUZZ_CHECK(fsa_codec_decode_error(text, tlen, &e2, &t2) == FSA_OK);
    FUZZ_CHECK(strcmp(e.code, e2.code) == 0 && strcmp(e.message, e2.message) == 0);
    /* A negative server_time is not sent again (it reads as absent). */
    FUZZ_CHECK(t2 == (t >= 0 ? t : -1));
    fsa_codec_free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The transport hands the decoders a NUL-terminated copy; the length is what counts. */
    char *body = fuzz_strndup(data, size);
    check_results(body, size);
    check_pull(body, size);
    check_error(body, size);
    fsa_free(body);
    return 0;
}
