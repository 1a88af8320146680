//! The listeners of both front ends (the HTTP API and the S3 API): one accept loop that
//! bounds what a client can hold, and speaks TLS when the operator gives a certificate.
//!
//! - At most `max_connections` at once per listener; a connection past that is answered
//!   `503` (plain) or closed (TLS) at once, so a flood cannot queue behind the others.
//! - A new connection must complete its TLS handshake and its first request's headers within
//!   the header timeout, and so must every later request from its first byte; a kept-alive
//!   connection may stay idle for the idle timeout (`activity.rs`). A client that sends one
//!   byte a second is cut off; one that streams a large body or reads a live watch is not.
//! - Plain HTTP sent to a TLS listener gets a plain `400` saying to use https, not a hang.
//! - On stop, idle connections close and requests in progress finish (the caller bounds how
//!   long it waits).
//!
//! # Layout
//! - `tls.rs`: certificates from PEM files, reloaded when they change; client CAs (mTLS).
//! - `activity.rs`: a connection's phase (headers, busy, idle) and its deadlines.
//! - `client.rs`: the client that reaches Tidemark servers (the CLI, other nodes).

pub mod activity;
pub mod client;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use activity::{Activity, Phase, TrackedBody, Watched};
pub use tls::{Tls, TlsFiles};

/// Plaintext rustls queues per connection before it must write to the socket.
const TLS_BUFFER: usize = 1 << 20;

/// How one listener treats its connections.
pub struct Options {
    /// Which front end, for logs and metrics (`http`, `s3`).
    pub name: &'static str,
    pub tls: Option<Tls>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// What happened to a listener's connections, for `/metrics`.
#[derive(Default)]
pub struct Counters {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    /// Turned away because `max_connections` were open.
    pub refused: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub idle_timeouts: AtomicU64,
    /// TLS handshakes that failed (or timed out), plain HTTP to a TLS port included.
    pub tls_failures: AtomicU64,
}

/// A listener ready to serve: its socket, options and counters.
pub struct Listener {
    pub tcp: TcpListener,
    pub options: Arc<Options>,
    pub counters: Arc<Counters>,
}

impl Listener {
    pub fn new(tcp: TcpListener, options: Options) -> Listener {
        Listener {
            tcp,
            options: Arc::new(options),
            counters: Arc::default(),
        }
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> std::io::Result<String> {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(format!("{scheme}://{}", self.tcp.local_addr()?))
    }
}

/// Raise this process's open-file limit to its hard limit (a listener's connections, the
/// log's segments and the clients' sockets all take descriptors), and warn when even that is
/// below what `max_connections` on `listeners` listeners needs.
pub fn raise_file_limit(max_connections: u64, listeners: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    // Room for the log, the index, clients to sinks and Kafka besides the listeners.
    let needed = max_connections
        .saturating_mul(listeners)
        .saturating_add(1024);
    if limit < needed {
        tracing::warn!(
            "the open-file limit is {limit}, below the {needed} that --max-connections \
             {max_connections} on {listeners} listener(s) may need; raise it (ulimit -n) or \
             lower --max-connections"
        );
    }
}

/// Serve connections until `stop` turns true, then let those in progress finish. `service`
/// makes the service of one connection from the client's address.
pub async fn serve<M, S, B>(
    listener: Listener,
    service: M,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()>
where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Listener {
        tcp,
        options,
        counters,
    } = listener;
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was taken:
                    // keep serving the others.
                    tracing::warn!(listener = options.name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        // Answers go out as headers then body: with Nagle on, a small body waits for the
        // client's delayed ACK of the headers (40 ms per small answer).
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            counters.refused.fetch_add(1, Relaxed);
            tokio::spawn(refuse(stream, options.tls.is_some()));
            continue;
        };
        counters.accepted.fetch_add(1, Relaxed);
        let (options, counters, stop) = (options.clone(), counters.clone(), stop.clone());
        let service = service(peer);
        connections.spawn(async move {
            counters.open.fetch_add(1, Relaxed);
            connection(stream, service, &options, &counters, stop).await;
            counters.open.fetch_sub(1, Relaxed);
            drop(slot);
        });
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Turn a connection away because the listener is full.
async fn refuse(mut stream: TcpStream, tls: bool) {
    if !tls {
        let answer = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
                      retry-after: 1\r\nconnection: close\r\ncontent-length: 44\r\n\r\n\
                      too many connections (--max-connections)\r\n\r\n";
        let _ =
            tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    }
}

/// One connection, TLS first when the listener has it.
async fn connection<S, B>(
    stream: TcpStream,
    service: S,
    options: &Options,
    counters: &Counters,
    stop: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(tls) = &options.tls else {
        return http(stream, service, options, counters, stop).await;
    };
    let handshake = async {
        if !starts_tls(&stream).await {
            return Err("not TLS".to_string());
        }
        tls.acceptor.accept(stream).await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(options.header_timeout, handshake).await {
        Ok(Ok(mut tls_stream)) => {
            // rustls takes 64 KiB of plaintext per write by default; a larger share of a
            // streamed object per write means fewer records flushed one syscall at a time.
            tls_stream.get_mut().1.set_buffer_limit(Some(TLS_BUFFER));
            http(tls_stream, service, options, counters, stop).await
        }
        Ok(Err(e)) => {
            counters.tls_failures.fetch_add(1, Relaxed);
            tracing::debug!(listener = options.name, "TLS handshake failed: {e}");
        }
        Err(_) => {
            counters.tls_failures.fetch_add(1, Relaxed);
            counters.header_timeouts.fetch_add(1, Relaxed);
        }
    }
}

/// Whether the client opens with a TLS handshake record; plain HTTP gets a `400` that says
/// to use https (the client would otherwise wait on an answer it cannot read).
async fn starts_tls(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if first[0] == 0x16 => true,
        Ok(1) if first[0].is_ascii_uppercase() => {
            let body = "this port speaks HTTPS (TLS): use an https:// URL\n";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            );
            // The peeked request is still unread; write the answer and close.
            let _ = stream.try_write(answer.as_bytes());
            false
        }
        _ => false,
    }
}

/// HTTP/1.1 on an established (plain or TLS) stream, with the timeouts of `activity.rs`.
async fn http<IO, S, B>(
    io: IO,
    service: S,
    options: &Options,
    counters: &Counters,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Activity::new();
    let io = Watched {
        inner: io,
        activity: activity.clone(),
    };
    let service = Arc::new(service);
    let tracked = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let busy = activity.request_started();
            let answer = service.call(req);
            async move {
                let resp = answer.await?;
                Ok::<_, S::Error>(resp.map(|inner| TrackedBody { inner, _busy: busy }))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        // `activity.rs` times headers and idleness; hyper's timer cannot tell them apart.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), tracked)
        .with_upgrades();
    tokio::pin!(conn);
    let expired = activity.expired(options.header_timeout, options.idle_timeout);
    tokio::pin!(expired);
    let served = tokio::select! {
        r = conn.as_mut() => r,
        phase = &mut expired => {
            let counter = match phase {
                Phase::Idle(_) => &counters.idle_timeouts,
                _ => &counters.header_timeouts,
            };
            counter.fetch_add(1, Relaxed);
            return; // dropping the connection closes it
        }
        // The guard `wait_for` returns must not live across the await below.
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            // Idle connections close now; a request in progress finishes first.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(listener = options.name, "connection ended: {e}");
    }
}
