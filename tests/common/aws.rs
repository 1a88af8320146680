//! `aws s3api` (aws-cli) against a test server's S3 endpoint, path-style, signed with the
//! keys the tests start servers with (`AKTEST` / `s3cr3t`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Server;

pub struct Aws {
    pub endpoint: String,
    pub config: PathBuf,
}

impl Aws {
    pub fn new(dir: &Path, server: &Server) -> Aws {
        let config = dir.join("aws-config");
        std::fs::write(
            &config,
            "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n",
        )
        .unwrap();
        Aws {
            endpoint: server.s3_url.clone().expect("s3 address"),
            config,
        }
    }

    /// Runs `aws s3api ARGS`: (success, stdout, stderr).
    pub fn s3api(&self, args: &[&str]) -> (bool, String, String) {
        self.aws("s3api", args, "s3cr3t")
    }

    /// Runs `aws SERVICE ARGS` (`s3` or `s3api`) signed with `secret`.
    pub fn aws(&self, service: &str, args: &[&str], secret: &str) -> (bool, String, String) {
        let out = Command::new("aws")
            .args(["--endpoint-url", &self.endpoint, service])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "AKTEST")
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", &self.config)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_MAX_ATTEMPTS", "1")
            .output()
            .expect("run aws");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `aws s3api ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.s3api(args);
        assert!(ok, "aws s3api {args:?} failed:\n{out}\n{err}");
        out
    }

    /// `aws s3api ARGS` as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        if out.trim().is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// `aws s3api ARGS`, which must fail with S3 error `code`; nothing else is accepted.
    pub fn refused(&self, code: &str, args: &[&str]) {
        let (ok, out, err) = self.s3api(args);
        assert!(!ok, "aws s3api {args:?} succeeded; expected {code}:\n{out}");
        assert!(
            err.contains(&format!("({code})")),
            "aws s3api {args:?}: expected {code}, got:\n{err}"
        );
    }
}
