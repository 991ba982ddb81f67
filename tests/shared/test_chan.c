/*
 * Check suite for shared/chan.c: framing, descriptor passing, and every rule
 * a receiver enforces. Hostile datagrams are built by hand and sent with a
 * raw sendmsg, so a mistake made the same way in molt_chan_send and the
 * receiver cannot hide. Descriptor leaks are caught by counting /proc/self/fd
 * before and after, and by checking that a pipe has no reader left.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <check.h>
#include <msgpack.h>

#include "shared/chan.h"

/* --- helpers ------------------------------------------------------------- */

static int open_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static bool fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

/* True once every read end of the pipe whose write end is `wfd` is closed:
 * then poll reports POLLERR on the write end. */
static bool pipe_has_no_reader(int wfd)
{
    struct pollfd pfd = {.fd = wfd, .events = POLLOUT};
    ck_assert_int_eq(poll(&pfd, 1, 0), 1);
    return (pfd.revents & POLLERR) != 0;
}

static void make_pair(int sv[2])
{
    ck_assert_int_eq(molt_chan_pair(sv), 0);
}

static void close_pair(int sv[2])
{
    close(sv[0]);
    close(sv[1]);
}

static void set_bufs(int snd, int rcv, int size)
{
    ck_assert_int_eq(setsockopt(snd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)), 0);
    ck_assert_int_eq(setsockopt(rcv, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)), 0);
}

/* A header written byte by byte, big-endian, independently of chan.c. */
static void put_header(uint8_t *h, uint16_t magic, uint8_t version, uint8_t nfds, uint16_t type,
                       uint16_t reserved, uint32_t length)
{
    h[0] = (uint8_t)(magic >> 8);
    h[1] = (uint8_t)magic;
    h[2] = version;
    h[3] = nfds;
    h[4] = (uint8_t)(type >> 8);
    h[5] = (uint8_t)type;
    h[6] = (uint8_t)(reserved >> 8);
    h[7] = (uint8_t)reserved;
    h[8] = (uint8_t)(length >> 24);
    h[9] = (uint8_t)(length >> 16);
    h[10] = (uint8_t)(length >> 8);
    h[11] = (uint8_t)length;
}

/* Builds a well-formed header + body into out; returns the datagram length. */
static size_t build(uint8_t *out, uint8_t nfds, uint16_t type, const void *body, size_t blen)
{
    put_header(out, MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, nfds, type, 0, (uint32_t)blen);
    if (blen)
        memcpy(out + MOLT_CHAN_HEADER_SIZE, body, blen);
    return MOLT_CHAN_HEADER_SIZE + blen;
}

/* One datagram with any number of descriptors in one SCM_RIGHTS message. */
static void raw_send(int fd, const void *buf, size_t len, const int *fds, size_t nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * 64)];
        struct cmsghdr align;
    } ctrl;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

    ck_assert_uint_le(nfds, 64);
    memset(&ctrl, 0, sizeof(ctrl));
    if (nfds > 0) {
        mh.msg_control = ctrl.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    ck_assert_int_eq(sendmsg(fd, &mh, MSG_NOSIGNAL), (ssize_t)len);
}

/* Expects the receiver to refuse the next datagram and leave msg empty. */
static void expect_recv_refused(int fd)
{
    molt_msg_t msg;
    ck_assert_int_eq(molt_chan_recv(fd, &msg), -EBADMSG);
    ck_assert_ptr_null(msg.body);
    ck_assert_uint_eq(msg.nfds, 0);
    molt_msg_free(&msg); /* not needed after a failure, but must be harmless */
}

/* Sends a hand-built datagram without descriptors and expects a refusal. */
static void expect_refused(const void *buf, size_t len)
{
    int sv[2];
    make_pair(sv);
    raw_send(sv[0], buf, len, NULL, 0);
    expect_recv_refused(sv[1]);
    close_pair(sv);
}

static const molt_msg_type_t all_types[] = {
    MOLT_MSG_READY, MOLT_MSG_FAIL, MOLT_MSG_STATS, MOLT_MSG_DRAINED, MOLT_MSG_LOADING, MOLT_MSG_STOP,
    MOLT_MSG_SIBLING_SEND, MOLT_MSG_SIBLING, MOLT_MSG_SIBLING_ACK, MOLT_MSG_SIBLING_STATUS,
};

/* --- round trips ---------------------------------------------------------- */

START_TEST(test_pair)
{
    int sv[2], type;
    socklen_t len = sizeof(type);

    make_pair(sv);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(getsockopt(sv[i], SOL_SOCKET, SO_TYPE, &type, &len), 0);
        ck_assert_int_eq(type, SOCK_SEQPACKET);
        ck_assert(fcntl(sv[i], F_GETFD) & FD_CLOEXEC);
    }
    close_pair(sv);
}
END_TEST

START_TEST(test_roundtrip_each_type)
{
    molt_msg_type_t type = all_types[_i];
    int sv[2];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    molt_msg_t msg;
    char s[64];
    uint64_t u = 0;
    bool b = false;

    make_pair(sv);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    molt_mp_pack_kv_str(&pk, "name", molt_msg_type_name(type));
    molt_mp_pack_kv_u64(&pk, "n", 1000000000000ull + type);
    molt_mp_pack_kv_bool(&pk, "flag", type % 2 == 1);
    molt_mp_pack_kv_u64(&pk, "big", UINT64_MAX);

    ck_assert_int_eq(molt_chan_send(sv[0], type, &sb, NULL, 0), 0);
    msgpack_sbuffer_destroy(&sb);
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), 0);
    ck_assert_uint_eq(msg.type, type);
    ck_assert_uint_eq(msg.nfds, 0);
    ck_assert_ptr_nonnull(msg.body);
    ck_assert_int_eq(msg.body->type, MSGPACK_OBJECT_MAP);
    ck_assert_uint_eq(msg.body->via.map.size, 4);
    ck_assert(molt_msg_get_str(&msg, "name", s, sizeof(s)));
    ck_assert_str_eq(s, molt_msg_type_name(type));
    ck_assert(molt_msg_get_u64(&msg, "n", &u));
    ck_assert_uint_eq(u, 1000000000000ull + type);
    ck_assert(molt_msg_get_u64(&msg, "big", &u));
    ck_assert(u == UINT64_MAX);
    ck_assert(molt_msg_get_bool(&msg, "flag", &b));
    ck_assert(b == (type % 2 == 1));
    molt_msg_free(&msg);
    close_pair(sv);
}
END_TEST

/* The bytes on the wire, checked by hand, so that a symmetric mistake in the
 * header (byte order, field order) cannot pass the round trip. */
START_TEST(test_wire_format)
{
    int sv[2], p[2];
    uint8_t buf[256];
    msgpack_sbuffer sb;
    msgpack_packer pk;

    make_pair(sv);
    ck_assert_int_eq(pipe(p), 0);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    molt_mp_pack_kv_bool(&pk, "graceful", true);
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_STOP, &sb, &p[0], 1), 0);

    ssize_t n = recv(sv[1], buf, sizeof(buf), 0); /* the descriptor is dropped by the kernel */
    ck_assert_int_eq(n, MOLT_CHAN_HEADER_SIZE + (ssize_t)sb.size);
    const uint8_t want[MOLT_CHAN_HEADER_SIZE] = {0x4D, 0x4C, 1, 1, 0, 16, 0, 0, 0, 0, 0, (uint8_t)sb.size};
    ck_assert_mem_eq(buf, want, sizeof(want));
    ck_assert_mem_eq(buf + MOLT_CHAN_HEADER_SIZE, sb.data, sb.size);
    ck_assert_uint_eq(buf[MOLT_CHAN_HEADER_SIZE], 0x81); /* fixmap of one pair */

    /* The empty body goes out as an empty map, one byte. */
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_READY, NULL, NULL, 0), 0);
    n = recv(sv[1], buf, sizeof(buf), 0);
    const uint8_t want_empty[] = {0x4D, 0x4C, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0x80};
    ck_assert_int_eq(n, sizeof(want_empty));
    ck_assert_mem_eq(buf, want_empty, sizeof(want_empty));
    msgpack_sbuffer_destroy(&sb);
    close_pair(sv);
}
END_TEST

/* A hand-built datagram is accepted: the raw helpers the refusal tests use
 * make good messages when told to, so each refusal is for its stated reason. */
START_TEST(test_raw_valid_accepted)
{
    int sv[2], p[2];
    uint8_t dg[64];
    const uint8_t body[] = {0x81, 0xa1, 'k', 0x07}; /* {"k": 7} */
    molt_msg_t msg;
    uint64_t u = 0;

    make_pair(sv);
    ck_assert_int_eq(pipe(p), 0);
    size_t len = build(dg, 1, MOLT_MSG_STATS, body, sizeof(body));
    raw_send(sv[0], dg, len, &p[0], 1);
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), 0);
    ck_assert_uint_eq(msg.type, MOLT_MSG_STATS);
    ck_assert_uint_eq(msg.nfds, 1);
    ck_assert(molt_msg_get_u64(&msg, "k", &u));
    ck_assert_uint_eq(u, 7);
    molt_msg_free(&msg);
    close_pair(sv);
}
END_TEST

START_TEST(test_nested_ready)
{
    int sv[2];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    molt_msg_t msg;
    char s[64];

    make_pair(sv);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    molt_mp_pack_str(&pk, "plugins");
    msgpack_pack_array(&pk, 2);
    for (int i = 0; i < 2; i++) {
        msgpack_pack_map(&pk, 4);
        molt_mp_pack_kv_str(&pk, "name", i ? "second" : "first");
        molt_mp_pack_kv_str(&pk, "plugin", "hello");
        molt_mp_pack_kv_str(&pk, "version", "1.2.3");
        molt_mp_pack_kv_str(&pk, "file", "/usr/lib/molt/plugins/hello.so");
    }
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_READY, &sb, NULL, 0), 0);
    msgpack_sbuffer_destroy(&sb);
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), 0);

    const msgpack_object *plugins = molt_msg_get(&msg, "plugins");
    ck_assert_ptr_nonnull(plugins);
    ck_assert_int_eq(plugins->type, MSGPACK_OBJECT_ARRAY);
    ck_assert_uint_eq(plugins->via.array.size, 2);
    ck_assert(molt_mp_get_str(&plugins->via.array.ptr[1], "name", s, sizeof(s)));
    ck_assert_str_eq(s, "second");
    ck_assert(molt_mp_get_str(&plugins->via.array.ptr[0], "file", s, sizeof(s)));
    ck_assert_str_eq(s, "/usr/lib/molt/plugins/hello.so");
    molt_msg_free(&msg);
    close_pair(sv);
}
END_TEST

START_TEST(test_empty_body)
{
    int sv[2];
    molt_msg_t msg;
    msgpack_sbuffer sb;

    make_pair(sv);
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_DRAINED, NULL, NULL, 0), 0);
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), 0);
    ck_assert_uint_eq(msg.type, MOLT_MSG_DRAINED);
    ck_assert_ptr_nonnull(msg.body);
    ck_assert_int_eq(msg.body->type, MSGPACK_OBJECT_MAP);
    ck_assert_uint_eq(msg.body->via.map.size, 0);
    ck_assert_ptr_null(molt_msg_get(&msg, "anything"));
    molt_msg_free(&msg);

    /* An initialised but empty sbuffer means the same. */
    msgpack_sbuffer_init(&sb);
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_STOP, &sb, NULL, 0), 0);
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), 0);
    ck_assert_uint_eq(msg.type, MOLT_MSG_STOP);
    ck_assert_int_eq(msg.body->type, MSGPACK_OBJECT_MAP);
    ck_assert_uint_eq(msg.body->via.map.size, 0);
    molt_msg_free(&msg);
    close_pair(sv);
}
END_TEST

/* Packs {"s": <str of n bytes>} so that the body is exactly `size` bytes
 * (size >= 262); returns n. */
static size_t sb_body_of_size(msgpack_sbuffer *sb, size_t size)
{
    msgpack_packer pk;
    /* fixmap 1 + fixstr "s" 2 + a str16 (3) or str32 (5) header */
    size_t n = size - 6 <= 0xffff ? size - 6 : size - 8;
    char *big = malloc(n);
    ck_assert_ptr_nonnull(big);
    memset(big, 'x', n);
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    molt_mp_pack_str(&pk, "s");
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, big, n);
    free(big);
    ck_assert_uint_eq(sb->size, size);
    return n;
}

/* A body of exactly MOLT_CHAN_MAX_BODY is the largest there is; one byte more
 * is refused before anything is sent. */
START_TEST(test_max_body)
{
    int sv[2];
    msgpack_sbuffer sb;
    molt_msg_t msg;

    make_pair(sv);
    set_bufs(sv[0], sv[1], 1 << 20);
    size_t n = sb_body_of_size(&sb, MOLT_CHAN_MAX_BODY);
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_FAIL, &sb, NULL, 0), 0);
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), 0);
    const msgpack_object *o = molt_msg_get(&msg, "s");
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(o->type, MSGPACK_OBJECT_STR);
    ck_assert_uint_eq(o->via.str.size, n);
    ck_assert_mem_eq(o->via.str.ptr, sb.data + sb.size - n, n);
    molt_msg_free(&msg);
    msgpack_sbuffer_destroy(&sb);

    sb_body_of_size(&sb, MOLT_CHAN_MAX_BODY + 1);
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_FAIL, &sb, NULL, 0), -EMSGSIZE);
    msgpack_sbuffer_destroy(&sb);

    /* Nothing went out. */
    char c;
    ck_assert_int_eq(recv(sv[1], &c, 1, MSG_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
    close_pair(sv);
}
END_TEST

/* --- descriptor passing ---------------------------------------------------- */

START_TEST(test_fd_passing)
{
    int sv[2], p[2];
    molt_msg_t msg;
    char buf[16];

    make_pair(sv);
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_READY, NULL, &p[0], 1), 0);
    ck_assert(fd_is_open(p[0])); /* send does not take the caller's descriptor */
    close(p[0]);

    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), 0);
    ck_assert_uint_eq(msg.nfds, 1);
    int rfd = msg.fds[0];
    ck_assert_int_ge(rfd, 0);
    for (size_t i = 1; i < MOLT_CHAN_MAX_FDS; i++)
        ck_assert_int_eq(msg.fds[i], -1);
    ck_assert(fcntl(rfd, F_GETFD) & FD_CLOEXEC); /* MSG_CMSG_CLOEXEC */
    ck_assert_int_eq(write(p[1], "ping", 4), 4);
    ck_assert_int_eq(read(rfd, buf, sizeof(buf)), 4);
    ck_assert_mem_eq(buf, "ping", 4);

    /* molt_msg_free closes what the msg still holds, once. */
    molt_msg_free(&msg);
    ck_assert(!fd_is_open(rfd));
    ck_assert(pipe_has_no_reader(p[1]));
    molt_msg_free(&msg);
    close(p[1]);
    close_pair(sv);
}
END_TEST

START_TEST(test_fd_passing_max)
{
    int sv[2], p[MOLT_CHAN_MAX_FDS][2], rfds[MOLT_CHAN_MAX_FDS];
    molt_msg_t msg;

    make_pair(sv);
    for (int i = 0; i < MOLT_CHAN_MAX_FDS; i++) {
        ck_assert_int_eq(pipe(p[i]), 0);
        rfds[i] = p[i][0];
    }
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_STATS, NULL, rfds, MOLT_CHAN_MAX_FDS), 0);
    for (int i = 0; i < MOLT_CHAN_MAX_FDS; i++)
        close(p[i][0]);
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), 0);
    ck_assert_uint_eq(msg.nfds, MOLT_CHAN_MAX_FDS);
    /* Order is kept: slot i reads what pipe i was written. */
    for (int i = 0; i < MOLT_CHAN_MAX_FDS; i++) {
        char c = (char)('a' + i), got = 0;
        ck_assert_int_eq(write(p[i][1], &c, 1), 1);
        ck_assert_int_eq(read(msg.fds[i], &got, 1), 1);
        ck_assert_int_eq(got, c);
    }
    molt_msg_free(&msg);
    for (int i = 0; i < MOLT_CHAN_MAX_FDS; i++) {
        ck_assert(pipe_has_no_reader(p[i][1]));
        close(p[i][1]);
    }
    close_pair(sv);
}
END_TEST

/* A taker sets its slot to -1; molt_msg_free then leaves that one alone. */
START_TEST(test_fd_taken)
{
    int sv[2], p[2];
    molt_msg_t msg;

    make_pair(sv);
    ck_assert_int_eq(pipe(p), 0);
    int two[2] = {p[0], p[1]};
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_STOP, NULL, two, 2), 0);
    close(p[0]);
    close(p[1]);
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), 0);
    ck_assert_uint_eq(msg.nfds, 2);
    int taken = msg.fds[1];
    int left = msg.fds[0];
    msg.fds[1] = -1;
    molt_msg_free(&msg);
    ck_assert(fd_is_open(taken));
    ck_assert(!fd_is_open(left));
    close(taken);
    close_pair(sv);
}
END_TEST

/* Header says one descriptor, none came. */
START_TEST(test_nfds_missing)
{
    int sv[2];
    uint8_t dg[32];

    make_pair(sv);
    raw_send(sv[0], dg, build(dg, 1, MOLT_MSG_READY, "\x80", 1), NULL, 0);
    expect_recv_refused(sv[1]);
    close_pair(sv);
}
END_TEST

/* Header says none (or fewer), one (or more) came: refused, and what came is
 * closed in the receiver. */
START_TEST(test_nfds_extra)
{
    static const struct {
        uint8_t hdr_nfds;
        size_t sent;
    } cases[] = {{0, 1}, {1, 2}, {2, 1}, {3, 8}};
    int sv[2], p[8][2], rfds[8];
    uint8_t dg[32];

    make_pair(sv);
    size_t sent = cases[_i].sent;
    for (size_t i = 0; i < sent; i++) {
        ck_assert_int_eq(pipe(p[i]), 0);
        rfds[i] = p[i][0];
    }
    raw_send(sv[0], dg, build(dg, cases[_i].hdr_nfds, MOLT_MSG_READY, "\x80", 1), rfds, sent);
    for (size_t i = 0; i < sent; i++)
        close(p[i][0]); /* the only read ends left are the ones in flight */

    int before = open_fd_count();
    expect_recv_refused(sv[1]);
    ck_assert_int_eq(open_fd_count(), before);
    for (size_t i = 0; i < sent; i++) {
        ck_assert(pipe_has_no_reader(p[i][1]));
        close(p[i][1]);
    }
    close_pair(sv);
}
END_TEST

/* More descriptors than the channel allows: MAX+1 (within the receiver's
 * slack, all received then closed), and far more (past the control buffer:
 * MSG_CTRUNC, the kernel drops the rest). Nothing may stay open. */
START_TEST(test_too_many_fds)
{
    static const size_t counts[] = {MOLT_CHAN_MAX_FDS + 1, MOLT_CHAN_MAX_FDS + 8, 40};
    size_t n = counts[_i];
    int sv[2], p[2], fds[64];
    uint8_t dg[32];

    make_pair(sv);
    ck_assert_int_eq(pipe(p), 0);
    for (size_t i = 0; i < n; i++) {
        fds[i] = dup(p[0]);
        ck_assert_int_ge(fds[i], 0);
    }
    raw_send(sv[0], dg, build(dg, (uint8_t)n, MOLT_MSG_READY, "\x80", 1), fds, n);
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
    close(p[0]);

    int before = open_fd_count();
    expect_recv_refused(sv[1]);
    ck_assert_int_eq(open_fd_count(), before);
    ck_assert(pipe_has_no_reader(p[1]));

    /* The channel is still in step: the next message is fine. */
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_STOP, NULL, NULL, 0), 0);
    molt_msg_t msg;
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), 0);
    ck_assert_uint_eq(msg.type, MOLT_MSG_STOP);
    molt_msg_free(&msg);
    close(p[1]);
    close_pair(sv);
}
END_TEST

/* SCM_CREDENTIALS next to SCM_RIGHTS: only SCM_RIGHTS is accepted, and the
 * descriptor that came along is closed. */
START_TEST(test_credentials_refused)
{
    int sv[2], p[2], on = 1;
    uint8_t dg[32];
    union {
        char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctrl;
    struct ucred cred = {.pid = getpid(), .uid = getuid(), .gid = getgid()};

    make_pair(sv);
    ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)), 0);
    ck_assert_int_eq(pipe(p), 0);

    size_t len = build(dg, 1, MOLT_MSG_READY, "\x80", 1);
    struct iovec iov = {.iov_base = dg, .iov_len = len};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl.buf, .msg_controllen = sizeof(ctrl.buf)};
    memset(&ctrl, 0, sizeof(ctrl));
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_CREDENTIALS;
    cm->cmsg_len = CMSG_LEN(sizeof(cred));
    memcpy(CMSG_DATA(cm), &cred, sizeof(cred));
    cm = CMSG_NXTHDR(&mh, cm);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &p[0], sizeof(int));
    ck_assert_int_eq(sendmsg(sv[0], &mh, MSG_NOSIGNAL), (ssize_t)len);
    close(p[0]);

    int before = open_fd_count();
    expect_recv_refused(sv[1]);
    ck_assert_int_eq(open_fd_count(), before);
    ck_assert(pipe_has_no_reader(p[1]));

    /* With SO_PASSCRED on, the kernel attaches credentials to every message,
     * even an honest one: the receiver refuses those too. */
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_STOP, NULL, NULL, 0), 0);
    expect_recv_refused(sv[1]);
    close(p[1]);
    close_pair(sv);
}
END_TEST

/* --- malformed datagrams over the socket ----------------------------------- */

START_TEST(test_short_datagram)
{
    uint8_t dg[32];
    build(dg, 0, MOLT_MSG_READY, "\x80", 1);
    expect_refused(dg, 1);
    expect_refused(dg, 5);
    expect_refused(dg, MOLT_CHAN_HEADER_SIZE - 1);
    expect_refused(dg, MOLT_CHAN_HEADER_SIZE); /* header says one body byte */
}
END_TEST

START_TEST(test_length_mismatch)
{
    uint8_t dg[64];
    const uint8_t body[] = {0x81, 0xa1, 'a', 0x01};

    /* Header claims more than came. */
    build(dg, 0, MOLT_MSG_STATS, body, sizeof(body));
    put_header(dg, MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, 0, MOLT_MSG_STATS, 0, 100);
    expect_refused(dg, MOLT_CHAN_HEADER_SIZE + sizeof(body));
    /* Header claims less than came (the rest would be a hidden second body). */
    put_header(dg, MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, 0, MOLT_MSG_STATS, 0, 1);
    dg[MOLT_CHAN_HEADER_SIZE] = 0x80;
    expect_refused(dg, MOLT_CHAN_HEADER_SIZE + sizeof(body));
}
END_TEST

/* Datagrams larger than the biggest message. The socket buffers are raised so
 * the kernel takes them; the receiver must refuse them and stay in step. */
START_TEST(test_oversized_datagram)
{
    static const size_t bodies[] = {MOLT_CHAN_MAX_BODY + 1, MOLT_CHAN_MAX_BODY + 100, 150000};
    size_t blen = bodies[_i];
    int sv[2];
    msgpack_sbuffer sb;
    molt_msg_t msg;

    make_pair(sv);
    set_bufs(sv[0], sv[1], 1 << 20);
    sb_body_of_size(&sb, blen); /* a valid map: only its size is wrong */
    uint8_t *dg = malloc(MOLT_CHAN_HEADER_SIZE + blen);
    ck_assert_ptr_nonnull(dg);
    size_t len = build(dg, 0, MOLT_MSG_READY, sb.data, blen);
    raw_send(sv[0], dg, len, NULL, 0);
    expect_recv_refused(sv[1]);

    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_DRAINED, NULL, NULL, 0), 0);
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), 0);
    ck_assert_uint_eq(msg.type, MOLT_MSG_DRAINED);
    molt_msg_free(&msg);
    free(dg);
    msgpack_sbuffer_destroy(&sb);
    close_pair(sv);
}
END_TEST

START_TEST(test_bad_header_over_socket)
{
    uint8_t dg[32];
    size_t len;

    len = build(dg, 0, MOLT_MSG_READY, "\x80", 1);
    dg[0] = 'X';
    expect_refused(dg, len);
    len = build(dg, 0, MOLT_MSG_READY, "\x80", 1);
    dg[2] = MOLT_CHAN_VERSION + 1;
    expect_refused(dg, len);
    len = build(dg, 0, 8, "\x80", 1);
    expect_refused(dg, len);
    len = build(dg, 0, MOLT_MSG_READY, "\x80", 1);
    dg[7] = 1;
    expect_refused(dg, len);
    len = build(dg, 0, MOLT_MSG_READY, "\x90", 1);
    expect_refused(dg, len);
}
END_TEST

/* --- decode rules, one by one, with a descriptor to close -------------------- */

struct bad_case {
    const char *what;
    uint16_t magic;
    uint8_t version;
    int hdr_nfds; /* -1: the one descriptor passed */
    uint16_t type;
    uint16_t reserved;
    int64_t length; /* -1: the body's real length */
    const char *body;
    size_t blen;
};

#define B(s) s, sizeof(s) - 1
#define OK_HDR MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, -1, MOLT_MSG_READY, 0, -1

static const struct bad_case bad_cases[] = {
    {"bad magic", 0x4D4D, MOLT_CHAN_VERSION, -1, MOLT_MSG_READY, 0, -1, B("\x80")},
    {"magic byte-swapped", 0x4C4D, MOLT_CHAN_VERSION, -1, MOLT_MSG_READY, 0, -1, B("\x80")},
    {"version 0", MOLT_CHAN_MAGIC, 0, -1, MOLT_MSG_READY, 0, -1, B("\x80")},
    {"version 2", MOLT_CHAN_MAGIC, 2, -1, MOLT_MSG_READY, 0, -1, B("\x80")},
    {"type 0", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, -1, 0, 0, -1, B("\x80")},
    {"type 8 (gap)", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, -1, 8, 0, -1, B("\x80")},
    {"type 15 (gap)", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, -1, 15, 0, -1, B("\x80")},
    {"type 29 (gap)", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, -1, 29, 0, -1, B("\x80")},
    {"type COUNT", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, -1, MOLT_MSG_TYPE_COUNT, 0, -1, B("\x80")},
    {"type READY byte-swapped", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, -1, 0x0100, 0, -1, B("\x80")},
    {"type 0xffff", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, -1, 0xffff, 0, -1, B("\x80")},
    {"reserved 1", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, -1, MOLT_MSG_READY, 1, -1, B("\x80")},
    {"reserved 0x8000", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, -1, MOLT_MSG_READY, 0x8000, -1, B("\x80")},
    {"header nfds 0", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, 0, MOLT_MSG_READY, 0, -1, B("\x80")},
    {"header nfds 2", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, 2, MOLT_MSG_READY, 0, -1, B("\x80")},
    {"header nfds 255", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, 255, MOLT_MSG_READY, 0, -1, B("\x80")},
    {"length longer", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, -1, MOLT_MSG_READY, 0, 2, B("\x80")},
    {"length shorter", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, -1, MOLT_MSG_READY, 0, 1, B("\x80\xc0")},
    {"length huge", MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, -1, MOLT_MSG_READY, 0, 0xffffffff, B("\x80")},
    {"empty body", OK_HDR, B("")},
    {"body array", OK_HDR, B("\x90")},
    {"body int", OK_HDR, B("\x01")},
    {"body str", OK_HDR, B("\xa1x")},
    {"body nil", OK_HDR, B("\xc0")},
    {"map then trailing byte", OK_HDR, B("\x80\xc0")},
    {"two maps", OK_HDR, B("\x80\x80")},
    {"map missing a pair", OK_HDR, B("\x82\xa1\x61\x01")},
    {"map missing a value", OK_HDR, B("\x81\xa1\x61")},
    {"str cut short", OK_HDR, B("\x81\xa5\x61\x62")},
    {"uint64 cut short", OK_HDR, B("\x81\xa1\x61\xcf\x01\x02")},
    {"never-used byte 0xc1", OK_HDR, B("\x81\xa1\x61\xc1")},
    {"map32 of 2^32-1", OK_HDR, B("\xdf\xff\xff\xff\xff")},
    {"array32 of 2^32-1 in map", OK_HDR, B("\x81\xa1\x61\xdd\xff\xff\xff\xff")},
    {"map16 of 65535 in map", OK_HDR, B("\x81\xa1\x61\xde\xff\xff\x01\x02")},
    {"str32 of 2^32-1", OK_HDR, B("\x81\xa1\x61\xdb\xff\xff\xff\xff")},
    {"ext32 of 2^32-1", OK_HDR, B("\x81\xa1\x61\xc9\xff\xff\xff\xff\x01")},
};

/* Forty nested arrays inside the map: well-formed, deeper than msgpack-c's
 * stack of 32, so the unpacker itself refuses it. */
static size_t deep_body(uint8_t *out)
{
    size_t n = 0;
    out[n++] = 0x81;
    out[n++] = 0xa1;
    out[n++] = 'a';
    for (int i = 0; i < 40; i++)
        out[n++] = 0x91;
    out[n++] = 0xc0;
    return n;
}

/* Decodes hdr+body with one descriptor; expects -EBADMSG, the descriptor
 * closed, the caller's slot cleared and nothing left in msg. */
static void expect_decode_refused(const char *what, const uint8_t *dg, size_t len)
{
    int p[2], fds[1];
    molt_msg_t msg;

    ck_assert_int_eq(pipe(p), 0);
    fds[0] = p[0];
    memset(&msg, 0xa5, sizeof(msg)); /* recv/decode initialise it themselves */
    int rc = molt_chan_decode(dg, len, fds, 1, &msg);
    ck_assert_msg(rc == -EBADMSG, "%s: decode returned %d", what, rc);
    ck_assert(!fd_is_open(p[0]));
    ck_assert_int_eq(fds[0], -1);
    ck_assert_ptr_null(msg.body);
    ck_assert_uint_eq(msg.nfds, 0);
    ck_assert_ptr_null(msg.unpacked.zone);
    molt_msg_free(&msg);
    close(p[1]);
}

START_TEST(test_decode_refuses)
{
    const struct bad_case *c = &bad_cases[_i];
    uint8_t dg[128];
    uint8_t nfds = c->hdr_nfds < 0 ? 1 : (uint8_t)c->hdr_nfds;
    uint32_t length = c->length < 0 ? (uint32_t)c->blen : (uint32_t)c->length;

    put_header(dg, c->magic, c->version, nfds, c->type, c->reserved, length);
    memcpy(dg + MOLT_CHAN_HEADER_SIZE, c->body, c->blen);
    expect_decode_refused(c->what, dg, MOLT_CHAN_HEADER_SIZE + c->blen);
}
END_TEST

START_TEST(test_decode_refuses_deep)
{
    uint8_t body[64], dg[128];
    size_t blen = deep_body(body);
    size_t len = build(dg, 1, MOLT_MSG_READY, body, blen);
    expect_decode_refused("40 nested arrays", dg, len);

    /* The same nesting, shallow enough, is accepted. */
    blen = 0;
    body[blen++] = 0x81;
    body[blen++] = 0xa1;
    body[blen++] = 'a';
    for (int i = 0; i < 20; i++)
        body[blen++] = 0x91;
    body[blen++] = 0xc0;
    len = build(dg, 0, MOLT_MSG_READY, body, blen);
    molt_msg_t msg;
    ck_assert_int_eq(molt_chan_decode(dg, len, NULL, 0, &msg), 0);
    molt_msg_free(&msg);
}
END_TEST

START_TEST(test_decode_short_and_null)
{
    uint8_t dg[32];
    size_t len = build(dg, 1, MOLT_MSG_READY, "\x80", 1);
    for (size_t cut = 0; cut < len; cut++)
        expect_decode_refused("cut short", dg, cut);
    expect_decode_refused("NULL buffer", NULL, 0);
}
END_TEST

/* More descriptors than a msg has slots, announced honestly by the header:
 * refused, all closed, and nothing written past msg->fds. */
START_TEST(test_decode_too_many_fds)
{
    int p[2], fds[MOLT_CHAN_MAX_FDS + 1];
    uint8_t dg[32];
    molt_msg_t msg;

    ck_assert_int_eq(pipe(p), 0);
    for (int i = 0; i <= MOLT_CHAN_MAX_FDS; i++) {
        fds[i] = dup(p[0]);
        ck_assert_int_ge(fds[i], 0);
    }
    close(p[0]);
    size_t len = build(dg, MOLT_CHAN_MAX_FDS + 1, MOLT_MSG_READY, "\x80", 1);
    ck_assert_int_eq(molt_chan_decode(dg, len, fds, MOLT_CHAN_MAX_FDS + 1, &msg), -EBADMSG);
    for (int i = 0; i <= MOLT_CHAN_MAX_FDS; i++)
        ck_assert_int_eq(fds[i], -1);
    ck_assert(pipe_has_no_reader(p[1]));
    ck_assert_uint_eq(msg.nfds, 0);
    close(p[1]);
}
END_TEST

/* On success the descriptors move into msg and the caller's slots are
 * cleared; the body does not point into the caller's buffer. */
START_TEST(test_decode_owns)
{
    int p[2], fds[1];
    uint8_t *dg = malloc(64);
    const uint8_t body[] = {0x82, 0xa4, 'n',  'a', 'm', 'e', 0xa5, 'h',  'e',  'l',
                            'l',  'o',  0xa3, 'b', 'i', 'n', 0xc4, 0x02, 0xde, 0xad};
    molt_msg_t msg;
    char s[16];

    ck_assert_ptr_nonnull(dg);
    ck_assert_int_eq(pipe(p), 0);
    fds[0] = p[0];
    size_t len = build(dg, 1, MOLT_MSG_FAIL, body, sizeof(body));
    ck_assert_int_eq(molt_chan_decode(dg, len, fds, 1, &msg), 0);
    ck_assert_int_eq(fds[0], -1);
    ck_assert_int_eq(msg.fds[0], p[0]);
    ck_assert_uint_eq(msg.nfds, 1);
    memset(dg, 0xee, len);
    free(dg); /* ASan flags any later read through the body */

    ck_assert(molt_msg_get_str(&msg, "name", s, sizeof(s)));
    ck_assert_str_eq(s, "hello");
    const msgpack_object *bin = molt_msg_get(&msg, "bin");
    ck_assert_ptr_nonnull(bin);
    ck_assert_int_eq(bin->type, MSGPACK_OBJECT_BIN);
    ck_assert_uint_eq(bin->via.bin.size, 2);
    ck_assert_mem_eq(bin->via.bin.ptr, "\xde\xad", 2);
    molt_msg_free(&msg);
    ck_assert(!fd_is_open(p[0]));
    close(p[1]);
}
END_TEST

/* --- errors at the socket -------------------------------------------------- */

START_TEST(test_eof)
{
    int sv[2];
    molt_msg_t msg;

    make_pair(sv);
    /* A message sent before the close is still delivered, then EOF. */
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_DRAINED, NULL, NULL, 0), 0);
    close(sv[0]);
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), 0);
    ck_assert_uint_eq(msg.type, MOLT_MSG_DRAINED);
    molt_msg_free(&msg);
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), -EPIPE);
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), -EPIPE);
    close(sv[1]);
}
END_TEST

START_TEST(test_recv_eagain)
{
    int sv[2];
    molt_msg_t msg;

    make_pair(sv);
    ck_assert_int_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    ck_assert_int_eq(molt_chan_recv(sv[1], &msg), -EAGAIN);
    molt_msg_free(&msg);
    close_pair(sv);
}
END_TEST

START_TEST(test_send_eagain)
{
    int sv[2];
    msgpack_sbuffer sb;
    int rc = 0;

    make_pair(sv);
    ck_assert_int_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    sb_body_of_size(&sb, 4096);
    for (int i = 0; i < 100000 && rc == 0; i++)
        rc = molt_chan_send(sv[0], MOLT_MSG_STATS, &sb, NULL, 0);
    ck_assert_int_eq(rc, -EAGAIN);
    msgpack_sbuffer_destroy(&sb);
    close_pair(sv);
}
END_TEST

/* The peer is gone: -EPIPE, and no SIGPIPE (which would kill this case).
 * Linux does not raise SIGPIPE for AF_UNIX SEQPACKET today, so this guards
 * MSG_NOSIGNAL only where a kernel does; the -EPIPE mapping is checked always. */
START_TEST(test_send_epipe)
{
    int sv[2];

    /* Whoever started us may have left SIGPIPE ignored; make it deadly again. */
    signal(SIGPIPE, SIG_DFL);
    make_pair(sv);
    close(sv[1]);
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_STOP, NULL, NULL, 0), -EPIPE);
    close(sv[0]);
}
END_TEST

START_TEST(test_send_refuses)
{
    int sv[2], p[2], fds[MOLT_CHAN_MAX_FDS + 1];
    msgpack_sbuffer sb;
    char c;

    make_pair(sv);
    ck_assert_int_eq(pipe(p), 0);
    for (int i = 0; i <= MOLT_CHAN_MAX_FDS; i++)
        fds[i] = p[0];
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_READY, NULL, fds, MOLT_CHAN_MAX_FDS + 1), -EMSGSIZE);
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_READY, NULL, NULL, 1), -EINVAL);
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_NONE, NULL, NULL, 0), -EINVAL);
    ck_assert_int_eq(molt_chan_send(sv[0], (molt_msg_type_t)8, NULL, NULL, 0), -EINVAL);
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_TYPE_COUNT, NULL, NULL, 0), -EINVAL);

    /* Bodies the receiver would refuse are caught at the sender. */
    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_write(&sb, "\x90", 1);
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_READY, &sb, NULL, 0), -EINVAL);
    msgpack_sbuffer_write(&sb, "\x80", 1);
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_READY, &sb, NULL, 0), -EINVAL);
    msgpack_sbuffer_clear(&sb);
    msgpack_sbuffer_write(&sb, "\x81\xa1\x61", 3);
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_READY, &sb, NULL, 0), -EINVAL);
    msgpack_sbuffer_destroy(&sb);

    /* A bad descriptor is the kernel's to refuse. */
    fds[0] = -1;
    ck_assert_int_eq(molt_chan_send(sv[0], MOLT_MSG_READY, NULL, fds, 1), -EBADF);

    /* None of the above sent anything. */
    ck_assert_int_eq(recv(sv[1], &c, 1, MSG_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
    close(p[0]);
    close(p[1]);
    close_pair(sv);
}
END_TEST

/* --- names, free, accessors ------------------------------------------------- */

START_TEST(test_type_names)
{
    ck_assert_str_eq(molt_msg_type_name(MOLT_MSG_READY), "READY");
    ck_assert_str_eq(molt_msg_type_name(MOLT_MSG_FAIL), "FAIL");
    ck_assert_str_eq(molt_msg_type_name(MOLT_MSG_STATS), "STATS");
    ck_assert_str_eq(molt_msg_type_name(MOLT_MSG_DRAINED), "DRAINED");
    ck_assert_str_eq(molt_msg_type_name(MOLT_MSG_STOP), "STOP");
    ck_assert_str_eq(molt_msg_type_name(MOLT_MSG_NONE), "?");
    ck_assert_str_eq(molt_msg_type_name(MOLT_MSG_LOADING), "LOADING");
    ck_assert_str_eq(molt_msg_type_name(MOLT_MSG_LOG_FD), "LOG_FD");
    ck_assert_str_eq(molt_msg_type_name(8), "?"); /* a gap in the numbering */
    ck_assert_str_eq(molt_msg_type_name(MOLT_MSG_TYPE_COUNT), "?");
    ck_assert_str_eq(molt_msg_type_name(0xffffffffu), "?");
}
END_TEST

START_TEST(test_msg_free_edges)
{
    molt_msg_t zero;

    molt_msg_free(NULL);
    /* A zero-initialised msg has 0 in every fds[] slot; fd 0 must survive. */
    if (!fd_is_open(0))
        ck_assert_int_eq(open("/dev/null", O_RDONLY), 0);
    memset(&zero, 0, sizeof(zero));
    molt_msg_free(&zero);
    molt_msg_free(&zero);
    ck_assert(fd_is_open(0));
}
END_TEST

/* Decodes a packed body (no descriptors) into msg. */
static void decode_sb(const msgpack_sbuffer *sb, molt_msg_t *msg)
{
    uint8_t *dg = malloc(MOLT_CHAN_HEADER_SIZE + sb->size);
    ck_assert_ptr_nonnull(dg);
    size_t len = build(dg, 0, MOLT_MSG_STATS, sb->data, sb->size);
    ck_assert_int_eq(molt_chan_decode(dg, len, NULL, 0, msg), 0);
    free(dg);
}

START_TEST(test_accessors)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    molt_msg_t msg, zero;
    uint64_t u;
    bool b;
    char s[16];

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 13);
    molt_mp_pack_kv_u64(&pk, "u", 5);
    molt_mp_pack_str(&pk, "neg");
    msgpack_pack_int64(&pk, -3);
    molt_mp_pack_str(&pk, "signed_pos"); /* int8 encoding of a positive value */
    msgpack_pack_fix_int8(&pk, 9);
    molt_mp_pack_str(&pk, "f");
    msgpack_pack_double(&pk, 1.5);
    molt_mp_pack_kv_str(&pk, "s", "hello");
    molt_mp_pack_kv_bool(&pk, "b", true);
    molt_mp_pack_kv_str(&pk, "nil", NULL);
    molt_mp_pack_kv_u64(&pk, "", 11);
    msgpack_pack_bin(&pk, 2); /* a bin key with the bytes "bk" */
    msgpack_pack_bin_body(&pk, "bk", 2);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_uint8(&pk, 7); /* an integer key */
    msgpack_pack_uint8(&pk, 2);
    molt_mp_pack_str(&pk, "nested");
    msgpack_pack_map(&pk, 1);
    molt_mp_pack_kv_u64(&pk, "x", 42);
    molt_mp_pack_kv_u64(&pk, "dup", 1);
    molt_mp_pack_kv_u64(&pk, "dup", 2);
    decode_sb(&sb, &msg);
    msgpack_sbuffer_destroy(&sb);

    /* presence, by exact string key */
    ck_assert_ptr_nonnull(molt_msg_get(&msg, "u"));
    ck_assert_ptr_null(molt_msg_get(&msg, "missing"));
    ck_assert_ptr_null(molt_msg_get(&msg, "nest"));
    ck_assert_ptr_null(molt_msg_get(&msg, "nestedx"));
    ck_assert_ptr_null(molt_msg_get(&msg, "U"));
    ck_assert_ptr_null(molt_msg_get(&msg, "bk"));
    ck_assert_ptr_null(molt_msg_get(&msg, "\x07"));
    ck_assert_ptr_null(molt_msg_get(&msg, NULL));
    ck_assert(molt_msg_get_u64(&msg, "", &u));
    ck_assert_uint_eq(u, 11);
    ck_assert(molt_msg_get_u64(&msg, "dup", &u));
    ck_assert_uint_eq(u, 1); /* the first of duplicate keys */

    /* u64: positive integers only; *out untouched otherwise */
    u = 0;
    ck_assert(molt_msg_get_u64(&msg, "u", &u));
    ck_assert_uint_eq(u, 5);
    ck_assert(molt_msg_get_u64(&msg, "signed_pos", &u));
    ck_assert_uint_eq(u, 9);
    u = 77;
    ck_assert(!molt_msg_get_u64(&msg, "neg", &u));
    ck_assert(!molt_msg_get_u64(&msg, "f", &u));
    ck_assert(!molt_msg_get_u64(&msg, "s", &u));
    ck_assert(!molt_msg_get_u64(&msg, "b", &u));
    ck_assert(!molt_msg_get_u64(&msg, "nil", &u));
    ck_assert(!molt_msg_get_u64(&msg, "missing", &u));
    ck_assert_uint_eq(u, 77);

    /* bool */
    b = false;
    ck_assert(molt_msg_get_bool(&msg, "b", &b));
    ck_assert(b);
    b = false;
    ck_assert(!molt_msg_get_bool(&msg, "u", &b));
    ck_assert(!molt_msg_get_bool(&msg, "missing", &b));
    ck_assert(!b);

    /* str: copies, truncates, always terminates */
    ck_assert(molt_msg_get_str(&msg, "s", s, sizeof(s)));
    ck_assert_str_eq(s, "hello");
    ck_assert(molt_msg_get_str(&msg, "s", s, 6));
    ck_assert_str_eq(s, "hello");
    ck_assert(molt_msg_get_str(&msg, "s", s, 5));
    ck_assert_str_eq(s, "hell");
    ck_assert(molt_msg_get_str(&msg, "s", s, 1));
    ck_assert_str_eq(s, "");
    strcpy(s, "zzz");
    ck_assert(!molt_msg_get_str(&msg, "s", s, 0));
    ck_assert(!molt_msg_get_str(&msg, "u", s, sizeof(s)));
    ck_assert(!molt_msg_get_str(&msg, "nil", s, sizeof(s)));
    ck_assert(!molt_msg_get_str(&msg, "missing", s, sizeof(s)));
    ck_assert_str_eq(s, "zzz");

    /* nested maps */
    const msgpack_object *nested = molt_msg_get(&msg, "nested");
    ck_assert_ptr_nonnull(nested);
    ck_assert(molt_mp_get_u64(nested, "x", &u));
    ck_assert_uint_eq(u, 42);
    ck_assert(!molt_mp_get_u64(nested, "u", &u));
    ck_assert_ptr_null(molt_mp_map_get(molt_msg_get(&msg, "u"), "x")); /* not a map */
    ck_assert_ptr_null(molt_mp_map_get(NULL, "x"));
    ck_assert(!molt_mp_get_str(NULL, "x", s, sizeof(s)));

    /* no body at all */
    memset(&zero, 0, sizeof(zero));
    ck_assert_ptr_null(molt_msg_get(&zero, "u"));
    ck_assert_ptr_null(molt_msg_get(NULL, "u"));
    ck_assert(!molt_msg_get_u64(&zero, "u", &u));
    ck_assert(!molt_msg_get_u64(NULL, "u", &u));
    ck_assert(!molt_msg_get_bool(NULL, "b", &b));
    ck_assert(!molt_msg_get_str(NULL, "s", s, sizeof(s)));
    molt_msg_free(&msg);
}
END_TEST

/* --- fuzz-ish ---------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng(void)
{
    /* xorshift64*: fixed seed, same sequence on every libc */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* Touches everything a decoded body holds, so ASan sees any bad pointer. */
static size_t walk(const msgpack_object *o, int depth)
{
    size_t sum = 0;
    ck_assert_int_lt(depth, 64);
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        for (uint32_t i = 0; i < o->via.str.size; i++)
            sum += (unsigned char)o->via.str.ptr[i];
        break;
    case MSGPACK_OBJECT_BIN:
        for (uint32_t i = 0; i < o->via.bin.size; i++)
            sum += (unsigned char)o->via.bin.ptr[i];
        break;
    case MSGPACK_OBJECT_EXT:
        for (uint32_t i = 0; i < o->via.ext.size; i++)
            sum += (unsigned char)o->via.ext.ptr[i];
        break;
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            sum += walk(&o->via.array.ptr[i], depth + 1);
        break;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            sum += walk(&o->via.map.ptr[i].key, depth + 1);
            sum += walk(&o->via.map.ptr[i].val, depth + 1);
        }
        break;
    default:
        sum++;
        break;
    }
    return sum;
}

START_TEST(test_decode_fuzz)
{
    static const uint8_t good_body[] = {
        0x84, 0xa4, 'n',  'a',  'm',  'e',  0xa5, 'h',  'e',  'l',  'l',  'o', 0xa1,
        'a',  0x93, 0x01, 0xcd, 0x01, 0x00, 0x81, 0xa1, 'x',  0xc3, 0xa1, 'b', 0xc4,
        0x02, 0xaa, 0xbb, 0xa1, 'e',  0xd6, 0x01, 0x01, 0x02, 0x03, 0x04,
    };
    uint8_t dg[MOLT_CHAN_HEADER_SIZE + 512];
    int ok = 0;

    rng_state = 0x6d6f6c74u; /* "molt" */
    int start = open_fd_count();
    for (int iter = 0; iter < 5000; iter++) {
        size_t len;
        int mode = (int)(rng() % 3);
        if (mode == 0) {
            /* anything at all */
            len = rng() % sizeof(dg);
            for (size_t i = 0; i < len; i++)
                dg[i] = (uint8_t)rng();
        } else if (mode == 1) {
            /* a good header in front of random bytes: reaches the body checks */
            size_t blen = rng() % 400;
            for (size_t i = 0; i < blen; i++)
                dg[MOLT_CHAN_HEADER_SIZE + i] = (uint8_t)rng();
            dg[MOLT_CHAN_HEADER_SIZE] = (uint8_t)(0x80 | (rng() % 16)); /* mostly a map */
            len = MOLT_CHAN_HEADER_SIZE + blen;
            put_header(dg, MOLT_CHAN_MAGIC, MOLT_CHAN_VERSION, 0, all_types[rng() % 5], 0, (uint32_t)blen);
        } else {
            /* a good message with a few bytes changed */
            len = build(dg, 0, all_types[rng() % 5], good_body, sizeof(good_body));
            int flips = 1 + (int)(rng() % 4);
            for (int f = 0; f < flips; f++)
                dg[MOLT_CHAN_HEADER_SIZE + rng() % sizeof(good_body)] = (uint8_t)rng();
            if (rng() % 8 == 0)
                len -= rng() % 8;
        }

        /* Every tenth round carries a descriptor the header may or may not
         * announce: it must end up either in msg or closed. */
        int fds[1] = {-1};
        size_t nfds = 0;
        if (iter % 10 == 0) {
            fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
            ck_assert_int_ge(fds[0], 0);
            nfds = 1;
            if (len >= 4 && rng() % 2)
                dg[3] = 1;
        }
        molt_msg_t msg;
        int rc = molt_chan_decode(dg, len, fds, nfds, &msg);
        ck_assert(rc == 0 || rc == -EBADMSG);
        if (nfds)
            ck_assert_int_eq(fds[0], -1);
        if (rc == 0) {
            ok++;
            ck_assert_ptr_nonnull(msg.body);
            ck_assert_int_eq(msg.body->type, MSGPACK_OBJECT_MAP);
            walk(msg.body, 0);
            uint64_t u;
            char s[8];
            molt_msg_get_u64(&msg, "a", &u);
            molt_msg_get_str(&msg, "name", s, sizeof(s));
        } else {
            ck_assert_ptr_null(msg.body);
        }
        molt_msg_free(&msg);
    }
    ck_assert_int_eq(open_fd_count(), start);
    ck_assert_int_gt(ok, 0); /* the mutations are not all refusals */
}
END_TEST

static Suite *chan_suite(void)
{
    Suite *s = suite_create("chan");
    TCase *tc;

    tc = tcase_create("roundtrip");
    tcase_add_test(tc, test_pair);
    tcase_add_loop_test(tc, test_roundtrip_each_type, 0, (int)(sizeof(all_types) / sizeof(all_types[0])));
    tcase_add_test(tc, test_wire_format);
    tcase_add_test(tc, test_raw_valid_accepted);
    tcase_add_test(tc, test_nested_ready);
    tcase_add_test(tc, test_empty_body);
    tcase_add_test(tc, test_max_body);
    suite_add_tcase(s, tc);

    tc = tcase_create("fds");
    tcase_add_test(tc, test_fd_passing);
    tcase_add_test(tc, test_fd_passing_max);
    tcase_add_test(tc, test_fd_taken);
    tcase_add_test(tc, test_nfds_missing);
    tcase_add_loop_test(tc, test_nfds_extra, 0, 4);
    tcase_add_loop_test(tc, test_too_many_fds, 0, 3);
    tcase_add_test(tc, test_credentials_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("malformed");
    tcase_add_test(tc, test_short_datagram);
    tcase_add_test(tc, test_length_mismatch);
    tcase_add_loop_test(tc, test_oversized_datagram, 0, 3);
    tcase_add_test(tc, test_bad_header_over_socket);
    tcase_add_loop_test(tc, test_decode_refuses, 0, (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
    tcase_add_test(tc, test_decode_refuses_deep);
    tcase_add_test(tc, test_decode_short_and_null);
    tcase_add_test(tc, test_decode_too_many_fds);
    tcase_add_test(tc, test_decode_owns);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, test_eof);
    tcase_add_test(tc, test_recv_eagain);
    tcase_add_test(tc, test_send_eagain);
    tcase_add_test(tc, test_send_epipe);
    tcase_add_test(tc, test_send_refuses);
    suite_add_tcase(s, tc);

    tc = tcase_create("api");
    tcase_add_test(tc, test_type_names);
    tcase_add_test(tc, test_msg_free_edges);
    tcase_add_test(tc, test_accessors);
    tcase_add_test(tc, test_decode_fuzz);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(chan_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
