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
 * a callback that blocks stalls every connection of that worker. Work that
 * waits (a backend, a delay) suspends its transaction (MOLT_SUSPEND) and
 * resumes it from a timer or fd watcher of the host (molt_txn_resume(),
 * molt_timer_start(), molt_fd_watch()): see "asynchronous work" below.
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
#define MOLT_ABI_MINOR 2

#define MOLT_PLUGIN_ENTRY_SYMBOL "molt_plugin_entry"

/* Opaque handles owned by the host. */
typedef struct molt_instance molt_instance_t; /* one configured instance of a plugin */
typedef struct molt_session molt_session_t;   /* one client connection */
typedef struct molt_txn molt_txn_t;           /* one HTTP request and its response */
typedef struct molt_timer molt_timer_t;       /* a timer on the worker's loop (ABI 1.1) */
typedef struct molt_watch molt_watch_t;       /* an fd watcher on the worker's loop (ABI 1.1) */

/* msgpack-c types, declared here so that plugins without state need not include msgpack.h. */
struct msgpack_packer;
struct msgpack_object;

/* ---- return codes ----------------------------------------------------------------------- */

typedef enum molt_rc {
    MOLT_OK = 0,       /* success; for a hook callback: continue with the next callback */
    MOLT_CONTINUE = 0, /* hook callbacks: go on (same value as MOLT_OK) */
    MOLT_DONE = 1,     /* hook callbacks: finish the transaction with the response set so far;
                        * the rest of the request phase and the handler are skipped */
    MOLT_ERROR = -1,   /* failure: the host answers 500 and logs the instance's name */
    MOLT_SUSPEND = 2,  /* (ABI 1.1) the handler or a txn_start / request_headers callback has
                        * not finished: the transaction waits, without blocking the worker,
                        * until the plugin calls molt_txn_resume() (usually from a timer or
                        * fd watcher callback). Anywhere else it counts as MOLT_ERROR. */
} molt_rc_t;

/* ---- hooks ------------------------------------------------------------------------------ */

/*
 * Where a plugin can run code besides its request handler, at three levels.
 * For one transaction the order is: TXN_START, REQUEST_HEADERS, the routed
 * instance's handler, RESPONSE_HEADERS, TXN_END. A callback of the request
 * phase (TXN_START, REQUEST_HEADERS) that returns MOLT_DONE answers with the
 * response it set; MOLT_ERROR answers 500. RESPONSE_HEADERS callbacks still
 * run after either, so that response headers are added to every response;
 * TXN_END callbacks always run and their return value is ignored.
 * A TXN_START or REQUEST_HEADERS callback may also return MOLT_SUSPEND; the
 * transaction goes on when the plugin resumes it (molt_txn_resume()).
 */
typedef enum molt_hook_id {
    MOLT_HOOK_WORKER_START = 0,     /* global: every instance initialised, before serving */
    MOLT_HOOK_WORKER_STOP = 1,      /* global: the worker stops, before any fini */
    MOLT_HOOK_SESSION_OPEN = 2,     /* session: a connection was accepted (MOLT_ERROR closes it) */
    MOLT_HOOK_SESSION_CLOSE = 3,    /* session: the connection is closing */
    MOLT_HOOK_TXN_START = 4,        /* transaction: a request arrived (line and headers parsed) */
    MOLT_HOOK_REQUEST_HEADERS = 5,  /* transaction: before routing to the handler */
    MOLT_HOOK_RESPONSE_HEADERS = 6, /* transaction: the response is set, not yet sent */
    MOLT_HOOK_TXN_END = 7,          /* transaction: the response is complete */
    MOLT_HOOK_COUNT
} molt_hook_id_t;

/*
 * One callback. Fill `fn` with the member of the hook's level:
 * .fn.global for WORKER_*, .fn.session for SESSION_*, .fn.txn for TXN_* and
 * *_HEADERS. `data` is the instance data (molt_instance_set_data()).
 * Callbacks on a hook run in ascending priority (lower first), ties in the
 * order the instances appear in the config. An instance's "priority" in the
 * config replaces the priority of every one of its callbacks.
 */
typedef struct molt_hook {
    molt_hook_id_t id;
    int priority;     /* -1000..1000 */
    const char *name; /* names the callback for listing and per-callback control;
                       * NULL: the hook's own name ("request_headers") */
    union {
        int (*global)(molt_instance_t *inst, void *data);
        int (*session)(molt_session_t *ses, void *data);
        int (*txn)(molt_txn_t *txn, void *data);
    } fn;
} molt_hook_t;

/* ---- descriptor ------------------------------------------------------------------------- */

enum molt_plugin_flags {
    MOLT_PLUGIN_SINGLETON = 1u << 0,    /* at most one instance per generation */
    MOLT_PLUGIN_STRICT_STATE = 1u << 1, /* snapshot only after connections closed (reload) */
    MOLT_PLUGIN_REPLICATED = 1u << 2,   /* state is the same in every worker (reload mapping) */
};

/* A dependency on another plugin, by plugin name and minimum semver (NULL: any). */
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

    /*
     * Dependencies: an array ended by an entry whose name is NULL; NULL for
     * none. Every instance of a plugin named here initialises before this
     * plugin's instances and finalises after them. A dependency that is not
     * configured, older than min_version, or part of a cycle fails the
     * generation before it serves, with the chain named.
     */
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
     * MOLT_OK; return MOLT_ERROR to have the host answer 500, or
     * MOLT_SUSPEND to finish later with molt_txn_resume() (ABI 1.1).
     * Required for an instance that a route points at.
     */
    int (*handle)(molt_txn_t *txn, void *data);

    /* Hook callbacks: `nhooks` entries; NULL/0 for none. */
    const molt_hook_t *hooks;
    size_t nhooks;

    /* Bytes of zeroed per-transaction context the host reserves for this
     * plugin (molt_txn_ctx()), freed by the host; 0 for none. For more, or
     * for memory of a size known only at run time, see molt_txn_set_ptr(). */
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

    /*
     * txn_abort (ABI 1.1): the client of a transaction that this plugin
     * suspended (MOLT_SUSPEND from its handler or from one of its txn_start /
     * request_headers callbacks) went away before the plugin resumed it.
     * Stop the timers and fd watchers that would resume it and free what
     * belongs to it (its molt_txn_ctx() and molt_txn_get_ptr() are still
     * readable here; the pointer is released after this returns). Once this
     * returns, `txn` is invalid: never resume or touch it again. Neither
     * RESPONSE_HEADERS nor TXN_END runs for an aborted transaction.
     * Optional, but a plugin that suspends needs it to learn that a pending
     * resume must not happen.
     */
    void (*txn_abort)(molt_txn_t *txn, void *data);

    /*
     * on_reload (ABI 1.1): where a reload stands, seen from this worker
     * (enum molt_reload_phase). Every generation is its own set of worker
     * processes, so an instance learns of a reload from one side: in the
     * old generation HANDOFF, then RESUMED (the reload rolled back) or
     * RETIRED (committed: this worker drains and fini follows); in the new
     * generation ACTIVE once it is committed. Optional; never blocks.
     */
    void (*on_reload)(molt_instance_t *inst, int phase);

    /*
     * sibling_recv (ABI 1.1): apply a message that this same instance in
     * another worker of the generation (worker `from_slot`) sent with
     * molt_sibling_send(). `msg` is the one msgpack object it packed, valid
     * during the call only (copy what you keep). Return MOLT_OK once it is
     * applied; anything else tells the sender that this worker did not apply
     * it (its molt_sibling_wait() fails, naming this worker). Runs as this
     * instance on the worker's loop, like every callback: never block.
     * Optional; without it every sibling message to this instance fails.
     * See "sibling messages" below.
     */
    int (*sibling_recv)(molt_instance_t *inst, const struct msgpack_object *msg, unsigned from_slot);

    /*
     * state_reset (ABI 1.2): drop this instance's state, leaving it as init
     * left it, because the host is about to state_restore a snapshot over it
     * in a worker that has been serving. That happens when a reload rolls
     * back after the new generation started accepting (a worker of it died,
     * or too many 5xx, within stable_ms): what the new generation changed
     * meanwhile is handed back to the old one, whose instance is reset and
     * then restored from the new generation's snapshot(s), exactly as at a
     * handoff. Called only once every snapshot for the instance arrived
     * whole and its state_version is one this plugin reads. Optional:
     * without it, a rollback leaves this instance's state as the old
     * generation had it (what the new one changed is dropped, with a log line).
     */
    void (*state_reset)(molt_instance_t *inst);

    /* Room to grow within ABI 1: fields that later minors add go before this
     * array (struct_size tells the host which exist); a plugin built against
     * an older minor has zeros where they are. Leave zeroed. */
    void *reserved[8];
} molt_plugin_t;

/* One callback registered on a hook, as molt_txn_hook_list() reports it. */
typedef struct molt_cb_info {
    const char *instance; /* instance name */
    const char *callback; /* callback name */
    int priority;         /* effective priority for this transaction */
    int enabled;          /* 1 if it runs for this transaction */
} molt_cb_info_t;

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

    /* request (valid until the response is complete: through TXN_END, also
     * while the transaction is suspended) */
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

    /* response, read back (for RESPONSE_HEADERS callbacks) */
    int (*resp_status)(const molt_txn_t *txn);

    /* a per-transaction pointer for the calling plugin, released by the host */
    int (*txn_set_ptr)(molt_txn_t *txn, void *ptr, void (*release)(void *ptr));
    void *(*txn_get_ptr)(molt_txn_t *txn);

    /* sessions */
    molt_session_t *(*txn_session)(const molt_txn_t *txn);
    uint64_t (*session_id)(const molt_session_t *ses);
    const char *(*session_peer)(const molt_session_t *ses);

    /* per-transaction hook coordination */
    int (*txn_disable_instance)(molt_txn_t *txn, const char *instance);
    int (*txn_hook_list)(molt_txn_t *txn, molt_hook_id_t hook, molt_cb_info_t *out, size_t max);
    int (*txn_hook_enable)(molt_txn_t *txn, molt_hook_id_t hook, const char *instance, const char *callback,
                           int enabled);
    int (*txn_hook_priority)(molt_txn_t *txn, molt_hook_id_t hook, const char *instance,
                             const char *callback, int priority);

    /* plugins reaching each other */
    int (*api_publish)(molt_instance_t *inst, const char *api_name, uint32_t version, const void *api);
    const void *(*api_lookup)(const molt_instance_t *inst, const char *provider, const char *api_name,
                              uint32_t min_version);

    /* ---- ABI 1.1: asynchronous work (test with MOLT_HOST_HAS(molt_host, txn_resume)) ---- */
    int (*txn_resume)(molt_txn_t *txn, int rc);
    molt_timer_t *(*timer_start)(molt_instance_t *inst, uint64_t after_ms, uint64_t repeat_ms,
                                 void (*fn)(molt_timer_t *t, void *arg), void *arg);
    void (*timer_stop)(molt_timer_t *t);
    molt_watch_t *(*fd_watch)(molt_instance_t *inst, int fd, int events,
                              void (*fn)(molt_watch_t *w, int fd, int revents, void *arg), void *arg);
    void (*fd_unwatch)(molt_watch_t *w);

    /* ---- ABI 1.1: named slots (test with MOLT_HOST_HAS(molt_host, slot_reserve)) ---- */
    int (*slot_reserve)(molt_instance_t *inst, int level, const char *name);
    void *(*txn_slot_get)(const molt_txn_t *txn, int index);
    int (*txn_slot_set)(molt_txn_t *txn, int index, void *value);
    void *(*session_slot_get)(const molt_session_t *ses, int index);
    int (*session_slot_set)(molt_session_t *ses, int index, void *value);
    /* ---- ABI 1.1: sibling messages (test with MOLT_HOST_HAS(molt_host, sibling_send)) ---- */
    int (*sibling_send)(molt_instance_t *inst, const void *msg, size_t len, uint64_t *seq);
    int (*sibling_wait)(molt_txn_t *txn, uint64_t seq, uint32_t timeout_ms,
                        void (*done)(molt_txn_t *txn, int rc, const char *error, void *arg), void *arg);
} molt_host_api_t;

/* The largest message molt_sibling_send() takes: one channel datagram holds
 * it with its envelope (instance name, sequence number, sender). */
#define MOLT_SIBLING_MAX_MSG (48 * 1024)

/*
 * Reload phases told to plugins (molt_plugin_t.on_reload). The stateful
 * hot-reload design's BEFORE_UNLOAD is HANDOFF, AFTER_LOAD is ACTIVE and
 * AFTER_UNLOAD is RETIRED; RESUMED is its rollback, seen by the generation
 * that keeps serving.
 */
enum molt_reload_phase {
    MOLT_RELOAD_HANDOFF = 1, /* old generation: a successor is being verified; no new connections */
    MOLT_RELOAD_RESUMED = 2, /* old generation: the reload rolled back; accepting again */
    MOLT_RELOAD_RETIRED = 3, /* old generation: the successor is committed; draining, then fini */
    MOLT_RELOAD_ACTIVE = 4,  /* new generation: committed; this generation is the active one */
};

/* Events of molt_fd_watch(). */
enum molt_ev {
    MOLT_EV_READ = 1u << 0,  /* the fd is readable (or at EOF, or in error) */
    MOLT_EV_WRITE = 1u << 1, /* the fd is writable */
};

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

/** The response status set so far (200 unless changed). */
static inline int molt_resp_status(const molt_txn_t *txn)
{
    return molt_host->resp_status(txn);
}
/**
 * Stores a pointer for the calling plugin on this transaction, for memory
 * larger than txn_ctx_size or sized at run time. When the transaction ends
 * the host calls release(ptr) (if release is not NULL). Storing another
 * pointer releases the previous one. MOLT_OK or MOLT_ERROR.
 */
static inline int molt_txn_set_ptr(molt_txn_t *txn, void *ptr, void (*release)(void *ptr))
{
    return molt_host->txn_set_ptr(txn, ptr, release);
}
/** The pointer the calling plugin stored on this transaction, or NULL. */
static inline void *molt_txn_get_ptr(molt_txn_t *txn)
{
    return molt_host->txn_get_ptr(txn);
}
/** The connection this transaction arrived on. */
static inline molt_session_t *molt_txn_session(const molt_txn_t *txn)
{
    return molt_host->txn_session(txn);
}
/** A number identifying the connection within this worker. */
static inline uint64_t molt_session_id(const molt_session_t *ses)
{
    return molt_host->session_id(ses);
}
/** The client's address, "127.0.0.1:54321" or "[::1]:54321" ("unix" for a UNIX socket). */
static inline const char *molt_session_peer(const molt_session_t *ses)
{
    return molt_host->session_peer(ses);
}
/**
 * Disables every hook callback of `instance` for this transaction only (its
 * request handler is not affected: routing decides that). MOLT_ERROR if no
 * instance has that name.
 */
static inline int molt_txn_disable_instance(molt_txn_t *txn, const char *instance)
{
    return molt_host->txn_disable_instance(txn, instance);
}
/**
 * Lists the callbacks registered on `hook`, in the order they run for this
 * transaction: fills up to `max` entries of out and returns how many there
 * are in all (may exceed max). The strings stay valid while the worker runs.
 */
static inline int molt_txn_hook_list(molt_txn_t *txn, molt_hook_id_t hook, molt_cb_info_t *out, size_t max)
{
    return molt_host->txn_hook_list(txn, hook, out, max);
}
/**
 * Enables or disables, for this transaction only, the callback `callback` of
 * `instance` on `hook` (callback NULL: all of that instance's callbacks on the
 * hook). A change to the hook that is running takes effect for the callbacks
 * that have not run yet. MOLT_ERROR if nothing matches.
 */
static inline int molt_txn_hook_enable(molt_txn_t *txn, molt_hook_id_t hook, const char *instance,
                                       const char *callback, int enabled)
{
    return molt_host->txn_hook_enable(txn, hook, instance, callback, enabled);
}
/** As molt_txn_hook_enable(), changing the callback's priority (-1000..1000) for this transaction. */
static inline int molt_txn_hook_priority(molt_txn_t *txn, molt_hook_id_t hook, const char *instance,
                                         const char *callback, int priority)
{
    return molt_host->txn_hook_priority(txn, hook, instance, callback, priority);
}
/**
 * Publishes an API (usually a struct of function pointers that stays valid
 * until fini) under `api_name` with `version`, for instances that depend on
 * this plugin. Call it from init. MOLT_ERROR if the name is already
 * published by this instance.
 */
static inline int molt_api_publish(molt_instance_t *inst, const char *api_name, uint32_t version,
                                   const void *api)
{
    return molt_host->api_publish(inst, api_name, version, api);
}
/**
 * Looks up an API published by `provider` (an instance name, or the name of a
 * plugin configured exactly once) with at least `min_version`. Declare the
 * provider's plugin in deps so that it is initialised first. NULL if absent
 * (the host logs why).
 */
static inline const void *molt_api_lookup(const molt_instance_t *inst, const char *provider,
                                          const char *api_name, uint32_t min_version)
{
    return molt_host->api_lookup(inst, provider, api_name, min_version);
}

/* ---- asynchronous work (ABI 1.1) --------------------------------------------------------- */

/*
 * A transaction waits for something without blocking the worker like this:
 *
 *     static void done(molt_timer_t *t, void *arg)     // a timer callback
 *     {
 *         my_txn_t *m = arg;                             // in molt_txn_ctx(): lives with the txn
 *         m->timer = NULL;                               // a one-shot timer is freed after this
 *         molt_resp_write(m->txn, "slept\n", 6);
 *         molt_txn_resume(m->txn, MOLT_OK);              // the response goes out
 *     }
 *     static int handle(molt_txn_t *txn, void *data)
 *     {
 *         my_txn_t *m = molt_txn_ctx(txn);
 *         m->txn = txn;
 *         m->timer = molt_timer_start(NULL, 100, 0, done, m);
 *         return m->timer ? MOLT_SUSPEND : MOLT_ERROR;
 *     }
 *     static void txn_abort(molt_txn_t *txn, void *data)  // the client went away
 *     {
 *         my_txn_t *m = molt_txn_ctx(txn);
 *         molt_timer_stop(m->timer);                     // done() must not run now
 *     }
 *
 * While a transaction is suspended its connection reads nothing more of the
 * client's requests (pipelined ones wait, in order), no header or keep-alive
 * timeout runs for it, and the host only watches for the client going away
 * (EOF or an error: descriptor's txn_abort). Meanwhile the worker serves
 * everything else. During a graceful stop the worker waits for suspended
 * transactions (within the drain timeout) and closes their connections after
 * the response.
 *
 * Timers and fd watchers belong to an instance: their callbacks run as that
 * instance (molt_txn_ctx() and the other per-instance host functions see it).
 * When the worker stops, after the worker_stop callbacks and before any fini,
 * the host stops and frees every timer and watcher an instance still has
 * (and logs how many): stop them in worker_stop if you want, but never touch
 * them in fini.
 */

/**
 * Resumes a transaction that returned MOLT_SUSPEND. `rc` is what the
 * suspended code would have returned: for a handler MOLT_OK (the response
 * set so far is sent) or MOLT_ERROR (500); for a txn_start / request_headers
 * callback MOLT_CONTINUE (the remaining callbacks of that hook run, then the
 * rest of the transaction), MOLT_DONE or MOLT_ERROR. The rest of the
 * transaction runs before this returns (unless another callback suspends it
 * again); afterwards `txn` is invalid. Call it from any later callback of the
 * worker (a timer, an fd watcher, another transaction's handler), or even
 * before the suspending callback returns: then it takes effect as soon as
 * that callback returns MOLT_SUSPEND. MOLT_ERROR (and a log line) for a
 * transaction that is not suspended, a second resume, or rc MOLT_SUSPEND.
 */
static inline int molt_txn_resume(molt_txn_t *txn, int rc)
{
    return molt_host->txn_resume(txn, rc);
}
/**
 * Starts a timer on the worker's event loop: fn(t, arg) runs after `after_ms`
 * milliseconds, then every `repeat_ms` if that is not 0. `inst` owns it
 * (NULL: the calling instance). A one-shot timer (repeat_ms 0) is freed by
 * the host once its callback returns: forget the pointer there. A repeating
 * one lives until molt_timer_stop() or the worker's stop. NULL on failure.
 */
static inline molt_timer_t *molt_timer_start(molt_instance_t *inst, uint64_t after_ms, uint64_t repeat_ms,
                                             void (*fn)(molt_timer_t *t, void *arg), void *arg)
{
    return molt_host->timer_start(inst, after_ms, repeat_ms, fn, arg);
}
/** Stops and frees a timer (NULL is fine). Safe from inside its own callback. */
static inline void molt_timer_stop(molt_timer_t *t)
{
    molt_host->timer_stop(t);
}
/**
 * Watches `fd` for `events` (MOLT_EV_READ | MOLT_EV_WRITE) on the worker's
 * event loop: fn(w, fd, revents, arg) runs whenever some are ready (level
 * triggered: until the plugin reads, writes or stops watching). `inst` owns
 * it (NULL: the calling instance). The fd stays the plugin's: keep it open
 * and non-blocking while it is watched. Lives until molt_fd_unwatch() or the
 * worker's stop. NULL on failure.
 */
static inline molt_watch_t *molt_fd_watch(molt_instance_t *inst, int fd, int events,
                                          void (*fn)(molt_watch_t *w, int fd, int revents, void *arg),
                                          void *arg)
{
    return molt_host->fd_watch(inst, fd, events, fn, arg);
}
/** Stops watching and frees the watcher (NULL is fine); does not close the fd. Safe from inside its
 *  own callback. */
static inline void molt_fd_unwatch(molt_watch_t *w)
{
    molt_host->fd_unwatch(w);
}

/* ---- named slots (ABI 1.1) ---------------------------------------------------------------- */

/* Levels of named slots (the Traffic Server user-arg design). */
enum molt_slot_level {
    MOLT_SLOT_TXN = 1,     /* one value per transaction, NULL at its start */
    MOLT_SLOT_SESSION = 2, /* one value per connection, NULL when it opens */
};
#define MOLT_SLOTS_MAX 64 /* per level, for the life of a moltd */

/**
 * Reserves the slot called `name` at `level` and returns its index
 * (0..MOLT_SLOTS_MAX-1), or -1 (logged) if the slots are used up or the call
 * is made outside init. The index of a name is the same in every worker and
 * in every generation of a moltd (the supervisor keeps the registry), so
 * plugins of different generations, and plugins that share a slot by name,
 * agree on it. Call it from init.
 */
static inline int molt_slot_reserve(molt_instance_t *inst, int level, const char *name)
{
    return molt_host->slot_reserve(inst, level, name);
}
/** The value in transaction slot `index`, or NULL. */
static inline void *molt_txn_slot_get(const molt_txn_t *txn, int index)
{
    return molt_host->txn_slot_get(txn, index);
}
/** Stores a value in transaction slot `index` (the plugin owns what it points to). MOLT_OK or MOLT_ERROR. */
static inline int molt_txn_slot_set(molt_txn_t *txn, int index, void *value)
{
    return molt_host->txn_slot_set(txn, index, value);
}
/** The value in session slot `index`, or NULL. */
static inline void *molt_session_slot_get(const molt_session_t *ses, int index)
{
    return molt_host->session_slot_get(ses, index);
}
/** Stores a value in session slot `index`; free what it points to at SESSION_CLOSE. MOLT_OK or MOLT_ERROR. */
static inline int molt_session_slot_set(molt_session_t *ses, int index, void *value)
{
    return molt_host->session_slot_set(ses, index, value);
}

/* ---- sibling messages (ABI 1.1) ---------------------------------------------------------- */

/*
 * Every worker of a generation runs its own copy of each instance. To keep
 * one state in all of them (a cache, a key-value table, a counter), an
 * instance sends each change to itself in every other worker of its
 * generation, through the supervisor, and can hold a transaction until all
 * of them have applied it:
 *
 *     static void put_done(molt_txn_t *txn, int rc, const char *error, void *arg)
 *     {
 *         if (rc == MOLT_OK) {
 *             molt_resp_set_status(txn, 204);               // every sibling has it
 *         } else {
 *             molt_resp_set_status(txn, 503);
 *             molt_resp_write(txn, error, strlen(error));   // "worker 1 did not apply message 7 ..."
 *         }
 *         molt_txn_resume(txn, MOLT_OK);
 *     }
 *     static int handle(molt_txn_t *txn, void *data)        // PUT: apply here, then everywhere
 *     {
 *         ... apply the change locally, pack it into sbuf with msgpack-c ...
 *         uint64_t seq;
 *         if (molt_sibling_send(NULL, sbuf.data, sbuf.size, &seq) != MOLT_OK ||
 *             molt_sibling_wait(txn, seq, 500, put_done, NULL) != MOLT_OK)
 *             return MOLT_ERROR;
 *         return MOLT_SUSPEND;
 *     }
 *     static int sibling_recv(molt_instance_t *inst, const msgpack_object *msg, unsigned from)
 *     {
 *         ... apply the change ...
 *         return MOLT_OK;
 *     }
 *
 * Delivery: the supervisor forwards the message to every other worker of the
 * same generation that is running (ready or draining) when it arrives; each
 * calls the instance's sibling_recv and answers. A worker that is not running
 * then (dead, restarting) is not waited for. A restarted worker of a
 * generation with a MOLT_PLUGIN_REPLICATED instance catches up before it
 * accepts: a live sibling's state_save, its own state_restore, then every
 * message routed since it was ready, so a message may reach it twice (keep
 * replicated messages idempotent). Messages from one worker reach each
 * sibling in the order they were sent.
 *
 * Completion: a message is complete when every sibling it was forwarded to
 * has applied it (MOLT_OK), or has failed as soon as one refuses it
 * (sibling_recv not MOLT_OK or absent), dies before answering, or does not
 * answer within 5 s (the supervisor's bound). With no sibling (one worker) a
 * message is complete at once, and succeeds.
 */

/**
 * Sends `msg` (`len` bytes holding exactly one packed msgpack object, at
 * most MOLT_SIBLING_MAX_MSG) to the instance `inst` (NULL: the calling
 * instance) in every sibling worker, where its sibling_recv applies it.
 * *seq (may be NULL) gets the message's sequence number for
 * molt_sibling_wait(); numbers grow per instance and worker. MOLT_OK once
 * the message is on its way, or MOLT_ERROR (logged) if it is too big, not
 * one msgpack object, or the supervisor cannot take it.
 */
static inline int molt_sibling_send(molt_instance_t *inst, const void *msg, size_t len, uint64_t *seq)
{
    return molt_host->sibling_send(inst, msg, len, seq);
}
/**
 * Arranges for done(txn, rc, error, arg) to run once message `seq` of the
 * calling instance is complete: rc MOLT_OK when every sibling applied it;
 * MOLT_ERROR with `error` naming the workers and why ("worker 1 did not
 * apply message 7 within 500 ms", "worker 2 failed to apply message 7:
 * sibling_recv failed", "worker 2 died before applying message 7: killed by
 * signal 9") when one did not, or when timeout_ms ran out first (0: only the
 * supervisor's 5 s bound). `error` is "" for MOLT_OK and valid during the
 * call only. Then return MOLT_SUSPEND; done produces the response and calls
 * molt_txn_resume(). done always runs later from the worker's loop, as the
 * calling instance, never inside molt_sibling_wait(), even for a message
 * complete already. If the client goes away first, the host cancels the wait
 * (done never runs) before txn_abort; a transaction that finishes without
 * suspending cancels its waits too (logged). MOLT_ERROR (logged) for a
 * sequence number this instance did not send or that completed long ago
 * (the last 256 completed ones are remembered).
 */
static inline int molt_sibling_wait(molt_txn_t *txn, uint64_t seq, uint32_t timeout_ms,
                                    void (*done)(molt_txn_t *txn, int rc, const char *error, void *arg),
                                    void *arg)
{
    return molt_host->sibling_wait(txn, seq, timeout_ms, done, arg);
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
