/*
 * Integration theme "state": the stateful example plugins on the real moltd,
 * plugins/kv (strict, replicated: every worker holds the whole table, kept
 * the same with sibling messages) and plugins/counter (snapshot mode,
 * partitioned: each worker counts its own requests). Their headers say what
 * each request does; docs/plugins.md "Example stateful plugins" what their
 * state does across reloads.
 *
 * serving (one generation)
 *   kv_basics       PUT 201 then 204, GET, HEAD, DELETE 204 then 404, the
 *                   sorted key list, raw keys (no percent-decoding, '/'
 *                   allowed, the query left out), empty values, 405 with
 *                   Allow, keys empty / 1024 bytes / 1025 bytes
 *   kv_replicated   3 workers: 50 PUTs on connections of their own, then every
 *                   key read on 20 fresh connections: always the value; 10
 *                   DELETEs likewise; the list agrees everywhere, and every
 *                   worker's state (moltctl state kv) holds the same 40 keys
 *   kv_large        3 workers: values around the 48 KiB sibling message size
 *                   (sent in parts) and of 1 MiB (the default http.max_body_bytes)
 *                   round-trip byte-exact through every worker; 1 MiB + 1 is 413
 *   kv_limits       max_keys (507, replacing still works), max_value_bytes (413)
 *   counter_counts  2 workers: per-path counts per worker, JSON as documented,
 *                   the query left out; the workers' counts sum to the requests
 *   counter_exact   1 worker: exact counts; max_paths folds new paths into "(other)"
 *
 * config
 *   config_error    bad configs of both (a loop test): moltd -t names the key
 *                   and what is wrong
 *   config_good     good ones pass moltd -t
 *
 * Reload and handoff cases go in the section at the end ("across
 * generations"); the helpers below are meant for them too.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>

#include "tests/integration/harness.h"

#define ONE_MIB (1024 * 1024)

/* ---- helpers: a moltd with kv and counter ---------------------------------------------------- */

/*
 * A moltd (not started) with `workers` workers, kv on /kv/ and counter on
 * /count/ (hello stays on /), and the instances' configs (stolen; NULL for
 * none). Reload settings suit handoff tests: verify does not wait.
 */
static h_molt_t *state_new(unsigned workers, json_t *kv_config, json_t *counter_config)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "workers", json_integer(workers));
    h_cfg_set(h, "reload.health.stable_ms", json_integer(0));
    h_cfg_set(h, "reload.handoff_timeout_ms", json_integer(10000));
    h_add_plugin(h, "kv", "kv.so", kv_config);
    h_add_plugin(h, "counter", "counter.so", counter_config);
    h_add_route(h, "/kv/", "kv");
    h_add_route(h, "/count/", "counter");
    return h;
}

static json_t *cfg_json(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);
    H_CHECK(v != NULL, "bad JSON in the test itself: %s: %s", text, jerr.text);
    return v;
}

/* The worker pids by slot; fails unless all `n` have one. */
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

/*
 * One request on a connection of its own (Connection: close, so that new
 * connections spread over the workers), over a raw socket: the path goes out
 * exactly as given. `body` NULL: no body. Fails the test if no complete
 * response arrives within 15 s (a write may wait up to 5 s for the siblings).
 */
static void http_once(h_molt_t *h, const char *method, const char *path, const void *body, size_t blen,
                      h_resp_t *r)
{
    char head[4096];
    int n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n", method, path);
    H_CHECK(n > 0 && (size_t)n < sizeof(head) - 64, "request head too long: %s %s", method, path);
    if (body)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: %zu\r\n", blen);
    n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_conn_send(&c, head, (size_t)n);
    if (body && blen)
        h_conn_send(&c, body, blen);
    int rc = h_conn_read(&c, r, 15000);
    h_conn_close(&c);
    H_CHECK(rc == 0, "%s %s: no complete response: %s", method, path, strerror(-rc));
}

/* curl -X METHOD [--data-binary DATA] http://127.0.0.1:PORT/kv/KEY (DATA "@file" sends a file; not for HEAD). */
static int kv_curl(h_molt_t *h, h_resp_t *r, const char *method, const char *key, const char *data)
{
    char url[4096];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/kv/%s", h->port, key);
    if (data)
        return h_curl(h, r, "-X", method, "--data-binary", data, url, NULL);
    return h_curl(h, r, "-X", method, url, NULL);
}

/* PUT /kv/KEY = value with curl; fails unless the status is `status` (201 or 204) with no body. */
static void kv_put(h_molt_t *h, const char *key, const char *value, int status)
{
    h_resp_t r;
    H_CHECK(kv_curl(h, &r, "PUT", key, value) == 0, "curl PUT /kv/%s failed", key);
    H_CHECK(r.status == status && r.body_len == 0, "PUT /kv/%s: %d '%s', expected %d and no body", key, r.status,
            r.body, status);
    h_resp_free(&r);
}

/* GET /kv/KEY with curl; fails unless it is 200 with exactly `value`. */
static void kv_get(h_molt_t *h, const char *key, const char *value)
{
    h_resp_t r;
    H_CHECK(kv_curl(h, &r, "GET", key, NULL) == 0, "curl GET /kv/%s failed", key);
    H_CHECK(r.status == 200 && r.body_len == strlen(value) && memcmp(r.body, value, r.body_len) == 0,
            "GET /kv/%s: %d '%s', expected 200 '%s'", key, r.status, r.body, value);
    const char *ct = h_resp_header(&r, "Content-Type");
    H_CHECK(ct && strcmp(ct, "application/octet-stream") == 0, "GET /kv/%s: Content-Type %s", key, ct ? ct : "none");
    h_resp_free(&r);
}

/* METHOD /kv/KEY with curl; fails unless the status is `status`. */
static void kv_expect_status(h_molt_t *h, const char *method, const char *key, int status)
{
    h_resp_t r;
    H_CHECK(kv_curl(h, &r, method, key, NULL) == 0, "curl %s /kv/%s failed", method, key);
    H_CHECK(r.status == status, "%s /kv/%s: %d '%s', expected %d", method, key, r.status, r.body, status);
    h_resp_free(&r);
}

/* GET /kv/ on a fresh connection: the keys, a JSON array (fails unless it is one, sorted). */
static json_t *kv_list(h_molt_t *h)
{
    h_resp_t r;
    http_once(h, "GET", "/kv/", NULL, 0, &r);
    H_CHECK(r.status == 200, "GET /kv/: %d '%s'", r.status, r.body);
    const char *ct = h_resp_header(&r, "Content-Type");
    H_CHECK(ct && strcmp(ct, "application/json") == 0, "GET /kv/: Content-Type %s", ct ? ct : "none");
    json_error_t jerr;
    json_t *a = json_loadb(r.body, r.body_len, 0, &jerr);
    H_CHECK(json_is_array(a), "GET /kv/: not a JSON array (%s): %s", jerr.text, r.body);
    for (size_t i = 1; i < json_array_size(a); i++)
        H_CHECK(strcmp(json_string_value(json_array_get(a, i - 1)), json_string_value(json_array_get(a, i))) < 0,
                "GET /kv/: not sorted: %s", r.body);
    h_resp_free(&r);
    return a;
}

/* GET path (under /count/) on a fresh connection: the parsed JSON answer, checked for its shape. */
static json_t *counter_get(h_molt_t *h, const char *path)
{
    h_resp_t r;
    http_once(h, "GET", path, NULL, 0, &r);
    H_CHECK(r.status == 200, "GET %s: %d '%s'", path, r.status, r.body);
    const char *ct = h_resp_header(&r, "Content-Type");
    H_CHECK(ct && strcmp(ct, "application/json") == 0, "GET %s: Content-Type %s", path, ct ? ct : "none");
    json_error_t jerr;
    json_t *o = json_loadb(r.body, r.body_len, 0, &jerr);
    H_CHECK(json_is_object(o), "GET %s: not a JSON object (%s): %s", path, jerr.text, r.body);
    H_CHECK(json_is_integer(json_object_get(o, "pid")) && json_is_object(json_object_get(o, "counts")) &&
                json_object_size(o) == 2,
            "GET %s: expected {\"pid\": N, \"counts\": {...}}, got %s", path, r.body);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(o, "counts"), k, v)
        H_CHECK(json_is_integer(v) && json_integer_value(v) > 0, "GET %s: count of %s is not a positive integer: %s",
                path, k, r.body);
    h_resp_free(&r);
    return o;
}

/* `moltctl state NAME` as the control socket answers it: the reply, checked ok. */
static json_t *state_dump(h_molt_t *h, const char *name)
{
    char req[256];
    snprintf(req, sizeof(req), "{\"cmd\":\"state\",\"name\":\"%s\"}", name);
    json_t *o = h_ctl(h, req);
    H_CHECK(o && json_is_true(json_object_get(o, "ok")), "state %s failed: %s", name,
            o ? json_string_value(json_object_get(o, "error")) : "no reply");
    return o;
}

/* A value of n bytes in which every byte value occurs (a deterministic pseudo-random sequence). */
static char *test_bytes(size_t n, unsigned seed)
{
    char *v = malloc(n ? n : 1);
    H_CHECK(v != NULL, "out of memory");
    uint32_t x = 2463534242u ^ seed;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        v[i] = (char)(x >> 24);
    }
    return v;
}

/* moltd -t on h's config: exit 1, and stderr holds every needle. */
static void check_refused(h_molt_t *h, const char *const *needles, const char *what)
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
}

/* =============================================================================================
 * serving (one generation): kv
 * ============================================================================================= */

START_TEST(test_kv_basics)
{
    h_molt_t *h = state_new(2, NULL, NULL);
    h_start_ready(h);
    h_resp_t r;

    json_t *keys = kv_list(h);
    H_CHECK(json_array_size(keys) == 0, "a new kv lists %zu keys", json_array_size(keys));
    json_decref(keys);

    kv_put(h, "a", "1", 201);
    kv_put(h, "a", "two", 204);
    kv_get(h, "a", "two");
    kv_put(h, "b/c%20d", "raw", 201); /* '/' allowed, no percent-decoding */
    kv_get(h, "b/c%20d", "raw");
    kv_expect_status(h, "GET", "b/c%2520d", 404);
    http_once(h, "GET", "/kv/b/c d", NULL, 0, &r); /* a raw space: http_parser may take it or refuse it */
    H_CHECK(r.status == 404 || r.status == 400, "GET '/kv/b/c d': %d '%s'", r.status, r.body);
    h_resp_free(&r);
    kv_put(h, "empty", "", 201);
    kv_get(h, "empty", "");

    /* The query is not part of the key. */
    http_once(h, "GET", "/kv/a?x=1", NULL, 0, &r);
    H_CHECK(r.status == 200 && strcmp(r.body, "two") == 0, "GET /kv/a?x=1: %d '%s'", r.status, r.body);
    h_resp_free(&r);

    /* HEAD: GET's status and headers, no body. */
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    c.no_body = true;
    h_conn_send_str(&c, "HEAD /kv/a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    int rc = h_conn_read(&c, &r, 5000);
    h_conn_close(&c);
    H_CHECK(rc == 0 && r.status == 200 && r.body_len == 0, "HEAD /kv/a: %d %d '%s'", rc, r.status, r.body);
    const char *len = h_resp_header(&r, "Content-Length");
    H_CHECK(len && strcmp(len, "3") == 0, "HEAD /kv/a: Content-Length %s, expected GET's 3", len ? len : "none");
    h_resp_free(&r);

    keys = kv_list(h);
    char *text = json_dumps(keys, JSON_COMPACT);
    H_CHECK(text && strcmp(text, "[\"a\",\"b/c%20d\",\"empty\"]") == 0, "GET /kv/: %s", text);
    free(text);
    json_decref(keys);

    kv_expect_status(h, "DELETE", "a", 204);
    kv_expect_status(h, "GET", "a", 404);
    kv_expect_status(h, "DELETE", "a", 404);
    kv_expect_status(h, "GET", "never", 404);

    /* 405 with Allow: on a key, and on the list. */
    http_once(h, "POST", "/kv/b", "x", 1, &r);
    H_CHECK(r.status == 405, "POST /kv/b: %d '%s'", r.status, r.body);
    const char *allow = h_resp_header(&r, "Allow");
    H_CHECK(allow && strcmp(allow, "GET, HEAD, PUT, DELETE") == 0, "POST /kv/b: Allow %s", allow ? allow : "none");
    h_resp_free(&r);
    http_once(h, "POST", "/kv/", "x", 1, &r);
    H_CHECK(r.status == 405, "POST /kv/: %d '%s'", r.status, r.body);
    allow = h_resp_header(&r, "Allow");
    H_CHECK(allow && strcmp(allow, "GET, HEAD") == 0, "POST /kv/: Allow %s", allow ? allow : "none");
    h_resp_free(&r);

    /* Keys: empty, 1024 bytes (the most), 1025 bytes. */
    http_once(h, "PUT", "/kv/", "x", 1, &r);
    H_CHECK(r.status == 400 && strstr(r.body, "empty"), "PUT /kv/ (empty key): %d '%s'", r.status, r.body);
    h_resp_free(&r);
    http_once(h, "DELETE", "/kv/", NULL, 0, &r);
    H_CHECK(r.status == 400 && strstr(r.body, "empty"), "DELETE /kv/ (empty key): %d '%s'", r.status, r.body);
    h_resp_free(&r);
    char key[1100];
    memset(key, 'k', 1024);
    key[1024] = '\0';
    kv_put(h, key, "long", 201);
    kv_get(h, key, "long");
    memcpy(key + 1024, "k", 2);
    H_CHECK(kv_curl(h, &r, "PUT", key, "longer") == 0, "curl PUT of a 1025-byte key failed");
    H_CHECK(r.status == 400 && strstr(r.body, "1024"), "PUT of a 1025-byte key: %d '%s'", r.status, r.body);
    h_resp_free(&r);
    kv_expect_status(h, "GET", key, 400);
}
END_TEST

START_TEST(test_kv_replicated)
{
    enum { NKEYS = 50, NDEL = 10, NGETS = 20, NW = 3 };
    h_molt_t *h = state_new(NW, NULL, NULL);
    h_start_ready(h);
    h_resp_t r;
    char path[64], val[64];
    for (int i = 0; i < NKEYS; i++) {
        snprintf(path, sizeof(path), "/kv/k%02d", i);
        snprintf(val, sizeof(val), "value of key %d", i);
        http_once(h, "PUT", path, val, strlen(val), &r);
        H_CHECK(r.status == 201 && r.body_len == 0, "PUT %s: %d '%s', expected 201 and no body", path, r.status,
                r.body);
        h_resp_free(&r);
    }
    /* Acknowledged means applied everywhere: whichever worker answers has it. */
    for (int i = 0; i < NKEYS; i++) {
        snprintf(path, sizeof(path), "/kv/k%02d", i);
        snprintf(val, sizeof(val), "value of key %d", i);
        for (int j = 0; j < NGETS; j++) {
            http_once(h, "GET", path, NULL, 0, &r);
            H_CHECK(r.status == 200 && strcmp(r.body, val) == 0,
                    "GET %s (connection %d): %d '%s', expected 200 '%s'", path, j, r.status, r.body, val);
            h_resp_free(&r);
        }
    }
    /* Deletes too: the first NDEL keys are gone everywhere, the others stay. */
    for (int i = 0; i < NDEL; i++) {
        snprintf(path, sizeof(path), "/kv/k%02d", i);
        http_once(h, "DELETE", path, NULL, 0, &r);
        H_CHECK(r.status == 204 && r.body_len == 0, "DELETE %s: %d '%s'", path, r.status, r.body);
        h_resp_free(&r);
    }
    for (int i = 0; i < NDEL + 2; i++) {
        snprintf(path, sizeof(path), "/kv/k%02d", i);
        for (int j = 0; j < NGETS; j++) {
            http_once(h, "GET", path, NULL, 0, &r);
            H_CHECK(r.status == (i < NDEL ? 404 : 200), "GET %s (connection %d) after the deletes: %d '%s'", path, j,
                    r.status, r.body);
            h_resp_free(&r);
        }
    }
    for (int j = 0; j < NGETS; j++) {
        json_t *keys = kv_list(h);
        H_CHECK(json_array_size(keys) == NKEYS - NDEL &&
                    strcmp(json_string_value(json_array_get(keys, 0)), "k10") == 0,
                "GET /kv/ (connection %d): %zu keys, expected k10..k49", j, json_array_size(keys));
        json_decref(keys);
    }
    /* Every worker's own table, as state_save packs it: the same 40 keys and values. */
    json_t *o = state_dump(h, "kv");
    json_t *ws = json_object_get(o, "workers");
    H_CHECK(json_array_size(ws) == NW, "state kv lists %zu workers, expected %d", json_array_size(ws), NW);
    for (size_t w = 0; w < NW; w++) {
        json_t *st = json_object_get(json_array_get(ws, w), "state");
        H_CHECK(json_is_object(st) && json_object_size(st) == NKEYS - NDEL, "worker %zu holds %zu keys, expected %d",
                w, json_object_size(st), NKEYS - NDEL);
        for (int i = NDEL; i < NKEYS; i++) {
            snprintf(path, sizeof(path), "k%02d", i);
            snprintf(val, sizeof(val), "value of key %d", i);
            const char *got = json_string_value(json_object_get(st, path));
            H_CHECK(got && strcmp(got, val) == 0, "worker %zu: %s is '%s', expected '%s'", w, path, got ? got : "(none)",
                    val);
        }
    }
    json_decref(o);

    /* Were the reads spread? (Not guaranteed by anything: said, not failed.) */
    pid_t pids[NW], seen[NW] = {0};
    worker_pids(h, pids, NW);
    size_t nseen = 0;
    for (int j = 0; j < 60 && nseen < NW; j++) {
        json_t *c = counter_get(h, "/count/spread");
        pid_t pid = (pid_t)json_integer_value(json_object_get(c, "pid"));
        json_decref(c);
        bool known = false;
        for (size_t s = 0; s < nseen; s++)
            known |= seen[s] == pid;
        if (!known)
            seen[nseen++] = pid;
    }
    if (nseen < 2)
        fprintf(stderr, "test_kv_replicated: fresh connections all reached one worker: the GETs show little\n");
}
END_TEST

START_TEST(test_kv_large)
{
    enum { NW = 3, NGETS = 12 };
    /* Around the largest value one sibling message carries, and well past it: sent in parts. */
    static const size_t sizes[] = {1, 46 * 1024, 47 * 1024, 48 * 1024, 48 * 1024 + 1, 100000, ONE_MIB};
    h_molt_t *h = state_new(NW, NULL, NULL);
    h_start_ready(h);
    char file[PATH_MAX + 32], data[PATH_MAX + 40], key[64];
    snprintf(file, sizeof(file), "%s/value.bin", h->dir);
    snprintf(data, sizeof(data), "@%s", file);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        char *v = test_bytes(sizes[s], (unsigned)s);
        h_write_file(file, v, sizes[s], 0644);
        snprintf(key, sizeof(key), "big%zu", s);
        kv_put(h, key, data, 201);
        for (int j = 0; j < NGETS; j++) {
            h_resp_t r;
            H_CHECK(kv_curl(h, &r, "GET", key, NULL) == 0, "curl GET /kv/%s failed", key);
            H_CHECK(r.status == 200 && r.body_len == sizes[s] && memcmp(r.body, v, sizes[s]) == 0,
                    "GET /kv/%s (connection %d): %d with %zu bytes, expected the %zu bytes PUT", key, j, r.status,
                    r.body_len, sizes[s]);
            h_resp_free(&r);
        }
        free(v);
    }
    /* Replacing a large value: 204, and the new bytes everywhere. */
    char *v = test_bytes(ONE_MIB, 99);
    h_write_file(file, v, ONE_MIB, 0644);
    snprintf(key, sizeof(key), "big%zu", sizeof(sizes) / sizeof(sizes[0]) - 1);
    kv_put(h, key, data, 204);
    char path[80];
    snprintf(path, sizeof(path), "/kv/%s", key);
    for (int j = 0; j < NGETS; j++) {
        h_resp_t r;
        http_once(h, "GET", path, NULL, 0, &r);
        H_CHECK(r.status == 200 && r.body_len == ONE_MIB && memcmp(r.body, v, ONE_MIB) == 0,
                "GET %s after replacing it (connection %d): %d with %zu bytes", path, j, r.status, r.body_len);
        h_resp_free(&r);
    }
    free(v);
    /* One byte over http.max_body_bytes: the host's 413, nothing stored. */
    v = test_bytes(ONE_MIB + 1, 7);
    h_write_file(file, v, ONE_MIB + 1, 0644);
    free(v);
    h_resp_t r;
    H_CHECK(kv_curl(h, &r, "PUT", "toobig", data) == 0, "curl PUT /kv/toobig failed");
    H_CHECK(r.status == 413, "PUT of 1 MiB + 1 byte: %d, expected 413", r.status);
    h_resp_free(&r);
    kv_expect_status(h, "GET", "toobig", 404);
}
END_TEST

START_TEST(test_kv_limits)
{
    h_molt_t *h = state_new(2, cfg_json("{\"max_keys\": 2, \"max_value_bytes\": 10}"), NULL);
    h_start_ready(h);
    h_resp_t r;
    kv_put(h, "one", "1", 201);
    kv_put(h, "two", "2", 201);
    H_CHECK(kv_curl(h, &r, "PUT", "three", "3") == 0, "curl PUT /kv/three failed");
    H_CHECK(r.status == 507 && strstr(r.body, "max_keys"), "PUT of a third key with max_keys 2: %d '%s'", r.status,
            r.body);
    h_resp_free(&r);
    kv_put(h, "two", "0123456789", 204); /* replacing is fine when full; 10 bytes is the most */
    H_CHECK(kv_curl(h, &r, "PUT", "one", "0123456789a") == 0, "curl PUT /kv/one failed");
    H_CHECK(r.status == 413 && strstr(r.body, "max_value_bytes"), "PUT of 11 bytes with max_value_bytes 10: %d '%s'",
            r.status, r.body);
    h_resp_free(&r);
    kv_get(h, "one", "1");
    kv_expect_status(h, "DELETE", "one", 204);
    kv_put(h, "three", "3", 201);
    kv_get(h, "two", "0123456789");
}
END_TEST

/* =============================================================================================
 * serving (one generation): counter
 * ============================================================================================= */

START_TEST(test_counter_counts)
{
    enum { NW = 2 };
    static const char *const paths[] = {"/count/a", "/count/b", "/count/a?x=1", "/count/a", "/count/c/d",
                                        "/count/b", "/count/a", "/count/b?y", "/count/a", "/count/c/d"};
    static const char *const counted[] = {"/count/a", "/count/b", "/count/c/d"};
    static const long long expect[] = {5, 3, 2};
    const size_t n = sizeof(paths) / sizeof(paths[0]);
    h_molt_t *h = state_new(NW, NULL, NULL);
    h_start_ready(h);
    pid_t pids[NW];
    worker_pids(h, pids, NW);
    /* A worker's count of a path only grows, and every count it ever had shows in
     * the answer that made it: the largest seen per worker is its final count. */
    long long best[NW][3] = {{0}};
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < n; i++) {
            json_t *o = counter_get(h, paths[i]);
            pid_t pid = (pid_t)json_integer_value(json_object_get(o, "pid"));
            int w = pid == pids[0] ? 0 : pid == pids[1] ? 1 : -1;
            H_CHECK(w >= 0, "GET %s: pid %d is not a worker's (%d, %d)", paths[i], (int)pid, (int)pids[0],
                    (int)pids[1]);
            json_t *counts = json_object_get(o, "counts");
            char bare[64];
            snprintf(bare, sizeof(bare), "%.*s", (int)strcspn(paths[i], "?"), paths[i]);
            H_CHECK(json_integer_value(json_object_get(counts, bare)) >= 1, "GET %s: its own path is not counted",
                    paths[i]);
            const char *k;
            json_t *v;
            json_object_foreach(counts, k, v)
            {
                size_t p = 0;
                while (p < 3 && strcmp(k, counted[p]) != 0)
                    p++;
                H_CHECK(p < 3, "GET %s: counts a path '%s' never asked for", paths[i], k);
                if (json_integer_value(v) > best[w][p])
                    best[w][p] = json_integer_value(v);
            }
            json_decref(o);
        }
    }
    for (size_t p = 0; p < 3; p++)
        H_CHECK(best[0][p] + best[1][p] == 3 * expect[p], "%s: the workers counted %lld + %lld, expected %lld",
                counted[p], best[0][p], best[1][p], 3 * expect[p]);
    /* The same from each worker's state. */
    json_t *o = state_dump(h, "counter");
    json_t *ws = json_object_get(o, "workers");
    H_CHECK(json_array_size(ws) == NW, "state counter lists %zu workers", json_array_size(ws));
    for (size_t p = 0; p < 3; p++) {
        long long sum = 0;
        for (size_t w = 0; w < NW; w++)
            sum += json_integer_value(json_object_get(json_object_get(json_array_get(ws, w), "state"), counted[p]));
        H_CHECK(sum == 3 * expect[p], "state counter: %s sums to %lld, expected %lld", counted[p], sum, 3 * expect[p]);
    }
    json_decref(o);
}
END_TEST

START_TEST(test_counter_exact)
{
    h_molt_t *h = state_new(1, NULL, cfg_json("{\"max_paths\": 2}"));
    h_start_ready(h);
    pid_t pid;
    worker_pids(h, &pid, 1);
    static const struct {
        const char *path, *counts;
    } steps[] = {
        {"/count/x", "{\"/count/x\":1}"},
        {"/count/x", "{\"/count/x\":2}"},
        {"/count/y?q=1", "{\"/count/x\":2,\"/count/y\":1}"},
        {"/count/x", "{\"/count/x\":3,\"/count/y\":1}"},
        {"/count/z", "{\"(other)\":1,\"/count/x\":3,\"/count/y\":1}"}, /* beyond max_paths 2 */
        {"/count/w", "{\"(other)\":2,\"/count/x\":3,\"/count/y\":1}"},
        {"/count/y", "{\"(other)\":2,\"/count/x\":3,\"/count/y\":2}"},
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        json_t *o = counter_get(h, steps[i].path);
        H_CHECK(json_integer_value(json_object_get(o, "pid")) == pid, "GET %s: pid %lld, the worker is %d",
                steps[i].path, (long long)json_integer_value(json_object_get(o, "pid")), (int)pid);
        char *text = json_dumps(json_object_get(o, "counts"), JSON_COMPACT | JSON_SORT_KEYS);
        H_CHECK(text && strcmp(text, steps[i].counts) == 0, "GET %s (request %zu): counts %s, expected %s",
                steps[i].path, i + 1, text, steps[i].counts);
        free(text);
        json_decref(o);
    }
    /* Any method counts. */
    h_resp_t r;
    http_once(h, "POST", "/count/x", "body", 4, &r);
    H_CHECK(r.status == 200 && strstr(r.body, "\"/count/x\":4"), "POST /count/x: %d '%s'", r.status, r.body);
    h_resp_free(&r);
}
END_TEST

/* =============================================================================================
 * config errors
 * ============================================================================================= */

static const struct {
    const char *instance, *config, *needle;
} bad_configs[] = {
    {"kv", "{\"max_keys\": \"many\"}", "max_keys must be an integer"},
    {"kv", "{\"max_keys\": 0}", "max_keys must be an integer from 1"},
    {"kv", "{\"max_value_bytes\": -1}", "max_value_bytes must be an integer"},
    {"kv", "{\"max_value_bytes\": 1.5}", "max_value_bytes must be an integer"},
    {"kv", "{\"prefix\": \"kv\"}", "prefix must be a string starting with \"/\""},
    {"kv", "{\"max_key\": 5}", "unknown key \"max_key\""},
    {"counter", "{\"max_paths\": true}", "max_paths must be an integer"},
    {"counter", "{\"max_paths\": 0}", "max_paths must be an integer from 1"},
    {"counter", "{\"paths\": 5}", "unknown key \"paths\""},
};

/* One bad config (a loop test over bad_configs): moltd -t refuses it, naming the key. */
START_TEST(test_config_error)
{
    bool is_kv = strcmp(bad_configs[_i].instance, "kv") == 0;
    json_t *cfg = cfg_json(bad_configs[_i].config);
    h_molt_t *h = state_new(1, is_kv ? cfg : NULL, is_kv ? NULL : cfg);
    char what[160];
    snprintf(what, sizeof(what), "%s config %s", bad_configs[_i].instance, bad_configs[_i].config);
    check_refused(h, (const char *const[]){"init failed", bad_configs[_i].needle, NULL}, what);
}
END_TEST

START_TEST(test_config_good)
{
    h_molt_t *h = state_new(1, cfg_json("{\"max_keys\": 5, \"max_value_bytes\": 100, \"prefix\": \"/kv/\"}"),
                            cfg_json("{\"max_paths\": 3}"));
    h_write_config(h);
    h_cmd_t c;
    int code = h_run(&c, 20000, H_MOLTD, "-c", h->config_path, "-t", NULL);
    if (code != 0)
        fprintf(stderr, "moltd -t: %s%s", c.out, c.err);
    h_cmd_free(&c);
    H_CHECK(code == 0, "moltd -t with good kv and counter configs exited with %d", code);
}
END_TEST

/* =============================================================================================
 * across generations (reloads, state handoff, worker-count changes): to come
 * ============================================================================================= */

/* ---- suite --------------------------------------------------------------------------------- */

static Suite *state_suite(void)
{
    Suite *s = suite_create("integ_state");
    TCase *tc = h_tcase("serving", 180);
    tcase_add_test(tc, test_kv_basics);
    tcase_add_test(tc, test_kv_replicated);
    tcase_add_test(tc, test_kv_large);
    tcase_add_test(tc, test_kv_limits);
    tcase_add_test(tc, test_counter_counts);
    tcase_add_test(tc, test_counter_exact);
    suite_add_tcase(s, tc);
    tc = h_tcase("config", 60);
    tcase_add_loop_test(tc, test_config_error, 0, (int)(sizeof(bad_configs) / sizeof(bad_configs[0])));
    tcase_add_test(tc, test_config_good);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(state_suite());
    srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose lists every test */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
