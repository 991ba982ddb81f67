/* The host API table handed to plugins, and the instance currently running. */
#ifndef MOLT_WORKER_HOST_H
#define MOLT_WORKER_HOST_H

#include <stdbool.h>

#include "molt/plugin.h"

extern const molt_host_api_t wrk_host_api;

/* The instance whose callback is running; set around every call into a plugin
 * so that host functions know who calls them (the "plugin context" of the
 * Traffic Server reload design). */
extern struct molt_instance *wrk_host_current;

/* True while an instance's init runs. */
extern bool wrk_host_in_init;

/* The worker's event loop, for the timers and fd watchers of plugins (set
 * before plugins are loaded: init may start a timer); NULL: none. */
struct ev_loop;
extern struct ev_loop *wrk_host_loop;

/* The plugin set being initialised or served (set by wrk_plugins_load(),
 * cleared by wrk_plugins_unload()): api_lookup() runs in init, before the
 * pipeline exists. */
extern struct wrk_plugins *wrk_host_plugins;

/*
 * Stops and frees every timer and fd watcher the instance still has, and
 * logs how many if any: at worker stop, after WORKER_STOP and before fini.
 */
void wrk_host_cancel_async(struct molt_instance *inst);

#endif
