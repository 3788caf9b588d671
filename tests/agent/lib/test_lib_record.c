/* fieldsync tests: libfieldsync's workflow verbs (agent/lib/record.c) and reads (read.c) against
 * a real journal: values land as fieldsync_get shows them, errors name the problem, and a failed
 * call writes nothing. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "agent/lib/internal.h"
#include "port/sim/sim.h"
#include "tests/agent/lib/lib_fixture.h"

/* Ops waiting in the outbox (a failed call must not change it). */
static int64_t queued(fieldsync_t *fs)
{
    fieldsync_sync_status_t s = {.size = sizeof s};
    assert_fs_ok(fs, fieldsync_status(fs, &s));
    return s.queue_depth;
}

static void test_attendance__with_position_lands(void **state)
{
    cfx_t *f = *state;
    fieldsync_position_t pos = {.lat = 52.5, .lon = 13.4, .accuracy_m = 8};
    fieldsync_rec_t rec;
    assert_fs_ok(f->fs, fieldsync_attendance(f->fs, true, "p1", "s1", &pos, "A1", NULL, &rec));
    assert_int_equal(strlen(rec.op_id), 36);
    assert_true(rec.seq > 0);
    assert_true(cfx_has(f->fs, "attendance", "A1", "\"kind\":\"checkin\""));
    assert_true(cfx_has(f->fs, "attendance", "A1", "\"lat\":52.5"));
    assert_true(cfx_has(f->fs, "attendance", "A1", "\"accuracy_m\":8"));
    assert_true(cfx_has(f->fs, "attendance", "A1", "\"pending\":1"));
    /* unknown accuracy (negative) is null; a new id is made when none is given */
    pos.accuracy_m = -1;
    assert_fs_ok(f->fs, fieldsync_attendance(f->fs, false, "p1", "s1", &pos, "A2", NULL, NULL));
    assert_true(cfx_has(f->fs, "attendance", "A2", "\"accuracy_m\":null"));
    assert_fs_ok(f->fs, fieldsync_attendance(f->fs, false, "p1", "s1", &pos, NULL, NULL, NULL));
    assert_int_equal(queued(f->fs), 3);
}

static void test_attendance__without_position_is_null(void **state)
{
    cfx_t *f = *state;
    fieldsync_status_t st =
        fieldsync_attendance(f->fs, true, "p \"quoted\"", "s1", NULL, "A1", NULL, NULL);
    if (st != FIELDSYNC_OK)
        fail_msg("a check-in without a position was refused: %s", fieldsync_errmsg(f->fs));
    assert_true(cfx_has(f->fs, "attendance", "A1", "\"lat\":null"));
    assert_true(cfx_has(f->fs, "attendance", "A1", "\"lon\":null"));
    assert_true(cfx_has(f->fs, "attendance", "A1", "\"people_id\":\"p \\\"quoted\\\"\""));
}

static void test_attendance__bad_values_named_and_nothing_written(void **state)
{
    cfx_t *f = *state;
    fieldsync_position_t pos = {.lat = 91, .lon = 13.4, .accuracy_m = 8};
    assert_int_equal(fieldsync_attendance(f->fs, true, "p1", "s1", &pos, NULL, NULL, NULL),
                     FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "latitude"));
    pos = (fieldsync_position_t){.lat = 0, .lon = 181};
    assert_int_equal(fieldsync_attendance(f->fs, true, "p1", "s1", &pos, NULL, NULL, NULL),
                     FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "longitude"));
    assert_int_equal(fieldsync_attendance(f->fs, true, "p1", NULL, NULL, NULL, NULL, NULL),
                     FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "site_id"));
    assert_int_equal(fieldsync_attendance(f->fs, true, "p1", "s1", NULL, "bad id", NULL, NULL),
                     FIELDSYNC_EINVAL);
    /* the same id twice: the second is refused */
    assert_fs_ok(f->fs, fieldsync_attendance(f->fs, true, "p1", "s1", NULL, "A1", NULL, NULL));
    assert_int_equal(fieldsync_attendance(f->fs, true, "p1", "s1", NULL, "A1", NULL, NULL),
                     FIELDSYNC_EEXISTS);
    assert_int_equal(queued(f->fs), 1);
    /* success clears the message */
    assert_fs_ok(f->fs, fieldsync_attendance(f->fs, true, "p1", "s1", NULL, "A2", NULL, NULL));
    assert_string_equal(fieldsync_errmsg(f->fs), "");
}

static void test_job__create_set_merge_transition(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_job_create(f->fs, "J1", "{\"seqno\":1}", NULL));
    assert_fs_ok(f->fs,
                 fieldsync_job_set(f->fs, "J1", "{\"seqno\":3,\"people_id\":\"p1\"}", NULL, NULL));
    assert_fs_ok(f->fs, fieldsync_job_merge(f->fs, "J1", "{\"weather\":\"rain\"}", NULL, NULL));
    assert_fs_ok(f->fs, fieldsync_job_transition(f->fs, "J1", "INPROGRESS", NULL, NULL));
    char *json = cfx_get(f->fs, "job", "J1");
    assert_non_null(strstr(json, "\"type\":\"jobneed\""));
    assert_non_null(strstr(json, "\"seqno\":3"));
    assert_non_null(strstr(json, "\"people_id\":\"p1\""));
    assert_non_null(strstr(json, "\"weather\":\"rain\""));
    assert_non_null(strstr(json, "\"jobstatus\":\"INPROGRESS\""));
    assert_non_null(strstr(json, "\"pending\":4"));
    assert_non_null(strstr(json, "\"server_version\":0"));
    fieldsync_free(json);
    /* NULL fields on create: the defaults */
    assert_fs_ok(f->fs, fieldsync_job_create(f->fs, "J2", NULL, NULL));
    assert_true(cfx_has(f->fs, "jobneed", "J2", "\"jobstatus\":\"ASSIGNED\""));
}

static void test_job__errors_name_the_problem_and_write_nothing(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_job_create(f->fs, "J1", NULL, NULL));
    int64_t q = queued(f->fs);
    assert_int_equal(fieldsync_job_transition(f->fs, "J1", "COMPLETED", NULL, NULL),
                     FIELDSYNC_ETRANSITION);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "ASSIGNED"));
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "COMPLETED"));
    assert_int_equal(fieldsync_job_create(f->fs, "J1", NULL, NULL), FIELDSYNC_EEXISTS);
    assert_int_equal(fieldsync_job_set(f->fs, "NOPE", "{\"seqno\":1}", NULL, NULL),
                     FIELDSYNC_ENOTFOUND);
    assert_int_equal(fieldsync_job_set(f->fs, "J1", "{\"jobstatus\":\"COMPLETED\"}", NULL, NULL),
                     FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "jobstatus"));
    assert_int_equal(fieldsync_job_set(f->fs, "J1", "[1]", NULL, NULL), FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "not a JSON object"));
    assert_int_equal(fieldsync_job_merge(f->fs, "J1", "{\"a\":", NULL, NULL), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_job_create(f->fs, "J 2", NULL, NULL), FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "invalid jobneed id"));
    assert_int_equal(queued(f->fs), q);
}

static void test_checkpoint_update__child_and_tour_touch(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_job_create(f->fs, "TOUR1", NULL, NULL));
    assert_fs_ok(f->fs, fieldsync_job_create(f->fs, "CP1", "{\"parent_id\":\"TOUR1\"}", NULL));
    fieldsync_rec_t rec;
    assert_fs_ok(f->fs,
                 fieldsync_checkpoint_update(f->fs, "CP1", "{\"expirytime\":45}", NULL, &rec));
    assert_true(cfx_has(f->fs, "jobneed", "CP1", "\"expirytime\":45"));
    assert_true(cfx_has(f->fs, "jobneed", "TOUR1", "\"last_checkpoint\":\"CP1\""));
    /* a job without a tour is no checkpoint */
    int64_t q = queued(f->fs);
    assert_int_equal(fieldsync_checkpoint_update(f->fs, "TOUR1", "{\"expirytime\":1}", NULL, NULL),
                     FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "no tour"));
    assert_int_equal(fieldsync_checkpoint_update(f->fs, "NOPE", "{\"expirytime\":1}", NULL, NULL),
                     FIELDSYNC_ENOTFOUND);
    assert_int_equal(queued(f->fs), q);
}

static void test_tour_update__non_terminal_checkpoints_as_one_group(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_job_create(f->fs, "T", NULL, NULL));
    for (int i = 1; i <= 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "C%d", i);
        assert_fs_ok(f->fs, fieldsync_job_create(f->fs, id, "{\"parent_id\":\"T\"}", NULL));
    }
    assert_fs_ok(f->fs, fieldsync_job_transition(f->fs, "C3", "INPROGRESS", NULL, NULL));
    assert_fs_ok(f->fs, fieldsync_job_transition(f->fs, "C3", "COMPLETED", NULL, NULL));
    size_t n = 99;
    fieldsync_rec_t rec;
    assert_fs_ok(f->fs, fieldsync_tour_update(f->fs, "T", "{\"seqno\":9}", NULL, &n, &rec));
    assert_int_equal(n, 2);
    assert_true(cfx_has(f->fs, "jobneed", "C1", "\"seqno\":9"));
    assert_true(cfx_has(f->fs, "jobneed", "C2", "\"seqno\":9"));
    assert_true(cfx_has(f->fs, "jobneed", "C3", "\"seqno\":0"));
    assert_true(cfx_has(f->fs, "jobneed", "T", "\"last_checkpoint\":\"C2\""));
    /* more than 15 open checkpoints do not fit one group: refused, nothing written */
    for (int i = 4; i <= 17; i++) { /* 16 open: C3 is done */
        char id[16];
        snprintf(id, sizeof id, "C%d", i);
        assert_fs_ok(f->fs, fieldsync_job_create(f->fs, id, "{\"parent_id\":\"T\"}", NULL));
    }
    int64_t q = queued(f->fs);
    assert_int_equal(fieldsync_tour_update(f->fs, "T", "{\"seqno\":10}", NULL, &n, NULL),
                     FIELDSYNC_ETOOLARGE);
    assert_int_equal(n, 0);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "at most 15"));
    assert_int_equal(queued(f->fs), q);
    assert_int_equal(fieldsync_tour_update(f->fs, "NOPE", "{\"seqno\":1}", NULL, &n, NULL),
                     FIELDSYNC_ENOTFOUND);
    /* A checkpoint is not a tour: refused, nothing written (it said OK, 0 updated). */
    assert_int_equal(fieldsync_tour_update(f->fs, "C1", "{\"seqno\":1}", NULL, &n, NULL),
                     FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "jobneed C1 is a checkpoint"));
    assert_int_equal(queued(f->fs), q);
    /* A tour with no open checkpoint: nothing to record, and the call says so. */
    assert_fs_ok(f->fs, fieldsync_job_create(f->fs, "T2", NULL, NULL));
    q = queued(f->fs);
    fieldsync_rec_t none;
    n = 99;
    assert_fs_ok(f->fs, fieldsync_tour_update(f->fs, "T2", "{\"seqno\":1}", NULL, &n, &none));
    assert_int_equal(n, 0);
    assert_string_equal(none.op_id, "");
    assert_int_equal(queued(f->fs), q);
}

/* The checkpoints are read page by page to the last one: an open checkpoint after more done ones
 * than a page holds (64; the list read one page of 1,000) is updated too. */
static void test_tour_update__reads_every_page_of_checkpoints(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_job_create(f->fs, "T", NULL, NULL));
    for (int i = 0; i < 130; i++) {
        char id[16];
        snprintf(id, sizeof id, "A%03d", i); /* before "Z" in id order */
        assert_fs_ok(
            f->fs, fieldsync_job_create(f->fs, id,
                                        "{\"parent_id\":\"T\",\"jobstatus\":\"COMPLETED\"}", NULL));
    }
    assert_fs_ok(f->fs, fieldsync_job_create(f->fs, "Z", "{\"parent_id\":\"T\"}", NULL));
    size_t n = 99;
    assert_fs_ok(f->fs, fieldsync_tour_update(f->fs, "T", "{\"seqno\":9}", NULL, &n, NULL));
    assert_int_equal(n, 1);
    assert_true(cfx_has(f->fs, "jobneed", "Z", "\"seqno\":9"));
    assert_true(cfx_has(f->fs, "jobneed", "A129", "\"seqno\":0"));
    assert_true(cfx_has(f->fs, "jobneed", "T", "\"last_checkpoint\":\"Z\""));
}

static void test_ticket__create_transition_escalate_log(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_ticket_create(f->fs, "T1", "{\"priority\":\"HIGH\"}", NULL));
    assert_fs_ok(f->fs, fieldsync_ticket_escalate(f->fs, "T1", NULL, "no answer", NULL, NULL));
    assert_fs_ok(f->fs,
                 fieldsync_ticket_escalate(f->fs, "T1", "p7", "said \"later\"\n", NULL, NULL));
    assert_fs_ok(f->fs, fieldsync_ticket_log(f->fs, "T1", "{\"action\":\"called\"}", NULL, NULL));
    assert_fs_ok(f->fs, fieldsync_ticket_transition(f->fs, "T1", "OPEN", NULL, NULL));
    char *json = cfx_get(f->fs, "ticket", "T1");
    assert_non_null(strstr(json, "\"level\":2"));
    assert_non_null(strstr(json, "\"assignedto\":\"p7\""));
    assert_non_null(strstr(json, "\"note\":\"said \\\"later\\\"\\n\""));
    assert_non_null(strstr(json, "\"action\":\"called\""));
    assert_non_null(strstr(json, "\"status\":\"OPEN\""));
    assert_non_null(strstr(json, "\"priority\":\"HIGH\""));
    fieldsync_free(json);
    int64_t q = queued(f->fs);
    assert_int_equal(fieldsync_ticket_transition(f->fs, "T1", "CLOSED", NULL, NULL),
                     FIELDSYNC_ETRANSITION);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "OPEN"));
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "CLOSED"));
    assert_int_equal(fieldsync_ticket_escalate(f->fs, "NOPE", NULL, NULL, NULL, NULL),
                     FIELDSYNC_ENOTFOUND);
    assert_int_equal(fieldsync_ticket_log(f->fs, "T1", "{oops", NULL, NULL), FIELDSYNC_EINVAL);
    assert_int_equal(queued(f->fs), q);
}

static void test_record__generic_ops_and_groups(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_record(f->fs,
                                         "{\"kind\":\"create\",\"type\":\"ticket\",\"id\":\"T1\","
                                         "\"fields\":{\"priority\":\"LOW\"}}",
                                         NULL, NULL));
    assert_fs_ok(f->fs, fieldsync_record(f->fs,
                                         " { \"kind\": \"increment\", \"type\": \"ticket\", "
                                         "\"id\": \"T1\", \"field\": \"level\", \"by\": 5 } ",
                                         NULL, NULL));
    fieldsync_rec_t rec;
    assert_fs_ok(f->fs,
                 fieldsync_record(f->fs,
                                  "[{\"kind\":\"set\",\"type\":\"ticket\",\"id\":\"T1\","
                                  "\"fields\":{\"assignedto\":\"a{[\\\"\"}},"
                                  "{\"kind\":\"append\",\"type\":\"ticket\",\"id\":\"T1\","
                                  "\"field\":\"ticketlog\",\"key\":\"ticket_history\","
                                  "\"item\":{\"x\":[{}]},\"max_len\":10},"
                                  "{\"kind\":\"transition\",\"type\":\"ticket\",\"id\":\"T1\","
                                  "\"field\":\"status\",\"to\":\"OPEN\"},"
                                  "{\"kind\":\"merge\",\"type\":\"ticket\",\"id\":\"T1\","
                                  "\"field\":\"ticketlog\",\"patch\":{\"seen\":true}}]",
                                  NULL, &rec));
    assert_int_equal(strlen(rec.op_id), 36);
    char *json = cfx_get(f->fs, "ticket", "T1");
    assert_non_null(strstr(json, "\"level\":5"));
    assert_non_null(strstr(json, "\"assignedto\":\"a{[\\\"\""));
    assert_non_null(strstr(json, "\"status\":\"OPEN\""));
    assert_non_null(strstr(json, "\"seen\":true"));
    assert_non_null(strstr(json, "\"x\":[{}]"));
    assert_non_null(strstr(json, "\"pending\":6"));
    fieldsync_free(json);
    /* a group whose last op fails writes none of it */
    int64_t q = queued(f->fs);
    assert_int_equal(fieldsync_record(f->fs,
                                      "[{\"kind\":\"increment\",\"type\":\"ticket\",\"id\":\"T1\","
                                      "\"field\":\"level\",\"by\":1},"
                                      "{\"kind\":\"transition\",\"type\":\"ticket\",\"id\":\"T1\","
                                      "\"field\":\"status\",\"to\":\"CLOSED\"}]",
                                      NULL, NULL),
                     FIELDSYNC_ETRANSITION);
    assert_true(cfx_has(f->fs, "ticket", "T1", "\"level\":5"));
    /* malformed ops are named */
    assert_int_equal(fieldsync_record(f->fs,
                                      "{\"kind\":\"frob\",\"type\":\"ticket\",\"id\":\"T1\"}", NULL,
                                      NULL),
                     FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(f->fs), "frob"));
    assert_int_equal(fieldsync_record(f->fs, "{\"kind\":\"create\"}", NULL, NULL),
                     FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_record(f->fs, "[]", NULL, NULL), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_record(f->fs, "[1]", NULL, NULL), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_record(f->fs, "{}", NULL, NULL), FIELDSYNC_EINVAL);
    assert_int_equal(fieldsync_record(f->fs, "not json", NULL, NULL), FIELDSYNC_EINVAL);
    /* a number out of a double's range is refused, not recorded as null (a merge of null
     * deletes: the history went) */
    assert_int_equal(fieldsync_record(f->fs,
                                      "{\"kind\":\"merge\",\"type\":\"ticket\",\"id\":\"T1\","
                                      "\"field\":\"ticketlog\",\"patch\":{\"seen\":1e999}}",
                                      NULL, NULL),
                     FIELDSYNC_EINVAL);
    assert_true(cfx_has(f->fs, "ticket", "T1", "\"seen\":true"));
    char big[4096] = "[";
    for (int i = 0; i < 17; i++)
        strncat(big,
                i ? ",{\"kind\":\"increment\",\"type\":\"ticket\",\"id\":\"T1\",\"field\":"
                    "\"level\",\"by\":1}"
                  : "{\"kind\":\"increment\",\"type\":\"ticket\",\"id\":\"T1\",\"field\":"
                    "\"level\",\"by\":1}",
                sizeof big - strlen(big) - 1);
    strncat(big, "]", sizeof big - strlen(big) - 1);
    assert_int_equal(fieldsync_record(f->fs, big, NULL, NULL), FIELDSYNC_ETOOLARGE);
    assert_int_equal(queued(f->fs), q);
}

static void test_list__filters_and_pages(void **state)
{
    cfx_t *f = *state;
    assert_fs_ok(f->fs, fieldsync_job_create(f->fs, "T", NULL, NULL));
    assert_fs_ok(f->fs, fieldsync_job_create(f->fs, "C1", "{\"parent_id\":\"T\"}", NULL));
    assert_fs_ok(f->fs, fieldsync_job_create(f->fs, "C2", "{\"parent_id\":\"T\"}", NULL));
    assert_fs_ok(f->fs, fieldsync_ticket_create(f->fs, "K1", NULL, NULL));
    assert_fs_ok(f->fs, fieldsync_ticket_create(f->fs, "K2", NULL, NULL));
    assert_fs_ok(f->fs, fieldsync_ticket_transition(f->fs, "K2", "OPEN", NULL, NULL));
    fieldsync_query_t q = FIELDSYNC_QUERY_INIT;
    q.type = "job";
    q.parent_id = "T";
    char *json = NULL;
    assert_fs_ok(f->fs, fieldsync_list(f->fs, &q, &json));
    assert_non_null(strstr(json, "\"id\":\"C1\""));
    assert_non_null(strstr(json, "\"id\":\"C2\""));
    assert_null(strstr(json, "\"id\":\"T\""));
    assert_non_null(strstr(json, "\"more\":false"));
    fieldsync_free(json);
    q = (fieldsync_query_t)FIELDSYNC_QUERY_INIT;
    q.type = "ticket";
    q.status = "OPEN";
    assert_fs_ok(f->fs, fieldsync_list(f->fs, &q, &json));
    assert_non_null(strstr(json, "\"id\":\"K2\""));
    assert_null(strstr(json, "\"id\":\"K1\""));
    fieldsync_free(json);
    /* pages of one */
    q = (fieldsync_query_t)FIELDSYNC_QUERY_INIT;
    q.type = "ticket";
    q.limit = 1;
    assert_fs_ok(f->fs, fieldsync_list(f->fs, &q, &json));
    assert_non_null(strstr(json, "\"id\":\"K1\""));
    assert_non_null(strstr(json, "\"more\":true,\"next_after\":\"K1\""));
    fieldsync_free(json);
    q.after_id = "K1";
    assert_fs_ok(f->fs, fieldsync_list(f->fs, &q, &json));
    assert_non_null(strstr(json, "\"id\":\"K2\""));
    fieldsync_free(json);
    q.after_id = "K2";
    assert_fs_ok(f->fs, fieldsync_list(f->fs, &q, &json));
    assert_non_null(strstr(json, "{\"entities\":[],\"more\":false,\"next_after\":null}"));
    fieldsync_free(json);
}

static void test_status_and_conflicts__fresh_journal(void **state)
{
    cfx_t *f = *state;
    fieldsync_sync_status_t s = {.size = sizeof s};
    assert_fs_ok(f->fs, fieldsync_status(f->fs, &s));
    assert_int_equal(s.state, FIELDSYNC_STATE_IDLE);
    assert_int_equal(s.queue_depth, 0);
    assert_int_equal(s.last_error, FIELDSYNC_OK);
    assert_fs_ok(f->fs, fieldsync_ticket_create(f->fs, "K1", NULL, NULL));
    assert_fs_ok(f->fs, fieldsync_status(f->fs, &s));
    assert_int_equal(s.queue_depth, 1);
    char *json = NULL;
    assert_fs_ok(f->fs, fieldsync_conflicts(f->fs, true, &json));
    assert_string_equal(json, "[]");
    fieldsync_free(json);
    assert_fs_ok(f->fs, fieldsync_info(f->fs, &json));
    assert_non_null(strstr(json, "{\"device_id\":\"dev000\",\"server\":\"http://127.0.0.1:9\","
                                 "\"pending\":1,\"inflight\":0,\"conflicts\":0,\"rejected\":0,"));
    assert_non_null(strstr(json, "\"next_attempt_ms\":0,\"sync_failures\":0"));
    fieldsync_free(json);
    assert_int_equal(
        fieldsync_conflict_resolve(f->fs, "00000000-0000-4000-8000-000000000000", false, NULL),
        FIELDSYNC_ENOTFOUND);
}

/* The state as the journal shows it: OFFLINE while the stored next attempt is ahead, ATTENTION
 * once the sync thread noted that the server refused our credentials (fsl__sync_note). */
static void test_status__offline_and_attention_from_the_journal(void **state)
{
    cfx_t *f = *state;
    fieldsync_sync_status_t s = {.size = sizeof s};
    int64_t now = fsa_port_posix()->wall_now(NULL).ms;
    fsa_backoff_state_t backoff = {.next_attempt_ms = now + 60000, .failures = 1};
    assert_fsa_ok(fsa_journal_backoff_set(f->fs->j, &backoff));
    assert_fs_ok(f->fs, fieldsync_status(f->fs, &s));
    assert_int_equal(s.state, FIELDSYNC_STATE_OFFLINE);
    assert_int_equal(s.next_attempt_ms, now + 60000);
    assert_non_null(strstr(s.reason, "backing off"));
    assert_fsa_ok(fsl__sync_note(f->fs, FSA_EAUTH, "server said 401 bad_signature"));
    assert_fs_ok(f->fs, fieldsync_status(f->fs, &s));
    assert_int_equal(s.state, FIELDSYNC_STATE_ATTENTION);
    assert_int_equal(s.last_error, FIELDSYNC_EAUTH);
    assert_string_equal(s.last_error_msg, "server said 401 bad_signature");
    assert_fsa_ok(fsl__sync_note(f->fs, FSA_OK, NULL));
    backoff = (fsa_backoff_state_t){0};
    assert_fsa_ok(fsa_journal_backoff_set(f->fs->j, &backoff));
    assert_fs_ok(f->fs, fieldsync_status(f->fs, &s));
    assert_int_equal(s.state, FIELDSYNC_STATE_IDLE);
    assert_string_equal(s.last_error_msg, "");
}

static void test_open__stored_configuration_and_overrides(void **state)
{
    cfx_t *f = *state;
    /* reopen without init: the stored configuration; a device id that does not match fails */
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = f->db;
    fieldsync_t *fs = NULL;
    assert_fs_ok(fs, fieldsync_open(&cfg, &fs));
    assert_fs_ok(fs, fieldsync_ticket_create(fs, "K1", NULL, NULL));
    assert_fs_ok(fs, fieldsync_close(fs));
    assert_true(cfx_has(f->fs, "ticket", "K1", "\"status\":\"NEW\""));
    cfg.device_id = "dev999";
    assert_int_equal(fieldsync_open(&cfg, &fs), FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(fs), "belongs to device dev000"));
    assert_non_null(strstr(fieldsync_errmsg(NULL), "belongs to device dev000"));
    assert_fs_ok(NULL, fieldsync_close(fs));
    /* init again with another device: refused, the journal keeps its device */
    fieldsync_config_t init = cfx_config(f, FIELDSYNC_OPEN_INIT);
    init.device_id = "dev001";
    assert_int_equal(fieldsync_open(&init, &fs), FIELDSYNC_EINVAL);
    assert_fs_ok(NULL, fieldsync_close(fs));
    /* init again with the same device and a policy: accepted (a new server address) */
    init.device_id = "dev000";
    init.server_url = "http://127.0.0.1:10";
    init.resolver_policy = "ticket.priority=server-wins,jobneed=park";
    init.retry_policy = "AGGRESSIVE";
    assert_fs_ok(fs, fieldsync_open(&init, &fs));
    assert_fs_ok(fs, fieldsync_close(fs));
    /* the journal's own options are stored too, and a plain open uses them */
    init.durability = FIELDSYNC_DURABLE_NORMAL;
    init.budget_bytes = 64LL * 1024 * 1024;
    init.sync_interval_ms = 5000;
    assert_fs_ok(fs, fieldsync_open(&init, &fs));
    assert_fs_ok(fs, fieldsync_close(fs));
    init.durability = FIELDSYNC_DURABLE_FULL;
    init.budget_bytes = 0;
    init.sync_interval_ms = 0;
    cfg.device_id = NULL;
    assert_fs_ok(fs, fieldsync_open(&cfg, &fs));
    assert_int_equal(fs->cfg.durability, FIELDSYNC_DURABLE_NORMAL);
    assert_int_equal(fs->cfg.sync_interval_ms, 5000);
    assert_int_equal(fs->cfg.budget_bytes, 64LL * 1024 * 1024);
    assert_string_equal(fs->cfg.retry_policy, "AGGRESSIVE");
    assert_fs_ok(fs, fieldsync_ticket_create(fs, "K2", NULL, NULL));
    assert_fs_ok(fs, fieldsync_close(fs));
    /* bad policies, URL and secret are refused before anything is written */
    init.resolver_policy = "ticket.nofield=server-wins";
    assert_int_equal(fieldsync_open(&init, &fs), FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(fs), "nofield"));
    assert_fs_ok(NULL, fieldsync_close(fs));
    init.resolver_policy = "ticket=maybe";
    assert_int_equal(fieldsync_open(&init, &fs), FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(fs), "maybe"));
    assert_fs_ok(NULL, fieldsync_close(fs));
    init.resolver_policy = NULL;
    init.retry_policy = "SOMETIMES";
    assert_int_equal(fieldsync_open(&init, &fs), FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(fs), "SOMETIMES"));
    assert_fs_ok(NULL, fieldsync_close(fs));
    init.retry_policy = NULL;
    init.server_url = "http://server.invalid:8080";
    assert_int_equal(fieldsync_open(&init, &fs), FIELDSYNC_EINVAL);
    assert_non_null(strstr(fieldsync_errmsg(fs), "http"));
    assert_fs_ok(NULL, fieldsync_close(fs));
    init.server_url = "http://127.0.0.1:9";
    assert_int_equal(chmod(f->secret, 0644), 0);
    assert_int_equal(fieldsync_open(&init, &fs), FIELDSYNC_EPERM);
    assert_non_null(strstr(fieldsync_errmsg(fs), "chmod 600"));
    assert_fs_ok(NULL, fieldsync_close(fs));
    assert_int_equal(chmod(f->secret, 0600), 0);
    /* a journal that does not exist, without init: ENOTFOUND, no file made */
    char missing[450];
    snprintf(missing, sizeof missing, "%s/none.db", f->dir);
    cfg = (fieldsync_config_t)FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = missing;
    assert_int_equal(fieldsync_open(&cfg, &fs), FIELDSYNC_ENOTFOUND);
    assert_non_null(strstr(fieldsync_errmsg(fs), "fieldsync init"));
    assert_fs_ok(NULL, fieldsync_close(fs));
    assert_int_not_equal(access(missing, F_OK), 0);
}

/* A port whose mutex_new fails at its fail_at-th call (counting from 1), and only then. */
static fsa_port_t mutex_base;
static int mutex_calls, mutex_fail_at;

static fsa_status_t mutex_new_failing(void *ctx, fsa_mutex_t **out)
{
    if (++mutex_calls == mutex_fail_at)
        return FSA_ENOMEM;
    return mutex_base.mutex_new(ctx, out);
}

/* A FIELDSYNC_OPEN_INIT that fails stores no configuration (a failed call writes nothing): the
 * next open finds the journal not set up, whichever step failed. Here each mutex the open makes
 * fails in turn (the journal's, the listeners'...). The configuration was stored before the
 * listeners were set up: an init failing there left a device set up. */
static void test_open_init__a_failed_init_stores_no_configuration(void **state)
{
    cfx_t *f = *state;
    mutex_base = *fsa_port_posix();
    fsa_port_t port = mutex_base;
    port.mutex_new = mutex_new_failing;
    int failed = 0;
    for (int k = 1; k < 100; k++) {
        char db[440];
        snprintf(db, sizeof db, "%s/init-%d.db", f->dir, k);
        fieldsync_config_t cfg = cfx_config(f, FIELDSYNC_OPEN_INIT);
        cfg.journal_path = db;
        mutex_calls = 0;
        mutex_fail_at = k;
        fieldsync_t *fs = NULL;
        fieldsync_status_t st = fsl__open_with_port(&cfg, &port, &fs);
        bool reached = mutex_calls >= k;
        fieldsync_close(fs);
        if (!reached) { /* past the open's last mutex: it worked */
            assert_int_equal(st, FIELDSYNC_OK);
            break;
        }
        if (st == FIELDSYNC_OK)
            fail_msg("the open succeeded with its mutex %d failing", k);
        failed++;
        fieldsync_config_t plain = FIELDSYNC_CONFIG_INIT;
        plain.journal_path = db;
        fieldsync_t *again = NULL;
        st = fieldsync_open(&plain, &again);
        if (st == FIELDSYNC_OK)
            fail_msg("an init that failed at its mutex %d left the journal set up", k);
        fieldsync_close(again);
    }
    assert_true(failed >= 3); /* the journal's mutex and the listeners' two at least */
}

/* The simulator's hook: a handle on a sim port stamps records with the sim's clock. */
static void test_open_with_port__the_ports_clock(void **state)
{
    cfx_t *f = *state;
    fsa_sim_t *sim = NULL;
    assert_fsa_ok(fsa_sim_new(7, (fsa_wall_t){1700000000000}, "dev", &sim));
    fieldsync_config_t cfg = FIELDSYNC_CONFIG_INIT;
    cfg.journal_path = f->db;
    cfg.label = "sim";
    fieldsync_t *fs = NULL;
    assert_fs_ok(fs, fsl__open_with_port(&cfg, fsa_sim_port(sim), &fs));
    fsa_sim_advance(sim, 5 * FSA_NS_PER_S);
    assert_fs_ok(fs, fieldsync_attendance(fs, true, "p1", "s1", NULL, "A1", NULL, NULL));
    assert_true(cfx_has(fs, "attendance", "A1", "\"at\":1700000005000"));
    assert_fs_ok(fs, fieldsync_close(fs));
    assert_int_equal(fsl__open_with_port(&cfg, NULL, &fs), FIELDSYNC_EINVAL);
    fsa_sim_free(sim);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, cfx_setup, cfx_teardown)
    const struct CMUnitTest tests[] = {
        T(test_attendance__with_position_lands),
        T(test_attendance__without_position_is_null),
        T(test_attendance__bad_values_named_and_nothing_written),
        T(test_job__create_set_merge_transition),
        T(test_job__errors_name_the_problem_and_write_nothing),
        T(test_checkpoint_update__child_and_tour_touch),
        T(test_tour_update__non_terminal_checkpoints_as_one_group),
        T(test_tour_update__reads_every_page_of_checkpoints),
        T(test_ticket__create_transition_escalate_log),
        T(test_record__generic_ops_and_groups),
        T(test_list__filters_and_pages),
        T(test_status_and_conflicts__fresh_journal),
        T(test_status__offline_and_attention_from_the_journal),
        T(test_open__stored_configuration_and_overrides),
        T(test_open_with_port__the_ports_clock),
        T(test_open_init__a_failed_init_stores_no_configuration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
