/*
 * systemd's readiness protocol (sd_notify(3)), our own few lines of it: moltd
 * does not link libsystemd. One AF_UNIX datagram per notification to the
 * socket named by NOTIFY_SOCKET (a path, or an abstract name written with a
 * leading '@'). Without NOTIFY_SOCKET every call here does nothing.
 *
 * What moltd says, and when (docs/operations.md, "Running under systemd"):
 *   READY=1, STATUS=, MAINPID=   the listeners are bound and the first generation serves
 *   RELOADING=1, MONOTONIC_USEC= a reload (or rollback) starts
 *   READY=1, STATUS=             it ended: committed, or "reload failed: PHASE: REASON"
 *   STOPPING=1, STATUS=          a stop begins
 *   WATCHDOG=1                   every WATCHDOG_USEC / 2, from a timer on the supervisor's loop
 */
#ifndef MOLT_SUPERVISOR_NOTIFY_H
#define MOLT_SUPERVISOR_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <ev.h>

/*
 * Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID and removes them from
 * the environment, so that neither the workers nor their plugins (forked
 * from moltd) ever notify in moltd's name. Opens the datagram socket
 * (close-on-exec). A value that cannot be used is logged and leaves
 * notifications off: moltd runs on. 1 when notifications are on, 0 when off.
 */
int sup_notify_init(void);
/* Starts the watchdog timer on loop (WATCHDOG_USEC / 2), if systemd asked
 * for one and WATCHDOG_PID is absent or names this process. */
void sup_notify_watchdog_start(struct ev_loop *loop);
/* Around an upgrade's execve(): on, NOTIFY_SOCKET, WATCHDOG_USEC and
 * WATCHDOG_PID (this pid, which the new image keeps) go back into the
 * environment for the new image's sup_notify_init(); off, out again (the
 * exec failed). Nothing when notifications are off. */
void sup_notify_export(bool on);
/* Stops the timer and closes the socket. */
void sup_notify_close(struct ev_loop *loop);
bool sup_notify_enabled(void);

/* READY=1 with STATUS= (printf-style; newlines become spaces); mainpid also
 * adds MAINPID= (the first READY). */
void sup_notify_ready(bool mainpid, const char *status_fmt, ...) __attribute__((format(printf, 2, 3)));
/* RELOADING=1, MONOTONIC_USEC=<CLOCK_MONOTONIC now, in µs>, STATUS=. */
void sup_notify_reloading(const char *status_fmt, ...) __attribute__((format(printf, 1, 2)));
/* STOPPING=1, STATUS=. */
void sup_notify_stopping(const char *status_fmt, ...) __attribute__((format(printf, 1, 2)));
/* STATUS= alone. */
void sup_notify_status(const char *status_fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Pure helpers, for the tests. sup_notify_addr: a NOTIFY_SOCKET value into an
 * AF_UNIX address: "/abs/path", or "@name" for the abstract namespace. 0, or
 * -EINVAL (relative, empty, or another scheme such as vsock:), -ENAMETOOLONG.
 * sup_notify_watchdog_usec: the period systemd asked for, 0 for none:
 * WATCHDOG_USEC a positive integer, WATCHDOG_PID NULL or equal to pid.
 */
int sup_notify_addr(const char *value, struct sockaddr_un *sa, socklen_t *len);
uint64_t sup_notify_watchdog_usec(const char *usec, const char *wpid, pid_t pid);

#endif
