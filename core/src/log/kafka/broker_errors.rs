//! What the brokers last refused us with. librdkafka tells the real cause of a connection
//! failure (a TLS handshake whose certificate check failed, a SASL login refused, a listener
//! that expects another protocol) only through a client's log and error callbacks; the API
//! calls themselves say "Broker transport failure" or time out. Every client of one log gets a
//! [`Context`] that keeps the most recent such report, so the log's errors (and "cannot reach
//! the Kafka brokers") can say why, with a hint naming the setting to check.
//!
//! Reports are scrubbed of secret values before they are kept or logged: librdkafka does not
//! print passwords, but a property value could appear in a message, and these messages reach
//! logs, `/readyz` and API errors.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::Error;

/// A report older than this is not offered as the cause of a new failure. librdkafka repeats
/// a persisting connection failure at least every 30 s (it suppresses identical ones in
/// between), so a problem that lasts is never older than that.
const RECENT: Duration = Duration::from_secs(120);

/// The same report is logged again (at warn) only after this long.
const RELOG_AFTER: Duration = Duration::from_secs(30);

/// What kind of refusal a report is, for the hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// The brokers' certificate was not signed by a CA we trust.
    CertificateRejected,
    /// The brokers want a client certificate (mutual TLS) and we sent none they accept.
    ClientCertificateRejected,
    /// Another TLS failure (no TLS on the other side, a bad client certificate, ...).
    Tls,
    /// The SASL login was refused (credentials, mechanism).
    Authentication,
    /// The listener speaks another protocol (TLS or SASL expected, or not).
    Protocol,
    /// Nothing answered (refused, not resolved, timed out).
    Unreachable,
    Other,
}

impl Cause {
    fn of(code: Option<RDKafkaErrorCode>, detail: &str) -> Cause {
        let lower = detail.to_ascii_lowercase();
        if lower.contains("certificate verify failed") || lower.contains("could not be verified") {
            Cause::CertificateRejected
        } else if [
            "certificate required",
            "bad certificate",
            "unknown ca",
            "certificate unknown",
        ]
        .iter()
        .any(|alert| lower.contains(alert))
        {
            Cause::ClientCertificateRejected
        } else if code == Some(RDKafkaErrorCode::SSL)
            || lower.starts_with("ssl")
            || lower.contains("ssl routines")
        {
            Cause::Tls
        } else if code == Some(RDKafkaErrorCode::Authentication)
            || lower.contains("sasl")
            || lower.contains("authentication")
        {
            Cause::Authentication
        } else if lower.contains("security.protocol") || lower.contains("state apiversion_query") {
            Cause::Protocol
        } else if matches!(
            code,
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::Resolve)
        ) || lower.contains("connection refused")
            || lower.contains("resolve")
        {
            Cause::Unreachable
        } else {
            Cause::Other
        }
    }

    pub fn hint(self) -> &'static str {
        match self {
            Cause::CertificateRejected => {
                "check --kafka-ssl-ca-file (the CA that signed the brokers' certificates)"
            }
            Cause::ClientCertificateRejected => {
                "check --kafka-ssl-cert-file and --kafka-ssl-key-file (the brokers want a client \
                 certificate signed by a CA they trust)"
            }
            Cause::Tls => "check --kafka-security-protocol and the --kafka-ssl-* settings",
            Cause::Authentication => {
                "check --kafka-sasl-mechanism, --kafka-sasl-username and --kafka-sasl-password"
            }
            Cause::Protocol => {
                "check --kafka-security-protocol (the listener may expect TLS or SASL, or not)"
            }
            Cause::Unreachable | Cause::Other => "check --kafka-brokers and that the cluster is up",
        }
    }

    /// A refusal the same settings will meet again: waiting longer does not help.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Cause::CertificateRejected
                | Cause::ClientCertificateRejected
                | Cause::Tls
                | Cause::Authentication
        )
    }
}

/// One report: when, what kind, and librdkafka's words (scrubbed).
#[derive(Debug, Clone)]
pub(super) struct BrokerError {
    pub at: Instant,
    pub cause: Cause,
    pub message: String,
}

impl BrokerError {
    /// `3 s ago: <message>; check ...`
    pub fn describe(&self) -> String {
        format!(
            "{} s ago: {}; {}",
            self.at.elapsed().as_secs(),
            self.message,
            self.cause.hint()
        )
    }
}

/// The most recent report of all clients of one log.
pub(super) struct BrokerErrors {
    last: Mutex<Option<BrokerError>>,
    /// When a broker last answered a request: a report older than that is over.
    answered: Mutex<Option<Instant>>,
    /// Reports logged at warn lately, and when: a failure that librdkafka repeats on every
    /// reconnect, by every client, is logged once per [`RELOG_AFTER`].
    logged: Mutex<HashMap<String, Instant>>,
    /// Secret values, replaced by `<redacted>` in everything kept or logged.
    secrets: Vec<String>,
}

impl BrokerErrors {
    pub fn new(secrets: Vec<String>) -> Arc<BrokerErrors> {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Arc::new(BrokerErrors {
            last: Mutex::new(None),
            answered: Mutex::new(None),
            logged: Mutex::new(HashMap::new()),
            secrets,
        })
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "<redacted>");
            }
        }
        text
    }

    /// The most recent report, if it is recent enough to matter.
    pub fn recent(&self) -> Option<BrokerError> {
        self.last
            .lock()
            .unwrap()
            .clone()
            .filter(|e| e.at.elapsed() < RECENT)
    }

    /// A broker answered a request just now.
    pub fn answered(&self) {
        *self.answered.lock().unwrap() = Some(Instant::now());
    }

    /// The most recent report, if it is recent and no broker has answered since: the problem
    /// the log has now.
    pub fn current(&self) -> Option<BrokerError> {
        let answered = *self.answered.lock().unwrap();
        self.recent()
            .filter(|e| answered.is_none_or(|answered| e.at > answered))
    }

    /// The most recent report made at or after `start`.
    pub fn since(&self, start: Instant) -> Option<BrokerError> {
        self.last.lock().unwrap().clone().filter(|e| e.at >= start)
    }

    /// Add the brokers' recent complaint to an `Unavailable` error of the log (scrubbed).
    pub fn explain(&self, error: Error) -> Error {
        let Error::Unavailable(message) = error else {
            return error;
        };
        let message = self.scrub(&message);
        match self.recent() {
            Some(last) if !message.contains("the brokers' last error") => Error::Unavailable(
                format!("{message}; the brokers' last error, {}", last.describe()),
            ),
            _ => Error::Unavailable(message),
        }
    }

    fn record(&self, code: Option<RDKafkaErrorCode>, message: &str) {
        let message = self.scrub(message);
        // librdkafka's messages start with the broker's name (`sasl_ssl://host:9093/1: ...`),
        // whose scheme must not count as a SASL failure.
        let detail = match message.split_once(": ") {
            Some((broker, rest)) if broker.contains("://") => rest,
            _ => message.as_str(),
        };
        let cause = Cause::of(code, detail);
        self.log_once(&message);
        *self.last.lock().unwrap() = Some(BrokerError {
            at: Instant::now(),
            cause,
            message,
        });
    }

    fn log_once(&self, message: &str) {
        // The same failure again differs only in "(after Nms in state X...)".
        let key = message
            .split(" (after ")
            .next()
            .unwrap_or(message)
            .to_string();
        let mut logged = self.logged.lock().unwrap();
        logged.retain(|_, at| at.elapsed() < RELOG_AFTER);
        match logged.entry(key) {
            Entry::Occupied(_) => tracing::debug!(target: "librdkafka", "kafka: {message}"),
            Entry::Vacant(new) => {
                tracing::warn!(target: "librdkafka", "kafka: {message}");
                new.insert(Instant::now());
            }
        }
    }

    fn on_log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // `FAIL` lines are connection failures, whatever their level ("Disconnected" while
        // asking for API versions, at info, is how a TLS listener answers plain Kafka).
        if facility == "FAIL" && level as i32 <= RDKafkaLogLevel::Info as i32 {
            self.record(None, message);
            return;
        }
        let message = self.scrub(message);
        // Every client gets every property, so a producer property on a consumer is expected.
        let level = if facility == "CONFWARN" {
            RDKafkaLogLevel::Debug
        } else {
            level
        };
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "kafka {facility}: {message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "kafka {facility}: {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::debug!(target: "librdkafka", "kafka {facility}: {message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::trace!(target: "librdkafka", "kafka {facility}: {message}")
            }
        }
    }

    fn on_error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        // "1/1 brokers are down" follows the report that says why.
        if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            return;
        }
        self.record(code, reason);
    }
}

/// The context of every client of one log: routes librdkafka's logs and errors into its
/// [`BrokerErrors`].
#[derive(Clone)]
pub(super) struct Context {
    pub errors: Arc<BrokerErrors>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.errors.on_log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.on_error(error, reason);
    }
}

impl ConsumerContext for Context {}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFY: &str = "sasl_ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: \
        error:0A000086:SSL routines::certificate verify failed: broker certificate could not be \
        verified, verify that ssl.ca.location is correctly configured (after 1ms in state \
        SSL_HANDSHAKE)";

    #[test]
    fn reports_are_classified_by_what_failed_not_by_the_broker_name() {
        let cause = |code, message: &str| {
            let errors = BrokerErrors::new(vec![]);
            errors.record(code, message);
            errors.recent().unwrap().cause
        };
        assert_eq!(cause(None, VERIFY), Cause::CertificateRejected);
        assert_eq!(
            cause(
                Some(RDKafkaErrorCode::Authentication),
                "sasl_ssl://h:1/1: SASL authentication error: SASL SCRAM authentication failed: \
                 broker responded with unknown-user (after 20ms in state AUTH_REQ)"
            ),
            Cause::Authentication
        );
        assert_eq!(
            cause(
                Some(RDKafkaErrorCode::SSL),
                "sasl_ssl://h:1/1: SSL handshake failed: unexpected eof"
            ),
            Cause::Tls
        );
        assert_eq!(
            cause(
                None,
                "h:1/bootstrap: Disconnected: connection reset by peer (after 3ms in state \
                 APIVERSION_QUERY)"
            ),
            Cause::Protocol
        );
        assert_eq!(
            cause(
                None,
                "ssl://h:1/bootstrap: Receive failed: error:0A00045C:SSL routines::tlsv13 alert \
                 certificate required: SSL alert number 116 (after 0ms in state APIVERSION_QUERY)"
            ),
            Cause::ClientCertificateRejected
        );
        assert_eq!(
            cause(
                Some(RDKafkaErrorCode::BrokerTransportFailure),
                "sasl_ssl://h:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
            ),
            Cause::Unreachable
        );
    }

    #[test]
    fn unavailable_errors_get_the_recent_cause_and_a_hint() {
        let errors = BrokerErrors::new(vec![]);
        errors.record(Some(RDKafkaErrorCode::SSL), VERIFY);
        let e = errors
            .explain(Error::Unavailable(
                "kafka fetch watermarks: timed out".into(),
            ))
            .to_string();
        assert!(
            e.starts_with("kafka fetch watermarks: timed out; the brokers' last error")
                && e.contains("certificate verify failed")
                && e.contains("--kafka-ssl-ca-file"),
            "{e}"
        );
        // Explaining twice adds nothing; other kinds of error are left alone.
        assert_eq!(errors.explain(Error::Unavailable(e.clone())).to_string(), e);
        let bad = errors.explain(Error::BadInput("no".into())).to_string();
        assert_eq!(bad, "no");
    }

    #[test]
    fn secret_values_are_scrubbed_from_reports_and_errors() {
        let errors = BrokerErrors::new(vec!["pw".into(), "s3cr3t-pw".into(), String::new()]);
        errors.record(None, "h:1/1: SASL: s3cr3t-pw refused");
        let last = errors.recent().unwrap();
        assert_eq!(last.message, "h:1/1: SASL: <redacted> refused");
        let e = errors
            .explain(Error::Unavailable("kafka produce: s3cr3t-pw".into()))
            .to_string();
        assert!(!e.contains("s3cr3t") && !e.contains("pw"), "{e}");
    }

    #[test]
    fn a_report_is_current_until_a_broker_answers() {
        let errors = BrokerErrors::new(vec![]);
        errors.answered();
        assert!(errors.current().is_none());
        errors.record(Some(RDKafkaErrorCode::SSL), VERIFY);
        assert!(errors.current().is_some());
        errors.answered();
        assert!(errors.current().is_none());
        // Still offered as the likely cause of a failure that follows.
        assert!(errors.recent().is_some());
    }

    #[test]
    fn all_brokers_down_does_not_hide_the_cause() {
        let errors = BrokerErrors::new(vec![]);
        errors.record(Some(RDKafkaErrorCode::SSL), VERIFY);
        errors.on_error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(errors.recent().unwrap().cause, Cause::CertificateRejected);
    }
}
