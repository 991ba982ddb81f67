/* moltd: the molt supervisor. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "shared/exit.h"
#include "supervisor/sup.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: moltd -c FILE        run in the foreground\n"
               "       moltd -c FILE -t     check the config and the plugin files, exit 0/1\n"
               "       moltd --version\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    int test = 0, c;
    while ((c = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 't':
            test = 1;
            break;
        case 'V':
            printf("moltd %s\n", MOLT_VERSION);
            return MOLT_EXIT_OK;
        case 'h':
            usage(stdout);
            return MOLT_EXIT_OK;
        default:
            usage(stderr);
            return MOLT_EXIT_FAILURE;
        }
    }
    if (!config || optind != argc) {
        usage(stderr);
        return MOLT_EXIT_FAILURE;
    }
    return test ? sup_check(config) : sup_run(config);
}
