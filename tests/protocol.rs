//! The wire layer against the real broker: version negotiation, FindCoordinator, a raw
//! streams-group join through to a full assignment (the broker creating the declared
//! changelog topic on the way), StreamsGroupDescribe, OffsetCommit / OffsetFetch with and
//! without the member's identity, leaving, and an unknown member's heartbeat.
//!
//! Each test uses its own topics and group, so they run in parallel against one broker.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kstate::protocol::{
    BrokerConnection, CommitOffset, ConnectionConfig, KeyValue, StatusCode,
    StreamsGroupHeartbeatRequest, StreamsGroupHeartbeatResponse, Subtopology, TaskIds, TopicInfo,
    Topology, VersionRange,
};
use rdkafka::admin::ConfigSource;

const PARTITIONS: i32 = 4;
const STORE: &str = "counts";
const UNKNOWN_MEMBER_ID: i16 = 25;
const FENCED_MEMBER_EPOCH: i16 = 110;
const STALE_MEMBER_EPOCH: i16 = 113;
/// How long the broker may take from the first join heartbeat to a full assignment: it
/// creates the internal topics, then waits out the initial rebalance delay.
const ASSIGNMENT_DEADLINE: Duration = Duration::from_secs(45);
/// The pause between heartbeats while waiting; shorter than the broker's interval so a
/// test does not wait longer than it must, and the broker accepts early heartbeats.
const POLL: Duration = Duration::from_millis(250);

/// The changelog topic configs a Kafka Streams session store declares (1 day of extra
/// retention on top of a 300 s store retention), sorted by key as Java sends them.
fn changelog_configs() -> Vec<KeyValue> {
    vec![
        KeyValue::new("cleanup.policy", "compact,delete"),
        KeyValue::new("message.timestamp.type", "CreateTime"),
        KeyValue::new("retention.ms", "86700000"),
    ]
}

fn changelog_name(app: &str) -> String {
    format!("{app}-{STORE}-changelog")
}

async fn connect(bootstrap: &str) -> anyhow::Result<BrokerConnection> {
    let addr = bootstrap.split(',').next().unwrap_or_default().to_string();
    BrokerConnection::connect(addr.clone(), ConnectionConfig::default())
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// The group coordinator's connection, retrying while the broker says it is not available
/// yet (15) or is loading (14).
async fn coordinator_connection(bootstrap: &str, group: &str) -> anyhow::Result<BrokerConnection> {
    let mut conn = connect(bootstrap).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let coordinator = loop {
        match conn.find_coordinator(group).await {
            Ok(c) => break c,
            Err(kstate::protocol::ProtocolError::Broker { code: 14 | 15, .. })
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(POLL).await;
            }
            Err(e) => return Err(e).context("FindCoordinator"),
        }
    };
    BrokerConnection::connect(coordinator.addr(), ConnectionConfig::default())
        .await
        .with_context(|| format!("connecting to the coordinator {}", coordinator.addr()))
}

/// Task lists as a set of (subtopology, partition), whatever their order on the wire.
fn task_set(lists: &[TaskIds]) -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for t in lists {
        out.entry(t.subtopology_id.clone())
            .or_default()
            .extend(&t.partitions);
    }
    for partitions in out.values_mut() {
        partitions.sort_unstable();
    }
    out.retain(|_, p| !p.is_empty());
    out
}

fn all_tasks() -> BTreeMap<String, Vec<i32>> {
    BTreeMap::from([("0".to_string(), (0..PARTITIONS).collect())])
}

/// A member driven by hand: it sends what the Java client would (Topology only on the join,
/// owned task lists only when they changed) and takes every assignment at once.
struct RawMember {
    conn: BrokerConnection,
    group: String,
    member_id: String,
    process_id: String,
    epoch: i32,
    /// The task lists to report as owned on the next heartbeat; `None` = unchanged.
    pending_owned: Option<[Vec<TaskIds>; 3]>,
    /// The active tasks last assigned.
    active: Vec<TaskIds>,
    /// Every status code seen, in order, consecutive repeats collapsed.
    statuses: Vec<StatusCode>,
}

impl RawMember {
    fn new(conn: BrokerConnection, group: &str) -> Self {
        RawMember {
            conn,
            group: group.to_string(),
            member_id: uuid::Uuid::new_v4().to_string(),
            process_id: uuid::Uuid::new_v4().to_string(),
            epoch: 0,
            pending_owned: Some([Vec::new(), Vec::new(), Vec::new()]),
            active: Vec::new(),
            statuses: Vec::new(),
        }
    }

    fn topology(source: &str) -> Topology {
        Topology {
            epoch: 0,
            subtopologies: vec![Subtopology {
                subtopology_id: "0".into(),
                source_topics: vec![source.to_string()],
                state_changelog_topics: vec![TopicInfo {
                    name: String::new(), // filled in by join()
                    partitions: 0,
                    replication_factor: 0,
                    topic_configs: changelog_configs(),
                }],
                ..Subtopology::default()
            }],
        }
    }

    /// The epoch-0 heartbeat carrying the topology and three empty owned lists.
    async fn join(&mut self, source: &str) -> anyhow::Result<StreamsGroupHeartbeatResponse> {
        let mut topology = Self::topology(source);
        topology.subtopologies[0].state_changelog_topics[0].name = changelog_name(&self.group);
        let request = StreamsGroupHeartbeatRequest {
            group_id: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: 0,
            endpoint_information_epoch: -1,
            rebalance_timeout_ms: 30_000,
            topology: Some(topology),
            process_id: Some(self.process_id.clone()),
            ..StreamsGroupHeartbeatRequest::default()
        };
        self.send(request).await
    }

    /// A heartbeat at the current epoch: no topology, owned lists only if they changed.
    async fn heartbeat(&mut self) -> anyhow::Result<StreamsGroupHeartbeatResponse> {
        ensure!(self.epoch > 0, "heartbeat before the join was accepted");
        let request = StreamsGroupHeartbeatRequest {
            group_id: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.epoch,
            endpoint_information_epoch: -1,
            rebalance_timeout_ms: -1,
            topology: None,
            process_id: Some(self.process_id.clone()),
            ..StreamsGroupHeartbeatRequest::default()
        };
        self.send(request).await
    }

    async fn send(
        &mut self,
        mut request: StreamsGroupHeartbeatRequest,
    ) -> anyhow::Result<StreamsGroupHeartbeatResponse> {
        assert!(
            request.topology.is_none() || request.member_epoch == 0,
            "a Topology is only ever sent on the join"
        );
        if let Some([active, standby, warmup]) = self.pending_owned.take() {
            request.active_tasks = Some(active);
            request.standby_tasks = Some(standby);
            request.warmup_tasks = Some(warmup);
        }
        let response = self.conn.heartbeat(&request).await?;
        if response.error_code != 0 {
            bail!(
                "heartbeat at epoch {} failed: error {} {:?}",
                request.member_epoch,
                response.error_code,
                response.error_message
            );
        }
        ensure!(
            response.member_id == self.member_id,
            "the broker answered for member {:?}, not {:?}",
            response.member_id,
            self.member_id
        );
        self.epoch = response.member_epoch;
        for status in response.status.iter().flatten() {
            if self.statuses.last() != Some(&status.status_code) {
                println!(
                    "epoch {}: status {} {}",
                    self.epoch, status.status_code, status.status_detail
                );
                self.statuses.push(status.status_code);
            }
        }
        if let (Some(active), Some(standby), Some(warmup)) = (
            &response.active_tasks,
            &response.standby_tasks,
            &response.warmup_tasks,
        ) {
            self.active = active.clone();
            self.pending_owned = Some([active.clone(), standby.clone(), warmup.clone()]);
        }
        Ok(response)
    }

    /// Joins, then heartbeats until all four tasks are assigned and the ownership has been
    /// reported back once. Returns the time from the join to the assignment.
    async fn join_until_assigned(&mut self, source: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let joined = self.join(source).await?;
        ensure!(
            joined.member_epoch > 0,
            "join answered epoch {}",
            joined.member_epoch
        );
        ensure!(
            joined.heartbeat_interval_ms > 0,
            "heartbeat interval {}",
            joined.heartbeat_interval_ms
        );
        let deadline = started + ASSIGNMENT_DEADLINE;
        while task_set(&self.active) != all_tasks() {
            if Instant::now() >= deadline {
                bail!(
                    "no full assignment within {ASSIGNMENT_DEADLINE:?}: active {:?}, statuses {:?}",
                    self.active,
                    self.statuses
                );
            }
            tokio::time::sleep(POLL).await;
            self.heartbeat().await?;
        }
        let elapsed = started.elapsed();
        // Report the tasks as owned, so the broker's current assignment catches up.
        self.heartbeat().await?;
        ensure!(
            self.pending_owned.is_none(),
            "the broker changed the assignment again: {:?}",
            self.active
        );
        Ok(elapsed)
    }

    async fn leave(&mut self) -> anyhow::Result<StreamsGroupHeartbeatResponse> {
        let request = StreamsGroupHeartbeatRequest {
            group_id: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: -1,
            endpoint_information_epoch: -1,
            ..StreamsGroupHeartbeatRequest::default()
        };
        Ok(self.conn.heartbeat(&request).await?)
    }
}

/// A fresh application: its input topic (4 partitions) and a joined, fully assigned member.
async fn assigned_member(prefix: &str) -> anyhow::Result<(String, String, RawMember, Duration)> {
    let bootstrap = common::broker();
    let app = common::unique(prefix);
    let input = format!("{app}-input");
    common::create_topic(&bootstrap, &input, PARTITIONS, &[]).await?;
    let conn = coordinator_connection(&bootstrap, &app).await?;
    let mut member = RawMember::new(conn, &app);
    let elapsed = member.join_until_assigned(&input).await?;
    Ok((app, input, member, elapsed))
}

#[tokio::test]
async fn negotiates_streams_group_heartbeat_and_describe_v1() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let conn = connect(&bootstrap).await?;
    let apis = conn.api_versions();
    let heartbeat = apis.get(&88).copied();
    let describe = apis.get(&89).copied();
    println!("StreamsGroupHeartbeat(88) {heartbeat:?}, StreamsGroupDescribe(89) {describe:?}");
    assert_eq!(heartbeat, Some(VersionRange { min: 0, max: 1 }));
    assert_eq!(describe, Some(VersionRange { min: 0, max: 1 }));
    assert_eq!(conn.heartbeat_version()?, 1);
    assert_eq!(conn.negotiate(89, 0, 1)?, 1);
    // What kstate's other calls need: OffsetCommit v9 (required by streams groups) and
    // OffsetFetch v9 (member id and epoch).
    assert!(apis[&8].max >= 9, "OffsetCommit {:?}", apis[&8]);
    assert_eq!(conn.negotiate(8, 9, 9)?, 9);
    assert_eq!(conn.negotiate(9, 8, 9)?, 9);
    // A range the broker cannot meet is refused, not silently downgraded.
    assert!(conn.negotiate(88, 2, 3).is_err());
    Ok(())
}

#[tokio::test]
async fn find_coordinator_for_a_new_group_returns_this_broker() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let group = common::unique("proto-findcoord");
    let mut conn = connect(&bootstrap).await?;
    let metadata = conn.metadata(Some(&[])).await?;
    ensure!(
        metadata.brokers.len() == 1,
        "brokers {:?}",
        metadata.brokers
    );
    let broker = &metadata.brokers[0];
    let coordinator = common::wait_for("the group's coordinator", Duration::from_secs(30), || {
        let bootstrap = bootstrap.clone();
        let group = group.clone();
        async move {
            let mut conn = connect(&bootstrap).await.ok()?;
            conn.find_coordinator(&group).await.ok()
        }
    })
    .await?;
    println!("coordinator of {group}: {coordinator:?}");
    assert_eq!(coordinator.node_id, broker.node_id.0);
    assert_eq!(coordinator.host, broker.host.to_string());
    assert_eq!(coordinator.port, broker.port);
    // ... and it is reachable at that address.
    let coordinator_conn =
        BrokerConnection::connect(coordinator.addr(), ConnectionConfig::default()).await?;
    assert!(coordinator_conn.api_versions().contains_key(&88));
    Ok(())
}

#[tokio::test]
async fn join_assigns_all_tasks_and_the_broker_creates_the_declared_changelog() -> anyhow::Result<()>
{
    let bootstrap = common::broker();
    let (app, input, mut member, elapsed) = assigned_member("proto-join").await?;
    println!(
        "join -> all 4 tasks assigned in {} ms, statuses {:?}, epoch {}",
        elapsed.as_millis(),
        member.statuses,
        member.epoch
    );
    assert_eq!(task_set(&member.active), all_tasks());
    // The broker reports why it holds the assignment back: the internal topics being
    // created and/or the initial rebalance delay (0 in config/broker/server.properties, so
    // usually only MISSING_INTERNAL_TOPICS), or, when the join races the metadata of the
    // input topic created just before, MISSING_SOURCE_TOPICS. Whatever it said must be one
    // of these "not ready" statuses.
    for code in &member.statuses {
        assert!(
            [
                StatusCode::MISSING_INTERNAL_TOPICS,
                StatusCode::ASSIGNMENT_DELAYED,
                StatusCode::MISSING_SOURCE_TOPICS
            ]
            .contains(code),
            "unexpected status {code} while joining"
        );
    }
    assert!(
        !member.statuses.is_empty(),
        "a fresh group with a changelog to create reported no status before assigning"
    );

    // The broker created the changelog with the source topic's partition count and exactly
    // the configs the topology declared.
    let changelog = changelog_name(&app);
    assert_eq!(
        common::partition_count(&bootstrap, &changelog).await?,
        Some(PARTITIONS as usize),
        "{changelog} partitions"
    );
    let configs = common::topic_configs(&bootstrap, &changelog).await?;
    for kv in changelog_configs() {
        let (value, source) = configs
            .get(&kv.key)
            .with_context(|| format!("{changelog} has no {}", kv.key))?;
        println!("{changelog}: {}={value} ({source:?})", kv.key);
        assert_eq!(value, &kv.value, "{changelog} {}", kv.key);
        assert_eq!(
            *source,
            ConfigSource::DynamicTopic,
            "{} was set on the topic",
            kv.key
        );
    }

    // StreamsGroupDescribe: the group, its topology and the member with its assignment.
    let deadline = Instant::now() + Duration::from_secs(15);
    let described = loop {
        let response = member
            .conn
            .describe(std::slice::from_ref(&app), false)
            .await?;
        ensure!(response.groups.len() == 1, "groups {:?}", response.groups);
        let group = response.groups.into_iter().next().unwrap_or_default();
        ensure!(
            group.error_code == 0,
            "describe error {} {:?}",
            group.error_code,
            group.error_message
        );
        if group.group_state == "Stable" || Instant::now() >= deadline {
            break group;
        }
        member.heartbeat().await?;
        tokio::time::sleep(POLL).await;
    };
    println!(
        "described: state {:?}, group epoch {}, assignment epoch {}, assignor {:?}",
        described.group_state,
        described.group_epoch,
        described.assignment_epoch,
        described.assignor_name
    );
    assert_eq!(described.group_id, app);
    assert_eq!(described.group_state, "Stable");
    assert_eq!(
        described.members.len(),
        1,
        "members {:?}",
        described.members
    );
    let m = &described.members[0];
    assert_eq!(m.member_id, member.member_id);
    assert_eq!(m.member_epoch, member.epoch);
    assert_eq!(m.process_id, member.process_id);
    assert_eq!(task_set(&m.assignment.active_tasks), all_tasks());
    assert_eq!(task_set(&m.target_assignment.active_tasks), all_tasks());
    assert!(m
        .assignment
        .standby_tasks
        .iter()
        .all(|t| t.partitions.is_empty()));
    let topology = described
        .topology
        .context("no topology in the description")?;
    let subtopologies = topology.subtopologies.context("no subtopologies")?;
    assert_eq!(subtopologies.len(), 1);
    assert_eq!(subtopologies[0].subtopology_id, "0");
    assert_eq!(subtopologies[0].source_topics, vec![input.clone()]);
    let declared = &subtopologies[0].state_changelog_topics;
    assert_eq!(declared.len(), 1);
    assert_eq!(declared[0].name, changelog);

    member.leave().await?;
    Ok(())
}

fn commit_offsets(input: &str, base: i64) -> Vec<CommitOffset> {
    (0..PARTITIONS)
        .map(|p| CommitOffset {
            topic: input.to_string(),
            partition: p,
            offset: base + i64::from(p),
            leader_epoch: -1,
            metadata: Some(format!("kstate-{p}")),
        })
        .collect()
}

fn codes(results: &[kstate::protocol::PartitionCommitResult]) -> Vec<i16> {
    results.iter().map(|r| r.error_code).collect()
}

#[tokio::test]
async fn offset_commit_needs_the_member_id_and_current_epoch() -> anyhow::Result<()> {
    let (app, input, mut member, _) = assigned_member("proto-commit").await?;
    let partitions: Vec<(String, i32)> = (0..PARTITIONS).map(|p| (input.clone(), p)).collect();
    let epoch = member.epoch;
    let member_id = member.member_id.clone();

    // With the member's identity: accepted, and read back.
    let results = member
        .conn
        .offset_commit(&app, &member_id, epoch, &commit_offsets(&input, 100))
        .await?;
    assert_eq!(codes(&results), vec![0; PARTITIONS as usize], "{results:?}");
    let fetched = member.conn.offset_fetch(&app, &partitions).await?;
    let got: Vec<(i32, i64, Option<String>, i16)> = fetched
        .iter()
        .map(|f| (f.partition, f.offset, f.metadata.clone(), f.error_code))
        .collect();
    let want: Vec<(i32, i64, Option<String>, i16)> = (0..PARTITIONS)
        .map(|p| (p, 100 + i64::from(p), Some(format!("kstate-{p}")), 0))
        .collect();
    assert_eq!(got, want);

    // What librdkafka does for a group it is not a classic member of: no member id. The
    // streams group refuses it, and the committed offsets stay as they were.
    let results = member
        .conn
        .offset_commit(&app, "", epoch, &commit_offsets(&input, 200))
        .await?;
    println!("commit with an empty member id at epoch {epoch}: {results:?}");
    assert_eq!(
        codes(&results),
        vec![UNKNOWN_MEMBER_ID; PARTITIONS as usize]
    );
    let results = member
        .conn
        .offset_commit(&app, "", -1, &commit_offsets(&input, 200))
        .await?;
    println!("commit with an empty member id at epoch -1: {results:?}");
    assert_eq!(
        codes(&results),
        vec![UNKNOWN_MEMBER_ID; PARTITIONS as usize]
    );

    // The right member at an older epoch: stale.
    let results = member
        .conn
        .offset_commit(&app, &member_id, epoch - 1, &commit_offsets(&input, 300))
        .await?;
    println!("commit at stale epoch {}: {results:?}", epoch - 1);
    assert_eq!(
        codes(&results),
        vec![STALE_MEMBER_EPOCH; PARTITIONS as usize]
    );

    let fetched = member.conn.offset_fetch(&app, &partitions).await?;
    let offsets: Vec<i64> = fetched.iter().map(|f| f.offset).collect();
    assert_eq!(
        offsets,
        vec![100, 101, 102, 103],
        "rejected commits left no trace"
    );

    member.leave().await?;
    Ok(())
}

#[tokio::test]
async fn leave_is_accepted_and_unknown_members_are_refused() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let app = common::unique("proto-leave");
    let input = format!("{app}-input");
    common::create_topic(&bootstrap, &input, PARTITIONS, &[]).await?;
    let conn = coordinator_connection(&bootstrap, &app).await?;
    let mut member = RawMember::new(conn, &app);
    let joined = member.join(&input).await?;
    assert!(
        joined.member_epoch > 0,
        "join epoch {}",
        joined.member_epoch
    );
    let epoch = member.epoch;

    let left = member.leave().await?;
    println!(
        "leave: error {}, epoch {}",
        left.error_code, left.member_epoch
    );
    assert_eq!(left.error_code, 0, "{:?}", left.error_message);
    assert_eq!(left.member_epoch, -1);
    assert_eq!(left.member_id, member.member_id);

    // The member that left, at its old epoch, is not known any more.
    let again = StreamsGroupHeartbeatRequest {
        group_id: app.clone(),
        member_id: member.member_id.clone(),
        member_epoch: epoch,
        endpoint_information_epoch: -1,
        ..StreamsGroupHeartbeatRequest::default()
    };
    let response = member.conn.heartbeat(&again).await?;
    println!(
        "heartbeat of the member that left: error {} {:?}",
        response.error_code, response.error_message
    );
    assert!(
        [UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH].contains(&response.error_code),
        "error {}",
        response.error_code
    );

    // A member id the group never saw, at a non-zero epoch.
    let stranger = StreamsGroupHeartbeatRequest {
        member_id: uuid::Uuid::new_v4().to_string(),
        member_epoch: 5,
        ..again
    };
    let response = member.conn.heartbeat(&stranger).await?;
    println!(
        "heartbeat of an unknown member at epoch 5: error {} {:?}",
        response.error_code, response.error_message
    );
    assert!(
        [UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH].contains(&response.error_code),
        "error {}",
        response.error_code
    );
    Ok(())
}
