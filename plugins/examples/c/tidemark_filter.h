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

/* ---- ABI v2: one call per batch --------------------------------------------------------
 * Put TIDEMARK_ABI_V2 once in the module, and export
 *   int32_t tidemark_alloc(int32_t len)   a buffer of `len` bytes for batches (kept by the
 *                                         host until it needs a larger one);
 *   int32_t filter_batch(tidemark_batch *b, int32_t len)
 *                                         write one verdict per event at tidemark_verdicts(b)
 *                                         (1 keep, 0 drop, -128..-1 an error code) and return
 *                                         b->count.
 * A v2 module may import only tidemark_log: every field is in the batch. Offsets are from
 * the start of the batch; an absent string has off == TIDEMARK_NONE. */
#define TIDEMARK_ABI_V2 \
  TIDEMARK_EXPORT(tidemark_abi_version) int32_t tidemark_abi_version(void) { return 2; }

#define TIDEMARK_NONE 0xFFFFFFFFu

typedef struct { uint32_t off, len; } tidemark_string;
typedef struct { uint32_t off, count; } tidemark_entries_ref;
typedef struct { tidemark_string name, value; } tidemark_entry;

typedef struct {
  tidemark_string event_type, bucket, key, content_type, etag, requester;
  int64_t size;     /* bytes after the event (before it, for removals), or -1 */
  int64_t sequence; /* the event's per-key sequence */
  tidemark_entries_ref metadata, tags;
} tidemark_record;

typedef struct {
  uint32_t count;       /* events in the batch */
  uint32_t record_size; /* bytes from one record to the next (80 in v2) */
  uint32_t verdicts;    /* where the verdict bytes start */
  uint32_t len;         /* the batch's size in bytes */
} tidemark_batch;

static inline const tidemark_record *tidemark_record_at(const tidemark_batch *b, uint32_t i) {
  return (const tidemark_record *)((const unsigned char *)b + 16 + i * b->record_size);
}

/* The bytes of `s` (not NUL-terminated: use s.len), or 0 when absent. */
static inline const unsigned char *tidemark_str(const tidemark_batch *b, tidemark_string s) {
  return s.off == TIDEMARK_NONE ? 0 : (const unsigned char *)b + s.off;
}

static inline const tidemark_entry *tidemark_entries(const tidemark_batch *b,
                                                     tidemark_entries_ref e) {
  return (const tidemark_entry *)((const unsigned char *)b + e.off);
}

static inline int8_t *tidemark_verdicts(tidemark_batch *b) {
  return (int8_t *)b + b->verdicts;
}

#endif
