#include "worker/pipeline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shared/log.h"
#include "worker/host.h"

static struct {
    wrk_plugins_t *ps;
    wrk_router_t *router;
    unsigned char *ctx_block;   /* every instance's txn_ctx_size bytes */
    wrk_txn_ptr_t *ptrs;        /* one per instance */
    bool ptrs_used;
    struct molt_txn *current;   /* the transaction being dispatched */
    bool resp_hooks_ran;
    bool sealed;                /* TXN_END: the response can no longer change */
} P;

int wrk_pipeline_init(wrk_plugins_t *ps, wrk_router_t *router)
{
    memset(&P, 0, sizeof(P));
    P.ps = ps;
    P.router = router;
    if (ps->ctx_total && !(P.ctx_block = calloc(1, ps->ctx_total)))
        return -ENOMEM;
    if (ps->ninsts && !(P.ptrs = calloc(ps->ninsts, sizeof(*P.ptrs)))) {
        free(P.ctx_block);
        return -ENOMEM;
    }
    return 0;
}

void wrk_pipeline_fini(void)
{
    free(P.ctx_block);
    free(P.ptrs);
    memset(&P, 0, sizeof(P));
}

bool wrk_pipeline_sealed(const struct molt_txn *txn)
{
    return P.sealed && txn == P.current;
}

wrk_hooks_t *wrk_pipeline_hooks(void)
{
    return P.ps ? &P.ps->hooks : NULL;
}

wrk_plugins_t *wrk_pipeline_plugins(void)
{
    return P.ps;
}

wrk_txn_ptr_t *wrk_pipeline_ptr(const struct molt_instance *inst)
{
    if (!P.ptrs || !inst)
        return NULL;
    P.ptrs_used = true;
    return &P.ptrs[inst->index];
}

static void respond_plain(struct molt_txn *txn, int status, const char *body)
{
    if (txn->streaming)
        return; /* the head is gone: nothing to replace */
    txn->status = status;
    txn->resp_headers.len = 0;
    txn->resp_body.len = 0;
    molt_buf_append(&txn->resp_headers, "Content-Type: text/plain\r\n", 26);
    molt_buf_append(&txn->resp_body, body, strlen(body));
}

static void fail_500(struct molt_txn *txn, const char *what, const wrk_cb_t *cb)
{
    molt_warn("plugin %s: %s%s%s failed for %s %s; answering 500", cb ? cb->inst->cfg->name : "?", what,
              cb ? " callback " : "", cb ? cb->name : "", txn->method, txn->url);
    respond_plain(txn, 500, "internal server error\n");
}

void wrk_pipeline_response_headers(struct molt_txn *txn)
{
    if (P.resp_hooks_ran || txn != P.current)
        return;
    P.resp_hooks_ran = true;
    const wrk_cb_t *cb = NULL;
    if (wrk_hooks_run_txn(&P.ps->hooks, MOLT_HOOK_RESPONSE_HEADERS, txn, true, &cb) == MOLT_ERROR)
        fail_500(txn, "response_headers", cb);
}

/* Runs a request-phase hook; true if the transaction is finished. */
static bool request_phase(struct molt_txn *txn, molt_hook_id_t hook)
{
    const wrk_cb_t *cb = NULL;
    int rc = wrk_hooks_run_txn(&P.ps->hooks, hook, txn, true, &cb);
    if (rc == MOLT_CONTINUE)
        return false;
    if (rc == MOLT_ERROR)
        fail_500(txn, wrk_hook_name(hook), cb);
    return true;
}

void wrk_pipeline_dispatch(struct molt_txn *txn, void *arg)
{
    (void)arg;
    wrk_hooks_t *hs = &P.ps->hooks;
    P.current = txn;
    P.resp_hooks_ran = false;
    wrk_hooks_txn_reset(hs);
    if (P.ctx_block)
        memset(P.ctx_block, 0, P.ps->ctx_total);
    wrk_host_ctx_block = P.ctx_block;
    txn->status = 200;
    txn->instance = NULL;

    if (request_phase(txn, MOLT_HOOK_TXN_START) || request_phase(txn, MOLT_HOOK_REQUEST_HEADERS))
        goto response;

    ssize_t idx = wrk_router_match(P.router, txn->path, txn->path_len);
    if (idx < 0) {
        respond_plain(txn, 404, "not found\n");
        goto response;
    }
    struct molt_instance *inst = &P.ps->insts[idx];
    txn->instance = inst;
    wrk_host_current = inst;
    int rc = inst->dso->desc.handle(txn, inst->data);
    wrk_host_current = NULL;
    if (rc != MOLT_OK) {
        molt_warn("plugin %s: handler failed for %s %s; answering 500", inst->cfg->name, txn->method, txn->url);
        respond_plain(txn, 500, "internal server error\n");
    }

response:
    wrk_pipeline_response_headers(txn);
    P.sealed = true;
    wrk_hooks_run_txn(hs, MOLT_HOOK_TXN_END, txn, false, NULL);
    P.sealed = false;
    if (P.ptrs_used) {
        for (size_t i = 0; i < P.ps->ninsts; i++) {
            wrk_txn_ptr_t *p = &P.ptrs[i];
            if (p->ptr && p->release) {
                wrk_host_current = &P.ps->insts[i];
                p->release(p->ptr);
                wrk_host_current = NULL;
            }
            p->ptr = NULL;
            p->release = NULL;
        }
        P.ptrs_used = false;
    }
    P.current = NULL;
    wrk_host_ctx_block = NULL;
}

int wrk_pipeline_session_open(struct molt_session *ses, void *arg)
{
    (void)arg;
    const wrk_cb_t *cb = NULL;
    if (wrk_hooks_run_session(&P.ps->hooks, MOLT_HOOK_SESSION_OPEN, ses, &cb) == MOLT_ERROR) {
        molt_info("plugin %s: session_open callback %s refused connection %llu", cb->inst->cfg->name, cb->name,
                  (unsigned long long)ses->id);
        return -1;
    }
    return 0;
}

void wrk_pipeline_session_close(struct molt_session *ses, void *arg)
{
    (void)arg;
    wrk_hooks_run_session(&P.ps->hooks, MOLT_HOOK_SESSION_CLOSE, ses, NULL);
}
