//! The host side of the filter ABI (`plugins/ABI.md`): what a store holds while a filter runs,
//! and the `tidemark` functions a module may import. v1's field getters copy one field into
//! the module's buffer, so a filter that looks at the key pays for the key only; a v2 module
//! reads its fields from the batch (`batch.rs`) and may import only `log`.

use std::sync::Arc;

use tidemark_core::event::ObjectEvent;
use wasmtime::{Caller, Linker, Memory, ResourceLimiter, ValType};

/// A field getter's answer when the field is absent.
pub const ABSENT: i32 = -1;
/// A field getter's answer when a pointer lies outside the module's memory.
pub const OUT_OF_RANGE: i32 = -2;
/// Log lines kept per event, and bytes kept per line.
pub const LOG_LINES: usize = 16;
pub const LOG_LINE_BYTES: usize = 1024;

/// What a store carries: the event being filtered, its log lines, and its memory limit.
pub struct HostState {
    pub event: Option<Arc<ObjectEvent>>,
    /// The event as JSON, made on the first `event_json` call of an event.
    json: Option<String>,
    pub logs: Vec<String>,
    pub logs_dropped: u32,
    /// Lines kept until the next `take`: [`LOG_LINES`] per event of the call.
    pub log_cap: usize,
    /// The module's exported memory, found once after instantiation.
    pub memory: Option<Memory>,
    memory_limit: usize,
    table_elements: usize,
    /// Set when a grow past the limit was refused, to tell that trap from others.
    pub memory_denied: bool,
}

impl HostState {
    pub fn new(memory_limit: usize, table_elements: usize) -> Self {
        HostState {
            event: None,
            json: None,
            logs: Vec::new(),
            logs_dropped: 0,
            log_cap: LOG_LINES,
            memory: None,
            memory_limit,
            table_elements,
            memory_denied: false,
        }
    }

    /// Make `event` the current one.
    pub fn begin(&mut self, event: Arc<ObjectEvent>) {
        self.event = Some(event);
        self.json = None;
        // Logs are taken after each evaluation; what is here now was logged by `init`, and
        // is reported with the first event.
        self.memory_denied = false;
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_denied = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes reached",
                self.memory_limit
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }
}

/// The host functions an ABI v2 module may import: the fields are in its batch.
pub const V2_IMPORTS: &[&str] = &["log"];

/// The host functions by name, with their parameter and result types: imports are checked
/// against this list at upload.
pub fn signatures() -> Vec<(&'static str, Vec<ValType>, Vec<ValType>)> {
    use ValType::{I32, I64};
    let getter = |name| (name, vec![I32, I32], vec![I32]);
    let named = |name| (name, vec![I32, I32, I32, I32], vec![I32]);
    vec![
        getter("event_type"),
        getter("bucket"),
        getter("key"),
        getter("content_type"),
        getter("etag"),
        getter("requester"),
        getter("event_json"),
        named("metadata"),
        named("tag"),
        ("size", vec![], vec![I64]),
        ("sequence", vec![], vec![I64]),
        ("log", vec![I32, I32], vec![]),
    ]
}

/// `ptr..ptr+len` inside `len_of_memory`, as a range.
fn span(ptr: i32, len: i32, memory_len: usize) -> Option<std::ops::Range<usize>> {
    if ptr < 0 || len < 0 {
        return None;
    }
    let start = ptr as usize;
    let end = start.checked_add(len as usize)?;
    (end <= memory_len).then_some(start..end)
}

/// Copy `value` into the module's buffer `ptr..ptr+cap`; the ABI's answer.
fn put(caller: &mut Caller<'_, HostState>, value: Option<&[u8]>, ptr: i32, cap: i32) -> i32 {
    let Some(memory) = caller.data().memory else {
        return OUT_OF_RANGE;
    };
    let data = memory.data_mut(&mut *caller);
    let Some(buffer) = span(ptr, cap, data.len()) else {
        return OUT_OF_RANGE;
    };
    let Some(value) = value else { return ABSENT };
    let len = i32::try_from(value.len()).unwrap_or(i32::MAX);
    if value.len() <= buffer.len() {
        data[buffer.start..buffer.start + value.len()].copy_from_slice(value);
    }
    len
}

/// The module's bytes `ptr..ptr+len`, copied out.
fn read(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let memory = caller.data().memory?;
    let data = memory.data(&*caller);
    span(ptr, len, data.len()).map(|r| data[r].to_vec())
}

fn getter(
    linker: &mut Linker<HostState>,
    name: &str,
    field: fn(&ObjectEvent) -> Option<&str>,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        "tidemark",
        name,
        move |mut caller: Caller<'_, HostState>, ptr: i32, cap: i32| {
            let event = caller.data().event.clone();
            let value = event.as_deref().and_then(field).map(str::as_bytes);
            put(&mut caller, value, ptr, cap)
        },
    )?;
    Ok(())
}

fn named(
    linker: &mut Linker<HostState>,
    name: &str,
    map: fn(&ObjectEvent) -> &tidemark_core::event::StringMap,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        "tidemark",
        name,
        move |mut caller: Caller<'_, HostState>,
              name_ptr: i32,
              name_len: i32,
              ptr: i32,
              cap: i32| {
            let Some(name) = read(&mut caller, name_ptr, name_len) else {
                return OUT_OF_RANGE;
            };
            let event = caller.data().event.clone();
            let value = event.as_deref().and_then(|e| {
                let name = std::str::from_utf8(&name).ok()?;
                map(e).get(name).map(String::as_bytes)
            });
            put(&mut caller, value, ptr, cap)
        },
    )?;
    Ok(())
}

/// Register every host function of ABI v1.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    getter(linker, "event_type", |e| Some(e.event_type.as_str()))?;
    getter(linker, "bucket", |e| Some(e.bucket.as_str()))?;
    getter(linker, "key", |e| Some(e.key.as_str()))?;
    getter(linker, "content_type", |e| e.content_type.as_deref())?;
    getter(linker, "etag", |e| e.etag.as_deref())?;
    getter(linker, "requester", |e| e.requester.as_deref())?;
    named(linker, "metadata", |e| &e.metadata)?;
    named(linker, "tag", |e| &e.tags)?;
    linker.func_wrap(
        "tidemark",
        "event_json",
        |mut caller: Caller<'_, HostState>, ptr: i32, cap: i32| {
            if caller.data().json.is_none() {
                let json = caller
                    .data()
                    .event
                    .as_ref()
                    .map(|e| e.to_json().to_string());
                caller.data_mut().json = json;
            }
            let json = caller.data_mut().json.take();
            let answer = put(&mut caller, json.as_deref().map(str::as_bytes), ptr, cap);
            caller.data_mut().json = json;
            answer
        },
    )?;
    linker.func_wrap("tidemark", "size", |caller: Caller<'_, HostState>| {
        let e = caller.data().event.as_deref();
        // Attributes of a removed object are those it had (as the declarative rules see them).
        e.and_then(|e| e.size.or(e.previous.as_ref().map(|p| p.size)))
            .unwrap_or(-1)
    })?;
    linker.func_wrap("tidemark", "sequence", |caller: Caller<'_, HostState>| {
        caller.data().event.as_deref().map_or(-1, |e| e.sequence)
    })?;
    linker.func_wrap(
        "tidemark",
        "log",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
            if caller.data().logs.len() >= caller.data().log_cap {
                caller.data_mut().logs_dropped += 1;
                return;
            }
            let len = len.min(LOG_LINE_BYTES as i32);
            let line = match read(&mut caller, ptr, len) {
                Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                None => "<log line outside the module's memory>".to_string(),
            };
            caller.data_mut().logs.push(line);
        },
    )?;
    Ok(())
}
