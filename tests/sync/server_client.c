/* fieldsync tests: small protocol helpers over the server harness (ops, pushes, entity reads). */
#include "tests/sync/server_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "port/alloc.h"
#include "port/port.h"
#include "storage/model.h"

void tc_op_id(char out[37])
{
    if (fsa_uuid4(fsa_port_posix(), out) != FSA_OK)
        snprintf(out, 37, "no-random");
}

char *tc_op(char *out, size_t cap, const char *op_id, const char *kind, const char *type,
            const char *id, const char *extra)
{
    char fresh[37];
    if (op_id == NULL) {
        tc_op_id(fresh);
        op_id = fresh;
    }
    snprintf(out, cap,
             "{\"op_id\":\"%s\",\"seq\":1,\"at\":1764090000000,\"kind\":\"%s\",\"type\":\"%s\","
             "\"id\":\"%s\"%s}",
             op_id, kind, type, id, extra != NULL ? extra : "");
    return out;
}

long tc_push(void *h, const char *url, int dev, const char *ops_csv, fsa_codec_result_t **results,
             size_t *count)
{
    *results = NULL;
    *count = 0;
    char bid[37];
    tc_op_id(bid);
    size_t cap = strlen(ops_csv) + 128;
    char *body = fsa_malloc(cap);
    if (body == NULL)
        return 0;
    snprintf(body, cap, "{\"batch_id\":\"%s\",\"ops\":[%s]}", bid, ops_csv);
    char path[64];
    char id[16];
    th_device_id(dev, id);
    snprintf(path, sizeof path, "/v1/devices/%s/ops", id);
    th_resp_t r;
    th_request(h, url, "POST", path, dev, body, strlen(body), NULL, &r);
    fsa_free(body);
    if (r.status == 200) {
        int64_t t = 0;
        if (fsa_codec_decode_results(r.body, r.len, results, count, &t) != FSA_OK)
            r.status = -200; /* a 200 whose body is not a results answer */
    }
    long st = r.status;
    th_resp_free(&r);
    return st;
}

long tc_push_raw(void *h, const char *url, int dev, const char *body, size_t len,
                 const th_req_opts_t *opts, char code[32])
{
    char path[64];
    char id[16];
    th_device_id(dev, id);
    snprintf(path, sizeof path, "/v1/devices/%s/ops", id);
    th_resp_t r;
    th_request(h, url, "POST", path, dev, body, len, opts, &r);
    code[0] = '\0';
    if (r.status != 200 && r.body != NULL) {
        fsa_model_err_t e;
        if (fsa_codec_decode_error(r.body, r.len, &e, NULL) == FSA_OK)
            snprintf(code, 32, "%s", e.code);
    }
    long st = r.status;
    th_resp_free(&r);
    return st;
}

int64_t tc_get(void *h, const char *url, const char *type, const char *id, char **fields)
{
    if (fields != NULL)
        *fields = NULL;
    char path[300];
    snprintf(path, sizeof path, "/admin/v1/entities/%s/%s", type, id);
    th_req_opts_t o = {.bearer = TH_ADMIN_TOKEN};
    th_resp_t r;
    th_request(h, url, "GET", path, 0, NULL, 0, &o, &r);
    int64_t version = 0;
    if (r.status == 200 && r.body != NULL) {
        cJSON *root = cJSON_Parse(r.body);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "version");
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "fields");
        if (cJSON_IsNumber(v) && cJSON_IsObject(f)) {
            version = (int64_t)v->valuedouble;
            char *p = fields != NULL ? cJSON_PrintUnformatted(f) : NULL;
            if (p != NULL) {
                *fields = fsa_strdup(p);
                cJSON_free(p);
            }
        }
        cJSON_Delete(root);
    }
    th_resp_free(&r);
    return version;
}

void tc_field(void *h, const char *url, const char *type, const char *id, const char *name,
              char *out, size_t cap)
{
    char *fields = NULL;
    out[0] = '\0';
    (void)tc_get(h, url, type, id, &fields);
    char *v = NULL;
    if (fields != NULL && fsa_model_get_field(fields, name, &v) == FSA_OK && v != NULL)
        snprintf(out, cap, "%s", v);
    fsa_model_free(v);
    fsa_free(fields);
}

long tc_seed(void *h, const char *url, const char *type, const char *id, const char *fields_json)
{
    char body[4096];
    snprintf(body, sizeof body, "{\"type\":\"%s\",\"id\":\"%s\",\"fields\":%s}", type, id,
             fields_json);
    th_req_opts_t o = {.bearer = TH_ADMIN_TOKEN};
    th_resp_t r;
    th_request(h, url, "POST", "/admin/v1/entities", 0, body, strlen(body), &o, &r);
    long st = r.status;
    th_resp_free(&r);
    return st;
}
