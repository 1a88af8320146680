//! Connections that sinks speaking their own protocol (redis-stream, nats) open themselves:
//! every address a name resolves to is checked against the node's destination policy before
//! connecting (as the HTTP client's guard does), and TLS uses the node's roots.

use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::client::Outbound;

/// A byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Stream = Box<dyn Io>;

/// Connect to `host:port` (with TLS when `tls`), within `timeout`. The error says why, for
/// status pages.
pub async fn connect(
    out: &Outbound,
    host: &str,
    port: u16,
    tls: bool,
    timeout: Duration,
) -> Result<Stream, String> {
    let open = async {
        let tcp = connect_tcp(out, host, port).await?;
        match tls {
            true => start_tls(out, host, port, tcp).await,
            false => Ok(Box::new(tcp) as Stream),
        }
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| format!("no connection to {host}:{port} within {timeout:?}"))?
}

/// A TCP connection to the first allowed address of `host:port` that answers.
pub async fn connect_tcp(out: &Outbound, host: &str, port: u16) -> Result<TcpStream, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("{host}:{port} does not resolve: {e}"))?;
    let mut last = format!("{host}:{port} resolves to no address");
    for addr in addrs {
        if let Err(e) = out.policy.check(addr.ip()) {
            last = format!("{host}:{port}: {e}");
            continue;
        }
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last = format!("connecting to {addr}: {e}"),
        }
    }
    Err(last)
}

/// TLS over `tcp` (for protocols that start in plain text, as NATS does), verified for `host`
/// against the node's roots.
pub async fn start_tls(
    out: &Outbound,
    host: &str,
    port: u16,
    tcp: TcpStream,
) -> Result<Stream, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_string())
        .map_err(|e| format!("'{host}' is not a TLS server name: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(out.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
    Ok(Box::new(stream) as Stream)
}

/// Idle connections of a sink, kept for its next batches (about one per batch in flight). A
/// connection whose batch failed or timed out is never put back: answers still on their way
/// would be read as the next batch's.
pub struct Pool<C> {
    idle: std::sync::Mutex<Vec<C>>,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Pool {
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl<C> Pool<C> {
    /// At most this many are kept.
    const MAX_IDLE: usize = 64;

    pub fn take(&self) -> Option<C> {
        self.idle.lock().unwrap().pop()
    }

    /// Keep `conn` for a later batch (it answered everything it was sent).
    pub fn put(&self, conn: C) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < Self::MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// A server URL of a sink that speaks its own protocol (`redis://`, `nats://`, `amqp://` and
/// their TLS schemes), split.
pub struct ServerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// What follows the authority, without its `/` (a database, a virtual host).
    pub path: String,
}

/// Parse `url` of setting `field`: `schemes` are the plain and the TLS scheme (`"redis://"`,
/// `"rediss://"`), `ports` their default ports. Credentials in the URL are refused (status
/// shows the URL); `login` says where they go instead.
pub fn parse_server_url(
    field: &str,
    url: &str,
    schemes: (&str, &str),
    ports: (u16, u16),
    login: &str,
) -> crate::Result<ServerUrl> {
    let bad = |m: String| crate::Error::invalid(field, m);
    let (tls, rest) = if let Some(r) = url.strip_prefix(schemes.0) {
        (false, r)
    } else if let Some(r) = url.strip_prefix(schemes.1) {
        (true, r)
    } else {
        return Err(bad(format!(
            "'{url}' is not a {}host[:port] or {}host[:port] URL",
            schemes.0, schemes.1
        )));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(bad(format!(
            "credentials do not go in the URL (it is shown in status); give {login}"
        )));
    }
    let default = if tls { ports.1 } else { ports.0 };
    let (host, port) = split_host_port(authority, default)
        .ok_or_else(|| bad(format!("'{authority}' is not host[:port]")))?;
    Ok(ServerUrl {
        host,
        port,
        tls,
        path: path.trim_end_matches('/').to_string(),
    })
}

/// `host[:port]` (IPv6 in brackets) with `default` as the port.
pub fn split_host_port(authority: &str, default: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default,
            None => return None,
        };
        (format!("[{h}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (authority.to_string(), default),
        }
    };
    (!host.is_empty() && !host.contains(['/', '@', ' '])).then_some((host, port))
}

#[cfg(test)]
mod tests {
    #[test]
    fn authorities_split_with_default_ports() {
        use super::split_host_port as s;
        assert_eq!(
            s("redis.internal", 6379),
            Some(("redis.internal".into(), 6379))
        );
        assert_eq!(s("127.0.0.1:7000", 6379), Some(("127.0.0.1".into(), 7000)));
        assert_eq!(s("[::1]:7000", 6379), Some(("[::1]".into(), 7000)));
        assert_eq!(s("[::1]", 6379), Some(("[::1]".into(), 6379)));
        for bad in ["", "h:x", "u@h:1", "[::1"] {
            assert_eq!(s(bad, 1), None, "{bad}");
        }
    }
}
