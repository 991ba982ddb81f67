/*
 * Integration theme "metrics": moltd's Prometheus metrics (SPEC §7,
 * docs/operations.md "Metrics") on the real moltd, scraped with curl from
 * the admin listener and read with `moltctl metrics`.
 *
 *   format        GET /metrics: 200, text/plain; version=0.0.4; every sample
 *                 line parses as `name{labels} value` and its family has HELP
 *                 and TYPE before it; moltctl metrics prints the same families
 *   reloads       one committed, one rolled back (tp_fail_init.so), one
 *                 rejected: counted by result; phase summaries and the last
 *                 reload's gauges
 *   requests      responses by class grow with requests, keep the retired
 *                 workers' final counts across a reload, and grow on after it
 *   restarts      a worker killed with SIGKILL: restarts_total 1, ready again
 *   state_bytes   kv holding data, a reload: handoff bytes > 0
 *   generations   on disk, active, and draining while an old worker still has
 *                 a request in flight
 *   admin_errors  404, 405 (Allow), 400, 431, HEAD without a body; the
 *                 connection closes after the response
 *   admin_in_use  admin.address taken: moltd exits 1 naming it, no worker runs
 *   admin_config  a bad admin.address fails moltd -t; a reload that changes it
 *                 is rejected; without an admin listener moltctl metrics works
 */
#include <errno.h>
#include <math.h>
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

/* Sets admin.address to 127.0.0.1:<a free port>; returns the port. */
static int set_admin(h_molt_t *h)
{
    int port = h_free_port(AF_INET);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    h_cfg_set(h, "admin", json_pack("{s:s}", "address", addr));
    return port;
}

static int admin_port(const h_molt_t *h)
{
    const char *a = json_string_value(json_object_get(json_object_get(h->cfg, "admin"), "address"));
    const char *colon = a ? strrchr(a, ':') : NULL;
    return colon ? atoi(colon + 1) : 0;
}

/* Starts moltd with an admin listener and waits until it is ready; picks
 * new ports when another process took one meanwhile. */
static void start_with_admin(h_molt_t *h)
{
    for (int attempt = 1;; attempt++) {
        set_admin(h);
        h_start(h);
        if (h_wait_ready(h, 20000))
            return;
        char *log = h_log(h);
        bool clash = h->exited && log && strstr(log, "Address already in use");
        free(log);
        H_CHECK(clash && attempt < 4, "moltd did not become ready; see its log above");
        h->port = h_free_port(AF_INET);
        H_CHECK(truncate(h->log_path, 0) == 0, "truncate(%s): %s", h->log_path, strerror(errno));
    }
}

/* GET /metrics on the admin listener with curl: the body (malloc'd); checks 200 and the type. */
static char *scrape(h_molt_t *h)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", admin_port(h));
    h_resp_t r;
    H_CHECK(h_curl(h, &r, url, NULL) == 0, "curl %s failed", url);
    H_CHECK(r.status == 200, "GET /metrics: status %d (%s)", r.status, r.body);
    const char *ct = h_resp_header(&r, "Content-Type");
    H_CHECK(ct && strncmp(ct, "text/plain; version=0.0.4", 25) == 0, "GET /metrics: Content-Type %s",
            ct ? ct : "(none)");
    char *body = strdup(r.body);
    h_resp_free(&r);
    H_CHECK(body != NULL, "out of memory");
    return body;
}

/* moltctl metrics: its output (malloc'd); checks exit 0. */
static char *moltctl_metrics(h_molt_t *h)
{
    h_cmd_t c;
    int rc = h_run(&c, 10000, H_MOLTCTL, "-s", h->sock_path, "metrics", (char *)NULL);
    H_CHECK(rc == 0, "moltctl metrics exited %d: %s", rc, c.err);
    char *out = strdup(c.out);
    h_cmd_free(&c);
    H_CHECK(out != NULL, "out of memory");
    return out;
}

/* The value of the sample `series` (name with its labels exactly as moltd
 * writes them: `moltd_reloads_total{result="committed"}`); NAN if absent. */
static double sample(const char *text, const char *series)
{
    size_t len = strlen(series);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, series, len) == 0 && line[len] == ' ')
            return strtod(line + len + 1, NULL);
    }
    return NAN;
}

static double metric(h_molt_t *h, const char *series)
{
    char *text = scrape(h);
    double v = sample(text, series);
    free(text);
    return v;
}

/* Polls the metric until cond(value, want) holds or timeout_ms passes; returns the last value. */
static double wait_metric(h_molt_t *h, const char *series, bool (*cond)(double, double), double want,
                          int timeout_ms)
{
    long long end = h_now_ms() + timeout_ms;
    double v;
    while (!cond(v = metric(h, series), want) && h_now_ms() < end)
        h_sleep_ms(100);
    return v;
}

static bool at_least(double v, double want)
{
    return v >= want;
}

static bool equal(double v, double want)
{
    return v == want;
}

/* [a-zA-Z_:][a-zA-Z0-9_:]*; returns its length (0: none). */
static size_t name_len(const char *s, bool colon)
{
    size_t n = 0;
    while ((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') || s[n] == '_' ||
           (colon && s[n] == ':') || (n > 0 && s[n] >= '0' && s[n] <= '9'))
        n++;
    return n;
}

#define MAX_FAMILIES 64

typedef struct family {
    char name[128];
    char type[16];
    bool help;
} family_t;

static family_t *family_find(family_t *f, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(f[i].name) == len && strncmp(f[i].name, name, len) == 0)
            return &f[i];
    return NULL;
}

/*
 * Checks `text` against the text exposition format 0.0.4: every line ends
 * in \n; "# HELP name text" and "# TYPE name counter|gauge|summary|histogram|untyped"
 * come before the family's samples (TYPE once); every other line is a
 * sample `name{label="value",...} value` whose family (the name, or for a
 * summary its base before _sum / _count) has HELP and TYPE. Returns how
 * many samples there are.
 */
static size_t check_format(const char *text, const char *what)
{
    family_t fam[MAX_FAMILIES];
    size_t nfam = 0, nsamples = 0;
    size_t tlen = strlen(text);
    H_CHECK(tlen > 0 && text[tlen - 1] == '\n', "%s: the text does not end with a newline", what);
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        size_t llen = (size_t)(nl - line);
        char copy[1024];
        H_CHECK(llen < sizeof(copy), "%s: line too long", what);
        memcpy(copy, line, llen);
        copy[llen] = '\0';
        line = nl + 1;
        if (strncmp(copy, "# HELP ", 7) == 0 || strncmp(copy, "# TYPE ", 7) == 0) {
            const char *name = copy + 7;
            size_t n = name_len(name, true);
            H_CHECK(n > 0 && name[n] == ' ' && name[n + 1], "%s: bad comment line '%s'", what, copy);
            family_t *f = family_find(fam, nfam, name, n);
            if (!f) {
                H_CHECK(nfam < MAX_FAMILIES && n < sizeof(f->name), "%s: too many families", what);
                f = &fam[nfam++];
                memset(f, 0, sizeof(*f));
                memcpy(f->name, name, n);
            }
            if (copy[2] == 'H') {
                H_CHECK(!f->help, "%s: a second HELP for %s", what, f->name);
                f->help = true;
            } else {
                const char *type = name + n + 1;
                H_CHECK(!f->type[0], "%s: a second TYPE for %s", what, f->name);
                H_CHECK(!strcmp(type, "counter") || !strcmp(type, "gauge") || !strcmp(type, "summary") ||
                            !strcmp(type, "histogram") || !strcmp(type, "untyped"),
                        "%s: TYPE %s for %s", what, type, f->name);
                snprintf(f->type, sizeof(f->type), "%s", type);
            }
            continue;
        }
        H_CHECK(copy[0] != '\0', "%s: an empty line", what);
        if (copy[0] == '#')
            continue; /* a plain comment */
        /* name */
        size_t n = name_len(copy, true);
        H_CHECK(n > 0, "%s: sample line without a metric name: '%s'", what, copy);
        family_t *f = family_find(fam, nfam, copy, n);
        if (!f) {
            size_t base = n;
            if (n > 4 && strncmp(copy + n - 4, "_sum", 4) == 0)
                base = n - 4;
            else if (n > 6 && strncmp(copy + n - 6, "_count", 6) == 0)
                base = n - 6;
            f = base != n ? family_find(fam, nfam, copy, base) : NULL;
            H_CHECK(f && (!strcmp(f->type, "summary") || !strcmp(f->type, "histogram")),
                    "%s: sample '%s' before (or without) its family's HELP and TYPE", what, copy);
        }
        H_CHECK(f->help && f->type[0], "%s: %s has no HELP or no TYPE before its samples", what, f->name);
        /* labels */
        const char *p = copy + n;
        if (*p == '{') {
            p++;
            while (*p != '}') {
                size_t ln = name_len(p, false);
                H_CHECK(ln > 0 && p[ln] == '=' && p[ln + 1] == '"', "%s: bad label in '%s'", what, copy);
                p += ln + 2;
                while (*p && *p != '"') {
                    if (*p == '\\') {
                        H_CHECK(p[1] == '\\' || p[1] == '"' || p[1] == 'n', "%s: bad escape in '%s'", what,
                                copy);
                        p++;
                    }
                    p++;
                }
                H_CHECK(*p == '"', "%s: unterminated label value in '%s'", what, copy);
                p++;
                if (*p == ',')
                    p++;
                else
                    H_CHECK(*p == '}', "%s: bad label list in '%s'", what, copy);
            }
            p++;
        }
        H_CHECK(*p == ' ', "%s: no space before the value in '%s'", what, copy);
        p++;
        char *end;
        double v = strtod(p, &end);
        H_CHECK(end != p && (*end == '\0' || *end == ' '), "%s: bad value in '%s'", what, copy);
        if (*end == ' ') { /* an optional timestamp */
            long long ts = strtoll(end + 1, &end, 10);
            (void)ts;
            H_CHECK(*end == '\0', "%s: bad timestamp in '%s'", what, copy);
        }
        if (!strcmp(f->type, "counter"))
            H_CHECK(v >= 0, "%s: counter below 0 in '%s'", what, copy);
        nsamples++;
    }
    return nsamples;
}

static void reload_expect(h_molt_t *h, int code, const char *prefix)
{
    h_cmd_t c;
    int rc = h_run(&c, 30000, H_MOLTCTL, "-s", h->sock_path, "reload", (char *)NULL);
    H_CHECK(rc == code && strncmp(c.out, prefix, strlen(prefix)) == 0,
            "moltctl reload exited %d '%s%s', expected %d and '%s...'", rc, c.out, c.err, code, prefix);
    h_cmd_free(&c);
}

static void worker_pids(h_molt_t *h, pid_t *pids, size_t n)
{
    json_t *st = h_status(h);
    H_CHECK(st && h_status_pids(st, pids, n) == n, "status has not %zu worker slots", n);
    json_decref(st);
}

static void get_ok(h_molt_t *h, const char *path)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", h->port, path);
    h_resp_t r;
    H_CHECK(h_curl(h, &r, url, NULL) == 0, "curl %s failed", url);
    H_CHECK(r.status == 200, "GET %s: %d", path, r.status);
    h_resp_free(&r);
}

/* One raw request on the admin listener: the response (the connection is
 * then expected to close). */
static void admin_raw(h_molt_t *h, const char *req, size_t len, h_resp_t *r, bool head)
{
    h_conn_t c;
    h_conn_open(&c, AF_INET, admin_port(h));
    c.no_body = head;
    h_conn_send(&c, req, len);
    int rc = h_conn_read(&c, r, 5000);
    H_CHECK(rc == 0, "admin listener: no complete response to '%.40s': %s", req, strerror(-rc));
    H_CHECK(h_conn_wait_eof(&c, 3000) == 1, "admin listener: the connection stays open after '%.40s'", req);
    h_conn_close(&c);
}

/* ---- tests --------------------------------------------------------------------------------- */

START_TEST(test_format)
{
    h_molt_t *h = h_new();
    start_with_admin(h);
    char *text = scrape(h);
    size_t n = check_format(text, "GET /metrics");
    H_CHECK(n >= 30, "only %zu samples", n);
    H_CHECK(sample(text, "moltd_up") == 1, "moltd_up is not 1");
    H_CHECK(strstr(text, "moltd_info{version=\"" MOLT_VERSION "\",generation=\"1\",generation_id=\""),
            "no moltd_info with version " MOLT_VERSION " and generation 1");
    H_CHECK(sample(text, "moltd_active_generation") == 1, "moltd_active_generation is not 1");
    H_CHECK(sample(text, "moltd_workers{state=\"ready\"}") == 2, "moltd_workers{state=\"ready\"} is not 2");
    H_CHECK(sample(text, "moltd_reloads_total{result=\"committed\"}") == 0, "a reload counted before any");
    free(text);

    text = moltctl_metrics(h);
    size_t m = check_format(text, "moltctl metrics");
    H_CHECK(m == n, "moltctl metrics has %zu samples, GET /metrics %zu", m, n);
    H_CHECK(sample(text, "moltd_up") == 1, "moltctl metrics: moltd_up is not 1");
    free(text);
}
END_TEST

START_TEST(test_reloads)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(100));
    start_with_admin(h);
    reload_expect(h, 0, "committed generation 2");
    /* a broken plugin: rolled back in spawn */
    json_t *pl = json_array_get(json_object_get(h->cfg, "plugins"), 0);
    json_object_set_new(pl, "file", json_string("tp_fail_init.so"));
    json_object_set_new(pl, "config", json_object());
    h_write_config(h);
    reload_expect(h, 1, "rolled back in phase spawn");
    /* a config that does not validate: rejected */
    h_cfg_set(h, "http.bogus", json_integer(1));
    h_write_config(h);
    reload_expect(h, 1, "rejected");

    char *text = scrape(h);
    check_format(text, "after three reloads");
    H_CHECK(sample(text, "moltd_reloads_total{result=\"committed\"}") == 1, "committed is not 1");
    H_CHECK(sample(text, "moltd_reloads_total{result=\"rolled_back\"}") == 1, "rolled_back is not 1");
    H_CHECK(sample(text, "moltd_reloads_total{result=\"rejected\"}") == 1, "rejected is not 1");
    H_CHECK(sample(text, "moltd_reload_duration_seconds_count") == 3, "reload_duration count is not 3");
    H_CHECK(sample(text, "moltd_reload_duration_seconds_sum") >= 0.1,
            "reload_duration sum under the 100 ms window");
    H_CHECK(sample(text, "moltd_reload_phase_duration_seconds_count{phase=\"prepare\"}") == 3,
            "prepare count");
    H_CHECK(sample(text, "moltd_reload_phase_duration_seconds_count{phase=\"spawn\"}") == 2, "spawn count");
    H_CHECK(sample(text, "moltd_reload_phase_duration_seconds_count{phase=\"verify\"}") == 1, "verify count");
    H_CHECK(sample(text, "moltd_reload_phase_duration_seconds_count{phase=\"commit\"}") == 1, "commit count");
    H_CHECK(sample(text, "moltd_reload_phase_duration_seconds_count{phase=\"rollback\"}") == 1,
            "rollback count");
    H_CHECK(sample(text, "moltd_reload_phase_duration_seconds_sum{phase=\"verify\"}") >= 0.1,
            "verify took less than its 100 ms window");
    /* the last one was the rejected one: prepare only */
    H_CHECK(sample(text, "moltd_last_reload_success") == 0, "moltd_last_reload_success is not 0");
    H_CHECK(sample(text, "moltd_last_reload_phase_seconds{phase=\"verify\"}") == 0, "last verify is not 0");
    H_CHECK(sample(text, "moltd_last_reload_timestamp_seconds") > 1e9, "no last reload timestamp");
    H_CHECK(sample(text, "moltd_active_generation") == 2, "active generation is not 2");
    free(text);

    /* moltctl shows the same counts */
    text = moltctl_metrics(h);
    H_CHECK(sample(text, "moltd_reloads_total{result=\"rolled_back\"}") == 1, "moltctl metrics: rolled_back");
    free(text);
}
END_TEST

START_TEST(test_requests)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(100));
    start_with_admin(h);
    const char *ok = "moltd_requests_total{class=\"2xx\"}";
    double v0 = metric(h, ok);
    H_CHECK(v0 == v0, "no %s", ok);
    for (int i = 0; i < 10; i++)
        get_ok(h, "/");
    double v1 = wait_metric(h, ok, at_least, v0 + 10, 5000);
    H_CHECK(v1 >= v0 + 10, "%s is %.0f after 10 requests, was %.0f", ok, v1, v0);

    /* requests right before a reload: counted through the retiring workers' last report */
    pid_t old[2];
    worker_pids(h, old, 2);
    for (int i = 0; i < 7; i++)
        get_ok(h, "/");
    reload_expect(h, 0, "committed generation 2");
    for (int i = 0; i < 2; i++)
        H_CHECK(h_wait_pid_gone(old[i], 10000, NULL), "old worker %d still runs", (int)old[i]);
    double v2 = metric(h, ok);
    H_CHECK(v2 >= v1 + 7, "%s is %.0f once the old workers are gone, was %.0f before 7 more requests", ok, v2,
            v1);

    /* and it goes on from there with the new workers */
    for (int i = 0; i < 5; i++)
        get_ok(h, "/");
    double v3 = wait_metric(h, ok, at_least, v2 + 5, 5000);
    H_CHECK(v3 >= v2 + 5, "%s is %.0f after 5 requests to the new generation, was %.0f", ok, v3, v2);

    /* never backwards, scrape after scrape */
    double prev = v3;
    for (int i = 0; i < 5; i++) {
        double v = metric(h, ok);
        H_CHECK(v >= prev, "%s went back from %.0f to %.0f", ok, prev, v);
        prev = v;
        h_sleep_ms(100);
    }
    char *text = moltctl_metrics(h);
    H_CHECK(sample(text, ok) >= v3, "moltctl metrics: %s below the last scrape", ok);
    free(text);
}
END_TEST

START_TEST(test_restarts)
{
    h_molt_t *h = h_new();
    start_with_admin(h);
    H_CHECK(metric(h, "moltd_worker_restarts_total") == 0, "restarts before any death");
    pid_t pids[2];
    worker_pids(h, pids, 2);
    H_CHECK(kill(pids[0], SIGKILL) == 0, "kill(%d): %s", (int)pids[0], strerror(errno));
    double v = wait_metric(h, "moltd_worker_restarts_total", equal, 1, 5000);
    H_CHECK(v == 1, "moltd_worker_restarts_total is %g after one SIGKILL", v);
    H_CHECK(h_wait_ready(h, 10000), "the slot did not become ready again");
    v = wait_metric(h, "moltd_workers{state=\"ready\"}", equal, 2, 5000);
    H_CHECK(v == 2, "moltd_workers{state=\"ready\"} is %g after the respawn", v);
    H_CHECK(metric(h, "moltd_workers{state=\"backoff\"}") == 0, "a slot still in backoff");
}
END_TEST

START_TEST(test_state_bytes)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(0));
    h_add_plugin(h, "kv", "kv.so", NULL);
    json_array_insert_new(json_object_get(h->cfg, "routes"), 0,
                          json_pack("{s:s,s:s}", "prefix", "/kv/", "plugin", "kv"));
    start_with_admin(h);
    H_CHECK(metric(h, "moltd_state_bytes_total{kind=\"handoff\"}") == 0, "state bytes before any reload");
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/kv/greeting", h->port);
    h_resp_t r;
    H_CHECK(h_curl(h, &r, "-X", "PUT", "--data-binary", "a value worth handing over", url, NULL) == 0,
            "curl PUT failed");
    H_CHECK(r.status == 201, "PUT /kv/greeting: %d", r.status);
    h_resp_free(&r);
    reload_expect(h, 0, "committed generation 2");
    double v = metric(h, "moltd_state_bytes_total{kind=\"handoff\"}");
    H_CHECK(v > 26, "moltd_state_bytes_total{kind=\"handoff\"} is %g after a reload with a kv entry", v);
    /* a second reload adds to it */
    reload_expect(h, 0, "committed generation 3");
    double v2 = metric(h, "moltd_state_bytes_total{kind=\"handoff\"}");
    H_CHECK(v2 > v, "state bytes %g after a second reload, %g after the first", v2, v);
}
END_TEST

START_TEST(test_generations)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "reload.health.stable_ms", json_integer(100));
    h_cfg_set(h, "http.header_timeout_ms", json_integer(20000));
    h_cfg_set(h, "reload.drain_timeout_ms", json_integer(20000));
    h_cfg_set(h, "reload.keep_generations", json_integer(2));
    start_with_admin(h);
    char *text = scrape(h);
    H_CHECK(sample(text, "moltd_generations_on_disk") == 1, "on disk is not 1 at start");
    H_CHECK(sample(text, "moltd_generations{state=\"active\"}") == 1, "active is not 1");
    H_CHECK(sample(text, "moltd_generations{state=\"draining\"}") == 0, "draining is not 0");
    free(text);

    /* a request in flight in the old generation keeps it draining */
    h_conn_t c;
    h_conn_open(&c, AF_INET, h->port);
    h_conn_send_str(&c, "GET / HTTP/1.1\r\nHost: t\r\n");
    h_sleep_ms(200);
    reload_expect(h, 0, "committed generation 2");
    text = scrape(h);
    H_CHECK(sample(text, "moltd_generations_on_disk") == 2, "on disk is not 2 after a reload");
    H_CHECK(sample(text, "moltd_generations{state=\"active\"}") == 1, "active is not 1 after a reload");
    H_CHECK(sample(text, "moltd_generations{state=\"draining\"}") == 1,
            "the old generation is not draining with a request in flight");
    H_CHECK(sample(text, "moltd_workers{state=\"draining\"}") >= 1, "no draining worker");
    free(text);
    h_conn_send_str(&c, "Connection: close\r\n\r\n");
    h_resp_t r;
    H_CHECK(h_conn_read(&c, &r, 5000) == 0 && r.status == 200, "the request in flight was not answered");
    h_resp_free(&r);
    h_conn_close(&c);
    double v = wait_metric(h, "moltd_generations{state=\"draining\"}", equal, 0, 10000);
    H_CHECK(v == 0, "the old generation still drains (%g) after its last request", v);
    H_CHECK(metric(h, "moltd_workers{state=\"draining\"}") == 0, "a worker still draining");

    /* keep_generations 2: a third generation leaves two directories */
    reload_expect(h, 0, "committed generation 3");
    v = wait_metric(h, "moltd_generations_on_disk", equal, 2, 10000);
    H_CHECK(v == 2, "on disk is %g with keep_generations 2", v);
}
END_TEST

START_TEST(test_admin_errors)
{
    h_molt_t *h = h_new();
    start_with_admin(h);
    h_resp_t r;
    static const char nf[] = "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n";
    admin_raw(h, nf, sizeof(nf) - 1, &r, false);
    H_CHECK(r.status == 404, "GET /nope: %d", r.status);
    h_resp_free(&r);

    static const char post[] = "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc";
    admin_raw(h, post, sizeof(post) - 1, &r, false);
    H_CHECK(r.status == 405, "POST /metrics: %d", r.status);
    const char *allow = h_resp_header(&r, "Allow");
    H_CHECK(allow && strstr(allow, "GET"), "405 without Allow: GET");
    h_resp_free(&r);

    static const char bad[] = "GET /metrics HTTP/1.1\r\nHost t\r\n\r\n";
    admin_raw(h, bad, sizeof(bad) - 1, &r, false);
    H_CHECK(r.status == 400, "a malformed header line: %d", r.status);
    h_resp_free(&r);

    char big[12000];
    int n = snprintf(big, sizeof(big), "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(big + n, 'a', 10000);
    memcpy(big + n + 10000, "\r\n\r\n", 4);
    admin_raw(h, big, (size_t)n + 10004, &r, false);
    H_CHECK(r.status == 431, "a 10 KB header: %d", r.status);
    h_resp_free(&r);

    static const char head[] = "HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
    admin_raw(h, head, sizeof(head) - 1, &r, true);
    H_CHECK(r.status == 200 && r.body_len == 0, "HEAD /metrics: %d with %zu body bytes", r.status,
            r.body_len);
    const char *cl = h_resp_header(&r, "Content-Length");
    H_CHECK(cl && atoi(cl) > 1000, "HEAD /metrics: Content-Length %s", cl ? cl : "(none)");
    h_resp_free(&r);

    /* a query string is not part of the path; HTTP/1.0 is answered too */
    static const char q[] = "GET /metrics?x=1 HTTP/1.0\r\n\r\n";
    admin_raw(h, q, sizeof(q) - 1, &r, false);
    H_CHECK(r.status == 200 && strstr(r.body, "moltd_up 1\n"), "GET /metrics?x=1: %d", r.status);
    const char *conn = h_resp_header(&r, "Connection");
    H_CHECK(conn && strcmp(conn, "close") == 0, "no Connection: close");
    h_resp_free(&r);

    /* after all that, moltd still serves both */
    free(scrape(h));
    get_ok(h, "/");
}
END_TEST

START_TEST(test_admin_in_use)
{
    h_molt_t *h = h_new();
    /* hold the admin port with a listening socket of our own */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    H_CHECK(fd >= 0, "socket(): %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    H_CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 1) == 0 &&
                getsockname(fd, (struct sockaddr *)&sa, &len) == 0,
            "binding a port: %s", strerror(errno));
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(sa.sin_port));
    h_cfg_set(h, "admin", json_pack("{s:s}", "address", addr));
    h_start(h);
    bool exited = h_wait_exit(h, 10000);
    close(fd);
    H_CHECK(exited, "moltd did not exit with its admin address taken");
    H_CHECK(h_exit_code(h) == 1, "moltd exited with %d, expected 1", h_exit_code(h));
    const char *const needles[] = {"cannot start", "admin.address", addr, "Address already in use", NULL};
    char *line = h_log_line(h, needles);
    H_CHECK(line != NULL, "no 'cannot start: ... admin.address %s ... Address already in use' line", addr);
    free(line);
    const char *const started[] = {"worker 0 started", NULL};
    line = h_log_line(h, started);
    H_CHECK(line == NULL, "a worker was started: %s", line);
}
END_TEST

START_TEST(test_admin_config)
{
    h_molt_t *h = h_new();
    /* not an address: moltd -t names the key */
    h_cfg_set(h, "admin", json_pack("{s:s}", "address", "localhost:9100"));
    h_write_config(h);
    h_cmd_t c;
    int rc = h_run(&c, 10000, H_MOLTD, "-c", h->config_path, "-t", (char *)NULL);
    H_CHECK(rc == 1 && strstr(c.err, "admin.address") && strstr(c.err, "localhost:9100"),
            "moltd -t with admin.address localhost:9100 exited %d: %s", rc, c.err);
    h_cmd_free(&c);
    h_cfg_set(h, "admin", json_pack("{s:s,s:i}", "address", "127.0.0.1:9100", "port", 1));
    h_write_config(h);
    rc = h_run(&c, 10000, H_MOLTD, "-c", h->config_path, "-t", (char *)NULL);
    H_CHECK(rc == 1 && strstr(c.err, "admin.port") && strstr(c.err, "unknown key"),
            "moltd -t with admin.port exited %d: %s", rc, c.err);
    h_cmd_free(&c);

    /* no admin listener: moltctl metrics still works */
    json_object_del(h->cfg, "admin");
    h_cfg_set(h, "reload.health.stable_ms", json_integer(100));
    h_start_ready(h);
    char *text = moltctl_metrics(h);
    check_format(text, "moltctl metrics without an admin listener");
    H_CHECK(sample(text, "moltd_up") == 1, "moltd_up is not 1");
    free(text);

    /* a reload that adds one is rejected: the address is bound once */
    set_admin(h);
    h_write_config(h);
    rc = h_run(&c, 30000, H_MOLTCTL, "-s", h->sock_path, "reload", (char *)NULL);
    H_CHECK(rc == 1 && strstr(c.out, "rejected") &&
                strstr(c.out, "admin.address: changing it needs a restart"),
            "a reload adding admin exited %d: %s%s", rc, c.out, c.err);
    h_cmd_free(&c);
    text = moltctl_metrics(h);
    H_CHECK(sample(text, "moltd_reloads_total{result=\"rejected\"}") == 1,
            "the rejected reload is not counted");
    free(text);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = h_tcase("metrics", 60);
    tcase_add_test(tc, test_format);
    tcase_add_test(tc, test_reloads);
    tcase_add_test(tc, test_requests);
    tcase_add_test(tc, test_restarts);
    tcase_add_test(tc, test_state_bytes);
    tcase_add_test(tc, test_generations);
    tcase_add_test(tc, test_admin_errors);
    tcase_add_test(tc, test_admin_in_use);
    tcase_add_test(tc, test_admin_config);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(metrics_suite());
    srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose lists every test */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
