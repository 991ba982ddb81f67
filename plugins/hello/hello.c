/*
 * hello: answers every request routed to it with a configured body.
 *
 * config:
 *   body          string, default "hello\n"
 *   status        integer 100-599, default 200
 *   content_type  string, default "text/plain"
 *   chunk_size    integer >= 0, default 0: when set, the body is streamed in
 *                 chunks of this size (a chunked response in HTTP/1.1)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "molt/plugin.h"

typedef struct hello {
    char *body;
    size_t body_len;
    int status;
    char *content_type;
    size_t chunk_size;
} hello_t;

static void hello_free(hello_t *h)
{
    if (!h)
        return;
    free(h->body);
    free(h->content_type);
    free(h);
}

static int hello_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *cfg = json_loads(config_json, 0, &jerr);
    hello_t *h = calloc(1, sizeof(*h));
    const char *body = "hello\n", *ctype = "text/plain";
    json_int_t status = 200, chunk = 0;
    if (!cfg || !h) {
        snprintf(err, errlen, "%s", cfg ? "out of memory" : jerr.text);
        goto fail;
    }
    if (json_unpack_ex(cfg, &jerr, JSON_STRICT, "{s?s,s?I,s?s,s?I}", "body", &body, "status", &status,
                       "content_type", &ctype, "chunk_size", &chunk) < 0) {
        snprintf(err, errlen, "config: %s", jerr.text);
        goto fail;
    }
    if (status < 100 || status > 599) {
        snprintf(err, errlen, "config: status %lld is not between 100 and 599", (long long)status);
        goto fail;
    }
    if (chunk < 0) {
        snprintf(err, errlen, "config: chunk_size must not be negative");
        goto fail;
    }
    h->body = strdup(body);
    h->content_type = strdup(ctype);
    if (!h->body || !h->content_type) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    h->body_len = strlen(body);
    h->status = (int)status;
    h->chunk_size = (size_t)chunk;
    molt_instance_set_data(inst, h);
    json_decref(cfg);
    return MOLT_OK;
fail:
    json_decref(cfg);
    hello_free(h);
    return MOLT_ERROR;
}

static void hello_fini(molt_instance_t *inst)
{
    hello_free(molt_instance_data(inst));
}

static int hello_handle(molt_txn_t *txn, void *data)
{
    const hello_t *h = data;
    if (molt_resp_set_status(txn, h->status) != MOLT_OK ||
        molt_resp_add_header(txn, "Content-Type", h->content_type) != MOLT_OK)
        return MOLT_ERROR;
    if (!h->chunk_size)
        return molt_resp_write(txn, h->body, h->body_len);
    for (size_t off = 0; off < h->body_len; off += h->chunk_size) {
        size_t n = h->body_len - off < h->chunk_size ? h->body_len - off : h->chunk_size;
        if (molt_resp_write(txn, h->body + off, n) != MOLT_OK || molt_resp_flush(txn) != MOLT_OK)
            return MOLT_ERROR;
    }
    return MOLT_OK;
}

MOLT_PLUGIN(.name = "hello", .version = "1.0.0", .init = hello_init, .fini = hello_fini,
            .handle = hello_handle)
