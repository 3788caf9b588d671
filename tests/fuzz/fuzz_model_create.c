/* fieldsync fuzz target: a create's two paths in storage/model.c give the same answer. */
#include <cjson/cJSON.h>

#include "storage/model.h"
#include "tests/fuzz/fuzz_util.h"

/*
 * Input: one mode byte, then a create's fields text. mode % 3 is the type (attendance, jobneed,
 * ticket); bit 2 asks for the server's flag. fsa_model_apply() writes a create it can straight
 * from its text (create_fast) and leaves the rest to the tree path; fsa_model_entity_apply()
 * always takes the tree path (it keeps the tree). Both must answer alike: the status, and the
 * text on FSA_OK, else the error's code and message.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const fsa_type_t types[] = {FSA_TYPE_ATTENDANCE, FSA_TYPE_JOBNEED, FSA_TYPE_TICKET};
    if (size < 1)
        return 0;
    char *fields = fuzz_strndup(data + 1, size - 1);
    fsa_op_t op;
    memset(&op, 0, sizeof op);
    op.kind = FSA_OP_CREATE;
    op.type = types[data[0] % 3];
    snprintf(op.id, sizeof op.id, "E1");
    op.json = fields;
    unsigned flags = (data[0] & 4) ? FSA_APPLY_BY_SERVER : 0u;
    char *fast = NULL, *tree = NULL;
    fsa_model_err_t ef, et;
    fsa_status_t sf = fsa_model_apply(&op, NULL, 0, flags, &fast, &ef);
    fsa_model_entity_t *e = fsa_model_entity_new();
    FUZZ_CHECK(e != NULL);
    fsa_status_t st = fsa_model_entity_apply(e, &op, NULL, 0, flags, &tree, &et);
    fsa_model_entity_free(e);
    FUZZ_CHECK(sf == st);
    if (sf == FSA_OK) {
        FUZZ_CHECK(fast != NULL && tree != NULL && strcmp(fast, tree) == 0);
    } else {
        FUZZ_CHECK(strcmp(ef.code, et.code) == 0);
        FUZZ_CHECK(strcmp(ef.message, et.message) == 0);
    }
    fsa_model_free(fast);
    fsa_model_free(tree);
    fsa_free(fields);
    return 0;
}
