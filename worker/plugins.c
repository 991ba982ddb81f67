#include "worker/plugins.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/log.h"
#include "worker/host.h"

/* Every field before reserved[] is ABI 1.0; a descriptor must at least cover them. */
#define WRK_DESC_MIN_SIZE offsetof(molt_plugin_t, reserved)

static void err_set(wrk_load_error_t *err, const char *phase, const struct molt_instance *inst,
                    const char *file, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void err_set(wrk_load_error_t *err, const char *phase, const struct molt_instance *inst,
                    const char *file, const char *fmt, ...)
{
    va_list ap;
    snprintf(err->phase, sizeof(err->phase), "%s", phase);
    snprintf(err->plugin, sizeof(err->plugin), "%s", inst ? inst->cfg->name : "");
    snprintf(err->file, sizeof(err->file), "%s", file ? file : "");
    va_start(ap, fmt);
    vsnprintf(err->reason, sizeof(err->reason), fmt, ap);
    va_end(ap);
}

static bool valid_name(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.'))
            return false;
    }
    return n >= 1 && n <= 64;
}

static bool valid_semver(const char *s)
{
    int parts = 0;
    const char *p = s;
    while (parts < 3) {
        if (*p < '0' || *p > '9')
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
        parts++;
        if (parts < 3) {
            if (*p != '.')
                return false;
            p++;
        }
    }
    /* pre-release / build suffixes are allowed */
    return *p == '\0' || *p == '-' || *p == '+';
}

int wrk_plugin_check_desc(const molt_plugin_t *desc, molt_plugin_t *out, char *reason, size_t len)
{
    if (!desc) {
        snprintf(reason, len, "%s() returned no descriptor", MOLT_PLUGIN_ENTRY_SYMBOL);
        return -1;
    }
    if (desc->abi_major != MOLT_ABI_MAJOR) {
        snprintf(reason, len, "built for plugin ABI %u.%u, this moltd speaks ABI %u.%u", desc->abi_major,
                 desc->abi_minor, MOLT_ABI_MAJOR, MOLT_ABI_MINOR);
        return -1;
    }
    if (desc->abi_minor > MOLT_ABI_MINOR) {
        snprintf(reason, len, "built for plugin ABI %u.%u, newer than this moltd's ABI %u.%u",
                 desc->abi_major, desc->abi_minor, MOLT_ABI_MAJOR, MOLT_ABI_MINOR);
        return -1;
    }
    if (desc->struct_size < WRK_DESC_MIN_SIZE) {
        snprintf(reason, len,
                 "descriptor is %u bytes, smaller than the %zu that ABI %u.%u needs (built for ABI %u.%u)",
                 desc->struct_size, (size_t)WRK_DESC_MIN_SIZE, MOLT_ABI_MAJOR, MOLT_ABI_MINOR,
                 desc->abi_major, desc->abi_minor);
        return -1;
    }
    memset(out, 0, sizeof(*out));
    memcpy(out, desc, desc->struct_size < sizeof(*out) ? desc->struct_size : sizeof(*out));
    if (!out->name || !valid_name(out->name)) {
        snprintf(reason, len, "descriptor has no valid name ([A-Za-z0-9_.-], 1 to 64 characters)");
        return -1;
    }
    if (!out->version || !valid_semver(out->version)) {
        snprintf(reason, len, "plugin %s: version \"%s\" is not semver (MAJOR.MINOR.PATCH)", out->name,
                 out->version ? out->version : "(null)");
        return -1;
    }
    return 0;
}

static wrk_dso_t *dso_find(wrk_plugins_t *ps, const char *path)
{
    for (size_t i = 0; i < ps->ndsos; i++)
        if (strcmp(ps->dsos[i].path, path) == 0)
            return &ps->dsos[i];
    return NULL;
}

static int dso_open(wrk_plugins_t *ps, const char *path, struct molt_instance *inst, wrk_dso_t **out,
                    wrk_load_error_t *err)
{
    wrk_dso_t *d = dso_find(ps, path);
    if (d) {
        *out = d;
        return 0;
    }
    d = &ps->dsos[ps->ndsos];
    memset(d, 0, sizeof(*d));
    d->path = strdup(path);
    if (!d->path) {
        err_set(err, "load", inst, path, "out of memory");
        return -1;
    }
    dlerror();
    d->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!d->handle) {
        const char *e = dlerror();
        err_set(err, "load", inst, path, "dlopen() failed: %s", e ? e : "unknown error");
        goto fail;
    }
    molt_plugin_entry_fn entry;
    /* POSIX guarantees that a function pointer survives a round trip through
     * void *; dlsym() leaves no other way. */
    *(void **)&entry = dlsym(d->handle, MOLT_PLUGIN_ENTRY_SYMBOL);
    if (!entry) {
        err_set(err, "abi", inst, path, "not a molt plugin: no %s symbol", MOLT_PLUGIN_ENTRY_SYMBOL);
        goto fail;
    }
    char reason[sizeof(err->reason)];
    if (wrk_plugin_check_desc(entry(&wrk_host_api), &d->desc, reason, sizeof(reason)) < 0) {
        err_set(err, "abi", inst, path, "%s", reason);
        goto fail;
    }
    ps->ndsos++;
    *out = d;
    return 0;
fail:
    if (d->handle)
        dlclose(d->handle);
    free(d->path);
    memset(d, 0, sizeof(*d));
    return -1;
}

int wrk_plugins_load(wrk_plugins_t *ps, const molt_config_t *cfg, const char *plugin_dir,
                     wrk_plugins_progress_fn progress, void *arg, wrk_load_error_t *err)
{
    memset(ps, 0, sizeof(*ps));
    memset(err, 0, sizeof(*err));
    if (cfg->nplugins == 0)
        return 0;
    ps->dsos = calloc(cfg->nplugins, sizeof(*ps->dsos));
    ps->insts = calloc(cfg->nplugins, sizeof(*ps->insts));
    if (!ps->dsos || !ps->insts) {
        err_set(err, "load", NULL, NULL, "out of memory");
        goto fail;
    }
    ps->ninsts = cfg->nplugins;

    /* Load and check every file before any init runs: a bad file fails the
     * generation without running any plugin code beyond entry points. */
    for (size_t i = 0; i < cfg->nplugins; i++) {
        struct molt_instance *inst = &ps->insts[i];
        inst->index = i;
        inst->cfg = &cfg->plugins[i];
        char path[PATH_MAX];
        if (plugin_dir) {
            const char *base = strrchr(inst->cfg->path, '/');
            snprintf(path, sizeof(path), "%s/%s", plugin_dir, base ? base + 1 : inst->cfg->path);
        } else {
            snprintf(path, sizeof(path), "%s", inst->cfg->path);
        }
        if (dso_open(ps, path, inst, &inst->dso, err) < 0)
            goto fail;
    }

    /* Checks that need the whole set. */
    for (size_t i = 0; i < ps->ninsts; i++) {
        struct molt_instance *inst = &ps->insts[i];
        if (inst->dso->desc.flags & MOLT_PLUGIN_SINGLETON) {
            for (size_t j = 0; j < i; j++) {
                if (ps->insts[j].dso == inst->dso) {
                    err_set(err, "config", inst, inst->dso->path,
                            "plugin %s is a singleton but instance %s already uses it",
                            inst->dso->desc.name, ps->insts[j].cfg->name);
                    goto fail;
                }
            }
        }
        size_t align = 16;
        inst->ctx_off = ps->ctx_total;
        ps->ctx_total += (inst->dso->desc.txn_ctx_size + align - 1) / align * align;
    }
    for (size_t r = 0; r < cfg->nroutes; r++) {
        struct molt_instance *inst = &ps->insts[cfg->routes[r].plugin_index];
        if (!inst->dso->desc.handle) {
            err_set(err, "config", inst, inst->dso->path,
                    "routes[%zu] (prefix \"%s\") points at instance %s, but plugin %s has no request handler",
                    r, cfg->routes[r].prefix, inst->cfg->name, inst->dso->desc.name);
            goto fail;
        }
    }

    for (size_t i = 0; i < ps->ninsts; i++) {
        struct molt_instance *inst = &ps->insts[i];
        if (progress)
            progress(inst, arg);
        if (!inst->dso->desc.init) {
            inst->initialised = true;
            continue;
        }
        char ebuf[sizeof(err->reason)] = "";
        wrk_host_current = inst;
        int rc = inst->dso->desc.init(inst, inst->cfg->config_json, ebuf, sizeof(ebuf));
        wrk_host_current = NULL;
        if (rc != MOLT_OK) {
            ebuf[sizeof(ebuf) - 1] = '\0';
            err_set(err, "init", inst, inst->dso->path, "init failed: %s",
                    ebuf[0] ? ebuf : "(the plugin gave no reason)");
            goto fail;
        }
        inst->initialised = true;
    }
    return 0;
fail:
    wrk_plugins_unload(ps);
    return -1;
}

void wrk_plugins_unload(wrk_plugins_t *ps)
{
    for (size_t i = ps->ninsts; i-- > 0;) {
        struct molt_instance *inst = &ps->insts[i];
        if (inst->initialised && inst->dso->desc.fini) {
            wrk_host_current = inst;
            inst->dso->desc.fini(inst);
            wrk_host_current = NULL;
        }
        inst->initialised = false;
    }
    for (size_t i = 0; i < ps->ndsos; i++) {
        /* Under ASan keep the code mapped so that leak reports can still
         * symbolise plugin frames; otherwise unload. */
#ifndef __SANITIZE_ADDRESS__
        if (ps->dsos[i].handle)
            dlclose(ps->dsos[i].handle);
#endif
        free(ps->dsos[i].path);
    }
    free(ps->dsos);
    free(ps->insts);
    memset(ps, 0, sizeof(*ps));
}
