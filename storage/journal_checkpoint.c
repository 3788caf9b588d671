/* fieldsync: the checkpoint workflow: a checkpoint's set and its tour's touch as one group. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/journal_internal.h"

fsa_status_t fsa_journal_checkpoint_update(fsa_journal_t *j, const char *child_id,
                                           const char *fields_json, const fsa_fence_t *fence,
                                           fsa_rec_t *rec)
{
    if (rec != NULL)
        memset(rec, 0, sizeof *rec);
    if (j == NULL || child_id == NULL || fields_json == NULL || strlen(child_id) >= FSA_ID_BYTES) {
        rec_error(rec, "checkpoint update needs a checkpoint id and fields");
        return FSA_EINVAL;
    }
    /* Reading the parent outside the write transaction is safe: parent_id is set at creation
     * and changed only by a set on the child, which this group's own set would conflict with. */
    char *fields = NULL;
    fsa_status_t s = fsa_journal_get(j, FSA_TYPE_JOBNEED, child_id, &fields, NULL, NULL);
    if (s == FSA_ENOTFOUND)
        rec_error(rec, "checkpoint %s does not exist in this journal", child_id);
    if (s != FSA_OK)
        return s;
    char *parent = NULL;
    s = fsa_model_get_field(fields, "parent_id", &parent);
    fsa_model_free(fields);
    if (s == FSA_ENOMEM)
        return s; /* not "no parent": nothing is known of the parent */
    /* parent is JSON text: a quoted id, or null. */
    char parent_id[FSA_ID_BYTES] = "";
    size_t plen = parent != NULL ? strlen(parent) : 0;
    if (s == FSA_OK && plen >= 3 && parent[0] == '"' && plen - 2 < sizeof parent_id) {
        memcpy(parent_id, parent + 1, plen - 2);
        parent_id[plen - 2] = '\0';
    }
    fsa_model_free(parent);
    if (parent_id[0] == '\0' || !fsa_model_id_valid(parent_id)) {
        rec_error(rec, "jobneed %s is not a checkpoint: it has no parent tour", child_id);
        return FSA_EINVAL;
    }
    char touch[FSA_ID_BYTES + 96];
    fsa_wall_t at;
    s = now_checked(j, &at);
    if (s != FSA_OK)
        return s;
    snprintf(touch, sizeof touch, "{\"last_checkpoint\":\"%s\",\"last_checkpoint_at\":%" PRId64 "}",
             child_id, at.ms);
    fsa_op_t ops[2] = {
        {.kind = FSA_OP_SET, .type = FSA_TYPE_JOBNEED, .json = (char *)(uintptr_t)fields_json},
        {.kind = FSA_OP_MERGE, .type = FSA_TYPE_JOBNEED, .json = touch},
    };
    memcpy(ops[0].id, child_id, strlen(child_id) + 1);
    memcpy(ops[1].id, parent_id, strlen(parent_id) + 1);
    memcpy(ops[1].field, "other_info", sizeof "other_info");
    return record_ops(j, ops, 2, true, fence, rec);
}
