//! ABI v2 (batches) against modules written in WebAssembly text: the same verdicts as v1 for
//! the same logic over randomized events, and hostile batch modules whose failure costs only
//! the event at fault.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tidemark_core::event::{ObjectEvent, sample_event};

use crate::{
    Decided, Error, FilterEngine, FilterInstance, FilterModule, FilterStats, Limits, Verdict,
};

const RAW_CAMERA_LARGE_V1: &str = include_str!("../examples/raw_camera_large.wat");
const RAW_CAMERA_LARGE_V2: &str = include_str!("../examples/raw_camera_large_v2.wat");
const KEEP_ALL_V2: &str = include_str!("../examples/keep_all_v2.wat");

fn engine() -> Arc<FilterEngine> {
    FilterEngine::new(Limits::maxima(), 16).unwrap()
}

fn compile(wat: &str, limits: Limits) -> crate::Result<FilterModule> {
    FilterModule::compile(&engine(), &wat::parse_str(wat).unwrap(), limits)
}

fn instance(wat: &str) -> FilterInstance {
    FilterInstance::new(Arc::new(compile(wat, Limits::default()).unwrap()), None).unwrap()
}

fn refused(wat: &str, needle: &str) {
    match compile(wat, Limits::default()) {
        Err(Error::Invalid(msg)) => assert!(msg.contains(needle), "{msg}"),
        Err(other) => panic!("refused, but not as invalid: {other}"),
        Ok(_) => panic!("accepted a module that should be refused ({needle})"),
    }
}

/// A v2 module whose `$decide` (params `$b` the batch, `$r` the record; result the verdict
/// byte) is `body`, with `extra` module fields; the batch loop writes each verdict as soon as
/// it is decided.
fn batch_module(extra: &str, body: &str) -> String {
    format!(
        r#"(module
             {extra}
             (memory (export "memory") 1)
             (func (export "tidemark_abi_version") (result i32) i32.const 2)
             (func (export "tidemark_alloc") (param $len i32) (result i32)
               (local $pages i32)
               (local.set $pages (i32.shr_u (i32.add (local.get $len) (i32.const 69631)) (i32.const 16)))
               (if (i32.gt_u (local.get $pages) (memory.size))
                 (then (drop (memory.grow (i32.sub (local.get $pages) (memory.size))))))
               (i32.const 4096))
             (func $decide (param $b i32) (param $r i32) (result i32) {body})
             (func (export "filter_batch") (param $b i32) (param $len i32) (result i32)
               (local $i i32) (local $n i32) (local $verdicts i32)
               (local.set $n (i32.load (local.get $b)))
               (local.set $verdicts (i32.add (local.get $b) (i32.load offset=8 (local.get $b))))
               (block $done
                 (loop $next
                   (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
                   (i32.store8 (i32.add (local.get $verdicts) (local.get $i))
                     (call $decide (local.get $b)
                       (i32.add (i32.add (local.get $b) (i32.const 16))
                                (i32.mul (local.get $i) (i32.const 80)))))
                   (local.set $i (i32.add (local.get $i) (i32.const 1)))
                   (br $next)))
               (local.get $n)))"#
    )
}

/// Keep when the size is above 10, drop otherwise; misbehave (`bad`) on size 13.
fn misbehaving_at_13(bad: &str) -> String {
    batch_module(
        "",
        &format!(
            "(if (i64.eq (i64.load offset=48 (local.get $r)) (i64.const 13)) (then {bad}))
             (i64.gt_s (i64.load offset=48 (local.get $r)) (i64.const 10))"
        ),
    )
}

fn sized(size: i64) -> Arc<ObjectEvent> {
    let mut e = sample_event(1);
    e.size = Some(size);
    Arc::new(e)
}

fn event(rng: &mut fastrand::Rng) -> Arc<ObjectEvent> {
    let mut e = sample_event(rng.u64(1..1000));
    let prefixes = ["raw/", "raw", "ra", "cooked/", "raw/deep/", "Raw/", ""];
    e.key = format!(
        "{}{}",
        prefixes[rng.usize(..prefixes.len())],
        "x".repeat(rng.usize(0..40))
    );
    e.size = match rng.u8(..4) {
        0 => None,
        1 => Some(10 << 20),
        2 => Some((10 << 20) + 1),
        _ => Some(rng.i64(0..40 << 20)),
    };
    e.metadata.clear();
    for _ in 0..rng.usize(0..4) {
        let names = ["camera", "camer", "cameras", "lens", "Camera", "cam"];
        e.metadata.insert(
            names[rng.usize(..names.len())].into(),
            "v".repeat(rng.usize(0..9)),
        );
    }
    e.tags.clear();
    if rng.bool() {
        e.tags.insert("camera".into(), "tag, not metadata".into());
    }
    Arc::new(e)
}

#[test]
fn a_batch_filter_decides_as_its_v1_twin_over_random_events() {
    let mut v1 = instance(RAW_CAMERA_LARGE_V1);
    let mut v2 = instance(RAW_CAMERA_LARGE_V2);
    let mut rng = fastrand::Rng::with_seed(22);
    let mut kept = 0;
    for round in 0..60 {
        // Batches of every size up to past one call's maximum (split into several calls).
        let n = match round {
            0 => 1,
            1 => crate::batch::MAX_EVENTS + 7,
            _ => rng.usize(1..200),
        };
        let events: Vec<Arc<ObjectEvent>> = (0..n).map(|_| event(&mut rng)).collect();
        let batch = v2.evaluate_all(&events);
        assert_eq!(batch.len(), n);
        for (e, got) in events.iter().zip(batch) {
            let want = v1.evaluate(e.clone()).verdict;
            assert_eq!(got.verdict, want, "{e:?}");
            kept += usize::from(want == Ok(Verdict::Keep));
        }
    }
    assert!(kept > 50, "the workload keeps some events ({kept})");
    // One event at a time through a v2 module is a batch of one.
    assert_eq!(v2.evaluate(sized(1)).verdict, v1.evaluate(sized(1)).verdict);
}

#[test]
fn keep_all_keeps_every_event_of_every_batch() {
    let mut f = instance(KEEP_ALL_V2);
    let events: Vec<_> = (0..600).map(sized).collect();
    let evals = f.evaluate_all(&events);
    assert!(evals.iter().all(|e| e.verdict == Ok(Verdict::Keep)));
    assert!(
        evals.iter().all(|e| e.fuel < 100),
        "fuel is shared per event"
    );
}

#[test]
fn a_fully_decided_batch_comes_back_as_verdict_bytes_counted_as_its_evaluations() {
    let mut f = instance(RAW_CAMERA_LARGE_V2);
    let events: Vec<_> = (0..200).map(sized).collect();
    let one_by_one = f.evaluate_all(&events);
    let (per_event, per_call) = (FilterStats::default(), FilterStats::default());
    for e in &one_by_one {
        per_event.record(e);
    }
    let Decided::Verdicts {
        verdicts,
        fuel,
        elapsed,
        ..
    } = f.decide(&events)
    else {
        panic!("every event decided, yet not as verdict bytes");
    };
    let want: Vec<u8> = one_by_one
        .iter()
        .map(|e| (e.verdict == Ok(Verdict::Keep)) as u8)
        .collect();
    assert_eq!(verdicts, want.as_slice());
    per_call.record_verdicts(verdicts, fuel, elapsed);
    for (a, b) in [
        (&per_event.evaluations, &per_call.evaluations),
        (&per_event.kept, &per_call.kept),
        (&per_event.dropped, &per_call.dropped),
    ] {
        assert_eq!(a.load(Relaxed), b.load(Relaxed));
    }
    // A batch with an event at fault is answered per event.
    let mut bad = instance(&batch_module("", "(unreachable)"));
    assert!(matches!(bad.decide(&events[..3]), Decided::Each(e) if e.len() == 3));
}

#[test]
fn a_failure_in_the_middle_of_a_batch_costs_only_that_event() {
    let limits = Limits {
        fuel: 100_000,
        deadline: Duration::from_millis(50),
        memory_bytes: 1 << 20,
        ..Limits::default()
    };
    let cases = [
        ("(unreachable)", "trap"),
        ("(loop $spin (br $spin))", "fuel"),
        ("(drop (memory.grow (i32.const 100)))", "memory"),
        ("(return (i32.const -7))", "module"),
        ("(return (i32.const 5))", "verdict"),
    ];
    for (bad, label) in cases {
        let module = compile(&misbehaving_at_13(bad), limits).unwrap();
        let mut f = FilterInstance::new(Arc::new(module), None).unwrap();
        let sizes = [1, 20, 30, 13, 5, 40, 13, 2];
        let events: Vec<_> = sizes.iter().map(|s| sized(*s)).collect();
        for round in 0..2 {
            let evals = f.evaluate_all(&events);
            for (size, eval) in sizes.iter().zip(&evals) {
                match (size, &eval.verdict) {
                    (13, Err(e)) => assert_eq!(e.label(), label, "{bad}: {e}"),
                    (13, ok) => panic!("{bad}: size 13 gave {ok:?}"),
                    (s, v) => assert_eq!(
                        *v,
                        Ok(if *s > 10 {
                            Verdict::Keep
                        } else {
                            Verdict::Drop
                        }),
                        "{bad}, round {round}, size {s}"
                    ),
                }
            }
        }
    }
}

#[test]
fn a_batch_that_answers_the_wrong_count_is_decided_event_by_event() {
    // Writes every verdict but answers 0: each event is asked again alone, and still 0.
    let wat = KEEP_ALL_V2.replace("    (i32.load (local.get $b))))", "    (i32.const 0)))");
    let mut f = instance(&wat);
    let evals = f.evaluate_all(&[sized(1), sized(2)]);
    assert_eq!(evals.len(), 2);
    for e in evals {
        assert_eq!(e.verdict.unwrap_err().label(), "verdict");
    }
}

#[test]
fn a_batch_module_cannot_hand_the_host_a_buffer_outside_its_memory() {
    let wat = KEEP_ALL_V2.replace("    (i32.const 0))", "    (i32.const 65530))");
    let mut f = instance(&wat);
    for e in f.evaluate_all(&[sized(1), sized(2)]) {
        let err = e.verdict.unwrap_err();
        assert_eq!(err.label(), "trap");
        assert!(
            err.to_string().contains("outside the module's memory"),
            "{err}"
        );
    }
}

#[test]
fn batch_modules_breaking_the_abi_are_refused_with_the_reason() {
    refused(
        &KEEP_ALL_V2.replace("(export \"filter_batch\")", "(export \"filter_many\")"),
        "filter_batch",
    );
    refused(
        &KEEP_ALL_V2.replace("(export \"tidemark_alloc\")", ""),
        "tidemark_alloc",
    );
    refused(
        &KEEP_ALL_V2.replace(
            "(memory (export \"memory\") 1)",
            "(import \"tidemark\" \"key\" (func (param i32 i32) (result i32)))
             (memory (export \"memory\") 1)",
        ),
        "v2 module reads every field from its batch",
    );
    refused(
        &KEEP_ALL_V2
            .replace(
                "(func (export \"filter_batch\") (param $b i32) (param $len i32) (result i32)",
                "(func (export \"filter_batch\") (param $b i32) (result i32)",
            )
            .replace(
                "(param $len i32) (result i32)\n    (memory.fill",
                "(result i32)\n    (memory.fill",
            ),
        "filter_batch",
    );
    // `log` stays available, one batch keeping up to 16 lines per event.
    let logging = batch_module(
        r#"(import "tidemark" "log" (func $log (param i32 i32)))
           (data (i32.const 64) "seen")"#,
        "(call $log (i32.const 64) (i32.const 4)) (i32.const 1)",
    );
    let mut f = instance(&logging);
    let evals = f.evaluate_all(&[sized(1), sized(2), sized(3)]);
    assert_eq!(evals[0].logs, vec!["seen"; 3]);
    assert!(evals[1].logs.is_empty() && evals[2].logs.is_empty());
}
