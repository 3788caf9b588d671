/* fieldsync tests: runs the real fieldsync-server binary and talks signed HTTP to it (libcurl). */
#include "tests/sync/server_harness.h"
#include "port/alloc.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sqlite3.h>
#include <zlib.h>

#ifndef FSA_SERVER_BIN
#error "FSA_SERVER_BIN must name the fieldsync-server binary"
#endif
#ifndef FSA_TEST_EMULATOR
#define FSA_TEST_EMULATOR ""
#endif

/* The running servers' device and admin URLs (th_admin_url_of). */
#define REGISTRY_MAX 32
static struct {
    char url[128];
    char admin[360];
} g_registry[REGISTRY_MAX];
static pthread_mutex_t g_registry_lock = PTHREAD_MUTEX_INITIALIZER;

static void registry_set(const char *url, const char *admin)
{
    pthread_mutex_lock(&g_registry_lock);
    for (int i = 0; i < REGISTRY_MAX; i++) {
        if (admin != NULL && g_registry[i].url[0] == '\0') {
            snprintf(g_registry[i].url, sizeof g_registry[i].url, "%s", url);
            snprintf(g_registry[i].admin, sizeof g_registry[i].admin, "%s", admin);
            break;
        }
        if (admin == NULL && strcmp(g_registry[i].url, url) == 0)
            g_registry[i].url[0] = '\0';
    }
    pthread_mutex_unlock(&g_registry_lock);
}

const char *th_admin_url_of(const char *url)
{
    const char *found = NULL;
    pthread_mutex_lock(&g_registry_lock);
    for (int i = 0; i < REGISTRY_MAX && found == NULL; i++)
        if (g_registry[i].url[0] != '\0' && strcmp(g_registry[i].url, url) == 0)
            found = g_registry[i].admin;
    pthread_mutex_unlock(&g_registry_lock);
    return found;
}

int th_loopback_listen(char *url, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 4) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    snprintf(url, cap, "http://127.0.0.1:%d", (int)ntohs(a.sin_port));
    return fd;
}

bool th_dir_make(char *dir)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, 256, "%s/fsa-srv-XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    return mkdtemp(dir) != NULL;
}

void th_dir_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

bool th_server_prepare(th_server_t *s, int ndevices)
{
    memset(s, 0, sizeof *s);
    return th_dir_make(s->dir) && th_write_files(s, ndevices);
}

void th_device_id(int i, char out[16])
{
    snprintf(out, 16, "dev%03d", i);
}

void th_device_key(int i, fsa_signer_key_t *key)
{
    for (int j = 0; j < 32; j++)
        key->bytes[j] = (unsigned char)(i * 131 + j * 7 + 1);
}

static bool write_text(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return false;
    size_t len = strlen(text);
    bool ok = write(fd, text, len) == (ssize_t)len;
    ok = fchmod(fd, mode) == 0 && ok;
    return close(fd) == 0 && ok;
}

bool th_write_files_scoped(th_server_t *s, int ndevices, const char *const *scopes)
{
    snprintf(s->db, sizeof s->db, "%s/server.db", s->dir);
    snprintf(s->devices, sizeof s->devices, "%s/devices.json", s->dir);
    snprintf(s->token, sizeof s->token, "%s/admin.token", s->dir);
    snprintf(s->errlog, sizeof s->errlog, "%s/server.err", s->dir);
    size_t cap = 64 + (size_t)ndevices * 110;
    for (int i = 0; scopes != NULL && i < ndevices; i++)
        cap += scopes[i] != NULL ? strlen(scopes[i]) + 16 : 0;
    char *text = fsa_malloc(cap);
    if (text == NULL)
        return false;
    size_t n = (size_t)snprintf(text, cap, "{\"devices\": [");
    for (int i = 0; i < ndevices; i++) {
        fsa_signer_key_t k;
        th_device_key(i, &k);
        char id[16];
        th_device_id(i, id);
        n += (size_t)snprintf(text + n, cap - n, "%s{\"id\": \"%s\", \"secret\": \"", i ? "," : "",
                              id);
        for (int j = 0; j < 32; j++)
            n += (size_t)snprintf(text + n, cap - n, "%02x", k.bytes[j]);
        const char *scope = scopes != NULL ? scopes[i] : NULL;
        if (scope != NULL)
            n += (size_t)snprintf(text + n, cap - n, "\", \"scope\": %s}", scope);
        else
            n += (size_t)snprintf(text + n, cap - n, "\"}");
    }
    snprintf(text + n, cap - n, "]}\n");
    bool ok = write_text(s->devices, text, 0600) && write_text(s->token, TH_ADMIN_TOKEN "\n", 0600);
    fsa_free(text);
    return ok;
}

bool th_write_files(th_server_t *s, int ndevices)
{
    return th_write_files_scoped(s, ndevices, NULL);
}

/* argv for exec: the emulator's words (FSA_TEST_EMULATOR, |-separated), then the binary. A
 * profiler may be put in front at run time the same way: FSA_TEST_SERVER_WRAP, e.g.
 * "valgrind|--tool=callgrind" (a build for the host only). */
static size_t build_argv(char *emu_buf, size_t emu_cap, const char **argv, size_t cap)
{
    size_t n = 0;
    const char *wrap = getenv("FSA_TEST_SERVER_WRAP");
    snprintf(emu_buf, emu_cap, "%s",
             wrap != NULL && wrap[0] != '\0' && FSA_TEST_EMULATOR[0] == '\0' ? wrap
                                                                             : FSA_TEST_EMULATOR);
    for (char *tok = emu_buf; tok != NULL && *tok != '\0' && n + 2 < cap;) {
        char *semi = strchr(tok, '|');
        if (semi != NULL)
            *semi = '\0';
        if (*tok != '\0')
            argv[n++] = tok;
        tok = semi != NULL ? semi + 1 : NULL;
    }
    argv[n++] = FSA_SERVER_BIN;
    return n;
}

/* A pipe whose ends other children do not inherit (dup2 onto stdout/stderr clears the flag). */
static bool pipe_cloexec(int pfd[2])
{
    if (pipe(pfd) != 0)
        return false;
    fcntl(pfd[0], F_SETFD, FD_CLOEXEC);
    fcntl(pfd[1], F_SETFD, FD_CLOEXEC);
    return true;
}

static void print_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char line[512];
    while (fgets(line, sizeof line, f) != NULL)
        fprintf(stderr, "  server stderr: %s", line);
    (void)fclose(f);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long th_proc_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long kb = -1;
    size_t n = strlen(field);
    while (kb < 0 && fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            kb = strtol(line + n + 1, NULL, 10);
    (void)fclose(f);
    return kb;
}

#if defined(__SANITIZE_ADDRESS__)
#define ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN_BUILD 1
#endif
#endif

bool th_server_small_quarantine(void)
{
#ifdef ASAN_BUILD
    const char *prev = getenv("ASAN_OPTIONS");
    char opts[512];
    snprintf(opts, sizeof opts, "%s%squarantine_size_mb=16", prev != NULL ? prev : "",
             prev != NULL && prev[0] != '\0' ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    return true;
#else
    return false;
#endif
}

bool th_server_start(th_server_t *s, const char *const *extra)
{
    char emu[512];
    const char *argv[TH_MAX_ARGS + 20];
    size_t n = build_argv(emu, sizeof emu, argv, TH_MAX_ARGS);
    const char *fixed[] = {"--listen", "127.0.0.1:0",        "--db",  s->db, "--devices-file",
                           s->devices, "--admin-token-file", s->token};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        argv[n++] = fixed[i];
    /* The functional suites hammer a few devices from one address on purpose: they get the
     * ceilings of the per-device quota and per-address connections, unless they name their own
     * (test_server_hostile keeps the defaults). */
    bool own_rate = false, own_conns = false;
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        own_rate = own_rate || strcmp(extra[i], "--device-rate") == 0;
        own_conns = own_conns || strcmp(extra[i], "--per-addr-connections") == 0;
    }
    if (!own_rate) {
        argv[n++] = "--device-rate";
        argv[n++] = "10000";
    }
    if (!own_conns) {
        argv[n++] = "--per-addr-connections";
        argv[n++] = "1000";
    }
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n + 1 < sizeof argv / sizeof argv[0];
         i++)
        argv[n++] = extra[i];
    argv[n] = NULL;

    int pfd[2];
    if (!pipe_cloexec(pfd))
        return false;
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return false;
    }
    if (pid == 0) {
        dup2(pfd[1], 1);
        int efd = open(s->errlog, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (efd >= 0)
            dup2(efd, 2);
        close(pfd[0]);
        close(pfd[1]);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(pfd[1]);
    s->pid = pid;
    s->url[0] = '\0';
    s->admin_url[0] = '\0';
    char line[512];
    size_t len = 0;
    int64_t deadline = mono_ms() + 20000;
    bool ok = false;
    while (!ok && mono_ms() < deadline && len + 1 < sizeof line) {
        struct pollfd p = {pfd[0], POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t got = read(pfd[0], line + len, 1);
        if (got <= 0)
            break;
        if (line[len] == '\n') {
            line[len] = '\0';
            static const char admin[] = "admin listening on ";
            if (strncmp(line, admin, sizeof admin - 1) == 0 &&
                strlen(line + sizeof admin - 1) < sizeof s->admin_url)
                memcpy(s->admin_url, line + sizeof admin - 1, strlen(line + sizeof admin - 1) + 1);
            ok = strncmp(line, "listening on ", 13) == 0;
            if (ok && strlen(line + 13) < sizeof s->url)
                memcpy(s->url, line + 13, strlen(line + 13) + 1);
            else
                ok = false;
            len = 0;
            continue;
        }
        len++;
    }
    if (!ok) {
        fprintf(stderr, "fieldsync-server did not start\n");
        print_file(s->errlog);
        close(pfd[0]);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        s->pid = 0;
        return false;
    }
    s->out_fd = pfd[0]; /* kept open: it reaches EOF when the server exits */
    if (s->admin_url[0] != '\0')
        registry_set(s->url, s->admin_url);
    return true;
}

/* Reads fd until EOF or the deadline; appends what it reads to buf (when not NULL). True at EOF.
 * The child holds the pipe's other end as its stdout or stderr, so EOF means it has exited (or
 * is exiting): the wait is a poll on the pipe, never a sleep. */
static bool read_to_eof(int fd, int64_t deadline, char *buf, size_t cap, size_t *len)
{
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
        if (r < 0 && errno != EINTR)
            return false;
        if (r <= 0)
            continue;
        char chunk[256];
        ssize_t got = read(fd, chunk, sizeof chunk);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return true;
        for (ssize_t i = 0; buf != NULL && i < got && *len + 1 < cap; i++)
            buf[(*len)++] = chunk[i];
    }
}

/* Reaps the child; when it did not close its pipe in time it is killed first and -1 returned. */
static int reap(pid_t pid, bool exited)
{
    if (!exited)
        kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    if (!exited)
        return -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

int th_server_stop(th_server_t *s)
{
    if (s->pid <= 0)
        return -1;
    registry_set(s->url, NULL);
    kill(s->pid, SIGTERM);
    bool exited = read_to_eof(s->out_fd, mono_ms() + 20000, NULL, 0, NULL);
    int rc = reap(s->pid, exited);
    close(s->out_fd);
    s->out_fd = -1;
    s->pid = 0;
    return rc;
}

int th_server_kill(th_server_t *s)
{
    return th_server_signal(s, SIGKILL);
}

int th_server_signal(th_server_t *s, int sig)
{
    if (s->pid <= 0)
        return -1;
    registry_set(s->url, NULL);
    kill(s->pid, sig);
    bool exited = read_to_eof(s->out_fd, mono_ms() + 20000, NULL, 0, NULL);
    int rc = reap(s->pid, exited);
    close(s->out_fd);
    s->out_fd = -1;
    s->pid = 0;
    return rc;
}

int th_run_cli(const char *const *args, char *err, size_t errcap)
{
    char emu[512];
    const char *argv[TH_MAX_ARGS + 20];
    size_t n = build_argv(emu, sizeof emu, argv, TH_MAX_ARGS);
    for (size_t i = 0; args[i] != NULL && n + 1 < sizeof argv / sizeof argv[0]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int pfd[2];
    if (!pipe_cloexec(pfd))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 2);
        int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (nul >= 0)
            dup2(nul, 1);
        close(pfd[0]);
        close(pfd[1]);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(pfd[1]);
    if (pid < 0) {
        close(pfd[0]);
        err[0] = '\0';
        return -1;
    }
    size_t len = 0;
    bool exited = read_to_eof(pfd[0], mono_ms() + 10000, err, errcap, &len);
    err[len] = '\0';
    close(pfd[0]);
    return reap(pid, exited);
}

int th_run_cli_on(const char *db, const char *devices, const char *const *extra, char *err,
                  size_t errcap)
{
    const char *args[TH_MAX_ARGS + 1];
    size_t n = 0;
    const char *fixed[] = {"--listen", "127.0.0.1:0", "--db", db, "--devices-file", devices};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        args[n++] = fixed[i];
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n < TH_MAX_ARGS; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    return th_run_cli(args, err, errcap);
}

void th_resp_free(th_resp_t *r)
{
    if (r != NULL) {
        fsa_free(r->body);
        memset(r, 0, sizeof *r);
    }
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    th_resp_t *r = ud;
    size_t n = size * nmemb;
    if (r->len + n + 1 > r->cap) {
        /* doubling: a 4 MiB page comes in 16 KiB pieces, and a realloc per piece copied ~512 MB
         * (30 s of test_server under ASan, whose large blocks never grow in place) */
        size_t cap = r->cap > 0 ? r->cap : 16384;
        while (cap < r->len + n + 1)
            cap *= 2;
        char *nb = fsa_realloc(r->body, cap);
        if (nb == NULL)
            return 0;
        r->body = nb;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    th_resp_t *r = ud;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (n > sizeof name && strncasecmp(data, name, sizeof name - 1) == 0) {
        const char *v = data + sizeof name - 1;
        while (*v == ' ')
            v++;
        size_t vl = strcspn(v, "\r\n");
        if (vl >= sizeof r->retry_after)
            vl = sizeof r->retry_after - 1;
        memcpy(r->retry_after, v, vl);
        r->retry_after[vl] = '\0';
    }
    static const char enc[] = "content-encoding:";
    if (n > sizeof enc && strncasecmp(data, enc, sizeof enc - 1) == 0 &&
        strstr(data + sizeof enc - 1, "gzip") != NULL)
        r->gzipped = true;
    return n;
}

bool th_gzip(const void *in, size_t len, unsigned char **out, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return false;
    size_t cap = deflateBound(&z, (uLong)len) + 64;
    unsigned char *buf = fsa_malloc(cap);
    if (buf == NULL) {
        deflateEnd(&z);
        return false;
    }
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)len;
    z.next_out = buf;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        fsa_free(buf);
        return false;
    }
    *out = buf;
    return true;
}

bool th_request(void *handle, const char *url, const char *method, const char *path_and_query,
                int device, const void *body, size_t len, const th_req_opts_t *opts, th_resp_t *r)
{
    static const th_req_opts_t none;
    if (opts == NULL)
        opts = &none;
    memset(r, 0, sizeof *r);
    CURL *h = handle != NULL ? handle : curl_easy_init();
    if (h == NULL)
        return false;
    curl_easy_reset(h);
    unsigned char *gz = NULL;
    const void *send = body;
    size_t send_len = len;
    struct curl_slist *hdrs = NULL;
    char line[256];
    if (opts->gzip) {
        if (!th_gzip(body, len, &gz, &send_len)) {
            if (handle == NULL)
                curl_easy_cleanup(h);
            return false;
        }
        send = gz;
        hdrs = curl_slist_append(hdrs, "Content-Encoding: gzip");
    } else if (opts->content_encoding != NULL) {
        snprintf(line, sizeof line, "Content-Encoding: %s", opts->content_encoding);
        hdrs = curl_slist_append(hdrs, line);
    }
    if (opts->bearer != NULL) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", opts->bearer);
        hdrs = curl_slist_append(hdrs, line);
    } else if (!opts->skip_auth) {
        fsa_signer_key_t key;
        th_device_key(device, &key);
        char id[16];
        th_device_id(device, id);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + opts->ts_offset_ms;
        char tss[32];
        snprintf(tss, sizeof tss, "%" PRId64, ms);
        char nonce[FSA_SIGNER_NONCE_BYTES];
        if (opts->nonce != NULL)
            snprintf(nonce, sizeof nonce, "%s", opts->nonce);
        else if (fsa_signer_nonce(fsa_port_posix(), nonce) != FSA_OK)
            nonce[0] = '\0';
        char sig[FSA_SIGNER_HEX_BYTES];
        if (fsa_signer_sign(&key, method, path_and_query, tss, nonce, send, send_len, sig) !=
            FSA_OK)
            sig[0] = '\0';
        if (opts->corrupt_signature)
            sig[5] = sig[5] == '0' ? '1' : '0';
        snprintf(line, sizeof line, "X-Device-Id: %s",
                 opts->header_device != NULL ? opts->header_device : id);
        hdrs = curl_slist_append(hdrs, line);
        snprintf(line, sizeof line, "X-Timestamp: %s", tss);
        hdrs = curl_slist_append(hdrs, line);
        snprintf(line, sizeof line, "X-Nonce: %s", nonce);
        hdrs = curl_slist_append(hdrs, line);
        snprintf(line, sizeof line, "X-Signature: %s", sig);
        hdrs = curl_slist_append(hdrs, line);
    }
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:");
    char full[4096];
    if (opts->bearer != NULL && !opts->as_is && th_admin_url_of(url) != NULL)
        url = th_admin_url_of(url);
    if (strncmp(url, "unix:", 5) == 0) {
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, url + 5);
        url = "http://localhost";
    }
    snprintf(full, sizeof full, "%s%s", url, path_and_query);
    curl_easy_setopt(h, CURLOPT_URL, full);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (opts->source != NULL)
        curl_easy_setopt(h, CURLOPT_INTERFACE, opts->source);
    if (opts->accept_gzip)
        curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "gzip");
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L); /* the TLS test's self-signed cert */
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, send != NULL ? send : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)send_len);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode cc = curl_easy_perform(h);
    r->curl_code = (int)cc;
    if (cc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hdrs);
    fsa_free(gz);
    if (handle == NULL)
        curl_easy_cleanup(h);
    return cc == CURLE_OK;
}

bool th_journal_state_set(const char *db_path, const char *key, const char *value)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    bool ok = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
              sqlite3_busy_timeout(db, 10000) == SQLITE_OK &&
              sqlite3_prepare_v2(db,
                                 "INSERT INTO sync_state(k,v) VALUES(?1,?2) "
                                 "ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                                 -1, &st, NULL) == SQLITE_OK &&
              sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC) == SQLITE_OK &&
              sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC) == SQLITE_OK &&
              sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    return sqlite3_close(db) == SQLITE_OK && ok;
}
