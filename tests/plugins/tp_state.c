/*
 * tp_state: a stateful test plugin for the state handoff theme
 * (tests/integration/test_state.c). Its state is one text value plus a
 * history of where it came from; its config makes a handoff fail on purpose.
 *
 *   GET  /state      200 "value=V restores=N pid=P\n" (N: restores since init)
 *   PUT  /state      body = the new value (this worker only)
 *
 * Config (all optional):
 *   "value": text            the value before any restore ("")
 *   "pad": N                 state_save adds N bytes of padding (a large state)
 *   "fail_save": true        state_save returns an error
 *   "two_objects": true      state_save packs two objects instead of one
 *   "fail_restore": true     state_restore refuses with "refused on purpose"
 *   "corrupt": true          state_save also writes garbage into every
 *                            AF_UNIX stream socket of the process that is not
 *                            listening: the handoff stream it is about to be
 *                            written to arrives corrupted (a hostile plugin)
 *   "corrupt_if": path       the same, but only while that file exists (the
 *                            chaos run, tests/chaos/, corrupts one reload)
 *   "hold_ms": N             state_save blocks N ms (a slow save: the handoff
 *                            waits on it)
 *
 * State (msgpack): {"value": str, "pad": bin}. Built twice:
 * tp_state (state_version 1) and tp_state_v2 (state_version 2, same plugin
 * name), so that a newer saved version can meet an older restorer.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <msgpack.h>

#include "molt/plugin.h"

#ifdef TP_STATE_V2
#define TP_STATE_VERSION 2
#else
#define TP_STATE_VERSION 1
#endif

typedef struct tp {
    char value[256];
    char init_value[256]; /* "value" from the config: what state_reset goes back to */
    unsigned restores;
    size_t pad;
    bool fail_save, two_objects, fail_restore, corrupt;
    char corrupt_if[256];
    unsigned hold_ms;
} tp_t;

static int tp_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *cfg = json_loads(config_json, 0, &jerr);
    tp_t *tp = calloc(1, sizeof(*tp));
    if (!cfg || !tp) {
        snprintf(err, errlen, "bad config: %s", cfg ? "out of memory" : jerr.text);
        json_decref(cfg);
        free(tp);
        return MOLT_ERROR;
    }
    const char *v = json_string_value(json_object_get(cfg, "value"));
    snprintf(tp->value, sizeof(tp->value), "%s", v ? v : "");
    snprintf(tp->init_value, sizeof(tp->init_value), "%s", tp->value);
    tp->pad = (size_t)json_integer_value(json_object_get(cfg, "pad"));
    tp->fail_save = json_is_true(json_object_get(cfg, "fail_save"));
    tp->two_objects = json_is_true(json_object_get(cfg, "two_objects"));
    tp->fail_restore = json_is_true(json_object_get(cfg, "fail_restore"));
    tp->corrupt = json_is_true(json_object_get(cfg, "corrupt"));
    tp->hold_ms = (unsigned)json_integer_value(json_object_get(cfg, "hold_ms"));
    const char *cif = json_string_value(json_object_get(cfg, "corrupt_if"));
    snprintf(tp->corrupt_if, sizeof(tp->corrupt_if), "%s", cif ? cif : "");
    json_decref(cfg);
    molt_instance_set_data(inst, tp);
    return MOLT_OK;
}

static void tp_fini(molt_instance_t *inst)
{
    free(molt_instance_data(inst));
}

static int tp_handle(molt_txn_t *txn, void *data)
{
    tp_t *tp = data;
    if (strcmp(molt_req_method(txn), "PUT") == 0) {
        size_t len;
        const char *body = molt_req_body(txn, &len);
        if (len >= sizeof(tp->value))
            len = sizeof(tp->value) - 1;
        memcpy(tp->value, body, len);
        tp->value[len] = '\0';
        molt_resp_set_status(txn, 204);
        return MOLT_OK;
    }
    char out[700];
    int n = snprintf(out, sizeof(out), "value=%s restores=%u pid=%d\n", tp->value, tp->restores, (int)getpid());
    molt_resp_add_header(txn, "Content-Type", "text/plain");
    return molt_resp_write(txn, out, (size_t)n);
}

/* Writes garbage into every connected AF_UNIX stream socket: the handoff
 * stream among them (the channel is a SEQPACKET socket, listeners listen). */
static void corrupt_streams(void)
{
    for (int fd = 3; fd < 1024; fd++) {
        int type = 0, domain = 0, acc = 0;
        socklen_t l = sizeof(int);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0 || type != SOCK_STREAM)
            continue;
        l = sizeof(int);
        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l) < 0 || domain != AF_UNIX)
            continue;
        l = sizeof(int);
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) < 0 || acc)
            continue;
        static const char junk[] = "\x00\x00\x00\x09garbage!!";
        ssize_t r = send(fd, junk, sizeof(junk) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)r; /* hostile and careless on purpose */
    }
}

static int tp_save(molt_instance_t *inst, msgpack_packer *pk)
{
    tp_t *tp = molt_instance_data(inst);
    if (tp->fail_save)
        return MOLT_ERROR;
    if (tp->hold_ms) {
        struct timespec ts = {tp->hold_ms / 1000, (long)(tp->hold_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0)
            ;
    }
    if (tp->corrupt || (tp->corrupt_if[0] && access(tp->corrupt_if, F_OK) == 0))
        corrupt_streams();
    msgpack_pack_map(pk, 2);
    msgpack_pack_str_with_body(pk, "value", 5);
    msgpack_pack_str_with_body(pk, tp->value, strlen(tp->value));
    msgpack_pack_str_with_body(pk, "pad", 3);
    char *pad = calloc(1, tp->pad ? tp->pad : 1);
    msgpack_pack_bin_with_body(pk, pad, pad ? tp->pad : 0);
    free(pad);
    if (tp->two_objects)
        msgpack_pack_nil(pk);
    return MOLT_OK;
}

static int tp_restore(molt_instance_t *inst, const msgpack_object *state, uint32_t version, char *err,
                      size_t errlen)
{
    tp_t *tp = molt_instance_data(inst);
    (void)version;
    if (tp->fail_restore) {
        snprintf(err, errlen, "refused on purpose");
        return MOLT_ERROR;
    }
    if (state->type != MSGPACK_OBJECT_MAP) {
        snprintf(err, errlen, "state is not a map");
        return MOLT_ERROR;
    }
    for (uint32_t i = 0; i < state->via.map.size; i++) {
        const msgpack_object_kv *kv = &state->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_STR)
            continue;
        if (kv->key.via.str.size == 5 && !memcmp(kv->key.via.str.ptr, "value", 5))
            snprintf(tp->value, sizeof(tp->value), "%.*s", (int)kv->val.via.str.size, kv->val.via.str.ptr);
    }
    tp->restores++;
    return MOLT_OK;
}

/* A rollback hands back a served generation's value: back to the config's, then restored. */
static void tp_reset(molt_instance_t *inst)
{
    tp_t *tp = molt_instance_data(inst);
    snprintf(tp->value, sizeof(tp->value), "%s", tp->init_value);
}

#ifdef TP_STATE_V2
MOLT_PLUGIN(.name = "tp_state", .version = "2.0.0", .init = tp_init, .fini = tp_fini, .handle = tp_handle,
            .state_version = TP_STATE_VERSION, .state_save = tp_save, .state_restore = tp_restore,
            .state_reset = tp_reset)
#else
MOLT_PLUGIN(.name = "tp_state", .version = "1.0.0", .init = tp_init, .fini = tp_fini, .handle = tp_handle,
            .state_version = TP_STATE_VERSION, .state_save = tp_save, .state_restore = tp_restore,
            .state_reset = tp_reset)
#endif
