/*
 * Test plugins for asynchronous work (integration theme "async",
 * tests/integration/test_async.c). Each .so is built from this file with one
 * TP_* macro defined (tests/plugins/CMakeLists.txt):
 *
 *   tp_async   transactions suspended and resumed from timers and fd watchers
 *   tp_abi10   a plugin as built against ABI 1.0 (older descriptor, no
 *              txn_abort): a 1.1 moltd must still load and serve it
 *
 * tp_async, with its handler routed at /sleep/, /pipe and /now:
 *
 *   /sleep/MS  suspends; a one-shot timer resumes it MS ms later; body "slept MS"
 *   /pipe      suspends; a timer writes a byte into a pipe 30 ms later, and a
 *              watcher on the pipe's read end resumes it; body "piped"
 *   /now       resumes before returning MOLT_SUSPEND, which then takes effect
 *              at once; a second resume must be refused (X-Second-Resume:
 *              refused); body "now"
 *   otherwise  body "async"
 *
 * request_headers callback "hold": with "X-Hold: MS" the transaction waits MS
 * ms there, then goes on with MOLT_CONTINUE (and X-Held: MS), or with
 * "X-Hold-Deny: 1" answers 403 "denied" (MOLT_DONE).
 *
 * response_headers callback "report", on every response: X-Aborts (txn_abort
 * calls so far in this worker), X-Ticks (runs of the repeating timer that
 * init starts and never stops: the host cancels it at stop), and, for a
 * transaction that suspended, X-Ctx-Intact: yes if its per-transaction
 * context still held, at each resume, what was written into it before
 * suspending. "X-Bad-Suspend: 1" makes it return MOLT_SUSPEND, which a
 * response_headers callback may not (the host answers 500).
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "molt/plugin.h"

#if defined(TP_ASYNC)

#define ACTX_MAGIC 0xa57c0de5u
#define ACTX_FILL 200

typedef struct async {
    molt_instance_t *inst;
    unsigned long ticks;
    unsigned long aborts;
} async_t;

/* The per-transaction context (txn_ctx_size): zeroed by the host per transaction. */
typedef struct actx {
    uint32_t magic;
    molt_txn_t *txn;
    molt_timer_t *timer; /* a pending one-shot timer */
    molt_watch_t *watch; /* /pipe's watcher */
    int fds[2];          /* /pipe's pipe, when pipe_open */
    bool pipe_open;
    unsigned ms;
    bool suspended_once;
    bool broken; /* a check after a resume failed */
    unsigned char fill[ACTX_FILL];
} actx_t;

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

/* A pattern only this transaction's context holds: from its session id. */
static unsigned char fill_byte(molt_txn_t *txn, size_t i)
{
    uint64_t id = molt_session_id(molt_txn_session(txn));
    return (unsigned char)(id * 131 + i * 7 + 1);
}

/* Before suspending: fills the context. */
static void ctx_mark(molt_txn_t *txn, actx_t *c)
{
    c->magic = ACTX_MAGIC;
    c->txn = txn;
    c->suspended_once = true;
    for (size_t i = 0; i < ACTX_FILL; i++)
        c->fill[i] = fill_byte(txn, i);
}

/* At a resume: is it still what ctx_mark wrote, and where the host says? */
static void ctx_check(actx_t *c)
{
    molt_txn_t *txn = c->txn;
    bool ok = c->magic == ACTX_MAGIC && molt_txn_ctx(txn) == c;
    for (size_t i = 0; ok && i < ACTX_FILL; i++)
        ok = c->fill[i] == fill_byte(txn, i);
    if (!ok)
        c->broken = true;
}

static void on_tick(molt_timer_t *t, void *arg)
{
    (void)t;
    async_t *a = arg;
    a->ticks++;
}

static int async_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    (void)config_json;
    async_t *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return MOLT_ERROR;
    }
    a->inst = inst;
    /* Repeating and never stopped: the host cancels it when the worker stops. */
    if (!molt_timer_start(inst, 20, 20, on_tick, a)) {
        free(a);
        snprintf(err, errlen, "molt_timer_start failed");
        return MOLT_ERROR;
    }
    molt_instance_set_data(inst, a);
    return MOLT_OK;
}

static void async_fini(molt_instance_t *inst)
{
    free(molt_instance_data(inst)); /* the tick timer is gone already: never touched here */
}

/* ---- /sleep/MS ---------------------------------------------------------------------------- */

static void sleep_done(molt_timer_t *t, void *arg)
{
    (void)t;
    actx_t *c = arg;
    c->timer = NULL; /* freed by the host when this returns */
    ctx_check(c);
    char body[64];
    int n = snprintf(body, sizeof(body), "slept %u", c->ms);
    molt_resp_write(c->txn, body, (size_t)n);
    molt_txn_resume(c->txn, MOLT_OK);
}

/* ---- /pipe -------------------------------------------------------------------------------- */

static void pipe_close(actx_t *c)
{
    molt_fd_unwatch(c->watch);
    c->watch = NULL;
    if (c->pipe_open) {
        close(c->fds[0]);
        close(c->fds[1]);
        c->pipe_open = false;
    }
}

static void pipe_write(molt_timer_t *t, void *arg)
{
    (void)t;
    actx_t *c = arg;
    c->timer = NULL;
    if (write(c->fds[1], "x", 1) != 1)
        c->broken = true;
}

static void pipe_ready(molt_watch_t *w, int fd, int revents, void *arg)
{
    actx_t *c = arg;
    char b;
    if (w != c->watch || fd != c->fds[0] || !(revents & MOLT_EV_READ) || read(fd, &b, 1) != 1 || b != 'x')
        c->broken = true;
    pipe_close(c); /* unwatches from inside its own callback */
    ctx_check(c);
    molt_resp_write(c->txn, "piped", 5);
    molt_txn_resume(c->txn, MOLT_OK);
}

/* ---- handler ------------------------------------------------------------------------------ */

static int async_handle(molt_txn_t *txn, void *data)
{
    (void)data;
    actx_t *c = molt_txn_ctx(txn);
    size_t plen;
    const char *p = molt_req_path(txn, &plen);
    char path[128];
    snprintf(path, sizeof(path), "%.*s", (int)plen, p);
    if (!c)
        return MOLT_ERROR;

    if (strncmp(path, "/sleep/", 7) == 0) {
        c->ms = (unsigned)strtoul(path + 7, NULL, 10);
        ctx_mark(txn, c);
        c->timer = molt_timer_start(NULL, c->ms, 0, sleep_done, c); /* NULL: this instance */
        return c->timer ? MOLT_SUSPEND : MOLT_ERROR;
    }
    if (strcmp(path, "/pipe") == 0) {
        if (pipe2(c->fds, O_NONBLOCK | O_CLOEXEC) < 0)
            return MOLT_ERROR;
        c->pipe_open = true;
        ctx_mark(txn, c);
        c->watch = molt_fd_watch(NULL, c->fds[0], MOLT_EV_READ, pipe_ready, c);
        c->timer = molt_timer_start(NULL, 30, 0, pipe_write, c);
        if (!c->watch || !c->timer) {
            molt_timer_stop(c->timer);
            c->timer = NULL;
            pipe_close(c);
            return MOLT_ERROR;
        }
        return MOLT_SUSPEND;
    }
    if (strcmp(path, "/now") == 0) {
        molt_resp_write(txn, "now", 3);
        if (molt_txn_resume(txn, MOLT_OK) != MOLT_OK)
            return MOLT_ERROR;
        molt_resp_add_header(txn, "X-Second-Resume",
                             molt_txn_resume(txn, MOLT_OK) == MOLT_ERROR ? "refused" : "accepted");
        return MOLT_SUSPEND; /* resumed already: goes on at once */
    }
    molt_resp_write(txn, "async", 5);
    return MOLT_OK;
}

/* The client went away: whatever would resume the transaction must not. */
static void async_txn_abort(molt_txn_t *txn, void *data)
{
    async_t *a = data;
    actx_t *c = molt_txn_ctx(txn);
    a->aborts++;
    if (!c)
        return;
    molt_timer_stop(c->timer);
    c->timer = NULL;
    pipe_close(c);
}

/* ---- hooks -------------------------------------------------------------------------------- */

static void hold_done(molt_timer_t *t, void *arg)
{
    (void)t;
    actx_t *c = arg;
    molt_txn_t *txn = c->txn;
    char v[32];
    c->timer = NULL;
    ctx_check(c);
    /* The request is still readable while suspended. */
    if (req_hdr(txn, "X-Hold-Deny", v, sizeof(v)) && strcmp(v, "1") == 0) {
        molt_resp_set_status(txn, 403);
        molt_resp_write(txn, "denied", 6);
        molt_txn_resume(txn, MOLT_DONE);
        return;
    }
    snprintf(v, sizeof(v), "%u", c->ms);
    molt_resp_add_header(txn, "X-Held", v);
    molt_txn_resume(txn, MOLT_CONTINUE);
}

static int async_hold(molt_txn_t *txn, void *data)
{
    (void)data;
    char v[32];
    actx_t *c = molt_txn_ctx(txn);
    if (!c || !req_hdr(txn, "X-Hold", v, sizeof(v)))
        return MOLT_CONTINUE;
    c->ms = (unsigned)strtoul(v, NULL, 10);
    ctx_mark(txn, c);
    c->timer = molt_timer_start(NULL, c->ms, 0, hold_done, c);
    return c->timer ? MOLT_SUSPEND : MOLT_ERROR;
}

static int async_report(molt_txn_t *txn, void *data)
{
    async_t *a = data;
    actx_t *c = molt_txn_ctx(txn);
    char v[32];
    snprintf(v, sizeof(v), "%lu", a->aborts);
    molt_resp_add_header(txn, "X-Aborts", v);
    snprintf(v, sizeof(v), "%lu", a->ticks);
    molt_resp_add_header(txn, "X-Ticks", v);
    if (c && c->suspended_once)
        molt_resp_add_header(txn, "X-Ctx-Intact", c->broken ? "no" : "yes");
    if (req_hdr(txn, "X-Bad-Suspend", v, sizeof(v)))
        return MOLT_SUSPEND;
    return MOLT_CONTINUE;
}

static const molt_hook_t async_hooks[] = {
    {.id = MOLT_HOOK_REQUEST_HEADERS, .name = "hold", .fn.txn = async_hold},
    {.id = MOLT_HOOK_RESPONSE_HEADERS, .name = "report", .fn.txn = async_report},
};

MOLT_PLUGIN(.name = "async", .version = "1.0.0", .init = async_init, .fini = async_fini,
            .handle = async_handle, .hooks = async_hooks, .nhooks = 2, .txn_ctx_size = sizeof(actx_t),
            .txn_abort = async_txn_abort);

#elif defined(TP_ABI10)

/*
 * What a plugin built against ABI 1.0 hands moltd: abi_minor 0 and the 1.0
 * descriptor's size, which ended with reserved[8] where 1.1 has txn_abort
 * first (zeros, as a 1.0 plugin leaves them). Written by hand: MOLT_PLUGIN()
 * would fill in this header's version.
 */
const molt_host_api_t *molt_host __attribute__((visibility("hidden")));

static int abi10_handle(molt_txn_t *txn, void *data)
{
    (void)data;
    molt_resp_add_header(txn, "X-Host-Has-Resume", MOLT_HOST_HAS(molt_host, txn_resume) ? "yes" : "no");
    molt_resp_write(txn, "abi 1.0 plugin", 14);
    return MOLT_OK;
}

static const molt_plugin_t abi10_desc = {
    .abi_major = 1,
    .abi_minor = 0,
    .struct_size = (uint32_t)(offsetof(molt_plugin_t, txn_abort) + 8 * sizeof(void *)),
    .name = "abi10",
    .version = "1.0.0",
    .handle = abi10_handle,
};

__attribute__((visibility("default"))) const molt_plugin_t *molt_plugin_entry(const molt_host_api_t *host);
__attribute__((visibility("default"))) const molt_plugin_t *molt_plugin_entry(const molt_host_api_t *host)
{
    molt_host = host;
    return &abi10_desc;
}

#else
#error "define one TP_* macro"
#endif
