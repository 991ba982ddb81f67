/*
 * A reload's handoff phase, supervisor side (SPEC §6): the old generation
 * stops accepting and closes its connections politely; each of its workers
 * writes its plugins' state into socketpairs that the supervisor creates
 * and hands out, and each new worker reads and restores what it is given
 * (worker/handoff.c). Once every new worker has restored, the reload goes
 * on to verify, and the new generation starts accepting (RESUME,
 * sup_handoff_accept) once its health checks passed.
 *
 *   not strict:  PAUSE{close} to the old workers, SAVE at once
 *   strict:      PAUSE{close}, then SAVE only once every old worker said
 *                QUIESCED (no connection left anywhere in the old
 *                generation, so no acknowledged write can follow a snapshot:
 *                a replicated write waits on its connection until every
 *                sibling applied it)
 *
 * Which old worker's state each new worker gets, with N_old and N_new
 * workers: new i gets a "partitioned" stream from every old j with
 * j mod N_new = i, and a "replicated" stream from old i mod N_old (one
 * stream when both are the same worker), or from another old worker when
 * that one is not running or still catching up (repl_source). The old
 * worker's plugins decide which of their instances go in which.
 *
 * The supervisor never reads a stream: it only pairs sockets, counts
 * SAVED / RESTORED answers and watches the clock and the deaths.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shared/chan.h"
#include "shared/log.h"
#include "shared/util.h"
#include "supervisor/metrics.h"
#include "supervisor/sup.h"
#include "supervisor/upgrade.h"

/* The supervisor's own bound is the workers' handoff_timeout_ms plus this. */
#define HO_MARGIN_MS 1000
/* When every new worker answered and one failed, how long the old workers'
 * SAVED still have to say whether a plugin's save caused it. */
#define HO_CAUSE_WAIT_MS 250
/* Socket buffers asked for each stream (the kernel caps them at wmem_max / rmem_max). */
#define HO_SOCKBUF (4 * 1024 * 1024)

typedef struct ho_old {
    sup_proc_t *p; /* NULL: not taking part (not running when the handoff began, or died) */
    pid_t pid;
    bool quiesced;
    unsigned saves;       /* SAVE messages sent, SAVED not yet received */
    uint64_t bytes, ms;
    unsigned instances;
} ho_old_t;

typedef struct ho_new {
    sup_proc_t *p;
    pid_t pid;
    bool restoring;       /* RESTORE sent, RESTORED not yet received */
    unsigned streams;
    uint64_t bytes, ms;
    unsigned instances;
} ho_new_t;

static struct {
    bool running;
    bool back;             /* a rollback's hand-back: old is the generation rolled back, gen the one resuming */
    bool saving;           /* SAVE messages are out */
    sup_gen_t *old, *gen;
    bool strict, fresh;
    uint64_t t0;           /* monotonic ms: the old generation was paused */
    ho_old_t old_w[MOLT_CONFIG_MAX_WORKERS];
    ho_new_t new_w[MOLT_CONFIG_MAX_WORKERS];
    ev_timer timer;
    ev_timer cause_w;       /* HO_CAUSE_WAIT_MS */
    char save_err[1024];    /* the first SAVED error that a plugin caused (its save failed) */
    char io_err[1024];      /* the first SAVED error of a stream (the reader went away) */
    char restore_err[1024]; /* the first RESTORED error */
    json_t *last;           /* figures of the last handoff that finished */
    json_t *back_last;      /* figures of the last hand-back that finished */
} HO;

static bool proc_live(const sup_proc_t *p, const sup_gen_t *gen)
{
    return p->state == SUP_W_READY && p->gen == gen && p->pid > 0 && p->chan >= 0;
}

static void ho_fail(const char *reason)
{
    ev_timer_stop(S.loop, &HO.timer);
    ev_timer_stop(S.loop, &HO.cause_w);
    HO.running = false;
    if (HO.back)
        sup_reload_on_handback(false, reason);
    else
        sup_reload_on_handoff(false, reason);
}

/* Figures of a finished handoff, for the reload's outcome and status. */
static json_t *ho_figures(void)
{
    json_t *news = json_array(), *olds = json_array();
    uint64_t bytes = 0;
    for (unsigned i = 0; i < HO.gen->nworkers; i++) {
        const ho_new_t *n = &HO.new_w[i];
        if (!n->p)
            continue;
        bytes += n->bytes;
        json_array_append_new(news, json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "slot", (json_int_t)i, "pid",
                                              (json_int_t)n->pid, "streams", (json_int_t)n->streams, "bytes",
                                              (json_int_t)n->bytes, "instances", (json_int_t)n->instances, "ms",
                                              (json_int_t)n->ms));
    }
    for (unsigned j = 0; j < HO.old->nworkers; j++) {
        const ho_old_t *o = &HO.old_w[j];
        if (!o->pid)
            continue;
        json_array_append_new(olds, json_pack("{s:I,s:I,s:I,s:I,s:I}", "slot", (json_int_t)j, "pid",
                                              (json_int_t)o->pid, "bytes", (json_int_t)o->bytes, "instances",
                                              (json_int_t)o->instances, "ms", (json_int_t)o->ms));
    }
    return json_pack("{s:s,s:I,s:I,s:o,s:o}", "mode", HO.strict ? "strict" : "snapshot", "bytes", (json_int_t)bytes,
                     "accept_pause_ms", (json_int_t)(molt_now_ms() - HO.t0), "new_workers", news, "old_workers",
                     olds);
}

static void ho_decide(void);

static void on_cause_wait(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    ho_decide();
}

/*
 * Called at each answer. Once every new worker answered, every stream was
 * read to its end or given up: decide as soon as every old worker said
 * SAVED too (which usually follows within microseconds), or after
 * HO_CAUSE_WAIT_MS at most (an old worker still stuck in a plugin's save).
 */
static void ho_check_done(void)
{
    if (!HO.running || !HO.saving)
        return;
    for (unsigned i = 0; i < HO.gen->nworkers; i++)
        if (HO.new_w[i].restoring)
            return;
    for (unsigned j = 0; j < HO.old->nworkers; j++) {
        if (HO.old_w[j].p && HO.old_w[j].saves) {
            if (!ev_is_active(&HO.cause_w)) {
                ev_timer_init(&HO.cause_w, on_cause_wait, HO_CAUSE_WAIT_MS / 1000.0, 0.);
                ev_timer_start(S.loop, &HO.cause_w);
            }
            return;
        }
    }
    ho_decide();
}

/* Fail with the most telling reason, or let the new generation accept. */
static void ho_decide(void)
{
    ev_timer_stop(S.loop, &HO.cause_w);
    /* A plugin's failed save explains a restore error (the reader saw its
     * stream end early), and a restore error explains a write error (the
     * reader stopped reading). With on_restore_error "fresh" the new workers
     * already went on without what failed. */
    const char *reason = HO.save_err[0] && !HO.fresh ? HO.save_err
                         : HO.restore_err[0]         ? HO.restore_err
                         : HO.io_err[0] && !HO.fresh ? HO.io_err
                                                     : NULL;
    if (reason) {
        char copy[1100];
        snprintf(copy, sizeof(copy), "%s", reason);
        ho_fail(copy);
        return;
    }
    if (HO.save_err[0] || HO.io_err[0])
        molt_warn("handoff: %s; on_restore_error is \"fresh\": going on", HO.save_err[0] ? HO.save_err : HO.io_err);
    ev_timer_stop(S.loop, &HO.timer);
    HO.running = false;
    if (HO.back) {
        json_decref(HO.back_last);
        HO.back_last = ho_figures();
        sup_metrics_on_state_bytes("handback",
                                   (uint64_t)json_integer_value(json_object_get(HO.back_last, "bytes")));
        molt_info("hand-back: done in %llu ms (%llu bytes of state)", (unsigned long long)(molt_now_ms() - HO.t0),
                  (unsigned long long)json_integer_value(json_object_get(HO.back_last, "bytes")));
        sup_reload_on_handback(true, NULL);
        return;
    }
    json_decref(HO.last);
    HO.last = ho_figures();
    sup_metrics_on_state_bytes("handoff", (uint64_t)json_integer_value(json_object_get(HO.last, "bytes")));
    molt_info("handoff: done in %llu ms (%llu bytes of state); health checks next",
              (unsigned long long)(molt_now_ms() - HO.t0),
              (unsigned long long)json_integer_value(json_object_get(HO.last, "bytes")));
    sup_reload_on_handoff(true, NULL);
}

/*
 * The new generation restored its state and passed its health checks: it
 * accepts (RESUME). Not before: a generation that fails its health check
 * must not have taken a write that the rollback would lose. The old
 * generation accepts nothing since PAUSE, and every new worker restored
 * from a stream that an old worker wrote after it paused: the new
 * generation takes over with no moment where both accept.
 */
void sup_handoff_accept(sup_gen_t *gen)
{
    sup_gen_pause(gen, false, false);
    uint64_t pause_ms = molt_now_ms() - HO.t0;
    if (HO.last && HO.gen == gen)
        json_object_set_new(HO.last, "accept_pause_ms", json_integer((json_int_t)pause_ms));
    molt_info("the new generation accepts (%llu ms after the old one stopped)", (unsigned long long)pause_ms);
}

static int stream_pair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    int sz = HO_SOCKBUF;
    /* Best effort: bigger buffers mean fewer wake-ups for a large state. */
    (void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    (void)setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    return 0;
}

typedef struct ho_link {
    unsigned from, to;
    bool part, repl;
    int wfd, rfd;
} ho_link_t;

/* Sends SAVE to `to` (an old worker, or a catch-up's sibling) with links[0..n) (n <= MOLT_CHAN_MAX_FDS). */
static int send_save(const sup_proc_t *to, const sup_gen_t *from_gen, const sup_gen_t *to_gen, bool catchup,
                     const ho_link_t *const *links, size_t n)
{
    molt_body_t body;
    int fds[MOLT_CHAN_MAX_FDS];
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 4);
    molt_mp_pack_kv_str(&body.pk, "from_gen", from_gen->id);
    molt_mp_pack_kv_str(&body.pk, "to_gen", to_gen->id);
    molt_mp_pack_kv_bool(&body.pk, "catchup", catchup);
    molt_mp_pack_str(&body.pk, "streams");
    msgpack_pack_array(&body.pk, n);
    for (size_t k = 0; k < n; k++) {
        msgpack_pack_map(&body.pk, 3);
        molt_mp_pack_kv_u64(&body.pk, "to_slot", links[k]->to);
        molt_mp_pack_kv_bool(&body.pk, "partitioned", links[k]->part);
        molt_mp_pack_kv_bool(&body.pk, "replicated", links[k]->repl);
        fds[k] = links[k]->wfd;
    }
    int rc = molt_chan_send(to->chan, MOLT_MSG_SAVE, &body.sb, fds, n);
    molt_body_free(&body);
    return rc;
}

/* Sends RESTORE to `to` (a new worker, a respawned one catching up, or with
 * `replace` an old one taking a rollback's hand-back) with links[0..n). */
static int send_restore(const sup_proc_t *to, bool fresh, bool replace, const ho_link_t *const *links, size_t n)
{
    molt_body_t body;
    int fds[MOLT_CHAN_MAX_FDS];
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 4);
    molt_mp_pack_kv_u64(&body.pk, "timeout_ms", to->gen->cfg->reload.handoff_timeout_ms);
    molt_mp_pack_kv_bool(&body.pk, "fresh", fresh);
    molt_mp_pack_kv_bool(&body.pk, "replace", replace);
    molt_mp_pack_str(&body.pk, "streams");
    msgpack_pack_array(&body.pk, n);
    for (size_t k = 0; k < n; k++) {
        msgpack_pack_map(&body.pk, 1);
        molt_mp_pack_kv_u64(&body.pk, "from_slot", links[k]->from);
        fds[k] = links[k]->rfd;
    }
    int rc = molt_chan_send(to->chan, MOLT_MSG_RESTORE, &body.sb, fds, n);
    molt_body_free(&body);
    return rc;
}

/* Which old worker new worker i restores replicated state from: old
 * i mod N_old, unless that one is not running or is still catching up (a
 * respawned worker whose copy is not complete yet); then the first old
 * worker that holds a complete copy. Every complete copy is the same, so
 * any will do. N_old when there is none. */
static unsigned repl_source(unsigned i)
{
    unsigned nold = HO.old->nworkers, j = i % nold;
    const ho_old_t *o = &HO.old_w[j];
    if (!HO.old->replicated || (o->p && !o->p->catchup))
        return j;
    for (unsigned k = 0; k < nold; k++) {
        if (HO.old_w[k].p && !HO.old_w[k].p->catchup) {
            molt_info("handoff: old worker %u %s: new worker %u restores replicated state from old worker %u", j,
                      o->p ? "is still catching up" : "is not running", i, k);
            return k;
        }
    }
    molt_warn("handoff: no old worker holds a complete copy of the replicated state: new worker %u starts "
              "without it",
              i);
    return nold;
}

/* Pairs old and new workers, creates a socketpair per pair and sends SAVE
 * and RESTORE. On failure the reload fails; descriptors are closed here
 * either way (the workers hold their own copies once sent). */
static void ho_send_saves(void)
{
    unsigned nold = HO.old->nworkers, nnew = HO.gen->nworkers;
    ho_link_t *links = calloc((size_t)nold * nnew, sizeof(*links));
    const ho_link_t **sel = calloc((size_t)(nold > nnew ? nold : nnew), sizeof(*sel));
    size_t nlinks = 0;
    char reason[256] = "";
    HO.saving = true;
    if (!links || !sel) {
        snprintf(reason, sizeof(reason), "out of memory pairing the workers");
        goto out;
    }
    for (unsigned i = 0; i < nnew; i++) {
        unsigned rsrc = repl_source(i);
        for (unsigned j = 0; j < nold; j++) {
            bool part = j % nnew == i, repl = j == rsrc;
            if (!part && !repl)
                continue;
            if (!HO.old_w[j].p) {
                molt_warn("handoff: worker %u of the old generation is not running: new worker %u gets "
                          "nothing from it",
                          j, i);
                continue;
            }
            ho_link_t *l = &links[nlinks];
            *l = (ho_link_t){.from = j, .to = i, .part = part, .repl = repl, .wfd = -1, .rfd = -1};
            int sv[2];
            int rc = stream_pair(sv);
            if (rc < 0) {
                snprintf(reason, sizeof(reason), "socketpair() for the state of worker %u failed: %s", j,
                         strerror(-rc));
                goto out;
            }
            l->wfd = sv[0];
            l->rfd = sv[1];
            nlinks++;
        }
    }
    for (unsigned i = 0; i < nnew; i++) {
        size_t n = 0;
        for (size_t k = 0; k < nlinks; k++)
            if (links[k].to == i)
                sel[n++] = &links[k];
        if (n > MOLT_CHAN_MAX_FDS) {
            snprintf(reason, sizeof(reason),
                     "new worker %u would restore %zu old workers' state; at most %d in one reload (change the "
                     "worker count in smaller steps)",
                     i, n, MOLT_CHAN_MAX_FDS);
            goto out;
        }
    }
    for (unsigned j = 0; j < nold; j++) {
        size_t n = 0;
        for (size_t k = 0; k < nlinks; k++) {
            if (links[k].from != j)
                continue;
            sel[n++] = &links[k];
            if (n == MOLT_CHAN_MAX_FDS) {
                if (send_save(HO.old_w[j].p, HO.old, HO.gen, false, sel, n) < 0)
                    goto send_failed;
                HO.old_w[j].saves++;
                n = 0;
            }
        }
        if (n && send_save(HO.old_w[j].p, HO.old, HO.gen, false, sel, n) < 0)
            goto send_failed;
        HO.old_w[j].saves += n > 0;
    }
    for (unsigned i = 0; i < nnew; i++) {
        size_t n = 0;
        for (size_t k = 0; k < nlinks; k++)
            if (links[k].to == i)
                sel[n++] = &links[k];
        if (n && send_restore(HO.new_w[i].p, HO.fresh, HO.back, sel, n) < 0) {
            snprintf(reason, sizeof(reason), "sending RESTORE to new worker %u failed", i);
            goto out;
        }
        if (n) {
            HO.new_w[i].restoring = true;
            HO.new_w[i].streams = (unsigned)n;
        }
    }
    goto out;
send_failed:
    snprintf(reason, sizeof(reason), "sending SAVE to a worker of the old generation failed");
out:
    for (size_t k = 0; k < nlinks; k++) {
        molt_close(&links[k].wfd);
        molt_close(&links[k].rfd);
    }
    free(links);
    free(sel);
    if (reason[0])
        ho_fail(reason);
    else
        ho_check_done(); /* nothing to wait for when no worker had a partner */
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    char who[512] = "";
    size_t len = 0;
    for (unsigned j = 0; j < HO.old->nworkers && len < sizeof(who) - 64; j++) {
        const ho_old_t *o = &HO.old_w[j];
        if (o->p && !HO.saving && !o->quiesced)
            len += (size_t)snprintf(who + len, sizeof(who) - len, "%sold worker %u to close its connections",
                                    len ? ", " : "", j);
        else if (o->p && o->saves)
            len += (size_t)snprintf(who + len, sizeof(who) - len, "%sold worker %u to save", len ? ", " : "", j);
    }
    for (unsigned i = 0; i < HO.gen->nworkers && len < sizeof(who) - 64; i++)
        if (HO.new_w[i].restoring)
            len += (size_t)snprintf(who + len, sizeof(who) - len, "%snew worker %u to restore", len ? ", " : "", i);
    char reason[700];
    snprintf(reason, sizeof(reason), "did not finish within handoff_timeout_ms (%u ms); still waiting for %s",
             HO.gen->cfg->reload.handoff_timeout_ms, who[0] ? who : "nothing");
    ho_fail(reason);
}

static int ho_start(sup_gen_t *old, sup_gen_t *gen, bool back)
{
    memset(HO.old_w, 0, sizeof(HO.old_w));
    memset(HO.new_w, 0, sizeof(HO.new_w));
    HO.old = old;
    HO.gen = gen;
    HO.back = back;
    HO.strict = old->strict;
    HO.fresh = !back && gen->cfg->reload.on_restore_error == MOLT_RESTORE_FRESH;
    HO.save_err[0] = HO.restore_err[0] = HO.io_err[0] = '\0';
    HO.saving = false;
    HO.running = true;
    HO.t0 = molt_now_ms();
    for (size_t k = 0; k < SUP_MAX_PROCS; k++) {
        sup_proc_t *p = &S.procs[k];
        if (proc_live(p, old) && p->slot < old->nworkers)
            HO.old_w[p->slot] = (ho_old_t){.p = p, .pid = p->pid};
        else if (proc_live(p, gen) && p->slot < gen->nworkers && !(back && p->catchup))
            HO.new_w[p->slot] = (ho_new_t){.p = p, .pid = p->pid}; /* one catching up restores already */
    }
    /* Every worker of the old generation stops accepting and closes its
     * connections politely; it keeps its state and its process. */
    sup_gen_pause(old, true, true);
    uint32_t ms = gen->cfg->reload.handoff_timeout_ms + HO_MARGIN_MS;
    ev_timer_init(&HO.timer, on_timeout, ms / 1000.0, 0.);
    ev_timer_start(S.loop, &HO.timer);
    if (back)
        molt_info("hand-back: %s mode, from the %u worker%s of generation %llu to the %u of generation %llu",
                  HO.strict ? "strict" : "snapshot", old->nworkers, old->nworkers == 1 ? "" : "s",
                  (unsigned long long)old->number, gen->nworkers, (unsigned long long)gen->number);
    else
        molt_info("handoff: %s mode, %u old worker%s to %u new", HO.strict ? "strict" : "snapshot", old->nworkers,
                  old->nworkers == 1 ? "" : "s", gen->nworkers);
    if (!HO.strict) {
        ho_send_saves();
        return 0;
    }
    bool any = false;
    for (unsigned j = 0; j < old->nworkers; j++)
        any = any || HO.old_w[j].p;
    if (!any)
        ho_send_saves(); /* nobody to wait for */
    return 0;
}

int sup_handoff_start(sup_gen_t *old, sup_gen_t *gen)
{
    return ho_start(old, gen, false);
}

/*
 * A rollback after `from` (the generation rolled back) started accepting:
 * what it changed while it served goes back to `to` (the generation that
 * resumes), the same way as a handoff with the roles swapped: `from` stops
 * accepting and closes its connections politely, saves, and every worker
 * of `to` resets the instances concerned and restores (RESTORE{replace}).
 * The outcome comes through sup_reload_on_handback().
 */
int sup_handoff_start_back(sup_gen_t *from, sup_gen_t *to)
{
    return ho_start(from, to, true);
}

/* Figures of the last hand-back that finished (borrowed), or NULL. */
json_t *sup_handoff_back_last(void)
{
    return HO.back_last;
}

void sup_handoff_on_quiesced(sup_proc_t *p)
{
    if (!HO.running || HO.saving || p->gen != HO.old || p->slot >= HO.old->nworkers || HO.old_w[p->slot].p != p)
        return;
    HO.old_w[p->slot].quiesced = true;
    for (unsigned j = 0; j < HO.old->nworkers; j++)
        if (HO.old_w[j].p && !HO.old_w[j].quiesced)
            return;
    molt_info("handoff: the old generation has no connection left (%llu ms); saving",
              (unsigned long long)(molt_now_ms() - HO.t0));
    ho_send_saves();
}

/* What SAVED and RESTORED say. */
typedef struct ho_answer {
    uint64_t bytes, ms, instances;
    char err[768];
    bool plugin_error;
    bool catchup;
} ho_answer_t;

static void ho_answer_read(const molt_msg_t *msg, ho_answer_t *a)
{
    memset(a, 0, sizeof(*a));
    molt_msg_get_u64(msg, "bytes", &a->bytes);
    molt_msg_get_u64(msg, "ms", &a->ms);
    molt_msg_get_u64(msg, "instances", &a->instances);
    molt_msg_get_str(msg, "error", a->err, sizeof(a->err));
    molt_msg_get_bool(msg, "plugin_error", &a->plugin_error);
    molt_msg_get_bool(msg, "catchup", &a->catchup);
}

void sup_handoff_on_saved(sup_proc_t *p, const molt_msg_t *msg)
{
    if (!HO.running || p->gen != HO.old || p->slot >= HO.old->nworkers)
        return;
    ho_old_t *o = &HO.old_w[p->slot];
    if (o->p != p || !o->saves)
        return;
    ho_answer_t a;
    ho_answer_read(msg, &a);
    if (a.catchup)
        return; /* a sibling's catch-up, not this handoff */
    o->saves--;
    o->bytes += a.bytes;
    o->ms = a.ms > o->ms ? a.ms : o->ms;
    o->instances = (unsigned)a.instances;
    char *dst = a.plugin_error ? HO.save_err : HO.io_err;
    if (a.err[0] && !dst[0])
        snprintf(dst, sizeof(HO.save_err), "old worker %u: %s", p->slot, a.err);
    ho_check_done();
}

void sup_handoff_on_restored(sup_proc_t *p, const molt_msg_t *msg)
{
    if (!HO.running || p->gen != HO.gen || p->slot >= HO.gen->nworkers)
        return;
    ho_new_t *n = &HO.new_w[p->slot];
    if (n->p != p || !n->restoring)
        return;
    ho_answer_t a;
    ho_answer_read(msg, &a);
    n->restoring = false;
    n->bytes = a.bytes;
    n->ms = a.ms;
    n->instances = (unsigned)a.instances;
    if (a.err[0] && !HO.restore_err[0])
        snprintf(HO.restore_err, sizeof(HO.restore_err), "new worker %u: %s", p->slot, a.err);
    ho_check_done();
}

void sup_handoff_on_death(sup_proc_t *p)
{
    if (HO.running && HO.back && p->gen == HO.gen && p->slot < HO.gen->nworkers && HO.new_w[p->slot].p == p) {
        /* A worker taking the hand-back died: it will be respawned (and catch up). */
        ho_new_t *n = &HO.new_w[p->slot];
        n->p = NULL;
        n->restoring = false;
        if (!HO.restore_err[0])
            snprintf(HO.restore_err, sizeof(HO.restore_err), "worker %u (pid %d) %s during the hand-back",
                     p->slot, (int)p->pid, p->last_exit);
        ho_check_done();
        return;
    }
    if (!HO.running || p->gen != HO.old || p->slot >= HO.old->nworkers || HO.old_w[p->slot].p != p)
        return;
    ho_old_t *o = &HO.old_w[p->slot];
    char reason[256];
    snprintf(reason, sizeof(reason), "worker %u (pid %d) of %s generation %s during the %s", p->slot, (int)p->pid,
             HO.back ? "the rolled-back" : "the old", p->last_exit, HO.back ? "hand-back" : "handoff");
    o->p = NULL;
    o->saves = 0;
    if (!HO.fresh) {
        ho_fail(reason);
        return;
    }
    /* "fresh": its successors read a stream that ends early and go on without it. */
    molt_warn("handoff: %s; on_restore_error is \"fresh\": going on without its state", reason);
    if (!HO.saving) {
        bool all = true;
        for (unsigned j = 0; j < HO.old->nworkers; j++)
            all = all && (!HO.old_w[j].p || HO.old_w[j].quiesced);
        if (all) {
            ho_send_saves();
            return;
        }
    }
    ho_check_done();
}

/* ---- catch-up: a worker respawned within its generation -------------------------------- */

static sup_proc_t *live_sibling(const sup_proc_t *p)
{
    for (size_t k = 0; k < SUP_MAX_PROCS; k++) {
        sup_proc_t *q = &S.procs[k];
        if (q != p && proc_live(q, p->gen) && !q->catchup) /* a sibling catching up has no complete copy */
            return q;
    }
    return NULL;
}

bool sup_catchup_wanted(const sup_proc_t *p)
{
    const sup_gen_t *gen = p->gen;
    /* Also in a generation that a reload has paused: should the reload roll
     * back, the generation resumes with every worker's copy complete. */
    return gen->state == SUP_GEN_ACTIVE && gen->replicated && p->restarts > 0 && live_sibling(p);
}

static void catchup_done(sup_proc_t *p, const char *why)
{
    p->catchup = false;
    const sup_proc_t *k = why ? live_sibling(p) : NULL;
    if (k && p->pid > 0) {
        /* A complete copy is live: never serve without it. Killed, the worker
         * is respawned (with backoff) and catches up again. */
        molt_error("worker %u (pid %d): %s; worker %u has a complete copy: restarting this one to catch up again",
                   p->slot, (int)p->pid, why, k->slot);
        kill(p->pid, SIGKILL);
        return;
    }
    if (why)
        molt_warn("worker %u (pid %d): %s; no worker of its generation has a complete copy left: it starts with "
                  "its plugins' fresh state",
                  p->slot, (int)p->pid, why);
    /* A reload may have paused the generation meanwhile: its RESUME (on
     * rollback) will reach this worker then. */
    if (!p->gen->paused && p->chan >= 0)
        molt_chan_send(p->chan, MOLT_MSG_RESUME, NULL, NULL, 0);
}

/*
 * p was respawned in standby and is READY: a live sibling saves its
 * replicated instances into a socketpair and p restores them before it
 * accepts. p has been a sibling-message target since READY, that is since
 * before the sibling gets SAVE on the same channel as its messages: every
 * message the sibling applied before saving is in the snapshot, and every
 * later one reaches p too (p applies them after its restore; a message may
 * be applied twice, so replicated plugins keep their messages idempotent).
 */
void sup_catchup_start(sup_proc_t *p)
{
    sup_proc_t *k = live_sibling(p);
    if (!k) {
        catchup_done(p, "no sibling is running to catch up from");
        return;
    }
    int sv[2];
    int rc = stream_pair(sv);
    if (rc < 0) {
        catchup_done(p, "socketpair() for its catch-up failed");
        return;
    }
    ho_link_t link = {.from = k->slot, .to = p->slot, .part = false, .repl = true, .wfd = sv[0], .rfd = sv[1]};
    const ho_link_t *sel[1] = {&link};
    rc = send_save(k, p->gen, p->gen, true, sel, 1);
    if (rc == 0)
        rc = send_restore(p, true, false, sel, 1);
    close(sv[0]);
    close(sv[1]);
    if (rc < 0) {
        catchup_done(p, "asking for its catch-up failed");
        return;
    }
    molt_info("worker %u (pid %d) catches up: worker %u saves its replicated state for it", p->slot, (int)p->pid,
              k->slot);
}

void sup_catchup_on_restored(sup_proc_t *p, const molt_msg_t *msg)
{
    ho_answer_t a;
    ho_answer_read(msg, &a);
    if (!a.err[0])
        sup_metrics_on_state_bytes("catchup", a.bytes);
    if (!a.err[0])
        molt_info("worker %u (pid %d) caught up: %llu instance state%s, %llu bytes in %llu ms; accepting", p->slot,
                  (int)p->pid, (unsigned long long)a.instances, a.instances == 1 ? "" : "s",
                  (unsigned long long)a.bytes, (unsigned long long)a.ms);
    catchup_done(p, a.err[0] ? a.err : NULL);
}

void sup_handoff_cancel(void)
{
    ev_timer_stop(S.loop, &HO.timer);
    ev_timer_stop(S.loop, &HO.cause_w);
    HO.running = false;
}

json_t *sup_handoff_last(void)
{
    return HO.last;
}

void sup_handoff_free(void)
{
    sup_handoff_cancel();
    json_decref(HO.last);
    HO.last = NULL;
    json_decref(HO.back_last);
    HO.back_last = NULL;
}

/* ---- upgrade: the figures of the last handoff and hand-back ---------------------------------- */

unsigned sup_handoff_upgrade_count(void)
{
    return 1;
}

void sup_handoff_upgrade_pack(msgpack_packer *pk)
{
    molt_mp_pack_str(pk, "handoff");
    msgpack_pack_map(pk, 2);
    sup_up_pack_json(pk, "last", HO.last);
    sup_up_pack_json(pk, "back_last", HO.back_last);
}

bool sup_handoff_upgrade_unpack(sup_up_rd_t *rd, const msgpack_object *top)
{
    const msgpack_object *o = sup_up_map(rd, top, "handoff");
    sup_up_json(rd, o, "last", &HO.last);
    sup_up_json(rd, o, "back_last", &HO.back_last);
    return !rd->failed;
}
