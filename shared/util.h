/* Small helpers both processes use: fds, clocks, buffers. */
#ifndef MOLT_SHARED_UTIL_H
#define MOLT_SHARED_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define MOLT_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* O_NONBLOCK on/off; 0 or -errno. */
int molt_fd_set_nonblock(int fd, bool on);
/* FD_CLOEXEC on/off; 0 or -errno. */
int molt_fd_set_cloexec(int fd, bool on);
/* close(2) that accepts -1 and preserves errno; sets *fd to -1. */
void molt_close(int *fd);

/* CLOCK_MONOTONIC in milliseconds / microseconds. */
uint64_t molt_now_ms(void);
uint64_t molt_now_us(void);
/* CLOCK_REALTIME in milliseconds. */
uint64_t molt_wall_ms(void);

/* Resident set size of this process in bytes (from /proc/self/statm); 0 if unknown. */
uint64_t molt_self_rss(void);

/* A growable byte buffer. Functions return 0 or -ENOMEM. */
typedef struct molt_buf {
    char *data;
    size_t len;
    size_t cap;
} molt_buf_t;

int molt_buf_reserve(molt_buf_t *b, size_t extra);
int molt_buf_append(molt_buf_t *b, const void *data, size_t len);
int molt_buf_printf(molt_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes. */
void molt_buf_consume(molt_buf_t *b, size_t n);
void molt_buf_free(molt_buf_t *b);

/* s as a JSON string. Text that is not UTF-8 (a client's bytes, what another
 * program printed, a character cut by a length limit) would make no string at
 * all, and a reply or log line built from it would be lost: each byte of 0x80
 * or more then becomes '?'. NULL only when out of memory. */
json_t *molt_json_text(const char *s);

#endif
