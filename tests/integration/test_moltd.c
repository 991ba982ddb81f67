/*
 * The integration tier: the real moltd and moltctl, real workers serving the
 * real hello plugin and the test plugins (tests/plugins) on loopback, driven
 * by real clients (curl, wrk, raw sockets) and by the control socket.
 *
 * One source, five executables (integ_serve, integ_ops, integ_startup,
 * integ_lifecycle, integ_gendir; MOLT_IT_SUITE picks the suite) so that CTest
 * can run the themes in parallel. Every test starts its own moltd on its own ports in its
 * own temp dir, and leaves no process and no file behind (harness.h).
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>

#include "tests/integration/harness.h"

#ifndef MOLT_IT_SUITE
#define MOLT_IT_SUITE "all"
#endif

/* ---- helpers ------------------------------------------------------------------------------- */

static const char *url(char *buf, size_t len, const h_molt_t *h, const char *path)
{
    snprintf(buf, len, "http://127.0.0.1:%d%s", h->port, path);
    return buf;
}

/* Reads one response on c and checks its status. */
static void read_status(h_conn_t *c, h_resp_t *r, int status, const char *what)
{
    int rc = h_conn_read(c, r, 5000);
    H_CHECK(rc == 0, "%s: no complete response: %s", what, strerror(-rc));
    H_CHECK(r->status == status, "%s: status %d, expected %d (body: %s)", what, r->status, status, r->body);
}

static void check_body(const h_resp_t *r, const char *expect, const char *what)
{
    H_CHECK(r->body_len == strlen(expect) && memcmp(r->body, expect, r->body_len) == 0,
            "%s: body is '%s' (%zu bytes), expected '%s'", what, r->body, r->body_len, expect);
}

/* Content-Length, when present, must match what was received. */
static void check_length(const h_resp_t *r, const char *what)
{
    const char *cl = h_resp_header(r, "Content-Length");
    if (cl)
        H_CHECK(strtoull(cl, NULL, 10) == r->body_len, "%s: Content-Length %s but %zu body bytes", what, cl,
                r->body_len);
}

/* An IMF-fixdate within a minute of now. */
static void check_date(const char *date)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    H_CHECK(end && *end == '\0', "Date '%s' is not an IMF-fixdate", date);
    time_t t = timegm(&tm), now = time(NULL);
    H_CHECK(t > now - 60 && t < now + 60, "Date '%s' is not now", date);
}

static pid_t *status_pids(h_molt_t *h, pid_t *pids, size_t max, size_t expect)
{
    json_t *st = h_status(h);
    H_CHECK(st != NULL, "no status from moltd");
    size_t n = h_status_pids(st, pids, max);
    json_decref(st);
    H_CHECK(n == expect, "status shows %zu worker slots, expected %zu", n, expect);
    for (size_t i = 0; i < n; i++)
        H_CHECK(pids[i] > 0, "slot %zu has no process", i);
    return pids;
}

/* Every slot still runs the same process, ready, never restarted. */
static void check_workers_unchanged(h_molt_t *h, const pid_t *before, size_t n)
{
    json_t *st = h_status(h);
    H_CHECK(st != NULL, "no status from moltd");
    for (unsigned s = 0; s < n; s++) {
        const json_t *w = h_status_slot(st, s);
        H_CHECK(w != NULL, "status has no slot %u", s);
        pid_t pid = (pid_t)json_integer_value(json_object_get(w, "pid"));
        const char *state = json_string_value(json_object_get(w, "state"));
        json_int_t restarts = json_integer_value(json_object_get(w, "restarts"));
        const char *last = json_string_value(json_object_get(w, "last_exit"));
        if (pid != before[s] || !state || strcmp(state, "ready") != 0 || restarts != 0) {
            json_decref(st);
            H_FAIL("slot %u: pid %d state %s restarts %lld last_exit %s; expected pid %d, ready, 0 restarts",
                   s, (int)pid, state ? state : "?", (long long)restarts, last ? last : "null",
                   (int)before[s]);
        }
    }
    json_decref(st);
}

/* Sum of requests.<key> over every worker of a status reply. */
static long long requests_sum(const json_t *st, const char *key)
{
    long long sum = 0;
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(st, "workers"), i, w)
    {
        sum += json_integer_value(json_object_get(json_object_get(w, "requests"), key));
    }
    return sum;
}

/* `word` occurs in text with no digit right before or after it. */
static bool has_number(const char *text, long n)
{
    char word[32];
    snprintf(word, sizeof(word), "%ld", n);
    size_t len = strlen(word);
    for (const char *p = text; (p = strstr(p, word)); p++) {
        bool before = p > text && p[-1] >= '0' && p[-1] <= '9';
        bool after = p[len] >= '0' && p[len] <= '9';
        if (!before && !after)
            return true;
    }
    return false;
}

static void check_no_group_procs(const char *when)
{
    pid_t left[16];
    size_t n = h_group_procs(left, 16);
    H_CHECK(n == 0, "%s: %zu process(es) still running, the first pid %d", when, n, (int)(n ? left[0] : 0));
}

static void curl_hello(h_molt_t *h, const char *what)
{
    char u[128];
    h_resp_t r;
    int rc = h_curl(h, &r, url(u, sizeof(u), h, "/"), NULL);
    H_CHECK(rc == 0, "%s: curl %s exited with %d", what, u, rc);
    H_CHECK(r.status == 200, "%s: status %d", what, r.status);
    check_body(&r, H_HELLO_BODY, what);
    h_resp_free(&r);
}

/* =============================================================================================
 * serve: HTTP on the wire
 * ============================================================================================= */

START_TEST(test_hello_curl)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    char u[128];
    h_resp_t r;
    int rc = h_curl(h, &r, url(u, sizeof(u), h, "/"), NULL);
    H_CHECK(rc == 0, "curl %s exited with %d", u, rc);
    H_CHECK(r.status == 200, "status %d", r.status);
    check_body(&r, H_HELLO_BODY, "GET /");
    check_length(&r, "GET /");
    H_CHECK(h_resp_header(&r, "Content-Length") || h_resp_header(&r, "Transfer-Encoding"),
            "the response has no framing header");
    const char *date = h_resp_header(&r, "Date");
    H_CHECK(date != NULL, "no Date header");
    check_date(date);
    const char *server = h_resp_header(&r, "Server");
    H_CHECK(server && *server, "no Server header");
    const char *ctype = h_resp_header(&r, "Content-Type");
    H_CHECK(ctype && strcmp(ctype, "text/plain") == 0, "Content-Type %s, expected hello's text/plain",
            ctype ? ctype : "(none)");
    h_resp_free(&r);
}
END_TEST

START_TEST(test_keepalive)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    for (int i = 1; i <= 3; i++) {
        char what[64];
        snprintf(what, sizeof(what), "request %d on one connection", i);
        h_conn_send_str(&c, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        h_resp_t r;
        read_status(&c, &r, 200, what);
        check_body(&r, H_HELLO_BODY, what);
        const char *conn = h_resp_header(&r, "Connection");
        H_CHECK(r.keep_alive && !(conn && strcasecmp(conn, "close") == 0), "%s: the server closes (%s)", what,
                conn ? conn : "no Connection header");
        h_resp_free(&r);
        if (i == 2)
            H_CHECK(h_conn_wait_eof(&c, 500) == 0, "the connection did not stay open after two requests");
    }
    h_conn_close(&c);
}
END_TEST

START_TEST(test_pipelining)
{
    h_molt_t *h = h_new();
    h_add_echo(h);
    h_start_ready(h);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    /* Three requests in one write, one of them with a body. */
    h_conn_send_str(&c, "GET /echo/1 HTTP/1.1\r\nHost: x\r\n\r\n"
                        "POST /echo/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde"
                        "GET /echo/3?x=y HTTP/1.1\r\nHost: x\r\nX-Test: third\r\n\r\n");
    static const char *const expect[] = {
        "method=GET path=/echo/1 query= x-test= body=0\n",
        "method=POST path=/echo/2 query= x-test= body=5\nabcde",
        "method=GET path=/echo/3 query=x=y x-test=third body=0\n",
    };
    for (size_t i = 0; i < 3; i++) {
        char what[64];
        snprintf(what, sizeof(what), "pipelined response %zu", i + 1);
        h_resp_t r;
        read_status(&c, &r, 200, what);
        check_body(&r, expect[i], what);
        check_length(&r, what);
        h_resp_free(&r);
    }
    H_CHECK(h_conn_wait_eof(&c, 300) == 0, "the connection did not stay open after the pipelined requests");
    h_conn_close(&c);
}
END_TEST

START_TEST(test_http10)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_conn_send_str(&c, "GET / HTTP/1.0\r\n\r\n");
    h_resp_t r;
    read_status(&c, &r, 200, "HTTP/1.0 GET");
    check_body(&r, H_HELLO_BODY, "HTTP/1.0 GET");
    H_CHECK(!r.chunked, "chunked response to an HTTP/1.0 request");
    h_resp_free(&r);
    H_CHECK(h_conn_wait_eof(&c, 2000) == 1, "the connection stayed open after an HTTP/1.0 response");
    h_conn_close(&c);
}
END_TEST

START_TEST(test_head)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    /* Pipelined: a body after the HEAD response would be read as the next response. */
    h_conn_send_str(&c, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    h_resp_t r;
    c.no_body = true;
    read_status(&c, &r, 200, "HEAD /");
    c.no_body = false;
    const char *cl = h_resp_header(&r, "Content-Length");
    H_CHECK(!cl || strtoul(cl, NULL, 10) == strlen(H_HELLO_BODY),
            "HEAD: Content-Length %s, GET's would be %zu", cl, strlen(H_HELLO_BODY));
    h_resp_free(&r);
    read_status(&c, &r, 200, "GET / after HEAD /");
    check_body(&r, H_HELLO_BODY, "GET / after HEAD /");
    h_resp_free(&r);
    H_CHECK(h_conn_wait_eof(&c, 300) == 0, "the connection did not stay open after HEAD and GET");
    h_conn_close(&c);
}
END_TEST

/* Sends `req` on a new connection; expects `status`, then (if close) the connection closed. */
static void expect_status(h_molt_t *h, const char *req, size_t len, int status, bool close, const char *what)
{
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_conn_send(&c, req, len);
    h_resp_t r;
    read_status(&c, &r, status, what);
    check_length(&r, what);
    h_resp_free(&r);
    if (close)
        H_CHECK(h_conn_wait_eof(&c, 2000) == 1, "%s: the connection stayed open after %d", what, status);
    h_conn_close(&c);
}

/* "PREFIX" + n * c + "SUFFIX", malloc'd. */
static char *filled(const char *prefix, char c, size_t n, const char *suffix, size_t *len)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    char *s = malloc(pl + n + sl + 1);
    H_CHECK(s != NULL, "out of memory");
    memcpy(s, prefix, pl);
    memset(s + pl, c, n);
    memcpy(s + pl + n, suffix, sl + 1);
    *len = pl + n + sl;
    return s;
}

START_TEST(test_malformed)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "http.max_header_bytes", json_integer(2048));
    h_cfg_set(h, "http.max_body_bytes", json_integer(1024));
    h_cfg_set(h, "http.header_timeout_ms", json_integer(300));
    h_start_ready(h);
    pid_t before[8];
    status_pids(h, before, 8, 2);

    static const char garbage[] = "this is not an HTTP request\r\n\r\n";
    expect_status(h, garbage, sizeof(garbage) - 1, 400, true, "a garbage request line");

    size_t len;
    char *req = filled("GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", 'a', 3000, "\r\n\r\n", &len);
    expect_status(h, req, len, 431, true, "a 3000-byte header with max_header_bytes 2048");
    free(req);
    /* Under the limits: served. */
    req = filled("GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", 'a', 1500, "\r\n\r\n", &len);
    expect_status(h, req, len, 200, false, "a 1500-byte header with max_header_bytes 2048");
    free(req);

    req = filled("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n", 'b', 2000, "", &len);
    expect_status(h, req, len, 413, false, "a 2000-byte body with max_body_bytes 1024");
    free(req);
    req = filled("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", 'b', 1000, "", &len);
    expect_status(h, req, len, 200, false, "a 1000-byte body with max_body_bytes 1024");
    free(req);

    /* A head that never completes: 408 once header_timeout_ms (300) passes. */
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_conn_send_str(&c, "GET / HTTP/1.1\r\n");
    long long t0 = h_now_ms();
    h_resp_t r;
    read_status(&c, &r, 408, "a request head that stops after the request line");
    long long waited = h_now_ms() - t0;
    h_resp_free(&r);
    H_CHECK(waited >= 250 && waited < 3000, "408 after %lld ms with header_timeout_ms 300", waited);
    H_CHECK(h_conn_wait_eof(&c, 2000) == 1, "the connection stayed open after 408");
    h_conn_close(&c);

    /* None of it cost a worker. */
    check_workers_unchanged(h, before, 2);
    curl_hello(h, "after the malformed requests");

    /* ...and the error responses are counted as 4xx (reported every 0.5 s). */
    long long n4 = 0;
    for (long long deadline = h_now_ms() + h_ms(3000); h_now_ms() < deadline; h_sleep_ms(100)) {
        json_t *st = h_status(h);
        n4 = st ? requests_sum(st, "4xx") : 0;
        json_decref(st);
        if (n4 >= 4)
            break;
    }
    H_CHECK(n4 == 4, "status counts %lld 4xx responses; 4 were sent (400, 431, 413, 408)", n4);
}
END_TEST

START_TEST(test_echo_chunked_curl)
{
    h_molt_t *h = h_new();
    h_add_echo(h);
    h_start_ready(h);
    enum { N = 3000 };
    static char data[N];
    for (size_t i = 0; i < N; i++)
        data[i] = (char)(i * 7 + 3); /* binary, NULs included */
    char file[PATH_MAX + 16], at[PATH_MAX + 32], u[128];
    snprintf(file, sizeof(file), "%s/body.bin", h->dir);
    snprintf(at, sizeof(at), "@%s", file);
    h_write_file(file, data, N, 0644);

    h_resp_t r;
    int rc = h_curl(h, &r, "-H", "Transfer-Encoding: chunked", "--data-binary", at,
                    url(u, sizeof(u), h, "/echo/chunked"), NULL);
    H_CHECK(rc == 0, "curl exited with %d", rc);
    H_CHECK(r.status == 200, "status %d", r.status);
    static const char head[] = "method=POST path=/echo/chunked query= x-test= body=3000\n";
    H_CHECK(r.body_len >= sizeof(head) - 1 && memcmp(r.body, head, sizeof(head) - 1) == 0,
            "echo said '%.80s', expected '%s'", r.body, head);
    H_CHECK(r.body_len == sizeof(head) - 1 + N, "echoed %zu body bytes, expected %d",
            r.body_len - (sizeof(head) - 1), N);
    H_CHECK(memcmp(r.body + sizeof(head) - 1, data, N) == 0, "the echoed body differs from what was sent");
    check_length(&r, "chunked POST");
    h_resp_free(&r);
}
END_TEST

START_TEST(test_echo_chunked_raw)
{
    h_molt_t *h = h_new();
    h_add_echo(h);
    h_start_ready(h);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    /* Chunks cut at awkward places and sent in separate writes. */
    static const char *const parts[] = {
        "POST /echo/raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        "5\r\nhel",
        "lo\r\n6\r",
        "\n world\r\n0\r\n",
        "\r\n",
    };
    for (size_t i = 0; i < 5; i++) {
        h_conn_send_str(&c, parts[i]);
        h_sleep_ms(30);
    }
    h_resp_t r;
    read_status(&c, &r, 200, "chunked POST in pieces");
    check_body(&r, "method=POST path=/echo/raw query= x-test= body=11\nhello world",
               "chunked POST in pieces");
    h_resp_free(&r);
    h_conn_close(&c);
}
END_TEST

START_TEST(test_echo_fail)
{
    h_molt_t *h = h_new();
    h_add_echo(h);
    h_start_ready(h);
    pid_t before[8];
    status_pids(h, before, 8, 2);
    char u[128];
    h_resp_t r;
    int rc = h_curl(h, &r, url(u, sizeof(u), h, "/echo/fail"), NULL);
    H_CHECK(rc == 0, "curl exited with %d", rc);
    H_CHECK(r.status == 500, "a handler returning MOLT_ERROR got status %d, expected 500", r.status);
    h_resp_free(&r);
    h_sleep_ms(200);
    check_workers_unchanged(h, before, 2);
    rc = h_curl(h, &r, url(u, sizeof(u), h, "/echo/after"), NULL);
    H_CHECK(rc == 0 && r.status == 200, "after the 500: curl %d, status %d", rc, r.status);
    check_body(&r, "method=GET path=/echo/after query= x-test= body=0\n", "after the 500");
    h_resp_free(&r);
}
END_TEST

START_TEST(test_echo_query_header)
{
    h_molt_t *h = h_new();
    h_add_echo(h);
    h_start_ready(h);
    char u[128];
    h_resp_t r;
    int rc = h_curl(h, &r, "-H", "X-Test: hello-x", url(u, sizeof(u), h, "/echo/q?a=1&b=two"), NULL);
    H_CHECK(rc == 0, "curl exited with %d", rc);
    H_CHECK(r.status == 200, "status %d", r.status);
    check_body(&r, "method=GET path=/echo/q query=a=1&b=two x-test=hello-x body=0\n", "query and header");
    h_resp_free(&r);
}
END_TEST

START_TEST(test_ipv6)
{
    if (!h_have_ipv6()) {
        fprintf(stderr, "test_ipv6: SKIPPED: this machine cannot bind [::1]\n");
        return;
    }
    h_molt_t *h = h_new();
    h_add_ipv6(h);
    h_start_ready(h);
    char u[128];
    snprintf(u, sizeof(u), "http://[::1]:%d/", h->port6);
    h_resp_t r;
    int rc = h_curl(h, &r, "-g", u, NULL);
    H_CHECK(rc == 0, "curl %s exited with %d", u, rc);
    H_CHECK(r.status == 200, "[::1]: status %d", r.status);
    check_body(&r, H_HELLO_BODY, "GET on [::1]");
    h_resp_free(&r);

    h_conn_t c;
    h_conn_open(&c, AF_INET6, h->port6);
    h_conn_send_str(&c, "GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n");
    read_status(&c, &r, 200, "raw GET on [::1]");
    check_body(&r, H_HELLO_BODY, "raw GET on [::1]");
    h_resp_free(&r);
    h_conn_close(&c);

    curl_hello(h, "the IPv4 listener next to the IPv6 one");

    json_t *st = h_status(h);
    H_CHECK(st != NULL, "no status");
    char addr[64];
    snprintf(addr, sizeof(addr), "[::1]:%d", h->port6);
    bool listed = false;
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(st, "listen"), i, l)
    {
        const char *a = json_string_value(json_object_get(l, "address"));
        listed = listed || (a && strcmp(a, addr) == 0);
    }
    json_decref(st);
    H_CHECK(listed, "status does not list the listener %s", addr);
}
END_TEST

/* =============================================================================================
 * ops: moltctl status, load
 * ============================================================================================= */

START_TEST(test_moltctl_status_text)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    pid_t pids[8];
    status_pids(h, pids, 8, 2);
    h_cmd_t r;
    int code = h_run(&r, 15000, H_MOLTCTL, "-s", h->sock_path, "status", NULL);
    if (code != 0)
        fprintf(stderr, "moltctl status: %s%s", r.out, r.err);
    H_CHECK(code == 0, "moltctl status exited with %d", code);
    for (size_t i = 0; i < 2; i++) {
        if (!has_number(r.out, pids[i])) {
            fprintf(stderr, "moltctl status printed:\n%s", r.out);
            h_cmd_free(&r);
            H_FAIL("moltctl status does not mention worker pid %d", (int)pids[i]);
        }
    }
    H_CHECK(has_number(r.out, h->pid), "moltctl status does not mention moltd's pid %d", (int)h->pid);
    h_cmd_free(&r);
}
END_TEST

/* moltctl status --json, parsed; fails the test unless it is a good reply. */
static json_t *moltctl_json(h_molt_t *h)
{
    h_cmd_t r;
    int code = h_run(&r, 15000, H_MOLTCTL, "-s", h->sock_path, "status", "--json", NULL);
    json_error_t err;
    json_t *st = code == 0 ? json_loads(r.out, 0, &err) : NULL;
    if (!st)
        fprintf(stderr, "moltctl status --json (exit %d) printed:\n%s\n%s", code, r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(code == 0, "moltctl status --json exited with %d", code);
    H_CHECK(st != NULL, "moltctl status --json printed something that is not JSON: %s", err.text);
    H_CHECK(json_is_true(json_object_get(st, "ok")), "moltctl status --json: no \"ok\": true");
    return st;
}

START_TEST(test_moltctl_status_json)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    json_t *st = moltctl_json(h);
    json_t *ws = json_object_get(st, "workers"), *w;
    size_t i, ready = 0;
    json_array_foreach(ws, i, w)
    {
        const char *state = json_string_value(json_object_get(w, "state"));
        if (state && strcmp(state, "ready") == 0 && json_integer_value(json_object_get(w, "pid")) > 0)
            ready++;
    }
    size_t n = json_array_size(ws);
    json_decref(st);
    H_CHECK(n == 2 && ready == 2, "moltctl status --json: %zu workers, %zu ready; expected 2 ready", n,
            ready);

    /* Five requests, then the counters (reported every 0.5 s) must show them. */
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    for (int k = 0; k < 5; k++) {
        h_conn_send_str(&c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        h_resp_t r;
        read_status(&c, &r, 200, "a request to be counted");
        h_resp_free(&r);
    }
    h_conn_close(&c);
    long long n2 = 0, total = 0;
    for (long long deadline = h_now_ms() + h_ms(3000); h_now_ms() < deadline; h_sleep_ms(100)) {
        st = moltctl_json(h);
        n2 = requests_sum(st, "2xx");
        total = requests_sum(st, "total");
        json_decref(st);
        if (n2 >= 5 && total >= 5)
            break;
    }
    H_CHECK(n2 == 5 && total == 5, "after 5 requests, status counts %lld 2xx and %lld in total", n2, total);
}
END_TEST

START_TEST(test_moltctl_unreachable)
{
    h_molt_t *h = h_new(); /* only for its temp dir: no moltd */
    char sock[PATH_MAX + 16];
    snprintf(sock, sizeof(sock), "%s/nothing-here.sock", h->dir);
    static const char *const cmds[] = {"status", "stop"};
    for (size_t i = 0; i < 2; i++) {
        h_cmd_t r;
        int code = h_run(&r, 15000, H_MOLTCTL, "-s", sock, cmds[i], NULL);
        bool named = strstr(r.err, "cannot reach moltd") && strstr(r.err, sock);
        if (code != 3 || !named)
            fprintf(stderr, "moltctl %s printed: %s%s", cmds[i], r.out, r.err);
        h_cmd_free(&r);
        H_CHECK(code == 3, "moltctl %s with no moltd exited with %d, expected 3", cmds[i], code);
        H_CHECK(named, "moltctl %s: the message does not say it cannot reach moltd at %s", cmds[i], sock);
    }
}
END_TEST

START_TEST(test_wrk)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    pid_t before[8];
    status_pids(h, before, 8, 2);
    char u[128];
    h_cmd_t r;
    int code = h_run(&r, 60000, "wrk", "-t2", "-c64", "-d3s", url(u, sizeof(u), h, "/"), NULL);
    fprintf(stderr, "wrk: %s", r.out);
    bool sock_err = strstr(r.out, "Socket errors") != NULL;
    bool non2xx = strstr(r.out, "Non-2xx") != NULL;
    const char *p = strstr(r.out, " requests in ");
    long long reqs = 0;
    if (p) {
        while (p > r.out && p[-1] >= '0' && p[-1] <= '9')
            p--;
        reqs = strtoll(p, NULL, 10);
    }
    h_cmd_free(&r);
    H_CHECK(code == 0, "wrk exited with %d", code);
    H_CHECK(!sock_err, "wrk saw socket errors (output above)");
    H_CHECK(!non2xx, "wrk saw non-2xx responses (output above)");
    H_CHECK(reqs > 0, "wrk made no request");
    check_workers_unchanged(h, before, 2);
}
END_TEST

/* =============================================================================================
 * startup: moltd -t, and refusing to start
 * ============================================================================================= */

START_TEST(test_check_good)
{
    h_molt_t *h = h_new();
    h_write_config(h);
    h_cmd_t r;
    int code = h_run(&r, 20000, H_MOLTD, "-c", h->config_path, "-t", NULL);
    if (code != 0)
        fprintf(stderr, "moltd -t: %s%s", r.out, r.err);
    bool ok_said = strstr(r.out, "is ok") != NULL;
    h_cmd_free(&r);
    H_CHECK(code == 0, "moltd -t on a good config exited with %d", code);
    H_CHECK(ok_said, "moltd -t on a good config did not say it is ok");
    H_CHECK(!h_file_exists(h->runtime_dir), "moltd -t created the runtime_dir %s", h->runtime_dir);
    check_no_group_procs("after moltd -t");
}
END_TEST

/* moltd -t on h's config: exit 1, and stderr holds every needle. */
static void check_fails(h_molt_t *h, const char *const *needles, const char *what)
{
    h_write_config(h);
    h_cmd_t r;
    int code = h_run(&r, 20000, H_MOLTD, "-c", h->config_path, "-t", NULL);
    const char *missing = NULL;
    for (size_t i = 0; needles[i] && !missing; i++)
        if (!strstr(r.err, needles[i]))
            missing = needles[i];
    if (code != 1 || missing)
        fprintf(stderr, "moltd -t (%s) exited with %d:\n%s%s", what, code, r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(code == 1, "moltd -t with %s exited with %d, expected 1", what, code);
    H_CHECK(!missing, "moltd -t with %s: stderr does not mention '%s'", what, missing);
    check_no_group_procs("after moltd -t");
}

START_TEST(test_check_unknown_key)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "http.bogus_key", json_true());
    check_fails(h, (const char *const[]){"http.bogus_key", "unknown key", NULL}, "an unknown key in http");
    json_object_del(json_object_get(h->cfg, "http"), "bogus_key");
    h_cfg_set(h, "reload.health.no_such_thing", json_integer(1));
    check_fails(h, (const char *const[]){"reload.health.no_such_thing", NULL},
                "an unknown key in reload.health");
}
END_TEST

START_TEST(test_check_missing_file)
{
    h_molt_t *h = h_new();
    json_object_set_new(json_array_get(json_object_get(h->cfg, "plugins"), 0), "file",
                        json_string("no-such-plugin.so"));
    check_fails(h, (const char *const[]){"plugins[0].file", "no-such-plugin.so", NULL},
                "a missing plugin file");
}
END_TEST

/* Plugins that must keep moltd from starting, and what the operator must be told. */
typedef struct broken {
    const char *instance;
    const char *file;
    const char *why_check[3]; /* in moltd -t's message */
    const char *why_run[3];   /* in the supervisor's "cannot start" line */
    unsigned load_timeout_ms; /* 0: the harness's default; else set (h_ms) and named in both as "N ms" */
} broken_t;

static const broken_t broken[] = {
    {"db",
     "tp_fail_init.so",
     {"init failed", "database at 10.9.9.9 refused the connection"},
     {"init failed", "database at 10.9.9.9 refused the connection"},
     0},
    {"crasher",
     "tp_crash_init.so",
     {"signal 11", "Segmentation fault"},
     {"signal 11", "Segmentation fault"},
     0},
    {"notaplugin", "tp_no_entry.so", {"not a molt plugin"}, {"not a molt plugin"}, 0},
    {"future", "tp_wrong_abi.so", {"ABI 2.0", H_ABI_HOST}, {"ABI 2.0", H_ABI_HOST}, 0},
    {"stunted",
     "tp_short_desc.so",
     {"descriptor is 64 bytes, smaller than"},
     {"descriptor is 64 bytes, smaller than"},
     0},
    {"garbage", "garbage.so", {"invalid ELF header"}, {"invalid ELF header"}, 0},
    {"hanger", "tp_hang_init.so", {"within"}, {"did not become ready"}, 500},
};

/* Adds the broken instance after hello, so that a message naming the wrong
 * instance (the one initialised before) is caught. */
static void add_broken(h_molt_t *h, const broken_t *b)
{
    if (strcmp(b->file, "garbage.so") == 0) {
        char dir[PATH_MAX + 16], path[PATH_MAX + 32];
        snprintf(dir, sizeof(dir), "%s/plugins", h->dir);
        H_CHECK(mkdir(dir, 0755) == 0, "mkdir %s: %s", dir, strerror(errno));
        snprintf(path, sizeof(path), "%s/garbage.so", dir);
        static const char text[] = "This is a text file that only pretends to be a shared object.\n"
                                   "dlopen() must refuse it and moltd must say so.\n";
        h_write_file(path, text, sizeof(text) - 1, 0644);
        json_array_append_new(json_object_get(h->cfg, "plugin_path"), json_string(dir));
    }
    h_add_plugin(h, b->instance, b->file, NULL);
    if (b->load_timeout_ms) /* h_ms: hello, loaded first, must make it in time */
        h_cfg_set(h, "reload.load_timeout_ms", json_integer(h_ms((int)b->load_timeout_ms)));
}

/* "500 ms": how moltd names b's load_timeout_ms; "" when b has none. */
static const char *broken_timeout(const broken_t *b, char *buf, size_t len)
{
    if (!b->load_timeout_ms)
        return "";
    snprintf(buf, len, "%d ms", h_ms((int)b->load_timeout_ms));
    return buf;
}

START_TEST(test_check_broken)
{
    const broken_t *b = &broken[_i];
    h_molt_t *h = h_new();
    add_broken(h, b);
    char inst[80];
    snprintf(inst, sizeof(inst), "plugin %s ", b->instance);
    char ms[32];
    const char *needles[7] = {inst, b->file, broken_timeout(b, ms, sizeof(ms))};
    for (size_t k = 0; k < 3 && b->why_check[k]; k++)
        needles[3 + k] = b->why_check[k];
    char what[128];
    snprintf(what, sizeof(what), "plugin %s (%s)", b->instance, b->file);
    check_fails(h, needles, what);
    H_CHECK(!h_file_exists(h->runtime_dir), "moltd -t created the runtime_dir %s", h->runtime_dir);
}
END_TEST

START_TEST(test_refuse_start)
{
    const broken_t *b = &broken[_i];
    h_molt_t *h = h_new();
    add_broken(h, b);
    long long t0 = h_now_ms();
    h_start(h);
    H_CHECK(h_wait_exit(h, 10000), "moltd with plugin %s (%s) still runs after 10 s", b->instance, b->file);
    long long took = h_now_ms() - t0;
    H_CHECK(h_exit_code(h) == 1, "moltd with plugin %s (%s): wait status 0x%x, expected exit code 1",
            b->instance, b->file, (unsigned)h->wstatus);
    H_CHECK(took < h_ms(5000), "moltd took %lld ms to give up on plugin %s (%s)", took, b->instance, b->file);

    /* The supervisor's own verdict names the instance, the file and the reason. */
    char sup[32], inst[80];
    snprintf(sup, sizeof(sup), "sup[%d]", (int)h->pid);
    snprintf(inst, sizeof(inst), "plugin %s ", b->instance);
    char *line = h_log_line(h, (const char *const[]){sup, "cannot start:", NULL});
    H_CHECK(line != NULL, "moltd's log has no 'cannot start:' line from the supervisor");
    char ms[32];
    const char *timeout = broken_timeout(b, ms, sizeof(ms));
    const char *missing = !strstr(line, inst)      ? inst
                          : !strstr(line, b->file) ? b->file
                          : !strstr(line, timeout) ? timeout
                                                   : NULL;
    for (size_t k = 0; k < 3 && b->why_run[k] && !missing; k++)
        if (!strstr(line, b->why_run[k]))
            missing = b->why_run[k];
    if (missing) {
        fprintf(stderr, "the supervisor said: %s\n", line);
        free(line);
        H_FAIL("moltd's 'cannot start' line does not mention '%s'", missing);
    }
    free(line);

    /* Nothing left: no worker, no control socket. */
    pid_t pids[16];
    size_t n = h_log_worker_pids(h, pids, 16);
    H_CHECK(n == 2, "the log shows %zu workers started, expected 2", n);
    for (size_t i = 0; i < n; i++)
        H_CHECK(h_wait_pid_gone(pids[i], 2000, NULL), "worker pid %d outlived moltd", (int)pids[i]);
    check_no_group_procs("after moltd refused to start");
    H_CHECK(!h_file_exists(h->sock_path), "moltd left its control socket %s behind", h->sock_path);
}
END_TEST

/* =============================================================================================
 * lifecycle: respawn, stop, supervisor death
 * ============================================================================================= */

START_TEST(test_worker_sigkill_replaced)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    pid_t before[8];
    status_pids(h, before, 8, 2);
    H_CHECK(kill(before[0], SIGKILL) == 0, "kill(%d): %s", (int)before[0], strerror(errno));

    json_t *st = NULL;
    const json_t *w = NULL;
    for (long long deadline = h_now_ms() + h_ms(5000);; h_sleep_ms(20)) {
        json_decref(st);
        st = h_status(h);
        w = st ? h_status_slot(st, 0) : NULL;
        pid_t pid = (pid_t)json_integer_value(json_object_get(w, "pid"));
        const char *state = json_string_value(json_object_get(w, "state"));
        if (pid > 0 && pid != before[0] && state && strcmp(state, "ready") == 0)
            break;
        if (h_now_ms() >= deadline) {
            json_decref(st);
            H_FAIL("slot 0 was not replaced by a ready worker within 5 s of SIGKILL to pid %d",
                   (int)before[0]);
        }
    }
    json_int_t restarts = json_integer_value(json_object_get(w, "restarts"));
    const char *last = json_string_value(json_object_get(w, "last_exit"));
    bool sig9 = last && strstr(last, "signal 9");
    bool crashloop = json_is_true(json_object_get(w, "crashloop"));
    pid_t now0 = (pid_t)json_integer_value(json_object_get(w, "pid"));
    char last_copy[128];
    snprintf(last_copy, sizeof(last_copy), "%s", last ? last : "null");
    json_decref(st);
    H_CHECK(restarts == 1, "slot 0 shows %lld restarts, expected 1", (long long)restarts);
    H_CHECK(sig9, "slot 0 last_exit is '%s', expected it to mention signal 9", last_copy);
    H_CHECK(!crashloop, "one death is not a crash loop");
    H_CHECK(!h_pid_alive(before[0]), "the killed worker %d is still there", (int)before[0]);

    /* The other slot was not touched; the new worker serves. */
    pid_t after[8];
    status_pids(h, after, 8, 2);
    H_CHECK(after[0] == now0 && after[1] == before[1], "slot 1 changed from pid %d to %d", (int)before[1],
            (int)after[1]);
    st = h_status(h);
    H_CHECK(st && json_integer_value(json_object_get(h_status_slot(st, 1), "restarts")) == 0,
            "slot 1 was restarted");
    json_decref(st);
    for (int i = 0; i < 4; i++)
        curl_hello(h, "after a worker was replaced");
}
END_TEST

/* Waits until slot 0 runs a ready worker other than `not`; returns its pid. */
static pid_t wait_slot0_ready(h_molt_t *h, pid_t not, int timeout_ms)
{
    for (long long deadline = h_now_ms() + h_ms(timeout_ms);; h_sleep_ms(10)) {
        json_t *st = h_status(h);
        const json_t *w = st ? h_status_slot(st, 0) : NULL;
        pid_t pid = (pid_t)json_integer_value(json_object_get(w, "pid"));
        const char *state = json_string_value(json_object_get(w, "state"));
        bool ready = pid > 0 && pid != not &&state && strcmp(state, "ready") == 0;
        json_decref(st);
        if (ready)
            return pid;
        H_CHECK(h_now_ms() < deadline, "slot 0 has no new ready worker after %d ms", timeout_ms);
    }
}

/*
 * A plugin that crashes its worker on a request: the client gets EOF, the slot
 * is respawned after 100, 200, 400, 800 ms (doubling), and the fifth death in
 * a row is reported as a crash loop in status, in the log and by moltctl.
 */
START_TEST(test_crash_respawn_backoff)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "workers", json_integer(1));
    h_add_echo(h);
    h_start_ready(h);
    pid_t pid = wait_slot0_ready(h, 0, 5000);
    for (int death = 1; death <= 5; death++) {
        h_conn_t c;
        h_conn_open(&c, AF_INET, h->port);
        h_conn_send_str(&c, "GET /echo/crash HTTP/1.1\r\nHost: x\r\n\r\n");
        h_resp_t r;
        int rc = h_conn_read(&c, &r, 5000);
        h_resp_free(&r);
        h_conn_close(&c);
        H_CHECK(rc == -EPIPE, "crash %d: the client got %s instead of EOF", death,
                rc == 0 ? "a response" : strerror(-rc));
        long long died = h_now_ms();
        H_CHECK(h_wait_pid_gone(pid, 3000, NULL), "crash %d: worker %d still runs", death, (int)pid);
        if (death == 5)
            break;
        pid = wait_slot0_ready(h, pid, 5000);
        long long took = h_now_ms() - died, min = 100LL << (death - 1);
        H_CHECK(took >= min * 9 / 10, "crash %d: replaced after %lld ms, backoff should be %lld ms", death,
                took, min);
    }

    /* Fifth death: a crash loop, waiting 1600 ms before the next start. */
    json_t *st = NULL;
    const json_t *w = NULL;
    for (long long deadline = h_now_ms() + h_ms(1000);; h_sleep_ms(10)) {
        json_decref(st);
        st = h_status(h);
        w = st ? h_status_slot(st, 0) : NULL;
        if (json_is_true(json_object_get(w, "crashloop")) || h_now_ms() >= deadline)
            break;
    }
    char got[512];
    char *dump = w ? json_dumps(w, JSON_COMPACT) : NULL;
    snprintf(got, sizeof(got), "%s", dump ? dump : "(no slot 0)");
    free(dump);
    const char *state = json_string_value(json_object_get(w, "state"));
    const char *last = json_string_value(json_object_get(w, "last_exit"));
    bool ok = json_is_true(json_object_get(w, "crashloop")) && state && strcmp(state, "backoff") == 0 &&
              json_integer_value(json_object_get(w, "pid")) == 0 &&
              json_integer_value(json_object_get(w, "restarts")) == 4 &&
              json_is_integer(json_object_get(w, "next_start_ms")) && last && strstr(last, "signal 6");
    json_decref(st);
    H_CHECK(ok, "after 5 crashes slot 0 should be in crash-loop backoff (pid 0, 4 restarts, signal 6): %s",
            got);
    char *line = h_log_line(h, (const char *const[]){"crash loop", NULL});
    H_CHECK(line != NULL, "the log does not report the crash loop");
    free(line);
    h_cmd_t r;
    int code = h_run(&r, 15000, H_MOLTCTL, "-s", h->sock_path, "status", NULL);
    bool shown = strstr(r.out, "CRASH LOOP") != NULL;
    if (!shown)
        fprintf(stderr, "moltctl status printed:\n%s%s", r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(code == 0 && shown, "moltctl status (exit %d) does not show the crash loop", code);
}
END_TEST

/* moltd is gone with exit code 0, and so are its workers and its control socket. */
static void check_stopped_cleanly(h_molt_t *h, const pid_t *workers, size_t n, const char *how)
{
    H_CHECK(h_wait_exit(h, 10000), "moltd still runs 10 s after %s", how);
    H_CHECK(h_exit_code(h) == 0, "after %s moltd ended with wait status 0x%x, expected exit code 0", how,
            (unsigned)h->wstatus);
    for (size_t i = 0; i < n; i++)
        H_CHECK(h_wait_pid_gone(workers[i], 2000, NULL), "after %s worker %d is still running", how,
                (int)workers[i]);
    check_no_group_procs(how);
    H_CHECK(!h_file_exists(h->sock_path), "after %s the control socket %s is still there", how, h->sock_path);
}

static void stop_with_moltctl(bool fast)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    pid_t pids[8];
    status_pids(h, pids, 8, 2);
    h_cmd_t r;
    int code = fast ? h_run(&r, 20000, H_MOLTCTL, "-s", h->sock_path, "stop", "--fast", NULL)
                    : h_run(&r, 20000, H_MOLTCTL, "-s", h->sock_path, "stop", NULL);
    bool said = strstr(r.out, fast ? "stopping (fast)" : "stopping (graceful)") && strstr(r.out, "stopped");
    if (code != 0 || !said)
        fprintf(stderr, "moltctl stop%s printed: %s%s", fast ? " --fast" : "", r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(code == 0, "moltctl stop%s exited with %d", fast ? " --fast" : "", code);
    H_CHECK(said, "moltctl stop%s did not report the stop", fast ? " --fast" : "");
    check_stopped_cleanly(h, pids, 2, fast ? "moltctl stop --fast" : "moltctl stop");
}

START_TEST(test_stop_moltctl)
{
    stop_with_moltctl(false);
}
END_TEST

START_TEST(test_stop_moltctl_fast)
{
    stop_with_moltctl(true);
}
END_TEST

START_TEST(test_stop_sigterm_inflight)
{
    h_molt_t *h = h_new();
    h_add_echo(h);
    h_start_ready(h);
    pid_t pids[8];
    status_pids(h, pids, 8, 2);
    /* A slow client: half of its body before SIGTERM, the rest after. */
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_conn_send_str(&c, "POST /echo/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345");
    h_sleep_ms(200);
    H_CHECK(kill(h->pid, SIGTERM) == 0, "kill(moltd): %s", strerror(errno));
    h_sleep_ms(300); /* well past idle_grace_ms (50): the request is not idle */
    H_CHECK(!h_reap(h), "moltd exited while a request was in flight");
    h_conn_send_str(&c, "67890");
    h_resp_t r;
    read_status(&c, &r, 200, "the request in flight during a graceful stop");
    check_body(&r, "method=POST path=/echo/slow query= x-test= body=10\n1234567890", "the request in flight");
    const char *conn = h_resp_header(&r, "Connection");
    H_CHECK(conn && strcasecmp(conn, "close") == 0, "the last response of a draining worker has %s%s",
            conn ? "Connection: " : "no Connection header", conn ? conn : "");
    h_resp_free(&r);
    H_CHECK(h_conn_wait_eof(&c, 2000) == 1, "the draining worker kept the connection open");
    h_conn_close(&c);
    check_stopped_cleanly(h, pids, 2, "SIGTERM");
}
END_TEST

START_TEST(test_supervisor_killed)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    pid_t pids[8];
    status_pids(h, pids, 8, 2);
    H_CHECK(kill(h->pid, SIGKILL) == 0, "kill(moltd): %s", strerror(errno));
    H_CHECK(h_wait_exit(h, 5000), "moltd survived SIGKILL");
    for (size_t i = 0; i < 2; i++) {
        int ws;
        H_CHECK(h_wait_pid_gone(pids[i], 5000, &ws), "worker %d still runs 5 s after its supervisor died",
                (int)pids[i]);
        /* Orphans are ours (child subreaper), so we see how they ended. */
        if (ws != -1)
            H_CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 3,
                    "orphaned worker %d ended with wait status 0x%x, expected exit code 3 (MOLT_EXIT_ORPHAN)",
                    (int)pids[i], (unsigned)ws);
    }
    check_no_group_procs("after moltd was killed");
}
END_TEST

/* =============================================================================================
 * gendir: generations on disk (runtime_dir/gen-<uuid>, checked copies of the plugins)
 * ============================================================================================= */

#define SHA256_ZERO "0000000000000000000000000000000000000000000000000000000000000000"

/* How many gen-* entries h's runtime_dir holds; their names into names[] (up to max; names may be NULL). */
static size_t gen_dirs(const h_molt_t *h, char (*names)[64], size_t max)
{
    size_t n = 0;
    DIR *d = opendir(h->runtime_dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "gen-", 4) != 0)
            continue;
        if (names && n < max && strlen(e->d_name) < 64)
            memcpy(names[n], e->d_name, strlen(e->d_name) + 1);
        n++;
    }
    closedir(d);
    return n;
}

static bool has_gen(const h_molt_t *h, const char *id)
{
    char p[PATH_MAX + 128];
    snprintf(p, sizeof(p), "%s/gen-%s", h->runtime_dir, id);
    return h_file_exists(p);
}

static void active_gen_id(h_molt_t *h, char *id, size_t len)
{
    json_t *st = h_status(h);
    H_CHECK(st != NULL, "no status from moltd");
    const char *s = json_string_value(json_object_get(json_object_get(st, "generation"), "id"));
    snprintf(id, len, "%s", s ? s : "");
    json_decref(st);
    H_CHECK(id[0] != '\0', "status shows no active generation id");
}

static void stop_ok(h_molt_t *h)
{
    h_cmd_t r;
    int code = h_run(&r, 20000, H_MOLTCTL, "-s", h->sock_path, "stop", NULL);
    if (code != 0)
        fprintf(stderr, "moltctl stop printed: %s%s", r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(code == 0, "moltctl stop exited with %d", code);
    H_CHECK(h_wait_exit(h, 10000), "moltd still runs 10 s after moltctl stop");
    H_CHECK(h_exit_code(h) == 0, "moltd ended with wait status 0x%x after moltctl stop",
            (unsigned)h->wstatus);
}

/* Instance "hello" uses a copy of the built hello.so at h->dir/plugins/hello.so with `mode`. */
static void own_hello(h_molt_t *h, mode_t mode, char *path, size_t len)
{
    char dir[sizeof(h->dir) + 16];
    size_t n = 0;
    snprintf(dir, sizeof(dir), "%s/plugins", h->dir);
    H_CHECK(mkdir(dir, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", dir, strerror(errno));
    snprintf(path, len, "%s/hello.so", dir);
    char *so = h_read_file(MOLT_PLUGIN_DIR "/hello.so", &n);
    if (n > 0)
        h_write_file(path, so, n, mode);
    free(so);
    H_CHECK(n > 0, "cannot read %s", MOLT_PLUGIN_DIR "/hello.so");
    json_object_set_new(json_array_get(json_object_get(h->cfg, "plugins"), 0), "file", json_string(path));
}

/*
 * moltd refuses to start: exit code 1 within 10 s, the supervisor's
 * "cannot start:" line names every needle, and nothing is left running. With
 * no_workers, the refusal came before any worker was forked.
 */
static void check_refuses_start(h_molt_t *h, const char *const *needles, bool no_workers, const char *what)
{
    h_start(h);
    H_CHECK(h_wait_exit(h, 10000), "moltd with %s still runs after 10 s", what);
    H_CHECK(h_exit_code(h) == 1, "moltd with %s: wait status 0x%x, expected exit code 1", what,
            (unsigned)h->wstatus);
    char sup[32];
    snprintf(sup, sizeof(sup), "sup[%d]", (int)h->pid);
    char *line = h_log_line(h, (const char *const[]){sup, "cannot start:", NULL});
    H_CHECK(line != NULL, "moltd with %s: no 'cannot start:' line from the supervisor", what);
    const char *missing = NULL;
    for (size_t i = 0; needles[i] && !missing; i++)
        if (!strstr(line, needles[i]))
            missing = needles[i];
    if (missing)
        fprintf(stderr, "the supervisor said: %s\n", line);
    free(line);
    H_CHECK(!missing, "moltd with %s: the 'cannot start' line does not mention '%s'", what, missing);
    if (no_workers) {
        line = h_log_line(h, (const char *const[]){sup, "started, pid", NULL});
        free(line);
        H_CHECK(line == NULL, "moltd with %s forked a worker before refusing", what);
    }
    check_no_group_procs("after moltd refused to start");
    H_CHECK(!h_file_exists(h->sock_path), "moltd left its control socket %s behind", h->sock_path);
}

static void check_same_file(const char *copy, const char *orig)
{
    size_t na = 0, nb = 0;
    char *a = h_read_file(copy, &na), *b = h_read_file(orig, &nb);
    bool same = na > 0 && na == nb && memcmp(a, b, na) == 0;
    free(a);
    free(b);
    H_CHECK(same, "%s (%zu bytes) is not a copy of %s (%zu bytes)", copy, na, orig, nb);
}

/* One gen-<uuid> (0700) named after the active generation, a 0500 copy of
 * each plugin file in it, and workers that map the copies, not the originals. */
START_TEST(test_gendir_layout)
{
    h_molt_t *h = h_new();
    h_add_echo(h);
    h_start_ready(h);
    char id[64], names[4][64];
    active_gen_id(h, id, sizeof(id));
    size_t n = gen_dirs(h, names, 4);
    H_CHECK(n == 1, "runtime_dir %s holds %zu gen-* entries, expected 1", h->runtime_dir, n);
    char want[80];
    snprintf(want, sizeof(want), "gen-%s", id);
    H_CHECK(strcmp(names[0], want) == 0, "the generation directory is %s, expected %s", names[0], want);
    char dir[PATH_MAX + 80];
    snprintf(dir, sizeof(dir), "%s/%s", h->runtime_dir, names[0]);
    struct stat st;
    H_CHECK(lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700,
            "%s: mode 0%o, expected a directory with mode 0700", dir, (unsigned)st.st_mode);

    static const char *const files[][2] = {{"hello.so", MOLT_PLUGIN_DIR "/hello.so"},
                                           {"tp_echo.so", MOLT_TEST_PLUGIN_DIR "/tp_echo.so"}};
    char copies[2][PATH_MAX], origs[2][PATH_MAX];
    for (size_t i = 0; i < 2; i++) {
        char copy[PATH_MAX + 160];
        snprintf(copy, sizeof(copy), "%s/%s", dir, files[i][0]);
        H_CHECK(lstat(copy, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0500,
                "%s: mode 0%o, expected a regular file with mode 0500", copy, (unsigned)st.st_mode);
        check_same_file(copy, files[i][1]);
        H_CHECK(realpath(copy, copies[i]) && realpath(files[i][1], origs[i]), "realpath: %s",
                strerror(errno));
    }
    DIR *d = opendir(dir);
    H_CHECK(d != NULL, "opendir(%s): %s", dir, strerror(errno));
    size_t count = 0;
    for (struct dirent *e; (e = readdir(d));)
        count += e->d_name[0] != '.';
    closedir(d);
    H_CHECK(count == 2, "%s holds %zu entries, expected the 2 plugin files", dir, count);
    char *line = h_log_line(h, (const char *const[]){"plugins copied to", dir, "(2 files,", NULL});
    H_CHECK(line != NULL, "the log has no 'plugins copied to %s (2 files, ...)' line", dir);
    free(line);

    pid_t pids[8];
    status_pids(h, pids, 8, 2);
    for (size_t w = 0; w < 2; w++) {
        char maps_path[64];
        snprintf(maps_path, sizeof(maps_path), "/proc/%d/maps", (int)pids[w]);
        char *maps = h_read_file(maps_path, NULL);
        const char *missing = NULL, *orig = NULL;
        for (size_t i = 0; i < 2; i++) {
            if (!strstr(maps, copies[i]))
                missing = copies[i];
            if (strstr(maps, origs[i]))
                orig = origs[i];
        }
        free(maps);
        H_CHECK(!missing, "worker %d does not map %s", (int)pids[w], missing);
        H_CHECK(!orig, "worker %d maps the original %s, not its generation's copy", (int)pids[w], orig);
    }
    curl_hello(h, "served from the generation's copies");
}
END_TEST

START_TEST(test_gendir_refuse_mode)
{
    h_molt_t *h = h_new();
    char path[PATH_MAX];
    own_hello(h, 0666, path, sizeof(path));
    const char *const needles[] = {"plugins[0].file", path, "is writable by group or others (mode 0666)",
                                   "refusing to load it", NULL};
    check_fails(h, needles, "a world-writable plugin file");
    H_CHECK(!h_file_exists(h->runtime_dir), "moltd -t created the runtime_dir %s", h->runtime_dir);
    check_refuses_start(h, needles, true, "a world-writable plugin file");
    H_CHECK(gen_dirs(h, NULL, 0) == 0, "a refused start left a generation directory in %s", h->runtime_dir);
}
END_TEST

START_TEST(test_gendir_sha256_pin)
{
    h_molt_t *h = h_new();
    h_cmd_t r;
    int code = h_run(&r, 10000, "sha256sum", MOLT_PLUGIN_DIR "/hello.so", NULL);
    char actual[65] = "";
    if (code == 0 && strlen(r.out) >= 64)
        snprintf(actual, sizeof(actual), "%.64s", r.out);
    h_cmd_free(&r);
    H_CHECK(strlen(actual) == 64, "sha256sum %s exited with %d", MOLT_PLUGIN_DIR "/hello.so", code);

    json_t *hello = json_array_get(json_object_get(h->cfg, "plugins"), 0);
    json_object_set_new(hello, "sha256", json_string(SHA256_ZERO));
    char has[128];
    snprintf(has, sizeof(has), "has sha256 %s", actual);
    const char *const needles[] = {"plugins[0].sha256", "hello.so", has, "the config pins " SHA256_ZERO,
                                   NULL};
    check_fails(h, needles, "a sha256 pin that does not match");
    check_refuses_start(h, needles, true, "a sha256 pin that does not match");
    H_CHECK(gen_dirs(h, NULL, 0) == 0, "a refused start left a generation directory in %s", h->runtime_dir);

    /* The right pin: moltd -t agrees, and moltd starts and serves. */
    json_object_set_new(hello, "sha256", json_string(actual));
    h_write_config(h);
    code = h_run(&r, 20000, H_MOLTD, "-c", h->config_path, "-t", NULL);
    if (code != 0)
        fprintf(stderr, "moltd -t: %s%s", r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(code == 0, "moltd -t with the right sha256 pin exited with %d", code);
    h_start_ready(h);
    curl_hello(h, "with a matching sha256 pin");
}
END_TEST

/*
 * Which directories stay: after each run the newest keep_generations (the
 * last run's included); a failed start neither adds one nor prunes any; with
 * keep_generations 1 the leftovers go as soon as the new generation serves.
 */
START_TEST(test_gendir_keep)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "workers", json_integer(1));
    h_cfg_set(h, "reload.keep_generations", json_integer(2));
    char ids[4][64];
    for (int run = 0; run < 3; run++) {
        h_start_ready(h);
        active_gen_id(h, ids[run], sizeof(ids[run]));
        size_t want = run < 2 ? (size_t)run + 1 : 2, n = gen_dirs(h, NULL, 0);
        H_CHECK(n == want && has_gen(h, ids[run]),
                "run %d (keep_generations 2): %zu generation directories while serving, expected %zu with "
                "gen-%s among them",
                run + 1, n, want, ids[run]);
        stop_ok(h);
        n = gen_dirs(h, NULL, 0);
        H_CHECK(n == want && has_gen(h, ids[run]),
                "run %d (keep_generations 2): %zu generation directories after the stop, expected %zu with "
                "gen-%s among them",
                run + 1, n, want, ids[run]);
    }
    H_CHECK(!has_gen(h, ids[0]) && has_gen(h, ids[1]) && has_gen(h, ids[2]),
            "after 3 runs with keep_generations 2 the first run's directory should be the one gone");

    /* Refused before any copy, then failed after the copy (init): the
     * directories on disk stay exactly as they were. */
    char path[PATH_MAX];
    json_t *plugins = json_object_get(h->cfg, "plugins");
    own_hello(h, 0664, path, sizeof(path));
    check_refuses_start(h, (const char *const[]){path, "writable by group or others", NULL}, true,
                        "a group-writable plugin file");
    json_object_set_new(json_array_get(plugins, 0), "file", json_string("hello.so"));
    h_add_plugin(h, "db", "tp_fail_init.so", NULL);
    check_refuses_start(h, (const char *const[]){"plugin db ", "init failed", NULL}, false,
                        "a plugin whose init fails");
    json_array_remove(plugins, 1);
    size_t n = gen_dirs(h, NULL, 0);
    H_CHECK(n == 2 && has_gen(h, ids[1]) && has_gen(h, ids[2]),
            "failed starts changed the generation directories: %zu now, expected gen-%s and gen-%s", n,
            ids[1], ids[2]);

    h_cfg_set(h, "reload.keep_generations", json_integer(1));
    h_start_ready(h);
    active_gen_id(h, ids[3], sizeof(ids[3]));
    n = gen_dirs(h, NULL, 0);
    H_CHECK(n == 1 && has_gen(h, ids[3]),
            "keep_generations 1: %zu generation directories while serving, expected only gen-%s", n, ids[3]);
    stop_ok(h);
    n = gen_dirs(h, NULL, 0);
    H_CHECK(n == 1 && has_gen(h, ids[3]),
            "keep_generations 1: %zu generation directories after moltctl stop, expected only gen-%s", n,
            ids[3]);
}
END_TEST

/* A runtime_dir on a noexec mount: a tmpfs mounted in this test's own mount
 * namespace (Check forks each test), which moltd inherits. */
START_TEST(test_gendir_noexec)
{
    h_molt_t *h = h_new();
    char mnt[PATH_MAX], rt[PATH_MAX + 8];
    snprintf(mnt, sizeof(mnt), "%s/noexec", h->dir);
    H_CHECK(mkdir(mnt, 0700) == 0, "mkdir %s: %s", mnt, strerror(errno));
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tmpfs", mnt, "tmpfs", MS_NOEXEC | MS_NOSUID | MS_NODEV, "mode=0700") < 0) {
        printf("test_gendir_noexec: skipped: cannot mount a noexec tmpfs in a private mount namespace: %s\n",
               strerror(errno));
        return;
    }
    snprintf(rt, sizeof(rt), "%s/run", mnt);
    h_cfg_set(h, "runtime_dir", json_string(rt));
    char what[PATH_MAX + 64];
    snprintf(what, sizeof(what), "runtime_dir %s is on a noexec mount", rt);
    const char *const needles[] = {what, "could not be loaded", NULL};
    check_fails(h, needles, "runtime_dir on a noexec mount");
    H_CHECK(!h_file_exists(rt), "moltd -t created the runtime_dir %s", rt);
    check_refuses_start(h, needles, true, "runtime_dir on a noexec mount");
    umount2(mnt, MNT_DETACH);
}
END_TEST

/* ---- suites -------------------------------------------------------------------------------- */

static Suite *serve_suite(void)
{
    Suite *s = suite_create("integ_serve");
    TCase *tc = h_tcase("http", 60);
    tcase_add_test(tc, test_hello_curl);
    tcase_add_test(tc, test_keepalive);
    tcase_add_test(tc, test_pipelining);
    tcase_add_test(tc, test_http10);
    tcase_add_test(tc, test_head);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_ipv6);
    suite_add_tcase(s, tc);
    tc = h_tcase("echo", 60);
    tcase_add_test(tc, test_echo_chunked_curl);
    tcase_add_test(tc, test_echo_chunked_raw);
    tcase_add_test(tc, test_echo_fail);
    tcase_add_test(tc, test_echo_query_header);
    suite_add_tcase(s, tc);
    return s;
}

/* Every control request line gets a reply, also when the error text would
 * quote bytes that are not UTF-8 (found by fuzz/fuzz_ctl.c). */
START_TEST(test_ctl_bad_bytes_answered)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    char longcmd[1024] = "{\"cmd\":\"x";
    for (int i = 0; i < 300; i++)
        strcat(longcmd, "\xc3\xa9"); /* é: cut in the middle by the 512-byte error text */
    strcat(longcmd, "\"}");
    const char *lines[] = {"{\":\"\",\\\xdd\x99\x9es:tut\"re}", longcmd};
    for (size_t i = 0; i < 2; i++) {
        json_t *o = h_ctl(h, lines[i]);
        H_CHECK(o && json_is_false(json_object_get(o, "ok")) && json_is_string(json_object_get(o, "error")),
                "request %zu got no error reply", i);
        json_decref(o);
    }
    json_t *st = h_status(h);
    H_CHECK(st != NULL, "moltd does not answer status after the bad requests");
    json_decref(st);
}
END_TEST

/* SIGUSR2 upgrades moltd in place: it re-executes its binary (here the
 * build's moltd again, so the version stays) in the same process, and the
 * workers serve on; integ_upgrade has the rest. */
START_TEST(test_sigusr2_upgrades)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    pid_t before[2], after[2];
    json_t *st = h_status(h);
    H_CHECK(st && h_status_pids(st, before, 2) == 2, "no 2 workers in status");
    char version[64], want[160];
    snprintf(version, sizeof(version), "%s", json_string_value(json_object_get(st, "version")) ?: "?");
    json_decref(st);
    H_CHECK(kill(h->pid, SIGUSR2) == 0, "kill(SIGUSR2): %s", strerror(errno));
    snprintf(want, sizeof(want), "upgrade: moltd %s -> %s", version, version);
    const char *const needle[] = {want, NULL};
    char *line = NULL;
    for (long long end = h_now_ms() + h_ms(15000); !(line = h_log_line(h, needle)) && h_now_ms() < end;)
        h_sleep_ms(20);
    H_CHECK(line != NULL, "no log line '%s' within 15 s of SIGUSR2", want);
    free(line);
    json_int_t upgrades = 0;
    for (long long end = h_now_ms() + h_ms(5000); upgrades != 1 && h_now_ms() < end; h_sleep_ms(20)) {
        st = h_status(h);
        upgrades = st ? json_integer_value(json_object_get(st, "upgrades")) : 0;
        json_decref(st);
    }
    H_CHECK(upgrades == 1, "status.upgrades is %lld after SIGUSR2, expected 1", (long long)upgrades);
    H_CHECK(!h_reap(h), "moltd exited after SIGUSR2");
    st = h_status(h);
    H_CHECK(st && json_integer_value(json_object_get(st, "pid")) == h->pid,
            "moltd's pid changed after SIGUSR2");
    H_CHECK(h_status_pids(st, after, 2) == 2, "no 2 workers in status after SIGUSR2");
    json_decref(st);
    H_CHECK(before[0] == after[0] && before[1] == after[1],
            "workers changed after SIGUSR2: %d %d, were %d %d", (int)after[0], (int)after[1], (int)before[0],
            (int)before[1]);
    curl_hello(h, "after SIGUSR2");
}
END_TEST

static Suite *ops_suite(void)
{
    Suite *s = suite_create("integ_ops");
    TCase *tc = h_tcase("moltctl", 60);
    tcase_add_test(tc, test_moltctl_status_text);
    tcase_add_test(tc, test_moltctl_status_json);
    tcase_add_test(tc, test_moltctl_unreachable);
    tcase_add_test(tc, test_ctl_bad_bytes_answered);
    tcase_add_test(tc, test_sigusr2_upgrades);
    suite_add_tcase(s, tc);
    tc = h_tcase("load", 90);
    tcase_add_test(tc, test_wrk);
    suite_add_tcase(s, tc);
    return s;
}

static Suite *startup_suite(void)
{
    Suite *s = suite_create("integ_startup");
    int nbroken = (int)(sizeof(broken) / sizeof(broken[0]));
    TCase *tc = h_tcase("check", 60);
    tcase_add_test(tc, test_check_good);
    tcase_add_test(tc, test_check_unknown_key);
    tcase_add_test(tc, test_check_missing_file);
    tcase_add_loop_test(tc, test_check_broken, 0, nbroken);
    suite_add_tcase(s, tc);
    tc = h_tcase("refuse", 60);
    tcase_add_loop_test(tc, test_refuse_start, 0, nbroken);
    suite_add_tcase(s, tc);
    return s;
}

static Suite *lifecycle_suite(void)
{
    Suite *s = suite_create("integ_lifecycle");
    TCase *tc = h_tcase("respawn", 60);
    tcase_add_test(tc, test_worker_sigkill_replaced);
    tcase_add_test(tc, test_crash_respawn_backoff);
    suite_add_tcase(s, tc);
    tc = h_tcase("stop", 60);
    tcase_add_test(tc, test_stop_moltctl);
    tcase_add_test(tc, test_stop_moltctl_fast);
    tcase_add_test(tc, test_stop_sigterm_inflight);
    tcase_add_test(tc, test_supervisor_killed);
    suite_add_tcase(s, tc);
    return s;
}

static Suite *gendir_suite(void)
{
    Suite *s = suite_create("integ_gendir");
    TCase *tc = h_tcase("layout", 60);
    tcase_add_test(tc, test_gendir_layout);
    tcase_add_test(tc, test_gendir_noexec);
    suite_add_tcase(s, tc);
    tc = h_tcase("refuse", 60);
    tcase_add_test(tc, test_gendir_refuse_mode);
    tcase_add_test(tc, test_gendir_sha256_pin);
    suite_add_tcase(s, tc);
    tc = h_tcase("keep", 120);
    tcase_add_test(tc, test_gendir_keep);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    static const struct {
        const char *name;
        Suite *(*make)(void);
    } suites[] = {
        {"serve", serve_suite},         {"ops", ops_suite},       {"startup", startup_suite},
        {"lifecycle", lifecycle_suite}, {"gendir", gendir_suite},
    };
    SRunner *sr = srunner_create(NULL);
    for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
        if (strcmp(MOLT_IT_SUITE, "all") == 0 || strcmp(MOLT_IT_SUITE, suites[i].name) == 0)
            srunner_add_suite(sr, suites[i].make());
    srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose lists every test */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
