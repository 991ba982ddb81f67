/*
 * The channel between the supervisor and one worker: a SOCK_SEQPACKET
 * socketpair, one message per datagram.
 *
 * Wire format of a message (all integers big-endian):
 *
 *   offset 0  u16 magic   0x4D4C ("ML")
 *          2  u8  version MOLT_CHAN_VERSION
 *          3  u8  nfds    number of descriptors carried in SCM_RIGHTS
 *          4  u16 type    molt_msg_type_t
 *          6  u16 reserved, 0
 *          8  u32 length  of the body that follows
 *         12  body        exactly one msgpack object, a map with string keys
 *
 * A receiver checks everything: the datagram's size against the header,
 * MSG_TRUNC / MSG_CTRUNC, that control data is SOL_SOCKET/SCM_RIGHTS only and
 * carries exactly `nfds` descriptors, the magic, version, type range, and that
 * the body is one complete msgpack map. On any violation every received
 * descriptor is closed and the message is refused; no raw structs cross.
 */
#ifndef MOLT_SHARED_CHAN_H
#define MOLT_SHARED_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#define MOLT_CHAN_MAGIC 0x4D4C
#define MOLT_CHAN_VERSION 1
#define MOLT_CHAN_HEADER_SIZE 12
#define MOLT_CHAN_MAX_BODY (60 * 1024) /* fits a default SEQPACKET socket buffer */
#define MOLT_CHAN_MAX_FDS 8

typedef enum molt_msg_type {
    MOLT_MSG_NONE = 0,
    /* worker -> supervisor */
    MOLT_MSG_READY = 1, /* {plugins: [{name, plugin, version, file}]} plugins loaded and initialised */
    MOLT_MSG_FAIL = 2,  /* {phase: "load"|"init"|..., plugin?: name, reason: text} then exit(FATAL) */
    MOLT_MSG_STATS = 3, /* {requests: [1xx,2xx,3xx,4xx,5xx], conns, accepted, rss} */
    MOLT_MSG_DRAINED = 4, /* {} graceful stop finished: no connection left, exiting */
    MOLT_MSG_LOADING = 5, /* {plugin, file} about to initialise this instance (blame for a crash) */
    MOLT_MSG_HEALTH_RESULT = 6, /* {status, error} the outcome of a HEALTH check ("" error: passed) */
    MOLT_MSG_SLOT_RESERVE = 7,  /* {level, name} the index of a named slot (asked during init) */
    /* state handoff (worker/handoff.c, supervisor/handoff.c), 9..12 */
    MOLT_MSG_QUIESCED = 9,  /* {} a paused worker has no connection left (strict handoff waits for it) */
    MOLT_MSG_SAVED = 10,    /* {bytes, instances, ms, error} the streams of one SAVE are written (or not) */
    MOLT_MSG_RESTORED = 11, /* {bytes, instances, ms, error, dropped: [text]} every stream of RESTORE
                             * was read and restored (or not) */
    MOLT_MSG_DUMPED = 12,   /* {error} the stream of a DUMP is written (or why there is none) */
    /* supervisor -> worker */
    MOLT_MSG_STOP = 16,   /* {graceful: bool, retired?: bool} stop accepting; finish; exit
                           * (retired: a reload committed this worker's successor) */
    MOLT_MSG_PAUSE = 17,  /* {close?: bool} stop accepting (a reload hands over); close: also close
                           * every connection politely, then QUIESCED once none is left */
    MOLT_MSG_RESUME = 18, /* {} accept (again: the reload rolled back; or first: a new generation's
                           * handoff is done) */
    MOLT_MSG_REPORT = 19, /* {} send a STATS message now (the end of a verify window) */
    MOLT_MSG_HEALTH = 20, /* {path, timeout_ms} run the health request and every plugin's health check */
    MOLT_MSG_ACTIVATE = 21, /* {} this worker's generation was committed by a reload */
    MOLT_MSG_SLOT_INDEX = 22, /* {index} or {error} the answer to SLOT_RESERVE */
    MOLT_MSG_SAVE = 23,    /* {from_gen, to_gen, streams: [{to_slot, partitioned, replicated}]} + one fd
                            * per stream: write each stream (shared/stream.h), then SAVED */
    MOLT_MSG_RESTORE = 24, /* {timeout_ms, fresh, streams: [{from_slot}]} + one fd per stream: read
                            * and restore them all, then RESTORED; accept only at RESUME */
    MOLT_MSG_DUMP = 25,    /* {name} + one fd: write instance `name`'s state as a one-entry stream */
    MOLT_MSG_LOG_FD = 26,  /* {} + one fd: the log file, reopened (SIGUSR1): make it fd 2 */
    /* sibling messages (plugin.h: molt_sibling_send), 30..33 */
    MOLT_MSG_SIBLING_SEND = 30,   /* w->s {instance, seq, msg: bin} route to my siblings */
    MOLT_MSG_SIBLING = 31,        /* s->w {instance, seq, from, msg: bin} apply a sibling's message */
    MOLT_MSG_SIBLING_ACK = 32,    /* w->s {instance, seq, origin, ok, error} applied (or not) */
    MOLT_MSG_SIBLING_STATUS = 33, /* s->w {instance, seq, targets: [slot], acked: [slot],
                                   * missing: [slot], final, error} where a message of the
                                   * receiver stands: once routed, after each ack, and finally */
    MOLT_MSG_TYPE_COUNT
} molt_msg_type_t;

/* Name of a message type for logs ("READY"); "?" if unknown. */
const char *molt_msg_type_name(unsigned type);

typedef struct molt_msg {
    uint16_t type;
    msgpack_unpacked unpacked;   /* owns the body */
    const msgpack_object *body;  /* the body map, inside `unpacked` */
    int fds[MOLT_CHAN_MAX_FDS];  /* received descriptors; a taker sets its slot to -1 */
    size_t nfds;
} molt_msg_t;

/* Creates a SOCK_SEQPACKET socketpair with SOCK_CLOEXEC; 0 or -errno. */
int molt_chan_pair(int sv[2]);

/*
 * Sends one message. `body` holds one packed msgpack map (NULL or empty sends
 * an empty map). `fds` are sent with SCM_RIGHTS and stay open in the caller.
 * Returns 0, -EAGAIN if the socket is non-blocking and full, -EMSGSIZE if the
 * body is over MOLT_CHAN_MAX_BODY or there are over MOLT_CHAN_MAX_FDS fds,
 * -EPIPE if the peer is gone, or another -errno.
 */
int molt_chan_send(int fd, molt_msg_type_t type, const msgpack_sbuffer *body, const int *fds, size_t nfds);

/*
 * Receives one message into *msg (initialise nothing; free with molt_msg_free).
 * Returns 0; -EAGAIN if nothing is waiting; -EPIPE on EOF (the peer closed);
 * -EBADMSG if the message broke any rule above (descriptors already closed,
 * nothing to free); or another -errno.
 */
int molt_chan_recv(int fd, molt_msg_t *msg);

/*
 * Decodes a datagram that has already been read: `buf`/`len` the bytes,
 * `fds`/`nfds` the descriptors that came with it (ownership passes to msg on
 * success; on failure they are closed). 0 or -EBADMSG. recv uses it; fuzzers
 * and tests call it directly.
 */
int molt_chan_decode(const void *buf, size_t len, int *fds, size_t nfds, molt_msg_t *msg);

/* Frees the body and closes every descriptor still held (slot not -1). Accepts NULL. */
void molt_msg_free(molt_msg_t *msg);

/* Body accessors. Each looks up a key in the body map; absent or of another
 * type returns false (or NULL) and leaves *out alone. */
const msgpack_object *molt_msg_get(const molt_msg_t *msg, const char *key);
bool molt_msg_get_u64(const molt_msg_t *msg, const char *key, uint64_t *out);
bool molt_msg_get_bool(const molt_msg_t *msg, const char *key, bool *out);
/* Copies a string value into buf (NUL-terminated, truncated to buflen-1). */
bool molt_msg_get_str(const molt_msg_t *msg, const char *key, char *buf, size_t buflen);

/* The same lookups on any msgpack map object (for nested maps such as READY's plugins). */
const msgpack_object *molt_mp_map_get(const msgpack_object *map, const char *key);
bool molt_mp_get_u64(const msgpack_object *map, const char *key, uint64_t *out);
bool molt_mp_get_str(const msgpack_object *map, const char *key, char *buf, size_t buflen);

/* True if p/len holds exactly one msgpack object and nothing after it, checked
 * without allocating (so that decoding it cannot ask for absurd amounts of
 * memory): for msgpack carried inside a body, such as a sibling message. */
bool molt_mp_check_object(const void *p, size_t len);

/*
 * A body being packed: the buffer and the packer that writes into it, set up
 * together by molt_body_init() (the packer points at the buffer: do not copy
 * or move the struct after). Pack with &body.pk, send &body.sb, then
 * molt_body_free().
 */
typedef struct molt_body {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} molt_body_t;
void molt_body_init(molt_body_t *body);
void molt_body_free(molt_body_t *body);

/* Packing helpers for bodies: a string key followed by a value. */
void molt_mp_pack_str(msgpack_packer *pk, const char *s);
void molt_mp_pack_kv_str(msgpack_packer *pk, const char *key, const char *value);
void molt_mp_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value);
void molt_mp_pack_kv_bool(msgpack_packer *pk, const char *key, bool value);

#endif
