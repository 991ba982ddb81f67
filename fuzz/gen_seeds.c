/*
 * Writes the binary seed inputs of fuzz_chan and fuzz_stream with the real
 * writers (molt_chan_send into a socketpair, read back raw; the state stream
 * writer into a socketpair, read back whole): gen_seeds DIR writes
 * DIR/chan/ and DIR/stream/ (which must exist). Built in the fuzz build as
 * fuzz_gen_seeds; the committed fuzz/corpus/ came from it (fuzz/README.md).
 * Stream seeds start with the chunk-size byte fuzz_stream reads first.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <msgpack.h>

#include "shared/chan.h"
#include "shared/stream.h"

static const char *outdir;

static void die(const char *what)
{
    fprintf(stderr, "gen_seeds: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void put(const char *sub, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s/%s", outdir, sub, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
        die(path);
}

/* ---- channel messages ------------------------------------------------------------------ */

static void chan_seed(const char *name, molt_msg_type_t type, const molt_body_t *body)
{
    int sv[2];
    if (molt_chan_pair(sv) < 0)
        die("socketpair");
    if (molt_chan_send(sv[0], type, body ? &body->sb : NULL, NULL, 0) < 0)
        die("molt_chan_send");
    static char buf[MOLT_CHAN_HEADER_SIZE + MOLT_CHAN_MAX_BODY];
    ssize_t n = recv(sv[1], buf, sizeof(buf), 0);
    if (n < 0)
        die("recv");
    put("chan", name, buf, (size_t)n);
    close(sv[0]);
    close(sv[1]);
}

static void gen_chan(void)
{
    molt_body_t b;

    chan_seed("drained", MOLT_MSG_DRAINED, NULL);

    molt_body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    molt_mp_pack_str(&b.pk, "plugins");
    msgpack_pack_array(&b.pk, 2);
    for (int i = 0; i < 2; i++) {
        msgpack_pack_map(&b.pk, 4);
        molt_mp_pack_kv_str(&b.pk, "name", i ? "kv" : "hello");
        molt_mp_pack_kv_str(&b.pk, "plugin", i ? "kv" : "hello");
        molt_mp_pack_kv_str(&b.pk, "version", "1.0.0");
        molt_mp_pack_kv_str(&b.pk, "file", i ? "/run/molt/gen-x/kv.so" : "/run/molt/gen-x/hello.so");
    }
    chan_seed("ready", MOLT_MSG_READY, &b);
    molt_body_free(&b);

    molt_body_init(&b);
    msgpack_pack_map(&b.pk, 3);
    molt_mp_pack_kv_str(&b.pk, "phase", "init");
    molt_mp_pack_kv_str(&b.pk, "plugin", "kv");
    molt_mp_pack_kv_str(&b.pk, "reason", "init failed: no memory");
    chan_seed("fail", MOLT_MSG_FAIL, &b);
    molt_body_free(&b);

    molt_body_init(&b);
    msgpack_pack_map(&b.pk, 4);
    molt_mp_pack_str(&b.pk, "requests");
    msgpack_pack_array(&b.pk, 5);
    for (int i = 0; i < 5; i++)
        msgpack_pack_uint64(&b.pk, (uint64_t)i * 1000);
    molt_mp_pack_kv_u64(&b.pk, "conns", 3);
    molt_mp_pack_kv_u64(&b.pk, "accepted", 12345678901ULL);
    molt_mp_pack_kv_u64(&b.pk, "rss", 1 << 24);
    chan_seed("stats", MOLT_MSG_STATS, &b);
    molt_body_free(&b);

    molt_body_init(&b);
    msgpack_pack_map(&b.pk, 2);
    molt_mp_pack_kv_bool(&b.pk, "graceful", true);
    molt_mp_pack_kv_bool(&b.pk, "retired", false);
    chan_seed("stop", MOLT_MSG_STOP, &b);
    molt_body_free(&b);

    molt_body_init(&b);
    msgpack_pack_map(&b.pk, 2);
    molt_mp_pack_kv_str(&b.pk, "path", "/healthz");
    molt_mp_pack_kv_u64(&b.pk, "timeout_ms", 2000);
    chan_seed("health", MOLT_MSG_HEALTH, &b);
    molt_body_free(&b);

    molt_body_init(&b);
    msgpack_pack_map(&b.pk, 4);
    molt_mp_pack_kv_str(&b.pk, "instance", "kv");
    molt_mp_pack_kv_u64(&b.pk, "seq", 7);
    molt_mp_pack_kv_u64(&b.pk, "from", 1);
    molt_mp_pack_str(&b.pk, "msg");
    msgpack_pack_bin(&b.pk, 3);
    msgpack_pack_bin_body(&b.pk, "\x81\xa1k\x01", 3); /* deliberately cut: not one object */
    chan_seed("sibling", MOLT_MSG_SIBLING, &b);
    molt_body_free(&b);

    molt_body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    molt_mp_pack_str(&b.pk, "streams");
    msgpack_pack_array(&b.pk, 1);
    msgpack_pack_map(&b.pk, 3);
    molt_mp_pack_kv_u64(&b.pk, "to_slot", 0);
    molt_mp_pack_kv_bool(&b.pk, "partitioned", true);
    molt_mp_pack_kv_bool(&b.pk, "replicated", false);
    chan_seed("save", MOLT_MSG_SAVE, &b);
    molt_body_free(&b);

    /* Invalid ones, by hand: bad magic, body length mismatch, body not a map. */
    static const unsigned char bad_magic[] = {0x4D, 0x4D, 1, 0, 0, 4, 0, 0, 0, 0, 0, 1, 0x80};
    put("chan", "bad-magic", bad_magic, sizeof(bad_magic));
    static const unsigned char bad_len[] = {0x4D, 0x4C, 1, 0, 0, 4, 0, 0, 0, 0, 0, 9, 0x80};
    put("chan", "bad-length", bad_len, sizeof(bad_len));
    static const unsigned char not_map[] = {0x4D, 0x4C, 1, 0, 0, 4, 0, 0, 0, 0, 0, 1, 0x90};
    put("chan", "not-a-map", not_map, sizeof(not_map));
}

/* ---- state streams --------------------------------------------------------------------- */

static void stream_seed(const char *name, unsigned char chunk, size_t n, const molt_stream_entry_t *es,
                        size_t cut)
{
    molt_stream_hdr_t h = {.from_gen = "6d1f4c7e-0f7a-4c43-9d55-1b2f3a4b5c6d",
                           .to_gen = "8e2a5d8f-1a8b-4d54-8e66-2c3d4e5f6a7b",
                           .from_slot = 1,
                           .to_slot = 0};
    molt_stream_writer_t *w = molt_stream_writer_new(&h);
    if (!w)
        die("molt_stream_writer_new");
    for (size_t i = 0; i < n; i++)
        if (molt_stream_writer_add(w, &es[i]) < 0)
            die("molt_stream_writer_add");
    if (molt_stream_writer_finish(w) < 0)
        die("molt_stream_writer_finish");
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair");
    size_t cap = 1 + (size_t)molt_stream_writer_size(w), len = 1;
    unsigned char *buf = malloc(cap);
    if (!buf)
        die("malloc");
    buf[0] = chunk;
    int rc;
    while ((rc = molt_stream_writer_write(w, sv[0])) >= 0) {
        ssize_t r;
        while ((r = read(sv[1], buf + len, cap - len)) > 0)
            len += (size_t)r;
        if (rc == 1)
            break;
    }
    if (rc < 0 || len != cap)
        die("molt_stream_writer_write");
    put("stream", name, buf, cut ? cut : len);
    free(buf);
    molt_stream_writer_free(w);
    close(sv[0]);
    close(sv[1]);
}

static void gen_stream(void)
{
    /* Payloads: exactly one msgpack object each. */
    static const char map[] = "\x82\xa1k\xa1v\xa1n\x2a";             /* {"k": "v", "n": 42} */
    static const char arr[] = "\x93\x01\xc3\xcb\x40\x09\x21\xfb\x54\x44\x2d\x18"; /* [1, true, 3.14...] */
    static const char nil[] = "\xc0";
    molt_stream_entry_t es[3] = {
        {.name = "kv", .plugin = "kv", .version = "1.2.0", .state_version = 1, .data = map, .size = sizeof(map) - 1},
        {.name = "counter", .plugin = "counter", .version = "0.1.0", .state_version = 3, .data = arr,
         .size = sizeof(arr) - 1},
        {.name = "empty", .plugin = "hello", .version = "1.0.0", .state_version = 0, .data = nil, .size = 1},
    };
    stream_seed("empty", 255, 0, es, 0);
    stream_seed("one-entry", 255, 1, es, 0);
    stream_seed("three-entries", 255, 3, es, 0);
    stream_seed("three-entries-bytewise", 0, 3, es, 0);
    stream_seed("three-entries-chunk7", 6, 3, es, 0);
    stream_seed("truncated", 255, 3, es, 60);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds DIR (writes DIR/chan/ and DIR/stream/)\n");
        return 2;
    }
    outdir = argv[1];
    gen_chan();
    gen_stream();
    return 0;
}
