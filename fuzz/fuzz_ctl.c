/*
 * libFuzzer target: the control protocol's request parsing
 * (supervisor/ctl.c: sup_ctl_parse(), what every request line goes through
 * before a command runs). ctl.c is compiled into this target with the
 * supervisor functions it calls stubbed out (ctl_stubs.c): commands touch
 * the live supervisor and are not fuzzed. One input is one line, as
 * conn_process() hands it over (cut at the first newline, NUL-terminated
 * copy). Replies are serialized the way conn_reply() does.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "supervisor/sup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nl = memchr(data, '\n', size);
    size_t len = nl ? (size_t)(nl - (const char *)data) : size;
    char *line = strndup((const char *)data, len);
    if (!line)
        return 0;
    json_t *req;
    const char *cmd;
    json_t *reply = sup_ctl_parse(line, len, &req, &cmd);
    if (req) {
        if (reply || !cmd || !json_is_object(req) || json_string_value(json_object_get(req, "cmd")) != cmd)
            abort();
        (void)json_is_true(json_object_get(req, "fast"));
        (void)json_string_value(json_object_get(req, "name"));
        char *text = json_dumps(req, JSON_COMPACT);
        free(text);
        json_decref(req);
    } else if (reply) {
        if (cmd || !json_is_false(json_object_get(reply, "ok")) ||
            !json_string_value(json_object_get(reply, "error")))
            abort();
        char *text = json_dumps(reply, JSON_COMPACT);
        if (!text || strchr(text, '\n'))
            abort(); /* a reply is one line */
        free(text);
    } else {
        /* Every line gets a reply: an error text that quoted invalid UTF-8 once made
         * none (corpus/ctl/invalid-utf8-error-reply). */
        abort();
    }
    json_decref(reply);
    free(line);
    return 0;
}
