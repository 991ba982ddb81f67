/*
 * Integration theme "sdk": what a plugin author does, for real.
 *
 * - `cmake --install` of this build into a temp prefix; the out-of-tree
 *   example project tests/sdk (a Makefile and ping.c) is copied out of the
 *   source tree and built with make against the installed header only,
 *   found through `pkg-config --cflags molt-plugin` with PKG_CONFIG_PATH
 *   pointing into the prefix (wherever the install put molt-plugin.pc:
 *   lib/, lib64/ or a multiarch lib/<triplet>/); `make install` puts ping.so
 *   into `pkg-config --variable=plugindir molt-plugin`; the installed moltd
 *   checks it (--check-plugin, -t) and a moltd serves it to curl.
 * - What the same install adds for operators: the systemd units (paths of
 *   the installed binaries and of the prefix's sysconfdir, systemd-analyze
 *   verify), the example config (installed plugins, moltd -t), the man pages
 *   moltd(8) and moltctl(8) (every section, every option and command of
 *   --help, rendered by groff -ww and man -l without a warning; each of those
 *   two is skipped, saying so, when groff or man is not installed).
 * - `moltd --check-plugin` on good and broken files: wrong ABI, no entry
 *   symbol, bad descriptors, constructors that crash, hang or exit, an entry
 *   point that crashes, a text file.
 *
 * Built from its own source (not test_moltd.c) as test_integ_sdk.
 */
#include <ctype.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>

#include "tests/integration/harness.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static void check_no_group_procs(const char *when)
{
    pid_t left[16];
    size_t n = h_group_procs(left, 16);
    H_CHECK(n == 0, "%s: %zu process(es) still running, the first pid %d", when, n, (int)(n ? left[0] : 0));
}

/* h_run() checks only the build tree's binaries for sanitizer reports; the
 * installed moltd is the same program. */
static void check_no_sanitizer(const h_cmd_t *r, const char *what)
{
    bool bad = strstr(r->err, "Sanitizer") || strstr(r->err, "runtime error:");
    if (bad)
        fprintf(stderr, "---- %s ----\n%s\n", what, r->err);
    H_CHECK(!bad, "%s reported a sanitizer error (see stderr)", what);
}

/* Runs a command; on a non-zero exit prints its output and fails the test. */
static void run_ok(int timeout_ms, const char *what, const char *const *argv)
{
    h_cmd_t r;
    int code = h_runv(&r, timeout_ms, argv);
    if (code != 0)
        fprintf(stderr, "---- %s exited with %d ----\n%s%s\n", what, code, r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(code == 0, "%s exited with %d (output above)", what, code);
}

/* The first line of a command's stdout (malloc'd); fails the test if it fails. */
static char *run_line(const char *what, const char *const *argv)
{
    h_cmd_t r;
    int code = h_runv(&r, 20000, argv);
    if (code != 0)
        fprintf(stderr, "---- %s exited with %d ----\n%s%s\n", what, code, r.out, r.err);
    char *line = strndup(r.out, strcspn(r.out, "\n"));
    h_cmd_free(&r);
    H_CHECK(code == 0 && line, "%s exited with %d (output above)", what, code);
    return line;
}

/* The canonical form of an existing path, for comparing what pkg-config says
 * (relative to the .pc file) with where the install put things. */
static void canon(const char *path, char *out, const char *what)
{
    H_CHECK(realpath(path, out) != NULL, "%s: %s does not exist: %s", what, path, strerror(errno));
}

static char pc_found[PATH_MAX];

static int find_pc(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    const char *base = strrchr(path, '/');
    if (flag == FTW_F && base && strcmp(base + 1, "molt-plugin.pc") == 0) {
        snprintf(pc_found, sizeof(pc_found), "%s", path);
        return 1;
    }
    return 0;
}

/* Installs this build into dir/prefix; returns the directory that holds
 * molt-plugin.pc, wherever GNUInstallDirs put it. */
static void install_into(h_molt_t *h, char *prefix, size_t plen, char *pcdir, size_t pclen)
{
    snprintf(prefix, plen, "%s/prefix", h->dir);
    /* DESTDIR would send the files elsewhere. */
    run_ok(60000, "cmake --install",
           (const char *const[]){"env", "-u", "DESTDIR", MOLT_CMAKE, "--install", MOLT_BUILD_DIR, "--prefix",
                                 prefix, NULL});
    const char *files[] = {"sbin/moltd", "sbin/moltctl", "include/molt/plugin.h"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char p[PATH_MAX + 64];
        snprintf(p, sizeof(p), "%s/%s", prefix, files[i]);
        H_CHECK(h_file_exists(p), "cmake --install did not install %s", p);
    }
    pc_found[0] = '\0';
    nftw(prefix, find_pc, 16, FTW_PHYS);
    H_CHECK(pc_found[0], "cmake --install put no molt-plugin.pc under %s", prefix);
    snprintf(pcdir, pclen, "%.*s", (int)(strrchr(pc_found, '/') - pc_found), pc_found);
}

/* ---- cmake --install, an out-of-tree plugin, moltd serving it ------------------------------- */

START_TEST(test_install_build_serve)
{
    h_molt_t *h = h_new();
    char prefix[PATH_MAX], pcdir[PATH_MAX], inc[PATH_MAX + 16], want[PATH_MAX], got[PATH_MAX];
    install_into(h, prefix, sizeof(prefix), pcdir, sizeof(pcdir));

    /* What pkg-config tells an author. Run through env so that nothing of
     * the caller's pkg-config setup gets in the way. */
    char pcpath[PATH_MAX + 32];
    snprintf(pcpath, sizeof(pcpath), "PKG_CONFIG_PATH=%s", pcdir);
#define PKG(...)                                                                                             \
    (const char *const[])                                                                                    \
    {                                                                                                        \
        "env", "-u", "PKG_CONFIG_SYSROOT_DIR", "-u", "MAKEFLAGS", "-u", "MFLAGS", "-u", "MAKELEVEL", pcpath, \
            __VA_ARGS__, NULL                                                                                \
    }
    char *cflags = run_line("pkg-config --cflags molt-plugin", PKG("pkg-config", "--cflags", "molt-plugin"));
    char *version =
        run_line("pkg-config --modversion molt-plugin", PKG("pkg-config", "--modversion", "molt-plugin"));
    char *plugindir = run_line("pkg-config --variable=plugindir molt-plugin",
                               PKG("pkg-config", "--variable=plugindir", "molt-plugin"));
    char *libs = run_line("pkg-config --libs molt-plugin", PKG("pkg-config", "--libs", "molt-plugin"));
    bool version_ok = strcmp(version, MOLT_VERSION) == 0;
    bool libs_empty = libs[strspn(libs, " ")] == '\0';
    bool is_i = strncmp(cflags, "-I", 2) == 0;
    char incdir[PATH_MAX];
    snprintf(incdir, sizeof(incdir), "%.*s", (int)strcspn(cflags + (is_i ? 2 : 0), " "),
             cflags + (is_i ? 2 : 0));
    free(version);
    free(libs);
    free(cflags);
    H_CHECK(version_ok, "pkg-config --modversion molt-plugin is not %s", MOLT_VERSION);
    H_CHECK(libs_empty, "pkg-config --libs molt-plugin is not empty: plugins link against nothing of molt's");
    H_CHECK(is_i, "pkg-config --cflags molt-plugin does not start with -I");
    snprintf(inc, sizeof(inc), "%s/include", prefix);
    canon(inc, want, "the installed include dir");
    canon(incdir, got, "pkg-config's include dir");
    H_CHECK(strcmp(want, got) == 0, "pkg-config --cflags points at %s, the header is in %s", got, want);
    canon(plugindir, got, "pkg-config's plugindir");
    char hello[PATH_MAX + 16];
    snprintf(hello, sizeof(hello), "%s/hello.so", got);
    H_CHECK(h_file_exists(hello), "the example plugin hello.so is not installed in plugindir %s", got);

    /* The example project, copied out of the source tree, built and
     * installed with make against the installed SDK only. */
    char src[PATH_MAX];
    snprintf(src, sizeof(src), "%s/ping-src", h->dir);
    run_ok(20000, "cp", (const char *const[]){"cp", "-R", MOLT_SOURCE_DIR "/tests/sdk", src, NULL});
    run_ok(
        60000, "make (tests/sdk)",
        PKG("make", "-B", "-C", src, "CFLAGS=-O2 -g -Wall -Wextra -Wpedantic -Werror -Wstrict-prototypes"));
    run_ok(20000, "make install (tests/sdk)", PKG("make", "-C", src, "install"));
    char ping[PATH_MAX + 16];
    snprintf(ping, sizeof(ping), "%s/ping.so", got);
    H_CHECK(h_file_exists(ping), "make install did not put ping.so into plugindir %s", got);

    /* The installed moltd checks the new plugin. */
    char moltd[PATH_MAX + 16];
    snprintf(moltd, sizeof(moltd), "%s/sbin/moltd", prefix);
    h_cmd_t r;
    int code = h_run(&r, 20000, moltd, "--check-plugin", ping, NULL);
    check_no_sanitizer(&r, "the installed moltd --check-plugin");
    const char *needles[] = {"ping",
                             "0.1.0",
                             H_ABI_HOST,
                             "request handler: yes",
                             "request_headers",
                             "\"seen\"",
                             "response_headers",
                             "100",
                             "\"mark\"",
                             "txn_ctx_size:    4 bytes",
                             NULL};
    const char *missing = NULL;
    for (size_t i = 0; needles[i] && !missing; i++)
        if (!strstr(r.out, needles[i]))
            missing = needles[i];
    if (code != 0 || missing)
        fprintf(stderr, "moltd --check-plugin %s exited with %d:\n%s%s", ping, code, r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(code == 0, "the installed moltd --check-plugin ping.so exited with %d", code);
    H_CHECK(!missing, "moltd --check-plugin ping.so does not say '%s'", missing);

    /* A config that loads plugins from the install only: hello (installed
     * example) on "/", ping on "/ping". */
    json_object_set_new(h->cfg, "plugin_path", json_pack("[s]", plugindir));
    h_add_plugin(h, "ping", "ping.so", NULL);
    h_add_route(h, "/ping", "ping");
    h_write_config(h);
    code = h_run(&r, 20000, moltd, "-c", h->config_path, "-t", NULL);
    check_no_sanitizer(&r, "the installed moltd -t");
    if (code != 0)
        fprintf(stderr, "moltd -t exited with %d:\n%s%s", code, r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(code == 0, "the installed moltd -t with ping.so exited with %d", code);
    free(plugindir);

    h_start_ready(h);
    char u[128];
    h_resp_t resp;
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/ping", h->port);
    int rc = h_curl(h, &resp, u, NULL);
    H_CHECK(rc == 0, "curl %s exited with %d", u, rc);
    const char *seen = h_resp_header(&resp, "X-Ping-Seen");
    bool ok = resp.status == 200 && resp.body_len > 5 && strncmp(resp.body, "pong ", 5) == 0 && seen &&
              strcmp(seen, "ping") == 0;
    if (!ok)
        fprintf(stderr, "GET /ping: status %d, X-Ping-Seen %s, body '%s'\n", resp.status,
                seen ? seen : "(none)", resp.body);
    h_resp_free(&resp);
    H_CHECK(ok, "GET /ping: expected 200 \"pong N\" with X-Ping-Seen: ping (see stderr)");

    /* ping's hooks run for hello's responses too. */
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/", h->port);
    rc = h_curl(h, &resp, u, NULL);
    H_CHECK(rc == 0, "curl %s exited with %d", u, rc);
    seen = h_resp_header(&resp, "X-Ping-Seen");
    ok = resp.status == 200 && resp.body_len == strlen(H_HELLO_BODY) &&
         memcmp(resp.body, H_HELLO_BODY, resp.body_len) == 0 && seen && strcmp(seen, "ping") == 0;
    if (!ok)
        fprintf(stderr, "GET /: status %d, X-Ping-Seen %s, body '%s'\n", resp.status, seen ? seen : "(none)",
                resp.body);
    h_resp_free(&resp);
    H_CHECK(ok, "GET /: expected hello's body with X-Ping-Seen: ping (see stderr)");
#undef PKG
}
END_TEST

/* ---- cmake --install: systemd units, example config, man pages ----------------------------- */

/* s with every `from` replaced by `to`, malloc'd. */
static char *replace_all(const char *s, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), n = 0;
    for (const char *p = s; (p = strstr(p, from)); p += fl)
        n++;
    char *out = malloc(strlen(s) + n * (tl > fl ? tl - fl : 0) + 1);
    H_CHECK(out != NULL, "out of memory");
    char *o = out;
    for (const char *p = s, *hit; *p; p = hit + fl) {
        if (!(hit = strstr(p, from))) {
            strcpy(o, p);
            return out;
        }
        memcpy(o, p, (size_t)(hit - p));
        o += hit - p;
        memcpy(o, to, tl);
        o += tl;
    }
    *o = '\0';
    return out;
}

/* Replaces *s by replace_all(*s, from, to). */
static void replace_in(char **s, const char *from, const char *to)
{
    char *r = replace_all(*s, from, to);
    free(*s);
    *s = r;
}

/* The whole file, malloc'd; fails the test when it is missing or empty. */
static char *slurp(const char *path)
{
    H_CHECK(h_file_exists(path), "cmake --install did not install %s", path);
    size_t len;
    char *text = h_read_file(path, &len);
    H_CHECK(len > 0, "%s is empty", path);
    return text;
}

/* The value of a unit's first KEY= line, malloc'd; NULL if it has none. */
static char *unit_value(const char *text, const char *key)
{
    size_t kl = strlen(key);
    for (const char *line = text; *line;) {
        size_t ll = strcspn(line, "\n");
        if (ll > kl && strncmp(line, key, kl) == 0 && line[kl] == '=')
            return strndup(line + kl + 1, ll - kl - 1);
        line += ll + (line[ll] == '\n');
    }
    return NULL;
}

/* Whether roff source `text` names `word` (an option, a command, a variable)
 * as an item: on a line of the bold macros (.B, .BR, .BI), written as roff
 * writes it ('-' as "\-"), as a whole word. */
static bool man_has_item(const char *text, const char *word)
{
    char *rw = replace_all(word, "-", "\\-");
    size_t wl = strlen(rw);
    bool found = false;
    for (const char *line = text; *line && !found;) {
        size_t ll = strcspn(line, "\n");
        if (strncmp(line, ".B ", 3) == 0 || strncmp(line, ".BR ", 4) == 0 || strncmp(line, ".BI ", 4) == 0) {
            for (const char *p = line; !found && (p = strstr(p, rw)) && p < line + ll; p++) {
                char before = p[-1], after = p[wl];
                found = (before == ' ' || before == '"') &&
                        !(isalnum((unsigned char)after) || after == '_' || after == '\\' || after == '-');
            }
        }
        line += ll + (line[ll] == '\n');
    }
    free(rw);
    return found;
}

/*
 * The text of item `word` in roff source `text` (from its ".B WORD" line to
 * the next .TP, .SH, .PP or .IP) as a reader sees it, malloc'd (NULL if
 * there is no such item): macro names dropped (the alternating-font ones
 * join their arguments; a quoted one keeps its blanks), "\-" as '-', font
 * escapes and "\&" removed, lines joined with one space, blanks collapsed.
 * So a phrase can be matched however the page breaks it into lines and fonts.
 */
static char *man_item_text(const char *text, const char *word)
{
    char head[128];
    snprintf(head, sizeof(head), "\n.B %s\n", word);
    const char *start = strstr(text, head);
    if (!start)
        return NULL;
    start += strlen(head);
    const char *end = start;
    while (*end) {
        if (end[0] == '.' && (strncmp(end, ".TP", 3) == 0 || strncmp(end, ".SH", 3) == 0 ||
                              strncmp(end, ".PP", 3) == 0 || strncmp(end, ".IP", 3) == 0))
            break;
        const char *nl = strchr(end, '\n');
        end = nl ? nl + 1 : end + strlen(end);
    }
    size_t cap = (size_t)(end - start) * 2 + 1, o = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (const char *line = start; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *le = nl ? nl : end, *p = line;
        bool join = false; /* .BR and the like: arguments run together */
        if (*p == '.') {
            size_t ml = strcspn(p, " \n");
            join = ml == 3 && strchr("BIR", p[1]) && strchr("BIR", p[2]);
            p += ml;
        }
        if (o)
            out[o++] = ' ';
        bool quoted = false;
        for (; p < le; p++) {
            if (p[0] == '\\' && p + 1 < le) {
                if (p[1] == '-') {
                    out[o++] = '-';
                    p++;
                } else if (p[1] == '&') {
                    p++;
                } else if (p[1] == 'f' && p + 2 < le) {
                    p += p[2] == '(' ? 4 : 2;
                } else {
                    out[o++] = p[1];
                    p++;
                }
            } else if (*p == '"') {
                quoted = !quoted;
            } else if (*p == ' ' && join && !quoted) {
                continue;
            } else {
                out[o++] = *p;
            }
        }
        line = nl ? nl + 1 : end;
    }
    out[o] = '\0';
    /* collapse blanks */
    size_t w = 0;
    for (size_t r = 0; r < o; r++)
        if (!(out[r] == ' ' && (w == 0 || out[w - 1] == ' ')))
            out[w++] = out[r];
    while (w && out[w - 1] == ' ')
        w--;
    out[w] = '\0';
    return out;
}

/* Every option (a word starting with '-') of a program's --help, and for
 * moltctl every command and variable, is an item of its man page. */
static void check_man_covers_help(const char *page, const char *text, const char *prog)
{
    h_cmd_t r;
    int code = h_run(&r, 20000, prog, "--help", NULL);
    H_CHECK(code == 0 && r.out[0], "%s --help exited with %d", prog, code);
    char *help = strdup(r.out);
    h_cmd_free(&r);
    H_CHECK(help != NULL, "out of memory");
    enum { NONE, COMMANDS, ENVIRONMENT } section = NONE;
    for (char *save = NULL, *line = strtok_r(help, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strcmp(line, "commands:") == 0 || strcmp(line, "environment:") == 0) {
            section = line[0] == 'c' ? COMMANDS : ENVIRONMENT;
            continue;
        }
        if (line[0] != ' ')
            section = NONE;
        /* The first word of a command's or variable's line. */
        if (section != NONE && line[0] == ' ' && line[1] == ' ' && line[2] != ' ') {
            char word[64];
            snprintf(word, sizeof(word), "%.*s", (int)strcspn(line + 2, " "), line + 2);
            H_CHECK(man_has_item(text, word), "%s does not describe %s of `%s --help`", page, word, prog);
        }
        char *copy = strdup(line);
        H_CHECK(copy != NULL, "out of memory");
        for (char *s2 = NULL, *w = strtok_r(copy, " \t[]|,()", &s2); w; w = strtok_r(NULL, " \t[]|,()", &s2))
            if (w[0] == '-' && w[1])
                H_CHECK(man_has_item(text, w), "%s does not describe option %s of `%s --help`", page, w,
                        prog);
        free(copy);
    }
    free(help);
}

/* The page renders: groff without a single warning, and man -l. Each check
 * is skipped, saying so, when its program is not installed (man-db, groff). */
static void check_man_renders(const char *page, const char *name)
{
    h_cmd_t r;
    bool have_groff = h_run(&r, 10000, "sh", "-c", "command -v groff", NULL) == 0;
    h_cmd_free(&r);
    if (have_groff) {
        int code = h_run(&r, 20000, "groff", "-man", "-Tutf8", "-ww", "-z", page, NULL);
        bool quiet = r.err[0] == '\0';
        if (code != 0 || !quiet)
            fprintf(stderr, "---- groff -man -Tutf8 -ww -z %s exited with %d ----\n%s\n", page, code, r.err);
        h_cmd_free(&r);
        H_CHECK(code == 0 && quiet, "groff warns about %s (see stderr)", page);
    } else {
        fprintf(stderr, "integ_sdk: groff is not installed: %s not checked for roff warnings\n", page);
    }
    bool have_man = h_run(&r, 10000, "sh", "-c", "command -v man", NULL) == 0;
    h_cmd_free(&r);
    if (!have_man) {
        fprintf(stderr, "integ_sdk: man (man-db) is not installed: man -l %s not checked\n", page);
        return;
    }
    int code = h_run(&r, 30000, "env", "MANWIDTH=80", "man", "-l", page, NULL);
    bool rendered = strstr(r.out, "NAME") && strstr(r.out, "SYNOPSIS") && strstr(r.out, "SEE ALSO") &&
                    strstr(r.out, name);
    bool warned = strstr(r.err, "warning") != NULL;
    if (code != 0 || !rendered || warned)
        fprintf(stderr, "---- man -l %s exited with %d ----\n%s%s\n", page, code, r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(code == 0 && rendered && !warned, "man -l %s does not render it cleanly (see stderr)", page);
}

/* A path of the install as the installed files write it: plain, or in a man
 * page as dist/install.cmake writes it for roff ('-' as "\-", and "\:" after
 * each '/', where a long path may break). */
static char *as_written(const char *path, bool roff)
{
    if (!roff)
        return strdup(path);
    char *w = replace_all(path, "-", "\\-");
    replace_in(&w, "/", "/\\:");
    return w;
}

/* The installed paths (prefix, plugin directory) put back to the repository's
 * (prefix /usr), as dist/install.cmake's table has them: what an installed
 * file must then equal, byte for byte, to be the repository's file with only
 * its paths changed. */
static char *as_in_repo(const char *installed, const char *prefix, const char *plugindir, bool roff)
{
    static const char *const table[][2] = {
        {"/sbin/", "/usr/sbin/"},
        {"/etc/molt/", "/etc/molt/"},
        {"/lib/systemd/system", "/usr/lib/systemd/system"},
        {"/share/doc/molt", "/usr/share/doc/molt"},
    };
    char *text = strdup(installed);
    H_CHECK(text != NULL, "out of memory");
    char *w = as_written(plugindir, roff);
    replace_in(&text, w, "/usr/lib/molt/plugins");
    free(w);
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof(path), "%s%s", prefix, table[i][0]);
        w = as_written(path, roff);
        replace_in(&text, w, table[i][1]);
        free(w);
    }
    return text;
}

/* The installed file `installed` (its text) is the repository's file `rel`
 * with only the paths changed, and names no /usr path any more. */
static void check_only_paths_changed(const char *installed, const char *rel, const char *prefix,
                                     const char *plugindir, bool roff)
{
    char src[PATH_MAX];
    snprintf(src, sizeof(src), "%s/%s", MOLT_SOURCE_DIR, rel);
    size_t len;
    char *repo = h_read_file(src, &len);
    H_CHECK(len > 0, "cannot read %s", src);
    char *back = as_in_repo(installed, prefix, plugindir, roff);
    bool same = strcmp(back, repo) == 0;
    if (!same)
        fprintf(stderr, "---- installed %s, paths put back ----\n%s\n", rel, back);
    free(back);
    free(repo);
    H_CHECK(same, "the installed %s is not %s with only its paths changed (see stderr)", rel, rel);
    H_CHECK(!strstr(installed, "/usr/"), "the installed %s still names a path in /usr", rel);
}

/*
 * What `cmake --install` adds for running molt:
 * - the example config (DOCDIR/examples/molt.json): dist/molt.json with
 *   plugin_path the installed plugins' directory; the installed moltd -t
 *   accepts it;
 * - the systemd units (lib/systemd/system): dist's, with ExecStart= and
 *   ExecReload= naming the installed moltd and moltctl and the config in the
 *   prefix's sysconfdir, nothing else changed; systemd-analyze verify
 *   accepts them as installed (it checks that the binaries exist);
 * - moltd(8) and moltctl(8) (MANDIR/man8): man/'s pages with the paths of
 *   the prefix; every section; every option, command and variable of the
 *   programs' --help described; the environment and signals of moltd, USR2
 *   as the binary upgrade; groff -ww and man -l render them without a warning.
 */
START_TEST(test_install_operations)
{
    h_molt_t *h = h_new();
    char prefix[PATH_MAX], pcdir[PATH_MAX], p[PATH_MAX + 128], want[2 * PATH_MAX + 128];
    install_into(h, prefix, sizeof(prefix), pcdir, sizeof(pcdir));
    char moltd[PATH_MAX + 16], moltctl[PATH_MAX + 16];
    snprintf(moltd, sizeof(moltd), "%s/sbin/moltd", prefix);
    snprintf(moltctl, sizeof(moltctl), "%s/sbin/moltctl", prefix);

    /* The example config. */
    snprintf(p, sizeof(p), "%s/share/doc/molt/examples/molt.json", prefix);
    H_CHECK(h_file_exists(p), "cmake --install did not install the example config %s", p);
    json_error_t jerr;
    json_t *installed = json_load_file(p, 0, &jerr);
    H_CHECK(installed != NULL, "%s: %s", p, jerr.text);
    json_t *dist = json_load_file(MOLT_SOURCE_DIR "/dist/molt.json", 0, &jerr);
    H_CHECK(dist != NULL, "dist/molt.json: %s", jerr.text);
    char plugindir[PATH_MAX], hello[PATH_MAX + 16];
    snprintf(plugindir, sizeof(plugindir), "%s",
             json_string_value(json_array_get(json_object_get(installed, "plugin_path"), 0)) ?: "");
    snprintf(hello, sizeof(hello), "%s/hello.so", plugindir);
    json_object_set_new(installed, "plugin_path", json_pack("[s]", "/usr/lib/molt/plugins"));
    bool same = json_equal(installed, dist);
    json_decref(installed);
    json_decref(dist);
    H_CHECK(strncmp(plugindir, prefix, strlen(prefix)) == 0 && plugindir[strlen(prefix)] == '/' &&
                h_file_exists(hello),
            "the example config's plugin_path is %s, not the installed plugins' directory in %s", plugindir,
            prefix);
    H_CHECK(same, "the installed example config differs from dist/molt.json in more than plugin_path");
    h_cmd_t r;
    int code = h_run(&r, 30000, moltd, "-c", p, "-t", NULL);
    check_no_sanitizer(&r, "the installed moltd -t on the example config");
    if (code != 0)
        fprintf(stderr, "moltd -c %s -t exited with %d:\n%s%s", p, code, r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(code == 0, "the installed moltd -t on the installed example config exited with %d", code);

    /* The systemd units. */
    const char *units[] = {"molt.service", "molt-notify-reload.service", "molt.socket"};
    char unit_paths[3][PATH_MAX + 64];
    for (size_t i = 0; i < 3; i++) {
        snprintf(unit_paths[i], sizeof(unit_paths[i]), "%s/lib/systemd/system/%s", prefix, units[i]);
        char *text = slurp(unit_paths[i]);
        snprintf(p, sizeof(p), "dist/%s", units[i]);
        check_only_paths_changed(text, p, prefix, plugindir, false);
        if (strstr(units[i], ".service")) {
            char *start = unit_value(text, "ExecStart");
            snprintf(want, sizeof(want), "%s -c %s/etc/molt/molt.json", moltd, prefix);
            bool ok = start && strcmp(start, want) == 0;
            H_CHECK(ok, "%s: ExecStart=%s, expected ExecStart=%s", units[i], start ?: "(none)", want);
            free(start);
        }
        if (strcmp(units[i], "molt.service") == 0) {
            char *reload = unit_value(text, "ExecReload");
            snprintf(want, sizeof(want), "%s -s /run/molt/control.sock reload", moltctl);
            bool ok = reload && strcmp(reload, want) == 0;
            H_CHECK(ok, "%s: ExecReload=%s, expected ExecReload=%s", units[i], reload ?: "(none)", want);
            free(reload);
        }
        free(text);
    }
    /* molt-notify-reload.service is left out: systemd 252 (Debian 12) does
     * not know its type (test_systemd.c deals with that). */
    code = h_run(&r, 60000, "systemd-analyze", "verify", "--man=no", unit_paths[0], unit_paths[2], NULL);
    bool quiet = r.err[0] == '\0';
    if (code != 0 || !quiet)
        fprintf(stderr, "---- systemd-analyze verify exited with %d ----\n%s%s\n", code, r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(code == 0 && quiet, "systemd-analyze verify complains about the installed units (see stderr)");

    /* The man pages. */
    static const struct {
        const char *name;
        const char *sections[10];
        const char *items[12];
    } pages[] = {
        {"moltd",
         {"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "\"EXIT STATUS\"", "ENVIRONMENT", "FILES",
          "\"SEE ALSO\"", NULL},
         {"SIGHUP", "SIGTERM", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "NOTIFY_SOCKET", "WATCHDOG_USEC",
          "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "JOURNAL_STREAM"}},
        {"moltctl",
         {"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "\"EXIT STATUS\"", "ENVIRONMENT", "FILES",
          "\"SEE ALSO\"", NULL},
         {"MOLT_CTL_RELOAD_TIMEOUT_MS", NULL}},
    };
    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        char rel[64];
        snprintf(p, sizeof(p), "%s/share/man/man8/%s.8", prefix, pages[i].name);
        snprintf(rel, sizeof(rel), "man/%s.8", pages[i].name);
        char *text = slurp(p);
        check_only_paths_changed(text, rel, prefix, plugindir, true);
        for (size_t k = 0; pages[i].sections[k]; k++) {
            snprintf(want, sizeof(want), "\n.SH %s\n", pages[i].sections[k]);
            H_CHECK(strstr(text, want), "%s has no section %s", rel, pages[i].sections[k]);
        }
        for (size_t k = 0; k < sizeof(pages[i].items) / sizeof(pages[i].items[0]) && pages[i].items[k]; k++)
            H_CHECK(man_has_item(text, pages[i].items[k]), "%s does not describe %s", rel, pages[i].items[k]);
        check_man_covers_help(rel, text, strcmp(pages[i].name, "moltd") ? moltctl : moltd);
        char *etc = NULL;
        if (strcmp(pages[i].name, "moltd") == 0) {
            /* The paths are the prefix's. */
            snprintf(want, sizeof(want), "%s/etc/molt/molt.json", prefix);
            etc = as_written(want, true);
            H_CHECK(strstr(text, etc), "%s (installed) does not name the config %s", rel, want);
            /* USR2 is described as the binary upgrade. */
            char *usr2 = man_item_text(text, "SIGUSR2");
            bool said = usr2 && strstr(usr2, "re-executes the moltd binary");
            if (!said)
                fprintf(stderr, "%s, SIGUSR2 (as text): %s\n", rel, usr2 ? usr2 : "(no .B SIGUSR2 item)");
            free(usr2);
            H_CHECK(said, "%s does not say under SIGUSR2 that it re-executes the moltd binary (above)", rel);
        }
        free(etc);
        free(text);
        check_man_renders(p, pages[i].name);
    }
}
END_TEST

/* ---- moltd --check-plugin ------------------------------------------------------------------ */

static void check_output_has(const h_cmd_t *r, const char *const *needles, const char *what)
{
    for (size_t i = 0; needles[i]; i++) {
        if (!strstr(r->out, needles[i]) && !strstr(r->err, needles[i])) {
            fprintf(stderr, "---- %s exited with %d ----\n%s%s\n", what, r->code, r->out, r->err);
            H_FAIL("%s does not say '%s' (output above)", what, needles[i]);
        }
    }
}

START_TEST(test_check_plugin_hello)
{
    h_cmd_t r;
    int code = h_run(&r, 20000, H_MOLTD, "--check-plugin", MOLT_PLUGIN_DIR "/hello.so", NULL);
    check_output_has(&r,
                     (const char *const[]){"hello", "1.0.0", H_ABI_HOST, "request handler: yes",
                                           "hooks:", "none", "init:", "not called", NULL},
                     "moltd --check-plugin hello.so");
    bool quiet = r.err[0] == '\0';
    if (code != 0 || !quiet)
        fprintf(stderr, "moltd --check-plugin hello.so exited with %d:\n%s%s", code, r.out, r.err);
    h_cmd_free(&r);
    H_CHECK(code == 0, "moltd --check-plugin hello.so exited with %d, expected 0", code);
    H_CHECK(quiet, "moltd --check-plugin hello.so wrote to stderr");

    /* A bare file name is the file in the current directory, not a search of
     * the library path. */
    code = h_run(&r, 20000, "sh", "-c", "cd \"$1\" && exec \"$2\" --check-plugin hello.so", "sh",
                 MOLT_PLUGIN_DIR, H_MOLTD, NULL);
    check_no_sanitizer(&r, "moltd --check-plugin hello.so (in its directory)");
    check_output_has(&r, (const char *const[]){"file:", MOLT_PLUGIN_DIR "/hello.so", NULL},
                     "moltd --check-plugin hello.so (in its directory)");
    h_cmd_free(&r);
    H_CHECK(code == 0, "moltd --check-plugin hello.so in its directory exited with %d", code);

    /* --check-plugin is a mode of its own. */
    code = h_run(&r, 20000, H_MOLTD, "--check-plugin", MOLT_PLUGIN_DIR "/hello.so", "-c", "/dev/null", NULL);
    bool usage = strstr(r.err, "usage:") != NULL;
    h_cmd_free(&r);
    H_CHECK(code == 1 && usage, "moltd --check-plugin with -c exited with %d%s", code,
            usage ? "" : " without a usage message");
    check_no_group_procs("after moltd --check-plugin");
}
END_TEST

typedef struct bad_plugin {
    const char *file;       /* in MOLT_TEST_PLUGIN_DIR, or written to the test's dir */
    const char *source;     /* C source compiled into `file`; NULL: not compiled */
    const char *text;       /* or: written as is (not a shared object) */
    const char *needles[5]; /* NULL-terminated */
} bad_plugin_t;

#define ENTRY_DECL                                                                                           \
    "#include \"molt/plugin.h\"\n"                                                                           \
    "static int h(molt_txn_t *t, void *d) { (void)t; (void)d; return MOLT_OK; }\n"

static const bad_plugin_t bad_plugins[] = {
    {"tp_wrong_abi.so", NULL, NULL, {"refused", "ABI 2.0", H_ABI_HOST}},
    {"tp_no_entry.so", NULL, NULL, {"refused", "not a molt plugin", "molt_plugin_entry"}},
    {"missing.so", NULL, NULL, {"missing.so", "No such file or directory"}},
    {"garbage.so",
     NULL,
     "This is a text file that only pretends to be a shared object.\n"
     "dlopen() must refuse it and moltd must say so.\n",
     {"garbage.so", "dlopen() failed", "invalid ELF header"}},
    {"bad_version.so",
     ENTRY_DECL "MOLT_PLUGIN(.name = \"bad_version\", .version = \"1.0\", .handle = h)\n",
     NULL,
     {"refused", "bad_version", "\"1.0\"", "not semver"}},
    {"bad_hook.so",
     ENTRY_DECL
     "static const molt_hook_t hk[] = {{.id = MOLT_HOOK_TXN_END, .priority = 5000, .fn.txn = h}};\n"
     "MOLT_PLUGIN(.name = \"bad_hook\", .version = \"1.0.0\", .hooks = hk, .nhooks = 1)\n",
     NULL,
     {"refused", "txn_end", "5000", "-1000..1000"}},
    {"crash_ctor.so",
     "__attribute__((constructor)) static void boom(void) { int *volatile p = 0; *p = 1; }\n",
     NULL,
     {"the plugin crashed while loading", "signal 11", "constructors"}},
    {"crash_entry.so",
     "__attribute__((visibility(\"default\"))) const void *molt_plugin_entry(const void *host);\n"
     "const void *molt_plugin_entry(const void *host) { (void)host; int *volatile p = 0; *p = 1; return p; "
     "}\n",
     NULL,
     {"the plugin crashed while loading", "signal 11", "molt_plugin_entry()"}},
    {"exit_ctor.so",
     "#include <unistd.h>\n__attribute__((constructor)) static void bye(void) { _exit(0); }\n",
     NULL,
     {"ended the process while loading", "exit code 0", "constructors"}},
    {"hang_ctor.so",
     "#include <unistd.h>\n__attribute__((constructor)) static void hang(void) { for (;;) pause(); }\n",
     NULL,
     {"did not finish loading within 5 s", "constructors", "killed"}},
};

START_TEST(test_check_plugin_refused)
{
    const bad_plugin_t *b = &bad_plugins[_i];
    h_molt_t *h = h_new();
    char path[PATH_MAX + 64];
    if (!b->source && !b->text) {
        snprintf(path, sizeof(path), "%s/%s", strcmp(b->file, "missing.so") ? MOLT_TEST_PLUGIN_DIR : h->dir,
                 b->file);
    } else if (b->text) {
        snprintf(path, sizeof(path), "%s/%s", h->dir, b->file);
        h_write_file(path, b->text, strlen(b->text), 0644);
    } else {
        char c[sizeof(path) + 8];
        snprintf(path, sizeof(path), "%s/%s", h->dir, b->file);
        snprintf(c, sizeof(c), "%s.c", path);
        h_write_file(c, b->source, strlen(b->source), 0644);
        run_ok(60000, "cc",
               (const char *const[]){"cc", "-shared", "-fPIC", "-fvisibility=hidden", "-I",
                                     MOLT_SOURCE_DIR "/include", "-o", path, c, NULL});
    }
    h_cmd_t r;
    long long t0 = h_now_ms();
    int code = h_run(&r, 20000, H_MOLTD, "--check-plugin", path, NULL);
    long long took = h_now_ms() - t0;
    char what[128];
    snprintf(what, sizeof(what), "moltd --check-plugin %s", b->file);
    check_output_has(&r, b->needles, what);
    bool said_ok = strstr(r.out, "ok:") != NULL;
    h_cmd_free(&r);
    H_CHECK(code == 1, "%s exited with %d, expected 1", what, code);
    H_CHECK(!said_ok, "%s said ok", what);
    H_CHECK(took < 10000, "%s took %lld ms", what, took);
    check_no_group_procs(what);
}
END_TEST

/* ---- suite --------------------------------------------------------------------------------- */

static Suite *sdk_suite(void)
{
    Suite *s = suite_create("integ_sdk");
    TCase *tc = h_tcase("install", 180);
    tcase_add_test(tc, test_install_build_serve);
    tcase_add_test(tc, test_install_operations);
    suite_add_tcase(s, tc);
    tc = h_tcase("check_plugin", 60);
    tcase_add_test(tc, test_check_plugin_hello);
    tcase_add_loop_test(tc, test_check_plugin_refused, 0,
                        (int)(sizeof(bad_plugins) / sizeof(bad_plugins[0])));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sdk_suite());
    srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose lists every test */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
