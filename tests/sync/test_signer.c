/* fieldsync tests: sync/signer (PROTOCOL.md section 5 signatures, constant-time compare, keys). */
#include <string.h>

#include "sync/signer.h"
#include "tests/test_util.h"

/*
 * The expected values below were computed independently with OpenSSL on the command line:
 *   KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
 *   printf '%s' '{"batch_id":"b1","ops":[]}' | openssl dgst -sha256 -r
 *   printf 'POST\n/v1/devices/dev001/ops\n1764090000000\n0123456789abcdef0123456789abcdef\n%s' \
 *       "$BODYHASH" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$KEY -r
 *   printf 'GET\n/v1/devices/dev001/changes?since=v1.0&limit=10\n1764090000000\n'\
 *          'ffffffffffffffffffffffffffffffff\n%s' "$EMPTYHASH" | openssl dgst ... (same)
 */
#define KEY_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define BODY "{\"batch_id\":\"b1\",\"ops\":[]}"
#define BODY_SHA "c2bb1951159588b7fdb1470051672941fdaf0ffdd51faa812b5e617ccb868eaa"
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define POST_SIG "be2d964896152bdd9b3fe5d5c72e46d041e9ec417b3bf4e6b713da592e41c285"
#define GET_SIG "574bc266b9ce59f6a380cc7f4a950bd420ee16a5e7824da31972c6a8b379131d"
#define NONCE1 "0123456789abcdef0123456789abcdef"
#define NONCE2 "ffffffffffffffffffffffffffffffff"
#define TS "1764090000000"
#define POST_PATH "/v1/devices/dev001/ops"
#define GET_PATH "/v1/devices/dev001/changes?since=v1.0&limit=10"

static fsa_signer_key_t test_key(void)
{
    fsa_signer_key_t k;
    assert_fsa_ok(fsa_signer_key_parse(KEY_HEX, strlen(KEY_HEX), &k));
    return k;
}

static void test_fsa_signer_key_parse__valid(void **state)
{
    (void)state;
    fsa_signer_key_t k = test_key();
    for (int i = 0; i < 32; i++)
        assert_int_equal(k.bytes[i], i);
    /* Upper case is accepted too. */
    const char *upper = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";
    fsa_signer_key_t k2;
    assert_fsa_ok(fsa_signer_key_parse(upper, strlen(upper), &k2));
    assert_memory_equal(k.bytes, k2.bytes, 32);
    fsa_signer_key_wipe(&k);
    fsa_signer_key_wipe(&k2);
    for (int i = 0; i < 32; i++)
        assert_int_equal(k.bytes[i], 0);
}

static void test_fsa_signer_key_parse__invalid(void **state)
{
    (void)state;
    fsa_signer_key_t k;
    memset(&k, 0xaa, sizeof k);
    assert_int_equal(fsa_signer_key_parse(KEY_HEX, 63, &k), FSA_EINVAL);
    for (int i = 0; i < 32; i++)
        assert_int_equal(k.bytes[i], 0);
    char bad[65];
    memcpy(bad, KEY_HEX, 65);
    bad[40] = 'g';
    memset(&k, 0xaa, sizeof k);
    assert_int_equal(fsa_signer_key_parse(bad, 64, &k), FSA_EINVAL);
    for (int i = 0; i < 32; i++)
        assert_int_equal(k.bytes[i], 0); /* no half-parsed secret left */
    assert_int_equal(fsa_signer_key_parse(NULL, 64, &k), FSA_EINVAL);
    assert_int_equal(fsa_signer_key_parse(KEY_HEX, 64, NULL), FSA_EINVAL);
    const char *longer = KEY_HEX "00";
    assert_int_equal(fsa_signer_key_parse(longer, strlen(longer), &k), FSA_EINVAL);
    fsa_signer_key_wipe(NULL);
}

static void test_fsa_signer_sha256_hex__known(void **state)
{
    (void)state;
    char out[FSA_SIGNER_HEX_BYTES];
    assert_fsa_ok(fsa_signer_sha256_hex(BODY, strlen(BODY), out));
    assert_string_equal(out, BODY_SHA);
    assert_fsa_ok(fsa_signer_sha256_hex(NULL, 0, out));
    assert_string_equal(out, EMPTY_SHA);
    assert_int_equal(fsa_signer_sha256_hex(NULL, 3, out), FSA_EINVAL);
    assert_string_equal(out, "");
    assert_int_equal(fsa_signer_sha256_hex("x", 1, NULL), FSA_EINVAL);
}

/* The SHA-NI code (where the CPU has it) against mbedTLS: every length from 0 to 1,100 bytes
 * (every tail and padding case, one to eighteen blocks) and large buffers, of pseudo-random bytes;
 * and the FIPS 180-4 two-block example. Without SHA-NI the accelerated call must say so. */
static void test_fsa_signer_sha256__accel_matches_mbedtls(void **state)
{
    (void)state;
    unsigned char a[32], b[32];
    if (!fsa__signer_sha256_accel()) {
        assert_int_equal(fsa__signer_sha256("abc", 3, true, a), FSA_EUNSUPPORTED);
        skip();
    }
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    static const unsigned char two_sha[32] = {0x24, 0x8d, 0x6a, 0x61, 0xd2, 0x06, 0x38, 0xb8,
                                              0xe5, 0xc0, 0x26, 0x93, 0x0c, 0x3e, 0x60, 0x39,
                                              0xa3, 0x3c, 0xe4, 0x59, 0x64, 0xff, 0x21, 0x67,
                                              0xf6, 0xec, 0xed, 0xd4, 0x19, 0xdb, 0x06, 0xc1};
    assert_fsa_ok(fsa__signer_sha256(two, strlen(two), true, a));
    assert_memory_equal(a, two_sha, 32);
    size_t cap = 3u << 20;
    unsigned char *buf = test_malloc(cap);
    assert_non_null(buf);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < cap; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (unsigned char)x;
    }
    for (size_t len = 0; len <= 1100; len++) {
        const unsigned char *p = buf + (len * 7) % 61; /* unaligned starts too */
        assert_fsa_ok(fsa__signer_sha256(p, len, false, a));
        assert_fsa_ok(fsa__signer_sha256(p, len, true, b));
        assert_memory_equal(a, b, 32);
    }
    const size_t big[] = {65535, 65536, 110001, 1u << 20, cap - 3};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        assert_fsa_ok(fsa__signer_sha256(buf + 3, big[i], false, a));
        assert_fsa_ok(fsa__signer_sha256(buf + 3, big[i], true, b));
        assert_memory_equal(a, b, 32);
    }
    test_free(buf);
}

static void test_fsa_signer_sign__known_vectors(void **state)
{
    (void)state;
    fsa_signer_key_t k = test_key();
    char sig[FSA_SIGNER_HEX_BYTES];
    assert_fsa_ok(fsa_signer_sign(&k, "POST", POST_PATH, TS, NONCE1, BODY, strlen(BODY), sig));
    assert_string_equal(sig, POST_SIG);
    assert_fsa_ok(fsa_signer_sign(&k, "GET", GET_PATH, TS, NONCE2, NULL, 0, sig));
    assert_string_equal(sig, GET_SIG);
    fsa_signer_key_wipe(&k);
}

static void test_fsa_signer_sign__invalid_args(void **state)
{
    (void)state;
    fsa_signer_key_t k = test_key();
    char sig[FSA_SIGNER_HEX_BYTES];
    assert_int_equal(fsa_signer_sign(NULL, "GET", "/", TS, NONCE1, NULL, 0, sig), FSA_EINVAL);
    assert_string_equal(sig, "");
    assert_int_equal(fsa_signer_sign(&k, NULL, "/", TS, NONCE1, NULL, 0, sig), FSA_EINVAL);
    assert_int_equal(fsa_signer_sign(&k, "GET", NULL, TS, NONCE1, NULL, 0, sig), FSA_EINVAL);
    assert_int_equal(fsa_signer_sign(&k, "GET", "/", NULL, NONCE1, NULL, 0, sig), FSA_EINVAL);
    assert_int_equal(fsa_signer_sign(&k, "GET", "/", TS, NULL, NULL, 0, sig), FSA_EINVAL);
    assert_int_equal(fsa_signer_sign(&k, "GET", "/", TS, NONCE1, NULL, 5, sig), FSA_EINVAL);
    /* A newline would let two different requests share one canonical string. */
    assert_int_equal(fsa_signer_sign(&k, "GET", "/a\n", TS, NONCE1, NULL, 0, sig), FSA_EINVAL);
    assert_int_equal(fsa_signer_sign(&k, "GET", "/", "1\n2", NONCE1, NULL, 0, sig), FSA_EINVAL);
    assert_int_equal(fsa_signer_sign(&k, "GET", "/", TS, NONCE1, NULL, 0, NULL), FSA_EINVAL);
    fsa_signer_key_wipe(&k);
}

static void test_fsa_signer_verify__match_and_mismatch(void **state)
{
    (void)state;
    fsa_signer_key_t k = test_key();
    assert_fsa_ok(
        fsa_signer_verify(&k, "POST", POST_PATH, TS, NONCE1, BODY, strlen(BODY), POST_SIG));
    /* Upper-case hex is the same signature. */
    char upper[FSA_SIGNER_HEX_BYTES];
    for (size_t i = 0; i < 65; i++)
        upper[i] =
            (char)((POST_SIG[i] >= 'a' && POST_SIG[i] <= 'f') ? POST_SIG[i] - 32 : POST_SIG[i]);
    assert_fsa_ok(fsa_signer_verify(&k, "POST", POST_PATH, TS, NONCE1, BODY, strlen(BODY), upper));
    /* Any change to any signed part breaks it. */
    assert_int_equal(
        fsa_signer_verify(&k, "GET", POST_PATH, TS, NONCE1, BODY, strlen(BODY), POST_SIG),
        FSA_EAUTH);
    assert_int_equal(fsa_signer_verify(&k, "POST", "/v1/devices/dev002/ops", TS, NONCE1, BODY,
                                       strlen(BODY), POST_SIG),
                     FSA_EAUTH);
    assert_int_equal(fsa_signer_verify(&k, "POST", POST_PATH, "1764090000001", NONCE1, BODY,
                                       strlen(BODY), POST_SIG),
                     FSA_EAUTH);
    assert_int_equal(
        fsa_signer_verify(&k, "POST", POST_PATH, TS, NONCE2, BODY, strlen(BODY), POST_SIG),
        FSA_EAUTH);
    assert_int_equal(
        fsa_signer_verify(&k, "POST", POST_PATH, TS, NONCE1, BODY, strlen(BODY) - 1, POST_SIG),
        FSA_EAUTH);
    fsa_signer_key_t other = k;
    other.bytes[31] ^= 1;
    assert_int_equal(
        fsa_signer_verify(&other, "POST", POST_PATH, TS, NONCE1, BODY, strlen(BODY), POST_SIG),
        FSA_EAUTH);
    /* Malformed signatures: wrong length, non-hex. */
    assert_int_equal(fsa_signer_verify(&k, "POST", POST_PATH, TS, NONCE1, BODY, strlen(BODY), ""),
                     FSA_EAUTH);
    assert_int_equal(
        fsa_signer_verify(&k, "POST", POST_PATH, TS, NONCE1, BODY, strlen(BODY), POST_SIG "0"),
        FSA_EAUTH);
    char bad[FSA_SIGNER_HEX_BYTES];
    memcpy(bad, POST_SIG, sizeof bad);
    bad[10] = 'z';
    assert_int_equal(fsa_signer_verify(&k, "POST", POST_PATH, TS, NONCE1, BODY, strlen(BODY), bad),
                     FSA_EAUTH);
    assert_int_equal(fsa_signer_verify(&k, "POST", POST_PATH, TS, NONCE1, BODY, strlen(BODY), NULL),
                     FSA_EINVAL);
    fsa_signer_key_wipe(&k);
    fsa_signer_key_wipe(&other);
}

static void test_fsa_signer_equal__cases(void **state)
{
    (void)state;
    assert_true(fsa_signer_equal("abc", "abc", 3));
    assert_false(fsa_signer_equal("abc", "abd", 3));
    assert_false(fsa_signer_equal("xbc", "abc", 3));
    assert_true(fsa_signer_equal("a", "b", 0));
}

static void test_fsa_signer_nonce__fresh_hex(void **state)
{
    (void)state;
    char a[FSA_SIGNER_NONCE_BYTES];
    char b[FSA_SIGNER_NONCE_BYTES];
    assert_fsa_ok(fsa_signer_nonce(fsa_port_posix(), a));
    assert_fsa_ok(fsa_signer_nonce(fsa_port_posix(), b));
    assert_int_equal(strlen(a), FSA_LIMIT_NONCE_HEX);
    assert_int_equal(strspn(a, "0123456789abcdef"), FSA_LIMIT_NONCE_HEX);
    assert_string_not_equal(a, b);
    assert_int_equal(fsa_signer_nonce(NULL, a), FSA_EINVAL);
    assert_string_equal(a, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_signer_key_parse__valid),
        cmocka_unit_test(test_fsa_signer_key_parse__invalid),
        cmocka_unit_test(test_fsa_signer_sha256_hex__known),
        cmocka_unit_test(test_fsa_signer_sha256__accel_matches_mbedtls),
        cmocka_unit_test(test_fsa_signer_sign__known_vectors),
        cmocka_unit_test(test_fsa_signer_sign__invalid_args),
        cmocka_unit_test(test_fsa_signer_verify__match_and_mismatch),
        cmocka_unit_test(test_fsa_signer_equal__cases),
        cmocka_unit_test(test_fsa_signer_nonce__fresh_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
