/* fieldsync fuzz target: RFC 7396 merge patch and the object field ops of storage/model.h. */
#include <inttypes.h>

#include <cjson/cJSON.h>

#include "storage/model.h"
#include "tests/fuzz/fuzz_util.h"

/*
 * Input: one mode byte, then TARGET NUL PATCH (no NUL: no target, all of it is the patch).
 *   mode % 4 == 0  fsa_model_merge_patch(TARGET, PATCH) against a reference merge patch written
 *                  here on cJSON (RFC 7396 section 2, word for word): same result; applying the
 *                  patch again changes nothing (idempotence); two inputs the model accepts alone
 *                  always merge.
 *   mode % 4 == 1  a merge op into a jobneed's other_info = TARGET, through fsa_model_apply(): the
 *                  field ends as fsa_model_merge_patch() says.
 *   mode % 4 == 2  an append op of the item PATCH into a ticket's ticketlog = TARGET, at key
 *                  "ticket_history", max_len = (mode >> 2) % 8: the array ends with the item and
 *                  holds at most max_len items.
 *   mode % 4 == 3  fsa_model_same_values() and fsa_model_project() with TARGET and PATCH.
 */

/* RFC 7396: MergePatch(Target, Patch). Takes target. */
static cJSON *ref_merge(cJSON *target, const cJSON *patch)
{
    if (!cJSON_IsObject(patch)) {
        cJSON_Delete(target);
        return cJSON_Duplicate(patch, true);
    }
    if (!cJSON_IsObject(target)) {
        cJSON_Delete(target);
        target = cJSON_CreateObject();
        FUZZ_CHECK(target != NULL);
    }
    for (const cJSON *p = patch->child; p != NULL; p = p->next) {
        if (cJSON_IsNull(p)) {
            cJSON_DeleteItemFromObjectCaseSensitive(target, p->string);
        } else {
            cJSON *cur = cJSON_DetachItemFromObjectCaseSensitive(target, p->string);
            cJSON *v = ref_merge(cur, p);
            FUZZ_CHECK(v != NULL && cJSON_AddItemToObject(target, p->string, v));
        }
    }
    return target;
}

static size_t depth(const cJSON *item)
{
    size_t d = 0;
    for (const cJSON *c = item->child; c != NULL; c = c->next) {
        size_t cd = depth(c);
        if (cd > d)
            d = cd;
    }
    return (cJSON_IsArray(item) || cJSON_IsObject(item)) ? d + 1 : 0;
}

static bool same_json(const char *a, const cJSON *b)
{
    cJSON *ja = cJSON_Parse(a);
    FUZZ_CHECK(ja != NULL);
    bool same = cJSON_Compare(ja, b, true);
    cJSON_Delete(ja);
    return same;
}

static void check_merge(const char *target, const char *patch)
{
    char *out = NULL;
    fsa_status_t st = fsa_model_merge_patch(target, patch, &out);
    FUZZ_CHECK(st == FSA_OK || st == FSA_EINVAL);
    if (st != FSA_OK) {
        FUZZ_CHECK(out == NULL);
        /* Refused only when an input is refused on its own (a merge cannot deepen a tree nor
         * lengthen a string, and the inputs here are far below the size limit). */
        char *t_alone = NULL, *p_alone = NULL;
        fsa_status_t st_t = target != NULL ? fsa_model_merge_patch(NULL, target, &t_alone) : FSA_OK;
        fsa_status_t st_p = fsa_model_merge_patch(NULL, patch, &p_alone);
        FUZZ_CHECK(st_t != FSA_OK || st_p != FSA_OK);
        fsa_model_free(t_alone);
        fsa_model_free(p_alone);
        return;
    }
    FUZZ_CHECK(fsa_model_json_check(out, FSA_LIMIT_FIELDS_BYTES) == FSA_OK);

    /* The reference: the model accepted both texts, so they are valid JSON without repeated
     * keys, and cJSON reads them as the model does. */
    cJSON *jt = target != NULL ? cJSON_Parse(target) : NULL;
    cJSON *jp = cJSON_Parse(patch);
    FUZZ_CHECK(jp != NULL && (target == NULL || jt != NULL));
    size_t dmax = depth(jp);
    if (jt != NULL && depth(jt) > dmax)
        dmax = depth(jt);
    cJSON *ref = ref_merge(jt, jp);
    FUZZ_CHECK(depth(ref) <= dmax);
    FUZZ_CHECK(same_json(out, ref));
    cJSON_Delete(ref);
    cJSON_Delete(jp);

    /* Idempotent: the same patch again gives the same text. */
    char *again = NULL;
    FUZZ_CHECK(fsa_model_merge_patch(out, patch, &again) == FSA_OK);
    FUZZ_CHECK(strcmp(out, again) == 0);
    fsa_model_free(again);
    fsa_model_free(out);
}

/* True when text (NULL: absent) is one JSON object the model accepts on its own: only then is
 * pasting it into a fields text the same as setting that field. */
static bool one_object(const char *text)
{
    if (text == NULL)
        return true;
    char *alone = NULL;
    bool ok = fsa_model_merge_patch(NULL, text, &alone) == FSA_OK && alone[0] == '{' &&
              text[strspn(text, " \t\r\n")] == '{';
    fsa_model_free(alone);
    return ok;
}

static char *fields_with(const char *prefix, const char *value, const char *suffix)
{
    size_t n = strlen(prefix) + strlen(value) + strlen(suffix) + 1;
    char *s = fuzz_alloc(n);
    snprintf(s, n, "%s%s%s", prefix, value, suffix);
    return s;
}

static void check_merge_op(const char *target, const char *patch)
{
    char *fields =
        fields_with("{\"jobstatus\":\"INPROGRESS\",\"parent_id\":null,\"seqno\":1,\"expirytime\":0,"
                    "\"people_id\":\"p42\",\"other_info\":",
                    target != NULL ? target : "{}", "}");
    fsa_op_t op;
    memset(&op, 0, sizeof op);
    snprintf(op.op_id, sizeof op.op_id, "f0f0f0f0-0000-4000-8000-000000000001");
    op.kind = FSA_OP_MERGE;
    op.type = FSA_TYPE_JOBNEED;
    snprintf(op.id, sizeof op.id, "J1");
    snprintf(op.field, sizeof op.field, "other_info");
    op.json = (char *)(uintptr_t)patch;
    char *out = NULL;
    fsa_model_err_t err;
    fsa_status_t st = fsa_model_apply(&op, fields, 3, 0, &out, &err);
    FUZZ_CHECK(st != FSA_ENOMEM);
    /* TARGET is pasted into the fields text: compare only when it is one JSON object on its own
     * (otherwise it can close other_info early and add top-level fields). */
    if (st == FSA_OK && one_object(target)) {
        FUZZ_CHECK(fsa_model_json_check(out, FSA_LIMIT_FIELDS_BYTES) == FSA_OK);
        char *got = NULL, *expect = NULL;
        FUZZ_CHECK(fsa_model_get_field(out, "other_info", &got) == FSA_OK);
        FUZZ_CHECK(fsa_model_merge_patch(target != NULL ? target : "{}", patch, &expect) == FSA_OK);
        cJSON *je = cJSON_Parse(expect);
        FUZZ_CHECK(je != NULL && same_json(got, je));
        cJSON_Delete(je);
        fsa_model_free(expect);
        fsa_model_free(got);
    } else if (st != FSA_OK) {
        FUZZ_CHECK(out == NULL && err.code[0] != '\0');
    }
    fsa_model_free(out);
    fsa_free(fields);
}

static void check_append(const char *target, const char *item, int64_t max_len)
{
    char *fields = fields_with("{\"status\":\"OPEN\",\"level\":1,\"assignedto\":\"p7\","
                               "\"priority\":\"HIGH\",\"ticketlog\":",
                               target != NULL ? target : "{}", "}");
    fsa_op_t op;
    memset(&op, 0, sizeof op);
    snprintf(op.op_id, sizeof op.op_id, "f0f0f0f0-0000-4000-8000-000000000002");
    op.kind = FSA_OP_APPEND;
    op.type = FSA_TYPE_TICKET;
    snprintf(op.id, sizeof op.id, "T1");
    snprintf(op.field, sizeof op.field, "ticketlog");
    snprintf(op.key, sizeof op.key, "ticket_history");
    op.max_len = max_len;
    op.json = (char *)(uintptr_t)item;
    char *out = NULL;
    fsa_model_err_t err;
    fsa_status_t st = fsa_model_apply(&op, fields, 2, 0, &out, &err);
    FUZZ_CHECK(st != FSA_ENOMEM);
    if (st == FSA_OK && one_object(target)) {
        FUZZ_CHECK(fsa_model_json_check(out, FSA_LIMIT_FIELDS_BYTES) == FSA_OK);
        cJSON *j = cJSON_Parse(out);
        const cJSON *log = cJSON_GetObjectItemCaseSensitive(j, "ticketlog");
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(log, "ticket_history");
        FUZZ_CHECK(cJSON_IsArray(arr));
        int n = cJSON_GetArraySize(arr);
        FUZZ_CHECK(n >= 1);
        if (max_len > 0)
            FUZZ_CHECK(n <= max_len);
        cJSON *ji = cJSON_Parse(item);
        FUZZ_CHECK(ji != NULL && cJSON_Compare(cJSON_GetArrayItem(arr, n - 1), ji, true));
        cJSON_Delete(ji);
        cJSON_Delete(j);
    } else if (st != FSA_OK) {
        FUZZ_CHECK(out == NULL && err.code[0] != '\0');
    }
    fsa_model_free(out);
    fsa_free(fields);
}

static void check_compare(const char *a, const char *b)
{
    if (a == NULL)
        a = "{}";
    bool same = false;
    fsa_status_t st = fsa_model_same_values(a, a, b, &same);
    FUZZ_CHECK(st == FSA_OK || st == FSA_EINVAL);
    if (st == FSA_OK)
        FUZZ_CHECK(same);
    st = fsa_model_same_values(a, b, a, &same);
    FUZZ_CHECK(st == FSA_OK || st == FSA_EINVAL);
    char *proj = NULL;
    st = fsa_model_project(a, b, &proj);
    FUZZ_CHECK(st == FSA_OK || st == FSA_EINVAL);
    if (st == FSA_OK) {
        FUZZ_CHECK(fsa_model_json_check(proj, FSA_LIMIT_FIELDS_BYTES) == FSA_OK);
        /* The projection holds exactly the keys of b, with a's values. */
        cJSON *jp = cJSON_Parse(proj), *jb = cJSON_Parse(b), *ja = cJSON_Parse(a);
        FUZZ_CHECK(cJSON_IsObject(jp) && cJSON_IsObject(jb) && cJSON_IsObject(ja));
        FUZZ_CHECK(cJSON_GetArraySize(jp) == cJSON_GetArraySize(jb));
        for (const cJSON *k = jb->child; k != NULL; k = k->next) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(jp, k->string);
            const cJSON *av = cJSON_GetObjectItemCaseSensitive(ja, k->string);
            FUZZ_CHECK(v != NULL);
            FUZZ_CHECK(av != NULL ? cJSON_Compare(v, av, true) : cJSON_IsNull(v));
        }
        cJSON_Delete(ja);
        cJSON_Delete(jb);
        cJSON_Delete(jp);
        bool same2 = false;
        FUZZ_CHECK(fsa_model_same_values(a, proj, b, &same2) == FSA_OK);
    }
    fsa_model_free(proj);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    char *buf = fuzz_strndup(data + 1, size - 1);
    const char *nul = memchr(data + 1, '\0', size - 1);
    const char *target = NULL, *patch = buf;
    if (nul != NULL) {
        target = buf;
        patch = buf + (nul - (const char *)(data + 1)) + 1;
    }
    switch (mode % 4) {
    case 0: check_merge(target, patch); break;
    case 1: check_merge_op(target, patch); break;
    case 2: check_append(target, patch, (int64_t)((mode >> 2) % 8)); break;
    default: check_compare(target, patch); break;
    }
    fsa_free(buf);
    return 0;
}
