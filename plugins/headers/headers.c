/*
 * headers: adds configured headers to every response, whoever produced it (a
 * handler, the host's own 404, a hook that answered early such as auth's
 * 401), from a RESPONSE_HEADERS callback.
 *
 * config:
 *   add   object of header name -> value, required, not empty. Added in this
 *         order, after the headers the response already has (nothing is
 *         replaced). Names must be RFC 9110 tokens; values must not contain
 *         control characters other than tab; Content-Length,
 *         Transfer-Encoding, Connection and Date belong to molt. The host
 *         refuses such headers on every response, so init refuses them first.
 *
 * The callback is "add" on response_headers, priority 0 (the instance's
 * "priority" in the molt config overrides it).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "molt/plugin.h"

typedef struct hdr {
    char *name;
    char *value;
} hdr_t;

typedef struct headers {
    hdr_t *v;
    size_t n;
} headers_t;

static void headers_free(headers_t *hs)
{
    if (!hs)
        return;
    for (size_t i = 0; i < hs->n; i++) {
        free(hs->v[i].name);
        free(hs->v[i].value);
    }
    free(hs->v);
    free(hs);
}

/* RFC 9110 field-name: a token. The same rule the host applies. */
static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 32 || c >= 127 || strchr("\"(),/:;<=>?@[\\]{}", c))
            return false;
    }
    return true;
}

/* A field value without CR, LF, NUL or any other control character but tab. */
static bool is_field_value(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 32 && c != '\t') || c == 127)
            return false;
    }
    return true;
}

static bool is_host_header(const char *name)
{
    static const char *const host[] = {"Content-Length", "Transfer-Encoding", "Connection", "Date"};
    for (size_t i = 0; i < sizeof(host) / sizeof(host[0]); i++)
        if (strcasecmp(name, host[i]) == 0)
            return true;
    return false;
}

static int headers_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *cfg = json_loads(config_json, JSON_REJECT_DUPLICATES, &jerr);
    headers_t *hs = calloc(1, sizeof(*hs));
    json_t *add = NULL;
    if (!cfg || !hs) {
        snprintf(err, errlen, "%s", cfg ? "out of memory" : jerr.text);
        goto fail;
    }
    if (json_unpack_ex(cfg, &jerr, JSON_STRICT, "{s:o}", "add", &add) < 0) {
        snprintf(err, errlen, "config: %s", jerr.text);
        goto fail;
    }
    if (!json_is_object(add) || json_object_size(add) == 0) {
        snprintf(err, errlen, "config: add must be a non-empty object of header name -> value");
        goto fail;
    }
    hs->v = calloc(json_object_size(add), sizeof(*hs->v));
    if (!hs->v) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    const char *name;
    json_t *val;
    json_object_foreach(add, name, val)
    {
        if (!json_is_string(val)) {
            snprintf(err, errlen, "config: add.%s must be a string", name);
            goto fail;
        }
        if (!is_token(name)) {
            snprintf(err, errlen, "config: add: \"%s\" is not a valid header name (RFC 9110 token)", name);
            goto fail;
        }
        if (is_host_header(name)) {
            snprintf(err, errlen, "config: add: %s is set by molt itself and cannot be added", name);
            goto fail;
        }
        if (!is_field_value(json_string_value(val), json_string_length(val))) {
            snprintf(err, errlen, "config: add.%s: the value contains a control character", name);
            goto fail;
        }
        hdr_t *h = &hs->v[hs->n++];
        h->name = strdup(name);
        h->value = strdup(json_string_value(val));
        if (!h->name || !h->value) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    molt_instance_set_data(inst, hs);
    json_decref(cfg);
    return MOLT_OK;
fail:
    json_decref(cfg);
    headers_free(hs);
    return MOLT_ERROR;
}

static void headers_fini(molt_instance_t *inst)
{
    headers_free(molt_instance_data(inst));
    molt_instance_set_data(inst, NULL);
}

static int headers_add(molt_txn_t *txn, void *data)
{
    const headers_t *hs = data;
    for (size_t i = 0; i < hs->n; i++)
        if (molt_resp_add_header(txn, hs->v[i].name, hs->v[i].value) != MOLT_OK)
            return MOLT_ERROR;
    return MOLT_OK;
}

static const molt_hook_t headers_hooks[] = {
    {.id = MOLT_HOOK_RESPONSE_HEADERS, .priority = 0, .name = "add", .fn.txn = headers_add},
};

MOLT_PLUGIN(.name = "headers", .version = "1.0.0", .init = headers_init, .fini = headers_fini,
            .hooks = headers_hooks, .nhooks = sizeof(headers_hooks) / sizeof(headers_hooks[0]))
