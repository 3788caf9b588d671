/* fieldsync tests: scoped pulls (PROTOCOL.md section 4, rules in docs/server.md) against the real
 * fieldsync-server: what a scoped device sees, "gone" once when an entity leaves its scope,
 * "forbidden" for its ops outside it; on SQLite and (FSA_TEST_DB=postgresql) PostgreSQL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "port/alloc.h"
#include "sync/transport.h"
#include "tests/sync/pg_harness.h"
#include "tests/sync/server_client.h"
#include "tests/test_util.h"

#define OPBUF 2048

static th_server_t g_srv;
#define URL (g_srv.url)

/* dev000: no scope. dev001: site S1, person P1. dev002: site S2, person P2. */
static bool write_scoped_devices(const char *path)
{
    static const char *const scopes[] = {
        "",
        ",\"scope\":{\"sites\":[\"S1\"],\"people\":[\"P1\"]}",
        ",\"scope\":{\"sites\":[\"S2\"],\"people\":[\"P2\",\"P\\\"quoted\"]}",
    };
    char text[4096];
    size_t n = (size_t)snprintf(text, sizeof text, "{\"devices\": [");
    for (int i = 0; i < 3; i++) {
        fsa_signer_key_t k;
        th_device_key(i, &k);
        n += (size_t)snprintf(text + n, sizeof text - n, "%s{\"id\":\"dev%03d\",\"secret\":\"",
                              i ? "," : "", i);
        for (int j = 0; j < 32; j++)
            n += (size_t)snprintf(text + n, sizeof text - n, "%02x", k.bytes[j]);
        n += (size_t)snprintf(text + n, sizeof text - n, "\"%s}", scopes[i]);
    }
    n += (size_t)snprintf(text + n, sizeof text - n, "]}\n");
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return false;
    bool ok = fwrite(text, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static int setup(void **state)
{
    (void)state;
    memset(&g_srv, 0, sizeof g_srv);
    if (!th_dir_make(g_srv.dir) || !th_write_files(&g_srv, 3) ||
        !write_scoped_devices(g_srv.devices) || !th_backend_db(g_srv.db, sizeof g_srv.db) ||
        !th_server_start(&g_srv, NULL))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int rc = th_server_stop(&g_srv);
    th_dir_remove(g_srv.dir);
    return rc == 0 ? 0 : -1;
}

static fsa_codec_result_t push1(int dev, const char *op)
{
    fsa_codec_result_t *res = NULL;
    size_t n = 0;
    long st = tc_push(NULL, URL, dev, op, &res, &n);
    if (st != 200 || n != 1)
        fail_msg("push answered %ld with %zu results for %s", st, n, op);
    fsa_codec_result_t r = res[0];
    res[0].current_fields = NULL;
    fsa_codec_results_free(res, n);
    return r;
}

static void expect(int dev, const char *op, fsa_result_status_t want, const char *code)
{
    fsa_codec_result_t r = push1(dev, op);
    if (r.status != want || (code != NULL && strcmp(r.code, code) != 0))
        fail_msg("%s: %s/%s (%s), want %s/%s", op, fsa_result_status_name(r.status), r.code,
                 r.message, fsa_result_status_name(want), code != NULL ? code : "-");
    fsa_codec_result_clear(&r);
}

/* Applies one op through the admin API (as the server); expects its answer to hold want (a
 * quoted status or error code). */
static void admin_op_answers(const char *op, const char *want)
{
    char body[OPBUF + 64];
    snprintf(body, sizeof body, "{\"batch_id\":\"adm\",\"ops\":[%s]}", op);
    th_req_opts_t o = {.bearer = TH_ADMIN_TOKEN};
    th_resp_t r;
    assert_true(th_request(NULL, URL, "POST", "/admin/v1/ops", 0, body, strlen(body), &o, &r));
    assert_int_equal(r.status, 200);
    if (strstr(r.body, want) == NULL)
        fail_msg("admin op not answered %s: %s", want, r.body);
    th_resp_free(&r);
}

/* Applies one op through the admin API; expects it applied. */
static void admin_op(const char *op)
{
    admin_op_answers(op, "\"applied\"");
}

/* What one pull run from `cursor` to the end brings: "id" for a change, "-id" for a gone, in
 * order, space-separated (after a leading space) into out; the end cursor back into cursor. */
static void pull_run(int dev, char *cursor, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    bool more = true;
    for (int guard = 0; more && guard < 100; guard++) {
        char path[200];
        snprintf(path, sizeof path, "/v1/devices/dev%03d/changes?limit=3%s%s", dev,
                 cursor[0] ? "&since=" : "", cursor);
        th_resp_t r;
        assert_true(th_request(NULL, URL, "GET", path, dev, NULL, 0, NULL, &r));
        assert_int_equal(r.status, 200);
        fsa_codec_pull_t p;
        if (fsa_codec_decode_pull(r.body, r.len, &p) != FSA_OK)
            fail_msg("undecodable pull: %s", r.body);
        th_resp_free(&r);
        for (size_t i = 0; i < p.count; i++) {
            assert_true(p.changes[i].gone == (p.changes[i].fields == NULL));
            n += (size_t)snprintf(out + n, cap - n, " %s%s", p.changes[i].gone ? "-" : "",
                                  p.changes[i].id);
        }
        snprintf(cursor, FSA_CODEC_CURSOR_BYTES, "%s", p.cursor);
        more = p.more;
        fsa_codec_pull_free(&p);
    }
}

/* True when every space-separated word of want is in got and they have as many words. */
static void same_set(const char *got, const char *want)
{
    int ng = 0, nw = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", want);
    for (char *save = NULL, *w = strtok_r(buf, " ", &save); w != NULL;
         w = strtok_r(NULL, " ", &save)) {
        nw++;
        char pat[160];
        snprintf(pat, sizeof pat, " %s ", w);
        char padded[1100];
        snprintf(padded, sizeof padded, "%s ", got);
        if (strstr(padded, pat) == NULL)
            fail_msg("'%s' lacks %s (want '%s')", got, w, want);
    }
    snprintf(buf, sizeof buf, "%s", got);
    for (char *save = NULL, *w = strtok_r(buf, " ", &save); w != NULL;
         w = strtok_r(NULL, " ", &save))
        ng++;
    if (ng != nw)
        fail_msg("got '%s', want '%s'", got, want);
}

static char g_cur1[FSA_CODEC_CURSOR_BYTES], g_cur2[FSA_CODEC_CURSOR_BYTES];

static void test_server_scope__what_each_device_sees(void **state)
{
    (void)state;
    char op[OPBUF];
    assert_int_equal(tc_seed(NULL, URL, "ticket", "T-P1", "{\"assignedto\":\"P1\"}"), 201);
    assert_int_equal(tc_seed(NULL, URL, "ticket", "T-P2", "{\"assignedto\":\"P2\"}"), 201);
    assert_int_equal(tc_seed(NULL, URL, "jobneed", "TOUR1", "{\"people_id\":\"P1\"}"), 201);
    assert_int_equal(tc_seed(NULL, URL, "jobneed", "CP1", "{\"parent_id\":\"TOUR1\"}"), 201);
    assert_int_equal(tc_seed(NULL, URL, "jobneed", "TOUR2", "{\"people_id\":\"P2\"}"), 201);
    assert_int_equal(tc_seed(NULL, URL, "jobneed", "CP2", "{\"parent_id\":\"TOUR2\"}"), 201);
    assert_int_equal(tc_seed(NULL, URL, "ticket", "T-Q", "{\"assignedto\":\"P\\\"quoted\"}"), 201);
#define ATT(site)                                                                                  \
    ",\"fields\":{\"people_id\":\"G1\",\"site_id\":\"" site "\",\"kind\":\"checkin\","             \
    "\"at\":1764090000000}"
    expect(0, tc_op(op, sizeof op, NULL, "create", "attendance", "A-S1", ATT("S1")),
           FSA_RESULT_APPLIED, NULL);
    expect(0, tc_op(op, sizeof op, NULL, "create", "attendance", "A-S2", ATT("S2")),
           FSA_RESULT_APPLIED, NULL);
    /* dev001 creates a ticket for someone outside its scope: its own, so it sees it. */
    expect(1,
           tc_op(op, sizeof op, NULL, "create", "ticket", "T-own",
                 ",\"fields\":{\"assignedto\":\"P9\"}"),
           FSA_RESULT_APPLIED, NULL);
    char got[1024];
    pull_run(1, g_cur1, got, sizeof got);
    same_set(got, "T-P1 TOUR1 CP1 A-S1 T-own");
    pull_run(2, g_cur2, got, sizeof got);
    same_set(got, "T-P2 TOUR2 CP2 A-S2 T-Q");
    /* No scope: every jobneed and ticket, and its own attendance (as before scopes). */
    char cur0[FSA_CODEC_CURSOR_BYTES] = "";
    pull_run(0, cur0, got, sizeof got);
    same_set(got, "T-P1 T-P2 TOUR1 CP1 TOUR2 CP2 T-Q A-S1 A-S2 T-own");
}

static void test_server_scope__ops_outside_are_forbidden(void **state)
{
    (void)state;
    char op[OPBUF], a[OPBUF], b[OPBUF], both[2 * OPBUF];
    expect(
        1,
        tc_op(op, sizeof op, NULL, "increment", "ticket", "T-P2", ",\"field\":\"level\",\"by\":1"),
        FSA_RESULT_REJECTED, "forbidden");
    expect(1, tc_op(op, sizeof op, NULL, "create", "ticket", "T-P2", ""), FSA_RESULT_REJECTED,
           "forbidden");
    expect(1,
           tc_op(op, sizeof op, NULL, "create", "attendance", "A-S2",
                 ",\"fields\":{\"people_id\":\"G\",\"site_id\":\"S1\",\"kind\":\"checkin\","
                 "\"at\":1}"),
           FSA_RESULT_REJECTED, "forbidden");
    assert_int_equal(tc_get(NULL, URL, "ticket", "T-P2", NULL), 1);
    /* Inside: its person's tickets and tours, their checkpoints, and what it created. */
    expect(
        1,
        tc_op(op, sizeof op, NULL, "increment", "ticket", "T-P1", ",\"field\":\"level\",\"by\":1"),
        FSA_RESULT_APPLIED, NULL);
    expect(1,
           tc_op(op, sizeof op, NULL, "merge", "jobneed", "CP1",
                 ",\"field\":\"other_info\",\"patch\":{\"seen\":1}"),
           FSA_RESULT_APPLIED, NULL);
    expect(
        1,
        tc_op(op, sizeof op, NULL, "increment", "ticket", "T-own", ",\"field\":\"level\",\"by\":1"),
        FSA_RESULT_APPLIED, NULL);
    /* A group with one op outside: nothing of it applies, all forbidden. */
    snprintf(both, sizeof both, "%s,%s",
             tc_op(a, sizeof a, NULL, "merge", "jobneed", "CP1",
                   ",\"group\":\"g\",\"field\":\"other_info\",\"patch\":{\"x\":1}"),
             tc_op(b, sizeof b, NULL, "merge", "jobneed", "CP2",
                   ",\"group\":\"g\",\"field\":\"other_info\",\"patch\":{\"x\":1}"));
    fsa_codec_result_t *res = NULL;
    size_t n = 0;
    assert_int_equal(tc_push(NULL, URL, 1, both, &res, &n), 200);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(res[i].status, FSA_RESULT_REJECTED);
        assert_string_equal(res[i].code, "forbidden");
    }
    fsa_codec_results_free(res, n);
    assert_int_equal(tc_get(NULL, URL, "jobneed", "CP1", NULL), 2);
    /* A group that fails on a conflict inside the scope: every op reports the conflict, but
     * only an entity the device may see comes with its current state. */
    snprintf(both, sizeof both, "%s,%s",
             tc_op(a, sizeof a, NULL, "set", "ticket", "T-P1",
                   ",\"group\":\"g2\",\"base_version\":999,\"fields\":{\"priority\":\"LOW\"}"),
             tc_op(b, sizeof b, NULL, "increment", "ticket", "T-P2",
                   ",\"group\":\"g2\",\"field\":\"level\",\"by\":1"));
    assert_int_equal(tc_push(NULL, URL, 1, both, &res, &n), 200);
    assert_int_equal(n, 2);
    assert_int_equal(res[0].status, FSA_RESULT_CONFLICT);
    assert_true(res[0].has_current);
    assert_int_equal(res[1].status, FSA_RESULT_CONFLICT);
    assert_false(res[1].has_current);
    fsa_codec_results_free(res, n);
    /* A missing entity is not_found, as for anyone. */
    expect(1,
           tc_op(op, sizeof op, NULL, "increment", "ticket", "T-none",
                 ",\"field\":\"level\",\"by\":1"),
           FSA_RESULT_REJECTED, "not_found");
    /* dev000 has no scope: everything. */
    expect(
        0,
        tc_op(op, sizeof op, NULL, "increment", "ticket", "T-P2", ",\"field\":\"level\",\"by\":1"),
        FSA_RESULT_APPLIED, NULL);
}

/* A checkpoint names a tour that exists. The pulls select a checkpoint by its own change number:
 * one made before its tour, which then brought it into a scope, was never sent to the tour's
 * devices that had pulled in between, and a device that made a tour under the id it named took
 * it into its own scope, with write access. */
static void test_server_scope__a_checkpoint_needs_its_tour(void **state)
{
    (void)state;
    char op[OPBUF], cur[FSA_CODEC_CURSOR_BYTES] = "", got[1024];
    pull_run(1, cur, got, sizeof got);
    expect(0,
           tc_op(op, sizeof op, NULL, "create", "jobneed", "CP-early",
                 ",\"fields\":{\"parent_id\":\"TOUR-late\"}"),
           FSA_RESULT_REJECTED, "not_found");
    /* Nor as the server, nor by moving an existing jobneed under a missing tour. */
    admin_op_answers(tc_op(op, sizeof op, NULL, "create", "jobneed", "CP-early",
                           ",\"fields\":{\"parent_id\":\"TOUR-late\"}"),
                     "\"not_found\"");
    expect(0,
           tc_op(op, sizeof op, NULL, "set", "jobneed", "CP1",
                 ",\"base_version\":2,\"fields\":{\"parent_id\":\"TOUR-late\"}"),
           FSA_RESULT_REJECTED, "not_found");
    assert_int_equal(tc_get(NULL, URL, "jobneed", "CP-early", NULL), 0);
    pull_run(1, cur, got, sizeof got);
    same_set(got, "");
    /* The tour first, then its checkpoint: P1's device gets both. */
    expect(1,
           tc_op(op, sizeof op, NULL, "create", "jobneed", "TOUR-late",
                 ",\"fields\":{\"people_id\":\"P1\"}"),
           FSA_RESULT_APPLIED, NULL);
    expect(0,
           tc_op(op, sizeof op, NULL, "create", "jobneed", "CP-early",
                 ",\"fields\":{\"parent_id\":\"TOUR-late\"}"),
           FSA_RESULT_APPLIED, NULL);
    pull_run(1, cur, got, sizeof got);
    same_set(got, "TOUR-late CP-early");
}

static void test_server_scope__gone_once_when_leaving(void **state)
{
    (void)state;
    char got[1024], op[OPBUF], extra[128];
    pull_run(1, g_cur1, got, sizeof got); /* catch up with the changes of the test before */
    pull_run(2, g_cur2, got, sizeof got);
    /* T-P1 goes to P2: dev001 gets it once as gone, dev002 gets it. */
    int64_t v = tc_get(NULL, URL, "ticket", "T-P1", NULL);
    snprintf(extra, sizeof extra, ",\"base_version\":%lld,\"fields\":{\"assignedto\":\"P2\"}",
             (long long)v);
    admin_op(tc_op(op, sizeof op, NULL, "set", "ticket", "T-P1", extra));
    char again[FSA_CODEC_CURSOR_BYTES];
    snprintf(again, sizeof again, "%s", g_cur1);
    pull_run(1, g_cur1, got, sizeof got);
    same_set(got, "-T-P1");
    /* The same page asked again (a lost answer) is answered the same. */
    pull_run(1, again, got, sizeof got);
    same_set(got, "-T-P1");
    pull_run(2, g_cur2, got, sizeof got);
    same_set(got, "T-P1");
    /* Once: a later change outside the scope is not sent again. */
    admin_op(
        tc_op(op, sizeof op, NULL, "increment", "ticket", "T-P1", ",\"field\":\"level\",\"by\":5"));
    pull_run(1, g_cur1, got, sizeof got);
    same_set(got, "");
    /* Back in the scope: sent with its fields. */
    int64_t base = v + 2;
    snprintf(extra, sizeof extra, ",\"base_version\":%lld,\"fields\":{\"assignedto\":\"P1\"}",
             (long long)base);
    admin_op(tc_op(op, sizeof op, NULL, "set", "ticket", "T-P1", extra));
    pull_run(1, g_cur1, got, sizeof got);
    same_set(got, "T-P1");
    pull_run(2, g_cur2, got, sizeof got);
    same_set(got, "-T-P1");
    /* A tour reassigned takes its checkpoints along. */
    v = tc_get(NULL, URL, "jobneed", "TOUR1", NULL);
    snprintf(extra, sizeof extra, ",\"base_version\":%lld,\"fields\":{\"people_id\":\"P2\"}",
             (long long)v);
    admin_op(tc_op(op, sizeof op, NULL, "set", "jobneed", "TOUR1", extra));
    pull_run(1, g_cur1, got, sizeof got);
    same_set(got, "-TOUR1 -CP1");
    pull_run(2, g_cur2, got, sizeof got);
    same_set(got, "TOUR1 CP1");
    /* And now dev002 may work on the checkpoint, dev001 may not. */
    expect(2,
           tc_op(op, sizeof op, NULL, "merge", "jobneed", "CP1",
                 ",\"field\":\"other_info\",\"patch\":{\"by2\":1}"),
           FSA_RESULT_APPLIED, NULL);
    expect(1,
           tc_op(op, sizeof op, NULL, "merge", "jobneed", "CP1",
                 ",\"field\":\"other_info\",\"patch\":{\"by1\":1}"),
           FSA_RESULT_REJECTED, "forbidden");
    pull_run(1, g_cur1, got, sizeof got);
    same_set(got, "");
}

/* Moves ticket `id` to person `to` through the admin API (a set at its current version). */
static void reassign(const char *id, const char *to)
{
    char op[OPBUF], extra[128];
    snprintf(extra, sizeof extra, ",\"base_version\":%lld,\"fields\":{\"assignedto\":\"%s\"}",
             (long long)tc_get(NULL, URL, "ticket", id, NULL), to);
    admin_op(tc_op(op, sizeof op, NULL, "set", "ticket", id, extra));
}

/* Increments ticket `id`'s level through the admin API: a change that moves nothing in or out. */
static void bump(const char *id)
{
    char op[OPBUF];
    admin_op(
        tc_op(op, sizeof op, NULL, "increment", "ticket", id, ",\"field\":\"level\",\"by\":1"));
}

/* A gone whose answer was lost is sent again until the device's cursor has passed it, even after
 * the entity changed again outside the scope, and even when the page that asks again is full of
 * other changes made after the gone. */
static void test_server_scope__gone_again_after_a_lost_answer(void **state)
{
    (void)state;
    char got[1024], lost[FSA_CODEC_CURSOR_BYTES];
    pull_run(1, g_cur1, got, sizeof got); /* catch up with the changes of the tests before */
    assert_int_equal(tc_seed(NULL, URL, "ticket", "TG1", "{\"assignedto\":\"P1\"}"), 201);
    assert_int_equal(tc_seed(NULL, URL, "ticket", "TG-a", "{\"assignedto\":\"P1\"}"), 201);
    assert_int_equal(tc_seed(NULL, URL, "ticket", "TG-b", "{\"assignedto\":\"P1\"}"), 201);
    assert_int_equal(tc_seed(NULL, URL, "ticket", "TG-c", "{\"assignedto\":\"P1\"}"), 201);
    pull_run(1, g_cur1, got, sizeof got);
    same_set(got, "TG1 TG-a TG-b TG-c");
    /* TG1 leaves; the answer that carries its gone is lost (the cursor is not kept). */
    reassign("TG1", "P2");
    snprintf(lost, sizeof lost, "%s", g_cur1);
    pull_run(1, lost, got, sizeof got);
    same_set(got, "-TG1");
    /* TG1 changes again outside the scope; the device asks again: the gone comes again. */
    bump("TG1");
    snprintf(lost, sizeof lost, "%s", g_cur1);
    pull_run(1, lost, got, sizeof got);
    same_set(got, "-TG1");
    /* Lost again; three changes in the scope and one more of TG1 follow. The page asked for again
     * (3 changes a page) must not end past the gone without it. */
    bump("TG-a");
    bump("TG-b");
    bump("TG-c");
    bump("TG1");
    pull_run(1, g_cur1, got, sizeof got);
    same_set(got, "-TG1 TG-a TG-b TG-c");
    /* Received: from now on a change outside the scope is not sent. */
    bump("TG1");
    pull_run(1, g_cur1, got, sizeof got);
    same_set(got, "");
    /* Back in the scope, then out again with the answer lost once more. */
    reassign("TG1", "P1");
    pull_run(1, g_cur1, got, sizeof got);
    same_set(got, "TG1");
    reassign("TG1", "P2");
    snprintf(lost, sizeof lost, "%s", g_cur1);
    pull_run(1, lost, got, sizeof got);
    same_set(got, "-TG1");
    bump("TG1");
    pull_run(1, g_cur1, got, sizeof got);
    same_set(got, "-TG1");
    bump("TG1");
    pull_run(1, g_cur1, got, sizeof got);
    same_set(got, "");
}

/* A malformed scope in the devices file stops the server with one line. */
static void test_server_scope__bad_scope_refused(void **state)
{
    (void)state;
    th_server_t s;
    memset(&s, 0, sizeof s);
    assert_true(th_dir_make(s.dir));
    assert_true(th_write_files(&s, 1));
    FILE *f = fopen(s.devices, "w");
    assert_non_null(f);
    fprintf(f, "{\"devices\":[{\"id\":\"dev000\",\"secret\":\"%064d\",\"scope\":{\"sites\":[1]}}]}",
            0);
    assert_int_equal(fclose(f), 0);
    const char *args[] = {"--listen",       "127.0.0.1:0", "--db", s.db,
                          "--devices-file", s.devices,     NULL};
    char err[512];
    assert_int_not_equal(th_run_cli(args, err, sizeof err), 0);
    assert_non_null(strstr(err, "scope must be"));
    th_dir_remove(s.dir);
}

int main(void)
{
    if (fsa_transport_global_init() != FSA_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_scope__what_each_device_sees),
        cmocka_unit_test(test_server_scope__ops_outside_are_forbidden),
        cmocka_unit_test(test_server_scope__a_checkpoint_needs_its_tour),
        cmocka_unit_test(test_server_scope__gone_once_when_leaving),
        cmocka_unit_test(test_server_scope__gone_again_after_a_lost_answer),
        cmocka_unit_test(test_server_scope__bad_scope_refused),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
