//! Write Tidemark filters in Rust.
//!
//! A filter is a WebAssembly module that decides, for each event a subscription's rules
//! matched, whether the subscription keeps it. The contract between a filter and the host is
//! `plugins/ABI.md` (ABI version 1); this crate wraps the host's `tidemark` functions in safe
//! accessors and emits the exports the host looks for with [`filter!`].
//!
//! # Example
//!
//! ```ignore
//! // Cargo.toml: [lib] crate-type = ["cdylib"], and [profile.release] panic = "abort".
//! use tidemark_filter::{Field, Verdict};
//!
//! /// Keep large objects under `raw/` that carry a `camera` metadata entry.
//! fn raw_camera_large() -> Verdict {
//!     // `with` reads the key into a stack buffer: nothing is allocated.
//!     let raw = tidemark_filter::with(Field::Key, |k| k.starts_with("raw/")) == Some(true);
//!     // `len` asks for a field's length only, which is enough to know it is set.
//!     let camera = tidemark_filter::len(Field::Metadata("camera")).is_some();
//!     let large = tidemark_filter::size().is_some_and(|s| s > 10 << 20);
//!     (raw && camera && large).into()
//! }
//!
//! tidemark_filter::filter!(raw_camera_large);
//! ```
//!
//! A filter with parameters gets them (the subscription's JSON) once per instance:
//!
//! ```ignore
//! fn setup(params: &str) -> Result<(), i32> {
//!     if params.contains("prefix") { Ok(()) } else { Err(-1) }
//! }
//! tidemark_filter::filter!(raw_camera_large, init = setup);
//! ```
//!
//! Build with `cargo build --release --target wasm32-unknown-unknown` and upload
//! `target/wasm32-unknown-unknown/release/<crate>.wasm`. The module imports only `tidemark`
//! functions: no WASI (the host refuses it), so build for `wasm32-unknown-unknown`, and avoid
//! crates that expect a JavaScript host (`wasm-bindgen`).
//!
//! The accessors only work while `filter` runs: outside an event (in `init`, say) every field
//! is absent.
//!
//! # Batches (ABI v2)
//!
//! With the crate's `batch` feature, the same source builds an ABI v2 module: `filter!`
//! exports `filter_batch`, which the host calls once for up to 256 events laid out in the
//! module's memory, and the accessors read the current event's fields straight from there —
//! no host call per field, and `with` hands the filter the batch's own bytes. Nothing else in
//! the filter changes, except that `event_json` is not available (the batch does not carry
//! the JSON form): a filter using it keeps ABI v1.
//!
//! ```toml
//! tidemark-filter = { version = "0.1", features = ["batch"] }
//! ```

use std::alloc::{self, Layout};

/// The filter ABI version this crate builds (`plugins/ABI.md`): 2 with the `batch` feature.
pub const ABI_VERSION: i32 = if cfg!(feature = "batch") { 2 } else { 1 };

/// The host functions, as `plugins/ABI.md` lists them (a v2 module imports only `log`).
mod sys {
    #[cfg(not(feature = "batch"))]
    #[link(wasm_import_module = "tidemark")]
    unsafe extern "C" {
        pub fn event_type(ptr: *mut u8, cap: i32) -> i32;
        pub fn bucket(ptr: *mut u8, cap: i32) -> i32;
        pub fn key(ptr: *mut u8, cap: i32) -> i32;
        pub fn content_type(ptr: *mut u8, cap: i32) -> i32;
        pub fn etag(ptr: *mut u8, cap: i32) -> i32;
        pub fn requester(ptr: *mut u8, cap: i32) -> i32;
        pub fn event_json(ptr: *mut u8, cap: i32) -> i32;
        pub fn metadata(name_ptr: *const u8, name_len: i32, ptr: *mut u8, cap: i32) -> i32;
        pub fn tag(name_ptr: *const u8, name_len: i32, ptr: *mut u8, cap: i32) -> i32;
        pub fn size() -> i64;
        pub fn sequence() -> i64;
    }

    #[link(wasm_import_module = "tidemark")]
    unsafe extern "C" {
        pub fn log(ptr: *const u8, len: i32);
    }
}

/// What a filter decided about the current event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The event goes to the sink.
    Keep,
    /// The event is passed over.
    Drop,
    /// The filter failed; the subscription's `on_filter_error` policy decides, and the code is
    /// counted. Codes should be negative: a non-negative one is reported as `-1`, since `0` and
    /// `1` mean drop and keep.
    Error(i32),
}

impl Verdict {
    /// The value `filter` returns for this verdict.
    pub const fn to_abi(self) -> i32 {
        match self {
            Verdict::Keep => 1,
            Verdict::Drop => 0,
            Verdict::Error(code) => error_code(code),
        }
    }
}

impl From<bool> for Verdict {
    /// `true` keeps, `false` drops.
    fn from(keep: bool) -> Self {
        if keep { Verdict::Keep } else { Verdict::Drop }
    }
}

impl<V: Into<Verdict>> From<Result<V, i32>> for Verdict {
    /// So a filter can return `Result<bool, i32>` and use `?`.
    fn from(result: Result<V, i32>) -> Self {
        match result {
            Ok(v) => v.into(),
            Err(code) => Verdict::Error(code),
        }
    }
}

/// A negative code as it is, anything else as `-1` (non-negative values are not errors).
const fn error_code(code: i32) -> i32 {
    if code < 0 { code } else { -1 }
}

/// A string field of the current event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// `ObjectCreated:Put`, ...
    EventType,
    Bucket,
    Key,
    ContentType,
    Etag,
    Requester,
    /// The user metadata value with this name.
    Metadata(&'a str),
    /// The tag value with this name.
    Tag(&'a str),
    /// The whole event as JSON (the `log tail --json` form). ABI v1 only.
    #[cfg(not(feature = "batch"))]
    EventJson,
}

/// The host's answer for a field that is absent (and, from our own buffers, never `-2`).
#[cfg(not(feature = "batch"))]
const ABSENT: i32 = -1;

#[cfg(not(feature = "batch"))]
impl Field<'_> {
    /// Ask the host for this field into `buf`: the field's length, or negative when absent.
    // Inlined so a constant field selects its one import: a module imports only what it reads.
    #[inline(always)]
    fn fetch(self, buf: &mut [u8]) -> i32 {
        // A smaller capacity than the buffer's is always safe to announce.
        let cap = i32::try_from(buf.len()).unwrap_or(i32::MAX);
        let ptr = buf.as_mut_ptr();
        let named = |name: &str, get: unsafe extern "C" fn(*const u8, i32, *mut u8, i32) -> i32| {
            // A longer name cannot be passed whole; no field has one.
            let Ok(len) = i32::try_from(name.len()) else {
                return ABSENT;
            };
            // SAFETY: the host reads `len` bytes at `name` and writes at most `cap` bytes at
            // `ptr`, all of which we own.
            unsafe { get(name.as_ptr(), len, ptr, cap) }
        };
        // SAFETY: the host writes at most `cap` bytes at `ptr`, which `buf` owns.
        unsafe {
            match self {
                Field::EventType => sys::event_type(ptr, cap),
                Field::Bucket => sys::bucket(ptr, cap),
                Field::Key => sys::key(ptr, cap),
                Field::ContentType => sys::content_type(ptr, cap),
                Field::Etag => sys::etag(ptr, cap),
                Field::Requester => sys::requester(ptr, cap),
                Field::EventJson => sys::event_json(ptr, cap),
                Field::Metadata(name) => named(name, sys::metadata),
                Field::Tag(name) => named(name, sys::tag),
            }
        }
    }
}

/// Fields this long or shorter are read on the stack; longer ones take a second call into a
/// heap buffer of the right size.
#[cfg(not(feature = "batch"))]
const STACK_BUFFER: usize = 256;

/// Call `f` with `field` of the current event, without allocating when it is short; `None` when
/// the field is absent (or, which Tidemark's host never sends, not UTF-8).
#[cfg(not(feature = "batch"))]
#[inline]
pub fn with<R>(field: Field<'_>, f: impl FnOnce(&str) -> R) -> Option<R> {
    let mut stack = [0u8; STACK_BUFFER];
    let len = usize::try_from(field.fetch(&mut stack)).ok()?;
    if len <= STACK_BUFFER {
        return Some(f(std::str::from_utf8(&stack[..len]).ok()?));
    }
    // The host wrote nothing (the field did not fit); the field cannot change during an event,
    // so a buffer of its length holds it.
    let mut heap = vec![0u8; len];
    let again = usize::try_from(field.fetch(&mut heap)).ok()?;
    Some(f(std::str::from_utf8(heap.get(..again)?).ok()?))
}

/// The length of `field` in bytes, without copying it; `None` when absent. Enough to know
/// whether a metadata entry or tag is set.
#[cfg(not(feature = "batch"))]
#[inline]
pub fn len(field: Field<'_>) -> Option<usize> {
    usize::try_from(field.fetch(&mut [])).ok()
}

/// Call `f` with `field` of the current event, read in place from the batch; `None` when the
/// field is absent (or not UTF-8).
#[cfg(feature = "batch")]
#[inline]
pub fn with<R>(field: Field<'_>, f: impl FnOnce(&str) -> R) -> Option<R> {
    Some(f(std::str::from_utf8(batch::field(field)?).ok()?))
}

/// The length of `field` in bytes; `None` when absent.
#[cfg(feature = "batch")]
#[inline]
pub fn len(field: Field<'_>) -> Option<usize> {
    batch::field(field).map(<[u8]>::len)
}

/// Reading the current event from an ABI v2 batch (`plugins/ABI.md`, "Version 2").
#[cfg(feature = "batch")]
mod batch {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use super::Field;

    /// The batch being decided and the current event's record (0: none).
    static BASE: AtomicUsize = AtomicUsize::new(0);
    static RECORD: AtomicUsize = AtomicUsize::new(0);

    const ABSENT: u32 = u32::MAX;

    fn u32_at(at: usize) -> u32 {
        // SAFETY: `at` lies in the batch the host wrote (the header's offsets point inside
        // it); the load is unaligned-safe.
        unsafe { std::ptr::read_unaligned(at as *const u32) }
    }

    fn i64_at(at: usize) -> i64 {
        // SAFETY: as `u32_at`.
        unsafe { std::ptr::read_unaligned(at as *const i64) }
    }

    /// The (offset, length) pair at `at` as the batch's bytes.
    fn string(base: usize, at: usize) -> Option<&'static [u8]> {
        let off = u32_at(at);
        if off == ABSENT {
            return None;
        }
        let len = u32_at(at + 4) as usize;
        // SAFETY: the host wrote `len` bytes at `base + off`, and they stay until the call
        // returns; `with` does not let them escape.
        Some(unsafe { std::slice::from_raw_parts((base + off as usize) as *const u8, len) })
    }

    /// The value named `name` in the entry table at the (offset, count) pair at `at`.
    fn named(base: usize, at: usize, name: &str) -> Option<&'static [u8]> {
        let (entries, count) = (base + u32_at(at) as usize, u32_at(at + 4) as usize);
        (0..count)
            .map(|i| entries + i * 16)
            .find(|e| string(base, *e) == Some(name.as_bytes()))
            .and_then(|e| string(base, e + 8))
    }

    pub fn field(field: Field<'_>) -> Option<&'static [u8]> {
        let (base, r) = (BASE.load(Relaxed), RECORD.load(Relaxed));
        if r == 0 {
            return None;
        }
        match field {
            Field::EventType => string(base, r),
            Field::Bucket => string(base, r + 8),
            Field::Key => string(base, r + 16),
            Field::ContentType => string(base, r + 24),
            Field::Etag => string(base, r + 32),
            Field::Requester => string(base, r + 40),
            Field::Metadata(name) => named(base, r + 64, name),
            Field::Tag(name) => named(base, r + 72, name),
        }
    }

    /// Size (at 48) or sequence (at 56) of the current event; `-1` outside one.
    pub fn number(at: usize) -> i64 {
        match RECORD.load(Relaxed) {
            0 => -1,
            r => i64_at(r + at),
        }
    }

    /// Decide every event of the batch at `ptr` with `decide`, writing each verdict byte.
    pub fn run(ptr: i32, decide: impl Fn() -> i32) -> i32 {
        let base = ptr as u32 as usize;
        let (count, size, verdicts) = (u32_at(base), u32_at(base + 4), u32_at(base + 8));
        BASE.store(base, Relaxed);
        for i in 0..count as usize {
            RECORD.store(base + 16 + i * size as usize, Relaxed);
            // Error codes are one signed byte in a batch: -128..=-1.
            let verdict = decide().max(-128) as i8 as u8;
            // SAFETY: the verdict bytes lie inside the batch, one per event.
            unsafe { *((base + verdicts as usize + i) as *mut u8) = verdict };
        }
        RECORD.store(0, Relaxed);
        count as i32
    }
}

/// `field` of the current event as an owned string; `None` when absent.
pub fn get(field: Field<'_>) -> Option<String> {
    with(field, str::to_owned)
}

/// The event type: `ObjectCreated:Put`, ...
pub fn event_type() -> Option<String> {
    get(Field::EventType)
}

/// The bucket name.
pub fn bucket() -> Option<String> {
    get(Field::Bucket)
}

/// The object key.
pub fn key() -> Option<String> {
    get(Field::Key)
}

/// The content type, when the object has one.
pub fn content_type() -> Option<String> {
    get(Field::ContentType)
}

/// The ETag, when the object has one.
pub fn etag() -> Option<String> {
    get(Field::Etag)
}

/// Who made the change, when known.
pub fn requester() -> Option<String> {
    get(Field::Requester)
}

/// The user metadata value named `name`.
pub fn metadata(name: &str) -> Option<String> {
    get(Field::Metadata(name))
}

/// The tag value named `name`.
pub fn tag(name: &str) -> Option<String> {
    get(Field::Tag(name))
}

/// The whole event as JSON (the `log tail --json` form). The host makes it on the first call
/// of an event, so prefer the field accessors where they do. ABI v1 only.
#[cfg(not(feature = "batch"))]
pub fn event_json() -> Option<String> {
    get(Field::EventJson)
}

/// The object's size in bytes after the event (before it, for removals); `None` when unknown.
pub fn size() -> Option<i64> {
    #[cfg(not(feature = "batch"))]
    // SAFETY: no arguments; the host only reads the current event.
    let size = unsafe { sys::size() };
    #[cfg(feature = "batch")]
    let size = batch::number(48);
    (size >= 0).then_some(size)
}

/// The event's per-key sequence; `None` outside an event.
pub fn sequence() -> Option<i64> {
    #[cfg(not(feature = "batch"))]
    // SAFETY: no arguments; the host only reads the current event.
    let sequence = unsafe { sys::sequence() };
    #[cfg(feature = "batch")]
    let sequence = batch::number(56);
    (sequence >= 0).then_some(sequence)
}

/// Log a line with the event's evaluation. The host keeps at most 1 KiB of a line and 16 lines
/// per event, and counts the rest as dropped.
pub fn log(line: &str) {
    let len = i32::try_from(line.len()).unwrap_or(i32::MAX);
    // SAFETY: the host reads at most `len` bytes at `line`, which we own.
    unsafe { sys::log(line.as_ptr(), len) }
}

/// What [`filter!`] expands to calls; not part of the API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub fn filter<V: Into<Verdict>>(f: impl FnOnce() -> V) -> i32 {
        f().into().to_abi()
    }

    /// `filter_batch`: `f` once per event of the batch.
    #[cfg(feature = "batch")]
    pub fn filter_batch<V: Into<Verdict>>(ptr: i32, f: impl Fn() -> V) -> i32 {
        super::batch::run(ptr, || f().into().to_abi())
    }

    /// `tidemark_alloc`: room for `init`'s parameters.
    pub fn alloc(len: i32) -> i32 {
        let len = usize::try_from(len).unwrap_or(0);
        if len == 0 {
            // Nothing is written there, and `init` frees nothing of length 0.
            return std::ptr::NonNull::<u8>::dangling().as_ptr() as usize as i32;
        }
        let layout = params_layout(len);
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { alloc::alloc(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        ptr as usize as i32
    }

    /// `init`: hand the parameters to `f` as `&str`, then free their buffer.
    pub fn init(ptr: i32, len: i32, f: impl FnOnce(&str) -> Result<(), i32>) -> i32 {
        let Ok(len) = usize::try_from(len) else {
            return -1;
        };
        let ptr = ptr as usize as *mut u8;
        let params: &[u8] = if len == 0 {
            &[]
        } else {
            // SAFETY: the ABI has the host call `init` with the buffer `tidemark_alloc(len)`
            // returned, after copying `len` bytes of parameters into it.
            unsafe { std::slice::from_raw_parts(ptr, len) }
        };
        let code = match std::str::from_utf8(params) {
            Ok(params) => match f(params) {
                Ok(()) => 0,
                Err(code) => error_code(code),
            },
            Err(_) => -1,
        };
        if len > 0 {
            // SAFETY: allocated by `alloc` above with this layout, and no longer borrowed.
            unsafe { alloc::dealloc(ptr, params_layout(len)) }
        }
        code
    }

    fn params_layout(len: usize) -> Layout {
        Layout::array::<u8>(len).expect("parameters fit in memory")
    }
}

/// Emit the ABI v1 exports around a filter function.
///
/// `filter!(my_filter)` exports `memory` (the linker does), `tidemark_abi_version` and
/// `filter`, which calls `my_filter()`; it may return a [`Verdict`], a `bool` (keep or drop)
/// or a `Result` of either with an `i32` error code.
///
/// `filter!(my_filter, init = my_init)` also exports `init` and `tidemark_alloc`: `my_init`
/// gets the subscription's parameters (JSON; `{}` when it has none) once per instance, before
/// the first event, and returns `Ok(())` or a negative code that fails the instance.
///
/// Use it once per crate, at the top level of a `cdylib`.
///
/// With the `batch` feature it emits the ABI v2 exports instead (`filter_batch` and
/// `tidemark_alloc`), calling `my_filter()` once per event of each batch.
#[cfg(not(feature = "batch"))]
#[macro_export]
macro_rules! filter {
    ($filter:path $(,)?) => {
        // In an anonymous block so the exported names cannot clash with the user's functions.
        const _: () = {
            #[unsafe(export_name = "tidemark_abi_version")]
            extern "C" fn __tidemark_abi_version() -> i32 {
                $crate::ABI_VERSION
            }

            #[unsafe(export_name = "filter")]
            extern "C" fn __tidemark_filter() -> i32 {
                $crate::__private::filter($filter)
            }
        };
    };
    ($filter:path, init = $init:path $(,)?) => {
        $crate::filter!($filter);
        const _: () = {
            #[unsafe(export_name = "tidemark_alloc")]
            extern "C" fn __tidemark_alloc(len: i32) -> i32 {
                $crate::__private::alloc(len)
            }

            #[unsafe(export_name = "init")]
            extern "C" fn __tidemark_init(ptr: i32, len: i32) -> i32 {
                $crate::__private::init(ptr, len, $init)
            }
        };
    };
}

/// `filter!` for ABI v2 (the `batch` feature): the same arguments, the batch exports.
#[cfg(feature = "batch")]
#[macro_export]
macro_rules! filter {
    ($filter:path $(,)?) => {
        const _: () = {
            #[unsafe(export_name = "tidemark_abi_version")]
            extern "C" fn __tidemark_abi_version() -> i32 {
                $crate::ABI_VERSION
            }

            #[unsafe(export_name = "filter_batch")]
            extern "C" fn __tidemark_filter_batch(ptr: i32, _len: i32) -> i32 {
                $crate::__private::filter_batch(ptr, $filter)
            }

            // The host's buffer for batches (and `init`'s parameters). A batch buffer is kept
            // by the host until it needs a larger one; the smaller one is not reused.
            #[unsafe(export_name = "tidemark_alloc")]
            extern "C" fn __tidemark_alloc(len: i32) -> i32 {
                $crate::__private::alloc(len)
            }
        };
    };
    ($filter:path, init = $init:path $(,)?) => {
        $crate::filter!($filter);
        const _: () = {
            #[unsafe(export_name = "init")]
            extern "C" fn __tidemark_init(ptr: i32, len: i32) -> i32 {
                $crate::__private::init(ptr, len, $init)
            }
        };
    };
}
