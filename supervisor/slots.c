#include "supervisor/slots.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "molt/plugin.h"
#include "shared/log.h"
#include "supervisor/upgrade.h"

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

/* ---- upgrade: the registry, so that an index stays the same for life ----------------------- */

unsigned sup_slots_upgrade_count(void)
{
    return 1;
}

void sup_slots_upgrade_pack(msgpack_packer *pk)
{
    molt_mp_pack_str(pk, "slots");
    msgpack_pack_array(pk, 2);
    for (int level = 0; level < 2; level++) {
        uint32_t n = 0;
        while (n < MOLT_SLOTS_MAX && names[level][n])
            n++;
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++)
            molt_mp_pack_str(pk, names[level][i]);
    }
}

bool sup_slots_upgrade_unpack(sup_up_rd_t *rd, const msgpack_object *top)
{
    const msgpack_object *o = sup_up_array(rd, top, "slots");
    if (!o)
        return false;
    if (o->via.array.size != 2) {
        sup_up_fail(rd, "slots: not two levels");
        return false;
    }
    for (int level = 0; level < 2; level++) {
        const msgpack_object *l = &o->via.array.ptr[level];
        if (l->type != MSGPACK_OBJECT_ARRAY || l->via.array.size > MOLT_SLOTS_MAX) {
            sup_up_fail(rd, "slots: level %d is not a list of at most %d names", level + 1, MOLT_SLOTS_MAX);
            return false;
        }
        for (uint32_t i = 0; i < l->via.array.size; i++) {
            const msgpack_object *v = &l->via.array.ptr[i];
            if (v->type != MSGPACK_OBJECT_STR || !v->via.str.size || v->via.str.size > 64) {
                sup_up_fail(rd, "slots: level %d, index %u: not a slot name", level + 1, i);
                return false;
            }
            free(names[level][i]);
            if (!(names[level][i] = strndup(v->via.str.ptr, v->via.str.size))) {
                sup_up_fail(rd, "slots: out of memory");
                return false;
            }
        }
    }
    return true;
}
