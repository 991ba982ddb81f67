/*
 * users: a table of users and their bearer tokens that other plugins reach
 * through the host, RGW style: init publishes a users_api_t (users_api.h)
 * under the name "users", version 1, with molt_api_publish(); a dependent
 * plugin (whoami) declares users in its deps and finds the API with
 * molt_api_lookup(). users has no handler and no hooks of its own.
 *
 * config:
 *   users   object of user name -> token, required. Tokens follow RFC 6750
 *           b64token syntax (letters, digits, - . _ ~ + /, then any number
 *           of =) and must differ from each other.
 *
 * Several instances can run side by side, each with its own table; a
 * dependent instance names the one it wants.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "molt/plugin.h"
#include "users_api.h"

typedef struct user {
    char *name;
    char *token;
    size_t token_len;
} user_t;

typedef struct users {
    users_api_t api; /* published; api.self points back here */
    user_t *v;
    size_t n;
} users_t;

static void users_free(users_t *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->n; i++) {
        free(u->v[i].name);
        free(u->v[i].token);
    }
    free(u->v);
    free(u);
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

/* Equal, in time that depends on len (the caller's string) only. */
static bool token_equal(const char *got, size_t len, const char *want, size_t want_len)
{
    volatile unsigned char diff = (unsigned char)(len != want_len);
    for (size_t i = 0; i < len; i++)
        diff |= (unsigned char)(got[i] ^ want[i % want_len]);
    return diff == 0;
}

/* Compares against every user, without stopping at a match. */
static const char *users_user_for_token(const void *self, const char *token)
{
    const users_t *u = self;
    const char *found = NULL;
    size_t len = token ? strlen(token) : 0;
    if (!len)
        return NULL;
    for (size_t i = 0; i < u->n; i++)
        if (token_equal(token, len, u->v[i].token, u->v[i].token_len))
            found = u->v[i].name;
    return found;
}

static int users_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *cfg = json_loads(config_json, JSON_REJECT_DUPLICATES, &jerr);
    users_t *u = calloc(1, sizeof(*u));
    json_t *table = NULL;
    if (!cfg || !u) {
        snprintf(err, errlen, "%s", cfg ? "out of memory" : jerr.text);
        goto fail;
    }
    if (json_unpack_ex(cfg, &jerr, JSON_STRICT, "{s:o}", "users", &table) < 0) {
        snprintf(err, errlen, "config: %s", jerr.text);
        goto fail;
    }
    if (!json_is_object(table)) {
        snprintf(err, errlen, "config: users must be an object of user name -> token");
        goto fail;
    }
    u->v = calloc(json_object_size(table) ? json_object_size(table) : 1, sizeof(*u->v));
    if (!u->v) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    const char *name;
    json_t *tok;
    json_object_foreach(table, name, tok)
    {
        const char *t = json_string_value(tok);
        size_t tlen = json_string_length(tok);
        if (!name[0]) {
            snprintf(err, errlen, "config: users: a user name must not be empty");
            goto fail;
        }
        if (!t || !is_b64token(t, tlen)) {
            snprintf(err, errlen,
                     "config: users.%s: the token must be a non-empty string of letters, digits, "
                     "- . _ ~ + / and trailing = (RFC 6750 b64token)",
                     name);
            goto fail;
        }
        for (size_t i = 0; i < u->n; i++) {
            if (u->v[i].token_len == tlen && memcmp(u->v[i].token, t, tlen) == 0) {
                snprintf(err, errlen, "config: users %s and %s have the same token", u->v[i].name, name);
                goto fail;
            }
        }
        user_t *e = &u->v[u->n++];
        e->name = strdup(name);
        e->token = strdup(t);
        e->token_len = tlen;
        if (!e->name || !e->token) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    u->api.self = u;
    u->api.user_for_token = users_user_for_token;
    if (molt_api_publish(inst, USERS_API_NAME, USERS_API_VERSION, &u->api) != MOLT_OK) {
        snprintf(err, errlen, "could not publish the %s api", USERS_API_NAME);
        goto fail;
    }
    molt_instance_set_data(inst, u);
    json_decref(cfg);
    return MOLT_OK;
fail:
    json_decref(cfg);
    users_free(u);
    return MOLT_ERROR;
}

static void users_fini(molt_instance_t *inst)
{
    users_free(molt_instance_data(inst));
    molt_instance_set_data(inst, NULL);
}

MOLT_PLUGIN(.name = "users", .version = "1.0.0", .init = users_init, .fini = users_fini)
