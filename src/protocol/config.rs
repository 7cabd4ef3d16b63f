//! Connection settings: client id, timeouts, frame limit and the security settings
//! (`security.protocol`, SASL, TLS) in librdkafka / Java property names, so the worker can
//! hand over the same map it gives rdkafka and a user writes them once.
//!
//! Every security protocol connects: TLS for `SSL` and `SASL_SSL`, SASL PLAIN or
//! SCRAM-SHA-256/512 for `SASL_PLAINTEXT` and `SASL_SSL`. [`ConnectionConfig::validate`]
//! refuses incomplete or unsupported settings by key before any socket is opened. Passwords
//! are [`Secret`]s: no `Debug` output or error shows them. Owns no sockets.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::error::ProtocolError;
use super::secret::{Secret, REDACTED};

/// The `security.protocol` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// Plain TCP.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether connections are wrapped in TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether connections authenticate with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        })
    }
}

impl FromStr for SecurityProtocol {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(ProtocolError::InvalidConfig {
                key: "security.protocol".into(),
                value: s.into(),
                reason: "expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
            }),
        }
    }
}

/// The SASL mechanisms the group connection speaks.
pub const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// SASL settings (`sasl.mechanism`, `sasl.username`, `sasl.password`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaslConfig {
    /// Mechanism: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password (printed as `<redacted>`).
    pub password: Option<Secret>,
}

/// TLS settings (`ssl.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `ssl.ca.location`: PEM file of the CA certificates to trust; absent means the
    /// system's roots.
    pub ca_location: Option<String>,
    /// `ssl.certificate.location`: PEM client certificate chain (mutual TLS).
    pub certificate_location: Option<String>,
    /// `ssl.key.location`: PEM private key of the client certificate, unencrypted.
    pub key_location: Option<String>,
    /// `ssl.key.password` (printed as `<redacted>`); refused by
    /// [`ConnectionConfig::validate`]: the group connection reads unencrypted keys only.
    pub key_password: Option<Secret>,
    /// `ssl.endpoint.identification.algorithm`: `https` (the default: the broker's
    /// certificate must name the host connected to) or `none`.
    pub endpoint_identification_algorithm: Option<String>,
}

impl TlsConfig {
    /// Whether the broker's certificate must match the host name (default yes).
    pub fn verify_hostname(&self) -> bool {
        !matches!(
            self.endpoint_identification_algorithm.as_deref(),
            Some(a) if a.eq_ignore_ascii_case("none") || a.is_empty()
        )
    }
}

/// Settings of a [`super::connection::BrokerConnection`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// `client.id` sent in every request header.
    pub client_id: String,
    /// `security.protocol`.
    pub security_protocol: SecurityProtocol,
    /// SASL settings.
    pub sasl: SaslConfig,
    /// TLS settings.
    pub tls: TlsConfig,
    /// Time allowed for the TCP connect plus the ApiVersions exchange.
    pub connect_timeout: Duration,
    /// Time allowed for one request and its response.
    pub request_timeout: Duration,
    /// Largest response frame accepted.
    pub max_response_bytes: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: "kstate".into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl: SaslConfig::default(),
            tls: TlsConfig::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 100 * 1024 * 1024,
        }
    }
}

fn parse_ms(key: &str, value: &str) -> Result<Duration, ProtocolError> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| ProtocolError::InvalidConfig {
            key: key.into(),
            value: value.into(),
            reason: "expected a non-negative number of milliseconds",
        })
}

impl ConnectionConfig {
    /// Builds a config from properties, starting from the defaults. Recognised keys:
    /// `client.id`, `security.protocol`, `sasl.mechanism` (or librdkafka's
    /// `sasl.mechanisms`), `sasl.username`, `sasl.password`, `ssl.ca.location`,
    /// `ssl.certificate.location`, `ssl.key.location`, `ssl.key.password`,
    /// `ssl.endpoint.identification.algorithm`, `request.timeout.ms`,
    /// `socket.connection.setup.timeout.ms`. `ssl.ca.location=probe` means the system's CA
    /// store; inline PEM (`ssl.ca.pem`, `ssl.certificate.pem`, `ssl.key.pem`) is refused
    /// (give files). Other keys are ignored, so the map given to rdkafka can be passed
    /// unchanged.
    pub fn from_properties<'a>(
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ProtocolError> {
        let mut c = ConnectionConfig::default();
        for (key, value) in props {
            let owned = || Some(value.to_owned());
            match key {
                "client.id" => c.client_id = value.to_owned(),
                "security.protocol" => c.security_protocol = value.parse()?,
                "sasl.mechanism" | "sasl.mechanisms" => c.sasl.mechanism = owned(),
                "sasl.username" => c.sasl.username = owned(),
                "sasl.password" => c.sasl.password = Some(Secret::new(value)),
                // librdkafka's "probe" means the system's CA store, as absent does here.
                "ssl.ca.location" if value == "probe" => c.tls.ca_location = None,
                "ssl.ca.location" => c.tls.ca_location = owned(),
                "ssl.ca.pem" | "ssl.certificate.pem" | "ssl.key.pem" => {
                    return Err(ProtocolError::InvalidConfig {
                        key: key.into(),
                        value: REDACTED.into(),
                        reason: "inline PEM is not supported by the streams group connection; \
                                 give a file with the matching *.location key",
                    })
                }
                "ssl.certificate.location" => c.tls.certificate_location = owned(),
                "ssl.key.location" => c.tls.key_location = owned(),
                "ssl.key.password" => c.tls.key_password = Some(Secret::new(value)),
                "ssl.endpoint.identification.algorithm" => {
                    c.tls.endpoint_identification_algorithm = owned()
                }
                "request.timeout.ms" => c.request_timeout = parse_ms(key, value)?,
                "socket.connection.setup.timeout.ms" => c.connect_timeout = parse_ms(key, value)?,
                _ => {}
            }
        }
        Ok(c)
    }

    /// Refuses settings that cannot connect, naming the key: a SASL protocol without a
    /// supported mechanism, user name or password; a client certificate without its key (or
    /// the reverse); an encrypted client key (`ssl.key.password`); an unknown
    /// `ssl.endpoint.identification.algorithm`. TLS settings under PLAINTEXT are ignored,
    /// as librdkafka ignores them.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let invalid = |key: &str, value: &str, reason| {
            Err(ProtocolError::InvalidConfig {
                key: key.into(),
                value: value.into(),
                reason,
            })
        };
        if self.security_protocol.uses_sasl() {
            let mechanism = self.sasl.mechanism.as_deref().unwrap_or("");
            if !SASL_MECHANISMS.contains(&mechanism) {
                return invalid(
                    "sasl.mechanism",
                    mechanism,
                    "expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with a SASL security.protocol",
                );
            }
            if self.sasl.username.as_deref().unwrap_or("").is_empty() {
                return invalid(
                    "sasl.username",
                    "",
                    "required with a SASL security.protocol",
                );
            }
            if self.sasl.password.is_none() {
                return invalid(
                    "sasl.password",
                    "",
                    "required with a SASL security.protocol",
                );
            }
        }
        if self.security_protocol.uses_tls() {
            let tls = &self.tls;
            if tls.key_password.is_some() {
                return invalid(
                    "ssl.key.password",
                    REDACTED,
                    "encrypted client keys are not supported: give an unencrypted PEM key",
                );
            }
            match (&tls.certificate_location, &tls.key_location) {
                (Some(_), None) => {
                    return invalid(
                        "ssl.key.location",
                        "",
                        "required with ssl.certificate.location",
                    )
                }
                (None, Some(key)) => {
                    return invalid(
                        "ssl.certificate.location",
                        key,
                        "required with ssl.key.location",
                    )
                }
                _ => {}
            }
            if let Some(a) = &tls.endpoint_identification_algorithm {
                if !(a.is_empty()
                    || a.eq_ignore_ascii_case("https")
                    || a.eq_ignore_ascii_case("none"))
                {
                    return invalid(
                        "ssl.endpoint.identification.algorithm",
                        a,
                        "expected https or none",
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_parsed_and_unknown_keys_ignored() {
        let c = ConnectionConfig::from_properties([
            ("client.id", "worker-1"),
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.password", "hunter2"),
            ("ssl.ca.location", "/etc/ca.pem"),
            ("request.timeout.ms", "1500"),
            ("enable.idempotence", "true"),
        ])
        .expect("parses");
        assert_eq!(c.client_id, "worker-1");
        assert_eq!(c.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(c.sasl.mechanism.as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(c.tls.ca_location.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(c.request_timeout, Duration::from_millis(1500));
        assert_eq!(
            c.sasl.password.as_ref().map(Secret::expose),
            Some("hunter2")
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn complete_settings_validate_for_every_protocol() {
        assert!(ConnectionConfig::default().validate().is_ok());
        let sasl = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ];
        assert!(ConnectionConfig::from_properties(sasl)
            .unwrap()
            .validate()
            .is_ok());
        let mtls = [
            ("security.protocol", "SSL"),
            ("ssl.certificate.location", "/c.pem"),
            ("ssl.key.location", "/k.pem"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ];
        let c = ConnectionConfig::from_properties(mtls).unwrap();
        assert!(c.validate().is_ok());
        assert!(!c.tls.verify_hostname());
        assert!(TlsConfig::default().verify_hostname());
    }

    #[test]
    fn incomplete_security_settings_name_the_key() {
        let cases: [(&[(&str, &str)], &str); 7] = [
            (&[("security.protocol", "SASL_SSL")], "sasl.mechanism"),
            (
                &[
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", "GSSAPI"),
                ],
                "sasl.mechanism",
            ),
            (
                &[
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.mechanism", "PLAIN"),
                ],
                "sasl.username",
            ),
            (
                &[
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.mechanism", "PLAIN"),
                    ("sasl.username", "u"),
                ],
                "sasl.password",
            ),
            (
                &[
                    ("security.protocol", "SSL"),
                    ("ssl.certificate.location", "/c"),
                ],
                "ssl.key.location",
            ),
            (
                &[
                    ("security.protocol", "SSL"),
                    ("ssl.key.password", "hunter2"),
                ],
                "ssl.key.password",
            ),
            (
                &[
                    ("security.protocol", "SSL"),
                    ("ssl.endpoint.identification.algorithm", "dns"),
                ],
                "ssl.endpoint.identification.algorithm",
            ),
        ];
        for (props, key) in cases {
            let err = ConnectionConfig::from_properties(props.iter().copied())
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(
                matches!(&err, ProtocolError::InvalidConfig { key: k, .. } if k == key),
                "{props:?}: {err}"
            );
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn probe_means_system_roots_and_inline_pem_is_refused_unshown() {
        let c = ConnectionConfig::from_properties([("ssl.ca.location", "probe")]).unwrap();
        assert_eq!(c.tls.ca_location, None);
        let err = ConnectionConfig::from_properties([("ssl.key.pem", "-----BEGIN PRIVATE KEY")])
            .unwrap_err();
        assert!(
            matches!(&err, ProtocolError::InvalidConfig { key, .. } if key == "ssl.key.pem"),
            "{err}"
        );
        assert!(!format!("{err} {err:?}").contains("BEGIN"), "{err:?}");
    }

    #[test]
    fn bad_values_are_rejected_with_their_key() {
        let err =
            ConnectionConfig::from_properties([("security.protocol", "KERBEROS")]).unwrap_err();
        assert!(
            matches!(err, ProtocolError::InvalidConfig { ref key, .. } if key == "security.protocol")
        );
        let err = ConnectionConfig::from_properties([("request.timeout.ms", "-5")]).unwrap_err();
        assert!(
            matches!(err, ProtocolError::InvalidConfig { ref key, .. } if key == "request.timeout.ms")
        );
    }
}
