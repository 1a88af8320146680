/* Keep events whose key is under `raw/`, whose user metadata `camera` is set, and whose object
 * is larger than 10 MB: the C twin of plugins/examples/raw_camera_large.wat. */
#include "tidemark_filter.h"

TIDEMARK_ABI_V1

/* Object keys are at most 1024 bytes (S3's limit), so one buffer holds any of them. */
static char key[1024];

TIDEMARK_EXPORT(filter) int32_t filter(void) {
  if (tidemark_size() <= 10 * 1024 * 1024)
    return TIDEMARK_DROP;
  /* A zero-capacity buffer asks for the length only: enough to know the entry is set. */
  if (tidemark_metadata("camera", 6, key, 0) < 0)
    return TIDEMARK_DROP;
  int32_t n = tidemark_key(key, sizeof key);
  if (n < 4 || n > (int32_t)sizeof key)
    return TIDEMARK_DROP;
  /* Byte by byte: there is no libc, so no memcmp or strncmp to call. */
  return key[0] == 'r' && key[1] == 'a' && key[2] == 'w' && key[3] == '/' ? TIDEMARK_KEEP
                                                                             : TIDEMARK_DROP;
}
