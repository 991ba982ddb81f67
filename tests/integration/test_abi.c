/*
 * Integration theme "abi": the plugin ABI seen from outside, with the real
 * moltd, real workers and the test plugins of tests/plugins/tp_abi.c.
 *
 *   order        callbacks run in priority order (config overrides), ties in
 *                config order, on every transaction hook
 *   flow         MOLT_DONE and MOLT_ERROR from a request-phase callback
 *   coordination per-transaction disable / enable / priority / listing, for
 *                one transaction only
 *   context      the reserved per-transaction context is zeroed between
 *                transactions; per-transaction pointers are released
 *   session      session hooks, ids and peers
 *   deps         dependency order at init, reverse at fini, published APIs, and
 *                the generations that must be refused (missing, too old, cycle,
 *                singleton twice, bad hook id, api too new)
 *
 * tp_order reports what it saw in response headers (see tp_abi.c); the
 * dependency plugins append "init NAME" / "start NAME" / "stop NAME" /
 * "fini NAME" to a file.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>

#include "tests/integration/harness.h"

#define ECHO_BODY "method=GET path=/echo/abi query= x-test= body=0\n"
#define NO_PRIO INT_MIN

/* ---- helpers ------------------------------------------------------------------------------- */

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

/* Every value of header `name`, in the order received, joined with ','. */
static const char *hdr_all(const h_resp_t *r, const char *name, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < r->nhdrs; i++) {
        if (!r->hdrs[i].name || strcasecmp(r->hdrs[i].name, name) != 0)
            continue;
        off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "%s%s", off ? "," : "",
                                r->hdrs[i].value ? r->hdrs[i].value : "");
    }
    return buf;
}

/* The X-Trace values that start with `prefix` (NULL: all), joined with ','. */
static const char *traces(const h_resp_t *r, const char *prefix, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < r->nhdrs; i++) {
        const char *v = r->hdrs[i].value ? r->hdrs[i].value : "";
        if (!r->hdrs[i].name || strcasecmp(r->hdrs[i].name, "X-Trace") != 0)
            continue;
        if (prefix && strncmp(v, prefix, strlen(prefix)) != 0)
            continue;
        off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "%s%s", off ? "," : "", v);
    }
    return buf;
}

static void check_traces(const h_resp_t *r, const char *prefix, const char *expect, const char *what)
{
    char got[2048];
    traces(r, prefix, got, sizeof(got));
    H_CHECK(strcmp(got, expect) == 0, "%s: X-Trace%s%s is\n  '%s'\nexpected\n  '%s'", what,
            prefix ? " starting with " : "", prefix ? prefix : "", got, expect);
}

static void hdr_is(const h_resp_t *r, const char *name, const char *expect, const char *what)
{
    char got[2048];
    hdr_all(r, name, got, sizeof(got));
    H_CHECK(h_resp_header(r, name) && strcmp(got, expect) == 0, "%s: %s is '%s'%s, expected '%s'", what, name,
            got, h_resp_header(r, name) ? "" : " (absent)", expect);
}

static void hdr_absent(const h_resp_t *r, const char *name, const char *what)
{
    const char *v = h_resp_header(r, name);
    H_CHECK(v == NULL, "%s: %s is '%s', expected no such header", what, name, v ? v : "");
}

static long long hdr_num(const h_resp_t *r, const char *name, const char *what)
{
    const char *v = h_resp_header(r, name);
    char *end = NULL;
    long long n = v ? strtoll(v, &end, 10) : -1;
    H_CHECK(v && *v && end && *end == '\0', "%s: %s is '%s', expected a number", what, name, v ? v : "(absent)");
    return n;
}

/* A fresh moltd config with `workers` workers and the echo handler on /echo/. */
static h_molt_t *abi_new(int workers)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "workers", json_integer(workers));
    h_add_echo(h);
    return h;
}

/* The last plugin instance of h's config. */
static json_t *last_plugin(h_molt_t *h)
{
    json_t *pl = json_object_get(h->cfg, "plugins");
    return json_array_get(pl, json_array_size(pl) - 1);
}

/* A tp_order instance tagged with its own name; prio NO_PRIO: the descriptor's (0). */
static void add_order(h_molt_t *h, const char *name, int prio, bool control)
{
    h_add_plugin(h, name, "tp_order.so", json_pack("{s:s,s:b}", "tag", name, "control", control));
    if (prio != NO_PRIO)
        json_object_set_new(last_plugin(h), "priority", json_integer(prio));
}

/* GET /echo/abi on c with extra header lines ("X-A: 1\r\n"...); expects `status`. */
static void get(h_conn_t *c, const char *extra, h_resp_t *r, int status, const char *what)
{
    char req[1024];
    snprintf(req, sizeof(req), "GET /echo/abi HTTP/1.1\r\nHost: x\r\n%s\r\n", extra ? extra : "");
    h_conn_send_str(c, req);
    read_status(c, r, status, what);
}

/* The same on a connection of its own. */
static void get_new(h_molt_t *h, const char *extra, h_resp_t *r, int status, const char *what)
{
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    get(&c, extra, r, status, what);
    h_conn_close(&c);
}

/* Worker pids by slot; every slot must have one. */
static size_t worker_pids(h_molt_t *h, pid_t *pids, size_t max)
{
    json_t *st = h_status(h);
    H_CHECK(st != NULL, "no status from moltd");
    size_t n = h_status_pids(st, pids, max);
    json_decref(st);
    for (size_t i = 0; i < n; i++)
        H_CHECK(pids[i] > 0, "slot %zu has no process", i);
    return n;
}

/* A whole file, NUL-terminated, malloc'd; "" if it does not exist. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return strdup("");
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    H_CHECK(m != NULL, "open_memstream: %s", strerror(errno));
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(f);
    fclose(m);
    return buf;
}

static void check_file(const char *path, const char *expect, const char *what)
{
    char *got = slurp(path);
    bool same = strcmp(got, expect) == 0;
    if (!same)
        fprintf(stderr, "%s: %s holds:\n%s---- expected:\n%s----\n", what, path, got, expect);
    free(got);
    H_CHECK(same, "%s: %s does not hold the expected lines (both above)", what, path);
}

/* =============================================================================================
 * order
 * ============================================================================================= */

START_TEST(test_order_priority)
{
    h_molt_t *h = abi_new(2);
    add_order(h, "a", 10, false);
    add_order(h, "b", NO_PRIO, false);
    add_order(h, "c", -5, false);
    h_start_ready(h);
    h_resp_t r;
    get_new(h, "X-List: a\r\n", &r, 200, "a (priority 10), b (0), c (-5)");
    check_body(&r, ECHO_BODY, "the handler after the hooks");
    check_traces(&r, NULL,
                 "txn_start:c,txn_start:b,txn_start:a,"
                 "request_headers:c,request_headers:b,request_headers:a,"
                 "response_headers:c,response_headers:b,response_headers:a",
                 "a (priority 10), b (0), c (-5)");
    hdr_is(&r, "X-Hooks", "c:request_headers:-5:1,b:request_headers:0:1,a:request_headers:10:1",
           "molt_txn_hook_list(request_headers)");
    hdr_is(&r, "X-Hooks-Resp", "c:resp_trace:-5:1,b:resp_trace:0:1,a:resp_trace:10:1",
           "molt_txn_hook_list(response_headers)");
    /* listed with room for 16, and counted with out = NULL */
    hdr_is(&r, "X-Hooks-N", "3 3,3 3", "molt_txn_hook_list's count");
    h_resp_free(&r);
}
END_TEST

START_TEST(test_order_ties)
{
    /* Config order c, a, b, d (d's "priority": 0 equals the default) and e (-1): e
     * first, then the ties in config order, not by name. */
    h_molt_t *h = abi_new(2);
    add_order(h, "c", NO_PRIO, false);
    add_order(h, "a", NO_PRIO, false);
    add_order(h, "b", NO_PRIO, false);
    add_order(h, "d", 0, false);
    add_order(h, "e", -1, false);
    h_start_ready(h);
    h_resp_t r;
    for (int i = 0; i < 3; i++) {
        get_new(h, NULL, &r, 200, "ties");
        check_body(&r, ECHO_BODY, "ties");
        check_traces(&r, NULL,
                     "txn_start:e,txn_start:c,txn_start:a,txn_start:b,txn_start:d,"
                     "request_headers:e,request_headers:c,request_headers:a,request_headers:b,request_headers:d,"
                     "response_headers:e,response_headers:c,response_headers:a,response_headers:b,"
                     "response_headers:d",
                     "c, a, b, d (all 0, d set in the config) and e (-1)");
        h_resp_free(&r);
    }
}
END_TEST

/* =============================================================================================
 * flow: MOLT_DONE and MOLT_ERROR in the request phase
 * ============================================================================================= */

START_TEST(test_done)
{
    h_molt_t *h = abi_new(2);
    add_order(h, "a", NO_PRIO, false);
    add_order(h, "b", NO_PRIO, false);
    add_order(h, "c", NO_PRIO, false);
    h_start_ready(h);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_resp_t r;
    get(&c, NULL, &r, 200, "before MOLT_DONE");
    long long ends = hdr_num(&r, "X-Ends-c", "before MOLT_DONE");
    h_resp_free(&r);

    get(&c, "X-Done: b\r\n", &r, 403, "b returns MOLT_DONE at request_headers");
    check_body(&r, "stopped by b", "b returns MOLT_DONE at request_headers");
    check_traces(&r, NULL,
                 "txn_start:a,txn_start:b,txn_start:c,request_headers:a,request_headers:b,"
                 "response_headers:a,response_headers:b,response_headers:c",
                 "MOLT_DONE from b: c's request_headers skipped, every response_headers run");
    h_resp_free(&r);

    /* txn_end ran for the finished transaction too; then everything is back. */
    get(&c, NULL, &r, 200, "after MOLT_DONE");
    check_body(&r, ECHO_BODY, "after MOLT_DONE");
    H_CHECK(hdr_num(&r, "X-Ends-c", "after MOLT_DONE") == ends + 2,
            "c's txn_end did not run for the transaction finished by MOLT_DONE (X-Ends-c %s, was %lld)",
            h_resp_header(&r, "X-Ends-c"), ends);
    check_traces(&r, "request_headers:", "request_headers:a,request_headers:b,request_headers:c",
                 "after MOLT_DONE");
    h_resp_free(&r);
    h_conn_close(&c);
}
END_TEST

START_TEST(test_error)
{
    h_molt_t *h = abi_new(2);
    add_order(h, "a", NO_PRIO, false);
    add_order(h, "b", NO_PRIO, false);
    add_order(h, "c", NO_PRIO, false);
    h_start_ready(h);
    pid_t before[8];
    size_t n = worker_pids(h, before, 8);
    H_CHECK(n == 2, "%zu worker slots, expected 2", n);
    h_resp_t r;
    for (int i = 0; i < 4; i++) { /* enough to reach both workers, most likely */
        get_new(h, "X-Fail: b\r\n", &r, 500, "b returns MOLT_ERROR at request_headers");
        H_CHECK(strstr(r.body, "method=") == NULL, "the handler ran after MOLT_ERROR: %s", r.body);
        check_traces(&r, "response_headers:", "response_headers:a,response_headers:b,response_headers:c",
                     "MOLT_ERROR from b: response_headers still run");
        h_resp_free(&r);
    }
    char *line = h_log_line(h, (const char *const[]){"plugin b", "request_headers", "500", NULL});
    H_CHECK(line != NULL, "the log does not name instance b and its request_headers callback");
    free(line);

    /* The workers are the same, never restarted, and serve normally. */
    h_sleep_ms(100);
    pid_t after[8];
    worker_pids(h, after, 8);
    json_t *st = h_status(h);
    long long restarts = 0;
    for (unsigned s = 0; s < 2; s++)
        restarts += json_integer_value(json_object_get(h_status_slot(st, s), "restarts"));
    json_decref(st);
    H_CHECK(after[0] == before[0] && after[1] == before[1] && restarts == 0,
            "MOLT_ERROR cost a worker: pids %d %d -> %d %d, %lld restarts", (int)before[0], (int)before[1],
            (int)after[0], (int)after[1], restarts);
    get_new(h, NULL, &r, 200, "after MOLT_ERROR");
    check_body(&r, ECHO_BODY, "after MOLT_ERROR");
    check_traces(&r, "request_headers:", "request_headers:a,request_headers:b,request_headers:c",
                 "after MOLT_ERROR");
    h_resp_free(&r);
}
END_TEST

/* =============================================================================================
 * coordination: one transaction only
 * ============================================================================================= */

#define ALL_TRACES                                                                                     \
    "txn_start:a,txn_start:b,txn_start:c,request_headers:a,request_headers:b,request_headers:c,"      \
    "response_headers:a,response_headers:b,response_headers:c"

START_TEST(test_disable_instance)
{
    h_molt_t *h = abi_new(2);
    add_order(h, "a", NO_PRIO, true); /* a applies X-Disable, X-Off, X-Prio at txn_start */
    add_order(h, "b", NO_PRIO, false);
    add_order(h, "c", NO_PRIO, false);
    h_start_ready(h);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_resp_t r;
    get(&c, NULL, &r, 200, "first request");
    check_traces(&r, NULL, ALL_TRACES, "first request");
    long long ends_a = hdr_num(&r, "X-Ends-a", "first request");
    long long ends_b = hdr_num(&r, "X-Ends-b", "first request");
    h_resp_free(&r);

    /* a disables b while txn_start runs: b's txn_start (not run yet) and all
     * of b's later callbacks are skipped, the handler is not affected. */
    get(&c, "X-Disable: b\r\n", &r, 200, "X-Disable: b");
    check_body(&r, ECHO_BODY, "X-Disable: b");
    check_traces(&r, NULL,
                 "txn_start:a,txn_start:c,request_headers:a,request_headers:c,response_headers:a,"
                 "response_headers:c",
                 "X-Disable: b");
    hdr_absent(&r, "X-Ctx-Zero-b", "X-Disable: b");
    hdr_absent(&r, "X-Ctl-Err-a", "X-Disable: b");
    h_resp_free(&r);

    /* The next transaction on the same connection has b again; b's txn_end
     * did not run for the disabled one. */
    get(&c, NULL, &r, 200, "after X-Disable: b");
    check_traces(&r, NULL, ALL_TRACES, "the request after X-Disable: b");
    H_CHECK(hdr_num(&r, "X-Ends-a", "after") == ends_a + 2 && hdr_num(&r, "X-Ends-b", "after") == ends_b + 1,
            "txn_end counts a %s (was %lld), b %s (was %lld): expected a +2, b +1 (disabled once)",
            h_resp_header(&r, "X-Ends-a"), ends_a, h_resp_header(&r, "X-Ends-b"), ends_b);
    /* txn_end ran for earlier transactions and tried to edit their responses:
     * the host refused every edit, and none reached a client. */
    hdr_is(&r, "X-Late-Accepted-a", "0", "response edits accepted at txn_end");
    hdr_absent(&r, "X-Late", "a txn_end edit");
    h_resp_free(&r);

    /* An instance that does not exist: MOLT_ERROR, nothing disabled. */
    get(&c, "X-Disable: nosuch\r\n", &r, 200, "X-Disable: nosuch");
    hdr_is(&r, "X-Ctl-Err-a", "disable", "molt_txn_disable_instance(\"nosuch\")");
    check_traces(&r, NULL, ALL_TRACES, "X-Disable: nosuch");
    h_resp_free(&r);
    h_conn_close(&c);
}
END_TEST

START_TEST(test_callback_off)
{
    h_molt_t *h = abi_new(2);
    add_order(h, "a", NO_PRIO, true);
    add_order(h, "b", NO_PRIO, false);
    add_order(h, "c", NO_PRIO, false);
    h_start_ready(h);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_resp_t r;
    /* one named callback (b's "resp_trace" on response_headers) */
    get(&c, "X-Off: b/resp_trace\r\n", &r, 200, "X-Off: b/resp_trace");
    check_traces(&r, NULL,
                 "txn_start:a,txn_start:b,txn_start:c,request_headers:a,request_headers:b,request_headers:c,"
                 "response_headers:a,response_headers:c",
                 "X-Off: b/resp_trace");
    hdr_is(&r, "X-Ctx-Zero-b", "yes", "X-Off: b/resp_trace (b's request_headers still runs)");
    h_resp_free(&r);
    get(&c, NULL, &r, 200, "after X-Off: b/resp_trace");
    check_traces(&r, NULL, ALL_TRACES, "the request after X-Off: b/resp_trace");
    h_resp_free(&r);

    /* a callback named after its hook (c's request_headers) */
    get(&c, "X-Off: c/request_headers\r\n", &r, 200, "X-Off: c/request_headers");
    check_traces(&r, NULL,
                 "txn_start:a,txn_start:b,txn_start:c,request_headers:a,request_headers:b,"
                 "response_headers:a,response_headers:b,response_headers:c",
                 "X-Off: c/request_headers");
    h_resp_free(&r);
    get(&c, NULL, &r, 200, "after X-Off: c/request_headers");
    check_traces(&r, NULL, ALL_TRACES, "the request after X-Off: c/request_headers");
    h_resp_free(&r);

    /* nothing matches: MOLT_ERROR; a priority out of range: MOLT_ERROR */
    get(&c, "X-Off: b/nosuch\r\nX-Prio: b=5000\r\n", &r, 200, "X-Off: b/nosuch, X-Prio: b=5000");
    hdr_is(&r, "X-Ctl-Err-a", "off,prio", "molt_txn_hook_enable(b, nosuch) and molt_txn_hook_priority(b, 5000)");
    check_traces(&r, NULL, ALL_TRACES, "X-Off: b/nosuch, X-Prio: b=5000");
    h_resp_free(&r);
    h_conn_close(&c);
}
END_TEST

START_TEST(test_priority_txn)
{
    h_molt_t *h = abi_new(2);
    add_order(h, "a", NO_PRIO, true);
    add_order(h, "b", NO_PRIO, false);
    add_order(h, "c", NO_PRIO, false);
    h_start_ready(h);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_resp_t r;
    get(&c, "X-Prio: c=-100\r\n", &r, 200, "X-Prio: c=-100");
    check_traces(&r, NULL,
                 "txn_start:a,txn_start:b,txn_start:c,request_headers:a,request_headers:b,request_headers:c,"
                 "response_headers:c,response_headers:a,response_headers:b",
                 "X-Prio: c=-100 (response_headers only)");
    h_resp_free(&r);
    get(&c, "X-Prio: a=100\r\n", &r, 200, "X-Prio: a=100");
    check_traces(&r, "response_headers:", "response_headers:b,response_headers:c,response_headers:a",
                 "X-Prio: a=100");
    h_resp_free(&r);
    get(&c, NULL, &r, 200, "after X-Prio");
    check_traces(&r, NULL, ALL_TRACES, "the request after X-Prio");
    h_resp_free(&r);
    h_conn_close(&c);
}
END_TEST

START_TEST(test_hook_list)
{
    h_molt_t *h = abi_new(2);
    add_order(h, "a", NO_PRIO, true);
    add_order(h, "b", NO_PRIO, false);
    add_order(h, "c", NO_PRIO, false);
    h_start_ready(h);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_resp_t r;
    get(&c, "X-List: a\r\n", &r, 200, "X-List: a");
    hdr_is(&r, "X-Hooks", "a:request_headers:0:1,b:request_headers:0:1,c:request_headers:0:1",
           "the configured request_headers callbacks");
    hdr_is(&r, "X-Hooks-Resp", "a:resp_trace:0:1,b:resp_trace:0:1,c:resp_trace:0:1",
           "the configured response_headers callbacks");
    h_resp_free(&r);

    get(&c, "X-List: a\r\nX-Disable: b\r\nX-Prio: c=-7\r\n", &r, 200, "X-List with X-Disable: b, X-Prio: c=-7");
    hdr_is(&r, "X-Hooks", "a:request_headers:0:1,b:request_headers:0:0,c:request_headers:0:1",
           "request_headers with b disabled");
    hdr_is(&r, "X-Hooks-Resp", "c:resp_trace:-7:1,a:resp_trace:0:1,b:resp_trace:0:0",
           "response_headers with b disabled and c at -7");
    check_traces(&r, "response_headers:", "response_headers:c,response_headers:a",
                 "X-Disable: b, X-Prio: c=-7");
    h_resp_free(&r);

    get(&c, "X-List: a\r\nX-Off: c/resp_trace\r\n", &r, 200, "X-List with X-Off: c/resp_trace");
    hdr_is(&r, "X-Hooks", "a:request_headers:0:1,b:request_headers:0:1,c:request_headers:0:1",
           "request_headers after the previous transaction's changes");
    hdr_is(&r, "X-Hooks-Resp", "a:resp_trace:0:1,b:resp_trace:0:1,c:resp_trace:0:0",
           "response_headers with c's resp_trace off");
    h_resp_free(&r);
    h_conn_close(&c);
}
END_TEST

/* =============================================================================================
 * context: zeroed per transaction; pointers released
 * ============================================================================================= */

START_TEST(test_ctx_and_ptr)
{
    h_molt_t *h = abi_new(2);
    add_order(h, "a", NO_PRIO, false);
    add_order(h, "b", NO_PRIO, false);
    h_start_ready(h);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    static const char *const tags[] = {"a", "b"};
    long long rel0[2] = {0}, ends0[2] = {0};
    /* Releases seen by request k: one per earlier request, plus one for the
     * pointer replaced by X-Ptr-Twice (request 2) as soon as it is replaced. */
    static const long long rel_delta[] = {0, 1, 3, 4};
    for (int k = 0; k < 4; k++) {
        char what[96], name[64];
        snprintf(what, sizeof(what), "request %d on one connection%s", k + 1, k == 2 ? " (X-Ptr-Twice)" : "");
        h_resp_t r;
        get(&c, k == 2 ? "X-Ptr-Twice: 1\r\n" : NULL, &r, 200, what);
        check_body(&r, ECHO_BODY, what);
        for (int t = 0; t < 2; t++) {
            snprintf(name, sizeof(name), "X-Ctx-Zero-%s", tags[t]);
            hdr_is(&r, name, "yes", what);
            snprintf(name, sizeof(name), "X-Ctx-Kept-%s", tags[t]);
            hdr_is(&r, name, "yes", what);
            snprintf(name, sizeof(name), "X-Ptr-%s", tags[t]);
            hdr_is(&r, name, "yes", what);
            snprintf(name, sizeof(name), "X-End-Noptr-%s", tags[t]);
            hdr_is(&r, name, "0", what);
            snprintf(name, sizeof(name), "X-Released-%s", tags[t]);
            long long rel = hdr_num(&r, name, what);
            snprintf(name, sizeof(name), "X-Ends-%s", tags[t]);
            long long ends = hdr_num(&r, name, what);
            if (k == 0) {
                rel0[t] = rel;
                ends0[t] = ends;
            }
            H_CHECK(rel == rel0[t] + rel_delta[k], "%s: X-Released-%s is %lld, expected %lld", what, tags[t],
                    rel, rel0[t] + rel_delta[k]);
            H_CHECK(ends == ends0[t] + k, "%s: X-Ends-%s is %lld, expected %lld", what, tags[t], ends,
                    ends0[t] + k);
        }
        h_resp_free(&r);
    }
    h_conn_close(&c);
}
END_TEST

/* =============================================================================================
 * session
 * ============================================================================================= */

static int local_port(const h_conn_t *c)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    H_CHECK(getsockname(c->fd, (struct sockaddr *)&sa, &len) == 0, "getsockname: %s", strerror(errno));
    return ntohs(sa.sin_port);
}

/* X-Session-a "ID 127.0.0.1:PORT" with PORT the client's; returns ID. */
static unsigned long long session_of(const h_resp_t *r, const h_conn_t *c, const char *what)
{
    const char *v = h_resp_header(r, "X-Session-a");
    char peer[64] = "", expect[64];
    unsigned long long id = 0;
    H_CHECK(v && sscanf(v, "%llu %63s", &id, peer) == 2, "%s: X-Session-a is '%s'", what, v ? v : "(absent)");
    snprintf(expect, sizeof(expect), "127.0.0.1:%d", local_port(c));
    H_CHECK(strcmp(peer, expect) == 0, "%s: the session's peer is '%s', expected '%s'", what, peer, expect);
    return id;
}

START_TEST(test_session)
{
    h_molt_t *h = abi_new(1); /* session ids count per worker */
    add_order(h, "a", NO_PRIO, false);
    h_start_ready(h);
    h_conn_t c1, c2;
    h_resp_t r;
    h_conn_open(&c1, AF_INET, h->port);
    get(&c1, NULL, &r, 200, "connection 1");
    unsigned long long id1 = session_of(&r, &c1, "connection 1");
    long long opens1 = hdr_num(&r, "X-Opens-a", "connection 1");
    long long closes1 = hdr_num(&r, "X-Closes-a", "connection 1");
    H_CHECK(opens1 >= 1, "connection 1: session_open ran %lld times", opens1);
    h_resp_free(&r);

    h_conn_open(&c2, AF_INET, h->port);
    get(&c2, NULL, &r, 200, "connection 2");
    unsigned long long id2 = session_of(&r, &c2, "connection 2");
    H_CHECK(id2 != id1, "two connections share the session id %llu", id1);
    H_CHECK(hdr_num(&r, "X-Opens-a", "connection 2") == opens1 + 1, "connection 2: X-Opens-a %s, expected %lld",
            h_resp_header(&r, "X-Opens-a"), opens1 + 1);
    h_resp_free(&r);

    /* Same connection, same session; no new session_open. */
    get(&c1, NULL, &r, 200, "connection 1 again");
    H_CHECK(session_of(&r, &c1, "connection 1 again") == id1, "the session id changed on one connection");
    H_CHECK(hdr_num(&r, "X-Opens-a", "connection 1 again") == opens1 + 1, "X-Opens-a %s, expected %lld",
            h_resp_header(&r, "X-Opens-a"), opens1 + 1);
    h_resp_free(&r);

    /* session_close runs when a connection goes. */
    h_conn_close(&c1);
    long long closes = closes1;
    for (long long deadline = h_now_ms() + h_ms(3000); h_now_ms() < deadline && closes < closes1 + 1;
         h_sleep_ms(50)) {
        get(&c2, NULL, &r, 200, "connection 2, waiting for session_close");
        closes = hdr_num(&r, "X-Closes-a", "connection 2");
        h_resp_free(&r);
    }
    H_CHECK(closes == closes1 + 1, "after closing connection 1, X-Closes-a is %lld, expected %lld", closes,
            closes1 + 1);
    h_conn_close(&c2);
}
END_TEST

/* =============================================================================================
 * deps: order, APIs, refusals
 * ============================================================================================= */

static void add_rec(h_molt_t *h, const char *name, const char *file, const char *log, json_t *extra)
{
    json_t *cfg = extra ? extra : json_object();
    json_object_set_new(cfg, "log", json_string(log));
    h_add_plugin(h, name, file, cfg);
}

START_TEST(test_deps_order)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "workers", json_integer(1)); /* one worker: one line per event */
    char log[PATH_MAX];
    snprintf(log, sizeof(log), "%s/order.log", h->dir);
    /* The consumer is listed first: dependency order, not config order. */
    add_rec(h, "consumer", "tp_consumer.so", log, NULL);
    add_rec(h, "provider", "tp_provider.so", log, json_pack("{s:s}", "greeting", "hello from provider"));
    h_add_route(h, "/consumer", "consumer");
    h_start_ready(h);

    char u[128];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/consumer", h->port);
    h_resp_t r;
    int rc = h_curl(h, &r, u, NULL);
    H_CHECK(rc == 0, "curl %s exited with %d", u, rc);
    H_CHECK(r.status == 200, "GET /consumer: status %d (%s)", r.status, r.body);
    check_body(&r, "consumer: hello from provider", "the consumer through the provider's api");
    h_resp_free(&r);
    /* init in dependency order; worker_start callbacks in priority, then config, order */
    check_file(log, "init provider\ninit consumer\nstart consumer\nstart provider\n", "after start");

    h_cmd_t cmd;
    int code = h_run(&cmd, 20000, H_MOLTCTL, "-s", h->sock_path, "stop", NULL);
    if (code != 0)
        fprintf(stderr, "moltctl stop: %s%s", cmd.out, cmd.err);
    h_cmd_free(&cmd);
    H_CHECK(code == 0, "moltctl stop exited with %d", code);
    H_CHECK(h_wait_exit(h, 10000), "moltd still runs 10 s after moltctl stop");
    H_CHECK(h_exit_code(h) == 0, "moltd ended with wait status 0x%x", (unsigned)h->wstatus);
    /* worker_stop before any fini; fini in reverse dependency order */
    check_file(log,
               "init provider\ninit consumer\nstart consumer\nstart provider\n"
               "stop consumer\nstop provider\nfini consumer\nfini provider\n",
               "after moltctl stop");
}
END_TEST

/* molt_api_lookup by instance name, with two instances of the provider's plugin. */
START_TEST(test_api_by_instance)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "workers", json_integer(1));
    char log[PATH_MAX];
    snprintf(log, sizeof(log), "%s/order.log", h->dir);
    add_rec(h, "consumer", "tp_consumer.so", log, json_pack("{s:s}", "provider", "p2"));
    add_rec(h, "p1", "tp_provider.so", log, json_pack("{s:s}", "greeting", "one"));
    add_rec(h, "p2", "tp_provider.so", log, json_pack("{s:s}", "greeting", "two"));
    h_add_route(h, "/consumer", "consumer");
    h_start_ready(h);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_conn_send_str(&c, "GET /consumer HTTP/1.1\r\nHost: x\r\n\r\n");
    h_resp_t r;
    read_status(&c, &r, 200, "GET /consumer");
    check_body(&r, "consumer: two", "the consumer of instance p2's api");
    h_resp_free(&r);
    h_conn_close(&c);
    check_file(log, "init p1\ninit p2\ninit consumer\nstart consumer\nstart p1\nstart p2\n", "after start");
}
END_TEST

/* Generations that must not start, and what the operator must be told. */
typedef struct refusal {
    const char *what;
    void (*setup)(h_molt_t *h, const char *log);
    const char *needles[5]; /* in moltd -t's stderr and in the supervisor's "cannot start" line */
    const char *log_after;  /* the recorders' lines once refused (per worker); NULL: not checked */
    const char *said;       /* also somewhere in moltd's log; NULL: nothing more */
} refusal_t;

static void setup_missing(h_molt_t *h, const char *log)
{
    add_rec(h, "consumer", "tp_consumer.so", log, NULL);
}

static void setup_too_old(h_molt_t *h, const char *log)
{
    add_rec(h, "consumer", "tp_consumer_new.so", log, NULL);
    add_rec(h, "provider", "tp_provider.so", log, NULL);
}

static void setup_cycle(h_molt_t *h, const char *log)
{
    add_rec(h, "cyc_one", "tp_cycle_a.so", log, NULL);
    add_rec(h, "cyc_two", "tp_cycle_b.so", log, NULL);
}

static void setup_api_too_new(h_molt_t *h, const char *log)
{
    add_rec(h, "consumer", "tp_consumer.so", log, json_pack("{s:i}", "api_min", 3));
    add_rec(h, "provider", "tp_provider.so", log, NULL);
}

static void setup_ambiguous(h_molt_t *h, const char *log)
{
    add_rec(h, "consumer", "tp_consumer.so", log, NULL); /* looks up "tp_provider" */
    add_rec(h, "p1", "tp_provider.so", log, NULL);
    add_rec(h, "p2", "tp_provider.so", log, NULL);
}

static void setup_singleton(h_molt_t *h, const char *log)
{
    (void)log;
    h_add_plugin(h, "single1", "tp_singleton.so", NULL);
    h_add_plugin(h, "single2", "tp_singleton.so", NULL);
}

static void setup_bad_hook(h_molt_t *h, const char *log)
{
    (void)log;
    h_add_plugin(h, "badhook", "tp_bad_hook.so", NULL);
}

static const refusal_t refusals[] = {
    {"a missing dependency",
     setup_missing,
     {"plugin consumer ", "tp_consumer", "depends on plugin tp_provider >= 1.0.0"},
     "",
     NULL},
    {"a dependency too old",
     setup_too_old,
     {"plugin consumer ", "tp_provider >= 9.0.0", "tp_provider 2.1.0", "older"},
     "",
     NULL},
    {"a dependency cycle", setup_cycle, {"cycle", "cyc_one", "cyc_two"}, "", NULL},
    {"an api older than needed",
     setup_api_too_new,
     {"plugin consumer ", "init failed", "no api \"greeting\" >= 3 from tp_provider"},
     "init provider\nfini provider\n",
     "older than the 3 needed"},
    {"two instances of the provider's plugin, looked up by plugin name",
     setup_ambiguous,
     {"plugin consumer ", "init failed", "no api \"greeting\" >= 2 from tp_provider"},
     "init p1\ninit p2\nfini p2\nfini p1\n",
     "several instances use plugin \"tp_provider\""},
    {"a singleton configured twice",
     setup_singleton,
     {"plugin single2 ", "tp_singleton", "singleton", "single1"},
     NULL,
     NULL},
    {"a hook id out of range",
     setup_bad_hook,
     {"plugin badhook ", "tp_bad_hook", "unknown hook id 42"},
     NULL,
     NULL},
};

static const char *missing_needle(const char *text, const char *const *needles)
{
    for (size_t k = 0; k < 5 && needles[k]; k++)
        if (!strstr(text, needles[k]))
            return needles[k];
    return NULL;
}

START_TEST(test_deps_refused)
{
    const refusal_t *f = &refusals[_i];
    h_molt_t *h = h_new();
    h_cfg_set(h, "workers", json_integer(1));
    char log[PATH_MAX];
    snprintf(log, sizeof(log), "%s/order.log", h->dir);
    f->setup(h, log);

    /* moltd -t */
    h_write_config(h);
    h_cmd_t cmd;
    int code = h_run(&cmd, 20000, H_MOLTD, "-c", h->config_path, "-t", NULL);
    const char *missing = missing_needle(cmd.err, f->needles);
    if (code != 1 || missing)
        fprintf(stderr, "moltd -t with %s exited with %d:\n%s%s", f->what, code, cmd.out, cmd.err);
    h_cmd_free(&cmd);
    H_CHECK(code == 1, "moltd -t with %s exited with %d, expected 1", f->what, code);
    H_CHECK(!missing, "moltd -t with %s: stderr does not mention '%s'", f->what, missing);
    if (f->log_after)
        check_file(log, f->log_after, f->what);
    unlink(log);

    /* moltd: refuses before serving */
    h_start(h);
    H_CHECK(h_wait_exit(h, 10000), "moltd with %s still runs after 10 s", f->what);
    H_CHECK(h_exit_code(h) == 1, "moltd with %s: wait status 0x%x, expected exit code 1", f->what,
            (unsigned)h->wstatus);
    char sup[32];
    snprintf(sup, sizeof(sup), "sup[%d]", (int)h->pid);
    char *line = h_log_line(h, (const char *const[]){sup, "cannot start:", NULL});
    H_CHECK(line != NULL, "moltd with %s: no 'cannot start:' line from the supervisor", f->what);
    missing = missing_needle(line, f->needles);
    if (missing) {
        fprintf(stderr, "the supervisor said: %s\n", line);
        free(line);
        H_FAIL("moltd with %s: the 'cannot start' line does not mention '%s'", f->what, missing);
    }
    free(line);
    if (f->log_after)
        check_file(log, f->log_after, f->what);
    if (f->said) {
        char *all = h_log(h);
        bool said = all && strstr(all, f->said);
        free(all);
        H_CHECK(said, "moltd with %s: its log does not say '%s'", f->what, f->said);
    }
}
END_TEST

/* ---- suite --------------------------------------------------------------------------------- */

static Suite *abi_suite(void)
{
    Suite *s = suite_create("integ_abi");
    TCase *tc = h_tcase("order", 60);
    tcase_add_test(tc, test_order_priority);
    tcase_add_test(tc, test_order_ties);
    suite_add_tcase(s, tc);
    tc = h_tcase("flow", 60);
    tcase_add_test(tc, test_done);
    tcase_add_test(tc, test_error);
    suite_add_tcase(s, tc);
    tc = h_tcase("coordination", 60);
    tcase_add_test(tc, test_disable_instance);
    tcase_add_test(tc, test_callback_off);
    tcase_add_test(tc, test_priority_txn);
    tcase_add_test(tc, test_hook_list);
    suite_add_tcase(s, tc);
    tc = h_tcase("context", 60);
    tcase_add_test(tc, test_ctx_and_ptr);
    tcase_add_test(tc, test_session);
    suite_add_tcase(s, tc);
    tc = h_tcase("deps", 60);
    tcase_add_test(tc, test_deps_order);
    tcase_add_test(tc, test_api_by_instance);
    tcase_add_loop_test(tc, test_deps_refused, 0, (int)(sizeof(refusals) / sizeof(refusals[0])));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(abi_suite());
    srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose lists every test */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
