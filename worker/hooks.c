#include "worker/hooks.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/log.h"
#include "worker/host.h"
#include "worker/plugins.h"

static const char *const hook_names[MOLT_HOOK_COUNT] = {
    [MOLT_HOOK_WORKER_START] = "worker_start",
    [MOLT_HOOK_WORKER_STOP] = "worker_stop",
    [MOLT_HOOK_SESSION_OPEN] = "session_open",
    [MOLT_HOOK_SESSION_CLOSE] = "session_close",
    [MOLT_HOOK_TXN_START] = "txn_start",
    [MOLT_HOOK_REQUEST_HEADERS] = "request_headers",
    [MOLT_HOOK_RESPONSE_HEADERS] = "response_headers",
    [MOLT_HOOK_TXN_END] = "txn_end",
};

const char *wrk_hook_name(unsigned id)
{
    return id < MOLT_HOOK_COUNT ? hook_names[id] : "?";
}

static bool hook_is_global(unsigned id)
{
    return id == MOLT_HOOK_WORKER_START || id == MOLT_HOOK_WORKER_STOP;
}

static bool hook_is_session(unsigned id)
{
    return id == MOLT_HOOK_SESSION_OPEN || id == MOLT_HOOK_SESSION_CLOSE;
}

int wrk_hooks_check(const molt_plugin_t *desc, char *reason, size_t len)
{
    if (desc->nhooks && !desc->hooks) {
        snprintf(reason, len, "plugin %s: nhooks is %zu but hooks is NULL", desc->name, desc->nhooks);
        return -1;
    }
    if (desc->nhooks > WRK_HOOKS_MAX_PER_PLUGIN) {
        snprintf(reason, len, "plugin %s: %zu hook callbacks, more than the %d allowed", desc->name,
                 desc->nhooks, WRK_HOOKS_MAX_PER_PLUGIN);
        return -1;
    }
    for (size_t i = 0; i < desc->nhooks; i++) {
        const molt_hook_t *h = &desc->hooks[i];
        if ((unsigned)h->id >= MOLT_HOOK_COUNT) {
            snprintf(reason, len, "plugin %s: hooks[%zu] has unknown hook id %d", desc->name, i, (int)h->id);
            return -1;
        }
        /* Every member of the union is a function pointer of the same size:
         * checking one checks the one the plugin filled in. */
        if (!h->fn.txn) {
            snprintf(reason, len, "plugin %s: hooks[%zu] (%s) has no function", desc->name, i,
                     hook_names[h->id]);
            return -1;
        }
        if (h->priority < -1000 || h->priority > 1000) {
            snprintf(reason, len, "plugin %s: hooks[%zu] (%s) priority %d is outside -1000..1000", desc->name,
                     i, hook_names[h->id], h->priority);
            return -1;
        }
        const char *name = h->name ? h->name : hook_names[h->id];
        for (size_t j = 0; j < i; j++) {
            const molt_hook_t *o = &desc->hooks[j];
            const char *oname = o->name ? o->name : hook_names[o->id];
            if (o->id == h->id && strcmp(oname, name) == 0) {
                snprintf(reason, len, "plugin %s: two callbacks named \"%s\" on hook %s", desc->name, name,
                         hook_names[h->id]);
                return -1;
            }
        }
    }
    return 0;
}

static int cb_cmp(const void *a, const void *b)
{
    const wrk_cb_t *x = *(wrk_cb_t *const *)a, *y = *(wrk_cb_t *const *)b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int wrk_hooks_build(wrk_hooks_t *hs, struct molt_instance *insts, size_t ninsts)
{
    memset(hs, 0, sizeof(*hs));
    size_t total = 0;
    for (size_t i = 0; i < ninsts; i++)
        total += insts[i].dso->desc.nhooks;
    if (total > WRK_HOOKS_MAX)
        return -E2BIG;
    if (!total)
        return 0;
    hs->cbs = calloc(total, sizeof(*hs->cbs));
    if (!hs->cbs)
        goto fail;
    for (size_t i = 0; i < ninsts; i++) {
        const molt_plugin_t *d = &insts[i].dso->desc;
        for (size_t k = 0; k < d->nhooks; k++) {
            wrk_cb_t *cb = &hs->cbs[hs->ncbs];
            cb->inst = &insts[i];
            cb->hook = &d->hooks[k];
            cb->name = cb->hook->name ? cb->hook->name : hook_names[cb->hook->id];
            cb->priority = insts[i].cfg->has_priority ? insts[i].cfg->priority : cb->hook->priority;
            cb->id = (unsigned)hs->ncbs++;
            hs->n[cb->hook->id]++;
        }
    }
    for (unsigned h = 0; h < MOLT_HOOK_COUNT; h++) {
        if (!hs->n[h])
            continue;
        if (hs->n[h] > hs->nmax)
            hs->nmax = hs->n[h];
        hs->by_hook[h] = calloc(hs->n[h], sizeof(wrk_cb_t *));
        if (!hs->by_hook[h])
            goto fail;
        size_t k = 0;
        for (size_t i = 0; i < hs->ncbs; i++)
            if (hs->cbs[i].hook->id == (molt_hook_id_t)h)
                hs->by_hook[h][k++] = &hs->cbs[i];
        qsort(hs->by_hook[h], hs->n[h], sizeof(wrk_cb_t *), cb_cmp);
    }
    return 0;
fail:
    wrk_hooks_free(hs);
    return -ENOMEM;
}

void wrk_hooks_free(wrk_hooks_t *hs)
{
    for (unsigned h = 0; h < MOLT_HOOK_COUNT; h++)
        free(hs->by_hook[h]);
    free(hs->cbs);
    memset(hs, 0, sizeof(*hs));
}

/* Starts an overlay from the configured state. */
static void overlay_begin(const wrk_hooks_t *hs, wrk_overlay_t *ov)
{
    if (ov->dirty)
        return;
    memset(ov->disabled, 0, hs->ncbs);
    for (size_t i = 0; i < hs->ncbs; i++)
        ov->prio[i] = hs->cbs[i].priority;
    ov->dirty = true;
}

void wrk_overlay_reset(wrk_overlay_t *ov)
{
    ov->dirty = false;
}

static bool dirty(const wrk_overlay_t *ov)
{
    return ov && ov->dirty;
}

static int call_cb(const wrk_cb_t *cb, void *obj)
{
    struct molt_instance *saved = wrk_host_current;
    void *data = cb->inst->data;
    int rc;
    wrk_host_current = cb->inst;
    if (hook_is_global(cb->hook->id))
        rc = cb->hook->fn.global(cb->inst, data);
    else if (hook_is_session(cb->hook->id))
        rc = cb->hook->fn.session(obj, data);
    else
        rc = cb->hook->fn.txn(obj, data);
    wrk_host_current = saved;
    return rc;
}

int wrk_hooks_call_txn(const wrk_cb_t *cb, molt_txn_t *txn)
{
    return call_cb(cb, txn);
}

/* Is a before b in the effective order of the overlay? */
static bool overlay_before(const wrk_overlay_t *ov, const wrk_cb_t *a, const wrk_cb_t *b)
{
    if (ov->prio[a->id] != ov->prio[b->id])
        return ov->prio[a->id] < ov->prio[b->id];
    return a->id < b->id;
}

void wrk_walk_begin(wrk_walk_t *w, const wrk_hooks_t *hs, molt_hook_id_t hook, uint8_t *ran)
{
    w->hook = hook;
    w->cursor = 0;
    w->ran = ran;
    if (hs->n[hook])
        memset(ran, 0, hs->n[hook]);
}

/*
 * Without an overlay this is the sorted array in order; once a callback (or
 * an earlier one in the transaction) edits the overlay, each next callback
 * is the first in the overlay's order among those that have not run.
 */
const wrk_cb_t *wrk_walk_next(const wrk_hooks_t *hs, const wrk_overlay_t *ov, wrk_walk_t *w)
{
    size_t n = hs->n[w->hook];
    wrk_cb_t **list = hs->by_hook[w->hook];
    ssize_t pick = -1;
    if (!dirty(ov)) {
        while (w->cursor < n && w->ran[w->cursor])
            w->cursor++;
        if (w->cursor < n)
            pick = (ssize_t)w->cursor;
    } else {
        for (size_t i = 0; i < n; i++) {
            if (w->ran[i] || ov->disabled[list[i]->id])
                continue;
            if (pick < 0 || overlay_before(ov, list[i], list[pick]))
                pick = (ssize_t)i;
        }
    }
    if (pick < 0)
        return NULL;
    w->ran[pick] = 1;
    return list[pick];
}

/* How a walk stops: never, at the first callback that does not continue, or
 * only at a failure (global and session hooks, where MOLT_DONE means nothing). */
typedef enum run_stop { RUN_ALL = 0, RUN_STOP_ANY = 1, RUN_STOP_ERROR = 2 } run_stop_t;

/* A whole walk in one go, for the hooks that cannot suspend. */
static int run(const wrk_hooks_t *hs, const wrk_overlay_t *ov, molt_hook_id_t hook, void *obj,
               run_stop_t stop, const wrk_cb_t **culprit)
{
    uint8_t ran[WRK_HOOKS_MAX];
    wrk_walk_t w;
    const wrk_cb_t *cb;
    if (!hs->n[hook])
        return MOLT_CONTINUE;
    wrk_walk_begin(&w, hs, hook, ran);
    while ((cb = wrk_walk_next(hs, ov, &w))) {
        int rc = call_cb(cb, obj);
        if (rc == MOLT_SUSPEND) {
            molt_warn("plugin %s: %s callback %s returned MOLT_SUSPEND, which only the handler and "
                      "txn_start / request_headers callbacks may; treated as MOLT_ERROR",
                      cb->inst->cfg->name, hook_names[hook], cb->name);
            rc = MOLT_ERROR;
        }
        if (rc != MOLT_CONTINUE && (stop == RUN_STOP_ANY || (stop == RUN_STOP_ERROR && rc != MOLT_DONE))) {
            if (culprit)
                *culprit = cb;
            return rc == MOLT_DONE ? MOLT_DONE : MOLT_ERROR;
        }
    }
    return MOLT_CONTINUE;
}

int wrk_hooks_run_txn(const wrk_hooks_t *hs, const wrk_overlay_t *ov, molt_hook_id_t hook, molt_txn_t *txn,
                      bool stop, const wrk_cb_t **culprit)
{
    return run(hs, ov, hook, txn, stop ? RUN_STOP_ANY : RUN_ALL, culprit);
}

/* Session and global callbacks are not subject to a transaction's overlay. */
int wrk_hooks_run_session(const wrk_hooks_t *hs, molt_hook_id_t hook, molt_session_t *ses,
                          const wrk_cb_t **culprit)
{
    return run(hs, NULL, hook, ses, hook == MOLT_HOOK_SESSION_OPEN ? RUN_STOP_ERROR : RUN_ALL, culprit);
}

int wrk_hooks_run_global(const wrk_hooks_t *hs, molt_hook_id_t hook, const wrk_cb_t **culprit)
{
    return run(hs, NULL, hook, NULL, RUN_STOP_ERROR, culprit);
}

static bool cb_matches(const wrk_cb_t *cb, const char *instance, const char *callback)
{
    return strcmp(cb->inst->cfg->name, instance) == 0 && (!callback || strcmp(cb->name, callback) == 0);
}

int wrk_hooks_set_enabled(const wrk_hooks_t *hs, wrk_overlay_t *ov, molt_hook_id_t hook, const char *instance,
                          const char *callback, bool enabled)
{
    int n = 0;
    if ((unsigned)hook >= MOLT_HOOK_COUNT || !instance || !ov)
        return 0;
    for (size_t i = 0; i < hs->n[hook]; i++) {
        const wrk_cb_t *cb = hs->by_hook[hook][i];
        if (!cb_matches(cb, instance, callback))
            continue;
        overlay_begin(hs, ov);
        ov->disabled[cb->id] = !enabled;
        n++;
    }
    return n;
}

int wrk_hooks_set_priority(const wrk_hooks_t *hs, wrk_overlay_t *ov, molt_hook_id_t hook,
                           const char *instance, const char *callback, int priority)
{
    int n = 0;
    if ((unsigned)hook >= MOLT_HOOK_COUNT || !instance || !ov || priority < -1000 || priority > 1000)
        return 0;
    for (size_t i = 0; i < hs->n[hook]; i++) {
        const wrk_cb_t *cb = hs->by_hook[hook][i];
        if (!cb_matches(cb, instance, callback))
            continue;
        overlay_begin(hs, ov);
        ov->prio[cb->id] = priority;
        n++;
    }
    return n;
}

int wrk_hooks_disable_instance(const wrk_hooks_t *hs, wrk_overlay_t *ov, const char *instance)
{
    int n = 0;
    if (!ov)
        return 0;
    for (size_t i = 0; i < hs->ncbs; i++) {
        if (strcmp(hs->cbs[i].inst->cfg->name, instance) != 0)
            continue;
        overlay_begin(hs, ov);
        ov->disabled[i] = 1;
        n++;
    }
    return n;
}

int wrk_hooks_list(const wrk_hooks_t *hs, const wrk_overlay_t *ov, molt_hook_id_t hook, molt_cb_info_t *out,
                   size_t max)
{
    if ((unsigned)hook >= MOLT_HOOK_COUNT)
        return 0;
    size_t n = hs->n[hook];
    wrk_cb_t **list = hs->by_hook[hook];
    bool edited = dirty(ov);
    uint8_t used[WRK_HOOKS_MAX];
    memset(used, 0, n);
    for (size_t k = 0; k < n; k++) {
        size_t pick = 0;
        bool found = false;
        for (size_t i = 0; i < n; i++) {
            if (used[i])
                continue;
            if (!found || (edited ? overlay_before(ov, list[i], list[pick]) : i < pick)) {
                pick = i;
                found = true;
            }
        }
        used[pick] = 1;
        if (k < max) {
            const wrk_cb_t *cb = list[pick];
            out[k].instance = cb->inst->cfg->name;
            out[k].callback = cb->name;
            out[k].priority = edited ? ov->prio[cb->id] : cb->priority;
            out[k].enabled = edited ? !ov->disabled[cb->id] : 1;
        }
    }
    return (int)n;
}
