/*
 * One HTTP transaction inside a worker: the parsed request and the response
 * being built. The HTTP core (http.c) fills the request, calls the worker's
 * handler, and serialises the response; the host API (host.c) is the plugins'
 * view of it (struct molt_txn is opaque in include/molt/plugin.h).
 */
#ifndef MOLT_WORKER_TXN_H
#define MOLT_WORKER_TXN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/util.h"

typedef struct wrk_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} wrk_header_t;

struct molt_instance;

/* One client connection (molt_session_t in the plugin API). Lives in the
 * HTTP core's connection object. */
struct molt_session {
    uint64_t id;   /* counts connections accepted by this worker */
    int fd;        /* the connection's socket */
    char peer[64]; /* formatted lazily by the host API; "" until then */
    void **slots;  /* MOLT_SLOTS_MAX named session slots, allocated on first use;
                    * freed with the connection */
};

struct molt_txn {
    /* ---- request: filled by the HTTP core; valid until the response is complete ---- */
    const char *method;   /* "GET", NUL-terminated */
    unsigned method_id;   /* enum http_method */
    const char *url;      /* request target as sent, NUL-terminated */
    size_t url_len;
    const char *path;     /* url without the query, NOT NUL-terminated */
    size_t path_len;
    const char *query;    /* after '?', NOT NUL-terminated; NULL if none */
    size_t query_len;
    int version;          /* 10 or 11 */
    const wrk_header_t *headers; /* names and values NUL-terminated */
    size_t nheaders;
    const char *body;     /* de-chunked body; NULL if none */
    size_t body_len;
    bool head;            /* HEAD: the response carries headers only */
    bool keep_alive;      /* the connection stays open after this response */

    /* ---- response: set through the host API by the handler ---- */
    int status;              /* default 200 */
    molt_buf_t resp_headers; /* extra header lines, each "Name: value\r\n" */
    molt_buf_t resp_body;    /* body bytes not yet sent */
    bool streaming;          /* head sent by wrk_http_txn_flush(); the rest goes out chunked */

    /* ---- owned by the dispatcher (main.c / host.c) ---- */
    struct molt_instance *instance; /* routed instance, NULL before routing */
    struct molt_session *session;   /* the connection (set by the HTTP core) */
    void *conn;                    /* the HTTP connection (http.c's) */
    /*
     * Set by the dispatcher before the handler returns when the transaction
     * is not finished: the HTTP core then sends nothing, parses nothing more
     * on the connection and waits for wrk_http_txn_complete() (which clears
     * it), or calls the server's abort callback if the client goes away.
     */
    bool suspended;
    /* The dispatcher's per-connection state (pipeline.c), allocated on the
     * first request; the HTTP core hands it to the server's release callback
     * when the connection is freed. */
    void *pipeline;
};

#endif
