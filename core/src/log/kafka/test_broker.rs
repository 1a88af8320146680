//! A real Kafka-protocol broker for tests: Tansu (`cargo install tansu --locked --features
//! dynostore`) on a free loopback port, in-memory storage, killed when dropped.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestBroker {
    child: Child,
    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub addr: String,
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
    /// Start a broker on a free port. The port is picked by binding `:0` and letting go, so
    /// another test's broker can take it first; then ours fails to bind and a connect would
    /// reach the other one. So the broker counts as up only once *its own* process holds the
    /// listening socket, and a broker that lost the race is started again on another port.
    pub fn start() -> TestBroker {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let addr = format!("127.0.0.1:{port}");
            let url = format!("tcp://{addr}");
            let mut child = Command::new(tansu_binary())
                .args(["broker", "--storage-engine", "memory://tansu/"])
                .args(["--listener-url", &url, "--advertised-listener-url", &url])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start tansu broker");
            loop {
                assert!(
                    Instant::now() < deadline,
                    "tansu broker did not listen on {addr}"
                );
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost the port: try another
                }
                if listens(child.id(), port) && TcpStream::connect(&addr).is_ok() {
                    return TestBroker { child, addr };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
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

/// Does process `pid` hold a socket listening on loopback `port`? (`/proc/net/tcp` names the
/// socket's inode; the process's fds link to `socket:[inode]`.)
fn listens(pid: u32, port: u16) -> bool {
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
    }
}
