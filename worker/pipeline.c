#include "worker/pipeline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shared/log.h"
#include "worker/host.h"
#include "worker/http.h"
#include "worker/sibling.h"

/* Where a transaction is in the pipeline. */
typedef enum stage {
    ST_IDLE = 0,        /* between transactions (or aborted) */
    ST_TXN_START,       /* walking TXN_START */
    ST_REQUEST_HEADERS, /* walking REQUEST_HEADERS */
    ST_HANDLER,         /* route and handler */
    ST_RESPONSE,        /* RESPONSE_HEADERS, TXN_END, pointer release */
    ST_COUNT
} stage_t;

/*
 * What the pipeline keeps for the transaction of one connection, in one
 * allocation made on the connection's first request: this struct, then the
 * context block, the pointer slots, the overlay's arrays and the walk's.
 * Everything is reset per transaction; the memory lives until the
 * connection is freed (wrk_pipeline_release()).
 */
typedef struct ptxn {
    struct molt_txn *txn;
    stage_t stage;
    wrk_walk_t walk;     /* the request-phase hook being walked */
    wrk_overlay_t ov;    /* this transaction's hook edits */
    unsigned char *ctx;  /* ctx_total bytes: every instance's context; NULL if none */
    wrk_txn_ptr_t *ptrs; /* one per instance; NULL if no instance */
    bool ptrs_used;      /* some slot may be set */
    bool resp_hooks_ran;
    bool sealed; /* TXN_END: the response can no longer change */
    void **slots;    /* MOLT_SLOTS_MAX named transaction slots, allocated on first use */
    bool slots_used; /* some slot may be set: clear them at the next transaction */

    /* suspension */
    bool in_step;   /* the handler or a request-phase callback of this txn is running */
    bool suspended; /* it returned MOLT_SUSPEND: waiting for txn_resume */
    bool resumed;   /* txn_resume came while in_step: it applies when the step returns */
    int resume_rc;
    struct molt_instance *susp_inst; /* who suspended it */
    const wrk_cb_t *susp_cb;         /* the callback that did; NULL: the handler */
} ptxn_t;

static struct {
    wrk_plugins_t *ps;
    wrk_router_t *router;
} P;

#define ALIGN16(n) (((n) + (size_t)15) & ~(size_t)15)

int wrk_pipeline_init(wrk_plugins_t *ps, wrk_router_t *router)
{
    memset(&P, 0, sizeof(P));
    P.ps = ps;
    P.router = router;
    return 0;
}

void wrk_pipeline_fini(void)
{
    memset(&P, 0, sizeof(P));
}

wrk_hooks_t *wrk_pipeline_hooks(void)
{
    return P.ps ? &P.ps->hooks : NULL;
}

wrk_plugins_t *wrk_pipeline_plugins(void)
{
    return P.ps;
}

/* The connection's state, allocated on its first request; NULL on ENOMEM. */
static ptxn_t *ptxn_get(struct molt_txn *txn)
{
    if (txn->pipeline)
        return txn->pipeline;
    const wrk_plugins_t *ps = P.ps;
    size_t ncbs = ps->hooks.ncbs;
    /* The context block is 16-aligned (so is each instance's part of it). */
    size_t off_ctx = ALIGN16(sizeof(ptxn_t));
    size_t off_ptrs = off_ctx + ALIGN16(ps->ctx_total);
    size_t off_prio = off_ptrs + ALIGN16(ps->ninsts * sizeof(wrk_txn_ptr_t));
    size_t off_disabled = off_prio + ALIGN16(ncbs * sizeof(int));
    size_t off_ran = off_disabled + ALIGN16(ncbs);
    unsigned char *mem = calloc(1, off_ran + ps->hooks.nmax);
    if (!mem)
        return NULL;
    ptxn_t *st = (ptxn_t *)mem;
    st->txn = txn;
    st->ctx = ps->ctx_total ? mem + off_ctx : NULL;
    st->ptrs = ps->ninsts ? (wrk_txn_ptr_t *)(mem + off_ptrs) : NULL;
    st->ov.prio = (int *)(mem + off_prio);
    st->ov.disabled = mem + off_disabled;
    st->walk.ran = mem + off_ran;
    txn->pipeline = st;
    return st;
}

static ptxn_t *ptxn_of(const struct molt_txn *txn)
{
    return txn ? txn->pipeline : NULL;
}

void **wrk_pipeline_txn_slots(struct molt_txn *txn, bool create)
{
    ptxn_t *st = ptxn_of(txn);
    if (!st)
        return NULL;
    if (!st->slots && create && !(st->slots = calloc(MOLT_SLOTS_MAX, sizeof(void *))))
        return NULL;
    if (st->slots && create)
        st->slots_used = true;
    return st->slots;
}

bool wrk_pipeline_sealed(const struct molt_txn *txn)
{
    const ptxn_t *st = ptxn_of(txn);
    return st && st->sealed;
}

wrk_txn_ptr_t *wrk_pipeline_ptr(struct molt_txn *txn, const struct molt_instance *inst)
{
    ptxn_t *st = ptxn_of(txn);
    if (!st || !st->ptrs || !inst)
        return NULL;
    st->ptrs_used = true;
    return &st->ptrs[inst->index];
}

void *wrk_pipeline_ctx(struct molt_txn *txn, const struct molt_instance *inst)
{
    ptxn_t *st = ptxn_of(txn);
    if (!st || !st->ctx || !inst || !inst->dso->desc.txn_ctx_size)
        return NULL;
    return st->ctx + inst->ctx_off;
}

wrk_overlay_t *wrk_pipeline_overlay(struct molt_txn *txn)
{
    ptxn_t *st = ptxn_of(txn);
    return st ? &st->ov : NULL;
}

/* Releases every pointer slot set during the transaction, each as its instance. */
static void release_ptrs(ptxn_t *st)
{
    if (!st->ptrs_used)
        return;
    st->ptrs_used = false;
    for (size_t i = 0; i < P.ps->ninsts; i++) {
        wrk_txn_ptr_t *p = &st->ptrs[i];
        void *ptr = p->ptr;
        void (*release)(void *) = p->release;
        p->ptr = NULL;
        p->release = NULL;
        if (ptr && release) {
            struct molt_instance *saved = wrk_host_current;
            wrk_host_current = &P.ps->insts[i];
            release(ptr);
            wrk_host_current = saved;
        }
    }
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
    ptxn_t *st = ptxn_of(txn);
    if (!st || st->stage == ST_IDLE || st->resp_hooks_ran)
        return;
    st->resp_hooks_ran = true;
    const wrk_cb_t *cb = NULL;
    if (wrk_hooks_run_txn(&P.ps->hooks, &st->ov, MOLT_HOOK_RESPONSE_HEADERS, txn, true, &cb) == MOLT_ERROR)
        fail_500(txn, "response_headers", cb);
}

/* Runs the handler (cb NULL) or a request-phase callback: a step that may suspend. */
static int run_step(ptxn_t *st, struct molt_instance *inst, const wrk_cb_t *cb)
{
    int rc;
    st->in_step = true;
    if (cb) {
        rc = wrk_hooks_call_txn(cb, st->txn);
    } else {
        struct molt_instance *saved = wrk_host_current;
        wrk_host_current = inst;
        rc = inst->dso->desc.handle(st->txn, inst->data);
        wrk_host_current = saved;
    }
    st->in_step = false;
    return rc;
}

/*
 * Accounts for MOLT_SUSPEND after a step returned *rc: true if the
 * transaction now waits for txn_resume; otherwise *rc is the code to go on
 * with (a resume that came while the step ran stands in for MOLT_SUSPEND).
 */
static bool step_suspends(ptxn_t *st, struct molt_instance *inst, const wrk_cb_t *cb, int *rc)
{
    struct molt_txn *txn = st->txn;
    if (*rc != MOLT_SUSPEND) {
        if (st->resumed) {
            molt_warn("plugin %s: txn_resume was called for %s %s while its %s%s ran, but it did not "
                      "return MOLT_SUSPEND; the resume is ignored",
                      inst->cfg->name, txn->method, txn->url, cb ? "callback " : "handler",
                      cb ? cb->name : "");
            st->resumed = false;
        }
        return false;
    }
    if (st->resumed) {
        st->resumed = false;
        *rc = st->resume_rc;
        return false;
    }
    if (!inst->dso->desc.txn_abort && !inst->warned_no_abort) {
        inst->warned_no_abort = true;
        molt_warn("plugin %s suspends transactions but has no txn_abort: it is not told when a client "
                  "goes away, and must not resume such a transaction",
                  inst->cfg->name);
    }
    st->suspended = true;
    st->susp_inst = inst;
    st->susp_cb = cb;
    txn->suspended = true; /* the HTTP core waits for wrk_http_txn_complete() */
    return true;
}

/* RESPONSE_HEADERS (unless a flush ran it), TXN_END, pointer release. */
static void finish(ptxn_t *st)
{
    struct molt_txn *txn = st->txn;
    wrk_sibling_cancel_txn(txn, "finished"); /* a wait without MOLT_SUSPEND must not outlive it */
    wrk_pipeline_response_headers(txn);
    st->sealed = true;
    wrk_hooks_run_txn(&P.ps->hooks, &st->ov, MOLT_HOOK_TXN_END, txn, false, NULL);
    st->sealed = false;
    release_ptrs(st);
    st->stage = ST_IDLE;
}

/*
 * Runs the transaction from where it stands until it is finished (stage back
 * to ST_IDLE) or suspended. With `resumed`, the step that suspended it has
 * completed with rc.
 */
static void drive(ptxn_t *st, bool resumed, int rc)
{
    struct molt_txn *txn = st->txn;
    const wrk_hooks_t *hs = &P.ps->hooks;
    for (;;) {
        switch (st->stage) {
        case ST_TXN_START:
        case ST_REQUEST_HEADERS: {
            molt_hook_id_t hook = st->stage == ST_TXN_START ? MOLT_HOOK_TXN_START : MOLT_HOOK_REQUEST_HEADERS;
            const wrk_cb_t *cb = NULL;
            for (;;) {
                if (resumed) {
                    cb = st->susp_cb;
                    resumed = false;
                } else {
                    /* The walk picks up after the callbacks that ran, honouring the overlay. */
                    cb = wrk_walk_next(hs, &st->ov, &st->walk);
                    if (!cb) {
                        rc = MOLT_CONTINUE;
                        break;
                    }
                    rc = run_step(st, cb->inst, cb);
                    if (step_suspends(st, cb->inst, cb, &rc))
                        return;
                }
                if (rc != MOLT_CONTINUE)
                    break;
            }
            if (rc == MOLT_CONTINUE) {
                if (st->stage == ST_TXN_START) {
                    st->stage = ST_REQUEST_HEADERS;
                    wrk_walk_begin(&st->walk, hs, MOLT_HOOK_REQUEST_HEADERS, st->walk.ran);
                } else {
                    st->stage = ST_HANDLER;
                }
                break;
            }
            if (rc != MOLT_DONE)
                fail_500(txn, wrk_hook_name(hook), cb);
            st->stage = ST_RESPONSE;
            break;
        }
        case ST_HANDLER: {
            struct molt_instance *inst = txn->instance;
            if (!resumed) {
                ssize_t idx = wrk_router_match(P.router, txn->path, txn->path_len);
                if (idx < 0) {
                    respond_plain(txn, 404, "not found\n");
                    st->stage = ST_RESPONSE;
                    break;
                }
                inst = &P.ps->insts[idx];
                txn->instance = inst;
                rc = run_step(st, inst, NULL);
                if (step_suspends(st, inst, NULL, &rc))
                    return;
            }
            resumed = false;
            if (rc != MOLT_OK) {
                molt_warn("plugin %s: handler failed for %s %s; answering 500", inst->cfg->name, txn->method,
                          txn->url);
                respond_plain(txn, 500, "internal server error\n");
            }
            st->stage = ST_RESPONSE;
            break;
        }
        case ST_RESPONSE:
            finish(st);
            return;
        default: /* ST_IDLE */
            return;
        }
    }
}

void wrk_pipeline_dispatch(struct molt_txn *txn, void *arg)
{
    (void)arg;
    txn->status = 200;
    txn->instance = NULL;
    ptxn_t *st = ptxn_get(txn);
    if (!st) {
        molt_error("out of memory for the state of %s %s; answering 503 without running plugins", txn->method,
                   txn->url);
        respond_plain(txn, 503, "service unavailable\n");
        return;
    }
    if (st->ctx)
        memset(st->ctx, 0, P.ps->ctx_total);
    if (st->slots_used) {
        memset(st->slots, 0, MOLT_SLOTS_MAX * sizeof(void *));
        st->slots_used = false;
    }
    wrk_overlay_reset(&st->ov);
    st->resp_hooks_ran = false;
    st->sealed = false;
    st->in_step = st->suspended = st->resumed = false;
    st->susp_inst = NULL;
    st->susp_cb = NULL;
    st->stage = ST_TXN_START;
    wrk_walk_begin(&st->walk, &P.ps->hooks, MOLT_HOOK_TXN_START, st->walk.ran);
    drive(st, false, MOLT_OK);
}

static const char *caller_name(void)
{
    return wrk_host_current ? wrk_host_current->cfg->name : "?";
}

int wrk_pipeline_resume(struct molt_txn *txn, int rc)
{
    ptxn_t *st = ptxn_of(txn);
    if (rc == MOLT_SUSPEND) {
        molt_warn("plugin %s: txn_resume with MOLT_SUSPEND refused: resume with what the suspended code "
                  "would have returned",
                  caller_name());
        return MOLT_ERROR;
    }
    if (!st || st->stage == ST_IDLE || (!st->suspended && !st->in_step) || st->resumed) {
        molt_warn("plugin %s: txn_resume refused: %s", caller_name(),
                  st && st->resumed ? "the transaction was resumed already"
                                    : "the transaction is not suspended");
        return MOLT_ERROR;
    }
    if (!st->suspended) {
        /* Before the suspending code returned: applied when it returns MOLT_SUSPEND. */
        st->resumed = true;
        st->resume_rc = rc;
        return MOLT_OK;
    }
    st->suspended = false;
    st->susp_inst = NULL;
    drive(st, true, rc);
    if (st->stage == ST_IDLE)
        wrk_http_txn_complete(txn); /* last: the connection may go on with its next request */
    return MOLT_OK;
}

void wrk_pipeline_abort(struct molt_txn *txn, void *arg)
{
    (void)arg;
    ptxn_t *st = ptxn_of(txn);
    if (!st || !st->suspended)
        return;
    struct molt_instance *inst = st->susp_inst;
    /* Neither RESPONSE_HEADERS nor TXN_END: the client is gone. txn_resume is refused from now on. */
    st->suspended = false;
    st->susp_inst = NULL;
    st->stage = ST_IDLE;
    molt_info("plugin %s: suspended %s %s aborted: its connection closed before it was resumed",
              inst->cfg->name, txn->method, txn->url);
    wrk_sibling_cancel_txn(txn, NULL); /* before txn_abort: no done callback after it */
    if (inst->dso->desc.txn_abort) {
        struct molt_instance *saved = wrk_host_current;
        wrk_host_current = inst;
        inst->dso->desc.txn_abort(txn, inst->data);
        wrk_host_current = saved;
    }
    release_ptrs(st);
}

void wrk_pipeline_release(struct molt_txn *txn, void *arg)
{
    (void)arg;
    ptxn_t *st = ptxn_of(txn);
    if (!st)
        return;
    release_ptrs(st); /* nothing left normally: TXN_END or the abort released them */
    free(st->slots);
    free(st);
    txn->pipeline = NULL;
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
