//! One connection to one broker: TCP, wrapped in TLS for `SSL` / `SASL_SSL`, size-prefixed
//! framing, request headers (v1, or v2 for flexible APIs), response headers (v0 / v1),
//! correlation ids checked, a timeout per request, the ApiVersions exchange on connect that
//! [`BrokerConnection::negotiate`] answers from, then SASL authentication for `SASL_*`
//! (`sasl.rs`), repeated on the same socket before the session the broker granted runs out
//! (KIP-368).
//!
//! Requests are sent one at a time (`&mut self`); any I/O failure, timeout or correlation
//! mismatch closes the socket, and the next call fails with
//! [`ProtocolError::NotConnected`] until [`BrokerConnection::reconnect`]. The connection
//! owns the socket and nothing else: it never retries, sleeps or interprets error codes;
//! the membership driver decides what to do about them. Typed calls per API live in
//! `group_apis.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, trace};

use super::config::ConnectionConfig;
use super::error::ProtocolError;
use super::wire::{Reader, WireMessage, Writer};

pub use super::config::SecurityProtocol;

/// The ApiVersions API key.
const API_VERSIONS_KEY: i16 = 18;
/// The error code of UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;
/// The ApiVersions version tried first (flexible, v3 is what current brokers answer).
const API_VERSIONS_VERSION: i16 = 3;

/// A broker's supported version range for one API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    /// Lowest supported version.
    pub min: i16,
    /// Highest supported version.
    pub max: i16,
}

/// How a request is framed: its API, version and header versions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestKind {
    pub api_key: i16,
    pub api: &'static str,
    pub version: i16,
    pub request_header_version: i16,
    pub response_header_version: i16,
}

/// A byte stream to a broker: TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// The open socket of a connection.
struct Socket(Box<dyn Io>);

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Socket")
    }
}

/// A connection to one broker, versions negotiated, authenticated when configured.
#[derive(Debug)]
pub struct BrokerConnection {
    addr: String,
    config: ConnectionConfig,
    stream: Option<Socket>,
    next_correlation_id: i32,
    api_versions: BTreeMap<i16, VersionRange>,
    /// The rustls configuration, built on the first TLS connect.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// When to authenticate again (the broker's session lifetime, less a margin).
    reauthenticate_at: Option<Instant>,
    /// Re-authentications done on open sockets.
    reauthentications: u64,
}

impl BrokerConnection {
    /// Connects to `addr` (`host:port`), runs the TLS handshake and exchanges ApiVersions,
    /// all within `config.connect_timeout`, then authenticates with SASL if configured.
    /// Settings that cannot connect fail at once ([`ConnectionConfig::validate`]).
    pub async fn connect(
        addr: impl Into<String>,
        config: ConnectionConfig,
    ) -> Result<Self, ProtocolError> {
        let mut conn = BrokerConnection {
            addr: addr.into(),
            config,
            stream: None,
            next_correlation_id: 0,
            api_versions: BTreeMap::new(),
            tls: None,
            reauthenticate_at: None,
            reauthentications: 0,
        };
        conn.reconnect().await?;
        Ok(conn)
    }

    /// Connects to the first of the comma-separated `bootstrap` brokers that answers. A
    /// security failure ([`ProtocolError::is_security_failure`]) is returned at once: the
    /// other brokers would fail the same way.
    pub async fn connect_any(
        bootstrap: &str,
        config: ConnectionConfig,
    ) -> Result<Self, ProtocolError> {
        let mut last = ProtocolError::NotConnected {
            addr: bootstrap.to_owned(),
        };
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match BrokerConnection::connect(addr, config.clone()).await {
                Ok(conn) => return Ok(conn),
                Err(e) if e.is_security_failure() => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Drops the current socket (if any), connects again, repeats the ApiVersions exchange
    /// and authenticates.
    pub async fn reconnect(&mut self) -> Result<(), ProtocolError> {
        self.config.validate()?;
        self.stream = None;
        self.reauthenticate_at = None;
        if self.config.security_protocol.uses_tls() && self.tls.is_none() {
            self.tls = Some(super::tls::client_config(&self.config.tls)?);
        }
        let timeout = self.config.connect_timeout;
        let tls = self.tls.clone();
        let connect = async {
            let stream =
                TcpStream::connect(&self.addr)
                    .await
                    .map_err(|source| ProtocolError::Connect {
                        addr: self.addr.clone(),
                        source,
                    })?;
            stream
                .set_nodelay(true)
                .map_err(|source| ProtocolError::Connect {
                    addr: self.addr.clone(),
                    source,
                })?;
            Ok(match tls {
                Some(tls) => Socket(Box::new(
                    super::tls::handshake(tls, &self.addr, stream).await?,
                )),
                None => Socket(Box::new(stream)),
            })
        };
        let stream = tokio::time::timeout(timeout, connect).await.map_err(|_| {
            ProtocolError::Timeout {
                addr: self.addr.clone(),
                api: "connect",
                timeout,
            }
        })??;
        self.stream = Some(stream);
        self.api_versions = self
            .exchange_api_versions()
            .await
            .map_err(tls_alert_as_handshake_failure)?;
        if self.config.security_protocol.uses_sasl() {
            self.authenticate().await?;
        }
        debug!(
            addr = %self.addr,
            apis = self.api_versions.len(),
            security = %self.config.security_protocol,
            "connected to broker"
        );
        Ok(())
    }

    /// Runs the SASL exchange and schedules the next one before the session runs out.
    async fn authenticate(&mut self) -> Result<(), ProtocolError> {
        let started = Instant::now();
        let result = super::sasl::authenticate(self).await;
        if result.is_err() {
            self.stream = None;
        }
        // The Java client re-authenticates at 85-95% of the lifetime; 85% leaves room for
        // a slow exchange.
        self.reauthenticate_at = result?.map(|lifetime| started + lifetime.mul_f64(0.85));
        Ok(())
    }

    /// How many times this connection re-authenticated an open socket.
    pub fn reauthentications(&self) -> u64 {
        self.reauthentications
    }

    /// The broker address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the socket is open (false after a failure until `reconnect`).
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// The configuration.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// The version ranges the broker announced, by API key.
    pub fn api_versions(&self) -> &BTreeMap<i16, VersionRange> {
        &self.api_versions
    }

    /// The highest version of `api_key` both sides support, given our range
    /// `our_min..=our_max`.
    pub fn negotiate(
        &self,
        api_key: i16,
        our_min: i16,
        our_max: i16,
    ) -> Result<i16, ProtocolError> {
        let broker =
            self.api_versions
                .get(&api_key)
                .ok_or_else(|| ProtocolError::UnsupportedApi {
                    addr: self.addr.clone(),
                    api_key,
                })?;
        let version = our_max.min(broker.max);
        if version < our_min.max(broker.min) {
            return Err(ProtocolError::NoCommonVersion {
                addr: self.addr.clone(),
                api_key,
                our_min,
                our_max,
                broker_min: broker.min,
                broker_max: broker.max,
            });
        }
        Ok(version)
    }

    /// Sends one of the hand-written messages at the highest common version and decodes the
    /// response; returns the version used with it.
    pub(crate) async fn send_wire<Req: WireMessage, Resp: WireMessage>(
        &mut self,
        request: &Req,
    ) -> Result<(i16, Resp), ProtocolError> {
        let version = self.negotiate(Req::API_KEY, Req::MIN_VERSION, Req::MAX_VERSION)?;
        // Every hand-written API is flexible from v0: request header v2, response header v1.
        let kind = RequestKind {
            api_key: Req::API_KEY,
            api: Req::NAME,
            version,
            request_header_version: 2,
            response_header_version: 1,
        };
        let body = self
            .round_trip(kind, |buf| request.encode(buf, version))
            .await?;
        let response = Resp::decode(&body, version).map_err(|source| self.decode_error(source))?;
        Ok((version, response))
    }

    /// Sends one of `kafka-protocol`'s generated requests at `version`.
    pub(crate) async fn send_generated<Req: Request>(
        &mut self,
        api: &'static str,
        request: &Req,
        version: i16,
    ) -> Result<Req::Response, ProtocolError> {
        let (kind, encoded) = self.encode_generated(api, request, version)?;
        let mut body = self.round_trip(kind, |buf| buf.put_slice(&encoded)).await?;
        <Req::Response as Decodable>::decode(&mut body, version)
            .map_err(|e| self.generated_error(api, version, e))
    }

    fn encode_generated<Req: Request>(
        &self,
        api: &'static str,
        request: &Req,
        version: i16,
    ) -> Result<(RequestKind, BytesMut), ProtocolError> {
        let kind = RequestKind {
            api_key: Req::KEY,
            api,
            version,
            request_header_version: Req::header_version(version),
            response_header_version: <Req::Response as HeaderVersion>::header_version(version),
        };
        let mut encoded = BytesMut::new();
        request
            .encode(&mut encoded, version)
            .map_err(|e| self.generated_error(api, version, e))?;
        Ok((kind, encoded))
    }

    fn generated_error(
        &self,
        api: &'static str,
        version: i16,
        e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> ProtocolError {
        ProtocolError::GeneratedCodec {
            addr: self.addr.clone(),
            api,
            version,
            source: e.into(),
        }
    }

    fn decode_error(&self, source: super::error::DecodeError) -> ProtocolError {
        ProtocolError::Decode {
            addr: self.addr.clone(),
            source,
        }
    }

    async fn exchange_api_versions(
        &mut self,
    ) -> Result<BTreeMap<i16, VersionRange>, ProtocolError> {
        let mut request = ApiVersionsRequest::default();
        request.client_software_name = StrBytes::from_static_str("kstate");
        request.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let mut response: ApiVersionsResponse = self
            .send_generated("ApiVersions", &request, API_VERSIONS_VERSION)
            .await?;
        if response.error_code == UNSUPPORTED_VERSION {
            // The broker answered in v0 with its own range; retry at the highest it supports.
            let max = response
                .api_keys
                .iter()
                .find(|k| k.api_key == API_VERSIONS_KEY)
                .map_or(0, |k| k.max_version)
                .min(API_VERSIONS_VERSION);
            response = self.send_generated("ApiVersions", &request, max).await?;
        }
        if response.error_code != 0 {
            return Err(ProtocolError::Broker {
                addr: self.addr.clone(),
                api: "ApiVersions",
                code: response.error_code,
                message: None,
            });
        }
        Ok(response
            .api_keys
            .iter()
            .map(|k| {
                (
                    k.api_key,
                    VersionRange {
                        min: k.min_version,
                        max: k.max_version,
                    },
                )
            })
            .collect())
    }

    /// Writes one request frame and reads its response frame within the request timeout;
    /// returns the response body (header stripped). Re-authenticates first when the SASL
    /// session is about to run out. Closes the socket on any failure.
    pub(crate) async fn round_trip(
        &mut self,
        kind: RequestKind,
        write_body: impl FnOnce(&mut BytesMut),
    ) -> Result<Bytes, ProtocolError> {
        let due = self
            .reauthenticate_at
            .is_some_and(|at| Instant::now() >= at);
        if due && self.stream.is_some() {
            debug!(addr = %self.addr, "re-authenticating before the SASL session runs out");
            self.authenticate().await?;
            self.reauthentications += 1;
        }
        self.send_frame(kind, write_body).await
    }

    /// Sends one of `kafka-protocol`'s generated requests during the SASL exchange (no
    /// re-authentication check, so the exchange cannot start itself again).
    pub(super) async fn send_sasl<Req: Request>(
        &mut self,
        api: &'static str,
        request: &Req,
        version: i16,
    ) -> Result<Req::Response, ProtocolError> {
        let (kind, encoded) = self.encode_generated(api, request, version)?;
        let mut body = self.send_frame(kind, |buf| buf.put_slice(&encoded)).await?;
        <Req::Response as Decodable>::decode(&mut body, version)
            .map_err(|e| self.generated_error(api, version, e))
    }

    /// [`Self::round_trip`] without the re-authentication check.
    async fn send_frame(
        &mut self,
        kind: RequestKind,
        write_body: impl FnOnce(&mut BytesMut),
    ) -> Result<Bytes, ProtocolError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = self.frame(kind, correlation_id, write_body);
        let timeout = self.config.request_timeout;
        let max = self.config.max_response_bytes;
        let addr = self.addr.clone();
        let Some(stream) = self.stream.as_mut() else {
            return Err(ProtocolError::NotConnected { addr });
        };
        trace!(
            api = kind.api,
            version = kind.version,
            correlation_id,
            "sending request"
        );
        let result = match tokio::time::timeout(
            timeout,
            exchange(&mut *stream.0, &frame, kind, correlation_id, max, &addr),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ProtocolError::Timeout {
                addr: addr.clone(),
                api: kind.api,
                timeout,
            }),
        };
        if let Err(e) = &result {
            debug!(addr = %addr, api = kind.api, error = %e, "closing broker connection");
            self.stream = None;
        }
        result
    }

    fn frame(
        &self,
        kind: RequestKind,
        correlation_id: i32,
        write_body: impl FnOnce(&mut BytesMut),
    ) -> BytesMut {
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0);
        {
            let mut w = Writer::new(&mut frame);
            w.i16(kind.api_key);
            w.i16(kind.version);
            w.i32(correlation_id);
            // client_id is a classic (int16-length) nullable string in every header version.
            let id = self.config.client_id.as_bytes();
            let len = i16::try_from(id.len()).unwrap_or(i16::MAX);
            w.i16(len);
            frame.put_slice(&id[..len as usize]);
        }
        if kind.request_header_version >= 2 {
            Writer::new(&mut frame).empty_tagged_fields();
        }
        write_body(&mut frame);
        let size = i32::try_from(frame.len() - 4).unwrap_or(i32::MAX);
        frame[..4].copy_from_slice(&size.to_be_bytes());
        frame
    }
}

/// Under TLS 1.3 the broker checks the client certificate after the client finished its
/// handshake, so a refusal arrives as an alert on the first read: report it as the TLS
/// failure it is, not as an I/O error of ApiVersions.
fn tls_alert_as_handshake_failure(e: ProtocolError) -> ProtocolError {
    match e {
        ProtocolError::Io { addr, source, .. }
            if source
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()) =>
        {
            ProtocolError::Tls { addr, source }
        }
        other => other,
    }
}

/// Writes `frame`, reads one size-prefixed response, checks its header and returns the body.
async fn exchange(
    stream: &mut dyn Io,
    frame: &[u8],
    kind: RequestKind,
    correlation_id: i32,
    max: usize,
    addr: &str,
) -> Result<Bytes, ProtocolError> {
    let io = |source| ProtocolError::Io {
        addr: addr.to_owned(),
        api: kind.api,
        source,
    };
    stream.write_all(frame).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let size = stream.read_i32().await.map_err(io)?;
    if size < 4 || size as usize > max {
        return Err(ProtocolError::FrameSize {
            addr: addr.to_owned(),
            api: kind.api,
            size: i64::from(size),
            max,
        });
    }
    let mut buf = vec![0u8; size as usize];
    stream.read_exact(&mut buf).await.map_err(io)?;
    let mut r = Reader::new(&buf, "ResponseHeader", kind.response_header_version);
    let decode = |source| ProtocolError::Decode {
        addr: addr.to_owned(),
        source,
    };
    let actual = r.i32("CorrelationId").map_err(decode)?;
    if actual != correlation_id {
        return Err(ProtocolError::CorrelationMismatch {
            addr: addr.to_owned(),
            api: kind.api,
            expected: correlation_id,
            actual,
        });
    }
    if kind.response_header_version >= 1 {
        r.skip_tagged_fields("_tagged_fields").map_err(decode)?;
    }
    let header_len = buf.len() - r.remaining();
    let mut body = Bytes::from(buf);
    body.advance(header_len);
    Ok(body)
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
