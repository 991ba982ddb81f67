#include "shared/log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char log_role[32] = "molt";
static uint64_t log_gen;
static molt_log_level_t log_level = MOLT_LOG_INFO;

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

void molt_log_prefixed(molt_log_level_t level, const char *prefix, const char *fmt, va_list ap)
{
    if (level < log_level)
        return;
    /* Build the whole line first and write it with one write(2): lines from
     * the supervisor and its workers share stderr and must not interleave. */
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-6s %s[%d] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), molt_log_level_name(level), log_role, (int)getpid());
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
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w; /* nowhere left to report a failed log write */
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
