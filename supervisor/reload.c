#include "supervisor/reload.h"

static const char *const phase_names[SUP_RL_PHASE_COUNT] = {
    [SUP_RL_IDLE] = "idle",       [SUP_RL_PREPARE] = "prepare", [SUP_RL_SPAWN] = "spawn",
    [SUP_RL_HANDOFF] = "handoff", [SUP_RL_VERIFY] = "verify",   [SUP_RL_COMMIT] = "commit",
    [SUP_RL_ROLLBACK] = "rollback",
};

/* The whole machine. Unlisted (phase, event) pairs are { phase, NONE }. */
static const sup_rl_step_t table[SUP_RL_PHASE_COUNT][SUP_RLE_EVENT_COUNT] = {
    [SUP_RL_IDLE] = {[SUP_RLE_REQUEST] = {SUP_RL_PREPARE, SUP_RLA_PREPARE}},
    [SUP_RL_PREPARE] = {[SUP_RLE_OK] = {SUP_RL_SPAWN, SUP_RLA_SPAWN},
                        [SUP_RLE_FAIL] = {SUP_RL_IDLE, SUP_RLA_REJECT}},
    [SUP_RL_SPAWN] = {[SUP_RLE_OK] = {SUP_RL_HANDOFF, SUP_RLA_PAUSE_OLD},
                      [SUP_RLE_FAIL] = {SUP_RL_ROLLBACK, SUP_RLA_ROLLBACK}},
    [SUP_RL_HANDOFF] = {[SUP_RLE_OK] = {SUP_RL_VERIFY, SUP_RLA_VERIFY},
                        [SUP_RLE_FAIL] = {SUP_RL_ROLLBACK, SUP_RLA_ROLLBACK}},
    [SUP_RL_VERIFY] = {[SUP_RLE_OK] = {SUP_RL_COMMIT, SUP_RLA_COMMIT},
                       [SUP_RLE_FAIL] = {SUP_RL_ROLLBACK, SUP_RLA_ROLLBACK}},
    /* Commit cannot fail: the old generation drains on its own. */
    [SUP_RL_COMMIT] = {[SUP_RLE_OK] = {SUP_RL_IDLE, SUP_RLA_NONE}},
    [SUP_RL_ROLLBACK] = {[SUP_RLE_OK] = {SUP_RL_IDLE, SUP_RLA_ROLLED_BACK}},
};

sup_rl_step_t sup_reload_step(sup_rl_phase_t phase, sup_rl_event_t event)
{
    sup_rl_step_t none = {phase, SUP_RLA_NONE};
    if ((unsigned)phase >= SUP_RL_PHASE_COUNT || (unsigned)event >= SUP_RLE_EVENT_COUNT)
        return none;
    sup_rl_step_t s = table[phase][event];
    /* An empty cell is all zeroes: { IDLE, NONE } - which means "no edge",
     * except for the real edges into IDLE listed above, which all carry an
     * action or come from COMMIT. */
    if (s.action == SUP_RLA_NONE && !(phase == SUP_RL_COMMIT && event == SUP_RLE_OK))
        return none;
    return s;
}

const char *sup_reload_phase_name(sup_rl_phase_t phase)
{
    return (unsigned)phase < SUP_RL_PHASE_COUNT ? phase_names[phase] : "?";
}
