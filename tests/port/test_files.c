/* Tests for port/posix/files.c: private files (secrets) are refused when others may read them,
 * reads are bounded, and a process can keep its secrets out of core dumps. */
#define _XOPEN_SOURCE 700 /* realpath, symlink */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "port/alloc.h"
#include "port/files.h"
#include "tests/test_util.h"

#define SECRET "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

typedef struct fx {
    char dir[64];
    char path[128];
} fx_t;

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
}

static int setup(void **state)
{
    fx_t *f = fsa_calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/fsa-files-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof f->path, "%s/secret", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    alarm(0); /* a test that failed while its alarm was set must not end a later one */
    fx_t *f = *state;
    char p[400];
    snprintf(p, sizeof p, "%s/secret/inner", f->dir);
    (void)unlink(p);
    DIR *d = opendir(f->dir);
    for (struct dirent *e = d != NULL ? readdir(d) : NULL; e != NULL; e = readdir(d)) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", f->dir, e->d_name);
        if (unlink(p) != 0)
            rmdir(p);
    }
    if (d != NULL)
        closedir(d);
    rmdir(f->dir);
    fsa_free(f);
    return 0;
}

static void test_file_read__private_file_is_read_whole(void **state)
{
    fx_t *f = *state;
    write_file(f->path, SECRET "\n", 0600);
    char *text = NULL, err[256];
    size_t len = 0;
    assert_fsa_ok(fsa_file_read(f->path, 4096, 1, &text, &len, err, sizeof err));
    assert_int_equal(len, 65);
    assert_memory_equal(text, SECRET "\n", 66); /* NUL terminated */
    fsa_file_wipe_free(text, len);
    /* 0400 is private too */
    assert_int_equal(chmod(f->path, 0400), 0);
    assert_fsa_ok(fsa_file_read(f->path, 4096, 1, &text, &len, err, sizeof err));
    fsa_file_wipe_free(text, len);
}

static void test_file_read__others_may_read_is_refused_without_content(void **state)
{
    fx_t *f = *state;
    const mode_t wide[] = {0640, 0604, 0620, 0602, 0660, 0644, 0666};
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++) {
        write_file(f->path, SECRET, wide[i]);
        char *text = (char *)"untouched", err[256];
        size_t len = 99;
        assert_int_equal(fsa_file_read(f->path, 4096, 1, &text, &len, err, sizeof err), FSA_EPERM);
        assert_null(text);
        assert_int_equal(len, 0);
        char mode[16];
        snprintf(mode, sizeof mode, "%04o", (unsigned)wide[i]);
        assert_non_null(strstr(err, mode));
        assert_non_null(strstr(err, "chmod 600"));
        assert_non_null(strstr(err, f->path));
        assert_null(strstr(err, "0011223344")); /* the error never carries the content */
        assert_null(strchr(err, '\n'));
        /* not private: the same file reads */
        assert_fsa_ok(fsa_file_read(f->path, 4096, 0, &text, &len, err, sizeof err));
        fsa_file_wipe_free(text, len);
    }
}

static void test_file_read__owned_by_someone_else_is_refused(void **state)
{
    fx_t *f = *state;
    write_file(f->path, SECRET, 0600);
    /* Only root can give a file away; CI runs the suite as root. As another user the check is
     * the same code path as above and this case cannot be set up. */
    if (geteuid() != 0) {
        print_message("not root: cannot chown a file to another user here\n");
        return;
    }
    assert_int_equal(chown(f->path, 65534, 65534), 0);
    char *text = NULL, err[256];
    size_t len = 0;
    assert_int_equal(fsa_file_read(f->path, 4096, 1, &text, &len, err, sizeof err), FSA_EPERM);
    assert_non_null(strstr(err, "owned by uid 65534"));
    assert_null(text);
}

static void test_file_read__bounded_and_only_regular_files(void **state)
{
    fx_t *f = *state;
    write_file(f->path, SECRET, 0600);
    char *text = NULL, err[256];
    size_t len = 0;
    /* exactly at the limit reads; one byte over does not */
    assert_fsa_ok(fsa_file_read(f->path, 64, 1, &text, &len, err, sizeof err));
    assert_int_equal(len, 64);
    fsa_file_wipe_free(text, len);
    assert_int_equal(fsa_file_read(f->path, 63, 1, &text, &len, err, sizeof err), FSA_ETOOLARGE);
    assert_non_null(strstr(err, "too large"));
    assert_null(text);
    /* missing */
    char other[160];
    snprintf(other, sizeof other, "%s/missing", f->dir);
    assert_int_equal(fsa_file_read(other, 64, 1, &text, &len, err, sizeof err), FSA_ENOTFOUND);
    assert_non_null(strstr(err, other));
    /* a directory */
    snprintf(other, sizeof other, "%s/sub", f->dir);
    assert_int_equal(mkdir(other, 0700), 0);
    assert_int_equal(fsa_file_read(other, 64, 1, &text, &len, err, sizeof err), FSA_EINVAL);
    assert_non_null(strstr(err, "not a regular file"));
    /* a FIFO that no writer opens: refused at once, for a secret and a public file (it waited
     * for a writer; SIGALRM ends the test if it still does) */
    snprintf(other, sizeof other, "%s/fifo", f->dir);
    assert_int_equal(mkfifo(other, 0600), 0);
    alarm(20);
    for (int private_only = 0; private_only <= 1; private_only++) {
        assert_int_equal(fsa_file_read(other, 64, private_only, &text, &len, err, sizeof err),
                         FSA_EINVAL);
        assert_non_null(strstr(err, "not a regular file"));
        assert_null(text);
    }
    alarm(0);
    /* a symlink is not followed: a secret path cannot be redirected to another file */
    snprintf(other, sizeof other, "%s/link", f->dir);
    assert_int_equal(symlink(f->path, other), 0);
    assert_int_not_equal(fsa_file_read(other, 64, 1, &text, &len, err, sizeof err), FSA_OK);
    assert_null(text);
    assert_non_null(strstr(err, other));
    /* ... a public file's is: its target is read */
    assert_int_equal(fsa_file_read(other, 64, 0, &text, &len, err, sizeof err), FSA_OK);
    assert_non_null(text);
    fsa_file_wipe_free(text, len);
    text = NULL;
    /* bad arguments */
    assert_int_equal(fsa_file_read(NULL, 64, 1, &text, &len, err, sizeof err), FSA_EINVAL);
    assert_int_equal(fsa_file_read(f->path, 64, 1, NULL, &len, err, sizeof err), FSA_EINVAL);
}

static void test_protect_secrets__no_core_dump(void **state)
{
    (void)state;
    /* In a child: the setting is irreversible for the process. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char err[160];
        if (fsa_process_protect_secrets(err, sizeof err) != FSA_OK)
            _exit(10);
        struct rlimit rl;
        if (getrlimit(RLIMIT_CORE, &rl) != 0 || rl.rlim_cur != 0 || rl.rlim_max != 0)
            _exit(11);
#ifdef __linux__
        if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
            _exit(12);
#endif
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static mode_t mode_of(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return sb.st_mode & 07777;
}

static void test_file_create_private__0600_under_any_umask(void **state)
{
    fx_t *f = *state;
    char err[256] = "";
    mode_t old = umask(0);
    assert_int_equal(fsa_file_create_private(f->path, err, sizeof err), FSA_OK);
    umask(old);
    assert_int_equal(mode_of(f->path), 0600);
    /* An existing file is no error and keeps its content. */
    write_file(f->path, "kept", 0600);
    assert_int_equal(fsa_file_create_private(f->path, err, sizeof err), FSA_OK);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(fsa_file_read(f->path, 64, 1, &text, &len, err, sizeof err), FSA_OK);
    assert_string_equal(text, "kept");
    fsa_free(text);
    /* A directory that does not exist: EIO naming the path. */
    char bad[200];
    snprintf(bad, sizeof bad, "%s/sub/journal", f->dir);
    assert_int_equal(fsa_file_create_private(bad, err, sizeof err), FSA_EIO);
    assert_non_null(strstr(err, bad));
}

static void test_file_exists__found_missing_and_unknowable(void **state)
{
    fx_t *f = *state;
    char err[256] = "";
    assert_int_equal(fsa_file_exists(f->path, err, sizeof err), FSA_ENOTFOUND);
    write_file(f->path, "x", 0600);
    assert_int_equal(fsa_file_exists(f->path, err, sizeof err), FSA_OK);
    assert_int_equal(fsa_file_exists(f->dir, err, sizeof err), FSA_OK);
    /* Under a regular file (ENOTDIR): neither there nor known missing. */
    char bad[200];
    snprintf(bad, sizeof bad, "%s/x", f->path);
    assert_int_equal(fsa_file_exists(bad, err, sizeof err), FSA_EIO);
    assert_non_null(strstr(err, bad));
}

/* Starting a file's writeback: done on Linux for a file that exists; a missing one says so (the
 * caller then syncs). */
static void test_file_start_writeback__started_or_refused(void **state)
{
    fx_t *f = *state;
    assert_int_equal(fsa_file_start_writeback(f->path), FSA_EIO);
    write_file(f->path, "dirty pages", 0600);
#ifdef __linux__
    assert_int_equal(fsa_file_start_writeback(f->path), FSA_OK);
#endif
}

static void test_file_make_private__narrows_and_leaves_private_alone(void **state)
{
    fx_t *f = *state;
    char err[256] = "";
    assert_int_equal(fsa_file_make_private(f->path, err, sizeof err), FSA_OK); /* missing */
    write_file(f->path, "x", 0664);
    assert_int_equal(fsa_file_make_private(f->path, err, sizeof err), FSA_OK);
    assert_int_equal(mode_of(f->path), 0600);
    assert_int_equal(chmod(f->path, 0400), 0);
    assert_int_equal(fsa_file_make_private(f->path, err, sizeof err), FSA_OK);
    assert_int_equal(mode_of(f->path), 0400);
    assert_int_equal(chmod(f->path, 0755), 0);
    assert_int_equal(fsa_file_make_private(f->path, err, sizeof err), FSA_OK);
    assert_int_equal(mode_of(f->path), 0700);
    char bad[200];
    snprintf(bad, sizeof bad, "%s/x", f->path);
    assert_int_equal(fsa_file_make_private(bad, err, sizeof err), FSA_EIO);
    assert_non_null(strstr(err, bad));
    /* Someone else's file open to others cannot be narrowed: EPERM naming its mode. root may
     * chmod anything, so this part needs an unprivileged run (the suite runs as root in CI
     * containers: there it is skipped, the narrowing above is not). */
    if (geteuid() != 0 && mode_of("/etc/passwd") == 0644) {
        assert_int_equal(fsa_file_make_private("/etc/passwd", err, sizeof err), FSA_EPERM);
        assert_non_null(strstr(err, "mode 0644"));
    }
}

/* The files of dir whose name starts with base's name and ".tmp": temporary files left behind. */
static int leftovers(const char *dir, const char *path)
{
    const char *base = strrchr(path, '/') != NULL ? strrchr(path, '/') + 1 : path;
    char prefix[160];
    snprintf(prefix, sizeof prefix, "%s.tmp", base);
    int n = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e = d != NULL ? readdir(d) : NULL; e != NULL; e = readdir(d))
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    if (d != NULL)
        closedir(d);
    return n;
}

static void test_file_write_atomic__replaces_whole(void **state)
{
    fx_t *f = *state;
    char err[256] = "";
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(fsa_file_write_atomic(f->path, "first\n", 6, err, sizeof err), FSA_OK);
    assert_int_equal(fsa_file_read(f->path, 64, 0, &text, &len, err, sizeof err), FSA_OK);
    assert_string_equal(text, "first\n");
    fsa_free(text);
    assert_int_equal(fsa_file_write_atomic(f->path, "2nd", 3, err, sizeof err), FSA_OK);
    assert_int_equal(fsa_file_read(f->path, 64, 0, &text, &len, err, sizeof err), FSA_OK);
    assert_string_equal(text, "2nd");
    assert_int_equal(len, 3);
    fsa_free(text);
    assert_int_equal(leftovers(f->dir, f->path), 0); /* renamed, nothing left beside it */
    /* An unwritable place: EIO naming it, the file as it was. */
    char bad[200];
    snprintf(bad, sizeof bad, "%s/sub/metrics", f->dir);
    assert_int_equal(fsa_file_write_atomic(bad, "x", 1, err, sizeof err), FSA_EIO);
    assert_non_null(strstr(err, bad));
}

/* A file's text (at most 63 bytes), "" when it cannot be read. */
static const char *text_of(const char *path)
{
    static char buf[64];
    buf[0] = '\0';
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return buf;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    return buf;
}

/* Whatever is beside path under a temporary-looking name (a symlink, a hard link, a file of
 * someone else's, such as a journal named "<path>.tmp") is neither written through nor removed:
 * the temporary file is one of the call's own. Planted at "<path>.tmp" (the name used before) and
 * at the next names this process would take. */
static void test_file_write_atomic__never_writes_through_the_temporary_name(void **state)
{
    fx_t *f = *state;
    char err[256] = "", victim[200], name[240];
    snprintf(victim, sizeof victim, "%s/victim", f->dir);
    write_file(victim, "keep", 0600);
    snprintf(name, sizeof name, "%s.tmp", f->path);
    assert_int_equal(symlink(victim, name), 0);
    /* the names "<path>.tmp.<pid>.<n>" for the next n: links to victim, whatever n is next */
    for (int n = 0; n < 60; n++) {
        snprintf(name, sizeof name, "%s.tmp.%ld.%d", f->path, (long)getpid(), n);
        assert_int_equal(n % 2 == 0 ? symlink(victim, name) : link(victim, name), 0);
    }
    assert_fsa_ok(fsa_file_write_atomic(f->path, "new", 3, err, sizeof err));
    assert_string_equal(text_of(victim), "keep");
    assert_string_equal(text_of(f->path), "new");
    struct stat sb;
    assert_int_equal(lstat(f->path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode)); /* the file itself, not a planted link renamed over it */
    assert_int_equal(leftovers(f->dir, f->path), 61); /* the planted ones, nothing else */
    for (int n = 0; n < 60; n++) {
        snprintf(name, sizeof name, "%s.tmp.%ld.%d", f->path, (long)getpid(), n);
        assert_int_equal(unlink(name), 0);
    }
    snprintf(name, sizeof name, "%s.tmp", f->path);
    assert_int_equal(unlink(name), 0);
}

/* Writers of one path at once (two daemons given one --metrics-file): a reader sees one whole
 * file or another, never a short one. With one fixed temporary name, a writer removed the other's
 * temporary file and the other renamed a half-written one into place. */
enum { TWO_WRITERS_BYTES = 1024 * 1024 };
static const char *g_two_path;
static atomic_int g_two_stop, g_two_failed;

static void *two_writer(void *arg)
{
    char *d = fsa_malloc(TWO_WRITERS_BYTES);
    if (d == NULL)
        return NULL;
    memset(d, (int)(intptr_t)arg, TWO_WRITERS_BYTES);
    char err[512];
    while (!atomic_load(&g_two_stop)) {
        fsa_status_t st = fsa_file_write_atomic(g_two_path, d, TWO_WRITERS_BYTES, err, sizeof err);
        if (st != FSA_OK) /* each writer's own name: neither makes the other fail */
            atomic_fetch_add(&g_two_failed, 1);
    }
    fsa_free(d);
    return NULL;
}

static void test_file_write_atomic__two_writers_never_expose_a_short_file(void **state)
{
    fx_t *f = *state;
    char path[160];
    snprintf(path, sizeof path, "%s/victim", f->dir);
    g_two_path = path;
    char *d = fsa_malloc(TWO_WRITERS_BYTES);
    assert_non_null(d);
    memset(d, 'A', TWO_WRITERS_BYTES);
    char err[512];
    assert_fsa_ok(fsa_file_write_atomic(path, d, TWO_WRITERS_BYTES, err, sizeof err));
    fsa_free(d);
    atomic_store(&g_two_stop, 0);
    pthread_t t[2];
    for (intptr_t i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, two_writer, (void *)('A' + i)), 0);
    /* 20,000 looks while both write (each write syncs: a few hundred of them meanwhile). */
    long shorts = 0;
    off_t smallest = TWO_WRITERS_BYTES;
    for (int i = 0; i < 20000; i++) {
        struct stat sb;
        if (stat(path, &sb) == 0 && sb.st_size != TWO_WRITERS_BYTES) {
            shorts++;
            smallest = sb.st_size;
        }
    }
    atomic_store(&g_two_stop, 1);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    if (shorts != 0)
        fail_msg("%ld looks saw %s short, at %lld bytes of %d", shorts, path, (long long)smallest,
                 TWO_WRITERS_BYTES);
    assert_int_equal(atomic_load(&g_two_failed), 0);
    assert_int_equal(leftovers(f->dir, path), 0);
}

/* A failed write or rename leaves no temporary file, and path as it was. */
static void test_file_write_atomic__failure_leaves_no_temporary_file(void **state)
{
    fx_t *f = *state;
    char err[256] = "";
    /* the write fails: the process may write files of 1 KiB at most (EFBIG, SIGXFSZ ignored) */
    assert_fsa_ok(fsa_file_write_atomic(f->path, "old", 3, err, sizeof err));
    static char big[64 * 1024];
    memset(big, 'x', sizeof big);
    struct rlimit was, small;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &was), 0);
    small = was;
    small.rlim_cur = 1024;
    void (*old)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    fsa_status_t st = fsa_file_write_atomic(f->path, big, sizeof big, err, sizeof err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &was), 0);
    (void)signal(SIGXFSZ, old);
    assert_int_equal(st, FSA_EIO);
    assert_non_null(strstr(err, f->path));
    assert_non_null(strstr(err, strerror(EFBIG)));
    assert_int_equal(leftovers(f->dir, f->path), 0);
    assert_string_equal(text_of(f->path), "old");
    /* the rename fails: path is a directory that is not empty */
    assert_int_equal(unlink(f->path), 0);
    assert_int_equal(mkdir(f->path, 0700), 0);
    char inner[200];
    snprintf(inner, sizeof inner, "%s/inner", f->path);
    write_file(inner, "x", 0600);
    assert_int_equal(fsa_file_write_atomic(f->path, "new", 3, err, sizeof err), FSA_EIO);
    assert_non_null(strstr(err, f->path));
    assert_int_equal(leftovers(f->dir, f->path), 0);
}

/*
 * The new bytes reach the disk before the rename makes them the file's: else a power cut after
 * the rename may leave an empty file under the name. This binary is linked with
 * --wrap=fsync,--wrap=rename, so files.c's calls come here first and are recorded.
 */
/* The names the linker's --wrap gives: reserved identifiers, as it spells them. */
int __real_fsync(int fd);                            // NOLINT(bugprone-reserved-identifier)
int __real_rename(const char *from, const char *to); // NOLINT(bugprone-reserved-identifier)
int __wrap_fsync(int fd);                            // NOLINT(bugprone-reserved-identifier)
int __wrap_rename(const char *from, const char *to); // NOLINT(bugprone-reserved-identifier)

static struct {
    char order[8]; /* 'f' fsync, 'r' rename, in the order of the calls */
    int n;
    ino_t synced; /* the inode of the last file synced */
} calls;

int __wrap_fsync(int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) == 0)
        calls.synced = sb.st_ino;
    if (calls.n < (int)sizeof calls.order - 1)
        calls.order[calls.n++] = 'f';
    return __real_fsync(fd);
}

int __wrap_rename(const char *from, const char *to)
{
    if (calls.n < (int)sizeof calls.order - 1)
        calls.order[calls.n++] = 'r';
    return __real_rename(from, to);
}

static void test_file_write_atomic__synced_before_the_rename(void **state)
{
    fx_t *f = *state;
    char err[256] = "";
    memset(&calls, 0, sizeof calls);
    assert_fsa_ok(fsa_file_write_atomic(f->path, "data", 4, err, sizeof err));
    assert_string_equal(calls.order, "fr");
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    assert_true(calls.synced == sb.st_ino); /* the file synced is the one renamed into place */
}

/* The buffer starts at the size fstat gives and grows to the limit if the file is longer: a file
 * of /proc says it has 0 bytes and has hundreds. */
static void test_file_read__longer_than_fstat_says(void **state)
{
    (void)state;
    char *text = NULL, err[256];
    size_t len = 0;
    assert_fsa_ok(fsa_file_read("/proc/self/status", 1 << 20, 0, &text, &len, err, sizeof err));
    assert_true(len > 100);
    assert_int_equal(strlen(text), len); /* NUL terminated, whole */
    assert_memory_equal(text, "Name:", 5);
    assert_non_null(strstr(text, "\nPid:"));
    fsa_file_wipe_free(text, len);
    /* the bound holds while growing */
    assert_int_equal(fsa_file_read("/proc/self/status", 64, 0, &text, &len, err, sizeof err),
                     FSA_ETOOLARGE);
    assert_null(text);
    assert_int_equal(len, 0);
    assert_non_null(strstr(err, "too large"));
}

/* An absolute name: the directory resolved, the name kept; for a private file a symlink is
 * refused (its target would then pass the O_NOFOLLOW read), a public one stays a link (a renewal
 * that moves it is then read), unless it leads nowhere. */
static void test_file_absolute__resolved_and_links_refused(void **state)
{
    fx_t *f = *state;
    write_file(f->path, SECRET, 0600);
    char link[160], rel[160], err[256];
    snprintf(link, sizeof link, "%s/link", f->dir);
    assert_int_equal(symlink(f->path, link), 0);
    char *abs = NULL;
    assert_int_equal(fsa_file_absolute(link, true, &abs, err, sizeof err), FSA_EPERM);
    assert_null(abs);
    assert_non_null(strstr(err, "is a symlink"));
    assert_fsa_ok(fsa_file_absolute(link, false, &abs, err, sizeof err)); /* a CA file may be */
    char *want = realpath(f->path, NULL);
    assert_non_null(want);
    char *dir = realpath(f->dir, NULL);
    assert_non_null(dir);
    char want_link[PATH_MAX];
    snprintf(want_link, sizeof want_link, "%s/link", dir);
    fsa_free(dir); /* port/alloc.h: fsa_free releases libc memory too */
    assert_string_equal(abs, want_link);
    fsa_free(abs);
    char dangling[160];
    snprintf(dangling, sizeof dangling, "%s/dangling", f->dir);
    assert_int_equal(symlink("nowhere", dangling), 0);
    assert_int_equal(fsa_file_absolute(dangling, false, &abs, err, sizeof err), FSA_ENOTFOUND);
    /* A relative name, from inside the directory, keeps its own name. */
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(f->dir), 0);
    snprintf(rel, sizeof rel, "./secret");
    fsa_status_t st = fsa_file_absolute(rel, true, &abs, err, sizeof err);
    assert_int_equal(chdir(cwd), 0);
    assert_fsa_ok(st);
    assert_string_equal(abs, want);
    fsa_free(abs);
    fsa_free(want); /* port/alloc.h: fsa_free releases libc memory too */
    snprintf(rel, sizeof rel, "%s/missing", f->dir);
    assert_int_equal(fsa_file_absolute(rel, true, &abs, err, sizeof err), FSA_ENOTFOUND);
    assert_int_equal(fsa_file_absolute(rel, false, &abs, err, sizeof err), FSA_ENOTFOUND);
    assert_non_null(strstr(err, "not found"));
}

/* A failure to look at a path other than its absence says what it was: a name too long is
 * FSA_EINVAL (as the header says), a loop of links its reason; "not found" was said of all. */
static void test_file_absolute__says_why_it_cannot_look(void **state)
{
    fx_t *f = *state;
    char p[400];
    memset(p, 'a', sizeof p - 1);
    p[0] = '/';
    p[sizeof p - 1] = '\0';
    char err[512] = "", *out = NULL;
    assert_int_equal(fsa_file_absolute(p, true, &out, err, sizeof err), FSA_EINVAL);
    assert_null(out);
    assert_null(strstr(err, "not found"));
    char loop[160];
    snprintf(loop, sizeof loop, "%s/link", f->dir);
    assert_int_equal(symlink(loop, loop), 0); /* a link to itself */
    assert_int_equal(fsa_file_absolute(loop, false, &out, err, sizeof err), FSA_EIO);
    assert_non_null(strstr(err, strerror(ELOOP)));
    assert_null(out);
}

/* A symlink to nothing is not a file that exists: fsa_file_create_private said FSA_OK (O_EXCL's
 * "exists") and made nothing, and the journal's open failed later with SQLite's vague words. */
static void test_file_create_private__a_link_to_nothing_is_named(void **state)
{
    fx_t *f = *state;
    char link[160], target[160], err[512] = "";
    snprintf(link, sizeof link, "%s/dangling", f->dir);
    snprintf(target, sizeof target, "%s/victim", f->dir);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(fsa_file_create_private(link, err, sizeof err), FSA_EIO);
    assert_non_null(strstr(err, "symlink to nothing"));
    assert_int_equal(access(target, F_OK), -1);
    /* an existing file, or a link to one, is still no error */
    write_file(target, "x", 0600);
    assert_fsa_ok(fsa_file_create_private(link, err, sizeof err));
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_file_read__private_file_is_read_whole),
        T(test_file_read__others_may_read_is_refused_without_content),
        T(test_file_read__owned_by_someone_else_is_refused),
        T(test_file_read__bounded_and_only_regular_files),
        T(test_file_read__longer_than_fstat_says),
        T(test_file_create_private__0600_under_any_umask),
        T(test_file_exists__found_missing_and_unknowable),
        T(test_file_start_writeback__started_or_refused),
        T(test_file_make_private__narrows_and_leaves_private_alone),
        T(test_file_write_atomic__replaces_whole),
        T(test_file_write_atomic__never_writes_through_the_temporary_name),
        T(test_file_write_atomic__failure_leaves_no_temporary_file),
        T(test_file_write_atomic__synced_before_the_rename),
        T(test_file_absolute__resolved_and_links_refused),
        T(test_file_absolute__says_why_it_cannot_look),
        T(test_file_create_private__a_link_to_nothing_is_named),
        T(test_file_write_atomic__two_writers_never_expose_a_short_file),
        cmocka_unit_test(test_protect_secrets__no_core_dump),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
