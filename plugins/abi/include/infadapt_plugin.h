/* infadapt_plugin.h: the C ABI between infadaptd and its backend plugins (ABI version 2).
 *
 * Mirrors plugins/abi/src/lib.rs exactly; PLUGINS.md states the contract in full.
 *
 * A plugin is a shared library exporting one function, `infadapt_plugin_entry`, that
 * returns a pointer to a static `InfadaptPluginVTable`. The host reads `abi_version` and
 * `struct_size` first and refuses the library unless `abi_version` is 1 or 2 (this header
 * is version 2) and `struct_size` covers the table of that version; every entry of version
 * 1 must be non-null. Version 2 appended `check_config`, which may be NULL (no check).
 *
 * Ownership:
 * - Input bytes (config, plan) belong to the host and are valid only during the call; they
 *   are UTF-8 JSON and NOT NUL-terminated: use the length.
 * - Output buffers (`out`, `error`) are filled by the plugin, which allocates them however
 *   it likes; the host copies them and hands each non-null buffer back to the SAME plugin's
 *   `free_buffer`, exactly once. The host passes both slots zeroed ({NULL, 0, 0}); a plugin
 *   that has nothing to say leaves a slot as it is.
 * - Handles are opaque to the host; `destroy` is called once per successful `create` and
 *   the handle is never used afterwards.
 *
 * Threading: calls on one handle never overlap, but may come from different threads. Calls
 * on different handles may run concurrently. No call may block longer than the host's
 * timeout (5 s by default). Every function returns an INFADAPT_STATUS_* code; on failure
 * the plugin SHOULD put a UTF-8 message in `error`.
 */
#ifndef INFADAPT_PLUGIN_H
#define INFADAPT_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this binary interface; bumped on any layout or meaning change. */
#define INFADAPT_ABI_VERSION 2u
/* Version of the JSON messages (the `schema` field of every document). */
#define INFADAPT_SCHEMA_VERSION 1u
/* Name of the exported entry function. */
#define INFADAPT_ENTRY_SYMBOL "infadapt_plugin_entry"

/* Status codes. */
#define INFADAPT_STATUS_OK 0
#define INFADAPT_STATUS_ERROR 1         /* failed; `error` holds a message */
#define INFADAPT_STATUS_INVALID_INPUT 2 /* config or plan invalid; `error` holds a message */
#define INFADAPT_STATUS_PANIC 3         /* internal fault; the handle may be unusable */
#define INFADAPT_STATUS_UNAVAILABLE 4   /* the driven server is unreachable */

/* A byte buffer owned by the plugin that filled it; release with `free_buffer`. */
typedef struct InfadaptPluginBuffer {
    uint8_t *ptr;
    size_t len;
    size_t capacity; /* for the plugin's own bookkeeping; the host never reads it */
} InfadaptPluginBuffer;

/* Opaque instance handle. */
typedef void *InfadaptPluginHandle;

/* Creates an instance from `config_json` (a JSON object); writes the handle. */
typedef int32_t (*InfadaptCreateFn)(const uint8_t *config_json, size_t config_len,
                                    InfadaptPluginHandle *out_handle,
                                    InfadaptPluginBuffer *error);
/* Destroys an instance. */
typedef void (*InfadaptDestroyFn)(InfadaptPluginHandle handle);
/* describe / observe / health: answers a JSON document in `out`. */
typedef int32_t (*InfadaptQueryFn)(InfadaptPluginHandle handle, InfadaptPluginBuffer *out,
                                   InfadaptPluginBuffer *error);
/* Reconciles the backend to the plan (JSON); idempotent; answers a JSON report in `out`. */
typedef int32_t (*InfadaptApplyFn)(InfadaptPluginHandle handle, const uint8_t *plan_json,
                                   size_t plan_len, InfadaptPluginBuffer *out,
                                   InfadaptPluginBuffer *error);
/* Version 2: checks a config (the JSON `create` gets) without creating anything or
 * contacting the backend. Answers in `out` a JSON document
 *   {"schema": 1, "problems": [{"key": "drain_s", "kind": "invalid",
 *                               "message": "must be a number of seconds", "hint": null}]}
 * where `key` is the dotted path inside the backend table (empty for the whole table) and
 * `kind` is "unknown-key", "missing" or "invalid" (`hint`: the key meant, for a typo).
 * INFADAPT_STATUS_OK means the check ran, whatever it found. */
typedef int32_t (*InfadaptCheckConfigFn)(const uint8_t *config_json, size_t config_len,
                                         InfadaptPluginBuffer *out,
                                         InfadaptPluginBuffer *error);
/* Releases a buffer this library filled (passed by value). */
typedef void (*InfadaptFreeBufferFn)(InfadaptPluginBuffer buffer);

/* The table of entry points. Field order is part of the ABI; new fields are only ever
 * appended (with a version bump), so `abi_version` and `struct_size` stay first. */
typedef struct InfadaptPluginVTable {
    uint32_t abi_version; /* INFADAPT_ABI_VERSION */
    uint32_t struct_size; /* sizeof(InfadaptPluginVTable) */
    InfadaptCreateFn create;
    InfadaptDestroyFn destroy;
    InfadaptQueryFn describe;
    InfadaptQueryFn observe;
    InfadaptApplyFn apply;
    InfadaptQueryFn health;
    InfadaptFreeBufferFn free_buffer;
    InfadaptCheckConfigFn check_config; /* version 2; may be NULL */
} InfadaptPluginVTable;

/* The one exported symbol: returns a pointer to a table that lives as long as the library. */
typedef const InfadaptPluginVTable *(*InfadaptEntryFn)(void);
const InfadaptPluginVTable *infadapt_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* INFADAPT_PLUGIN_H */
