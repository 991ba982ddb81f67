/*
 * The registry of named slots (molt_slot_reserve()): one name -> index map
 * per level, kept by the supervisor for its whole life, so that the index of
 * a name is the same in every worker and every generation.
 */
#ifndef MOLT_SUPERVISOR_SLOTS_H
#define MOLT_SUPERVISOR_SLOTS_H

#include <stddef.h>

#include "shared/chan.h"

/* The index of `name` at `level` (1 txn, 2 session), registering it the first
 * time; -1 with a reason in err when the level is unknown, the name invalid,
 * or the level full. */
int sup_slot_index(int level, const char *name, char *err, size_t len);

/* Answers a SLOT_RESERVE message on `chan` with SLOT_INDEX. */
void sup_slot_answer(int chan, const molt_msg_t *req);

void sup_slots_free(void);

#endif
