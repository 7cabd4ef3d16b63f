//! One TCP connection to one broker: size-prefixed framing, request headers (v1, or v2 for
//! flexible APIs), response headers (v0 / v1), correlation ids checked, a timeout per
//! request, and the ApiVersions exchange on connect that [`BrokerConnection::negotiate`]
//! answers from.
//!
//! Requests are sent one at a time (`&mut self`); any I/O failure, timeout or correlation
//! mismatch closes the socket, and the next call fails with
//! [`ProtocolError::NotConnected`] until [`BrokerConnection::reconnect`]. The connection
//! owns the socket and nothing else: it never retries, sleeps or interprets error codes;
//! the membership driver decides what to do about them. Typed calls per API live in
//! `group_apis.rs`.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// A connection to one broker, versions negotiated.
#[derive(Debug)]
pub struct BrokerConnection {
    addr: String,
    config: ConnectionConfig,
    stream: Option<TcpStream>,
    next_correlation_id: i32,
    api_versions: BTreeMap<i16, VersionRange>,
}

impl BrokerConnection {
    /// Connects to `addr` (`host:port`) and exchanges ApiVersions, all within
    /// `config.connect_timeout`. Fails at once for a security protocol other than PLAINTEXT.
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
        };
        conn.reconnect().await?;
        Ok(conn)
    }

    /// Drops the current socket (if any), connects again and repeats the ApiVersions
    /// exchange.
    pub async fn reconnect(&mut self) -> Result<(), ProtocolError> {
        self.config.check_supported()?;
        self.stream = None;
        let timeout = self.config.connect_timeout;
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
            Ok(stream)
        };
        let stream = tokio::time::timeout(timeout, connect).await.map_err(|_| {
            ProtocolError::Timeout {
                addr: self.addr.clone(),
                api: "connect",
                timeout,
            }
        })??;
        self.stream = Some(stream);
        self.api_versions = self.exchange_api_versions().await?;
        debug!(addr = %self.addr, apis = self.api_versions.len(), "connected to broker");
        Ok(())
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
        let body = self.round_trip(kind, |buf| buf.put_slice(&encoded)).await?;
        let mut body = body;
        <Req::Response as Decodable>::decode(&mut body, version)
            .map_err(|e| self.generated_error(api, version, e))
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
    /// returns the response body (header stripped). Closes the socket on any failure.
    pub(crate) async fn round_trip(
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
            exchange(stream, &frame, kind, correlation_id, max, &addr),
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

/// Writes `frame`, reads one size-prefixed response, checks its header and returns the body.
async fn exchange(
    stream: &mut TcpStream,
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
