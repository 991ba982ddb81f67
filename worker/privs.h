/*
 * A worker gives up root before it loads any plugin (SPEC §7). The supervisor
 * stays root: it must be able to fork the next generation.
 */
#ifndef MOLT_WORKER_PRIVS_H
#define MOLT_WORKER_PRIVS_H

#include <stddef.h>

#include "shared/entry.h"

/*
 * Becomes id (when id->drop): setgroups(id->groups), setresgid(gid),
 * setresuid(uid); then checks that it worked and cannot be undone:
 * setuid(0) and setgid(0) must fail, real/effective/saved ids must be the
 * new ones, the supplementary groups exactly id->groups; then
 * prctl(PR_SET_NO_NEW_PRIVS): no exec'd program gains privileges either.
 * Finally checks that `plugin_dir` (may be NULL) can be read as the new
 * user, so that a runtime_dir the workers cannot enter is named as such
 * rather than as a plugin's dlopen() error.
 * Without id (NULL) or id->drop nothing is done. 0, or -1 with the reason in err.
 */
int wrk_privs_drop(const molt_worker_ident_t *id, const char *plugin_dir, char *err, size_t len);

#endif
