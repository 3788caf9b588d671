/* fieldsync fuzz target: configuration loading: the server's devices file, the agent's secret
 * file, and the agent's transport settings (server URL, pins) as stored by `fieldsync init`. */
#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>
#include <strings.h>

#include <curl/curl.h>

#include "agent/lib/internal.h"
#include "sync/codec.h"
#include "sync/devices.h"
#include "sync/server/request.h"
#include "sync/signer.h"
#include "sync/transport.h"
#include "tests/fuzz/fuzz_util.h"

/*
 * Input: one mode byte, then the text.
 *   mode % 3 == 0  a devices file, loaded as fieldsync-server and fieldsync-sim load it
 *                  (fsa_devices_decode, then each secret parsed): on success the ids are
 *                  valid and strictly sorted, each secret is 64 hex chars and parses; and each
 *                  device so loaded authenticates as itself and as no other device.
 *   mode % 3 == 1  a device secret file's content (fsl__parse_secret): accepted exactly when
 *                  it is 64 hex chars and trailing whitespace; the key is those bytes; wiped when
 *                  refused.
 *   mode % 3 == 2  BASE_URL LF PINS (the journal's "server" and "pins"; bit 2 of the mode byte
 *                  is allow_http; no LF: no pins) into fsa_transport_new(): refused with a message
 *                  or accepted; plain http is accepted only with allow_http or a loopback host.
 */

#define NOW_MS INT64_C(1767225600000)
#define MAX_AUTH_DEVICES 8

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool key_is(const fsa_signer_key_t *key, const char *hex)
{
    for (size_t i = 0; i < FSA_LIMIT_SECRET_BYTES; i++) {
        if (key->bytes[i] != (unsigned char)(hexval(hex[2 * i]) * 16 + hexval(hex[2 * i + 1])))
            return false;
    }
    return true;
}

static bool all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (hexval(s[i]) < 0)
            return false;
    }
    return true;
}

/* A push from signer (its key) claiming to be claimed, as the server authenticates it. */
static fsa__server_auth_verdict_t auth_as(const fsa__server_device_t *table, size_t n,
                                          const fsa__server_device_t *signer, const char *claimed)
{
    char target[FSA__SERVER_URI_MAX];
    snprintf(target, sizeof target, "/v1/devices/%s/ops", claimed);
    static const char body[] = "{\"batch_id\":\"b1\",\"ops\":[]}";
    static const char nonce[] = "00112233445566778899aabbccddeeff";
    char ts[32], sig[FSA_SIGNER_HEX_BYTES];
    snprintf(ts, sizeof ts, "%" PRId64, NOW_MS);
    FUZZ_CHECK(fsa_signer_sign(&signer->key, "POST", target, ts, nonce, body, sizeof body - 1,
                               sig) == FSA_OK);
    fsa__server_auth_in_t in = {.method = "POST",
                                .uri = target,
                                .device_id = claimed,
                                .timestamp = ts,
                                .nonce = nonce,
                                .signature = sig,
                                .body = body,
                                .len = sizeof body - 1,
                                .path_device = claimed,
                                .now_ms = NOW_MS};
    fsa__server_auth_t a;
    fsa__server_auth_check(table, n, &in, &a);
    if (a.verdict == FSA__AUTH_OK)
        FUZZ_CHECK(a.dev != NULL && strcmp(a.dev->id, claimed) == 0);
    return a.verdict;
}

static void check_devices(const char *text, size_t len)
{
    fsa_device_entry_t *devs = NULL;
    size_t n = 0;
    char err[256];
    fsa_status_t st = fsa_devices_decode(text, len, &devs, &n, err, sizeof err);
    FUZZ_CHECK(st == FSA_OK || st == FSA_EINVAL || st == FSA_ETOOLARGE);
    if (st != FSA_OK) {
        FUZZ_CHECK(devs == NULL && n == 0 && err[0] != '\0');
        return;
    }
    FUZZ_CHECK(n >= 1 && n <= FSA_DEVICES_MAX && devs != NULL);
    size_t m = n < MAX_AUTH_DEVICES ? n : MAX_AUTH_DEVICES;
    fsa__server_device_t table[MAX_AUTH_DEVICES];
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(fsa_model_id_valid(devs[i].id));
        if (i > 0)
            FUZZ_CHECK(strcmp(devs[i - 1].id, devs[i].id) < 0);
        FUZZ_CHECK(strlen(devs[i].secret_hex) == 2 * FSA_LIMIT_SECRET_BYTES &&
                   all_hex(devs[i].secret_hex, 2 * FSA_LIMIT_SECRET_BYTES));
        fsa_signer_key_t key;
        FUZZ_CHECK(fsa_signer_key_parse(devs[i].secret_hex, strlen(devs[i].secret_hex), &key) ==
                   FSA_OK);
        FUZZ_CHECK(key_is(&key, devs[i].secret_hex));
        if (i < m) {
            memcpy(table[i].id, devs[i].id, sizeof table[i].id);
            table[i].key = key;
        }
        fsa_signer_key_wipe(&key);
    }
    /* The first devices as the server's table: each signs in as itself, never as another. */
    for (size_t i = 0; i < m; i++) {
        FUZZ_CHECK(auth_as(table, m, &table[i], table[i].id) == FSA__AUTH_OK);
        size_t j = (i + 1) % m;
        if (j != i && memcmp(table[i].key.bytes, table[j].key.bytes, sizeof table[i].key) != 0)
            FUZZ_CHECK(auth_as(table, m, &table[i], table[j].id) == FSA__AUTH_BAD_SIGNATURE);
    }
    for (size_t i = 0; i < m; i++)
        fsa_signer_key_wipe(&table[i].key);
    fsa_devices_free(devs, n);
}

static void check_secret(const char *text, size_t len)
{
    fsa_signer_key_t key;
    memset(&key, 0xa5, sizeof key);
    fsa_status_t st = fsl__parse_secret(text, len, &key);
    size_t n = len;
    while (n > 0 && isspace((unsigned char)text[n - 1]))
        n--;
    bool valid = n == 2 * FSA_LIMIT_SECRET_BYTES && all_hex(text, n);
    FUZZ_CHECK((st == FSA_OK) == valid);
    if (st == FSA_OK) {
        FUZZ_CHECK(key_is(&key, text));
    } else {
        FUZZ_CHECK(st == FSA_EINVAL);
        static const fsa_signer_key_t zero;
        FUZZ_CHECK(memcmp(&key, &zero, sizeof key) == 0);
    }
    fsa_signer_key_wipe(&key);
}

/* localhost, 127.0.0.0/8, ::1 and ::ffff:127.x.y.z, written independently of the transport. */
static bool host_is_loopback(const char *host)
{
    char buf[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(host);
    if (strcasecmp(host, "localhost") == 0)
        return true;
    if (n >= sizeof buf)
        return false;
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        unsigned char a6[16];
        if (inet_pton(AF_INET6, buf, a6) != 1)
            return false;
        static const unsigned char lo[16] = {[15] = 1};
        static const unsigned char mapped[12] = {[10] = 0xff, [11] = 0xff};
        return memcmp(a6, lo, 16) == 0 || (memcmp(a6, mapped, 12) == 0 && a6[12] == 127);
    }
    unsigned char a4[4];
    return inet_pton(AF_INET, host, a4) == 1 && a4[0] == 127;
}

static void check_transport(char *text, bool allow_http)
{
    char *pins = NULL;
    char *nl = strchr(text, '\n');
    if (nl != NULL) {
        *nl = '\0';
        pins = nl + 1;
    }
    fsa_transport_opts_t o;
    memset(&o, 0, sizeof o);
    o.base_url = text;
    o.pins = pins;
    o.allow_insecure_http = allow_http;
    fsa_transport_t *t = NULL;
    char err[256] = "";
    fsa_status_t st = fsa_transport_new(fsa_port_posix(), &o, &t, err, sizeof err);
    FUZZ_CHECK(st == FSA_OK || st == FSA_EINVAL);
    if (st != FSA_OK) {
        FUZZ_CHECK(t == NULL && err[0] != '\0');
        return;
    }
    FUZZ_CHECK(t != NULL);
    /* Plain http only when allowed, or to a host that curl (which connects) reads as loopback. */
    if (!allow_http) {
        CURLU *u = curl_url();
        char *scheme = NULL, *host = NULL;
        FUZZ_CHECK(u != NULL);
        FUZZ_CHECK(curl_url_set(u, CURLUPART_URL, text, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK);
        FUZZ_CHECK(curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK);
        FUZZ_CHECK(curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK);
        if (strcasecmp(scheme, "https") != 0) {
            FUZZ_CHECK(strcasecmp(scheme, "http") == 0);
            FUZZ_CHECK(host_is_loopback(host));
        }
        curl_free(scheme);
        curl_free(host);
        curl_url_cleanup(u);
    }
    fsa_transport_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    char *text = fuzz_strndup(data + 1, size - 1);
    switch (mode % 3) {
    case 0: check_devices(text, size - 1); break;
    case 1: check_secret(text, size - 1); break;
    default: check_transport(text, (mode & 4) != 0); break;
    }
    fsa_free(text);
    return 0;
}
