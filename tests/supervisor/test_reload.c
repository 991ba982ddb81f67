/* The reload state machine, every edge. */
#include <check.h>
#include <stdlib.h>

#include "supervisor/reload.h"

static void expect(sup_rl_phase_t from, sup_rl_event_t ev, sup_rl_phase_t to, sup_rl_action_t act)
{
    sup_rl_step_t s = sup_reload_step(from, ev);
    ck_assert_msg(s.next == to && s.action == act, "%s --%d--> %s/%d, expected %s/%d",
                  sup_reload_phase_name(from), ev, sup_reload_phase_name(s.next), s.action,
                  sup_reload_phase_name(to), act);
}

START_TEST(test_happy_path)
{
    expect(SUP_RL_IDLE, SUP_RLE_REQUEST, SUP_RL_PREPARE, SUP_RLA_PREPARE);
    expect(SUP_RL_PREPARE, SUP_RLE_OK, SUP_RL_SPAWN, SUP_RLA_SPAWN);
    expect(SUP_RL_SPAWN, SUP_RLE_OK, SUP_RL_HANDOFF, SUP_RLA_PAUSE_OLD);
    expect(SUP_RL_HANDOFF, SUP_RLE_OK, SUP_RL_VERIFY, SUP_RLA_VERIFY);
    expect(SUP_RL_VERIFY, SUP_RLE_OK, SUP_RL_COMMIT, SUP_RLA_COMMIT);
    expect(SUP_RL_COMMIT, SUP_RLE_OK, SUP_RL_IDLE, SUP_RLA_NONE);
}
END_TEST

START_TEST(test_failure_edges)
{
    /* prepare changed nothing: rejected, no rollback */
    expect(SUP_RL_PREPARE, SUP_RLE_FAIL, SUP_RL_IDLE, SUP_RLA_REJECT);
    /* from the moment workers exist, every failure rolls back */
    expect(SUP_RL_SPAWN, SUP_RLE_FAIL, SUP_RL_ROLLBACK, SUP_RLA_ROLLBACK);
    expect(SUP_RL_HANDOFF, SUP_RLE_FAIL, SUP_RL_ROLLBACK, SUP_RLA_ROLLBACK);
    expect(SUP_RL_VERIFY, SUP_RLE_FAIL, SUP_RL_ROLLBACK, SUP_RLA_ROLLBACK);
    expect(SUP_RL_ROLLBACK, SUP_RLE_OK, SUP_RL_IDLE, SUP_RLA_ROLLED_BACK);
}
END_TEST

START_TEST(test_meaningless_events_change_nothing)
{
    /* one reload at a time: a request during one is not an edge (sup.c queues it) */
    for (int p = SUP_RL_PREPARE; p < SUP_RL_PHASE_COUNT; p++)
        expect((sup_rl_phase_t)p, SUP_RLE_REQUEST, (sup_rl_phase_t)p, SUP_RLA_NONE);
    expect(SUP_RL_IDLE, SUP_RLE_OK, SUP_RL_IDLE, SUP_RLA_NONE);
    expect(SUP_RL_IDLE, SUP_RLE_FAIL, SUP_RL_IDLE, SUP_RLA_NONE);
    /* a failure reported late, after commit or during rollback, changes nothing */
    expect(SUP_RL_COMMIT, SUP_RLE_FAIL, SUP_RL_COMMIT, SUP_RLA_NONE);
    expect(SUP_RL_ROLLBACK, SUP_RLE_FAIL, SUP_RL_ROLLBACK, SUP_RLA_NONE);
    /* out of range */
    expect(SUP_RL_PHASE_COUNT, SUP_RLE_OK, SUP_RL_PHASE_COUNT, SUP_RLA_NONE);
    expect(SUP_RL_IDLE, SUP_RLE_EVENT_COUNT, SUP_RL_IDLE, SUP_RLA_NONE);
}
END_TEST

START_TEST(test_every_phase_reaches_idle)
{
    /* From any phase, repeated OK or FAIL events end in idle: no phase is a trap. */
    for (int p = 0; p < SUP_RL_PHASE_COUNT; p++) {
        for (int ev = SUP_RLE_OK; ev <= SUP_RLE_FAIL; ev++) {
            sup_rl_phase_t cur = (sup_rl_phase_t)p;
            for (int i = 0; i < 10 && cur != SUP_RL_IDLE; i++) {
                sup_rl_step_t s = sup_reload_step(cur, (sup_rl_event_t)ev);
                /* rollback and commit only finish with OK */
                if (s.next == cur)
                    s = sup_reload_step(cur, SUP_RLE_OK);
                cur = s.next;
            }
            ck_assert_msg(cur == SUP_RL_IDLE, "stuck in %s from %s", sup_reload_phase_name(cur),
                          sup_reload_phase_name((sup_rl_phase_t)p));
        }
    }
    ck_assert_str_eq(sup_reload_phase_name(SUP_RL_VERIFY), "verify");
    ck_assert_str_eq(sup_reload_phase_name(SUP_RL_PHASE_COUNT), "?");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reload");
    TCase *tc = tcase_create("machine");
    tcase_add_test(tc, test_happy_path);
    tcase_add_test(tc, test_failure_edges);
    tcase_add_test(tc, test_meaningless_events_change_nothing);
    tcase_add_test(tc, test_every_phase_reaches_idle);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
