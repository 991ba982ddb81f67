/*
 * Test plugins for the plugin ABI (integration theme "abi",
 * tests/integration/test_abi.c). Like test_plugins.c, each .so is built from
 * this file with one TP_* macro defined (tests/plugins/CMakeLists.txt):
 *
 *   tp_order        hooks on every transaction level and on sessions, making the
 *                   order of callbacks, per-transaction coordination, contexts
 *                   and session data visible in response headers (see below)
 *   tp_provider     publishes the api "greeting" version 2
 *   tp_consumer     depends on tp_provider >= 1.0.0, looks the api up in init
 *   tp_consumer_new the same, but needs tp_provider >= 9.0.0 (too old)
 *   tp_cycle_a/b    depend on each other
 *   tp_bad_hook     a hook id out of range
 *   tp_singleton    MOLT_PLUGIN_SINGLETON
 *
 * The dependency plugins append "init NAME", "start NAME", "stop NAME" and
 * "fini NAME" (instance names) to the file named by config "log", so that a
 * test can see the order of init, worker_start, worker_stop and fini.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "molt/plugin.h"

/* Appends one line to `path` (no-op without a path). */
static void tp_log(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3), unused));
static void tp_log(const char *path, const char *fmt, ...)
{
    if (!path || !path[0])
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (write(fd, line, (size_t)n) != n)
        (void)0; /* the test notices a missing line */
    close(fd);
}

#if defined(TP_ORDER)
/*
 * config: {"tag": "a", "control": false}
 *
 * Every callback adds "X-Trace: HOOK:TAG" to the response (txn_start,
 * request_headers, response_headers). Request headers drive it:
 *
 *   X-Disable: INST         molt_txn_disable_instance(INST)          }  at txn_start, by
 *   X-Off: INST/CALLBACK    molt_txn_hook_enable(..., 0) on its hook }  the instance whose
 *   X-Prio: INST=N          molt_txn_hook_priority(response_headers) }  config has
 *                                                                      "control": true
 *   X-Done: TAG     that instance answers 403 "stopped by TAG", MOLT_DONE (request_headers)
 *   X-Fail: TAG     that instance returns MOLT_ERROR (request_headers)
 *   X-List: TAG     that instance adds X-Hooks (request_headers) and X-Hooks-Resp
 *                   (response_headers): "inst:callback:prio:enabled,..." from
 *                   molt_txn_hook_list, and X-Hooks-N: the total it returned
 *   X-Ptr-Twice     a second molt_txn_set_ptr in request_headers (releases the first)
 *
 * A control call that fails adds X-Ctl-Err-TAG: disable|off|prio.
 *
 * Per-transaction state: request_headers checks that its 64-byte context is
 * all zero (X-Ctx-Zero-TAG: yes|no|null) and fills it with the tag's first
 * character; response_headers checks it is still filled (X-Ctx-Kept-TAG).
 * txn_start stores a malloc'd pointer with molt_txn_set_ptr; response_headers
 * checks molt_txn_get_ptr (X-Ptr-TAG: yes|no) and reports how many were
 * released so far (X-Released-TAG). txn_end counts (X-Ends-TAG, reported on
 * later responses) and checks the pointer is still there (X-End-Noptr-TAG:
 * how many times it was not).
 *
 * Sessions: X-Session-TAG: "ID PEER", X-Opens-TAG and X-Closes-TAG: the
 * session_open / session_close callbacks run so far in this worker.
 */
#define ORDER_CTX 64
#define ORDER_MAGIC 0x0bde7a11u

typedef struct order {
    char tag[32];
    bool control;
    unsigned long ends, end_noptr, released, opens, closes;
    unsigned long late_accepted; /* response edits the host took at txn_end (must stay 0) */
} order_t;

typedef struct order_ptr {
    unsigned magic;
    order_t *self;
    char scratch[100];
} order_ptr_t;

/* A request header as a C string in buf; false if absent. */
static bool req_hdr(molt_txn_t *txn, const char *name, char *buf, size_t len)
{
    size_t n;
    const char *v = molt_req_header(txn, name, &n);
    if (!v)
        return false;
    snprintf(buf, len, "%.*s", (int)n, v);
    return true;
}

/* Adds "PREFIX-TAG: value". */
static void add_tagged(molt_txn_t *txn, const order_t *o, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add_tagged(molt_txn_t *txn, const order_t *o, const char *prefix, const char *fmt, ...)
{
    char name[96], value[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof(value), fmt, ap);
    va_end(ap);
    snprintf(name, sizeof(name), "%s-%s", prefix, o->tag);
    molt_resp_add_header(txn, name, value);
}

static void trace(molt_txn_t *txn, const order_t *o, const char *hook)
{
    char v[96];
    snprintf(v, sizeof(v), "%s:%s", hook, o->tag);
    molt_resp_add_header(txn, "X-Trace", v);
}

static void ptr_release(void *p)
{
    order_ptr_t *op = p;
    if (op->magic == ORDER_MAGIC)
        op->self->released++;
    op->magic = 0;
    free(op);
}

static int set_ptr(molt_txn_t *txn, order_t *o)
{
    order_ptr_t *p = calloc(1, sizeof(*p));
    if (!p)
        return MOLT_ERROR;
    p->magic = ORDER_MAGIC;
    p->self = o;
    snprintf(p->scratch, sizeof(p->scratch), "ptr of %s", o->tag);
    if (molt_txn_set_ptr(txn, p, ptr_release) != MOLT_OK) {
        free(p);
        return MOLT_ERROR;
    }
    return MOLT_OK;
}

static bool ptr_ok(molt_txn_t *txn, const order_t *o)
{
    const order_ptr_t *p = molt_txn_get_ptr(txn);
    return p && p->magic == ORDER_MAGIC && p->self == o;
}

/* "inst:callback:prio:enabled,..." of one hook into a response header. */
static void list_hook(molt_txn_t *txn, molt_hook_id_t hook, const char *header)
{
    molt_cb_info_t out[16];
    int total = molt_txn_hook_list(txn, hook, out, 16);
    int count_only = molt_txn_hook_list(txn, hook, NULL, 0);
    char buf[1024] = "", nbuf[32];
    size_t off = 0;
    for (int i = 0; i < total && i < 16; i++)
        off += (size_t)snprintf(buf + off, off < sizeof(buf) ? sizeof(buf) - off : 0, "%s%s:%s:%d:%d",
                                i ? "," : "", out[i].instance, out[i].callback, out[i].priority, out[i].enabled);
    molt_resp_add_header(txn, header, buf);
    snprintf(nbuf, sizeof(nbuf), "%d %d", total, count_only);
    molt_resp_add_header(txn, "X-Hooks-N", nbuf);
}

static const molt_hook_id_t txn_hooks[] = {MOLT_HOOK_TXN_START, MOLT_HOOK_REQUEST_HEADERS,
                                           MOLT_HOOK_RESPONSE_HEADERS, MOLT_HOOK_TXN_END};

static void apply_controls(molt_txn_t *txn, const order_t *o)
{
    char v[128];
    if (req_hdr(txn, "X-Disable", v, sizeof(v)) && molt_txn_disable_instance(txn, v) != MOLT_OK)
        add_tagged(txn, o, "X-Ctl-Err", "disable");
    if (req_hdr(txn, "X-Off", v, sizeof(v))) {
        char *slash = strchr(v, '/');
        bool ok = false;
        if (slash) {
            *slash = '\0';
            for (size_t i = 0; i < sizeof(txn_hooks) / sizeof(txn_hooks[0]); i++)
                ok |= molt_txn_hook_enable(txn, txn_hooks[i], v, slash + 1, 0) == MOLT_OK;
        }
        if (!ok)
            add_tagged(txn, o, "X-Ctl-Err", "off");
    }
    if (req_hdr(txn, "X-Prio", v, sizeof(v))) {
        char *eq = strchr(v, '=');
        bool ok = false;
        if (eq) {
            *eq = '\0';
            ok = molt_txn_hook_priority(txn, MOLT_HOOK_RESPONSE_HEADERS, v, NULL, atoi(eq + 1)) == MOLT_OK;
        }
        if (!ok)
            add_tagged(txn, o, "X-Ctl-Err", "prio");
    }
}

static bool tag_is(molt_txn_t *txn, const char *header, const order_t *o)
{
    char v[64];
    return req_hdr(txn, header, v, sizeof(v)) && strcmp(v, o->tag) == 0;
}

static int on_txn_start(molt_txn_t *txn, void *data)
{
    order_t *o = data;
    trace(txn, o, "txn_start");
    if (o->control)
        apply_controls(txn, o);
    return set_ptr(txn, o);
}

static int on_request_headers(molt_txn_t *txn, void *data)
{
    order_t *o = data;
    trace(txn, o, "request_headers");
    unsigned char *ctx = molt_txn_ctx(txn);
    if (!ctx) {
        add_tagged(txn, o, "X-Ctx-Zero", "null");
    } else {
        bool zero = true;
        for (size_t i = 0; i < ORDER_CTX; i++)
            zero &= ctx[i] == 0;
        add_tagged(txn, o, "X-Ctx-Zero", "%s", zero ? "yes" : "no");
        memset(ctx, o->tag[0], ORDER_CTX);
    }
    if (molt_req_header(txn, "X-Ptr-Twice", NULL) && set_ptr(txn, o) != MOLT_OK)
        return MOLT_ERROR;
    if (tag_is(txn, "X-List", o))
        list_hook(txn, MOLT_HOOK_REQUEST_HEADERS, "X-Hooks");
    if (tag_is(txn, "X-Fail", o))
        return MOLT_ERROR;
    if (tag_is(txn, "X-Done", o)) {
        char body[64];
        int n = snprintf(body, sizeof(body), "stopped by %s", o->tag);
        molt_resp_set_status(txn, 403);
        molt_resp_write(txn, body, (size_t)n);
        return MOLT_DONE;
    }
    return MOLT_CONTINUE;
}

static int on_response_headers(molt_txn_t *txn, void *data)
{
    order_t *o = data;
    trace(txn, o, "response_headers");
    const unsigned char *ctx = molt_txn_ctx(txn);
    bool kept = ctx != NULL;
    for (size_t i = 0; kept && i < ORDER_CTX; i++)
        kept = ctx[i] == (unsigned char)o->tag[0];
    add_tagged(txn, o, "X-Ctx-Kept", "%s", kept ? "yes" : "no");
    add_tagged(txn, o, "X-Ptr", "%s", ptr_ok(txn, o) ? "yes" : "no");
    add_tagged(txn, o, "X-Released", "%lu", o->released);
    add_tagged(txn, o, "X-Ends", "%lu", o->ends);
    add_tagged(txn, o, "X-Late-Accepted", "%lu", o->late_accepted);
    add_tagged(txn, o, "X-End-Noptr", "%lu", o->end_noptr);
    molt_session_t *ses = molt_txn_session(txn);
    if (ses)
        add_tagged(txn, o, "X-Session", "%llu %s", (unsigned long long)molt_session_id(ses),
                   molt_session_peer(ses));
    add_tagged(txn, o, "X-Opens", "%lu", o->opens);
    add_tagged(txn, o, "X-Closes", "%lu", o->closes);
    if (tag_is(txn, "X-List", o))
        list_hook(txn, MOLT_HOOK_RESPONSE_HEADERS, "X-Hooks-Resp");
    return MOLT_CONTINUE;
}

static int on_txn_end(molt_txn_t *txn, void *data)
{
    order_t *o = data;
    o->ends++;
    if (!ptr_ok(txn, o))
        o->end_noptr++;
    /* The response is complete here: every edit must be refused. */
    o->late_accepted += molt_resp_add_header(txn, "X-Late", "1") == MOLT_OK;
    o->late_accepted += molt_resp_set_status(txn, 299) == MOLT_OK;
    o->late_accepted += molt_resp_write(txn, "LATE", 4) == MOLT_OK;
    return MOLT_CONTINUE;
}

static int on_session_open(molt_session_t *ses, void *data)
{
    (void)ses;
    ((order_t *)data)->opens++;
    return MOLT_CONTINUE;
}

static int on_session_close(molt_session_t *ses, void *data)
{
    (void)ses;
    ((order_t *)data)->closes++;
    return MOLT_CONTINUE;
}

static int order_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *cfg = json_loads(config_json, 0, &jerr);
    const char *tag = NULL;
    int control = 0;
    if (!cfg) {
        snprintf(err, errlen, "config: %s", jerr.text);
        return MOLT_ERROR;
    }
    if (json_unpack_ex(cfg, &jerr, JSON_STRICT, "{s:s,s?b}", "tag", &tag, "control", &control) < 0) {
        snprintf(err, errlen, "config: %s", jerr.text);
        json_decref(cfg);
        return MOLT_ERROR;
    }
    order_t *o = calloc(1, sizeof(*o));
    if (!o) {
        json_decref(cfg);
        snprintf(err, errlen, "out of memory");
        return MOLT_ERROR;
    }
    snprintf(o->tag, sizeof(o->tag), "%s", tag);
    o->control = control != 0;
    json_decref(cfg);
    molt_instance_set_data(inst, o);
    return MOLT_OK;
}

static void order_fini(molt_instance_t *inst)
{
    free(molt_instance_data(inst));
}

static const molt_hook_t order_hooks[] = {
    {.id = MOLT_HOOK_TXN_START, .priority = 0, .fn.txn = on_txn_start},
    {.id = MOLT_HOOK_REQUEST_HEADERS, .priority = 0, .fn.txn = on_request_headers},
    /* named: per-callback control addresses it as "resp_trace" */
    {.id = MOLT_HOOK_RESPONSE_HEADERS, .priority = 0, .name = "resp_trace", .fn.txn = on_response_headers},
    {.id = MOLT_HOOK_TXN_END, .priority = 0, .fn.txn = on_txn_end},
    {.id = MOLT_HOOK_SESSION_OPEN, .priority = 0, .fn.session = on_session_open},
    {.id = MOLT_HOOK_SESSION_CLOSE, .priority = 0, .fn.session = on_session_close},
};

MOLT_PLUGIN(.name = "tp_order", .version = "1.0.0", .init = order_init, .fini = order_fini,
            .hooks = order_hooks, .nhooks = sizeof(order_hooks) / sizeof(order_hooks[0]),
            .txn_ctx_size = ORDER_CTX)

#elif defined(TP_PROVIDER) || defined(TP_CONSUMER) || defined(TP_CONSUMER_NEW) || defined(TP_CYCLE_A) ||  \
    defined(TP_CYCLE_B)
/* ---- dependencies: a recorder of init/start/stop/fini shared by all of them ---- */

/* What tp_provider publishes as "greeting", version 2. */
typedef struct greeting_api {
    const char *(*greet)(const struct greeting_api *api);
    char text[128];
} greeting_api_t;

typedef struct rec {
    char log[512];
    char name[80];
    greeting_api_t *api;            /* provider: what it published */
    const greeting_api_t *greeting; /* consumer: what it found */
} rec_t;

static void rec_free(rec_t *r)
{
    if (r)
        free(r->api);
    free(r);
}

static const char *greet(const greeting_api_t *api)
{
    return api->text;
}

/*
 * Parses config {"log": PATH, "greeting": TEXT, "provider": NAME, "api_min": N}
 * (every key optional) and, by plugin: publishes (provider) or looks up
 * (consumer) the api.
 */
static int rec_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *cfg = json_loads(config_json, 0, &jerr);
    const char *log = "", *greeting = "hello from provider", *provider = "tp_provider";
    json_int_t api_min = 2;
    rec_t *r = calloc(1, sizeof(*r));
    if (!cfg || !r) {
        snprintf(err, errlen, "%s", cfg ? "out of memory" : jerr.text);
        goto fail;
    }
    if (json_unpack_ex(cfg, &jerr, JSON_STRICT, "{s?s,s?s,s?s,s?I}", "log", &log, "greeting", &greeting,
                       "provider", &provider, "api_min", &api_min) < 0) {
        snprintf(err, errlen, "config: %s", jerr.text);
        goto fail;
    }
    snprintf(r->log, sizeof(r->log), "%s", log);
    snprintf(r->name, sizeof(r->name), "%s", molt_instance_name(inst));
#if defined(TP_PROVIDER)
    (void)provider, (void)api_min;
    r->api = calloc(1, sizeof(*r->api));
    if (!r->api) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    r->api->greet = greet;
    snprintf(r->api->text, sizeof(r->api->text), "%s", greeting);
    if (molt_api_publish(inst, "greeting", 2, r->api) != MOLT_OK) {
        snprintf(err, errlen, "molt_api_publish(greeting) failed");
        goto fail;
    }
    if (molt_api_publish(inst, "greeting", 3, r->api) == MOLT_OK) {
        snprintf(err, errlen, "molt_api_publish accepted \"greeting\" a second time");
        goto fail;
    }
#elif defined(TP_CONSUMER) || defined(TP_CONSUMER_NEW)
    (void)greeting, (void)greet;
    r->greeting = molt_api_lookup(inst, provider, "greeting", (uint32_t)api_min);
    if (!r->greeting) {
        snprintf(err, errlen, "no api \"greeting\" >= %lld from %s", (long long)api_min, provider);
        goto fail;
    }
#else
    (void)greeting, (void)provider, (void)api_min, (void)greet;
#endif
    json_decref(cfg);
    molt_instance_set_data(inst, r);
    tp_log(r->log, "init %s", r->name);
    return MOLT_OK;
fail:
    json_decref(cfg);
    rec_free(r);
    return MOLT_ERROR;
}

static void rec_fini(molt_instance_t *inst)
{
    rec_t *r = molt_instance_data(inst);
    tp_log(r->log, "fini %s", r->name);
    rec_free(r);
}

static int rec_start(molt_instance_t *inst, void *data)
{
    (void)inst;
    const rec_t *r = data;
    tp_log(r->log, "start %s", r->name);
    return MOLT_OK;
}

static int rec_stop(molt_instance_t *inst, void *data)
{
    (void)inst;
    const rec_t *r = data;
    tp_log(r->log, "stop %s", r->name);
    return MOLT_OK;
}

/* Where a reload stands, as this worker sees it (molt_plugin_t.on_reload). */
static void rec_on_reload(molt_instance_t *inst, int phase)
{
    const rec_t *r = molt_instance_data(inst);
    static const char *const names[] = {"?", "handoff", "resumed", "retired", "active"};
    tp_log(r->log, "reload %s %s", phase >= 1 && phase <= 4 ? names[phase] : "?", r->name);
}

static const molt_hook_t rec_hooks[] = {
    {.id = MOLT_HOOK_WORKER_START, .fn.global = rec_start},
    {.id = MOLT_HOOK_WORKER_STOP, .fn.global = rec_stop},
};

/* Answers "consumer: GREETING" through the provider's api; the others name themselves. */
static int rec_handle(molt_txn_t *txn, void *data)
{
    const rec_t *r = data;
    char body[256];
    int n = r->greeting ? snprintf(body, sizeof(body), "consumer: %s", r->greeting->greet(r->greeting))
                        : snprintf(body, sizeof(body), "%s", r->name);
    molt_resp_add_header(txn, "Content-Type", "text/plain");
    return molt_resp_write(txn, body, (size_t)n);
}

#define REC_PLUGIN(...)                                                                                  \
    MOLT_PLUGIN(.init = rec_init, .fini = rec_fini, .handle = rec_handle, .hooks = rec_hooks,             \
                .nhooks = sizeof(rec_hooks) / sizeof(rec_hooks[0]), .on_reload = rec_on_reload, __VA_ARGS__)

#if defined(TP_PROVIDER)
REC_PLUGIN(.name = "tp_provider", .version = "2.1.0")
#elif defined(TP_CONSUMER)
static const molt_dep_t deps[] = {{"tp_provider", "1.0.0"}, {NULL, NULL}};
REC_PLUGIN(.name = "tp_consumer", .version = "1.0.0", .deps = deps)
#elif defined(TP_CONSUMER_NEW)
static const molt_dep_t deps[] = {{"tp_provider", "9.0.0"}, {NULL, NULL}};
REC_PLUGIN(.name = "tp_consumer_new", .version = "1.0.0", .deps = deps)
#elif defined(TP_CYCLE_A)
static const molt_dep_t deps[] = {{"tp_cycle_b", NULL}, {NULL, NULL}};
REC_PLUGIN(.name = "tp_cycle_a", .version = "1.0.0", .deps = deps)
#else
static const molt_dep_t deps[] = {{"tp_cycle_a", NULL}, {NULL, NULL}};
REC_PLUGIN(.name = "tp_cycle_b", .version = "1.0.0", .deps = deps)
#endif

#elif defined(TP_BAD_HOOK)
/* A hook id no host knows: the descriptor must be refused before any init. */
static int bad_cb(molt_txn_t *txn, void *data)
{
    (void)txn, (void)data;
    return MOLT_CONTINUE;
}
static const molt_hook_t bad_hooks[] = {
    {.id = MOLT_HOOK_TXN_START, .fn.txn = bad_cb},
    {.id = (molt_hook_id_t)42, .fn.txn = bad_cb},
};
MOLT_PLUGIN(.name = "tp_bad_hook", .version = "1.0.0", .hooks = bad_hooks, .nhooks = 2)

#elif defined(TP_SINGLETON)
/* At most one instance per generation. */
static int single_handle(molt_txn_t *txn, void *data)
{
    (void)data;
    return molt_resp_write(txn, "single\n", 7);
}
MOLT_PLUGIN(.name = "tp_singleton", .version = "1.0.0", .flags = MOLT_PLUGIN_SINGLETON,
            .handle = single_handle)

#else
#error "define one TP_* macro"
#endif
