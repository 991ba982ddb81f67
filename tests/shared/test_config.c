/*
 * shared/config.c: loading, defaults, path resolution and every error message.
 *
 * JSON in this file is written with single quotes and turned into double
 * quotes before parsing (sq()), so the cases stay readable; no case needs an
 * apostrophe. Expected error fragments go through the same conversion, so they
 * stop short of the messages' own '/' and '[' quotes.
 *
 * Plugin files are empty regular files in a mkdtemp() directory made once per
 * test case group (unchecked fixture: it runs in the parent, so a failing
 * test cannot leave it behind).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "shared/config.h"
#include "shared/log.h"

#define SHA_LOWER "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SHA_MIXED "0123456789ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef"

/* --- helpers ---------------------------------------------------------------- */

static char fx_dir[PATH_MAX]; /* realpath of the fixture directory */

static char *sq(const char *s)
{
    char *d = strdup(s);

    ck_assert_ptr_nonnull(d);
    for (char *c = d; *c; c++)
        if (*c == '\'')
            *c = '"';
    return d;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    ck_assert_msg(f != NULL, "fopen(%s): %s", path, strerror(errno));
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
}

static char *fx_path(const char *rel)
{
    char *p = NULL;

    ck_assert_int_ge(asprintf(&p, "%s/%s", fx_dir, rel), 0);
    return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory under TMPDIR, canonicalised so that paths compare equal. */
static void make_tmpdir(char *out)
{
    char tmpl[PATH_MAX];
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

    snprintf(tmpl, sizeof(tmpl), "%s/molt-config-XXXXXX", base);
    ck_assert_msg(mkdtemp(tmpl) != NULL, "mkdtemp: %s", strerror(errno));
    ck_assert_ptr_nonnull(realpath(tmpl, out));
}

/*
 * fx_dir/hello.so, world.so     regular files
 * fx_dir/dir.so/                a directory
 * fx_dir/sub/plugins/hello.so   a second hello.so, to test search order
 * fx_dir/sub/plugins/extra.so
 */
static void fx_setup(void)
{
    char *p;

    make_tmpdir(fx_dir);
    const char *files[] = {"hello.so", "world.so", "sub/plugins/hello.so", "sub/plugins/extra.so"};
    const char *dirs[] = {"dir.so", "sub", "sub/plugins"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        p = fx_path(dirs[i]);
        ck_assert_int_eq(mkdir(p, 0755), 0);
        free(p);
    }
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        p = fx_path(files[i]);
        write_file(p, "");
        free(p);
    }
}

static void fx_teardown(void)
{
    rm_rf(fx_dir);
}

/* Loads single-quoted JSON as if it were the file at fx_dir/<name>; must succeed. */
static molt_config_t *load_ok_as(const char *json_sq, const char *name)
{
    char err[1024] = "";
    char *json = sq(json_sq), *path = fx_path(name);
    molt_config_t *cfg = NULL;
    int rc = molt_config_load_string(json, strlen(json), path, &cfg, err, sizeof(err));

    ck_assert_msg(rc == 0, "load failed: %s", err);
    ck_assert_ptr_nonnull(cfg);
    free(json);
    free(path);
    return cfg;
}

static molt_config_t *load_ok(const char *json_sq)
{
    return load_ok_as(json_sq, "molt.json");
}

/*
 * Loads single-quoted JSON as fx_dir/bad.json; must fail, leave *out alone,
 * and produce one line "<path>: ..." containing every expected fragment.
 */
static void load_bad(const char *json_sq, const char *expect_sq, const char *expect2_sq)
{
    char err[1024] = "";
    char *json = sq(json_sq), *path = fx_path("bad.json");
    molt_config_t sentinel, *cfg = &sentinel;
    int rc = molt_config_load_string(json, strlen(json), path, &cfg, err, sizeof(err));
    char *prefix = NULL;

    ck_assert_msg(rc == -1, "expected failure for %s", json);
    ck_assert_msg(cfg == &sentinel, "*out was written on failure");
    ck_assert_int_ge(asprintf(&prefix, "%s: ", path), 0);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "error does not start with the file: %s", err);
    ck_assert_msg(strchr(err, '\n') == NULL, "error is not one line: %s", err);
    for (int i = 0; i < 2; i++) {
        const char *e = i == 0 ? expect_sq : expect2_sq;
        char *want;

        if (!e)
            continue;
        want = sq(e);
        ck_assert_msg(strstr(err, want) != NULL, "error \"%s\" lacks \"%s\"", err, want);
        free(want);
    }
    free(prefix);
    free(json);
    free(path);
}

static void assert_inet(const molt_listen_cfg_t *l, const char *ip, unsigned port)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&l->addr;
    struct in_addr want;

    ck_assert_int_eq(sin->sin_family, AF_INET);
    ck_assert_uint_eq(l->addrlen, sizeof(struct sockaddr_in));
    ck_assert_uint_eq(ntohs(sin->sin_port), port);
    ck_assert_int_eq(inet_pton(AF_INET, ip, &want), 1);
    ck_assert_uint_eq(sin->sin_addr.s_addr, want.s_addr);
}

/* --- valid configs ------------------------------------------------------------ */

START_TEST(test_defaults)
{
    molt_config_t *cfg = load_ok("{'listen': [{'address': '127.0.0.1:8080'}]}");
    char *path = fx_path("molt.json");

    ck_assert_str_eq(cfg->path, path);
    ck_assert_str_eq(cfg->dir, fx_dir);
    ck_assert_uint_eq(cfg->workers, 1);
    ck_assert_uint_eq(cfg->nlisten, 1);
    ck_assert_str_eq(cfg->listen[0].name, "listen0");
    ck_assert_str_eq(cfg->listen[0].address, "127.0.0.1:8080");
    assert_inet(&cfg->listen[0], "127.0.0.1", 8080);
    ck_assert_int_eq(cfg->listen[0].backlog, 4096);
    ck_assert_str_eq(cfg->runtime_dir, "/run/molt");
    ck_assert_str_eq(cfg->control_socket, "/run/molt/control.sock");
    ck_assert_uint_eq(cfg->control_mode, 0660);
    ck_assert_ptr_null(cfg->control_group);
    ck_assert_ptr_null(cfg->log_file);
    ck_assert_ptr_null(cfg->user);
    ck_assert_ptr_null(cfg->group);
    ck_assert_uint_eq(cfg->nplugin_path, 1);
    ck_assert_str_eq(cfg->plugin_path[0], fx_dir);
    ck_assert_uint_eq(cfg->nplugins, 0);
    ck_assert_uint_eq(cfg->nroutes, 0);
    ck_assert_uint_eq(cfg->http.max_header_bytes, 16384);
    ck_assert_uint_eq(cfg->http.max_body_bytes, 1048576);
    ck_assert_uint_eq(cfg->http.header_timeout_ms, 10000);
    ck_assert_uint_eq(cfg->http.keepalive_timeout_ms, 60000);
    ck_assert_uint_eq(cfg->reload.load_timeout_ms, 5000);
    ck_assert_uint_eq(cfg->reload.handoff_timeout_ms, 5000);
    ck_assert_str_eq(cfg->reload.health.path, "/healthz");
    ck_assert_int_eq(cfg->reload.health.expect_status, 200);
    ck_assert_uint_eq(cfg->reload.health.interval_ms, 100);
    ck_assert_uint_eq(cfg->reload.health.stable_ms, 500);
    ck_assert_double_eq(cfg->reload.health.max_error_rate, 0.5);
    ck_assert_uint_eq(cfg->reload.idle_grace_ms, 100);
    ck_assert_uint_eq(cfg->reload.drain_timeout_ms, 30000);
    ck_assert_uint_eq(cfg->reload.keep_generations, 3);
    ck_assert_int_eq(cfg->reload.on_restore_error, MOLT_RESTORE_FAIL);
    ck_assert_int_eq(cfg->log_level, MOLT_LOG_INFO);
    ck_assert_int_eq(cfg->log_format, MOLT_LOG_FORMAT_TEXT);
    molt_config_free(cfg);
    free(path);
}
END_TEST

static const char full_json[] =
    "{'workers': 7,"
    " 'listen': [{'name': 'pub', 'address': '0.0.0.0:80', 'backlog': 128},"
    "            {'address': '[::1]:8443'},"
    "            {'name': 'any', 'address': '*:8081', 'backlog': 65535}],"
    " 'control': {'socket': 'ctl/c.sock', 'mode': '0600', 'group': 'molt-ops'},"
    " 'runtime_dir': '/var/tmp/molt-test',"
    " 'user': 'www-data', 'group': 'www',"
    " 'plugin_path': ['.'],"
    " 'plugins': [{'name': 'auth', 'file': 'hello.so', 'sha256': '" SHA_MIXED "',"
    "              'priority': -10, 'config': {'token': 's3cret', 'n': [1, 2], 'o': {}}},"
    "             {'name': 'kv', 'file': 'world.so', 'config': {}, 'priority': 1000},"
    "             {'name': 'plain', 'file': 'hello.so'}],"
    " 'routes': [{'prefix': '/kv/', 'plugin': 'kv'}, {'prefix': '/', 'plugin': 'plain'},"
    "            {'prefix': '/auth', 'plugin': 'auth'}],"
    " 'http': {'max_header_bytes': 1024, 'max_body_bytes': 0,"
    "          'header_timeout_ms': 1, 'keepalive_timeout_ms': 0},"
    " 'reload': {'load_timeout_ms': 1234, 'handoff_timeout_ms': 2345,"
    "            'health': {'path': '/ready', 'expect_status': 204, 'interval_ms': 50,"
    "                       'stable_ms': 0, 'max_error_rate': 0.125},"
    "            'idle_grace_ms': 0, 'drain_timeout_ms': 3600000,"
    "            'keep_generations': 100, 'on_restore_error': 'fresh'},"
    " 'log': {'level': 'warn', 'format': 'json', 'file': 'logs/molt.log'}}";

START_TEST(test_full)
{
    molt_config_t *cfg = load_ok(full_json);
    char *hello = fx_path("hello.so"), *world = fx_path("world.so"), *sock = fx_path("ctl/c.sock");
    const struct sockaddr_in6 *sin6;

    ck_assert_uint_eq(cfg->workers, 7);
    ck_assert_uint_eq(cfg->nlisten, 3);
    ck_assert_str_eq(cfg->listen[0].name, "pub");
    ck_assert_str_eq(cfg->listen[0].address, "0.0.0.0:80");
    assert_inet(&cfg->listen[0], "0.0.0.0", 80);
    ck_assert_int_eq(cfg->listen[0].backlog, 128);
    ck_assert_str_eq(cfg->listen[1].name, "listen1");
    ck_assert_str_eq(cfg->listen[1].address, "[::1]:8443");
    sin6 = (const struct sockaddr_in6 *)&cfg->listen[1].addr;
    ck_assert_int_eq(sin6->sin6_family, AF_INET6);
    ck_assert_uint_eq(cfg->listen[1].addrlen, sizeof(struct sockaddr_in6));
    ck_assert_uint_eq(ntohs(sin6->sin6_port), 8443);
    ck_assert_int_eq(memcmp(&sin6->sin6_addr, &in6addr_loopback, sizeof(in6addr_loopback)), 0);
    ck_assert_int_eq(cfg->listen[1].backlog, 4096);
    ck_assert_str_eq(cfg->listen[2].address, "*:8081");
    assert_inet(&cfg->listen[2], "0.0.0.0", 8081);
    ck_assert_int_eq(cfg->listen[2].backlog, 65535);

    ck_assert_str_eq(cfg->control_socket, sock);
    ck_assert_uint_eq(cfg->control_mode, 0600);
    ck_assert_str_eq(cfg->control_group, "molt-ops");
    ck_assert_str_eq(cfg->runtime_dir, "/var/tmp/molt-test");
    ck_assert_str_eq(cfg->user, "www-data");
    ck_assert_str_eq(cfg->group, "www");
    ck_assert_uint_eq(cfg->nplugin_path, 1);
    ck_assert_str_eq(cfg->plugin_path[0], fx_dir);

    ck_assert_uint_eq(cfg->nplugins, 3);
    ck_assert_str_eq(cfg->plugins[0].name, "auth");
    ck_assert_str_eq(cfg->plugins[0].file, "hello.so");
    ck_assert_str_eq(cfg->plugins[0].path, hello);
    ck_assert_str_eq(cfg->plugins[0].sha256, SHA_LOWER);
    ck_assert(cfg->plugins[0].has_priority);
    ck_assert_int_eq(cfg->plugins[0].priority, -10);
    ck_assert_str_eq(cfg->plugins[0].config_json, "{\"token\":\"s3cret\",\"n\":[1,2],\"o\":{}}");
    ck_assert_str_eq(cfg->plugins[1].name, "kv");
    ck_assert_str_eq(cfg->plugins[1].path, world);
    ck_assert_ptr_null(cfg->plugins[1].sha256);
    ck_assert(cfg->plugins[1].has_priority);
    ck_assert_int_eq(cfg->plugins[1].priority, 1000);
    ck_assert_str_eq(cfg->plugins[1].config_json, "{}");
    ck_assert_str_eq(cfg->plugins[2].name, "plain");
    ck_assert_str_eq(cfg->plugins[2].path, hello);
    ck_assert(!cfg->plugins[2].has_priority);
    ck_assert_str_eq(cfg->plugins[2].config_json, "{}");

    ck_assert_uint_eq(cfg->nroutes, 3);
    ck_assert_str_eq(cfg->routes[0].prefix, "/kv/");
    ck_assert_str_eq(cfg->routes[0].plugin, "kv");
    ck_assert_uint_eq(cfg->routes[0].plugin_index, 1);
    ck_assert_str_eq(cfg->routes[1].prefix, "/");
    ck_assert_uint_eq(cfg->routes[1].plugin_index, 2);
    ck_assert_str_eq(cfg->routes[2].prefix, "/auth");
    ck_assert_uint_eq(cfg->routes[2].plugin_index, 0);

    ck_assert_uint_eq(cfg->http.max_header_bytes, 1024);
    ck_assert_uint_eq(cfg->http.max_body_bytes, 0);
    ck_assert_uint_eq(cfg->http.header_timeout_ms, 1);
    ck_assert_uint_eq(cfg->http.keepalive_timeout_ms, 0);
    ck_assert_uint_eq(cfg->reload.load_timeout_ms, 1234);
    ck_assert_uint_eq(cfg->reload.handoff_timeout_ms, 2345);
    ck_assert_str_eq(cfg->reload.health.path, "/ready");
    ck_assert_int_eq(cfg->reload.health.expect_status, 204);
    ck_assert_uint_eq(cfg->reload.health.interval_ms, 50);
    ck_assert_uint_eq(cfg->reload.health.stable_ms, 0);
    ck_assert_double_eq(cfg->reload.health.max_error_rate, 0.125);
    ck_assert_uint_eq(cfg->reload.idle_grace_ms, 0);
    ck_assert_uint_eq(cfg->reload.drain_timeout_ms, 3600000);
    ck_assert_uint_eq(cfg->reload.keep_generations, 100);
    ck_assert_int_eq(cfg->reload.on_restore_error, MOLT_RESTORE_FRESH);
    ck_assert_int_eq(cfg->log_level, MOLT_LOG_WARN);
    ck_assert_int_eq(cfg->log_format, MOLT_LOG_FORMAT_JSON);
    char *logf = fx_path("logs/molt.log"); /* relative to the config's directory */
    ck_assert_str_eq(cfg->log_file, logf);
    free(logf);
    molt_config_free(cfg);
    free(hello);
    free(world);
    free(sock);
}
END_TEST

/* The other end of each range, and the forms only some keys accept. */
START_TEST(test_boundaries)
{
    molt_config_t *cfg = load_ok("{'workers': 64, 'listen': [{'address': '[::]:65535', 'backlog': 1}],"
                                 " 'user': null, 'group': null, 'plugins': [], 'routes': [],"
                                 " 'control': {'mode': '600'},"
                                 " 'http': {'max_header_bytes': 1048576, 'max_body_bytes': 1073741824,"
                                 "          'header_timeout_ms': 3600000, 'keepalive_timeout_ms': 3600000},"
                                 " 'reload': {'keep_generations': 1, 'health': {'max_error_rate': 1,"
                                 "            'expect_status': 100, 'interval_ms': 1}},"
                                 " 'log': {'level': 'debug'}}");

    ck_assert_uint_eq(cfg->workers, 64);
    ck_assert_int_eq(cfg->listen[0].backlog, 1);
    ck_assert_uint_eq(cfg->control_mode, 0600);
    ck_assert_ptr_null(cfg->user);
    ck_assert_ptr_null(cfg->group);
    ck_assert_uint_eq(cfg->nplugins, 0);
    ck_assert_uint_eq(cfg->nroutes, 0);
    ck_assert_uint_eq(cfg->http.max_header_bytes, 1048576);
    ck_assert_uint_eq(cfg->http.max_body_bytes, 1073741824);
    ck_assert_uint_eq(cfg->reload.keep_generations, 1);
    ck_assert_double_eq(cfg->reload.health.max_error_rate, 1.0);
    ck_assert_int_eq(cfg->reload.health.expect_status, 100);
    ck_assert_int_eq(cfg->log_level, MOLT_LOG_DEBUG);
    molt_config_free(cfg);

    cfg = load_ok("{'listen': [{'address': '10.0.0.1:1'}], 'reload': {'health': {'max_error_rate': 0}},"
                  " 'log': {'level': 'crit', 'format': 'text'}}");
    ck_assert_double_eq(cfg->reload.health.max_error_rate, 0.0);
    ck_assert_int_eq(cfg->log_level, MOLT_LOG_CRIT);
    molt_config_free(cfg);
}
END_TEST

START_TEST(test_workers_auto)
{
    molt_config_t *cfg = load_ok("{'workers': 'auto', 'listen': [{'address': '127.0.0.1:8080'}]}");
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        n = 1;
    if (n > MOLT_CONFIG_MAX_WORKERS)
        n = MOLT_CONFIG_MAX_WORKERS;
    ck_assert_uint_eq(cfg->workers, (unsigned)n);
    ck_assert_uint_ge(cfg->workers, 1);
    ck_assert_uint_le(cfg->workers, MOLT_CONFIG_MAX_WORKERS);
    molt_config_free(cfg);
}
END_TEST

/* The config lives in fx_dir/sub: ".." and "." and "//" resolve against it. */
START_TEST(test_relative_paths)
{
    molt_config_t *cfg = load_ok_as("{'listen': [{'address': '127.0.0.1:8080'}],"
                                    " 'runtime_dir': '../run/',"
                                    " 'plugin_path': ['..', './/plugins/.', '.'],"
                                    " 'plugins': [{'name': 'a', 'file': 'hello.so'},"
                                    "             {'name': 'b', 'file': 'extra.so'},"
                                    "             {'name': 'c', 'file': './plugins/../plugins/extra.so'}]}",
                                    "sub/molt.json");
    char *sub = fx_path("sub"), *run = fx_path("run"), *sock = fx_path("run/control.sock");
    char *plugins = fx_path("sub/plugins"), *hello = fx_path("hello.so");
    char *extra = fx_path("sub/plugins/extra.so"), *c = fx_path("sub/plugins/../plugins/extra.so");

    ck_assert_str_eq(cfg->dir, sub);
    ck_assert_str_eq(cfg->runtime_dir, run);
    ck_assert_str_eq(cfg->control_socket, sock);
    ck_assert_uint_eq(cfg->nplugin_path, 3);
    ck_assert_str_eq(cfg->plugin_path[0], fx_dir);
    ck_assert_str_eq(cfg->plugin_path[1], plugins);
    ck_assert_str_eq(cfg->plugin_path[2], sub);
    /* first directory that has it wins; the second is searched when the first lacks it */
    ck_assert_str_eq(cfg->plugins[0].path, hello);
    ck_assert_str_eq(cfg->plugins[1].path, extra);
    /* a ".." after a real component is left for the kernel (it may follow a
     * symlink): fx_dir/plugins and sub/plugins/plugins do not exist, so only
     * the third entry holds it, and the path keeps the ".." as written */
    ck_assert_str_eq(cfg->plugins[2].file, "./plugins/../plugins/extra.so");
    ck_assert_str_eq(cfg->plugins[2].path, c);
    molt_config_free(cfg);

    /* reversed search order, an explicit control socket, absolute paths as written */
    cfg = load_ok_as("{'listen': [{'address': '127.0.0.1:8080'}],"
                     " 'runtime_dir': '/var//run/./molt/',"
                     " 'control': {'socket': '../ctl.sock'},"
                     " 'plugin_path': ['plugins', '../'],"
                     " 'plugins': [{'name': 'a', 'file': 'hello.so'}, {'name': 'b', 'file': 'world.so'}]}",
                     "sub/molt.json");
    free(sock);
    sock = fx_path("ctl.sock");
    free(hello);
    hello = fx_path("sub/plugins/hello.so");
    ck_assert_str_eq(cfg->runtime_dir, "/var/run/molt");
    ck_assert_str_eq(cfg->control_socket, sock);
    ck_assert_str_eq(cfg->plugin_path[0], plugins);
    ck_assert_str_eq(cfg->plugin_path[1], fx_dir);
    ck_assert_str_eq(cfg->plugins[0].path, hello);
    molt_config_free(cfg);

    free(sub);
    free(run);
    free(sock);
    free(plugins);
    free(hello);
    free(extra);
    free(c);
}
END_TEST

START_TEST(test_absolute_plugin_file)
{
    char *world = fx_path("world.so"), *json = NULL;
    molt_config_t *cfg;

    /* plugin_path is empty: only absolute files can be found */
    ck_assert_int_ge(asprintf(&json,
                              "{'listen': [{'address': '127.0.0.1:8080'}], 'plugin_path': [],"
                              " 'plugins': [{'name': 'w', 'file': '%s'}],"
                              " 'routes': [{'prefix': '/', 'plugin': 'w'}]}",
                              world),
                     0);
    cfg = load_ok(json);
    ck_assert_uint_eq(cfg->nplugin_path, 0);
    ck_assert_str_eq(cfg->plugins[0].file, world);
    ck_assert_str_eq(cfg->plugins[0].path, world);
    molt_config_free(cfg);
    free(json);

    load_bad("{'listen': [{'address': '127.0.0.1:8080'}], 'plugin_path': [],"
             " 'plugins': [{'name': 'w', 'file': 'world.so'}]}",
             "plugins[0].file: 'world.so': no such file in plugin_path", NULL);
    load_bad("{'listen': [{'address': '127.0.0.1:8080'}],"
             " 'plugins': [{'name': 'w', 'file': '/nonexistent/molt/x.so'}]}",
             "plugins[0].file: '/nonexistent/molt/x.so': no such file", NULL);
    free(world);
}
END_TEST

/* The many-listeners limit needs a generated document. */
START_TEST(test_listen_limit)
{
    char json[4096];
    size_t n = 0;
    molt_config_t *cfg;

    for (int count = MOLT_CONFIG_MAX_LISTEN; count <= MOLT_CONFIG_MAX_LISTEN + 1; count++) {
        n = (size_t)snprintf(json, sizeof(json), "{'listen': [");
        for (int i = 0; i < count; i++)
            n += (size_t)snprintf(json + n, sizeof(json) - n, "%s{'address': '127.0.0.1:%d'}", i ? "," : "",
                                  9000 + i);
        snprintf(json + n, sizeof(json) - n, "]}");
        if (count == MOLT_CONFIG_MAX_LISTEN) {
            cfg = load_ok(json);
            ck_assert_uint_eq(cfg->nlisten, MOLT_CONFIG_MAX_LISTEN);
            ck_assert_str_eq(cfg->listen[15].name, "listen15");
            molt_config_free(cfg);
        } else {
            load_bad(json, "listen: at most 16 listeners", NULL);
        }
    }
}
END_TEST

/* "admin": absent by default; its address parsed like a listener's. */
START_TEST(test_admin)
{
    molt_config_t *cfg = load_ok("{'listen': [{'address': '127.0.0.1:8080'}]}");
    ck_assert_ptr_null(cfg->admin_address);
    molt_config_free(cfg);
    cfg = load_ok("{'listen': [{'address': '127.0.0.1:8080'}], 'admin': {'address': '127.0.0.1:9100'}}");
    ck_assert_str_eq(cfg->admin_address, "127.0.0.1:9100");
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&cfg->admin_addr;
    ck_assert_int_eq(sin->sin_family, AF_INET);
    ck_assert_uint_eq(cfg->admin_addrlen, sizeof(struct sockaddr_in));
    ck_assert_uint_eq(ntohs(sin->sin_port), 9100);
    molt_config_free(cfg);
}
END_TEST

/* molt_config_load from a real file, with a relative path kept for messages. */
START_TEST(test_load_file)
{
    char dir[PATH_MAX], err[512], *path = NULL;
    molt_config_t *cfg = NULL, sentinel, *bad = &sentinel;

    make_tmpdir(dir);
    ck_assert_int_eq(chdir(dir), 0);
    write_file("molt.json", "{\"listen\": [{\"address\": \"127.0.0.1:8080\"}], \"runtime_dir\": \"run\"}\n");
    write_file("hello.so", "");
    write_file("bad.json", "{\n  \"listen\": [{\"address\": \"127.0.0.1:8080\"}],\n  \"workers\": ,\n}\n");
    write_file("bad2.json", "{\n  \"listen\": [{\"address\": \"127.0.0.1:8080\"}],\n"
                            "  \"plugins\": [{\"name\": \"a\", \"file\": \"hello.so\"},\n"
                            "              {\"name\": \"b\", \"file\": \"nope.so\"}]\n}\n");
    ck_assert_int_eq(mkdir("dir.json", 0755), 0);

    ck_assert_int_eq(molt_config_load("molt.json", &cfg, err, sizeof(err)), 0);
    ck_assert_int_ge(asprintf(&path, "%s/molt.json", dir), 0);
    ck_assert_str_eq(cfg->path, path);
    ck_assert_str_eq(cfg->dir, dir);
    free(path);
    ck_assert_int_ge(asprintf(&path, "%s/run", dir), 0);
    ck_assert_str_eq(cfg->runtime_dir, path);
    free(path);
    molt_config_free(cfg);

    ck_assert_int_eq(molt_config_load("./molt.json", &cfg, err, sizeof(err)), 0);
    ck_assert_str_eq(cfg->dir, dir);
    molt_config_free(cfg);

    ck_assert_int_eq(molt_config_load("bad.json", &bad, err, sizeof(err)), -1);
    ck_assert_ptr_eq(bad, &sentinel);
    ck_assert_msg(strncmp(err, "bad.json: line 3, column ", 25) == 0, "%s", err);

    ck_assert_int_eq(molt_config_load("bad2.json", &bad, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "bad2.json: plugins[1].file: \"nope.so\": no such file in plugin_path");

    ck_assert_int_eq(molt_config_load("nope.json", &bad, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "nope.json: open() failed: No such file or directory");

    ck_assert_int_eq(molt_config_load("dir.json", &bad, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "dir.json: not a regular file");
    ck_assert_ptr_eq(bad, &sentinel);

    ck_assert_int_eq(chdir("/"), 0);
    rm_rf(dir);
}
END_TEST

/* load_string does not need the directory to exist. */
START_TEST(test_load_string_missing_dir)
{
    static const char json[] = "{\"listen\": [{\"address\": \"127.0.0.1:8080\"}], \"runtime_dir\": \"r\"}";
    char err[256], cwd[PATH_MAX], *want = NULL;
    molt_config_t *cfg = NULL;

    ck_assert_int_eq(molt_config_load_string(json, strlen(json), "/nonexistent/molt/./c/../x.json", &cfg, err,
                                             sizeof(err)),
                     0);
    ck_assert_str_eq(cfg->dir, "/nonexistent/molt/c/..");
    ck_assert_str_eq(cfg->path, "/nonexistent/molt/c/../x.json");
    molt_config_free(cfg);

    ck_assert_int_eq(
        molt_config_load_string(json, strlen(json), "../no-such-dir-molt/x.json", &cfg, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    *strrchr(cwd, '/') = '\0';
    ck_assert_int_ge(asprintf(&want, "%s/no-such-dir-molt/r", cwd[0] ? cwd : ""), 0);
    ck_assert_str_eq(cfg->runtime_dir, want);
    free(want);
    molt_config_free(cfg);

    /* a length shorter than the string: only that prefix is parsed */
    ck_assert_int_eq(molt_config_load_string("{\"listen\": []}xyz", 14, "t.json", &cfg, err, sizeof(err)),
                     -1);
    ck_assert_str_eq(err, "t.json: listen: must be a non-empty array of listeners");
}
END_TEST

START_TEST(test_error_buffer)
{
    static const char json[] = "{\"bogus\": 1}";
    char err[8];
    molt_config_t *cfg = NULL;

    char big[128];

    memset(err, 'x', sizeof(err));
    ck_assert_int_eq(molt_config_load_string(json, strlen(json), "long-name.json", &cfg, err, sizeof(err)),
                     -1);
    ck_assert_str_eq(err, "long-na");
    ck_assert_int_eq(molt_config_load_string(json, strlen(json), "a.json", &cfg, NULL, 0), -1);
    ck_assert_ptr_null(cfg);

    /* control characters from the file never break the line */
    ck_assert_int_eq(molt_config_load_string("{\"a\\nb\": 1}", 11, "c.json", &cfg, big, sizeof(big)), -1);
    ck_assert_str_eq(big, "c.json: a?b: unknown key");
}
END_TEST

START_TEST(test_free_null)
{
    molt_config_free(NULL);
}
END_TEST

/* examples/molt.json itself, copied beside a fake build/plugins/hello.so. */
START_TEST(test_example_copy)
{
    char dir[PATH_MAX], err[512], *src = NULL, *buf = NULL, *p = NULL;
    molt_config_t *cfg = NULL;
    FILE *f;
    long n;

    make_tmpdir(dir);
    f = fopen(MOLT_SOURCE_DIR "/examples/molt.json", "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    rewind(f);
    buf = calloc(1, (size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);

    ck_assert_int_ge(asprintf(&p, "%s/examples", dir), 0);
    ck_assert_int_eq(mkdir(p, 0755), 0);
    free(p);
    ck_assert_int_ge(asprintf(&p, "%s/build", dir), 0);
    ck_assert_int_eq(mkdir(p, 0755), 0);
    free(p);
    ck_assert_int_ge(asprintf(&p, "%s/build/plugins", dir), 0);
    ck_assert_int_eq(mkdir(p, 0755), 0);
    free(p);
    ck_assert_int_ge(asprintf(&p, "%s/build/plugins/hello.so", dir), 0);
    write_file(p, "");
    free(p);
    ck_assert_int_ge(asprintf(&src, "%s/examples/molt.json", dir), 0);
    write_file(src, buf);

    ck_assert_msg(molt_config_load(src, &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(cfg->workers, 2);
    ck_assert_uint_eq(cfg->nlisten, 1);
    ck_assert_str_eq(cfg->listen[0].name, "http");
    assert_inet(&cfg->listen[0], "127.0.0.1", 8080);
    ck_assert_int_ge(asprintf(&p, "%s/build/run/control.sock", dir), 0);
    ck_assert_str_eq(cfg->control_socket, p);
    free(p);
    ck_assert_uint_eq(cfg->control_mode, 0660);
    ck_assert_int_ge(asprintf(&p, "%s/build/run", dir), 0);
    ck_assert_str_eq(cfg->runtime_dir, p);
    free(p);
    ck_assert_int_ge(asprintf(&p, "%s/build/plugins", dir), 0);
    ck_assert_uint_eq(cfg->nplugin_path, 1);
    ck_assert_str_eq(cfg->plugin_path[0], p);
    free(p);
    ck_assert_uint_eq(cfg->nplugins, 1);
    ck_assert_str_eq(cfg->plugins[0].name, "hello");
    ck_assert_int_ge(asprintf(&p, "%s/build/plugins/hello.so", dir), 0);
    ck_assert_str_eq(cfg->plugins[0].path, p);
    free(p);
    ck_assert_str_eq(cfg->plugins[0].config_json, "{\"body\":\"hello from molt\\n\"}");
    ck_assert_uint_eq(cfg->nroutes, 1);
    ck_assert_str_eq(cfg->routes[0].prefix, "/");
    ck_assert_uint_eq(cfg->routes[0].plugin_index, 0);
    /* the example spells out the defaults: it must equal a minimal config's */
    ck_assert_uint_eq(cfg->http.max_header_bytes, 16384);
    ck_assert_uint_eq(cfg->http.keepalive_timeout_ms, 60000);
    ck_assert_str_eq(cfg->reload.health.path, "/healthz");
    ck_assert_uint_eq(cfg->reload.keep_generations, 3);
    ck_assert_int_eq(cfg->log_level, MOLT_LOG_INFO);
    molt_config_free(cfg);

    rm_rf(dir);
    free(src);
    free(buf);
}
END_TEST

/* In place: fine when the build put hello.so in build/plugins, else only that is wrong. */
START_TEST(test_example_in_place)
{
    const char *path = MOLT_SOURCE_DIR "/examples/molt.json";
    char err[1024], *want = NULL;
    molt_config_t *cfg = NULL;

    if (molt_config_load(path, &cfg, err, sizeof(err)) == 0) {
        ck_assert_str_eq(cfg->plugins[0].name, "hello");
        molt_config_free(cfg);
        return;
    }
    ck_assert_int_ge(asprintf(&want, "%s: plugins[0].file: \"hello.so\": no such file in plugin_path", path),
                     0);
    ck_assert_str_eq(err, want);
    free(want);
}
END_TEST

/* --- invalid configs ------------------------------------------------------------ */

#define L "'listen': [{'address': '127.0.0.1:8080'}]"

static const struct bad_case {
    const char *json;
    const char *expect;
    const char *expect2;
} bad_cases[] = {
    /* syntax and shape */
    {"{\n 'workers': 2,\n 'listen': [\n}", ": line 4, column ", NULL},
    {"", ": line 1, column ", NULL},
    {"{" L "} x", ": line 1, column ", "end of file expected"},
    {"{'workers': 1,\n" L ",\n'workers': 2}", ": line 3, column ", "duplicate object key"},
    {"[]", ": top level: must be a JSON object", NULL},
    {"42", ": top level: must be a JSON object", NULL},
    {"'listen'", ": top level: must be a JSON object", NULL},
    /* unknown keys */
    {"{" L ", 'bogus': 1}", ": bogus: unknown key", NULL},
    {"{" L ", 'reload': {'health': {'x': 1}}}", ": reload.health.x: unknown key", NULL},
    {"{'listen': [{'address': '127.0.0.1:8080', 'port': 80}]}", ": listen[0].port: unknown key", NULL},
    {"{" L ", 'control': {'owner': 'root'}}", ": control.owner: unknown key", NULL},
    {"{" L ", 'http': {'max_headers': 1}}", ": http.max_headers: unknown key", NULL},
    {"{" L ", 'log': {'path': 'x'}}", ": log.path: unknown key", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so', 'pin': 'x'}]}", ": plugins[0].pin: unknown key",
     NULL},
    {"{" L ", 'routes': [{'prefix': '/', 'plugin': 'h', 'host': 'x'}]}", ": routes[0].host: unknown key",
     NULL},
    /* workers */
    {"{" L ", 'workers': 'many'}", ": workers: must be an integer between 1 and 64 or 'auto'", NULL},
    {"{" L ", 'workers': 0}", ": workers: must be an integer between 1 and 64", NULL},
    {"{" L ", 'workers': 65}", ": workers: must be an integer between 1 and 64", NULL},
    {"{" L ", 'workers': 2.0}", ": workers: must be an integer", NULL},
    {"{" L ", 'workers': true}", ": workers: must be an integer", NULL},
    /* listen */
    {"{'workers': 1}", ": listen: required", NULL},
    {"{'listen': []}", ": listen: must be a non-empty array", NULL},
    {"{'listen': '127.0.0.1:8080'}", ": listen: must be a non-empty array", NULL},
    {"{'listen': ['127.0.0.1:8080']}", ": listen[0]: must be an object", NULL},
    {"{'listen': [{'name': 'a'}]}", ": listen[0].address: required", NULL},
    {"{'listen': [{'address': 8080}]}", ": listen[0].address: must be a string", NULL},
    {"{'listen': [{'address': ''}]}", ": listen[0].address: must not be empty", NULL},
    {"{'listen': [{'address': '127.0.0.1:8080', 'backlog': 0}]}",
     ": listen[0].backlog: must be an integer between 1 and 65535", NULL},
    {"{'listen': [{'address': '127.0.0.1:8080', 'backlog': 65536}]}",
     ": listen[0].backlog: must be an integer between 1 and 65535", NULL},
    {"{'listen': [{'address': '127.0.0.1:8080', 'backlog': '4096'}]}",
     ": listen[0].backlog: must be an integer", NULL},
    {"{'listen': [{'name': 'a', 'address': '127.0.0.1:1'}, {'name': 'a', 'address': '127.0.0.1:2'}]}",
     ": listen[1].name: 'a': duplicate listener name (also listen[0])", NULL},
    {"{'listen': [{'address': '127.0.0.1:1'}, {'name': 'listen0', 'address': '127.0.0.1:2'}]}",
     ": listen[1].name: 'listen0': duplicate listener name", NULL},
    {"{'listen': [{'name': 'bad name', 'address': '127.0.0.1:1'}]}",
     ": listen[0].name: 'bad name': must be 1 to 64 characters", NULL},
    {"{'listen': [{'name': 'x123456789x123456789x123456789x123456789x123456789x123456789x1234',"
     " 'address': '127.0.0.1:1'}]}",
     ": listen[0].name: 'x1234", "must be 1 to 64 characters"},
    {"{'listen': [{'name': 7, 'address': '127.0.0.1:1'}]}", ": listen[0].name: must be a string", NULL},
    {"{'listen': [{'address': '127.0.0.1:8080'}, {'address': '127.0.0.1:8080'}]}",
     ": listen[1].address: '127.0.0.1:8080': same address as listen[0] ('listen0')", NULL},
    {"{'listen': [{'address': '*:8080'}, {'address': '0.0.0.0:8080'}]}",
     ": listen[1].address: '0.0.0.0:8080': same address as listen[0]", NULL},
    {"{'listen': [{'address': '[::1]:80'}, {'address': '[0::1]:80'}]}",
     ": listen[1].address: '[0::1]:80': same address as listen[0]", NULL},
    {"{'listen': [{'address': '1.2.3.4'}]}", ": listen[0].address: '1.2.3.4': missing port", NULL},
    {"{'listen': [{'address': '1.2.3.4:'}]}", ": listen[0].address: '1.2.3.4:': missing port", NULL},
    {"{'listen': [{'address': '1.2.3.4:0'}]}", ": listen[0].address: '1.2.3.4:0': port must be", NULL},
    {"{'listen': [{'address': '1.2.3.4:65536'}]}", ": listen[0].address: '1.2.3.4:65536': port must be",
     NULL},
    {"{'listen': [{'address': '1.2.3.4:http'}]}", ": listen[0].address: '1.2.3.4:http': port must be", NULL},
    {"{'listen': [{'address': 'localhost:8080'}]}",
     ": listen[0].address: 'localhost:8080': not a numeric IPv4 address (host names are not allowed)", NULL},
    {"{'listen': [{'address': '[::1:8080'}]}", ": listen[0].address: '[::1:8080': unterminated", NULL},
    {"{'listen': [{'address': '::1:8080'}]}",
     ": listen[0].address: '::1:8080': IPv6 addresses must be in brackets", NULL},
    /* control, runtime_dir, user, group */
    {"{" L ", 'control': {'mode': 'rw'}}", ": control.mode: 'rw': must be an octal string such as '0660'",
     NULL},
    {"{" L ", 'control': {'mode': '0999'}}", ": control.mode: '0999': must be an octal string", NULL},
    {"{" L ", 'control': {'mode': '1660'}}", ": control.mode: '1660': must be an octal string", NULL},
    {"{" L ", 'control': {'mode': '66'}}", ": control.mode: '66': must be an octal string", NULL},
    {"{" L ", 'control': {'mode': 660}}", ": control.mode: must be an octal string", NULL},
    {"{" L ", 'control': {'socket': 5}}", ": control.socket: must be a string", NULL},
    {"{" L ", 'control': '/run/c.sock'}", ": control: must be an object", NULL},
    {"{" L ", 'control': {'socket': "
     "'/x/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.sock'}}",
     ": control.socket: '/x/xxx", "too long for a unix socket path"},
    {"{" L ", 'runtime_dir': ''}", ": runtime_dir: must not be empty", NULL},
    {"{" L ", 'runtime_dir': ['run']}", ": runtime_dir: must be a string", NULL},
    {"{" L ", 'user': 5}", ": user: must be a non-empty string or null", NULL},
    {"{" L ", 'group': ''}", ": group: must be a non-empty string or null", NULL},
    /* plugin_path and plugins */
    {"{" L ", 'plugin_path': '.'}", ": plugin_path: must be an array", NULL},
    {"{" L ", 'plugin_path': ['.', 3]}", ": plugin_path[1]: must be a non-empty string", NULL},
    {"{" L ", 'plugins': {}}", ": plugins: must be an array", NULL},
    {"{" L ", 'plugins': ['hello.so']}", ": plugins[0]: must be an object", NULL},
    {"{" L ", 'plugins': [{'file': 'hello.so'}]}", ": plugins[0].name: required", NULL},
    {"{" L ", 'plugins': [{'name': 'h'}]}", ": plugins[0].file: required", NULL},
    {"{" L ", 'plugins': [{'name': 'h/x', 'file': 'hello.so'}]}", ": plugins[0].name: 'h/x': must be 1 to 64",
     NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so'}, {'name': 'w', 'file': 'nope.so'}]}",
     ": plugins[1].file: 'nope.so': no such file in plugin_path", NULL},
    {"{" L ", 'plugins': [{'name': 'd', 'file': 'dir.so'}]}",
     ": plugins[0].file: 'dir.so': not a regular file", NULL},
    {"{" L ", 'plugins': [{'name': 'd', 'file': 'hello.so/x'}]}",
     ": plugins[0].file: 'hello.so/x': no such file in plugin_path", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so', 'sha256': 'abc'}]}",
     ": plugins[0].sha256: must be 64 hexadecimal digits", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so',"
     " 'sha256': 'g123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'}]}",
     ": plugins[0].sha256: must be 64 hexadecimal digits", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so', 'sha256': '" SHA_LOWER "0'}]}",
     ": plugins[0].sha256: must be 64 hexadecimal digits", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so', 'sha256': null}]}",
     ": plugins[0].sha256: must be 64 hexadecimal digits", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so'}, {'name': 'h', 'file': 'world.so'}]}",
     ": plugins[1].name: 'h': duplicate instance name (also plugins[0])", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so', 'priority': 1001}]}",
     ": plugins[0].priority: must be an integer between -1000 and 1000", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so', 'priority': 'high'}]}",
     ": plugins[0].priority: must be an integer between -1000 and 1000", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so', 'config': 'x=1'}]}",
     ": plugins[0].config: must be an object", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so', 'config': null}]}",
     ": plugins[0].config: must be an object", NULL},
    /* routes */
    {"{" L ", 'routes': {'/': 'h'}}", ": routes: must be an array", NULL},
    {"{" L ", 'routes': [{'prefix': '/', 'plugin': 'nope'}]}",
     ": routes[0].plugin: 'nope': no such plugin instance", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so'}], 'routes': [{'prefix': '/', 'plugin': 'h'},"
     " {'prefix': '/x', 'plugin': 'H'}]}",
     ": routes[1].plugin: 'H': no such plugin instance", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so'}], 'routes': [{'prefix': 'api', 'plugin': 'h'}]}",
     ": routes[0].prefix: 'api': must start with", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so'}], 'routes': [{'prefix': '/a b', 'plugin': 'h'}]}",
     ": routes[0].prefix: '/a b': must not contain spaces", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so'}], 'routes': [{'prefix': '/', 'plugin': 'h'},"
     " {'prefix': '/', 'plugin': 'h'}]}",
     ": routes[1].prefix: '/': duplicate prefix (also routes[0])", NULL},
    {"{" L ", 'plugins': [{'name': 'h', 'file': 'hello.so'}], 'routes': [{'prefix': '/'}]}",
     ": routes[0].plugin: required", NULL},
    {"{" L ", 'routes': [{'plugin': 'h'}]}", ": routes[0].prefix: required", NULL},
    {"{" L ", 'routes': [[]]}", ": routes[0]: must be an object", NULL},
    /* http */
    {"{" L ", 'http': []}", ": http: must be an object", NULL},
    {"{" L ", 'http': {'max_header_bytes': 1023}}",
     ": http.max_header_bytes: must be an integer between 1024 and 1048576", NULL},
    {"{" L ", 'http': {'max_header_bytes': 1048577}}", ": http.max_header_bytes: must be an integer between",
     NULL},
    {"{" L ", 'http': {'max_body_bytes': -1}}",
     ": http.max_body_bytes: must be an integer between 0 and 1073741824", NULL},
    {"{" L ", 'http': {'max_body_bytes': 1073741825}}", ": http.max_body_bytes: must be an integer between",
     NULL},
    {"{" L ", 'http': {'header_timeout_ms': 0}}",
     ": http.header_timeout_ms: must be an integer between 1 and 3600000", NULL},
    {"{" L ", 'http': {'keepalive_timeout_ms': '60s'}}",
     ": http.keepalive_timeout_ms: must be an integer between 0 and 3600000", NULL},
    {"{" L ", 'http': {'keepalive_timeout_ms': 3600001}}", ": http.keepalive_timeout_ms: must be an integer",
     NULL},
    /* reload */
    {"{" L ", 'reload': 1}", ": reload: must be an object", NULL},
    {"{" L ", 'reload': {'load_timeout_ms': 0}}",
     ": reload.load_timeout_ms: must be an integer between 1 and 3600000", NULL},
    {"{" L ", 'reload': {'handoff_timeout_ms': 3600001}}", ": reload.handoff_timeout_ms: must be an integer",
     NULL},
    {"{" L ", 'reload': {'idle_grace_ms': -1}}",
     ": reload.idle_grace_ms: must be an integer between 0 and 3600000", NULL},
    {"{" L ", 'reload': {'drain_timeout_ms': 0}}", ": reload.drain_timeout_ms: must be an integer between 1",
     NULL},
    {"{" L ", 'reload': {'keep_generations': 0}}",
     ": reload.keep_generations: must be an integer between 1 and 100", NULL},
    {"{" L ", 'reload': {'keep_generations': 101}}", ": reload.keep_generations: must be an integer", NULL},
    {"{" L ", 'reload': {'on_restore_error': 'ignore'}}",
     ": reload.on_restore_error: 'ignore': must be 'fail' or 'fresh'", NULL},
    {"{" L ", 'reload': {'on_restore_error': false}}", ": reload.on_restore_error: must be a string", NULL},
    {"{" L ", 'reload': {'health': 'on'}}", ": reload.health: must be an object", NULL},
    {"{" L ", 'reload': {'health': {'path': 'healthz'}}}", ": reload.health.path: 'healthz': must start with",
     NULL},
    {"{" L ", 'reload': {'health': {'expect_status': 600}}}",
     ": reload.health.expect_status: must be an integer between 100 and 599", NULL},
    {"{" L ", 'reload': {'health': {'expect_status': 99}}}",
     ": reload.health.expect_status: must be an integer", NULL},
    {"{" L ", 'reload': {'health': {'interval_ms': 0}}}",
     ": reload.health.interval_ms: must be an integer between 1", NULL},
    {"{" L ", 'reload': {'health': {'stable_ms': -5}}}",
     ": reload.health.stable_ms: must be an integer between 0", NULL},
    {"{" L ", 'reload': {'health': {'max_error_rate': 1.5}}}",
     ": reload.health.max_error_rate: must be a number between 0 and 1", NULL},
    {"{" L ", 'reload': {'health': {'max_error_rate': -0.1}}}",
     ": reload.health.max_error_rate: must be a number", NULL},
    {"{" L ", 'reload': {'health': {'max_error_rate': 'half'}}}",
     ": reload.health.max_error_rate: must be a number", NULL},
    /* log */
    {"{" L ", 'log': 'debug'}", ": log: must be an object", NULL},
    {"{" L ", 'log': {'level': 'verbose'}}",
     ": log.level: 'verbose': must be one of debug, info, notice, warn, error, crit", NULL},
    {"{" L ", 'log': {'level': 'INFO'}}", ": log.level: 'INFO': must be one of", NULL},
    {"{" L ", 'log': {'format': 'xml'}}", ": log.format: 'xml': must be 'text' or 'json'", NULL},
    {"{" L ", 'log': {'format': 1}}", ": log.format: must be a string", NULL},
    {"{" L ", 'log': {'file': 1}}", ": log.file: must be a string", NULL},
    {"{" L ", 'control': {'group': 5}}", ": control.group: must be a group name or null", NULL},
    {"{" L ", 'control': {'group': ''}}", ": control.group: must be a group name or null", NULL},
    /* admin */
    {"{" L ", 'admin': '127.0.0.1:9100'}", ": admin: must be an object", NULL},
    {"{" L ", 'admin': {}}", ": admin.address: required", NULL},
    {"{" L ", 'admin': {'address': 'localhost:9100'}}",
     ": admin.address: 'localhost:9100': not a numeric IPv4", NULL},
    {"{" L ", 'admin': {'address': '127.0.0.1:8080'}}",
     ": admin.address: '127.0.0.1:8080': same address as listen[0]", NULL},
    {"{" L ", 'admin': {'address': '127.0.0.1:9100', 'path': '/m'}}", ": admin.path: unknown key", NULL},
};

START_TEST(test_invalid)
{
    load_bad(bad_cases[_i].json, bad_cases[_i].expect, bad_cases[_i].expect2);
}
END_TEST

/* --- addresses --------------------------------------------------------------------- */

static const struct addr_ok {
    const char *text;
    int family;
    unsigned port;
    const char *formatted;
} addr_ok[] = {
    {"127.0.0.1:8080", AF_INET, 8080, "127.0.0.1:8080"},
    {"0.0.0.0:65535", AF_INET, 65535, "0.0.0.0:65535"},
    {"*:80", AF_INET, 80, "0.0.0.0:80"},
    {"10.1.2.3:08080", AF_INET, 8080, "10.1.2.3:8080"},
    {"[::1]:8080", AF_INET6, 8080, "[::1]:8080"},
    {"[::]:1", AF_INET6, 1, "[::]:1"},
    {"[2001:DB8::1]:443", AF_INET6, 443, "[2001:db8::1]:443"},
    {"[::ffff:1.2.3.4]:80", AF_INET6, 80, "[::ffff:1.2.3.4]:80"},
};

START_TEST(test_address_ok)
{
    const struct addr_ok *c = &addr_ok[_i];
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char err[128] = "", buf[64];

    ck_assert_msg(molt_parse_address(c->text, &ss, &len, err, sizeof(err)) == 0, "%s: %s", c->text, err);
    ck_assert_int_eq(ss.ss_family, c->family);
    if (c->family == AF_INET) {
        ck_assert_uint_eq(len, sizeof(struct sockaddr_in));
        ck_assert_uint_eq(ntohs(((struct sockaddr_in *)&ss)->sin_port), c->port);
    } else {
        ck_assert_uint_eq(len, sizeof(struct sockaddr_in6));
        ck_assert_uint_eq(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), c->port);
    }
    ck_assert_str_eq(molt_format_address((struct sockaddr *)&ss, len, buf, sizeof(buf)), c->formatted);
}
END_TEST

static const struct addr_bad {
    const char *text;
    const char *why;
} addr_bad[] = {
    {"", "empty address"},
    {"1.2.3.4", "missing port"},
    {"1.2.3.4:", "missing port"},
    {"*:", "missing port"},
    {"[::1]", "missing port"},
    {"1.2.3.4:0", "port must be a number between 1 and 65535"},
    {"1.2.3.4:65536", "port must be a number between 1 and 65535"},
    {"1.2.3.4:99999999999999999999999", "port must be a number between 1 and 65535"},
    {"1.2.3.4:80x", "port must be a number between 1 and 65535"},
    {"1.2.3.4:-1", "port must be a number between 1 and 65535"},
    {"1.2.3.4:+80", "port must be a number between 1 and 65535"},
    {"1.2.3.4: 80", "port must be a number between 1 and 65535"},
    {"localhost:8080", "not a numeric IPv4 address (host names are not allowed)"},
    {"1.2.3:80", "not a numeric IPv4 address (host names are not allowed)"},
    {"256.1.1.1:80", "not a numeric IPv4 address (host names are not allowed)"},
    {"[::1:8080", "unterminated '[' (expected \"[IPv6]:PORT\")"},
    {"[::1]8080", "expected ':' after ']'"},
    {"::1:8080", "IPv6 addresses must be in brackets, as in \"[::1]:8080\""},
    {":8080", "missing host (use \"*:PORT\" for every address)"},
    {"[]:80", "missing host (use \"*:PORT\" for every address)"},
    {"[1.2.3.4]:80", "not a numeric IPv6 address"},
    {"[*]:80", "not a numeric IPv6 address"},
    {"[fe80::1%eth0]:80", "not a numeric IPv6 address"},
};

START_TEST(test_address_bad)
{
    const struct addr_bad *c = &addr_bad[_i];
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char err[128] = "";

    ck_assert_msg(molt_parse_address(c->text, &ss, &len, err, sizeof(err)) == -1, "%s parsed", c->text);
    ck_assert_str_eq(err, c->why);
    /* a NULL error buffer is allowed */
    ck_assert_int_eq(molt_parse_address(c->text, &ss, &len, NULL, 0), -1);
}
END_TEST

START_TEST(test_format_address)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(8080)};
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
    struct sockaddr_un un = {.sun_family = AF_UNIX, .sun_path = "/run/molt/control.sock"};
    struct sockaddr sa = {.sa_family = AF_APPLETALK};
    char buf[64], small[6];

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin6.sin6_addr = in6addr_loopback;
    ck_assert_str_eq(molt_format_address((struct sockaddr *)&sin, sizeof(sin), buf, sizeof(buf)),
                     "127.0.0.1:8080");
    ck_assert_str_eq(molt_format_address((struct sockaddr *)&sin6, sizeof(sin6), buf, sizeof(buf)),
                     "[::1]:443");
    ck_assert_str_eq(molt_format_address((struct sockaddr *)&un, sizeof(un), buf, sizeof(buf)),
                     "unix:/run/molt/control.sock");
    ck_assert_str_eq(molt_format_address(&sa, sizeof(sa), buf, sizeof(buf)), "(unknown address)");
    ck_assert_str_eq(molt_format_address(NULL, 0, buf, sizeof(buf)), "(unknown address)");
    /* a length too short for the family is not trusted */
    ck_assert_str_eq(molt_format_address((struct sockaddr *)&sin6, sizeof(sin), buf, sizeof(buf)),
                     "(unknown address)");
    ck_assert_str_eq(molt_format_address((struct sockaddr *)&sin, sizeof(sin), small, sizeof(small)),
                     "127.0");
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc;

    tc = tcase_create("valid");
    tcase_add_unchecked_fixture(tc, fx_setup, fx_teardown);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_full);
    tcase_add_test(tc, test_boundaries);
    tcase_add_test(tc, test_workers_auto);
    tcase_add_test(tc, test_relative_paths);
    tcase_add_test(tc, test_absolute_plugin_file);
    tcase_add_test(tc, test_listen_limit);
    tcase_add_test(tc, test_admin);
    tcase_add_test(tc, test_load_file);
    tcase_add_test(tc, test_load_string_missing_dir);
    tcase_add_test(tc, test_error_buffer);
    tcase_add_test(tc, test_free_null);
    tcase_add_test(tc, test_example_copy);
    tcase_add_test(tc, test_example_in_place);
    suite_add_tcase(s, tc);

    tc = tcase_create("invalid");
    tcase_add_unchecked_fixture(tc, fx_setup, fx_teardown);
    tcase_add_loop_test(tc, test_invalid, 0, (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
    suite_add_tcase(s, tc);

    tc = tcase_create("address");
    tcase_add_loop_test(tc, test_address_ok, 0, (int)(sizeof(addr_ok) / sizeof(addr_ok[0])));
    tcase_add_loop_test(tc, test_address_bad, 0, (int)(sizeof(addr_bad) / sizeof(addr_bad[0])));
    tcase_add_test(tc, test_format_address);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    int failed;

    /* Fork mode unless CK_FORK=no (handy under a debugger): a crash fails one case. */
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
