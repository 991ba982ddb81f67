/*
 * The "upgrade" integration theme: the supervisor's self-upgrade (SIGUSR2,
 * `moltctl upgrade`, {"cmd":"upgrade"}) on the real moltd. moltd re-executes
 * the binary it was started from, in the same process: the pid, the
 * listeners, the workers (the same processes, serving throughout), the
 * generations, the counters, the reload history and the control connections
 * all stay. Each test starts a copy of the build's moltd from its own dir
 * (h->binary, DIR/bin/moltd) and deploys a new binary the way an operator
 * does: a file written beside it and rename()d over it, then an upgrade.
 *
 *   under_load      wrk through an upgrade to moltd_upgrade_next (moltctl
 *                   upgrade): no error; the same pid and workers, the new
 *                   version and /proc/PID/exe; then a reload commits, a
 *                   killed worker is reaped and respawned, and a stop exits 0
 *   state_history   kv data in every worker, the reload counters, rollback
 *                   to the generation before the last reload, an events
 *                   subscriber that stays, and moltd's descriptors: all the
 *                   same after the upgrade (the control reply checked field
 *                   by field)
 *   sigusr2         SIGUSR2 upgrades (log line, status); SIGUSR2 to a binary
 *                   that cannot run logs "upgrade failed: "
 *   failures        one moltd, each broken deployment in turn (missing, not
 *                   a program, not executable, a check that exits 3, crashes,
 *                   hangs, an incompatible state format, a restore that fails
 *                   after the exec): refused with the reason, and moltd runs
 *                   on as it was (pid, version, workers, serving, descriptors,
 *                   no process left behind); the metrics, the events and a
 *                   final good upgrade
 *   refused         during a reload ("a reload is running", and the reload
 *                   commits), during another upgrade's check, while stopping
 *   twice           to moltd_upgrade_next and back: both done, upgrades 2
 *   exec_fails      the check passes, execve() fails: moltd as it was, its
 *                   descriptors close-on-exec and its signals unblocked again
 *   check_not_utf8  a check that prints bytes that are not UTF-8: answered
 *   corrupt_state   the check handed 140 damaged states (truncated, bits
 *                   flipped): each refused in one line or harmless, never a
 *                   crash, a hang or a sanitizer report
 *
 * The test binaries moltd_upgrade_next (version "V+upgrade-test"),
 * moltd_upgrade_incompat (another state format) and moltd_upgrade_faulty
 * (its restore fails on purpose) are real builds of moltd, beside it in
 * MOLT_BUILD_DIR.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>

#include "tests/integration/harness.h"

#define UP_NEXT MOLT_BUILD_DIR "/moltd_upgrade_next"
#define UP_INCOMPAT MOLT_BUILD_DIR "/moltd_upgrade_incompat"
#define UP_FAULTY MOLT_BUILD_DIR "/moltd_upgrade_faulty"
#define UP_NEXT_SUFFIX "+upgrade-test"
#define UP_MAX_WORKERS 8

/* The binary this test's moltd runs: DIR/bin/moltd (realpath'd), and the
 * temp name a deployment writes first. One moltd per test. */
static char up_bin[PATH_MAX];
static char up_tmp[PATH_MAX];

/* ---- helpers: binaries ----------------------------------------------------------------------- */

static void need_file(const char *path)
{
    H_CHECK(h_file_exists(path), "%s is not built (a target of the top-level CMakeLists.txt)", path);
}

/*
 * A moltd (not started) that runs a copy of the build's moltd from
 * DIR/bin/moltd; hello on "/", reloads that do not wait in verify.
 */
static h_molt_t *up_new(void)
{
    h_molt_t *h = h_new();
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/bin", h->dir);
    H_CHECK(mkdir(dir, 0755) == 0, "mkdir(%s): %s", dir, strerror(errno));
    char *real = realpath(dir, NULL);
    H_CHECK(real != NULL, "realpath(%s): %s", dir, strerror(errno));
    snprintf(up_bin, sizeof(up_bin), "%s/moltd", real);
    snprintf(up_tmp, sizeof(up_tmp), "%s/.moltd.new", real);
    free(real);
    h_copy_file(H_MOLTD, up_bin, 0755);
    h->binary = up_bin;
    h_cfg_set(h, "reload.health.stable_ms", json_integer(50));
    return h;
}

/* Deploys src as the binary: copied beside it with `mode`, renamed over it. */
static void deploy(const char *src, mode_t mode)
{
    need_file(src);
    h_copy_file(src, up_tmp, mode);
    H_CHECK(rename(up_tmp, up_bin) == 0, "rename(%s, %s): %s", up_tmp, up_bin, strerror(errno));
}

/* Deploys a file of this text. */
static void deploy_text(const char *text, mode_t mode)
{
    h_write_file(up_tmp, text, strlen(text), mode);
    H_CHECK(rename(up_tmp, up_bin) == 0, "rename(%s, %s): %s", up_tmp, up_bin, strerror(errno));
}

/* readlink /proc/PID/exe into buf ("" if it cannot be read). */
static const char *proc_exe(pid_t pid, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(path, buf, len - 1);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

/* ---- helpers: control ------------------------------------------------------------------------ */

/* {"cmd":"upgrade"}: the reply (never NULL: fails the test when none comes). */
static json_t *upgrade(h_molt_t *h)
{
    int fd = h_ctl_open(h, "{\"cmd\":\"upgrade\"}");
    H_CHECK(fd >= 0, "cannot send the upgrade request to %s", h->sock_path);
    json_t *r = h_ctl_reply(fd, 30000);
    /* Asked before H_CHECK, whose cleanup frees h. */
    const char *alive = r ? "" : h_reap(h) ? "exited" : "runs";
    H_CHECK(r != NULL, "no reply to the upgrade request within %d s (moltd %s)", h_ms(30000) / 1000, alive);
    return r;
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static long long jint(const json_t *o, const char *key)
{
    return json_is_integer(json_object_get(o, key)) ? (long long)json_integer_value(json_object_get(o, key))
                                                    : -1;
}

/* The reply is ok:true; returns it. */
static json_t *upgrade_ok(h_molt_t *h)
{
    json_t *r = upgrade(h);
    if (!json_is_true(json_object_get(r, "ok"))) {
        char *text = json_dumps(r, JSON_COMPACT);
        fprintf(stderr, "upgrade reply: %s\n", text ? text : "?");
        free(text);
        H_FAIL("the upgrade failed: %s", jstr(r, "error"));
    }
    return r;
}

/* The reply is ok:false at `stage`, its error starting "upgrade refused: "
 * (stage "refused": nothing was tried) or "upgrade failed: " and holding
 * every needle (NULL-terminated). */
static void check_failed_reply(const json_t *r, const char *stage, const char *const *needles,
                               const char *what)
{
    char *text = json_dumps(r, JSON_COMPACT);
    const char *err = jstr(r, "error");
    const json_t *up = json_object_get(r, "upgrade");
    const char *lead = strcmp(stage, "refused") == 0 ? "upgrade refused: " : "upgrade failed: ";
    bool ok = json_is_false(json_object_get(r, "ok")) && strncmp(err, lead, strlen(lead)) == 0 &&
              json_is_object(up) && strcmp(jstr(up, "stage"), stage) == 0 &&
              strcmp(jstr(up, "binary"), up_bin) == 0 && jstr(up, "from")[0];
    const char *missing = NULL;
    for (size_t i = 0; needles[i] && !missing; i++)
        if (!strstr(err, needles[i]))
            missing = needles[i];
    if (!ok || missing)
        fprintf(stderr, "%s: the upgrade reply: %s\n", what, text ? text : "?");
    free(text);
    H_CHECK(ok, "%s: expected ok:false, \"%s...\", upgrade.stage \"%s\", upgrade.binary %s (reply above)",
            what, lead, stage, up_bin);
    H_CHECK(!missing, "%s: the error does not say '%s' (reply above)", what, missing);
}

/* One sample's value in moltd's metrics: `name` with its labels
 * ("moltd_upgrades_total{result=\"done\"}"). -1 if absent. */
static long long metric(h_molt_t *h, const char *name)
{
    json_t *r = h_ctl(h, "{\"cmd\":\"metrics\"}");
    H_CHECK(r && json_is_string(json_object_get(r, "metrics")), "no metrics reply");
    size_t nlen = strlen(name);
    long long v = -1;
    for (const char *line = jstr(r, "metrics"); *line && v < 0;) {
        if (strncmp(line, name, nlen) == 0 && line[nlen] == ' ')
            v = strtoll(line + nlen + 1, NULL, 10);
        const char *nl = strchr(line, '\n');
        if (!nl)
            break;
        line = nl + 1;
    }
    json_decref(r);
    return v;
}

/* ---- helpers: what must stay the same -------------------------------------------------------- */

typedef struct snap {
    pid_t pid;
    char version[64];
    long long started_ms, uptime_ms;
    long long gen_number;
    char gen_id[64];
    pid_t workers[UP_MAX_WORKERS];
    size_t nworkers;
    long long upgrades; /* -1: missing */
    bool upgraded_ms_null;
    long long upgraded_ms;
    char binary[PATH_MAX];
    long long rollback_to;
} snap_t;

/* A status reply, retried for up to 5 s (NULL never: fails the test). */
static json_t *status_now(h_molt_t *h)
{
    json_t *st = NULL;
    for (long long end = h_now_ms() + h_ms(5000); !(st = h_status(h));) {
        H_CHECK(!h_reap(h), "moltd exited (wait status 0x%x)", (unsigned)h->wstatus);
        H_CHECK(h_now_ms() < end, "moltd does not answer status");
        h_sleep_ms(20);
    }
    return st;
}

static void snap_take(h_molt_t *h, snap_t *s)
{
    memset(s, 0, sizeof(*s));
    json_t *st = status_now(h);
    const json_t *gen = json_object_get(st, "generation");
    s->pid = (pid_t)jint(st, "pid");
    snprintf(s->version, sizeof(s->version), "%s", jstr(st, "version"));
    s->started_ms = jint(st, "started_ms");
    s->uptime_ms = jint(st, "uptime_ms");
    s->gen_number = jint(gen, "number");
    snprintf(s->gen_id, sizeof(s->gen_id), "%s", jstr(gen, "id"));
    s->nworkers = h_status_pids(st, s->workers, UP_MAX_WORKERS);
    s->upgrades = jint(st, "upgrades");
    s->upgraded_ms_null = json_is_null(json_object_get(st, "upgraded_ms"));
    s->upgraded_ms = jint(st, "upgraded_ms");
    snprintf(s->binary, sizeof(s->binary), "%s", jstr(st, "binary"));
    s->rollback_to = jint(json_object_get(st, "reload"), "rollback_to");
    json_decref(st);
}

/* The same moltd (pid, start), the same active generation and the same
 * workers (every slot: same pid, ready, no restart). */
static void check_same_processes(h_molt_t *h, const snap_t *before, const char *what)
{
    snap_t now;
    snap_take(h, &now);
    H_CHECK(!h_reap(h) && now.pid == h->pid && before->pid == h->pid,
            "%s: moltd's pid is %d, was %d (started %d)", what, (int)now.pid, (int)before->pid, (int)h->pid);
    H_CHECK(now.started_ms == before->started_ms, "%s: started_ms %lld, was %lld", what, now.started_ms,
            before->started_ms);
    H_CHECK(now.uptime_ms >= before->uptime_ms, "%s: uptime_ms %lld went back from %lld", what, now.uptime_ms,
            before->uptime_ms);
    H_CHECK(now.gen_number == before->gen_number && strcmp(now.gen_id, before->gen_id) == 0,
            "%s: generation %lld (%s), was %lld (%s)", what, now.gen_number, now.gen_id, before->gen_number,
            before->gen_id);
    json_t *st = status_now(h);
    for (unsigned s = 0; s < before->nworkers; s++) {
        const json_t *w = h_status_slot(st, s);
        pid_t pid = (pid_t)jint(w, "pid");
        const char *state = jstr(w, "state");
        long long restarts = jint(w, "restarts");
        if (pid != before->workers[s] || strcmp(state, "ready") != 0 || restarts != 0) {
            char *text = json_dumps(st, JSON_COMPACT);
            fprintf(stderr, "%s: status: %s\n", what, text ? text : "?");
            free(text);
            json_decref(st);
            H_FAIL("%s: slot %u: pid %d %s, %lld restarts; expected pid %d, ready, 0 restarts", what, s,
                   (int)pid, state, restarts, (int)before->workers[s]);
        }
    }
    json_decref(st);
    H_CHECK(now.nworkers == before->nworkers, "%s: %zu worker slots, were %zu", what, now.nworkers,
            before->nworkers);
}

/*
 * moltd's open descriptors, once a control connection the test just closed is
 * gone too. `execed`: moltd executed a binary since `want` was counted. Under
 * MOLT_TEST_WRAPPER (valgrind) that comparison means nothing: valgrind does
 * not follow an execve (scripts/memcheck.sh runs it without
 * --trace-children), so moltd then runs natively, without valgrind's own
 * descriptors; the check is skipped, saying so.
 */
static void check_fds(h_molt_t *h, size_t want, bool execed, const char *what)
{
    const char *wrapper = getenv("MOLT_TEST_WRAPPER");
    if (execed && wrapper && *wrapper) {
        fprintf(stderr, "%s: descriptors not compared (moltd left MOLT_TEST_WRAPPER's program at the exec)\n",
                what);
        return;
    }
    size_t n = 0;
    for (long long end = h_now_ms() + h_ms(3000);; h_sleep_ms(20)) {
        n = h_count_fds(h->pid);
        if (n == want || h_now_ms() >= end)
            break;
    }
    if (n != want) {
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "ls -l /proc/%d/fd >&2", (int)h->pid);
        if (system(cmd) != 0)
            fprintf(stderr, "(cannot list /proc/%d/fd)\n", (int)h->pid);
    }
    H_CHECK(n == want, "%s: moltd has %zu open descriptors, %zu before (listing above)", what, n, want);
}

/* moltd's descriptors once they settle (a connection of ours closing). */
static size_t settled_fds(h_molt_t *h)
{
    size_t n = h_count_fds(h->pid);
    for (int same = 0; same < 5; h_sleep_ms(40)) {
        size_t m = h_count_fds(h->pid);
        same = m == n ? same + 1 : 0;
        n = m;
    }
    return n;
}

/* The test's process group holds moltd and its workers and nothing else (no
 * check child, no script's process), and moltd has no zombie child. */
static void check_no_leftovers(h_molt_t *h, const snap_t *s, const char *what)
{
    pid_t procs[64];
    size_t n = 0, extra = 0;
    pid_t first = 0;
    size_t zombies = 0;
    for (long long end = h_now_ms() + h_ms(3000);; h_sleep_ms(20)) {
        n = h_group_procs(procs, 64);
        extra = 0;
        for (size_t i = 0; i < n; i++) {
            bool known = procs[i] == h->pid;
            for (size_t k = 0; k < s->nworkers && !known; k++)
                known = procs[i] == s->workers[k];
            if (!known && !extra++)
                first = procs[i];
        }
        zombies = h_zombie_children(h->pid);
        if ((extra == 0 && zombies == 0) || h_now_ms() >= end)
            break;
    }
    if (extra) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)first);
        size_t len;
        char *cmd = h_read_file(path, &len);
        for (size_t i = 0; i + 1 < len; i++)
            if (!cmd[i])
                cmd[i] = ' ';
        fprintf(stderr, "%s: pid %d is '%s'\n", what, (int)first, cmd);
        free(cmd);
    }
    H_CHECK(extra == 0, "%s: %zu process(es) besides moltd and its workers, the first pid %d (above)", what,
            extra, (int)first);
    H_CHECK(zombies == 0, "%s: moltd has %zu zombie children", what, zombies);
}

static void curl_hello(h_molt_t *h, const char *body, const char *what)
{
    char u[64];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/", h->port);
    h_resp_t r;
    int rc = h_curl(h, &r, u, NULL);
    H_CHECK(rc == 0, "%s: curl %s exited with %d", what, u, rc);
    H_CHECK(r.status == 200 && strcmp(r.body, body) == 0, "%s: %d '%s', expected 200 '%s'", what, r.status,
            r.body, body);
    h_resp_free(&r);
}

static void set_hello_body(h_molt_t *h, const char *body)
{
    json_t *p = json_array_get(json_object_get(h->cfg, "plugins"), 0);
    json_object_set_new(p, "config", json_pack("{s:s}", "body", body));
    h_write_config(h);
}

/* A reload or rollback over the control socket; fails unless it committed `gen`. */
static void reload_commit(h_molt_t *h, const char *cmd, long long gen)
{
    char req[64];
    snprintf(req, sizeof(req), "{\"cmd\":\"%s\"}", cmd);
    json_t *r = h_ctl_reply(h_ctl_open(h, req), 30000);
    H_CHECK(r != NULL, "%s: no reply", cmd);
    bool ok = json_is_true(json_object_get(r, "ok")) && jint(r, "generation") == gen;
    char *text = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    if (!ok)
        fprintf(stderr, "%s reply: %s\n", cmd, text ? text : "?");
    free(text);
    H_CHECK(ok, "%s did not commit generation %lld (reply above)", cmd, gen);
}

/* Waits until the workers of generations other than the active one are gone. */
static void wait_one_generation(h_molt_t *h)
{
    for (long long end = h_now_ms() + h_ms(10000);; h_sleep_ms(20)) {
        json_t *st = status_now(h);
        long long gen = jint(json_object_get(st, "generation"), "number");
        size_t i, others = 0;
        json_t *w;
        json_array_foreach(json_object_get(st, "workers"), i, w)
        {
            others += jint(w, "generation") != gen;
        }
        json_decref(st);
        if (!others)
            return;
        H_CHECK(h_now_ms() < end, "an old generation's workers are still there 10 s after a commit");
    }
}

/* ---- helpers: a control connection read line by line (an events subscriber) ----------------- */

typedef struct ev {
    int fd;
    char *buf;
    size_t len, cap;
    char seen[8192]; /* the types and results so far, for failure messages */
} ev_t;

/* One line within timeout_ms, parsed; NULL on timeout or EOF (*eof set). */
static json_t *ev_next(ev_t *ev, int timeout_ms, bool *eof)
{
    long long deadline = h_now_ms() + h_ms(timeout_ms);
    *eof = false;
    for (;;) {
        char *nl = ev->len ? memchr(ev->buf, '\n', ev->len) : NULL;
        if (nl) {
            size_t l = (size_t)(nl - ev->buf);
            json_t *o = json_loadb(ev->buf, l, 0, NULL);
            memmove(ev->buf, nl + 1, ev->len - l - 1);
            ev->len -= l + 1;
            H_CHECK(json_is_object(o), "an events line that is not a JSON object");
            size_t used = strlen(ev->seen);
            snprintf(ev->seen + used, sizeof(ev->seen) - used, " %s%s%s", jstr(o, "type"),
                     json_object_get(o, "result") ? "/" : "", jstr(o, "result"));
            return o;
        }
        long long left = deadline - h_now_ms();
        struct pollfd pfd = {.fd = ev->fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            return NULL;
        if (ev->cap - ev->len < 65536) {
            ev->cap = ev->cap ? ev->cap * 2 : 262144;
            ev->buf = realloc(ev->buf, ev->cap);
            H_CHECK(ev->buf != NULL, "out of memory");
        }
        ssize_t n = recv(ev->fd, ev->buf + ev->len, ev->cap - ev->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *eof = true;
            return NULL;
        }
        ev->len += (size_t)n;
    }
}

/* Subscribes; fails unless moltd says {"ok":true,"events":true}. */
static void ev_open(h_molt_t *h, ev_t *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->fd = h_ctl_open(h, "{\"cmd\":\"events\"}");
    H_CHECK(ev->fd >= 0, "cannot send the events request");
    bool eof;
    json_t *r = ev_next(ev, 5000, &eof);
    H_CHECK(r && json_is_true(json_object_get(r, "ok")), "events: no ok reply");
    json_decref(r);
    ev->seen[0] = '\0';
}

static void ev_close(ev_t *ev)
{
    if (ev->fd >= 0)
        close(ev->fd);
    ev->fd = -1;
    free(ev->buf);
    ev->buf = NULL;
}

/* The next event of `type` (and `result`, if not NULL), skipping others;
 * fails the test if none comes within timeout_ms or the stream ends. */
static json_t *ev_expect(ev_t *ev, const char *type, const char *result, int timeout_ms, const char *what)
{
    long long deadline = h_now_ms() + h_ms(timeout_ms);
    for (;;) {
        bool eof = false;
        long long left = deadline - h_now_ms();
        json_t *o = left > 0 ? ev_next(ev, (int)left, &eof) : NULL;
        H_CHECK(!eof, "%s: the events subscriber was disconnected (events so far:%s)", what, ev->seen);
        H_CHECK(o != NULL, "%s: no %s event%s%s within %d ms (events so far:%s)", what, type,
                result ? " " : "", result ? result : "", timeout_ms, ev->seen);
        if (strcmp(jstr(o, "type"), type) == 0 && (!result || strcmp(jstr(o, "result"), result) == 0))
            return o;
        json_decref(o);
    }
}

/* ---- helpers: kv ----------------------------------------------------------------------------- */

/* One request on a connection of its own; the response (fails if none). */
static void http_once(h_molt_t *h, const char *method, const char *path, const char *body, h_resp_t *r)
{
    char req[1024];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n", method, path);
    if (body)
        n += snprintf(req + n, sizeof(req) - (size_t)n, "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
    else
        n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_conn_send(&c, req, (size_t)n);
    int rc = h_conn_read(&c, r, 15000);
    h_conn_close(&c);
    H_CHECK(rc == 0, "%s %s: no complete response: %s", method, path, strerror(-rc));
}

enum { KV_KEYS = 8 };

static void kv_key(char *buf, size_t len, int i)
{
    snprintf(buf, len, "/kv/key%d", i);
}

static void kv_value(char *buf, size_t len, int i)
{
    snprintf(buf, len, "value %d written before the upgrade", i);
}

/* Every key reads back from fresh connections, and every worker's own table
 * (the state command) holds exactly the KV_KEYS keys. */
static void kv_check_all(h_molt_t *h, size_t workers, const char *what)
{
    char path[64], val[128];
    for (int i = 0; i < KV_KEYS; i++) {
        kv_key(path, sizeof(path), i);
        kv_value(val, sizeof(val), i);
        for (int j = 0; j < 4; j++) {
            h_resp_t r;
            http_once(h, "GET", path, NULL, &r);
            H_CHECK(r.status == 200 && strcmp(r.body, val) == 0, "%s: GET %s: %d '%s', expected '%s'", what,
                    path, r.status, r.body, val);
            h_resp_free(&r);
        }
    }
    json_t *o = h_ctl(h, "{\"cmd\":\"state\",\"name\":\"kv\"}");
    H_CHECK(o && json_is_true(json_object_get(o, "ok")), "%s: state kv failed: %s", what,
            o ? jstr(o, "error") : "no reply");
    const json_t *ws = json_object_get(o, "workers");
    H_CHECK(json_array_size(ws) == workers, "%s: state kv lists %zu workers, expected %zu", what,
            json_array_size(ws), workers);
    for (size_t w = 0; w < workers; w++) {
        const json_t *st = json_object_get(json_array_get(ws, w), "state");
        H_CHECK(json_is_object(st) && json_object_size(st) == KV_KEYS,
                "%s: worker %zu holds %zu keys, expected %d", what, w, json_object_size(st), KV_KEYS);
        for (int i = 0; i < KV_KEYS; i++) {
            kv_key(path, sizeof(path), i);
            kv_value(val, sizeof(val), i);
            const char *got = json_string_value(json_object_get(st, path + 4));
            H_CHECK(got && strcmp(got, val) == 0, "%s: worker %zu: %s is '%s'", what, w, path + 4,
                    got ? got : "(none)");
        }
    }
    json_decref(o);
}

/* =============================================================================================
 * under load: wrk through `moltctl upgrade`, then the new supervisor's work
 * ============================================================================================= */

START_TEST(test_under_load)
{
    h_molt_t *h = up_new();
    h_start_ready(h);
    snap_t before;
    snap_take(h, &before);
    H_CHECK(before.nworkers == 2 && before.upgrades == 0 && before.upgraded_ms_null,
            "before any upgrade: %zu workers, upgrades %lld, upgraded_ms %s", before.nworkers,
            before.upgrades, before.upgraded_ms_null ? "null" : "not null");
    H_CHECK(strcmp(before.binary, up_bin) == 0, "status.binary is '%s', expected %s", before.binary, up_bin);
    char want_to[96];
    snprintf(want_to, sizeof(want_to), "%s%s", before.version, UP_NEXT_SUFFIX);
    deploy(UP_NEXT, 0755);

    /* wrk's keep-alive connections must not notice the upgrade at all. */
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "wrk -t2 -c16 -d4s http://127.0.0.1:%d/ 2>&1", h->port);
    FILE *wrk = popen(cmd, "r");
    H_CHECK(wrk != NULL, "popen(wrk): %s", strerror(errno));
    h_sleep_ms(1500);
    h_cmd_t c;
    int rc = h_run(&c, 30000, H_MOLTCTL, "-s", h->sock_path, "upgrade", (char *)NULL);
    char out[8192];
    size_t len = fread(out, 1, sizeof(out) - 1, wrk);
    out[len] = '\0';
    int wrc = pclose(wrk);
    fprintf(stderr, "wrk through an upgrade:\n%s", out);
    char want_line[PATH_MAX + 256];
    snprintf(want_line, sizeof(want_line), "upgraded moltd %s -> %s (pid %d, binary %s) in ", before.version,
             want_to, (int)h->pid, up_bin);
    bool line_ok = strncmp(c.out, want_line, strlen(want_line)) == 0 && strstr(c.out, " ms\n");
    if (rc != 0 || !line_ok)
        fprintf(stderr, "moltctl upgrade exited %d:\n%s%s", rc, c.out, c.err);
    h_cmd_free(&c);
    H_CHECK(rc == 0, "moltctl upgrade exited %d (output above)", rc);
    H_CHECK(line_ok, "moltctl upgrade did not print '%s... ms' (output above)", want_line);
    H_CHECK(wrc == 0 && strstr(out, "requests in"), "wrk exited %d without a result (output above)", wrc);
    H_CHECK(!strstr(out, "Socket errors"), "wrk saw socket errors through the upgrade (output above)");
    H_CHECK(!strstr(out, "Non-2xx"), "wrk saw non-2xx responses through the upgrade (output above)");

    /* The same process and workers, running the deployed binary. */
    check_same_processes(h, &before, "after the upgrade");
    snap_t after;
    snap_take(h, &after);
    H_CHECK(strcmp(after.version, want_to) == 0, "status.version is '%s' after the upgrade, expected '%s'",
            after.version, want_to);
    H_CHECK(after.upgrades == 1 && !after.upgraded_ms_null && after.upgraded_ms > 0,
            "after one upgrade: upgrades %lld, upgraded_ms %lld", after.upgrades, after.upgraded_ms);
    H_CHECK(strcmp(after.binary, up_bin) == 0, "status.binary is '%s', expected %s", after.binary, up_bin);
    char exe[PATH_MAX];
    H_CHECK(strcmp(proc_exe(h->pid, exe, sizeof(exe)), up_bin) == 0, "/proc/%d/exe is '%s', expected %s",
            (int)h->pid, exe, up_bin);
    curl_hello(h, H_HELLO_BODY, "after the upgrade");

    /* The new supervisor reloads: generation + 1, new workers, the old ones reaped. */
    set_hello_body(h, "after the upgrade\n");
    reload_commit(h, "reload", before.gen_number + 1);
    curl_hello(h, "after the upgrade\n", "after a reload by the new binary");
    for (size_t i = 0; i < before.nworkers; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d", (int)before.workers[i]);
        for (long long end = h_now_ms() + h_ms(5000); h_file_exists(path) && h_now_ms() < end;)
            h_sleep_ms(20);
        H_CHECK(!h_file_exists(path), "the old worker %d is still there (or a zombie) 5 s after the commit",
                (int)before.workers[i]);
    }

    /* A killed worker: reaped and respawned by the new binary. */
    snap_t gen2;
    snap_take(h, &gen2);
    H_CHECK(gen2.nworkers == 2, "%zu workers after the reload", gen2.nworkers);
    H_CHECK(kill(gen2.workers[0], SIGKILL) == 0, "kill(%d): %s", (int)gen2.workers[0], strerror(errno));
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d", (int)gen2.workers[0]);
    pid_t respawned = 0;
    for (long long end = h_now_ms() + h_ms(5000); !respawned; h_sleep_ms(20)) {
        json_t *st = status_now(h);
        const json_t *w = h_status_slot(st, 0);
        if (jint(w, "pid") > 0 && jint(w, "pid") != gen2.workers[0] && strcmp(jstr(w, "state"), "ready") == 0)
            respawned = (pid_t)jint(w, "pid");
        json_decref(st);
        H_CHECK(respawned || h_now_ms() < end, "slot 0 was not respawned within 5 s of SIGKILL to %d",
                (int)gen2.workers[0]);
    }
    for (long long end = h_now_ms() + h_ms(3000); h_file_exists(path) && h_now_ms() < end;)
        h_sleep_ms(20);
    H_CHECK(!h_file_exists(path), "the killed worker %d was not reaped (a zombie of moltd)",
            (int)gen2.workers[0]);
    curl_hello(h, "after the upgrade\n", "after a worker was respawned");

    /* A graceful stop: exit 0, every process gone. */
    rc = h_run(&c, 30000, H_MOLTCTL, "-s", h->sock_path, "stop", (char *)NULL);
    h_cmd_free(&c);
    H_CHECK(rc == 0, "moltctl stop exited %d", rc);
    H_CHECK(h_wait_exit(h, 10000), "moltd did not exit after the stop");
    H_CHECK(h_exit_code(h) == 0, "moltd exited with wait status 0x%x, expected exit 0", (unsigned)h->wstatus);
    H_CHECK(h_wait_pid_gone(respawned, 5000, NULL) && h_wait_pid_gone(gen2.workers[1], 5000, NULL),
            "a worker outlived moltd");
    pid_t left[8];
    size_t n = h_group_procs(left, 8);
    H_CHECK(n == 0, "%zu process(es) left after the stop, the first pid %d", n, (int)(n ? left[0] : 0));
}
END_TEST

/* =============================================================================================
 * state and history: what the supervisor holds, kept
 * ============================================================================================= */

START_TEST(test_state_history)
{
    h_molt_t *h = up_new();
    h_add_plugin(h, "kv", "kv.so", NULL);
    h_add_route(h, "/kv/", "kv");
    h_cfg_set(h, "reload.handoff_timeout_ms", json_integer(h_ms(10000)));
    char admin[64];
    int admin_port = h_free_port(AF_INET);
    snprintf(admin, sizeof(admin), "127.0.0.1:%d", admin_port);
    h_cfg_set(h, "admin", json_pack("{s:s}", "address", admin));
    h_start_ready(h);
    ev_t ev;
    ev_open(h, &ev);

    char path[64], val[128];
    for (int i = 0; i < KV_KEYS; i++) {
        kv_key(path, sizeof(path), i);
        kv_value(val, sizeof(val), i);
        h_resp_t r;
        http_once(h, "PUT", path, val, &r);
        H_CHECK(r.status == 201, "PUT %s: %d '%s'", path, r.status, r.body);
        h_resp_free(&r);
    }
    /* A reload (generation 2, body B) so that there is history: a rollback target, counters. */
    set_hello_body(h, "B\n");
    reload_commit(h, "reload", 2);
    json_decref(ev_expect(&ev, "reload", "committed", 10000, "the reload before the upgrade"));
    wait_one_generation(h);
    curl_hello(h, "B\n", "generation 2");
    kv_check_all(h, 2, "before the upgrade");

    snap_t before;
    snap_take(h, &before);
    H_CHECK(before.rollback_to == 1, "status.reload.rollback_to is %lld before the upgrade, expected 1",
            before.rollback_to);
    long long committed = metric(h, "moltd_reloads_total{result=\"committed\"}");
    H_CHECK(committed == 1,
            "moltd_reloads_total{result=\"committed\"} is %lld before the upgrade, expected 1", committed);
    H_CHECK(metric(h, "moltd_upgrades_total{result=\"done\"}") == 0,
            "moltd_upgrades_total{result=\"done\"} is not 0 before any upgrade");
    size_t fds = settled_fds(h);

    deploy(UP_NEXT, 0755);
    long long t0 = h_now_ms();
    json_t *r = upgrade_ok(h);
    long long took = h_now_ms() - t0;
    char want_to[96];
    snprintf(want_to, sizeof(want_to), "%s%s", before.version, UP_NEXT_SUFFIX);
    const json_t *up = json_object_get(r, "upgrade");
    char *text = json_dumps(r, JSON_COMPACT);
    bool fields = json_is_object(up) && strcmp(jstr(up, "from"), before.version) == 0 &&
                  strcmp(jstr(up, "to"), want_to) == 0 && strcmp(jstr(up, "binary"), up_bin) == 0 &&
                  jint(up, "pid") == h->pid && jint(up, "ms") >= 0 && jint(up, "ms") <= took + 1 &&
                  jint(up, "workers") == 2 && jint(up, "generations") >= 1;
    if (!fields)
        fprintf(stderr, "upgrade reply: %s\n", text ? text : "?");
    free(text);
    json_decref(r);
    H_CHECK(fields,
            "the upgrade reply is not {from: %s, to: %s, binary: %s, pid: %d, ms <= %lld, workers: 2, "
            "generations >= 1} (above)",
            before.version, want_to, up_bin, (int)h->pid, took);

    /* The subscriber is still there, and told. */
    json_t *e = ev_expect(&ev, "upgrade", NULL, 5000, "the upgrade");
    bool ev_ok = strcmp(jstr(e, "result"), "done") == 0 && strcmp(jstr(e, "from"), before.version) == 0 &&
                 strcmp(jstr(e, "to"), want_to) == 0 && strcmp(jstr(e, "binary"), up_bin) == 0;
    text = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    if (!ev_ok)
        fprintf(stderr, "upgrade event: %s\n", text ? text : "?");
    free(text);
    H_CHECK(ev_ok, "the upgrade event is not {result: done, from: %s, to: %s} (above)", before.version,
            want_to);

    check_same_processes(h, &before, "after the upgrade");
    check_fds(h, fds, true, "after the upgrade");
    kv_check_all(h, 2, "after the upgrade");
    snap_t after;
    snap_take(h, &after);
    H_CHECK(after.rollback_to == 1, "status.reload.rollback_to is %lld after the upgrade, expected 1",
            after.rollback_to);
    committed = metric(h, "moltd_reloads_total{result=\"committed\"}");
    H_CHECK(committed == 1, "moltd_reloads_total{result=\"committed\"} is %lld after the upgrade, expected 1",
            committed);
    long long done = metric(h, "moltd_upgrades_total{result=\"done\"}");
    H_CHECK(done == 1, "moltd_upgrades_total{result=\"done\"} is %lld after the upgrade, expected 1", done);
    /* The admin listener too: the same socket, served by the new binary. */
    char url[96];
    snprintf(url, sizeof(url), "http://%s/metrics", admin);
    h_resp_t m;
    H_CHECK(h_curl(h, &m, url, NULL) == 0, "curl %s failed after the upgrade", url);
    bool scraped = m.status == 200 && strstr(m.body, "moltd_upgrades_total{result=\"done\"} 1\n");
    h_resp_free(&m);
    H_CHECK(scraped, "GET %s after the upgrade: not 200 with moltd_upgrades_total{result=\"done\"} 1", url);
    json_t *st = status_now(h);
    long long counted = jint(json_object_get(json_object_get(st, "reload"), "counts"), "committed");
    json_decref(st);
    H_CHECK(counted == 1, "status.reload.counts.committed is %lld after the upgrade, expected 1", counted);

    /* Rollback: to generation 1's config, as generation 3; the state follows. */
    reload_commit(h, "rollback", 3);
    curl_hello(h, H_HELLO_BODY, "after the rollback to generation 1's config");
    json_decref(ev_expect(&ev, "reload", "committed", 10000, "the rollback after the upgrade"));
    wait_one_generation(h);
    kv_check_all(h, 2, "after the rollback");
    committed = metric(h, "moltd_reloads_total{result=\"committed\"}");
    H_CHECK(committed == 2,
            "moltd_reloads_total{result=\"committed\"} is %lld after the rollback, expected 2", committed);
    ev_close(&ev);
}
END_TEST

/* =============================================================================================
 * SIGUSR2
 * ============================================================================================= */

static char *wait_log_line(h_molt_t *h, const char *const *needles, int timeout_ms)
{
    char *line = NULL;
    for (long long end = h_now_ms() + h_ms(timeout_ms); !(line = h_log_line(h, needles)) && h_now_ms() < end;)
        h_sleep_ms(20);
    return line;
}

START_TEST(test_sigusr2)
{
    h_molt_t *h = up_new();
    h_start_ready(h);
    snap_t before;
    snap_take(h, &before);
    deploy(UP_NEXT, 0755);
    H_CHECK(kill(h->pid, SIGUSR2) == 0, "kill(SIGUSR2): %s", strerror(errno));
    char next[96], want[200];
    snprintf(next, sizeof(next), "%s%s", before.version, UP_NEXT_SUFFIX);
    snprintf(want, sizeof(want), "upgrade: moltd %s -> %s", before.version, next);
    char *line = wait_log_line(h, (const char *const[]){want, NULL}, 15000);
    H_CHECK(line != NULL, "no log line '%s' within 15 s of SIGUSR2", want);
    bool notice = strstr(line, " notice ") != NULL;
    if (!notice)
        fprintf(stderr, "the line: %s\n", line);
    free(line);
    H_CHECK(notice, "the line saying '%s' is not a notice (above)", want);
    snap_t after;
    for (long long end = h_now_ms() + h_ms(5000);; h_sleep_ms(20)) {
        snap_take(h, &after);
        if (after.upgrades == 1 || h_now_ms() >= end)
            break;
    }
    H_CHECK(after.upgrades == 1, "status.upgrades is %lld after SIGUSR2, expected 1", after.upgrades);
    H_CHECK(strcmp(after.version, next) == 0, "status.version is '%s' after SIGUSR2, expected '%s'",
            after.version, next);
    check_same_processes(h, &before, "after SIGUSR2");
    curl_hello(h, H_HELLO_BODY, "after SIGUSR2");

    /* SIGUSR2 to a file that is no program: an error line, nothing changes. */
    deploy_text("not a program\n", 0755);
    H_CHECK(kill(h->pid, SIGUSR2) == 0, "kill(SIGUSR2): %s", strerror(errno));
    line = wait_log_line(h, (const char *const[]){"upgrade failed: ", "Exec format error", NULL}, 15000);
    H_CHECK(line != NULL, "no log line 'upgrade failed: ... Exec format error' within 15 s of SIGUSR2");
    /* "TIME error  sup[PID] upgrade failed: ...": an error whose message starts with it. */
    bool error = strstr(line, " error ") && strstr(line, "] upgrade failed: ");
    if (!error)
        fprintf(stderr, "the line: %s\n", line);
    free(line);
    H_CHECK(error, "the line saying 'upgrade failed: ' is not an error that starts with it (above)");
    snap_t again;
    snap_take(h, &again);
    H_CHECK(again.upgrades == 1 && strcmp(again.version, after.version) == 0,
            "after a failed SIGUSR2 upgrade: upgrades %lld, version %s", again.upgrades, again.version);
    check_same_processes(h, &before, "after a failed SIGUSR2 upgrade");
    curl_hello(h, H_HELLO_BODY, "after a failed SIGUSR2 upgrade");
}
END_TEST

/* =============================================================================================
 * failures: every way a new binary can be wrong; moltd runs on as it was
 * ============================================================================================= */

typedef enum {
    F_MISSING = 0,
    F_GARBAGE,
    F_NOEXEC,
    F_EXIT3,
    F_SEGV,
    F_HANG,
    F_INCOMPAT,
    F_FAULTY,
    F_COUNT
} fcase_t;

static const struct {
    const char *what;
    const char *stage;
    const char *needles[3];
} fcases[F_COUNT] = {
    [F_MISSING] = {"a missing binary", "check", {"cannot run", "No such file or directory", NULL}},
    [F_GARBAGE] = {"a text file mode 0755", "check", {"cannot run", "Exec format error", NULL}},
    [F_NOEXEC] = {"moltd mode 0644", "check", {"cannot run", "Permission denied", NULL}},
    [F_EXIT3] = {"a check that exits 3", "check", {"exited with code 3: boom", NULL}},
    [F_SEGV] = {"a check killed by SIGSEGV", "check", {"was killed by signal 11", NULL}},
    [F_HANG] = {"a check that hangs", "check", {"did not answer within 5 s", NULL}},
    [F_INCOMPAT] = {"moltd_upgrade_incompat", "check", {"state format", NULL}},
    [F_FAULTY] = {"moltd_upgrade_faulty", "restore", {"went back to", NULL}},
};

static void deploy_case(fcase_t f)
{
    switch (f) {
    case F_MISSING:
        H_CHECK(unlink(up_bin) == 0 || errno == ENOENT, "unlink(%s): %s", up_bin, strerror(errno));
        break;
    case F_GARBAGE:
        deploy_text("this is not a program\nnor a script\n", 0755);
        break;
    case F_NOEXEC:
        deploy(H_MOLTD, 0644);
        break;
    case F_EXIT3:
        deploy_text("#!/bin/sh\necho starting\necho boom\necho boom >&2\nexit 3\n", 0755);
        break;
    case F_SEGV:
        deploy_text("#!/bin/sh\nulimit -c 0\nkill -SEGV $$\nsleep 10\n", 0755);
        break;
    case F_HANG:
        deploy_text("#!/bin/sh\nexec sleep 30\n", 0755);
        break;
    case F_INCOMPAT:
        deploy(UP_INCOMPAT, 0755);
        break;
    case F_FAULTY:
        deploy(UP_FAULTY, 0755);
        break;
    case F_COUNT:
        break;
    }
}

START_TEST(test_failures)
{
    need_file(UP_NEXT);
    need_file(UP_INCOMPAT);
    need_file(UP_FAULTY);
    h_molt_t *h = up_new();
    h_start_ready(h);
    ev_t ev;
    ev_open(h, &ev);
    snap_t before;
    snap_take(h, &before);
    size_t fds = settled_fds(h);
    check_no_leftovers(h, &before, "before any upgrade");

    for (int f = 0; f < F_COUNT; f++) {
        const char *what = fcases[f].what;
        deploy_case((fcase_t)f);
        long long t0 = h_now_ms();
        if (f == F_EXIT3) {
            /* This one through moltctl: the reason on stderr, exit 1. */
            h_cmd_t c;
            int rc = h_run(&c, 30000, H_MOLTCTL, "-s", h->sock_path, "upgrade", (char *)NULL);
            bool said = strstr(c.err, "moltctl: upgrade failed: ") && strstr(c.err, fcases[f].needles[0]) &&
                        c.out[0] == '\0';
            if (rc != 1 || !said)
                fprintf(stderr, "moltctl upgrade (%s) exited %d:\nstdout: %s\nstderr: %s", what, rc, c.out,
                        c.err);
            h_cmd_free(&c);
            H_CHECK(rc == 1, "moltctl upgrade (%s) exited %d, expected 1 (output above)", what, rc);
            H_CHECK(said,
                    "moltctl upgrade (%s) did not print 'moltctl: upgrade failed: ...%s' on stderr alone",
                    what, fcases[f].needles[0]);
        } else if (f == F_HANG) {
            /* The check runs for 5 s: moltd answers meanwhile, and refuses a second upgrade. */
            int fd = h_ctl_open(h, "{\"cmd\":\"upgrade\"}");
            H_CHECK(fd >= 0, "cannot send the upgrade request");
            h_sleep_ms(300);
            long long s0 = h_now_ms();
            json_t *st = h_status(h);
            long long s_ms = h_now_ms() - s0;
            H_CHECK(st != NULL && s_ms < 1000, "status during an upgrade's check: %s after %lld ms",
                    st ? "answered" : "no answer", s_ms);
            json_decref(st);
            json_t *second = upgrade(h);
            check_failed_reply(second, "refused",
                               (const char *const[]){"an upgrade is already running", NULL},
                               "a second upgrade during a check");
            json_decref(second);
            json_t *r = h_ctl_reply(fd, 30000);
            H_CHECK(r != NULL, "%s: no reply", what);
            check_failed_reply(r, fcases[f].stage, fcases[f].needles, what);
            json_decref(r);
            long long took = h_now_ms() - t0;
            H_CHECK(took >= 4500 && took < h_ms(9000), "%s: the reply came after %lld ms, expected about 5 s",
                    what, took);
            /* The refusal is an event too (or not): skip to this case's own. */
        } else {
            json_t *r = upgrade(h);
            check_failed_reply(r, fcases[f].stage, fcases[f].needles, what);
            json_decref(r);
        }
        /* The event says the same. */
        json_t *e = NULL;
        for (;;) {
            e = ev_expect(&ev, "upgrade", "failed", 10000, what);
            if (strstr(jstr(e, "error"), "already running") == NULL)
                break;
            json_decref(e);
        }
        bool ev_ok =
            strstr(jstr(e, "error"), fcases[f].needles[0]) && strcmp(jstr(e, "from"), before.version) == 0;
        char *text = json_dumps(e, JSON_COMPACT);
        json_decref(e);
        if (!ev_ok)
            fprintf(stderr, "%s: upgrade event: %s\n", what, text ? text : "?");
        free(text);
        H_CHECK(ev_ok, "%s: the failed event does not say '%s' from %s (above)", what, fcases[f].needles[0],
                before.version);

        /* Nothing changed, nothing left behind. */
        check_same_processes(h, &before, what);
        snap_t now;
        snap_take(h, &now);
        H_CHECK(strcmp(now.version, before.version) == 0 && now.upgrades == 0,
                "%s: version %s, upgrades %lld; expected %s, 0", what, now.version, now.upgrades,
                before.version);
        curl_hello(h, H_HELLO_BODY, what);
        check_fds(h, fds, f == F_FAULTY, what);
        check_no_leftovers(h, &before, what);
    }

    /* Every failure counts, the refusal during F_HANG too. */
    long long failed = metric(h, "moltd_upgrades_total{result=\"failed\"}");
    H_CHECK(failed == F_COUNT + 1,
            "moltd_upgrades_total{result=\"failed\"} is %lld after %d failed upgrades and one refused",
            failed, (int)F_COUNT);
    H_CHECK(metric(h, "moltd_upgrades_total{result=\"done\"}") == 0,
            "moltd_upgrades_total{result=\"done\"} is not 0");

    /* After all that, a good binary upgrades. */
    deploy(UP_NEXT, 0755);
    json_decref(upgrade_ok(h));
    json_decref(ev_expect(&ev, "upgrade", "done", 5000, "the good upgrade after the failures"));
    check_same_processes(h, &before, "the good upgrade after the failures");
    snap_t now;
    snap_take(h, &now);
    H_CHECK(now.upgrades == 1, "status.upgrades is %lld after the good upgrade", now.upgrades);
    curl_hello(h, H_HELLO_BODY, "after the good upgrade");
    check_fds(h, fds, true, "after the good upgrade");
    ev_close(&ev);
}
END_TEST

/* =============================================================================================
 * refused: during a reload, during another upgrade, while stopping
 * ============================================================================================= */

START_TEST(test_refused)
{
    h_molt_t *h = up_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(3000));
    h_add_echo(h);
    h_start_ready(h);
    snap_t before;
    snap_take(h, &before);
    deploy(UP_NEXT, 0755);

    /* A reload in its 3-s verify window. */
    set_hello_body(h, "reloaded\n");
    int rfd = h_ctl_open(h, "{\"cmd\":\"reload\"}");
    H_CHECK(rfd >= 0, "cannot send the reload request");
    h_sleep_ms(500);
    json_t *r = upgrade(h);
    check_failed_reply(r, "refused", (const char *const[]){"a reload is running", NULL},
                       "an upgrade during a reload");
    json_decref(r);
    r = h_ctl_reply(rfd, 30000);
    H_CHECK(r && json_is_true(json_object_get(r, "ok")) && jint(r, "generation") == 2,
            "the reload during which an upgrade was refused did not commit generation 2: %s",
            r ? jstr(r, "error") : "no reply");
    json_decref(r);
    curl_hello(h, "reloaded\n", "after the reload");
    snap_t now;
    snap_take(h, &now);
    H_CHECK(now.upgrades == 0 && strcmp(now.version, before.version) == 0,
            "after a refused upgrade: upgrades %lld, version %s", now.upgrades, now.version);

    /* Another upgrade's check (2 s, then it fails). */
    deploy_text("#!/bin/sh\nsleep 2\necho slow and wrong\nexit 4\n", 0755);
    int ufd = h_ctl_open(h, "{\"cmd\":\"upgrade\"}");
    H_CHECK(ufd >= 0, "cannot send the upgrade request");
    h_sleep_ms(300);
    r = upgrade(h);
    check_failed_reply(r, "refused", (const char *const[]){"an upgrade is already running", NULL},
                       "an upgrade during an upgrade");
    json_decref(r);
    r = h_ctl_reply(ufd, 30000);
    H_CHECK(r != NULL, "no reply to the slow upgrade");
    check_failed_reply(r, "check", (const char *const[]){"exited with code 4: slow and wrong", NULL},
                       "a check that exits 4 after 2 s");
    json_decref(r);

    /* Stopping: a request in flight keeps moltd in its graceful stop. */
    deploy(UP_NEXT, 0755);
    snap_take(h, &now);
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_conn_send_str(&c, "POST /echo/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345");
    h_sleep_ms(200);
    r = h_ctl(h, "{\"cmd\":\"stop\"}");
    H_CHECK(r && json_is_true(json_object_get(r, "ok")), "stop refused");
    json_decref(r);
    h_sleep_ms(200);
    H_CHECK(!h_reap(h), "moltd exited while a request was in flight");
    r = upgrade(h);
    check_failed_reply(r, "refused", (const char *const[]){"moltd is stopping", NULL},
                       "an upgrade while stopping");
    json_decref(r);
    h_conn_send_str(&c, "67890");
    h_resp_t resp;
    H_CHECK(h_conn_read(&c, &resp, 5000) == 0 && resp.status == 200,
            "the request in flight was not answered");
    h_resp_free(&resp);
    h_conn_close(&c);
    H_CHECK(h_wait_exit(h, 10000) && h_exit_code(h) == 0, "moltd did not exit 0 after the stop");
}
END_TEST

/* =============================================================================================
 * twice: to the next version and back
 * ============================================================================================= */

START_TEST(test_twice)
{
    h_molt_t *h = up_new();
    h_start_ready(h);
    snap_t before;
    snap_take(h, &before);
    char next[96];
    snprintf(next, sizeof(next), "%s%s", before.version, UP_NEXT_SUFFIX);

    /* The first with a status request sent behind it on the same connection:
     * answered after the upgrade, by the new binary. */
    deploy(UP_NEXT, 0755);
    ev_t conn;
    memset(&conn, 0, sizeof(conn));
    conn.fd = h_ctl_open(h, "{\"cmd\":\"upgrade\"}");
    H_CHECK(conn.fd >= 0, "cannot send the upgrade request");
    H_CHECK(send(conn.fd, "{\"cmd\":\"status\"}\n", 17, MSG_NOSIGNAL) == 17, "send(status): %s",
            strerror(errno));
    bool eof;
    json_t *r = ev_next(&conn, 30000, &eof);
    H_CHECK(r != NULL, "no reply to the upgrade request");
    const json_t *up = json_object_get(r, "upgrade");
    H_CHECK(json_is_true(json_object_get(r, "ok")) && strcmp(jstr(up, "from"), before.version) == 0 &&
                strcmp(jstr(up, "to"), next) == 0,
            "first upgrade: ok %s, from %s to %s: %s",
            json_is_true(json_object_get(r, "ok")) ? "true" : "false", jstr(up, "from"), jstr(up, "to"),
            jstr(r, "error"));
    json_decref(r);
    r = ev_next(&conn, 5000, &eof);
    H_CHECK(r != NULL, "no reply to the status request sent behind the upgrade (%s)",
            eof ? "closed" : "silence");
    H_CHECK(json_is_true(json_object_get(r, "ok")) && strcmp(jstr(r, "version"), next) == 0 &&
                jint(r, "upgrades") == 1,
            "the status request behind the upgrade: version '%s', upgrades %lld; expected '%s', 1",
            jstr(r, "version"), jint(r, "upgrades"), next);
    json_decref(r);
    ev_close(&conn);

    /* Back, through moltctl upgrade --json. */
    deploy(H_MOLTD, 0755);
    h_cmd_t c;
    int rc = h_run(&c, 30000, H_MOLTCTL, "-s", h->sock_path, "upgrade", "--json", (char *)NULL);
    json_error_t jerr;
    r = rc == 0 ? json_loads(c.out, 0, &jerr) : NULL;
    if (!r)
        fprintf(stderr, "moltctl upgrade --json exited %d:\n%s%s", rc, c.out, c.err);
    h_cmd_free(&c);
    H_CHECK(rc == 0 && r != NULL, "moltctl upgrade --json back to %s: exit %d (output above)", before.version,
            rc);
    up = json_object_get(r, "upgrade");
    H_CHECK(json_is_true(json_object_get(r, "ok")) && strcmp(jstr(up, "from"), next) == 0 &&
                strcmp(jstr(up, "to"), before.version) == 0 && jint(up, "pid") == h->pid,
            "second upgrade: from '%s' to '%s' pid %lld", jstr(up, "from"), jstr(up, "to"), jint(up, "pid"));
    json_decref(r);

    check_same_processes(h, &before, "after two upgrades");
    snap_t after;
    snap_take(h, &after);
    H_CHECK(after.upgrades == 2 && strcmp(after.version, before.version) == 0,
            "after two upgrades: upgrades %lld, version %s", after.upgrades, after.version);
    char exe[PATH_MAX];
    H_CHECK(strcmp(proc_exe(h->pid, exe, sizeof(exe)), up_bin) == 0, "/proc/%d/exe is '%s', expected %s",
            (int)h->pid, exe, up_bin);
    curl_hello(h, H_HELLO_BODY, "after two upgrades");

    /* moltctl status names the binary and the upgrades. */
    rc = h_run(&c, 15000, H_MOLTCTL, "-s", h->sock_path, "status", (char *)NULL);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof(want), "binary      %s, upgraded 2 times, last ", up_bin);
    bool shown = rc == 0 && strstr(c.out, want);
    if (!shown)
        fprintf(stderr, "moltctl status exited %d:\n%s%s", rc, c.out, c.err);
    h_cmd_free(&c);
    H_CHECK(shown, "moltctl status does not show '%s...' (output above)", want);
}
END_TEST

/* =============================================================================================
 * exec: the check passes, then execve() itself fails
 * ============================================================================================= */

/* Every descriptor of moltd beyond 0, 1 and 2 is close-on-exec (what a worker
 * or a plugin's child could otherwise inherit). Not judged under
 * MOLT_TEST_WRAPPER, whose program has descriptors of its own. */
static void check_cloexec(h_molt_t *h, const char *what)
{
    const char *wrapper = getenv("MOLT_TEST_WRAPPER");
    if (wrapper && *wrapper)
        return;
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/fdinfo", (int)h->pid);
    DIR *d = opendir(dir);
    H_CHECK(d != NULL, "opendir(%s): %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd <= 2)
            continue;
        char path[64 + 256];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        char *info = h_read_file(path, NULL);
        const char *flags = strstr(info, "flags:");
        unsigned long v = flags ? strtoul(flags + 6, NULL, 8) : 0;
        free(info);
        if (!flags)
            continue; /* closed meanwhile */
        if (!(v & 02000000)) {
            closedir(d);
            H_FAIL("%s: moltd's descriptor %d is not close-on-exec (flags 0%lo)", what, fd, v);
        }
    }
    closedir(d);
}

/*
 * A binary whose check passes (it runs the real moltd --upgrade-check) but
 * which puts a file that cannot run in its own place first: the exec after
 * the check fails. moltd carries on as it was: its descriptors close-on-exec
 * again, its signals unblocked (a SIGHUP still reloads), and a good upgrade
 * after it works.
 */
START_TEST(test_exec_fails)
{
    h_molt_t *h = up_new();
    h_start_ready(h);
    snap_t before;
    snap_take(h, &before);
    size_t fds = settled_fds(h);
    check_cloexec(h, "before any upgrade");
    char script[PATH_MAX * 2 + 256];
    snprintf(script, sizeof(script),
             "#!/bin/sh\n"
             "printf 'not a program\\n' > \"$0.x\" && chmod 755 \"$0.x\" && mv \"$0.x\" \"$0\" || exit 9\n"
             "exec %s \"$@\"\n",
             H_MOLTD);
    deploy_text(script, 0755);
    json_t *r = upgrade(h);
    check_failed_reply(r, "exec", (const char *const[]){"execve(", "Exec format error", "nothing changed", NULL},
                       "an exec that fails after the check");
    json_decref(r);
    check_same_processes(h, &before, "after the failed exec");
    curl_hello(h, H_HELLO_BODY, "after the failed exec");
    check_fds(h, fds, false, "after the failed exec");
    check_cloexec(h, "after the failed exec");

    /* Signals were blocked around the exec: a reload by SIGHUP shows they are not any more. */
    set_hello_body(h, "after SIGHUP\n");
    H_CHECK(kill(h->pid, SIGHUP) == 0, "kill(SIGHUP): %s", strerror(errno));
    bool reloaded = false;
    for (long long end = h_now_ms() + h_ms(10000); !reloaded && h_now_ms() < end; h_sleep_ms(50)) {
        json_t *st = status_now(h);
        reloaded = jint(json_object_get(st, "generation"), "number") == before.gen_number + 1;
        json_decref(st);
    }
    H_CHECK(reloaded, "SIGHUP after the failed exec did not reload (generation %lld expected)",
            before.gen_number + 1);
    curl_hello(h, "after SIGHUP\n", "after SIGHUP");

    /* A good binary now: done, and the new image's descriptors close-on-exec again too. */
    deploy(UP_NEXT, 0755);
    json_decref(upgrade_ok(h));
    check_cloexec(h, "after a good upgrade");
    curl_hello(h, "after SIGHUP\n", "after the good upgrade");
}
END_TEST

/* =============================================================================================
 * corrupt_state: the check reads a damaged state and says so
 * ============================================================================================= */

/* Damages the state the check is handed, then runs the real check on it, in
 * the same process (so that its parent is moltd and the descriptors are the
 * real ones; the damaged copy takes the lowest free number): attempt N (a counter file) truncates it (N < CORRUPT_TRUNC) or
 * flips 1 to 4 random bytes, seeded by N. Anything else (the exec after a
 * check that passed anyway) runs the real moltd with moltd's own arguments. */
#define CORRUPT_TRUNC 40
#define CORRUPT_TOTAL 140
static const char corrupt_py[] =
    "import os, random, sys\n"
    "fd, out, counter, trunc, moltd = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]\n"
    "try:\n"
    "    n = int(open(counter).read() or 0) if os.path.exists(counter) else 0\n"
    "    open(counter, 'w').write(str(n + 1))\n"
    "    data = bytearray()\n"
    "    while True:\n"
    "        b = os.pread(fd, 65536, len(data))\n"
    "        if not b: break\n"
    "        data += b\n"
    "    rnd = random.Random(n)\n"
    "    if n < trunc:\n"
    "        data = data[:rnd.randrange(len(data))]\n"
    "    else:\n"
    "        for _ in range(rnd.randint(1, 4)):\n"
    "            i = rnd.randrange(len(data))\n"
    "            data[i] ^= 1 << rnd.randrange(8)\n"
    "    open(out, 'wb').write(data)\n"
    "    bad = os.open(out, os.O_RDONLY)  # the lowest free number: none of moltd's\n"
    "    os.set_inheritable(bad, True)\n"
    "except Exception as e:\n"
    "    print('corrupt.py: %s' % e)\n"
    "    sys.exit(9)\n"
    "os.execv(moltd, [moltd, '--upgrade-check', str(bad)])\n";

/*
 * 140 damaged states (40 truncated, 100 with flipped bits): each check ends
 * with exit 0 (the damage was harmless: the upgrade is then done with the
 * intact state) or 1 with one line saying what is wrong: never a crash, a
 * hang or a sanitizer report. moltd serves on with the same pid and workers
 * throughout.
 */
START_TEST(test_corrupt_state)
{
    h_molt_t *h = up_new();
    h_add_plugin(h, "kv", "kv.so", NULL);
    h_add_route(h, "/kv/", "kv");
    h_start_ready(h);
    snap_t before;
    snap_take(h, &before);
    char py[PATH_MAX + 16], counter[PATH_MAX + 16], bad[PATH_MAX + 16], script[4 * PATH_MAX + 512];
    snprintf(py, sizeof(py), "%s/corrupt.py", h->dir);
    snprintf(counter, sizeof(counter), "%s/corrupt.n", h->dir);
    snprintf(bad, sizeof(bad), "%s/corrupt.state", h->dir);
    h_write_file(py, corrupt_py, strlen(corrupt_py), 0644);
    snprintf(script, sizeof(script),
             "#!/bin/sh\n"
             "if [ \"$1\" = --upgrade-check ]; then\n"
             "    exec python3 %s \"$2\" %s %s %d %s\n"
             "fi\n"
             "exec %s \"$@\"\n",
             py, bad, counter, CORRUPT_TRUNC, H_MOLTD, H_MOLTD);
    unsigned passed = 0, refused = 0;
    for (int i = 0; i < CORRUPT_TOTAL; i++) {
        deploy_text(script, 0755);
        json_t *r = upgrade(h);
        const char *err = jstr(r, "error");
        const char *stage = jstr(json_object_get(r, "upgrade"), "stage");
        bool ok = json_is_true(json_object_get(r, "ok"));
        bool clean = ok || (strcmp(stage, "check") == 0 && strstr(err, "exited with code 1: ") &&
                            !strstr(err, "signal") && !strstr(err, "Sanitizer") && !strstr(err, "runtime error") &&
                            !strstr(err, "did not answer"));
        if (!clean) {
            char *text = json_dumps(r, JSON_COMPACT);
            fprintf(stderr, "damaged state %d (python's random.Random(%d), see corrupt_py): %s\n", i, i,
                    text ? text : "?");
            free(text);
        }
        json_decref(r);
        H_CHECK(clean, "damaged state %d: the check did not end with a clean refusal or a pass (above)", i);
        passed += ok;
        refused += !ok;
    }
    fprintf(stderr, "damaged upgrade states: %u refused by the check, %u harmless (upgraded)\n", refused, passed);
    H_CHECK(refused >= CORRUPT_TRUNC, "only %u of %d damaged states were refused", refused, CORRUPT_TOTAL);
    check_same_processes(h, &before, "after the damaged states");
    curl_hello(h, H_HELLO_BODY, "after the damaged states");
    check_no_leftovers(h, &before, "after the damaged states");
}
END_TEST

/* A check that prints bytes that are not UTF-8: the reply still comes (a
 * JSON string cannot hold them: each becomes '?'), and says what it could. */
START_TEST(test_check_not_utf8)
{
    h_molt_t *h = up_new();
    h_start_ready(h);
    deploy_text("#!/bin/sh\nprintf 'bad \\377\\376 bytes\\n'\nexit 1\n", 0755);
    json_t *r = upgrade(h);
    check_failed_reply(r, "check", (const char *const[]){"exited with code 1: bad ?? bytes", NULL},
                       "a check that prints bytes that are not UTF-8");
    json_decref(r);
    curl_hello(h, H_HELLO_BODY, "after it");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integ_upgrade");
    TCase *tc = h_tcase("upgrade", 90);
    tcase_add_test(tc, test_under_load);
    tcase_add_test(tc, test_state_history);
    tcase_add_test(tc, test_sigusr2);
    tcase_add_test(tc, test_failures);
    tcase_add_test(tc, test_refused);
    tcase_add_test(tc, test_twice);
    tcase_add_test(tc, test_exec_fails);
    tcase_add_test(tc, test_corrupt_state);
    tcase_add_test(tc, test_check_not_utf8);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
