/*
 * The transaction pipeline of a worker: for each request,
 *
 *   TXN_START -> REQUEST_HEADERS -> route + handler -> RESPONSE_HEADERS -> TXN_END
 *
 * with a request-phase callback able to finish early (MOLT_DONE) or fail
 * (500), and the session hooks around each connection.
 */
#ifndef MOLT_WORKER_PIPELINE_H
#define MOLT_WORKER_PIPELINE_H

#include <stdbool.h>

#include "worker/plugins.h"
#include "worker/router.h"
#include "worker/txn.h"

/* Borrowed pointers; they must outlive the pipeline. 0 or -ENOMEM. */
int wrk_pipeline_init(wrk_plugins_t *ps, wrk_router_t *router);
void wrk_pipeline_fini(void);

/* The HTTP core's handler (wrk_http_handler_fn). */
void wrk_pipeline_dispatch(struct molt_txn *txn, void *arg);

/* Runs RESPONSE_HEADERS once for the transaction being dispatched, if it has
 * not run yet: called before a streamed response's head is sent. */
void wrk_pipeline_response_headers(struct molt_txn *txn);

/* Session hooks (wrk_http session callbacks): open returns -1 to refuse the connection. */
int wrk_pipeline_session_open(struct molt_session *ses, void *arg);
void wrk_pipeline_session_close(struct molt_session *ses, void *arg);

/* The calling instance's per-transaction pointer slot (host API). */
typedef struct wrk_txn_ptr {
    void *ptr;
    void (*release)(void *ptr);
} wrk_txn_ptr_t;
wrk_txn_ptr_t *wrk_pipeline_ptr(const struct molt_instance *inst);

/* True while TXN_END runs for txn: its response is complete and the host
 * refuses to change it. */
bool wrk_pipeline_sealed(const struct molt_txn *txn);

/* The hook tables (host API: per-transaction coordination). */
wrk_hooks_t *wrk_pipeline_hooks(void);
wrk_plugins_t *wrk_pipeline_plugins(void);

#endif
