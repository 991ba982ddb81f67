/* Respawn backoff: 100 ms doubling to 10 s, reset after a minute of health, crash loop at 5. */
#include <check.h>
#include <stdlib.h>

#include "supervisor/backoff.h"

START_TEST(test_doubles_and_caps)
{
    sup_backoff_t b = {0};
    uint32_t expect[] = {100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000};
    uint64_t t = 1000;
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        /* each worker lived one second: not healthy */
        ck_assert_uint_eq(sup_backoff_on_death(&b, t, t + 1000), expect[i]);
        t += 2000;
    }
    ck_assert_uint_eq(b.failures, 10);
}
END_TEST

START_TEST(test_minute_of_health_resets_on_death)
{
    sup_backoff_t b = {0};
    for (int i = 0; i < 4; i++)
        sup_backoff_on_death(&b, 0, 10);
    ck_assert_uint_eq(b.delay_ms, 800);
    /* lived exactly a minute: counts as healthy, starts over */
    ck_assert_uint_eq(sup_backoff_on_death(&b, 1000, 1000 + SUP_BACKOFF_HEALTHY_MS), 100);
    ck_assert_uint_eq(b.failures, 1);
}
END_TEST

START_TEST(test_alive_resets)
{
    sup_backoff_t b = {0};
    for (int i = 0; i < 6; i++)
        sup_backoff_on_death(&b, 0, 10);
    ck_assert(sup_backoff_crashloop(&b));
    ck_assert(!sup_backoff_on_alive(&b, SUP_BACKOFF_HEALTHY_MS - 1));
    ck_assert(sup_backoff_crashloop(&b));
    ck_assert(sup_backoff_on_alive(&b, SUP_BACKOFF_HEALTHY_MS));
    ck_assert(!sup_backoff_crashloop(&b));
    ck_assert_uint_eq(b.failures, 0);
    /* nothing to reset twice */
    ck_assert(!sup_backoff_on_alive(&b, SUP_BACKOFF_HEALTHY_MS * 2));
    ck_assert_uint_eq(sup_backoff_on_death(&b, 0, 10), 100);
}
END_TEST

START_TEST(test_crashloop_threshold)
{
    sup_backoff_t b = {0};
    for (unsigned i = 1; i < SUP_BACKOFF_CRASHLOOP; i++) {
        sup_backoff_on_death(&b, 0, 10);
        ck_assert(!sup_backoff_crashloop(&b));
    }
    sup_backoff_on_death(&b, 0, 10);
    ck_assert(sup_backoff_crashloop(&b));
}
END_TEST

START_TEST(test_clock_going_backwards)
{
    sup_backoff_t b = {0};
    /* a start time after "now" must not look like a long healthy life */
    ck_assert_uint_eq(sup_backoff_on_death(&b, 5000, 10), 100);
    ck_assert_uint_eq(sup_backoff_on_death(&b, 5000, 10), 200);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("backoff");
    TCase *tc = tcase_create("backoff");
    tcase_add_test(tc, test_doubles_and_caps);
    tcase_add_test(tc, test_minute_of_health_resets_on_death);
    tcase_add_test(tc, test_alive_resets);
    tcase_add_test(tc, test_crashloop_threshold);
    tcase_add_test(tc, test_clock_going_backwards);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
