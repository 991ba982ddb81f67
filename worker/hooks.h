/*
 * Hook dispatch: every callback of every instance, sorted per hook by
 * priority (ties in config order), and the per-transaction overlay through
 * which a plugin disables, re-enables or re-prioritises callbacks for one
 * transaction only (the Traffic Server plugin-coordination design).
 *
 * The tables (wrk_hooks_t) are the generation's and never change while it
 * serves; the overlay (wrk_overlay_t) belongs to one transaction (the
 * pipeline keeps one per connection), since transactions interleave once
 * they can be suspended. A walk over one hook (wrk_walk_t) can stop after
 * any callback and go on later: that is how a suspended request-phase
 * callback resumes with the callbacks after it.
 *
 * The overlay costs nothing until a plugin changes something: the common
 * path walks the pre-sorted array.
 */
#ifndef MOLT_WORKER_HOOKS_H
#define MOLT_WORKER_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "molt/plugin.h"

#define WRK_HOOKS_MAX_PER_PLUGIN 32
#define WRK_HOOKS_MAX 1024 /* callbacks in a generation */

struct molt_instance;
struct wrk_plugins;

typedef struct wrk_cb {
    struct molt_instance *inst;
    const molt_hook_t *hook; /* in the plugin's descriptor (valid while it is loaded) */
    const char *name;        /* hook->name, or the hook's own name */
    int priority;            /* the config's override, or the descriptor's */
    unsigned id;             /* index in wrk_hooks_t.cbs: config order, then descriptor order */
} wrk_cb_t;

typedef struct wrk_hooks {
    wrk_cb_t *cbs;
    size_t ncbs;
    wrk_cb_t **by_hook[MOLT_HOOK_COUNT]; /* sorted by (priority, id) */
    size_t n[MOLT_HOOK_COUNT];
    size_t nmax; /* the largest n[]: room a walk needs */
} wrk_hooks_t;

/* One transaction's edits; its arrays (ncbs entries each) belong to whoever
 * keeps the transaction. The contents are valid only while `dirty`. */
typedef struct wrk_overlay {
    bool dirty;
    uint8_t *disabled; /* [ncbs] */
    int *prio;         /* [ncbs] effective priority */
} wrk_overlay_t;

/* Where a walk over one hook's callbacks is. `ran` has room for nmax entries. */
typedef struct wrk_walk {
    molt_hook_id_t hook;
    size_t cursor; /* without an overlay: the first index that may not have run */
    uint8_t *ran;  /* [n[hook]]: 1 once that callback was picked */
} wrk_walk_t;

/* The name of a hook ("request_headers"); "?" if out of range. */
const char *wrk_hook_name(unsigned id);

/*
 * Checks one plugin's hook array (ids, functions, priorities, names).
 * 0, or -1 with the reason in `reason`.
 */
int wrk_hooks_check(const molt_plugin_t *desc, char *reason, size_t len);

/* Builds the tables from the loaded instances (in config order). 0 or -ENOMEM. */
int wrk_hooks_build(wrk_hooks_t *hs, struct molt_instance *insts, size_t ninsts);
void wrk_hooks_free(wrk_hooks_t *hs);

/* Forgets a transaction's edits: the next one starts from the configured order. */
void wrk_overlay_reset(wrk_overlay_t *ov);

/* Starts a walk over `hook` (ran has room for hs->nmax entries). */
void wrk_walk_begin(wrk_walk_t *w, const wrk_hooks_t *hs, molt_hook_id_t hook, uint8_t *ran);
/*
 * The next callback of the walk: the first in the overlay's order (ov may be
 * NULL: the configured order) among those enabled that have not run, marked
 * as run; NULL when none is left. So an overlay edit made by a callback
 * affects exactly the callbacks that have not run yet.
 */
const wrk_cb_t *wrk_walk_next(const wrk_hooks_t *hs, const wrk_overlay_t *ov, wrk_walk_t *w);
/* Calls a transaction callback as its instance (wrk_host_current) and returns its code. */
int wrk_hooks_call_txn(const wrk_cb_t *cb, molt_txn_t *txn);

/*
 * Runs the callbacks of a transaction hook in order. With `stop`, the first
 * callback that does not return MOLT_CONTINUE ends the walk and its code is
 * returned (the callback is stored in *culprit); without, every callback runs
 * and MOLT_CONTINUE is returned. MOLT_SUSPEND counts as MOLT_ERROR here (with
 * a log line): the pipeline walks the hooks that may suspend itself.
 */
int wrk_hooks_run_txn(const wrk_hooks_t *hs, const wrk_overlay_t *ov, molt_hook_id_t hook, molt_txn_t *txn,
                      bool stop, const wrk_cb_t **culprit);
/* Session hooks: SESSION_OPEN stops at the first failure and returns it. */
int wrk_hooks_run_session(const wrk_hooks_t *hs, molt_hook_id_t hook, molt_session_t *ses,
                          const wrk_cb_t **culprit);
/* Global hooks: stops at the first failure and returns it. */
int wrk_hooks_run_global(const wrk_hooks_t *hs, molt_hook_id_t hook, const wrk_cb_t **culprit);

/* Overlay edits for one transaction: callback NULL = every callback of the
 * instance on the hook. Return how many callbacks matched. */
int wrk_hooks_set_enabled(const wrk_hooks_t *hs, wrk_overlay_t *ov, molt_hook_id_t hook, const char *instance,
                          const char *callback, bool enabled);
int wrk_hooks_set_priority(const wrk_hooks_t *hs, wrk_overlay_t *ov, molt_hook_id_t hook,
                           const char *instance, const char *callback, int priority);
/* Disables every callback of the instance on every hook; how many matched. */
int wrk_hooks_disable_instance(const wrk_hooks_t *hs, wrk_overlay_t *ov, const char *instance);
/* Fills out[] with the callbacks of `hook` in their effective order (ov may
 * be NULL); returns the count. */
int wrk_hooks_list(const wrk_hooks_t *hs, const wrk_overlay_t *ov, molt_hook_id_t hook, molt_cb_info_t *out,
                   size_t max);

#endif
