/* echo.c: a backend plugin written in C against infadapt_plugin.h.
 *
 * A static backend: it stores the last plan applied and reports it back as deployed.
 * `apply` is idempotent (applying the stored plan again reports `changed: false`), and
 * every call counts in `completed` so a test can see the calls went through.
 *
 * Build: cc -shared -fPIC -O2 -Wall -Wextra -Werror -I../../abi/include echo.c \
 *           -o libinfadapt_plugin_c_echo.so
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infadapt_plugin.h"

_Static_assert(sizeof(InfadaptPluginVTable) == 8 + 8 * sizeof(void *),
               "the vtable layout must match the Rust definition");

typedef struct Echo {
    char *plan;      /* last plan applied, JSON text (NUL-terminated copy) */
    size_t plan_len;
    unsigned long calls;
} Echo;

/* Hands `len` bytes to the host in `slot`; the host gives them back to echo_free_buffer. */
static int32_t fill(InfadaptPluginBuffer *slot, const char *text, size_t len, int32_t status) {
    if (slot == NULL) {
        return status;
    }
    uint8_t *copy = malloc(len > 0 ? len : 1);
    if (copy == NULL) {
        return INFADAPT_STATUS_ERROR;
    }
    memcpy(copy, text, len);
    slot->ptr = copy;
    slot->len = len;
    slot->capacity = len;
    return status;
}

static int32_t fail(InfadaptPluginBuffer *error, int32_t status, const char *message) {
    return fill(error, message, strlen(message), status);
}

static int32_t echo_create(const uint8_t *config, size_t config_len,
                           InfadaptPluginHandle *out_handle, InfadaptPluginBuffer *error) {
    if (out_handle == NULL) {
        return fail(error, INFADAPT_STATUS_INVALID_INPUT, "null out_handle");
    }
    if (config_len < 2 || config[0] != '{') {
        return fail(error, INFADAPT_STATUS_INVALID_INPUT, "c-echo: config must be a JSON object");
    }
    Echo *echo = calloc(1, sizeof(Echo));
    if (echo == NULL) {
        return fail(error, INFADAPT_STATUS_ERROR, "c-echo: out of memory");
    }
    *out_handle = echo;
    return INFADAPT_STATUS_OK;
}

static void echo_destroy(InfadaptPluginHandle handle) {
    Echo *echo = handle;
    if (echo != NULL) {
        free(echo->plan);
        free(echo);
    }
}

static int32_t echo_describe(InfadaptPluginHandle handle, InfadaptPluginBuffer *out,
                             InfadaptPluginBuffer *error) {
    (void)handle;
    (void)error;
    static const char text[] =
        "{\"schema\":1,\"name\":\"c-echo\",\"version\":\"1.0.0\",\"capabilities\":"
        "{\"variant_mix\":false,\"batching\":true,\"cores\":true,\"gpu\":false}}";
    return fill(out, text, sizeof text - 1, INFADAPT_STATUS_OK);
}

static int32_t echo_observe(InfadaptPluginHandle handle, InfadaptPluginBuffer *out,
                            InfadaptPluginBuffer *error) {
    Echo *echo = handle;
    if (echo == NULL) {
        return fail(error, INFADAPT_STATUS_INVALID_INPUT, "null handle");
    }
    echo->calls++;
    const char *plan = echo->plan != NULL ? echo->plan : "{\"schema\":1,\"stages\":[]}";
    size_t size = strlen(plan) + 128;
    char *text = malloc(size);
    if (text == NULL) {
        return fail(error, INFADAPT_STATUS_ERROR, "c-echo: out of memory");
    }
    int n = snprintf(text, size,
                     "{\"schema\":1,\"arrivals_per_second\":[],\"completed\":%lu,"
                     "\"future_field\":\"readers ignore it\",\"deployed\":%s}",
                     echo->calls, plan);
    int32_t status = fill(out, text, (size_t)n, INFADAPT_STATUS_OK);
    free(text);
    return status;
}

static int32_t echo_apply(InfadaptPluginHandle handle, const uint8_t *plan, size_t plan_len,
                          InfadaptPluginBuffer *out, InfadaptPluginBuffer *error) {
    Echo *echo = handle;
    if (echo == NULL) {
        return fail(error, INFADAPT_STATUS_INVALID_INPUT, "null handle");
    }
    if (plan_len < 2 || plan[0] != '{') {
        return fail(error, INFADAPT_STATUS_INVALID_INPUT, "c-echo: plan must be a JSON object");
    }
    echo->calls++;
    int same = echo->plan != NULL && echo->plan_len == plan_len &&
               memcmp(echo->plan, plan, plan_len) == 0;
    if (!same) {
        char *copy = malloc(plan_len + 1);
        if (copy == NULL) {
            return fail(error, INFADAPT_STATUS_ERROR, "c-echo: out of memory");
        }
        memcpy(copy, plan, plan_len);
        copy[plan_len] = '\0';
        free(echo->plan);
        echo->plan = copy;
        echo->plan_len = plan_len;
    }
    static const char changed[] = "{\"schema\":1,\"changed\":true,\"actions\":[\"stored the plan\"]}";
    static const char unchanged[] = "{\"schema\":1,\"changed\":false,\"actions\":[]}";
    return same ? fill(out, unchanged, sizeof unchanged - 1, INFADAPT_STATUS_OK)
                : fill(out, changed, sizeof changed - 1, INFADAPT_STATUS_OK);
}

static int32_t echo_health(InfadaptPluginHandle handle, InfadaptPluginBuffer *out,
                           InfadaptPluginBuffer *error) {
    (void)handle;
    (void)error;
    static const char text[] = "{\"schema\":1,\"healthy\":true,\"detail\":\"c-echo is fine\"}";
    return fill(out, text, sizeof text - 1, INFADAPT_STATUS_OK);
}

/* Version 2 config check: the same rule as create (a JSON object), as a problem list. */
static int32_t echo_check_config(const uint8_t *config, size_t config_len,
                                 InfadaptPluginBuffer *out, InfadaptPluginBuffer *error) {
    (void)error;
    static const char ok[] = "{\"schema\":1,\"problems\":[]}";
    static const char bad[] =
        "{\"schema\":1,\"problems\":[{\"key\":\"\",\"kind\":\"invalid\","
        "\"message\":\"c-echo: config must be a JSON object\"}]}";
    if (config_len < 2 || config[0] != '{') {
        return fill(out, bad, sizeof bad - 1, INFADAPT_STATUS_OK);
    }
    return fill(out, ok, sizeof ok - 1, INFADAPT_STATUS_OK);
}

static void echo_free_buffer(InfadaptPluginBuffer buffer) {
    free(buffer.ptr);
}

/* Built with -DECHO_AS_ABI_V1 it declares itself an ABI version 1 plugin (a table that ends
 * before `check_config`), as a plugin built before version 2 does; the host still loads it. */
#ifdef ECHO_AS_ABI_V1
#include <stddef.h>
#define ECHO_ABI_VERSION 1u
#define ECHO_TABLE_SIZE offsetof(InfadaptPluginVTable, check_config)
#else
#define ECHO_ABI_VERSION INFADAPT_ABI_VERSION
#define ECHO_TABLE_SIZE sizeof(InfadaptPluginVTable)
#endif

static const InfadaptPluginVTable VTABLE = {
    .abi_version = ECHO_ABI_VERSION,
    .struct_size = ECHO_TABLE_SIZE,
    .create = echo_create,
    .destroy = echo_destroy,
    .describe = echo_describe,
    .observe = echo_observe,
    .apply = echo_apply,
    .health = echo_health,
    .free_buffer = echo_free_buffer,
    .check_config = echo_check_config,
};

const InfadaptPluginVTable *infadapt_plugin_entry(void) {
    return &VTABLE;
}
