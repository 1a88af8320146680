/* Keep events whose key is under `raw/`, whose user metadata `camera` is set, and whose object
 * is larger than 10 MB, as an ABI v2 (batch) module: one call decides a whole batch, each
 * field read from the batch in memory. The twin of raw_camera_large.c. */
#include "tidemark_filter.h"

TIDEMARK_ABI_V2

/* The buffer the host writes batches into: static, grown by the host's asking only up to
 * this size (a batch of 256 events with keys of S3's longest fits many times). */
static unsigned char batch_buffer[4 << 20];

TIDEMARK_EXPORT(tidemark_alloc) int32_t tidemark_alloc(int32_t len) {
  return len <= (int32_t)sizeof batch_buffer ? (int32_t)(uintptr_t)batch_buffer : 0;
}

static int same(const unsigned char *a, const char *b, uint32_t n) {
  for (uint32_t i = 0; i < n; i++)
    if (a[i] != (unsigned char)b[i])
      return 0;
  return 1;
}

static int32_t decide(const tidemark_batch *b, const tidemark_record *r) {
  if (r->size <= 10 * 1024 * 1024)
    return TIDEMARK_DROP;
  if (tidemark_str(b, r->key) == 0 || r->key.len < 4 || !same(tidemark_str(b, r->key), "raw/", 4))
    return TIDEMARK_DROP;
  const tidemark_entry *m = tidemark_entries(b, r->metadata);
  for (uint32_t i = 0; i < r->metadata.count; i++)
    if (m[i].name.len == 6 && same(tidemark_str(b, m[i].name), "camera", 6))
      return TIDEMARK_KEEP;
  return TIDEMARK_DROP;
}

TIDEMARK_EXPORT(filter_batch) int32_t filter_batch(tidemark_batch *b, int32_t len) {
  (void)len;
  int8_t *verdicts = tidemark_verdicts(b);
  for (uint32_t i = 0; i < b->count; i++)
    verdicts[i] = (int8_t)decide(b, tidemark_record_at(b, i));
  return (int32_t)b->count;
}
