/*
 * The listening sockets. The supervisor binds them once and never closes
 * them while it runs: every worker of every generation accepts on the same
 * socket, which is what lets a reload swap generations without refusing a
 * single connection. SO_REUSEADDR only; never SO_REUSEPORT, which would give
 * each socket its own accept queue and lose the queued connections of a
 * socket whose last worker exits.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
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
        fds[i] = listen_one(&cfg->listen[i]);
        if (fds[i] < 0) {
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
