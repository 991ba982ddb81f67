#include "worker/router.h"

#include <stdlib.h>
#include <string.h>

typedef struct wrk_route {
    char *prefix;
    size_t len;
    size_t plugin_index;
} wrk_route_t;

struct wrk_router {
    wrk_route_t *routes; /* longest prefix first */
    size_t n;
};

static int route_cmp(const void *a, const void *b)
{
    const wrk_route_t *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return strcmp(x->prefix, y->prefix);
}

wrk_router_t *wrk_router_new(const molt_route_cfg_t *routes, size_t nroutes)
{
    wrk_router_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    if (nroutes) {
        r->routes = calloc(nroutes, sizeof(*r->routes));
        if (!r->routes)
            goto fail;
    }
    for (size_t i = 0; i < nroutes; i++) {
        r->routes[i].prefix = strdup(routes[i].prefix);
        if (!r->routes[i].prefix)
            goto fail;
        r->routes[i].len = strlen(routes[i].prefix);
        r->routes[i].plugin_index = routes[i].plugin_index;
        r->n++;
    }
    if (r->n) /* qsort(NULL, 0, ...) is undefined */
        qsort(r->routes, r->n, sizeof(*r->routes), route_cmp);
    return r;
fail:
    wrk_router_free(r);
    return NULL;
}

ssize_t wrk_router_match(const wrk_router_t *r, const char *path, size_t len)
{
    for (size_t i = 0; i < r->n; i++) {
        const wrk_route_t *rt = &r->routes[i];
        if (rt->len <= len && memcmp(rt->prefix, path, rt->len) == 0)
            return (ssize_t)rt->plugin_index;
    }
    return -1;
}

void wrk_router_free(wrk_router_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->routes[i].prefix);
    free(r->routes);
    free(r);
}
