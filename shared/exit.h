/*
 * Exit codes are a contract between the supervisor and its workers, and
 * between moltd/moltctl and the operator's scripts (SPEC section 3).
 */
#ifndef MOLT_SHARED_EXIT_H
#define MOLT_SHARED_EXIT_H

/* moltd and workers */
#define MOLT_EXIT_OK 0
#define MOLT_EXIT_FAILURE 1 /* moltd: could not start / config invalid */
#define MOLT_EXIT_FATAL 2   /* worker: fatal, do not respawn (plugin load/init failed) */
#define MOLT_EXIT_ORPHAN 3  /* worker: the supervisor went away (EOF on channel) */

/* moltctl */
#define MOLT_CTL_EXIT_OK 0
#define MOLT_CTL_EXIT_FAILED 1      /* rolled back, rejected, or refused */
#define MOLT_CTL_EXIT_USAGE 2       /* bad command line */
#define MOLT_CTL_EXIT_UNREACHABLE 3 /* cannot reach moltd */

#endif
