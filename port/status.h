/* fieldsync: the one project-wide status enum, and its human-readable names. */
#ifndef FSA_PORT_STATUS_H
#define FSA_PORT_STATUS_H

/*
 * Values are frozen: a new status is appended before FSA__STATUS_COUNT, an old one is
 * never renumbered or reused. Detail (errno, SQLite code, HTTP status, a message) lives in a
 * side field of whatever context returned the status, never in the number.
 */
typedef enum fsa_status {
    FSA_OK = 0,
    FSA_EINVAL = 1,        /* an argument or input is malformed */
    FSA_ENOMEM = 2,        /* an allocation failed */
    FSA_EIO = 3,           /* the OS or SQLite failed to read or write */
    FSA_ETIMEOUT = 4,      /* a wait ran out */
    FSA_ENOTFOUND = 5,     /* the named thing does not exist */
    FSA_EEXISTS = 6,       /* the named thing exists already */
    FSA_ETOOLARGE = 7,     /* a bounded buffer, field or batch would exceed its maximum */
    FSA_ETRANSITION = 8,   /* a status transition the status machine does not allow */
    FSA_EFULL = 9,         /* the journal reached its disk budget */
    FSA_EFENCED = 10,      /* a write carried a fencing token older than the latest issued */
    FSA_ELOCKTIMEOUT = 11, /* a named lock could not be acquired in its wait time */
    FSA_ESCHEMA = 12,      /* a journal from a newer, unknown schema version */
    FSA_ECORRUPT = 13,     /* a journal failed its integrity check */
    FSA_EBUSY = 14,        /* the resource is held by someone else (no waiting asked) */
    FSA_ENET = 15,         /* the network failed: resolve, connect, reset, timeout */
    FSA_EAUTH = 16,        /* the server refused our credentials */
    FSA_ESKEW = 17,        /* the server says our clock is off */
    FSA_EPROTO = 18,       /* the peer broke the protocol (malformed answer) */
    FSA_EREJECTED = 19,    /* the server rejected an op for good */
    FSA_ECONFLICT = 20,    /* an op's precondition failed */
    FSA_EPERM = 21,        /* permissions are wrong (e.g. a secret file readable by others) */
    FSA_EUNSUPPORTED = 22, /* the operation is not supported here */
    FSA_ELOST = 23,        /* a lock's lease expired while it was held */
    FSA_EEXHAUSTED = 24,   /* a retry policy ran out of tries */
    FSA_ETLS = 25,         /* TLS failed: certificate not trusted, pin mismatch, handshake */
    FSA_ECLOSED = 26,      /* the handle is closed, or failed to open (libfieldsync) */
    FSA__STATUS_COUNT
} fsa_status_t;

/* The short English name of a status ("journal is full"); never NULL, also for unknown values. */
const char *fsa_status_str(fsa_status_t st);

#if defined(__GNUC__)
#define FSA_MUST_CHECK __attribute__((warn_unused_result))
#define FSA_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define FSA_MUST_CHECK
#define FSA_PRINTF(fmt, args)
#endif

#endif
