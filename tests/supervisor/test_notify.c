/*
 * sd_notify, moltd's own (supervisor/notify.c): NOTIFY_SOCKET values turned
 * into AF_UNIX addresses, WATCHDOG_USEC / WATCHDOG_PID read, and the
 * datagrams themselves received on a real socket bound by the test (path and
 * abstract). integ_systemd covers the same against a running moltd.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "supervisor/notify.h"

START_TEST(test_addr)
{
    struct sockaddr_un sa;
    socklen_t len = 0;
    ck_assert_int_eq(sup_notify_addr("/run/systemd/notify", &sa, &len), 0);
    ck_assert_str_eq(sa.sun_path, "/run/systemd/notify");
    ck_assert_uint_eq(len, offsetof(struct sockaddr_un, sun_path) + strlen("/run/systemd/notify") + 1);
    ck_assert_int_eq(sup_notify_addr("@abstract-name", &sa, &len), 0);
    ck_assert_int_eq(sa.sun_path[0], '\0');
    ck_assert(memcmp(sa.sun_path + 1, "abstract-name", 13) == 0);
    /* the length ends the name: no terminating NUL counted */
    ck_assert_uint_eq(len, offsetof(struct sockaddr_un, sun_path) + 14);
    ck_assert_int_eq(sup_notify_addr("relative/path", &sa, &len), -EINVAL);
    ck_assert_int_eq(sup_notify_addr("vsock:2:1234", &sa, &len), -EINVAL);
    ck_assert_int_eq(sup_notify_addr("", &sa, &len), -EINVAL);
    ck_assert_int_eq(sup_notify_addr("/", &sa, &len), -EINVAL);
    ck_assert_int_eq(sup_notify_addr("@", &sa, &len), -EINVAL);
    ck_assert_int_eq(sup_notify_addr(NULL, &sa, &len), -EINVAL);
    char longp[200];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    ck_assert_int_eq(sup_notify_addr(longp, &sa, &len), -ENAMETOOLONG);
}
END_TEST

START_TEST(test_watchdog_usec)
{
    ck_assert_uint_eq(sup_notify_watchdog_usec("30000000", NULL, 42), 30000000);
    ck_assert_uint_eq(sup_notify_watchdog_usec("30000000", "42", 42), 30000000);
    ck_assert_uint_eq(sup_notify_watchdog_usec("30000000", "43", 42), 0); /* another process's */
    ck_assert_uint_eq(sup_notify_watchdog_usec("30000000", "", 42), 0);
    ck_assert_uint_eq(sup_notify_watchdog_usec("0", NULL, 42), 0);
    ck_assert_uint_eq(sup_notify_watchdog_usec("-5", NULL, 42), 0);
    ck_assert_uint_eq(sup_notify_watchdog_usec("12x", NULL, 42), 0);
    ck_assert_uint_eq(sup_notify_watchdog_usec("", NULL, 42), 0);
    ck_assert_uint_eq(sup_notify_watchdog_usec(NULL, NULL, 42), 0);
}
END_TEST

/* Binds a datagram socket at path (or the abstract name) and returns it. */
static int listener(const char *value)
{
    struct sockaddr_un sa;
    socklen_t len;
    ck_assert_int_eq(sup_notify_addr(value, &sa, &len), 0);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_msg(bind(fd, (struct sockaddr *)&sa, len) == 0, "bind %s: %s", value, strerror(errno));
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void expect_datagram(int fd, const char *const *lines)
{
    char buf[1024];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    ck_assert_msg(n > 0, "no datagram: %s", n < 0 ? strerror(errno) : "empty");
    buf[n] = '\0';
    for (; *lines; lines++)
        ck_assert_msg(strstr(buf, *lines), "datagram '%s' lacks '%s'", buf, *lines);
}

static void run_protocol(const char *value)
{
    int fd = listener(value);
    setenv("NOTIFY_SOCKET", value, 1);
    setenv("WATCHDOG_USEC", "1000000", 1);
    ck_assert_int_eq(sup_notify_init(), 1);
    ck_assert(sup_notify_enabled());
    /* out of the environment: nothing forked from moltd may speak for it */
    ck_assert_ptr_null(getenv("NOTIFY_SOCKET"));
    ck_assert_ptr_null(getenv("WATCHDOG_USEC"));
    char mainpid[32];
    snprintf(mainpid, sizeof(mainpid), "MAINPID=%d", (int)getpid());
    sup_notify_ready(true, "generation %d serving\nwith 2 workers", 1);
    expect_datagram(fd, (const char *const[]){"READY=1", mainpid, "STATUS=generation 1 serving with 2 workers", NULL});
    sup_notify_reloading("reloading");
    expect_datagram(fd, (const char *const[]){"RELOADING=1", "MONOTONIC_USEC=", NULL});
    sup_notify_ready(false, "reload failed: %s: %s", "spawn", "worker 0: init failed");
    expect_datagram(fd, (const char *const[]){"READY=1", "STATUS=reload failed: spawn: worker 0: init failed", NULL});
    sup_notify_stopping("graceful stop");
    expect_datagram(fd, (const char *const[]){"STOPPING=1", NULL});
    sup_notify_close(NULL);
    close(fd);
}

START_TEST(test_path_socket)
{
    char dir[] = "/tmp/molt-notify-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/notify", dir);
    run_protocol(path);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(test_abstract_socket)
{
    char name[64];
    snprintf(name, sizeof(name), "@molt-notify-test-%d", (int)getpid());
    run_protocol(name);
}
END_TEST

START_TEST(test_unusable_or_absent)
{
    unsetenv("NOTIFY_SOCKET");
    ck_assert_int_eq(sup_notify_init(), 0);
    ck_assert(!sup_notify_enabled());
    sup_notify_ready(true, "nobody listens"); /* does nothing, and does not crash */
    setenv("NOTIFY_SOCKET", "relative", 1);
    ck_assert_int_eq(sup_notify_init(), 0);
    ck_assert_ptr_null(getenv("NOTIFY_SOCKET"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("notify");
    TCase *tc = tcase_create("notify");
    tcase_add_test(tc, test_addr);
    tcase_add_test(tc, test_watchdog_usec);
    tcase_add_test(tc, test_path_socket);
    tcase_add_test(tc, test_abstract_socket);
    tcase_add_test(tc, test_unusable_or_absent);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
