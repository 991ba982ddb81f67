/*
 * Sibling messages, the supervisor's side: a worker's SIBLING_SEND goes to
 * every other running worker of its generation as SIBLING; their
 * SIBLING_ACKs are counted per (generation, origin worker, instance, seq),
 * and the origin hears where its message stands (SIBLING_STATUS) when it is
 * routed, after each ack, and finally: every target applied it, one refused
 * it, one died before answering, or SUP_SIBLING_DEADLINE_MS passed.
 *
 * The supervisor never looks inside a message: it is the plugin's msgpack,
 * carried as a bin.
 */
#include "supervisor/sibling.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/chan.h"
#include "shared/log.h"
#include "shared/util.h"
#include "supervisor/upgrade.h"

#define SIB_BIT(slot) (UINT64_C(1) << (slot))

/* One message in flight. The timer is first: its callback gets the entry from the watcher's address. */
typedef struct sup_sib {
    ev_timer deadline;
    struct sup_sib *next, *prev;
    sup_gen_t *gen;
    unsigned origin;  /* the sender's slot */
    pid_t origin_pid; /* and its process: a successor in that slot is someone else */
    char instance[128];
    uint64_t seq;
    uint64_t targets, acked;
    pid_t target_pid[MOLT_CONFIG_MAX_WORKERS];
} sup_sib_t;

static sup_sib_t *sibs;
static unsigned nsibs;
static uint64_t nrouted; /* messages routed, for the log at stop */

/* "worker 1" or "workers 1, 2". */
static void slots_text(uint64_t mask, char *buf, size_t len)
{
    size_t off = (size_t)snprintf(buf, len, "worker%s", (mask & (mask - 1)) ? "s" : "");
    bool first = true;
    for (unsigned i = 0; i < 64 && off < len; i++) {
        if (!(mask & SIB_BIT(i)))
            continue;
        off += (size_t)snprintf(buf + off, len - off, "%s%u", first ? " " : ", ", i);
        first = false;
    }
}

static void pack_slots(msgpack_packer *pk, const char *key, uint64_t mask)
{
    unsigned n = 0;
    for (unsigned i = 0; i < 64; i++)
        n += (mask & SIB_BIT(i)) != 0;
    molt_mp_pack_str(pk, key);
    msgpack_pack_array(pk, n);
    for (unsigned i = 0; i < 64; i++)
        if (mask & SIB_BIT(i))
            msgpack_pack_uint32(pk, i);
}

/* The running process of gen's slot whose pid is `pid` (0: any), or NULL. */
static sup_proc_t *proc_of(const sup_gen_t *gen, unsigned slot, pid_t pid)
{
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        sup_proc_t *p = &S.procs[i];
        if (p->state != SUP_W_EMPTY && p->gen == gen && p->slot == slot && p->pid > 0 && p->chan >= 0 &&
            (pid == 0 || p->pid == pid))
            return p;
    }
    return NULL;
}

/* Tells the origin where its message stands. */
static void send_status(sup_proc_t *to, const char *instance, uint64_t seq, uint64_t targets, uint64_t acked,
                        bool final, const char *error)
{
    if (!to)
        return;
    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 7);
    molt_mp_pack_kv_str(&body.pk, "instance", instance);
    molt_mp_pack_kv_u64(&body.pk, "seq", seq);
    pack_slots(&body.pk, "targets", targets);
    pack_slots(&body.pk, "acked", acked);
    pack_slots(&body.pk, "missing", final ? targets & ~acked : 0);
    molt_mp_pack_kv_bool(&body.pk, "final", final);
    molt_mp_pack_kv_str(&body.pk, "error", error ? error : "");
    int rc = molt_chan_send(to->chan, MOLT_MSG_SIBLING_STATUS, &body.sb, NULL, 0);
    molt_body_free(&body);
    if (rc < 0 && rc != -EPIPE)
        molt_warn("worker %u (pid %d): sending SIBLING_STATUS for message %llu of %s failed: %s", to->slot,
                  (int)to->pid, (unsigned long long)seq, instance, strerror(-rc));
}

static void sib_free(sup_sib_t *e)
{
    ev_timer_stop(S.loop, &e->deadline);
    if (e->prev)
        e->prev->next = e->next;
    else
        sibs = e->next;
    if (e->next)
        e->next->prev = e->prev;
    nsibs--;
    free(e);
}

/* The message is complete: the origin hears the outcome ("" error: success); the entry goes. */
static void sib_finish(sup_sib_t *e, const char *error)
{
    if (error && error[0])
        molt_warn("generation %llu: sibling message %llu of %s from worker %u: %s",
                  (unsigned long long)e->gen->number, (unsigned long long)e->seq, e->instance, e->origin, error);
    send_status(proc_of(e->gen, e->origin, e->origin_pid), e->instance, e->seq, e->targets, e->acked, true,
                error);
    sib_free(e);
}

static void sib_on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    sup_sib_t *e = (sup_sib_t *)w;
    char who[256], err[512];
    slots_text(e->targets & ~e->acked, who, sizeof(who));
    snprintf(err, sizeof(err), "%s did not apply message %llu within %u ms", who, (unsigned long long)e->seq,
             SUP_SIBLING_DEADLINE_MS);
    sib_finish(e, err);
}

void sup_sib_on_send(sup_proc_t *p, const molt_msg_t *msg)
{
    char instance[128] = "";
    uint64_t seq = 0;
    const msgpack_object *m = molt_msg_get(msg, "msg");
    if (!molt_msg_get_str(msg, "instance", instance, sizeof(instance)) || !molt_msg_get_u64(msg, "seq", &seq) ||
        !m || m->type != MSGPACK_OBJECT_BIN) {
        molt_error("worker %u (pid %d): SIBLING_SEND without instance, seq and msg; ignored", p->slot, (int)p->pid);
        return;
    }
    if (nsibs >= SUP_SIBLING_MAX_INFLIGHT) {
        char err[160];
        snprintf(err, sizeof(err), "message %llu refused: %u sibling messages are in flight already",
                 (unsigned long long)seq, nsibs);
        send_status(p, instance, seq, 0, 0, true, err);
        return;
    }
    sup_sib_t *e = calloc(1, sizeof(*e));
    if (!e) {
        send_status(p, instance, seq, 0, 0, true, "the supervisor is out of memory");
        return;
    }
    e->gen = p->gen;
    e->origin = p->slot;
    e->origin_pid = p->pid;
    snprintf(e->instance, sizeof(e->instance), "%s", instance);
    e->seq = seq;

    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 4);
    molt_mp_pack_kv_str(&body.pk, "instance", instance);
    molt_mp_pack_kv_u64(&body.pk, "seq", seq);
    molt_mp_pack_kv_u64(&body.pk, "from", p->slot);
    molt_mp_pack_str(&body.pk, "msg");
    msgpack_pack_bin(&body.pk, m->via.bin.size);
    msgpack_pack_bin_body(&body.pk, m->via.bin.ptr, m->via.bin.size);
    char failed[512] = "";
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        sup_proc_t *q = &S.procs[i];
        if (q == p || q->gen != p->gen || q->slot == p->slot || q->slot >= 64 || q->pid <= 0 || q->chan < 0 ||
            (q->state != SUP_W_READY && q->state != SUP_W_DRAINING))
            continue;
        int rc = molt_chan_send(q->chan, MOLT_MSG_SIBLING, &body.sb, NULL, 0);
        e->targets |= SIB_BIT(q->slot);
        e->target_pid[q->slot] = q->pid;
        if (rc < 0 && !failed[0])
            snprintf(failed, sizeof(failed), "worker %u could not be sent message %llu: %s", q->slot,
                     (unsigned long long)seq, strerror(-rc));
    }
    molt_body_free(&body);
    nrouted++;

    e->next = sibs;
    if (sibs)
        sibs->prev = e;
    sibs = e;
    nsibs++;
    ev_timer_init(&e->deadline, sib_on_deadline, SUP_SIBLING_DEADLINE_MS / 1000.0, 0.);
    if (failed[0] || e->targets == 0) {
        sib_finish(e, failed); /* nobody to wait for, or one already failed */
        return;
    }
    ev_timer_start(S.loop, &e->deadline);
    send_status(p, instance, seq, e->targets, 0, false, NULL);
}

static sup_sib_t *sib_find(const sup_gen_t *gen, unsigned origin, const char *instance, uint64_t seq)
{
    for (sup_sib_t *e = sibs; e; e = e->next)
        if (e->gen == gen && e->origin == origin && e->seq == seq && strcmp(e->instance, instance) == 0)
            return e;
    return NULL;
}

void sup_sib_on_ack(sup_proc_t *p, const molt_msg_t *msg)
{
    char instance[128] = "", error[256] = "";
    uint64_t seq = 0, origin = 0;
    bool ok = false;
    if (!molt_msg_get_str(msg, "instance", instance, sizeof(instance)) || !molt_msg_get_u64(msg, "seq", &seq) ||
        !molt_msg_get_u64(msg, "origin", &origin) || !molt_msg_get_bool(msg, "ok", &ok)) {
        molt_error("worker %u (pid %d): SIBLING_ACK without instance, seq, origin and ok; ignored", p->slot,
                   (int)p->pid);
        return;
    }
    molt_msg_get_str(msg, "error", error, sizeof(error));
    sup_sib_t *e = origin < 64 ? sib_find(p->gen, (unsigned)origin, instance, seq) : NULL;
    if (!e || p->slot >= 64 || !(e->targets & SIB_BIT(p->slot)) || e->target_pid[p->slot] != p->pid)
        return; /* complete already (failed, or past its deadline): nothing to add */
    if (!ok) {
        char err[512];
        snprintf(err, sizeof(err), "worker %u failed to apply message %llu: %s", p->slot, (unsigned long long)seq,
                 error[0] ? error : "refused");
        sib_finish(e, err);
        return;
    }
    e->acked |= SIB_BIT(p->slot);
    if (e->acked == e->targets) {
        sib_finish(e, NULL);
        return;
    }
    send_status(proc_of(e->gen, e->origin, e->origin_pid), e->instance, e->seq, e->targets, e->acked, false,
                NULL);
}

void sup_sib_on_proc_gone(const sup_proc_t *p)
{
    for (sup_sib_t *e = sibs, *next; e; e = next) {
        next = e->next;
        if (e->gen != p->gen)
            continue;
        if (e->origin == p->slot && e->origin_pid == p->pid) {
            sib_free(e); /* nobody left to tell */
            continue;
        }
        if (p->slot < 64 && (e->targets & ~e->acked & SIB_BIT(p->slot)) && e->target_pid[p->slot] == p->pid) {
            char err[512];
            snprintf(err, sizeof(err), "worker %u died before applying message %llu: %s", p->slot,
                     (unsigned long long)e->seq, p->last_exit[0] ? p->last_exit : "its process ended");
            sib_finish(e, err);
        }
    }
}

void sup_sib_free_all(void)
{
    if (nrouted)
        molt_info("%llu sibling message%s routed", (unsigned long long)nrouted, nrouted == 1 ? "" : "s");
    while (sibs)
        sib_free(sibs);
}

/* ---- upgrade: messages in flight (routed already; their acks arrive after the exec) --------- */

unsigned sup_sib_upgrade_count(void)
{
    return 1;
}

void sup_sib_upgrade_pack(msgpack_packer *pk)
{
    molt_mp_pack_str(pk, "siblings");
    msgpack_pack_map(pk, 2);
    molt_mp_pack_kv_u64(pk, "routed", nrouted);
    molt_mp_pack_str(pk, "msgs");
    msgpack_pack_array(pk, nsibs);
    for (const sup_sib_t *e = sibs; e; e = e->next) {
        msgpack_pack_map(pk, 9);
        molt_mp_pack_kv_u64(pk, "gen", e->gen->number);
        molt_mp_pack_kv_u64(pk, "origin", e->origin);
        sup_up_pack_i64(pk, "origin_pid", e->origin_pid);
        molt_mp_pack_kv_str(pk, "instance", e->instance);
        molt_mp_pack_kv_u64(pk, "seq", e->seq);
        molt_mp_pack_kv_u64(pk, "targets", e->targets);
        molt_mp_pack_kv_u64(pk, "acked", e->acked);
        molt_mp_pack_str(pk, "target_pid");
        msgpack_pack_array(pk, MOLT_CONFIG_MAX_WORKERS);
        for (int i = 0; i < MOLT_CONFIG_MAX_WORKERS; i++)
            msgpack_pack_int64(pk, e->target_pid[i]);
        molt_mp_pack_kv_u64(pk, "left_ms", (uint64_t)(ev_timer_remaining(S.loop, (ev_timer *)&e->deadline) * 1000.0));
    }
}

bool sup_sib_upgrade_unpack(sup_up_rd_t *rd, const msgpack_object *top)
{
    const msgpack_object *o = sup_up_map(rd, top, "siblings");
    sup_up_u64(rd, o, "routed", &nrouted);
    const msgpack_object *msgs = sup_up_array(rd, o, "msgs");
    for (uint32_t k = 0; msgs && !rd->failed && k < msgs->via.array.size; k++) {
        const msgpack_object *m = &msgs->via.array.ptr[k];
        uint64_t gen = 0, origin = 0, left = 0;
        int64_t origin_pid = 0;
        sup_sib_t *e = calloc(1, sizeof(*e));
        if (!e) {
            sup_up_fail(rd, "siblings: out of memory");
            break;
        }
        sup_up_u64(rd, m, "gen", &gen);
        sup_up_u64(rd, m, "origin", &origin);
        sup_up_i64(rd, m, "origin_pid", &origin_pid);
        sup_up_str(rd, m, "instance", e->instance, sizeof(e->instance));
        sup_up_u64(rd, m, "seq", &e->seq);
        sup_up_u64(rd, m, "targets", &e->targets);
        sup_up_u64(rd, m, "acked", &e->acked);
        sup_up_u64(rd, m, "left_ms", &left);
        const msgpack_object *pids = sup_up_array(rd, m, "target_pid");
        if (!rd->failed && (!(e->gen = sup_gen_by_number(gen)) || origin >= MOLT_CONFIG_MAX_WORKERS ||
                            pids->via.array.size != MOLT_CONFIG_MAX_WORKERS))
            sup_up_fail(rd, "siblings: message %u: of no generation, or out of range", k);
        for (uint32_t i = 0; !rd->failed && i < MOLT_CONFIG_MAX_WORKERS; i++) {
            const msgpack_object *v = &pids->via.array.ptr[i];
            e->target_pid[i] = v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (pid_t)v->via.u64 : 0;
        }
        if (rd->failed) {
            free(e);
            break;
        }
        e->origin = (unsigned)origin;
        e->origin_pid = (pid_t)origin_pid;
        e->next = sibs;
        if (sibs)
            sibs->prev = e;
        sibs = e;
        nsibs++;
        ev_timer_init(&e->deadline, sib_on_deadline, left / 1000.0, 0.);
        ev_timer_start(S.loop, &e->deadline);
    }
    return !rd->failed;
}
