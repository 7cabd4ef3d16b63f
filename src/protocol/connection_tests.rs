//! Tests of the broker connection against an in-process fake broker on 127.0.0.1:0: header
//! and framing, version negotiation, correlation ids, timeouts, SASL PLAIN with
//! re-authentication, and the typed calls.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::find_coordinator_response::Coordinator as WireCoordinator;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::protocol::group_apis::CommitOffset;
use crate::protocol::streams_group_heartbeat::{
    StreamsGroupHeartbeatRequest, StreamsGroupHeartbeatResponse,
};
use crate::protocol::{SaslConfig, Secret, TaskIds};

/// A request as the fake broker saw it.
struct Seen {
    api_key: i16,
    version: i16,
    correlation_id: i32,
    client_id: String,
    body: Bytes,
}

/// What the fake broker does with a request.
enum Reply {
    /// Send this response body with the right header for the API.
    Body(Vec<u8>),
    /// Send this body under another correlation id.
    WrongCorrelation(Vec<u8>),
    /// Send a frame announcing this size, then nothing.
    Size(i32),
    /// Never answer.
    Silent,
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

fn is_flexible_request(api_key: i16, version: i16) -> bool {
    match api_key {
        88 | 89 => true,
        k => ApiKey::try_from(k).is_ok_and(|k| k.request_header_version(version) >= 2),
    }
}

fn response_header_version(api_key: i16, version: i16) -> i16 {
    match api_key {
        88 | 89 => 1,
        k => ApiKey::try_from(k).map_or(0, |k| k.response_header_version(version)),
    }
}

async fn serve(mut socket: TcpStream, handler: Arc<Handler>) {
    loop {
        let Ok(size) = socket.read_i32().await else {
            return;
        };
        let mut frame = vec![0u8; size as usize];
        if socket.read_exact(&mut frame).await.is_err() {
            return;
        }
        let mut buf = Bytes::from(frame);
        let api_key = buf.get_i16();
        let version = buf.get_i16();
        let correlation_id = buf.get_i32();
        let len = buf.get_i16();
        let client_id = String::from_utf8(buf.split_to(len as usize).to_vec()).expect("utf8");
        if is_flexible_request(api_key, version) {
            assert_eq!(buf.get_u8(), 0, "no tagged fields in the request header");
        }
        let seen = Seen {
            api_key,
            version,
            correlation_id,
            client_id,
            body: buf,
        };
        let (correlation_id, body) = match handler(&seen) {
            Reply::Body(body) => (correlation_id, body),
            Reply::WrongCorrelation(body) => (correlation_id + 1, body),
            Reply::Size(size) => {
                let _ = socket.write_i32(size).await;
                continue;
            }
            Reply::Silent => continue,
        };
        let mut out = BytesMut::new();
        out.put_i32(0);
        out.put_i32(correlation_id);
        if response_header_version(api_key, version) >= 1 {
            out.put_u8(0);
        }
        out.put_slice(&body);
        let size = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&size.to_be_bytes());
        if socket.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn generated<M: Encodable>(m: &M, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    m.encode(&mut buf, version).expect("encodes");
    buf.to_vec()
}

fn api_versions(heartbeat_max: i16) -> Vec<u8> {
    let mut r = ApiVersionsResponse::default();
    for (key, min, max) in [
        (18, 0, 4),
        (88, 0, heartbeat_max),
        (89, 0, 1),
        (10, 0, 6),
        (8, 2, 9),
        (9, 1, 9),
        (3, 0, 12),
        (17, 0, 1),
        (36, 0, 2),
    ] {
        let mut v = ApiVersion::default();
        v.api_key = key;
        v.min_version = min;
        v.max_version = max;
        r.api_keys.push(v);
    }
    generated(&r, 3)
}

/// Starts a fake broker answering ApiVersions itself and everything else with `handler`.
async fn fake_broker(
    heartbeat_max: i16,
    handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let handler: Arc<Handler> = Arc::new(move |seen: &Seen| {
        if seen.api_key == 18 {
            assert_eq!(seen.version, 3);
            Reply::Body(api_versions(heartbeat_max))
        } else {
            handler(seen)
        }
    });
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, handler.clone()));
        }
    });
    addr
}

fn config() -> ConnectionConfig {
    ConnectionConfig {
        client_id: "kstate-test".into(),
        request_timeout: Duration::from_millis(300),
        ..ConnectionConfig::default()
    }
}

fn heartbeat_response(member_epoch: i32) -> StreamsGroupHeartbeatResponse {
    StreamsGroupHeartbeatResponse {
        member_id: "m-1".into(),
        member_epoch,
        heartbeat_interval_ms: 500,
        active_tasks: Some(vec![TaskIds {
            subtopology_id: "0".into(),
            partitions: vec![0, 1],
        }]),
        standby_tasks: Some(vec![]),
        warmup_tasks: Some(vec![]),
        ..StreamsGroupHeartbeatResponse::default()
    }
}

fn heartbeat_handler(seen: &Seen) -> Reply {
    assert_eq!(seen.api_key, 88);
    assert_eq!(seen.client_id, "kstate-test");
    let req = StreamsGroupHeartbeatRequest::decode(&seen.body, seen.version).expect("request");
    let mut body = BytesMut::new();
    heartbeat_response(req.member_epoch + 1).encode(&mut body, seen.version);
    Reply::Body(body.to_vec())
}

fn join() -> StreamsGroupHeartbeatRequest {
    StreamsGroupHeartbeatRequest {
        group_id: "app".into(),
        member_id: "m-1".into(),
        member_epoch: 0,
        ..StreamsGroupHeartbeatRequest::default()
    }
}

#[tokio::test]
async fn connect_exchanges_api_versions_and_negotiates() {
    let addr = fake_broker(1, heartbeat_handler).await;
    let conn = BrokerConnection::connect(&addr, config())
        .await
        .expect("connects");
    assert_eq!(conn.api_versions()[&88], VersionRange { min: 0, max: 1 });
    assert_eq!(conn.negotiate(88, 0, 1).expect("common"), 1);
    assert_eq!(conn.negotiate(88, 0, 0).expect("common"), 0);
    assert_eq!(conn.heartbeat_version().expect("common"), 1);
    assert!(matches!(
        conn.negotiate(8, 10, 12),
        Err(ProtocolError::NoCommonVersion {
            api_key: 8,
            broker_max: 9,
            ..
        })
    ));
    assert!(matches!(
        conn.negotiate(93, 0, 0),
        Err(ProtocolError::UnsupportedApi { api_key: 93, .. })
    ));
}

#[tokio::test]
async fn heartbeat_round_trips_at_each_negotiated_version() {
    for broker_max in [0, 1] {
        let last_correlation_id = Arc::new(AtomicI32::new(-1));
        let seen_ids = last_correlation_id.clone();
        let addr = fake_broker(broker_max, move |seen| {
            assert_eq!(seen.version, broker_max);
            let last = seen_ids.swap(seen.correlation_id, Ordering::SeqCst);
            assert!(seen.correlation_id > last, "correlation ids increase");
            heartbeat_handler(seen)
        })
        .await;
        let mut conn = BrokerConnection::connect(&addr, config())
            .await
            .expect("connects");
        assert_eq!(conn.heartbeat_version().expect("common"), broker_max);
        for _ in 0..2 {
            let resp = conn.heartbeat(&join()).await.expect("heartbeat");
            assert_eq!(resp, heartbeat_response(1));
        }
        assert!(last_correlation_id.load(Ordering::SeqCst) >= 2);
    }
}

#[tokio::test]
async fn correlation_mismatch_closes_the_connection() {
    let addr = fake_broker(1, |seen| match heartbeat_handler(seen) {
        Reply::Body(body) => Reply::WrongCorrelation(body),
        other => other,
    })
    .await;
    let mut conn = BrokerConnection::connect(&addr, config())
        .await
        .expect("connects");
    let err = conn.heartbeat(&join()).await.unwrap_err();
    assert!(
        matches!(err, ProtocolError::CorrelationMismatch { expected, actual, .. } if actual == expected + 1),
        "{err:?}"
    );
    assert!(!conn.is_connected());
    let err = conn.heartbeat(&join()).await.unwrap_err();
    assert!(matches!(err, ProtocolError::NotConnected { .. }), "{err:?}");
    conn.reconnect().await.expect("reconnects");
    assert!(conn.is_connected());
}

#[tokio::test]
async fn request_timeout_closes_the_connection() {
    let addr = fake_broker(1, |_| Reply::Silent).await;
    let mut conn = BrokerConnection::connect(&addr, config())
        .await
        .expect("connects");
    let err = conn.heartbeat(&join()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::Timeout {
                api: "StreamsGroupHeartbeatRequest",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!conn.is_connected());
}

#[tokio::test]
async fn oversized_frame_is_rejected() {
    let addr = fake_broker(1, |_| Reply::Size(i32::MAX)).await;
    let mut conn = BrokerConnection::connect(&addr, config())
        .await
        .expect("connects");
    let err = conn.heartbeat(&join()).await.unwrap_err();
    assert!(matches!(err, ProtocolError::FrameSize { .. }), "{err:?}");
}

#[tokio::test]
async fn malformed_response_is_a_decode_error() {
    let addr = fake_broker(1, |_| Reply::Body(vec![0, 0])).await;
    let mut conn = BrokerConnection::connect(&addr, config())
        .await
        .expect("connects");
    let err = conn.heartbeat(&join()).await.unwrap_err();
    match err {
        ProtocolError::Decode { source, .. } => {
            assert_eq!(source.api, "StreamsGroupHeartbeatResponse");
            assert_eq!(source.field, "ThrottleTimeMs");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test]
async fn incomplete_sasl_settings_fail_before_connecting() {
    // Nothing listens on port 1: the error must come from validation, not from a socket.
    let config = ConnectionConfig {
        security_protocol: SecurityProtocol::SaslSsl,
        ..config()
    };
    let err = BrokerConnection::connect("127.0.0.1:1", config)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProtocolError::InvalidConfig { key, .. } if key == "sasl.mechanism"),
        "{err}"
    );
    assert!(err.is_security_failure());
}

fn sasl_config(mechanism: &str, password: &str) -> ConnectionConfig {
    ConnectionConfig {
        security_protocol: SecurityProtocol::SaslPlaintext,
        sasl: SaslConfig {
            mechanism: Some(mechanism.into()),
            username: Some("alice".into()),
            password: Some(Secret::new(password)),
        },
        ..config()
    }
}

/// A broker offering PLAIN to alice with password `right-pw`, granting sessions of
/// `lifetime_ms`, counting successful authentications in `auths`; heartbeats otherwise.
async fn sasl_broker(lifetime_ms: i64, auths: Arc<AtomicI32>) -> String {
    fake_broker(1, move |seen| match seen.api_key {
        17 => {
            let req = SaslHandshakeRequest::decode(&mut seen.body.clone(), seen.version)
                .expect("handshake");
            let mut r = SaslHandshakeResponse::default();
            r.mechanisms = vec![StrBytes::from_static_str("PLAIN")];
            if req.mechanism.as_str() != "PLAIN" {
                r.error_code = 33;
            }
            Reply::Body(generated(&r, seen.version))
        }
        36 => {
            let req = SaslAuthenticateRequest::decode(&mut seen.body.clone(), seen.version)
                .expect("authenticate");
            let mut r = SaslAuthenticateResponse::default();
            if req.auth_bytes.as_ref() == b"\0alice\0right-pw" {
                auths.fetch_add(1, Ordering::SeqCst);
                r.session_lifetime_ms = lifetime_ms;
            } else {
                r.error_code = 58;
                r.error_message = Some(StrBytes::from_static_str(
                    "Authentication failed: Invalid username or password",
                ));
            }
            Reply::Body(generated(&r, seen.version))
        }
        _ => heartbeat_handler(seen),
    })
    .await
}

#[tokio::test]
async fn sasl_plain_authenticates_and_again_before_the_session_ends() {
    let auths = Arc::new(AtomicI32::new(0));
    let addr = sasl_broker(300, auths.clone()).await;
    let mut conn = BrokerConnection::connect(&addr, sasl_config("PLAIN", "right-pw"))
        .await
        .expect("connects");
    assert_eq!(auths.load(Ordering::SeqCst), 1);
    assert_eq!(conn.reauthentications(), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while conn.reauthentications() < 2 {
        assert!(std::time::Instant::now() < deadline, "no re-authentication");
        conn.heartbeat(&join()).await.expect("heartbeat");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        auths.load(Ordering::SeqCst),
        3,
        "on the same socket, no reconnect"
    );
    assert!(conn.is_connected());
}

#[tokio::test]
async fn a_refused_password_is_named_and_never_shown() {
    let addr = sasl_broker(0, Arc::new(AtomicI32::new(0))).await;
    let err = BrokerConnection::connect(&addr, sasl_config("PLAIN", "wrong-pw"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProtocolError::Authentication { mechanism, message, .. }
            if mechanism == "PLAIN" && message.contains("Invalid username or password")),
        "{err:?}"
    );
    assert!(err.is_security_failure());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("wrong-pw"), "{shown}");
}

#[tokio::test]
async fn a_mechanism_the_broker_lacks_is_named_with_those_it_has() {
    let addr = sasl_broker(0, Arc::new(AtomicI32::new(0))).await;
    let err = BrokerConnection::connect(&addr, sasl_config("SCRAM-SHA-512", "right-pw"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProtocolError::SaslMechanism { mechanism, enabled, .. }
            if mechanism == "SCRAM-SHA-512" && enabled == "PLAIN"),
        "{err:?}"
    );
}

#[tokio::test]
async fn find_coordinator_uses_batched_keys() {
    let addr = fake_broker(1, |seen| {
        assert_eq!((seen.api_key, seen.version), (10, 6));
        let req = FindCoordinatorRequest::decode(&mut seen.body.clone(), 6).expect("request");
        assert_eq!(req.coordinator_keys, vec![StrBytes::from_static_str("app")]);
        let mut c = WireCoordinator::default();
        c.key = StrBytes::from_static_str("app");
        c.node_id = BrokerId(3);
        c.host = StrBytes::from_static_str("broker-3");
        c.port = 9093;
        let mut r = FindCoordinatorResponse::default();
        r.coordinators.push(c);
        Reply::Body(generated(&r, 6))
    })
    .await;
    let mut conn = BrokerConnection::connect(&addr, config())
        .await
        .expect("connects");
    let c = conn.find_coordinator("app").await.expect("coordinator");
    assert_eq!(c.node_id, 3);
    assert_eq!(c.addr(), "broker-3:9093");
}

#[tokio::test]
async fn offset_commit_carries_member_id_and_epoch_and_fetch_reads_back() {
    let addr = fake_broker(1, |seen| match seen.api_key {
        8 => {
            assert_eq!(seen.version, 9);
            let req = OffsetCommitRequest::decode(&mut seen.body.clone(), 9).expect("request");
            assert_eq!(&*req.group_id.0, "app");
            assert_eq!(&*req.member_id, "m-1");
            assert_eq!(req.generation_id_or_member_epoch, 7);
            assert_eq!(req.topics.len(), 1, "partitions grouped by topic");
            let mut r = OffsetCommitResponse::default();
            let mut t = OffsetCommitResponseTopic::default();
            t.name = req.topics[0].name.clone();
            for p in &req.topics[0].partitions {
                let mut rp = OffsetCommitResponsePartition::default();
                rp.partition_index = p.partition_index;
                rp.error_code = if p.partition_index == 1 { 22 } else { 0 };
                t.partitions.push(rp);
            }
            r.topics.push(t);
            Reply::Body(generated(&r, 9))
        }
        9 => {
            assert_eq!(seen.version, 9);
            let req = OffsetFetchRequest::decode(&mut seen.body.clone(), 9).expect("request");
            assert!(req.require_stable);
            let g = &req.groups[0];
            assert_eq!(g.member_id, None);
            let topics = g.topics.as_ref().expect("topics");
            let mut rt = OffsetFetchResponseTopics::default();
            rt.name = topics[0].name.clone();
            for p in &topics[0].partition_indexes {
                let mut rp = OffsetFetchResponsePartitions::default();
                rp.partition_index = *p;
                rp.committed_offset = 100 + i64::from(*p);
                rp.committed_leader_epoch = -1;
                rt.partitions.push(rp);
            }
            let mut rg = OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id.clone();
            rg.topics.push(rt);
            let mut r = OffsetFetchResponse::default();
            r.groups.push(rg);
            Reply::Body(generated(&r, 9))
        }
        other => panic!("unexpected api {other}"),
    })
    .await;
    let mut conn = BrokerConnection::connect(&addr, config())
        .await
        .expect("connects");
    let offsets: Vec<CommitOffset> = (0..2)
        .map(|p| CommitOffset {
            topic: "input".into(),
            partition: p,
            offset: 100 + i64::from(p),
            leader_epoch: -1,
            metadata: None,
        })
        .collect();
    let results = conn
        .offset_commit("app", "m-1", 7, &offsets)
        .await
        .expect("commit");
    assert_eq!(results.len(), 2);
    assert_eq!((results[0].partition, results[0].error_code), (0, 0));
    assert_eq!((results[1].partition, results[1].error_code), (1, 22));

    let fetched = conn
        .offset_fetch("app", &[("input".into(), 0), ("input".into(), 1)])
        .await
        .expect("fetch");
    assert_eq!(fetched.len(), 2);
    assert_eq!(fetched[1].topic, "input");
    assert_eq!(fetched[1].offset, 101);
    assert_eq!(fetched[1].error_code, 0);
}
