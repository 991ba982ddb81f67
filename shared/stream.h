/*
 * The state handoff stream: what an old worker writes into a socketpair for
 * its successor during a reload (SPEC §6, Handoff), and what `moltctl state`
 * reuses. Pure byte handling: no event loop, no plugin; the worker drives a
 * writer from its loop whenever the socket is writable and a reader whenever
 * it is readable.
 *
 * Wire format. Every frame is a big-endian u32 length followed by that many
 * bytes holding exactly one msgpack map with string keys:
 *
 *   header   {"magic": "molt-state", "version": 1, "from_gen": str, "to_gen": str,
 *             "from_slot": uint, "to_slot": uint, "count": uint}
 *   count times:
 *     entry  {"name": str, "plugin": str, "version": str, "state_version": uint,
 *             "size": uint}
 *            followed by `size` raw bytes (not framed): exactly one msgpack
 *            object, the payload the instance's state_save packed
 *   trailer  {"count": uint, "bytes": uint, "xxh3": uint}
 *
 * The trailer's count repeats the number of entries, bytes is the number of
 * bytes before the trailer's length prefix, and xxh3 the XXH3-64 (libxxhash)
 * of exactly those bytes. A reader accepts a stream only once the trailer
 * has been read and checked, and nothing follows it but EOF: a plugin's
 * restore never sees a byte of a truncated or corrupted stream.
 *
 * Limits (a corrupt or hostile stream cannot make a reader allocate more than
 * what actually arrived, plus one frame): a frame is at most
 * MOLT_STREAM_MAX_FRAME bytes, a payload at most MOLT_STREAM_MAX_PAYLOAD, a
 * stream at most MOLT_STREAM_MAX_ENTRIES entries. Memory for a payload grows
 * as its bytes arrive, never from the announced size alone.
 */
#ifndef MOLT_SHARED_STREAM_H
#define MOLT_SHARED_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <msgpack.h>

#define MOLT_STREAM_MAGIC "molt-state"
#define MOLT_STREAM_VERSION 1
#define MOLT_STREAM_MAX_FRAME (64 * 1024)
#define MOLT_STREAM_MAX_PAYLOAD ((uint64_t)8 << 30) /* 8 GiB */
#define MOLT_STREAM_MAX_ENTRIES 1024
#define MOLT_STREAM_NAME_MAX 128 /* instance and plugin names, versions (with the NUL) */

typedef struct molt_stream_hdr {
    char from_gen[40]; /* generation ids (UUID text) */
    char to_gen[40];
    uint32_t from_slot;
    uint32_t to_slot;
    uint32_t count; /* entries that follow */
} molt_stream_hdr_t;

typedef struct molt_stream_entry {
    char name[MOLT_STREAM_NAME_MAX];    /* instance name */
    char plugin[MOLT_STREAM_NAME_MAX];  /* plugin name */
    char version[MOLT_STREAM_NAME_MAX]; /* plugin version (semver text) */
    uint32_t state_version;
    const char *data; /* the payload: exactly one msgpack object */
    size_t size;
} molt_stream_entry_t;

/* ---- writer ------------------------------------------------------------------------------ */

typedef struct molt_stream_writer molt_stream_writer_t;

/* A writer for one stream with this header (hdr->count is ignored: the
 * entries added decide it). NULL when out of memory. */
molt_stream_writer_t *molt_stream_writer_new(const molt_stream_hdr_t *hdr);

/*
 * Appends one entry. e->data is NOT copied: it must stay valid and unchanged
 * until the writer is freed (one payload may be shared by several writers).
 * 0; -EINVAL for an entry breaking the limits above (name too long, payload
 * not exactly one msgpack object, too many entries); -EALREADY after
 * molt_stream_writer_finish(); -ENOMEM.
 */
int molt_stream_writer_add(molt_stream_writer_t *w, const molt_stream_entry_t *e);

/* Closes the stream: appends the trailer. Nothing can be added after. 0 or -ENOMEM. */
int molt_stream_writer_finish(molt_stream_writer_t *w);

/*
 * Writes as much of the finished stream to fd (non-blocking) as the fd takes
 * now, with writev over the pieces (payloads are not copied again).
 * Returns 1 once every byte is written, 0 if the fd would block (wait for
 * it to be writable and call again), -EPIPE if the reader went away, or
 * another -errno. MSG_NOSIGNAL semantics: never raises SIGPIPE (the caller
 * ignores SIGPIPE; a socket fd is written with sendmsg(MSG_NOSIGNAL)).
 */
int molt_stream_writer_write(molt_stream_writer_t *w, int fd);

/* Bytes in the whole stream (header to trailer) once finished; bytes written so far. */
uint64_t molt_stream_writer_size(const molt_stream_writer_t *w);
uint64_t molt_stream_writer_written(const molt_stream_writer_t *w);

/* Accepts NULL. */
void molt_stream_writer_free(molt_stream_writer_t *w);

/* ---- reader ------------------------------------------------------------------------------ */

typedef struct molt_stream_reader molt_stream_reader_t;

molt_stream_reader_t *molt_stream_reader_new(void);

/*
 * Feeds bytes that arrived (tests and fuzzers; molt_stream_reader_read()
 * uses the same path). Returns 0 when more is needed; 1 once the trailer has
 * been read and checked (then any further byte is an error); -EBADMSG when
 * the stream is malformed, with the reason in molt_stream_reader_error().
 * After an error every call returns -EBADMSG again.
 */
int molt_stream_reader_feed(molt_stream_reader_t *r, const void *buf, size_t len);

/*
 * Reads from fd (non-blocking) until it would block, the stream ends or it
 * fails. Returns 0 when more is needed (wait for readable), 1 when the
 * stream is complete and checked and the writer closed its end (EOF after
 * the trailer), -EBADMSG for a malformed stream or data after the trailer,
 * -EPIPE for EOF before the trailer ("truncated after N bytes" in the error
 * text), or another -errno from read(2). The error text says which.
 */
int molt_stream_reader_read(molt_stream_reader_t *r, int fd);

/* Once complete (feed/read returned 1): the header and the entries, whose
 * data points into the reader's memory (valid until it is freed). */
const molt_stream_hdr_t *molt_stream_reader_header(const molt_stream_reader_t *r);
size_t molt_stream_reader_count(const molt_stream_reader_t *r);
const molt_stream_entry_t *molt_stream_reader_entry(const molt_stream_reader_t *r, size_t i);

/* Bytes taken in so far. */
uint64_t molt_stream_reader_bytes(const molt_stream_reader_t *r);
/* Why the stream was refused ("" if it was not). */
const char *molt_stream_reader_error(const molt_stream_reader_t *r);

/* Accepts NULL. */
void molt_stream_reader_free(molt_stream_reader_t *r);

#endif
