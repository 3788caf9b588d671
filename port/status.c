/* fieldsync: names of the project-wide status codes. */
#include <stddef.h>

#include "port/status.h"

static const char *const names[FSA__STATUS_COUNT] = {
    [FSA_OK] = "ok",
    [FSA_EINVAL] = "invalid argument",
    [FSA_ENOMEM] = "out of memory",
    [FSA_EIO] = "input/output error",
    [FSA_ETIMEOUT] = "timed out",
    [FSA_ENOTFOUND] = "not found",
    [FSA_EEXISTS] = "already exists",
    [FSA_ETOOLARGE] = "too large",
    [FSA_ETRANSITION] = "invalid status transition",
    [FSA_EFULL] = "journal is full",
    [FSA_EFENCED] = "fenced: a newer lock token was issued",
    [FSA_ELOCKTIMEOUT] = "lock wait timed out",
    [FSA_ESCHEMA] = "journal schema is newer than this program",
    [FSA_ECORRUPT] = "journal is corrupt",
    [FSA_EBUSY] = "busy",
    [FSA_ENET] = "network error",
    [FSA_EAUTH] = "authentication refused",
    [FSA_ESKEW] = "clock skew",
    [FSA_EPROTO] = "protocol error",
    [FSA_EREJECTED] = "rejected by the server",
    [FSA_ECONFLICT] = "conflict",
    [FSA_EPERM] = "permission problem",
    [FSA_EUNSUPPORTED] = "not supported",
    [FSA_ELOST] = "lock lease lost",
    [FSA_EEXHAUSTED] = "retries exhausted",
    [FSA_ETLS] = "TLS verification failed",
    [FSA_ECLOSED] = "handle is closed",
};

const char *fsa_status_str(fsa_status_t st)
{
    if ((unsigned)st >= FSA__STATUS_COUNT || names[st] == NULL)
        return "unknown status";
    return names[st];
}
