/*
 * Generations on disk: runtime_dir/gen-<uuid>, one per generation, holding a
 * checked copy of every plugin file (see gendir.h for why).
 */
#include "supervisor/gendir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <nettle/sha2.h>
#include <uuid/uuid.h>

#include "shared/log.h"
#include "shared/util.h"

#define GENDIR_COPY_CHUNK 65536
#define GENDIR_UUID_LEN 36
#define GENDIR_SHA256_HEX (2 * SHA256_DIGEST_SIZE + 1)
/* Generation directories are flat; a little depth copes with a stray
 * subdirectory someone made in one, without unbounded recursion. */
#define GENDIR_RM_DEPTH 4

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The first instance using a file does the work for every instance using it. */
static bool path_seen_before(const molt_config_t *cfg, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (strcmp(cfg->plugins[j].path, cfg->plugins[i].path) == 0)
            return true;
    return false;
}

static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISREG(mode))
        return "a regular file";
    return "of an unknown file type";
}

/* mkdir -p with `mode` for the directories it creates. 0 or -errno. */
static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
            *p = c;
            if (c == '\0')
                break;
        }
    }
    return 0;
}

/*
 * Removes `name` under dfd: a file, or a directory and what it holds (down to
 * `depth` more levels). Never follows a symlink. 1 if something was removed,
 * 0 if there was nothing, -errno of the first failure.
 */
static int remove_at(int dfd, const char *name, int depth)
{
    DIR *d = NULL;
    int rc = 1;
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            rc = 0;
        else if (errno != ENOTDIR && errno != ELOOP)
            rc = -errno;
        else if (unlinkat(dfd, name, 0) < 0)
            rc = errno == ENOENT ? 0 : -errno;
        goto out;
    }
    d = fdopendir(fd);
    if (!d) {
        rc = -errno;
        close(fd);
        goto out;
    }
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno && rc > 0)
                rc = -errno;
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            continue;
        int r = -errno;
        if (r == -EISDIR && depth > 0)
            r = remove_at(dirfd(d), e->d_name, depth - 1);
        if (r < 0 && rc > 0)
            rc = r;
    }
    if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && rc > 0)
        rc = -errno;
out:
    if (d)
        closedir(d);
    return rc;
}

/* ---- runtime_dir ------------------------------------------------------------------------ */

int sup_gendir_check_mount_flags(const char *runtime_dir, unsigned long f_flag, char *err, size_t len)
{
    if (!(f_flag & ST_NOEXEC))
        return 0;
    snprintf(err, len,
             "runtime_dir %s is on a noexec mount: plugins copied there could not be loaded "
             "(mount it exec, or choose another runtime_dir)",
             runtime_dir);
    return -EPERM;
}

/* statvfs() of runtime_dir or, when it does not exist yet, of the nearest
 * directory above it that does: the mount it would be created on. */
static int check_mount(const char *runtime_dir, char *err, size_t len)
{
    char buf[PATH_MAX];
    struct statvfs vfs;
    if (snprintf(buf, sizeof(buf), "%s", runtime_dir) >= (int)sizeof(buf)) {
        snprintf(err, len, "runtime_dir %s: path too long", runtime_dir);
        return -ENAMETOOLONG;
    }
    while (statvfs(buf, &vfs) < 0) {
        int e = errno;
        char *slash = strrchr(buf, '/');
        if ((e != ENOENT && e != ENOTDIR) || !slash) {
            snprintf(err, len, "runtime_dir %s: statvfs(%s) failed: %s", runtime_dir, buf, strerror(e));
            return -e;
        }
        if (slash == buf)
            slash[1] = '\0';
        else
            *slash = '\0';
    }
    return sup_gendir_check_mount_flags(runtime_dir, vfs.f_flag, err, len);
}

int sup_gendir_check_runtime(const char *runtime_dir, bool create, char *err, size_t len)
{
    struct stat st;
    int rc = 0;
    if (stat(runtime_dir, &st) < 0) {
        rc = -errno;
        if (rc != -ENOENT) {
            snprintf(err, len, "runtime_dir %s: stat() failed: %s", runtime_dir, strerror(-rc));
            goto out;
        }
        if (!create) {
            /* moltd -t creates nothing: check where it would go. */
            rc = check_mount(runtime_dir, err, len);
            goto out;
        }
        rc = mkdir_p(runtime_dir, 0700);
        /* The umask may have taken bits away; 0700 is what we mean. */
        if (rc == 0 && chmod(runtime_dir, 0700) < 0)
            rc = -errno;
        if (rc == 0 && stat(runtime_dir, &st) < 0)
            rc = -errno;
        if (rc < 0) {
            snprintf(err, len, "runtime_dir %s: creating it failed: %s", runtime_dir, strerror(-rc));
            goto out;
        }
    }
    rc = -EPERM;
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, len, "runtime_dir %s is %s, not a directory", runtime_dir, file_kind(st.st_mode));
        goto out;
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        snprintf(err, len,
                 "runtime_dir %s is owned by uid %u, neither moltd's user (uid %u) nor root; "
                 "refusing to keep generations there",
                 runtime_dir, (unsigned)st.st_uid, (unsigned)geteuid());
        goto out;
    }
    /* Whoever can write to it could rename a generation's directory away and
     * put other plugins in its place; the sticky bit (/tmp) forbids that. */
    if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)) {
        snprintf(err, len,
                 "runtime_dir %s is writable by group or others (mode %04o): another user could replace "
                 "a generation's plugins (chmod go-w it, or choose another runtime_dir)",
                 runtime_dir, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    rc = check_mount(runtime_dir, err, len);
out:
    return rc;
}

/* ---- plugin files ----------------------------------------------------------------------- */

/* One directory holds one file per name: two different files called x.so
 * cannot both be copied. */
static int names_check(const molt_config_t *cfg, char *err, size_t len)
{
    for (size_t i = 0; i < cfg->nplugins; i++) {
        const char *pi = cfg->plugins[i].path;
        for (size_t j = 0; j < i; j++) {
            const char *pj = cfg->plugins[j].path;
            if (strcmp(pi, pj) != 0 && strcmp(base_name(pi), base_name(pj)) == 0) {
                snprintf(err, len,
                         "plugins[%zu].file: %s and %s (plugins[%zu]) have the same file name %s, and a "
                         "generation directory holds one file per name; rename one of them",
                         i, pi, pj, j, base_name(pi));
                return -EEXIST;
            }
        }
    }
    return 0;
}

/*
 * Opens plugin file i and checks what was opened (symlinks on the way are
 * fine: the descriptor is what gets hashed and copied). *fd_out gets the
 * descriptor on success.
 */
static int plugin_open(const molt_config_t *cfg, size_t i, int *fd_out, char *err, size_t len)
{
    const char *path = cfg->plugins[i].path;
    struct stat st;
    int rc = 0;
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, len, "plugins[%zu].file: open(%s) failed: %s", i, path, strerror(-rc));
        goto fail;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(err, len, "plugins[%zu].file: fstat(%s) failed: %s", i, path, strerror(-rc));
        goto fail;
    }
    rc = -EPERM;
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, len, "plugins[%zu].file: %s is %s, not a regular file; refusing to load it", i, path,
                 file_kind(st.st_mode));
        goto fail;
    }
    if (st.st_mode & 022) {
        snprintf(err, len,
                 "plugins[%zu].file: %s is writable by group or others (mode %04o); refusing to load it", i,
                 path, (unsigned)(st.st_mode & 07777));
        goto fail;
    }
    if (st.st_uid != 0 && st.st_uid != geteuid()) {
        snprintf(err, len,
                 "plugins[%zu].file: %s is owned by uid %u, neither root nor moltd's user (uid %u); "
                 "refusing to load it",
                 i, path, (unsigned)st.st_uid, (unsigned)geteuid());
        goto fail;
    }
    *fd_out = fd;
    return 0;
fail:
    molt_close(&fd);
    return rc;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/*
 * Reads plugin file i from `in` to its end, hashing it, and writes every byte
 * read to `out` when out >= 0 (dest names the copy in messages): the copy is
 * exactly what was hashed. hex gets the lowercase sha256.
 */
static int copy_hashed(const molt_config_t *cfg, size_t i, int in, int out, const char *dest, char *hex,
                       uint64_t *bytes, char *err, size_t len)
{
    struct sha256_ctx ctx;
    uint8_t digest[SHA256_DIGEST_SIZE];
    uint64_t total = 0;
    int rc = 0;
    uint8_t *buf = malloc(GENDIR_COPY_CHUNK);
    if (!buf) {
        rc = -ENOMEM;
        snprintf(err, len, "plugins[%zu].file: out of memory reading %s", i, cfg->plugins[i].path);
        goto out;
    }
    sha256_init(&ctx);
    for (;;) {
        ssize_t n = read(in, buf, GENDIR_COPY_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            snprintf(err, len, "plugins[%zu].file: read(%s) failed: %s", i, cfg->plugins[i].path,
                     strerror(-rc));
            goto out;
        }
        if (n == 0)
            break;
        sha256_update(&ctx, (size_t)n, buf);
        total += (uint64_t)n;
        if (out >= 0 && (rc = write_all(out, buf, (size_t)n)) < 0) {
            snprintf(err, len, "plugins[%zu].file: writing the copy %s failed: %s", i, dest, strerror(-rc));
            goto out;
        }
    }
    sha256_digest(&ctx, sizeof(digest), digest);
    for (size_t k = 0; k < sizeof(digest); k++)
        snprintf(hex + 2 * k, 3, "%02x", digest[k]);
    if (bytes)
        *bytes = total;
out:
    free(buf);
    return rc;
}

/* Every instance using plugin file i (i is the first) must agree with its pin. */
static int pins_check(const molt_config_t *cfg, size_t i, const char *hex, char *err, size_t len)
{
    for (size_t k = i; k < cfg->nplugins; k++) {
        const molt_plugin_cfg_t *p = &cfg->plugins[k];
        if (!p->sha256 || strcmp(p->path, cfg->plugins[i].path) != 0)
            continue;
        if (strcasecmp(p->sha256, hex) != 0) {
            snprintf(err, len, "plugins[%zu].sha256: %s has sha256 %s, the config pins %s", k, p->path, hex,
                     p->sha256);
            return -EBADMSG;
        }
    }
    return 0;
}

/*
 * Checks plugin file i through one descriptor (type, mode, owner, sha256
 * pins) and, when dfd >= 0, copies it into dfd (the directory `dir`) as its
 * file name, mode 0500.
 */
static int plugin_take(const molt_config_t *cfg, size_t i, const char *dir, int dfd, uint64_t *bytes,
                       char *err, size_t len)
{
    const char *base = base_name(cfg->plugins[i].path);
    char hex[GENDIR_SHA256_HEX];
    char dest[PATH_MAX] = "";
    int in = -1, out = -1;
    int rc = plugin_open(cfg, i, &in, err, len);
    if (rc < 0)
        goto out;
    if (dfd >= 0) {
        snprintf(dest, sizeof(dest), "%s/%s", dir, base);
        out = openat(dfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0500);
        if (out < 0) {
            rc = -errno;
            snprintf(err, len, "plugins[%zu].file: creating the copy %s failed: %s", i, dest, strerror(-rc));
            goto out;
        }
    }
    rc = copy_hashed(cfg, i, in, out, dest, hex, bytes, err, len);
    if (rc < 0)
        goto out;
    rc = pins_check(cfg, i, hex, err, len);
    if (rc < 0)
        goto out;
    if (out >= 0) {
        /* Exact mode whatever the umask; read-only, so a copy is not edited in place. */
        if (fchmod(out, 0500) < 0) {
            rc = -errno;
            snprintf(err, len, "plugins[%zu].file: fchmod(%s) failed: %s", i, dest, strerror(-rc));
            goto out;
        }
        int c = close(out);
        out = -1;
        if (c < 0) {
            rc = -errno;
            snprintf(err, len, "plugins[%zu].file: writing the copy %s failed: %s", i, dest, strerror(-rc));
            goto out;
        }
    }
out:
    molt_close(&in);
    molt_close(&out);
    return rc;
}

int sup_gendir_check(const molt_config_t *cfg, char *err, size_t len)
{
    int rc = sup_gendir_check_runtime(cfg->runtime_dir, false, err, len);
    if (rc < 0)
        goto out;
    rc = names_check(cfg, err, len);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < cfg->nplugins; i++) {
        if (path_seen_before(cfg, i))
            continue;
        rc = plugin_take(cfg, i, NULL, -1, NULL, err, len);
        if (rc < 0)
            goto out;
    }
out:
    return rc;
}

/* ---- generation directories ------------------------------------------------------------- */

static bool is_gen_name(const char *name)
{
    uuid_t u;
    size_t plen = strlen(SUP_GENDIR_PREFIX);
    return strncmp(name, SUP_GENDIR_PREFIX, plen) == 0 && strlen(name + plen) == GENDIR_UUID_LEN &&
           uuid_parse(name + plen, u) == 0;
}

int sup_gendir_create(const molt_config_t *cfg, const char *gen_id, char **dir_out, size_t *nfiles,
                      uint64_t *nbytes, char *err, size_t len)
{
    char *dir = NULL;
    char name[64];
    int dfd = -1;
    bool made = false;
    size_t files = 0;
    uint64_t total = 0;
    int rc = 0;

    *dir_out = NULL;
    /* Only gen-<uuid> is ever pruned: refuse to make anything else. */
    if (snprintf(name, sizeof(name), SUP_GENDIR_PREFIX "%s", gen_id ? gen_id : "") >= (int)sizeof(name) ||
        !is_gen_name(name)) {
        rc = -EINVAL;
        snprintf(err, len, "generation id \"%s\" is not a UUID", gen_id ? gen_id : "(null)");
        goto fail;
    }
    rc = sup_gendir_check_runtime(cfg->runtime_dir, true, err, len);
    if (rc < 0)
        goto fail;
    rc = names_check(cfg, err, len);
    if (rc < 0)
        goto fail;
    if (asprintf(&dir, "%s/%s", cfg->runtime_dir, name) < 0) {
        dir = NULL;
        rc = -ENOMEM;
        snprintf(err, len, "runtime_dir %s: out of memory", cfg->runtime_dir);
        goto fail;
    }
    if (mkdir(dir, 0700) < 0) {
        rc = -errno;
        snprintf(err, len, "runtime_dir %s: mkdir(%s) failed: %s", cfg->runtime_dir, dir, strerror(-rc));
        goto fail;
    }
    made = true;
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0 || fchmod(dfd, 0700) < 0) {
        rc = -errno;
        snprintf(err, len, "runtime_dir %s: opening %s failed: %s", cfg->runtime_dir, dir, strerror(-rc));
        goto fail;
    }
    for (size_t i = 0; i < cfg->nplugins; i++) {
        uint64_t bytes = 0;
        if (path_seen_before(cfg, i))
            continue;
        rc = plugin_take(cfg, i, dir, dfd, &bytes, err, len);
        if (rc < 0)
            goto fail;
        files++;
        total += bytes;
    }
    molt_close(&dfd);
    if (nfiles)
        *nfiles = files;
    if (nbytes)
        *nbytes = total;
    *dir_out = dir;
    return 0;
fail:
    molt_close(&dfd);
    if (made) {
        int r = remove_at(AT_FDCWD, dir, GENDIR_RM_DEPTH);
        if (r < 0)
            molt_warn("removing the partly filled generation directory %s failed: %s", dir, strerror(-r));
    }
    free(dir);
    return rc;
}

int sup_gendir_remove(const char *dir)
{
    if (!dir)
        return 0;
    int rc = remove_at(AT_FDCWD, dir, GENDIR_RM_DEPTH);
    if (rc > 0)
        molt_info("removed generation directory %s", dir);
    else if (rc < 0)
        molt_warn("removing generation directory %s failed: %s", dir, strerror(-rc));
    return rc < 0 ? rc : 0;
}

typedef struct gen_entry {
    char name[64];
    struct timespec mtime;
} gen_entry_t;

static int newest_first(const void *a, const void *b)
{
    const gen_entry_t *x = a, *y = b;
    if (x->mtime.tv_sec != y->mtime.tv_sec)
        return x->mtime.tv_sec > y->mtime.tv_sec ? -1 : 1;
    if (x->mtime.tv_nsec != y->mtime.tv_nsec)
        return x->mtime.tv_nsec > y->mtime.tv_nsec ? -1 : 1;
    return strcmp(x->name, y->name); /* any fixed order will do */
}

static bool name_in_use(const char *name, const char *const *in_use, size_t n_in_use)
{
    for (size_t k = 0; k < n_in_use; k++)
        if (in_use[k] && strcmp(base_name(in_use[k]), name) == 0)
            return true;
    return false;
}

int sup_gendir_prune(const char *runtime_dir, unsigned keep, const char *const *in_use, size_t n_in_use)
{
    gen_entry_t *v = NULL;
    size_t n = 0, cap = 0;
    DIR *d = NULL;
    int removed = 0;
    int rc = 0;
    int fd = open(runtime_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT ? 0 : -errno;
        goto out;
    }
    d = fdopendir(fd);
    if (!d) {
        rc = -errno;
        close(fd);
        goto out;
    }
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            rc = -errno;
            break;
        }
        struct stat st;
        if (!is_gen_name(e->d_name) || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISDIR(st.st_mode))
            continue;
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            gen_entry_t *nv = realloc(v, ncap * sizeof(*v));
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
            cap = ncap;
        }
        memcpy(v[n].name, e->d_name, strlen(e->d_name) + 1); /* is_gen_name(): 40 bytes */
        v[n].mtime = st.st_mtim;
        n++;
    }
    if (rc < 0)
        goto out;
    qsort(v, n, sizeof(*v), newest_first);
    for (size_t i = keep; i < n; i++) {
        if (name_in_use(v[i].name, in_use, n_in_use))
            continue;
        int r = remove_at(dirfd(d), v[i].name, GENDIR_RM_DEPTH);
        if (r > 0) {
            removed++;
            molt_info("removed generation directory %s/%s (beyond keep_generations %u)", runtime_dir,
                      v[i].name, keep);
        } else if (r < 0) {
            molt_warn("removing generation directory %s/%s failed: %s", runtime_dir, v[i].name, strerror(-r));
        }
    }
    rc = removed;
out:
    if (d)
        closedir(d);
    free(v);
    return rc;
}

int sup_gendir_count(const char *runtime_dir)
{
    int n = 0;
    int fd = open(runtime_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno)
                n = -errno;
            break;
        }
        struct stat st;
        if (is_gen_name(e->d_name) && fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISDIR(st.st_mode))
            n++;
    }
    closedir(d);
    return n;
}

int sup_gendir_share(const char *dir, gid_t gid, char *err, size_t len)
{
    DIR *d = NULL;
    int rc = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fchown(fd, (uid_t)-1, gid) < 0 || fchmod(fd, 0750) < 0) {
        rc = -errno;
        snprintf(err, len, "giving %s to gid %u (mode 0750) failed: %s", dir, (unsigned)gid, strerror(-rc));
        molt_close(&fd);
        goto out;
    }
    d = fdopendir(fd);
    if (!d) {
        rc = -errno;
        close(fd);
        snprintf(err, len, "reading %s failed: %s", dir, strerror(-rc));
        goto out;
    }
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno) {
                rc = -errno;
                snprintf(err, len, "reading %s failed: %s", dir, strerror(-rc));
            }
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        /* Only the copies we made: regular files, never through a symlink. */
        int f = openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        struct stat st;
        rc = f < 0 || fstat(f, &st) < 0                               ? -errno
             : !S_ISREG(st.st_mode)                                  ? -EPERM
             : fchown(f, (uid_t)-1, gid) < 0 || fchmod(f, 0550) < 0 ? -errno
                                                                     : 0;
        if (rc < 0) {
            snprintf(err, len, "giving %s/%s to gid %u (mode 0550) failed: %s", dir, e->d_name, (unsigned)gid,
                     strerror(-rc));
            molt_close(&f);
            break;
        }
        molt_close(&f);
    }
out:
    if (d)
        closedir(d);
    return rc;
}
