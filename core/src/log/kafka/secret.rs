//! A secret setting (`--kafka-sasl-password`, `--kafka-ssl-key-password`), kept as the operator
//! wrote it: a value, or a reference (`env:NAME`, `file:PATH`) that keeps the value out of the
//! command line and the configuration file. It is resolved once, when the log connects. Nothing
//! here prints a value: `Debug` and `Serialize` show `<redacted>` (or the reference, which
//! names where the secret is, not what it is), and errors name the flag and the variable or
//! file.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A secret setting as the operator wrote it: a value, or a reference `env:NAME` / `file:PATH`
/// resolved when the log connects. Shown (`Debug`, `Serialize`) as `<redacted>`, or as the
/// reference itself.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// A reference names where the secret is; showing it gives nothing away.
    fn reference(&self) -> Option<&str> {
        (self.0.starts_with("env:") || self.0.starts_with("file:")).then_some(self.0.as_str())
    }

    /// The value: the text itself, the environment variable, or the file's content (trailing
    /// newline trimmed). Errors name `flag` and the variable or file, never a value.
    pub fn resolve(&self, flag: &str) -> Result<String> {
        let value = if let Some(name) = self.0.strip_prefix("env:") {
            std::env::var(name).map_err(|_| {
                Error::invalid(flag, format!("environment variable {name} is not set"))
            })?
        } else if let Some(path) = self.0.strip_prefix("file:") {
            std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| Error::invalid(flag, format!("cannot read {path}: {e}")))?
        } else {
            self.0.clone()
        };
        if value.is_empty() {
            let from = self.reference().unwrap_or("the value given");
            return Err(Error::invalid(flag, format!("{from} is empty")));
        }
        Ok(value)
    }

    fn shown(&self) -> &str {
        self.reference().unwrap_or("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_and_missing_ones_name_the_flag_not_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let secret = Secret::new(format!("file:{}", file.display()));
        assert_eq!(secret.resolve("--x").unwrap(), "from-a-file");
        assert_eq!(Secret::new("literal").resolve("--x").unwrap(), "literal");

        let e = Secret::new("env:TIDEMARK_TEST_SURELY_UNSET")
            .resolve("--kafka-sasl-password")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--kafka-sasl-password:") && e.contains("TIDEMARK_TEST_SURELY_UNSET"),
            "{e}"
        );
        let e = Secret::new("file:/nonexistent/pw")
            .resolve("--kafka-ssl-key-password")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--kafka-ssl-key-password:") && e.contains("/nonexistent/pw"),
            "{e}"
        );
    }

    #[test]
    fn values_are_redacted_and_references_shown() {
        let shown = format!("{:?} {:?}", Secret::new("hunter2"), Secret::new("env:PW"));
        assert_eq!(shown, "<redacted> env:PW");
        let json = serde_json::to_string(&Secret::new("hunter2")).unwrap();
        assert_eq!(json, "\"<redacted>\"");
    }
}
