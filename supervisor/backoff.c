#include "supervisor/backoff.h"

uint32_t sup_backoff_on_death(sup_backoff_t *b, uint64_t started_ms, uint64_t now_ms)
{
    uint64_t up = now_ms >= started_ms ? now_ms - started_ms : 0;
    if (up >= SUP_BACKOFF_HEALTHY_MS)
        b->failures = 0;
    if (b->failures < UINT32_MAX)
        b->failures++;
    uint64_t delay = SUP_BACKOFF_MIN_MS;
    for (uint32_t i = 1; i < b->failures && delay < SUP_BACKOFF_MAX_MS; i++)
        delay *= 2;
    b->delay_ms = delay > SUP_BACKOFF_MAX_MS ? SUP_BACKOFF_MAX_MS : (uint32_t)delay;
    return b->delay_ms;
}

bool sup_backoff_on_alive(sup_backoff_t *b, uint64_t up_ms)
{
    if (up_ms < SUP_BACKOFF_HEALTHY_MS || b->failures == 0)
        return false;
    b->failures = 0;
    b->delay_ms = 0;
    return true;
}

bool sup_backoff_crashloop(const sup_backoff_t *b)
{
    return b->failures >= SUP_BACKOFF_CRASHLOOP;
}
