/*
 * The supervisor functions supervisor/ctl.c calls, stubbed for fuzz_ctl:
 * the fuzzer only runs sup_ctl_parse(), which touches none of them.
 */
#include <stdlib.h>

#include "supervisor/ident.h"
#include "supervisor/metrics.h"
#include "supervisor/sup.h"
#include "supervisor/upgrade.h"

sup_t S;

void sup_stop(bool fast)
{
    (void)fast;
    abort();
}

const char *sup_gen_state_name(sup_gen_state_t s)
{
    (void)s;
    abort();
}

json_t *sup_procs_json(void)
{
    abort();
}

json_t *sup_reload_status_json(void)
{
    abort();
}

int sup_reload_request(sup_reload_done_fn done, void *arg)
{
    (void)done, (void)arg;
    abort();
}

int sup_reload_request_kind(bool rollback, sup_reload_done_fn done, void *arg)
{
    (void)rollback, (void)done, (void)arg;
    abort();
}

void sup_reload_forget(void *arg)
{
    (void)arg;
    abort();
}

int sup_dump_request(const char *name, sup_dump_done_fn done, void *arg, char *err, size_t errlen)
{
    (void)name, (void)done, (void)arg, (void)err, (void)errlen;
    abort();
}

void sup_dump_forget(void *arg)
{
    (void)arg;
    abort();
}

int sup_ident_group(const char *name, gid_t *gid, char *err, size_t len)
{
    (void)name, (void)gid, (void)err, (void)len;
    abort();
}

int sup_metrics_render(molt_buf_t *out)
{
    (void)out;
    abort();
}

const char sup_version[] = MOLT_VERSION;

void sup_upgrade_request(sup_upgrade_done_fn done, void *arg)
{
    (void)done, (void)arg;
    abort();
}

void sup_upgrade_forget(void *arg)
{
    (void)arg;
    abort();
}

void sup_upgrade_status(json_t *status)
{
    (void)status;
    abort();
}

void *sup_upgrade_waiter(void)
{
    abort();
}
