/*
 * molt logging: one line per event on stderr.
 *
 *   2026-11-23T10:49:26.123Z info  sup[1234] gen 1: listening on 127.0.0.1:8080 (http)
 *
 * Every line carries time (UTC, ms), level, process role ("sup", "wrk 3"),
 * pid and, once set, the generation number. Messages name the call that failed
 * and the thing it was for, with errno text where there is one.
 *
 * Two variations (docs/operations.md, "Logs"):
 * - stderr is the journal (JOURNAL_STREAM names fd 2's device and inode):
 *   each line starts with the syslog priority, "<6>", and the text format
 *   drops its time stamp, since journald stamps every line itself;
 * - the JSON format: one object per line, {"ts","level","role","pid","gen",
 *   "msg"} (plus "plugin" for a plugin's lines), built with jansson.
 * Either way a line is one write(2), so that the lines of the supervisor and
 * its workers, which share stderr, never interleave.
 */
#ifndef MOLT_SHARED_LOG_H
#define MOLT_SHARED_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum molt_log_level {
    MOLT_LOG_DEBUG = 0,
    MOLT_LOG_INFO = 1,
    MOLT_LOG_NOTICE = 2,
    MOLT_LOG_WARN = 3,
    MOLT_LOG_ERROR = 4,
    MOLT_LOG_CRIT = 5,
    MOLT_LOG_LEVEL_COUNT
} molt_log_level_t;

/* Sets the role printed on every line ("sup", "wrk 0", "ctl"); copied. */
void molt_log_set_role(const char *role);
/* Sets the generation printed on every line; 0 prints none. */
void molt_log_set_gen(uint64_t gen);
void molt_log_set_level(molt_log_level_t level);
molt_log_level_t molt_log_get_level(void);
/* Parses "debug", "info", "notice", "warn", "error", "crit"; -1 if unknown. */
int molt_log_level_parse(const char *name);
const char *molt_log_level_name(molt_log_level_t level);
/* One JSON object per line (true) or the text format (false, the default). */
void molt_log_set_json(bool json);

/* Looks whether stderr is the journal now (JOURNAL_STREAM="DEV:INODE" equal to
 * fstat(2)'s st_dev and st_ino) and prefixes lines with their priority if so.
 * Called again whenever fd 2 changes. Returns the answer. */
bool molt_log_detect_journal(void);

/*
 * The log file (config log.file): opens `path` (O_WRONLY | O_APPEND | O_CREAT |
 * O_CLOEXEC, mode 0640), makes it fd 2 and remembers the path for
 * molt_log_reopen(). 0, or -errno with fd 2 unchanged.
 */
int molt_log_open_file(const char *path);
/* Opens the remembered path again (after a rotation renamed the file) and
 * makes it fd 2. 0; -ENOENT when no file was opened; or -errno with fd 2
 * unchanged. */
int molt_log_reopen(void);
/* After an exec that kept fd 2 (the supervisor's upgrade): remember `path`
 * for molt_log_reopen() without opening anything. 0 or -ENOMEM. */
int molt_log_adopt_path(const char *path);
/* The path molt_log_open_file() opened, or NULL. */
const char *molt_log_file(void);
/* A worker's side of a reopen: fd (received from the supervisor) becomes fd 2
 * and is closed. 0 or -errno (fd is closed either way). */
int molt_log_adopt_fd(int fd);

void molt_log(molt_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void molt_vlog(molt_log_level_t level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* As molt_log, with a prefix naming a plugin instance ("plugin hello: ..."). */
void molt_log_prefixed(molt_log_level_t level, const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#define molt_debug(...) molt_log(MOLT_LOG_DEBUG, __VA_ARGS__)
#define molt_info(...) molt_log(MOLT_LOG_INFO, __VA_ARGS__)
#define molt_notice(...) molt_log(MOLT_LOG_NOTICE, __VA_ARGS__)
#define molt_warn(...) molt_log(MOLT_LOG_WARN, __VA_ARGS__)
#define molt_error(...) molt_log(MOLT_LOG_ERROR, __VA_ARGS__)
#define molt_crit(...) molt_log(MOLT_LOG_CRIT, __VA_ARGS__)

#endif
