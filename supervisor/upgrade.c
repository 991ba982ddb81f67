/*
 * Supervisor self-upgrade (supervisor/upgrade.h): the request, the check
 * child, the exec, and the new binary's restore.
 */
#include "supervisor/upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shared/chan.h"
#include "shared/log.h"
#include "shared/stream.h"
#include "shared/util.h"
#include "supervisor/metrics.h"
#include "supervisor/notify.h"

#define UP_MAGIC "molt-upgrade"
/* listeners, channels, the control socket and its connections, the admin
 * listener, the old binary, the state */
#define UP_MAX_KEEP (MOLT_CONFIG_MAX_LISTEN + SUP_MAX_PROCS + 80)
/* An upgrade state is small (configs and tables); a bigger one is not ours. */
#define UP_MAX_STATE (64u * 1024 * 1024)

static struct {
    char exe[PATH_MAX]; /* the binary upgrades execute: where this process's came from */
    int exe_fd;         /* this process's binary, open: a failed restore after an exec comes back to it */
    uint64_t upgrades, upgraded_wall;
    /* the running upgrade */
    bool running;
    sup_upgrade_done_fn done;
    void *arg;
    uint64_t t0; /* monotonic ms: asked for */
    pid_t check_pid;
    int check_out; /* the check's stdout and stderr */
    int check_state;
    ev_io out_w;
    ev_timer timer;
    bool timed_out;
    char out[4096]; /* what the check printed (its last line tells) */
    size_t out_len;
    /* set by a resume, told once the loop runs */
    char *resumed_from; /* the version that wrote the state */
    char *failed;       /* a fallback: why the new binary could not restore */
    uint64_t resumed_t0;
    unsigned resumed_workers, resumed_gens;
} U = {.exe_fd = -1, .check_out = -1, .check_state = -1};

/* ---- this process's binary -------------------------------------------------------------------- */

void sup_upgrade_init(void)
{
    ssize_t n = readlink("/proc/self/exe", U.exe, sizeof(U.exe) - 1);
    U.exe[n > 0 ? n : 0] = '\0';
    /* Kept open for its whole life: an upgrade whose new binary cannot
     * restore comes back to this very file, even once it has been replaced. */
    U.exe_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (U.exe_fd < 0)
        molt_warn("open(/proc/self/exe) failed: %s; an upgrade that fails after its exec cannot come back",
                  strerror(errno));
}

const char *sup_upgrade_binary(void)
{
    return U.exe;
}

void sup_upgrade_status(json_t *status)
{
    json_object_set_new(status, "binary", molt_json_text(U.exe));
    json_object_set_new(status, "upgrades", json_integer((json_int_t)U.upgrades));
    json_object_set_new(status, "upgraded_ms",
                        U.upgraded_wall ? json_integer((json_int_t)U.upgraded_wall) : json_null());
}

void *sup_upgrade_waiter(void)
{
    return U.running ? U.arg : NULL;
}

/* ---- writing the state ------------------------------------------------------------------------ */

static void state_pack(msgpack_packer *pk)
{
    unsigned n = 15 + sup_procs_upgrade_count() + sup_ctl_upgrade_count() + sup_admin_upgrade_count() +
                 sup_metrics_upgrade_count() + sup_reload_upgrade_count() + sup_handoff_upgrade_count() +
                 sup_sib_upgrade_count() + sup_slots_upgrade_count();
    msgpack_pack_map(pk, n);
    molt_mp_pack_kv_str(pk, "magic", UP_MAGIC);
    molt_mp_pack_kv_u64(pk, "format", sup_upgrade_format);
    molt_mp_pack_kv_u64(pk, "chan", MOLT_CHAN_VERSION);
    molt_mp_pack_kv_u64(pk, "stream", MOLT_STREAM_VERSION);
    molt_mp_pack_kv_str(pk, "version", sup_version);
    sup_up_pack_i64(pk, "pid", getpid());
    molt_mp_pack_kv_str(pk, "exe", U.exe);
    sup_up_pack_i64(pk, "exe_fd", U.exe_fd);
    molt_mp_pack_kv_u64(pk, "t0", U.t0);
    molt_mp_pack_kv_u64(pk, "started_wall", S.started_wall);
    molt_mp_pack_kv_u64(pk, "started_mono", S.started_mono);
    molt_mp_pack_kv_u64(pk, "upgrades", U.upgrades);
    molt_mp_pack_kv_u64(pk, "upgraded_wall", U.upgraded_wall);
    sup_up_pack_str(pk, "log_file", molt_log_file());
    molt_mp_pack_str(pk, "listen");
    msgpack_pack_array(pk, (uint32_t)S.nlisten);
    for (size_t i = 0; i < S.nlisten; i++)
        msgpack_pack_int(pk, S.listen_fds[i]);
    sup_procs_upgrade_pack(pk);
    sup_ctl_upgrade_pack(pk);
    sup_admin_upgrade_pack(pk);
    sup_metrics_upgrade_pack(pk);
    sup_reload_upgrade_pack(pk);
    sup_handoff_upgrade_pack(pk);
    sup_sib_upgrade_pack(pk);
    sup_slots_upgrade_pack(pk);
}

/* The state in a new memfd (close-on-exec, at offset 0), or -1 with why in err. */
static int state_write(char *err, size_t len)
{
    int fd = memfd_create("molt-upgrade-state", MFD_CLOEXEC);
    if (fd < 0) {
        snprintf(err, len, "memfd_create() failed: %s", strerror(errno));
        return -1;
    }
    molt_body_t body;
    molt_body_init(&body);
    state_pack(&body.pk);
    size_t off = 0;
    while (off < body.sb.size) {
        ssize_t w = write(fd, body.sb.data + off, body.sb.size - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, len, "writing the upgrade state failed: %s", w < 0 ? strerror(errno) : "short write");
            molt_body_free(&body);
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    molt_body_free(&body);
    if (lseek(fd, 0, SEEK_SET) < 0) {
        snprintf(err, len, "lseek() on the upgrade state failed: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Every descriptor the next image must have. */
static size_t keep_fds(int *fds, size_t max, int state_fd)
{
    size_t n = 0;
    for (size_t i = 0; i < S.nlisten && n < max; i++)
        fds[n++] = S.listen_fds[i];
    for (size_t i = 0; i < SUP_MAX_PROCS && n < max; i++)
        if (S.procs[i].state != SUP_W_EMPTY && S.procs[i].chan >= 0)
            fds[n++] = S.procs[i].chan;
    n += sup_ctl_upgrade_fds(fds + n, max - n);
    n += sup_admin_upgrade_fds(fds + n, max - n);
    if (U.exe_fd >= 0 && n < max)
        fds[n++] = U.exe_fd;
    if (state_fd >= 0 && n < max)
        fds[n++] = state_fd;
    return n;
}

static void set_cloexec(const int *fds, size_t n, bool on)
{
    for (size_t i = 0; i < n; i++)
        molt_fd_set_cloexec(fds[i], on);
}

/* ---- the request and its outcome (the old binary) --------------------------------------------- */

static void check_cleanup(void)
{
    ev_io_stop(S.loop, &U.out_w);
    ev_timer_stop(S.loop, &U.timer);
    molt_close(&U.check_out);
    molt_close(&U.check_state);
    if (U.check_pid > 0) {
        kill(U.check_pid, SIGKILL); /* reaped by the child watcher, as any child */
        U.check_pid = 0;
    }
}

/*
 * A reply that says why. Every text in it goes through molt_json_text(): a
 * reason quotes what the new binary printed and what a damaged state held,
 * and a path need not be UTF-8; a string jansson refuses would leave the
 * client without any reply.
 */
static json_t *failure_json(const char *lead, const char *reason, const char *from, const char *stage)
{
    char *error = NULL;
    if (asprintf(&error, "%s%s", lead, reason) < 0)
        return NULL;
    json_t *r = json_pack("{s:b,s:o,s:{s:o,s:o,s:s}}", "ok", 0, "error", molt_json_text(error), "upgrade", "from",
                          molt_json_text(from), "binary", molt_json_text(U.exe), "stage", stage);
    free(error);
    return r;
}

static json_t *failure_reply(const char *stage, const char *reason)
{
    return failure_json(strcmp(stage, "refused") == 0 ? "upgrade refused: " : "upgrade failed: ", reason,
                        sup_version, stage);
}

static void upgrade_event(const char *result, const char *from, const char *to, const char *error)
{
    json_t *ev = json_pack("{s:s,s:s,s:o,s:o}", "type", "upgrade", "result", result, "from", molt_json_text(from),
                           "binary", molt_json_text(U.exe));
    if (ev && to)
        json_object_set_new(ev, "to", molt_json_text(to));
    if (ev && error)
        json_object_set_new(ev, "error", molt_json_text(error));
    sup_event_emit(ev);
}

/* The upgrade ends here, not done: the old binary runs on, unchanged. */
static void upgrade_fail(const char *stage, const char *reason, bool started)
{
    molt_error("upgrade failed: %s", reason);
    if (started)
        sup_notify_ready(false, "upgrade failed: %s", reason);
    sup_metrics_on_upgrade(false);
    upgrade_event("failed", sup_version, NULL, reason);
    check_cleanup();
    sup_upgrade_done_fn done = U.done;
    void *arg = U.arg;
    U.running = false;
    U.done = NULL;
    U.arg = NULL;
    if (done) {
        json_t *r = failure_reply(stage, reason);
        done(arg, r);
        json_decref(r);
    }
}

/* Why an upgrade cannot start (or go on) now, or NULL. */
static const char *upgrade_blocked(char *buf, size_t len)
{
    if (S.state == SUP_STOPPING)
        return "moltd is stopping";
    if (S.state != SUP_RUNNING)
        return "moltd is still starting";
    if (sup_reload_running())
        return "a reload is running; upgrade once it has ended";
    if (sup_dump_running())
        return "a state dump (moltctl state) is running";
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        const sup_proc_t *p = &S.procs[i];
        if (p->state != SUP_W_EMPTY && p->catchup) {
            snprintf(buf, len, "worker %u of generation %llu is catching up on its siblings' state", p->slot,
                     (unsigned long long)p->gen->number);
            return buf;
        }
    }
    return NULL;
}

static void check_on_out(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    for (;;) {
        if (U.out_len == sizeof(U.out) - 1) { /* keep the end: its last line tells */
            memmove(U.out, U.out + sizeof(U.out) / 2, U.out_len - sizeof(U.out) / 2);
            U.out_len -= sizeof(U.out) / 2;
        }
        ssize_t n = read(U.check_out, U.out + U.out_len, sizeof(U.out) - 1 - U.out_len);
        if (n > 0) {
            U.out_len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) /* EOF: the rest comes with the exit */
            ev_io_stop(S.loop, &U.out_w);
        break;
    }
    U.out[U.out_len] = '\0';
}

static void check_on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    U.timed_out = true;
    if (U.check_pid > 0)
        kill(U.check_pid, SIGKILL); /* its exit decides */
}

/* The check's last non-empty line. */
static const char *check_last_line(void)
{
    check_on_out(S.loop, &U.out_w, 0);
    while (U.out_len && (U.out[U.out_len - 1] == '\n' || U.out[U.out_len - 1] == '\r'))
        U.out[--U.out_len] = '\0';
    const char *nl = strrchr(U.out, '\n');
    return nl ? nl + 1 : U.out;
}

/* Forks the check: NEW --upgrade-check FD, with the state and every kept descriptor. */
static int check_start(char *err, size_t len)
{
    int fds[UP_MAX_KEEP], out[2] = {-1, -1}, ep[2] = {-1, -1};
    U.check_state = state_write(err, len);
    if (U.check_state < 0)
        return -1;
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
        snprintf(err, len, "pipe2() failed: %s", strerror(errno));
        goto fail;
    }
    size_t nfds = keep_fds(fds, MOLT_ARRAY_SIZE(fds), U.check_state);
    char fdarg[16];
    snprintf(fdarg, sizeof(fdarg), "%d", U.check_state);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, len, "fork() failed: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (dup2(out[1], STDOUT_FILENO) < 0 || dup2(out[1], STDERR_FILENO) < 0)
            _exit(127);
        /* What the exec will hand over, so that the check can look at it. */
        set_cloexec(fds, nfds, false);
        char *const argv[] = {U.exe, "--upgrade-check", fdarg, NULL};
        execv(U.exe, argv);
        int e = errno;
        ssize_t w = write(ep[1], &e, sizeof(e));
        (void)w; /* the parent sees EOF either way */
        _exit(127);
    }
    close(out[1]);
    close(ep[1]);
    /* exec() failed (the reason), or succeeded (EOF: the pipe was close-on-exec). */
    int e = 0;
    ssize_t r;
    while ((r = read(ep[0], &e, sizeof(e))) < 0 && errno == EINTR)
        ;
    close(ep[0]);
    if (r == (ssize_t)sizeof(e)) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        snprintf(err, len, "cannot run the new binary %s: %s", U.exe, strerror(e));
        close(out[0]);
        molt_close(&U.check_state);
        return -1;
    }
    U.check_pid = pid;
    U.check_out = out[0];
    U.out_len = 0;
    U.out[0] = '\0';
    U.timed_out = false;
    molt_fd_set_nonblock(U.check_out, true);
    ev_io_init(&U.out_w, check_on_out, U.check_out, EV_READ);
    ev_io_start(S.loop, &U.out_w);
    ev_timer_init(&U.timer, check_on_timeout, SUP_UPGRADE_CHECK_MS / 1000.0, 0.);
    ev_timer_start(S.loop, &U.timer);
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        molt_close(&out[i]);
        molt_close(&ep[i]);
    }
    molt_close(&U.check_state);
    return -1;
}

void sup_upgrade_request(sup_upgrade_done_fn done, void *arg)
{
    char buf[256], err[8192];
    const char *why = U.running ? "an upgrade is already running" : upgrade_blocked(buf, sizeof(buf));
    if (why) {
        /* Not this upgrade's state: the running one (if any) goes on. */
        molt_error("upgrade refused: %s", why);
        sup_metrics_on_upgrade(false);
        upgrade_event("failed", sup_version, NULL, why);
        if (done) {
            json_t *r = failure_reply("refused", why);
            done(arg, r);
            json_decref(r);
        }
        return;
    }
    U.running = true;
    U.done = done;
    U.arg = arg;
    U.t0 = molt_now_ms();
    molt_notice("upgrade: checking the new binary %s", U.exe);
    sup_notify_reloading("upgrading moltd %s: checking the new binary %s", sup_version, U.exe);
    if (check_start(err, sizeof(err)) < 0)
        upgrade_fail("check", err, true);
}

void sup_upgrade_forget(void *arg)
{
    if (U.running && U.arg == arg) {
        U.done = NULL;
        U.arg = NULL;
    }
}

/* The check passed: write the state again (it changed meanwhile) and become the new binary. */
static void upgrade_exec(const char *said)
{
    char buf[256], err[8192];
    const char *why = upgrade_blocked(buf, sizeof(buf));
    if (why) {
        snprintf(err, sizeof(err), "%s (it began while the new binary was checked); nothing changed", why);
        upgrade_fail("exec", err, true);
        return;
    }
    check_cleanup();
    molt_notice("upgrade: the new binary passed its check (%s); executing %s", said[0] ? said : "no word", U.exe);
    int state = state_write(err, sizeof(err));
    if (state < 0) {
        upgrade_fail("exec", err, true);
        return;
    }
    sup_admin_drop_conns(); /* a scrape in progress ends; the listener stays */
    int fds[UP_MAX_KEEP];
    size_t nfds = keep_fds(fds, MOLT_ARRAY_SIZE(fds), state);
    char fdarg[16];
    snprintf(fdarg, sizeof(fdarg), "%d", state);
    char *const argv[] = {U.exe, "-c", (char *)S.config_arg, "--upgrade-from", fdarg, NULL};
    /* Signals wait, blocked, for the new image (a blocked signal stays
     * pending across execve()): none is lost while no handler exists. */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    sup_notify_export(true);
    set_cloexec(fds, nfds, false);
    fflush(NULL);
    execv(U.exe, argv);
    int e = errno;
    set_cloexec(fds, nfds, true);
    sup_notify_export(false);
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(state);
    snprintf(err, sizeof(err), "execve(%s) failed: %s; nothing changed", U.exe, strerror(e));
    upgrade_fail("exec", err, true);
}

bool sup_upgrade_on_child(pid_t pid, int status)
{
    if (!U.running || pid != U.check_pid || pid <= 0)
        return false;
    U.check_pid = 0;
    char reason[8192];
    const char *line = check_last_line();
    if (U.timed_out) {
        snprintf(reason, sizeof(reason), "the new binary %s did not answer within %d s (killed)%s%.2000s", U.exe,
                 SUP_UPGRADE_CHECK_MS / 1000, line[0] ? "; it said: " : "", line);
    } else if (WIFSIGNALED(status)) {
        snprintf(reason, sizeof(reason), "the new binary %s was killed by signal %d (%s) while checking the state%s%.2000s",
                 U.exe, WTERMSIG(status), strsignal(WTERMSIG(status)), line[0] ? "; it said: " : "", line);
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(reason, sizeof(reason), "the new binary %s cannot take over: it exited with code %d%s%.2000s", U.exe,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1, line[0] ? ": " : "", line);
    } else {
        upgrade_exec(line);
        return true;
    }
    upgrade_fail("check", reason, true);
    return true;
}

void sup_upgrade_shutdown(void)
{
    if (U.running)
        upgrade_fail("check", "moltd is stopping", true);
}

/* ---- reading the state (the new binary, and its check) --------------------------------------- */

/* Reads the whole state; *buf holds the bytes the objects point into. */
static int state_load(int fd, char **buf, msgpack_unpacked *up, char *err, size_t len)
{
    struct stat st;
    *buf = NULL;
    if (fstat(fd, &st) < 0) {
        snprintf(err, len, "the upgrade state (descriptor %d): fstat() failed: %s", fd, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > UP_MAX_STATE) {
        snprintf(err, len, "the upgrade state (descriptor %d) is not a file of 1 byte to %u MiB", fd,
                 UP_MAX_STATE >> 20);
        return -1;
    }
    size_t n = (size_t)st.st_size, off = 0;
    if (!(*buf = malloc(n))) {
        snprintf(err, len, "out of memory reading the upgrade state");
        return -1;
    }
    while (off < n) {
        ssize_t r = pread(fd, *buf + off, n - off, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            snprintf(err, len, "reading the upgrade state failed: %s", r < 0 ? strerror(errno) : "short read");
            return -1;
        }
        off += (size_t)r;
    }
    if (!molt_mp_check_object(*buf, n)) {
        snprintf(err, len, "the upgrade state is not one msgpack object");
        return -1;
    }
    size_t pos = 0;
    msgpack_unpacked_init(up);
    if (msgpack_unpack_next(up, *buf, n, &pos) != MSGPACK_UNPACK_SUCCESS || up->data.type != MSGPACK_OBJECT_MAP) {
        snprintf(err, len, "the upgrade state is not a msgpack map");
        return -1;
    }
    return 0;
}

/* Fills S and every module from the state. check: only see that it all reads. */
static int restore(const msgpack_object *top, bool check, char *err, size_t len)
{
    sup_up_rd_t rd = {0};
    char magic[32] = "", from[64] = "", exe[PATH_MAX] = "";
    uint64_t format = 0, chan = 0, stream = 0;
    int64_t pid = 0, exe_fd = -1;
    if (!sup_up_str(&rd, top, "magic", magic, sizeof(magic)) || strcmp(magic, UP_MAGIC) != 0) {
        snprintf(err, len, "not a moltd upgrade state");
        return -1;
    }
    if (!sup_up_u64(&rd, top, "format", &format) || !sup_up_str(&rd, top, "version", from, sizeof(from)))
        goto bad;
    if (format != sup_upgrade_format) {
        snprintf(err, len, "moltd %s wrote upgrade state format %llu; this binary (moltd %s) reads format %u only",
                 from, (unsigned long long)format, sup_version, sup_upgrade_format);
        return -1;
    }
    if (!sup_up_u64(&rd, top, "chan", &chan) || !sup_up_u64(&rd, top, "stream", &stream))
        goto bad;
    if (chan != MOLT_CHAN_VERSION || stream != MOLT_STREAM_VERSION) {
        snprintf(err, len,
                 "the running workers speak channel version %llu and state stream version %llu; this binary "
                 "speaks %u and %u",
                 (unsigned long long)chan, (unsigned long long)stream, MOLT_CHAN_VERSION, MOLT_STREAM_VERSION);
        return -1;
    }
    sup_up_i64(&rd, top, "pid", &pid);
    if (!rd.failed && pid != (check ? getppid() : getpid())) {
        snprintf(err, len, "the upgrade state was written by pid %lld, not by %s", (long long)pid,
                 check ? "the parent" : "this process");
        return -1;
    }
    sup_up_str(&rd, top, "exe", exe, sizeof(exe));
    sup_up_i64(&rd, top, "exe_fd", &exe_fd);
    sup_up_u64(&rd, top, "t0", &U.resumed_t0);
    sup_up_u64(&rd, top, "started_wall", &S.started_wall);
    sup_up_u64(&rd, top, "started_mono", &S.started_mono);
    sup_up_u64(&rd, top, "upgrades", &U.upgrades);
    sup_up_u64(&rd, top, "upgraded_wall", &U.upgraded_wall);
    char *log_file = NULL;
    sup_up_strdup(&rd, top, "log_file", &log_file);
    const msgpack_object *ls = sup_up_array(&rd, top, "listen");
    if (ls && ls->via.array.size > MOLT_CONFIG_MAX_LISTEN)
        sup_up_fail(&rd, "listen: %u listeners, at most %d", ls->via.array.size, MOLT_CONFIG_MAX_LISTEN);
    for (uint32_t i = 0; ls && !rd.failed && i < ls->via.array.size; i++) {
        const msgpack_object *o = &ls->via.array.ptr[i];
        int64_t fd = o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)o->via.u64 : -1;
        if (sup_upgrade_fd_ok(&rd, "listen", fd, SOCK_STREAM, true))
            S.listen_fds[S.nlisten++] = (int)fd;
    }
    sup_procs_upgrade_unpack(&rd, top);
    if (!rd.failed && S.active->cfg->nlisten != S.nlisten)
        sup_up_fail(&rd, "listen: %zu descriptors for %zu listeners", S.nlisten, S.active->cfg->nlisten);
    sup_ctl_upgrade_unpack(&rd, top);
    sup_admin_upgrade_unpack(&rd, top);
    sup_metrics_upgrade_unpack(&rd, top);
    sup_reload_upgrade_unpack(&rd, top);
    sup_handoff_upgrade_unpack(&rd, top);
    sup_sib_upgrade_unpack(&rd, top);
    sup_slots_upgrade_unpack(&rd, top);
    if (rd.failed) {
        free(log_file);
        goto bad;
    }
    U.resumed_workers = sup_procs_alive();
    for (size_t i = 0; i < SUP_MAX_GENS; i++)
        U.resumed_gens += S.gens[i] != NULL;
    if (!check) {
        snprintf(U.exe, sizeof(U.exe), "%s", exe);
        U.exe_fd = (int)exe_fd; /* the old binary: replaced by ours once this succeeds */
        U.resumed_from = strdup(from);
        if (log_file && molt_log_adopt_path(log_file) < 0)
            molt_warn("log.file %s: remembering its path failed; SIGUSR1 cannot reopen it", log_file);
    }
    free(log_file);
    return 0;
bad:
    snprintf(err, len, "the upgrade state of moltd %s: %s", from[0] ? from : "?", rd.err);
    return -1;
}

int sup_upgrade_check_main(int fd)
{
    char err[2048], *buf = NULL;
    msgpack_unpacked up;
    memset(&S, 0, sizeof(S));
    S.ctl_fd = -1;
    /* Only the verdict goes to the parent: its last line is the reason. */
    molt_log_set_role("upgrade-check");
    molt_log_set_level(MOLT_LOG_CRIT);
    S.loop = ev_default_loop(EVFLAG_AUTO);
    int rc = S.loop ? state_load(fd, &buf, &up, err, sizeof(err)) : -1;
    if (!S.loop)
        snprintf(err, sizeof(err), "ev_default_loop() failed");
    if (rc == 0)
        rc = restore(&up.data, true, err, sizeof(err));
    if (rc == 0)
        printf("moltd %s can take over: %u generation%s, %u worker%s\n", sup_version, U.resumed_gens,
               U.resumed_gens == 1 ? "" : "s", U.resumed_workers, U.resumed_workers == 1 ? "" : "s");
    else
        fprintf(stderr, "%s\n", err);
    fflush(NULL);
    /* _exit, not exit: this process shares the live supervisor's descriptors
     * and paths; the cleanup that ends a moltd (the control socket's file
     * unlinked, ...) must not run here. Nothing it allocated outlives it. */
    _exit(rc == 0 ? 0 : 1);
}

/* The new binary could not restore: back to the old one, same pid, same state. */
static void fallback(int state_fd, int exe_fd, const char *reason)
{
    if (exe_fd < 0) {
        molt_crit("upgrade: the old binary was not kept open; cannot go back");
        return;
    }
    char why[8192], fdarg[16];
    snprintf(why, sizeof(why), "the new binary %s (moltd %s) could not restore the state: %s", U.exe, sup_version,
             reason);
    snprintf(fdarg, sizeof(fdarg), "%d", state_fd);
    molt_crit("upgrade: %s; executing the old binary again", why);
    char *const argv[] = {U.exe, "-c", (char *)S.config_arg, "--upgrade-from", fdarg, "--upgrade-failed", why, NULL};
    if (lseek(state_fd, 0, SEEK_SET) < 0) {
        molt_crit("upgrade: lseek() on the state failed: %s", strerror(errno));
        return;
    }
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    sup_notify_export(true);
    fflush(NULL);
    fexecve(exe_fd, argv, environ);
    molt_crit("upgrade: executing the old binary again failed: %s", strerror(errno));
}

int sup_upgrade_resume(int fd, const char *failed)
{
    char err[2048], *buf = NULL;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int rc = state_load(fd, &buf, &up, err, sizeof(err));
    if (rc == 0) {
        rc = restore(&up.data, false, err, sizeof(err));
        if (rc == 0 && sup_upgrade_fail_restore && !failed) {
            snprintf(err, sizeof(err), "this test build (MOLT_UPGRADE_TEST_FAIL_RESTORE) fails every restore");
            rc = -1;
        }
    }
    if (rc < 0) {
        if (failed) {
            molt_crit("cannot resume: %s (after a failed upgrade: %s)", err, failed);
        } else {
            /* The exe path and the old binary's descriptor: read apart, the rest may be what failed. */
            sup_up_rd_t rd = {0};
            int64_t exe_fd = -1;
            if (up.data.type == MSGPACK_OBJECT_MAP) {
                sup_up_str(&rd, &up.data, "exe", U.exe, sizeof(U.exe));
                sup_up_i64(&rd, &up.data, "exe_fd", &exe_fd);
            }
            if (rd.failed || exe_fd > INT_MAX)
                exe_fd = -1;
            fallback(fd, (int)exe_fd, err);
        }
        msgpack_unpacked_destroy(&up);
        free(buf);
        return -1;
    }
    msgpack_unpacked_destroy(&up);
    free(buf);
    close(fd);
    U.failed = failed ? strdup(failed) : NULL;
    return 0;
}

/* After the restore, with the loop's watchers in place: tell everyone. */
void sup_upgrade_resumed(void)
{
    /* Ours again, and close-on-exec again: a worker forked from now on must
     * not inherit them (it closes what it does not know, but a plugin's
     * child would not). */
    int fds[UP_MAX_KEEP];
    size_t nfds = keep_fds(fds, MOLT_ARRAY_SIZE(fds), -1);
    molt_close(&U.exe_fd); /* the previous binary's */
    set_cloexec(fds, nfds, true);
    U.exe_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (U.exe_fd < 0)
        molt_warn("open(/proc/self/exe) failed: %s; an upgrade that fails after its exec cannot come back",
                  strerror(errno));
    uint64_t ms = molt_now_ms() - U.resumed_t0;
    unsigned workers = U.resumed_workers, gens = U.resumed_gens;
    const char *from = U.resumed_from ? U.resumed_from : "?";
    json_t *reply;
    if (U.failed) {
        char reason[8192];
        snprintf(reason, sizeof(reason), "%s; went back to moltd %s", U.failed, sup_version);
        molt_error("upgrade failed: %s", reason);
        sup_notify_ready(false, "upgrade failed: %s", reason);
        sup_metrics_on_upgrade(false);
        upgrade_event("failed", from, NULL, reason);
        reply = failure_json("upgrade failed: ", reason, from, "restore");
    } else {
        U.upgrades++;
        U.upgraded_wall = molt_wall_ms();
        molt_notice("upgrade: moltd %s -> %s (binary %s, pid %d) in %llu ms: %u worker%s and %u generation%s kept",
                    from, sup_version, U.exe, (int)getpid(), (unsigned long long)ms, workers, workers == 1 ? "" : "s",
                    gens, gens == 1 ? "" : "s");
        sup_notify_ready(false, "upgraded to moltd %s in %llu ms", sup_version, (unsigned long long)ms);
        sup_metrics_on_upgrade(true);
        upgrade_event("done", from, sup_version, NULL);
        reply = json_pack("{s:b,s:{s:o,s:s,s:o,s:I,s:I,s:I,s:I}}", "ok", 1, "upgrade", "from", molt_json_text(from),
                          "to", sup_version, "binary", molt_json_text(U.exe), "pid", (json_int_t)getpid(), "ms",
                          (json_int_t)ms, "workers", (json_int_t)workers, "generations", (json_int_t)gens);
    }
    sup_ctl_upgrade_reply(reply);
    json_decref(reply);
    free(U.resumed_from);
    free(U.failed);
    U.resumed_from = U.failed = NULL;
    /* A worker that ended while no image was there to hear SIGCHLD: reap it now. */
    ev_feed_signal_event(S.loop, SIGCHLD);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}
