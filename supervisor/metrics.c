/*
 * Metrics in the Prometheus text format (supervisor/metrics.h). Rendering
 * reads the supervisor's state (S) and the counts below; it allocates only
 * the output buffer, so a scrape costs the loop microseconds.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "shared/util.h"
#include "supervisor/backoff.h"
#include "supervisor/gendir.h"
#include "supervisor/metrics.h"
#include "supervisor/reload.h"
#include "supervisor/sup.h"
#include "supervisor/upgrade.h"

enum { M_COMMITTED = 0, M_ROLLED_BACK = 1, M_REJECTED = 2, M_RESULT_COUNT };
static const char *const result_names[M_RESULT_COUNT] = {"committed", "rolled_back", "rejected"};

enum { M_HANDOFF = 0, M_HANDBACK = 1, M_CATCHUP = 2, M_STATE_KIND_COUNT };
static const char *const state_kinds[M_STATE_KIND_COUNT] = {"handoff", "handback", "catchup"};

static const char *const class_names[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

static struct {
    uint64_t reloads[M_RESULT_COUNT];
    uint64_t reload_ms_sum;                    /* every reload's total */
    uint64_t phase_ms_sum[SUP_RL_PHASE_COUNT]; /* per phase, over every reload that ran it */
    uint64_t phase_count[SUP_RL_PHASE_COUNT];
    bool last_set;                              /* a reload has ended */
    uint64_t last_phase_ms[SUP_RL_PHASE_COUNT]; /* the last reload's; 0 for a phase it did not run */
    uint64_t last_ms, last_end_wall;
    int last_result;
    uint64_t requests[5]; /* running totals over every worker there was */
    uint64_t restarts;
    uint64_t state_bytes[M_STATE_KIND_COUNT];
    uint64_t upgrades[2]; /* done, failed */
} M;

void sup_metrics_reset(void)
{
    memset(&M, 0, sizeof(M));
}

void sup_metrics_on_reload(const char *result, const json_t *phases, uint64_t ms)
{
    int r;
    for (r = 0; r < M_RESULT_COUNT; r++)
        if (strcmp(result, result_names[r]) == 0)
            break;
    if (r == M_RESULT_COUNT)
        return;
    M.reloads[r]++;
    M.reload_ms_sum += ms;
    M.last_set = true;
    M.last_ms = ms;
    M.last_result = r;
    M.last_end_wall = molt_wall_ms();
    for (int ph = SUP_RL_IDLE + 1; ph < SUP_RL_PHASE_COUNT; ph++) {
        json_t *v = json_object_get(phases, sup_reload_phase_name((sup_rl_phase_t)ph));
        json_int_t phase_ms = json_integer_value(v);
        M.last_phase_ms[ph] = phase_ms > 0 ? (uint64_t)phase_ms : 0;
        if (!json_is_integer(v))
            continue;
        M.phase_ms_sum[ph] += M.last_phase_ms[ph];
        M.phase_count[ph]++;
    }
}

void sup_metrics_on_requests(const uint64_t before[5], const uint64_t now[5])
{
    /* A worker's own counts only grow; were one ever lower, count it anew
     * rather than take anything back. */
    for (int c = 0; c < 5; c++)
        M.requests[c] += now[c] >= before[c] ? now[c] - before[c] : now[c];
}

void sup_metrics_on_restart(void)
{
    M.restarts++;
}

void sup_metrics_on_upgrade(bool done)
{
    M.upgrades[done ? 0 : 1]++;
}

void sup_metrics_on_state_bytes(const char *kind, uint64_t bytes)
{
    for (int k = 0; k < M_STATE_KIND_COUNT; k++)
        if (strcmp(kind, state_kinds[k]) == 0)
            M.state_bytes[k] += bytes;
}

/* ---- rendering -------------------------------------------------------------------------- */

static int head(molt_buf_t *b, const char *name, const char *type, const char *help)
{
    return molt_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the format asks (\\, \", \n). */
static int label_value(molt_buf_t *b, const char *v)
{
    int rc = 0;
    for (; *v && rc == 0; v++) {
        if (*v == '\\')
            rc = molt_buf_append(b, "\\\\", 2);
        else if (*v == '"')
            rc = molt_buf_append(b, "\\\"", 2);
        else if (*v == '\n')
            rc = molt_buf_append(b, "\\n", 2);
        else
            rc = molt_buf_append(b, v, 1);
    }
    return rc;
}

/* Milliseconds as seconds, exactly (no float rounding). */
static int seconds(molt_buf_t *b, uint64_t ms)
{
    return molt_buf_printf(b, "%llu.%03llu", (unsigned long long)(ms / 1000),
                           (unsigned long long)(ms % 1000));
}

static int render_info(molt_buf_t *b)
{
    const sup_gen_t *gen = S.active;
    int rc = 0;
    rc |= head(b, "moltd_up", "gauge", "1 while moltd runs and answers.");
    rc |= molt_buf_printf(b, "moltd_up 1\n");
    rc |= head(b, "moltd_info", "gauge",
               "moltd's version and its active generation (number and UUID; empty while none); always 1.");
    rc |= molt_buf_printf(b, "moltd_info{version=\"");
    rc |= label_value(b, sup_version);
    rc |= molt_buf_printf(b, "\",generation=\"");
    if (gen)
        rc |= molt_buf_printf(b, "%llu", (unsigned long long)gen->number);
    rc |= molt_buf_printf(b, "\",generation_id=\"");
    rc |= label_value(b, gen ? gen->id : "");
    rc |= molt_buf_printf(b, "\"} 1\n");
    rc |= head(b, "moltd_active_generation", "gauge",
               "Number of the active generation (0 while there is none).");
    rc |= molt_buf_printf(b, "moltd_active_generation %llu\n", (unsigned long long)(gen ? gen->number : 0));
    rc |=
        head(b, "moltd_start_time_seconds", "gauge", "When moltd started, in seconds since the Unix epoch.");
    rc |= molt_buf_printf(b, "moltd_start_time_seconds ");
    rc |= seconds(b, S.started_wall);
    rc |= molt_buf_printf(b, "\n");
    rc |= head(b, "moltd_upgrades_total", "counter",
               "Supervisor binary upgrades (SIGUSR2, moltctl upgrade) by result: done, failed (refused, or the "
               "new binary could not take over: the old one runs on).");
    rc |= molt_buf_printf(b, "moltd_upgrades_total{result=\"done\"} %llu\nmoltd_upgrades_total{result=\"failed\"} %llu\n",
                          (unsigned long long)M.upgrades[0], (unsigned long long)M.upgrades[1]);
    return rc;
}

static int render_reloads(molt_buf_t *b)
{
    int rc = 0;
    rc |= head(b, "moltd_reloads_total", "counter",
               "Reloads and rollbacks by result: committed, rolled_back (workers were started and are gone "
               "again), rejected (nothing was started).");
    for (int r = 0; r < M_RESULT_COUNT; r++)
        rc |= molt_buf_printf(b, "moltd_reloads_total{result=\"%s\"} %llu\n", result_names[r],
                              (unsigned long long)M.reloads[r]);
    rc |= head(b, "moltd_reload_duration_seconds", "summary", "Reload durations, from start to outcome.");
    rc |= molt_buf_printf(b, "moltd_reload_duration_seconds_sum ");
    rc |= seconds(b, M.reload_ms_sum);
    uint64_t n = 0;
    for (int r = 0; r < M_RESULT_COUNT; r++)
        n += M.reloads[r];
    rc |= molt_buf_printf(b, "\nmoltd_reload_duration_seconds_count %llu\n", (unsigned long long)n);
    rc |= head(b, "moltd_reload_phase_duration_seconds", "summary",
               "Time spent in each reload phase, over every reload that entered it.");
    for (int ph = SUP_RL_IDLE + 1; ph < SUP_RL_PHASE_COUNT; ph++) {
        const char *name = sup_reload_phase_name((sup_rl_phase_t)ph);
        rc |= molt_buf_printf(b, "moltd_reload_phase_duration_seconds_sum{phase=\"%s\"} ", name);
        rc |= seconds(b, M.phase_ms_sum[ph]);
        rc |= molt_buf_printf(b, "\nmoltd_reload_phase_duration_seconds_count{phase=\"%s\"} %llu\n", name,
                              (unsigned long long)M.phase_count[ph]);
    }
    rc |= head(b, "moltd_last_reload_phase_seconds", "gauge",
               "Each phase's duration in the last reload (0 for a phase it did not enter); no samples before "
               "the first reload.");
    rc |= head(b, "moltd_last_reload_duration_seconds", "gauge", "The last reload's duration.");
    rc |= head(b, "moltd_last_reload_success", "gauge", "1 if the last reload committed, 0 if not.");
    rc |= head(b, "moltd_last_reload_timestamp_seconds", "gauge",
               "When the last reload ended, in seconds since the Unix epoch.");
    if (!M.last_set)
        return rc;
    for (int ph = SUP_RL_IDLE + 1; ph < SUP_RL_PHASE_COUNT; ph++) {
        rc |= molt_buf_printf(b, "moltd_last_reload_phase_seconds{phase=\"%s\"} ",
                              sup_reload_phase_name((sup_rl_phase_t)ph));
        rc |= seconds(b, M.last_phase_ms[ph]);
        rc |= molt_buf_printf(b, "\n");
    }
    rc |= molt_buf_printf(b, "moltd_last_reload_duration_seconds ");
    rc |= seconds(b, M.last_ms);
    rc |= molt_buf_printf(b, "\nmoltd_last_reload_success %d\n", M.last_result == M_COMMITTED);
    rc |= molt_buf_printf(b, "moltd_last_reload_timestamp_seconds ");
    rc |= seconds(b, M.last_end_wall);
    rc |= molt_buf_printf(b, "\n");
    return rc;
}

static int render_workers(molt_buf_t *b)
{
    uint64_t by_state[SUP_W_STATE_COUNT] = {0};
    uint64_t conns = 0, rss = 0, crashloop = 0;
    int rc = 0;
    for (size_t i = 0; i < SUP_MAX_PROCS; i++) {
        const sup_proc_t *p = &S.procs[i];
        if (p->state == SUP_W_EMPTY || p->state >= SUP_W_STATE_COUNT)
            continue;
        by_state[p->state]++;
        if (p->pid > 0) {
            conns += p->conns;
            rss += p->rss;
        }
        if (sup_backoff_crashloop(&p->backoff))
            crashloop++;
    }
    rc |= head(b, "moltd_workers", "gauge", "Worker process-table entries of every generation, by state.");
    for (int s = SUP_W_EMPTY + 1; s < SUP_W_STATE_COUNT; s++)
        rc |= molt_buf_printf(b, "moltd_workers{state=\"%s\"} %llu\n", sup_wstate_name((sup_wstate_t)s),
                              (unsigned long long)by_state[s]);
    rc |= head(b, "moltd_workers_crashloop", "gauge", "Worker slots in crash-loop backoff.");
    rc |= molt_buf_printf(b, "moltd_workers_crashloop %llu\n", (unsigned long long)crashloop);
    rc |= head(b, "moltd_worker_restarts_total", "counter",
               "Worker processes respawned after an unexpected exit (every slot, every generation).");
    rc |= molt_buf_printf(b, "moltd_worker_restarts_total %llu\n", (unsigned long long)M.restarts);
    rc |= head(b, "moltd_requests_total", "counter",
               "HTTP responses sent by every worker moltd ran, by status class (as the workers report them, "
               "every 0.5 s and when they exit).");
    for (int c = 0; c < 5; c++)
        rc |= molt_buf_printf(b, "moltd_requests_total{class=\"%s\"} %llu\n", class_names[c],
                              (unsigned long long)M.requests[c]);
    rc |= head(b, "moltd_connections", "gauge",
               "Client connections open in the running workers (last reports).");
    rc |= molt_buf_printf(b, "moltd_connections %llu\n", (unsigned long long)conns);
    rc |= head(b, "moltd_workers_rss_bytes", "gauge",
               "Resident memory of the running workers together (last reports).");
    rc |= molt_buf_printf(b, "moltd_workers_rss_bytes %llu\n", (unsigned long long)rss);
    return rc;
}

static int render_state_and_gens(molt_buf_t *b)
{
    uint64_t by_state[SUP_GEN_STATE_COUNT] = {0};
    int rc = 0;
    rc |=
        head(b, "moltd_state_bytes_total", "counter",
             "Bytes of plugin state moved between workers, by kind: handoff (a reload), handback (a rollback "
             "from the stable window), catchup (a respawned worker).");
    for (int k = 0; k < M_STATE_KIND_COUNT; k++)
        rc |= molt_buf_printf(b, "moltd_state_bytes_total{kind=\"%s\"} %llu\n", state_kinds[k],
                              (unsigned long long)M.state_bytes[k]);
    for (size_t i = 0; i < SUP_MAX_GENS; i++)
        if (S.gens[i] && S.gens[i]->state < SUP_GEN_STATE_COUNT)
            by_state[S.gens[i]->state]++;
    rc |= head(b, "moltd_generations", "gauge",
               "Generations in memory by state: starting (a reload's, not committed yet), active, draining.");
    for (int s = 0; s < SUP_GEN_STATE_COUNT; s++)
        rc |= molt_buf_printf(b, "moltd_generations{state=\"%s\"} %llu\n",
                              sup_gen_state_name((sup_gen_state_t)s), (unsigned long long)by_state[s]);
    rc |= head(
        b, "moltd_generations_on_disk", "gauge",
        "Generation directories (gen-<uuid>) in runtime_dir: the live ones and those kept for rollback.");
    int n = S.active ? sup_gendir_count(S.active->cfg->runtime_dir) : 0;
    if (n >= 0) /* unreadable: no sample rather than a wrong one */
        rc |= molt_buf_printf(b, "moltd_generations_on_disk %d\n", n);
    return rc;
}

int sup_metrics_render(molt_buf_t *out)
{
    int rc = render_info(out);
    rc |= render_reloads(out);
    rc |= render_workers(out);
    rc |= render_state_and_gens(out);
    return rc ? -ENOMEM : 0;
}

/* ---- upgrade: the counts survive the exec ------------------------------------------------------ */

#define M_U64S(X)                                                                                                    \
    X(reloads, M_RESULT_COUNT)                                                                                       \
    X(phase_ms_sum, SUP_RL_PHASE_COUNT)                                                                              \
    X(phase_count, SUP_RL_PHASE_COUNT)                                                                               \
    X(last_phase_ms, SUP_RL_PHASE_COUNT)                                                                             \
    X(requests, 5)                                                                                                   \
    X(state_bytes, M_STATE_KIND_COUNT)                                                                               \
    X(upgrades, 2)

unsigned sup_metrics_upgrade_count(void)
{
    return 1;
}

void sup_metrics_upgrade_pack(msgpack_packer *pk)
{
    molt_mp_pack_str(pk, "metrics");
    msgpack_pack_map(pk, 7 + 6);
#define PACK(f, n)                                                                                                   \
    molt_mp_pack_str(pk, #f);                                                                                        \
    msgpack_pack_array(pk, n);                                                                                       \
    for (int i = 0; i < (n); i++)                                                                                    \
        msgpack_pack_uint64(pk, M.f[i]);
    M_U64S(PACK)
#undef PACK
    molt_mp_pack_kv_u64(pk, "reload_ms_sum", M.reload_ms_sum);
    molt_mp_pack_kv_bool(pk, "last_set", M.last_set);
    molt_mp_pack_kv_u64(pk, "last_ms", M.last_ms);
    molt_mp_pack_kv_u64(pk, "last_end_wall", M.last_end_wall);
    molt_mp_pack_kv_u64(pk, "last_result", (uint64_t)M.last_result);
    molt_mp_pack_kv_u64(pk, "restarts", M.restarts);
}

bool sup_metrics_upgrade_unpack(sup_up_rd_t *rd, const msgpack_object *top)
{
    const msgpack_object *o = sup_up_map(rd, top, "metrics"), *a;
    uint64_t last_result = 0;
#define UNPACK(f, n)                                                                                                 \
    if ((a = sup_up_array(rd, o, #f)) && a->via.array.size != (n))                                                  \
        sup_up_fail(rd, "metrics: %s: %u counts, this binary has %d", #f, a->via.array.size, (n));                  \
    for (int i = 0; !rd->failed && i < (n); i++)                                                                     \
        M.f[i] = a->via.array.ptr[i].type == MSGPACK_OBJECT_POSITIVE_INTEGER ? a->via.array.ptr[i].via.u64 : 0;
    M_U64S(UNPACK)
#undef UNPACK
    sup_up_u64(rd, o, "reload_ms_sum", &M.reload_ms_sum);
    sup_up_bool(rd, o, "last_set", &M.last_set);
    sup_up_u64(rd, o, "last_ms", &M.last_ms);
    sup_up_u64(rd, o, "last_end_wall", &M.last_end_wall);
    sup_up_u64(rd, o, "last_result", &last_result);
    sup_up_u64(rd, o, "restarts", &M.restarts);
    M.last_result = (int)(last_result % M_RESULT_COUNT);
    return !rd->failed;
}
