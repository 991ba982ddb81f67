/*
 * The reload state machine: one transition function over (phase, event),
 * kept free of processes and sockets so that a unit test can walk every edge,
 * failure edges included, in microseconds (the s6-supervise way).
 *
 *   idle --request--> prepare --prepared--> spawn --ready--> handoff --paused--> verify
 *                        |                    |                 |                  |
 *                        +--failed--> idle    +--failed---------+--failed----------+--> rollback
 *   (rejected: nothing was started)                                                      |
 *   verify --stable--> commit --done--> idle                         rollback --done--> idle
 *
 * The supervisor (sup.c) performs the action each transition names.
 */
#ifndef MOLT_SUPERVISOR_RELOAD_H
#define MOLT_SUPERVISOR_RELOAD_H

typedef enum sup_rl_phase {
    SUP_RL_IDLE = 0,
    SUP_RL_PREPARE = 1,  /* parse and validate the config, copy the plugins */
    SUP_RL_SPAWN = 2,    /* fork the new workers; wait for every READY */
    SUP_RL_HANDOFF = 3,  /* the old workers stop accepting */
    SUP_RL_VERIFY = 4,   /* the new generation serves alone for stable_ms */
    SUP_RL_COMMIT = 5,   /* the new generation is active; the old one drains */
    SUP_RL_ROLLBACK = 6, /* the new workers go; the old ones accept again */
    SUP_RL_PHASE_COUNT
} sup_rl_phase_t;

typedef enum sup_rl_event {
    SUP_RLE_REQUEST = 0, /* a reload was asked for */
    SUP_RLE_OK = 1,      /* the current phase's work finished */
    SUP_RLE_FAIL = 2,    /* the current phase's work failed (or timed out, or a worker died) */
    SUP_RLE_EVENT_COUNT
} sup_rl_event_t;

typedef enum sup_rl_action {
    SUP_RLA_NONE = 0,       /* ignore the event in this phase */
    SUP_RLA_PREPARE = 1,    /* start preparing */
    SUP_RLA_SPAWN = 2,      /* spawn the new generation */
    SUP_RLA_PAUSE_OLD = 3,  /* tell the old generation to stop accepting */
    SUP_RLA_VERIFY = 4,     /* start the stable window */
    SUP_RLA_COMMIT = 5,     /* swap generations, drain the old one, report committed */
    SUP_RLA_REJECT = 6,     /* nothing was started: report rejected */
    SUP_RLA_ROLLBACK = 7,   /* stop the new generation, resume the old one */
    SUP_RLA_ROLLED_BACK = 8, /* report rolled back */
    SUP_RLA_COUNT
} sup_rl_action_t;

typedef struct sup_rl_step {
    sup_rl_phase_t next;
    sup_rl_action_t action;
} sup_rl_step_t;

/* The transition for `event` in `phase`. An event that means nothing in a
 * phase leaves it unchanged with SUP_RLA_NONE. */
sup_rl_step_t sup_reload_step(sup_rl_phase_t phase, sup_rl_event_t event);

const char *sup_reload_phase_name(sup_rl_phase_t phase);

#endif
