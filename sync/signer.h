/* fieldsync: request signing (PROTOCOL.md section 5): HMAC-SHA256 over the canonical request. */
#ifndef FSA_SYNC_SIGNER_H
#define FSA_SYNC_SIGNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port/limits.h"
#include "port/port.h"
#include "port/status.h"

/*
 * The only module that touches mbedTLS. The canonical string signed by a request is
 *
 *   METHOD "\n" PATH_AND_QUERY "\n" TIMESTAMP "\n" NONCE "\n" hex(SHA256(body))
 *
 * and X-Signature is hex(HMAC-SHA256(secret, canonical)), lower-case. All hex this module writes
 * is lower-case; all hex it reads may be either case. Secrets live only in fsa_signer_key_t, which
 * the caller wipes with fsa_signer_key_wipe() when done (the wipe cannot be optimised away).
 */

#define FSA_SIGNER_HEX_BYTES 65 /* 64 hex chars of a SHA-256 / HMAC-SHA256 + NUL */
#define FSA_SIGNER_NONCE_BYTES (FSA_LIMIT_NONCE_HEX + 1)

/* A device secret: 32 raw bytes. Caller-owned; wipe it with fsa_signer_key_wipe(). */
typedef struct fsa_signer_key {
    unsigned char bytes[FSA_LIMIT_SECRET_BYTES];
} fsa_signer_key_t;

/*
 * Parses a secret written as exactly 64 hex chars (either case; surrounding whitespace is not
 * accepted) into *out. hex need not be NUL terminated: len is its length.
 * Returns FSA_OK, FSA_EINVAL (NULL argument, wrong length, a non-hex char). On every failure *out
 * is wiped (all zero), so no half-parsed secret is left behind.
 */
fsa_status_t fsa_signer_key_parse(const char *hex, size_t len,
                                  fsa_signer_key_t *out) FSA_MUST_CHECK;

/* Wipes the key (mbedtls_platform_zeroize). NULL is accepted. */
void fsa_signer_key_wipe(fsa_signer_key_t *key);

/*
 * Writes hex(SHA256(data[0..len))) into out (64 hex chars + NUL). data may be NULL when len is 0.
 * Returns FSA_OK or FSA_EINVAL (out NULL, or data NULL with len > 0; out is then "" if not NULL).
 */
fsa_status_t fsa_signer_sha256_hex(const void *data, size_t len,
                                   char out[FSA_SIGNER_HEX_BYTES]) FSA_MUST_CHECK;

/*
 * For tests: SHA-256 of data[0..len) into digest. accel false: mbedTLS's; true: the x86 SHA-NI
 * code, or FSA_EUNSUPPORTED when the CPU or the build has none. fsa_signer_sha256_hex() and the
 * signatures use the SHA-NI code exactly when fsa__signer_sha256_accel() says it is there.
 */
bool fsa__signer_sha256_accel(void);
fsa_status_t fsa__signer_sha256(const void *data, size_t len, bool accel,
                                unsigned char digest[32]) FSA_MUST_CHECK;

/*
 * Computes X-Signature for one request into out (64 hex chars + NUL).
 *   method:          "GET", "POST"
 *   path_and_query:  the request target exactly as sent ("/v1/devices/d1/changes?since=x&limit=5")
 *   timestamp:       the X-Timestamp header value exactly as sent (decimal unix ms)
 *   nonce:           the X-Nonce header value exactly as sent
 *   body, body_len:  the body bytes exactly as sent (compressed if sent compressed); body may be
 *                    NULL when body_len is 0
 * None of the strings may contain '\n' (it would make the canonical string ambiguous).
 * Returns FSA_OK; FSA_EINVAL (a NULL argument or a '\n' in a string; out is then "" if not NULL);
 * FSA_ENOMEM or FSA_EIO if mbedTLS fails (out is then "").
 */
fsa_status_t fsa_signer_sign(const fsa_signer_key_t *key, const char *method,
                             const char *path_and_query, const char *timestamp, const char *nonce,
                             const void *body, size_t body_len,
                             char out[FSA_SIGNER_HEX_BYTES]) FSA_MUST_CHECK;

/*
 * Verifies a received X-Signature (hex, either case) against the request: computes the expected
 * signature as fsa_signer_sign() does and compares in constant time.
 * Returns FSA_OK when it matches; FSA_EAUTH when it does not (including a signature of the wrong
 * length or with non-hex chars); FSA_EINVAL for a NULL argument or a '\n' in a string; FSA_ENOMEM
 * or FSA_EIO if mbedTLS fails.
 */
fsa_status_t fsa_signer_verify(const fsa_signer_key_t *key, const char *method,
                               const char *path_and_query, const char *timestamp, const char *nonce,
                               const void *body, size_t body_len,
                               const char *signature_hex) FSA_MUST_CHECK;

/* Compares a[0..n) and b[0..n) in time that depends only on n. True when equal. */
bool fsa_signer_equal(const void *a, const void *b, size_t n);

/* Writes a fresh X-Nonce (FSA_LIMIT_NONCE_HEX hex chars from 16 random bytes of the port's random
 * source, + NUL) into out. Returns FSA_OK, FSA_EINVAL (NULL argument), or the random source's
 * error; out is "" on failure. */
fsa_status_t fsa_signer_nonce(const fsa_port_t *port,
                              char out[FSA_SIGNER_NONCE_BYTES]) FSA_MUST_CHECK;

/* Wipes n bytes at p in a way the compiler cannot remove (for buffers that held secrets). */
void fsa_signer_wipe(void *p, size_t n);

#endif
