//! How Tidemark authenticates to the brokers and protects the connection: the named settings
//! (`--kafka-security-protocol`, `--kafka-sasl-*`, `--kafka-ssl-*`), checked before any client
//! starts and translated to librdkafka properties.
//!
//! The passwords are [`Secret`]s, resolved once when the log connects; errors here name the
//! flag, never a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::secret::Secret;
use crate::{Error, Result};

/// `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl FromStr for SecurityProtocol {
    type Err = String;

    /// Case-insensitive, as librdkafka reads it.
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown security protocol '{s}': expected PLAINTEXT, SSL, SASL_PLAINTEXT or \
                     SASL_SSL"
                )
            })
    }
}

/// `sasl.mechanisms`: the ones this build of librdkafka has (no GSSAPI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
    OAuthBearer,
}

impl SaslMechanism {
    const ALL: [SaslMechanism; 4] = [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
        SaslMechanism::OAuthBearer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Mechanisms that log in with `sasl.username` and `sasl.password`.
    fn uses_password(self) -> bool {
        !matches!(self, SaslMechanism::OAuthBearer)
    }
}

impl FromStr for SaslMechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown SASL mechanism '{s}': expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or \
                     OAUTHBEARER"
                )
            })
    }
}

/// The named security settings (all optional; the default is PLAINTEXT with no credentials).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Security {
    /// `--kafka-security-protocol`.
    #[serde(with = "by_name")]
    pub protocol: Option<SecurityProtocol>,
    /// `--kafka-sasl-mechanism`.
    #[serde(with = "by_name")]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// `--kafka-sasl-username`.
    pub sasl_username: Option<String>,
    /// `--kafka-sasl-password`.
    pub sasl_password: Option<Secret>,
    /// `--kafka-ssl-ca-file`: PEM file (or directory) of the CAs that signed the brokers'
    /// certificates; the system's CAs when not set.
    pub ssl_ca_file: Option<PathBuf>,
    /// `--kafka-ssl-cert-file`: this client's certificate (PEM), for brokers that ask for one.
    pub ssl_cert_file: Option<PathBuf>,
    /// `--kafka-ssl-key-file`: the private key (PEM) of `ssl_cert_file`.
    pub ssl_key_file: Option<PathBuf>,
    /// `--kafka-ssl-key-password`: the password of an encrypted `ssl_key_file`.
    pub ssl_key_password: Option<Secret>,
}

/// Is a librdkafka property's value a secret? (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.config`, inline private keys, ...)
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key == "sasl.oauthbearer.config"
        || key.ends_with("key.pem")
}

/// The security settings librdkafka is given, secrets resolved.
pub(super) struct Resolved {
    pub properties: Vec<(&'static str, String)>,
    /// The secret values, so that nothing Tidemark prints can contain them.
    pub secrets: Vec<String>,
}

impl Security {
    /// The protocol in effect: `security.protocol` among the extra properties wins.
    fn effective_protocol(&self, properties: &BTreeMap<String, String>) -> SecurityProtocol {
        properties
            .get("security.protocol")
            .and_then(|p| p.parse().ok())
            .or(self.protocol)
            .unwrap_or_default()
    }

    /// Check the settings together (the extra librdkafka `properties` count too: they may set
    /// what a flag would), and that the files named can be read. Errors name the flag.
    pub fn validate(&self, properties: &BTreeMap<String, String>) -> Result<()> {
        let protocol = self.effective_protocol(properties);
        let has = |key: &str| properties.contains_key(key);
        self.validate_sasl(protocol, &has)?;
        self.validate_tls(protocol)?;
        for (flag, path) in self.files() {
            check_readable(flag, path)?;
        }
        Ok(())
    }

    fn validate_sasl(&self, protocol: SecurityProtocol, has: &dyn Fn(&str) -> bool) -> Result<()> {
        let needs_sasl = |flag: &str| {
            Error::invalid(
                flag,
                format!(
                    "needs --kafka-security-protocol SASL_SSL or SASL_PLAINTEXT (it is {})",
                    protocol.as_str()
                ),
            )
        };
        if !protocol.uses_sasl() {
            if self.sasl_mechanism.is_some() {
                return Err(needs_sasl("--kafka-sasl-mechanism"));
            }
            if self.sasl_username.is_some() {
                return Err(needs_sasl("--kafka-sasl-username"));
            }
            if self.sasl_password.is_some() {
                return Err(needs_sasl("--kafka-sasl-password"));
            }
            return Ok(());
        }
        let mechanism = match self.sasl_mechanism {
            Some(m) => m,
            None if has("sasl.mechanisms") || has("sasl.mechanism") => return Ok(()),
            None => {
                return Err(Error::invalid(
                    "--kafka-sasl-mechanism",
                    format!(
                        "--kafka-security-protocol {} needs a mechanism: PLAIN, SCRAM-SHA-256, \
                         SCRAM-SHA-512 or OAUTHBEARER",
                        protocol.as_str()
                    ),
                ));
            }
        };
        if !mechanism.uses_password() {
            if self.sasl_username.is_some() || self.sasl_password.is_some() {
                return Err(Error::invalid(
                    "--kafka-sasl-username",
                    "OAUTHBEARER does not log in with a username and password; set its \
                     sasl.oauthbearer.* properties with --kafka-property",
                ));
            }
            return Ok(());
        }
        let username = self.sasl_username.is_some() || has("sasl.username");
        let password = self.sasl_password.is_some() || has("sasl.password");
        match (username, password) {
            (true, true) => Ok(()),
            (true, false) => Err(Error::invalid(
                "--kafka-sasl-password",
                format!(
                    "{} needs a password for --kafka-sasl-username",
                    mechanism.as_str()
                ),
            )),
            (false, _) => Err(Error::invalid(
                "--kafka-sasl-username",
                format!(
                    "{} needs --kafka-sasl-username and --kafka-sasl-password",
                    mechanism.as_str()
                ),
            )),
        }
    }

    fn validate_tls(&self, protocol: SecurityProtocol) -> Result<()> {
        if !protocol.uses_tls() {
            let named = self.files().map(|(flag, _)| flag).next().or(self
                .ssl_key_password
                .as_ref()
                .map(|_| "--kafka-ssl-key-password"));
            if let Some(flag) = named {
                return Err(Error::invalid(
                    flag,
                    format!(
                        "needs --kafka-security-protocol SSL or SASL_SSL (it is {})",
                        protocol.as_str()
                    ),
                ));
            }
            return Ok(());
        }
        match (&self.ssl_cert_file, &self.ssl_key_file) {
            (Some(_), None) => Err(Error::invalid(
                "--kafka-ssl-key-file",
                "--kafka-ssl-cert-file needs the certificate's private key",
            )),
            (None, Some(_)) => Err(Error::invalid(
                "--kafka-ssl-cert-file",
                "--kafka-ssl-key-file needs the certificate it belongs to",
            )),
            (None, None) if self.ssl_key_password.is_some() => Err(Error::invalid(
                "--kafka-ssl-key-password",
                "there is no --kafka-ssl-key-file to decrypt",
            )),
            _ => Ok(()),
        }
    }

    /// The files named, with their flags.
    fn files(&self) -> impl Iterator<Item = (&'static str, &Path)> {
        [
            ("--kafka-ssl-ca-file", &self.ssl_ca_file),
            ("--kafka-ssl-cert-file", &self.ssl_cert_file),
            ("--kafka-ssl-key-file", &self.ssl_key_file),
        ]
        .into_iter()
        .filter_map(|(flag, path)| path.as_deref().map(|p| (flag, p)))
    }

    /// The librdkafka properties of the named settings, secrets resolved.
    pub(super) fn resolve(&self) -> Result<Resolved> {
        let mut properties = Vec::new();
        let mut secrets = Vec::new();
        if let Some(p) = self.protocol {
            properties.push(("security.protocol", p.as_str().to_string()));
        }
        if let Some(m) = self.sasl_mechanism {
            properties.push(("sasl.mechanisms", m.as_str().to_string()));
        }
        if let Some(u) = &self.sasl_username {
            properties.push(("sasl.username", u.clone()));
        }
        let named_secrets = [
            (
                "sasl.password",
                "--kafka-sasl-password",
                &self.sasl_password,
            ),
            (
                "ssl.key.password",
                "--kafka-ssl-key-password",
                &self.ssl_key_password,
            ),
        ];
        for (key, flag, secret) in named_secrets {
            if let Some(secret) = secret {
                let value = secret.resolve(flag)?;
                secrets.push(value.clone());
                properties.push((key, value));
            }
        }
        let files = [
            ("ssl.ca.location", &self.ssl_ca_file),
            ("ssl.certificate.location", &self.ssl_cert_file),
            ("ssl.key.location", &self.ssl_key_file),
        ];
        for (key, path) in files {
            if let Some(path) = path {
                properties.push((key, path.display().to_string()));
            }
        }
        Ok(Resolved {
            properties,
            secrets,
        })
    }
}

/// The librdkafka properties that have a named setting, with its flag: for hints in errors
/// that name the property, and to warn when `--kafka-property` overrides a flag.
pub(super) const PROPERTY_FLAGS: [(&str, &str); 8] = [
    ("security.protocol", "--kafka-security-protocol"),
    ("sasl.mechanisms", "--kafka-sasl-mechanism"),
    ("sasl.username", "--kafka-sasl-username"),
    ("sasl.password", "--kafka-sasl-password"),
    ("ssl.ca.location", "--kafka-ssl-ca-file"),
    ("ssl.certificate.location", "--kafka-ssl-cert-file"),
    ("ssl.key.location", "--kafka-ssl-key-file"),
    ("ssl.key.password", "--kafka-ssl-key-password"),
];

fn check_readable(flag: &str, path: &Path) -> Result<()> {
    if path.is_dir() {
        // librdkafka takes a directory of CA certificates too.
        return std::fs::read_dir(path)
            .map(|_| ())
            .map_err(|e| Error::invalid(flag, format!("cannot read {}: {e}", path.display())));
    }
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| Error::invalid(flag, format!("cannot read {}: {e}", path.display())))
}

/// Serde for the enums by their Kafka names (`SASL_SSL`, `SCRAM-SHA-256`).
mod by_name {
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub trait Named: FromStr<Err = String> + Copy {
        fn name(self) -> &'static str;
    }

    impl Named for super::SecurityProtocol {
        fn name(self) -> &'static str {
            self.as_str()
        }
    }

    impl Named for super::SaslMechanism {
        fn name(self) -> &'static str {
            self.as_str()
        }
    }

    pub fn serialize<T: Named, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Named, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sasl_ssl() -> Security {
        Security {
            protocol: Some(SecurityProtocol::SaslSsl),
            sasl_mechanism: Some(SaslMechanism::ScramSha512),
            sasl_username: Some("tidemark".into()),
            sasl_password: Some(Secret::new("hunter2-secret")),
            ..Security::default()
        }
    }

    fn invalid(security: &Security, properties: &[(&str, &str)]) -> String {
        security
            .validate(&props(properties))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn names_parse_case_insensitively_and_unknown_ones_list_the_choices() {
        assert_eq!(
            "sasl_ssl".parse::<SecurityProtocol>(),
            Ok(SecurityProtocol::SaslSsl)
        );
        assert_eq!(
            "scram-sha-256".parse::<SaslMechanism>(),
            Ok(SaslMechanism::ScramSha256)
        );
        let e = "TLS".parse::<SecurityProtocol>().unwrap_err();
        assert!(e.contains("'TLS'") && e.contains("SASL_SSL"), "{e}");
        let e = "GSSAPI".parse::<SaslMechanism>().unwrap_err();
        assert!(e.contains("'GSSAPI'") && e.contains("SCRAM-SHA-512"), "{e}");
    }

    #[test]
    fn inconsistent_settings_are_refused_naming_the_flag() {
        let mechanism_alone = Security {
            sasl_mechanism: Some(SaslMechanism::Plain),
            ..Security::default()
        };
        let e = invalid(&mechanism_alone, &[]);
        assert!(
            e.starts_with("--kafka-sasl-mechanism:") && e.contains("SASL_SSL"),
            "{e}"
        );
        // ... unless the protocol comes from an extra property.
        mechanism_alone
            .validate(&props(&[
                ("security.protocol", "sasl_plaintext"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ]))
            .unwrap();

        let no_password = Security {
            sasl_password: None,
            ..sasl_ssl()
        };
        let e = invalid(&no_password, &[]);
        assert!(e.starts_with("--kafka-sasl-password:"), "{e}");

        let no_mechanism = Security {
            sasl_mechanism: None,
            ..sasl_ssl()
        };
        let e = invalid(&no_mechanism, &[]);
        assert!(e.starts_with("--kafka-sasl-mechanism:"), "{e}");

        let ca_in_plaintext = Security {
            ssl_ca_file: Some("/etc/hostname".into()),
            ..Security::default()
        };
        let e = invalid(&ca_in_plaintext, &[]);
        assert!(
            e.starts_with("--kafka-ssl-ca-file:") && e.contains("PLAINTEXT"),
            "{e}"
        );

        let cert_without_key = Security {
            protocol: Some(SecurityProtocol::Ssl),
            ssl_cert_file: Some("/etc/hostname".into()),
            ..Security::default()
        };
        let e = invalid(&cert_without_key, &[]);
        assert!(e.starts_with("--kafka-ssl-key-file:"), "{e}");
    }

    #[test]
    fn an_unreadable_ca_file_is_named() {
        let security = Security {
            protocol: Some(SecurityProtocol::Ssl),
            ssl_ca_file: Some("/nonexistent/ca.pem".into()),
            ..Security::default()
        };
        let e = invalid(&security, &[]);
        assert!(
            e.starts_with("--kafka-ssl-ca-file:") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_or_serialize() {
        let security = Security {
            ssl_key_password: Some(Secret::new("env:KEY_PW")),
            ..sasl_ssl()
        };
        let debug = format!("{security:?}");
        let json = serde_json::to_string(&security).unwrap();
        for shown in [&debug, &json] {
            assert!(!shown.contains("hunter2-secret"), "{shown}");
            assert!(
                shown.contains("<redacted>") && shown.contains("env:KEY_PW"),
                "{shown}"
            );
        }
        assert!(
            json.contains("\"SASL_SSL\"") && json.contains("\"SCRAM-SHA-512\""),
            "{json}"
        );
    }

    #[test]
    fn named_settings_become_librdkafka_properties() {
        let security = Security {
            ssl_ca_file: Some("/ca.pem".into()),
            ..sasl_ssl()
        };
        let resolved = security.resolve().unwrap();
        let get = |k: &str| {
            resolved
                .properties
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.username"), Some("tidemark"));
        assert_eq!(get("sasl.password"), Some("hunter2-secret"));
        assert_eq!(get("ssl.ca.location"), Some("/ca.pem"));
        assert_eq!(resolved.secrets, vec!["hunter2-secret".to_string()]);
    }
}
