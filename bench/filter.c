/*
 * bench/filter.c: a filter plugin that does nothing, on every transaction
 * hook, for measuring what the hook machinery costs per callback
 * (bench/filters.sh). Built out of tree against the public header only.
 */
#include <molt/plugin.h>

static int pass(molt_txn_t *txn, void *data)
{
    (void)txn, (void)data;
    return MOLT_CONTINUE;
}

static const molt_hook_t hooks[] = {
    {.id = MOLT_HOOK_TXN_START, .fn.txn = pass},
    {.id = MOLT_HOOK_REQUEST_HEADERS, .fn.txn = pass},
    {.id = MOLT_HOOK_RESPONSE_HEADERS, .fn.txn = pass},
    {.id = MOLT_HOOK_TXN_END, .fn.txn = pass},
};

MOLT_PLUGIN(.name = "filter", .version = "1.0.0", .hooks = hooks, .nhooks = 4)
