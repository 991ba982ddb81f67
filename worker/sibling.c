/*
 * Sibling messages, the worker's side (worker/sibling.h). The supervisor
 * does the routing and the counting (supervisor/sibling.c); a worker keeps,
 * per message it sent, the latest SIBLING_STATUS (which siblings it went to,
 * which applied it, and once it is final, the outcome), and the waits of
 * transactions on it.
 */
#include "worker/sibling.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <msgpack.h>

#include "shared/log.h"
#include "worker/host.h"
#include "worker/plugins.h"

/* A wait with timeout_ms 0 ends at the supervisor's bound (5 s), or at this
 * if the supervisor says nothing at all. */
#define SIB_DEFAULT_WAIT_MS 6000

/* One message this worker sent. */
typedef struct sib_rec {
    struct sib_rec *next, *prev;
    struct molt_instance *inst;
    uint64_t seq;
    bool routed;      /* a SIBLING_STATUS came: targets is known */
    uint64_t targets; /* slots it was forwarded to (bit per slot) */
    uint64_t acked;   /* slots that applied it */
    bool final;
    int rc;             /* once final: MOLT_OK or MOLT_ERROR */
    char error[512];    /* once final with MOLT_ERROR */
    unsigned waiters;   /* waits on it: it is kept while there are any */
} sib_rec_t;

/* One transaction waiting for a message. The timer is first: its callback
 * gets the wait from the watcher's address. */
typedef struct sib_wait {
    ev_timer timer;
    struct sib_wait *next, *prev;
    struct molt_instance *inst;
    struct molt_txn *txn;
    sib_rec_t *rec;
    uint32_t timeout_ms;
    void (*done)(molt_txn_t *txn, int rc, const char *error, void *arg);
    void *arg;
} sib_wait_t;

static struct {
    struct ev_loop *loop;
    int chan;
    unsigned slot;
    unsigned nworkers;
    sib_rec_t *head, *tail; /* oldest first */
    sib_wait_t *waits;
} SB = {.chan = -1};

void wrk_sibling_init(struct ev_loop *loop, int chan, unsigned slot, unsigned nworkers)
{
    SB.loop = loop;
    SB.chan = chan;
    SB.slot = slot;
    SB.nworkers = nworkers;
}

/* ---- records ------------------------------------------------------------------------------ */

static sib_rec_t *rec_new(struct molt_instance *inst, uint64_t seq)
{
    sib_rec_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->inst = inst;
    r->seq = seq;
    r->prev = SB.tail;
    if (SB.tail)
        SB.tail->next = r;
    else
        SB.head = r;
    SB.tail = r;
    return r;
}

static void rec_free(sib_rec_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        SB.head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        SB.tail = r->prev;
    free(r);
}

static sib_rec_t *rec_find(const struct molt_instance *inst, uint64_t seq)
{
    for (sib_rec_t *r = SB.tail; r; r = r->prev)
        if (r->inst == inst && r->seq == seq)
            return r;
    return NULL;
}

/* Forgets the oldest completed messages nobody waits for, beyond the number kept. */
static void rec_trim(void)
{
    size_t idle = 0;
    for (sib_rec_t *r = SB.head; r; r = r->next)
        if (r->final && r->waiters == 0)
            idle++;
    for (sib_rec_t *r = SB.head; r && idle > WRK_SIBLING_KEEP_DONE;) {
        sib_rec_t *next = r->next;
        if (r->final && r->waiters == 0) {
            rec_free(r);
            idle--;
        }
        r = next;
    }
}

/* "worker 1" or "workers 1, 2" for the slots set in mask. */
static void slots_text(uint64_t mask, char *buf, size_t len)
{
    size_t off = (size_t)snprintf(buf, len, "worker%s", (mask & (mask - 1)) ? "s" : "");
    bool first = true;
    for (unsigned i = 0; i < 64 && off < len; i++) {
        if (!(mask & (UINT64_C(1) << i)))
            continue;
        off += (size_t)snprintf(buf + off, len - off, "%s%u", first ? " " : ", ", i);
        first = false;
    }
}

/* ---- waits -------------------------------------------------------------------------------- */

static void wait_unlink(sib_wait_t *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        SB.waits = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    ev_timer_stop(SB.loop, &w->timer);
    w->rec->waiters--;
}

/* Ends a wait: its done callback runs (as its instance), then it is freed. */
static void wait_fire(sib_wait_t *w, int rc, const char *error)
{
    /* A copy: done may send again, and sending may forget old records. */
    char err[sizeof(((sib_rec_t *)0)->error) + 100];
    snprintf(err, sizeof(err), "%s", error ? error : "");
    wait_unlink(w);
    struct molt_instance *saved = wrk_host_current;
    wrk_host_current = w->inst;
    w->done(w->txn, rc, err, w->arg);
    wrk_host_current = saved;
    free(w);
}

/* The wait's timer: the message completed already (timer at 0), or its time ran out. */
static void wait_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    sib_wait_t *w = (sib_wait_t *)t;
    sib_rec_t *r = w->rec;
    char err[600];
    if (r->final) {
        wait_fire(w, r->rc, r->error);
        rec_trim();
        return;
    }
    if (!r->routed) {
        snprintf(err, sizeof(err), "message %llu was not routed to the sibling workers within %u ms",
                 (unsigned long long)r->seq, w->timeout_ms);
    } else {
        char who[256];
        slots_text(r->targets & ~r->acked, who, sizeof(who));
        snprintf(err, sizeof(err), "%s did not apply message %llu within %u ms", who, (unsigned long long)r->seq,
                 w->timeout_ms);
    }
    molt_warn("plugin %s: sibling wait ended: %s", w->inst->cfg->name, err);
    wait_fire(w, MOLT_ERROR, err);
    rec_trim();
}

void wrk_sibling_cancel_txn(struct molt_txn *txn, const char *why)
{
    for (sib_wait_t *w = SB.waits, *next; w; w = next) {
        next = w->next;
        if (w->txn != txn)
            continue;
        if (why)
            molt_warn("plugin %s: a transaction %s while it waited for sibling message %llu: the wait is "
                      "cancelled (return MOLT_SUSPEND after molt_sibling_wait)",
                      w->inst->cfg->name, why, (unsigned long long)w->rec->seq);
        else
            molt_info("plugin %s: the wait for sibling message %llu is cancelled: its transaction was aborted",
                      w->inst->cfg->name, (unsigned long long)w->rec->seq);
        wait_unlink(w);
        free(w);
    }
    rec_trim();
}

void wrk_sibling_fini(void)
{
    while (SB.waits) {
        sib_wait_t *w = SB.waits;
        wait_unlink(w);
        free(w);
    }
    while (SB.head)
        rec_free(SB.head);
    SB.chan = -1;
    SB.loop = NULL;
}

/* ---- host API ----------------------------------------------------------------------------- */

int wrk_sibling_send(struct molt_instance *inst, const void *msg, size_t len, uint64_t *seq)
{
    const char *name = inst->cfg->name;
    if (!msg || len == 0 || len > MOLT_SIBLING_MAX_MSG) {
        molt_warn("plugin %s: sibling_send refused: the message is %zu bytes (1 to %d)", name, len,
                  MOLT_SIBLING_MAX_MSG);
        return MOLT_ERROR;
    }
    if (!molt_mp_check_object(msg, len)) {
        molt_warn("plugin %s: sibling_send refused: the message is not exactly one msgpack object", name);
        return MOLT_ERROR;
    }
    if (!SB.loop) {
        molt_warn("plugin %s: sibling_send refused: the worker is not serving", name);
        return MOLT_ERROR;
    }
    uint64_t n = inst->sib_seq + 1;
    sib_rec_t *r = rec_new(inst, n);
    if (!r) {
        molt_warn("plugin %s: sibling_send: out of memory", name);
        return MOLT_ERROR;
    }
    if (SB.nworkers > 1) {
        molt_body_t body;
        molt_body_init(&body);
        msgpack_pack_map(&body.pk, 3);
        molt_mp_pack_kv_str(&body.pk, "instance", name);
        molt_mp_pack_kv_u64(&body.pk, "seq", n);
        molt_mp_pack_str(&body.pk, "msg");
        msgpack_pack_bin(&body.pk, len);
        msgpack_pack_bin_body(&body.pk, msg, len);
        int rc = molt_chan_send(SB.chan, MOLT_MSG_SIBLING_SEND, &body.sb, NULL, 0);
        molt_body_free(&body);
        if (rc < 0) {
            molt_warn("plugin %s: sibling_send: the supervisor cannot take message %llu: %s", name,
                      (unsigned long long)n, strerror(-rc));
            rec_free(r);
            return MOLT_ERROR;
        }
    } else {
        /* No sibling: complete, and applied everywhere it needs to be. */
        r->routed = true;
        r->final = true;
        r->rc = MOLT_OK;
        rec_trim();
    }
    inst->sib_seq = n;
    if (seq)
        *seq = n;
    return MOLT_OK;
}

int wrk_sibling_wait(struct molt_instance *inst, struct molt_txn *txn, uint64_t seq, uint32_t timeout_ms,
                     void (*done)(molt_txn_t *txn, int rc, const char *error, void *arg), void *arg)
{
    const char *name = inst->cfg->name;
    if (!txn || !done) {
        molt_warn("plugin %s: sibling_wait needs a transaction and a done callback", name);
        return MOLT_ERROR;
    }
    sib_rec_t *r = rec_find(inst, seq);
    if (!r) {
        molt_warn("plugin %s: sibling_wait refused: message %llu %s", name, (unsigned long long)seq,
                  seq > inst->sib_seq || seq == 0 ? "was not sent by this instance"
                                                  : "completed too long ago to be remembered");
        return MOLT_ERROR;
    }
    sib_wait_t *w = calloc(1, sizeof(*w));
    if (!w) {
        molt_warn("plugin %s: sibling_wait: out of memory", name);
        return MOLT_ERROR;
    }
    w->inst = inst;
    w->txn = txn;
    w->rec = r;
    w->timeout_ms = timeout_ms ? timeout_ms : SIB_DEFAULT_WAIT_MS;
    w->done = done;
    w->arg = arg;
    r->waiters++;
    w->next = SB.waits;
    if (w->next)
        w->next->prev = w;
    SB.waits = w;
    /* A message complete already ends the wait on the next loop iteration:
     * done never runs inside sibling_wait. */
    ev_timer_init(&w->timer, wait_timer_cb, r->final ? 0. : w->timeout_ms / 1000.0, 0.);
    ev_now_update(SB.loop);
    ev_timer_start(SB.loop, &w->timer);
    return MOLT_OK;
}

/* ---- channel ------------------------------------------------------------------------------ */

static void send_ack(const char *instance, uint64_t seq, uint64_t origin, bool ok, const char *error)
{
    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 5);
    molt_mp_pack_kv_str(&body.pk, "instance", instance);
    molt_mp_pack_kv_u64(&body.pk, "seq", seq);
    molt_mp_pack_kv_u64(&body.pk, "origin", origin);
    molt_mp_pack_kv_bool(&body.pk, "ok", ok);
    molt_mp_pack_kv_str(&body.pk, "error", error);
    int rc = molt_chan_send(SB.chan, MOLT_MSG_SIBLING_ACK, &body.sb, NULL, 0);
    molt_body_free(&body);
    if (rc < 0 && rc != -EPIPE)
        molt_warn("sending SIBLING_ACK for message %llu of worker %llu failed: %s", (unsigned long long)seq,
                  (unsigned long long)origin, strerror(-rc));
}

void wrk_sibling_on_msg(const molt_msg_t *msg)
{
    char instance[128] = "";
    uint64_t seq = 0, from = 0;
    const msgpack_object *m = molt_msg_get(msg, "msg");
    if (!molt_msg_get_str(msg, "instance", instance, sizeof(instance)) || !molt_msg_get_u64(msg, "seq", &seq) ||
        !molt_msg_get_u64(msg, "from", &from)) {
        molt_error("SIBLING message without instance, seq and from; ignored");
        return;
    }
    struct molt_instance *inst = wrk_host_plugins ? wrk_plugins_find(wrk_host_plugins, instance) : NULL;
    if (!inst) {
        send_ack(instance, seq, from, false, "no such instance");
        return;
    }
    if (!inst->dso->desc.sibling_recv) {
        send_ack(instance, seq, from, false, "the plugin has no sibling_recv");
        return;
    }
    if (!m || m->type != MSGPACK_OBJECT_BIN || !molt_mp_check_object(m->via.bin.ptr, m->via.bin.size)) {
        send_ack(instance, seq, from, false, "the message is not one msgpack object");
        return;
    }
    msgpack_unpacked up;
    size_t off = 0;
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, m->via.bin.ptr, m->via.bin.size, &off) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(&up);
        send_ack(instance, seq, from, false, "the message could not be decoded");
        return;
    }
    struct molt_instance *saved = wrk_host_current;
    wrk_host_current = inst;
    int rc = inst->dso->desc.sibling_recv(inst, &up.data, (unsigned)from);
    wrk_host_current = saved;
    msgpack_unpacked_destroy(&up);
    if (rc == MOLT_OK) {
        send_ack(instance, seq, from, true, "");
    } else {
        molt_warn("plugin %s: sibling_recv did not apply message %llu of worker %llu (returned %d)", instance,
                  (unsigned long long)seq, (unsigned long long)from, rc);
        send_ack(instance, seq, from, false, "sibling_recv failed");
    }
}

/* An array of slot numbers as a mask. */
static uint64_t slot_mask(const molt_msg_t *msg, const char *key)
{
    uint64_t mask = 0;
    const msgpack_object *a = molt_msg_get(msg, key);
    if (!a || a->type != MSGPACK_OBJECT_ARRAY)
        return 0;
    for (uint32_t i = 0; i < a->via.array.size; i++)
        if (a->via.array.ptr[i].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a->via.array.ptr[i].via.u64 < 64)
            mask |= UINT64_C(1) << a->via.array.ptr[i].via.u64;
    return mask;
}

void wrk_sibling_on_status(const molt_msg_t *msg)
{
    char instance[128] = "";
    uint64_t seq = 0;
    bool final = false;
    if (!molt_msg_get_str(msg, "instance", instance, sizeof(instance)) || !molt_msg_get_u64(msg, "seq", &seq)) {
        molt_error("SIBLING_STATUS message without instance and seq; ignored");
        return;
    }
    struct molt_instance *inst = wrk_host_plugins ? wrk_plugins_find(wrk_host_plugins, instance) : NULL;
    sib_rec_t *r = inst ? rec_find(inst, seq) : NULL;
    if (!r || r->final)
        return; /* forgotten already, or a status after the final one */
    molt_msg_get_bool(msg, "final", &final);
    r->routed = true;
    r->targets = slot_mask(msg, "targets");
    r->acked = slot_mask(msg, "acked");
    if (!final)
        return;
    r->final = true;
    r->error[0] = '\0';
    molt_msg_get_str(msg, "error", r->error, sizeof(r->error));
    r->rc = r->error[0] ? MOLT_ERROR : MOLT_OK;
    if (r->rc != MOLT_OK)
        molt_warn("plugin %s: sibling message %llu failed: %s", instance, (unsigned long long)seq, r->error);
    /* A done callback may resume its transaction, which may send and wait
     * again: look for the next wait on r from the start each time, with r
     * pinned (a record with waiters is never forgotten). */
    r->waiters++;
    for (;;) {
        sib_wait_t *w = SB.waits;
        while (w && w->rec != r)
            w = w->next;
        if (!w)
            break;
        wait_fire(w, r->rc, r->error);
    }
    r->waiters--;
    rec_trim();
}
