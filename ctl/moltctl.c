/*
 * moltctl: the operator's client of moltd's control socket.
 *
 * One connection per command: write one JSON request line, read JSON reply
 * lines (docs/control-protocol.md). Each command is one entry in ctl_cmds[]
 * and one handler; the connection, the bounded line reader, the reply checks
 * and the exit codes (shared/exit.h) are shared, so a new command only builds
 * its request and renders its reply.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "shared/exit.h"
#include "shared/util.h"

#define CTL_DEFAULT_SOCKET "/run/molt/control.sock"
#define CTL_DEFAULT_TIMEOUT_MS 10000
/* A status reply with many workers is a few KiB; the cap only stops a broken peer from eating memory. */
#define CTL_LINE_MAX (16u * 1024 * 1024)
#define CTL_READ_CHUNK 65536
#define CTL_STOP_POLL_MS 50
/* A graceful stop is bounded by moltd's drain_timeout_ms (default 30 s). */
#define CTL_DEFAULT_STOP_WAIT_MS 60000
#define CTL_NO_DEADLINE UINT64_MAX

typedef struct ctl_ctx {
    const char *socket_path;
    int timeout_ms;   /* connect + request + reply */
    int stop_wait_ms; /* how long `stop` waits for moltd to go away */
} ctl_ctx_t;

/* One connection to moltd. `in` holds bytes read past the last line returned. */
typedef struct ctl_conn {
    int fd;
    const ctl_ctx_t *ctx;
    molt_buf_t in;
    size_t scanned; /* bytes of `in` known to hold no '\n' */
} ctl_conn_t;

typedef struct ctl_cmd ctl_cmd_t;

/* A handler gets argv[0] = the command name; it returns a MOLT_CTL_EXIT_* code. */
typedef int (*ctl_cmd_fn)(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv);

struct ctl_cmd {
    const char *name;
    const char *args; /* synopsis after the name, for usage */
    const char *help;
    ctl_cmd_fn run;
};

/* A boolean --flag a command accepts. */
typedef struct ctl_flag {
    const char *name; /* without the leading "--" */
    bool *set;
} ctl_flag_t;

static int cmd_status(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv);
static int cmd_stop(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv);
static int cmd_reload(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv);
static int cmd_events(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv);
static int cmd_state(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv);
static int cmd_metrics(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv);
static int cmd_upgrade(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv);

static const ctl_cmd_t ctl_cmds[] = {
    {"status", "[--json]", "show moltd, its generation and its workers", cmd_status},
    {"stop", "[--fast]", "stop moltd and wait until it is gone", cmd_stop},
    {"reload", "[--json]", "deploy the config and plugins as they are now; wait for the outcome", cmd_reload},
    /* a rollback is a reload to the previous generation: same exchange, same output */
    {"rollback", "[--json]", "re-activate the previous generation (verified like a reload)", cmd_reload},
    {"events", "", "follow reload and worker events, one JSON object per line", cmd_events},
    {"state", "NAME [--json]", "print instance NAME's live state in every worker, as JSON", cmd_state},
    {"metrics", "", "print moltd's metrics in the Prometheus text format", cmd_metrics},
    {"upgrade", "[--json]",
     "re-execute moltd's binary in place (same pid, workers kept); wait for the outcome", cmd_upgrade},
};

/* --- messages and usage ------------------------------------------------------ */

static void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ctl_err(const char *fmt, ...)
{
    va_list ap;
    fputs("moltctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void ctl_usage(FILE *out)
{
    fputs("usage: moltctl [-s SOCKET] COMMAND [ARGS]\n"
          "       moltctl --version | -h | --help\n"
          "\n"
          "commands:\n",
          out);
    for (size_t i = 0; i < MOLT_ARRAY_SIZE(ctl_cmds); i++) {
        char synopsis[64];
        snprintf(synopsis, sizeof(synopsis), "%s %s", ctl_cmds[i].name, ctl_cmds[i].args);
        fprintf(out, "  %-20s %s\n", synopsis, ctl_cmds[i].help);
    }
    fprintf(out,
            "\n"
            "options:\n"
            "  -s, --socket PATH    moltd's control socket (default: $MOLT_CONTROL_SOCKET,\n"
            "                       else %s)\n"
            "\n"
            "environment:\n"
            "  MOLT_CONTROL_SOCKET       control socket when -s is not given\n"
            "  MOLT_CTL_TIMEOUT_MS       how long to wait for a reply (default %d)\n"
            "  MOLT_CTL_STOP_TIMEOUT_MS  how long `stop` waits for moltd to exit (default %d)\n"
            "\n"
            "exit status: %d ok, %d moltd refused or failed, %d usage, %d cannot reach moltd\n",
            CTL_DEFAULT_SOCKET, CTL_DEFAULT_TIMEOUT_MS, CTL_DEFAULT_STOP_WAIT_MS, MOLT_CTL_EXIT_OK,
            MOLT_CTL_EXIT_FAILED, MOLT_CTL_EXIT_USAGE, MOLT_CTL_EXIT_UNREACHABLE);
}

/* Reports a bad command line; cmd is NULL for the global part. Returns MOLT_CTL_EXIT_USAGE. */
static int ctl_usage_error(const ctl_cmd_t *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int ctl_usage_error(const ctl_cmd_t *cmd, const char *fmt, ...)
{
    va_list ap;
    fputs("moltctl: ", stderr);
    if (cmd)
        fprintf(stderr, "%s: ", cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (cmd)
        fprintf(stderr, "usage: moltctl [-s SOCKET] %s %s\n", cmd->name, cmd->args);
    else
        ctl_usage(stderr);
    return MOLT_CTL_EXIT_USAGE;
}

/*
 * Parses a command's arguments: "--name" must be one of `flags` (NULL-name
 * terminated), anything else starting with '-' is an error, "--" ends the
 * flags. The remaining words are moved to argv[1..] in order and their count
 * stored in *npos, so a command with operands (state NAME) just reads them.
 * Returns 0 or MOLT_CTL_EXIT_USAGE (message printed).
 */
static int ctl_parse_args(const ctl_cmd_t *cmd, int argc, char **argv, const ctl_flag_t *flags, int *npos)
{
    int n = 0;
    bool flags_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!flags_done && strcmp(a, "--") == 0) {
            flags_done = true;
            continue;
        }
        if (!flags_done && a[0] == '-' && a[1] != '\0') {
            const ctl_flag_t *f = flags;
            while (f->name && !(a[1] == '-' && strcmp(a + 2, f->name) == 0))
                f++;
            if (!f->name)
                return ctl_usage_error(cmd, "unknown option '%s'", a);
            *f->set = true;
            continue;
        }
        argv[1 + n++] = argv[i];
    }
    *npos = n;
    return 0;
}

/* Parses a positive millisecond count from the environment; 0 if unset, -1 if invalid. */
static int ctl_env_ms(const char *name, int *out)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v <= 0 || v > INT_MAX) {
        ctl_err("%s must be a positive number of milliseconds, not '%s'", name, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* --- the connection ------------------------------------------------------------ */

/* Milliseconds left until deadline, as a poll(2) timeout. */
static int ctl_ms_left(uint64_t deadline)
{
    if (deadline == CTL_NO_DEADLINE)
        return -1;
    uint64_t now = molt_now_ms();
    if (now >= deadline)
        return 0;
    return deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
}

/* Waits for `events` on fd: 0 when ready (or on error/hangup: the next call says), -ETIMEDOUT, -errno. */
static int ctl_wait(int fd, short events, uint64_t deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, ctl_ms_left(deadline));
        if (n > 0)
            return 0;
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

/*
 * Connects a UNIX stream socket to path, waiting at most timeout_ms when
 * moltd's accept backlog is full (SO_SNDTIMEO bounds that wait on AF_UNIX;
 * it fails with EAGAIN). On success *out is a non-blocking fd. 0 or -errno.
 */
static int ctl_connect(const char *path, int timeout_ms, int *out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, len + 1);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    int rc;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        rc = -errno;
        goto fail;
    }
    rc = molt_fd_set_nonblock(fd, true);
    if (rc < 0)
        goto fail;
    *out = fd;
    return 0;
fail:
    molt_close(&fd);
    return rc;
}

/* Opens c to ctx's socket. Returns MOLT_CTL_EXIT_OK or _UNREACHABLE (message printed). */
static int ctl_conn_open(ctl_conn_t *c, const ctl_ctx_t *ctx)
{
    *c = (ctl_conn_t){.fd = -1, .ctx = ctx};
    int rc = ctl_connect(ctx->socket_path, ctx->timeout_ms, &c->fd);
    if (rc == -EAGAIN) {
        ctl_err("cannot reach moltd at %s: not accepting connections (waited %d ms)", ctx->socket_path,
                ctx->timeout_ms);
        return MOLT_CTL_EXIT_UNREACHABLE;
    }
    if (rc < 0) {
        ctl_err("cannot reach moltd at %s: %s", ctx->socket_path, strerror(-rc));
        return MOLT_CTL_EXIT_UNREACHABLE;
    }
    return MOLT_CTL_EXIT_OK;
}

static void ctl_conn_close(ctl_conn_t *c)
{
    molt_close(&c->fd);
    molt_buf_free(&c->in);
    c->scanned = 0;
}

/* Sends req as one line. Returns MOLT_CTL_EXIT_OK, _UNREACHABLE, or _FAILED on ENOMEM (message printed). */
static int ctl_conn_send(ctl_conn_t *c, const json_t *req, uint64_t deadline)
{
    const char *path = c->ctx->socket_path;
    char *line = json_dumps(req, JSON_COMPACT);
    if (!line) {
        ctl_err("cannot encode the request: out of memory");
        return MOLT_CTL_EXIT_FAILED;
    }
    size_t len = strlen(line);
    line[len] = '\n'; /* replaces the NUL; len + 1 bytes go out */
    size_t off = 0;
    int ret = MOLT_CTL_EXIT_OK;
    while (off < len + 1) {
        /* MSG_NOSIGNAL: moltd going away must be an exit code, not SIGPIPE. */
        ssize_t n = send(c->fd, line + off, len + 1 - off, MSG_NOSIGNAL);
        if (n >= 0) {
            off += (size_t)n;
            continue;
        }
        int rc = -errno;
        if (rc == -EINTR)
            continue;
        if (rc == -EAGAIN)
            rc = ctl_wait(c->fd, POLLOUT, deadline);
        if (rc == -EPIPE || rc == -ECONNRESET)
            break; /* moltd closed first (it refused us, say): its reply, if any, is still to be read */
        if (rc == -ETIMEDOUT) {
            ctl_err("cannot send to moltd at %s: timed out after %d ms", path, c->ctx->timeout_ms);
            ret = MOLT_CTL_EXIT_UNREACHABLE;
            break;
        }
        if (rc < 0) {
            ctl_err("cannot send to moltd at %s: %s", path, strerror(-rc));
            ret = MOLT_CTL_EXIT_UNREACHABLE;
            break;
        }
    }
    free(line);
    return ret;
}

/*
 * Reads until c->in holds a complete line; *len is its length without the
 * '\n'. The caller consumes len + 1 bytes. 0, -ETIMEDOUT, -EMSGSIZE (longer
 * than CTL_LINE_MAX), -ECONNRESET (EOF first), -ENOMEM, or -errno.
 */
static int ctl_conn_read_line(ctl_conn_t *c, uint64_t deadline, size_t *len)
{
    for (;;) {
        char *nl =
            c->in.len > c->scanned ? memchr(c->in.data + c->scanned, '\n', c->in.len - c->scanned) : NULL;
        if (nl) {
            *len = (size_t)(nl - c->in.data);
            return *len > CTL_LINE_MAX ? -EMSGSIZE : 0;
        }
        c->scanned = c->in.len;
        if (c->in.len > CTL_LINE_MAX)
            return -EMSGSIZE;
        if (molt_buf_reserve(&c->in, CTL_READ_CHUNK) < 0)
            return -ENOMEM;
        ssize_t n = read(c->fd, c->in.data + c->in.len, CTL_READ_CHUNK);
        if (n > 0) {
            c->in.len += (size_t)n;
            continue;
        }
        if (n == 0)
            return -ECONNRESET;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -errno;
        int rc = ctl_wait(c->fd, POLLIN, deadline);
        if (rc < 0)
            return rc;
    }
}

/*
 * Reads one line and decodes it as a JSON object into *out (owned by the
 * caller). Returns MOLT_CTL_EXIT_OK or _UNREACHABLE (message printed), which
 * is what a timeout, an early EOF or an unreadable reply all mean to a script.
 */
static int ctl_conn_recv(ctl_conn_t *c, uint64_t deadline, json_t **out)
{
    const char *path = c->ctx->socket_path;
    size_t len = 0;
    int rc = ctl_conn_read_line(c, deadline, &len);
    switch (rc) {
    case 0:
        break;
    case -ETIMEDOUT:
        ctl_err("no reply from moltd at %s within %d ms", path, c->ctx->timeout_ms);
        return MOLT_CTL_EXIT_UNREACHABLE;
    case -ECONNRESET:
        ctl_err("moltd at %s closed the connection before replying", path);
        return MOLT_CTL_EXIT_UNREACHABLE;
    case -EMSGSIZE:
        ctl_err("reply from moltd at %s is longer than %u MiB", path, CTL_LINE_MAX >> 20);
        return MOLT_CTL_EXIT_UNREACHABLE;
    default:
        ctl_err("cannot read from moltd at %s: %s", path, strerror(-rc));
        return MOLT_CTL_EXIT_UNREACHABLE;
    }

    json_error_t jerr;
    json_t *obj = json_loadb(c->in.data, len, 0, &jerr);
    molt_buf_consume(&c->in, len + 1);
    c->scanned = 0;
    if (!obj) {
        ctl_err("unparseable reply from moltd at %s: %s (column %d)", path, jerr.text, jerr.column);
        return MOLT_CTL_EXIT_UNREACHABLE;
    }
    if (!json_is_object(obj)) {
        ctl_err("unparseable reply from moltd at %s: not a JSON object", path);
        json_decref(obj);
        return MOLT_CTL_EXIT_UNREACHABLE;
    }
    *out = obj;
    return MOLT_CTL_EXIT_OK;
}

/*
 * Checks a reply's "ok". Returns MOLT_CTL_EXIT_OK, _FAILED when moltd
 * answered ok:false (its error printed), or _UNREACHABLE when "ok" is
 * missing, which means the peer does not speak this protocol.
 */
static int ctl_check_reply(const ctl_ctx_t *ctx, const char *what, const json_t *reply)
{
    const json_t *ok = json_object_get(reply, "ok");
    if (!json_is_boolean(ok)) {
        ctl_err("unparseable reply from moltd at %s: no boolean \"ok\"", ctx->socket_path);
        return MOLT_CTL_EXIT_UNREACHABLE;
    }
    if (json_is_true(ok))
        return MOLT_CTL_EXIT_OK;
    const char *msg = json_string_value(json_object_get(reply, "error"));
    ctl_err("%s: %s", what, msg ? msg : "moltd refused without saying why");
    return MOLT_CTL_EXIT_FAILED;
}

/*
 * The usual exchange: connect, send req, read one reply, check "ok". Takes a
 * reference to req (so callers can pass json_pack() directly). On
 * MOLT_CTL_EXIT_OK *reply is the ok:true reply, owned by the caller.
 */
static int ctl_call(const ctl_ctx_t *ctx, const char *what, json_t *req, json_t **reply)
{
    ctl_conn_t c;
    json_t *r = NULL;
    int ret;
    if (!req) {
        ctl_err("cannot build the %s request: out of memory", what);
        return MOLT_CTL_EXIT_FAILED;
    }
    uint64_t deadline = molt_now_ms() + (uint64_t)ctx->timeout_ms;
    ret = ctl_conn_open(&c, ctx);
    if (ret != MOLT_CTL_EXIT_OK)
        goto out;
    ret = ctl_conn_send(&c, req, deadline);
    if (ret == MOLT_CTL_EXIT_OK)
        ret = ctl_conn_recv(&c, deadline, &r);
    if (ret == MOLT_CTL_EXIT_OK)
        ret = ctl_check_reply(ctx, what, r);
    if (ret == MOLT_CTL_EXIT_OK) {
        *reply = r;
        r = NULL;
    }
    ctl_conn_close(&c);
out:
    json_decref(r);
    json_decref(req);
    return ret;
}

/* --- rendering helpers ---------------------------------------------------------- */

/*
 * Replies are read leniently: a field that is missing or of another type
 * prints as "-" rather than failing, so an older or newer moltd still gives
 * a useful status.
 */
static const char *jstr(const json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : dflt;
}

static bool jint(const json_t *o, const char *key, long long *out)
{
    const json_t *v = json_object_get(o, key);
    double d = json_real_value(v); /* 0 unless a real */
    if (json_is_integer(v))
        *out = (long long)json_integer_value(v);
    else if (json_is_real(v) && d > -9e18 && d < 9e18) /* the cast is undefined beyond */
        *out = (long long)d;
    else
        return false;
    return true;
}

/* An integer member as text, or "-". */
static void fmt_int(char *buf, size_t size, const json_t *o, const char *key)
{
    long long v;
    if (jint(o, key, &v))
        snprintf(buf, size, "%lld", v);
    else
        snprintf(buf, size, "-");
}

/* 45s, 3m07s, 2h03m, 4d05h: two units are enough to read at a glance. */
static void fmt_duration(char *buf, size_t size, long long ms)
{
    if (ms < 0) {
        snprintf(buf, size, "-");
        return;
    }
    long long s = ms / 1000;
    if (s < 60)
        snprintf(buf, size, "%llds", s);
    else if (s < 3600)
        snprintf(buf, size, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, size, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    else
        snprintf(buf, size, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

static void fmt_bytes(char *buf, size_t size, long long b)
{
    if (b <= 0)
        snprintf(buf, size, "-");
    else if (b < 1024 * 1024)
        snprintf(buf, size, "%lld KiB", (b + 1023) / 1024);
    else if (b < 1024LL * 1024 * 1024)
        snprintf(buf, size, "%.1f MiB", (double)b / (1024.0 * 1024));
    else
        snprintf(buf, size, "%.2f GiB", (double)b / (1024.0 * 1024 * 1024));
}

/* Prints json pretty (2-space indent, moltd's key order) and a newline. */
static int ctl_print_json(const json_t *j)
{
    if (json_dumpf(j, stdout, JSON_INDENT(2)) < 0) {
        ctl_err("cannot write JSON to stdout");
        return MOLT_CTL_EXIT_FAILED;
    }
    fputc('\n', stdout);
    return MOLT_CTL_EXIT_OK;
}

/* --- status ----------------------------------------------------------------------- */

enum {
    COL_SLOT = 0,
    COL_PID,
    COL_GEN,
    COL_STATE,
    COL_UP,
    COL_REQS,
    COL_2XX,
    COL_4XX,
    COL_5XX,
    COL_CONNS,
    COL_RSS,
    COL_RESTARTS,
    COL_NOTE, /* last: printed unpadded, may be long */
    COL_COUNT
};

static const struct {
    const char *title;
    bool right; /* numbers align right */
} status_cols[COL_COUNT] = {
    [COL_SLOT] = {"SLOT", true},    [COL_PID] = {"PID", true}, [COL_GEN] = {"GEN", true},
    [COL_STATE] = {"STATE", false}, [COL_UP] = {"UP", true},   [COL_REQS] = {"REQS", true},
    [COL_2XX] = {"2XX", true},      [COL_4XX] = {"4XX", true}, [COL_5XX] = {"5XX", true},
    [COL_CONNS] = {"CONNS", true},  [COL_RSS] = {"RSS", true}, [COL_RESTARTS] = {"RESTARTS", true},
    [COL_NOTE] = {"NOTE", false},
};

#define STATUS_CELL 40
#define STATUS_NOTE 512

typedef struct status_row {
    char cell[COL_NOTE][STATUS_CELL];
    char note[STATUS_NOTE];
} status_row_t;

static const char *status_cell(const status_row_t *r, int col)
{
    return col == COL_NOTE ? r->note : r->cell[col];
}

/* Appends "; "-separated text to a row's note, truncating if it must. */
static void status_note_add(status_row_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void status_note_add(status_row_t *r, const char *fmt, ...)
{
    size_t used = strlen(r->note);
    if (used && used + 2 < sizeof(r->note)) {
        memcpy(r->note + used, "; ", 3);
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->note + used, sizeof(r->note) - used, fmt, ap);
    va_end(ap);
}

static void status_fill_row(status_row_t *r, const json_t *w)
{
    long long pid = 0, v;
    const json_t *req = json_object_get(w, "requests");

    memset(r, 0, sizeof(*r));
    fmt_int(r->cell[COL_SLOT], STATUS_CELL, w, "slot");
    /* pid 0: dead (backoff/failed), so neither a pid nor an uptime means anything. */
    if (jint(w, "pid", &pid) && pid > 0)
        snprintf(r->cell[COL_PID], STATUS_CELL, "%lld", pid);
    else
        snprintf(r->cell[COL_PID], STATUS_CELL, "-");
    fmt_int(r->cell[COL_GEN], STATUS_CELL, w, "generation");
    snprintf(r->cell[COL_STATE], STATUS_CELL, "%s", jstr(w, "state", "?"));
    fmt_duration(r->cell[COL_UP], STATUS_CELL, pid > 0 && jint(w, "up_ms", &v) ? v : -1);
    fmt_int(r->cell[COL_REQS], STATUS_CELL, req, "total");
    fmt_int(r->cell[COL_2XX], STATUS_CELL, req, "2xx");
    fmt_int(r->cell[COL_4XX], STATUS_CELL, req, "4xx");
    fmt_int(r->cell[COL_5XX], STATUS_CELL, req, "5xx");
    fmt_int(r->cell[COL_CONNS], STATUS_CELL, w, "connections");
    fmt_bytes(r->cell[COL_RSS], STATUS_CELL, pid > 0 && jint(w, "rss", &v) ? v : 0);
    fmt_int(r->cell[COL_RESTARTS], STATUS_CELL, w, "restarts");

    if (json_is_true(json_object_get(w, "crashloop")))
        status_note_add(r, "CRASH LOOP");
    if (jint(w, "next_start_ms", &v)) {
        long long left = v - (long long)molt_wall_ms();
        if (left <= 0)
            status_note_add(r, "respawn due");
        else if (left < 60000)
            status_note_add(r, "respawn in %.1fs", (double)left / 1000);
        else {
            char d[32];
            fmt_duration(d, sizeof(d), left);
            status_note_add(r, "respawn in %s", d);
        }
    }
    const char *last = json_string_value(json_object_get(w, "last_exit"));
    if (last)
        status_note_add(r, "last exit: %s", last);
}

static void status_print_header(const json_t *st)
{
    long long v;
    char pid[24], up[32];
    const json_t *gen = json_object_get(st, "generation");
    const json_t *listen = json_object_get(st, "listen");
    const json_t *e;
    size_t i;

    fmt_int(pid, sizeof(pid), st, "pid");
    fmt_duration(up, sizeof(up), jint(st, "uptime_ms", &v) ? v : -1);
    printf("moltd       pid %s, version %s, up %s\n", pid, jstr(st, "version", "?"), up);
    /* An older moltd does not say which binary it runs: no line then. */
    if (json_is_string(json_object_get(st, "binary"))) {
        printf("binary      %s", jstr(st, "binary", "?"));
        if (jint(st, "upgrades", &v) && v > 0) {
            printf(", upgraded %lld time%s", v, v == 1 ? "" : "s");
            if (jint(st, "upgraded_ms", &v)) {
                char ago[32];
                long long d = (long long)molt_wall_ms() - v;
                fmt_duration(ago, sizeof(ago), d < 0 ? 0 : d);
                printf(", last %s ago", ago);
            }
        }
        putchar('\n');
    }
    printf("config      %s\n", jstr(st, "config", "?"));

    if (json_is_object(gen)) {
        char num[24], workers[24];
        fmt_int(num, sizeof(num), gen, "number");
        fmt_int(workers, sizeof(workers), gen, "workers");
        printf("generation  %s (%s), %s workers", num, jstr(gen, "id", "?"), workers);
        const json_t *plugins = json_object_get(gen, "plugins");
        for (i = 0; i < json_array_size(plugins); i++) {
            e = json_array_get(plugins, i);
            const char *name = jstr(e, "name", "?");
            const char *plugin = jstr(e, "plugin", name);
            /* An instance is usually named after its plugin; say the plugin only when it differs. */
            printf("%s%s", i ? ", " : ", plugins: ", name);
            if (strcmp(name, plugin) != 0)
                printf(" (%s %s)", plugin, jstr(e, "version", "?"));
            else
                printf(" %s", jstr(e, "version", "?"));
        }
        putchar('\n');
    } else {
        printf("generation  none\n");
    }

    printf("listen      ");
    if (json_array_size(listen) == 0)
        printf("none");
    for (i = 0; i < json_array_size(listen); i++) {
        e = json_array_get(listen, i);
        printf("%s%s %s", i ? ", " : "", jstr(e, "name", "?"), jstr(e, "address", "?"));
    }
    putchar('\n');
}

/* One row per worker; column widths fit the widest cell so large counters stay aligned. */
static int status_print_workers(const json_t *workers)
{
    size_t n = json_array_size(workers);
    if (n == 0) {
        printf("no workers\n");
        return MOLT_CTL_EXIT_OK;
    }
    status_row_t *rows = calloc(n, sizeof(*rows));
    if (!rows) {
        ctl_err("cannot format the worker table: out of memory");
        return MOLT_CTL_EXIT_FAILED;
    }
    size_t width[COL_COUNT];
    for (int c = 0; c < COL_COUNT; c++)
        width[c] = strlen(status_cols[c].title);
    for (size_t i = 0; i < n; i++) {
        status_fill_row(&rows[i], json_array_get(workers, i));
        for (int c = 0; c < COL_NOTE; c++) {
            size_t l = strlen(rows[i].cell[c]);
            width[c] = l > width[c] ? l : width[c];
        }
    }
    for (size_t i = 0; i <= n; i++) {
        /* Row 0 is the title line. */
        const status_row_t *r = i ? &rows[i - 1] : NULL;
        bool note = r && r->note[0];
        for (int c = 0; c < COL_COUNT; c++) {
            const char *text = r ? status_cell(r, c) : status_cols[c].title;
            if (c == COL_NOTE) {
                if (r && !note)
                    break;
                printf("  %s", text);
            } else if (status_cols[c].right) {
                printf("%s%*s", c ? "  " : "", (int)width[c], text);
            } else if (c + 1 == COL_NOTE && r && !note) {
                printf("%s%s", c ? "  " : "", text); /* no trailing blanks */
            } else {
                printf("%s%-*s", c ? "  " : "", (int)width[c], text);
            }
        }
        putchar('\n');
    }
    free(rows);
    return MOLT_CTL_EXIT_OK;
}

static int cmd_status(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv)
{
    bool as_json = false;
    const ctl_flag_t flags[] = {{"json", &as_json}, {NULL, NULL}};
    int npos, ret;
    json_t *st = NULL;

    ret = ctl_parse_args(cmd, argc, argv, flags, &npos);
    if (ret)
        return ret;
    if (npos > 0)
        return ctl_usage_error(cmd, "unexpected argument '%s'", argv[1]);

    ret = ctl_call(ctx, cmd->name, json_pack("{s:s}", "cmd", "status"), &st);
    if (ret != MOLT_CTL_EXIT_OK)
        return ret;
    if (as_json) {
        ret = ctl_print_json(st);
    } else {
        status_print_header(st);
        putchar('\n');
        ret = status_print_workers(json_object_get(st, "workers"));
    }
    json_decref(st);
    return ret;
}

/* --- stop ------------------------------------------------------------------------- */

/*
 * Waits until the control socket stops accepting connections, which moltd
 * guarantees happens only as it exits (docs/control-protocol.md), so that
 * `moltctl stop && start-something` is safe in a script. True when gone.
 */
static bool stop_wait_gone(const ctl_ctx_t *ctx)
{
    uint64_t deadline = molt_now_ms() + (uint64_t)ctx->stop_wait_ms;
    for (;;) {
        int fd = -1;
        int rc = ctl_connect(ctx->socket_path, CTL_STOP_POLL_MS, &fd);
        molt_close(&fd);
        /* Refused: nobody listens on the path any more; ENOENT: moltd removed it. */
        if (rc == -ECONNREFUSED || rc == -ENOENT || rc == -ENOTDIR)
            return true;
        if (molt_now_ms() >= deadline)
            return false;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = CTL_STOP_POLL_MS * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
}

static int cmd_stop(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv)
{
    bool fast = false;
    const ctl_flag_t flags[] = {{"fast", &fast}, {NULL, NULL}};
    int npos, ret;
    json_t *reply = NULL;

    ret = ctl_parse_args(cmd, argc, argv, flags, &npos);
    if (ret)
        return ret;
    if (npos > 0)
        return ctl_usage_error(cmd, "unexpected argument '%s'", argv[1]);

    ret = ctl_call(ctx, cmd->name, json_pack("{s:s, s:b}", "cmd", "stop", "fast", fast), &reply);
    if (ret != MOLT_CTL_EXIT_OK)
        return ret;
    printf("moltd stopping (%s)\n", jstr(reply, "stopping", fast ? "fast" : "graceful"));
    json_decref(reply);
    /* Say it now: the wait below may take as long as moltd's drain timeout. */
    fflush(stdout);

    if (!stop_wait_gone(ctx)) {
        ctl_err("moltd at %s still accepts connections after %d ms", ctx->socket_path, ctx->stop_wait_ms);
        return MOLT_CTL_EXIT_FAILED;
    }
    printf("stopped\n");
    return MOLT_CTL_EXIT_OK;
}

/* --- reload ----------------------------------------------------------------------- */

/* Opens a connection subscribed to events; MOLT_CTL_EXIT_OK or an error (printed). */
static int events_open(const ctl_ctx_t *ctx, ctl_conn_t *c)
{
    json_t *req = json_pack("{s:s}", "cmd", "events"), *r = NULL;
    int ret = ctl_conn_open(c, ctx);
    if (ret != MOLT_CTL_EXIT_OK) {
        json_decref(req);
        return ret;
    }
    uint64_t deadline = molt_now_ms() + (uint64_t)ctx->timeout_ms;
    ret = ctl_conn_send(c, req, deadline);
    if (ret == MOLT_CTL_EXIT_OK)
        ret = ctl_conn_recv(c, deadline, &r);
    if (ret == MOLT_CTL_EXIT_OK)
        ret = ctl_check_reply(ctx, "events", r);
    json_decref(req);
    json_decref(r);
    if (ret != MOLT_CTL_EXIT_OK)
        ctl_conn_close(c);
    return ret;
}

/* One event as a person reads it, during `reload` on a terminal. */
static void progress_print(const json_t *ev)
{
    const char *type = jstr(ev, "type", "");
    long long slot = 0, pid = 0, gen = 0;
    if (strcmp(type, "reload") == 0 && json_object_get(ev, "phase") && !json_object_get(ev, "result")) {
        printf("  phase %s\n", jstr(ev, "phase", "?"));
    } else if (strcmp(type, "worker") == 0) {
        jint(ev, "slot", &slot);
        jint(ev, "pid", &pid);
        jint(ev, "generation", &gen);
        const char *extra = jstr(ev, "error", jstr(ev, "exit", ""));
        printf("    worker %lld (pid %lld, generation %lld): %s%s%s\n", slot, pid, gen, jstr(ev, "state", "?"),
               extra[0] ? ": " : "", extra);
    }
    fflush(stdout);
}

/* Prints every event already received on c; false when c is closed or broken. */
static bool progress_drain(ctl_conn_t *c)
{
    for (;;) {
        size_t len = 0;
        int rc = ctl_conn_read_line(c, 0, &len); /* a deadline already past: no waiting */
        if (rc == -ETIMEDOUT)
            return true;
        if (rc < 0)
            return false;
        json_t *ev = json_loadb(c->in.data, len, 0, NULL);
        molt_buf_consume(&c->in, len + 1);
        c->scanned = 0;
        if (ev)
            progress_print(ev);
        json_decref(ev);
    }
}

/* moltctl events: follows moltd's events until it stops (exit 0). */
static int cmd_events(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv)
{
    const ctl_flag_t flags[] = {{NULL, NULL}};
    int npos, ret = ctl_parse_args(cmd, argc, argv, flags, &npos);
    if (ret)
        return ret;
    if (npos > 0)
        return ctl_usage_error(cmd, "unexpected argument '%s'", argv[1]);
    ctl_conn_t c;
    ret = events_open(ctx, &c);
    if (ret != MOLT_CTL_EXIT_OK)
        return ret;
    for (;;) {
        size_t len = 0;
        int rc = ctl_conn_read_line(&c, CTL_NO_DEADLINE, &len);
        if (rc < 0)
            break; /* moltd went away: the stream is over */
        if (fwrite(c.in.data, 1, len, stdout) != len || putchar('\n') == EOF || fflush(stdout) == EOF) {
            ret = MOLT_CTL_EXIT_FAILED; /* stdout closed: nobody is reading */
            break;
        }
        molt_buf_consume(&c.in, len + 1);
        c.scanned = 0;
    }
    ctl_conn_close(&c);
    return ret;
}

/*
 * moltctl state NAME: the instance's state in every worker of the active
 * generation, as its save callback packs it, shown as JSON (one object:
 * name, plugin, generation, workers[{slot, pid, state_version, bytes, state}
 * or {slot, pid, error}]). --json is accepted for symmetry: the output is
 * JSON either way.
 */
static int cmd_state(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv)
{
    bool as_json = false;
    const ctl_flag_t flags[] = {{"json", &as_json}, {NULL, NULL}};
    int npos, ret = ctl_parse_args(cmd, argc, argv, flags, &npos);
    json_t *r = NULL;
    if (ret)
        return ret;
    if (npos != 1)
        return ctl_usage_error(cmd, "%s", npos ? "one instance name only" : "an instance name is needed");
    ret = ctl_call(ctx, cmd->name, json_pack("{s:s,s:s}", "cmd", "state", "name", argv[1]), &r);
    if (ret != MOLT_CTL_EXIT_OK)
        return ret;
    json_object_del(r, "ok");
    ret = ctl_print_json(r);
    json_decref(r);
    return ret;
}

/*
 * moltctl metrics: the Prometheus text the admin listener serves (GET
 * /metrics), printed as moltd sent it; for a scrape without an admin
 * listener (a textfile collector, say) or a look by hand.
 */
static int cmd_metrics(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv)
{
    const ctl_flag_t flags[] = {{NULL, NULL}};
    int npos, ret = ctl_parse_args(cmd, argc, argv, flags, &npos);
    json_t *r = NULL;
    if (ret)
        return ret;
    if (npos > 0)
        return ctl_usage_error(cmd, "unexpected argument '%s'", argv[1]);
    ret = ctl_call(ctx, cmd->name, json_pack("{s:s}", "cmd", "metrics"), &r);
    if (ret != MOLT_CTL_EXIT_OK)
        return ret;
    json_t *text = json_object_get(r, "metrics");
    if (!json_is_string(text)) {
        ctl_err("metrics: the reply has no \"metrics\" text");
        ret = MOLT_CTL_EXIT_UNREACHABLE;
    } else if (fwrite(json_string_value(text), 1, json_string_length(text), stdout) !=
                   json_string_length(text) ||
               fflush(stdout) == EOF) {
        ctl_err("cannot write to stdout");
        ret = MOLT_CTL_EXIT_FAILED;
    }
    json_decref(r);
    return ret;
}

/* A reload takes load + handoff + stable window; under systemd, ExecReload has its own limit. */
#define CTL_RELOAD_WAIT_MS (10 * 60 * 1000)

/*
 * Asks for a reload and waits for the outcome of the reload that covers the
 * request. Prints one line: "committed generation N in X ms", "rolled back in
 * phase P: reason" or "rejected: reason". Exit 0 only when committed.
 */
/* reload and rollback: the request is the command's name. */
static int cmd_reload(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv)
{
    bool as_json = false;
    const ctl_flag_t flags[] = {{"json", &as_json}, {NULL, NULL}};
    int npos, ret;
    ctl_conn_t c;
    json_t *req = json_pack("{s:s}", "cmd", cmd->name), *r = NULL;

    ret = ctl_parse_args(cmd, argc, argv, flags, &npos);
    if (ret || npos > 0) {
        json_decref(req);
        return ret ? ret : ctl_usage_error(cmd, "unexpected argument '%s'", argv[1]);
    }
    int wait_ms = CTL_RELOAD_WAIT_MS;
    if (ctl_env_ms("MOLT_CTL_RELOAD_TIMEOUT_MS", &wait_ms) < 0) {
        json_decref(req);
        return MOLT_CTL_EXIT_USAGE;
    }
    /* On a terminal, show the phases and workers as they go: subscribe to
     * events first, so that nothing of this reload is missed. */
    ctl_conn_t ev;
    bool progress = !as_json && isatty(STDOUT_FILENO) && events_open(ctx, &ev) == MOLT_CTL_EXIT_OK;
    ret = ctl_conn_open(&c, ctx);
    if (ret != MOLT_CTL_EXIT_OK) {
        json_decref(req);
        if (progress)
            ctl_conn_close(&ev);
        return ret;
    }
    uint64_t deadline = molt_now_ms() + (uint64_t)wait_ms;
    ret = ctl_conn_send(&c, req, deadline);
    while (ret == MOLT_CTL_EXIT_OK && progress) {
        struct pollfd pfd[2] = {{.fd = c.fd, .events = POLLIN}, {.fd = ev.fd, .events = POLLIN}};
        if (c.in.len || poll(pfd, 2, ctl_ms_left(deadline)) <= 0 || (pfd[0].revents & (POLLIN | POLLHUP)))
            break; /* the reply (or the deadline) is here */
        if (!progress_drain(&ev))
            break;
    }
    if (ret == MOLT_CTL_EXIT_OK)
        ret = ctl_conn_recv(&c, deadline, &r);
    if (progress) {
        progress_drain(&ev); /* what came just before the reply */
        ctl_conn_close(&ev);
    }
    ctl_conn_close(&c);
    json_decref(req);
    if (ret != MOLT_CTL_EXIT_OK)
        return ret;

    bool ok = json_is_true(json_object_get(r, "ok"));
    const char *result = jstr(r, "result", ok ? "committed" : "rejected");
    long long gen = 0, ms = 0;
    jint(r, "generation", &gen);
    jint(r, "ms", &ms);
    if (as_json)
        ret = ctl_print_json(r);
    else if (ok)
        printf("committed generation %lld in %lld ms\n", gen, ms);
    else if (strcmp(result, "rolled_back") == 0)
        printf("rolled back in phase %s: %s\n", jstr(r, "phase", "?"), jstr(r, "reason", "?"));
    else
        printf("%s: %s\n", result, jstr(r, "reason", jstr(r, "error", "?")));
    json_decref(r);
    if (ret != MOLT_CTL_EXIT_OK)
        return ret;
    return ok ? MOLT_CTL_EXIT_OK : MOLT_CTL_EXIT_FAILED;
}

/* --- upgrade ---------------------------------------------------------------------- */

/*
 * moltctl upgrade: moltd re-executes its binary (the path it was started
 * from, as it is on disk now) in the same process; the listeners, the
 * workers and the state stay. The reply comes once the new binary runs, or
 * once moltd knows it cannot (the old binary then runs on, unchanged). Prints
 * "upgraded moltd FROM -> TO (pid N, binary PATH) in M ms" and exits 0, or
 * prints moltd's reason on stderr and exits 1. It waits as long as a reload
 * (MOLT_CTL_RELOAD_TIMEOUT_MS): a refused upgrade answers at once, and a
 * check is bounded by moltd, but a slow host must not turn a done upgrade
 * into "no reply".
 */
static int cmd_upgrade(const ctl_ctx_t *ctx, const ctl_cmd_t *cmd, int argc, char **argv)
{
    bool as_json = false;
    const ctl_flag_t flags[] = {{"json", &as_json}, {NULL, NULL}};
    int npos, ret = ctl_parse_args(cmd, argc, argv, flags, &npos);
    json_t *r = NULL;
    if (ret)
        return ret;
    if (npos > 0)
        return ctl_usage_error(cmd, "unexpected argument '%s'", argv[1]);
    int wait_ms = CTL_RELOAD_WAIT_MS;
    if (ctl_env_ms("MOLT_CTL_RELOAD_TIMEOUT_MS", &wait_ms) < 0)
        return MOLT_CTL_EXIT_USAGE;

    /* ctl_call() with the reload's wait: its own deadline is ctx->timeout_ms. */
    ctl_ctx_t wait_ctx = *ctx;
    wait_ctx.timeout_ms = wait_ms;
    ctl_conn_t c;
    json_t *req = json_pack("{s:s}", "cmd", "upgrade");
    if (!req) {
        ctl_err("cannot build the upgrade request: out of memory");
        return MOLT_CTL_EXIT_FAILED;
    }
    ret = ctl_conn_open(&c, ctx);
    if (ret == MOLT_CTL_EXIT_OK) {
        c.ctx = &wait_ctx; /* the "no reply within N ms" message names the wait used */
        uint64_t deadline = molt_now_ms() + (uint64_t)wait_ms;
        ret = ctl_conn_send(&c, req, deadline);
        if (ret == MOLT_CTL_EXIT_OK)
            ret = ctl_conn_recv(&c, deadline, &r);
        ctl_conn_close(&c);
    }
    json_decref(req);
    if (ret != MOLT_CTL_EXIT_OK)
        return ret;

    const json_t *ok = json_object_get(r, "ok");
    if (!json_is_boolean(ok)) {
        ctl_err("unparseable reply from moltd at %s: no boolean \"ok\"", ctx->socket_path);
        json_decref(r);
        return MOLT_CTL_EXIT_UNREACHABLE;
    }
    const json_t *up = json_object_get(r, "upgrade");
    if (as_json) {
        ret = ctl_print_json(r);
    } else if (json_is_true(ok)) {
        long long pid = 0, ms = 0;
        char pids[24] = "?", mss[24] = "?";
        if (jint(up, "pid", &pid))
            snprintf(pids, sizeof(pids), "%lld", pid);
        if (jint(up, "ms", &ms))
            snprintf(mss, sizeof(mss), "%lld", ms);
        printf("upgraded moltd %s -> %s (pid %s, binary %s) in %s ms\n", jstr(up, "from", "?"),
               jstr(up, "to", "?"), pids, jstr(up, "binary", "?"), mss);
    } else {
        /* moltd's error already says "upgrade failed: ..."; another one
         * (an older moltd's "unknown command") gets the command's name. */
        const char *msg = jstr(r, "error", "moltd refused without saying why");
        if (strncmp(msg, "upgrade", 7) == 0)
            ctl_err("%s", msg);
        else
            ctl_err("upgrade: %s", msg);
    }
    bool done = json_is_true(ok);
    json_decref(r);
    if (ret != MOLT_CTL_EXIT_OK)
        return ret;
    return done ? MOLT_CTL_EXIT_OK : MOLT_CTL_EXIT_FAILED;
}

/* --- main ------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    ctl_ctx_t ctx = {
        .socket_path = NULL,
        .timeout_ms = CTL_DEFAULT_TIMEOUT_MS,
        .stop_wait_ms = CTL_DEFAULT_STOP_WAIT_MS,
    };
    int i;

    /* Global options come before the command; what follows belongs to the command. */
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            ctl_usage(stdout);
            return MOLT_CTL_EXIT_OK;
        } else if (strcmp(a, "--version") == 0) {
            printf("moltctl %s\n", MOLT_VERSION);
            return MOLT_CTL_EXIT_OK;
        } else if (strcmp(a, "-s") == 0 || strcmp(a, "--socket") == 0) {
            if (++i == argc)
                return ctl_usage_error(NULL, "option '%s' needs a socket path", a);
            ctx.socket_path = argv[i];
        } else if (strncmp(a, "--socket=", 9) == 0) {
            ctx.socket_path = a + 9;
        } else if (strncmp(a, "-s", 2) == 0) {
            ctx.socket_path = a + 2;
        } else {
            return ctl_usage_error(NULL, "unknown option '%s'", a);
        }
    }
    if (i == argc)
        return ctl_usage_error(NULL, "no command given");

    const ctl_cmd_t *cmd = NULL;
    for (size_t k = 0; k < MOLT_ARRAY_SIZE(ctl_cmds); k++)
        if (strcmp(argv[i], ctl_cmds[k].name) == 0)
            cmd = &ctl_cmds[k];
    if (!cmd)
        return ctl_usage_error(NULL, "unknown command '%s'", argv[i]);

    if (!ctx.socket_path)
        ctx.socket_path = getenv("MOLT_CONTROL_SOCKET");
    if (!ctx.socket_path || !*ctx.socket_path)
        ctx.socket_path = CTL_DEFAULT_SOCKET;
    if (ctl_env_ms("MOLT_CTL_TIMEOUT_MS", &ctx.timeout_ms) < 0 ||
        ctl_env_ms("MOLT_CTL_STOP_TIMEOUT_MS", &ctx.stop_wait_ms) < 0)
        return MOLT_CTL_EXIT_USAGE;

    int ret = cmd->run(&ctx, cmd, argc - i, argv + i);

    /* A status piped into a full disk must not exit 0. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        ctl_err("cannot write to stdout: %s", strerror(errno));
        if (ret == MOLT_CTL_EXIT_OK)
            ret = MOLT_CTL_EXIT_FAILED;
    }
    return ret;
}
