//! `tidemark serve --log kafka` over SASL_SSL: a Tansu broker behind stunnel that takes SCRAM
//! logins (core's `test_tls` harness), the flags that reach it, and running a `serve` that must
//! stop by itself.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tidemark_core::log::kafka::test_broker::{BrokerOptions, TestBroker};
use tidemark_core::log::kafka::test_tls::TlsBroker;

use super::BIN;

/// The SCRAM user the brokers of these tests know.
pub const USER: &str = "tidemark-node";

/// A broker reachable only over TLS, taking SCRAM logins of [`USER`] with `password`.
pub fn scram_broker(password: &str) -> TlsBroker {
    TlsBroker::start(BrokerOptions {
        authentication: true,
        scram_users: vec![(USER.into(), password.into())],
        ..BrokerOptions::default()
    })
}

/// The flags that put the log on `broker` over SASL_SSL (SCRAM-SHA-256) as [`USER`], trusting
/// the CA certificate `ca`; `password` is a value or a reference (`env:`, `file:`).
pub fn sasl_ssl_args(broker: &TlsBroker, ca: &Path, password: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--log",
        "kafka",
        "--kafka-brokers",
        &broker.addr,
        "--kafka-security-protocol",
        "SASL_SSL",
        "--kafka-sasl-mechanism",
        "SCRAM-SHA-256",
        "--kafka-sasl-username",
        USER,
        "--kafka-sasl-password",
        password,
        "--kafka-ssl-ca-file",
        ca.to_str().unwrap(),
    ]
    .map(String::from)
    .into();
    for (k, v) in TestBroker::producer_workaround() {
        args.extend(["--kafka-property".into(), format!("{k}={v}")]);
    }
    args
}

/// Run `tidemark serve` on `data_dir` with `args`, which must exit by itself within `within`
/// (it is killed otherwise, and the test fails). Its exit status, stderr and run time.
pub fn serve_until_exit(
    data_dir: &Path,
    args: &[String],
    within: Duration,
) -> (ExitStatus, String, Duration) {
    std::fs::create_dir_all(data_dir).unwrap();
    let stderr_path = data_dir.with_extension("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start tidemark serve");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve still running after {within:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    (status, std::fs::read_to_string(&stderr_path).unwrap(), took)
}
