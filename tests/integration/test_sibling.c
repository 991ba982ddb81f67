/*
 * Integration theme "sibling": sibling messages on the real moltd, with the
 * test plugin tp_kv_mini (tests/plugins/tp_kv_mini.c: a key-value table kept
 * the same in every worker; its header says what each request does).
 *
 *   replicated  3 workers: 50 PUTs on connections of their own (spread over
 *               the workers), then every key read on 20 fresh connections
 *               each: always the value; each worker applied the messages of
 *               the others, routed by the supervisor
 *   single      1 worker: a message with no sibling completes at once
 *   refused     a sibling_recv that refuses: 503 naming the worker and why
 *   stalled     a stopped (SIGSTOP) sibling: the PUT's 300 ms wait ends on
 *               time with 503 naming that worker; once it runs again, PUTs
 *               succeed
 *   killed      a sibling killed while a PUT waits for it: the wait ends at
 *               once with an error naming it, no hang
 *   aborted     a client that leaves during a wait: the wait is cancelled,
 *               the worker unharmed
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>

#include "tests/integration/harness.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static h_molt_t *kv_new(unsigned workers, json_t *config)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "workers", json_integer(workers));
    h_add_plugin(h, "kv", "tp_kv_mini.so", config);
    h_add_route(h, "/kvm/", "kv");
    return h;
}

static void send_put(h_conn_t *c, const char *key, const char *query, const char *value)
{
    char req[1024];
    snprintf(req, sizeof(req),
             "PUT /kvm/%s%s%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s", key,
             query ? "?" : "", query ? query : "", strlen(value), value);
    h_conn_send_str(c, req);
}

/* One request on a connection of its own (Connection: close: new connections spread over the workers). */
static void put_new(h_molt_t *h, const char *key, const char *query, const char *value, h_resp_t *r)
{
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    send_put(&c, key, query, value);
    int rc = h_conn_read(&c, r, 15000);
    H_CHECK(rc == 0, "PUT /kvm/%s: no complete response: %s", key, strerror(-rc));
    h_conn_close(&c);
}

static void get_new(h_molt_t *h, const char *path, h_resp_t *r)
{
    h_conn_t c;
    char req[512];
    h_conn_open(&c, AF_INET, h->port);
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    h_conn_send_str(&c, req);
    int rc = h_conn_read(&c, r, 5000);
    H_CHECK(rc == 0, "GET %s: no complete response: %s", path, strerror(-rc));
    h_conn_close(&c);
}

/* The worker pids by slot. */
static void worker_pids(h_molt_t *h, pid_t *pids, size_t n)
{
    json_t *st = h_status(h);
    H_CHECK(st != NULL, "no status from moltd");
    size_t got = h_status_pids(st, pids, n);
    json_decref(st);
    H_CHECK(got == n, "status lists %zu workers, expected %zu", got, n);
    for (size_t i = 0; i < n; i++)
        H_CHECK(pids[i] > 0, "worker %zu has no process", i);
}

static bool log_has(h_molt_t *h, const char *needle)
{
    char *all = h_log(h);
    bool has = all && strstr(all, needle);
    free(all);
    return has;
}

/* =============================================================================================
 * replicated
 * ============================================================================================= */

START_TEST(test_replicated)
{
    enum { NKEYS = 50, NGETS = 20, NW = 3 };
    h_molt_t *h = kv_new(NW, NULL);
    h_start_ready(h);
    h_resp_t r;
    char key[32], val[64], path[64];
    for (int i = 0; i < NKEYS; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "value of key %d", i);
        put_new(h, key, NULL, val, &r);
        H_CHECK(r.status == 204, "PUT /kvm/%s: status %d, expected 204 (body: %s)", key, r.status, r.body);
        H_CHECK(h_resp_header(&r, "X-Seq") != NULL, "PUT /kvm/%s: no X-Seq", key);
        h_resp_free(&r);
    }
    /* Acknowledged means applied everywhere: any worker answers with the value. */
    for (int i = 0; i < NKEYS; i++) {
        snprintf(path, sizeof(path), "/kvm/k%d", i);
        snprintf(val, sizeof(val), "value of key %d", i);
        for (int j = 0; j < NGETS; j++) {
            get_new(h, path, &r);
            H_CHECK(r.status == 200 && strcmp(r.body, val) == 0,
                    "GET %s (connection %d): status %d, body '%s', expected 200 '%s'", path, j, r.status, r.body,
                    val);
            h_resp_free(&r);
        }
    }
    /* Each worker applied what the others sent: 50 messages, each applied by
     * the 2 workers that did not send it. */
    pid_t pids[NW];
    worker_pids(h, pids, NW);
    unsigned long applied[NW] = {0};
    bool seen[NW] = {false};
    unsigned nseen = 0;
    for (int k = 0; k < 600 && nseen < NW; k++) {
        get_new(h, "/kvm/", &r);
        const char *p = h_resp_header(&r, "X-Pid");
        pid_t pid = p ? (pid_t)atoi(p) : 0;
        for (unsigned s = 0; s < NW; s++) {
            if (pids[s] != pid || seen[s])
                continue;
            seen[s] = true;
            nseen++;
            H_CHECK(sscanf(r.body, "applied %lu", &applied[s]) == 1, "GET /kvm/ on worker %u: '%s'", s, r.body);
            /* every message it applied came from another slot */
            const char *from = strstr(r.body, " from ");
            H_CHECK(from != NULL, "GET /kvm/ on worker %u: '%s'", s, r.body);
            for (const char *q = from + 6; *q; q++)
                H_CHECK(*q == ',' || *q == 'n' || (unsigned)(*q - '0') != s || (q[1] && q[1] != ','),
                        "worker %u applied a message from itself: '%s'", s, r.body);
        }
        h_resp_free(&r);
    }
    if (nseen == NW) {
        unsigned long total = 0;
        for (unsigned s = 0; s < NW; s++)
            total += applied[s];
        H_CHECK(total == (unsigned long)NKEYS * (NW - 1),
                "the workers applied %lu sibling messages in all (%lu, %lu, %lu), expected %d", total, applied[0],
                applied[1], applied[2], NKEYS * (NW - 1));
    } else {
        fprintf(stderr, "test_replicated: only %u of %d workers answered GET /kvm/; totals not checked\n", nseen,
                NW);
    }
}
END_TEST

START_TEST(test_single_worker)
{
    h_molt_t *h = kv_new(1, NULL);
    h_start_ready(h);
    h_resp_t r;
    long long t0 = h_now_ms();
    put_new(h, "solo", NULL, "alone", &r);
    H_CHECK(r.status == 204, "PUT with no sibling: status %d (body: %s)", r.status, r.body);
    H_CHECK(h_now_ms() - t0 < 900, "PUT with no sibling took %lld ms", h_now_ms() - t0);
    h_resp_free(&r);
    get_new(h, "/kvm/solo", &r);
    H_CHECK(r.status == 200 && strcmp(r.body, "alone") == 0, "GET: %d '%s'", r.status, r.body);
    h_resp_free(&r);
}
END_TEST

/* =============================================================================================
 * failures
 * ============================================================================================= */

START_TEST(test_refused)
{
    h_molt_t *h = kv_new(3, json_pack("{s:s}", "fail_key", "bad"));
    h_start_ready(h);
    h_resp_t r;
    put_new(h, "bad", "timeout=3000", "x", &r);
    H_CHECK(r.status == 503, "PUT of a key siblings refuse: status %d (body: %s)", r.status, r.body);
    H_CHECK(strstr(r.body, "failed to apply message") && strstr(r.body, "sibling_recv failed") &&
                strncmp(r.body, "worker ", 7) == 0,
            "PUT of a key siblings refuse: body '%s' does not name the worker and why", r.body);
    h_resp_free(&r);
    put_new(h, "good", NULL, "y", &r);
    H_CHECK(r.status == 204, "PUT after a refusal: status %d (body: %s)", r.status, r.body);
    h_resp_free(&r);
}
END_TEST

START_TEST(test_stalled)
{
    h_molt_t *h = kv_new(3, NULL);
    h_start_ready(h);
    pid_t pids[3];
    worker_pids(h, pids, 3);
    H_CHECK(kill(pids[1], SIGSTOP) == 0, "SIGSTOP worker 1: %s", strerror(errno));
    h_resp_t r;
    /* long enough for worker 2 to apply it (h_ms) */
    int wait_ms = h_ms(300);
    char query[32], within[32];
    snprintf(query, sizeof(query), "timeout=%d", wait_ms);
    snprintf(within, sizeof(within), "within %d ms", wait_ms);
    long long t0 = h_now_ms();
    put_new(h, "slow", query, "v", &r); /* worker 1 accepts nothing: 0 or 2 answers */
    long long dt = h_now_ms() - t0;
    kill(pids[1], SIGCONT);
    H_CHECK(r.status == 503, "PUT with worker 1 stopped: status %d (body: %s)", r.status, r.body);
    H_CHECK(strstr(r.body, "worker 1 did not apply message") && strstr(r.body, within),
            "PUT with worker 1 stopped: body '%s', expected 'worker 1 did not apply message N %s'", r.body,
            within);
    H_CHECK(dt >= wait_ms - 10 && dt < wait_ms + h_ms(1700), "the %d ms wait ended after %lld ms", wait_ms, dt);
    h_resp_free(&r);
    /* Running again, worker 1 applies it late; the next PUT succeeds everywhere. */
    put_new(h, "after", NULL, "w", &r);
    H_CHECK(r.status == 204, "PUT after SIGCONT: status %d (body: %s)", r.status, r.body);
    h_resp_free(&r);
    for (int j = 0; j < 20; j++) {
        get_new(h, "/kvm/slow", &r);
        H_CHECK(r.status == 200 && strcmp(r.body, "v") == 0, "GET /kvm/slow after SIGCONT: %d '%s'", r.status,
                r.body);
        h_resp_free(&r);
    }
}
END_TEST

START_TEST(test_killed)
{
    h_molt_t *h = kv_new(3, NULL);
    h_start_ready(h);
    pid_t pids[3];
    worker_pids(h, pids, 3);
    H_CHECK(kill(pids[2], SIGSTOP) == 0, "SIGSTOP worker 2: %s", strerror(errno));
    h_conn_t c;
    h_resp_t r;
    h_conn_open(&c, AF_INET, h->port);
    send_put(&c, "doomed", "timeout=20000", "v");
    h_sleep_ms(h_ms(300)); /* the PUT reaches its wait for worker 2 */
    long long t0 = h_now_ms();
    H_CHECK(kill(pids[2], SIGKILL) == 0, "SIGKILL worker 2: %s", strerror(errno));
    int rc = h_conn_read(&c, &r, 4000);
    long long dt = h_now_ms() - t0;
    h_conn_close(&c);
    H_CHECK(rc == 0, "PUT waiting for a worker that was killed: no response within 4 s: %s", strerror(-rc));
    H_CHECK(r.status == 503, "PUT waiting for a killed worker: status %d (body: %s)", r.status, r.body);
    H_CHECK(strstr(r.body, "worker 2 died before applying message") && strstr(r.body, "signal 9"),
            "PUT waiting for a killed worker: body '%s' does not name worker 2 and how it died", r.body);
    H_CHECK(dt < 2000, "the wait ended %lld ms after the kill", dt);
    h_resp_free(&r);
    H_CHECK(h_wait_ready(h, 10000), "worker 2 was not replaced");
    put_new(h, "later", NULL, "x", &r);
    H_CHECK(r.status == 204, "PUT once worker 2 is replaced: status %d (body: %s)", r.status, r.body);
    h_resp_free(&r);
}
END_TEST

START_TEST(test_aborted)
{
    h_molt_t *h = kv_new(2, NULL);
    h_start_ready(h);
    pid_t pids[2];
    worker_pids(h, pids, 2);
    H_CHECK(kill(pids[1], SIGSTOP) == 0, "SIGSTOP worker 1: %s", strerror(errno));
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    send_put(&c, "gone", "timeout=3000", "v");
    h_sleep_ms(200);
    h_conn_close(&c);
    bool logged = false;
    for (long long end = h_now_ms() + h_ms(3000); !logged && h_now_ms() < end; h_sleep_ms(20))
        logged = log_has(h, "is cancelled: its transaction was aborted");
    kill(pids[1], SIGCONT);
    H_CHECK(logged, "moltd's log does not say that the aborted transaction's wait was cancelled");
    h_sleep_ms(3200); /* past the cancelled wait's timeout: nothing fires */
    h_resp_t r;
    put_new(h, "still", NULL, "ok", &r);
    H_CHECK(r.status == 204, "PUT after an aborted wait: status %d (body: %s)", r.status, r.body);
    h_resp_free(&r);
    pid_t now[2];
    worker_pids(h, now, 2);
    H_CHECK(now[0] == pids[0] && now[1] == pids[1], "a worker was replaced after an aborted wait");
}
END_TEST

/* ---- suite --------------------------------------------------------------------------------- */

static Suite *sibling_suite(void)
{
    Suite *s = suite_create("integ_sibling");
    TCase *tc = h_tcase("replicated", 120);
    tcase_add_test(tc, test_replicated);
    tcase_add_test(tc, test_single_worker);
    suite_add_tcase(s, tc);
    tc = h_tcase("failures", 60);
    tcase_add_test(tc, test_refused);
    tcase_add_test(tc, test_stalled);
    tcase_add_test(tc, test_killed);
    tcase_add_test(tc, test_aborted);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sibling_suite());
    srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose lists every test */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
