/* fieldsync tests: the push decoder against the tree decoder it replaced (sync/codec.h), for
 * tests/sync/test_codec_push.c and tests/fuzz/fuzz_codec_push.c. */
#ifndef FSA_TESTS_SYNC_CODEC_PUSH_DIFF_H
#define FSA_TESTS_SYNC_CODEC_PUSH_DIFF_H

#include <stddef.h>
#include <string.h>

#include "sync/codec.h"

static inline bool push_diff_str(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0);
}

/* The first member in which two decoded ops differ; NULL when they do not. */
static inline const char *push_diff_op(const fsa_codec_op_t *x, const fsa_codec_op_t *y)
{
    const fsa_op_t *a = &x->op, *b = &y->op;
    if (push_diff_str(x->reject.code, y->reject.code) ||
        push_diff_str(x->reject.message, y->reject.message))
        return "reject";
    if (push_diff_str(a->op_id, b->op_id) || a->seq != b->seq || a->at_ms != b->at_ms)
        return "op_id, seq or at";
    if (a->kind != b->kind || a->type != b->type || push_diff_str(a->id, b->id))
        return "kind, type or id";
    if (push_diff_str(a->group, b->group) || push_diff_str(a->field, b->field))
        return "group or field";
    if (a->base_version != b->base_version || a->by != b->by || a->max_len != b->max_len)
        return "base_version, by or max_len";
    if (push_diff_str(a->from, b->from) || push_diff_str(a->to, b->to) ||
        push_diff_str(a->key, b->key))
        return "from, to or key";
    if (push_diff_str(a->json, b->json))
        return "json";
    return NULL;
}

/*
 * Decodes body[0..len) with fsa_codec_decode_push and fsa__codec_decode_push_tree. NULL when both
 * answer the same (status, error code and message, batch id, every op byte for byte); otherwise
 * what differs, and *op_index the op (or SIZE_MAX).
 */
static inline const char *codec_push_diff(const char *body, size_t len, size_t *op_index)
{
    fsa_codec_push_t a, b;
    fsa_model_err_t ea, eb;
    fsa_status_t sa = fsa_codec_decode_push(body, len, &a, &ea);
    fsa_status_t sb = fsa__codec_decode_push_tree(body, len, &b, &eb);
    const char *why = NULL;
    *op_index = SIZE_MAX;
    if (sa != sb)
        why = "status";
    else if (push_diff_str(ea.code, eb.code) || push_diff_str(ea.message, eb.message))
        why = "error";
    else if (push_diff_str(a.batch_id, b.batch_id) || a.count != b.count)
        why = "batch_id or count";
    for (size_t i = 0; why == NULL && i < a.count; i++) {
        why = push_diff_op(&a.ops[i], &b.ops[i]);
        if (why != NULL)
            *op_index = i;
    }
    fsa_codec_push_free(&a);
    fsa_codec_push_free(&b);
    return why;
}

#endif
