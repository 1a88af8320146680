//! The host against modules written in WebAssembly text: well-behaved filters, and hostile
//! ones that must be refused at upload or contained when they run.

use std::sync::Arc;
use std::time::Duration;

use tidemark_core::event::{ObjectEvent, sample_event};

use crate::{Error, FilterEngine, FilterInstance, FilterModule, Limits, Verdict};

fn engine() -> Arc<FilterEngine> {
    FilterEngine::new(Limits::maxima(), 16).unwrap()
}

fn compile_with(
    engine: &Arc<FilterEngine>,
    wat: &str,
    limits: Limits,
) -> crate::Result<FilterModule> {
    FilterModule::compile(engine, &wat::parse_str(wat).unwrap(), limits)
}

fn compile(wat: &str) -> crate::Result<FilterModule> {
    compile_with(&engine(), wat, Limits::default())
}

fn instance(wat: &str) -> FilterInstance {
    FilterInstance::new(Arc::new(compile(wat).unwrap()), None).unwrap()
}

fn refused(wat: &str, needle: &str) {
    match compile(wat) {
        Err(Error::Invalid(msg)) => assert!(msg.contains(needle), "{msg}"),
        Err(other) => panic!("refused, but not as invalid: {other}"),
        Ok(_) => panic!("accepted a module that should be refused ({needle})"),
    }
}

/// A module with the ABI's exports around `body` (the `filter` function's body) and `extra`
/// module fields.
fn module(extra: &str, body: &str) -> String {
    format!(
        r#"(module
             {extra}
             (memory (export "memory") 1)
             (func (export "tidemark_abi_version") (result i32) i32.const 1)
             (func (export "filter") (result i32) {body}))"#
    )
}

fn event(key: &str, size: i64, camera: bool) -> Arc<ObjectEvent> {
    let mut e = sample_event(1);
    e.key = key.to_string();
    e.size = Some(size);
    e.metadata.clear();
    if camera {
        e.metadata.insert("camera".into(), "x100".into());
    }
    Arc::new(e)
}

const KEEP_ALL: &str = "i32.const 1";

/// Keep keys under `raw/` with metadata `camera` set and larger than 10 MB.
const RAW_CAMERA_LARGE: &str = include_str!("../examples/raw_camera_large.wat");

#[test]
fn a_filter_reads_fields_through_the_host_functions() {
    let mut f = instance(RAW_CAMERA_LARGE);
    let cases = [
        (event("raw/a.jpg", 20 << 20, true), Verdict::Keep),
        (event("raw/a.jpg", 1 << 20, true), Verdict::Drop),
        (event("raw/a.jpg", 20 << 20, false), Verdict::Drop),
        (event("cooked/a.jpg", 20 << 20, true), Verdict::Drop),
        (event("ra", 20 << 20, true), Verdict::Drop),
    ];
    for (e, want) in cases {
        let key = e.key.clone();
        let eval = f.evaluate(e);
        assert_eq!(eval.verdict, Ok(want), "{key}");
        assert!(eval.fuel > 0 && eval.fuel < 1000, "{} fuel", eval.fuel);
    }
    let mut keep = instance(&module("", KEEP_ALL));
    assert_eq!(
        keep.evaluate(event("x", 1, false)).verdict,
        Ok(Verdict::Keep)
    );
}

#[test]
fn modules_breaking_the_abi_are_refused_with_the_reason() {
    let e = engine();
    let bad = |bytes: &[u8], needle: &str| match FilterModule::compile(&e, bytes, Limits::default())
    {
        Err(Error::Invalid(msg)) => assert!(msg.contains(needle), "{msg}"),
        other => panic!(
            "expected a refusal naming '{needle}', got {:?}",
            other.err()
        ),
    };
    bad(b"not wasm at all", "not a WebAssembly binary");
    bad(b"\0asm\x01\0\0\0\xff\xff", "not a valid WebAssembly module");
    refused(
        &module(
            r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
            KEEP_ALL,
        ),
        "WASI is not available",
    );
    refused(
        &module(
            r#"(import "tidemark" "open_file" (func (param i32 i32) (result i32)))"#,
            KEEP_ALL,
        ),
        "tidemark::open_file, which the host does not provide",
    );
    refused(
        &module(
            r#"(import "tidemark" "key" (func (param i32) (result i32)))"#,
            KEEP_ALL,
        ),
        "tidemark::key with the wrong type",
    );
    refused(
        r#"(module (memory (export "memory") 1)
             (func (export "tidemark_abi_version") (result i32) i32.const 1))"#,
        "does not export `filter`",
    );
    refused(
        r#"(module (func (export "tidemark_abi_version") (result i32) i32.const 1)
                   (func (export "filter") (result i32) i32.const 1))"#,
        "does not export its memory",
    );
    refused(
        r#"(module (memory (export "memory") 1)
             (func (export "tidemark_abi_version") (result i32) i32.const 3)
             (func (export "filter") (result i32) i32.const 1))"#,
        "built for filter ABI version 3; this host supports [1, 2]",
    );
    refused(
        &module(
            r#"(func (export "init") (param i32 i32) (result i32) i32.const 0)"#,
            KEEP_ALL,
        ),
        "does not export `tidemark_alloc`",
    );
    let small = Limits {
        module_bytes: 40,
        ..Limits::default()
    };
    match compile_with(&e, &module("", KEEP_ALL), small) {
        Err(Error::Invalid(msg)) => assert!(msg.contains("the limit is 40 bytes"), "{msg}"),
        other => panic!("oversized module accepted: {:?}", other.err()),
    }
}

#[test]
fn runaway_modules_are_stopped_and_only_their_event_fails() {
    let e = engine();
    let spin = module("", "(loop $l (br $l)) i32.const 1");
    // Out of fuel first with the default budget...
    let mut f = FilterInstance::new(
        Arc::new(compile_with(&e, &spin, Limits::default()).unwrap()),
        None,
    )
    .unwrap();
    let eval = f.evaluate(event("a", 1, false));
    assert!(
        matches!(eval.verdict, Err(Error::OutOfFuel(_) | Error::Timeout(_))),
        "{:?}",
        eval.verdict
    );
    // ...and stopped by the wall-clock deadline when fuel is plentiful.
    let lots_of_fuel = Limits {
        fuel: 1_000_000_000,
        deadline: Duration::from_millis(20),
        ..Limits::default()
    };
    let mut f = FilterInstance::new(
        Arc::new(compile_with(&e, &spin, lots_of_fuel).unwrap()),
        None,
    )
    .unwrap();
    let eval = f.evaluate(event("a", 1, false));
    assert_eq!(eval.verdict, Err(Error::Timeout(20)));
    assert!(eval.elapsed < Duration::from_secs(2), "{:?}", eval.elapsed);

    // Growing memory without end hits the memory limit.
    let grow = module(
        "",
        "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) i32.const 1",
    );
    let eval = instance(&grow).evaluate(event("a", 1, false));
    assert_eq!(eval.verdict, Err(Error::MemoryLimit(16 << 20)));

    // Unbounded recursion overflows the stack; `unreachable` traps.
    let recurse = r#"(module (memory (export "memory") 1)
        (func (export "tidemark_abi_version") (result i32) i32.const 1)
        (func $deep (result i32) (call $deep))
        (func (export "filter") (result i32) (call $deep)))"#;
    let eval = instance(recurse).evaluate(event("a", 1, false));
    assert!(
        matches!(&eval.verdict, Err(Error::Trap(m)) if m.contains("stack")),
        "{:?}",
        eval.verdict
    );
    let eval = instance(&module("", "unreachable")).evaluate(event("a", 1, false));
    assert!(
        matches!(&eval.verdict, Err(Error::Trap(m)) if m.contains("unreachable")),
        "{:?}",
        eval.verdict
    );

    // Bad verdicts and module error codes are reported as such.
    assert_eq!(
        instance(&module("", "i32.const 7"))
            .evaluate(event("a", 1, false))
            .verdict,
        Err(Error::BadVerdict(7))
    );
    assert_eq!(
        instance(&module("", "i32.const -42"))
            .evaluate(event("a", 1, false))
            .verdict,
        Err(Error::Module(-42))
    );

    // Meanwhile a well-behaved filter on the same engine is unaffected.
    let mut keep = FilterInstance::new(
        Arc::new(compile_with(&e, &module("", KEEP_ALL), Limits::default()).unwrap()),
        None,
    )
    .unwrap();
    assert_eq!(
        keep.evaluate(event("b", 1, false)).verdict,
        Ok(Verdict::Keep)
    );
}

#[test]
fn a_trapped_instance_is_replaced_for_the_next_event() {
    // Traps on events with sequence 13, keeps others: after the trap, the next event runs on
    // a fresh instance and is kept.
    let wat = r#"(module
      (import "tidemark" "sequence" (func $seq (result i64)))
      (memory (export "memory") 1)
      (func (export "tidemark_abi_version") (result i32) i32.const 1)
      (func (export "filter") (result i32)
        (if (i64.eq (call $seq) (i64.const 13)) (then unreachable))
        i32.const 1))"#;
    let mut f = instance(wat);
    let mut bad = (*event("a", 1, false)).clone();
    bad.sequence = 13;
    assert!(matches!(
        f.evaluate(Arc::new(bad)).verdict,
        Err(Error::Trap(_))
    ));
    assert_eq!(f.evaluate(event("a", 1, false)).verdict, Ok(Verdict::Keep));
}

#[test]
fn out_of_range_pointers_and_log_floods_are_contained() {
    let wat = module(
        r#"(import "tidemark" "key" (func $key (param i32 i32) (result i32)))"#,
        "(call $key (i32.const 0x7fffff00) (i32.const 1024))",
    );
    let eval = instance(&wat).evaluate(event("a", 1, false));
    assert_eq!(eval.verdict, Err(Error::Module(crate::host::OUT_OF_RANGE)));

    let flood = module(
        r#"(import "tidemark" "log" (func $log (param i32 i32)))
           (data (i32.const 0) "hello")"#,
        r#"(local $i i32)
           (loop $l
             (call $log (i32.const 0) (i32.const 5))
             (local.set $i (i32.add (local.get $i) (i32.const 1)))
             (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
           i32.const 1"#,
    );
    let eval = instance(&flood).evaluate(event("a", 1, false));
    assert_eq!(eval.verdict, Ok(Verdict::Keep));
    assert_eq!(eval.logs.len(), crate::host::LOG_LINES);
    assert_eq!(eval.logs[0], "hello");
    assert_eq!(eval.logs_dropped, 1000 - crate::host::LOG_LINES as u32);
}

/// `init` gets the subscription's parameters; this one keeps events whose key length equals
/// the length of its parameters, and refuses empty ones.
const WITH_INIT: &str = r#"(module
  (import "tidemark" "key" (func $key (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $want (mut i32) (i32.const 0))
  (func (export "tidemark_abi_version") (result i32) i32.const 1)
  (func (export "tidemark_alloc") (param i32) (result i32) i32.const 4096)
  (func (export "init") (param $ptr i32) (param $len i32) (result i32)
    (if (i32.eqz (local.get $len)) (then (return (i32.const -5))))
    (global.set $want (local.get $len))
    i32.const 0)
  (func (export "filter") (result i32)
    (i32.eq (call $key (i32.const 0) (i32.const 0)) (global.get $want))))"#;

#[test]
fn init_receives_parameters_and_a_failing_init_is_reported() {
    let m = Arc::new(compile(WITH_INIT).unwrap());
    assert!(m.has_init);
    let mut f = FilterInstance::new(m.clone(), Some(r#"{"n":1}"#)).unwrap();
    assert_eq!(
        f.evaluate(event("1234567", 1, false)).verdict,
        Ok(Verdict::Keep)
    );
    assert_eq!(
        f.evaluate(event("123", 1, false)).verdict,
        Ok(Verdict::Drop)
    );
    match FilterInstance::new(m, Some("")) {
        Err(e) => assert_eq!(e, Error::Init(-5)),
        Ok(_) => panic!("a failing init was accepted"),
    }
}

#[test]
fn a_start_section_that_finishes_within_the_limits_is_accepted() {
    // The ABI does not forbid start sections: one that sets up state runs at instantiation,
    // under the same fuel, deadline and memory limit as an event.
    let setup = module(
        r#"(global $ready (mut i32) (i32.const 0))
           (func $setup (global.set $ready (i32.const 1)))
           (start $setup)"#,
        "global.get $ready",
    );
    let mut f = instance(&setup);
    assert_eq!(f.evaluate(event("a", 1, false)).verdict, Ok(Verdict::Keep));
    // One that never finishes is stopped and the module refused, saying why.
    let endless = module(r#"(func $spin (loop $l (br $l))) (start $spin)"#, KEEP_ALL);
    refused(&endless, "cannot instantiate the module");
    match compile(&endless) {
        Err(Error::Invalid(m)) => assert!(m.contains("fuel") || m.contains("deadline"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn instances_without_room_are_capacity_not_filter_errors() {
    let e = FilterEngine::new(Limits::maxima(), 2).unwrap();
    let m = Arc::new(compile_with(&e, &module("", KEEP_ALL), Limits::default()).unwrap());
    // The memory budget: two 16 MiB instances fit in 40 MiB, a third waits for one to go.
    e.budget.set_limit(40 << 20);
    let a = FilterInstance::new(m.clone(), None).unwrap();
    let _b = FilterInstance::new(m.clone(), None).unwrap();
    match FilterInstance::new(m.clone(), None) {
        Err(Error::Capacity(msg)) => {
            assert!(msg.contains("budget of 40 MiB"), "{msg}");
            assert!(msg.contains("needs 16 MiB"), "{msg}");
        }
        other => panic!("expected capacity, got {:?}", other.err()),
    }
    assert_eq!(e.budget.reserved(), 32 << 20);
    drop(a);
    let _c = FilterInstance::new(m.clone(), None).unwrap();
    // The pooling allocator's slots (`--filter-instances`): both are taken.
    e.budget.set_limit(usize::MAX);
    match FilterInstance::new(m, None) {
        Err(err @ Error::Capacity(_)) => {
            assert!(err.to_string().contains("--filter-instances"), "{err}");
            assert_eq!(err.label(), "capacity");
            assert_eq!(err.kind(), tidemark_core::ErrorKind::Unavailable);
        }
        other => panic!("expected capacity, got {:?}", other.err()),
    }
    // A failed instantiation gave its reservation back.
    assert_eq!(e.budget.reserved(), 32 << 20);
}
