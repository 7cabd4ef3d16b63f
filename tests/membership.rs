//! Streams group membership against the real broker: the driver joins, reconciles, leaves and
//! is fenced as KIP-1071 says, the broker creates the declared changelog, describes the group,
//! and accepts offset commits only with a member id and epoch.
//!
//! Each test uses its own application id and topics. Members are driven as the runtime would
//! drive them: a `Revoke` is acknowledged only after a simulated commit, and every event of
//! every member goes through one loop that checks no task is owned twice at any moment.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kstate::membership::{
    session_count_topology, DriverConfig, DriverHandle, LeaveOutcome, MembershipConfig,
    MembershipDriver, MembershipEvent, TaskId,
};
use kstate::protocol::{BrokerConnection, ConnectionConfig, DescribedGroup, StatusCode};
use kstate::runtime::offsets::{CoordinatorOffsets, OffsetCommitter, OffsetsError};
use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use tokio::sync::mpsc;

const STORE: &str = "sessions";
const PARTITIONS: i32 = 4;
/// The broker's `group.streams.session.timeout.ms` (config/broker/server.properties).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// The broker's `group.streams.heartbeat.interval.ms`.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// How long the simulated runtime takes to commit and close revoked tasks: long enough that a
/// member acknowledging before the runtime would let the broker hand them out meanwhile.
const REVOKE_COMMIT_TIME: Duration = Duration::from_secs(1);
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(20);

fn changelog(app: &str) -> String {
    format!("{app}-{STORE}-changelog")
}

fn changelog_configs() -> Vec<(String, String)> {
    [
        ("cleanup.policy", "compact,delete"),
        ("retention.ms", "172800000"),
        ("message.timestamp.type", "CreateTime"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn all_tasks() -> BTreeSet<TaskId> {
    (0..PARTITIONS).map(|p| TaskId::new("0", p)).collect()
}

fn connection_config() -> ConnectionConfig {
    ConnectionConfig {
        client_id: "kstate-membership-test".into(),
        request_timeout: Duration::from_secs(5),
        ..ConnectionConfig::default()
    }
}

/// One member as the runtime sees it.
struct Member {
    handle: DriverHandle,
    /// Active tasks the simulated runtime owns now.
    active: BTreeSet<TaskId>,
    /// Revoked tasks still being committed, released at the instant given.
    releasing: Option<(BTreeSet<TaskId>, Instant)>,
    events: Vec<MembershipEvent>,
    started: Instant,
}

/// The members of one application, their events merged into one stream.
struct App {
    bootstrap: String,
    app: String,
    source: String,
    members: Vec<Member>,
    tx: mpsc::UnboundedSender<(usize, MembershipEvent)>,
    rx: mpsc::UnboundedReceiver<(usize, MembershipEvent)>,
}

impl App {
    fn new(bootstrap: &str, prefix: &str) -> Self {
        let app = common::unique(prefix);
        let (tx, rx) = mpsc::unbounded_channel();
        App {
            bootstrap: bootstrap.to_string(),
            source: format!("{app}-input"),
            app,
            members: Vec::new(),
            tx,
            rx,
        }
    }

    async fn create_source(&self) -> anyhow::Result<()> {
        common::create_topic(&self.bootstrap, &self.source, PARTITIONS, &[]).await
    }

    /// Starts a member; returns its index.
    fn join(&mut self) -> usize {
        let membership = MembershipConfig {
            group_id: self.app.clone(),
            member_id: uuid::Uuid::new_v4().to_string(),
            process_id: uuid::Uuid::new_v4().to_string(),
            topology: session_count_topology(
                &self.source,
                &changelog(&self.app),
                &changelog_configs(),
            ),
            rebalance_timeout: Duration::from_secs(30),
            instance_id: None,
            rack_id: None,
        };
        let (handle, mut events) = MembershipDriver::spawn(DriverConfig {
            bootstrap: self.bootstrap.clone(),
            connection: connection_config(),
            membership,
        });
        let index = self.members.len();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if tx.send((index, event)).is_err() {
                    return;
                }
            }
        });
        self.members.push(Member {
            handle,
            active: BTreeSet::new(),
            releasing: None,
            events: Vec::new(),
            started: Instant::now(),
        });
        index
    }

    /// Plays the runtime until `done` holds, failing after `timeout`; returns the time taken.
    /// After every event it checks that no task is owned by two members.
    async fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&App) -> bool,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let deadline = start + timeout;
        loop {
            if done(self) {
                return Ok(start.elapsed());
            }
            let release_at = self
                .members
                .iter()
                .filter_map(|m| m.releasing.as_ref().map(|(_, at)| *at))
                .min();
            let wake = release_at.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                received = self.rx.recv() => {
                    let (index, event) = received.context("event channels closed")?;
                    self.apply(index, event);
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    if Instant::now() >= deadline {
                        let owned: Vec<_> = self.members.iter().map(|m| &m.active).collect();
                        bail!("timed out after {timeout:?} waiting for {what}; owned: {owned:?}");
                    }
                    self.release_due();
                }
            }
            self.check_disjoint();
        }
    }

    fn apply(&mut self, index: usize, event: MembershipEvent) {
        let member = &mut self.members[index];
        match &event {
            MembershipEvent::Assigned { active, .. } => {
                assert!(
                    member.releasing.is_none(),
                    "member {index} was assigned {active:?} while still releasing revoked tasks"
                );
                member.active = active.clone();
            }
            MembershipEvent::Revoke { tasks } => {
                assert!(
                    tasks.is_subset(&member.active),
                    "member {index} asked to revoke {tasks:?} it does not own"
                );
                member.releasing = Some((tasks.clone(), Instant::now() + REVOKE_COMMIT_TIME));
            }
            MembershipEvent::Lost | MembershipEvent::Left | MembershipEvent::Fatal(_) => {
                member.active.clear();
                member.releasing = None;
            }
            _ => {}
        }
        member.events.push(event);
    }

    fn release_due(&mut self) {
        let now = Instant::now();
        for member in &mut self.members {
            if let Some((tasks, at)) = member.releasing.take() {
                if at <= now {
                    for task in &tasks {
                        member.active.remove(task);
                    }
                    member.handle.tasks_revoked(tasks);
                } else {
                    member.releasing = Some((tasks, at));
                }
            }
        }
    }

    fn check_disjoint(&self) {
        for (i, a) in self.members.iter().enumerate() {
            for (j, b) in self.members.iter().enumerate().skip(i + 1) {
                let both: Vec<_> = a.active.intersection(&b.active).collect();
                assert!(
                    both.is_empty(),
                    "members {i} and {j} both own {both:?} at the same time"
                );
            }
        }
    }

    fn owns(&self, index: usize, tasks: &BTreeSet<TaskId>) -> bool {
        self.members[index].active == *tasks && self.members[index].releasing.is_none()
    }

    /// Two members splitting the four tasks 2/2; returns the time from the second join.
    async fn two_members_split(&mut self) -> anyhow::Result<Duration> {
        self.create_source().await?;
        let a = self.join();
        self.until(
            "the first member to own every task",
            ASSIGN_TIMEOUT,
            |app| app.owns(a, &all_tasks()),
        )
        .await?;
        let b = self.join();
        let took = self
            .until("a 2/2 split", ASSIGN_TIMEOUT, |app| {
                app.members[a].active.len() == 2
                    && app.members[b].active.len() == 2
                    && app.members[a].releasing.is_none()
            })
            .await?;
        assert!(
            self.members[a]
                .events
                .iter()
                .any(|e| matches!(e, MembershipEvent::Revoke { tasks } if tasks.len() == 2)),
            "the first member gave up two tasks through Revoke"
        );
        Ok(took)
    }

    async fn describe(&self) -> anyhow::Result<DescribedGroup> {
        let mut bootstrap = BrokerConnection::connect(
            self.bootstrap.split(',').next().unwrap_or_default(),
            connection_config(),
        )
        .await?;
        let coordinator = bootstrap.find_coordinator(&self.app).await?;
        let mut conn = BrokerConnection::connect(coordinator.addr(), connection_config()).await?;
        let response = conn
            .describe(std::slice::from_ref(&self.app), false)
            .await?;
        response.groups.into_iter().next().context("no group")
    }
}

fn tasks_of(lists: &[kstate::protocol::TaskIds]) -> BTreeSet<TaskId> {
    lists
        .iter()
        .flat_map(|l| {
            l.partitions
                .iter()
                .map(|p| TaskId::new(l.subtopology_id.as_str(), *p))
        })
        .collect()
}

#[tokio::test]
async fn one_member_gets_every_task_and_the_broker_creates_the_changelog() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let mut app = App::new(&bootstrap, "member-one");
    app.create_source().await?;
    let a = app.join();
    app.until("every task and Ready", ASSIGN_TIMEOUT, |app| {
        app.owns(a, &all_tasks())
            && app.members[a]
                .events
                .iter()
                .any(|e| matches!(e, MembershipEvent::Ready))
    })
    .await?;
    let took = app.members[a].started.elapsed();
    let status = app.members[a].handle.status();
    println!(
        "join→assigned: {took:?}; StreamsGroupHeartbeat v{:?}; coordinator {:?}; epoch {}",
        status.heartbeat_version, status.coordinator, status.member_epoch
    );
    assert!(matches!(status.heartbeat_version, Some(0 | 1)));
    assert!(status.member_epoch > 0);

    // The broker created the changelog from the topology: 4 partitions (derived from the
    // source topic) and the declared configs.
    let name = changelog(&app.app);
    let mut conn = BrokerConnection::connect(
        bootstrap.split(',').next().unwrap_or_default(),
        connection_config(),
    )
    .await?;
    let metadata = conn.metadata(Some(std::slice::from_ref(&name))).await?;
    let topic = metadata.topics.first().context("no topic in metadata")?;
    assert_eq!(topic.error_code, 0, "changelog {name} exists");
    assert_eq!(topic.partitions.len(), PARTITIONS as usize);

    let admin = common::admin(&bootstrap);
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(&name)], &AdminOptions::new())
        .await?;
    let resource = results
        .into_iter()
        .next()
        .context("no describe result")?
        .map_err(|e| anyhow::anyhow!("describe_configs {name}: {e}"))?;
    for (key, expected) in changelog_configs() {
        let value = resource.get(&key).and_then(|e| e.value.clone());
        assert_eq!(value.as_deref(), Some(expected.as_str()), "{name} {key}");
    }
    Ok(())
}

#[tokio::test]
async fn a_second_member_splits_the_tasks_after_revocation() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let mut app = App::new(&bootstrap, "member-split");
    let took = app.two_members_split().await?;
    println!("second join→2/2 split (incl. {REVOKE_COMMIT_TIME:?} simulated commit): {took:?}");
    let union: BTreeSet<TaskId> = app.members[0]
        .active
        .union(&app.members[1].active)
        .cloned()
        .collect();
    assert_eq!(union, all_tasks());
    Ok(())
}

#[tokio::test]
async fn describe_shows_a_stable_group_with_both_members() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let mut app = App::new(&bootstrap, "member-describe");
    app.two_members_split().await?;
    let ids: BTreeSet<String> = app.members.iter().map(|m| m.handle.member().0).collect();
    let deadline = Instant::now() + ASSIGN_TIMEOUT;
    let group = loop {
        let group = app.describe().await?;
        let stable = group.group_state.eq_ignore_ascii_case("stable")
            && group
                .members
                .iter()
                .all(|m| m.assignment == m.target_assignment);
        if stable || Instant::now() >= deadline {
            break group;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(group.error_code, 0);
    assert!(
        group.group_state.eq_ignore_ascii_case("stable"),
        "group state {}",
        group.group_state
    );
    let described: BTreeSet<String> = group.members.iter().map(|m| m.member_id.clone()).collect();
    assert_eq!(described, ids);
    for member in &app.members {
        let (id, epoch) = member.handle.member();
        let m = group
            .members
            .iter()
            .find(|m| m.member_id == id)
            .context("member described")?;
        assert_eq!(m.member_epoch, epoch, "{id} epoch");
        assert_eq!(
            tasks_of(&m.assignment.active_tasks),
            member.active,
            "{id} tasks"
        );
    }
    println!(
        "described {} (epoch {}) with members {:?}",
        group.group_state, group.group_epoch, described
    );
    Ok(())
}

#[tokio::test]
async fn a_member_leaving_hands_its_tasks_over_within_a_few_heartbeats() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let mut app = App::new(&bootstrap, "member-leave");
    app.two_members_split().await?;
    let start = Instant::now();
    // A runtime commits and closes its tasks before it leaves (the leave emits no Revoke),
    // so the member owns nothing once it calls `leave`: the peer may own them at once.
    app.members[0].active.clear();
    let outcome = app.members[0].handle.leave(Duration::from_secs(5)).await;
    assert_eq!(outcome, LeaveOutcome::Left);
    let left_in = start.elapsed();
    app.until(
        "the remaining member to own every task",
        ASSIGN_TIMEOUT,
        |app| app.owns(1, &all_tasks()),
    )
    .await?;
    let took = start.elapsed();
    println!("leave answered in {left_in:?}; leave→reassigned: {took:?}");
    assert!(
        took < HEARTBEAT_INTERVAL * 6,
        "reassigned after {took:?}, more than a few heartbeat intervals"
    );
    assert_eq!(app.members[0].handle.member().1, -1);
    Ok(())
}

#[tokio::test]
async fn a_dead_member_loses_its_tasks_after_the_session_timeout() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let mut app = App::new(&bootstrap, "member-dead");
    app.two_members_split().await?;
    let start = Instant::now();
    app.members[0].handle.abort();
    // The simulated runtime of the dead member is gone with it.
    app.members[0].active.clear();
    app.until(
        "the remaining member to own every task",
        SESSION_TIMEOUT * 3,
        |app| app.owns(1, &all_tasks()),
    )
    .await?;
    let took = start.elapsed();
    println!("abort→reassigned: {took:?} (session timeout {SESSION_TIMEOUT:?})");
    assert!(
        took >= SESSION_TIMEOUT - HEARTBEAT_INTERVAL * 2,
        "reassigned after {took:?}: before the session timeout, so not by expiry"
    );
    assert!(took < SESSION_TIMEOUT * 2, "reassigned only after {took:?}");
    Ok(())
}

#[tokio::test]
async fn a_missing_source_topic_is_not_ready_until_created() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let mut app = App::new(&bootstrap, "member-missing");
    let a = app.join();
    let missing = |app: &App| {
        app.members[a].events.iter().any(|e| {
            matches!(e, MembershipEvent::NotReady { statuses }
                if statuses.iter().any(|s| s.status_code == StatusCode::MISSING_SOURCE_TOPICS))
        })
    };
    app.until(
        "NotReady with MISSING_SOURCE_TOPICS",
        ASSIGN_TIMEOUT,
        missing,
    )
    .await?;
    assert!(app.members[a].active.is_empty());
    let seen = app.members[a].events.len();
    app.create_source().await?;
    let took = app
        .until("Ready and every task", ASSIGN_TIMEOUT, |app| {
            app.owns(a, &all_tasks())
                && app.members[a].events[seen..]
                    .iter()
                    .any(|e| matches!(e, MembershipEvent::Ready))
        })
        .await?;
    println!("topic created→ready and assigned: {took:?}");
    Ok(())
}

#[tokio::test]
async fn a_fenced_member_rejoins_with_the_same_id_and_gets_tasks_again() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let mut app = App::new(&bootstrap, "member-fenced");
    app.create_source().await?;
    let a = app.join();
    app.until("every task", ASSIGN_TIMEOUT, |app| {
        app.owns(a, &all_tasks())
    })
    .await?;
    let (id, epoch) = app.members[a].handle.member();
    assert_eq!(app.members[a].handle.status().joins, 1);

    app.members[a].handle.pause();
    let paused = Instant::now();
    // Wait for the broker to expire the member, as observed through describe.
    let deadline = paused + SESSION_TIMEOUT * 3;
    loop {
        let group = app.describe().await?;
        if !group.members.iter().any(|m| m.member_id == id) {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "member {id} still in the group {:?} after pausing",
                paused.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("pause→expired by the broker: {:?}", paused.elapsed());
    app.members[a].handle.resume();
    let seen = app.members[a].events.len();
    app.until("Lost, then every task again", ASSIGN_TIMEOUT, |app| {
        app.owns(a, &all_tasks())
            && app.members[a].events[seen..]
                .iter()
                .any(|e| matches!(e, MembershipEvent::Lost))
    })
    .await?;
    let status = app.members[a].handle.status();
    assert_eq!(status.member_id, id, "same member id after the rejoin");
    assert_eq!(status.joins, 2, "one more join (epoch 0) after Lost");
    assert!(status.member_epoch > 0);
    println!(
        "fenced at epoch {epoch}, rejoined at epoch 0, now epoch {}",
        status.member_epoch
    );
    let described = app.describe().await?;
    assert!(described.members.iter().any(|m| m.member_id == id));
    Ok(())
}

#[tokio::test]
async fn offsets_are_committed_with_member_id_and_epoch_only() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let mut app = App::new(&bootstrap, "member-offsets");
    app.create_source().await?;
    let a = app.join();
    app.until("every task", ASSIGN_TIMEOUT, |app| {
        app.owns(a, &all_tasks())
    })
    .await?;
    let (member_id, epoch) = app.members[a].handle.member();
    let mut offsets = CoordinatorOffsets::new(
        app.app.clone(),
        &bootstrap,
        connection_config(),
        Duration::from_secs(30),
    );
    let source = app.source.clone();
    offsets
        .commit(
            &member_id,
            epoch,
            &[(source.clone(), 0, 42), (source.clone(), 3, 7)],
        )
        .await?;
    let fetched = offsets
        .fetch(&[
            (source.clone(), 0),
            (source.clone(), 1),
            (source.clone(), 3),
        ])
        .await?;
    assert_eq!(fetched, vec![Some(42), None, Some(7)]);

    // librdkafka's commit: no member id, generation -1. The streams group refuses it.
    let refused = offsets.commit("", -1, &[(source.clone(), 0, 99)]).await;
    match refused {
        Err(OffsetsError::CommitRefused { code, .. }) => {
            println!("member-less commit refused with error code {code}");
            assert_eq!(code, 25, "UNKNOWN_MEMBER_ID");
        }
        other => bail!("a member-less commit to a live streams group returned {other:?}"),
    }
    let fetched = offsets.fetch(&[(source.clone(), 0)]).await?;
    assert_eq!(
        fetched,
        vec![Some(42)],
        "the refused commit changed nothing"
    );
    Ok(())
}
