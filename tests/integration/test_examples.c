/*
 * The "examples" integration theme: the example plugins of plugins/ (headers,
 * auth, users + whoami) loaded by the real moltd, driven by curl, and their
 * config errors as the operator sees them (moltd -t, and moltd refusing to
 * start). Each test starts its own moltd on its own ports in its own temp dir
 * (harness.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <check.h>
#include <jansson.h>

#include "tests/integration/harness.h"

#define TOKEN "s3cret"
#define CHALLENGE(realm) "Bearer realm=\"" realm "\""
#define CHALLENGE_INVALID(realm) "Bearer realm=\"" realm "\", error=\"invalid_token\""

/* ---- helpers ------------------------------------------------------------------------------- */

static json_t *cfg_json(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);
    H_CHECK(v != NULL, "bad JSON in the test itself: %s: %s", text, jerr.text);
    return v;
}

/* GET path with curl, with an Authorization header when `authz` is set; fails
 * the test unless the status is `status`. */
static void get(h_molt_t *h, h_resp_t *r, const char *path, const char *authz, int status)
{
    char url[256], hdr[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", h->port, path);
    int rc;
    if (authz) {
        snprintf(hdr, sizeof(hdr), "Authorization: %s", authz);
        rc = h_curl(h, r, "-H", hdr, url, NULL);
    } else {
        rc = h_curl(h, r, url, NULL);
    }
    H_CHECK(rc == 0, "curl %s exited with %d", url, rc);
    H_CHECK(r->status == status, "GET %s (Authorization: %s): status %d, expected %d (body: %s)", path,
            authz ? authz : "none", r->status, status, r->body);
}

static void check_body(const h_resp_t *r, const char *expect, const char *what)
{
    H_CHECK(r->body_len == strlen(expect) && memcmp(r->body, expect, r->body_len) == 0,
            "%s: body is '%s' (%zu bytes), expected '%s'", what, r->body, r->body_len, expect);
}

static size_t header_count(const h_resp_t *r, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nhdrs; i++)
        n += strcasecmp(r->hdrs[i].name, name) == 0;
    return n;
}

/* The response has exactly one header `name`, and its value is `value`. */
static void check_header(const h_resp_t *r, const char *name, const char *value, const char *what)
{
    const char *v = h_resp_header(r, name);
    H_CHECK(v != NULL, "%s: no %s header", what, name);
    H_CHECK(strcmp(v, value) == 0, "%s: %s is '%s', expected '%s'", what, name, v, value);
    H_CHECK(header_count(r, name) == 1, "%s: %zu %s headers, expected 1", what, header_count(r, name), name);
}

/* A 401 as auth and whoami send it: the challenge, and nothing of the handler. */
static void check_401(const h_resp_t *r, const char *challenge, const char *what)
{
    check_header(r, "WWW-Authenticate", challenge, what);
    check_body(r, "unauthorized\n", what);
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

/* moltd refuses to start (exit code 1, quickly) and the supervisor's
 * "cannot start:" line holds every needle. */
static void check_start_refused(h_molt_t *h, const char *const *needles, const char *what)
{
    h_start(h);
    H_CHECK(h_wait_exit(h, 10000), "moltd with %s still runs after 10 s", what);
    H_CHECK(h_exit_code(h) == 1, "moltd with %s: wait status 0x%x, expected exit code 1", what,
            (unsigned)h->wstatus);
    char sup[32];
    snprintf(sup, sizeof(sup), "sup[%d]", (int)h->pid);
    char *line = h_log_line(h, (const char *const[]){sup, "cannot start:", NULL});
    H_CHECK(line != NULL, "moltd with %s: the log has no 'cannot start:' line from the supervisor", what);
    const char *missing = NULL;
    for (size_t i = 0; needles[i] && !missing; i++)
        if (!strstr(line, needles[i]))
            missing = needles[i];
    if (missing)
        fprintf(stderr, "the supervisor said: %s\n", line);
    free(line);
    H_CHECK(!missing, "moltd with %s: the 'cannot start' line does not mention '%s'", what, missing);
}

/* =============================================================================================
 * headers
 * ============================================================================================= */

/* On a handler's 200 and on the host's own 404; two instances side by side. */
START_TEST(test_headers_added)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "routes", json_pack("[{s:s,s:s}]", "prefix", "/app/", "plugin", "hello"));
    h_add_plugin(h, "security", "headers.so",
                 cfg_json("{\"add\": {\"X-Frame-Options\": \"DENY\", \"X-Content-Type-Options\": \"nosniff\","
                          " \"Content-Security-Policy\": \"default-src 'self'; frame-ancestors 'none'\"}}"));
    h_add_plugin(h, "served", "headers.so", cfg_json("{\"add\": {\"X-Served-By\": \"molt examples\"}}"));
    h_start_ready(h);

    static const char *const paths[] = {"/app/page", "/nowhere"};
    static const int statuses[] = {200, 404};
    for (size_t i = 0; i < 2; i++) {
        h_resp_t r;
        get(h, &r, paths[i], NULL, statuses[i]);
        if (statuses[i] == 200)
            check_body(&r, H_HELLO_BODY, paths[i]);
        check_header(&r, "X-Frame-Options", "DENY", paths[i]);
        check_header(&r, "X-Content-Type-Options", "nosniff", paths[i]);
        check_header(&r, "Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'", paths[i]);
        check_header(&r, "X-Served-By", "molt examples", paths[i]);
        h_resp_free(&r);
    }
}
END_TEST

/* A header name the host would refuse on every response keeps moltd from starting. */
START_TEST(test_headers_bad_name)
{
    h_molt_t *h = h_new();
    h_add_plugin(h, "sechdr", "headers.so", cfg_json("{\"add\": {\"X-Ok\": \"1\", \"Bad Header\": \"x\"}}"));
    check_start_refused(
        h, (const char *const[]){"plugin sechdr ", "headers.so", "init failed", "Bad Header", NULL},
        "a header name with a space");
}
END_TEST

/* =============================================================================================
 * auth
 * ============================================================================================= */

START_TEST(test_auth)
{
    h_molt_t *h = h_new();
    /* auth last in the config: its priority, not its place, puts it first */
    h_add_plugin(h, "security", "headers.so", cfg_json("{\"add\": {\"X-Frame-Options\": \"DENY\"}}"));
    h_add_plugin(
        h, "gate", "auth.so",
        cfg_json("{\"token\": \"" TOKEN "\", \"realm\": \"molt-test\", \"exempt\": [\"/public/\"]}"));
    h_start_ready(h);
    h_resp_t r;

    /* no credentials: 401 with the realm, hello's body absent, headers still added */
    get(h, &r, "/", NULL, 401);
    check_401(&r, CHALLENGE("molt-test"), "no token");
    check_header(&r, "X-Frame-Options", "DENY", "the 401");
    h_resp_free(&r);
    /* another scheme is no bearer token at all */
    get(h, &r, "/", "Basic czNjcmV0OnMzY3JldA==", 401);
    check_401(&r, CHALLENGE("molt-test"), "Basic credentials");
    h_resp_free(&r);

    /* wrong tokens, including a prefix of the right one and the right one extended */
    static const char *const wrong[] = {"Bearer nope", "Bearer s3cre", "Bearer s3cretX", "Bearer S3CRET"};
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        get(h, &r, "/", wrong[i], 401);
        check_401(&r, CHALLENGE_INVALID("molt-test"), wrong[i]);
        h_resp_free(&r);
    }

    /* the right token reaches hello; the scheme is case-insensitive */
    static const char *const right[] = {"Bearer " TOKEN, "bearer " TOKEN, "BEARER   " TOKEN};
    for (size_t i = 0; i < sizeof(right) / sizeof(right[0]); i++) {
        get(h, &r, "/", right[i], 200);
        check_body(&r, H_HELLO_BODY, right[i]);
        H_CHECK(!h_resp_header(&r, "WWW-Authenticate"), "%s: a 200 with WWW-Authenticate", right[i]);
        h_resp_free(&r);
    }

    /* an exempt prefix needs no token; a path that merely starts alike does */
    get(h, &r, "/public/index.html", NULL, 200);
    check_body(&r, H_HELLO_BODY, "exempt /public/index.html");
    h_resp_free(&r);
    get(h, &r, "/publicity", NULL, 401);
    check_401(&r, CHALLENGE("molt-test"), "/publicity (not under /public/)");
    h_resp_free(&r);
}
END_TEST

/* The defaults: realm "molt", nothing exempt. */
START_TEST(test_auth_defaults)
{
    h_molt_t *h = h_new();
    h_add_plugin(h, "auth", "auth.so", cfg_json("{\"token\": \"" TOKEN "\"}"));
    h_start_ready(h);
    h_resp_t r;
    get(h, &r, "/healthz", NULL, 401);
    check_401(&r, CHALLENGE("molt"), "default realm");
    h_resp_free(&r);
    get(h, &r, "/healthz", "Bearer " TOKEN, 200);
    check_body(&r, H_HELLO_BODY, "default config, right token");
    h_resp_free(&r);
}
END_TEST

/*
 * auth's default priority is -100, and the config's "priority" overrides it:
 * of three instances, the first to run that rejects answers, with its realm.
 * "lo" (-101) exempts /x/, so that there "mid" (the default) must answer
 * before "hi" (-99).
 */
START_TEST(test_auth_priority)
{
    h_molt_t *h = h_new();
    h_add_plugin(h, "hi", "auth.so", cfg_json("{\"token\": \"t-hi\", \"realm\": \"hi\"}"));
    h_add_plugin(h, "mid", "auth.so", cfg_json("{\"token\": \"t-mid\", \"realm\": \"mid\"}"));
    h_add_plugin(h, "lo", "auth.so",
                 cfg_json("{\"token\": \"t-lo\", \"realm\": \"lo\", \"exempt\": [\"/x/\"]}"));
    json_t *plugins = json_object_get(h->cfg, "plugins");
    json_object_set_new(json_array_get(plugins, 1), "priority", json_integer(-99));
    json_object_set_new(json_array_get(plugins, 3), "priority", json_integer(-101));
    h_start_ready(h);
    h_resp_t r;
    get(h, &r, "/", NULL, 401);
    check_401(&r, CHALLENGE("lo"), "priority -101 runs first");
    h_resp_free(&r);
    get(h, &r, "/x/", NULL, 401);
    check_401(&r, CHALLENGE("mid"), "the default priority (-100) runs before -99");
    h_resp_free(&r);
}
END_TEST

/* =============================================================================================
 * users + whoami
 * ============================================================================================= */

START_TEST(test_whoami)
{
    h_molt_t *h = h_new();
    /* whoami before users in the config: deps order the initialisation */
    h_add_plugin(h, "whoami", "whoami.so", NULL);
    h_add_route(h, "/whoami", "whoami");
    h_add_plugin(h, "staffwho", "whoami.so", cfg_json("{\"users\": \"staff\", \"realm\": \"staff\"}"));
    h_add_route(h, "/staff/whoami", "staffwho");
    h_add_plugin(h, "users", "users.so",
                 cfg_json("{\"users\": {\"alice\": \"token-a\", \"bob\": \"token-b\"}}"));
    h_add_plugin(h, "staff", "users.so", cfg_json("{\"users\": {\"carol\": \"token-c\"}}"));
    h_start_ready(h);

    static const struct {
        const char *path, *token, *user;
    } ok[] = {
        {"/whoami", "token-a", "alice"},
        {"/whoami", "token-b", "bob"},
        {"/staff/whoami", "token-c", "carol"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char authz[64], what[128], expect[64];
        snprintf(authz, sizeof(authz), "Bearer %s", ok[i].token);
        snprintf(what, sizeof(what), "GET %s with %s", ok[i].path, ok[i].token);
        h_resp_t r;
        get(h, &r, ok[i].path, authz, 200);
        check_header(&r, "Content-Type", "application/json", what);
        json_error_t jerr;
        json_t *doc = json_loads(r.body, 0, &jerr);
        const char *user = json_string_value(json_object_get(doc, "user"));
        bool good = doc && json_object_size(doc) == 1 && user && strcmp(user, ok[i].user) == 0;
        json_decref(doc);
        H_CHECK(good, "%s: body '%s' is not {\"user\":\"%s\"}", what, r.body, ok[i].user);
        snprintf(expect, sizeof(expect), "{\"user\":\"%s\"}\n", ok[i].user);
        check_body(&r, expect, what);
        h_resp_free(&r);
    }

    static const struct {
        const char *path, *authz, *challenge;
    } denied[] = {
        {"/whoami", NULL, CHALLENGE("molt")},
        {"/whoami", "Bearer token-z", CHALLENGE_INVALID("molt")},
        {"/whoami", "Bearer token-", CHALLENGE_INVALID("molt")},
        {"/whoami", "Bearer token-c", CHALLENGE_INVALID("molt")}, /* staff's user, not users' */
        {"/staff/whoami", "Bearer token-a", CHALLENGE_INVALID("staff")},
        {"/whoami", "Basic dG9rZW4tYQ==", CHALLENGE("molt")},
    };
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
        char what[128];
        snprintf(what, sizeof(what), "GET %s with %s", denied[i].path,
                 denied[i].authz ? denied[i].authz : "none");
        h_resp_t r;
        get(h, &r, denied[i].path, denied[i].authz, 401);
        check_401(&r, denied[i].challenge, what);
        h_resp_free(&r);
    }
}
END_TEST

/* No users instance: the dependency stops the generation before it serves. */
START_TEST(test_whoami_without_users)
{
    h_molt_t *h = h_new();
    h_add_plugin(h, "whoami", "whoami.so", NULL);
    h_add_route(h, "/whoami", "whoami");
    check_start_refused(h, (const char *const[]){"whoami", "depends on plugin users >= 1.0.0", NULL},
                        "whoami without users");
}
END_TEST

/* =============================================================================================
 * config errors, as moltd -t reports them
 * ============================================================================================= */

typedef struct bad {
    const char *instance;
    const char *file;
    const char *config;
    const char *why[3];
} bad_t;

static const bad_t bad[] = {
    {"sechdr", "headers.so", "{}", {"not found", "add"}},
    {"sechdr", "headers.so", "{\"add\": {\"X-A\": \"1\"}, \"only_status\": [200]}", {"only_status"}},
    {"sechdr", "headers.so", "{\"add\": {}}", {"non-empty object"}},
    {"sechdr", "headers.so", "{\"add\": {\"content-length\": \"5\"}}", {"content-length", "set by molt"}},
    {"sechdr", "headers.so", "{\"add\": {\"X-A\": \"a\\r\\nX-B: b\"}}", {"add.X-A", "control character"}},
    {"sechdr", "headers.so", "{\"add\": {\"X-A\": 1}}", {"add.X-A", "must be a string"}},
    {"gate", "auth.so", "{\"realm\": \"x\"}", {"not found", "token"}},
    {"gate", "auth.so", "{\"token\": \"\"}", {"token must not be empty"}},
    {"gate", "auth.so", "{\"token\": \"two words\"}", {"token may hold only", "b64token"}},
    {"gate", "auth.so", "{\"token\": \"t\", \"tokens\": [\"u\"]}", {"tokens"}},
    {"gate", "auth.so", "{\"token\": \"t\", \"exempt\": [\"/ok\", \"public/\"]}", {"exempt[1]", "'/'"}},
    {"gate", "auth.so", "{\"token\": \"t\", \"realm\": \"a\\\"b\"}", {"realm must not contain"}},
    {"people",
     "users.so",
     "{\"users\": {\"a\": \"t1\", \"b\": \"t1\"}}",
     {"users a and b have the same token"}},
    {"people", "users.so", "{\"users\": {\"a\": 5}}", {"users.a", "token"}},
    {"people", "users.so", "{\"users\": [\"a\"]}", {"users must be an object"}},
    {"people", "users.so", "{\"users\": {}, \"admins\": {}}", {"admins"}},
};

START_TEST(test_bad_config)
{
    const bad_t *b = &bad[_i];
    h_molt_t *h = h_new();
    h_add_plugin(h, b->instance, b->file, cfg_json(b->config));
    char inst[80];
    snprintf(inst, sizeof(inst), "plugin %s ", b->instance);
    const char *needles[6] = {inst, "init failed"};
    for (size_t k = 0; k < 3 && b->why[k]; k++)
        needles[2 + k] = b->why[k];
    char what[256];
    snprintf(what, sizeof(what), "%s config %s", b->file, b->config);
    check_refused(h, needles, what);
}
END_TEST

/* whoami pointed at a users instance that does not exist: init says which. */
START_TEST(test_whoami_wrong_provider)
{
    h_molt_t *h = h_new();
    h_add_plugin(h, "people", "users.so", cfg_json("{\"users\": {\"alice\": \"token-a\"}}"));
    h_add_plugin(h, "whoami", "whoami.so", cfg_json("{\"users\": \"nosuch\"}"));
    h_add_route(h, "/whoami", "whoami");
    check_refused(h, (const char *const[]){"plugin whoami ", "init failed", "\"nosuch\"", NULL},
                  "whoami asking a users instance that does not exist");
}
END_TEST

/* ---- suite --------------------------------------------------------------------------------- */

static Suite *examples_suite(void)
{
    Suite *s = suite_create("integ_examples");
    TCase *tc = h_tcase("headers", 30);
    tcase_add_test(tc, test_headers_added);
    tcase_add_test(tc, test_headers_bad_name);
    suite_add_tcase(s, tc);
    tc = h_tcase("auth", 30);
    tcase_add_test(tc, test_auth);
    tcase_add_test(tc, test_auth_defaults);
    tcase_add_test(tc, test_auth_priority);
    suite_add_tcase(s, tc);
    tc = h_tcase("whoami", 30);
    tcase_add_test(tc, test_whoami);
    tcase_add_test(tc, test_whoami_without_users);
    tcase_add_test(tc, test_whoami_wrong_provider);
    suite_add_tcase(s, tc);
    tc = h_tcase("config", 30);
    tcase_add_loop_test(tc, test_bad_config, 0, (int)(sizeof(bad) / sizeof(bad[0])));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(examples_suite());
    srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose lists every test */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
