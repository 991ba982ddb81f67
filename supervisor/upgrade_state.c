/*
 * The upgrade state's small readers and writers (supervisor/upgrade.h):
 * pure msgpack and descriptor checks, apart from upgrade.c so that each
 * module's part of the state (and the control fuzzer, fuzz/) can use them
 * without the rest of the upgrade.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "shared/chan.h"
#include "supervisor/upgrade.h"

/* ---- the state's readers and writers ---------------------------------------------------------- */

void sup_up_pack_i64(msgpack_packer *pk, const char *key, int64_t v)
{
    molt_mp_pack_str(pk, key);
    msgpack_pack_int64(pk, v);
}

void sup_up_pack_str(msgpack_packer *pk, const char *key, const char *s)
{
    molt_mp_pack_str(pk, key);
    if (s)
        molt_mp_pack_str(pk, s);
    else
        msgpack_pack_nil(pk);
}

void sup_up_pack_bin(msgpack_packer *pk, const char *key, const void *p, size_t n)
{
    molt_mp_pack_str(pk, key);
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, p, n);
}

void sup_up_pack_json(msgpack_packer *pk, const char *key, const json_t *v)
{
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    sup_up_pack_str(pk, key, text);
    free(text);
}

void sup_up_fail(sup_up_rd_t *rd, const char *fmt, ...)
{
    if (rd->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rd->err, sizeof(rd->err), fmt, ap);
    va_end(ap);
    rd->failed = true;
}

/* The value of key in map, if it has one of the types asked (a bit set); else the reader fails. */
static const msgpack_object *rd_get(sup_up_rd_t *rd, const msgpack_object *map, const char *key, unsigned types,
                                    const char *what)
{
    if (rd->failed)
        return NULL;
    const msgpack_object *v = map && map->type == MSGPACK_OBJECT_MAP ? molt_mp_map_get(map, key) : NULL;
    if (!v || !(types & (1u << v->type))) {
        sup_up_fail(rd, "%s: missing or not %s", key, what);
        return NULL;
    }
    return v;
}

#define T(t) (1u << MSGPACK_OBJECT_##t)

bool sup_up_u64(sup_up_rd_t *rd, const msgpack_object *map, const char *key, uint64_t *out)
{
    const msgpack_object *v = rd_get(rd, map, key, T(POSITIVE_INTEGER), "an unsigned integer");
    if (v)
        *out = v->via.u64;
    return v != NULL;
}

bool sup_up_i64(sup_up_rd_t *rd, const msgpack_object *map, const char *key, int64_t *out)
{
    const msgpack_object *v = rd_get(rd, map, key, T(POSITIVE_INTEGER) | T(NEGATIVE_INTEGER), "an integer");
    if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 > INT64_MAX) {
        sup_up_fail(rd, "%s: out of range", key);
        return false;
    }
    if (v)
        *out = v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)v->via.u64 : v->via.i64;
    return v != NULL;
}

bool sup_up_bool(sup_up_rd_t *rd, const msgpack_object *map, const char *key, bool *out)
{
    const msgpack_object *v = rd_get(rd, map, key, T(BOOLEAN), "a boolean");
    if (v)
        *out = v->via.boolean;
    return v != NULL;
}

bool sup_up_strdup(sup_up_rd_t *rd, const msgpack_object *map, const char *key, char **out)
{
    const msgpack_object *v = rd_get(rd, map, key, T(STR) | T(NIL), "a string");
    *out = NULL;
    if (!v)
        return false;
    if (v->type == MSGPACK_OBJECT_NIL)
        return true;
    if (memchr(v->via.str.ptr, '\0', v->via.str.size)) {
        sup_up_fail(rd, "%s: a string with a NUL byte", key);
        return false;
    }
    if (!(*out = strndup(v->via.str.ptr, v->via.str.size))) {
        sup_up_fail(rd, "%s: out of memory", key);
        return false;
    }
    return true;
}

bool sup_up_str(sup_up_rd_t *rd, const msgpack_object *map, const char *key, char *buf, size_t len)
{
    const msgpack_object *v = rd_get(rd, map, key, T(STR), "a string");
    if (!v)
        return false;
    size_t n = v->via.str.size < len - 1 ? v->via.str.size : len - 1;
    memcpy(buf, v->via.str.ptr, n);
    buf[n] = '\0';
    return true;
}

const msgpack_object *sup_up_map(sup_up_rd_t *rd, const msgpack_object *map, const char *key)
{
    return rd_get(rd, map, key, T(MAP), "a map");
}

const msgpack_object *sup_up_array(sup_up_rd_t *rd, const msgpack_object *map, const char *key)
{
    return rd_get(rd, map, key, T(ARRAY), "an array");
}

bool sup_up_bin(sup_up_rd_t *rd, const msgpack_object *map, const char *key, const char **p, size_t *n)
{
    const msgpack_object *v = rd_get(rd, map, key, T(BIN), "bytes");
    if (v) {
        *p = v->via.bin.ptr;
        *n = v->via.bin.size;
    }
    return v != NULL;
}

bool sup_up_json(sup_up_rd_t *rd, const msgpack_object *map, const char *key, json_t **out)
{
    char *text = NULL;
    *out = NULL;
    if (!sup_up_strdup(rd, map, key, &text))
        return false;
    if (!text)
        return true;
    json_error_t jerr;
    *out = json_loads(text, JSON_DECODE_ANY, &jerr);
    free(text);
    if (!*out)
        sup_up_fail(rd, "%s: not JSON: %s", key, jerr.text);
    return *out != NULL;
}

#undef T

/* A descriptor of ours is there and is a socket of `type`, listening if asked. */
static bool fd_socket_ok(int fd, int type, bool listening)
{
    int v = 0;
    socklen_t len = sizeof(v);
    if (fd < 0 || fcntl(fd, F_GETFD) < 0)
        return false;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) < 0 || v != type)
        return false;
    if (!listening)
        return true;
    len = sizeof(v);
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v;
}

bool sup_upgrade_fd_ok(sup_up_rd_t *rd, const char *what, int64_t fd, int type, bool listening)
{
    if (rd->failed)
        return false;
    if (fd < 0 || fd > INT_MAX || !fd_socket_ok((int)fd, type, listening)) {
        sup_up_fail(rd, "%s: descriptor %lld is not %s", what, (long long)fd,
                    listening ? "a listening socket" : "a socket of the expected type");
        return false;
    }
    return true;
}

