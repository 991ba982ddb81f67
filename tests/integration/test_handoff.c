/*
 * The "handoff" integration theme: a reload carries each stateful plugin
 * instance's state from the old workers to the new ones over socketpairs
 * (supervisor/handoff.c, worker/handoff.c), and every way a handoff can fail
 * rolls back with phase "handoff" and a reason that names what failed, while
 * the old workers keep serving with their state. Uses the test plugin
 * tests/plugins/tp_state.c (instance "st" on /state), which fails on command.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>

#include "tests/integration/harness.h"

/* ---- helpers ------------------------------------------------------------------------------- */

/* A moltd with `workers` workers and tp_state instance "st" on /state (file, config). */
static h_molt_t *new_state(unsigned workers, const char *file, json_t *config)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "workers", json_integer(workers));
    h_cfg_set(h, "reload.health.stable_ms", json_integer(0));
    h_add_plugin(h, "st", file, config);
    h_add_route(h, "/state", "st");
    return h;
}

/* Replaces instance "st"'s file and config, and writes the config. */
static void set_state(h_molt_t *h, const char *file, json_t *config)
{
    json_t *plugins = json_object_get(h->cfg, "plugins");
    for (size_t i = 0; i < json_array_size(plugins); i++) {
        json_t *p = json_array_get(plugins, i);
        if (strcmp(json_string_value(json_object_get(p, "name")), "st") == 0) {
            json_object_set_new(p, "file", json_string(file));
            json_object_set_new(p, "config", config ? config : json_object());
        }
    }
    h_write_config(h);
}

/* GET /state on a fresh connection: "value=V restores=N pid=P". */
static void get_state(h_molt_t *h, char *out, size_t len)
{
    h_resp_t r;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/state", h->port);
    H_CHECK(h_curl(h, &r, url, NULL) == 0 && r.status == 200, "GET /state failed (%d)", r.status);
    snprintf(out, len, "%s", r.body);
    h_resp_free(&r);
}

static void put_state(h_molt_t *h, const char *value)
{
    h_resp_t r;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/state", h->port);
    H_CHECK(h_curl(h, &r, "-X", "PUT", "--data-binary", value, url, NULL) == 0 && r.status == 204,
            "PUT /state failed (%d)", r.status);
    h_resp_free(&r);
}

/* moltctl reload --json: its result object (the caller frees it). */
static json_t *reload_json(h_molt_t *h)
{
    h_cmd_t c;
    h_run(&c, 60000, H_MOLTCTL, "-s", h->sock_path, "reload", "--json", (char *)NULL);
    json_t *o = json_loads(c.out, 0, NULL);
    H_CHECK(o != NULL, "moltctl reload --json printed no JSON (exit %d): %s%s", c.code, c.out, c.err);
    h_cmd_free(&c);
    return o;
}

/* Expects a rollback in phase handoff whose reason contains `want`. */
static void expect_handoff_rollback(json_t *o, const char *want)
{
    const char *result = json_string_value(json_object_get(o, "result"));
    const char *phase = json_string_value(json_object_get(o, "phase"));
    const char *reason = json_string_value(json_object_get(o, "reason"));
    H_CHECK(result && strcmp(result, "rolled_back") == 0, "result %s, expected rolled_back (reason: %s)",
            result ? result : "(none)", reason ? reason : "");
    H_CHECK(phase && strcmp(phase, "handoff") == 0, "rolled back in phase %s, expected handoff (reason: %s)",
            phase ? phase : "(none)", reason ? reason : "");
    H_CHECK(reason && strstr(reason, want), "reason '%s' does not say '%s'", reason ? reason : "", want);
}

static void expect_committed(json_t *o)
{
    H_CHECK(json_is_true(json_object_get(o, "ok")), "reload not committed: %s in phase %s",
            json_string_value(json_object_get(o, "reason")), json_string_value(json_object_get(o, "phase")));
}

static void worker_pids(h_molt_t *h, pid_t *pids, size_t n)
{
    json_t *st = h_status(h);
    H_CHECK(st && h_status_pids(st, pids, n) == n, "status has not %zu worker slots", n);
    json_decref(st);
}

/* ---- tests --------------------------------------------------------------------------------- */

/* The value a client stored survives reloads; the reload says what it moved. */
START_TEST(test_state_survives)
{
    h_molt_t *h = new_state(1, "tp_state.so", json_pack("{s:s,s:i}", "value", "initial", "pad", 1000));
    h_start_ready(h);
    put_state(h, "stored-by-a-client");
    for (int i = 0; i < 3; i++) {
        set_state(h, "tp_state.so", json_pack("{s:s,s:i}", "value", "initial", "pad", 1001 + i));
        json_t *o = reload_json(h);
        expect_committed(o);
        json_t *ho = json_object_get(o, "handoff");
        H_CHECK(json_is_object(ho), "reload --json has no handoff figures");
        H_CHECK(json_integer_value(json_object_get(ho, "bytes")) > 1000, "handoff bytes %lld, expected > 1000",
                (long long)json_integer_value(json_object_get(ho, "bytes")));
        H_CHECK(strcmp(json_string_value(json_object_get(ho, "mode")), "snapshot") == 0, "mode is not snapshot");
        json_decref(o);
        char body[512];
        get_state(h, body, sizeof(body));
        H_CHECK(strncmp(body, "value=stored-by-a-client restores=1 ", 36) == 0,
                "after reload %d: '%s', expected the stored value restored once", i + 1, body);
    }
}
END_TEST

/* Each way a handoff can fail: rollback in phase handoff with the reason,
 * the old worker (same pid) still serving with its state. */
static const struct {
    const char *old_file;
    const char *old_cfg; /* JSON */
    const char *new_file;
    const char *new_cfg;
    const char *reason;
} failures[] = {
    {"tp_state.so", "{}", "tp_state.so", "{\"fail_restore\":true}", "refused on purpose"},
    {"tp_state_v2.so", "{}", "tp_state.so", "{}", "newer than this tp_state 1.0.0 supports (1)"},
    {"tp_state.so", "{\"fail_save\":true}", "tp_state.so", "{}", "state_save failed"},
    {"tp_state.so", "{\"two_objects\":true}", "tp_state.so", "{}", "did not pack exactly one msgpack object"},
    {"tp_state.so", "{\"corrupt\":true}", "tp_state.so", "{}", "the state stream from worker 0 of the old generation"},
    {"tp_state.so", "{\"hold_ms\":1500}", "tp_state.so", "{}", "stalled"},
};

START_TEST(test_handoff_failure)
{
    json_t *oc = json_loads(failures[_i].old_cfg, 0, NULL), *nc = json_loads(failures[_i].new_cfg, 0, NULL);
    /* h_ms: a handoff that works must make it in time; a hold still outlasts it */
    json_t *hold = json_object_get(oc, "hold_ms");
    if (hold)
        json_object_set_new(oc, "hold_ms", json_integer(h_ms((int)json_integer_value(hold))));
    h_molt_t *h = new_state(1, failures[_i].old_file, oc);
    h_cfg_set(h, "reload.handoff_timeout_ms", json_integer(h_ms(500)));
    h_start_ready(h);
    put_state(h, "kept");
    pid_t before;
    worker_pids(h, &before, 1);
    set_state(h, failures[_i].new_file, nc);
    json_t *o = reload_json(h);
    expect_handoff_rollback(o, failures[_i].reason);
    json_decref(o);
    char body[512];
    get_state(h, body, sizeof(body));
    char want[64];
    snprintf(want, sizeof(want), "value=kept restores=0 pid=%d\n", (int)before);
    /* The pid in the body: the old worker itself answered, with its state (the
     * process table may still list the rolled-back worker as it drains). */
    H_CHECK(strcmp(body, want) == 0, "after the rollback: '%s', expected '%s'", body, want);
}
END_TEST

/* An instance the new generation no longer has: its state is dropped with a
 * log line naming it, and the reload commits. */
START_TEST(test_removed_instance_dropped)
{
    h_molt_t *h = new_state(1, "tp_state.so", json_pack("{s:s}", "value", "gone-with-it"));
    h_start_ready(h);
    json_t *plugins = json_object_get(h->cfg, "plugins"), *routes = json_object_get(h->cfg, "routes");
    for (size_t i = json_array_size(plugins); i-- > 0;)
        if (strcmp(json_string_value(json_object_get(json_array_get(plugins, i), "name")), "st") == 0)
            json_array_remove(plugins, i);
    for (size_t i = json_array_size(routes); i-- > 0;)
        if (strcmp(json_string_value(json_object_get(json_array_get(routes, i), "plugin")), "st") == 0)
            json_array_remove(routes, i);
    h_write_config(h);
    json_t *o = reload_json(h);
    expect_committed(o);
    json_decref(o);
    const char *const needle[] = {"the state of instance st (plugin tp_state", "is dropped",
                                  "this generation has no instance of that name", NULL};
    char *line = h_log_line(h, needle);
    H_CHECK(line != NULL, "no log line says that st's state was dropped");
    free(line);
}
END_TEST

/* on_restore_error "fresh": a failed restore starts the instance fresh and the reload commits. */
START_TEST(test_restore_error_fresh)
{
    h_molt_t *h = new_state(1, "tp_state.so", NULL);
    h_cfg_set(h, "reload.on_restore_error", json_string("fresh"));
    h_start_ready(h);
    put_state(h, "lost");
    set_state(h, "tp_state.so", json_pack("{s:b,s:s}", "fail_restore", 1, "value", "fresh-start"));
    json_t *o = reload_json(h);
    expect_committed(o);
    json_decref(o);
    char body[512];
    get_state(h, body, sizeof(body));
    H_CHECK(strncmp(body, "value=fresh-start restores=0 ", 29) == 0, "after the reload: '%s'", body);
}
END_TEST

/* An old worker killed in the middle of its handoff: rollback naming it;
 * the other old worker keeps its pid and its state. */
START_TEST(test_old_killed_during_handoff)
{
    h_molt_t *h = new_state(2, "tp_state.so", json_pack("{s:s,s:i}", "value", "v", "hold_ms", 3000));
    h_cfg_set(h, "reload.handoff_timeout_ms", json_integer(10000));
    h_start_ready(h);
    pid_t old[2];
    worker_pids(h, old, 2);
    set_state(h, "tp_state.so", json_pack("{s:s}", "value", "v"));
    int fd = h_ctl_open(h, "{\"cmd\":\"reload\"}");
    H_CHECK(fd >= 0, "cannot ask for a reload");
    /* Both old workers are now inside their (3 s) save. */
    const char *const needle[] = {"handoff: snapshot mode", NULL};
    char *line = NULL;
    for (long long end = h_now_ms() + 10000; !(line = h_log_line(h, needle)) && h_now_ms() < end;)
        h_sleep_ms(20);
    H_CHECK(line != NULL, "the reload never reached its handoff");
    free(line);
    h_sleep_ms(300);
    H_CHECK(kill(old[1], SIGKILL) == 0, "kill(%d): %s", (int)old[1], strerror(errno));
    json_t *o = h_ctl_reply(fd, 30000);
    H_CHECK(o != NULL, "no reload reply");
    char want[128];
    snprintf(want, sizeof(want), "worker 1 (pid %d) of the old generation killed by signal 9", (int)old[1]);
    expect_handoff_rollback(o, want);
    json_decref(o);
    pid_t now[2];
    H_CHECK(h_wait_ready(h, 10000), "the killed worker was not replaced");
    worker_pids(h, now, 2);
    H_CHECK(now[0] == old[0], "old worker 0 was replaced (%d -> %d)", (int)old[0], (int)now[0]);
    H_CHECK(now[1] != old[1] && now[1] > 0, "old worker 1 was not respawned");
}
END_TEST

/* Worker counts change: partitioned state folds (2 -> 1: new worker 0
 * restores both old workers) and spreads (1 -> 2: only new worker 0 restores
 * old worker 0's partitioned state, j mod 2 = 0; new worker 1 gets its
 * replicated stream, 1 mod 1 = 0, which carries nothing of tp_state). */
START_TEST(test_worker_count_change)
{
    h_molt_t *h = new_state(2, "tp_state.so", NULL);
    h_start_ready(h);
    h_cfg_set(h, "workers", json_integer(1));
    set_state(h, "tp_state.so", NULL);
    json_t *o = reload_json(h);
    expect_committed(o);
    json_t *news = json_object_get(json_object_get(o, "handoff"), "new_workers");
    H_CHECK(json_array_size(news) == 1 &&
                json_integer_value(json_object_get(json_array_get(news, 0), "streams")) == 2,
            "2 -> 1: new worker 0 did not get 2 streams");
    json_decref(o);
    char body[512];
    get_state(h, body, sizeof(body));
    H_CHECK(strstr(body, " restores=2 "), "2 -> 1: '%s', expected 2 restores", body);

    h_cfg_set(h, "workers", json_integer(2));
    set_state(h, "tp_state.so", NULL);
    o = reload_json(h);
    expect_committed(o);
    news = json_object_get(json_object_get(o, "handoff"), "new_workers");
    H_CHECK(json_array_size(news) == 2, "1 -> 2: %zu new workers got streams, expected 2", json_array_size(news));
    for (size_t i = 0; i < 2; i++) {
        json_t *w = json_array_get(news, i);
        long long slot = json_integer_value(json_object_get(w, "slot"));
        long long inst = json_integer_value(json_object_get(w, "instances"));
        H_CHECK(inst == (slot == 0 ? 1 : 0), "1 -> 2: new worker %lld restored %lld instances", slot, inst);
    }
    json_decref(o);
}
END_TEST

/* moltctl state NAME: every worker's state as JSON, produced by its save. */
START_TEST(test_state_command)
{
    h_molt_t *h = new_state(2, "tp_state.so", json_pack("{s:s}", "value", "shown"));
    h_start_ready(h);
    h_cmd_t c;
    int rc = h_run(&c, 10000, H_MOLTCTL, "-s", h->sock_path, "state", "st", "--json", (char *)NULL);
    H_CHECK(rc == 0, "moltctl state st exited %d: %s%s", rc, c.out, c.err);
    json_t *o = json_loads(c.out, 0, NULL);
    H_CHECK(o != NULL, "moltctl state --json printed no JSON: %s", c.out);
    json_t *ws = json_object_get(o, "workers");
    H_CHECK(json_array_size(ws) == 2, "%zu workers in the reply, expected 2", json_array_size(ws));
    for (size_t i = 0; i < 2; i++) {
        json_t *st = json_object_get(json_array_get(ws, i), "state");
        H_CHECK(json_is_object(st) && strcmp(json_string_value(json_object_get(st, "value")), "shown") == 0,
                "worker %zu's state has no value 'shown'", i);
    }
    json_decref(o);
    h_cmd_free(&c);
    rc = h_run(&c, 10000, H_MOLTCTL, "-s", h->sock_path, "state", "nosuch", (char *)NULL);
    H_CHECK(rc == 1 && strstr(c.err, "no instance named \"nosuch\""), "state of a missing instance: exit %d: %s%s",
            rc, c.out, c.err);
    h_cmd_free(&c);
    rc = h_run(&c, 10000, H_MOLTCTL, "-s", h->sock_path, "state", "hello", (char *)NULL);
    H_CHECK(rc == 1 && strstr(c.err, "keeps no state"), "state of a stateless instance: exit %d: %s%s", rc, c.out,
            c.err);
    h_cmd_free(&c);
}
END_TEST


/* ---- kv and counter (plugins/kv, plugins/counter) ------------------------------------------- */

/* A moltd with `workers` workers, kv on /kv/ and counter on /count/. */
static h_molt_t *new_kv(unsigned workers)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "workers", json_integer(workers));
    h_cfg_set(h, "reload.health.stable_ms", json_integer(0));
    h_cfg_set(h, "reload.handoff_timeout_ms", json_integer(10000));
    h_add_plugin(h, "kv", "kv.so", NULL);
    h_add_plugin(h, "counter", "counter.so", NULL);
    h_add_route(h, "/kv/", "kv");
    h_add_route(h, "/count/", "counter");
    return h;
}

static int kv_req(h_molt_t *h, const char *method, const char *key, const char *value, h_resp_t *r)
{
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/kv/%s", h->port, key);
    if (value)
        return h_curl(h, r, "-X", method, "--data-binary", value, url, NULL);
    return h_curl(h, r, "-X", method, url, NULL);
}

static void kv_put(h_molt_t *h, const char *key, const char *value)
{
    h_resp_t r;
    H_CHECK(kv_req(h, "PUT", key, value, &r) == 0 && (r.status == 201 || r.status == 204), "PUT /kv/%s: %d %s",
            key, r.status, r.body);
    h_resp_free(&r);
}

/* GET /kv/KEY on `tries` fresh connections (so that several workers answer): always `value`. */
static void kv_expect(h_molt_t *h, const char *key, const char *value, int tries)
{
    for (int i = 0; i < tries; i++) {
        h_resp_t r;
        H_CHECK(kv_req(h, "GET", key, NULL, &r) == 0, "GET /kv/%s failed", key);
        H_CHECK(r.status == 200 && strcmp(r.body, value) == 0, "GET /kv/%s: %d '%s', expected 200 '%s'", key,
                r.status, r.body, value);
        h_resp_free(&r);
    }
}

/* The sum of every worker's counter for `path`, from moltctl state counter. */
static long long counter_total(h_molt_t *h, const char *path)
{
    json_t *o = h_ctl(h, "{\"cmd\":\"state\",\"name\":\"counter\"}");
    H_CHECK(o && json_is_true(json_object_get(o, "ok")), "state counter failed: %s",
            o ? json_string_value(json_object_get(o, "error")) : "no reply");
    long long sum = 0;
    json_t *ws = json_object_get(o, "workers");
    for (size_t i = 0; i < json_array_size(ws); i++)
        sum += json_integer_value(json_object_get(json_object_get(json_array_get(ws, i), "state"), path));
    json_decref(o);
    return sum;
}

/* kv keys and counter values survive reloads that change the worker count: 2 -> 3 -> 1. */
START_TEST(test_kv_counter_worker_counts)
{
    h_molt_t *h = new_kv(2);
    h_start_ready(h);
    char key[32], val[64];
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "value of k%d", i);
        kv_put(h, key, val);
    }
    for (int i = 0; i < 12; i++) {
        h_resp_t r;
        char url[128];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/count/hits", h->port);
        H_CHECK(h_curl(h, &r, url, NULL) == 0 && r.status == 200, "GET /count/hits failed");
        h_resp_free(&r);
    }
    long long hits = counter_total(h, "/count/hits");
    H_CHECK(hits == 12, "counter shows %lld hits, expected 12", hits);
    const unsigned counts[] = {3, 1};
    for (size_t step = 0; step < 2; step++) {
        h_cfg_set(h, "workers", json_integer(counts[step]));
        h_write_config(h);
        json_t *o = reload_json(h);
        expect_committed(o);
        H_CHECK(strcmp(json_string_value(json_object_get(json_object_get(o, "handoff"), "mode")), "strict") == 0,
                "kv is strict: the handoff mode is not strict");
        json_decref(o);
        for (int i = 0; i < 30; i++) {
            snprintf(key, sizeof(key), "k%d", i);
            snprintf(val, sizeof(val), "value of k%d", i);
            kv_expect(h, key, val, 3);
        }
        hits = counter_total(h, "/count/hits");
        H_CHECK(hits == 12, "with %u workers the counters sum to %lld, expected 12", counts[step], hits);
    }
}
END_TEST

/*
 * The writer of test_kv_writer_through_reloads: PUTs key w<N> = "v<N>" one
 * after the other over keep-alive connections (reconnecting whenever one
 * closes), and writes N to `out` for every PUT acknowledged (201/204). A
 * PUT whose connection failed is retried. Stops when `stop` is readable.
 */
static void writer_loop(int port, int out, int stop)
{
    int fd = -1, n = 0;
    char buf[4096];
    for (;;) {
        struct pollfd pfd = {.fd = stop, .events = POLLIN};
        if (poll(&pfd, 1, 0) > 0)
            break;
        if (fd < 0) {
            struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
            sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            struct timeval tv = {.tv_sec = 20};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                close(fd);
                fd = -1;
                h_sleep_ms(5);
                continue;
            }
        }
        char req[256], body[32];
        int blen = snprintf(body, sizeof(body), "v%d", n);
        int len = snprintf(req, sizeof(req), "PUT /kv/w%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s", n,
                           blen, body);
        size_t got = 0;
        bool ok = send(fd, req, (size_t)len, MSG_NOSIGNAL) == len;
        while (ok && !memmem(buf, got, "\r\n\r\n", 4)) {
            ssize_t r = got < sizeof(buf) ? recv(fd, buf + got, sizeof(buf) - got, 0) : -1;
            ok = r > 0;
            got += ok ? (size_t)r : 0;
        }
        /* kv's write answers carry no body: the head is the whole response. */
        bool acked = ok && (memcmp(buf, "HTTP/1.1 201", 12) == 0 || memcmp(buf, "HTTP/1.1 204", 12) == 0);
        if (acked) {
            ssize_t w = write(out, &n, sizeof(n));
            (void)w;
            n++;
        }
        if (!ok || memmem(buf, got, "Connection: close", 17) || !acked) {
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0)
        close(fd);
}

/* Forks writer_loop() writing its acknowledgements to a file in h's dir (a
 * pipe would fill up and stop it); it stops when stop[1] is closed. */
static pid_t writer_start(h_molt_t *h, int stop[2])
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/acks", h->dir);
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    H_CHECK(out >= 0 && pipe2(stop, O_CLOEXEC) == 0, "open(%s) / pipe2: %s", path, strerror(errno));
    pid_t child = fork();
    H_CHECK(child >= 0, "fork: %s", strerror(errno));
    if (child == 0) {
        close(stop[1]);
        writer_loop(h->port, out, stop[0]);
        _exit(0);
    }
    close(out);
    close(stop[0]);
    return child;
}

/* How many PUTs the writer got acknowledged (it numbers them 0, 1, ...). */
static int writer_acks(h_molt_t *h)
{
    char path[PATH_MAX];
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/acks", h->dir);
    char *data = h_read_file(path, &len);
    int count = 0, n;
    for (size_t off = 0; off + sizeof(n) <= len; off += sizeof(n)) {
        memcpy(&n, data + off, sizeof(n));
        H_CHECK(n == count, "the writer's acknowledgements are out of order (%d at %d)", n, count);
        count++;
    }
    free(data);
    return count;
}

/* A client writing continuously through 20 reloads finds every acknowledged PUT afterwards. */
START_TEST(test_kv_writer_through_reloads)
{
    h_molt_t *h = new_kv(2);
    h_cfg_set(h, "reload.idle_grace_ms", json_integer(50));
    h_start_ready(h);
    int stop[2];
    pid_t child = writer_start(h, stop);
    h_sleep_ms(200);
    int committed = 0;
    for (int i = 0; i < 20; i++) {
        json_t *o = reload_json(h);
        committed += json_is_true(json_object_get(o, "ok"));
        json_decref(o);
    }
    h_sleep_ms(200);
    close(stop[1]);
    int wst = 0;
    waitpid(child, &wst, 0);
    int count = writer_acks(h), last = count - 1;
    H_CHECK(committed == 20, "%d of 20 reloads committed", committed);
    H_CHECK(count > 20, "the writer got only %d PUTs acknowledged through 20 reloads", count);
    char key[32], val[32];
    for (int i = 0; i <= last; i++) {
        snprintf(key, sizeof(key), "w%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        kv_expect(h, key, val, 1);
    }
}
END_TEST

/*
 * A worker killed and respawned within its generation catches up: it
 * restores a live sibling's kv table before it accepts, and gets the writes
 * made meanwhile. A writer runs throughout, one worker is killed three
 * times; afterwards every worker's table (moltctl state kv) holds every
 * acknowledged write.
 */
START_TEST(test_kv_respawn_catches_up)
{
    h_molt_t *h = new_kv(2);
    h_start_ready(h);
    int stop[2];
    pid_t child = writer_start(h, stop);
    for (int round = 0; round < 3; round++) {
        h_sleep_ms(300);
        pid_t pids[2];
        worker_pids(h, pids, 2);
        H_CHECK(kill(pids[1], SIGKILL) == 0, "kill(%d): %s", (int)pids[1], strerror(errno));
        H_CHECK(h_wait_pid_gone(pids[1], 5000, NULL), "worker 1 did not die");
        long long end = h_now_ms() + 10000;
        for (;;) {
            char *log = h_log(h);
            int n = 0;
            for (const char *q = log; (q = strstr(q, "caught up")); q++)
                n++;
            free(log);
            if (n > round)
                break;
            H_CHECK(h_now_ms() < end, "respawned worker 1 did not catch up (round %d)", round);
            h_sleep_ms(20);
        }
    }
    h_sleep_ms(300);
    close(stop[1]);
    waitpid(child, NULL, 0);
    int last = writer_acks(h) - 1;
    H_CHECK(last > 10, "the writer got only %d PUTs acknowledged", last + 1);
    json_t *o = h_ctl(h, "{\"cmd\":\"state\",\"name\":\"kv\"}");
    H_CHECK(o && json_is_true(json_object_get(o, "ok")), "state kv failed");
    json_t *ws = json_object_get(o, "workers");
    H_CHECK(json_array_size(ws) == 2, "state kv: %zu workers", json_array_size(ws));
    for (size_t w = 0; w < 2; w++) {
        json_t *table = json_object_get(json_array_get(ws, w), "state");
        char key[32], val[32];
        for (int i = 0; i <= last; i++) {
            snprintf(key, sizeof(key), "w%d", i);
            snprintf(val, sizeof(val), "v%d", i);
            const char *got = json_string_value(json_object_get(table, key));
            H_CHECK(got && strcmp(got, val) == 0, "worker %zu lacks acknowledged write %s (has %s)", w, key,
                    got ? got : "nothing");
        }
    }
    json_decref(o);
}
END_TEST

/*
 * A reload that rolls back after the new generation started accepting (its
 * stable window saw too many 5xx) hands what that generation changed back to
 * the old one: a kv write it acknowledged, a key it deleted, counts it made.
 * The old workers resume (same pids) with that state, and the outcome says so.
 */
START_TEST(test_rollback_hands_back)
{
    h_molt_t *h = new_kv(2);
    h_add_plugin(h, "echo", "tp_echo.so", NULL);
    h_add_route(h, "/echo/", "echo");
    h_start_ready(h);
    kv_put(h, "before", "from generation 1");
    kv_put(h, "gone", "deleted by generation 2");
    pid_t old[2];
    worker_pids(h, old, 2);
    h_cfg_set(h, "reload.health.stable_ms", json_integer(3000));
    h_write_config(h);
    int fd = h_ctl_open(h, "{\"cmd\":\"reload\"}");
    H_CHECK(fd >= 0, "cannot ask for a reload");
    const char *const needle[] = {"the new generation accepts", NULL};
    char *line = NULL;
    for (long long end = h_now_ms() + 10000; !(line = h_log_line(h, needle)) && h_now_ms() < end;)
        h_sleep_ms(10);
    H_CHECK(line != NULL, "the new generation never started accepting");
    free(line);
    /* Generation 2 serves alone now: a write, a delete, five counts, then 5xx. */
    kv_put(h, "canary", "acknowledged by generation 2");
    h_resp_t r;
    H_CHECK(kv_req(h, "DELETE", "gone", NULL, &r) == 0 && r.status == 204, "DELETE /kv/gone: %d", r.status);
    h_resp_free(&r);
    char url[128];
    for (int i = 0; i < 5; i++) {
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/count/hits", h->port);
        H_CHECK(h_curl(h, &r, url, NULL) == 0 && r.status == 200, "GET /count/hits failed");
        h_resp_free(&r);
    }
    for (int i = 0; i < 20; i++) {
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo/fail", h->port);
        H_CHECK(h_curl(h, &r, url, NULL) == 0 && r.status == 500, "GET /echo/fail: %d", r.status);
        h_resp_free(&r);
    }
    json_t *o = h_ctl_reply(fd, 30000);
    H_CHECK(o != NULL, "no reload reply");
    const char *phase = json_string_value(json_object_get(o, "phase"));
    H_CHECK(phase && strcmp(phase, "verify") == 0, "rolled back in phase %s, expected verify (%s)",
            phase ? phase : "(none)", json_string_value(json_object_get(o, "reason")));
    json_t *hb = json_object_get(o, "handback");
    H_CHECK(json_is_true(json_object_get(hb, "ok")) && json_integer_value(json_object_get(hb, "bytes")) > 0,
            "the outcome does not report a hand-back: %s", json_string_value(json_object_get(hb, "reason")));
    json_decref(o);
    pid_t now[2];
    worker_pids(h, now, 2);
    H_CHECK(now[0] == old[0] && now[1] == old[1], "the old workers did not resume (%d %d -> %d %d)", (int)old[0],
            (int)old[1], (int)now[0], (int)now[1]);
    kv_expect(h, "canary", "acknowledged by generation 2", 4);
    kv_expect(h, "before", "from generation 1", 4);
    for (int i = 0; i < 4; i++) {
        H_CHECK(kv_req(h, "GET", "gone", NULL, &r) == 0 && r.status == 404, "GET /kv/gone: %d, expected 404",
                r.status);
        h_resp_free(&r);
    }
    long long hits = counter_total(h, "/count/hits");
    H_CHECK(hits == 5, "the counters sum to %lld after the rollback, expected the 5 counted by generation 2", hits);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integ_handoff");
    TCase *tc = h_tcase("handoff", 60);
    tcase_add_test(tc, test_state_survives);
    tcase_add_loop_test(tc, test_handoff_failure, 0, (int)(sizeof(failures) / sizeof(failures[0])));
    tcase_add_test(tc, test_restore_error_fresh);
    tcase_add_test(tc, test_removed_instance_dropped);
    tcase_add_test(tc, test_old_killed_during_handoff);
    tcase_add_test(tc, test_worker_count_change);
    tcase_add_test(tc, test_state_command);
    suite_add_tcase(s, tc);
    tc = h_tcase("kv", 240); /* four reload-heavy cases: about 45 s on a quiet 2-core machine */
    tcase_add_test(tc, test_kv_counter_worker_counts);
    tcase_add_test(tc, test_kv_writer_through_reloads);
    tcase_add_test(tc, test_kv_respawn_catches_up);
    tcase_add_test(tc, test_rollback_hands_back);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
