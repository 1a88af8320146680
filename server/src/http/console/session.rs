//! Console sessions: a token entered once on the login page is kept here, on the server,
//! behind a random session id in an HttpOnly, SameSite=Strict cookie, so no script in the
//! page ever holds it. Every request made with the cookie is checked against the token like
//! a bearer request (scopes, bucket patterns, revocation); state-changing ones must also
//! carry the session's CSRF token in `x-csrf-token`.
//!
//! Sessions live in this node's memory: a restart (or another node) asks the browser to sign
//! in again. They end after [`IDLE`] without use, on sign-out, or when the browser closes
//! (the cookie has no expiry).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Method, header};

use crate::http::tokens::same_secret;

/// The cookie's name.
pub const COOKIE: &str = "tidemark_session";
/// The header state-changing calls carry the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session unused this long is gone.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// At most this many sessions; the least recently used goes first.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    secret: String,
    csrf: String,
    last_used: Instant,
}

/// What a request's session cookie stands for.
#[derive(Debug, Clone)]
pub struct Found {
    pub secret: String,
    pub csrf: String,
}

#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

/// 244 random bits from the operating system's CSPRNG (uuid v4), as hex.
fn random_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    /// A new session for token `secret`: its id (the cookie's value) and CSRF token.
    pub fn create(&self, secret: &str) -> (String, String) {
        let (id, csrf) = (random_id(), random_id());
        let now = Instant::now();
        let mut live = self.live.lock().unwrap();
        live.retain(|_, s| now.duration_since(s.last_used) < IDLE);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            live.remove(&oldest);
        }
        live.insert(
            id.clone(),
            Session {
                secret: secret.to_string(),
                csrf: csrf.clone(),
                last_used: now,
            },
        );
        (id, csrf)
    }

    /// The live session `id`, marked as used now.
    pub fn find(&self, id: &str) -> Option<Found> {
        let now = Instant::now();
        let mut live = self.live.lock().unwrap();
        let session = live.get_mut(id)?;
        if now.duration_since(session.last_used) >= IDLE {
            live.remove(id);
            return None;
        }
        session.last_used = now;
        Some(Found {
            secret: session.secret.clone(),
            csrf: session.csrf.clone(),
        })
    }

    pub fn remove(&self, id: &str) {
        self.live.lock().unwrap().remove(id);
    }
}

/// The session id a request's `Cookie` headers carry.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// Whether `method` may change something (so needs the CSRF token).
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request carries `found`'s CSRF token.
pub fn csrf_ok(found: &Found, headers: &HeaderMap) -> bool {
    headers
        .get(CSRF_HEADER)
        .is_some_and(|v| same_secret(v.as_bytes(), found.csrf.as_bytes()))
}

/// `Set-Cookie` for session `id`: no expiry (it ends with the browser session), `Secure` when
/// the listener is TLS.
pub fn set_cookie(id: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("hex id is a header value")
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    ))
    .expect("a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_and_gone_after_removal() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.create("secret-1");
        assert_eq!(id.len(), 64);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={id}; x=y")).unwrap(),
        );
        let found = sessions.find(cookie(&headers).unwrap()).unwrap();
        assert_eq!(found.secret, "secret-1");
        assert_eq!(found.csrf, csrf);
        assert!(!csrf_ok(&found, &headers));
        headers.insert(CSRF_HEADER, HeaderValue::from_str(&csrf).unwrap());
        assert!(csrf_ok(&found, &headers));
        headers.insert(CSRF_HEADER, HeaderValue::from_static("nope"));
        assert!(!csrf_ok(&found, &headers));
        sessions.remove(&id);
        assert!(sessions.find(&id).is_none());
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_on_tls() {
        let plain = set_cookie("abc", false);
        assert_eq!(
            plain.to_str().unwrap(),
            "tidemark_session=abc; Path=/; HttpOnly; SameSite=Strict"
        );
        assert!(
            set_cookie("abc", true)
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
        assert!(clear_cookie(false).to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn sessions_are_capped() {
        let sessions = Sessions::default();
        let first = sessions.create("s").0;
        for _ in 0..MAX_SESSIONS {
            sessions.create("s");
        }
        assert!(sessions.find(&first).is_none(), "the oldest went first");
        assert_eq!(sessions.live.lock().unwrap().len(), MAX_SESSIONS);
    }
}
