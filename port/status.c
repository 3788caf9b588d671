/* fieldsync: names of the project-wide status codes. */
#include <stddef.h>

#include "port/status.h"

#define STATUS_NAMES(X)                                                                            \
    X(FSA_OK, "ok")                                                                                \
    X(FSA_EINVAL, "invalid argument")                                                              \
    X(FSA_ENOMEM, "out of memory")                                                                 \
    X(FSA_EIO, "input/output error")                                                               \
    X(FSA_ETIMEOUT, "timed out")                                                                   \
    X(FSA_ENOTFOUND, "not found")                                                                  \
    X(FSA_EEXISTS, "already exists")                                                               \
    X(FSA_ETOOLARGE, "too large")                                                                  \
    X(FSA_ETRANSITION, "invalid status transition")                                                \
    X(FSA_EFULL, "journal is full")                                                                \
    X(FSA_EFENCED, "fenced: a newer lock token was issued")                                        \
    X(FSA_ELOCKTIMEOUT, "lock wait timed out")                                                     \
    X(FSA_ESCHEMA, "journal schema is newer than this program")                                    \
    X(FSA_ECORRUPT, "journal is corrupt")                                                          \
    X(FSA_EBUSY, "busy")                                                                           \
    X(FSA_ENET, "network error")                                                                   \
    X(FSA_EAUTH, "authentication refused")                                                         \
    X(FSA_ESKEW, "clock skew")                                                                     \
    X(FSA_EPROTO, "protocol error")                                                                \
    X(FSA_EREJECTED, "rejected by the server")                                                     \
    X(FSA_ECONFLICT, "conflict")                                                                   \
    X(FSA_EPERM, "permission problem")                                                             \
    X(FSA_EUNSUPPORTED, "not supported")                                                           \
    X(FSA_ELOST, "lock lease lost")                                                                \
    X(FSA_EEXHAUSTED, "retries exhausted")                                                         \
    X(FSA_ETLS, "TLS verification failed")                                                         \
    X(FSA_ECLOSED, "handle is closed")

/*
 * The names as one block of text (a struct of char arrays: no padding between them) and each
 * one's offset into it, plus one so that 0 says "no name". A table of pointers costs, in a
 * position-independent program, a relocation per name (24 bytes on aarch64, beside the pointer's
 * 8): this table is the largest the device binary had.
 */
#define AS_MEMBER(code, text) char n_##code[sizeof(text)];
#define AS_TEXT(code, text) text,
#define AS_OFFSET(code, text)                                                                      \
    [code] = (unsigned short)(offsetof(struct status_names, n_##code) + 1),

static const struct status_names {
    STATUS_NAMES(AS_MEMBER)
} names = {STATUS_NAMES(AS_TEXT)};

static const unsigned short offsets[FSA__STATUS_COUNT] = {STATUS_NAMES(AS_OFFSET)};

const char *fsa_status_str(fsa_status_t st)
{
    if ((unsigned)st >= FSA__STATUS_COUNT || offsets[st] == 0)
        return "unknown status";
    return (const char *)&names + (offsets[st] - 1);
}
