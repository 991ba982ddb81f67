/*
 * Deliberately broken (and one well-behaved) test plugins. Each is built as
 * its own .so from this file with one TP_* macro defined (tests/plugins/
 * CMakeLists.txt), so every failure mode is a real shared object that moltd
 * really loads.
 */
#include <signal.h>
#include <stdint.h>
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

#elif defined(TP_SHORT_DESC)
/* Claims a descriptor shorter than ABI 1.0's: the host must not read past it. */
static const molt_plugin_t tp_desc = {.abi_major = MOLT_ABI_MAJOR, .abi_minor = 0, .struct_size = 64,
                                      .name = "short_desc", .version = "1.0.0"};
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

#elif defined(TP_SLOTS)
/*
 * Reserves named slots in init, in the order of its config's "txn" and
 * "session" lists, and shows their indexes: "txn a=0 b=1 session s=0". A
 * transaction slot holds a value for one request; the first session slot
 * counts the requests of the connection ("count=N").
 */
#include <jansson.h>

typedef struct slots {
    char names[8][32];
    int idx[8];
    int level[8];
    int n;
} slots_t;

static int tp_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *cfg = json_loads(config_json, 0, &jerr);
    slots_t *s = calloc(1, sizeof(*s));
    if (!cfg || !s) {
        snprintf(err, errlen, "bad config");
        goto fail;
    }
    const char *keys[] = {"txn", "session"};
    for (int l = 0; l < 2; l++) {
        json_t *arr = json_object_get(cfg, keys[l]);
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v)
        {
            if (s->n == 8 || !json_is_string(v))
                continue;
            snprintf(s->names[s->n], sizeof(s->names[0]), "%s", json_string_value(v));
            s->level[s->n] = l ? MOLT_SLOT_SESSION : MOLT_SLOT_TXN;
            s->idx[s->n] = molt_slot_reserve(inst, s->level[s->n], s->names[s->n]);
            if (s->idx[s->n] < 0) {
                snprintf(err, errlen, "slot %s refused", s->names[s->n]);
                goto fail;
            }
            s->n++;
        }
    }
    molt_instance_set_data(inst, s);
    json_decref(cfg);
    return MOLT_OK;
fail:
    json_decref(cfg);
    free(s);
    return MOLT_ERROR;
}
static void tp_fini(molt_instance_t *inst)
{
    free(molt_instance_data(inst));
}
static int tp_handle(molt_txn_t *txn, void *data)
{
    slots_t *s = data;
    char out[512];
    int n = snprintf(out, sizeof(out), "txn");
    for (int i = 0; i < s->n; i++)
        if (s->level[i] == MOLT_SLOT_TXN)
            n += snprintf(out + n, sizeof(out) - n, " %s=%d", s->names[i], s->idx[i]);
    n += snprintf(out + n, sizeof(out) - n, " session");
    int first_ses = -1, first_txn = -1;
    for (int i = 0; i < s->n; i++) {
        if (s->level[i] == MOLT_SLOT_SESSION) {
            n += snprintf(out + n, sizeof(out) - n, " %s=%d", s->names[i], s->idx[i]);
            if (first_ses < 0)
                first_ses = s->idx[i];
        } else if (first_txn < 0) {
            first_txn = s->idx[i];
        }
    }
    if (first_txn >= 0) {
        /* empty at the start of every transaction; holds what is set in it */
        int fresh = molt_txn_slot_get(txn, first_txn) == NULL;
        molt_txn_slot_set(txn, first_txn, s);
        n += snprintf(out + n, sizeof(out) - n, " txn_fresh=%s txn_kept=%s", fresh ? "yes" : "no",
                      molt_txn_slot_get(txn, first_txn) == s ? "yes" : "no");
    }
    if (first_ses >= 0) {
        molt_session_t *ses = molt_txn_session(txn);
        uintptr_t count = (uintptr_t)molt_session_slot_get(ses, first_ses) + 1;
        molt_session_slot_set(ses, first_ses, (void *)count);
        n += snprintf(out + n, sizeof(out) - n, " count=%lu", (unsigned long)count);
    }
    n += snprintf(out + n, sizeof(out) - n, "\n");
    return molt_resp_write(txn, out, (size_t)n);
}
MOLT_PLUGIN(.name = "slots", .version = "1.0.0", .init = tp_init, .fini = tp_fini, .handle = tp_handle)

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
