/*
 * Integration-test harness; see harness.h for what it promises and why it
 * cleans up before failing. Nothing here uses H_CHECK on a cleanup path.
 */
#include "tests/integration/harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shared/util.h"

#define H_MAX_INSTANCES 8
#define H_LOG_TAIL_LINES 60

/* Set by the unchecked fixture in the runner; inherited by each test's child. */
static char h_base[128];
/* Every instance the current test created, for cleanup. */
static h_molt_t *h_all[H_MAX_INSTANCES];
static size_t h_nall;
/* Test connections still open, closed by the cleanup so that no worker waits on them. */
static int h_conns[64];
static size_t h_nconns;

static const char *const h_sanitizer_marks[] = {"AddressSanitizer", "LeakSanitizer",
                                                "runtime error:", "UndefinedBehaviorSanitizer", NULL};

/* ---- small helpers ------------------------------------------------------------------------- */

long long h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void h_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- slow runners: MOLT_TEST_TIMEOUT_SCALE, MOLT_TEST_WRAPPER (harness.h) ------------------- */

static int h_scale(void)
{
    static int scale;
    if (!scale) {
        const char *s = getenv("MOLT_TEST_TIMEOUT_SCALE");
        char *end = NULL;
        long v = s && *s ? strtol(s, &end, 10) : 1;
        scale = s && *s && *end == '\0' && v >= 1 && v <= 1000 ? (int)v : 1;
    }
    return scale;
}

int h_ms(int ms)
{
    long long v = (long long)ms * h_scale();
    return v > INT_MAX ? INT_MAX : (int)v;
}

#define H_MAX_WRAP 32

/* MOLT_TEST_WRAPPER's words, then argv (NULL-terminated) into out[max]; false
 * when the variable is unset or empty (out is then untouched). */
static bool wrap_argv(const char *const *argv, const char **out, size_t max)
{
    static char words[1024];
    static const char *wrap[H_MAX_WRAP];
    static size_t nwrap;
    static bool parsed;
    if (!parsed) {
        parsed = true;
        const char *env = getenv("MOLT_TEST_WRAPPER");
        snprintf(words, sizeof(words), "%s", env ? env : "");
        for (char *save = NULL, *w = strtok_r(words, " ", &save); w && nwrap < H_MAX_WRAP;
             w = strtok_r(NULL, " ", &save))
            wrap[nwrap++] = w;
    }
    if (!nwrap)
        return false;
    size_t n = 0;
    for (size_t i = 0; i < nwrap && n + 1 < max; i++)
        out[n++] = wrap[i];
    for (size_t i = 0; argv[i] && n + 1 < max; i++)
        out[n++] = argv[i];
    out[n] = NULL;
    return true;
}

/* Reads a whole file, NUL-terminated; "" (malloc'd) if it cannot be read. Never NULL unless OOM. */
static char *read_file(const char *path, size_t *lenp)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (!buf) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (fd >= 0) {
        for (;;) {
            if (cap - len < 4096) {
                char *nb = realloc(buf, cap * 2);
                if (!nb)
                    break;
                buf = nb;
                cap *= 2;
            }
            ssize_t n = read(fd, buf + len, cap - len - 1);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            len += (size_t)n;
        }
        close(fd);
    }
    buf[len] = '\0';
    if (lenp)
        *lenp = len;
    return buf;
}

void h_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    H_CHECK(fd >= 0, "open(%s): %s", path, strerror(errno));
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            close(fd);
        H_CHECK(n > 0, "write(%s): %s", path, strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    close(fd);
    H_CHECK(chmod(path, mode) == 0, "chmod(%s): %s", path, strerror(errno));
}

char *h_read_file(const char *path, size_t *len)
{
    char *text = read_file(path, len);
    H_CHECK(text != NULL, "out of memory reading %s", path);
    return text;
}

void h_copy_file(const char *src, const char *dst, mode_t mode)
{
    size_t len;
    char *data = read_file(src, &len);
    H_CHECK(data != NULL, "out of memory reading %s", src);
    bool empty = len == 0;
    if (empty)
        free(data);
    H_CHECK(!empty, "cannot copy %s: it cannot be read or is empty", src);
    h_write_file(dst, data, len, mode);
    free(data);
}

bool h_file_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    if (flag == FTW_DP || flag == FTW_D)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static void rm_rf(const char *dir)
{
    if (dir[0])
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* First sanitizer report in `text`: a malloc'd excerpt of up to 40 lines, or NULL. */
static char *sanitizer_excerpt(const char *text)
{
    const char *first = NULL;
    for (size_t i = 0; h_sanitizer_marks[i]; i++) {
        const char *p = strstr(text, h_sanitizer_marks[i]);
        if (p && (!first || p < first))
            first = p;
    }
    if (!first)
        return NULL;
    while (first > text && first[-1] != '\n')
        first--;
    const char *end = first;
    for (int lines = 0; *end && lines < 40; end++)
        if (*end == '\n')
            lines++;
    return strndup(first, (size_t)(end - first));
}

/* Prepares a forked child for exec: stdio, default signals, no other fds. */
static void child_prepare(int in, int out, int err)
{
    if (in >= 0)
        dup2(in, STDIN_FILENO);
    if (out >= 0)
        dup2(out, STDOUT_FILENO);
    if (err >= 0)
        dup2(err, STDERR_FILENO);
    close_range(3, ~0U, 0);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* ---- processes ----------------------------------------------------------------------------- */

/* state, ppid and pgrp of pid from /proc; false if there is no such process. */
static bool proc_stat(pid_t pid, char *state, pid_t *ppid, pid_t *pgrp)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    int pp = 0, pg = 0;
    if (!p || sscanf(p + 1, " %c %d %d", state, &pp, &pg) != 3)
        return false;
    *ppid = pp;
    *pgrp = pg;
    return true;
}

static h_molt_t *instance_by_pid(pid_t pid)
{
    for (size_t i = 0; i < h_nall; i++)
        if (h_all[i]->pid == pid)
            return h_all[i];
    return NULL;
}

/* As h_pid_alive; *wstatus gets the wait status if this call reaped it. */
static bool pid_alive_st(pid_t pid, int *wstatus)
{
    if (pid <= 0)
        return false;
    h_molt_t *h = instance_by_pid(pid);
    if (h) {
        /* moltd itself: its status belongs to its instance. */
        if (h_reap(h)) {
            if (wstatus)
                *wstatus = h->wstatus;
            return false;
        }
    } else {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            if (wstatus)
                *wstatus = st;
            return false;
        }
    }
    char state;
    pid_t ppid, pgrp;
    if (!proc_stat(pid, &state, &ppid, &pgrp))
        return false;
    if (state == 'Z' || state == 'X')
        return false;
    /* Check's fork mode makes each test a process group; anything outside it
     * is not ours (the pid was reused), and must never be killed. */
    if (getpgrp() == getpid() && pgrp != getpgrp())
        return false;
    return true;
}

bool h_pid_alive(pid_t pid)
{
    return pid_alive_st(pid, NULL);
}

bool h_wait_pid_gone(pid_t pid, int timeout_ms, int *wstatus)
{
    long long deadline = h_now_ms() + h_ms(timeout_ms);
    if (wstatus)
        *wstatus = -1;
    for (;;) {
        if (!pid_alive_st(pid, wstatus))
            return true;
        if (h_now_ms() >= deadline)
            return false;
        h_sleep_ms(10);
    }
}

size_t h_group_procs(pid_t *pids, size_t max)
{
    size_t n = 0;
    if (getpgrp() != getpid())
        return 0; /* not Check's fork mode: our group is not ours alone */
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || pid == getpid())
            continue;
        char state;
        pid_t ppid, pgrp;
        if (!proc_stat((pid_t)pid, &state, &ppid, &pgrp) || pgrp != getpgrp() || state == 'Z' || state == 'X')
            continue;
        if (n < max)
            pids[n] = (pid_t)pid;
        n++;
    }
    closedir(d);
    return n < max ? n : max;
}

/* ---- instances ----------------------------------------------------------------------------- */

void h_suite_setup(void)
{
    /* A test killed by its timeout leaves its processes (killed by Check)
     * to be reaped by someone; make it us, not an init that may not reap. */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    char tmpl[] = "/tmp/molt-it-XXXXXX";
    if (mkdtemp(tmpl))
        snprintf(h_base, sizeof(h_base), "%s", tmpl);
    else
        h_base[0] = '\0'; /* tests then make their dirs directly in /tmp */
}

void h_suite_teardown(void)
{
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    rm_rf(h_base);
    h_base[0] = '\0';
}

static void note_pid(h_molt_t *h, pid_t pid)
{
    if (pid <= 0)
        return;
    for (size_t i = 0; i < h->nseen; i++)
        if (h->seen[i] == pid)
            return;
    if (h->nseen < H_MAX_PIDS)
        h->seen[h->nseen++] = pid;
}

h_molt_t *h_new(void)
{
    H_CHECK(h_nall < H_MAX_INSTANCES, "too many moltd instances in one test");
    /* Workers orphaned by a dead moltd become our children, so that we can
     * reap them and tell "exited" from "zombie of a dead parent". */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    h_molt_t *h = calloc(1, sizeof(*h));
    H_CHECK(h != NULL, "out of memory");
    char tmpl[sizeof(h->dir)];
    if (h_base[0])
        snprintf(tmpl, sizeof(tmpl), "%s/t-XXXXXX", h_base);
    else
        snprintf(tmpl, sizeof(tmpl), "/tmp/molt-it-XXXXXX");
    if (!mkdtemp(tmpl)) {
        int e = errno;
        free(h);
        H_FAIL("mkdtemp(%s): %s", tmpl, strerror(e));
    }
    snprintf(h->dir, sizeof(h->dir), "%s", tmpl);
    h_all[h_nall++] = h;
    snprintf(h->config_path, sizeof(h->config_path), "%s/molt.json", h->dir);
    snprintf(h->runtime_dir, sizeof(h->runtime_dir), "%s/run", h->dir);
    snprintf(h->sock_path, sizeof(h->sock_path), "%s/run/control.sock", h->dir);
    snprintf(h->log_path, sizeof(h->log_path), "%s/moltd.log", h->dir);
    snprintf(h->out_path, sizeof(h->out_path), "%s/moltd.out", h->dir);
    h->port = h_free_port(AF_INET);
    h->cfg = json_pack("{s:i, s:s, s:{s:s}, s:[s,s], s:[{s:s,s:s,s:{s:s}}], s:[{s:s,s:s}],"
                       " s:{s:i,s:i}, s:{s:i,s:i,s:i}, s:{s:s}}",
                       "workers", 2, "runtime_dir", h->runtime_dir, "control", "socket", h->sock_path,
                       "plugin_path", MOLT_PLUGIN_DIR, MOLT_TEST_PLUGIN_DIR, "plugins", "name", "hello",
                       "file", "hello.so", "config", "body", H_HELLO_BODY, "routes", "prefix", "/", "plugin",
                       "hello", "http", "header_timeout_ms", h_ms(3000), "keepalive_timeout_ms", h_ms(5000),
                       "reload", "load_timeout_ms", h_ms(2000), "drain_timeout_ms", h_ms(3000),
                       "idle_grace_ms", 50, "log", "level", "info");
    H_CHECK(h->cfg != NULL, "json_pack of the default config failed");
    if (h_scale() > 1) /* moltd's default (5000), scaled like the others */
        h_cfg_set(h, "reload.handoff_timeout_ms", json_integer(h_ms(5000)));
    return h;
}

void h_cfg_set(h_molt_t *h, const char *path, json_t *value)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *obj = h->cfg;
    char *key = buf, *dot;
    while ((dot = strchr(key, '.'))) {
        *dot = '\0';
        json_t *child = json_object_get(obj, key);
        if (!json_is_object(child)) {
            child = json_object();
            json_object_set_new(obj, key, child);
        }
        obj = child;
        key = dot + 1;
    }
    H_CHECK(value != NULL && json_object_set_new(obj, key, value) == 0, "setting %s", path);
}

void h_add_plugin(h_molt_t *h, const char *name, const char *file, json_t *config)
{
    json_t *p = json_pack("{s:s,s:s}", "name", name, "file", file);
    H_CHECK(p != NULL, "json_pack");
    if (config)
        json_object_set_new(p, "config", config);
    json_array_append_new(json_object_get(h->cfg, "plugins"), p);
}

void h_add_route(h_molt_t *h, const char *prefix, const char *plugin)
{
    json_array_append_new(json_object_get(h->cfg, "routes"),
                          json_pack("{s:s,s:s}", "prefix", prefix, "plugin", plugin));
}

void h_add_echo(h_molt_t *h)
{
    h_add_plugin(h, "echo", "tp_echo.so", NULL);
    h_add_route(h, "/echo/", "echo");
}

void h_add_ipv6(h_molt_t *h)
{
    h->ipv6 = true;
    h->port6 = h_free_port(AF_INET6);
}

void h_write_config(h_molt_t *h)
{
    char addr[64];
    json_t *listen = json_array();
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", h->port);
    json_array_append_new(listen, json_pack("{s:s,s:s}", "name", "http", "address", addr));
    if (h->ipv6) {
        snprintf(addr, sizeof(addr), "[::1]:%d", h->port6);
        json_array_append_new(listen, json_pack("{s:s,s:s}", "name", "http6", "address", addr));
    }
    json_object_set_new(h->cfg, "listen", listen);
    H_CHECK(json_dump_file(h->cfg, h->config_path, JSON_INDENT(2)) == 0, "writing %s", h->config_path);
}

void h_start(h_molt_t *h)
{
    H_CHECK(h->pid == 0 || h->exited, "moltd is already running (pid %d)", (int)h->pid);
    h_write_config(h);
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = open(h->out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int err = open(h->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    H_CHECK(in >= 0 && out >= 0 && err >= 0, "opening moltd's stdio files: %s", strerror(errno));
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* Should the test die in a way that skips every cleanup, moltd goes too. */
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (getppid() != parent)
            _exit(127);
        child_prepare(in, out, err);
        const char *moltd = h->binary ? h->binary : H_MOLTD;
        const char *argv[H_MAX_LAUNCH + H_MAX_WRAP + 8];
        size_t n = 0;
        for (; n + 1 < H_MAX_LAUNCH && h->launch[n]; n++)
            argv[n] = h->launch[n];
        if (wrap_argv((const char *const[]){moltd, "-c", h->config_path, NULL}, argv + n, H_MAX_WRAP + 8)) {
            execvp(argv[0], (char *const *)argv);
        } else if (n) {
            argv[n++] = moltd;
            argv[n++] = "-c";
            argv[n++] = h->config_path;
            argv[n] = NULL;
            execvp(argv[0], (char *const *)argv);
        } else {
            execl(moltd, "moltd", "-c", h->config_path, (char *)NULL);
        }
        dprintf(STDERR_FILENO, "harness: exec of %s failed: %s\n", moltd, strerror(errno));
        _exit(127);
    }
    int fork_errno = errno;
    close(in);
    close(out);
    close(err);
    H_CHECK(pid > 0, "fork(): %s", strerror(fork_errno));
    h->pid = pid;
    h->exited = false;
    h->wstatus = 0;
}

void h_start_ready(h_molt_t *h)
{
    for (int attempt = 1;; attempt++) {
        h_start(h);
        if (h_wait_ready(h, 20000))
            return;
        char *log = h_log(h);
        bool clash = h->exited && log && strstr(log, "Address already in use");
        free(log);
        if (clash && attempt < 4) {
            /* Someone took the port between h_free_port() and moltd's bind(). */
            h->port = h_free_port(AF_INET);
            if (h->ipv6)
                h->port6 = h_free_port(AF_INET6);
            if (truncate(h->log_path, 0) < 0)
                fprintf(stderr, "harness: truncate(%s): %s\n", h->log_path, strerror(errno));
            continue;
        }
        if (h->exited)
            H_FAIL("moltd exited (wait status 0x%x) instead of becoming ready; see its log above",
                   (unsigned)h->wstatus);
        H_FAIL("moltd (pid %d) did not become ready within %d s; see its log above", (int)h->pid,
               h_ms(20000) / 1000);
    }
}

static unsigned configured_workers(const h_molt_t *h)
{
    json_t *w = json_object_get(h->cfg, "workers");
    return json_is_integer(w) ? (unsigned)json_integer_value(w) : 1;
}

bool h_wait_ready(h_molt_t *h, int timeout_ms)
{
    long long deadline = h_now_ms() + h_ms(timeout_ms);
    unsigned want = configured_workers(h);
    for (;;) {
        if (h_reap(h))
            return false;
        json_t *st = h_status(h);
        if (st) {
            json_t *ws = json_object_get(st, "workers"), *w;
            size_t i, ready = 0;
            json_array_foreach(ws, i, w)
            {
                if (json_integer_value(json_object_get(w, "pid")) > 0 &&
                    strcmp(json_string_value(json_object_get(w, "state")) ?: "", "ready") == 0)
                    ready++;
            }
            bool ok = json_array_size(ws) == want && ready == want;
            json_decref(st);
            if (ok)
                return true;
        }
        if (h_now_ms() >= deadline)
            return false;
        h_sleep_ms(20);
    }
}

bool h_reap(h_molt_t *h)
{
    if (h->pid <= 0 || h->exited)
        return h->exited;
    int st;
    pid_t r = waitpid(h->pid, &st, WNOHANG);
    if (r == h->pid) {
        h->exited = true;
        h->wstatus = st;
    } else if (r < 0 && errno == ECHILD) {
        h->exited = true; /* reaped elsewhere: status unknown */
        h->wstatus = -1;
    }
    return h->exited;
}

bool h_wait_exit(h_molt_t *h, int timeout_ms)
{
    long long deadline = h_now_ms() + h_ms(timeout_ms);
    while (!h_reap(h)) {
        if (h_now_ms() >= deadline)
            return false;
        h_sleep_ms(10);
    }
    return true;
}

int h_exit_code(const h_molt_t *h)
{
    if (!h->exited || h->wstatus == -1 || !WIFEXITED(h->wstatus))
        return -1;
    return WEXITSTATUS(h->wstatus);
}

char *h_log(const h_molt_t *h)
{
    return read_file(h->log_path, NULL);
}

char *h_log_line(const h_molt_t *h, const char *const *needles)
{
    char *log = h_log(h), *found = NULL;
    if (!log)
        return NULL;
    for (char *line = log; *line && !found;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        bool all = true;
        for (size_t i = 0; needles[i] && all; i++)
            all = strstr(line, needles[i]) != NULL;
        if (all)
            found = strdup(line);
        if (!nl)
            break;
        line = nl + 1;
    }
    free(log);
    return found;
}

int h_ctl_open(h_molt_t *h, const char *request)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(h->sock_path) >= sizeof(sa.sun_path))
        return -1;
    memcpy(sa.sun_path, h->sock_path, strlen(h->sock_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s\n", request);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || n <= 0 || (size_t)n >= sizeof(line) ||
        send(fd, line, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return -1;
    }
    return fd;
}

json_t *h_ctl_reply(int fd, int timeout_ms)
{
    json_t *reply = NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (fd < 0)
        return NULL;
    long long deadline = h_now_ms() + h_ms(timeout_ms);
    for (;;) {
        if (buf && memchr(buf, '\n', len))
            break;
        long long left = deadline - h_now_ms();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            goto out;
        if (cap - len < 4096) {
            char *nb = realloc(buf, cap ? cap * 2 : 8192);
            if (!nb)
                goto out;
            buf = nb;
            cap = cap ? cap * 2 : 8192;
        }
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        if (r <= 0)
            goto out;
        len += (size_t)r;
    }
    reply = json_loadb(buf, (size_t)((char *)memchr(buf, '\n', len) - buf), 0, NULL);
    if (reply && !json_is_object(reply)) {
        json_decref(reply);
        reply = NULL;
    }
out:
    free(buf);
    close(fd);
    return reply;
}

json_t *h_ctl(h_molt_t *h, const char *request)
{
    return h_ctl_reply(h_ctl_open(h, request), 5000);
}

json_t *h_status(h_molt_t *h)
{
    json_t *st = h_ctl(h, "{\"cmd\":\"status\"}");
    if (st && !json_is_true(json_object_get(st, "ok"))) {
        json_decref(st);
        return NULL;
    }
    if (st) {
        size_t i;
        json_t *w;
        json_array_foreach(json_object_get(st, "workers"), i, w)
        {
            note_pid(h, (pid_t)json_integer_value(json_object_get(w, "pid")));
        }
    }
    return st;
}

size_t h_status_pids(const json_t *st, pid_t *pids, size_t max)
{
    size_t n = 0, i;
    json_t *w;
    for (size_t k = 0; k < max; k++)
        pids[k] = 0;
    /* Only the active generation's: a rolled-back or retired one may still drain. */
    json_int_t gen = json_integer_value(json_object_get(json_object_get(st, "generation"), "number"));
    json_array_foreach(json_object_get(st, "workers"), i, w)
    {
        json_int_t slot = json_integer_value(json_object_get(w, "slot"));
        if (slot < 0 || (size_t)slot >= max || (gen && json_integer_value(json_object_get(w, "generation")) != gen))
            continue;
        pids[slot] = (pid_t)json_integer_value(json_object_get(w, "pid"));
        if ((size_t)slot + 1 > n)
            n = (size_t)slot + 1;
    }
    return n;
}

const json_t *h_status_slot(const json_t *st, unsigned slot)
{
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(st, "workers"), i, w)
    {
        if (json_integer_value(json_object_get(w, "slot")) == (json_int_t)slot)
            return w;
    }
    return NULL;
}

size_t h_log_worker_pids(h_molt_t *h, pid_t *pids, size_t max)
{
    char *log = h_log(h);
    size_t n = 0;
    if (!log)
        return 0;
    for (const char *p = log; (p = strstr(p, " started, pid "));) {
        p += strlen(" started, pid ");
        long pid = strtol(p, NULL, 10);
        if (pid <= 0)
            continue;
        note_pid(h, (pid_t)pid);
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = pids[i] == (pid_t)pid;
        if (!dup && n < max)
            pids[n++] = (pid_t)pid;
    }
    free(log);
    return n;
}

/* ---- cleanup ------------------------------------------------------------------------------- */

/* Stops moltd (TERM, or QUIT when fast; then KILL) and kills every worker it ever had, by pid. */
static void instance_stop(h_molt_t *h, bool fast)
{
    if (h->pid > 0 && !h_reap(h)) {
        kill(h->pid, fast ? SIGQUIT : SIGTERM);
        if (!h_wait_exit(h, 8000)) {
            fprintf(stderr, "harness: moltd (pid %d) ignored SIG%s for %d s; killing it\n", (int)h->pid,
                    fast ? "QUIT" : "TERM", h_ms(8000) / 1000);
            kill(h->pid, SIGKILL);
            h_wait_exit(h, 5000);
        }
    }
    pid_t pids[H_MAX_PIDS];
    h_log_worker_pids(h, pids, H_MAX_PIDS);
    for (size_t i = 0; i < h->nseen; i++) {
        if (h_pid_alive(h->seen[i])) {
            fprintf(stderr, "harness: worker pid %d outlived its moltd; killing it\n", (int)h->seen[i]);
            kill(h->seen[i], SIGKILL);
        }
    }
    for (size_t i = 0; i < h->nseen; i++)
        h_wait_pid_gone(h->seen[i], 3000, NULL);
}

static void dump_log_tail(const h_molt_t *h)
{
    char *log = h_log(h);
    if (!log)
        return;
    size_t len = strlen(log);
    const char *start = log + len;
    for (int lines = 0; start > log && lines <= H_LOG_TAIL_LINES; start--)
        if (start[-1] == '\n' && ++lines > H_LOG_TAIL_LINES)
            break;
    fprintf(stderr, "---- moltd log %s (last %d lines) ----\n%s---- end of log ----\n", h->log_path,
            H_LOG_TAIL_LINES, start);
    free(log);
}

/*
 * Closes the test's connections, stops every instance, kills whatever is left
 * in our process group, and removes the temp dirs (printing the logs' tails
 * first if the test failed). Returns the first sanitizer report found in a moltd
 * log (malloc'd), or NULL.
 */
static char *cleanup_all(bool failed)
{
    char *report = NULL;
    for (size_t i = 0; i < h_nconns; i++)
        close(h_conns[i]);
    h_nconns = 0;
    /* After a failure, do not let a graceful stop wait on whatever state the test left. */
    for (size_t i = 0; i < h_nall; i++)
        instance_stop(h_all[i], failed);
    pid_t left[64];
    size_t n = h_group_procs(left, 64);
    for (size_t i = 0; i < n; i++) {
        fprintf(stderr, "harness: pid %d is still running after cleanup; killing it\n", (int)left[i]);
        kill(left[i], SIGKILL);
    }
    for (size_t i = 0; i < n; i++)
        h_wait_pid_gone(left[i], 3000, NULL);
    for (size_t i = 0; i < h_nall; i++) {
        h_molt_t *h = h_all[i];
        if (failed)
            dump_log_tail(h);
        char *log = h_log(h);
        char *ex = log ? sanitizer_excerpt(log) : NULL;
        free(log);
        if (ex && !report) {
            report = ex;
        } else {
            free(ex);
        }
        rm_rf(h->dir);
        json_decref(h->cfg);
        free(h);
        h_all[i] = NULL;
    }
    h_nall = 0;
    return report;
}

void h_on_failure(void)
{
    static bool busy;
    if (busy)
        return;
    busy = true;
    char *report = cleanup_all(true);
    if (report)
        fprintf(stderr, "---- sanitizer report in a moltd log ----\n%s\n", report);
    free(report);
    busy = false;
}

void h_test_teardown(void)
{
    char *report = cleanup_all(false);
    if (report) {
        fprintf(stderr, "---- sanitizer report in a moltd log ----\n%s\n", report);
        free(report);
        ck_abort_msg("moltd or a worker reported a sanitizer error (see stderr)");
    }
}

/* ---- commands ------------------------------------------------------------------------------ */

static void buf_add(char **buf, size_t *len, size_t *cap, const char *data, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 4096;
        while (*len + n + 1 > nc)
            nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb)
            return;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
}

int h_runv(h_cmd_t *r, int timeout_ms, const char *const *argv)
{
    memset(r, 0, sizeof(*r));
    size_t ocap = 0, ecap = 0, elen = 0;
    buf_add(&r->out, &r->out_len, &ocap, "", 0);
    buf_add(&r->err, &elen, &ecap, "", 0);
    int op[2], ep[2];
    H_CHECK(pipe2(op, O_CLOEXEC) == 0 && pipe2(ep, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t pid = fork();
    if (pid == 0) {
        child_prepare(in, op[1], ep[1]);
        const char *wrapped[H_MAX_WRAP + 64];
        if (strcmp(argv[0], H_MOLTD) == 0 && wrap_argv(argv, wrapped, H_MAX_WRAP + 64))
            execvp(wrapped[0], (char *const *)wrapped);
        execvp(argv[0], (char *const *)argv);
        dprintf(STDERR_FILENO, "harness: exec %s failed: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int fork_errno = errno;
    close(in);
    close(op[1]);
    close(ep[1]);
    if (pid < 0) {
        close(op[0]);
        close(ep[0]);
    }
    H_CHECK(pid > 0, "fork(): %s", strerror(fork_errno));

    /* Read both pipes until both close, then wait for the exit; kill the
     * command if either takes longer than timeout_ms. */
    int fds[2] = {op[0], ep[0]};
    long long deadline = h_now_ms() + h_ms(timeout_ms);
    bool killed = false;
    int st = 0;
    for (;;) {
        long long left = deadline - h_now_ms();
        if (left <= 0) {
            if (killed)
                break; /* a grandchild holds a pipe, or the kill did not take: give up */
            kill(pid, SIGKILL);
            killed = true;
            deadline = h_now_ms() + 3000;
            continue;
        }
        if (fds[0] < 0 && fds[1] < 0) {
            pid_t w = waitpid(pid, &st, WNOHANG);
            if (w == pid || (w < 0 && errno != EINTR))
                break;
            h_sleep_ms(5);
            continue;
        }
        struct pollfd pfd[2];
        nfds_t np = 0;
        for (int i = 0; i < 2; i++)
            if (fds[i] >= 0)
                pfd[np++] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        if (poll(pfd, np, (int)left) <= 0)
            continue;
        for (nfds_t k = 0; k < np; k++) {
            if (!pfd[k].revents)
                continue;
            char chunk[65536];
            ssize_t n = read(pfd[k].fd, chunk, sizeof(chunk));
            if (n < 0 && errno == EINTR)
                continue;
            int which = pfd[k].fd == fds[0] ? 0 : 1;
            if (n <= 0) {
                close(fds[which]);
                fds[which] = -1;
            } else if (which == 0) {
                buf_add(&r->out, &r->out_len, &ocap, chunk, (size_t)n);
            } else {
                buf_add(&r->err, &elen, &ecap, chunk, (size_t)n);
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (killed)
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
    if (killed)
        r->code = -1;
    else if (WIFEXITED(st))
        r->code = WEXITSTATUS(st);
    else
        r->code = 128 + WTERMSIG(st);

    if (strncmp(argv[0], MOLT_BUILD_DIR "/", strlen(MOLT_BUILD_DIR "/")) == 0) {
        char *ex = sanitizer_excerpt(r->err);
        if (ex) {
            fprintf(stderr, "---- sanitizer report from %s ----\n%s\n", argv[0], ex);
            free(ex);
            H_FAIL("%s reported a sanitizer error (see stderr)", argv[0]);
        }
    }
    return r->code;
}

int h_run(h_cmd_t *r, int timeout_ms, const char *arg0, ...)
{
    const char *argv[64];
    size_t argc = 0;
    va_list ap;
    argv[argc++] = arg0;
    va_start(ap, arg0);
    const char *a;
    while (argc < 63 && (a = va_arg(ap, const char *)))
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    return h_runv(r, timeout_ms, argv);
}

/* Parses the last header block of a curl -D file into r. */
static bool parse_curl_head(const char *text, h_resp_t *r)
{
    const char *block = NULL;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, "HTTP/", 5) == 0)
            block = p;
    if (!block || sscanf(block, "HTTP/%u.%u %d", &r->http_major, &r->http_minor, &r->status) != 3)
        return false;
    const char *line = strchr(block, '\n');
    while (line && *++line && *line != '\r' && *line != '\n') {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        while (len && (line[len - 1] == '\r' || line[len - 1] == '\n'))
            len--;
        const char *colon = memchr(line, ':', len);
        if (colon) {
            h_hdr_t *n = realloc(r->hdrs, (r->nhdrs + 1) * sizeof(*n));
            if (!n)
                return false;
            r->hdrs = n;
            const char *v = colon + 1;
            while (v < line + len && (*v == ' ' || *v == '\t'))
                v++;
            r->hdrs[r->nhdrs].name = strndup(line, (size_t)(colon - line));
            r->hdrs[r->nhdrs].value = strndup(v, (size_t)(line + len - v));
            r->nhdrs++;
        }
        line = end;
    }
    return true;
}

int h_curl(h_molt_t *h, h_resp_t *r, const char *arg0, ...)
{
    char head[PATH_MAX + 16], body[PATH_MAX + 16];
    snprintf(head, sizeof(head), "%s/curl.head", h->dir);
    snprintf(body, sizeof(body), "%s/curl.body", h->dir);
    unlink(head);
    unlink(body);
    char max_time[16];
    snprintf(max_time, sizeof(max_time), "%d", h_ms(10000) / 1000);
    const char *argv[64] = {"curl", "-sS", "--max-time", max_time, "-D", head, "-o", body};
    size_t argc = 8;
    va_list ap;
    argv[argc++] = arg0;
    va_start(ap, arg0);
    const char *a;
    while (argc < 63 && (a = va_arg(ap, const char *)))
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;

    memset(r, 0, sizeof(*r));
    h_cmd_t cmd;
    int code = h_runv(&cmd, 20000, argv);
    if (code != 0)
        fprintf(stderr, "harness: curl exited with %d: %s\n", code, cmd.err);
    h_cmd_free(&cmd);
    if (code != 0)
        return code;
    char *text = read_file(head, NULL);
    bool ok = text && parse_curl_head(text, r);
    free(text);
    r->body = read_file(body, &r->body_len);
    return ok && r->body ? 0 : -EPROTO;
}

void h_cmd_free(h_cmd_t *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof(*r));
}

/* ---- network ------------------------------------------------------------------------------- */

static socklen_t loopback(int family, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = in6addr_loopback;
        s6->sin6_port = htons((uint16_t)port);
        return sizeof(*s6);
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s4->sin_port = htons((uint16_t)port);
    return sizeof(*s4);
}

int h_free_port(int family)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, 0, &ss);
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    H_CHECK(fd >= 0, "socket(): %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        int e = errno;
        close(fd);
        H_FAIL("binding a free %s port: %s", family == AF_INET6 ? "[::1]" : "127.0.0.1", strerror(e));
    }
    close(fd);
    return family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                              : ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

bool h_have_ipv6(void)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(AF_INET6, 0, &ss);
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool ok = bind(fd, (struct sockaddr *)&ss, len) == 0;
    close(fd);
    return ok;
}

static void str_add(char **s, const char *at, size_t len)
{
    size_t old = *s ? strlen(*s) : 0;
    char *n = realloc(*s, old + len + 1);
    if (!n)
        return;
    memcpy(n + old, at, len);
    n[old + len] = '\0';
    *s = n;
}

static int on_message_begin(http_parser *p)
{
    h_conn_t *c = p->data;
    c->in_value = false;
    return c->cur ? 0 : -1;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    h_conn_t *c = p->data;
    h_resp_t *r = c->cur;
    if (c->in_value || r->nhdrs == 0) {
        h_hdr_t *n = realloc(r->hdrs, (r->nhdrs + 1) * sizeof(*n));
        if (!n)
            return -1;
        r->hdrs = n;
        r->hdrs[r->nhdrs++] = (h_hdr_t){NULL, NULL};
        str_add(&r->hdrs[r->nhdrs - 1].value, "", 0);
        c->in_value = false;
    }
    str_add(&r->hdrs[r->nhdrs - 1].name, at, len);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    h_conn_t *c = p->data;
    h_resp_t *r = c->cur;
    c->in_value = true;
    if (r->nhdrs)
        str_add(&r->hdrs[r->nhdrs - 1].value, at, len);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    h_conn_t *c = p->data;
    h_resp_t *r = c->cur;
    r->status = (int)p->status_code;
    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    r->keep_alive = http_should_keep_alive(p) != 0;
    r->chunked = (p->flags & F_CHUNKED) != 0;
    return c->no_body ? 1 : 0; /* 1: the parser expects no body (HEAD) */
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    h_conn_t *c = p->data;
    h_resp_t *r = c->cur;
    char *n = realloc(r->body, r->body_len + len + 1);
    if (!n)
        return -1;
    memcpy(n + r->body_len, at, len);
    r->body_len += len;
    n[r->body_len] = '\0';
    r->body = n;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    h_conn_t *c = p->data;
    c->done = true;
    http_parser_pause(p, 1); /* one response per h_conn_read(); the rest stays buffered */
    return 0;
}

static const http_parser_settings h_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void h_conn_open(h_conn_t *c, int family, int port)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, port, &ss);
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    H_CHECK(fd >= 0, "socket(): %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
        int e = errno;
        close(fd);
        H_FAIL("connect() to %s port %d: %s", family == AF_INET6 ? "[::1]" : "127.0.0.1", port, strerror(e));
    }
    struct timeval tv = {.tv_sec = h_ms(5000) / 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    c->fd = fd;
    if (h_nconns < MOLT_ARRAY_SIZE(h_conns))
        h_conns[h_nconns++] = fd;
}

void h_conn_send(h_conn_t *c, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        H_CHECK(n > 0, "send() on a test connection: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

void h_conn_send_str(h_conn_t *c, const char *s)
{
    h_conn_send(c, s, strlen(s));
}

/* Reads what is there into c->buf. 1 read, 0 EOF (or reset), -1 nothing within the time. */
static int conn_fill(h_conn_t *c, int timeout_ms)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int pr = poll(&pfd, 1, timeout_ms);
    if (pr <= 0)
        return -1;
    if (c->cap - c->len < 16384) {
        size_t nc = c->cap ? c->cap * 2 : 65536;
        char *nb = realloc(c->buf, nc);
        if (!nb)
            return -1;
        c->buf = nb;
        c->cap = nc;
    }
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return -1;
    if (n <= 0) {
        c->eof = true;
        return 0;
    }
    c->len += (size_t)n;
    return 1;
}

int h_conn_read(h_conn_t *c, h_resp_t *r, int timeout_ms)
{
    memset(r, 0, sizeof(*r));
    c->cur = r;
    c->done = false;
    long long deadline = h_now_ms() + h_ms(timeout_ms);
    int rc;
    for (;;) {
        if (c->len) {
            size_t n = http_parser_execute(&c->parser, &h_settings, c->buf, c->len);
            enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
            if (e == HPE_PAUSED) {
                http_parser_pause(&c->parser, 0);
            } else if (e != HPE_OK) {
                rc = -EPROTO;
                break;
            }
            memmove(c->buf, c->buf + n, c->len - n);
            c->len -= n;
            if (c->done) {
                rc = 0;
                break;
            }
        }
        if (c->eof) {
            /* End of a close-delimited body, or a truncated response. */
            http_parser_execute(&c->parser, &h_settings, NULL, 0);
            if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
                http_parser_pause(&c->parser, 0);
            rc = c->done ? 0 : -EPIPE;
            break;
        }
        long long left = deadline - h_now_ms();
        if (left <= 0) {
            rc = -ETIMEDOUT;
            break;
        }
        conn_fill(c, (int)left);
    }
    c->cur = NULL;
    if (!r->body) {
        r->body = strdup("");
        r->body_len = 0;
    }
    return rc;
}

int h_conn_wait_eof(h_conn_t *c, int timeout_ms)
{
    if (c->len)
        return -1;
    if (c->eof)
        return 1;
    int r = conn_fill(c, h_ms(timeout_ms));
    return r == 0 ? 1 : r < 0 ? 0 : -1;
}

void h_conn_close(h_conn_t *c)
{
    for (size_t i = 0; i < h_nconns; i++) {
        if (h_conns[i] == c->fd) {
            h_conns[i] = h_conns[--h_nconns];
            break;
        }
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

const char *h_resp_header(const h_resp_t *r, const char *name)
{
    for (size_t i = 0; i < r->nhdrs; i++)
        if (r->hdrs[i].name && strcasecmp(r->hdrs[i].name, name) == 0)
            return r->hdrs[i].value ? r->hdrs[i].value : "";
    return NULL;
}

void h_resp_free(h_resp_t *r)
{
    for (size_t i = 0; i < r->nhdrs; i++) {
        free(r->hdrs[i].name);
        free(r->hdrs[i].value);
    }
    free(r->hdrs);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

TCase *h_tcase(const char *name, int timeout)
{
    TCase *tc = tcase_create(name);
    tcase_add_unchecked_fixture(tc, h_suite_setup, h_suite_teardown);
    tcase_add_checked_fixture(tc, NULL, h_test_teardown);
    tcase_set_timeout(tc, h_ms(timeout));
    return tc;
}

void h_fmt(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

size_t h_count_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    H_CHECK(d != NULL, "opendir(%s): %s", path, strerror(errno));
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

size_t h_zombie_children(pid_t pid)
{
    size_t n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[300], buf[512];
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[len] = '\0';
        char *rp = strrchr(buf, ')');
        char state;
        int ppid;
        if (rp && sscanf(rp + 1, " %c %d", &state, &ppid) == 2 && ppid == pid && state == 'Z')
            n++;
    }
    if (d)
        closedir(d);
    return n;
}
