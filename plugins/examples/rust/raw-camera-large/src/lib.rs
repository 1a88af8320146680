//! Keep events whose key is under `raw/`, whose user metadata `camera` is set, and whose object
//! is larger than 10 MB: the Rust twin of `plugins/examples/raw_camera_large.wat`.

use tidemark_filter::{Field, len, size, with};

const LARGE: i64 = 10 << 20;

fn raw_camera_large() -> bool {
    // Cheapest first, and none allocates: the key is read into a stack buffer, and for the
    // metadata only its length is asked for.
    size().is_some_and(|size| size > LARGE)
        && len(Field::Metadata("camera")).is_some()
        && with(Field::Key, |key| key.starts_with("raw/")) == Some(true)
}

tidemark_filter::filter!(raw_camera_large);
