//! Errors of the protocol layer: [`DecodeError`] for bytes that do not parse, and
//! [`ProtocolError`] for everything a broker connection can run into.
//!
//! Owns the error vocabulary only; it knows nothing of tasks or membership, and it does not
//! decide which broker error codes are retriable (that is the membership layer's call).

use std::time::Duration;

use thiserror::Error;

/// Bytes that do not decode as the message and version the caller asked for.
///
/// `field` names the schema field being read when decoding stopped (for nested structs it is
/// `Struct.Field`, e.g. `TopicInfo.Name`), so a bad broker response points at its cause.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot decode {api} v{version} at {field}: {kind}")]
pub struct DecodeError {
    /// The message being decoded, e.g. `StreamsGroupHeartbeatResponse`.
    pub api: &'static str,
    /// The version it was decoded as.
    pub version: i16,
    /// The field being read when decoding failed.
    pub field: &'static str,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

/// What was wrong with the bytes of a [`DecodeError`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeErrorKind {
    /// The input ended before the field did.
    #[error("input ends early: {needed} bytes needed, {remaining} remain")]
    Truncated {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A length prefix that cannot be right (negative, or longer than the schema allows).
    #[error("invalid length {length}")]
    InvalidLength {
        /// The decoded length.
        length: i64,
    },
    /// A null where the schema does not allow one.
    #[error("null in a non-nullable field")]
    UnexpectedNull,
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// An unsigned varint longer than five bytes.
    #[error("unsigned varint longer than 5 bytes")]
    VarIntTooLong,
    /// Bytes left over after the message ended.
    #[error("{count} trailing bytes after the message")]
    TrailingBytes {
        /// How many bytes were left.
        count: usize,
    },
    /// A version this codec does not implement.
    #[error("version not supported by this codec (supported {min}..={max})")]
    UnsupportedVersion {
        /// Lowest supported version.
        min: i16,
        /// Highest supported version.
        max: i16,
    },
}

/// Everything that can go wrong talking to a broker, with the broker address and API in
/// context.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// A response (or response header) did not decode.
    #[error("broker {addr}: bad response")]
    Decode {
        /// The broker address.
        addr: String,
        /// What did not decode.
        #[source]
        source: DecodeError,
    },
    /// A message of `kafka-protocol`'s generated codecs failed to encode or decode.
    #[error("broker {addr}: {api} v{version}: generated codec failed")]
    GeneratedCodec {
        /// The broker address.
        addr: String,
        /// The API, e.g. `OffsetCommit`.
        api: &'static str,
        /// The negotiated version.
        version: i16,
        /// The codec's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The TCP connection could not be established.
    #[error("cannot connect to broker {addr}")]
    Connect {
        /// The broker address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a request failed; the connection is closed.
    #[error("broker {addr}: I/O failed during {api}")]
    Io {
        /// The broker address.
        addr: String,
        /// The API in flight.
        api: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting or a request took longer than its timeout; the connection is closed.
    #[error("broker {addr}: {api} timed out after {timeout:?}")]
    Timeout {
        /// The broker address.
        addr: String,
        /// The API in flight (`connect` while connecting).
        api: &'static str,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The response carried another request's correlation id; the connection is closed.
    #[error("broker {addr}: {api} response has correlation id {actual}, expected {expected}")]
    CorrelationMismatch {
        /// The broker address.
        addr: String,
        /// The API in flight.
        api: &'static str,
        /// The id sent.
        expected: i32,
        /// The id received.
        actual: i32,
    },
    /// A response frame announced a size that is negative or above the configured maximum.
    #[error("broker {addr}: {api} response frame of {size} bytes (max {max})")]
    FrameSize {
        /// The broker address.
        addr: String,
        /// The API in flight.
        api: &'static str,
        /// The announced size.
        size: i64,
        /// The configured maximum.
        max: usize,
    },
    /// The connection was closed by an earlier failure; call `reconnect`.
    #[error("broker {addr}: not connected")]
    NotConnected {
        /// The broker address.
        addr: String,
    },
    /// The TLS handshake failed: an untrusted certificate, a certificate for another host
    /// name, a client certificate the broker refuses, or a broker that does not speak TLS.
    #[error("broker {addr}: TLS handshake failed")]
    Tls {
        /// The broker address.
        addr: String,
        /// What rustls reported.
        #[source]
        source: std::io::Error,
    },
    /// A TLS setting names a file that cannot be used.
    #[error("{key} {path}: {reason}")]
    TlsSetup {
        /// The configuration key (`ssl.ca.location`, ...).
        key: &'static str,
        /// The file it names.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The broker does not enable the configured SASL mechanism on this listener.
    #[error("broker {addr}: SASL mechanism {mechanism} is not enabled (enabled: {enabled})")]
    SaslMechanism {
        /// The broker address.
        addr: String,
        /// The configured mechanism.
        mechanism: String,
        /// The mechanisms the broker offers, comma-separated.
        enabled: String,
    },
    /// The broker refused the credentials (a wrong user name or password).
    #[error("broker {addr}: SASL {mechanism} authentication failed: {message}")]
    Authentication {
        /// The broker address.
        addr: String,
        /// The mechanism used.
        mechanism: String,
        /// The broker's error message.
        message: String,
    },
    /// The SCRAM exchange went wrong on the client side (a malformed server message, a
    /// server that cannot prove it knows the credentials).
    #[error("broker {addr}: SCRAM authentication failed")]
    Scram {
        /// The broker address.
        addr: String,
        /// What was wrong.
        #[source]
        source: super::scram::ScramError,
    },
    /// A configuration value that does not parse.
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidConfig {
        /// The configuration key.
        key: String,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The broker does not list the API in its ApiVersions response.
    #[error("broker {addr} does not support API {api_key}")]
    UnsupportedApi {
        /// The broker address.
        addr: String,
        /// The API key.
        api_key: i16,
    },
    /// The broker's version range and ours do not overlap.
    #[error(
        "broker {addr}: no common version for API {api_key} \
         (ours {our_min}..={our_max}, broker {broker_min}..={broker_max})"
    )]
    NoCommonVersion {
        /// The broker address.
        addr: String,
        /// The API key.
        api_key: i16,
        /// Our lowest version.
        our_min: i16,
        /// Our highest version.
        our_max: i16,
        /// The broker's lowest version.
        broker_min: i16,
        /// The broker's highest version.
        broker_max: i16,
    },
    /// The broker answered with an error code where the helper has no response to return.
    #[error("broker {addr}: {api} failed with error code {code}: {message:?}")]
    Broker {
        /// The broker address.
        addr: String,
        /// The API.
        api: &'static str,
        /// The Kafka error code.
        code: i16,
        /// The broker's error message, if any.
        message: Option<String>,
    },
}

impl ProtocolError {
    /// Whether this is a security failure (bad settings, TLS, SASL): connecting again with
    /// the same settings fails the same way, so it is reported instead of retried.
    pub fn is_security_failure(&self) -> bool {
        matches!(
            self,
            ProtocolError::Tls { .. }
                | ProtocolError::TlsSetup { .. }
                | ProtocolError::SaslMechanism { .. }
                | ProtocolError::Authentication { .. }
                | ProtocolError::Scram { .. }
                | ProtocolError::InvalidConfig { .. }
        )
    }

    /// The Kafka error code of a [`ProtocolError::Broker`], so callers can classify it with
    /// `kafka_protocol::ResponseError::try_from_code`.
    pub fn broker_code(&self) -> Option<i16> {
        match self {
            ProtocolError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}
