/*
 * The worker's HTTP/1.1 server core, on http-parser and libev.
 *
 * It accepts on the listening sockets it is given, parses requests
 * (keep-alive, pipelining, HTTP/1.0, HEAD, chunked request bodies), enforces
 * the limits and timeouts of molt_http_cfg_t with the right status
 * (400 malformed, 408 header timeout, 413 body too large, 431 headers too
 * large), calls the handler once per complete request, and writes the
 * response with Date, Server, and Content-Length, or chunked transfer coding
 * for a response the handler streamed with wrk_http_txn_flush().
 */
#ifndef MOLT_WORKER_HTTP_H
#define MOLT_WORKER_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "shared/config.h"
#include "worker/txn.h"

typedef struct wrk_http wrk_http_t;

/*
 * Called once per complete request. The handler fills the response in txn
 * (status, resp_headers, resp_body) before it returns; the core then sends
 * it. A status of 0 left by the handler is sent as 500.
 *
 * Or the handler sets txn->suspended and returns: the transaction finishes
 * later with wrk_http_txn_complete(). Meanwhile the connection parses
 * nothing more (input that arrives is kept, up to a bound, for the requests
 * after this one), runs no header or keep-alive timeout, and only watches
 * for the client going away: on EOF or an error the server's abort callback
 * runs and the connection is freed.
 */
typedef void (*wrk_http_handler_fn)(struct molt_txn *txn, void *arg);

typedef enum wrk_http_class {
    WRK_HTTP_1XX = 0,
    WRK_HTTP_2XX,
    WRK_HTTP_3XX,
    WRK_HTTP_4XX,
    WRK_HTTP_5XX,
    WRK_HTTP_CLASS_COUNT
} wrk_http_class_t;

typedef struct wrk_http_stats {
    uint64_t requests[WRK_HTTP_CLASS_COUNT]; /* responses sent, by status class */
    uint64_t accepted;                       /* connections accepted, total */
    uint64_t conns;                          /* connections open now */
} wrk_http_stats_t;

/* Session hooks: open runs when a connection is accepted and returns -1 to
 * close it at once; close runs when an opened connection closes. */
typedef int (*wrk_http_session_open_fn)(struct molt_session *ses, void *arg);
typedef void (*wrk_http_session_close_fn)(struct molt_session *ses, void *arg);
void wrk_http_set_session_hooks(wrk_http_t *srv, wrk_http_session_open_fn open_fn,
                                wrk_http_session_close_fn close_fn, void *arg);

/*
 * Asynchronous transactions, both called with the handler's arg:
 * abort(txn) when the client of a suspended transaction went away, or when
 * the connection is closed by wrk_http_close_all() / wrk_http_free(); the
 * connection is freed right after. release(txn) when a connection whose
 * txn->pipeline is set is freed (after any abort), to free that state.
 */
typedef void (*wrk_http_txn_fn)(struct molt_txn *txn, void *arg);
void wrk_http_set_txn_hooks(wrk_http_t *srv, wrk_http_txn_fn abort_fn, wrk_http_txn_fn release_fn);

/* Creates a server on `loop`; cfg is borrowed and must outlive it. NULL on ENOMEM. */
wrk_http_t *wrk_http_new(struct ev_loop *loop, const molt_http_cfg_t *cfg, wrk_http_handler_fn handler,
                         void *arg);

/* Starts accepting on a listening socket (made non-blocking here). 0 or -errno. */
int wrk_http_listen(wrk_http_t *srv, int fd);

/* Serves an already-connected socket (used by tests). 0 or -errno. */
int wrk_http_adopt(wrk_http_t *srv, int fd);

/* Stops / restarts accepting; open connections are not affected. */
void wrk_http_pause(wrk_http_t *srv);
void wrk_http_resume(wrk_http_t *srv);

/*
 * Graceful close: stops accepting; every idle keep-alive connection is closed
 * once `idle_grace_ms` passes without a new request; a request in progress
 * (suspended ones too) is answered with "Connection: close" and the
 * connection closed after it.
 * `done` is called (once) when no connection is left, possibly immediately.
 * It is never called from inside wrk_http_drain() itself: it runs from a
 * zero-delay timer on the loop (the next iteration when nothing is open), so
 * done() may free the server. A second drain replaces done/arg.
 */
void wrk_http_drain(wrk_http_t *srv, uint32_t idle_grace_ms, void (*done)(void *arg), void *arg);

/*
 * Ends a drain that has not finished (a reload that rolled back after its
 * handoff): done is forgotten, listeners follow pause/resume again and idle
 * connections get their keep-alive timeout back. A response already sent
 * with "Connection: close" still closes its connection.
 */
void wrk_http_undrain(wrk_http_t *srv);

/* Closes every connection now (suspended transactions are aborted first). */
void wrk_http_close_all(wrk_http_t *srv);

void wrk_http_get_stats(const wrk_http_t *srv, wrk_http_stats_t *out);

/* Stops all watchers, closes all connections (not the listening sockets; suspended transactions
 * are aborted first), frees. Accepts NULL. */
void wrk_http_free(wrk_http_t *srv);

/*
 * For the host API's resp_flush: sends the status line and headers now with
 * "Transfer-Encoding: chunked" (HTTP/1.1; for HTTP/1.0 the body is
 * close-delimited and the connection closes after it), then the body written
 * so far as a chunk; later writes go out as chunks when flushed again or when
 * the handler returns, followed by the last chunk. Only from within the
 * handler or while the transaction is suspended (-EINVAL otherwise). 0 or
 * -errno (-EPIPE: the client is gone).
 */
int wrk_http_txn_flush(struct molt_txn *txn);

/*
 * Finishes a suspended transaction: clears txn->suspended, then sends the
 * response exactly as after a handler that returned (the rest of a streamed
 * one too) and goes on with the connection's pipelined input from the loop
 * (never from inside this call: the caller may be another connection's
 * handler). 0, or -EINVAL if txn is not suspended.
 */
int wrk_http_txn_complete(struct molt_txn *txn);

/* The reason phrase for a status code ("Not Found"); "Unknown" if none. */
const char *wrk_http_reason(int status);

#endif
