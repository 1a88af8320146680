;; The smallest batch filter: keeps every event. Filter ABI v2 (plugins/ABI.md).
(module
  (memory (export "memory") 1)
  (func (export "tidemark_abi_version") (result i32) i32.const 2)
  ;; It reads no field: its batches carry none (size and sequence always come).
  (func (export "tidemark_fields") (result i32) i32.const 0)
  (func (export "tidemark_alloc") (param $len i32) (result i32)
    (local $pages i32)
    (local.set $pages
      (i32.shr_u (i32.add (local.get $len) (i32.const 65535)) (i32.const 16)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then (drop (memory.grow (i32.sub (local.get $pages) (memory.size))))))
    (i32.const 0))
  ;; Every verdict byte is 1 (keep): `count` bytes at the batch's verdict offset.
  (func (export "filter_batch") (param $b i32) (param $len i32) (result i32)
    (memory.fill
      (i32.add (local.get $b) (i32.load offset=8 (local.get $b)))
      (i32.const 1)
      (i32.load (local.get $b)))
    (i32.load (local.get $b))))
