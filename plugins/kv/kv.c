/*
 * kv: a key-value store that holds the same data in every worker of a
 * generation and keeps it across reloads. It is the example of a strict,
 * replicated stateful plugin (flags MOLT_PLUGIN_STRICT_STATE |
 * MOLT_PLUGIN_REPLICATED, state_version 1); docs/plugins.md, "Example
 * stateful plugins", says what that means for reloads and worker counts.
 *
 * HTTP, with the instance routed at "/kv/" ({"prefix": "/kv/", "plugin": "kv"}):
 *   GET or HEAD /kv/KEY  200 application/octet-stream with the value, or 404
 *   PUT /kv/KEY          the request body becomes the value: 201 (created) or
 *                        204 (replaced), once every other worker applied it
 *   DELETE /kv/KEY       204 once every other worker removed it too; 404 if absent
 *   GET or HEAD /kv/     200 application/json: the keys, a JSON array sorted bytewise
 *   other methods        405 with Allow
 * KEY is the rest of the path, taken raw: no percent-decoding (/kv/a%20b is
 * the key "a%20b"), '/' allowed, the query is not part of it. 1 to 1024 bytes
 * of UTF-8, else 400. A PUT or DELETE whose change some worker did not apply
 * answers 503 with the host's reason as the body ("worker 1 did not apply
 * message 7 within 5000 ms"); the write stays in this worker (except for a
 * large value whose transfer failed before its last part: see below).
 * Other answers: 413 (value over max_value_bytes), 507 (max_keys reached).
 *
 * config (all optional):
 *   max_keys         integer 1 to 4294967295, default 1000000: a PUT of a new
 *                    key once the table holds this many answers 507
 *   max_value_bytes  integer 1 to 4294967295, default none of kv's own: the
 *                    HTTP limit (http.max_body_bytes, 1 MiB by default)
 *                    bounds values; a larger value answers 413
 *   prefix           string starting with "/", default "/kv/": the prefix of
 *                    the route to this instance (a plugin does not see its
 *                    route), which the key follows
 *
 * Replication (sibling messages, one msgpack map each, as sibling_recv takes them):
 *   {"op": "put", "key": K, "value": V}  set K (str or bin) to V (bin or str)
 *   {"op": "del", "key": K}              remove K (absent is fine)
 *   A value whose message would exceed MOLT_SIBLING_MAX_MSG (48 KiB) travels
 *   in parts, each sent once every sibling applied the one before (a worker's
 *   channel to the supervisor holds only a few parts at once):
 *   {"op": "part", "xfer": X, "off": O, "total": T, "data": bin}, then
 *   {"op": "put", "key": K, "value": last piece, "xfer": X, "off": O, "total": T}.
 *   Receivers stage the parts of transfer X (per sending worker) and apply the
 *   value with its last part; {"op": "abort", "xfer": X} drops a failed one.
 *   The sender applies such a value itself when it sends the last part, so
 *   that its own writes keep the order in which the other workers apply them.
 *   Anything malformed is refused (sibling_recv returns MOLT_ERROR, logged).
 *
 * State (state_save / state_restore, version 1): one msgpack map
 * {key (str): value (bin)}. Restore merges into the table (a later snapshot
 * overwrites an earlier one's keys) and leaves the table as it was if the
 * state is bad.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <msgpack.h>

#include "molt/plugin.h"

/* uthash: keyed with SipHash-1-3 and a per-process random seed (keys come
 * from clients: no chosen collisions), and an allocation failure leaves the
 * table as it was (HASH_ADD then leaves the entry's hh.tbl NULL). */
static unsigned kv_hash(const void *data, size_t len);
#define HASH_NONFATAL_OOM 1
#define HASH_FUNCTION(keyptr, keylen, hashv) ((hashv) = kv_hash((keyptr), (size_t)(keylen)))
#include <uthash.h>

#define KV_STATE_VERSION 1
#define KV_KEY_MAX 1024
#define KV_DEFAULT_MAX_KEYS 1000000
#define KV_LIMIT UINT32_MAX /* the largest max_keys / max_value_bytes: a msgpack bin or map holds no more */
#define KV_PREFIX_MAX 256
/* Room for everything of a message but the value (op, key, xfer, off, total). */
#define KV_MSG_OVERHEAD (KV_KEY_MAX + 1024)
/* The value bytes of one part of a transfer. */
#define KV_PART_BYTES (MOLT_SIBLING_MAX_MSG - KV_MSG_OVERHEAD)
/* Transfers a receiver stages at once, and how long one may stand still
 * before it counts as abandoned (the sender waits at most 5 s per part). */
#define KV_STAGES_MAX 64
#define KV_STAGE_IDLE_MS 30000

typedef struct kv_entry {
    UT_hash_handle hh;
    struct kv_entry *link; /* during a restore: the entry this one replaces, or the next moved one */
    char *val;             /* malloc'd, vlen bytes (at least 1 allocated) */
    size_t vlen;
    size_t klen;
    char key[]; /* klen bytes, not NUL-terminated */
} kv_entry_t;

/* A value arriving in parts from worker `slot`. */
typedef struct kv_stage {
    struct kv_stage *next;
    unsigned slot;
    uint64_t xfer;
    char *buf; /* total bytes */
    size_t len, total;
    long long touched_ms;
} kv_stage_t;

typedef struct kv {
    molt_instance_t *inst;
    kv_entry_t *table;
    size_t nkeys; /* kept apart from uthash's count: health compares them */
    size_t max_keys;
    size_t max_value; /* SIZE_MAX: none of kv's own */
    char prefix[KV_PREFIX_MAX + 1];
    size_t prefix_len;
    kv_stage_t *stages;
    size_t nstages;
    uint32_t next_xfer;
} kv_t;

/* One PUT or DELETE waiting for the other workers (the txn context). */
typedef struct kv_txn {
    kv_t *kv;
    molt_txn_t *txn;
    const char *key; /* in the request path and body: valid while the transaction lives */
    size_t klen;
    const char *val;
    size_t vlen;
    uint64_t xfer; /* a value sent in parts: the transfer's id; 0 otherwise */
    size_t off;    /* of the next part */
    int status;    /* the answer once every worker applied the write */
} kv_txn_t;

/* ---- hashing ---------------------------------------------------------------------------- */

static uint64_t kv_seed[2];
static bool kv_seeded;

static void kv_seed_init(void)
{
    if (kv_seeded)
        return;
    if (getrandom(kv_seed, sizeof(kv_seed), GRND_NONBLOCK) != (ssize_t)sizeof(kv_seed)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        kv_seed[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)ts.tv_sec;
        kv_seed[1] = (uint64_t)getpid() * 0xc2b2ae3d27d4eb4fULL ^ (uint64_t)(uintptr_t)&ts;
    }
    kv_seeded = true;
}

#define KV_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define KV_SIPROUND                                                                                      \
    do {                                                                                                 \
        v0 += v1, v1 = KV_ROTL(v1, 13), v1 ^= v0, v0 = KV_ROTL(v0, 32);                                  \
        v2 += v3, v3 = KV_ROTL(v3, 16), v3 ^= v2;                                                        \
        v0 += v3, v3 = KV_ROTL(v3, 21), v3 ^= v0;                                                        \
        v2 += v1, v1 = KV_ROTL(v1, 17), v1 ^= v2, v2 = KV_ROTL(v2, 32);                                  \
    } while (0)

/* SipHash-1-3 of the key with the process's seed, folded to uthash's 32 bits. */
static unsigned kv_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t v0 = 0x736f6d6570736575ULL ^ kv_seed[0], v1 = 0x646f72616e646f6dULL ^ kv_seed[1];
    uint64_t v2 = 0x6c7967656e657261ULL ^ kv_seed[0], v3 = 0x7465646279746573ULL ^ kv_seed[1];
    uint64_t m, last = (uint64_t)len << 56;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&m, p + i, 8);
        v3 ^= m;
        KV_SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; i + j < len; j++)
        last |= (uint64_t)p[i + j] << (8 * j);
    v3 ^= last;
    KV_SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    KV_SIPROUND;
    KV_SIPROUND;
    KV_SIPROUND;
    uint64_t h = v0 ^ v1 ^ v2 ^ v3;
    return (unsigned)(h ^ (h >> 32));
}

/* ---- small helpers ---------------------------------------------------------------------- */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* UTF-8 as JSON needs it (keys are shown in JSON): jansson is the judge. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    json_t *j = json_stringn((const char *)s, n);
    json_decref(j);
    return j != NULL;
}

/* Why `key` cannot be a key, or NULL. */
static const char *key_error(const char *key, size_t klen)
{
    if (klen == 0)
        return "the key is empty";
    if (klen > KV_KEY_MAX)
        return "the key is longer than 1024 bytes";
    if (!utf8_valid((const unsigned char *)key, klen))
        return "the key is not UTF-8";
    return NULL;
}

/* A key for a one-line message: at most 60 bytes, control characters as '?'. */
static const char *key_show(const char *key, size_t klen, char *buf, size_t len)
{
    size_t n = klen < 60 ? klen : 60, o = 0;
    for (size_t i = 0; i < n && o + 1 < len; i++)
        buf[o++] = (unsigned char)key[i] < 0x20 || key[i] == 0x7f ? '?' : key[i];
    buf[o] = '\0';
    if (klen > n && o + 4 < len)
        memcpy(buf + o, "...", 4);
    return buf;
}

/* The object's type with its article, for messages ("an array"). */
static const char *mp_type(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
        return "a boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "an integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return "a float";
    case MSGPACK_OBJECT_STR:
        return "a string";
    case MSGPACK_OBJECT_ARRAY:
        return "an array";
    case MSGPACK_OBJECT_MAP:
        return "a map";
    case MSGPACK_OBJECT_BIN:
        return "bin";
    case MSGPACK_OBJECT_EXT:
        return "an ext";
    }
    return "an unknown object";
}

/* The bytes of a str or bin object. */
static bool mp_bytes(const msgpack_object *o, const char **p, size_t *n)
{
    if (o->type == MSGPACK_OBJECT_STR) {
        *p = o->via.str.ptr;
        *n = o->via.str.size;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_BIN) {
        *p = o->via.bin.ptr;
        *n = o->via.bin.size;
        return true;
    }
    return false;
}

static bool mp_is(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

/* A text/plain answer of one formatted line. */
static int reply(molt_txn_t *txn, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int reply(molt_txn_t *txn, int status, const char *fmt, ...)
{
    char buf[768];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1;
    if (molt_resp_set_status(txn, status) != MOLT_OK ||
        molt_resp_add_header(txn, "Content-Type", "text/plain") != MOLT_OK ||
        molt_resp_write(txn, buf, len) != MOLT_OK)
        return MOLT_ERROR;
    return MOLT_OK;
}

/* ---- the table ---------------------------------------------------------------------------- */

static kv_entry_t *entry_new(const char *key, size_t klen, char *val, size_t vlen)
{
    kv_entry_t *e = malloc(sizeof(*e) + klen);
    if (!e)
        return NULL;
    memset(e, 0, sizeof(*e));
    memcpy(e->key, key, klen);
    e->klen = klen;
    e->val = val;
    e->vlen = vlen;
    return e;
}

static void entry_free(kv_entry_t *e)
{
    free(e->val);
    free(e);
}

static void table_free(kv_entry_t **head)
{
    kv_entry_t *e, *tmp;
    HASH_ITER(hh, *head, e, tmp)
    {
        HASH_DELETE(hh, *head, e);
        entry_free(e);
    }
}

/* Adds e to the table; false (the table unchanged, e not in it) if out of memory. */
static bool table_add(kv_entry_t **head, kv_entry_t *e)
{
    HASH_ADD_KEYPTR(hh, *head, e->key, e->klen, e);
    return e->hh.tbl != NULL;
}

static kv_entry_t *table_find(kv_entry_t *head, const char *key, size_t klen)
{
    kv_entry_t *e = NULL;
    HASH_FIND(hh, head, key, klen, e);
    return e;
}

/* A malloc'd copy of n bytes (at least one byte allocated), or NULL. */
static char *copy_bytes(const char *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (c && n)
        memcpy(c, p, n);
    return c;
}

/*
 * Stores `val` (malloc'd; the table takes it on success) under key.
 * *created says whether the key is new. -ENOSPC if it is new and the table
 * is full, -ENOMEM if out of memory; on failure val is still the caller's.
 */
static int kv_set(kv_t *kv, const char *key, size_t klen, char *val, size_t vlen, bool *created)
{
    kv_entry_t *e = table_find(kv->table, key, klen);
    if (e) {
        free(e->val);
        e->val = val;
        e->vlen = vlen;
        *created = false;
        return 0;
    }
    if (kv->nkeys >= kv->max_keys)
        return -ENOSPC;
    e = entry_new(key, klen, val, vlen);
    if (!e)
        return -ENOMEM;
    if (!table_add(&kv->table, e)) {
        free(e);
        return -ENOMEM;
    }
    kv->nkeys++;
    *created = true;
    return 0;
}

static bool kv_del(kv_t *kv, const char *key, size_t klen)
{
    kv_entry_t *e = table_find(kv->table, key, klen);
    if (!e)
        return false;
    HASH_DELETE(hh, kv->table, e);
    entry_free(e);
    kv->nkeys--;
    return true;
}

/* ---- staged transfers (receiving side) ------------------------------------------------------ */

static void stage_unlink(kv_t *kv, kv_stage_t *s)
{
    for (kv_stage_t **pp = &kv->stages; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            kv->nstages--;
            return;
        }
    }
}

static void stage_drop(kv_t *kv, kv_stage_t *s)
{
    stage_unlink(kv, s);
    free(s->buf);
    free(s);
}

static kv_stage_t *stage_find(kv_t *kv, unsigned slot, uint64_t xfer)
{
    for (kv_stage_t *s = kv->stages; s; s = s->next)
        if (s->slot == slot && s->xfer == xfer)
            return s;
    return NULL;
}

/* Drops transfers nobody has added to for KV_STAGE_IDLE_MS: their sender gave up or died. */
static void stage_expire(kv_t *kv, long long now)
{
    for (kv_stage_t *s = kv->stages, *next; s; s = next) {
        next = s->next;
        if (now - s->touched_ms > KV_STAGE_IDLE_MS) {
            molt_log_instance(kv->inst, MOLT_PLOG_WARN,
                              "dropping transfer %llx from worker %u: no part for %d ms (%zu of %zu bytes)",
                              (unsigned long long)s->xfer, s->slot, KV_STAGE_IDLE_MS, s->len, s->total);
            stage_drop(kv, s);
        }
    }
}

/* ---- config and lifecycle ----------------------------------------------------------------- */

static void kv_free(kv_t *kv)
{
    if (!kv)
        return;
    table_free(&kv->table);
    while (kv->stages)
        stage_drop(kv, kv->stages);
    free(kv);
}

/* An integer config value from min to KV_LIMIT. */
static bool cfg_size(const json_t *v, const char *name, size_t min, size_t *out, char *err, size_t errlen)
{
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min ||
        json_integer_value(v) > (json_int_t)KV_LIMIT) {
        char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        snprintf(err, errlen, "config: %s must be an integer from %zu to %lu, got %.60s", name, min,
                 (unsigned long)KV_LIMIT, text ? text : "?");
        free(text);
        return false;
    }
    *out = (size_t)json_integer_value(v);
    return true;
}

static int kv_config(kv_t *kv, const char *config_json, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *cfg = json_loads(config_json, JSON_REJECT_DUPLICATES, &jerr), *v;
    const char *name;
    int rc = MOLT_ERROR;
    if (!cfg) {
        snprintf(err, errlen, "config: %s", jerr.text);
        return MOLT_ERROR;
    }
    if (!json_is_object(cfg)) {
        snprintf(err, errlen, "config: expected an object");
        goto out;
    }
    json_object_foreach(cfg, name, v)
    {
        if (strcmp(name, "max_keys") == 0) {
            if (!cfg_size(v, name, 1, &kv->max_keys, err, errlen))
                goto out;
        } else if (strcmp(name, "max_value_bytes") == 0) {
            if (!cfg_size(v, name, 1, &kv->max_value, err, errlen))
                goto out;
        } else if (strcmp(name, "prefix") == 0) {
            const char *p = json_string_value(v);
            size_t n = json_string_length(v);
            if (!p || n == 0 || p[0] != '/' || n > KV_PREFIX_MAX || strlen(p) != n) {
                snprintf(err, errlen, "config: prefix must be a string starting with \"/\" of at most %d bytes",
                         KV_PREFIX_MAX);
                goto out;
            }
            memcpy(kv->prefix, p, n + 1);
            kv->prefix_len = n;
        } else {
            snprintf(err, errlen, "config: unknown key \"%.64s\" (kv takes max_keys, max_value_bytes and prefix)",
                     name);
            goto out;
        }
    }
    rc = MOLT_OK;
out:
    json_decref(cfg);
    return rc;
}

static int kv_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    kv_t *kv = calloc(1, sizeof(*kv));
    if (!kv) {
        snprintf(err, errlen, "out of memory");
        return MOLT_ERROR;
    }
    kv->inst = inst;
    kv->max_keys = KV_DEFAULT_MAX_KEYS;
    kv->max_value = SIZE_MAX;
    snprintf(kv->prefix, sizeof(kv->prefix), "/kv/");
    kv->prefix_len = strlen(kv->prefix);
    if (kv_config(kv, config_json, err, errlen) != MOLT_OK) {
        kv_free(kv);
        return MOLT_ERROR;
    }
    kv_seed_init();
    molt_instance_set_data(inst, kv);
    return MOLT_OK;
}

static void kv_fini(molt_instance_t *inst)
{
    kv_free(molt_instance_data(inst));
    molt_instance_set_data(inst, NULL);
}

/* A rollback hands a served generation's table back: empty, then restored. */
static void kv_state_reset(molt_instance_t *inst)
{
    kv_t *kv = molt_instance_data(inst);
    table_free(&kv->table);
    kv->nkeys = 0;
    while (kv->stages)
        stage_drop(kv, kv->stages);
}

/* ---- reading ------------------------------------------------------------------------------ */

static int kv_get(molt_txn_t *txn, kv_t *kv, const char *key, size_t klen)
{
    kv_entry_t *e = table_find(kv->table, key, klen);
    if (!e)
        return reply(txn, 404, "kv: no such key\n");
    if (molt_resp_add_header(txn, "Content-Type", "application/octet-stream") != MOLT_OK ||
        molt_resp_write(txn, e->val, e->vlen) != MOLT_OK)
        return MOLT_ERROR;
    return MOLT_OK;
}

static int entry_cmp(const void *a, const void *b)
{
    const kv_entry_t *x = *(kv_entry_t *const *)a, *y = *(kv_entry_t *const *)b;
    int c = memcmp(x->key, y->key, x->klen < y->klen ? x->klen : y->klen);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* Appends key as a JSON string (keys are UTF-8: only '"', '\' and controls are escaped). */
static size_t json_key(char *out, const kv_entry_t *e)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < e->klen; i++) {
        unsigned char c = (unsigned char)e->key[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    return o;
}

/* GET /kv/: the keys as a sorted JSON array, written in pieces. */
static int kv_list(molt_txn_t *txn, kv_t *kv)
{
    kv_entry_t **v = malloc((kv->nkeys ? kv->nkeys : 1) * sizeof(*v)), *e, *tmp;
    char buf[16384];
    size_t n = 0, o = 0;
    int rc = MOLT_ERROR;
    if (!v)
        return reply(txn, 503, "kv: out of memory\n");
    HASH_ITER(hh, kv->table, e, tmp)
    {
        v[n++] = e;
    }
    qsort(v, n, sizeof(*v), entry_cmp);
    if (molt_resp_add_header(txn, "Content-Type", "application/json") != MOLT_OK)
        goto out;
    buf[o++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (sizeof(buf) - o < KV_KEY_MAX * 6 + 8) {
            if (molt_resp_write(txn, buf, o) != MOLT_OK)
                goto out;
            o = 0;
        }
        if (i)
            buf[o++] = ',';
        o += json_key(buf + o, v[i]);
    }
    buf[o++] = ']';
    buf[o++] = '\n';
    rc = molt_resp_write(txn, buf, o);
out:
    free(v);
    return rc;
}

/* ---- writing: local change, then every sibling --------------------------------------------- */

static bool pack_bytes_str(msgpack_packer *pk, const char *p, size_t n)
{
    return msgpack_pack_str(pk, n) == 0 && msgpack_pack_str_body(pk, p, n) == 0;
}

static bool pack_bytes_bin(msgpack_packer *pk, const char *p, size_t n)
{
    return msgpack_pack_bin(pk, n) == 0 && msgpack_pack_bin_body(pk, p, n) == 0;
}

static bool pack_kv_str(msgpack_packer *pk, const char *name, const char *s)
{
    return pack_bytes_str(pk, name, strlen(name)) && pack_bytes_str(pk, s, strlen(s));
}

static bool pack_kv_u64(msgpack_packer *pk, const char *name, uint64_t v)
{
    return pack_bytes_str(pk, name, strlen(name)) && msgpack_pack_uint64(pk, v) == 0;
}

/* Drops the staged parts of t's transfer in the other workers (best effort: a
 * receiver also drops a transfer that stands still for KV_STAGE_IDLE_MS). */
static void xfer_abort(kv_txn_t *t)
{
    if (!t->xfer)
        return;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_pack_map(&pk, 2) == 0 && pack_kv_str(&pk, "op", "abort") && pack_kv_u64(&pk, "xfer", t->xfer))
        (void)molt_sibling_send(t->kv->inst, sb.data, sb.size, NULL);
    msgpack_sbuffer_destroy(&sb);
    t->xfer = 0;
}

/* Ends a write that did not reach every worker: 503 with `why`. */
static int write_failed(kv_txn_t *t, const char *why)
{
    xfer_abort(t);
    return reply(t->txn, 503, "%s\n", why);
}

/* Sends the packed message and arranges for done once every sibling applied
 * it: MOLT_SUSPEND; or the 503 is set and MOLT_OK / MOLT_ERROR returned. */
static int send_wait(kv_txn_t *t, const msgpack_sbuffer *sb, void (*done)(molt_txn_t *, int, const char *, void *))
{
    uint64_t seq;
    if (molt_sibling_send(t->kv->inst, sb->data, sb->size, &seq) != MOLT_OK)
        return write_failed(t, "kv: the change could not be sent to the other workers (moltd's log says why)");
    if (molt_sibling_wait(t->txn, seq, 0, done, t) != MOLT_OK)
        return write_failed(t, "kv: could not wait for the other workers (moltd's log says why)");
    return MOLT_SUSPEND;
}

/* The last message of a write was applied everywhere, or not. */
static void write_done(molt_txn_t *txn, int rc, const char *error, void *arg)
{
    kv_txn_t *t = arg;
    int r = rc == MOLT_OK ? molt_resp_set_status(txn, t->status) : write_failed(t, error);
    molt_txn_resume(txn, r == MOLT_OK ? MOLT_OK : MOLT_ERROR);
}

static int send_part(kv_txn_t *t);

/* A part of a transfer was applied everywhere (the next one goes), or not. */
static void part_done(molt_txn_t *txn, int rc, const char *error, void *arg)
{
    kv_txn_t *t = arg;
    int r = rc == MOLT_OK ? send_part(t) : write_failed(t, error);
    if (r != MOLT_SUSPEND)
        molt_txn_resume(txn, r == MOLT_OK ? MOLT_OK : MOLT_ERROR);
}

/* Applies t's value here (the value is copied once, into the table). */
static int put_local(kv_txn_t *t)
{
    kv_t *kv = t->kv;
    bool created = false;
    char *copy = copy_bytes(t->val, t->vlen);
    int rc = copy ? kv_set(kv, t->key, t->klen, copy, t->vlen, &created) : -ENOMEM;
    if (rc < 0) {
        free(copy);
        return rc;
    }
    t->status = created ? 201 : 204;
    return 0;
}

static int put_local_failed(kv_txn_t *t, int rc)
{
    xfer_abort(t);
    if (rc == -ENOSPC)
        return reply(t->txn, 507, "kv: full: max_keys (%zu) keys are stored\n", t->kv->max_keys);
    return reply(t->txn, 503, "kv: out of memory\n");
}

/* Sends the part of t's value at t->off; the last part applies it here first. */
static int send_part(kv_txn_t *t)
{
    size_t n = t->vlen - t->off < KV_PART_BYTES ? t->vlen - t->off : KV_PART_BYTES;
    bool last = t->off + n == t->vlen;
    if (last) {
        int rc = put_local(t);
        if (rc < 0)
            return put_local_failed(t, rc);
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    bool ok = msgpack_pack_map(&pk, last ? 6 : 5) == 0 && pack_kv_str(&pk, "op", last ? "put" : "part") &&
              pack_kv_u64(&pk, "xfer", t->xfer) && pack_kv_u64(&pk, "off", t->off) &&
              pack_kv_u64(&pk, "total", t->vlen);
    if (ok && last)
        ok = pack_bytes_str(&pk, "key", 3) && pack_bytes_str(&pk, t->key, t->klen);
    ok = ok && pack_bytes_str(&pk, last ? "value" : "data", last ? 5 : 4) && pack_bytes_bin(&pk, t->val + t->off, n);
    int rc = ok ? send_wait(t, &sb, last ? write_done : part_done) : write_failed(t, "kv: out of memory");
    msgpack_sbuffer_destroy(&sb);
    t->off += n;
    return rc;
}

static int kv_put(molt_txn_t *txn, kv_t *kv, const char *key, size_t klen)
{
    size_t vlen = 0;
    const char *val = molt_req_body(txn, &vlen);
    if (!val)
        val = "", vlen = 0;
    if (vlen > kv->max_value)
        return reply(txn, 413, "kv: the value is %zu bytes, more than max_value_bytes (%zu)\n", vlen, kv->max_value);
    if (kv->nkeys >= kv->max_keys && !table_find(kv->table, key, klen))
        return reply(txn, 507, "kv: full: max_keys (%zu) keys are stored\n", kv->max_keys);
    kv_txn_t *t = molt_txn_ctx(txn);
    if (!t)
        return MOLT_ERROR;
    *t = (kv_txn_t){.kv = kv, .txn = txn, .key = key, .klen = klen, .val = val, .vlen = vlen};
    if (vlen > MOLT_SIBLING_MAX_MSG - KV_MSG_OVERHEAD) {
        /* In parts; the id is unique across this worker's restarts too. */
        t->xfer = ((uint64_t)getpid() << 32) | ++kv->next_xfer;
        return send_part(t);
    }
    int rc = put_local(t);
    if (rc < 0)
        return put_local_failed(t, rc);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    bool ok = msgpack_pack_map(&pk, 3) == 0 && pack_kv_str(&pk, "op", "put") && pack_bytes_str(&pk, "key", 3) &&
              pack_bytes_str(&pk, key, klen) && pack_bytes_str(&pk, "value", 5) && pack_bytes_bin(&pk, val, vlen);
    rc = ok ? send_wait(t, &sb, write_done) : write_failed(t, "kv: out of memory");
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int kv_delete(molt_txn_t *txn, kv_t *kv, const char *key, size_t klen)
{
    if (!kv_del(kv, key, klen))
        return reply(txn, 404, "kv: no such key\n");
    kv_txn_t *t = molt_txn_ctx(txn);
    if (!t)
        return MOLT_ERROR;
    *t = (kv_txn_t){.kv = kv, .txn = txn, .key = key, .klen = klen, .status = 204};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    bool ok = msgpack_pack_map(&pk, 2) == 0 && pack_kv_str(&pk, "op", "del") && pack_bytes_str(&pk, "key", 3) &&
              pack_bytes_str(&pk, key, klen);
    int rc = ok ? send_wait(t, &sb, write_done) : write_failed(t, "kv: out of memory");
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int kv_handle(molt_txn_t *txn, void *data)
{
    kv_t *kv = data;
    size_t plen = 0;
    const char *path = molt_req_path(txn, &plen);
    const char *method = molt_req_method(txn);
    if (!path || plen < kv->prefix_len || memcmp(path, kv->prefix, kv->prefix_len) != 0)
        return reply(txn, 404, "kv: the path is not under %s (config \"prefix\": the route's prefix)\n",
                     kv->prefix);
    const char *key = path + kv->prefix_len;
    size_t klen = plen - kv->prefix_len;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool put = strcmp(method, "PUT") == 0, del = strcmp(method, "DELETE") == 0;
    if (klen == 0 && get)
        return kv_list(txn, kv);
    if (klen == 0 && !put && !del) {
        if (molt_resp_add_header(txn, "Allow", "GET, HEAD") != MOLT_OK)
            return MOLT_ERROR;
        return reply(txn, 405, "kv: %s %s: the list of keys takes GET and HEAD\n", method, kv->prefix);
    }
    if (!get && !put && !del) {
        if (molt_resp_add_header(txn, "Allow", "GET, HEAD, PUT, DELETE") != MOLT_OK)
            return MOLT_ERROR;
        return reply(txn, 405, "kv: a key takes GET, HEAD, PUT and DELETE, not %s\n", method);
    }
    const char *bad = key_error(key, klen);
    if (bad)
        return reply(txn, 400, "kv: %s (%s%s)\n", bad, kv->prefix, klen ? "KEY" : "");
    if (get)
        return kv_get(txn, kv, key, klen);
    return put ? kv_put(txn, kv, key, klen) : kv_delete(txn, kv, key, klen);
}

/* The client left while its write waited: the host cancelled the wait; drop a transfer's parts. */
static void kv_txn_abort(molt_txn_t *txn, void *data)
{
    (void)data;
    kv_txn_t *t = molt_txn_ctx(txn);
    if (t)
        xfer_abort(t);
}

/* ---- sibling messages (receiving side) ------------------------------------------------------ */

typedef struct kv_msg {
    const msgpack_object *op, *key, *value, *data, *xfer, *off, *total;
} kv_msg_t;

/* Splits a message into its fields; NULL, or why it is malformed. */
static const char *msg_parse(const msgpack_object *o, kv_msg_t *m)
{
    static const char *const names[] = {"op", "key", "value", "data", "xfer", "off", "total"};
    const msgpack_object **slots[] = {&m->op, &m->key, &m->value, &m->data, &m->xfer, &m->off, &m->total};
    memset(m, 0, sizeof(*m));
    if (o->type != MSGPACK_OBJECT_MAP)
        return "not a map";
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *f = &o->via.map.ptr[i];
        size_t j = 0;
        while (j < sizeof(names) / sizeof(names[0]) && !mp_is(&f->key, names[j]))
            j++;
        if (j == sizeof(names) / sizeof(names[0]))
            return "an unknown field";
        if (*slots[j])
            return "a field twice";
        *slots[j] = &f->val;
    }
    const char *p;
    size_t n;
    if (!m->op || m->op->type != MSGPACK_OBJECT_STR)
        return "no op";
    if (m->key && (!mp_bytes(m->key, &p, &n) || key_error(p, n)))
        return "a bad key";
    if ((m->value && !mp_bytes(m->value, &p, &n)) || (m->data && !mp_bytes(m->data, &p, &n)))
        return "a value that is not bytes";
    if ((m->xfer && m->xfer->type != MSGPACK_OBJECT_POSITIVE_INTEGER) ||
        (m->off && m->off->type != MSGPACK_OBJECT_POSITIVE_INTEGER) ||
        (m->total && m->total->type != MSGPACK_OBJECT_POSITIVE_INTEGER))
        return "a bad xfer, off or total";
    return NULL;
}

/* A part of transfer m->xfer from `slot` (the value's last part when key is set). */
static const char *recv_part(kv_t *kv, const kv_msg_t *m, const msgpack_object *bytes, unsigned slot)
{
    const char *p = NULL;
    size_t n = 0;
    if (!m->xfer || !m->off || !m->total || !bytes)
        return "a part without xfer, off, total and its bytes";
    mp_bytes(bytes, &p, &n);
    uint64_t xfer = m->xfer->via.u64, off = m->off->via.u64, total = m->total->via.u64;
    long long now = now_ms();
    kv_stage_t *s = stage_find(kv, slot, xfer);
    if (off == 0) {
        if (s)
            return "a transfer that started twice";
        if (total > kv->max_value || total > KV_LIMIT)
            return "a value over max_value_bytes";
        stage_expire(kv, now);
        if (kv->nstages >= KV_STAGES_MAX)
            return "a transfer beyond the 64 staged at once";
        s = calloc(1, sizeof(*s));
        if (!s || !(s->buf = malloc(total ? (size_t)total : 1))) {
            free(s);
            return "a transfer: out of memory";
        }
        s->slot = slot;
        s->xfer = xfer;
        s->total = (size_t)total;
        s->next = kv->stages;
        kv->stages = s;
        kv->nstages++;
    } else if (!s) {
        return "a part of a transfer whose start it did not get";
    }
    if (off != s->len || total != s->total || n > s->total - s->len) {
        stage_drop(kv, s);
        return "a part that does not follow the one before";
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->touched_ms = now;
    if (!m->key)
        return NULL;
    if (s->len != s->total) {
        stage_drop(kv, s);
        return "a last part before the value is complete";
    }
    mp_bytes(m->key, &p, &n);
    bool created;
    int rc = kv_set(kv, p, n, s->buf, s->len, &created);
    if (rc < 0) {
        stage_drop(kv, s);
        return rc == -ENOSPC ? "a new key beyond max_keys" : "a value: out of memory";
    }
    stage_unlink(kv, s); /* the table has its buffer now */
    free(s);
    return NULL;
}

static const char *recv_apply(kv_t *kv, const kv_msg_t *m, unsigned slot)
{
    const char *key = NULL, *val = NULL;
    size_t klen = 0, vlen = 0;
    if (m->key)
        mp_bytes(m->key, &key, &klen);
    if (mp_is(m->op, "part"))
        return m->key || m->value ? "a part with a key or value" : recv_part(kv, m, m->data, slot);
    if (mp_is(m->op, "abort")) {
        kv_stage_t *s = m->xfer ? stage_find(kv, slot, m->xfer->via.u64) : NULL;
        if (s)
            stage_drop(kv, s);
        return m->xfer ? NULL : "an abort without xfer";
    }
    if (mp_is(m->op, "del")) {
        if (!key || m->value || m->data || m->xfer)
            return "a del without a key alone";
        kv_del(kv, key, klen); /* absent is fine: the change is there */
        return NULL;
    }
    if (!mp_is(m->op, "put"))
        return "an unknown op";
    if (!key || !m->value || m->data)
        return "a put without key and value";
    if (m->xfer)
        return recv_part(kv, m, m->value, slot);
    if (m->off || m->total)
        return "a put with off or total but no xfer";
    mp_bytes(m->value, &val, &vlen);
    if (vlen > kv->max_value)
        return "a value over max_value_bytes";
    char *copy = copy_bytes(val, vlen);
    bool created;
    int rc = copy ? kv_set(kv, key, klen, copy, vlen, &created) : -ENOMEM;
    if (rc < 0) {
        free(copy);
        return rc == -ENOSPC ? "a new key beyond max_keys" : "a value: out of memory";
    }
    return NULL;
}

static int kv_sibling_recv(molt_instance_t *inst, const msgpack_object *msg, unsigned from_slot)
{
    kv_t *kv = molt_instance_data(inst);
    kv_msg_t m;
    const char *why = msg_parse(msg, &m);
    if (!why)
        why = recv_apply(kv, &m, from_slot);
    if (!why)
        return MOLT_OK;
    molt_log_instance(inst, MOLT_PLOG_WARN, "refused a message from worker %u: %s", from_slot, why);
    return MOLT_ERROR;
}

/* ---- state -------------------------------------------------------------------------------- */

static int kv_state_save(molt_instance_t *inst, struct msgpack_packer *pk)
{
    kv_t *kv = molt_instance_data(inst);
    kv_entry_t *e, *tmp;
    if (msgpack_pack_map(pk, (size_t)HASH_COUNT(kv->table)) != 0)
        return MOLT_ERROR;
    HASH_ITER(hh, kv->table, e, tmp)
    {
        if (!pack_bytes_str(pk, e->key, e->klen) || !pack_bytes_bin(pk, e->val, e->vlen))
            return MOLT_ERROR;
    }
    return MOLT_OK;
}

/* The state's entries as a table of their own (a later duplicate wins); MOLT_ERROR with the reason in err. */
static int restore_build(kv_t *kv, const msgpack_object *state, kv_entry_t **out, char *err, size_t errlen)
{
    char show[80];
    for (uint32_t i = 0; i < state->via.map.size; i++) {
        const msgpack_object_kv *f = &state->via.map.ptr[i];
        const char *key, *val, *bad;
        size_t klen, vlen;
        if (!mp_bytes(&f->key, &key, &klen)) {
            snprintf(err, errlen, "entry %u: the key is %s, expected a string", i, mp_type(&f->key));
            return MOLT_ERROR;
        }
        if ((bad = key_error(key, klen))) {
            snprintf(err, errlen, "entry %u (\"%s\"): %s", i, key_show(key, klen, show, sizeof(show)), bad);
            return MOLT_ERROR;
        }
        if (!mp_bytes(&f->val, &val, &vlen)) {
            snprintf(err, errlen, "key \"%s\": the value is %s, expected bin",
                     key_show(key, klen, show, sizeof(show)), mp_type(&f->val));
            return MOLT_ERROR;
        }
        if (vlen > kv->max_value) {
            snprintf(err, errlen, "key \"%s\": the value is %zu bytes, more than max_value_bytes (%zu)",
                     key_show(key, klen, show, sizeof(show)), vlen, kv->max_value);
            return MOLT_ERROR;
        }
        char *copy = copy_bytes(val, vlen);
        kv_entry_t *e = copy ? table_find(*out, key, klen) : NULL;
        if (copy && e) {
            free(e->val);
            e->val = copy;
            e->vlen = vlen;
            continue;
        }
        e = copy ? entry_new(key, klen, copy, vlen) : NULL;
        if (!e || !table_add(out, e)) {
            free(copy);
            free(e);
            snprintf(err, errlen, "out of memory at entry %u of %u", i, state->via.map.size);
            return MOLT_ERROR;
        }
    }
    return MOLT_OK;
}

/*
 * Moves `in` (a table built by restore_build) into kv's: its keys replace or
 * join kv's. All or nothing: the new keys move first, and an allocation that
 * fails takes those moved back out; replacing values allocates nothing.
 */
static int restore_merge(kv_t *kv, kv_entry_t **in, char *err, size_t errlen)
{
    kv_entry_t *e, *tmp, *moved = NULL;
    size_t fresh = 0;
    if (!kv->table) {
        if (HASH_COUNT(*in) > kv->max_keys) {
            snprintf(err, errlen, "the state has %u keys, more than max_keys (%zu)", HASH_COUNT(*in), kv->max_keys);
            return MOLT_ERROR;
        }
        kv->table = *in;
        kv->nkeys = HASH_COUNT(*in);
        *in = NULL;
        return MOLT_OK;
    }
    HASH_ITER(hh, *in, e, tmp)
    {
        e->link = table_find(kv->table, e->key, e->klen);
        fresh += !e->link;
    }
    if (kv->nkeys + fresh > kv->max_keys) {
        snprintf(err, errlen, "the state adds %zu keys to %zu, more than max_keys (%zu)", fresh, kv->nkeys,
                 kv->max_keys);
        return MOLT_ERROR;
    }
    HASH_ITER(hh, *in, e, tmp)
    {
        if (e->link)
            continue;
        HASH_DELETE(hh, *in, e);
        if (!table_add(&kv->table, e)) {
            entry_free(e);
            while (moved) {
                e = moved;
                moved = e->link;
                HASH_DELETE(hh, kv->table, e);
                entry_free(e);
            }
            snprintf(err, errlen, "out of memory while adding the state's keys");
            return MOLT_ERROR;
        }
        e->link = moved;
        moved = e;
    }
    HASH_ITER(hh, *in, e, tmp)
    {
        free(e->link->val);
        e->link->val = e->val;
        e->link->vlen = e->vlen;
        e->val = NULL;
        HASH_DELETE(hh, *in, e);
        free(e);
    }
    kv->nkeys += fresh;
    return MOLT_OK;
}

static int kv_state_restore(molt_instance_t *inst, const msgpack_object *state, uint32_t version, char *err,
                            size_t errlen)
{
    kv_t *kv = molt_instance_data(inst);
    kv_entry_t *in = NULL;
    if (version != KV_STATE_VERSION) {
        snprintf(err, errlen, "state version %u: this kv reads version %d", version, KV_STATE_VERSION);
        return MOLT_ERROR;
    }
    if (state->type != MSGPACK_OBJECT_MAP) {
        snprintf(err, errlen, "the state is %s, expected a map of key -> value", mp_type(state));
        return MOLT_ERROR;
    }
    int rc = restore_build(kv, state, &in, err, errlen);
    if (rc == MOLT_OK)
        rc = restore_merge(kv, &in, err, errlen);
    table_free(&in);
    return rc;
}

static int kv_health(molt_instance_t *inst, char *err, size_t errlen)
{
    kv_t *kv = molt_instance_data(inst);
    size_t staged = 0;
    for (kv_stage_t *s = kv->stages; s; s = s->next)
        staged++;
    if (HASH_COUNT(kv->table) != kv->nkeys || kv->nkeys > kv->max_keys || staged != kv->nstages) {
        snprintf(err, errlen, "inconsistent table: %u entries, %zu counted (max_keys %zu), %zu of %zu transfers",
                 HASH_COUNT(kv->table), kv->nkeys, kv->max_keys, staged, kv->nstages);
        return MOLT_ERROR;
    }
    return MOLT_OK;
}

MOLT_PLUGIN(.name = "kv", .version = "1.0.0", .flags = MOLT_PLUGIN_STRICT_STATE | MOLT_PLUGIN_REPLICATED,
            .init = kv_init, .fini = kv_fini, .handle = kv_handle, .txn_ctx_size = sizeof(kv_txn_t),
            .state_version = KV_STATE_VERSION, .state_save = kv_state_save, .state_restore = kv_state_restore,
            .health = kv_health, .txn_abort = kv_txn_abort, .sibling_recv = kv_sibling_recv,
            .state_reset = kv_state_reset)
