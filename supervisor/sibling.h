/*
 * Sibling messages, the supervisor's side (supervisor/sibling.c): routing a
 * worker's message to the other workers of its generation and counting
 * their acks (include/molt/plugin.h: "sibling messages").
 */
#ifndef MOLT_SUPERVISOR_SIBLING_H
#define MOLT_SUPERVISOR_SIBLING_H

#include "shared/chan.h"
#include "supervisor/sup.h"

/* A message whose targets have not all answered by then has failed. */
#define SUP_SIBLING_DEADLINE_MS 5000
/* Messages in flight at once, over all workers; beyond, a message fails at once. */
#define SUP_SIBLING_MAX_INFLIGHT 4096

/* SIBLING_SEND from worker p: forward, start counting. */
void sup_sib_on_send(sup_proc_t *p, const molt_msg_t *msg);
/* SIBLING_ACK from worker p. */
void sup_sib_on_ack(sup_proc_t *p, const molt_msg_t *msg);
/* Worker p's process ended (p->last_exit says how): its messages are
 * forgotten, and those waiting for it fail. */
void sup_sib_on_proc_gone(const sup_proc_t *p);
/* moltd stops. */
void sup_sib_free_all(void);

#endif
