;; Keep events whose key is under `raw/`, whose user metadata `camera` is
;; set, and whose object is larger than 10 MB. Filter ABI v1 (plugins/ABI.md).
(module
  (import "tidemark" "key" (func $key (param i32 i32) (result i32)))
  (import "tidemark" "metadata" (func $metadata (param i32 i32 i32 i32) (result i32)))
  (import "tidemark" "size" (func $size (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "raw/camera")
  (func (export "tidemark_abi_version") (result i32) i32.const 1)
  (func (export "filter") (result i32)
    (local $n i32)
    (local.set $n (call $key (i32.const 1024) (i32.const 1024)))
    (if (i32.lt_s (local.get $n) (i32.const 4)) (then (return (i32.const 0))))
    (if (i32.ne (i32.load (i32.const 1024)) (i32.load (i32.const 0))) (then (return (i32.const 0))))
    (if (i32.lt_s (call $metadata (i32.const 4) (i32.const 6) (i32.const 2048) (i32.const 0)) (i32.const 0))
      (then (return (i32.const 0))))
    (i64.gt_s (call $size) (i64.const 10485760))))
