//! The client that reaches Tidemark servers: the CLI's `--server`, and the other nodes of a
//! cluster (forwarded mutations). http:// and https://, verified against the web PKI roots
//! plus an optional private CA; no address guard (these are the operator's own addresses).

/// http:// and https://.
pub type HttpClient = tidemark_sinks::client::PlainClient;

/// A client trusting the web PKI.
pub fn client() -> HttpClient {
    client_trusting(None, "").expect("no CA file to read")
}

/// A client trusting the web PKI and the CA certificates in `ca_file` (named by `flag` in
/// errors).
pub fn client_trusting(
    ca_file: Option<&std::path::Path>,
    flag: &str,
) -> anyhow::Result<HttpClient> {
    tidemark_sinks::client::plain_client(ca_file, flag).map_err(|e| anyhow::anyhow!("{e}"))
}
