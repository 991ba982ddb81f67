/*
 * The worker's plugin set: every .so of its generation loaded once, and every
 * configured instance initialised. Built once at worker start (the worker's
 * "generation object"); torn down in reverse at stop.
 */
#ifndef MOLT_WORKER_PLUGINS_H
#define MOLT_WORKER_PLUGINS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "molt/plugin.h"
#include "shared/config.h"
#include "worker/hooks.h"

#define WRK_MAX_APIS 8 /* APIs one instance may publish */

typedef struct wrk_api {
    char *name;
    uint32_t version;
    const void *ptr;
} wrk_api_t;

typedef struct wrk_dso {
    char *path;         /* the file dlopen()ed */
    void *handle;       /* dlopen handle */
    molt_plugin_t desc; /* copy of the plugin's descriptor, zero-extended to this host's size */
} wrk_dso_t;

struct molt_instance {
    size_t index;                 /* in the config's plugins[] */
    const molt_plugin_cfg_t *cfg; /* its config entry */
    wrk_dso_t *dso;
    void *data;       /* molt_instance_set_data() */
    bool initialised; /* init succeeded: fini is owed */
    size_t ctx_off;   /* offset of its per-transaction context in the txn context block */
    size_t *deps;     /* indexes of the instances it depends on */
    size_t ndeps;
    wrk_api_t apis[WRK_MAX_APIS]; /* what it published */
    size_t napis;
    bool warned_no_abort;      /* "suspends but has no txn_abort" was logged */
    struct molt_timer *timers; /* its timers and fd watchers not stopped yet (host.c) */
    struct molt_watch *watches;
    uint64_t sib_seq; /* the last sibling message it sent (worker/sibling.c) */
    bool ho_reset;    /* a hand-back restore reset it already (worker/handoff.c) */
};

typedef struct wrk_plugins {
    wrk_dso_t *dsos;
    size_t ndsos;
    struct molt_instance *insts; /* cfg->nplugins, in config order */
    size_t ninsts;
    size_t ctx_total; /* bytes of per-transaction context for all instances */
    size_t *order;    /* instance indexes in initialisation (dependency) order */
    wrk_hooks_t hooks;
} wrk_plugins_t;

typedef struct wrk_load_error {
    char phase[16];        /* "load", "abi", "init", "config" */
    char plugin[64];       /* instance name, "" if none */
    char file[PATH_MAX];   /* the .so at fault, "" if none */
    char reason[512];
} wrk_load_error_t;

/* Called before each instance's init (so that a crash inside it can be blamed). */
typedef void (*wrk_plugins_progress_fn)(const struct molt_instance *inst, void *arg);

/*
 * Loads every plugin file of cfg (from plugin_dir/<basename> when plugin_dir
 * is set, else from each entry's resolved path), checks each descriptor
 * against this host's ABI, and initialises the instances in config order.
 * On failure finalises what was initialised, unloads everything, fills *err
 * and returns -1.
 */
int wrk_plugins_load(wrk_plugins_t *ps, const molt_config_t *cfg, const char *plugin_dir,
                     wrk_plugins_progress_fn progress, void *arg, wrk_load_error_t *err);

/* Finalises the instances in reverse order and unloads the files. Accepts a zeroed set. */
void wrk_plugins_unload(wrk_plugins_t *ps);

/* Compares two semver strings by MAJOR.MINOR.PATCH (a pre-release sorts
 * before its release); <0, 0, >0. */
int wrk_semver_cmp(const char *a, const char *b);

/* The instance called `name`, or NULL. */
struct molt_instance *wrk_plugins_find(wrk_plugins_t *ps, const char *name);

/*
 * Checks a descriptor returned by an entry point against this host's ABI;
 * copies it (zero-extended) into *out. 0, or -1 with the reason in reason.
 */
int wrk_plugin_check_desc(const molt_plugin_t *desc, molt_plugin_t *out, char *reason, size_t len);

#endif
