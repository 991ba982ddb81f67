/* The host API table handed to plugins, and the instance currently running. */
#ifndef MOLT_WORKER_HOST_H
#define MOLT_WORKER_HOST_H

#include "molt/plugin.h"

extern const molt_host_api_t wrk_host_api;

/* The instance whose callback is running; set around every call into a plugin
 * so that host functions know who calls them (the "plugin context" of the
 * Traffic Server reload design). */
extern struct molt_instance *wrk_host_current;

/* The per-transaction context block for the transaction being dispatched
 * (zeroed by the dispatcher); txn_ctx() hands out each instance's part. */
extern unsigned char *wrk_host_ctx_block;

/* The plugin set being initialised or served (set by wrk_plugins_load(),
 * cleared by wrk_plugins_unload()): api_lookup() runs in init, before the
 * pipeline exists. */
extern struct wrk_plugins *wrk_host_plugins;

#endif
