/*
 * The admin listener: the supervisor's own small HTTP/1.1 server, for
 * Prometheus to scrape (config "admin": {"address": "127.0.0.1:9100"}).
 *
 *   GET or HEAD /metrics   200, text/plain; version=0.0.4 (supervisor/metrics.h)
 *   another path           404
 *   another method         405 (Allow: GET, HEAD)
 *   a malformed request    400
 *   head over 8 KiB        431
 *
 * One request per connection (every response says Connection: close), at
 * most SUP_ADMIN_MAX_CONNS at once, each closed after SUP_ADMIN_IDLE_MS
 * without a complete request head. It runs on the supervisor's loop and
 * never blocks it; it shares no code with worker/ (which serves plugins).
 */
#ifndef MOLT_SUPERVISOR_ADMIN_H
#define MOLT_SUPERVISOR_ADMIN_H

#include "shared/config.h"

#define SUP_ADMIN_MAX_CONNS 32
#define SUP_ADMIN_MAX_HEAD 8192
#define SUP_ADMIN_IDLE_MS 10000

/* Binds cfg->admin_address and accepts on S.loop; nothing when the config
 * has no admin listener. 0, or -1 with the reason in err ("admin.address
 * 127.0.0.1:9100: bind() failed: Address already in use"). */
int sup_admin_open(const molt_config_t *cfg, char *err, size_t errlen);
/* Closes the listener and every connection; safe when none is open. */
void sup_admin_close(void);

#endif
