//! Access control for the HTTP API: bearer tokens with scopes and bucket patterns, checked by
//! one middleware in front of every route.
//!
//! Invariant: while no token is configured (no bootstrap admin token, no token entity in the
//! catalog) the API is open, as before tokens existed. Once one is, every route but the health
//! checks and the schema registry's reads needs `Authorization: Bearer <token>` whose scopes
//! name what the route does ([`need`]); the catalog is read on every request, so a revoked
//! token is refused as soon as this node has applied the revocation.
//!
//! A token limited to bucket patterns may only touch objects of matching buckets: the bucket
//! in the path or the `bucket` query parameter is checked here, the buckets in a body by the
//! handler that parses it ([`Caller::check_bucket`]); an object route that names no bucket
//! (listing all buckets' objects) is refused to such a token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::console;
use super::error::ApiError;
use super::tokens;

/// What a token may do; `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ingest,
    Read,
    Subscriptions,
    Filters,
    Replay,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Ingest,
        Scope::Read,
        Scope::Subscriptions,
        Scope::Filters,
        Scope::Replay,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Subscriptions => "subscriptions",
            Scope::Filters => "filters",
            Scope::Replay => "replay",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!("'{text}' is not a scope; scopes: {}", names.join(", "))
            })
    }
}

/// An authenticated token, put in the request's extensions by [`require`].
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token's id (`tok_…`, or `bootstrap-admin`): the actor of its changes.
    pub id: String,
    pub scopes: Vec<Scope>,
    /// Bucket patterns (`*` matches any run of characters); empty: every bucket.
    pub buckets: Vec<String>,
}

impl Grant {
    fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    fn scope_list(&self) -> String {
        let names: Vec<&str> = self.scopes.iter().map(|s| s.as_str()).collect();
        names.join(", ")
    }
}

/// Who is making a request, for handlers: the token (when access control is on) and the
/// actor that configuration changes are recorded under.
#[derive(Debug, Clone)]
pub struct Caller {
    pub grant: Option<Grant>,
    actor: String,
}

impl Caller {
    /// The token id; without access control the `X-Tidemark-Actor` header (the CLI sends
    /// `user@host`), else `anonymous@<client address>`.
    pub fn actor(&self) -> String {
        self.actor.clone()
    }

    /// Refuse (403) a bucket outside the token's patterns.
    pub fn check_bucket(&self, bucket: &str) -> Result<(), ApiError> {
        match &self.grant {
            Some(g) => bucket_allowed(g, bucket),
            None => Ok(()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let grant = parts.extensions.get::<Grant>().cloned();
        let actor = match &grant {
            Some(g) => g.id.clone(),
            None => parts
                .headers
                .get("x-tidemark-actor")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 200)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    let peer = parts
                        .extensions
                        .get::<ConnectInfo<std::net::SocketAddr>>()
                        .map(|c| c.0.ip().to_string())
                        .unwrap_or_else(|| "unknown".into());
                    format!("anonymous@{peer}")
                }),
        };
        Ok(Caller { grant, actor })
    }
}

/// The server's access-control settings.
#[derive(Default)]
pub struct Auth {
    /// SHA-256 of the bootstrap admin token (`serve --admin-token[-file]`).
    bootstrap: Option<[u8; 32]>,
    /// Per-token request rate (`--token-rate-per-sec`), none when 0.
    rate: Option<RateLimiter>,
    /// A listener is beyond loopback with no token, on purpose (`--insecure-no-auth`):
    /// `/metrics` and `/readyz` say so.
    pub insecure_no_auth: bool,
    /// The HTTP listener is TLS: the console's session cookie is `Secure`.
    pub secure_cookies: bool,
}

/// The id a bootstrap admin token acts as.
pub const BOOTSTRAP_ID: &str = "bootstrap-admin";

impl Auth {
    /// `bootstrap`: the admin token's secret, at least 16 characters. `rate`: requests per
    /// second and token (the burst is as many), 0 for no limit.
    pub fn new(bootstrap: Option<&str>, rate: u32) -> anyhow::Result<Auth> {
        let bootstrap = match bootstrap.map(str::trim) {
            Some(t) if t.len() < 16 || t.chars().any(|c| c.is_whitespace()) => anyhow::bail!(
                "the admin token must be at least 16 characters without spaces; make one with \
                 `head -c 24 /dev/urandom | base64`"
            ),
            Some(t) => Some(tokens::sha256(t)),
            None => None,
        };
        Ok(Auth {
            bootstrap,
            rate: (rate > 0).then(|| RateLimiter::new(rate)),
            insecure_no_auth: false,
            secure_cookies: false,
        })
    }

    /// Whether requests need a token: a bootstrap token is set or a token entity exists.
    pub(super) fn enabled(&self, app: &AppState) -> bool {
        self.bootstrap.is_some() || app.node.catalog.count_prefix(tokens::KIND, "") > 0
    }
}

/// The middleware: authenticate, rate-limit, check the scope and the bucket named in the
/// path or query, then pass the [`Grant`] on to the handler.
pub async fn require(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(need) = need(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    if !app.auth.enabled(&app) {
        return next.run(req).await;
    }
    let (grant, authorization) = match authenticate(&app, req.method(), req.headers()) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    if let Some(rate) = &app.auth.rate
        && let Err(wait) = rate.take(&grant.id)
    {
        return too_many(&grant.id, wait);
    }
    if !need.scopes.iter().any(|s| grant.allows(*s)) {
        let wanted: Vec<&str> = need.scopes.iter().map(|s| s.as_str()).collect();
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token '{}' may not {} {}: that needs the '{}' scope (the token has: {})",
                grant.id,
                req.method(),
                req.uri().path(),
                wanted.join("' or '"),
                grant.scope_list()
            ),
        )
        .into_response();
    }
    if !grant.buckets.is_empty() {
        let named = match need.bucket {
            BucketIn::Path(i) => path_segment(req.uri().path(), i),
            BucketIn::Query => query_bucket(req.uri().query()),
            BucketIn::Body | BucketIn::NotObjects => None,
        };
        let checked = match (named, need.bucket) {
            (Some(bucket), _) => bucket_allowed(&grant, &bucket),
            (None, BucketIn::Path(_) | BucketIn::Query) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token '{}' is limited to buckets {}: name one with ?bucket=",
                    grant.id,
                    grant.buckets.join(", ")
                ),
            )),
            (None, _) => Ok(()),
        };
        if let Err(e) = checked {
            return e.into_response();
        }
    }
    req.extensions_mut().insert(grant);
    // Mutations the node writer forwards to the node that owns their partition carry the
    // caller's own token: that node checks it too (the catalog is shared).
    crate::node::writer::CALLER_AUTHORIZATION
        .scope(authorization, next.run(req))
        .await
}

fn too_many(id: &str, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "token '{id}' made more requests than --token-rate-per-sec allows; retry in {secs}s"
        ),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// The grant of the request's bearer token (or console session cookie), and the
/// `Authorization` a forwarded request carries for it; or a 401 naming what is wrong.
fn authenticate(
    app: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(Grant, Option<HeaderValue>), AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        if let Some(id) = console::session::cookie(headers) {
            return from_session(app, id, method, headers);
        }
        return Err(AuthError(unauthorized(
            "this server needs a token: send `Authorization: Bearer <token>` (the CLI's --token \
             or TIDEMARK_TOKEN)",
        )));
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (kind, rest) = v.trim().split_once(' ')?;
            kind.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            AuthError(unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ))
        })?;
    let grant = grant_of(app, secret).map_err(|m| AuthError(unauthorized(m)))?;
    Ok((grant, Some(value.clone())))
}

/// The grant behind console session `id`: its token is checked like a bearer token, a
/// change must carry the session's CSRF token (a page on another site cannot read it), and
/// no request may come from another site's page.
fn from_session(
    app: &AppState,
    id: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(Grant, Option<HeaderValue>), AuthError> {
    let found = app.sessions.find(id).ok_or_else(|| {
        AuthError(unauthorized(
            "the console session has ended (signed out, idle too long, or the server \
             restarted): sign in again",
        ))
    })?;
    if console::session::changes_state(method) && !console::session::csrf_ok(&found, headers) {
        return Err(AuthError(console::csrf_refused()));
    }
    // A WebSocket handshake is not held back by CORS: a cookie-authenticated request a
    // browser marks as coming from another site's page is refused outright.
    console::same_origin(headers).map_err(AuthError)?;
    let grant = grant_of(app, &found.secret).map_err(|m| AuthError(unauthorized(m)))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", found.secret)).ok();
    Ok((grant, bearer))
}

/// The grant of token `secret`, or why it has none.
pub(super) fn grant_of(app: &AppState, secret: &str) -> Result<Grant, String> {
    if let Some(hash) = &app.auth.bootstrap
        && tokens::same_secret(hash, &tokens::sha256(secret))
    {
        return Ok(Grant {
            id: BOOTSTRAP_ID.into(),
            scopes: vec![Scope::Admin],
            buckets: Vec::new(),
        });
    }
    tokens::verify(&app.node.catalog, secret)
}

/// A 401 with `WWW-Authenticate: Bearer` (or a console session's 403).
struct AuthError(ApiError);

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut resp = self.0.into_response();
        // Only a missing or refused token asks for one (not a console CSRF or origin refusal).
        if resp.status() == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tidemark\""),
            );
        }
        resp
    }
}

fn bucket_allowed(grant: &Grant, bucket: &str) -> Result<(), ApiError> {
    if grant.buckets.is_empty() || grant.buckets.iter().any(|p| glob_match(p, bucket)) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "token '{}' is limited to buckets {}; '{bucket}' is not one of them",
            grant.id,
            grant.buckets.join(", ")
        ),
    ))
}

/// `*` matches any run of characters (none included); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: the whole text was the prefix
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Where a route names the bucket it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BucketIn {
    /// The n-th path segment (`/v1/objects/{bucket}/…` is 2).
    Path(usize),
    /// `?bucket=`; a request without it touches every bucket.
    Query,
    /// The handler checks the buckets its body names.
    Body,
    /// The route is not about objects.
    NotObjects,
}

/// What a route needs: one of `scopes`, and where its bucket is.
#[derive(Debug, Clone, Copy)]
struct Need {
    scopes: &'static [Scope],
    bucket: BucketIn,
}

const fn needs(scopes: &'static [Scope], bucket: BucketIn) -> Option<Need> {
    Some(Need { scopes, bucket })
}

use BucketIn::{Body, NotObjects, Query};
use Scope::{Admin, Filters, Ingest, Read, Replay, Subscriptions};

/// The scope a request needs, by method and path; `None` for public routes. Anything not
/// listed needs `admin`, so a new route is closed until it is given a scope here.
fn need(method: &Method, path: &str) -> Option<Need> {
    let reads = method == Method::GET || method == Method::HEAD;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] | ["readyz"] => None,
        // The console's files and sign-in; its pages call the API with a session.
        ["ui", ..] => None,
        ["metrics"] => needs(&[Read], NotObjects),
        // Tables of every bucket's events, like `/v1/log`.
        ["iceberg", ..] if reads => needs(&[Read], NotObjects),
        // OAuth2 client credentials (a token as the client secret) for Iceberg REST clients.
        ["iceberg", "v1", "oauth", "tokens"] if method == Method::POST => None,
        // Consumers decode with the registry; lookups and compatibility checks change nothing.
        ["subjects", ..] | ["schemas", ..] | ["config"] if reads => None,
        ["subjects", _] | ["compatibility", ..] if method == Method::POST => None,
        ["v1", rest @ ..] => need_v1(method, reads, rest),
        _ => needs(&[Admin], NotObjects),
    }
}

fn need_v1(method: &Method, reads: bool, segments: &[&str]) -> Option<Need> {
    match segments {
        ["mutations"] => needs(&[Ingest], Body),
        ["ingest", ..] => needs(&[Ingest], Body),
        ["content", ..] if method == Method::PUT => needs(&[Ingest], BucketIn::Path(2)),
        ["content", ..] if reads => needs(&[Read], BucketIn::Path(2)),
        ["objects"] if reads => needs(&[Read], Query),
        ["objects", ..] if reads => needs(&[Read], BucketIn::Path(2)),
        ["watch", ..] if reads => needs(&[Read], Query),
        ["log"] if reads => needs(&[Read], NotObjects),
        ["sync"] if method == Method::POST => needs(&[Ingest], Body),
        ["sync", _, "cancel"] => needs(&[Ingest], NotObjects),
        ["sync", ..] if reads => needs(&[Read, Ingest], NotObjects),
        ["subscriptions", ..] if reads => needs(&[Read, Subscriptions], NotObjects),
        ["subscriptions", ..] => needs(&[Subscriptions], NotObjects),
        ["functions"] if reads => needs(&[Subscriptions], NotObjects),
        ["filters", ..] if reads => needs(&[Read, Filters], NotObjects),
        ["filters", ..] => needs(&[Filters], NotObjects),
        ["rules", "test"] => needs(&[Read], NotObjects),
        ["replays", ..] if reads => needs(&[Read, Replay], NotObjects),
        ["replays", ..] => needs(&[Replay], NotObjects),
        ["restores"] if method == Method::POST => needs(&[Replay], Body),
        ["restores", ..] if reads => needs(&[Read, Replay], NotObjects),
        ["restores", ..] => needs(&[Replay], NotObjects),
        ["buckets"] if reads => needs(&[Read], NotObjects),
        ["buckets", ..] if reads => needs(&[Read], BucketIn::Path(2)),
        _ => needs(&[Admin], NotObjects),
    }
}

/// The `i`-th segment of `path` (after `/`), percent-decoded.
fn path_segment(path: &str, i: usize) -> Option<String> {
    let seg = path.trim_start_matches('/').split('/').nth(i)?;
    Some(
        percent_encoding::percent_decode_str(seg)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

fn query_bucket(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "bucket")
        .map(|(_, v)| v.into_owned())
}

/// A token bucket per token: `rate` requests a second, bursts of up to `rate`.
struct RateLimiter {
    rate: f64,
    /// Per token id: requests it may still make now, and when that was computed.
    state: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    fn new(rate: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request's worth, or say how long until one is there.
    fn take(&self, id: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let (left, at) = state.entry(id.to_string()).or_insert((self.rate, now));
        *left = (*left + now.duration_since(*at).as_secs_f64() * self.rate).min(self.rate);
        *at = now;
        if *left >= 1.0 {
            *left -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *left) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("photos*", "photos"));
        assert!(glob_match("photos*", "photos-2024"));
        assert!(!glob_match("photos*", "logs"));
        assert!(glob_match("*-prod", "eu-prod"));
        assert!(!glob_match("*-prod", "eu-prod2"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-c"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
        assert!(glob_match("*", "anything"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn scopes_by_route() {
        let scope = |m: Method, p: &str| need(&m, p).map(|n| n.scopes[0]);
        assert_eq!(scope(Method::GET, "/healthz"), None);
        assert_eq!(scope(Method::POST, "/ui/login"), None);
        assert_eq!(scope(Method::GET, "/subjects"), None);
        assert_eq!(scope(Method::POST, "/subjects/x/versions"), Some(Admin));
        assert_eq!(scope(Method::POST, "/v1/mutations"), Some(Ingest));
        assert_eq!(scope(Method::PUT, "/v1/content/b/k"), Some(Ingest));
        assert_eq!(scope(Method::GET, "/v1/content/b/k"), Some(Read));
        assert_eq!(
            scope(Method::DELETE, "/v1/subscriptions/s"),
            Some(Subscriptions)
        );
        assert_eq!(scope(Method::DELETE, "/v1/filters/f"), Some(Filters));
        assert_eq!(scope(Method::GET, "/v1/functions"), Some(Subscriptions));
        assert_eq!(scope(Method::POST, "/v1/replays"), Some(Replay));
        assert_eq!(scope(Method::PATCH, "/v1/buckets/b"), Some(Admin));
        assert_eq!(scope(Method::GET, "/v1/tokens"), Some(Admin));
        assert_eq!(scope(Method::GET, "/v1/nothing-here"), Some(Admin));
        assert_eq!(
            scope(Method::GET, "/iceberg/v1/namespaces/tidemark/tables"),
            Some(Read)
        );
        assert_eq!(scope(Method::POST, "/iceberg/v1/namespaces"), Some(Admin));
    }

    #[test]
    fn rate_limits_per_token() {
        let r = RateLimiter::new(2);
        assert!(r.take("a").is_ok());
        assert!(r.take("a").is_ok());
        let wait = r.take("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        assert!(r.take("b").is_ok());
    }
}
