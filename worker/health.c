#include "worker/health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shared/util.h"
#include "worker/host.h"

#define HEALTH_MAX_RESPONSE (64 * 1024) /* the status line is all we judge */

static struct {
    bool running;
    struct ev_loop *loop;
    wrk_plugins_t *ps;
    int fd; /* the client end */
    molt_buf_t req;
    size_t req_off;
    molt_buf_t resp;
    wrk_health_done_fn done;
    void *arg;
    ev_io io;
    ev_timer timer;
} H = {.fd = -1};

/* Stops the watchers and frees the check's buffers. */
static void health_cleanup(void)
{
    ev_io_stop(H.loop, &H.io);
    ev_timer_stop(H.loop, &H.timer);
    molt_close(&H.fd);
    molt_buf_free(&H.req);
    molt_buf_free(&H.resp);
    H.running = false;
}

static void health_end(int status, const char *error)
{
    health_cleanup();
    H.done(status, error, H.arg);
}

/* "HTTP/1.1 200 OK\r\n..." -> 200, or 0 if there is no status line. */
static int status_of(const molt_buf_t *b)
{
    int major, minor, status;
    char line[64];
    size_t n = b->len < sizeof(line) - 1 ? b->len : sizeof(line) - 1;
    memcpy(line, b->data, n);
    line[n] = '\0';
    if (sscanf(line, "HTTP/%d.%d %3d", &major, &minor, &status) != 3)
        return 0;
    return status;
}

/* The request is answered: now every instance's own health callback. */
static void health_plugins(int status)
{
    char err[512];
    for (size_t i = 0; i < H.ps->ninsts; i++) {
        struct molt_instance *inst = &H.ps->insts[i];
        if (!inst->dso->desc.health)
            continue;
        char why[400] = "";
        wrk_host_current = inst;
        int rc = inst->dso->desc.health(inst, why, sizeof(why));
        wrk_host_current = NULL;
        if (rc != MOLT_OK) {
            why[sizeof(why) - 1] = '\0';
            snprintf(err, sizeof(err), "plugin %s: health check failed: %s", inst->cfg->name,
                     why[0] ? why : "(the plugin gave no reason)");
            health_end(status, err);
            return;
        }
    }
    health_end(status, "");
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)w;
    if (revents & EV_WRITE) {
        ssize_t n = send(H.fd, H.req.data + H.req_off, H.req.len - H.req_off, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            health_end(0, "sending the health request failed");
            return;
        }
        if (n > 0)
            H.req_off += (size_t)n;
        if (H.req_off == H.req.len) {
            ev_io_stop(H.loop, &H.io);
            ev_io_set(&H.io, H.fd, EV_READ);
            ev_io_start(H.loop, &H.io);
        }
        return;
    }
    if (molt_buf_reserve(&H.resp, 4096) < 0) {
        health_end(0, "out of memory");
        return;
    }
    ssize_t n = recv(H.fd, H.resp.data + H.resp.len, H.resp.cap - H.resp.len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        H.resp.len += (size_t)n;
        if (H.resp.len < HEALTH_MAX_RESPONSE)
            return;
    }
    /* EOF (the request said Connection: close), an error, or enough bytes. */
    int status = status_of(&H.resp);
    if (!status) {
        health_end(0, "the health request got no HTTP response");
        return;
    }
    health_plugins(status);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    int status = status_of(&H.resp);
    health_end(status, "the health request was not answered in time");
}

int wrk_health_start(struct ev_loop *loop, wrk_http_t *http, wrk_plugins_t *ps, const char *path,
                     uint32_t timeout_ms, wrk_health_done_fn done, void *arg)
{
    if (H.running)
        return -EBUSY;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    int rc = wrk_http_adopt(http, sv[0]); /* the core owns sv[0] once this succeeds */
    if (rc < 0) {
        close(sv[0]);
        close(sv[1]);
        return rc;
    }
    memset(&H.req, 0, sizeof(H.req));
    memset(&H.resp, 0, sizeof(H.resp));
    if (molt_buf_printf(&H.req, "GET %s HTTP/1.1\r\nHost: molt-health\r\nUser-Agent: molt-health\r\n"
                                "Connection: close\r\n\r\n", path) < 0) {
        close(sv[1]);
        return -ENOMEM;
    }
    H.running = true;
    H.loop = loop;
    H.ps = ps;
    H.fd = sv[1];
    H.req_off = 0;
    H.done = done;
    H.arg = arg;
    ev_io_init(&H.io, on_io, H.fd, EV_WRITE);
    ev_io_start(loop, &H.io);
    ev_timer_init(&H.timer, on_timeout, timeout_ms / 1000.0, 0.);
    ev_timer_start(loop, &H.timer);
    return 0;
}

void wrk_health_cancel(void)
{
    if (H.running)
        health_cleanup();
}
