/*
 * Longest-prefix routing of request paths to plugin instances. Built once
 * per generation from the config's routes; matching is a scan of prefixes
 * sorted longest first, which for the tens of routes a molt config holds
 * beats anything cleverer on cache behaviour.
 */
#ifndef MOLT_WORKER_ROUTER_H
#define MOLT_WORKER_ROUTER_H

#include <stddef.h>
#include <sys/types.h>

#include "shared/config.h"

typedef struct wrk_router wrk_router_t;

/* Builds a router from the config's routes (copied). NULL on ENOMEM. */
wrk_router_t *wrk_router_new(const molt_route_cfg_t *routes, size_t nroutes);

/* The plugin index of the longest prefix of path[0..len), or -1 if none matches. */
ssize_t wrk_router_match(const wrk_router_t *r, const char *path, size_t len);

void wrk_router_free(wrk_router_t *r);

#endif
