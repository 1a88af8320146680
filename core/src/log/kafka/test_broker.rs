//! A real Kafka-protocol broker for tests: Tansu (`cargo install tansu --locked --features
//! dynostore`) on a free loopback port, in-memory storage, killed when dropped.
//!
//! [`TestBroker::start_with`] adds what the security tests need: an advertised port other than
//! the listening one (a TLS terminator's, see `test_tls.rs`), `--authentication` (SASL), and
//! SCRAM users. Tansu 0.6 keeps SCRAM credentials only in its sqlite storage (its dynostore
//! answers "no such user" to every login), so a broker with users runs on a sqlite file in a
//! scratch directory, with a Tansu built with the `libsql` feature.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestBroker {
    child: Child,
    /// `127.0.0.1:PORT` the broker listens on, for `bootstrap.servers` (unless it advertises
    /// another port: then clients must come through that one).
    pub addr: String,
    /// The sqlite storage's directory, removed on drop.
    scratch: Option<PathBuf>,
}

/// How to start a broker, beyond the defaults (plaintext, no login, in-memory storage).
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// The port clients are told to connect to (in metadata), instead of the listening one:
    /// a TLS terminator's in front of the broker.
    pub advertised_port: Option<u16>,
    /// `--authentication`: every client must log in with SASL. Tansu 0.6 offers SCRAM-SHA-256,
    /// SCRAM-SHA-512 and OAUTHBEARER (which refuses every token); PLAIN is not built in.
    pub authentication: bool,
    /// SCRAM users `(name, password)`, created with both SCRAM mechanisms before the broker
    /// starts (needs the sqlite storage: see the module header).
    pub scram_users: Vec<(String, String)>,
    /// Listen on this port (a client was pointed at it while nothing listened there) instead
    /// of a free one.
    pub port: Option<u16>,
}

/// A `tansu` with the sqlite storage (`--features dynostore,libsql`): `$TANSU_BIN` if it has
/// it, else `$TANSU_LIBSQL_BIN`, else `~/.cache/tidemark/tansu-libsql/bin/tansu`.
pub fn tansu_libsql_binary() -> PathBuf {
    let has_libsql = |bin: &Path| {
        Command::new(bin)
            .arg("--help")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libsql"))
    };
    let default = tansu_binary();
    if has_libsql(&default) {
        return default;
    }
    let home = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/tidemark/tansu-libsql/bin/tansu"));
    std::env::var_os("TANSU_LIBSQL_BIN")
        .map(PathBuf::from)
        .or(home)
        .filter(|p| has_libsql(p))
        .unwrap_or_else(|| {
            panic!(
                "the SASL tests need a Tansu with sqlite storage (SCRAM users): `cargo install \
                 tansu@0.6.0 --locked --features dynostore,libsql` (into TANSU_BIN, or set \
                 TANSU_LIBSQL_BIN)"
            )
        })
}

/// The `tansu` binary: `$TANSU_BIN`, else `tansu` on `PATH`, else `~/.cargo/bin/tansu`.
pub fn tansu_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file());
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu"));
    on_path.or(home).filter(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "the Kafka tests need the Tansu broker: `cargo install tansu --locked --features \
             dynostore` (scripts/test.sh does it), or set TANSU_BIN"
        )
    })
}

impl TestBroker {
    /// Start a broker on a free port.
    pub fn start() -> TestBroker {
        TestBroker::start_with(&BrokerOptions::default())
    }

    /// Start a broker on a free port, with `options`.
    pub fn start_with(options: &BrokerOptions) -> TestBroker {
        if options.scram_users.is_empty() {
            let storage = ["--storage-engine", "memory://tansu/"];
            return Self::spawn_listening(&tansu_binary(), None, &storage, options);
        }
        let scratch = scratch_dir();
        let binary = tansu_libsql_binary();
        create_users(&binary, &scratch, &options.scram_users);
        let storage = ["--storage-engine", "sqlite://tansu.db"];
        let mut broker = Self::spawn_listening(&binary, Some(&scratch), &storage, options);
        broker.scratch = Some(scratch);
        broker
    }

    /// The port is picked by binding `:0` and letting go, so another test's broker can take
    /// it first; then ours fails to bind and a connect would reach the other one. So the
    /// broker counts as up only once *its own* process holds the listening socket, and a
    /// broker that lost the race is started again on another port.
    fn spawn_listening(
        binary: &Path,
        cwd: Option<&Path>,
        storage: &[&str],
        options: &BrokerOptions,
    ) -> TestBroker {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let port = options.port.unwrap_or_else(free_port);
            let addr = format!("127.0.0.1:{port}");
            let url = format!("tcp://{addr}");
            let advertised = options
                .advertised_port
                .map_or(url.clone(), |p| format!("tcp://127.0.0.1:{p}"));
            let mut command = Command::new(binary);
            command
                .args(["broker"])
                .args(storage)
                .args([
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &advertised,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if options.authentication {
                command.arg("--authentication");
            }
            if let Some(dir) = cwd {
                // Tansu opens `sqlite://NAME` relative to its working directory.
                command.current_dir(dir);
            }
            let mut child = command.spawn().expect("start tansu broker");
            loop {
                assert!(
                    Instant::now() < deadline,
                    "tansu broker did not listen on {addr}"
                );
                if let Ok(Some(_)) = child.try_wait() {
                    assert!(
                        options.port.is_none(),
                        "tansu broker could not listen on {addr}"
                    );
                    break; // lost the port: try another
                }
                if listens(child.id(), port) && TcpStream::connect(&addr).is_ok() {
                    return TestBroker {
                        child,
                        addr,
                        scratch: None,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The port the broker listens on.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("addr has a port")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where Tansu 0.6 answers differently from Kafka (docs/KAFKA.md).
    pub const QUIRKS: crate::log::contract_tests::BrokerQuirks =
        crate::log::contract_tests::BrokerQuirks {
            time_after_end_answers_zero: true,
        };

    /// Client properties every test against Tansu 0.6 must use. Its `ListOffsets` (Latest)
    /// answers the base offset of the newest stored batch plus one, not the offset after that
    /// batch's last record, so a batch of 40 records reads as a high watermark of 1; its
    /// time lookup also resolves whole batches. With one record per batch both are exact. See
    /// docs/KAFKA.md.
    pub fn producer_workaround() -> std::collections::BTreeMap<String, String> {
        [("batch.num.messages".to_string(), "1".to_string())].into()
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A fresh directory under the system's temporary directory (removed by its owner's drop).
pub fn scratch_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tidemark-kafka-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}

/// Create SCRAM users in the sqlite storage under `scratch`: a broker without
/// `--authentication` on it takes `tansu user create` (an authenticating one would refuse the
/// request before any user exists), then stops; the users stay in the file.
fn create_users(binary: &Path, scratch: &Path, users: &[(String, String)]) {
    let setup = TestBroker::spawn_listening(
        binary,
        Some(scratch),
        &["--storage-engine", "sqlite://tansu.db"],
        &BrokerOptions::default(),
    );
    let broker = format!("tcp://{}", setup.addr);
    for (name, password) in users {
        for mechanism in ["scram256", "scram512"] {
            let out = Command::new(binary)
                .args([
                    "user",
                    "create",
                    "--broker",
                    &broker,
                    "--mechanism",
                    mechanism,
                ])
                .args([name, password])
                .output()
                .expect("run tansu user create");
            assert!(
                out.status.success(),
                "tansu user create {name} ({mechanism}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    drop(setup); // stops it; the directory stays
}

/// Does process `pid` hold a socket listening on loopback `port`? (`/proc/net/tcp` names the
/// socket's inode; the process's fds link to `socket:[inode]`.)
pub fn listens(pid: u32, port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|link| inodes.iter().any(|i| link.to_str() == Some(i.as_str())))
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
