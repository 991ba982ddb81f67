/*
 * Integration-test harness: runs the real moltd (MOLT_BUILD_DIR "/moltd") on
 * loopback with a config written into a private temp dir, talks to it over
 * TCP and over its control socket, runs real clients (curl, wrk, moltctl),
 * and makes sure that nothing it started outlives the test.
 *
 * Check runs each test in a forked child (CK_FORK) and, on a failed
 * assertion, _exit()s that child at once: a checked teardown never runs
 * after a failure. So a test never calls ck_assert*() directly; it uses
 * H_CHECK()/H_FAIL(), which first stop every moltd and worker the test
 * started (by pid), print the tail of each moltd log, and remove the temp
 * dirs, then fail. The checked teardown (h_test_teardown) does the same
 * cleanup on success, and fails the test if a sanitizer reported anything in
 * a moltd log. As a last resort, the temp dirs live under a base directory
 * that the tcase's unchecked teardown (in the runner, which survives a test
 * killed by its timeout) removes; Check itself kills the test's process
 * group when the test ends.
 *
 * Two environment variables let a slow runner (scripts/memcheck.sh: moltd
 * under valgrind) use the same tests; unset, nothing changes:
 * - MOLT_TEST_WRAPPER: a command prefix, split on spaces, that moltd is run
 *   under (h_start(), whatever h->binary is, and h_run() of H_MOLTD itself),
 *   e.g. "valgrind -q".
 * - MOLT_TEST_TIMEOUT_SCALE: an integer factor >= 1 (default 1) for every
 *   time the harness waits for moltd (h_ms()): the waits of h_wait_ready(),
 *   h_wait_exit(), h_wait_pid_gone(), h_ctl(), h_conn_read(),
 *   h_conn_wait_eof(), h_run() and curl, the tcase timeouts of h_tcase(), and
 *   the safety-net timeouts of the default config (load, handoff, drain,
 *   header and keep-alive timeouts). A timeout a test sets itself with
 *   h_cfg_set() is written as given: a test that checks a timeout fire keeps
 *   it; one whose timeout must also let normal work finish passes h_ms(ms).
 */
#ifndef MOLT_TESTS_INTEGRATION_HARNESS_H
#define MOLT_TESTS_INTEGRATION_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <check.h>
#include <http_parser.h>
#include <jansson.h>

#include "molt/plugin.h"

/* "ABI 1.1": how moltd names the plugin ABI this build speaks. */
#define H_STR_(x) #x
#define H_STR(x) H_STR_(x)
#define H_ABI_HOST "ABI " H_STR(MOLT_ABI_MAJOR) "." H_STR(MOLT_ABI_MINOR)

#define H_MOLTD MOLT_BUILD_DIR "/moltd"
#define H_MOLTCTL MOLT_BUILD_DIR "/moltctl"
#define H_HELLO_BODY "hello from molt\n"
#define H_MAX_PIDS 256
#define H_MAX_LAUNCH 24

/* vsnprintf into buf: a failure message, cut at len - 1 bytes if it must be. */
void h_fmt(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Fails the test after cleaning up everything it started (see above). The
 * message is formatted first: the cleanup frees every h_molt_t, which the
 * arguments often read (h->sock_path, h->pid). */
#define H_CHECK(expr, fmt, ...)                                                                              \
    do {                                                                                                     \
        if (!(expr)) {                                                                                       \
            char h_msg_[4096];                                                                               \
            h_fmt(h_msg_, sizeof(h_msg_), "(%s) " fmt, #expr, ##__VA_ARGS__);                                \
            h_on_failure();                                                                                  \
            ck_abort_msg("%s", h_msg_);                                                                      \
        }                                                                                                    \
    } while (0)
#define H_FAIL(fmt, ...)                                                                                     \
    do {                                                                                                     \
        char h_msg_[4096];                                                                                   \
        h_fmt(h_msg_, sizeof(h_msg_), fmt, ##__VA_ARGS__);                                                   \
        h_on_failure();                                                                                      \
        ck_abort_msg("%s", h_msg_);                                                                          \
    } while (0)

/* ms scaled by MOLT_TEST_TIMEOUT_SCALE (see above): ms itself when it is unset. For a
 * test's own bounds on how long moltd may take. */
int h_ms(int ms);

/* ---- fixtures ------------------------------------------------------------------------------ */

/* Unchecked (runs in the runner): creates / removes the base temp dir of a tcase. */
void h_suite_setup(void);
void h_suite_teardown(void);
/* Checked (runs in the test's child): stops and removes every instance; fails
 * the test if a moltd log holds a sanitizer report. */
void h_test_teardown(void);
/* A test case with the harness's fixtures (suite setup/teardown, per-test
 * teardown) and a timeout in seconds. */
TCase *h_tcase(const char *name, int timeout);
/* What H_CHECK does before it fails: cleanup, with the logs' tails on stderr. */
void h_on_failure(void);

/* ---- one moltd ----------------------------------------------------------------------------- */

typedef struct h_molt {
    char dir[200];              /* private temp dir (short: the control socket lives in it) */
    char config_path[PATH_MAX]; /* dir/molt.json */
    char runtime_dir[PATH_MAX]; /* dir/run */
    char sock_path[PATH_MAX];   /* dir/run/control.sock */
    char log_path[PATH_MAX];    /* moltd's stderr (and its workers') */
    char out_path[PATH_MAX];    /* moltd's stdout */
    json_t *cfg;                /* what h_write_config() writes; "listen" is the harness's */
    int port;                   /* 127.0.0.1 listener */
    int port6;                  /* [::1] listener when ipv6 is set */
    bool ipv6;
    pid_t pid; /* moltd; 0 before h_start() */
    bool exited;
    int wstatus;            /* moltd's wait status once exited */
    pid_t seen[H_MAX_PIDS]; /* every worker pid seen in a status reply or in the log */
    size_t nseen;
    /* A command h_start() runs moltd under, NULL-terminated, before moltd's
     * argv (and before MOLT_TEST_WRAPPER's words): one that execs moltd in
     * its own process, so that h->pid stays moltd's, e.g. {"env",
     * "NOTIFY_SOCKET=...", NULL} or systemd-socket-activate and its options.
     * Empty (the default): moltd is exec'd directly. */
    const char *launch[H_MAX_LAUNCH];
    /* The moltd binary h_start() runs (an absolute path); NULL: H_MOLTD.
     * The upgrade tests start a copy of their own (h_copy_file()) so that
     * they can replace it, as a deployment does, and re-execute it. */
    const char *binary;
} h_molt_t;

/*
 * A new instance: temp dir, free port, and a default config: 2 workers,
 * "hello" (hello.so, body H_HELLO_BODY) on "/", plugin_path = the built
 * plugins and test plugins, small timeouts. Registered for cleanup.
 */
h_molt_t *h_new(void);
/* Sets a config value by dotted path ("http.max_header_bytes"); steals `value`. */
void h_cfg_set(h_molt_t *h, const char *path, json_t *value);
/* Appends a plugin instance; steals `config` (NULL for none). */
void h_add_plugin(h_molt_t *h, const char *name, const char *file, json_t *config);
void h_add_route(h_molt_t *h, const char *prefix, const char *plugin);
/* Instance "echo" (tp_echo.so) on prefix "/echo/". */
void h_add_echo(h_molt_t *h);
/* Also listen on [::1] (port6). */
void h_add_ipv6(h_molt_t *h);
void h_write_config(h_molt_t *h);

/* Writes the config and spawns moltd -c; does not wait. */
void h_start(h_molt_t *h);
/* h_start() and h_wait_ready(); fails the test if moltd does not become ready
 * (retrying with new ports if another process took ours meanwhile). */
void h_start_ready(h_molt_t *h);
/* Polls status until every configured worker is "ready". False if moltd
 * exited or the time ran out. */
bool h_wait_ready(h_molt_t *h, int timeout_ms);
/* Reaps moltd if it exited; returns h->exited. */
bool h_reap(h_molt_t *h);
bool h_wait_exit(h_molt_t *h, int timeout_ms);
/* moltd's exit code, or -1 if it has not exited or was killed by a signal. */
int h_exit_code(const h_molt_t *h);
/* moltd's stderr so far (NUL-terminated, malloc'd). */
char *h_log(const h_molt_t *h);
/* The line of moltd's log that contains all of `needles` (NULL-terminated
 * list), malloc'd; NULL if none. */
char *h_log_line(const h_molt_t *h, const char *const *needles);

/* One control request (a JSON line without the newline); the reply, or NULL
 * if moltd cannot be reached or answers garbage. */
json_t *h_ctl(h_molt_t *h, const char *request);
/* The same in two steps, for a request whose reply comes later (a reload):
 * connect and send (the fd, or -1); then read the reply line within
 * timeout_ms (NULL if none) and close the fd. */
int h_ctl_open(h_molt_t *h, const char *request);
json_t *h_ctl_reply(int fd, int timeout_ms);
/* h_ctl(status); records worker pids. */
json_t *h_status(h_molt_t *h);
/* Worker entries of a status reply, by slot, of the active generation: pids
 * (0 if none), states, restarts. Returns how many slots. */
size_t h_status_pids(const json_t *st, pid_t *pids, size_t max);
const json_t *h_status_slot(const json_t *st, unsigned slot);
/* Worker pids from the log's "worker N started, pid P" lines. */
size_t h_log_worker_pids(h_molt_t *h, pid_t *pids, size_t max);

/* ---- processes ----------------------------------------------------------------------------- */

/* A live (not zombie) process of this test's process group. Reaps it first if
 * it is our child (the harness makes the test a child subreaper, so orphaned
 * workers become ours). */
bool h_pid_alive(pid_t pid);
/* Waits until !h_pid_alive(pid). *wstatus gets its wait status if we reaped
 * it, else -1 (may be NULL). */
bool h_wait_pid_gone(pid_t pid, int timeout_ms, int *wstatus);
/* Live processes of this test's process group other than the test itself. */
size_t h_group_procs(pid_t *pids, size_t max);
/* Open descriptors of pid (/proc/PID/fd); fails the test if it cannot be read. */
size_t h_count_fds(pid_t pid);
/* Children of pid that are zombies (exited, not reaped). */
size_t h_zombie_children(pid_t pid);
void h_sleep_ms(int ms);
long long h_now_ms(void);

/* ---- commands ------------------------------------------------------------------------------ */

typedef struct h_cmd {
    int code; /* exit code; 128+signal if killed; -1 if it timed out */
    char *out;
    size_t out_len;
    char *err;
} h_cmd_t;

/* Runs a command (PATH lookup) with stdin /dev/null, capturing stdout and
 * stderr; kills it after timeout_ms. Output of moltd/moltctl is checked for
 * sanitizer reports. Returns r->code. */
int h_run(h_cmd_t *r, int timeout_ms, const char *arg0, ...) __attribute__((sentinel));
/* As h_run, with a NULL-terminated argv. */
int h_runv(h_cmd_t *r, int timeout_ms, const char *const *argv);
void h_cmd_free(h_cmd_t *r);

/* ---- HTTP over raw TCP --------------------------------------------------------------------- */

typedef struct h_hdr {
    char *name;
    char *value;
} h_hdr_t;

typedef struct h_resp {
    int status;
    unsigned http_major, http_minor;
    h_hdr_t *hdrs;
    size_t nhdrs;
    char *body; /* de-chunked, NUL-terminated */
    size_t body_len;
    bool keep_alive; /* http_should_keep_alive() */
    bool chunked;
} h_resp_t;

typedef struct h_conn {
    int fd;
    http_parser parser;
    char *buf; /* received, not parsed yet */
    size_t len, cap;
    bool eof;
    h_resp_t *cur;
    bool done;
    bool in_value;
    bool no_body; /* set before reading the response to a HEAD request */
} h_conn_t;

int h_free_port(int family);
bool h_have_ipv6(void);
/* Connects to 127.0.0.1 (AF_INET) or ::1 (AF_INET6); fails the test if it cannot. */
void h_conn_open(h_conn_t *c, int family, int port);
void h_conn_send(h_conn_t *c, const void *data, size_t len);
void h_conn_send_str(h_conn_t *c, const char *s);
/* Reads one complete response. 0, -ETIMEDOUT, -EPIPE (closed before it was
 * complete) or -EPROTO (not HTTP). */
int h_conn_read(h_conn_t *c, h_resp_t *r, int timeout_ms);
/* 1 if the peer closed (EOF or reset) within timeout_ms, 0 if the connection
 * is still open and silent, -1 if bytes arrived. */
int h_conn_wait_eof(h_conn_t *c, int timeout_ms);
void h_conn_close(h_conn_t *c);
/*
 * Runs curl -sS --max-time 10 ARGS... (the URL among them, NULL-terminated)
 * with the response head and body going to files in h's dir, and parses them
 * into r (the last head, after any 1xx). Returns curl's exit code (its
 * stderr is printed if not 0), or -EPROTO if the head cannot be parsed.
 */
int h_curl(h_molt_t *h, h_resp_t *r, const char *arg0, ...) __attribute__((sentinel));
/* The first header called `name` (case-insensitive), or NULL. */
const char *h_resp_header(const h_resp_t *r, const char *name);
void h_resp_free(h_resp_t *r);

/* ---- files --------------------------------------------------------------------------------- */

void h_write_file(const char *path, const void *data, size_t len, mode_t mode);
bool h_file_exists(const char *path);
/* Copies src to dst (created or truncated) and gives dst `mode`. */
void h_copy_file(const char *src, const char *dst, mode_t mode);
/* A whole file (also /proc files), NUL-terminated, malloc'd; "" if it cannot
 * be read; *len (may be NULL) gets its length. */
char *h_read_file(const char *path, size_t *len);

#endif
