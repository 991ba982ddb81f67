/*
 * State handoff, worker side: see worker/handoff.h for the flow. One "op" is
 * one SAVE, RESTORE or DUMP message and the streams (sockets) it came with.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "shared/log.h"
#include "shared/stream.h"
#include "shared/util.h"
#include "worker/handoff.h"
#include "worker/host.h"

typedef enum ho_kind { HO_SAVE, HO_RESTORE, HO_DUMP } ho_kind_t;

struct ho_op;

typedef struct ho_stream {
    struct ho_op *op;
    int fd;
    ev_io io;
    unsigned peer;             /* the worker at the other end (its slot) */
    molt_stream_writer_t *w;   /* SAVE, DUMP */
    molt_stream_reader_t *r;   /* RESTORE */
    bool done;
    char err[384];             /* why this stream failed, "" if it did not */
} ho_stream_t;

typedef struct ho_op {
    struct ho_op *next;
    ho_kind_t kind;
    size_t n, pending;
    ho_stream_t s[MOLT_CHAN_MAX_FDS];
    msgpack_sbuffer *payloads; /* SAVE, DUMP: one per instance, packed at most once */
    bool *packed;
    uint64_t t0;               /* monotonic ms */
    unsigned instances;        /* instances saved (SAVE, DUMP) or restored */
    uint64_t bytes;            /* stream bytes written or read, over the streams that ended */
    bool fresh;                /* RESTORE: on_restore_error is "fresh" */
    bool replace;              /* RESTORE: a rollback's hand-back: reset each instance before restoring */
    uint32_t timeout_ms;
    ev_timer timer;            /* RESTORE: handoff_timeout_ms */
    char err[512];             /* the first error of the op */
    bool plugin_error;         /* err is a plugin's doing (save failed), not a stream's */
    bool catchup;              /* SAVE for a sibling respawned in this generation */
} ho_op_t;

static struct {
    struct ev_loop *loop;
    int chan;
    wrk_plugins_t *ps;
    unsigned slot;
    ho_op_t *ops;
    void (*restored)(void);
} H;

void wrk_handoff_init(struct ev_loop *loop, int chan, wrk_plugins_t *plugins, unsigned slot, void (*restored)(void))
{
    H.loop = loop;
    H.chan = chan;
    H.ps = plugins;
    H.slot = slot;
    H.ops = NULL;
    H.restored = restored;
}

/* ---- ops -------------------------------------------------------------------------------- */

static ho_op_t *op_new(ho_kind_t kind)
{
    ho_op_t *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->kind = kind;
    op->t0 = molt_now_ms();
    for (size_t i = 0; i < MOLT_CHAN_MAX_FDS; i++)
        op->s[i].fd = -1;
    if (kind != HO_RESTORE) {
        op->payloads = calloc(H.ps->ninsts ? H.ps->ninsts : 1, sizeof(*op->payloads));
        op->packed = calloc(H.ps->ninsts ? H.ps->ninsts : 1, sizeof(*op->packed));
        if (!op->payloads || !op->packed) {
            free(op->payloads);
            free(op->packed);
            free(op);
            return NULL;
        }
    }
    op->next = H.ops;
    H.ops = op;
    return op;
}

static void stream_close(ho_stream_t *s)
{
    ev_io_stop(H.loop, &s->io);
    molt_close(&s->fd);
}

static void op_free(ho_op_t *op)
{
    for (ho_op_t **pp = &H.ops; *pp; pp = &(*pp)->next) {
        if (*pp == op) {
            *pp = op->next;
            break;
        }
    }
    ev_timer_stop(H.loop, &op->timer);
    for (size_t i = 0; i < op->n; i++) {
        stream_close(&op->s[i]);
        molt_stream_writer_free(op->s[i].w);
        molt_stream_reader_free(op->s[i].r);
    }
    if (op->payloads)
        for (size_t i = 0; i < H.ps->ninsts; i++)
            if (op->packed[i])
                msgpack_sbuffer_destroy(&op->payloads[i]);
    free(op->payloads);
    free(op->packed);
    free(op);
}

void wrk_handoff_cancel(bool all)
{
    ho_op_t **pp = &H.ops;
    while (*pp) {
        ho_op_t *op = *pp;
        /* A rollback's RESUME ends only the saves for the failed generation: a
         * catch-up save for a respawned sibling, or a state dump, goes on. */
        if (!all && (op->kind != HO_SAVE || op->catchup)) {
            pp = &op->next;
            continue;
        }
        if (op->pending)
            molt_info("handoff: %s cancelled with %zu stream%s unfinished",
                      op->kind == HO_SAVE ? "save" : op->kind == HO_RESTORE ? "restore" : "state dump", op->pending,
                      op->pending == 1 ? "" : "s");
        op_free(op); /* unlinks it: *pp is the next one */
    }
}

bool wrk_handoff_restoring(void)
{
    for (ho_op_t *op = H.ops; op; op = op->next)
        if (op->kind == HO_RESTORE)
            return true;
    return false;
}

static void op_error(ho_op_t *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void op_error(ho_op_t *op, const char *fmt, ...)
{
    if (op->err[0])
        return; /* the first error is the one to tell */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->err, sizeof(op->err), fmt, ap);
    va_end(ap);
}

/* Takes every descriptor of msg into the op's streams, in order. */
static void op_take_fds(ho_op_t *op, molt_msg_t *msg)
{
    for (size_t i = 0; i < msg->nfds; i++) {
        op->s[i].op = op;
        op->s[i].fd = msg->fds[i];
        msg->fds[i] = -1;
        molt_fd_set_nonblock(op->s[i].fd, true);
    }
    op->n = op->pending = msg->nfds;
}

/* Takes the descriptors of msg into the op's streams: exactly one per entry
 * of the body's "streams" array. Returns that array, or NULL (op->err set). */
static const msgpack_object *op_take_streams(ho_op_t *op, molt_msg_t *msg)
{
    const msgpack_object *arr = molt_msg_get(msg, "streams");
    if (!arr || arr->type != MSGPACK_OBJECT_ARRAY || arr->via.array.size != msg->nfds || msg->nfds == 0) {
        op_error(op, "malformed %s message: %zu descriptor%s for %s", molt_msg_type_name(msg->type), msg->nfds,
                 msg->nfds == 1 ? "" : "s", arr && arr->type == MSGPACK_OBJECT_ARRAY ? "a different count of streams" : "no stream list");
        return NULL;
    }
    op_take_fds(op, msg);
    return arr;
}

/* ---- save (and dump) -------------------------------------------------------------------- */

static bool inst_stateful(const struct molt_instance *inst)
{
    return inst->dso->desc.state_save != NULL;
}

/* Packs instance i's state into the op's payload i, once. 0, or -1 with op->err set. */
static int op_pack(ho_op_t *op, size_t i)
{
    if (op->packed[i])
        return 0;
    struct molt_instance *inst = &H.ps->insts[i];
    msgpack_sbuffer *sb = &op->payloads[i];
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    op->packed[i] = true;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    wrk_host_current = inst;
    int rc = inst->dso->desc.state_save(inst, &pk);
    wrk_host_current = NULL;
    if (rc != MOLT_OK) {
        op_error(op, "instance %s (plugin %s): state_save failed (returned %d)", inst->cfg->name,
                 inst->dso->desc.name, rc);
        op->plugin_error = true;
        return -1;
    }
    op->instances++;
    return 0;
}

static int op_add(ho_op_t *op, molt_stream_writer_t *w, size_t i)
{
    struct molt_instance *inst = &H.ps->insts[i];
    if (op_pack(op, i) < 0)
        return -1;
    molt_stream_entry_t e = {.state_version = inst->dso->desc.state_version,
                             .data = op->payloads[i].data,
                             .size = op->payloads[i].size};
    snprintf(e.name, sizeof(e.name), "%s", inst->cfg->name);
    snprintf(e.plugin, sizeof(e.plugin), "%s", inst->dso->desc.name);
    snprintf(e.version, sizeof(e.version), "%s", inst->dso->desc.version);
    int rc = molt_stream_writer_add(w, &e);
    if (rc == -EINVAL) {
        op_error(op, "instance %s (plugin %s): state_save did not pack exactly one msgpack object (%zu bytes)",
                 inst->cfg->name, inst->dso->desc.name, op->payloads[i].size);
        op->plugin_error = true;
        return -1;
    }
    if (rc < 0) {
        op_error(op, "instance %s: adding its state to the stream failed: %s", inst->cfg->name, strerror(-rc));
        return -1;
    }
    return 0;
}

static void send_done(ho_op_t *op)
{
    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 6);
    molt_mp_pack_kv_bool(&body.pk, "catchup", op->catchup);
    molt_mp_pack_kv_bool(&body.pk, "plugin_error", op->plugin_error);
    molt_mp_pack_kv_u64(&body.pk, "bytes", op->bytes);
    molt_mp_pack_kv_u64(&body.pk, "instances", op->instances);
    molt_mp_pack_kv_u64(&body.pk, "ms", molt_now_ms() - op->t0);
    molt_mp_pack_kv_str(&body.pk, "error", op->err);
    molt_msg_type_t type = op->kind == HO_SAVE ? MOLT_MSG_SAVED : op->kind == HO_DUMP ? MOLT_MSG_DUMPED : MOLT_MSG_RESTORED;
    int rc = molt_chan_send(H.chan, type, &body.sb, NULL, 0);
    if (rc < 0 && rc != -EPIPE)
        molt_warn("handoff: sending %s failed: %s", molt_msg_type_name(type), strerror(-rc));
    molt_body_free(&body);
}

static void save_finish(ho_op_t *op)
{
    uint64_t bytes = op->bytes;
    if (op->kind == HO_SAVE) {
        if (op->err[0])
            molt_error("handoff: saving state failed: %s", op->err);
        else
            molt_info("handoff: %u instance%s saved into %zu stream%s, %llu bytes in %llu ms", op->instances,
                      op->instances == 1 ? "" : "s", op->n, op->n == 1 ? "" : "s", (unsigned long long)bytes,
                      (unsigned long long)(molt_now_ms() - op->t0));
    }
    send_done(op);
    op_free(op);
}

static void stream_fail(ho_stream_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void stream_fail(ho_stream_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
    op_error(s->op, "%s", s->err);
}

static void stream_end(ho_stream_t *s);

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)revents;
    ho_stream_t *s = w->data;
    int rc = molt_stream_writer_write(s->w, s->fd);
    if (rc == 0)
        return;
    if (rc < 0)
        stream_fail(s, "writing the state stream for worker %u failed after %llu of %llu bytes: %s", s->peer,
                    (unsigned long long)molt_stream_writer_written(s->w),
                    (unsigned long long)molt_stream_writer_size(s->w),
                    rc == -EPIPE ? "the reader went away" : strerror(-rc));
    stream_end(s);
}

/* A stream is finished (written, read, or failed): close it; the op ends with its last stream. */
static void restore_finish(ho_op_t *op);

static void stream_end(ho_stream_t *s)
{
    ho_op_t *op = s->op;
    if (s->done)
        return;
    s->done = true;
    stream_close(s);
    op->bytes += s->w ? molt_stream_writer_written(s->w) : s->r ? molt_stream_reader_bytes(s->r) : 0;
    if (--op->pending > 0)
        return;
    if (op->kind == HO_RESTORE)
        restore_finish(op);
    else
        save_finish(op);
}

/* Writes the op's streams from the loop; or, if preparing them failed, writes
 * nothing (each reader sees EOF before a trailer) and answers why. */
static void start_writers(ho_op_t *op)
{
    if (op->err[0]) {
        for (size_t i = 0; i < op->n; i++)
            stream_close(&op->s[i]);
        op->pending = 0;
        save_finish(op);
        return;
    }
    for (size_t i = 0; i < op->n; i++) {
        ho_stream_t *s = &op->s[i];
        ev_io_init(&s->io, on_writable, s->fd, EV_WRITE);
        s->io.data = s;
        ev_io_start(H.loop, &s->io);
    }
    /* Written from the loop as each socket takes more: nothing here, so
     * that a failure ends the op in one place. */
}

void wrk_handoff_on_save(molt_msg_t *msg)
{
    ho_op_t *op = op_new(HO_SAVE);
    if (!op) {
        molt_error("handoff: out of memory for a SAVE");
        return; /* the descriptors close with msg: every reader sees EOF */
    }
    char from_gen[40] = "", to_gen[40] = "";
    molt_msg_get_str(msg, "from_gen", from_gen, sizeof(from_gen));
    molt_msg_get_str(msg, "to_gen", to_gen, sizeof(to_gen));
    molt_msg_get_bool(msg, "catchup", &op->catchup);
    const msgpack_object *arr = op_take_streams(op, msg);
    for (size_t i = 0; arr && i < op->n && !op->err[0]; i++) {
        const msgpack_object *o = &arr->via.array.ptr[i];
        uint64_t to = 0;
        bool part = false, repl = false;
        const msgpack_object *v;
        molt_mp_get_u64(o, "to_slot", &to);
        if ((v = molt_mp_map_get(o, "partitioned")) && v->type == MSGPACK_OBJECT_BOOLEAN)
            part = v->via.boolean;
        if ((v = molt_mp_map_get(o, "replicated")) && v->type == MSGPACK_OBJECT_BOOLEAN)
            repl = v->via.boolean;
        ho_stream_t *s = &op->s[i];
        s->peer = (unsigned)to;
        molt_stream_hdr_t hdr = {.from_slot = H.slot, .to_slot = (uint32_t)to};
        snprintf(hdr.from_gen, sizeof(hdr.from_gen), "%s", from_gen);
        snprintf(hdr.to_gen, sizeof(hdr.to_gen), "%s", to_gen);
        s->w = molt_stream_writer_new(&hdr);
        if (!s->w) {
            op_error(op, "out of memory");
            break;
        }
        for (size_t k = 0; k < H.ps->ninsts && !op->err[0]; k++) {
            const struct molt_instance *inst = &H.ps->insts[k];
            if (!inst_stateful(inst))
                continue;
            bool replicated = inst->dso->desc.flags & MOLT_PLUGIN_REPLICATED;
            if (replicated ? repl : part)
                op_add(op, s->w, k);
        }
        if (!op->err[0] && molt_stream_writer_finish(s->w) < 0)
            op_error(op, "out of memory");
    }
    start_writers(op);
}

void wrk_handoff_on_dump(molt_msg_t *msg)
{
    ho_op_t *op = op_new(HO_DUMP);
    if (!op) {
        molt_error("state dump: out of memory");
        return;
    }
    char name[MOLT_STREAM_NAME_MAX] = "";
    molt_msg_get_str(msg, "name", name, sizeof(name));
    if (msg->nfds != 1) {
        op_error(op, "malformed DUMP message: %zu descriptors", msg->nfds);
    } else {
        op_take_fds(op, msg);
        struct molt_instance *inst = wrk_plugins_find(H.ps, name);
        if (!inst)
            op_error(op, "there is no instance named \"%s\"", name);
        else if (!inst_stateful(inst))
            op_error(op, "instance %s (plugin %s) keeps no state (it has no state_save)", name, inst->dso->desc.name);
        else {
            molt_stream_hdr_t hdr = {.from_slot = H.slot, .to_slot = H.slot};
            op->s[0].w = molt_stream_writer_new(&hdr);
            if (!op->s[0].w || op_add(op, op->s[0].w, (size_t)(inst - H.ps->insts)) < 0 ||
                molt_stream_writer_finish(op->s[0].w) < 0)
                op_error(op, "%s", op->err[0] ? op->err : "out of memory");
        }
    }
    start_writers(op);
}

/* ---- restore ---------------------------------------------------------------------------- */

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)revents;
    ho_stream_t *s = w->data;
    int rc = molt_stream_reader_read(s->r, s->fd);
    if (rc == 0)
        return;
    if (rc < 0)
        stream_fail(s, "the state stream from worker %u of the old generation: %s", s->peer,
                    molt_stream_reader_error(s->r));
    stream_end(s);
}

static void on_restore_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    ho_op_t *op = w->data;
    size_t n = op->n;
    for (size_t i = 0; i < n; i++) {
        ho_stream_t *s = &op->s[i];
        if (s->done)
            continue;
        stream_fail(s, "the state stream from worker %u of the old generation stalled: %llu bytes within "
                       "handoff_timeout_ms (%u ms)",
                    s->peer, (unsigned long long)molt_stream_reader_bytes(s->r), op->timeout_ms);
        bool last = op->pending == 1;
        stream_end(s); /* the last one finishes and frees op */
        if (last)
            return;
    }
}

/* Restores one entry of a complete stream. 0, 1 if dropped, or -1 with why in err.
 * With `replace` (a rollback's hand-back), the instance is reset before its
 * first entry; an instance without state_reset keeps its own state. */
static int restore_entry(const ho_stream_t *s, const molt_stream_entry_t *e, bool replace, char *err,
                         size_t errlen)
{
    struct molt_instance *inst = wrk_plugins_find(H.ps, e->name);
    if (!inst || strcmp(inst->dso->desc.name, e->plugin) != 0 || !inst->dso->desc.state_restore ||
        (replace && !inst->dso->desc.state_reset)) {
        molt_notice("handoff: the state of instance %s (plugin %s %s, %zu bytes, from worker %u) is dropped: %s",
                    e->name, e->plugin, e->version, e->size, s->peer,
                    !inst ? "this generation has no instance of that name"
                    : strcmp(inst->dso->desc.name, e->plugin) ? "that instance is now another plugin"
                    : !inst->dso->desc.state_restore          ? "its plugin has no state_restore"
                        : "its plugin has no state_reset, so it keeps the state it had before the reload");
        return 1;
    }
    const molt_plugin_t *d = &inst->dso->desc;
    if (e->state_version > d->state_version) {
        snprintf(err, errlen,
                 "instance %s: worker %u saved state_version %u (plugin %s %s), newer than this %s %s supports (%u)",
                 e->name, s->peer, e->state_version, e->plugin, e->version, d->name, d->version, d->state_version);
        return -1;
    }
    if (replace && !inst->ho_reset) {
        inst->ho_reset = true;
        wrk_host_current = inst;
        d->state_reset(inst);
        wrk_host_current = NULL;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    if (msgpack_unpack_next(&up, e->data, e->size, &off) != MSGPACK_UNPACK_SUCCESS || off != e->size) {
        msgpack_unpacked_destroy(&up);
        snprintf(err, errlen, "instance %s: the state from worker %u is not one msgpack object", e->name, s->peer);
        return -1;
    }
    char perr[256] = "";
    wrk_host_current = inst;
    int rc = d->state_restore(inst, &up.data, e->state_version, perr, sizeof(perr));
    wrk_host_current = NULL;
    msgpack_unpacked_destroy(&up);
    if (rc != MOLT_OK) {
        snprintf(err, errlen, "instance %s (plugin %s): restoring the state of worker %u failed: %s", e->name,
                 d->name, s->peer, perr[0] ? perr : "state_restore returned an error");
        return -1;
    }
    return 0;
}

static int cmp_peer(const void *a, const void *b)
{
    const ho_stream_t *const *x = a, *const *y = b;
    return (int)(*x)->peer - (int)(*y)->peer;
}

/* Every stream ended: restore what arrived whole, in old-worker order, and tell the supervisor. */
static void restore_finish(ho_op_t *op)
{
    ev_timer_stop(H.loop, &op->timer);
    ho_stream_t *order[MOLT_CHAN_MAX_FDS];
    for (size_t i = 0; i < op->n; i++)
        order[i] = &op->s[i];
    qsort(order, op->n, sizeof(order[0]), cmp_peer);
    char err[512];
    /* A hand-back resets instances: only once every stream arrived whole and
     * every saved state_version is readable here, so that a failure leaves
     * every instance as it was. */
    for (size_t i = 0; op->replace && i < op->n && !op->err[0]; i++) {
        ho_stream_t *s = order[i];
        if (s->err[0]) {
            op_error(op, "%s", s->err);
            break;
        }
        for (size_t k = 0; k < molt_stream_reader_count(s->r); k++) {
            const molt_stream_entry_t *e = molt_stream_reader_entry(s->r, k);
            const struct molt_instance *inst = wrk_plugins_find(H.ps, e->name);
            if (inst && inst->dso->desc.state_reset && e->state_version > inst->dso->desc.state_version) {
                op_error(op, "instance %s: state_version %u from worker %u is newer than this %s %s reads (%u)",
                         e->name, e->state_version, s->peer, inst->dso->desc.name, inst->dso->desc.version,
                         inst->dso->desc.state_version);
                break;
            }
        }
    }
    for (size_t i = 0; i < op->n && (!op->replace || !op->err[0]); i++) {
        ho_stream_t *s = order[i];
        if (s->err[0]) {
            if (!op->fresh)
                break; /* op->err has the first failure */
            molt_warn("handoff: %s; on_restore_error is \"fresh\": what it carried starts fresh", s->err);
            continue;
        }
        for (size_t k = 0; k < molt_stream_reader_count(s->r); k++) {
            int rc = restore_entry(s, molt_stream_reader_entry(s->r, k), op->replace, err, sizeof(err));
            if (rc == 0) {
                op->instances++;
            } else if (rc < 0) {
                if (!op->fresh) {
                    op_error(op, "%s", err);
                    break;
                }
                molt_warn("handoff: %s; on_restore_error is \"fresh\": the instance goes on as it is", err);
            }
        }
        if (op->err[0])
            break;
        molt_stream_reader_free(s->r); /* the payloads are no longer needed */
        s->r = NULL;
    }
    for (size_t i = 0; i < H.ps->ninsts; i++)
        H.ps->insts[i].ho_reset = false;
    if (op->err[0]) {
        op->instances = 0;
        molt_error("handoff: restore failed: %s", op->err);
    } else {
        molt_info("handoff: %u instance state%s restored from %zu stream%s in %llu ms", op->instances,
                  op->instances == 1 ? "" : "s", op->n, op->n == 1 ? "" : "s",
                  (unsigned long long)(molt_now_ms() - op->t0));
    }
    send_done(op);
    op_free(op);
    if (H.restored && !wrk_handoff_restoring())
        H.restored();
}

void wrk_handoff_on_restore(molt_msg_t *msg)
{
    bool busy = wrk_handoff_restoring();
    ho_op_t *op = op_new(HO_RESTORE);
    if (!op) {
        molt_error("handoff: out of memory for a RESTORE");
        return;
    }
    uint64_t timeout_ms = 5000;
    molt_msg_get_u64(msg, "timeout_ms", &timeout_ms);
    molt_msg_get_bool(msg, "fresh", &op->fresh);
    molt_msg_get_bool(msg, "replace", &op->replace);
    op->timeout_ms = (uint32_t)timeout_ms;
    const msgpack_object *arr = busy ? NULL : op_take_streams(op, msg);
    if (busy)
        op_error(op, "a restore is already running in this worker");
    for (size_t i = 0; arr && i < op->n && !op->err[0]; i++) {
        uint64_t from = 0;
        molt_mp_get_u64(&arr->via.array.ptr[i], "from_slot", &from);
        op->s[i].peer = (unsigned)from;
        op->s[i].r = molt_stream_reader_new();
        if (!op->s[i].r)
            op_error(op, "out of memory");
    }
    if (op->err[0]) {
        for (size_t i = 0; i < op->n; i++)
            stream_close(&op->s[i]);
        molt_error("handoff: restore failed: %s", op->err);
        send_done(op);
        op_free(op);
        if (H.restored && !wrk_handoff_restoring())
            H.restored();
        return;
    }
    for (size_t i = 0; i < op->n; i++) {
        ho_stream_t *s = &op->s[i];
        ev_io_init(&s->io, on_readable, s->fd, EV_READ);
        s->io.data = s;
        ev_io_start(H.loop, &s->io);
    }
    ev_timer_init(&op->timer, on_restore_timeout, op->timeout_ms / 1000.0, 0.);
    op->timer.data = op;
    ev_timer_start(H.loop, &op->timer);
}
