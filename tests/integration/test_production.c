/*
 * Integration theme "production" (SPEC §7): logs, access to the control
 * socket, and workers that run as another user, on the real moltd.
 *
 *   log_rotate      log.file (relative to the config): moltd and its workers write
 *                   there; after a rename and SIGUSR1 both write to a new file at
 *                   the path, nothing more to the old one
 *   log_json        log.format "json": every line of a run (start, requests, a
 *                   reload, stop) is one JSON object with ts, level, role, pid, gen, msg
 *   log_journal     JOURNAL_STREAM naming stderr: "<N>" priority prefixes, no time stamp
 *   control_refused a real unprivileged user: refused with one JSON line naming it
 *                   and why; then with control.group: its members are let in
 *   privdrop        user set: every worker runs as that user, its groups and
 *                   no_new_privs, serves, survives a reload into new generation
 *                   directories; the supervisor stays root
 *   privdrop_errors what -t and a start say about ids they cannot take or use
 *
 * The users and groups are created here (useradd, groupadd) and removed at the
 * end of each test and, should a test fail or be killed, by the tcase's
 * teardown in the runner. Tests that need them say so and pass when not run
 * as root.
 */
#include <errno.h>
#include <grp.h>
#include <libgen.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>

#include "tests/integration/harness.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static bool file_has(const char *path, const char *needle)
{
    char *text = h_read_file(path, NULL);
    bool found = strstr(text, needle) != NULL;
    free(text);
    return found;
}

static bool wait_file_has(const char *path, const char *needle, int timeout_ms)
{
    for (long long end = h_now_ms() + timeout_ms; h_now_ms() < end; h_sleep_ms(20))
        if (file_has(path, needle))
            return true;
    return file_has(path, needle);
}

/* How many lines of `path` contain both needles. */
static size_t count_lines(const char *path, const char *a, const char *b)
{
    char *text = h_read_file(path, NULL);
    size_t n = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strstr(line, a) && (!b || strstr(line, b)))
            n++;
        if (!nl)
            break;
        line = nl + 1;
    }
    free(text);
    return n;
}

static void get_ok(h_molt_t *h, const char *what)
{
    h_conn_t c;
    h_resp_t r;
    h_conn_open(&c, AF_INET, h->port);
    h_conn_send_str(&c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    int rc = h_conn_read(&c, &r, 5000);
    H_CHECK(rc == 0 && r.status == 200, "%s: GET / gave %d (rc %d)", what, r.status, rc);
    H_CHECK(strcmp(r.body, H_HELLO_BODY) == 0, "%s: body '%s'", what, r.body);
    h_resp_free(&r);
    h_conn_close(&c);
}

/* Worker pids of the active generation, from `moltctl status --json`. */
static size_t ctl_worker_pids(h_molt_t *h, pid_t *pids, size_t max)
{
    h_cmd_t r;
    h_run(&r, 10000, H_MOLTCTL, "-s", h->sock_path, "status", "--json", NULL);
    H_CHECK(r.code == 0, "moltctl status --json: exit %d: %s", r.code, r.err);
    json_t *st = json_loads(r.out, 0, NULL);
    H_CHECK(st != NULL, "moltctl status --json printed no JSON: %s", r.out);
    h_cmd_free(&r);
    size_t n = h_status_pids(st, pids, max);
    json_decref(st);
    json_decref(h_status(h)); /* the harness learns the pids too, to clean up */
    for (size_t i = 0; i < n; i++)
        H_CHECK(pids[i] > 0, "worker slot %zu has no pid", i);
    return n;
}

/* The value part of a /proc/PID/status line ("Uid:\t0\t0\t0\t0"), malloc'd. */
static char *proc_status(pid_t pid, const char *key)
{
    char path[64], want[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    snprintf(want, sizeof(want), "\n%s:", key);
    char *text = h_read_file(path, NULL);
    char *at = strstr(text, want), *out = NULL;
    if (at) {
        at += strlen(want);
        at += strspn(at, " \t");
        size_t len = strcspn(at, "\n");
        while (len && (at[len - 1] == ' ' || at[len - 1] == '\t'))
            len--;
        out = strndup(at, len);
    }
    free(text);
    H_CHECK(out != NULL, "%s has no %s line", path, key);
    return out;
}

/* "Uid:" / "Gid:" hold real, effective, saved and filesystem ids: all four must be id. */
static void check_ids(pid_t pid, const char *key, unsigned id)
{
    char *v = proc_status(pid, key), want[128];
    snprintf(want, sizeof(want), "%u\t%u\t%u\t%u", id, id, id, id);
    bool ok = strcmp(v, want) == 0;
    char copy[128];
    snprintf(copy, sizeof(copy), "%s", v);
    free(v);
    H_CHECK(ok, "pid %d: %s '%s', expected '%s'", (int)pid, key, copy, want);
}

/* The tree above h->dir must let another user through to the runtime dir. */
static void open_dirs(h_molt_t *h)
{
    char dir[sizeof(h->dir)];
    snprintf(dir, sizeof(dir), "%s", h->dir);
    H_CHECK(chmod(h->dir, 0711) == 0, "chmod %s: %s", h->dir, strerror(errno));
    H_CHECK(chmod(dirname(dir), 0711) == 0, "chmod %s: %s", dir, strerror(errno));
}

/* ---- users and groups ---------------------------------------------------------------------- */

/* Named after the runner's pid (set in its unchecked setup, before the tests fork). */
static char p_user[32], p_group[32];
static bool p_made;

static void users_remove(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "userdel -f %s >/dev/null 2>&1", p_user);
    if (system(cmd) < 0)
        fprintf(stderr, "test: %s: %s\n", cmd, strerror(errno));
    snprintf(cmd, sizeof(cmd), "groupdel %s >/dev/null 2>&1", p_group);
    if (system(cmd) < 0)
        fprintf(stderr, "test: %s: %s\n", cmd, strerror(errno));
    snprintf(cmd, sizeof(cmd), "groupdel %s >/dev/null 2>&1", p_user); /* useradd -U's group */
    if (system(cmd) < 0)
        fprintf(stderr, "test: %s: %s\n", cmd, strerror(errno));
}

/* Unchecked, in the runner: names for this run; whatever a killed test left goes. */
static void users_setup(void)
{
    snprintf(p_user, sizeof(p_user), "moltit%d", (int)getpid());
    snprintf(p_group, sizeof(p_group), "moltitg%d", (int)getpid());
    if (geteuid() == 0)
        users_remove();
}

static void users_teardown(void)
{
    if (geteuid() == 0)
        users_remove();
}

/* Checked, in the test: the harness's teardown, then ours (also reached after a failure,
 * through users_teardown in the runner). */
static void users_test_teardown(void)
{
    if (p_made)
        users_remove();
    p_made = false;
}

static bool need_root(const char *test)
{
    if (geteuid() == 0)
        return true;
    fprintf(stderr, "SKIPPED %s: it creates a user and needs root (running as uid %u)\n", test,
            (unsigned)geteuid());
    return false;
}

/*
 * Creates group p_group and user p_user (no home, no login shell, its own group from
 * useradd -U, member of p_group); *uid, *gid (its own group), *extra (p_group's gid).
 */
static void users_create(uid_t *uid, gid_t *gid, gid_t *extra)
{
    h_cmd_t r;
    p_made = true;
    h_run(&r, 20000, "groupadd", p_group, NULL);
    H_CHECK(r.code == 0, "groupadd %s: exit %d: %s", p_group, r.code, r.err);
    h_cmd_free(&r);
    h_run(&r, 20000, "useradd", "-M", "-U", "-s", "/usr/sbin/nologin", "-G", p_group, p_user, NULL);
    H_CHECK(r.code == 0, "useradd %s: exit %d: %s", p_user, r.code, r.err);
    h_cmd_free(&r);
    struct passwd *pw = getpwnam(p_user);
    struct group *gr = getgrnam(p_group);
    H_CHECK(pw && gr, "the new user %s / group %s cannot be looked up", p_user, p_group);
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    *extra = gr->gr_gid;
}

/* Runs moltctl as p_user with the given setpriv group options. */
static int ctl_as_user(h_cmd_t *r, h_molt_t *h, const char *regid, bool init_groups)
{
    char reuid[64], rg[64];
    snprintf(reuid, sizeof(reuid), "--reuid=%s", p_user);
    snprintf(rg, sizeof(rg), "--regid=%s", regid);
    return h_run(r, 15000, "setpriv", reuid, rg, init_groups ? "--init-groups" : "--clear-groups", H_MOLTCTL,
                 "-s", h->sock_path, "status", NULL);
}

/*
 * Connects to the control socket as uid/gid (no supplementary groups) from a
 * child, sends nothing, and returns everything moltd wrote until it closed.
 */
static char *raw_connect_as(const char *sock, uid_t uid, gid_t gid)
{
    int p[2];
    H_CHECK(pipe(p) == 0, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    H_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(p[0]);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(sock) >= sizeof(sa.sun_path))
            _exit(2);
        memcpy(sa.sun_path, sock, strlen(sock) + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0 || fd < 0 ||
            connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            dprintf(p[1], "child: %s", strerror(errno));
            _exit(1);
        }
        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0)
            if (write(p[1], buf, (size_t)n) != n)
                _exit(1);
        _exit(n == 0 ? 0 : 1);
    }
    close(p[1]);
    char *out = calloc(1, 65536);
    size_t len = 0;
    ssize_t n;
    while (out && len < 65535 && (n = read(p[0], out + len, 65535 - len)) > 0)
        len += (size_t)n;
    close(p[0]);
    int st = 0;
    H_CHECK(h_wait_pid_gone(pid, 10000, &st), "the raw client did not finish");
    H_CHECK(out && st == 0, "the raw client failed (status 0x%x): %s", (unsigned)st, out ? out : "");
    return out;
}

/* ---- logs ---------------------------------------------------------------------------------- */

START_TEST(test_log_rotate)
{
    h_molt_t *h = h_new();
    char file[PATH_MAX + 16], old[PATH_MAX + 16];
    snprintf(file, sizeof(file), "%s/molt.log", h->dir);
    snprintf(old, sizeof(old), "%s/molt.log.1", h->dir);
    h_cfg_set(h, "log.file", json_string("molt.log")); /* relative to the config's directory */
    h_start_ready(h);
    pid_t pids[2];
    H_CHECK(ctl_worker_pids(h, pids, 2) == 2, "two workers expected");

    struct stat st;
    H_CHECK(stat(file, &st) == 0 && (st.st_mode & 07777) == 0640, "%s: mode 0%o, expected 0640", file,
            (unsigned)st.st_mode);
    H_CHECK(file_has(file, "moltd " MOLT_VERSION " starting"), "%s lacks the supervisor's start line", file);
    for (int i = 0; i < 2; i++) {
        char who[32];
        snprintf(who, sizeof(who), "wrk %d[%d]", i, (int)pids[i]);
        H_CHECK(count_lines(file, who, "serving") == 1, "%s lacks '%s ... serving'", file, who);
    }
    H_CHECK(!file_has(h->log_path, "starting"), "moltd still wrote to its original stderr");

    /* Rotate: rename, then USR1. */
    H_CHECK(rename(file, old) == 0, "rename %s: %s", file, strerror(errno));
    H_CHECK(kill(h->pid, SIGUSR1) == 0, "kill USR1: %s", strerror(errno));
    H_CHECK(wait_file_has(file, "SIGUSR1: log.file", 5000), "no supervisor line in the new %s", file);
    for (int i = 0; i < 2; i++) {
        char who[32];
        snprintf(who, sizeof(who), "wrk %d[%d]", i, (int)pids[i]);
        bool seen = false;
        for (long long end = h_now_ms() + 5000; !seen && h_now_ms() < end; h_sleep_ms(20))
            seen = count_lines(file, who, "log file reopened") == 1;
        H_CHECK(seen, "worker %d (pid %d) wrote nothing to the new %s", i, (int)pids[i], file);
    }
    H_CHECK(stat(file, &st) == 0 && (st.st_mode & 07777) == 0640, "new %s: mode 0%o", file, (unsigned)st.st_mode);
    size_t old_lines = count_lines(old, "", NULL);

    /* Everything after the rotation goes to the new file: the stop, from everyone. */
    get_ok(h, "after the rotation");
    h_cmd_t r;
    h_run(&r, 20000, H_MOLTCTL, "-s", h->sock_path, "stop", NULL);
    H_CHECK(r.code == 0, "moltctl stop: %d %s", r.code, r.err);
    h_cmd_free(&r);
    H_CHECK(h_wait_exit(h, 10000), "moltd did not stop");
    H_CHECK(file_has(file, "sup[") && file_has(file, "] stopped"), "the supervisor's last line is not in %s", file);
    for (int i = 0; i < 2; i++) {
        char who[32];
        snprintf(who, sizeof(who), "wrk %d[%d]", i, (int)pids[i]);
        H_CHECK(count_lines(file, who, "draining") >= 1, "worker %d's stop is not in the new %s", i, file);
        H_CHECK(count_lines(old, who, "draining") == 0, "worker %d still wrote to the renamed file", i);
    }
    H_CHECK(count_lines(old, "", NULL) == old_lines, "the renamed file grew after the rotation");
}
END_TEST

/* moltd -t opens log.file as a start would, creating nothing: a missing
 * directory, a directory in its place fail naming log.file; a new file in a
 * writable directory passes and is not created. */
START_TEST(test_log_file_checked)
{
    h_molt_t *h = h_new();
    char file[PATH_MAX + 16];
    struct {
        const char *value;
        const char *needle; /* NULL: passes */
    } cases[] = {
        {"missing/molt.log", "log.file: "},
        {".", "log.file: "},
        {"new.log", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        h_cfg_set(h, "log.file", json_string(cases[i].value));
        h_write_config(h);
        h_cmd_t r;
        h_run(&r, 20000, H_MOLTD, "-c", h->config_path, "-t", NULL);
        if (cases[i].needle)
            H_CHECK(r.code == 1 && strstr(r.err, cases[i].needle) && strstr(r.err, cases[i].value),
                    "log.file %s: moltd -t exited %d: %s", cases[i].value, r.code, r.err);
        else
            H_CHECK(r.code == 0, "log.file %s: moltd -t exited %d: %s", cases[i].value, r.code, r.err);
        h_cmd_free(&r);
    }
    snprintf(file, sizeof(file), "%s/new.log", h->dir);
    H_CHECK(!h_file_exists(file), "moltd -t created %s", file);
}
END_TEST

/* log.file across a supervisor upgrade: the new image writes to the same
 * file (fd 2 kept) and still knows its path, so a rotation after the upgrade
 * reopens it. */
START_TEST(test_log_file_upgrade)
{
    h_molt_t *h = h_new();
    char file[PATH_MAX + 16], old[PATH_MAX + 16];
    snprintf(file, sizeof(file), "%s/molt.log", h->dir);
    snprintf(old, sizeof(old), "%s/molt.log.1", h->dir);
    h_cfg_set(h, "log.file", json_string("molt.log"));
    h_start_ready(h);
    h_cmd_t r;
    h_run(&r, 30000, H_MOLTCTL, "-s", h->sock_path, "upgrade", NULL);
    H_CHECK(r.code == 0, "moltctl upgrade: %d %s%s", r.code, r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(file_has(file, "upgrade: moltd "), "%s lacks the new image's upgrade line", file);
    H_CHECK(rename(file, old) == 0, "rename %s: %s", file, strerror(errno));
    H_CHECK(kill(h->pid, SIGUSR1) == 0, "kill USR1: %s", strerror(errno));
    H_CHECK(wait_file_has(file, "SIGUSR1: log.file", 5000), "no reopen after the upgrade in the new %s", file);
    get_ok(h, "after the upgrade and the rotation");
}
END_TEST

START_TEST(test_log_json)
{
    h_molt_t *h = h_new();
    h_cfg_set(h, "log.format", json_string("json"));
    h_cfg_set(h, "log.level", json_string("debug"));
    h_start_ready(h);
    get_ok(h, "json run");
    h_cmd_t r;
    h_run(&r, 20000, H_MOLTCTL, "-s", h->sock_path, "reload", NULL);
    H_CHECK(r.code == 0, "reload: %d %s %s", r.code, r.out, r.err);
    h_cmd_free(&r);
    get_ok(h, "json run after a reload");
    h_run(&r, 20000, H_MOLTCTL, "-s", h->sock_path, "stop", NULL);
    H_CHECK(r.code == 0, "moltctl stop: %d %s", r.code, r.err);
    h_cmd_free(&r);
    H_CHECK(h_wait_exit(h, 10000), "moltd did not stop");

    char *log = h_log(h);
    size_t lines = 0, sup = 0, wrk = 0, with_gen = 0;
    static const char *const levels[] = {"debug", "info", "notice", "warn", "error", "crit"};
    for (char *line = log; *line;) {
        char *nl = strchr(line, '\n');
        H_CHECK(nl != NULL, "the log does not end with a newline: '%s'", line);
        *nl = '\0';
        json_error_t jerr;
        json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
        H_CHECK(json_is_object(o), "line %zu is not a JSON object (%s): %s", lines + 1, jerr.text, line);
        const char *ts = json_string_value(json_object_get(o, "ts"));
        const char *level = json_string_value(json_object_get(o, "level"));
        const char *role = json_string_value(json_object_get(o, "role"));
        json_t *gen = json_object_get(o, "gen");
        H_CHECK(ts && strlen(ts) == 24 && ts[10] == 'T' && ts[23] == 'Z', "line %zu: ts: %s", lines + 1, line);
        bool known = false;
        for (size_t i = 0; level && i < 6; i++)
            known = known || strcmp(level, levels[i]) == 0;
        H_CHECK(known, "line %zu: level: %s", lines + 1, line);
        H_CHECK(role && json_integer_value(json_object_get(o, "pid")) > 0, "line %zu: role/pid: %s", lines + 1,
                line);
        H_CHECK(json_is_null(gen) || json_integer_value(gen) > 0, "line %zu: gen: %s", lines + 1, line);
        H_CHECK(json_is_string(json_object_get(o, "msg")), "line %zu: msg: %s", lines + 1, line);
        sup += strcmp(role, "sup") == 0;
        wrk += strncmp(role, "wrk ", 4) == 0;
        with_gen += json_is_integer(gen);
        json_decref(o);
        lines++;
        line = nl + 1;
    }
    free(log);
    H_CHECK(sup > 5 && wrk > 5 && with_gen > 5, "%zu lines: %zu from sup, %zu from workers, %zu with a gen", lines,
            sup, wrk, with_gen);
}
END_TEST

START_TEST(test_log_journal)
{
    h_molt_t *h = h_new();
    /* stderr is h->log_path: make JOURNAL_STREAM name that file, as systemd would the journal's socket. */
    h_write_file(h->log_path, "", 0, 0644);
    struct stat st;
    H_CHECK(stat(h->log_path, &st) == 0, "stat %s: %s", h->log_path, strerror(errno));
    char js[64];
    snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    h_start_ready(h);
    unsetenv("JOURNAL_STREAM");
    get_ok(h, "journal run");
    char *log = h_log(h);
    size_t lines = 0;
    bool notice = false, info_wrk = false;
    for (char *line = log; *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        H_CHECK(line[0] == '<' && line[1] >= '2' && line[1] <= '7' && line[2] == '>',
                "line %zu has no priority prefix: %s", lines + 1, line);
        H_CHECK(!(line[3] >= '0' && line[3] <= '9'), "line %zu still has a time stamp: %s", lines + 1, line);
        notice = notice || (strncmp(line, "<5>notice", 9) == 0 && strstr(line, "sup["));
        info_wrk = info_wrk || (strncmp(line, "<6>info", 7) == 0 && strstr(line, "wrk 0["));
        lines++;
        if (!nl)
            break;
        line = nl + 1;
    }
    free(log);
    H_CHECK(notice && info_wrk, "no <5> notice line of the supervisor or <6> info line of a worker (%zu lines)",
            lines);
}
END_TEST

/* ---- access control ------------------------------------------------------------------------ */

START_TEST(test_control_refused)
{
    if (!need_root("control_refused"))
        return;
    uid_t uid;
    gid_t gid, extra;
    users_create(&uid, &gid, &extra);

    /* 1. No control.group: a socket any local user can reach (mode 0666, in an open
     *    directory), so that the peer check is what stops the user. */
    h_molt_t *h = h_new();
    open_dirs(h);
    char ctldir[sizeof(h->dir) + 8];
    snprintf(ctldir, sizeof(ctldir), "%s/ctl", h->dir);
    H_CHECK(mkdir(ctldir, 0755) == 0, "mkdir %s: %s", ctldir, strerror(errno));
    snprintf(h->sock_path, sizeof(h->sock_path), "%s/control.sock", ctldir);
    h_cfg_set(h, "control.socket", json_string(h->sock_path));
    h_cfg_set(h, "control.mode", json_string("0666"));
    h_start_ready(h);

    h_cmd_t r;
    ctl_as_user(&r, h, p_user, true);
    char who[64];
    snprintf(who, sizeof(who), "uid %u (gid %u", (unsigned)uid, (unsigned)gid);
    H_CHECK(r.code == 1, "moltctl as %s: exit %d, expected 1 (refused): %s%s", p_user, r.code, r.out, r.err);
    H_CHECK(strstr(r.err, "permission denied") && strstr(r.err, who) && strstr(r.err, "only root"),
            "moltctl as %s: the refusal does not say who and why: %s", p_user, r.err);
    h_cmd_free(&r);
    char *line = h_log_line(h, (const char *const[]){"control: refused a connection", who, NULL});
    H_CHECK(line != NULL, "moltd's log does not name the refused uid");
    free(line);

    /* The raw protocol: one JSON line, ok false, who was refused; then EOF. */
    char *raw = raw_connect_as(h->sock_path, uid, gid);
    json_t *reply = json_loads(raw, 0, NULL);
    H_CHECK(json_is_object(reply) && json_is_false(json_object_get(reply, "ok")) &&
                json_integer_value(json_object_get(json_object_get(reply, "refused"), "uid")) == (json_int_t)uid &&
                strchr(raw, '\n') == raw + strlen(raw) - 1,
            "raw client got: '%s'", raw);
    json_decref(reply);
    free(raw);

    /* Root is still let in; the refusals changed nothing. */
    h_run(&r, 15000, H_MOLTCTL, "-s", h->sock_path, "status", NULL);
    H_CHECK(r.code == 0, "moltctl as root: exit %d: %s", r.code, r.err);
    h_cmd_free(&r);
    get_ok(h, "after the refusals");

    /* 2. control.group: its members get in (by supplementary group or by gid);
     *    the socket, default mode 0660, belongs to that group. */
    h_molt_t *g = h_new();
    open_dirs(g);
    h_cfg_set(g, "control.group", json_string(p_group));
    h_start_ready(g);
    struct stat st;
    H_CHECK(stat(g->sock_path, &st) == 0 && st.st_gid == extra && (st.st_mode & 0777) == 0660,
            "%s: gid %u mode 0%o, expected gid %u mode 0660", g->sock_path, (unsigned)st.st_gid,
            (unsigned)st.st_mode & 0777, (unsigned)extra);
    H_CHECK(stat(g->runtime_dir, &st) == 0 && (st.st_mode & 0777) == 0711, "%s: mode 0%o, expected 0711",
            g->runtime_dir, (unsigned)st.st_mode & 0777);
    ctl_as_user(&r, g, p_user, true);
    H_CHECK(r.code == 0, "moltctl as %s, a member of control.group: exit %d: %s", p_user, r.code, r.err);
    h_cmd_free(&r);
    ctl_as_user(&r, g, p_group, false);
    H_CHECK(r.code == 0, "moltctl as %s with gid %s: exit %d: %s", p_user, p_group, r.code, r.err);
    h_cmd_free(&r);
    /* Membership is the process's: without the group in its credentials, no way in
     * (here already the socket file's mode says no). */
    ctl_as_user(&r, g, p_user, false);
    H_CHECK(r.code != 0, "moltctl as %s without its groups was let in", p_user);
    h_cmd_free(&r);
}
END_TEST

/* ---- privileges ---------------------------------------------------------------------------- */

static void check_worker(pid_t pid, uid_t uid, gid_t gid, gid_t extra)
{
    check_ids(pid, "Uid", (unsigned)uid);
    check_ids(pid, "Gid", (unsigned)gid);
    char *groups = proc_status(pid, "Groups"), want1[64], want2[64];
    snprintf(want1, sizeof(want1), "%u %u", (unsigned)gid, (unsigned)extra);
    snprintf(want2, sizeof(want2), "%u %u", (unsigned)extra, (unsigned)gid);
    bool ok = strcmp(groups, want1) == 0 || strcmp(groups, want2) == 0;
    char copy[128];
    snprintf(copy, sizeof(copy), "%s", groups);
    free(groups);
    H_CHECK(ok, "worker %d: Groups '%s', expected '%s'", (int)pid, copy, want1);
    char *nnp = proc_status(pid, "NoNewPrivs");
    ok = strcmp(nnp, "1") == 0;
    free(nnp);
    H_CHECK(ok, "worker %d: NoNewPrivs is not 1", (int)pid);
    char *cap = proc_status(pid, "CapEff");
    ok = strspn(cap, "0") == strlen(cap);
    free(cap);
    H_CHECK(ok, "worker %d keeps effective capabilities", (int)pid);
}

/* The active generation's directory: 0750 root:gid, its copies 0550 root:gid. */
static void check_gendir(h_molt_t *h, gid_t gid)
{
    json_t *st = h_status(h);
    H_CHECK(st != NULL, "status failed");
    char dir[PATH_MAX + 64], so[PATH_MAX + 80];
    snprintf(dir, sizeof(dir), "%s/gen-%s", h->runtime_dir,
             json_string_value(json_object_get(json_object_get(st, "generation"), "id")));
    json_decref(st);
    struct stat sb;
    H_CHECK(stat(dir, &sb) == 0 && sb.st_uid == 0 && sb.st_gid == gid && (sb.st_mode & 07777) == 0750,
            "%s: uid %u gid %u mode 0%o, expected root:%u 0750", dir, (unsigned)sb.st_uid, (unsigned)sb.st_gid,
            (unsigned)sb.st_mode & 07777, (unsigned)gid);
    snprintf(so, sizeof(so), "%s/hello.so", dir);
    H_CHECK(stat(so, &sb) == 0 && sb.st_uid == 0 && sb.st_gid == gid && (sb.st_mode & 07777) == 0550,
            "%s: uid %u gid %u mode 0%o, expected root:%u 0550", so, (unsigned)sb.st_uid, (unsigned)sb.st_gid,
            (unsigned)sb.st_mode & 07777, (unsigned)gid);
}

START_TEST(test_privdrop)
{
    if (!need_root("privdrop"))
        return;
    uid_t uid;
    gid_t gid, extra;
    users_create(&uid, &gid, &extra);
    h_molt_t *h = h_new();
    open_dirs(h);
    h_cfg_set(h, "user", json_string(p_user));
    h_write_config(h);
    h_cmd_t r;
    h_run(&r, 20000, H_MOLTD, "-c", h->config_path, "-t", NULL);
    H_CHECK(r.code == 0, "moltd -t with user %s: exit %d: %s", p_user, r.code, r.err);
    h_cmd_free(&r);
    h_start_ready(h);

    check_ids(h->pid, "Uid", 0);
    struct stat sb;
    H_CHECK(stat(h->runtime_dir, &sb) == 0 && (sb.st_mode & 07777) == 0711, "%s: mode 0%o, expected 0711",
            h->runtime_dir, (unsigned)sb.st_mode & 07777);
    pid_t pids[2];
    H_CHECK(ctl_worker_pids(h, pids, 2) == 2, "two workers expected");
    for (int i = 0; i < 2; i++)
        check_worker(pids[i], uid, gid, extra);
    check_gendir(h, gid);
    for (int i = 0; i < 6; i++)
        get_ok(h, "as the unprivileged user");

    /* A reload: new workers, a new generation directory they can read. */
    h_run(&r, 20000, H_MOLTCTL, "-s", h->sock_path, "reload", NULL);
    H_CHECK(r.code == 0, "reload: exit %d: %s %s", r.code, r.out, r.err);
    h_cmd_free(&r);
    pid_t now[2];
    H_CHECK(ctl_worker_pids(h, now, 2) == 2, "two workers expected after the reload");
    H_CHECK(now[0] != pids[0] && now[1] != pids[1], "the reload did not replace the workers");
    for (int i = 0; i < 2; i++)
        check_worker(now[i], uid, gid, extra);
    check_gendir(h, gid);
    get_ok(h, "after the reload");
    check_ids(h->pid, "Uid", 0);

    /* A supervisor upgrade carries the resolved user and groups over: a
     * worker killed after it is respawned, by the new image, as the user too. */
    h_run(&r, 30000, H_MOLTCTL, "-s", h->sock_path, "upgrade", NULL);
    H_CHECK(r.code == 0, "upgrade: exit %d: %s %s", r.code, r.out, r.err);
    h_cmd_free(&r);
    check_ids(h->pid, "Uid", 0);
    H_CHECK(kill(now[0], SIGKILL) == 0, "kill: %s", strerror(errno));
    pid_t again[2] = {0, 0};
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(50)) {
        json_t *st = h_status(h);
        size_t n = st ? h_status_pids(st, again, 2) : 0;
        const char *state = json_string_value(json_object_get(h_status_slot(st, 0), "state"));
        bool ready = n == 2 && again[0] > 0 && again[0] != now[0] && state && strcmp(state, "ready") == 0;
        json_decref(st);
        if (ready)
            break;
    }
    H_CHECK(again[0] > 0 && again[0] != now[0], "worker 0 was not respawned");
    check_worker(again[0], uid, gid, extra);
    get_ok(h, "after a respawn");
}
END_TEST

START_TEST(test_privdrop_errors)
{
    if (!need_root("privdrop_errors"))
        return;
    uid_t uid;
    gid_t gid, extra;
    users_create(&uid, &gid, &extra);
    h_molt_t *h = h_new();
    open_dirs(h);
    h_cmd_t r;

    /* Names that do not exist, and a group without a user, are config errors in -t. */
    static const struct {
        const char *key, *value, *expect;
    } cases[] = {
        {"user", "no-such-user-molt", "user: \"no-such-user-molt\": no such user"},
        {"group", "no-such-group-molt", "group: \"no-such-group-molt\": no such group"},
        {"control.group", "no-such-group-molt", "control.group: \"no-such-group-molt\": no such group"},
        {"user", "root", "is uid 0: workers would keep root"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        h_cfg_set(h, cases[i].key, json_string(cases[i].value));
        if (strcmp(cases[i].key, "group") == 0)
            h_cfg_set(h, "user", json_string(p_user));
        h_write_config(h);
        h_run(&r, 20000, H_MOLTD, "-c", h->config_path, "-t", NULL);
        H_CHECK(r.code == 1 && strstr(r.err, cases[i].expect), "-t with %s %s: exit %d, stderr: %s", cases[i].key,
                cases[i].value, r.code, r.err);
        h_cmd_free(&r);
        json_t *cfg = h->cfg;
        json_object_del(cfg, "user");
        json_object_del(cfg, "group");
        json_object_del(json_object_get(cfg, "control"), "group");
    }
    h_cfg_set(h, "group", json_string(p_group));
    h_write_config(h);
    h_run(&r, 20000, H_MOLTD, "-c", h->config_path, "-t", NULL);
    H_CHECK(r.code == 1 && strstr(r.err, "without user"), "-t with group only: exit %d: %s", r.code, r.err);
    h_cmd_free(&r);
    json_object_del(h->cfg, "group");

    /* Not root: user / group must be moltd's own ids. */
    h_cfg_set(h, "user", json_string("root"));
    h_write_config(h);
    char reuid[64], regid[64];
    snprintf(reuid, sizeof(reuid), "--reuid=%s", p_user);
    snprintf(regid, sizeof(regid), "--regid=%s", p_user);
    h_run(&r, 20000, "setpriv", reuid, regid, "--clear-groups", H_MOLTD, "-c", h->config_path, "-t", NULL);
    H_CHECK(r.code == 1 && strstr(r.err, "only a moltd started as root"), "-t as %s with user root: exit %d: %s",
            p_user, r.code, r.err);
    h_cmd_free(&r);
    h_cfg_set(h, "user", json_string(p_user));
    h_write_config(h);
    h_run(&r, 20000, "setpriv", reuid, regid, "--clear-groups", H_MOLTD, "-c", h->config_path, "-t", NULL);
    H_CHECK(r.code == 0, "-t as %s with user %s (itself): exit %d: %s", p_user, p_user, r.code, r.err);
    h_cmd_free(&r);

    /* An existing runtime_dir the workers cannot enter: each worker fails, naming it. */
    H_CHECK(mkdir(h->runtime_dir, 0700) == 0, "mkdir %s: %s", h->runtime_dir, strerror(errno));
    h_start(h);
    H_CHECK(h_wait_exit(h, 15000), "moltd did not give up");
    H_CHECK(h_exit_code(h) == 1, "moltd exit code %d, expected 1", h_exit_code(h));
    char *line = h_log_line(h, (const char *const[]){"cannot start", "cannot read the generation directory",
                                                     p_user, NULL});
    H_CHECK(line != NULL, "moltd's log does not say the workers cannot reach their plugins");
    free(line);
}
END_TEST

/* ---- suite --------------------------------------------------------------------------------- */

static TCase *users_tcase(const char *name, int timeout)
{
    TCase *tc = h_tcase(name, timeout);
    tcase_add_unchecked_fixture(tc, users_setup, users_teardown);
    tcase_add_checked_fixture(tc, NULL, users_test_teardown);
    return tc;
}

static Suite *production_suite(void)
{
    Suite *s = suite_create("integ_production");
    TCase *tc = h_tcase("logs", 60);
    tcase_add_test(tc, test_log_rotate);
    tcase_add_test(tc, test_log_json);
    tcase_add_test(tc, test_log_journal);
    tcase_add_test(tc, test_log_file_checked);
    tcase_add_test(tc, test_log_file_upgrade);
    suite_add_tcase(s, tc);
    tc = users_tcase("access", 90);
    tcase_add_test(tc, test_control_refused);
    suite_add_tcase(s, tc);
    tc = users_tcase("privileges", 90);
    tcase_add_test(tc, test_privdrop);
    tcase_add_test(tc, test_privdrop_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(production_suite());
    srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose lists every test */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
