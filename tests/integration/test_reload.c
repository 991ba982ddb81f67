/*
 * The "reload" integration theme: the real moltd reloaded with moltctl and
 * SIGHUP while real clients use it: a good generation is committed and
 * serves, a bad one is rolled back (or rejected) with the phase and the
 * reason while the old one keeps serving with the same workers, requests
 * during a reload are coalesced, and wrk sees no error through reloads.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/wait.h>

#include <check.h>
#include <jansson.h>

#include "tests/integration/harness.h"

/* ---- helpers ------------------------------------------------------------------------------- */

/* Sets the hello instance's plugin file and body, and writes the config. */
static void set_hello(h_molt_t *h, const char *file, const char *body)
{
    json_t *p = json_array_get(json_object_get(h->cfg, "plugins"), 0);
    json_object_set_new(p, "file", json_string(file));
    json_object_set_new(p, "config", body ? json_pack("{s:s}", "body", body) : json_object());
    h_write_config(h);
}

static void get_body(h_molt_t *h, const char *expect, const char *what)
{
    h_resp_t r;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", h->port);
    H_CHECK(h_curl(h, &r, url, NULL) == 0, "%s: curl failed", what);
    H_CHECK(r.status == 200 && strcmp(r.body, expect) == 0, "%s: %d '%s', expected 200 '%s'", what, r.status,
            r.body, expect);
    h_resp_free(&r);
}

static int moltctl_reload(h_molt_t *h, h_cmd_t *c)
{
    return h_run(c, 30000, H_MOLTCTL, "-s", h->sock_path, "reload", (char *)NULL);
}

static long long status_generation(h_molt_t *h)
{
    json_t *st = h_status(h);
    H_CHECK(st != NULL, "no status reply");
    long long n = json_integer_value(json_object_get(json_object_get(st, "generation"), "number"));
    json_decref(st);
    return n;
}

static size_t gen_dirs(const h_molt_t *h)
{
    DIR *d = opendir(h->runtime_dir);
    H_CHECK(d != NULL, "opendir(%s): %s", h->runtime_dir, strerror(errno));
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, "gen-", 4) == 0;
    closedir(d);
    return n;
}

static void current_pids(h_molt_t *h, pid_t *pids, size_t n)
{
    json_t *st = h_status(h);
    H_CHECK(st && h_status_pids(st, pids, n) == n, "status has not %zu worker slots", n);
    json_decref(st);
}

/* ---- tests --------------------------------------------------------------------------------- */

/* A good config: committed, the new body served by new workers, the old ones gone. */
START_TEST(test_commit)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(100));
    h_start_ready(h);
    pid_t old[2];
    current_pids(h, old, 2);
    set_hello(h, "hello.so", "second\n");
    h_cmd_t c;
    int rc = moltctl_reload(h, &c);
    H_CHECK(rc == 0, "moltctl reload exited %d: %s%s", rc, c.out, c.err);
    H_CHECK(strncmp(c.out, "committed generation 2 in ", 26) == 0, "moltctl reload printed '%s'", c.out);
    h_cmd_free(&c);
    get_body(h, "second\n", "after the reload");
    for (int i = 0; i < 2; i++)
        H_CHECK(h_wait_pid_gone(old[i], 5000, NULL), "old worker %d (pid %d) still runs after commit", i,
                (int)old[i]);
    pid_t now[2];
    current_pids(h, now, 2);
    H_CHECK(now[0] != old[0] && now[1] != old[1] && now[0] && now[1], "the workers were not replaced");
    json_t *st = h_status(h);
    json_t *rl = json_object_get(st, "reload");
    H_CHECK(json_integer_value(json_object_get(json_object_get(rl, "counts"), "committed")) == 1,
            "status.reload.counts.committed is not 1");
    H_CHECK(json_is_true(json_object_get(json_object_get(rl, "last"), "ok")), "status.reload.last is not ok");
    json_decref(st);
    H_CHECK(status_generation(h) == 2, "active generation is not 2");
}
END_TEST

/* Broken generations: rolled back with the phase and the reason; the old
 * workers (same pids) keep serving the old body; the failed directory goes. */
static const struct {
    const char *file;
    const char *reason; /* in moltctl's line */
} broken[] = {
    {"tp_fail_init.so", "database at 10.9.9.9 refused the connection"},
    {"tp_crash_init.so", "signal 11"},
    {"tp_hang_init.so", "did not become ready"},
    {"tp_no_entry.so", "not a molt plugin"},
};

START_TEST(test_rollback)
{
    h_molt_t *h = h_new();
    /* short for tp_hang_init, long enough for every other worker to load (h_ms) */
    h_cfg_set(h, "reload.load_timeout_ms", json_integer(h_ms(600)));
    h_cfg_set(h, "reload.health.stable_ms", json_integer(100));
    h_start_ready(h);
    pid_t old[2];
    current_pids(h, old, 2);
    size_t dirs = gen_dirs(h);
    set_hello(h, broken[_i].file, NULL);
    h_cmd_t c;
    int rc = moltctl_reload(h, &c);
    H_CHECK(rc == 1, "moltctl reload with %s exited %d, expected 1: %s%s", broken[_i].file, rc, c.out, c.err);
    H_CHECK(strncmp(c.out, "rolled back in phase spawn: ", 28) == 0 && strstr(c.out, broken[_i].reason),
            "moltctl reload with %s printed '%s', expected the phase and '%s'", broken[_i].file, c.out,
            broken[_i].reason);
    h_cmd_free(&c);
    get_body(h, H_HELLO_BODY, "after the rollback");
    pid_t now[2];
    current_pids(h, now, 2);
    H_CHECK(now[0] == old[0] && now[1] == old[1], "the old workers were replaced by a rollback");
    H_CHECK(status_generation(h) == 1, "active generation changed");
    /* the failed generation's directory is removed once its workers are gone */
    for (int i = 0; i < 50 && gen_dirs(h) != dirs; i++)
        h_sleep_ms(100);
    H_CHECK(gen_dirs(h) == dirs, "%zu generation directories after the rollback, expected %zu", gen_dirs(h), dirs);
    /* and the next good reload still works */
    set_hello(h, "hello.so", "after\n");
    rc = moltctl_reload(h, &c);
    H_CHECK(rc == 0, "a good reload after a rollback exited %d: %s%s", rc, c.out, c.err);
    h_cmd_free(&c);
    get_body(h, "after\n", "after a rollback and a good reload");
}
END_TEST

/* A config that does not validate changes nothing: rejected, with the key path. */
START_TEST(test_rejected)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    pid_t old[2];
    current_pids(h, old, 2);
    h_cfg_set(h, "http.bogus", json_integer(1));
    h_write_config(h);
    h_cmd_t c;
    int rc = h_run(&c, 30000, H_MOLTCTL, "-s", h->sock_path, "reload", "--json", (char *)NULL);
    H_CHECK(rc == 1, "moltctl reload exited %d, expected 1", rc);
    json_t *o = json_loads(c.out, 0, NULL);
    H_CHECK(o != NULL, "reload --json printed no JSON: %s", c.out);
    H_CHECK(strcmp(json_string_value(json_object_get(o, "result")), "rejected") == 0 &&
                strcmp(json_string_value(json_object_get(o, "phase")), "prepare") == 0 &&
                strstr(json_string_value(json_object_get(o, "reason")), "http.bogus"),
            "reload --json: %s", c.out);
    json_decref(o);
    h_cmd_free(&c);
    pid_t now[2];
    current_pids(h, now, 2);
    H_CHECK(now[0] == old[0] && now[1] == old[1], "a rejected reload replaced the workers");
    get_body(h, H_HELLO_BODY, "after a rejected reload");
}
END_TEST

/* SIGHUP reloads like moltctl reload. */
START_TEST(test_sighup)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(50));
    h_start_ready(h);
    set_hello(h, "hello.so", "hup\n");
    H_CHECK(kill(h->pid, SIGHUP) == 0, "kill(SIGHUP)");
    long long gen = 0;
    for (int i = 0; i < 100 && (gen = status_generation(h)) != 2; i++)
        h_sleep_ms(50);
    H_CHECK(gen == 2, "no generation 2 after SIGHUP");
    get_body(h, "hup\n", "after SIGHUP");
}
END_TEST

/*
 * One reload at a time: three callers at once. The first starts a reload; the
 * two that arrive during it are covered by one more reload, and each caller
 * gets the outcome of the reload that covered its request.
 */
START_TEST(test_coalesced)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(400));
    h_start_ready(h);
    int fds[3];
    fds[0] = h_ctl_open(h, "{\"cmd\":\"reload\"}");
    h_sleep_ms(100); /* the first one is running */
    fds[1] = h_ctl_open(h, "{\"cmd\":\"reload\"}");
    fds[2] = h_ctl_open(h, "{\"cmd\":\"reload\"}");
    long long gens[3];
    for (int i = 0; i < 3; i++) {
        json_t *o = h_ctl_reply(fds[i], 30000);
        H_CHECK(o && json_is_true(json_object_get(o, "ok")), "reload reply %d is not ok", i);
        gens[i] = json_integer_value(json_object_get(o, "generation"));
        json_decref(o);
    }
    H_CHECK(gens[0] == 2 && gens[1] == 3 && gens[2] == 3,
            "generations %lld %lld %lld, expected 2 3 3 (the last two coalesced)", gens[0], gens[1], gens[2]);
    json_t *st = h_status(h);
    long long committed = json_integer_value(
        json_object_get(json_object_get(json_object_get(st, "reload"), "counts"), "committed"));
    json_decref(st);
    H_CHECK(committed == 2, "%lld reloads committed, expected 2", committed);
}
END_TEST

/* Reloads under load lose nothing: wrk sees no socket error and no non-2xx. */
START_TEST(test_wrk_through_reloads)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(50));
    /* wrk's time to send its next request on a kept-alive connection (h_ms: a slow runner starves it) */
    h_cfg_set(h, "reload.idle_grace_ms", json_integer(h_ms(100)));
    h_start_ready(h);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "wrk -t2 -c32 -d6s http://127.0.0.1:%d/ 2>&1", h->port);
    FILE *wrk = popen(cmd, "r");
    H_CHECK(wrk != NULL, "popen(wrk): %s", strerror(errno));
    h_sleep_ms(500);
    int committed = 0;
    for (int i = 0; i < 10; i++) {
        set_hello(h, "hello.so", i % 2 ? "odd\n" : "even\n");
        h_cmd_t c;
        if (moltctl_reload(h, &c) == 0)
            committed++;
        h_cmd_free(&c);
        h_sleep_ms(200);
    }
    char out[8192];
    size_t len = fread(out, 1, sizeof(out) - 1, wrk);
    out[len] = '\0';
    int wrc = pclose(wrk);
    H_CHECK(wrc == 0, "wrk exited %d: %s", wrc, out);
    H_CHECK(committed == 10, "%d of 10 reloads committed", committed);
    H_CHECK(strstr(out, "requests in") != NULL, "wrk printed no result: %s", out);
    H_CHECK(strstr(out, "Socket errors") == NULL, "wrk saw socket errors through reloads:\n%s", out);
    H_CHECK(strstr(out, "Non-2xx") == NULL, "wrk saw non-2xx responses through reloads:\n%s", out);
}
END_TEST

/*
 * Verify judges the new generation under real traffic. While it runs, the
 * old workers accept nothing, so new connections (Connection: close) reach
 * only the new generation: a 5xx storm there, or a worker dying, rolls back.
 */
START_TEST(test_verify_5xx_storm)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(800));
    /* the health request is answered well: what fails is the real traffic */
    h_add_plugin(h, "hz", "hello.so", json_pack("{s:s}", "body", "ok\n"));
    h_add_route(h, "/healthz", "hz");
    h_start_ready(h);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "wrk -t1 -c4 -d3s -H 'Connection: close' http://127.0.0.1:%d/ 2>&1", h->port);
    FILE *wrk = popen(cmd, "r");
    H_CHECK(wrk != NULL, "popen(wrk)");
    h_sleep_ms(300);
    json_t *p = json_array_get(json_object_get(h->cfg, "plugins"), 0);
    json_object_set_new(p, "config", json_pack("{s:s,s:i}", "body", "broken\n", "status", 500));
    h_write_config(h);
    h_cmd_t c;
    int rc = moltctl_reload(h, &c);
    char out[4096];
    size_t len = fread(out, 1, sizeof(out) - 1, wrk);
    out[len] = '\0';
    pclose(wrk);
    H_CHECK(rc == 1 && strstr(c.out, "rolled back in phase verify: 5xx rate"),
            "a 5xx storm in the verify window: moltctl reload exited %d: %s (wrk: %s)", rc, c.out, out);
    h_cmd_free(&c);
    get_body(h, H_HELLO_BODY, "after the rollback of a 5xx storm");
}
END_TEST

START_TEST(test_verify_crash)
{
    h_molt_t *h = h_new();
    h_add_echo(h);
    h_cfg_set(h, "reload.health.stable_ms", json_integer(1500));
    h_start_ready(h);
    pid_t old[2];
    current_pids(h, old, 2);
    set_hello(h, "hello.so", "new\n");
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof(cmd), "%s -s %s reload 2>&1", H_MOLTCTL, h->sock_path);
    FILE *f = popen(cmd, "r");
    H_CHECK(f != NULL, "popen(moltctl reload)");
    /* wait for the verify window, then crash a worker of the new generation */
    long long deadline = h_now_ms() + h_ms(5000);
    bool verifying = false;
    while (!verifying && h_now_ms() < deadline) {
        json_t *st = h_status(h);
        const char *phase = json_string_value(json_object_get(json_object_get(st, "reload"), "phase"));
        verifying = phase && strcmp(phase, "verify") == 0;
        json_decref(st);
        if (!verifying)
            h_sleep_ms(20);
    }
    H_CHECK(verifying, "the reload never reached verify");
    h_resp_t r;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo/crash", h->port);
    h_curl(h, &r, url, NULL); /* the worker dies answering: no response is expected */
    h_resp_free(&r);
    char out[4096];
    size_t len = fread(out, 1, sizeof(out) - 1, f);
    out[len] = '\0';
    int rc = pclose(f);
    H_CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1 && strstr(out, "rolled back in phase verify: ") &&
                strstr(out, "signal 6"),
            "a crash in the verify window: moltctl reload printed: %s", out);
    get_body(h, H_HELLO_BODY, "after the rollback of a crash in verify");
    pid_t now[2];
    current_pids(h, now, 2);
    H_CHECK(now[0] == old[0] && now[1] == old[1], "the old workers were replaced");
}
END_TEST

/* Verify starts with the health request through each new worker's own
 * pipeline, and every plugin's health callback. */
START_TEST(test_verify_health_request)
{
    h_molt_t *h = h_new();
    h_add_plugin(h, "hz", "hello.so", json_pack("{s:s}", "body", "ok\n"));
    h_add_route(h, "/healthz", "hz");
    h_start_ready(h);
    json_t *hz = json_array_get(json_object_get(h->cfg, "plugins"), 1);
    json_object_set_new(hz, "config", json_pack("{s:s,s:i}", "body", "sick\n", "status", 503));
    h_write_config(h);
    h_cmd_t c;
    int rc = moltctl_reload(h, &c);
    H_CHECK(rc == 1 && strstr(c.out, "rolled back in phase verify: worker ") &&
                strstr(c.out, "GET /healthz returned 503, expected 200"),
            "a 503 health request: moltctl reload exited %d: %s", rc, c.out);
    h_cmd_free(&c);
    get_body(h, H_HELLO_BODY, "after a failed health request");
}
END_TEST

START_TEST(test_verify_plugin_health)
{
    h_molt_t *h = h_new();
    h_start_ready(h);
    h_add_plugin(h, "sick", "tp_bad_health.so", NULL);
    h_write_config(h);
    h_cmd_t c;
    int rc = moltctl_reload(h, &c);
    H_CHECK(rc == 1 && strstr(c.out, "rolled back in phase verify: worker ") &&
                strstr(c.out, "plugin sick: health check failed: disk full"),
            "a failing plugin health check: moltctl reload exited %d: %s", rc, c.out);
    h_cmd_free(&c);
    get_body(h, H_HELLO_BODY, "after a failed plugin health check");
}
END_TEST

/* moltctl rollback re-activates the previous generation as it ran (its
 * config and its plugin copies), not what the config file says now. */
START_TEST(test_rollback_command)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(50));
    h_start_ready(h);
    h_cmd_t c;
    int rc = h_run(&c, 30000, H_MOLTCTL, "-s", h->sock_path, "rollback", (char *)NULL);
    H_CHECK(rc == 1 && strstr(c.out, "rejected: there is no previous generation"),
            "rollback with nothing to go back to: exit %d: %s", rc, c.out);
    h_cmd_free(&c);

    set_hello(h, "hello.so", "B\n");
    H_CHECK(moltctl_reload(h, &c) == 0, "reload to B: %s", c.out);
    h_cmd_free(&c);
    set_hello(h, "hello.so", "C (in the file, never reloaded)\n");
    rc = h_run(&c, 30000, H_MOLTCTL, "-s", h->sock_path, "rollback", (char *)NULL);
    H_CHECK(rc == 0 && strncmp(c.out, "committed generation 3 in ", 26) == 0, "rollback: exit %d: %s", rc, c.out);
    h_cmd_free(&c);
    get_body(h, H_HELLO_BODY, "after the rollback (generation 1's config)");
    json_t *st = h_status(h);
    H_CHECK(json_integer_value(json_object_get(json_object_get(st, "reload"), "rollback_to")) == 2,
            "status.reload.rollback_to is not 2 after rolling back from generation 2");
    json_decref(st);

    /* rolling back again goes back to B */
    rc = h_run(&c, 30000, H_MOLTCTL, "-s", h->sock_path, "rollback", (char *)NULL);
    H_CHECK(rc == 0, "second rollback: exit %d: %s", rc, c.out);
    h_cmd_free(&c);
    get_body(h, "B\n", "after the second rollback");
}
END_TEST

/* moltctl events follows a reload phase by phase, the workers of both
 * generations, and the outcome; it ends (exit 0) when moltd stops. */
START_TEST(test_events)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(50));
    h_start_ready(h);
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof(cmd), "%s -s %s events", H_MOLTCTL, h->sock_path);
    FILE *f = popen(cmd, "r");
    H_CHECK(f != NULL, "popen(moltctl events)");
    h_sleep_ms(300); /* subscribed */
    set_hello(h, "hello.so", "events\n");
    h_cmd_t c;
    H_CHECK(moltctl_reload(h, &c) == 0, "reload failed: %s", c.out);
    h_cmd_free(&c);
    h_run(&c, 30000, H_MOLTCTL, "-s", h->sock_path, "stop", (char *)NULL);
    h_cmd_free(&c);
    static char out[65536];
    size_t len = fread(out, 1, sizeof(out) - 1, f);
    out[len] = '\0';
    int rc = pclose(f);
    H_CHECK(rc == 0, "moltctl events exited %d when moltd stopped", rc);
    const char *want[] = {"\"phase\":\"prepare\"", "\"phase\":\"spawn\"", "\"phase\":\"handoff\"",
                          "\"phase\":\"verify\"", "\"phase\":\"commit\"", "\"result\":\"committed\"",
                          "\"generation\":2,\"state\":\"ready\"", "\"generation\":1,\"state\":\"draining\"",
                          "\"generation\":1,\"state\":\"exited\""};
    const char *at = out;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const char *p = strstr(i < 6 ? at : out, want[i]);
        H_CHECK(p != NULL, "events: no %s (in order) in:\n%s", want[i], out);
        if (i < 6)
            at = p; /* the phases and the outcome come in this order; workers anywhere */
    }
    /* every line is one JSON object with a type and a time */
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *o = json_loads(line, 0, NULL);
        H_CHECK(o && json_is_string(json_object_get(o, "type")) && json_is_integer(json_object_get(o, "time_ms")),
                "not an event line: %s", line);
        json_decref(o);
    }
}
END_TEST

static size_t count_lines(const char *path, const char *line)
{
    char *text = h_read_file(path, NULL);
    size_t n = 0, len = strlen(line);
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        n += l == len && memcmp(p, line, len) == 0;
        p = nl ? nl + 1 : p + l;
    }
    free(text);
    return n;
}

/* Waits (up to 10 s) until the log holds exactly these counts of phase
 * lines; fails the test with the log's content otherwise. */
static void wait_phases(const char *log, size_t handoff, size_t active, size_t retired, size_t resumed,
                        const char *what)
{
    size_t n[4] = {0, 0, 0, 0};
    const size_t want[4] = {handoff, active, retired, resumed};
    for (int i = 0; i < 200; i++) {
        n[0] = count_lines(log, "reload handoff p");
        n[1] = count_lines(log, "reload active p");
        n[2] = count_lines(log, "reload retired p");
        n[3] = count_lines(log, "reload resumed p");
        if (!memcmp(n, want, sizeof(n)))
            return;
        h_sleep_ms(50);
    }
    char *text = h_read_file(log, NULL); /* read before H_CHECK cleans up */
    char copy[4096];
    snprintf(copy, sizeof(copy), "%s", text ? text : "(no log)");
    free(text);
    H_CHECK(false, "%s: handoff/active/retired/resumed %zu/%zu/%zu/%zu, expected %zu/%zu/%zu/%zu; the log:\n%s",
            what, n[0], n[1], n[2], n[3], handoff, active, retired, resumed, copy);
}

/*
 * Plugins are told where a reload stands, from their side: the old workers
 * HANDOFF, then RETIRED on commit or RESUMED on rollback; the new ones
 * ACTIVE on commit.
 */
START_TEST(test_reload_phases_told)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(50));
    char log[PATH_MAX];
    snprintf(log, sizeof(log), "%s/phases.log", h->dir);
    h_add_plugin(h, "p", "tp_provider.so", json_pack("{s:s}", "log", log));
    h_start_ready(h);
    h_cmd_t c;
    H_CHECK(moltctl_reload(h, &c) == 0, "reload: %s", c.out);
    h_cmd_free(&c);
    /* Each worker writes its own lines when its message arrives: wait for all. */
    wait_phases(log, 2, 2, 2, 0, "after a commit");

    /* failing in spawn: no handoff happened, so nothing is told */
    h_add_plugin(h, "bad", "tp_fail_init.so", NULL);
    h_write_config(h);
    H_CHECK(moltctl_reload(h, &c) == 1, "a reload failing in spawn: %s", c.out);
    h_cmd_free(&c);
    h_sleep_ms(300);
    wait_phases(log, 2, 2, 2, 0, "after a reload failing in spawn (nothing more told)");

    /* failing in verify: the old workers handed off, then resume */
    json_t *bad = json_array_get(json_object_get(h->cfg, "plugins"), 2);
    json_object_set_new(bad, "file", json_string("tp_bad_health.so"));
    h_write_config(h);
    H_CHECK(moltctl_reload(h, &c) == 1, "a reload failing in verify: %s", c.out);
    h_cmd_free(&c);
    wait_phases(log, 4, 2, 2, 2, "after a reload failing in verify");
}
END_TEST

/* A response body from a fresh connection. */
static void get_path(h_molt_t *h, const char *path, char *out, size_t len)
{
    h_resp_t r;
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", h->port, path);
    H_CHECK(h_curl(h, &r, url, NULL) == 0 && r.status == 200, "GET %s failed", path);
    snprintf(out, len, "%s", r.body);
    h_resp_free(&r);
}

/*
 * Named slots: the index of a name is the same in every worker and across
 * generations (the supervisor keeps the registry), whatever order a new
 * generation reserves them in; transaction slots start empty, session slots
 * live as long as the connection.
 */
START_TEST(test_slots_stable)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(0));
    h_add_plugin(h, "sl", "tp_slots.so", json_pack("{s:[s,s],s:[s]}", "txn", "a", "b", "session", "s"));
    h_add_route(h, "/slots", "sl");
    h_start_ready(h);
    char body[512];
    for (int i = 0; i < 6; i++) { /* both workers */
        get_path(h, "/slots", body, sizeof(body));
        H_CHECK(strcmp(body, "txn a=0 b=1 session s=0 txn_fresh=yes txn_kept=yes count=1\n") == 0,
                "generation 1: %s", body);
    }
    /* a session slot lives with its connection */
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    for (int i = 1; i <= 3; i++) {
        h_resp_t r;
        h_conn_send_str(&c, "GET /slots HTTP/1.1\r\nHost: x\r\n\r\n");
        H_CHECK(h_conn_read(&c, &r, 5000) == 0 && r.status == 200, "keep-alive request %d", i);
        char want[32];
        snprintf(want, sizeof(want), "count=%d\n", i);
        H_CHECK(strstr(r.body, "txn_fresh=yes") && strstr(r.body, want), "request %d on one connection: %s", i,
                r.body);
        h_resp_free(&r);
    }
    h_conn_close(&c);

    /* the next generation reserves a new name first, then the old ones */
    json_t *sl = json_array_get(json_object_get(h->cfg, "plugins"), 1);
    json_object_set_new(sl, "config", json_pack("{s:[s,s,s],s:[s,s]}", "txn", "c", "b", "a", "session", "t", "s"));
    h_write_config(h);
    h_cmd_t cmd;
    H_CHECK(moltctl_reload(h, &cmd) == 0, "reload: %s", cmd.out);
    h_cmd_free(&cmd);
    for (int i = 0; i < 6; i++) {
        get_path(h, "/slots", body, sizeof(body));
        H_CHECK(strcmp(body, "txn c=2 b=1 a=0 session t=1 s=0 txn_fresh=yes txn_kept=yes count=1\n") == 0,
                "generation 2: %s", body);
    }
}
END_TEST

/* A hundred reloads leave the supervisor as they found it: the same open
 * descriptors, no zombie child, generation directories within
 * keep_generations. */
START_TEST(test_hundred_reloads)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(0));
    h_cfg_set(h, "reload.keep_generations", json_integer(3));
    h_start_ready(h);
    h_cmd_t c;
    H_CHECK(moltctl_reload(h, &c) == 0, "first reload: %s", c.out); /* reach a steady state */
    h_cmd_free(&c);
    h_sleep_ms(200);
    size_t fds0 = h_count_fds(h->pid);
    for (int i = 0; i < 100; i++) {
        set_hello(h, "hello.so", i % 2 ? "odd\n" : "even\n");
        int rc = moltctl_reload(h, &c);
        H_CHECK(rc == 0, "reload %d exited %d: %s", i, rc, c.out);
        h_cmd_free(&c);
    }
    /* the last old generation drains: give it a moment */
    size_t fds = 0, zombies = 0;
    for (int i = 0; i < 50; i++) {
        fds = h_count_fds(h->pid);
        zombies = h_zombie_children(h->pid);
        if (fds == fds0 && zombies == 0 && gen_dirs(h) <= 3)
            break;
        h_sleep_ms(100);
    }
    H_CHECK(fds == fds0, "moltd has %zu open fds after 100 reloads, %zu before", fds, fds0);
    H_CHECK(zombies == 0, "moltd has %zu zombie children after 100 reloads", zombies);
    H_CHECK(gen_dirs(h) <= 3, "%zu generation directories, keep_generations is 3", gen_dirs(h));
    get_body(h, "odd\n", "after 100 reloads"); /* the last one deployed, i = 99 */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integ_reload");
    TCase *tc = h_tcase("outcomes", 60);
    tcase_add_test(tc, test_commit);
    tcase_add_loop_test(tc, test_rollback, 0, (int)(sizeof(broken) / sizeof(broken[0])));
    tcase_add_test(tc, test_rejected);
    tcase_add_test(tc, test_sighup);
    tcase_add_test(tc, test_verify_5xx_storm);
    tcase_add_test(tc, test_verify_crash);
    tcase_add_test(tc, test_verify_health_request);
    tcase_add_test(tc, test_verify_plugin_health);
    tcase_add_test(tc, test_rollback_command);
    suite_add_tcase(s, tc);
    tc = h_tcase("concurrency", 60);
    tcase_add_test(tc, test_coalesced);
    tcase_add_test(tc, test_wrk_through_reloads);
    tcase_add_test(tc, test_events);
    tcase_add_test(tc, test_hundred_reloads);
    tcase_add_test(tc, test_reload_phases_told);
    tcase_add_test(tc, test_slots_stable);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
