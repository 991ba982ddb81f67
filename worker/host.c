/*
 * The host API: the function table plugins call (include/molt/plugin.h).
 * Every function here validates what a plugin hands it; a plugin's mistake
 * gets MOLT_ERROR and a log line naming the instance, never a broken response.
 */
#include "worker/host.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <ev.h>

#include "shared/config.h"

#include "shared/chan.h"
#include "shared/entry.h"
#include "shared/util.h"
#include "shared/log.h"
#include "worker/http.h"
#include "worker/pipeline.h"
#include "worker/plugins.h"
#include "worker/sibling.h"
#include "worker/txn.h"

struct molt_instance *wrk_host_current;
bool wrk_host_in_init;
struct ev_loop *wrk_host_loop;
struct wrk_plugins *wrk_host_plugins;

static const char *h_instance_name(const molt_instance_t *inst)
{
    return inst->cfg->name;
}

static void *h_instance_data(const molt_instance_t *inst)
{
    return inst->data;
}

static void h_instance_set_data(molt_instance_t *inst, void *data)
{
    inst->data = data;
}

static void h_vlog(const molt_instance_t *inst, int level, const char *fmt, va_list ap)
{
    char prefix[96];
    if (level < MOLT_PLOG_DEBUG)
        level = MOLT_PLOG_DEBUG;
    if (level > MOLT_PLOG_ERROR)
        level = MOLT_PLOG_ERROR;
    /* molt_plog_level_t values match molt_log_level_t's first five */
    snprintf(prefix, sizeof(prefix), "plugin %s", inst ? inst->cfg->name : "?");
    molt_log_prefixed((molt_log_level_t)level, prefix, fmt, ap);
}

static const char *h_req_method(const molt_txn_t *txn)
{
    return txn->method;
}

static const char *h_req_path(const molt_txn_t *txn, size_t *len)
{
    if (len)
        *len = txn->path_len;
    return txn->path;
}

static const char *h_req_query(const molt_txn_t *txn, size_t *len)
{
    if (len)
        *len = txn->query ? txn->query_len : 0;
    return txn->query;
}

static const char *h_req_header(const molt_txn_t *txn, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i < txn->nheaders; i++) {
        const wrk_header_t *h = &txn->headers[i];
        if (h->name_len == nlen && strncasecmp(h->name, name, nlen) == 0) {
            if (len)
                *len = h->value_len;
            return h->value;
        }
    }
    if (len)
        *len = 0;
    return NULL;
}

static const char *h_req_body(const molt_txn_t *txn, size_t *len)
{
    if (len)
        *len = txn->body ? txn->body_len : 0;
    return txn->body;
}

static int h_req_version(const molt_txn_t *txn)
{
    return txn->version;
}

static molt_instance_t *h_txn_instance(const molt_txn_t *txn)
{
    return txn->instance;
}

/* The response is complete once TXN_END runs; a change then would be sent
 * while the plugin was told it was too late. */
static bool resp_sealed(const molt_txn_t *txn, const char *what)
{
    if (!wrk_pipeline_sealed(txn))
        return false;
    molt_warn("plugin %s: %s refused: the response is complete at txn_end",
              wrk_host_current ? wrk_host_current->cfg->name : "?", what);
    return true;
}

static int h_resp_set_status(molt_txn_t *txn, int status)
{
    if (status < 100 || status > 599 || txn->streaming || resp_sealed(txn, "resp_set_status"))
        return MOLT_ERROR;
    txn->status = status;
    return MOLT_OK;
}

/* RFC 9110 token characters. */
static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 32 || c >= 127 || strchr("\"(),/:;<=>?@[\\]{}", c))
            return false;
    }
    return true;
}

static bool is_field_value(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 32 && c != '\t') || c == 127)
            return false;
    }
    return true;
}

/* Headers that the host computes itself; a plugin setting them would produce
 * a response that contradicts its own framing. */
static const char *const host_headers[] = {"Content-Length", "Transfer-Encoding", "Connection", "Date"};

static int h_resp_add_header(molt_txn_t *txn, const char *name, const char *value)
{
    const char *who = wrk_host_current ? wrk_host_current->cfg->name : "?";
    if (!name || !value || !is_token(name) || !is_field_value(value)) {
        molt_warn("plugin %s: refused response header \"%s\": invalid name or value", who,
                  name ? name : "(null)");
        return MOLT_ERROR;
    }
    for (size_t i = 0; i < sizeof(host_headers) / sizeof(host_headers[0]); i++) {
        if (strcasecmp(name, host_headers[i]) == 0) {
            molt_warn("plugin %s: refused response header \"%s\": molt sets it", who, name);
            return MOLT_ERROR;
        }
    }
    if (txn->streaming || resp_sealed(txn, "resp_add_header"))
        return MOLT_ERROR;
    if (molt_buf_printf(&txn->resp_headers, "%s: %s\r\n", name, value) < 0)
        return MOLT_ERROR;
    return MOLT_OK;
}

static int h_resp_write(molt_txn_t *txn, const void *data, size_t len)
{
    if (resp_sealed(txn, "resp_write"))
        return MOLT_ERROR;
    return molt_buf_append(&txn->resp_body, data, len) < 0 ? MOLT_ERROR : MOLT_OK;
}

static int h_resp_flush(molt_txn_t *txn)
{
    if (resp_sealed(txn, "resp_flush"))
        return MOLT_ERROR;
    /* The head goes out now: response-header callbacks run before it. */
    if (!txn->streaming)
        wrk_pipeline_response_headers(txn);
    return wrk_http_txn_flush(txn) < 0 ? MOLT_ERROR : MOLT_OK;
}

static int h_resp_status(const molt_txn_t *txn)
{
    return txn->status;
}

static int h_txn_set_ptr(molt_txn_t *txn, void *ptr, void (*release)(void *ptr))
{
    wrk_txn_ptr_t *p = wrk_pipeline_ptr(txn, wrk_host_current);
    if (!p)
        return MOLT_ERROR;
    if (p->ptr && p->release && p->ptr != ptr)
        p->release(p->ptr);
    p->ptr = ptr;
    p->release = release;
    return MOLT_OK;
}

static void *h_txn_get_ptr(molt_txn_t *txn)
{
    wrk_txn_ptr_t *p = wrk_pipeline_ptr(txn, wrk_host_current);
    return p ? p->ptr : NULL;
}

static molt_session_t *h_txn_session(const molt_txn_t *txn)
{
    return txn->session;
}

static uint64_t h_session_id(const molt_session_t *ses)
{
    return ses->id;
}

static const char *h_session_peer(const molt_session_t *ses)
{
    struct molt_session *s = (struct molt_session *)ses; /* the cache is ours */
    if (!s->peer[0]) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getpeername(s->fd, (struct sockaddr *)&ss, &len) < 0)
            snprintf(s->peer, sizeof(s->peer), "unknown");
        else if (ss.ss_family == AF_UNIX)
            snprintf(s->peer, sizeof(s->peer), "unix");
        else
            molt_format_address((struct sockaddr *)&ss, len, s->peer, sizeof(s->peer));
    }
    return s->peer;
}

static const char *caller(void)
{
    return wrk_host_current ? wrk_host_current->cfg->name : "?";
}

static int h_txn_disable_instance(molt_txn_t *txn, const char *instance)
{
    if (!instance || !wrk_plugins_find(wrk_pipeline_plugins(), instance)) {
        molt_warn("plugin %s: txn_disable_instance: no instance named \"%s\"", caller(),
                  instance ? instance : "(null)");
        return MOLT_ERROR;
    }
    wrk_overlay_t *ov = wrk_pipeline_overlay(txn);
    if (!ov)
        return MOLT_ERROR;
    wrk_hooks_disable_instance(wrk_pipeline_hooks(), ov, instance);
    return MOLT_OK;
}

static int h_txn_hook_list(molt_txn_t *txn, molt_hook_id_t hook, molt_cb_info_t *out, size_t max)
{
    return wrk_hooks_list(wrk_pipeline_hooks(), wrk_pipeline_overlay(txn), hook, out, out ? max : 0);
}

static int h_txn_hook_enable(molt_txn_t *txn, molt_hook_id_t hook, const char *instance, const char *callback,
                             int enabled)
{
    return wrk_hooks_set_enabled(wrk_pipeline_hooks(), wrk_pipeline_overlay(txn), hook, instance, callback,
                                 enabled != 0) > 0
               ? MOLT_OK
               : MOLT_ERROR;
}

static int h_txn_hook_priority(molt_txn_t *txn, molt_hook_id_t hook, const char *instance,
                               const char *callback, int priority)
{
    return wrk_hooks_set_priority(wrk_pipeline_hooks(), wrk_pipeline_overlay(txn), hook, instance, callback,
                                  priority) > 0
               ? MOLT_OK
               : MOLT_ERROR;
}

static int h_api_publish(molt_instance_t *inst, const char *api_name, uint32_t version, const void *api)
{
    if (!api_name || !api_name[0] || !api) {
        molt_warn("plugin %s: api_publish needs a name and a pointer", inst->cfg->name);
        return MOLT_ERROR;
    }
    for (size_t i = 0; i < inst->napis; i++) {
        if (strcmp(inst->apis[i].name, api_name) == 0) {
            molt_warn("plugin %s: api \"%s\" is already published", inst->cfg->name, api_name);
            return MOLT_ERROR;
        }
    }
    if (inst->napis == WRK_MAX_APIS) {
        molt_warn("plugin %s: more than %d APIs published", inst->cfg->name, WRK_MAX_APIS);
        return MOLT_ERROR;
    }
    char *name = strdup(api_name);
    if (!name)
        return MOLT_ERROR;
    inst->apis[inst->napis++] = (wrk_api_t){.name = name, .version = version, .ptr = api};
    return MOLT_OK;
}

static const void *h_api_lookup(const molt_instance_t *inst, const char *provider, const char *api_name,
                                uint32_t min_version)
{
    /* Called from init, before the pipeline exists: the set being loaded. */
    wrk_plugins_t *ps = wrk_host_plugins;
    if (!ps) {
        molt_warn("plugin %s: api_lookup: no plugin set is loaded", inst->cfg->name);
        return NULL;
    }
    struct molt_instance *prov = provider ? wrk_plugins_find(ps, provider) : NULL;
    size_t matches = 0;
    /* Not an instance name: a plugin name, which must be configured exactly once
     * (count every instance of it, not only the first). */
    if (!prov && provider) {
        for (size_t i = 0; i < ps->ninsts; i++)
            if (strcmp(ps->insts[i].dso->desc.name, provider) == 0 && matches++ == 0)
                prov = &ps->insts[i];
    }
    if (!prov || matches > 1) {
        molt_warn("plugin %s: api_lookup: %s \"%s\"", inst->cfg->name,
                  matches > 1 ? "several instances use plugin" : "no instance or plugin named",
                  provider ? provider : "(null)");
        return NULL;
    }
    for (size_t i = 0; api_name && i < prov->napis; i++) {
        if (strcmp(prov->apis[i].name, api_name) != 0)
            continue;
        if (prov->apis[i].version < min_version) {
            molt_warn("plugin %s: api_lookup: %s publishes %s version %u, older than the %u needed",
                      inst->cfg->name, prov->cfg->name, api_name, prov->apis[i].version, min_version);
            return NULL;
        }
        return prov->apis[i].ptr;
    }
    molt_warn("plugin %s: api_lookup: %s publishes no api \"%s\"%s", inst->cfg->name, prov->cfg->name,
              api_name ? api_name : "(null)", prov->initialised ? "" : " (it is not initialised yet: add it to deps)");
    return NULL;
}

static void *h_txn_ctx(molt_txn_t *txn)
{
    return wrk_pipeline_ctx(txn, wrk_host_current);
}

/* ---- asynchronous work ------------------------------------------------------------------- */

static int h_txn_resume(molt_txn_t *txn, int rc)
{
    return wrk_pipeline_resume(txn, rc);
}

/*
 * Timers and fd watchers: libev watchers on the worker's loop, each on its
 * instance's list so that the host can cancel what is left at stop. A
 * callback runs as its instance (wrk_host_current). Freeing from inside a
 * callback is deferred until it returns (`in_cb`, `dead`).
 */
struct molt_timer {
    ev_timer w;
    struct molt_instance *inst;
    struct molt_timer *prev, *next; /* inst->timers */
    void (*fn)(molt_timer_t *t, void *arg);
    void *arg;
    bool repeat;
    bool in_cb; /* fn is running: free when it returns */
    bool dead;  /* stopped (and off the list): free when fn returns */
};

struct molt_watch {
    ev_io w;
    struct molt_instance *inst;
    struct molt_watch *prev, *next; /* inst->watches */
    void (*fn)(molt_watch_t *w, int fd, int revents, void *arg);
    void *arg;
    bool in_cb;
    bool dead;
};

/* The owner named by a plugin: inst, or the calling instance for NULL. */
static struct molt_instance *owner(molt_instance_t *inst, const char *what)
{
    if (!inst)
        inst = wrk_host_current;
    if (!inst) {
        molt_warn("plugin ?: %s needs an instance (NULL is only allowed from within a callback)", what);
        return NULL;
    }
    if (!wrk_host_loop) {
        molt_warn("plugin %s: %s: no event loop in this process", inst->cfg->name, what);
        return NULL;
    }
    return inst;
}

static void timer_unlink(molt_timer_t *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        t->inst->timers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
}

/* Stops t and takes it off its list; frees it unless its callback is running. */
static void timer_kill(molt_timer_t *t)
{
    ev_timer_stop(wrk_host_loop, &t->w);
    timer_unlink(t);
    t->dead = true;
    if (!t->in_cb)
        free(t);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    molt_timer_t *t = (molt_timer_t *)w;
    (void)loop, (void)revents;
    struct molt_instance *saved = wrk_host_current;
    wrk_host_current = t->inst;
    t->in_cb = true;
    t->fn(t, t->arg);
    t->in_cb = false;
    wrk_host_current = saved;
    if (t->dead)
        free(t);
    else if (!t->repeat)
        timer_kill(t); /* a one-shot timer is done */
}

static molt_timer_t *h_timer_start(molt_instance_t *inst, uint64_t after_ms, uint64_t repeat_ms,
                                   void (*fn)(molt_timer_t *t, void *arg), void *arg)
{
    struct molt_instance *o = owner(inst, "timer_start");
    if (!o)
        return NULL;
    if (!fn) {
        molt_warn("plugin %s: timer_start without a callback", o->cfg->name);
        return NULL;
    }
    molt_timer_t *t = calloc(1, sizeof(*t));
    if (!t) {
        molt_warn("plugin %s: timer_start: out of memory", o->cfg->name);
        return NULL;
    }
    t->inst = o;
    t->fn = fn;
    t->arg = arg;
    t->repeat = repeat_ms > 0;
    ev_timer_init(&t->w, timer_cb, after_ms / 1000.0, repeat_ms / 1000.0);
    t->next = o->timers;
    if (t->next)
        t->next->prev = t;
    o->timers = t;
    /* Counted from now, not from when the loop last woke up (a plugin may
     * start a timer after a long callback). */
    ev_now_update(wrk_host_loop);
    ev_timer_start(wrk_host_loop, &t->w);
    return t;
}

static void h_timer_stop(molt_timer_t *t)
{
    if (t && !t->dead)
        timer_kill(t);
}

static void watch_unlink(molt_watch_t *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        w->inst->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

static void watch_kill(molt_watch_t *w)
{
    ev_io_stop(wrk_host_loop, &w->w);
    watch_unlink(w);
    w->dead = true;
    if (!w->in_cb)
        free(w);
}

static void watch_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    molt_watch_t *w = (molt_watch_t *)io;
    (void)loop;
    int ev = (revents & EV_READ ? MOLT_EV_READ : 0) | (revents & EV_WRITE ? MOLT_EV_WRITE : 0);
    struct molt_instance *saved = wrk_host_current;
    wrk_host_current = w->inst;
    w->in_cb = true;
    w->fn(w, w->w.fd, ev, w->arg);
    w->in_cb = false;
    wrk_host_current = saved;
    if (w->dead)
        free(w);
}

static molt_watch_t *h_fd_watch(molt_instance_t *inst, int fd, int events,
                                void (*fn)(molt_watch_t *w, int fd, int revents, void *arg), void *arg)
{
    struct molt_instance *o = owner(inst, "fd_watch");
    if (!o)
        return NULL;
    if (fd < 0 || !fn || !events || (events & ~(MOLT_EV_READ | MOLT_EV_WRITE))) {
        molt_warn("plugin %s: fd_watch needs an fd, a callback and events MOLT_EV_READ and/or MOLT_EV_WRITE "
                  "(got fd %d, events %d)",
                  o->cfg->name, fd, events);
        return NULL;
    }
    molt_watch_t *w = calloc(1, sizeof(*w));
    if (!w) {
        molt_warn("plugin %s: fd_watch: out of memory", o->cfg->name);
        return NULL;
    }
    w->inst = o;
    w->fn = fn;
    w->arg = arg;
    ev_io_init(&w->w, watch_cb, fd,
               (events & MOLT_EV_READ ? EV_READ : 0) | (events & MOLT_EV_WRITE ? EV_WRITE : 0));
    w->next = o->watches;
    if (w->next)
        w->next->prev = w;
    o->watches = w;
    ev_io_start(wrk_host_loop, &w->w);
    return w;
}

static void h_fd_unwatch(molt_watch_t *w)
{
    if (w && !w->dead)
        watch_kill(w);
}

void wrk_host_cancel_async(struct molt_instance *inst)
{
    unsigned ntimers = 0, nwatches = 0;
    while (inst->timers) {
        timer_kill(inst->timers);
        ntimers++;
    }
    while (inst->watches) {
        watch_kill(inst->watches);
        nwatches++;
    }
    if (ntimers + nwatches)
        molt_info("plugin %s: cancelled %u timers and %u fd watchers at stop", inst->cfg->name, ntimers,
                  nwatches);
}

/* ---- named slots ---- */

#define SLOT_REPLY_TIMEOUT_MS 5000

/*
 * Asks the supervisor (the registry, supervisor/slots.c) for the index of a
 * name, and waits for the answer: the one place a worker waits on its
 * channel, allowed because it happens in init, before anything is served.
 */
static int h_slot_reserve(molt_instance_t *inst, int level, const char *name)
{
    const char *who = inst ? inst->cfg->name : "?";
    if (!wrk_host_in_init) {
        molt_warn("plugin %s: molt_slot_reserve(\"%s\") outside init; refused", who, name ? name : "");
        return -1;
    }
    if ((level != MOLT_SLOT_TXN && level != MOLT_SLOT_SESSION) || !name || !name[0]) {
        molt_warn("plugin %s: molt_slot_reserve needs a level and a name", who);
        return -1;
    }
    molt_body_t body;
    molt_body_init(&body);
    msgpack_pack_map(&body.pk, 2);
    molt_mp_pack_kv_u64(&body.pk, "level", (uint64_t)level);
    molt_mp_pack_kv_str(&body.pk, "name", name);
    int rc = molt_chan_send(MOLT_WRK_FD_CHANNEL, MOLT_MSG_SLOT_RESERVE, &body.sb, NULL, 0);
    molt_body_free(&body);
    if (rc < 0) {
        molt_warn("plugin %s: asking for slot \"%s\" failed: %s", who, name, strerror(-rc));
        return -1;
    }
    uint64_t deadline = molt_now_ms() + SLOT_REPLY_TIMEOUT_MS;
    for (;;) {
        molt_msg_t msg;
        rc = molt_chan_recv(MOLT_WRK_FD_CHANNEL, &msg);
        if (rc == -EAGAIN) {
            uint64_t now = molt_now_ms();
            if (now >= deadline)
                break;
            struct pollfd pfd = {.fd = MOLT_WRK_FD_CHANNEL, .events = POLLIN};
            poll(&pfd, 1, (int)(deadline - now));
            continue;
        }
        if (rc < 0)
            break;
        int idx = -1;
        if (msg.type == MOLT_MSG_SLOT_INDEX) {
            uint64_t v;
            char err[128] = "";
            if (molt_msg_get_u64(&msg, "index", &v) && v < MOLT_SLOTS_MAX)
                idx = (int)v;
            else if (molt_msg_get_str(&msg, "error", err, sizeof(err)))
                molt_warn("plugin %s: slot \"%s\" refused: %s", who, name, err);
            molt_msg_free(&msg);
            return idx;
        }
        /* Nothing else is sent to a worker that is not ready yet. */
        molt_warn("unexpected %s message while reserving a slot; ignored", molt_msg_type_name(msg.type));
        molt_msg_free(&msg);
    }
    molt_warn("plugin %s: no answer for slot \"%s\" from the supervisor", who, name);
    return -1;
}

static void *h_txn_slot_get(const molt_txn_t *txn, int index)
{
    void **slots = (unsigned)index < MOLT_SLOTS_MAX ? wrk_pipeline_txn_slots((molt_txn_t *)txn, false) : NULL;
    return slots ? slots[index] : NULL;
}

static int h_txn_slot_set(molt_txn_t *txn, int index, void *value)
{
    void **slots = (unsigned)index < MOLT_SLOTS_MAX ? wrk_pipeline_txn_slots(txn, true) : NULL;
    if (!slots)
        return MOLT_ERROR;
    slots[index] = value;
    return MOLT_OK;
}

static void *h_session_slot_get(const molt_session_t *ses, int index)
{
    return (unsigned)index < MOLT_SLOTS_MAX && ses->slots ? ses->slots[index] : NULL;
}

static int h_session_slot_set(molt_session_t *ses, int index, void *value)
{
    if ((unsigned)index >= MOLT_SLOTS_MAX)
        return MOLT_ERROR;
    if (!ses->slots && !(ses->slots = calloc(MOLT_SLOTS_MAX, sizeof(void *))))
        return MOLT_ERROR;
    ses->slots[index] = value;
    return MOLT_OK;
}

static int h_sibling_send(molt_instance_t *inst, const void *msg, size_t len, uint64_t *seq)
{
    struct molt_instance *o = owner(inst, "sibling_send");
    return o ? wrk_sibling_send(o, msg, len, seq) : MOLT_ERROR;
}

static int h_sibling_wait(molt_txn_t *txn, uint64_t seq, uint32_t timeout_ms,
                          void (*done)(molt_txn_t *txn, int rc, const char *error, void *arg), void *arg)
{
    struct molt_instance *o = owner(NULL, "sibling_wait");
    return o ? wrk_sibling_wait(o, txn, seq, timeout_ms, done, arg) : MOLT_ERROR;
}

const molt_host_api_t wrk_host_api = {
    .abi_major = MOLT_ABI_MAJOR,
    .abi_minor = MOLT_ABI_MINOR,
    .struct_size = sizeof(molt_host_api_t),
    .instance_name = h_instance_name,
    .instance_data = h_instance_data,
    .instance_set_data = h_instance_set_data,
    .vlog = h_vlog,
    .req_method = h_req_method,
    .req_path = h_req_path,
    .req_query = h_req_query,
    .req_header = h_req_header,
    .req_body = h_req_body,
    .req_version = h_req_version,
    .txn_instance = h_txn_instance,
    .resp_set_status = h_resp_set_status,
    .resp_add_header = h_resp_add_header,
    .resp_write = h_resp_write,
    .resp_flush = h_resp_flush,
    .txn_ctx = h_txn_ctx,
    .resp_status = h_resp_status,
    .txn_set_ptr = h_txn_set_ptr,
    .txn_get_ptr = h_txn_get_ptr,
    .txn_session = h_txn_session,
    .session_id = h_session_id,
    .session_peer = h_session_peer,
    .txn_disable_instance = h_txn_disable_instance,
    .txn_hook_list = h_txn_hook_list,
    .txn_hook_enable = h_txn_hook_enable,
    .txn_hook_priority = h_txn_hook_priority,
    .api_publish = h_api_publish,
    .api_lookup = h_api_lookup,
    .txn_resume = h_txn_resume,
    .timer_start = h_timer_start,
    .timer_stop = h_timer_stop,
    .fd_watch = h_fd_watch,
    .fd_unwatch = h_fd_unwatch,
    .slot_reserve = h_slot_reserve,
    .txn_slot_get = h_txn_slot_get,
    .txn_slot_set = h_txn_slot_set,
    .session_slot_get = h_session_slot_get,
    .session_slot_set = h_session_slot_set,
    .sibling_send = h_sibling_send,
    .sibling_wait = h_sibling_wait,
};
