/*
 * The molt configuration: one JSON file, parsed with jansson into an
 * immutable molt_config_t. A generation owns exactly one config; a reload
 * parses a new one beside the live one and frees it if anything fails.
 *
 * Relative paths in the file resolve against the file's own directory; the
 * config keeps them absolute. Unknown keys are errors. Every error names the
 * file and the key path:
 *
 *   examples/molt.json: plugins[2].file: "nope.so": no such file in plugin_path
 */
#ifndef MOLT_SHARED_CONFIG_H
#define MOLT_SHARED_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define MOLT_CONFIG_MAX_WORKERS 64
#define MOLT_CONFIG_MAX_LISTEN 16
#define MOLT_CONFIG_MAX_PLUGINS 128
#define MOLT_CONFIG_MAX_ROUTES 1024
#define MOLT_CONFIG_NAME_MAX 64 /* listener and instance names: [A-Za-z0-9_.-]{1,64} */

typedef struct molt_listen_cfg {
    char *name;    /* unique; defaults to "listen<i>" */
    char *address; /* as written: "127.0.0.1:8080", "[::1]:8080" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int backlog; /* default 4096 */
} molt_listen_cfg_t;

typedef struct molt_plugin_cfg {
    char *name;        /* instance name, unique */
    char *file;        /* as written in the config */
    char *path;        /* resolved, absolute: the first plugin_path entry holding `file`
                        * (or `file` itself when it is absolute) */
    char *sha256;      /* lowercase hex pin, or NULL */
    bool has_priority; /* the config overrides the descriptor's priorities */
    int priority;
    char *config_json; /* the instance's "config" object serialized compactly; "{}" if absent */
} molt_plugin_cfg_t;

typedef struct molt_route_cfg {
    char *prefix;        /* starts with '/' */
    char *plugin;        /* instance name */
    size_t plugin_index; /* index into molt_config_t.plugins */
} molt_route_cfg_t;

typedef struct molt_http_cfg {
    size_t max_header_bytes;       /* default 16384; request line + headers */
    size_t max_body_bytes;         /* default 1048576 */
    uint32_t header_timeout_ms;    /* default 10000; whole request head must arrive */
    uint32_t keepalive_timeout_ms; /* default 60000; idle between requests */
} molt_http_cfg_t;

typedef struct molt_health_cfg {
    char *path;          /* default "/healthz" */
    int expect_status;   /* default 200 */
    uint32_t interval_ms; /* default 100 */
    uint32_t stable_ms;   /* default 500 */
    double max_error_rate; /* default 0.5, in [0, 1] */
} molt_health_cfg_t;

typedef enum molt_restore_policy {
    MOLT_RESTORE_FAIL = 0,  /* a restore error fails the reload */
    MOLT_RESTORE_FRESH = 1, /* a restore error starts that instance with fresh state */
    MOLT_RESTORE_POLICY_COUNT
} molt_restore_policy_t;

typedef struct molt_reload_cfg {
    uint32_t load_timeout_ms;    /* default 5000 */
    uint32_t handoff_timeout_ms; /* default 5000 */
    molt_health_cfg_t health;
    uint32_t idle_grace_ms;      /* default 100 */
    uint32_t drain_timeout_ms;   /* default 30000; also bounds a graceful stop */
    uint32_t keep_generations;   /* default 3, >= 1 */
    molt_restore_policy_t on_restore_error; /* default "fail" */
} molt_reload_cfg_t;

typedef enum molt_log_format {
    MOLT_LOG_FORMAT_TEXT = 0,
    MOLT_LOG_FORMAT_JSON = 1,
    MOLT_LOG_FORMAT_COUNT
} molt_log_format_t;

typedef struct molt_config {
    char *path; /* absolute path of the file */
    char *dir;  /* its directory, against which relative paths resolve */
    char *source; /* the exact text it was parsed from (a rollback re-parses it) */

    unsigned workers; /* 1..MOLT_CONFIG_MAX_WORKERS; "auto" resolves to the CPU count */
    molt_listen_cfg_t *listen;
    size_t nlisten; /* >= 1 */

    char *control_socket; /* absolute; default <runtime_dir>/control.sock */
    mode_t control_mode;  /* from an octal string such as "0660"; default 0660 */
    char *control_group;  /* control.group: a group whose members may use the control socket
                           * (besides root and moltd's user); NULL = none */
    char *runtime_dir;    /* absolute; default /run/molt */
    char *user;           /* NULL = do not change */
    char *group;          /* NULL = do not change */

    char *admin_address;  /* "admin.address" as written, or NULL: no admin listener (metrics) */
    struct sockaddr_storage admin_addr;
    socklen_t admin_addrlen;

    char **plugin_path; /* absolute directories, searched in order */
    size_t nplugin_path;
    molt_plugin_cfg_t *plugins;
    size_t nplugins;
    molt_route_cfg_t *routes; /* as in the file; the worker sorts them for matching */
    size_t nroutes;

    molt_http_cfg_t http;
    molt_reload_cfg_t reload;
    int log_level;            /* molt_log_level_t; default info */
    molt_log_format_t log_format;
    char *log_file;           /* log.file, absolute: moltd's stderr (and its workers'); NULL = keep stderr */
} molt_config_t;

/*
 * Loads and validates the file at `path`. On success returns 0 and stores a
 * new config in *out (free it with molt_config_free). On failure returns -1,
 * stores nothing, and writes one line "FILE: KEY.PATH: what is wrong" into
 * err (always NUL-terminated).
 *
 * Validation covers everything that can be known without binding or loading:
 * types and ranges, unique names, addresses that parse, plugin files that
 * exist (regular files, found in plugin_path), sha256 pins that are 64 hex
 * digits, routes naming existing instances, a route prefix not repeated.
 */
int molt_config_load(const char *path, molt_config_t **out, char *err, size_t errlen);

/* As molt_config_load, from a string; `path` is used for messages and to
 * resolve relative paths (its directory). For tests and fuzzing. */
int molt_config_load_string(const char *json, size_t len, const char *path, molt_config_t **out,
                            char *err, size_t errlen);

/* Frees a config and everything it owns; accepts NULL. */
void molt_config_free(molt_config_t *cfg);

/* Parses "host:port" / "[v6]:port" / "*:port" into addr; 0 or -1 with a reason in err. */
int molt_parse_address(const char *text, struct sockaddr_storage *addr, socklen_t *addrlen, char *err,
                       size_t errlen);

/* Formats an address as "127.0.0.1:8080", "[::1]:8080" or "unix:PATH" ("unix:@NAME" when
 * abstract) into buf. */
const char *molt_format_address(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen);

/* Same family, address and port; "*:80" equals "0.0.0.0:80". */
bool molt_address_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b);

#endif
