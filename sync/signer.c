/* fieldsync: request signing with mbedTLS (HMAC-SHA256, SHA-256, constant-time compare). */
#include "sync/signer.h"

#include <string.h>

#include <mbedtls/md.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

static const char hex_digits[] = "0123456789abcdef";

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[in[i] >> 4];
        out[2 * i + 1] = hex_digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void fsa_signer_wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        mbedtls_platform_zeroize(p, n);
}

void fsa_signer_key_wipe(fsa_signer_key_t *key)
{
    if (key != NULL)
        mbedtls_platform_zeroize(key->bytes, sizeof key->bytes);
}

fsa_status_t fsa_signer_key_parse(const char *hex, size_t len, fsa_signer_key_t *out)
{
    if (out == NULL)
        return FSA_EINVAL;
    fsa_signer_key_wipe(out);
    if (hex == NULL || len != 2 * sizeof out->bytes)
        return FSA_EINVAL;
    for (size_t i = 0; i < sizeof out->bytes; i++) {
        int hi = hex_value(hex[2 * i]);
        int lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            fsa_signer_key_wipe(out);
            return FSA_EINVAL;
        }
        out->bytes[i] = (unsigned char)((hi << 4) | lo);
    }
    return FSA_OK;
}

bool fsa_signer_equal(const void *a, const void *b, size_t n)
{
    /* volatile keeps the compiler from turning the loop into an early-exit memcmp. */
    const volatile unsigned char *pa = a;
    const volatile unsigned char *pb = b;
    unsigned char diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(pa[i] ^ pb[i]);
    return diff == 0;
}

fsa_status_t fsa_signer_sha256_hex(const void *data, size_t len, char out[FSA_SIGNER_HEX_BYTES])
{
    if (out == NULL)
        return FSA_EINVAL;
    out[0] = '\0';
    if (data == NULL && len > 0)
        return FSA_EINVAL;
    unsigned char digest[32];
    static const unsigned char empty = 0;
    if (mbedtls_sha256_ret(data != NULL ? data : &empty, len, digest, 0) != 0)
        return FSA_EIO;
    to_hex(digest, sizeof digest, out);
    return FSA_OK;
}

static bool has_newline(const char *s)
{
    return strchr(s, '\n') != NULL;
}

/* Maps an mbedTLS md error to our status. */
static fsa_status_t md_status(int rc)
{
    if (rc == 0)
        return FSA_OK;
    if (rc == MBEDTLS_ERR_MD_ALLOC_FAILED)
        return FSA_ENOMEM;
    return FSA_EIO;
}

/* Computes the raw HMAC into mac (32 bytes). */
static fsa_status_t compute_mac(const fsa_signer_key_t *key, const char *method,
                                const char *path_and_query, const char *timestamp,
                                const char *nonce, const void *body, size_t body_len,
                                unsigned char mac[32])
{
    char body_hex[FSA_SIGNER_HEX_BYTES];
    fsa_status_t st = fsa_signer_sha256_hex(body, body_len, body_hex);
    if (st != FSA_OK)
        return st;

    const mbedtls_md_info_t *info = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    if (info == NULL)
        return FSA_EIO;
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    int rc = mbedtls_md_setup(&ctx, info, 1);
    if (rc == 0)
        rc = mbedtls_md_hmac_starts(&ctx, key->bytes, sizeof key->bytes);
    const char *parts[] = {method, path_and_query, timestamp, nonce, body_hex};
    for (size_t i = 0; rc == 0 && i < sizeof parts / sizeof parts[0]; i++) {
        rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)parts[i], strlen(parts[i]));
        if (rc == 0 && i + 1 < sizeof parts / sizeof parts[0])
            rc = mbedtls_md_hmac_update(&ctx, (const unsigned char *)"\n", 1);
    }
    if (rc == 0)
        rc = mbedtls_md_hmac_finish(&ctx, mac);
    /* mbedtls_md_free zeroizes the context, which holds the padded key. */
    mbedtls_md_free(&ctx);
    return md_status(rc);
}

static bool args_ok(const fsa_signer_key_t *key, const char *method, const char *path_and_query,
                    const char *timestamp, const char *nonce, const void *body, size_t body_len)
{
    if (key == NULL || method == NULL || path_and_query == NULL || timestamp == NULL ||
        nonce == NULL || (body == NULL && body_len > 0))
        return false;
    return !has_newline(method) && !has_newline(path_and_query) && !has_newline(timestamp) &&
           !has_newline(nonce);
}

fsa_status_t fsa_signer_sign(const fsa_signer_key_t *key, const char *method,
                             const char *path_and_query, const char *timestamp, const char *nonce,
                             const void *body, size_t body_len, char out[FSA_SIGNER_HEX_BYTES])
{
    if (out == NULL)
        return FSA_EINVAL;
    out[0] = '\0';
    if (!args_ok(key, method, path_and_query, timestamp, nonce, body, body_len))
        return FSA_EINVAL;
    unsigned char mac[32];
    fsa_status_t st =
        compute_mac(key, method, path_and_query, timestamp, nonce, body, body_len, mac);
    if (st == FSA_OK)
        to_hex(mac, sizeof mac, out);
    mbedtls_platform_zeroize(mac, sizeof mac);
    return st;
}

fsa_status_t fsa_signer_verify(const fsa_signer_key_t *key, const char *method,
                               const char *path_and_query, const char *timestamp, const char *nonce,
                               const void *body, size_t body_len, const char *signature_hex)
{
    if (signature_hex == NULL ||
        !args_ok(key, method, path_and_query, timestamp, nonce, body, body_len))
        return FSA_EINVAL;
    unsigned char given[32];
    unsigned char expected[32];
    bool well_formed = strlen(signature_hex) == 2 * sizeof given;
    /* Decode the whole length even when a char is bad, so timing does not reveal where. */
    for (size_t i = 0; i < sizeof given; i++) {
        int hi = well_formed ? hex_value(signature_hex[2 * i]) : 0;
        int lo = well_formed ? hex_value(signature_hex[2 * i + 1]) : 0;
        if (hi < 0 || lo < 0)
            well_formed = false;
        given[i] = (unsigned char)(((hi & 15) << 4) | (lo & 15));
    }
    fsa_status_t st =
        compute_mac(key, method, path_and_query, timestamp, nonce, body, body_len, expected);
    if (st == FSA_OK) {
        bool same = fsa_signer_equal(given, expected, sizeof given);
        st = (same && well_formed) ? FSA_OK : FSA_EAUTH;
    }
    mbedtls_platform_zeroize(expected, sizeof expected);
    return st;
}

fsa_status_t fsa_signer_nonce(const fsa_port_t *port, char out[FSA_SIGNER_NONCE_BYTES])
{
    if (out == NULL)
        return FSA_EINVAL;
    out[0] = '\0';
    if (port == NULL || port->random == NULL)
        return FSA_EINVAL;
    unsigned char raw[FSA_LIMIT_NONCE_HEX / 2];
    fsa_status_t st = port->random(port->ctx, raw, sizeof raw);
    if (st != FSA_OK)
        return st;
    to_hex(raw, sizeof raw, out);
    return FSA_OK;
}
