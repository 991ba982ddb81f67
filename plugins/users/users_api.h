/*
 * The API that the users plugin publishes for the plugins that depend on it
 * (molt_api_publish / molt_api_lookup). A dependent plugin declares
 *     {.name = "users", .min_version = "1.0.0"}
 * in its deps, so that the users instance is initialised before it and
 * finalised after it, and looks the API up in its init:
 *     const users_api_t *api = molt_api_lookup(inst, "users", USERS_API_NAME, USERS_API_VERSION);
 *     const char *who = api->user_for_token(api->self, token);
 */
#ifndef MOLT_PLUGINS_USERS_API_H
#define MOLT_PLUGINS_USERS_API_H

#define USERS_API_NAME "users"
#define USERS_API_VERSION 1u

typedef struct users_api {
    /* The provider's instance data: pass it back as `self`. */
    const void *self;
    /* The name of the user whose token is `token` (a NUL-terminated string),
     * or NULL if none. The name stays valid until the provider's fini. The
     * comparison takes the same time whichever user, if any, matches. */
    const char *(*user_for_token)(const void *self, const char *token);
} users_api_t;

#endif
