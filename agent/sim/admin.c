/* fieldsync-sim: a small libcurl client for fieldsync-server's admin API (bearer token). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "agent/sim/fleet.h"
#include "port/alloc.h"
#include "port/buf.h"
#include "sync/codec.h"

/*
 * A deliberate exception to "only the transport includes curl/curl.h" (STYLE.md): the admin API
 * is not the device protocol. It authenticates with an Authorization: Bearer header, and
 * sync/transport.h has no custom headers (it signs every request as a device). Rather than widen
 * the device transport for a simulator's needs, this file talks to the admin API with curl
 * directly, on loopback or wherever --server points, and only from the simulator's main thread.
 * Answers are decoded with the codec where the shapes fit (an entity is a pull change).
 */

#define ADMIN_MAX_ANSWER (16 * 1024 * 1024)
#define ADMIN_TIMEOUT_MS 30000

struct fsa__admin {
    CURL *curl;
    char base[FSA__URL_BYTES];
    char unix_path[FSA__URL_BYTES]; /* "unix:PATH" given: the socket; base is then http://localhost
                                     */
    struct curl_slist *headers;
};

typedef struct answer {
    fsa_buf_t buf;
    bool too_large;
} answer_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    answer_t *b = arg;
    size_t len = size * nmemb;
    fsa_status_t st = fsa_buf_append(&b->buf, data, len, 4096, ADMIN_MAX_ANSWER - 1);
    if (st == FSA_ETOOLARGE)
        b->too_large = true;
    return st == FSA_OK ? len : 0;
}

fsa_status_t fsa__admin_new(const char *base_url, const char *token, fsa__admin_t **out, char *err,
                            size_t errlen)
{
    *out = NULL;
    fsa__admin_t *a = fsa_calloc(1, sizeof *a);
    if (a == NULL)
        return FSA_ENOMEM;
    /* The server's admin listener may be a unix socket ("unix:PATH"). */
    if (strncmp(base_url, "unix:", 5) == 0) {
        if (strlen(base_url + 5) >= sizeof a->unix_path) {
            fsa_free(a);
            snprintf(err, errlen, "admin socket path too long");
            return FSA_EINVAL;
        }
        snprintf(a->unix_path, sizeof a->unix_path, "%s", base_url + 5);
        base_url = "http://localhost";
    }
    size_t bl = strlen(base_url);
    while (bl > 0 && base_url[bl - 1] == '/')
        bl--;
    if (bl >= sizeof a->base) {
        fsa_free(a);
        snprintf(err, errlen, "server URL too long");
        return FSA_EINVAL;
    }
    memcpy(a->base, base_url, bl);
    a->base[bl] = '\0';
    char auth[600];
    if ((size_t)snprintf(auth, sizeof auth, "Authorization: Bearer %s", token) >= sizeof auth) {
        fsa_free(a);
        snprintf(err, errlen, "admin token too long");
        return FSA_EINVAL;
    }
    a->headers = curl_slist_append(NULL, auth);
    struct curl_slist *h2 =
        a->headers ? curl_slist_append(a->headers, "Content-Type: application/json") : NULL;
    memset(auth, 0, sizeof auth);
    a->curl = curl_easy_init();
    if (h2 == NULL || a->curl == NULL) {
        fsa__admin_free(a);
        return FSA_ENOMEM;
    }
    a->headers = h2;
    *out = a;
    return FSA_OK;
}

void fsa__admin_free(fsa__admin_t *a)
{
    if (a == NULL)
        return;
    if (a->curl != NULL)
        curl_easy_cleanup(a->curl);
    curl_slist_free_all(a->headers);
    fsa_free(a);
}

/* One request: *http the status, *body the answer (malloc'ed, may be NULL). */
static fsa_status_t request(fsa__admin_t *a, const char *method, const char *path, const char *body,
                            long *http, char **answer, char *err, size_t errlen)
{
    *answer = NULL;
    *http = 0;
    char url[FSA__URL_BYTES + 300];
    if ((size_t)snprintf(url, sizeof url, "%s%s", a->base, path) >= sizeof url) {
        snprintf(err, errlen, "admin URL too long");
        return FSA_EINVAL;
    }
    answer_t b = {0};
    CURL *c = a->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (a->unix_path[0] != '\0')
        curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, a->unix_path);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, a->headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)ADMIN_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body != NULL ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(body != NULL ? strlen(body) : 0));
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        fsa_free(b.buf.p);
        snprintf(err, errlen, "admin %s %s: %s", method, path,
                 b.too_large ? "answer too large" : curl_easy_strerror(rc));
        return b.too_large ? FSA_ETOOLARGE : FSA_ENET;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, http);
    if (*http == 401) {
        fsa_free(b.buf.p); /* a failed call hands back no answer */
        snprintf(err, errlen, "admin %s %s: the server refused the admin token (401)", method,
                 path);
        return FSA_EAUTH;
    }
    *answer = b.buf.p;
    return FSA_OK;
}

static void error_line(const char *what, long http, const char *answer, char *err, size_t errlen)
{
    fsa_model_err_t e;
    int64_t t = 0;
    if (answer != NULL && fsa_codec_decode_error(answer, strlen(answer), &e, &t) == FSA_OK)
        snprintf(err, errlen, "%s: HTTP %ld %s: %s", what, http, e.code, e.message);
    else
        snprintf(err, errlen, "%s: HTTP %ld", what, http);
}

fsa_status_t fsa__admin_get_entity(fsa__admin_t *a, fsa_type_t type, const char *id,
                                   int64_t *version, char **fields, char *err, size_t errlen)
{
    *fields = NULL;
    *version = 0;
    char path[FSA_ID_BYTES + 64];
    snprintf(path, sizeof path, "/admin/v1/entities/%s/%s", fsa_type_name(type), id);
    long http = 0;
    char *ans = NULL;
    fsa_status_t st = request(a, "GET", path, NULL, &http, &ans, err, errlen);
    if (st != FSA_OK)
        return st;
    if (http == 404) {
        fsa_free(ans);
        snprintf(err, errlen, "%s %s does not exist on the server", fsa_type_name(type), id);
        return FSA_ENOTFOUND;
    }
    if (http != 200 || ans == NULL) {
        error_line(path, http, ans, err, errlen);
        fsa_free(ans);
        return FSA_EPROTO;
    }
    /* The answer is a pull change plus server_time: decode it as a one-change pull page. */
    size_t alen = strlen(ans);
    size_t cap = alen + 64;
    char *wrap = fsa_malloc(cap);
    if (wrap == NULL) {
        fsa_free(ans);
        return FSA_ENOMEM;
    }
    int wl = snprintf(wrap, cap, "{\"changes\":[%s],\"cursor\":\"\",\"more\":false}", ans);
    fsa_free(ans);
    fsa_codec_pull_t pull;
    memset(&pull, 0, sizeof pull);
    st = wl > 0 ? fsa_codec_decode_pull(wrap, (size_t)wl, &pull) : FSA_EPROTO;
    fsa_free(wrap);
    if (st != FSA_OK || pull.count != 1 || pull.changes[0].type != type ||
        strcmp(pull.changes[0].id, id) != 0) {
        fsa_codec_pull_free(&pull);
        snprintf(err, errlen, "%s: the server's answer is not the entity asked for", path);
        return FSA_EPROTO;
    }
    *version = pull.changes[0].version;
    *fields = pull.changes[0].fields;
    pull.changes[0].fields = NULL;
    fsa_codec_pull_free(&pull);
    return FSA_OK;
}

fsa_status_t fsa__admin_seed(fsa__admin_t *a, fsa_type_t type, const char *id,
                             const char *fields_json, char *err, size_t errlen)
{
    size_t cap = strlen(fields_json) + FSA_ID_BYTES + 64;
    char *body = fsa_malloc(cap);
    if (body == NULL)
        return FSA_ENOMEM;
    snprintf(body, cap, "{\"type\":\"%s\",\"id\":\"%s\",\"fields\":%s}", fsa_type_name(type), id,
             fields_json);
    long http = 0;
    char *ans = NULL;
    fsa_status_t st = request(a, "POST", "/admin/v1/entities", body, &http, &ans, err, errlen);
    fsa_free(body);
    if (st != FSA_OK)
        return st;
    char what[FSA_ID_BYTES + 48];
    snprintf(what, sizeof what, "seeding %s %s", fsa_type_name(type), id);
    if (http == 201)
        st = FSA_OK;
    else if (http == 409)
        st = FSA_EEXISTS;
    else if (http == 422)
        st = FSA_EREJECTED;
    else
        st = FSA_EPROTO;
    if (st != FSA_OK)
        error_line(what, http, ans, err, errlen);
    fsa_free(ans);
    return st;
}

fsa_status_t fsa__admin_autoclose(fsa__admin_t *a, const char *id, char *err, size_t errlen)
{
    char path[FSA_ID_BYTES + 64];
    snprintf(path, sizeof path, "/admin/v1/jobneeds/%s/autoclose", id);
    long http = 0;
    char *ans = NULL;
    fsa_status_t st = request(a, "POST", path, NULL, &http, &ans, err, errlen);
    if (st != FSA_OK)
        return st;
    if (http == 200)
        st = FSA_OK;
    else if (http == 404)
        st = FSA_ENOTFOUND;
    else if (http == 409)
        st = FSA_ECONFLICT;
    else if (http == 422)
        st = FSA_EREJECTED;
    else
        st = FSA_EPROTO;
    if (st != FSA_OK)
        error_line(path, http, ans, err, errlen);
    fsa_free(ans);
    return st;
}

fsa_status_t fsa__admin_stats(fsa__admin_t *a, fsa__stats_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    long http = 0;
    char *ans = NULL;
    fsa_status_t st = request(a, "GET", "/admin/v1/stats", NULL, &http, &ans, err, errlen);
    if (st != FSA_OK)
        return st;
    if (http != 200 || ans == NULL) {
        error_line("/admin/v1/stats", http, ans, err, errlen);
        fsa_free(ans);
        return FSA_EPROTO;
    }
    st = fsa__stats_parse(ans, out);
    fsa_free(ans);
    if (st != FSA_OK)
        snprintf(err, errlen, "/admin/v1/stats: the answer is not the server's statistics");
    return st;
}
