/*
 * The process table: fixed slots, one entry per worker of a generation.
 * An entry goes EMPTY -> STARTING -> READY -> (DRAINING) -> EMPTY, or, when
 * its process dies while its generation is active, -> BACKOFF -> STARTING
 * again after the slot's backoff delay, or -> FAILED on a fatal exit.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uuid/uuid.h>

#include "shared/chan.h"
#include "shared/entry.h"
#include "shared/exit.h"
#include "shared/log.h"
#include "shared/util.h"
#include "supervisor/gendir.h"
#include "supervisor/ident.h"
#include "supervisor/metrics.h"
#include "supervisor/slots.h"
#include "supervisor/sibling.h"
#include "supervisor/sup.h"
#include "supervisor/upgrade.h"

static void proc_on_chan(struct ev_loop *loop, ev_io *w, int revents);
static void proc_on_timer(struct ev_loop *loop, ev_timer *w, int revents);

/* One "worker" event: a process-table entry changed state. */
static void proc_event(const sup_proc_t *p, const char *state)
{
    json_t *ev = json_pack("{s:s,s:I,s:I,s:I,s:s}", "type", "worker", "slot", (json_int_t)p->slot, "pid",
                           (json_int_t)p->pid, "generation", (json_int_t)(p->gen ? p->gen->number : 0), "state",
                           state);
    if (ev && p->last_exit[0] && (!strcmp(state, "exited") || !strcmp(state, "backoff")))
        json_object_set_new(ev, "exit", json_string(p->last_exit));
    if (ev && p->fail_reason[0] && !strcmp(state, "exited"))
        json_object_set_new(ev, "error", json_string(p->fail_reason));
    if (ev && !strcmp(state, "backoff"))
        json_object_set_new(ev, "delay_ms", json_integer((json_int_t)p->backoff.delay_ms));
    sup_event_emit(ev);
}

/* ---- generations ------------------------------------------------------------------------ */

int sup_gen_new(molt_config_t *cfg, sup_gen_t **out, char *err, size_t errlen)
{
    sup_gen_t *gen = NULL;
    size_t i, nfiles = 0;
    uint64_t nbytes = 0;
    int rc = 0;
    *out = NULL;
    for (i = 0; i < SUP_MAX_GENS && S.gens[i]; i++)
        ;
    if (i == SUP_MAX_GENS) {
        rc = -EBUSY;
        snprintf(err, errlen, "cannot create a generation: %d generations are still running", SUP_MAX_GENS);
        goto fail;
    }
    gen = calloc(1, sizeof(*gen));
    if (!gen) {
        rc = -ENOMEM;
        snprintf(err, errlen, "cannot create a generation: out of memory");
        goto fail;
    }
    uuid_t u;
    uuid_generate(u);
    uuid_unparse_lower(u, gen->id);
    /* Whom the workers will run as: known before anything is copied. */
    if (sup_ident_resolve(cfg, &gen->ident, err, errlen) < 0) {
        rc = -EINVAL;
        goto fail;
    }
    /* Prepare: the workers will load these copies and nothing else. */
    rc = sup_gendir_create(cfg, gen->id, &gen->dir, &nfiles, &nbytes, err, errlen);
    if (rc < 0)
        goto fail;
    /* Readable by the workers' group only when they are not moltd's user. */
    if (gen->ident.drop && (rc = sup_gendir_share(gen->dir, gen->ident.gid, err, errlen)) < 0) {
        sup_gendir_remove(gen->dir);
        free(gen->dir);
        goto fail;
    }
    gen->number = ++S.next_gen;
    gen->cfg = cfg;
    gen->nworkers = cfg->workers;
    gen->created_ms = molt_wall_ms();
    gen->state = SUP_GEN_STARTING;
    S.gens[i] = gen;
    molt_info("generation %llu: plugins copied to %s (%zu file%s, %llu bytes)",
              (unsigned long long)gen->number, gen->dir, nfiles, nfiles == 1 ? "" : "s",
              (unsigned long long)nbytes);
    *out = gen;
    return 0;
fail:
    if (gen)
        sup_ident_free(&gen->ident);
    free(gen);
    return rc;
}

/*
 * A generation that never served is of no use to a rollback: its directory
 * goes now, and nothing else is touched (a failed start keeps what an
 * earlier run left). A generation that served: keep the newest
 * keep_generations directories (of the active config, when there is one)
 * and remove older ones no live generation uses.
 */
static void gen_dir_release(sup_gen_t *gen)
{
    const char *in_use[SUP_MAX_GENS];
    size_t n = 0;
    if (!gen->dir)
        return;
    if (!gen->served) {
        sup_gendir_remove(gen->dir);
        return;
    }
    for (size_t i = 0; i < SUP_MAX_GENS; i++)
        if (S.gens[i] && S.gens[i] != gen && S.gens[i]->dir)
            in_use[n++] = S.gens[i]->dir;
    const molt_config_t *cfg = S.active && S.active != gen ? S.active->cfg : gen->cfg;
    int rc = sup_gendir_prune(gen->cfg->runtime_dir, cfg->reload.keep_generations, in_use, n);
    if (rc < 0)
        molt_warn("pruning generation directories in %s failed: %s", gen->cfg->runtime_dir, strerror(-rc));
}

void sup_gen_free(sup_gen_t *gen)
{
    if (!gen)
        return;
    for (size_t i = 0; i < SUP_MAX_GENS; i++)
        if (S.gens[i] == gen)
            S.gens[i] = NULL;
    if (S.active == gen)
        S.active = NULL;
    ev_timer_stop(S.loop, &gen->kill_w);
    gen_dir_release(gen);
    free(gen->dir);
    molt_config_free(gen->cfg);
    json_decref(gen->plugins);
    sup_ident_free(&gen->ident);
    free(gen);
}

/* ---- entries ---------------------------------------------------------------------------- */

static sup_proc_t *proc_alloc(sup_gen_t *gen, unsigned slot)
{
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        sup_proc_t *p = &S.procs[i];
        if (p->state != SUP_W_EMPTY)
            continue;
        memset(p, 0, sizeof(*p));
        p->gen = gen;
        p->slot = slot;
        p->chan = -1;
        gen->nprocs++;
        return p;
    }
    return NULL;
}

static void proc_release(sup_proc_t *p)
{
    sup_gen_t *gen = p->gen;
    ev_io_stop(S.loop, &p->chan_w);
    ev_timer_stop(S.loop, &p->timer_w);
    molt_close(&p->chan);
    p->state = SUP_W_EMPTY;
    p->pid = 0;
    p->gen = NULL;
    if (gen && --gen->nprocs == 0 && gen->state == SUP_GEN_DRAINING && gen != S.active) {
        molt_info("generation %llu (%s) has no worker left", (unsigned long long)gen->number, gen->id);
        sup_gen_free(gen);
    }
}

static sup_proc_t *proc_by_pid(pid_t pid)
{
    for (size_t i = 0; i < SUP_MAX_PROCS; i++)
        if (S.procs[i].state != SUP_W_EMPTY && S.procs[i].pid == pid)
            return &S.procs[i];
    return NULL;
}

/* Forks the worker for entry p. 0, or -errno with nothing left running. */
static int proc_spawn(sup_proc_t *p)
{
    sup_gen_t *gen = p->gen;
    int sv[2];
    int rc = molt_chan_pair(sv);
    if (rc < 0) {
        molt_error("socketpair() failed while spawning worker %u: %s", p->slot, strerror(-rc));
        return rc;
    }
    p->catchup = sup_catchup_wanted(p);
    pid_t pid = fork();
    if (pid < 0) {
        rc = -errno;
        molt_error("fork() failed while spawning worker %u: %s", p->slot, strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return rc;
    }
    if (pid == 0) {
        close(sv[0]);
        molt_worker_boot_t boot = {
            .cfg = gen->cfg,
            .chan_fd = sv[1],
            .listen_fds = S.listen_fds,
            .slot = p->slot,
            .gen = gen->number,
            .gen_id = gen->id,
            .plugin_dir = gen->dir,
            .ident = &gen->ident,
            /* A reload's new worker, or one respawned into a paused generation,
             * accepts only once told to (RESUME). */
            .standby = gen->paused || p->catchup || (S.state != SUP_BOOTING && gen->state == SUP_GEN_STARTING),
        };
        wrk_main(&boot);
    }
    close(sv[1]);
    molt_fd_set_nonblock(sv[0], true);
    p->pid = pid;
    p->chan = sv[0];
    p->state = SUP_W_STARTING;
    p->started_mono = molt_now_ms();
    p->started_wall = molt_wall_ms();
    p->respawn_at_wall = 0;
    p->loading[0] = '\0';
    p->fail_reason[0] = '\0';
    memset(p->requests, 0, sizeof(p->requests));
    p->conns = p->rss = 0;
    ev_io_init(&p->chan_w, proc_on_chan, p->chan, EV_READ);
    p->chan_w.data = p;
    ev_io_start(S.loop, &p->chan_w);
    /* A worker must say READY within load_timeout_ms. */
    ev_timer_init(&p->timer_w, proc_on_timer, gen->cfg->reload.load_timeout_ms / 1000.0, 0.);
    p->timer_w.data = p;
    ev_timer_start(S.loop, &p->timer_w);
    molt_info("worker %u started, pid %d", p->slot, (int)pid);
    proc_event(p, "starting");
    return 0;
}

int sup_gen_spawn(sup_gen_t *gen)
{
    molt_info("generation %llu (%s): starting %u worker%s", (unsigned long long)gen->number, gen->id,
              gen->nworkers, gen->nworkers == 1 ? "" : "s");
    for (unsigned slot = 0; slot < gen->nworkers; slot++) {
        sup_proc_t *p = proc_alloc(gen, slot);
        if (!p) {
            molt_error("process table full while spawning worker %u", slot);
            return -ENOSPC;
        }
        int rc = proc_spawn(p);
        if (rc < 0) {
            proc_release(p);
            return rc;
        }
    }
    return 0;
}

static void proc_send_stop(sup_proc_t *p, bool graceful)
{
    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 2);
    molt_mp_pack_kv_bool(&body.pk, "graceful", graceful);
    molt_mp_pack_kv_bool(&body.pk, "retired", p->gen->retired);
    int rc = p->chan >= 0 ? molt_chan_send(p->chan, MOLT_MSG_STOP, &body.sb, NULL, 0) : -EPIPE;
    molt_body_free(&body);
    if (rc < 0) {
        /* The channel is gone or full: signals say the same thing. */
        molt_warn("worker %u (pid %d): STOP over channel failed (%s); sending %s", p->slot, (int)p->pid,
                  strerror(-rc), graceful ? "SIGTERM" : "SIGQUIT");
        kill(p->pid, graceful ? SIGTERM : SIGQUIT);
    }
}

static void gen_on_kill_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    sup_gen_t *gen = w->data;
    unsigned n = 0;
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        sup_proc_t *p = &S.procs[i];
        if (p->state != SUP_W_EMPTY && p->gen == gen && p->pid > 0) {
            kill(p->pid, SIGKILL);
            n++;
        }
    }
    if (n)
        molt_warn("generation %llu: %u worker%s still running at the stop deadline; killed",
                  (unsigned long long)gen->number, n, n == 1 ? "" : "s");
}

unsigned sup_procs_send_log_fd(int fd)
{
    unsigned n = 0;
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        sup_proc_t *p = &S.procs[i];
        if (p->state == SUP_W_EMPTY || p->chan < 0 || p->pid <= 0)
            continue;
        int rc = molt_chan_send(p->chan, MOLT_MSG_LOG_FD, NULL, &fd, 1);
        if (rc < 0)
            molt_warn("worker %u (pid %d): sending the reopened log file failed: %s", p->slot, (int)p->pid,
                      strerror(-rc));
        else
            n++;
    }
    return n;
}

void sup_gen_activate(sup_gen_t *gen)
{
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        sup_proc_t *p = &S.procs[i];
        if (p->state != SUP_W_EMPTY && p->gen == gen && p->chan >= 0 && p->pid > 0)
            molt_chan_send(p->chan, MOLT_MSG_ACTIVATE, NULL, NULL, 0);
    }
}

unsigned sup_gen_request_reports(sup_gen_t *gen)
{
    unsigned n = 0;
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        sup_proc_t *p = &S.procs[i];
        if (p->state == SUP_W_EMPTY || p->gen != gen || p->chan < 0 || p->pid <= 0)
            continue;
        if (molt_chan_send(p->chan, MOLT_MSG_REPORT, NULL, NULL, 0) == 0)
            n++;
    }
    return n;
}

unsigned sup_gen_request_health(sup_gen_t *gen, const char *path, uint32_t timeout_ms)
{
    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 2);
    molt_mp_pack_kv_str(&body.pk, "path", path);
    molt_mp_pack_kv_u64(&body.pk, "timeout_ms", timeout_ms);
    unsigned n = 0;
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        sup_proc_t *p = &S.procs[i];
        if (p->state == SUP_W_EMPTY || p->gen != gen || p->chan < 0 || p->pid <= 0)
            continue;
        if (molt_chan_send(p->chan, MOLT_MSG_HEALTH, &body.sb, NULL, 0) == 0)
            n++;
    }
    molt_body_free(&body);
    return n;
}

void sup_gen_pause(sup_gen_t *gen, bool pause, bool close)
{
    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 1);
    molt_mp_pack_kv_bool(&body.pk, "close", close);
    gen->paused = pause;
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        sup_proc_t *p = &S.procs[i];
        if (p->state == SUP_W_EMPTY || p->gen != gen || p->chan < 0)
            continue;
        if (!pause && p->catchup)
            continue; /* it accepts once its catch-up is done (catchup_done) */
        int rc = molt_chan_send(p->chan, pause ? MOLT_MSG_PAUSE : MOLT_MSG_RESUME, pause ? &body.sb : NULL, NULL, 0);
        if (rc < 0)
            molt_warn("worker %u (pid %d): sending %s failed: %s", p->slot, (int)p->pid,
                      pause ? "PAUSE" : "RESUME", strerror(-rc));
    }
    molt_body_free(&body);
}

void sup_gen_stop(sup_gen_t *gen, bool graceful)
{
    /* Whoever is still running at the deadline is killed: drain_timeout_ms
     * for a graceful stop, a short grace for a fast one. */
    if (gen->state != SUP_GEN_DRAINING || !graceful) {
        ev_timer_stop(S.loop, &gen->kill_w);
        uint32_t ms = graceful ? gen->cfg->reload.drain_timeout_ms : SUP_STOP_FAST_GRACE_MS;
        ev_timer_init(&gen->kill_w, gen_on_kill_deadline, ms / 1000.0, 0.);
        gen->kill_w.data = gen;
        ev_timer_start(S.loop, &gen->kill_w);
    }
    gen->state = SUP_GEN_DRAINING;
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        sup_proc_t *p = &S.procs[i];
        if (p->state == SUP_W_EMPTY || p->gen != gen)
            continue;
        if (p->pid > 0) {
            /* A fast stop may follow a graceful one: send it again. */
            proc_send_stop(p, graceful);
            p->state = SUP_W_DRAINING;
            proc_event(p, "draining");
            ev_timer_stop(S.loop, &p->timer_w);
        } else {
            proc_release(p); /* BACKOFF or FAILED: nothing runs */
        }
    }
}

void sup_proc_kill_all(int sig)
{
    for (size_t i = 0; i < SUP_MAX_PROCS; i++)
        if (S.procs[i].state != SUP_W_EMPTY && S.procs[i].pid > 0)
            kill(S.procs[i].pid, sig);
}

unsigned sup_procs_alive(void)
{
    unsigned n = 0;
    for (size_t i = 0; i < SUP_MAX_PROCS; i++)
        if (S.procs[i].state != SUP_W_EMPTY && S.procs[i].pid > 0)
            n++;
    return n;
}

/* ---- events ----------------------------------------------------------------------------- */

static void proc_on_ready(sup_proc_t *p, const molt_msg_t *msg)
{
    sup_gen_t *gen = p->gen;
    if (p->state != SUP_W_STARTING)
        return;
    ev_timer_stop(S.loop, &p->timer_w);
    p->state = SUP_W_READY;
    p->loading[0] = '\0';
    bool strict = false;
    const msgpack_object *st = molt_msg_get(msg, "strict");
    if (st && st->type == MSGPACK_OBJECT_BOOLEAN)
        strict = st->via.boolean;
    gen->strict = gen->strict || strict;
    if ((st = molt_msg_get(msg, "replicated")) && st->type == MSGPACK_OBJECT_BOOLEAN && st->via.boolean)
        gen->replicated = true;
    if (!gen->plugins) {
        gen->plugins = json_array();
        const msgpack_object *arr = molt_msg_get(msg, "plugins");
        if (arr && arr->type == MSGPACK_OBJECT_ARRAY) {
            for (uint32_t i = 0; i < arr->via.array.size; i++) {
                const msgpack_object *o = &arr->via.array.ptr[i];
                char name[128] = "", plugin[128] = "", version[64] = "", file[1024] = "", state[64] = "";
                molt_mp_get_str(o, "state", state, sizeof(state));
                molt_mp_get_str(o, "name", name, sizeof(name));
                molt_mp_get_str(o, "plugin", plugin, sizeof(plugin));
                molt_mp_get_str(o, "version", version, sizeof(version));
                molt_mp_get_str(o, "file", file, sizeof(file));
                json_array_append_new(gen->plugins,
                                      json_pack("{s:s,s:s,s:s,s:s,s:s?}", "name", name, "plugin", plugin, "version",
                                                version, "file", file, "state", state[0] ? state : NULL));
            }
        }
    }
    molt_info("worker %u (pid %d) ready", p->slot, (int)p->pid);
    proc_event(p, "ready");
    if (p->catchup)
        sup_catchup_start(p);
    if (gen->state == SUP_GEN_STARTING && ++gen->nready == gen->nworkers)
        sup_on_gen_ready(gen);
}

static void proc_on_stats(sup_proc_t *p, const molt_msg_t *msg)
{
    const msgpack_object *req = molt_msg_get(msg, "requests");
    uint64_t now[5];
    memcpy(now, p->requests, sizeof(now));
    if (req && req->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < req->via.array.size && i < 5; i++)
            if (req->via.array.ptr[i].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                now[i] = req->via.array.ptr[i].via.u64;
    /* moltd's running totals: what this process served since its last report */
    sup_metrics_on_requests(p->requests, now);
    memcpy(p->requests, now, sizeof(now));
    molt_msg_get_u64(msg, "conns", &p->conns);
    molt_msg_get_u64(msg, "rss", &p->rss);
    if (sup_backoff_on_alive(&p->backoff, molt_now_ms() - p->started_mono))
        molt_info("worker %u has been healthy for a minute: its restart backoff is reset", p->slot);
    sup_reload_on_stats(p->gen);
}

/* Reads every message waiting on p's channel. */
static void proc_read_chan(sup_proc_t *p)
{
    while (p->chan >= 0) {
        molt_msg_t msg;
        int rc = molt_chan_recv(p->chan, &msg);
        if (rc == -EAGAIN)
            return;
        if (rc == -EPIPE) {
            /* The process is exiting; its child watcher does the rest. */
            ev_io_stop(S.loop, &p->chan_w);
            molt_close(&p->chan);
            return;
        }
        if (rc < 0) {
            molt_error("worker %u (pid %d): refused a message on its channel: %s", p->slot, (int)p->pid,
                       strerror(-rc));
            continue;
        }
        switch (msg.type) {
        case MOLT_MSG_READY:
            proc_on_ready(p, &msg);
            break;
        case MOLT_MSG_LOADING: {
            char plugin[96] = "", file[150] = "";
            molt_msg_get_str(&msg, "plugin", plugin, sizeof(plugin));
            molt_msg_get_str(&msg, "file", file, sizeof(file));
            snprintf(p->loading, sizeof(p->loading), "plugin %s (%s)", plugin, file);
            break;
        }
        case MOLT_MSG_FAIL: {
            char phase[32] = "", plugin[96] = "", file[256] = "", reason[384] = "";
            molt_msg_get_str(&msg, "phase", phase, sizeof(phase));
            molt_msg_get_str(&msg, "plugin", plugin, sizeof(plugin));
            molt_msg_get_str(&msg, "file", file, sizeof(file));
            molt_msg_get_str(&msg, "reason", reason, sizeof(reason));
            if (plugin[0])
                snprintf(p->fail_reason, sizeof(p->fail_reason), "plugin %s (%s): %s", plugin, file, reason);
            else
                snprintf(p->fail_reason, sizeof(p->fail_reason), "%s", reason);
            molt_error("worker %u (pid %d) failed to start: %s", p->slot, (int)p->pid, p->fail_reason);
            break;
        }
        case MOLT_MSG_STATS:
            proc_on_stats(p, &msg);
            break;
        case MOLT_MSG_SLOT_RESERVE:
            if (p->chan >= 0)
                sup_slot_answer(p->chan, &msg);
            break;
        case MOLT_MSG_HEALTH_RESULT: {
            uint64_t status = 0;
            char error[512] = "";
            molt_msg_get_u64(&msg, "status", &status);
            molt_msg_get_str(&msg, "error", error, sizeof(error));
            sup_reload_on_health(p, (int)status, error);
            break;
        }
        case MOLT_MSG_SIBLING_SEND:
            sup_sib_on_send(p, &msg);
            break;
        case MOLT_MSG_SIBLING_ACK:
            sup_sib_on_ack(p, &msg);
            break;
        case MOLT_MSG_QUIESCED:
            sup_handoff_on_quiesced(p);
            break;
        case MOLT_MSG_SAVED:
            sup_handoff_on_saved(p, &msg);
            break;
        case MOLT_MSG_RESTORED:
            if (p->catchup)
                sup_catchup_on_restored(p, &msg);
            else
                sup_handoff_on_restored(p, &msg);
            break;
        case MOLT_MSG_DUMPED:
            sup_dump_on_dumped(p, &msg);
            break;
        case MOLT_MSG_DRAINED:
            molt_info("worker %u (pid %d) drained", p->slot, (int)p->pid);
            break;
        default:
            molt_warn("worker %u (pid %d): unexpected %s message; ignored", p->slot, (int)p->pid,
                      molt_msg_type_name(msg.type));
            break;
        }
        molt_msg_free(&msg);
    }
}

static void proc_on_chan(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)revents;
    proc_read_chan(w->data);
}

static void describe_exit(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)%s", WTERMSIG(status), strsignal(WTERMSIG(status)),
                 WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, len, "ended with status 0x%x", status);
}

static void proc_schedule_respawn(sup_proc_t *p)
{
    uint64_t now = molt_now_ms();
    uint32_t delay = sup_backoff_on_death(&p->backoff, p->started_mono, now);
    p->state = SUP_W_BACKOFF;
    p->pid = 0;
    p->respawn_at_wall = molt_wall_ms() + delay;
    ev_timer_stop(S.loop, &p->timer_w);
    ev_timer_init(&p->timer_w, proc_on_timer, delay / 1000.0, 0.);
    ev_timer_start(S.loop, &p->timer_w);
    proc_event(p, "backoff");
    if (sup_backoff_crashloop(&p->backoff))
        molt_error("worker %u is in a crash loop: %u deaths without a minute of health; next start in %u ms",
                   p->slot, p->backoff.failures, delay);
    else
        molt_warn("worker %u will be replaced in %u ms", p->slot, delay);
}

static void proc_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    sup_proc_t *p = w->data;
    if (p->state == SUP_W_STARTING) {
        molt_error("worker %u (pid %d) did not become ready within load_timeout_ms (%u ms)%s%s; killing it",
                   p->slot, (int)p->pid, p->gen->cfg->reload.load_timeout_ms,
                   p->loading[0] ? " while initialising " : "", p->loading);
        snprintf(p->fail_reason, sizeof(p->fail_reason), "did not become ready within %u ms%s%s",
                 p->gen->cfg->reload.load_timeout_ms, p->loading[0] ? " (hung initialising " : "",
                 p->loading[0] ? p->loading : "");
        if (p->loading[0])
            strncat(p->fail_reason, ")", sizeof(p->fail_reason) - strlen(p->fail_reason) - 1);
        kill(p->pid, SIGKILL);
        return;
    }
    if (p->state == SUP_W_BACKOFF && S.state == SUP_RUNNING && p->gen->state == SUP_GEN_ACTIVE) {
        p->restarts++;
        sup_metrics_on_restart();
        if (proc_spawn(p) < 0)
            proc_schedule_respawn(p);
    }
}

void sup_on_child(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)loop, (void)revents;
    sup_proc_t *p = proc_by_pid(w->rpid);
    if (!p) {
        sup_upgrade_on_child(w->rpid, w->rstatus); /* an upgrade's check, or nobody we know */
        return;
    }
    sup_gen_t *gen = p->gen;
    /* SIGCHLD can be handled before the worker's last words (FAIL, LOADING)
     * are read: read them first, so the death is explained. */
    proc_read_chan(p);
    bool was_starting = p->state == SUP_W_STARTING;
    describe_exit(w->rstatus, p->last_exit, sizeof(p->last_exit));
    sup_sib_on_proc_gone(p); /* with last_exit set: a wait for it says how it ended */
    proc_event(p, "exited");
    ev_io_stop(S.loop, &p->chan_w);
    ev_timer_stop(S.loop, &p->timer_w);
    molt_close(&p->chan);
    sup_handoff_on_death(p); /* may end the reload: after the channel is closed */
    sup_dump_on_death(p);

    bool expected = p->state == SUP_W_DRAINING || gen->state == SUP_GEN_DRAINING || S.state == SUP_STOPPING;
    if (expected) {
        molt_info("worker %u (pid %d) %s", p->slot, (int)p->pid, p->last_exit);
        proc_release(p);
        sup_on_proc_gone();
        return;
    }

    if (gen->state == SUP_GEN_STARTING) {
        /* A worker of a generation that is not serving yet (booting, or being
         * verified by a reload) died: the generation fails. Say exactly why. */
        char reason[1024];
        if (p->fail_reason[0])
            snprintf(reason, sizeof(reason), "worker %u: %s", p->slot, p->fail_reason);
        else
            snprintf(reason, sizeof(reason), "worker %u (pid %d) %s%s%s", p->slot, (int)p->pid, p->last_exit,
                     p->loading[0] ? " while initialising " : (was_starting ? " before it was ready" : ""),
                     p->loading);
        p->pid = 0;
        p->state = SUP_W_FAILED;
        sup_on_gen_failed(gen, reason);
        return;
    }

    bool fatal = WIFEXITED(w->rstatus) && WEXITSTATUS(w->rstatus) == MOLT_EXIT_FATAL;
    if (fatal) {
        molt_error("worker %u (pid %d) %s (fatal%s%s); not replacing it", p->slot, (int)p->pid, p->last_exit,
                   p->fail_reason[0] ? ": " : "", p->fail_reason);
        p->pid = 0;
        p->state = SUP_W_FAILED;
        return;
    }
    molt_error("worker %u (pid %d) %s", p->slot, (int)p->pid, p->last_exit);
    proc_schedule_respawn(p);
}

/* ---- status ----------------------------------------------------------------------------- */

json_t *sup_procs_json(void)
{
    json_t *arr = json_array();
    uint64_t now = molt_now_ms();
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        const sup_proc_t *p = &S.procs[i];
        if (p->state == SUP_W_EMPTY)
            continue;
        uint64_t total = 0;
        for (int c = 0; c < 5; c++)
            total += p->requests[c];
        json_t *o = json_pack("{s:I,s:I,s:I,s:s,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I,s:I},s:I,s:I,s:I,s:b}",
                              "slot", (json_int_t)p->slot, "pid", (json_int_t)p->pid, "generation",
                              (json_int_t)p->gen->number, "state", sup_wstate_name(p->state), "started_ms",
                              (json_int_t)p->started_wall, "up_ms",
                              (json_int_t)(p->pid > 0 ? now - p->started_mono : 0), "requests", "1xx",
                              (json_int_t)p->requests[0], "2xx", (json_int_t)p->requests[1], "3xx",
                              (json_int_t)p->requests[2], "4xx", (json_int_t)p->requests[3], "5xx",
                              (json_int_t)p->requests[4], "total", (json_int_t)total, "connections",
                              (json_int_t)p->conns, "rss", (json_int_t)p->rss, "restarts",
                              (json_int_t)p->restarts, "crashloop", sup_backoff_crashloop(&p->backoff));
        json_object_set_new(o, "next_start_ms",
                            p->state == SUP_W_BACKOFF ? json_integer((json_int_t)p->respawn_at_wall) : json_null());
        json_object_set_new(o, "last_exit", p->last_exit[0] ? json_string(p->last_exit) : json_null());
        json_object_set_new(o, "catching_up", json_boolean(p->catchup));
        if (p->fail_reason[0])
            json_object_set_new(o, "error", json_string(p->fail_reason));
        json_array_append_new(arr, o);
    }
    return arr;
}

/* ---- upgrade: the generations and the process table -------------------------------------------- */

sup_gen_t *sup_gen_by_number(uint64_t number)
{
    for (size_t i = 0; i < SUP_MAX_GENS; i++)
        if (S.gens[i] && S.gens[i]->number == number)
            return S.gens[i];
    return NULL;
}

int sup_gen_config_load(const char *source, const char *path, const char *dir, molt_config_t **out, char *err,
                        size_t len)
{
    *out = NULL;
    if (molt_config_load_string(source, strlen(source), path, out, err, len) < 0)
        return -1;
    molt_config_t *cfg = *out;
    for (size_t i = 0; i < cfg->nplugins; i++) {
        const char *base = strrchr(cfg->plugins[i].path, '/');
        char *copy;
        if (asprintf(&copy, "%s/%s", dir, base ? base + 1 : cfg->plugins[i].path) < 0) {
            snprintf(err, len, "out of memory");
            molt_config_free(cfg);
            *out = NULL;
            return -1;
        }
        free(cfg->plugins[i].path);
        cfg->plugins[i].path = copy;
    }
    return 0;
}

/* Remaining time of an active timer, in ms; nil when it is not running. */
static void pack_timer(msgpack_packer *pk, const char *key, ev_timer *t)
{
    molt_mp_pack_str(pk, key);
    if (ev_is_active(t))
        msgpack_pack_uint64(pk, (uint64_t)(ev_timer_remaining(S.loop, t) * 1000.0));
    else
        msgpack_pack_nil(pk);
}

static void pack_u64s(msgpack_packer *pk, const char *key, const uint64_t *v, size_t n)
{
    molt_mp_pack_str(pk, key);
    msgpack_pack_array(pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        msgpack_pack_uint64(pk, v[i]);
}

unsigned sup_procs_upgrade_count(void)
{
    return 4;
}

void sup_procs_upgrade_pack(msgpack_packer *pk)
{
    molt_mp_pack_kv_u64(pk, "next_gen", S.next_gen);
    molt_mp_pack_kv_u64(pk, "active", S.active ? S.active->number : 0);
    unsigned n = 0;
    for (size_t i = 0; i < SUP_MAX_GENS; i++)
        n += S.gens[i] != NULL;
    molt_mp_pack_str(pk, "gens");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < SUP_MAX_GENS; i++) {
        sup_gen_t *g = S.gens[i];
        if (!g)
            continue;
        msgpack_pack_map(pk, 17);
        molt_mp_pack_kv_u64(pk, "number", g->number);
        molt_mp_pack_kv_str(pk, "id", g->id);
        sup_up_pack_str(pk, "source", g->cfg->source);
        molt_mp_pack_kv_str(pk, "path", g->cfg->path);
        sup_up_pack_str(pk, "dir", g->dir);
        molt_mp_pack_kv_bool(pk, "served", g->served);
        molt_mp_pack_kv_u64(pk, "state", g->state);
        molt_mp_pack_kv_u64(pk, "nready", g->nready);
        sup_up_pack_json(pk, "plugins", g->plugins);
        pack_timer(pk, "kill_ms", &g->kill_w);
        molt_mp_pack_kv_bool(pk, "retired", g->retired);
        molt_mp_pack_kv_bool(pk, "strict", g->strict);
        molt_mp_pack_kv_bool(pk, "paused", g->paused);
        molt_mp_pack_kv_bool(pk, "replicated", g->replicated);
        molt_mp_pack_kv_u64(pk, "created_ms", g->created_ms);
        molt_mp_pack_str(pk, "ident");
        msgpack_pack_map(pk, 6);
        molt_mp_pack_kv_bool(pk, "drop", g->ident.drop);
        molt_mp_pack_kv_u64(pk, "uid", g->ident.uid);
        molt_mp_pack_kv_u64(pk, "gid", g->ident.gid);
        molt_mp_pack_kv_str(pk, "user", g->ident.user);
        molt_mp_pack_kv_str(pk, "group", g->ident.group);
        molt_mp_pack_str(pk, "groups");
        msgpack_pack_array(pk, (uint32_t)g->ident.ngroups);
        for (size_t k = 0; k < g->ident.ngroups; k++)
            msgpack_pack_uint64(pk, g->ident.groups[k]);
        molt_mp_pack_kv_u64(pk, "nworkers", g->nworkers);
    }
    n = 0;
    for (size_t i = 0; i < SUP_MAX_PROCS; i++)
        n += S.procs[i].state != SUP_W_EMPTY;
    molt_mp_pack_str(pk, "procs");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        sup_proc_t *p = &S.procs[i];
        if (p->state == SUP_W_EMPTY)
            continue;
        msgpack_pack_map(pk, 19);
        molt_mp_pack_kv_u64(pk, "index", i);
        molt_mp_pack_kv_u64(pk, "gen", p->gen->number);
        molt_mp_pack_kv_u64(pk, "slot", p->slot);
        molt_mp_pack_kv_u64(pk, "state", p->state);
        sup_up_pack_i64(pk, "pid", p->pid);
        sup_up_pack_i64(pk, "chan", p->chan);
        molt_mp_pack_kv_u64(pk, "started_mono", p->started_mono);
        molt_mp_pack_kv_u64(pk, "started_wall", p->started_wall);
        molt_mp_pack_kv_u64(pk, "restarts", p->restarts);
        molt_mp_pack_kv_u64(pk, "failures", p->backoff.failures);
        molt_mp_pack_kv_u64(pk, "delay_ms", p->backoff.delay_ms);
        molt_mp_pack_kv_u64(pk, "respawn_at_wall", p->respawn_at_wall);
        molt_mp_pack_kv_str(pk, "last_exit", p->last_exit);
        molt_mp_pack_kv_str(pk, "loading", p->loading);
        molt_mp_pack_kv_str(pk, "fail_reason", p->fail_reason);
        pack_u64s(pk, "requests", p->requests, 5);
        molt_mp_pack_kv_u64(pk, "conns", p->conns);
        molt_mp_pack_kv_u64(pk, "rss", p->rss);
        pack_timer(pk, "timer_ms", &p->timer_w);
    }
}

/* nil, or a count of ms: a timer to start. */
static bool unpack_timer(sup_up_rd_t *rd, const msgpack_object *map, const char *key, bool *set, double *secs)
{
    const msgpack_object *v = rd->failed ? NULL : molt_mp_map_get(map, key);
    *set = false;
    if (v && v->type == MSGPACK_OBJECT_NIL)
        return true;
    uint64_t ms = 0;
    if (!sup_up_u64(rd, map, key, &ms))
        return false;
    *set = true;
    *secs = ms / 1000.0;
    return true;
}

static bool unpack_gen(sup_up_rd_t *rd, const msgpack_object *o)
{
    char *source = NULL, *path = NULL, err[1024];
    uint64_t state = 0, nready = 0, nworkers = 0, uid = 0, gid = 0;
    sup_gen_t *g = calloc(1, sizeof(*g));
    if (!g) {
        sup_up_fail(rd, "gens: out of memory");
        return false;
    }
    size_t slot;
    for (slot = 0; slot < SUP_MAX_GENS && S.gens[slot]; slot++)
        ;
    if (slot == SUP_MAX_GENS) {
        sup_up_fail(rd, "gens: more than %d generations", SUP_MAX_GENS);
        free(g);
        return false;
    }
    S.gens[slot] = g; /* from here freed with S.gens (sup_gen_free), whatever fails */
    sup_up_u64(rd, o, "number", &g->number);
    sup_up_str(rd, o, "id", g->id, sizeof(g->id));
    sup_up_strdup(rd, o, "source", &source);
    sup_up_strdup(rd, o, "path", &path);
    sup_up_strdup(rd, o, "dir", &g->dir);
    sup_up_bool(rd, o, "served", &g->served);
    sup_up_u64(rd, o, "state", &state);
    sup_up_u64(rd, o, "nready", &nready);
    sup_up_u64(rd, o, "nworkers", &nworkers);
    sup_up_json(rd, o, "plugins", &g->plugins);
    bool kill_set = false;
    double kill_s = 0;
    unpack_timer(rd, o, "kill_ms", &kill_set, &kill_s);
    sup_up_bool(rd, o, "retired", &g->retired);
    sup_up_bool(rd, o, "strict", &g->strict);
    sup_up_bool(rd, o, "paused", &g->paused);
    sup_up_bool(rd, o, "replicated", &g->replicated);
    sup_up_u64(rd, o, "created_ms", &g->created_ms);
    const msgpack_object *id = sup_up_map(rd, o, "ident");
    bool drop = false;
    sup_up_bool(rd, id, "drop", &drop);
    sup_up_u64(rd, id, "uid", &uid);
    sup_up_u64(rd, id, "gid", &gid);
    sup_up_str(rd, id, "user", g->ident.user, sizeof(g->ident.user));
    sup_up_str(rd, id, "group", g->ident.group, sizeof(g->ident.group));
    const msgpack_object *groups = sup_up_array(rd, id, "groups");
    if (rd->failed)
        goto out;
    if (!source || !path || !g->dir || state >= SUP_GEN_STATE_COUNT || nworkers < 1 ||
        nworkers > MOLT_CONFIG_MAX_WORKERS || nready > nworkers || g->number == 0 || g->number > S.next_gen) {
        sup_up_fail(rd, "generation %llu: a field is out of range", (unsigned long long)g->number);
        goto out;
    }
    for (size_t i = 0; i < SUP_MAX_GENS; i++)
        if (S.gens[i] && S.gens[i] != g && S.gens[i]->number == g->number)
            sup_up_fail(rd, "generation %llu appears twice", (unsigned long long)g->number);
    g->state = (sup_gen_state_t)state;
    g->nready = (unsigned)nready;
    g->nworkers = (unsigned)nworkers;
    g->ident.drop = drop;
    g->ident.uid = (uid_t)uid;
    g->ident.gid = (gid_t)gid;
    if (groups->via.array.size && !(g->ident.groups = calloc(groups->via.array.size, sizeof(gid_t))))
        sup_up_fail(rd, "generation %llu: out of memory", (unsigned long long)g->number);
    for (uint32_t i = 0; !rd->failed && i < groups->via.array.size; i++) {
        const msgpack_object *v = &groups->via.array.ptr[i];
        if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 > UINT32_MAX)
            sup_up_fail(rd, "generation %llu: ident.groups[%u] is not a gid", (unsigned long long)g->number, i);
        else
            g->ident.groups[g->ident.ngroups++] = (gid_t)v->via.u64;
    }
    /* Its config as it was parsed, plugin files from its own directory:
     * exactly what its workers run, whatever the config file says now. */
    if (!rd->failed && sup_gen_config_load(source, path, g->dir, &g->cfg, err, sizeof(err)) < 0)
        sup_up_fail(rd, "generation %llu: its config no longer loads: %s", (unsigned long long)g->number, err);
    if (!rd->failed && g->cfg->workers != g->nworkers)
        sup_up_fail(rd, "generation %llu: %u workers, its config says %u", (unsigned long long)g->number,
                    g->nworkers, g->cfg->workers);
    if (!rd->failed && kill_set) {
        ev_timer_init(&g->kill_w, gen_on_kill_deadline, kill_s, 0.);
        g->kill_w.data = g;
        ev_timer_start(S.loop, &g->kill_w);
    }
out:
    free(source);
    free(path);
    return !rd->failed;
}

static bool unpack_proc(sup_up_rd_t *rd, const msgpack_object *o)
{
    uint64_t index = 0, gen = 0, slot = 0, state = 0, u = 0;
    int64_t pid = 0, chan = -1;
    if (!sup_up_u64(rd, o, "index", &index) || !sup_up_u64(rd, o, "gen", &gen))
        return false;
    sup_gen_t *g = sup_gen_by_number(gen);
    if (index >= SUP_MAX_PROCS || S.procs[index].state != SUP_W_EMPTY || !g) {
        sup_up_fail(rd, "procs: entry %llu (generation %llu) is out of range, taken twice, or of no generation",
                    (unsigned long long)index, (unsigned long long)gen);
        return false;
    }
    sup_proc_t *p = &S.procs[index];
    memset(p, 0, sizeof(*p));
    p->chan = -1;
    sup_up_u64(rd, o, "slot", &slot);
    sup_up_u64(rd, o, "state", &state);
    sup_up_i64(rd, o, "pid", &pid);
    sup_up_i64(rd, o, "chan", &chan);
    sup_up_u64(rd, o, "started_mono", &p->started_mono);
    sup_up_u64(rd, o, "started_wall", &p->started_wall);
    if (sup_up_u64(rd, o, "restarts", &u))
        p->restarts = (unsigned)u;
    if (sup_up_u64(rd, o, "failures", &u))
        p->backoff.failures = (uint32_t)u;
    if (sup_up_u64(rd, o, "delay_ms", &u))
        p->backoff.delay_ms = (uint32_t)u;
    sup_up_u64(rd, o, "respawn_at_wall", &p->respawn_at_wall);
    sup_up_str(rd, o, "last_exit", p->last_exit, sizeof(p->last_exit));
    sup_up_str(rd, o, "loading", p->loading, sizeof(p->loading));
    sup_up_str(rd, o, "fail_reason", p->fail_reason, sizeof(p->fail_reason));
    const msgpack_object *req = sup_up_array(rd, o, "requests");
    sup_up_u64(rd, o, "conns", &p->conns);
    sup_up_u64(rd, o, "rss", &p->rss);
    bool timer_set = false;
    double timer_s = 0;
    unpack_timer(rd, o, "timer_ms", &timer_set, &timer_s);
    if (rd->failed)
        return false;
    if (slot >= g->nworkers || state == SUP_W_EMPTY || state >= SUP_W_STATE_COUNT || pid < 0 || pid > INT32_MAX ||
        (pid > 0) != (state == SUP_W_STARTING || state == SUP_W_READY || state == SUP_W_DRAINING) ||
        req->via.array.size != 5) {
        sup_up_fail(rd, "procs: entry %llu: a field is out of range", (unsigned long long)index);
        return false;
    }
    for (uint32_t i = 0; i < 5; i++)
        if (req->via.array.ptr[i].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            p->requests[i] = req->via.array.ptr[i].via.u64;
    /* A live worker's channel must be the one it talks on. */
    if (chan >= 0 && !sup_upgrade_fd_ok(rd, "procs: a channel", chan, SOCK_SEQPACKET, false))
        return false;
    p->gen = g;
    p->slot = (unsigned)slot;
    p->state = (sup_wstate_t)state;
    p->pid = (pid_t)pid;
    p->chan = (int)chan;
    g->nprocs++;
    if (p->chan >= 0) {
        ev_io_init(&p->chan_w, proc_on_chan, p->chan, EV_READ);
        p->chan_w.data = p;
        ev_io_start(S.loop, &p->chan_w);
    }
    p->timer_w.data = p; /* also when it is not running: proc_schedule_respawn() only re-inits it */
    if (timer_set) {
        ev_timer_init(&p->timer_w, proc_on_timer, timer_s, 0.);
        ev_timer_start(S.loop, &p->timer_w);
    }
    return true;
}

bool sup_procs_upgrade_unpack(sup_up_rd_t *rd, const msgpack_object *top)
{
    uint64_t active = 0;
    sup_up_u64(rd, top, "next_gen", &S.next_gen);
    sup_up_u64(rd, top, "active", &active);
    const msgpack_object *gens = sup_up_array(rd, top, "gens");
    const msgpack_object *procs = sup_up_array(rd, top, "procs");
    for (uint32_t i = 0; gens && !rd->failed && i < gens->via.array.size; i++)
        unpack_gen(rd, &gens->via.array.ptr[i]);
    if (!rd->failed && !(S.active = sup_gen_by_number(active)))
        sup_up_fail(rd, "active: generation %llu is not among the generations", (unsigned long long)active);
    for (uint32_t i = 0; procs && !rd->failed && i < procs->via.array.size; i++)
        unpack_proc(rd, &procs->via.array.ptr[i]);
    return !rd->failed;
}
