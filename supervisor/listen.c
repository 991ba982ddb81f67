/*
 * The listening sockets. The supervisor binds them once and never closes
 * them while it runs: every worker of every generation accepts on the same
 * socket, which is what lets a reload swap generations without refusing a
 * single connection. SO_REUSEADDR only; never SO_REUSEPORT, which would give
 * each socket its own accept queue and lose the queued connections of a
 * socket whose last worker exits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "shared/log.h"
#include "shared/util.h"
#include "supervisor/sup.h"

static int listen_one(const molt_listen_cfg_t *l)
{
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        molt_error("socket() failed for listener %s (%s): %s", l->name, l->address, strerror(errno));
        return -1;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        molt_warn("setsockopt(SO_REUSEADDR) failed for listener %s (%s): %s", l->name, l->address,
                  strerror(errno));
    if (l->addr.ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
        molt_warn("setsockopt(IPV6_V6ONLY) failed for listener %s (%s): %s", l->name, l->address,
                  strerror(errno));
    if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0) {
        molt_error("bind() to %s failed for listener %s: %s", l->address, l->name, strerror(errno));
        goto fail;
    }
    if (listen(fd, l->backlog) < 0) {
        molt_error("listen() on %s failed for listener %s: %s", l->address, l->name, strerror(errno));
        goto fail;
    }
    molt_info("listening on %s (%s, backlog %d)", l->address, l->name, l->backlog);
    return fd;
fail:
    close(fd);
    return -1;
}

int sup_listen_open(const molt_config_t *cfg, int *fds)
{
    for (size_t i = 0; i < cfg->nlisten; i++)
        fds[i] = -1;
    for (size_t i = 0; i < cfg->nlisten; i++) {
        int fd = sup_listen_activated(cfg->listen[i].name, &cfg->listen[i]);
        fds[i] = fd == -ENOENT ? listen_one(&cfg->listen[i]) : fd;
        if (fds[i] < 0) {
            fds[i] = -1;
            sup_listen_close(fds, i);
            return -1;
        }
    }
    return 0;
}

void sup_listen_close(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        molt_close(&fds[i]);
}

/* ---- socket activation (sd_listen_fds(3), without libsystemd) ---------------------------- */

#define SUP_LISTEN_FDS_START 3 /* SD_LISTEN_FDS_START */
#define SUP_ACT_MAX 64
#define SUP_ACT_NAME_MAX 256 /* FileDescriptorName= is at most 255 characters */

/* The descriptors systemd passed, and which listener took each. */
static struct {
    size_t n;
    int fd[SUP_ACT_MAX];
    char name[SUP_ACT_MAX][SUP_ACT_NAME_MAX];
    bool claimed[SUP_ACT_MAX];
} A;

int sup_listen_activation_init(void)
{
    char pid_s[32] = "", fds_s[32] = "", *names = NULL;
    const char *v;
    int rc = 0;
    if ((v = getenv("LISTEN_PID")))
        snprintf(pid_s, sizeof(pid_s), "%s", v);
    if ((v = getenv("LISTEN_FDS")))
        snprintf(fds_s, sizeof(fds_s), "%s", v);
    if ((v = getenv("LISTEN_FDNAMES")) && !(names = strdup(v))) {
        molt_error("socket activation: out of memory");
        return -1;
    }
    /* Meant for moltd alone: workers and plugins never see them. */
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    memset(&A, 0, sizeof(A));
    if (!fds_s[0])
        goto out;

    char *end = NULL;
    errno = 0;
    long pid = strtol(pid_s, &end, 10);
    if (!pid_s[0] || errno || *end || pid != (long)getpid()) {
        /* Set for another process (one that started us without clearing
         * them): the descriptors are not ours to take. */
        molt_info("socket activation: LISTEN_FDS=%s ignored: LISTEN_PID=%s is not this process (%d)", fds_s,
                  pid_s[0] ? pid_s : "(unset)", (int)getpid());
        goto out;
    }
    errno = 0;
    long n = strtol(fds_s, &end, 10);
    if (errno || *end || n < 0 || n > SUP_ACT_MAX) {
        molt_error("socket activation: LISTEN_FDS=%s is not a number of descriptors from 0 to %d", fds_s,
                   SUP_ACT_MAX);
        rc = -1;
        goto out;
    }
    A.n = (size_t)n;
    /* LISTEN_FDNAMES: one name per descriptor, colon-separated; systemd
     * names a descriptor "unknown" when its unit does not. */
    size_t nnames = 0;
    for (char *save = NULL, *tok = names ? strtok_r(names, ":", &save) : NULL; tok;
         tok = strtok_r(NULL, ":", &save), nnames++)
        if (nnames < A.n)
            snprintf(A.name[nnames], SUP_ACT_NAME_MAX, "%s", tok);
    if (names && nnames != A.n) {
        molt_error("socket activation: LISTEN_FDNAMES has %zu name%s for LISTEN_FDS=%zu descriptor%s", nnames,
                   nnames == 1 ? "" : "s", A.n, A.n == 1 ? "" : "s");
        rc = -1;
        goto out;
    }
    for (size_t i = 0; i < A.n; i++) {
        A.fd[i] = SUP_LISTEN_FDS_START + (int)i;
        if (!names)
            snprintf(A.name[i], SUP_ACT_NAME_MAX, "unknown");
        /* Nothing moltd execs inherits them (workers are forked and get
         * theirs through molt_worker_boot_t). */
        int fl = fcntl(A.fd[i], F_GETFD);
        if (fl < 0 || fcntl(A.fd[i], F_SETFD, fl | FD_CLOEXEC) < 0) {
            molt_error("socket activation: fd %d (named \"%s\"): fcntl() failed: %s", A.fd[i], A.name[i],
                       strerror(errno));
            rc = -1;
            goto out;
        }
    }
    molt_info("socket activation: %zu descriptor%s passed (LISTEN_FDNAMES=%s)", A.n, A.n == 1 ? "" : "s",
              v ? v : "(unset)");
out:
    free(names);
    if (rc < 0)
        A.n = 0;
    return rc < 0 ? -1 : (int)A.n;
}

int sup_listen_activated(const char *name, const molt_listen_cfg_t *l)
{
    size_t i;
    for (i = 0; i < A.n; i++)
        if (!A.claimed[i] && strcmp(A.name[i], name) == 0)
            break;
    if (i == A.n)
        return -ENOENT;
    A.claimed[i] = true;
    int fd = A.fd[i], type = 0, acc = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        molt_error("socket activation: fd %d named \"%s\" for listener %s is %s (getsockopt(SO_TYPE): %s)",
                   fd, A.name[i], name, errno == ENOTSOCK ? "not a socket" : "unusable", strerror(errno));
        return -EINVAL;
    }
    len = sizeof(acc);
    if (type != SOCK_STREAM) {
        molt_error(
            "socket activation: fd %d named \"%s\" for listener %s is not a stream socket (SO_TYPE %d); "
            "use ListenStream=",
            fd, A.name[i], name, type);
        return -EINVAL;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0 || !acc) {
        molt_error("socket activation: fd %d named \"%s\" for listener %s is not a listening socket; "
                   "socket units with Accept=yes are not supported",
                   fd, A.name[i], name);
        return -EINVAL;
    }
    /* Workers accept one connection per wake-up, all on the same socket:
     * the descriptor must not block (the flag is shared with systemd's copy,
     * which does not mind). */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        molt_error("socket activation: fcntl(O_NONBLOCK) failed on fd %d for listener %s: %s", fd, name,
                   strerror(errno));
        return -EINVAL;
    }
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    char bound[160] = "?";
    memset(&ss, 0, sizeof(ss));
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0)
        molt_format_address((const struct sockaddr *)&ss, sslen, bound, sizeof(bound));
    if (molt_address_equal(&ss, &l->addr))
        molt_info("listening on %s (%s, socket-activated fd %d)", l->address, name, fd);
    else
        molt_notice("listener %s: socket-activated fd %d is bound to %s, not %s as configured; serving on it",
                    name, fd, bound, l->address);
    return fd;
}

int sup_listen_activation_check(const molt_config_t *cfg)
{
    char names[MOLT_CONFIG_MAX_LISTEN * (MOLT_CONFIG_NAME_MAX + 2)] = "";
    size_t off = 0;
    for (size_t i = 0; i < cfg->nlisten && off < sizeof(names); i++)
        off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s", i ? ", " : "", cfg->listen[i].name);
    int rc = 0;
    for (size_t i = 0; i < A.n; i++) {
        /* Claimed: a listener has its name, and no earlier descriptor has
         * it too (listener names are unique: one descriptor each). */
        bool claimed = false;
        for (size_t k = 0; k < cfg->nlisten && !claimed; k++)
            claimed = strcmp(cfg->listen[k].name, A.name[i]) == 0;
        for (size_t j = 0; j < i && claimed; j++)
            claimed = strcmp(A.name[j], A.name[i]) != 0;
        if (claimed)
            continue;
        molt_error(
            "socket activation: fd %d named \"%s\" is claimed by no listener (listen[].name: %s); name it "
            "after a listener with FileDescriptorName=, or remove it from the socket unit",
            A.fd[i], A.name[i], names[0] ? names : "none");
        rc = -1;
    }
    return rc;
}
