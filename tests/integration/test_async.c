/*
 * Integration theme "async": transactions suspended by a plugin and resumed
 * later from a timer or an fd watcher, on the real moltd with the test
 * plugin tp_async (tests/plugins/tp_async.c; its header says what each path
 * and request header does).
 *
 *   concurrency  two /sleep/1500 on one worker are answered together, and a
 *                third connection meanwhile; pipelined requests stay in order
 *   hooks        a request_headers callback that suspends, then continues
 *                (the callbacks after it run) or answers 403; contexts of
 *                interleaved suspended transactions stay intact
 *   watchers     /pipe: resumed from an fd watcher; resume before returning;
 *                MOLT_SUSPEND where it is not allowed; a 1.0 plugin still loads
 *   abort        a client that goes away: txn_abort, the worker unharmed
 *   stop         the repeating timer is cancelled (and logged) at stop; a
 *                graceful stop waits for a suspended transaction; a fast stop
 *                aborts it
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>

#include "tests/integration/harness.h"

/* ---- helpers ------------------------------------------------------------------------------- */

/* moltd with one worker (so that concurrency is the worker's, not the kernel's), tp_async on
 * /sleep/, /pipe and /now, hello on the rest. */
static h_molt_t *async_new(void)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "workers", json_integer(1));
    h_add_plugin(h, "async", "tp_async.so", NULL);
    h_add_route(h, "/sleep/", "async");
    h_add_route(h, "/pipe", "async");
    h_add_route(h, "/now", "async");
    return h;
}

static void send_get(h_conn_t *c, const char *path, const char *extra)
{
    char req[512];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n", path, extra ? extra : "");
    h_conn_send_str(c, req);
}

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

static void hdr_is(const h_resp_t *r, const char *name, const char *expect, const char *what)
{
    const char *v = h_resp_header(r, name);
    H_CHECK(v && strcmp(v, expect) == 0, "%s: %s is '%s', expected '%s'", what, name, v ? v : "(absent)",
            expect);
}

static long long hdr_num(const h_resp_t *r, const char *name, const char *what)
{
    const char *v = h_resp_header(r, name);
    char *end = NULL;
    long long n = v ? strtoll(v, &end, 10) : -1;
    H_CHECK(v && *v && end && *end == '\0', "%s: %s is '%s', expected a number", what, name,
            v ? v : "(absent)");
    return n;
}

/* The X-Trace values starting with `prefix`, joined with ','. */
static const char *traces(const h_resp_t *r, const char *prefix, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < r->nhdrs; i++) {
        const char *v = r->hdrs[i].value ? r->hdrs[i].value : "";
        if (!r->hdrs[i].name || strcasecmp(r->hdrs[i].name, "X-Trace") != 0 ||
            strncmp(v, prefix, strlen(prefix)))
            continue;
        off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "%s%s", off ? "," : "", v);
    }
    return buf;
}

/* GET path on a connection of its own; expects `status`. */
static void get_new(h_molt_t *h, const char *path, const char *extra, h_resp_t *r, int status,
                    const char *what)
{
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    send_get(&c, path, extra);
    read_status(&c, r, status, what);
    h_conn_close(&c);
}

/* Slot 0's pid and restart count. */
static pid_t worker_pid(h_molt_t *h, long long *restarts)
{
    json_t *st = h_status(h);
    H_CHECK(st != NULL, "no status from moltd");
    const json_t *w = h_status_slot(st, 0);
    H_CHECK(w != NULL, "status has no slot 0");
    pid_t pid = (pid_t)json_integer_value(json_object_get(w, "pid"));
    *restarts = json_integer_value(json_object_get(w, "restarts"));
    json_decref(st);
    H_CHECK(pid > 0, "slot 0 has no process");
    return pid;
}

/* A tp_order instance (tests/plugins/tp_abi.c) tagged with its name, at priority prio. */
static void add_order(h_molt_t *h, const char *name, int prio)
{
    h_add_plugin(h, name, "tp_order.so", json_pack("{s:s}", "tag", name));
    json_t *pl = json_object_get(h->cfg, "plugins");
    json_object_set_new(json_array_get(pl, json_array_size(pl) - 1), "priority", json_integer(prio));
}

static bool log_has(h_molt_t *h, const char *needle)
{
    char *all = h_log(h);
    bool has = all && strstr(all, needle);
    free(all);
    return has;
}

/* =============================================================================================
 * concurrency
 * ============================================================================================= */

START_TEST(test_concurrent_sleeps)
{
    h_molt_t *h = async_new();
    h_start_ready(h);
    h_conn_t a, b, c;
    h_resp_t r;
    h_conn_open(&a, AF_INET, h->port);
    h_conn_open(&b, AF_INET, h->port);
    h_conn_open(&c, AF_INET, h->port);
    long long t0 = h_now_ms();
    send_get(&a, "/sleep/1500", NULL);
    send_get(&b, "/sleep/1500", NULL);
    /* A third connection is served while both wait. */
    send_get(&c, "/", NULL);
    read_status(&c, &r, 200, "GET / while two transactions are suspended");
    long long tc = h_now_ms() - t0;
    check_body(&r, H_HELLO_BODY, "GET / while two transactions are suspended");
    h_resp_free(&r);
    H_CHECK(tc < 1400, "GET / was answered after %lld ms: not while the two /sleep/1500 were suspended", tc);

    read_status(&a, &r, 200, "first /sleep/1500");
    check_body(&r, "slept 1500", "first /sleep/1500");
    hdr_is(&r, "X-Ctx-Intact", "yes", "first /sleep/1500");
    h_resp_free(&r);
    read_status(&b, &r, 200, "second /sleep/1500");
    check_body(&r, "slept 1500", "second /sleep/1500");
    h_resp_free(&r);
    long long dt = h_now_ms() - t0;
    /* Functional concurrency, not a benchmark: one after the other would take
     * 3000 ms; the margins are wide for a loaded machine and a sanitizer build. */
    H_CHECK(dt >= 1490 && dt < 2900, "two /sleep/1500 on one worker took %lld ms, expected about 1500", dt);
    h_conn_close(&a);
    h_conn_close(&b);
    h_conn_close(&c);
}
END_TEST

START_TEST(test_pipelined_order)
{
    h_molt_t *h = async_new();
    h_start_ready(h);
    h_conn_t c;
    h_resp_t r;
    h_conn_open(&c, AF_INET, h->port);
    long long t0 = h_now_ms();
    h_conn_send_str(&c, "GET /sleep/200 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    read_status(&c, &r, 200, "pipelined /sleep/200");
    long long dt = h_now_ms() - t0;
    check_body(&r, "slept 200", "the first of two pipelined responses");
    H_CHECK(dt >= 190, "/sleep/200 answered after %lld ms", dt);
    h_resp_free(&r);
    read_status(&c, &r, 200, "pipelined / behind /sleep/200");
    check_body(&r, H_HELLO_BODY, "the second of two pipelined responses");
    h_resp_free(&r);
    /* and the connection goes on */
    send_get(&c, "/sleep/10", NULL);
    read_status(&c, &r, 200, "/sleep/10 after the pipelined pair");
    check_body(&r, "slept 10", "/sleep/10 after the pipelined pair");
    h_resp_free(&r);
    h_conn_close(&c);
}
END_TEST

/* =============================================================================================
 * hooks and contexts
 * ============================================================================================= */

START_TEST(test_hold_continue_deny)
{
    h_molt_t *h = async_new();
    /* tp_order "a" before async's request_headers callback (priority 0), "b" after it */
    add_order(h, "a", -10);
    add_order(h, "b", 10);
    h_start_ready(h);
    h_resp_t r;
    char got[512];

    long long t0 = h_now_ms();
    get_new(h, "/", "X-Hold: 150\r\n", &r, 200, "X-Hold: 150");
    long long dt = h_now_ms() - t0;
    H_CHECK(dt >= 140, "X-Hold: 150 answered after %lld ms", dt);
    check_body(&r, H_HELLO_BODY, "X-Hold: 150 then MOLT_CONTINUE");
    hdr_is(&r, "X-Held", "150", "X-Hold: 150");
    /* a's callback ran once, before the suspension; b's after the resume; then the handler */
    traces(&r, "request_headers:", got, sizeof(got));
    H_CHECK(strcmp(got, "request_headers:a,request_headers:b") == 0,
            "X-Hold then MOLT_CONTINUE: request_headers traces '%s', expected "
            "'request_headers:a,request_headers:b'",
            got);
    traces(&r, "response_headers:", got, sizeof(got));
    H_CHECK(strcmp(got, "response_headers:a,response_headers:b") == 0, "X-Hold: response_headers traces '%s'",
            got);
    hdr_is(&r, "X-Ctx-Intact", "yes", "X-Hold: async's context");
    hdr_is(&r, "X-Ctx-Zero-b", "yes", "X-Hold: b's context");
    hdr_is(&r, "X-Ctx-Kept-a", "yes", "X-Hold: a's context across the suspension");
    hdr_is(&r, "X-Ptr-a", "yes", "X-Hold: a's pointer across the suspension");
    h_resp_free(&r);

    get_new(h, "/", "X-Hold: 50\r\nX-Hold-Deny: 1\r\n", &r, 403, "X-Hold-Deny: 1");
    check_body(&r, "denied", "X-Hold then MOLT_DONE");
    traces(&r, "request_headers:", got, sizeof(got));
    H_CHECK(strcmp(got, "request_headers:a") == 0,
            "X-Hold then MOLT_DONE: request_headers traces '%s', expected only 'request_headers:a'", got);
    traces(&r, "response_headers:", got, sizeof(got));
    H_CHECK(strcmp(got, "response_headers:a,response_headers:b") == 0,
            "X-Hold-Deny: response_headers traces '%s' (they run for every response)", got);
    h_resp_free(&r);

    /* both a hook and the handler suspend one transaction */
    get_new(h, "/sleep/50", "X-Hold: 50\r\n", &r, 200, "X-Hold: 50 on /sleep/50");
    check_body(&r, "slept 50", "X-Hold: 50 on /sleep/50");
    hdr_is(&r, "X-Held", "50", "X-Hold: 50 on /sleep/50");
    hdr_is(&r, "X-Ctx-Intact", "yes", "X-Hold: 50 on /sleep/50");
    h_resp_free(&r);
}
END_TEST

START_TEST(test_contexts_interleaved)
{
    h_molt_t *h = async_new();
    h_start_ready(h);
    enum { N = 5 };
    static const char *const paths[N] = {"/sleep/400", "/sleep/100", "/sleep/300", "/sleep/200",
                                         "/sleep/250"};
    static const char *const extra[N] = {NULL, "X-Hold: 80\r\n", NULL, "X-Hold: 30\r\n", NULL};
    h_conn_t c[N], other;
    h_resp_t r;
    for (int i = 0; i < N; i++) {
        h_conn_open(&c[i], AF_INET, h->port);
        send_get(&c[i], paths[i], extra[i]);
    }
    /* other transactions run (and are given fresh contexts) meanwhile */
    h_conn_open(&other, AF_INET, h->port);
    for (int k = 0; k < 5; k++) {
        send_get(&other, k % 2 ? "/now" : "/sleep/20", NULL);
        read_status(&other, &r, 200, "a transaction between the suspended ones");
        h_resp_free(&r);
    }
    for (int i = 0; i < N; i++) {
        char what[64], body[64];
        snprintf(what, sizeof(what), "%s%s", paths[i], extra[i] ? " with X-Hold" : "");
        read_status(&c[i], &r, 200, what);
        snprintf(body, sizeof(body), "slept %s", paths[i] + 7);
        check_body(&r, body, what);
        hdr_is(&r, "X-Ctx-Intact", "yes", what);
        h_resp_free(&r);
        h_conn_close(&c[i]);
    }
    h_conn_close(&other);
}
END_TEST

/* =============================================================================================
 * watchers and the rest of the API
 * ============================================================================================= */

START_TEST(test_pipe_and_now)
{
    h_molt_t *h = async_new();
    h_add_plugin(h, "old", "tp_abi10.so", NULL);
    h_add_route(h, "/old", "old");
    h_start_ready(h);
    h_resp_t r;
    get_new(h, "/pipe", NULL, &r, 200, "/pipe");
    check_body(&r, "piped", "/pipe: resumed from an fd watcher");
    hdr_is(&r, "X-Ctx-Intact", "yes", "/pipe");
    h_resp_free(&r);

    get_new(h, "/now", NULL, &r, 200, "/now");
    check_body(&r, "now", "/now: resumed before it returned MOLT_SUSPEND");
    hdr_is(&r, "X-Second-Resume", "refused", "/now: a second molt_txn_resume");
    h_resp_free(&r);

    get_new(h, "/", "X-Bad-Suspend: 1\r\n", &r, 500, "MOLT_SUSPEND from response_headers");
    h_resp_free(&r);
    H_CHECK(log_has(h, "response_headers callback report returned MOLT_SUSPEND"),
            "moltd's log does not say that a response_headers callback returned MOLT_SUSPEND");

    get_new(h, "/old", NULL, &r, 200, "a plugin built against ABI 1.0");
    check_body(&r, "abi 1.0 plugin", "a plugin built against ABI 1.0");
    hdr_is(&r, "X-Host-Has-Resume", "yes", "MOLT_HOST_HAS(txn_resume) seen from a 1.0 plugin");
    h_resp_free(&r);
}
END_TEST

/* =============================================================================================
 * abort
 * ============================================================================================= */

START_TEST(test_client_gone)
{
    h_molt_t *h = async_new();
    h_start_ready(h);
    long long restarts;
    pid_t pid = worker_pid(h, &restarts);
    h_resp_t r;
    get_new(h, "/", NULL, &r, 200, "before");
    long long aborts0 = hdr_num(&r, "X-Aborts", "before");
    h_resp_free(&r);

    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    send_get(&c, "/sleep/1000", NULL);
    h_sleep_ms(100);
    h_conn_close(&c);

    long long aborts = aborts0;
    for (long long end = h_now_ms() + h_ms(3000); aborts == aborts0 && h_now_ms() < end; h_sleep_ms(20)) {
        get_new(h, "/", NULL, &r, 200, "after the client went away");
        aborts = hdr_num(&r, "X-Aborts", "after the client went away");
        h_resp_free(&r);
    }
    H_CHECK(aborts == aborts0 + 1, "X-Aborts is %lld after a client left its /sleep/1000, expected %lld",
            aborts, aborts0 + 1);
    H_CHECK(log_has(h, "suspended GET /sleep/1000 aborted"), "moltd's log does not report the abort");
    /* Past the time the cancelled timer was due: nothing resumed the freed transaction. */
    h_sleep_ms(1100);
    get_new(h, "/", NULL, &r, 200, "1.2 s later");
    H_CHECK(hdr_num(&r, "X-Aborts", "1.2 s later") == aborts0 + 1, "X-Aborts changed again: %s",
            h_resp_header(&r, "X-Aborts"));
    h_resp_free(&r);
    long long restarts2;
    H_CHECK(worker_pid(h, &restarts2) == pid && restarts2 == restarts && restarts == 0,
            "the worker changed (pid %d, %lld restarts) after a client left a suspended transaction",
            (int)pid, restarts2);
}
END_TEST

/* =============================================================================================
 * stop
 * ============================================================================================= */

static const char cancelled_line[] = "plugin async: cancelled 1 timers and 0 fd watchers at stop";

START_TEST(test_stop_cancels_timers)
{
    h_molt_t *h = async_new();
    h_start_ready(h);
    h_resp_t r;
    h_sleep_ms(100);
    get_new(h, "/", NULL, &r, 200, "before stop");
    H_CHECK(hdr_num(&r, "X-Ticks", "before stop") > 0, "the repeating timer started in init never ran");
    h_resp_free(&r);
    h_cmd_t cmd;
    int code = h_run(&cmd, 20000, H_MOLTCTL, "-s", h->sock_path, "stop", NULL);
    if (code != 0)
        fprintf(stderr, "moltctl stop: %s%s", cmd.out, cmd.err);
    h_cmd_free(&cmd);
    H_CHECK(code == 0, "moltctl stop exited with %d", code);
    H_CHECK(h_wait_exit(h, 10000), "moltd still runs 10 s after moltctl stop");
    H_CHECK(h_exit_code(h) == 0, "moltd ended with wait status 0x%x", (unsigned)h->wstatus);
    H_CHECK(log_has(h, cancelled_line), "moltd's log has no '%s'", cancelled_line);
}
END_TEST

START_TEST(test_graceful_stop_waits)
{
    h_molt_t *h = async_new();
    h_start_ready(h);
    h_conn_t c;
    h_resp_t r;
    h_conn_open(&c, AF_INET, h->port);
    send_get(&c, "/sleep/3000", NULL);
    /* Stop only once a worker holds the connection (its counters say so),
     * however slow the machine: otherwise nothing would be in flight. */
    bool held = false;
    for (int i = 0; i < 60 && !held; i++) {
        json_t *st = h_status(h);
        size_t k;
        json_t *w;
        json_array_foreach(json_object_get(st, "workers"), k, w)
            held |= json_integer_value(json_object_get(w, "connections")) > 0;
        json_decref(st);
        if (!held)
            h_sleep_ms(100);
    }
    H_CHECK(held, "no worker reported the /sleep/3000 connection");
    H_CHECK(kill(h->pid, SIGTERM) == 0, "kill(moltd): %s", strerror(errno));
    h_sleep_ms(300); /* past idle_grace_ms: a suspended transaction is in progress, not idle */
    H_CHECK(!h_reap(h), "moltd exited while a suspended transaction was in flight");
    read_status(&c, &r, 200, "/sleep/3000 during a graceful stop");
    check_body(&r, "slept 3000", "/sleep/3000 during a graceful stop");
    const char *conn = h_resp_header(&r, "Connection");
    H_CHECK(conn && strcasecmp(conn, "close") == 0, "the response of a draining worker has %s%s",
            conn ? "Connection: " : "no Connection header", conn ? conn : "");
    h_resp_free(&r);
    H_CHECK(h_conn_wait_eof(&c, 2000) == 1, "the draining worker kept the connection open");
    h_conn_close(&c);
    H_CHECK(h_wait_exit(h, 10000), "moltd still runs 10 s after SIGTERM");
    H_CHECK(h_exit_code(h) == 0, "moltd ended with wait status 0x%x", (unsigned)h->wstatus);
    H_CHECK(log_has(h, cancelled_line), "moltd's log has no '%s'", cancelled_line);
}
END_TEST

START_TEST(test_fast_stop_aborts)
{
    h_molt_t *h = async_new();
    h_start_ready(h);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    send_get(&c, "/sleep/5000", NULL);
    h_sleep_ms(100);
    h_cmd_t cmd;
    int code = h_run(&cmd, 20000, H_MOLTCTL, "-s", h->sock_path, "stop", "--fast", NULL);
    h_cmd_free(&cmd);
    H_CHECK(code == 0, "moltctl stop --fast exited with %d", code);
    H_CHECK(h_conn_wait_eof(&c, 3000) == 1, "the connection of a suspended transaction outlived a fast stop");
    h_conn_close(&c);
    H_CHECK(h_wait_exit(h, 10000), "moltd still runs 10 s after moltctl stop --fast");
    H_CHECK(h_exit_code(h) == 0, "moltd ended with wait status 0x%x", (unsigned)h->wstatus);
    H_CHECK(log_has(h, "suspended GET /sleep/5000 aborted"), "moltd's log does not report the abort at stop");
    H_CHECK(log_has(h, cancelled_line), "moltd's log has no '%s'", cancelled_line);
}
END_TEST

/* ---- suite --------------------------------------------------------------------------------- */

static Suite *async_suite(void)
{
    Suite *s = suite_create("integ_async");
    TCase *tc = h_tcase("concurrency", 60);
    tcase_add_test(tc, test_concurrent_sleeps);
    tcase_add_test(tc, test_pipelined_order);
    suite_add_tcase(s, tc);
    tc = h_tcase("hooks", 60);
    tcase_add_test(tc, test_hold_continue_deny);
    tcase_add_test(tc, test_contexts_interleaved);
    suite_add_tcase(s, tc);
    tc = h_tcase("watchers", 60);
    tcase_add_test(tc, test_pipe_and_now);
    suite_add_tcase(s, tc);
    tc = h_tcase("abort", 60);
    tcase_add_test(tc, test_client_gone);
    suite_add_tcase(s, tc);
    tc = h_tcase("stop", 60);
    tcase_add_test(tc, test_stop_cancels_timers);
    tcase_add_test(tc, test_graceful_stop_waits);
    tcase_add_test(tc, test_fast_stop_aborts);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(async_suite());
    srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose lists every test */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
