/*
 * libFuzzer target: the worker's HTTP/1.1 request path (worker/http.h). The
 * input is what a client sends on one connection: a server on a private
 * libev loop adopts one end of a socketpair (as tests/worker/test_http.c
 * does), the input goes into the other end in three writes (then the write
 * side is shut), and the loop runs without blocking until the server has
 * closed the connection or an iteration bound is reached; what the server
 * writes is read and dropped. Small limits make 413 and 431 reachable.
 *
 * The handler answers every request with a small fixed response; the paths
 * "/stream" (a streamed, chunked response) and "/close" (no keep-alive)
 * take the other response paths. It checks what the core promises about a
 * request (NUL-terminated url and headers of the stated lengths).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "shared/util.h"
#include "worker/http.h"
#include "worker/txn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_HTTP_ITERATIONS 256

static void handler(struct molt_txn *txn, void *arg)
{
    (void)arg;
    if (!txn->url || strlen(txn->url) != txn->url_len || !txn->method || txn->path_len > txn->url_len)
        abort();
    for (size_t i = 0; i < txn->nheaders; i++)
        if (strlen(txn->headers[i].name) != txn->headers[i].name_len ||
            strlen(txn->headers[i].value) != txn->headers[i].value_len)
            abort();
    if (txn->body_len && !txn->body)
        abort();
    molt_buf_printf(&txn->resp_headers, "X-Fuzz: %zu\r\n", txn->nheaders);
    if (txn->path_len == 7 && memcmp(txn->path, "/stream", 7) == 0) {
        molt_buf_append(&txn->resp_body, "hello ", 6);
        (void)wrk_http_txn_flush(txn);
        molt_buf_append(&txn->resp_body, "world\n", 6);
        return;
    }
    if (txn->path_len == 6 && memcmp(txn->path, "/close", 6) == 0)
        txn->keep_alive = false;
    txn->status = 200;
    molt_buf_printf(&txn->resp_body, "body %zu\n", txn->body_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const molt_http_cfg_t cfg = {
        .max_header_bytes = 2048,
        .max_body_bytes = 4096,
        .header_timeout_ms = 10000,
        .keepalive_timeout_ms = 10000,
    };
    struct ev_loop *loop = ev_loop_new(EVFLAG_NOENV);
    if (!loop)
        abort();
    wrk_http_t *srv = wrk_http_new(loop, &cfg, handler, NULL);
    if (!srv)
        abort();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    if (wrk_http_adopt(srv, sv[1]) < 0)
        abort();

    /* Three writes: the boundaries fall at thirds of the input. */
    size_t ends[3] = {size / 3, 2 * size / 3, size};
    size_t off = 0, piece = 0;
    bool shut = false;
    for (int i = 0; i < FUZZ_HTTP_ITERATIONS; i++) {
        while (!shut && piece < 3) {
            if (off == ends[piece]) {
                piece++;
                continue;
            }
            ssize_t n = send(sv[0], data + off, ends[piece] - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0)
                off += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                piece = 3; /* the server closed its end: nothing more goes in */
            break;         /* one write per iteration */
        }
        if (!shut && piece == 3) {
            shutdown(sv[0], SHUT_WR);
            shut = true;
        }
        ev_run(loop, EVRUN_NOWAIT);
        bool eof = false;
        for (;;) {
            char buf[16384];
            ssize_t n = recv(sv[0], buf, sizeof(buf), MSG_DONTWAIT);
            if (n > 0)
                continue;
            eof = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
            break;
        }
        wrk_http_stats_t st;
        wrk_http_get_stats(srv, &st);
        if (shut && (eof || st.conns == 0))
            break;
    }
    wrk_http_free(srv);
    ev_loop_destroy(loop);
    close(sv[0]);
    return 0;
}
