/*
 * moltd --check-plugin FILE: the child side. The supervisor forks a
 * throwaway process that runs this (the supervisor itself never dlopens a
 * plugin); it loads the file exactly as a worker does (dlopen RTLD_NOW |
 * RTLD_LOCAL, the entry symbol, wrk_plugin_check_desc()), does not call
 * init, and tells the plugin's author what this moltd sees in it.
 *
 * The report is built in memory and printed at the end, so a plugin that
 * crashes the process leaves no half-printed report: the parent then says
 * where it died, from the last step written to progress_fd.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shared/entry.h"
#include "shared/exit.h"
#include "worker/hooks.h"
#include "worker/host.h"
#include "worker/plugins.h"

static int progress_fd = -1;

/* Names the step about to run; the parent reports the last one if we die. */
static void step(const char *what)
{
    if (progress_fd < 0)
        return;
    char line[128];
    int n = snprintf(line, sizeof(line), "%s\n", what);
    if (n > 0 && write(progress_fd, line, (size_t)n) < 0) {
        /* the parent is gone or the pipe is full: the report still works */
    }
}

static void refuse(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void refuse(const char *path, const char *fmt, ...)
{
    char reason[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    fprintf(stderr, "moltd: %s: refused: %s\n", path, reason);
    fflush(stderr);
    step("done");
    _exit(MOLT_EXIT_FAILURE);
}

/* What fork() inherited from moltd: default dispositions, nothing blocked, so
 * that a crashing plugin dies of its signal (no sanitizer handler either). */
static void reset_signals(void)
{
    struct sigaction sa = {.sa_handler = SIG_DFL};
    sigemptyset(&sa.sa_mask);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaction(s, &sa, NULL); /* fails harmlessly for the reserved RT signals */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static const char *hook_level(unsigned id)
{
    switch (id) {
    case MOLT_HOOK_WORKER_START:
    case MOLT_HOOK_WORKER_STOP:
        return "global";
    case MOLT_HOOK_SESSION_OPEN:
    case MOLT_HOOK_SESSION_CLOSE:
        return "session";
    default:
        return "transaction";
    }
}

static const char *yes_no(const void *p)
{
    return p ? "yes" : "no";
}

#define LABEL "%-17s"

static void describe(FILE *f, const char *file, const molt_plugin_t *d)
{
    fprintf(f, LABEL "%s\n", "file:", file);
    fprintf(f, LABEL "%s\n", "name:", d->name);
    fprintf(f, LABEL "%s\n", "version:", d->version);
    fprintf(f, LABEL "built for ABI %u.%u, this moltd speaks ABI %u.%u\n", "abi:", d->abi_major, d->abi_minor,
            MOLT_ABI_MAJOR, MOLT_ABI_MINOR);
    fprintf(f, LABEL "%u bytes (this moltd's molt_plugin_t: %zu bytes%s)\n", "struct size:", d->struct_size,
            sizeof(molt_plugin_t),
            d->struct_size > sizeof(molt_plugin_t) ? "; the fields past it are ignored" : "");

    fprintf(f, LABEL, "flags:");
    static const struct {
        uint32_t bit;
        const char *name;
    } flags[] = {{MOLT_PLUGIN_SINGLETON, "singleton"},
                 {MOLT_PLUGIN_STRICT_STATE, "strict_state"},
                 {MOLT_PLUGIN_REPLICATED, "replicated"}};
    uint32_t rest = d->flags;
    const char *sep = "";
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (d->flags & flags[i].bit) {
            fprintf(f, "%s%s", sep, flags[i].name);
            sep = ", ";
            rest &= ~flags[i].bit;
        }
    }
    if (rest)
        fprintf(f, "%sunknown bits 0x%x (ignored by this moltd)", sep, rest);
    fprintf(f, "%s\n", d->flags ? "" : "none");

    fprintf(f, LABEL, "dependencies:");
    if (!d->deps || !d->deps[0].name)
        fprintf(f, "none");
    for (size_t i = 0; d->deps && d->deps[i].name; i++)
        fprintf(f, "%s%s %s%s", i ? ", " : "", d->deps[i].name,
                d->deps[i].min_version ? ">= " : "(any version)",
                d->deps[i].min_version ? d->deps[i].min_version : "");
    fprintf(f, "\n");

    fprintf(f, LABEL "%s\n", "init:", d->init ? "yes (not called by this check)" : "no");
    fprintf(f, LABEL "%s\n", "fini:", yes_no((const void *)d->fini));
    fprintf(f, LABEL "%s\n", "request handler:", yes_no((const void *)d->handle));
    fprintf(f, LABEL "%s\n", "txn_abort:", yes_no((const void *)d->txn_abort));
    fprintf(f, LABEL "%s\n", "on_reload:", yes_no((const void *)d->on_reload));

    if (d->nhooks)
        fprintf(f, LABEL "%zu callback%s (in descriptor order; each hook runs by priority, lower first)\n",
                "hooks:", d->nhooks, d->nhooks == 1 ? "" : "s");
    else
        fprintf(f, LABEL "none\n", "hooks:");
    for (size_t i = 0; i < d->nhooks; i++) {
        const molt_hook_t *h = &d->hooks[i];
        fprintf(f, "  %-17s %-12s priority %5d  callback \"%s\"\n", wrk_hook_name(h->id), hook_level(h->id),
                h->priority, h->name ? h->name : wrk_hook_name(h->id));
    }
    fprintf(f, LABEL "%zu bytes\n", "txn_ctx_size:", d->txn_ctx_size);
    fprintf(f, LABEL "version %u; save %s, restore %s, reset %s\n", "state:", d->state_version,
            yes_no((const void *)d->state_save), yes_no((const void *)d->state_restore),
            yes_no((const void *)d->state_reset));
    fprintf(f, LABEL "%s\n", "health:", yes_no((const void *)d->health));
    fprintf(f, "ok: moltd %s can load %s %s (init not called; check a config with moltd -c FILE -t)\n",
            MOLT_VERSION, d->name, d->version);
}

void wrk_check_plugin(const char *path, int fd)
{
    progress_fd = fd;
    reset_signals();

    struct stat st;
    if (stat(path, &st) < 0)
        refuse(path, "cannot open it: %s", strerror(errno));
    if (!S_ISREG(st.st_mode))
        refuse(path, "not a regular file");
    char file[PATH_MAX];
    if (!realpath(path, file))
        snprintf(file, sizeof(file), "%s", path);
    /* dlopen() searches the library path for a name without a slash; the
     * user means the file. */
    char open_path[PATH_MAX + 2];
    snprintf(open_path, sizeof(open_path), "%s%s", strchr(path, '/') ? "" : "./", path);

    step("while dlopen() loaded it and ran its constructors");
    dlerror();
    void *handle = dlopen(open_path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *e = dlerror();
        refuse(path, "dlopen() failed: %s", e ? e : "unknown error");
    }
    molt_plugin_entry_fn entry;
    /* POSIX guarantees that a function pointer survives a round trip through
     * void *; dlsym() leaves no other way. */
    *(void **)&entry = dlsym(handle, MOLT_PLUGIN_ENTRY_SYMBOL);
    if (!entry)
        refuse(path,
               "not a molt plugin: no %s symbol (define the plugin with MOLT_PLUGIN() from <molt/plugin.h>)",
               MOLT_PLUGIN_ENTRY_SYMBOL);

    step("while calling " MOLT_PLUGIN_ENTRY_SYMBOL "()");
    const molt_plugin_t *desc = entry(&wrk_host_api);

    step("while checking its descriptor");
    molt_plugin_t d;
    char reason[512];
    if (wrk_plugin_check_desc(desc, &d, reason, sizeof(reason)) < 0)
        refuse(path, "%s", reason);

    step("while reading its descriptor");
    char *report = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&report, &len);
    if (!f)
        refuse(path, "out of memory");
    describe(f, file, &d);
    if (fclose(f) != 0)
        refuse(path, "out of memory");
    fwrite(report, 1, len, stdout);
    fflush(stdout);
    free(report);
    step("done");
    _exit(MOLT_EXIT_OK);
}
