//! The filter examples in every language, built from source and run through the host: the Rust
//! ones on the SDK (`plugins/sdk`), the C one with clang, the WebAssembly text ones with `wat`.
//! Compiling a module through `FilterModule::compile` also proves it follows the ABI (exports,
//! and imports from `tidemark` only).
//!
//! A missing guest toolchain fails its test, naming what to install, unless
//! `TIDEMARK_SKIP_GUEST_TOOLCHAINS=1`: then that language is skipped with a note.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use tidemark_core::event::{ObjectEvent, sample_event};
use tidemark_plugins::{Error, FilterEngine, FilterInstance, FilterModule, Limits, Verdict};

const WASM_TARGET: &str = "wasm32-unknown-unknown";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Where guest builds go: `guest/` in the target directory the host is built in, so they stay
/// out of the source tree and are reused by later runs.
fn guest_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the plugins crate lies in the workspace");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    // A relative CARGO_TARGET_DIR is taken from the workspace root, where cargo is run.
    root.join(target).join("guest")
}

/// Whether `language`'s examples can be built: `missing` names what is not installed. A
/// missing toolchain fails the test, or with TIDEMARK_SKIP_GUEST_TOOLCHAINS=1 skips it.
fn toolchain_ready(language: &str, missing: Option<String>) -> bool {
    let Some(missing) = missing else {
        return true;
    };
    if std::env::var("TIDEMARK_SKIP_GUEST_TOOLCHAINS").as_deref() == Ok("1") {
        // Straight to stderr: the test harness captures `eprintln!`, and a skip should show.
        let _ = writeln!(
            std::io::stderr(),
            "note: skipping the {language} filter examples (TIDEMARK_SKIP_GUEST_TOOLCHAINS=1): {missing}"
        );
        return false;
    }
    panic!(
        "cannot build the {language} filter examples: {missing}. scripts/test.sh installs it; \
         or set TIDEMARK_SKIP_GUEST_TOOLCHAINS=1 to skip them"
    );
}

fn run(what: &str, command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether `program --version` runs.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The Rust examples' workspace built once for all tests (they run in parallel), as ABI v1
/// modules or, with `batch`, as ABI v2 ones (the SDK's `batch` feature); the folder holding
/// the `.wasm` files, or `None` when skipped.
fn rust_examples(batch: bool) -> Option<&'static Path> {
    static BUILT: [OnceLock<Option<PathBuf>>; 2] = [OnceLock::new(), OnceLock::new()];
    BUILT[usize::from(batch)]
        .get_or_init(|| {
            // The cargo and rustc running this test, so the guest gets the same toolchain.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
            let sysroot = run("rustc --print sysroot", Command::new(&rustc).args(["--print", "sysroot"]));
            let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
            let target_lib = sysroot.join("lib/rustlib").join(WASM_TARGET);
            let missing = (!target_lib.is_dir()).then(|| {
                format!(
                    "the Rust target {WASM_TARGET} is not installed (`rustup target add {WASM_TARGET}`)"
                )
            });
            if !toolchain_ready("Rust", missing) {
                return None;
            }
            let target_dir = guest_dir().join(if batch { "rust-batch" } else { "rust" });
            let features = if batch {
                "raw-camera-large/batch,prefix-param/batch"
            } else {
                ""
            };
            run(
                "cargo build of plugins/examples/rust",
                Command::new(cargo)
                    .args(["build", "--release", "--quiet", "--locked", "--workspace"])
                    .args(["--features", features])
                    .args(["--target", WASM_TARGET, "--target-dir"])
                    .arg(&target_dir)
                    .arg("--manifest-path")
                    .arg(examples().join("rust/Cargo.toml"))
                    // Flags meant for the host (say, -C target-cpu=native) do not fit wasm32.
                    .env_remove("RUSTFLAGS")
                    .env_remove("CARGO_ENCODED_RUSTFLAGS"),
            );
            Some(target_dir.join(WASM_TARGET).join("release"))
        })
        .as_deref()
}

fn rust_example(name: &str, batch: bool) -> Option<Vec<u8>> {
    let path = rust_examples(batch)?.join(format!("{name}.wasm"));
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// `plugins/examples/c/<name>.c` built with clang; `None` when skipped.
fn c_example(name: &str) -> Option<Vec<u8>> {
    let missing = match (installed("clang"), installed("wasm-ld")) {
        (true, true) => None,
        (false, _) => Some("clang is not installed (`apt-get install clang lld`)".to_string()),
        (true, false) => Some("wasm-ld is not installed (`apt-get install lld`)".to_string()),
    };
    if !toolchain_ready("C", missing) {
        return None;
    }
    let dir = guest_dir().join("c");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{name}.wasm"));
    run(
        "clang",
        Command::new("clang")
            .args(["--target=wasm32", "-O2", "-ffreestanding", "-nostdlib"])
            .args([
                "-Wall",
                "-Wextra",
                "-Werror",
                "-Wl,--no-entry",
                "-Wl,--strip-all",
            ])
            .arg("-o")
            .arg(&out)
            .arg(examples().join("c").join(format!("{name}.c"))),
    );
    Some(std::fs::read(&out).unwrap())
}

fn wat_example(name: &str) -> Vec<u8> {
    wat::parse_file(examples().join(format!("{name}.wat"))).unwrap()
}

fn compile(bytes: &[u8]) -> Arc<FilterModule> {
    let engine = FilterEngine::new(Limits::maxima(), 16).unwrap();
    match FilterModule::compile(&engine, bytes, Limits::default()) {
        Ok(m) => Arc::new(m),
        Err(e) => panic!("the host refused the module: {e}"),
    }
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

/// Every "raw camera large" example decides as the WebAssembly text one does.
fn check_raw_camera_large(language: &str, bytes: &[u8]) {
    const MB10: i64 = 10 << 20;
    let long_key = format!("raw/{}.jpg", "x".repeat(600));
    let mut unknown_size = (*event("raw/a.jpg", 0, true)).clone();
    unknown_size.size = None;
    unknown_size.previous = None;
    let cases = [
        (event("raw/a.jpg", 20 << 20, true), Verdict::Keep),
        (event("raw/", MB10 + 1, true), Verdict::Keep),
        // Longer than the Rust SDK's stack buffer: read again into the heap.
        (event(&long_key, 20 << 20, true), Verdict::Keep),
        (event("raw/a.jpg", MB10, true), Verdict::Drop),
        (event("raw/a.jpg", 1 << 20, true), Verdict::Drop),
        (event("raw/a.jpg", 20 << 20, false), Verdict::Drop),
        (event("cooked/a.jpg", 20 << 20, true), Verdict::Drop),
        (event("rawx/a.jpg", 20 << 20, true), Verdict::Drop),
        (event("ra", 20 << 20, true), Verdict::Drop),
        (Arc::new(unknown_size), Verdict::Drop),
    ];
    let module = compile(bytes);
    let mut f = FilterInstance::new(module.clone(), None).unwrap();
    // All of them in one call too (a v2 module decides them as one batch).
    let events: Vec<_> = cases.iter().map(|(e, _)| e.clone()).collect();
    let all = FilterInstance::new(module, None)
        .unwrap()
        .evaluate_all(&events);
    for ((_, want), eval) in cases.iter().zip(&all) {
        assert_eq!(eval.verdict, Ok(*want), "{language}, all at once");
    }
    for (e, want) in cases {
        let key = format!("{:.16} ({:?} bytes)", e.key, e.size);
        let eval = f.evaluate(e);
        assert_eq!(eval.verdict, Ok(want), "{language}: {key}");
        // A field read or two: far below the default budget, whatever the language.
        assert!(eval.fuel < 20_000, "{language}: {key}: {} fuel", eval.fuel);
        assert!(eval.logs.is_empty(), "{language}: {:?}", eval.logs);
    }
}

#[test]
fn wat_examples() {
    check_raw_camera_large("WAT", &wat_example("raw_camera_large"));
    check_raw_camera_large("WAT v2", &wat_example("raw_camera_large_v2"));
    for name in ["keep_all", "keep_all_v2"] {
        let mut keep_all = FilterInstance::new(compile(&wat_example(name)), None).unwrap();
        assert_eq!(
            keep_all.evaluate(event("x", 1, false)).verdict,
            Ok(Verdict::Keep)
        );
    }
}

#[test]
fn c_raw_camera_large() {
    if let Some(bytes) = c_example("raw_camera_large") {
        check_raw_camera_large("C", &bytes);
    }
    if let Some(bytes) = c_example("raw_camera_large_v2") {
        assert_eq!(compile(&bytes).abi_version, 2);
        check_raw_camera_large("C v2", &bytes);
    }
}

#[test]
fn rust_raw_camera_large() {
    if let Some(bytes) = rust_example("raw_camera_large", false) {
        check_raw_camera_large("Rust", &bytes);
    }
    // The same source with the SDK's `batch` feature: an ABI v2 module.
    if let Some(bytes) = rust_example("raw_camera_large", true) {
        assert_eq!(compile(&bytes).abi_version, 2);
        check_raw_camera_large("Rust v2", &bytes);
    }
}

#[test]
fn rust_prefix_param_keeps_the_prefix_given_to_init_and_logs_it_once() {
    prefix_param(false);
}

#[test]
fn rust_prefix_param_as_a_batch_module_does_the_same() {
    prefix_param(true);
}

fn prefix_param(batch: bool) {
    let Some(bytes) = rust_example("prefix_param", batch) else {
        return;
    };
    let module = compile(&bytes);
    assert_eq!(module.abi_version, if batch { 2 } else { 1 });
    assert!(module.has_init);
    let verdicts = |params: &str| {
        let mut f = FilterInstance::new(module.clone(), Some(params)).unwrap();
        let first = f.evaluate(event("raw/a.jpg", 1, false));
        let second = f.evaluate(event("cooked/a.jpg", 1, false));
        (first, second)
    };

    let (raw, cooked) = verdicts(r#"{"prefix": "raw/"}"#);
    assert_eq!(raw.verdict, Ok(Verdict::Keep));
    assert_eq!(cooked.verdict, Ok(Verdict::Drop));
    assert_eq!(raw.logs, [r#"prefix-param: keeping keys under "raw/""#]);
    assert!(cooked.logs.is_empty(), "logged again: {:?}", cooked.logs);

    let (raw, cooked) = verdicts(r#" { "note" : "x", "prefix":"cooked/" } "#);
    assert_eq!(raw.verdict, Ok(Verdict::Drop));
    assert_eq!(cooked.verdict, Ok(Verdict::Keep));
    assert_eq!(raw.logs, [r#"prefix-param: keeping keys under "cooked/""#]);

    // JSON escapes are decoded: é, and 😀 as a surrogate pair.
    let mut f = FilterInstance::new(
        module.clone(),
        Some(r#"{"prefix": "caf\u00e9/\ud83d\ude00"}"#),
    )
    .unwrap();
    assert_eq!(
        f.evaluate(event("café/😀/a.jpg", 1, false)).verdict,
        Ok(Verdict::Keep)
    );

    // No prefix (no parameters are `{}`) fails the instance with the module's code.
    for params in [None, Some(r#"{"prefix": 3}"#), Some(r#"{"prefix": "raw/""#)] {
        match FilterInstance::new(module.clone(), params) {
            Err(e) => assert_eq!(e, Error::Init(-10), "{params:?}"),
            Ok(_) => panic!("init accepted {params:?}"),
        }
    }
}
