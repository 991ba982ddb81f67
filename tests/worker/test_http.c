/*
 * Check suite for worker/http.c: a real server on a private libev loop,
 * driven from the test (ev_run(EVRUN_NOWAIT) between client reads), talking
 * over socketpair(AF_UNIX) via wrk_http_adopt() or a 127.0.0.1 listener.
 * Responses are parsed with http-parser in response mode, so framing
 * mistakes (wrong Content-Length, broken chunks) show up as parse failures.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>
#include <ev.h>
#include <http_parser.h>

#include "shared/util.h"
#include "worker/http.h"
#include "worker/txn.h"

static struct ev_loop *loop;
static wrk_http_t *srv;
static molt_http_cfg_t cfg;
static int done_calls;
static int handler_calls;
static int abort_calls, release_calls, resume_calls, suspend_calls;

/* ------------------------------------------------------------------------ */
/* The test handler                                                         */

static const char *req_header(const struct molt_txn *txn, const char *name)
{
    for (size_t i = 0; i < txn->nheaders; i++)
        if (strcasecmp(txn->headers[i].name, name) == 0)
            return txn->headers[i].value;
    return "-";
}

/*
 * Suspended transactions, the way a dispatcher does them: the handler sets
 * txn->suspended and starts a timer on the loop; the timer fills the
 * response and calls wrk_http_txn_complete(). The per-connection record
 * lives in txn->pipeline, freed by the release callback.
 */
typedef enum amode { AM_PLAIN = 0, AM_STREAM, AM_ECHO, AM_COUNT } amode_t;

typedef struct tasync {
    ev_timer timer;
    struct molt_txn *txn;
    amode_t mode;
    int ms;
} tasync_t;

static void tasync_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    tasync_t *a = w->data;
    struct molt_txn *txn = a->txn;
    int rc;
    (void)l, (void)revents;
    resume_calls++;
    ck_assert(txn->suspended);
    switch (a->mode) {
    case AM_STREAM:
        molt_buf_append(&txn->resp_body, "world", 5);
        rc = wrk_http_txn_flush(txn); /* allowed while suspended */
        ck_assert_msg(rc == 0 || rc == -EPIPE, "flush while suspended: %d", rc); /* EPIPE: the client left */
        molt_buf_append(&txn->resp_body, "!", 1);
        break;
    case AM_ECHO:
        molt_buf_append(&txn->resp_body, txn->body, txn->body_len);
        break;
    default:
        molt_buf_printf(&txn->resp_body, "resumed %d\n", a->ms);
        break;
    }
    molt_buf_printf(&txn->resp_headers, "X-Async: yes\r\n");
    ck_assert_int_eq(wrk_http_txn_complete(txn), 0);
    ck_assert(!txn->suspended);
    ck_assert_int_eq(wrk_http_txn_complete(txn), -EINVAL); /* once */
}

/* /suspend/MS, /suspend-stream/MS ("hello " flushed first), /suspend-echo/MS (the body). */
static void suspend_for(struct molt_txn *txn, amode_t mode, int ms)
{
    tasync_t *a = txn->pipeline;
    if (!a) {
        a = calloc(1, sizeof(*a));
        ck_assert_ptr_nonnull(a);
        ev_init(&a->timer, tasync_cb);
        a->timer.data = a;
        txn->pipeline = a;
    }
    ck_assert(!ev_is_active(&a->timer));
    a->txn = txn;
    a->mode = mode;
    a->ms = ms;
    if (mode == AM_STREAM) {
        molt_buf_append(&txn->resp_body, "hello ", 6);
        int rc = wrk_http_txn_flush(txn);
        ck_assert_msg(rc == 0 || rc == -EPIPE, "flush: %d", rc); /* EPIPE: the client left */
    }
    ev_timer_set(&a->timer, ms / 1000.0, 0);
    ev_timer_start(loop, &a->timer);
    txn->suspended = true;
    suspend_calls++;
}

static void test_abort(struct molt_txn *txn, void *arg)
{
    (void)arg;
    abort_calls++;
    tasync_t *a = txn->pipeline;
    ck_assert_ptr_nonnull(a);
    ev_timer_stop(loop, &a->timer);
}

static void test_release(struct molt_txn *txn, void *arg)
{
    (void)arg;
    release_calls++;
    tasync_t *a = txn->pipeline;
    ck_assert(!ev_is_active(&a->timer));
    free(a);
}

/*
 * /status/N    -> status N
 * /zero        -> status 0 (sent as 500)
 * /echo        -> the request body
 * /big/N       -> N bytes of 'x'
 * /stream      -> "hello " flush "world" flush "!" (rest after return)
 * /close       -> txn->keep_alive = false
 * /suspend/MS, /suspend-stream/MS, /suspend-echo/MS -> suspended for MS ms (above)
 * anything else: a line describing the request.
 */
static void test_handler(struct molt_txn *txn, void *arg)
{
    (void)arg;
    handler_calls++;
    /* Everything the contract promises NUL-terminated must be. */
    ck_assert_uint_eq(strlen(txn->url), txn->url_len);
    for (size_t i = 0; i < txn->nheaders; i++) {
        ck_assert_uint_eq(strlen(txn->headers[i].name), txn->headers[i].name_len);
        ck_assert_uint_eq(strlen(txn->headers[i].value), txn->headers[i].value_len);
    }
    ck_assert_ptr_nonnull(txn->conn);
    molt_buf_printf(&txn->resp_headers, "X-Handler: yes\r\n");

    char path[256];
    snprintf(path, sizeof(path), "%.*s", (int)txn->path_len, txn->path);
    if (strncmp(path, "/status/", 8) == 0) {
        txn->status = atoi(path + 8);
        molt_buf_printf(&txn->resp_body, "status %d\n", txn->status);
    } else if (strcmp(path, "/zero") == 0) {
        txn->status = 0;
    } else if (strcmp(path, "/echo") == 0) {
        molt_buf_append(&txn->resp_body, txn->body, txn->body_len);
    } else if (strncmp(path, "/big/", 5) == 0) {
        size_t n = (size_t)atol(path + 5);
        molt_buf_reserve(&txn->resp_body, n);
        memset(txn->resp_body.data, 'x', n);
        txn->resp_body.len = n;
    } else if (strcmp(path, "/stream") == 0) {
        molt_buf_append(&txn->resp_body, "hello ", 6);
        ck_assert_int_eq(wrk_http_txn_flush(txn), 0);
        ck_assert(txn->streaming);
        molt_buf_append(&txn->resp_body, "world", 5);
        ck_assert_int_eq(wrk_http_txn_flush(txn), 0);
        molt_buf_append(&txn->resp_body, "!", 1);
    } else if (strcmp(path, "/close") == 0) {
        txn->keep_alive = false;
        molt_buf_printf(&txn->resp_body, "bye\n");
    } else if (strncmp(path, "/suspend/", 9) == 0) {
        suspend_for(txn, AM_PLAIN, atoi(path + 9));
    } else if (strncmp(path, "/suspend-stream/", 16) == 0) {
        suspend_for(txn, AM_STREAM, atoi(path + 16));
    } else if (strncmp(path, "/suspend-echo/", 14) == 0) {
        suspend_for(txn, AM_ECHO, atoi(path + 14));
    } else {
        molt_buf_printf(&txn->resp_body, "m=%s p=%s q=%.*s t=%s b=%zu v=%d\n", txn->method, path,
                        (int)txn->query_len, txn->query ? txn->query : "", req_header(txn, "X-Test"),
                        txn->body_len, txn->version);
    }
}

/* ------------------------------------------------------------------------ */
/* Server setup                                                             */

static void cfg_defaults(void)
{
    cfg.max_header_bytes = 16384;
    cfg.max_body_bytes = 1048576;
    cfg.header_timeout_ms = 10000;
    cfg.keepalive_timeout_ms = 60000;
}

static void setup(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
    cfg_defaults();
    srv = wrk_http_new(loop, &cfg, test_handler, NULL);
    ck_assert_ptr_nonnull(srv);
    wrk_http_set_txn_hooks(srv, test_abort, test_release);
    done_calls = 0;
    handler_calls = 0;
    abort_calls = release_calls = resume_calls = suspend_calls = 0;
}

static void teardown(void)
{
    wrk_http_free(srv);
    srv = NULL;
    ev_loop_destroy(loop);
    loop = NULL;
}

/* Restarts the server after a test changed cfg. */
static void restart(void)
{
    wrk_http_free(srv);
    srv = wrk_http_new(loop, &cfg, test_handler, NULL);
    ck_assert_ptr_nonnull(srv);
    wrk_http_set_txn_hooks(srv, test_abort, test_release);
}

static void on_done(void *arg)
{
    (void)arg;
    done_calls++;
}

static uint64_t conns_open(void)
{
    wrk_http_stats_t st;
    wrk_http_get_stats(srv, &st);
    return st.conns;
}

/* ------------------------------------------------------------------------ */
/* Client side                                                              */

typedef struct client {
    int fd;
    molt_buf_t in;
    bool eof;
} client_t;

static void client_init(client_t *cl, int fd)
{
    memset(cl, 0, sizeof(*cl));
    cl->fd = fd;
    ck_assert_int_eq(molt_fd_set_nonblock(fd, true), 0);
}

/* A socketpair whose server end the server adopts. */
static void client_pair(client_t *cl)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(wrk_http_adopt(srv, sv[1]), 0);
    client_init(cl, sv[0]);
}

static void client_free(client_t *cl)
{
    molt_close(&cl->fd);
    molt_buf_free(&cl->in);
}

/* One step: run the server's loop once without blocking, read what arrived, wait a little. */
static void client_pump(client_t *cl)
{
    ev_run(loop, EVRUN_NOWAIT);
    if (!cl || cl->fd < 0)
        return;
    for (;;) {
        char buf[65536];
        ssize_t n = recv(cl->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            molt_buf_append(&cl->in, buf, (size_t)n);
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            cl->eof = true;
        break;
    }
    struct pollfd pfd = {.fd = cl->fd, .events = POLLIN};
    if (!cl->eof)
        poll(&pfd, 1, 1);
}

static void pump_ms(client_t *cl, int ms)
{
    uint64_t end = molt_now_ms() + (uint64_t)ms;
    while (molt_now_ms() < end) {
        client_pump(cl);
        if (!cl)
            usleep(1000);
    }
}

static void client_send(client_t *cl, const void *data, size_t len)
{
    const char *p = data;
    uint64_t end = molt_now_ms() + 10000;
    while (len) {
        ssize_t n = send(cl->fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        ck_assert_msg(n < 0 && (errno == EAGAIN || errno == EINTR), "send: %s", strerror(errno));
        ck_assert_msg(molt_now_ms() < end, "send stalled");
        client_pump(cl);
    }
    client_pump(cl);
}

static void client_sends(client_t *cl, const char *s)
{
    client_send(cl, s, strlen(s));
}

/* Pumps until the client sees EOF; false on timeout. */
static bool client_wait_eof(client_t *cl, int timeout_ms)
{
    uint64_t end = molt_now_ms() + (uint64_t)timeout_ms;
    while (!cl->eof && molt_now_ms() < end)
        client_pump(cl);
    return cl->eof;
}

/* ------------------------------------------------------------------------ */
/* Response parsing                                                         */

#define MAX_RESP 16
#define MAX_HDR 32

typedef struct resp {
    int status;
    int nh;
    char name[MAX_HDR][64];
    char value[MAX_HDR][256];
    char body[4096];
    size_t body_len; /* may exceed sizeof(body): only the start is kept */
    bool body_fits;
    bool keep_alive;
} resp_t;

typedef struct rstate {
    resp_t *r;
    int n; /* complete responses */
    int max;
    unsigned head_mask;
    char last; /* 'f' or 'v' */
} rstate_t;

static resp_t *rs_cur(http_parser *p)
{
    rstate_t *rs = p->data;
    return rs->n < rs->max ? &rs->r[rs->n] : NULL;
}

static int rs_begin(http_parser *p)
{
    resp_t *r = rs_cur(p);
    if (r) {
        memset(r, 0, sizeof(*r));
        r->body_fits = true;
    }
    ((rstate_t *)p->data)->last = 0;
    return 0;
}

static void cat(char *dst, size_t cap, const char *at, size_t len)
{
    size_t have = strlen(dst);
    if (have + len >= cap)
        len = cap - 1 - have;
    memcpy(dst + have, at, len);
    dst[have + len] = 0;
}

static int rs_field(http_parser *p, const char *at, size_t len)
{
    rstate_t *rs = p->data;
    resp_t *r = rs_cur(p);
    if (!r)
        return 0;
    if (rs->last != 'f') {
        if (r->nh == MAX_HDR)
            return -1;
        r->nh++;
    }
    rs->last = 'f';
    cat(r->name[r->nh - 1], sizeof(r->name[0]), at, len);
    return 0;
}

static int rs_value(http_parser *p, const char *at, size_t len)
{
    rstate_t *rs = p->data;
    resp_t *r = rs_cur(p);
    if (!r || !r->nh)
        return 0;
    rs->last = 'v';
    cat(r->value[r->nh - 1], sizeof(r->value[0]), at, len);
    return 0;
}

static int rs_headers(http_parser *p)
{
    rstate_t *rs = p->data;
    resp_t *r = rs_cur(p);
    if (r) {
        r->status = (int)p->status_code;
        r->keep_alive = http_should_keep_alive(p);
    }
    return (rs->head_mask >> rs->n) & 1;
}

static int rs_body(http_parser *p, const char *at, size_t len)
{
    resp_t *r = rs_cur(p);
    if (!r)
        return 0;
    if (r->body_len + len <= sizeof(r->body))
        memcpy(r->body + r->body_len, at, len);
    else
        r->body_fits = false;
    r->body_len += len;
    return 0;
}

static int rs_complete(http_parser *p)
{
    rstate_t *rs = p->data;
    rs->n++;
    return 0;
}

static const http_parser_settings rs_settings = {
    .on_message_begin = rs_begin,
    .on_header_field = rs_field,
    .on_header_value = rs_value,
    .on_headers_complete = rs_headers,
    .on_body = rs_body,
    .on_message_complete = rs_complete,
};

/* Parses all of the client's input from the start; returns complete responses or -1 on a framing error. */
static int parse_responses(client_t *cl, unsigned head_mask, resp_t *out, int max)
{
    http_parser p;
    rstate_t rs = {.r = out, .max = max, .head_mask = head_mask};
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &rs;
    size_t n = http_parser_execute(&p, &rs_settings, cl->in.data, cl->in.len);
    if (HTTP_PARSER_ERRNO(&p) != HPE_OK || n != cl->in.len)
        return -1;
    if (cl->eof)
        http_parser_execute(&p, &rs_settings, NULL, 0);
    return rs.n;
}

/* Pumps until `want` responses are complete; returns how many there are. */
static int client_wait(client_t *cl, int want, unsigned head_mask, resp_t *out, int timeout_ms)
{
    uint64_t end = molt_now_ms() + (uint64_t)timeout_ms;
    int n = 0;
    for (;;) {
        n = parse_responses(cl, head_mask, out, MAX_RESP);
        ck_assert_msg(n >= 0, "response framing broken: %.*s", (int)cl->in.len, cl->in.data);
        if (n >= want || cl->eof || molt_now_ms() >= end)
            return n;
        client_pump(cl);
    }
}

static const char *hdr(const resp_t *r, const char *name)
{
    for (int i = 0; i < r->nh; i++)
        if (strcasecmp(r->name[i], name) == 0)
            return r->value[i];
    return NULL;
}

static bool body_is(const resp_t *r, const char *s)
{
    return r->body_len == strlen(s) && memcmp(r->body, s, r->body_len) == 0;
}

static void client_reset_in(client_t *cl)
{
    cl->in.len = 0;
}

/* ------------------------------------------------------------------------ */
/* Basic requests                                                           */

START_TEST(test_get_simple)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /hello?x=1&y=2#frag HTTP/1.1\r\nHost: t\r\nX-Test: val  \r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_int_eq(r[0].status, 200);
    ck_assert_msg(body_is(&r[0], "m=GET p=/hello q=x=1&y=2 t=val b=0 v=11\n"), "body %.*s",
                  (int)r[0].body_len, r[0].body);
    ck_assert_str_eq(hdr(&r[0], "Server"), "molt/" MOLT_VERSION);
    const char *date = hdr(&r[0], "Date");
    ck_assert_ptr_nonnull(date);
    ck_assert_uint_eq(strlen(date), 29); /* "Sun, 06 Nov 1994 08:49:37 GMT" */
    ck_assert(strcmp(date + 26, "GMT") == 0 && date[3] == ',');
    char cl_len[32];
    snprintf(cl_len, sizeof(cl_len), "%zu", r[0].body_len);
    ck_assert_str_eq(hdr(&r[0], "Content-Length"), cl_len);
    ck_assert_str_eq(hdr(&r[0], "X-Handler"), "yes");
    ck_assert_ptr_null(hdr(&r[0], "Connection"));
    ck_assert(r[0].keep_alive);
    ck_assert(memcmp(cl.in.data, "HTTP/1.1 200 OK\r\n", 17) == 0);
    client_free(&cl);
}
END_TEST

START_TEST(test_keepalive_two)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /one HTTP/1.1\r\nHost: t\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    client_sends(&cl, "GET /two HTTP/1.1\r\nHost: t\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 2000), 2);
    ck_assert(body_is(&r[0], "m=GET p=/one q= t=- b=0 v=11\n"));
    ck_assert(body_is(&r[1], "m=GET p=/two q= t=- b=0 v=11\n"));
    ck_assert(!cl.eof);
    ck_assert_uint_eq(conns_open(), 1);
    client_free(&cl);
}
END_TEST

START_TEST(test_pipelining)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
                      "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
                      "GET /status/404 HTTP/1.1\r\nHost: t\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 3, 0, r, 2000), 3);
    ck_assert(body_is(&r[0], "m=GET p=/a q= t=- b=0 v=11\n"));
    ck_assert_int_eq(r[1].status, 200);
    ck_assert(body_is(&r[1], "hello"));
    ck_assert_int_eq(r[2].status, 404);
    ck_assert(!cl.eof);
    client_free(&cl);
}
END_TEST

START_TEST(test_http10_close)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /x HTTP/1.0\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert(body_is(&r[0], "m=GET p=/x q= t=- b=0 v=10\n"));
    ck_assert_str_eq(hdr(&r[0], "Connection"), "close");
    ck_assert(memcmp(cl.in.data, "HTTP/1.1 200", 12) == 0);
    ck_assert(client_wait_eof(&cl, 2000));
    client_free(&cl);
}
END_TEST

START_TEST(test_http10_keepalive)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_str_eq(hdr(&r[0], "Connection"), "keep-alive");
    client_sends(&cl, "GET /y HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 2000), 2);
    ck_assert(body_is(&r[1], "m=GET p=/y q= t=- b=0 v=10\n"));
    pump_ms(&cl, 50);
    ck_assert(!cl.eof);
    client_free(&cl);
}
END_TEST

START_TEST(test_http11_connection_close)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_str_eq(hdr(&r[0], "Connection"), "close");
    ck_assert(client_wait_eof(&cl, 2000));
    client_free(&cl);
}
END_TEST

START_TEST(test_handler_close)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /close HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_str_eq(hdr(&r[0], "Connection"), "close");
    ck_assert(client_wait_eof(&cl, 2000));
    client_free(&cl);
}
END_TEST

START_TEST(test_head)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    /* HEAD then GET pipelined: a HEAD body sent by mistake would break the second parse. */
    client_sends(&cl, "HEAD /h HTTP/1.1\r\n\r\nGET /h HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 2, 1u, r, 2000), 2);
    ck_assert_int_eq(r[0].status, 200);
    ck_assert_uint_eq(r[0].body_len, 0);
    ck_assert(body_is(&r[1], "m=GET p=/h q= t=- b=0 v=11\n"));
    char want[16];
    snprintf(want, sizeof(want), "%zu", strlen("m=HEAD p=/h q= t=- b=0 v=11\n"));
    ck_assert_str_eq(hdr(&r[0], "Content-Length"), want);
    client_free(&cl);
}
END_TEST

START_TEST(test_no_body_statuses)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /status/204 HTTP/1.1\r\n\r\nGET /status/304 HTTP/1.1\r\n\r\n"
                      "GET /zero HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 3, 0, r, 2000), 3);
    ck_assert_int_eq(r[0].status, 204);
    ck_assert_ptr_null(hdr(&r[0], "Content-Length"));
    ck_assert_uint_eq(r[0].body_len, 0);
    ck_assert_int_eq(r[1].status, 304);
    ck_assert_ptr_null(hdr(&r[1], "Content-Length"));
    ck_assert_int_eq(r[2].status, 500);
    ck_assert(strstr(cl.in.data, "HTTP/1.1 500 Internal Server Error\r\n") != NULL);
    client_free(&cl);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Bodies                                                                   */

START_TEST(test_body_content_length)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    /* Split so the body arrives in pieces (copied) ... */
    client_sends(&cl, "POST /echo HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello");
    pump_ms(&cl, 20);
    client_sends(&cl, " world");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert(body_is(&r[0], "hello world"));
    /* ... and whole (used in place). */
    client_sends(&cl, "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 2000), 2);
    ck_assert(body_is(&r[1], "abc"));
    client_free(&cl);
}
END_TEST

START_TEST(test_body_chunked)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n1;ext=1\r\n \r\n");
    pump_ms(&cl, 20);
    client_sends(&cl, "5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_int_eq(r[0].status, 200);
    ck_assert(body_is(&r[0], "hello world"));
    client_sends(&cl, "GET /after HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 2000), 2);
    ck_assert(body_is(&r[1], "m=GET p=/after q= t=- b=0 v=11\n"));
    client_free(&cl);
}
END_TEST

START_TEST(test_body_too_large_length)
{
    client_t cl;
    resp_t r[MAX_RESP];
    cfg.max_body_bytes = 1024;
    restart();
    client_pair(&cl);
    client_sends(&cl, "POST /echo HTTP/1.1\r\nContent-Length: 1025\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_int_eq(r[0].status, 413);
    ck_assert_str_eq(hdr(&r[0], "Connection"), "close");
    ck_assert(client_wait_eof(&cl, 3000));
    ck_assert_int_eq(handler_calls, 0);
    client_free(&cl);

    /* exactly at the limit is fine */
    client_pair(&cl);
    char req[2048];
    int n = snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nContent-Length: 1024\r\n\r\n");
    memset(req + n, 'b', 1024);
    client_send(&cl, req, (size_t)n + 1024);
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_int_eq(r[0].status, 200);
    ck_assert_uint_eq(r[0].body_len, 1024);
    client_free(&cl);
}
END_TEST

START_TEST(test_body_too_large_chunked)
{
    client_t cl;
    resp_t r[MAX_RESP];
    cfg.max_body_bytes = 1024;
    restart();
    client_pair(&cl);
    client_sends(&cl, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[600];
    int n = snprintf(chunk, sizeof(chunk), "200\r\n");
    memset(chunk + n, 'c', 512);
    memcpy(chunk + n + 512, "\r\n", 2);
    for (int i = 0; i < 3 && !cl.eof; i++)
        client_send(&cl, chunk, (size_t)n + 514);
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_int_eq(r[0].status, 413);
    ck_assert_str_eq(hdr(&r[0], "Connection"), "close");
    ck_assert(client_wait_eof(&cl, 3000));
    ck_assert_int_eq(handler_calls, 0);
    client_free(&cl);
}
END_TEST

START_TEST(test_expect_continue)
{
    client_t cl;
    resp_t r[MAX_RESP];
    cfg.max_body_bytes = 4096;
    restart();
    client_pair(&cl);
    client_sends(&cl, "POST /echo HTTP/1.1\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n");
    /* The interim response comes before any body byte is sent. */
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_int_eq(r[0].status, 100);
    ck_assert_uint_eq(cl.in.len, strlen("HTTP/1.1 100 Continue\r\n\r\n"));
    ck_assert(memcmp(cl.in.data, "HTTP/1.1 100 Continue\r\n\r\n", cl.in.len) == 0);
    char body[2000];
    memset(body, 'e', sizeof(body));
    client_send(&cl, body, sizeof(body));
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 2000), 2);
    ck_assert_int_eq(r[1].status, 200);
    ck_assert_uint_eq(r[1].body_len, 2000);
    client_free(&cl);

    /* over the limit: 413 straight away, the body never read */
    client_pair(&cl);
    client_sends(&cl, "POST /echo HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_int_eq(r[0].status, 413);
    ck_assert(client_wait_eof(&cl, 3000));
    client_free(&cl);

    /* no body expected: no 100 */
    client_pair(&cl);
    client_sends(&cl, "GET /g HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_int_eq(r[0].status, 200);
    client_free(&cl);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

/* Sends `req` on a fresh connection; expects one response with `status` and a close. */
static void expect_error(const char *req, int status)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, req);
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_msg(r[0].status == status, "%s -> %d, want %d", req, r[0].status, status);
    ck_assert_str_eq(hdr(&r[0], "Connection"), "close");
    ck_assert(client_wait_eof(&cl, 3000));
    client_free(&cl);
}

START_TEST(test_malformed)
{
    expect_error("GARBAGE\r\n\r\n", 400);
    expect_error("GET\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1 extra\r\n\r\n", 400);
    expect_error("GET / HTTP/x.1\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
    expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
    expect_error("GET / HTTP/2.0\r\n\r\n", 505);
    ck_assert_int_eq(handler_calls, 0);
    /* a bad request after a good one on the same connection */
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /ok HTTP/1.1\r\n\r\n\x01\x02\x03 / HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 2000), 2);
    ck_assert_int_eq(r[0].status, 200);
    ck_assert_int_eq(r[1].status, 400);
    ck_assert(client_wait_eof(&cl, 3000));
    client_free(&cl);
}
END_TEST

START_TEST(test_header_too_large)
{
    /* The head limit is exact: max_header_bytes passes, one more is 431. */
    cfg.max_header_bytes = 1024;
    restart();
    const char *start = "GET / HTTP/1.1\r\nX-Fill: ";
    char req[4096];
    for (int extra = 0; extra <= 1; extra++) {
        size_t fill = 1024 - strlen(start) - 4 + (size_t)extra;
        int n = snprintf(req, sizeof(req), "%s", start);
        memset(req + n, 'f', fill);
        memcpy(req + n + fill, "\r\n\r\n", 5);
        ck_assert_uint_eq(strlen(req), 1024 + (size_t)extra);
        client_t cl;
        resp_t r[MAX_RESP];
        client_pair(&cl);
        client_sends(&cl, req);
        ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
        ck_assert_int_eq(r[0].status, extra ? 431 : 200);
        client_free(&cl);
    }
    /* above http-parser's own 80 KiB cap, ours still decides */
    cfg.max_header_bytes = 100000;
    restart();
    char *huge = malloc(120000);
    for (int extra = 0; extra <= 1; extra++) {
        size_t fill = 100000 - strlen(start) - 4 + (size_t)extra;
        int n = snprintf(huge, 120000, "%s", start);
        memset(huge + n, 'f', fill);
        memcpy(huge + n + fill, "\r\n\r\n", 5);
        client_t cl;
        resp_t r[MAX_RESP];
        client_pair(&cl);
        client_sends(&cl, huge);
        ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
        ck_assert_int_eq(r[0].status, extra ? 431 : 200);
        client_free(&cl);
    }
    free(huge);
    cfg.max_header_bytes = 1024;
    restart();
    /* a long URL or many headers, and a head that never ends */
    char big[8192];
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /", 5);
    big[sizeof(big) - 1] = 0;
    expect_error(big, 431);
    memcpy(big, "GET / HTTP/1.1\r\n", 16);
    for (size_t i = 16; i + 6 < sizeof(big); i += 6)
        memcpy(big + i, "A: b\r\n", 6);
    expect_error(big, 431);
}
END_TEST

START_TEST(test_header_timeout)
{
    cfg.header_timeout_ms = 200;
    restart();
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    uint64_t t0 = molt_now_ms();
    client_sends(&cl, "GET / HTTP/1.1\r\nHost:");
    pump_ms(&cl, 100);
    client_sends(&cl, " x\r\n"); /* progress does not extend the head deadline */
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 3000), 1);
    uint64_t dt = molt_now_ms() - t0;
    ck_assert_int_eq(r[0].status, 408);
    ck_assert_str_eq(hdr(&r[0], "Connection"), "close");
    ck_assert_msg(dt >= 180 && dt < 1500, "408 after %llu ms", (unsigned long long)dt);
    ck_assert(client_wait_eof(&cl, 3000));
    client_free(&cl);

    /* silent since accept */
    client_pair(&cl);
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 3000), 1);
    ck_assert_int_eq(r[0].status, 408);
    client_free(&cl);

    /* a stalled body */
    client_pair(&cl);
    client_sends(&cl, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 3000), 1);
    ck_assert_int_eq(r[0].status, 408);
    client_free(&cl);
    pump_ms(NULL, 50);
    ck_assert_uint_eq(conns_open(), 0);
}
END_TEST

START_TEST(test_keepalive_timeout)
{
    cfg.keepalive_timeout_ms = 300;
    cfg.header_timeout_ms = 5000;
    restart();
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET / HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    uint64_t t0 = molt_now_ms();
    ck_assert(client_wait_eof(&cl, 3000));
    uint64_t dt = molt_now_ms() - t0;
    ck_assert_msg(dt >= 250 && dt < 1500, "closed after %llu ms", (unsigned long long)dt);
    /* idle close is silent */
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 10), 1);
    client_free(&cl);
    pump_ms(NULL, 20);
    ck_assert_uint_eq(conns_open(), 0);
}
END_TEST

START_TEST(test_keepalive_zero)
{
    cfg.keepalive_timeout_ms = 0;
    restart();
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 2000), 1);
    ck_assert_str_eq(hdr(&r[0], "Connection"), "close");
    ck_assert(client_wait_eof(&cl, 3000));
    ck_assert_int_eq(handler_calls, 1);
    client_free(&cl);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Streaming                                                                */

START_TEST(test_stream_chunked)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /stream HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 2000), 2);
    ck_assert_int_eq(r[0].status, 200);
    ck_assert_str_eq(hdr(&r[0], "Transfer-Encoding"), "chunked");
    ck_assert_ptr_null(hdr(&r[0], "Content-Length"));
    ck_assert_str_eq(hdr(&r[0], "X-Handler"), "yes");
    ck_assert(body_is(&r[0], "hello world!"));
    ck_assert(strstr(cl.in.data, "6\r\nhello \r\n5\r\nworld\r\n1\r\n!\r\n0\r\n\r\n") != NULL);
    ck_assert(body_is(&r[1], "m=GET p=/x q= t=- b=0 v=11\n"));
    /* HEAD of a streamed response: the head only */
    client_reset_in(&cl);
    client_sends(&cl, "HEAD /stream HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 2, 1u, r, 2000), 2);
    ck_assert(body_is(&r[1], "m=GET p=/y q= t=- b=0 v=11\n"));
    client_free(&cl);
}
END_TEST

START_TEST(test_stream_http10)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    ck_assert(client_wait_eof(&cl, 2000));
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 10), 1);
    ck_assert_ptr_null(hdr(&r[0], "Transfer-Encoding"));
    ck_assert_ptr_null(hdr(&r[0], "Content-Length"));
    ck_assert_str_eq(hdr(&r[0], "Connection"), "close");
    ck_assert(body_is(&r[0], "hello world!"));
    client_free(&cl);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Drain                                                                    */

START_TEST(test_drain_idle)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET / HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    uint64_t t0 = molt_now_ms();
    wrk_http_drain(srv, 100, on_done, NULL);
    ck_assert_int_eq(done_calls, 0);
    ck_assert(client_wait_eof(&cl, 3000));
    uint64_t dt = molt_now_ms() - t0;
    ck_assert_msg(dt >= 80 && dt < 1500, "closed after %llu ms", (unsigned long long)dt);
    pump_ms(&cl, 50);
    ck_assert_int_eq(done_calls, 1);
    pump_ms(&cl, 50);
    ck_assert_int_eq(done_calls, 1);
    client_free(&cl);
}
END_TEST

START_TEST(test_drain_empty)
{
    wrk_http_drain(srv, 100, on_done, NULL);
    ck_assert_int_eq(done_calls, 0); /* never from inside wrk_http_drain */
    pump_ms(NULL, 20);
    ck_assert_int_eq(done_calls, 1);
    pump_ms(NULL, 20);
    ck_assert_int_eq(done_calls, 1);
}
END_TEST

START_TEST(test_drain_in_progress)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nHo");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_ptr_null(hdr(&r[0], "Connection"));
    wrk_http_drain(srv, 20, on_done, NULL);
    pump_ms(&cl, 100); /* longer than the grace: a request in progress is not idle */
    ck_assert(!cl.eof);
    client_sends(&cl, "st: x\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 2000), 2);
    ck_assert(body_is(&r[1], "m=GET p=/b q= t=- b=0 v=11\n"));
    ck_assert_str_eq(hdr(&r[1], "Connection"), "close");
    ck_assert(client_wait_eof(&cl, 2000));
    pump_ms(&cl, 20);
    ck_assert_int_eq(done_calls, 1);
    client_free(&cl);
}
END_TEST

START_TEST(test_drain_request_in_grace)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    wrk_http_drain(srv, 500, on_done, NULL);
    pump_ms(&cl, 20);
    client_sends(&cl, "GET /late HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_str_eq(hdr(&r[0], "Connection"), "close");
    ck_assert(client_wait_eof(&cl, 2000));
    pump_ms(&cl, 20);
    ck_assert_int_eq(done_calls, 1);
    client_free(&cl);
}
END_TEST

START_TEST(test_close_all)
{
    client_t a, b;
    client_pair(&a);
    client_pair(&b);
    client_sends(&a, "GET / HTTP/1.1\r\n");
    ck_assert_uint_eq(conns_open(), 2);
    wrk_http_close_all(srv);
    ck_assert_uint_eq(conns_open(), 0);
    ck_assert(client_wait_eof(&a, 1000));
    ck_assert(client_wait_eof(&b, 1000));
    client_free(&a);
    client_free(&b);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Suspended transactions                                                   */

/* Pumps until no connection is open; false on timeout. */
static bool wait_no_conns(int timeout_ms)
{
    uint64_t end = molt_now_ms() + (uint64_t)timeout_ms;
    while (conns_open() && molt_now_ms() < end)
        client_pump(NULL);
    return conns_open() == 0;
}

START_TEST(test_suspend_timer)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    uint64_t t0 = molt_now_ms();
    client_sends(&cl, "GET /suspend/300 HTTP/1.1\r\nHost: t\r\n\r\n");
    pump_ms(&cl, 50);
    ck_assert_int_eq(handler_calls, 1);
    ck_assert_uint_eq(cl.in.len, 0); /* nothing sent for a suspended transaction */
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 3000), 1);
    uint64_t dt = molt_now_ms() - t0;
    ck_assert_msg(dt >= 290, "answered after %llu ms", (unsigned long long)dt);
    ck_assert_int_eq(r[0].status, 200);
    ck_assert(body_is(&r[0], "resumed 300\n"));
    ck_assert_str_eq(hdr(&r[0], "X-Async"), "yes");
    ck_assert_str_eq(hdr(&r[0], "X-Handler"), "yes");
    ck_assert_str_eq(hdr(&r[0], "Content-Length"), "12");
    ck_assert(r[0].keep_alive);
    ck_assert_int_eq(resume_calls, 1);
    /* the connection goes on as after any response */
    client_sends(&cl, "GET /next HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 2000), 2);
    ck_assert(body_is(&r[1], "m=GET p=/next q= t=- b=0 v=11\n"));
    ck_assert_int_eq(abort_calls, 0);
    client_free(&cl);
    ck_assert(wait_no_conns(2000));
    ck_assert_int_eq(abort_calls, 0);
    ck_assert_int_eq(release_calls, 1);
}
END_TEST

START_TEST(test_suspend_no_timeouts)
{
    /* Neither the header timeout nor the keep-alive timeout runs while the
     * client waits for us. */
    cfg.header_timeout_ms = 60;
    cfg.keepalive_timeout_ms = 60;
    restart();
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /suspend/300 HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 3000), 1);
    ck_assert_int_eq(r[0].status, 200);
    ck_assert(body_is(&r[0], "resumed 300\n"));
    /* afterwards the keep-alive timeout applies again */
    ck_assert(client_wait_eof(&cl, 2000));
    client_free(&cl);
}
END_TEST

START_TEST(test_suspend_pipelined)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /suspend/400 HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n");
    pump_ms(&cl, 40);
    ck_assert_int_eq(handler_calls, 1); /* the second request waits, unparsed */
    /* more arrives while suspended: kept, in order */
    char more[1024] = "";
    for (int i = 0; i < 8; i++)
        snprintf(more + strlen(more), sizeof(more) - strlen(more), "GET /more/%d HTTP/1.1\r\n\r\n", i);
    client_sends(&cl, more);
    pump_ms(&cl, 20);
    ck_assert_int_eq(handler_calls, 1);
    ck_assert_uint_eq(cl.in.len, 0);
    ck_assert_int_eq(client_wait(&cl, 10, 0, r, 3000), 10);
    ck_assert(body_is(&r[0], "resumed 400\n"));
    ck_assert(body_is(&r[1], "m=GET p=/after q= t=- b=0 v=11\n"));
    for (int i = 0; i < 8; i++) {
        char want[64];
        snprintf(want, sizeof(want), "m=GET p=/more/%d q= t=- b=0 v=11\n", i);
        ck_assert_msg(body_is(&r[2 + i], want), "response %d: %.*s", 2 + i, (int)r[2 + i].body_len,
                      r[2 + i].body);
    }
    /* two suspended in a row on one connection */
    client_reset_in(&cl);
    client_sends(&cl, "GET /suspend/30 HTTP/1.1\r\n\r\nGET /suspend/20 HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 3000), 2);
    ck_assert(body_is(&r[0], "resumed 30\n"));
    ck_assert(body_is(&r[1], "resumed 20\n"));
    ck_assert_int_eq(resume_calls, 3);
    client_free(&cl);
}
END_TEST

START_TEST(test_suspend_client_close)
{
    client_t cl, other;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_pair(&other);
    client_sends(&cl, "GET /suspend/5000 HTTP/1.1\r\n\r\nGET /never HTTP/1.1\r\n\r\n");
    pump_ms(&cl, 30);
    ck_assert_int_eq(handler_calls, 1);
    client_free(&cl); /* the client goes away */
    uint64_t end = molt_now_ms() + 2000;
    while (conns_open() > 1 && molt_now_ms() < end)
        client_pump(NULL);
    ck_assert_uint_eq(conns_open(), 1);
    ck_assert_int_eq(abort_calls, 1);
    ck_assert_int_eq(release_calls, 1);
    ck_assert_int_eq(resume_calls, 0);
    ck_assert_int_eq(handler_calls, 1);
    /* the rest of the server is unaffected */
    client_sends(&other, "GET /x HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&other, 1, 0, r, 2000), 1);
    pump_ms(&other, 30);
    ck_assert_int_eq(abort_calls, 1);
    client_free(&other);

    /* a half-close while suspended is a client going away too */
    client_pair(&cl);
    client_sends(&cl, "GET /suspend/5000 HTTP/1.1\r\n\r\n");
    pump_ms(&cl, 20);
    shutdown(cl.fd, SHUT_WR);
    ck_assert(client_wait_eof(&cl, 2000));
    ck_assert_int_eq(abort_calls, 2);
    client_free(&cl);
    ck_assert(wait_no_conns(2000));
    ck_assert_int_eq(release_calls, 2); /* the connections that had a record (not `other`) */
}
END_TEST

START_TEST(test_suspend_stream)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /suspend-stream/300 HTTP/1.1\r\n\r\n");
    pump_ms(&cl, 40);
    ck_assert_msg(memmem(cl.in.data, cl.in.len, "hello ", 6), "the flushed part did not go out: %.*s",
                  (int)cl.in.len, cl.in.data);
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 3000), 1);
    ck_assert_str_eq(hdr(&r[0], "Transfer-Encoding"), "chunked");
    ck_assert(body_is(&r[0], "hello world!"));
    client_sends(&cl, "GET /next HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 2000), 2);
    client_free(&cl);
}
END_TEST

START_TEST(test_suspend_body)
{
    /* A body that arrived whole lies in the shared read buffer: a suspended
     * transaction must keep its own copy while other connections read. */
    client_t cl, other;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_pair(&other);
    client_sends(&cl, "POST /suspend-echo/100 HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world"
                      "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
    char big[4096];
    memset(big, 'z', sizeof(big));
    for (int i = 0; i < 3; i++) {
        char head[128];
        snprintf(head, sizeof(head), "POST /echo HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", sizeof(big));
        client_sends(&other, head);
        client_send(&other, big, sizeof(big));
    }
    ck_assert_int_eq(client_wait(&other, 3, 0, r, 3000), 3);
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 3000), 2);
    ck_assert(body_is(&r[0], "hello world"));
    ck_assert(body_is(&r[1], "abc"));
    client_free(&cl);
    client_free(&other);
}
END_TEST

START_TEST(test_suspend_drain)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /suspend/500 HTTP/1.1\r\n\r\n");
    pump_ms(&cl, 20);
    wrk_http_drain(srv, 20, on_done, NULL);
    pump_ms(&cl, 100); /* past the grace: a suspended transaction is in progress, not idle */
    ck_assert(!cl.eof);
    ck_assert_int_eq(done_calls, 0);
    ck_assert_uint_eq(conns_open(), 1);
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 3000), 1);
    ck_assert(body_is(&r[0], "resumed 500\n"));
    ck_assert_str_eq(hdr(&r[0], "Connection"), "close");
    ck_assert(client_wait_eof(&cl, 2000));
    pump_ms(&cl, 20);
    ck_assert_int_eq(done_calls, 1);
    ck_assert_int_eq(abort_calls, 0);
    client_free(&cl);
}
END_TEST

START_TEST(test_suspend_close_all)
{
    client_t a, b, idle;
    client_pair(&a);
    client_pair(&b);
    client_pair(&idle);
    client_sends(&a, "GET /suspend/5000 HTTP/1.1\r\n\r\n");
    client_sends(&b, "GET /suspend-stream/5000 HTTP/1.1\r\n\r\n");
    pump_ms(&a, 20);
    ck_assert_int_eq(handler_calls, 2);
    wrk_http_close_all(srv);
    ck_assert_uint_eq(conns_open(), 0);
    ck_assert_int_eq(abort_calls, 2);
    ck_assert_int_eq(release_calls, 2);
    ck_assert(client_wait_eof(&a, 1000));
    ck_assert(client_wait_eof(&idle, 1000));
    client_free(&a);
    client_free(&b);
    client_free(&idle);

    /* wrk_http_free aborts too (teardown frees the server) */
    client_pair(&a);
    client_sends(&a, "GET /suspend/5000 HTTP/1.1\r\n\r\n");
    pump_ms(&a, 20);
    wrk_http_free(srv);
    srv = NULL;
    ck_assert_int_eq(abort_calls, 3);
    ck_assert_int_eq(release_calls, 3);
    client_free(&a);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Robustness                                                               */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* Clients pipelining random mixes of suspended, streamed and plain requests,
 * some leaving early: every suspended transaction ends exactly once (resumed
 * or aborted), responses stay well-framed and in order (ASan: nothing used
 * after it was freed). */
START_TEST(test_suspend_random)
{
    enum { NCL = 12 };
    static const char *const reqs[] = {
        "GET /suspend/0 HTTP/1.1\r\n\r\n",   "GET /suspend/5 HTTP/1.1\r\n\r\n",
        "GET /suspend-stream/3 HTTP/1.1\r\n\r\n", "POST /suspend-echo/2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        "GET /plain HTTP/1.1\r\n\r\n",
    };
    for (int round = 0; round < 20; round++) {
        client_t cl[NCL];
        int sent[NCL];
        for (int i = 0; i < NCL; i++) {
            client_pair(&cl[i]);
            sent[i] = 0;
            char buf[1024] = "";
            int n = 1 + (int)(rnd() % 5);
            for (int k = 0; k < n; k++)
                strcat(buf, reqs[rnd() % (sizeof(reqs) / sizeof(reqs[0]))]);
            client_sends(&cl[i], buf);
            sent[i] = n;
        }
        for (int step = 0; step < 30; step++) {
            int i = (int)(rnd() % NCL);
            if (cl[i].fd >= 0 && rnd() % 8 == 0)
                client_free(&cl[i]); /* leaves, maybe while suspended */
            client_pump(NULL);
            usleep(500);
        }
        for (int i = 0; i < NCL; i++) {
            if (cl[i].fd < 0)
                continue;
            resp_t *r = malloc(sizeof(resp_t) * MAX_RESP);
            ck_assert_int_eq(client_wait(&cl[i], sent[i], 0, r, 3000), sent[i]);
            free(r);
            client_free(&cl[i]);
        }
        ck_assert(wait_no_conns(2000));
        ck_assert_int_eq(suspend_calls, resume_calls + abort_calls);
    }
}
END_TEST

/* Sends data in random pieces, pumping between; closes; waits until the server let go. */
static void fuzz_one(const char *data, size_t len)
{
    client_t cl;
    client_pair(&cl);
    size_t off = 0;
    while (off < len && !cl.eof) {
        size_t piece = 1 + rnd() % (len - off < 64 ? len - off : 64);
        ssize_t n = send(cl.fd, data + off, piece, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
        if (rnd() % 4 == 0)
            client_pump(&cl);
    }
    for (int i = 0; i < 3; i++)
        client_pump(&cl);
    /* Whatever came back must be well-framed responses (HEAD answers aside:
     * their framing depends on the request, which the client parser does not track). */
    resp_t *r = malloc(sizeof(resp_t) * MAX_RESP);
    ck_assert_msg(memmem(data, len, "HEAD", 4) || parse_responses(&cl, 0, r, MAX_RESP) >= 0,
                  "sent [%.*s] got [%.*s]", (int)len, data, (int)cl.in.len, cl.in.data);
    free(r);
    client_free(&cl);
    for (int i = 0; i < 200 && conns_open(); i++)
        client_pump(NULL);
    ck_assert_uint_eq(conns_open(), 0);
}

START_TEST(test_fuzz_random)
{
    cfg.max_header_bytes = 512;
    cfg.max_body_bytes = 256;
    restart();
    char buf[1024];
    for (int it = 0; it < 1500; it++) {
        size_t len = 1 + rnd() % sizeof(buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (char)rnd();
        if (it % 3 == 0)
            memcpy(buf, "GET ", len < 4 ? len : 4); /* get past the method more often */
        fuzz_one(buf, len);
    }
}
END_TEST

START_TEST(test_fuzz_mutate)
{
    static const char *const corpus[] = {
        "GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Test: y\r\n\r\n",
        "POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: x\r\n\r\n",
        "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "HEAD /stream HTTP/1.1\r\n\r\nGET /zero HTTP/1.1\r\n\r\n",
        "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        "GET http://h:80/p?q HTTP/1.1\r\nConnection: close\r\n\r\n",
        "CONNECT h:443 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    };
    cfg.max_header_bytes = 256;
    cfg.max_body_bytes = 64;
    restart();
    char buf[1024];
    for (int it = 0; it < 3000; it++) {
        const char *src = corpus[rnd() % MOLT_ARRAY_SIZE(corpus)];
        size_t len = strlen(src);
        memcpy(buf, src, len);
        int muts = 1 + (int)(rnd() % 4);
        for (int m = 0; m < muts; m++) {
            size_t at = rnd() % len;
            switch (rnd() % 4) {
            case 0:
                buf[at] = (char)rnd();
                break; /* flip */
            case 1:
                buf[at] = "\r\n :0aF;\t\x00\xff"[rnd() % 11];
                break; /* interesting byte */
            case 2:
                len = at + 1;
                break; /* truncate */
            default:   /* duplicate a span */
                if (len + 16 < sizeof(buf)) {
                    memmove(buf + at + 16, buf + at, len - at);
                    len += 16;
                }
            }
        }
        fuzz_one(buf, len);
    }
    /* still serving */
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /ok HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_int_eq(r[0].status, 200);
    client_free(&cl);
}
END_TEST

START_TEST(test_byte_at_a_time)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    const char *req = "POST /echo?z=1 HTTP/1.1\r\nHost: bytes\r\nX-Test: one\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
                      "GET /split?q=2 HTTP/1.1\r\nX-Test: two two\r\nX-Empty:\r\n\r\n";
    for (size_t i = 0; req[i]; i++) {
        client_send(&cl, req + i, 1);
        client_pump(&cl);
    }
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 2000), 2);
    ck_assert(body_is(&r[0], "abcdefg"));
    ck_assert_msg(body_is(&r[1], "m=GET p=/split q=q=2 t=two two b=0 v=11\n"), "%.*s", (int)r[1].body_len,
                  r[1].body);
    client_free(&cl);
}
END_TEST

START_TEST(test_backlog_pipeline)
{
    /* Pipelined requests for big responses: the output backlog stops parsing,
     * kept input is served once the client reads, and all arrive in order. */
    client_t cl;
    client_pair(&cl);
    char req[1024] = "";
    for (int i = 0; i < 6; i++)
        strcat(req, "GET /big/700000 HTTP/1.1\r\n\r\n");
    strcat(req, "GET /last HTTP/1.1\r\n\r\n");
    client_sends(&cl, req);
    resp_t *r = malloc(sizeof(resp_t) * MAX_RESP);
    ck_assert_int_eq(client_wait(&cl, 7, 0, r, 10000), 7);
    for (int i = 0; i < 6; i++)
        ck_assert_uint_eq(r[i].body_len, 700000);
    ck_assert(body_is(&r[6], "m=GET p=/last q= t=- b=0 v=11\n"));
    free(r);
    client_free(&cl);
}
END_TEST

START_TEST(test_half_close)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /a HTTP/1.1\r\n\r\nGET /big/300000 HTTP/1.1\r\n\r\n");
    shutdown(cl.fd, SHUT_WR);
    ck_assert(client_wait_eof(&cl, 3000));
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 10), 2);
    ck_assert_uint_eq(r[1].body_len, 300000);
    client_free(&cl);
}
END_TEST

START_TEST(test_stats)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET / HTTP/1.1\r\n\r\nGET /status/301 HTTP/1.1\r\n\r\n"
                      "GET /status/404 HTTP/1.1\r\n\r\nGET /status/403 HTTP/1.1\r\n\r\n"
                      "GET /zero HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 5, 0, r, 2000), 5);
    client_free(&cl);
    expect_error("BAD\r\n\r\n", 400);
    pump_ms(NULL, 20);
    wrk_http_stats_t st;
    wrk_http_get_stats(srv, &st);
    ck_assert_uint_eq(st.requests[WRK_HTTP_1XX], 0);
    ck_assert_uint_eq(st.requests[WRK_HTTP_2XX], 1);
    ck_assert_uint_eq(st.requests[WRK_HTTP_3XX], 1);
    ck_assert_uint_eq(st.requests[WRK_HTTP_4XX], 3);
    ck_assert_uint_eq(st.requests[WRK_HTTP_5XX], 1);
    ck_assert_uint_eq(st.accepted, 2);
    ck_assert_uint_eq(st.conns, 0);
}
END_TEST

START_TEST(test_url_forms)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET http://example.com:8080/abs/p?k=v HTTP/1.1\r\n\r\n"
                      "GET http://example.com HTTP/1.1\r\n\r\n"
                      "OPTIONS * HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 3, 0, r, 2000), 3);
    ck_assert(body_is(&r[0], "m=GET p=/abs/p q=k=v t=- b=0 v=11\n"));
    ck_assert(body_is(&r[1], "m=GET p=/ q= t=- b=0 v=11\n"));
    ck_assert(body_is(&r[2], "m=OPTIONS p=* q= t=- b=0 v=11\n"));
    client_free(&cl);
}
END_TEST

START_TEST(test_reason)
{
    ck_assert_str_eq(wrk_http_reason(200), "OK");
    ck_assert_str_eq(wrk_http_reason(404), "Not Found");
    ck_assert_str_eq(wrk_http_reason(413), "Payload Too Large");
    ck_assert_str_eq(wrk_http_reason(431), "Request Header Fields Too Large");
    ck_assert_str_eq(wrk_http_reason(451), "Unavailable For Legal Reasons");
    ck_assert_str_eq(wrk_http_reason(511), "Network Authentication Required");
    ck_assert_str_eq(wrk_http_reason(418), "Unknown");
    ck_assert_str_eq(wrk_http_reason(0), "Unknown");
    ck_assert_str_eq(wrk_http_reason(-1), "Unknown");
    ck_assert_str_eq(wrk_http_reason(600), "Unknown");
    ck_assert_str_eq(wrk_http_reason(299), "Unknown");
    /* odd statuses from a handler: sendable ones go out as they are, others as 500 */
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    client_sends(&cl, "GET /status/299 HTTP/1.1\r\n\r\nGET /status/700 HTTP/1.1\r\n\r\n"
                      "GET /status/-5 HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 3, 0, r, 2000), 3);
    ck_assert_int_eq(r[0].status, 299);
    ck_assert(strstr(cl.in.data, "HTTP/1.1 299 Unknown\r\n") != NULL);
    ck_assert_int_eq(r[1].status, 500);
    ck_assert_int_eq(r[2].status, 500);
    client_free(&cl);
}
END_TEST

static int tcp_listener(struct sockaddr_in *sa);

START_TEST(test_tcp_listener)
{
    struct sockaddr_in sa;
    int lfd = tcp_listener(&sa);
    ck_assert_int_eq(wrk_http_listen(srv, lfd), 0);

    /* paused: connections wait in the backlog */
    wrk_http_pause(srv);
    client_t cl;
    resp_t r[MAX_RESP];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    client_init(&cl, fd);
    client_sends(&cl, "GET /tcp HTTP/1.1\r\n\r\n");
    pump_ms(&cl, 50);
    ck_assert_uint_eq(cl.in.len, 0);
    wrk_http_resume(srv);
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert(body_is(&r[0], "m=GET p=/tcp q= t=- b=0 v=11\n"));

    /* an error response with unread input behind it still arrives whole (lingering close) */
    cfg.max_body_bytes = 1000;
    char *big = malloc(300000);
    int n = snprintf(big, 300000, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    while (n + 20 < 300000)
        n += snprintf(big + n, 300000 - (size_t)n, "1\r\nx\r\n");
    client_reset_in(&cl);
    client_send(&cl, big, (size_t)n);
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 3000), 1);
    ck_assert_int_eq(r[0].status, 413);
    ck_assert(client_wait_eof(&cl, 5000));
    free(big);
    client_free(&cl);

    wrk_http_stats_t st;
    wrk_http_get_stats(srv, &st);
    ck_assert_uint_eq(st.accepted, 1);
    close(lfd);
}
END_TEST

/* Listens on 127.0.0.1, ephemeral port; fills *sa. */
static int tcp_listener(struct sockaddr_in *sa)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(lfd, 0);
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)sa, sizeof(*sa)), 0);
    ck_assert_int_eq(listen(lfd, 16), 0);
    socklen_t sl = sizeof(*sa);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)sa, &sl), 0);
    return lfd;
}

static void on_tick(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

START_TEST(test_accept_emfile)
{
    struct sockaddr_in sa;
    int lfd = tcp_listener(&sa);
    ck_assert_int_eq(wrk_http_listen(srv, lfd), 0);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    client_t cl;
    client_init(&cl, fd);
    const char *req = "GET /late HTTP/1.1\r\n\r\n";
    ck_assert_int_eq(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));

    /* No fd left for accept4(): the server must back off, not spin on the
     * readable listener. Each blocking loop iteration then waits for the
     * backoff timer (or our 50 ms tick), so 300 ms hold only a handful. */
    struct rlimit old, low;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    int probe = dup(0);
    low = old;
    low.rlim_cur = (rlim_t)probe;
    close(probe);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    ev_timer tick;
    ev_timer_init(&tick, on_tick, 0.05, 0.05);
    ev_timer_start(loop, &tick);
    unsigned it0 = ev_iteration(loop);
    uint64_t end = molt_now_ms() + 300;
    while (molt_now_ms() < end)
        ev_run(loop, EVRUN_ONCE);
    unsigned iters = ev_iteration(loop) - it0;
    ev_timer_stop(loop, &tick);
    ck_assert_msg(iters < 40, "%u loop iterations in 300 ms", iters);
    ck_assert_uint_eq(conns_open(), 0);

    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    resp_t r[MAX_RESP];
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert(body_is(&r[0], "m=GET p=/late q= t=- b=0 v=11\n"));
    client_free(&cl);
    close(lfd);
}
END_TEST

START_TEST(test_upgrade_connect)
{
    client_t cl;
    resp_t r[MAX_RESP];
    client_pair(&cl);
    /* An Upgrade we do not take is ignored; the connection stays HTTP/1.1. */
    client_sends(&cl, "GET /u HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                      "GET /v HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(client_wait(&cl, 2, 0, r, 2000), 2);
    ck_assert(body_is(&r[1], "m=GET p=/v q= t=- b=0 v=11\n"));
    client_free(&cl);
    /* CONNECT: answered, then closed (what follows would not be HTTP) */
    client_pair(&cl);
    client_sends(&cl, "CONNECT example.com:443 HTTP/1.1\r\n\r\n\x16\x03\x01");
    ck_assert_int_eq(client_wait(&cl, 1, 0, r, 2000), 1);
    ck_assert_str_eq(hdr(&r[0], "Connection"), "close");
    ck_assert(client_wait_eof(&cl, 3000));
    client_free(&cl);
}
END_TEST

static Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_get_simple);
    tcase_add_test(tc, test_keepalive_two);
    tcase_add_test(tc, test_pipelining);
    tcase_add_test(tc, test_http10_close);
    tcase_add_test(tc, test_http10_keepalive);
    tcase_add_test(tc, test_http11_connection_close);
    tcase_add_test(tc, test_handler_close);
    tcase_add_test(tc, test_head);
    tcase_add_test(tc, test_no_body_statuses);
    tcase_add_test(tc, test_body_content_length);
    tcase_add_test(tc, test_body_chunked);
    tcase_add_test(tc, test_body_too_large_length);
    tcase_add_test(tc, test_body_too_large_chunked);
    tcase_add_test(tc, test_expect_continue);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_header_too_large);
    tcase_add_test(tc, test_header_timeout);
    tcase_add_test(tc, test_keepalive_timeout);
    tcase_add_test(tc, test_keepalive_zero);
    tcase_add_test(tc, test_stream_chunked);
    tcase_add_test(tc, test_stream_http10);
    tcase_add_test(tc, test_drain_idle);
    tcase_add_test(tc, test_drain_empty);
    tcase_add_test(tc, test_drain_in_progress);
    tcase_add_test(tc, test_drain_request_in_grace);
    tcase_add_test(tc, test_close_all);
    tcase_add_test(tc, test_byte_at_a_time);
    tcase_add_test(tc, test_backlog_pipeline);
    tcase_add_test(tc, test_half_close);
    tcase_add_test(tc, test_stats);
    tcase_add_test(tc, test_url_forms);
    tcase_add_test(tc, test_tcp_listener);
    tcase_add_test(tc, test_reason);
    tcase_add_test(tc, test_accept_emfile);
    tcase_add_test(tc, test_upgrade_connect);
    suite_add_tcase(s, tc);

    TCase *as = tcase_create("suspend");
    tcase_add_checked_fixture(as, setup, teardown);
    tcase_set_timeout(as, 30);
    tcase_add_test(as, test_suspend_timer);
    tcase_add_test(as, test_suspend_no_timeouts);
    tcase_add_test(as, test_suspend_pipelined);
    tcase_add_test(as, test_suspend_client_close);
    tcase_add_test(as, test_suspend_stream);
    tcase_add_test(as, test_suspend_body);
    tcase_add_test(as, test_suspend_drain);
    tcase_add_test(as, test_suspend_close_all);
    tcase_add_test(as, test_suspend_random);
    suite_add_tcase(s, as);

    TCase *fz = tcase_create("fuzz");
    tcase_add_checked_fixture(fz, setup, teardown);
    tcase_set_timeout(fz, 60);
    tcase_add_test(fz, test_fuzz_random);
    tcase_add_test(fz, test_fuzz_mutate);
    suite_add_tcase(s, fz);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(http_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
