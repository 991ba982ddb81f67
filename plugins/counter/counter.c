/*
 * counter: counts the requests routed to it, per exact path, in each worker,
 * and answers with this worker's counts. It is the example of a stateful
 * plugin in snapshot mode with partitioned state (no flags, state_version 1);
 * docs/plugins.md, "Example stateful plugins", says what that means for
 * reloads and worker counts.
 *
 * HTTP, with the instance routed at e.g. "/count/": any request (any method)
 * counts one for its path (without the query), then the answer is
 *   200 application/json {"pid": 1234, "counts": {"/count/a": 3, "/count/b": 1}}
 * with the counts of the worker that served it (the request itself included),
 * keys sorted. Each worker counts on its own: `moltctl state counter` shows
 * them all.
 *
 * config (optional):
 *   max_paths  integer 1 to 100000000, default 10000: once this many paths
 *              are counted, requests for new ones count under the key
 *              "(other)" (so do paths that are not UTF-8)
 *
 * State (state_save / state_restore, version 1): one msgpack map
 * {path (str): count (uint)}, with "(other)" among the paths when not 0.
 * Restore ADDS the saved counts to this worker's: a reload restores every
 * old worker j with j mod N_new = i into new worker i, so 2 workers folding
 * into 1 keep the sum. A bad state leaves the counts as they were.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <msgpack.h>

#include "molt/plugin.h"

/* An allocation failure leaves a uthash table as it was (HASH_ADD then leaves hh.tbl NULL).
 * Paths come from clients, but max_paths bounds how long a chain can get. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#define COUNTER_STATE_VERSION 1
#define COUNTER_OTHER "(other)"
#define COUNTER_DEFAULT_MAX_PATHS 10000
#define COUNTER_MAX_PATHS_LIMIT 100000000
#define COUNTER_CAP ((uint64_t)INT64_MAX) /* counts stop there: JSON integers are signed */

typedef struct cnt_entry {
    UT_hash_handle hh;
    struct cnt_entry *link; /* during a restore: the entry this one adds to, or the next moved one */
    uint64_t count;
    size_t len;
    char path[]; /* len bytes, not NUL-terminated */
} cnt_entry_t;

typedef struct counter {
    cnt_entry_t *table;
    size_t max_paths;
    uint64_t other; /* "(other)": kept out of the table, so that it never needs allocating */
} counter_t;

/* ---- small helpers ---------------------------------------------------------------------- */

static uint64_t cap_add(uint64_t a, uint64_t b)
{
    return a >= COUNTER_CAP || b >= COUNTER_CAP - a ? COUNTER_CAP : a + b;
}

/* UTF-8 as JSON needs it (keys are shown in JSON): jansson is the judge. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    json_t *j = json_stringn((const char *)s, n);
    json_decref(j);
    return j != NULL;
}

static bool is_other(const char *p, size_t n)
{
    return n == sizeof(COUNTER_OTHER) - 1 && memcmp(p, COUNTER_OTHER, n) == 0;
}

/* A path for a one-line message: at most 60 bytes, control characters as '?'. */
static const char *path_show(const char *p, size_t len, char *buf, size_t buflen)
{
    size_t n = len < 60 ? len : 60, o = 0;
    for (size_t i = 0; i < n && o + 1 < buflen; i++)
        buf[o++] = (unsigned char)p[i] < 0x20 || p[i] == 0x7f ? '?' : p[i];
    buf[o] = '\0';
    if (len > n && o + 4 < buflen)
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
        return "an unsigned integer";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "a negative integer";
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

/* ---- the table ---------------------------------------------------------------------------- */

static cnt_entry_t *table_find(cnt_entry_t *head, const char *path, size_t len)
{
    cnt_entry_t *e = NULL;
    HASH_FIND(hh, head, path, len, e);
    return e;
}

/* A new entry added to the table, or NULL (the table unchanged) if out of memory. */
static cnt_entry_t *table_new(cnt_entry_t **head, const char *path, size_t len, uint64_t count)
{
    cnt_entry_t *e = malloc(sizeof(*e) + len);
    if (!e)
        return NULL;
    memset(e, 0, sizeof(*e));
    memcpy(e->path, path, len);
    e->len = len;
    e->count = count;
    HASH_ADD_KEYPTR(hh, *head, e->path, e->len, e);
    if (!e->hh.tbl) {
        free(e);
        return NULL;
    }
    return e;
}

static bool table_move(cnt_entry_t **head, cnt_entry_t *e)
{
    HASH_ADD_KEYPTR(hh, *head, e->path, e->len, e);
    return e->hh.tbl != NULL;
}

static void table_free(cnt_entry_t **head)
{
    cnt_entry_t *e, *tmp;
    HASH_ITER(hh, *head, e, tmp)
    {
        HASH_DELETE(hh, *head, e);
        free(e);
    }
}

/* ---- config and lifecycle ----------------------------------------------------------------- */

static int counter_config(counter_t *c, const char *config_json, char *err, size_t errlen)
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
        if (strcmp(name, "max_paths") != 0) {
            snprintf(err, errlen, "config: unknown key \"%.64s\" (counter takes max_paths)", name);
            goto out;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > COUNTER_MAX_PATHS_LIMIT) {
            char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            snprintf(err, errlen, "config: max_paths must be an integer from 1 to %d, got %.60s",
                     COUNTER_MAX_PATHS_LIMIT, text ? text : "?");
            free(text);
            goto out;
        }
        c->max_paths = (size_t)json_integer_value(v);
    }
    rc = MOLT_OK;
out:
    json_decref(cfg);
    return rc;
}

static void counter_free(counter_t *c)
{
    if (!c)
        return;
    table_free(&c->table);
    free(c);
}

static int counter_init(molt_instance_t *inst, const char *config_json, char *err, size_t errlen)
{
    counter_t *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return MOLT_ERROR;
    }
    c->max_paths = COUNTER_DEFAULT_MAX_PATHS;
    if (counter_config(c, config_json, err, errlen) != MOLT_OK) {
        counter_free(c);
        return MOLT_ERROR;
    }
    molt_instance_set_data(inst, c);
    return MOLT_OK;
}

static void counter_fini(molt_instance_t *inst)
{
    counter_free(molt_instance_data(inst));
    molt_instance_set_data(inst, NULL);
}

/* A rollback hands a served generation's counts back: zero, then restored. */
static void counter_state_reset(molt_instance_t *inst)
{
    counter_t *c = molt_instance_data(inst);
    table_free(&c->table);
    c->other = 0;
}

/* ---- requests ----------------------------------------------------------------------------- */

/* Counts one for path (or for "(other)"); false if out of memory. */
static bool count_path(counter_t *c, const char *path, size_t len)
{
    if (!path || len == 0 || !utf8_valid((const unsigned char *)path, len)) {
        c->other = cap_add(c->other, 1);
        return true;
    }
    cnt_entry_t *e = table_find(c->table, path, len);
    if (e) {
        e->count = cap_add(e->count, 1);
        return true;
    }
    if (HASH_COUNT(c->table) >= c->max_paths) {
        c->other = cap_add(c->other, 1);
        return true;
    }
    return table_new(&c->table, path, len, 1) != NULL;
}

/* {"pid": P, "counts": {...}} as compact JSON, keys sorted; NULL if out of memory. */
static char *counts_json(const counter_t *c)
{
    json_t *counts = json_object(), *root = NULL;
    char *text = NULL;
    cnt_entry_t *e, *tmp;
    if (!counts)
        return NULL;
    HASH_ITER(hh, c->table, e, tmp)
    {
        /* paths are UTF-8 (checked when counted or restored): setn only fails when out of memory */
        if (json_object_setn_new(counts, e->path, e->len, json_integer((json_int_t)e->count)) != 0)
            goto out;
    }
    if (c->other && json_object_set_new(counts, COUNTER_OTHER, json_integer((json_int_t)c->other)) != 0)
        goto out;
    root = json_pack("{s:I,s:O}", "pid", (json_int_t)getpid(), "counts", counts);
    if (root)
        text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
out:
    json_decref(root);
    json_decref(counts);
    return text;
}

static int counter_handle(molt_txn_t *txn, void *data)
{
    counter_t *c = data;
    size_t len = 0;
    const char *path = molt_req_path(txn, &len);
    if (!count_path(c, path, len)) {
        molt_log_instance(molt_txn_instance(txn), MOLT_PLOG_ERROR, "out of memory counting a new path");
        return MOLT_ERROR;
    }
    char *text = counts_json(c);
    if (!text)
        return MOLT_ERROR;
    int rc = MOLT_ERROR;
    if (molt_resp_add_header(txn, "Content-Type", "application/json") == MOLT_OK &&
        molt_resp_write(txn, text, strlen(text)) == MOLT_OK && molt_resp_write(txn, "\n", 1) == MOLT_OK)
        rc = MOLT_OK;
    free(text);
    return rc;
}

/* ---- state -------------------------------------------------------------------------------- */

static bool pack_str(msgpack_packer *pk, const char *p, size_t n)
{
    return msgpack_pack_str(pk, n) == 0 && msgpack_pack_str_body(pk, p, n) == 0;
}

static int counter_state_save(molt_instance_t *inst, struct msgpack_packer *pk)
{
    counter_t *c = molt_instance_data(inst);
    cnt_entry_t *e, *tmp;
    if (msgpack_pack_map(pk, (size_t)HASH_COUNT(c->table) + (c->other != 0)) != 0)
        return MOLT_ERROR;
    HASH_ITER(hh, c->table, e, tmp)
    {
        if (!pack_str(pk, e->path, e->len) || msgpack_pack_uint64(pk, e->count) != 0)
            return MOLT_ERROR;
    }
    if (c->other && (!pack_str(pk, COUNTER_OTHER, sizeof(COUNTER_OTHER) - 1) || msgpack_pack_uint64(pk, c->other) != 0))
        return MOLT_ERROR;
    return MOLT_OK;
}

/* The state's counts as a table of their own (duplicate paths summed) and its
 * "(other)" in *other; MOLT_ERROR with the reason in err. */
static int restore_build(const msgpack_object *state, cnt_entry_t **out, uint64_t *other, char *err, size_t errlen)
{
    char show[80];
    for (uint32_t i = 0; i < state->via.map.size; i++) {
        const msgpack_object *k = &state->via.map.ptr[i].key, *v = &state->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR && k->type != MSGPACK_OBJECT_BIN) {
            snprintf(err, errlen, "entry %u: the key is %s, expected a string (a path)", i, mp_type(k));
            return MOLT_ERROR;
        }
        const char *p = k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : k->via.bin.ptr;
        size_t n = k->type == MSGPACK_OBJECT_STR ? k->via.str.size : k->via.bin.size;
        if (n == 0 || !utf8_valid((const unsigned char *)p, n)) {
            snprintf(err, errlen, "entry %u: the path is %s", i, n ? "not UTF-8" : "empty");
            return MOLT_ERROR;
        }
        if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            snprintf(err, errlen, "path \"%s\": the count is %s, expected an unsigned integer",
                     path_show(p, n, show, sizeof(show)), mp_type(v));
            return MOLT_ERROR;
        }
        if (is_other(p, n)) {
            *other = cap_add(*other, v->via.u64);
            continue;
        }
        if (v->via.u64 == 0)
            continue;
        cnt_entry_t *e = table_find(*out, p, n);
        if (e)
            e->count = cap_add(e->count, v->via.u64);
        else if (!table_new(out, p, n, cap_add(0, v->via.u64))) {
            snprintf(err, errlen, "out of memory at entry %u of %u", i, state->via.map.size);
            return MOLT_ERROR;
        }
    }
    return MOLT_OK;
}

/*
 * Adds `in` (a table built by restore_build) to c's counts. All or nothing:
 * new paths move into the table first (up to max_paths; the rest go to
 * "(other)"), and an allocation that fails takes those moved back out;
 * adding to counts allocates nothing.
 */
static int restore_merge(counter_t *c, cnt_entry_t **in, uint64_t other, char *err, size_t errlen)
{
    cnt_entry_t *e, *tmp, *moved = NULL;
    size_t room = c->max_paths > HASH_COUNT(c->table) ? c->max_paths - HASH_COUNT(c->table) : 0;
    HASH_ITER(hh, *in, e, tmp)
    {
        e->link = table_find(c->table, e->path, e->len);
        if (e->link || room == 0)
            continue;
        HASH_DELETE(hh, *in, e);
        if (!table_move(&c->table, e)) {
            free(e);
            while (moved) {
                e = moved;
                moved = e->link;
                HASH_DELETE(hh, c->table, e);
                free(e);
            }
            snprintf(err, errlen, "out of memory while adding the state's paths");
            return MOLT_ERROR;
        }
        e->link = moved;
        moved = e;
        room--;
    }
    HASH_ITER(hh, *in, e, tmp)
    {
        if (e->link)
            e->link->count = cap_add(e->link->count, e->count);
        else
            other = cap_add(other, e->count); /* beyond max_paths */
        HASH_DELETE(hh, *in, e);
        free(e);
    }
    c->other = cap_add(c->other, other);
    return MOLT_OK;
}

static int counter_state_restore(molt_instance_t *inst, const msgpack_object *state, uint32_t version, char *err,
                                 size_t errlen)
{
    counter_t *c = molt_instance_data(inst);
    cnt_entry_t *in = NULL;
    uint64_t other = 0;
    if (version != COUNTER_STATE_VERSION) {
        snprintf(err, errlen, "state version %u: this counter reads version %d", version, COUNTER_STATE_VERSION);
        return MOLT_ERROR;
    }
    if (state->type != MSGPACK_OBJECT_MAP) {
        snprintf(err, errlen, "the state is %s, expected a map of path -> count", mp_type(state));
        return MOLT_ERROR;
    }
    int rc = restore_build(state, &in, &other, err, errlen);
    if (rc == MOLT_OK)
        rc = restore_merge(c, &in, other, err, errlen);
    table_free(&in);
    return rc;
}

MOLT_PLUGIN(.name = "counter", .version = "1.0.0", .init = counter_init, .fini = counter_fini,
            .handle = counter_handle, .state_version = COUNTER_STATE_VERSION, .state_save = counter_state_save,
            .state_restore = counter_state_restore, .state_reset = counter_state_reset)
