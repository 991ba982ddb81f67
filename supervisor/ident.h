/*
 * Who the workers run as: config `user` / `group` resolved to ids, and
 * control.group resolved to a gid. Name lookups (NSS) happen here, in the
 * supervisor, when a generation is prepared and at start: never per
 * connection and never in a worker.
 */
#ifndef MOLT_SUPERVISOR_IDENT_H
#define MOLT_SUPERVISOR_IDENT_H

#include <stddef.h>
#include <sys/types.h>

#include "shared/config.h"
#include "shared/entry.h"

/*
 * Resolves cfg->user / cfg->group into *id (zeroed first; free with
 * sup_ident_free). Rules (docs/operations.md, "Privileges"):
 * - neither set: id->drop = 0;
 * - moltd is root: `user` is required (a worker that keeps uid 0 could take
 *   any group back) and must not be uid 0; gid is `group`'s, or the user's
 *   primary group; the supplementary groups are the user's in the group
 *   database (getgrouplist, as login and systemd's User= do); id->drop = 1;
 * - moltd is not root: each one set must be moltd's own (euid / egid), since
 *   only root can change them; id->drop = 0.
 * 0, or -1 with one line "user: ..." / "group: ..." in err.
 */
int sup_ident_resolve(const molt_config_t *cfg, molt_worker_ident_t *id, char *err, size_t len);
/* Frees what sup_ident_resolve allocated; accepts an ident never resolved (zeroed). */
void sup_ident_free(molt_worker_ident_t *id);

/* control.group: the gid of group `name`. 0, or -1 with "control.group: ..." in err. */
int sup_ident_group(const char *name, gid_t *gid, char *err, size_t len);

#endif
