/*
 * libFuzzer target: the config loader (shared/config.h), from a string, as
 * if read from fuzz.json in the current directory. Plugin files named by the
 * input are looked up on disk (relative to the working directory): an input
 * naming no existing file is just refused.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shared/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    molt_config_t *cfg = NULL;
    char err[512];
    err[0] = 'x';
    int rc = molt_config_load_string((const char *)data, size, "fuzz.json", &cfg, err, sizeof(err));
    if (rc == 0) {
        if (!cfg || cfg->nlisten < 1 || cfg->workers < 1)
            abort();
        molt_config_free(cfg);
    } else if (cfg || memchr(err, '\0', sizeof(err)) == NULL) {
        abort(); /* a refusal stores nothing and leaves a NUL-terminated reason */
    }
    return 0;
}
