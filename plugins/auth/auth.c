/*
 * auth: bearer-token authentication (RFC 6750) in front of everything else.
 *
 * A REQUEST_HEADERS callback ("authenticate", priority -100, so that it runs
 * before callbacks of the default priority 0) lets a request through when it
 * carries "Authorization: Bearer <token>" with the configured token, or when
 * its path starts with one of the exempt prefixes. Any other request is
 * answered 401 here, with
 *     WWW-Authenticate: Bearer realm="<realm>"
 * (plus error="invalid_token" when a bearer token was sent but is wrong) and
 * the body "unauthorized\n"; the callback returns MOLT_DONE, so that the
 * rest of the request phase and the handler do not run. Response-header
 * callbacks (the headers plugin) still run on the 401.
 *
 * config:
 *   token    string, required: the bearer token, RFC 6750 b64token syntax
 *            (letters, digits, - . _ ~ + /, then any number of =)
 *   realm    string, default "molt": no '"', '\' or control characters
 *   exempt   array of path prefixes starting with '/', default []: matched
 *            against the request path as sent, like "routes" prefixes
 *
 * The token is compared in time that depends only on the length of what the
 * client sent, never on how much of it matches.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "molt/plugin.h"

typedef struct auth {
    char *token;
    size_t token_len;
    char *challenge;         /* Bearer realm="..." */
    char *challenge_invalid; /* Bearer realm="...", error="invalid_token" */
    char **exempt;
    size_t *exempt_len;
    size_t nexempt;
} auth_t;

static void auth_free(auth_t *a)
{
    if (!a)
        return;
    free(a->token);
    free(a->challenge);
    free(a->challenge_invalid);
    for (size_t i = 0; i < a->nexempt; i++)
        free(a->exempt[i]);
    free(a->exempt);
    free(a->exempt_len);
    free(a);
}

static bool is_b64char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

/* RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
static bool is_b64token(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && is_b64char(s[i]))
        i++;
    if (i == 0)
        return false;
    while (i < len && s[i] == '=')
        i++;
    return i == len;
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

static int auth_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *cfg = json_loads(config_json, 0, &jerr);
    auth_t *a = calloc(1, sizeof(*a));
    const char *token = NULL, *realm = "molt";
    json_t *exempt = NULL;
    if (!cfg || !a) {
        snprintf(err, errlen, "%s", cfg ? "out of memory" : jerr.text);
        goto fail;
    }
    if (json_unpack_ex(cfg, &jerr, JSON_STRICT, "{s:s,s?s,s?o}", "token", &token, "realm", &realm, "exempt",
                       &exempt) < 0) {
        snprintf(err, errlen, "config: %s", jerr.text);
        goto fail;
    }
    if (!token[0]) {
        snprintf(err, errlen, "config: token must not be empty");
        goto fail;
    }
    if (!is_b64token(token, strlen(token))) {
        snprintf(err, errlen,
                 "config: token may hold only letters, digits, - . _ ~ + / and trailing = "
                 "(RFC 6750 b64token)");
        goto fail;
    }
    if (!is_quotable(realm)) {
        snprintf(err, errlen, "config: realm must not contain '\"', '\\' or control characters");
        goto fail;
    }
    if (exempt && !json_is_array(exempt)) {
        snprintf(err, errlen, "config: exempt must be an array of path prefixes");
        goto fail;
    }
    a->token = strdup(token);
    a->token_len = strlen(token);
    a->challenge = make_challenge(realm, false);
    a->challenge_invalid = make_challenge(realm, true);
    size_t n = json_array_size(exempt);
    a->exempt = calloc(n ? n : 1, sizeof(*a->exempt));
    a->exempt_len = calloc(n ? n : 1, sizeof(*a->exempt_len));
    if (!a->token || !a->challenge || !a->challenge_invalid || !a->exempt || !a->exempt_len) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const char *p = json_string_value(json_array_get(exempt, i));
        if (!p || p[0] != '/') {
            snprintf(err, errlen, "config: exempt[%zu] must be a path prefix starting with '/'", i);
            goto fail;
        }
        if (!(a->exempt[a->nexempt] = strdup(p))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        a->exempt_len[a->nexempt++] = strlen(p);
    }
    molt_instance_set_data(inst, a);
    json_decref(cfg);
    return MOLT_OK;
fail:
    json_decref(cfg);
    auth_free(a);
    return MOLT_ERROR;
}

static void auth_fini(molt_instance_t *inst)
{
    auth_free(molt_instance_data(inst));
    molt_instance_set_data(inst, NULL);
}

/*
 * The credentials of "Authorization: Bearer <token>" (scheme case-insensitive,
 * RFC 9110 section 11.1); NULL if the request has no Authorization header or
 * another scheme.
 */
static const char *bearer_token(molt_txn_t *txn, size_t *len)
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
    *len = hlen - i;
    return v + i;
}

/* Equal, in time that depends on len (what the client sent) only. */
static bool token_equal(const char *got, size_t len, const char *want, size_t want_len)
{
    volatile unsigned char diff = (unsigned char)(len != want_len);
    for (size_t i = 0; i < len; i++)
        diff |= (unsigned char)(got[i] ^ want[i % want_len]);
    return diff == 0;
}

static bool exempt(const auth_t *a, molt_txn_t *txn)
{
    size_t plen;
    const char *path = molt_req_path(txn, &plen);
    for (size_t i = 0; path && i < a->nexempt; i++)
        if (plen >= a->exempt_len[i] && memcmp(path, a->exempt[i], a->exempt_len[i]) == 0)
            return true;
    return false;
}

static int auth_authenticate(molt_txn_t *txn, void *data)
{
    const auth_t *a = data;
    if (exempt(a, txn))
        return MOLT_CONTINUE;
    size_t len = 0;
    const char *tok = bearer_token(txn, &len);
    if (tok && len > 0 && token_equal(tok, len, a->token, a->token_len))
        return MOLT_CONTINUE;
    static const char body[] = "unauthorized\n";
    const char *challenge = tok && len > 0 ? a->challenge_invalid : a->challenge;
    if (molt_resp_set_status(txn, 401) != MOLT_OK ||
        molt_resp_add_header(txn, "WWW-Authenticate", challenge) != MOLT_OK ||
        molt_resp_add_header(txn, "Content-Type", "text/plain") != MOLT_OK ||
        molt_resp_write(txn, body, sizeof(body) - 1) != MOLT_OK)
        return MOLT_ERROR; /* the host answers 500: still no access */
    return MOLT_DONE;
}

static const molt_hook_t auth_hooks[] = {
    {.id = MOLT_HOOK_REQUEST_HEADERS, .priority = -100, .name = "authenticate", .fn.txn = auth_authenticate},
};

MOLT_PLUGIN(.name = "auth", .version = "1.0.0", .init = auth_init, .fini = auth_fini, .hooks = auth_hooks,
            .nhooks = sizeof(auth_hooks) / sizeof(auth_hooks[0]))
