/* Longest-prefix routing. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "worker/router.h"

static ssize_t match(const wrk_router_t *r, const char *path)
{
    return wrk_router_match(r, path, strlen(path));
}

START_TEST(test_longest_prefix_wins)
{
    molt_route_cfg_t routes[] = {
        {.prefix = "/", .plugin_index = 0},
        {.prefix = "/kv/", .plugin_index = 1},
        {.prefix = "/kv/admin", .plugin_index = 2},
        {.prefix = "/k", .plugin_index = 3},
    };
    wrk_router_t *r = wrk_router_new(routes, 4);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(match(r, "/"), 0);
    ck_assert_int_eq(match(r, "/hello"), 0);
    ck_assert_int_eq(match(r, "/kv/"), 1);
    ck_assert_int_eq(match(r, "/kv/key"), 1);
    ck_assert_int_eq(match(r, "/kv/admin"), 2);
    ck_assert_int_eq(match(r, "/kv/administrator"), 2);
    ck_assert_int_eq(match(r, "/kv"), 3);
    ck_assert_int_eq(match(r, "/k"), 3);
    wrk_router_free(r);
}
END_TEST

START_TEST(test_no_match_is_404)
{
    molt_route_cfg_t routes[] = {{.prefix = "/api/", .plugin_index = 7}};
    wrk_router_t *r = wrk_router_new(routes, 1);
    ck_assert_int_eq(match(r, "/"), -1);
    ck_assert_int_eq(match(r, "/api"), -1);
    ck_assert_int_eq(match(r, "/API/x"), -1); /* case-sensitive, as paths are */
    ck_assert_int_eq(match(r, "/api/x"), 7);
    wrk_router_free(r);
}
END_TEST

START_TEST(test_empty_router)
{
    wrk_router_t *r = wrk_router_new(NULL, 0);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(match(r, "/"), -1);
    wrk_router_free(r);
    wrk_router_free(NULL);
}
END_TEST

START_TEST(test_length_bounds_the_match)
{
    /* The path is not NUL-terminated in a transaction: the length rules. */
    molt_route_cfg_t routes[] = {{.prefix = "/abc", .plugin_index = 1}, {.prefix = "/", .plugin_index = 0}};
    wrk_router_t *r = wrk_router_new(routes, 2);
    ck_assert_int_eq(wrk_router_match(r, "/abcdef", 3), 0);
    ck_assert_int_eq(wrk_router_match(r, "/abcdef", 4), 1);
    wrk_router_free(r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("router");
    TCase *tc = tcase_create("router");
    tcase_add_test(tc, test_longest_prefix_wins);
    tcase_add_test(tc, test_no_match_is_404);
    tcase_add_test(tc, test_empty_router);
    tcase_add_test(tc, test_length_bounds_the_match);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
