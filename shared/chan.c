/*
 * The supervisor <-> worker channel: framing, descriptor passing and the
 * checks a receiver makes before it believes a message (see chan.h for the
 * wire format and the contract).
 *
 * Ownership, in one place:
 *  - send never takes anything: the body and the descriptors stay the caller's.
 *  - recv / decode either succeed, and then the msg owns the body and every
 *    descriptor that arrived, or fail, and then every descriptor that arrived
 *    is already closed and the msg holds nothing (molt_msg_free on it is a
 *    harmless no-op, but not needed).
 */
#include "shared/chan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <msgpack.h>

#include "shared/util.h"

/*
 * Room for descriptors beyond the limit: a peer that sends too many gets them
 * all received (then closed) rather than cut off with MSG_CTRUNC, so the
 * refusal is logged as what it is. Anything past even this is still not
 * leaked: the kernel drops what does not fit and sets MSG_CTRUNC.
 */
#define CHAN_EXTRA_FDS 8

/* One datagram plus one byte: a datagram that fills the buffer is oversized. */
#define CHAN_RECV_BUF (MOLT_CHAN_HEADER_SIZE + MOLT_CHAN_MAX_BODY + 1)

/* Rights for the limit and the slack, plus room for a credentials message
 * (SO_PASSCRED) so that one is seen and refused instead of truncating the rest. */
#define CHAN_RECV_CTRL                                                                                       \
    (CMSG_SPACE(sizeof(int) * (MOLT_CHAN_MAX_FDS + CHAN_EXTRA_FDS)) + CMSG_SPACE(sizeof(struct ucred)))

/*
 * Every message type the channel knows, indexed by value. A type is valid on
 * the wire exactly when it has a name here, so adding a message is one line.
 */
static const char *const msg_type_names[MOLT_MSG_TYPE_COUNT] = {
    [MOLT_MSG_READY] = "READY",     [MOLT_MSG_FAIL] = "FAIL", [MOLT_MSG_STATS] = "STATS",
    [MOLT_MSG_DRAINED] = "DRAINED", [MOLT_MSG_LOADING] = "LOADING", [MOLT_MSG_STOP] = "STOP",
    [MOLT_MSG_PAUSE] = "PAUSE",     [MOLT_MSG_RESUME] = "RESUME",  [MOLT_MSG_REPORT] = "REPORT",
    [MOLT_MSG_HEALTH] = "HEALTH",   [MOLT_MSG_HEALTH_RESULT] = "HEALTH_RESULT",
    [MOLT_MSG_ACTIVATE] = "ACTIVATE", [MOLT_MSG_SLOT_RESERVE] = "SLOT_RESERVE",
    [MOLT_MSG_SLOT_INDEX] = "SLOT_INDEX",
    [MOLT_MSG_SIBLING_SEND] = "SIBLING_SEND",
    [MOLT_MSG_SIBLING] = "SIBLING", [MOLT_MSG_SIBLING_ACK] = "SIBLING_ACK",
    [MOLT_MSG_SIBLING_STATUS] = "SIBLING_STATUS",
    [MOLT_MSG_QUIESCED] = "QUIESCED", [MOLT_MSG_SAVED] = "SAVED", [MOLT_MSG_RESTORED] = "RESTORED",
    [MOLT_MSG_DUMPED] = "DUMPED",     [MOLT_MSG_SAVE] = "SAVE",   [MOLT_MSG_RESTORE] = "RESTORE",
    [MOLT_MSG_DUMP] = "DUMP",         [MOLT_MSG_LOG_FD] = "LOG_FD",
};

static bool msg_type_known(unsigned type)
{
    return type < MOLT_MSG_TYPE_COUNT && msg_type_names[type] != NULL;
}

const char *molt_msg_type_name(unsigned type)
{
    return msg_type_known(type) ? msg_type_names[type] : "?";
}

static uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Closes fds[0..n) and marks each slot -1; accepts fds == NULL when n == 0. */
static void close_fds(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        molt_close(&fds[i]);
}

/* Puts *msg in the empty state: no body, no descriptors; freeing it is a no-op. */
static void msg_reset(molt_msg_t *msg)
{
    msg->type = MOLT_MSG_NONE;
    msgpack_unpacked_init(&msg->unpacked);
    msg->body = NULL;
    for (size_t i = 0; i < MOLT_CHAN_MAX_FDS; i++)
        msg->fds[i] = -1;
    msg->nfds = 0;
}

/* Reads a big-endian unsigned of `width` bytes at p[*pos], if there is room. */
static bool mp_read_be(const uint8_t *p, size_t len, size_t *pos, size_t width, uint64_t *out)
{
    if (width > len - *pos)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < width; i++)
        v = v << 8 | p[*pos + i];
    *pos += width;
    *out = v;
    return true;
}

/*
 * Walks a msgpack encoding without building anything: true if p/len holds
 * exactly one object and nothing after it (mp_check_body: and it is a map).
 *
 * Why not just let msgpack_unpack_next find out: it allocates a container's
 * element array from the count in the container's header before reading a
 * single element, so a 5-byte body claiming 2^32 entries makes it ask for
 * ~200 GB (and an ASan build abort). Here every pending element must still
 * have at least one byte left to be encoded in, which bounds what the real
 * decode allocates to a small multiple of the body size.
 */
static bool mp_check_one(const uint8_t *p, size_t len)
{
    size_t pos = 0;
    uint64_t pending = 1; /* objects still to read; never more than the bytes left */

    while (pending > 0) {
        if (pos >= len)
            return false;
        uint8_t b = p[pos++];
        uint64_t fixed = 0; /* bytes that follow the type byte */
        size_t lenw = 0;    /* width of a length field adding to `fixed` */
        size_t cntw = 0;    /* width of a container's element count */
        uint64_t per = 1;   /* objects per counted element: 2 for a map */
        uint64_t items = 0; /* objects this one contains */
        uint64_t v;

        pending--;
        if (b <= 0x7f || b >= 0xe0) {
            /* positive / negative fixint */
        } else if (b <= 0x8f) {
            items = 2u * (b & 0x0fu);
        } else if (b <= 0x9f) {
            items = b & 0x0fu;
        } else if (b <= 0xbf) {
            fixed = b & 0x1fu;
        } else {
            switch (b) {
            case 0xc0: /* nil */
            case 0xc2: /* false */
            case 0xc3: /* true */
                break;
            case 0xc4: /* bin 8 */
            case 0xd9: /* str 8 */
                lenw = 1;
                break;
            case 0xc5: /* bin 16 */
            case 0xda: /* str 16 */
                lenw = 2;
                break;
            case 0xc6: /* bin 32 */
            case 0xdb: /* str 32 */
                lenw = 4;
                break;
            case 0xc7: /* ext 8/16/32: length, then a type byte, then data */
                lenw = 1;
                fixed = 1;
                break;
            case 0xc8:
                lenw = 2;
                fixed = 1;
                break;
            case 0xc9:
                lenw = 4;
                fixed = 1;
                break;
            case 0xcc: /* uint 8 */
            case 0xd0: /* int 8 */
                fixed = 1;
                break;
            case 0xcd:
            case 0xd1:
                fixed = 2;
                break;
            case 0xca: /* float 32 */
            case 0xce:
            case 0xd2:
                fixed = 4;
                break;
            case 0xcb: /* float 64 */
            case 0xcf:
            case 0xd3:
                fixed = 8;
                break;
            case 0xd4: /* fixext 1/2/4/8/16: a type byte, then data */
                fixed = 2;
                break;
            case 0xd5:
                fixed = 3;
                break;
            case 0xd6:
                fixed = 5;
                break;
            case 0xd7:
                fixed = 9;
                break;
            case 0xd8:
                fixed = 17;
                break;
            case 0xdc: /* array 16 / 32 */
                cntw = 2;
                break;
            case 0xdd:
                cntw = 4;
                break;
            case 0xde: /* map 16 / 32 */
                cntw = 2;
                per = 2;
                break;
            case 0xdf:
                cntw = 4;
                per = 2;
                break;
            default: /* 0xc1 is never used */
                return false;
            }
        }
        if (lenw > 0) {
            if (!mp_read_be(p, len, &pos, lenw, &v))
                return false;
            fixed += v;
        }
        if (cntw > 0) {
            if (!mp_read_be(p, len, &pos, cntw, &v))
                return false;
            items = per * v;
        }
        if (fixed > len - pos)
            return false;
        pos += (size_t)fixed;
        pending += items;
        if (pending > len - pos)
            return false;
    }
    return pos == len;
}

static bool mp_check_body(const uint8_t *p, size_t len)
{
    if (len == 0 || !((p[0] & 0xf0) == 0x80 || p[0] == 0xde || p[0] == 0xdf))
        return false;
    return mp_check_one(p, len);
}

bool molt_mp_check_object(const void *p, size_t len)
{
    return p && len > 0 && mp_check_one(p, len);
}

int molt_chan_pair(int sv[2])
{
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 ? -errno : 0;
}

/* The errno of a failed sendmsg/recvmsg in the channel's vocabulary. */
static int chan_errno(int e)
{
    if (e == EAGAIN || e == EWOULDBLOCK)
        return -EAGAIN;
    if (e == EPIPE || e == ECONNRESET)
        return -EPIPE;
    return -e;
}

/*
 * Besides the documented results, returns -EINVAL for a type chan.h does not
 * define, fds == NULL with nfds > 0, or a body that is not exactly one msgpack
 * map: the receiver would refuse any of them, and the sender is the one whose
 * log can say which code built it.
 */
int molt_chan_send(int fd, molt_msg_type_t type, const msgpack_sbuffer *body, const int *fds, size_t nfds)
{
    static const uint8_t empty_map = 0x80;
    const uint8_t *data = &empty_map;
    size_t len = 1;
    uint8_t hdr[MOLT_CHAN_HEADER_SIZE];
    union {
        char buf[CMSG_SPACE(sizeof(int) * MOLT_CHAN_MAX_FDS)];
        struct cmsghdr align;
    } ctrl;
    ssize_t n;

    if (body && body->size > 0) {
        data = (const uint8_t *)body->data;
        len = body->size;
    }
    if (len > MOLT_CHAN_MAX_BODY || nfds > MOLT_CHAN_MAX_FDS)
        return -EMSGSIZE;
    if (!msg_type_known(type) || (nfds > 0 && !fds) || !mp_check_body(data, len))
        return -EINVAL;

    put_be16(hdr, MOLT_CHAN_MAGIC);
    hdr[2] = MOLT_CHAN_VERSION;
    hdr[3] = (uint8_t)nfds;
    put_be16(hdr + 4, (uint16_t)type);
    put_be16(hdr + 6, 0);
    put_be32(hdr + 8, (uint32_t)len);

    struct iovec iov[2] = {
        {.iov_base = hdr, .iov_len = sizeof(hdr)},
        {.iov_base = (void *)data, .iov_len = len},
    };
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    if (nfds > 0) {
        memset(&ctrl, 0, sizeof(ctrl));
        mh.msg_control = ctrl.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }

    do
        n = sendmsg(fd, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return chan_errno(errno);
    /* SEQPACKET sends whole datagrams or nothing; anything else would reach
     * the peer as a cut message, so say so rather than report success. */
    if ((size_t)n != sizeof(hdr) + len)
        return -EIO;
    return 0;
}

/*
 * Moves every descriptor in mh's control data into got[] (up to
 * MOLT_CHAN_MAX_FDS; any beyond are closed at once) and counts them in *ngot.
 * Returns -EBADMSG if there were too many or if any control message was not
 * SOL_SOCKET/SCM_RIGHTS; the caller then closes got[]. It always walks to the
 * end, so nothing that arrived is left open behind a refusal.
 */
static int collect_fds(struct msghdr *mh, int *got, size_t *ngot)
{
    int err = 0;

    for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
            err = -EBADMSG;
            continue;
        }
        size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            /* CMSG_DATA need not be int-aligned for every layout; copy, don't cast. */
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(fd));
            if (*ngot < MOLT_CHAN_MAX_FDS) {
                got[(*ngot)++] = fd;
            } else {
                molt_close(&fd);
                err = -EBADMSG;
            }
        }
    }
    return err;
}

int molt_chan_recv(int fd, molt_msg_t *msg)
{
    uint8_t *buf = NULL;
    union {
        char buf[CHAN_RECV_CTRL];
        struct cmsghdr align;
    } ctrl;
    struct iovec iov;
    struct msghdr mh;
    int got[MOLT_CHAN_MAX_FDS];
    size_t ngot = 0;
    ssize_t n;
    int err;

    msg_reset(msg);
    /* Heap, not stack: 60 KB is a lot to ask of whatever stack an event
     * callback runs on, and a malloc per message costs nothing here. */
    buf = malloc(CHAN_RECV_BUF);
    if (!buf) {
        err = -ENOMEM;
        goto fail;
    }
    iov = (struct iovec){.iov_base = buf, .iov_len = CHAN_RECV_BUF};
    mh = (struct msghdr){
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = ctrl.buf,
        .msg_controllen = sizeof(ctrl.buf),
    };
    do
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        err = chan_errno(errno);
        goto fail;
    }

    /* Take the descriptors first, whatever else is wrong, so every refusal
     * below closes them. */
    err = collect_fds(&mh, got, &ngot);
    if (n == 0) {
        err = -EPIPE;
        goto fail;
    }
    if (err < 0)
        goto fail;
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        err = -EBADMSG;
        goto fail;
    }

    /* decode owns got[] from here: it moves them into msg or closes them. */
    err = molt_chan_decode(buf, (size_t)n, got, ngot, msg);
    free(buf);
    return err;

fail:
    close_fds(got, ngot);
    free(buf);
    return err;
}

/*
 * Besides 0 and -EBADMSG, returns -ENOMEM if memory for the body ran out.
 * Either way the descriptors leave the caller: on success msg->fds holds them,
 * on failure they are closed; fds[] is set to -1 in both cases so the caller
 * cannot close one twice.
 */
int molt_chan_decode(const void *buf, size_t len, int *fds, size_t nfds, molt_msg_t *msg)
{
    const uint8_t *p = buf;
    char *copy = NULL;
    int err = -EBADMSG;
    size_t off = 0;

    msg_reset(msg);
    if (!p || len < MOLT_CHAN_HEADER_SIZE)
        goto fail;

    uint16_t magic = get_be16(p);
    uint8_t version = p[2];
    uint8_t hdr_nfds = p[3];
    uint16_t type = get_be16(p + 4);
    uint16_t reserved = get_be16(p + 6);
    uint32_t length = get_be32(p + 8);

    if (magic != MOLT_CHAN_MAGIC || version != MOLT_CHAN_VERSION || reserved != 0 || !msg_type_known(type))
        goto fail;
    if (length > MOLT_CHAN_MAX_BODY || length != len - MOLT_CHAN_HEADER_SIZE)
        goto fail;
    if (hdr_nfds > MOLT_CHAN_MAX_FDS || hdr_nfds != nfds)
        goto fail;
    if (!mp_check_body(p + MOLT_CHAN_HEADER_SIZE, length))
        goto fail;

    /*
     * msgpack_unpack_next leaves strings and binaries pointing into the bytes
     * it was given, and recv's buffer dies when recv returns: decode a private
     * copy and hand that copy to the body's zone, which frees it with the body.
     */
    copy = malloc(length);
    if (!copy) {
        err = -ENOMEM;
        goto fail;
    }
    memcpy(copy, p + MOLT_CHAN_HEADER_SIZE, length);
    if (msgpack_unpack_next(&msg->unpacked, copy, length, &off) != MSGPACK_UNPACK_SUCCESS)
        goto fail; /* well-formed but nested deeper than msgpack-c allows */
    if (off != length || msg->unpacked.data.type != MSGPACK_OBJECT_MAP)
        goto fail; /* mp_check_body said otherwise; never trust only one of them */
    if (!msgpack_zone_push_finalizer(msg->unpacked.zone, free, copy)) {
        err = -ENOMEM;
        goto fail;
    }
    copy = NULL;

    msg->type = type;
    msg->body = &msg->unpacked.data;
    for (size_t i = 0; i < nfds; i++) {
        msg->fds[i] = fds[i];
        fds[i] = -1;
    }
    msg->nfds = nfds;
    return 0;

fail:
    msgpack_unpacked_destroy(&msg->unpacked);
    free(copy);
    msg_reset(msg);
    close_fds(fds, nfds);
    return err;
}

/*
 * Only slots below nfds are closed: a zero-initialised msg has zeros in fds[]
 * and must not close stdin. Leaves *msg empty, so a second call is harmless.
 */
void molt_msg_free(molt_msg_t *msg)
{
    if (!msg)
        return;
    close_fds(msg->fds, msg->nfds < MOLT_CHAN_MAX_FDS ? msg->nfds : MOLT_CHAN_MAX_FDS);
    msgpack_unpacked_destroy(&msg->unpacked);
    msg_reset(msg);
}

const msgpack_object *molt_mp_map_get(const msgpack_object *map, const char *key)
{
    if (!map || !key || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        /* Keys are strings by contract; a bin or int key never matches. */
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            (klen == 0 || memcmp(k->via.str.ptr, key, klen) == 0))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

bool molt_mp_get_u64(const msgpack_object *map, const char *key, uint64_t *out)
{
    const msgpack_object *o = molt_mp_map_get(map, key);
    /* msgpack-c decodes every non-negative integer, however it was encoded,
     * as POSITIVE_INTEGER; anything else is not a u64. */
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = o->via.u64;
    return true;
}

/* Embedded NULs are copied too; the C string simply ends at the first one. */
bool molt_mp_get_str(const msgpack_object *map, const char *key, char *buf, size_t buflen)
{
    const msgpack_object *o = molt_mp_map_get(map, key);
    if (!o || o->type != MSGPACK_OBJECT_STR || !buf || buflen == 0)
        return false;
    size_t n = o->via.str.size < buflen - 1 ? o->via.str.size : buflen - 1;
    if (n > 0)
        memcpy(buf, o->via.str.ptr, n);
    buf[n] = '\0';
    return true;
}

const msgpack_object *molt_msg_get(const molt_msg_t *msg, const char *key)
{
    return msg ? molt_mp_map_get(msg->body, key) : NULL;
}

bool molt_msg_get_u64(const molt_msg_t *msg, const char *key, uint64_t *out)
{
    return msg ? molt_mp_get_u64(msg->body, key, out) : false;
}

bool molt_msg_get_bool(const molt_msg_t *msg, const char *key, bool *out)
{
    const msgpack_object *o = molt_msg_get(msg, key);
    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN)
        return false;
    *out = o->via.boolean;
    return true;
}

bool molt_msg_get_str(const molt_msg_t *msg, const char *key, char *buf, size_t buflen)
{
    return msg ? molt_mp_get_str(msg->body, key, buf, buflen) : false;
}

/* NULL packs as nil, so an optional field can be written unconditionally and
 * reads back as absent-as-a-string. */
void molt_body_init(molt_body_t *body)
{
    msgpack_sbuffer_init(&body->sb);
    msgpack_packer_init(&body->pk, &body->sb, msgpack_sbuffer_write);
}

void molt_body_free(molt_body_t *body)
{
    msgpack_sbuffer_destroy(&body->sb);
}

void molt_mp_pack_str(msgpack_packer *pk, const char *s)
{
    if (!s) {
        msgpack_pack_nil(pk);
        return;
    }
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void molt_mp_pack_kv_str(msgpack_packer *pk, const char *key, const char *value)
{
    molt_mp_pack_str(pk, key);
    molt_mp_pack_str(pk, value);
}

void molt_mp_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value)
{
    molt_mp_pack_str(pk, key);
    msgpack_pack_uint64(pk, value);
}

void molt_mp_pack_kv_bool(msgpack_packer *pk, const char *key, bool value)
{
    molt_mp_pack_str(pk, key);
    if (value)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}
