/*
 * ping: an example molt plugin, written against the installed SDK only
 * (<molt/plugin.h>, found with `pkg-config --cflags molt-plugin`) and built
 * out of tree by the Makefile next to it. docs/plugins.md walks through it.
 *
 * - Its request handler answers "pong N\n" (text/plain), N counting the
 *   requests this instance has answered in this worker.
 * - Two hook callbacks share a per-transaction context (txn_ctx_size): "seen"
 *   on request_headers notes that the request went past this instance;
 *   "mark" on response_headers then adds "X-Ping-Seen: <instance name>" to
 *   the response, whichever instance produced it.
 * - It takes no config: init refuses anything but an empty object, to show
 *   how init reports an error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <molt/plugin.h>

typedef struct ping {
    molt_instance_t *inst;
    unsigned long long answered;
} ping_t;

/* Per-transaction context: txn_ctx_size bytes, zeroed by the host for every
 * transaction and freed by it. */
typedef struct ping_txn {
    int seen;
} ping_txn_t;

static int ping_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    if (strcmp(config_json, "{}") != 0) {
        snprintf(err, errlen, "ping takes no config, got %s", config_json);
        return MOLT_ERROR;
    }
    ping_t *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return MOLT_ERROR;
    }
    p->inst = inst;
    molt_instance_set_data(inst, p);
    molt_log_instance(inst, MOLT_PLOG_INFO, "ready to answer pings");
    return MOLT_OK;
}

static void ping_fini(molt_instance_t *inst)
{
    free(molt_instance_data(inst));
}

static int ping_handle(molt_txn_t *txn, void *data)
{
    ping_t *p = data;
    char body[64];
    int n = snprintf(body, sizeof(body), "pong %llu\n", ++p->answered);
    if (molt_resp_add_header(txn, "Content-Type", "text/plain") != MOLT_OK)
        return MOLT_ERROR;
    return molt_resp_write(txn, body, (size_t)n);
}

static int ping_seen(molt_txn_t *txn, void *data)
{
    (void)data;
    ping_txn_t *t = molt_txn_ctx(txn); /* NULL only if txn_ctx_size were 0 */
    if (t)
        t->seen = 1;
    return MOLT_CONTINUE;
}

static int ping_mark(molt_txn_t *txn, void *data)
{
    const ping_t *p = data;
    const ping_txn_t *t = molt_txn_ctx(txn);
    if (t && t->seen && molt_resp_add_header(txn, "X-Ping-Seen", molt_instance_name(p->inst)) != MOLT_OK)
        return MOLT_ERROR;
    return MOLT_CONTINUE;
}

static int ping_health(molt_instance_t *inst, char *err, size_t errlen)
{
    (void)inst, (void)err, (void)errlen;
    return MOLT_OK;
}

static const molt_hook_t ping_hooks[] = {
    {.id = MOLT_HOOK_REQUEST_HEADERS, .priority = 0, .name = "seen", .fn.txn = ping_seen},
    /* late, so that it sees the headers other callbacks added */
    {.id = MOLT_HOOK_RESPONSE_HEADERS, .priority = 100, .name = "mark", .fn.txn = ping_mark},
};

MOLT_PLUGIN(.name = "ping", .version = "0.1.0", .init = ping_init, .fini = ping_fini, .handle = ping_handle,
            .hooks = ping_hooks, .nhooks = sizeof(ping_hooks) / sizeof(ping_hooks[0]),
            .txn_ctx_size = sizeof(ping_txn_t), .health = ping_health)
