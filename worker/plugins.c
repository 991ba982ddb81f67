#include "worker/plugins.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/log.h"
#include "worker/host.h"

/* Every field before txn_abort (the first of ABI 1.1) is ABI 1.0; a descriptor must at least cover
 * them. A 1.0 descriptor is larger (its reserved[] follows): those zeros read as "no txn_abort". */
#define WRK_DESC_MIN_SIZE offsetof(molt_plugin_t, txn_abort)
#define WRK_MAX_DEPS 32

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
    for (size_t i = 0; out->deps && out->deps[i].name; i++) {
        const molt_dep_t *d = &out->deps[i];
        if (i >= WRK_MAX_DEPS) {
            snprintf(reason, len, "plugin %s: more than %d dependencies", out->name, WRK_MAX_DEPS);
            return -1;
        }
        if (!valid_name(d->name) || (d->min_version && !valid_semver(d->min_version))) {
            snprintf(reason, len, "plugin %s: deps[%zu] needs a valid plugin name and a semver min_version",
                     out->name, i);
            return -1;
        }
    }
    return wrk_hooks_check(out, reason, len);
}

int wrk_semver_cmp(const char *a, const char *b)
{
    for (int part = 0; part < 3; part++) {
        unsigned long x = strtoul(a, (char **)&a, 10), y = strtoul(b, (char **)&b, 10);
        if (x != y)
            return x < y ? -1 : 1;
        if (*a == '.')
            a++;
        if (*b == '.')
            b++;
    }
    /* 1.2.0-rc1 < 1.2.0 */
    bool pa = *a == '-', pb = *b == '-';
    return pa == pb ? 0 : (pa ? -1 : 1);
}

struct molt_instance *wrk_plugins_find(wrk_plugins_t *ps, const char *name)
{
    for (size_t i = 0; i < ps->ninsts; i++)
        if (strcmp(ps->insts[i].cfg->name, name) == 0)
            return &ps->insts[i];
    return NULL;
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

/* "a (plugin a_p 1.0.0)" */
static void inst_label(const struct molt_instance *inst, char *buf, size_t len)
{
    snprintf(buf, len, "%s (plugin %s %s)", inst->cfg->name, inst->dso->desc.name, inst->dso->desc.version);
}

/* Resolves every instance's dependencies to the instances that provide them. */
static int deps_resolve(wrk_plugins_t *ps, wrk_load_error_t *err)
{
    for (size_t i = 0; i < ps->ninsts; i++) {
        struct molt_instance *inst = &ps->insts[i];
        const molt_dep_t *deps = inst->dso->desc.deps;
        if (!deps || !deps[0].name)
            continue;
        inst->deps = calloc(ps->ninsts, sizeof(*inst->deps));
        if (!inst->deps) {
            err_set(err, "load", inst, inst->dso->path, "out of memory");
            return -1;
        }
        for (size_t d = 0; deps[d].name; d++) {
            bool found = false;
            for (size_t j = 0; j < ps->ninsts; j++) {
                struct molt_instance *prov = &ps->insts[j];
                if (strcmp(prov->dso->desc.name, deps[d].name) != 0)
                    continue;
                found = true;
                char a[160], b[160];
                if (deps[d].min_version && wrk_semver_cmp(prov->dso->desc.version, deps[d].min_version) < 0) {
                    inst_label(inst, a, sizeof(a));
                    inst_label(prov, b, sizeof(b));
                    err_set(err, "deps", inst, inst->dso->path, "%s needs plugin %s >= %s, but instance %s is older",
                            a, deps[d].name, deps[d].min_version, b);
                    return -1;
                }
                if (j == i) {
                    inst_label(inst, a, sizeof(a));
                    err_set(err, "deps", inst, inst->dso->path, "dependency cycle: %s -> %s", a, a);
                    return -1;
                }
                bool dup = false;
                for (size_t k = 0; k < inst->ndeps; k++)
                    dup |= inst->deps[k] == j;
                if (!dup)
                    inst->deps[inst->ndeps++] = j;
            }
            if (!found) {
                char a[160];
                inst_label(inst, a, sizeof(a));
                err_set(err, "deps", inst, inst->dso->path,
                        "%s depends on plugin %s%s%s, which no instance in this generation uses", a, deps[d].name,
                        deps[d].min_version ? " >= " : "", deps[d].min_version ? deps[d].min_version : "");
                return -1;
            }
        }
    }
    return 0;
}

/* Names a cycle among the instances not yet ordered: "a -> b -> a". */
static void deps_cycle(const wrk_plugins_t *ps, const bool *placed, char *buf, size_t len)
{
    size_t start = 0;
    while (placed[start])
        start++;
    /* Follow unplaced dependencies; with every node on a cycle or leading
     * into one, walking ninsts steps is sure to end on the cycle. */
    size_t cur = start;
    for (size_t step = 0; step < ps->ninsts; step++) {
        const struct molt_instance *inst = &ps->insts[cur];
        for (size_t k = 0; k < inst->ndeps; k++) {
            if (!placed[inst->deps[k]]) {
                cur = inst->deps[k];
                break;
            }
        }
    }
    size_t off = 0, node = cur;
    do {
        off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "%s%s", off ? " -> " : "",
                                ps->insts[node].cfg->name);
        const struct molt_instance *inst = &ps->insts[node];
        for (size_t k = 0; k < inst->ndeps; k++) {
            if (!placed[inst->deps[k]]) {
                node = inst->deps[k];
                break;
            }
        }
    } while (node != cur && off < len);
    snprintf(buf + (off < len ? off : len - 1), off < len ? len - off : 1, " -> %s", ps->insts[cur].cfg->name);
}

/* Orders the instances so that each comes after everything it depends on;
 * among those ready, config order. */
static int deps_order(wrk_plugins_t *ps, wrk_load_error_t *err)
{
    bool *placed = calloc(ps->ninsts, sizeof(bool));
    ps->order = calloc(ps->ninsts, sizeof(*ps->order));
    if (!placed || !ps->order) {
        free(placed);
        err_set(err, "load", NULL, NULL, "out of memory");
        return -1;
    }
    for (size_t n = 0; n < ps->ninsts; n++) {
        size_t pick = ps->ninsts;
        for (size_t i = 0; i < ps->ninsts && pick == ps->ninsts; i++) {
            if (placed[i])
                continue;
            bool ready = true;
            for (size_t k = 0; k < ps->insts[i].ndeps; k++)
                ready &= placed[ps->insts[i].deps[k]];
            if (ready)
                pick = i;
        }
        if (pick == ps->ninsts) {
            char chain[400];
            deps_cycle(ps, placed, chain, sizeof(chain));
            err_set(err, "deps", NULL, NULL, "dependency cycle between instances: %s", chain);
            free(placed);
            return -1;
        }
        placed[pick] = true;
        ps->order[n] = pick;
    }
    free(placed);
    return 0;
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
    wrk_host_plugins = ps; /* for api_lookup() from init */

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
                /* by plugin name: two copies of one plugin under other file names count */
                if (strcmp(ps->insts[j].dso->desc.name, inst->dso->desc.name) == 0) {
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

    if (deps_resolve(ps, err) < 0 || deps_order(ps, err) < 0)
        goto fail;
    int hrc = wrk_hooks_build(&ps->hooks, ps->insts, ps->ninsts);
    if (hrc < 0) {
        err_set(err, "load", NULL, NULL, "%s", hrc == -E2BIG ? "too many hook callbacks in this generation"
                                                             : "out of memory");
        goto fail;
    }

    for (size_t n = 0; n < ps->ninsts; n++) {
        struct molt_instance *inst = &ps->insts[ps->order[n]];
        if (progress)
            progress(inst, arg);
        if (!inst->dso->desc.init) {
            inst->initialised = true;
            continue;
        }
        char ebuf[sizeof(err->reason)] = "";
        wrk_host_current = inst;
        wrk_host_in_init = true; /* what only init may do: molt_slot_reserve() */
        int rc = inst->dso->desc.init(inst, inst->cfg->config_json, ebuf, sizeof(ebuf));
        wrk_host_in_init = false;
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
    /* Timers and fd watchers still running would call into plugins being
     * finalised: every instance's go first (fini must not touch them). */
    for (size_t i = 0; i < ps->ninsts; i++)
        wrk_host_cancel_async(&ps->insts[i]);
    for (size_t n = ps->ninsts; n-- > 0;) {
        /* reverse dependency order; config order if the order was never made */
        struct molt_instance *inst = &ps->insts[ps->order ? ps->order[n] : n];
        if (inst->initialised && inst->dso->desc.fini) {
            wrk_host_current = inst;
            inst->dso->desc.fini(inst);
            wrk_host_current = NULL;
            wrk_host_cancel_async(inst); /* started by fini itself: logged, and freed before dlclose */
        }
        inst->initialised = false;
    }
    for (size_t i = 0; i < ps->ninsts; i++) {
        free(ps->insts[i].deps);
        for (size_t k = 0; k < ps->insts[i].napis; k++)
            free(ps->insts[i].apis[k].name);
    }
    if (wrk_host_plugins == ps)
        wrk_host_plugins = NULL;
    wrk_hooks_free(&ps->hooks);
    free(ps->order);
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
