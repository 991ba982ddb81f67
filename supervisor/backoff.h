/*
 * Respawn backoff for one process-table slot: a worker that dies is replaced
 * after 100 ms, doubling on each further death up to 10 s; a worker that
 * lived a minute resets the count. Five deaths in a row without such a
 * minute of health is a crash loop, shown in status and logs.
 */
#ifndef MOLT_SUPERVISOR_BACKOFF_H
#define MOLT_SUPERVISOR_BACKOFF_H

#include <stdbool.h>
#include <stdint.h>

#define SUP_BACKOFF_MIN_MS 100u
#define SUP_BACKOFF_MAX_MS 10000u
#define SUP_BACKOFF_HEALTHY_MS 60000u
#define SUP_BACKOFF_CRASHLOOP 5u

typedef struct sup_backoff {
    uint32_t failures; /* deaths since the last minute of health */
    uint32_t delay_ms; /* delay chosen for the pending respawn */
} sup_backoff_t;

/* A worker of this slot that started at started_ms died at now_ms:
 * records it and returns the delay before the respawn. */
uint32_t sup_backoff_on_death(sup_backoff_t *b, uint64_t started_ms, uint64_t now_ms);

/* A worker that has been up for `up_ms` is healthy once up_ms reaches a minute:
 * resets the count. Returns true if it reset something. */
bool sup_backoff_on_alive(sup_backoff_t *b, uint64_t up_ms);

bool sup_backoff_crashloop(const sup_backoff_t *b);

#endif
