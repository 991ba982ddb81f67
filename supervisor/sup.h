/*
 * The supervisor (moltd): owns the listening sockets, the control socket and
 * the process table; forks workers for a generation and keeps them alive.
 *
 * Everything a config built lives in one sup_gen_t (nginx's cycle): a reload
 * builds a new generation beside the live one, and throws it away if anything
 * fails, so the live one is never half-changed.
 */
#ifndef MOLT_SUPERVISOR_SUP_H
#define MOLT_SUPERVISOR_SUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <ev.h>
#include <jansson.h>

#include "shared/chan.h"
#include "shared/config.h"
#include "shared/entry.h"
#include "supervisor/backoff.h"

/* Active generation plus draining ones, each up to the worker maximum. */
#define SUP_MAX_GENS 4
#define SUP_MAX_PROCS (MOLT_CONFIG_MAX_WORKERS * SUP_MAX_GENS)
#define SUP_STOP_FAST_GRACE_MS 2000 /* a fast stop kills workers still alive after this */

typedef enum sup_gen_state {
    SUP_GEN_STARTING = 0, /* workers spawned, not all READY */
    SUP_GEN_ACTIVE = 1,   /* serving; dead workers are replaced */
    SUP_GEN_DRAINING = 2, /* told to stop; workers are not replaced */
    SUP_GEN_STATE_COUNT
} sup_gen_state_t;

typedef struct sup_gen {
    uint64_t number;       /* 1, 2, ... in this supervisor's life */
    char id[37];           /* UUID */
    molt_config_t *cfg;    /* owned */
    char *dir;             /* runtime_dir/gen-<id>: the copies its workers load (owned) */
    bool served;           /* became active once: its directory is worth keeping */
    sup_gen_state_t state;
    unsigned nworkers;
    unsigned nready;       /* workers that said READY at least once */
    json_t *plugins;       /* what the first READY worker reported loading */
    ev_timer kill_w;       /* once told to stop: the deadline after which its workers are killed */
    bool retired;          /* stopped because a reload committed its successor */
    bool strict;           /* an instance keeps strict state: a handoff snapshots after every
                            * connection closed (from READY) */
    bool paused;           /* handed off to a reload's new generation: accepts nothing, and a
                            * worker respawned meanwhile starts without accepting */
    bool replicated;       /* an instance keeps replicated state: a respawned worker catches up
                            * from a live sibling (from READY) */
    uint64_t created_ms;   /* wall clock */
    unsigned nprocs;       /* process-table entries still held by this generation */
    molt_worker_ident_t ident; /* whom its workers run as (config user / group, resolved) */
} sup_gen_t;

typedef enum sup_wstate {
    SUP_W_EMPTY = 0,    /* unused table entry */
    SUP_W_STARTING = 1, /* forked, loading plugins */
    SUP_W_READY = 2,    /* serving */
    SUP_W_DRAINING = 3, /* told to stop */
    SUP_W_BACKOFF = 4,  /* dead, respawn pending */
    SUP_W_FAILED = 5,   /* fatal exit; not respawned */
    SUP_W_STATE_COUNT
} sup_wstate_t;

/* One entry of the process table: a worker slot of one generation. */
typedef struct sup_proc {
    sup_gen_t *gen;
    unsigned slot;           /* 0..gen->nworkers-1: pairs an old worker with its successor */
    sup_wstate_t state;
    pid_t pid;               /* 0 when no process */
    int chan;                /* supervisor's end of the channel, -1 when none */
    uint64_t started_mono;   /* ms, monotonic */
    uint64_t started_wall;   /* ms, wall clock */
    unsigned restarts;
    sup_backoff_t backoff;
    uint64_t respawn_at_wall; /* when a pending respawn happens (wall ms), 0 if none */
    char last_exit[96];       /* "exited with code 2", "killed by signal 9 (Killed)" */
    char loading[256];        /* instance being initialised ("hello (/path/hello.so)"), "" once ready */
    char fail_reason[768];    /* what a FAIL message said */
    bool catchup;             /* respawned in standby: restores a sibling's replicated state, then
                               * accepts (supervisor/handoff.c) */
    /* last counters reported */
    uint64_t requests[5];
    uint64_t conns;
    uint64_t rss;
    ev_io chan_w;
    ev_timer timer_w; /* respawn delay, or start timeout */
} sup_proc_t;

typedef enum sup_state {
    SUP_BOOTING = 0,  /* first generation not yet ready */
    SUP_RUNNING = 1,
    SUP_STOPPING = 2,
    SUP_STATE_COUNT
} sup_state_t;

typedef struct sup {
    struct ev_loop *loop;
    const char *config_arg; /* -c as given */
    sup_state_t state;
    int exit_code;
    bool stop_fast;

    int listen_fds[MOLT_CONFIG_MAX_LISTEN];
    size_t nlisten;
    int ctl_fd;
    char *ctl_path; /* the socket file we created, unlinked at exit */

    sup_gen_t *active;
    sup_gen_t *gens[SUP_MAX_GENS];
    uint64_t next_gen;
    sup_proc_t procs[SUP_MAX_PROCS];

    uint64_t started_wall;
    uint64_t started_mono;

    ev_signal sig_term, sig_int, sig_quit, sig_hup, sig_usr1, sig_usr2;
    ev_child child_w;
    ev_timer stop_w;
    ev_io ctl_w;
    struct sup_ctl_conn *ctl_conns;
} sup_t;

extern sup_t S;

/* sup.c */
/* upgrade_fd >= 0: the new binary after an upgrade's exec (--upgrade-from),
 * failed_reason: the old one taken back after a failed restore. */
int sup_run(const char *config_path, int upgrade_fd, const char *failed_reason);
int sup_check(const char *config_path);
void sup_stop(bool fast);
const char *sup_wstate_name(sup_wstate_t s);
const char *sup_gen_state_name(sup_gen_state_t s);

/* proc.c: the process table */
/* Checks the plugin files of cfg and copies them into a new generation
 * directory (supervisor/gendir.h), then registers the generation; takes cfg
 * on success only. 0, or -errno with the reason in err. */
int sup_gen_new(molt_config_t *cfg, sup_gen_t **out, char *err, size_t errlen);
/* Forgets a generation; its directory goes unless it served and is among the
 * newest keep_generations. Accepts NULL. */
void sup_gen_free(sup_gen_t *gen);
int sup_gen_spawn(sup_gen_t *gen);
/* The live generation numbered `number`, or NULL. */
sup_gen_t *sup_gen_by_number(uint64_t number);
/* A generation's config from the text it was parsed from (`path` for
 * messages and relative paths), every plugin file taken from `dir` (the
 * generation's copies): exactly what it ran. 0, or -1 with why in err. */
int sup_gen_config_load(const char *source, const char *path, const char *dir, molt_config_t **out, char *err,
                        size_t len);
void sup_gen_stop(sup_gen_t *gen, bool graceful);
void sup_proc_kill_all(int sig);
unsigned sup_procs_alive(void);
void sup_on_child(struct ev_loop *loop, ev_child *w, int revents);
json_t *sup_procs_json(void);
/* Hooks proc.c calls into sup.c as generations change state. */
void sup_on_gen_ready(sup_gen_t *gen);
void sup_on_gen_failed(sup_gen_t *gen, const char *reason);
void sup_on_proc_gone(void);

/* Hands fd (the reopened log file) to every running worker (LOG_FD); how many got it. */
unsigned sup_procs_send_log_fd(int fd);

/* Tells every live worker of gen that a reload committed its generation. */
void sup_gen_activate(sup_gen_t *gen);

/* Asks every live worker of gen for a STATS report now; how many were asked. */
unsigned sup_gen_request_reports(sup_gen_t *gen);
/* Asks every live worker of gen to run the health check; how many were asked. */
unsigned sup_gen_request_health(sup_gen_t *gen, const char *path, uint32_t timeout_ms);
/* A HEALTH_RESULT came from worker p. */
void sup_reload_on_health(const sup_proc_t *p, int status, const char *error);
/* A STATS report came from a worker of gen. */
void sup_reload_on_stats(const sup_gen_t *gen);

/* Tells a generation's workers to stop (true) or start / resume (false)
 * accepting; close: also close their connections politely (a handoff). */
void sup_gen_pause(sup_gen_t *gen, bool pause, bool close);

/* handoff.c: a reload's handoff phase (state streams between generations).
 * Start pauses old and pairs its workers with gen's; the outcome comes
 * through sup_reload_on_handoff(). */
int sup_handoff_start(sup_gen_t *old, sup_gen_t *gen);
/* Verify passed its health checks: gen starts accepting (RESUME). */
void sup_handoff_accept(sup_gen_t *gen);
/* A rollback after `from` accepted: its state goes back to `to`; the outcome
 * comes through sup_reload_on_handback(). */
int sup_handoff_start_back(sup_gen_t *from, sup_gen_t *to);
json_t *sup_handoff_back_last(void);
void sup_handoff_on_quiesced(sup_proc_t *p);
void sup_handoff_on_saved(sup_proc_t *p, const molt_msg_t *msg);
void sup_handoff_on_restored(sup_proc_t *p, const molt_msg_t *msg);
/* A worker died (called for every death; the handoff picks its own). */
void sup_handoff_on_death(sup_proc_t *p);
void sup_handoff_cancel(void);
/* Catch-up of a worker respawned within its generation: whether p (about to
 * be respawned) should start in standby and restore a sibling's replicated
 * state; start it once p is READY; its RESTORED. */
bool sup_catchup_wanted(const sup_proc_t *p);
void sup_catchup_start(sup_proc_t *p);
void sup_catchup_on_restored(sup_proc_t *p, const molt_msg_t *msg);
/* Figures of the last handoff that finished (borrowed), or NULL. */
json_t *sup_handoff_last(void);
void sup_handoff_free(void);
/* dump.c: `moltctl state NAME`. done(arg, reply) gets the reply (borrowed),
 * possibly before sup_dump_request returns. 0, or -1 with why in err. */
typedef void (*sup_dump_done_fn)(void *arg, json_t *reply);
int sup_dump_request(const char *name, sup_dump_done_fn done, void *arg, char *err, size_t errlen);
void sup_dump_on_dumped(sup_proc_t *p, const molt_msg_t *msg);
void sup_dump_on_death(sup_proc_t *p);
void sup_dump_forget(void *arg);
void sup_dump_free(void);
/* A `moltctl state` is waiting for its workers. */
bool sup_dump_running(void);
/* reload_run.c: the handoff's outcome. */
void sup_reload_on_handoff(bool ok, const char *reason);
void sup_reload_on_handback(bool ok, const char *reason);

/* reload_run.c: running reloads (the state machine is reload.h) */
typedef void (*sup_reload_done_fn)(void *arg, json_t *outcome);
/* Asks for a reload; done(arg, outcome) is called with the outcome of the
 * reload that covers this request (possibly before this returns). done NULL:
 * nobody waits (SIGHUP). 0 or -errno. */
int sup_reload_request(sup_reload_done_fn done, void *arg);
/* rollback: re-activate the generation that was active before the last
 * commit (its config text and plugin copies), through the same phases. */
int sup_reload_request_kind(bool rollback, sup_reload_done_fn done, void *arg);
/* A waiter went away (its control connection closed): forget it. */
void sup_reload_forget(void *arg);
void sup_reload_on_ready(sup_gen_t *gen);
void sup_reload_on_failed(sup_gen_t *gen, const char *reason);
/* moltd stops: end the running reload and answer every waiter. */
void sup_reload_shutdown(void);
void sup_reload_free(void);
/* A reload is running or queued. */
bool sup_reload_running(void);
json_t *sup_reload_status_json(void);

/* ctl.c: events for `moltctl events` subscribers. Adds "time_ms"; steals ev. */
void sup_event_emit(json_t *ev);

/* listen.c */
/* Binds cfg's listeners into fds, each taking the socket-activated
 * descriptor of its name instead when there is one. 0, or -1 (logged). */
int sup_listen_open(const molt_config_t *cfg, int *fds);
void sup_listen_close(int *fds, size_t n);
/* Socket activation: reads LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES (ignored
 * unless LISTEN_PID is this process) and removes them from the environment;
 * marks the descriptors close-on-exec. How many were passed, or -1 (logged)
 * when the variables are malformed. */
int sup_listen_activation_init(void);
/* The passed descriptor named `name` for listener l, checked (a listening
 * stream socket) and made non-blocking; -ENOENT when none has that name,
 * -EINVAL (logged, naming the fd) when it cannot serve. */
int sup_listen_activated(const char *name, const molt_listen_cfg_t *l);
/* Before sup_listen_open(), so that a name mismatch is reported as such
 * (not as the bind() of the unclaimed listener failing): -1 (each logged by
 * fd and name) if a passed descriptor has no listener of its name to take
 * it, else 0. */
int sup_listen_activation_check(const molt_config_t *cfg);

/* ctl.c: the control socket */
int sup_ctl_open(const molt_config_t *cfg);
void sup_ctl_close(void);
/* Parses one request line (without its newline): NULL with *req (owned by the
 * caller) a JSON object and *cmd its string "cmd" (borrowed from *req); or the
 * error reply to send, with *req and *cmd NULL (NULL too when even the reply
 * could not be built). Touches no supervisor state (fuzz/fuzz_ctl.c). */
json_t *sup_ctl_parse(const char *line, size_t len, json_t **req, const char **cmd);

#endif
