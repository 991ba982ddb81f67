/*
 * The "systemd" integration theme: the real moltd as systemd runs it.
 *
 * - sd_notify: the test binds the AF_UNIX datagram socket NOTIFY_SOCKET names
 *   (a path in its temp dir, or an abstract name) with SO_PASSCRED, as
 *   systemd does, and reads what moltd sends: READY=1 with MAINPID and STATUS
 *   once it serves, RELOADING=1 with MONOTONIC_USEC then READY=1 with STATUS
 *   around each reload (committed, rolled back, rejected; moltctl or SIGHUP
 *   as Type=notify-reload sends it), STOPPING=1 on stop, WATCHDOG=1 at half
 *   WATCHDOG_USEC, during reloads too; RELOADING=1 then READY=1 "upgraded to
 *   moltd ..." around a binary upgrade, after which the re-executed moltd
 *   goes on pinging; every datagram from moltd's own pid.
 * - socket activation through Debian's systemd-socket-activate: moltd
 *   serves on the socket it was passed; a passed socket no listener claims,
 *   or one that is not a listening stream socket, is refused by name;
 *   LISTEN_PID of another process leaves the variables ignored.
 * - systemd-analyze verify on the units of dist/ (binaries pointed at this
 *   build), and `moltd -t` on dist/molt.json.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>

#include "tests/integration/harness.h"

/* ---- a NOTIFY_SOCKET listener -------------------------------------------------------------- */

typedef struct notify_rx {
    int fd;
    char env[300];   /* "NOTIFY_SOCKET=..." for h->launch */
    char all[16384]; /* every datagram so far, for failure messages */
} notify_rx_t;

typedef struct notify_msg {
    char text[4096];
    pid_t pid; /* sender, from SCM_CREDENTIALS */
    long long at_ms;
} notify_msg_t;

/* Binds the datagram socket: a path in h's dir, or an abstract name. */
static void notify_open(notify_rx_t *rx, h_molt_t *h, bool abstract)
{
    memset(rx, 0, sizeof(*rx));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    socklen_t len;
    char name[sizeof(h->dir) + 16];
    if (abstract) {
        snprintf(name, sizeof(name), "molt-test-notify-%d-%lld", (int)getpid(), h_now_ms());
        memcpy(sa.sun_path + 1, name, strlen(name));
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
        snprintf(rx->env, sizeof(rx->env), "NOTIFY_SOCKET=@%s", name);
    } else {
        snprintf(name, sizeof(name), "%s/notify.sock", h->dir);
        H_CHECK(strlen(name) < sizeof(sa.sun_path), "socket path too long: %s", name);
        memcpy(sa.sun_path, name, strlen(name) + 1);
        len = (socklen_t)sizeof(sa);
        snprintf(rx->env, sizeof(rx->env), "NOTIFY_SOCKET=%s", name);
    }
    rx->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    H_CHECK(rx->fd >= 0, "socket(): %s", strerror(errno));
    int one = 1;
    H_CHECK(setsockopt(rx->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) == 0, "SO_PASSCRED: %s",
            strerror(errno));
    H_CHECK(bind(rx->fd, (struct sockaddr *)&sa, len) == 0, "bind(%s): %s", rx->env, strerror(errno));
}

static void notify_close(notify_rx_t *rx)
{
    if (rx->fd >= 0)
        close(rx->fd);
    rx->fd = -1;
}

/* The next datagram within timeout_ms: 1, or 0 when none came. */
static int notify_recv(notify_rx_t *rx, notify_msg_t *m, int timeout_ms)
{
    struct pollfd pfd = {.fd = rx->fd, .events = POLLIN};
    if (poll(&pfd, 1, h_ms(timeout_ms)) <= 0)
        return 0;
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(struct ucred))];
    } ctl;
    struct iovec iov = {.iov_base = m->text, .iov_len = sizeof(m->text) - 1};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
    ssize_t n = recvmsg(rx->fd, &mh, MSG_DONTWAIT);
    if (n < 0)
        return 0;
    m->text[n] = '\0';
    m->pid = 0;
    m->at_ms = h_now_ms();
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
            struct ucred cred;
            memcpy(&cred, CMSG_DATA(c), sizeof(cred));
            m->pid = cred.pid;
        }
    size_t used = strlen(rx->all);
    snprintf(rx->all + used, sizeof(rx->all) - used, "[%s]\n", m->text);
    return 1;
}

/* The value of field `key` ("STATUS") in a notification, malloc'd; NULL if absent. */
static char *field(const notify_msg_t *m, const char *key)
{
    size_t kl = strlen(key);
    for (const char *line = m->text; *line;) {
        const char *nl = strchr(line, '\n');
        size_t ll = nl ? (size_t)(nl - line) : strlen(line);
        if (ll > kl && strncmp(line, key, kl) == 0 && line[kl] == '=')
            return strndup(line + kl + 1, ll - kl - 1);
        if (!nl)
            break;
        line = nl + 1;
    }
    return NULL;
}

static bool has_field(const notify_msg_t *m, const char *key, const char *value)
{
    char *v = field(m, key);
    bool ok = v && (!value || strcmp(v, value) == 0);
    free(v);
    return ok;
}

/* Waits for a datagram with key=value (skipping WATCHDOG=1 pings and others);
 * fails the test if none comes in timeout_ms. Checks it came from moltd. */
static void notify_expect(notify_rx_t *rx, h_molt_t *h, notify_msg_t *m, const char *key, const char *value,
                          int timeout_ms)
{
    long long deadline = h_now_ms() + h_ms(timeout_ms);
    for (;;) {
        long long left = deadline - h_now_ms();
        if (left <= 0 || !notify_recv(rx, m, (int)left))
            H_FAIL("no %s=%s from moltd within %d ms; received:\n%s", key, value ? value : "*", timeout_ms,
                   rx->all);
        if (has_field(m, key, value))
            break;
    }
    H_CHECK(m->pid == h->pid, "%s=%s came from pid %d, not moltd (%d)", key, value ? value : "*", (int)m->pid,
            (int)h->pid);
}

/* moltd under `env NOTIFY_SOCKET=... [extra...]`, ready. */
static void start_notified(h_molt_t *h, notify_rx_t *rx, const char *extra1, const char *extra2)
{
    size_t n = 0;
    h->launch[n++] = "env";
    h->launch[n++] = rx->env;
    if (extra1)
        h->launch[n++] = extra1;
    if (extra2)
        h->launch[n++] = extra2;
    h->launch[n] = NULL;
    h_start_ready(h);
}

static void set_hello_file(h_molt_t *h, const char *file)
{
    json_t *p = json_array_get(json_object_get(h->cfg, "plugins"), 0);
    json_object_set_new(p, "file", json_string(file));
    h_write_config(h);
}

static int moltctl_reload(h_molt_t *h, h_cmd_t *c)
{
    return h_run(c, 30000, H_MOLTCTL, "-s", h->sock_path, "reload", (char *)NULL);
}

static unsigned long long mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
}

/* RELOADING=1 with a MONOTONIC_USEC taken between t0 and now, then READY=1;
 * the READY's STATUS (malloc'd). */
static char *expect_reload(notify_rx_t *rx, h_molt_t *h, unsigned long long t0)
{
    notify_msg_t m;
    notify_expect(rx, h, &m, "RELOADING", "1", 10000);
    H_CHECK(!has_field(&m, "READY", NULL), "RELOADING=1 and READY=1 in one datagram: %s", m.text);
    char *mono = field(&m, "MONOTONIC_USEC");
    unsigned long long t1 = mono_usec();
    unsigned long long v = mono ? strtoull(mono, NULL, 10) : 0;
    H_CHECK(mono && v >= t0 && v <= t1, "RELOADING=1 with MONOTONIC_USEC=%s, expected between %llu and %llu",
            mono ? mono : "(none)", t0, t1);
    free(mono);
    notify_expect(rx, h, &m, "READY", "1", 30000);
    char *status = field(&m, "STATUS");
    H_CHECK(status != NULL, "READY=1 after a reload without STATUS: %s", m.text);
    return status;
}

/* ---- sd_notify ----------------------------------------------------------------------------- */

/*
 * The Type=notify life with NOTIFY_SOCKET a path: READY=1 with MAINPID and
 * STATUS once serving; a committed reload (moltctl, as ExecReload= runs it)
 * and a SIGHUP reload (Type=notify-reload) each RELOADING=1 then READY=1
 * "generation N committed in X ms"; STOPPING=1 on SIGTERM.
 */
START_TEST(test_notify_lifecycle)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(50));
    notify_rx_t rx;
    notify_open(&rx, h, false);
    start_notified(h, &rx, NULL, NULL);

    notify_msg_t m;
    notify_expect(&rx, h, &m, "READY", "1", 5000);
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", (int)h->pid);
    H_CHECK(has_field(&m, "MAINPID", pid), "READY=1 without MAINPID=%s: %s", pid, m.text);
    H_CHECK(has_field(&m, "STATUS", "generation 1 serving with 2 workers"), "first READY's STATUS: %s",
            m.text);
    char *line =
        h_log_line(h, (const char *const[]){"notifying systemd at", rx.env + strlen("NOTIFY_SOCKET="), NULL});
    H_CHECK(line != NULL, "moltd does not log where it notifies");
    free(line);

    /* moltctl reload: what ExecReload= runs under Type=notify. */
    unsigned long long t0 = mono_usec();
    h_cmd_t c;
    H_CHECK(moltctl_reload(h, &c) == 0, "reload: %s%s", c.out, c.err);
    h_cmd_free(&c);
    char *status = expect_reload(&rx, h, t0);
    H_CHECK(strncmp(status, "generation 2 committed in ", 26) == 0 && strstr(status, " ms"),
            "STATUS after a committed reload: '%s'", status);
    free(status);

    /* SIGHUP: what Type=notify-reload sends. */
    t0 = mono_usec();
    H_CHECK(kill(h->pid, SIGHUP) == 0, "kill(SIGHUP): %s", strerror(errno));
    status = expect_reload(&rx, h, t0);
    H_CHECK(strncmp(status, "generation 3 committed in ", 26) == 0, "STATUS after a SIGHUP reload: '%s'",
            status);
    free(status);

    H_CHECK(kill(h->pid, SIGTERM) == 0, "kill(SIGTERM): %s", strerror(errno));
    notify_expect(&rx, h, &m, "STOPPING", "1", 5000);
    char *st = field(&m, "STATUS"); /* "N workers": an old generation may still be draining */
    H_CHECK(st && strncmp(st, "graceful stop: ", 15) == 0 && strstr(st, " workers to stop"),
            "STOPPING's STATUS: %s", m.text);
    free(st);
    H_CHECK(h_wait_exit(h, 10000) && h_exit_code(h) == 0, "moltd did not exit 0 after SIGTERM");
    /* Nothing more than a ping after STOPPING: no READY from a reload's end. */
    while (notify_recv(&rx, &m, 100))
        H_CHECK(!has_field(&m, "READY", NULL), "READY=1 after STOPPING=1: %s", m.text);
    notify_close(&rx);
}
END_TEST

/*
 * An abstract NOTIFY_SOCKET, and reloads that fail: a rollback (tp_fail_init
 * fails its init in spawn) and a rejection (a config that does not
 * validate) each end with READY=1 and "reload failed: PHASE: REASON", while
 * moltctl exits 1 (what makes ExecReload= fail); stop --fast says STOPPING.
 */
START_TEST(test_notify_abstract_failed_reloads)
{
    h_molt_t *h = h_new();
    notify_rx_t rx;
    notify_open(&rx, h, true);
    start_notified(h, &rx, NULL, NULL);
    notify_msg_t m;
    notify_expect(&rx, h, &m, "READY", "1", 5000);

    set_hello_file(h, "tp_fail_init.so");
    unsigned long long t0 = mono_usec();
    h_cmd_t c;
    H_CHECK(moltctl_reload(h, &c) == 1, "a reload of tp_fail_init.so exited %d: %s", c.code, c.out);
    h_cmd_free(&c);
    char *status = expect_reload(&rx, h, t0);
    H_CHECK(strncmp(status, "reload failed: spawn: ", 22) == 0 &&
                strstr(status, "database at 10.9.9.9 refused the connection"),
            "STATUS after a rollback: '%s'", status);
    free(status);

    h_cfg_set(h, "bogus", json_true());
    set_hello_file(h, "hello.so");
    t0 = mono_usec();
    H_CHECK(moltctl_reload(h, &c) == 1, "a reload of an invalid config exited %d: %s", c.code, c.out);
    h_cmd_free(&c);
    status = expect_reload(&rx, h, t0);
    H_CHECK(strncmp(status, "reload failed: prepare: ", 24) == 0 && strstr(status, "bogus"),
            "STATUS after a rejected reload: '%s'", status);
    free(status);

    H_CHECK(h_run(&c, 10000, H_MOLTCTL, "-s", h->sock_path, "stop", "--fast", (char *)NULL) == 0, "stop: %s",
            c.err);
    h_cmd_free(&c);
    notify_expect(&rx, h, &m, "STOPPING", "1", 5000);
    char *st = field(&m, "STATUS");
    H_CHECK(st && strncmp(st, "fast stop: ", 11) == 0, "STOPPING's STATUS: %s", m.text);
    free(st);
    notify_close(&rx);
}
END_TEST

/* Counts WATCHDOG=1 from moltd over ms milliseconds. */
static int count_pings(notify_rx_t *rx, h_molt_t *h, int ms)
{
    int pings = 0;
    notify_msg_t m;
    long long end = h_now_ms() + ms;
    for (long long left; (left = end - h_now_ms()) > 0;) {
        if (!notify_recv(rx, &m, (int)left))
            continue;
        if (has_field(&m, "WATCHDOG", "1")) {
            H_CHECK(m.pid == h->pid, "WATCHDOG=1 from pid %d, not moltd (%d)", (int)m.pid, (int)h->pid);
            pings++;
        }
    }
    return pings;
}

/*
 * WATCHDOG_USEC=200000: a ping every 100 ms, counted over a second (about
 * 10; loosely, a loaded runner delays timers), and still during a reload
 * that spends a second in its verify window. WATCHDOG_PID of another
 * process: no pings at all.
 */
START_TEST(test_watchdog)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(1500));
    notify_rx_t rx;
    notify_open(&rx, h, false);
    start_notified(h, &rx, "WATCHDOG_USEC=200000", NULL);
    notify_msg_t m;
    notify_expect(&rx, h, &m, "READY", "1", 5000);
    int pings = count_pings(&rx, h, 1000);
    H_CHECK(pings >= 6 && pings <= 14, "%d WATCHDOG=1 in 1 s with WATCHDOG_USEC=200000 (expected about 10)",
            pings);

    int fd = h_ctl_open(h, "{\"cmd\":\"reload\"}");
    H_CHECK(fd >= 0, "cannot send a reload request");
    h_sleep_ms(200); /* into the reload: its verify window lasts 1.5 s */
    pings = count_pings(&rx, h, 1000);
    json_t *r = h_ctl_reply(fd, 20000);
    H_CHECK(r && json_is_true(json_object_get(r, "ok")), "the reload did not commit");
    json_decref(r);
    H_CHECK(pings >= 6 && pings <= 14, "%d WATCHDOG=1 in 1 s during a reload (expected about 10)", pings);
    notify_close(&rx);

    /* WATCHDOG_PID names another process: the pings are not ours to send. */
    h_molt_t *h2 = h_new();
    notify_rx_t rx2;
    notify_open(&rx2, h2, false);
    start_notified(h2, &rx2, "WATCHDOG_USEC=200000", "WATCHDOG_PID=1");
    notify_expect(&rx2, h2, &m, "READY", "1", 5000);
    pings = count_pings(&rx2, h2, 600);
    H_CHECK(pings == 0, "%d WATCHDOG=1 with WATCHDOG_PID=1", pings);
    notify_close(&rx2);
}
END_TEST

/*
 * An upgrade (moltctl upgrade, re-executing the build's moltd in place) is a
 * reload to systemd: RELOADING=1 with MONOTONIC_USEC, then READY=1 with
 * "upgraded to moltd VERSION ...", both from moltd's pid, which did not
 * change; the new binary goes on notifying (NOTIFY_SOCKET kept) and pinging
 * the watchdog (WATCHDOG_USEC kept).
 */
START_TEST(test_notify_upgrade)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(50));
    notify_rx_t rx;
    notify_open(&rx, h, false);
    start_notified(h, &rx, "WATCHDOG_USEC=200000", NULL);
    notify_msg_t m;
    notify_expect(&rx, h, &m, "READY", "1", 5000);
    json_t *st = h_status(h);
    H_CHECK(st != NULL, "no status");
    char want[128];
    snprintf(want, sizeof(want), "upgraded to moltd %s",
             json_string_value(json_object_get(st, "version")) ?: "?");
    json_decref(st);

    unsigned long long t0 = mono_usec();
    h_cmd_t c;
    int rc = h_run(&c, 30000, H_MOLTCTL, "-s", h->sock_path, "upgrade", (char *)NULL);
    H_CHECK(rc == 0, "moltctl upgrade exited %d: %s%s", rc, c.out, c.err);
    h_cmd_free(&c);
    char *status = expect_reload(&rx, h, t0);
    H_CHECK(strncmp(status, want, strlen(want)) == 0, "STATUS after an upgrade: '%s', expected '%s...'",
            status, want);
    free(status);
    st = h_status(h);
    H_CHECK(st && json_integer_value(json_object_get(st, "pid")) == h->pid &&
                json_integer_value(json_object_get(st, "upgrades")) == 1,
            "after the upgrade, status does not show moltd's pid %d and 1 upgrade", (int)h->pid);
    json_decref(st);
    int pings = count_pings(&rx, h, 1000);
    H_CHECK(pings >= 6 && pings <= 14, "%d WATCHDOG=1 in 1 s after an upgrade (expected about 10)", pings);

    /* A reload by the new binary still tells systemd. */
    t0 = mono_usec();
    H_CHECK(moltctl_reload(h, &c) == 0, "reload after the upgrade: %s", c.out);
    h_cmd_free(&c);
    status = expect_reload(&rx, h, t0);
    H_CHECK(strncmp(status, "generation 2 committed in ", 26) == 0,
            "STATUS after a reload by the new binary: '%s'", status);
    free(status);
    notify_close(&rx);
}
END_TEST

/* NOTIFY_SOCKET that is no address moltd can use: a warning, and moltd serves. */
START_TEST(test_notify_unusable)
{
    h_molt_t *h = h_new();
    h->launch[0] = "env";
    h->launch[1] = "NOTIFY_SOCKET=relative/notify.sock";
    h_start_ready(h);
    char *line =
        h_log_line(h, (const char *const[]){"NOTIFY_SOCKET=relative/notify.sock", "not be notified", NULL});
    H_CHECK(line != NULL, "no warning about an unusable NOTIFY_SOCKET");
    free(line);
}
END_TEST

/* ---- socket activation --------------------------------------------------------------------- */

/*
 * moltd under systemd-socket-activate -l 127.0.0.1:PORT --fdname=NAME: the
 * tool binds, waits for the first connection, then execs moltd in its own
 * process (so h->pid is moltd's and LISTEN_PID matches). extra: more
 * options (NULL-terminated).
 */
static void start_activated(h_molt_t *h, const char *fdname_opt, const char *const *extra)
{
    static char listen_opt[64];
    snprintf(listen_opt, sizeof(listen_opt), "127.0.0.1:%d", h->port);
    size_t n = 0;
    h->launch[n++] = "systemd-socket-activate";
    h->launch[n++] = "-l";
    h->launch[n++] = listen_opt;
    h->launch[n++] = fdname_opt;
    for (size_t i = 0; extra && extra[i]; i++)
        h->launch[n++] = extra[i];
    /* It passes on only the variables it is told to: the sanitizers' too. */
    static const char *const pass[] = {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"};
    for (size_t i = 0; i < sizeof(pass) / sizeof(pass[0]); i++) {
        if (getenv(pass[i])) {
            h->launch[n++] = "-E";
            h->launch[n++] = pass[i];
        }
    }
    h->launch[n] = NULL;
    h_start(h);
}

/* Connects to h->port until something listens there (the activator binds first). */
static void connect_when_listening(h_molt_t *h, h_conn_t *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)h->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    long long deadline = h_now_ms() + h_ms(5000);
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        H_CHECK(fd >= 0, "socket(): %s", strerror(errno));
        int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        close(fd);
        if (rc == 0)
            break;
        H_CHECK(!h_reap(h), "systemd-socket-activate exited (see the log)");
        H_CHECK(h_now_ms() < deadline, "nothing listens on 127.0.0.1:%d after 5 s", h->port);
        h_sleep_ms(20);
    }
    /* That connection woke the activator: moltd is on its way. This one
     * waits in the backlog until a worker accepts it. */
    h_conn_open(c, AF_INET, h->port);
}

START_TEST(test_socket_activation)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(50));
    start_activated(h, "--fdname=http", NULL);
    h_conn_t c;
    connect_when_listening(h, &c);
    h_conn_send_str(&c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    h_resp_t r;
    H_CHECK(h_conn_read(&c, &r, 20000) == 0, "no response through the activated socket");
    H_CHECK(r.status == 200 && strcmp(r.body, H_HELLO_BODY) == 0, "%d '%s'", r.status, r.body);
    h_resp_free(&r);
    h_conn_close(&c);
    H_CHECK(h_wait_ready(h, 20000), "moltd did not become ready under systemd-socket-activate");
    char *line = h_log_line(
        h, (const char *const[]){"listening on 127.0.0.1:", "(http, socket-activated fd 3)", NULL});
    H_CHECK(line != NULL, "moltd does not say it serves on socket-activated fd 3");
    free(line);
    line = h_log_line(h, (const char *const[]){"bind()", NULL});
    H_CHECK(line == NULL, "moltd bound a socket itself: %s", line);

    /* The listeners stay through a reload. */
    h_cmd_t cmd;
    H_CHECK(moltctl_reload(h, &cmd) == 0, "reload: %s", cmd.out);
    h_cmd_free(&cmd);
    h_conn_open(&c, AF_INET, h->port);
    h_conn_send_str(&c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    H_CHECK(h_conn_read(&c, &r, 10000) == 0 && r.status == 200, "no response after a reload");
    h_resp_free(&r);
    h_conn_close(&c);
}
END_TEST

/* A passed socket named after no listener: moltd exits 1, naming it. */
START_TEST(test_socket_activation_unclaimed)
{
    h_molt_t *h = h_new();
    start_activated(h, "--fdname=admin", NULL);
    h_conn_t c;
    connect_when_listening(h, &c);
    h_conn_close(&c);
    H_CHECK(h_wait_exit(h, 10000), "moltd did not exit with an unclaimed socket");
    H_CHECK(h_exit_code(h) == 1, "moltd exited with %d, not 1", h_exit_code(h));
    char *line = h_log_line(
        h,
        (const char *const[]){"fd 3 named \"admin\" is claimed by no listener (listen[].name: http)", NULL});
    H_CHECK(line != NULL, "no error naming the unclaimed fd");
    free(line);
    line = h_log_line(h, (const char *const[]){"cannot start", "no listener claims", NULL});
    H_CHECK(line != NULL, "no 'cannot start' line");
    free(line);
}
END_TEST

/* A datagram socket named "http": refused, naming the fd and why. */
START_TEST(test_socket_activation_not_stream)
{
    h_molt_t *h = h_new();
    start_activated(h, "--fdname=http", (const char *const[]){"--datagram", NULL});
    /* The activator waits for a datagram before it execs moltd. */
    long long deadline = h_now_ms() + h_ms(10000);
    while (!h_reap(h) && h_now_ms() < deadline) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)h->port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            sendto(fd, "x", 1, 0, (struct sockaddr *)&sa, sizeof(sa));
            close(fd);
        }
        h_sleep_ms(50);
    }
    H_CHECK(h_wait_exit(h, 1000), "moltd did not exit with a datagram socket for its listener");
    H_CHECK(h_exit_code(h) == 1, "moltd exited with %d, not 1", h_exit_code(h));
    char *line = h_log_line(
        h, (const char *const[]){"fd 3 named \"http\" for listener http is not a stream socket", NULL});
    H_CHECK(line != NULL, "no error naming the fd that is not a stream socket");
    free(line);
}
END_TEST

/* LISTEN_PID of another process: the variables are not for moltd; it binds
 * its listener itself and serves. */
START_TEST(test_socket_activation_other_pid)
{
    h_molt_t *h = h_new();
    h->launch[0] = "env";
    h->launch[1] = "LISTEN_PID=1";
    h->launch[2] = "LISTEN_FDS=1";
    h->launch[3] = "LISTEN_FDNAMES=admin";
    h_start_ready(h);
    char *line =
        h_log_line(h, (const char *const[]){"LISTEN_FDS=1 ignored: LISTEN_PID=1 is not this process", NULL});
    H_CHECK(line != NULL, "no line saying the variables were ignored");
    free(line);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_conn_send_str(&c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    h_resp_t r;
    H_CHECK(h_conn_read(&c, &r, 10000) == 0 && r.status == 200, "no response");
    h_resp_free(&r);
    h_conn_close(&c);
}
END_TEST

/* ---- dist/ --------------------------------------------------------------------------------- */

/* Copies dist/NAME into dir with /usr/sbin/molt{d,ctl} replaced by this build's. */
static void copy_unit(const char *dir, const char *name)
{
    char src[PATH_MAX], dst[512];
    snprintf(src, sizeof(src), "%s/dist/%s", MOLT_SOURCE_DIR, name);
    snprintf(dst, sizeof(dst), "%s/%s", dir, name);
    size_t len;
    char *text = h_read_file(src, &len);
    H_CHECK(len > 0, "cannot read %s", src);
    size_t cap = len * 2 + 4096, o = 0;
    char *out = malloc(cap);
    H_CHECK(out != NULL, "out of memory");
    for (const char *p = text; *p;) {
        const char *hit = strstr(p, "/usr/sbin/molt");
        if (!hit) {
            o += (size_t)snprintf(out + o, cap - o, "%s", p);
            break;
        }
        o += (size_t)snprintf(out + o, cap - o, "%.*s%s/molt", (int)(hit - p), p, MOLT_BUILD_DIR);
        p = hit + strlen("/usr/sbin/molt");
    }
    h_write_file(dst, out, o, 0644);
    free(out);
    free(text);
}

/*
 * systemd-analyze verify on dist's units (no systemd running needed): exit
 * 0 and not a word of complaint, except, on a systemd older than 253 (Debian
 * 12 has 252), that it does not know Type=notify-reload and ReloadSignal=
 * yet. And `moltd -t` accepts dist/molt.json (plugins from this build),
 * socket-activation variables or not (-t binds nothing and ignores them).
 */
START_TEST(test_dist_units)
{
    h_molt_t *h = h_new(); /* for its temp dir */
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/units", h->dir);
    H_CHECK(mkdir(dir, 0755) == 0, "mkdir(%s): %s", dir, strerror(errno));
    const char *units[] = {"molt.service", "molt.socket", "molt-notify-reload.service"};
    char paths[3][512];
    for (size_t i = 0; i < 3; i++) {
        copy_unit(dir, units[i]);
        snprintf(paths[i], sizeof(paths[i]), "%s/%s", dir, units[i]);
    }
    h_cmd_t c;
    int rc =
        h_run(&c, 60000, "systemd-analyze", "verify", "--man=no", paths[0], paths[1], paths[2], (char *)NULL);
    H_CHECK(rc == 0, "systemd-analyze verify exited %d:\n%s%s", rc, c.out, c.err);
    /* Any other line is a complaint about our units. */
    char *err = strdup(c.err);
    for (char *save = NULL, *line = strtok_r(err, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        bool old_systemd =
            strstr(line, "molt-notify-reload.service") &&
            (strstr(line, "Failed to parse service type, ignoring: notify-reload") ||
             strstr(line, "Unknown key 'ReloadSignal'") || strstr(line, "Unknown key name 'ReloadSignal'"));
        H_CHECK(old_systemd, "systemd-analyze verify complains: %s\n(all of it:\n%s)", line, c.err);
    }
    free(err);
    h_cmd_free(&c);

    /* dist/molt.json, with this build's plugins. */
    char conf[512], src[PATH_MAX];
    snprintf(src, sizeof(src), "%s/dist/molt.json", MOLT_SOURCE_DIR);
    snprintf(conf, sizeof(conf), "%s/molt.json", dir);
    json_error_t jerr;
    json_t *j = json_load_file(src, 0, &jerr);
    H_CHECK(j != NULL, "%s: %s", src, jerr.text);
    H_CHECK(strcmp(json_string_value(json_object_get(json_array_get(json_object_get(j, "listen"), 0), "name"))
                       ?: "",
                   "http") == 0,
            "dist/molt.json's listener is not named http, molt.socket's FileDescriptorName");
    json_object_set_new(j, "plugin_path", json_pack("[s]", MOLT_PLUGIN_DIR));
    H_CHECK(json_dump_file(j, conf, JSON_INDENT(2)) == 0, "writing %s", conf);
    json_decref(j);
    rc = h_run(&c, 30000, H_MOLTD, "-c", conf, "-t", (char *)NULL);
    H_CHECK(rc == 0, "moltd -t on dist/molt.json exited %d: %s%s", rc, c.out, c.err);
    h_cmd_free(&c);
    rc = h_run(&c, 30000, "env", "LISTEN_PID=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=http:other", H_MOLTD, "-c",
               conf, "-t", (char *)NULL);
    H_CHECK(rc == 0, "moltd -t with socket-activation variables exited %d: %s%s", rc, c.out, c.err);
    h_cmd_free(&c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integ_systemd");
    TCase *tc = h_tcase("notify", 60);
    tcase_add_test(tc, test_notify_lifecycle);
    tcase_add_test(tc, test_notify_abstract_failed_reloads);
    tcase_add_test(tc, test_watchdog);
    tcase_add_test(tc, test_notify_upgrade);
    tcase_add_test(tc, test_notify_unusable);
    suite_add_tcase(s, tc);
    tc = h_tcase("activation", 60);
    tcase_add_test(tc, test_socket_activation);
    tcase_add_test(tc, test_socket_activation_unclaimed);
    tcase_add_test(tc, test_socket_activation_not_stream);
    tcase_add_test(tc, test_socket_activation_other_pid);
    suite_add_tcase(s, tc);
    tc = h_tcase("dist", 120);
    tcase_add_test(tc, test_dist_units);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
