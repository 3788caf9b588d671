/* fieldsync: the checkpoint workflow: a checkpoint's set and its tour's touch as one group. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/journal_internal.h"

/* The group being recorded: the checkpoint's set and its tour's touch, whose tour and time
 * checkpoint_fill finds inside the transaction. */
typedef struct checkpoint_group {
    const char *child_id;
    fsa_op_t ops[2];
    char touch[FSA_ID_BYTES + 96];
} checkpoint_group_t;

/*
 * Reads the checkpoint's parent tour from its local view inside the record's transaction (or from
 * the update, when it moves the checkpoint to another tour), and aims the touch at it. Read before
 * the transaction, a parent_id changed in between (a set of another thread or process: local sets
 * do not conflict with each other, a pulled state) sent the touch to the tour the checkpoint had
 * left.
 */
static fsa_status_t checkpoint_fill(fsa_journal_t *j, fsa_wall_t at, void *arg, fsa_rec_t *rec)
{
    checkpoint_group_t *g = arg;
    entity_t e;
    fsa_status_t s = entity_load(j, FSA_TYPE_JOBNEED, g->child_id, &e);
    if (s != FSA_OK)
        return s;
    if (!e.exists) {
        entity_clear(&e);
        rec_error(rec, "checkpoint %s does not exist in this journal", g->child_id);
        return FSA_ENOTFOUND;
    }
    /* The tour the checkpoint has after the update: the one the update sets, else its own. */
    char *parent = NULL;
    s = fsa_model_get_field(g->ops[0].json, "parent_id", &parent);
    if (s != FSA_OK && s != FSA_ENOMEM)
        s = fsa_model_get_field(e.local_fields, "parent_id", &parent);
    entity_clear(&e);
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
        rec_error(rec, "jobneed %s is not a checkpoint: it has no parent tour", g->child_id);
        return FSA_EINVAL;
    }
    snprintf(g->touch, sizeof g->touch,
             "{\"last_checkpoint\":\"%s\",\"last_checkpoint_at\":%" PRId64 "}", g->child_id, at.ms);
    memcpy(g->ops[1].id, parent_id, strlen(parent_id) + 1);
    return FSA_OK;
}

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
    checkpoint_group_t g = {
        .child_id = child_id,
        .ops = {{.kind = FSA_OP_SET,
                 .type = FSA_TYPE_JOBNEED,
                 .json = (char *)(uintptr_t)fields_json},
                {.kind = FSA_OP_MERGE, .type = FSA_TYPE_JOBNEED}},
    };
    g.ops[1].json = g.touch;
    memcpy(g.ops[0].id, child_id, strlen(child_id) + 1);
    memcpy(g.ops[1].field, "other_info", sizeof "other_info");
    return fsa__jn_record_filled(j, g.ops, 2, true, fence, checkpoint_fill, &g, rec);
}
