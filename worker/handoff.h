/*
 * The worker's side of a reload's state handoff (SPEC §6) and of `moltctl
 * state`: writing streams of saved plugin state (shared/stream.h) from an old
 * worker, reading and restoring them in a new one. Everything runs on the
 * worker's loop: a large state is written and read a socket buffer at a time
 * while the worker goes on serving the connections it still has.
 *
 *   old worker   SAVE {streams} + fds -> state_save of each selected instance,
 *                once per message -> one writer per stream -> SAVED
 *   new worker   RESTORE {streams} + fds -> one reader per stream -> when every
 *                stream ended: state_restore per entry, in from_slot order
 *                -> RESTORED
 *   any worker   DUMP {name} + fd -> the instance's state_save as a one-entry
 *                stream -> DUMPED
 *
 * Which instances a stream carries: one whose plugin declares
 * MOLT_PLUGIN_REPLICATED when the stream is marked replicated (new worker i
 * restores old worker i mod N_old's), any other stateful one when it is
 * marked partitioned (new worker i restores every old worker j with
 * j mod N_new = i). The supervisor marks the streams; the old worker's
 * plugins decide what is replicated.
 *
 * The same SAVE / RESTORE also brings a worker respawned within its
 * generation up to date ("catch-up"): a live sibling saves its replicated
 * instances for it (SAVE{catchup}: SAVED says catchup too, so that a reload
 * running meanwhile does not count it). Sibling messages that reach a worker
 * while it restores are applied after the restore, in order.
 */
#ifndef MOLT_WORKER_HANDOFF_H
#define MOLT_WORKER_HANDOFF_H

#include <stdbool.h>

#include <ev.h>

#include "shared/chan.h"
#include "worker/plugins.h"

/* Binds the module to the worker's loop, channel and plugin set; restored()
 * runs after every RESTORE has been answered (the worker then replays the
 * sibling messages it deferred meanwhile). */
void wrk_handoff_init(struct ev_loop *loop, int chan, wrk_plugins_t *plugins, unsigned slot, void (*restored)(void));

/* The messages of the header comment. Each takes the descriptors it uses
 * out of msg (sets their slots to -1). */
void wrk_handoff_on_save(molt_msg_t *msg);
void wrk_handoff_on_restore(molt_msg_t *msg);
void wrk_handoff_on_dump(molt_msg_t *msg);

/* True while a RESTORE is being read or restored. */
bool wrk_handoff_restoring(void);

/* Stops streams being written or read and closes their sockets: with all,
 * every one (the worker stops); without, only the saves for a reload's new
 * generation (resumed after a rollback: a catch-up save for a respawned
 * sibling and a state dump go on). */
void wrk_handoff_cancel(bool all);

#endif
