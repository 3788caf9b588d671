/* fieldsync: recording: ops validated against the local view and appended to the outbox. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "port/alloc.h"
#include "storage/db.h"
#include "storage/journal.h"
#include "storage/journal_internal.h"
#include "storage/lock_internal.h"

/* ---- recording ---- */

/*
 * A new op's seq is OUTBOX_NEXT_SEQ_SQL (journal_internal.h). No op may take a lower one: it would
 * be below a handle's open_from and skipped by its reads.
 * Its id carries it (schema 6, storage/db.c): a version 8 UUID whose last 40 bits are the seq plus
 * the journal's salt, modulo 2^40, so that the outbox needs no index of op ids. The rest is the
 * clock's ms and 34 random bits, as the version 7 ids of before. Within the journal two ops' ids
 * differ in their seqs. Between devices the salt keeps an id's chance of meeting another's where it
 * was: two ids made in the same ms are the same only if 74 bits are (34 random, and 40 that are
 * random between journals); within a journal restored from a backup, which gives seqs again, the 34
 * random bits and the clock still tell its ids from those it gave before.
 */
static fsa_status_t next_op_id(fsa_journal_t *j, fsa_op_t *op, fsa_rec_t *rec)
{
    fsa_status_t s = fsa__jn_next_seq_locked(j, &op->seq);
    if (s == FSA_OK && op->seq > FSA__OP_SEQ_MAX) {
        rec_error(rec, "journal %s has given all %" PRId64 " op numbers: start a new one", j->path,
                  FSA__OP_SEQ_MAX);
        s = FSA_ETOOLARGE;
    }
    if (s == FSA_OK)
        s = fsa_uuid8(j->port, (uint64_t)op->seq + j->op_id_salt, op->op_id);
    return s;
}

static fsa_status_t outbox_insert(fsa_journal_t *j, const fsa_op_t *op, const char *prior)
{
    sqlite3_stmt *st;
    fsa_status_t s = prep(j,
                          "INSERT INTO outbox(seq,op_id,at_ms,kind,type,id,grp,field,"
                          "base_version,by_n,from_s,to_s,akey,max_len,payload,prior) "
                          "VALUES(?16,?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)",
                          &st);
    if (s != FSA_OK)
        return s;
    fsa__jn_op_bind(st, 1, op);
    if (prior != NULL)
        fsa__db_bind_text(st, 15, prior);
    sqlite3_bind_int64(st, 16, op->seq);
    return step_done(j, st);
}

/*
 * Records one op inside an open transaction: fills its identity and preconditions from the local
 * view, validates and applies it there, appends it to the outbox. op is the caller's scratch copy
 * (its json is borrowed and not freed here).
 */
fsa_status_t fsa__jn_record_one_locked(fsa_journal_t *j, fsa_op_t *op, fsa_wall_t at,
                                       const char *group, fsa_change_reason_t why, fsa_rec_t *rec)
{
    const char *tname = fsa_type_name(op->type);
    if ((unsigned)op->type >= FSA__TYPE_COUNT) {
        rec_error(rec, "unknown entity type %d", (int)op->type);
        return FSA_EINVAL;
    }
    if (!fsa_model_id_valid(op->id)) {
        rec_error(rec, "invalid %s id '%.40s': ids are 1-128 characters of A-Z a-z 0-9 . _ : -",
                  tname, op->id);
        return FSA_EINVAL;
    }
    fsa_status_t s = next_op_id(j, op, rec);
    if (s != FSA_OK)
        return s;
    op->at_ms = at.ms;
    snprintf(op->group, sizeof op->group, "%s", group);

    entity_t e;
    s = entity_load(j, op->type, op->id, &e);
    if (s != FSA_OK)
        return s;
    if (op->kind == FSA_OP_CREATE && e.exists) {
        rec_error(rec, "%s %s already exists", tname, op->id);
        s = FSA_EEXISTS;
        goto out;
    }
    if (op->kind != FSA_OP_CREATE && !e.exists) {
        rec_error(rec, "%s %s does not exist in this journal (create it, or sync to fetch it)",
                  tname, op->id);
        s = FSA_ENOTFOUND;
        goto out;
    }
    if (op->kind == FSA_OP_SET) {
        /* The version the server will have when this op arrives, if every op recorded before
         * it on this entity applies: each applied op bumps the version by one. */
        int64_t pending = 0;
        s = count_pending(j, op->type, op->id, &pending);
        if (s != FSA_OK)
            goto out;
        op->base_version = e.base_version + pending;
    }
    if (op->kind == FSA_OP_TRANSITION) {
        const char *sf = fsa_model_status_field(op->type);
        if (sf == NULL) {
            rec_error(rec, "%s has no status to transition", tname);
            s = FSA_EINVAL;
            goto out;
        }
        snprintf(op->field, sizeof op->field, "%s", sf);
        s = fsa_model_get_status(e.local_fields, op->type, op->from);
        if (s == FSA_ENOMEM)
            goto out;
        if (s != FSA_OK) {
            rec_error(rec, "%s %s has no %s", tname, op->id, sf);
            s = FSA_EINVAL;
            goto out;
        }
    }
    char *next = NULL, *prior = NULL;
    fsa_model_err_t merr = {{0}, {0}};
    s = fsa_model_apply(op, e.local_fields, e.base_version, FSA_APPLY_REPLAY, &next, &merr);
    /* A set keeps the values it replaces: on a conflict the resolver compares them with the
     * server's to tell whether the server changed the same fields (a three-way merge). */
    if (s == FSA_OK && op->kind == FSA_OP_SET) {
        s = fsa_model_project(e.local_fields, op->json, &prior);
        if (s != FSA_OK) {
            fsa_model_free(next);
            rec_error(rec, "cannot record %s %s: %s", tname, op->id, fsa_status_str(s));
            goto out;
        }
    }
    if (s != FSA_OK) {
        if (s == FSA_ECONFLICT) /* the local view moved: same meaning as a failed precondition */
            s = FSA_EINVAL;
        rec_error(rec, "%s", merr.message[0] != '\0' ? merr.message : fsa_status_str(s));
        goto out;
    }
    fsa_free(e.local_fields);
    e.local_fields = next;
    s = entity_store(j, op->type, op->id, &e);
    if (s == FSA_OK)
        s = outbox_insert(j, op, prior);
    if (s == FSA_OK)
        s = log_change(j, op->type, op->id, e.base_version, why, op->op_id);
    fsa_model_free(prior);
out:
    entity_clear(&e);
    return s;
}

static fsa_status_t fence_check(fsa_journal_t *j, const fsa_fence_t *fence, fsa_rec_t *rec)
{
    if (fence == NULL)
        return FSA_OK;
    fsa_status_t s = fsa__lock_fence_check(j->port, j->db, fence);
    if (s == FSA_EFENCED)
        rec_error(rec,
                  "write refused: lock %s was taken over (token %" PRId64
                  " is stale); redo the work under a fresh lock",
                  fence->key != NULL ? fence->key : "?", fence->token);
    return s;
}

fsa_status_t fsa__jn_record_ops(fsa_journal_t *j, const fsa_op_t *ops, size_t n, bool grouped,
                                const fsa_fence_t *fence, fsa_rec_t *rec)
{
    return fsa__jn_record_filled(j, ops, n, grouped, fence, NULL, NULL, rec);
}

fsa_status_t fsa__jn_record_filled(fsa_journal_t *j, const fsa_op_t *ops, size_t n, bool grouped,
                                   const fsa_fence_t *fence, fsa__jn_fill_t fill, void *arg,
                                   fsa_rec_t *rec)
{
    if (rec != NULL)
        memset(rec, 0, sizeof *rec);
    if (j == NULL || ops == NULL || n == 0 || n > FSA_JOURNAL_GROUP_MAX) {
        rec_error(rec, "invalid arguments to a journal write");
        return FSA_EINVAL;
    }
    fsa_status_t s = begin(j);
    if (s != FSA_OK) {
        rec_error(rec, "journal %s is busy or unwritable (%s)", j->path, fsa_status_str(s));
        return s;
    }
    s = fence_check(j, fence, rec);
    char group[FSA_GROUP_BYTES] = "";
    if (s == FSA_OK && grouped)
        s = fsa_uuid4(j->port, group);
    fsa_wall_t at = {0};
    if (s == FSA_OK)
        s = now_locked(j, &at);
    if (s == FSA_OK && fill != NULL)
        s = fill(j, at, arg, rec);
    for (size_t i = 0; s == FSA_OK && i < n; i++) {
        fsa_op_t op = ops[i]; /* shallow: json stays the caller's */
        s = record_one_locked(j, &op, at, group, FSA_CHANGE_RECORDED, rec);
        if (s == FSA_OK && i == 0 && rec != NULL) {
            memcpy(rec->op_id, op.op_id, sizeof rec->op_id);
            rec->seq = op.seq;
        }
    }
    if (s == FSA_OK)
        s = fsa__jn_recording_room(j);
    return finish_record(j, s, rec);
}

static fsa_status_t record_single(fsa_journal_t *j, fsa_op_t *op, const char *id,
                                  const fsa_fence_t *fence, fsa_rec_t *rec)
{
    if (id == NULL || strlen(id) >= sizeof op->id) {
        if (rec != NULL) {
            memset(rec, 0, sizeof *rec);
            rec_error(rec, "missing or overlong entity id");
        }
        return FSA_EINVAL;
    }
    memcpy(op->id, id, strlen(id) + 1);
    return record_ops(j, op, 1, false, fence, rec);
}

static bool copy_name(char *dst, size_t cap, const char *src)
{
    if (src == NULL || strlen(src) >= cap)
        return false;
    memcpy(dst, src, strlen(src) + 1);
    return true;
}

fsa_status_t fsa_journal_create(fsa_journal_t *j, fsa_type_t type, const char *id,
                                const char *fields_json, const fsa_fence_t *fence, fsa_rec_t *rec)
{
    fsa_op_t op = {.kind = FSA_OP_CREATE, .type = type, .json = (char *)(uintptr_t)fields_json};
    if (fields_json == NULL)
        op.json = (char *)(uintptr_t) "{}";
    return record_single(j, &op, id, fence, rec);
}

fsa_status_t fsa_journal_set(fsa_journal_t *j, fsa_type_t type, const char *id,
                             const char *fields_json, const fsa_fence_t *fence, fsa_rec_t *rec)
{
    fsa_op_t op = {.kind = FSA_OP_SET, .type = type, .json = (char *)(uintptr_t)fields_json};
    if (fields_json == NULL) {
        if (rec != NULL)
            rec_error(rec, "set needs fields");
        return FSA_EINVAL;
    }
    return record_single(j, &op, id, fence, rec);
}

fsa_status_t fsa_journal_merge(fsa_journal_t *j, fsa_type_t type, const char *id, const char *field,
                               const char *patch_json, const fsa_fence_t *fence, fsa_rec_t *rec)
{
    fsa_op_t op = {.kind = FSA_OP_MERGE, .type = type, .json = (char *)(uintptr_t)patch_json};
    if (patch_json == NULL || !copy_name(op.field, sizeof op.field, field)) {
        if (rec != NULL)
            rec_error(rec, "merge needs a field name and a patch");
        return FSA_EINVAL;
    }
    return record_single(j, &op, id, fence, rec);
}

fsa_status_t fsa_journal_increment(fsa_journal_t *j, fsa_type_t type, const char *id,
                                   const char *field, int64_t by, const fsa_fence_t *fence,
                                   fsa_rec_t *rec)
{
    fsa_op_t op = {.kind = FSA_OP_INCREMENT, .type = type, .by = by};
    if (!copy_name(op.field, sizeof op.field, field)) {
        if (rec != NULL)
            rec_error(rec, "increment needs a field name");
        return FSA_EINVAL;
    }
    return record_single(j, &op, id, fence, rec);
}

fsa_status_t fsa_journal_transition(fsa_journal_t *j, fsa_type_t type, const char *id,
                                    const char *to, const fsa_fence_t *fence, fsa_rec_t *rec)
{
    fsa_op_t op = {.kind = FSA_OP_TRANSITION, .type = type};
    if (!copy_name(op.to, sizeof op.to, to)) {
        if (rec != NULL)
            rec_error(rec, "transition needs a target status (at most %d characters)",
                      FSA_STATUS_BYTES - 1);
        return FSA_EINVAL;
    }
    return record_single(j, &op, id, fence, rec);
}

fsa_status_t fsa_journal_append(fsa_journal_t *j, fsa_type_t type, const char *id,
                                const char *field, const char *key, const char *item_json,
                                int64_t max_len, const fsa_fence_t *fence, fsa_rec_t *rec)
{
    fsa_op_t op = {.kind = FSA_OP_APPEND,
                   .type = type,
                   .max_len = max_len,
                   .json = (char *)(uintptr_t)item_json};
    if (item_json == NULL || !copy_name(op.field, sizeof op.field, field) ||
        !copy_name(op.key, sizeof op.key, key)) {
        if (rec != NULL)
            rec_error(rec, "append needs a field, a key and an item");
        return FSA_EINVAL;
    }
    return record_single(j, &op, id, fence, rec);
}

fsa_status_t fsa_journal_record_group(fsa_journal_t *j, const fsa_op_t *ops, size_t n,
                                      const fsa_fence_t *fence, fsa_rec_t *rec)
{
    return record_ops(j, ops, n, true, fence, rec);
}
