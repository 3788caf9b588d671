/* libfieldsync: where an op recorded on this device stands. */
#include "agent/lib/internal.h"

_Static_assert((int)FIELDSYNC_OP_PENDING == (int)FSA_OPSTATE_PENDING &&
                   (int)FIELDSYNC_OP_SENT == (int)FSA_OPSTATE_INFLIGHT &&
                   (int)FIELDSYNC_OP_DONE == (int)FSA_OPSTATE_DONE &&
                   (int)FIELDSYNC_OP_CONFLICT == (int)FSA_OPSTATE_CONFLICT &&
                   (int)FIELDSYNC_OP_REJECTED == (int)FSA_OPSTATE_REJECTED,
               "the public op states are the journal's");

fieldsync_status_t fieldsync_op_state(fieldsync_t *fs, const char *op_id, fieldsync_op_state_t *out)
{
    if (out != NULL)
        *out = FIELDSYNC_OP_PENDING;
    if (!fsl__usable(fs))
        return fs == NULL ? FIELDSYNC_EINVAL : FIELDSYNC_ECLOSED;
    if (op_id == NULL || out == NULL)
        return fsl__fail(fs, FIELDSYNC_EINVAL, "fieldsync_op_state needs an op id and an out");
    fsa_op_state_t s;
    fsa_status_t st = fsa_outbox_op_state(fs->j, op_id, &s);
    if (st == FSA_ENOTFOUND)
        return fsl__fail(fs, FIELDSYNC_ENOTFOUND, "no op %.40s in this journal", op_id);
    if (st != FSA_OK)
        return fsl__fail(fs, fsl__status(st), "cannot read op %.40s: %s", op_id,
                         fsa_status_str(st));
    if (s == FSA_OPSTATE_CONFLICT || s == FSA_OPSTATE_REJECTED) {
        /* The op's row keeps its answer; its conflict says whether that is still open. */
        fsa_conflict_t c;
        st = fsa_conflict_get(fs->j, op_id, &c);
        if (st != FSA_OK && st != FSA_ENOTFOUND)
            return fsl__fail(fs, fsl__status(st), "cannot read the conflict of op %.40s: %s", op_id,
                             fsa_status_str(st));
        bool settled = st == FSA_OK && c.resolution != FSA_RESOLVED_NONE;
        fsa_conflict_clear(&c);
        if (settled) {
            *out = FIELDSYNC_OP_RESOLVED;
            return fsl__ok(fs);
        }
    }
    *out = (fieldsync_op_state_t)s;
    return fsl__ok(fs);
}
