/*
 * Sibling messages, the worker's side (include/molt/plugin.h: "sibling
 * messages"): what an instance sent and where each message stands, the
 * transactions waiting for one, and the messages siblings send here.
 *
 *   sibling_send -> SIBLING_SEND to the supervisor, a record per message
 *   SIBLING from the supervisor -> the instance's sibling_recv -> SIBLING_ACK
 *   SIBLING_STATUS from the supervisor -> the record (targets, acks); when
 *     final, every wait on it ends (done callback), as does a wait's timeout
 */
#ifndef MOLT_WORKER_SIBLING_H
#define MOLT_WORKER_SIBLING_H

#include <stdint.h>

#include "molt/plugin.h"
#include "shared/chan.h"

struct ev_loop;
struct molt_instance;
struct molt_txn;

/* How many completed messages a worker remembers for a late sibling_wait. */
#define WRK_SIBLING_KEEP_DONE 256

/* Before serving: the loop, the channel to the supervisor, this worker's
 * slot and how many workers its generation has. */
void wrk_sibling_init(struct ev_loop *loop, int chan, unsigned slot, unsigned nworkers);
/* At stop, after every connection is gone: forgets the records (and any wait left). */
void wrk_sibling_fini(void);

/* Channel messages from the supervisor. */
void wrk_sibling_on_msg(const molt_msg_t *msg);    /* SIBLING: apply, then ack */
void wrk_sibling_on_status(const molt_msg_t *msg); /* SIBLING_STATUS */

/* The transaction is aborted or finished: its waits end without their done
 * callback. `why` NULL: silently (abort); else logged as a plugin mistake. */
void wrk_sibling_cancel_txn(struct molt_txn *txn, const char *why);

/* Host API. */
int wrk_sibling_send(struct molt_instance *inst, const void *msg, size_t len, uint64_t *seq);
int wrk_sibling_wait(struct molt_instance *inst, struct molt_txn *txn, uint64_t seq, uint32_t timeout_ms,
                     void (*done)(molt_txn_t *txn, int rc, const char *error, void *arg), void *arg);

#endif
