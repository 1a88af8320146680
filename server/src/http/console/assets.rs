//! The console's static files: embedded at build time (`server/build.rs`), gzip-compressed
//! once on first use, answered with an ETag so a browser revalidates instead of re-fetching.
//!
//! `TIDEMARK_CONSOLE_DIR` (development only) serves the files from that directory instead,
//! uncompressed, so a page can be edited and reloaded without rebuilding the server.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Component, Path};
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::http::error::ApiError;

include!(concat!(env!("OUT_DIR"), "/console_files.rs"));

/// One file, ready to answer.
struct Asset {
    body: Bytes,
    gzip: Bytes,
    content_type: &'static str,
    etag: HeaderValue,
}

fn embedded() -> &'static HashMap<&'static str, Asset> {
    static ASSETS: OnceLock<HashMap<&'static str, Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        FILES
            .iter()
            .map(|(path, bytes)| {
                let asset = Asset {
                    body: Bytes::from_static(bytes),
                    gzip: gzip(bytes),
                    content_type: content_type(path),
                    etag: etag(bytes),
                };
                (*path, asset)
            })
            .collect()
    })
}

fn gzip(bytes: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("gzip into memory");
    Bytes::from(encoder.finish().expect("gzip into memory"))
}

fn etag(bytes: &[u8]) -> HeaderValue {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a header value")
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
/// Every embedded file's path and its compressed size (what a first load transfers).
pub fn compressed_sizes() -> Vec<(&'static str, usize)> {
    let mut sizes: Vec<_> = embedded().iter().map(|(p, a)| (*p, a.gzip.len())).collect();
    sizes.sort();
    sizes
}

/// The file at `path` (relative to the console folder), as a response to a request with
/// `headers`.
pub fn serve(path: &str, headers: &HeaderMap) -> Response {
    if let Some(dir) = dev_dir() {
        return from_dir(dir, path);
    }
    let Some(asset) = embedded().get(path) else {
        return missing(path);
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == asset.etag.as_bytes());
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if accepts_gzip(headers) {
        let mut resp = asset.gzip.clone().into_response();
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        resp
    } else {
        asset.body.clone().into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::ETAG, asset.etag.clone());
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    // Revalidate every time: a new server version must never run with old pages.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `TIDEMARK_CONSOLE_DIR`, read once.
fn dev_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os("TIDEMARK_CONSOLE_DIR").map(Into::into))
        .as_deref()
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn from_dir(dir: &Path, path: &str) -> Response {
    let rel = Path::new(path);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return missing(path);
    }
    match std::fs::read(dir.join(rel)) {
        Ok(bytes) => {
            let mut resp = bytes.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(path)),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(_) => missing(path),
    }
}

fn missing(path: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("the console has no file '{path}'"),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_and_module_is_embedded_and_compressed() {
        let sizes = compressed_sizes();
        let names: Vec<&str> = sizes.iter().map(|(p, _)| *p).collect();
        for needed in [
            "index.html",
            "style.css",
            "js/app.js",
            "js/api.js",
            "js/ui.js",
        ] {
            assert!(names.contains(&needed), "{needed} not embedded: {names:?}");
        }
        for (path, _) in &sizes {
            assert_ne!(content_type(path), "application/octet-stream", "{path}");
        }
    }

    #[test]
    fn gzip_only_when_accepted() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, br"),
        );
        assert!(!accepts_gzip(&h));
    }
}
