/*
 * The admin listener (supervisor/admin.h): GET /metrics over HTTP/1.1 on the
 * supervisor's loop. Requests are parsed with http-parser; every bound is
 * fixed (connections, head size, time), one request is answered per
 * connection, and the connection is then closed politely: the write side is
 * shut down and whatever the client still sends is read and dropped until
 * it closes (or ADM_LINGER_MS), so that an unread pipelined request cannot
 * make the kernel reset the connection before the client read the answer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <http_parser.h>

#include "shared/log.h"
#include "shared/util.h"
#include "supervisor/admin.h"
#include "supervisor/metrics.h"
#include "supervisor/sup.h"
#include "supervisor/upgrade.h"

#define ADM_LINGER_MS 1000

typedef struct adm_conn {
    struct adm_conn *next;
    int fd;
    http_parser parser;
    size_t head_bytes; /* received before the head was complete */
    molt_buf_t url;
    bool answered;  /* the response is in `out` */
    bool lingering; /* the response is sent and the write side shut down */
    molt_buf_t out;
    ev_io w;
    ev_timer timer; /* the head's deadline, then the write's, then the linger's */
} adm_conn_t;

static struct {
    int fd;
    bool open;
    ev_io w;
    adm_conn_t *conns;
    unsigned nconns;
} A = {.fd = -1};

static void conn_free(adm_conn_t *c)
{
    for (adm_conn_t **pp = &A.conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    ev_io_stop(S.loop, &c->w);
    ev_timer_stop(S.loop, &c->timer);
    molt_close(&c->fd);
    molt_buf_free(&c->url);
    molt_buf_free(&c->out);
    free(c);
    A.nconns--;
}

static void conn_timer(adm_conn_t *c, unsigned ms)
{
    ev_timer_stop(S.loop, &c->timer);
    ev_timer_set(&c->timer, ms / 1000.0, 0.);
    ev_timer_start(S.loop, &c->timer);
}

/* Queues the one response of this connection; body NULL: none (HEAD). */
static void respond(adm_conn_t *c, int status, const char *reason, const char *ctype, const char *extra,
                    const char *body, size_t body_len, bool head_only)
{
    c->answered = true;
    c->out.len = 0;
    int rc = molt_buf_printf(&c->out,
                             "HTTP/1.1 %d %s\r\nServer: moltd\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                             "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                             status, reason, ctype, body_len, extra ? extra : "");
    if (rc == 0 && body && !head_only)
        rc = molt_buf_append(&c->out, body, body_len);
    if (rc < 0)
        c->out.len = 0; /* nothing sensible to send: the connection just closes */
}

static void respond_text(adm_conn_t *c, int status, const char *reason, const char *extra, bool head_only)
{
    char body[96];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, reason);
    respond(c, status, reason, "text/plain; charset=utf-8", extra, body, (size_t)n, head_only);
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    adm_conn_t *c = hp->data;
    return molt_buf_append(&c->url, at, len) < 0 ? -1 : 0;
}

/* The head is complete: answer now (a body, if any, is never read). */
static int on_headers_complete(http_parser *hp)
{
    adm_conn_t *c = hp->data;
    bool head_only = hp->method == HTTP_HEAD;
    http_parser_pause(hp, 1);
    if (hp->method != HTTP_GET && hp->method != HTTP_HEAD) {
        respond_text(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", false);
        return 0;
    }
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(c->url.data ? c->url.data : "", c->url.len, 0, &u) != 0) {
        respond_text(c, 400, "Bad Request", NULL, head_only);
        return 0;
    }
    const char *path = (u.field_set & (1 << UF_PATH)) ? c->url.data + u.field_data[UF_PATH].off : "";
    size_t path_len = (u.field_set & (1 << UF_PATH)) ? u.field_data[UF_PATH].len : 0;
    if (path_len != strlen("/metrics") || memcmp(path, "/metrics", path_len) != 0) {
        respond_text(c, 404, "Not Found", NULL, head_only);
        return 0;
    }
    molt_buf_t body = {0};
    if (sup_metrics_render(&body) < 0)
        respond_text(c, 500, "Internal Server Error", NULL, head_only);
    else
        respond(c, 200, "OK", SUP_METRICS_CONTENT_TYPE, NULL, body.data, body.len, head_only);
    molt_buf_free(&body);
    return 0;
}

static const http_parser_settings adm_settings = {
    .on_url = on_url,
    .on_headers_complete = on_headers_complete,
};

/* Sends what is queued; once all is sent, shuts the write side and lingers. */
static void conn_flush(adm_conn_t *c)
{
    while (c->out.len) {
        ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!(c->w.events & EV_WRITE)) {
                ev_io_stop(S.loop, &c->w);
                ev_io_set(&c->w, c->fd, EV_READ | EV_WRITE);
                ev_io_start(S.loop, &c->w);
            }
            return;
        }
        if (n < 0) {
            conn_free(c);
            return;
        }
        molt_buf_consume(&c->out, (size_t)n);
    }
    if (shutdown(c->fd, SHUT_WR) < 0) {
        conn_free(c);
        return;
    }
    c->lingering = true;
    if (c->w.events & EV_WRITE) {
        ev_io_stop(S.loop, &c->w);
        ev_io_set(&c->w, c->fd, EV_READ);
        ev_io_start(S.loop, &c->w);
    }
    conn_timer(c, ADM_LINGER_MS);
}

static void conn_read(adm_conn_t *c)
{
    char buf[4096];
    for (;;) {
        size_t want = sizeof(buf);
        if (!c->answered && SUP_ADMIN_MAX_HEAD + 1 - c->head_bytes < want)
            want = SUP_ADMIN_MAX_HEAD + 1 - c->head_bytes;
        ssize_t n = recv(c->fd, buf, want, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            /* The client closed (or reset). With a response still to send,
             * it may only have shut its write side: send it, reading no more. */
            if (n == 0 && c->answered && !c->lingering) {
                ev_io_stop(S.loop, &c->w);
                ev_io_set(&c->w, c->fd, EV_WRITE);
                ev_io_start(S.loop, &c->w);
                return;
            }
            conn_free(c);
            return;
        }
        if (c->answered)
            continue; /* after the one request: dropped */
        c->head_bytes += (size_t)n;
        http_parser_execute(&c->parser, &adm_settings, buf, (size_t)n);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (!c->answered && e != HPE_OK)
            respond_text(c, 400, "Bad Request", NULL, false);
        else if (!c->answered && c->head_bytes > SUP_ADMIN_MAX_HEAD)
            respond_text(c, 431, "Request Header Fields Too Large", NULL, false);
        if (c->answered) {
            conn_timer(c, SUP_ADMIN_IDLE_MS); /* to send it */
            conn_flush(c);
            return; /* c may be gone; what follows is read on the next event */
        }
    }
}

static void on_conn(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    adm_conn_t *c = w->data;
    if ((revents & EV_WRITE) && c->answered && !c->lingering) {
        conn_flush(c);
        return; /* c may be gone */
    }
    if (revents & EV_READ)
        conn_read(c);
}

static void on_conn_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    conn_free(w->data); /* no complete head in time, a client that does not read, or the linger is over */
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    for (;;) {
        int fd = accept4(A.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                molt_warn("accept() on the admin listener failed: %s", strerror(errno));
            return;
        }
        adm_conn_t *c = A.nconns < SUP_ADMIN_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
        if (!c) {
            close(fd); /* over the limit: the scraper retries */
            continue;
        }
        c->fd = fd;
        http_parser_init(&c->parser, HTTP_REQUEST);
        c->parser.data = c;
        c->next = A.conns;
        A.conns = c;
        A.nconns++;
        ev_io_init(&c->w, on_conn, fd, EV_READ);
        c->w.data = c;
        ev_io_start(S.loop, &c->w);
        ev_timer_init(&c->timer, on_conn_timer, SUP_ADMIN_IDLE_MS / 1000.0, 0.);
        c->timer.data = c;
        ev_timer_start(S.loop, &c->timer);
    }
}

int sup_admin_open(const molt_config_t *cfg, char *err, size_t errlen)
{
    const char *call = "socket()";
    if (!cfg->admin_address)
        return 0;
    int fd = socket(cfg->admin_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto fail;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        molt_warn("setsockopt(SO_REUSEADDR) failed for the admin listener (admin.address %s): %s",
                  cfg->admin_address, strerror(errno));
    call = "bind()";
    if (bind(fd, (const struct sockaddr *)&cfg->admin_addr, cfg->admin_addrlen) < 0)
        goto fail;
    call = "listen()";
    if (listen(fd, 64) < 0)
        goto fail;
    A.fd = fd;
    A.open = true;
    ev_io_init(&A.w, on_accept, fd, EV_READ);
    ev_io_start(S.loop, &A.w);
    molt_info("admin listener on %s (GET /metrics)", cfg->admin_address);
    return 0;
fail:
    snprintf(err, errlen, "admin.address %s: %s failed for the admin listener: %s", cfg->admin_address, call,
             strerror(errno));
    molt_close(&fd);
    return -1;
}

void sup_admin_close(void)
{
    while (A.conns)
        conn_free(A.conns);
    if (A.open) {
        ev_io_stop(S.loop, &A.w);
        A.open = false;
    }
    molt_close(&A.fd);
}

/* ---- upgrade: the listener stays; a scrape in progress is closed ------------------------------ */

void sup_admin_drop_conns(void)
{
    while (A.conns)
        conn_free(A.conns);
}

unsigned sup_admin_upgrade_count(void)
{
    return 1;
}

size_t sup_admin_upgrade_fds(int *fds, size_t max)
{
    if (!A.open || max == 0)
        return 0;
    fds[0] = A.fd;
    return 1;
}

void sup_admin_upgrade_pack(msgpack_packer *pk)
{
    sup_up_pack_i64(pk, "admin_fd", A.open ? A.fd : -1);
}

bool sup_admin_upgrade_unpack(sup_up_rd_t *rd, const msgpack_object *top)
{
    int64_t fd = -1;
    if (!sup_up_i64(rd, top, "admin_fd", &fd) || fd < 0)
        return !rd->failed;
    if (!sup_upgrade_fd_ok(rd, "admin_fd", fd, SOCK_STREAM, true))
        return false;
    A.fd = (int)fd;
    A.open = true;
    ev_io_init(&A.w, on_accept, A.fd, EV_READ);
    ev_io_start(S.loop, &A.w);
    return true;
}
