/*
 * The host API: the function table plugins call (include/molt/plugin.h).
 * Every function here validates what a plugin hands it; a plugin's mistake
 * gets MOLT_ERROR and a log line naming the instance, never a broken response.
 */
#include "worker/host.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "shared/log.h"
#include "worker/http.h"
#include "worker/plugins.h"
#include "worker/txn.h"

struct molt_instance *wrk_host_current;
unsigned char *wrk_host_ctx_block;

static const char *h_instance_name(const molt_instance_t *inst)
{
    return inst->cfg->name;
}

static void *h_instance_data(const molt_instance_t *inst)
{
    return inst->data;
}

static void h_instance_set_data(molt_instance_t *inst, void *data)
{
    inst->data = data;
}

static void h_vlog(const molt_instance_t *inst, int level, const char *fmt, va_list ap)
{
    char prefix[96];
    if (level < MOLT_PLOG_DEBUG)
        level = MOLT_PLOG_DEBUG;
    if (level > MOLT_PLOG_ERROR)
        level = MOLT_PLOG_ERROR;
    /* molt_plog_level_t values match molt_log_level_t's first five */
    snprintf(prefix, sizeof(prefix), "plugin %s", inst ? inst->cfg->name : "?");
    molt_log_prefixed((molt_log_level_t)level, prefix, fmt, ap);
}

static const char *h_req_method(const molt_txn_t *txn)
{
    return txn->method;
}

static const char *h_req_path(const molt_txn_t *txn, size_t *len)
{
    if (len)
        *len = txn->path_len;
    return txn->path;
}

static const char *h_req_query(const molt_txn_t *txn, size_t *len)
{
    if (len)
        *len = txn->query ? txn->query_len : 0;
    return txn->query;
}

static const char *h_req_header(const molt_txn_t *txn, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i < txn->nheaders; i++) {
        const wrk_header_t *h = &txn->headers[i];
        if (h->name_len == nlen && strncasecmp(h->name, name, nlen) == 0) {
            if (len)
                *len = h->value_len;
            return h->value;
        }
    }
    if (len)
        *len = 0;
    return NULL;
}

static const char *h_req_body(const molt_txn_t *txn, size_t *len)
{
    if (len)
        *len = txn->body ? txn->body_len : 0;
    return txn->body;
}

static int h_req_version(const molt_txn_t *txn)
{
    return txn->version;
}

static molt_instance_t *h_txn_instance(const molt_txn_t *txn)
{
    return txn->instance;
}

static int h_resp_set_status(molt_txn_t *txn, int status)
{
    if (status < 100 || status > 599 || txn->streaming)
        return MOLT_ERROR;
    txn->status = status;
    return MOLT_OK;
}

/* RFC 9110 token characters. */
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

static bool is_field_value(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 32 && c != '\t') || c == 127)
            return false;
    }
    return true;
}

/* Headers that the host computes itself; a plugin setting them would produce
 * a response that contradicts its own framing. */
static const char *const host_headers[] = {"Content-Length", "Transfer-Encoding", "Connection", "Date"};

static int h_resp_add_header(molt_txn_t *txn, const char *name, const char *value)
{
    const char *who = wrk_host_current ? wrk_host_current->cfg->name : "?";
    if (!name || !value || !is_token(name) || !is_field_value(value)) {
        molt_warn("plugin %s: refused response header \"%s\": invalid name or value", who,
                  name ? name : "(null)");
        return MOLT_ERROR;
    }
    for (size_t i = 0; i < sizeof(host_headers) / sizeof(host_headers[0]); i++) {
        if (strcasecmp(name, host_headers[i]) == 0) {
            molt_warn("plugin %s: refused response header \"%s\": molt sets it", who, name);
            return MOLT_ERROR;
        }
    }
    if (txn->streaming)
        return MOLT_ERROR;
    if (molt_buf_printf(&txn->resp_headers, "%s: %s\r\n", name, value) < 0)
        return MOLT_ERROR;
    return MOLT_OK;
}

static int h_resp_write(molt_txn_t *txn, const void *data, size_t len)
{
    return molt_buf_append(&txn->resp_body, data, len) < 0 ? MOLT_ERROR : MOLT_OK;
}

static int h_resp_flush(molt_txn_t *txn)
{
    return wrk_http_txn_flush(txn) < 0 ? MOLT_ERROR : MOLT_OK;
}

static void *h_txn_ctx(molt_txn_t *txn)
{
    (void)txn;
    struct molt_instance *inst = wrk_host_current;
    if (!inst || !inst->dso->desc.txn_ctx_size || !wrk_host_ctx_block)
        return NULL;
    return wrk_host_ctx_block + inst->ctx_off;
}

const molt_host_api_t wrk_host_api = {
    .abi_major = MOLT_ABI_MAJOR,
    .abi_minor = MOLT_ABI_MINOR,
    .struct_size = sizeof(molt_host_api_t),
    .instance_name = h_instance_name,
    .instance_data = h_instance_data,
    .instance_set_data = h_instance_set_data,
    .vlog = h_vlog,
    .req_method = h_req_method,
    .req_path = h_req_path,
    .req_query = h_req_query,
    .req_header = h_req_header,
    .req_body = h_req_body,
    .req_version = h_req_version,
    .txn_instance = h_txn_instance,
    .resp_set_status = h_resp_set_status,
    .resp_add_header = h_resp_add_header,
    .resp_write = h_resp_write,
    .resp_flush = h_resp_flush,
    .txn_ctx = h_txn_ctx,
};
