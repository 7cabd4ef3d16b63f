//! The driver against a fake coordinator on 127.0.0.1:0 that answers ApiVersions,
//! FindCoordinator (naming itself) and StreamsGroupHeartbeat from a script: discovery, the
//! immediate acknowledgement, rediscovery with full state after NOT_COORDINATOR, pause and
//! resume, and the bounds of `leave`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiVersionsResponse, BrokerId, FindCoordinatorResponse};
use kafka_protocol::protocol::{Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use crate::membership::driver::{DriverConfig, LeaveOutcome, MembershipDriver};
use crate::protocol::{ConnectionConfig, StreamsGroupHeartbeatRequest, WireMessage};

/// Answers a heartbeat (the n-th, from 0) with a response, or `None` for silence.
type Script = dyn Fn(&StreamsGroupHeartbeatRequest, usize) -> Option<StreamsGroupHeartbeatResponse>
    + Send
    + Sync;

#[derive(Default)]
struct Seen {
    find_coordinator: usize,
    heartbeats: Vec<(Instant, StreamsGroupHeartbeatRequest)>,
}

struct Fake {
    addr: String,
    seen: Arc<Mutex<Seen>>,
}

impl Fake {
    async fn start(
        script: impl Fn(&StreamsGroupHeartbeatRequest, usize) -> Option<StreamsGroupHeartbeatResponse>
            + Send
            + Sync
            + 'static,
    ) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let script: Arc<Script> = Arc::new(script);
        let (port, shared) = (listener.local_addr().expect("addr").port(), seen.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, port, shared.clone(), script.clone()));
            }
        });
        Fake { addr, seen }
    }

    fn heartbeats(&self) -> Vec<StreamsGroupHeartbeatRequest> {
        let seen = self.seen.lock().expect("lock");
        seen.heartbeats.iter().map(|(_, r)| r.clone()).collect()
    }

    fn find_coordinator_calls(&self) -> usize {
        self.seen.lock().expect("lock").find_coordinator
    }
}

async fn serve(mut socket: TcpStream, port: u16, seen: Arc<Mutex<Seen>>, script: Arc<Script>) {
    loop {
        let Ok(size) = socket.read_i32().await else {
            return;
        };
        let mut frame = vec![0u8; size as usize];
        if socket.read_exact(&mut frame).await.is_err() {
            return;
        }
        let mut buf = Bytes::from(frame);
        let (api_key, version, correlation_id) = (buf.get_i16(), buf.get_i16(), buf.get_i32());
        let client_id_len = buf.get_i16();
        buf.advance(client_id_len as usize);
        buf.advance(1); // Every request the driver sends has a flexible header: no tagged fields.
        let (header_version, body) = match api_key {
            18 => (0, api_versions()),
            10 => {
                seen.lock().expect("lock").find_coordinator += 1;
                (1, find_coordinator(port, version))
            }
            88 => {
                let request = StreamsGroupHeartbeatRequest::decode(&buf, version).expect("request");
                let n = {
                    let mut seen = seen.lock().expect("lock");
                    seen.heartbeats.push((Instant::now(), request.clone()));
                    seen.heartbeats.len() - 1
                };
                let Some(response) = script(&request, n) else {
                    continue;
                };
                let mut body = BytesMut::new();
                response.encode(&mut body, version);
                (1, body.to_vec())
            }
            other => panic!("unexpected API {other}"),
        };
        let mut out = BytesMut::new();
        out.put_i32(0);
        out.put_i32(correlation_id);
        if header_version >= 1 {
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

fn encoded<M: Encodable>(m: &M, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    m.encode(&mut buf, version).expect("encodes");
    buf.to_vec()
}

fn api_versions() -> Vec<u8> {
    let mut r = ApiVersionsResponse::default();
    for (key, max) in [(18, 3), (88, 1), (10, 6)] {
        let mut v = ApiVersion::default();
        v.api_key = key;
        v.max_version = max;
        r.api_keys.push(v);
    }
    encoded(&r, 3)
}

fn find_coordinator(port: u16, version: i16) -> Vec<u8> {
    let mut c = Coordinator::default();
    c.key = StrBytes::from_static_str("app");
    c.node_id = BrokerId(1);
    c.host = StrBytes::from_static_str("127.0.0.1");
    c.port = i32::from(port);
    let mut r = FindCoordinatorResponse::default();
    r.coordinators.push(c);
    encoded(&r, version)
}

fn spawn(addr: &str) -> (DriverHandle, mpsc::Receiver<MembershipEvent>) {
    MembershipDriver::spawn(DriverConfig {
        bootstrap: addr.to_string(),
        connection: ConnectionConfig {
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            ..ConnectionConfig::default()
        },
        membership: config(),
    })
}

fn with_interval(mut r: StreamsGroupHeartbeatResponse, ms: i32) -> StreamsGroupHeartbeatResponse {
    r.heartbeat_interval_ms = ms;
    r
}

async fn next_event(events: &mut mpsc::Receiver<MembershipEvent>) -> MembershipEvent {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event within 5 s")
        .expect("driver running")
}

async fn until_heartbeats(fake: &Fake, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.heartbeats().len() < n {
        assert!(Instant::now() < deadline, "{n} heartbeats within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Join → assignment; the acknowledgement goes out at once (not after the 10 s interval);
/// leave sends epoch -1 and returns when it is answered.
#[tokio::test]
async fn joins_acknowledges_at_once_and_leaves() {
    let fake = Fake::start(|req, _| {
        Some(match req.member_epoch {
            0 => with_interval(assign(1, &[0, 1], &[], &[]), 10_000),
            -1 => with_interval(ok(-1), 10_000),
            _ => with_interval(ok(1), 10_000),
        })
    })
    .await;
    let (handle, mut events) = spawn(&fake.addr);
    assert_eq!(
        next_event(&mut events).await,
        MembershipEvent::Assigned {
            active: ids(&[0, 1]),
            standby: BTreeSet::new()
        }
    );
    until_heartbeats(&fake, 2).await;
    let sent = fake.heartbeats();
    assert_eq!(sent[0].member_epoch, 0);
    assert!(sent[0].topology.is_some());
    assert_eq!(
        (sent[1].member_epoch, sent_active(&sent[1])),
        (1, Some(ids(&[0, 1])))
    );
    assert_eq!(handle.member(), (MEMBER_ID.to_string(), 1));
    let status = handle.status();
    assert_eq!(status.heartbeat_version, Some(1));
    assert_eq!(status.joins, 1);
    assert_eq!(fake.find_coordinator_calls(), 1);

    assert_eq!(
        handle.leave(Duration::from_secs(2)).await,
        LeaveOutcome::Left
    );
    assert_eq!(fake.heartbeats().last().map(|r| r.member_epoch), Some(-1));
    assert_eq!(handle.member().1, -1);
    assert_eq!(
        handle.leave(Duration::from_secs(1)).await,
        LeaveOutcome::NotRunning
    );
}

/// NOT_COORDINATOR: the driver asks FindCoordinator again and re-sends the full state.
#[tokio::test]
async fn not_coordinator_rediscovers_and_resends_full_state() {
    let fake = Fake::start(|req, n| {
        Some(match (req.member_epoch, n) {
            (0, _) => with_interval(assign(1, &[0], &[], &[]), 50),
            (_, 2) => error(16),
            _ => with_interval(ok(1), 50),
        })
    })
    .await;
    let (_handle, mut events) = spawn(&fake.addr);
    assert!(matches!(
        next_event(&mut events).await,
        MembershipEvent::Assigned { .. }
    ));
    until_heartbeats(&fake, 4).await;
    let sent = fake.heartbeats();
    // 0: join, 1: acknowledgement (lists), 2: unchanged (null lists) answered NOT_COORDINATOR,
    // 3: after rediscovery, full state again.
    assert_eq!(sent_active(&sent[1]), Some(ids(&[0])));
    assert_eq!(sent_active(&sent[2]), None);
    assert_eq!(sent_active(&sent[3]), Some(ids(&[0])));
    assert_eq!(fake.find_coordinator_calls(), 2);
}

/// A paused member sends nothing; resumed, it heartbeats again.
#[tokio::test]
async fn pause_stops_heartbeats_until_resume() {
    let fake = Fake::start(|req, _| {
        Some(match req.member_epoch {
            0 => with_interval(assign(1, &[0], &[], &[]), 20),
            _ => with_interval(ok(1), 20),
        })
    })
    .await;
    let (handle, mut events) = spawn(&fake.addr);
    assert!(matches!(
        next_event(&mut events).await,
        MembershipEvent::Assigned { .. }
    ));
    until_heartbeats(&fake, 3).await;
    handle.pause();
    // Let a heartbeat already in flight (or due) settle, then watch 10 intervals pass.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let paused = fake.heartbeats().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.heartbeats().len(), paused, "no heartbeat while paused");
    handle.resume();
    until_heartbeats(&fake, paused + 2).await;
}

/// An unanswered leave returns at the caller's bound.
#[tokio::test]
async fn leave_returns_at_its_bound_when_unanswered() {
    let fake = Fake::start(|req, _| match req.member_epoch {
        0 => Some(with_interval(assign(1, &[0], &[], &[]), 10_000)),
        -1 => None,
        _ => Some(with_interval(ok(1), 10_000)),
    })
    .await;
    let (handle, mut events) = spawn(&fake.addr);
    assert!(matches!(
        next_event(&mut events).await,
        MembershipEvent::Assigned { .. }
    ));
    let start = Instant::now();
    assert_eq!(
        handle.leave(Duration::from_millis(300)).await,
        LeaveOutcome::TimedOut
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    handle.abort();
}

/// With no broker to reach, leaving ends at once: the member never joined.
#[tokio::test]
async fn leave_without_a_broker_ends_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let (handle, mut events) = spawn(&addr);
    assert_eq!(
        handle.leave(Duration::from_secs(2)).await,
        LeaveOutcome::Left
    );
    assert_eq!(next_event(&mut events).await, MembershipEvent::Left);
    assert_eq!(handle.status().joins, 0);
}
