/* moltd: the molt supervisor. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shared/entry.h"
#include "shared/exit.h"
#include "shared/util.h"
#include "supervisor/sup.h"
#include "supervisor/upgrade.h"

/* How long --check-plugin lets a file's constructors and entry point run. */
#define CHECK_PLUGIN_TIMEOUT_MS 5000

static void usage(FILE *f)
{
    fprintf(f, "usage: moltd -c FILE                  run in the foreground\n"
               "       moltd -c FILE -t               check the config and the plugin files, exit 0/1\n"
               "       moltd --check-plugin FILE.so   check one plugin file (init is not called), exit 0/1\n"
               "       moltd --version\n");
}

/*
 * moltd --check-plugin: loads the file in a throwaway child
 * (wrk_check_plugin(), worker/checkplugin.c) and reports how it ended. The
 * child prints the plugin's description or why it is refused; here we only
 * add what the child cannot say itself: that it crashed, hung, or was ended
 * by the plugin, and at which step (the last line it wrote to the pipe).
 */
static int check_plugin(const char *path)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) < 0) {
        fprintf(stderr, "moltd: pipe2() failed: %s\n", strerror(errno));
        return MOLT_EXIT_FAILURE;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "moltd: fork() failed: %s\n", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return MOLT_EXIT_FAILURE;
    }
    if (pid == 0) {
        close(pfd[0]);
        wrk_check_plugin(path, pfd[1]);
    }
    close(pfd[1]);

    /* Polls rather than reading the pipe to EOF: a plugin that forks could
     * keep the pipe open after the child has ended. */
    int status = 0;
    bool timed_out = false;
    uint64_t deadline = molt_now_ms() + CHECK_PLUGIN_TIMEOUT_MS;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            fprintf(stderr, "moltd: waitpid() failed: %s\n", strerror(errno));
            close(pfd[0]);
            return MOLT_EXIT_FAILURE;
        }
        if (molt_now_ms() >= deadline) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            timed_out = true;
            break;
        }
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }

    /* The last step the child announced. */
    char buf[4096];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(buf) - 1 && (n = read(pfd[0], buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)n;
    close(pfd[0]);
    buf[len] = '\0';
    if (len && buf[len - 1] == '\n')
        buf[--len] = '\0';
    const char *last = strrchr(buf, '\n');
    const char *step = last ? last + 1 : buf;
    bool done = strcmp(step, "done") == 0;

    if (timed_out) {
        fprintf(stderr, "moltd: %s: the plugin did not finish loading within %d s%s%s; killed it\n", path,
                CHECK_PLUGIN_TIMEOUT_MS / 1000, step[0] ? ": stuck " : "", step);
        return MOLT_EXIT_FAILURE;
    }
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "moltd: %s: the plugin crashed while loading: signal %d (%s)%s%s\n", path,
                WTERMSIG(status), strsignal(WTERMSIG(status)), step[0] ? " " : "", step);
        return MOLT_EXIT_FAILURE;
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : MOLT_EXIT_FAILURE;
    if (done && (code == MOLT_EXIT_OK || code == MOLT_EXIT_FAILURE))
        return code; /* the child said everything */
    fprintf(stderr, "moltd: %s: the plugin ended the process while loading (exit code %d)%s%s\n", path, code,
            step[0] ? " " : "", step);
    return MOLT_EXIT_FAILURE;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"check-plugin", required_argument, NULL, 'P'},
        {"version", no_argument, NULL, 'V'},
        /* a running moltd's upgrade (supervisor/upgrade.h), not for people */
        {"upgrade-check", required_argument, NULL, 'K'},
        {"upgrade-from", required_argument, NULL, 'U'},
        {"upgrade-failed", required_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *plugin = NULL, *failed = NULL;
    int test = 0, c, upgrade_check = -1, upgrade_from = -1;
    while ((c = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 't':
            test = 1;
            break;
        case 'P':
            plugin = optarg;
            break;
        case 'V':
            printf("moltd %s\n", sup_version);
            return MOLT_EXIT_OK;
        case 'K':
        case 'U': {
            char *end = NULL;
            long fd = strtol(optarg, &end, 10);
            if (!*optarg || *end || fd < 0 || fd > INT_MAX) {
                fprintf(stderr, "moltd: --%s: not a descriptor: %s\n", c == 'K' ? "upgrade-check" : "upgrade-from",
                        optarg);
                return MOLT_EXIT_FAILURE;
            }
            *(c == 'K' ? &upgrade_check : &upgrade_from) = (int)fd;
            break;
        }
        case 'F':
            failed = optarg;
            break;
        case 'h':
            usage(stdout);
            return MOLT_EXIT_OK;
        default:
            usage(stderr);
            return MOLT_EXIT_FAILURE;
        }
    }
    if (upgrade_check >= 0) {
        if (optind != argc || config || plugin || test || upgrade_from >= 0 || failed) {
            usage(stderr);
            return MOLT_EXIT_FAILURE;
        }
        return sup_upgrade_check_main(upgrade_check);
    }
    if (optind != argc || (plugin && (config || test)) || (!plugin && !config) ||
        ((upgrade_from >= 0 || failed) && (test || plugin)) || (failed && upgrade_from < 0)) {
        usage(stderr);
        return MOLT_EXIT_FAILURE;
    }
    if (plugin)
        return check_plugin(plugin);
    return test ? sup_check(config) : sup_run(config, upgrade_from, failed);
}
