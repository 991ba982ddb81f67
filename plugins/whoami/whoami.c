/*
 * whoami: tells the caller who they are. A request handler that takes the
 * bearer token of "Authorization: Bearer <token>", asks the users plugin
 * whose it is, and answers 200 with {"user":"<name>"} (application/json).
 * A request without a bearer token, or with one that belongs to nobody, gets
 * 401 with WWW-Authenticate: Bearer realm="<realm>" (plus
 * error="invalid_token" when a token was sent) and the body "unauthorized\n".
 *
 * It depends on the users plugin (>= 1.0.0) and reaches it only through the
 * host: init looks up the "users" API (users_api.h) with molt_api_lookup().
 *
 * config:
 *   users   string, default "users": the users instance to ask (an instance
 *           name, or the plugin name when exactly one users instance exists)
 *   realm   string, default "molt": no '"', '\' or control characters
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "../users/users_api.h"
#include "molt/plugin.h"

typedef struct whoami {
    const users_api_t *users; /* owned by the users instance, which outlives us (deps) */
    char *challenge;          /* Bearer realm="..." */
    char *challenge_invalid;  /* Bearer realm="...", error="invalid_token" */
} whoami_t;

static void whoami_free(whoami_t *w)
{
    if (!w)
        return;
    free(w->challenge);
    free(w->challenge_invalid);
    free(w);
}

/* Fits in a quoted-string without escaping. */
static bool is_quotable(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 32 && c != '\t') || c == 127 || c == '"' || c == '\\')
            return false;
    }
    return true;
}

/* Bearer realm="<realm>", with error="invalid_token" when `invalid`. */
static char *make_challenge(const char *realm, bool invalid)
{
    const char *extra = invalid ? ", error=\"invalid_token\"" : "";
    int n = snprintf(NULL, 0, "Bearer realm=\"%s\"%s", realm, extra);
    char *s = n < 0 ? NULL : malloc((size_t)n + 1);
    if (s)
        snprintf(s, (size_t)n + 1, "Bearer realm=\"%s\"%s", realm, extra);
    return s;
}

static int whoami_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *cfg = json_loads(config_json, 0, &jerr);
    whoami_t *w = calloc(1, sizeof(*w));
    const char *provider = "users", *realm = "molt";
    if (!cfg || !w) {
        snprintf(err, errlen, "%s", cfg ? "out of memory" : jerr.text);
        goto fail;
    }
    if (json_unpack_ex(cfg, &jerr, JSON_STRICT, "{s?s,s?s}", "users", &provider, "realm", &realm) < 0) {
        snprintf(err, errlen, "config: %s", jerr.text);
        goto fail;
    }
    if (!is_quotable(realm)) {
        snprintf(err, errlen, "config: realm must not contain '\"', '\\' or control characters");
        goto fail;
    }
    w->users = molt_api_lookup(inst, provider, USERS_API_NAME, USERS_API_VERSION);
    if (!w->users) {
        snprintf(err, errlen,
                 "cannot find the %s api (version >= %u) of instance \"%s\": config key users must name "
                 "a users instance",
                 USERS_API_NAME, USERS_API_VERSION, provider);
        goto fail;
    }
    w->challenge = make_challenge(realm, false);
    w->challenge_invalid = make_challenge(realm, true);
    if (!w->challenge || !w->challenge_invalid) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    molt_instance_set_data(inst, w);
    json_decref(cfg);
    return MOLT_OK;
fail:
    json_decref(cfg);
    whoami_free(w);
    return MOLT_ERROR;
}

static void whoami_fini(molt_instance_t *inst)
{
    whoami_free(molt_instance_data(inst));
    molt_instance_set_data(inst, NULL);
}

/* The token of "Authorization: Bearer <token>" as a string to free, or NULL
 * (no such header, another scheme, no token, or out of memory). */
static char *bearer_token(molt_txn_t *txn)
{
    size_t hlen;
    const char *v = molt_req_header(txn, "Authorization", &hlen);
    if (!v || hlen < 7 || strncasecmp(v, "Bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\t'))
        return NULL;
    size_t i = 7;
    while (i < hlen && (v[i] == ' ' || v[i] == '\t'))
        i++;
    while (hlen > i && (v[hlen - 1] == ' ' || v[hlen - 1] == '\t'))
        hlen--;
    return hlen > i ? strndup(v + i, hlen - i) : NULL;
}

/* Status, Content-Type, Cache-Control (an identity is no one else's to cache) and body. */
static int respond(molt_txn_t *txn, int status, const char *ctype, const char *body, size_t len)
{
    if (molt_resp_set_status(txn, status) != MOLT_OK ||
        molt_resp_add_header(txn, "Content-Type", ctype) != MOLT_OK ||
        molt_resp_add_header(txn, "Cache-Control", "no-store") != MOLT_OK ||
        molt_resp_write(txn, body, len) != MOLT_OK)
        return MOLT_ERROR;
    return MOLT_OK;
}

static int whoami_handle(molt_txn_t *txn, void *data)
{
    const whoami_t *w = data;
    char *token = bearer_token(txn);
    const char *user = token ? w->users->user_for_token(w->users->self, token) : NULL;
    const char *challenge = token ? w->challenge_invalid : w->challenge;
    free(token);
    if (!user) {
        static const char body[] = "unauthorized\n";
        if (molt_resp_add_header(txn, "WWW-Authenticate", challenge) != MOLT_OK)
            return MOLT_ERROR;
        return respond(txn, 401, "text/plain", body, sizeof(body) - 1);
    }
    json_t *doc = json_pack("{s:s}", "user", user);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text)
        return MOLT_ERROR;
    int rc = respond(txn, 200, "application/json", text, strlen(text));
    free(text);
    return rc == MOLT_OK ? molt_resp_write(txn, "\n", 1) : rc;
}

static const molt_dep_t whoami_deps[] = {
    {.name = "users", .min_version = "1.0.0"},
    {.name = NULL},
};

MOLT_PLUGIN(.name = "whoami", .version = "1.0.0", .deps = whoami_deps, .init = whoami_init,
            .fini = whoami_fini, .handle = whoami_handle)
