/* Tests for sync/devices.c: the server's devices file, decoded (cases, limits) and loaded from a
 * private file (sizes past 1 MiB up to the bounds, and one past each bound refused). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "port/alloc.h"
#include "sync/devices.h"
#include "tests/test_util.h"

#define SECRET "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

static void test_fsa_devices_decode__cases(void **state)
{
    (void)state;
    const char *ok = "{\"devices\":[{\"id\":\"dev002\",\"secret\":\"" SECRET "\"},"
                     "{\"id\":\"dev001\",\"secret\":"
                     "\"FF0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"}]}";
    fsa_device_entry_t *d = NULL;
    size_t n = 0;
    char err[256];
    assert_fsa_ok(fsa_devices_decode(ok, strlen(ok), &d, &n, err, sizeof err));
    assert_int_equal(n, 2);
    assert_string_equal(d[0].id, "dev001"); /* sorted */
    assert_string_equal(d[1].id, "dev002");
    assert_string_equal(d[1].secret_hex, SECRET);
    assert_null(d[0].scope);
    fsa_devices_free(d, n);
    /* A scope: sites and people, each optional; null is no scope. */
    const char *scoped = "{\"devices\":[{\"id\":\"d1\",\"secret\":\"" SECRET "\","
                         "\"scope\":{\"sites\":[\"S1\",\"S2\"],\"people\":[\"P1\"]}},"
                         "{\"id\":\"d2\",\"secret\":\"" SECRET "\",\"scope\":{\"people\":[]}},"
                         "{\"id\":\"d3\",\"secret\":\"" SECRET "\",\"scope\":null}]}";
    assert_fsa_ok(fsa_devices_decode(scoped, strlen(scoped), &d, &n, err, sizeof err));
    assert_int_equal(n, 3);
    assert_non_null(d[0].scope);
    assert_int_equal(d[0].scope->nsites, 2);
    assert_string_equal(d[0].scope->sites[1], "S2");
    assert_int_equal(d[0].scope->npeople, 1);
    assert_string_equal(d[0].scope->people[0], "P1");
    assert_non_null(d[1].scope);
    assert_int_equal(d[1].scope->nsites + d[1].scope->npeople, 0);
    assert_null(d[2].scope);
    fsa_devices_free(d, n);
    static const struct {
        const char *text;
        const char *needle;
    } bad[] = {
        {"{}", "expected {\"devices\""},
        {"{\"devices\":[]}", "1..100000 devices"},
        {"{\"devices\":[{\"id\":\"a\",\"secret\":\"00\"}]}", "device a: secret must be 64 hex"},
        {"{\"devices\":[{\"id\":\"a b\",\"secret\":\"" SECRET "\"}]}", "devices[0]: id must be"},
        {"{\"devices\":[{\"secret\":\"" SECRET "\"}]}", "devices[0]: id must be"},
        {"{\"devices\":[7]}", "devices[0]: id must be"},
        {"{\"devices\":[{\"id\":\"a\",\"secret\":\"" SECRET "\"},{\"id\":\"a\",\"secret\":\"" SECRET
         "\"}]}",
         "device a is listed twice"},
        {"not json", "not valid JSON"},
        {"{\"devices\":[]} x", "trailing bytes"},
        {"{\"devices\":[{\"id\":\"a\",\"secret\":\"" SECRET "\",\"scope\":[]}]}",
         "device a: scope"},
        {"{\"devices\":[{\"id\":\"a\",\"secret\":\"" SECRET "\",\"scope\":{\"sites\":[\"\"]}}]}",
         "device a: scope"},
        {"{\"devices\":[{\"id\":\"a\",\"secret\":\"" SECRET "\",\"scope\":{\"people\":\"P1\"}}]}",
         "device a: scope"},
        {"{\"devices\":[{\"id\":\"a\",\"secret\":\"" SECRET
         "\",\"scope\":{\"sites\":[[[[\"deep\"]]]]}}]}",
         "depth limit"},
    };
    fsa_device_entry_t stale;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        d = &stale; /* reset by the call */
        n = 99;
        fsa_status_t st =
            fsa_devices_decode(bad[i].text, strlen(bad[i].text), &d, &n, err, sizeof err);
        if ((st != FSA_EINVAL && st != FSA_ETOOLARGE) || strstr(err, bad[i].needle) == NULL)
            fail_msg("case %zu: %d '%s', wanted '%s'", i, (int)st, err, bad[i].needle);
        assert_null(d);
        assert_int_equal(n, 0);
        assert_null(strchr(err, '\n'));
        assert_null(strstr(err, "0001020304")); /* never echo a secret */
    }
    assert_int_equal(fsa_devices_decode(NULL, 0, &d, &n, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_devices_decode(ok, strlen(ok), NULL, &n, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_devices_decode(ok, strlen(ok), &d, NULL, NULL, 0), FSA_EINVAL);
    fsa_devices_free(NULL, 0);
}

/* A private temporary directory for the files of one test. */
typedef struct tmp {
    char dir[64];
    char path[128];
} tmp_t;

static void tmp_make(tmp_t *t, const char *name)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/fsa-devices-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof t->path, "%s/%s", t->dir, name);
}

static void tmp_remove(tmp_t *t)
{
    unlink(t->path);
    rmdir(t->dir);
}

/* Writes a devices file of n devices ("dev000000"...) with mode 0600; returns its size. */
static size_t write_devices(const char *path, size_t n)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fchmod(fileno(f), 0600), 0);
    fputs("{\"devices\": [\n", f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s{\"id\": \"dev%06zu\", \"secret\": \"" SECRET "\"}", i ? ",\n" : "", i);
    fputs("\n]}\n", f);
    long size = ftell(f);
    assert_int_equal(fclose(f), 0);
    return (size_t)size;
}

/* The most devices a file may hold, many MiB of them, load; one more is refused in one line. */
static void test_fsa_devices_load__past_one_mib_up_to_the_limit(void **state)
{
    (void)state;
    tmp_t t;
    tmp_make(&t, "devices.json");
    size_t size = write_devices(t.path, FSA_DEVICES_MAX);
    assert_true(size > 1024 * 1024 && size <= FSA_DEVICES_FILE_BYTES);
    fsa_device_entry_t *d = NULL;
    size_t n = 0;
    char err[512];
    fsa_status_t st = fsa_devices_load(t.path, &d, &n, err, sizeof err);
    if (st != FSA_OK)
        fail_msg("%zu bytes: %d %s", size, (int)st, err);
    assert_int_equal(n, FSA_DEVICES_MAX);
    assert_string_equal(d[0].id, "dev000000");
    assert_string_equal(d[n - 1].id, "dev099999");
    assert_string_equal(d[n - 1].secret_hex, SECRET);
    fsa_devices_free(d, n);

    write_devices(t.path, FSA_DEVICES_MAX + 1);
    assert_int_equal(fsa_devices_load(t.path, &d, &n, err, sizeof err), FSA_ETOOLARGE);
    assert_null(d);
    assert_int_equal(n, 0);
    char want[512];
    snprintf(want, sizeof want,
             "the devices file %s is malformed: the devices list must hold 1..100000 devices, "
             "not 100001",
             t.path);
    assert_string_equal(err, want);
    tmp_remove(&t);
}

/* Past the byte bound the file is refused before it is read; an open file, a missing one, not. */
static void test_fsa_devices_load__file_errors(void **state)
{
    (void)state;
    tmp_t t;
    tmp_make(&t, "devices.json");
    fsa_device_entry_t *d = NULL;
    size_t n = 0;
    char err[512];
    assert_int_equal(fsa_devices_load(t.path, &d, &n, err, sizeof err), FSA_ENOTFOUND);
    assert_non_null(strstr(err, "cannot read the devices file: "));

    int fd = open(t.path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)FSA_DEVICES_FILE_BYTES + 1), 0); /* sparse */
    close(fd);
    assert_int_equal(fsa_devices_load(t.path, &d, &n, err, sizeof err), FSA_ETOOLARGE);
    assert_non_null(strstr(err, "refusing the devices file: "));
    assert_non_null(strstr(err, "too large"));
    assert_null(strchr(err, '\n'));

    write_devices(t.path, 3);
    assert_int_equal(chmod(t.path, 0644), 0);
    assert_int_equal(fsa_devices_load(t.path, &d, &n, err, sizeof err), FSA_EPERM);
    assert_non_null(strstr(err, "chmod 600"));
    assert_int_equal(chmod(t.path, 0600), 0);
    assert_fsa_ok(fsa_devices_load(t.path, &d, &n, err, sizeof err));
    assert_int_equal(n, 3);
    fsa_devices_free(d, n);
    assert_int_equal(fsa_devices_load(NULL, &d, &n, err, sizeof err), FSA_EINVAL);
    tmp_remove(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsa_devices_decode__cases),
        cmocka_unit_test(test_fsa_devices_load__past_one_mib_up_to_the_limit),
        cmocka_unit_test(test_fsa_devices_load__file_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
