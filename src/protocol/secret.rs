//! Secrets in configuration: [`Secret`] holds one value (a SASL password, a key password)
//! and prints as `<redacted>` through `Debug` and `Display`, and [`KafkaProperties`] holds
//! the `kafka.*` settings handed to every client, printing the values of secret keys the
//! same way. Code that needs the value asks for it by name ([`Secret::expose`]), so a
//! stray `{:?}` in a log line or an error cannot leak it.

use std::fmt;

/// What `Debug` and `Display` print instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// A secret string; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that must send or use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Whether a librdkafka / Java client property holds a secret: passwords, private keys
/// given inline, and OAuth client secrets.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key.ends_with("jaas.config")
        || key == "ssl.key.pem"
        || key == "ssl_key"
}

/// Client properties (`security.protocol`, `sasl.password`, ...) in the order given; a
/// later duplicate wins when they are applied. `Debug` redacts the values of secret keys
/// ([`is_secret_key`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties(Vec<(String, String)>);

impl KafkaProperties {
    /// No properties.
    pub fn new() -> Self {
        KafkaProperties(Vec::new())
    }

    /// Appends `key = value`.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.push((key.into(), value.into()));
    }

    /// The pairs as `&str`, for [`super::ConnectionConfig::from_properties`].
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl From<Vec<(String, String)>> for KafkaProperties {
    fn from(pairs: Vec<(String, String)>) -> Self {
        KafkaProperties(pairs)
    }
}

impl std::ops::Deref for KafkaProperties {
    type Target = [(String, String)];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> IntoIterator for &'a KafkaProperties {
    type Item = &'a (String, String);
    type IntoIter = std::slice::Iter<'a, (String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if is_secret_key(k) { REDACTED } else { v };
                (k, shown)
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_redacted_but_exposes_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(
            format!("{:?}", Some(s.clone())),
            format!("Some({REDACTED})")
        );
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn properties_redact_secret_values_only() {
        let mut p = KafkaProperties::new();
        p.push("security.protocol", "SASL_SSL");
        p.push("sasl.password", "hunter2");
        p.push("ssl.key.password", "swordfish");
        p.push("ssl.key.pem", "-----BEGIN PRIVATE KEY-----");
        p.push("sasl.oauthbearer.client.secret", "s3cr3t");
        let shown = format!("{p:?}");
        for secret in ["hunter2", "swordfish", "BEGIN PRIVATE KEY", "s3cr3t"] {
            assert!(!shown.contains(secret), "{shown} shows {secret}");
        }
        assert!(shown.contains("SASL_SSL"), "{shown}");
        assert!(
            shown.contains("\"sasl.password\": \"<redacted>\""),
            "{shown}"
        );
        assert_eq!(p.len(), 5, "the values themselves are kept");
        assert_eq!(p[1].1, "hunter2");
    }

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "sasl.password",
            "SASL.PASSWORD",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.jaas.config",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["sasl.username", "ssl.key.location", "security.protocol"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
