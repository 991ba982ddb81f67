/*
 * Check suite for shared/stream.c: round trips through memory, pipes and
 * non-blocking sockets, the wire format read back by hand, and every rule a
 * reader enforces. Hostile streams are built by a small builder here, with
 * their own framing and their own XXH3 trailer, so that a mistake made the
 * same way in the writer and the reader cannot hide; each refusal test
 * breaks exactly one rule and checks the error text names it.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <msgpack.h>
#include <xxhash.h>

#include "shared/chan.h"
#include "shared/stream.h"
#include "shared/util.h"

/* --- helpers ------------------------------------------------------------- */

/* {"k": 7}: the payload of hand-built streams. */
static const uint8_t PAY[] = {0x81, 0xa1, 'k', 0x07};

static const molt_stream_hdr_t HDR = {
    .from_gen = "0b7e5a36-1c1d-4f7e-9d8f-000000000001",
    .to_gen = "0b7e5a36-1c1d-4f7e-9d8f-000000000002",
    .from_slot = 3,
    .to_slot = 4,
};

static molt_stream_entry_t entry(const char *name, const void *data, size_t size)
{
    molt_stream_entry_t e = {.state_version = 2, .data = data, .size = size};
    snprintf(e.name, sizeof(e.name), "%s", name);
    snprintf(e.plugin, sizeof(e.plugin), "plugin-%s", name);
    snprintf(e.version, sizeof(e.version), "1.%zu.0", size);
    return e;
}

/* A payload packed with msgpack-c: a map of n small pairs. */
static void pack_map_payload(msgpack_sbuffer *sb, unsigned n)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, n);
    for (unsigned i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof(key), "key%u", i);
        molt_mp_pack_kv_u64(&pk, key, i * 1000003u);
    }
}

static void nb_pair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

static void set_sndbuf(int fd, int size)
{
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)), 0);
}

/* A socket whose writer end is closed: every read of it is EOF. */
static int eof_fd(void)
{
    int sv[2];
    nb_pair(sv);
    close(sv[0]);
    return sv[1];
}

/* Appends everything readable on fd now to out; true once it saw EOF. */
static bool drain(int fd, molt_buf_t *out)
{
    for (;;) {
        ck_assert_int_eq(molt_buf_reserve(out, 65536), 0);
        ssize_t n = read(fd, out->data + out->len, 65536);
        if (n == 0)
            return true;
        if (n < 0) {
            ck_assert(errno == EAGAIN || errno == EWOULDBLOCK);
            return false;
        }
        out->len += (size_t)n;
    }
}

/* The whole finished stream of w, as bytes, through a socketpair. */
static void stream_bytes(molt_stream_writer_t *w, molt_buf_t *out)
{
    int sv[2];
    int rc;

    nb_pair(sv);
    memset(out, 0, sizeof(*out));
    while ((rc = molt_stream_writer_write(w, sv[0])) == 0)
        drain(sv[1], out);
    ck_assert_int_eq(rc, 1);
    close(sv[0]);
    ck_assert(drain(sv[1], out));
    close(sv[1]);
    ck_assert_uint_eq(out->len, molt_stream_writer_size(w));
    ck_assert_uint_eq(molt_stream_writer_written(w), molt_stream_writer_size(w));
}

/* A reader that took all of buf in one feed and saw EOF after it. */
static molt_stream_reader_t *read_bytes(const void *buf, size_t len)
{
    molt_stream_reader_t *r = molt_stream_reader_new();
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(molt_stream_reader_feed(r, buf, len), 1);
    int fd = eof_fd();
    ck_assert_int_eq(molt_stream_reader_read(r, fd), 1);
    close(fd);
    ck_assert_str_eq(molt_stream_reader_error(r), "");
    ck_assert_uint_eq(molt_stream_reader_bytes(r), len);
    return r;
}

static void check_header(const molt_stream_reader_t *r, uint32_t count)
{
    const molt_stream_hdr_t *h = molt_stream_reader_header(r);
    ck_assert_ptr_nonnull(h);
    ck_assert_str_eq(h->from_gen, HDR.from_gen);
    ck_assert_str_eq(h->to_gen, HDR.to_gen);
    ck_assert_uint_eq(h->from_slot, HDR.from_slot);
    ck_assert_uint_eq(h->to_slot, HDR.to_slot);
    ck_assert_uint_eq(h->count, count);
    ck_assert_uint_eq(molt_stream_reader_count(r), count);
    ck_assert_ptr_null(molt_stream_reader_entry(r, count));
}

/* The entry the reader gives back equals what went in, and is one object. */
static void check_entry(const molt_stream_reader_t *r, size_t i, const molt_stream_entry_t *want)
{
    const molt_stream_entry_t *e = molt_stream_reader_entry(r, i);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->name, want->name);
    ck_assert_str_eq(e->plugin, want->plugin);
    ck_assert_str_eq(e->version, want->version);
    ck_assert_uint_eq(e->state_version, want->state_version);
    ck_assert_uint_eq(e->size, want->size);
    ck_assert_ptr_ne(e->data, want->data);
    ck_assert_mem_eq(e->data, want->data, want->size);

    msgpack_unpacked up;
    size_t off = 0;
    msgpack_unpacked_init(&up);
    ck_assert_int_eq(msgpack_unpack_next(&up, e->data, e->size, &off), MSGPACK_UNPACK_SUCCESS);
    ck_assert_uint_eq(off, e->size);
    msgpack_unpacked_destroy(&up);
}

static void expect_error(const molt_stream_reader_t *r, const char *want)
{
    const char *err = molt_stream_reader_error(r);
    if (!strstr(err, want))
        ck_abort_msg("error \"%s\" does not say \"%s\"", err, want);
}

/* Bytes the heap holds now, from the allocator in use. */
#ifdef __SANITIZE_ADDRESS__
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_in_use(void)
{
    return __sanitizer_get_current_allocated_bytes();
}
#else
static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- a hand builder for streams (independent of stream.c) --------------- */

typedef struct hb {
    molt_buf_t out;      /* the stream so far */
    msgpack_sbuffer kv;  /* the pairs of the frame being built */
    msgpack_packer pk;
    uint32_t pairs;
    const char *skip;    /* a key left out of every frame */
    bool extra;          /* add an unknown key to every frame */
} hb_t;

static void hb_init(hb_t *b)
{
    memset(b, 0, sizeof(*b));
    msgpack_sbuffer_init(&b->kv);
    msgpack_packer_init(&b->pk, &b->kv, msgpack_sbuffer_write);
}

static void hb_free(hb_t *b)
{
    molt_buf_free(&b->out);
    msgpack_sbuffer_destroy(&b->kv);
}

static void hb_raw(hb_t *b, const void *p, size_t n)
{
    ck_assert_int_eq(molt_buf_append(&b->out, p, n), 0);
}

static void hb_len(hb_t *b, uint32_t len)
{
    uint8_t be[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    hb_raw(b, be, 4);
}

static void hb_begin(hb_t *b)
{
    msgpack_sbuffer_clear(&b->kv);
    b->pairs = 0;
}

/* True if the key goes in (not the one being left out); packs the key. */
static bool hb_key(hb_t *b, const char *key)
{
    if (b->skip && strcmp(b->skip, key) == 0)
        return false;
    molt_mp_pack_str(&b->pk, key);
    b->pairs++;
    return true;
}

static void hb_str(hb_t *b, const char *key, const char *v)
{
    if (hb_key(b, key))
        molt_mp_pack_str(&b->pk, v);
}

static void hb_u64(hb_t *b, const char *key, uint64_t v)
{
    if (hb_key(b, key))
        msgpack_pack_uint64(&b->pk, v);
}

/* Closes the frame: length prefix, map header, the pairs. */
static void hb_end(hb_t *b)
{
    msgpack_sbuffer head;
    msgpack_packer hp;
    if (b->extra) {
        molt_mp_pack_kv_str(&b->pk, "future", "ignored");
        b->pairs++;
    }
    msgpack_sbuffer_init(&head);
    msgpack_packer_init(&hp, &head, msgpack_sbuffer_write);
    msgpack_pack_map(&hp, b->pairs);
    hb_len(b, (uint32_t)(head.size + b->kv.size));
    hb_raw(b, head.data, head.size);
    hb_raw(b, b->kv.data, b->kv.size);
    msgpack_sbuffer_destroy(&head);
}

static void hb_header_x(hb_t *b, const char *magic, uint64_t version, uint64_t count)
{
    hb_begin(b);
    hb_str(b, "magic", magic);
    hb_u64(b, "version", version);
    hb_str(b, "from_gen", HDR.from_gen);
    hb_str(b, "to_gen", HDR.to_gen);
    hb_u64(b, "from_slot", HDR.from_slot);
    hb_u64(b, "to_slot", HDR.to_slot);
    hb_u64(b, "count", count);
    hb_end(b);
}

static void hb_header(hb_t *b, uint64_t count)
{
    hb_header_x(b, MOLT_STREAM_MAGIC, MOLT_STREAM_VERSION, count);
}

static void hb_entry_x(hb_t *b, const char *name, uint64_t size)
{
    hb_begin(b);
    hb_str(b, "name", name);
    hb_str(b, "plugin", "kv");
    hb_str(b, "version", "1.0.0");
    hb_u64(b, "state_version", 1);
    hb_u64(b, "size", size);
    hb_end(b);
}

/* An entry frame and its payload. */
static void hb_entry(hb_t *b, const char *name)
{
    hb_entry_x(b, name, sizeof(PAY));
    hb_raw(b, PAY, sizeof(PAY));
}

static void hb_trailer_x(hb_t *b, uint64_t count, uint64_t bytes, uint64_t xxh)
{
    hb_begin(b);
    hb_u64(b, "count", count);
    hb_u64(b, "bytes", bytes);
    hb_u64(b, "xxh3", xxh);
    hb_end(b);
}

/* A correct trailer for everything so far. */
static void hb_trailer(hb_t *b, uint64_t count)
{
    hb_trailer_x(b, count, b->out.len, XXH3_64bits(b->out.data, b->out.len));
}

/* --- round trips ---------------------------------------------------------- */

START_TEST(test_roundtrip_empty)
{
    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    molt_buf_t bytes;

    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, &bytes);
    molt_stream_reader_t *r = read_bytes(bytes.data, bytes.len);
    check_header(r, 0);
    ck_assert_ptr_null(molt_stream_reader_entry(r, 0));
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    molt_buf_free(&bytes);
}
END_TEST

START_TEST(test_roundtrip_one)
{
    msgpack_sbuffer pay;
    molt_buf_t bytes;

    pack_map_payload(&pay, 10);
    molt_stream_entry_t e = entry("kv", pay.data, pay.size);
    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    ck_assert_int_eq(molt_stream_writer_add(w, &e), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, &bytes);
    molt_stream_reader_t *r = read_bytes(bytes.data, bytes.len);
    check_header(r, 1);
    check_entry(r, 0, &e);
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    molt_buf_free(&bytes);
    msgpack_sbuffer_destroy(&pay);
}
END_TEST

START_TEST(test_roundtrip_several)
{
    static const uint8_t str[] = {0xa5, 'h', 'e', 'l', 'l', 'o'};
    static const uint8_t bin[] = {0xc4, 0x03, 0x00, 0xff, 0x00};
    static const uint8_t nil[] = {0xc0};
    msgpack_sbuffer big;
    molt_buf_t bytes;

    pack_map_payload(&big, 5000);
    molt_stream_entry_t es[] = {
        entry("first", big.data, big.size), entry("s", str, sizeof(str)), entry("b", bin, sizeof(bin)),
        entry("nil", nil, sizeof(nil)),     entry("last", PAY, sizeof(PAY)),
    };
    es[2].state_version = UINT32_MAX;
    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    for (size_t i = 0; i < MOLT_ARRAY_SIZE(es); i++)
        ck_assert_int_eq(molt_stream_writer_add(w, &es[i]), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, &bytes);
    molt_stream_reader_t *r = read_bytes(bytes.data, bytes.len);
    check_header(r, MOLT_ARRAY_SIZE(es));
    for (size_t i = 0; i < MOLT_ARRAY_SIZE(es); i++)
        check_entry(r, i, &es[i]);
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    molt_buf_free(&bytes);
    msgpack_sbuffer_destroy(&big);
}
END_TEST

START_TEST(test_roundtrip_empty_maps)
{
    static const uint8_t empty_map[] = {0x80};
    static const uint8_t empty_map16[] = {0xde, 0x00, 0x00};
    molt_buf_t bytes;
    molt_stream_entry_t es[] = {entry("a", empty_map, 1), entry("b", empty_map16, 3), entry("c", empty_map, 1)};

    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    for (size_t i = 0; i < MOLT_ARRAY_SIZE(es); i++)
        ck_assert_int_eq(molt_stream_writer_add(w, &es[i]), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, &bytes);
    molt_stream_reader_t *r = read_bytes(bytes.data, bytes.len);
    check_header(r, 3);
    for (size_t i = 0; i < MOLT_ARRAY_SIZE(es); i++)
        check_entry(r, i, &es[i]);
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    molt_buf_free(&bytes);
}
END_TEST

/* One payload in two writers (a replicated instance goes to every new
 * worker): both streams carry it, and it is neither copied nor changed. */
START_TEST(test_shared_payload)
{
    msgpack_sbuffer pay;
    molt_buf_t b1, b2;

    pack_map_payload(&pay, 300);
    char *copy = malloc(pay.size);
    memcpy(copy, pay.data, pay.size);
    molt_stream_entry_t e = entry("kv", pay.data, pay.size);
    molt_stream_entry_t other = entry("counter", PAY, sizeof(PAY));
    molt_stream_hdr_t h2 = HDR;
    h2.to_slot = 9;
    molt_stream_writer_t *w1 = molt_stream_writer_new(&HDR), *w2 = molt_stream_writer_new(&h2);
    ck_assert_int_eq(molt_stream_writer_add(w1, &e), 0);
    ck_assert_int_eq(molt_stream_writer_add(w2, &other), 0);
    ck_assert_int_eq(molt_stream_writer_add(w2, &e), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w1), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w2), 0);
    stream_bytes(w2, &b2); /* the second first: the order must not matter */
    stream_bytes(w1, &b1);
    ck_assert_mem_eq(pay.data, copy, pay.size);

    molt_stream_reader_t *r1 = read_bytes(b1.data, b1.len), *r2 = read_bytes(b2.data, b2.len);
    check_entry(r1, 0, &e);
    check_entry(r2, 0, &other);
    check_entry(r2, 1, &e);
    ck_assert_uint_eq(molt_stream_reader_header(r2)->to_slot, 9);
    molt_stream_reader_free(r1);
    molt_stream_reader_free(r2);
    molt_stream_writer_free(w1);
    molt_stream_writer_free(w2);
    molt_buf_free(&b1);
    molt_buf_free(&b2);
    free(copy);
    msgpack_sbuffer_destroy(&pay);
}
END_TEST

/* Reads one frame at *pos by hand: a big-endian length, then one map. */
static void hand_frame(const molt_buf_t *b, size_t *pos, msgpack_unpacked *up)
{
    ck_assert_uint_ge(b->len - *pos, 4);
    const uint8_t *p = (const uint8_t *)b->data + *pos;
    uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    ck_assert_uint_ge(len, 1);
    ck_assert_uint_le(len, b->len - *pos - 4);
    size_t off = 0;
    ck_assert_int_eq(msgpack_unpack_next(up, (const char *)p + 4, len, &off), MSGPACK_UNPACK_SUCCESS);
    ck_assert_uint_eq(off, len);
    ck_assert_int_eq(up->data.type, MSGPACK_OBJECT_MAP);
    *pos += 4 + len;
}

/* The bytes on the wire, read back by hand: frame layout, keys, the trailer's
 * byte count and XXH3 of exactly the bytes before its length prefix. */
START_TEST(test_wire_format)
{
    molt_buf_t b;
    msgpack_unpacked up;
    size_t pos = 0;
    uint64_t u = 0;
    char s[64];

    molt_stream_entry_t e = entry("kv", PAY, sizeof(PAY));
    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    ck_assert_int_eq(molt_stream_writer_add(w, &e), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, &b);
    msgpack_unpacked_init(&up);

    hand_frame(&b, &pos, &up);
    ck_assert_uint_eq(up.data.via.map.size, 7);
    ck_assert(molt_mp_get_str(&up.data, "magic", s, sizeof(s)));
    ck_assert_str_eq(s, "molt-state");
    ck_assert(molt_mp_get_u64(&up.data, "version", &u));
    ck_assert_uint_eq(u, 1);
    ck_assert(molt_mp_get_str(&up.data, "from_gen", s, sizeof(s)));
    ck_assert_str_eq(s, HDR.from_gen);
    ck_assert(molt_mp_get_str(&up.data, "to_gen", s, sizeof(s)));
    ck_assert_str_eq(s, HDR.to_gen);
    ck_assert(molt_mp_get_u64(&up.data, "from_slot", &u));
    ck_assert_uint_eq(u, 3);
    ck_assert(molt_mp_get_u64(&up.data, "to_slot", &u));
    ck_assert_uint_eq(u, 4);
    ck_assert(molt_mp_get_u64(&up.data, "count", &u));
    ck_assert_uint_eq(u, 1);

    hand_frame(&b, &pos, &up);
    ck_assert_uint_eq(up.data.via.map.size, 5);
    ck_assert(molt_mp_get_str(&up.data, "name", s, sizeof(s)));
    ck_assert_str_eq(s, "kv");
    ck_assert(molt_mp_get_str(&up.data, "plugin", s, sizeof(s)));
    ck_assert_str_eq(s, "plugin-kv");
    ck_assert(molt_mp_get_str(&up.data, "version", s, sizeof(s)));
    ck_assert_str_eq(s, e.version);
    ck_assert(molt_mp_get_u64(&up.data, "state_version", &u));
    ck_assert_uint_eq(u, 2);
    ck_assert(molt_mp_get_u64(&up.data, "size", &u));
    ck_assert_uint_eq(u, sizeof(PAY));
    ck_assert_mem_eq(b.data + pos, PAY, sizeof(PAY)); /* raw, not framed */
    pos += sizeof(PAY);

    size_t before = pos;
    hand_frame(&b, &pos, &up);
    ck_assert_uint_eq(up.data.via.map.size, 3);
    ck_assert(molt_mp_get_u64(&up.data, "count", &u));
    ck_assert_uint_eq(u, 1);
    ck_assert(molt_mp_get_u64(&up.data, "bytes", &u));
    ck_assert_uint_eq(u, before);
    ck_assert(molt_mp_get_u64(&up.data, "xxh3", &u));
    ck_assert(u == XXH3_64bits(b.data, before));
    ck_assert_uint_eq(pos, b.len); /* nothing after the trailer */

    msgpack_unpacked_destroy(&up);
    molt_stream_writer_free(w);
    molt_buf_free(&b);
}
END_TEST

/* The builder's stream is accepted, so each refusal below is for its stated
 * reason; unknown keys in every frame are ignored (forward compatibility). */
START_TEST(test_hand_built_accepted)
{
    hb_t b;
    hb_init(&b);
    b.extra = _i == 1;
    hb_header(&b, 2);
    hb_entry(&b, "one");
    hb_entry(&b, "two");
    hb_trailer(&b, 2);
    molt_stream_reader_t *r = read_bytes(b.out.data, b.out.len);
    check_header(r, 2);
    ck_assert_str_eq(molt_stream_reader_entry(r, 1)->name, "two");
    ck_assert_mem_eq(molt_stream_reader_entry(r, 1)->data, PAY, sizeof(PAY));
    molt_stream_reader_free(r);
    hb_free(&b);
}
END_TEST

/* Fed one byte at a time, the stream completes at its last byte, not before. */
START_TEST(test_feed_bytewise)
{
    msgpack_sbuffer pay;
    molt_buf_t b;

    pack_map_payload(&pay, 50);
    molt_stream_entry_t es[] = {entry("a", pay.data, pay.size), entry("b", PAY, sizeof(PAY))};
    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    ck_assert_int_eq(molt_stream_writer_add(w, &es[0]), 0);
    ck_assert_int_eq(molt_stream_writer_add(w, &es[1]), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, &b);

    molt_stream_reader_t *r = molt_stream_reader_new();
    for (size_t i = 0; i + 1 < b.len; i++) {
        ck_assert_int_eq(molt_stream_reader_feed(r, b.data + i, 1), 0);
        ck_assert_uint_eq(molt_stream_reader_bytes(r), i + 1);
        ck_assert_ptr_null(molt_stream_reader_header(r));
        ck_assert_uint_eq(molt_stream_reader_count(r), 0);
    }
    ck_assert_int_eq(molt_stream_reader_feed(r, b.data + b.len - 1, 1), 1);
    ck_assert_int_eq(molt_stream_reader_feed(r, NULL, 0), 1);
    check_header(r, 2);
    check_entry(r, 0, &es[0]);
    check_entry(r, 1, &es[1]);
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    molt_buf_free(&b);
    msgpack_sbuffer_destroy(&pay);
}
END_TEST

static const size_t chunk_sizes[] = {2, 3, 5, 7, 64, 1000, 4096};

START_TEST(test_feed_chunks)
{
    msgpack_sbuffer pay;
    molt_buf_t b;
    size_t chunk = chunk_sizes[_i];

    pack_map_payload(&pay, 3000);
    molt_stream_entry_t es[] = {entry("a", PAY, sizeof(PAY)), entry("big", pay.data, pay.size),
                                entry("c", PAY, sizeof(PAY))};
    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    for (size_t i = 0; i < 3; i++)
        ck_assert_int_eq(molt_stream_writer_add(w, &es[i]), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, &b);

    molt_stream_reader_t *r = molt_stream_reader_new();
    int rc = 0;
    for (size_t off = 0; off < b.len; off += chunk) {
        ck_assert_int_eq(rc, 0);
        size_t n = b.len - off < chunk ? b.len - off : chunk;
        rc = molt_stream_reader_feed(r, b.data + off, n);
    }
    ck_assert_int_eq(rc, 1);
    for (size_t i = 0; i < 3; i++)
        check_entry(r, i, &es[i]);
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    molt_buf_free(&b);
    msgpack_sbuffer_destroy(&pay);
}
END_TEST

/* The caller unpacks an entry in place: strings point into the reader's copy. */
START_TEST(test_zero_copy_unpack)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    molt_buf_t b;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    molt_mp_pack_kv_str(&pk, "greeting", "hello, successor");
    molt_stream_entry_t e = entry("kv", sb.data, sb.size);
    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    ck_assert_int_eq(molt_stream_writer_add(w, &e), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, &b);
    molt_stream_writer_free(w); /* the reader's copy does not depend on the writer */
    msgpack_sbuffer_destroy(&sb);

    molt_stream_reader_t *r = read_bytes(b.data, b.len);
    molt_buf_free(&b);
    const molt_stream_entry_t *got = molt_stream_reader_entry(r, 0);
    msgpack_unpacked up;
    size_t off = 0;
    msgpack_unpacked_init(&up);
    ck_assert_int_eq(msgpack_unpack_next(&up, got->data, got->size, &off), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *v = molt_mp_map_get(&up.data, "greeting");
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(v->type, MSGPACK_OBJECT_STR);
    ck_assert(v->via.str.ptr >= got->data && v->via.str.ptr + v->via.str.size <= got->data + got->size);
    ck_assert_int_eq(memcmp(v->via.str.ptr, "hello, successor", v->via.str.size), 0);
    msgpack_unpacked_destroy(&up);
    molt_stream_reader_free(r);
}
END_TEST

/* Names of exactly MOLT_STREAM_NAME_MAX-1 bytes, and the generations cut to
 * what the header struct holds. */
START_TEST(test_longest_names)
{
    molt_stream_entry_t e = entry("x", PAY, sizeof(PAY));
    molt_stream_hdr_t h = HDR;
    molt_buf_t b;

    memset(e.name, 'n', MOLT_STREAM_NAME_MAX - 1);
    e.name[MOLT_STREAM_NAME_MAX - 1] = '\0';
    memset(e.plugin, 'p', MOLT_STREAM_NAME_MAX - 1);
    e.plugin[MOLT_STREAM_NAME_MAX - 1] = '\0';
    memset(e.version, 'v', MOLT_STREAM_NAME_MAX - 1);
    e.version[MOLT_STREAM_NAME_MAX - 1] = '\0';
    memset(h.from_gen, 'g', sizeof(h.from_gen)); /* no NUL at all: cut to 39 */
    molt_stream_writer_t *w = molt_stream_writer_new(&h);
    ck_assert_int_eq(molt_stream_writer_add(w, &e), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, &b);
    molt_stream_reader_t *r = read_bytes(b.data, b.len);
    check_entry(r, 0, &e);
    ck_assert_uint_eq(strlen(molt_stream_reader_header(r)->from_gen), sizeof(h.from_gen) - 1);
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    molt_buf_free(&b);
}
END_TEST

/* MOLT_STREAM_MAX_ENTRIES entries, all sharing one payload; one more is refused. */
START_TEST(test_max_entries)
{
    static const uint8_t one[] = {0x01};
    molt_buf_t b;

    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    for (int i = 0; i < MOLT_STREAM_MAX_ENTRIES; i++) {
        char name[16];
        snprintf(name, sizeof(name), "i%d", i);
        molt_stream_entry_t e = entry(name, one, 1);
        ck_assert_int_eq(molt_stream_writer_add(w, &e), 0);
    }
    molt_stream_entry_t e = entry("too-many", one, 1);
    ck_assert_int_eq(molt_stream_writer_add(w, &e), -EINVAL);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, &b);
    molt_stream_reader_t *r = read_bytes(b.data, b.len);
    ck_assert_uint_eq(molt_stream_reader_count(r), MOLT_STREAM_MAX_ENTRIES);
    ck_assert_str_eq(molt_stream_reader_entry(r, MOLT_STREAM_MAX_ENTRIES - 1)->name, "i1023");
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    molt_buf_free(&b);
}
END_TEST

/* --- sockets and pipes ---------------------------------------------------- */

/* A msgpack bin of n bytes of a pattern, allocated. */
static char *big_bin(size_t n, size_t *size)
{
    char *p = malloc(n + 5);
    ck_assert_ptr_nonnull(p);
    p[0] = (char)0xc6;
    p[1] = (char)(n >> 24);
    p[2] = (char)(n >> 16);
    p[3] = (char)(n >> 8);
    p[4] = (char)n;
    uint64_t x = 0x9e3779b97f4a7c15u;
    size_t i = 5;
    for (; i + 8 <= n + 5; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
    for (; i < n + 5; i++)
        p[i] = (char)i;
    *size = n + 5;
    return p;
}

/*
 * Writer and reader in one process over a non-blocking socketpair with a
 * small send buffer, each driven when poll says its side is ready: the way
 * two workers' loops drive them. Returns the reader (complete, EOF seen).
 */
static molt_stream_reader_t *pump(molt_stream_writer_t *w, int sndbuf, double *secs)
{
    int sv[2];
    nb_pair(sv);
    if (sndbuf > 0)
        set_sndbuf(sv[0], sndbuf);
    molt_stream_reader_t *r = molt_stream_reader_new();
    bool wdone = false;
    int rrc = 0;
    double t0 = now_s();
    while (rrc == 0) {
        struct pollfd pfd[2] = {{.fd = sv[1], .events = POLLIN}, {.fd = wdone ? -1 : sv[0], .events = POLLOUT}};
        ck_assert_int_gt(poll(pfd, 2, 5000), 0);
        if (pfd[1].revents) {
            int wrc = molt_stream_writer_write(w, sv[0]);
            ck_assert_int_ge(wrc, 0);
            if (wrc == 1) {
                wdone = true;
                close(sv[0]);
            }
        }
        if (pfd[0].revents) {
            rrc = molt_stream_reader_read(r, sv[1]);
            if (rrc < 0)
                ck_abort_msg("reader: %s", molt_stream_reader_error(r));
        }
    }
    if (secs)
        *secs = now_s() - t0;
    ck_assert_int_eq(rrc, 1);
    ck_assert(wdone);
    close(sv[1]);
    ck_assert_uint_eq(molt_stream_reader_bytes(r), molt_stream_writer_size(w));
    return r;
}

/* 50 MB through a socket as the handoff moves it; the time goes to the log. */
START_TEST(test_large_socketpair)
{
    size_t size;
    char *pay = big_bin(50u << 20, &size);
    molt_stream_entry_t es[] = {entry("small", PAY, sizeof(PAY)), entry("big", pay, size),
                                entry("after", PAY, sizeof(PAY))};
    double t0 = now_s(), secs;

    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    for (size_t i = 0; i < 3; i++)
        ck_assert_int_eq(molt_stream_writer_add(w, &es[i]), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    molt_stream_reader_t *r = pump(w, 64 * 1024, &secs);
    double total = now_s() - t0;
    for (size_t i = 0; i < 3; i++)
        check_entry(r, i, &es[i]);
    fprintf(stderr, "stream: %.1f MB: transfer %.1f ms (%.0f MB/s), finish+transfer %.1f ms (%.0f MB/s)\n",
            (double)size / 1e6, secs * 1e3, (double)size / 1e6 / secs, total * 1e3, (double)size / 1e6 / total);
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    free(pay);
}
END_TEST

/* Many pieces (more than one writev batch) through a tiny send buffer:
 * every write ends somewhere inside a piece. */
START_TEST(test_many_pieces_partial)
{
    enum { N = 300 };
    char *pays[N];
    molt_stream_entry_t es[N];

    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    for (int i = 0; i < N; i++) {
        size_t n = (size_t)(i * 37 % 3000), size;
        pays[i] = big_bin(n, &size);
        char name[16];
        snprintf(name, sizeof(name), "e%d", i);
        es[i] = entry(name, pays[i], size);
        ck_assert_int_eq(molt_stream_writer_add(w, &es[i]), 0);
    }
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    molt_stream_reader_t *r = pump(w, 4096, NULL);
    ck_assert_uint_eq(molt_stream_reader_count(r), N);
    for (int i = 0; i < N; i++) {
        check_entry(r, (size_t)i, &es[i]);
        free(pays[i]);
    }
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
}
END_TEST

/* A pipe is not a socket: the writer falls back to writev. */
START_TEST(test_pipe)
{
    int p[2];
    size_t size;
    char *pay = big_bin(1u << 20, &size);
    molt_stream_entry_t e = entry("kv", pay, size);

    signal(SIGPIPE, SIG_IGN); /* as the worker runs */
    ck_assert_int_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    ck_assert_int_eq(molt_stream_writer_add(w, &e), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    molt_stream_reader_t *r = molt_stream_reader_new();
    int wrc = 0, rrc = 0;
    while (rrc == 0) {
        if (wrc == 0 && (wrc = molt_stream_writer_write(w, p[1])) == 1)
            close(p[1]);
        ck_assert_int_ge(wrc, 0);
        rrc = molt_stream_reader_read(r, p[0]);
    }
    ck_assert_int_eq(rrc, 1);
    check_entry(r, 0, &e);
    close(p[0]);

    /* A pipe without a reader: -EPIPE (SIGPIPE is the caller's to ignore). */
    molt_stream_writer_t *w2 = molt_stream_writer_new(&HDR);
    ck_assert_int_eq(molt_stream_writer_finish(w2), 0);
    ck_assert_int_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    close(p[0]);
    ck_assert_int_eq(molt_stream_writer_write(w2, p[1]), -EPIPE);
    close(p[1]);
    molt_stream_writer_free(w2);
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    free(pay);
}
END_TEST

/* A reader that went away: -EPIPE, and no SIGPIPE (the default action would
 * kill this test). */
START_TEST(test_write_epipe)
{
    int sv[2];
    size_t size;
    char *pay = big_bin(1u << 20, &size);
    molt_stream_entry_t e = entry("kv", pay, size);

    signal(SIGPIPE, SIG_DFL);
    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    ck_assert_int_eq(molt_stream_writer_add(w, &e), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);

    /* Gone before the first byte. */
    nb_pair(sv);
    close(sv[1]);
    ck_assert_int_eq(molt_stream_writer_write(w, sv[0]), -EPIPE);
    ck_assert_uint_eq(molt_stream_writer_written(w), 0);
    close(sv[0]);

    /* Gone in the middle. */
    molt_stream_writer_t *w2 = molt_stream_writer_new(&HDR);
    ck_assert_int_eq(molt_stream_writer_add(w2, &e), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w2), 0);
    nb_pair(sv);
    ck_assert_int_eq(molt_stream_writer_write(w2, sv[0]), 0);
    ck_assert_uint_gt(molt_stream_writer_written(w2), 0);
    ck_assert_uint_lt(molt_stream_writer_written(w2), molt_stream_writer_size(w2));
    close(sv[1]);
    ck_assert_int_eq(molt_stream_writer_write(w2, sv[0]), -EPIPE);
    close(sv[0]);
    molt_stream_writer_free(w2);
    molt_stream_writer_free(w);
    free(pay);
}
END_TEST

/* A full socket: 0, and the rest goes out once the reader catches up. */
START_TEST(test_write_would_block)
{
    int sv[2];
    size_t size;
    molt_buf_t got = {0};
    char *pay = big_bin(1u << 20, &size);
    molt_stream_entry_t e = entry("kv", pay, size);

    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    ck_assert_int_eq(molt_stream_writer_write(w, 0), -EINVAL); /* not finished */
    ck_assert_int_eq(molt_stream_writer_add(w, &e), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    nb_pair(sv);
    set_sndbuf(sv[0], 8192);
    ck_assert_int_eq(molt_stream_writer_write(w, sv[0]), 0);
    uint64_t first = molt_stream_writer_written(w);
    ck_assert_uint_gt(first, 0);
    ck_assert_int_eq(molt_stream_writer_write(w, sv[0]), 0); /* still full */
    ck_assert_uint_eq(molt_stream_writer_written(w), first);
    int rc;
    while ((rc = molt_stream_writer_write(w, sv[0])) == 0)
        drain(sv[1], &got);
    ck_assert_int_eq(rc, 1);
    ck_assert_int_eq(molt_stream_writer_write(w, sv[0]), 1); /* done stays done */
    close(sv[0]);
    ck_assert(drain(sv[1], &got));
    ck_assert_uint_eq(got.len, molt_stream_writer_size(w));
    molt_stream_reader_t *r = read_bytes(got.data, got.len);
    check_entry(r, 0, &e);
    molt_stream_reader_free(r);
    close(sv[1]);
    molt_stream_writer_free(w);
    molt_buf_free(&got);
    free(pay);
}
END_TEST

/* read(): 0 while more is needed, still 0 after the trailer until EOF, 1 at EOF. */
START_TEST(test_read_needs_eof)
{
    int sv[2];
    molt_buf_t b;
    molt_stream_entry_t e = entry("kv", PAY, sizeof(PAY));

    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    ck_assert_int_eq(molt_stream_writer_add(w, &e), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, &b);
    nb_pair(sv);
    molt_stream_reader_t *r = molt_stream_reader_new();
    ck_assert_int_eq(molt_stream_reader_read(r, sv[1]), 0); /* nothing yet */
    ck_assert_int_eq(write(sv[0], b.data, 10), 10);
    ck_assert_int_eq(molt_stream_reader_read(r, sv[1]), 0);
    ck_assert_uint_eq(molt_stream_reader_bytes(r), 10);
    ck_assert_int_eq(write(sv[0], b.data + 10, b.len - 10), (ssize_t)(b.len - 10));
    ck_assert_int_eq(molt_stream_reader_read(r, sv[1]), 0); /* complete, but is that all? */
    ck_assert_ptr_nonnull(molt_stream_reader_entry(r, 0));
    close(sv[0]);
    ck_assert_int_eq(molt_stream_reader_read(r, sv[1]), 1);
    ck_assert_int_eq(molt_stream_reader_read(r, sv[1]), 1);
    check_entry(r, 0, &e);
    close(sv[1]);
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    molt_buf_free(&b);
}
END_TEST

/* read() on a bad descriptor: its errno, and it sticks. */
START_TEST(test_read_errno)
{
    molt_stream_reader_t *r = molt_stream_reader_new();
    ck_assert_int_eq(molt_stream_reader_read(r, -1), -EBADF);
    ck_assert_str_ne(molt_stream_reader_error(r), "");
    ck_assert_int_eq(molt_stream_reader_read(r, -1), -EBADF);
    molt_stream_reader_free(r);
}
END_TEST

/* --- truncation ------------------------------------------------------------ */

/* A small stream of two entries. */
static void small_stream(molt_buf_t *b)
{
    static const uint8_t arr[] = {0x93, 0x01, 0xa2, 'h', 'i', 0xc3};
    molt_stream_entry_t es[] = {entry("kv", PAY, sizeof(PAY)), entry("counter", arr, sizeof(arr))};
    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    for (size_t i = 0; i < 2; i++)
        ck_assert_int_eq(molt_stream_writer_add(w, &es[i]), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, b);
    molt_stream_writer_free(w);
}

static void expect_truncated(molt_stream_reader_t *r, int fd, size_t at)
{
    char want[64];
    ck_assert_int_eq(molt_stream_reader_read(r, fd), -EPIPE);
    snprintf(want, sizeof(want), "stream truncated after %zu bytes (", at);
    expect_error(r, want);
    ck_assert_int_eq(molt_stream_reader_read(r, fd), -EPIPE); /* sticks */
    ck_assert_ptr_null(molt_stream_reader_header(r));
    ck_assert_uint_eq(molt_stream_reader_count(r), 0);
    ck_assert_ptr_null(molt_stream_reader_entry(r, 0));
}

/* EOF at every byte offset, reached through feed then read, and through read
 * alone: -EPIPE, with where it stopped. */
START_TEST(test_truncate_every_offset)
{
    molt_buf_t b;
    small_stream(&b);
    int eof = eof_fd();

    for (size_t k = 0; k < b.len; k++) {
        molt_stream_reader_t *r = molt_stream_reader_new();
        ck_assert_int_eq(molt_stream_reader_feed(r, b.data, k), 0);
        expect_truncated(r, eof, k);
        molt_stream_reader_free(r);

        int sv[2];
        nb_pair(sv);
        ck_assert_int_eq(write(sv[0], b.data, k), (ssize_t)k);
        close(sv[0]);
        r = molt_stream_reader_new();
        expect_truncated(r, sv[1], k);
        molt_stream_reader_free(r);
        close(sv[1]);
    }
    close(eof);
    molt_buf_free(&b);
}
END_TEST

/* The error text says where: which part, which entry, how far. */
START_TEST(test_truncate_where)
{
    molt_buf_t b;
    size_t size;
    char *pay = big_bin(5000, &size);
    molt_stream_entry_t es[] = {entry("counter", PAY, sizeof(PAY)), entry("kv", pay, size)};
    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    for (size_t i = 0; i < 2; i++)
        ck_assert_int_eq(molt_stream_writer_add(w, &es[i]), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, &b);
    int eof = eof_fd();

    /* where the payload of "kv" starts */
    size_t pay_at = 0;
    for (size_t i = 0; i + size <= b.len; i++)
        if (memcmp(b.data + i, pay, size) == 0) {
            pay_at = i;
            break;
        }
    ck_assert_uint_gt(pay_at, 0);

    struct {
        size_t at;
        const char *want;
    } cases[] = {
        {0, "(nothing arrived)"},
        {2, "(in the length of the header, 2 of 4 bytes)"},
        {pay_at + 100, "(in entry 2 'kv' payload, 100 of 5005 bytes)"},
        {pay_at + size, "(before the trailer)"},
        {pay_at + size + 5, "(in the trailer, 1 of "},
    };
    for (size_t i = 0; i < MOLT_ARRAY_SIZE(cases); i++) {
        molt_stream_reader_t *r = molt_stream_reader_new();
        ck_assert_int_eq(molt_stream_reader_feed(r, b.data, cases[i].at), 0);
        ck_assert_int_eq(molt_stream_reader_read(r, eof), -EPIPE);
        expect_error(r, cases[i].want);
        molt_stream_reader_free(r);
    }
    close(eof);
    molt_stream_writer_free(w);
    molt_buf_free(&b);
    free(pay);
}
END_TEST

/* --- corruption -------------------------------------------------------------- */

/* A damaged stream is refused now, or found incomplete and refused at EOF;
 * never accepted. */
static void expect_never_accepted(const void *buf, size_t len, int eof)
{
    molt_stream_reader_t *r = molt_stream_reader_new();
    int rc = molt_stream_reader_feed(r, buf, len);
    if (rc == 0) {
        rc = molt_stream_reader_read(r, eof);
        ck_assert_int_eq(rc, -EPIPE);
    } else {
        ck_assert_int_eq(rc, -EBADMSG);
        ck_assert_int_eq(molt_stream_reader_feed(r, buf, len), -EBADMSG);
    }
    ck_assert_str_ne(molt_stream_reader_error(r), "");
    ck_assert_uint_eq(molt_stream_reader_count(r), 0);
    molt_stream_reader_free(r);
}

static const uint8_t flip_masks[] = {0x01, 0x02, 0x10, 0x80, 0xff};

START_TEST(test_flip_every_byte)
{
    molt_buf_t b;
    small_stream(&b);
    uint8_t mask = flip_masks[_i];
    char *copy = malloc(b.len);
    int eof = eof_fd();

    for (size_t k = 0; k < b.len; k++) {
        memcpy(copy, b.data, b.len);
        copy[k] = (char)(copy[k] ^ mask);
        expect_never_accepted(copy, b.len, eof);
    }
    close(eof);
    free(copy);
    molt_buf_free(&b);
}
END_TEST

static uint32_t rng_state;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* Random damage (a few bytes changed, maybe cut short), fed in random pieces. */
START_TEST(test_random_damage)
{
    molt_buf_t b;
    small_stream(&b);
    char *copy = malloc(b.len);
    int eof = eof_fd();

    rng_state = 0x6d6f6c74u; /* "molt" */
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(copy, b.data, b.len);
        int changes = 1 + (int)(rng() % 4);
        for (int c = 0; c < changes; c++)
            copy[rng() % b.len] = (char)rng();
        size_t len = rng() % 4 == 0 ? rng() % b.len : b.len;
        if (len == b.len && memcmp(copy, b.data, b.len) == 0)
            continue; /* the changes changed nothing */
        molt_stream_reader_t *r = molt_stream_reader_new();
        int rc = 0;
        for (size_t off = 0; off < len && rc == 0;) {
            size_t n = 1 + rng() % 40;
            n = n < len - off ? n : len - off;
            rc = molt_stream_reader_feed(r, copy + off, n);
            off += n;
        }
        if (rc == 0)
            rc = molt_stream_reader_read(r, eof);
        ck_assert(rc == -EBADMSG || rc == -EPIPE);
        ck_assert_str_ne(molt_stream_reader_error(r), "");
        molt_stream_reader_free(r);
    }
    close(eof);
    free(copy);
    molt_buf_free(&b);
}
END_TEST

/* --- malformed streams, one rule each ---------------------------------------- */

static void bad_magic(hb_t *b)
{
    hb_header_x(b, "molt-stat", 1, 0);
    hb_trailer(b, 0);
}

static void bad_magic_type(hb_t *b)
{
    hb_begin(b);
    hb_u64(b, "magic", 7);
    hb_u64(b, "version", 1);
    hb_end(b);
}

static void bad_version(hb_t *b)
{
    hb_header_x(b, MOLT_STREAM_MAGIC, 2, 0);
    hb_trailer(b, 0);
}

static void bad_version_type(hb_t *b)
{
    hb_begin(b);
    hb_str(b, "magic", MOLT_STREAM_MAGIC);
    hb_str(b, "version", "1");
    hb_end(b);
}

static void too_many_entries(hb_t *b)
{
    hb_header(b, MOLT_STREAM_MAX_ENTRIES + 1);
}

static void fewer_entries_than_header(hb_t *b)
{
    hb_header(b, 2);
    hb_entry(b, "one");
    hb_trailer(b, 1);
}

static void more_entries_than_header(hb_t *b)
{
    hb_header(b, 1);
    hb_entry(b, "one");
    hb_entry(b, "two");
    hb_trailer(b, 2);
}

static void trailer_count(hb_t *b)
{
    hb_header(b, 1);
    hb_entry(b, "one");
    hb_trailer(b, 2);
}

static void trailer_bytes(hb_t *b)
{
    hb_header(b, 1);
    hb_entry(b, "one");
    hb_trailer_x(b, 1, b->out.len - 1, XXH3_64bits(b->out.data, b->out.len));
}

static void trailer_xxh3(hb_t *b)
{
    hb_header(b, 1);
    hb_entry(b, "one");
    hb_trailer_x(b, 1, b->out.len, XXH3_64bits(b->out.data, b->out.len) ^ 1);
}

/* A payload byte changed in transit; still one valid object. */
static void payload_changed(hb_t *b)
{
    hb_header(b, 1);
    hb_entry(b, "one");
    hb_trailer(b, 1);
    char *p = memchr(b->out.data, 0x81, b->out.len);
    while (p && memcmp(p, PAY, sizeof(PAY)) != 0)
        p = memchr(p + 1, 0x81, b->out.len - (size_t)(p + 1 - b->out.data));
    ck_assert_ptr_nonnull(p);
    p[3] = 0x08;
}

static void name_too_long(hb_t *b)
{
    char name[MOLT_STREAM_NAME_MAX + 1];
    memset(name, 'n', MOLT_STREAM_NAME_MAX);
    name[MOLT_STREAM_NAME_MAX] = '\0';
    hb_header(b, 1);
    hb_entry(b, name);
    hb_trailer(b, 1);
}

static void gen_too_long(hb_t *b)
{
    hb_begin(b);
    hb_str(b, "magic", MOLT_STREAM_MAGIC);
    hb_u64(b, "version", 1);
    hb_str(b, "from_gen", "0123456789012345678901234567890123456789"); /* 40 */
    hb_str(b, "to_gen", "");
    hb_u64(b, "from_slot", 0);
    hb_u64(b, "to_slot", 0);
    hb_u64(b, "count", 0);
    hb_end(b);
    hb_trailer(b, 0);
}

static void name_with_nul(hb_t *b)
{
    hb_header(b, 1);
    hb_begin(b);
    molt_mp_pack_str(&b->pk, "name");
    msgpack_pack_str(&b->pk, 3);
    msgpack_pack_str_body(&b->pk, "a\0b", 3);
    b->pairs++;
    hb_str(b, "plugin", "kv");
    hb_str(b, "version", "1");
    hb_u64(b, "state_version", 1);
    hb_u64(b, "size", sizeof(PAY));
    hb_end(b);
    hb_raw(b, PAY, sizeof(PAY));
    hb_trailer(b, 1);
}

static void name_is_bin(hb_t *b)
{
    hb_header(b, 1);
    hb_begin(b);
    molt_mp_pack_str(&b->pk, "name");
    msgpack_pack_bin(&b->pk, 2);
    msgpack_pack_bin_body(&b->pk, "kv", 2);
    b->pairs++;
    hb_str(b, "plugin", "kv");
    hb_str(b, "version", "1");
    hb_u64(b, "state_version", 1);
    hb_u64(b, "size", sizeof(PAY));
    hb_end(b);
    hb_raw(b, PAY, sizeof(PAY));
    hb_trailer(b, 1);
}

static void state_version_negative(hb_t *b)
{
    hb_header(b, 1);
    hb_begin(b);
    hb_str(b, "name", "kv");
    hb_str(b, "plugin", "kv");
    hb_str(b, "version", "1");
    molt_mp_pack_str(&b->pk, "state_version");
    msgpack_pack_int64(&b->pk, -1);
    b->pairs++;
    hb_u64(b, "size", sizeof(PAY));
    hb_end(b);
    hb_raw(b, PAY, sizeof(PAY));
    hb_trailer(b, 1);
}

static void slot_too_big(hb_t *b)
{
    hb_begin(b);
    hb_str(b, "magic", MOLT_STREAM_MAGIC);
    hb_u64(b, "version", 1);
    hb_str(b, "from_gen", "a");
    hb_str(b, "to_gen", "b");
    hb_u64(b, "from_slot", (uint64_t)UINT32_MAX + 1);
    hb_u64(b, "to_slot", 0);
    hb_u64(b, "count", 0);
    hb_end(b);
    hb_trailer(b, 0);
}

static void payload_two_objects(hb_t *b)
{
    static const uint8_t two[] = {0x01, 0x02};
    hb_header(b, 1);
    hb_entry_x(b, "kv", sizeof(two));
    hb_raw(b, two, sizeof(two));
    hb_trailer(b, 1);
}

static void payload_incomplete(hb_t *b)
{
    static const uint8_t half[] = {0x92, 0x01}; /* an array of two holding one */
    hb_header(b, 1);
    hb_entry_x(b, "kv", sizeof(half));
    hb_raw(b, half, sizeof(half));
    hb_trailer(b, 1);
}

static void payload_hostile_count(hb_t *b)
{
    static const uint8_t huge[] = {0xdd, 0xff, 0xff, 0xff, 0xff}; /* array of 2^32-1, no elements */
    hb_header(b, 1);
    hb_entry_x(b, "kv", sizeof(huge));
    hb_raw(b, huge, sizeof(huge));
    hb_trailer(b, 1);
}

static void payload_empty(hb_t *b)
{
    hb_header(b, 1);
    hb_entry_x(b, "kv", 0);
    hb_trailer(b, 1);
}

static void payload_over_limit(hb_t *b)
{
    hb_header(b, 1);
    hb_entry_x(b, "kv", MOLT_STREAM_MAX_PAYLOAD + 1);
}

static void frame_len_zero(hb_t *b)
{
    hb_header(b, 1);
    hb_len(b, 0);
}

static void frame_len_over(hb_t *b)
{
    hb_len(b, MOLT_STREAM_MAX_FRAME + 1);
}

static void frame_not_map(hb_t *b)
{
    static const uint8_t arr[] = {0x91, 0x01};
    hb_len(b, sizeof(arr));
    hb_raw(b, arr, sizeof(arr));
}

static void frame_trailing_byte(hb_t *b)
{
    static const uint8_t map[] = {0x80, 0x00};
    hb_len(b, sizeof(map));
    hb_raw(b, map, sizeof(map));
}

static void frame_map_cut(hb_t *b)
{
    static const uint8_t map[] = {0x81, 0xa1, 'k'}; /* a key without its value */
    hb_len(b, sizeof(map));
    hb_raw(b, map, sizeof(map));
}

static void frame_hostile_count(hb_t *b)
{
    static const uint8_t map[] = {0xdf, 0xff, 0xff, 0xff, 0xff}; /* 2^32-1 pairs */
    hb_len(b, sizeof(map));
    hb_raw(b, map, sizeof(map));
}

static void data_after_trailer(hb_t *b)
{
    hb_header(b, 1);
    hb_entry(b, "one");
    hb_trailer(b, 1);
    hb_raw(b, "", 1);
}

static void second_stream_after_trailer(hb_t *b)
{
    hb_header(b, 0);
    hb_trailer(b, 0);
    hb_header(b, 0);
}

static const struct bad_case {
    const char *what;
    void (*build)(hb_t *);
    const char *want;
} bad_cases[] = {
    {"bad magic", bad_magic, "not a molt state stream: magic \"molt-stat\""},
    {"magic not a string", bad_magic_type, "\"magic\" in the header is not a string"},
    {"version 2", bad_version, "stream version 2, this molt reads 1"},
    {"version not a uint", bad_version_type, "\"version\" in the header is not an unsigned integer"},
    {"count over the limit", too_many_entries, "\"count\" in the header is 1025, over the limit"},
    {"header count > entries", fewer_entries_than_header, "the trailer came after 1 entries, the header announced 2"},
    {"header count < entries", more_entries_than_header, "more entries than the header announced (1)"},
    {"trailer count", trailer_count, "the trailer counts 2 entries, the stream holds 1"},
    {"trailer bytes", trailer_bytes, "the trailer says"},
    {"trailer xxh3", trailer_xxh3, "checksum mismatch: "},
    {"payload changed", payload_changed, "checksum mismatch: "},
    {"name too long", name_too_long, "\"name\" in entry 1 of 1 is too long (128 bytes, at most 127)"},
    {"generation too long", gen_too_long, "\"from_gen\" in the header is too long"},
    {"NUL in a name", name_with_nul, "\"name\" in entry 1 of 1 holds a NUL byte"},
    {"name a bin", name_is_bin, "\"name\" in entry 1 of 1 is not a string"},
    {"state_version < 0", state_version_negative, "\"state_version\" in entry 1 of 1 is not an unsigned integer"},
    {"slot over u32", slot_too_big, "\"from_slot\" in the header is 4294967296, over the limit"},
    {"payload of two objects", payload_two_objects, "payload of entry 1 'kv' is not exactly one msgpack object"},
    {"payload incomplete", payload_incomplete, "payload of entry 1 'kv' is not exactly one msgpack object"},
    {"payload hostile count", payload_hostile_count, "payload of entry 1 'kv' is not exactly one msgpack object"},
    {"payload empty", payload_empty, "is 0 bytes"},
    {"payload over the limit", payload_over_limit, "\"size\" in entry 1 of 1 is 8589934593, over the limit"},
    {"frame length 0", frame_len_zero, "frame length 0"},
    {"frame length over", frame_len_over, "frame length 65537"},
    {"frame not a map", frame_not_map, "the header is not a msgpack map"},
    {"frame trailing byte", frame_trailing_byte, "the header is not exactly one msgpack map"},
    {"frame map cut", frame_map_cut, "the header is not exactly one msgpack map"},
    {"frame hostile count", frame_hostile_count, "the header is not exactly one msgpack map"},
    {"data after the trailer", data_after_trailer, "data after the trailer"},
    {"a second stream", second_stream_after_trailer, "data after the trailer"},
};

/* Refused in one feed and fed byte by byte alike, with the same reason; and
 * the refusal sticks. */
START_TEST(test_refuses)
{
    const struct bad_case *c = &bad_cases[_i];
    hb_t b;
    hb_init(&b);
    c->build(&b);

    molt_stream_reader_t *r = molt_stream_reader_new();
    ck_assert_msg(molt_stream_reader_feed(r, b.out.data, b.out.len) == -EBADMSG, "%s: not refused", c->what);
    expect_error(r, c->want);
    ck_assert_int_eq(molt_stream_reader_feed(r, PAY, 1), -EBADMSG);
    ck_assert_int_eq(molt_stream_reader_feed(r, NULL, 0), -EBADMSG);
    int eof = eof_fd();
    ck_assert_int_eq(molt_stream_reader_read(r, eof), -EBADMSG);
    close(eof);
    ck_assert_ptr_null(molt_stream_reader_header(r));
    ck_assert_uint_eq(molt_stream_reader_count(r), 0);
    ck_assert_ptr_null(molt_stream_reader_entry(r, 0));
    char first[512];
    snprintf(first, sizeof(first), "%s", molt_stream_reader_error(r));
    molt_stream_reader_free(r);

    /* (A trailer followed by more: 1 at the trailer's last byte, then the refusal.) */
    r = molt_stream_reader_new();
    int rc = 0;
    for (size_t i = 0; i < b.out.len && rc >= 0; i++)
        rc = molt_stream_reader_feed(r, b.out.data + i, 1);
    ck_assert_int_eq(rc, -EBADMSG);
    ck_assert_str_eq(molt_stream_reader_error(r), first);
    molt_stream_reader_free(r);
    hb_free(&b);
}
END_TEST

/* Through read() too: a malformed stream is -EBADMSG, not -EPIPE. */
START_TEST(test_refuses_read)
{
    const struct bad_case *c = &bad_cases[_i];
    hb_t b;
    int sv[2];

    hb_init(&b);
    c->build(&b);
    nb_pair(sv);
    ck_assert_int_eq(write(sv[0], b.out.data, b.out.len), (ssize_t)b.out.len);
    close(sv[0]);
    molt_stream_reader_t *r = molt_stream_reader_new();
    ck_assert_int_eq(molt_stream_reader_read(r, sv[1]), -EBADMSG);
    expect_error(r, c->want);
    molt_stream_reader_free(r);
    close(sv[1]);
    hb_free(&b);
}
END_TEST

static const struct {
    const char *frame;
    const char *key;
} required[] = {
    {"the header", "magic"},      {"the header", "version"},   {"the header", "from_gen"},
    {"the header", "to_gen"},     {"the header", "from_slot"}, {"the header", "to_slot"},
    {"the header", "count"},      {"entry 1 of 1", "name"},    {"entry 1 of 1", "plugin"},
    {"entry 1 of 1", "version"},  {"entry 1 of 1", "state_version"}, {"entry 1 of 1", "size"},
    {"the trailer", "count"},     {"the trailer", "bytes"},    {"the trailer", "xxh3"},
};

/* Each required key left out of its frame (and only there): named in the error. */
START_TEST(test_missing_key)
{
    hb_t b;
    char want[64];

    hb_init(&b);
    const char *frame = required[_i].frame;
    b.skip = strcmp(frame, "the header") == 0 ? required[_i].key : NULL;
    hb_header(&b, 1);
    b.skip = strncmp(frame, "entry", 5) == 0 ? required[_i].key : NULL;
    hb_entry(&b, "kv");
    b.skip = strcmp(frame, "the trailer") == 0 ? required[_i].key : NULL;
    hb_trailer(&b, 1);

    molt_stream_reader_t *r = molt_stream_reader_new();
    ck_assert_int_eq(molt_stream_reader_feed(r, b.out.data, b.out.len), -EBADMSG);
    snprintf(want, sizeof(want), "%s has no \"%s\"", frame, required[_i].key);
    expect_error(r, want);
    molt_stream_reader_free(r);
    hb_free(&b);
}
END_TEST

/* A few bytes announcing an 8 GiB payload: the reader waits for it with
 * memory for what arrived, not for what was announced. */
START_TEST(test_huge_announced_payload)
{
    static const uint8_t ten[10] = {0xc6, 0x7f, 0xff, 0xff, 0xff};
    hb_t b;
    int sv[2];

    hb_init(&b);
    hb_header(&b, 1);
    hb_entry_x(&b, "kv", MOLT_STREAM_MAX_PAYLOAD);
    hb_raw(&b, ten, sizeof(ten));

    size_t before = heap_in_use();
    molt_stream_reader_t *r = molt_stream_reader_new();
    ck_assert_int_eq(molt_stream_reader_feed(r, b.out.data, b.out.len), 0);
    ck_assert_uint_lt(heap_in_use() - before, 1u << 20);
    molt_stream_reader_free(r);

    /* read() reads a big payload in large pieces, straight into its buffer:
     * still bounded by that piece, not by the announcement. */
    nb_pair(sv);
    ck_assert_int_eq(write(sv[0], b.out.data, b.out.len), (ssize_t)b.out.len);
    before = heap_in_use();
    r = molt_stream_reader_new();
    ck_assert_int_eq(molt_stream_reader_read(r, sv[1]), 0);
    ck_assert_uint_lt(heap_in_use() - before, 1u << 20);
    close(sv[0]);
    ck_assert_int_eq(molt_stream_reader_read(r, sv[1]), -EPIPE);
    expect_error(r, "(in entry 1 'kv' payload, 10 of 8589934592 bytes)");
    molt_stream_reader_free(r);
    close(sv[1]);
    hb_free(&b);
}
END_TEST

/* --- the writer's refusals and accounting ------------------------------------- */

START_TEST(test_add_refuses_payload)
{
    static const uint8_t two[] = {0x01, 0x02};
    static const uint8_t half[] = {0x92, 0x01};
    static const uint8_t unused[] = {0xc1};
    molt_buf_t b;

    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    molt_stream_entry_t e = entry("kv", NULL, 0);
    ck_assert_int_eq(molt_stream_writer_add(w, &e), -EINVAL);
    e = entry("kv", PAY, 0);
    ck_assert_int_eq(molt_stream_writer_add(w, &e), -EINVAL);
    e = entry("kv", two, sizeof(two));
    ck_assert_int_eq(molt_stream_writer_add(w, &e), -EINVAL);
    e = entry("kv", half, sizeof(half));
    ck_assert_int_eq(molt_stream_writer_add(w, &e), -EINVAL);
    e = entry("kv", unused, sizeof(unused));
    ck_assert_int_eq(molt_stream_writer_add(w, &e), -EINVAL);
    e = entry("kv", PAY, sizeof(PAY) - 1);
    ck_assert_int_eq(molt_stream_writer_add(w, &e), -EINVAL);
    ck_assert_int_eq(molt_stream_writer_add(w, NULL), -EINVAL);
    ck_assert_int_eq(molt_stream_writer_add(NULL, &e), -EINVAL);

    /* Nothing refused went in: the stream is a good empty one plus what follows. */
    e = entry("kv", PAY, sizeof(PAY));
    ck_assert_int_eq(molt_stream_writer_add(w, &e), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    stream_bytes(w, &b);
    molt_stream_reader_t *r = read_bytes(b.data, b.len);
    check_header(r, 1);
    check_entry(r, 0, &e);
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    molt_buf_free(&b);
}
END_TEST

START_TEST(test_add_refuses_names)
{
    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    for (int field = 0; field < 3; field++) {
        molt_stream_entry_t e = entry("kv", PAY, sizeof(PAY));
        char *s = field == 0 ? e.name : field == 1 ? e.plugin : e.version;
        memset(s, 'x', MOLT_STREAM_NAME_MAX); /* no NUL: MOLT_STREAM_NAME_MAX bytes or more */
        ck_assert_int_eq(molt_stream_writer_add(w, &e), -EINVAL);
    }
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    molt_buf_t b;
    stream_bytes(w, &b);
    molt_stream_reader_t *r = read_bytes(b.data, b.len);
    check_header(r, 0);
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    molt_buf_free(&b);
}
END_TEST

START_TEST(test_add_after_finish)
{
    molt_stream_entry_t e = entry("kv", PAY, sizeof(PAY));
    molt_stream_writer_t *w = molt_stream_writer_new(NULL); /* a zero header is fine */

    ck_assert_int_eq(molt_stream_writer_add(w, &e), 0);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0);
    uint64_t size = molt_stream_writer_size(w);
    ck_assert_int_eq(molt_stream_writer_add(w, &e), -EALREADY);
    ck_assert_int_eq(molt_stream_writer_finish(w), 0); /* harmless */
    ck_assert_uint_eq(molt_stream_writer_size(w), size);
    molt_buf_t b;
    stream_bytes(w, &b);
    molt_stream_reader_t *r = read_bytes(b.data, b.len);
    ck_assert_uint_eq(molt_stream_reader_count(r), 1);
    ck_assert_str_eq(molt_stream_reader_header(r)->from_gen, "");
    molt_stream_reader_free(r);
    molt_stream_writer_free(w);
    molt_buf_free(&b);
}
END_TEST

START_TEST(test_null_and_empty)
{
    molt_stream_writer_free(NULL);
    molt_stream_reader_free(NULL);
    ck_assert_uint_eq(molt_stream_writer_size(NULL), 0);
    ck_assert_uint_eq(molt_stream_writer_written(NULL), 0);
    ck_assert_int_eq(molt_stream_writer_finish(NULL), -EINVAL);
    ck_assert_int_eq(molt_stream_writer_write(NULL, 1), -EINVAL);
    ck_assert_int_eq(molt_stream_reader_feed(NULL, "", 1), -EINVAL);
    ck_assert_int_eq(molt_stream_reader_read(NULL, 0), -EINVAL);
    ck_assert_ptr_null(molt_stream_reader_header(NULL));
    ck_assert_uint_eq(molt_stream_reader_count(NULL), 0);
    ck_assert_ptr_null(molt_stream_reader_entry(NULL, 0));
    ck_assert_uint_eq(molt_stream_reader_bytes(NULL), 0);

    /* A fresh reader: nothing to show, no error; an empty feed needs more. */
    molt_stream_reader_t *r = molt_stream_reader_new();
    ck_assert_str_eq(molt_stream_reader_error(r), "");
    ck_assert_int_eq(molt_stream_reader_feed(r, NULL, 0), 0);
    ck_assert_ptr_null(molt_stream_reader_header(r));
    ck_assert_uint_eq(molt_stream_reader_bytes(r), 0);
    molt_stream_reader_free(r);

    /* A writer freed unfinished, and one freed half-written. */
    molt_stream_entry_t e = entry("kv", PAY, sizeof(PAY));
    molt_stream_writer_t *w = molt_stream_writer_new(&HDR);
    ck_assert_int_eq(molt_stream_writer_add(w, &e), 0);
    molt_stream_writer_free(w);
}
END_TEST

static Suite *stream_suite(void)
{
    Suite *s = suite_create("stream");
    TCase *tc;

    tc = tcase_create("roundtrip");
    tcase_add_test(tc, test_roundtrip_empty);
    tcase_add_test(tc, test_roundtrip_one);
    tcase_add_test(tc, test_roundtrip_several);
    tcase_add_test(tc, test_roundtrip_empty_maps);
    tcase_add_test(tc, test_shared_payload);
    tcase_add_test(tc, test_wire_format);
    tcase_add_loop_test(tc, test_hand_built_accepted, 0, 2);
    tcase_add_test(tc, test_feed_bytewise);
    tcase_add_loop_test(tc, test_feed_chunks, 0, (int)MOLT_ARRAY_SIZE(chunk_sizes));
    tcase_add_test(tc, test_zero_copy_unpack);
    tcase_add_test(tc, test_longest_names);
    tcase_add_test(tc, test_max_entries);
    suite_add_tcase(s, tc);

    tc = tcase_create("io");
    tcase_add_test(tc, test_large_socketpair);
    tcase_add_test(tc, test_many_pieces_partial);
    tcase_add_test(tc, test_pipe);
    tcase_add_test(tc, test_write_epipe);
    tcase_add_test(tc, test_write_would_block);
    tcase_add_test(tc, test_read_needs_eof);
    tcase_add_test(tc, test_read_errno);
    suite_add_tcase(s, tc);

    tc = tcase_create("damage");
    tcase_add_test(tc, test_truncate_every_offset);
    tcase_add_test(tc, test_truncate_where);
    tcase_add_loop_test(tc, test_flip_every_byte, 0, (int)MOLT_ARRAY_SIZE(flip_masks));
    tcase_add_test(tc, test_random_damage);
    suite_add_tcase(s, tc);

    tc = tcase_create("malformed");
    tcase_add_loop_test(tc, test_refuses, 0, (int)MOLT_ARRAY_SIZE(bad_cases));
    tcase_add_loop_test(tc, test_refuses_read, 0, (int)MOLT_ARRAY_SIZE(bad_cases));
    tcase_add_loop_test(tc, test_missing_key, 0, (int)MOLT_ARRAY_SIZE(required));
    tcase_add_test(tc, test_huge_announced_payload);
    suite_add_tcase(s, tc);

    tc = tcase_create("writer");
    tcase_add_test(tc, test_add_refuses_payload);
    tcase_add_test(tc, test_add_refuses_names);
    tcase_add_test(tc, test_add_after_finish);
    tcase_add_test(tc, test_null_and_empty);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(stream_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
