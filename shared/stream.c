/*
 * The state handoff stream (see stream.h for the wire format and the
 * contract).
 *
 * Writer: every frame is packed into one buffer (`meta`), and the stream is a
 * list of pieces in wire order, each either a span of `meta` or a caller's
 * payload, referenced and never copied. The header frame is packed last, at
 * finish, because its count is only known then; its piece is reserved first.
 * write() hands the pieces still to go to sendmsg/writev, up to WRITE_BATCH
 * at a time, and keeps a (piece, offset) cursor across partial writes.
 *
 * Reader: a state machine fed by feed() or by read(), which both end up in
 * the same steps. Frames are collected in a buffer of at most one frame.
 * Payloads go into a buffer of their own that grows (doubling, capped at the
 * announced size) as bytes arrive, so that memory follows what actually
 * arrived, not what a corrupt length claims; read() puts large payloads
 * straight into that buffer. A payload buffer never moves once complete:
 * its entry's data points at it until the reader is freed. Every byte before
 * the trailer is hashed as it is taken in (while it is still in cache), so
 * checking the trailer costs nothing more.
 */
#include "shared/stream.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <msgpack.h>
#include <xxhash.h>

#include "shared/chan.h"
#include "shared/util.h"

/* Pieces per writev/sendmsg: enough to amortise the syscall over many small
 * entries, few enough for the stack. */
#if defined(IOV_MAX) && IOV_MAX < 64
#define WRITE_BATCH IOV_MAX
#else
#define WRITE_BATCH 64
#endif

/* read(): a payload with at least READ_DIRECT_MIN bytes still to come is read
 * straight into its own buffer, with room for at least READ_DIRECT bytes per
 * read; anything else goes through a staging buffer of one frame's size. */
#define READ_DIRECT_MIN (64 * 1024)
#define READ_DIRECT (256 * 1024)
#define READ_STAGE MOLT_STREAM_MAX_FRAME

/* The first allocation for a payload fed in small pieces. */
#define PAYLOAD_MIN_CAP (16 * 1024)

/* Names from the stream are cut to this in error texts. */
#define ERR_NAME_MAX 64

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- writer ------------------------------------------------------------------------------ */

/* A span of the stream: `ext` (a caller's payload) or, when NULL, meta.data + off.
 * Offsets, not pointers, into meta: meta moves as it grows. */
typedef struct piece {
    const char *ext;
    size_t off;
    size_t len;
} piece_t;

struct molt_stream_writer {
    molt_stream_hdr_t hdr;
    msgpack_sbuffer meta; /* every frame, length prefixes included */
    msgpack_packer pk;    /* packs into meta, through meta_write */
    bool oom;             /* a write into meta failed since frame_begin */
    piece_t *pieces;      /* pieces[0]: the header frame, packed by finish */
    size_t npieces, cap;
    uint32_t count;
    bool finished;
    uint64_t size;    /* bytes in the pieces so far; the whole stream once finished */
    uint64_t written; /* bytes written */
    size_t cur;       /* the first piece not completely written, */
    size_t cur_off;   /* and how much of it is */
    int not_sock_fd;  /* the fd sendmsg said is not a socket (writev it), or -1 */
};

/* The packer's callback: the sbuffer's, remembering a failure so that a frame
 * is checked once, after packing it, rather than after every key. */
static int meta_write(void *data, const char *buf, size_t len)
{
    molt_stream_writer_t *w = data;
    int rc = msgpack_sbuffer_write(&w->meta, buf, len);
    if (rc != 0)
        w->oom = true;
    return rc;
}

static int piece_push(molt_stream_writer_t *w, const char *ext, size_t off, size_t len)
{
    if (w->npieces == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        piece_t *p = realloc(w->pieces, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        w->pieces = p;
        w->cap = cap;
    }
    w->pieces[w->npieces++] = (piece_t){.ext = ext, .off = off, .len = len};
    w->size += len;
    return 0;
}

/* Starts a frame in meta: room for its length prefix. Returns where it starts. */
static size_t frame_begin(molt_stream_writer_t *w)
{
    static const char zero[4];
    size_t start = w->meta.size;
    w->oom = false;
    meta_write(w, zero, sizeof(zero));
    return start;
}

/* Ends the frame begun at `start`: fills in its length. -ENOMEM if packing it
 * failed, -EINVAL if it is over the limit; either way meta is cut back. */
static int frame_end(molt_stream_writer_t *w, size_t start)
{
    size_t len = w->meta.size - start - 4;
    if (w->oom || len > MOLT_STREAM_MAX_FRAME) {
        w->meta.size = start;
        return w->oom ? -ENOMEM : -EINVAL;
    }
    put_be32((uint8_t *)w->meta.data + start, (uint32_t)len);
    return 0;
}

/* A string field of at most max-1 bytes: a generation id without a NUL in
 * its array is cut rather than read past. */
static void pack_kv_strn(msgpack_packer *pk, const char *key, const char *s, size_t max)
{
    size_t n = strnlen(s, max - 1);
    molt_mp_pack_str(pk, key);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* hdr may be NULL: a zero header. */
molt_stream_writer_t *molt_stream_writer_new(const molt_stream_hdr_t *hdr)
{
    molt_stream_writer_t *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    if (hdr)
        w->hdr = *hdr;
    w->not_sock_fd = -1;
    msgpack_sbuffer_init(&w->meta);
    msgpack_packer_init(&w->pk, w, meta_write);
    /* The header's place, filled in by finish. */
    if (piece_push(w, NULL, 0, 0) < 0) {
        molt_stream_writer_free(w);
        return NULL;
    }
    return w;
}

/* True if s has a NUL within its MOLT_STREAM_NAME_MAX bytes. */
static bool name_ok(const char *s)
{
    return strnlen(s, MOLT_STREAM_NAME_MAX) < MOLT_STREAM_NAME_MAX;
}

/* Besides the documented results: -EINVAL for w or e NULL. A refused entry
 * leaves the writer as it was. */
int molt_stream_writer_add(molt_stream_writer_t *w, const molt_stream_entry_t *e)
{
    if (!w || !e)
        return -EINVAL;
    if (w->finished)
        return -EALREADY;
    if (w->count >= MOLT_STREAM_MAX_ENTRIES || !name_ok(e->name) || !name_ok(e->plugin) ||
        !name_ok(e->version) || e->size > MOLT_STREAM_MAX_PAYLOAD || !molt_mp_check_object(e->data, e->size))
        return -EINVAL;

    size_t start = frame_begin(w);
    msgpack_pack_map(&w->pk, 5);
    molt_mp_pack_kv_str(&w->pk, "name", e->name);
    molt_mp_pack_kv_str(&w->pk, "plugin", e->plugin);
    molt_mp_pack_kv_str(&w->pk, "version", e->version);
    molt_mp_pack_kv_u64(&w->pk, "state_version", e->state_version);
    molt_mp_pack_kv_u64(&w->pk, "size", e->size);
    int rc = frame_end(w, start);
    if (rc < 0)
        return rc;
    /* Both pieces or neither: a frame without its payload would be a lie. */
    size_t np = w->npieces;
    uint64_t size = w->size;
    if (piece_push(w, NULL, start, w->meta.size - start) < 0 || piece_push(w, e->data, 0, e->size) < 0) {
        w->npieces = np;
        w->size = size;
        w->meta.size = start;
        return -ENOMEM;
    }
    w->count++;
    return 0;
}

static const char *piece_ptr(const molt_stream_writer_t *w, const piece_t *p)
{
    return p->ext ? p->ext : w->meta.data + p->off;
}

/* XXH3-64 of every piece so far, in order. 0 or -ENOMEM. */
static int pieces_hash(const molt_stream_writer_t *w, uint64_t *out)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return -ENOMEM;
    XXH3_64bits_reset(st);
    for (size_t i = 0; i < w->npieces; i++)
        XXH3_64bits_update(st, piece_ptr(w, &w->pieces[i]), w->pieces[i].len);
    *out = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return 0;
}

/* Packs the header frame into pieces[0]. */
static int pack_header(molt_stream_writer_t *w)
{
    size_t start = frame_begin(w);
    msgpack_pack_map(&w->pk, 7);
    molt_mp_pack_kv_str(&w->pk, "magic", MOLT_STREAM_MAGIC);
    molt_mp_pack_kv_u64(&w->pk, "version", MOLT_STREAM_VERSION);
    pack_kv_strn(&w->pk, "from_gen", w->hdr.from_gen, sizeof(w->hdr.from_gen));
    pack_kv_strn(&w->pk, "to_gen", w->hdr.to_gen, sizeof(w->hdr.to_gen));
    molt_mp_pack_kv_u64(&w->pk, "from_slot", w->hdr.from_slot);
    molt_mp_pack_kv_u64(&w->pk, "to_slot", w->hdr.to_slot);
    molt_mp_pack_kv_u64(&w->pk, "count", w->count);
    int rc = frame_end(w, start);
    if (rc < 0)
        return rc;
    w->pieces[0] = (piece_t){.off = start, .len = w->meta.size - start};
    w->size += w->pieces[0].len;
    return 0;
}

/* Besides the documented results: -EINVAL for w NULL. Finishing twice is
 * harmless: the second call finds nothing to do. */
int molt_stream_writer_finish(molt_stream_writer_t *w)
{
    if (!w)
        return -EINVAL;
    if (w->finished)
        return 0;

    size_t meta_size = w->meta.size;
    uint64_t size = w->size;
    size_t np = w->npieces;
    uint64_t xxh = 0;
    int rc = pack_header(w);
    if (rc == 0)
        rc = pieces_hash(w, &xxh);
    if (rc == 0) {
        uint64_t bytes = w->size;
        size_t start = frame_begin(w);
        msgpack_pack_map(&w->pk, 3);
        molt_mp_pack_kv_u64(&w->pk, "count", w->count);
        molt_mp_pack_kv_u64(&w->pk, "bytes", bytes);
        molt_mp_pack_kv_u64(&w->pk, "xxh3", xxh);
        rc = frame_end(w, start);
        if (rc == 0)
            rc = piece_push(w, NULL, start, w->meta.size - start);
    }
    if (rc < 0) {
        /* As it was: the caller may try again, or free. */
        w->meta.size = meta_size;
        w->size = size;
        w->npieces = np;
        w->pieces[0] = (piece_t){0};
        return rc;
    }
    w->finished = true;
    return 0;
}

/* Moves the cursor over n written bytes. */
static void writer_advance(molt_stream_writer_t *w, size_t n)
{
    w->written += n;
    while (n > 0 && w->cur < w->npieces) {
        size_t left = w->pieces[w->cur].len - w->cur_off;
        if (n < left) {
            w->cur_off += n;
            return;
        }
        n -= left;
        w->cur++;
        w->cur_off = 0;
    }
}

/* One sendmsg (a socket: MSG_NOSIGNAL) or writev (anything else). */
static ssize_t writer_send(molt_stream_writer_t *w, int fd, struct iovec *iov, int cnt)
{
    if (fd != w->not_sock_fd) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
        ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (n >= 0 || errno != ENOTSOCK)
            return n;
        w->not_sock_fd = fd; /* a pipe, say: no more sendmsg attempts on it */
    }
    return writev(fd, iov, cnt);
}

/* Besides the documented results: -EINVAL for w NULL or not finished. Once
 * every byte is written, every call returns 1. */
int molt_stream_writer_write(molt_stream_writer_t *w, int fd)
{
    if (!w || !w->finished)
        return -EINVAL;
    while (w->cur < w->npieces) {
        struct iovec iov[WRITE_BATCH];
        int cnt = 0;
        size_t off = w->cur_off;
        for (size_t i = w->cur; i < w->npieces && cnt < WRITE_BATCH; i++, off = 0) {
            const piece_t *p = &w->pieces[i];
            if (p->len > off)
                iov[cnt++] = (struct iovec){.iov_base = (void *)(piece_ptr(w, p) + off), .iov_len = p->len - off};
        }
        if (cnt == 0) { /* only empty pieces left */
            w->cur = w->npieces;
            break;
        }
        ssize_t n = writer_send(w, fd, iov, cnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EPIPE || errno == ECONNRESET)
                return -EPIPE;
            return -errno;
        }
        if (n == 0)
            return -EIO; /* took nothing without saying why: never spin on it */
        writer_advance(w, (size_t)n);
    }
    return 1;
}

/* Before finish: the bytes of the entries so far (no header, no trailer). */
uint64_t molt_stream_writer_size(const molt_stream_writer_t *w)
{
    return w ? w->size : 0;
}

uint64_t molt_stream_writer_written(const molt_stream_writer_t *w)
{
    return w ? w->written : 0;
}

void molt_stream_writer_free(molt_stream_writer_t *w)
{
    if (!w)
        return;
    msgpack_sbuffer_destroy(&w->meta);
    free(w->pieces);
    free(w);
}

/* ---- reader ------------------------------------------------------------------------------ */

typedef enum rd_state {
    RD_LEN,     /* collecting a frame's length prefix */
    RD_FRAME,   /* collecting a frame */
    RD_PAYLOAD, /* collecting the payload of the last entry */
    RD_DONE,    /* the trailer was read and checked */
    RD_FAILED,  /* refused: err and errbuf say why */
} rd_state_t;

/* Which frame the reader is in or expects next. */
typedef enum rd_frame { FR_HEADER, FR_ENTRY, FR_TRAILER } rd_frame_t;

typedef struct rd_entry {
    molt_stream_entry_t e; /* e.data is set once the payload is complete */
    char *buf;             /* the payload so far */
    size_t have, cap;
} rd_entry_t;

struct molt_stream_reader {
    rd_state_t state;
    rd_frame_t next;
    uint8_t lenbuf[4];
    size_t lenhave;
    uint32_t flen;    /* length of the frame being collected */
    molt_buf_t frame; /* its bytes so far */
    molt_stream_hdr_t hdr;
    rd_entry_t *entries; /* entries whose frame arrived; the last may still be collecting its payload */
    size_t n, cap;
    size_t complete;     /* entries whose payload is complete */
    XXH3_state_t *xxh;   /* of every byte before the trailer */
    uint64_t bytes;      /* bytes taken in */
    uint64_t trailer_at; /* offset of the trailer's length prefix */
    char *stage;         /* read(): where bytes other than large payloads land */
    bool eof;            /* read() saw EOF after the trailer */
    int err;
    char errbuf[512];
};

molt_stream_reader_t *molt_stream_reader_new(void)
{
    molt_stream_reader_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->xxh = XXH3_createState();
    if (!r->xxh) {
        free(r);
        return NULL;
    }
    XXH3_64bits_reset(r->xxh);
    return r;
}

/* Refuses the stream: every later call returns err, and the error text says why. */
static int rd_vfail(molt_stream_reader_t *r, int err, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static int rd_vfail(molt_stream_reader_t *r, int err, const char *fmt, va_list ap)
{
    vsnprintf(r->errbuf, sizeof(r->errbuf), fmt, ap);
    r->state = RD_FAILED;
    r->err = err;
    return err;
}

static int rd_fail(molt_stream_reader_t *r, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int rd_fail(molt_stream_reader_t *r, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rd_vfail(r, err, fmt, ap);
    va_end(ap);
    return err;
}

/* A malformed stream. */
static int rd_bad(molt_stream_reader_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rd_bad(molt_stream_reader_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rd_vfail(r, -EBADMSG, fmt, ap);
    va_end(ap);
    return -EBADMSG;
}

/* The frame being read or expected, for error texts: "the header",
 * "entry 2 of 3", "the trailer" (entries count from 1). */
static const char *frame_name(const molt_stream_reader_t *r, char *buf, size_t len)
{
    switch (r->next) {
    case FR_HEADER:
        return "the header";
    case FR_ENTRY:
        snprintf(buf, len, "entry %zu of %u", r->complete + 1, r->hdr.count);
        return buf;
    default:
        return "the trailer";
    }
}

/* ---- reader: frames ---- */

/* A required string field of at most buflen-1 bytes with no NUL inside, copied to buf. */
static bool get_str(molt_stream_reader_t *r, const msgpack_object *map, const char *frame, const char *key,
                    char *buf, size_t buflen)
{
    const msgpack_object *o = molt_mp_map_get(map, key);
    if (!o) {
        rd_bad(r, "%s has no \"%s\"", frame, key);
        return false;
    }
    if (o->type != MSGPACK_OBJECT_STR) {
        rd_bad(r, "\"%s\" in %s is not a string", key, frame);
        return false;
    }
    uint32_t n = o->via.str.size;
    if (n > buflen - 1) {
        rd_bad(r, "\"%s\" in %s is too long (%u bytes, at most %zu)", key, frame, n, buflen - 1);
        return false;
    }
    if (n > 0 && memchr(o->via.str.ptr, '\0', n)) {
        rd_bad(r, "\"%s\" in %s holds a NUL byte", key, frame);
        return false;
    }
    if (n > 0)
        memcpy(buf, o->via.str.ptr, n);
    buf[n] = '\0';
    return true;
}

/* A required unsigned integer field of at most max. */
static bool get_uint(molt_stream_reader_t *r, const msgpack_object *map, const char *frame, const char *key,
                     uint64_t max, uint64_t *out)
{
    const msgpack_object *o = molt_mp_map_get(map, key);
    if (!o) {
        rd_bad(r, "%s has no \"%s\"", frame, key);
        return false;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        rd_bad(r, "\"%s\" in %s is not an unsigned integer", key, frame);
        return false;
    }
    if (o->via.u64 > max) {
        rd_bad(r, "\"%s\" in %s is %llu, over the limit (%llu)", key, frame, (unsigned long long)o->via.u64,
               (unsigned long long)max);
        return false;
    }
    *out = o->via.u64;
    return true;
}

/* What comes next is the trailer: from here on nothing is hashed. */
static void expect_trailer(molt_stream_reader_t *r)
{
    r->next = FR_TRAILER;
    r->trailer_at = r->bytes;
}

static int parse_header(molt_stream_reader_t *r, const msgpack_object *map)
{
    const char *f = "the header";
    char magic[32];
    uint64_t version, from_slot, to_slot, count;

    /* Magic first, then version: the rest of a stream of another kind or
     * version is not this reader's to judge. */
    const msgpack_object *m = molt_mp_map_get(map, "magic");
    if (!m || m->type != MSGPACK_OBJECT_STR || m->via.str.size != strlen(MOLT_STREAM_MAGIC) ||
        memcmp(m->via.str.ptr, MOLT_STREAM_MAGIC, m->via.str.size) != 0) {
        if (!get_str(r, map, f, "magic", magic, sizeof(magic)))
            return r->err;
        return rd_bad(r, "not a molt state stream: magic \"%s\", not \"%s\"", magic, MOLT_STREAM_MAGIC);
    }
    if (!get_uint(r, map, f, "version", UINT64_MAX, &version))
        return r->err;
    if (version != MOLT_STREAM_VERSION)
        return rd_bad(r, "stream version %llu, this molt reads %d", (unsigned long long)version,
                      MOLT_STREAM_VERSION);
    if (!get_str(r, map, f, "from_gen", r->hdr.from_gen, sizeof(r->hdr.from_gen)) ||
        !get_str(r, map, f, "to_gen", r->hdr.to_gen, sizeof(r->hdr.to_gen)) ||
        !get_uint(r, map, f, "from_slot", UINT32_MAX, &from_slot) ||
        !get_uint(r, map, f, "to_slot", UINT32_MAX, &to_slot) ||
        !get_uint(r, map, f, "count", MOLT_STREAM_MAX_ENTRIES, &count))
        return r->err;
    r->hdr.from_slot = (uint32_t)from_slot;
    r->hdr.to_slot = (uint32_t)to_slot;
    r->hdr.count = (uint32_t)count;
    if (count == 0)
        expect_trailer(r);
    else
        r->next = FR_ENTRY;
    r->state = RD_LEN;
    return 0;
}

static int parse_entry(molt_stream_reader_t *r, const msgpack_object *map)
{
    char f[48];
    frame_name(r, f, sizeof(f));

    /* A trailer where an entry belongs: say so rather than "no name". */
    if (!molt_mp_map_get(map, "name") && molt_mp_map_get(map, "xxh3"))
        return rd_bad(r, "the trailer came after %zu entries, the header announced %u", r->complete,
                      r->hdr.count);
    /* The array grows with the entries that arrive, not from the header's count. */
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        rd_entry_t *p = realloc(r->entries, cap * sizeof(*p));
        if (!p)
            return rd_fail(r, -ENOMEM, "out of memory for entry %zu", r->n + 1);
        r->entries = p;
        r->cap = cap;
    }
    rd_entry_t *re = &r->entries[r->n];
    memset(re, 0, sizeof(*re));
    uint64_t state_version, size;
    if (!get_str(r, map, f, "name", re->e.name, sizeof(re->e.name)) ||
        !get_str(r, map, f, "plugin", re->e.plugin, sizeof(re->e.plugin)) ||
        !get_str(r, map, f, "version", re->e.version, sizeof(re->e.version)) ||
        !get_uint(r, map, f, "state_version", UINT32_MAX, &state_version) ||
        !get_uint(r, map, f, "size", MOLT_STREAM_MAX_PAYLOAD, &size))
        return r->err;
    if (size == 0)
        return rd_bad(r, "the payload of %s '%.*s' is 0 bytes: not a msgpack object", f, ERR_NAME_MAX, re->e.name);
#if SIZE_MAX < UINT64_MAX
    if (size > SIZE_MAX) /* a 32-bit process cannot hold it */
        return rd_fail(r, -ENOMEM, "the payload of %s '%.*s' is %llu bytes: too large for this process", f,
                       ERR_NAME_MAX, re->e.name, (unsigned long long)size);
#endif
    re->e.state_version = (uint32_t)state_version;
    re->e.size = (size_t)size;
    r->n++;
    r->state = RD_PAYLOAD;
    return 0;
}

static int parse_trailer(molt_stream_reader_t *r, const msgpack_object *map)
{
    const char *f = "the trailer";
    uint64_t count, bytes, xxh;

    /* An entry where the trailer belongs. */
    if (!molt_mp_map_get(map, "xxh3") && molt_mp_map_get(map, "name"))
        return rd_bad(r, "more entries than the header announced (%u)", r->hdr.count);
    if (!get_uint(r, map, f, "count", UINT64_MAX, &count) || !get_uint(r, map, f, "bytes", UINT64_MAX, &bytes) ||
        !get_uint(r, map, f, "xxh3", UINT64_MAX, &xxh))
        return r->err;
    if (count != r->complete)
        return rd_bad(r, "the trailer counts %llu entries, the stream holds %zu", (unsigned long long)count,
                      r->complete);
    if (bytes != r->trailer_at)
        return rd_bad(r, "the trailer says %llu bytes came before it, there were %llu", (unsigned long long)bytes,
                      (unsigned long long)r->trailer_at);
    uint64_t got = XXH3_64bits_digest(r->xxh);
    if (xxh != got)
        return rd_bad(r, "checksum mismatch: the trailer says xxh3 %016llx, the %llu bytes before it hash to %016llx",
                      (unsigned long long)xxh, (unsigned long long)r->trailer_at, (unsigned long long)got);
    r->state = RD_DONE;
    return 1;
}

/* A whole frame is in r->frame: check it, decode it, act on it. */
static int parse_frame(molt_stream_reader_t *r)
{
    const uint8_t *p = (const uint8_t *)r->frame.data;
    size_t len = r->frame.len;
    char f[48];

    /* Checked before decoding: msgpack_unpack_next would trust the counts in
     * it and allocate from them. */
    if (!(p[0] >= 0x80 && p[0] <= 0x8f) && p[0] != 0xde && p[0] != 0xdf)
        return rd_bad(r, "%s is not a msgpack map", frame_name(r, f, sizeof(f)));
    if (!molt_mp_check_object(p, len))
        return rd_bad(r, "%s is not exactly one msgpack map (%zu bytes)", frame_name(r, f, sizeof(f)), len);

    msgpack_unpacked up;
    size_t off = 0;
    int rc;
    msgpack_unpacked_init(&up);
    msgpack_unpack_return ur = msgpack_unpack_next(&up, (const char *)p, len, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        rc = rd_fail(r, -ENOMEM, "out of memory decoding %s", frame_name(r, f, sizeof(f)));
    else if (ur != MSGPACK_UNPACK_SUCCESS || off != len || up.data.type != MSGPACK_OBJECT_MAP)
        rc = rd_bad(r, "%s cannot be decoded", frame_name(r, f, sizeof(f))); /* nested too deep */
    else if (r->next == FR_HEADER)
        rc = parse_header(r, &up.data);
    else if (r->next == FR_ENTRY)
        rc = parse_entry(r, &up.data);
    else
        rc = parse_trailer(r, &up.data);
    msgpack_unpacked_destroy(&up);
    return rc;
}

/* ---- reader: bytes ---- */

/* Bytes taken in: counted, and hashed unless they belong to the trailer. */
static void rd_account(molt_stream_reader_t *r, const void *p, size_t n)
{
    if (r->next != FR_TRAILER)
        XXH3_64bits_update(r->xxh, p, n);
    r->bytes += n;
}

/* The entry whose payload is being collected. */
static rd_entry_t *cur_entry(molt_stream_reader_t *r)
{
    return &r->entries[r->n - 1];
}

/* Room for at least `want` more bytes of the current payload (want <= what
 * is still to come): doubles, capped at the announced size, so memory
 * follows the bytes that arrived. */
static int payload_reserve(molt_stream_reader_t *r, size_t want)
{
    rd_entry_t *re = cur_entry(r);
    if (re->cap - re->have >= want)
        return 0;
    size_t cap = re->cap > PAYLOAD_MIN_CAP / 2 ? re->cap : PAYLOAD_MIN_CAP / 2;
    while (cap - re->have < want)
        cap *= 2; /* cannot overflow: have + want <= size <= MOLT_STREAM_MAX_PAYLOAD */
    if (cap > re->e.size)
        cap = re->e.size;
    char *p = realloc(re->buf, cap);
    if (!p)
        return rd_fail(r, -ENOMEM, "out of memory for the payload of entry %zu '%.*s' (%zu of %zu bytes)", r->n,
                       ERR_NAME_MAX, re->e.name, re->have, re->e.size);
    re->buf = p;
    re->cap = cap;
    return 0;
}

/* n more payload bytes are in place at buf + have. */
static int payload_arrived(molt_stream_reader_t *r, size_t n)
{
    rd_entry_t *re = cur_entry(r);
    rd_account(r, re->buf + re->have, n);
    re->have += n;
    if (re->have < re->e.size)
        return 0;
    if (!molt_mp_check_object(re->buf, re->e.size))
        return rd_bad(r, "the payload of entry %zu '%.*s' is not exactly one msgpack object (%zu bytes)", r->n,
                      ERR_NAME_MAX, re->e.name, re->e.size);
    re->e.data = re->buf;
    r->complete++;
    if (r->complete == r->hdr.count)
        expect_trailer(r);
    else
        r->next = FR_ENTRY;
    r->state = RD_LEN;
    return 0;
}

/* Takes up to n bytes at p for the current state, how many in *took (at
 * least one if n > 0 and the stream is not refused). Returns 0, 1 when this
 * completed the trailer, or < 0 on a refusal. */
static int rd_step(molt_stream_reader_t *r, const uint8_t *p, size_t n, size_t *took)
{
    size_t k;
    char f[48];

    *took = 0;
    switch (r->state) {
    case RD_LEN:
        k = 4 - r->lenhave < n ? 4 - r->lenhave : n;
        memcpy(r->lenbuf + r->lenhave, p, k);
        r->lenhave += k;
        rd_account(r, p, k);
        *took = k;
        if (r->lenhave < 4)
            return 0;
        r->lenhave = 0;
        r->flen = get_be32(r->lenbuf);
        if (r->flen == 0 || r->flen > MOLT_STREAM_MAX_FRAME)
            return rd_bad(r, "%s: frame length %u at byte %llu, not within 1..%d", frame_name(r, f, sizeof(f)),
                          r->flen, (unsigned long long)(r->bytes - 4), MOLT_STREAM_MAX_FRAME);
        r->frame.len = 0;
        if (molt_buf_reserve(&r->frame, r->flen) < 0)
            return rd_fail(r, -ENOMEM, "out of memory for a frame of %u bytes", r->flen);
        r->state = RD_FRAME;
        return 0;
    case RD_FRAME:
        k = r->flen - r->frame.len < n ? r->flen - r->frame.len : n;
        memcpy(r->frame.data + r->frame.len, p, k);
        r->frame.len += k;
        rd_account(r, p, k);
        *took = k;
        return r->frame.len < r->flen ? 0 : parse_frame(r);
    case RD_PAYLOAD: {
        rd_entry_t *re = cur_entry(r);
        k = re->e.size - re->have < n ? re->e.size - re->have : n;
        int rc = payload_reserve(r, k);
        if (rc < 0)
            return rc;
        memcpy(re->buf + re->have, p, k);
        *took = k;
        return payload_arrived(r, k);
    }
    case RD_DONE:
        return rd_bad(r, "data after the trailer (at byte %llu)", (unsigned long long)r->bytes);
    default:
        return r->err;
    }
}

/* Besides the documented results: -ENOMEM, which sticks like a refusal;
 * -EINVAL for r NULL. An empty feed says where the stream stands (0 or 1). */
int molt_stream_reader_feed(molt_stream_reader_t *r, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    if (!r)
        return -EINVAL;
    if (r->state == RD_FAILED)
        return r->err;
    if (len == 0)
        return r->state == RD_DONE ? 1 : 0;
    int rc = 0;
    while (len > 0) {
        size_t took;
        rc = rd_step(r, p, len, &took);
        if (rc < 0)
            return rc;
        p += took;
        len -= took;
    }
    return rc; /* 1 only if the trailer was the last thing taken */
}

/* Where the stream stopped, for the truncation error. */
static void where(const molt_stream_reader_t *r, char *buf, size_t len)
{
    char f[48];
    const char *name = frame_name(r, f, sizeof(f));
    switch (r->state) {
    case RD_LEN:
        if (r->lenhave > 0)
            snprintf(buf, len, "in the length of %s, %zu of 4 bytes", name, r->lenhave);
        else if (r->bytes == 0)
            snprintf(buf, len, "nothing arrived");
        else
            snprintf(buf, len, "before %s", name);
        break;
    case RD_FRAME:
        snprintf(buf, len, "in %s, %zu of %u bytes", name, r->frame.len, r->flen);
        break;
    case RD_PAYLOAD: {
        const rd_entry_t *re = &r->entries[r->n - 1];
        snprintf(buf, len, "in entry %zu '%.*s' payload, %zu of %zu bytes", r->n, ERR_NAME_MAX, re->e.name,
                 re->have, re->e.size);
        break;
    }
    default:
        snprintf(buf, len, "at its end");
        break;
    }
}

/* One read into the current payload's own buffer: the kernel's copy is the only one. */
static ssize_t read_direct(molt_stream_reader_t *r, int fd)
{
    rd_entry_t *re = cur_entry(r);
    size_t left = re->e.size - re->have;
    if (payload_reserve(r, left < READ_DIRECT ? left : READ_DIRECT) < 0)
        return -1;
    size_t room = re->cap - re->have;
    ssize_t n;
    do
        n = read(fd, re->buf + re->have, room < left ? room : left);
    while (n < 0 && errno == EINTR);
    return n;
}

/* Besides the documented results: -ENOMEM; -EINVAL for r NULL. Once the
 * stream is complete and EOF was seen, every call returns 1. */
int molt_stream_reader_read(molt_stream_reader_t *r, int fd)
{
    if (!r)
        return -EINVAL;
    for (;;) {
        if (r->state == RD_FAILED)
            return r->err;
        if (r->eof)
            return 1;
        ssize_t n;
        bool direct = r->state == RD_PAYLOAD && cur_entry(r)->e.size - cur_entry(r)->have >= READ_DIRECT_MIN;
        if (direct) {
            n = read_direct(r, fd);
            if (n < 0 && r->state == RD_FAILED)
                return r->err; /* out of memory */
        } else {
            if (!r->stage && !(r->stage = malloc(READ_STAGE)))
                return rd_fail(r, -ENOMEM, "out of memory for a read buffer");
            do
                n = read(fd, r->stage, READ_STAGE);
            while (n < 0 && errno == EINTR);
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            int e = errno;
            return rd_fail(r, -e, "reading the stream failed after %llu bytes: %s", (unsigned long long)r->bytes,
                           strerror(e));
        }
        if (n == 0) {
            if (r->state == RD_DONE) {
                r->eof = true;
                return 1;
            }
            char w[256];
            where(r, w, sizeof(w));
            return rd_fail(r, -EPIPE, "stream truncated after %llu bytes (%s)", (unsigned long long)r->bytes, w);
        }
        int rc = direct ? payload_arrived(r, (size_t)n) : molt_stream_reader_feed(r, r->stage, (size_t)n);
        if (rc < 0)
            return rc;
        /* rc == 1: complete, but only EOF makes it whole: read on. */
    }
}

/* NULL until the stream is complete. */
const molt_stream_hdr_t *molt_stream_reader_header(const molt_stream_reader_t *r)
{
    return r && r->state == RD_DONE ? &r->hdr : NULL;
}

size_t molt_stream_reader_count(const molt_stream_reader_t *r)
{
    return r && r->state == RD_DONE ? r->complete : 0;
}

const molt_stream_entry_t *molt_stream_reader_entry(const molt_stream_reader_t *r, size_t i)
{
    return r && r->state == RD_DONE && i < r->complete ? &r->entries[i].e : NULL;
}

uint64_t molt_stream_reader_bytes(const molt_stream_reader_t *r)
{
    return r ? r->bytes : 0;
}

const char *molt_stream_reader_error(const molt_stream_reader_t *r)
{
    return r ? r->errbuf : "";
}

void molt_stream_reader_free(molt_stream_reader_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->entries[i].buf);
    free(r->entries);
    molt_buf_free(&r->frame);
    XXH3_freeState(r->xxh);
    free(r->stage);
    free(r);
}
