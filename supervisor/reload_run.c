/*
 * Running a reload: performs the action each transition of the state machine
 * (supervisor/reload.c) names, and tells every caller the outcome of the
 * reload that covers its request.
 *
 * One reload at a time. A request that arrives during one is queued; when
 * the running reload ends, every queued request is covered by one new
 * reload (coalesced), which reads the config as it is then.
 *
 * Spawn waits for every new worker's READY (plugins loaded and
 * initialised, accepting nothing yet); handoff (supervisor/handoff.c)
 * pauses the old generation and moves the plugins' state; verify runs the
 * health check in every new worker, then lets the new generation accept and
 * watches it serve alone for stable_ms.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shared/chan.h"
#include "shared/log.h"
#include "shared/util.h"
#include "supervisor/metrics.h"
#include "supervisor/notify.h"
#include "supervisor/reload.h"
#include "supervisor/sup.h"
#include "supervisor/upgrade.h"

typedef struct rl_waiter {
    struct rl_waiter *next;
    sup_reload_done_fn done;
    void *arg;
} rl_waiter_t;

static struct {
    sup_rl_phase_t phase;
    sup_gen_t *gen;            /* the generation being brought up */
    rl_waiter_t *waiters;      /* covered by the running reload */
    rl_waiter_t *queued;       /* arrived during it: covered by the next */
    bool queued_any;           /* a request without a waiter (SIGHUP) is queued too */
    uint64_t t0, phase_t0;     /* monotonic ms */
    json_t *phase_ms;          /* {"prepare": ms, ...} */
    sup_rl_phase_t failed_phase;
    char reason[2304];         /* room for a config error (2048) and a prefix */
    ev_timer timer;            /* the verify window */
    uint64_t verify_total0;    /* the new generation's responses when the window opened */
    uint64_t verify_errors0;
    unsigned reports_pending;  /* REPORTs asked at the end of the window, not yet answered */
    unsigned health_pending;   /* HEALTH checks asked at the start of verify, not yet answered */
    json_t *last;              /* the last outcome */
    bool rollback;             /* the running reload re-activates the previous generation */
    bool handed_off;           /* the running reload's handoff finished: its figures are told */
    bool accepted;             /* the new generation accepted (verify passed its health checks) */
    bool handing_back;         /* rolling back: the new generation's state goes back to the old one */
    json_t *handback;          /* the running reload's hand-back outcome, or NULL */
    bool rollback_queued;      /* a rollback was asked for while a reload ran */
    char *prev_source;         /* the config text of the generation active before the last commit */
    char *prev_dir;            /* its directory: the plugin copies a rollback loads */
    uint64_t prev_number;
    unsigned counts[3];        /* committed, rolled_back, rejected */
} R;

/* Fewer responses than this in the verify window say nothing about an error rate. */
#define SUP_VERIFY_MIN_RESPONSES 10
/* How long the end of a verify window waits for the workers' counters. */
#define SUP_VERIFY_REPORT_WAIT_MS 200
/* The supervisor waits this much past the worker's own health timeout. */
#define SUP_HEALTH_MARGIN_MS 500

/* Returned by a phase whose outcome comes later, from an event. */
#define RLE_WAIT ((sup_rl_event_t)SUP_RLE_EVENT_COUNT)

enum { RL_COMMITTED = 0, RL_ROLLED_BACK = 1, RL_REJECTED = 2 };
static const char *const result_names[] = {"committed", "rolled_back", "rejected"};

static void rl_event(sup_rl_event_t ev, const char *reason);

json_t *sup_reload_status_json(void)
{
    return json_pack("{s:s,s:O?,s:o,s:{s:I,s:I,s:I}}", "phase", sup_reload_phase_name(R.phase), "last", R.last,
                     "rollback_to", R.prev_source ? json_integer((json_int_t)R.prev_number) : json_null(),
                     "counts", "committed", (json_int_t)R.counts[RL_COMMITTED], "rolled_back",
                     (json_int_t)R.counts[RL_ROLLED_BACK], "rejected", (json_int_t)R.counts[RL_REJECTED]);
}

/* Records the running phase's duration, once (each phase runs at most once per reload). */
static void phase_leave(void)
{
    uint64_t now = molt_now_ms();
    const char *name = sup_reload_phase_name(R.phase);
    if (R.phase != SUP_RL_IDLE && R.phase_ms && !json_object_get(R.phase_ms, name))
        json_object_set_new(R.phase_ms, name, json_integer((json_int_t)(now - R.phase_t0)));
    R.phase_t0 = now;
}

/* ---- phases ----------------------------------------------------------------------------- */

static bool same_listeners(const molt_config_t *a, const molt_config_t *b)
{
    if (a->nlisten != b->nlisten)
        return false;
    for (size_t i = 0; i < a->nlisten; i++)
        if (strcmp(a->listen[i].name, b->listen[i].name) != 0 ||
            strcmp(a->listen[i].address, b->listen[i].address) != 0)
            return false;
    return true;
}

/* Parses and validates the config exactly as -t does, and copies the
 * plugins into a new generation directory. Changes nothing on failure. */
/*
 * The previous generation's config, as the text it was parsed from, with
 * every plugin file taken from that generation's directory: exactly what it
 * ran, whatever plugin_path holds now.
 */
static int rollback_config(molt_config_t **out, char *err, size_t len)
{
    if (!R.prev_source) {
        snprintf(err, len, "there is no previous generation to roll back to");
        return -1;
    }
    if (access(R.prev_dir, R_OK | X_OK) < 0) {
        snprintf(err, len, "the previous generation's directory %s is gone (%s; keep it with reload.keep_generations >= 2)",
                 R.prev_dir, strerror(errno));
        return -1;
    }
    char ebuf[1900]; /* leaves room for the prefix in err */
    if (sup_gen_config_load(R.prev_source, S.config_arg, R.prev_dir, out, ebuf, sizeof(ebuf)) < 0) {
        snprintf(err, len, "the previous generation's config no longer loads: %s", ebuf);
        return -1;
    }
    return 0;
}

/* Both NULL, or equal strings. */
static bool same_string(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static sup_rl_event_t reload_prepare(void)
{
    char err[2048];
    molt_config_t *cfg = NULL;
    int rc = R.rollback ? rollback_config(&cfg, err, sizeof(err))
                        : molt_config_load(S.config_arg, &cfg, err, sizeof(err));
    if (rc < 0) {
        snprintf(R.reason, sizeof(R.reason), "%s", err);
        return SUP_RLE_FAIL;
    }
    if (!same_listeners(cfg, S.active->cfg)) {
        snprintf(R.reason, sizeof(R.reason),
                 "%s: listen: the listeners differ from the running ones; changing them needs a restart",
                 cfg->path);
        molt_config_free(cfg);
        return SUP_RLE_FAIL;
    }
    if (strcmp(cfg->control_socket, S.active->cfg->control_socket) != 0) {
        snprintf(R.reason, sizeof(R.reason), "%s: control.socket: changing it needs a restart", cfg->path);
        molt_config_free(cfg);
        return SUP_RLE_FAIL;
    }
    /* Bound once at start, like the listeners and control.socket: the admin
     * listener, the control socket's group, the file moltd's stderr is. */
    const molt_config_t *run = S.active->cfg;
    const char *fixed = !same_string(cfg->admin_address, run->admin_address) ? "admin.address"
                        : !same_string(cfg->control_group, run->control_group) ? "control.group"
                        : !same_string(cfg->log_file, run->log_file)           ? "log.file"
                                                                               : NULL;
    if (fixed) {
        snprintf(R.reason, sizeof(R.reason), "%s: %s: changing it needs a restart", cfg->path, fixed);
        molt_config_free(cfg);
        return SUP_RLE_FAIL;
    }
    if (sup_gen_new(cfg, &R.gen, err, sizeof(err)) < 0) {
        snprintf(R.reason, sizeof(R.reason), "%s", err);
        molt_config_free(cfg);
        return SUP_RLE_FAIL;
    }
    molt_log_set_level((molt_log_level_t)cfg->log_level);
    molt_log_set_json(cfg->log_format == MOLT_LOG_FORMAT_JSON);
    return SUP_RLE_OK;
}

static sup_rl_event_t reload_spawn(void)
{
    int rc = sup_gen_spawn(R.gen);
    if (rc < 0) {
        snprintf(R.reason, sizeof(R.reason), "spawning the workers failed: %s", strerror(-rc));
        return SUP_RLE_FAIL;
    }
    return RLE_WAIT; /* READY from every worker, or a failure, comes later */
}

/* The old generation stops accepting and hands its state over
 * (supervisor/handoff.c); the outcome comes in sup_reload_on_handoff(). */
static sup_rl_event_t reload_handoff(void)
{
    sup_handoff_start(S.active, R.gen);
    return RLE_WAIT;
}

void sup_reload_on_handoff(bool ok, const char *reason)
{
    if (R.phase != SUP_RL_HANDOFF)
        return;
    R.handed_off = ok;
    rl_event(ok ? SUP_RLE_OK : SUP_RLE_FAIL, reason);
}

/* Responses of the new generation so far: all, and 5xx. */
static void gen_responses(const sup_gen_t *gen, uint64_t *total, uint64_t *errors)
{
    *total = *errors = 0;
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        const sup_proc_t *p = &S.procs[i];
        if (p->state == SUP_W_EMPTY || p->gen != gen)
            continue;
        for (int c = 0; c < 5; c++)
            *total += p->requests[c];
        *errors += p->requests[4];
    }
}

/*
 * Judges the stable window: the new generation served real traffic alone (a
 * death would have failed it already); its 5xx rate over the window, from
 * the counters its workers report, must be within max_error_rate. Too few
 * responses to judge (under SUP_VERIFY_MIN_RESPONSES) pass: an idle service
 * is not a failing one.
 */
static void verify_judge(void)
{
    ev_timer_stop(S.loop, &R.timer);
    R.reports_pending = 0;
    uint64_t total, errors;
    gen_responses(R.gen, &total, &errors);
    total -= R.verify_total0;
    errors -= R.verify_errors0;
    double rate = total ? (double)errors / (double)total : 0.0;
    double max = R.gen->cfg->reload.health.max_error_rate;
    if (total >= SUP_VERIFY_MIN_RESPONSES && rate > max) {
        char reason[256];
        snprintf(reason, sizeof(reason),
                 "5xx rate %.2f (%llu of %llu responses) in the %u ms window exceeds max_error_rate %.2f", rate,
                 (unsigned long long)errors, (unsigned long long)total, R.gen->cfg->reload.health.stable_ms, max);
        rl_event(SUP_RLE_FAIL, reason);
        return;
    }
    rl_event(SUP_RLE_OK, NULL);
}

static void on_reports_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    verify_judge(); /* with the counters that came */
}

/* The window is over: ask every new worker for its counters now (they
 * report only every half second otherwise), and judge once all answered. */
static void on_verify_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    R.reports_pending = sup_gen_request_reports(R.gen);
    if (!R.reports_pending) {
        verify_judge();
        return;
    }
    ev_timer_init(&R.timer, on_reports_deadline, SUP_VERIFY_REPORT_WAIT_MS / 1000.0, 0.);
    ev_timer_start(S.loop, &R.timer);
}

void sup_reload_on_stats(const sup_gen_t *gen)
{
    if (R.phase == SUP_RL_VERIFY && gen == R.gen && !R.health_pending && R.reports_pending &&
        --R.reports_pending == 0)
        verify_judge();
}

/* Every new worker passed its health check: the new generation accepts and
 * the stable window opens. */
static void verify_window(void)
{
    ev_timer_stop(S.loop, &R.timer);
    sup_handoff_accept(R.gen);
    R.accepted = true;
    gen_responses(R.gen, &R.verify_total0, &R.verify_errors0);
    ev_timer_init(&R.timer, on_verify_timer, R.gen->cfg->reload.health.stable_ms / 1000.0, 0.);
    ev_timer_start(S.loop, &R.timer);
}

static void on_health_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    char reason[160];
    snprintf(reason, sizeof(reason), "%u worker%s did not answer the health check within %u ms", R.health_pending,
             R.health_pending == 1 ? "" : "s", R.gen->cfg->reload.load_timeout_ms + SUP_HEALTH_MARGIN_MS);
    R.health_pending = 0;
    rl_event(SUP_RLE_FAIL, reason);
}

/*
 * Verify, first step: every new worker runs the configured health request
 * through its own full plugin pipeline, in-process, and every plugin's
 * health callback (HEALTH / HEALTH_RESULT). Then the stable window.
 */
static sup_rl_event_t reload_verify(void)
{
    const molt_reload_cfg_t *rc = &R.gen->cfg->reload;
    R.health_pending = sup_gen_request_health(R.gen, rc->health.path, rc->load_timeout_ms);
    if (!R.health_pending) {
        snprintf(R.reason, sizeof(R.reason), "no worker of the new generation could be asked for its health");
        return SUP_RLE_FAIL;
    }
    ev_timer_init(&R.timer, on_health_deadline, (rc->load_timeout_ms + SUP_HEALTH_MARGIN_MS) / 1000.0, 0.);
    ev_timer_start(S.loop, &R.timer);
    return RLE_WAIT;
}

void sup_reload_on_health(const sup_proc_t *p, int status, const char *error)
{
    if (R.phase != SUP_RL_VERIFY || p->gen != R.gen || !R.health_pending)
        return;
    const molt_health_cfg_t *h = &R.gen->cfg->reload.health;
    char reason[1024];
    if (error[0] || status != h->expect_status) {
        if (status && status != h->expect_status)
            snprintf(reason, sizeof(reason), "worker %u: GET %s returned %d, expected %d%s%s", p->slot, h->path,
                     status, h->expect_status, error[0] ? "; " : "", error);
        else
            snprintf(reason, sizeof(reason), "worker %u: %s", p->slot, error[0] ? error : "no health result");
        R.health_pending = 0;
        ev_timer_stop(S.loop, &R.timer);
        rl_event(SUP_RLE_FAIL, reason);
        return;
    }
    if (--R.health_pending == 0)
        verify_window();
}

static void outcome(int result)
{
    sup_gen_t *shown = result == RL_COMMITTED ? S.active : NULL;
    json_t *o = json_pack("{s:b,s:s,s:I,s:O}", "ok", result == RL_COMMITTED, "result", result_names[result], "ms",
                          (json_int_t)(molt_now_ms() - R.t0), "phases", R.phase_ms);
    if (shown) {
        json_object_set_new(o, "generation", json_integer((json_int_t)shown->number));
        json_object_set_new(o, "id", json_string(shown->id));
    } else {
        json_object_set_new(o, "phase", json_string(sup_reload_phase_name(R.failed_phase)));
        json_object_set_new(o, "reason", json_string(R.reason));
        json_object_set_new(o, "error", json_string(R.reason));
        if (S.active)
            json_object_set_new(o, "generation", json_integer((json_int_t)S.active->number));
    }
    if (R.handed_off && sup_handoff_last())
        json_object_set(o, "handoff", sup_handoff_last());
    if (R.handback)
        json_object_set(o, "handback", R.handback);
    R.counts[result]++;
    sup_metrics_on_reload(result_names[result], R.phase_ms, molt_now_ms() - R.t0);
    json_decref(R.last);
    R.last = o;
    json_t *ev = json_deep_copy(o);
    if (ev) {
        json_object_del(ev, "ok");
        json_object_set_new(ev, "type", json_string("reload"));
        sup_event_emit(ev);
    }
    if (result == RL_COMMITTED)
        molt_notice("reload: committed generation %llu (%s) in %llu ms", (unsigned long long)S.active->number,
                    S.active->id, (unsigned long long)(molt_now_ms() - R.t0));
    else if (result == RL_ROLLED_BACK)
        molt_error("reload: rolled back in phase %s: %s", sup_reload_phase_name(R.failed_phase), R.reason);
    else
        molt_error("reload: rejected: %s", R.reason);
    /* systemd: the reload that RELOADING=1 announced is over (unless moltd
     * is stopping: STOPPING=1 follows). */
    if (S.state != SUP_STOPPING && result == RL_COMMITTED)
        sup_notify_ready(false, "generation %llu committed in %llu ms", (unsigned long long)S.active->number,
                         (unsigned long long)(molt_now_ms() - R.t0));
    else if (S.state != SUP_STOPPING)
        sup_notify_ready(false, "reload failed: %s: %s", sup_reload_phase_name(R.failed_phase), R.reason);

    rl_waiter_t *w = R.waiters;
    R.waiters = NULL;
    while (w) {
        rl_waiter_t *next = w->next;
        w->done(w->arg, o);
        free(w);
        w = next;
    }
}

static sup_rl_event_t reload_commit(void)
{
    sup_gen_t *old = S.active;
    /* What a rollback goes back to: the generation being replaced. */
    free(R.prev_source);
    free(R.prev_dir);
    R.prev_source = old->cfg->source ? strdup(old->cfg->source) : NULL;
    R.prev_dir = old->dir ? strdup(old->dir) : NULL;
    R.prev_number = old->number;
    if (!R.prev_source || !R.prev_dir) {
        free(R.prev_source);
        free(R.prev_dir);
        R.prev_source = R.prev_dir = NULL;
    }
    R.gen->state = SUP_GEN_ACTIVE;
    R.gen->served = true;
    S.active = R.gen;
    R.gen = NULL;
    sup_gen_activate(S.active);
    old->retired = true;
    sup_gen_stop(old, true); /* drains; killed at drain_timeout_ms */
    phase_leave();           /* commit's own time, in the outcome that follows */
    outcome(RL_COMMITTED);
    return SUP_RLE_OK;
}

static sup_rl_event_t rollback_finish(void)
{
    sup_gen_t *gen = R.gen;
    R.gen = NULL;
    if (gen)
        sup_gen_stop(gen, true); /* polite if alive; killed at its deadline if not */
    if (S.active && S.active->paused)
        sup_gen_pause(S.active, false, false);
    return SUP_RLE_OK;
}

/* Whether some plugin instance of gen keeps state (its READY said so). */
static bool gen_stateful(const sup_gen_t *gen)
{
    size_t i;
    json_t *pl;
    json_array_foreach(gen->plugins, i, pl)
    {
        if (json_is_string(json_object_get(pl, "state")))
            return true;
    }
    return false;
}

/*
 * The new workers go and the old ones accept again. When the new generation
 * had started accepting (the rollback comes from the stable window), what it
 * changed meanwhile is handed back to the old generation first
 * (sup_handoff_start_back), so that an update it acknowledged is not lost;
 * the old generation resumes either way, the outcome says how the hand-back
 * went.
 */
static sup_rl_event_t reload_rollback(void)
{
    ev_timer_stop(S.loop, &R.timer);
    sup_handoff_cancel();
    if (R.accepted && R.gen && S.active && S.active->paused && gen_stateful(R.gen)) {
        molt_info("rollback: generation %llu served: its state goes back to generation %llu first",
                  (unsigned long long)R.gen->number, (unsigned long long)S.active->number);
        R.handing_back = true;
        sup_handoff_start_back(R.gen, S.active);
        return RLE_WAIT;
    }
    return rollback_finish();
}

void sup_reload_on_handback(bool ok, const char *reason)
{
    if (R.phase != SUP_RL_ROLLBACK || !R.handing_back)
        return;
    R.handing_back = false;
    json_t *fig = sup_handoff_back_last();
    json_decref(R.handback);
    R.handback = json_pack("{s:b}", "ok", ok);
    if (ok && fig) {
        json_object_set(R.handback, "bytes", json_object_get(fig, "bytes"));
        molt_notice("rollback: generation %llu's state handed back to generation %llu (%lld bytes)",
                    (unsigned long long)R.gen->number, (unsigned long long)S.active->number,
                    (long long)json_integer_value(json_object_get(fig, "bytes")));
    } else {
        json_object_set_new(R.handback, "reason", json_string(reason ? reason : "unknown"));
        molt_error("rollback: generation %llu's state was not handed back to generation %llu, which resumes "
                   "with the state it saved at the handoff: %s",
                   (unsigned long long)R.gen->number, (unsigned long long)S.active->number,
                   reason ? reason : "unknown");
    }
    rl_event(rollback_finish(), NULL);
}

/* ---- the loop --------------------------------------------------------------------------- */

static void reload_start(void)
{
    R.waiters = R.queued;
    R.queued = NULL;
    R.queued_any = false;
    R.rollback = R.rollback_queued;
    R.rollback_queued = false;
    R.handed_off = false;
    R.accepted = false;
    R.handing_back = false;
    json_decref(R.handback);
    R.handback = NULL;
    R.t0 = R.phase_t0 = molt_now_ms();
    R.reason[0] = '\0';
    R.failed_phase = SUP_RL_IDLE;
    json_decref(R.phase_ms);
    R.phase_ms = json_object();
    if (R.rollback)
        molt_notice("rollback: started (back to the config and plugins of generation %llu)",
                    (unsigned long long)R.prev_number);
    else
        molt_notice("reload: started (config %s)", S.config_arg);
    if (R.rollback)
        sup_notify_reloading("rolling back to generation %llu", (unsigned long long)R.prev_number);
    else
        sup_notify_reloading("reloading %s", S.config_arg);
    rl_event(SUP_RLE_REQUEST, NULL);
}

static void rl_event(sup_rl_event_t ev, const char *reason)
{
    while (ev != RLE_WAIT) {
        sup_rl_step_t step = sup_reload_step(R.phase, ev);
        if (step.next == R.phase && step.action == SUP_RLA_NONE)
            return; /* meaningless here (a late failure, say) */
        if (ev == SUP_RLE_FAIL) {
            R.failed_phase = R.phase;
            if (reason)
                snprintf(R.reason, sizeof(R.reason), "%s", reason);
            reason = NULL;
        }
        phase_leave();
        if (step.next != R.phase && step.next != SUP_RL_IDLE) {
            molt_info("reload: phase %s", sup_reload_phase_name(step.next));
            sup_event_emit(json_pack("{s:s,s:s}", "type", "reload", "phase", sup_reload_phase_name(step.next)));
        }
        R.phase = step.next;
        switch (step.action) {
        case SUP_RLA_PREPARE:
            ev = reload_prepare();
            break;
        case SUP_RLA_SPAWN:
            ev = reload_spawn();
            break;
        case SUP_RLA_PAUSE_OLD:
            ev = reload_handoff();
            break;
        case SUP_RLA_VERIFY:
            ev = reload_verify();
            break;
        case SUP_RLA_COMMIT:
            ev = reload_commit();
            break;
        case SUP_RLA_ROLLBACK:
            ev = reload_rollback();
            break;
        case SUP_RLA_REJECT:
            outcome(RL_REJECTED);
            ev = RLE_WAIT;
            break;
        case SUP_RLA_ROLLED_BACK:
            outcome(RL_ROLLED_BACK);
            ev = RLE_WAIT;
            break;
        default:
            ev = RLE_WAIT;
            break;
        }
    }
    if (R.phase == SUP_RL_IDLE && (R.queued || R.queued_any) && S.state == SUP_RUNNING)
        reload_start();
}

int sup_reload_request(sup_reload_done_fn done, void *arg)
{
    return sup_reload_request_kind(false, done, arg);
}

int sup_reload_request_kind(bool rollback, sup_reload_done_fn done, void *arg)
{
    /* A rollback is not coalesced with reloads: it names one generation to
     * go back to, which a reload running now would change. */
    if (rollback && (R.phase != SUP_RL_IDLE || R.queued || R.queued_any) && S.state == SUP_RUNNING) {
        if (done) {
            json_t *o = json_pack("{s:b,s:s,s:s,s:s}", "ok", 0, "result", "rejected", "error",
                                  "a reload is in progress; roll back after it", "reason",
                                  "a reload is in progress; roll back after it");
            done(arg, o);
            json_decref(o);
        }
        return -EBUSY;
    }
    if (S.state != SUP_RUNNING) {
        if (done) {
            json_t *o = json_pack("{s:b,s:s,s:s}", "ok", 0, "result", "rejected", "error",
                                  S.state == SUP_STOPPING ? "moltd is stopping" : "moltd is still starting");
            done(arg, o);
            json_decref(o);
        }
        return -EAGAIN;
    }
    if (done) {
        rl_waiter_t *w = calloc(1, sizeof(*w));
        if (!w)
            return -ENOMEM;
        w->done = done;
        w->arg = arg;
        w->next = R.queued;
        R.queued = w;
    } else {
        R.queued_any = true;
    }
    R.rollback_queued = rollback;
    if (R.phase == SUP_RL_IDLE)
        reload_start();
    else
        molt_info("reload: requested during one in phase %s; it will follow", sup_reload_phase_name(R.phase));
    return 0;
}

void sup_reload_forget(void *arg)
{
    rl_waiter_t **lists[] = {&R.waiters, &R.queued};
    for (size_t i = 0; i < 2; i++) {
        for (rl_waiter_t **pp = lists[i]; *pp;) {
            if ((*pp)->arg == arg) {
                rl_waiter_t *w = *pp;
                *pp = w->next;
                free(w);
            } else {
                pp = &(*pp)->next;
            }
        }
    }
}

void sup_reload_on_ready(sup_gen_t *gen)
{
    if (gen == R.gen && R.phase == SUP_RL_SPAWN)
        rl_event(SUP_RLE_OK, NULL);
}

void sup_reload_on_failed(sup_gen_t *gen, const char *reason)
{
    if (gen == R.gen)
        rl_event(SUP_RLE_FAIL, reason);
}

void sup_reload_shutdown(void)
{
    /* moltd stops: a reload in progress ends as rolled back, its callers told. */
    if (R.phase != SUP_RL_IDLE && R.phase != SUP_RL_COMMIT)
        rl_event(SUP_RLE_FAIL, "moltd is stopping");
    rl_waiter_t *w = R.queued;
    R.queued = NULL;
    R.queued_any = false;
    while (w) {
        rl_waiter_t *next = w->next;
        json_t *o = json_pack("{s:b,s:s,s:s}", "ok", 0, "result", "rejected", "error", "moltd is stopping");
        w->done(w->arg, o);
        json_decref(o);
        free(w);
        w = next;
    }
}

void sup_reload_free(void)
{
    ev_timer_stop(S.loop, &R.timer);
    json_decref(R.last);
    json_decref(R.handback);
    json_decref(R.phase_ms);
    free(R.prev_source);
    free(R.prev_dir);
    memset(&R, 0, sizeof(R));
}

bool sup_reload_running(void)
{
    return R.phase != SUP_RL_IDLE || R.queued || R.queued_any || R.rollback_queued;
}

/* ---- upgrade: what outlives a reload (its outcome, counts, the rollback target) ------------------ */

unsigned sup_reload_upgrade_count(void)
{
    return 1;
}

void sup_reload_upgrade_pack(msgpack_packer *pk)
{
    molt_mp_pack_str(pk, "reload");
    msgpack_pack_map(pk, 6);
    sup_up_pack_json(pk, "last", R.last);
    molt_mp_pack_str(pk, "counts");
    msgpack_pack_array(pk, 3);
    for (int i = 0; i < 3; i++)
        msgpack_pack_uint32(pk, R.counts[i]);
    sup_up_pack_str(pk, "prev_source", R.prev_source);
    sup_up_pack_str(pk, "prev_dir", R.prev_dir);
    molt_mp_pack_kv_u64(pk, "prev_number", R.prev_number);
    sup_up_pack_json(pk, "handback", R.handback);
}

bool sup_reload_upgrade_unpack(sup_up_rd_t *rd, const msgpack_object *top)
{
    const msgpack_object *o = sup_up_map(rd, top, "reload");
    sup_up_json(rd, o, "last", &R.last);
    const msgpack_object *counts = sup_up_array(rd, o, "counts");
    sup_up_strdup(rd, o, "prev_source", &R.prev_source);
    sup_up_strdup(rd, o, "prev_dir", &R.prev_dir);
    sup_up_u64(rd, o, "prev_number", &R.prev_number);
    sup_up_json(rd, o, "handback", &R.handback);
    if (!rd->failed && (counts->via.array.size != 3 || !R.prev_source != !R.prev_dir))
        sup_up_fail(rd, "reload: counts or the rollback target do not add up");
    for (uint32_t i = 0; !rd->failed && i < 3; i++)
        if (counts->via.array.ptr[i].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            R.counts[i] = (unsigned)counts->via.array.ptr[i].via.u64;
    return !rd->failed;
}
