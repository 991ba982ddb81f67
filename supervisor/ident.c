/*
 * Config user / group / control.group to ids (supervisor/ident.h).
 */
#include "supervisor/ident.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define IDENT_BUF 16384 /* getpwnam_r / getgrnam_r scratch; ERANGE doubles it */

static int lookup_user(const char *name, struct passwd *pw, char **buf, char *err, size_t len)
{
    struct passwd *res = NULL;
    size_t cap = IDENT_BUF;
    int rc;
    for (;;) {
        *buf = malloc(cap);
        if (!*buf) {
            snprintf(err, len, "user: out of memory looking up \"%s\"", name);
            return -1;
        }
        rc = getpwnam_r(name, pw, *buf, cap, &res);
        if (rc != ERANGE || cap >= 1024 * 1024)
            break;
        free(*buf);
        cap *= 2;
    }
    if (res)
        return 0;
    if (rc)
        snprintf(err, len, "user: looking up \"%s\" failed: %s", name, strerror(rc));
    else
        snprintf(err, len, "user: \"%s\": no such user", name);
    free(*buf);
    *buf = NULL;
    return -1;
}

static int lookup_group(const char *key, const char *name, gid_t *gid, char *err, size_t len)
{
    struct group gr, *res = NULL;
    size_t cap = IDENT_BUF;
    char *buf;
    int rc;
    for (;;) {
        buf = malloc(cap);
        if (!buf) {
            snprintf(err, len, "%s: out of memory looking up \"%s\"", key, name);
            return -1;
        }
        rc = getgrnam_r(name, &gr, buf, cap, &res);
        if (rc != ERANGE || cap >= 1024 * 1024)
            break;
        free(buf);
        cap *= 2;
    }
    if (res)
        *gid = gr.gr_gid;
    else if (rc)
        snprintf(err, len, "%s: looking up \"%s\" failed: %s", key, name, strerror(rc));
    else
        snprintf(err, len, "%s: \"%s\": no such group", key, name);
    free(buf);
    return res ? 0 : -1;
}

int sup_ident_group(const char *name, gid_t *gid, char *err, size_t len)
{
    return lookup_group("control.group", name, gid, err, len);
}

/* The user's groups in the group database, gid among them. */
static int user_groups(molt_worker_ident_t *id, char *err, size_t len)
{
    int n = 16;
    for (int tries = 0; tries < 8; tries++) {
        gid_t *v = realloc(id->groups, (size_t)n * sizeof(*v));
        if (!v) {
            snprintf(err, len, "user: out of memory listing the groups of \"%s\"", id->user);
            return -1;
        }
        id->groups = v;
        int want = n;
        if (getgrouplist(id->user, id->gid, v, &want) >= 0) {
            id->ngroups = (size_t)want;
            return 0;
        }
        n = want > n ? want : 2 * n; /* want: how many there are */
    }
    snprintf(err, len, "user: getgrouplist(\"%s\") keeps growing; giving up", id->user);
    return -1;
}

int sup_ident_resolve(const molt_config_t *cfg, molt_worker_ident_t *id, char *err, size_t len)
{
    struct passwd pw;
    char *pwbuf = NULL;
    int rc = -1;
    memset(id, 0, sizeof(*id));
    if (!cfg->user && !cfg->group)
        return 0;
    if (cfg->user && strlen(cfg->user) >= sizeof(id->user)) {
        snprintf(err, len, "user: \"%s\": name too long", cfg->user);
        goto out;
    }
    if (cfg->group && strlen(cfg->group) >= sizeof(id->group)) {
        snprintf(err, len, "group: \"%s\": name too long", cfg->group);
        goto out;
    }
    if (cfg->user) {
        if (lookup_user(cfg->user, &pw, &pwbuf, err, len) < 0)
            goto out;
        id->uid = pw.pw_uid;
        id->gid = pw.pw_gid;
        snprintf(id->user, sizeof(id->user), "%s", cfg->user);
    } else {
        id->uid = geteuid();
        id->gid = getegid();
    }
    if (cfg->group) {
        if (lookup_group("group", cfg->group, &id->gid, err, len) < 0)
            goto out;
        snprintf(id->group, sizeof(id->group), "%s", cfg->group);
    }
    if (geteuid() != 0) {
        /* Only root can change ids: a config may only name the ones moltd has. */
        if (cfg->user && id->uid != geteuid()) {
            snprintf(err, len,
                     "user: \"%s\" is uid %u, but moltd runs as uid %u and is not root: only a moltd started "
                     "as root can run its workers as another user (leave user null)",
                     cfg->user, (unsigned)id->uid, (unsigned)geteuid());
            goto out;
        }
        if (id->gid != getegid()) {
            snprintf(err, len,
                     "group: %s%s%s is gid %u, but moltd runs as gid %u and is not root: only a moltd started "
                     "as root can run its workers in another group (leave %s null)",
                     cfg->group ? "\"" : "the primary group of user \"", cfg->group ? cfg->group : cfg->user,
                     "\"", (unsigned)id->gid, (unsigned)getegid(), cfg->group ? "group" : "user");
            goto out;
        }
        rc = 0; /* already who the config asks for */
        goto out;
    }
    if (!cfg->user) {
        snprintf(err, len,
                 "group: \"%s\" without user: workers would keep uid 0, and root can take any group "
                 "back; set user too",
                 cfg->group);
        goto out;
    }
    if (id->uid == 0) {
        snprintf(err, len, "user: \"%s\" is uid 0: workers would keep root; leave user null for that",
                 cfg->user);
        goto out;
    }
    if (user_groups(id, err, len) < 0)
        goto out;
    id->drop = 1;
    rc = 0;
out:
    free(pwbuf);
    if (rc < 0)
        sup_ident_free(id);
    return rc;
}

void sup_ident_free(molt_worker_ident_t *id)
{
    if (!id)
        return;
    free(id->groups);
    id->groups = NULL;
    id->ngroups = 0;
    id->drop = 0;
}
