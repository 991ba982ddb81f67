/*
 * The worker's HTTP/1.1 server core: accept, parse (http-parser), dispatch to
 * the handler, serialise, write; on libev.
 *
 * Shape of a connection's life
 *
 *   IDLE --first request byte--> HEAD --headers complete--> BODY
 *    ^                                                        |
 *    +---- response queued, keep-alive <---- message complete-+
 *                                                             |
 *   CLOSING (response queued with "Connection: close") <------+
 *      |  output written
 *      v
 *   LINGER (write side shut, input discarded until EOF/timeout) or closed
 *
 * Buffers. Reads go into one buffer shared by every connection of the server
 * (the loop is single-threaded, and a read is parsed before the next read):
 * an idle keep-alive connection holds no read buffer at all. Everything the
 * parser reports is copied out as it arrives, so a request split across
 * reads needs nothing kept from earlier reads: the head (url, header names
 * and values, NUL-terminated) goes to conn->head, the de-chunked body to
 * conn->body (or, when a Content-Length body arrives whole in one read, it is
 * pointed at where it lies in the read buffer, which stays untouched until
 * the handler has run). Bytes the parser was not given because the
 * connection stopped parsing (output backlog with pipelined requests) are
 * the only input a connection keeps, in conn->pending; reading from the
 * socket stops until they are consumed.
 *
 * Requests are handled one at a time: on_message_complete pauses the parser,
 * http_parser_execute() returns, the handler runs, the response is appended
 * to conn->out, the parser is unpaused and parsing resumes with the next
 * pipelined request. Output is sent once per event (one send()); only a
 * short write starts a write watcher.
 *
 * Suspended transactions. A handler may leave its transaction unfinished
 * (txn->suspended): the connection then parses nothing more, so a pipelined
 * request waits behind it, and runs no header or keep-alive timer; it keeps
 * reading only to notice the client going away, appending what arrives to
 * conn->pending (at most HTTP_HELD_MAX bytes, then reading stops). EOF or an
 * error calls the server's abort callback and frees the connection.
 * wrk_http_txn_complete() queues the response as conn_dispatch() would have,
 * sends it, and feeds the write watcher an event so that pipelined input and
 * closing are handled from the loop, never from the caller's stack.
 *
 * Timers: one per connection, lazily re-armed (libev's "be smart about
 * timeouts", variant 3). State changes only move conn fields (idle_since,
 * last_read, ...); the timer fires at the earliest time it might matter,
 * recomputes the real deadline and either acts or re-arms. A keep-alive
 * request/response cycle thus touches no timer at all.
 */
#include "worker/http.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>

#include "shared/log.h"
#include "shared/util.h"

/* Shared read buffer: one read(2) takes at most this much. */
#define HTTP_RBUF_SIZE (64 * 1024)
/* Stop parsing (and reading) while this much output is unsent. */
#define HTTP_OUT_HIGH (1024 * 1024)
/*
 * Accepts per listener event. Every worker of every generation waits on the
 * same listening socket and all are woken; taking one connection per wake-up
 * lets the others take theirs, where a batch let the first worker awake grab
 * a whole burst (measured: 64 keep-alive connections split 167k/19k requests
 * between two workers with a batch of 32, evenly with 1, and faster).
 */
#define HTTP_ACCEPT_BATCH 1
/* Pause after EMFILE/ENFILE before accepting again. */
#define HTTP_ACCEPT_BACKOFF_S 0.1
/* At most one accept-failure log line per this many seconds. */
#define HTTP_ACCEPT_LOG_EVERY_S 60.0
/* A client that reads none of its pending output for this long is dropped. */
#define HTTP_SEND_TIMEOUT_S 60.0
/* After an error response: discard client input for at most this long before close. */
#define HTTP_LINGER_S 2.0
/* Per-connection buffers bigger than this are freed after use rather than kept:
 * an idle keep-alive connection should cost about its struct, whatever its
 * largest request was. */
#define HTTP_KEEP_BUF_MAX (64 * 1024)
#define HTTP_KEEP_HEAD_MAX (8 * 1024)
#define HTTP_KEEP_HDRS_MAX 64
/* Input kept while a transaction is suspended: reading stops at this much. */
#define HTTP_HELD_MAX (64 * 1024)

#define SERVER_LINE "Server: molt/" MOLT_VERSION "\r\n"

typedef enum conn_phase {
    PH_IDLE = 0, /* between requests (or fresh): no byte of a request yet */
    PH_HEAD,     /* request line and headers arriving */
    PH_BODY,     /* headers complete; body arriving (or message just completed) */
    PH_CLOSING,  /* final response queued; close once it is written */
    PH_LINGER,   /* response written, write side shut; discarding input */
    PH_COUNT
} conn_phase_t;

/* Where the last head callback left off, to join pieces split across reads. */
typedef enum head_cb { HCB_NONE = 0, HCB_URL, HCB_FIELD, HCB_VALUE, HCB_COUNT } head_cb_t;

/* How a streamed response's body is framed. */
typedef enum stream_mode {
    SM_CHUNKED = 0, /* HTTP/1.1: chunked transfer coding */
    SM_RAW,         /* HTTP/1.0: close-delimited */
    SM_NOBODY,      /* HEAD, 1xx, 204, 304: body dropped */
    SM_COUNT
} stream_mode_t;

/* Framing header written by out_put_head(). */
typedef enum frame {
    FR_NONE = 0, /* no Content-Length / Transfer-Encoding */
    FR_LENGTH,
    FR_CHUNKED,
    FR_COUNT
} frame_t;

/* Offsets into conn->head of one header while the head is being parsed. */
typedef struct head_off {
    size_t name, name_len, value, value_len;
} head_off_t;

typedef struct listener {
    ev_io io;
    struct wrk_http *srv;
    struct listener *next;
    bool tcp;
} listener_t;

typedef struct conn {
    ev_io rio;
    ev_io wio;
    ev_timer timer;
    struct wrk_http *srv;
    struct conn *prev, *next;
    int fd;
    conn_phase_t phase;

    http_parser parser;
    head_cb_t last_cb;
    size_t head_bytes; /* bytes fed to the parser for the current head */
    molt_buf_t head;   /* url NUL, then name NUL value NUL ... */
    size_t url_len;
    head_off_t *hoff;
    wrk_header_t *hdrs;
    size_t nhdrs, hcap;
    molt_buf_t body;
    const char *body_ext; /* whole body where it lies in the input, not copied */
    size_t body_ext_len;
    int err_status;  /* status to answer when a callback fails */
    bool keep_alive; /* this request's response leaves the connection open */
    int version;     /* 10 or 11, current request */
    stream_mode_t smode;

    molt_buf_t out; /* responses not yet sent, from out_pos */
    size_t out_pos;
    molt_buf_t pending; /* unparsed input kept while parsing is stopped */

    ev_tstamp accepted_at, head_start, idle_since, last_read, last_write, linger_start;
    ev_tstamp timer_at; /* when the timer is due, if active */
    uint64_t requests;

    bool eof;    /* the client shut its write side */
    bool failed; /* I/O error: close as soon as no handler runs */
    bool linger; /* input may be left unread when closing: linger */
    bool in_handler;
    bool session_opened; /* session_open accepted it: session_close is owed */

    struct molt_session ses;
    struct molt_txn txn;
} conn_t;

struct wrk_http {
    struct ev_loop *loop;
    const molt_http_cfg_t *cfg;
    wrk_http_handler_fn handler;
    void *arg;
    wrk_http_session_open_fn session_open;
    wrk_http_session_close_fn session_close;
    void *session_arg;
    wrk_http_txn_fn txn_abort;   /* a suspended transaction's client went away */
    wrk_http_txn_fn txn_release; /* frees txn->pipeline with the connection */
    uint64_t next_session_id;

    listener_t *listeners;
    ev_timer backoff_timer; /* EMFILE pause */
    ev_tstamp accept_logged_at;
    bool paused, draining, backoff;

    ev_timer done_timer; /* calls done outside of any of our callbacks' stacks */
    void (*done)(void *arg);
    void *done_arg;
    ev_tstamp drain_deadline; /* idle connections close at this time */

    conn_t *conns;
    wrk_http_stats_t stats;

    char *rbuf; /* HTTP_RBUF_SIZE, shared by all connections */

    time_t date_sec;
    size_t date_len;
    char date_line[48]; /* "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" */
};

static int on_message_begin(http_parser *p);
static int on_url(http_parser *p, const char *at, size_t len);
static int on_header_field(http_parser *p, const char *at, size_t len);
static int on_header_value(http_parser *p, const char *at, size_t len);
static int on_headers_complete(http_parser *p);
static int on_body(http_parser *p, const char *at, size_t len);
static int on_message_complete(http_parser *p);

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void conn_after_io(conn_t *c);
static void srv_maybe_done(struct wrk_http *srv);

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */

/* Reason phrases by class, indexed by status % 100 (451 is the one code past 31). */
static const char *const reasons_1xx[2] = {
    [0] = "Continue",
    [1] = "Switching Protocols",
};
static const char *const reasons_2xx[7] = {
    [0] = "OK",         [1] = "Created",       [2] = "Accepted",        [3] = "Non-Authoritative Information",
    [4] = "No Content", [5] = "Reset Content", [6] = "Partial Content",
};
static const char *const reasons_3xx[9] = {
    [0] = "Multiple Choices",   [1] = "Moved Permanently", [2] = "Found",
    [3] = "See Other",          [4] = "Not Modified",      [7] = "Temporary Redirect",
    [8] = "Permanent Redirect",
};
static const char *const reasons_4xx[32] = {
    [0] = "Bad Request",
    [1] = "Unauthorized",
    [2] = "Payment Required",
    [3] = "Forbidden",
    [4] = "Not Found",
    [5] = "Method Not Allowed",
    [6] = "Not Acceptable",
    [7] = "Proxy Authentication Required",
    [8] = "Request Timeout",
    [9] = "Conflict",
    [10] = "Gone",
    [11] = "Length Required",
    [12] = "Precondition Failed",
    [13] = "Payload Too Large",
    [14] = "URI Too Long",
    [15] = "Unsupported Media Type",
    [16] = "Range Not Satisfiable",
    [17] = "Expectation Failed",
    [21] = "Misdirected Request",
    [22] = "Unprocessable Entity",
    [23] = "Locked",
    [24] = "Failed Dependency",
    [25] = "Too Early",
    [26] = "Upgrade Required",
    [28] = "Precondition Required",
    [29] = "Too Many Requests",
    [31] = "Request Header Fields Too Large",
};
static const char *const reasons_5xx[12] = {
    [0] = "Internal Server Error",
    [1] = "Not Implemented",
    [2] = "Bad Gateway",
    [3] = "Service Unavailable",
    [4] = "Gateway Timeout",
    [5] = "HTTP Version Not Supported",
    [6] = "Variant Also Negotiates",
    [7] = "Insufficient Storage",
    [8] = "Loop Detected",
    [10] = "Not Extended",
    [11] = "Network Authentication Required",
};

const char *wrk_http_reason(int status)
{
    static const struct {
        const char *const *names;
        size_t n;
    } classes[] = {
        {reasons_1xx, MOLT_ARRAY_SIZE(reasons_1xx)}, {reasons_2xx, MOLT_ARRAY_SIZE(reasons_2xx)},
        {reasons_3xx, MOLT_ARRAY_SIZE(reasons_3xx)}, {reasons_4xx, MOLT_ARRAY_SIZE(reasons_4xx)},
        {reasons_5xx, MOLT_ARRAY_SIZE(reasons_5xx)},
    };
    if (status == 451)
        return "Unavailable For Legal Reasons";
    if (status < 100 || status > 599)
        return "Unknown";
    size_t cls = (size_t)(status / 100 - 1), i = (size_t)(status % 100);
    const char *r = i < classes[cls].n ? classes[cls].names[i] : NULL;
    return r ? r : "Unknown";
}

/* A status the handler left, made sendable: 0 and anything outside 100..599 become 500. */
static int status_norm(int status)
{
    return (status < 100 || status > 599) ? 500 : status;
}

/* Statuses whose responses never carry a body (RFC 9110 6.4.1). */
static bool status_no_body(int status)
{
    return status < 200 || status == 204 || status == 304;
}

static char *put(char *p, const void *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* Writes v in decimal at p; returns the end. */
static char *put_dec(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* Writes v in lower-case hex at p; returns the end. */
static char *put_hex(char *p, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static bool ieq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    return alen == n && strncasecmp(a, lit, n) == 0;
}

/*
 * Refreshes the cached "Date: ...\r\n" line when the loop's second changed:
 * the format runs at most once per second, whatever the request rate. By hand
 * rather than strftime() so no locale can change the names.
 */
static void srv_update_date(struct wrk_http *srv)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = (time_t)ev_now(srv->loop);
    if (now == srv->date_sec && srv->date_len)
        return;
    struct tm tm;
    if (!gmtime_r(&now, &tm))
        return;
    char *p = srv->date_line;
    p = put(p, "Date: ", 6);
    p = put(p, days[tm.tm_wday % 7], 3);
    p = put(p, ", ", 2);
    *p++ = (char)('0' + tm.tm_mday / 10);
    *p++ = (char)('0' + tm.tm_mday % 10);
    *p++ = ' ';
    p = put(p, months[tm.tm_mon % 12], 3);
    *p++ = ' ';
    int year = tm.tm_year + 1900;
    if (year < 0 || year > 9999)
        year = 9999;
    *p++ = (char)('0' + year / 1000);
    *p++ = (char)('0' + year / 100 % 10);
    *p++ = (char)('0' + year / 10 % 10);
    *p++ = (char)('0' + year % 10);
    *p++ = ' ';
    *p++ = (char)('0' + tm.tm_hour / 10);
    *p++ = (char)('0' + tm.tm_hour % 10);
    *p++ = ':';
    *p++ = (char)('0' + tm.tm_min / 10);
    *p++ = (char)('0' + tm.tm_min % 10);
    *p++ = ':';
    *p++ = (char)('0' + tm.tm_sec / 10);
    *p++ = (char)('0' + tm.tm_sec % 10);
    p = put(p, " GMT\r\n", 6);
    srv->date_len = (size_t)(p - srv->date_line);
    srv->date_sec = now;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */

static size_t out_unsent(const conn_t *c)
{
    return c->out.len - c->out_pos;
}

/*
 * Appends a final response head to c->out: status line, Server, Date, the
 * `extra` header lines verbatim, the framing header, Connection when needed
 * and the blank line. Counts the response in the stats. 0 or -ENOMEM.
 */
static int out_put_head(conn_t *c, int status, frame_t frame, size_t clen, const char *extra,
                        size_t extra_len)
{
    struct wrk_http *srv = c->srv;
    const char *reason = wrk_http_reason(status);
    size_t rlen = strlen(reason);

    srv_update_date(srv);
    size_t need = 16 + rlen + sizeof(SERVER_LINE) + srv->date_len + extra_len + 128;
    if (molt_buf_reserve(&c->out, need))
        return -ENOMEM;
    char *p = c->out.data + c->out.len;
    p = put(p, "HTTP/1.1 ", 9);
    *p++ = (char)('0' + status / 100);
    *p++ = (char)('0' + status / 10 % 10);
    *p++ = (char)('0' + status % 10);
    *p++ = ' ';
    p = put(p, reason, rlen);
    p = put(p, "\r\n" SERVER_LINE, 2 + sizeof(SERVER_LINE) - 1);
    p = put(p, srv->date_line, srv->date_len);
    if (extra_len)
        p = put(p, extra, extra_len);
    if (frame == FR_LENGTH) {
        p = put(p, "Content-Length: ", 16);
        p = put_dec(p, clen);
        p = put(p, "\r\n", 2);
    } else if (frame == FR_CHUNKED) {
        p = put(p, "Transfer-Encoding: chunked\r\n", 28);
    }
    if (!c->keep_alive)
        p = put(p, "Connection: close\r\n", 19);
    else if (c->version == 10)
        p = put(p, "Connection: keep-alive\r\n", 24);
    p = put(p, "\r\n", 2);
    c->out.len = (size_t)(p - c->out.data);

    int cls = status / 100 - 1;
    if (cls >= 0 && cls < WRK_HTTP_CLASS_COUNT)
        srv->stats.requests[cls]++;
    return 0;
}

/* Appends one chunk ("<hex>\r\n<data>\r\n") to c->out; nothing for len 0. 0 or -ENOMEM. */
static int out_put_chunk(conn_t *c, const char *data, size_t len)
{
    if (!len)
        return 0;
    if (molt_buf_reserve(&c->out, len + 24))
        return -ENOMEM;
    char *p = c->out.data + c->out.len;
    p = put_hex(p, len);
    p = put(p, "\r\n", 2);
    p = put(p, data, len);
    p = put(p, "\r\n", 2);
    c->out.len = (size_t)(p - c->out.data);
    return 0;
}

/*
 * One send() of the unsent output. A short write or EAGAIN starts the write
 * watcher; a complete one stops it. Errors mark the connection failed (it is
 * closed by the caller's top-level callback, never here).
 */
static void conn_write(conn_t *c)
{
    size_t left = out_unsent(c);
    if (!left || c->failed)
        return;
    /* send(MSG_NOSIGNAL): a peer that went away must cost EPIPE, not SIGPIPE. */
    ssize_t n = send(c->fd, c->out.data + c->out_pos, left, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        c->failed = true;
        return;
    }
    if (n > 0) {
        c->last_write = ev_now(c->srv->loop);
        c->out_pos += (size_t)n;
    }
    if (c->out_pos < c->out.len) {
        if (!ev_is_active(&c->wio)) {
            /* The send timeout counts from when we start waiting, not from an old write. */
            c->last_write = ev_now(c->srv->loop);
            ev_io_start(c->srv->loop, &c->wio);
        }
        return;
    }
    c->out.len = c->out_pos = 0;
    if (c->out.cap > HTTP_KEEP_BUF_MAX)
        molt_buf_free(&c->out);
    if (ev_is_active(&c->wio))
        ev_io_stop(c->srv->loop, &c->wio);
}

/*
 * Queues an error response (400, 408, 413, 431, 500, 501, 505) that closes
 * the connection, and stops parsing: whatever input is left is discarded.
 */
static void conn_error(conn_t *c, int status)
{
    if (c->phase == PH_CLOSING || c->phase == PH_LINGER)
        return;
    static const char extra[] = "Content-Type: text/plain\r\n";
    const char *reason = wrk_http_reason(status);
    size_t rlen = strlen(reason);
    c->keep_alive = false;
    c->phase = PH_CLOSING;
    c->linger = !c->eof;
    c->pending.len = 0;
    if (out_put_head(c, status, FR_LENGTH, rlen + 1, extra, sizeof(extra) - 1) ||
        molt_buf_reserve(&c->out, rlen + 1)) {
        c->failed = true;
        return;
    }
    memcpy(c->out.data + c->out.len, reason, rlen);
    c->out.data[c->out.len + rlen] = '\n';
    c->out.len += rlen + 1;
}

/* ------------------------------------------------------------------------ */
/* Parser callbacks                                                         */

/* Adds a NUL after the piece the last callback was building. */
static int head_terminate(conn_t *c)
{
    if (c->last_cb == HCB_VALUE) {
        /* The parser skips leading blanks of a value but keeps trailing ones. */
        head_off_t *h = &c->hoff[c->nhdrs - 1];
        while (h->value_len && (c->head.data[h->value + h->value_len - 1] == ' ' ||
                                c->head.data[h->value + h->value_len - 1] == '\t')) {
            h->value_len--;
            c->head.len--;
        }
    }
    return molt_buf_append(&c->head, "", 1);
}

static int cb_fail(conn_t *c, int status)
{
    c->err_status = status;
    return -1;
}

static int on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    if (c->phase == PH_IDLE) {
        c->phase = PH_HEAD;
        /* The first request's head is timed from accept, later ones from their first byte. */
        c->head_start = c->requests ? ev_now(c->srv->loop) : c->accepted_at;
    }
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    c->last_cb = HCB_URL;
    c->url_len += len;
    return molt_buf_append(&c->head, at, len) ? cb_fail(c, 500) : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->phase != PH_HEAD)
        return 0; /* chunked trailers: not kept */
    if (c->last_cb != HCB_FIELD) {
        /* A new header starts: close the url or the previous value. */
        if (head_terminate(c))
            return cb_fail(c, 500);
        if (c->nhdrs == c->hcap) {
            size_t cap = c->hcap ? c->hcap * 2 : 16;
            head_off_t *ho = realloc(c->hoff, cap * sizeof(*ho));
            if (!ho)
                return cb_fail(c, 500);
            c->hoff = ho;
            wrk_header_t *hd = realloc(c->hdrs, cap * sizeof(*hd));
            if (!hd)
                return cb_fail(c, 500);
            c->hdrs = hd;
            c->hcap = cap;
        }
        head_off_t *h = &c->hoff[c->nhdrs++];
        h->name = c->head.len;
        h->name_len = 0;
        h->value = 0;
        h->value_len = 0;
        c->last_cb = HCB_FIELD;
    }
    c->hoff[c->nhdrs - 1].name_len += len;
    return molt_buf_append(&c->head, at, len) ? cb_fail(c, 500) : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->phase != PH_HEAD)
        return 0;
    /* Some header states of the parser let a NUL through; a value must be a C string. */
    if (memchr(at, 0, len))
        return cb_fail(c, 400);
    if (c->last_cb != HCB_VALUE) {
        if (c->last_cb != HCB_FIELD)
            return cb_fail(c, 400); /* value without a name: the parser never does this */
        if (head_terminate(c))
            return cb_fail(c, 500);
        c->hoff[c->nhdrs - 1].value = c->head.len;
        c->last_cb = HCB_VALUE;
    }
    c->hoff[c->nhdrs - 1].value_len += len;
    return molt_buf_append(&c->head, at, len) ? cb_fail(c, 500) : 0;
}

/*
 * Validates what the head announced about the body: Transfer-Encoding other
 * than exactly "chunked" is 501 (the parser alone would de-chunk
 * "gzip, chunked" and hand on gzip data); Expect: 100-continue is answered
 * here, before any body byte is read. Only runs when the request has a
 * Transfer-Encoding or a body, so a plain GET pays nothing.
 */
static int head_check_body(conn_t *c, bool has_body)
{
    size_t ntre = 0;
    bool te_chunked = false, expect_continue = false;
    for (size_t i = 0; i < c->nhdrs; i++) {
        const wrk_header_t *h = &c->hdrs[i];
        if (ieq(h->name, h->name_len, "transfer-encoding")) {
            ntre++;
            te_chunked = ieq(h->value, h->value_len, "chunked");
        } else if (ieq(h->name, h->name_len, "expect")) {
            expect_continue = ieq(h->value, h->value_len, "100-continue");
        }
    }
    if (c->parser.uses_transfer_encoding || ntre) {
        if (ntre != 1 || !te_chunked || !(c->parser.flags & F_CHUNKED))
            return cb_fail(c, 501);
    }
    if (expect_continue && has_body && c->version == 11) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (molt_buf_append(&c->out, cont, sizeof(cont) - 1))
            return cb_fail(c, 500);
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    const molt_http_cfg_t *cfg = c->srv->cfg;

    if (c->phase != PH_HEAD)
        return cb_fail(c, 400);
    if (head_terminate(c))
        return cb_fail(c, 500);
    /* The head buffer is complete and will not move any more: pointers now. */
    const char *base = c->head.data;
    for (size_t i = 0; i < c->nhdrs; i++) {
        const head_off_t *h = &c->hoff[i];
        c->hdrs[i].name = base + h->name;
        c->hdrs[i].name_len = h->name_len;
        /* A name the parser ended without a value (never seen) reads as empty. */
        c->hdrs[i].value = h->value ? base + h->value : base + h->name + h->name_len;
        c->hdrs[i].value_len = h->value_len;
    }
    c->phase = PH_BODY;

    if (p->http_major != 1)
        return cb_fail(c, p->http_major == 0 ? 400 : 505);
    c->version = p->http_minor == 0 ? 10 : 11;

    bool chunked = p->flags & F_CHUNKED;
    bool has_len = !chunked && p->content_length != ULLONG_MAX && p->content_length > 0;
    if (has_len && p->content_length > cfg->max_body_bytes)
        return cb_fail(c, 413);
    if ((chunked || has_len || p->uses_transfer_encoding) && head_check_body(c, chunked || has_len))
        return -1;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    size_t have = c->body.len + c->body_ext_len;
    if (len > c->srv->cfg->max_body_bytes || have > c->srv->cfg->max_body_bytes - len)
        return cb_fail(c, 413);
    if (!have && http_body_is_final(p)) {
        /* The whole body is here in one piece: use it where it lies. */
        c->body_ext = at;
        c->body_ext_len = len;
        return 0;
    }
    if (c->body_ext_len) { /* cannot happen (final came first), but keep bytes in order */
        if (molt_buf_append(&c->body, c->body_ext, c->body_ext_len))
            return cb_fail(c, 500);
        c->body_ext = NULL;
        c->body_ext_len = 0;
    }
    if (!have && !(p->flags & F_CHUNKED)) {
        /* A Content-Length body in pieces: room for all of it at once (the
         * parser has counted this piece off already), but not on a client's
         * word alone for more than we would keep. */
        uint64_t total = len + p->content_length;
        if (molt_buf_reserve(&c->body, total < HTTP_KEEP_BUF_MAX ? (size_t)total : HTTP_KEEP_BUF_MAX))
            return cb_fail(c, 500);
    }
    return molt_buf_append(&c->body, at, len) ? cb_fail(c, 500) : 0;
}

static int on_message_complete(http_parser *p)
{
    /* One request at a time: execute() returns here and the request is served. */
    http_parser_pause(p, 1);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                 */

/* Fills txn->path / query from the url (origin-form, absolute-form, '*', authority). */
static void txn_split_url(struct molt_txn *txn)
{
    const char *u = txn->url, *end = txn->url + txn->url_len;
    const char *path = u;
    if (u < end && *u != '/' && *u != '*') {
        /* absolute-form "http://host/p?q": the path starts after the authority */
        const char *s = strstr(u, "://");
        if (s) {
            const char *slash = memchr(s + 3, '/', (size_t)(end - (s + 3)));
            const char *q = memchr(s + 3, '?', (size_t)(end - (s + 3)));
            if (slash && (!q || slash < q)) {
                path = slash;
            } else {
                /* no path: "/" (static, not NUL-terminated by contract anyway) */
                txn->path = "/";
                txn->path_len = 1;
                txn->query = q ? q + 1 : NULL;
                txn->query_len = q ? (size_t)(end - (q + 1)) : 0;
                if (q) {
                    const char *h = memchr(q + 1, '#', txn->query_len);
                    if (h)
                        txn->query_len = (size_t)(h - (q + 1));
                }
                return;
            }
        }
    }
    const char *p = path;
    while (p < end && *p != '?' && *p != '#')
        p++;
    txn->path = path;
    txn->path_len = (size_t)(p - path);
    txn->query = NULL;
    txn->query_len = 0;
    if (p < end && *p == '?') {
        const char *q = ++p;
        while (p < end && *p != '#')
            p++;
        txn->query = q;
        txn->query_len = (size_t)(p - q);
    }
}

/* Resets the per-request parse state; buffers keep their memory. */
static void conn_reset_request(conn_t *c)
{
    c->last_cb = HCB_NONE;
    c->head_bytes = 0;
    c->head.len = 0;
    c->url_len = 0;
    c->nhdrs = 0;
    c->body.len = 0;
    c->body_ext = NULL;
    c->body_ext_len = 0;
    c->err_status = 0;
    if (c->head.cap > HTTP_KEEP_HEAD_MAX)
        molt_buf_free(&c->head);
    if (c->hcap > HTTP_KEEP_HDRS_MAX) {
        free(c->hoff);
        free(c->hdrs);
        c->hoff = NULL;
        c->hdrs = NULL;
        c->hcap = 0;
    }
    if (c->body.cap > HTTP_KEEP_BUF_MAX)
        molt_buf_free(&c->body);
    if (c->txn.resp_body.cap > HTTP_KEEP_BUF_MAX)
        molt_buf_free(&c->txn.resp_body);
    if (c->txn.resp_headers.cap > HTTP_KEEP_BUF_MAX)
        molt_buf_free(&c->txn.resp_headers);
}

/* Appends whatever the handler left after the head: a plain body, or the final chunks. */
static int conn_finish_response(conn_t *c)
{
    struct molt_txn *txn = &c->txn;
    if (!txn->streaming) {
        int status = status_norm(txn->status);
        bool nobody = status_no_body(status);
        c->keep_alive = c->keep_alive && txn->keep_alive;
        if (out_put_head(c, status, nobody ? FR_NONE : FR_LENGTH, txn->resp_body.len, txn->resp_headers.data,
                         txn->resp_headers.len))
            return -ENOMEM;
        if (!nobody && !txn->head && molt_buf_append(&c->out, txn->resp_body.data, txn->resp_body.len))
            return -ENOMEM;
        return 0;
    }
    if (c->smode == SM_CHUNKED) {
        if (out_put_chunk(c, txn->resp_body.data, txn->resp_body.len) ||
            molt_buf_append(&c->out, "0\r\n\r\n", 5))
            return -ENOMEM;
    } else if (c->smode == SM_RAW) {
        if (molt_buf_append(&c->out, txn->resp_body.data, txn->resp_body.len))
            return -ENOMEM;
    }
    return 0;
}

/*
 * Queues the response of the transaction the handler finished (now, or
 * later through wrk_http_txn_complete()) and readies the connection for the
 * next request or for closing.
 */
static void conn_complete(conn_t *c)
{
    struct wrk_http *srv = c->srv;
    struct molt_txn *txn = &c->txn;
    /* A transaction that outlived the start of a drain closes its connection
     * (the head of a streamed response went out without saying so: the
     * connection just closes after the last chunk). */
    if (srv->draining)
        c->keep_alive = false;
    if (!c->failed && conn_finish_response(c))
        c->failed = true;
    txn->resp_body.len = 0;
    txn->resp_headers.len = 0;
    conn_reset_request(c);
    if (c->keep_alive) {
        c->phase = PH_IDLE;
        c->idle_since = ev_now(srv->loop);
    } else {
        c->phase = PH_CLOSING;
    }
}

/*
 * The handler left its transaction suspended: the request stays where it is
 * (head, headers, body) until wrk_http_txn_complete(). A body lying in the
 * shared read buffer or in conn->pending would be overwritten by the next
 * read: copy it.
 */
static void conn_suspend(conn_t *c)
{
    struct molt_txn *txn = &c->txn;
    if (c->body_ext_len) {
        if (molt_buf_append(&c->body, c->body_ext, c->body_ext_len)) {
            c->failed = true; /* closed (and aborted) by the caller's conn_after_io() */
            txn->body = NULL;
            txn->body_len = 0;
        } else {
            txn->body = c->body.data;
        }
        c->body_ext = NULL;
        c->body_ext_len = 0;
    }
    ev_timer_stop(c->srv->loop, &c->timer); /* re-armed for the send timeout only, if needed */
}

/*
 * Serves the request the parser just completed: fills the txn, calls the
 * handler, then queues the response, or leaves the transaction suspended.
 */
static void conn_dispatch(conn_t *c)
{
    struct wrk_http *srv = c->srv;
    http_parser *p = &c->parser;
    struct molt_txn *txn = &c->txn;

    c->keep_alive = http_should_keep_alive(p) && srv->cfg->keepalive_timeout_ms > 0 && !srv->draining &&
                    p->method != HTTP_CONNECT;

    txn->method = http_method_str((enum http_method)p->method);
    txn->method_id = p->method;
    txn->url = c->head.data;
    txn->url_len = c->url_len;
    txn_split_url(txn);
    txn->version = c->version;
    txn->headers = c->nhdrs ? c->hdrs : NULL;
    txn->nheaders = c->nhdrs;
    if (c->body_ext_len) {
        txn->body = c->body_ext;
        txn->body_len = c->body_ext_len;
    } else {
        txn->body = c->body.len ? c->body.data : NULL;
        txn->body_len = c->body.len;
    }
    txn->head = p->method == HTTP_HEAD;
    txn->keep_alive = c->keep_alive;
    txn->status = 200;
    txn->resp_headers.len = 0;
    txn->resp_body.len = 0;
    txn->streaming = false;
    txn->instance = NULL;
    txn->conn = c;

    txn->suspended = false;

    c->in_handler = true;
    srv->handler(txn, srv->arg);
    c->in_handler = false;

    c->requests++;
    if (txn->suspended)
        conn_suspend(c);
    else
        conn_complete(c);
}

/* Status for a parser error: the callback's own choice, else by the error. */
static int conn_error_status(const conn_t *c, enum http_errno err)
{
    if (c->err_status)
        return c->err_status;
    switch (err) {
    case HPE_HEADER_OVERFLOW:
        return 431;
    case HPE_INVALID_TRANSFER_ENCODING:
        return 501;
    default:
        return 400;
    }
}

static bool conn_can_parse(const conn_t *c)
{
    return c->phase <= PH_BODY && !c->failed && !c->txn.suspended && out_unsent(c) <= HTTP_OUT_HIGH;
}

/*
 * Feeds data to the parser and serves every request it completes, until the
 * data is used up or the connection stops parsing (closing, failed, output
 * backlog). Returns the bytes consumed; the caller keeps or drops the rest.
 */
static size_t conn_parse(conn_t *c, const char *data, size_t len)
{
    size_t max_head = c->srv->cfg->max_header_bytes;
    size_t done = 0;

    while (done < len && conn_can_parse(c)) {
        size_t feed = len - done;
        bool in_head = c->phase <= PH_HEAD;
        if (in_head) {
            /* Never let the parser see more head than allowed: 431 is exact. */
            size_t room = max_head > c->head_bytes ? max_head - c->head_bytes : 0;
            if (feed > room)
                feed = room;
        }
        size_t n = feed ? http_parser_execute(&c->parser, &parser_settings, data + done, feed) : 0;
        done += n;
        if (in_head && c->phase <= PH_HEAD)
            c->head_bytes += n;
        enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
        if (err == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            conn_dispatch(c);
            continue;
        }
        if (err != HPE_OK) {
            conn_error(c, conn_error_status(c, err));
            break;
        }
        if (c->phase <= PH_HEAD && c->head_bytes >= max_head) {
            conn_error(c, 431);
            break;
        }
        if (n == 0) { /* no progress and no error: never expected; refuse rather than spin */
            conn_error(c, 400);
            break;
        }
    }
    /* Input left over when we stop for good may still be in flight: linger on close. */
    if (done < len && c->phase >= PH_CLOSING)
        c->linger = !c->eof;
    return done;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                              */

/* Computes when the connection's current state times out; 0 for never. */
static ev_tstamp conn_deadline(const conn_t *c)
{
    const struct wrk_http *srv = c->srv;
    const molt_http_cfg_t *cfg = srv->cfg;
    ev_tstamp hto = cfg->header_timeout_ms / 1000.0;
    ev_tstamp d = 0;
    /* While we hold input back (output backlog) or a transaction is
     * suspended, the client is waiting for us, not the other way round: only
     * the send timeout applies. */
    bool held = c->txn.suspended || c->pending.len || out_unsent(c) > HTTP_OUT_HIGH;

    switch (held ? PH_CLOSING : c->phase) {
    case PH_IDLE:
        d = c->requests ? c->idle_since + cfg->keepalive_timeout_ms / 1000.0 : c->accepted_at + hto;
        if (srv->draining && srv->drain_deadline < d)
            d = srv->drain_deadline;
        break;
    case PH_HEAD:
        d = c->head_start + hto;
        break;
    case PH_BODY:
        /* No separate body timeout in the config: the header timeout bounds each stall. */
        d = c->last_read + hto;
        break;
    case PH_LINGER:
        d = c->linger_start + HTTP_LINGER_S;
        break;
    default:
        break;
    }
    if (out_unsent(c)) {
        ev_tstamp s = c->last_write + HTTP_SEND_TIMEOUT_S;
        if (!d || s < d)
            d = s;
    }
    return d;
}

/* Makes sure the timer fires no later than the current deadline (lazily: never later, maybe earlier). */
static void conn_arm(conn_t *c)
{
    ev_tstamp d = conn_deadline(c);
    if (!d)
        return; /* an active timer will fire, find nothing due, and stop */
    if (ev_is_active(&c->timer) && c->timer_at <= d)
        return;
    struct ev_loop *loop = c->srv->loop;
    ev_tstamp after = d - ev_now(loop);
    ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, after > 0 ? after : 0, 0);
    ev_timer_start(loop, &c->timer);
    c->timer_at = d;
}

/* Starts / stops the read watcher to match the state. */
static void conn_update_read(conn_t *c)
{
    bool want;
    if (c->txn.suspended) /* reading only to notice the client going away, within a bound */
        want = !c->eof && !c->failed && c->pending.len < HTTP_HELD_MAX;
    else
        want = !c->eof && !c->failed && !c->pending.len &&
               (c->phase <= PH_BODY ? out_unsent(c) <= HTTP_OUT_HIGH : c->phase == PH_LINGER);
    if (want && !ev_is_active(&c->rio))
        ev_io_start(c->srv->loop, &c->rio);
    else if (!want && ev_is_active(&c->rio))
        ev_io_stop(c->srv->loop, &c->rio);
}

static void conn_close(conn_t *c)
{
    struct wrk_http *srv = c->srv;
    if (c->txn.suspended) {
        /* The plugin is told before the session closes; the txn is gone after. */
        c->txn.suspended = false;
        if (srv->txn_abort)
            srv->txn_abort(&c->txn, srv->arg);
    }
    if (c->session_opened && srv->session_close)
        srv->session_close(&c->ses, srv->session_arg);
    if (c->txn.pipeline && srv->txn_release)
        srv->txn_release(&c->txn, srv->arg);
    c->txn.pipeline = NULL;
    ev_io_stop(srv->loop, &c->rio);
    ev_io_stop(srv->loop, &c->wio);
    ev_timer_stop(srv->loop, &c->timer);
    molt_close(&c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    molt_buf_free(&c->head);
    molt_buf_free(&c->body);
    molt_buf_free(&c->out);
    molt_buf_free(&c->pending);
    molt_buf_free(&c->txn.resp_headers);
    molt_buf_free(&c->txn.resp_body);
    free(c->ses.slots);
    free(c->hoff);
    free(c->hdrs);
    free(c);
    srv->stats.conns--;
    srv_maybe_done(srv);
}

/* Parses input kept from an earlier read once the output backlog allows. */
static void conn_parse_pending(conn_t *c)
{
    /* conn_parse() never touches c->pending itself, so parsing in place is safe. */
    size_t used = conn_parse(c, c->pending.data, c->pending.len);
    if (c->phase >= PH_CLOSING)
        c->pending.len = 0;
    else
        molt_buf_consume(&c->pending, used);
    if (!c->pending.len)
        molt_buf_free(&c->pending); /* only pipelining under backlog needs it */
}

/*
 * The common tail of every event on a connection: sends output, feeds kept
 * input once the backlog allows, moves CLOSING to LINGER or closes, and sets
 * watchers and the timer. May free c.
 */
static void conn_after_io(conn_t *c)
{
    for (;;) {
        if (c->failed)
            goto fail;
        if (c->txn.suspended && c->eof)
            goto fail; /* the client of a suspended transaction went away: abort it */
        if (out_unsent(c)) {
            /* An active write watcher means the socket was full: let it say when. */
            if (!ev_is_active(&c->wio))
                conn_write(c);
            if (c->failed)
                goto fail;
            if (out_unsent(c))
                break;
        }
        if (c->txn.suspended)
            break; /* nothing to parse or close until it completes */
        if (c->pending.len && c->phase <= PH_BODY) {
            conn_parse_pending(c);
            continue;
        }
        if (c->phase == PH_CLOSING) {
            if (!c->linger || c->eof)
                goto fail;
            /* Lingering close: FIN our side, read and drop what the client still
             * sends, so closing with unread input does not RST away the response. */
            shutdown(c->fd, SHUT_WR);
            c->phase = PH_LINGER;
            c->linger_start = ev_now(c->srv->loop);
        }
        if (c->eof)
            goto fail; /* the client is gone and everything it asked for is sent */
        break;
    }
    conn_update_read(c);
    conn_arm(c);
    return;
fail:
    conn_close(c);
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_t *c = w->data;
    struct wrk_http *srv = c->srv;
    (void)revents;

    size_t room = HTTP_RBUF_SIZE;
    if (c->txn.suspended) {
        /* Everything read now is kept: stay within the bound. */
        room = c->pending.len < HTTP_HELD_MAX ? HTTP_HELD_MAX - c->pending.len : 0;
        if (!room) {
            conn_after_io(c); /* a stray event: the watcher is being stopped */
            return;
        }
    }
    ssize_t n = read(c->fd, srv->rbuf, room);
    if (n > 0) {
        c->last_read = ev_now(loop);
        if (c->phase <= PH_BODY) {
            size_t used = conn_parse(c, srv->rbuf, (size_t)n);
            if (used < (size_t)n && c->phase <= PH_BODY && !c->failed &&
                molt_buf_append(&c->pending, srv->rbuf + used, (size_t)n - used))
                c->failed = true;
        }
        /* PH_LINGER: dropped. PH_CLOSING: the watcher is off; a stray event drops. */
    } else if (n == 0) {
        c->eof = true;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        c->failed = true;
    }
    conn_after_io(c);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_t *c = w->data;
    (void)loop;
    (void)revents;
    conn_write(c);
    conn_after_io(c);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    conn_t *c = w->data;
    struct wrk_http *srv = c->srv;
    (void)revents;

    ev_tstamp now = ev_now(loop);
    ev_tstamp d = conn_deadline(c);
    if (!d || now + 0.0005 < d) {
        conn_arm(c); /* not due yet: the state moved the deadline on */
        return;
    }
    if (out_unsent(c) && now + 0.0005 >= c->last_write + HTTP_SEND_TIMEOUT_S) {
        conn_close(c); /* the client stopped reading */
        return;
    }
    if (c->txn.suspended) {
        conn_arm(c); /* only the send timeout applies, and it is not due */
        return;
    }
    switch (c->phase) {
    case PH_IDLE:
        if (c->requests == 0 && !srv->draining) {
            conn_error(c, 408); /* nothing at all since accept */
        } else if (out_unsent(c)) {
            c->phase = PH_CLOSING; /* keep-alive over, but finish the last response */
            c->linger = false;
        } else {
            conn_close(c);
            return;
        }
        break;
    case PH_HEAD:
    case PH_BODY:
        conn_error(c, 408);
        break;
    default: /* PH_LINGER */
        conn_close(c);
        return;
    }
    conn_after_io(c);
}

/* Takes ownership of fd (connected, non-blocking) on success; 0 or -ENOMEM. */
static int conn_new(struct wrk_http *srv, int fd)
{
    conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->srv = srv;
    c->fd = fd;
    c->phase = PH_IDLE;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->accepted_at = c->last_read = c->last_write = ev_now(srv->loop);
    c->version = 11;
    c->keep_alive = true;
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    ev_init(&c->timer, conn_timer_cb);
    c->rio.data = c->wio.data = c->timer.data = c;

    c->ses.id = ++srv->next_session_id;
    c->ses.fd = fd;
    c->txn.session = &c->ses;

    c->next = srv->conns;
    if (c->next)
        c->next->prev = c;
    srv->conns = c;
    srv->stats.accepted++;
    srv->stats.conns++;

    if (srv->session_open) {
        if (srv->session_open(&c->ses, srv->session_arg) < 0) {
            conn_close(c); /* closes fd: the caller must not */
            return 0;
        }
        c->session_opened = true;
    }
    ev_io_start(srv->loop, &c->rio);
    conn_arm(c);
    return 0;
}

void wrk_http_set_session_hooks(wrk_http_t *srv, wrk_http_session_open_fn open_fn,
                                wrk_http_session_close_fn close_fn, void *arg)
{
    srv->session_open = open_fn;
    srv->session_close = close_fn;
    srv->session_arg = arg;
}

void wrk_http_set_txn_hooks(wrk_http_t *srv, wrk_http_txn_fn abort_fn, wrk_http_txn_fn release_fn)
{
    srv->txn_abort = abort_fn;
    srv->txn_release = release_fn;
}

/* ------------------------------------------------------------------------ */
/* Streaming and completion                                                 */

/* Has the loop look at a connection (conn_write_cb, then conn_after_io) on its
 * next iteration: for changes made outside of the connection's own events. */
static void conn_kick(conn_t *c)
{
    ev_feed_event(c->srv->loop, &c->wio, EV_WRITE);
}

int wrk_http_txn_flush(struct molt_txn *txn)
{
    conn_t *c = txn ? txn->conn : NULL;
    /* Only while the handler runs or the txn is suspended: afterwards the txn
     * already serves the next request. */
    if (!c || !(c->in_handler || txn->suspended))
        return -EINVAL;
    if (c->failed)
        return -EPIPE;
    if (!txn->streaming) {
        int status = status_norm(txn->status);
        frame_t frame;
        /* A suspended transaction may stream after a drain began: say it closes. */
        c->keep_alive = c->keep_alive && txn->keep_alive && !c->srv->draining;
        if (status_no_body(status)) {
            c->smode = SM_NOBODY;
            frame = FR_NONE;
        } else if (c->version == 10) {
            /* HTTP/1.0 has no chunked coding: the body ends when the connection does. */
            c->smode = txn->head ? SM_NOBODY : SM_RAW;
            c->keep_alive = false;
            frame = FR_NONE;
        } else {
            c->smode = txn->head ? SM_NOBODY : SM_CHUNKED;
            frame = FR_CHUNKED;
        }
        txn->keep_alive = c->keep_alive;
        if (out_put_head(c, status, frame, 0, txn->resp_headers.data, txn->resp_headers.len))
            goto fail;
        txn->streaming = true;
    }
    if (c->smode == SM_CHUNKED) {
        if (out_put_chunk(c, txn->resp_body.data, txn->resp_body.len))
            goto fail;
    } else if (c->smode == SM_RAW) {
        if (molt_buf_append(&c->out, txn->resp_body.data, txn->resp_body.len))
            goto fail;
    }
    txn->resp_body.len = 0;
    /* Only send if the socket is not known to be full; the write watcher covers that case. */
    if (!ev_is_active(&c->wio))
        conn_write(c);
    if (c->failed && !c->in_handler)
        conn_kick(c); /* suspended: the failure closes the connection (and aborts) from the loop */
    return c->failed ? -EPIPE : 0;
fail:
    c->failed = true;
    if (!c->in_handler)
        conn_kick(c);
    return -ENOMEM;
}

int wrk_http_txn_complete(struct molt_txn *txn)
{
    conn_t *c = txn ? txn->conn : NULL;
    if (!c || !txn->suspended || c->in_handler)
        return -EINVAL;
    txn->suspended = false;
    conn_complete(c);
    /* The response goes out now if the socket takes it (conn_write never
     * frees c); parsing what the client pipelined meanwhile, or closing,
     * happens from the loop. */
    if (!ev_is_active(&c->wio))
        conn_write(c);
    conn_kick(c);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Server                                                                   */

static void srv_done_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct wrk_http *srv = w->data;
    (void)loop;
    (void)revents;
    if (srv->stats.conns || !srv->done)
        return;
    void (*done)(void *) = srv->done;
    void *arg = srv->done_arg;
    srv->done = NULL;
    done(arg); /* last: it may free srv */
}

/* Schedules done() for the next loop iteration when draining left no connection. */
static void srv_maybe_done(struct wrk_http *srv)
{
    if (srv->draining && srv->done && !srv->stats.conns && !ev_is_active(&srv->done_timer)) {
        ev_timer_set(&srv->done_timer, 0, 0);
        ev_timer_start(srv->loop, &srv->done_timer);
    }
}

/* Starts / stops every listener to match paused / draining / backoff. */
static void srv_update_listeners(struct wrk_http *srv)
{
    bool want = !srv->paused && !srv->draining && !srv->backoff;
    for (listener_t *l = srv->listeners; l; l = l->next) {
        if (want && !ev_is_active(&l->io))
            ev_io_start(srv->loop, &l->io);
        else if (!want && ev_is_active(&l->io))
            ev_io_stop(srv->loop, &l->io);
    }
}

static void srv_backoff_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct wrk_http *srv = w->data;
    (void)loop;
    (void)revents;
    srv->backoff = false;
    srv_update_listeners(srv);
}

static void srv_accept_log(struct wrk_http *srv, int fd, int err)
{
    ev_tstamp now = ev_now(srv->loop);
    if (srv->accept_logged_at && now - srv->accept_logged_at < HTTP_ACCEPT_LOG_EVERY_S)
        return;
    srv->accept_logged_at = now;
    molt_warn("accept4() failed on listening socket fd %d: %s", fd, strerror(err));
}

static void srv_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    listener_t *l = w->data;
    struct wrk_http *srv = l->srv;
    (void)revents;

    for (int i = 0; i < HTTP_ACCEPT_BATCH; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            switch (errno) {
            case EAGAIN:
#if EWOULDBLOCK != EAGAIN
            case EWOULDBLOCK:
#endif
                return;
            case EINTR:
            case ECONNABORTED:
            case EPROTO:
            case EPERM:
            case ENETDOWN:
            case ENOPROTOOPT:
            case EHOSTDOWN:
            case ENONET:
            case EHOSTUNREACH:
            case ENETUNREACH:
                continue; /* that connection failed, not the listener */
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                /* Out of fds or memory: the pending connection stays in the backlog
                 * and would wake us at once; pause accepting briefly instead. */
                srv_accept_log(srv, w->fd, errno);
                srv->backoff = true;
                srv_update_listeners(srv);
                ev_timer_set(&srv->backoff_timer, HTTP_ACCEPT_BACKOFF_S, 0);
                ev_timer_start(loop, &srv->backoff_timer);
                return;
            default:
                srv_accept_log(srv, w->fd, errno);
                return;
            }
        }
        if (l->tcp) {
            int one = 1;
            /* Responses go out in one send(); Nagle would only delay the next one. */
            (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        if (conn_new(srv, fd) < 0) {
            close(fd);
            srv_accept_log(srv, w->fd, ENOMEM);
        }
    }
}

wrk_http_t *wrk_http_new(struct ev_loop *loop, const molt_http_cfg_t *cfg, wrk_http_handler_fn handler,
                         void *arg)
{
    struct wrk_http *srv = calloc(1, sizeof(*srv));
    if (!srv)
        goto fail;
    srv->rbuf = malloc(HTTP_RBUF_SIZE);
    if (!srv->rbuf)
        goto fail;
    /* Our own count enforces max_header_bytes exactly (conn_parse); the
     * parser's compile-time cap (80 KiB) must only be raised, never hit first.
     * It is process-wide, and also bounds chunk-size lines and trailers. */
    if (cfg->max_header_bytes > HTTP_MAX_HEADER_SIZE)
        http_parser_set_max_header_size(
            cfg->max_header_bytes < UINT32_MAX - 1 ? (uint32_t)cfg->max_header_bytes + 1 : UINT32_MAX);
    srv->loop = loop;
    srv->cfg = cfg;
    srv->handler = handler;
    srv->arg = arg;
    ev_init(&srv->backoff_timer, srv_backoff_cb);
    srv->backoff_timer.data = srv;
    ev_init(&srv->done_timer, srv_done_cb);
    srv->done_timer.data = srv;
    return srv;
fail:
    if (srv)
        free(srv->rbuf);
    free(srv);
    return NULL;
}

int wrk_http_listen(wrk_http_t *srv, int fd)
{
    listener_t *l = NULL;
    int rc = molt_fd_set_nonblock(fd, true);
    if (rc)
        goto fail;
    l = calloc(1, sizeof(*l));
    if (!l) {
        rc = -ENOMEM;
        goto fail;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        l->tcp = ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
    l->srv = srv;
    ev_io_init(&l->io, srv_accept_cb, fd, EV_READ);
    l->io.data = l;
    l->next = srv->listeners;
    srv->listeners = l;
    srv_update_listeners(srv);
    return 0;
fail:
    free(l);
    return rc;
}

int wrk_http_adopt(wrk_http_t *srv, int fd)
{
    int rc = molt_fd_set_nonblock(fd, true);
    if (rc)
        return rc;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails on AF_UNIX: fine */
    return conn_new(srv, fd);
}

void wrk_http_pause(wrk_http_t *srv)
{
    srv->paused = true;
    srv_update_listeners(srv);
}

void wrk_http_resume(wrk_http_t *srv)
{
    srv->paused = false;
    srv_update_listeners(srv);
}

/*
 * done() is never called from inside this function: when nothing is open it
 * runs from a zero-delay timer on the next loop iteration, as it does when the
 * last connection closes later. A second drain replaces done/arg.
 */
void wrk_http_drain(wrk_http_t *srv, uint32_t idle_grace_ms, void (*done)(void *arg), void *arg)
{
    srv->draining = true;
    srv->done = done;
    srv->done_arg = arg;
    /* Called from anywhere (a channel message, a signal): the loop's cached time may be old. */
    ev_now_update(srv->loop);
    srv->drain_deadline = ev_now(srv->loop) + idle_grace_ms / 1000.0;
    ev_timer_stop(srv->loop, &srv->backoff_timer);
    srv->backoff = false;
    srv_update_listeners(srv);
    /* Idle connections must now time out by the grace deadline; busy ones
     * answer "Connection: close" when their response is built. */
    for (conn_t *c = srv->conns; c; c = c->next)
        conn_arm(c);
    srv_maybe_done(srv);
}

void wrk_http_undrain(wrk_http_t *srv)
{
    if (!srv->draining)
        return;
    srv->draining = false;
    srv->done = NULL;
    ev_timer_stop(srv->loop, &srv->done_timer);
    srv_update_listeners(srv);
    /* Idle connections get their keep-alive timeout back. */
    for (conn_t *c = srv->conns; c; c = c->next)
        conn_arm(c);
}

void wrk_http_close_all(wrk_http_t *srv)
{
    conn_t *next;
    for (conn_t *c = srv->conns; c; c = next) {
        next = c->next;
        if (c->in_handler)
            c->failed = true; /* closed when its handler returns */
        else
            conn_close(c); /* aborts a suspended transaction first */
    }
}

void wrk_http_get_stats(const wrk_http_t *srv, wrk_http_stats_t *out)
{
    *out = srv->stats;
}

void wrk_http_free(wrk_http_t *srv)
{
    if (!srv)
        return;
    srv->draining = false; /* no done() from the closes below */
    while (srv->conns)
        conn_close(srv->conns);
    listener_t *next;
    for (listener_t *l = srv->listeners; l; l = next) {
        next = l->next;
        ev_io_stop(srv->loop, &l->io);
        free(l);
    }
    ev_timer_stop(srv->loop, &srv->backoff_timer);
    ev_timer_stop(srv->loop, &srv->done_timer);
    free(srv->rbuf);
    free(srv);
}
