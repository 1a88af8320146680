//! The filter of `plugins/examples/raw_camera_large.wat` as an Extism plug-in: keep an event
//! whose key is under `raw/`, whose user metadata `camera` is set and whose object is larger
//! than 10 MiB. Extism plug-ins get their argument as input bytes, so there are two entry
//! points, one per encoding the host may choose:
//!
//! - `filter_json`: the event's JSON view (`ObjectEvent::to_json`, what `log tail --json`
//!   prints), parsed with serde the way an Extism plug-in usually takes structured input;
//! - `filter_compact`: `key \0 camera \0 size`, where `camera` is `1` or `0` and `size` the
//!   object's size in decimal (`-1` when unknown): the least a host can hand over.
//!
//! Both write the verdict as their output: a little-endian `i32`, `1` keep, `0` drop.

use std::collections::BTreeMap;

use extism_pdk::{FnResult, Json, plugin_fn};
use serde::Deserialize;

const THRESHOLD: i64 = 10 << 20;

/// The fields of the JSON view the filter reads; serde skips the others.
#[derive(Deserialize)]
struct Event {
    key: String,
    size: Option<i64>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    previous: Option<Previous>,
}

#[derive(Deserialize)]
struct Previous {
    size: i64,
}

fn keep(key: &[u8], camera: bool, size: i64) -> i32 {
    i32::from(key.starts_with(b"raw/") && camera && size > THRESHOLD)
}

#[plugin_fn]
pub fn filter_json(Json(event): Json<Event>) -> FnResult<i32> {
    // The size after the event, or before it for a removal (as the `size` host function).
    let size = event.size.or(event.previous.map(|p| p.size)).unwrap_or(-1);
    Ok(keep(
        event.key.as_bytes(),
        event.metadata.contains_key("camera"),
        size,
    ))
}

#[plugin_fn]
pub fn filter_compact(input: Vec<u8>) -> FnResult<i32> {
    // Split from the right: the key is the one part that could hold anything.
    let mut parts = input.rsplitn(3, |&b| b == 0);
    let (Some(size), Some(camera), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(extism_pdk::Error::msg("expected key\\0camera\\0size").into());
    };
    let size: i64 = std::str::from_utf8(size)?.parse()?;
    Ok(keep(key, camera == b"1", size))
}
