/*
 * Hook dispatch: every callback of every instance, sorted per hook by
 * priority (ties in config order), and the per-transaction overlay through
 * which a plugin disables, re-enables or re-prioritises callbacks for one
 * transaction only (the Traffic Server plugin-coordination design).
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

    /* the per-transaction overlay; valid while `dirty` */
    bool dirty;
    uint8_t *disabled; /* [ncbs] */
    int *prio;         /* [ncbs] effective priority */
} wrk_hooks_t;

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

/* Forgets the previous transaction's overlay. */
void wrk_hooks_txn_reset(wrk_hooks_t *hs);

/*
 * Runs the callbacks of a transaction hook in order. With `stop`, the first
 * callback that does not return MOLT_CONTINUE ends the walk and its code is
 * returned (the callback is stored in *culprit); without, every callback runs
 * and MOLT_CONTINUE is returned.
 */
int wrk_hooks_run_txn(wrk_hooks_t *hs, molt_hook_id_t hook, molt_txn_t *txn, bool stop, const wrk_cb_t **culprit);
/* Session hooks: SESSION_OPEN stops at the first failure and returns it. */
int wrk_hooks_run_session(wrk_hooks_t *hs, molt_hook_id_t hook, molt_session_t *ses, const wrk_cb_t **culprit);
/* Global hooks: stops at the first failure and returns it. */
int wrk_hooks_run_global(wrk_hooks_t *hs, molt_hook_id_t hook, const wrk_cb_t **culprit);

/* Overlay edits for the current transaction: callback NULL = every callback
 * of the instance on the hook. Return how many callbacks matched. */
int wrk_hooks_set_enabled(wrk_hooks_t *hs, molt_hook_id_t hook, const char *instance, const char *callback,
                          bool enabled);
int wrk_hooks_set_priority(wrk_hooks_t *hs, molt_hook_id_t hook, const char *instance, const char *callback,
                           int priority);
/* Disables every callback of the instance on every hook; how many matched. */
int wrk_hooks_disable_instance(wrk_hooks_t *hs, const char *instance);
/* Fills out[] with the callbacks of `hook` in their effective order; returns the count. */
int wrk_hooks_list(wrk_hooks_t *hs, molt_hook_id_t hook, molt_cb_info_t *out, size_t max);

#endif
