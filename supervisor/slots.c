#include "supervisor/slots.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "molt/plugin.h"
#include "shared/log.h"

static char *names[2][MOLT_SLOTS_MAX];

int sup_slot_index(int level, const char *name, char *err, size_t len)
{
    if (level != MOLT_SLOT_TXN && level != MOLT_SLOT_SESSION) {
        snprintf(err, len, "unknown slot level %d", level);
        return -1;
    }
    size_t n = strlen(name);
    if (n == 0 || n > 64) {
        snprintf(err, len, "a slot name has 1 to 64 characters");
        return -1;
    }
    char **tab = names[level - 1];
    for (int i = 0; i < MOLT_SLOTS_MAX; i++) {
        if (!tab[i]) {
            tab[i] = strdup(name);
            if (!tab[i]) {
                snprintf(err, len, "out of memory");
                return -1;
            }
            molt_info("%s slot \"%s\" is index %d", level == MOLT_SLOT_TXN ? "transaction" : "session", name, i);
            return i;
        }
        if (strcmp(tab[i], name) == 0)
            return i;
    }
    snprintf(err, len, "all %d %s slots are reserved", MOLT_SLOTS_MAX,
             level == MOLT_SLOT_TXN ? "transaction" : "session");
    return -1;
}

void sup_slot_answer(int chan, const molt_msg_t *req)
{
    uint64_t level = 0;
    char name[128] = "", err[128] = "";
    molt_msg_get_u64(req, "level", &level);
    molt_msg_get_str(req, "name", name, sizeof(name));
    int idx = sup_slot_index((int)level, name, err, sizeof(err));
    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 1);
    if (idx >= 0)
        molt_mp_pack_kv_u64(&body.pk, "index", (uint64_t)idx);
    else
        molt_mp_pack_kv_str(&body.pk, "error", err);
    int rc = molt_chan_send(chan, MOLT_MSG_SLOT_INDEX, &body.sb, NULL, 0);
    if (rc < 0)
        molt_warn("answering a slot reservation failed: %s", strerror(-rc));
    molt_body_free(&body);
}

void sup_slots_free(void)
{
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < MOLT_SLOTS_MAX; i++) {
            free(names[l][i]);
            names[l][i] = NULL;
        }
}
