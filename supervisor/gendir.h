/*
 * Generations on disk: every generation loads its plugins from a directory of
 * its own, runtime_dir/gen-<uuid> (0700), holding a copy (0500) of each
 * configured .so under its file name.
 *
 * Why copies: the dynamic loader caches a DSO by path, so a new build of a
 * plugin at the same path would not be loaded while an old worker still maps
 * it, and symlinks make that cache behave differently across loaders (the
 * Traffic Server plugin reload design). One UUID-named directory per
 * generation gives every generation its own paths.
 *
 * Before anything is copied each file is opened once and the descriptor is
 * what gets checked (regular file; not writable by group or others; owned by
 * root or moltd's user), hashed (sha256, against the config's pin) and copied:
 * a file swapped at its path between check and copy cannot slip in.
 *
 * This module knows nothing of the supervisor's state (sup_t): it works on a
 * config and paths, so that it can be tested on its own. It never dlopens.
 *
 * Functions return 0 (or a count) on success and -errno on failure: -EPERM
 * when a file, the runtime_dir or its mount is refused, -EBADMSG when a
 * sha256 pin does not match, -EEXIST when two plugin files share a file name,
 * otherwise the errno of the call that failed. On failure err holds one line
 * naming the config key, the file and what is wrong (always NUL-terminated).
 */
#ifndef MOLT_SUPERVISOR_GENDIR_H
#define MOLT_SUPERVISOR_GENDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shared/config.h"

#define SUP_GENDIR_PREFIX "gen-"

/*
 * Checks runtime_dir: a directory, owned by moltd's user or root, not
 * writable by group or others unless sticky (/tmp-like: others cannot rename
 * or remove our entries), and not on a noexec mount. With `create`, a missing
 * runtime_dir is created (mkdir -p) and set to 0700; without, nothing is
 * created and a missing runtime_dir is only checked for the mount it would
 * be created on (moltd -t).
 */
int sup_gendir_check_runtime(const char *runtime_dir, bool create, char *err, size_t len);

/*
 * Interprets statvfs(runtime_dir).f_flag: -EPERM with the reason when
 * ST_NOEXEC is set (plugins copied there could not be mapped executable).
 * Split out so that it can be tested without mounting anything.
 */
int sup_gendir_check_mount_flags(const char *runtime_dir, unsigned long f_flag, char *err, size_t len);

/*
 * What moltd -t checks and sup_gendir_create() would refuse: runtime_dir
 * (without creating it), file names that clash, and every plugin file
 * (type, mode, owner, sha256 pin). Creates nothing.
 */
int sup_gendir_check(const molt_config_t *cfg, char *err, size_t len);

/*
 * Prepares runtime_dir (as sup_gendir_check_runtime with create), creates
 * runtime_dir/gen-<gen_id> (gen_id: a UUID in text form) with mode 0700 and
 * copies every distinct plugin file of cfg into it as <basename>, mode 0500,
 * checking and hashing each file through the descriptor it copies from. On
 * success *dir_out gets the directory (malloc'd, the caller frees it) and
 * nfiles / nbytes (either may be NULL) what was copied. On failure nothing
 * is left: a partly filled directory is removed.
 */
int sup_gendir_create(const molt_config_t *cfg, const char *gen_id, char **dir_out, size_t *nfiles,
                      uint64_t *nbytes, char *err, size_t len);

/* Removes a generation directory and what it holds; a missing one is not an
 * error. Accepts NULL. Logs the removal at info. */
int sup_gendir_remove(const char *dir);

/*
 * Removes runtime_dir/gen-<uuid> directories beyond the newest `keep` (by
 * mtime, newest first; directories in use count towards `keep`), except those
 * in in_use (paths or bare gen-<uuid> names; compared by their last
 * component). Anything not named gen-<uuid> or not a directory is left alone.
 * Returns how many directories were removed, or -errno if runtime_dir could
 * not be read (a missing runtime_dir holds nothing: 0).
 */
int sup_gendir_prune(const char *runtime_dir, unsigned keep, const char *const *in_use, size_t n_in_use);

/*
 * For workers that run as another user (config user / group): makes the
 * generation directory `dir` 0750 and every copy in it 0550, group `gid`
 * (owner unchanged: moltd's user), so that the workers can read and map them
 * and nobody else can. 0, or -errno with the reason in err.
 */
int sup_gendir_share(const char *dir, gid_t gid, char *err, size_t len);

/* How many runtime_dir/gen-<uuid> directories there are (what prune counts):
 * a count, 0 for a missing runtime_dir, or -errno if it could not be read. */
int sup_gendir_count(const char *runtime_dir);

#endif
