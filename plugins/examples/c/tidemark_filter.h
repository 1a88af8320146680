/* Tidemark filter ABI v1 (plugins/ABI.md) for C: the host functions a filter may import and
 * the exports it must have. Build for wasm32 with no libc, e.g. with clang and lld:
 *
 *   clang --target=wasm32 -O2 -ffreestanding -nostdlib -Wl,--no-entry -Wl,--strip-all \
 *     -o filter.wasm filter.c
 *
 * The linker exports `memory`; define `filter` with TIDEMARK_EXPORT(filter) and put
 * TIDEMARK_ABI_V1 once in the module. */
#ifndef TIDEMARK_FILTER_H
#define TIDEMARK_FILTER_H

#include <stdint.h>

#define TIDEMARK_IMPORT(name) __attribute__((import_module("tidemark"), import_name(#name)))
#define TIDEMARK_EXPORT(name) __attribute__((export_name(#name)))

/* What `filter` returns; a negative value is an error code of the module's choosing. */
#define TIDEMARK_KEEP 1
#define TIDEMARK_DROP 0

/* String getters copy the field into buf[0..cap) and return its length; a length above `cap`
 * means nothing was written (call again with a larger buffer). */
#define TIDEMARK_ABSENT (-1)       /* no such field */
#define TIDEMARK_OUT_OF_RANGE (-2) /* buf or name outside the module's memory */

TIDEMARK_IMPORT(event_type) int32_t tidemark_event_type(char *buf, int32_t cap);
TIDEMARK_IMPORT(bucket) int32_t tidemark_bucket(char *buf, int32_t cap);
TIDEMARK_IMPORT(key) int32_t tidemark_key(char *buf, int32_t cap);
TIDEMARK_IMPORT(content_type) int32_t tidemark_content_type(char *buf, int32_t cap);
TIDEMARK_IMPORT(etag) int32_t tidemark_etag(char *buf, int32_t cap);
TIDEMARK_IMPORT(requester) int32_t tidemark_requester(char *buf, int32_t cap);
TIDEMARK_IMPORT(event_json) int32_t tidemark_event_json(char *buf, int32_t cap);
TIDEMARK_IMPORT(metadata)
int32_t tidemark_metadata(const char *name, int32_t name_len, char *buf, int32_t cap);
TIDEMARK_IMPORT(tag)
int32_t tidemark_tag(const char *name, int32_t name_len, char *buf, int32_t cap);
/* Object size in bytes (before the event, for removals), or -1. */
TIDEMARK_IMPORT(size) int64_t tidemark_size(void);
TIDEMARK_IMPORT(sequence) int64_t tidemark_sequence(void);
/* A UTF-8 log line kept with the event's evaluation (1 KiB a line, 16 lines an event). */
TIDEMARK_IMPORT(log) void tidemark_log(const char *line, int32_t len);

/* The ABI version export; put it once in the module. */
#define TIDEMARK_ABI_V1 \
  TIDEMARK_EXPORT(tidemark_abi_version) int32_t tidemark_abi_version(void) { return 1; }

#endif
