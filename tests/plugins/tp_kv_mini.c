/*
 * tp_kv_mini: a key-value table kept the same in every worker with sibling
 * messages (integration theme "sibling", tests/integration/test_sibling.c).
 *
 *   PUT /kvm/KEY[?timeout=MS]  body = value: stored here, sent to the siblings
 *                  ({op: "put", key, value}), and the transaction waits until
 *                  every sibling applied it (molt_sibling_wait, MS default
 *                  1000): 204, or 503 with the host's error as the body
 *                  ("worker 1 did not apply message 7 within 300 ms").
 *                  X-Seq: the message's sequence number.
 *   GET /kvm/KEY   200 with the value, or 404.
 *   GET /kvm/      200 "applied N from SLOTS": how many sibling messages this
 *                  worker applied and from which slots ("0,2"); X-Pid: its pid.
 *
 * Config {"fail_key": "K"}: sibling_recv refuses a message for key K (the
 * sender's PUT answers 503 naming the workers that refused).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <msgpack.h>

#include "molt/plugin.h"

#define KV_MAX 1024
#define KV_KEY 64

typedef struct kv_entry {
    char key[KV_KEY];
    char *val;
    size_t len;
} kv_entry_t;

typedef struct kv {
    kv_entry_t e[KV_MAX];
    size_t n;
    char fail_key[KV_KEY];
    unsigned long applied;
    uint64_t from; /* bit per slot heard from */
} kv_t;

static kv_entry_t *kv_find(kv_t *kv, const char *key, size_t klen, bool create)
{
    if (klen == 0 || klen >= KV_KEY)
        return NULL;
    for (size_t i = 0; i < kv->n; i++)
        if (strlen(kv->e[i].key) == klen && memcmp(kv->e[i].key, key, klen) == 0)
            return &kv->e[i];
    if (!create || kv->n == KV_MAX)
        return NULL;
    kv_entry_t *e = &kv->e[kv->n++];
    memcpy(e->key, key, klen);
    e->key[klen] = '\0';
    return e;
}

static int kv_put(kv_t *kv, const char *key, size_t klen, const char *val, size_t vlen)
{
    kv_entry_t *e = kv_find(kv, key, klen, true);
    if (!e)
        return MOLT_ERROR;
    char *copy = malloc(vlen + 1);
    if (!copy)
        return MOLT_ERROR;
    if (vlen)
        memcpy(copy, val, vlen);
    copy[vlen] = '\0';
    free(e->val);
    e->val = copy;
    e->len = vlen;
    return MOLT_OK;
}

static int kv_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    kv_t *kv = calloc(1, sizeof(*kv));
    if (!kv) {
        snprintf(err, errlen, "out of memory");
        return MOLT_ERROR;
    }
    json_t *cfg = json_loads(config_json, 0, NULL);
    const char *fk = json_string_value(json_object_get(cfg, "fail_key"));
    if (fk)
        snprintf(kv->fail_key, sizeof(kv->fail_key), "%s", fk);
    json_decref(cfg);
    molt_instance_set_data(inst, kv);
    return MOLT_OK;
}

static void kv_fini(molt_instance_t *inst)
{
    kv_t *kv = molt_instance_data(inst);
    for (size_t i = 0; kv && i < kv->n; i++)
        free(kv->e[i].val);
    free(kv);
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void put_done(molt_txn_t *txn, int rc, const char *error, void *arg)
{
    (void)arg;
    if (rc == MOLT_OK) {
        molt_resp_set_status(txn, 204);
    } else {
        molt_resp_set_status(txn, 503);
        molt_resp_write(txn, error, strlen(error));
    }
    molt_txn_resume(txn, MOLT_OK);
}

static int kv_handle(molt_txn_t *txn, void *data)
{
    kv_t *kv = data;
    size_t plen;
    const char *path = molt_req_path(txn, &plen);
    const char *method = molt_req_method(txn);
    if (plen < 5 || memcmp(path, "/kvm/", 5) != 0)
        return MOLT_ERROR;
    const char *key = path + 5;
    size_t klen = plen - 5;

    if (strcmp(method, "GET") == 0 && klen == 0) {
        char body[256], slots[200] = "";
        size_t off = 0;
        for (unsigned i = 0; i < 64; i++)
            if (kv->from & (UINT64_C(1) << i))
                off += (size_t)snprintf(slots + off, sizeof(slots) - off, "%s%u", off ? "," : "", i);
        int n = snprintf(body, sizeof(body), "applied %lu from %s", kv->applied, off ? slots : "none");
        snprintf(slots, sizeof(slots), "%d", (int)getpid());
        molt_resp_add_header(txn, "X-Pid", slots);
        molt_resp_write(txn, body, (size_t)n);
        return MOLT_OK;
    }
    if (strcmp(method, "GET") == 0) {
        kv_entry_t *e = kv_find(kv, key, klen, false);
        if (!e || !e->val) {
            molt_resp_set_status(txn, 404);
            molt_resp_write(txn, "no such key", 11);
            return MOLT_OK;
        }
        molt_resp_write(txn, e->val, e->len);
        return MOLT_OK;
    }
    if (strcmp(method, "PUT") != 0) {
        molt_resp_set_status(txn, 405);
        return MOLT_OK;
    }

    size_t vlen;
    const char *val = molt_req_body(txn, &vlen);
    if (kv_put(kv, key, klen, val ? val : "", vlen) != MOLT_OK) {
        molt_resp_set_status(txn, 400);
        molt_resp_write(txn, "bad key", 7);
        return MOLT_OK;
    }
    uint32_t timeout = 1000;
    size_t qlen;
    const char *q = molt_req_query(txn, &qlen);
    if (q && qlen > 8 && strncmp(q, "timeout=", 8) == 0)
        timeout = (uint32_t)strtoul(q + 8, NULL, 10);

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    pack_str(&pk, "op", 2);
    pack_str(&pk, "put", 3);
    pack_str(&pk, "key", 3);
    pack_str(&pk, key, klen);
    pack_str(&pk, "value", 5);
    pack_str(&pk, val ? val : "", vlen);
    uint64_t seq = 0;
    int rc = molt_sibling_send(NULL, sb.data, sb.size, &seq);
    msgpack_sbuffer_destroy(&sb);
    if (rc != MOLT_OK)
        return MOLT_ERROR;
    char v[32];
    snprintf(v, sizeof(v), "%llu", (unsigned long long)seq);
    molt_resp_add_header(txn, "X-Seq", v);
    if (molt_sibling_wait(txn, seq, timeout, put_done, NULL) != MOLT_OK)
        return MOLT_ERROR;
    return MOLT_SUSPEND;
}

/* The field `name` of a msgpack map, if it is a string. */
static bool mp_str(const msgpack_object *map, const char *name, const char **s, size_t *n)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return false;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key, *v = &map->via.map.ptr[i].val;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(name) &&
            memcmp(k->via.str.ptr, name, k->via.str.size) == 0 && v->type == MSGPACK_OBJECT_STR) {
            *s = v->via.str.ptr;
            *n = v->via.str.size;
            return true;
        }
    }
    return false;
}

static int kv_sibling_recv(molt_instance_t *inst, const msgpack_object *msg, unsigned from_slot)
{
    kv_t *kv = molt_instance_data(inst);
    const char *op, *key, *val;
    size_t oplen, klen, vlen;
    if (!mp_str(msg, "op", &op, &oplen) || oplen != 3 || memcmp(op, "put", 3) != 0 ||
        !mp_str(msg, "key", &key, &klen) || !mp_str(msg, "value", &val, &vlen))
        return MOLT_ERROR;
    if (kv->fail_key[0] && strlen(kv->fail_key) == klen && memcmp(kv->fail_key, key, klen) == 0)
        return MOLT_ERROR;
    if (kv_put(kv, key, klen, val, vlen) != MOLT_OK)
        return MOLT_ERROR;
    kv->applied++;
    if (from_slot < 64)
        kv->from |= UINT64_C(1) << from_slot;
    return MOLT_OK;
}

static void kv_txn_abort(molt_txn_t *txn, void *data)
{
    (void)txn, (void)data; /* the host cancelled the wait: nothing of ours is pending */
}

MOLT_PLUGIN(.name = "kv_mini", .version = "1.0.0", .init = kv_init, .fini = kv_fini, .handle = kv_handle,
            .txn_abort = kv_txn_abort, .sibling_recv = kv_sibling_recv);
