/*
 * Metrics in the Prometheus text exposition format, version 0.0.4 (SPEC §7):
 * what the supervisor knows about its reloads, workers, requests and state
 * handoffs, rendered on demand for the admin listener (GET /metrics,
 * supervisor/admin.c) and for `moltctl metrics` (the control command
 * "metrics"). docs/operations.md "Metrics" lists every metric.
 *
 * Most of it is read from the supervisor's state at render time (the
 * process table, the generations). What would otherwise be lost is counted
 * here as it happens: reload outcomes and phase times, restarts, state
 * bytes, and a running total of responses by status class, so that a
 * counter never goes backwards when a worker exits or a generation retires.
 */
#ifndef MOLT_SUPERVISOR_METRICS_H
#define MOLT_SUPERVISOR_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "shared/util.h"

/* The Content-Type of the text (the admin listener sends it). */
#define SUP_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* A reload ended: result "committed", "rolled_back" or "rejected"; phases
 * {"prepare": ms, ...} as the outcome has them (borrowed); ms its total. */
void sup_metrics_on_reload(const char *result, const json_t *phases, uint64_t ms);
/* A worker reported its responses by status class (1xx..5xx): `before`
 * what it had reported so far (0s for a new process), `now` the report.
 * The difference goes into the running totals. */
void sup_metrics_on_requests(const uint64_t before[5], const uint64_t now[5]);
/* A worker slot was respawned after an unexpected exit. */
void sup_metrics_on_restart(void);
/* State moved between workers: kind "handoff" (a reload), "handback" (a
 * rollback from the stable window) or "catchup" (a respawned worker). */
void sup_metrics_on_state_bytes(const char *kind, uint64_t bytes);

/* An upgrade ended: done, or failed (refused included). */
void sup_metrics_on_upgrade(bool done);
/* Appends the whole exposition to out. 0, or -ENOMEM. */
int sup_metrics_render(molt_buf_t *out);
/* Forgets every count (moltd's start). */
void sup_metrics_reset(void);

#endif
