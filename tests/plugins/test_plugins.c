/*
 * Deliberately broken (and one well-behaved) test plugins. Each is built as
 * its own .so from this file with one TP_* macro defined (tests/plugins/
 * CMakeLists.txt), so every failure mode is a real shared object that moltd
 * really loads.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "molt/plugin.h"

#if defined(TP_FAIL_INIT)
/* init fails with a message the operator must see. */
static int tp_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    (void)inst, (void)config_json;
    snprintf(err, errlen, "database at 10.9.9.9 refused the connection");
    return MOLT_ERROR;
}
static int tp_handle(molt_txn_t *txn, void *data)
{
    (void)data;
    return molt_resp_write(txn, "unreachable\n", 12);
}
MOLT_PLUGIN(.name = "fail_init", .version = "1.0.0", .init = tp_init, .handle = tp_handle)

#elif defined(TP_CRASH_INIT)
/* init dereferences a null pointer. */
static int tp_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    (void)inst, (void)config_json, (void)err, (void)errlen;
    raise(SIGSEGV);
    return MOLT_OK;
}
static int tp_handle(molt_txn_t *txn, void *data)
{
    (void)data;
    return molt_resp_write(txn, "unreachable\n", 12);
}
MOLT_PLUGIN(.name = "crash_init", .version = "1.0.0", .init = tp_init, .handle = tp_handle)

#elif defined(TP_HANG_INIT)
/* init never returns. */
static int tp_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    (void)inst, (void)config_json, (void)err, (void)errlen;
    for (;;)
        pause();
    return MOLT_OK;
}
static int tp_handle(molt_txn_t *txn, void *data)
{
    (void)data;
    return molt_resp_write(txn, "unreachable\n", 12);
}
MOLT_PLUGIN(.name = "hang_init", .version = "1.0.0", .init = tp_init, .handle = tp_handle)

#elif defined(TP_WRONG_ABI)
/* Claims an ABI major this host does not speak. */
static int tp_handle(molt_txn_t *txn, void *data)
{
    (void)data;
    return molt_resp_write(txn, "unreachable\n", 12);
}
static const molt_plugin_t tp_desc = {.abi_major = MOLT_ABI_MAJOR + 1, .abi_minor = 0,
                                      .struct_size = sizeof(molt_plugin_t), .name = "wrong_abi",
                                      .version = "1.0.0", .handle = tp_handle};
const molt_host_api_t *molt_host;
__attribute__((visibility("default"))) const molt_plugin_t *molt_plugin_entry(const molt_host_api_t *h);
__attribute__((visibility("default"))) const molt_plugin_t *molt_plugin_entry(const molt_host_api_t *h)
{
    molt_host = h;
    return &tp_desc;
}

#elif defined(TP_NO_ENTRY)
/* A shared object that is not a molt plugin: no entry symbol. */
__attribute__((visibility("default"))) int tp_something_else(void);
__attribute__((visibility("default"))) int tp_something_else(void)
{
    return 42;
}

#elif defined(TP_BAD_HEALTH)
/* Serves, but its health check fails: a reload's verify must roll back. */
static int tp_health(molt_instance_t *inst, char *err, size_t errlen)
{
    (void)inst;
    snprintf(err, errlen, "disk full");
    return MOLT_ERROR;
}
static int tp_handle(molt_txn_t *txn, void *data)
{
    (void)data;
    return molt_resp_write(txn, "sick\n", 5);
}
MOLT_PLUGIN(.name = "bad_health", .version = "1.0.0", .handle = tp_handle, .health = tp_health)

#elif defined(TP_ECHO)
/* Echoes what it saw, for checking the request path end to end:
 * method, path, query, a header, the body; /echo/fail answers MOLT_ERROR,
 * /echo/crash kills the worker (to test respawn). */
static int tp_handle(molt_txn_t *txn, void *data)
{
    (void)data;
    size_t plen, qlen, blen, hlen;
    const char *path = molt_req_path(txn, &plen);
    const char *query = molt_req_query(txn, &qlen);
    const char *body = molt_req_body(txn, &blen);
    const char *hdr = molt_req_header(txn, "X-Test", &hlen);
    if (plen == 10 && memcmp(path, "/echo/fail", 10) == 0)
        return MOLT_ERROR;
    if (plen == 11 && memcmp(path, "/echo/crash", 11) == 0)
        abort();
    char head[512];
    int n = snprintf(head, sizeof(head), "method=%s path=%.*s query=%.*s x-test=%.*s body=%zu\n",
                     molt_req_method(txn), (int)plen, path, (int)(query ? qlen : 0), query ? query : "",
                     (int)(hdr ? hlen : 0), hdr ? hdr : "", blen);
    molt_resp_add_header(txn, "Content-Type", "text/plain");
    molt_resp_write(txn, head, (size_t)n);
    if (body)
        molt_resp_write(txn, body, blen);
    return MOLT_OK;
}
MOLT_PLUGIN(.name = "echo", .version = "1.2.3", .handle = tp_handle)

#else
#error "define one TP_* macro"
#endif
