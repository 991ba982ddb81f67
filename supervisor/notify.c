/*
 * sd_notify, without libsystemd (supervisor/notify.h says what and when).
 *
 * One socket for moltd's life, unconnected: every notification is one
 * sendmsg() to NOTIFY_SOCKET's address, so that each message is one datagram
 * that systemd reads whole (it acts on READY=1 / RELOADING=1 / STOPPING=1 per
 * datagram, so they are never combined). MSG_DONTWAIT: a receiver that does
 * not read must not stall the supervisor's loop; a lost notification is
 * logged. The kernel attaches moltd's credentials, which is how systemd
 * knows the main process sent it (NotifyAccess=main).
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "shared/log.h"
#include "shared/util.h"
#include "supervisor/notify.h"

/* One notification: a few fields; a STATUS= carries a reload's reason. */
#define NOTIFY_MAX 4096

static struct {
    int fd;
    struct sockaddr_un sa;
    socklen_t salen;
    char where[sizeof(((struct sockaddr_un *)0)->sun_path) + 1]; /* NOTIFY_SOCKET as given, for logs */
    uint64_t watchdog_usec;
    ev_timer watchdog_w;
    int last_errno; /* of the last failed send: logged once until a send works again */
} N = {.fd = -1};

int sup_notify_addr(const char *value, struct sockaddr_un *sa, socklen_t *len)
{
    if (!value || (value[0] != '/' && value[0] != '@') || !value[1])
        return -EINVAL;
    size_t n = strlen(value);
    if (n >= sizeof(sa->sun_path))
        return -ENAMETOOLONG;
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, value, n);
    if (value[0] == '@') {
        /* Abstract: a leading NUL, and the length says where the name ends
         * (no terminating NUL counted). */
        sa->sun_path[0] = '\0';
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

uint64_t sup_notify_watchdog_usec(const char *usec, const char *wpid, pid_t pid)
{
    if (!usec || !*usec)
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(usec, &end, 10);
    if (errno || *end || usec[0] == '-' || v == 0)
        return 0;
    if (wpid) {
        errno = 0;
        long p = strtol(wpid, &end, 10);
        if (errno || *end || !*wpid || p != (long)pid)
            return 0; /* meant for another process (one that forked us without clearing it) */
    }
    return (uint64_t)v;
}

int sup_notify_init(void)
{
    const char *value = getenv("NOTIFY_SOCKET");
    char usec[32] = "", wpid[32] = "";
    bool have_wpid = getenv("WATCHDOG_PID") != NULL;
    snprintf(usec, sizeof(usec), "%s", getenv("WATCHDOG_USEC") ?: "");
    snprintf(wpid, sizeof(wpid), "%s", getenv("WATCHDOG_PID") ?: "");
    if (value)
        snprintf(N.where, sizeof(N.where), "%s", value);
    /* Whatever happens next, nothing moltd forks inherits these: a plugin
     * calling sd_notify() from a worker must not speak for moltd. */
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    if (!value)
        return 0;

    int rc = sup_notify_addr(N.where, &N.sa, &N.salen);
    if (rc < 0) {
        molt_warn("NOTIFY_SOCKET=%s: %s; systemd will not be notified", N.where,
                  rc == -ENAMETOOLONG ? "too long for a unix socket address"
                                      : "not an absolute path or an @abstract name (unsupported)");
        return 0;
    }
    N.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (N.fd < 0) {
        molt_warn("socket(AF_UNIX, SOCK_DGRAM) failed for NOTIFY_SOCKET %s: %s; systemd will not be notified",
                  N.where, strerror(errno));
        return 0;
    }
    N.watchdog_usec = sup_notify_watchdog_usec(usec, have_wpid ? wpid : NULL, getpid());
    if (usec[0] && !N.watchdog_usec)
        molt_info("WATCHDOG_USEC=%s%s%s: no watchdog pings from this process", usec,
                  have_wpid ? " WATCHDOG_PID=" : "", wpid);
    molt_info("notifying systemd at %s%s", N.where, N.watchdog_usec ? " (with watchdog pings)" : "");
    return 1;
}

bool sup_notify_enabled(void)
{
    return N.fd >= 0;
}

/* Sends text as one datagram. */
static void notify_send(const char *text, size_t len)
{
    if (N.fd < 0)
        return;
    struct iovec iov = {.iov_base = (void *)text, .iov_len = len};
    struct msghdr mh = {.msg_name = &N.sa, .msg_namelen = N.salen, .msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;
    do
        n = sendmsg(N.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != N.last_errno) {
            const char *nl = memchr(text, '\n', len);
            molt_warn("sendmsg() to NOTIFY_SOCKET %s failed for %.*s: %s", N.where,
                      (int)(nl ? (size_t)(nl - text) : len), text, strerror(errno));
        }
        N.last_errno = errno;
        return;
    }
    N.last_errno = 0;
}

/* Appends "STATUS=<formatted>\n" to buf (one line: newlines become spaces). */
static size_t add_status(char *buf, size_t off, const char *fmt, va_list ap)
{
    if (!fmt || off >= NOTIFY_MAX)
        return off;
    int n = snprintf(buf + off, NOTIFY_MAX - off, "STATUS=");
    if (n < 0 || (size_t)n >= NOTIFY_MAX - off)
        return off;
    size_t start = off + (size_t)n;
    n = vsnprintf(buf + start, NOTIFY_MAX - start, fmt, ap);
    if (n < 0)
        return off;
    size_t end = start + (size_t)n < NOTIFY_MAX - 1 ? start + (size_t)n : NOTIFY_MAX - 2;
    for (size_t i = start; i < end; i++)
        if (buf[i] == '\n' || buf[i] == '\r')
            buf[i] = ' ';
    buf[end++] = '\n';
    buf[end] = '\0';
    return end;
}

/* head (fixed fields, each ending in '\n'), then STATUS= from fmt, as one datagram. */
static void notify_fields(const char *head, const char *fmt, va_list ap)
{
    if (N.fd < 0)
        return;
    char buf[NOTIFY_MAX];
    int n = snprintf(buf, sizeof(buf), "%s", head);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return;
    size_t len = add_status(buf, (size_t)n, fmt, ap);
    notify_send(buf, len);
}

void sup_notify_ready(bool mainpid, const char *status_fmt, ...)
{
    if (N.fd < 0)
        return;
    char head[64];
    if (mainpid)
        snprintf(head, sizeof(head), "READY=1\nMAINPID=%ld\n", (long)getpid());
    else
        snprintf(head, sizeof(head), "READY=1\n");
    va_list ap;
    va_start(ap, status_fmt);
    notify_fields(head, status_fmt, ap);
    va_end(ap);
}

void sup_notify_reloading(const char *status_fmt, ...)
{
    if (N.fd < 0)
        return;
    /* systemd (Type=notify-reload) matches this against the time it sent
     * SIGHUP: it must be taken now, not when the request arrived. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char head[96];
    snprintf(head, sizeof(head), "RELOADING=1\nMONOTONIC_USEC=%llu\n",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL);
    va_list ap;
    va_start(ap, status_fmt);
    notify_fields(head, status_fmt, ap);
    va_end(ap);
}

void sup_notify_stopping(const char *status_fmt, ...)
{
    va_list ap;
    va_start(ap, status_fmt);
    notify_fields("STOPPING=1\n", status_fmt, ap);
    va_end(ap);
}

void sup_notify_status(const char *status_fmt, ...)
{
    va_list ap;
    va_start(ap, status_fmt);
    notify_fields("", status_fmt, ap);
    va_end(ap);
}

static void on_watchdog(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    notify_send("WATCHDOG=1\n", strlen("WATCHDOG=1\n"));
}

void sup_notify_watchdog_start(struct ev_loop *loop)
{
    if (N.fd < 0 || !N.watchdog_usec)
        return;
    /* Half the period, as sd_watchdog_enabled(3) advises: a ping is never
     * late by one slow loop iteration. The timer runs whatever moltd does,
     * reloads included: it stops only with the loop. */
    ev_tstamp every = (double)N.watchdog_usec / 2e6;
    /* One now: after an upgrade's exec, the last ping (the old image's) may
     * be most of a period ago. */
    on_watchdog(loop, &N.watchdog_w, 0);
    ev_timer_init(&N.watchdog_w, on_watchdog, every, every);
    ev_timer_start(loop, &N.watchdog_w);
    molt_info("watchdog: WATCHDOG=1 every %.0f ms (WATCHDOG_USEC=%llu)", every * 1000.0,
              (unsigned long long)N.watchdog_usec);
}

void sup_notify_export(bool on)
{
    if (!on) {
        unsetenv("NOTIFY_SOCKET");
        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
        return;
    }
    if (N.fd < 0)
        return;
    setenv("NOTIFY_SOCKET", N.where, 1);
    if (N.watchdog_usec) {
        char v[32];
        snprintf(v, sizeof(v), "%llu", (unsigned long long)N.watchdog_usec);
        setenv("WATCHDOG_USEC", v, 1);
        snprintf(v, sizeof(v), "%ld", (long)getpid());
        setenv("WATCHDOG_PID", v, 1);
    }
}

void sup_notify_close(struct ev_loop *loop)
{
    if (loop && ev_is_active(&N.watchdog_w))
        ev_timer_stop(loop, &N.watchdog_w);
    molt_close(&N.fd);
}
