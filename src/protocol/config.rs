//! Connection settings: client id, timeouts, frame limit and the security settings
//! (`security.protocol`, SASL, TLS) in librdkafka / Java property names, so the worker can
//! hand over the same map it gives rdkafka.
//!
//! All four security protocols parse, so a configuration written for a secured cluster is
//! accepted, but only PLAINTEXT connects; the others fail with
//! [`ProtocolError::UnsupportedSecurityProtocol`] at connect time. Owns no sockets.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::error::ProtocolError;

/// The `security.protocol` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// Plain TCP (implemented).
    #[default]
    Plaintext,
    /// TLS (accepted, not implemented).
    Ssl,
    /// SASL over plain TCP (accepted, not implemented).
    SaslPlaintext,
    /// SASL over TLS (accepted, not implemented).
    SaslSsl,
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

/// SASL settings (`sasl.mechanism`, `sasl.username`, `sasl.password`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SaslConfig {
    /// Mechanism, e.g. `PLAIN` or `SCRAM-SHA-512`.
    pub mechanism: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password (never printed by `Debug`).
    pub password: Option<String>,
}

impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// TLS settings (`ssl.*`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `ssl.ca.location`.
    pub ca_location: Option<String>,
    /// `ssl.certificate.location`.
    pub certificate_location: Option<String>,
    /// `ssl.key.location`.
    pub key_location: Option<String>,
    /// `ssl.key.password` (never printed by `Debug`).
    pub key_password: Option<String>,
    /// `ssl.endpoint.identification.algorithm` (`https` or `none`).
    pub endpoint_identification_algorithm: Option<String>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_location", &self.ca_location)
            .field("certificate_location", &self.certificate_location)
            .field("key_location", &self.key_location)
            .field(
                "key_password",
                &self.key_password.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "endpoint_identification_algorithm",
                &self.endpoint_identification_algorithm,
            )
            .finish()
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
    /// `socket.connection.setup.timeout.ms`. Other keys are ignored, so the map given to
    /// rdkafka can be passed unchanged.
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
                "sasl.password" => c.sasl.password = owned(),
                "ssl.ca.location" => c.tls.ca_location = owned(),
                "ssl.certificate.location" => c.tls.certificate_location = owned(),
                "ssl.key.location" => c.tls.key_location = owned(),
                "ssl.key.password" => c.tls.key_password = owned(),
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

    /// Fails unless the configured security protocol is implemented (PLAINTEXT only).
    pub fn check_supported(&self) -> Result<(), ProtocolError> {
        match self.security_protocol {
            SecurityProtocol::Plaintext => Ok(()),
            protocol => Err(ProtocolError::UnsupportedSecurityProtocol { protocol }),
        }
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
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn only_plaintext_is_supported() {
        assert!(ConnectionConfig::default().check_supported().is_ok());
        let c = ConnectionConfig::from_properties([("security.protocol", "SSL")]).expect("parses");
        let err = c.check_supported().unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::UnsupportedSecurityProtocol {
                protocol: SecurityProtocol::Ssl
            }
        ));
        assert!(err.to_string().contains("SSL"));
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
