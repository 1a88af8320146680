//! `tidemark serve`: its settings, and running a node with its fronts (the HTTP API, the S3
//! API) until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use tidemark_core::ingest::Origin;
use tidemark_sinks::guard::DestinationPolicy;

use tidemark_plugins::Limits as FilterLimits;

use crate::args::{DataDir, LogArgs};
use crate::http::{self as server, Limits};
use crate::node::{Node, NodeConfig};

#[derive(Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataDir,
    #[command(flatten)]
    pub log: LogArgs,
    /// Address of the HTTP API (ingest, objects, schema registry, health).
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Partitions of the `objects` topic, used when it is created.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// Keep object events this long (a sealed segment is deleted once its newest event is
    /// older); absent: for ever. Set on the embedded log at every start, and on Kafka when
    /// the topic is created. State, replays and restores refuse instants before the oldest
    /// event kept.
    #[arg(long, value_name = "MS")]
    pub retention_ms: Option<u64>,
    /// Keep at most this many bytes of object events per partition (oldest segments go first).
    #[arg(long, value_name = "BYTES")]
    pub retention_bytes: Option<u64>,
    /// Memory for caches, in bytes: three quarters for the object index's pages, a quarter
    /// for ingest's per-key heads (and as much again for heads the index has not applied yet,
    /// past which writes wait for it). Memory does not grow with the number of objects.
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES", value_parser = clap::value_parser!(u64).range((4 << 20)..))]
    pub cache_bytes: u64,
    /// Largest request body accepted.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Most mutations accepted in one request.
    #[arg(long, default_value_t = 10_000)]
    pub max_batch: usize,
    /// Events a live watcher (`/v1/watch`) may fall behind the log before it is cut off (it
    /// gets an error event and resumes from its last id).
    #[arg(long, default_value_t = 10_000, value_name = "EVENTS")]
    pub watch_max_lag_events: u64,
    /// Name of this node, recorded in every event it accepts (default: the host name).
    #[arg(long)]
    pub node_id: Option<String>,
    /// Region recorded in every event this node accepts.
    #[arg(long)]
    pub region: Option<String>,
    /// URL other nodes use to reach this one (on a shared Kafka cluster they forward it the
    /// mutations of the partitions it writes). Default: http:// and the listen address.
    #[arg(long, value_name = "URL")]
    pub advertise_url: Option<String>,
    /// Non-public destinations webhooks and function triggers may reach: `loopback`,
    /// `private` (RFC 1918, unique-local, link-local incl. the metadata service) or `all`.
    /// Refused by default, so subscriptions cannot reach internal services.
    #[arg(long, value_delimiter = ',', value_name = "CLASS")]
    pub allow_destinations: Vec<String>,
    /// A PEM file of CA certificates trusted for https webhook and function URLs besides the
    /// public web PKI roots (endpoints signed by a private CA).
    #[arg(long, value_name = "FILE")]
    pub webhook_ca_file: Option<std::path::PathBuf>,
    /// WASM filter instances that may exist at once: one per filtered subscription and log
    /// partition, plus filter tests in progress. Each reserves address space, not memory.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub filter_instances: u32,
    /// WASM filter limits a version gets unless its upload asks for others: linear memory
    /// (bytes), fuel per event (about one unit per instruction), wall-clock time per event,
    /// module size, compile time.
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    pub filter_memory_bytes: usize,
    #[arg(long, default_value_t = 10_000_000, value_name = "UNITS")]
    pub filter_fuel: u64,
    #[arg(long, default_value_t = 10, value_name = "MS")]
    pub filter_timeout_ms: u64,
    #[arg(long, default_value_t = 10 << 20, value_name = "BYTES")]
    pub filter_module_bytes: usize,
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub filter_compile_ms: u64,
    /// The most an upload may ask for (memory is reserved per instance slot as address space).
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    pub filter_max_memory_bytes: usize,
    #[arg(long, default_value_t = 1_000_000_000, value_name = "UNITS")]
    pub filter_max_fuel: u64,
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub filter_max_timeout_ms: u64,
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub filter_max_module_bytes: usize,
    /// Take an index snapshot (under <data-dir>/snapshots) each time the index has applied
    /// this many more events, so `state ls --at` and `?at=` replay only the events after the
    /// newest snapshot before the instant. 0: never.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub snapshot_every_events: u64,
    /// Index snapshots kept (the newest); older ones are deleted.
    #[arg(long, default_value_t = 3, value_name = "K", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub snapshot_keep: u64,
    /// `/readyz` answers 503 while the object index is more than this many events behind
    /// the log.
    #[arg(long, default_value_t = 10_000, value_name = "EVENTS")]
    pub ready_max_lag_events: u64,
    /// On SIGTERM or Ctrl-C: seconds requests in progress (appends included) and deliveries
    /// in flight get to finish before the node stops anyway (positions are committed then,
    /// and whatever did not finish is delivered again after a restart).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub shutdown_timeout_secs: u64,
    /// Largest object `PUT /v1/content` stores (--max-body-bytes does not apply to it).
    #[arg(long, default_value_t = 5 << 30, value_name = "BYTES")]
    pub max_object_bytes: u64,
    /// Seconds between collections of content blobs that no event in the log refers to any
    /// more. 0: only when asked (`POST /v1/admin/blobs/gc`).
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub blob_gc_interval_secs: u64,
    /// Unreferenced blobs younger than this are kept: their event may still be on its way.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub blob_gc_grace_secs: u64,
    /// Where object content, multipart parts and filter modules are kept: a directory
    /// (default: --data-dir, as `<dir>/blobs` and `<dir>/multipart`), or s3://bucket/prefix,
    /// which every node of a Kafka cluster should share so any node serves any object. An
    /// s3:// store takes its endpoint and credentials from the AWS environment
    /// (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_ALLOW_HTTP=true for http://) and is checked writable at start.
    #[arg(long, value_name = "DIR|s3://bucket/prefix")]
    pub content_store: Option<String>,
    /// Seconds an ingested S3 notification record is remembered, so its redelivery appends
    /// nothing.
    #[arg(long, default_value_t = 7 * 24 * 3600, value_name = "SECS")]
    pub s3_events_dedup_secs: u64,
    /// Address of the S3-compatible API (path-style requests, and virtual-host style with
    /// --s3-domain); off when absent. Needs
    /// --s3-access-key and --s3-secret-key: every request must be signed with them.
    #[arg(long, value_name = "ADDR", requires_all = ["s3_access_key", "s3_secret_key"])]
    pub s3_listen: Option<SocketAddr>,
    /// Access key id S3 clients sign with.
    #[arg(long, value_name = "KEY")]
    pub s3_access_key: Option<String>,
    /// Secret key S3 clients sign with.
    #[arg(long, value_name = "SECRET")]
    pub s3_secret_key: Option<String>,
    /// Domain for virtual-host style S3 requests: `BUCKET.DOMAIN` names the bucket (the
    /// name must resolve to --s3-listen, e.g. a wildcard DNS entry). Path-style requests to
    /// any host keep working.
    #[arg(long, value_name = "DOMAIN", value_parser = parse_domain)]
    pub s3_domain: Option<String>,
    /// Where a bucket notification destination ARN delivers (PutBucketNotificationConfiguration):
    /// `ARN=URL`, e.g. `arn:aws:sqs:us-east-1:000000000000:thumbs=http://127.0.0.1:9000/hook`;
    /// SQS ARNs serve Queue, SNS Topic and Lambda CloudFunction configurations. Repeatable
    /// (or comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "ARN=URL")]
    pub s3_notification_target: Vec<String>,
    /// A file holding the bootstrap admin token (at least 16 characters): with it every API
    /// request needs a bearer token (docs/auth.md). Create narrower tokens with it. Needed
    /// (or TIDEMARK_ADMIN_TOKEN) to listen on a non-loopback address.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// The bootstrap admin token itself; prefer TIDEMARK_ADMIN_TOKEN or --admin-token-file
    /// (other users see a flag's value in `ps`).
    #[arg(long, value_name = "TOKEN", conflicts_with = "admin_token_file")]
    pub admin_token: Option<String>,
    /// Requests per second each token may make (bursts of as many); more get 429 with
    /// Retry-After. 0: no limit.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub token_rate_per_sec: u32,
    /// A process function subscriptions may name (`"sink": {"type": "function", "mode":
    /// "process", "function": "NAME"}`): `NAME=PROGRAM ARGS...` (split on spaces, no shell
    /// quoting) or `NAME=["PROGRAM", "ARG", ...]` (JSON). Repeatable; in the config file a
    /// `[functions]` table of `NAME = ["PROGRAM", "ARG", ...]`. Only these ever run: no API
    /// request can name a command.
    #[arg(long = "function", value_name = "NAME=PROGRAM [ARGS...]", value_parser = tidemark_sinks::function::parse_flag)]
    pub functions: Vec<tidemark_sinks::function::Declared>,
    /// Start even though a listener is on a non-loopback address and no admin token is
    /// configured: anyone who reaches the port may do anything. Warns at start and every
    /// hour, and shows in /metrics and /readyz.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// PEM certificate chain for HTTPS on --listen (and on --s3-listen unless it has its
    /// own); read again when the file changes or on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by a CA in this PEM file (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// PEM certificate chain for --s3-listen when it differs from --tls-cert.
    #[arg(long, value_name = "FILE", requires = "s3_tls_key")]
    pub s3_tls_cert: Option<std::path::PathBuf>,
    #[arg(long, value_name = "FILE", requires = "s3_tls_cert")]
    pub s3_tls_key: Option<std::path::PathBuf>,
    /// A PEM file of CA certificates trusted for other nodes' https:// advertise URLs (the
    /// nodes of a cluster forward each other mutations) besides the web PKI.
    #[arg(long, value_name = "FILE")]
    pub cluster_ca_file: Option<std::path::PathBuf>,
    /// Client CA for --s3-listen when it differs from --tls-client-ca.
    #[arg(long, value_name = "FILE")]
    pub s3_tls_client_ca: Option<std::path::PathBuf>,
    /// Seconds a client has to send a request's headers (from its first byte, or from
    /// connecting) and to complete a TLS handshake; a slower one is disconnected.
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,
    /// Seconds a kept-alive connection may wait for its next request.
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub idle_timeout_secs: u64,
    /// Connections each listener holds at once; one more is answered 503 (or closed, on
    /// TLS) at once.
    #[arg(long, default_value_t = 4096, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Linear memory all WASM filter instances together may reserve (each reserves its
    /// version's memory limit): a filtered subscription whose instances (one per partition)
    /// would not fit next to the others' is refused at create and PUT, and an instance that
    /// finds no room at run time waits as `capacity`.
    #[arg(long, default_value_t = tidemark_plugins::ServerLimits::DEFAULT_MEMORY_BUDGET as u64, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(65536..))]
    pub filter_memory_budget_bytes: u64,
    /// Live versions kept per filter: an upload past it deletes the oldest versions no
    /// subscription uses (pinned or following), or is refused naming who holds them.
    #[arg(long, default_value_t = tidemark_plugins::ServerLimits::DEFAULT_MAX_VERSIONS, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=10_000))]
    pub filter_max_versions: u32,
    /// Address space a filter compile may use: modules compile in a child process limited to
    /// this and to --filter-compile-ms of CPU, and killed at that deadline.
    #[arg(long, default_value_t = 1 << 30, value_name = "BYTES", value_parser = clap::value_parser!(u64).range((256 << 20)..))]
    pub filter_compile_memory_bytes: u64,
    /// Set by the `tidemark` binary, whose `main` answers the compile child's argument:
    /// compile in children of this executable. Off (compiling in process) where serve runs
    /// inside another program (the benchmark driver).
    #[arg(skip)]
    pub filter_compile_in_child: bool,
}

impl ServeArgs {
    /// Defaults for a server on `data_dir` listening on `listen` (benchmarks start one).
    pub fn new(data_dir: std::path::PathBuf, listen: SocketAddr) -> ServeArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        let mut args = Wrapper::parse_from(["serve"]).args;
        args.data.data_dir = data_dir;
        args.listen = listen;
        args
    }

    /// `--content-store`, or the data directory.
    fn content_store(&self) -> anyhow::Result<tidemark_core::content_store::Location> {
        use tidemark_core::content_store::{ContentStore, Location};
        match &self.content_store {
            Some(value) => {
                Location::parse(value).map_err(|e| anyhow::anyhow!("--content-store: {e}"))
            }
            None => Ok(ContentStore::default_dir(&self.data.data_dir)),
        }
    }

    fn node_config(&self, listening: SocketAddr, tls: bool) -> anyhow::Result<NodeConfig> {
        let advertise_url = self.advertise_url.clone().unwrap_or_else(|| {
            let host = if listening.ip().is_unspecified() {
                host_name()
            } else {
                listening.ip().to_string()
            };
            let scheme = if tls { "https" } else { "http" };
            format!("{scheme}://{host}:{}", listening.port())
        });
        let destinations = DestinationPolicy::parse(&self.allow_destinations)
            .map_err(|e| anyhow::anyhow!("--allow-destinations: {e}"))?;
        let (filter_defaults, filter_maxima) = self.filter_limits()?;
        Ok(NodeConfig {
            destinations,
            webhook_ca_file: self.webhook_ca_file.clone(),
            cache_bytes: self.cache_bytes as usize,
            functions: tidemark_sinks::function::Functions::new(self.functions.clone())
                .map_err(|e| anyhow::anyhow!("--function: {e}"))?,
            filter_instances: self.filter_instances,
            filter_defaults,
            filter_maxima,
            filter_server: tidemark_plugins::ServerLimits {
                memory_budget_bytes: self.filter_memory_budget_bytes as usize,
                max_versions: self.filter_max_versions,
                compiler: if self.filter_compile_in_child {
                    tidemark_plugins::Compiler::this_executable(self.filter_compile_memory_bytes)?
                } else {
                    tidemark_plugins::Compiler::InProcess
                },
            },
            static_membership: self.log.kafka_static_membership,
            advertise_url,
            data_dir: self.data.data_dir.clone(),
            log: self.log.choice(),
            schema_registry: self.log.schema_registry.clone(),
            partitions: self.partitions,
            retention: (self.retention_ms, self.retention_bytes),
            snapshots: tidemark_replay::snapshot::Policy {
                every_events: self.snapshot_every_events,
                keep: self.snapshot_keep as usize,
            },
            blob_gc: crate::node::BlobGc {
                every: (self.blob_gc_interval_secs > 0)
                    .then(|| std::time::Duration::from_secs(self.blob_gc_interval_secs)),
                grace: std::time::Duration::from_secs(self.blob_gc_grace_secs),
            },
            s3_dedup_window: std::time::Duration::from_secs(self.s3_events_dedup_secs),
            origin: Origin {
                node: Some(self.node_id.clone().unwrap_or_else(host_name)),
                region: self.region.clone(),
            },
        })
    }
}

impl ServeArgs {
    /// Refuse to listen beyond loopback without a token, unless told to (the API would be
    /// open to anyone who reaches the port). Returns the listeners that are open on purpose.
    fn check_exposure(&self, http: SocketAddr) -> anyhow::Result<Vec<String>> {
        let has_token = self.admin_token_file.is_some() || self.admin_token.is_some();
        let exposed: Vec<String> = std::iter::once(("--listen", http))
            .chain(self.s3_listen.map(|a| ("--s3-listen", a)))
            .filter(|(_, a)| !a.ip().is_loopback())
            .map(|(flag, a)| format!("{flag} {a}"))
            .collect();
        if exposed.is_empty() || has_token {
            return Ok(Vec::new());
        }
        if self.insecure_no_auth {
            return Ok(exposed);
        }
        anyhow::bail!(
            "refusing to listen on {} (not loopback) with no admin token: anyone who reaches it \
             could read, write and configure everything. Configure a token with \
             --admin-token-file FILE (or TIDEMARK_ADMIN_TOKEN), or, to run open on purpose, \
             pass --insecure-no-auth",
            exposed.join(" and ")
        )
    }

    /// The TLS of the HTTP listener and of the S3 listener (which takes the HTTP one's
    /// unless it has its own).
    fn tls(&self) -> anyhow::Result<(Option<crate::net::Tls>, Option<crate::net::Tls>)> {
        use crate::net::{Tls, TlsFiles};
        let http = self
            .tls_cert
            .clone()
            .zip(self.tls_key.clone())
            .map(|(cert, key)| TlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca.clone(),
            });
        let s3 = match self.s3_tls_cert.clone().zip(self.s3_tls_key.clone()) {
            Some((cert, key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: self.s3_tls_client_ca.clone(),
            }),
            None => http.clone().map(|mut f| {
                if self.s3_tls_client_ca.is_some() {
                    f.client_ca = self.s3_tls_client_ca.clone();
                }
                f
            }),
        };
        if self.s3_listen.is_none()
            && (self.s3_tls_cert.is_some() || self.s3_tls_client_ca.is_some())
        {
            anyhow::bail!("--s3-tls-cert and --s3-tls-client-ca need --s3-listen");
        }
        let http = http.map(|f| Tls::new(&f, "--tls")).transpose()?;
        let s3 = match (&self.s3_listen, s3) {
            (Some(_), Some(f)) => Some(Tls::new(&f, "--s3-tls")?),
            _ => None,
        };
        Ok((http, s3))
    }

    fn listener_options(
        &self,
        name: &'static str,
        tls: Option<crate::net::Tls>,
    ) -> crate::net::Options {
        crate::net::Options {
            name,
            tls,
            header_timeout: std::time::Duration::from_secs(self.header_timeout_secs),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
            max_connections: self.max_connections as usize,
        }
    }

    /// The bootstrap admin token, from its file or the flag (or TIDEMARK_ADMIN_TOKEN).
    fn bootstrap_token(&self) -> anyhow::Result<Option<String>> {
        let from_file = match &self.admin_token_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read --admin-token-file {}: {e}", path.display())
            })?),
            None => None,
        };
        Ok(from_file
            .or_else(|| self.admin_token.clone())
            .map(|t| t.trim().to_string()))
    }

    /// Access control: the bootstrap admin token and the per-token rate.
    fn auth(&self) -> anyhow::Result<server::auth::Auth> {
        let token = self.bootstrap_token()?;
        server::auth::Auth::new(token.as_deref(), self.token_rate_per_sec)
            .map_err(|e| anyhow::anyhow!("--admin-token: {e}"))
    }

    /// The filter limits' defaults and maxima; a default above its maximum is refused.
    fn filter_limits(&self) -> anyhow::Result<(FilterLimits, FilterLimits)> {
        use std::time::Duration;
        let maxima = FilterLimits {
            memory_bytes: self.filter_max_memory_bytes,
            fuel: self.filter_max_fuel,
            deadline: Duration::from_millis(self.filter_max_timeout_ms),
            module_bytes: self.filter_max_module_bytes,
            compile: FilterLimits::maxima().compile,
            ..FilterLimits::maxima()
        };
        let defaults = FilterLimits {
            memory_bytes: self.filter_memory_bytes,
            fuel: self.filter_fuel,
            deadline: Duration::from_millis(self.filter_timeout_ms),
            module_bytes: self.filter_module_bytes,
            compile: Duration::from_millis(self.filter_compile_ms),
            ..FilterLimits::default()
        };
        for (flag, default, max) in [
            (
                "memory-bytes",
                defaults.memory_bytes as u64,
                maxima.memory_bytes as u64,
            ),
            ("fuel", defaults.fuel, maxima.fuel),
            (
                "timeout-ms",
                self.filter_timeout_ms,
                self.filter_max_timeout_ms,
            ),
            (
                "module-bytes",
                defaults.module_bytes as u64,
                maxima.module_bytes as u64,
            ),
        ] {
            if default > max {
                anyhow::bail!(
                    "--filter-{flag} {default} is above --filter-max-{flag} {max}; raise the \
                     maximum or lower the default"
                );
            }
            if default == 0 {
                anyhow::bail!("--filter-{flag} must be positive");
            }
        }
        if defaults.memory_bytes < 65536 {
            anyhow::bail!("--filter-memory-bytes must be at least 65536 (one WebAssembly page)");
        }
        Ok((defaults, maxima))
    }
}

/// `--insecure-no-auth` on a reachable listener: said again every hour, so it is not
/// forgotten in a log nobody scrolls back through.
fn warn_insecure_every_hour() {
    tokio::spawn(async {
        let hour = std::time::Duration::from_secs(3600);
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + hour, hour);
        loop {
            every.tick().await;
            tracing::warn!(
                "--insecure-no-auth: this server is reachable beyond loopback with no token"
            );
        }
    });
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tidemark".into())
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let _ = args.check_exposure(args.listen)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    run_on(args, listener).await
}

/// Serve on an already bound listener until SIGTERM or Ctrl-C.
pub async fn run_on(args: ServeArgs, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let open = args.check_exposure(addr)?;
    let mut auth = args.auth()?;
    if !open.is_empty() {
        tracing::warn!(
            "--insecure-no-auth: {} is reachable beyond this machine with no token: anyone who \
             reaches it may read, write and configure everything",
            open.join(" and ")
        );
        auth.insecure_no_auth = true;
        warn_insecure_every_hour();
    }
    let (http_tls, s3_tls) = args.tls()?;
    auth.secure_cookies = http_tls.is_some();
    crate::net::raise_file_limit(
        args.max_connections,
        1 + u64::from(args.s3_listen.is_some()),
    );
    let http = crate::net::Listener::new(listener, args.listener_options("http", http_tls));
    let node = Node::open_with_content_store(
        args.node_config(addr, http.options.tls.is_some())?,
        args.content_store()?,
    )
    .await?;
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_batch: args.max_batch,
        watch_max_lag_events: args.watch_max_lag_events,
        max_object_bytes: args.max_object_bytes,
        ready_max_lag_events: args.ready_max_lag_events,
    };
    // Signals are caught before anyone is told the server is up: a SIGTERM right after the
    // line below must stop it cleanly, not kill it.
    let terminate = ShutdownSignal::install()?;
    // Tests and scripts wait for this line.
    println!(
        "tidemark listening on {} (data dir {})",
        http.url()?,
        args.data.data_dir.display()
    );
    let log = node.log.clone();
    let engine = node.engine.clone();
    let mut certificates: Vec<_> = http
        .options
        .tls
        .iter()
        .map(|t| t.certificate.clone())
        .collect();
    let s3 = match args.s3_listen {
        Some(at) => {
            let tcp = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {at} (--s3-listen): {e}"))?;
            Some(crate::net::Listener::new(
                tcp,
                args.listener_options("s3", s3_tls),
            ))
        }
        None => None,
    };
    let mut counters = vec![("http", http.counters.clone())];
    if let Some(s3) = &s3 {
        counters.push(("s3", s3.counters.clone()));
        certificates.extend(s3.options.tls.iter().map(|t| t.certificate.clone()));
    }
    crate::net::tls::reload_on_sighup(certificates);
    let forwarder = server::client_trusting(args.cluster_ca_file.as_deref(), "--cluster-ca-file")?;
    let writer = Arc::new(crate::node::writer::NodeWriter::new(
        node.ingestor.clone(),
        node.routes.clone(),
        forwarder,
        args.bootstrap_token()?.as_deref(),
    ));
    let state = server::app_state(node, limits, auth, counters, writer);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let s3 = match s3 {
        Some(listener) => {
            let keys = crate::s3::Keys {
                access: args.s3_access_key.clone().unwrap_or_default(),
                secret: args.s3_secret_key.clone().unwrap_or_default(),
            };
            let targets = crate::s3::NotificationTargets::parse(&args.s3_notification_target)
                .map_err(|e| anyhow::anyhow!("--s3-notification-target: {e}"))?;
            println!("s3 listening on {}", listener.url()?);
            Some(tokio::spawn(crate::s3::serve(
                listener,
                state.clone(),
                keys,
                targets,
                args.s3_domain.clone(),
                stopped.clone(),
            )))
        }
        None => None,
    };
    let mut http = tokio::spawn(server::serve(http, state, stopped));
    // A front end that fails before the signal stops the node with its error.
    let failed = tokio::select! {
        _ = terminate.wait() => None,
        r = &mut http => Some(r),
    };
    let grace = std::time::Duration::from_secs(args.shutdown_timeout_secs);
    let deadline = tokio::time::Instant::now() + grace;
    // Both listeners close: no new connection; requests in progress (and their appends)
    // finish until the deadline.
    let _ = stop.send(true);
    let mut result = match failed {
        Some(r) => r.map_err(anyhow::Error::from).and_then(|r| r),
        None => drain("HTTP API", http, deadline).await,
    };
    if let Some(s3) = s3 {
        result = result.and(drain("S3 API", s3, deadline).await);
    }
    // Deliveries in flight get the rest of the time, then positions are committed.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if tokio::time::timeout(
        left + std::time::Duration::from_secs(5),
        engine.shutdown_within(left),
    )
    .await
    .is_err()
    {
        tracing::warn!("delivery did not stop within --shutdown-timeout-secs; stopping anyway");
    }
    log.close();
    tracing::info!("stopped");
    result
}

/// Wait for a front end to finish its requests in progress, until `deadline`; then cut off
/// whatever still runs (long-lived streams such as live watchers).
async fn drain(
    name: &str,
    mut task: tokio::task::JoinHandle<anyhow::Result<()>>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(r) => r?,
        Err(_) => {
            tracing::warn!(
                "{name}: requests still in progress at the shutdown deadline; closing them"
            );
            task.abort();
            Ok(())
        }
    }
}

/// SIGTERM and SIGINT, registered up front so none is missed between start-up and the wait.
struct ShutdownSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let handler =
            |kind, name| signal(kind).map_err(|e| anyhow::anyhow!("cannot handle {name}: {e}"));
        Ok(Self {
            term: handler(SignalKind::terminate(), "SIGTERM")?,
            int: handler(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        tracing::info!("shutting down");
    }
}

/// A DNS name of labels from `[a-z0-9-]`, without a port.
fn parse_domain(text: &str) -> Result<String, String> {
    let name = text.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.split('.').all(label_ok) {
        Ok(name)
    } else {
        Err(format!(
            "'{text}' is not a domain name (labels of a-z, 0-9 and '-', no port), e.g. s3.example.com"
        ))
    }
}
