#include "shared/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "shared/log.h"

/* Longest key path we print ("plugins[127].config" and the like); longer
 * unknown keys are truncated in the message, which still names the file. */
#define CFG_KEY_MAX 256
/* A config is a few kilobytes; refuse anything absurd before reading it. */
#define CFG_FILE_MAX (16u << 20)
#define CFG_MS_MAX 3600000 /* one hour, the ceiling of every timeout */
#define CFG_BODY_MAX (1ll << 30)

/* One parse in progress: where messages go and the config being built. */
typedef struct cfg_parse {
    const char *file; /* as the caller spelled it, for messages */
    char *err;
    size_t errlen;
    molt_config_t *cfg;
} cfg_parse_t;

/*
 * Writes "FILE: KEY: message" (or "FILE: message" without a key) into the
 * caller's buffer and returns -1, so that every check can `return cfg_fail()`.
 * Control characters from user values are replaced so the message stays one
 * line in a log.
 */
static int cfg_fail(cfg_parse_t *p, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int cfg_fail(cfg_parse_t *p, const char *key, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (!p->err || p->errlen == 0)
        return -1;
    if (key && key[0])
        n = snprintf(p->err, p->errlen, "%s: %s: ", p->file, key);
    else
        n = snprintf(p->err, p->errlen, "%s: ", p->file);
    if (n >= 0 && (size_t)n < p->errlen) {
        va_start(ap, fmt);
        vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    for (char *c = p->err; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    return -1;
}

static int cfg_oom(cfg_parse_t *p, const char *key)
{
    return cfg_fail(p, key, "out of memory");
}

/* Appends s to the key path in buf, truncating: a path cut short by a very
 * long unknown key still starts with its parents, which is what a reader needs. */
static void key_put(char *buf, size_t n, size_t *len, const char *s)
{
    size_t k = strlen(s);

    if (k > n - 1 - *len)
        k = n - 1 - *len;
    memcpy(buf + *len, s, k);
    *len += k;
    buf[*len] = '\0';
}

/* "parent.key", or "key" at the top level. */
static void key_child(char *buf, size_t n, const char *parent, const char *key)
{
    size_t len = 0;

    buf[0] = '\0';
    key_put(buf, n, &len, parent);
    if (parent[0])
        key_put(buf, n, &len, ".");
    key_put(buf, n, &len, key);
}

/* "parent[i]" */
static void key_elem(char *buf, size_t n, const char *parent, size_t i)
{
    char idx[32];
    size_t len = 0;

    snprintf(idx, sizeof(idx), "[%zu]", i);
    buf[0] = '\0';
    key_put(buf, n, &len, parent);
    key_put(buf, n, &len, idx);
}

/* --- paths ------------------------------------------------------------------ */

/*
 * Resolves `rel` against the absolute directory `base` (ignored when `rel` is
 * absolute) and returns a new string, or NULL when out of memory. Empty and
 * "." components are dropped. A ".." at the start of `rel` removes a component
 * of `base` only when `pop` is set: that is exact only for a base that
 * realpath() produced (no symlinks to go back through), which is true of the
 * config directory but not of a plugin_path entry. Any other ".." is kept as
 * written, for the kernel to resolve.
 */
static char *path_resolve(const char *base, const char *rel, bool pop)
{
    size_t len = 0, kept = 0;
    char *out = malloc(strlen(base) + strlen(rel) + 2);

    if (!out)
        return NULL;
    if (rel[0] == '/' || base[0] == '\0') {
        out[len++] = '/';
    } else {
        len = strlen(base);
        memcpy(out, base, len);
        while (len > 1 && out[len - 1] == '/')
            len--;
    }
    out[len] = '\0';

    for (const char *s = rel; *s;) {
        const char *e;
        size_t n;

        while (*s == '/')
            s++;
        for (e = s; *e && *e != '/'; e++)
            ;
        n = (size_t)(e - s);
        if (n == 0)
            break;
        if (n == 1 && s[0] == '.') {
            /* nothing */
        } else if (n == 2 && s[0] == '.' && s[1] == '.' && kept == 0 && (pop || rel[0] == '/')) {
            char *slash = strrchr(out, '/');

            len = slash == out ? 1 : (size_t)(slash - out);
            out[len] = '\0';
        } else {
            if (out[len - 1] != '/')
                out[len++] = '/';
            memcpy(out + len, s, n);
            len += n;
            out[len] = '\0';
            kept++;
        }
        s = e;
    }
    return out;
}

/*
 * Sets cfg->dir and cfg->path from the path the caller gave. The directory is
 * canonicalised with realpath(); when it does not exist (only allowed for
 * molt_config_load_string) it is made absolute against the working directory.
 */
static int cfg_locate(cfg_parse_t *p, const char *path, bool must_exist)
{
    molt_config_t *cfg = p->cfg;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    char *dirtext = NULL, *cwd = NULL;
    int rc = -1;

    if (!slash)
        dirtext = strdup(".");
    else if (slash == path)
        dirtext = strdup("/");
    else
        dirtext = strndup(path, (size_t)(slash - path));
    if (!dirtext) {
        cfg_oom(p, NULL);
        goto out;
    }

    cfg->dir = realpath(dirtext, NULL);
    if (!cfg->dir) {
        if (must_exist) {
            cfg_fail(p, NULL, "realpath(\"%s\") failed: %s", dirtext, strerror(errno));
            goto out;
        }
        cwd = getcwd(NULL, 0);
        if (!cwd) {
            cfg_fail(p, NULL, "getcwd() failed: %s", strerror(errno));
            goto out;
        }
        cfg->dir = path_resolve(cwd, dirtext, true);
        if (!cfg->dir) {
            cfg_oom(p, NULL);
            goto out;
        }
    }
    cfg->path = path_resolve(cfg->dir, base, false);
    if (!cfg->path) {
        cfg_oom(p, NULL);
        goto out;
    }
    rc = 0;
out:
    free(dirtext);
    free(cwd);
    return rc;
}

/* --- typed getters -------------------------------------------------------------
 * Each looks up obj[key]; when the key is absent it leaves *out alone (the
 * default stays), when present with the wrong type or range it fails naming
 * "path.key".
 */

static int check_keys(cfg_parse_t *p, const char *path, json_t *obj, const char *const *allowed)
{
    const char *k;
    json_t *v;

    json_object_foreach(obj, k, v)
    {
        bool ok = false;
        char kp[CFG_KEY_MAX];

        (void)v;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(k, allowed[i]) == 0;
        if (!ok) {
            key_child(kp, sizeof(kp), path, k);
            return cfg_fail(p, kp, "unknown key");
        }
    }
    return 0;
}

/* An object section; *out is NULL when absent. Also rejects unknown keys. */
static int get_section(cfg_parse_t *p, const char *path, json_t *obj, const char *key,
                       const char *const *allowed, json_t **out)
{
    char kp[CFG_KEY_MAX];
    json_t *v = json_object_get(obj, key);

    *out = NULL;
    if (!v)
        return 0;
    key_child(kp, sizeof(kp), path, key);
    if (!json_is_object(v))
        return cfg_fail(p, kp, "must be an object");
    if (check_keys(p, kp, v, allowed) < 0)
        return -1;
    *out = v;
    return 0;
}

/* An array; *out is NULL when absent. */
static int get_array(cfg_parse_t *p, const char *path, json_t *obj, const char *key, size_t max, json_t **out)
{
    char kp[CFG_KEY_MAX];
    json_t *v = json_object_get(obj, key);

    *out = NULL;
    if (!v)
        return 0;
    key_child(kp, sizeof(kp), path, key);
    if (!json_is_array(v))
        return cfg_fail(p, kp, "must be an array");
    if (json_array_size(v) > max)
        return cfg_fail(p, kp, "at most %zu entries allowed, found %zu", max, json_array_size(v));
    *out = v;
    return 0;
}

static int get_int(cfg_parse_t *p, const char *path, json_t *obj, const char *key, json_int_t min,
                   json_int_t max, json_int_t *out)
{
    char kp[CFG_KEY_MAX];
    json_t *v = json_object_get(obj, key);

    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        key_child(kp, sizeof(kp), path, key);
        return cfg_fail(
            p, kp, "must be an integer between %" JSON_INTEGER_FORMAT " and %" JSON_INTEGER_FORMAT, min, max);
    }
    *out = json_integer_value(v);
    return 0;
}

static int get_u32(cfg_parse_t *p, const char *path, json_t *obj, const char *key, json_int_t min,
                   json_int_t max, uint32_t *out)
{
    json_int_t v = *out;

    if (get_int(p, path, obj, key, min, max, &v) < 0)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int get_size(cfg_parse_t *p, const char *path, json_t *obj, const char *key, json_int_t min,
                    json_int_t max, size_t *out)
{
    json_int_t v = (json_int_t)*out;

    if (get_int(p, path, obj, key, min, max, &v) < 0)
        return -1;
    *out = (size_t)v;
    return 0;
}

/* A non-empty string; a missing key fails only when `required`. */
static int get_string(cfg_parse_t *p, const char *path, json_t *obj, const char *key, bool required,
                      const char **out)
{
    char kp[CFG_KEY_MAX];
    json_t *v = json_object_get(obj, key);

    key_child(kp, sizeof(kp), path, key);
    if (!v)
        return required ? cfg_fail(p, kp, "required") : 0;
    if (!json_is_string(v))
        return cfg_fail(p, kp, "must be a string");
    if (json_string_length(v) == 0)
        return cfg_fail(p, kp, "must not be empty");
    /* jansson refuses \u0000 unless asked (JSON_ALLOW_NUL), so this is a C string. */
    *out = json_string_value(v);
    return 0;
}

/* As get_string, then resolves a relative path against the config directory. */
static int get_path(cfg_parse_t *p, const char *path, json_t *obj, const char *key, char **dst)
{
    const char *s = NULL;
    char kp[CFG_KEY_MAX];
    char *abs;

    if (get_string(p, path, obj, key, false, &s) < 0)
        return -1;
    if (!s)
        return 0;
    abs = path_resolve(p->cfg->dir, s, true);
    if (!abs) {
        key_child(kp, sizeof(kp), path, key);
        return cfg_oom(p, kp);
    }
    free(*dst);
    *dst = abs;
    return 0;
}

static bool name_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > MOLT_CONFIG_NAME_MAX)
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

static int check_name(cfg_parse_t *p, const char *kp, const char *name)
{
    if (!name_valid(name))
        return cfg_fail(p, kp, "\"%s\": must be 1 to %d characters from A-Z a-z 0-9 _ . -", name,
                        MOLT_CONFIG_NAME_MAX);
    return 0;
}

/* --- addresses ---------------------------------------------------------------- */

static void addr_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

int molt_parse_address(const char *text, struct sockaddr_storage *addr, socklen_t *addrlen, char *err,
                       size_t errlen)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port, *hend;
    unsigned long pnum = 0;
    bool v6 = false;
    size_t hlen;

    if (!text || !text[0]) {
        addr_err(err, errlen, "empty address");
        return -1;
    }
    if (text[0] == '[') {
        const char *close = strchr(text, ']');

        if (!close) {
            addr_err(err, errlen, "unterminated '[' (expected \"[IPv6]:PORT\")");
            return -1;
        }
        v6 = true;
        text++;
        hend = close;
        if (close[1] == '\0') {
            addr_err(err, errlen, "missing port");
            return -1;
        }
        if (close[1] != ':') {
            addr_err(err, errlen, "expected ':' after ']'");
            return -1;
        }
        port = close + 2;
    } else {
        const char *colon = strrchr(text, ':');

        if (!colon) {
            addr_err(err, errlen, "missing port");
            return -1;
        }
        if (memchr(text, ':', (size_t)(colon - text))) {
            addr_err(err, errlen, "IPv6 addresses must be in brackets, as in \"[::1]:8080\"");
            return -1;
        }
        hend = colon;
        port = colon + 1;
    }

    hlen = (size_t)(hend - text);
    if (hlen == 0) {
        addr_err(err, errlen, "missing host (use \"*:PORT\" for every address)");
        return -1;
    }
    if (port[0] == '\0') {
        addr_err(err, errlen, "missing port");
        return -1;
    }
    /* Digits only: strtoul would accept signs and spaces. */
    for (const char *c = port; *c; c++) {
        if (*c < '0' || *c > '9' || pnum > 65535) {
            pnum = 0;
            break;
        }
        pnum = pnum * 10 + (unsigned long)(*c - '0');
    }
    if (pnum < 1 || pnum > 65535) {
        addr_err(err, errlen, "port must be a number between 1 and 65535");
        return -1;
    }

    memset(addr, 0, sizeof(*addr));
    if (!v6 && hlen == 1 && text[0] == '*') {
        struct sockaddr_in *sin = (struct sockaddr_in *)addr;

        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)pnum);
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        *addrlen = sizeof(*sin);
        return 0;
    }
    if (hlen >= sizeof(host)) {
        addr_err(err, errlen,
                 v6 ? "not a numeric IPv6 address"
                    : "not a numeric IPv4 address (host names are not allowed)");
        return -1;
    }
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)addr;

        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            addr_err(err, errlen, "not a numeric IPv6 address");
            return -1;
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)pnum);
        *addrlen = sizeof(*sin6);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)addr;

        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
            addr_err(err, errlen, "not a numeric IPv4 address (host names are not allowed)");
            return -1;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)pnum);
        *addrlen = sizeof(*sin);
    }
    return 0;
}

const char *molt_format_address(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
    char host[INET6_ADDRSTRLEN];

    if (!buf || buflen == 0)
        return buf;
    if (sa && sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(buf, buflen, "%s:%u", host, (unsigned)ntohs(sin->sin_port));
    } else if (sa && sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(buf, buflen, "[%s]:%u", host, (unsigned)ntohs(sin6->sin6_port));
    } else if (sa && sa->sa_family == AF_UNIX && len > (socklen_t)offsetof(struct sockaddr_un, sun_path)) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        size_t n = (size_t)len - offsetof(struct sockaddr_un, sun_path);

        if (un->sun_path[0] || n < 2) /* a path; else abstract: a NUL, then the name up to len */
            snprintf(buf, buflen, "unix:%.*s", (int)strnlen(un->sun_path, n), un->sun_path);
        else
            snprintf(buf, buflen, "unix:@%.*s", (int)(n - 1), un->sun_path + 1);
    } else {
        snprintf(buf, buflen, "(unknown address)");
    }
    return buf;
}

bool molt_address_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;

        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;

        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

/* --- sections ------------------------------------------------------------------ */

static int parse_workers(cfg_parse_t *p, json_t *root)
{
    json_t *v = json_object_get(root, "workers");

    if (!v)
        return 0;
    if (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);

        if (n < 1)
            n = 1;
        if (n > MOLT_CONFIG_MAX_WORKERS)
            n = MOLT_CONFIG_MAX_WORKERS;
        p->cfg->workers = (unsigned)n;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > MOLT_CONFIG_MAX_WORKERS)
        return cfg_fail(p, "workers", "must be an integer between 1 and %d or \"auto\"",
                        MOLT_CONFIG_MAX_WORKERS);
    p->cfg->workers = (unsigned)json_integer_value(v);
    return 0;
}

static int parse_listen(cfg_parse_t *p, json_t *root)
{
    static const char *const keys[] = {"name", "address", "backlog", NULL};
    molt_config_t *cfg = p->cfg;
    json_t *arr = json_object_get(root, "listen");
    size_t n;

    if (!arr)
        return cfg_fail(p, "listen", "required: at least one listener");
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return cfg_fail(p, "listen", "must be a non-empty array of listeners");
    n = json_array_size(arr);
    if (n > MOLT_CONFIG_MAX_LISTEN)
        return cfg_fail(p, "listen", "at most %d listeners allowed, found %zu", MOLT_CONFIG_MAX_LISTEN, n);
    cfg->listen = calloc(n, sizeof(*cfg->listen));
    if (!cfg->listen)
        return cfg_oom(p, "listen");
    cfg->nlisten = n;

    for (size_t i = 0; i < n; i++) {
        molt_listen_cfg_t *l = &cfg->listen[i];
        json_t *o = json_array_get(arr, i);
        const char *name = NULL, *address = NULL;
        json_int_t backlog = 4096;
        char kp[CFG_KEY_MAX], ak[CFG_KEY_MAX], nk[CFG_KEY_MAX];
        char why[128];

        key_elem(kp, sizeof(kp), "listen", i);
        key_child(nk, sizeof(nk), kp, "name");
        key_child(ak, sizeof(ak), kp, "address");
        if (!json_is_object(o))
            return cfg_fail(p, kp, "must be an object");
        if (check_keys(p, kp, o, keys) < 0)
            return -1;

        if (get_string(p, kp, o, "name", false, &name) < 0)
            return -1;
        if (name) {
            if (check_name(p, nk, name) < 0)
                return -1;
            l->name = strdup(name);
        } else if (asprintf(&l->name, "listen%zu", i) < 0) {
            l->name = NULL;
        }
        if (!l->name)
            return cfg_oom(p, nk);
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->listen[j].name, l->name) == 0)
                return cfg_fail(p, nk, "\"%s\": duplicate listener name (also listen[%zu])", l->name, j);

        if (get_string(p, kp, o, "address", true, &address) < 0)
            return -1;
        if (molt_parse_address(address, &l->addr, &l->addrlen, why, sizeof(why)) < 0)
            return cfg_fail(p, ak, "\"%s\": %s", address, why);
        l->address = strdup(address);
        if (!l->address)
            return cfg_oom(p, ak);
        for (size_t j = 0; j < i; j++)
            if (molt_address_equal(&cfg->listen[j].addr, &l->addr))
                return cfg_fail(p, ak, "\"%s\": same address as listen[%zu] (\"%s\")", address, j,
                                cfg->listen[j].name);

        if (get_int(p, kp, o, "backlog", 1, 65535, &backlog) < 0)
            return -1;
        l->backlog = (int)backlog;
    }
    return 0;
}

/* "0660", "660", "0600": permission bits only, written in octal. */
static int parse_mode(cfg_parse_t *p, json_t *control)
{
    json_t *v = json_object_get(control, "mode");
    const char *s;
    size_t n;

    if (!v)
        return 0;
    if (!json_is_string(v))
        return cfg_fail(p, "control.mode", "must be an octal string such as \"0660\"");
    s = json_string_value(v);
    n = strlen(s);
    if (n < 3 || n > 4 || strspn(s, "01234567") != n || (n == 4 && s[0] != '0'))
        return cfg_fail(p, "control.mode",
                        "\"%s\": must be an octal string such as \"0660\" (permission bits only)", s);
    p->cfg->control_mode = (mode_t)strtoul(s, NULL, 8);
    return 0;
}

static int parse_control(cfg_parse_t *p, json_t *root)
{
    static const char *const keys[] = {"socket", "mode", "group", NULL};
    molt_config_t *cfg = p->cfg;
    json_t *control;

    if (get_path(p, "", root, "runtime_dir", &cfg->runtime_dir) < 0)
        return -1;
    if (get_section(p, "", root, "control", keys, &control) < 0)
        return -1;
    if (control) {
        if (get_path(p, "control", control, "socket", &cfg->control_socket) < 0)
            return -1;
        if (parse_mode(p, control) < 0)
            return -1;
        /* A group name; whether it exists is moltd's to check (getgrnam at start and in -t). */
        json_t *g = json_object_get(control, "group");
        if (g && !json_is_null(g)) {
            if (!json_is_string(g) || json_string_length(g) == 0)
                return cfg_fail(p, "control.group", "must be a group name or null");
            cfg->control_group = strdup(json_string_value(g));
            if (!cfg->control_group)
                return cfg_oom(p, "control.group");
        }
    }
    if (!cfg->control_socket) {
        cfg->control_socket = path_resolve(cfg->runtime_dir, "control.sock", false);
        if (!cfg->control_socket)
            return cfg_oom(p, "control.socket");
    }
    /* Knowable now rather than at bind(): sun_path is a fixed array. */
    if (strlen(cfg->control_socket) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return cfg_fail(p, "control.socket", "\"%s\": too long for a unix socket path (at most %zu bytes)",
                        cfg->control_socket, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    return 0;
}

/* "admin": {"address": "127.0.0.1:9100"}: the supervisor's own HTTP listener
 * (GET /metrics). Absent: none. Its address must differ from every listener's. */
static int parse_admin(cfg_parse_t *p, json_t *root)
{
    static const char *const keys[] = {"address", NULL};
    molt_config_t *cfg = p->cfg;
    const char *address = NULL;
    char why[128];
    json_t *o;

    if (get_section(p, "", root, "admin", keys, &o) < 0)
        return -1;
    if (!o)
        return 0;
    if (get_string(p, "admin", o, "address", true, &address) < 0)
        return -1;
    if (molt_parse_address(address, &cfg->admin_addr, &cfg->admin_addrlen, why, sizeof(why)) < 0)
        return cfg_fail(p, "admin.address", "\"%s\": %s", address, why);
    for (size_t i = 0; i < cfg->nlisten; i++)
        if (molt_address_equal(&cfg->listen[i].addr, &cfg->admin_addr))
            return cfg_fail(p, "admin.address", "\"%s\": same address as listen[%zu] (\"%s\")", address, i,
                            cfg->listen[i].name);
    cfg->admin_address = strdup(address);
    return cfg->admin_address ? 0 : cfg_oom(p, "admin.address");
}

/* "user"/"group": a name, or null (the default) to keep the current one. */
static int parse_identity(cfg_parse_t *p, json_t *root, const char *key, char **dst)
{
    json_t *v = json_object_get(root, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0)
        return cfg_fail(p, key, "must be a non-empty string or null");
    *dst = strdup(json_string_value(v));
    return *dst ? 0 : cfg_oom(p, key);
}

static int parse_plugin_path(cfg_parse_t *p, json_t *root)
{
    molt_config_t *cfg = p->cfg;
    json_t *arr;
    size_t n;

    if (get_array(p, "", root, "plugin_path", 64, &arr) < 0)
        return -1;
    n = arr ? json_array_size(arr) : 1;
    if (n > 0) {
        cfg->plugin_path = calloc(n, sizeof(*cfg->plugin_path));
        if (!cfg->plugin_path)
            return cfg_oom(p, "plugin_path");
        cfg->nplugin_path = n;
    }
    if (!arr) {
        cfg->plugin_path[0] = strdup(cfg->dir);
        return cfg->plugin_path[0] ? 0 : cfg_oom(p, "plugin_path");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        char kp[CFG_KEY_MAX];

        key_elem(kp, sizeof(kp), "plugin_path", i);
        if (!json_is_string(v) || json_string_length(v) == 0)
            return cfg_fail(p, kp, "must be a non-empty string (a directory)");
        cfg->plugin_path[i] = path_resolve(cfg->dir, json_string_value(v), true);
        if (!cfg->plugin_path[i])
            return cfg_oom(p, kp);
    }
    return 0;
}

/*
 * Finds the plugin file: itself when absolute, else the first plugin_path
 * directory where it exists. The first existing entry wins even when it is
 * not a regular file, so that what is loaded never depends on file types
 * further down the path.
 */
static int plugin_resolve(cfg_parse_t *p, const char *kp, molt_plugin_cfg_t *pl)
{
    molt_config_t *cfg = p->cfg;
    char *cand = NULL;
    struct stat st;
    int rc = -1;

    if (pl->file[0] == '/') {
        cand = path_resolve("/", pl->file, false);
        if (!cand) {
            cfg_oom(p, kp);
            goto out;
        }
        if (stat(cand, &st) < 0) {
            if (errno == ENOENT || errno == ENOTDIR)
                cfg_fail(p, kp, "\"%s\": no such file", pl->file);
            else
                cfg_fail(p, kp, "\"%s\": stat() failed: %s", pl->file, strerror(errno));
            goto out;
        }
    } else {
        size_t i;

        for (i = 0; i < cfg->nplugin_path; i++) {
            cand = path_resolve(cfg->plugin_path[i], pl->file, false);
            if (!cand) {
                cfg_oom(p, kp);
                goto out;
            }
            if (stat(cand, &st) == 0)
                break;
            if (errno != ENOENT && errno != ENOTDIR) {
                cfg_fail(p, kp, "\"%s\": stat(\"%s\") failed: %s", pl->file, cand, strerror(errno));
                goto out;
            }
            free(cand);
            cand = NULL;
        }
        if (i == cfg->nplugin_path) {
            cfg_fail(p, kp, "\"%s\": no such file in plugin_path", pl->file);
            goto out;
        }
    }
    if (!S_ISREG(st.st_mode)) {
        cfg_fail(p, kp, "\"%s\": not a regular file (%s)", pl->file, cand);
        goto out;
    }
    pl->path = cand;
    cand = NULL;
    rc = 0;
out:
    free(cand);
    return rc;
}

static int parse_plugin(cfg_parse_t *p, size_t i, json_t *o)
{
    static const char *const keys[] = {"name", "file", "sha256", "priority", "config", NULL};
    molt_config_t *cfg = p->cfg;
    molt_plugin_cfg_t *pl = &cfg->plugins[i];
    const char *name = NULL, *file = NULL, *sha = NULL;
    json_int_t prio = 0;
    json_t *conf;
    char kp[CFG_KEY_MAX], k[CFG_KEY_MAX];

    key_elem(kp, sizeof(kp), "plugins", i);
    if (!json_is_object(o))
        return cfg_fail(p, kp, "must be an object");
    if (check_keys(p, kp, o, keys) < 0)
        return -1;

    key_child(k, sizeof(k), kp, "name");
    if (get_string(p, kp, o, "name", true, &name) < 0 || check_name(p, k, name) < 0)
        return -1;
    for (size_t j = 0; j < i; j++)
        if (strcmp(cfg->plugins[j].name, name) == 0)
            return cfg_fail(p, k, "\"%s\": duplicate instance name (also plugins[%zu])", name, j);
    pl->name = strdup(name);
    if (!pl->name)
        return cfg_oom(p, k);

    key_child(k, sizeof(k), kp, "file");
    if (get_string(p, kp, o, "file", true, &file) < 0)
        return -1;
    pl->file = strdup(file);
    if (!pl->file)
        return cfg_oom(p, k);
    if (plugin_resolve(p, k, pl) < 0)
        return -1;

    key_child(k, sizeof(k), kp, "sha256");
    if (json_object_get(o, "sha256")) {
        json_t *v = json_object_get(o, "sha256");

        sha = json_is_string(v) ? json_string_value(v) : NULL;
        if (!sha || strlen(sha) != 64 || strspn(sha, "0123456789abcdefABCDEF") != 64)
            return cfg_fail(p, k, "must be 64 hexadecimal digits (the file's SHA-256)");
        pl->sha256 = strdup(sha);
        if (!pl->sha256)
            return cfg_oom(p, k);
        for (char *c = pl->sha256; *c; c++)
            if (*c >= 'A' && *c <= 'F')
                *c = (char)(*c - 'A' + 'a');
    }

    if (json_object_get(o, "priority")) {
        if (get_int(p, kp, o, "priority", -1000, 1000, &prio) < 0)
            return -1;
        pl->has_priority = true;
        pl->priority = (int)prio;
    }

    key_child(k, sizeof(k), kp, "config");
    conf = json_object_get(o, "config");
    if (conf && !json_is_object(conf))
        return cfg_fail(p, k, "must be an object");
    pl->config_json = conf ? json_dumps(conf, JSON_COMPACT) : strdup("{}");
    if (!pl->config_json)
        return cfg_oom(p, k);
    return 0;
}

static int parse_plugins(cfg_parse_t *p, json_t *root)
{
    molt_config_t *cfg = p->cfg;
    json_t *arr;
    size_t n;

    if (get_array(p, "", root, "plugins", MOLT_CONFIG_MAX_PLUGINS, &arr) < 0)
        return -1;
    n = arr ? json_array_size(arr) : 0;
    if (n == 0)
        return 0;
    cfg->plugins = calloc(n, sizeof(*cfg->plugins));
    if (!cfg->plugins)
        return cfg_oom(p, "plugins");
    cfg->nplugins = n;
    for (size_t i = 0; i < n; i++)
        if (parse_plugin(p, i, json_array_get(arr, i)) < 0)
            return -1;
    return 0;
}

static int parse_route(cfg_parse_t *p, size_t i, json_t *o)
{
    static const char *const keys[] = {"prefix", "plugin", NULL};
    molt_config_t *cfg = p->cfg;
    molt_route_cfg_t *r = &cfg->routes[i];
    const char *prefix = NULL, *plugin = NULL;
    char kp[CFG_KEY_MAX], k[CFG_KEY_MAX];
    size_t j;

    key_elem(kp, sizeof(kp), "routes", i);
    if (!json_is_object(o))
        return cfg_fail(p, kp, "must be an object");
    if (check_keys(p, kp, o, keys) < 0)
        return -1;

    key_child(k, sizeof(k), kp, "prefix");
    if (get_string(p, kp, o, "prefix", true, &prefix) < 0)
        return -1;
    if (prefix[0] != '/')
        return cfg_fail(p, k, "\"%s\": must start with '/'", prefix);
    for (const char *c = prefix; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return cfg_fail(p, k, "\"%s\": must not contain spaces or control characters", prefix);
    for (j = 0; j < i; j++)
        if (strcmp(cfg->routes[j].prefix, prefix) == 0)
            return cfg_fail(p, k, "\"%s\": duplicate prefix (also routes[%zu])", prefix, j);
    r->prefix = strdup(prefix);
    if (!r->prefix)
        return cfg_oom(p, k);

    key_child(k, sizeof(k), kp, "plugin");
    if (get_string(p, kp, o, "plugin", true, &plugin) < 0)
        return -1;
    for (j = 0; j < cfg->nplugins; j++)
        if (strcmp(cfg->plugins[j].name, plugin) == 0)
            break;
    if (j == cfg->nplugins)
        return cfg_fail(p, k, "\"%s\": no such plugin instance", plugin);
    r->plugin = strdup(plugin);
    if (!r->plugin)
        return cfg_oom(p, k);
    r->plugin_index = j;
    return 0;
}

static int parse_routes(cfg_parse_t *p, json_t *root)
{
    molt_config_t *cfg = p->cfg;
    json_t *arr;
    size_t n;

    if (get_array(p, "", root, "routes", MOLT_CONFIG_MAX_ROUTES, &arr) < 0)
        return -1;
    n = arr ? json_array_size(arr) : 0;
    if (n == 0)
        return 0;
    cfg->routes = calloc(n, sizeof(*cfg->routes));
    if (!cfg->routes)
        return cfg_oom(p, "routes");
    cfg->nroutes = n;
    for (size_t i = 0; i < n; i++)
        if (parse_route(p, i, json_array_get(arr, i)) < 0)
            return -1;
    return 0;
}

static int parse_http(cfg_parse_t *p, json_t *root)
{
    static const char *const keys[] = {"max_header_bytes", "max_body_bytes", "header_timeout_ms",
                                       "keepalive_timeout_ms", NULL};
    molt_http_cfg_t *h = &p->cfg->http;
    json_t *o;

    if (get_section(p, "", root, "http", keys, &o) < 0)
        return -1;
    if (!o)
        return 0;
    if (get_size(p, "http", o, "max_header_bytes", 1024, 1048576, &h->max_header_bytes) < 0 ||
        get_size(p, "http", o, "max_body_bytes", 0, CFG_BODY_MAX, &h->max_body_bytes) < 0 ||
        get_u32(p, "http", o, "header_timeout_ms", 1, CFG_MS_MAX, &h->header_timeout_ms) < 0 ||
        get_u32(p, "http", o, "keepalive_timeout_ms", 0, CFG_MS_MAX, &h->keepalive_timeout_ms) < 0)
        return -1;
    return 0;
}

static int parse_health(cfg_parse_t *p, json_t *reload)
{
    static const char *const keys[] = {"path",      "expect_status",  "interval_ms",
                                       "stable_ms", "max_error_rate", NULL};
    molt_health_cfg_t *h = &p->cfg->reload.health;
    const char *path = NULL;
    json_int_t status = h->expect_status;
    json_t *o, *v;

    if (get_section(p, "reload", reload, "health", keys, &o) < 0)
        return -1;
    if (!o)
        return 0;
    if (get_string(p, "reload.health", o, "path", false, &path) < 0)
        return -1;
    if (path) {
        char *copy;

        if (path[0] != '/')
            return cfg_fail(p, "reload.health.path", "\"%s\": must start with '/'", path);
        copy = strdup(path);
        if (!copy)
            return cfg_oom(p, "reload.health.path");
        free(h->path);
        h->path = copy;
    }
    if (get_int(p, "reload.health", o, "expect_status", 100, 599, &status) < 0 ||
        get_u32(p, "reload.health", o, "interval_ms", 1, CFG_MS_MAX, &h->interval_ms) < 0 ||
        get_u32(p, "reload.health", o, "stable_ms", 0, CFG_MS_MAX, &h->stable_ms) < 0)
        return -1;
    h->expect_status = (int)status;
    v = json_object_get(o, "max_error_rate");
    if (v) {
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1)
            return cfg_fail(p, "reload.health.max_error_rate", "must be a number between 0 and 1");
        h->max_error_rate = json_number_value(v);
    }
    return 0;
}

static int parse_reload(cfg_parse_t *p, json_t *root)
{
    static const char *const keys[] = {
        "load_timeout_ms",  "handoff_timeout_ms", "health",           "idle_grace_ms",
        "drain_timeout_ms", "keep_generations",   "on_restore_error", NULL};
    molt_reload_cfg_t *r = &p->cfg->reload;
    const char *policy = NULL;
    json_t *o;

    if (get_section(p, "", root, "reload", keys, &o) < 0)
        return -1;
    if (!o)
        return 0;
    if (get_u32(p, "reload", o, "load_timeout_ms", 1, CFG_MS_MAX, &r->load_timeout_ms) < 0 ||
        get_u32(p, "reload", o, "handoff_timeout_ms", 1, CFG_MS_MAX, &r->handoff_timeout_ms) < 0 ||
        parse_health(p, o) < 0 ||
        get_u32(p, "reload", o, "idle_grace_ms", 0, CFG_MS_MAX, &r->idle_grace_ms) < 0 ||
        get_u32(p, "reload", o, "drain_timeout_ms", 1, CFG_MS_MAX, &r->drain_timeout_ms) < 0 ||
        get_u32(p, "reload", o, "keep_generations", 1, 100, &r->keep_generations) < 0)
        return -1;
    if (get_string(p, "reload", o, "on_restore_error", false, &policy) < 0)
        return -1;
    if (policy) {
        if (strcmp(policy, "fail") == 0)
            r->on_restore_error = MOLT_RESTORE_FAIL;
        else if (strcmp(policy, "fresh") == 0)
            r->on_restore_error = MOLT_RESTORE_FRESH;
        else
            return cfg_fail(p, "reload.on_restore_error", "\"%s\": must be \"fail\" or \"fresh\"", policy);
    }
    return 0;
}

static int parse_log(cfg_parse_t *p, json_t *root)
{
    static const char *const keys[] = {"level", "format", "file", NULL};
    const char *level = NULL, *format = NULL;
    json_t *o;

    if (get_section(p, "", root, "log", keys, &o) < 0)
        return -1;
    if (!o)
        return 0;
    /* null (the default): stderr stays what it is */
    if (!json_is_null(json_object_get(o, "file")) && get_path(p, "log", o, "file", &p->cfg->log_file) < 0)
        return -1;
    if (get_string(p, "log", o, "level", false, &level) < 0)
        return -1;
    if (level) {
        int l = molt_log_level_parse(level);

        if (l < 0)
            return cfg_fail(p, "log.level", "\"%s\": must be one of debug, info, notice, warn, error, crit",
                            level);
        p->cfg->log_level = l;
    }
    if (get_string(p, "log", o, "format", false, &format) < 0)
        return -1;
    if (format) {
        if (strcmp(format, "text") == 0)
            p->cfg->log_format = MOLT_LOG_FORMAT_TEXT;
        else if (strcmp(format, "json") == 0)
            p->cfg->log_format = MOLT_LOG_FORMAT_JSON;
        else
            return cfg_fail(p, "log.format", "\"%s\": must be \"text\" or \"json\"", format);
    }
    return 0;
}

/* The defaults documented in config.h, before the file overrides them. */
static int cfg_defaults(cfg_parse_t *p)
{
    molt_config_t *cfg = p->cfg;

    cfg->workers = 1;
    cfg->control_mode = 0660;
    cfg->runtime_dir = strdup("/run/molt");
    cfg->http = (molt_http_cfg_t){
        .max_header_bytes = 16384,
        .max_body_bytes = 1048576,
        .header_timeout_ms = 10000,
        .keepalive_timeout_ms = 60000,
    };
    cfg->reload = (molt_reload_cfg_t){
        .load_timeout_ms = 5000,
        .handoff_timeout_ms = 5000,
        .health = {.path = strdup("/healthz"),
                   .expect_status = 200,
                   .interval_ms = 100,
                   .stable_ms = 500,
                   .max_error_rate = 0.5},
        .idle_grace_ms = 100,
        .drain_timeout_ms = 30000,
        .keep_generations = 3,
        .on_restore_error = MOLT_RESTORE_FAIL,
    };
    cfg->log_level = MOLT_LOG_INFO;
    cfg->log_format = MOLT_LOG_FORMAT_TEXT;
    if (!cfg->runtime_dir || !cfg->reload.health.path)
        return cfg_oom(p, NULL);
    return 0;
}

static int parse_root(cfg_parse_t *p, json_t *root)
{
    static const char *const keys[] = {"workers", "listen",      "control", "runtime_dir", "user",
                                       "group",   "plugin_path", "plugins", "routes",      "http",
                                       "reload",  "log",         "admin",   NULL};

    if (check_keys(p, "", root, keys) < 0 || parse_workers(p, root) < 0 || parse_listen(p, root) < 0 ||
        parse_control(p, root) < 0 || parse_identity(p, root, "user", &p->cfg->user) < 0 ||
        parse_identity(p, root, "group", &p->cfg->group) < 0 || parse_plugin_path(p, root) < 0 ||
        parse_plugins(p, root) < 0 || parse_routes(p, root) < 0 || parse_http(p, root) < 0 ||
        parse_reload(p, root) < 0 || parse_log(p, root) < 0 || parse_admin(p, root) < 0)
        return -1;
    return 0;
}

/* The common path of both loaders; `dir_must_exist` when the file was read. */
static int cfg_parse(const char *json, size_t len, const char *path, bool dir_must_exist, molt_config_t **out,
                     char *err, size_t errlen)
{
    cfg_parse_t p = {.file = path ? path : "<string>", .err = err, .errlen = errlen};
    json_t *root = NULL;
    json_error_t jerr;
    int rc = -1;

    p.cfg = calloc(1, sizeof(*p.cfg));
    if (!p.cfg) {
        cfg_oom(&p, NULL);
        goto out;
    }
    if (cfg_defaults(&p) < 0 || cfg_locate(&p, path ? path : "molt.json", dir_must_exist) < 0)
        goto out;

    /* JSON_DECODE_ANY so that a scalar document gets our message, not jansson's. */
    root = json_loadb(json ? json : "", json ? len : 0, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        if (jerr.line > 0)
            cfg_fail(&p, NULL, "line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
        else
            cfg_fail(&p, NULL, "%s", jerr.text);
        goto out;
    }
    if (!json_is_object(root)) {
        cfg_fail(&p, "top level", "must be a JSON object");
        goto out;
    }
    if (parse_root(&p, root) < 0)
        goto out;
    p.cfg->source = strndup(json, len);
    if (!p.cfg->source) {
        cfg_oom(&p, NULL);
        goto out;
    }

    *out = p.cfg;
    p.cfg = NULL;
    rc = 0;
out:
    json_decref(root);
    molt_config_free(p.cfg);
    return rc;
}

int molt_config_load_string(const char *json, size_t len, const char *path, molt_config_t **out, char *err,
                            size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    return cfg_parse(json, len, path, false, out, err, errlen);
}

int molt_config_load(const char *path, molt_config_t **out, char *err, size_t errlen)
{
    cfg_parse_t p = {.file = path, .err = err, .errlen = errlen};
    char *buf = NULL;
    size_t len = 0;
    struct stat st;
    int fd = -1, rc = -1;

    if (err && errlen)
        err[0] = '\0';
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        cfg_fail(&p, NULL, "open() failed: %s", strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) < 0) {
        cfg_fail(&p, NULL, "fstat() failed: %s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        cfg_fail(&p, NULL, "not a regular file");
        goto out;
    }
    if ((uintmax_t)st.st_size > CFG_FILE_MAX) {
        cfg_fail(&p, NULL, "too large (%jd bytes, at most %u)", (intmax_t)st.st_size, CFG_FILE_MAX);
        goto out;
    }
    /* One byte more than fstat said, so that a file that grew is noticed. */
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        cfg_oom(&p, NULL);
        goto out;
    }
    while (len <= (size_t)st.st_size) {
        ssize_t r = read(fd, buf + len, (size_t)st.st_size + 1 - len);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            cfg_fail(&p, NULL, "read() failed: %s", strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    if (len > (size_t)st.st_size) {
        cfg_fail(&p, NULL, "changed while being read");
        goto out;
    }
    rc = cfg_parse(buf, len, path, true, out, err, errlen);
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

void molt_config_free(molt_config_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free(cfg->dir);
    free(cfg->source);
    for (size_t i = 0; i < cfg->nlisten; i++) {
        free(cfg->listen[i].name);
        free(cfg->listen[i].address);
    }
    free(cfg->listen);
    free(cfg->control_socket);
    free(cfg->runtime_dir);
    free(cfg->user);
    free(cfg->group);
    free(cfg->control_group);
    free(cfg->log_file);
    free(cfg->admin_address);
    for (size_t i = 0; i < cfg->nplugin_path; i++)
        free(cfg->plugin_path[i]);
    free(cfg->plugin_path);
    for (size_t i = 0; i < cfg->nplugins; i++) {
        free(cfg->plugins[i].name);
        free(cfg->plugins[i].file);
        free(cfg->plugins[i].path);
        free(cfg->plugins[i].sha256);
        free(cfg->plugins[i].config_json);
    }
    free(cfg->plugins);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        free(cfg->routes[i].prefix);
        free(cfg->routes[i].plugin);
    }
    free(cfg->routes);
    free(cfg->reload.health.path);
    free(cfg);
}
