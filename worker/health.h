/*
 * The in-process health check a reload's verify phase asks of each new
 * worker: the configured health request through the worker's own HTTP core
 * and full plugin pipeline (over a socketpair the core adopts, so an
 * asynchronous plugin answers it as it would a client), then every
 * instance's health callback. The result goes to the supervisor as one
 * HEALTH_RESULT message.
 */
#ifndef MOLT_WORKER_HEALTH_H
#define MOLT_WORKER_HEALTH_H

#include <stdint.h>

#include <ev.h>

#include "worker/http.h"
#include "worker/plugins.h"

/* Called with the result: the status the request got (0 if none), and an
 * error ("" if none) naming what failed. */
typedef void (*wrk_health_done_fn)(int status, const char *error, void *arg);

/* Starts a check of `path` (one at a time; a second start while one runs is
 * refused with -EBUSY). done runs once, from the loop, within timeout_ms.
 * 0 or -errno. */
int wrk_health_start(struct ev_loop *loop, wrk_http_t *http, wrk_plugins_t *ps, const char *path,
                     uint32_t timeout_ms, wrk_health_done_fn done, void *arg);

/* Abandons a running check (worker stop); done is not called. */
void wrk_health_cancel(void);

#endif
