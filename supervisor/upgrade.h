/*
 * Supervisor self-upgrade (SIGUSR2, `moltctl upgrade`): moltd re-executes its
 * binary in the same process. Everything the running supervisor holds is
 * written with msgpack into a memfd (the upgrade state); the descriptors it
 * owns (listeners, control socket and connections, admin listener, every
 * worker's channel) stay open across execve() and are named in that state by
 * number. The workers are not touched: they stay the same process's children
 * and serve on.
 *
 *   request -> refuse (a reload, an upgrade, a catch-up or a dump is running;
 *              moltd is stopping)
 *           -> check: fork, exec NEW --upgrade-check FD with the state and
 *              the descriptors; NEW reads it all as the real restore would
 *              and exits 0, or says why not (incompatible format, a config
 *              that no longer loads, a descriptor that is not what the state
 *              says); a hang is killed at SUP_UPGRADE_CHECK_MS
 *           -> exec: the state written again (it changed while the check
 *              ran), signals blocked, execve(NEW -c CONFIG --upgrade-from FD)
 *           -> NEW restores and carries on; the requester hears the outcome
 *              from NEW. If NEW's restore fails after all, it execs the old
 *              binary back (kept open since the start) with the same state,
 *              which resumes and reports why.
 *
 * The format: one msgpack map, "magic" and "format" first; any change to what
 * is written, or to what a field means, is a new SUP_UPGRADE_FORMAT. The
 * channel and state-stream versions must also match, since the workers that
 * keep running speak the old binary's.
 */
#ifndef MOLT_SUPERVISOR_UPGRADE_H
#define MOLT_SUPERVISOR_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "supervisor/sup.h"

/* How long the check child may take. */
#define SUP_UPGRADE_CHECK_MS 5000

/* supervisor/version.c: this binary's version and upgrade-state format
 * (a test build changes them: tests/integration/CMakeLists.txt). */
extern const char sup_version[];
extern const unsigned sup_upgrade_format;
extern const bool sup_upgrade_fail_restore;

/* Startup: remembers the binary's path and keeps it open (a fallback after a
 * failed restore execs it again). */
void sup_upgrade_init(void);
/* The path upgrades execute. */
const char *sup_upgrade_binary(void);
/* Status fields: "binary", "upgrades", "upgraded_ms". */
void sup_upgrade_status(json_t *status);

typedef void (*sup_upgrade_done_fn)(void *arg, json_t *reply);
/* Starts an upgrade; done(arg, reply) gets the control reply when it failed
 * (possibly before this returns). On success the reply comes from the new
 * binary, to the control connection arg (ctl.c: sup_ctl_conn_mark_upgrade).
 * done NULL: nobody waits (SIGUSR2). */
void sup_upgrade_request(sup_upgrade_done_fn done, void *arg);
/* A control connection went away: forget it as a waiter. */
void sup_upgrade_forget(void *arg);
/* The check child ended (sup_on_child); true if pid was it. */
bool sup_upgrade_on_child(pid_t pid, int status);
/* moltd stops: an upgrade in its check ends, failed. */
void sup_upgrade_shutdown(void);

/* main.c: `moltd --upgrade-check FD`. Reads the state as a restore would
 * and exits 0 (a line on stdout), or 1 with why on stderr. */
int sup_upgrade_check_main(int fd);
/* sup.c: the new binary's start (-c CONFIG --upgrade-from FD): restores
 * everything; failed_reason non-NULL: this is the old binary taken back
 * after the new one could not restore. 0, or -1 when nothing could be
 * restored (logged). */
int sup_upgrade_resume(int fd, const char *failed_reason);
/* sup.c, once the signal watchers run again: the outcome is told (the
 * waiting control connection, the log, sd_notify, events); the descriptors
 * become close-on-exec again; a worker that died during the exec is reaped. */
void sup_upgrade_resumed(void);

/* ---- for the modules that write and read their part of the state ---------------------------- */

/* Writing: a key, then its value. */
void sup_up_pack_i64(msgpack_packer *pk, const char *key, int64_t v);
void sup_up_pack_str(msgpack_packer *pk, const char *key, const char *s); /* NULL: nil */
void sup_up_pack_bin(msgpack_packer *pk, const char *key, const void *p, size_t n);
/* A JSON value as its compact text (NULL: nil). */
void sup_up_pack_json(msgpack_packer *pk, const char *key, const json_t *v);

/* Reading. Each takes a map and a key and, when the key is missing or of
 * another type, writes "KEY: missing or not a TYPE" to the reader's error
 * and returns false; later calls on a failed reader do nothing. */
typedef struct sup_up_rd {
    char err[512];
    bool failed;
} sup_up_rd_t;
bool sup_up_u64(sup_up_rd_t *rd, const msgpack_object *map, const char *key, uint64_t *out);
bool sup_up_i64(sup_up_rd_t *rd, const msgpack_object *map, const char *key, int64_t *out);
bool sup_up_bool(sup_up_rd_t *rd, const msgpack_object *map, const char *key, bool *out);
/* A string or nil into a malloc'd copy (nil: NULL). */
bool sup_up_strdup(sup_up_rd_t *rd, const msgpack_object *map, const char *key, char **out);
/* A string into buf (truncated). */
bool sup_up_str(sup_up_rd_t *rd, const msgpack_object *map, const char *key, char *buf, size_t len);
/* A map / an array / a bin / JSON text (nil: *out NULL). */
const msgpack_object *sup_up_map(sup_up_rd_t *rd, const msgpack_object *map, const char *key);
const msgpack_object *sup_up_array(sup_up_rd_t *rd, const msgpack_object *map, const char *key);
bool sup_up_bin(sup_up_rd_t *rd, const msgpack_object *map, const char *key, const char **p, size_t *n);
bool sup_up_json(sup_up_rd_t *rd, const msgpack_object *map, const char *key, json_t **out);
/* Fails the reader with a message of its own. */
void sup_up_fail(sup_up_rd_t *rd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Each module's part: pack writes "name": value pairs into the open top
 * map (count with *_count); unpack reads them back into the module's state
 * (watchers armed on S.loop); the `check` run (--upgrade-check) reads too,
 * and nothing of it runs. */
#define SUP_UP_PART(mod)                                                                                             \
    unsigned sup_##mod##_upgrade_count(void);                                                                        \
    void sup_##mod##_upgrade_pack(msgpack_packer *pk);                                                               \
    bool sup_##mod##_upgrade_unpack(sup_up_rd_t *rd, const msgpack_object *top)
SUP_UP_PART(procs); /* proc.c: generations and the process table */
SUP_UP_PART(ctl);
SUP_UP_PART(admin);
SUP_UP_PART(metrics);
SUP_UP_PART(reload);
SUP_UP_PART(handoff);
SUP_UP_PART(sib);
SUP_UP_PART(slots);
#undef SUP_UP_PART

/* A descriptor named by the state is open and a socket of `type` (SOCK_STREAM,
 * SOCK_SEQPACKET), listening if asked; else the reader fails naming `what`. */
bool sup_upgrade_fd_ok(sup_up_rd_t *rd, const char *what, int64_t fd, int type, bool listening);

/* The descriptors a module keeps across the exec (ctl.c, admin.c): appends
 * to fds, at most max; how many. */
size_t sup_ctl_upgrade_fds(int *fds, size_t max);
size_t sup_admin_upgrade_fds(int *fds, size_t max);
/* Ends the admin listener's connections (a scrape in progress is closed). */
void sup_admin_drop_conns(void);
/* ctl.c: the reply to the control connection that asked for the upgrade
 * (the new binary's side); false if it is gone. */
bool sup_ctl_upgrade_reply(json_t *reply);
/* The control connection waiting for the running upgrade (ctl.c marks it in
 * the state), or NULL. */
void *sup_upgrade_waiter(void);

#endif
