;; Keep events whose key is under `raw/`, whose user metadata `camera` is
;; set, and whose object is larger than 10 MB. Filter ABI v2 (plugins/ABI.md):
;; one call decides a whole batch, reading every field from the batch itself.
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "camera")
  (data (i32.const 32) "raw/")
  (func (export "tidemark_abi_version") (result i32) i32.const 2)
  ;; The fields its batches carry: key (4) and metadata (64); size always comes.
  (func (export "tidemark_fields") (result i32) i32.const 68)
  ;; The host's buffer for batches: at 4096, the memory grown to hold `len` bytes.
  (func (export "tidemark_alloc") (param $len i32) (result i32)
    (local $pages i32)
    (local.set $pages
      (i32.shr_u (i32.add (local.get $len) (i32.const 69631)) (i32.const 16)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then (drop (memory.grow (i32.sub (local.get $pages) (memory.size))))))
    (i32.const 4096))
  ;; The verdict on the record at $r of the batch at $b.
  (func $decide (param $b i32) (param $r i32) (result i32)
    (local $k i32) (local $m i32) (local $left i32) (local $name i32)
    (if (i64.le_s (i64.load offset=48 (local.get $r)) (i64.const 10485760))
      (then (return (i32.const 0))))
    (if (i32.lt_u (i32.load offset=20 (local.get $r)) (i32.const 4))
      (then (return (i32.const 0))))
    (local.set $k (i32.add (local.get $b) (i32.load offset=16 (local.get $r))))
    (if (i32.ne (i32.load (local.get $k)) (i32.load (i32.const 32)))
      (then (return (i32.const 0))))
    ;; The metadata entries: name offset, name length, value offset, value length.
    (local.set $m (i32.add (local.get $b) (i32.load offset=64 (local.get $r))))
    (local.set $left (i32.load offset=68 (local.get $r)))
    (block $none
      (loop $entry
        (br_if $none (i32.eqz (local.get $left)))
        (if (i32.eq (i32.load offset=4 (local.get $m)) (i32.const 6))
          (then
            (local.set $name (i32.add (local.get $b) (i32.load (local.get $m))))
            (if (i32.and
                  (i32.eq (i32.load (local.get $name)) (i32.load (i32.const 16)))
                  (i32.eq (i32.load16_u offset=4 (local.get $name)) (i32.load16_u (i32.const 20))))
              (then (return (i32.const 1))))))
        (local.set $m (i32.add (local.get $m) (i32.const 16)))
        (local.set $left (i32.sub (local.get $left) (i32.const 1)))
        (br $entry)))
    (i32.const 0))
  (func (export "filter_batch") (param $b i32) (param $len i32) (result i32)
    (local $i i32) (local $n i32) (local $verdicts i32)
    (local.set $n (i32.load (local.get $b)))
    (local.set $verdicts (i32.add (local.get $b) (i32.load offset=8 (local.get $b))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store8
          (i32.add (local.get $verdicts) (local.get $i))
          (call $decide
            (local.get $b)
            (i32.add (i32.add (local.get $b) (i32.const 16))
                     (i32.mul (local.get $i) (i32.load offset=4 (local.get $b))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $n)))
