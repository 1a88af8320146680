//! An external Iceberg REST catalog (the Apache Iceberg REST catalog OpenAPI spec), as the
//! sink uses one: config, namespaces, tables, and commits of requirements and updates.
//!
//! Ours rather than the `iceberg-catalog-rest` crate: the inventory's overwrites and manifest
//! merges are our own commits, and that crate sends only the `TableCommit`s the `iceberg`
//! crate builds inside itself. Requests go through the node's outbound client, so the
//! address guard applies to the catalog like to any destination a user names.
//!
//! Authentication: none, a bearer token, or OAuth2 client credentials exchanged at the
//! catalog's token endpoint (`<uri>/v1/oauth/tokens` unless another is named), renewed
//! before it expires and once on a 401.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use iceberg::io::FileIO;
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{
    Catalog, Error as IcebergError, ErrorKind, Namespace, NamespaceIdent, TableCommit,
    TableCreation, TableIdent, TableRequirement, TableUpdate,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use tokio::sync::{Mutex, OnceCell};

use super::catalogs::SinkCatalog;
use super::storage::Files;
use crate::client::HttpClient;

type IResult<T> = iceberg::Result<T>;

/// One request's limit (a catalog that does not answer is a failed round, tried again).
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read (table metadata with a long history is a few MiB).
const MAX_ANSWER: usize = 64 << 20;
/// Characters kept as they are in a path segment or a form value (RFC 3986 unreserved).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How requests are authorized.
pub(crate) enum Auth {
    None,
    Bearer(String),
    /// OAuth2 client credentials (`client_id:client_secret`, as pyiceberg's `credential`).
    Client {
        token_uri: Option<String>,
        id: String,
        secret: String,
        scope: String,
        /// The access token and when to renew it.
        current: Mutex<Option<(String, Option<Instant>)>>,
    },
}

impl Auth {
    pub fn client(credential: &str, token_uri: Option<String>, scope: Option<String>) -> Auth {
        let (id, secret) = match credential.split_once(':') {
            Some((id, secret)) => (id.to_string(), secret.to_string()),
            None => (String::new(), credential.to_string()),
        };
        Auth::Client {
            token_uri,
            id,
            secret,
            scope: scope.unwrap_or_else(|| "catalog".into()),
            current: Mutex::new(None),
        }
    }
}

pub(crate) struct RestCatalog {
    /// The catalog's base URI, without `/v1`.
    uri: String,
    /// The catalog's warehouse, sent to `/v1/config`.
    warehouse_id: Option<String>,
    /// Where the tables this sink creates are placed (`<root>/<namespace>.db/<table>`).
    root: String,
    auth: Auth,
    http: HttpClient,
    files: Files,
    file_io: FileIO,
    /// `<uri>/v1/` plus the prefix the catalog's config gives, once read.
    base: OnceCell<String>,
}

impl std::fmt::Debug for RestCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestCatalog")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

fn failed(message: impl Into<String>) -> IcebergError {
    IcebergError::new(ErrorKind::Unexpected, message.into())
}

fn seg(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

/// A namespace in a path: its levels joined by the unit separator, encoded.
fn ns_path(ns: &NamespaceIdent) -> String {
    seg(&ns.join("\u{1f}"))
}

impl RestCatalog {
    pub fn new(
        uri: &str,
        warehouse_id: Option<String>,
        root: &str,
        auth: Auth,
        http: HttpClient,
        files: Files,
    ) -> RestCatalog {
        RestCatalog {
            uri: uri.trim_end_matches('/').to_string(),
            warehouse_id,
            root: root.trim_end_matches('/').to_string(),
            auth,
            http,
            file_io: files.file_io(),
            files,
            base: OnceCell::new(),
        }
    }

    /// `<uri>/v1/<prefix>/`, reading the catalog's config the first time.
    async fn base(&self) -> IResult<&str> {
        self.base
            .get_or_try_init(|| async {
                let mut url = format!("{}/v1/config", self.uri);
                if let Some(w) = &self.warehouse_id {
                    url = format!("{url}?warehouse={}", seg(w));
                }
                let (status, body) = self.send(Method::GET, &url, None).await?;
                if status != StatusCode::OK {
                    return Err(answer_error("reading the catalog's config", status, &body));
                }
                let config: Value = parse(&body, "the catalog's config")?;
                let prefix = ["overrides", "defaults"]
                    .iter()
                    .find_map(|k| config[k]["prefix"].as_str())
                    .map(|p| p.trim_matches('/').to_string())
                    .unwrap_or_default();
                Ok(match prefix.is_empty() {
                    true => format!("{}/v1/", self.uri),
                    false => format!("{}/v1/{}/", self.uri, seg(&prefix)),
                })
            })
            .await
            .map(String::as_str)
    }

    async fn url(&self, path: &str) -> IResult<String> {
        Ok(format!("{}{path}", self.base().await?))
    }

    fn table_path(t: &TableIdent) -> String {
        format!(
            "namespaces/{}/tables/{}",
            ns_path(&t.namespace),
            seg(&t.name)
        )
    }

    /// One request with the catalog's authorization; a 401 with client credentials renews
    /// the token and tries once more.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> IResult<(StatusCode, Bytes)> {
        let body = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| failed(e.to_string()))?),
            None => Bytes::new(),
        };
        let mut renewed = false;
        loop {
            let mut req = Request::builder()
                .method(method.clone())
                .uri(url)
                .header("accept", "application/json");
            if !body.is_empty() {
                req = req.header("content-type", "application/json");
            }
            if let Some(token) = self.token(renewed).await? {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            let req = req
                .body(Full::new(body.clone()))
                .map_err(|e| failed(format!("cannot build the request to {url}: {e}")))?;
            let (status, answer) = self.exchange(&method, url, req).await?;
            if status == StatusCode::UNAUTHORIZED
                && !renewed
                && matches!(self.auth, Auth::Client { .. })
            {
                renewed = true;
                continue;
            }
            return Ok((status, answer));
        }
    }

    async fn exchange(
        &self,
        method: &Method,
        url: &str,
        req: Request<Full<Bytes>>,
    ) -> IResult<(StatusCode, Bytes)> {
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| {
                let mut msg = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg = format!("{msg}: {s}");
                    source = s.source();
                }
                failed(format!(
                    "the REST catalog cannot be reached ({method} {url}): {msg}"
                ))
            })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| failed(format!("{method} {url}: reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, IcebergError>((status, body))
        };
        tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| {
            failed(format!(
                "{method} {url}: the REST catalog did not answer within {} s",
                TIMEOUT.as_secs()
            ))
        })?
    }

    /// The bearer token to send, if any; `renew` drops a cached access token first.
    async fn token(&self, renew: bool) -> IResult<Option<String>> {
        let (token_uri, id, secret, scope, current) = match &self.auth {
            Auth::None => return Ok(None),
            Auth::Bearer(t) => return Ok(Some(t.clone())),
            Auth::Client {
                token_uri,
                id,
                secret,
                scope,
                current,
            } => (token_uri, id, secret, scope, current),
        };
        let mut current = current.lock().await;
        if let Some((token, renew_at)) = current.as_ref()
            && !renew
            && renew_at.is_none_or(|t| Instant::now() < t)
        {
            return Ok(Some(token.clone()));
        }
        let url = token_uri
            .clone()
            .unwrap_or_else(|| format!("{}/v1/oauth/tokens", self.uri));
        let mut form = format!(
            "grant_type=client_credentials&client_secret={}&scope={}",
            seg(secret),
            seg(scope)
        );
        if !id.is_empty() {
            form.push_str(&format!("&client_id={}", seg(id)));
        }
        let req = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| failed(format!("cannot build the request to {url}: {e}")))?;
        let (status, body) = self.exchange(&Method::POST, &url, req).await?;
        if status != StatusCode::OK {
            return Err(answer_error(
                "exchanging the client credentials for a token",
                status,
                &body,
            ));
        }
        let answer: Value = parse(&body, "the token endpoint's answer")?;
        let token = answer["access_token"]
            .as_str()
            .ok_or_else(|| failed("the token endpoint's answer has no access_token"))?
            .to_string();
        // Renew a minute early (or at half the lifetime of a short-lived token).
        let renew_at = answer["expires_in"].as_u64().map(|s| {
            let early = 60.min(s / 2);
            Instant::now() + Duration::from_secs(s - early)
        });
        *current = Some((token.clone(), renew_at));
        Ok(Some(token))
    }

    fn table(&self, ident: &TableIdent, answer: &Bytes) -> IResult<Table> {
        let mut loaded: Value = parse(answer, "the table's load result")?;
        let location = loaded["metadata-location"]
            .as_str()
            .ok_or_else(|| failed(format!("the catalog gave {ident} no metadata-location")))?
            .to_string();
        let metadata: TableMetadata = serde_json::from_value(loaded["metadata"].take())
            .map_err(|e| failed(format!("the catalog's metadata of {ident}: {e}")))?;
        super::catalogs::table(&self.file_io, ident, location, metadata)
    }

    async fn get_ok(&self, path: &str, what: &str) -> IResult<Option<Bytes>> {
        let url = self.url(path).await?;
        let (status, body) = self.send(Method::GET, &url, None).await?;
        match status {
            StatusCode::OK => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(answer_error(what, s, &body)),
        }
    }

    async fn post_commit(
        &self,
        ident: &TableIdent,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> IResult<Table> {
        let body = json!({
            "identifier": {"namespace": ident.namespace.as_ref(), "name": ident.name},
            "requirements": requirements,
            "updates": updates,
        });
        let url = self.url(&Self::table_path(ident)).await?;
        let (status, answer) = self.send(Method::POST, &url, Some(&body)).await?;
        match status {
            StatusCode::OK => self.table(ident, &answer),
            StatusCode::NOT_FOUND => Err(not_found(ident)),
            // Not retryable: the committer re-reads the table and recomputes the offsets.
            StatusCode::CONFLICT => Err(IcebergError::new(
                ErrorKind::CatalogCommitConflicts,
                format!(
                    "{ident} changed while committing: {}",
                    error_message(&answer)
                ),
            )),
            // 500, 502, 504: the commit may or may not have landed; the committer reads the
            // table's offsets before trying again.
            s => Err(answer_error(&format!("committing to {ident}"), s, &answer)),
        }
    }
}

fn parse(body: &Bytes, what: &str) -> IResult<Value> {
    serde_json::from_slice(body).map_err(|e| failed(format!("{what} is not JSON: {e}")))
}

/// The `error.message` of a REST catalog error body, or the body's start.
fn error_message(body: &Bytes) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&body[..body.len().min(300)])
                .trim()
                .to_string()
        })
}

fn answer_error(what: &str, status: StatusCode, body: &Bytes) -> IcebergError {
    failed(format!(
        "{what}: the REST catalog answered {status}: {}",
        error_message(body)
    ))
}

fn not_found(ident: &TableIdent) -> IcebergError {
    IcebergError::new(
        ErrorKind::TableNotFound,
        format!("no table {ident} in the REST catalog"),
    )
}

fn unsupported(what: &str) -> IcebergError {
    IcebergError::new(
        ErrorKind::FeatureUnsupported,
        format!("the Iceberg sink does not {what} through a REST catalog"),
    )
}

#[async_trait]
impl Catalog for RestCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> IResult<Vec<NamespaceIdent>> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut path = "namespaces".to_string();
            let mut query = Vec::new();
            if let Some(p) = parent {
                query.push(format!("parent={}", ns_path(p)));
            }
            if let Some(t) = &page {
                query.push(format!("pageToken={}", seg(t)));
            }
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            let body = self
                .get_ok(&path, "listing namespaces")
                .await?
                .ok_or_else(|| failed("listing namespaces: the parent does not exist"))?;
            let v = parse(&body, "the namespace list")?;
            for ns in v["namespaces"].as_array().into_iter().flatten() {
                let levels: Vec<String> = serde_json::from_value(ns.clone())
                    .map_err(|e| failed(format!("a namespace in the list: {e}")))?;
                out.push(NamespaceIdent::from_vec(levels)?);
            }
            match v["next-page-token"].as_str() {
                Some(t) if !t.is_empty() => page = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> IResult<Namespace> {
        let url = self.url("namespaces").await?;
        let body = json!({"namespace": namespace.as_ref(), "properties": properties});
        let (status, answer) = self.send(Method::POST, &url, Some(&body)).await?;
        match status {
            StatusCode::OK => Ok(Namespace::with_properties(namespace.clone(), properties)),
            StatusCode::CONFLICT => Err(IcebergError::new(
                ErrorKind::NamespaceAlreadyExists,
                format!("namespace {} exists", namespace.join(".")),
            )),
            s => Err(answer_error("creating a namespace", s, &answer)),
        }
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> IResult<Namespace> {
        let path = format!("namespaces/{}", ns_path(namespace));
        let body = self
            .get_ok(&path, "reading a namespace")
            .await?
            .ok_or_else(|| {
                IcebergError::new(
                    ErrorKind::NamespaceNotFound,
                    format!("no namespace {} in the REST catalog", namespace.join(".")),
                )
            })?;
        let v = parse(&body, "the namespace")?;
        let props: HashMap<String, String> =
            serde_json::from_value(v["properties"].clone()).unwrap_or_default();
        Ok(Namespace::with_properties(namespace.clone(), props))
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> IResult<bool> {
        let path = format!("namespaces/{}", ns_path(namespace));
        Ok(self.get_ok(&path, "finding a namespace").await?.is_some())
    }

    async fn update_namespace(
        &self,
        _namespace: &NamespaceIdent,
        _properties: HashMap<String, String>,
    ) -> IResult<()> {
        Err(unsupported("update namespaces"))
    }

    async fn drop_namespace(&self, _namespace: &NamespaceIdent) -> IResult<()> {
        Err(unsupported("drop namespaces"))
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> IResult<Vec<TableIdent>> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut path = format!("namespaces/{}/tables", ns_path(namespace));
            if let Some(t) = &page {
                path = format!("{path}?pageToken={}", seg(t));
            }
            let body = self.get_ok(&path, "listing tables").await?.ok_or_else(|| {
                IcebergError::new(
                    ErrorKind::NamespaceNotFound,
                    format!("no namespace {} in the REST catalog", namespace.join(".")),
                )
            })?;
            let v = parse(&body, "the table list")?;
            for id in v["identifiers"].as_array().into_iter().flatten() {
                let ident: TableIdent = serde_json::from_value(id.clone())
                    .map_err(|e| failed(format!("a table in the list: {e}")))?;
                out.push(ident);
            }
            match v["next-page-token"].as_str() {
                Some(t) if !t.is_empty() => page = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> IResult<Table> {
        let ident = TableIdent::new(namespace.clone(), creation.name.clone());
        let location = creation
            .location
            .clone()
            .unwrap_or_else(|| format!("{}/{}.db/{}", self.root, namespace.join("."), ident.name));
        let mut body = json!({
            "name": creation.name,
            "location": location,
            "schema": creation.schema,
            "properties": creation.properties,
            "stage-create": false,
        });
        if let Some(spec) = &creation.partition_spec {
            body["partition-spec"] =
                serde_json::to_value(spec).map_err(|e| failed(e.to_string()))?;
        }
        if let Some(order) = &creation.sort_order {
            body["write-order"] = serde_json::to_value(order).map_err(|e| failed(e.to_string()))?;
        }
        let url = self
            .url(&format!("namespaces/{}/tables", ns_path(namespace)))
            .await?;
        let (status, answer) = self.send(Method::POST, &url, Some(&body)).await?;
        match status {
            StatusCode::OK => self.table(&ident, &answer),
            StatusCode::CONFLICT => Err(IcebergError::new(
                ErrorKind::TableAlreadyExists,
                format!("table {ident} exists"),
            )),
            StatusCode::NOT_FOUND => Err(IcebergError::new(
                ErrorKind::NamespaceNotFound,
                format!("no namespace {} in the REST catalog", namespace.join(".")),
            )),
            s => Err(answer_error(&format!("creating {ident}"), s, &answer)),
        }
    }

    async fn load_table(&self, ident: &TableIdent) -> IResult<Table> {
        let body = self
            .get_ok(&Self::table_path(ident), &format!("loading {ident}"))
            .await?
            .ok_or_else(|| not_found(ident))?;
        self.table(ident, &body)
    }

    async fn drop_table(&self, _ident: &TableIdent) -> IResult<()> {
        Err(unsupported("drop tables"))
    }

    async fn purge_table(&self, _ident: &TableIdent) -> IResult<()> {
        Err(unsupported("purge tables"))
    }

    async fn table_exists(&self, ident: &TableIdent) -> IResult<bool> {
        Ok(self
            .get_ok(&Self::table_path(ident), &format!("finding {ident}"))
            .await?
            .is_some())
    }

    async fn rename_table(&self, _src: &TableIdent, _dest: &TableIdent) -> IResult<()> {
        Err(unsupported("rename tables"))
    }

    async fn register_table(&self, _ident: &TableIdent, _location: String) -> IResult<Table> {
        Err(unsupported("register tables"))
    }

    async fn update_table(&self, mut commit: TableCommit) -> IResult<Table> {
        let ident = commit.identifier().clone();
        let requirements = commit.take_requirements();
        let updates = commit.take_updates();
        self.post_commit(&ident, requirements, updates).await
    }
}

#[async_trait]
impl SinkCatalog for RestCatalog {
    fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    fn files(&self) -> &Files {
        &self.files
    }

    fn warehouse(&self) -> &str {
        &self.root
    }

    async fn commit_updates(
        &self,
        ident: &TableIdent,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> IResult<Table> {
        self.post_commit(ident, requirements, updates).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_names_are_encoded_as_one_path_segment() {
        let ns = NamespaceIdent::from_strs(["a b", "c/d"]).unwrap();
        assert_eq!(ns_path(&ns), "a%20b%1Fc%2Fd");
        assert_eq!(seg("tidemark_chg-journal.x~"), "tidemark_chg-journal.x~");
    }

    #[test]
    fn a_credential_without_a_colon_is_a_secret_alone() {
        let Auth::Client { id, secret, .. } = Auth::client("s3cr:et", None, None) else {
            panic!()
        };
        assert_eq!((id.as_str(), secret.as_str()), ("s3cr", "et"));
        let Auth::Client { id, secret, .. } = Auth::client("token", None, None) else {
            panic!()
        };
        assert_eq!((id.as_str(), secret.as_str()), ("", "token"));
    }

    #[test]
    fn error_bodies_give_their_message() {
        let body = Bytes::from_static(
            br#"{"error":{"message":"Requirement failed","type":"CommitFailedException","code":409}}"#,
        );
        assert_eq!(error_message(&body), "Requirement failed");
        assert_eq!(error_message(&Bytes::from_static(b" oops ")), "oops");
    }
}
