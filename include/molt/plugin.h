/*
 * molt plugin SDK, ABI version 1.
 *
 * A plugin is a shared object that exports one symbol, MOLT_PLUGIN_ENTRY_SYMBOL
 * ("molt_plugin_entry"), returning its descriptor. Write it with the
 * MOLT_PLUGIN() macro at the bottom of this file:
 *
 *     static int hello_handle(molt_txn_t *txn, void *data) { ... }
 *     MOLT_PLUGIN(.name = "hello", .version = "1.0.0", .handle = hello_handle);
 *
 * Versioning. MOLT_ABI_MAJOR changes only when something a plugin relies on
 * changes meaning; a host refuses any other major with a message naming both
 * versions. MOLT_ABI_MINOR grows when fields are appended to the descriptor or
 * functions to the host API table: a plugin built against 1.x loads on a host
 * 1.y with y >= x. Each side records the size of the struct it was built
 * with (molt_plugin_t.struct_size, molt_host_api_t.struct_size) so the other
 * side never reads past it.
 *
 * Why a function table and not symbols exported by moltd: a plugin built this
 * way links against nothing of molt's, loads with RTLD_LOCAL, can be loaded by
 * a throwaway checker process or a test harness that is not moltd, and the
 * table's size tells a plugin exactly which host functions exist.
 *
 * Threading: a worker is one thread; every callback runs on it. Never block:
 * a callback that blocks stalls every connection of that worker.
 *
 * Plugins include this header and, for state, <msgpack.h>; nothing else of molt.
 */
#ifndef MOLT_PLUGIN_H
#define MOLT_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOLT_ABI_MAJOR 1
#define MOLT_ABI_MINOR 0

#define MOLT_PLUGIN_ENTRY_SYMBOL "molt_plugin_entry"

/* Opaque handles owned by the host. */
typedef struct molt_instance molt_instance_t; /* one configured instance of a plugin */
typedef struct molt_txn molt_txn_t;           /* one HTTP request and its response */

/* msgpack-c types, declared here so that plugins without state need not include msgpack.h. */
struct msgpack_packer;
struct msgpack_object;

/* ---- return codes ----------------------------------------------------------------------- */

typedef enum molt_rc {
    MOLT_OK = 0,     /* done: the response set on the transaction is sent */
    MOLT_ERROR = -1, /* failed: the host answers 500 and logs the instance's name */
} molt_rc_t;

/* ---- descriptor ------------------------------------------------------------------------- */

enum molt_plugin_flags {
    MOLT_PLUGIN_SINGLETON = 1u << 0,  /* at most one instance per generation */
    MOLT_PLUGIN_STRICT_STATE = 1u << 1, /* snapshot only after connections closed (reload) */
    MOLT_PLUGIN_REPLICATED = 1u << 2, /* state is the same in every worker (reload mapping) */
};

/* A dependency on another plugin, by plugin name and minimum semver. */
typedef struct molt_dep {
    const char *name;
    const char *min_version;
} molt_dep_t;

typedef struct molt_plugin {
    /* Filled by MOLT_PLUGIN(): the ABI this plugin was built against. */
    uint16_t abi_major;
    uint16_t abi_minor;
    uint32_t struct_size; /* sizeof(molt_plugin_t) at build time */

    /* Identity. */
    const char *name;    /* required: [A-Za-z0-9_.-]{1,64} */
    const char *version; /* required: semver "MAJOR.MINOR.PATCH" */
    uint32_t flags;      /* enum molt_plugin_flags */

    /* Dependencies: an array ended by an entry with name NULL; NULL for none. */
    const molt_dep_t *deps;

    /*
     * init: called once per instance in each worker, in dependency order,
     * before the worker serves. `config_json` is the instance's "config"
     * object from the molt config, as compact JSON ("{}" if none); parse it
     * with any JSON library. Store per-instance data with
     * molt_instance_set_data(). On failure write a one-line reason into
     * err (errlen bytes, NUL-terminated) and return MOLT_ERROR: the worker
     * reports "plugin NAME (FILE): init failed: REASON" and the generation
     * does not start. Optional.
     */
    int (*init)(molt_instance_t *inst, const char *config_json, char *err, size_t errlen);

    /* fini: called once per instance when the worker stops, in reverse
     * dependency order; free what init allocated. Optional. */
    void (*fini)(molt_instance_t *inst);

    /*
     * handle: produce the response for a request routed to this instance
     * (see "routes" in the config). `data` is the instance data. Set the
     * status, headers and body with the molt_resp_* functions and return
     * MOLT_OK; return MOLT_ERROR to have the host answer 500. Required for
     * an instance that a route points at.
     */
    int (*handle)(molt_txn_t *txn, void *data);

    /* Bytes of zeroed per-transaction context the host reserves for this
     * plugin (molt_txn_ctx()); freed by the host. 0 for none. */
    size_t txn_ctx_size;

    /* State carried across reloads: version of the format that save writes. */
    uint32_t state_version;
    /* save: pack this instance's state (one msgpack object). Optional. */
    int (*state_save)(molt_instance_t *inst, struct msgpack_packer *pk);
    /* restore: rebuild state saved by a previous generation with `version`. Optional. */
    int (*state_restore)(molt_instance_t *inst, const struct msgpack_object *state, uint32_t version,
                         char *err, size_t errlen);
    /* health: MOLT_OK if this instance can serve; otherwise a reason in err. Optional. */
    int (*health)(molt_instance_t *inst, char *err, size_t errlen);

    /* Room to grow within ABI 1 without changing the struct's size meaningfully:
     * new fields are appended after this and struct_size tells the host which exist. */
    void *reserved[8];
} molt_plugin_t;

/* ---- host API --------------------------------------------------------------------------- */

typedef enum molt_log_level_pub {
    MOLT_PLOG_DEBUG = 0,
    MOLT_PLOG_INFO = 1,
    MOLT_PLOG_NOTICE = 2,
    MOLT_PLOG_WARN = 3,
    MOLT_PLOG_ERROR = 4,
} molt_plog_level_t;

/*
 * The table of host functions. A plugin reaches it through `molt_host`, set by
 * MOLT_PLUGIN() before any callback runs; use the molt_* wrappers below
 * rather than the table. Functions appended in a later minor version are
 * present when struct_size covers them (MOLT_HOST_HAS()).
 */
typedef struct molt_host_api {
    uint16_t abi_major;
    uint16_t abi_minor;
    uint32_t struct_size;

    /* instances */
    const char *(*instance_name)(const molt_instance_t *inst);
    void *(*instance_data)(const molt_instance_t *inst);
    void (*instance_set_data)(molt_instance_t *inst, void *data);
    void (*vlog)(const molt_instance_t *inst, int level, const char *fmt, va_list ap);

    /* request (valid until the handler returns) */
    const char *(*req_method)(const molt_txn_t *txn);
    const char *(*req_path)(const molt_txn_t *txn, size_t *len);  /* as sent, without the query */
    const char *(*req_query)(const molt_txn_t *txn, size_t *len); /* after '?', or NULL */
    const char *(*req_header)(const molt_txn_t *txn, const char *name, size_t *len); /* case-insensitive */
    const char *(*req_body)(const molt_txn_t *txn, size_t *len);
    int (*req_version)(const molt_txn_t *txn); /* 10 for HTTP/1.0, 11 for HTTP/1.1 */
    molt_instance_t *(*txn_instance)(const molt_txn_t *txn);

    /* response */
    int (*resp_set_status)(molt_txn_t *txn, int status);
    int (*resp_add_header)(molt_txn_t *txn, const char *name, const char *value);
    int (*resp_write)(molt_txn_t *txn, const void *data, size_t len); /* appends to the body */
    /* Sends the status, headers and the body written so far now, and switches
     * the response to chunked transfer coding (close-delimited for HTTP/1.0). */
    int (*resp_flush)(molt_txn_t *txn);

    /* per-transaction context of txn_ctx_size zeroed bytes, for the calling plugin */
    void *(*txn_ctx)(molt_txn_t *txn);
} molt_host_api_t;

#define MOLT_HOST_HAS(host, field)                                                                       \
    ((host)->struct_size >= offsetof(molt_host_api_t, field) + sizeof((host)->field))

/* Set by MOLT_PLUGIN(); one per plugin, hidden from other shared objects. */
extern const molt_host_api_t *molt_host __attribute__((visibility("hidden")));

/* ---- wrappers, one per host function ------------------------------------------------------ */

/** Name of the instance as configured ("plugins[].name"). */
static inline const char *molt_instance_name(const molt_instance_t *inst)
{
    return molt_host->instance_name(inst);
}
/** The pointer stored by molt_instance_set_data(), or NULL. */
static inline void *molt_instance_data(const molt_instance_t *inst)
{
    return molt_host->instance_data(inst);
}
/** Stores a per-instance pointer; handle() receives it as `data`. The plugin frees it in fini. */
static inline void molt_instance_set_data(molt_instance_t *inst, void *data)
{
    molt_host->instance_set_data(inst, data);
}
/** Logs one line with the instance's name, the worker and generation. */
static inline void molt_log_instance(const molt_instance_t *inst, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void molt_log_instance(const molt_instance_t *inst, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    molt_host->vlog(inst, level, fmt, ap);
    va_end(ap);
}
/** The request method ("GET"). */
static inline const char *molt_req_method(const molt_txn_t *txn)
{
    return molt_host->req_method(txn);
}
/** The request path as sent, without the query string; *len gets its length (may be NULL). */
static inline const char *molt_req_path(const molt_txn_t *txn, size_t *len)
{
    return molt_host->req_path(txn, len);
}
/** The query string after '?', or NULL if none. */
static inline const char *molt_req_query(const molt_txn_t *txn, size_t *len)
{
    return molt_host->req_query(txn, len);
}
/** The first request header called `name` (case-insensitive), or NULL. */
static inline const char *molt_req_header(const molt_txn_t *txn, const char *name, size_t *len)
{
    return molt_host->req_header(txn, name, len);
}
/** The request body (de-chunked), or NULL with *len 0 if none. */
static inline const char *molt_req_body(const molt_txn_t *txn, size_t *len)
{
    return molt_host->req_body(txn, len);
}
/** 10 for HTTP/1.0, 11 for HTTP/1.1. */
static inline int molt_req_version(const molt_txn_t *txn)
{
    return molt_host->req_version(txn);
}
/** The instance the transaction was routed to. */
static inline molt_instance_t *molt_txn_instance(const molt_txn_t *txn)
{
    return molt_host->txn_instance(txn);
}
/** Sets the response status (100-599; default 200). MOLT_OK or MOLT_ERROR. */
static inline int molt_resp_set_status(molt_txn_t *txn, int status)
{
    return molt_host->resp_set_status(txn, status);
}
/** Adds a response header. Names and values must not contain CR, LF or NUL.
 *  Content-Length, Transfer-Encoding, Connection and Date are the host's and refused. */
static inline int molt_resp_add_header(molt_txn_t *txn, const char *name, const char *value)
{
    return molt_host->resp_add_header(txn, name, value);
}
/** Appends to the response body. */
static inline int molt_resp_write(molt_txn_t *txn, const void *data, size_t len)
{
    return molt_host->resp_write(txn, data, len);
}
/** Sends what is written so far and streams the rest (chunked in HTTP/1.1). */
static inline int molt_resp_flush(molt_txn_t *txn)
{
    return molt_host->resp_flush(txn);
}
/** The calling plugin's zeroed per-transaction context (txn_ctx_size bytes), or NULL if none. */
static inline void *molt_txn_ctx(molt_txn_t *txn)
{
    return molt_host->txn_ctx(txn);
}

/* ---- defining a plugin ------------------------------------------------------------------- */

/* The entry point's type: receives the host table, returns the descriptor. */
typedef const molt_plugin_t *(*molt_plugin_entry_fn)(const molt_host_api_t *host);

/*
 * MOLT_PLUGIN(designated initialisers...) defines the descriptor, the
 * molt_host pointer and the exported entry symbol. The ABI fields are filled
 * in; write only what the plugin has.
 */
#define MOLT_PLUGIN(...)                                                                                 \
    const molt_host_api_t *molt_host __attribute__((visibility("hidden")));                             \
    static const molt_plugin_t molt_plugin_descriptor_ = {.abi_major = MOLT_ABI_MAJOR,                    \
                                                          .abi_minor = MOLT_ABI_MINOR,                    \
                                                          .struct_size = sizeof(molt_plugin_t),           \
                                                          __VA_ARGS__};                                   \
    __attribute__((visibility("default"))) const molt_plugin_t *molt_plugin_entry(                       \
        const molt_host_api_t *host);                                                                     \
    __attribute__((visibility("default"))) const molt_plugin_t *molt_plugin_entry(                       \
        const molt_host_api_t *host)                                                                      \
    {                                                                                                     \
        molt_host = host;                                                                                 \
        return &molt_plugin_descriptor_;                                                                  \
    }

#ifdef __cplusplus
}
#endif

#endif
