/*
 * Dropping root in a freshly forked worker (worker/privs.h).
 */
#include "worker/privs.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static int cmp_gid(const void *a, const void *b)
{
    gid_t x = *(const gid_t *)a, y = *(const gid_t *)b;
    return x < y ? -1 : x > y;
}

/* The supplementary groups we have now are exactly want[] (as sets). */
static int groups_are(const gid_t *want, size_t nwant, char *err, size_t len)
{
    gid_t have[256], exp[256];
    int n = getgroups(256, have);
    if (n < 0 || nwant > 256) {
        snprintf(err, len, "getgroups() failed after setgroups(): %s", n < 0 ? strerror(errno) : "too many");
        return -1;
    }
    memcpy(exp, want, nwant * sizeof(*exp));
    qsort(have, (size_t)n, sizeof(*have), cmp_gid);
    qsort(exp, nwant, sizeof(*exp), cmp_gid);
    /* the kernel keeps duplicates as given; compare the distinct values */
    size_t a = 0, b = 0;
    while (a < (size_t)n || b < nwant) {
        if (a < (size_t)n && b < nwant && have[a] == exp[b]) {
            gid_t g = have[a];
            while (a < (size_t)n && have[a] == g)
                a++;
            while (b < nwant && exp[b] == g)
                b++;
            continue;
        }
        snprintf(err, len, "supplementary groups are not the ones set: %s gid %u",
                 a < (size_t)n && (b >= nwant || have[a] < exp[b]) ? "unexpected" : "missing",
                 (unsigned)(a < (size_t)n && (b >= nwant || have[a] < exp[b]) ? have[a] : exp[b]));
        return -1;
    }
    return 0;
}

int wrk_privs_drop(const molt_worker_ident_t *id, const char *plugin_dir, char *err, size_t len)
{
    if (!id || !id->drop)
        return 0;
    {
        const char *who = id->user;
        /* Groups first: once uid is not 0, setgroups and setgid are refused. */
        if (setgroups(id->ngroups, id->groups) < 0) {
            snprintf(err, len, "setgroups() to the %zu groups of user %s failed: %s", id->ngroups, who,
                     strerror(errno));
            return -1;
        }
        if (setresgid(id->gid, id->gid, id->gid) < 0) {
            snprintf(err, len, "setresgid(%u) for user %s failed: %s", (unsigned)id->gid, who, strerror(errno));
            return -1;
        }
        if (setresuid(id->uid, id->uid, id->uid) < 0) {
            snprintf(err, len, "setresuid(%u) for user %s failed: %s", (unsigned)id->uid, who, strerror(errno));
            return -1;
        }
        /* Trust nothing: check every id, and that root cannot come back. */
        uid_t ru, eu, su;
        gid_t rg, eg, sg;
        if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 || ru != id->uid || eu != id->uid ||
            su != id->uid || rg != id->gid || eg != id->gid || sg != id->gid || getuid() != id->uid ||
            geteuid() != id->uid || getgid() != id->gid || getegid() != id->gid) {
            snprintf(err, len, "after dropping to user %s (uid %u, gid %u) the ids are uid %u/%u/%u gid %u/%u/%u",
                     who, (unsigned)id->uid, (unsigned)id->gid, (unsigned)ru, (unsigned)eu, (unsigned)su,
                     (unsigned)rg, (unsigned)eg, (unsigned)sg);
            return -1;
        }
        if (setuid(0) == 0 || seteuid(0) == 0) {
            snprintf(err, len, "dropped to user %s (uid %u) but setuid(0) still succeeds; refusing to go on", who,
                     (unsigned)id->uid);
            return -1;
        }
        if (id->gid != 0 && (setgid(0) == 0 || setegid(0) == 0)) {
            snprintf(err, len, "dropped to user %s (gid %u) but setgid(0) still succeeds; refusing to go on", who,
                     (unsigned)id->gid);
            return -1;
        }
        if (groups_are(id->groups, id->ngroups, err, len) < 0)
            return -1;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        snprintf(err, len, "prctl(PR_SET_NO_NEW_PRIVS) failed: %s", strerror(errno));
        return -1;
    }
    if (plugin_dir && access(plugin_dir, R_OK | X_OK) < 0) {
        snprintf(err, len,
                 "cannot read the generation directory %s as user %s (uid %u, gid %u): %s (runtime_dir and "
                 "every directory above it must be searchable by the workers' user or group)",
                 plugin_dir, id->user, (unsigned)id->uid, (unsigned)id->gid, strerror(errno));
        return -1;
    }
    return 0;
}
