/*
 * `moltctl state NAME`: an instance's live state in every worker of the
 * active generation, as JSON. Each worker packs it with the instance's own
 * state_save into a one-entry state stream (shared/stream.h, the format of a
 * reload's handoff) over a socketpair; the supervisor reads the streams on
 * its loop and turns each payload into JSON. A worker that does not answer
 * within SUP_DUMP_TIMEOUT_MS is reported as such; the others still are.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nettle/base64.h>

#include "shared/chan.h"
#include "shared/log.h"
#include "shared/stream.h"
#include "shared/util.h"
#include "supervisor/sup.h"

#define SUP_DUMP_TIMEOUT_MS 5000
/* A state shown on the control socket stays well under its reply bound. */
#define SUP_DUMP_MAX_BYTES (4 * 1024 * 1024)
/* msgpack nesting deeper than this is shown as a string saying so. */
#define SUP_DUMP_MAX_DEPTH 64

typedef struct dump_worker {
    struct dump_req *req;
    sup_proc_t *p;
    pid_t pid;
    unsigned slot;
    int fd;
    ev_io io;
    molt_stream_reader_t *r;
    bool dumped;      /* DUMPED came */
    bool eof;         /* the stream ended (or failed) */
    char err[512];    /* why there is no state: the worker's word (DUMPED) first */
    char stream_err[256]; /* what was wrong with the stream, told if the worker said nothing */
} dump_worker_t;

typedef struct dump_req {
    struct dump_req *next;
    sup_dump_done_fn done;
    void *arg;
    char name[MOLT_STREAM_NAME_MAX];
    uint64_t generation;
    dump_worker_t *w;
    size_t n;
    ev_timer timer;
} dump_req_t;

static dump_req_t *dumps;

/* ---- msgpack to JSON -------------------------------------------------------------------- */

static json_t *bin_json(const char *p, size_t n)
{
    json_t *s = json_stringn(p, n); /* NULL unless valid UTF-8 */
    if (s)
        return s;
    char *b64 = malloc(BASE64_ENCODE_RAW_LENGTH(n) + 1);
    if (!b64)
        return json_null();
    base64_encode_raw(b64, n, (const uint8_t *)p);
    b64[BASE64_ENCODE_RAW_LENGTH(n)] = '\0';
    json_t *o = json_pack("{s:s}", "base64", b64);
    free(b64);
    return o;
}

static json_t *mp_json(const msgpack_object *o, int depth)
{
    if (depth > SUP_DUMP_MAX_DEPTH)
        return json_string("(nested too deep to show)");
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return o->via.u64 > (uint64_t)INT64_MAX ? json_real((double)o->via.u64) : json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        return bin_json(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return bin_json(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_EXT:
        return json_pack("{s:i,s:o}", "ext", (int)o->via.ext.type, "data", bin_json(o->via.ext.ptr, o->via.ext.size));
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(a, mp_json(&o->via.array.ptr[i], depth + 1));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            json_t *v = mp_json(&kv->val, depth + 1);
            if (kv->key.type == MSGPACK_OBJECT_STR || kv->key.type == MSGPACK_OBJECT_BIN) {
                const char *p = kv->key.type == MSGPACK_OBJECT_STR ? kv->key.via.str.ptr : kv->key.via.bin.ptr;
                size_t n = kv->key.type == MSGPACK_OBJECT_STR ? kv->key.via.str.size : kv->key.via.bin.size;
                json_object_setn_new(m, p, n, v); /* fails (v freed) for a key that is not UTF-8 */
            } else {
                /* A key that is not text is shown as its JSON text. */
                json_t *k = mp_json(&kv->key, depth + 1);
                char *text = json_dumps(k, JSON_ENCODE_ANY | JSON_COMPACT);
                json_decref(k);
                if (text)
                    json_object_set_new(m, text, v);
                else
                    json_decref(v);
                free(text);
            }
        }
        return m;
    }
    }
    return json_null();
}

/* ---- requests --------------------------------------------------------------------------- */

static void worker_close(dump_worker_t *w)
{
    ev_io_stop(S.loop, &w->io);
    molt_close(&w->fd);
}

static void req_free(dump_req_t *req)
{
    for (dump_req_t **pp = &dumps; *pp; pp = &(*pp)->next) {
        if (*pp == req) {
            *pp = req->next;
            break;
        }
    }
    ev_timer_stop(S.loop, &req->timer);
    for (size_t i = 0; i < req->n; i++) {
        worker_close(&req->w[i]);
        molt_stream_reader_free(req->w[i].r);
    }
    free(req->w);
    free(req);
}

static json_t *worker_json(const dump_worker_t *w, const char **plugin)
{
    json_t *o = json_pack("{s:I,s:I}", "slot", (json_int_t)w->slot, "pid", (json_int_t)w->pid);
    if (w->err[0]) {
        json_object_set_new(o, "error", json_string(w->err));
        return o;
    }
    const molt_stream_entry_t *e = molt_stream_reader_count(w->r) == 1 ? molt_stream_reader_entry(w->r, 0) : NULL;
    msgpack_unpacked up;
    size_t off = 0;
    msgpack_unpacked_init(&up);
    if (!e || msgpack_unpack_next(&up, e->data, e->size, &off) != MSGPACK_UNPACK_SUCCESS) {
        json_object_set_new(o, "error", json_string("the worker sent no state"));
    } else {
        *plugin = e->plugin;
        json_object_set_new(o, "state_version", json_integer(e->state_version));
        json_object_set_new(o, "bytes", json_integer((json_int_t)e->size));
        json_object_set_new(o, "state", mp_json(&up.data, 0));
    }
    msgpack_unpacked_destroy(&up);
    return o;
}

/* Answers once every worker answered (or failed, or the time is up). */
static void req_maybe_done(dump_req_t *req, bool force)
{
    for (size_t i = 0; i < req->n && !force; i++)
        if (!req->w[i].err[0] && (!req->w[i].dumped || !req->w[i].eof))
            return;
    for (size_t i = 0; i < req->n; i++)
        if (!req->w[i].err[0] && req->w[i].stream_err[0])
            snprintf(req->w[i].err, sizeof(req->w[i].err), "%s", req->w[i].stream_err);
    json_t *workers = json_array();
    const char *plugin = NULL, *first_err = NULL;
    size_t good = 0;
    for (size_t i = 0; i < req->n; i++) {
        dump_worker_t *w = &req->w[i];
        if (!w->err[0] && (!w->dumped || !w->eof))
            snprintf(w->err, sizeof(w->err), "no answer within %d ms", SUP_DUMP_TIMEOUT_MS);
        json_array_append_new(workers, worker_json(w, &plugin));
        if (w->err[0] && !first_err)
            first_err = w->err;
        good += !w->err[0];
    }
    json_t *reply = json_pack("{s:b,s:s,s:I,s:o}", "ok", good > 0, "name", req->name, "generation",
                              (json_int_t)req->generation, "workers", workers);
    if (plugin)
        json_object_set_new(reply, "plugin", json_string(plugin));
    if (!good)
        json_object_set_new(reply, "error", json_string(first_err ? first_err : "no worker is serving"));
    sup_dump_done_fn done = req->done;
    void *arg = req->arg;
    req_free(req);
    done(arg, reply);
    json_decref(reply);
}

static void on_stream(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop, (void)revents;
    dump_worker_t *w = io->data;
    int rc = molt_stream_reader_read(w->r, w->fd);
    if (rc == 0 && molt_stream_reader_bytes(w->r) <= SUP_DUMP_MAX_BYTES)
        return;
    if (rc == 0)
        snprintf(w->err, sizeof(w->err), "the state is over %d bytes: too large to show", SUP_DUMP_MAX_BYTES);
    else if (rc < 0)
        snprintf(w->stream_err, sizeof(w->stream_err), "%s", molt_stream_reader_error(w->r));
    w->eof = true;
    worker_close(w);
    req_maybe_done(w->req, false);
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    req_maybe_done(t->data, true);
}

int sup_dump_request(const char *name, sup_dump_done_fn done, void *arg, char *err, size_t errlen)
{
    if (!S.active || S.state != SUP_RUNNING) {
        snprintf(err, errlen, "no generation is serving");
        return -1;
    }
    if (!name[0] || strlen(name) >= MOLT_STREAM_NAME_MAX) {
        snprintf(err, errlen, "\"name\" must be an instance name (1 to %d bytes)", MOLT_STREAM_NAME_MAX - 1);
        return -1;
    }
    dump_req_t *req = calloc(1, sizeof(*req));
    if (req)
        req->w = calloc(S.active->nworkers, sizeof(*req->w));
    if (!req || !req->w) {
        free(req);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    req->done = done;
    req->arg = arg;
    req->generation = S.active->number;
    snprintf(req->name, sizeof(req->name), "%s", name);
    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 1);
    molt_mp_pack_kv_str(&body.pk, "name", name);
    for (size_t k = 0; k < SUP_MAX_PROCS && req->n < S.active->nworkers; k++) {
        sup_proc_t *p = &S.procs[k];
        if (p->gen != S.active || p->state != SUP_W_READY || p->pid <= 0 || p->chan < 0)
            continue;
        dump_worker_t *w = &req->w[req->n++];
        *w = (dump_worker_t){.req = req, .p = p, .pid = p->pid, .slot = p->slot, .fd = -1};
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0) {
            snprintf(w->err, sizeof(w->err), "socketpair() failed: %s", strerror(errno));
            continue;
        }
        w->r = molt_stream_reader_new();
        int rc = w->r ? molt_chan_send(p->chan, MOLT_MSG_DUMP, &body.sb, &sv[1], 1) : -ENOMEM;
        close(sv[1]);
        if (rc < 0) {
            close(sv[0]);
            snprintf(w->err, sizeof(w->err), "asking the worker failed: %s", strerror(-rc));
            continue;
        }
        w->fd = sv[0];
        ev_io_init(&w->io, on_stream, w->fd, EV_READ);
        w->io.data = w;
        ev_io_start(S.loop, &w->io);
    }
    molt_body_free(&body);
    req->next = dumps;
    dumps = req;
    ev_timer_init(&req->timer, on_timeout, SUP_DUMP_TIMEOUT_MS / 1000.0, 0.);
    req->timer.data = req;
    ev_timer_start(S.loop, &req->timer);
    req_maybe_done(req, false); /* every worker failed at once, or there is none */
    return 0;
}

static dump_worker_t *find_worker(const sup_proc_t *p)
{
    for (dump_req_t *req = dumps; req; req = req->next)
        for (size_t i = 0; i < req->n; i++)
            if (req->w[i].p == p && req->w[i].pid == p->pid && !req->w[i].dumped && !req->w[i].err[0])
                return &req->w[i];
    return NULL;
}

void sup_dump_on_dumped(sup_proc_t *p, const molt_msg_t *msg)
{
    dump_worker_t *w = find_worker(p);
    if (!w)
        return;
    char err[512] = "";
    molt_msg_get_str(msg, "error", err, sizeof(err));
    w->dumped = true;
    if (err[0]) {
        snprintf(w->err, sizeof(w->err), "%s", err);
        worker_close(w);
    }
    req_maybe_done(w->req, false);
}

void sup_dump_on_death(sup_proc_t *p)
{
    dump_worker_t *w;
    while ((w = find_worker(p))) {
        snprintf(w->err, sizeof(w->err), "the worker %s", p->last_exit);
        worker_close(w);
        req_maybe_done(w->req, false);
    }
}

void sup_dump_forget(void *arg)
{
    for (dump_req_t *req = dumps, *next; req; req = next) {
        next = req->next;
        if (req->arg == arg)
            req_free(req);
    }
}

void sup_dump_free(void)
{
    while (dumps)
        req_free(dumps);
}

bool sup_dump_running(void)
{
    return dumps != NULL;
}
