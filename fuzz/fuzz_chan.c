/*
 * libFuzzer target: the channel message decoder (shared/chan.h). One input is
 * one datagram as molt_chan_recv() would have read it (no descriptors).
 * Decoded messages go through every body accessor, then molt_msg_free().
 */
#include <stddef.h>
#include <stdint.h>

#include "shared/chan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const keys[] = {
    "plugins", "phase", "plugin", "reason", "requests", "conns", "accepted", "rss", "file",
    "status", "error", "graceful", "close", "path", "timeout_ms", "index", "streams", "name",
    "instance", "seq", "msg", "ok", "bytes", "",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    molt_msg_t msg;
    if (molt_chan_decode(data, size, NULL, 0, &msg) != 0)
        return 0;
    (void)molt_msg_type_name(msg.type);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        uint64_t u;
        bool b;
        char s[16];
        (void)molt_msg_get_u64(&msg, keys[i], &u);
        (void)molt_msg_get_bool(&msg, keys[i], &b);
        (void)molt_msg_get_str(&msg, keys[i], s, sizeof(s));
        (void)molt_msg_get_str(&msg, keys[i], s, 1);
        const msgpack_object *o = molt_msg_get(&msg, keys[i]);
        if (o && o->type == MSGPACK_OBJECT_ARRAY) {
            /* Nested maps, as READY's plugins[]. */
            for (uint32_t j = 0; j < o->via.array.size; j++) {
                const msgpack_object *e = &o->via.array.ptr[j];
                (void)molt_mp_map_get(e, "name");
                (void)molt_mp_get_u64(e, "size", &u);
                (void)molt_mp_get_str(e, "version", s, sizeof(s));
            }
        }
        if (o && o->type == MSGPACK_OBJECT_BIN) /* a sibling's msg */
            (void)molt_mp_check_object(o->via.bin.ptr, o->via.bin.size);
    }
    molt_msg_free(&msg);
    return 0;
}
