/*
 * The control socket: a UNIX stream socket; one JSON request per line in,
 * one JSON reply per line out (docs/control-protocol.md). Requests are
 * answered from the supervisor's loop; a slow or hostile client costs a
 * bounded buffer and is dropped, never blocks the loop.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "shared/log.h"
#include "shared/util.h"
#include "supervisor/ident.h"
#include "supervisor/metrics.h"
#include "supervisor/sup.h"
#include "supervisor/upgrade.h"

#define CTL_MAX_LINE (64 * 1024)
#define CTL_MAX_CONNS 64
#define CTL_MAX_OUT (16 * 1024 * 1024)

typedef struct sup_ctl_conn {
    struct sup_ctl_conn *next;
    int fd;
    molt_buf_t in;
    molt_buf_t out;
    bool closing; /* close once `out` is written */
    bool waiting; /* a reply is deferred (reload): later requests wait for it, in order */
    bool subscribed; /* `events`: gets every event, sends nothing more */
    ev_io w;
} ctl_conn_t;

static unsigned ctl_nconns;
/* Restored by an upgrade: the connection that asked for it, waiting for its reply. */
static ctl_conn_t *ctl_upgrade_conn;

static void conn_free(ctl_conn_t *c)
{
    for (ctl_conn_t **pp = &S.ctl_conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    if (c->waiting) {
        sup_reload_forget(c);
        sup_dump_forget(c);
        sup_upgrade_forget(c);
    }
    if (ctl_upgrade_conn == c)
        ctl_upgrade_conn = NULL;
    ev_io_stop(S.loop, &c->w);
    molt_close(&c->fd);
    molt_buf_free(&c->in);
    molt_buf_free(&c->out);
    free(c);
    ctl_nconns--;
}

static json_t *cmd_status(ctl_conn_t *c, const json_t *req)
{
    (void)c, (void)req;
    const sup_gen_t *gen = S.active;
    json_t *r = json_pack("{s:b,s:I,s:s,s:I,s:I,s:s}", "ok", 1, "pid", (json_int_t)getpid(), "version",
                          sup_version, "started_ms", (json_int_t)S.started_wall, "uptime_ms",
                          (json_int_t)(molt_now_ms() - S.started_mono), "state",
                          S.state == SUP_BOOTING ? "starting" : S.state == SUP_RUNNING ? "running" : "stopping");
    if (gen) {
        json_object_set_new(r, "config", json_string(gen->cfg->path));
        json_object_set_new(r, "generation",
                            json_pack("{s:I,s:s,s:s,s:I,s:I,s:O}", "number", (json_int_t)gen->number, "id",
                                      gen->id, "state", sup_gen_state_name(gen->state), "workers",
                                      (json_int_t)gen->nworkers, "created_ms", (json_int_t)gen->created_ms,
                                      "plugins", gen->plugins ? gen->plugins : json_array()));
        json_t *ls = json_array();
        for (size_t i = 0; i < gen->cfg->nlisten; i++)
            json_array_append_new(ls, json_pack("{s:s,s:s}", "name", gen->cfg->listen[i].name, "address",
                                                gen->cfg->listen[i].address));
        json_object_set_new(r, "listen", ls);
    } else {
        json_object_set_new(r, "generation", json_null());
    }
    json_object_set_new(r, "workers", sup_procs_json());
    json_object_set_new(r, "reload", sup_reload_status_json());
    sup_upgrade_status(r);
    return r;
}

static json_t *cmd_stop(ctl_conn_t *c, const json_t *req)
{
    (void)c;
    json_t *fast = json_object_get(req, "fast");
    bool is_fast = json_is_true(fast);
    if (fast && !json_is_boolean(fast))
        return json_pack("{s:b,s:s}", "ok", 0, "error", "\"fast\" must be true or false");
    molt_notice("control: stop (%s) requested", is_fast ? "fast" : "graceful");
    sup_stop(is_fast);
    return json_pack("{s:b,s:s}", "ok", 1, "stopping", is_fast ? "fast" : "graceful");
}

static void conn_reply(ctl_conn_t *c, json_t *reply);
static void conn_process(ctl_conn_t *c);
static void conn_flush(ctl_conn_t *c);

/* A deferred reply (reload, rollback, state) is ready. */
static void reload_done(void *arg, json_t *outcome)
{
    ctl_conn_t *c = arg;
    c->waiting = false;
    if (outcome)
        conn_reply(c, json_incref(outcome));
    else /* the outcome could not be built (out of memory): EOF, rather than a client waiting forever */
        c->closing = true;
    conn_process(c); /* requests that came in behind the reload */
    conn_flush(c);
}

/* The reply comes when the reload that covers this request ends. */
static json_t *cmd_reload(ctl_conn_t *c, const json_t *req)
{
    (void)req;
    c->waiting = true;
    if (sup_reload_request(reload_done, c) == -ENOMEM) {
        c->waiting = false;
        return json_pack("{s:b,s:s}", "ok", 0, "error", "out of memory");
    }
    return NULL;
}

static json_t *cmd_rollback(ctl_conn_t *c, const json_t *req)
{
    (void)req;
    c->waiting = true;
    if (sup_reload_request_kind(true, reload_done, c) == -ENOMEM) {
        c->waiting = false;
        return json_pack("{s:b,s:s}", "ok", 0, "error", "out of memory");
    }
    return NULL;
}

/* {"cmd": "state", "name": INSTANCE}: its state in every worker, as JSON. */
static json_t *cmd_state(ctl_conn_t *c, const json_t *req)
{
    const char *name = json_string_value(json_object_get(req, "name"));
    if (!name)
        return json_pack("{s:b,s:s}", "ok", 0, "error", "\"name\" (an instance name) is required");
    char err[256];
    c->waiting = true;
    if (sup_dump_request(name, reload_done, c, err, sizeof(err)) < 0) {
        c->waiting = false;
        return json_pack("{s:b,s:s}", "ok", 0, "error", err);
    }
    return NULL;
}

/* The reply comes from the new binary once it runs, or from this one when the upgrade failed. */
static json_t *cmd_upgrade(ctl_conn_t *c, const json_t *req)
{
    (void)req;
    c->waiting = true;
    sup_upgrade_request(reload_done, c);
    return NULL;
}

/* The Prometheus text the admin listener serves (supervisor/metrics.h), as one string. */
static json_t *cmd_metrics(ctl_conn_t *c, const json_t *req)
{
    (void)c, (void)req;
    molt_buf_t text = {0};
    json_t *r = NULL;
    if (sup_metrics_render(&text) == 0)
        r = json_pack("{s:b,s:s%}", "ok", 1, "metrics", text.data ? text.data : "", text.len);
    molt_buf_free(&text);
    return r ? r : json_pack("{s:b,s:s}", "ok", 0, "error", "out of memory");
}

/* After the first line, the connection only receives events. */
static json_t *cmd_events(ctl_conn_t *c, const json_t *req)
{
    (void)req;
    c->subscribed = true;
    return json_pack("{s:b,s:b}", "ok", 1, "events", 1);
}

#define CTL_EVENTS_MAX_BEHIND (1024 * 1024)

void sup_event_emit(json_t *ev)
{
    if (!ev)
        return;
    json_object_set_new(ev, "time_ms", json_integer((json_int_t)molt_wall_ms()));
    for (ctl_conn_t *c = S.ctl_conns, *next; c; c = next) {
        next = c->next;
        if (!c->subscribed || c->closing)
            continue;
        if (c->out.len > CTL_EVENTS_MAX_BEHIND) {
            /* A follower that does not read loses its stream, not our memory. */
            c->closing = true;
            c->out.len = 0;
            conn_flush(c);
            continue;
        }
        conn_reply(c, json_incref(ev));
        conn_flush(c);
    }
    json_decref(ev);
}

/* A command returns its reply, or NULL when the reply is deferred. */
static const struct {
    const char *name;
    json_t *(*fn)(ctl_conn_t *c, const json_t *req);
} ctl_cmds[] = {
    {"status", cmd_status},
    {"stop", cmd_stop},
    {"reload", cmd_reload},
    {"events", cmd_events},
    {"rollback", cmd_rollback},
    {"state", cmd_state},
    {"metrics", cmd_metrics},
    {"upgrade", cmd_upgrade},
};

static json_t *ctl_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *ctl_error(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* The text may quote the client's bytes (jansson's parse error does, an
     * unknown command does) or be cut inside a character. */
    return json_pack("{s:b,s:o}", "ok", 0, "error", molt_json_text(msg));
}

json_t *sup_ctl_parse(const char *line, size_t len, json_t **req, const char **cmd)
{
    json_error_t jerr;
    *req = NULL;
    *cmd = NULL;
    json_t *r = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!r)
        return ctl_error("invalid JSON: %s", jerr.text);
    const char *name = json_string_value(json_object_get(r, "cmd"));
    if (!json_is_object(r) || !name) {
        json_decref(r);
        return ctl_error("%s", "a request is a JSON object with a string \"cmd\"");
    }
    *req = r;
    *cmd = name;
    return NULL;
}

static json_t *ctl_handle_line(ctl_conn_t *c, const char *line, size_t len)
{
    json_t *req;
    const char *cmd;
    json_t *reply = sup_ctl_parse(line, len, &req, &cmd);
    if (!req)
        return reply;
    for (size_t i = 0; i < MOLT_ARRAY_SIZE(ctl_cmds); i++) {
        if (strcmp(cmd, ctl_cmds[i].name) == 0) {
            reply = ctl_cmds[i].fn(c, req);
            goto out;
        }
    }
    reply = ctl_error("unknown command \"%s\"", cmd);
out:
    json_decref(req);
    return reply;
}

static void conn_flush(ctl_conn_t *c)
{
    while (c->out.len) {
        ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_free(c);
            return;
        }
        molt_buf_consume(&c->out, (size_t)n);
    }
    if (!c->out.len && c->closing) {
        conn_free(c);
        return;
    }
    int events = EV_READ | (c->out.len ? EV_WRITE : 0);
    if (c->closing)
        events &= ~EV_READ;
    if (events != (c->w.events & (EV_READ | EV_WRITE))) {
        ev_io_stop(S.loop, &c->w);
        ev_io_set(&c->w, c->fd, events);
        ev_io_start(S.loop, &c->w);
    }
}

static void conn_reply(ctl_conn_t *c, json_t *reply)
{
    if (!reply)
        return; /* deferred, or already answered by the deferred path */
    char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    json_decref(reply);
    if (!text || molt_buf_printf(&c->out, "%s\n", text) < 0 || c->out.len > CTL_MAX_OUT)
        c->closing = true;
    free(text);
}

static void on_conn(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    ctl_conn_t *c = w->data;
    if (revents & EV_WRITE) {
        conn_flush(c);
        return; /* c may be gone; reads come on the next event */
    }
    if (molt_buf_reserve(&c->in, 4096) < 0) {
        conn_free(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (n <= 0) {
        conn_free(c);
        return;
    }
    c->in.len += (size_t)n;
    conn_process(c);
    conn_flush(c);
}

/* Answers every complete request line, in order, until one is deferred. */
static void conn_process(ctl_conn_t *c)
{
    char *nl;
    if (c->subscribed) {
        c->in.len = 0; /* a follower has nothing more to ask */
        return;
    }
    while (!c->closing && !c->waiting && !c->subscribed && c->in.len && (nl = memchr(c->in.data, '\n', c->in.len))) {
        /* Take the line out before handling it: a deferred reply may come
         * back at once (a reload rejected in prepare) and process the rest. */
        size_t len = (size_t)(nl - c->in.data);
        char *line = strndup(c->in.data, len);
        molt_buf_consume(&c->in, len + 1);
        if (!line) {
            c->closing = true;
            break;
        }
        conn_reply(c, ctl_handle_line(c, line, len));
        free(line);
    }
    if (!c->waiting && c->in.len > CTL_MAX_LINE) {
        conn_reply(c, ctl_error("request line longer than %d bytes", CTL_MAX_LINE));
        c->closing = true;
    }
}

/* control.group, resolved at sup_ctl_open(). */
static bool ctl_has_group;
static gid_t ctl_gid;
static char ctl_group[64];

/* Is gid among the peer's supplementary groups, as the kernel recorded them
 * when it connected (SO_PEERGROUPS)? */
static bool peer_in_groups(int fd, gid_t gid)
{
    gid_t stack[64], *v = stack;
    socklen_t len = sizeof(stack);
    bool found = false;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, v, &len) < 0) {
        if (errno != ERANGE || !(v = malloc(len)))
            return false;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, v, &len) < 0)
            goto out;
    }
    for (size_t i = 0; i < len / sizeof(gid_t); i++)
        found = found || v[i] == gid;
out:
    if (v != stack)
        free(v);
    return found;
}

/*
 * Who may use the control socket (docs/operations.md, "Access control"):
 * root, moltd's own user, and members of control.group: the peer process's
 * gid or one of its supplementary groups. Credentials are the kernel's, taken
 * at connect() (SO_PEERCRED, SO_PEERGROUPS): no name lookup on the loop, no
 * /proc read that a pid reused meanwhile could fool. The socket file's mode
 * is a first gate; this one holds even if that mode is wider than it should be.
 * True if allowed; otherwise the refusal reply and a log line are written and
 * the caller closes fd.
 */
static bool ctl_peer_check(int fd)
{
    struct ucred uc = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
    socklen_t len = sizeof(uc);
    bool known = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) == 0;
    if (known && (uc.uid == 0 || uc.uid == geteuid() ||
                  (ctl_has_group && (uc.gid == ctl_gid || peer_in_groups(fd, ctl_gid)))))
        return true;
    char why[384];
    if (!known)
        snprintf(why, sizeof(why), "cannot tell who is connecting (SO_PEERCRED: %s)", strerror(errno));
    else if (ctl_has_group)
        snprintf(why, sizeof(why),
                 "uid %u (gid %u, pid %d) may not use the control socket: only root, moltd's user (uid %u) and "
                 "members of control.group \"%s\" may",
                 (unsigned)uc.uid, (unsigned)uc.gid, (int)uc.pid, (unsigned)geteuid(), ctl_group);
    else
        snprintf(why, sizeof(why),
                 "uid %u (gid %u, pid %d) may not use the control socket: only root and moltd's user (uid %u) "
                 "may (control.group admits a group)",
                 (unsigned)uc.uid, (unsigned)uc.gid, (int)uc.pid, (unsigned)geteuid());
    molt_warn("control: refused a connection: %s", why);
    json_t *r = json_pack("{s:b,s:s+,s:{s:I,s:I,s:I}}", "ok", 0, "error", "permission denied: ", why, "refused",
                          "uid", (json_int_t)(known ? (json_int_t)uc.uid : -1), "gid",
                          (json_int_t)(known ? (json_int_t)uc.gid : -1), "pid", (json_int_t)uc.pid);
    char *text = r ? json_dumps(r, JSON_COMPACT) : NULL;
    json_decref(r);
    if (text) {
        size_t n = strlen(text);
        text[n] = '\n'; /* replaces the NUL: one line, one send, best effort */
        ssize_t w = send(fd, text, n + 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w; /* refused either way */
        free(text);
    }
    return false;
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    for (;;) {
        int fd = accept4(S.ctl_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                molt_warn("accept() on the control socket failed: %s", strerror(errno));
            return;
        }
        if (!ctl_peer_check(fd)) {
            close(fd); /* takes no slot: a refused peer cannot crowd out the allowed ones */
            continue;
        }
        if (ctl_nconns >= CTL_MAX_CONNS) {
            static const char busy[] = "{\"ok\":false,\"error\":\"too many control connections\"}\n";
            ssize_t r = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL);
            (void)r; /* best effort: the client is refused either way */
            close(fd);
            continue;
        }
        ctl_conn_t *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return;
        }
        c->fd = fd;
        c->next = S.ctl_conns;
        S.ctl_conns = c;
        ctl_nconns++;
        ev_io_init(&c->w, on_conn, fd, EV_READ);
        c->w.data = c;
        ev_io_start(S.loop, &c->w);
    }
}

/* Is a moltd answering on this socket path? */
static bool socket_alive(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool alive = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;
    close(fd);
    return alive;
}

int sup_ctl_open(const molt_config_t *cfg)
{
    const char *path = cfg->control_socket;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        molt_error("control.socket %s: path longer than %zu bytes", path, sizeof(sa.sun_path) - 1);
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);

    /* The socket's directory: created private if missing. */
    char dir[sizeof(sa.sun_path)];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
            molt_error("mkdir(%s) failed for control.socket: %s", dir, strerror(errno));
            return -1;
        }
    }

    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            molt_error("control.socket %s exists and is not a socket; refusing to replace it", path);
            return -1;
        }
        if (socket_alive(&sa)) {
            molt_error("control.socket %s: another moltd is running there", path);
            return -1;
        }
        unlink(path); /* stale: left by a moltd that died */
    }

    ctl_has_group = false;
    if (cfg->control_group) {
        char gerr[256];
        if (sup_ident_group(cfg->control_group, &ctl_gid, gerr, sizeof(gerr)) < 0) {
            molt_error("%s: %s", cfg->path, gerr);
            return -1;
        }
        ctl_has_group = true;
        snprintf(ctl_group, sizeof(ctl_group), "%s", cfg->control_group);
    }

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        molt_error("socket() failed for control.socket %s: %s", path, strerror(errno));
        return -1;
    }
    /* Create the file with its final mode: no window where it is wider. */
    mode_t old = umask(~cfg->control_mode & 0777);
    int brc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    int berr = errno;
    umask(old);
    if (brc < 0) {
        molt_error("bind() to control.socket %s failed: %s", path, strerror(berr));
        close(fd);
        return -1;
    }
    if (chmod(path, cfg->control_mode) < 0)
        molt_warn("chmod(%s, %04o) failed: %s", path, (unsigned)cfg->control_mode, strerror(errno));
    /* connect() needs write permission on the file: the group's members get it through the mode. */
    if (ctl_has_group && chown(path, (uid_t)-1, ctl_gid) < 0)
        molt_warn("chown(%s, group %s) failed: %s", path, ctl_group, strerror(errno));
    if (listen(fd, 64) < 0) {
        molt_error("listen() on control.socket %s failed: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    S.ctl_fd = fd;
    S.ctl_path = strdup(path);
    ev_io_init(&S.ctl_w, on_accept, fd, EV_READ);
    ev_io_start(S.loop, &S.ctl_w);
    molt_info("control socket %s (mode %04o)", path, (unsigned)cfg->control_mode);
    return 0;
}

void sup_ctl_close(void)
{
    while (S.ctl_conns) {
        ctl_conn_t *c = S.ctl_conns;
        /* One last try to send what is already answered (the reply to
         * "stop"); never block on a client that does not read. */
        conn_flush(c);
        if (S.ctl_conns == c)
            conn_free(c);
    }
    if (S.ctl_fd >= 0) {
        ev_io_stop(S.loop, &S.ctl_w);
        molt_close(&S.ctl_fd);
    }
    if (S.ctl_path) {
        unlink(S.ctl_path);
        free(S.ctl_path);
        S.ctl_path = NULL;
    }
}

/* ---- upgrade: the socket, its group, and every connection with what it has not read or sent -- */

unsigned sup_ctl_upgrade_count(void)
{
    return 1;
}

size_t sup_ctl_upgrade_fds(int *fds, size_t max)
{
    size_t n = 0;
    if (S.ctl_fd >= 0 && n < max)
        fds[n++] = S.ctl_fd;
    for (ctl_conn_t *c = S.ctl_conns; c && n < max; c = c->next)
        fds[n++] = c->fd;
    return n;
}

void sup_ctl_upgrade_pack(msgpack_packer *pk)
{
    molt_mp_pack_str(pk, "ctl");
    msgpack_pack_map(pk, 6);
    sup_up_pack_i64(pk, "fd", S.ctl_fd);
    sup_up_pack_str(pk, "path", S.ctl_path);
    molt_mp_pack_kv_bool(pk, "has_group", ctl_has_group);
    molt_mp_pack_kv_u64(pk, "gid", ctl_gid);
    molt_mp_pack_kv_str(pk, "group", ctl_group);
    molt_mp_pack_str(pk, "conns");
    void *waiter = sup_upgrade_waiter();
    msgpack_pack_array(pk, ctl_nconns);
    for (ctl_conn_t *c = S.ctl_conns; c; c = c->next) {
        msgpack_pack_map(pk, 6);
        sup_up_pack_i64(pk, "fd", c->fd);
        sup_up_pack_bin(pk, "in", c->in.data, c->in.len);
        sup_up_pack_bin(pk, "out", c->out.data, c->out.len);
        molt_mp_pack_kv_bool(pk, "closing", c->closing);
        molt_mp_pack_kv_bool(pk, "subscribed", c->subscribed);
        molt_mp_pack_kv_bool(pk, "upgrade", c == waiter);
    }
}

bool sup_ctl_upgrade_unpack(sup_up_rd_t *rd, const msgpack_object *top)
{
    const msgpack_object *o = sup_up_map(rd, top, "ctl");
    int64_t fd = -1;
    uint64_t gid = 0;
    sup_up_i64(rd, o, "fd", &fd);
    sup_up_strdup(rd, o, "path", &S.ctl_path);
    sup_up_bool(rd, o, "has_group", &ctl_has_group);
    sup_up_u64(rd, o, "gid", &gid);
    sup_up_str(rd, o, "group", ctl_group, sizeof(ctl_group));
    const msgpack_object *conns = sup_up_array(rd, o, "conns");
    if (!sup_upgrade_fd_ok(rd, "ctl.fd", fd, SOCK_STREAM, true))
        return false;
    ctl_gid = (gid_t)gid;
    S.ctl_fd = (int)fd;
    ev_io_init(&S.ctl_w, on_accept, S.ctl_fd, EV_READ);
    ev_io_start(S.loop, &S.ctl_w);
    for (uint32_t i = 0; !rd->failed && i < conns->via.array.size; i++) {
        const msgpack_object *m = &conns->via.array.ptr[i];
        const char *in = NULL, *out = NULL;
        size_t nin = 0, nout = 0;
        bool upgrade = false;
        fd = -1;
        ctl_conn_t *c = calloc(1, sizeof(*c));
        if (!c) {
            sup_up_fail(rd, "ctl.conns: out of memory");
            break;
        }
        sup_up_i64(rd, m, "fd", &fd);
        sup_up_bin(rd, m, "in", &in, &nin);
        sup_up_bin(rd, m, "out", &out, &nout);
        sup_up_bool(rd, m, "closing", &c->closing);
        sup_up_bool(rd, m, "subscribed", &c->subscribed);
        sup_up_bool(rd, m, "upgrade", &upgrade);
        if (!sup_upgrade_fd_ok(rd, "ctl.conns", fd, SOCK_STREAM, false) ||
            (nin && molt_buf_append(&c->in, in, nin) < 0) || (nout && molt_buf_append(&c->out, out, nout) < 0)) {
            sup_up_fail(rd, "ctl.conns: connection %u cannot be restored", i);
            molt_buf_free(&c->in);
            molt_buf_free(&c->out);
            free(c);
            break;
        }
        c->fd = (int)fd;
        c->waiting = upgrade;
        if (upgrade)
            ctl_upgrade_conn = c;
        c->next = S.ctl_conns;
        S.ctl_conns = c;
        ctl_nconns++;
        int events = (c->closing ? 0 : EV_READ) | (c->out.len ? EV_WRITE : 0);
        ev_io_init(&c->w, on_conn, c->fd, events ? events : EV_WRITE);
        c->w.data = c;
        ev_io_start(S.loop, &c->w);
    }
    return !rd->failed;
}

bool sup_ctl_upgrade_reply(json_t *reply)
{
    ctl_conn_t *c = ctl_upgrade_conn;
    if (!c)
        return false;
    ctl_upgrade_conn = NULL;
    reload_done(c, reply);
    return true;
}
