//! The web console under `/ui`: its static files (embedded in the binary, `assets.rs`) and
//! the sign-in that trades an API token for a session cookie (`session.rs`). The pages call
//! only the public API; the auth middleware accepts the session cookie in place of a bearer
//! token ([`super::auth`]), with the same scopes and bucket patterns.
//!
//! - `GET /ui`, `/ui/`: the page; `GET /ui/assets/{path}`: its files.
//! - `GET /ui/session`: whether the API needs a token and, with a live session cookie, the
//!   token's id, scopes, bucket patterns and the session's CSRF token.
//! - `POST /ui/login` `{"token"}`: checks the token, sets the cookie, answers as above.
//! - `POST /ui/logout`: ends the session (needs the CSRF token).

pub mod assets;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};

use super::auth::{Grant, grant_of};
use super::error::ApiError;
use super::{AppState, State};

pub use session::Sessions;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/assets/{*path}", get(asset))
        .route("/ui/session", get(current))
        .route("/ui/login", post(login))
        .route("/ui/logout", post(logout))
}

/// Scripts and styles only from this server, no framing, no referrer leaving the page.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; object-src 'none'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn hardened(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

async fn index(headers: HeaderMap) -> Response {
    let mut resp = assets::serve("index.html", &headers);
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    hardened(resp)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    hardened(assets::serve(&path, &headers))
}

/// What the page is told about its session (never the token itself).
fn describe(app: &AppState, signed_in: Option<(&Grant, &str)>) -> Value {
    let auth = app.auth.enabled(app);
    match signed_in {
        Some((grant, csrf)) => json!({
            "auth": auth,
            "logged_in": true,
            "token_id": grant.id,
            "scopes": grant.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "buckets": grant.buckets,
            "csrf": csrf,
        }),
        None => json!({"auth": auth, "logged_in": false}),
    }
}

fn private_json(value: Value, status: StatusCode) -> Response {
    let mut resp = (status, axum::Json(value)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    hardened(resp)
}

async fn current(state: State, headers: HeaderMap) -> Response {
    let app = &state.0;
    let live = session::cookie(&headers)
        .and_then(|id| app.sessions.find(id))
        .and_then(|found| Some((grant_of(app, &found.secret).ok()?, found.csrf)));
    let body = match (&live, app.auth.enabled(app)) {
        (Some((grant, csrf)), true) => describe(app, Some((grant, csrf))),
        _ => describe(app, None),
    };
    private_json(body, StatusCode::OK)
}

async fn login(state: State, headers: HeaderMap, body: Bytes) -> Response {
    let app = &state.0;
    if let Err(e) = same_origin(&headers) {
        return hardened(e.into_response());
    }
    let token = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => match fields.get("token") {
            Some(Value::String(t)) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                return hardened(
                    ApiError::field(
                        StatusCode::BAD_REQUEST,
                        "token",
                        "the body must be {\"token\": \"<API token>\"}",
                    )
                    .into_response(),
                );
            }
        },
        _ => {
            return hardened(
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    "the body must be a JSON object {\"token\": \"<API token>\"}",
                )
                .into_response(),
            );
        }
    };
    if !app.auth.enabled(app) {
        // An open server: nothing to sign in to, every page works without a session.
        return private_json(describe(app, None), StatusCode::OK);
    }
    let grant = match grant_of(app, &token) {
        Ok(g) => g,
        Err(message) => {
            // Guessing tokens through the login page is no faster than through the API.
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            return hardened(
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response(),
            );
        }
    };
    let (id, csrf) = app.sessions.create(&token);
    let mut resp = private_json(describe(app, Some((&grant, &csrf))), StatusCode::OK);
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie(&id, app.auth.secure_cookies),
    );
    resp
}

async fn logout(state: State, headers: HeaderMap) -> Response {
    let app = &state.0;
    if let Some(id) = session::cookie(&headers)
        && let Some(found) = app.sessions.find(id)
    {
        if !session::csrf_ok(&found, &headers) {
            return hardened(csrf_refused().into_response());
        }
        app.sessions.remove(id);
    }
    let mut resp = private_json(describe(app, None), StatusCode::OK);
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session::clear_cookie(app.auth.secure_cookies),
    );
    resp
}

/// The 403 for a cookie-authenticated change without the session's CSRF token.
pub fn csrf_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf",
        format!(
            "a change made with the console's session cookie must carry the session's CSRF \
             token in the {} header (GET /ui/session gives it)",
            session::CSRF_HEADER
        ),
    )
}

/// A request a browser sent from another site's page (its `Origin` is not this server) is
/// refused: the login, and any request authenticated by the session cookie. Behind a reverse
/// proxy, the host the browser used comes as `Host` or `X-Forwarded-Host` (a page cannot set
/// either on a cross-site request).
pub(super) fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(()); // not a browser's cross-origin request
    };
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap_or("");
    let ours = [header::HOST.as_str(), "x-forwarded-host"]
        .into_iter()
        .filter_map(|name| headers.get(name)?.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|host| {
            let host = host.trim();
            !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
        });
    if ours {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            format!("a console request from a page of {origin} is refused: use this server's /ui"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn only_this_servers_pages_pass() {
        let ok = |pairs: &[(&'static str, &'static str)]| same_origin(&headers(pairs)).is_ok();
        assert!(
            ok(&[("host", "127.0.0.1:7700")]),
            "no Origin: not cross-site"
        );
        assert!(ok(&[
            ("host", "127.0.0.1:7700"),
            ("origin", "http://127.0.0.1:7700")
        ]));
        assert!(ok(&[
            ("host", "10.0.0.5:7700"),
            ("x-forwarded-host", "tidemark.example.com"),
            ("origin", "https://tidemark.example.com")
        ]));
        assert!(!ok(&[
            ("host", "127.0.0.1:7700"),
            ("origin", "http://evil.example")
        ]));
        assert!(!ok(&[
            ("host", "127.0.0.1:7700"),
            ("origin", "http://127.0.0.1:7701")
        ]));
        assert!(!ok(&[("host", "127.0.0.1:7700"), ("origin", "null")]));
        assert!(
            !ok(&[("origin", "http://127.0.0.1:7700")]),
            "no Host to compare with"
        );
    }
}
