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

/*
 * SHA-256 with the x86 SHA extensions (SHA-NI) when the CPU has them. mbedTLS 2.28 computes
 * SHA-256 in portable C only (about 48 instructions per byte here); the server hashes every push
 * body (up to 1 MiB) to check its signature, and a device every body it sends, so this was an
 * eighth of the server's instructions on a push. The rounds below are the SHA-NI formulation of
 * FIPS 180-4 (four rounds per sha256rnds2 pair, the message schedule by sha256msg1/msg2); the
 * padding and the length are written here. test_sync_signer compares it with mbedTLS on every
 * length from 0 to 1,100 bytes and on large random buffers. Anything else (other CPUs, other
 * compilers, the ARM device builds) uses mbedTLS as before.
 */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FSA_SHA_NI 1
#include <cpuid.h>
#include <immintrin.h>
#include <stdatomic.h>

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

/* Runs the compression function over n 64-byte blocks. */
__attribute__((target("sha,ssse3,sse4.1"))) static void
sha256_ni_blocks(uint32_t state[8], const unsigned char *p, size_t n)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    /* state a..h into the ABEF / CDGH halves sha256rnds2 works on */
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(const void *)&state[0]),
                                    0xB1); /* CDAB */
    __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(const void *)&state[4]),
                                   0x1B);     /* EFGH */
    __m128i s0 = _mm_alignr_epi8(tmp, s1, 8); /* ABEF */
    s1 = _mm_blend_epi16(s1, tmp, 0xF0);      /* CDGH */
    for (; n > 0; n--, p += 64) {
        __m128i save0 = s0, save1 = s1, m[4];
        for (int g = 0; g < 16; g++) {
            __m128i w;
            if (g < 4) {
                w = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 16 * g)),
                                     bswap);
            } else {
                /* W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four at a time: m[g%4] holds
                 * W[4g-16..], m[(g+1)%4] W[4g-12..], m[(g+2)%4] W[4g-8..], m[(g+3)%4] W[4g-4..] */
                w = _mm_sha256msg1_epu32(m[g & 3], m[(g + 1) & 3]);
                w = _mm_add_epi32(w, _mm_alignr_epi8(m[(g + 3) & 3], m[(g + 2) & 3], 4));
                w = _mm_sha256msg2_epu32(w, m[(g + 3) & 3]);
            }
            m[g & 3] = w;
            __m128i wk =
                _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)(const void *)&sha256_k[4 * g]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, wk);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(wk, 0x0E));
        }
        s0 = _mm_add_epi32(s0, save0);
        s1 = _mm_add_epi32(s1, save1);
    }
    tmp = _mm_shuffle_epi32(s0, 0x1B);   /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);    /* DCHG */
    s0 = _mm_blend_epi16(tmp, s1, 0xF0); /* DCBA */
    s1 = _mm_alignr_epi8(s1, tmp, 8);    /* HGFE */
    _mm_storeu_si128((__m128i *)(void *)&state[0], s0);
    _mm_storeu_si128((__m128i *)(void *)&state[4], s1);
}

/* 1: the CPU has SHA-NI (and the SSSE3 and SSE4.1 the code around it uses); -1: it has not; 0:
 * not asked yet. Asked once (cpuid traps to the hypervisor in a VM); a race asks twice, the same.
 */
static atomic_int sha_ni_state;

static bool sha_ni_present(void)
{
    int known = atomic_load_explicit(&sha_ni_state, memory_order_relaxed);
    if (known == 0) {
        unsigned a = 0, b = 0, c = 0, d = 0;
        bool yes = __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & (1u << 9)) != 0 /* SSSE3 */ &&
                   (c & (1u << 19)) != 0 /* SSE4.1 */;
        yes = yes && __get_cpuid_count(7, 0, &a, &b, &c, &d) != 0 && (b & (1u << 29)) != 0;
        known = yes ? 1 : -1;
        atomic_store_explicit(&sha_ni_state, known, memory_order_relaxed);
    }
    return known > 0;
}

static void sha256_ni(const unsigned char *p, size_t len, unsigned char digest[32])
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    size_t full = len / 64;
    if (full > 0)
        sha256_ni_blocks(h, p, full);
    /* The tail, the 0x80 byte, zeros, and the length in bits (big-endian): one or two blocks. */
    unsigned char last[128];
    size_t rest = len % 64;
    memset(last, 0, sizeof last);
    if (rest > 0)
        memcpy(last, p + full * 64, rest);
    last[rest] = 0x80;
    size_t blocks = rest + 1 + 8 <= 64 ? 1 : 2;
    uint64_t bits = (uint64_t)len * 8u;
    for (int i = 0; i < 8; i++)
        last[blocks * 64 - 1 - (size_t)i] = (unsigned char)(bits >> (8 * i));
    sha256_ni_blocks(h, last, blocks);
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (unsigned char)(h[i] >> 24);
        digest[4 * i + 1] = (unsigned char)(h[i] >> 16);
        digest[4 * i + 2] = (unsigned char)(h[i] >> 8);
        digest[4 * i + 3] = (unsigned char)h[i];
    }
}
#endif

bool fsa__signer_sha256_accel(void)
{
#ifdef FSA_SHA_NI
    return sha_ni_present();
#else
    return false;
#endif
}

fsa_status_t fsa__signer_sha256(const void *data, size_t len, bool accel, unsigned char digest[32])
{
    static const unsigned char empty = 0;
    const unsigned char *p = data != NULL ? data : &empty;
#ifdef FSA_SHA_NI
    if (accel && sha_ni_present()) {
        sha256_ni(p, len, digest);
        return FSA_OK;
    }
#endif
    if (accel)
        return FSA_EUNSUPPORTED;
    return mbedtls_sha256_ret(p, len, digest, 0) == 0 ? FSA_OK : FSA_EIO;
}

fsa_status_t fsa_signer_sha256_hex(const void *data, size_t len, char out[FSA_SIGNER_HEX_BYTES])
{
    if (out == NULL)
        return FSA_EINVAL;
    out[0] = '\0';
    if (data == NULL && len > 0)
        return FSA_EINVAL;
    unsigned char digest[32];
    fsa_status_t st = fsa__signer_sha256(data, len, fsa__signer_sha256_accel(), digest);
    if (st != FSA_OK)
        return st;
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
