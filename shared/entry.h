/*
 * The contract between the supervisor's fork() and the worker's main: what a
 * freshly forked worker is handed. It lives in shared/ because it is the one
 * point where the two processes meet; supervisor/ and worker/ never include
 * each other's headers.
 *
 * The child inherits the parent's memory, so the generation's parsed config
 * is passed by pointer: the worker serves exactly the config its generation
 * was prepared from, with no re-parse that could diverge.
 */
#ifndef MOLT_SHARED_ENTRY_H
#define MOLT_SHARED_ENTRY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shared/config.h"

/* The fixed descriptor layout a worker moves its inherited fds into before it
 * closes everything else with close_range(). */
#define MOLT_WRK_FD_CHANNEL 3
#define MOLT_WRK_FD_LISTEN0 4 /* listeners follow, in config order */

/*
 * Who a worker runs as (config user / group, resolved by the supervisor
 * before it forks: the worker does no name lookups). With `drop` set the
 * worker, before it loads any plugin, calls setgroups(groups), setresgid(gid),
 * setresuid(uid), checks that root cannot come back and sets no_new_privs
 * (worker/privs.h).
 */
typedef struct molt_worker_ident {
    int drop;          /* 0: keep the supervisor's ids (user/group unset, or equal to moltd's own) */
    uid_t uid;
    gid_t gid;
    gid_t *groups;     /* supplementary groups: the user's in the group database (getgrouplist) */
    size_t ngroups;
    char user[64];     /* names, for messages */
    char group[64];
} molt_worker_ident_t;

typedef struct molt_worker_boot {
    const molt_config_t *cfg; /* the generation's config (inherited memory) */
    int chan_fd;              /* this worker's end of its channel */
    const int *listen_fds;    /* cfg->nlisten listening sockets, in config order */
    unsigned slot;            /* process-table slot, 0..workers-1 */
    uint64_t gen;             /* generation number */
    const char *gen_id;       /* generation UUID (text) */
    const char *plugin_dir;   /* directory the generation's .so files are loaded from;
                               * NULL: each plugin's resolved config path */
    int standby;              /* a reload's new worker: listen but accept nothing until
                               * RESUME (after its state handoff) */
    int check_only;           /* moltd -t: load and initialise the plugins, report READY
                               * or FAIL, finalise them and exit; serve nothing */
    const molt_worker_ident_t *ident; /* whom to become before loading plugins; NULL: nobody else */
} molt_worker_boot_t;

/* Runs a worker; never returns (exits with a code from shared/exit.h). */
__attribute__((noreturn)) void wrk_main(const molt_worker_boot_t *boot);

/*
 * moltd --check-plugin FILE: runs in a throwaway child that the supervisor
 * forks (the supervisor itself never dlopens a plugin). dlopens FILE, calls
 * its entry point and checks the descriptor as a worker would, without
 * calling init; prints what the plugin declares on stdout and exits
 * MOLT_EXIT_OK, or prints why it is refused on stderr and exits
 * MOLT_EXIT_FAILURE. Before each step that runs plugin code it writes one
 * line naming the step ("while calling molt_plugin_entry()\n") to
 * progress_fd, so that the parent can say where the child died if it
 * crashes or hangs.
 */
__attribute__((noreturn)) void wrk_check_plugin(const char *path, int progress_fd);

#endif
