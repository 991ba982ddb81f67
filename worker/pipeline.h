/*
 * The transaction pipeline of a worker: for each request,
 *
 *   TXN_START -> REQUEST_HEADERS -> route + handler -> RESPONSE_HEADERS -> TXN_END
 *
 * with a request-phase callback able to finish early (MOLT_DONE) or fail
 * (500), and the session hooks around each connection.
 *
 * A transaction can stop in the middle (MOLT_SUSPEND from the handler or a
 * TXN_START / REQUEST_HEADERS callback) and go on later (txn_resume), so
 * what the pipeline knows about a transaction lives with it, in a state
 * object per connection (txn->pipeline) allocated on its first request and
 * freed with it: the per-instance context block and pointer slots, the hook
 * overlay, and where the transaction stopped.
 */
#ifndef MOLT_WORKER_PIPELINE_H
#define MOLT_WORKER_PIPELINE_H

#include <stdbool.h>

#include "worker/plugins.h"
#include "worker/router.h"
#include "worker/txn.h"

/* Borrowed pointers; they must outlive the pipeline. 0 or -ENOMEM. */
int wrk_pipeline_init(wrk_plugins_t *ps, wrk_router_t *router);
/* After every connection is gone (their state refers to the plugin set). */
void wrk_pipeline_fini(void);

/* The HTTP core's handler (wrk_http_handler_fn): runs the transaction as far
 * as it goes; sets txn->suspended if a plugin suspended it. */
void wrk_pipeline_dispatch(struct molt_txn *txn, void *arg);
/* The HTTP core's txn callbacks (wrk_http_set_txn_hooks()): the client of a
 * suspended transaction went away (the suspending instance's txn_abort runs,
 * the pointer slots are released); the connection is freed (so is its state). */
void wrk_pipeline_abort(struct molt_txn *txn, void *arg);
void wrk_pipeline_release(struct molt_txn *txn, void *arg);

/*
 * The host API's txn_resume: a suspended transaction goes on from where it
 * stopped as if the suspending code had returned rc, and is handed back to
 * the HTTP core once finished. Called while that code still runs, it takes
 * effect when it returns MOLT_SUSPEND. MOLT_OK, or MOLT_ERROR (logged) if
 * txn is not suspended or already resumed.
 */
int wrk_pipeline_resume(struct molt_txn *txn, int rc);

/* Runs RESPONSE_HEADERS once for a transaction in progress, if it has not
 * run yet: called before a streamed response's head is sent. */
void wrk_pipeline_response_headers(struct molt_txn *txn);

/* Session hooks (wrk_http session callbacks): open returns -1 to refuse the connection. */
int wrk_pipeline_session_open(struct molt_session *ses, void *arg);
void wrk_pipeline_session_close(struct molt_session *ses, void *arg);

/* An instance's per-transaction pointer slot (host API); NULL if txn has no state. */
typedef struct wrk_txn_ptr {
    void *ptr;
    void (*release)(void *ptr);
} wrk_txn_ptr_t;
wrk_txn_ptr_t *wrk_pipeline_ptr(struct molt_txn *txn, const struct molt_instance *inst);

/* An instance's zeroed per-transaction context (txn_ctx_size bytes), or NULL. */
void *wrk_pipeline_ctx(struct molt_txn *txn, const struct molt_instance *inst);

/* The transaction's hook overlay (host API: per-transaction coordination), or NULL. */
wrk_overlay_t *wrk_pipeline_overlay(struct molt_txn *txn);

/* The transaction's named slots (MOLT_SLOTS_MAX), allocated when `create`;
 * NULL when none were ever set (or out of memory). */
void **wrk_pipeline_txn_slots(struct molt_txn *txn, bool create);

/* True while TXN_END runs for txn: its response is complete and the host
 * refuses to change it. */
bool wrk_pipeline_sealed(const struct molt_txn *txn);

/* The hook tables and the plugin set (host API). */
wrk_hooks_t *wrk_pipeline_hooks(void);
wrk_plugins_t *wrk_pipeline_plugins(void);

#endif
