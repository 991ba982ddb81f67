/*
 * Generations on disk (supervisor/gendir.c): checks refused files and
 * runtime dirs, copies what it accepts into gen-<uuid> (0700, copies 0500),
 * prunes old generation directories, and recognises a noexec mount.
 *
 * Every test works in its own directory under a base temp dir that the
 * tcase's unchecked fixture (in the runner, which survives a failed test)
 * creates and removes. The config is built by hand: the config loader
 * would refuse a FIFO or a directory itself, and this module must too.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "shared/config.h"
#include "supervisor/gendir.h"

/* Contents and their sha256 (sha256sum). */
#define CONTENT_A "molt gendir test: plugin a\n"
#define SHA_A "7053b5aa8c21135294b4b29be7ae8591b0ba4fbc152de381392451572a557726"
#define CONTENT_B "molt gendir test: plugin b, a little longer\n"
#define SHA_B "b6c4c4d08d5c3bb73ed51b2e4292bb226a59d912d554598f37861c35eda70203"
#define SHA_ZERO "0000000000000000000000000000000000000000000000000000000000000000"
#define UUID_1 "0b3c5e8a-2f1d-4c7e-9a8b-112233445566"
#define NOBODY 65534
#define MAX_PLUGINS 8

/* Sizes grow along the paths built from them, so that every snprintf fits. */
static char base[64];
static char test_dir[128];
static char runtime[512];

/* One test's world: its dir, a runtime_dir under it, and a config. Static,
 * so that a forked test leaks nothing the leak checker would report. */
static struct {
    char paths[MAX_PLUGINS][1024];
    char pins[MAX_PLUGINS][80];
    char names[MAX_PLUGINS][16];
    molt_plugin_cfg_t plugins[MAX_PLUGINS];
    molt_config_t cfg;
    char err[2048];
} T;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    if (flag == FTW_DP || flag == FTW_D)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static void suite_setup(void)
{
    char tmpl[] = "/tmp/molt-gendir-XXXXXX";
    ck_assert_msg(mkdtemp(tmpl) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(base, sizeof(base), "%s", tmpl);
}

static void suite_teardown(void)
{
    if (base[0])
        nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    base[0] = '\0';
}

/* A fresh test dir and an empty config whose runtime_dir is <dir>/run (not created). */
static void world(void)
{
    memset(&T, 0, sizeof(T));
    memset(runtime, 0, sizeof(runtime));
    snprintf(test_dir, sizeof(test_dir), "%s/t-XXXXXX", base);
    ck_assert_msg(mkdtemp(test_dir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(runtime, sizeof(runtime), "%s/run", test_dir);
    T.cfg.runtime_dir = runtime;
    T.cfg.plugins = T.plugins;
    T.cfg.reload.keep_generations = 3;
}

/* <dir>/<rel>, written with content and exactly `mode`. */
static const char *file_at(char *buf, size_t len, const char *rel)
{
    snprintf(buf, len, "%s/%s", test_dir, rel);
    return buf;
}

static void write_file(const char *rel, const void *data, size_t n, mode_t mode)
{
    char path[PATH_MAX];
    file_at(path, sizeof(path), rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    mkdir(path, 0755);
    *slash = '/';
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_msg(fd >= 0, "open(%s): %s", path, strerror(errno));
    ck_assert_int_eq(write(fd, data, n), (ssize_t)n);
    close(fd);
    ck_assert_int_eq(chmod(path, mode), 0);
}

/* Adds an instance using <dir>/<rel> (or an absolute path), with an optional pin. */
static void add_plugin(const char *rel, const char *pin)
{
    size_t i = T.cfg.nplugins++;
    ck_assert_uint_lt(i, MAX_PLUGINS);
    if (rel[0] == '/')
        snprintf(T.paths[i], sizeof(T.paths[i]), "%s", rel);
    else
        file_at(T.paths[i], sizeof(T.paths[i]), rel);
    snprintf(T.names[i], sizeof(T.names[i]), "p%zu", i);
    T.plugins[i].name = T.names[i];
    T.plugins[i].file = T.paths[i];
    T.plugins[i].path = T.paths[i];
    if (pin) {
        snprintf(T.pins[i], sizeof(T.pins[i]), "%s", pin);
        T.plugins[i].sha256 = T.pins[i];
    }
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    ck_assert_msg(lstat(path, &st) == 0, "lstat(%s): %s", path, strerror(errno));
    return st.st_mode;
}

/* How many gen-* entries the runtime dir holds (0 if it does not exist). */
static size_t gen_dirs(void)
{
    size_t n = 0;
    DIR *d = opendir(runtime);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, "gen-", 4) == 0)
            n++;
    closedir(d);
    return n;
}

static size_t entries(const char *dir)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "opendir(%s): %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void check_content(const char *path, const void *data, size_t n)
{
    char *buf = malloc(n + 1);
    ck_assert_ptr_nonnull(buf);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_msg(fd >= 0, "open(%s): %s", path, strerror(errno));
    size_t got = 0;
    ssize_t r;
    while ((r = read(fd, buf + got, n + 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    bool same = got == n && memcmp(buf, data, n) == 0;
    free(buf);
    ck_assert_msg(same, "%s: %zu bytes, not the %zu expected, or other content", path, got, n);
}

static void assert_err_has(const char *needle)
{
    ck_assert_msg(strstr(T.err, needle) != NULL, "the error '%s' does not mention '%s'", T.err, needle);
}

/* sup_gendir_check() and sup_gendir_create() both refuse with `rc`, name
 * every needle, and leave no generation directory. */
static void refused(int rc, const char *const *needles)
{
    ck_assert_int_eq(sup_gendir_check(&T.cfg, T.err, sizeof(T.err)), rc);
    for (size_t i = 0; needles[i]; i++)
        assert_err_has(needles[i]);
    char *dir = (char *)"untouched";
    T.err[0] = '\0';
    ck_assert_int_eq(sup_gendir_create(&T.cfg, UUID_1, &dir, NULL, NULL, T.err, sizeof(T.err)), rc);
    ck_assert_ptr_null(dir);
    for (size_t i = 0; needles[i]; i++)
        assert_err_has(needles[i]);
    ck_assert_uint_eq(gen_dirs(), 0);
}

/* ---- copies ------------------------------------------------------------------------------- */

START_TEST(test_copy_good)
{
    world();
    /* A file bigger than one copy chunk, to copy in several reads. */
    size_t big_n = 200000;
    char *big = malloc(big_n);
    ck_assert_ptr_nonnull(big);
    for (size_t i = 0; i < big_n; i++)
        big[i] = (char)(i * 7 + i / 251);
    write_file("lib/a.so", CONTENT_A, strlen(CONTENT_A), 0644);
    write_file("lib/b.so", CONTENT_B, strlen(CONTENT_B), 0755);
    write_file("other/big.so", big, big_n, 0444);
    add_plugin("lib/a.so", NULL);
    add_plugin("lib/b.so", SHA_B);
    add_plugin("lib/a.so", SHA_A); /* a second instance of a.so: one copy */
    add_plugin("other/big.so", NULL);
    snprintf(runtime, sizeof(runtime), "%s/run/deeper", test_dir); /* mkdir -p */

    ck_assert_int_eq(sup_gendir_check(&T.cfg, T.err, sizeof(T.err)), 0);
    ck_assert_msg(access(runtime, F_OK) < 0, "sup_gendir_check created runtime_dir");

    char *dir = NULL;
    size_t nfiles = 0;
    uint64_t nbytes = 0;
    int rc = sup_gendir_create(&T.cfg, UUID_1, &dir, &nfiles, &nbytes, T.err, sizeof(T.err));
    ck_assert_msg(rc == 0, "sup_gendir_create: %d: %s", rc, T.err);
    char expect[PATH_MAX + 64];
    snprintf(expect, sizeof(expect), "%s/gen-%s", runtime, UUID_1);
    ck_assert_str_eq(dir, expect);
    ck_assert_uint_eq(nfiles, 3);
    ck_assert_uint_eq(nbytes, strlen(CONTENT_A) + strlen(CONTENT_B) + big_n);
    ck_assert_uint_eq(mode_of(runtime) & 07777, 0700);
    ck_assert(S_ISDIR(mode_of(dir)));
    ck_assert_uint_eq(mode_of(dir) & 07777, 0700);
    ck_assert_uint_eq(entries(dir), 3);

    char p[PATH_MAX + 128];
    snprintf(p, sizeof(p), "%s/a.so", dir);
    ck_assert(S_ISREG(mode_of(p)));
    ck_assert_uint_eq(mode_of(p) & 07777, 0500);
    check_content(p, CONTENT_A, strlen(CONTENT_A));
    snprintf(p, sizeof(p), "%s/b.so", dir);
    ck_assert_uint_eq(mode_of(p) & 07777, 0500);
    check_content(p, CONTENT_B, strlen(CONTENT_B));
    snprintf(p, sizeof(p), "%s/big.so", dir);
    ck_assert_uint_eq(mode_of(p) & 07777, 0500);
    check_content(p, big, big_n);
    free(big);

    /* The same generation twice is an error, and leaves the first alone. */
    char *again = NULL;
    ck_assert_int_eq(sup_gendir_create(&T.cfg, UUID_1, &again, NULL, NULL, T.err, sizeof(T.err)), -EEXIST);
    ck_assert_ptr_null(again);
    ck_assert_uint_eq(entries(dir), 3);

    ck_assert_int_eq(sup_gendir_remove(dir), 0);
    ck_assert_msg(access(dir, F_OK) < 0, "%s is still there", dir);
    ck_assert_int_eq(sup_gendir_remove(dir), 0); /* already gone: fine */
    ck_assert_int_eq(sup_gendir_remove(NULL), 0);
    free(dir);
}
END_TEST

START_TEST(test_no_plugins)
{
    world();
    char *dir = NULL;
    size_t nfiles = 9;
    ck_assert_int_eq(sup_gendir_create(&T.cfg, UUID_1, &dir, &nfiles, NULL, T.err, sizeof(T.err)), 0);
    ck_assert_uint_eq(nfiles, 0);
    ck_assert_uint_eq(entries(dir), 0);
    free(dir);
}
END_TEST

START_TEST(test_bad_gen_id)
{
    world();
    char *dir = NULL;
    const char *bad[] = {"", "nope", "../../etc", UUID_1 "0", "0b3c5e8a-2f1d-4c7e-9a8b-11223344556g"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_int_eq(sup_gendir_create(&T.cfg, bad[i], &dir, NULL, NULL, T.err, sizeof(T.err)), -EINVAL);
        assert_err_has("is not a UUID");
    }
    ck_assert_int_eq(sup_gendir_create(&T.cfg, NULL, &dir, NULL, NULL, T.err, sizeof(T.err)), -EINVAL);
    ck_assert_uint_eq(gen_dirs(), 0);
}
END_TEST

START_TEST(test_symlink_accepted)
{
    world();
    write_file("real/target.so", CONTENT_A, strlen(CONTENT_A), 0644);
    char target[PATH_MAX], link[PATH_MAX];
    file_at(target, sizeof(target), "real/target.so");
    file_at(link, sizeof(link), "link.so");
    ck_assert_int_eq(symlink(target, link), 0);
    add_plugin("link.so", SHA_A);
    char *dir = NULL;
    int rc = sup_gendir_create(&T.cfg, UUID_1, &dir, NULL, NULL, T.err, sizeof(T.err));
    ck_assert_msg(rc == 0, "sup_gendir_create: %d: %s", rc, T.err);
    char p[PATH_MAX + 128];
    snprintf(p, sizeof(p), "%s/link.so", dir);
    ck_assert_msg(S_ISREG(mode_of(p)), "the copy of a symlink is not a regular file");
    ck_assert_uint_eq(mode_of(p) & 07777, 0500);
    check_content(p, CONTENT_A, strlen(CONTENT_A));
    free(dir);
}
END_TEST

/* ---- refusals ----------------------------------------------------------------------------- */

START_TEST(test_group_writable)
{
    world();
    write_file("a.so", CONTENT_A, strlen(CONTENT_A), 0664);
    add_plugin("a.so", NULL);
    refused(-EPERM,
            (const char *const[]){"plugins[0].file: ", T.paths[0],
                                  "is writable by group or others (mode 0664); refusing to load it", NULL});
}
END_TEST

START_TEST(test_world_writable)
{
    world();
    write_file("a.so", CONTENT_A, strlen(CONTENT_A), 0644);
    write_file("b.so", CONTENT_B, strlen(CONTENT_B), 0646);
    add_plugin("a.so", NULL);
    add_plugin("b.so", NULL);
    refused(-EPERM, (const char *const[]){"plugins[1].file: ", T.paths[1], "(mode 0646)", NULL});
}
END_TEST

START_TEST(test_directory_refused)
{
    world();
    char p[PATH_MAX];
    ck_assert_int_eq(mkdir(file_at(p, sizeof(p), "dir.so"), 0755), 0);
    add_plugin("dir.so", NULL);
    refused(-EPERM, (const char *const[]){"plugins[0].file: ", T.paths[0],
                                          "is a directory, not a regular file", NULL});
}
END_TEST

START_TEST(test_fifo_refused)
{
    world();
    char p[PATH_MAX];
    ck_assert_int_eq(mkfifo(file_at(p, sizeof(p), "fifo.so"), 0644), 0);
    add_plugin("fifo.so", NULL);
    /* Must not wait for a writer: the tcase timeout would catch that. */
    refused(-EPERM,
            (const char *const[]){"plugins[0].file: ", T.paths[0], "is a FIFO, not a regular file", NULL});
}
END_TEST

START_TEST(test_missing_file)
{
    world();
    add_plugin("gone.so", NULL);
    refused(-ENOENT, (const char *const[]){"plugins[0].file: open(", T.paths[0], "No such file", NULL});
}
END_TEST

START_TEST(test_owner_refused)
{
    if (geteuid() != 0) {
        printf("test_owner_refused: skipped: chown() to uid %d needs root, and this runs as uid %u\n", NOBODY,
               (unsigned)geteuid());
        return;
    }
    world();
    write_file("a.so", CONTENT_A, strlen(CONTENT_A), 0644);
    char p[PATH_MAX];
    ck_assert_int_eq(chown(file_at(p, sizeof(p), "a.so"), NOBODY, NOBODY), 0);
    add_plugin("a.so", NULL);
    refused(-EPERM, (const char *const[]){"plugins[0].file: ", T.paths[0], "is owned by uid 65534",
                                          "neither root nor moltd's user (uid 0)", NULL});
}
END_TEST

START_TEST(test_pin_match)
{
    world();
    write_file("a.so", CONTENT_A, strlen(CONTENT_A), 0644);
    write_file("b.so", CONTENT_B, strlen(CONTENT_B), 0644);
    add_plugin("a.so", SHA_A);
    add_plugin("b.so", SHA_B);
    ck_assert_int_eq(sup_gendir_check(&T.cfg, T.err, sizeof(T.err)), 0);
    char *dir = NULL;
    int rc = sup_gendir_create(&T.cfg, UUID_1, &dir, NULL, NULL, T.err, sizeof(T.err));
    ck_assert_msg(rc == 0, "sup_gendir_create: %d: %s", rc, T.err);
    free(dir);
}
END_TEST

START_TEST(test_pin_mismatch)
{
    world();
    write_file("a.so", CONTENT_A, strlen(CONTENT_A), 0644);
    write_file("b.so", CONTENT_B, strlen(CONTENT_B), 0644);
    add_plugin("a.so", SHA_A);
    add_plugin("b.so", SHA_A); /* b.so pinned with a.so's hash */
    char msg[PATH_MAX + 256];
    snprintf(msg, sizeof(msg), "plugins[1].sha256: %s has sha256 %s, the config pins %s", T.paths[1], SHA_B,
             SHA_A);
    refused(-EBADMSG, (const char *const[]){msg, NULL});
}
END_TEST

/* Two instances of one file with different pins: the one that is wrong is named. */
START_TEST(test_pin_mismatch_second_instance)
{
    world();
    write_file("a.so", CONTENT_A, strlen(CONTENT_A), 0644);
    add_plugin("a.so", SHA_A);
    add_plugin("a.so", SHA_ZERO);
    refused(-EBADMSG, (const char *const[]){"plugins[1].sha256: ", SHA_A, "the config pins " SHA_ZERO, NULL});
}
END_TEST

START_TEST(test_basename_clash)
{
    world();
    write_file("one/x.so", CONTENT_A, strlen(CONTENT_A), 0644);
    write_file("two/x.so", CONTENT_B, strlen(CONTENT_B), 0644);
    add_plugin("one/x.so", NULL);
    add_plugin("two/x.so", NULL);
    refused(-EEXIST,
            (const char *const[]){"plugins[1].file: ", T.paths[0], T.paths[1], "same file name x.so", NULL});
}
END_TEST

/* The first file is copied, the second is refused: nothing is left. */
START_TEST(test_partial_removed)
{
    world();
    write_file("a.so", CONTENT_A, strlen(CONTENT_A), 0644);
    write_file("b.so", CONTENT_B, strlen(CONTENT_B), 0666);
    add_plugin("a.so", NULL);
    add_plugin("b.so", NULL);
    char *dir = NULL;
    ck_assert_int_eq(sup_gendir_create(&T.cfg, UUID_1, &dir, NULL, NULL, T.err, sizeof(T.err)), -EPERM);
    assert_err_has("plugins[1].file");
    ck_assert_ptr_null(dir);
    ck_assert_msg(S_ISDIR(mode_of(runtime)), "runtime_dir was not created");
    ck_assert_uint_eq(entries(runtime), 0);

    /* Same with a pin that does not match, found only while copying. */
    ck_assert_int_eq(chmod(T.paths[1], 0644), 0);
    snprintf(T.pins[1], sizeof(T.pins[1]), "%s", SHA_ZERO);
    T.plugins[1].sha256 = T.pins[1];
    ck_assert_int_eq(sup_gendir_create(&T.cfg, UUID_1, &dir, NULL, NULL, T.err, sizeof(T.err)), -EBADMSG);
    ck_assert_ptr_null(dir);
    ck_assert_uint_eq(entries(runtime), 0);
}
END_TEST

/* ---- runtime_dir -------------------------------------------------------------------------- */

START_TEST(test_runtime_dir_checks)
{
    world();
    /* Created with exactly 0700 whatever the umask. */
    umask(0);
    ck_assert_int_eq(sup_gendir_check_runtime(runtime, false, T.err, sizeof(T.err)), 0);
    ck_assert_msg(access(runtime, F_OK) < 0, "a check without create created runtime_dir");
    ck_assert_int_eq(sup_gendir_check_runtime(runtime, true, T.err, sizeof(T.err)), 0);
    ck_assert_uint_eq(mode_of(runtime) & 07777, 0700);
    umask(022);

    /* An existing one is checked, never changed. */
    ck_assert_int_eq(chmod(runtime, 0777), 0);
    ck_assert_int_eq(sup_gendir_check_runtime(runtime, true, T.err, sizeof(T.err)), -EPERM);
    assert_err_has("runtime_dir ");
    assert_err_has("is writable by group or others (mode 0777)");
    ck_assert_uint_eq(mode_of(runtime) & 07777, 0777);
    ck_assert_int_eq(chmod(runtime, 0770), 0);
    ck_assert_int_eq(sup_gendir_check_runtime(runtime, false, T.err, sizeof(T.err)), -EPERM);
    /* Sticky (/tmp-like): others cannot rename or remove our entries. */
    ck_assert_int_eq(chmod(runtime, 01777), 0);
    ck_assert_int_eq(sup_gendir_check_runtime(runtime, true, T.err, sizeof(T.err)), 0);
    ck_assert_int_eq(chmod(runtime, 0755), 0);
    ck_assert_int_eq(sup_gendir_check_runtime(runtime, true, T.err, sizeof(T.err)), 0);

    /* And sup_gendir_check refuses the same. */
    ck_assert_int_eq(chmod(runtime, 0757), 0);
    ck_assert_int_eq(sup_gendir_check(&T.cfg, T.err, sizeof(T.err)), -EPERM);
    assert_err_has("(mode 0757)");
    ck_assert_int_eq(chmod(runtime, 0700), 0);

    if (geteuid() == 0) {
        ck_assert_int_eq(chown(runtime, NOBODY, NOBODY), 0);
        ck_assert_int_eq(sup_gendir_check_runtime(runtime, true, T.err, sizeof(T.err)), -EPERM);
        assert_err_has("is owned by uid 65534, neither moltd's user (uid 0) nor root");
        ck_assert_int_eq(chown(runtime, 0, 0), 0);
    } else {
        printf("test_runtime_dir_checks: owner check skipped: chown() needs root\n");
    }

    /* Not a directory. */
    char f[PATH_MAX];
    write_file("plain", "x", 1, 0600);
    file_at(f, sizeof(f), "plain");
    ck_assert_int_eq(sup_gendir_check_runtime(f, true, T.err, sizeof(T.err)), -EPERM);
    assert_err_has("is a regular file, not a directory");
}
END_TEST

START_TEST(test_noexec_flags)
{
    char err[512];
    ck_assert_int_eq(sup_gendir_check_mount_flags("/run/molt", 0, err, sizeof(err)), 0);
    ck_assert_int_eq(
        sup_gendir_check_mount_flags("/run/molt", ST_RDONLY | ST_NOSUID | ST_NODEV, err, sizeof(err)), 0);
    ck_assert_int_eq(sup_gendir_check_mount_flags("/run/molt", ST_NOEXEC | ST_NOSUID, err, sizeof(err)),
                     -EPERM);
    ck_assert_str_eq(err,
                     "runtime_dir /run/molt is on a noexec mount: plugins copied there could not be loaded "
                     "(mount it exec, or choose another runtime_dir)");
}
END_TEST

/*
 * A real noexec mount: a tmpfs mounted in a mount namespace of this test's
 * own (Check forks each test), so that nothing outside sees it, and it goes
 * with the process.
 */
START_TEST(test_noexec_mount)
{
    const char *fork_mode = getenv("CK_FORK");
    if (fork_mode && strcmp(fork_mode, "no") == 0) {
        printf("test_noexec_mount: skipped: needs CK_FORK (it mounts in a namespace of its own)\n");
        return;
    }
    world();
    char mnt[256];
    ck_assert_int_eq(mkdir(file_at(mnt, sizeof(mnt), "mnt"), 0700), 0);
    if (unshare(CLONE_NEWNS) < 0) {
        printf("test_noexec_mount: skipped: unshare(CLONE_NEWNS) failed: %s (the flags are tested alone)\n",
               strerror(errno));
        return;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tmpfs", mnt, "tmpfs", MS_NOEXEC | MS_NOSUID | MS_NODEV, "mode=0700") < 0) {
        printf("test_noexec_mount: skipped: mount(tmpfs, noexec) failed: %s (the flags are tested alone)\n",
               strerror(errno));
        return;
    }
    write_file("a.so", CONTENT_A, strlen(CONTENT_A), 0644);
    add_plugin("a.so", NULL);
    /* runtime_dir missing: the mount it would be created on is checked. */
    snprintf(runtime, sizeof(runtime), "%s/run/molt", mnt);
    ck_assert_int_eq(sup_gendir_check(&T.cfg, T.err, sizeof(T.err)), -EPERM);
    assert_err_has("is on a noexec mount");
    assert_err_has(runtime);
    ck_assert_msg(access(runtime, F_OK) < 0, "sup_gendir_check created runtime_dir");
    char *dir = NULL;
    ck_assert_int_eq(sup_gendir_create(&T.cfg, UUID_1, &dir, NULL, NULL, T.err, sizeof(T.err)), -EPERM);
    assert_err_has("is on a noexec mount");
    ck_assert_ptr_null(dir);
    ck_assert_uint_eq(gen_dirs(), 0);
    /* The mount point itself. */
    ck_assert_int_eq(sup_gendir_check_runtime(mnt, true, T.err, sizeof(T.err)), -EPERM);
    assert_err_has("is on a noexec mount");
    umount2(mnt, MNT_DETACH);
}
END_TEST

/* ---- prune -------------------------------------------------------------------------------- */

static const char *const gen_ids[] = {
    "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002",
    "00000000-0000-4000-8000-000000000003", "00000000-0000-4000-8000-000000000004",
    "00000000-0000-4000-8000-000000000005",
};

/* gen-<id> holding a read-only copy, with mtime `t` (seconds). */
static void make_gen(const char *id, time_t t)
{
    char d[PATH_MAX + 64], f[PATH_MAX + 128];
    snprintf(d, sizeof(d), "%s/gen-%s", runtime, id);
    ck_assert_int_eq(mkdir(d, 0700), 0);
    snprintf(f, sizeof(f), "%s/x.so", d);
    int fd = open(f, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0500);
    ck_assert_int_ge(fd, 0);
    close(fd);
    struct timespec ts[2] = {{.tv_sec = t}, {.tv_sec = t}};
    ck_assert_int_eq(utimensat(AT_FDCWD, d, ts, 0), 0);
}

static bool gen_exists(const char *id)
{
    char d[PATH_MAX + 64];
    snprintf(d, sizeof(d), "%s/gen-%s", runtime, id);
    return access(d, F_OK) == 0;
}

START_TEST(test_prune)
{
    world();
    ck_assert_int_eq(mkdir(runtime, 0700), 0);
    /* Created out of mtime order: the order comes from mtime, not from names or creation. */
    make_gen(gen_ids[3], 4000);
    make_gen(gen_ids[0], 1000);
    make_gen(gen_ids[4], 5000);
    make_gen(gen_ids[2], 3000);
    make_gen(gen_ids[1], 2000);
    /* Things prune must leave alone: not a UUID, a file, a symlink to a
     * directory, anything else. */
    char p[PATH_MAX + 64], other[PATH_MAX];
    snprintf(p, sizeof(p), "%s/gen-not-a-uuid", runtime);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    write_file("run/gen-00000000-0000-4000-8000-0000000000ff", "x", 1, 0600);
    ck_assert_int_eq(mkdir(file_at(other, sizeof(other), "elsewhere"), 0700), 0);
    snprintf(p, sizeof(p), "%s/gen-00000000-0000-4000-8000-0000000000fe", runtime);
    ck_assert_int_eq(symlink(other, p), 0);
    write_file("run/control.sock", "", 0, 0600);

    /* Keep the newest 2; the oldest is in use (given as a full path). */
    char in_use0[PATH_MAX + 64];
    snprintf(in_use0, sizeof(in_use0), "%s/gen-%s", runtime, gen_ids[0]);
    const char *in_use[] = {in_use0};
    ck_assert_int_eq(sup_gendir_prune(runtime, 2, in_use, 1), 2);
    ck_assert(gen_exists(gen_ids[4]));
    ck_assert(gen_exists(gen_ids[3]));
    ck_assert(!gen_exists(gen_ids[2]));
    ck_assert(!gen_exists(gen_ids[1]));
    ck_assert(gen_exists(gen_ids[0]));
    ck_assert_uint_eq(entries(runtime), 3 + 4);
    ck_assert_uint_eq(entries(other), 0);

    /* Nothing to do. */
    ck_assert_int_eq(sup_gendir_prune(runtime, 2, in_use, 1), 0);
    /* In use by bare name; keep 0 removes every other generation. */
    const char *by_name[] = {NULL, "gen-00000000-0000-4000-8000-000000000004"};
    ck_assert_int_eq(sup_gendir_prune(runtime, 0, by_name, 2), 2);
    ck_assert(gen_exists(gen_ids[3]));
    ck_assert(!gen_exists(gen_ids[4]));
    ck_assert(!gen_exists(gen_ids[0]));
    ck_assert_uint_eq(entries(runtime), 1 + 4);
    /* In-use directories count towards keep: keep 1 with the only one in use. */
    ck_assert_int_eq(sup_gendir_prune(runtime, 1, NULL, 0), 0);
    ck_assert(gen_exists(gen_ids[3]));

    /* A runtime_dir that does not exist holds nothing. */
    ck_assert_int_eq(sup_gendir_prune("/nonexistent/molt/run", 1, NULL, 0), 0);
}
END_TEST

/* Generations created by sup_gendir_create: the newest by mtime is the last created. */
START_TEST(test_prune_created)
{
    world();
    write_file("a.so", CONTENT_A, strlen(CONTENT_A), 0644);
    add_plugin("a.so", NULL);
    char *dirs[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) {
        int rc = sup_gendir_create(&T.cfg, gen_ids[i], &dirs[i], NULL, NULL, T.err, sizeof(T.err));
        ck_assert_msg(rc == 0, "sup_gendir_create: %s", T.err);
        struct timespec ts[2] = {{.tv_sec = 1000 + i}, {.tv_sec = 1000 + i}};
        ck_assert_int_eq(utimensat(AT_FDCWD, dirs[i], ts, 0), 0);
    }
    const char *in_use[] = {dirs[2]};
    ck_assert_int_eq(sup_gendir_prune(runtime, 1, in_use, 1), 2);
    ck_assert_uint_eq(gen_dirs(), 1);
    ck_assert_msg(access(dirs[2], F_OK) == 0, "the newest generation was removed");
    for (int i = 0; i < 3; i++)
        free(dirs[i]);
}
END_TEST

static Suite *gendir_suite(void)
{
    Suite *s = suite_create("gendir");
    TCase *tc = tcase_create("copy");
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_test(tc, test_copy_good);
    tcase_add_test(tc, test_no_plugins);
    tcase_add_test(tc, test_bad_gen_id);
    tcase_add_test(tc, test_symlink_accepted);
    suite_add_tcase(s, tc);

    tc = tcase_create("refuse");
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_test(tc, test_group_writable);
    tcase_add_test(tc, test_world_writable);
    tcase_add_test(tc, test_directory_refused);
    tcase_add_test(tc, test_fifo_refused);
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_owner_refused);
    tcase_add_test(tc, test_pin_match);
    tcase_add_test(tc, test_pin_mismatch);
    tcase_add_test(tc, test_pin_mismatch_second_instance);
    tcase_add_test(tc, test_basename_clash);
    tcase_add_test(tc, test_partial_removed);
    suite_add_tcase(s, tc);

    tc = tcase_create("runtime_dir");
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_test(tc, test_runtime_dir_checks);
    tcase_add_test(tc, test_noexec_flags);
    tcase_add_test(tc, test_noexec_mount);
    suite_add_tcase(s, tc);

    tc = tcase_create("prune");
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_test(tc, test_prune);
    tcase_add_test(tc, test_prune_created);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(gendir_suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
