/*
 * A worker process: forked by the supervisor, it loads its generation's
 * plugins, serves HTTP on the inherited listening sockets, reports to the
 * supervisor over its channel, and stops when told to (or when the
 * supervisor disappears).
 *
 *   boot -> [load plugins] -> READY -> serving -> (STOP) -> draining -> exit 0
 *                         \-> FAIL -> exit MOLT_EXIT_FATAL
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <ev.h>
#include <http_parser.h>

#include "shared/chan.h"
#include "shared/entry.h"
#include "shared/exit.h"
#include "shared/log.h"
#include "shared/util.h"
#include "worker/handoff.h"
#include "worker/health.h"
#include "worker/host.h"
#include "worker/http.h"
#include "worker/pipeline.h"
#include "worker/plugins.h"
#include "worker/privs.h"
#include "worker/router.h"
#include "worker/sibling.h"
#include "worker/txn.h"

#define WRK_STATS_INTERVAL 0.5 /* seconds between counter reports */

typedef enum wrk_state {
    WRK_BOOTING = 0,
    WRK_SERVING = 1,
    WRK_DRAINING = 2,
    WRK_STATE_COUNT
} wrk_state_t;

typedef struct wrk {
    struct ev_loop *loop;
    const molt_config_t *cfg;
    unsigned slot;
    wrk_state_t state;
    int chan;
    int sigfd;
    wrk_plugins_t plugins;
    wrk_router_t *router;
    wrk_http_t *http;
    bool started; /* WORKER_START ran: WORKER_STOP is owed */
    bool paused;  /* handed off to a generation being verified (PAUSE) */
    bool standby; /* a reload's new worker that has not accepted yet (until RESUME) */
    int exit_code;
    ev_io chan_w;
    ev_io sig_w;
    ev_timer stats_w;
    ev_timer drain_w; /* bounds a drain that outlives its supervisor */
} wrk_t;

static wrk_t W;

/* SIBLING messages that came while a RESTORE ran: applied after it, in order
 * (the restore would otherwise overwrite what they changed). */
typedef struct deferred {
    struct deferred *next;
    molt_msg_t msg;
} deferred_t;
static deferred_t *deferred_head, **deferred_tail = &deferred_head;

static void defer_msg(molt_msg_t *msg)
{
    deferred_t *d = malloc(sizeof(*d));
    if (!d) {
        molt_error("out of memory deferring a sibling message during a restore; it is applied now");
        wrk_sibling_on_msg(msg);
        molt_msg_free(msg);
        return;
    }
    d->next = NULL;
    d->msg = *msg;
    d->msg.body = &d->msg.unpacked.data; /* it pointed into the struct just copied */
    *deferred_tail = d;
    deferred_tail = &d->next;
}

/* Applies (or, when the worker exits, just frees) the deferred messages. */
static void drain_deferred(bool apply)
{
    deferred_t *d = deferred_head;
    deferred_head = NULL;
    deferred_tail = &deferred_head;
    while (d) {
        deferred_t *next = d->next;
        if (apply)
            wrk_sibling_on_msg(&d->msg);
        molt_msg_free(&d->msg);
        free(d);
        d = next;
    }
}

static void replay_deferred(void)
{
    drain_deferred(true);
}

/* ---- boot: signals and descriptors ------------------------------------------------------ */

/*
 * Resets what fork() inherited from the supervisor: every signal back to its
 * default, an empty mask; then the worker's own policy. Workers are driven by
 * their channel, not by signals sent to the process group (a Ctrl-C on a
 * foreground moltd reaches every process: the supervisor alone decides).
 * TERM (graceful) and QUIT (fast) still work on a single worker, read from a
 * signalfd watched by the worker's own loop.
 */
static int boot_signals(void)
{
    struct sigaction sa = {.sa_handler = SIG_DFL};
    sigemptyset(&sa.sa_mask);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaction(s, &sa, NULL); /* fails harmlessly for the reserved RT signals */
    sa.sa_handler = SIG_IGN;
    const int ignored[] = {SIGPIPE, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < MOLT_ARRAY_SIZE(ignored); i++)
        sigaction(ignored[i], &sa, NULL);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGQUIT);
    if (sigprocmask(SIG_SETMASK, &set, NULL) < 0)
        return -errno;
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/*
 * Moves the descriptors the worker keeps into the fixed layout of
 * shared/entry.h (channel at 3, listeners from 4) and closes everything else
 * inherited from the supervisor: other workers' channels, the control socket,
 * libev's internal fds. Duplicates go above the target range first so that
 * no dup2() clobbers a source still to be moved.
 */
static int boot_fds(const molt_worker_boot_t *boot)
{
    size_t nkeep = 1 + boot->cfg->nlisten;
    int tmp[1 + MOLT_CONFIG_MAX_LISTEN];
    int lowest_free = MOLT_WRK_FD_CHANNEL + (int)nkeep;

    for (size_t i = 0; i < nkeep; i++) {
        int src = i == 0 ? boot->chan_fd : boot->listen_fds[i - 1];
        tmp[i] = fcntl(src, F_DUPFD_CLOEXEC, lowest_free);
        if (tmp[i] < 0)
            return -errno;
    }
    for (size_t i = 0; i < nkeep; i++) {
        /* dup2 leaves FD_CLOEXEC clear: nothing is exec'd, but keep the
         * flag set as everywhere else in molt. */
        if (dup3(tmp[i], MOLT_WRK_FD_CHANNEL + (int)i, O_CLOEXEC) < 0)
            return -errno;
    }
    if (close_range((unsigned)lowest_free, ~0U, 0) < 0)
        return -errno;
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        if (devnull != STDIN_FILENO)
            close(devnull);
    }
    return 0;
}

/* ---- channel ---------------------------------------------------------------------------- */

static void chan_send(molt_msg_type_t type, const msgpack_sbuffer *body)
{
    int rc = molt_chan_send(W.chan, type, body, NULL, 0);
    if (rc < 0 && rc != -EPIPE)
        molt_warn("sending %s to the supervisor failed: %s", molt_msg_type_name(type), strerror(-rc));
}

static void send_fail(const wrk_load_error_t *e)
{
    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 4);
    molt_mp_pack_kv_str(&body.pk, "phase", e->phase);
    molt_mp_pack_kv_str(&body.pk, "plugin", e->plugin);
    molt_mp_pack_kv_str(&body.pk, "file", e->file);
    molt_mp_pack_kv_str(&body.pk, "reason", e->reason);
    chan_send(MOLT_MSG_FAIL, &body.sb);
    molt_body_free(&body);
}

static void on_loading(const struct molt_instance *inst, void *arg)
{
    (void)arg;
    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 2);
    molt_mp_pack_kv_str(&body.pk, "plugin", inst->cfg->name);
    molt_mp_pack_kv_str(&body.pk, "file", inst->dso->path);
    chan_send(MOLT_MSG_LOADING, &body.sb);
    molt_body_free(&body);
}

static void send_ready(void)
{
    molt_body_t body;
    molt_body_init(&body);
    bool strict = false, replicated = false;
    msgpack_pack_map(&body.pk, 3);
    molt_mp_pack_str(&body.pk, "plugins");
    msgpack_pack_array(&body.pk, W.plugins.ninsts);
    for (size_t i = 0; i < W.plugins.ninsts; i++) {
        const struct molt_instance *inst = &W.plugins.insts[i];
        const molt_plugin_t *d = &inst->dso->desc;
        /* How a reload hands its state over: see worker/handoff.h. */
        const char *state = !d->state_save                       ? ""
                            : d->flags & MOLT_PLUGIN_STRICT_STATE ? (d->flags & MOLT_PLUGIN_REPLICATED ? "strict, replicated" : "strict, partitioned")
                            : d->flags & MOLT_PLUGIN_REPLICATED   ? "snapshot, replicated"
                                                                  : "snapshot, partitioned";
        strict = strict || (d->state_save && (d->flags & MOLT_PLUGIN_STRICT_STATE));
        replicated = replicated || (d->state_save && d->state_restore && (d->flags & MOLT_PLUGIN_REPLICATED));
        msgpack_pack_map(&body.pk, 5);
        molt_mp_pack_kv_str(&body.pk, "name", inst->cfg->name);
        molt_mp_pack_kv_str(&body.pk, "plugin", d->name);
        molt_mp_pack_kv_str(&body.pk, "version", d->version);
        molt_mp_pack_kv_str(&body.pk, "file", inst->dso->path);
        molt_mp_pack_kv_str(&body.pk, "state", state);
    }
    molt_mp_pack_kv_bool(&body.pk, "strict", strict);
    molt_mp_pack_kv_bool(&body.pk, "replicated", replicated);
    chan_send(MOLT_MSG_READY, &body.sb);
    molt_body_free(&body);
}

static void send_stats(void)
{
    wrk_http_stats_t st;
    wrk_http_get_stats(W.http, &st);
    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 4);
    molt_mp_pack_str(&body.pk, "requests");
    msgpack_pack_array(&body.pk, WRK_HTTP_CLASS_COUNT);
    for (int i = 0; i < WRK_HTTP_CLASS_COUNT; i++)
        msgpack_pack_uint64(&body.pk, st.requests[i]);
    molt_mp_pack_kv_u64(&body.pk, "conns", st.conns);
    molt_mp_pack_kv_u64(&body.pk, "accepted", st.accepted);
    molt_mp_pack_kv_u64(&body.pk, "rss", molt_self_rss());
    chan_send(MOLT_MSG_STATS, &body.sb);
    molt_body_free(&body);
}

/* ---- stop ------------------------------------------------------------------------------- */

static void worker_exit(int code)
{
    ev_io_stop(W.loop, &W.chan_w);
    ev_io_stop(W.loop, &W.sig_w);
    ev_timer_stop(W.loop, &W.stats_w);
    ev_timer_stop(W.loop, &W.drain_w);
    /* Connections first: suspended transactions are aborted (txn_abort)
     * while every plugin is still fully there. */
    wrk_health_cancel();
    wrk_handoff_cancel(true);
    drain_deferred(false); /* exiting: freed, not applied */
    wrk_http_free(W.http);
    W.http = NULL;
    wrk_sibling_fini(); /* every wait went with its transaction */
    if (W.started)
        wrk_hooks_run_global(&W.plugins.hooks, MOLT_HOOK_WORKER_STOP, NULL);
    W.started = false;
    wrk_pipeline_fini();
    /* Cancels the timers and fd watchers plugins left (logged), then fini. */
    wrk_plugins_unload(&W.plugins);
    wrk_router_free(W.router);
    molt_close(&W.sigfd);
    W.exit_code = code;
    ev_break(W.loop, EVBREAK_ALL);
}

static void on_drained(void *arg)
{
    (void)arg;
    molt_info("drained: no connection left, exiting");
    send_stats();
    chan_send(MOLT_MSG_DRAINED, NULL);
    worker_exit(W.exit_code);
}

static void on_drain_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    molt_warn("drain timed out after %u ms; closing remaining connections", W.cfg->reload.drain_timeout_ms);
    worker_exit(W.exit_code);
}

/* Graceful stop: stop accepting, let requests in progress finish, close idle
 * keep-alive connections after idle_grace_ms. */
static void stop_graceful(int exit_code, bool own_timeout)
{
    if (W.state == WRK_DRAINING)
        return;
    W.state = WRK_DRAINING;
    W.exit_code = exit_code;
    molt_info("draining: stopped accepting");
    if (own_timeout) {
        ev_timer_init(&W.drain_w, on_drain_timeout, W.cfg->reload.drain_timeout_ms / 1000.0, 0.);
        ev_timer_start(W.loop, &W.drain_w);
    }
    wrk_http_drain(W.http, W.cfg->reload.idle_grace_ms, on_drained, NULL);
}

static void stop_fast(int exit_code)
{
    molt_info("fast stop: closing every connection");
    worker_exit(exit_code);
}

static void on_health_done(int status, const char *error, void *arg)
{
    (void)arg;
    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 2);
    molt_mp_pack_kv_u64(&body.pk, "status", status > 0 ? (uint64_t)status : 0);
    molt_mp_pack_kv_str(&body.pk, "error", error);
    chan_send(MOLT_MSG_HEALTH_RESULT, &body.sb);
    molt_body_free(&body);
}

/* A reload's verify asks: the health request through our own pipeline, then
 * every plugin's health callback (worker/health.c). */
static void health_begin(const molt_msg_t *msg)
{
    char path[1024] = "/healthz";
    uint64_t timeout_ms = 5000;
    molt_msg_get_str(msg, "path", path, sizeof(path));
    molt_msg_get_u64(msg, "timeout_ms", &timeout_ms);
    int rc = W.state == WRK_SERVING ? wrk_health_start(W.loop, W.http, &W.plugins, path, (uint32_t)timeout_ms,
                                                       on_health_done, NULL)
                                    : -ESHUTDOWN;
    if (rc < 0) {
        char err[128];
        snprintf(err, sizeof(err), "could not start the health check: %s", strerror(-rc));
        on_health_done(0, err, NULL);
    }
}

/* Tells every instance where a reload stands (molt_plugin_t.on_reload). */
static void notify_reload(int phase)
{
    for (size_t i = 0; i < W.plugins.ninsts; i++) {
        struct molt_instance *inst = &W.plugins.insts[i];
        if (!inst->dso->desc.on_reload)
            continue;
        wrk_host_current = inst;
        inst->dso->desc.on_reload(inst, phase);
        wrk_host_current = NULL;
    }
}

static void on_quiesced(void *arg)
{
    (void)arg;
    molt_info("handoff: no connection left");
    chan_send(MOLT_MSG_QUIESCED, NULL);
}

/*
 * A reload's handoff: stop accepting; with close, also close every
 * connection politely (the next response says "Connection: close", idle
 * ones get idle_grace_ms) and say QUIESCED once none is left. The worker
 * keeps its state and its process: a rollback resumes it.
 */
static void handoff_pause(bool close)
{
    if (W.state != WRK_SERVING || W.standby)
        return;
    if (!W.paused) {
        W.paused = true;
        wrk_http_pause(W.http);
        notify_reload(MOLT_RELOAD_HANDOFF);
        molt_info("handoff: stopped accepting%s", close ? "; closing connections politely" : "");
    }
    if (close)
        wrk_http_drain(W.http, W.cfg->reload.idle_grace_ms, on_quiesced, NULL);
}

/* Accept: a new worker's first (its handoff is done), or again after a rollback. */
static void handoff_resume(void)
{
    if (W.state != WRK_SERVING)
        return;
    if (W.standby) {
        W.standby = false;
        wrk_http_resume(W.http);
        molt_info("accepting");
        return;
    }
    if (!W.paused)
        return; /* a reload that failed before its handoff changed nothing here */
    W.paused = false;
    wrk_handoff_cancel(false); /* streams still being written to the failed generation */
    wrk_http_undrain(W.http);
    wrk_http_resume(W.http);
    notify_reload(MOLT_RELOAD_RESUMED);
    molt_info("resumed accepting");
}

static void on_chan(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    for (;;) {
        molt_msg_t msg;
        int rc = molt_chan_recv(W.chan, &msg);
        if (rc == -EAGAIN)
            return;
        if (rc == -EPIPE) {
            /* The supervisor is gone. Finish what is in flight, bounded by
             * drain_timeout_ms since nobody will kill us, and exit. */
            molt_warn("supervisor went away (EOF on channel); stopping");
            ev_io_stop(W.loop, &W.chan_w);
            if (W.state != WRK_DRAINING)
                stop_graceful(MOLT_EXIT_ORPHAN, true);
            return;
        }
        if (rc < 0) {
            molt_error("bad message from the supervisor: %s; ignored", strerror(-rc));
            continue;
        }
        if (msg.type == MOLT_MSG_STOP) {
            bool graceful = true, retired = false;
            molt_msg_get_bool(&msg, "graceful", &graceful);
            molt_msg_get_bool(&msg, "retired", &retired);
            if (retired && W.state == WRK_SERVING)
                notify_reload(MOLT_RELOAD_RETIRED);
            if (graceful)
                stop_graceful(MOLT_EXIT_OK, false);
            else
                stop_fast(MOLT_EXIT_OK);
        } else if (msg.type == MOLT_MSG_REPORT) {
            send_stats();
        } else if (msg.type == MOLT_MSG_HEALTH) {
            health_begin(&msg);
        } else if (msg.type == MOLT_MSG_SIBLING && wrk_handoff_restoring()) {
            defer_msg(&msg);
            continue; /* owned by the queue now */
        } else if (msg.type == MOLT_MSG_SIBLING) {
            wrk_sibling_on_msg(&msg);
        } else if (msg.type == MOLT_MSG_SIBLING_STATUS) {
            wrk_sibling_on_status(&msg);
        } else if (msg.type == MOLT_MSG_ACTIVATE) {
            notify_reload(MOLT_RELOAD_ACTIVE);
        } else if (msg.type == MOLT_MSG_PAUSE) {
            bool close = false;
            molt_msg_get_bool(&msg, "close", &close);
            handoff_pause(close);
        } else if (msg.type == MOLT_MSG_RESUME) {
            handoff_resume();
        } else if (msg.type == MOLT_MSG_SAVE) {
            wrk_handoff_on_save(&msg);
        } else if (msg.type == MOLT_MSG_RESTORE) {
            wrk_handoff_on_restore(&msg);
        } else if (msg.type == MOLT_MSG_DUMP) {
            wrk_handoff_on_dump(&msg);
        } else if (msg.type == MOLT_MSG_LOG_FD && msg.nfds == 1) {
            /* The supervisor reopened the log file (SIGUSR1): lines go there from now on. */
            int lrc = molt_log_adopt_fd(msg.fds[0]);
            msg.fds[0] = -1;
            if (lrc < 0)
                molt_error("taking the reopened log file as stderr failed: %s", strerror(-lrc));
            else
                molt_info("log file reopened");
        } else {
            molt_warn("unexpected %s message from the supervisor; ignored", molt_msg_type_name(msg.type));
        }
        molt_msg_free(&msg);
        if (W.exit_code >= 0 && !ev_is_active(&W.chan_w))
            return;
    }
}

static void on_signal(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    struct signalfd_siginfo si;
    while (read(W.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGTERM) {
            molt_info("SIGTERM: graceful stop");
            stop_graceful(MOLT_EXIT_OK, true);
        } else if (si.ssi_signo == SIGQUIT) {
            molt_info("SIGQUIT: fast stop");
            stop_fast(MOLT_EXIT_OK);
            return;
        }
    }
}

static void on_stats(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    send_stats();
}

/* ---- main ------------------------------------------------------------------------------- */

void wrk_main(const molt_worker_boot_t *boot)
{
    char role[32];
    snprintf(role, sizeof(role), "wrk %u", boot->slot);
    molt_log_set_role(role);
    molt_log_set_gen(boot->gen);

    memset(&W, 0, sizeof(W));
    W.cfg = boot->cfg;
    W.slot = boot->slot;
    W.chan = MOLT_WRK_FD_CHANNEL;
    W.sigfd = -1;
    W.exit_code = -1;

    int rc = boot_fds(boot);
    if (rc < 0) {
        molt_crit("moving inherited descriptors into place failed: %s", strerror(-rc));
        _exit(MOLT_EXIT_FATAL);
    }
    W.sigfd = boot_signals();
    if (W.sigfd < 0) {
        molt_crit("signalfd() failed: %s", strerror(-W.sigfd));
        _exit(MOLT_EXIT_FATAL);
    }
    molt_fd_set_nonblock(W.chan, true);

    /* Before any plugin code runs: config user / group (worker/privs.h). */
    {
        wrk_load_error_t perr = {.phase = "privileges"};
        if (wrk_privs_drop(boot->ident, boot->plugin_dir, perr.reason, sizeof(perr.reason)) < 0) {
            molt_crit("cannot start: %s", perr.reason);
            send_fail(&perr);
            _exit(MOLT_EXIT_FATAL);
        }
    }

    /* A fresh loop of our own: the supervisor's default loop, inherited in
     * memory, is never touched here. */
    W.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!W.loop) {
        molt_crit("ev_loop_new() failed");
        _exit(MOLT_EXIT_FATAL);
    }

    wrk_host_loop = W.loop; /* plugins may start timers from init */
    wrk_load_error_t lerr;
    if (wrk_plugins_load(&W.plugins, W.cfg, boot->plugin_dir, on_loading, NULL, &lerr) < 0) {
        molt_error("cannot start: %s%s%s%s%s%s", lerr.plugin[0] ? "plugin " : "", lerr.plugin,
                   lerr.file[0] ? " (" : "", lerr.file, lerr.file[0] ? "): " : (lerr.plugin[0] ? ": " : ""),
                   lerr.reason);
        send_fail(&lerr);
        _exit(MOLT_EXIT_FATAL);
    }
    if (boot->check_only) {
        send_ready();
        wrk_plugins_unload(&W.plugins);
        wrk_host_loop = NULL;
        ev_loop_destroy(W.loop);
        exit(MOLT_EXIT_OK);
    }
    W.router = wrk_router_new(W.cfg->routes, W.cfg->nroutes);
    W.http = wrk_http_new(W.loop, &W.cfg->http, wrk_pipeline_dispatch, NULL);
    if (!W.router || !W.http || wrk_pipeline_init(&W.plugins, W.router) < 0)
        goto oom;
    wrk_http_set_txn_hooks(W.http, wrk_pipeline_abort, wrk_pipeline_release);
    if (W.plugins.hooks.n[MOLT_HOOK_SESSION_OPEN] || W.plugins.hooks.n[MOLT_HOOK_SESSION_CLOSE])
        wrk_http_set_session_hooks(W.http, wrk_pipeline_session_open, wrk_pipeline_session_close, NULL);
    const wrk_cb_t *culprit = NULL;
    if (wrk_hooks_run_global(&W.plugins.hooks, MOLT_HOOK_WORKER_START, &culprit) == MOLT_ERROR) {
        wrk_load_error_t e = {.phase = "start"};
        snprintf(e.plugin, sizeof(e.plugin), "%s", culprit->inst->cfg->name);
        snprintf(e.file, sizeof(e.file), "%s", culprit->inst->dso->path);
        snprintf(e.reason, sizeof(e.reason), "worker_start callback %s failed", culprit->name);
        molt_error("cannot start: plugin %s (%s): %s", e.plugin, e.file, e.reason);
        send_fail(&e);
        _exit(MOLT_EXIT_FATAL);
    }
    W.started = true;
    for (size_t i = 0; i < W.cfg->nlisten; i++) {
        rc = wrk_http_listen(W.http, MOLT_WRK_FD_LISTEN0 + (int)i);
        if (rc < 0) {
            wrk_load_error_t e = {.phase = "listen"};
            snprintf(e.reason, sizeof(e.reason), "listening on %s (%s) failed: %s", W.cfg->listen[i].address,
                     W.cfg->listen[i].name, strerror(-rc));
            send_fail(&e);
            _exit(MOLT_EXIT_FATAL);
        }
    }

    ev_io_init(&W.chan_w, on_chan, W.chan, EV_READ);
    ev_io_start(W.loop, &W.chan_w);
    ev_io_init(&W.sig_w, on_signal, W.sigfd, EV_READ);
    ev_io_start(W.loop, &W.sig_w);
    ev_timer_init(&W.stats_w, on_stats, WRK_STATS_INTERVAL, WRK_STATS_INTERVAL);
    ev_timer_start(W.loop, &W.stats_w);

    wrk_sibling_init(W.loop, W.chan, W.slot, W.cfg->workers);
    wrk_handoff_init(W.loop, W.chan, &W.plugins, W.slot, replay_deferred);
    if (boot->standby) {
        /* Accepting waits for RESUME: the old generation stops first. */
        W.standby = true;
        wrk_http_pause(W.http);
    }
    W.state = WRK_SERVING;
    send_ready();
    molt_info("serving (%zu plugin instance%s)", W.plugins.ninsts, W.plugins.ninsts == 1 ? "" : "s");

    ev_run(W.loop, 0);
    int code = W.exit_code < 0 ? MOLT_EXIT_OK : W.exit_code;
    wrk_host_loop = NULL;
    ev_loop_destroy(W.loop);
    exit(code);
oom: {
    wrk_load_error_t e = {.phase = "start"};
    snprintf(e.reason, sizeof(e.reason), "out of memory");
    send_fail(&e);
    _exit(MOLT_EXIT_FATAL);
}
}
