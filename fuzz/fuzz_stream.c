/*
 * libFuzzer target: the state stream reader (shared/stream.h). The first
 * input byte picks the chunk size (1..256) the rest is fed in, so that every
 * frame boundary is also crossed mid-frame. A complete stream is walked:
 * the header, every entry, and each payload unpacked with msgpack.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "shared/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] + 1;
    data++, size--;
    molt_stream_reader_t *r = molt_stream_reader_new();
    if (!r)
        return 0;
    int rc = 0;
    for (size_t off = 0; off < size && rc == 0; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        rc = molt_stream_reader_feed(r, data + off, n);
    }
    if (size == 0)
        rc = molt_stream_reader_feed(r, data, 0);
    if (rc == 1) {
        const molt_stream_hdr_t *h = molt_stream_reader_header(r);
        if (!h || strnlen(h->from_gen, sizeof(h->from_gen)) == sizeof(h->from_gen) ||
            strnlen(h->to_gen, sizeof(h->to_gen)) == sizeof(h->to_gen))
            abort(); /* the header's strings must be NUL-terminated */
        size_t count = molt_stream_reader_count(r);
        if (count != h->count)
            abort();
        for (size_t i = 0; i < count; i++) {
            const molt_stream_entry_t *e = molt_stream_reader_entry(r, i);
            if (!e || strnlen(e->name, sizeof(e->name)) == sizeof(e->name) ||
                strnlen(e->plugin, sizeof(e->plugin)) == sizeof(e->plugin) ||
                strnlen(e->version, sizeof(e->version)) == sizeof(e->version))
                abort();
            msgpack_unpacked up;
            msgpack_unpacked_init(&up);
            size_t pos = 0;
            msgpack_unpack_return ur = msgpack_unpack_next(&up, e->data, e->size, &pos);
            /* The reader promises exactly one msgpack object per payload (msgpack-c may still
             * refuse one nested deeper than its stack: not the reader's business). */
            if (ur == MSGPACK_UNPACK_SUCCESS && pos != e->size)
                abort();
            msgpack_unpacked_destroy(&up);
        }
        /* Any further byte is an error. */
        if (molt_stream_reader_feed(r, "x", 1) != -EBADMSG)
            abort();
    } else if (rc == -EBADMSG) {
        if (molt_stream_reader_error(r)[0] == '\0')
            abort(); /* a refusal says why */
    }
    (void)molt_stream_reader_bytes(r);
    molt_stream_reader_free(r);
    return 0;
}
