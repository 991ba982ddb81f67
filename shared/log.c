#include "shared/log.h"
#include "shared/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

static char log_role[32] = "molt";
static uint64_t log_gen;
static molt_log_level_t log_level = MOLT_LOG_INFO;
static bool log_json;    /* log.format "json" */
static bool log_journal; /* stderr is the journal: "<N>" priority prefixes, no time stamp */
static char *log_path;   /* log.file as opened, for molt_log_reopen() */

static const char *const level_names[MOLT_LOG_LEVEL_COUNT] = {
    [MOLT_LOG_DEBUG] = "debug", [MOLT_LOG_INFO] = "info", [MOLT_LOG_NOTICE] = "notice",
    [MOLT_LOG_WARN] = "warn",   [MOLT_LOG_ERROR] = "error", [MOLT_LOG_CRIT] = "crit",
};

void molt_log_set_role(const char *role)
{
    snprintf(log_role, sizeof(log_role), "%s", role);
}

void molt_log_set_gen(uint64_t gen)
{
    log_gen = gen;
}

void molt_log_set_level(molt_log_level_t level)
{
    log_level = level;
}

molt_log_level_t molt_log_get_level(void)
{
    return log_level;
}

int molt_log_level_parse(const char *name)
{
    for (int i = 0; i < MOLT_LOG_LEVEL_COUNT; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

const char *molt_log_level_name(molt_log_level_t level)
{
    return level < MOLT_LOG_LEVEL_COUNT ? level_names[level] : "?";
}

/* syslog priorities (sd-daemon(3)) by level: what journald reads from "<N>". */
static const int level_prio[MOLT_LOG_LEVEL_COUNT] = {
    [MOLT_LOG_DEBUG] = 7, [MOLT_LOG_INFO] = 6,  [MOLT_LOG_NOTICE] = 5,
    [MOLT_LOG_WARN] = 4,  [MOLT_LOG_ERROR] = 3, [MOLT_LOG_CRIT] = 2,
};

void molt_log_set_json(bool json)
{
    log_json = json;
}

bool molt_log_detect_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    char extra;
    log_journal = js && sscanf(js, "%llu:%llu%c", &dev, &ino, &extra) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
                  (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
    return log_journal;
}

static int open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (fd < 0)
        return -errno;
    /* dup2 leaves fd 2 without FD_CLOEXEC: it is stderr, for whatever runs next. */
    int rc = fd == STDERR_FILENO || dup2(fd, STDERR_FILENO) >= 0 ? 0 : -errno;
    if (fd != STDERR_FILENO)
        close(fd);
    if (rc == 0)
        molt_log_detect_journal(); /* a file is never the journal */
    return rc;
}

int molt_log_open_file(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    int rc = open_log(path);
    if (rc < 0) {
        free(copy);
        return rc;
    }
    free(log_path);
    log_path = copy;
    return 0;
}

int molt_log_reopen(void)
{
    return log_path ? open_log(log_path) : -ENOENT;
}

int molt_log_adopt_path(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    free(log_path);
    log_path = copy;
    return 0;
}

const char *molt_log_file(void)
{
    return log_path;
}

int molt_log_adopt_fd(int fd)
{
    int rc = fd == STDERR_FILENO || dup2(fd, STDERR_FILENO) >= 0 ? 0 : -errno;
    if (fd != STDERR_FILENO)
        close(fd);
    if (rc == 0)
        molt_log_detect_journal();
    return rc;
}

static void write_line(const char *line, size_t n)
{
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w; /* nowhere left to report a failed log write */
}

/* The message text: fmt expanded, cut with "..." at the buffer's end. */
static void format_msg(char *buf, size_t cap, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
static void format_msg(char *buf, size_t cap, const char *fmt, va_list ap)
{
    int n = vsnprintf(buf, cap, fmt, ap);
    if (n >= (int)cap - 1 && cap > 4)
        memcpy(buf + cap - 4, "...", 4);
}

/* One JSON object. False if it could not be built (out of memory): the caller
 * writes the text line instead. */
static bool log_line_json(molt_log_level_t level, const char *ts, const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static bool log_line_json(molt_log_level_t level, const char *ts, const char *prefix, const char *fmt, va_list ap)
{
    char msg[2048], stack[4096];
    int n = 0;
    if (prefix && strncmp(prefix, "plugin ", 7) != 0)
        n = snprintf(msg, sizeof(msg), "%s: ", prefix); /* a plugin's name gets a key of its own */
    format_msg(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    json_t *text = molt_json_text(msg); /* a client's bytes, or a character cut by the limit */
    json_t *o = json_object();
    if (!o || !text) {
        json_decref(o);
        json_decref(text);
        return false;
    }
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(molt_log_level_name(level)));
    json_object_set_new(o, "role", json_string(log_role));
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_object_set_new(o, "gen", log_gen ? json_integer((json_int_t)log_gen) : json_null());
    if (prefix && strncmp(prefix, "plugin ", 7) == 0)
        json_object_set_new(o, "plugin", json_string(prefix + 7));
    json_object_set_new(o, "msg", text);

    size_t off = log_journal ? (size_t)snprintf(stack, sizeof(stack), "<%d>", level_prio[level]) : 0;
    size_t need = json_dumpb(o, NULL, 0, JSON_COMPACT);
    char *line = need && off + need + 1 > sizeof(stack) ? malloc(off + need + 1) : stack;
    bool ok = need > 0 && line;
    if (ok) {
        if (line != stack)
            memcpy(line, stack, off);
        json_dumpb(o, line + off, need, JSON_COMPACT);
        line[off + need] = '\n';
        write_line(line, off + need + 1);
    }
    if (line != stack)
        free(line);
    json_decref(o);
    return ok;
}

void molt_log_prefixed(molt_log_level_t level, const char *prefix, const char *fmt, va_list ap)
{
    if (level < log_level || level >= MOLT_LOG_LEVEL_COUNT)
        return;
    /* Build the whole line first and write it with one write(2): lines from
     * the supervisor and its workers share stderr and must not interleave. */
    char line[2048], ts[64];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    if (log_json) {
        va_list copy;
        va_copy(copy, ap);
        bool done = log_line_json(level, ts, prefix, fmt, copy);
        va_end(copy);
        if (done)
            return;
    }
    /* journald stamps every line itself: a second time stamp would only be noise. */
    int n = log_journal ? snprintf(line, sizeof(line), "<%d>", level_prio[level])
                        : snprintf(line, sizeof(line), "%s ", ts);
    n += snprintf(line + n, sizeof(line) - n, "%-6s %s[%d] ", molt_log_level_name(level), log_role, (int)getpid());
    if (log_gen && n < (int)sizeof(line))
        n += snprintf(line + n, sizeof(line) - n, "gen %llu: ", (unsigned long long)log_gen);
    if (prefix && n < (int)sizeof(line))
        n += snprintf(line + n, sizeof(line) - n, "%s: ", prefix);
    if (n < (int)sizeof(line))
        n += vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    if (n >= (int)sizeof(line) - 1) {
        n = sizeof(line) - 1;
        memcpy(line + n - 4, "...", 3);
    }
    line[n++] = '\n';
    write_line(line, (size_t)n);
}

void molt_vlog(molt_log_level_t level, const char *fmt, va_list ap)
{
    molt_log_prefixed(level, NULL, fmt, ap);
}

void molt_log(molt_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    molt_vlog(level, fmt, ap);
    va_end(ap);
}
