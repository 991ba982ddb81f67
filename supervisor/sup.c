/*
 * The supervisor's life: boot (bind, control socket, first generation), run
 * (keep workers alive, answer the control socket), stop (graceful or fast).
 *
 *   BOOTING --first generation READY--> RUNNING --TERM/INT/QUIT/stop--> STOPPING --> exit
 *      \--a worker fails to start-----------------------------------> STOPPING --> exit 1
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shared/chan.h"
#include "shared/entry.h"
#include "shared/exit.h"
#include "shared/log.h"
#include "shared/util.h"
#include "supervisor/admin.h"
#include "supervisor/gendir.h"
#include "supervisor/ident.h"
#include "supervisor/metrics.h"
#include "supervisor/slots.h"
#include "supervisor/sibling.h"
#include "supervisor/notify.h"
#include "supervisor/sup.h"
#include "supervisor/upgrade.h"

sup_t S;

static const char *const wstate_names[SUP_W_STATE_COUNT] = {
    [SUP_W_EMPTY] = "empty",       [SUP_W_STARTING] = "starting", [SUP_W_READY] = "ready",
    [SUP_W_DRAINING] = "draining", [SUP_W_BACKOFF] = "backoff",   [SUP_W_FAILED] = "failed",
};

static const char *const gen_state_names[SUP_GEN_STATE_COUNT] = {
    [SUP_GEN_STARTING] = "starting",
    [SUP_GEN_ACTIVE] = "active",
    [SUP_GEN_DRAINING] = "draining",
};

const char *sup_wstate_name(sup_wstate_t s)
{
    return s < SUP_W_STATE_COUNT ? wstate_names[s] : "?";
}

const char *sup_gen_state_name(sup_gen_state_t s)
{
    return s < SUP_GEN_STATE_COUNT ? gen_state_names[s] : "?";
}

static void finish(void)
{
    ev_timer_stop(S.loop, &S.stop_w);
    ev_break(S.loop, EVBREAK_ALL);
}

void sup_on_proc_gone(void)
{
    if (S.state == SUP_STOPPING && sup_procs_alive() == 0) {
        molt_info("every worker has exited");
        finish();
    }
}

static void on_stop_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    unsigned n = sup_procs_alive();
    molt_warn("%u worker%s still running after the %s stop timeout; killing %s", n, n == 1 ? "" : "s",
              S.stop_fast ? "fast" : "graceful", n == 1 ? "it" : "them");
    sup_proc_kill_all(SIGKILL);
}

void sup_stop(bool fast)
{
    if (S.state == SUP_STOPPING && (S.stop_fast || !fast))
        return;
    bool was_stopping = S.state == SUP_STOPPING;
    S.state = SUP_STOPPING;
    S.stop_fast = fast;
    molt_notice("%s stop: %u worker%s to stop", fast ? "fast" : "graceful", sup_procs_alive(),
                sup_procs_alive() == 1 ? "" : "s");
    if (!was_stopping) {
        sup_reload_shutdown();
        sup_upgrade_shutdown();
    }
    if (!was_stopping) /* after the reload's outcome, which says READY=1 unless stopping */
        sup_notify_stopping("%s stop: %u worker%s to stop", fast ? "fast" : "graceful", sup_procs_alive(),
                            sup_procs_alive() == 1 ? "" : "s");
    for (size_t i = 0; i < SUP_MAX_GENS; i++)
        if (S.gens[i])
            sup_gen_stop(S.gens[i], !fast);
    /* Workers get drain_timeout_ms to finish (a fast stop: a short grace);
     * whoever is left is killed. */
    uint32_t ms = fast ? SUP_STOP_FAST_GRACE_MS : (S.active ? S.active->cfg->reload.drain_timeout_ms : 0);
    if (was_stopping)
        ev_timer_stop(S.loop, &S.stop_w);
    ev_timer_init(&S.stop_w, on_stop_timeout, ms / 1000.0 + 0.05, 0.);
    ev_timer_start(S.loop, &S.stop_w);
    sup_on_proc_gone();
}

void sup_on_gen_ready(sup_gen_t *gen)
{
    if (S.state != SUP_BOOTING) {
        /* A reload's generation stays "starting" through verify, so that a
         * death there fails the reload; it becomes active at commit. */
        sup_reload_on_ready(gen);
        return;
    }
    gen->state = SUP_GEN_ACTIVE;
    gen->served = true;
    {
        S.active = gen;
        S.state = SUP_RUNNING;
        molt_notice("ready: generation %llu (%s) serving with %u worker%s", (unsigned long long)gen->number,
                    gen->id, gen->nworkers, gen->nworkers == 1 ? "" : "s");
        sup_notify_ready(true, "generation %llu serving with %u worker%s", (unsigned long long)gen->number,
                         gen->nworkers, gen->nworkers == 1 ? "" : "s");
        /* Directories left by earlier runs: only now that this generation
         * serves, so that a failed start keeps what a rollback could use. */
        const char *in_use[] = {gen->dir};
        int rc = sup_gendir_prune(gen->cfg->runtime_dir, gen->cfg->reload.keep_generations, in_use, 1);
        if (rc < 0)
            molt_warn("pruning generation directories in %s failed: %s", gen->cfg->runtime_dir,
                      strerror(-rc));
    }
}

void sup_on_gen_failed(sup_gen_t *gen, const char *reason)
{
    if (S.state != SUP_BOOTING) {
        sup_reload_on_failed(gen, reason);
        return;
    }
    {
        molt_crit("cannot start: %s", reason);
        sup_notify_status("cannot start: %s", reason);
        S.exit_code = MOLT_EXIT_FAILURE;
        /* The other workers may be hung in a plugin's init: no grace. */
        gen->state = SUP_GEN_DRAINING;
        sup_proc_kill_all(SIGKILL);
        S.state = SUP_STOPPING;
        ev_timer_init(&S.stop_w, on_stop_timeout, SUP_STOP_FAST_GRACE_MS / 1000.0, 0.);
        ev_timer_start(S.loop, &S.stop_w);
        /* Entries of the failed generation that are already dead. */
        for (size_t i = 0; i < SUP_MAX_PROCS; i++)
            if (S.procs[i].gen == gen && S.procs[i].pid == 0 && S.procs[i].state != SUP_W_EMPTY)
                S.procs[i].state = SUP_W_DRAINING;
        sup_on_proc_gone();
    }
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop, (void)revents;
    switch (w->signum) {
    case SIGTERM:
    case SIGINT:
        molt_notice("%s: graceful stop", w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
        sup_stop(false);
        break;
    case SIGQUIT:
        molt_notice("SIGQUIT: fast stop");
        sup_stop(true);
        break;
    case SIGHUP:
        molt_notice("SIGHUP: reload requested");
        sup_reload_request(NULL, NULL);
        break;
    case SIGUSR1: {
        /* Log rotation: the file was renamed; write to a new one at the path. */
        if (!molt_log_file()) {
            molt_info("SIGUSR1: no log.file, logs go to stderr; nothing to reopen");
            break;
        }
        int rc = molt_log_reopen();
        if (rc < 0) {
            molt_error("SIGUSR1: reopening log.file %s failed: %s; still writing to the file open before",
                       molt_log_file(), strerror(-rc));
            break;
        }
        unsigned n = sup_procs_send_log_fd(STDERR_FILENO);
        molt_notice("SIGUSR1: log.file %s reopened; %u worker%s told", molt_log_file(), n, n == 1 ? "" : "s");
        break;
    }
    case SIGUSR2:
        molt_notice("SIGUSR2: upgrade requested (binary %s)", sup_upgrade_binary());
        sup_upgrade_request(NULL, NULL);
        break;
    }
}

static int sup_run_end(void);

static void signals_start(void)
{
    struct {
        ev_signal *w;
        int sig;
    } sigs[] = {{&S.sig_term, SIGTERM}, {&S.sig_int, SIGINT}, {&S.sig_quit, SIGQUIT},
                {&S.sig_hup, SIGHUP},   {&S.sig_usr1, SIGUSR1}, {&S.sig_usr2, SIGUSR2}};
    for (size_t i = 0; i < MOLT_ARRAY_SIZE(sigs); i++) {
        ev_signal_init(sigs[i].w, on_signal, sigs[i].sig);
        ev_signal_start(S.loop, sigs[i].w);
    }
    signal(SIGPIPE, SIG_IGN);
    ev_child_init(&S.child_w, sup_on_child, 0, 0);
    ev_child_start(S.loop, &S.child_w);
}

/*
 * The new binary after an upgrade's exec: everything comes from the state
 * (supervisor/upgrade.h), nothing from the config file, which may already
 * hold the next reload's config.
 */
static int sup_resume(int upgrade_fd, const char *failed_reason)
{
    sup_notify_init(); /* the old image put the variables back for us */
    S.loop = ev_default_loop(EVFLAG_AUTO);
    if (!S.loop) {
        molt_crit("upgrade: ev_default_loop() failed");
        return MOLT_EXIT_FAILURE;
    }
    if (sup_upgrade_resume(upgrade_fd, failed_reason) < 0) {
        /* Nothing to go back to (logged). No cleanup: the descriptors and
         * files are the running service's, half-restored; the workers see
         * their channels close and drain. */
        return MOLT_EXIT_FAILURE;
    }
    const molt_config_t *cfg = S.active->cfg;
    molt_log_set_level((molt_log_level_t)cfg->log_level);
    molt_log_set_json(cfg->log_format == MOLT_LOG_FORMAT_JSON);
    molt_log_detect_journal();
    S.state = SUP_RUNNING;
    S.exit_code = MOLT_EXIT_OK;
    signals_start();
    sup_notify_watchdog_start(S.loop);
    sup_upgrade_resumed();
    ev_run(S.loop, 0);
    return sup_run_end();
}

int sup_run(const char *config_path, int upgrade_fd, const char *failed_reason)
{
    char err[2048];
    molt_config_t *cfg = NULL;
    int rc;
    memset(&S, 0, sizeof(S));
    S.ctl_fd = -1;
    S.config_arg = config_path;
    S.started_wall = molt_wall_ms();
    S.started_mono = molt_now_ms();
    sup_metrics_reset();
    molt_log_set_role("sup");
    if (upgrade_fd >= 0)
        return sup_resume(upgrade_fd, failed_reason);
    sup_upgrade_init();

    if (molt_config_load(config_path, &cfg, err, sizeof(err)) < 0) {
        molt_crit("cannot start: %s", err);
        return MOLT_EXIT_FAILURE;
    }
    molt_log_set_level((molt_log_level_t)cfg->log_level);
    molt_log_set_json(cfg->log_format == MOLT_LOG_FORMAT_JSON);
    molt_log_detect_journal();
    /* log.file becomes stderr, before anything else is logged: workers inherit it. */
    if (cfg->log_file && (rc = molt_log_open_file(cfg->log_file)) < 0) {
        molt_crit("cannot start: %s: log.file: open(%s) failed: %s", cfg->path, cfg->log_file, strerror(-rc));
        molt_config_free(cfg);
        return MOLT_EXIT_FAILURE;
    }
    molt_notice("moltd %s starting (pid %d, config %s)", sup_version, (int)getpid(), cfg->path);
    sup_notify_init(); /* and out of the environment before anything is forked */
    /* user / group: a config error now rather than after binding anything. */
    molt_worker_ident_t ident;
    if (sup_ident_resolve(cfg, &ident, err, sizeof(err)) < 0) {
        molt_crit("cannot start: %s: %s", cfg->path, err);
        molt_config_free(cfg);
        return MOLT_EXIT_FAILURE;
    }
    bool private_runtime = !ident.drop && !cfg->control_group;
    sup_ident_free(&ident);
    bool runtime_missing = access(cfg->runtime_dir, F_OK) < 0 && errno == ENOENT;

    /* Before the control socket, which lives there by default. */
    if (sup_gendir_check_runtime(cfg->runtime_dir, true, err, sizeof(err)) < 0) {
        molt_crit("cannot start: %s: %s", cfg->path, err);
        molt_config_free(cfg);
        return MOLT_EXIT_FAILURE;
    }
    /* Created 0700. Workers of another user must pass through it to their
     * generation's directory, and control.group's members to the control
     * socket: 0711 lets them through without listing it; what is inside
     * guards itself (gen-* 0750 root:group, the socket's mode and peer check). */
    if (runtime_missing && !private_runtime && chmod(cfg->runtime_dir, 0711) < 0)
        molt_warn("chmod(%s, 0711) failed: %s; workers of user %s may not reach their plugins", cfg->runtime_dir,
                  strerror(errno), cfg->user ? cfg->user : "?");
    S.loop = ev_default_loop(EVFLAG_AUTO);
    if (!S.loop) {
        molt_crit("cannot start: ev_default_loop() failed");
        molt_config_free(cfg);
        return MOLT_EXIT_FAILURE;
    }
    S.nlisten = cfg->nlisten;
    if (sup_listen_activation_init() < 0) {
        molt_crit("cannot start: the socket-activation variables are wrong (see above)");
        sup_notify_status("cannot start: the socket-activation variables are wrong");
        molt_config_free(cfg);
        return MOLT_EXIT_FAILURE;
    }
    if (sup_listen_activation_check(cfg) < 0) {
        molt_crit("cannot start: systemd passed a socket that no listener claims (see above)");
        sup_notify_status("cannot start: systemd passed a socket that no listener claims");
        molt_config_free(cfg);
        return MOLT_EXIT_FAILURE;
    }
    if (sup_listen_open(cfg, S.listen_fds) < 0) {
        molt_crit("cannot start: a listener could not be opened (see above)");
        sup_notify_status("cannot start: a listener could not be opened");
        molt_config_free(cfg);
        return MOLT_EXIT_FAILURE;
    }
    if (sup_admin_open(cfg, err, sizeof(err)) < 0) {
        molt_crit("cannot start: %s: %s", cfg->path, err);
        sup_notify_status("cannot start: the admin listener could not be opened");
        sup_listen_close(S.listen_fds, S.nlisten);
        molt_config_free(cfg);
        return MOLT_EXIT_FAILURE;
    }
    if (sup_ctl_open(cfg) < 0) {
        molt_crit("cannot start: the control socket could not be opened (see above)");
        sup_notify_status("cannot start: the control socket could not be opened");
        sup_admin_close();
        sup_listen_close(S.listen_fds, S.nlisten);
        molt_config_free(cfg);
        return MOLT_EXIT_FAILURE;
    }
    signals_start();
    sup_notify_watchdog_start(S.loop);

    S.state = SUP_BOOTING;
    S.exit_code = MOLT_EXIT_OK;
    sup_gen_t *gen = NULL;
    if (sup_gen_new(cfg, &gen, err, sizeof(err)) < 0) {
        molt_crit("cannot start: %s: %s", cfg->path, err);
        molt_config_free(cfg);
        S.exit_code = MOLT_EXIT_FAILURE;
        goto out;
    }
    if (sup_gen_spawn(gen) < 0) {
        sup_on_gen_failed(gen, "could not spawn the workers (see above)");
        ev_run(S.loop, 0);
        goto out;
    }
    ev_run(S.loop, 0);
out:
    return sup_run_end();
}

/* The end of a run: everything freed and closed, the control socket's file removed. */
static int sup_run_end(void)
{
    sup_sib_free_all();
    sup_reload_free();
    sup_handoff_free();
    sup_dump_free();
    sup_slots_free();
    sup_ctl_close();
    sup_admin_close();
    sup_listen_close(S.listen_fds, S.nlisten);
    for (size_t i = 0; i < SUP_MAX_GENS; i++)
        sup_gen_free(S.gens[i]);
    for (size_t i = 0; i < SUP_MAX_PROCS; i++)
        if (S.procs[i].state != SUP_W_EMPTY)
            molt_close(&S.procs[i].chan);
    molt_notice("stopped%s", S.exit_code ? " (startup failed)" : "");
    sup_notify_close(S.loop);
    ev_loop_destroy(S.loop);
    return S.exit_code;
}

/*
 * log.file as a start would open it (append, create), without creating
 * anything: the file is writable, or it is missing and its directory lets
 * moltd create it. 0, or -1 with why in err.
 */
static int check_log_file(const char *path, char *err, size_t len)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd >= 0) {
        struct stat st;
        bool ok = fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode);
        close(fd);
        if (ok)
            return 0;
        snprintf(err, len, "log.file: %s is not a file", path);
        return -1;
    }
    if (errno != ENOENT) {
        snprintf(err, len, "log.file: open(%s) failed: %s", path, strerror(errno));
        return -1;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    if (access(dir, W_OK | X_OK) < 0) {
        snprintf(err, len, "log.file: %s does not exist and cannot be created in %.1024s: %s", path, dir,
                 strerror(errno));
        return -1;
    }
    return 0;
}

/*
 * moltd -t: validate the config, then load and initialise every plugin in a
 * throwaway worker (the supervisor itself never dlopens a plugin) and report.
 * Binds nothing, writes nothing, creates not even runtime_dir. 0 if good, 1
 * with the reason otherwise.
 */
int sup_check(const char *config_path)
{
    char err[2048];
    molt_config_t *cfg = NULL;
    molt_log_set_role("sup");
    if (molt_config_load(config_path, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "moltd: %s\n", err);
        fprintf(stderr, "moltd: configuration %s test failed\n", config_path);
        return MOLT_EXIT_FAILURE;
    }
    int rc = MOLT_EXIT_FAILURE;
    molt_worker_ident_t ident = {0};
    /* What a start would refuse before forking anything: runtime_dir, file
     * types, modes, owners, sha256 pins. Nothing is created. */
    if (sup_gendir_check(cfg, err, sizeof(err)) < 0 ||
        (cfg->log_file && check_log_file(cfg->log_file, err, sizeof(err)) < 0)) {
        fprintf(stderr, "moltd: %s: %s\n", cfg->path, err);
        fprintf(stderr, "moltd: configuration %s test failed\n", config_path);
        goto out;
    }
    /* Names that must exist, ids moltd must be able to take; the plugins
     * below are loaded as the workers' user, as a start would. */
    gid_t ctl_gid;
    if (sup_ident_resolve(cfg, &ident, err, sizeof(err)) < 0 ||
        (cfg->control_group && sup_ident_group(cfg->control_group, &ctl_gid, err, sizeof(err)) < 0)) {
        fprintf(stderr, "moltd: %s: %s\n", cfg->path, err);
        fprintf(stderr, "moltd: configuration %s test failed\n", config_path);
        goto out;
    }
    int sv[2];
    if (molt_chan_pair(sv) < 0) {
        fprintf(stderr, "moltd: socketpair() failed: %s\n", strerror(errno));
        goto out;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "moltd: fork() failed: %s\n", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        goto out;
    }
    if (pid == 0) {
        close(sv[0]);
        int no_listeners[MOLT_CONFIG_MAX_LISTEN];
        for (size_t i = 0; i < MOLT_CONFIG_MAX_LISTEN; i++)
            no_listeners[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        molt_worker_boot_t boot = {
            .cfg = cfg, .chan_fd = sv[1], .listen_fds = no_listeners, .check_only = 1, .ident = &ident};
        wrk_main(&boot);
    }
    close(sv[1]);
    char reason[1024] = "", loading[512] = "";
    bool ready = false;
    struct pollfd pfd = {.fd = sv[0], .events = POLLIN};
    uint64_t deadline = molt_now_ms() + cfg->reload.load_timeout_ms;
    while (!ready && !reason[0]) {
        uint64_t now = molt_now_ms();
        if (now >= deadline) {
            snprintf(reason, sizeof(reason), "plugins did not initialise within load_timeout_ms (%u ms)%s%s",
                     cfg->reload.load_timeout_ms, loading[0] ? " while initialising " : "", loading);
            kill(pid, SIGKILL);
            break;
        }
        if (poll(&pfd, 1, (int)(deadline - now)) <= 0)
            continue;
        molt_msg_t msg;
        int r = molt_chan_recv(sv[0], &msg);
        if (r == -EPIPE)
            break;
        if (r < 0)
            continue;
        if (msg.type == MOLT_MSG_READY) {
            ready = true;
        } else if (msg.type == MOLT_MSG_SLOT_RESERVE) {
            sup_slot_answer(sv[0], &msg);
        } else if (msg.type == MOLT_MSG_LOADING) {
            char plugin[128] = "", file[256] = "";
            molt_msg_get_str(&msg, "plugin", plugin, sizeof(plugin));
            molt_msg_get_str(&msg, "file", file, sizeof(file));
            snprintf(loading, sizeof(loading), "plugin %s (%s)", plugin, file);
        } else if (msg.type == MOLT_MSG_FAIL) {
            char plugin[128] = "", file[256] = "", why[512] = "";
            molt_msg_get_str(&msg, "plugin", plugin, sizeof(plugin));
            molt_msg_get_str(&msg, "file", file, sizeof(file));
            molt_msg_get_str(&msg, "reason", why, sizeof(why));
            if (plugin[0])
                snprintf(reason, sizeof(reason), "plugin %s (%s): %s", plugin, file, why);
            else
                snprintf(reason, sizeof(reason), "%s", why);
        }
        molt_msg_free(&msg);
    }
    close(sv[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!ready && !reason[0]) {
        if (WIFSIGNALED(status))
            snprintf(reason, sizeof(reason), "the plugin loader was killed by signal %d (%s)%s%s",
                     WTERMSIG(status), strsignal(WTERMSIG(status)), loading[0] ? " while initialising " : "",
                     loading);
        else
            snprintf(reason, sizeof(reason), "the plugin loader exited with code %d%s%s", WEXITSTATUS(status),
                     loading[0] ? " while initialising " : "", loading);
    }
    if (ready && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("moltd: configuration %s is ok (%zu plugin instance%s, %zu route%s, %u worker%s)\n", cfg->path,
               cfg->nplugins, cfg->nplugins == 1 ? "" : "s", cfg->nroutes, cfg->nroutes == 1 ? "" : "s",
               cfg->workers, cfg->workers == 1 ? "" : "s");
        rc = MOLT_EXIT_OK;
    } else {
        if (!reason[0])
            snprintf(reason, sizeof(reason), "plugins failed to finalise cleanly");
        fprintf(stderr, "moltd: %s: %s\n", cfg->path, reason);
        fprintf(stderr, "moltd: configuration %s test failed\n", config_path);
    }
out:
    sup_ident_free(&ident);
    sup_slots_free();
    molt_config_free(cfg);
    return rc;
}
