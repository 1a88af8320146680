//! moto's S3-compatible server on a loopback port, for as long as it lives; tests change and
//! read its buckets with boto3 scripts under `tests/py/`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// A server that takes any credentials.
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// A server that checks access keys once four setup requests are done (the scripts'
    /// `auth` command makes those four and prints a key pair it issued).
    pub fn start_checking_keys() -> Moto {
        Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")])
    }

    /// On `port`, e.g. to bring a service that was down up.
    pub fn start_on(port: u16) -> Moto {
        Moto::spawn(port, &[])
    }

    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        Moto::spawn(free_port(), env)
    }

    fn spawn(port: u16, env: &[(&str, &str)]) -> Moto {
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto.server");
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_for("moto to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        Moto { child, endpoint }
    }

    /// `python3 tests/py/SCRIPT COMMAND ENDPOINT ARGS…`, its stdout; a failure fails the test.
    pub fn script(&self, script: &str, command: &str, args: &[&str]) -> String {
        let path = format!("{}/tests/py/{script}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("python3")
            .arg(path)
            .arg(command)
            .arg(&self.endpoint)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script} {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
